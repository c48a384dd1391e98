// Arithmetic flags against the host CPU: the same operation runs natively (inline asm with
// PUSHF) and in the interpreter, and result and every flag the APM defines for it must agree
// (APM vol 3 Appendix E). The host is x86-64, so its defined-flag semantics are the reference.
#include "tests/cpu/harness.h"

#include <random>

using namespace sevemu;
using namespace sevemu::cpu;
using namespace sevemu::cpu::test;

namespace {

constexpr uint64_t CF = 1, PF = 4, AF = 16, ZF = 64, SF = 128, OF = 2048;
constexpr uint64_t kAll = CF | PF | AF | ZF | SF | OF;

// Host: dst = dst OP src with flags in -> flags out. The stack is moved below the red zone.
#define HOST_BIN(NAME, MN)                                                                                          \
    template <int S> uint64_t NAME(uint64_t a, uint64_t b, uint64_t fin, uint64_t& fout)                              \
    {                                                                                                               \
        uint64_t f;                                                                                                 \
        if constexpr (S == 1)                                                                                       \
            asm volatile("sub $128, %%rsp; push %[fi]; popfq; " MN "b %b[b], %b[a]; pushfq; pop %[f]; add $128, %%rsp" \
                         : [a] "+r"(a), [f] "=&r"(f) : [b] "r"(b), [fi] "r"(fin) : "cc");                           \
        else if constexpr (S == 2)                                                                                  \
            asm volatile("sub $128, %%rsp; push %[fi]; popfq; " MN "w %w[b], %w[a]; pushfq; pop %[f]; add $128, %%rsp" \
                         : [a] "+r"(a), [f] "=&r"(f) : [b] "r"(b), [fi] "r"(fin) : "cc");                           \
        else if constexpr (S == 4)                                                                                  \
            asm volatile("sub $128, %%rsp; push %[fi]; popfq; " MN "l %k[b], %k[a]; pushfq; pop %[f]; add $128, %%rsp" \
                         : [a] "+r"(a), [f] "=&r"(f) : [b] "r"(b), [fi] "r"(fin) : "cc");                           \
        else                                                                                                        \
            asm volatile("sub $128, %%rsp; push %[fi]; popfq; " MN "q %q[b], %q[a]; pushfq; pop %[f]; add $128, %%rsp" \
                         : [a] "+r"(a), [f] "=&r"(f) : [b] "r"(b), [fi] "r"(fin) : "cc");                           \
        fout = f;                                                                                                   \
        return a;                                                                                                   \
    }
HOST_BIN(h_add, "add")
HOST_BIN(h_or, "or")
HOST_BIN(h_adc, "adc")
HOST_BIN(h_sbb, "sbb")
HOST_BIN(h_and, "and")
HOST_BIN(h_sub, "sub")
HOST_BIN(h_xor, "xor")
HOST_BIN(h_cmp, "cmp")
HOST_BIN(h_test, "test")

// Shifts/rotates by CL.
#define HOST_SH(NAME, MN)                                                                                          \
    template <int S> uint64_t NAME(uint64_t a, uint64_t b, uint64_t fin, uint64_t& fout)                              \
    {                                                                                                               \
        uint64_t f;                                                                                                 \
        if constexpr (S == 1)                                                                                       \
            asm volatile("sub $128, %%rsp; push %[fi]; popfq; " MN "b %%cl, %b[a]; pushfq; pop %[f]; add $128, %%rsp" \
                         : [a] "+r"(a), [f] "=&r"(f) : "c"(b), [fi] "r"(fin) : "cc");                               \
        else if constexpr (S == 2)                                                                                  \
            asm volatile("sub $128, %%rsp; push %[fi]; popfq; " MN "w %%cl, %w[a]; pushfq; pop %[f]; add $128, %%rsp" \
                         : [a] "+r"(a), [f] "=&r"(f) : "c"(b), [fi] "r"(fin) : "cc");                               \
        else if constexpr (S == 4)                                                                                  \
            asm volatile("sub $128, %%rsp; push %[fi]; popfq; " MN "l %%cl, %k[a]; pushfq; pop %[f]; add $128, %%rsp" \
                         : [a] "+r"(a), [f] "=&r"(f) : "c"(b), [fi] "r"(fin) : "cc");                               \
        else                                                                                                        \
            asm volatile("sub $128, %%rsp; push %[fi]; popfq; " MN "q %%cl, %q[a]; pushfq; pop %[f]; add $128, %%rsp" \
                         : [a] "+r"(a), [f] "=&r"(f) : "c"(b), [fi] "r"(fin) : "cc");                               \
        fout = f;                                                                                                   \
        return a;                                                                                                   \
    }
HOST_SH(h_rol, "rol")
HOST_SH(h_ror, "ror")
HOST_SH(h_rcl, "rcl")
HOST_SH(h_rcr, "rcr")
HOST_SH(h_shl, "shl")
HOST_SH(h_shr, "shr")
HOST_SH(h_sar, "sar")

// Unary.
#define HOST_UN(NAME, MN)                                                                                          \
    template <int S> uint64_t NAME(uint64_t a, uint64_t, uint64_t fin, uint64_t& fout)                                \
    {                                                                                                               \
        uint64_t f;                                                                                                 \
        if constexpr (S == 1)                                                                                       \
            asm volatile("sub $128, %%rsp; push %[fi]; popfq; " MN "b %b[a]; pushfq; pop %[f]; add $128, %%rsp"     \
                         : [a] "+r"(a), [f] "=&r"(f) : [fi] "r"(fin) : "cc");                                       \
        else if constexpr (S == 2)                                                                                  \
            asm volatile("sub $128, %%rsp; push %[fi]; popfq; " MN "w %w[a]; pushfq; pop %[f]; add $128, %%rsp"     \
                         : [a] "+r"(a), [f] "=&r"(f) : [fi] "r"(fin) : "cc");                                       \
        else if constexpr (S == 4)                                                                                  \
            asm volatile("sub $128, %%rsp; push %[fi]; popfq; " MN "l %k[a]; pushfq; pop %[f]; add $128, %%rsp"     \
                         : [a] "+r"(a), [f] "=&r"(f) : [fi] "r"(fin) : "cc");                                       \
        else                                                                                                        \
            asm volatile("sub $128, %%rsp; push %[fi]; popfq; " MN "q %q[a]; pushfq; pop %[f]; add $128, %%rsp"     \
                         : [a] "+r"(a), [f] "=&r"(f) : [fi] "r"(fin) : "cc");                                       \
        fout = f;                                                                                                   \
        return a;                                                                                                   \
    }
HOST_UN(h_inc, "inc")
HOST_UN(h_dec, "dec")
HOST_UN(h_neg, "neg")

template <int S> uint64_t h_imul2(uint64_t a, uint64_t b, uint64_t fin, uint64_t& fout)
{
    uint64_t f;
    if constexpr (S == 2)
        asm volatile("sub $128, %%rsp; push %[fi]; popfq; imulw %w[b], %w[a]; pushfq; pop %[f]; add $128, %%rsp"
                     : [a] "+r"(a), [f] "=&r"(f) : [b] "r"(b), [fi] "r"(fin) : "cc");
    else if constexpr (S == 4)
        asm volatile("sub $128, %%rsp; push %[fi]; popfq; imull %k[b], %k[a]; pushfq; pop %[f]; add $128, %%rsp"
                     : [a] "+r"(a), [f] "=&r"(f) : [b] "r"(b), [fi] "r"(fin) : "cc");
    else
        asm volatile("sub $128, %%rsp; push %[fi]; popfq; imulq %q[b], %q[a]; pushfq; pop %[f]; add $128, %%rsp"
                     : [a] "+r"(a), [f] "=&r"(f) : [b] "r"(b), [fi] "r"(fin) : "cc");
    fout = f;
    return a;
}

using HostFn = uint64_t (*)(uint64_t, uint64_t, uint64_t, uint64_t&);

struct Case {
    char const* name;
    std::vector<uint8_t> opcode; // without size prefixes: byte form opcode first, then word/dword form
    uint8_t modrm;               // dst = rax (rm 0), src = rcx (reg 1)
    HostFn host[4];
    uint64_t defined;            // flags the APM defines
    bool byte_form_differs;      // opcode[0] is the 8-bit form, opcode[1] the others
    bool shift;                  // count-dependent definedness
    bool writes_dst;
};

template <template <int> class F> struct Hs;

#define HOSTS(fn) { fn<1>, fn<2>, fn<4>, fn<8> }

uint64_t run_emulated(Machine& m, Case const& c, int size, uint64_t a, uint64_t b, uint64_t fin, uint64_t& fout)
{
    std::vector<uint8_t> code;
    if (size == 2) code.push_back(0x66);
    if (size == 8) code.push_back(0x48);
    code.push_back(size == 1 ? c.opcode[0] : c.opcode[1]);
    if (c.opcode.size() > 2) code.push_back(c.opcode[2]);
    code.push_back(c.modrm);
    code.push_back(0xF4);
    m.write(kCode, code);
    CpuState s = m.cpu->state();
    s.rip = kCode;
    s.gpr[RAX] = a;
    s.gpr[RCX] = b;
    s.rflags = fin;
    m.cpu->set_state(s);
    auto r = m.cpu->run(1);
    REQUIRE(r.instructions == 1);
    CpuState o = m.cpu->state();
    fout = o.rflags;
    return o.gpr[RAX];
}

std::vector<uint64_t> interesting(int size)
{
    uint64_t top = size == 8 ? ~0ull : (1ull << (8 * size)) - 1;
    uint64_t sign = 1ull << (8 * size - 1);
    return { 0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
             0x7FFFFFFFFFFFFFFFull, 0x8000000000000000ull, top, top - 1, sign, sign - 1, sign + 1, 0x0F, 0x10 };
}

} // namespace

