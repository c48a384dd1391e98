// The cpu suite: guest instructions per second of the interpreter on fixed guest workloads, beside
// qemu-system-x86_64 -accel tcg running the very same images in the same run (INTERFACES.md §7,
// issue 4 item 7).
//
// Workloads: the Multiboot guests in tests/guests/bench/ (integer, memory, branch, strings, sse),
// each a fixed amount of work that prints "checksum <hex>" on COM1 and leaves through
// isa-debug-exit, so both emulators stop by themselves. Images are looked up in
// $SEVEMU_BUILD_ROOT/tests/guests/bench/, else relative to this executable
// (<build>/tools/sevemu-bench/sevemu-bench -> <build>/tests/guests/bench/).
//
// sevemu runs in-process: Machine::create() + Machine::run() timed together (the machine's whole
// life, as QEMU's process is), COM1 into a string, the exact retired-instruction count from
// RunOutcome::instructions. QEMU runs as a child process (posix_spawn, argv only, no shell) with
// `-cpu EPYC -m 128M -serial file:... -device isa-debug-exit,...`, wall time from spawn to exit,
// start-up included; its start-up alone is measured on a guest that exits at once and reported on
// its own row, so a reader can subtract it. QEMU's Minstr/s is sevemu's instruction count for the
// image divided by QEMU's wall time (QEMU does not count instructions without -icount, which
// would change what is measured). Runs alternate sevemu / QEMU, best of kRuns each, so a
// neighbour's load on a shared machine hits both alike.
//
// A run that fails (wrong exit, a different checksum, a guest the CPU cannot run yet — SSE, for
// example) is one error line on stderr and no rows for that workload: never a made-up number.
// Without qemu-system-x86_64 in PATH the suite says so in one line and reports sevemu's rows
// without a reference.
#include "bench.h"

#include "base/result.h"
#include "emulator/machine.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits.h>
#include <optional>
#include <poll.h>
#include <spawn.h>
#include <string>
#include <string_view>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

extern char** environ;

