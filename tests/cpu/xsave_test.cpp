// XSAVE feature set (APM vol 2 §11.5; Intel SDM vol 1 ch. 13): CR4.OSXSAVE, XGETBV/XSETBV,
// XSAVE/XRSTOR/XSAVEOPT in the standard format, CPUID leaf 1 and 0xD. Known answers are the
// documents' byte offsets: legacy region = FXSAVE layout (FCW +0, FSW +2, abridged FTW +4,
// MXCSR +24, MXCSR_MASK +28, ST0 +32, XMM0 +160, XMM15 +400), XSTATE_BV at +512, XCOMP_BV at +520.
#include "tests/cpu/harness.h"

#include <functional>

using namespace sevemu;
using namespace sevemu::cpu;
using namespace sevemu::cpu::test;

namespace {
constexpr uint64_t kOsxsave = 1u << 18;
constexpr uint64_t kArea = 0x21000, kFx = 0x20000, kArea2 = 0x22000;

uint64_t stack(Machine& m, int k) { return m.get<uint64_t>(m.cpu->gpr(RSP) + 8 * k); }

void start_x(Machine& m, std::vector<uint8_t> const& code, bool osxsave = true, uint64_t xcr0 = 3)
{
    CpuState s = m.base_state(Mode::Long64);
    if (osxsave) s.cr4 |= kOsxsave;
    s.xcr0 = xcr0;
    s.gpr[RDI] = kArea;
    s.gpr[RSI] = kFx;
    s.gpr[RAX] = 3;
    s.gpr[RDX] = 0;
    for (unsigned k = 0; k < 16; ++k)
        s.xmm[k] = { 0x1111111111111111ull * (k + 1), ~(0x0101010101010101ull * k) };
    m.write(kCode, code);
    m.cpu->set_state(s);
}
void fill(Machine& m, uint64_t a, size_t n, uint8_t v)
{
    std::vector<uint8_t> b(n, v);
    m.write(a, b);
}
std::vector<uint8_t> bytes(Machine& m, uint64_t a, size_t n)
{
    std::vector<uint8_t> b(n);
    for (size_t k = 0; k < n; ++k) b[k] = m.get<uint8_t>(a + k);
    return b;
}
// Halts in the stub of the vector raised, or at the end of the code (-1).
int run_vec(Machine& m)
{
    m.run();
    return m.halted_vector();
}
} // namespace

TEST_CASE("xsave: CPUID leaf 1 and leaf 0xD", "[cpu][xsave]")
{
    Machine m;
    auto cpuid = [&](uint32_t leaf, uint32_t sub, bool osx) {
        start_x(m, { 0x0F, 0xA2, 0xF4 }, osx);
        m.cpu->set_gpr(RAX, leaf);
        m.cpu->set_gpr(RCX, sub);
        m.run();
        return std::array<uint32_t, 4> { uint32_t(m.cpu->gpr(RAX)), uint32_t(m.cpu->gpr(RBX)), uint32_t(m.cpu->gpr(RCX)),
            uint32_t(m.cpu->gpr(RDX)) };
    };
    CHECK(cpuid(0, 0, true)[0] >= 0xD);
    auto l1 = cpuid(1, 0, false);
    CHECK((l1[2] & (1u << 26)) != 0); // XSAVE
    CHECK((l1[2] & (1u << 27)) == 0); // OSXSAVE follows CR4.OSXSAVE
    CHECK((l1[2] & (1u << 28)) == 0); // no AVX
    CHECK((cpuid(1, 0, true)[2] & (1u << 27)) != 0);
    CHECK(cpuid(0xD, 0, true) == std::array<uint32_t, 4> { 3, 576, 576, 0 });
    CHECK(cpuid(0xD, 1, true) == std::array<uint32_t, 4> { 1, 0, 0, 0 }); // XSAVEOPT only
    CHECK(cpuid(0xD, 2, true) == std::array<uint32_t, 4> { 0, 0, 0, 0 });
}

