// sevemu — hardware task switching (APM vol 2 §12.3; Intel SDM vol 3 §7.3 as a cross-check):
// far JMP/CALL to a TSS or a task gate, interrupts and exceptions through a task gate in the IDT,
// and IRET with EFLAGS.NT = 1 back along the previous-task link. Legacy protected mode only: in
// long mode every one of these is #GP (the callers check, §12.1.3).
//
// The switch follows the architectural order: the checks on the new TSS and the old one, then
// the busy bits, the outgoing state saved into the old TSS (in the old TSS's format), the link
// field, the new state read in the new TSS's format — any fault up to here leaves the processor
// as it was — then the commit: TR, CR0.TS, EFLAGS (NT for a nesting switch), EIP and the
// general registers, and the selectors. The descriptors behind the selectors (LDTR, SS, the data
// segments, CS) are loaded and checked afterwards, in the context of the new task: a fault
// there is delivered with the new task's EIP and whatever was loaded so far (a selector not yet
// validated is left not-present, so using it faults again).
#include "cpu/exec_sys.h"

namespace sevemu::cpu {

using namespace rflags;
using namespace sys;

namespace {

bool available_tss(uint64_t d) { return !is_seg(d) && (desc_type(d) == 1 || desc_type(d) == 9); }
bool busy_tss(uint64_t d) { return !is_seg(d) && (desc_type(d) == 3 || desc_type(d) == 0xB); }

// 32-bit TSS (§12.2.5): the dynamic fields the processor writes and reads.
constexpr uint32_t kT32Cr3 = 0x1C, kT32Eip = 0x20, kT32Sel = 0x48, kT32Ldt = 0x60, kT32Trap = 0x64;
// 16-bit TSS (§12.2.6).
constexpr uint32_t kT16Ip = 0x0E, kT16Sel = 0x22, kT16Ldt = 0x2A;

template <class T> T field(uint8_t const* b, uint32_t at)
{
    T v;
    std::memcpy(&v, b + at, sizeof v);
    return v;
}

} // namespace

// JMP/CALL far with a selector naming a TSS descriptor or a task gate (APM vol 3 JMP/CALL (Far)
// pseudocode, "task gate" and "TSS" branches).
void Core::task_far(uint16_t sel, uint64_t d, bool call)
{
    uint16_t serr = sel & 0xFFFC;
    unsigned rpl = sel & 3;
    uint16_t tsel = sel;
    uint64_t td = d;
    if (desc_type(d) == 5) {
        // Task gate (GDT or LDT): DPL >= max(CPL, RPL), present; the TSS it names must be an
        // available TSS in the GDT.
        if (desc_dpl(d) < cpl || desc_dpl(d) < rpl) raise(GP, serr);
        if (!desc_present(d)) raise(NP, serr);
        tsel = uint16_t(d >> 16);
        uint16_t terr = tsel & 0xFFFC;
        if ((tsel & 4) || (tsel | 7u) > gdtr.limit) raise(GP, terr);
        td = rd_sys<uint64_t>(gdtr.base + (tsel & ~7u));
        if (!available_tss(td)) raise(GP, terr); // a busy TSS or not a TSS at all
        if (!desc_present(td)) raise(NP, terr);
    } else {
        // TSS descriptor: only from the GDT; DPL >= max(CPL, RPL); not busy.
        if ((sel & 4) || desc_dpl(d) < cpl || desc_dpl(d) < rpl || !available_tss(d)) raise(GP, serr);
        if (!desc_present(d)) raise(NP, serr);
    }
    task_switch(tsel, td, call ? TaskSrc::Call : TaskSrc::Jmp, 0, false, 0, r[kRegNext]);
}

// IRET with NT = 1 (legacy mode): back to the task named by the current TSS's link field, which
// must be a busy TSS in the GDT; #TS(link) otherwise, #NP(link) if not present.
void Core::task_return()
{
    uint16_t link = rd_sys<uint16_t>(uint32_t(tr.base));
    uint16_t lerr = link & 0xFFFC;
    if ((link & 4) || (link | 7u) > gdtr.limit) raise(TS, lerr);
    uint64_t d = rd_sys<uint64_t>(gdtr.base + (link & ~7u));
    if (!busy_tss(d)) raise(TS, lerr);
    if (!desc_present(d)) raise(NP, lerr);
    task_switch(link, d, TaskSrc::Iret, 0, false, 0, r[kRegNext]);
}

// An interrupt or exception whose IDT entry is a task gate (the gate's DPL and P were checked by
// deliver_event). ext is the error codes' EXT bit: 1 unless INT n/INT3/INTO caused it.
void Core::task_gate_event(uint64_t gate, bool has_err, uint32_t err, uint32_t ext, uint64_t ret_eip)
{
    uint16_t tsel = uint16_t(gate >> 16);
    uint16_t terr = uint16_t((tsel & 0xFFFC) | ext);
    if ((tsel & 4) || (tsel | 7u) > gdtr.limit) raise(GP, terr);
    uint64_t d = rd_sys<uint64_t>(gdtr.base + (tsel & ~7u));
    if (!available_tss(d)) raise(GP, terr);
    if (!desc_present(d)) raise(NP, terr);
    task_switch(tsel, d, TaskSrc::Event, ext, has_err, err, ret_eip);
}

void Core::task_switch(uint16_t nsel, uint64_t nd, TaskSrc src, uint32_t ext, bool has_err, uint32_t err, uint64_t ret_eip)
{
    materialize();
    bool const nesting = src == TaskSrc::Call || src == TaskSrc::Event;
    bool const n32 = desc_type(nd) & 8;
    bool const o32 = tr.attr & 8;
    Segment ntss = seg_from_desc(nsel, nd);
    uint32_t const nmin = n32 ? 0x67 : 0x2B;
    auto err_of = [ext](uint16_t sel) { return uint32_t((sel & 0xFFFC) | ext); };

    // New TSS large enough for a whole TSS of its kind; the old one for the fields saved in it.
    if (ntss.limit < nmin) raise(TS, err_of(nsel));
    // The SVM task-switch intercept takes priority over everything after the new TSS's checks
    // (§15.14.1): EXITINFO1 = the new TSS selector, EXITINFO2 = error code and reason bits.
    if (SEVEMU_UNLIKELY(intercepted(svm::Intercept::TASK_SWITCH))) {
        uint64_t info2 = has_err ? (uint64_t(err) | (1ull << 44)) : 0;
        if (src == TaskSrc::Iret) info2 |= 1ull << 36;
        if (src == TaskSrc::Jmp) info2 |= 1ull << 38;
        if (flags & RF) info2 |= 1ull << 48;
        vmexit_now(svm::exitcode::SVM_EXIT_TASK_SWITCH, nsel, info2, src == TaskSrc::Event ? 0 : r[kRegNext]);
    }
    if (tr.limit < (o32 ? 0x5Fu : 0x29u)) raise(TS, err_of(tr.selector));

    // Every page the switch touches must be there before anything is written (§12.3.2): the
    // new TSS (its link field written by a nesting switch), the old TSS's dynamic fields, and
    // the GDT bytes holding the busy bits.
    uint32_t const nb = uint32_t(ntss.base), ob = uint32_t(tr.base);
    auto probe = [&](uint32_t a, uint32_t len, bool write) {
        translate(a, write, false, true);
        translate(uint32_t(a + len - 1), write, false, true);
    };
    probe(nb, nmin + 1, false);
    if (nesting) probe(nb, 2, true);
    if (o32) probe(ob + kT32Eip, 0x5E - kT32Eip, true);
    else probe(ob + kT16Ip, 0x2A - kT16Ip, true);
    uint64_t const old_desc_at = gdtr.base + (tr.selector & ~7u) + 5;
    uint64_t const new_desc_at = gdtr.base + (nsel & ~7u) + 5;
    if (src == TaskSrc::Jmp || src == TaskSrc::Iret) probe(uint32_t(old_desc_at), 1, true);
    if (src != TaskSrc::Iret) probe(uint32_t(new_desc_at), 1, true);

    // The old task: not busy any more after JMP and IRET; NT cleared in its image after IRET.
    if (src == TaskSrc::Jmp || src == TaskSrc::Iret)
        wr_sys<uint8_t>(old_desc_at, uint8_t(rd_sys<uint8_t>(old_desc_at) & ~2u));
    uint32_t oflags = uint32_t(flags & ~RF);
    if (src == TaskSrc::Iret) oflags &= ~uint32_t(NT);

    // Save the outgoing state in the old TSS's format.
    static constexpr unsigned kSegOrder[6] = { ES, CS, SS, DS, FS, GS };
    if (o32) {
        uint32_t v[10] = { uint32_t(ret_eip), oflags, uint32_t(r[RAX]), uint32_t(r[RCX]), uint32_t(r[RDX]),
            uint32_t(r[RBX]), uint32_t(r[RSP]), uint32_t(r[RBP]), uint32_t(r[RSI]), uint32_t(r[RDI]) };
        sys_access(ob + kT32Eip, v, sizeof v, true);
        for (unsigned k = 0; k < 6; ++k)
            wr_sys<uint16_t>(ob + kT32Sel + 4 * k, seg[kSegOrder[k]].selector);
    } else {
        uint16_t v[14] = { uint16_t(ret_eip), uint16_t(oflags), uint16_t(r[RAX]), uint16_t(r[RCX]), uint16_t(r[RDX]),
            uint16_t(r[RBX]), uint16_t(r[RSP]), uint16_t(r[RBP]), uint16_t(r[RSI]), uint16_t(r[RDI]),
            seg[ES].selector, seg[CS].selector, seg[SS].selector, seg[DS].selector };
        sys_access(ob + kT16Ip, v, sizeof v, true);
    }
    if (nesting) wr_sys<uint16_t>(nb, tr.selector); // previous-task link

    // Read the incoming state (after the save: a switch to the same TSS reads what was saved).
    uint8_t t[0x68];
    sys_access(nb, t, nmin + 1, false);
    uint32_t ncr3 = 0, neip, nflags, gpr[8];
    uint16_t sel[6], ldt;
    bool trap = false;
    if (n32) {
        ncr3 = field<uint32_t>(t, kT32Cr3);
        neip = field<uint32_t>(t, kT32Eip);
        nflags = field<uint32_t>(t, kT32Eip + 4);
        for (unsigned k = 0; k < 8; ++k) gpr[k] = field<uint32_t>(t, kT32Eip + 8 + 4 * k);
        for (unsigned k = 0; k < 6; ++k) sel[kSegOrder[k]] = field<uint16_t>(t, kT32Sel + 4 * k);
        ldt = field<uint16_t>(t, kT32Ldt);
        trap = field<uint16_t>(t, kT32Trap) & 1;
    } else {
        // A 16-bit TSS: the upper halves of the registers read as all ones (as the 386 and later
        // leave them), EFLAGS[31:16] and EIP[31:16] as 0, FS and GS null, no CR3.
        neip = field<uint16_t>(t, kT16Ip);
        nflags = field<uint16_t>(t, kT16Ip + 2);
        for (unsigned k = 0; k < 8; ++k) gpr[k] = 0xFFFF0000u | field<uint16_t>(t, kT16Ip + 4 + 2 * k);
        for (unsigned k = 0; k < 4; ++k) sel[kSegOrder[k]] = field<uint16_t>(t, kT16Sel + 2 * k);
        sel[FS] = sel[GS] = 0;
        ldt = field<uint16_t>(t, kT16Ldt);
    }
    if (src != TaskSrc::Iret)
        wr_sys<uint8_t>(new_desc_at, uint8_t(rd_sys<uint8_t>(new_desc_at) | 2u));

    // ---- Commit: from here on we are in the new task.
    tr = ntss;
    tr.attr |= 2; // busy
    cr0 |= cr0::TS;
    dr7 &= ~0x155ull; // L0-L3 and LE are per task
    if (nesting) nflags |= NT;
    for (unsigned k = 0; k < 8; ++k) r[k] = gpr[k];
    flags = (nflags & 0x3F7FD7) | 2;
    lf_kind = LF_NONE;
    rip = r[kRegNext] = neip;
    irq_shadow = false;
    for (unsigned s = 0; s < 6; ++s) {
        seg[s].selector = sel[s];
        seg[s].attr &= uint16_t(~0x80); // not usable until validated below
    }
    // Until SS is loaded, CPL reads as 3 so that a fault here switches to a ring-0 stack.
    seg[SS].attr = 3 << 5;
    ldtr = Segment {};
    ldtr.selector = ldt;
    update_mode();
    try {
        if (n32 && (cr0 & cr0::PG)) {
            cr3 = ncr3;
            pctx.cr3 = cr3;
            flush_tlb(false);
        }
        // LDTR: a GDT selector of a present LDT descriptor, or null.
        if (ldt & 4) raise(TS, err_of(ldt));
        if (ldt & 0xFFFC) {
            if ((ldt | 7u) > gdtr.limit) raise(TS, err_of(ldt));
            uint64_t d = rd_sys<uint64_t>(gdtr.base + (ldt & ~7u));
            if (is_seg(d) || desc_type(d) != 2 || !desc_present(d)) raise(TS, err_of(ldt));
            ldtr = seg_from_desc(ldt, d);
        }
        auto fetch = [&](uint16_t s) -> uint64_t {
            DescriptorTable tab = (s & 4) ? DescriptorTable { ldtr.base, uint16_t(ldtr.limit) } : gdtr;
            if (((s & 4) && !ldtr.present()) || (s | 7u) > ((s & 4) ? ldtr.limit : gdtr.limit)) raise(TS, err_of(s));
            return rd_sys<uint64_t>(tab.base + (s & ~7u));
        };
        if (flags & VM) {
            // A virtual-8086 task: selectors are paragraph numbers, CPL 3.
            for (unsigned s = 0; s < 6; ++s)
                seg[s] = Segment { sel[s], 0xF3, 0xFFFF, uint64_t(sel[s]) << 4 };
        } else {
            unsigned ncpl = sel[CS] & 3;
            // SS: a writable data segment with RPL = DPL = the new CPL (CS.RPL).
            uint16_t ss = sel[SS];
            if (!(ss & 0xFFFC)) raise(TS, err_of(ss));
            uint64_t sd = fetch(ss);
            if (!is_seg(sd) || is_code(sd) || !(sd & (1ull << 41))) raise(TS, err_of(ss));
            if ((ss & 3u) != ncpl || desc_dpl(sd) != ncpl) raise(TS, err_of(ss));
            if (!desc_present(sd)) raise(SS_, err_of(ss));
            set_accessed(ss, sd);
            seg[SS] = seg_from_desc(ss, sd | (1ull << 40));
            update_mode(); // CPL = SS.DPL from here on
            // Data segments: null, or data / readable code visible at max(CPL, RPL).
            for (unsigned s : { ES, DS, FS, GS }) {
                uint16_t v = sel[s];
                if (!(v & 0xFFFC)) {
                    seg[s] = Segment {};
                    seg[s].selector = v;
                    update_seg_cache(s);
                    continue;
                }
                uint64_t d = fetch(v);
                if (!is_seg(d) || (is_code(d) && !(d & (1ull << 41)))) raise(TS, err_of(v));
                bool conforming_code = is_code(d) && (d & (1ull << 42));
                if (!conforming_code && (desc_dpl(d) < cpl || desc_dpl(d) < (v & 3u))) raise(TS, err_of(v));
                if (!desc_present(d)) raise(NP, err_of(v));
                set_accessed(v, d);
                seg[s] = seg_from_desc(v, d | (1ull << 40));
                update_seg_cache(s);
            }
            // CS: code; non-conforming DPL = RPL, conforming DPL <= RPL.
            uint16_t cs = sel[CS];
            if (!(cs & 0xFFFC)) raise(TS, err_of(cs));
            uint64_t cd = fetch(cs);
            if (!is_seg(cd) || !is_code(cd)) raise(TS, err_of(cs));
            bool conforming = cd & (1ull << 42);
            if (conforming ? desc_dpl(cd) > ncpl : desc_dpl(cd) != ncpl) raise(TS, err_of(cs));
            if (!desc_present(cd)) raise(NP, err_of(cs));
            set_accessed(cs, cd);
            seg[CS] = seg_from_desc(cs, cd | (1ull << 40));
        }
        update_mode();
        // An exception with an error code pushes it on the new task's stack, in the new TSS's
        // operand size; a stack limit violation there is #SS(EXT).
        if (has_err) {
            try {
                if (n32) push<4>(err); else push<2>(err);
            } catch (GuestFault const& f) {
                if (f.vector == SS_) raise(SS_, ext);
                throw;
            }
        }
        if (rip > seg[CS].limit) raise(GP, ext);
    } catch (GuestFault const&) {
        update_mode();
        throw;
    }
    // The TSS's T bit: a debug trap before the new task's first instruction (BT in DR6).
    if (trap) {
        dr6 |= 1u << 15;
        deliver_event(DB, false, 0, false, rip);
    }
}

} // namespace sevemu::cpu