namespace sevemu::bench {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char const* kSuite = "cpu";
constexpr int kRuns = 3;
constexpr char const* kQemuName = "qemu-system-x86_64";
constexpr char const* kQemuReference = "qemu-system-x86_64 -accel tcg (same image)";
constexpr int kQemuTimeoutMs = 120'000;
// A guest stuck in a loop must not hang the bench: far above any workload (~1e9 instructions).
constexpr uint64_t kMaxInstructions = 50'000'000'000ull;
constexpr uint16_t kDebugExitPort = 0xf4;
constexpr int kGuestPassStatus = (0x10 << 1) | 1; // runtime_bare.c's GUEST_PASS through isa-debug-exit

constexpr char const* kWorkloads[] = { "integer", "memory", "branch", "strings", "sse" };
constexpr char const* kStartupGuest = "trivial";

struct BenchError {
    std::string message;
};

struct GuestRun {
    double seconds {};
    uint64_t instructions {}; // sevemu only
    std::string checksum;     // the text after "checksum " on COM1
    double loop_seconds {};   // sevemu, bench guest 'exits': its loop alone (run_sevemu)
};

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::optional<std::string> checksum_of(std::string const& serial)
{
    constexpr std::string_view kTag = "checksum ";
    size_t at = serial.rfind(kTag);
    if (at == std::string::npos || (at != 0 && serial[at - 1] != '\n'))
        return std::nullopt;
    size_t end = serial.find('\n', at);
    if (end == std::string::npos)
        return std::nullopt;
    return serial.substr(at + kTag.size(), end - at - kTag.size());
}

std::string last_line(std::string const& text)
{
    size_t end = text.find_last_not_of("\r\n");
    if (end == std::string::npos)
        return "(no output)";
    size_t start = text.rfind('\n', end);
    return text.substr(start == std::string::npos ? 0 : start + 1, end + 1 - (start == std::string::npos ? 0 : start + 1));
}

bool is_file(std::string const& path)
{
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// <build>/tests/guests/bench: $SEVEMU_BUILD_ROOT, else two levels above this executable.
std::string bench_guest_dir()
{
    if (char const* root = std::getenv("SEVEMU_BUILD_ROOT"); root && *root)
        return std::string(root) + "/tests/guests/bench";
    char exe[PATH_MAX];
    ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return "tests/guests/bench";
    std::string dir(exe, size_t(n));
    for (int up = 0; up < 3; ++up) // strip "sevemu-bench", "sevemu-bench/", "tools/"
        dir = dir.substr(0, dir.rfind('/'));
    return dir + "/tests/guests/bench";
}

std::optional<std::string> find_in_path(char const* name)
{
    char const* path = std::getenv("PATH");
    std::string_view rest = path ? path : "/usr/bin:/bin";
    while (!rest.empty()) {
        size_t colon = rest.find(':');
        std::string dir(rest.substr(0, colon));
        rest = colon == std::string_view::npos ? std::string_view {} : rest.substr(colon + 1);
        std::string candidate = (dir.empty() ? std::string(".") : dir) + "/" + name;
        if (is_file(candidate) && ::access(candidate.c_str(), X_OK) == 0)
            return candidate;
    }
    return std::nullopt;
}

std::string read_file(std::string const& path)
{
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// ---- sevemu, in-process ----

// How run_sevemu runs an image: plain (no platform), or as an SEV guest with `policy` (0x1: SEV,
// 0x5: SEV-ES) on the emulated platform in `platform` (-object sev-guest, no owner session).
struct SevemuRun {
    std::string platform;
    uint32_t policy { 0x1 };
    std::string append;                       // the Multiboot command line (-append)
    CpuModel cpu_model { CpuModel::Naples };  // the same model QEMU gets (-cpu EPYC)
};

Result<GuestRun, BenchError> run_sevemu(std::string const& image, SevemuRun const& how = {})
{
    std::string serial;
    emulator::MachineConfig config;
    config.kernel = image;
    config.append = how.append;
    config.cpu_model = how.cpu_model;
    if (!how.platform.empty()) {
        emulator::SevGuestConfig sev;
        sev.id = "sev0";
        sev.policy = how.policy;
        sev.cbitpos = cpu_model_info(config.cpu_model).c_bit;
        sev.reduced_phys_bits = 1;
        config.confidential_guest = sev;
        config.platform_dir = how.platform;
    }
    // The lines "loop begin" and "loop end" (bench guest 'exits') are timestamped as their bytes
    // reach COM1: from the newline of the first to the first byte of the second is the loop alone.
    std::optional<Clock::time_point> loop_begin, loop_end;
    Clock::time_point line_start {};
    size_t line_at = 0;
    config.serial.kind = emulator::SerialConfig::Kind::Callback;
    config.serial.callback = [&](uint8_t b) {
        auto now = Clock::now();
        if (serial.size() == line_at)
            line_start = now;
        serial.push_back(char(b));
        if (b != '\n')
            return;
        std::string_view line = std::string_view(serial).substr(line_at, serial.size() - 1 - line_at);
        if (line == "loop begin")
            loop_begin = now;
        else if (line == "loop end")
            loop_end = line_start;
        line_at = serial.size();
    };
    config.debug_exit = devices::DebugExitConfig { kDebugExitPort, 4 };
    config.no_reboot = true;
    config.max_instructions = kMaxInstructions;

    auto t0 = Clock::now();
    auto machine = emulator::Machine::create(std::move(config));
    if (!machine)
        return make_unexpected(BenchError { "sevemu: " + machine.error().message });
    emulator::RunOutcome out = (*machine)->run();
    double seconds = seconds_since(t0);

    if (out.reason != emulator::RunOutcome::Reason::DebugExit || out.exit_status != kGuestPassStatus)
        return make_unexpected(BenchError { "sevemu: exit status " + std::to_string(out.exit_status) + " (want "
            + std::to_string(kGuestPassStatus) + ")" + (out.message.empty() ? "" : ": " + out.message)
            + "; last COM1 line: " + last_line(serial) });
    auto sum = checksum_of(serial);
    if (!sum)
        return make_unexpected(BenchError { "sevemu: no checksum line on COM1; last line: " + last_line(serial) });
    GuestRun run { seconds, out.instructions, *sum };
    if (loop_begin && loop_end)
        run.loop_seconds = std::chrono::duration<double>(*loop_end - *loop_begin).count();
    return run;
}

// ---- QEMU, as a child process ----

// Waits for the child for at most timeout_ms; kills it (SIGKILL) when the time is up.
// Returns the wait status, or nullopt on timeout.
std::optional<int> wait_with_timeout(pid_t pid, int timeout_ms)
{
    int status = 0;
    int pidfd = int(::syscall(SYS_pidfd_open, pid, 0));
    if (pidfd >= 0) {
        pollfd p { pidfd, POLLIN, 0 };
        int r;
        do
            r = ::poll(&p, 1, timeout_ms);
        while (r < 0 && errno == EINTR);
        ::close(pidfd);
        if (r == 0) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, &status, 0);
            return std::nullopt;
        }
        ::waitpid(pid, &status, 0);
        return status;
    }
    // No pidfd (kernel < 5.3): poll waitpid every millisecond.
    auto t0 = Clock::now();
    for (;;) {
        pid_t r = ::waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return status;
        if (seconds_since(t0) * 1000 > timeout_ms) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, &status, 0);
            return std::nullopt;
        }
        ::usleep(1000);
    }
}