TEST_CASE("xsave: CR4.OSXSAVE, XGETBV, XSETBV and their faults", "[cpu][xsave]")
{
    Machine m;
    SECTION("MOV CR4 sets OSXSAVE")
    {
        // mov rax, cr4; or eax, 0x40000; mov cr4, rax; hlt
        start_x(m, { 0x0F, 0x20, 0xE0, 0x0D, 0x00, 0x00, 0x04, 0x00, 0x0F, 0x22, 0xE0, 0xF4 }, false);
        CHECK(run_vec(m) == -1);
        CHECK((m.cpu->state().cr4 & kOsxsave) != 0);
    }
    SECTION("XGETBV reads XCR0; XSETBV writes it; state() carries it")
    {
        start_x(m, { 0x31, 0xC9, 0x0F, 0x01, 0xD0, 0xF4 }, true, 1); // xor ecx,ecx; xgetbv
        m.cpu->set_gpr(RDX, 0x55);
        CHECK(run_vec(m) == -1);
        CHECK(m.cpu->gpr(RAX) == 1);
        CHECK(m.cpu->gpr(RDX) == 0);
        start_x(m, { 0x31, 0xC9, 0xB8, 3, 0, 0, 0, 0x31, 0xD2, 0x0F, 0x01, 0xD1, 0xF4 }, true, 1); // xsetbv 3
        CHECK(run_vec(m) == -1);
        CHECK(m.cpu->state().xcr0 == 3);
        CpuState s = m.cpu->state();
        s.xcr0 = 1;
        m.cpu->set_state(s);
        CHECK(m.cpu->state().xcr0 == 1);
    }
    SECTION("XSETBV #GP(0): bit 0 clear, AVX, unsupported bits, ECX != 0, EDX != 0")
    {
        struct { uint32_t eax, edx, ecx; } bad[] = { { 0, 0, 0 }, { 2, 0, 0 }, { 7, 0, 0 }, { 5, 0, 0 },
            { 0x80000003u, 0, 0 }, { 3, 1, 0 }, { 3, 0, 1 } };
        for (auto b : bad) {
            start_x(m, { 0x0F, 0x01, 0xD1, 0xF4 }, true, 1);
            m.cpu->set_gpr(RAX, b.eax);
            m.cpu->set_gpr(RDX, b.edx);
            m.cpu->set_gpr(RCX, b.ecx);
            CHECK(run_vec(m) == 13);
            CHECK(stack(m, 0) == 0);      // error code
            CHECK(stack(m, 1) == kCode); // fault: RIP of XSETBV
            CHECK(m.cpu->state().xcr0 == 1);
        }
    }
    SECTION("XGETBV with ECX = 1 is #GP(0)")
    {
        start_x(m, { 0xB9, 1, 0, 0, 0, 0x0F, 0x01, 0xD0, 0xF4 });
        CHECK(run_vec(m) == 13);
        CHECK(stack(m, 0) == 0);
    }
    SECTION("#UD without CR4.OSXSAVE: XGETBV, XSETBV, XSAVE, XRSTOR, XSAVEOPT")
    {
        for (auto code : { std::vector<uint8_t> { 0x0F, 0x01, 0xD0 }, { 0x0F, 0x01, 0xD1 }, { 0x0F, 0xAE, 0x27 },
                 { 0x0F, 0xAE, 0x2F }, { 0x0F, 0xAE, 0x37 } }) {
            start_x(m, code, false, 1);
            CHECK(run_vec(m) == 6);
        }
    }
    SECTION("XSETBV at CPL 3 is #GP(0); XGETBV is allowed")
    {
        for (bool set : { true, false }) {
            start_x(m, { 0x31, 0xC9, 0x0F, 0x01, uint8_t(set ? 0xD1 : 0xD0), 0xF4 }, true, 1);
            CpuState s = m.cpu->state();
            s.seg[CS] = Segment { 0x4B, 0xAFB, 0xFFFFFFFF, 0 };
            s.seg[SS] = Segment { 0x43, 0xCF3, 0xFFFFFFFF, 0 };
            s.gpr[RSP] = 0x7F000;
            s.gpr[RAX] = 3;
            m.cpu->set_state(s);
            m.run();
            if (set) {
                CHECK(m.halted_vector() == 13);
                CHECK(stack(m, 0) == 0);
                CHECK(m.cpu->state().xcr0 == 1);
            } else {
                CHECK(m.halted_vector() == 13); // HLT at CPL 3 → #GP: XGETBV itself completed
                CHECK(m.cpu->gpr(RAX) == 1);
            }
        }
    }
    SECTION("CR4.OSXSAVE is accepted by MOV CR4 only as a valid bit; LFENCE/MFENCE still decode")
    {
        start_x(m, { 0x0F, 0xAE, 0xE8, 0x0F, 0xAE, 0xF0, 0x0F, 0xAE, 0xF8, 0xF4 });
        CHECK(run_vec(m) == -1);
        CHECK(m.cpu->rip() == kCode + 10);
    }
}

