// sevemu-demo — `make demo` (INTERFACES.md §6): an SEV guest's whole life on a fresh emulated
// platform, told step by step, done the way a platform owner, a hypervisor operator and a guest
// owner would do it: with the project's own programs (sevemu-host, sevemu, sevemu-owner) and QMP.
// Every claim it prints is checked; the demo exits non-zero when one is false.
#include "base/main_guard.h"
#include "base/encoding.h"
#include "base/subprocess.h"
#include "emulator/qmp/qmp_client.h"

#include <nlohmann/json.hpp>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace sevemu;
namespace fs = std::filesystem;
using qmp::Json;

namespace {

// ---- where things are: the demo sits in BUILD/tools/sevemu-demo/, the guest in BUILD/tests/guests/.
struct Paths {
    std::string sevemu, host, owner, guest;
};

Paths find_paths()
{
    fs::path exe = fs::read_symlink("/proc/self/exe");
    fs::path tools = exe.parent_path().parent_path();
    fs::path build = tools.parent_path();
    return { (tools / "sevemu" / "sevemu").string(), (tools / "sevemu-host" / "sevemu-host").string(),
        (tools / "sevemu-owner" / "sevemu-owner").string(), (build / "tests" / "guests" / "guest-sev.elf").string() };
}

int g_failures = 0;

void check(bool ok, std::string const& claim)
{
    std::printf("   %s %s\n", ok ? "[ok]  " : "[FAIL]", claim.c_str());
    if (!ok)
        ++g_failures;
}
void step(int n, std::string const& title) { std::printf("\n%d. %s\n", n, title.c_str()); }
// Paths shown relative to the demo's directories, so a command line reads as a person types it.
std::vector<std::string> g_strip;
void show_cmd(std::vector<std::string> const& argv)
{
    std::string line = "   $";
    for (size_t i = 0; i < argv.size(); ++i) {
        std::string a = i == 0 ? fs::path(argv[0]).filename().string() : argv[i];
        for (auto const& prefix : g_strip)
            for (size_t at; (at = a.find(prefix)) != std::string::npos;)
                a.erase(at, prefix.size());
        line += " " + a;
    }
    std::printf("%s\n", line.c_str());
}
[[noreturn]] void die(std::string const& why)
{
    std::fprintf(stderr, "sevemu-demo: %s\n", why.c_str());
    std::exit(1);
}

ProcessResult run(std::vector<std::string> const& argv, bool show = true)
{
    if (show)
        show_cmd(argv);
    auto r = run_capture(argv);
    if (!r.exited || r.status != 0)
        die(argv[0] + " failed (status " + std::to_string(r.status) + "): " + r.err + r.out);
    return r;
}

void indent(std::string const& text, size_t max_lines = 20)
{
    std::istringstream in(text);
    std::string line;
    for (size_t n = 0; std::getline(in, line) && n < max_lines; ++n)
        std::printf("     %s\n", line.c_str());
}

std::string read_file(fs::path const& p)
{
    std::ifstream f(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
}
std::string trim(std::string s)
{
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' '))
        s.pop_back();
    return s;
}

Json exec(qmp::Client& c, std::string const& name, Json args = Json::object())
{
    std::printf("   qmp> {\"execute\": \"%s\"%s}\n", name.c_str(),
        args.empty() ? "" : (", \"arguments\": " + (args.dump().size() > 90 ? args.dump().substr(0, 87) + "...}" : args.dump())).c_str());
    auto r = c.execute(name, args);
    if (!r)
        die("QMP " + name + ": " + r.error().error_class + ": " + r.error().desc);
    return *r;
}

std::string printable(std::string_view bytes, size_t n)
{
    std::string s;
    for (size_t i = 0; i < n && i < bytes.size(); ++i)
        s += (bytes[i] >= 0x20 && bytes[i] < 0x7f) ? bytes[i] : '.';
    return s;
}
std::string hex_of(std::string_view bytes, size_t n)
{
    return to_hex(std::span<uint8_t const>(reinterpret_cast<uint8_t const*>(bytes.data()), std::min(n, bytes.size())));
}

bool wait_for_serial(fs::path const& file, std::string const& marker, int seconds)
{
    for (int i = 0; i < seconds * 20; ++i) {
        if (read_file(file).find(marker) != std::string::npos)
            return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
}

} // namespace

static int run();

// An exception reaching main is a bug: base/main_guard.h.
int main() { return sevemu::run_guarded("sevemu-demo", [] { return run(); }); }

