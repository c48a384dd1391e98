// The boot suite (issue 11 deliverable 8): Debian 12's unmodified kernel booted to its init
// marker and to power-off on sevemu — plain bzImage, plain PVH vmlinux, SEV bzImage, SEV vmlinux
// — beside qemu-system-x86_64 -accel tcg booting the same kernel and initramfs with the same
// command line in the same run. QEMU cannot emulate SEV, so its plain boot of the same file is
// the SEV rows' reference (an SEV guest's vmlinux enters at startup_64 with Linux's 64-bit boot
// protocol, since Linux's PVH entry cannot start an SEV guest: README, QUIRKS.md).
//
// The assets are scripts/linux-assets.sh's (build/linux-assets: bzImage, vmlinux,
// initramfs.cpio.gz, whose /init prints "SEVEMU-INIT-MARKER" and powers off through ACPI S5),
// looked up in $SEVEMU_LINUX_ASSETS, else $SEVEMU_BUILD_ROOT/linux-assets, else relative to this
// executable (<build>/tools/sevemu-bench/sevemu-bench -> <build>/linux-assets). sevemu and
// sevemu-host are the build's own (<build>/tools/sevemu/sevemu, <build>/tools/sevemu-host/).
// The command line is the linux suite's (tests/linux/boot_linux.py): -m 512M, one vCPU,
// -append console=ttyS0, -no-reboot, COM1 on stdout.
//
// Both emulators run as child processes (posix_spawn, argv only) with COM1 on a pipe the suite
// reads while they run: "to the init marker" is the wall time from spawn until the marker has
// arrived on that pipe, "to power-off" until the process has exited (status 0 required), and
// "user CPU" the child's user time from wait4's rusage — steadier than wall time on a shared
// machine. Each case runs once by default, sevemu and QEMU alternating; `--runs N` repeats and
// reports the median of each figure. A run that fails (no marker, another exit status, a
// timeout) is one error line and no row for that case: never a made-up number. Without the
// assets, or without QEMU, one line says so and those rows are skipped (without QEMU, sevemu's
// rows have no reference).
//
// The table's ratio is reference / sevemu for these times (above 1: sevemu is faster, the
// bench's convention); a line on stderr also gives sevemu's times as multiples of QEMU's, the
// form of the speed goals (SEV bzImage to the marker at most 3x QEMU's plain boot, PVH
// at most 1.5x).
#include "bench.h"

#include "base/result.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <limits.h>
#include <optional>
#include <poll.h>
#include <spawn.h>
#include <string>
#include <string_view>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

extern char** environ;

namespace sevemu::bench {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char const* kSuite = "boot";
constexpr char const* kMarker = "SEVEMU-INIT-MARKER"; // tests/linux: the initramfs /init's first line
constexpr char const* kMemory = "512M";
constexpr char const* kAppend = "console=ttyS0";
constexpr int kTimeoutMs = 900'000; // a boot far slower than any seen (SEV bzImage: about a minute)
constexpr char const* kQemuName = "qemu-system-x86_64";

struct BootRun {
    double marker_s {};
    double poweroff_s {};
    double user_cpu_s {};
};

struct BootError {
    std::string message;
};

bool is_file(std::string const& path)
{
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool is_executable(std::string const& path) { return is_file(path) && ::access(path.c_str(), X_OK) == 0; }

// <build>: $SEVEMU_BUILD_ROOT, else three levels above this executable.
std::string build_root()
{
    if (char const* root = std::getenv("SEVEMU_BUILD_ROOT"); root && *root)
        return root;
    char exe[PATH_MAX];
    ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return ".";
    std::string dir(exe, size_t(n));
    for (int up = 0; up < 3; ++up) // "sevemu-bench", "sevemu-bench/", "tools/"
        dir = dir.substr(0, dir.rfind('/'));
    return dir;
}

std::string assets_dir()
{
    if (char const* a = std::getenv("SEVEMU_LINUX_ASSETS"); a && *a)
        return a;
    return build_root() + "/linux-assets";
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
        if (is_executable(candidate))
            return candidate;
    }
    return std::nullopt;
}

double seconds(timeval const& tv) { return double(tv.tv_sec) + double(tv.tv_usec) / 1e6; }

std::string last_line(std::string const& text)
{
    size_t end = text.find_last_not_of("\r\n");
    if (end == std::string::npos)
        return "(no output)";
    size_t start = text.rfind('\n', end);
    start = start == std::string::npos ? 0 : start + 1;
    return text.substr(start, end + 1 - start);
}

// Runs argv with stdin from /dev/null, stdout (COM1) on a pipe read as it comes, stderr into
// `stderr_path`. The marker time is when the marker is complete in what was read.
Result<BootRun, BootError> boot_once(std::vector<std::string> args, std::string const& stderr_path)
{
    std::vector<char*> argv;
    for (auto& a : args)
        argv.push_back(a.data());
    argv.push_back(nullptr);
    int pipefd[2];
    if (::pipe2(pipefd, O_CLOEXEC) != 0)
        return make_unexpected(BootError { std::string("pipe: ") + std::strerror(errno) });
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, pipefd[1], 1);
    posix_spawn_file_actions_addopen(&actions, 2, stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    pid_t pid = 0;
    auto t0 = Clock::now();
    int err = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(pipefd[1]);
    if (err != 0) {
        ::close(pipefd[0]);
        return make_unexpected(BootError { "cannot start " + args[0] + ": " + std::strerror(err) });
    }
    auto elapsed = [&] { return std::chrono::duration<double>(Clock::now() - t0).count(); };

    std::string out;
    std::optional<double> marker_at;
    bool timed_out = false;
    for (;;) {
        int left = kTimeoutMs - int(elapsed() * 1000);
        if (left <= 0) {
            timed_out = true;
            break;
        }
        pollfd p { pipefd[0], POLLIN, 0 };
        int r = ::poll(&p, 1, left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            timed_out = r == 0;
            break;
        }
        char buf[4096];
        ssize_t n = ::read(pipefd[0], buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break; // EOF: the child is gone (or closed its stdout)
        size_t search_from = out.size() >= std::strlen(kMarker) ? out.size() - std::strlen(kMarker) : 0;
        out.append(buf, size_t(n));
        if (!marker_at && out.find(kMarker, search_from) != std::string::npos)
            marker_at = elapsed();
    }
    ::close(pipefd[0]);
    if (timed_out)
        ::kill(pid, SIGKILL);
    int status = 0;
    rusage usage {};
    while (::wait4(pid, &status, 0, &usage) < 0 && errno == EINTR) {
    }
    double total = elapsed();
    if (timed_out)
        return make_unexpected(BootError { "no power-off after " + std::to_string(kTimeoutMs / 1000) + " s; killed" });
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        FILE* f = std::fopen(stderr_path.c_str(), "r");
        std::string err_text;
        if (f) {
            char b[4096];
            size_t k;
            while ((k = std::fread(b, 1, sizeof b, f)) > 0)
                err_text.append(b, k);
            std::fclose(f);
        }
        return make_unexpected(BootError { std::string(WIFEXITED(status) ? "exit status " : "signal ")
            + std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status)) + " (want 0, ACPI power-off); stderr: "
            + last_line(err_text) + "; last COM1 line: " + last_line(out) });
    }
    if (!marker_at)
        return make_unexpected(BootError { std::string("no ") + kMarker + " on COM1; last line: " + last_line(out) });
    return BootRun { *marker_at, total, seconds(usage.ru_utime) };
}

