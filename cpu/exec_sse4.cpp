// sevemu — SSE3, SSSE3, SSE4.1 and SSE4.2 (APM vol 4 "128-bit media instructions", whose
// pseudocode and operand order these handlers follow; Intel SDM vol 2 §4.1 for the PCMPxSTRx
// aggregation and its validity overrides). Legacy (non-VEX) 128-bit forms only. The SSSE3
// MMX forms (no 66 prefix) are #UD: sevemu has no MMX register file (QUIRKS.md). MONITOR and
// MWAIT are not implemented (#UD, CPUID 1 ECX[3] clear).
//
// Floating point: IEEE-754 single/double with explicit x86 NaN rules (first source NaN wins,
// quietened; invalid operations give the default "indefinite" QNaN), so results do not depend
// on the host's NaN conventions. Register operands: Insn::reg / 8 and Insn::rm / 8 are XMM (or
// GPR) numbers.
#include "cpu/exec_sse.h"

namespace sevemu::cpu {

namespace {

using namespace rflags;
using namespace sse;

// ---- IEEE helpers (APM vol 4 §3.2.2 "NaN propagation", Table 3-7)
template <class F> struct Bits;
template <> struct Bits<float> { using T = uint32_t; static constexpr T kQuiet = 0x00400000u, kIndefinite = 0xFFC00000u; };
template <> struct Bits<double> { using T = uint64_t; static constexpr T kQuiet = 1ull << 51, kIndefinite = 0xFFF8000000000000ull; };
template <class F> F from_bits(typename Bits<F>::T b) { F f; std::memcpy(&f, &b, sizeof f); return f; }
template <class F> typename Bits<F>::T to_bits(F f) { typename Bits<F>::T b; std::memcpy(&b, &f, sizeof f); return b; }
template <class F> F quiet(F f) { return from_bits<F>(to_bits(f) | Bits<F>::kQuiet); }
// a op b where a is the first (destination-side) source.
template <class F, class Op> F fop2(F a, F b, Op op)
{
    if (SEVEMU_UNLIKELY(std::isnan(a) || std::isnan(b))) return quiet(std::isnan(a) ? a : b);
    F r = op(a, b);
    if (SEVEMU_UNLIKELY(std::isnan(r))) return from_bits<F>(Bits<F>::kIndefinite); // inf-inf, 0*inf
    return r;
}
template <class F> F fadd(F a, F b) { return fop2(a, b, [](F x, F y) { return x + y; }); }
template <class F> F fsub(F a, F b) { return fop2(a, b, [](F x, F y) { return x - y; }); }
template <class F> F fmul(F a, F b) { return fop2(a, b, [](F x, F y) { return x * y; }); }

// ---- SSE3 floating point: ADDSUBPx, HADDPx, HSUBPx (m128 aligned)
enum F3 { ADDSUBPS, ADDSUBPD, HADDPS, HADDPD, HSUBPS, HSUBPD };
template <int A, int S, int M> void sse3_fp(Core& c, Insn const& i)
{
    sse_check(c);
    X& d = xr(c, i.reg);
    X s = src128<M>(c, i, true);
    if constexpr (A == ADDSUBPS || A == HADDPS || A == HSUBPS) {
        v4sf a = as<v4sf>(d), b = as<v4sf>(s), z;
        if (A == ADDSUBPS) {
            for (int k = 0; k < 4; k += 2) { z[k] = fsub(a[k], b[k]); z[k + 1] = fadd(a[k + 1], b[k + 1]); }
        } else {
            auto f = [](float x, float y) { return A == HADDPS ? fadd(x, y) : fsub(x, y); };
            z[0] = f(a[0], a[1]); z[1] = f(a[2], a[3]); z[2] = f(b[0], b[1]); z[3] = f(b[2], b[3]);
        }
        d = from(z);
    } else {
        v2df a = as<v2df>(d), b = as<v2df>(s), z;
        if (A == ADDSUBPD) { z[0] = fsub(a[0], b[0]); z[1] = fadd(a[1], b[1]); }
        else if (A == HADDPD) { z[0] = fadd(a[0], a[1]); z[1] = fadd(b[0], b[1]); }
        else { z[0] = fsub(a[0], a[1]); z[1] = fsub(b[0], b[1]); }
        d = from(z);
    }
}
// MOVSLDUP (K 0), MOVSHDUP (K 1): m128 aligned; MOVDDUP (K 2): m64.
template <int K, int S, int M> void movdup(Core& c, Insn const& i)
{
    sse_check(c);
    if constexpr (K == 2) {
        uint64_t q = src64<M>(c, i);
        xr(c, i.reg) = X { { q, q } };
    } else {
        v4su b = as<v4su>(src128<M>(c, i, true));
        v4su z = { b[K], b[K], b[K + 2], b[K + 2] };
        xr(c, i.reg) = from(z);
    }
}
// LDDQU (K 0, unaligned) and MOVNTDQA (K 1, aligned): memory-only 128-bit loads.
template <int K, int S, int M> void load128(Core& c, Insn const& i)
{
    sse_check(c);
    xr(c, i.reg) = src128<M>(c, i, K == 1);
}

// ---- SSSE3 and SSE4.1/4.2 packed integer, reg = reg op r/m (m128 aligned)
enum PI4 {
    PSHUFB, PHADDW, PHADDD, PHADDSW, PMADDUBSW, PHSUBW, PHSUBD, PHSUBSW, PSIGNB, PSIGNW, PSIGND, PMULHRSW,
    PABSB, PABSW, PABSD, PMULDQ, PCMPEQQ, PACKUSDW, PCMPGTQ, PMINSB, PMINSD, PMINUW, PMINUD, PMAXSB, PMAXSD,
    PMAXUW, PMAXUD, PMULLD, PHMINPOSUW
};
template <class V, class F> V lanes(V x, V y, F f)
{
    V z;
    for (unsigned k = 0; k < sizeof(V) / sizeof(x[0]); ++k) z[k] = f(x[k], y[k]);
    return z;
}
template <class V, class F> V horiz(V x, V y, F f) // [f(x0,x1), f(x2,x3), ..., f(y0,y1), ...]
{
    constexpr unsigned n = sizeof(V) / sizeof(x[0]);
    V z;
    for (unsigned k = 0; k < n / 2; ++k) {
        z[k] = f(x[2 * k], x[2 * k + 1]);
        z[n / 2 + k] = f(y[2 * k], y[2 * k + 1]);
    }
    return z;
}
template <class T> T psign(T d, T s) { return s < 0 ? T(0 - d) : s == 0 ? T(0) : d; }
template <class T> T pabs(T, T s) { return s < 0 ? T(0 - s) : s; }
template <int A, int S, int M> void pint4(Core& c, Insn const& i)
{
    sse_check(c);
    X& d = xr(c, i.reg);
    X s = src128<M>(c, i, true);
    X r;
    switch (A) {
    case PSHUFB: {
        v16qu a = as<v16qu>(d), b = as<v16qu>(s), z;
        for (int k = 0; k < 16; ++k) z[k] = (b[k] & 0x80) ? 0 : a[b[k] & 15];
        r = from(z);
        break;
    }
    case PHADDW: r = from(horiz(as<v8hu>(d), as<v8hu>(s), [](uint16_t x, uint16_t y) { return uint16_t(x + y); })); break;
    case PHADDD: r = from(horiz(as<v4su>(d), as<v4su>(s), [](uint32_t x, uint32_t y) { return x + y; })); break;
    case PHADDSW: r = from(horiz(as<v8hi>(d), as<v8hi>(s), [](int16_t x, int16_t y) { return sat<int16_t>(int(x) + y); })); break;
    case PHSUBW: r = from(horiz(as<v8hu>(d), as<v8hu>(s), [](uint16_t x, uint16_t y) { return uint16_t(x - y); })); break;
    case PHSUBD: r = from(horiz(as<v4su>(d), as<v4su>(s), [](uint32_t x, uint32_t y) { return x - y; })); break;
    case PHSUBSW: r = from(horiz(as<v8hi>(d), as<v8hi>(s), [](int16_t x, int16_t y) { return sat<int16_t>(int(x) - y); })); break;
    case PMADDUBSW: { // unsigned bytes of the destination times signed bytes of the source
        v16qu a = as<v16qu>(d);
        v16qi b = as<v16qi>(s);
        v8hi z;
        for (int k = 0; k < 8; ++k) z[k] = sat<int16_t>(int(a[2 * k]) * b[2 * k] + int(a[2 * k + 1]) * b[2 * k + 1]);
        r = from(z);
        break;
    }
    case PMULHRSW:
        r = from(lanes(as<v8hi>(d), as<v8hi>(s), [](int16_t x, int16_t y) { return int16_t((((int32_t(x) * y) >> 14) + 1) >> 1); }));
        break;
    case PSIGNB: r = from(lanes(as<v16qi>(d), as<v16qi>(s), psign<int8_t>)); break;
    case PSIGNW: r = from(lanes(as<v8hi>(d), as<v8hi>(s), psign<int16_t>)); break;
    case PSIGND: r = from(lanes(as<v4si>(d), as<v4si>(s), psign<int32_t>)); break;
    case PABSB: r = from(lanes(as<v16qi>(d), as<v16qi>(s), pabs<int8_t>)); break;
    case PABSW: r = from(lanes(as<v8hi>(d), as<v8hi>(s), pabs<int16_t>)); break;
    case PABSD: r = from(lanes(as<v4si>(d), as<v4si>(s), pabs<int32_t>)); break;
    case PMULDQ: {
        v4si a = as<v4si>(d), b = as<v4si>(s);
        v2di z = { int64_t(a[0]) * b[0], int64_t(a[2]) * b[2] };
        r = from(z);
        break;
    }
    case PCMPEQQ: r = from(as<v2di>(d) == as<v2di>(s)); break;
    case PCMPGTQ: r = from(as<v2di>(d) > as<v2di>(s)); break;
    case PACKUSDW: {
        v4si a = as<v4si>(d), b = as<v4si>(s);
        v8hu z;
        for (int k = 0; k < 4; ++k) { z[k] = sat<uint16_t>(int64_t(a[k])); z[4 + k] = sat<uint16_t>(int64_t(b[k])); }
        r = from(z);
        break;
    }
    case PMINSB: r = from(lanes(as<v16qi>(d), as<v16qi>(s), [](int8_t x, int8_t y) { return x < y ? x : y; })); break;
    case PMINSD: r = from(lanes(as<v4si>(d), as<v4si>(s), [](int32_t x, int32_t y) { return x < y ? x : y; })); break;
    case PMINUW: r = from(lanes(as<v8hu>(d), as<v8hu>(s), [](uint16_t x, uint16_t y) { return x < y ? x : y; })); break;
    case PMINUD: r = from(lanes(as<v4su>(d), as<v4su>(s), [](uint32_t x, uint32_t y) { return x < y ? x : y; })); break;
    case PMAXSB: r = from(lanes(as<v16qi>(d), as<v16qi>(s), [](int8_t x, int8_t y) { return x > y ? x : y; })); break;
    case PMAXSD: r = from(lanes(as<v4si>(d), as<v4si>(s), [](int32_t x, int32_t y) { return x > y ? x : y; })); break;
    case PMAXUW: r = from(lanes(as<v8hu>(d), as<v8hu>(s), [](uint16_t x, uint16_t y) { return x > y ? x : y; })); break;
    case PMAXUD: r = from(lanes(as<v4su>(d), as<v4su>(s), [](uint32_t x, uint32_t y) { return x > y ? x : y; })); break;
    case PMULLD: r = from(lanes(as<v4su>(d), as<v4su>(s), [](uint32_t x, uint32_t y) { return x * y; })); break;
    case PHMINPOSUW: { // lowest unsigned word of the source and its (lowest) index; the rest zero
        v8hu b = as<v8hu>(s);
        unsigned best = 0;
        for (unsigned k = 1; k < 8; ++k)
            if (b[k] < b[best]) best = k;
        r = X { { b[best] | (uint64_t(best) << 16), 0 } };
        break;
    }
    }
    d = r;
}

// ---- SSE4.1 blends. Variable (implicit XMM0 mask) K: 0 PBLENDVB, 1 BLENDVPS, 2 BLENDVPD.
template <int K, int S, int M> void blendv(Core& c, Insn const& i)
{
    sse_check(c);
    X& d = xr(c, i.reg);
    X s = src128<M>(c, i, true);
    X const& m = xr(c, 0);
    if constexpr (K == 0) {
        v16qi mask = as<v16qi>(m) >> 7; // all ones where the byte's sign bit is set
        d = from((as<v16qi>(d) & ~mask) | (as<v16qi>(s) & mask));
    } else if constexpr (K == 1) {
        v4si mask = as<v4si>(m) >> 31;
        d = from((as<v4si>(d) & ~mask) | (as<v4si>(s) & mask));
    } else {
        v2di mask = as<v2di>(m) >> 63;
        d = from((as<v2di>(d) & ~mask) | (as<v2di>(s) & mask));
    }
}
// Immediate blends K: 0 BLENDPS (imm[3:0]), 1 BLENDPD (imm[1:0]), 2 PBLENDW (imm[7:0]).
template <int K, int S, int M> void blendi(Core& c, Insn const& i)
{
    sse_check(c);
    X& d = xr(c, i.reg);
    X s = src128<M>(c, i, true);
    unsigned m = unsigned(i.imm);
    if constexpr (K == 0) {
        v4su a = as<v4su>(d), b = as<v4su>(s);
        for (int k = 0; k < 4; ++k) if (m >> k & 1) a[k] = b[k];
        d = from(a);
    } else if constexpr (K == 1) {
        for (int k = 0; k < 2; ++k) if (m >> k & 1) d.q[k] = s.q[k];
    } else {
        v8hu a = as<v8hu>(d), b = as<v8hu>(s);
        for (int k = 0; k < 8; ++k) if (m >> k & 1) a[k] = b[k];
        d = from(a);
    }
}

// PTEST: ZF = (dst AND src) == 0, CF = (NOT dst AND src) == 0; OF, SF, AF, PF cleared.
template <int S, int M> void ptest(Core& c, Insn const& i)
{
    sse_check(c);
    X const& d = xr(c, i.reg);
    X s = src128<M>(c, i, true);
    bool zf = !((d.q[0] & s.q[0]) | (d.q[1] & s.q[1]));
    bool cf = !((~d.q[0] & s.q[0]) | (~d.q[1] & s.q[1]));
    c.materialize();
    c.flags = (c.flags & ~kArith) | (zf ? ZF : 0) | (cf ? CF : 0);
}

// PMOVSX/PMOVZX: K = sign * 100 + from-size * 10 + to-size (bytes); the memory operand is only as
// wide as the elements read (no alignment requirement).
template <int K, int S, int M> void pmovx(Core& c, Insn const& i)
{
    sse_check(c);
    constexpr bool sgn = K >= 100;
    constexpr int from_sz = K / 10 % 10, to_sz = K % 10, n = 16 / to_sz, bytes = n * from_sz;
    uint64_t src;
    if constexpr (M) {
        uint64_t a = c.lin(i, bytes, false);
        src = bytes == 8 ? c.rd<uint64_t>(a) : bytes == 4 ? c.rd<uint32_t>(a) : c.rd<uint16_t>(a);
    } else {
        src = xr(c, i.rm).q[0];
    }
    uint8_t out[16];
    for (int k = 0; k < n; ++k) {
        uint64_t e = (src >> (8 * from_sz * k)) & ((1ull << (8 * from_sz)) - 1);
        if (sgn && (e >> (8 * from_sz - 1)) & 1) e |= ~0ull << (8 * from_sz);
        std::memcpy(out + to_sz * k, &e, to_sz); // little-endian host
    }
    X r;
    std::memcpy(&r, out, 16);
    xr(c, i.reg) = r;
}

// PALIGNR: (dst:src) >> (8 * imm), low 128 bits; imm >= 32 gives zero.
template <int S, int M> void palignr(Core& c, Insn const& i)
{
    sse_check(c);
    X& d = xr(c, i.reg);
    X s = src128<M>(c, i, true);
    uint8_t cat[64] {};
    std::memcpy(cat, &s, 16);
    std::memcpy(cat + 16, &d, 16);
    unsigned n = unsigned(i.imm);
    std::memcpy(&d, cat + (n > 32 ? 32 : n), 16);
}

// ROUNDPS/PD/SS/SD (K: 0 ps, 1 pd, 2 ss, 3 sd). imm[1:0] rounding mode unless imm[2] selects
// MXCSR.RC; imm[3] masks the precision exception (exception flags are not modelled). A NaN
// source gives the same NaN, quietened.
template <class F> F round_imm(F v, unsigned imm, unsigned rc)
{
    if (std::isnan(v)) return quiet(v);
    return round_rc(v, (imm & 4) ? rc : imm & 3);
}
template <int K, int S, int M> void roundx(Core& c, Insn const& i)
{
    sse_check(c);
    X& d = xr(c, i.reg);
    unsigned imm = unsigned(i.imm), rc = mxcsr_rc(c);
    if constexpr (K == 0) {
        v4sf b = as<v4sf>(src128<M>(c, i, true));
        for (int k = 0; k < 4; ++k) b[k] = round_imm(b[k], imm, rc);
        d = from(b);
    } else if constexpr (K == 1) {
        v2df b = as<v2df>(src128<M>(c, i, true));
        for (int k = 0; k < 2; ++k) b[k] = round_imm(b[k], imm, rc);
        d = from(b);
    } else if constexpr (K == 2) {
        float f = round_imm(from_bits<float>(src32<M>(c, i)), imm, rc);
        d.q[0] = (d.q[0] & ~0xFFFFFFFFull) | to_bits(f);
    } else {
        d.q[0] = to_bits(round_imm(from_bits<double>(src64<M>(c, i)), imm, rc));
    }
}

// ---- element extract/insert. PEXTRB/W/D/Q and EXTRACTPS write a GPR (zero-extended) or
// memory of the element's size (K: 1 byte, 2 word, 4 dword or qword by REX.W, 5 EXTRACTPS).
template <int K, int S, int M> void pextr(Core& c, Insn const& i)
{
    sse_check(c);
    X const& x = xr(c, i.reg);
    unsigned imm = unsigned(i.imm);
    constexpr int sz = K == 5 ? 4 : (K == 4 && S == 8) ? 8 : K;
    constexpr unsigned n = 16 / sz;
    uint64_t v = 0;
    std::memcpy(&v, reinterpret_cast<uint8_t const*>(&x) + sz * (imm & (n - 1)), sz);
    if constexpr (M) {
        uint64_t a = c.lin(i, sz, true);
        if constexpr (sz == 1) c.wr<uint8_t>(a, uint8_t(v));
        else if constexpr (sz == 2) c.wr<uint16_t>(a, uint16_t(v));
        else if constexpr (sz == 4) c.wr<uint32_t>(a, uint32_t(v));
        else c.wr<uint64_t>(a, v);
    } else {
        c.r[i.rm / 8] = v;
    }
}
// PINSRB (K 1), PINSRD/PINSRQ (K 4, by REX.W): from a GPR or memory of the element's size.
template <int K, int S, int M> void pinsr(Core& c, Insn const& i)
{
    sse_check(c);
    constexpr int sz = (K == 4 && S == 8) ? 8 : K;
    constexpr unsigned n = 16 / sz;
    uint64_t v;
    if constexpr (M) {
        uint64_t a = c.lin(i, sz, false);
        v = sz == 1 ? c.rd<uint8_t>(a) : sz == 4 ? c.rd<uint32_t>(a) : c.rd<uint64_t>(a);
    } else {
        v = c.r[i.rm / 8];
    }
    X& x = xr(c, i.reg);
    std::memcpy(reinterpret_cast<uint8_t*>(&x) + sz * (unsigned(i.imm) & (n - 1)), &v, sz);
}
// INSERTPS: source dword imm[7:6] of the register (a memory source is the m32 itself),
// destination dword imm[5:4], then zero the dwords selected by imm[3:0].
template <int S, int M> void insertps(Core& c, Insn const& i)
{
    sse_check(c);
    unsigned imm = unsigned(i.imm);
    uint32_t v = M ? src32<M>(c, i) : as<v4su>(xr(c, i.rm))[imm >> 6];
    v4su d = as<v4su>(xr(c, i.reg));
    d[(imm >> 4) & 3] = v;
    for (int k = 0; k < 4; ++k) if (imm >> k & 1) d[k] = 0;
    xr(c, i.reg) = from(d);
}

// ---- DPPS/DPPD: products of the lanes in imm[7:4], summed pairwise as the APM pseudocode
// orders it (each step rounded to the element precision), broadcast to the lanes in imm[3:0].
template <int S, int M> void dpps(Core& c, Insn const& i)
{
    sse_check(c);
    X& d = xr(c, i.reg);
    v4sf a = as<v4sf>(d), b = as<v4sf>(src128<M>(c, i, true)), z;
    unsigned imm = unsigned(i.imm);
    float t[4];
    for (int k = 0; k < 4; ++k) t[k] = (imm >> (4 + k) & 1) ? fmul(a[k], b[k]) : 0.0f;
    float sum = fadd(fadd(t[0], t[1]), fadd(t[2], t[3]));
    for (int k = 0; k < 4; ++k) z[k] = (imm >> k & 1) ? sum : 0.0f;
    d = from(z);
}
template <int S, int M> void dppd(Core& c, Insn const& i)
{
    sse_check(c);
    X& d = xr(c, i.reg);
    v2df a = as<v2df>(d), b = as<v2df>(src128<M>(c, i, true)), z;
    unsigned imm = unsigned(i.imm);
    double t0 = (imm >> 4 & 1) ? fmul(a[0], b[0]) : 0.0, t1 = (imm >> 5 & 1) ? fmul(a[1], b[1]) : 0.0;
    double sum = fadd(t0, t1);
    for (int k = 0; k < 2; ++k) z[k] = (imm >> k & 1) ? sum : 0.0;
    d = from(z);
}
// MPSADBW: eight sums of absolute differences of 4-byte groups: destination bytes from offset
// 4 * imm[2] (sliding), source bytes at 4 * imm[1:0] (fixed).
template <int S, int M> void mpsadbw(Core& c, Insn const& i)
{
    sse_check(c);
    X& d = xr(c, i.reg);
    v16qu a = as<v16qu>(d), b = as<v16qu>(src128<M>(c, i, true));
    unsigned imm = unsigned(i.imm), ao = 4 * (imm >> 2 & 1), bo = 4 * (imm & 3);
    v8hu z;
    for (unsigned k = 0; k < 8; ++k) {
        unsigned s = 0;
        for (unsigned j = 0; j < 4; ++j) s += unsigned(std::abs(int(a[ao + k + j]) - int(b[bo + j])));
        z[k] = uint16_t(s);
    }
    d = from(z);
}

// ---- SSE4.2 string compares (Intel SDM vol 2 §4.1: source data format imm[1:0], aggregation
// imm[3:2], polarity imm[5:4], output selection imm[6]). Source 1 is the register operand,
// source 2 the r/m operand; no alignment requirement.
struct StrResult {
    uint32_t res2;   // IntRes2, one bit per element
    unsigned n;      // elements: 16 bytes or 8 words
    unsigned len1, len2;
};
StrResult pcmpstr(X const& x1, X const& x2, unsigned imm, int64_t l1, int64_t l2, bool implicit)
{
    bool words = imm & 1, sgn = imm & 2;
    unsigned n = words ? 8 : 16;
    int a[16], b[16];
    for (unsigned k = 0; k < n; ++k) {
        if (words) {
            uint16_t u1 = as<v8hu>(x1)[k], u2 = as<v8hu>(x2)[k];
            a[k] = sgn ? int(int16_t(u1)) : int(u1);
            b[k] = sgn ? int(int16_t(u2)) : int(u2);
        } else {
            uint8_t u1 = as<v16qu>(x1)[k], u2 = as<v16qu>(x2)[k];
            a[k] = sgn ? int(int8_t(u1)) : int(u1);
            b[k] = sgn ? int(int8_t(u2)) : int(u2);
        }
    }
    unsigned la = n, lb = n;
    if (implicit) { // up to the first null element
        for (unsigned k = 0; k < n; ++k) if (a[k] == 0) { la = k; break; }
        for (unsigned k = 0; k < n; ++k) if (b[k] == 0) { lb = k; break; }
    } else { // |RAX| / |RDX| (EAX/EDX without REX.W), saturated to the element count
        auto len = [n](int64_t v) {
            uint64_t m = v < 0 ? 0 - uint64_t(v) : uint64_t(v);
            return m > n ? n : unsigned(m);
        };
        la = len(l1);
        lb = len(l2);
    }
    // IntRes1 with the validity overrides of SDM Table 4-7 (element i of source 1, j of source 2).
    uint32_t r1 = 0;
    switch ((imm >> 2) & 3) {
    case 0: // equal any: is source-2 element j in the set source 1?
        for (unsigned j = 0; j < lb; ++j)
            for (unsigned k = 0; k < la; ++k)
                if (a[k] == b[j]) { r1 |= 1u << j; break; }
        break;
    case 1: // ranges: source 1 holds pairs [lo, hi]
        for (unsigned j = 0; j < lb; ++j)
            for (unsigned k = 0; k + 1 < la; k += 2)
                if (a[k] <= b[j] && b[j] <= a[k + 1]) { r1 |= 1u << j; break; }
        break;
    case 2: // equal each: both invalid compare true, one invalid false
        for (unsigned j = 0; j < n; ++j) {
            bool v1 = j < la, v2 = j < lb;
            if ((v1 && v2) ? a[j] == b[j] : (!v1 && !v2)) r1 |= 1u << j;
        }
        break;
    default: // equal ordered: source 1 (the needle) starts at source-2 element j
        for (unsigned j = 0; j < n; ++j) {
            bool match = true;
            for (unsigned k = 0; k < n - j && match; ++k) {
                if (k >= la) continue;              // needle invalid: true
                match = j + k < lb && a[k] == b[j + k]; // needle valid, haystack invalid: false
            }
            if (match) r1 |= 1u << j;
        }
        break;
    }
    uint32_t all = (1u << n) - 1, r2;
    switch ((imm >> 4) & 3) {
    case 1: r2 = ~r1 & all; break;
    case 3: r2 = r1 ^ ((1u << lb) - 1); break; // negate the valid source-2 elements only
    default: r2 = r1; break;
    }
    return { r2, n, la, lb };
}
// K bit 0: index (ECX) instead of mask (XMM0); K bit 1: implicit (null-terminated) lengths.
template <int K, int S, int M> void pcmpstrx(Core& c, Insn const& i)
{
    sse_check(c);
    X x2 = src128<M>(c, i, false);
    unsigned imm = unsigned(i.imm);
    int64_t l1 = S == 8 ? int64_t(c.r[RAX]) : int64_t(int32_t(c.r[RAX]));
    int64_t l2 = S == 8 ? int64_t(c.r[RDX]) : int64_t(int32_t(c.r[RDX]));
    StrResult r = pcmpstr(xr(c, i.reg), x2, imm, l1, l2, K & 2);
    if constexpr (K & 1) {
        unsigned idx = r.n;
        if (r.res2) idx = (imm & 0x40) ? 31 - unsigned(__builtin_clz(r.res2)) : unsigned(__builtin_ctz(r.res2));
        c.r[RCX] = idx;
    } else if (imm & 0x40) { // byte/word mask
        uint8_t out[16];
        for (unsigned k = 0; k < 16; ++k) out[k] = (r.res2 >> (r.n == 8 ? k / 2 : k) & 1) ? 0xFF : 0;
        std::memcpy(&xr(c, 0), out, 16);
    } else {
        xr(c, 0) = X { { r.res2, 0 } };
    }
    // CF = IntRes2 != 0, ZF/SF = source 2/1 shorter than a full register, OF = IntRes2[0].
    c.materialize();
    c.flags = (c.flags & ~kArith) | (r.res2 ? CF : 0) | (r.len2 < r.n ? ZF : 0) | (r.len1 < r.n ? SF : 0) | ((r.res2 & 1) ? OF : 0);
}

// ---- CRC32 (SSE4.2): CRC-32C (Castagnoli, polynomial 11EDC6F41h) bit-reflected, no initial or
// final inversion; the source is consumed least significant byte first. A GPR instruction: no
// CR0/CR4 media checks, flags unchanged. K 0: r/m8 source; K 1: r/m16/32/64 by operand size.
// The destination is r32 (r64 with REX.W: upper half zero).
struct Crc32cTable {
    uint32_t t[256];
    constexpr Crc32cTable() : t {}
    {
        for (uint32_t b = 0; b < 256; ++b) {
            uint32_t r = b;
            for (int k = 0; k < 8; ++k) r = (r >> 1) ^ (0x82F63B78u & (0u - (r & 1)));
            t[b] = r;
        }
    }
};
constexpr Crc32cTable kCrc32c;
template <int K, int S, int M> void crc32(Core& c, Insn const& i)
{
    constexpr int n = K == 0 ? 1 : S;
    uint64_t v;
    if constexpr (M) {
        uint64_t a = c.lin(i, n, false);
        v = n == 1 ? c.rd<uint8_t>(a) : n == 2 ? c.rd<uint16_t>(a) : n == 4 ? c.rd<uint32_t>(a) : c.rd<uint64_t>(a);
    } else {
        v = n == 1 ? c.getr<1>(i.rm) : n == 2 ? c.getr<2>(i.rm) : n == 4 ? c.getr<4>(i.rm) : c.getr<8>(i.rm);
    }
    uint32_t crc = uint32_t(c.r[i.reg / 8]);
    for (int k = 0; k < n; ++k, v >>= 8)
        crc = (crc >> 8) ^ kCrc32c.t[(crc ^ v) & 0xFF];
    c.r[i.reg / 8] = crc;
}

} // namespace

void register_sse4_ops(OpTables& t)
{
    auto& o = t.map[kMap660F];
    auto& f3 = t.map[kMapF30F];
    auto& f2 = t.map[kMapF20F];
    auto& o38 = t.map[kMap660F38];
    auto& f238 = t.map[kMapF20F38];
    auto& o3a = t.map[kMap660F3A];
    constexpr uint16_t R = kModrm;

    // SSE3 (MONITOR/MWAIT omitted; FISTTP is in exec_x87.cpp)
    set_op(o[0xD0], "addsubpd", R, Imm::None, SEVEMU_HA(sse3_fp, ADDSUBPD));
    set_op(f2[0xD0], "addsubps", R, Imm::None, SEVEMU_HA(sse3_fp, ADDSUBPS));
    set_op(o[0x7C], "haddpd", R, Imm::None, SEVEMU_HA(sse3_fp, HADDPD));
    set_op(f2[0x7C], "haddps", R, Imm::None, SEVEMU_HA(sse3_fp, HADDPS));
    set_op(o[0x7D], "hsubpd", R, Imm::None, SEVEMU_HA(sse3_fp, HSUBPD));
    set_op(f2[0x7D], "hsubps", R, Imm::None, SEVEMU_HA(sse3_fp, HSUBPS));
    set_op(f3[0x12], "movsldup", R, Imm::None, SEVEMU_HA(movdup, 0));
    set_op(f3[0x16], "movshdup", R, Imm::None, SEVEMU_HA(movdup, 1));
    set_op(f2[0x12], "movddup", R, Imm::None, SEVEMU_HA(movdup, 2));
    set_op(f2[0xF0], "lddqu", R | kMemOnly, Imm::None, SEVEMU_HA(load128, 0));

    // SSSE3, 66 0F 38 (the MMX forms without 66 are #UD)
    static constexpr struct { uint8_t op; int a; char const* n; } kI[] = {
        { 0x00, PSHUFB, "pshufb" }, { 0x01, PHADDW, "phaddw" }, { 0x02, PHADDD, "phaddd" },
        { 0x03, PHADDSW, "phaddsw" }, { 0x04, PMADDUBSW, "pmaddubsw" }, { 0x05, PHSUBW, "phsubw" },
        { 0x06, PHSUBD, "phsubd" }, { 0x07, PHSUBSW, "phsubsw" }, { 0x08, PSIGNB, "psignb" },
        { 0x09, PSIGNW, "psignw" }, { 0x0A, PSIGND, "psignd" }, { 0x0B, PMULHRSW, "pmulhrsw" },
        { 0x1C, PABSB, "pabsb" }, { 0x1D, PABSW, "pabsw" }, { 0x1E, PABSD, "pabsd" },
        // SSE4.1 / SSE4.2
        { 0x28, PMULDQ, "pmuldq" }, { 0x29, PCMPEQQ, "pcmpeqq" }, { 0x2B, PACKUSDW, "packusdw" },
        { 0x37, PCMPGTQ, "pcmpgtq" }, { 0x38, PMINSB, "pminsb" }, { 0x39, PMINSD, "pminsd" },
        { 0x3A, PMINUW, "pminuw" }, { 0x3B, PMINUD, "pminud" }, { 0x3C, PMAXSB, "pmaxsb" },
        { 0x3D, PMAXSD, "pmaxsd" }, { 0x3E, PMAXUW, "pmaxuw" }, { 0x3F, PMAXUD, "pmaxud" },
        { 0x40, PMULLD, "pmulld" }, { 0x41, PHMINPOSUW, "phminposuw" } };
#define IROW(K) set_op(o38[kI[K].op], kI[K].n, R, Imm::None, SEVEMU_HA(pint4, kI[K].a));
    IROW(0) IROW(1) IROW(2) IROW(3) IROW(4) IROW(5) IROW(6) IROW(7) IROW(8) IROW(9) IROW(10) IROW(11) IROW(12)
    IROW(13) IROW(14) IROW(15) IROW(16) IROW(17) IROW(18) IROW(19) IROW(20) IROW(21) IROW(22) IROW(23) IROW(24)
    IROW(25) IROW(26) IROW(27) IROW(28)
#undef IROW
    static_assert(sizeof(kI) / sizeof(kI[0]) == 29);
    set_op(o3a[0x0F], "palignr", R, Imm::B, SEVEMU_H(palignr));

    // SSE4.1, 66 0F 38
    set_op(o38[0x10], "pblendvb", R, Imm::None, SEVEMU_HA(blendv, 0));
    set_op(o38[0x14], "blendvps", R, Imm::None, SEVEMU_HA(blendv, 1));
    set_op(o38[0x15], "blendvpd", R, Imm::None, SEVEMU_HA(blendv, 2));
    set_op(o38[0x17], "ptest", R, Imm::None, SEVEMU_H(ptest));
    set_op(o38[0x20], "pmovsxbw", R, Imm::None, SEVEMU_HA(pmovx, 112));
    set_op(o38[0x21], "pmovsxbd", R, Imm::None, SEVEMU_HA(pmovx, 114));
    set_op(o38[0x22], "pmovsxbq", R, Imm::None, SEVEMU_HA(pmovx, 118));
    set_op(o38[0x23], "pmovsxwd", R, Imm::None, SEVEMU_HA(pmovx, 124));
    set_op(o38[0x24], "pmovsxwq", R, Imm::None, SEVEMU_HA(pmovx, 128));
    set_op(o38[0x25], "pmovsxdq", R, Imm::None, SEVEMU_HA(pmovx, 148));
    set_op(o38[0x2A], "movntdqa", R | kMemOnly, Imm::None, SEVEMU_HA(load128, 1));
    set_op(o38[0x30], "pmovzxbw", R, Imm::None, SEVEMU_HA(pmovx, 12));
    set_op(o38[0x31], "pmovzxbd", R, Imm::None, SEVEMU_HA(pmovx, 14));
    set_op(o38[0x32], "pmovzxbq", R, Imm::None, SEVEMU_HA(pmovx, 18));
    set_op(o38[0x33], "pmovzxwd", R, Imm::None, SEVEMU_HA(pmovx, 24));
    set_op(o38[0x34], "pmovzxwq", R, Imm::None, SEVEMU_HA(pmovx, 28));
    set_op(o38[0x35], "pmovzxdq", R, Imm::None, SEVEMU_HA(pmovx, 48));

    // SSE4.1, 66 0F 3A
    set_op(o3a[0x08], "roundps", R, Imm::B, SEVEMU_HA(roundx, 0));
    set_op(o3a[0x09], "roundpd", R, Imm::B, SEVEMU_HA(roundx, 1));
    set_op(o3a[0x0A], "roundss", R, Imm::B, SEVEMU_HA(roundx, 2));
    set_op(o3a[0x0B], "roundsd", R, Imm::B, SEVEMU_HA(roundx, 3));
    set_op(o3a[0x0C], "blendps", R, Imm::B, SEVEMU_HA(blendi, 0));
    set_op(o3a[0x0D], "blendpd", R, Imm::B, SEVEMU_HA(blendi, 1));
    set_op(o3a[0x0E], "pblendw", R, Imm::B, SEVEMU_HA(blendi, 2));
    set_op(o3a[0x14], "pextrb", R, Imm::B, SEVEMU_HA(pextr, 1));
    set_op(o3a[0x15], "pextrw", R, Imm::B, SEVEMU_HA(pextr, 2));
    set_op(o3a[0x16], "pextrd/q", R, Imm::B, SEVEMU_HA(pextr, 4));
    set_op(o3a[0x17], "extractps", R, Imm::B, SEVEMU_HA(pextr, 5));
    set_op(o3a[0x20], "pinsrb", R, Imm::B, SEVEMU_HA(pinsr, 1));
    set_op(o3a[0x21], "insertps", R, Imm::B, SEVEMU_H(insertps));
    set_op(o3a[0x22], "pinsrd/q", R, Imm::B, SEVEMU_HA(pinsr, 4));
    set_op(o3a[0x40], "dpps", R, Imm::B, SEVEMU_H(dpps));
    set_op(o3a[0x41], "dppd", R, Imm::B, SEVEMU_H(dppd));
    set_op(o3a[0x42], "mpsadbw", R, Imm::B, SEVEMU_H(mpsadbw));

    // SSE4.2
    set_op(o3a[0x60], "pcmpestrm", R, Imm::B, SEVEMU_HA(pcmpstrx, 0));
    set_op(o3a[0x61], "pcmpestri", R, Imm::B, SEVEMU_HA(pcmpstrx, 1));
    set_op(o3a[0x62], "pcmpistrm", R, Imm::B, SEVEMU_HA(pcmpstrx, 2));
    set_op(o3a[0x63], "pcmpistri", R, Imm::B, SEVEMU_HA(pcmpstrx, 3));
    set_op(f238[0xF0], "crc32", R | kSrcByte, Imm::None, SEVEMU_HA(crc32, 0));
    set_op(f238[0xF1], "crc32", R, Imm::None, SEVEMU_HA(crc32, 1));
}

} // namespace sevemu::cpu
