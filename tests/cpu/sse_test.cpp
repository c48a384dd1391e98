// SSE/SSE2 against the host: each operation runs as a host intrinsic (the same instruction on
// the host CPU) and in the interpreter on the same random inputs (xmm0 op= xmm1).
#include "tests/cpu/harness.h"

#include <cmath>
#include <emmintrin.h>
#include <functional>
#include <random>

using namespace sevemu;
using namespace sevemu::cpu;
using namespace sevemu::cpu::test;

namespace {
using HostOp = __m128i (*)(__m128i, __m128i);
struct SseCase {
    char const* name;
    std::vector<uint8_t> bytes; // full instruction, ModRM C1 (xmm0, xmm1)
    HostOp host;
};
__m128i load(std::array<uint64_t, 2> const& v) { return _mm_set_epi64x(int64_t(v[1]), int64_t(v[0])); }
std::array<uint64_t, 2> store(__m128i x)
{
    std::array<uint64_t, 2> v;
    _mm_storeu_si128(reinterpret_cast<__m128i*>(v.data()), x);
    return v;
}
#define PI(op) [](__m128i a, __m128i b) { return op(a, b); }
#define PD(op) [](__m128i a, __m128i b) { return _mm_castpd_si128(op(_mm_castsi128_pd(a), _mm_castsi128_pd(b))); }
#define PS(op) [](__m128i a, __m128i b) { return _mm_castps_si128(op(_mm_castsi128_ps(a), _mm_castsi128_ps(b))); }
} // namespace

