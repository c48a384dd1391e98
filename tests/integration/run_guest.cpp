// Integration: a test guest's output under an emulator must equal, byte for byte, the output of
// the same C core compiled natively for the host (the known answer), and the guest must report
// success through isa-debug-exit (status (0x10 << 1) | 1 = 33).
//
//   run-guest EMULATOR GUEST_ELF NATIVE_EXE | EXPECTED_FILE
//             [--append TEXT] [--initrd TEXT] [--stdin TEXT] [--no-debug-exit yes] [--sev PLATFORM_DIR]
//             [--sev-es PLATFORM_DIR]
//
// With --sev the guest runs as an SEV guest (-object sev-guest, no owner session) on the emulated
// platform in PLATFORM_DIR (shared between tests: the platform store locks every update);
// --sev-es likewise as an SEV-ES guest (policy 0x5: NODBG and ES).
// With --no-debug-exit the guest powers off (ACPI S5) and the emulator must exit with 0.
// For guests that only make sense on a machine (interrupts, devices), the known answer is a
// file (NAME.expected, recorded from QEMU) instead of a native program.
//
// EMULATOR is sevemu, or qemu-system-x86_64 for the cross-check that the guests themselves are
// right; both get the same QEMU command line. A missing emulator skips (exit 77, meson's SKIP).
#include "tests/integration/spawn.h"

#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>
#include <unistd.h>

using sevemu::testing::run_capture;

static constexpr int kGuestPassStatus = (0x10 << 1) | 1;

int main(int argc, char** argv)
{
    if (argc < 4 || argc % 2) {
        std::fprintf(stderr, "usage: run-guest EMULATOR GUEST_ELF NATIVE_EXE|EXPECTED_FILE [--append TEXT] [--initrd TEXT] [--stdin TEXT]\n");
        return 2;
    }
    std::string emulator = argv[1], guest = argv[2], native = argv[3];
    std::vector<std::string> extra;
    std::string stdin_text;
    bool with_debug_exit = true;
    for (int i = 4; i + 1 < argc; i += 2) {
        std::string opt = argv[i];
        if (opt == "--append" || opt == "--initrd")
            extra.insert(extra.end(), { opt.substr(1), argv[i + 1] }); // --append -> -append
        else if (opt == "--stdin")
            stdin_text = argv[i + 1];
        else if (opt == "--no-debug-exit")
            with_debug_exit = false;
        else if (opt == "--sev" || opt == "--sev-es")
            extra.insert(extra.end(), { "-machine", "confidential-guest-support=sev0", "-object",
                std::string("sev-guest,id=sev0,policy=") + (opt == "--sev" ? "0x1" : "0x5") + ",cbitpos=51,reduced-phys-bits=1",
                "--platform", argv[i + 1] });
        else {
            std::fprintf(stderr, "run-guest: unknown option %s\n", opt.c_str());
            return 2;
        }
    }
    if (access(emulator.c_str(), X_OK) != 0) {
        std::printf("SKIP: %s is not available\n", emulator.c_str());
        return 77;
    }
    sevemu::testing::RunResult known;
    if (native.size() > 9 && native.substr(native.size() - 9) == ".expected") {
        std::ifstream in(native, std::ios::binary);
        if (!in) {
            std::fprintf(stderr, "FAIL: cannot read %s\n", native.c_str());
            return 1;
        }
        known.out.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
        known.exited = true;
        known.status = 0;
    } else {
        known = run_capture({ native });
    }
    if (!known.exited || known.status != 0) {
        std::fprintf(stderr, "FAIL: native %s ended with %s %d\n", native.c_str(), known.exited ? "status" : "signal", known.status);
        return 1;
    }
    std::vector<std::string> cmd = { emulator, "-accel", "tcg", "-m", "128M", "-kernel", guest, "-serial", "stdio",
        "-display", "none", "-no-reboot" };
    if (with_debug_exit)
        cmd.insert(cmd.end(), { "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04" });
    int want_status = with_debug_exit ? kGuestPassStatus : 0;
    cmd.insert(cmd.end(), extra.begin(), extra.end());
    auto got = run_capture(cmd, stdin_text);
    bool ok = true;
    if (!got.exited || got.status != want_status) {
        std::fprintf(stderr, "FAIL: %s ended with %s %d (want status %d)\n", emulator.c_str(),
            got.exited ? "status" : "signal", got.status, want_status);
        ok = false;
    }
    if (got.out != known.out) {
        size_t i = 0;
        while (i < got.out.size() && i < known.out.size() && got.out[i] == known.out[i])
            ++i;
        size_t line_start = known.out.rfind('\n', i == 0 ? 0 : i - 1);
        line_start = line_start == std::string::npos ? 0 : line_start + 1;
        std::fprintf(stderr, "FAIL: output differs at byte %zu (native %zu bytes, guest %zu bytes)\n", i, known.out.size(),
            got.out.size());
        std::fprintf(stderr, "  native: %s\n", known.out.substr(line_start, known.out.find('\n', i) - line_start).c_str());
        std::fprintf(stderr, "  guest:  %s\n", got.out.substr(line_start, got.out.find('\n', i) - line_start).c_str());
        ok = false;
    }
    if (!got.err.empty())
        std::fprintf(stderr, "emulator stderr:\n%s", got.err.c_str());
    if (ok)
        std::printf("PASS: %zu bytes of output identical, status %d\n", got.out.size(), got.status);
    return ok ? 0 : 1;
}
