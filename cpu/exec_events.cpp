// sevemu — exceptions and interrupts (APM vol 2 ch 8): delivery through the IVT or the IDT
// (§8.7-8.9), double and triple faults (§8.2.9), and the return from them, IRET (§8.9.5; to and
// within virtual-8086 mode §16.2), plus INT n/INT3/INT1/INTO, UD1/UD2, CLI/STI and HLT.
// Task gates and IRET with NT set go to exec_task.cpp.
#include "cpu/exec_sys.h"

namespace sevemu::cpu {

using namespace rflags;
using namespace sys;

void Core::iret(unsigned osize)
{
    nmi_blocked = false; // IRET ends NMI blocking (APM vol 2 §8.2.3)
    materialize();
    if (!(cr0 & cr0::PE)) {
        uint64_t ip = pop_n(osize);
        uint16_t cs = uint16_t(pop_n(osize));
        uint64_t fl = pop_n(osize);
        seg[CS].selector = cs;
        seg[CS].base = uint64_t(cs) << 4;
        uint64_t m = osize == 2 ? 0xFFFF : (0x3F7FD7 & ~(VM | VIF | VIP | RF));
        set_rflags(fl, m);
        rip = r[kRegNext] = ip;
        update_mode();
        return;
    }
    uint64_t m = stack_mask();
    uint64_t sp = r[RSP] & m;
    auto peek = [&](uint64_t at) -> uint64_t {
        uint64_t a = seg_lin(SS, at & m, osize, false);
        return osize == 8 ? rd<uint64_t>(a) : osize == 4 ? rd<uint32_t>(a) : rd<uint16_t>(a);
    };
    if (flags & VM) {
        // IRET in virtual-8086 mode (APM vol 2 §16.2.4): IOPL-sensitive (no VME), otherwise
        // the real-mode form that leaves IOPL (and VM, VIF, VIP) alone.
        if (((flags >> 12) & 3) < 3) raise(GP, 0);
        uint64_t ip = peek(sp);
        uint16_t cs = uint16_t(peek(sp + osize));
        uint64_t fl = peek(sp + 2 * osize);
        if (ip > 0xFFFF) raise(GP, 0); // beyond the CS limit
        r[RSP] = (r[RSP] & ~m) | ((sp + 3 * osize) & m);
        seg[CS] = Segment { cs, 0xF3, 0xFFFF, uint64_t(cs) << 4 };
        set_rflags(fl, (osize == 2 ? 0xFFFF : 0x3F7FD7) & ~(IOPL | VM | VIF | VIP | RF));
        rip = r[kRegNext] = ip;
        update_mode();
        return;
    }
    if (flags & NT) {
        if (efer & efer::LMA) raise(GP, 0); // no task return in long mode (§12.1.3)
        task_return();
        return;
    }
    uint64_t new_ip = peek(sp);
    uint16_t sel = uint16_t(peek(sp + osize));
    uint64_t fl = peek(sp + 2 * osize);
    if (osize == 4 && (fl & VM) && cpl == 0 && !(efer & efer::LMA)) {
        // Return to virtual-8086 mode (§16.2.3): EIP, CS, EFLAGS, ESP, SS, ES, DS, FS, GS, all
        // 32-bit slots (selectors in the low word); the whole EFLAGS image is loaded.
        uint64_t v[6];
        for (unsigned k = 0; k < 6; ++k) v[k] = peek(sp + 12 + 4 * k);
        if (new_ip > 0xFFFF) raise(GP, 0);
        static constexpr unsigned kOrder[5] = { SS, ES, DS, FS, GS };
        for (unsigned k = 0; k < 5; ++k)
            seg[kOrder[k]] = Segment { uint16_t(v[k + 1]), 0xF3, 0xFFFF, uint64_t(uint16_t(v[k + 1])) << 4 };
        seg[CS] = Segment { sel, 0xF3, 0xFFFF, uint64_t(sel) << 4 };
        set_rflags(fl, 0x3F7FD7 & ~RF);
        r[RSP] = uint32_t(v[0]);
        rip = r[kRegNext] = new_ip;
        update_mode();
        return;
    }
    unsigned rpl = sel & 3;
    Segment ncs = check_return_cs(sel);
    bool target64 = (efer & efer::LMA) && ncs.long_mode();
    // RF is not loaded: with no instruction breakpoints modelled it would suppress nothing, and
    // the processor clears it after the next instruction anyway (QUIRKS.md).
    uint64_t fmask = writable_flags_mask() & ~RF;
    if (osize == 2) fmask &= 0xFFFF;
    unsigned old_cpl = cpl;
    if (rpl == cpl && !mode64) {
        seg[CS] = ncs;
        r[RSP] = (r[RSP] & ~m) | ((sp + 3 * osize) & m);
        rip = r[kRegNext] = new_ip;
        set_rflags(fl, fmask);
        update_mode();
        return;
    }
    // 64-bit mode always pops SS:RSP (APM vol 2 §8.9.5); otherwise only on a level change.
    uint64_t new_sp = peek(sp + 3 * osize);
    uint16_t ss_sel = uint16_t(peek(sp + 4 * osize));
    Segment nss = load_outer_ss(ss_sel, rpl, target64);
    seg[CS] = ncs;
    seg[SS] = nss;
    uint64_t nm = target64 ? ~0ull : nss.big() ? 0xFFFFFFFFull : 0xFFFF;
    r[RSP] = (r[RSP] & ~nm) | (new_sp & nm);
    rip = r[kRegNext] = new_ip;
    set_rflags(fl, fmask);
    update_mode();
    if (cpl > old_cpl)
        null_inaccessible_data_segments();
}

// ---------------------------------------------------------------- interrupts and exceptions

void Core::deliver_event(uint8_t vec, bool has_err, uint32_t err, bool software, uint64_t return_rip, bool fault)
{
    materialize();
    uint32_t ext = software ? 0 : 1;
    uint64_t fl = (flags & ~RF) | (fault ? RF : 0);
    if (!(cr0 & cr0::PE)) {
        // Real mode (APM vol 2 §8.7.1): IVT entry is offset:segment at vector * 4.
        if (uint32_t(vec) * 4 + 3 > idtr.limit) raise(GP, 0);
        uint32_t ent = rd_sys<uint32_t>(idtr.base + uint32_t(vec) * 4);
        push<2>(fl);
        push<2>(seg[CS].selector);
        push<2>(return_rip);
        flags &= ~(IF | TF | AC | RF);
        seg[CS].selector = uint16_t(ent >> 16);
        seg[CS].base = uint64_t(ent >> 16) << 4;
        rip = r[kRegNext] = uint16_t(ent);
        update_mode();
        return;
    }
    bool lm = efer & efer::LMA;
    unsigned gsize = lm ? 16 : 8;
    if (uint32_t(vec) * gsize + gsize - 1 > idtr.limit) raise(GP, vec * 8 + 2 + ext);
    uint64_t g = rd_sys<uint64_t>(idtr.base + uint64_t(vec) * gsize);
    uint64_t ghi = lm ? rd_sys<uint64_t>(idtr.base + uint64_t(vec) * gsize + 8) : 0;
    unsigned type = (g >> 40) & 0x1F;
    bool ok = lm ? (type == 0xE || type == 0xF) : (type == 0x5 || type == 0x6 || type == 0x7 || type == 0xE || type == 0xF);
    if (!ok) raise(GP, vec * 8 + 2 + ext);
    if (software && desc_dpl(g) < cpl) raise(GP, vec * 8 + 2);
    if (!desc_present(g)) raise(NP, vec * 8 + 2 + ext);
    if (type == 0x5) { // task gate (legacy mode only): a task switch (exec_task.cpp)
        task_gate_event(g, has_err, err, ext, return_rip);
        return;
    }
    bool trap = type & 1;
    bool gate32 = type & 8;
    uint16_t sel = uint16_t(g >> 16);
    uint64_t off = (g & 0xFFFF) | ((g >> 32) & 0xFFFF0000ull) | (lm ? (ghi & 0xFFFFFFFF) << 32 : 0);
    unsigned ist = lm ? unsigned((g >> 32) & 7) : 0;
    if ((sel & 0xFFFC) == 0) raise(GP, ext);
    uint64_t d = read_descriptor(sel, GP);
    if (!is_seg(d) || !is_code(d) || desc_dpl(d) > cpl) raise(GP, (sel & 0xFFFC) + ext);
    if (!desc_present(d)) raise(NP, (sel & 0xFFFC) + ext);
    bool conforming = d & (1ull << 42);
    // From virtual-8086 mode only a non-conforming ring-0 handler will do (APM vol 2 §16.2.5).
    bool const v86 = flags & VM;
    if (v86 && (conforming || desc_dpl(d) != 0)) raise(GP, (sel & 0xFFFC) + ext);
    unsigned new_cpl = conforming ? cpl : desc_dpl(d);
    Segment ncs = seg_from_desc(uint16_t((sel & 0xFFFC) | new_cpl), d | (1ull << 40));
    if (lm && !(ncs.long_mode() && !ncs.big())) raise(GP, (sel & 0xFFFC) + ext);
    if (!lm && (gate32 ? off : (off & 0xFFFF)) > ncs.limit) raise(GP, ext);

    uint64_t old_ss = seg[SS].selector, old_sp = r[RSP];
    uint16_t old_cs = seg[CS].selector;
    Segment nss = seg[SS];
    uint64_t sp = r[RSP];
    uint64_t ss_base, sp_mask;
    bool stack_switch = new_cpl < cpl;
    if (lm) {
        // Long mode (§8.9.2-8.9.4): RSP from the TSS (RSPn or ISTn), SS = null with RPL = CPL,
        // stack aligned to 16, always pushes SS:RSP.
        if (stack_switch || ist) {
            uint64_t at = ist ? tr.base + 0x24 + (ist - 1) * 8 : tr.base + 4 + new_cpl * 8;
            if (at + 7 > tr.base + tr.limit) raise(TS, (tr.selector & 0xFFFC) + ext);
            sp = rd_sys<uint64_t>(at);
        }
        if (stack_switch) {
            nss = Segment {};
            nss.selector = uint16_t(new_cpl);
            nss.attr = uint16_t(new_cpl << 5);
        }
        sp &= ~0xFull;
        ss_base = 0;
        sp_mask = ~0ull;
        // push SS, RSP, RFLAGS, CS, RIP, [err] — write highest first
        uint64_t top = sp;
        uint64_t order[6] = { old_ss, old_sp, fl, old_cs, return_rip, err };
        unsigned count = has_err ? 6 : 5;
        for (unsigned k = 0; k < count; ++k) {
            top -= 8;
            wr_stack_sup<uint64_t>(top, order[k], new_cpl);
        }
        sp = top;
    } else {
        if (stack_switch) {
            // 32-bit TSS: ESPn at 4 + n*8, SSn at 8 + n*8; 16-bit TSS: SPn at 2 + n*4, SSn at 4 + n*4.
            bool tss32 = (tr.attr & 0x8);
            uint64_t at = tss32 ? tr.base + 4 + new_cpl * 8 : tr.base + 2 + new_cpl * 4;
            if (at + (tss32 ? 5 : 3) > tr.base + tr.limit) raise(TS, (tr.selector & 0xFFFC) + ext);
            uint64_t nsp = tss32 ? rd_sys<uint32_t>(at) : rd_sys<uint16_t>(at);
            uint16_t nsel = rd_sys<uint16_t>(at + (tss32 ? 4 : 2));
            if ((nsel & 0xFFFC) == 0) raise(TS, ext);
            if ((nsel & 3) != new_cpl) raise(TS, (nsel & 0xFFFC) + ext);
            uint64_t sd = read_descriptor(nsel, TS);
            if (!is_seg(sd) || is_code(sd) || !(sd & (1ull << 41)) || desc_dpl(sd) != new_cpl) raise(TS, (nsel & 0xFFFC) + ext);
            if (!desc_present(sd)) raise(SS_, (nsel & 0xFFFC) + ext);
            nss = seg_from_desc(nsel, sd | (1ull << 40));
            sp = nsp;
        }
        ss_base = nss.base;
        sp_mask = nss.big() ? 0xFFFFFFFFull : 0xFFFF;
        unsigned w = gate32 ? 4 : 2;
        // From V86 mode GS, FS, DS, ES go first (§16.2.5), then SS, ESP, EFLAGS, CS, EIP, error.
        uint64_t order[10];
        unsigned n = 0;
        if (v86)
            for (unsigned s : { GS, FS, DS, ES }) order[n++] = seg[s].selector;
        if (stack_switch) { order[n++] = old_ss; order[n++] = old_sp; }
        order[n++] = fl;
        order[n++] = old_cs;
        order[n++] = return_rip;
        if (has_err) order[n++] = err;
        // Room on the (new) stack: each slot within SS's limit (expand-up or expand-down).
        bool down = (nss.attr & 0x1C) == 0x14;
        uint64_t lo = down ? uint64_t(nss.limit) + 1 : 0, hi = down ? sp_mask : nss.limit;
        for (unsigned k = 1; k <= n; ++k) {
            uint64_t at = (sp - k * w) & sp_mask;
            if (at < lo || at + w - 1 > hi) raise(SS_, (stack_switch ? (nss.selector & 0xFFFC) : 0) + ext);
        }
        uint64_t top = sp;
        for (unsigned k = 0; k < n; ++k) {
            top = (top - w) & sp_mask;
            uint64_t a = uint32_t(ss_base + top);
            if (w == 4) wr_stack_sup<uint32_t>(a, uint32_t(order[k]), new_cpl);
            else wr_stack_sup<uint16_t>(a, uint16_t(order[k]), new_cpl);
        }
        sp = (sp & ~sp_mask) | top;
        if (!gate32) off &= 0xFFFF;
    }
    // Commit.
    set_accessed(sel, d);
    seg[CS] = ncs;
    seg[SS] = nss;
    if (v86) // the data segments are null in the handler; their V86 values are on its stack
        for (unsigned s : { ES, DS, FS, GS })
            seg[s] = Segment {};
    r[RSP] = lm ? sp : ((r[RSP] & ~sp_mask) | (sp & sp_mask));
    if (lm && !stack_switch && !ist) r[RSP] = sp;
    flags &= ~(TF | NT | RF | VM);
    if (!trap) flags &= ~IF;
    rip = r[kRegNext] = off;
    update_mode();
}

void Core::exception(GuestFault const& f)
{
    ++stats.exceptions;
    // An intercepted exception is a #VMEXIT with the error code in EXITINFO1 (APM vol 2 §15.12);
    // #PF is intercepted where it is raised (translate), with the address in EXITINFO2.
    if (SEVEMU_UNLIKELY(guest.has_value()) && guest->intercepts_exception(f.vector))
        vmexit_now(svm::exitcode::SVM_EXIT_EXCP_BASE + f.vector, f.has_error ? f.error : 0, 0, 0);
    auto contributory = [](uint8_t v) { return v == DE || v == TS || v == NP || v == SS_ || v == GP; };
    try {
        // Faults push RFLAGS with RF = 1, so that IRET back to the faulting instruction does not
        // stop at an instruction breakpoint on it again; #DF (an abort) does not.
        deliver_event(f.vector, f.has_error, f.error, false, rip, f.vector != DF_ && f.vector != MC && f.vector != DB);
    } catch (GuestFault const& g) {
        if (f.vector == DF_) { // APM vol 2 §8.2.9: a fault while delivering #DF shuts down
            pending_shutdown = true;
            return;
        }
        bool df = (contributory(f.vector) && contributory(g.vector)) || (f.vector == PF_ && (contributory(g.vector) || g.vector == PF_));
        if (df) {
            GuestFault d { DF_, true, 0 };
            exception(d);
        } else {
            exception(g);
        }
    }
}

// ---------------------------------------------------------------- instruction handlers

namespace {

// CLI/STI: IOPL-sensitive in protected mode (CPL > IOPL) and in virtual-8086 mode (IOPL < 3,
// CPL being 3 there); without VME there is no VIF to fall back on.
template <int S, int M> void cli(Core& c, Insn const&)
{
    if ((c.cr0 & cr0::PE) && c.cpl > ((c.flags >> 12) & 3)) c.raise(GP, 0);
    c.flags &= ~IF;
}
template <int S, int M> void sti(Core& c, Insn const&)
{
    if ((c.cr0 & cr0::PE) && c.cpl > ((c.flags >> 12) & 3)) c.raise(GP, 0);
    if (!(c.flags & IF)) c.irq_shadow = true; // STI shadow (APM vol 3 STI)
    c.flags |= IF;
    end(c);
}
template <int S, int M> void hlt(Core& c, Insn const&)
{
    need_cpl0(c);
    if (c.intercepted(svm::Intercept::HLT)) return c.intercept_return(svm::Intercept::HLT);
    c.halted = true;
    end(c);
}
template <int S, int M> void int_n(Core& c, Insn const& i)
{
    if ((c.flags & VM) && ((c.flags >> 12) & 3) < 3) c.raise(GP, 0);
    c.deliver_event(uint8_t(i.imm), false, 0, true, c.r[kRegNext]);
    end(c);
}
template <int S, int M> void int3(Core& c, Insn const&) { c.deliver_event(BP, false, 0, true, c.r[kRegNext]); end(c); }
template <int S, int M> void int1(Core& c, Insn const&) { c.deliver_event(DB, false, 0, false, c.r[kRegNext]); end(c); }
template <int S, int M> void into(Core& c, Insn const&)
{
    if (c.get_of()) { c.deliver_event(OF_, false, 0, true, c.r[kRegNext]); end(c); }
}
template <int S, int M> void iret_op(Core& c, Insn const&)
{
    // The IRET intercept (APM vol 2 §15.9, checked before the instruction executes): how a
    // hypervisor learns that its guest's NMI handler returned (KVM's iret_interception).
    if (SEVEMU_UNLIKELY(c.intercepted(svm::Intercept::IRET))) c.intercept(svm::Intercept::IRET);
    c.iret(S == 1 ? 2 : S);
    end(c);
}
template <int S, int M> void ud(Core& c, Insn const&) { c.raise(UD); }

} // namespace

void register_event_ops(OpTables& t)
{
    auto& p = t.map[kMapPrimary];
    auto& x = t.map[kMap0F];
    set_op(p[0xCC], "int3", kEnd, Imm::None, SEVEMU_H(int3));
    set_op(p[0xCD], "int", kEnd, Imm::B, SEVEMU_H(int_n));
    set_op(p[0xCE], "into", kInv64, Imm::None, SEVEMU_H(into));
    set_op(p[0xCF], "iret", kEnd, Imm::None, SEVEMU_H(iret_op));
    set_op(p[0xF1], "int1", kEnd, Imm::None, SEVEMU_H(int1));
    set_op(p[0xF4], "hlt", kEnd, Imm::None, SEVEMU_H(hlt));
    set_op(p[0xFA], "cli", 0, Imm::None, SEVEMU_H(cli));
    set_op(p[0xFB], "sti", 0, Imm::None, SEVEMU_H(sti));
    set_op(x[0x0B], "ud2", kEnd, Imm::None, SEVEMU_H(ud));
    set_op(x[0xB9], "ud1", kModrm | kEnd, Imm::None, SEVEMU_H(ud));
}

} // namespace sevemu::cpu