class QemuRunner {
public:
    QemuRunner(std::string qemu, std::string work_dir)
        : m_qemu(std::move(qemu))
        , m_serial_path(work_dir + "/com1.txt")
        , m_stderr_path(work_dir + "/qemu-stderr.txt")
    {
    }

    Result<GuestRun, BenchError> run(std::string const& image) const
    {
        std::vector<std::string> args = { m_qemu, "-accel", "tcg", "-cpu", "EPYC", "-m", "128M", "-display", "none",
            "-serial", "file:" + m_serial_path, "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-kernel", image,
            "-no-reboot" };
        std::vector<char*> argv;
        for (auto& a : args)
            argv.push_back(a.data());
        argv.push_back(nullptr);
        ::unlink(m_serial_path.c_str());

        // stdin from /dev/null, stdout and stderr (TCG's "doesn't support requested feature"
        // warnings for -cpu EPYC) into a file shown when the run fails.
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_addopen(&actions, 1, m_stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        posix_spawn_file_actions_adddup2(&actions, 1, 2);
        pid_t pid = 0;
        auto t0 = Clock::now();
        int err = posix_spawn(&pid, m_qemu.c_str(), &actions, nullptr, argv.data(), environ);
        posix_spawn_file_actions_destroy(&actions);
        if (err != 0)
            return make_unexpected(BenchError { "qemu: cannot start " + m_qemu + ": " + std::strerror(err) });
        auto status = wait_with_timeout(pid, kQemuTimeoutMs);
        double seconds = seconds_since(t0);

        if (!status)
            return make_unexpected(BenchError { "qemu: no exit after " + std::to_string(kQemuTimeoutMs / 1000) + " s; killed" });
        std::string serial = read_file(m_serial_path);
        if (!WIFEXITED(*status) || WEXITSTATUS(*status) != kGuestPassStatus)
            return make_unexpected(BenchError { "qemu: " + std::string(WIFEXITED(*status) ? "exit status " : "signal ")
                + std::to_string(WIFEXITED(*status) ? WEXITSTATUS(*status) : WTERMSIG(*status)) + " (want "
                + std::to_string(kGuestPassStatus) + "); stderr: " + last_line(read_file(m_stderr_path))
                + "; last COM1 line: " + last_line(serial) });
        auto sum = checksum_of(serial);
        if (!sum)
            return make_unexpected(BenchError { "qemu: no checksum line on COM1; last line: " + last_line(serial) });
        return GuestRun { seconds, 0, *sum };
    }

private:
    std::string m_qemu;
    std::string m_serial_path;
    std::string m_stderr_path;
};

struct Measured {
    GuestRun sevemu;              // best of kRuns
    std::optional<GuestRun> qemu; // best of kRuns, when QEMU is there
};

// kRuns rounds of (sevemu, QEMU); the fastest of each. Instruction counts and checksums must
// be the same on every sevemu run (the workload is deterministic), and QEMU's checksum must
// equal sevemu's.
Result<Measured, BenchError> measure(std::string const& image, QemuRunner const* qemu)
{
    std::optional<GuestRun> best_ours, best_qemu;
    for (int round = 0; round < kRuns; ++round) {
        GuestRun ours = TRY(run_sevemu(image));
        if (best_ours && (ours.instructions != best_ours->instructions || ours.checksum != best_ours->checksum))
            return make_unexpected(BenchError { "sevemu: runs differ (" + std::to_string(ours.instructions) + " vs "
                + std::to_string(best_ours->instructions) + " instructions)" });
        if (!best_ours || ours.seconds < best_ours->seconds)
            best_ours = ours;
        if (!qemu)
            continue;
        GuestRun theirs = TRY(qemu->run(image));
        if (theirs.checksum != ours.checksum)
            return make_unexpected(BenchError { "checksum mismatch: sevemu " + ours.checksum + ", qemu " + theirs.checksum });
        if (!best_qemu || theirs.seconds < best_qemu->seconds)
            best_qemu = theirs;
    }
    return Measured { *best_ours, best_qemu };
}

// A private directory for QEMU's COM1 file and stderr, removed afterwards.
class TempDir {
public:
    TempDir()
    {
        char const* tmp = std::getenv("TMPDIR");
        std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/sevemu-bench-cpu.XXXXXX";
        if (char* p = ::mkdtemp(pattern.data()))
            m_path = p;
        else
            m_errno = errno;
    }
    ~TempDir()
    {
        if (m_path.empty())
            return;
        for (char const* f : { "/com1.txt", "/qemu-stderr.txt" })
            ::unlink((m_path + f).c_str());
        ::rmdir(m_path.c_str());
    }
    TempDir(TempDir const&) = delete;
    TempDir& operator=(TempDir const&) = delete;
    std::string const& path() const { return m_path; }
    int error() const { return m_errno; }

private:
    std::string m_path;
    int m_errno {};
};

} // namespace

