// A MIPS measurement on an integer loop (hidden: run with `test-cpu "[.bench]"`).
#include "tests/cpu/harness.h"

#include <chrono>
#include <cstdio>

using namespace sevemu;
using namespace sevemu::cpu;
using namespace sevemu::cpu::test;

TEST_CASE("cpu: integer loop MIPS", "[.bench][cpu]")
{
    Machine m;
    // mov ecx, N; L: add rax, rcx; xor rdx, rax; inc rbx; mov [rsp-8], rdx; mov rsi, [rsp-8];
    //             dec ecx; jnz L; hlt
    std::vector<uint8_t> code = { 0xB9, 0x00, 0xE1, 0xF5, 0x05, // mov ecx, 100000000
        0x48, 0x01, 0xC8, 0x48, 0x31, 0xC2, 0x48, 0xFF, 0xC3,
        0x48, 0x89, 0x54, 0x24, 0xF8, 0x48, 0x8B, 0x74, 0x24, 0xF8,
        0xFF, 0xC9, 0x75, 0xE9, 0xF4 };
    m.start(Mode::Long64, code);
    auto t0 = std::chrono::steady_clock::now();
    uint64_t total = 0;
    for (;;) {
        auto r = m.run(50'000'000);
        total += r.instructions;
        if (r.reason != StopReason::InstructionLimit) break;
    }
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("integer loop: %llu instructions in %.3f s = %.1f MIPS\n", (unsigned long long)total, s, total / s / 1e6);
    CHECK(m.cpu->halted());
    CHECK(total == 1 + 100000000ull * 7 + 1);
}

TEST_CASE("cpu: REP MOVSB/STOSQ bandwidth", "[.bench][cpu]")
{
    Machine m(CpuModel::Milan, 64ull << 20);
    // 100 x (rep stosq 4 MiB at 16 MiB; rep movsb 4 MiB from 16 MiB to 24 MiB)
    std::vector<uint8_t> code = { 0xBB, 100, 0, 0, 0,                                // mov ebx, 100
        0xBF, 0, 0, 0, 1, 0xB9, 0, 0, 8, 0, 0xF3, 0x48, 0xAB,                        // mov edi, 16M; mov ecx, 512K; rep stosq
        0xBE, 0, 0, 0, 1, 0xBF, 0, 0, 0x80, 1, 0xB9, 0, 0, 0x40, 0, 0xF3, 0xA4,      // mov esi, 16M; mov edi, 24M; mov ecx, 4M; rep movsb
        0xFF, 0xCB, 0x75, 0xDE, 0xF4 };                                                // dec ebx; jnz; hlt
    m.start(Mode::Long64, code);
    auto t0 = std::chrono::steady_clock::now();
    for (;;) {
        auto r = m.run(1'000'000'000);
        if (r.reason != StopReason::InstructionLimit) break;
    }
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("rep stos+movs: 800 MiB in %.3f s = %.0f MiB/s\n", s, 800 / s);
    CHECK(m.cpu->halted());
    CHECK(m.halted_vector() < 0);
}
