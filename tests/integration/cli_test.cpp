// Integration: `sevemu` as a user meets it (INTERFACES.md §2-3). Every bad input gives exactly
// one line on stderr that starts with "sevemu: " and names the bad input, a non-zero exit
// status, nothing on stdout, and never a crash (a signal).
#include "tests/integration/spawn.h"

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

using sevemu::testing::run_capture;
using sevemu::testing::RunResult;

namespace {

std::string env(char const* name)
{
    char const* v = std::getenv(name);
    return v ? v : "";
}

std::string sevemu_bin() { return env("SEVEMU_BIN"); }
std::string guest_elf() { return env("SEVEMU_GUEST_ELF"); }

RunResult run_sevemu(std::vector<std::string> args)
{
    args.insert(args.begin(), sevemu_bin());
    auto r = run_capture(args);
    // No run, good or bad, may reach the top-level handler (a bug surfacing as an exception).
    CHECK(r.err.find("internal error") == std::string::npos);
    CHECK(!(r.exited && r.status == 70));
    return r;
}

std::string temp_file(std::string const& name, std::string const& content)
{
    std::string dir = env("TMPDIR").empty() ? "/tmp" : env("TMPDIR");
    std::string path = dir + "/sevemu-cli-test-" + std::to_string(getpid()) + "-" + name;
    std::ofstream(path, std::ios::binary) << content;
    return path;
}

std::string read_prefix(std::string const& path, size_t n)
{
    std::ifstream in(path, std::ios::binary);
    std::string s(n, '\0');
    in.read(s.data(), long(n));
    s.resize(size_t(in.gcount()));
    return s;
}

// One error line naming `needle`.
void check_one_error_line(RunResult const& r, std::string const& needle)
{
    INFO("stderr: " << r.err);
    INFO("stdout: " << r.out);
    CHECK(r.exited);
    CHECK(r.status != 0);
    CHECK(r.out.empty());
    REQUIRE(!r.err.empty());
    CHECK(r.err.rfind("sevemu: ", 0) == 0);
    CHECK(r.err.back() == '\n');
    CHECK(r.err.find('\n') == r.err.size() - 1);
    CHECK(r.err.find(needle) != std::string::npos);
    // A user's mistake is never a bug: the top-level handler's line must not appear.
    CHECK(r.err.find("internal error") == std::string::npos);
}

std::vector<std::string> with_kernel(std::vector<std::string> args)
{
    args.insert(args.begin(), { "-kernel", guest_elf(), "-display", "none" });
    return args;
}

} // namespace

TEST_CASE("cli: --help and -h print usage and succeed")
{
    for (char const* h : { "--help", "-h", "-help" }) {
        auto r = run_sevemu({ h });
        CHECK(r.exited);
        CHECK(r.status == 0);
        CHECK(r.out.find("Usage: sevemu") != std::string::npos);
        CHECK(r.out.find("-kernel") != std::string::npos);
        CHECK(r.out.find("isa-debug-exit") != std::string::npos);
        CHECK(r.err.empty());
    }
}

TEST_CASE("cli: --version and -cpu help")
{
    auto v = run_sevemu({ "--version" });
    CHECK(v.status == 0);
    CHECK(v.out.find("sevemu version") != std::string::npos);
    auto c = run_sevemu({ "-cpu", "help" });
    CHECK(c.status == 0);
    for (char const* m : { "EPYC", "EPYC-Rome", "EPYC-Milan", "EPYC-Genoa" })
        CHECK(c.out.find(m) != std::string::npos);
}

TEST_CASE("cli: nothing to run")
{
    check_one_error_line(run_sevemu({}), "-kernel");
    check_one_error_line(run_sevemu({ "-m", "256M" }), "-kernel");
}

TEST_CASE("cli: unknown options, missing arguments, positional arguments")
{
    check_one_error_line(run_sevemu({ "-frobnicate" }), "-frobnicate");
    check_one_error_line(run_sevemu({ "--frobnicate=3" }), "--frobnicate=3");
    check_one_error_line(run_sevemu({ "-kernel" }), "-kernel");
    check_one_error_line(run_sevemu({ "-m" }), "-m");
    check_one_error_line(run_sevemu({ "disk.img" }), "disk.img");
}

