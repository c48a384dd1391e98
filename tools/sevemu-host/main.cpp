// sevemu-host: the platform owner's tool for the emulated AMD-SP (INTERFACES.md §5), modelled on
// `sevctl`. Every command boots the emulated firmware on the platform directory and works through
// the firmware's own SEV commands via the PSP mailbox, exactly as sevctl works through /dev/sev
// and the ccp driver: the driver INITs the platform (INIT, WBINVD, DF_FLUSH) and the command runs.
//
//   sevemu-host [--platform DIR] [--cpu MODEL] [--json] [--trace PATTERN] [--init-ex] COMMAND
//     status                  PLATFORM_STATUS
//     reset                   factory reset (SHUTDOWN, PLATFORM_RESET): a new self-owned identity
//     pek-gen                 PEK_GEN: new OCA, PEK and PDH
//     pdh-gen                 PDH_GEN: new PDH
//     pek-csr FILE            PEK_CSR: the PEK signing request (a 0x824-byte SEV certificate)
//     pek-cert-import PEK OCA PEK_CERT_IMPORT: take ownership with an OCA-signed PEK
//     export [--full] DIR     PDH_CERT_EXPORT: pdh.cert pek.cert oca.cert cek.cert; with --full the
//                             CEK signed by the ASK, and ask.cert ark.cert (sevemu's TEST roots);
//                             the chain is verified first, and written all or nothing
//     get-id                  GET_ID, in hex (what AMD's KDS indexes CEKs by)
//     ok                      what `sevctl ok` checks, for this platform
//
// --init-ex makes the driver use INIT_EX with the NV area in host memory, kept in
// DIR/init_ex_nv.bin (written back atomically after every command that changes it), as Linux's
// ccp driver does with its init_ex_path parameter; by default the firmware uses its SPI flash
// (DIR/nv.bin).
//
// Errors are one line on stderr ("sevemu-host: ..."), exit status 1 (CLI11's own codes for a
// malformed command line; 70 and "internal error" only for a bug).
#include "base/main_guard.h"
#include "firmware/cert_chain.h"
#include "tools/sevemu-host/ccp.h"

#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <optional>
#include <nlohmann/json.hpp>

namespace {

using namespace sevemu;
using namespace sevemu::firmware;
using namespace sevemu::host;
using nlohmann::json;

int fail(std::string const& message)
{
    std::fprintf(stderr, "sevemu-host: %s\n", message.c_str());
    return 1;
}

struct Options {
    std::string platform;
    std::string cpu = "EPYC-Milan";
    bool json = false;
    std::string trace;
    bool init_ex = false;
    std::string file;
    std::string pek_file;
    std::string oca_file;
    std::string dir;
    bool full = false;
};

std::optional<CpuModel> parse_cpu(std::string const& s)
{
    return cpu_model_from_name(s);
}

// Certificates to import: Linux's SEV ioctls bound user blobs at SEV_FW_BLOB_MAX_SIZE (0x4000,
// include/uapi/linux/psp-sev.h); the firmware then checks the exact size.
Result<Bytes, HostError> read_input(std::string const& path)
{
    auto r = firmware::read_file(path, file_limits::kFirmwareBlob);
    if (!r)
        return make_unexpected(HostError { r.error().message });
    return std::move(*r);
}

Result<void, HostError> write_output(std::filesystem::path const& path, std::span<const uint8_t> data)
{
    auto r = sevemu::write_file_atomic(path, data, 0644); // certificates are public
    if (!r)
        return make_unexpected(HostError { r.error().message });
    return {};
}

// The first word of the command line that is not an option (or an option's value): the
// command the user asked for, to name it when it is not one of ours.
std::string command_word(int argc, char** argv)
{
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--platform" || a == "--cpu" || a == "--trace") {
            ++i;
            continue;
        }
        if (!a.empty() && a[0] == '-')
            continue;
        return a;
    }
    return {};
}

std::string version_string(PlatformStatusBuf const& s)
{
    return std::to_string(s.api_major) + "." + std::to_string(s.api_minor);
}

