// sevemu — segmentation (APM vol 2 ch 4): the segment-register caches, descriptors and the
// descriptor tables (§4.4-4.7), the protection checks on data- and stack-segment loads (§4.9-4.10),
// and the instructions that use them: MOV/PUSH/POP Sreg, LDS/LES/LSS/LFS/LGS, SGDT/SIDT/LGDT/LIDT,
// SLDT/STR/LLDT/LTR, LAR/LSL/VERR/VERW, ARPL, SWAPGS and RD/WR FS/GS BASE (APM vol 3).
#include "cpu/exec_sys.h"

namespace sevemu::cpu {

using namespace rflags;
using namespace sys;

// ---------------------------------------------------------------- mode and segment caches

void Core::update_seg_cache(unsigned s)
{
    Segment const& g = seg[s];
    bool pe = cr0 & cr0::PE;
    if (mode64) {
        seg_base[s] = (s == FS || s == GS) ? g.base : 0;
        seg_lo[s] = 0;
        seg_hi[s] = ~0ull;
        seg_acc[s] = 3;
        return;
    }
    seg_base[s] = uint32_t(g.base);
    if (!pe || (flags & VM)) {
        seg_lo[s] = 0;
        seg_hi[s] = g.limit;
        seg_acc[s] = 3;
        return;
    }
    if (!g.present()) {
        seg_acc[s] = 0;
        seg_lo[s] = 1;
        seg_hi[s] = 0;
        return;
    }
    bool code = g.attr & 0x8;
    bool rw = g.attr & 0x2;
    seg_acc[s] = code ? (rw ? 1 : 0) : (rw ? 3 : 1);
    if (!code && (g.attr & 0x4)) { // expand-down (APM vol 2 §4.7.1)
        seg_lo[s] = uint64_t(g.limit) + 1;
        seg_hi[s] = g.big() ? 0xFFFFFFFFull : 0xFFFF;
    } else {
        seg_lo[s] = 0;
        seg_hi[s] = g.limit;
    }
}

// ---------------------------------------------------------------- descriptors

Segment Core::seg_from_desc(uint16_t sel, uint64_t d, uint64_t hi)
{
    Segment s;
    s.selector = sel;
    s.base = ((d >> 16) & 0xFFFFFF) | ((d >> 56) << 24) | ((hi & 0xFFFFFFFF) << 32);
    uint32_t limit = uint32_t((d & 0xFFFF) | ((d >> 32) & 0xF0000));
    if (d & (1ull << 55))
        limit = (limit << 12) | 0xFFF;
    s.limit = limit;
    s.attr = uint16_t(((d >> 40) & 0xFF) | (((d >> 52) & 0xF) << 8));
    return s;
}

uint64_t Core::read_descriptor(uint16_t sel, uint8_t vec)
{
    DescriptorTable t = gdtr;
    if (sel & 4) {
        if (!ldtr.present()) raise(vec, sel & 0xFFFC);
        t = { ldtr.base, uint16_t(ldtr.limit) };
        if ((sel | 7u) > ldtr.limit) raise(vec, sel & 0xFFFC);
    } else if ((sel | 7u) > t.limit) {
        raise(vec, sel & 0xFFFC);
    }
    return rd_sys<uint64_t>(t.base + (sel & ~7u));
}

void Core::set_accessed(uint16_t sel, uint64_t d)
{
    if (d & (1ull << 40)) return;
    uint64_t base = (sel & 4) ? ldtr.base : gdtr.base;
    wr_sys<uint8_t>(base + (sel & ~7u) + 5, uint8_t((d >> 40) | 1));
}

void Core::load_seg(unsigned s, uint16_t sel)
{
    if (!(cr0 & cr0::PE) || (flags & VM)) { // real/V86 mode: base = selector << 4
        seg[s].selector = sel;
        seg[s].base = uint64_t(sel) << 4;
        if (flags & VM) { seg[s].attr = 0xF3; seg[s].limit = 0xFFFF; }
        update_seg_cache(s);
        return;
    }
    unsigned rpl = sel & 3;
    if ((sel & 0xFFFC) == 0) {
        // Null selector (APM vol 2 §4.5.1): fine for data segments; SS only in 64-bit mode at CPL<3.
        if (s == SS && (!mode64 || cpl == 3 || rpl != cpl)) raise(GP, 0);
        seg[s] = Segment {};
        seg[s].selector = sel;
        if (s == SS) seg[s].attr = uint16_t((cpl << 5) | 0x0); // keeps CPL in SS.DPL
        update_seg_cache(s);
        return;
    }
    uint64_t d = read_descriptor(sel, GP);
    if (s == SS) {
        if (rpl != cpl || !is_seg(d) || is_code(d) || !(d & (1ull << 41)) || desc_dpl(d) != cpl)
            raise(GP, sel & 0xFFFC);
        if (!desc_present(d)) raise(SS_, sel & 0xFFFC);
    } else {
        if (!is_seg(d) || (is_code(d) && !(d & (1ull << 41)))) raise(GP, sel & 0xFFFC);
        bool conforming_code = is_code(d) && (d & (1ull << 42));
        if (!conforming_code && desc_dpl(d) < std::max<unsigned>(cpl, rpl)) raise(GP, sel & 0xFFFC);
        if (!desc_present(d)) raise(NP, sel & 0xFFFC);
    }
    set_accessed(sel, d);
    seg[s] = seg_from_desc(sel, d | (1ull << 40));
    if (s == SS) update_mode(); else update_seg_cache(s);
}

// ---------------------------------------------------------------- instruction handlers

namespace {

template <int SEG, int S, int M> void push_seg(Core& c, Insn const&) { c.push<S>(c.seg[SEG].selector); }
template <int SEG, int S, int M> void pop_seg(Core& c, Insn const&)
{
    uint64_t save = c.r[RSP];
    uint16_t sel = uint16_t(c.pop<S>());
    try { c.load_seg(SEG, sel); } catch (...) { c.r[RSP] = save; throw; }
    if (SEG == SS) c.irq_shadow = true;
    end(c);
}
template <int S, int M> void mov_E_S(Core& c, Insn const& i)
{
    unsigned s = (i.modrm >> 3) & 7;
    if (s > 5) c.raise(UD);
    if constexpr (M) c.wr<uint16_t>(c.lin(i, 2, true), c.seg[s].selector);
    else c.setr<S>(i.rm, c.seg[s].selector);
}
template <int S, int M> void mov_S_E(Core& c, Insn const& i)
{
    unsigned s = (i.modrm >> 3) & 7;
    if (s > 5 || s == CS) c.raise(UD);
    uint16_t sel = M ? c.rd<uint16_t>(c.lin(i, 2, false)) : c.getr<2>(i.rm);
    c.load_seg(s, sel);
    if (s == SS) c.irq_shadow = true;
    end(c);
}
template <int SEG, int S, int M> void load_far_ptr(Core& c, Insn const& i)
{
    if constexpr (S == 1) { c.raise(UD); } else {
    uint64_t ea = c.ea(i);
    U<S> off = c.rd<U<S>>(c.seg_lin(i.seg, ea, S, false));
    uint16_t sel = c.rd<uint16_t>(c.seg_lin(i.seg, (ea + S) & kAsizeMask[i.asize], 2, false));
    c.load_seg(SEG, sel);
    c.setr<S>(i.reg, off);
    end(c);
    }
}

// ---- descriptor-table instructions (group 6 and 7)
template <int S, int M> void sldt_str(Core& c, Insn const& i)
{
    if (!protected_mode(c)) c.raise(UD);
    uint16_t v = ((i.modrm >> 3) & 7) == 0 ? c.ldtr.selector : c.tr.selector;
    if constexpr (M) c.wr<uint16_t>(c.lin(i, 2, true), v); else c.setr<S>(i.rm, v);
}
template <int S, int M> void lldt(Core& c, Insn const& i)
{
    if (!protected_mode(c)) c.raise(UD);
    need_cpl0(c);
    uint16_t sel = M ? c.rd<uint16_t>(c.lin(i, 2, false)) : c.getr<2>(i.rm);
    if ((sel & 0xFFFC) == 0) { c.ldtr = Segment {}; c.ldtr.selector = sel; return; }
    if (sel & 4) c.raise(GP, sel & 0xFFFC);
    uint64_t d = c.read_descriptor(sel, GP);
    bool lm = c.efer & efer::LMA;
    uint64_t hi = lm ? c.rd_sys<uint64_t>(c.gdtr.base + (sel & ~7u) + 8) : 0;
    if (is_seg(d) || desc_type(d) != 2) c.raise(GP, sel & 0xFFFC);
    if (!desc_present(d)) c.raise(NP, sel & 0xFFFC);
    c.ldtr = Core::seg_from_desc(sel, d, hi);
}
template <int S, int M> void ltr(Core& c, Insn const& i)
{
    if (!protected_mode(c)) c.raise(UD);
    need_cpl0(c);
    uint16_t sel = M ? c.rd<uint16_t>(c.lin(i, 2, false)) : c.getr<2>(i.rm);
    if ((sel & 0xFFFC) == 0) c.raise(GP, 0);
    if (sel & 4) c.raise(GP, sel & 0xFFFC);
    uint64_t d = c.read_descriptor(sel, GP);
    bool lm = c.efer & efer::LMA;
    uint64_t hi = lm ? c.rd_sys<uint64_t>(c.gdtr.base + (sel & ~7u) + 8) : 0;
    unsigned t = desc_type(d);
    if (is_seg(d) || !(t == 9 || (t == 1 && !lm))) c.raise(GP, sel & 0xFFFC);
    if (!desc_present(d)) c.raise(NP, sel & 0xFFFC);
    c.wr_sys<uint8_t>(c.gdtr.base + (sel & ~7u) + 5, uint8_t((d >> 40) | 2)); // busy
    c.tr = Core::seg_from_desc(sel, d | (2ull << 40), hi);
}
template <int K, int S, int M> void sgdt_sidt(Core& c, Insn const& i)
{
    DescriptorTable const& t = K ? c.idtr : c.gdtr;
    uint64_t ea = c.ea(i);
    c.wr<uint16_t>(c.seg_lin(i.seg, ea, 2, true), t.limit);
    uint64_t a2 = c.seg_lin(i.seg, (ea + 2) & kAsizeMask[i.asize], c.mode64 ? 8 : 4, true);
    if (c.mode64) c.wr<uint64_t>(a2, t.base); else c.wr<uint32_t>(a2, uint32_t(t.base));
}
template <int K, int S, int M> void lgdt_lidt(Core& c, Insn const& i)
{
    need_cpl0(c);
    uint64_t ea = c.ea(i);
    uint16_t limit = c.rd<uint16_t>(c.seg_lin(i.seg, ea, 2, false));
    uint64_t a2 = c.seg_lin(i.seg, (ea + 2) & kAsizeMask[i.asize], c.mode64 ? 8 : 4, false);
    uint64_t base = c.mode64 ? c.rd<uint64_t>(a2) : c.rd<uint32_t>(a2);
    if (!c.mode64 && S == 2) base &= 0xFFFFFF;
    if (c.mode64 && !canonical(base)) c.raise(GP, 0);
    (K ? c.idtr : c.gdtr) = { base, limit };
}
template <int S, int M> void swapgs(Core& c, Insn const&)
{
    if (!c.mode64) c.raise(UD);
    need_cpl0(c);
    std::swap(c.seg[GS].base, c.msr.kernel_gs_base);
    c.update_seg_cache(GS);
}
template <int K, int S, int M> void fsgsbase(Core& c, Insn const& i)
{
    if (!c.mode64 || !(c.cr4 & cr4::FSGSBASE)) c.raise(UD);
    unsigned s = (K & 1) ? GS : FS;
    if (K < 2) {
        c.setr<S>(i.rm, c.seg[s].base);
    } else {
        uint64_t v = c.getr<S>(i.rm);
        if (!canonical(v)) c.raise(GP, 0);
        c.seg[s].base = v;
        c.update_seg_cache(s);
    }
}
// LAR/LSL/VERR/VERW (APM vol 3): ZF=1 and the result when the descriptor is visible at
// max(CPL, RPL) and of an acceptable type; ZF=0 otherwise. Never faults on the selector.
template <int K, int S, int M> void lar_lsl(Core& c, Insn const& i)
{
    if (!protected_mode(c)) c.raise(UD);
    uint16_t sel = M ? c.rd<uint16_t>(c.lin(i, 2, false)) : c.getr<2>(i.rm);
    c.materialize();
    c.flags &= ~ZF;
    if ((sel & 0xFFFC) == 0) return;
    DescriptorTable t = (sel & 4) ? DescriptorTable { c.ldtr.base, uint16_t(c.ldtr.limit) } : c.gdtr;
    if ((sel & 4) && !c.ldtr.present()) return;
    if ((sel | 7u) > t.limit) return;
    uint64_t d = c.rd_sys<uint64_t>(t.base + (sel & ~7u));
    bool conforming_code = is_seg(d) && is_code(d) && (d & (1ull << 42));
    if (!conforming_code && desc_dpl(d) < std::max<unsigned>(c.cpl, sel & 3)) return;
    bool lm = c.efer & efer::LMA;
    if (!is_seg(d)) {
        unsigned ty = desc_type(d);
        bool ok = K == 0 ? (lm ? (ty == 2 || ty == 9 || ty == 0xB || ty == 0xC) : (ty >= 1 && ty <= 0xC && ty != 0x6 && ty != 0x7 && ty != 0x8 && ty != 0xA))
                : K == 1 ? (lm ? (ty == 2 || ty == 9 || ty == 0xB) : (ty == 1 || ty == 2 || ty == 3 || ty == 9 || ty == 0xB))
                         : false;
        if (!ok) return;
    } else if (K >= 2) {
        bool readable = !is_code(d) || (d & (1ull << 41));
        bool writable = !is_code(d) && (d & (1ull << 41));
        if (K == 2 ? !readable : !writable) return;
    }
    c.flags |= ZF;
    if (K == 0) c.setr<S>(i.reg, d >> 32 & 0x00FFFF00u & (S == 2 ? 0xFF00u : 0xF0FF00u));
    if (K == 1) {
        uint32_t limit = uint32_t((d & 0xFFFF) | ((d >> 32) & 0xF0000));
        if (d & (1ull << 55)) limit = (limit << 12) | 0xFFF;
        c.setr<S>(i.reg, limit);
    }
}

template <int S, int M> void arpl_movsxd(Core& c, Insn const& i)
{
    if (c.mode64) {
        uint32_t v = M ? c.rd<uint32_t>(c.lin(i, 4, false)) : c.getr<4>(i.rm);
        if (S == 8) c.setr<8>(i.reg, uint64_t(int64_t(int32_t(v))));
        else if (S == 4) c.setr<4>(i.reg, v);
        else c.setr<2>(i.reg, uint16_t(v));
        return;
    }
    if (!protected_mode(c)) c.raise(UD);
    uint64_t a = M ? c.lin(i, 2, true) : 0;
    uint16_t d = M ? c.rd<uint16_t>(a) : c.getr<2>(i.rm);
    uint16_t s = c.getr<2>(i.reg);
    c.materialize();
    if ((d & 3) < (s & 3)) {
        d = uint16_t((d & ~3) | (s & 3));
        if (M) c.wr<uint16_t>(a, d); else c.setr<2>(i.rm, d);
        c.flags |= ZF;
    } else {
        c.flags &= ~ZF;
    }
}

} // namespace

void register_segment_ops(OpTables& t)
{
    auto& p = t.map[kMapPrimary];
    auto& x = t.map[kMap0F];
    auto& r01 = t.map[kMap0F01Reg];
    set_op(p[0x06], "push es", kInv64, Imm::None, SEVEMU_HA(push_seg, ES));
    set_op(p[0x07], "pop es", kInv64, Imm::None, SEVEMU_HA(pop_seg, ES));
    set_op(p[0x0E], "push cs", kInv64, Imm::None, SEVEMU_HA(push_seg, CS));
    set_op(p[0x16], "push ss", kInv64, Imm::None, SEVEMU_HA(push_seg, SS));
    set_op(p[0x17], "pop ss", kInv64, Imm::None, SEVEMU_HA(pop_seg, SS));
    set_op(p[0x1E], "push ds", kInv64, Imm::None, SEVEMU_HA(push_seg, DS));
    set_op(p[0x1F], "pop ds", kInv64, Imm::None, SEVEMU_HA(pop_seg, DS));
    set_op(x[0xA0], "push fs", kDef64, Imm::None, SEVEMU_HA(push_seg, FS));
    set_op(x[0xA1], "pop fs", kDef64, Imm::None, SEVEMU_HA(pop_seg, FS));
    set_op(x[0xA8], "push gs", kDef64, Imm::None, SEVEMU_HA(push_seg, GS));
    set_op(x[0xA9], "pop gs", kDef64, Imm::None, SEVEMU_HA(pop_seg, GS));
    set_op(p[0x63], "arpl/movsxd", kModrm, Imm::None, SEVEMU_H(arpl_movsxd));
    set_op(p[0x8C], "mov", kModrm, Imm::None, SEVEMU_H(mov_E_S));
    set_op(p[0x8E], "mov", kModrm | kFixed16, Imm::None, SEVEMU_H(mov_S_E));
    set_op(p[0xC4], "les", kModrm | kMemOnly | kInv64, Imm::None, SEVEMU_HA(load_far_ptr, ES));
    set_op(p[0xC5], "lds", kModrm | kMemOnly | kInv64, Imm::None, SEVEMU_HA(load_far_ptr, DS));
    set_op(x[0xB2], "lss", kModrm | kMemOnly, Imm::None, SEVEMU_HA(load_far_ptr, SS));
    set_op(x[0xB4], "lfs", kModrm | kMemOnly, Imm::None, SEVEMU_HA(load_far_ptr, FS));
    set_op(x[0xB5], "lgs", kModrm | kMemOnly, Imm::None, SEVEMU_HA(load_far_ptr, GS));
    // 0F 00 (group 6), 0F 01 (group 7)
    x[0x00] = { "grp6", 0, Imm::None, 13 };
    set_op(t.grp[13][0], "sldt", 0, Imm::None, SEVEMU_H(sldt_str));
    set_op(t.grp[13][1], "str", 0, Imm::None, SEVEMU_H(sldt_str));
    set_op(t.grp[13][2], "lldt", kFixed16, Imm::None, SEVEMU_H(lldt));
    set_op(t.grp[13][3], "ltr", kFixed16, Imm::None, SEVEMU_H(ltr));
    set_op(t.grp[13][4], "verr", kFixed16, Imm::None, SEVEMU_HA(lar_lsl, 2));
    set_op(t.grp[13][5], "verw", kFixed16, Imm::None, SEVEMU_HA(lar_lsl, 3));
    set_op(x[0x02], "lar", kModrm, Imm::None, SEVEMU_HA(lar_lsl, 0));
    set_op(x[0x03], "lsl", kModrm, Imm::None, SEVEMU_HA(lar_lsl, 1));
    x[0x01] = { "grp7", 0, Imm::None, 14 };
    set_op(t.grp[14][0], "sgdt", kMemOnly, Imm::None, SEVEMU_HA(sgdt_sidt, 0));
    set_op(t.grp[14][1], "sidt", kMemOnly, Imm::None, SEVEMU_HA(sgdt_sidt, 1));
    set_op(t.grp[14][2], "lgdt", kMemOnly | kEnd, Imm::None, SEVEMU_HA(lgdt_lidt, 0));
    set_op(t.grp[14][3], "lidt", kMemOnly, Imm::None, SEVEMU_HA(lgdt_lidt, 1));
    set_op(r01[0xF8], "swapgs", 0, Imm::None, SEVEMU_H(swapgs));
    // F3 0F AE (group 16): RDFSBASE/RDGSBASE/WRFSBASE/WRGSBASE
    t.map[kMapF30F][0xAE] = { "grp15f3", kRegOnly, Imm::None, 16 };
    set_op(t.grp[16][0], "rdfsbase", 0, Imm::None, SEVEMU_HA(fsgsbase, 0));
    set_op(t.grp[16][1], "rdgsbase", 0, Imm::None, SEVEMU_HA(fsgsbase, 1));
    set_op(t.grp[16][2], "wrfsbase", 0, Imm::None, SEVEMU_HA(fsgsbase, 2));
    set_op(t.grp[16][3], "wrgsbase", 0, Imm::None, SEVEMU_HA(fsgsbase, 3));
}

} // namespace sevemu::cpu