TEST_CASE("cli: -m sizes")
{
    check_one_error_line(run_sevemu(with_kernel({ "-m", "12X" })), "12X");
    check_one_error_line(run_sevemu(with_kernel({ "-m", "abc" })), "abc");
    check_one_error_line(run_sevemu(with_kernel({ "-m", "1" })), "-m 1");
    check_one_error_line(run_sevemu(with_kernel({ "-m", "-5" })), "-5");
    check_one_error_line(run_sevemu(with_kernel({ "-m", "4096T" })), "4096T");
    check_one_error_line(run_sevemu(with_kernel({ "-m", "128M,slots=4" })), "slots");
}

TEST_CASE("cli: -smp beyond 64 vCPUs, or with CPU hotplug, is unsupported")
{
    check_one_error_line(run_sevemu(with_kernel({ "-smp", "65" })), "-smp 65: unsupported: at most 64 vCPUs");
    check_one_error_line(run_sevemu(with_kernel({ "-smp", "sockets=2,cores=40" })), "-smp sockets=2,cores=40");
    check_one_error_line(run_sevemu(with_kernel({ "-smp", "cpus=4,maxcpus=8" })), "maxcpus");
    check_one_error_line(run_sevemu(with_kernel({ "-smp", "zero" })), "zero");
}

TEST_CASE("cli: -cpu unknown model lists the valid ones")
{
    auto r = run_sevemu(with_kernel({ "-cpu", "Skylake-Server" }));
    check_one_error_line(r, "Skylake-Server");
    for (char const* m : { "EPYC", "EPYC-Rome", "EPYC-Milan", "EPYC-Genoa" })
        CHECK(r.err.find(m) != std::string::npos);
    check_one_error_line(run_sevemu(with_kernel({ "-cpu", "EPYC-Milan,+avx512f" })), "EPYC-Milan,+avx512f");
}

TEST_CASE("cli: -serial, -display, -device")
{
    check_one_error_line(run_sevemu(with_kernel({ "-serial", "tcp:127.0.0.1:4444" })), "tcp:127.0.0.1:4444");
    check_one_error_line(run_sevemu(with_kernel({ "-serial", "stdio", "-serial", "none" })), "only one");
    check_one_error_line(run_sevemu(with_kernel({ "-display", "gtk" })), "gtk");
    check_one_error_line(run_sevemu(with_kernel({ "-device", "e1000" })), "e1000");
    check_one_error_line(run_sevemu(with_kernel({ "-device", "isa-debug-exit,colour=red" })), "colour");
    check_one_error_line(run_sevemu(with_kernel({ "-device", "isa-debug-exit,iobase=zz" })), "zz");
    check_one_error_line(run_sevemu(with_kernel({ "-device", "isa-debug-exit,iobase=0x3f8,iosize=4" })), "overlap");
    check_one_error_line(run_sevemu(with_kernel({ "-serial", "file:/nonexistent-dir/x.log" })), "/nonexistent-dir/x.log");
    check_one_error_line(run_sevemu(with_kernel({ "-D", "/nonexistent-dir/trace.log" })), "/nonexistent-dir/trace.log");
}

TEST_CASE("cli: -kernel files that cannot run")
{
    check_one_error_line(run_sevemu({ "-kernel", "/nonexistent/kernel.elf" }), "/nonexistent/kernel.elf");
    auto garbage = temp_file("garbage.bin", std::string(5000, '\x5a'));
    check_one_error_line(run_sevemu({ "-kernel", garbage }), garbage);
    auto empty = temp_file("empty.bin", "");
    check_one_error_line(run_sevemu({ "-kernel", empty }), "empty");
    std::string bz(0x1000, '\0');
    bz.replace(0x202, 4, "HdrS");
    auto bzimage = temp_file("bzImage", bz);
    // A bzImage goes to the Linux loader, which names what is wrong with this one.
    check_one_error_line(run_sevemu({ "-kernel", bzimage }), "0xAA55");
    // The real guest, cut short: its Multiboot header survives but the image does not.
    auto truncated = temp_file("truncated.elf", read_prefix(guest_elf(), 0x1100));
    check_one_error_line(run_sevemu({ "-kernel", truncated }), "truncated");
    check_one_error_line(run_sevemu({ "-kernel", guest_elf(), "-initrd", "/nonexistent/module" }), "/nonexistent/module");
    // Too little memory is a user error, not a crash.
    check_one_error_line(run_sevemu({ "-kernel", guest_elf(), "-m", "1M" }), "too little");
    for (auto const& p : { garbage, empty, bzimage, truncated })
        std::remove(p.c_str());
}