int cmd_status(Options const& o, Ccp& ccp)
{
    auto s = ccp.platform_status();
    if (!s)
        return fail(s.error().message);
    std::string state(platform_state_name(PlatformState(s->state)));
    std::string owner = (s->owner & kStatusOwnerExternal) ? "external" : "self";
    bool es = s->config & kStatusConfigEs;
    if (o.json) {
        std::printf("%s\n", json {
                                { "platform", ccp.store().dir().string() },
                                { "cpu", std::string(cpu_model_name(ccp.params().model)) },
                                { "api_major", uint32_t(s->api_major) },
                                { "api_minor", uint32_t(s->api_minor) },
                                { "build", uint32_t(s->build) },
                                { "state", state },
                                { "owner", owner },
                                { "es", es },
                                { "guest_count", uint32_t(s->guest_count) },
                            }.dump(2)
                                .c_str());
        return 0;
    }
    std::printf("Platform directory: %s\n", ccp.store().dir().c_str());
    std::printf("CPU model:          %s\n", std::string(cpu_model_name(ccp.params().model)).c_str());
    std::printf("Firmware API:       %s (build %u)\n", version_string(*s).c_str(), s->build);
    std::printf("Platform state:     %s\n", state.c_str());
    std::printf("Owner:              %s\n", owner == "self" ? "self-owned" : "externally owned");
    std::printf("SEV-ES:             %s\n", es ? "initialised" : "not initialised");
    std::printf("Guests:             %u\n", uint32_t(s->guest_count));
    return 0;
}

int simple(Ccp& ccp, CommandId id, Options const& o, char const* done)
{
    if (auto r = ccp.run0(id); !r)
        return fail(r.error().message);
    if (id == CommandId::PLATFORM_RESET) {
        if (auto r = ccp.erase_init_ex_nv(); !r)
            return fail(r.error().message);
    } else if (auto r = ccp.sync_nv(); !r) {
        return fail(r.error().message);
    }
    if (o.json)
        std::printf("%s\n", json { { "result", "ok" } }.dump().c_str());
    else
        std::printf("%s\n", done);
    return 0;
}

int cmd_reset(Options const& o, Ccp& ccp)
{
    // SEV_FACTORY_RESET in sev-dev.c: refuse while guests run, SHUTDOWN if INIT, then reset.
    auto s = ccp.platform_status();
    if (!s)
        return fail(s.error().message);
    if (s->state == uint8_t(PlatformState::WORKING))
        return fail("the platform has running guests");
    if (s->state == uint8_t(PlatformState::INIT)) {
        if (auto r = ccp.run0(CommandId::SHUTDOWN); !r)
            return fail(r.error().message);
    }
    return simple(ccp, CommandId::PLATFORM_RESET, o, "platform reset: a new self-owned identity is made at the next INIT");
}

int cmd_pek_csr(Options const& o, Ccp& ccp)
{
    PekCsrBuf q {}; // the length query sevctl's ioctl makes first
    auto s = ccp.status_of(CommandId::PEK_CSR, q);
    if (!s)
        return fail(s.error().message);
    if (*s != uint16_t(Status::INVALID_LEN))
        return fail(command_error(CommandId::PEK_CSR, *s));
    PekCsrBuf b {};
    b.csr_paddr = Ccp::kData;
    b.csr_length = q.csr_length;
    if (auto r = ccp.run(CommandId::PEK_CSR, b); !r)
        return fail(r.error().message);
    Bytes csr = ccp.get(Ccp::kData, b.csr_length);
    if (auto w = write_output(o.file, csr); !w)
        return fail(w.error().message);
    if (o.json)
        std::printf("%s\n", json { { "csr", o.file }, { "length", uint32_t(b.csr_length) } }.dump().c_str());
    else
        std::printf("PEK signing request written to %s (%u bytes)\n", o.file.c_str(), b.csr_length);
    return 0;
}

int cmd_pek_cert_import(Options const& o, Ccp& ccp)
{
    auto pek = read_input(o.pek_file);
    if (!pek)
        return fail(pek.error().message);
    auto oca = read_input(o.oca_file);
    if (!oca)
        return fail(oca.error().message);
    // Linux bounds user blobs (SEV_FW_BLOB_MAX_SIZE = 0x4000); the firmware checks the exact size.
    if (pek->empty() || pek->size() > 0x4000 || oca->empty() || oca->size() > 0x4000)
        return fail("certificate files must be 1..16384 bytes (an SEV certificate is 2084)");
    ccp.put(Ccp::kData, *pek);
    ccp.put(Ccp::kData + 0x4000, *oca);
    PekCertImportBuf b {};
    b.pek_cert_paddr = Ccp::kData;
    b.pek_cert_length = uint32_t(pek->size());
    b.oca_cert_paddr = Ccp::kData + 0x4000;
    b.oca_cert_length = uint32_t(oca->size());
    if (auto r = ccp.run(CommandId::PEK_CERT_IMPORT, b); !r)
        return fail(r.error().message);
    if (auto w = ccp.sync_nv(); !w)
        return fail(w.error().message);
    if (o.json)
        std::printf("%s\n", json { { "result", "ok" }, { "owner", "external" } }.dump().c_str());
    else
        std::printf("PEK certificate imported: the platform is now externally owned\n");
    return 0;
}