static int run()
{
    Paths paths = find_paths();
    for (auto const& p : { paths.sevemu, paths.host, paths.owner, paths.guest })
        if (!fs::exists(p))
            die("missing " + p + " (run `make demo` after building)");
    char tmpl[] = "/tmp/sevemu-demo-XXXXXX";
    if (!::mkdtemp(tmpl))
        die("mkdtemp failed");
    fs::path dir = tmpl;
    struct Cleanup {
        fs::path d;
        ~Cleanup() { std::error_code ec; fs::remove_all(d, ec); }
    } cleanup { dir };
    fs::path platform = dir / "platform", certs = dir / "certs", owner = dir / "owner";
    g_strip = { dir.string() + "/", fs::path(paths.guest).parent_path().string() + "/" };
    fs::create_directories(certs);
    fs::create_directories(owner);

    std::printf("sevemu demo: an SEV guest on an emulated AMD EPYC (Milan), from launch to proof of its secret.\n");
    std::printf("Three parties: the platform owner (sevemu-host), the hypervisor (sevemu + QMP) and the guest owner\n"
                "(sevemu-owner), who trusts only AMD's certificate chain and the measurement.\n");

    // 1. The platform.
    step(1, "Platform owner: a fresh emulated AMD Secure Processor; export its certificate chain.");
    run({ paths.host, "--platform", platform.string(), "export", "--full", certs.string() });
    std::vector<std::string> names;
    for (auto const& e : fs::directory_iterator(certs))
        names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    std::string list;
    for (auto const& n : names)
        list += n + " ";
    indent(list);

    // 2. The owner verifies the chain.
    step(2, "Guest owner: verify the chain ARK -> ASK -> CEK -> PEK -> PDH (and OCA -> PEK).");
    auto chain = run({ paths.owner, "verify-chain", certs.string() });
    indent(chain.out, 8);
    check(chain.status == 0, "the platform's PDH is vouched for by the AMD root (here: sevemu's own test ARK)");

    // 3. Session.
    uint32_t policy = 0x1; // NODBG: the hypervisor may not use the firmware's debug decryption
    step(3, "Guest owner: open a launch session with the PDH (policy 0x1 = NODBG).");
    std::string name = (owner / "demo").string();
    run({ paths.owner, "session", "--pdh", (certs / "pdh.cert").string(), "--policy", "0x1", "--name", name });
    indent("wrote demo_godh.b64, demo_session.b64 (to the hypervisor) and demo_tek.bin, demo_tik.bin (kept)");

    // 4. Launch.
    step(4, "Hypervisor: start the guest paused; sevemu encrypts and measures the kernel (LAUNCH_UPDATE_DATA).");
    fs::path sock = dir / "qmp.sock", serial = dir / "serial.txt", err = dir / "sevemu.err";
    std::vector<std::string> cmd = { paths.sevemu, "-machine", "confidential-guest-support=sev0", "-object",
        "sev-guest,id=sev0,policy=0x1,cbitpos=51,reduced-phys-bits=1,dh-cert-file=" + name + "_godh.b64,session-file=" + name +
            "_session.b64",
        "-kernel", paths.guest, "-serial", "file:" + serial.string(), "-display", "none", "-no-shutdown", "-S", "-qmp",
        "unix:" + sock.string() + ",server=on,wait=off", "--platform", platform.string() };
    show_cmd(cmd);
    Process vm = Process::spawn(cmd, {}, err.string());
    auto client = qmp::Client::connect_unix(sock.string());
    if (!client)
        die("QMP: " + client.error() + "\n" + read_file(err));
    auto& q = *client;
    Json sev = exec(q, "query-sev");
    std::printf("   <- state %s, policy %s, handle %s, firmware API %s.%s build %s\n", sev.value("state", "?").c_str(),
        sev["policy"].dump().c_str(), sev["handle"].dump().c_str(), sev["api-major"].dump().c_str(),
        sev["api-minor"].dump().c_str(), sev["build-id"].dump().c_str());
    check(sev.value("state", "") == "launch-secret", "the guest is launched and measured, not yet running");

    // 5. Measurement.
    step(5, "Guest owner: the measurement must be HMAC(TIK, api, build, policy, digest of the image, nonce).");
    Json measure = exec(q, "query-sev-launch-measure");
    std::string mb64 = measure.value("data", "");
    std::printf("   <- %s\n", mb64.c_str());
    auto digest = run({ paths.owner, "measurement", "digest", "--kernel", paths.guest });
    std::printf("   expected launch digest (computed from the ELF, README contract): %s\n", trim(digest.out).c_str());
    auto verify = run_capture({ paths.owner, "measurement", "verify", "--tik", name + "_tik.bin", "--measurement", mb64,
        "--api-major", sev["api-major"].dump(), "--api-minor", sev["api-minor"].dump(), "--build", sev["build-id"].dump(),
        "--policy", std::to_string(policy), "--kernel", paths.guest });
    show_cmd({ paths.owner, "measurement", "verify", "--tik", "demo_tik.bin", "--measurement", "...", "--kernel", paths.guest });
    indent(verify.out + verify.err, 4);
    check(verify.exited && verify.status == 0, "the measurement matches: this is our kernel, on a genuine platform");

    // 6. Secret.
    step(6, "Guest owner: wrap a secret under the session's TEK/TIK; the hypervisor injects it (LAUNCH_SECRET).");
    std::string secret_text = "disk key 0x5EC2E7 -- for the guest's eyes only";
    std::string page = "SEVEMUS1";
    uint32_t len = uint32_t(secret_text.size());
    page += std::string { char(len), char(len >> 8), char(len >> 16), char(len >> 24) };
    page += std::string(4, '\0') + secret_text;
    page.resize((page.size() + 15) / 16 * 16, '\0');
    std::ofstream(owner / "secret.bin", std::ios::binary) << page;
    run({ paths.owner, "secret", "build", "--tik", name + "_tik.bin", "--tek", name + "_tek.bin", "--measurement", mb64,
        "--secret", (owner / "secret.bin").string(), "--out-header", (owner / "header.b64").string(), "--out-secret",
        (owner / "secret.b64").string() });
    exec(q, "sev-inject-launch-secret",
        { { "packet-header", trim(read_file(owner / "header.b64")) }, { "secret", trim(read_file(owner / "secret.b64")) },
            { "gpa", 0x800000 } });
    uint8_t want[32];
    SHA256(reinterpret_cast<uint8_t const*>(secret_text.data()), secret_text.size(), want);
    std::string want_hex = to_hex(want);
    std::printf("   the secret: \"%s\" (SHA-256 %s...)\n", secret_text.c_str(), want_hex.substr(0, 16).c_str());

    // 7. Run.
    step(7, "Hypervisor: cont (LAUNCH_FINISH, then VMRUN). The guest's serial console:");
    exec(q, "cont");
    bool done = wait_for_serial(serial, "sev guest: done", 60);
    std::string console = read_file(serial);
    indent(console, 12);
    check(done, "the guest ran to the end");
    check(console.find("sev: active, SEV_STATUS=0x1") != std::string::npos,
        "the guest sees SEV active (CPUID 0x8000001F, MSR SEV_STATUS bit 0)");
    check(console.find("secret: " + std::to_string(len) + " bytes, sha256 " + want_hex) != std::string::npos,
        "the guest read the owner's secret intact from its private memory (same SHA-256)");

    // 8. The hypervisor's view.
    step(8, "Hypervisor: read the guest's pages from outside (pmemsave: what DRAM holds).");
    std::string priv_msg = "sevemu private page: the hypervisor sees only ciphertext here";
    std::string shared_msg = "sevemu shared page: hello, hypervisor";
    exec(q, "pmemsave", { { "val", 0x901000 }, { "size", 4096 }, { "filename", (dir / "private.bin").string() } });
    exec(q, "pmemsave", { { "val", 0x900000 }, { "size", 4096 }, { "filename", (dir / "shared.bin").string() } });
    exec(q, "pmemsave", { { "val", 0x800000 }, { "size", 4096 }, { "filename", (dir / "secret.bin").string() } });
    std::string priv = read_file(dir / "private.bin"), shared = read_file(dir / "shared.bin"),
                sec = read_file(dir / "secret.bin");
    std::printf("   private page 0x901000, guest's view: |%s|\n", printable(priv_msg, 48).c_str());
    std::printf("   private page 0x901000, host's view:  |%s|  %s...\n", printable(priv, 48).c_str(), hex_of(priv, 12).c_str());
    std::printf("   shared page  0x900000, host's view:  |%s|\n", printable(shared, 48).c_str());
    std::printf("   secret page  0x800000, host's view:  |%s|  %s...\n", printable(sec, 48).c_str(), hex_of(sec, 12).c_str());
    check(priv.size() == 4096 && priv.compare(0, priv_msg.size(), priv_msg) != 0 && priv.find("sevemu") == std::string::npos,
        "the private page is ciphertext to the hypervisor");
    check(sec.find(secret_text) == std::string::npos && sec.find("SEVEMUS1") == std::string::npos,
        "so is the secret");
    check(shared.compare(0, shared_msg.size(), shared_msg) == 0, "the page the guest shared (C-bit clear) is plaintext");

    step(9, "Hypervisor: quit.");
    exec(q, "quit");
    auto end = vm.wait(10000);
    check(end.exited && end.status == 0, "sevemu exited cleanly");

    std::printf("\n%s\n", g_failures == 0 ? "Every claim above was checked: the demo passed."
                                          : (std::to_string(g_failures) + " claim(s) FAILED.").c_str());
    return g_failures == 0 ? 0 : 1;
}