TEST_CASE("cli: -object sev-guest / sev-snp-guest with QEMU's checks")
{
    // EPYC-Milan's C-bit is 51 (CPUID 8000_001F EBX[5:0]).
    auto sev = [](std::string obj, std::vector<std::string> extra = {}) {
        std::vector<std::string> a = with_kernel({ "-cpu", "EPYC-Milan", "-machine", "q35,confidential-guest-support=sev0", "-object", obj });
        a.insert(a.end(), extra.begin(), extra.end());
        return run_sevemu(a);
    };
    check_one_error_line(sev("sev-guest,id=sev0,policy=0x1,cbitpos=47,reduced-phys-bits=1"), "cbitpos");
    check_one_error_line(sev("sev-guest,id=sev0,policy=0x1,cbitpos=51,reduced-phys-bits=0"), "reduced-phys-bits");
    check_one_error_line(sev("sev-guest,id=sev0,policy=0x1,reduced-phys-bits=1"), "cbitpos");
    check_one_error_line(sev("sev-guest,policy=0x1,cbitpos=51,reduced-phys-bits=1"), "'id'");
    check_one_error_line(sev("sev-guest,id=sev0,bogus=1,cbitpos=51,reduced-phys-bits=1"), "bogus");
    check_one_error_line(sev("sev-guest,id=sev0,policy=nope,cbitpos=51,reduced-phys-bits=1"), "nope");
    check_one_error_line(sev("sev-guest,id=other,cbitpos=51,reduced-phys-bits=1"), "sev0");
    check_one_error_line(sev("sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1,host-data=AAAA"), "host-data");
    check_one_error_line(sev("tpm-emulator,id=sev0"), "tpm-emulator");
    // Valid objects that sevemu does not run: one line each. SEV guests themselves run
    // (tests/integration/sev_cli_test.cpp); their owner files are read before anything else.
    check_one_error_line(sev("sev-guest,id=sev0,policy=0x1,cbitpos=51,reduced-phys-bits=1,dh-cert-file=/nonexistent/godh.b64"),
        "dh-cert-file");
    // A directory, a device: named, with the reason, before anything is read.
    check_one_error_line(sev("sev-guest,id=sev0,policy=0x1,cbitpos=51,reduced-phys-bits=1,dh-cert-file=/tmp"),
        "dh-cert-file /tmp: is a directory");
    check_one_error_line(sev("sev-guest,id=sev0,policy=0x1,cbitpos=51,reduced-phys-bits=1,session-file=/dev/zero"),
        "session-file /dev/zero: not a regular file");
    check_one_error_line(sev("sev-guest,id=sev0,policy=0x5,cbitpos=51,reduced-phys-bits=1,kernel-hashes=on"), "kernel-hashes");
    check_one_error_line(sev("sev-snp-guest,id=sev0,policy=0x30000,cbitpos=51,reduced-phys-bits=1"), "unsupported yet");
}

TEST_CASE("cli: options that arrive with later issues")
{
    // -S and -qmp work now (tests/integration/qmp_cli_test.cpp); a bad -qmp address is one line.
    check_one_error_line(run_sevemu(with_kernel({ "-qmp", "unix:/tmp/q.sock" })), "-qmp");
    // -incoming works (tests/integration/snapshot_test.cpp); a transport sevemu lacks is one line.
    check_one_error_line(run_sevemu(with_kernel({ "-incoming", "unix:/tmp/sevemu-migration.sock" })), "-incoming");
    check_one_error_line(run_sevemu(with_kernel({ "-incoming", "nonsense" })), "unknown migration protocol");
    check_one_error_line(run_sevemu(with_kernel({ "-bios", "OVMF.fd" })), "-bios");
    check_one_error_line(run_sevemu(with_kernel({ "-enable-kvm" })), "-enable-kvm");
    check_one_error_line(run_sevemu(with_kernel({ "-machine", "virt" })), "virt");
}