int cmd_export(Options const& o, Ccp& ccp)
{
    if (o.dir.empty())
        return fail("export '': empty directory name");
    PdhCertExportBuf b {};
    b.pdh_cert_paddr = Ccp::kData;
    b.pdh_cert_length = kSevCertSize;
    b.certs_paddr = Ccp::kData + 0x1000;
    b.certs_length = 3 * kSevCertSize;
    if (auto r = ccp.run(CommandId::PDH_CERT_EXPORT, b); !r)
        return fail(r.error().message);
    Bytes pdh = ccp.get(Ccp::kData, kSevCertSize);
    Bytes chain = ccp.get(Ccp::kData + 0x1000, 3 * kSevCertSize);
    auto slice = [&](int i) { return std::span<const uint8_t>(chain).subspan(size_t(i) * kSevCertSize, kSevCertSize); };
    std::vector<std::pair<std::string, Bytes>> files {
        { "pdh.cert", pdh },
        { "pek.cert", Bytes(slice(0).begin(), slice(0).end()) },
        { "oca.cert", Bytes(slice(1).begin(), slice(1).end()) },
        { "cek.cert", Bytes(slice(2).begin(), slice(2).end()) },
    };
    std::optional<AmdChain> amd;
    if (o.full) {
        // What sevctl fetches from AMD's KDS: the CEK signed by the ASK, and the ASK and ARK.
        // sevemu's are its own TEST roots (sevemu-test-ARK/ASK key IDs), generated once per model.
        auto r = ccp.store().amd_chain(ccp.params().model, ccp.params().api_major, ccp.params().api_minor);
        if (!r)
            return fail(r.error().message);
        amd = std::move(*r);
        files[3].second = amd->cek.serialize();
        files.push_back({ "ask.cert", amd->ask.serialize() });
        files.push_back({ "ark.cert", amd->ark.serialize() });
    }
    // Export only what verifies, as `sevemu-owner verify-chain` will check it: PEK -> PDH,
    // OCA -> PEK, CEK -> PEK and, with --full, ARK -> ASK -> CEK. A damaged platform
    // directory (a corrupted ARK or ASK, a CEK from another chip) is an error here, not a
    // chain the owner's tools would refuse later.
    {
        auto pek = SevCert::parse(slice(0)), oca = SevCert::parse(slice(1)), pdhc = SevCert::parse(pdh);
        auto cek = SevCert::parse(files[3].second);
        if (!pek || !oca || !cek || !pdhc)
            return fail("export: a certificate the firmware exported does not parse; nothing written");
        SevChain c { amd ? std::optional(amd->ark) : std::nullopt, amd ? std::optional(amd->ask) : std::nullopt,
            std::move(*cek), std::move(*oca), std::move(*pek), std::move(*pdhc) };
        if (auto v = verify_chain(c, o.full); !v)
            return fail("export: the platform's certificate chain does not verify (" + v.error().message()
                + "): " + ccp.store().dir().string() + " is damaged; nothing written");
    }
    std::filesystem::path dir(o.dir);
    std::error_code ec;
    bool created = std::filesystem::create_directories(dir, ec);
    if (ec)
        return fail(dir.string() + ": cannot create directory: " + ec.message());
    std::vector<OutputFile> outputs;
    json written = json::array();
    for (auto const& [name, data] : files) {
        outputs.push_back({ dir / name, data, 0644 }); // certificates are public
        written.push_back((dir / name).string());
    }
    // All the certificates or none: a directory with a mix of two exports would not verify.
    if (auto w = write_files_atomic(outputs); !w) {
        if (created)
            std::filesystem::remove(dir, ec);
        return fail(w.error().message);
    }
    if (o.json)
        std::printf("%s\n", json { { "files", written } }.dump(2).c_str());
    else
        for (auto const& f : written)
            std::printf("%s\n", f.get<std::string>().c_str());
    return 0;
}

