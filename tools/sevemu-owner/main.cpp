// sevemu-owner: the guest owner's tool for legacy SEV launches (INTERFACES.md §5), modelled on
// `sevctl verify / session / measurement / secret`. Blobs are exchanged in the formats QEMU takes:
// base64 text for dh-cert-file, session-file and sev-inject-launch-secret, raw 16-byte TEK/TIK.
//
// Exit status: 0 success (or a measurement that matches), 1 a failed check or bad input, CLI11's
// own non-zero codes for malformed command lines. Every failure prints one line on stderr.
#include "base/main_guard.h"
#include "tools/sevemu-owner/owner.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <exception>
#include <nlohmann/json.hpp>

#include "cpu/cpu_model.h"
#include "emulator/sev_launch.h"
#include "emulator/sev_runtime.h"
#include "tools/sevemu/options.h"
#include <string>

namespace {

using namespace sevemu;
using namespace sevemu::owner;
using nlohmann::json;

int fail(std::string const& message)
{
    std::fprintf(stderr, "sevemu-owner: %s\n", message.c_str());
    return 1;
}

void print_json(json const& j) { std::printf("%s\n", j.dump(2).c_str()); }

struct Options {
    bool json = false;
    // verify-chain
    std::string chain_dir;
    bool no_amd = false;
    // session
    std::string pdh_file;
    std::string name;
    uint32_t policy = 0;
    // measurement verify / secret build
    std::string tik_file;
    std::string tek_file;
    std::string measurement_b64;
    unsigned api_major = 0;
    unsigned api_minor = 0;
    unsigned build = 0;
    std::string digest_hex;
    std::string secret_file;
    std::string out_header;
    std::string out_secret;
    // measurement digest (and verify --kernel): the sevemu command line being launched
    std::string memory { "128M" };
    std::string cpu_model { "EPYC-Milan" };
    std::string kernel;
    std::string initrd;
    std::string append;
    unsigned smp { 1 };
};

int cmd_verify_chain(Options const& o)
{
    auto report = verify_chain_dir(o.chain_dir, !o.no_amd);
    if (!report)
        return fail(report.error().message);
    std::string root = report->amd_product ? "AMD " + std::string(*report->amd_product) + " root"
                                           : (report->amd_rooted ? "an ARK that is not a known AMD root" : "no ARK");
    if (o.json) {
        print_json({ { "valid", true },
            { "amd_rooted", report->amd_rooted },
            { "amd_product", report->amd_product ? json(std::string(*report->amd_product)) : json(nullptr) } });
    } else if (report->amd_rooted) {
        std::printf("chain valid: ARK -> ASK -> CEK -> PEK, OCA -> PEK, PEK -> PDH (%s)\n", root.c_str());
    } else {
        std::printf("chain valid: OCA -> PEK -> PDH (not checked against AMD's keys)\n");
    }
    return 0;
}

int cmd_session(Options const& o)
{
    auto pdh = read_file(o.pdh_file, file_limits::kSevCert);
    if (!pdh)
        return fail(pdh.error().message);
    auto s = make_session(*pdh, o.policy);
    if (!s)
        return fail(s.error().message);
    std::string godh = o.name + "_godh.b64";
    std::string session = o.name + "_session.b64";
    std::string tek = o.name + "_tek.bin";
    std::string tik = o.name + "_tik.bin";
    auto text = [](std::string const& t) { return Bytes(t.begin(), t.end()); };
    // All four or none: a session whose TEK/TIK were lost cannot be used, and a half-written
    // set would be mistaken for a whole one.
    std::vector<OutputFile> files { { godh, text(to_base64(s->godh_cert)), 0644 },
        { session, text(to_base64(s->session_blob)), 0644 },
        { tek, Bytes(s->keys.tek.begin(), s->keys.tek.end()), 0600 },
        { tik, Bytes(s->keys.tik.begin(), s->keys.tik.end()), 0600 } };
    auto written = write_files(files);
    secure_zero(&s->keys, sizeof(s->keys));
    for (auto& f : files)
        secure_zero(f.data.data(), f.data.size());
    if (!written)
        return fail(written.error().message);
    if (o.json)
        print_json({ { "policy", o.policy }, { "godh", godh }, { "session", session }, { "tek", tek }, { "tik", tik } });
    else
        std::printf("wrote %s %s %s %s (policy 0x%x)\n", godh.c_str(), session.c_str(), tek.c_str(), tik.c_str(),
            o.policy);
    return 0;
}

OwnerResult<Bytes> decode_measurement(std::string const& b64)
{
    auto m = from_base64(b64);
    if (!m)
        return make_unexpected(OwnerError { "--measurement: not valid base64" });
    if (m->size() != kMeasurementSize)
        return make_unexpected(OwnerError { "--measurement: must decode to " + std::to_string(kMeasurementSize)
            + " bytes (MEASURE || MNONCE), got " + std::to_string(m->size()) });
    return std::move(m).value();
}

// The launch digest sevemu measures for `-m SIZE -kernel FILE [-initrd] [-append]`
// (README "What a -kernel launch measures").
std::string hex_policy(uint32_t policy)
{
    char buf[16];
    std::snprintf(buf, sizeof buf, "0x%x", policy);
    return buf;
}

Result<Sha256Digest, std::string> kernel_digest(Options const& o, std::vector<emulator::MeasuredRange>* ranges = nullptr,
    unsigned* vmsas = nullptr)
{
    if (!cpu_model_from_name(o.cpu_model))
        return make_unexpected("-cpu " + o.cpu_model + ": unknown model (EPYC, EPYC-Rome, EPYC-Milan, EPYC-Genoa)");
    // sevemu's own bounds: a size it would refuse has no digest (and -m 1E no scratch memory).
    auto size = cli::parse_memory(o.memory);
    if (!size)
        return make_unexpected(size.error().message);
    // Nor has a size the SEV launch refuses (emulator/sev_runtime.cpp): no launch, no digest.
    if (*size > emulator::SevRuntime::kMaxGuestRam)
        return make_unexpected("-m " + o.memory + ": sevemu runs SEV guests with at most "
            + std::to_string(emulator::SevRuntime::kMaxGuestRam >> 20) + " MiB of RAM (QUIRKS.md)");
    if (o.smp < 1)
        return make_unexpected("--smp 0: a guest has at least one vCPU");
    // The C-bit is the CPU model's (sevemu refuses any other cbitpos): it is in the identity
    // tables an SEV vmlinux is entered on, so it is measured.
    // SEV-ES (policy bit 2): the AP page and one VMSA per vCPU are measured too (README).
    auto model = *cpu_model_from_name(o.cpu_model);
    bool es = o.policy & firmware::policy::ES;
    if (es && !(cpu::cpuid_query(model, 0x8000001F, 0).eax & (1u << 3)))
        return make_unexpected("--policy " + hex_policy(o.policy) + " asks for SEV-ES, which -cpu " + o.cpu_model
            + " does not have");
    emulator::KernelLaunch launch { *size, o.kernel, o.initrd, o.append, o.smp, cpu_model_info(model).c_bit, es, model };
    auto d = emulator::kernel_launch_digest(launch);
    if (!d)
        return make_unexpected(d.error().message);
    if (ranges)
        *ranges = d->ranges;
    if (vmsas)
        *vmsas = d->vmsas;
    return d->digest;
}

int cmd_measurement_digest(Options const& o)
{
    std::vector<emulator::MeasuredRange> ranges;
    unsigned vmsas = 0;
    auto d = kernel_digest(o, &ranges, &vmsas);
    if (!d)
        return fail(d.error());
    if (o.json) {
        json r = json::array();
        for (auto const& m : ranges)
            r.push_back({ { "gpa", m.gpa }, { "size", m.size } });
        print_json({ { "digest", to_hex(*d) }, { "measured", r }, { "vmsas", vmsas } });
    } else {
        std::printf("%s\n", to_hex(*d).c_str());
    }
    return 0;
}

int cmd_measurement_verify(Options const& o)
{
    auto tik = read_key_file(o.tik_file);
    if (!tik)
        return fail(tik.error().message);
    auto m = decode_measurement(o.measurement_b64);
    if (!m)
        return fail(m.error().message);
    if (o.digest_hex.empty() == o.kernel.empty())
        return fail("give exactly one of --digest HEX or --kernel FILE");
    std::optional<Bytes> digest;
    if (!o.kernel.empty()) {
        auto d = kernel_digest(o);
        if (!d)
            return fail(d.error());
        digest = Bytes(d->begin(), d->end());
    } else {
        digest = from_hex(o.digest_hex);
    }
    if (!digest)
        return fail("--digest: not valid hex");
    if (digest->size() != 32)
        return fail("--digest: a SHA-256 launch digest is 32 bytes, got " + std::to_string(digest->size()));
    Sha256Digest ld;
    std::copy(digest->begin(), digest->end(), ld.begin());
    PlatformVersion v { uint8_t(o.api_major), uint8_t(o.api_minor), uint8_t(o.build) };
    auto r = verify_measurement(*tik, *m, v, o.policy, ld);
    if (o.json) {
        auto parsed = parse_measurement(*m).value();
        print_json({ { "match", bool(r) },
            { "expected", to_hex(expected_measurement(*tik, v, o.policy, ld, parsed.mnonce)) },
            { "measurement", to_hex(parsed.measure) }, { "mnonce", to_hex(parsed.mnonce) } });
        return r ? 0 : 1;
    }
    if (!r)
        return fail(r.error().message);
    std::printf("measurement matches\n");
    return 0;
}

int cmd_secret_build(Options const& o)
{
    auto tik = read_key_file(o.tik_file);
    if (!tik)
        return fail(tik.error().message);
    auto tek = read_key_file(o.tek_file);
    if (!tek)
        return fail(tek.error().message);
    auto m = decode_measurement(o.measurement_b64);
    if (!m)
        return fail(m.error().message);
    auto secret = read_file(o.secret_file, file_limits::kSecret);
    if (!secret)
        return fail(secret.error().message);
    auto p = build_secret(*tek, *tik, *m, *secret);
    secure_zero(secret->data(), secret->size());
    if (!p)
        return fail(p.error().message);
    std::string header_b64 = to_base64(p->header);
    std::string secret_b64 = to_base64(p->ciphertext);
    // Both or neither: a header without its ciphertext (or one left from an earlier build)
    // would be injected with the wrong packet.
    if (auto r = write_files({ { o.out_header, Bytes(header_b64.begin(), header_b64.end()), 0644 },
            { o.out_secret, Bytes(secret_b64.begin(), secret_b64.end()), 0644 } });
        !r)
        return fail(r.error().message);
    if (o.json)
        print_json({ { "header", o.out_header }, { "secret", o.out_secret }, { "length", p->ciphertext.size() } });
    else
        std::printf("wrote %s and %s (%zu bytes of secret)\n", o.out_header.c_str(), o.out_secret.c_str(),
            p->ciphertext.size());
    return 0;
}

// The words of the command line that choose a (sub)command, checked against the commands that
// exist: the first that is none of them, with its parents ("measurement frob"), or "".
std::string unknown_command(CLI::App& app, int argc, char** argv)
{
    CLI::App* level = &app;
    std::string path;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (!a.empty() && a[0] == '-')
            continue;
        auto subs = level->get_subcommands([](CLI::App*) { return true; });
        if (subs.empty())
            return {}; // a command's own arguments from here on
        path += (path.empty() ? "" : " ") + a;
        auto it = std::find_if(subs.begin(), subs.end(), [&](CLI::App* s) { return s->get_name() == a; });
        if (it == subs.end())
            return path;
        level = *it;
    }
    return {};
}

