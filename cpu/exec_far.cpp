// sevemu — far control transfers and privilege (APM vol 2 §4.8-4.13): far JMP/CALL, directly
// and through call gates, far RET, and the checks on the code segment a return goes back to
// (shared with IRET, exec_events.cpp); the fast system calls SYSCALL/SYSRET and
// SYSENTER/SYSEXIT (§6.1). Task gates and TSS selectors are exec_task.cpp's.
#include "cpu/exec_sys.h"

namespace sevemu::cpu {

using namespace rflags;
using namespace sys;

namespace {

// Flat segments SYSCALL/SYSRET and SYSENTER/SYSEXIT load (§6.1).
constexpr uint16_t kAttrData = 0x93, kAttrCode = 0x9B;

// ---------------------------------------------------------------- call gates

// Far CALL/JMP through a call gate (APM vol 2 §4.11.2-4.11.3, §4.8.4 for the long-mode form;
// checks and error codes as in the CALL/JMP (far) pseudocode of APM vol 3). d is the gate's
// low descriptor quadword. Legacy gates: type 4 (16-bit) and 0xC (32-bit); in long mode only
// type 0xC, the 16-byte 64-bit gate. Task gates and TSS selectors are exec_task.cpp's.
void gate_transfer(Core& c, uint16_t gsel, uint64_t d, bool call, uint64_t ret_rip)
{
    bool lma = c.efer & efer::LMA;
    unsigned type = (d >> 40) & 0xF;
    uint16_t gerr = gsel & 0xFFFC;
    if (type != 0xC && (type != 4 || lma)) c.raise(GP, gerr);
    unsigned gdpl = desc_dpl(d);
    if (gdpl < c.cpl || gdpl < (gsel & 3u)) c.raise(GP, gerr);
    if (!desc_present(d)) c.raise(NP, gerr);
    uint64_t off = (d & 0xFFFF) | ((d >> 32) & 0xFFFF0000ull);
    if (lma) {
        // Upper half: the table must hold all 16 bytes, and its type field must be 0.
        DescriptorTable t = (gsel & 4) ? DescriptorTable { c.ldtr.base, uint16_t(c.ldtr.limit) } : c.gdtr;
        if ((gsel & 0xFFF8u) + 15u > t.limit) c.raise(GP, gerr);
        uint64_t hi = c.rd_sys<uint64_t>(t.base + (gsel & ~7u) + 8);
        if ((hi >> 40) & 0x1F) c.raise(GP, gerr);
        off |= hi << 32;
    }
    unsigned gsize = lma ? 8 : type == 0xC ? 4 : 2;
    if (gsize == 2) off &= 0xFFFF;
    uint16_t tsel = uint16_t(d >> 16);
    if ((tsel & 0xFFFC) == 0) c.raise(GP, 0);
    uint16_t terr = tsel & 0xFFFC;
    uint64_t td = c.read_descriptor(tsel, GP);
    if (!is_seg(td) || !is_code(td)) c.raise(GP, terr);
    bool conforming = td & (1ull << 42);
    unsigned tdpl = desc_dpl(td);
    if (conforming || call ? tdpl > c.cpl : tdpl != c.cpl) c.raise(GP, terr);
    if (!desc_present(td)) c.raise(NP, terr);
    bool inner = call && !conforming && tdpl < c.cpl;
    unsigned ncpl = inner ? tdpl : c.cpl;
    Segment ncs = Core::seg_from_desc(uint16_t(terr | ncpl), td | (1ull << 40));
    if (lma && (!ncs.long_mode() || ncs.big())) c.raise(GP, terr);
    if (!lma && off > ncs.limit) c.raise(GP, 0);
    uint16_t old_cs = c.seg[CS].selector, old_ss = c.seg[SS].selector;
    uint64_t old_sp = c.r[RSP];

    if (!inner) {
        if (call) {
            if (gsize == 8) { c.push<8>(old_cs); c.push<8>(ret_rip); }
            else if (gsize == 4) { c.push<4>(old_cs); c.push<4>(ret_rip); }
            else { c.push<2>(old_cs); c.push<2>(ret_rip); }
        }
        c.set_accessed(tsel, td);
        c.seg[CS] = ncs;
        c.rip = c.r[kRegNext] = off;
        c.update_mode();
        return;
    }

    // Inner level: the new stack comes from the TSS (APM vol 2 §4.11.2 "Stack switching").
    uint16_t tss_err = c.tr.selector & 0xFFFC;
    uint64_t nsp;
    Segment nss;
    uint64_t nmask;
    if (lma) {
        uint32_t at = 4 + 8 * ncpl;
        if (at + 7 > c.tr.limit) c.raise(TS, tss_err);
        nsp = c.rd_sys<uint64_t>(c.tr.base + at);
        if (int64_t(nsp) != (int64_t(nsp << 16) >> 16)) c.raise(SS_, 0);
        nss.selector = uint16_t(ncpl); // null SS with RPL = new CPL
        nss.attr = uint16_t(ncpl << 5);
        nmask = ~0ull;
    } else {
        bool tss32 = (c.tr.attr & 0x8) != 0;
        uint32_t at = tss32 ? 4 + 8 * ncpl : 2 + 4 * ncpl;
        if (at + (tss32 ? 5 : 3) > c.tr.limit) c.raise(TS, tss_err);
        uint16_t ss_sel = c.rd_sys<uint16_t>(c.tr.base + at + (tss32 ? 4 : 2));
        nsp = tss32 ? c.rd_sys<uint32_t>(c.tr.base + at) : c.rd_sys<uint16_t>(c.tr.base + at);
        uint16_t serr = ss_sel & 0xFFFC;
        if (serr == 0) c.raise(TS, 0);
        uint64_t sd = c.read_descriptor(ss_sel, TS);
        if ((ss_sel & 3u) != ncpl || desc_dpl(sd) != ncpl || !is_seg(sd) || is_code(sd) || !(sd & (1ull << 41)))
            c.raise(TS, serr);
        if (!desc_present(sd)) c.raise(SS_, serr);
        c.set_accessed(ss_sel, sd);
        nss = Core::seg_from_desc(ss_sel, sd | (1ull << 40));
        nmask = nss.big() ? 0xFFFFFFFFull : 0xFFFF;
    }
    unsigned nparam = lma ? 0 : unsigned(d >> 32) & 0x1F;
    unsigned need = gsize * (4 + nparam);
    uint64_t sp = nsp & nmask;
    if (!lma) { // room on the new stack, expand-up or expand-down
        uint64_t lo = sp - need, hi = sp - 1;
        bool down = (nss.attr & 0x1C) == 0x14;
        bool ok = down ? (lo > nss.limit && hi <= nmask && sp >= need) : (sp >= need && hi <= nss.limit);
        if (!ok) c.raise(SS_, nss.selector & 0xFFFC);
    }
    // Parameters from the old stack (at the old privilege), oldest-pushed first.
    uint64_t params[32];
    uint64_t omask = c.stack_mask();
    for (unsigned k = 0; k < nparam; ++k) {
        uint64_t a = c.seg_lin(SS, (old_sp + uint64_t(k) * gsize) & omask, gsize, false);
        params[k] = gsize == 4 ? c.rd<uint32_t>(a) : c.rd<uint16_t>(a);
    }
    uint64_t base = lma ? 0 : nss.base;
    auto put = [&](uint64_t v) {
        sp = (sp - gsize) & nmask;
        uint64_t a = lma ? sp : uint32_t(base + sp);
        if (gsize == 8) c.wr_stack_sup<uint64_t>(a, v, ncpl);
        else if (gsize == 4) c.wr_stack_sup<uint32_t>(a, uint32_t(v), ncpl);
        else c.wr_stack_sup<uint16_t>(a, uint16_t(v), ncpl);
    };
    put(old_ss);
    put(old_sp);
    for (unsigned k = nparam; k-- > 0;) put(params[k]);
    put(old_cs);
    put(ret_rip);
    c.set_accessed(tsel, td);
    c.seg[CS] = ncs;
    c.seg[SS] = nss;
    c.r[RSP] = lma ? sp : (old_sp & ~nmask) | sp;
    c.rip = c.r[kRegNext] = off;
    c.update_mode();
}

} // namespace

// ---------------------------------------------------------------- far transfers

void Core::far_jump(uint16_t sel, uint64_t off, bool call, unsigned osize, uint64_t ret_rip)
{
    uint16_t old_cs = seg[CS].selector;
    if (!(cr0 & cr0::PE) || (flags & VM)) {
        if (call) {
            if (osize == 4) { push<4>(old_cs); push<4>(ret_rip); }
            else { push<2>(old_cs); push<2>(ret_rip); }
        }
        seg[CS].selector = sel;
        seg[CS].base = uint64_t(sel) << 4;
        rip = r[kRegNext] = osize == 2 ? uint16_t(off) : uint32_t(off);
        update_mode();
        return;
    }
    if ((sel & 0xFFFC) == 0) raise(GP, 0);
    uint64_t d = read_descriptor(sel, GP);
    if (!is_seg(d) && (((d >> 40) & 0xF) == 0xC || ((d >> 40) & 0xF) == 4)) {
        gate_transfer(*this, sel, d, call, ret_rip);
        return;
    }
    if (!is_seg(d) && (desc_type(d) == 1 || desc_type(d) == 3 || desc_type(d) == 5 || desc_type(d) == 9 || desc_type(d) == 0xB)) {
        // A TSS or a task gate: a task switch in legacy mode, #GP in long mode (APM vol 2 §12.1.3).
        if (efer & efer::LMA) raise(GP, sel & 0xFFFC);
        task_far(sel, d, call);
        return;
    }
    if (!is_seg(d) || !is_code(d))
        raise(GP, sel & 0xFFFC);
    bool conforming = d & (1ull << 42);
    if (conforming ? desc_dpl(d) > cpl : ((sel & 3) > cpl || desc_dpl(d) != cpl)) raise(GP, sel & 0xFFFC);
    if (!desc_present(d)) raise(NP, sel & 0xFFFC);
    Segment ns = seg_from_desc(uint16_t((sel & 0xFFFC) | cpl), d | (1ull << 40));
    if ((efer & efer::LMA) && ns.long_mode() && ns.big()) raise(GP, sel & 0xFFFC);
    bool target64 = (efer & efer::LMA) && ns.long_mode();
    if (!target64 && off > ns.limit) raise(GP, 0);
    if (call) {
        if (osize == 8) { push<8>(old_cs); push<8>(ret_rip); }
        else if (osize == 4) { push<4>(old_cs); push<4>(ret_rip); }
        else { push<2>(old_cs); push<2>(ret_rip); }
    }
    set_accessed(sel, d);
    seg[CS] = ns;
    rip = r[kRegNext] = target64 ? off : osize == 2 ? uint16_t(off) : uint32_t(off);
    update_mode();
}

// The CS a far RET or an IRET returns to (APM vol 3, the RET (far) and IRET pseudocode, which
// check it alike; APM vol 2 §4.11.3, §8.9.5): a non-null selector whose RPL is not below CPL,
// naming a code segment whose DPL equals the RPL (at most the RPL if conforming), present; the
// new CPL is the RPL. The order of the checks decides which fault a bad selector gives:
// #GP(0) for null, #GP(sel) for the rest, #NP(sel) last.
Segment Core::check_return_cs(uint16_t sel)
{
    unsigned rpl = sel & 3;
    if ((sel & 0xFFFC) == 0) raise(GP, 0);
    if (rpl < cpl) raise(GP, sel & 0xFFFC);
    uint64_t d = read_descriptor(sel, GP);
    if (!is_seg(d) || !is_code(d)) raise(GP, sel & 0xFFFC);
    bool conforming = d & (1ull << 42);
    if (conforming ? desc_dpl(d) > rpl : desc_dpl(d) != rpl) raise(GP, sel & 0xFFFC);
    if (!desc_present(d)) raise(NP, sel & 0xFFFC);
    return seg_from_desc(sel, d | (1ull << 40));
}

// After a return to an outer level (far RET, IRET; APM vol 2 §4.11.3 and the RET (far)/IRET
// pseudocode of vol 3): ES, DS, FS and GS that hold a data or non-conforming code segment more
// privileged than the new CPL become null, so the outer level cannot use them.
void Core::null_inaccessible_data_segments()
{
    for (unsigned s : { ES, DS, FS, GS }) {
        Segment const& g = seg[s];
        bool conf_code = (g.attr & 0x1C) == 0x1C;
        if (g.present() && !conf_code && g.dpl() < cpl && (g.selector & 0xFFFC)) {
            seg[s] = Segment {};
            update_seg_cache(s);
        }
    }
}

// The SS a return to an outer level loads (far RET, IRET; APM vol 2 §4.11.3, §8.9.5): a null
// selector only for a 64-bit target below ring 3, otherwise a present writable data segment at
// the new level.
Segment Core::load_outer_ss(uint16_t ss_sel, unsigned rpl, bool target64)
{
    Segment nss;
    if ((ss_sel & 0xFFFC) == 0) {
        if (!target64 || rpl == 3) raise(GP, 0);
        nss.selector = ss_sel;
        nss.attr = uint16_t(rpl << 5);
    } else {
        if ((ss_sel & 3) != rpl) raise(GP, ss_sel & 0xFFFC);
        uint64_t sd = read_descriptor(ss_sel, GP);
        if (!is_seg(sd) || is_code(sd) || !(sd & (1ull << 41)) || desc_dpl(sd) != rpl) raise(GP, ss_sel & 0xFFFC);
        if (!desc_present(sd)) raise(SS_, ss_sel & 0xFFFC);
        set_accessed(ss_sel, sd);
        nss = seg_from_desc(ss_sel, sd | (1ull << 40));
    }
    return nss;
}

void Core::far_return(unsigned osize, uint16_t extra)
{
    uint64_t m = stack_mask();
    uint64_t sp = r[RSP] & m;
    auto peek = [&](uint64_t at) -> uint64_t {
        uint64_t a = seg_lin(SS, at & m, osize, false);
        return osize == 8 ? rd<uint64_t>(a) : osize == 4 ? rd<uint32_t>(a) : rd<uint16_t>(a);
    };
    uint64_t new_ip = peek(sp);
    uint16_t sel = uint16_t(peek(sp + osize));
    if (!(cr0 & cr0::PE) || (flags & VM)) {
        seg[CS].selector = sel;
        seg[CS].base = uint64_t(sel) << 4;
        r[RSP] = (r[RSP] & ~m) | ((sp + 2 * osize + extra) & m);
        rip = r[kRegNext] = new_ip;
        update_mode();
        return;
    }
    unsigned rpl = sel & 3;
    Segment ncs = check_return_cs(sel);
    if (rpl == cpl) {
        seg[CS] = ncs;
        r[RSP] = (r[RSP] & ~m) | ((sp + 2 * osize + extra) & m);
        rip = r[kRegNext] = new_ip;
        update_mode();
        return;
    }
    // Return to an outer level: pop SS:rSP too (APM vol 2 §4.11.3).
    uint64_t new_sp = peek(sp + 2 * osize + extra);
    uint16_t ss_sel = uint16_t(peek(sp + 3 * osize + extra));
    bool target64 = (efer & efer::LMA) && ncs.long_mode();
    Segment nss = load_outer_ss(ss_sel, rpl, target64);
    seg[CS] = ncs;
    seg[SS] = nss;
    uint64_t nm = target64 ? ~0ull : nss.big() ? 0xFFFFFFFFull : 0xFFFF;
    r[RSP] = (r[RSP] & ~nm) | ((new_sp + extra) & nm);
    rip = r[kRegNext] = new_ip;
    update_mode();
    null_inaccessible_data_segments();
}

// ---------------------------------------------------------------- instruction handlers

namespace {

// ---- far transfers
template <int S, int M> void jmp_far_ptr(Core& c, Insn const& i) { c.far_jump(uint16_t(i.disp), i.imm, false, S, 0); }
template <int S, int M> void call_far_ptr(Core& c, Insn const& i) { c.far_jump(uint16_t(i.disp), i.imm, true, S, c.r[kRegNext]); }
template <int CALL, int S, int M> void far_mem(Core& c, Insn const& i)
{
    if constexpr (S == 1) { c.raise(UD); } else {
    uint64_t ea = c.ea(i);
    U<S> off = c.rd<U<S>>(c.seg_lin(i.seg, ea, S, false));
    uint16_t sel = c.rd<uint16_t>(c.seg_lin(i.seg, (ea + S) & kAsizeMask[i.asize], 2, false));
    c.far_jump(sel, off, CALL, S, c.r[kRegNext]);
    }
}
template <int S, int M> void retf(Core& c, Insn const& i) { c.far_return(S == 1 ? 2 : S, uint16_t(i.imm)); }

// ---- SYSCALL/SYSRET (APM vol 2 §6.1.1), SYSENTER/SYSEXIT (§6.1.2; #UD in long mode on AMD)
template <int S, int M> void syscall(Core& c, Insn const&)
{
    if (!(c.efer & efer::SCE)) c.raise(UD);
    c.materialize();
    uint16_t sel = uint16_t(c.msr.star >> 32);
    c.seg[CS] = Segment { uint16_t(sel & 0xFFFC), kAttrCode, 0xFFFFFFFF, 0 };
    c.seg[CS].attr |= 0x800 | 0x400; // G, D
    c.seg[SS] = Segment { uint16_t((sel + 8) & 0xFFFC), uint16_t(kAttrData | 0xC00), 0xFFFFFFFF, 0 };
    if (c.efer & efer::LMA) {
        c.r[RCX] = c.r[kRegNext];
        c.r[R11] = c.flags & ~RF;
        uint64_t target = c.mode64 ? c.msr.lstar : c.msr.cstar;
        c.seg[CS].attr = uint16_t((c.seg[CS].attr & ~0x400) | 0x200); // 64-bit code
        c.flags = (c.flags & ~(c.msr.sfmask | RF)) | 2;
        c.r[kRegNext] = target;
    } else {
        c.r[RCX] = uint32_t(c.r[kRegNext]);
        c.flags &= ~(IF | VM | RF);
        c.r[kRegNext] = uint32_t(c.msr.star);
    }
    c.update_mode();
}
template <int S, int M> void sysret(Core& c, Insn const& i)
{
    if (!(c.efer & efer::SCE)) c.raise(UD);
    if (!(c.cr0 & cr0::PE) || c.cpl != 0) c.raise(GP, 0);
    uint16_t sel = uint16_t(c.msr.star >> 48);
    bool to64 = (i.pfx & kPfxRexW) && c.mode64;
    if (to64) {
        c.seg[CS] = Segment { uint16_t((sel + 16) | 3), uint16_t(0xFB | 0x200 | 0x800), 0xFFFFFFFF, 0 };
        c.r[kRegNext] = c.r[RCX];
    } else {
        c.seg[CS] = Segment { uint16_t(sel | 3), uint16_t(0xFB | 0x400 | 0x800), 0xFFFFFFFF, 0 };
        c.r[kRegNext] = uint32_t(c.r[RCX]);
    }
    // SS selector from STAR; its hidden attributes are not reloaded on AMD beyond DPL=3 (QUIRKS.md)
    c.seg[SS].selector = uint16_t((sel + 8) | 3);
    c.seg[SS].attr = uint16_t((c.seg[SS].attr & ~0x60) | 0x60 | 0x93);
    if (c.efer & efer::LMA) {
        c.lf_kind = LF_NONE;
        c.flags = (c.r[R11] & 0x3F7FD7 & ~(RF | VM)) | 2;
    } else {
        c.flags |= IF;
    }
    c.update_mode();
}
template <int S, int M> void sysenter(Core& c, Insn const&)
{
    // APM vol 3 SYSENTER: #UD in long mode (no error code: #UD never pushes one), #GP(0) in
    // real mode or with a null SYSENTER_CS.
    if (c.efer & efer::LMA) c.raise(UD);
    if (!(c.cr0 & cr0::PE) || (c.msr.sysenter_cs & 0xFFFC) == 0) c.raise(GP, 0);
    c.materialize();
    uint16_t sel = uint16_t(c.msr.sysenter_cs);
    c.flags &= ~(IF | VM | RF);
    c.seg[CS] = Segment { uint16_t(sel & 0xFFFC), uint16_t(kAttrCode | 0xC00), 0xFFFFFFFF, 0 };
    c.seg[SS] = Segment { uint16_t((sel + 8) & 0xFFFC), uint16_t(kAttrData | 0xC00), 0xFFFFFFFF, 0 };
    c.r[RSP] = uint32_t(c.msr.sysenter_esp);
    c.r[kRegNext] = uint32_t(c.msr.sysenter_eip);
    c.update_mode();
}
template <int S, int M> void sysexit(Core& c, Insn const&)
{
    if (c.efer & efer::LMA) c.raise(UD);
    if (!(c.cr0 & cr0::PE)) c.raise(GP, 0);
    if (c.cpl != 0 || (c.msr.sysenter_cs & 0xFFFC) == 0) c.raise(GP, 0);
    uint16_t sel = uint16_t(c.msr.sysenter_cs);
    c.seg[CS] = Segment { uint16_t((sel + 16) | 3), uint16_t(0xFB | 0xC00), 0xFFFFFFFF, 0 };
    c.seg[SS] = Segment { uint16_t((sel + 24) | 3), uint16_t(0xF3 | 0xC00), 0xFFFFFFFF, 0 };
    c.r[RSP] = uint32_t(c.r[RCX]);
    c.r[kRegNext] = uint32_t(c.r[RDX]);
    c.update_mode();
}

} // namespace

void register_far_ops(OpTables& t)
{
    auto& p = t.map[kMapPrimary];
    auto& x = t.map[kMap0F];
    set_op(p[0x9A], "call far", kInv64 | kEnd, Imm::Far, SEVEMU_H(call_far_ptr));
    set_op(p[0xEA], "jmp far", kInv64 | kEnd, Imm::Far, SEVEMU_H(jmp_far_ptr));
    set_op(p[0xCA], "retf", kEnd, Imm::W, SEVEMU_H(retf));
    set_op(p[0xCB], "retf", kEnd, Imm::None, SEVEMU_H(retf));
    set_op(t.grp[9][3], "call far", kMemOnly | kEnd, Imm::None, SEVEMU_HA(far_mem, 1));
    set_op(t.grp[9][5], "jmp far", kMemOnly | kEnd, Imm::None, SEVEMU_HA(far_mem, 0));
    set_op(x[0x05], "syscall", kEnd, Imm::None, SEVEMU_H(syscall));
    set_op(x[0x07], "sysret", kEnd, Imm::None, SEVEMU_H(sysret));
    set_op(x[0x34], "sysenter", kEnd, Imm::None, SEVEMU_H(sysenter));
    set_op(x[0x35], "sysexit", kEnd, Imm::None, SEVEMU_H(sysexit));
}

} // namespace sevemu::cpu