TEST_CASE("cpu flags: ALU, shifts, unary and IMUL match the host CPU", "[cpu][flags]")
{
    std::vector<Case> cases = {
        { "add", { 0x00, 0x01 }, 0xC8, HOSTS(h_add), kAll, true, false, true },
        { "or", { 0x08, 0x09 }, 0xC8, HOSTS(h_or), kAll & ~AF, true, false, true },
        { "adc", { 0x10, 0x11 }, 0xC8, HOSTS(h_adc), kAll, true, false, true },
        { "sbb", { 0x18, 0x19 }, 0xC8, HOSTS(h_sbb), kAll, true, false, true },
        { "and", { 0x20, 0x21 }, 0xC8, HOSTS(h_and), kAll & ~AF, true, false, true },
        { "sub", { 0x28, 0x29 }, 0xC8, HOSTS(h_sub), kAll, true, false, true },
        { "xor", { 0x30, 0x31 }, 0xC8, HOSTS(h_xor), kAll & ~AF, true, false, true },
        { "cmp", { 0x38, 0x39 }, 0xC8, HOSTS(h_cmp), kAll, true, false, false },
        { "test", { 0x84, 0x85 }, 0xC8, HOSTS(h_test), kAll & ~AF, true, false, false },
        { "rol", { 0xD2, 0xD3 }, 0xC0, HOSTS(h_rol), CF | OF, true, true, true },
        { "ror", { 0xD2, 0xD3 }, 0xC8, HOSTS(h_ror), CF | OF, true, true, true },
        { "rcl", { 0xD2, 0xD3 }, 0xD0, HOSTS(h_rcl), CF | OF, true, true, true },
        { "rcr", { 0xD2, 0xD3 }, 0xD8, HOSTS(h_rcr), CF | OF, true, true, true },
        { "shl", { 0xD2, 0xD3 }, 0xE0, HOSTS(h_shl), kAll & ~AF, true, true, true },
        { "shr", { 0xD2, 0xD3 }, 0xE8, HOSTS(h_shr), kAll & ~AF, true, true, true },
        { "sar", { 0xD2, 0xD3 }, 0xF8, HOSTS(h_sar), kAll & ~AF, true, true, true },
        { "inc", { 0xFE, 0xFF }, 0xC0, HOSTS(h_inc), kAll, true, false, true },
        { "dec", { 0xFE, 0xFF }, 0xC8, HOSTS(h_dec), kAll, true, false, true },
        { "neg", { 0xF6, 0xF7 }, 0xD8, HOSTS(h_neg), kAll, true, false, true },
    };
    Machine m;
    m.start(Mode::Long64, { 0xF4 });
    std::mt19937_64 rng(1234);
    for (auto const& c : cases) {
        for (int si = 0; si < 4; ++si) {
            int size = 1 << si;
            uint64_t mask = size == 8 ? ~0ull : (1ull << (8 * size)) - 1;
            auto vals = interesting(size);
            for (int k = 0; k < 40; ++k)
                vals.push_back(rng());
            for (uint64_t a : vals) {
                for (uint64_t b : { vals[rng() % vals.size()], vals[rng() % vals.size()], uint64_t(1), uint64_t(rng() % 70) }) {
                    for (uint64_t fin : { uint64_t(0x202), uint64_t(0x202 | kAll) }) {
                        uint64_t hf = 0, ef = 0;
                        uint64_t hr = c.host[si](a, b, fin, hf);
                        uint64_t er = run_emulated(m, c, size, a, b, fin, ef);
                        uint64_t defined = c.defined;
                        if (c.shift) {
                            unsigned cnt = unsigned(b) & (size == 8 ? 63 : 31);
                            if (cnt == 0) defined = kAll; // flags unchanged
                            else if (cnt != 1) defined &= ~OF;
                            if ((c.modrm == 0xD0 || c.modrm == 0xD8 || c.modrm == 0xC0 || c.modrm == 0xC8) && cnt != 1)
                                defined &= ~OF;
                        }
                        INFO(c.name << " size " << size << " a=" << std::hex << a << " b=" << b << " fin=" << fin
                                    << " host r=" << hr << " f=" << hf << " emu r=" << er << " f=" << ef);
                        if (c.writes_dst)
                            CHECK((hr & mask) == (er & mask));
                        CHECK((hf & defined) == (ef & defined));
                    }
                }
            }
        }
    }
}