// issue 9: every file and argument is checked where it enters, with the file and the reason.
TEST_CASE("cli: files that are not regular files or are too large, empty names, bounds")
{
    namespace fs = std::filesystem;
    std::string dir = env("TMPDIR").empty() ? "/tmp" : env("TMPDIR");
    check_one_error_line(run_sevemu({ "-kernel", dir }), "-kernel " + dir + ": is a directory");
    check_one_error_line(run_sevemu({ "-kernel", "/dev/zero" }), "-kernel /dev/zero: not a regular file");
    check_one_error_line(run_sevemu({ "-kernel", guest_elf(), "-initrd", dir }), "-initrd " + dir + ": is a directory");
    check_one_error_line(run_sevemu({ "-kernel", guest_elf(), "-initrd", "/dev/zero" }), "-initrd /dev/zero: not a regular file");
    // A FIFO nobody writes to: refused at once (a blocking open would hang sevemu).
    std::string fifo = dir + "/sevemu-cli-test-" + std::to_string(getpid()) + "-fifo";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    check_one_error_line(run_sevemu({ "-kernel", fifo }), "-kernel " + fifo + ": not a regular file (a FIFO)");
    check_one_error_line(run_sevemu({ "-kernel", guest_elf(), "-initrd", guest_elf() + "," + fifo }), fifo + ": not a regular file (a FIFO)");
    std::remove(fifo.c_str());
    // A sparse file over the module limit: refused from its size, nothing read.
    auto huge = temp_file("huge-initrd", "");
    fs::resize_file(huge, (1ull << 30) + 1);
    check_one_error_line(run_sevemu({ "-kernel", guest_elf(), "-m", "4G", "-initrd", huge }), huge + ": larger than the 1 GiB limit");
    // Below that, modules together cannot exceed guest RAM: the second 100 MiB module does not
    // fit in 128 MiB, and is refused before it is read.
    fs::resize_file(huge, 100ull << 20);
    check_one_error_line(run_sevemu({ "-kernel", guest_elf(), "-m", "128M", "-initrd", huge + "," + huge }),
        "-initrd " + huge + ": larger than the guest RAM left for modules");
    fs::resize_file(huge, (256ull << 20) + 1);
    check_one_error_line(run_sevemu({ "-kernel", huge }), "-kernel " + huge + ": larger than the 256 MiB limit");
    std::remove(huge.c_str());
    // Empty names are mistakes (a variable that expanded to nothing), never a default.
    check_one_error_line(run_sevemu(with_kernel({ "--platform", "" })), "--platform ''");
    check_one_error_line(run_sevemu(with_kernel({ "-platform", "" })), "-platform ''");
    check_one_error_line(run_sevemu({ "-kernel", "" }), "-kernel ''");
    check_one_error_line(run_sevemu({ "-kernel", guest_elf(), "-initrd", "" }), "-initrd ''");
    // A Unix socket path longer than sockaddr_un's sun_path (108 bytes with the NUL).
    std::string long_path = "/tmp/" + std::string(200, 's') + ".sock";
    check_one_error_line(run_sevemu(with_kernel({ "-qmp", "unix:" + long_path + ",server=on,wait=off" })), "socket path too long");
    check_one_error_line(run_sevemu(with_kernel({ "-qmp", "unix:/tmp/" + std::string(103, 's') + ",server=on,wait=off" })),
        "socket path too long (108 bytes");
    // Sizes far beyond the machine's: one line, no allocation attempted.
    check_one_error_line(run_sevemu(with_kernel({ "-m", "1E" })), "-m 1E: too much memory");
    check_one_error_line(run_sevemu(with_kernel({ "-m", "16383P" })), "too much memory");
    check_one_error_line(run_sevemu(with_kernel({ "-m", "99999999999999999999999" })), "invalid size");
    // Output files that cannot be written: a directory for -D and -serial file:.
    check_one_error_line(run_sevemu(with_kernel({ "-D", dir, "-trace", "multiboot" })), "-D " + dir);
    check_one_error_line(run_sevemu(with_kernel({ "-serial", "file:" + dir })), "file:" + dir);
}