double median(std::vector<double> v)
{
    std::sort(v.begin(), v.end());
    size_t n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

BootRun median_of(std::vector<BootRun> const& runs)
{
    std::vector<double> m, p, u;
    for (auto const& r : runs) {
        m.push_back(r.marker_s);
        p.push_back(r.poweroff_s);
        u.push_back(r.user_cpu_s);
    }
    return { median(m), median(p), median(u) };
}

struct Case {
    std::string name;      // "bzImage", "PVH vmlinux", "SEV bzImage", "SEV vmlinux"
    std::string kernel;    // asset path
    bool sev {};
    std::string qemu_case; // the QEMU case that is its reference ("" = its own)
};

class TempDir {
public:
    TempDir()
    {
        char const* tmp = std::getenv("TMPDIR");
        std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/sevemu-bench-boot.XXXXXX";
        if (char* p = ::mkdtemp(pattern.data()))
            m_path = p;
    }
    ~TempDir()
    {
        if (!m_path.empty()) {
            std::error_code ec;
            std::filesystem::remove_all(m_path, ec);
        }
    }
    TempDir(TempDir const&) = delete;
    TempDir& operator=(TempDir const&) = delete;
    std::string const& path() const { return m_path; }

private:
    std::string m_path;
};

} // namespace

int suite_boot(Report& report)
{
    std::string assets = assets_dir();
    std::string bzimage = assets + "/bzImage", vmlinux = assets + "/vmlinux", initrd = assets + "/initramfs.cpio.gz";
    for (auto const& f : { bzimage, vmlinux, initrd })
        if (!is_file(f)) {
            std::fprintf(stderr, "sevemu-bench: boot: %s is missing (run scripts/linux-assets.sh, or set SEVEMU_LINUX_ASSETS): "
                                 "no boot rows\n",
                f.c_str());
            return 1;
        }
    std::string root = build_root();
    std::string sevemu = root + "/tools/sevemu/sevemu", host = root + "/tools/sevemu-host/sevemu-host";
    if (!is_executable(sevemu)) {
        std::fprintf(stderr, "sevemu-bench: boot: %s is missing (build it, or set SEVEMU_BUILD_ROOT): no boot rows\n", sevemu.c_str());
        return 1;
    }
    auto qemu = find_in_path(kQemuName);
    if (!qemu)
        std::fprintf(stderr, "sevemu-bench: boot: %s is not installed (Debian package qemu-system-x86): sevemu rows only, "
                             "without a reference\n",
            kQemuName);
    TempDir tmp;
    if (tmp.path().empty()) {
        std::fprintf(stderr, "sevemu-bench: boot: cannot create a temporary directory (%s)\n", std::strerror(errno));
        return 1;
    }
    std::string platform = tmp.path() + "/platform", err_file = tmp.path() + "/stderr.txt";
    int runs = std::max(1, report.runs());

    std::vector<std::string> common = { "-m", kMemory, "-display", "none", "-no-reboot", "-serial", "stdio", "-initrd", initrd,
        "-append", kAppend };
    auto sevemu_args = [&](Case const& c) {
        std::vector<std::string> a = { sevemu, "-kernel", c.kernel };
        a.insert(a.end(), common.begin(), common.end());
        if (c.sev)
            a.insert(a.end(), { "-machine", "confidential-guest-support=sev0", "-object",
                                  "sev-guest,id=sev0,policy=0x1,cbitpos=51,reduced-phys-bits=1", "--platform", platform });
        return a;
    };
    // QEMU with the CPU model sevemu gives by default (EPYC-Milan; TCG drops what it lacks).
    auto qemu_args = [&](std::string const& kernel) {
        std::vector<std::string> a = { *qemu, "-accel", "tcg", "-cpu", "EPYC-Milan", "-kernel", kernel };
        a.insert(a.end(), common.begin(), common.end());
        return a;
    };

    // The platform's identity (RSA-4096 test roots) is made on its first use: not part of a boot.
    bool sev_ready = true;
    if (is_executable(host)) {
        std::vector<std::string> a = { host, "--platform", platform, "export", tmp.path() + "/certs" };
        std::vector<char*> argv;
        for (auto& s : a)
            argv.push_back(s.data());
        argv.push_back(nullptr);
        pid_t pid = 0;
        int status = 0;
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
        posix_spawn_file_actions_addopen(&actions, 2, err_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int e = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
        posix_spawn_file_actions_destroy(&actions);
        if (e != 0 || ::waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            std::fprintf(stderr, "sevemu-bench: boot: sevemu-host could not create the platform: no SEV rows\n");
            sev_ready = false;
        }
    } else {
        std::fprintf(stderr, "sevemu-bench: boot: %s is missing: the SEV boot's time includes creating the platform\n", host.c_str());
    }

    std::vector<Case> cases = { { "bzImage", bzimage, false, "" }, { "PVH vmlinux", vmlinux, false, "" } };
    if (sev_ready) {
        cases.push_back({ "SEV bzImage", bzimage, true, "bzImage" });
        cases.push_back({ "SEV vmlinux", vmlinux, true, "PVH vmlinux" });
    }

    int status = 0;
    std::vector<std::pair<std::string, BootRun>> qemu_results; // by QEMU case name
    auto qemu_of = [&](std::string const& name) -> BootRun const* {
        for (auto const& [n, r] : qemu_results)
            if (n == name)
                return &r;
        return nullptr;
    };
    for (auto const& c : cases) {
        std::vector<BootRun> ours, theirs;
        std::string failure;
        bool qemu_here = qemu && c.qemu_case.empty();
        for (int round = 0; round < runs && failure.empty(); ++round) {
            auto r = boot_once(sevemu_args(c), err_file);
            if (!r) {
                failure = "sevemu: " + r.error().message;
                break;
            }
            ours.push_back(*r);
            if (!qemu_here)
                continue;
            auto q = boot_once(qemu_args(c.kernel), err_file);
            if (!q) {
                failure = "qemu: " + q.error().message;
                break;
            }
            theirs.push_back(*q);
        }
        if (!failure.empty()) {
            std::fprintf(stderr, "sevemu-bench: boot: %s: %s\n", c.name.c_str(), failure.c_str());
            status = 1;
            continue;
        }
        BootRun mine = median_of(ours);
        if (qemu_here)
            qemu_results.emplace_back(c.name, median_of(theirs));
        BootRun const* ref = qemu ? qemu_of(c.qemu_case.empty() ? c.name : c.qemu_case) : nullptr;
        std::string ref_name = !ref ? ""
            : c.sev ? "qemu-system-x86_64 -accel tcg, plain " + c.qemu_case + " (no SEV in TCG)"
                    : "qemu-system-x86_64 -accel tcg, same kernel";
        report.add({ kSuite, c.name + ": to the init marker", "s", mine.marker_s, ref_name, ref ? ref->marker_s : 0, false });
        report.add({ kSuite, c.name + ": to power-off", "s", mine.poweroff_s, ref_name, ref ? ref->poweroff_s : 0, false });
        report.add({ kSuite, c.name + ": user CPU", "s", mine.user_cpu_s, ref_name, ref ? ref->user_cpu_s : 0, false });
        if (ref)
            std::fprintf(stderr, "sevemu-bench: boot: %s: sevemu/QEMU = %.2fx to the marker, %.2fx to power-off, %.2fx user CPU "
                                 "(%d run%s, median)\n",
                c.name.c_str(), mine.marker_s / ref->marker_s, mine.poweroff_s / ref->poweroff_s, mine.user_cpu_s / ref->user_cpu_s,
                runs, runs == 1 ? "" : "s");
    }
    return status;
}

} // namespace sevemu::bench