TEST_CASE("cpu flags: two-operand IMUL matches the host (CF/OF)", "[cpu][flags]")
{
    Machine m;
    m.start(Mode::Long64, { 0xF4 });
    std::mt19937_64 rng(99);
    HostFn host[4] = { nullptr, h_imul2<2>, h_imul2<4>, h_imul2<8> };
    for (int si = 1; si < 4; ++si) {
        int size = 1 << si;
        uint64_t mask = size == 8 ? ~0ull : (1ull << (8 * size)) - 1;
        for (int k = 0; k < 400; ++k) {
            uint64_t a = k < 200 ? rng() : rng() % 1000, b = k % 3 ? rng() : rng() % 100;
            uint64_t hf, ef;
            uint64_t hr = host[si](a, b, 0x202, hf);
            Case c { "imul", { 0x0F, 0x0F, 0xAF }, 0xC1, {}, 0, false, false, true };
            // imul rax, rcx: 0F AF /r with reg = rax (0), rm = rcx (1)
            uint64_t er = run_emulated(m, c, size, a, b, 0x202, ef);
            INFO("imul size " << size << std::hex << " a=" << a << " b=" << b);
            CHECK((hr & mask) == (er & mask));
            CHECK((hf & (CF | OF)) == (ef & (CF | OF)));
        }
    }
}
