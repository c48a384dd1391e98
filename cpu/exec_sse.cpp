// sevemu — SSE and SSE2 (APM vol 4 "128-bit media instructions"): moves, packed and scalar
// integer and floating-point arithmetic, compares, shuffles and conversions, plus FXSAVE/FXRSTOR,
// LDMXCSR/STMXCSR. Arithmetic is done with the host's IEEE-754 double/float (same formats) and
// rounds to nearest; MXCSR.RC is honoured only by the rounding conversions to integers, and
// exception flags are not modelled (QUIRKS.md). SSE3 and later: exec_sse4.cpp.
// Register operands: Insn::reg / 8 and Insn::rm / 8 are XMM numbers.
#include "cpu/exec_sse.h"

namespace sevemu::cpu {

namespace {

using namespace rflags;

using namespace sse;

// ---- moves
template <int A, int S, int M> void movu_load(Core& c, Insn const& i) { sse_check(c); xr(c, i.reg) = src128<M>(c, i, A); }
template <int A, int S, int M> void movu_store(Core& c, Insn const& i) { sse_check(c); dst128<M>(c, i, xr(c, i.reg), A); }
template <int S, int M> void movss_load(Core& c, Insn const& i)
{
    sse_check(c);
    uint32_t v = src32<M>(c, i);
    X& d = xr(c, i.reg);
    if (M) d = X { { v, 0 } };
    else d.q[0] = (d.q[0] & ~0xFFFFFFFFull) | v;
}
template <int S, int M> void movss_store(Core& c, Insn const& i)
{
    sse_check(c);
    uint32_t v = uint32_t(xr(c, i.reg).q[0]);
    if constexpr (M) c.wr<uint32_t>(c.lin(i, 4, true), v);
    else { X& d = xr(c, i.rm); d.q[0] = (d.q[0] & ~0xFFFFFFFFull) | v; }
}
template <int S, int M> void movsd_load(Core& c, Insn const& i)
{
    sse_check(c);
    uint64_t v = src64<M>(c, i);
    X& d = xr(c, i.reg);
    d.q[0] = v;
    if (M) d.q[1] = 0;
}
template <int S, int M> void movsd_store(Core& c, Insn const& i)
{
    sse_check(c);
    if constexpr (M) c.wr<uint64_t>(c.lin(i, 8, true), xr(c, i.reg).q[0]);
    else xr(c, i.rm).q[0] = xr(c, i.reg).q[0];
}
template <int HI, int S, int M> void movlh_load(Core& c, Insn const& i)
{
    // 0F 12: MOVLPS/MOVLPD m64 (reg form: MOVHLPS); 0F 16: MOVHPS/MOVHPD m64 (reg form: MOVLHPS)
    sse_check(c);
    X& d = xr(c, i.reg);
    if constexpr (M) d.q[HI] = c.rd<uint64_t>(c.lin(i, 8, false));
    else d.q[HI] = xr(c, i.rm).q[HI ? 0 : 1];
}
template <int HI, int S, int M> void movlh_store(Core& c, Insn const& i)
{
    sse_check(c);
    c.wr<uint64_t>(c.lin(i, 8, true), xr(c, i.reg).q[HI]);
}
template <int S, int M> void movq_load(Core& c, Insn const& i) // F3 0F 7E
{
    sse_check(c);
    xr(c, i.reg) = X { { src64<M>(c, i), 0 } };
}
template <int S, int M> void movq_store(Core& c, Insn const& i) // 66 0F D6
{
    sse_check(c);
    if constexpr (M) c.wr<uint64_t>(c.lin(i, 8, true), xr(c, i.reg).q[0]);
    else xr(c, i.rm) = X { { xr(c, i.reg).q[0], 0 } };
}
template <int S, int M> void movd_to_xmm(Core& c, Insn const& i) // 66 0F 6E
{
    sse_check(c);
    uint64_t v;
    if constexpr (M) v = S == 8 ? c.rd<uint64_t>(c.lin(i, 8, false)) : c.rd<uint32_t>(c.lin(i, 4, false));
    else v = S == 8 ? c.r[i.rm / 8] : uint32_t(c.r[i.rm / 8]);
    xr(c, i.reg) = X { { v, 0 } };
}
template <int S, int M> void movd_from_xmm(Core& c, Insn const& i) // 66 0F 7E
{
    sse_check(c);
    uint64_t v = xr(c, i.reg).q[0];
    if constexpr (M) {
        if (S == 8) c.wr<uint64_t>(c.lin(i, 8, true), v); else c.wr<uint32_t>(c.lin(i, 4, true), uint32_t(v));
    } else {
        c.r[i.rm / 8] = S == 8 ? v : uint32_t(v);
    }
}
template <int S, int M> void movnti(Core& c, Insn const& i)
{
    if constexpr (S == 8) c.wr<uint64_t>(c.lin(i, 8, true), c.r[i.reg / 8]);
    else c.wr<uint32_t>(c.lin(i, 4, true), uint32_t(c.r[i.reg / 8]));
}
template <int PD, int S, int M> void movmsk(Core& c, Insn const& i)
{
    sse_check(c);
    X x = xr(c, i.rm);
    uint32_t r = PD ? uint32_t((x.q[0] >> 63) | ((x.q[1] >> 63) << 1))
                    : uint32_t(((x.q[0] >> 31) & 1) | ((x.q[0] >> 62) & 2) | (((x.q[1] >> 31) & 1) << 2) | (((x.q[1] >> 63) & 1) << 3));
    c.r[i.reg / 8] = r;
}
template <int S, int M> void pmovmskb(Core& c, Insn const& i)
{
    sse_check(c);
    v16qu v = as<v16qu>(xr(c, i.rm));
    uint32_t r = 0;
    for (int k = 0; k < 16; ++k) r |= uint32_t(v[k] >> 7) << k;
    c.r[i.reg / 8] = r;
}

// ---- packed integer and logic (A selects the operation)
enum PI {
    PAND, PANDN, POR, PXOR, PADDB, PADDW, PADDD, PADDQ, PSUBB, PSUBW, PSUBD, PSUBQ, PCMPEQB, PCMPEQW, PCMPEQD,
    PCMPGTB, PCMPGTW, PCMPGTD, PMINUB, PMAXUB, PMINSW, PMAXSW, PAVGB, PAVGW, PMULLW, PMULHW, PMULHUW, PMULUDQ,
    PADDUSB, PADDUSW, PSUBUSB, PSUBUSW, PADDSB, PADDSW, PSUBSB, PSUBSW, PUNPCKLBW, PUNPCKLWD, PUNPCKLDQ,
    PUNPCKLQDQ, PUNPCKHBW, PUNPCKHWD, PUNPCKHDQ, PUNPCKHQDQ, PACKSSWB, PACKSSDW, PACKUSWB, PMADDWD, PSADBW,
    ANDPS, ANDNPS, ORPS, XORPS, UNPCKLPS, UNPCKHPS, UNPCKLPD, UNPCKHPD
};
template <int A, int S, int M> void pint(Core& c, Insn const& i)
{
    sse_check(c);
    X a = xr(c, i.reg), b = src128<M>(c, i, M && A < ANDPS); // legacy SSE: 16-byte alignment for m128
    X r;
    auto B = [&](auto f) {
        v16qu x = as<v16qu>(a), y = as<v16qu>(b), z;
        for (int k = 0; k < 16; ++k) z[k] = f(x[k], y[k]);
        r = from(z);
    };
    auto Wd = [&](auto f) {
        v8hu x = as<v8hu>(a), y = as<v8hu>(b), z;
        for (int k = 0; k < 8; ++k) z[k] = f(x[k], y[k]);
        r = from(z);
    };
    switch (A) {
    case PAND: case ANDPS: r = from(as<v2du>(a) & as<v2du>(b)); break;
    case PANDN: case ANDNPS: r = from(~as<v2du>(a) & as<v2du>(b)); break;
    case POR: case ORPS: r = from(as<v2du>(a) | as<v2du>(b)); break;
    case PXOR: case XORPS: r = from(as<v2du>(a) ^ as<v2du>(b)); break;
    case PADDB: r = from(as<v16qu>(a) + as<v16qu>(b)); break;
    case PADDW: r = from(as<v8hu>(a) + as<v8hu>(b)); break;
    case PADDD: r = from(as<v4su>(a) + as<v4su>(b)); break;
    case PADDQ: r = from(as<v2du>(a) + as<v2du>(b)); break;
    case PSUBB: r = from(as<v16qu>(a) - as<v16qu>(b)); break;
    case PSUBW: r = from(as<v8hu>(a) - as<v8hu>(b)); break;
    case PSUBD: r = from(as<v4su>(a) - as<v4su>(b)); break;
    case PSUBQ: r = from(as<v2du>(a) - as<v2du>(b)); break;
    case PCMPEQB: r = from(as<v16qi>(a) == as<v16qi>(b)); break;
    case PCMPEQW: r = from(as<v8hi>(a) == as<v8hi>(b)); break;
    case PCMPEQD: r = from(as<v4si>(a) == as<v4si>(b)); break;
    case PCMPGTB: r = from(as<v16qi>(a) > as<v16qi>(b)); break;
    case PCMPGTW: r = from(as<v8hi>(a) > as<v8hi>(b)); break;
    case PCMPGTD: r = from(as<v4si>(a) > as<v4si>(b)); break;
    case PMINUB: B([](uint8_t x, uint8_t y) { return x < y ? x : y; }); break;
    case PMAXUB: B([](uint8_t x, uint8_t y) { return x > y ? x : y; }); break;
    case PMINSW: Wd([](uint16_t x, uint16_t y) { return int16_t(x) < int16_t(y) ? x : y; }); break;
    case PMAXSW: Wd([](uint16_t x, uint16_t y) { return int16_t(x) > int16_t(y) ? x : y; }); break;
    case PAVGB: B([](uint8_t x, uint8_t y) { return uint8_t((x + y + 1) >> 1); }); break;
    case PAVGW: Wd([](uint16_t x, uint16_t y) { return uint16_t((x + y + 1) >> 1); }); break;
    case PMULLW: Wd([](uint16_t x, uint16_t y) { return uint16_t(x * y); }); break;
    case PMULHW: Wd([](uint16_t x, uint16_t y) { return uint16_t((int32_t(int16_t(x)) * int16_t(y)) >> 16); }); break;
    case PMULHUW: Wd([](uint16_t x, uint16_t y) { return uint16_t((uint32_t(x) * y) >> 16); }); break;
    case PMULUDQ: r = X { { uint64_t(uint32_t(a.q[0])) * uint32_t(b.q[0]), uint64_t(uint32_t(a.q[1])) * uint32_t(b.q[1]) } }; break;
    case PADDUSB: B([](uint8_t x, uint8_t y) { return sat<uint8_t>(int(x) + y); }); break;
    case PADDUSW: Wd([](uint16_t x, uint16_t y) { return sat<uint16_t>(int(x) + y); }); break;
    case PSUBUSB: B([](uint8_t x, uint8_t y) { return sat<uint8_t>(int(x) - y); }); break;
    case PSUBUSW: Wd([](uint16_t x, uint16_t y) { return sat<uint16_t>(int(x) - y); }); break;
    case PADDSB: B([](uint8_t x, uint8_t y) { return uint8_t(sat<int8_t>(int(int8_t(x)) + int8_t(y))); }); break;
    case PADDSW: Wd([](uint16_t x, uint16_t y) { return uint16_t(sat<int16_t>(int(int16_t(x)) + int16_t(y))); }); break;
    case PSUBSB: B([](uint8_t x, uint8_t y) { return uint8_t(sat<int8_t>(int(int8_t(x)) - int8_t(y))); }); break;
    case PSUBSW: Wd([](uint16_t x, uint16_t y) { return uint16_t(sat<int16_t>(int(int16_t(x)) - int16_t(y))); }); break;
    case PUNPCKLBW: case PUNPCKHBW: {
        v16qu x = as<v16qu>(a), y = as<v16qu>(b), z;
        int o = A == PUNPCKHBW ? 8 : 0;
        for (int k = 0; k < 8; ++k) { z[2 * k] = x[o + k]; z[2 * k + 1] = y[o + k]; }
        r = from(z);
        break;
    }
    case PUNPCKLWD: case PUNPCKHWD: {
        v8hu x = as<v8hu>(a), y = as<v8hu>(b), z;
        int o = A == PUNPCKHWD ? 4 : 0;
        for (int k = 0; k < 4; ++k) { z[2 * k] = x[o + k]; z[2 * k + 1] = y[o + k]; }
        r = from(z);
        break;
    }
    case PUNPCKLDQ: case PUNPCKHDQ: case UNPCKLPS: case UNPCKHPS: {
        v4su x = as<v4su>(a), y = as<v4su>(b), z;
        int o = (A == PUNPCKHDQ || A == UNPCKHPS) ? 2 : 0;
        for (int k = 0; k < 2; ++k) { z[2 * k] = x[o + k]; z[2 * k + 1] = y[o + k]; }
        r = from(z);
        break;
    }
    case PUNPCKLQDQ: case UNPCKLPD: r = X { { a.q[0], b.q[0] } }; break;
    case PUNPCKHQDQ: case UNPCKHPD: r = X { { a.q[1], b.q[1] } }; break;
    case PACKSSWB: case PACKUSWB: {
        v8hi x = as<v8hi>(a), y = as<v8hi>(b);
        v16qu z;
        for (int k = 0; k < 8; ++k) {
            z[k] = A == PACKSSWB ? uint8_t(sat<int8_t>(int(x[k]))) : sat<uint8_t>(int(x[k]));
            z[8 + k] = A == PACKSSWB ? uint8_t(sat<int8_t>(int(y[k]))) : sat<uint8_t>(int(y[k]));
        }
        r = from(z);
        break;
    }
    case PACKSSDW: {
        v4si x = as<v4si>(a), y = as<v4si>(b);
        v8hu z;
        for (int k = 0; k < 4; ++k) {
            z[k] = uint16_t(sat<int16_t>(int64_t(x[k])));
            z[4 + k] = uint16_t(sat<int16_t>(int64_t(y[k])));
        }
        r = from(z);
        break;
    }
    case PMADDWD: {
        v8hi x = as<v8hi>(a), y = as<v8hi>(b);
        v4si z;
        for (int k = 0; k < 4; ++k) z[k] = int32_t(uint32_t(int32_t(x[2 * k]) * y[2 * k]) + uint32_t(int32_t(x[2 * k + 1]) * y[2 * k + 1]));
        r = from(z);
        break;
    }
    case PSADBW: {
        v16qu x = as<v16qu>(a), y = as<v16qu>(b);
        uint64_t s0 = 0, s1 = 0;
        for (int k = 0; k < 8; ++k) s0 += uint64_t(std::abs(int(x[k]) - int(y[k])));
        for (int k = 8; k < 16; ++k) s1 += uint64_t(std::abs(int(x[k]) - int(y[k])));
        r = X { { s0, s1 } };
        break;
    }
    }
    xr(c, i.reg) = r;
}

// Shifts: by XMM/m128 count (A: 0 psrlw 1 psrld 2 psrlq 3 psraw 4 psrad 5 psllw 6 pslld 7 psllq)
inline X shift(X a, unsigned op, uint64_t n)
{
    switch (op) {
    case 0: return n > 15 ? X {} : from(as<v8hu>(a) >> uint16_t(n));
    case 1: return n > 31 ? X {} : from(as<v4su>(a) >> uint32_t(n));
    case 2: return n > 63 ? X {} : from(as<v2du>(a) >> n);
    case 3: return from(as<v8hi>(a) >> int16_t(n > 15 ? 15 : n));
    case 4: return from(as<v4si>(a) >> int32_t(n > 31 ? 31 : n));
    case 5: return n > 15 ? X {} : from(as<v8hu>(a) << uint16_t(n));
    case 6: return n > 31 ? X {} : from(as<v4su>(a) << uint32_t(n));
    default: return n > 63 ? X {} : from(as<v2du>(a) << n);
    }
}
template <int A, int S, int M> void pshift_x(Core& c, Insn const& i)
{
    sse_check(c);
    X b = src128<M>(c, i, true);
    xr(c, i.reg) = shift(xr(c, i.reg), A, b.q[0]);
}
// 66 0F 71/72/73 /r ib on the r/m register. A: group (0: 71 words, 1: 72 dwords, 2: 73 qwords)
template <int A, int S, int M> void pshift_i(Core& c, Insn const& i)
{
    sse_check(c);
    unsigned sub = (i.modrm >> 3) & 7;
    X& d = xr(c, i.rm);
    unsigned n = unsigned(i.imm);
    if (A == 2 && (sub == 3 || sub == 7)) { // PSRLDQ / PSLLDQ: bytes
        unsigned __int128 v = (unsigned __int128)d.q[1] << 64 | d.q[0];
        v = n > 15 ? 0 : sub == 3 ? v >> (8 * n) : v << (8 * n);
        d = X { { uint64_t(v), uint64_t(v >> 64) } };
        return;
    }
    static constexpr int kMap[3][8] = { { -1, -1, 0, -1, 3, -1, 5, -1 }, { -1, -1, 1, -1, 4, -1, 6, -1 }, { -1, -1, 2, -1, -1, -1, 7, -1 } };
    int op = kMap[A][sub];
    if (op < 0) c.raise(UD);
    d = shift(d, unsigned(op), n);
}
template <int K, int S, int M> void pshuf(Core& c, Insn const& i) // K: 0 pshufd, 1 pshufhw, 2 pshuflw
{
    sse_check(c);
    X s = src128<M>(c, i, true);
    unsigned m = unsigned(i.imm);
    X r;
    if (K == 0) {
        v4su v = as<v4su>(s), z;
        for (int k = 0; k < 4; ++k) z[k] = v[(m >> (2 * k)) & 3];
        r = from(z);
    } else {
        v8hu v = as<v8hu>(s), z = v;
        int o = K == 1 ? 4 : 0;
        for (int k = 0; k < 4; ++k) z[o + k] = v[o + ((m >> (2 * k)) & 3)];
        r = from(z);
    }
    xr(c, i.reg) = r;
}
template <int PD, int S, int M> void shufp(Core& c, Insn const& i)
{
    sse_check(c);
    X a = xr(c, i.reg), b = src128<M>(c, i, true);
    unsigned m = unsigned(i.imm);
    if (PD) {
        xr(c, i.reg) = X { { a.q[m & 1], b.q[(m >> 1) & 1] } };
    } else {
        v4su x = as<v4su>(a), y = as<v4su>(b), z;
        z[0] = x[m & 3]; z[1] = x[(m >> 2) & 3]; z[2] = y[(m >> 4) & 3]; z[3] = y[(m >> 6) & 3];
        xr(c, i.reg) = from(z);
    }
}
template <int S, int M> void pextrw(Core& c, Insn const& i)
{
    sse_check(c);
    c.r[i.reg / 8] = as<v8hu>(xr(c, i.rm))[i.imm & 7];
}
template <int S, int M> void pinsrw(Core& c, Insn const& i)
{
    sse_check(c);
    uint16_t v = M ? c.rd<uint16_t>(c.lin(i, 2, false)) : uint16_t(c.r[i.rm / 8]);
    v8hu d = as<v8hu>(xr(c, i.reg));
    d[i.imm & 7] = v;
    xr(c, i.reg) = from(d);
}

// ---- floating point. A = op (0 add 1 mul 2 sub 3 div 4 min 5 max 6 sqrt); T: 0 ps 1 pd 2 ss 3 sd
template <class F> F fop(unsigned op, F a, F b)
{
    switch (op) {
    case 0: return a + b;
    case 1: return a * b;
    case 2: return a - b;
    case 3: return a / b;
    case 4: return a < b ? a : b; // MIN/MAX return the second operand on NaN or equal (APM)
    case 5: return a > b ? a : b;
    default: return std::sqrt(b);
    }
}
template <int A, int S, int M, int T> void farith_t(Core& c, Insn const& i)
{
    sse_check(c);
    X& d = xr(c, i.reg);
    if constexpr (T == 0 || T == 1) {
        X b = src128<M>(c, i, true);
        if (T == 0) {
            v4sf x = as<v4sf>(d), y = as<v4sf>(b), z;
            for (int k = 0; k < 4; ++k) z[k] = fop<float>(A, x[k], y[k]);
            d = from(z);
        } else {
            v2df x = as<v2df>(d), y = as<v2df>(b), z;
            for (int k = 0; k < 2; ++k) z[k] = fop<double>(A, x[k], y[k]);
            d = from(z);
        }
    } else if constexpr (T == 2) {
        uint32_t bv = src32<M>(c, i), av = uint32_t(d.q[0]);
        float x, y;
        std::memcpy(&x, &av, 4);
        std::memcpy(&y, &bv, 4);
        float z = fop<float>(A, x, y);
        uint32_t zv;
        std::memcpy(&zv, &z, 4);
        d.q[0] = (d.q[0] & ~0xFFFFFFFFull) | zv;
    } else {
        uint64_t bv = src64<M>(c, i), av = d.q[0];
        double x, y;
        std::memcpy(&x, &av, 8);
        std::memcpy(&y, &bv, 8);
        double z = fop<double>(A, x, y);
        std::memcpy(&d.q[0], &z, 8);
    }
}
template <int A, int S, int M> void f_ps(Core& c, Insn const& i) { farith_t<A, S, M, 0>(c, i); }
template <int A, int S, int M> void f_pd(Core& c, Insn const& i) { farith_t<A, S, M, 1>(c, i); }
template <int A, int S, int M> void f_ss(Core& c, Insn const& i) { farith_t<A, S, M, 2>(c, i); }
template <int A, int S, int M> void f_sd(Core& c, Insn const& i) { farith_t<A, S, M, 3>(c, i); }

template <class F> bool fcmp(unsigned pred, F a, F b)
{
    bool un = std::isnan(a) || std::isnan(b);
    switch (pred & 7) {
    case 0: return !un && a == b;
    case 1: return !un && a < b;
    case 2: return !un && a <= b;
    case 3: return un;
    case 4: return un || a != b;
    case 5: return un || !(a < b);
    case 6: return un || !(a <= b);
    default: return !un;
    }
}
template <int T, int S, int M> void cmpp(Core& c, Insn const& i)
{
    sse_check(c);
    X& d = xr(c, i.reg);
    unsigned p = unsigned(i.imm);
    if (T == 0 || T == 1) {
        X b = src128<M>(c, i, true);
        if (T == 0) {
            v4sf x = as<v4sf>(d), y = as<v4sf>(b);
            v4su z;
            for (int k = 0; k < 4; ++k) z[k] = fcmp(p, x[k], y[k]) ? ~0u : 0;
            d = from(z);
        } else {
            v2df x = as<v2df>(d), y = as<v2df>(b);
            v2du z;
            for (int k = 0; k < 2; ++k) z[k] = fcmp(p, x[k], y[k]) ? ~0ull : 0;
            d = from(z);
        }
    } else if (T == 2) {
        uint32_t bv = src32<M>(c, i), av = uint32_t(d.q[0]);
        float x, y;
        std::memcpy(&x, &av, 4);
        std::memcpy(&y, &bv, 4);
        d.q[0] = (d.q[0] & ~0xFFFFFFFFull) | (fcmp(p, x, y) ? 0xFFFFFFFFull : 0);
    } else {
        uint64_t bv = src64<M>(c, i);
        double x, y;
        std::memcpy(&x, &d.q[0], 8);
        std::memcpy(&y, &bv, 8);
        d.q[0] = fcmp(p, x, y) ? ~0ull : 0;
    }
}
// UCOMIS/COMIS: ZF,PF,CF = 111 unordered, 000 greater, 001 less, 100 equal; OF,SF,AF = 0.
template <int PD, int S, int M> void ucomis(Core& c, Insn const& i)
{
    sse_check(c);
    double x, y;
    if (PD) {
        uint64_t bv = src64<M>(c, i);
        std::memcpy(&x, &xr(c, i.reg).q[0], 8);
        std::memcpy(&y, &bv, 8);
    } else {
        uint32_t bv = src32<M>(c, i), av = uint32_t(xr(c, i.reg).q[0]);
        float fx, fy;
        std::memcpy(&fx, &av, 4);
        std::memcpy(&fy, &bv, 4);
        x = fx;
        y = fy;
    }
    c.materialize();
    c.flags &= ~kArith;
    if (std::isnan(x) || std::isnan(y)) c.flags |= ZF | PF | CF;
    else if (x < y) c.flags |= CF;
    else if (x == y) c.flags |= ZF;
}

// ---- conversions
template <class I, class F> I cvt_trunc(F v)
{
    // Out of range or NaN: the "integer indefinite" value (APM vol 4).
    if (std::isnan(v) || v >= F(std::numeric_limits<I>::max()) + F(1) || v < F(std::numeric_limits<I>::min()))
        return std::numeric_limits<I>::min();
    return I(v);
}
// The non-truncating conversions round as MXCSR.RC says (APM vol 4 CVTSD2SI etc.).
template <class I, class F> I cvt_round(F v, unsigned rc)
{
    if (std::isnan(v)) return std::numeric_limits<I>::min();
    F r = round_rc(v, rc);
    if (r >= F(std::numeric_limits<I>::max()) + F(1) || r < F(std::numeric_limits<I>::min())) return std::numeric_limits<I>::min();
    return I(r);
}
template <int SD, int S, int M> void cvtsi2s(Core& c, Insn const& i) // F3/F2 0F 2A
{
    sse_check(c);
    int64_t v;
    if constexpr (M) v = S == 8 ? int64_t(c.rd<uint64_t>(c.lin(i, 8, false))) : int64_t(int32_t(c.rd<uint32_t>(c.lin(i, 4, false))));
    else v = S == 8 ? int64_t(c.r[i.rm / 8]) : int64_t(int32_t(c.r[i.rm / 8]));
    X& d = xr(c, i.reg);
    if (SD) {
        double f = double(v);
        std::memcpy(&d.q[0], &f, 8);
    } else {
        float f = float(v);
        uint32_t b;
        std::memcpy(&b, &f, 4);
        d.q[0] = (d.q[0] & ~0xFFFFFFFFull) | b;
    }
}
template <int K, int S, int M> void cvts2si(Core& c, Insn const& i) // K: bit0 = sd, bit1 = truncate
{
    sse_check(c);
    double v;
    if (K & 1) {
        uint64_t b = src64<M>(c, i);
        std::memcpy(&v, &b, 8);
    } else {
        uint32_t b = src32<M>(c, i);
        float f;
        std::memcpy(&f, &b, 4);
        v = f;
    }
    if (S == 8) c.r[i.reg / 8] = uint64_t((K & 2) ? cvt_trunc<int64_t>(v) : cvt_round<int64_t>(v, mxcsr_rc(c)));
    else c.r[i.reg / 8] = uint32_t((K & 2) ? cvt_trunc<int32_t>(v) : cvt_round<int32_t>(v, mxcsr_rc(c)));
}
template <int K, int S, int M> void cvt_fp(Core& c, Insn const& i)
{
    // K: 0 cvtss2sd, 1 cvtsd2ss, 2 cvtps2pd, 3 cvtpd2ps, 4 cvtdq2ps, 5 cvtps2dq, 6 cvttps2dq,
    //    7 cvtdq2pd, 8 cvttpd2dq, 9 cvtpd2dq
    sse_check(c);
    X& d = xr(c, i.reg);
    if (K == 0) {
        uint32_t b = src32<M>(c, i);
        float f;
        std::memcpy(&f, &b, 4);
        double v = f;
        std::memcpy(&d.q[0], &v, 8);
        return;
    }
    if (K == 1) {
        uint64_t b = src64<M>(c, i);
        double v;
        std::memcpy(&v, &b, 8);
        float f = float(v);
        uint32_t u;
        std::memcpy(&u, &f, 4);
        d.q[0] = (d.q[0] & ~0xFFFFFFFFull) | u;
        return;
    }
    X s = (K == 2 || K == 7) ? X { { src64<M>(c, i), 0 } } : src128<M>(c, i, true);
    X r {};
    unsigned rc = mxcsr_rc(c);
    switch (K) {
    case 2: { v4sf a = as<v4sf>(s); v2df z = { a[0], a[1] }; r = from(z); break; }
    case 3: { v2df a = as<v2df>(s); v4sf z = { float(a[0]), float(a[1]), 0, 0 }; r = from(z); break; }
    case 4: { v4si a = as<v4si>(s); v4sf z; for (int k = 0; k < 4; ++k) z[k] = float(a[k]); r = from(z); break; }
    case 5: { v4sf a = as<v4sf>(s); v4si z; for (int k = 0; k < 4; ++k) z[k] = cvt_round<int32_t>(a[k], rc); r = from(z); break; }
    case 6: { v4sf a = as<v4sf>(s); v4si z; for (int k = 0; k < 4; ++k) z[k] = cvt_trunc<int32_t>(a[k]); r = from(z); break; }
    case 7: { v4si a = as<v4si>(s); v2df z = { double(a[0]), double(a[1]) }; r = from(z); break; }
    case 8: { v2df a = as<v2df>(s); v4si z = { cvt_trunc<int32_t>(a[0]), cvt_trunc<int32_t>(a[1]), 0, 0 }; r = from(z); break; }
    case 9: { v2df a = as<v2df>(s); v4si z = { cvt_round<int32_t>(a[0], rc), cvt_round<int32_t>(a[1], rc), 0, 0 }; r = from(z); break; }
    }
    d = r;
}

// ---- MXCSR, FXSAVE/FXRSTOR (APM vol 4 FXSAVE; the x87 part is saved in its reset state)
template <int S, int M> void ldmxcsr(Core& c, Insn const& i)
{
    sse_check(c);
    uint32_t v = c.rd<uint32_t>(c.lin(i, 4, false));
    if (v & ~0xFFFFu) c.raise(GP, 0);
    c.mxcsr = v;
}
template <int S, int M> void stmxcsr(Core& c, Insn const& i)
{
    sse_check(c);
    c.wr<uint32_t>(c.lin(i, 4, true), c.mxcsr);
}
// The 512-byte FXSAVE image (APM vol 5 FXSAVE, Table "FXSAVE format"): FCW, FSW, abridged FTW
// (1 = valid), ST0-ST7 by stack position at 32 + 16 i; FOP/FIP/FDP are not kept (saved as 0).
inline void fx_image(Core& c, uint8_t (&buf)[512])
{
    std::memset(buf, 0, sizeof buf);
    std::memcpy(buf + 0, &c.fcw, 2);
    std::memcpy(buf + 2, &c.fsw, 2);
    buf[4] = uint8_t(~c.ftag_empty);
    unsigned top = (c.fsw >> 11) & 7;
    for (unsigned k = 0; k < 8; ++k)
        std::memcpy(buf + 32 + 16 * k, &c.fpr[(top + k) & 7], 10);
    std::memcpy(buf + 24, &c.mxcsr, 4);
    uint32_t mask = 0xFFFF;
    std::memcpy(buf + 28, &mask, 4);
    unsigned n = c.mode64 ? 16 : 8;
    for (unsigned k = 0; k < n; ++k) std::memcpy(buf + 160 + 16 * k, c.xmm[k], 16);
}
inline uint64_t ld64(uint8_t const* p)
{
    uint64_t q;
    std::memcpy(&q, p, 8);
    return q;
}
template <int S, int M> void fxsave(Core& c, Insn const& i)
{
    if (c.cr0 & (cr0::EM | cr0::TS)) c.raise(c.cr0 & cr0::EM ? UD : NM);
    uint64_t a = c.lin(i, 512, true);
    if (a & 15) c.raise(GP, 0);
    uint8_t buf[512];
    fx_image(c, buf);
    for (unsigned k = 0; k < 512; k += 8) c.wr<uint64_t>(a + k, ld64(buf + k));
}
template <int S, int M> void fxrstor(Core& c, Insn const& i)
{
    if (c.cr0 & (cr0::EM | cr0::TS)) c.raise(c.cr0 & cr0::EM ? UD : NM);
    uint64_t a = c.lin(i, 512, false);
    if (a & 15) c.raise(GP, 0);
    uint32_t mx = c.rd<uint32_t>(a + 24);
    if (mx & ~0xFFFFu) c.raise(GP, 0);
    unsigned n = c.mode64 ? 16 : 8;
    uint16_t fcw = c.rd<uint16_t>(a), fsw = c.rd<uint16_t>(a + 2);
    uint8_t ftw = c.rd<uint8_t>(a + 4);
    long double st[8];
    for (unsigned k = 0; k < 8; ++k) {
        uint64_t m = c.rd<uint64_t>(a + 32 + 16 * k);
        uint16_t e = c.rd<uint16_t>(a + 40 + 16 * k);
        st[k] = 0;
        std::memcpy(&st[k], &m, 8);
        std::memcpy(reinterpret_cast<uint8_t*>(&st[k]) + 8, &e, 2);
    }
    for (unsigned k = 0; k < n; ++k) {
        c.xmm[k][0] = c.rd<uint64_t>(a + 160 + 16 * k);
        c.xmm[k][1] = c.rd<uint64_t>(a + 168 + 16 * k);
    }
    c.mxcsr = mx;
    c.fcw = fcw;
    c.fsw = fsw;
    c.ftag_empty = uint8_t(~ftw);
    unsigned top = (fsw >> 11) & 7;
    for (unsigned k = 0; k < 8; ++k)
        c.fpr[(top + k) & 7] = st[k];
}

// ---- XSAVE/XRSTOR/XSAVEOPT, standard format (APM vol 2 §11.5; Intel SDM vol 1 ch. 13). State
// components: 0 x87 and 1 SSE, both in the 512-byte legacy region (the FXSAVE layout); the
// XSAVE header follows at 512 (XSTATE_BV at +0, XCOMP_BV at +8). XINUSE is not tracked: every
// requested component is reported in use (XSTATE_BV bit set), which the architecture allows.
inline void xsave_check(Core& c, uint64_t a)
{
    if (!(c.cr4 & cr4::OSXSAVE)) c.raise(UD);
    if (c.cr0 & cr0::TS) c.raise(NM);
    if (a & 63) c.raise(GP, 0);
}
template <int S, int M> void xsave(Core& c, Insn const& i)
{
    if constexpr (M) {
        uint64_t a = c.lin(i, 576, true);
        xsave_check(c, a);
        uint64_t rfbm = c.xcr0 & ((c.r[RDX] << 32) | uint32_t(c.r[RAX]));
        uint64_t bv = c.rd<uint64_t>(a + 512);
        uint8_t buf[512];
        fx_image(c, buf);
        if (rfbm & 1) { // x87: bytes 0-23 and 32-159
            for (unsigned k = 0; k < 24; k += 8) c.wr<uint64_t>(a + k, ld64(buf + k));
            for (unsigned k = 32; k < 160; k += 8) c.wr<uint64_t>(a + k, ld64(buf + k));
        }
        if (rfbm & 2) { // SSE: MXCSR, MXCSR_MASK, XMM0-7 (XMM0-15 in 64-bit mode)
            c.wr<uint64_t>(a + 24, ld64(buf + 24));
            unsigned end = 160 + 16 * (c.mode64 ? 16 : 8);
            for (unsigned k = 160; k < end; k += 8) c.wr<uint64_t>(a + k, ld64(buf + k));
        }
        c.wr<uint64_t>(a + 512, (bv & ~rfbm) | rfbm);
    }
}
template <int S, int M> void xrstor(Core& c, Insn const& i)
{
    if constexpr (M) {
        uint64_t a = c.lin(i, 576, false);
        xsave_check(c, a);
        uint64_t rfbm = c.xcr0 & ((c.r[RDX] << 32) | uint32_t(c.r[RAX]));
        uint64_t bv = c.rd<uint64_t>(a + 512);
        // Standard form: XCOMP_BV and the next 8 bytes must be zero (XSAVEC is not supported),
        // XSTATE_BV may name only XCR0 components.
        if (c.rd<uint64_t>(a + 520) || c.rd<uint64_t>(a + 528) || (bv & ~c.xcr0)) c.raise(GP, 0);
        uint32_t mx = c.mxcsr;
        if (rfbm & 2) {
            mx = c.rd<uint32_t>(a + 24);
            if (mx & ~0xFFFFu) c.raise(GP, 0);
        }
        if (rfbm & 1) {
            if (bv & 1) {
                c.fcw = c.rd<uint16_t>(a);
                c.fsw = c.rd<uint16_t>(a + 2);
                c.ftag_empty = uint8_t(~c.rd<uint8_t>(a + 4));
                unsigned top = (c.fsw >> 11) & 7;
                for (unsigned k = 0; k < 8; ++k) {
                    long double st = 0;
                    uint64_t m = c.rd<uint64_t>(a + 32 + 16 * k);
                    uint16_t e = c.rd<uint16_t>(a + 40 + 16 * k);
                    std::memcpy(&st, &m, 8);
                    std::memcpy(reinterpret_cast<uint8_t*>(&st) + 8, &e, 2);
                    c.fpr[(top + k) & 7] = st;
                }
            } else { // x87 initial state (FNINIT plus zeroed registers)
                c.fcw = 0x37F;
                c.fsw = 0;
                c.ftag_empty = 0xFF;
                for (auto& f : c.fpr) f = 0;
            }
        }
        if (rfbm & 2) {
            unsigned n = c.mode64 ? 16 : 8;
            for (unsigned k = 0; k < n; ++k) {
                c.xmm[k][0] = (bv & 2) ? c.rd<uint64_t>(a + 160 + 16 * k) : 0;
                c.xmm[k][1] = (bv & 2) ? c.rd<uint64_t>(a + 168 + 16 * k) : 0;
            }
            c.mxcsr = mx; // loaded from memory whatever XSTATE_BV[1] says
        }
    }
}
template <int S, int M> void lfence_xrstor(Core& c, Insn const& i) { if constexpr (M) xrstor<S, M>(c, i); else (void)c; }
template <int S, int M> void mfence_xsaveopt(Core& c, Insn const& i)
{
    if constexpr (M) {
        if (i.pfx & kPfxOpsize) {
            // 66 0F AE /6 m8 is CLWB (APM vol 3 "CLWB"; Zen 2 and later), not an XSAVEOPT, which
            // takes no 66 prefix: write the line back. The memory controller's flush writes back
            // and evicts, which software cannot tell from a write-back that keeps the line.
            // (CPUID 7 EBX[24] stays clear: Linux does not use CLWB for anything sevemu needs.)
            uint64_t a = c.lin(i, 1, false);
            auto x = c.translate(a, false, false);
            if (c.mc.is_dram(Spa(x.spa))) c.mc.clflush(Spa(x.spa));
            c.brk = true; // as CLFLUSH: a flush may change what the decoded-code cache holds
        } else {
            xsave<S, M>(c, i);
        }
    } else {
        (void)c;
    }
}

template <int S, int M> void sse_nop(Core& c, Insn const&) { (void)c; }

} // namespace

void register_sse_ops(OpTables& t)
{
    auto& n = t.map[kMap0F];
    auto& o = t.map[kMap660F];
    auto& f3 = t.map[kMapF30F];
    auto& f2 = t.map[kMapF20F];
    constexpr uint16_t R = kModrm;
    set_op(n[0x10], "movups", R, Imm::None, SEVEMU_HA(movu_load, 0));
    set_op(o[0x10], "movupd", R, Imm::None, SEVEMU_HA(movu_load, 0));
    set_op(f3[0x10], "movss", R, Imm::None, SEVEMU_H(movss_load));
    set_op(f2[0x10], "movsd", R, Imm::None, SEVEMU_H(movsd_load));
    set_op(n[0x11], "movups", R, Imm::None, SEVEMU_HA(movu_store, 0));
    set_op(o[0x11], "movupd", R, Imm::None, SEVEMU_HA(movu_store, 0));
    set_op(f3[0x11], "movss", R, Imm::None, SEVEMU_H(movss_store));
    set_op(f2[0x11], "movsd", R, Imm::None, SEVEMU_H(movsd_store));
    set_op(n[0x12], "movlps", R, Imm::None, SEVEMU_HA(movlh_load, 0));
    set_op(o[0x12], "movlpd", R | kMemOnly, Imm::None, SEVEMU_HA(movlh_load, 0));
    set_op(n[0x13], "movlps", R | kMemOnly, Imm::None, SEVEMU_HA(movlh_store, 0));
    set_op(o[0x13], "movlpd", R | kMemOnly, Imm::None, SEVEMU_HA(movlh_store, 0));
    set_op(n[0x16], "movhps", R, Imm::None, SEVEMU_HA(movlh_load, 1));
    set_op(o[0x16], "movhpd", R | kMemOnly, Imm::None, SEVEMU_HA(movlh_load, 1));
    set_op(n[0x17], "movhps", R | kMemOnly, Imm::None, SEVEMU_HA(movlh_store, 1));
    set_op(o[0x17], "movhpd", R | kMemOnly, Imm::None, SEVEMU_HA(movlh_store, 1));
    set_op(n[0x14], "unpcklps", R, Imm::None, SEVEMU_HA(pint, UNPCKLPS));
    set_op(o[0x14], "unpcklpd", R, Imm::None, SEVEMU_HA(pint, UNPCKLPD));
    set_op(n[0x15], "unpckhps", R, Imm::None, SEVEMU_HA(pint, UNPCKHPS));
    set_op(o[0x15], "unpckhpd", R, Imm::None, SEVEMU_HA(pint, UNPCKHPD));
    set_op(n[0x28], "movaps", R, Imm::None, SEVEMU_HA(movu_load, 1));
    set_op(o[0x28], "movapd", R, Imm::None, SEVEMU_HA(movu_load, 1));
    set_op(n[0x29], "movaps", R, Imm::None, SEVEMU_HA(movu_store, 1));
    set_op(o[0x29], "movapd", R, Imm::None, SEVEMU_HA(movu_store, 1));
    set_op(n[0x2B], "movntps", R | kMemOnly, Imm::None, SEVEMU_HA(movu_store, 1));
    set_op(o[0x2B], "movntpd", R | kMemOnly, Imm::None, SEVEMU_HA(movu_store, 1));
    set_op(f3[0x2A], "cvtsi2ss", R, Imm::None, SEVEMU_HA(cvtsi2s, 0));
    set_op(f2[0x2A], "cvtsi2sd", R, Imm::None, SEVEMU_HA(cvtsi2s, 1));
    set_op(f3[0x2C], "cvttss2si", R, Imm::None, SEVEMU_HA(cvts2si, 2));
    set_op(f2[0x2C], "cvttsd2si", R, Imm::None, SEVEMU_HA(cvts2si, 3));
    set_op(f3[0x2D], "cvtss2si", R, Imm::None, SEVEMU_HA(cvts2si, 0));
    set_op(f2[0x2D], "cvtsd2si", R, Imm::None, SEVEMU_HA(cvts2si, 1));
    set_op(n[0x2E], "ucomiss", R, Imm::None, SEVEMU_HA(ucomis, 0));
    set_op(o[0x2E], "ucomisd", R, Imm::None, SEVEMU_HA(ucomis, 1));
    set_op(n[0x2F], "comiss", R, Imm::None, SEVEMU_HA(ucomis, 0));
    set_op(o[0x2F], "comisd", R, Imm::None, SEVEMU_HA(ucomis, 1));
    set_op(n[0x50], "movmskps", R | kRegOnly, Imm::None, SEVEMU_HA(movmsk, 0));
    set_op(o[0x50], "movmskpd", R | kRegOnly, Imm::None, SEVEMU_HA(movmsk, 1));
    // 51, 58-5F arithmetic
    static constexpr struct { uint8_t op; int a; char const* n; } kF[] = {
        { 0x51, 6, "sqrt" }, { 0x58, 0, "add" }, { 0x59, 1, "mul" }, { 0x5C, 2, "sub" }, { 0x5D, 4, "min" },
        { 0x5E, 3, "div" }, { 0x5F, 5, "max" } };
#define FROW(A)                                                                      \
    set_op(n[kF[A].op], kF[A].n, R, Imm::None, SEVEMU_HA(f_ps, kF[A].a));             \
    set_op(o[kF[A].op], kF[A].n, R, Imm::None, SEVEMU_HA(f_pd, kF[A].a));             \
    set_op(f3[kF[A].op], kF[A].n, R, Imm::None, SEVEMU_HA(f_ss, kF[A].a));            \
    set_op(f2[kF[A].op], kF[A].n, R, Imm::None, SEVEMU_HA(f_sd, kF[A].a));
    FROW(0) FROW(1) FROW(2) FROW(3) FROW(4) FROW(5) FROW(6)
#undef FROW
    set_op(n[0x54], "andps", R, Imm::None, SEVEMU_HA(pint, ANDPS));
    set_op(o[0x54], "andpd", R, Imm::None, SEVEMU_HA(pint, ANDPS));
    set_op(n[0x55], "andnps", R, Imm::None, SEVEMU_HA(pint, ANDNPS));
    set_op(o[0x55], "andnpd", R, Imm::None, SEVEMU_HA(pint, ANDNPS));
    set_op(n[0x56], "orps", R, Imm::None, SEVEMU_HA(pint, ORPS));
    set_op(o[0x56], "orpd", R, Imm::None, SEVEMU_HA(pint, ORPS));
    set_op(n[0x57], "xorps", R, Imm::None, SEVEMU_HA(pint, XORPS));
    set_op(o[0x57], "xorpd", R, Imm::None, SEVEMU_HA(pint, XORPS));
    set_op(f3[0x5A], "cvtss2sd", R, Imm::None, SEVEMU_HA(cvt_fp, 0));
    set_op(f2[0x5A], "cvtsd2ss", R, Imm::None, SEVEMU_HA(cvt_fp, 1));
    set_op(n[0x5A], "cvtps2pd", R, Imm::None, SEVEMU_HA(cvt_fp, 2));
    set_op(o[0x5A], "cvtpd2ps", R, Imm::None, SEVEMU_HA(cvt_fp, 3));
    set_op(n[0x5B], "cvtdq2ps", R, Imm::None, SEVEMU_HA(cvt_fp, 4));
    set_op(o[0x5B], "cvtps2dq", R, Imm::None, SEVEMU_HA(cvt_fp, 5));
    set_op(f3[0x5B], "cvttps2dq", R, Imm::None, SEVEMU_HA(cvt_fp, 6));
    set_op(f3[0xE6], "cvtdq2pd", R, Imm::None, SEVEMU_HA(cvt_fp, 7));
    set_op(o[0xE6], "cvttpd2dq", R, Imm::None, SEVEMU_HA(cvt_fp, 8));
    set_op(f2[0xE6], "cvtpd2dq", R, Imm::None, SEVEMU_HA(cvt_fp, 9));
    // 66 0F packed integer
    static constexpr struct { uint8_t op; int a; char const* n; } kP[] = {
        { 0x60, PUNPCKLBW, "punpcklbw" }, { 0x61, PUNPCKLWD, "punpcklwd" }, { 0x62, PUNPCKLDQ, "punpckldq" },
        { 0x63, PACKSSWB, "packsswb" }, { 0x64, PCMPGTB, "pcmpgtb" }, { 0x65, PCMPGTW, "pcmpgtw" },
        { 0x66, PCMPGTD, "pcmpgtd" }, { 0x67, PACKUSWB, "packuswb" }, { 0x68, PUNPCKHBW, "punpckhbw" },
        { 0x69, PUNPCKHWD, "punpckhwd" }, { 0x6A, PUNPCKHDQ, "punpckhdq" }, { 0x6B, PACKSSDW, "packssdw" },
        { 0x6C, PUNPCKLQDQ, "punpcklqdq" }, { 0x6D, PUNPCKHQDQ, "punpckhqdq" }, { 0x74, PCMPEQB, "pcmpeqb" },
        { 0x75, PCMPEQW, "pcmpeqw" }, { 0x76, PCMPEQD, "pcmpeqd" }, { 0xD4, PADDQ, "paddq" },
        { 0xD5, PMULLW, "pmullw" }, { 0xD8, PSUBUSB, "psubusb" }, { 0xD9, PSUBUSW, "psubusw" },
        { 0xDA, PMINUB, "pminub" }, { 0xDB, PAND, "pand" }, { 0xDC, PADDUSB, "paddusb" },
        { 0xDD, PADDUSW, "paddusw" }, { 0xDE, PMAXUB, "pmaxub" }, { 0xDF, PANDN, "pandn" },
        { 0xE0, PAVGB, "pavgb" }, { 0xE3, PAVGW, "pavgw" }, { 0xE4, PMULHUW, "pmulhuw" },
        { 0xE5, PMULHW, "pmulhw" }, { 0xE8, PSUBSB, "psubsb" }, { 0xE9, PSUBSW, "psubsw" },
        { 0xEA, PMINSW, "pminsw" }, { 0xEB, POR, "por" }, { 0xEC, PADDSB, "paddsb" }, { 0xED, PADDSW, "paddsw" },
        { 0xEE, PMAXSW, "pmaxsw" }, { 0xEF, PXOR, "pxor" }, { 0xF4, PMULUDQ, "pmuludq" },
        { 0xF5, PMADDWD, "pmaddwd" }, { 0xF6, PSADBW, "psadbw" }, { 0xF8, PSUBB, "psubb" },
        { 0xF9, PSUBW, "psubw" }, { 0xFA, PSUBD, "psubd" }, { 0xFB, PSUBQ, "psubq" }, { 0xFC, PADDB, "paddb" },
        { 0xFD, PADDW, "paddw" }, { 0xFE, PADDD, "paddd" } };
#define PROW(K) set_op(o[kP[K].op], kP[K].n, R, Imm::None, SEVEMU_HA(pint, kP[K].a));
    PROW(0) PROW(1) PROW(2) PROW(3) PROW(4) PROW(5) PROW(6) PROW(7) PROW(8) PROW(9) PROW(10) PROW(11) PROW(12)
    PROW(13) PROW(14) PROW(15) PROW(16) PROW(17) PROW(18) PROW(19) PROW(20) PROW(21) PROW(22) PROW(23) PROW(24)
    PROW(25) PROW(26) PROW(27) PROW(28) PROW(29) PROW(30) PROW(31) PROW(32) PROW(33) PROW(34) PROW(35) PROW(36)
    PROW(37) PROW(38) PROW(39) PROW(40) PROW(41) PROW(42) PROW(43) PROW(44) PROW(45) PROW(46) PROW(47) PROW(48)
#undef PROW
    static_assert(sizeof(kP) / sizeof(kP[0]) == 49);
    set_op(o[0x6E], "movd", R, Imm::None, SEVEMU_H(movd_to_xmm));
    set_op(o[0x7E], "movd", R, Imm::None, SEVEMU_H(movd_from_xmm));
    set_op(f3[0x7E], "movq", R, Imm::None, SEVEMU_H(movq_load));
    set_op(o[0xD6], "movq", R, Imm::None, SEVEMU_H(movq_store));
    set_op(o[0x6F], "movdqa", R, Imm::None, SEVEMU_HA(movu_load, 1));
    set_op(f3[0x6F], "movdqu", R, Imm::None, SEVEMU_HA(movu_load, 0));
    set_op(o[0x7F], "movdqa", R, Imm::None, SEVEMU_HA(movu_store, 1));
    set_op(f3[0x7F], "movdqu", R, Imm::None, SEVEMU_HA(movu_store, 0));
    set_op(o[0xE7], "movntdq", R | kMemOnly, Imm::None, SEVEMU_HA(movu_store, 1));
    set_op(n[0xC3], "movnti", R | kMemOnly, Imm::None, SEVEMU_H(movnti));
    set_op(o[0x70], "pshufd", R, Imm::B, SEVEMU_HA(pshuf, 0));
    set_op(f3[0x70], "pshufhw", R, Imm::B, SEVEMU_HA(pshuf, 1));
    set_op(f2[0x70], "pshuflw", R, Imm::B, SEVEMU_HA(pshuf, 2));
    set_op(o[0x71], "pshift", R | kRegOnly, Imm::B, SEVEMU_HA(pshift_i, 0));
    set_op(o[0x72], "pshift", R | kRegOnly, Imm::B, SEVEMU_HA(pshift_i, 1));
    set_op(o[0x73], "pshift", R | kRegOnly, Imm::B, SEVEMU_HA(pshift_i, 2));
    set_op(o[0xD1], "psrlw", R, Imm::None, SEVEMU_HA(pshift_x, 0));
    set_op(o[0xD2], "psrld", R, Imm::None, SEVEMU_HA(pshift_x, 1));
    set_op(o[0xD3], "psrlq", R, Imm::None, SEVEMU_HA(pshift_x, 2));
    set_op(o[0xE1], "psraw", R, Imm::None, SEVEMU_HA(pshift_x, 3));
    set_op(o[0xE2], "psrad", R, Imm::None, SEVEMU_HA(pshift_x, 4));
    set_op(o[0xF1], "psllw", R, Imm::None, SEVEMU_HA(pshift_x, 5));
    set_op(o[0xF2], "pslld", R, Imm::None, SEVEMU_HA(pshift_x, 6));
    set_op(o[0xF3], "psllq", R, Imm::None, SEVEMU_HA(pshift_x, 7));
    set_op(o[0xD7], "pmovmskb", R | kRegOnly, Imm::None, SEVEMU_H(pmovmskb));
    set_op(o[0xC5], "pextrw", R | kRegOnly, Imm::B, SEVEMU_H(pextrw));
    set_op(o[0xC4], "pinsrw", R, Imm::B, SEVEMU_H(pinsrw));
    set_op(n[0xC2], "cmpps", R, Imm::B, SEVEMU_HA(cmpp, 0));
    set_op(o[0xC2], "cmppd", R, Imm::B, SEVEMU_HA(cmpp, 1));
    set_op(f3[0xC2], "cmpss", R, Imm::B, SEVEMU_HA(cmpp, 2));
    set_op(f2[0xC2], "cmpsd", R, Imm::B, SEVEMU_HA(cmpp, 3));
    set_op(n[0xC6], "shufps", R, Imm::B, SEVEMU_HA(shufp, 0));
    set_op(o[0xC6], "shufpd", R, Imm::B, SEVEMU_HA(shufp, 1));
    // 0F AE group 15, memory forms
    set_op(t.grp[15][0], "fxsave", kMemOnly, Imm::None, SEVEMU_H(fxsave));
    set_op(t.grp[15][1], "fxrstor", kMemOnly, Imm::None, SEVEMU_H(fxrstor));
    set_op(t.grp[15][2], "ldmxcsr", kMemOnly, Imm::None, SEVEMU_H(ldmxcsr));
    set_op(t.grp[15][3], "stmxcsr", kMemOnly, Imm::None, SEVEMU_H(stmxcsr));
    // /4-/6 memory forms: XSAVE, XRSTOR, XSAVEOPT; the register forms of /5 and /6 are LFENCE, MFENCE.
    set_op(t.grp[15][4], "xsave", kMemOnly, Imm::None, SEVEMU_H(xsave));
    set_op(t.grp[15][5], "lfence/xrstor", 0, Imm::None, SEVEMU_H(lfence_xrstor));
    set_op(t.grp[15][6], "mfence/xsaveopt", 0, Imm::None, SEVEMU_H(mfence_xsaveopt));
}

} // namespace sevemu::cpu