TEST_CASE("xsave: XSAVE legacy region equals FXSAVE's, header fields, XRSTOR round trip", "[cpu][xsave]")
{
    Machine m;
    // fninit; fld1; fldpi; fxsave [rsi]; xsave [rdi]; hlt  (FNINIT: FCW = 0x037F; RESET leaves 0x0040)
    std::vector<uint8_t> save = { 0xDB, 0xE3, 0xD9, 0xE8, 0xD9, 0xEB, 0x0F, 0xAE, 0x06, 0x0F, 0xAE, 0x27, 0xF4 };
    SECTION("all components")
    {
        fill(m, kFx, 512, 0xEE);
        fill(m, kArea, 576, 0x00);
        fill(m, kArea + 416, 96, 0xA5); // bytes 416-511: not written by XSAVE
        m.put<uint64_t>(kArea + 520, 0);
        m.put<uint64_t>(kArea + 528, 0x1122334455667788ull); // reserved header bytes: not written
        start_x(m, save);
        CHECK(run_vec(m) == -1);
        auto fx = bytes(m, kFx, 416), xs = bytes(m, kArea, 416);
        CHECK(fx == xs);
        // Architectural offsets
        CHECK(m.get<uint16_t>(kArea + 0) == 0x037F);          // FCW
        CHECK(m.get<uint16_t>(kArea + 2) == (6u << 11));      // FSW: TOP = 6
        CHECK(m.get<uint8_t>(kArea + 4) == 0xC0);             // abridged FTW: physical 6, 7 valid
        CHECK(m.get<uint32_t>(kArea + 24) == 0x1F80);         // MXCSR
        CHECK(m.get<uint64_t>(kArea + 32) == 0xC90FDAA22168C235ull); // ST0 = pi significand
        CHECK(m.get<uint16_t>(kArea + 40) == 0x4000);
        CHECK(m.get<uint64_t>(kArea + 48) == 0x8000000000000000ull); // ST1 = 1.0
        CHECK(m.get<uint16_t>(kArea + 56) == 0x3FFF);
        CHECK(m.get<uint64_t>(kArea + 160) == 0x1111111111111111ull); // XMM0
        CHECK(m.get<uint64_t>(kArea + 168) == ~0ull);
        CHECK(m.get<uint64_t>(kArea + 400) == 0x1111111111111111ull * 16); // XMM15
        CHECK(m.get<uint64_t>(kArea + 408) == ~(0x0101010101010101ull * 15));
        CHECK(bytes(m, kArea + 416, 96) == std::vector<uint8_t>(96, 0xA5));
        CHECK(m.get<uint64_t>(kArea + 512) == 3); // XSTATE_BV
        CHECK(m.get<uint64_t>(kArea + 520) == 0); // XCOMP_BV
        CHECK(m.get<uint64_t>(kArea + 528) == 0x1122334455667788ull);
    }
    SECTION("RFBM = x87 only: SSE part untouched, XSTATE_BV bit 1 kept")
    {
        fill(m, kArea, 576, 0xCC);
        m.put<uint64_t>(kArea + 512, 2);
        start_x(m, save);
        m.cpu->set_gpr(RAX, 1);
        CHECK(run_vec(m) == -1);
        CHECK(m.get<uint16_t>(kArea + 0) == 0x037F);
        CHECK(m.get<uint64_t>(kArea + 24) == 0xCCCCCCCCCCCCCCCCull);
        CHECK(m.get<uint64_t>(kArea + 160) == 0xCCCCCCCCCCCCCCCCull);
        CHECK(m.get<uint64_t>(kArea + 512) == 3);
    }
    SECTION("XCR0 = x87 only masks EDX:EAX = 3; XSTATE_BV bit 1 cleared stays clear")
    {
        fill(m, kArea, 576, 0xCC);
        m.put<uint64_t>(kArea + 512, 0);
        start_x(m, save, true, 1);
        CHECK(run_vec(m) == -1);
        CHECK(m.get<uint64_t>(kArea + 160) == 0xCCCCCCCCCCCCCCCCull);
        CHECK(m.get<uint64_t>(kArea + 512) == 1);
    }
    SECTION("XSAVEOPT saves like XSAVE")
    {
        fill(m, kArea, 576, 0);
        start_x(m, { 0xD9, 0xE8, 0xD9, 0xEB, 0x0F, 0xAE, 0x06, 0x0F, 0xAE, 0x37, 0xF4 });
        CHECK(run_vec(m) == -1);
        CHECK(bytes(m, kFx, 416) == bytes(m, kArea, 416));
        CHECK(m.get<uint64_t>(kArea + 512) == 3);
    }
    SECTION("XSAVE64 (REX.W) and 32-bit protected mode")
    {
        fill(m, kArea, 576, 0);
        start_x(m, { 0xD9, 0xE8, 0x0F, 0xAE, 0x06, 0x48, 0x0F, 0xAE, 0x27, 0xF4 });
        CHECK(run_vec(m) == -1);
        CHECK(bytes(m, kFx, 416) == bytes(m, kArea, 416));
        // 32-bit mode: 8 XMM registers (bytes 288-415 untouched)
        CpuState s = m.base_state(Mode::Prot32);
        s.cr4 |= kOsxsave | 0x600;
        s.xcr0 = 3;
        s.gpr[RDI] = kArea2;
        s.gpr[RAX] = 3;
        s.xmm[7] = { 7, 77 };
        fill(m, kArea2, 576, 0x99);
        m.write(kCode, { 0x0F, 0xAE, 0x27, 0xF4 });
        m.cpu->set_state(s);
        CHECK(run_vec(m) == -1);
        CHECK(m.get<uint64_t>(kArea2 + 160 + 16 * 7) == 7);
        CHECK(m.get<uint64_t>(kArea2 + 168 + 16 * 7) == 77);
        CHECK(m.get<uint64_t>(kArea2 + 288) == 0x9999999999999999ull);
        CHECK(m.get<uint64_t>(kArea2 + 512) == (0x9999999999999999ull | 3));
    }
    SECTION("XRSTOR restores what XSAVE saved")
    {
        // fld1; fldpi; fxsave [rsi]; xsave [rdi]; fninit; pxor xmm0,xmm0; pxor xmm15,xmm15;
        // ldmxcsr? (no) ; xrstor [rdi]; fxsave [rsi+0x1000]; hlt
        fill(m, kArea, 576, 0);
        start_x(m, { 0xD9, 0xE8, 0xD9, 0xEB, 0x0F, 0xAE, 0x06, 0x0F, 0xAE, 0x27, 0xDB, 0xE3, 0x66, 0x0F, 0xEF, 0xC0,
            0x66, 0x45, 0x0F, 0xEF, 0xFF, 0x0F, 0xAE, 0x2F, 0x0F, 0xAE, 0x86, 0x00, 0x10, 0x00, 0x00, 0xF4 });
        CHECK(run_vec(m) == -1);
        CHECK(bytes(m, kFx, 416) == bytes(m, kFx + 0x1000, 416));
        CHECK(m.cpu->state().xmm[15][0] == 0x1111111111111111ull * 16);
    }
    SECTION("XRSTOR with XSTATE_BV = 0 initialises x87 and XMM, loads MXCSR from memory")
    {
        fill(m, kArea, 576, 0x00);
        for (unsigned k = 0; k < 512; k += 8)
            if (k != 24) m.put<uint64_t>(kArea + k, 0x5A5A5A5A5A5A5A5Aull);
        m.put<uint32_t>(kArea + 24, 0x1F00); // MXCSR
        // fld1; xrstor [rdi]; fxsave [rsi]; hlt
        start_x(m, { 0xD9, 0xE8, 0x0F, 0xAE, 0x2F, 0x0F, 0xAE, 0x06, 0xF4 });
        CHECK(run_vec(m) == -1);
        CHECK(m.get<uint16_t>(kFx + 0) == 0x037F); // FCW
        CHECK(m.get<uint16_t>(kFx + 2) == 0);      // FSW
        CHECK(m.get<uint8_t>(kFx + 4) == 0);       // all empty
        CHECK(m.cpu->state().mxcsr == 0x1F00);
        for (unsigned k = 0; k < 16; ++k) {
            CHECK(m.cpu->state().xmm[k][0] == 0);
            CHECK(m.cpu->state().xmm[k][1] == 0);
        }
    }
    SECTION("XRSTOR with RFBM = x87 leaves XMM and MXCSR alone")
    {
        fill(m, kArea, 576, 0x00);
        m.put<uint32_t>(kArea + 24, 0x1F00);
        start_x(m, { 0x0F, 0xAE, 0x2F, 0xF4 });
        m.cpu->set_gpr(RAX, 1);
        CHECK(run_vec(m) == -1);
        CHECK(m.cpu->state().mxcsr == 0x1F80);
        CHECK(m.cpu->state().xmm[3][0] == 0x4444444444444444ull);
    }
}

