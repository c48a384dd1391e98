// sevemu — integer instructions (APM vol 3 §3): ALU, shifts and rotates, multiply/divide,
// bit operations, data movement, stack, near branches, string instructions, BMI1/BMI2.
// Flags follow APM vol 3 Appendix E; "undefined" flags are left as the lazy evaluator
// produces them. Handlers are template <int S (bytes), int M (r/m is memory)>.
#include "cpu/ops.h"

#include <utility>

namespace sevemu::cpu {

namespace {

using namespace rflags;

// ---- operand helpers
template <int S, int M> inline U<S> rm_get(Core& c, Insn const& i)
{
    if constexpr (M)
        return c.rd<U<S>>(c.lin(i, S, false));
    else
        return c.getr<S>(i.rm);
}
template <int S, int M> inline void rm_set(Core& c, Insn const& i, uint64_t v)
{
    if constexpr (M)
        c.wr<U<S>>(c.lin(i, S, true), U<S>(v));
    else
        c.setr<S>(i.rm, v);
}
template <int S> constexpr uint64_t mask() { return S == 8 ? ~0ull : ((1ull << (S * 8)) - 1); }
template <int S> inline uint64_t sext(uint64_t v) { return uint64_t(int64_t(SI<S>(U<S>(v)))); }

inline void set_flag(Core& c, uint64_t f, bool v) { c.flags = v ? (c.flags | f) : (c.flags & ~f); }
inline void set_szp(Core& c, uint64_t res, int s)
{
    uint64_t f = c.flags & ~(ZF | SF | PF);
    uint64_t m = s == 8 ? ~0ull : ((1ull << (s * 8)) - 1);
    if ((res & m) == 0) f |= ZF;
    if ((res >> (s * 8 - 1)) & 1) f |= SF;
    if (!__builtin_parity(uint8_t(res))) f |= PF;
    c.flags = f;
}

enum { ADD, OR, ADC, SBB, AND, SUB, XOR, CMP };

template <int OP, int S> inline U<S> alu(Core& c, U<S> a, U<S> b)
{
    U<S> r;
    if constexpr (OP == ADD) { r = U<S>(a + b); c.set_lazy(LF_ADD, a, b, r, S); }
    else if constexpr (OP == OR) { r = a | b; c.set_lazy(LF_LOGIC, 0, 0, r, S); }
    else if constexpr (OP == ADC) { U<S> ci = c.get_cf(); r = U<S>(a + b + ci); c.set_lazy(LF_ADD, a, b, r, S); }
    else if constexpr (OP == SBB) { U<S> ci = c.get_cf(); r = U<S>(a - b - ci); c.set_lazy(LF_SUB, a, b, r, S); }
    else if constexpr (OP == AND) { r = a & b; c.set_lazy(LF_LOGIC, 0, 0, r, S); }
    else if constexpr (OP == XOR) { r = a ^ b; c.set_lazy(LF_LOGIC, 0, 0, r, S); }
    else { r = U<S>(a - b); c.set_lazy(LF_SUB, a, b, r, S); }
    return r;
}

template <int OP, int S, int M> void alu_EG(Core& c, Insn const& i)
{
    U<S> b = c.getr<S>(i.reg);
    if constexpr (M) {
        uint64_t a = c.lin(i, S, OP != CMP);
        U<S> r = alu<OP, S>(c, c.rd<U<S>>(a), b);
        if (OP != CMP) c.wr<U<S>>(a, r);
    } else {
        U<S> r = alu<OP, S>(c, c.getr<S>(i.rm), b);
        if (OP != CMP) c.setr<S>(i.rm, r);
    }
}
template <int OP, int S, int M> void alu_GE(Core& c, Insn const& i)
{
    U<S> r = alu<OP, S>(c, c.getr<S>(i.reg), rm_get<S, M>(c, i));
    if (OP != CMP) c.setr<S>(i.reg, r);
}
template <int OP, int S, int M> void alu_AI(Core& c, Insn const& i)
{
    U<S> r = alu<OP, S>(c, c.getr<S>(0), U<S>(i.imm));
    if (OP != CMP) c.setr<S>(0, r);
}
template <int OP, int S, int M> void alu_EI(Core& c, Insn const& i)
{
    if constexpr (M) {
        uint64_t a = c.lin(i, S, OP != CMP);
        U<S> r = alu<OP, S>(c, c.rd<U<S>>(a), U<S>(i.imm));
        if (OP != CMP) c.wr<U<S>>(a, r);
    } else {
        U<S> r = alu<OP, S>(c, c.getr<S>(i.rm), U<S>(i.imm));
        if (OP != CMP) c.setr<S>(i.rm, r);
    }
}
template <int S, int M> void test_EG(Core& c, Insn const& i) { c.set_lazy(LF_LOGIC, 0, 0, rm_get<S, M>(c, i) & c.getr<S>(i.reg), S); }
template <int S, int M> void test_EI(Core& c, Insn const& i) { c.set_lazy(LF_LOGIC, 0, 0, rm_get<S, M>(c, i) & U<S>(i.imm), S); }
template <int S, int M> void test_AI(Core& c, Insn const& i) { c.set_lazy(LF_LOGIC, 0, 0, c.getr<S>(0) & U<S>(i.imm), S); }

// ---- INC/DEC/NOT/NEG
template <int DEC, int S, int M> void incdec_E(Core& c, Insn const& i)
{
    bool cf = c.get_cf();
    uint64_t a = M ? c.lin(i, S, true) : 0;
    U<S> v = M ? c.rd<U<S>>(a) : c.getr<S>(i.rm);
    U<S> r = U<S>(DEC ? v - 1 : v + 1);
    if constexpr (M) c.wr<U<S>>(a, r); else c.setr<S>(i.rm, r);
    c.set_lazy(DEC ? LF_DEC : LF_INC, v, 1, r, S);
    c.lf_cf = cf;
}
template <int DEC, int S, int M> void incdec_R(Core& c, Insn const& i)
{
    bool cf = c.get_cf();
    U<S> v = c.getr<S>(i.reg);
    U<S> r = U<S>(DEC ? v - 1 : v + 1);
    c.setr<S>(i.reg, r);
    c.set_lazy(DEC ? LF_DEC : LF_INC, v, 1, r, S);
    c.lf_cf = cf;
}
template <int S, int M> void not_E(Core& c, Insn const& i)
{
    if constexpr (M) { uint64_t a = c.lin(i, S, true); c.wr<U<S>>(a, U<S>(~c.rd<U<S>>(a))); }
    else c.setr<S>(i.rm, U<S>(~c.getr<S>(i.rm)));
}
template <int S, int M> void neg_E(Core& c, Insn const& i)
{
    uint64_t a = M ? c.lin(i, S, true) : 0;
    U<S> v = M ? c.rd<U<S>>(a) : c.getr<S>(i.rm);
    U<S> r = U<S>(0 - v);
    if constexpr (M) c.wr<U<S>>(a, r); else c.setr<S>(i.rm, r);
    c.set_lazy(LF_SUB, 0, v, r, S);
}

// ---- MUL/IMUL/DIV/IDIV (APM vol 3 "MUL", "DIV": #DE on zero divisor or quotient overflow)
template <int S> inline void mul_flags(Core& c, bool over, uint64_t lo)
{
    c.set_lazy(LF_CFOF, 0, 0, U<S>(lo), S);
    c.lf_cf = uint8_t(over ? 3 : 0);
}
template <int S, int M> void mul_E(Core& c, Insn const& i)
{
    U<S> s = rm_get<S, M>(c, i);
    if constexpr (S == 1) {
        uint16_t r = uint16_t(uint8_t(c.r[RAX]) * s);
        c.setr<2>(0, r);
        mul_flags<1>(c, r >> 8, r);
    } else {
        unsigned __int128 r = (unsigned __int128)U<S>(c.r[RAX]) * s;
        U<S> lo = U<S>(r), hi = U<S>(r >> (S * 8));
        c.setr<S>(RAX * 8, lo);
        c.setr<S>(RDX * 8, hi);
        mul_flags<S>(c, hi != 0, lo);
    }
}
template <int S, int M> void imul1_E(Core& c, Insn const& i)
{
    SI<S> s = SI<S>(rm_get<S, M>(c, i));
    if constexpr (S == 1) {
        int16_t r = int16_t(int8_t(c.r[RAX]) * s);
        c.setr<2>(0, uint16_t(r));
        mul_flags<1>(c, r != int8_t(r), uint64_t(r));
    } else {
        __int128 r = (__int128)SI<S>(c.r[RAX]) * s;
        U<S> lo = U<S>(r), hi = U<S>(uint64_t(r >> (S * 8)));
        c.setr<S>(RAX * 8, lo);
        c.setr<S>(RDX * 8, hi);
        mul_flags<S>(c, r != __int128(SI<S>(lo)), lo);
    }
}
template <int S> inline void imul_into(Core& c, Insn const& i, SI<S> a, SI<S> b)
{
    __int128 r = (__int128)a * b;
    U<S> lo = U<S>(r);
    c.setr<S>(i.reg, lo);
    mul_flags<S>(c, r != __int128(SI<S>(lo)), lo);
}
template <int S, int M> void imul_GE(Core& c, Insn const& i) { imul_into<S>(c, i, SI<S>(c.getr<S>(i.reg)), SI<S>(rm_get<S, M>(c, i))); }
template <int S, int M> void imul_GEI(Core& c, Insn const& i) { imul_into<S>(c, i, SI<S>(rm_get<S, M>(c, i)), SI<S>(U<S>(i.imm))); }

template <int S, int M> void div_E(Core& c, Insn const& i)
{
    U<S> d = rm_get<S, M>(c, i);
    if (d == 0) c.raise(DE);
    if constexpr (S == 1) {
        uint16_t n = uint16_t(c.r[RAX]);
        uint16_t q = n / d;
        if (q > 0xFF) c.raise(DE);
        c.setr<2>(0, uint16_t((n % d) << 8 | q));
    } else {
        unsigned __int128 n = ((unsigned __int128)U<S>(c.r[RDX]) << (S * 8)) | U<S>(c.r[RAX]);
        unsigned __int128 q = n / d;
        if (q >> (S * 8)) c.raise(DE);
        c.setr<S>(RAX * 8, U<S>(q));
        c.setr<S>(RDX * 8, U<S>(n % d));
    }
}
template <int S, int M> void idiv_E(Core& c, Insn const& i)
{
    SI<S> d = SI<S>(rm_get<S, M>(c, i));
    if (d == 0) c.raise(DE);
    if constexpr (S == 1) {
        int16_t n = int16_t(c.r[RAX]);
        int q = n / d;
        if (q != int8_t(q)) c.raise(DE);
        c.setr<2>(0, uint16_t(uint8_t(n % d) << 8 | uint8_t(q)));
    } else {
        // The 2S-byte dividend DX:AX / EDX:EAX / RDX:RAX, sign-extended to 128 bits in unsigned
        // arithmetic (no signed shift or negation can overflow).
        constexpr unsigned kBits = 2 * S * 8;
        unsigned __int128 un = ((unsigned __int128)U<S>(c.r[RDX]) << (S * 8)) | U<S>(c.r[RAX]);
        unsigned __int128 const sign = (unsigned __int128)1 << (kBits - 1);
        if constexpr (kBits < 128)
            if (un & sign) un |= ~(unsigned __int128)0 << kBits;
        __int128 n = (__int128)un;
        // The most negative dividend divided by -1: the quotient 2^(kBits-1) never fits the
        // S-byte destination (APM vol 3 IDIV: #DE when the quotient is too large), and for
        // RDX:RAX the C++ division itself would overflow __int128.
        if (d == -1 && un == (~(unsigned __int128)0 << (kBits - 1))) c.raise(DE);
        __int128 q = n / d;
        if (q != __int128(SI<S>(q))) c.raise(DE);
        c.setr<S>(RAX * 8, U<S>(q));
        c.setr<S>(RDX * 8, U<S>(n % d));
    }
}

// ---- Shifts and rotates (group 2). A = op * 4 + count source (0: 1, 1: CL, 2: imm8).
template <int S> inline uint64_t shift_op(Core& c, unsigned op, uint64_t v, unsigned cnt)
{
    constexpr unsigned W = S * 8;
    constexpr uint64_t m = mask<S>();
    v &= m;
    cnt &= (S == 8 ? 63 : 31);
    if (cnt == 0) return v; // flags unaffected
    uint64_t r = v;
    bool cf = false, of = false;
    if (op >= 4) { // SHL/SAL, SHR, SAR: every arithmetic flag is written, so keep them lazy
        if (op == 5) {
            r = cnt < W ? v >> cnt : 0;
            cf = cnt <= W ? (v >> (cnt - 1)) & 1 : 0;
            of = (v >> (W - 1)) & 1;
        } else if (op == 7) {
            int64_t sv = int64_t(sext<S>(v));
            unsigned n = cnt < W ? cnt : W - 1;
            r = uint64_t(sv >> n) & m;
            cf = (uint64_t(sv >> (cnt < W ? cnt - 1 : W - 1))) & 1;
        } else {
            r = cnt < W ? (v << cnt) & m : 0;
            cf = cnt <= W ? (v >> (W - cnt)) & 1 : 0;
            of = ((r >> (W - 1)) & 1) ^ cf;
        }
        c.set_lazy(LF_CFOF, 0, 0, r, S);
        c.lf_cf = uint8_t(cf | (of << 1));
        return r;
    }
    c.materialize();
    switch (op) {
    case 0: { // ROL
        unsigned n = cnt % W;
        r = n ? ((v << n) | (v >> (W - n))) & m : v;
        cf = r & 1;
        of = ((r >> (W - 1)) & 1) ^ cf;
        break;
    }
    case 1: { // ROR
        unsigned n = cnt % W;
        r = n ? ((v >> n) | (v << (W - n))) & m : v;
        cf = (r >> (W - 1)) & 1;
        of = cf ^ ((r >> (W - 2)) & 1);
        break;
    }
    case 2: { // RCL through CF (W+1-bit rotate)
        unsigned n = cnt % (W + 1);
        bool c0 = c.flags & CF;
        unsigned __int128 x = ((unsigned __int128)c0 << W) | v;
        for (unsigned k = 0; k < n; ++k) x = ((x << 1) | (x >> W)) & (((unsigned __int128)1 << (W + 1)) - 1);
        r = uint64_t(x) & m;
        cf = (x >> W) & 1;
        if (n == 0) cf = c0;
        of = ((r >> (W - 1)) & 1) ^ cf;
        break;
    }
    case 3: { // RCR
        unsigned n = cnt % (W + 1);
        bool c0 = c.flags & CF;
        unsigned __int128 x = ((unsigned __int128)c0 << W) | v;
        for (unsigned k = 0; k < n; ++k) x = ((x >> 1) | ((x & 1) << W));
        r = uint64_t(x) & m;
        cf = (x >> W) & 1;
        if (n == 0) cf = c0;
        of = ((r >> (W - 1)) ^ (r >> (W - 2))) & 1;
        break;
    }
    }
    set_flag(c, CF, cf);
    set_flag(c, OF, of);
    return r;
}
template <int A, int S, int M> void shift_E(Core& c, Insn const& i)
{
    constexpr int CS = A & 3;
    unsigned cnt = CS == 0 ? 1 : CS == 1 ? unsigned(c.r[RCX] & 0xFF) : unsigned(i.imm);
    constexpr unsigned op = unsigned(A >> 2); // the group member, fixed at decode time
    if constexpr (M) {
        uint64_t a = c.lin(i, S, true);
        U<S> v = c.rd<U<S>>(a);
        c.wr<U<S>>(a, U<S>(shift_op<S>(c, op, v, cnt)));
    } else {
        c.setr<S>(i.rm, shift_op<S>(c, op, c.getr<S>(i.rm), cnt));
    }
}
// SHLD/SHRD: A = right*2 + (count in CL)
template <int A, int S, int M> void shxd(Core& c, Insn const& i)
{
    if constexpr (S == 1) { c.raise(UD); } else {
    constexpr unsigned W = S * 8;
    unsigned cnt = ((A & 1) ? unsigned(c.r[RCX]) : unsigned(i.imm)) & (S == 8 ? 63 : 31);
    uint64_t a = M ? c.lin(i, S, true) : 0;
    uint64_t d = M ? c.rd<U<S>>(a) : c.getr<S>(i.rm);
    uint64_t s = c.getr<S>(i.reg);
    // Count 0: no flags change, but a 32-bit register is still written (zero-extended).
    if (cnt == 0) { if (M) c.wr<U<S>>(a, U<S>(d)); else c.setr<S>(i.rm, d); return; }
    c.materialize();
    uint64_t r;
    bool cf;
    if (cnt > W) { // 16-bit operands with count 17..31: result undefined (AMD: as a 32-bit pattern)
        cnt -= W;
        std::swap(d, s);
    }
    if (!(A & 2)) {
        r = cnt == W ? s : ((d << cnt) | (s >> (W - cnt))) & mask<S>();
        cf = (d >> (W - cnt)) & 1;
    } else {
        r = cnt == W ? s : ((d >> cnt) | (s << (W - cnt))) & mask<S>();
        cf = (d >> (cnt - 1)) & 1;
    }
    set_szp(c, r, S);
    set_flag(c, CF, cf);
    set_flag(c, OF, ((r ^ d) >> (W - 1)) & 1);
    c.flags &= ~AF;
    if constexpr (M) c.wr<U<S>>(a, U<S>(r)); else c.setr<S>(i.rm, r);
    }
}

// ---- Bit test family. A: 0 BT, 1 BTS, 2 BTR, 3 BTC; +4: immediate form.
template <int A, int S, int M> void bt_op(Core& c, Insn const& i)
{
    if constexpr (S == 1) { c.raise(UD); } else {
    constexpr int OP = A & 3;
    constexpr unsigned W = S * 8;
    int64_t off = (A & 4) ? int64_t(i.imm & (W - 1)) : int64_t(sext<S>(c.getr<S>(i.reg)));
    c.materialize();
    if constexpr (M) {
        uint64_t ea = c.ea(i);
        int64_t word = (A & 4) ? 0 : (off >> (S == 8 ? 6 : S == 4 ? 5 : 4));
        ea = (ea + uint64_t(word * S)) & kAsizeMask[i.asize];
        unsigned bit = unsigned(off) & (W - 1);
        uint64_t a = c.seg_lin(i.seg, ea, S, OP != 0);
        U<S> v = c.rd<U<S>>(a);
        set_flag(c, CF, (v >> bit) & 1);
        if constexpr (OP == 1) c.wr<U<S>>(a, U<S>(v | (U<S>(1) << bit)));
        if constexpr (OP == 2) c.wr<U<S>>(a, U<S>(v & ~(U<S>(1) << bit)));
        if constexpr (OP == 3) c.wr<U<S>>(a, U<S>(v ^ (U<S>(1) << bit)));
    } else {
        unsigned bit = unsigned(off) & (W - 1);
        U<S> v = c.getr<S>(i.rm);
        set_flag(c, CF, (v >> bit) & 1);
        if constexpr (OP == 1) c.setr<S>(i.rm, U<S>(v | (U<S>(1) << bit)));
        if constexpr (OP == 2) c.setr<S>(i.rm, U<S>(v & ~(U<S>(1) << bit)));
        if constexpr (OP == 3) c.setr<S>(i.rm, U<S>(v ^ (U<S>(1) << bit)));
    }
    }
}
template <int S, int M> void bsf(Core& c, Insn const& i)
{
    U<S> v = rm_get<S, M>(c, i);
    c.materialize();
    set_flag(c, ZF, v == 0);
    if (v) c.setr<S>(i.reg, __builtin_ctzll(v));
}
template <int S, int M> void bsr(Core& c, Insn const& i)
{
    U<S> v = rm_get<S, M>(c, i);
    c.materialize();
    set_flag(c, ZF, v == 0);
    if (v) c.setr<S>(i.reg, 63 - __builtin_clzll(v));
}
template <int S, int M> void tzcnt(Core& c, Insn const& i)
{
    U<S> v = rm_get<S, M>(c, i);
    unsigned r = v ? __builtin_ctzll(v) : S * 8;
    c.materialize();
    set_flag(c, CF, v == 0);
    set_flag(c, ZF, r == 0);
    c.setr<S>(i.reg, r);
}
template <int S, int M> void lzcnt(Core& c, Insn const& i)
{
    U<S> v = rm_get<S, M>(c, i);
    unsigned r = v ? __builtin_clzll(v) - (64 - S * 8) : S * 8;
    c.materialize();
    set_flag(c, CF, v == 0);
    set_flag(c, ZF, r == 0);
    c.setr<S>(i.reg, r);
}
template <int S, int M> void popcnt(Core& c, Insn const& i)
{
    U<S> v = rm_get<S, M>(c, i);
    c.materialize();
    c.flags &= ~kArith;
    set_flag(c, ZF, v == 0);
    c.setr<S>(i.reg, __builtin_popcountll(v));
}
template <int S, int M> void bswap(Core& c, Insn const& i)
{
    if constexpr (S == 8) c.r[i.reg / 8] = __builtin_bswap64(c.r[i.reg / 8]);
    else if constexpr (S == 4) c.setr<4>(i.reg, __builtin_bswap32(uint32_t(c.r[i.reg / 8])));
    else c.setr<2>(i.reg, 0); // BSWAP r16 is undefined; AMD yields 0 (QUIRKS.md)
}

// ---- Data movement
template <int S, int M> void mov_EG(Core& c, Insn const& i) { rm_set<S, M>(c, i, c.getr<S>(i.reg)); }
template <int S, int M> void mov_GE(Core& c, Insn const& i) { c.setr<S>(i.reg, rm_get<S, M>(c, i)); }
template <int S, int M> void mov_EI(Core& c, Insn const& i) { rm_set<S, M>(c, i, i.imm); }
template <int S, int M> void mov_RI(Core& c, Insn const& i) { c.setr<S>(i.reg, i.imm); }
template <int S, int M> void mov_A_moffs(Core& c, Insn const& i)
{
    c.setr<S>(0, c.rd<U<S>>(c.seg_lin(i.seg, i.imm & kAsizeMask[i.asize], S, false)));
}
template <int S, int M> void mov_moffs_A(Core& c, Insn const& i)
{
    c.wr<U<S>>(c.seg_lin(i.seg, i.imm & kAsizeMask[i.asize], S, true), c.getr<S>(0));
}
template <int S, int M> void lea(Core& c, Insn const& i) { c.setr<S>(i.reg, c.ea(i)); }
template <int S, int M> void movzx_b(Core& c, Insn const& i) { c.setr<S>(i.reg, rm_get<1, M>(c, i)); }
template <int S, int M> void movzx_w(Core& c, Insn const& i) { c.setr<S>(i.reg, rm_get<2, M>(c, i)); }
template <int S, int M> void movsx_b(Core& c, Insn const& i) { c.setr<S>(i.reg, uint64_t(int64_t(int8_t(rm_get<1, M>(c, i))))); }
template <int S, int M> void movsx_w(Core& c, Insn const& i) { c.setr<S>(i.reg, uint64_t(int64_t(int16_t(rm_get<2, M>(c, i))))); }
template <int S, int M> void movsxd(Core& c, Insn const& i)
{
    if constexpr (S == 8) c.setr<8>(i.reg, uint64_t(int64_t(int32_t(rm_get<4, M>(c, i)))));
    else c.setr<S>(i.reg, rm_get<S, M>(c, i));
}
template <int S, int M> void xchg_EG(Core& c, Insn const& i)
{
    U<S> g = c.getr<S>(i.reg);
    if constexpr (M) {
        uint64_t a = c.lin(i, S, true);
        U<S> v = c.rd<U<S>>(a);
        c.wr<U<S>>(a, g);
        c.setr<S>(i.reg, v);
    } else {
        U<S> v = c.getr<S>(i.rm);
        c.setr<S>(i.rm, g);
        c.setr<S>(i.reg, v);
    }
}
template <int S, int M> void xchg_A(Core& c, Insn const& i)
{
    if (i.reg == 0)
        return; // 90: NOP (in 64-bit mode it does not zero-extend EAX; 48 90 is a NOP too)
    U<S> a = c.getr<S>(0), b = c.getr<S>(i.reg);
    c.setr<S>(0, b);
    c.setr<S>(i.reg, a);
}
template <int S, int M> void nop(Core&, Insn const&) {}
template <int S, int M> void cbw(Core& c, Insn const&)
{
    if constexpr (S == 2) c.setr<2>(0, uint16_t(int8_t(c.r[RAX])));
    else if constexpr (S == 4) c.setr<4>(0, uint32_t(int16_t(c.r[RAX])));
    else if constexpr (S == 8) c.r[RAX] = uint64_t(int64_t(int32_t(c.r[RAX])));
}
template <int S, int M> void cwd(Core& c, Insn const&)
{
    if constexpr (S > 1) c.setr<S>(RDX * 8, (c.getr<S>(0) >> (S * 8 - 1)) ? ~0ull : 0);
}
template <int CC, int S, int M> void setcc(Core& c, Insn const& i) { rm_set<1, M>(c, i, c.cond_c<CC>()); }
template <int CC, int S, int M> void cmovcc(Core& c, Insn const& i)
{
    U<S> v = rm_get<S, M>(c, i); // the source is read (and may fault) whatever the condition
    if (c.cond_c<CC>()) c.setr<S>(i.reg, v);
    else if constexpr (S == 4) c.setr<4>(i.reg, c.getr<4>(i.reg)); // 32-bit dest is zero-extended
}
template <int S, int M> void xadd(Core& c, Insn const& i)
{
    U<S> s = c.getr<S>(i.reg);
    if constexpr (M) {
        uint64_t a = c.lin(i, S, true);
        U<S> d = c.rd<U<S>>(a);
        U<S> r = alu<ADD, S>(c, d, s);
        c.wr<U<S>>(a, r);
        c.setr<S>(i.reg, d);
    } else {
        U<S> d = c.getr<S>(i.rm);
        U<S> r = alu<ADD, S>(c, d, s);
        c.setr<S>(i.reg, d);
        c.setr<S>(i.rm, r);
    }
}
template <int S, int M> void cmpxchg(Core& c, Insn const& i)
{
    U<S> acc = c.getr<S>(0);
    uint64_t a = M ? c.lin(i, S, true) : 0;
    U<S> d = M ? c.rd<U<S>>(a) : c.getr<S>(i.rm);
    alu<CMP, S>(c, acc, d);
    if (acc == d) {
        if constexpr (M) c.wr<U<S>>(a, c.getr<S>(i.reg)); else c.setr<S>(i.rm, c.getr<S>(i.reg));
    } else {
        if constexpr (M) c.wr<U<S>>(a, d); // the destination is always written (APM vol 3 CMPXCHG)
        c.setr<S>(0, d);
    }
}
template <int S, int M> void cmpxchg8b(Core& c, Insn const& i)
{
    c.materialize();
    if (S == 8) { // CMPXCHG16B: 16-byte aligned (APM vol 3)
        uint64_t a = c.lin(i, 16, true);
        if (a & 15) c.raise(GP, 0);
        uint64_t lo = c.rd<uint64_t>(a), hi = c.rd<uint64_t>(a + 8);
        if (lo == c.r[RAX] && hi == c.r[RDX]) {
            c.wr<uint64_t>(a, c.r[RBX]);
            c.wr<uint64_t>(a + 8, c.r[RCX]);
            c.flags |= ZF;
        } else {
            c.wr<uint64_t>(a, lo);
            c.wr<uint64_t>(a + 8, hi);
            c.r[RAX] = lo;
            c.r[RDX] = hi;
            c.flags &= ~ZF;
        }
    } else {
        uint64_t a = c.lin(i, 8, true);
        uint64_t v = c.rd<uint64_t>(a);
        uint64_t cmp = (uint64_t(uint32_t(c.r[RDX])) << 32) | uint32_t(c.r[RAX]);
        if (v == cmp) {
            c.wr<uint64_t>(a, (uint64_t(uint32_t(c.r[RCX])) << 32) | uint32_t(c.r[RBX]));
            c.flags |= ZF;
        } else {
            c.wr<uint64_t>(a, v);
            c.r[RAX] = uint32_t(v);
            c.r[RDX] = v >> 32;
            c.flags &= ~ZF;
        }
    }
}
template <int S, int M> void movbe_GM(Core& c, Insn const& i)
{
    if constexpr (S == 1) c.raise(UD);
    else if constexpr (S == 2) c.setr<2>(i.reg, __builtin_bswap16(rm_get<2, 1>(c, i)));
    else if constexpr (S == 4) c.setr<4>(i.reg, __builtin_bswap32(rm_get<4, 1>(c, i)));
    else c.setr<8>(i.reg, __builtin_bswap64(rm_get<8, 1>(c, i)));
}
template <int S, int M> void movbe_MG(Core& c, Insn const& i)
{
    if constexpr (S == 1) c.raise(UD);
    else if constexpr (S == 2) rm_set<2, 1>(c, i, __builtin_bswap16(c.getr<2>(i.reg)));
    else if constexpr (S == 4) rm_set<4, 1>(c, i, __builtin_bswap32(c.getr<4>(i.reg)));
    else rm_set<8, 1>(c, i, __builtin_bswap64(c.getr<8>(i.reg)));
}
template <int S, int M> void lahf(Core& c, Insn const&)
{
    c.setr<1>(RAX * 8 + 1, (c.get_rflags() & 0xD5) | 2);
}
template <int S, int M> void sahf(Core& c, Insn const&)
{
    c.materialize();
    c.flags = (c.flags & ~uint64_t(0xD5)) | (uint8_t(c.r[RAX] >> 8) & 0xD5) | 2;
}
template <int F, int S, int M> void flagop(Core& c, Insn const&)
{
    c.materialize();
    switch (F) {
    case 0: c.flags &= ~CF; break;
    case 1: c.flags |= CF; break;
    case 2: c.flags ^= CF; break;
    case 3: c.flags &= ~DF; break;
    case 4: c.flags |= DF; break;
    }
}
template <int S, int M> void xlat(Core& c, Insn const& i)
{
    uint64_t ea = (c.r[RBX] + uint8_t(c.r[RAX])) & kAsizeMask[i.asize];
    c.setr<1>(0, c.rd<uint8_t>(c.seg_lin(i.seg, ea, 1, false)));
}

// ---- Stack
template <int S, int M> void push_R(Core& c, Insn const& i) { c.push<S>(c.getr<S>(i.reg)); }
template <int S, int M> void pop_R(Core& c, Insn const& i)
{
    U<S> v = c.pop<S>();
    c.setr<S>(i.reg, v);
}
template <int S, int M> void push_I(Core& c, Insn const& i) { c.push<S>(i.imm); }
template <int S, int M> void push_E(Core& c, Insn const& i) { c.push<S>(rm_get<S, M>(c, i)); }
template <int S, int M> void pop_E(Core& c, Insn const& i)
{
    // The ESP used for the address is the incremented one (APM vol 3 POP).
    uint64_t save = c.r[RSP];
    U<S> v = c.pop<S>();
    try {
        rm_set<S, M>(c, i, v);
    } catch (...) {
        c.r[RSP] = save;
        throw;
    }
}
template <int S, int M> void pusha(Core& c, Insn const&)
{
    uint64_t sp = c.r[RSP];
    for (int k = 0; k < 8; ++k) c.push<S>(k == RSP ? sp : c.r[k]);
}
template <int S, int M> void popa(Core& c, Insn const&)
{
    for (int k = 7; k >= 0; --k) {
        U<S> v = c.pop<S>();
        if (k != RSP) c.setr<S>(k * 8, v);
    }
}
// ENTER and LEAVE are restartable: every stack access happens before RSP and RBP are written, so
// a #PF or #SS part-way leaves them as they were (the fault's frame then names the instruction
// with the registers it started with; tests/cpu/fuzz_test.cpp checks this).
template <int S, int M> void enter(Core& c, Insn const& i)
{
    unsigned level = i.imm2 & 31;
    uint64_t const m = c.stack_mask();
    uint64_t sp = c.r[RSP] & m;
    auto push = [&](uint64_t v) {
        sp = (sp - S) & m;
        c.wr<U<S>>(c.seg_lin(SS, sp, S, true), U<S>(v));
    };
    push(c.r[RBP]);
    uint64_t const frame = sp;
    for (unsigned k = 1; k < level; ++k) {
        uint64_t bp = (c.r[RBP] - k * S) & m;
        push(c.rd<U<S>>(c.seg_lin(SS, bp, S, false)));
    }
    if (level) push(frame);
    sp = (sp - uint16_t(i.imm)) & m;
    c.setr<S>(RBP * 8, frame);
    c.r[RSP] = (c.r[RSP] & ~m) | sp;
}
template <int S, int M> void leave(Core& c, Insn const&)
{
    uint64_t const m = c.stack_mask();
    uint64_t const sp = c.r[RBP] & m;
    U<S> v = c.rd<U<S>>(c.seg_lin(SS, sp, S, false));
    c.r[RSP] = (c.r[RSP] & ~m) | ((sp + S) & m);
    c.setr<S>(RBP * 8, v);
}

// ---- Near branches (targets truncated to the operand size, APM vol 3 JMP/CALL/Jcc). In 64-bit
// mode a non-canonical target is #GP(0) at the branch itself, before anything changes (the
// pushed RIP names the branch; APM vol 2 §8.4 "#GP ... non-canonical"), so CALL, RET and LOOP
// check the target before they push, pop or count.
template <int S> inline void check_target(Core& c, uint64_t target)
{
    uint64_t t = target & mask<S>();
    if (c.mode64 && uint64_t(int64_t(t << 16) >> 16) != t) c.raise(GP, 0);
}
template <int S> inline void go(Core& c, uint64_t target)
{
    check_target<S>(c, target);
    c.r[kRegNext] = target & mask<S>();
    c.brk = true;
}
template <int CC, int S, int M> void jcc(Core& c, Insn const& i)
{
    if (c.cond_c<CC>()) go<S>(c, c.r[kRegNext] + i.imm);
}
template <int S, int M> void jmp_J(Core& c, Insn const& i) { go<S>(c, c.r[kRegNext] + i.imm); }
template <int S, int M> void call_J(Core& c, Insn const& i)
{
    check_target<S>(c, c.r[kRegNext] + i.imm);
    c.push<S>(c.r[kRegNext]);
    go<S>(c, c.r[kRegNext] + i.imm);
}
template <int S, int M> void jmp_E(Core& c, Insn const& i) { go<S>(c, rm_get<S, M>(c, i)); }
template <int S, int M> void call_E(Core& c, Insn const& i)
{
    U<S> t = rm_get<S, M>(c, i);
    check_target<S>(c, t);
    c.push<S>(c.r[kRegNext]);
    go<S>(c, t);
}
template <int S, int M> void ret(Core& c, Insn const& i)
{
    uint64_t const m = c.stack_mask();
    uint64_t const sp = c.r[RSP] & m;
    U<S> t = c.rd<U<S>>(c.seg_lin(SS, sp, S, false));
    check_target<S>(c, t);
    c.r[RSP] = (c.r[RSP] & ~m) | ((sp + S + uint16_t(i.imm)) & m);
    go<S>(c, t);
}
template <int K, int S, int M> void loop(Core& c, Insn const& i)
{
    uint64_t am = kAsizeMask[i.asize];
    bool take;
    if constexpr (K == 3) {
        take = (c.r[RCX] & am) == 0; // JrCXZ
    } else {
        uint64_t n = (c.r[RCX] - 1) & am;
        take = n != 0;
        if (K == 0) take = take && !c.get_zf(); // LOOPNE
        if (K == 1) take = take && c.get_zf();  // LOOPE
        if (take) check_target<S>(c, c.r[kRegNext] + i.imm);
        c.r[RCX] = i.asize == 1 ? n : (c.r[RCX] & ~am) | n;
    }
    if (take) go<S>(c, c.r[kRegNext] + i.imm);
}

// ---- String instructions (APM vol 3 §3 MOVS/STOS/...; REP semantics vol 3 §1.2.6). A REP
// runs at most kRepChunk iterations per execution and then re-executes itself, so that
// interrupts and the instruction limit stay responsive; architecturally identical.
constexpr uint64_t kRepChunk = 16384;

inline void adv(Core& c, unsigned reg, int64_t d, uint8_t asize)
{
    uint64_t m = kAsizeMask[asize];
    uint64_t v = (c.r[reg] + uint64_t(d)) & m;
    c.r[reg] = asize == 1 ? v : (c.r[reg] & ~m) | v;
}
// REP MOVS/STOS fast path: whole runs inside one page pair go through the TLB's host pointers
// with memcpy/memset. Only forward, non-overlapping, flat (64-bit or 0-based 4 GiB segments);
// anything else (and every TLB miss) takes the element loop, which fills the TLB.
inline bool flat(Core const& c, unsigned s)
{
    return c.mode64 || (c.seg_base[s] == 0 && c.seg_lo[s] == 0 && c.seg_hi[s] == 0xFFFFFFFF && c.seg_acc[s] == 3);
}
template <int K, int S> uint64_t rep_fast(Core& c, Insn const& i, uint64_t n)
{
    uint64_t am = kAsizeMask[i.asize];
    uint64_t di = c.r[RDI] & am, si = c.r[RSI] & am;
    uint64_t dl = c.mode64 ? di : uint32_t(di), sl = c.mode64 ? (si + c.seg_base[i.seg]) : uint32_t(si);
    uint64_t cnt = std::min<uint64_t>(n, (0x1000 - (dl & 0xFFF)) / S);
    if (K == 0) cnt = std::min<uint64_t>(cnt, (0x1000 - (sl & 0xFFF)) / S);
    if (i.asize != 2) { // no wrap of the address-size register inside the run
        cnt = std::min<uint64_t>(cnt, (am - di) / S + 1);
        if (K == 0) cnt = std::min<uint64_t>(cnt, (am - si) / S + 1);
    }
    if (cnt < 2) return 0;
    // Host pointers: from the TLB, or from a translation (which may fault: nothing is written
    // yet). A generation change means a page pointer went away meanwhile: take the slow path.
    uint64_t gen = c.mc.generation();
    auto& de = c.tlb->entry(c.bank, dl);
    uint8_t* dbase = de.tag_write == (dl >> 12) ? de.host : nullptr;
    if (!dbase) {
        auto x = c.translate(dl, true, false);
        if (!x.host || c.is_code_page(x.spa >> 12)) return 0;
        dbase = x.host;
    }
    uint8_t* dp = dbase + (dl & 0xFFF);
    if constexpr (K == 0) {
        auto& se = c.tlb->entry(c.bank, sl);
        uint8_t const* sbase = se.tag_read == (sl >> 12) ? se.host : nullptr;
        if (!sbase) {
            auto x = c.translate(sl, false, false);
            if (!x.host) return 0;
            sbase = x.host;
        }
        if (c.mc.generation() != gen) return 0;
        uint8_t const* sp = sbase + (sl & 0xFFF);
        if (dp < sp + cnt * S && sp < dp + cnt * S) return 0; // overlap: element semantics
        std::memcpy(dp, sp, cnt * S);
    } else if constexpr (S == 1) {
        std::memset(dp, uint8_t(c.r[RAX]), cnt);
    } else {
        U<S> v = U<S>(c.r[RAX]);
        for (uint64_t k = 0; k < cnt; ++k) std::memcpy(dp + k * S, &v, S);
    }
    auto upd = [&](unsigned reg, uint64_t v) { c.r[reg] = i.asize == 1 ? (v & am) : (c.r[reg] & ~am) | (v & am); };
    upd(RDI, di + cnt * S);
    if (K == 0) upd(RSI, si + cnt * S);
    upd(RCX, (c.r[RCX] & am) - cnt);
    return cnt;
}

template <int K, int S, int M> void string_op(Core& c, Insn const& i)
{
    // K: 0 MOVS, 1 STOS, 2 LODS, 3 CMPS, 4 SCAS
    uint64_t am = kAsizeMask[i.asize];
    bool rep = i.pfx & (kPfxRep | kPfxRepne);
    int64_t d = (c.flags & DF) ? -S : S;
    uint64_t n = rep ? (c.r[RCX] & am) : 1;
    if (n == 0) return;
    uint64_t todo = n > kRepChunk ? kRepChunk : n;
    if ((K == 0 || K == 1) && rep && d > 0 && flat(c, ES) && (K == 1 || flat(c, i.seg))) {
        uint64_t budget = 1u << 20; // bytes per execution, then re-execute (interrupt window)
        for (;;) {
            uint64_t left = c.r[RCX] & am;
            if (left == 0) return;
            uint64_t done = rep_fast<K, S>(c, i, left);
            if (done == 0) { // one element the slow way (it fills the TLB for the next run)
                if constexpr (K == 0) {
                    U<S> v = c.rd<U<S>>(c.seg_lin(i.seg, c.r[RSI] & am, S, false));
                    c.wr<U<S>>(c.seg_lin(ES, c.r[RDI] & am, S, true), v);
                    adv(c, RSI, d, i.asize);
                } else {
                    c.wr<U<S>>(c.seg_lin(ES, c.r[RDI] & am, S, true), c.getr<S>(0));
                }
                adv(c, RDI, d, i.asize);
                adv(c, RCX, -1, i.asize);
                done = 1;
            }
            if (done * S >= budget) {
                if (c.r[RCX] & am) { c.r[kRegNext] = c.rip; c.brk = true; }
                return;
            }
            budget -= done * S;
        }
    }
    for (uint64_t k = 0; k < todo; ++k) {
        if constexpr (K == 0) {
            U<S> v = c.rd<U<S>>(c.seg_lin(i.seg, c.r[RSI] & am, S, false));
            c.wr<U<S>>(c.seg_lin(ES, c.r[RDI] & am, S, true), v);
            adv(c, RSI, d, i.asize);
            adv(c, RDI, d, i.asize);
        } else if constexpr (K == 1) {
            c.wr<U<S>>(c.seg_lin(ES, c.r[RDI] & am, S, true), c.getr<S>(0));
            adv(c, RDI, d, i.asize);
        } else if constexpr (K == 2) {
            c.setr<S>(0, c.rd<U<S>>(c.seg_lin(i.seg, c.r[RSI] & am, S, false)));
            adv(c, RSI, d, i.asize);
        } else if constexpr (K == 3) {
            U<S> a = c.rd<U<S>>(c.seg_lin(i.seg, c.r[RSI] & am, S, false));
            U<S> b = c.rd<U<S>>(c.seg_lin(ES, c.r[RDI] & am, S, false));
            alu<CMP, S>(c, a, b);
            adv(c, RSI, d, i.asize);
            adv(c, RDI, d, i.asize);
        } else {
            U<S> b = c.rd<U<S>>(c.seg_lin(ES, c.r[RDI] & am, S, false));
            alu<CMP, S>(c, c.getr<S>(0), b);
            adv(c, RDI, d, i.asize);
        }
        if (rep) {
            adv(c, RCX, -1, i.asize);
            if constexpr (K == 3 || K == 4) {
                bool z = c.get_zf();
                if ((i.pfx & kPfxRep) ? !z : z) return;
            }
        }
    }
    if (rep && (c.r[RCX] & am) != 0) {
        c.r[kRegNext] = c.rip; // continue on the next execution
        c.brk = true;
    }
}

// ---- BMI1/BMI2 (APM vol 3 §3: ANDN, BEXTR, BLSI, BLSMSK, BLSR, BZHI, MULX, PDEP, PEXT, RORX,
// SARX/SHLX/SHRX). VEX.vvvv is Insn::vreg.
template <int S> inline void logic_flags(Core& c, uint64_t r)
{
    c.materialize();
    c.flags &= ~(CF | OF);
    set_szp(c, r, S);
}
template <int S, int M> void andn(Core& c, Insn const& i)
{
    U<S> r = U<S>(~c.getr<S>(i.vreg) & rm_get<S, M>(c, i));
    c.setr<S>(i.reg, r);
    logic_flags<S>(c, r);
}
template <int S, int M> void bextr(Core& c, Insn const& i)
{
    U<S> src = rm_get<S, M>(c, i);
    uint64_t ctl = c.getr<S>(i.vreg);
    unsigned start = ctl & 0xFF, len = (ctl >> 8) & 0xFF;
    uint64_t r = start < S * 8 ? uint64_t(src) >> start : 0;
    if (len < 64) r &= (1ull << len) - 1;
    c.setr<S>(i.reg, r);
    c.materialize();
    c.flags &= ~(CF | OF);
    set_flag(c, ZF, (r & mask<S>()) == 0);
}
template <int K, int S, int M> void blsx(Core& c, Insn const& i)
{
    U<S> s = rm_get<S, M>(c, i);
    U<S> r = K == 1 ? U<S>(s ^ (s - 1)) : K == 2 ? U<S>(s & (s - 1)) : U<S>(s & (0 - s));
    c.setr<S>(i.vreg, r);
    c.materialize();
    set_szp(c, r, S);
    set_flag(c, OF, false);
    set_flag(c, CF, K == 3 ? s != 0 : s == 0);
}
template <int S, int M> void bzhi(Core& c, Insn const& i)
{
    U<S> s = rm_get<S, M>(c, i);
    unsigned n = c.getr<S>(i.vreg) & 0xFF;
    U<S> r = n < S * 8 ? U<S>(s & ((U<S>(1) << n) - 1)) : s;
    c.setr<S>(i.reg, r);
    c.materialize();
    set_szp(c, r, S);
    set_flag(c, OF, false);
    set_flag(c, CF, n > S * 8 - 1);
}
template <int K, int S, int M> void pdep_pext(Core& c, Insn const& i)
{
    uint64_t src = c.getr<S>(i.vreg), m = rm_get<S, M>(c, i), r = 0;
    if (K == 0) { // PDEP
        for (uint64_t b = 1; m; m &= m - 1, b <<= 1)
            if (src & b) r |= m & (0 - m);
    } else {
        for (uint64_t b = 1; m; m &= m - 1, b <<= 1)
            if (src & m & (0 - m)) r |= b;
    }
    c.setr<S>(i.reg, r);
}
template <int S, int M> void mulx(Core& c, Insn const& i)
{
    unsigned __int128 p = (unsigned __int128)U<S>(c.r[RDX]) * rm_get<S, M>(c, i);
    U<S> lo = U<S>(p), hi = U<S>(p >> (S * 8));
    c.setr<S>(i.vreg, lo);
    c.setr<S>(i.reg, hi);
}
template <int S, int M> void rorx(Core& c, Insn const& i)
{
    U<S> v = rm_get<S, M>(c, i);
    unsigned n = unsigned(i.imm) & (S * 8 - 1);
    c.setr<S>(i.reg, n ? U<S>((v >> n) | (v << (S * 8 - n))) : v);
}
template <int K, int S, int M> void shiftx(Core& c, Insn const& i)
{
    U<S> v = rm_get<S, M>(c, i);
    unsigned n = c.getr<S>(i.vreg) & (S * 8 - 1);
    uint64_t r = K == 0 ? uint64_t(v) << n : K == 1 ? uint64_t(sext<S>(v) >> n) : uint64_t(v) >> n;
    if (K == 1) r = uint64_t(int64_t(sext<S>(v)) >> n);
    c.setr<S>(i.reg, r);
}

// ---- BCD adjust (APM vol 3 DAA/DAS/AAA/AAS/AAM/AAD; invalid in 64-bit mode)
template <int K, int S, int M> void bcd(Core& c, Insn const& i)
{
    c.materialize();
    uint8_t al = uint8_t(c.r[RAX]);
    bool cf = c.flags & CF, af = c.flags & AF;
    switch (K) {
    case 0: { // DAA
        uint8_t old = al;
        bool ncf = false;
        if ((al & 0xF) > 9 || af) { al = uint8_t(al + 6); ncf = cf || old > 0xF9; af = true; } else af = false;
        if (old > 0x99 || cf) { al = uint8_t(al + 0x60); ncf = true; }
        cf = ncf;
        c.setr<1>(0, al);
        set_szp(c, al, 1);
        break;
    }
    case 1: { // DAS
        uint8_t old = al;
        bool ncf = false;
        if ((al & 0xF) > 9 || af) { al = uint8_t(al - 6); ncf = cf || old < 6; af = true; } else af = false;
        if (old > 0x99 || cf) { al = uint8_t(al - 0x60); ncf = true; }
        cf = ncf;
        c.setr<1>(0, al);
        set_szp(c, al, 1);
        break;
    }
    case 2: case 3: { // AAA / AAS
        uint16_t ax = uint16_t(c.r[RAX]);
        if ((al & 0xF) > 9 || af) {
            ax = K == 2 ? uint16_t(ax + 0x106) : uint16_t(((ax - 6) & 0xFF) | ((ax - 0x100) & 0xFF00));
            af = cf = true;
        } else {
            af = cf = false;
        }
        c.setr<2>(0, ax & 0xFF0F);
        break;
    }
    case 4: { // AAM imm8
        uint8_t base = uint8_t(i.imm);
        if (base == 0) c.raise(DE);
        c.setr<2>(0, uint16_t(((al / base) << 8) | (al % base)));
        set_szp(c, al % base, 1);
        return;
    }
    case 5: { // AAD imm8
        uint8_t r = uint8_t(al + uint8_t(c.r[RAX] >> 8) * uint8_t(i.imm));
        c.setr<2>(0, r);
        set_szp(c, r, 1);
        return;
    }
    }
    set_flag(c, CF, cf);
    set_flag(c, AF, af);
}
template <int S, int M> void salc(Core& c, Insn const&) { c.setr<1>(0, c.get_cf() ? 0xFF : 0); }

} // namespace

void register_int_ops(OpTables& t)
{
    auto& p = t.map[kMapPrimary];
    auto& x = t.map[kMap0F];
    constexpr uint16_t MB = kModrm | kByte, MV = kModrm;
    // ALU block 00-3F
    static char const* const kAlu[] = { "add", "or", "adc", "sbb", "and", "sub", "xor", "cmp" };
#define ALU_ROW(OPN)                                                                  \
    set_op(p[OPN * 8 + 0], kAlu[OPN], MB, Imm::None, SEVEMU_HA(alu_EG, OPN));          \
    set_op(p[OPN * 8 + 1], kAlu[OPN], MV, Imm::None, SEVEMU_HA(alu_EG, OPN));          \
    set_op(p[OPN * 8 + 2], kAlu[OPN], MB, Imm::None, SEVEMU_HA(alu_GE, OPN));          \
    set_op(p[OPN * 8 + 3], kAlu[OPN], MV, Imm::None, SEVEMU_HA(alu_GE, OPN));          \
    set_op(p[OPN * 8 + 4], kAlu[OPN], kByte, Imm::B, SEVEMU_HA(alu_AI, OPN));          \
    set_op(p[OPN * 8 + 5], kAlu[OPN], 0, Imm::Z, SEVEMU_HA(alu_AI, OPN));              \
    set_op(t.grp[0][OPN], kAlu[OPN], 0, Imm::None, SEVEMU_HA(alu_EI, OPN));
    ALU_ROW(0) ALU_ROW(1) ALU_ROW(2) ALU_ROW(3) ALU_ROW(4) ALU_ROW(5) ALU_ROW(6) ALU_ROW(7)
#undef ALU_ROW
    // Group 1: 80 Eb,Ib; 81 Ev,Iz; 82 (inv64) Eb,Ib; 83 Ev,Ib(sign-extended)
    p[0x80] = { "grp1", kByte, Imm::B, 0 };
    p[0x81] = { "grp1", 0, Imm::Z, 0 };
    p[0x82] = { "grp1", kByte | kInv64, Imm::B, 0 };
    p[0x83] = { "grp1", 0, Imm::SB, 0 };

    for (int r = 0; r < 8; ++r) {
        set_op(p[0x40 + r], "inc", kInv64, Imm::None, SEVEMU_HA(incdec_R, 0));
        set_op(p[0x48 + r], "dec", kInv64, Imm::None, SEVEMU_HA(incdec_R, 1));
        set_op(p[0x50 + r], "push", kDef64, Imm::None, SEVEMU_H(push_R));
        set_op(p[0x58 + r], "pop", kDef64, Imm::None, SEVEMU_H(pop_R));
        set_op(p[0x90 + r], r ? "xchg" : "nop", 0, Imm::None, SEVEMU_H(xchg_A));
        set_op(p[0xB0 + r], "mov", kByte, Imm::B, SEVEMU_H(mov_RI));
        set_op(p[0xB8 + r], "mov", 0, Imm::V, SEVEMU_H(mov_RI));
        set_op(x[0xC8 + r], "bswap", 0, Imm::None, SEVEMU_H(bswap));
    }
    // One handler per condition (cond_c<CC>).
    [&]<int... CC>(std::integer_sequence<int, CC...>) {
        ((set_op(p[0x70 + CC], "jcc", kDef64, Imm::Jb, SEVEMU_HA(jcc, CC)),
          set_op(x[0x80 + CC], "jcc", kDef64, Imm::Jz, SEVEMU_HA(jcc, CC)),
          set_op(x[0x90 + CC], "setcc", kModrm | kByte, Imm::None, SEVEMU_HA(setcc, CC)),
          set_op(x[0x40 + CC], "cmovcc", kModrm, Imm::None, SEVEMU_HA(cmovcc, CC))), ...);
    }(std::make_integer_sequence<int, 16> {});
    set_op(p[0x60], "pusha", kInv64, Imm::None, SEVEMU_H(pusha));
    set_op(p[0x61], "popa", kInv64, Imm::None, SEVEMU_H(popa));
    set_op(p[0x68], "push", kDef64, Imm::Z, SEVEMU_H(push_I));
    set_op(p[0x6A], "push", kDef64, Imm::SB, SEVEMU_H(push_I));
    set_op(p[0x69], "imul", kModrm, Imm::Z, SEVEMU_H(imul_GEI));
    set_op(p[0x6B], "imul", kModrm, Imm::SB, SEVEMU_H(imul_GEI));
    set_op(p[0x84], "test", MB, Imm::None, SEVEMU_H(test_EG));
    set_op(p[0x85], "test", MV, Imm::None, SEVEMU_H(test_EG));
    set_op(p[0x86], "xchg", MB, Imm::None, SEVEMU_H(xchg_EG));
    set_op(p[0x87], "xchg", MV, Imm::None, SEVEMU_H(xchg_EG));
    set_op(p[0x88], "mov", MB, Imm::None, SEVEMU_H(mov_EG));
    set_op(p[0x89], "mov", MV, Imm::None, SEVEMU_H(mov_EG));
    set_op(p[0x8A], "mov", MB, Imm::None, SEVEMU_H(mov_GE));
    set_op(p[0x8B], "mov", MV, Imm::None, SEVEMU_H(mov_GE));
    set_op(p[0x8D], "lea", MV | kMemOnly, Imm::None, SEVEMU_H(lea));
    p[0x8F] = { "grp1a", kDef64, Imm::None, 1 };
    set_op(t.grp[1][0], "pop", 0, Imm::None, SEVEMU_H(pop_E));
    set_op(p[0x98], "cbw", 0, Imm::None, SEVEMU_H(cbw));
    set_op(p[0x99], "cwd", 0, Imm::None, SEVEMU_H(cwd));
    set_op(p[0x9E], "sahf", 0, Imm::None, SEVEMU_H(sahf));
    set_op(p[0x9F], "lahf", 0, Imm::None, SEVEMU_H(lahf));
    set_op(p[0xA0], "mov", kByte, Imm::Moffs, SEVEMU_H(mov_A_moffs));
    set_op(p[0xA1], "mov", 0, Imm::Moffs, SEVEMU_H(mov_A_moffs));
    set_op(p[0xA2], "mov", kByte, Imm::Moffs, SEVEMU_H(mov_moffs_A));
    set_op(p[0xA3], "mov", 0, Imm::Moffs, SEVEMU_H(mov_moffs_A));
    set_op(p[0xA4], "movs", kByte, Imm::None, SEVEMU_HA(string_op, 0));
    set_op(p[0xA5], "movs", 0, Imm::None, SEVEMU_HA(string_op, 0));
    set_op(p[0xA6], "cmps", kByte, Imm::None, SEVEMU_HA(string_op, 3));
    set_op(p[0xA7], "cmps", 0, Imm::None, SEVEMU_HA(string_op, 3));
    set_op(p[0xA8], "test", kByte, Imm::B, SEVEMU_H(test_AI));
    set_op(p[0xA9], "test", 0, Imm::Z, SEVEMU_H(test_AI));
    set_op(p[0xAA], "stos", kByte, Imm::None, SEVEMU_HA(string_op, 1));
    set_op(p[0xAB], "stos", 0, Imm::None, SEVEMU_HA(string_op, 1));
    set_op(p[0xAC], "lods", kByte, Imm::None, SEVEMU_HA(string_op, 2));
    set_op(p[0xAD], "lods", 0, Imm::None, SEVEMU_HA(string_op, 2));
    set_op(p[0xAE], "scas", kByte, Imm::None, SEVEMU_HA(string_op, 4));
    set_op(p[0xAF], "scas", 0, Imm::None, SEVEMU_HA(string_op, 4));
    // Group 2
    p[0xC0] = { "grp2", kByte, Imm::B, 2 };
    p[0xC1] = { "grp2", 0, Imm::B, 2 };
    p[0xD0] = { "grp2", kByte, Imm::None, 3 };
    p[0xD1] = { "grp2", 0, Imm::None, 3 };
    p[0xD2] = { "grp2", kByte, Imm::None, 4 };
    p[0xD3] = { "grp2", 0, Imm::None, 4 };
    static char const* const kSh[] = { "rol", "ror", "rcl", "rcr", "shl", "shr", "sal", "sar" };
#define SH_ROW(R)                                                                  \
    set_op(t.grp[2][R], kSh[R], 0, Imm::None, SEVEMU_HA(shift_E, R * 4 + 2));      \
    set_op(t.grp[3][R], kSh[R], 0, Imm::None, SEVEMU_HA(shift_E, R * 4 + 0));      \
    set_op(t.grp[4][R], kSh[R], 0, Imm::None, SEVEMU_HA(shift_E, R * 4 + 1));
    SH_ROW(0) SH_ROW(1) SH_ROW(2) SH_ROW(3) SH_ROW(4) SH_ROW(5) SH_ROW(6) SH_ROW(7)
#undef SH_ROW
    set_op(p[0xC2], "ret", kDef64 | kEnd, Imm::W, SEVEMU_H(ret));
    set_op(p[0xC3], "ret", kDef64 | kEnd, Imm::None, SEVEMU_H(ret));
    p[0xC6] = { "grp11", kByte, Imm::B, 5 };
    p[0xC7] = { "grp11", 0, Imm::Z, 5 };
    set_op(t.grp[5][0], "mov", 0, Imm::None, SEVEMU_H(mov_EI));
    set_op(p[0xC8], "enter", kDef64, Imm::WB, SEVEMU_H(enter));
    set_op(p[0xC9], "leave", kDef64, Imm::None, SEVEMU_H(leave));
    set_op(p[0xD7], "xlat", 0, Imm::None, SEVEMU_H(xlat));
    set_op(p[0x27], "daa", kInv64, Imm::None, SEVEMU_HA(bcd, 0));
    set_op(p[0x2F], "das", kInv64, Imm::None, SEVEMU_HA(bcd, 1));
    set_op(p[0x37], "aaa", kInv64, Imm::None, SEVEMU_HA(bcd, 2));
    set_op(p[0x3F], "aas", kInv64, Imm::None, SEVEMU_HA(bcd, 3));
    set_op(p[0xD4], "aam", kInv64, Imm::B, SEVEMU_HA(bcd, 4));
    set_op(p[0xD5], "aad", kInv64, Imm::B, SEVEMU_HA(bcd, 5));
    set_op(p[0xD6], "salc", kInv64, Imm::None, SEVEMU_H(salc));
    set_op(p[0xE0], "loopne", kDef64, Imm::Jb, SEVEMU_HA(loop, 0));
    set_op(p[0xE1], "loope", kDef64, Imm::Jb, SEVEMU_HA(loop, 1));
    set_op(p[0xE2], "loop", kDef64, Imm::Jb, SEVEMU_HA(loop, 2));
    set_op(p[0xE3], "jcxz", kDef64, Imm::Jb, SEVEMU_HA(loop, 3));
    set_op(p[0xE8], "call", kDef64 | kEnd, Imm::Jz, SEVEMU_H(call_J));
    set_op(p[0xE9], "jmp", kDef64 | kEnd, Imm::Jz, SEVEMU_H(jmp_J));
    set_op(p[0xEB], "jmp", kDef64 | kEnd, Imm::Jb, SEVEMU_H(jmp_J));
    set_op(p[0xF5], "cmc", 0, Imm::None, SEVEMU_HA(flagop, 2));
    set_op(p[0xF8], "clc", 0, Imm::None, SEVEMU_HA(flagop, 0));
    set_op(p[0xF9], "stc", 0, Imm::None, SEVEMU_HA(flagop, 1));
    set_op(p[0xFC], "cld", 0, Imm::None, SEVEMU_HA(flagop, 3));
    set_op(p[0xFD], "std", 0, Imm::None, SEVEMU_HA(flagop, 4));
    // Group 3
    p[0xF6] = { "grp3", kByte, Imm::None, 6 };
    p[0xF7] = { "grp3", 0, Imm::None, 7 };
    for (int g : { 6, 7 }) {
        set_op(t.grp[g][0], "test", 0, g == 6 ? Imm::B : Imm::Z, SEVEMU_H(test_EI));
        set_op(t.grp[g][1], "test", 0, g == 6 ? Imm::B : Imm::Z, SEVEMU_H(test_EI));
        set_op(t.grp[g][2], "not", 0, Imm::None, SEVEMU_H(not_E));
        set_op(t.grp[g][3], "neg", 0, Imm::None, SEVEMU_H(neg_E));
        set_op(t.grp[g][4], "mul", 0, Imm::None, SEVEMU_H(mul_E));
        set_op(t.grp[g][5], "imul", 0, Imm::None, SEVEMU_H(imul1_E));
        set_op(t.grp[g][6], "div", 0, Imm::None, SEVEMU_H(div_E));
        set_op(t.grp[g][7], "idiv", 0, Imm::None, SEVEMU_H(idiv_E));
    }
    // Group 4/5
    p[0xFE] = { "grp4", kByte, Imm::None, 8 };
    p[0xFF] = { "grp5", 0, Imm::None, 9 };
    set_op(t.grp[8][0], "inc", 0, Imm::None, SEVEMU_HA(incdec_E, 0));
    set_op(t.grp[8][1], "dec", 0, Imm::None, SEVEMU_HA(incdec_E, 1));
    set_op(t.grp[9][0], "inc", 0, Imm::None, SEVEMU_HA(incdec_E, 0));
    set_op(t.grp[9][1], "dec", 0, Imm::None, SEVEMU_HA(incdec_E, 1));
    set_op(t.grp[9][2], "call", kDef64 | kEnd, Imm::None, SEVEMU_H(call_E));
    set_op(t.grp[9][4], "jmp", kDef64 | kEnd, Imm::None, SEVEMU_H(jmp_E));
    set_op(t.grp[9][6], "push", kDef64, Imm::None, SEVEMU_H(push_E));

    // 0F map
    set_op(x[0x0D], "prefetch", kModrm | kMemOnly, Imm::None, SEVEMU_H(nop));
    for (int k = 0x18; k <= 0x1F; ++k)
        set_op(x[k], "nop", kModrm, Imm::None, SEVEMU_H(nop));
    set_op(x[0xA3], "bt", MV, Imm::None, SEVEMU_HA(bt_op, 0));
    set_op(x[0xAB], "bts", MV, Imm::None, SEVEMU_HA(bt_op, 1));
    set_op(x[0xB3], "btr", MV, Imm::None, SEVEMU_HA(bt_op, 2));
    set_op(x[0xBB], "btc", MV, Imm::None, SEVEMU_HA(bt_op, 3));
    x[0xBA] = { "grp8", 0, Imm::B, 10 };
    set_op(t.grp[10][4], "bt", 0, Imm::None, SEVEMU_HA(bt_op, 4));
    set_op(t.grp[10][5], "bts", 0, Imm::None, SEVEMU_HA(bt_op, 5));
    set_op(t.grp[10][6], "btr", 0, Imm::None, SEVEMU_HA(bt_op, 6));
    set_op(t.grp[10][7], "btc", 0, Imm::None, SEVEMU_HA(bt_op, 7));
    set_op(x[0xA4], "shld", MV, Imm::B, SEVEMU_HA(shxd, 0));
    set_op(x[0xA5], "shld", MV, Imm::None, SEVEMU_HA(shxd, 1));
    set_op(x[0xAC], "shrd", MV, Imm::B, SEVEMU_HA(shxd, 2));
    set_op(x[0xAD], "shrd", MV, Imm::None, SEVEMU_HA(shxd, 3));
    set_op(x[0xAF], "imul", MV, Imm::None, SEVEMU_H(imul_GE));
    set_op(x[0xB0], "cmpxchg", MB, Imm::None, SEVEMU_H(cmpxchg));
    set_op(x[0xB1], "cmpxchg", MV, Imm::None, SEVEMU_H(cmpxchg));
    set_op(x[0xB6], "movzx", MV | kSrcByte, Imm::None, SEVEMU_H(movzx_b));
    set_op(x[0xB7], "movzx", MV, Imm::None, SEVEMU_H(movzx_w));
    set_op(x[0xBE], "movsx", MV | kSrcByte, Imm::None, SEVEMU_H(movsx_b));
    set_op(x[0xBF], "movsx", MV, Imm::None, SEVEMU_H(movsx_w));
    set_op(x[0xBC], "bsf", MV, Imm::None, SEVEMU_H(bsf));
    set_op(x[0xBD], "bsr", MV, Imm::None, SEVEMU_H(bsr));
    set_op(x[0xC0], "xadd", MB, Imm::None, SEVEMU_H(xadd));
    set_op(x[0xC1], "xadd", MV, Imm::None, SEVEMU_H(xadd));
    x[0xC7] = { "grp9", 0, Imm::None, 11 };
    set_op(t.grp[11][1], "cmpxchg8b", kMemOnly, Imm::None, SEVEMU_H(cmpxchg8b));
    auto& f3 = t.map[kMapF30F];
    set_op(f3[0xB8], "popcnt", MV, Imm::None, SEVEMU_H(popcnt));
    set_op(f3[0xBC], "tzcnt", MV, Imm::None, SEVEMU_H(tzcnt));
    set_op(f3[0xBD], "lzcnt", MV, Imm::None, SEVEMU_H(lzcnt));
    auto& m38 = t.map[kMap0F38];
    set_op(m38[0xF0], "movbe", MV | kMemOnly, Imm::None, SEVEMU_H(movbe_GM));
    set_op(m38[0xF1], "movbe", MV | kMemOnly, Imm::None, SEVEMU_H(movbe_MG));
    // VEX-encoded BMI1/BMI2 (map 0F38 by pp, and 0F3A F2 for RORX)
    auto& v0 = t.map[kMapVex0F38 + 0];
    auto& v66 = t.map[kMapVex0F38 + 1];
    auto& vf3 = t.map[kMapVex0F38 + 2];
    auto& vf2 = t.map[kMapVex0F38 + 3];
    set_op(v0[0xF2], "andn", MV, Imm::None, SEVEMU_H(andn));
    set_op(v0[0xF7], "bextr", MV, Imm::None, SEVEMU_H(bextr));
    set_op(v0[0xF5], "bzhi", MV, Imm::None, SEVEMU_H(bzhi));
    v0[0xF3] = { "grp17", 0, Imm::None, 12 };
    set_op(t.grp[12][1], "blsr", 0, Imm::None, SEVEMU_HA(blsx, 2));
    set_op(t.grp[12][2], "blsmsk", 0, Imm::None, SEVEMU_HA(blsx, 1));
    set_op(t.grp[12][3], "blsi", 0, Imm::None, SEVEMU_HA(blsx, 3));
    set_op(vf2[0xF5], "pdep", MV, Imm::None, SEVEMU_HA(pdep_pext, 0));
    set_op(vf3[0xF5], "pext", MV, Imm::None, SEVEMU_HA(pdep_pext, 1));
    set_op(vf2[0xF6], "mulx", MV, Imm::None, SEVEMU_H(mulx));
    set_op(v66[0xF7], "shlx", MV, Imm::None, SEVEMU_HA(shiftx, 0));
    set_op(vf3[0xF7], "sarx", MV, Imm::None, SEVEMU_HA(shiftx, 1));
    set_op(vf2[0xF7], "shrx", MV, Imm::None, SEVEMU_HA(shiftx, 2));
    set_op(t.map[kMapVex0F3A][0xF0], "rorx", MV, Imm::B, SEVEMU_H(rorx));
}

} // namespace sevemu::cpu
