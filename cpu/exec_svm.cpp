// sevemu — SVM in the interpreter (APM vol 2 §15): the instructions VMRUN, VMLOAD, VMSAVE,
// VMMCALL, STGI, CLGI, SKINIT, INVLPGA; #VMEXIT when an intercept fires; guest memory through
// nested paging with the SEV key of each access; and Cpu::host_vmrun() for the built-in
// hypervisor. The architecture itself (checks, save/restore, the key table, the nested walk) is
// the cpu/svm library; this file moves the interpreter's registers in and out of it, following
// the wiring list at the top of cpu/svm/svm.h.
#include "cpu/ops.h"

namespace sevemu::cpu {

using namespace rflags;
using svm::Intercept;
namespace ec = svm::exitcode;

// ---------------------------------------------------------------- register file <-> CpuState

CpuState Core::get_state()
{
    CpuState s;
    for (int k = 0; k < 16; ++k) s.gpr[k] = r[k];
    s.rip = rip;
    s.rflags = get_rflags();
    for (int k = 0; k < 6; ++k) s.seg[k] = seg[k];
    s.ldtr = ldtr;
    s.tr = tr;
    s.gdtr = gdtr;
    s.idtr = idtr;
    s.cr0 = cr0; s.cr2 = cr2; s.cr3 = cr3; s.cr4 = cr4; s.cr8 = cr8;
    s.efer = efer;
    for (int k = 0; k < 4; ++k) s.dr[k] = dr[k];
    s.dr6 = dr6;
    s.dr7 = dr7;
    s.xcr0 = xcr0;
    for (int k = 0; k < 16; ++k) s.xmm[k] = { xmm[k][0], xmm[k][1] };
    s.mxcsr = mxcsr;
    s.tsc = read_tsc();
    s.msr = msr;
    for (int k = 0; k < 8; ++k) std::memcpy(s.x87.fpr[k].data(), &fpr[k], 10); // x86-64: long double is the 80-bit format
    s.x87.fcw = fcw;
    s.x87.fsw = fsw;
    s.x87.ftw = uint8_t(~ftag_empty);
    return s;
}

void Core::put_state(CpuState const& s)
{
    if (!keep_tlb) { // a state from outside: no context's entries can be trusted
        parked_tlbs.clear();
        tlb->adopt_context(0);
    }
    for (int k = 0; k < 16; ++k) r[k] = s.gpr[k];
    rip = s.rip;
    flags = (s.rflags & 0x3F7FD7) | 2;
    lf_kind = LF_NONE;
    for (int k = 0; k < 6; ++k) seg[k] = s.seg[k];
    ldtr = s.ldtr;
    tr = s.tr;
    gdtr = s.gdtr;
    idtr = s.idtr;
    cr0 = s.cr0; cr2 = s.cr2; cr3 = s.cr3; cr4 = s.cr4; cr8 = s.cr8;
    efer = s.efer;
    for (int k = 0; k < 4; ++k) dr[k] = s.dr[k];
    dr6 = s.dr6;
    dr7 = s.dr7;
    xcr0 = s.xcr0;
    for (int k = 0; k < 16; ++k) { xmm[k][0] = s.xmm[k][0]; xmm[k][1] = s.xmm[k][1]; }
    mxcsr = s.mxcsr;
    tsc_offset = int64_t(s.tsc - icount);
    msr = s.msr;
    for (int k = 0; k < 8; ++k) {
        fpr[k] = 0; // the padding beyond the 10 bytes stays zero
        std::memcpy(&fpr[k], s.x87.fpr[k].data(), 10);
    }
    fcw = s.x87.fcw;
    fsw = s.x87.fsw;
    ftag_empty = uint8_t(~s.x87.ftw);
    halted = false;
    pending_shutdown = false;
    update_mode();
    update_paging();
}

// ---------------------------------------------------------------- the whole state (Cpu::state/set_state)

namespace {

SvmGuestState guest_state_of(svm::GuestMode const& g)
{
    SvmGuestState o;
    o.vmcb = g.vmcb.value;
    o.vmcb_key = g.vmcb_key.slot_number();
    o.hsave = g.hsave.value;
    o.hsave_key = g.hsave_key.slot_number();
    static_assert(sizeof(g.control) == sizeof(o.control));
    std::memcpy(o.control.data(), &g.control, sizeof g.control);
    o.asid = g.asid;
    o.np = g.np;
    o.sev = g.sev;
    o.sev_es = g.sev_es;
    o.vte = g.vte;
    o.vmsa = g.vmsa.value;
    o.n_cr3 = g.npt.n_cr3;
    o.npt_nxe = g.npt.nxe;
    o.npt_sme = g.npt.sme;
    o.npt_c_bit = g.npt.c_bit;
    o.npt_phys_bits = g.npt.phys_bits;
    o.tlb_flush = uint8_t(g.tlb_flush);
    if (g.inject) {
        o.event_inj = svm::encode_event(*g.inject);
        o.event_inj_err = g.inject->error_code.value_or(0);
    }
    o.host_pat = g.host_pat;
    o.host_if = g.host_if;
    return o;
}

mmu::KeyId key_of(uint32_t slot) { return slot == SvmGuestState::kNoKey ? mmu::KeyId::none() : mmu::KeyId::slot(slot); }

svm::GuestMode guest_mode_of(SvmGuestState const& o)
{
    svm::GuestMode g;
    g.vmcb = Spa(o.vmcb);
    g.vmcb_key = key_of(o.vmcb_key);
    g.hsave = Spa(o.hsave);
    g.hsave_key = key_of(o.hsave_key);
    std::memcpy(&g.control, o.control.data(), sizeof g.control);
    g.asid = o.asid;
    g.np = o.np;
    g.sev = o.sev;
    g.sev_es = o.sev_es;
    g.vte = o.vte;
    g.vmsa = Spa(o.vmsa);
    g.npt = svm::NptContext { o.n_cr3, o.npt_nxe, o.npt_sme, o.npt_c_bit, o.npt_phys_bits };
    g.tlb_flush = svm::TlbFlush(o.tlb_flush);
    // load_cpu_state() validated the encoding; a state built in code that got it wrong carries
    // no injection rather than a garbage one.
    auto inj = svm::decode_event_injection(o.event_inj, o.event_inj_err);
    g.inject = inj ? *inj : std::nullopt;
    g.host_pat = o.host_pat;
    g.host_if = o.host_if;
    return g;
}

} // namespace

CpuState Core::get_full_state()
{
    CpuState s = get_state();
    s.halted = halted;
    s.interrupt_shadow = irq_shadow;
    s.gif = gif;
    s.pending_shutdown = pending_shutdown;
    s.nmi_pending = nmi_pending;
    s.nmi_blocked = nmi_blocked;
    s.instructions = icount;
    if (guest)
        s.svm_guest = guest_state_of(*guest);
    return s;
}

void Core::put_full_state(CpuState const& s)
{
    // The counters first: put_state() derives the TSC offset from them.
    icount = s.instructions;
    stats.instructions = s.instructions;
    // Guest mode before the registers, so that update_paging() installs the guest's nested
    // page-table resolver and paging context.
    if (s.svm_guest)
        guest = guest_mode_of(*s.svm_guest);
    else
        guest.reset();
    delivering.reset();
    deferred = Deferred::None;
    put_state(s); // drops every ASID's TLB entries (keep_tlb is false here)
    // The TLB now belongs to the running context: the guest's ASID in guest mode (§15.16).
    tlb->adopt_context(guest ? guest->asid : 0);
    halted = s.halted;
    irq_shadow = s.interrupt_shadow;
    gif = s.gif;
    pending_shutdown = s.pending_shutdown;
    nmi_pending = s.nmi_pending;
    nmi_blocked = s.nmi_blocked;
    flush_jump_cache();
    brk = true;
}

svm::SvmCpuView Core::svm_view()
{
    svm::SvmCpuView v;
    v.regs = get_state();
    v.cpl = cpl;
    v.gif = gif;
    v.interrupt_shadow = irq_shadow;
    v.ghcb_msr = ghcb_msr;
    return v;
}

void Core::switch_tlb(uint32_t asid)
{
    uint32_t cur = tlb->asid();
    if (cur == asid)
        return;
    // Park the running context's TLB and take the target's, by pointer (a TLB is large). The
    // target's map node is re-keyed to the parked context (extract/insert: no allocation at
    // every world switch).
    if (auto it = parked_tlbs.find(asid); it != parked_tlbs.end()) {
        auto node = parked_tlbs.extract(it);
        std::swap(node.mapped(), tlb);
        node.key() = cur;
        parked_tlbs.erase(cur); // a stale parked copy of cur, if any
        parked_tlbs.insert(std::move(node));
        tlb->adopt_context(asid);
        return;
    }
    std::unique_ptr<CoreTlb> next;
    auto& park = parked_tlbs[cur];
    std::unique_ptr<CoreTlb> spare = std::move(park); // a stale parked copy of cur, if any
    park = std::move(tlb);
    next = spare ? std::move(spare) : std::make_unique<CoreTlb>();
    next->flush_all();
    tlb = std::move(next);
    tlb->adopt_context(asid);
}

void Core::svm_apply(svm::SvmCpuView const& v)
{
    keep_tlb = true; // VMRUN and #VMEXIT switch the TLB's ASID, they do not flush it (§15.16)
    put_state(v.regs); // also recomputes the paging context (guest or host)
    keep_tlb = false;
    cpl = v.cpl;       // the VMCB's CPL (§15.5.1), not re-derived from SS
    bank = cpl == 3 ? 1 : 0;
    gif = v.gif;
    irq_shadow = v.interrupt_shadow;
    ghcb_msr = v.ghcb_msr;
    flush_jump_cache();
    r[kRegNext] = rip;
    brk = true;
}

// ---------------------------------------------------------------- guest memory

namespace {

// Guest page-table entries under nested paging: their addresses are GPAs (APM vol 2 §15.25.4);
// an SEV guest's page tables are always private (§15.34.5, Table 15-30 row 5).
class GuestTables final : public mmu::TableResolver {
public:
    explicit GuestTables(Core& c) : m_c(c) {}
    Result<mmu::TableRef, mmu::PageFault> table(uint64_t gpa, bool c_bit, bool write) override
    {
        auto const& g = *m_c.guest;
        auto t = svm::npt_walk(m_c.mc, g.npt, Gpa(gpa), { write, false, true, g.sev });
        if (!t)
            return make_unexpected(mmu::PageFault { 0, true, t.error().exit_info_1, t.error().exit_info_2 });
        svm::KeySelect ks { bool(m_c.msr.syscfg & syscfg::MemEncryptionModEn), true, g.sev, g.sev_es, true,
            svm::AccessType::GuestPageTableWalk, c_bit, t->c_bit, g.vte, g.asid };
        return mmu::TableRef { t->spa, svm::select_key(ks) };
    }

private:
    Core& m_c;
};

} // namespace

std::unique_ptr<mmu::TableResolver> make_guest_tables(Core& c) { return std::make_unique<GuestTables>(c); }

Core::GuestPage Core::guest_page(uint64_t gpa, bool guest_c, bool write, bool fetch)
{
    auto const& g = *guest;
    // The guest's C-bit exists in long mode and PAE paging only; with paging off or legacy
    // paging every SEV data access is private (Table 15-30).
    bool honoured = pctx.mode == mmu::PagingMode::Long4 || pctx.mode == mmu::PagingMode::Pae;
    bool priv = g.sev && (fetch || !honoured || guest_c || g.vte);
    auto t = svm::npt_walk(mc, g.npt, Gpa(gpa), { write, fetch, false, priv });
    if (!t)
        vmexit_now(ec::SVM_EXIT_NPF, t.error().exit_info_1, t.error().exit_info_2, 0);
    svm::KeySelect ks { bool(msr.syscfg & syscfg::MemEncryptionModEn), true, g.sev, g.sev_es, honoured,
        fetch ? svm::AccessType::InstructionFetch : svm::AccessType::Data, guest_c, t->c_bit, g.vte, g.asid };
    return { t->spa.value & ~0xFFFull, svm::select_key(ks) };
}

// ---------------------------------------------------------------- VMRUN and #VMEXIT

void Core::vmexit_now(uint64_t code, uint64_t info1, uint64_t info2, uint64_t nrip)
{
    // SEV-ES: an exit that is not automatic becomes #VC in the guest, with the exit code as
    // error code (§15.35.5); the guest's #VC handler talks to the hypervisor through the GHCB.
    if (guest->sev_es && !svm::is_automatic_exit(code, info1))
        raise(svm::kVcVector, uint32_t(code));
    // The automatic exits that complete their instruction leave RIP past it in the VMSA, since
    // the hypervisor cannot advance it (APM vol 2 §15.35.5 Table "automatic exits": PAUSE, HLT,
    // IDLE_HLT, VMGEXIT "RIP advanced").
    if (guest->sev_es && nrip &&
        (code == ec::SVM_EXIT_PAUSE || code == ec::SVM_EXIT_HLT || code == ec::SVM_EXIT_IDLE_HLT ||
            code == ec::SVM_EXIT_VMGEXIT))
        rip = nrip;
    throw SvmExit { svm::ExitInfo { code, info1, info2, delivering, nrip } };
}

void Core::intercept(Intercept i, uint64_t info1, uint64_t info2)
{
    vmexit_now(svm::exit_code_for(i), info1, info2, r[kRegNext]);
}

// vmexit_now() step for step, with the throw replaced by a note run() acts on when the handler
// has returned (cpu.cpp): chain<> then sets RIP from r[kRegNext], which is left at RIP here.
void Core::vmexit_return(uint64_t code, uint64_t info1, uint64_t info2, uint64_t nrip)
{
    if (guest->sev_es && !svm::is_automatic_exit(code, info1)) {
        deferred = Deferred::Fault;
        deferred_fault = GuestFault { svm::kVcVector, true, uint32_t(code) };
    } else {
        if (guest->sev_es && nrip &&
            (code == ec::SVM_EXIT_PAUSE || code == ec::SVM_EXIT_HLT || code == ec::SVM_EXIT_IDLE_HLT ||
                code == ec::SVM_EXIT_VMGEXIT))
            rip = nrip;
        deferred = Deferred::Exit;
        deferred_exit = svm::ExitInfo { code, info1, info2, delivering, nrip };
    }
    r[kRegNext] = rip;
    brk = true;
}

void Core::intercept_return(Intercept i, uint64_t info1, uint64_t info2)
{
    vmexit_return(svm::exit_code_for(i), info1, info2, r[kRegNext]);
}

void Core::do_vmexit(svm::ExitInfo info)
{
    if (info.exit_code == ec::SVM_EXIT_NPF && !(info.exit_info_1 & svm::npf::ID)) {
        // Decode assist: the guest's instruction at RIP, fetched as the guest would (private
        // for SEV). The VMM emulates an MMIO access from it without reading guest memory.
        uint64_t lin = mode64 ? rip : uint32_t(seg[CS].base + rip);
        unsigned n = 0;
        for (; n < 15; ++n) {
            try {
                read_slow(mode64 ? lin + n : uint32_t(lin + n), &info.insn_bytes[n], 1, true);
            } catch (GuestFault const&) {
                break;
            } catch (SvmExit const&) {
                break;
            }
        }
        info.insn_len = uint8_t(n);
    }
    auto v = svm_view();
    svm::GuestMode g = std::move(*guest);
    guest.reset();
    delivering.reset();
    if (!svm::vmexit(mc, v, g, info)) {
        // The VMCB or host save area stopped being DRAM: nothing to return to.
        pending_shutdown = true;
        host_vmsave_failed = true; // nor a VMCB to VMSAVE into
        return;
    }
    host_vmsave(v);
    svm_apply(v);
    switch_tlb(svm::tlb_actions_on_vmexit().context_asid);
    if (host_vmrun)
        vmexit_done = true;
}

void Core::host_vmsave(svm::SvmCpuView& v)
{
    // The VMSAVE of host_vmrun()'s `vmload; vmrun; vmsave`, on the host registers #VMEXIT just
    // reloaded (no host instruction runs between the two), before they go back into the core.
    if (!host_vmrun)
        return;
    v.regs.gpr[RAX] = host_vmrun_vmcb.value;
    host_vmsave_failed = !svm::vmsave(mc, v, host_context_of(v.regs.msr.syscfg, v.regs.msr.hwcr, true));
}

void Core::deliver_injected(svm::Event const& e)
{
    // EVENTINJ (§15.20): delivered through the guest IDT before its first instruction; a
    // software interrupt returns to NRIP (the instruction after INTn), anything else to RIP.
    delivering = e;
    bool soft = e.type == svm::EventType::SOFT_INT;
    uint64_t ret = soft && guest->control.next_rip ? guest->control.next_rip : rip;
    halted = false;
    try {
        deliver_event(e.vector, e.error_code.has_value(), e.error_code.value_or(0), soft, ret);
    } catch (GuestFault const& f) {
        delivering.reset();
        exception(f);
    }
    delivering.reset();
}

void Core::do_vmrun(uint64_t next_rip)
{
    auto v = svm_view();
    do_vmrun(next_rip, v);
}

void Core::do_vmrun(uint64_t next_rip, svm::SvmCpuView& v)
{
    guest.emplace();
    auto g = svm::vmrun(mc, v, host_context_of(v.regs.msr.syscfg, v.regs.msr.hwcr,
        (v.regs.efer & efer::LMA) && v.regs.seg[CS].long_mode()), next_rip, *guest);
    if (!g) {
        guest.reset();
        if (auto f = g.error().fault) {
            if (host_vmrun)
                svm_apply(v); // host_vmrun(): the host's registers were only in `v` so far
            if (f->vector == svm::kUD) raise(UD);
            raise(f->vector, f->error_code);
        }
        // A consistency check failed: #VMEXIT(VMEXIT_INVALID) was taken, the host is back.
        host_vmsave(v);
        svm_apply(v);
        if (host_vmrun)
            vmexit_done = true;
        return;
    }
    svm_apply(v); // with `guest` set: the guest's paging context, nested
    // TLB_CONTROL (§15.16.1): the guest's ASID's entries, flushed as the VMCB asks.
    switch_tlb(guest->asid);
    switch (guest->tlb_flush) {
    case svm::TlbFlush::AllAsids: for_each_tlb([](auto& t) { t.flush_all(); }); break;
    case svm::TlbFlush::ThisAsid: tlb->flush_all(); break;
    case svm::TlbFlush::ThisAsidNonGlobal: tlb->flush_non_global(); break;
    case svm::TlbFlush::None: break;
    }
    if (guest->inject)
        deliver_injected(*guest->inject);
}

// An external (or virtual) interrupt through the guest's IDT, recorded for EXITINTINFO while it
// is being delivered.
void Core::deliver_guest_interrupt(uint8_t vec)
{
    halted = false;
    delivering = svm::Event { vec, svm::EventType::INTR, std::nullopt };
    try {
        deliver_event(vec, false, 0, false, rip);
    } catch (GuestFault const& f) {
        delivering.reset();
        exception(f);
    }
    delivering.reset();
}

bool Core::check_guest_interrupts()
{
    auto& g = *guest;
    // A physical NMI (§15.12: intercepted, it is a #VMEXIT and stays pending until the host
    // sets GIF again; otherwise the guest takes it through its IDT). An SEV guest's NMIs come
    // by EVENTINJ from the VMM, never by this pin (host_vmrun).
    if (SEVEMU_UNLIKELY(nmi_pending) && !host_vmrun && gif && !nmi_blocked) {
        if (g.intercepts(Intercept::NMI)) {
            do_vmexit({ ec::SVM_EXIT_NMI, 0, 0, std::nullopt, 0 });
            return true;
        }
        if (!irq_shadow) {
            nmi_pending = false;
            nmi_blocked = true;
            halted = false;
            delivering = svm::Event { NMI, svm::EventType::NMI, std::nullopt };
            try {
                deliver_event(NMI, false, 0, false, rip);
            } catch (GuestFault const& f) {
                delivering.reset();
                exception(f);
            }
            delivering.reset();
            return true;
        }
    }
    // A physical INTR (§15.21.1). The built-in hypervisor (host_vmrun) owns no interrupt
    // controller of its own: the devices behind `io` are its guest's, injected by the VMM.
    if (!host_vmrun && gif && intr_poll && poll_intr()) {
        bool enabled = g.v_intr_masking() ? g.host_if : bool(flags & IF);
        if (enabled && g.intercepts(Intercept::INTR)) {
            do_vmexit({ ec::SVM_EXIT_INTR, 0, 0, std::nullopt, 0 });
            return true;
        }
        if (enabled && (flags & IF) && !irq_shadow) {
            deliver_guest_interrupt(dev().acknowledge_interrupt());
            return true;
        }
    }
    // A virtual interrupt (§15.21.4): V_IRQ, taken like an INTR when the guest can take it.
    uint32_t ic = g.control.int_ctl;
    if ((ic & svm::int_ctl::V_IRQ) && gif && (flags & IF) && !irq_shadow) {
        unsigned prio = (ic & svm::int_ctl::V_INTR_PRIO_MASK) >> 16, tpr = ic & svm::int_ctl::V_TPR_MASK;
        if (!(ic & svm::int_ctl::V_IGN_TPR) && prio <= tpr)
            return false;
        if (g.intercepts(Intercept::VINTR)) {
            do_vmexit({ ec::SVM_EXIT_VINTR, 0, 0, std::nullopt, 0 });
            return true;
        }
        g.control.int_ctl &= ~svm::int_ctl::V_IRQ;
        deliver_guest_interrupt(uint8_t(g.control.int_vector));
        return true;
    }
    return false;
}

// ---------------------------------------------------------------- the instructions

namespace {

inline void end(Core& c) { c.brk = true; }

// #UD unless EFER.SVME=1 in protected mode, #GP(0) above CPL 0 (APM vol 3, VMRUN et al.); the
// intercept check comes after these (APM vol 2 §15.7.1: simple exceptions first).
void svm_checks(Core& c)
{
    if (!(c.efer & efer::SVME) || !(c.cr0 & cr0::PE) || (c.flags & VM)) c.raise(UD);
    if (c.cpl != 0) c.raise(GP, 0);
}

template <int S, int M> void vmrun_op(Core& c, Insn const&)
{
    svm_checks(c);
    if (c.guest) c.intercept(Intercept::VMRUN); // nested SVM is not offered: always intercepted
    c.do_vmrun(c.r[kRegNext]);
    end(c);
}
template <int S, int M> void vmmcall_op(Core& c, Insn const& i)
{
    // VMGEXIT is VMMCALL with a REP prefix (F3 0F 01 D9; APM vol 3 VMGEXIT): in an SEV-ES guest an
    // automatic #VMEXIT 0x403 whatever the intercepts, RIP past it (APM vol 2 §15.35.5); anywhere
    // else it behaves as VMMCALL.
    if ((i.pfx & kPfxRep) && c.guest && c.guest->sev_es) return c.vmexit_return(ec::SVM_EXIT_VMGEXIT, 0, 0, c.r[kRegNext]);
    if (c.intercepted(Intercept::VMMCALL)) return c.intercept_return(Intercept::VMMCALL);
    c.raise(UD); // not intercepted, or in the host (APM vol 3 VMMCALL)
}
template <int LOAD, int S, int M> void vmload_vmsave(Core& c, Insn const&)
{
    svm_checks(c);
    if (c.guest) c.intercept(LOAD ? Intercept::VMLOAD : Intercept::VMSAVE); // nested SVM not offered
    auto v = c.svm_view();
    if (LOAD) {
        if (auto r = svm::vmload(c.mc, v, c.host_context()); !r) c.raise(GP, r.error().error_code);
        c.svm_apply(v);
    } else {
        if (auto r = svm::vmsave(c.mc, v, c.host_context()); !r) c.raise(GP, r.error().error_code);
    }
    end(c);
}
template <int SET, int S, int M> void stgi_clgi(Core& c, Insn const&)
{
    svm_checks(c);
    if (c.guest) c.intercept(SET ? Intercept::STGI : Intercept::CLGI);
    c.gif = SET;
    end(c); // pending interrupts may be taken now
}
template <int S, int M> void skinit_op(Core& c, Insn const&)
{
    svm_checks(c);
    if (c.guest) c.intercept(Intercept::SKINIT);
    c.raise(UD); // secure init (DRTM) is not modelled (QUIRKS.md); CPUID 8000_0001 ECX[12] is clear
}
template <int S, int M> void invlpga_op(Core& c, Insn const& i)
{
    svm_checks(c);
    if (c.guest) c.intercept(Intercept::INVLPGA);
    uint64_t a = c.r[RAX] & kAsizeMask[i.asize];
    uint32_t asid = uint32_t(c.r[RCX]);
    if (svm::invlpga_hits(c.tlb->asid(), asid)) {
        c.tlb->flush_page(a);
        c.flush_jump_cache();
    } else if (auto it = c.parked_tlbs.find(asid); it != c.parked_tlbs.end()) {
        it->second->flush_page(a); // the page in a parked ASID's entries
    }
    end(c);
}

} // namespace

void register_svm_ops(OpTables& t)
{
    auto& r01 = t.map[kMap0F01Reg];
    set_op(r01[0xD8], "vmrun", kEnd, Imm::None, SEVEMU_H(vmrun_op));
    set_op(r01[0xD9], "vmmcall", kEnd, Imm::None, SEVEMU_H(vmmcall_op));
    set_op(r01[0xDA], "vmload", kEnd, Imm::None, SEVEMU_HA(vmload_vmsave, 1));
    set_op(r01[0xDB], "vmsave", 0, Imm::None, SEVEMU_HA(vmload_vmsave, 0));
    set_op(r01[0xDC], "stgi", kEnd, Imm::None, SEVEMU_HA(stgi_clgi, 1));
    set_op(r01[0xDD], "clgi", 0, Imm::None, SEVEMU_HA(stgi_clgi, 0));
    set_op(r01[0xDE], "skinit", kEnd, Imm::None, SEVEMU_H(skinit_op));
    set_op(r01[0xDF], "invlpga", 0, Imm::None, SEVEMU_H(invlpga_op));
}

// ---------------------------------------------------------------- the built-in hypervisor's VMRUN

bool Cpu::in_guest_mode() const { return m_core->guest.has_value(); }

Result<Cpu::HostVmrunResult, std::string> Cpu::host_vmrun(Spa vmcb, Spa hsave, std::array<uint64_t, 16>& gprs,
    uint64_t max_instructions)
{
    Core& c = *m_core;
    if (c.guest)
        return make_unexpected(std::string("host_vmrun: the CPU is already in guest mode"));
    // The host context of a 64-bit hypervisor at CPL 0, as the platform firmware and Linux leave
    // an SEV host: long mode, EFER.SVME, SYSCFG.MemEncryptionModEn and HWCR.SmmLock set. The
    // built-in hypervisor executes no guest-visible code, so its CR3 is never walked.
    CpuState h = c.get_state();
    h.cr0 = cr0::PE | cr0::MP | cr0::ET | cr0::NE | cr0::WP | cr0::PG;
    h.cr4 = cr4::PAE | cr4::PGE | cr4::OSFXSR | cr4::OSXMMEXCPT;
    h.efer = efer::SCE | efer::LME | efer::LMA | efer::NXE | efer::SVME;
    h.seg[CS] = Segment { 0x10, 0xA9B, 0xFFFFFFFF, 0 };
    for (unsigned s : { ES, SS, DS, FS, GS })
        h.seg[s] = Segment { 0x18, 0xC93, 0xFFFFFFFF, 0 };
    h.rflags = 2;
    h.rip = 0xFFFFFFFF81000000ull; // a kernel-text address; only saved and restored, never fetched
    h.msr.syscfg |= syscfg::MemEncryptionModEn;
    h.msr.hwcr |= 1; // SmmLock
    h.msr.vm_hsave_pa = hsave.value;
    for (unsigned k = 0; k < 16; ++k)
        if (k != RAX && k != RSP) h.gpr[k] = gprs[k];
    h.gpr[RAX] = vmcb.value;
    // The host's registers stay in `v` until VMRUN has loaded the guest's: the core's register
    // file is written once, with the guest (do_vmrun's svm_apply), not also with the host and
    // again after VMLOAD. The TLB: the host's context, the guests' parked entries kept.
    svm::SvmCpuView v;
    v.regs = std::move(h);
    v.cpl = 0;
    v.gif = false; // KVM runs VMRUN between CLGI and STGI
    v.interrupt_shadow = false;
    v.ghcb_msr = c.ghcb_msr;
    c.switch_tlb(0);

    // KVM's __svm_vcpu_run (arch/x86/kvm/svm/vmenter.S) runs `vmload; vmrun; vmsave` on the
    // guest's VMCB: VMRUN does not switch FS, GS, TR and LDTR (hidden parts included),
    // KernelGsBase, STAR/LSTAR/CSTAR/SFMASK or SYSENTER_* (APM vol 2 §15.5.2), so without them
    // a guest's GS base would be lost at every #VMEXIT. The VMSAVE is do_vmexit's.
    if (auto r = svm::vmload(c.mc, v, c.host_context_of(v.regs.msr.syscfg, v.regs.msr.hwcr, true)); !r) {
        c.svm_apply(v);
        return make_unexpected(std::string("VMLOAD of the guest's VMCB raised #GP(0)"));
    }
    c.host_vmrun = true;
    c.vmexit_done = false;
    c.host_vmrun_vmcb = vmcb;
    c.host_vmsave_failed = false;
    struct Leave { Core& c; ~Leave() { c.host_vmrun = false; c.vmexit_done = false; } } leave { c };
    try {
        c.do_vmrun(v.regs.rip + 3, v);
    } catch (GuestFault const& f) {
        if (!c.guest)
            return make_unexpected(std::string(f.vector == UD ? "VMRUN raised #UD" : "VMRUN raised #GP(0)") +
                " (a VMCB or host save area outside DRAM, or not page aligned)");
        // The injected event faulted in the guest and could not be delivered (shutdown).
        c.exception(f);
    } catch (SvmExit const& e) {
        c.do_vmexit(e.info); // an intercept while delivering EVENTINJ
    }
    uint64_t done = 0;
    while (!c.vmexit_done && c.guest) {
        uint64_t budget = max_instructions > done ? max_instructions - done : 1;
        auto r = run(budget);
        done += r.instructions;
        if (r.reason == StopReason::VmExit)
            break;
        if (r.reason == StopReason::Shutdown) {
            // A shutdown in a guest that does not intercept it shuts the processor down.
            return make_unexpected(std::string("shutdown in guest mode without the SHUTDOWN intercept"));
        }
        // The slice is over, the VMM asked to stop, or the guest halted: the host takes a
        // physical interrupt (its timer, an IPI), which the VMCB may intercept.
        if (c.guest && c.guest->intercepts(Intercept::INTR) && c.gif) {
            c.do_vmexit({ ec::SVM_EXIT_INTR, 0, 0, std::nullopt, 0 });
            break;
        }
        if (r.reason == StopReason::Halted)
            return make_unexpected(std::string("the guest halted and its VMCB does not intercept INTR: nothing can wake it"));
    }
    c.vmexit_done = false;
    for (unsigned k = 0; k < 16; ++k)
        if (k != RAX && k != RSP) gprs[k] = c.r[k];
    if (!c.guest && c.host_vmsave_failed) // the VMSAVE half of vmload/vmrun/vmsave (do_vmexit)
        return make_unexpected(std::string("VMSAVE of the guest's VMCB raised #GP(0)"));
    return HostVmrunResult { done };
}

} // namespace sevemu::cpu