// The sev suite: the cpu workloads as SEV guests (nested paging, every access through the
// guest's key, port I/O by #VMEXIT to the VMM) and as SEV-ES guests (registers in the encrypted
// VMSA, swapped whole on every world switch; port I/O by #VC -> the guest's handler -> GHCB ->
// VMGEXIT) beside the same workloads as plain guests, all on sevemu in the same run: the ratio
// is what SEV or SEV-ES costs. The SEV images are the same cores linked with the C-bit-aware
// entry (tests/guests/bench/bench-*-sev.elf), the SEV-ES images with that entry built for SEV-ES
// and the #VC handler of tests/guests/sev_es.c (bench-*-sev-es.elf). Every case runs on the
// EPYC-Rome model, the first with SEV-ES (EPYC/Naples has none).
//
// Then the cost of one exit, from bench guest 'exits' (a loop of N identical instructions
// between two COM1 lines that run_sevemu timestamps, so launch and printing are outside it):
//  - CPUID: #VC round trip of an SEV-ES guest (#VC, handler, GHCB, VMGEXIT, hypervisor, VMRUN,
//    IRET) beside the intercepted CPUID of an SEV guest (#VMEXIT, hypervisor, VMRUN), and that
//    beside a plain guest's CPUID (no exit at all: without SEV sevemu runs the guest on the
//    interpreter with no hypervisor under it, which answers CPUID itself);
//  - the state swap: VMGEXIT with a GHCB MSR-protocol request the hypervisor answers at once (an
//    automatic exit: the whole register state saved to and loaded from the encrypted VMSA, no
//    #VC) beside the SEV guest's intercepted CPUID (the non-ES world switch).
// Each is the best of kRuns, in ns per iteration; the loop's own few instructions are included.
int suite_sev(Report& report)
{
    constexpr char const* kSev = "sev";
    constexpr char const* kExits = "exits";
    constexpr uint32_t kPolicySev = 0x1, kPolicySevEs = 0x5; // SEV; SEV + ES (SEV API §3, guest policy)
    // Iterations per exit loop, each a fraction of a second here (2-core Xeon).
    constexpr uint64_t kCpuidPlain = 2'000'000, kCpuidSev = 20'000, kCpuidSevEs = 5'000, kMsrProtocol = 10'000;
    std::string dir = bench_guest_dir();
    auto image_of = [&](std::string const& name) { return dir + "/bench-" + name + ".elf"; };
    std::vector<std::string> names(std::begin(kWorkloads), std::end(kWorkloads));
    names.push_back(kStartupGuest);
    std::vector<std::string> all = names;
    all.push_back(kExits);
    for (auto const& w : all)
        for (auto const& img : { image_of(w), image_of(w + "-sev"), image_of(w + "-sev-es") })
            if (!is_file(img)) {
                std::fprintf(stderr, "sevemu-bench: sev: bench guest %s is missing (build the tests/guests/bench targets)\n", img.c_str());
                return 1;
            }
    TempDir tmp;
    if (tmp.path().empty()) {
        std::fprintf(stderr, "sevemu-bench: sev: cannot create a temporary directory (%s)\n", std::strerror(tmp.error()));
        return 1;
    }
    std::string platform = tmp.path() + "/platform";
    SevemuRun plain_run { .cpu_model = CpuModel::Rome };
    SevemuRun sev_run { .platform = platform, .policy = kPolicySev, .cpu_model = CpuModel::Rome };
    SevemuRun es_run { .platform = platform, .policy = kPolicySevEs, .cpu_model = CpuModel::Rome };
    // The platform's first use creates its identity (RSA-4096 test roots): not part of a launch.
    if (auto warm = run_sevemu(image_of(std::string(kStartupGuest) + "-sev"), sev_run); !warm) {
        std::fprintf(stderr, "sevemu-bench: sev: %s\n", warm.error().message.c_str());
        std::filesystem::remove_all(platform);
        return 1;
    }
    auto best = [&](std::string const& image, SevemuRun const& how) -> Result<GuestRun, BenchError> {
        std::optional<GuestRun> b;
        for (int round = 0; round < kRuns; ++round) {
            GuestRun r = TRY(run_sevemu(image, how));
            if (b && r.checksum != b->checksum)
                return make_unexpected(BenchError { "runs differ in their checksum" });
            if (!b || r.seconds < b->seconds)
                b = r;
        }
        return *b;
    };
    int status = 0;
    constexpr char const* kRef = "same image without SEV (sevemu)";
    for (auto const& w : names) {
        auto plain = best(image_of(w), plain_run);
        auto sev = plain ? best(image_of(w + "-sev"), sev_run) : plain;
        auto es = sev ? best(image_of(w + "-sev-es"), es_run) : sev;
        if (!plain || !sev || !es) {
            std::fprintf(stderr, "sevemu-bench: sev: %s: %s%s\n", w.c_str(), !plain ? "" : !sev ? "as an SEV guest: " : "as an SEV-ES guest: ",
                (!plain ? plain : !sev ? sev : es).error().message.c_str());
            status = 1;
            continue;
        }
        if (plain->checksum != sev->checksum || plain->checksum != es->checksum) {
            std::fprintf(stderr, "sevemu-bench: sev: %s: checksum %s as an SEV guest, %s as an SEV-ES guest, %s without\n", w.c_str(),
                sev->checksum.c_str(), es->checksum.c_str(), plain->checksum.c_str());
            status = 1;
            continue;
        }
        if (w == kStartupGuest) {
            report.add({ kSev, "launch + run + exit, trivial guest wall time", "ms", sev->seconds * 1e3, kRef,
                plain->seconds * 1e3, false });
            // LAUNCH_UPDATE_VMSA and the SEV-ES guest's #VC-served CPUIDs and COM1 output included.
            report.add({ kSev, "launch + run + exit, trivial SEV-ES guest wall time", "ms", es->seconds * 1e3,
                "the trivial SEV guest (policy 0x1)", sev->seconds * 1e3, false });
            continue;
        }
        report.add({ kSev, w + " SEV guest instr/s", "Minstr/s", double(sev->instructions) / sev->seconds / 1e6, kRef,
            double(plain->instructions) / plain->seconds / 1e6, true });
        report.add({ kSev, w + " SEV-ES guest instr/s", "Minstr/s", double(es->instructions) / es->seconds / 1e6, kRef,
            double(plain->instructions) / plain->seconds / 1e6, true });
    }

    // The exit loops: ns per iteration; nullopt (and an error line) when a run failed.
    auto per_iteration = [&](char const* what, std::string const& image, SevemuRun how, char const* op,
                             uint64_t n) -> std::optional<double> {
        how.append = std::string("op=") + op + " n=" + std::to_string(n);
        std::optional<double> b;
        for (int round = 0; round < kRuns; ++round) {
            auto r = run_sevemu(image, how);
            if (!r) {
                std::fprintf(stderr, "sevemu-bench: sev: %s: %s\n", what, r.error().message.c_str());
                status = 1;
                return std::nullopt;
            }
            if (r->loop_seconds <= 0) {
                std::fprintf(stderr, "sevemu-bench: sev: %s: no timed loop on COM1\n", what);
                status = 1;
                return std::nullopt;
            }
            b = std::min(b.value_or(r->loop_seconds), r->loop_seconds);
        }
        return *b * 1e9 / double(n);
    };
    auto cpuid_plain = per_iteration("CPUID, plain guest", image_of(kExits), plain_run, "cpuid", kCpuidPlain);
    auto cpuid_sev = per_iteration("CPUID, SEV guest", image_of(std::string(kExits) + "-sev"), sev_run, "cpuid", kCpuidSev);
    auto cpuid_es = per_iteration("CPUID, SEV-ES guest", image_of(std::string(kExits) + "-sev-es"), es_run, "cpuid", kCpuidSevEs);
    auto msr_es = per_iteration("VMGEXIT, SEV-ES guest", image_of(std::string(kExits) + "-sev-es"), es_run, "ghcb-msr", kMsrProtocol);
    constexpr char const* kSevWorldSwitch = "SEV guest: CPUID #VMEXIT + VMRUN (no #VC)";
    if (cpuid_sev && cpuid_plain)
        report.add({ kSev, "CPUID, SEV guest: intercept #VMEXIT + VMRUN", "ns/op", *cpuid_sev,
            "plain guest: CPUID without an exit (interpreter)", *cpuid_plain, false });
    if (cpuid_es && cpuid_sev)
        report.add({ kSev, "CPUID, SEV-ES guest: #VC round trip (handler, GHCB, VMGEXIT, VMRUN)", "ns/op", *cpuid_es,
            kSevWorldSwitch, *cpuid_sev, false });
    if (msr_es && cpuid_sev)
        report.add({ kSev, "SEV-ES state swap: VMGEXIT (GHCB MSR protocol) + VMRUN", "ns/op", *msr_es, kSevWorldSwitch,
            *cpuid_sev, false });
    std::filesystem::remove_all(platform);
    return status;
}