TEST_CASE("sse: packed integer, logic, FP arithmetic and shuffles match the host", "[cpu][sse]")
{
    std::vector<SseCase> cases = {
        { "paddb", { 0x66, 0x0F, 0xFC, 0xC1 }, PI(_mm_add_epi8) }, { "paddw", { 0x66, 0x0F, 0xFD, 0xC1 }, PI(_mm_add_epi16) },
        { "paddd", { 0x66, 0x0F, 0xFE, 0xC1 }, PI(_mm_add_epi32) }, { "paddq", { 0x66, 0x0F, 0xD4, 0xC1 }, PI(_mm_add_epi64) },
        { "psubb", { 0x66, 0x0F, 0xF8, 0xC1 }, PI(_mm_sub_epi8) }, { "psubq", { 0x66, 0x0F, 0xFB, 0xC1 }, PI(_mm_sub_epi64) },
        { "pand", { 0x66, 0x0F, 0xDB, 0xC1 }, PI(_mm_and_si128) }, { "pandn", { 0x66, 0x0F, 0xDF, 0xC1 }, PI(_mm_andnot_si128) },
        { "por", { 0x66, 0x0F, 0xEB, 0xC1 }, PI(_mm_or_si128) }, { "pxor", { 0x66, 0x0F, 0xEF, 0xC1 }, PI(_mm_xor_si128) },
        { "pcmpeqb", { 0x66, 0x0F, 0x74, 0xC1 }, PI(_mm_cmpeq_epi8) }, { "pcmpeqd", { 0x66, 0x0F, 0x76, 0xC1 }, PI(_mm_cmpeq_epi32) },
        { "pcmpgtw", { 0x66, 0x0F, 0x65, 0xC1 }, PI(_mm_cmpgt_epi16) }, { "pminub", { 0x66, 0x0F, 0xDA, 0xC1 }, PI(_mm_min_epu8) },
        { "pmaxsw", { 0x66, 0x0F, 0xEE, 0xC1 }, PI(_mm_max_epi16) }, { "pavgb", { 0x66, 0x0F, 0xE0, 0xC1 }, PI(_mm_avg_epu8) },
        { "pmullw", { 0x66, 0x0F, 0xD5, 0xC1 }, PI(_mm_mullo_epi16) }, { "pmulhw", { 0x66, 0x0F, 0xE5, 0xC1 }, PI(_mm_mulhi_epi16) },
        { "pmulhuw", { 0x66, 0x0F, 0xE4, 0xC1 }, PI(_mm_mulhi_epu16) }, { "pmuludq", { 0x66, 0x0F, 0xF4, 0xC1 }, PI(_mm_mul_epu32) },
        { "pmaddwd", { 0x66, 0x0F, 0xF5, 0xC1 }, PI(_mm_madd_epi16) }, { "psadbw", { 0x66, 0x0F, 0xF6, 0xC1 }, PI(_mm_sad_epu8) },
        { "paddusb", { 0x66, 0x0F, 0xDC, 0xC1 }, PI(_mm_adds_epu8) }, { "psubsw", { 0x66, 0x0F, 0xE9, 0xC1 }, PI(_mm_subs_epi16) },
        { "punpcklbw", { 0x66, 0x0F, 0x60, 0xC1 }, PI(_mm_unpacklo_epi8) }, { "punpckhwd", { 0x66, 0x0F, 0x69, 0xC1 }, PI(_mm_unpackhi_epi16) },
        { "punpckldq", { 0x66, 0x0F, 0x62, 0xC1 }, PI(_mm_unpacklo_epi32) }, { "punpckhqdq", { 0x66, 0x0F, 0x6D, 0xC1 }, PI(_mm_unpackhi_epi64) },
        { "packsswb", { 0x66, 0x0F, 0x63, 0xC1 }, PI(_mm_packs_epi16) }, { "packuswb", { 0x66, 0x0F, 0x67, 0xC1 }, PI(_mm_packus_epi16) },
        { "packssdw", { 0x66, 0x0F, 0x6B, 0xC1 }, PI(_mm_packs_epi32) },
        { "psrlw", { 0x66, 0x0F, 0xD1, 0xC1 }, PI(_mm_srl_epi16) }, { "psrad", { 0x66, 0x0F, 0xE2, 0xC1 }, PI(_mm_sra_epi32) },
        { "psllq", { 0x66, 0x0F, 0xF3, 0xC1 }, PI(_mm_sll_epi64) },
        { "addpd", { 0x66, 0x0F, 0x58, 0xC1 }, PD(_mm_add_pd) }, { "mulpd", { 0x66, 0x0F, 0x59, 0xC1 }, PD(_mm_mul_pd) },
        { "subsd", { 0xF2, 0x0F, 0x5C, 0xC1 }, PD(_mm_sub_sd) }, { "divsd", { 0xF2, 0x0F, 0x5E, 0xC1 }, PD(_mm_div_sd) },
        { "minsd", { 0xF2, 0x0F, 0x5D, 0xC1 }, PD(_mm_min_sd) }, { "maxpd", { 0x66, 0x0F, 0x5F, 0xC1 }, PD(_mm_max_pd) },
        { "addps", { 0x0F, 0x58, 0xC1 }, PS(_mm_add_ps) }, { "mulss", { 0xF3, 0x0F, 0x59, 0xC1 }, PS(_mm_mul_ss) },
        { "divps", { 0x0F, 0x5E, 0xC1 }, PS(_mm_div_ps) }, { "minps", { 0x0F, 0x5D, 0xC1 }, PS(_mm_min_ps) },
        { "xorpd", { 0x66, 0x0F, 0x57, 0xC1 }, PD(_mm_xor_pd) }, { "andnps", { 0x0F, 0x55, 0xC1 }, PS(_mm_andnot_ps) },
        { "unpcklpd", { 0x66, 0x0F, 0x14, 0xC1 }, PD(_mm_unpacklo_pd) }, { "unpckhps", { 0x0F, 0x15, 0xC1 }, PS(_mm_unpackhi_ps) },
        { "sqrtsd", { 0xF2, 0x0F, 0x51, 0xC1 }, [](__m128i a, __m128i b) { return _mm_castpd_si128(_mm_sqrt_sd(_mm_castsi128_pd(a), _mm_castsi128_pd(b))); } },
        { "cmpltpd", { 0x66, 0x0F, 0xC2, 0xC1, 0x01 }, PD(_mm_cmplt_pd) }, { "cmpneqss", { 0xF3, 0x0F, 0xC2, 0xC1, 0x04 }, PS(_mm_cmpneq_ss) },
        { "shufps", { 0x0F, 0xC6, 0xC1, 0x1B }, [](__m128i a, __m128i b) { return _mm_castps_si128(_mm_shuffle_ps(_mm_castsi128_ps(a), _mm_castsi128_ps(b), 0x1B)); } },
        { "pshufd", { 0x66, 0x0F, 0x70, 0xC1, 0x4E }, [](__m128i, __m128i b) { return _mm_shuffle_epi32(b, 0x4E); } },
        { "psrldq", { 0x66, 0x0F, 0x73, 0xD8, 0x03 }, [](__m128i a, __m128i) { return _mm_srli_si128(a, 3); } },
        { "pslld", { 0x66, 0x0F, 0x72, 0xF0, 0x05 }, [](__m128i a, __m128i) { return _mm_slli_epi32(a, 5); } },
        { "cvtsd2ss", { 0xF2, 0x0F, 0x5A, 0xC1 }, [](__m128i a, __m128i b) { return _mm_castps_si128(_mm_cvtsd_ss(_mm_castsi128_ps(a), _mm_castsi128_pd(b))); } },
        { "cvttpd2dq", { 0x66, 0x0F, 0xE6, 0xC1 }, [](__m128i, __m128i b) { return _mm_cvttpd_epi32(_mm_castsi128_pd(b)); } },
        { "cvtdq2pd", { 0xF3, 0x0F, 0xE6, 0xC1 }, [](__m128i, __m128i b) { return _mm_castpd_si128(_mm_cvtepi32_pd(b)); } },
        { "movss", { 0xF3, 0x0F, 0x10, 0xC1 }, PS(_mm_move_ss) }, { "movsd", { 0xF2, 0x0F, 0x10, 0xC1 }, PD(_mm_move_sd) },
    };
    Machine m;
    m.start(Mode::Long64, { 0xF4 });
    std::mt19937_64 rng(77);
    auto rnd_double = [&]() {
        double d = std::ldexp(double(int64_t(rng() % 2000000) - 1000000), int(rng() % 40) - 20);
        uint64_t u;
        std::memcpy(&u, &d, 8);
        return u;
    };
    for (auto const& c : cases) {
        for (int k = 0; k < 40; ++k) {
            std::array<uint64_t, 2> a { rng(), rng() }, b { rng(), rng() };
            if (k % 2) { a = { rnd_double(), rnd_double() }; b = { rnd_double(), rnd_double() }; }
            if (k % 4 == 3) { // floats: pairs of small floats
                for (auto* v : { &a, &b })
                    for (auto& q : *v) {
                        float f0 = float(int(rng() % 2000) - 1000) / 8, f1 = float(int(rng() % 2000) - 1000) / 16;
                        uint32_t u0, u1;
                        std::memcpy(&u0, &f0, 4);
                        std::memcpy(&u1, &f1, 4);
                        q = uint64_t(u1) << 32 | u0;
                    }
            }
            if (std::string(c.name).rfind("ps", 0) == 0 || std::string(c.name) == "psrlw" || std::string(c.name) == "psrad" || std::string(c.name) == "psllq")
                b[0] %= 70;
            auto expect = store(c.host(load(a), load(b)));
            std::vector<uint8_t> code = c.bytes;
            code.push_back(0xF4);
            m.write(kCode, code);
            CpuState s = m.cpu->state();
            s.rip = kCode;
            s.xmm[0] = a;
            s.xmm[1] = b;
            m.cpu->set_state(s);
            auto r = m.cpu->run(1);
            REQUIRE(r.instructions == 1);
            auto got = m.cpu->state().xmm[0];
            INFO(c.name << std::hex << " a=" << a[1] << ":" << a[0] << " b=" << b[1] << ":" << b[0]);
            CHECK(got == expect);
        }
    }
}