TEST_CASE("xsave: #GP, #NM conditions of XSAVE and XRSTOR", "[cpu][xsave]")
{
    Machine m;
    auto expect = [&](std::vector<uint8_t> const& code, uint64_t rdi, int vec, std::function<void()> prep = {}) {
        fill(m, kArea, 640, 0);
        if (prep) prep();
        start_x(m, code);
        m.cpu->set_gpr(RDI, rdi);
        CHECK(run_vec(m) == vec);
        if (vec == 13) CHECK(stack(m, 0) == 0);
        if (vec == 13) CHECK(stack(m, 1) == kCode);
    };
    std::vector<uint8_t> xs = { 0x0F, 0xAE, 0x27, 0xF4 }, xr = { 0x0F, 0xAE, 0x2F, 0xF4 }, xo = { 0x0F, 0xAE, 0x37, 0xF4 };
    SECTION("64-byte alignment")
    {
        expect(xs, kArea + 16, 13);
        expect(xr, kArea + 32, 13);
        expect(xo, kArea + 8, 13);
        expect(xs, kArea + 64, -1);
    }
    SECTION("XRSTOR header checks")
    {
        expect(xr, kArea, -1);
        expect(xr, kArea, 13, [&] { m.put<uint64_t>(kArea + 512, 4); });             // AVX not in XCR0
        expect(xr, kArea, 13, [&] { m.put<uint64_t>(kArea + 512, 1ull << 63); });
        expect(xr, kArea, 13, [&] { m.put<uint64_t>(kArea + 520, 1ull << 63); });     // compacted: no XSAVEC
        expect(xr, kArea, 13, [&] { m.put<uint64_t>(kArea + 520, 1); });
        expect(xr, kArea, 13, [&] { m.put<uint64_t>(kArea + 528, 1); });              // header bytes 16-23
        expect(xr, kArea, -1, [&] { m.put<uint64_t>(kArea + 536, 1); });              // 24-63 not checked
        expect(xr, kArea, 13, [&] { m.put<uint32_t>(kArea + 24, 0x10000); });         // MXCSR reserved bit
    }
    SECTION("XSTATE_BV bit 1 with XCR0 = x87 only is #GP")
    {
        fill(m, kArea, 576, 0);
        m.put<uint64_t>(kArea + 512, 2);
        start_x(m, xr, true, 1);
        CHECK(run_vec(m) == 13);
    }
    SECTION("CR0.TS gives #NM")
    {
        for (auto const& code : { xs, xr, xo }) {
            start_x(m, code);
            CpuState s = m.cpu->state();
            s.cr0 |= 8;
            m.cpu->set_state(s);
            CHECK(run_vec(m) == 7);
        }
    }
    SECTION("register forms of /4 are #UD")
    {
        start_x(m, { 0x0F, 0xAE, 0xE7, 0xF4 });
        CHECK(run_vec(m) == 6);
    }
}
