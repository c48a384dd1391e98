// Random byte sequences as code, in every mode: each run must end in an architectural outcome
// (a guest exception handled by the stubs, a triple fault, HLT, a stop request or the
// instruction limit) and never crash the emulator (STYLE.md rule 3).
#include "tests/cpu/harness.h"

#include <cstdlib>
#include <random>

using namespace sevemu;
using namespace sevemu::cpu;
using namespace sevemu::cpu::test;

namespace {
// SEVEMU_FUZZ_RUNS overrides the number of random programs per mode (default 2000).
int runs()
{
    char const* e = std::getenv("SEVEMU_FUZZ_RUNS");
    return e ? std::atoi(e) : 2000;
}
void fuzz(Mode mode, uint64_t seed, int runs)
{
    Machine m;
    std::mt19937_64 rng(seed);
    int outcomes[4] {};
    for (int k = 0; k < runs; ++k) {
        std::vector<uint8_t> code(4096);
        for (auto& b : code)
            b = uint8_t(rng());
        // Bias toward valid-looking code now and then: ModRM-heavy ALU and MOV opcodes.
        if (k % 3 == 0)
            for (size_t i = 0; i < code.size(); i += 3)
                code[i] = uint8_t(0x00 + (rng() % 0x40)) | (rng() % 2 ? 0x88 & 0xFF : 0);
        m.start(mode, code);
        CpuState s = m.cpu->state();
        for (int g = 0; g < 16; ++g)
            if (g != RSP) s.gpr[g] = (rng() % 4 == 0) ? rng() : (rng() % 0x100000);
        if (mode == Mode::V86 && rng() % 2)
            s.rflags |= 3u << 12; // IOPL 3: CLI/STI/PUSHF/POPF/INT n/IRET execute
        m.cpu->set_state(s);
        RunResult r { StopReason::InstructionLimit, 0 };
        for (int step = 0; step < 3; ++step) {
            r = m.run(3000);
            if (r.reason != StopReason::Halted) break;
            if (m.halted_vector() >= 0) break; // an exception stub: done
        }
        outcomes[int(r.reason)]++;
    }
    INFO("limit " << outcomes[0] << " halted " << outcomes[1] << " shutdown " << outcomes[2] << " stop " << outcomes[3]);
    WARN("mode " << int(mode) << ": limit " << outcomes[0] << " halted " << outcomes[1] << " shutdown " << outcomes[2] << " stop " << outcomes[3]);
    CHECK(outcomes[0] + outcomes[1] + outcomes[2] + outcomes[3] == runs);
}
} // namespace

TEST_CASE("fuzz: random code in real mode", "[cpu][fuzz]") { fuzz(Mode::Real, 1, runs()); }
TEST_CASE("fuzz: random code in 32-bit protected mode", "[cpu][fuzz]") { fuzz(Mode::Prot32, 2, runs()); }
TEST_CASE("fuzz: random code in 64-bit long mode", "[cpu][fuzz]") { fuzz(Mode::Long64, 3, runs()); }
TEST_CASE("fuzz: random code in 16-bit protected mode", "[cpu][fuzz]") { fuzz(Mode::Prot16, 4, runs()); }
TEST_CASE("fuzz: random code in compatibility mode, 32-bit CS", "[cpu][fuzz]") { fuzz(Mode::Compat32, 5, runs()); }
TEST_CASE("fuzz: random code in compatibility mode, 16-bit CS", "[cpu][fuzz]") { fuzz(Mode::Compat16, 6, runs()); }
TEST_CASE("fuzz: random code in virtual-8086 mode", "[cpu][fuzz]") { fuzz(Mode::V86, 7, runs()); }
