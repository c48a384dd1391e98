// sevemu-demo — `make demo` (INTERFACES.md §6): an SEV guest's whole life on a fresh emulated
// platform, told step by step, done the way a platform owner, a hypervisor operator and a guest
// owner would do it: with the project's own programs (sevemu-host, sevemu, sevemu-owner) and QMP.
// Its last chapter migrates a running SEV guest to a second sevemu on its own platform (QEMU's SEV
// migration flow) through a relay that records the wire, and searches the recording for values the
// guest keeps in its private memory. Every claim it prints is checked; the demo exits non-zero
// when one is false.
#include "base/main_guard.h"
#include "base/encoding.h"
#include "base/subprocess.h"
#include "emulator/qmp/qmp_client.h"

#include <nlohmann/json.hpp>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include <algorithm>
#include <arpa/inet.h>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace sevemu;
namespace fs = std::filesystem;
using qmp::Json;

namespace {

// ---- where things are: the demo sits in BUILD/tools/sevemu-demo/, the guest in BUILD/tests/guests/.
struct Paths {
    std::string sevemu, host, owner, guest, bench_sev, bench_plain;
};

Paths find_paths()
{
    fs::path exe = fs::read_symlink("/proc/self/exe");
    fs::path tools = exe.parent_path().parent_path();
    fs::path build = tools.parent_path();
    fs::path bench = build / "tests" / "guests" / "bench";
    return { (tools / "sevemu" / "sevemu").string(), (tools / "sevemu-host" / "sevemu-host").string(),
        (tools / "sevemu-owner" / "sevemu-owner").string(), (build / "tests" / "guests" / "guest-sev.elf").string(),
        (bench / "bench-memory-sev.elf").string(), (bench / "bench-memory.elf").string() };
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

Json exec(qmp::Client& c, std::string const& name, Json args = Json::object(), char const* who = "qmp")
{
    std::printf("   %s> {\"execute\": \"%s\"%s}\n", who, name.c_str(),
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

// ---- the migration chapter.

// A TCP relay on loopback between a migration's source and its target that keeps a copy of every
// byte the source sends: what an eavesdropper on the wire would capture.
class WireTap {
public:
    explicit WireTap(uint16_t target_port)
        : m_target(target_port)
    {
        m_listen = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a = loopback(0);
        socklen_t len = sizeof a;
        if (m_listen < 0 || ::bind(m_listen, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(m_listen, 1) != 0
            || ::getsockname(m_listen, reinterpret_cast<sockaddr*>(&a), &len) != 0)
            die(std::string("the wire tap cannot listen on loopback: ") + std::strerror(errno));
        m_port = ntohs(a.sin_port);
        m_thread = std::thread([this] { relay(); });
    }
    WireTap(WireTap const&) = delete;
    WireTap& operator=(WireTap const&) = delete;
    ~WireTap()
    {
        if (m_thread.joinable())
            m_thread.join();
        ::close(m_listen);
    }
    uint16_t port() const { return m_port; }
    // Waits for the connection to end (the source's "migrate" is over by then).
    std::string const& captured()
    {
        if (m_thread.joinable())
            m_thread.join();
        return m_bytes;
    }

private:
    static sockaddr_in loopback(uint16_t port)
    {
        sockaddr_in a {};
        a.sin_family = AF_INET;
        a.sin_port = htons(port);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        return a;
    }
    static bool send_all(int fd, char const* p, size_t n)
    {
        while (n) {
            ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
            if (w <= 0)
                return false;
            p += w;
            n -= size_t(w);
        }
        return true;
    }
    // One connection, both ways, until both sides have closed (or 30 s without a byte).
    void relay()
    {
        pollfd pl { m_listen, POLLIN, 0 };
        if (::poll(&pl, 1, 30000) != 1)
            return;
        int src = ::accept4(m_listen, nullptr, nullptr, SOCK_CLOEXEC);
        int dst = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in t = loopback(m_target);
        if (src < 0 || dst < 0 || ::connect(dst, reinterpret_cast<sockaddr*>(&t), sizeof t) != 0) {
            ::close(src);
            ::close(dst);
            return;
        }
        bool open[2] = { true, true }; // src -> dst, dst -> src
        std::vector<char> buf(1 << 16);
        while (open[0] || open[1]) {
            pollfd fds[2] = { { open[0] ? src : -1, POLLIN, 0 }, { open[1] ? dst : -1, POLLIN, 0 } };
            if (::poll(fds, 2, 30000) <= 0)
                break;
            for (int i = 0; i < 2; ++i) {
                if (!fds[i].revents)
                    continue;
                int from = i == 0 ? src : dst, to = i == 0 ? dst : src;
                ssize_t n = ::recv(from, buf.data(), buf.size(), 0);
                if (n > 0 && i == 0)
                    m_bytes.append(buf.data(), size_t(n));
                if (n <= 0 || !send_all(to, buf.data(), size_t(n))) {
                    open[i] = false;
                    ::shutdown(to, SHUT_WR);
                }
            }
        }
        ::close(src);
        ::close(dst);
    }

    int m_listen { -1 };
    uint16_t m_port {}, m_target {};
    std::string m_bytes;
    std::thread m_thread;
};

// The bench-memory guest's workload (tests/guests/bench/memory.c, with guest_rand of
// tests/guests/guest.h) computed natively by the host CPU: the checksum the guest must print, and
// 64 of the 8-byte values it writes into its array first (odd indices: the workload never
// rewrites them, so they stay in the guest's memory for the whole run).
struct MemoryWorkload {
    uint64_t checksum {};
    std::vector<std::string> markers;
};
MemoryWorkload memory_workload()
{
    constexpr uint32_t kWords = (4u << 20) / 8, kChain = (1u << 20) / 4, kPasses = 32;
    uint64_t state = 0x243F6A8885A308D3ull;
    auto rand = [&state] {
        uint64_t x = state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state = x;
        return x * 0x2545F4914F6CDD1Dull;
    };
    std::vector<uint64_t> a(kWords), b(kWords);
    std::vector<uint32_t> chain(kChain);
    MemoryWorkload w;
    for (uint32_t i = 0; i < kWords; ++i) {
        a[i] = rand();
        if (i % 8192 == 1)
            w.markers.emplace_back(reinterpret_cast<char const*>(&a[i]), 8); // little-endian, as in the guest
    }
    for (uint32_t i = 0; i < kChain; ++i)
        chain[i] = i;
    for (uint32_t i = kChain - 1; i > 0; --i)
        std::swap(chain[i], chain[uint32_t(rand() % i)]);
    uint64_t sum = 0;
    for (uint32_t pass = 0; pass < kPasses; ++pass) {
        for (uint32_t i = 0; i < kWords; ++i)
            sum += a[i];
        for (uint32_t s = 0; s < 64; s += 8)
            for (uint32_t i = s; i < kWords; i += 64)
                sum ^= a[i] + i;
        for (uint32_t i = 0; i < kWords; ++i)
            b[i] = a[i] ^ sum;
        for (uint32_t i = 0; i < kWords; i += 2)
            a[i] = b[kWords - 1 - i] + pass;
        uint32_t p = pass;
        for (uint32_t k = 0; k < kChain; ++k)
            p = chain[p];
        sum += p;
    }
    w.checksum = sum ^ a[12345] ^ b[kWords - 7];
    return w;
}

size_t count_found(std::string const& wire, std::vector<std::string> const& markers)
{
    return size_t(std::count_if(markers.begin(), markers.end(), [&](auto const& m) { return wire.find(m) != std::string::npos; }));
}

// Until the guest has retired `n` instructions (query-replay's count): bench-memory fills its array
// in its first ~10 million of about 290 million, so past 30 million its values are in memory.
void wait_icount(qmp::Client& c, uint64_t n)
{
    for (int i = 0; i < 3000; ++i) {
        auto r = c.execute("query-replay");
        if (!r)
            die("QMP query-replay: " + r.error().desc);
        if (r->value("icount", 0ull) >= n)
            return;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    die("the guest did not reach instruction " + std::to_string(n));
}
constexpr uint64_t kPastTheFill = 30'000'000;

// query-migrate until the job has ended.
Json wait_migration(qmp::Client& c)
{
    for (int i = 0; i < 1200; ++i) {
        auto r = c.execute("query-migrate");
        if (!r)
            die("QMP query-migrate: " + r.error().desc);
        std::string st = r->value("status", "");
        if (st == "completed" || st == "failed" || st == "cancelled")
            return *r;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    die("the migration did not end within a minute");
}

std::string mib(uint64_t bytes)
{
    char text[32];
    std::snprintf(text, sizeof text, "%.1f MiB", double(bytes) / double(1 << 20));
    return text;
}

} // namespace

static int run();
static void migration_chapter(Paths const& paths, fs::path const& dir, fs::path const& platform);

// An exception reaching main is a bug: base/main_guard.h.
int main() { return sevemu::run_guarded("sevemu-demo", [] { return run(); }); }

static int run()
{
    Paths paths = find_paths();
    for (auto const& p : { paths.sevemu, paths.host, paths.owner, paths.guest, paths.bench_sev, paths.bench_plain })
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
    g_strip = { dir.string() + "/", fs::path(paths.bench_sev).parent_path().string() + "/",
        fs::path(paths.guest).parent_path().string() + "/" };
    fs::create_directories(certs);
    fs::create_directories(owner);

    std::printf("sevemu demo: an SEV guest on an emulated AMD EPYC (Milan), from launch to proof of its secret,\n"
                "then a running SEV guest's live migration to another machine.\n");
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

    migration_chapter(paths, dir, platform);

    std::printf("\n%s\n", g_failures == 0 ? "Every claim above was checked: the demo passed."
                                          : (std::to_string(g_failures) + " claim(s) FAILED.").c_str());
    return g_failures == 0 ? 0 : 1;
}

// Steps 10-12: a running SEV guest moves to a second sevemu on another platform, as QEMU's SEV
// migration series drives it (the target's PDH and chain to the source, then migrate), through a
// WireTap; then the same search over the captured stream and over a plain guest's.
static void migration_chapter(Paths const& paths, fs::path const& dir, fs::path const& platform)
{
    MemoryWorkload work = memory_workload();
    char want[32];
    std::snprintf(want, sizeof want, "checksum %016llx", static_cast<unsigned long long>(work.checksum));
    std::vector<std::string> sev_object = { "-machine", "confidential-guest-support=sev0", "-object",
        "sev-guest,id=sev0,policy=0x1,cbitpos=51,reduced-phys-bits=1" };
    auto sevemu = [&](std::string const& name, std::vector<std::string> extra, bool sev) {
        std::vector<std::string> cmd = { paths.sevemu, "-m", "16M", "-display", "none", "-serial",
            "file:" + (dir / (name + ".txt")).string(), "-qmp", "unix:" + (dir / (name + ".sock")).string() + ",server=on,wait=off" };
        if (sev)
            cmd.insert(cmd.end(), sev_object.begin(), sev_object.end());
        cmd.insert(cmd.end(), extra.begin(), extra.end());
        show_cmd(cmd);
        Process p = Process::spawn(cmd, {}, (dir / (name + ".err")).string());
        auto c = qmp::Client::connect_unix((dir / (name + ".sock")).string());
        if (!c)
            die("QMP of the " + name + ": " + c.error() + "\n" + read_file(dir / (name + ".err")));
        return std::pair<Process, qmp::Client>(std::move(p), std::move(*c));
    };

    step(10, "Live migration: the target, a second sevemu on another platform, waits for the guest.");
    fs::path platform_b = dir / "platform-b", certs_b = dir / "certs-b";
    run({ paths.host, "--platform", platform_b.string(), "export", "--full", certs_b.string() });
    auto [target, tq] = sevemu("target", { "--platform", platform_b.string(), "-incoming", "tcp:127.0.0.1:0" }, true);
    Json listening = exec(tq, "query-migrate", Json::object(), "target");
    uint16_t target_port = uint16_t(std::stoi(listening["socket-address"][0].value("port", "0")));
    Json caps = exec(tq, "query-sev-capabilities", Json::object(), "target");
    std::string pdh = caps.value("pdh", "");
    std::printf("   <- listening on port %u; the target platform's PDH: %s...\n", target_port, pdh.substr(0, 32).c_str());
    auto cert = [&](std::string const& n) { return read_file(certs_b / n); };
    auto b64 = [](std::string const& bytes) {
        return to_base64(std::span<uint8_t const>(reinterpret_cast<uint8_t const*>(bytes.data()), bytes.size()));
    };
    std::string plat_cert = b64(cert("pek.cert") + cert("oca.cert") + cert("cek.cert"));
    std::string amd_cert = b64(cert("ask.cert") + cert("ark.cert"));

    step(11, "The source runs an SEV guest that computes (bench-memory-sev: 32 passes over 9 MiB); it moves while it works.");
    auto [source, sq] = sevemu("source", { "--platform", platform.string(), "-kernel", paths.bench_sev }, true);
    // The guest enables migration itself (MSR_KVM_MIGRATION_CONTROL, offered in CPUID 0x40000001):
    // then the only thing missing is where it goes.
    Json blocked;
    for (int i = 0; i < 200; ++i) {
        auto q = sq.execute("query-migrate");
        blocked = q ? q->value("blocked-reasons", Json::array()) : Json::array();
        if (blocked.size() == 1 && blocked[0].get<std::string>().find("migrate-set-sev-info") != std::string::npos)
            break;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    exec(sq, "query-migrate", Json::object(), "source");
    std::printf("   <- blocked-reasons %s\n", blocked.dump().c_str());
    check(blocked.size() == 1 && blocked[0].get<std::string>().find("migrate-set-sev-info") != std::string::npos,
        "the guest enabled migration itself (it wrote KVM_MIGRATION_READY); only its destination is missing");
    wait_icount(sq, kPastTheFill);
    std::printf("   (the guest has run 30 million instructions: its array is filled, and it computes on)\n");
    std::printf("   source> {\"execute\": \"migrate-set-sev-info\", \"arguments\": {\"pdh\": \"%.12s...\", \"plat-cert\": \"%.12s...\",\n"
                "                                                  \"amd-cert\": \"%.12s...\"}}\n"
                "      (pdh: from the target's query-sev-capabilities; plat-cert: base64(PEK|OCA|CEK) and amd-cert:\n"
                "       base64(ASK|ARK), from `sevemu-host export --full` on the target's platform)\n",
        pdh.c_str(), plat_cert.c_str(), amd_cert.c_str());
    if (auto r = sq.execute("migrate-set-sev-info", { { "pdh", pdh }, { "plat-cert", plat_cert }, { "amd-cert", amd_cert } }); !r)
        die("QMP migrate-set-sev-info: " + r.error().desc);
    WireTap tap(target_port);
    std::printf("   (port %u is a relay in this demo that records every byte the source sends)\n", tap.port());
    exec(sq, "migrate", { { "uri", "tcp:127.0.0.1:" + std::to_string(tap.port()) } }, "source");
    Json done = wait_migration(sq);
    exec(sq, "query-migrate", Json::object(), "source");
    Json ram = done.value("ram", Json::object());
    std::printf("   <- %s: dirty-sync-count %llu, %llu pages (the private ones as SEND_UPDATE_DATA packets), %s at %.0f Mbit/s;\n"
                "      setup %lld ms, total %lld ms, downtime %lld ms\n",
        done.value("status", "?").c_str(), ram.value("dirty-sync-count", 0ull), ram.value("normal", 0ull),
        mib(ram.value("transferred", 0ull)).c_str(), ram.value("mbps", 0.0), done.value("setup-time", 0ll),
        done.value("total-time", 0ll), done.value("downtime", 0ll));
    check(done.value("status", "") == "completed", "the migration completed while the guest computed");
    std::string sev_state = exec(sq, "query-sev", Json::object(), "source").value("state", "");
    std::string run_state = exec(sq, "query-status", Json::object(), "source").value("status", "");
    std::printf("   source> {\"execute\": \"cont\"}\n");
    auto cont = sq.execute("cont");
    std::printf("   <- SEV state %s, status %s; cont: %s\n", sev_state.c_str(), run_state.c_str(),
        cont ? "accepted" : cont.error().desc.c_str());
    check(sev_state == "sent" && run_state == "postmigrate" && !cont,
        "the source's copy can never run again (SEND_FINISH left it SENT)");
    bool finished = done.value("status", "") == "completed" && wait_for_serial(dir / "target.txt", "checksum", 120);
    auto target_end = target.wait(30000);
    std::printf("   the target's serial console:\n");
    indent(read_file(dir / "target.txt"), 4);
    check(finished && read_file(dir / "target.txt").find(want) != std::string::npos && read_file(dir / "source.txt").empty(),
        std::string("the guest finished on the target with the host's answer (the same workload on the host: ") + want + ")");
    check(target_end.exited && target_end.status == 0, "the target's sevemu exited 0 (the guest powered off)");
    exec(sq, "quit", Json::object(), "source");
    source.wait(10000);
    std::string sev_wire = tap.captured();

    step(12, "What crossed the wire: the guest's array starts with xorshift64* values, e.g. a[1] is the bytes\n   "
            + hex_of(work.markers[0], 8) + " in its private memory; the host searches the recording for " + std::to_string(work.markers.size())
            + " such values.");
    size_t sev_found = count_found(sev_wire, work.markers);
    std::printf("   the SEV guest's stream:                     %s captured, %zu of %zu found\n", mib(sev_wire.size()).c_str(),
        sev_found, work.markers.size());
    // The control: the same guest without SEV, migrated the same way.
    auto [ptarget, ptq] = sevemu("plain-target", { "-incoming", "tcp:127.0.0.1:0" }, false);
    uint16_t plain_port = uint16_t(std::stoi(exec(ptq, "query-migrate", Json::object(), "target")["socket-address"][0].value("port", "0")));
    auto [psource, psq] = sevemu("plain-source", { "-kernel", paths.bench_plain }, false);
    WireTap plain_tap(plain_port);
    wait_icount(psq, kPastTheFill);
    exec(psq, "migrate", { { "uri", "tcp:127.0.0.1:" + std::to_string(plain_tap.port()) } }, "source");
    Json plain_done = wait_migration(psq);
    std::string const& plain_wire = plain_tap.captured();
    size_t plain_found = count_found(plain_wire, work.markers);
    std::printf("   the same guest without SEV, migrated alike: %s captured, %zu of %zu found\n", mib(plain_wire.size()).c_str(),
        plain_found, work.markers.size());
    check(sev_wire.size() > (4u << 20) && sev_found == 0, "the SEV stream carried none of the guest's private values");
    check(plain_done.value("status", "") == "completed" && plain_found == work.markers.size(),
        "the search works: it finds every one of them in the plain guest's stream");
    psource.kill();
    ptarget.kill();
}