TEST_CASE("sse: UCOMISD flags, conversions to integers, memory moves and alignment", "[cpu][sse]")
{
    Machine m;
    auto run = [&](std::vector<uint8_t> code, std::array<uint64_t, 2> x0, std::array<uint64_t, 2> x1, uint64_t rax = 0) {
        code.push_back(0xF4);
        m.start(Mode::Long64, code);
        CpuState s = m.cpu->state();
        s.xmm[0] = x0;
        s.xmm[1] = x1;
        s.gpr[RAX] = rax;
        m.cpu->set_state(s);
        m.run();
        return m.cpu->state();
    };
    auto d = [](double v) { uint64_t u; std::memcpy(&u, &v, 8); return u; };
    // ucomisd xmm0, xmm1
    for (auto [x, y] : { std::pair { 1.0, 2.0 }, { 2.0, 1.0 }, { 3.0, 3.0 }, { NAN, 1.0 } }) {
        auto s = run({ 0x66, 0x0F, 0x2E, 0xC1 }, { d(x), 0 }, { d(y), 0 });
        uint64_t f;
        __m128d a = _mm_set_sd(x), b = _mm_set_sd(y);
        asm("ucomisd %2, %1; pushfq; pop %0" : "=r"(f) : "x"(a), "x"(b) : "cc");
        CHECK((s.rflags & 0x8D5) == (f & 0x8D5));
    }
    // cvttsd2si rax, xmm1 ; cvtsi2sd xmm0, rax
    auto s = run({ 0xF2, 0x48, 0x0F, 0x2C, 0xC1 }, { 0, 0 }, { d(-12345.75), 0 });
    CHECK(int64_t(s.gpr[RAX]) == -12345);
    s = run({ 0xF2, 0x48, 0x0F, 0x2C, 0xC1 }, { 0, 0 }, { d(1e300), 0 });
    CHECK(s.gpr[RAX] == 0x8000000000000000ull);
    s = run({ 0xF2, 0x48, 0x0F, 0x2A, 0xC0 }, { 0, 0 }, { 0, 0 }, uint64_t(-42));
    CHECK(s.xmm[0][0] == d(-42.0));
    // movdqu [kData+1], xmm1 ; movdqa xmm0, [kData+1] -> #GP (misaligned)
    std::vector<uint8_t> st = { 0xF3, 0x0F, 0x7F, 0x0C, 0x25, 0x01, 0x00, 0x02, 0x00 };
    s = run(st, { 0, 0 }, { 0x1111, 0x2222 });
    CHECK(m.get<uint64_t>(kData + 1) == 0x1111);
    CHECK(m.get<uint64_t>(kData + 9) == 0x2222);
    s = run({ 0x66, 0x0F, 0x6F, 0x04, 0x25, 0x01, 0x00, 0x02, 0x00 }, { 0, 0 }, { 0, 0 });
    CHECK(m.halted_vector() == 13);
    // movq rax, xmm1 (66 REX.W 0F 7E); pmovmskb eax, xmm1
    s = run({ 0x66, 0x48, 0x0F, 0x7E, 0xC8 }, { 0, 0 }, { 0x8877665544332211, 5 });
    CHECK(s.gpr[RAX] == 0x8877665544332211);
    s = run({ 0x66, 0x0F, 0xD7, 0xC1 }, { 0, 0 }, { 0x8000000000000080, 0x80 });
    CHECK(s.gpr[RAX] == 0x0181);
    // Without CR4.OSFXSR: #UD
    m.start(Mode::Long64, { 0x66, 0x0F, 0xEF, 0xC1 });
    CpuState t = m.cpu->state();
    t.cr4 &= ~0x200ull;
    m.cpu->set_state(t);
    m.run();
    CHECK(m.halted_vector() == 6);
}

