// sevemu — helpers shared by the 128-bit media handler files (exec_sse.cpp: SSE/SSE2,
// exec_sse4.cpp: SSE3/SSSE3/SSE4.1/SSE4.2): XMM access, memory operands with the legacy-SSE
// alignment rule, the exception checks and MXCSR rounding. Internal to cpu/.
#pragma once

#include "cpu/ops.h"

#include <cmath>
#include <cstring>
#include <limits>

namespace sevemu::cpu::sse {

typedef int8_t v16qi __attribute__((vector_size(16)));
typedef uint8_t v16qu __attribute__((vector_size(16)));
typedef int16_t v8hi __attribute__((vector_size(16)));
typedef uint16_t v8hu __attribute__((vector_size(16)));
typedef int32_t v4si __attribute__((vector_size(16)));
typedef uint32_t v4su __attribute__((vector_size(16)));
typedef int64_t v2di __attribute__((vector_size(16)));
typedef uint64_t v2du __attribute__((vector_size(16)));
typedef float v4sf __attribute__((vector_size(16)));
typedef double v2df __attribute__((vector_size(16)));

struct X {
    uint64_t q[2];
};
template <class V> inline V as(X const& x) { V v; std::memcpy(&v, &x, 16); return v; }
template <class V> inline X from(V const& v) { X x; std::memcpy(&x, &v, 16); return x; }

// APM vol 4 §2.x exception rules: CR0.EM or !CR4.OSFXSR -> #UD; CR0.TS -> #NM.
inline void sse_check(Core& c)
{
    if (SEVEMU_UNLIKELY((c.cr0 & cr0::EM) || !(c.cr4 & cr4::OSFXSR))) c.raise(UD);
    if (SEVEMU_UNLIKELY(c.cr0 & cr0::TS)) c.raise(NM);
}
inline X& xr(Core& c, uint8_t off) { return *reinterpret_cast<X*>(c.xmm[off / 8]); }
// A 128-bit r/m source; legacy-SSE m128 operands must be 16-byte aligned (#GP(0)) unless the
// instruction says otherwise (MOVUPS, LDDQU, PCMPxSTRx, ...).
template <int M> inline X src128(Core& c, Insn const& i, bool aligned = false)
{
    if constexpr (M) {
        uint64_t a = c.lin(i, 16, false);
        if (aligned && (a & 15)) c.raise(GP, 0);
        X x;
        x.q[0] = c.rd<uint64_t>(a);
        x.q[1] = c.rd<uint64_t>(a + 8);
        return x;
    } else {
        return xr(c, i.rm);
    }
}
template <int M> inline void dst128(Core& c, Insn const& i, X const& x, bool aligned = false)
{
    if constexpr (M) {
        uint64_t a = c.lin(i, 16, true);
        if (aligned && (a & 15)) c.raise(GP, 0);
        c.rd<uint64_t>(a + 8); // both halves checked before either is written
        c.wr<uint64_t>(a, x.q[0]);
        c.wr<uint64_t>(a + 8, x.q[1]);
    } else {
        xr(c, i.rm) = x;
    }
}
template <int M> inline uint64_t src64(Core& c, Insn const& i)
{
    if constexpr (M) return c.rd<uint64_t>(c.lin(i, 8, false));
    else return xr(c, i.rm).q[0];
}
template <int M> inline uint32_t src32(Core& c, Insn const& i)
{
    if constexpr (M) return c.rd<uint32_t>(c.lin(i, 4, false));
    else return uint32_t(xr(c, i.rm).q[0]);
}

template <class T, class W> inline T sat(W v)
{
    W lo = W(std::numeric_limits<T>::min()), hi = W(std::numeric_limits<T>::max());
    return T(v < lo ? lo : v > hi ? hi : v);
}

// MXCSR.RC (bits 14:13; APM vol 4 §3.1.2): 0 nearest-even, 1 down, 2 up, 3 toward zero.
inline unsigned mxcsr_rc(Core const& c) { return (c.mxcsr >> 13) & 3; }
// Round half to even without the host's rounding mode. clang before 17 has no
// __builtin_roundeven: std::round rounds ties away from zero, so an exact tie (fraction 0.5,
// where v / 2 is exact) is rounded as v / 2 to the nearest integer, times 2: the even neighbour.
// Signed zeros, infinities and NaNs come out as roundeven gives them.
template <class F> inline F round_half_even(F v)
{
#if defined(__has_builtin)
#if __has_builtin(__builtin_roundeven)
#define SEVEMU_HAS_ROUNDEVEN 1
#endif
#endif
#ifdef SEVEMU_HAS_ROUNDEVEN
    if constexpr (sizeof(F) == 4) return __builtin_roundevenf(v);
    else return __builtin_roundeven(v);
#else
    if (std::fabs(v - std::trunc(v)) == F(0.5))
        return F(2) * std::round(v / F(2));
    return std::round(v);
#endif
}

// Round to an integral value in the given mode, independent of the host's rounding mode.
template <class F> inline F round_rc(F v, unsigned rc)
{
    switch (rc & 3) {
    case 0: return round_half_even(v);
    case 1: return std::floor(v);
    case 2: return std::ceil(v);
    default: return std::trunc(v);
    }
}

} // namespace sevemu::cpu::sse