int cmd_get_id(Options const& o, Ccp& ccp)
{
    GetIdBuf q {};
    auto s = ccp.status_of(CommandId::GET_ID, q);
    if (!s)
        return fail(s.error().message);
    if (*s != uint16_t(Status::INVALID_LEN))
        return fail(command_error(CommandId::GET_ID, *s));
    GetIdBuf b {};
    b.id_paddr = Ccp::kData;
    b.id_length = q.id_length;
    if (auto r = ccp.run(CommandId::GET_ID, b); !r)
        return fail(r.error().message);
    std::string id = to_hex(ccp.get(Ccp::kData, b.id_length));
    if (o.json)
        std::printf("%s\n", json { { "id", id } }.dump().c_str());
    else
        std::printf("%s\n", id.c_str());
    return 0;
}

int cmd_ok(Options const& o, Ccp& ccp)
{
    struct Check {
        std::string name;
        bool pass;
        std::string detail;
    };
    std::vector<Check> checks;
    checks.push_back({ "PSP mailbox reports SEV", (ccp.feature_register() & devices::PspMailbox::kFeatureSev) != 0, "" });
    auto s = ccp.platform_status();
    checks.push_back({ "SEV firmware initialised", s && s->state != 0, s ? std::string(platform_state_name(PlatformState(s->state))) : s.error().message });
    bool api_ok = s && (s->api_major > 0 || s->api_minor >= 17);
    checks.push_back({ "SEV firmware version at least 0.17", api_ok, s ? version_string(*s) + " build " + std::to_string(s->build) : "" });
    auto const& p = ccp.params();
    checks.push_back({ "SEV ASIDs", p.max_asid >= p.min_sev_asid,
        std::to_string(p.max_asid - p.min_sev_asid + 1) + " (" + std::to_string(p.min_sev_asid) + ".." + std::to_string(p.max_asid) + ")" });
    checks.push_back({ "SEV-ES", true, p.es_supported ? std::to_string(p.min_sev_asid - 1) + " ES ASIDs" : "not supported by this CPU model" });
    // The platform's own chain, as a guest owner checks it: OCA -> PEK <- CEK, PEK -> PDH.
    PdhCertExportBuf b {};
    b.pdh_cert_paddr = Ccp::kData;
    b.pdh_cert_length = kSevCertSize;
    b.certs_paddr = Ccp::kData + 0x1000;
    b.certs_length = 3 * kSevCertSize;
    auto r = ccp.run(CommandId::PDH_CERT_EXPORT, b);
    std::string chain_detail;
    bool chain_ok = false;
    if (!r) {
        chain_detail = r.error().message;
    } else {
        Bytes pdh = ccp.get(Ccp::kData, kSevCertSize);
        Bytes chain = ccp.get(Ccp::kData + 0x1000, 3 * kSevCertSize);
        auto pek = SevCert::parse(std::span(chain).subspan(0, kSevCertSize));
        auto oca = SevCert::parse(std::span(chain).subspan(kSevCertSize, kSevCertSize));
        auto cek = SevCert::parse(std::span(chain).subspan(2 * kSevCertSize, kSevCertSize));
        auto pdhc = SevCert::parse(pdh);
        if (pek && oca && cek && pdhc) {
            SevChain c { std::nullopt, std::nullopt, std::move(*cek), std::move(*oca), std::move(*pek), std::move(*pdhc) };
            auto v = verify_chain(c, false);
            chain_ok = bool(v);
            chain_detail = v ? "OCA -> PEK, CEK -> PEK, PEK -> PDH" : v.error().message();
        } else {
            chain_detail = "an exported certificate does not parse";
        }
    }
    checks.push_back({ "Platform certificate chain", chain_ok, chain_detail });
    bool all = std::all_of(checks.begin(), checks.end(), [](auto const& c) { return c.pass; });
    if (o.json) {
        json j = json::array();
        for (auto const& c : checks)
            j.push_back({ { "check", c.name }, { "pass", c.pass }, { "detail", c.detail } });
        std::printf("%s\n", json { { "ok", all }, { "checks", j } }.dump(2).c_str());
    } else {
        for (auto const& c : checks)
            std::printf("[ %s ] %s%s%s\n", c.pass ? "PASS" : "FAIL", c.name.c_str(), c.detail.empty() ? "" : ": ", c.detail.c_str());
    }
    return all ? 0 : 1;
}