TEST_CASE("sse: FXSAVE/FXRSTOR round-trip XMM, MXCSR and the x87 stack", "[cpu][sse][x87]")
{
    Machine m;
    // fninit; fld1; fldpi; fxsave [kData]; fninit; pxor xmm3, xmm3; fxrstor [kData]; fstp qword [kData+0x300]; hlt
    m.start(Mode::Long64, { 0xDB, 0xE3, 0xD9, 0xE8, 0xD9, 0xEB, 0x0F, 0xAE, 0x04, 0x25, 0x00, 0x00, 0x02, 0x00,
                              0xDB, 0xE3, 0x66, 0x0F, 0xEF, 0xDB, 0x0F, 0xAE, 0x0C, 0x25, 0x00, 0x00, 0x02, 0x00,
                              0xDD, 0x1C, 0x25, 0x00, 0x03, 0x02, 0x00, 0xF4 });
    CpuState s = m.cpu->state();
    s.xmm[3] = { 0x1111222233334444, 0x5555666677778888 };
    s.mxcsr = 0x1FA0;
    m.cpu->set_state(s);
    m.run();
    REQUIRE(m.halted_vector() < 0);
    auto o = m.cpu->state();
    CHECK(o.xmm[3] == s.xmm[3]);
    CHECK(o.mxcsr == 0x1FA0);
    CHECK(m.get<uint32_t>(kData + 24) == 0x1FA0);
    CHECK(m.get<uint16_t>(kData) == 0x37F);
    CHECK(m.get<uint8_t>(kData + 4) == 0xC0); // two valid registers (physical 6 and 7)
    CHECK(m.get<double>(kData + 0x300) == Approx(3.14159265358979));
}
