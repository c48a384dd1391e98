// sevemu — the x87 floating-point unit (APM vol 5 "x87 Floating-Point Instruction Reference").
// Registers are kept as the host's 80-bit long double, which is the x87 double-extended format
// itself, so loads/stores of m80 are byte copies and arithmetic is the host x87's.
// Not modelled (QUIRKS.md): precision control (always 64-bit mantissa), unmasked exceptions
// (#MF), stack-fault and denormal flags, FPU instruction/data pointers (saved as 0), BCD
// (FBLD/FBSTP are #UD).
#include "cpu/ops.h"

#include <cfenv>
#include <cmath>

namespace sevemu::cpu {

namespace {

using namespace rflags;

constexpr uint16_t C0 = 1u << 8, C1 = 1u << 9, C2 = 1u << 10, C3 = 1u << 14, IE = 1, ZE = 4;

inline unsigned top(Core const& c) { return (c.fsw >> 11) & 7; }
inline void set_top(Core& c, unsigned t) { c.fsw = uint16_t((c.fsw & ~0x3800) | ((t & 7) << 11)); }
inline long double& st(Core& c, unsigned i) { return c.fpr[(top(c) + i) & 7]; }
inline bool st_empty(Core const& c, unsigned i) { return (c.ftag_empty >> ((top(c) + i) & 7)) & 1; }
inline void push(Core& c, long double v)
{
    unsigned t = (top(c) - 1) & 7;
    set_top(c, t);
    c.fpr[t] = v;
    c.ftag_empty &= uint8_t(~(1u << t));
}
inline void pop(Core& c)
{
    c.ftag_empty |= uint8_t(1u << top(c));
    set_top(c, top(c) + 1);
}
inline void fpu_check(Core& c)
{
    if (c.cr0 & (cr0::EM | cr0::TS)) c.raise(NM);
}

template <class T> T ld(Core& c, Insn const& i) { return c.rd<T>(c.lin(i, sizeof(T), false)); }
template <class T> void stv(Core& c, Insn const& i, T v) { c.wr<T>(c.lin(i, sizeof(T), true), v); }
long double ld_f32(Core& c, Insn const& i) { uint32_t u = ld<uint32_t>(c, i); float f; std::memcpy(&f, &u, 4); return f; }
long double ld_f64(Core& c, Insn const& i) { uint64_t u = ld<uint64_t>(c, i); double f; std::memcpy(&f, &u, 8); return f; }
long double ld_f80(Core& c, Insn const& i)
{
    uint64_t a = c.lin(i, 10, false);
    uint64_t m = c.rd<uint64_t>(a);
    uint16_t e = c.rd<uint16_t>(a + 8);
    long double v = 0;
    std::memcpy(&v, &m, 8);
    std::memcpy(reinterpret_cast<uint8_t*>(&v) + 8, &e, 2);
    return v;
}
void st_f80(Core& c, Insn const& i, long double v)
{
    uint64_t a = c.lin(i, 10, true);
    uint64_t m;
    uint16_t e;
    std::memcpy(&m, &v, 8);
    std::memcpy(&e, reinterpret_cast<uint8_t*>(&v) + 8, 2);
    c.rd<uint16_t>(a + 8);
    c.wr<uint64_t>(a, m);
    c.wr<uint16_t>(a + 8, e);
}

long double round_rc(Core const& c, long double v)
{
    switch ((c.fcw >> 10) & 3) {
    case 0: return std::nearbyintl(v); // host default is round-to-nearest-even
    case 1: return std::floor(v);
    case 2: return std::ceil(v);
    default: return std::trunc(v);
    }
}
template <class I> I to_int(Core& c, long double v, bool truncate)
{
    long double r = truncate ? std::trunc(v) : round_rc(c, v);
    if (std::isnan(r) || r > (long double)std::numeric_limits<I>::max() || r < (long double)std::numeric_limits<I>::min()) {
        c.fsw |= IE;
        return std::numeric_limits<I>::min(); // integer indefinite
    }
    return I(r);
}

void arith(Core& c, unsigned op, long double& d, long double s)
{
    switch (op) {
    case 0: d = d + s; break;
    case 1: d = d * s; break;
    case 4: d = d - s; break;
    case 5: d = s - d; break;
    case 6: if (s == 0 && !std::isnan(d)) c.fsw |= ZE; d = d / s; break;
    case 7: if (d == 0 && !std::isnan(s)) c.fsw |= ZE; d = s / d; break;
    }
}
void compare(Core& c, long double a, long double b)
{
    c.fsw &= uint16_t(~(C0 | C2 | C3));
    if (std::isnan(a) || std::isnan(b)) c.fsw |= C0 | C2 | C3;
    else if (a < b) c.fsw |= C0;
    else if (a == b) c.fsw |= C3;
}
void comi(Core& c, long double a, long double b)
{
    c.materialize();
    c.flags &= ~(ZF | PF | CF | OF | SF | AF);
    if (std::isnan(a) || std::isnan(b)) c.flags |= ZF | PF | CF;
    else if (a < b) c.flags |= CF;
    else if (a == b) c.flags |= ZF;
}
uint16_t full_tag(Core const& c)
{
    uint16_t t = 0;
    for (unsigned k = 0; k < 8; ++k) {
        unsigned tag;
        if ((c.ftag_empty >> k) & 1) tag = 3;
        else if (c.fpr[k] == 0) tag = 1;
        else if (std::isnan(c.fpr[k]) || std::isinf(c.fpr[k]) || std::fpclassify(c.fpr[k]) == FP_SUBNORMAL) tag = 2;
        else tag = 0;
        t = uint16_t(t | (tag << (2 * k)));
    }
    return t;
}
void finit(Core& c)
{
    c.fcw = 0x37F;
    c.fsw = 0;
    c.ftag_empty = 0xFF;
}
// FNSTENV/FLDENV, 32-bit protected-mode layout (28 bytes) or 16-bit (14 bytes).
void store_env(Core& c, uint64_t a, bool o16)
{
    unsigned w = o16 ? 2 : 4;
    uint32_t vals[7] = { c.fcw, c.fsw, full_tag(c), 0, 0, 0, 0 };
    for (unsigned k = 0; k < 7; ++k) {
        if (o16) c.wr<uint16_t>(a + k * w, uint16_t(vals[k]));
        else c.wr<uint32_t>(a + k * w, vals[k] | (k < 3 ? 0xFFFF0000u : 0));
    }
}
void load_env(Core& c, uint64_t a, bool o16)
{
    unsigned w = o16 ? 2 : 4;
    c.fcw = c.rd<uint16_t>(a);
    c.fsw = c.rd<uint16_t>(a + w);
    uint16_t tag = c.rd<uint16_t>(a + 2 * w);
    c.ftag_empty = 0;
    for (unsigned k = 0; k < 8; ++k)
        if (((tag >> (2 * k)) & 3) == 3) c.ftag_empty |= uint8_t(1u << k);
}

template <int ESC, int S, int M> void x87(Core& c, Insn const& i)
{
    fpu_check(c);
    unsigned reg = (i.modrm >> 3) & 7, rm = i.modrm & 7;
    if constexpr (M) {
        switch (ESC) {
        case 0: arith_or_cmp: {
            long double v = ESC == 0 ? ld_f32(c, i) : ESC == 4 ? ld_f64(c, i) : ESC == 2 ? (long double)int32_t(ld<uint32_t>(c, i)) : (long double)int16_t(ld<uint16_t>(c, i));
            if (reg == 2 || reg == 3) {
                compare(c, st(c, 0), v);
                if (reg == 3) pop(c);
            } else {
                arith(c, reg, st(c, 0), v);
            }
            return;
        }
        case 2: case 4: case 6: goto arith_or_cmp;
        case 1:
            switch (reg) {
            case 0: push(c, ld_f32(c, i)); return;
            case 2: case 3: { float f = float(st(c, 0)); uint32_t u; std::memcpy(&u, &f, 4); stv<uint32_t>(c, i, u); if (reg == 3) pop(c); return; }
            case 4: load_env(c, c.lin(i, 28, false), S == 2); return;
            case 5: c.fcw = ld<uint16_t>(c, i); return;
            case 6: store_env(c, c.lin(i, 28, true), S == 2); return;
            case 7: stv<uint16_t>(c, i, c.fcw); return;
            }
            break;
        case 3:
            switch (reg) {
            case 0: push(c, (long double)int32_t(ld<uint32_t>(c, i))); return;
            case 1: stv<uint32_t>(c, i, uint32_t(to_int<int32_t>(c, st(c, 0), true))); pop(c); return;
            case 2: case 3: stv<uint32_t>(c, i, uint32_t(to_int<int32_t>(c, st(c, 0), false))); if (reg == 3) pop(c); return;
            case 5: push(c, ld_f80(c, i)); return;
            case 7: st_f80(c, i, st(c, 0)); pop(c); return;
            }
            break;
        case 5:
            switch (reg) {
            case 0: push(c, ld_f64(c, i)); return;
            case 1: stv<uint64_t>(c, i, uint64_t(to_int<int64_t>(c, st(c, 0), true))); pop(c); return;
            case 2: case 3: { double f = double(st(c, 0)); uint64_t u; std::memcpy(&u, &f, 8); stv<uint64_t>(c, i, u); if (reg == 3) pop(c); return; }
            case 4: { // FRSTOR
                uint64_t a = c.lin(i, 108, false);
                unsigned env = S == 2 ? 14 : 28;
                load_env(c, a, S == 2);
                for (unsigned k = 0; k < 8; ++k) {
                    long double v = 0;
                    uint64_t m = c.rd<uint64_t>(a + env + 10 * k);
                    uint16_t e = c.rd<uint16_t>(a + env + 10 * k + 8);
                    std::memcpy(&v, &m, 8);
                    std::memcpy(reinterpret_cast<uint8_t*>(&v) + 8, &e, 2);
                    st(c, k) = v;
                }
                return;
            }
            case 6: { // FNSAVE
                uint64_t a = c.lin(i, 108, true);
                unsigned env = S == 2 ? 14 : 28;
                store_env(c, a, S == 2);
                for (unsigned k = 0; k < 8; ++k) {
                    long double v = st(c, k);
                    uint64_t m;
                    uint16_t e;
                    std::memcpy(&m, &v, 8);
                    std::memcpy(&e, reinterpret_cast<uint8_t*>(&v) + 8, 2);
                    c.wr<uint64_t>(a + env + 10 * k, m);
                    c.wr<uint16_t>(a + env + 10 * k + 8, e);
                }
                finit(c);
                return;
            }
            case 7: stv<uint16_t>(c, i, c.fsw); return;
            }
            break;
        case 7:
            switch (reg) {
            case 0: push(c, (long double)int16_t(ld<uint16_t>(c, i))); return;
            case 1: stv<uint16_t>(c, i, uint16_t(to_int<int16_t>(c, st(c, 0), true))); pop(c); return;
            case 2: case 3: stv<uint16_t>(c, i, uint16_t(to_int<int16_t>(c, st(c, 0), false))); if (reg == 3) pop(c); return;
            case 5: push(c, (long double)int64_t(ld<uint64_t>(c, i))); return;
            case 7: stv<uint64_t>(c, i, uint64_t(to_int<int64_t>(c, st(c, 0), false))); pop(c); return;
            }
            break;
        }
        c.raise(UD);
    } else {
        switch (ESC) {
        case 0: // st0 op= st(i)
            if (reg == 2 || reg == 3) { compare(c, st(c, 0), st(c, rm)); if (reg == 3) pop(c); }
            else arith(c, reg, st(c, 0), st(c, rm));
            return;
        case 4: // st(i) op= st0, with SUB/SUBR and DIV/DIVR exchanged
        case 6: {
            if (ESC == 6 && reg == 3) { // FCOMPP (DE D9)
                if (rm != 1) break;
                compare(c, st(c, 0), st(c, 1)); pop(c); pop(c); return;
            }
            if (reg == 2 || reg == 3) { compare(c, st(c, 0), st(c, rm)); if (reg == 3) pop(c); return; }
            static constexpr unsigned kSwap[8] = { 0, 1, 2, 3, 5, 4, 7, 6 };
            arith(c, kSwap[reg], st(c, rm), st(c, 0));
            if (ESC == 6) pop(c);
            return;
        }
        case 1:
            switch (reg) {
            case 0: { long double v = st(c, rm); push(c, v); return; }
            case 1: std::swap(st(c, 0), st(c, rm)); return;
            case 2: if (rm == 0) return; break; // FNOP
            case 4:
                switch (rm) {
                case 0: st(c, 0) = -st(c, 0); return;
                case 1: st(c, 0) = std::fabs(st(c, 0)); return;
                case 4: compare(c, st(c, 0), 0.0L); return;
                case 5: { // FXAM
                    long double v = st(c, 0);
                    c.fsw &= uint16_t(~(C0 | C1 | C2 | C3));
                    if (std::signbit(v)) c.fsw |= C1;
                    if (st_empty(c, 0)) c.fsw |= C3 | C0;
                    else if (std::isnan(v)) c.fsw |= C0;
                    else if (std::isinf(v)) c.fsw |= C2 | C0;
                    else if (v == 0) c.fsw |= C3;
                    else if (std::fpclassify(v) == FP_SUBNORMAL) c.fsw |= C3 | C2;
                    else c.fsw |= C2;
                    return;
                }
                }
                break;
            case 5: {
                static long double const kConst[7] = { 1.0L, 3.321928094887362347870319429489390175864831393L,
                    1.442695040888963407359924681001892137426645954L, 3.141592653589793238462643383279502884197169399L,
                    0.301029995663981195213738894724493026768189881L, 0.693147180559945309417232121458176568075500134L, 0.0L };
                if (rm == 7) break;
                push(c, kConst[rm]);
                return;
            }
            case 6:
                switch (rm) {
                case 0: st(c, 0) = std::exp2(st(c, 0)) - 1; return;
                case 1: st(c, 1) = st(c, 1) * std::log2(st(c, 0)); pop(c); return;
                case 2: st(c, 0) = std::tan(st(c, 0)); push(c, 1.0L); c.fsw &= uint16_t(~C2); return;
                case 3: st(c, 1) = std::atan2(st(c, 1), st(c, 0)); pop(c); return;
                case 4: { long double v = st(c, 0); int e = 0; long double m = std::frexp(v, &e); st(c, 0) = (long double)(e - 1); push(c, m * 2); return; }
                case 5: st(c, 0) = std::remainder(st(c, 0), st(c, 1)); c.fsw &= uint16_t(~C2); return;
                case 6: set_top(c, top(c) - 1); return;
                case 7: set_top(c, top(c) + 1); return;
                }
                break;
            case 7:
                switch (rm) {
                case 0: st(c, 0) = std::fmod(st(c, 0), st(c, 1)); c.fsw &= uint16_t(~C2); return;
                case 1: st(c, 1) = st(c, 1) * std::log2(st(c, 0) + 1); pop(c); return;
                case 2: st(c, 0) = std::sqrt(st(c, 0)); return;
                case 3: { long double v = st(c, 0); st(c, 0) = std::sin(v); push(c, std::cos(v)); c.fsw &= uint16_t(~C2); return; }
                case 4: st(c, 0) = round_rc(c, st(c, 0)); return;
                case 5: st(c, 0) = std::ldexp(st(c, 0), int(std::trunc(st(c, 1)))); return;
                case 6: st(c, 0) = std::sin(st(c, 0)); c.fsw &= uint16_t(~C2); return;
                case 7: st(c, 0) = std::cos(st(c, 0)); c.fsw &= uint16_t(~C2); return;
                }
                break;
            }
            break;
        case 2: { // FCMOVcc (B, E, BE, U), FUCOMPP
            if (reg == 5 && rm == 1) { compare(c, st(c, 0), st(c, 1)); pop(c); pop(c); return; }
            if (reg > 3) break;
            bool cond = reg == 0 ? c.get_cf() : reg == 1 ? c.get_zf() : reg == 2 ? (c.get_cf() || c.get_zf()) : c.get_pf();
            if (cond) st(c, 0) = st(c, rm);
            return;
        }
        case 3:
            if (reg <= 3) {
                bool cond = reg == 0 ? c.get_cf() : reg == 1 ? c.get_zf() : reg == 2 ? (c.get_cf() || c.get_zf()) : c.get_pf();
                if (!cond) st(c, 0) = st(c, rm);
                return;
            }
            if (reg == 4 && rm == 2) { c.fsw &= 0x7F00; return; } // FNCLEX
            if (reg == 4 && rm == 3) { finit(c); return; }        // FNINIT
            if (reg == 4 && (rm == 0 || rm == 1 || rm == 4)) return; // FENI/FDISI/FSETPM: no-ops
            if (reg == 5 || reg == 6) { comi(c, st(c, 0), st(c, rm)); return; }
            break;
        case 5:
            switch (reg) {
            case 0: c.ftag_empty |= uint8_t(1u << ((top(c) + rm) & 7)); return; // FFREE
            case 2: st(c, rm) = st(c, 0); return;
            case 3: st(c, rm) = st(c, 0); pop(c); return;
            case 4: compare(c, st(c, 0), st(c, rm)); return;
            case 5: compare(c, st(c, 0), st(c, rm)); pop(c); return;
            }
            break;
        case 7:
            if (reg == 4 && rm == 0) { c.setr<2>(0, c.fsw); return; } // FNSTSW AX
            if (reg == 5 || reg == 6) { comi(c, st(c, 0), st(c, rm)); pop(c); return; }
            break;
        }
        c.raise(UD);
    }
}

// EMMS (NP 0F 77): empties every x87 register (tag word FFFFh), the MMX-to-x87 hand-over.
// APM vol 5 "EMMS": #UD with CR0.EM, #NM with CR0.TS; 66/F2/F3 make it undefined (#UD). Linux
// runs it on every AMD CPU whatever CPUID says (arch/x86/kernel/fpu/core.c
// restore_fpregs_from_fpstate, the X86_BUG_FXSAVE_LEAK work-around: fnclex; emms; fildl).
template <int S, int M> void emms(Core& c, Insn const& i)
{
    if ((i.pfx & (kPfxRep | kPfxRepne | kPfxOpsize)) || (c.cr0 & cr0::EM))
        c.raise(UD);
    if (c.cr0 & cr0::TS)
        c.raise(NM);
    c.ftag_empty = 0xFF;
}

} // namespace

void register_x87_ops(OpTables& t)
{
    set_op(t.map[kMap0F][0x77], "emms", 0, Imm::None, SEVEMU_H(emms));
    auto& p = t.map[kMapPrimary];
    set_op(p[0xD8], "x87 d8", kModrm, Imm::None, SEVEMU_HA(x87, 0));
    set_op(p[0xD9], "x87 d9", kModrm, Imm::None, SEVEMU_HA(x87, 1));
    set_op(p[0xDA], "x87 da", kModrm, Imm::None, SEVEMU_HA(x87, 2));
    set_op(p[0xDB], "x87 db", kModrm, Imm::None, SEVEMU_HA(x87, 3));
    set_op(p[0xDC], "x87 dc", kModrm, Imm::None, SEVEMU_HA(x87, 4));
    set_op(p[0xDD], "x87 dd", kModrm, Imm::None, SEVEMU_HA(x87, 5));
    set_op(p[0xDE], "x87 de", kModrm, Imm::None, SEVEMU_HA(x87, 6));
    set_op(p[0xDF], "x87 df", kModrm, Imm::None, SEVEMU_HA(x87, 7));
}

} // namespace sevemu::cpu
