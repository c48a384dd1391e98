// sevemu — system architecture: segmentation and descriptor tables (APM vol 2 §4), control
// registers (§3.1), far transfers and privilege (§4.8-4.13), interrupts and exceptions (§8),
// SYSCALL/SYSRET and SYSENTER/SYSEXIT (§6.1), MSRs (§A), port I/O and the I/O bitmap (§13.3),
// plus the system instructions that use them.
#include "cpu/ops.h"

namespace sevemu::cpu {

using namespace rflags;

namespace {

constexpr uint16_t kAttrData = 0x93, kAttrCode = 0x9B;

bool is_code(uint64_t d) { return (d >> 43) & 1; }
bool is_seg(uint64_t d) { return (d >> 44) & 1; }
unsigned desc_dpl(uint64_t d) { return (d >> 45) & 3; }
bool desc_present(uint64_t d) { return (d >> 47) & 1; }
unsigned desc_type(uint64_t d) { return (d >> 40) & 0xF; }
bool canonical(uint64_t a) { return uint64_t(int64_t(a << 16) >> 16) == a; }

} // namespace

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

void Core::update_mode()
{
    bool pe = cr0 & cr0::PE;
    mode64 = (efer & efer::LMA) && seg[CS].long_mode() && pe;
    mode = mode64 ? 2 : (pe && !(flags & VM) && seg[CS].big()) ? 1 : 0;
    cpl = !pe ? 0 : (flags & VM) ? 3 : seg[SS].dpl();
    bank = cpl == 3 ? 1 : 0;
    for (unsigned s = 0; s < 6; ++s)
        update_seg_cache(s);
    brk = true;
}

void Core::update_paging()
{
    using mmu::PagingMode;
    pctx.mode = !(cr0 & cr0::PG) ? PagingMode::None
        : (efer & efer::LMA)     ? PagingMode::Long4
        : (cr4 & cr4::PAE)       ? PagingMode::Pae
                                 : PagingMode::Legacy32;
    pctx.cr3 = cr3;
    pctx.wp = cr0 & cr0::WP;
    pctx.nxe = efer & efer::NXE;
    pctx.pse = cr4 & cr4::PSE;
    pctx.smep = cr4 & cr4::SMEP;
    pctx.smap = cr4 & cr4::SMAP;
    pctx.pge = cr4 & cr4::PGE;
    pctx.sme = msr.syscfg & syscfg::MemEncryptionModEn;
    pctx.c_bit = info.c_bit;
    pctx.phys_bits = uint8_t(info.phys_addr_bits - (pctx.sme ? info.phys_addr_reduction : 0));
    pctx.resolver = nullptr;
    if (guest && guest->np) {
        // A guest under nested paging: its tables are in guest-physical memory, and its C-bit is
        // the SEV guest's own (the guest has no SYSCFG; SEV makes the bit meaningful, §15.34.5).
        pctx.resolver = guest_tables.get();
        pctx.sme = guest->sev;
        pctx.phys_bits = uint8_t(info.phys_addr_bits - (guest->sev ? info.phys_addr_reduction : 0));
    }
    flush_tlb(true);
}

void Core::flush_tlb(bool include_global)
{
    if (keep_tlb) {
        // A world switch reloads CR3/CR4/EFER without flushing the tagged TLB.
    } else if (include_global)
        tlb.flush_all();
    else
        tlb.flush_non_global();
    flush_jump_cache();
    brk = true;
}

// ---------------------------------------------------------------- control registers

void Core::set_cr0(uint64_t v)
{
    // APM vol 2 §3.1.1: reserved bits 63:32 MBZ; PG without PE and NW without CD are #GP.
    if (v >> 32) raise(GP, 0);
    if ((v & cr0::PG) && !(v & cr0::PE)) raise(GP, 0);
    if ((v & cr0::NW) && !(v & cr0::CD)) raise(GP, 0);
    v |= cr0::ET;
    bool pg_on = (v & cr0::PG) && !(cr0 & cr0::PG);
    bool pg_off = !(v & cr0::PG) && (cr0 & cr0::PG);
    if (pg_on && (efer & efer::LME)) {
        // Activating long mode (§14.6.1): requires CR4.PAE; CS.L must not be set.
        if (!(cr4 & cr4::PAE)) raise(GP, 0);
        efer |= efer::LMA;
    }
    if (pg_off && (cr4 & cr4::PCIDE)) raise(GP, 0); // paging off needs PCIDE off first
    if (pg_off && (efer & efer::LMA)) {
        if (mode64) raise(GP, 0); // leaving long mode is only possible from compatibility mode
        efer &= ~efer::LMA;
    }
    cr0 = v;
    update_mode();
    update_paging();
}

void Core::set_cr3(uint64_t v)
{
    // With CR4.PCIDE (APM vol 2 §5.5.1), CR3[11:0] is the PCID and bit 63 of the source asks not
    // to invalidate that PCID's entries; it is never stored. The TLB holds one PCID's entries at
    // a time, so a CR3 write always drops the non-global ones (more than required, which the
    // architecture allows).
    if (cr4 & cr4::PCIDE)
        v &= ~(1ull << 63);
    if ((efer & efer::LMA) && (v >> 52)) raise(GP, 0);
    cr3 = (efer & efer::LMA) ? v : uint32_t(v);
    pctx.cr3 = cr3;
    flush_tlb(false);
}

void Core::set_cr4(uint64_t v)
{
    // VME and PVI (virtual interrupt flags, APM vol 2 §16.3-16.4) are not implemented and not
    // advertised (CPUID 1 EDX[1] = 0): setting them is #GP(0) (QUIRKS.md).
    constexpr uint64_t kValid = cr4::TSD | cr4::DE | cr4::PSE | cr4::PAE | cr4::MCE
        | cr4::PGE | cr4::PCE | cr4::OSFXSR | cr4::OSXMMEXCPT | cr4::FSGSBASE | cr4::OSXSAVE | cr4::SMEP
        | cr4::SMAP | cr4::PCIDE;
    if (v & ~kValid) raise(GP, 0);
    if ((efer & efer::LMA) && !(v & cr4::PAE)) raise(GP, 0);
    // PCIDE can be set only in long mode with CR3[11:0] = 0 (APM vol 2 §3.1.3, MOV CRn).
    if ((v & cr4::PCIDE) && !(cr4 & cr4::PCIDE) && (!(efer & efer::LMA) || (cr3 & 0xFFF))) raise(GP, 0);
    cr4 = v;
    update_paging();
}

void Core::set_efer(uint64_t v)
{
    constexpr uint64_t kValid = efer::SCE | efer::LME | efer::LMA | efer::NXE | efer::SVME;
    if (v & ~kValid) raise(GP, 0);
    // VM_CR.SVMDIS (bit 4) forbids enabling SVM (APM vol 2 §15.30.1).
    if ((v & efer::SVME) && !(efer & efer::SVME) && (msr.vm_cr & (1u << 4))) raise(GP, 0);
    if (((v ^ efer) & efer::LME) && (cr0 & cr0::PG)) raise(GP, 0);
    efer = (v & ~efer::LMA) | (efer & efer::LMA);
    update_mode();
    update_paging();
}

uint64_t Core::writable_flags_mask() const
{
    uint64_t m = CF | PF | AF | ZF | SF | TF | DF | OF | NT | AC | ID | RF;
    if (cpl == 0 || !(cr0 & cr0::PE)) m |= IOPL | IF;
    else if (cpl <= ((flags >> 12) & 3)) m |= IF;
    return m;
}

void Core::set_rflags(uint64_t v, uint64_t m)
{
    materialize();
    uint64_t old = flags;
    flags = ((flags & ~m) | (v & m) | 2) & 0x3F7FD7;
    if ((old ^ flags) & (IF | VM | TF))
        brk = true;
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

// ---------------------------------------------------------------- call gates

namespace {

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
    if ((sel & 0xFFFC) == 0) raise(GP, 0);
    if (rpl < cpl) raise(GP, sel & 0xFFFC);
    uint64_t d = read_descriptor(sel, GP);
    if (!is_seg(d) || !is_code(d)) raise(GP, sel & 0xFFFC);
    bool conforming = d & (1ull << 42);
    if (conforming ? desc_dpl(d) > rpl : desc_dpl(d) != rpl) raise(GP, sel & 0xFFFC);
    if (!desc_present(d)) raise(NP, sel & 0xFFFC);
    Segment ncs = seg_from_desc(sel, d | (1ull << 40));
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
    // Data segments the new level may not use become null (§4.11.3).
    for (unsigned s : { ES, DS, FS, GS }) {
        Segment const& g = seg[s];
        bool conf_code = (g.attr & 0x1C) == 0x1C;
        if (g.present() && !conf_code && g.dpl() < cpl && (g.selector & 0xFFFC)) {
            seg[s] = Segment {};
            update_seg_cache(s);
        }
    }
}

void Core::iret(unsigned osize)
{
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
    if ((sel & 0xFFFC) == 0) raise(GP, 0);
    if (rpl < cpl) raise(GP, sel & 0xFFFC);
    uint64_t d = read_descriptor(sel, GP);
    if (!is_seg(d) || !is_code(d)) raise(GP, sel & 0xFFFC);
    bool conforming = d & (1ull << 42);
    if (conforming ? desc_dpl(d) > rpl : desc_dpl(d) != rpl) raise(GP, sel & 0xFFFC);
    if (!desc_present(d)) raise(NP, sel & 0xFFFC);
    Segment ncs = seg_from_desc(sel, d | (1ull << 40));
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
    if (cpl > old_cpl) {
        for (unsigned s : { ES, DS, FS, GS }) {
            Segment const& g = seg[s];
            bool conf_code = (g.attr & 0x1C) == 0x1C;
            if (g.present() && !conf_code && g.dpl() < cpl && (g.selector & 0xFFFC)) {
                seg[s] = Segment {};
                update_seg_cache(s);
            }
        }
    }
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

// ---------------------------------------------------------------- I/O permission

bool Core::io_allowed(uint16_t port, unsigned size)
{
    if (!(cr0 & cr0::PE)) return true;
    if (!(flags & VM) && cpl <= ((flags >> 12) & 3)) return true;
    // I/O permission bitmap in the TSS (APM vol 2 §13.3.2).
    if ((tr.attr & 0xD) != 0x9 || tr.limit < 0x67) return false;
    uint16_t base = rd_sys<uint16_t>(tr.base + 0x66);
    uint64_t at = uint64_t(base) + port / 8;
    if (at + 1 > tr.limit) return false;
    uint16_t bits = rd_sys<uint16_t>(tr.base + at);
    return ((bits >> (port & 7)) & ((1u << size) - 1)) == 0;
}

// ---------------------------------------------------------------- MSRs

bool Core::rdmsr(uint32_t idx, uint64_t& v)
{
    switch (idx) {
    case msr::TSC: v = read_tsc(); return true;
    case msr::APIC_BASE: v = msr.apic_base; return true;
    case msr::MTRRCAP: v = 0x508; return true; // 8 variable ranges, fixed ranges, WC
    case msr::SYSENTER_CS: v = msr.sysenter_cs; return true;
    case msr::SYSENTER_ESP: v = msr.sysenter_esp; return true;
    case msr::SYSENTER_EIP: v = msr.sysenter_eip; return true;
    case msr::MCG_CAP: case msr::MCG_STATUS: v = 0; return true;
    case msr::PAT: v = msr.pat; return true;
    case msr::MTRR_DEF_TYPE: v = msr.mtrr_def_type; return true;
    case msr::EFER: v = efer; return true;
    case msr::STAR: v = msr.star; return true;
    case msr::LSTAR: v = msr.lstar; return true;
    case msr::CSTAR: v = msr.cstar; return true;
    case msr::SFMASK: v = msr.sfmask; return true;
    case msr::FS_BASE: v = seg[FS].base; return true;
    case msr::GS_BASE: v = seg[GS].base; return true;
    case msr::KERNEL_GS_BASE: v = msr.kernel_gs_base; return true;
    case msr::TSC_AUX: v = msr.tsc_aux; return true;
    case msr::SYSCFG: v = msr.syscfg; return true;
    case msr::HWCR: v = msr.hwcr; return true;
    case msr::VM_CR: v = msr.vm_cr; return true;
    case msr::VM_HSAVE_PA: v = msr.vm_hsave_pa; return true;
    case msr::SEV_STATUS: v = msr.sev_status; return true;
    default: break;
    }
    if (idx >= 0x200 && idx < 0x210) { v = msr.mtrr_var[idx - 0x200]; return true; }
    static constexpr uint32_t kFix[11] = { 0x250, 0x258, 0x259, 0x268, 0x269, 0x26A, 0x26B, 0x26C, 0x26D, 0x26E, 0x26F };
    for (int k = 0; k < 11; ++k)
        if (kFix[k] == idx) { v = msr.mtrr_fix[k]; return true; }
    return false;
}

bool Core::wrmsr(uint32_t idx, uint64_t v)
{
    uint64_t phys_mask = (1ull << info.phys_addr_bits) - 1;
    switch (idx) {
    case msr::TSC: tsc_offset = int64_t(v - icount); return true;
    case msr::APIC_BASE:
        if (v & ~(phys_mask & ~0xFFFull) & ~0xD00ull) return false;
        msr.apic_base = v;
        return true;
    case msr::SYSENTER_CS: msr.sysenter_cs = v & 0xFFFF; return true;
    case msr::SYSENTER_ESP: msr.sysenter_esp = v; return true;
    case msr::SYSENTER_EIP: msr.sysenter_eip = v; return true;
    case msr::MCG_STATUS: return v == 0;
    case msr::PAT:
        for (int k = 0; k < 8; ++k) {
            unsigned t = (v >> (8 * k)) & 0xFF;
            if (t == 2 || t == 3 || t > 7) return false;
        }
        msr.pat = v;
        return true;
    case msr::MTRR_DEF_TYPE:
        if (v & ~0xCFFull) return false;
        msr.mtrr_def_type = v;
        return true;
    case msr::EFER: set_efer(v); return true;
    case msr::STAR: msr.star = v; return true;
    case msr::LSTAR: if (!canonical(v)) return false; msr.lstar = v; return true;
    case msr::CSTAR: if (!canonical(v)) return false; msr.cstar = v; return true;
    case msr::SFMASK: msr.sfmask = uint32_t(v); return true;
    case msr::FS_BASE: if (!canonical(v)) return false; seg[FS].base = v; update_seg_cache(FS); return true;
    case msr::GS_BASE: if (!canonical(v)) return false; seg[GS].base = v; update_seg_cache(GS); return true;
    case msr::KERNEL_GS_BASE: if (!canonical(v)) return false; msr.kernel_gs_base = v; return true;
    case msr::TSC_AUX: if (v >> 32) return false; msr.tsc_aux = v; return true;
    case msr::SYSCFG: {
        // Writable: MtrrFixDramEn/ModEn, MtrrVarDramEn, Tom2ForceMemTypeWB, MemEncryptionModEn, SNPEn, VMPLEn.
        constexpr uint64_t kW = 0x3FC0000ull;
        if (v & ~kW) return false;
        msr.syscfg = v;
        update_paging();
        return true;
    }
    case msr::HWCR:
        msr.hwcr = v | (msr.hwcr & 1); // SmmLock (bit 0) stays set once set
        return true;
    case msr::VM_CR:
        if (v & ~0x1Full) return false;
        if (msr.vm_cr & (1u << 3)) // LOCK: LOCK and SVMDIS are read-only
            v = (v & ~0x18ull) | (msr.vm_cr & 0x18);
        msr.vm_cr = v;
        return true;
    case msr::VM_HSAVE_PA:
        if ((v & 0xFFF) || (v & ~phys_mask)) return false;
        msr.vm_hsave_pa = v;
        return true;
    default: break;
    }
    if (idx >= 0x200 && idx < 0x210) { msr.mtrr_var[idx - 0x200] = v; return true; }
    static constexpr uint32_t kFix[11] = { 0x250, 0x258, 0x259, 0x268, 0x269, 0x26A, 0x26B, 0x26C, 0x26D, 0x26E, 0x26F };
    for (int k = 0; k < 11; ++k)
        if (kFix[k] == idx) { msr.mtrr_fix[k] = v; return true; }
    return false;
}

// ---------------------------------------------------------------- instruction handlers

namespace {

inline bool protected_mode(Core const& c) { return (c.cr0 & cr0::PE) && !(c.flags & VM); }
inline void need_cpl0(Core& c) { if (c.cpl != 0) c.raise(GP, 0); }
inline void end(Core& c) { c.brk = true; }

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
template <int S, int M> void pushf(Core& c, Insn const&)
{
    if ((c.flags & VM) && ((c.flags >> 12) & 3) < 3) c.raise(GP, 0);
    c.push<S>(c.get_rflags() & ~(VM | RF));
}
template <int S, int M> void popf(Core& c, Insn const&)
{
    if ((c.flags & VM) && ((c.flags >> 12) & 3) < 3) c.raise(GP, 0);
    uint64_t v = c.pop<S>();
    uint64_t m = c.writable_flags_mask() & ~RF;
    if (S == 2) m &= 0xFFFF;
    c.set_rflags(v, m);
    end(c);
}
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
    if (c.intercepted(svm::Intercept::HLT)) c.intercept(svm::Intercept::HLT);
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
template <int S, int M> void iret_op(Core& c, Insn const&) { c.iret(S == 1 ? 2 : S); end(c); }
template <int S, int M> void ud(Core& c, Insn const&) { c.raise(UD); }
template <int S, int M> void nop_sys(Core&, Insn const&) {}
template <int S, int M> void clflush(Core& c, Insn const& i);
template <int S, int M> void fence_or_clflush(Core& c, Insn const& i)
{
    if constexpr (M) clflush<S, M>(c, i); // CLFLUSH m8; the register form is SFENCE
}
template <int S, int M> void fwait(Core& c, Insn const&)
{
    if ((c.cr0 & (cr0::MP | cr0::TS)) == (cr0::MP | cr0::TS)) c.raise(NM);
}

// ---- port I/O (A: 0 imm port, 1 DX port)
// In guest mode: IOIO_PROT and the IOPM (APM vol 2 §15.10), after the protection checks;
// EXITINFO1 describes the access, EXITINFO2 is the next RIP.
inline void io_intercept(Core& c, Insn const& i, uint16_t port, unsigned n, bool in, bool str)
{
    if (SEVEMU_LIKELY(!c.guest) || !c.guest->io_intercepted(c.mc, port, n)) return;
    svm::IoioInfo io { port, n, in, str, bool(i.pfx & (kPfxRep | kPfxRepne)) && str,
        i.asize == 0 ? 16u : i.asize == 1 ? 32u : 64u, uint8_t(str && !in ? unsigned(i.seg) : unsigned(DS)) };
    c.intercept(svm::Intercept::IOIO_PROT, svm::ioio_exit_info_1(io), c.r[kRegNext]);
}
template <int A, int S, int M> void in_op(Core& c, Insn const& i)
{
    uint16_t port = A ? uint16_t(c.r[RDX]) : uint16_t(i.imm);
    constexpr unsigned n = S > 4 ? 4 : S;
    if (!c.io_allowed(port, n)) c.raise(GP, 0);
    io_intercept(c, i, port, n, true, false);
    c.setr<(S > 4 ? 4 : S)>(0, c.io.port_in(port, n));
    end(c);
}
template <int A, int S, int M> void out_op(Core& c, Insn const& i)
{
    uint16_t port = A ? uint16_t(c.r[RDX]) : uint16_t(i.imm);
    constexpr unsigned n = S > 4 ? 4 : S;
    if (!c.io_allowed(port, n)) c.raise(GP, 0);
    io_intercept(c, i, port, n, false, false);
    c.io.port_out(port, n, uint32_t(c.r[RAX]) & (n == 4 ? 0xFFFFFFFFu : (1u << (8 * n)) - 1));
    end(c);
}
template <int A, int S, int M> void ins_outs(Core& c, Insn const& i)
{
    constexpr unsigned n = S > 4 ? 4 : S;
    uint16_t port = uint16_t(c.r[RDX]);
    if (!c.io_allowed(port, n)) c.raise(GP, 0);
    io_intercept(c, i, port, n, A == 0, true);
    uint64_t am = kAsizeMask[i.asize];
    bool rep = i.pfx & (kPfxRep | kPfxRepne);
    int64_t d = (c.flags & DF) ? -int64_t(n) : int64_t(n);
    uint64_t cnt = rep ? (c.r[RCX] & am) : 1;
    if (cnt > 4096) cnt = 4096;
    auto adv = [&](unsigned reg, int64_t delta) {
        uint64_t v = (c.r[reg] + uint64_t(delta)) & am;
        c.r[reg] = i.asize == 1 ? v : (c.r[reg] & ~am) | v;
    };
    for (uint64_t k = 0; k < cnt; ++k) {
        if (A == 0) { // INS: ES:rDI
            uint64_t a = c.seg_lin(ES, c.r[RDI] & am, n, true);
            uint32_t v = c.io.port_in(port, n);
            if (n == 1) c.wr<uint8_t>(a, uint8_t(v)); else if (n == 2) c.wr<uint16_t>(a, uint16_t(v)); else c.wr<uint32_t>(a, v);
            adv(RDI, d);
        } else {
            uint64_t a = c.seg_lin(i.seg, c.r[RSI] & am, n, false);
            uint32_t v = n == 1 ? c.rd<uint8_t>(a) : n == 2 ? c.rd<uint16_t>(a) : c.rd<uint32_t>(a);
            c.io.port_out(port, n, v);
            adv(RSI, d);
        }
        if (rep) adv(RCX, -1);
    }
    if (rep && (c.r[RCX] & am)) c.r[kRegNext] = c.rip;
    end(c);
}

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
template <int S, int M> void smsw(Core& c, Insn const& i)
{
    if constexpr (M) c.wr<uint16_t>(c.lin(i, 2, true), uint16_t(c.cr0)); else c.setr<S>(i.rm, c.cr0);
}
template <int S, int M> void lmsw(Core& c, Insn const& i)
{
    need_cpl0(c);
    uint16_t v = M ? c.rd<uint16_t>(c.lin(i, 2, false)) : c.getr<2>(i.rm);
    uint64_t n = (c.cr0 & ~0xEull) | (v & 0xF) | (c.cr0 & 1); // PE cannot be cleared by LMSW
    c.set_cr0(n);
}
template <int S, int M> void invlpg(Core& c, Insn const& i)
{
    need_cpl0(c);
    uint64_t a = c.mode64 ? c.ea(i) + c.seg_base[i.seg] : uint32_t(c.ea(i) + c.seg_base[i.seg]);
    if (c.intercepted(svm::Intercept::INVLPG)) c.intercept(svm::Intercept::INVLPG, a); // decode assist: the address
    c.tlb.flush_page(a);
    c.flush_jump_cache();
    end(c);
}
template <int S, int M> void swapgs(Core& c, Insn const&)
{
    if (!c.mode64) c.raise(UD);
    need_cpl0(c);
    std::swap(c.seg[GS].base, c.msr.kernel_gs_base);
    c.update_seg_cache(GS);
}
template <int S, int M> void rdtscp(Core& c, Insn const&)
{
    if ((c.cr4 & cr4::TSD) && c.cpl != 0) c.raise(GP, 0);
    if (c.intercepted(svm::Intercept::RDTSCP)) c.intercept(svm::Intercept::RDTSCP);
    uint64_t t = c.read_tsc();
    c.r[RAX] = uint32_t(t);
    c.r[RDX] = t >> 32;
    c.r[RCX] = uint32_t(c.msr.tsc_aux);
}
// XGETBV/XSETBV (APM vol 3; Intel SDM vol 2): XCR0 is the only XCR; it holds x87 (bit 0, always
// set) and SSE (bit 1). AVX and everything above are unsupported, so setting them is #GP(0).
template <int S, int M> void xgetbv(Core& c, Insn const&)
{
    if (!(c.cr4 & cr4::OSXSAVE)) c.raise(UD);
    if (uint32_t(c.r[RCX]) != 0) c.raise(GP, 0);
    c.r[RAX] = uint32_t(c.xcr0);
    c.r[RDX] = uint32_t(c.xcr0 >> 32);
}
template <int S, int M> void xsetbv(Core& c, Insn const&)
{
    if (!(c.cr4 & cr4::OSXSAVE)) c.raise(UD);
    if (c.cpl != 0) c.raise(GP, 0);
    if (c.intercepted(svm::Intercept::XSETBV)) c.intercept(svm::Intercept::XSETBV);
    if (uint32_t(c.r[RCX]) != 0) c.raise(GP, 0);
    uint64_t v = (c.r[RDX] << 32) | uint32_t(c.r[RAX]);
    if (!(v & 1) || (v & ~3ull)) c.raise(GP, 0);
    c.xcr0 = v;
}
template <int SET, int S, int M> void clac_stac(Core& c, Insn const&)
{
    need_cpl0(c); // SMAP is advertised, so CLAC/STAC are never #UD
    if (SET) c.flags |= AC; else c.flags &= ~AC;
}

// ---- control/debug registers, MSRs, CPUID, TSC
template <int TO_CR, int S, int M> void mov_cr(Core& c, Insn const& i)
{
    need_cpl0(c);
    unsigned n = i.reg / 8;
    unsigned g = i.rm / 8;
    // CRn intercepts (§15.9), with the decode assist in EXITINFO1 (bit 63, the GPR).
    if (SEVEMU_UNLIKELY(c.guest.has_value()) && (TO_CR ? c.guest->intercepts_cr_write(n) : c.guest->intercepts_cr_read(n)))
        c.intercept(svm::Intercept((TO_CR ? 16 : 0) + n), svm::mov_cr_exit_info_1(g));
    if (TO_CR) {
        uint64_t v = c.mode64 ? c.r[g] : uint32_t(c.r[g]);
        switch (n) {
        case 0: c.set_cr0(v); break;
        case 2: c.cr2 = v; break;
        case 3: c.set_cr3(v); break;
        case 4: c.set_cr4(v); break;
        case 8: if (v >> 4) c.raise(GP, 0); c.cr8 = v; break;
        default: c.raise(UD);
        }
        end(c);
    } else {
        uint64_t v;
        switch (n) {
        case 0: v = c.cr0; break;
        case 2: v = c.cr2; break;
        case 3: v = c.cr3; break;
        case 4: v = c.cr4; break;
        case 8: v = c.cr8; break;
        default: c.raise(UD);
        }
        c.r[g] = c.mode64 ? v : uint32_t(v);
    }
}
template <int TO_DR, int S, int M> void mov_dr(Core& c, Insn const& i)
{
    need_cpl0(c);
    unsigned n = i.reg / 8;
    unsigned g = i.rm / 8;
    if (SEVEMU_UNLIKELY(c.guest.has_value()) && (TO_DR ? c.guest->intercepts_dr_write(n) : c.guest->intercepts_dr_read(n)))
        c.intercept(svm::Intercept((TO_DR ? 48 : 32) + n), svm::mov_cr_exit_info_1(g));
    if (n >= 8) c.raise(UD);
    if (n == 4 || n == 5) {
        if (c.cr4 & cr4::DE) c.raise(UD);
        n += 2;
    }
    if (TO_DR) {
        uint64_t v = c.mode64 ? c.r[g] : uint32_t(c.r[g]);
        if (n >= 6 && (v >> 32)) c.raise(GP, 0);
        if (n < 4) c.dr[n] = v;
        else if (n == 6) c.dr6 = (v & 0xE00F) | 0xFFFF0FF0;
        else c.dr7 = (v & 0xFFFF2BFF) | 0x400;
    } else {
        c.r[g] = n < 4 ? c.dr[n] : n == 6 ? c.dr6 : c.dr7;
        if (!c.mode64) c.r[g] = uint32_t(c.r[g]);
    }
}
// MSR_PROT and the MSRPM (§15.11): EXITINFO1 = 0 for RDMSR, 1 for WRMSR.
inline void msr_intercept(Core& c, bool write)
{
    if (SEVEMU_UNLIKELY(c.guest.has_value()) && c.guest->msr_intercepted(c.mc, uint32_t(c.r[RCX]), write))
        c.intercept(svm::Intercept::MSR_PROT, svm::msr_exit_info_1(write));
}
template <int S, int M> void rdmsr_op(Core& c, Insn const&)
{
    need_cpl0(c);
    msr_intercept(c, false);
    uint64_t v;
    if (!c.rdmsr(uint32_t(c.r[RCX]), v)) c.raise(GP, 0);
    c.r[RAX] = uint32_t(v);
    c.r[RDX] = v >> 32;
}
template <int S, int M> void wrmsr_op(Core& c, Insn const&)
{
    need_cpl0(c);
    msr_intercept(c, true);
    uint64_t v = (c.r[RDX] << 32) | uint32_t(c.r[RAX]);
    if (!c.wrmsr(uint32_t(c.r[RCX]), v)) c.raise(GP, 0);
    end(c);
}
template <int S, int M> void cpuid_op(Core& c, Insn const&)
{
    if (c.intercepted(svm::Intercept::CPUID)) c.intercept(svm::Intercept::CPUID);
    CpuidResult r = cpuid_query(c.model, uint32_t(c.r[RAX]), uint32_t(c.r[RCX]), c.cr4 & cr4::OSXSAVE, c.msr.apic_base & (1u << 11));
    c.r[RAX] = r.eax;
    c.r[RBX] = r.ebx;
    c.r[RCX] = r.ecx;
    c.r[RDX] = r.edx;
}
template <int S, int M> void rdtsc(Core& c, Insn const&)
{
    if ((c.cr4 & cr4::TSD) && c.cpl != 0) c.raise(GP, 0);
    if (c.intercepted(svm::Intercept::RDTSC)) c.intercept(svm::Intercept::RDTSC);
    uint64_t t = c.read_tsc();
    c.r[RAX] = uint32_t(t);
    c.r[RDX] = t >> 32;
}
template <int S, int M> void rdpmc(Core& c, Insn const&)
{
    if (!(c.cr4 & cr4::PCE) && c.cpl != 0) c.raise(GP, 0);
    if (c.intercepted(svm::Intercept::RDPMC)) c.intercept(svm::Intercept::RDPMC);
    if (uint32_t(c.r[RCX]) > 5) c.raise(GP, 0);
    c.r[RAX] = c.r[RDX] = 0; // counters not modelled: read as 0 (QUIRKS.md)
}
template <int S, int M> void clts(Core& c, Insn const&) { need_cpl0(c); c.cr0 &= ~cr0::TS; }
template <int INVD, int S, int M> void wbinvd(Core& c, Insn const&)
{
    need_cpl0(c);
    if (c.intercepted(INVD ? svm::Intercept::INVD : svm::Intercept::WBINVD))
        c.intercept(INVD ? svm::Intercept::INVD : svm::Intercept::WBINVD);
    // INVD would drop dirty lines; the memory controller writes them back instead (QUIRKS.md).
    c.mc.wbinvd();
    end(c);
}
template <int S, int M> void clflush(Core& c, Insn const& i)
{
    uint64_t a = c.lin(i, 1, false);
    auto x = c.translate(a, false, false);
    if (c.mc.is_dram(Spa(x.spa))) c.mc.clflush(Spa(x.spa));
    end(c);
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

void register_svm_ops(OpTables& t); // exec_svm.cpp

void register_sys_ops(OpTables& t)
{
    register_svm_ops(t);
    auto& p = t.map[kMapPrimary];
    auto& x = t.map[kMap0F];
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
    set_op(p[0x9A], "call far", kInv64 | kEnd, Imm::Far, SEVEMU_H(call_far_ptr));
    set_op(p[0xEA], "jmp far", kInv64 | kEnd, Imm::Far, SEVEMU_H(jmp_far_ptr));
    set_op(p[0x9B], "fwait", 0, Imm::None, SEVEMU_H(fwait));
    set_op(p[0x9C], "pushf", kDef64, Imm::None, SEVEMU_H(pushf));
    set_op(p[0x9D], "popf", kDef64, Imm::None, SEVEMU_H(popf));
    set_op(p[0xC4], "les", kModrm | kMemOnly | kInv64, Imm::None, SEVEMU_HA(load_far_ptr, ES));
    set_op(p[0xC5], "lds", kModrm | kMemOnly | kInv64, Imm::None, SEVEMU_HA(load_far_ptr, DS));
    set_op(x[0xB2], "lss", kModrm | kMemOnly, Imm::None, SEVEMU_HA(load_far_ptr, SS));
    set_op(x[0xB4], "lfs", kModrm | kMemOnly, Imm::None, SEVEMU_HA(load_far_ptr, FS));
    set_op(x[0xB5], "lgs", kModrm | kMemOnly, Imm::None, SEVEMU_HA(load_far_ptr, GS));
    set_op(p[0xCA], "retf", kEnd, Imm::W, SEVEMU_H(retf));
    set_op(p[0xCB], "retf", kEnd, Imm::None, SEVEMU_H(retf));
    set_op(p[0xCC], "int3", kEnd, Imm::None, SEVEMU_H(int3));
    set_op(p[0xCD], "int", kEnd, Imm::B, SEVEMU_H(int_n));
    set_op(p[0xCE], "into", kInv64, Imm::None, SEVEMU_H(into));
    set_op(p[0xCF], "iret", kEnd, Imm::None, SEVEMU_H(iret_op));
    set_op(p[0xF1], "int1", kEnd, Imm::None, SEVEMU_H(int1));
    set_op(p[0xF4], "hlt", kEnd, Imm::None, SEVEMU_H(hlt));
    set_op(p[0xFA], "cli", 0, Imm::None, SEVEMU_H(cli));
    set_op(p[0xFB], "sti", 0, Imm::None, SEVEMU_H(sti));
    set_op(p[0xE4], "in", kByte, Imm::B, SEVEMU_HA(in_op, 0));
    set_op(p[0xE5], "in", 0, Imm::B, SEVEMU_HA(in_op, 0));
    set_op(p[0xE6], "out", kByte, Imm::B, SEVEMU_HA(out_op, 0));
    set_op(p[0xE7], "out", 0, Imm::B, SEVEMU_HA(out_op, 0));
    set_op(p[0xEC], "in", kByte, Imm::None, SEVEMU_HA(in_op, 1));
    set_op(p[0xED], "in", 0, Imm::None, SEVEMU_HA(in_op, 1));
    set_op(p[0xEE], "out", kByte, Imm::None, SEVEMU_HA(out_op, 1));
    set_op(p[0xEF], "out", 0, Imm::None, SEVEMU_HA(out_op, 1));
    set_op(p[0x6C], "ins", kByte, Imm::None, SEVEMU_HA(ins_outs, 0));
    set_op(p[0x6D], "ins", 0, Imm::None, SEVEMU_HA(ins_outs, 0));
    set_op(p[0x6E], "outs", kByte, Imm::None, SEVEMU_HA(ins_outs, 1));
    set_op(p[0x6F], "outs", 0, Imm::None, SEVEMU_HA(ins_outs, 1));
    set_op(t.grp[9][3], "call far", kMemOnly | kEnd, Imm::None, SEVEMU_HA(far_mem, 1));
    set_op(t.grp[9][5], "jmp far", kMemOnly | kEnd, Imm::None, SEVEMU_HA(far_mem, 0));

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
    set_op(t.grp[14][4], "smsw", 0, Imm::None, SEVEMU_H(smsw));
    set_op(t.grp[14][6], "lmsw", kEnd, Imm::None, SEVEMU_H(lmsw));
    set_op(t.grp[14][7], "invlpg", kMemOnly, Imm::None, SEVEMU_H(invlpg));
    auto& r01 = t.map[kMap0F01Reg];
    for (int m = 0; m < 256; ++m) {
        unsigned reg = (m >> 3) & 7;
        if ((m >> 6) != 3) continue;
        if (reg == 4) set_op(r01[m], "smsw", 0, Imm::None, SEVEMU_H(smsw));
        if (reg == 6) set_op(r01[m], "lmsw", kEnd, Imm::None, SEVEMU_H(lmsw));
    }
    set_op(r01[0xF8], "swapgs", 0, Imm::None, SEVEMU_H(swapgs));
    set_op(r01[0xF9], "rdtscp", 0, Imm::None, SEVEMU_H(rdtscp));
    set_op(r01[0xCA], "clac", 0, Imm::None, SEVEMU_HA(clac_stac, 0));
    set_op(r01[0xCB], "stac", 0, Imm::None, SEVEMU_HA(clac_stac, 1));
    set_op(r01[0xD0], "xgetbv", 0, Imm::None, SEVEMU_H(xgetbv));
    set_op(r01[0xD1], "xsetbv", 0, Imm::None, SEVEMU_H(xsetbv));

    set_op(x[0x05], "syscall", kEnd, Imm::None, SEVEMU_H(syscall));
    set_op(x[0x07], "sysret", kEnd, Imm::None, SEVEMU_H(sysret));
    set_op(x[0x34], "sysenter", kEnd, Imm::None, SEVEMU_H(sysenter));
    set_op(x[0x35], "sysexit", kEnd, Imm::None, SEVEMU_H(sysexit));
    set_op(x[0x06], "clts", 0, Imm::None, SEVEMU_H(clts));
    set_op(x[0x08], "invd", 0, Imm::None, SEVEMU_HA(wbinvd, 1));
    set_op(x[0x09], "wbinvd", 0, Imm::None, SEVEMU_HA(wbinvd, 0));
    set_op(x[0x0B], "ud2", kEnd, Imm::None, SEVEMU_H(ud));
    set_op(x[0xB9], "ud1", kModrm | kEnd, Imm::None, SEVEMU_H(ud));
    set_op(x[0x20], "mov cr", kModrm | kForce64, Imm::None, SEVEMU_HA(mov_cr, 0));
    set_op(x[0x22], "mov cr", kModrm | kForce64 | kEnd, Imm::None, SEVEMU_HA(mov_cr, 1));
    set_op(x[0x21], "mov dr", kModrm | kForce64, Imm::None, SEVEMU_HA(mov_dr, 0));
    set_op(x[0x23], "mov dr", kModrm | kForce64, Imm::None, SEVEMU_HA(mov_dr, 1));
    set_op(x[0x30], "wrmsr", kEnd, Imm::None, SEVEMU_H(wrmsr_op));
    set_op(x[0x31], "rdtsc", 0, Imm::None, SEVEMU_H(rdtsc));
    set_op(x[0x32], "rdmsr", 0, Imm::None, SEVEMU_H(rdmsr_op));
    set_op(x[0x33], "rdpmc", 0, Imm::None, SEVEMU_H(rdpmc));
    set_op(x[0xA2], "cpuid", 0, Imm::None, SEVEMU_H(cpuid_op));
    // 0F AE group 15: SFENCE and CLFLUSH; F3 0F AE: RDFSBASE/RDGSBASE/WRFSBASE/WRGSBASE
    x[0xAE] = { "grp15", 0, Imm::None, 15 };
    // /5 and /6 (LFENCE/XRSTOR, MFENCE/XSAVEOPT) are registered by exec_sse.cpp with XSAVE.
    set_op(t.grp[15][7], "sfence/clflush", 0, Imm::None, SEVEMU_H(fence_or_clflush));
    t.map[kMapF30F][0xAE] = { "grp15f3", kRegOnly, Imm::None, 16 };
    set_op(t.grp[16][0], "rdfsbase", 0, Imm::None, SEVEMU_HA(fsgsbase, 0));
    set_op(t.grp[16][1], "rdgsbase", 0, Imm::None, SEVEMU_HA(fsgsbase, 1));
    set_op(t.grp[16][2], "wrfsbase", 0, Imm::None, SEVEMU_HA(fsgsbase, 2));
    set_op(t.grp[16][3], "wrgsbase", 0, Imm::None, SEVEMU_HA(fsgsbase, 3));
}

} // namespace sevemu::cpu
