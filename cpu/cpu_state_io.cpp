// sevemu — a CPU's state in a snapshot section (layout in cpu/cpu_state_io.h).
#include "cpu/cpu_state_io.h"

#include "cpu/svm/svm.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>

namespace sevemu::cpu {

namespace {

// One description of the layout, walked by a writer or a reader, so the two cannot disagree.
struct Out {
    StateWriter& w;
    void u8(uint8_t& v) { w.u8(v); }
    void u16(uint16_t& v) { w.u16(v); }
    void u32(uint32_t& v) { w.u32(v); }
    void u64(uint64_t& v) { w.u64(v); }
    void boolean(bool& v) { w.boolean(v); }
    template <size_t N> void raw(std::array<uint8_t, N>& b) { w.raw(b); }
    bool present(bool v) { w.boolean(v); return v; }
};

struct In {
    StateReader& r;
    void u8(uint8_t& v) { v = r.u8(); }
    void u16(uint16_t& v) { v = r.u16(); }
    void u32(uint32_t& v) { v = r.u32(); }
    void u64(uint64_t& v) { v = r.u64(); }
    void boolean(bool& v) { v = r.boolean(); }
    template <size_t N> void raw(std::array<uint8_t, N>& b)
    {
        auto s = r.raw(N);
        if (s.size() == N) std::copy(s.begin(), s.end(), b.begin());
    }
    bool present(bool) { return r.boolean() && r.ok(); }
};

template <class A> void segment(A& a, Segment& s)
{
    a.u16(s.selector);
    a.u16(s.attr);
    a.u32(s.limit);
    a.u64(s.base);
}

template <class A> void table(A& a, DescriptorTable& t)
{
    a.u64(t.base);
    a.u16(t.limit);
}

template <class A> void guest(A& a, SvmGuestState& g)
{
    a.u64(g.vmcb);
    a.u32(g.vmcb_key);
    a.u64(g.hsave);
    a.u32(g.hsave_key);
    a.raw(g.control);
    a.u32(g.asid);
    a.boolean(g.np);
    a.boolean(g.sev);
    a.boolean(g.sev_es);
    a.boolean(g.vte);
    a.u64(g.vmsa);
    a.u64(g.n_cr3);
    a.boolean(g.npt_nxe);
    a.boolean(g.npt_sme);
    a.u8(g.npt_c_bit);
    a.u8(g.npt_phys_bits);
    a.u8(g.tlb_flush);
    a.u32(g.event_inj);
    a.u32(g.event_inj_err);
    a.u64(g.host_pat);
    a.boolean(g.host_if);
}

template <class A> void layout(A& a, CpuState& s)
{
    for (auto& g : s.gpr) a.u64(g);
    a.u64(s.rip);
    a.u64(s.rflags);
    for (auto& g : s.seg) segment(a, g);
    segment(a, s.ldtr);
    segment(a, s.tr);
    table(a, s.gdtr);
    table(a, s.idtr);
    for (uint64_t* v : { &s.cr0, &s.cr2, &s.cr3, &s.cr4, &s.cr8, &s.efer }) a.u64(*v);
    for (auto& d : s.dr) a.u64(d);
    a.u64(s.dr6);
    a.u64(s.dr7);
    a.u64(s.xcr0);
    for (auto& x : s.xmm) {
        a.u64(x[0]);
        a.u64(x[1]);
    }
    a.u32(s.mxcsr);
    a.u64(s.tsc);
    auto& m = s.msr;
    for (uint64_t* v : { &m.star, &m.lstar, &m.cstar, &m.sfmask, &m.kernel_gs_base, &m.sysenter_cs,
             &m.sysenter_esp, &m.sysenter_eip, &m.tsc_aux, &m.apic_base, &m.pat, &m.mtrr_def_type })
        a.u64(*v);
    for (auto& v : m.mtrr_var) a.u64(v);
    for (auto& v : m.mtrr_fix) a.u64(v);
    for (uint64_t* v : { &m.syscfg, &m.hwcr, &m.vm_cr, &m.vm_hsave_pa, &m.sev_status, &m.tsc_ratio, &m.misc_enable })
        a.u64(*v);
    for (auto& f : s.x87.fpr) a.raw(f);
    a.u16(s.x87.fcw);
    a.u16(s.x87.fsw);
    a.u8(s.x87.ftw);
    a.boolean(s.halted);
    a.boolean(s.interrupt_shadow);
    a.boolean(s.gif);
    a.boolean(s.pending_shutdown);
    a.boolean(s.nmi_pending);
    a.boolean(s.nmi_blocked);
    a.u64(s.instructions);
    if (a.present(s.svm_guest.has_value())) {
        if (!s.svm_guest) s.svm_guest.emplace();
        guest(a, *s.svm_guest);
    }
}

std::string hex(uint64_t v)
{
    char buf[24];
    std::snprintf(buf, sizeof buf, "%#llx", static_cast<unsigned long long>(v));
    return buf;
}

bool canonical(uint64_t a) { return uint64_t(int64_t(a << 16) >> 16) == a; }

// Bits that exist (the rest are reserved, must be zero).
// RFLAGS: APM vol 2 §3.1.6 — bit 1 reads as one; bits 3, 5, 15 and 63:22 are reserved.
constexpr uint64_t kRflagsDefined = 0x3F7FD7;
// CR4: APM vol 2 §3.1.3 — VME..UMIP (11:0), FSGSBASE, PCIDE, OSXSAVE, SMEP, SMAP, PKE, CET; the
// set VMRUN accepts (svm::HostContext::cr4_valid), a superset of what MOV CR4 accepts here.
constexpr uint64_t kCr4Defined = 0x00F70FFFull;
// EFER: APM vol 2 §3.1.7 — SCE, LME, LMA, NXE, SVME, LMSLE, FFXSR, TCE.
constexpr uint64_t kEferDefined = efer::SCE | efer::LME | efer::LMA | efer::NXE | efer::SVME | efer::LMSLE |
    efer::FFXSR | efer::TCE;

std::string check_guest(CpuState const& s, SvmGuestState const& g)
{
    // APM vol 2 §15.5.1: guest state with EFER.SVME clear is a VMRUN failure; a guest mode
    // holding one never existed.
    if (!(s.efer & efer::SVME)) return "SVM guest mode with EFER.SVME clear";
    // §15.5: VMRUN's rAX and VM_HSAVE_PA are 4 KiB aligned (#GP otherwise).
    if (g.vmcb & 0xFFF) return "SVM guest mode: VMCB address " + hex(g.vmcb) + " not 4 KiB aligned";
    if (g.hsave & 0xFFF) return "SVM guest mode: host save area " + hex(g.hsave) + " not 4 KiB aligned";
    svm::VmcbControlArea c;
    std::memcpy(&c, g.control.data(), sizeof c);
    // §15.5.1 control checks: the VMRUN intercept is set, the ASID is not the host's.
    if (!((c.intercepts[4] >> (unsigned(svm::Intercept::VMRUN) - 128)) & 1))
        return "SVM guest mode: the control area does not intercept VMRUN";
    if (g.asid == 0) return "SVM guest mode: ASID 0 (the host's)";
    if (g.asid != c.asid) return "SVM guest mode: ASID " + std::to_string(g.asid) + " differs from the control area's " + std::to_string(c.asid);
    // §15.34: SEV needs nested paging; SEV-ES needs SEV.
    if (g.sev && !g.np) return "SVM guest mode: SEV without nested paging";
    if (g.sev_es && !g.sev) return "SVM guest mode: SEV-ES without SEV";
    if (g.sev_es && (g.vmsa & 0xFFF)) return "SVM guest mode: VMSA address not 4 KiB aligned";
    // §15.16.1: TLB_CONTROL decodes to one of four actions.
    if (g.tlb_flush > uint8_t(svm::TlbFlush::ThisAsidNonGlobal)) return "SVM guest mode: bad TLB flush action " + std::to_string(g.tlb_flush);
    // §15.25.3 / CPUID 8000_001F: the C-bit position and the physical width are the model's.
    if (g.npt_c_bit >= 64 || g.npt_phys_bits > 52 || g.npt_phys_bits < 32)
        return "SVM guest mode: nested paging C-bit " + std::to_string(g.npt_c_bit) + " / physical width " + std::to_string(g.npt_phys_bits) + " impossible";
    // §15.20: EVENTINJ with a reserved type or an exception vector that is none.
    if (!svm::decode_event_injection(g.event_inj, g.event_inj_err))
        return "SVM guest mode: invalid EVENTINJ " + hex(g.event_inj);
    return {};
}

} // namespace

void save_cpu_state(StateWriter& w, CpuState const& s)
{
    CpuState copy = s;
    Out o { w };
    layout(o, copy);
}

std::string check_cpu_state(CpuState const& s)
{
    // APM vol 2 §3.1.6.
    if ((s.rflags & ~kRflagsDefined) || !(s.rflags & 2)) return "RFLAGS reserved bits wrong (" + hex(s.rflags) + ")";
    // APM vol 2 §3.1.1: CR0[63:32] MBZ; PG needs PE; NW needs CD (MOV CR0 raises #GP for each).
    if (s.cr0 >> 32) return "CR0 bits 63:32 set";
    if ((s.cr0 & cr0::PG) && !(s.cr0 & cr0::PE)) return "CR0.PG without CR0.PE";
    if ((s.cr0 & cr0::NW) && !(s.cr0 & cr0::CD)) return "CR0.NW without CR0.CD";
    // APM vol 2 §3.1.3, §3.1.7.
    if (s.cr4 & ~kCr4Defined) return "CR4 reserved bits set (" + hex(s.cr4) + ")";
    if (s.efer & ~kEferDefined) return "EFER reserved bits set (" + hex(s.efer) + ")";
    // APM vol 2 §14.6.1: the processor sets EFER.LMA only when paging is enabled with EFER.LME
    // and CR4.PAE; the interpreter's long-mode paging assumes all three.
    if (s.efer & efer::LMA) {
        if (!(s.cr0 & cr0::PG)) return "EFER.LMA without CR0.PG";
        if (!(s.efer & efer::LME)) return "EFER.LMA without EFER.LME";
        if (!(s.cr4 & cr4::PAE)) return "EFER.LMA without CR4.PAE";
        // APM vol 2 §4.8.1: CS.L=1 with CS.D=1 is reserved in long mode (VMRUN refuses it, §15.5.1).
        if (s.seg[CS].long_mode() && s.seg[CS].big()) return "CS.L and CS.D both set in long mode";
        // APM vol 2 §3.1.2: CR3[63:52] are reserved in long mode (MOV CR3 raises #GP).
        if (s.cr3 >> 52) return "CR3 bits 63:52 set in long mode";
    } else if (s.cr3 >> 32) {
        return "CR3 bits 63:32 set outside long mode"; // a 32-bit register there (APM vol 2 §3.1.2)
    }
    // APM vol 2 §3.1.3: CR4.PCIDE only in long mode.
    if ((s.cr4 & cr4::PCIDE) && !(s.efer & efer::LMA)) return "CR4.PCIDE outside long mode";
    // CR8 is the 4-bit TPR (APM vol 2 §3.1.5).
    if (s.cr8 >> 4) return "CR8 bits 63:4 set";
    // APM vol 2 §13.1.1.5-6: DR6 and DR7 bits 63:32 MBZ (VMRUN checks it too, §15.5.1).
    if (s.dr6 >> 32) return "DR6 bits 63:32 set";
    if (s.dr7 >> 32) return "DR7 bits 63:32 set";
    // APM vol 2 §11.5.2: XCR0 bit 0 (x87) is always one; this model supports x87 and SSE only
    // (XSETBV refuses anything else).
    if (!(s.xcr0 & 1) || (s.xcr0 & ~3ull)) return "XCR0 " + hex(s.xcr0) + " not x87 plus optionally SSE";
    // APM vol 4 LDMXCSR / FXSAVE MXCSR_MASK = 0xFFFF: bits 31:16 are reserved (#GP on load).
    if (s.mxcsr >> 16) return "MXCSR reserved bits set";
    // Segment attributes: VMCB packing has 12 bits (APM vol 2 §15.5.1 Table B-2); 15:12 are reserved.
    auto seg_check = [](Segment const& g, char const* name) -> std::string {
        if (g.attr & 0xF000) return std::string("reserved segment attribute bits set in ") + name;
        return {};
    };
    static char const* const kNames[6] = { "ES", "CS", "SS", "DS", "FS", "GS" };
    for (unsigned k = 0; k < 6; ++k)
        if (auto e = seg_check(s.seg[k], kNames[k]); !e.empty()) return e;
    if (auto e = seg_check(s.ldtr, "LDTR"); !e.empty()) return e;
    if (auto e = seg_check(s.tr, "TR"); !e.empty()) return e;
    // APM vol 2 §4.5.3 / WRMSR FS_BASE: bases the interpreter adds in 64-bit mode are canonical.
    if (s.efer & efer::LMA) {
        for (unsigned k : { FS, GS })
            if (!canonical(s.seg[k].base)) return std::string(kNames[k]) + " base not canonical";
        if (!canonical(s.gdtr.base) || !canonical(s.idtr.base)) return "descriptor table base not canonical";
    }
    // The x87 state: every 80-bit pattern is a register value FLD m80 can load (unsupported
    // encodings included, APM vol 1 §6.2.2), every FCW/FSW value is loadable by FLDCW/FLDENV,
    // and the abridged tag has no invalid value; nothing to refuse.
    // MSRs, as WRMSR refuses them (APM vol 2 §7.8.1 PAT: types 2, 3 and above 7 are reserved).
    for (unsigned k = 0; k < 8; ++k) {
        unsigned t = (s.msr.pat >> (8 * k)) & 0xFF;
        if (t == 2 || t == 3 || t > 7) return "PAT entry " + std::to_string(k) + " has reserved memory type " + std::to_string(t);
    }
    // APM vol 2 §7.7.1 MTRRdefType: bits 7:0 type, 10 FE, 11 E; the rest reserved.
    if (s.msr.mtrr_def_type & ~0xCFFull) return "MTRR_DEF_TYPE reserved bits set";
    if (s.msr.vm_hsave_pa & 0xFFF) return "VM_HSAVE_PA not 4 KiB aligned"; // APM vol 2 §15.30.4
    if (s.msr.tsc_aux >> 32) return "TSC_AUX bits 63:32 set"; // APM vol 2 §13.2.4 RDTSCP
    if (s.svm_guest)
        return check_guest(s, *s.svm_guest);
    return {};
}

void load_cpu_state(StateReader& r, CpuState& out)
{
    CpuState s;
    In in { r };
    layout(in, s);
    if (!r.ok())
        return;
    if (r.remaining() != 0) {
        r.fail(std::to_string(r.remaining()) + " trailing bytes after the CPU state");
        return;
    }
    if (auto e = check_cpu_state(s); !e.empty()) {
        r.fail(e);
        return;
    }
    out = s;
}

Result<CpuState, StateError> load_cpu_section(SnapshotSection const& sec)
{
    if (sec.version != kCpuStateVersion)
        return make_unexpected(StateError { sec.name, "unsupported CPU state version " + std::to_string(sec.version) +
            " (this build reads version " + std::to_string(kCpuStateVersion) + ")" });
    StateReader r(sec.name, sec.payload);
    CpuState s;
    load_cpu_state(r, s);
    TRY(r.finish());
    return s;
}

} // namespace sevemu::cpu