int run(int argc, char** argv)
{
    Options o;
    CLI::App app { "sevemu-host: the platform owner's tool for the emulated AMD Secure Processor (like sevctl)" };
    app.option_defaults()->always_capture_default();
    app.add_option("--platform", o.platform, "Platform directory (default $SEVEMU_PLATFORM, else $XDG_DATA_HOME/sevemu/platform)");
    app.add_option("--cpu", o.cpu, "CPU model: EPYC, EPYC-Rome, EPYC-Milan, EPYC-Genoa");
    app.add_flag("--json", o.json, "Machine-readable output");
    app.add_option("--trace", o.trace, "Trace firmware commands to stderr (e.g. psp, 'psp*')");
    app.add_flag("--init-ex", o.init_ex, "Use INIT_EX with the NV area in DIR/init_ex_nv.bin (Linux's ccp init_ex_path)");
    app.require_subcommand(1, 1);
    app.add_subcommand("status", "Show the platform status (PLATFORM_STATUS)");
    app.add_subcommand("reset", "Factory reset: new self-owned OCA, PEK and PDH at the next INIT");
    app.add_subcommand("pek-gen", "Generate a new PEK (and OCA and PDH): PEK_GEN");
    app.add_subcommand("pdh-gen", "Generate a new PDH: PDH_GEN");
    auto* csr = app.add_subcommand("pek-csr", "Write the PEK certificate signing request to FILE");
    csr->add_option("FILE", o.file, "Output file")->required();
    auto* imp = app.add_subcommand("pek-cert-import", "Import an OCA-signed PEK and the OCA certificate");
    imp->add_option("PEK", o.pek_file, "Signed PEK certificate")->required()->check(CLI::ExistingFile);
    imp->add_option("OCA", o.oca_file, "OCA certificate")->required()->check(CLI::ExistingFile);
    auto* exp = app.add_subcommand("export", "Export the certificate chain into DIR");
    exp->add_flag("--full", o.full, "Also the ASK-signed CEK, the ASK and the ARK (sevemu's test roots)");
    exp->add_option("DIR", o.dir, "Output directory")->required();
    app.add_subcommand("get-id", "Print the chip ID (GET_ID), in hex");
    app.add_subcommand("ok", "Check that the platform is ready to run SEV guests (like sevctl ok)");

    try {
        app.parse(argc, argv);
    } catch (CLI::CallForHelp const& e) {
        return app.exit(e);
    } catch (CLI::CallForAllHelp const& e) {
        return app.exit(e);
    } catch (CLI::ParseError const& e) {
        std::string word = command_word(argc, argv);
        bool known = false;
        for (auto const* sub : app.get_subcommands([](CLI::App*) { return true; }))
            known |= sub->get_name() == word;
        if (!word.empty() && !known)
            std::fprintf(stderr, "sevemu-host: unknown command '%s' (see --help)\n", word.c_str());
        else
            std::fprintf(stderr, "sevemu-host: %s\n", e.what());
        return e.get_exit_code() ? e.get_exit_code() : 1;
    }
    // An empty --platform is a mistake (a variable that expanded to nothing), never "the default".
    if (app.count("--platform") && o.platform.empty())
        return fail("--platform '': empty directory name (omit the option for the default directory)");

    auto model = parse_cpu(o.cpu);
    if (!model)
        return fail("unknown CPU model '" + o.cpu + "' (EPYC, EPYC-Rome, EPYC-Milan, EPYC-Genoa)");
    std::filesystem::path platform = o.platform.empty() ? PlatformStore::default_dir() : std::filesystem::path(o.platform);
    Trace trace(stderr);
    if (!o.trace.empty())
        trace.enable(o.trace);
    auto ccp = Ccp::open(platform, *model, trace, o.init_ex);
    if (!ccp)
        return fail(ccp.error().message);
    // The driver's probe: bring the firmware to INIT (sevctl's ioctls do the same implicitly).
    if (auto r = (*ccp)->platform_init(); !r)
        return fail(r.error().message);

    std::string cmd = app.get_subcommands().front()->get_name();
    Ccp& c = **ccp;
    if (cmd == "status")
        return cmd_status(o, c);
    if (cmd == "reset")
        return cmd_reset(o, c);
    if (cmd == "pek-gen")
        return simple(c, CommandId::PEK_GEN, o, "new PEK, OCA and PDH generated (self-owned)");
    if (cmd == "pdh-gen")
        return simple(c, CommandId::PDH_GEN, o, "new PDH generated");
    if (cmd == "pek-csr")
        return cmd_pek_csr(o, c);
    if (cmd == "pek-cert-import")
        return cmd_pek_cert_import(o, c);
    if (cmd == "export")
        return cmd_export(o, c);
    if (cmd == "get-id")
        return cmd_get_id(o, c);
    if (cmd == "ok")
        return cmd_ok(o, c);
    return fail("unknown command '" + cmd + "'");
}

} // namespace

// An exception reaching main is a bug: base/main_guard.h.
int main(int argc, char** argv) { return sevemu::run_guarded("sevemu-host", run, argc, argv); }
