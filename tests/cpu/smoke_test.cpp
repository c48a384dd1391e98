#include "tests/cpu/harness.h"

using namespace sevemu;
using namespace sevemu::cpu;
using namespace sevemu::cpu::test;

TEST_CASE("cpu: 64-bit straight-line code runs and halts", "[cpu][smoke]")
{
    Machine m;
    // mov eax, 5; add eax, 7; imul eax, eax, 3; hlt
    m.start(Mode::Long64, { 0xB8, 5, 0, 0, 0, 0x83, 0xC0, 7, 0x6B, 0xC0, 3, 0xF4 });
    auto r = m.run();
    CHECK(r.reason == StopReason::Halted);
    CHECK(m.cpu->gpr(RAX) == 36);
    CHECK(r.instructions == 4);
}

TEST_CASE("cpu: real mode and 32-bit code run", "[cpu][smoke]")
{
    Machine m;
    // mov ax, 0x1234; out 0x80, al; hlt
    m.start(Mode::Real, { 0xB8, 0x34, 0x12, 0xE6, 0x80, 0xF4 });
    auto r = m.run();
    CHECK(r.reason == StopReason::Halted);
    REQUIRE(m.io.outs.size() == 1);
    CHECK(m.io.outs[0] == std::pair<uint16_t, uint32_t>(0x80, 0x34));
    Machine p;
    // mov ecx, 10; xor eax, eax; L: add eax, ecx; loop L; hlt
    p.start(Mode::Prot32, { 0xB9, 10, 0, 0, 0, 0x31, 0xC0, 0x01, 0xC8, 0xE2, 0xFC, 0xF4 });
    r = p.run();
    CHECK(r.reason == StopReason::Halted);
    CHECK(p.cpu->gpr(RAX) == 55);
}