int run(int argc, char** argv)
{
    Options o;
    CLI::App app { "sevemu-owner: the guest owner's side of an SEV launch (certificate chain, session, "
                   "measurement, secret)" };
    app.require_subcommand(1);
    app.add_flag("--json", o.json, "print results as JSON");

    auto* verify_chain = app.add_subcommand("verify-chain",
        "verify a platform's certificates: ARK -> ASK -> CEK -> PEK, OCA -> PEK, PEK -> PDH");
    verify_chain->add_option("DIR", o.chain_dir, "directory with pdh.cert pek.cert oca.cert cek.cert ask.cert ark.cert")
        ->required();
    verify_chain->add_flag("--no-amd", o.no_amd, "accept a chain without cek/ask/ark (checks OCA -> PEK -> PDH only)");
    verify_chain->add_flag("--json", o.json, "print the result as JSON");

    auto* session = app.add_subcommand("session",
        "create the GODH key and launch session for a platform's PDH (writes NAME_godh.b64, NAME_session.b64, "
        "NAME_tek.bin, NAME_tik.bin)");
    session->add_option("--pdh", o.pdh_file, "the platform's PDH certificate (verify its chain first)")->required();
    session->add_option("--policy", o.policy, "guest policy (decimal or 0x hex)")->required();
    session->add_option("--name", o.name, "prefix of the output files")->required();
    session->add_flag("--json", o.json, "print the result as JSON");

    auto* measurement = app.add_subcommand("measurement", "launch measurement");
    measurement->require_subcommand(1);
    auto* mverify = measurement->add_subcommand("verify", "check LAUNCH_MEASURE's output against the expected digest");
    mverify->add_option("--tik", o.tik_file, "TIK file (16 bytes, from `session`)")->required();
    mverify->add_option("--measurement", o.measurement_b64, "measurement as QEMU reports it (base64 of 48 bytes)")
        ->required();
    mverify->add_option("--api-major", o.api_major, "firmware API major version")->required()->check(CLI::Range(0, 255));
    mverify->add_option("--api-minor", o.api_minor, "firmware API minor version")->required()->check(CLI::Range(0, 255));
    mverify->add_option("--build", o.build, "firmware build id")->required()->check(CLI::Range(0, 255));
    mverify->add_option("--policy", o.policy, "guest policy")->required();
    mverify->add_option("--digest", o.digest_hex, "expected launch digest (SHA-256, hex)");
    auto launch_options = [&o](CLI::App* c) {
        c->add_option("-m", o.memory, "guest memory size, as sevemu -m (default 128M)");
        c->add_option("--cpu,-c", o.cpu_model, "CPU model, as sevemu -cpu (default EPYC-Milan)");
        c->add_option("--kernel", o.kernel,
            "the kernel (Multiboot, Linux bzImage or vmlinux), named exactly as on sevemu's command line");
        c->add_option("--initrd", o.initrd, "as sevemu -initrd");
        c->add_option("--append", o.append, "as sevemu -append");
        c->add_option("--smp", o.smp, "vCPU count, as sevemu -smp (a Linux kernel's MADT lists one LAPIC each; default 1)");
    };
    launch_options(mverify);
    mverify->add_flag("--json", o.json, "print the result as JSON");
    auto* mdigest = measurement->add_subcommand("digest",
        "print the launch digest sevemu measures for this -kernel command line (like sevctl measurement build)");
    launch_options(mdigest);
    mdigest->get_option("--kernel")->required();
    mdigest->add_option("--policy", o.policy,
        "guest policy, as -object sev-guest policy= (with SEV-ES, bit 2, the vCPUs' VMSAs are measured too; default 0)");
    mdigest->add_flag("--json", o.json, "print the digest and the measured ranges as JSON");

    auto* secret = app.add_subcommand("secret", "launch secret");
    secret->require_subcommand(1);
    auto* sbuild = secret->add_subcommand("build", "encrypt and MAC a secret for LAUNCH_SECRET");
    sbuild->add_option("--tik", o.tik_file, "TIK file (16 bytes)")->required();
    sbuild->add_option("--tek", o.tek_file, "TEK file (16 bytes)")->required();
    sbuild->add_option("--measurement", o.measurement_b64, "the verified measurement (base64 of 48 bytes)")->required();
    sbuild->add_option("--secret", o.secret_file, "file with the secret (padded with zeros to 16-byte blocks)")
        ->required();
    sbuild->add_option("--out-header", o.out_header, "where to write the packet header (base64)")->required();
    sbuild->add_option("--out-secret", o.out_secret, "where to write the encrypted secret (base64)")->required();
    sbuild->add_flag("--json", o.json, "print the result as JSON");

    try {
        app.parse(argc, argv);
    } catch (CLI::CallForHelp const& e) {
        return app.exit(e);
    } catch (CLI::CallForAllHelp const& e) {
        return app.exit(e);
    } catch (CLI::ParseError const& e) {
        // One line, naming the command when it is not one of ours ("measurement frob").
        if (auto bad = unknown_command(app, argc, argv); !bad.empty())
            fail("unknown command '" + bad + "' (see --help)");
        else
            fail(e.what());
        return e.get_exit_code() ? e.get_exit_code() : 1;
    }

    if (verify_chain->parsed())
        return cmd_verify_chain(o);
    if (session->parsed())
        return cmd_session(o);
    if (mverify->parsed())
        return cmd_measurement_verify(o);
    if (mdigest->parsed())
        return cmd_measurement_digest(o);
    if (sbuild->parsed())
        return cmd_secret_build(o);
    return fail("no command given (see --help)");
}

} // namespace

// An exception reaching main is a bug: base/main_guard.h.
int main(int argc, char** argv) { return sevemu::run_guarded("sevemu-owner", run, argc, argv); }