int suite_cpu(Report& report)
{
    std::string dir = bench_guest_dir();
    auto image_of = [&](char const* name) { return dir + "/bench-" + name + ".elf"; };
    std::vector<char const*> images(std::begin(kWorkloads), std::end(kWorkloads));
    images.push_back(kStartupGuest);
    for (char const* w : images)
        if (!is_file(image_of(w))) {
            std::fprintf(stderr,
                "sevemu-bench: cpu: bench guest %s is missing (build the tests/guests/bench targets, or set SEVEMU_BUILD_ROOT)\n",
                image_of(w).c_str());
            return 1;
        }

    std::optional<QemuRunner> qemu;
    TempDir tmp;
    if (auto path = find_in_path(kQemuName); !path) {
        std::fprintf(stderr, "sevemu-bench: cpu: %s is not installed (Debian package qemu-system-x86; `scripts/deps.sh --bench`): "
                             "sevemu rows only, without a reference\n",
            kQemuName);
    } else if (tmp.path().empty()) {
        std::fprintf(stderr, "sevemu-bench: cpu: cannot create a temporary directory (%s): sevemu rows only\n", std::strerror(tmp.error()));
    } else {
        qemu.emplace(*path, tmp.path());
    }
    QemuRunner const* q = qemu ? &*qemu : nullptr;

    int status = 0;
    // Start-up: the trivial guest's whole run, on both sides.
    if (auto m = measure(image_of(kStartupGuest), q); !m) {
        std::fprintf(stderr, "sevemu-bench: cpu: start-up: %s\n", m.error().message.c_str());
        status = 1;
    } else {
        report.add({ kSuite, "start-up + exit, trivial guest wall time", "ms", m->sevemu.seconds * 1e3,
            q ? kQemuReference : "", m->qemu ? m->qemu->seconds * 1e3 : 0, false });
    }

    for (char const* w : kWorkloads) {
        auto m = measure(image_of(w), q);
        if (!m) {
            std::fprintf(stderr, "sevemu-bench: cpu: %s: %s\n", w, m.error().message.c_str());
            status = 1;
            continue;
        }
        double instructions = double(m->sevemu.instructions);
        std::string name = w;
        report.add({ kSuite, name + " guest instr/s", "Minstr/s", instructions / m->sevemu.seconds / 1e6,
            m->qemu ? kQemuReference : "", m->qemu ? instructions / m->qemu->seconds / 1e6 : 0, true });
        report.add({ kSuite, name + " wall time", "s",
            m->sevemu.seconds, m->qemu ? kQemuReference : "", m->qemu ? m->qemu->seconds : 0, false });
    }
    return status;
}

} // namespace sevemu::bench
