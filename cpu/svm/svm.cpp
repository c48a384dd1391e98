// sevemu — SVM: VMRUN, #VMEXIT, VMLOAD/VMSAVE, intercepts, key selection (APM vol 2 §15).
// Written in the manual's order; each step names the section it implements.
#include "cpu/svm/svm.h"

#include "cpu/cpu_model.h"

#include <cstring>

namespace sevemu::cpu::svm {

namespace {

// ---- conversions between the VMCB packing and cpu::CpuState (state.h keeps the same packing)
Segment from_vmcb(VmcbSeg const& s) { return Segment { s.selector, uint16_t(s.attrib & 0x0FFF), s.limit, s.base }; }
VmcbSeg to_vmcb(Segment const& s) { return VmcbSeg { s.selector, s.attr, s.limit, s.base }; }
DescriptorTable dt_from_vmcb(VmcbSeg const& s) { return DescriptorTable { s.base, uint16_t(s.limit) }; }
VmcbSeg dt_to_vmcb(DescriptorTable const& d) { return VmcbSeg { 0, 0, d.limit, d.base }; }

// RFLAGS bits that exist (APM vol 2 §3.1.6); the rest read as 0, bit 1 as 1.
constexpr uint64_t kRflagsDefined = 0x003F7FD5ull;

constexpr uint64_t kSmmLock = 1u << 0; // HWCR bit 0

// Vectors below 32 that are no exception on AMD: NMI (2) and the reserved ones.
constexpr uint32_t kNotExceptions = (1u << 2) | (1u << 9) | (1u << 15) | (1u << 20) | (0x3Fu << 22) | (1u << 31);

// The host save area: VM_HSAVE_PA+0x400 in the sev_es_save_area (VMSA) format for every guest
// kind (APM vol 2 §15.35; Linux arch/x86/kvm/svm/sev.c sev_es_prepare_switch_to_guest). The page beyond 0x400
// holds 0xC00 bytes, enough for the VMSA fields up to the IBS block (0x7C8). Only what VMRUN and
// #VMEXIT use is read and written (the rest of the page keeps what the hypervisor put there):
// the type A state VMRUN saves lies below DBGCTL (0x270), the type B state an SEV-ES #VMEXIT
// loads besides goes up to XCR0 (0x3E8).
constexpr uint64_t kHsaveOffset = 0x400, kHsaveTypeA = offsetof(Vmsa, dbgctl),
                   kHsaveSevEs = offsetof(Vmsa, xcr0) + sizeof(Vmsa::xcr0);
static_assert(kHsaveTypeA == 0x270 && kHsaveOffset + kHsaveSevEs <= kVmcbSize);

// Into `v`'s first `len` bytes; the rest of `v` is left as it is.
Result<void, mmu::MemError> read_hsave(mmu::MemoryController& mc, Spa hsave, mmu::KeyId key, Vmsa& v, uint64_t len)
{
    return mc.read(hsave + kHsaveOffset, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), len), key);
}

Result<void, mmu::MemError> write_hsave(mmu::MemoryController& mc, Spa hsave, mmu::KeyId key, Vmsa const& v, uint64_t len)
{
    return mc.write(hsave + kHsaveOffset, std::span<uint8_t const>(reinterpret_cast<uint8_t const*>(&v), len), key);
}


// A physical address an SVM instruction takes in rAX or an MSR: the C-bit (when SME is on)
// selects the host key and is not part of the address (APM vol 2 §7.10.1).
struct PhysOperand {
    Spa spa;
    mmu::KeyId key { mmu::KeyId::none() };
    bool valid {};
};
PhysOperand phys_operand(uint64_t value, HostContext const& host)
{
    PhysOperand p;
    uint64_t c_mask = host.sme() ? (1ull << host.c_bit) : 0;
    if (value & c_mask) {
        p.key = mmu::KeyId::host();
        value &= ~c_mask;
    }
    p.spa = Spa(value);
    p.valid = (value & kPageMask) == 0 && (value >> host.usable_phys_bits()) == 0;
    return p;
}

uint64_t rax_operand(SvmCpuView const& cpu)
{
    bool mode64 = (cpu.regs.efer & efer::LMA) && cpu.regs.seg[CS].long_mode();
    uint64_t rax = cpu.regs.gpr[RAX];
    return mode64 ? rax : (rax & 0xFFFFFFFFull);
}

bool bit_range_set(mmu::MemoryController& mc, uint64_t base, uint64_t first_bit, unsigned count)
{
    for (unsigned i = 0; i < count; ++i) {
        uint64_t bit = first_bit + i;
        uint8_t byte = 0;
        if (!mc.read(Spa(base + bit / 8), std::span<uint8_t>(&byte, 1), mmu::KeyId::none()))
            return true; // unreadable bitmap: intercept (QUIRKS.md)
        if ((byte >> (bit % 8)) & 1)
            return true;
    }
    return false;
}

// ---- #VMEXIT's last part, shared with a failed VMRUN: reload the host (APM vol 2 §15.6
// "the processor ... reloads the host state saved by VMRUN").
void restore_host(SvmCpuView& cpu, Vmsa const& hs, bool sev_es, bool np, uint64_t host_pat)
{
    auto& r = cpu.regs;
    // §15.6: GIF is cleared; ES, CS, SS, DS with their hidden parts, GDTR, IDTR, EFER, CR0 (with
    // PE forced to 1), CR4, CR3, RFLAGS, RIP, RSP, RAX from the host save area.
    cpu.gif = false;
    r.seg[ES] = from_vmcb(hs.es);
    r.seg[CS] = from_vmcb(hs.cs);
    r.seg[SS] = from_vmcb(hs.ss);
    r.seg[DS] = from_vmcb(hs.ds);
    r.gdtr = dt_from_vmcb(hs.gdtr);
    r.idtr = dt_from_vmcb(hs.idtr);
    r.efer = hs.efer;
    r.cr0 = hs.cr0 | cr0::PE;
    r.cr4 = hs.cr4;
    r.cr3 = hs.cr3;
    r.rflags = (hs.rflags & kRflagsDefined) | 2;
    r.rip = hs.rip;
    r.gpr[RSP] = hs.rsp;
    r.gpr[RAX] = hs.rax;
    // §15.6: DR7 gets its reset value (all breakpoints off in the host); CPL = 0.
    r.dr7 = 0x400;
    cpu.cpl = 0;
    cpu.interrupt_shadow = false;
    if (np)
        r.msr.pat = host_pat; // G_PAT was the guest's PAT (§15.25.8)
    r.msr.sev_status = 0;     // SEV_STATUS describes a guest; the host is none
    if (sev_es) {
        // APM vol 2 §15.35.4: the guest's registers went into the encrypted VMSA; the host's come
        // back: type A (saved by VMRUN) and type B (stored by the hypervisor at HSAVE+0x400).
        // Registers of neither type are cleared so that no guest value survives in the host
        // (the leak SEV-ES exists to stop; QUIRKS.md).
        r.seg[FS] = from_vmcb(hs.fs);
        r.seg[GS] = from_vmcb(hs.gs);
        r.tr = from_vmcb(hs.tr);
        r.ldtr = from_vmcb(hs.ldtr);
        r.msr.star = hs.star;
        r.msr.lstar = hs.lstar;
        r.msr.cstar = hs.cstar;
        r.msr.sfmask = hs.sfmask;
        r.msr.kernel_gs_base = hs.kernel_gs_base;
        r.msr.sysenter_cs = hs.sysenter_cs;
        r.msr.sysenter_esp = hs.sysenter_esp;
        r.msr.sysenter_eip = hs.sysenter_eip;
        r.cr2 = hs.cr2;
        r.gpr[RBX] = hs.rbx;
        r.gpr[RBP] = hs.rbp;
        r.gpr[RSI] = hs.rsi;
        r.gpr[RDI] = hs.rdi;
        r.gpr[R12] = hs.r12;
        r.gpr[R13] = hs.r13;
        r.gpr[R14] = hs.r14;
        r.gpr[R15] = hs.r15;
        for (auto g : { RCX, RDX, R8, R9, R10, R11 })
            r.gpr[g] = 0;
        r.xcr0 = hs.xcr0 ? hs.xcr0 : 1;
        r.dr = {};
        r.dr6 = 0xFFFF0FF0;
        r.xmm = {};
        r.msr.tsc_aux = hs.tsc_aux;
    }
}

// Guest state from a save area (non-ES: the VMCB's; SEV-ES: the VMSA's prefix).
// APM vol 2 §15.5.1 "VMRUN loads guest state": ES, CS, SS, DS, GDTR, IDTR, EFER, CR4, CR3, CR2,
// CR0, DR7, DR6, RFLAGS, RIP, RSP, RAX, CPL (and G_PAT with nested paging, §15.25.8).
// S: VmcbSaveArea, or Vmsa, whose first 0x2E8 bytes have the same layout (vmcb.h): no copy of
// the prefix into a VmcbSaveArea at every SEV-ES world switch.
template <class S> void load_guest(SvmCpuView& cpu, S const& s, bool np)
{
    auto& r = cpu.regs;
    r.seg[ES] = from_vmcb(s.es);
    r.seg[CS] = from_vmcb(s.cs);
    r.seg[SS] = from_vmcb(s.ss);
    r.seg[DS] = from_vmcb(s.ds);
    r.gdtr = dt_from_vmcb(s.gdtr);
    r.idtr = dt_from_vmcb(s.idtr);
    r.efer = s.efer;
    r.cr4 = s.cr4;
    r.cr3 = s.cr3;
    r.cr2 = s.cr2;
    r.cr0 = s.cr0;
    r.dr7 = s.dr7;
    r.dr6 = s.dr6;
    r.rflags = (s.rflags & kRflagsDefined) | 2;
    r.rip = s.rip;
    r.gpr[RSP] = s.rsp;
    r.gpr[RAX] = s.rax;
    // CPL from the VMCB, forced to 0 in real mode and 3 in virtual-8086 mode (§15.5.1).
    cpu.cpl = !(s.cr0 & cr0::PE) ? 0 : (r.rflags & rflags::VM) ? 3 : (s.cpl & 3);
    if (np)
        r.msr.pat = s.g_pat;
}

template <class S> void store_guest(SvmCpuView const& cpu, S& s, bool np)
{
    auto const& r = cpu.regs;
    s.es = to_vmcb(r.seg[ES]);
    s.cs = to_vmcb(r.seg[CS]);
    s.ss = to_vmcb(r.seg[SS]);
    s.ds = to_vmcb(r.seg[DS]);
    s.gdtr = dt_to_vmcb(r.gdtr);
    s.idtr = dt_to_vmcb(r.idtr);
    s.efer = r.efer;
    s.cr4 = r.cr4;
    s.cr3 = r.cr3;
    s.cr2 = r.cr2;
    s.cr0 = r.cr0;
    s.dr7 = r.dr7;
    s.dr6 = r.dr6;
    s.rflags = r.rflags;
    s.rip = r.rip;
    s.rsp = r.gpr[RSP];
    s.rax = r.gpr[RAX];
    s.cpl = cpu.cpl;
    if (np)
        s.g_pat = r.msr.pat;
}

// The SEV-ES guest's whole register file, VMSA <-> CPU (APM vol 2 §15.35.3-15.35.4).
void load_guest_vmsa(SvmCpuView& cpu, Vmsa const& v)
{
    auto& r = cpu.regs;
    load_guest(cpu, v, true);
    r.seg[FS] = from_vmcb(v.fs);
    r.seg[GS] = from_vmcb(v.gs);
    r.ldtr = from_vmcb(v.ldtr);
    r.tr = from_vmcb(v.tr);
    r.msr.star = v.star;
    r.msr.lstar = v.lstar;
    r.msr.cstar = v.cstar;
    r.msr.sfmask = v.sfmask;
    r.msr.kernel_gs_base = v.kernel_gs_base;
    r.msr.sysenter_cs = v.sysenter_cs;
    r.msr.sysenter_esp = v.sysenter_esp;
    r.msr.sysenter_eip = v.sysenter_eip;
    r.msr.tsc_aux = v.tsc_aux;
    r.dr = { v.dr0, v.dr1, v.dr2, v.dr3 };
    r.gpr[RCX] = v.rcx;
    r.gpr[RDX] = v.rdx;
    r.gpr[RBX] = v.rbx;
    r.gpr[RBP] = v.rbp;
    r.gpr[RSI] = v.rsi;
    r.gpr[RDI] = v.rdi;
    r.gpr[R8] = v.r8;
    r.gpr[R9] = v.r9;
    r.gpr[R10] = v.r10;
    r.gpr[R11] = v.r11;
    r.gpr[R12] = v.r12;
    r.gpr[R13] = v.r13;
    r.gpr[R14] = v.r14;
    r.gpr[R15] = v.r15;
    r.xcr0 = v.xcr0 ? v.xcr0 : 1; // XCR0[0] is always 1
    r.mxcsr = v.mxcsr;
    for (unsigned i = 0; i < 16; ++i)
        std::memcpy(r.xmm[i].data(), v.fpreg_xmm + 16 * i, 16);
    cpu.interrupt_shadow = (v.vintr_ctrl >> 10) & 1;
}

void store_guest_vmsa(SvmCpuView const& cpu, Vmsa& v)
{
    auto const& r = cpu.regs;
    store_guest(cpu, v, true);
    v.fs = to_vmcb(r.seg[FS]);
    v.gs = to_vmcb(r.seg[GS]);
    v.ldtr = to_vmcb(r.ldtr);
    v.tr = to_vmcb(r.tr);
    v.star = r.msr.star;
    v.lstar = r.msr.lstar;
    v.cstar = r.msr.cstar;
    v.sfmask = r.msr.sfmask;
    v.kernel_gs_base = r.msr.kernel_gs_base;
    v.sysenter_cs = r.msr.sysenter_cs;
    v.sysenter_esp = r.msr.sysenter_esp;
    v.sysenter_eip = r.msr.sysenter_eip;
    v.tsc_aux = uint32_t(r.msr.tsc_aux);
    v.dr0 = r.dr[0];
    v.dr1 = r.dr[1];
    v.dr2 = r.dr[2];
    v.dr3 = r.dr[3];
    v.rcx = r.gpr[RCX];
    v.rdx = r.gpr[RDX];
    v.rbx = r.gpr[RBX];
    v.rbp = r.gpr[RBP];
    v.rsi = r.gpr[RSI];
    v.rdi = r.gpr[RDI];
    v.r8 = r.gpr[R8];
    v.r9 = r.gpr[R9];
    v.r10 = r.gpr[R10];
    v.r11 = r.gpr[R11];
    v.r12 = r.gpr[R12];
    v.r13 = r.gpr[R13];
    v.r14 = r.gpr[R14];
    v.r15 = r.gpr[R15];
    v.xcr0 = r.xcr0;
    v.mxcsr = r.mxcsr;
    for (unsigned i = 0; i < 16; ++i)
        std::memcpy(v.fpreg_xmm + 16 * i, r.xmm[i].data(), 16);
    v.vintr_ctrl = (v.vintr_ctrl & ~(1ull << 10)) | (cpu.interrupt_shadow ? 1ull << 10 : 0);
}

} // namespace

// =============================================================================================
HostContext HostContext::from_model(CpuModelInfo const& m, CpuState const& host, bool host_64bit)
{
    HostContext h;
    h.phys_addr_bits = m.phys_addr_bits;
    h.phys_addr_reduction = m.phys_addr_reduction;
    h.c_bit = m.c_bit;
    h.mem_encrypt_features = m.mem_encrypt_features;
    h.max_sev_asid = m.num_encrypted_guests;
    h.min_sev_asid = m.min_sev_asid;
    h.syscfg = host.msr.syscfg;
    h.hwcr = host.msr.hwcr;
    h.host_64bit = host_64bit;
    // The interpreter implements neither VME nor PVI (CPUID 1 EDX[1] clear): for this processor
    // they are MBZ, so a guest CR4 with them fails VMRUN's check instead of running without them.
    h.cr4_valid &= ~uint64_t(cr4::VME | cr4::PVI);
    return h;
}

std::string_view vmrun_check_name(VmrunCheck c)
{
    switch (c) {
    case VmrunCheck::EferSvmeClear: return "EFER.SVME is zero";
    case VmrunCheck::Cr0CdClearNwSet: return "CR0.CD is zero and CR0.NW is set";
    case VmrunCheck::Cr0High: return "CR0[63:32] are not zero";
    case VmrunCheck::Cr3Mbz: return "an MBZ bit of CR3 is set";
    case VmrunCheck::Cr4Mbz: return "an MBZ bit of CR4 is set";
    case VmrunCheck::Dr6High: return "DR6[63:32] are not zero";
    case VmrunCheck::Dr7High: return "DR7[63:32] are not zero";
    case VmrunCheck::EferMbz: return "an MBZ bit of EFER is set";
    case VmrunCheck::LongModeUnsupported: return "EFER.LMA or EFER.LME set without long mode";
    case VmrunCheck::LmePgWithoutPae: return "EFER.LME and CR0.PG set, CR4.PAE clear";
    case VmrunCheck::LmePgWithoutPe: return "EFER.LME and CR0.PG set, CR0.PE clear";
    case VmrunCheck::LmePgPaeCsLAndD: return "EFER.LME, CR0.PG, CR4.PAE, CS.L and CS.D all set";
    case VmrunCheck::VmrunNotIntercepted: return "the VMRUN intercept bit is clear";
    case VmrunCheck::MsrpmBeyondMaxPa: return "the MSRPM extends beyond the maximum physical address";
    case VmrunCheck::IopmBeyondMaxPa: return "the IOPM extends beyond the maximum physical address";
    case VmrunCheck::IllegalEventInjection: return "illegal event injection";
    case VmrunCheck::AsidZero: return "ASID is zero";
    case VmrunCheck::IllegalTlbControl: return "reserved TLB_CONTROL value";
    case VmrunCheck::SevUnsupported: return "SEV enabled on a CPU without SEV";
    case VmrunCheck::SevWithoutNestedPaging: return "SEV enabled without nested paging";
    case VmrunCheck::SevSmmLockClear: return "SEV enabled while HWCR.SmmLock is 0";
    case VmrunCheck::SevHostNot64Bit: return "SEV guest run by a host not in 64-bit mode";
    case VmrunCheck::SevAsidBeyondMax: return "SEV ASID above CPUID 8000_001F ECX";
    case VmrunCheck::SevAsidBelowMin: return "SEV (non-ES) ASID below CPUID 8000_001F EDX";
    case VmrunCheck::SevKeyNotActivated: return "no key activated for the SEV ASID";
    case VmrunCheck::SevEsUnsupported: return "SEV-ES enabled on a CPU without SEV-ES";
    case VmrunCheck::SevEsWithoutSev: return "SEV-ES enabled without SEV";
    case VmrunCheck::SevEsAsidNotBelowMin: return "SEV-ES ASID not below CPUID 8000_001F EDX";
    case VmrunCheck::SevEsWithoutLbrVirt: return "SEV-ES enabled without LBR virtualization";
    case VmrunCheck::SevEsVmsaMisaligned: return "VMSA pointer not page-aligned";
    case VmrunCheck::SevEsVmsaNotDram: return "VMSA pointer not in DRAM";
    }
    return "?";
}

// APM vol 2 §15.5.1 "Canonicalization and Consistency Checks", the guest-state part, in the
// manual's order. These stop a hypervisor from entering a guest in a state the processor
// cannot represent (e.g. long mode without PAE), which real silicon refuses rather than run.
namespace {
template <class S> Result<void, VmrunCheck> check_guest_state_of(S const& s, HostContext const& host)
{
    auto fail = [](VmrunCheck c) { return make_unexpected(c); };
    if (!(s.efer & efer::SVME))
        return fail(VmrunCheck::EferSvmeClear);
    if (!(s.cr0 & cr0::CD) && (s.cr0 & cr0::NW))
        return fail(VmrunCheck::Cr0CdClearNwSet);
    if (s.cr0 >> 32)
        return fail(VmrunCheck::Cr0High);
    bool long_paging = (s.efer & efer::LME) && (s.cr0 & cr0::PG);
    // CR3: in long mode bits 63:52 are MBZ (§5.3.5); outside it CR3 is 32 bits wide (§3.1.2).
    if (long_paging ? (s.cr3 >> 52) : (s.cr3 >> 32))
        return fail(VmrunCheck::Cr3Mbz);
    if (s.cr4 & ~host.cr4_valid)
        return fail(VmrunCheck::Cr4Mbz);
    if (s.dr6 >> 32)
        return fail(VmrunCheck::Dr6High);
    if (s.dr7 >> 32)
        return fail(VmrunCheck::Dr7High);
    if (s.efer & ~host.efer_valid)
        return fail(VmrunCheck::EferMbz);
    if (!host.long_mode && (s.efer & (efer::LMA | efer::LME)))
        return fail(VmrunCheck::LongModeUnsupported);
    if (long_paging && !(s.cr4 & cr4::PAE))
        return fail(VmrunCheck::LmePgWithoutPae);
    if (long_paging && !(s.cr0 & cr0::PE))
        return fail(VmrunCheck::LmePgWithoutPe);
    if (long_paging && (s.cr4 & cr4::PAE) && (s.cs.attrib & seg_attrib::L) && (s.cs.attrib & seg_attrib::DB))
        return fail(VmrunCheck::LmePgPaeCsLAndD);
    return {};
}
} // namespace

Result<void, VmrunCheck> check_guest_state(VmcbSaveArea const& s, HostContext const& host) { return check_guest_state_of(s, host); }

// APM vol 2 §15.20 "Event Injection": VMRUN fails with VMEXIT_INVALID for a reserved TYPE, or
// TYPE = 3 (exception) with a vector that is not an exception: 2 (NMI), the reserved vectors
// 9, 15, 20, 22-27, 31 (AMD defines no exception there; the same set KVM's nested.c refuses),
// and 32-255. Stops a hypervisor from faking an NMI or an interrupt as an exception.
Result<std::optional<Event>, VmrunCheck> decode_event_injection(uint32_t inj, uint32_t err)
{
    if (!(inj & evtinj::VALID))
        return std::optional<Event> {};
    uint8_t vector = uint8_t(inj & evtinj::VEC_MASK);
    unsigned type = (inj & evtinj::TYPE_MASK) >> evtinj::TYPE_SHIFT;
    Event e;
    e.vector = vector;
    switch (type) {
    case 0: e.type = EventType::INTR; break;
    case 2: e.type = EventType::NMI; e.vector = 2; break;
    case 3:
        if (vector >= 32 || ((kNotExceptions >> vector) & 1))
            return make_unexpected(VmrunCheck::IllegalEventInjection);
        e.type = EventType::EXCEPTION;
        break;
    case 4: e.type = EventType::SOFT_INT; break;
    default: return make_unexpected(VmrunCheck::IllegalEventInjection); // 1, 5, 6, 7 reserved
    }
    if (inj & evtinj::VALID_ERR)
        e.error_code = err;
    return std::optional<Event> { e };
}

TlbFlush tlb_flush_for(uint8_t tlb_ctl)
{
    switch (tlb_ctl) {
    case tlb_control::FLUSH_ALL_ASID: return TlbFlush::AllAsids;
    case tlb_control::FLUSH_ASID: return TlbFlush::ThisAsid;
    case tlb_control::FLUSH_ASID_LOCAL: return TlbFlush::ThisAsidNonGlobal;
    default: return TlbFlush::None;
    }
}

TlbActions tlb_actions_on_vmrun(GuestMode const& g)
{
    // §15.16.1: TLB_CONTROL 1 flushes every ASID's entries, 3 this ASID's, 7 this ASID's
    // non-global ones. The software TLB holds one ASID; entries of other ASIDs do not exist.
    TlbActions a { g.asid, false, false };
    a.flush_all = g.tlb_flush == TlbFlush::AllAsids || g.tlb_flush == TlbFlush::ThisAsid;
    a.flush_non_global = g.tlb_flush == TlbFlush::ThisAsidNonGlobal;
    return a;
}

Result<void, VmrunCheck> vmrun_consistency_check(Vmcb const& vmcb, HostContext const& host, mmu::MemoryController const& mc)
{
    auto fail = [](VmrunCheck c) { return make_unexpected(c); };
    auto const& c = vmcb.control;
    // APM vol 2 §15.34.3: with SYSCFG.MemEncryptionModEn = 0 the SEV enable bit
    // is ignored — the guest runs, unencrypted, as a plain SVM guest.
    bool sev = host.sme() && (c.nested_ctl & nested_ctl::SEV_ENABLE);
    bool sev_es = host.sme() && (c.nested_ctl & nested_ctl::SEV_ES_ENABLE);

    // §15.5.1, guest state (an SEV-ES guest's state is in the VMSA; vmrun() checks it there).
    if (!sev_es)
        TRY(check_guest_state(vmcb.save, host));

    // §15.5.1, controls. VMRUN must be intercepted: a guest that could VMRUN would escape its
    // hypervisor's control of the host save area.
    if (!((c.intercepts[4] >> (unsigned(Intercept::VMRUN) - 128)) & 1))
        return fail(VmrunCheck::VmrunNotIntercepted);
    // The bitmaps are read by physical address (bits 11:0 ignored, §15.10.1, §15.11): a table
    // reaching past the physical address space would let the hypervisor aim the CPU at nothing.
    uint8_t pa_bits = host.usable_phys_bits();
    auto beyond = [pa_bits](uint64_t base, uint64_t size) {
        base &= ~kPageMask;
        return (base >> pa_bits) != 0 || ((base + size - 1) >> pa_bits) != 0;
    };
    if (beyond(c.msrpm_base_pa, kMsrpmSize))
        return fail(VmrunCheck::MsrpmBeyondMaxPa);
    if (beyond(c.iopm_base_pa, kIopmSize))
        return fail(VmrunCheck::IopmBeyondMaxPa);
    TRY(decode_event_injection(c.event_inj, c.event_inj_err));
    // ASID 0 is the host's: a guest with it would share the host's TLB entries (§15.16).
    if (c.asid == 0)
        return fail(VmrunCheck::AsidZero);
    if (c.tlb_ctl != 0 && c.tlb_ctl != 1 && c.tlb_ctl != 3 && c.tlb_ctl != 7)
        return fail(VmrunCheck::IllegalTlbControl);

    // §15.34.3 "Enabling SEV": SEV needs the encryption engine on, nested paging
    // (guest memory must go through the C-bit aware nested walk), SMM locked (else SMM code
    // could read the key-protected state), an ASID the firmware owns and has activated a key for.
    if (sev) {
        if (!host.sev_supported())
            return fail(VmrunCheck::SevUnsupported);
        if (!(c.nested_ctl & nested_ctl::NP_ENABLE))
            return fail(VmrunCheck::SevWithoutNestedPaging);
        if (!(host.hwcr & kSmmLock))
            return fail(VmrunCheck::SevSmmLockClear);
        if (host.requires_64bit_host() && !host.host_64bit)
            return fail(VmrunCheck::SevHostNot64Bit);
        if (c.asid > host.max_sev_asid)
            return fail(VmrunCheck::SevAsidBeyondMax);
        // ASIDs below EDX belong to SEV-ES guests: a plain SEV guest there could be given an
        // SEV-ES guest's key and read its memory without the register protection.
        if (!sev_es && c.asid < host.min_sev_asid)
            return fail(VmrunCheck::SevAsidBelowMin);
        // Without an activated key the guest would run with no key at all: plaintext in DRAM
        // while its owner believes it encrypted.
        if (!mc.slot_programmed(c.asid))
            return fail(VmrunCheck::SevKeyNotActivated);
    }
    // §15.35.2 "Enabling SEV-ES".
    if (sev_es) {
        if (!host.sev_es_supported())
            return fail(VmrunCheck::SevEsUnsupported);
        if (!sev)
            return fail(VmrunCheck::SevEsWithoutSev);
        if (c.asid >= host.min_sev_asid)
            return fail(VmrunCheck::SevEsAsidNotBelowMin);
        // LBR virtualization keeps the guest's branch records out of the host's LBR MSRs.
        if (!(c.virt_ext & virt_ext::LBR_CTL_ENABLE))
            return fail(VmrunCheck::SevEsWithoutLbrVirt);
        if (c.vmsa_pa & kPageMask)
            return fail(VmrunCheck::SevEsVmsaMisaligned);
        if ((c.vmsa_pa >> pa_bits) || !mc.is_dram(Spa(c.vmsa_pa), kVmcbSize))
            return fail(VmrunCheck::SevEsVmsaNotDram);
    }
    return {};
}

// =============================================================================================
// Intercepts.

bool iopm_intercepted(mmu::MemoryController& mc, uint64_t iopm_base_pa, uint16_t port, unsigned size)
{
    // APM vol 2 §15.10.1: one bit per port; a multi-byte access is intercepted if any of its
    // ports' bits is set (the third 4 KiB page covers accesses that wrap past port FFFFh).
    if (size == 0 || size > 4)
        size = 1;
    return bit_range_set(mc, iopm_base_pa & ~kPageMask, port, size);
}

bool msrpm_intercepted(mmu::MemoryController& mc, uint64_t msrpm_base_pa, uint32_t msr, bool write)
{
    // APM vol 2 §15.11 Table 15-?: 2 bits per MSR (read, write), 2 KiB per range:
    // 0000_0000-0000_1FFF at 0x000, C000_0000-C000_1FFF at 0x800, C001_0000-C001_1FFF at 0x1000.
    // An MSR outside the three ranges is always intercepted.
    uint64_t range_off;
    if (msr <= 0x1FFF)
        range_off = 0x000;
    else if (msr >= 0xC0000000 && msr <= 0xC0001FFF)
        range_off = 0x800;
    else if (msr >= 0xC0010000 && msr <= 0xC0011FFF)
        range_off = 0x1000;
    else
        return true;
    uint64_t bit = range_off * 8 + uint64_t(msr & 0x1FFF) * 2 + (write ? 1 : 0);
    return bit_range_set(mc, msrpm_base_pa & ~kPageMask, bit, 1);
}

bool GuestMode::io_intercepted(mmu::MemoryController& mc, uint16_t port, unsigned size) const
{
    return intercepts(Intercept::IOIO_PROT) && iopm_intercepted(mc, control.iopm_base_pa, port, size);
}

bool GuestMode::msr_intercepted(mmu::MemoryController& mc, uint32_t msr, bool write) const
{
    return intercepts(Intercept::MSR_PROT) && msrpm_intercepted(mc, control.msrpm_base_pa, msr, write);
}

bool GuestMode::physical_interrupts_enabled(SvmCpuView const& cpu) const
{
    if (!cpu.gif)
        return false;
    return v_intr_masking() ? host_if : (cpu.regs.rflags & rflags::IF) != 0;
}

std::optional<uint8_t> GuestMode::pending_virtual_interrupt(SvmCpuView const& cpu) const
{
    uint32_t ic = control.int_ctl;
    if (!(ic & int_ctl::V_IRQ) || !cpu.gif || !(cpu.regs.rflags & rflags::IF) || cpu.interrupt_shadow)
        return std::nullopt;
    unsigned prio = (ic & int_ctl::V_INTR_PRIO_MASK) >> 16, tpr = ic & int_ctl::V_TPR_MASK;
    if (!(ic & int_ctl::V_IGN_TPR) && prio <= tpr)
        return std::nullopt;
    return uint8_t(control.int_vector);
}

mmu::KeyId GuestMode::nested_table_key(bool nested_c) const
{
    return (npt.sme && nested_c) ? mmu::KeyId::host() : mmu::KeyId::none();
}

uint64_t ioio_exit_info_1(IoioInfo const& io)
{
    uint64_t v = io.in ? 1 : 0;
    if (io.string)
        v |= 1u << 2;
    if (io.rep)
        v |= 1u << 3;
    v |= io.size == 4 ? (1u << 6) : io.size == 2 ? (1u << 5) : (1u << 4);
    v |= io.address_size == 64 ? (1u << 9) : io.address_size == 32 ? (1u << 8) : (1u << 7);
    if (io.string && !io.in)
        v |= uint64_t(io.segment & 7) << 10; // SEG names the source segment of OUTS only
    v |= uint64_t(io.port) << 16;
    return v;
}

bool is_automatic_exit(uint64_t code, uint64_t exit_info_1)
{
    using namespace exitcode;
    if (code == SVM_EXIT_EXCP_BASE + 18 /* #MC */ || (code >= SVM_EXIT_INTR && code <= SVM_EXIT_VINTR) ||
        code == SVM_EXIT_PAUSE || code == SVM_EXIT_HLT || code == SVM_EXIT_SHUTDOWN ||
        code == SVM_EXIT_EFER_WRITE_TRAP || (code >= SVM_EXIT_CR0_WRITE_TRAP && code <= SVM_EXIT_CR0_WRITE_TRAP + 15) ||
        code == SVM_EXIT_BUS_LOCK || code == SVM_EXIT_IDLE_HLT || code == SVM_EXIT_VMGEXIT)
        return true;
    if (code == SVM_EXIT_NPF)
        return !(exit_info_1 & npf::RSVD); // reserved-bit NPF (MMIO) becomes #VC
    return code >= VMEXIT_INVALID_PMC; // -1 .. -4
}

// =============================================================================================
// The instructions.

std::optional<SvmFault> check_svm_instruction(SvmCpuView const& cpu)
{
    // APM vol 2 §15.4 / instruction reference (vol 3): #UD unless EFER.SVME=1 and protected
    // mode (not real, not virtual-8086); #GP(0) above CPL 0.
    auto const& r = cpu.regs;
    if (!(r.efer & efer::SVME) || !(r.cr0 & cr0::PE) || (r.rflags & rflags::VM))
        return SvmFault { kUD, 0 };
    if (cpu.cpl != 0)
        return SvmFault { kGP, 0 };
    return std::nullopt;
}

Result<GuestMode, VmrunFailed> vmrun(mmu::MemoryController& mc, SvmCpuView& cpu, HostContext const& host, uint64_t next_rip)
{
    GuestMode g;
    TRY(vmrun(mc, cpu, host, next_rip, g));
    return g;
}

Result<void, VmrunFailed> vmrun(mmu::MemoryController& mc, SvmCpuView& cpu, HostContext const& host, uint64_t next_rip, GuestMode& g)
{
    auto fault = [](SvmFault f) { return make_unexpected(VmrunFailed { f, std::nullopt }); };
    constexpr SvmFault kGP0 { kGP, 0 };

    // Instruction checks (vol 3 VMRUN): #UD / #GP(0); rAX must be a 4 KiB-aligned physical
    // address inside the physical address space, else #GP(0).
    if (auto f = check_svm_instruction(cpu))
        return fault(*f);
    PhysOperand vmcb_pa = phys_operand(rax_operand(cpu), host);
    PhysOperand hsave_pa = phys_operand(cpu.regs.msr.vm_hsave_pa, host);
    if (!vmcb_pa.valid || !mc.is_dram(vmcb_pa.spa, kVmcbSize))
        return fault(kGP0); // a VMCB outside DRAM (MMIO) is refused (QUIRKS.md)
    if (!hsave_pa.valid || !mc.is_dram(hsave_pa.spa, kVmcbSize))
        return fault(kGP0);

    // §15.5.1 step 1: save the host state to VM_HSAVE_PA (the next RIP is saved: #VMEXIT
    // resumes after VMRUN). Fields the hypervisor stored there for SEV-ES (type B) are kept.
    Vmsa hs; // only its type A part is read, written and used
    if (!read_hsave(mc, hsave_pa.spa, hsave_pa.key, hs, kHsaveTypeA))
        return fault(kGP0);
    auto const& r = cpu.regs;
    hs.es = to_vmcb(r.seg[ES]);
    hs.cs = to_vmcb(r.seg[CS]);
    hs.ss = to_vmcb(r.seg[SS]);
    hs.ds = to_vmcb(r.seg[DS]);
    hs.gdtr = dt_to_vmcb(r.gdtr);
    hs.idtr = dt_to_vmcb(r.idtr);
    hs.efer = r.efer;
    hs.cr0 = r.cr0;
    hs.cr3 = r.cr3;
    hs.cr4 = r.cr4;
    hs.rflags = r.rflags;
    hs.rip = next_rip;
    hs.rsp = r.gpr[RSP];
    hs.rax = r.gpr[RAX];
    hs.g_pat = r.msr.pat;
    hs.cpl = 0;

    // §15.5.1 step 2: read the control area and check it with the guest state.
    // The control area's fields and, unless SEV-ES (its state is in the VMSA), the save area;
    // the reserved rest of the page is not read.
    Vmcb vmcb;
    if (!read_vmcb_range(mc, vmcb_pa.spa, vmcb_pa.key, kVmcbControlUsed, vmcb))
        return fault(kGP0);
    auto const& c = vmcb.control;
    bool np = c.nested_ctl & nested_ctl::NP_ENABLE;
    // SEV bits are ignored while SYSCFG.MemEncryptionModEn = 0 (APM vol 2 §15.34.3).
    bool sev = host.sme() && (c.nested_ctl & nested_ctl::SEV_ENABLE);
    bool sev_es = sev && (c.nested_ctl & nested_ctl::SEV_ES_ENABLE);
    // vmrun_consistency_check() reads the save area only without SEV-ES.
    if (!sev_es && !read_vmcb_range(mc, vmcb_pa.spa, vmcb_pa.key, kVmcbSaveArea, vmcb))
        return fault(kGP0);

    if (sev_es) {
        // Type A host state of an SEV-ES VMRUN (§15.35.4): the rest of the host's segment and
        // system-call state, so that no guest value is left in it after #VMEXIT.
        hs.fs = to_vmcb(r.seg[FS]);
        hs.gs = to_vmcb(r.seg[GS]);
        hs.tr = to_vmcb(r.tr);
        hs.ldtr = to_vmcb(r.ldtr);
        hs.star = r.msr.star;
        hs.lstar = r.msr.lstar;
        hs.cstar = r.msr.cstar;
        hs.sfmask = r.msr.sfmask;
        hs.kernel_gs_base = r.msr.kernel_gs_base;
        hs.sysenter_cs = r.msr.sysenter_cs;
        hs.sysenter_esp = r.msr.sysenter_esp;
        hs.sysenter_eip = r.msr.sysenter_eip;
        hs.cr2 = r.cr2;
    }
    if (!write_hsave(mc, hsave_pa.spa, hsave_pa.key, hs, kHsaveTypeA))
        return fault(kGP0);

    // A failed check is a #VMEXIT(VMEXIT_INVALID): EXITCODE in the VMCB, host state reloaded
    // (the guest state was never loaded, so #VMEXIT saves none).
    auto invalid = [&](VmrunCheck why) -> Result<void, VmrunFailed> {
        vmcb.control.exit_code = exitcode::VMEXIT_INVALID;
        vmcb.control.exit_info_1 = 0;
        vmcb.control.exit_info_2 = 0;
        vmcb.control.exit_int_info = 0;
        vmcb.control.exit_int_info_err = 0;
        (void)write_vmcb_range(mc, vmcb_pa.spa, vmcb_pa.key, kVmcbExitControl, vmcb);
        restore_host(cpu, hs, false, false, 0);
        return make_unexpected(VmrunFailed { std::nullopt, why });
    };
    if (auto ok = vmrun_consistency_check(vmcb, host, mc); !ok)
        return invalid(ok.error());

    g.vmcb = vmcb_pa.spa;
    g.vmcb_key = vmcb_pa.key;
    g.hsave = hsave_pa.spa;
    g.hsave_key = hsave_pa.key;
    g.control = c;
    g.asid = c.asid;
    g.np = np;
    g.sev = sev;
    g.sev_es = sev_es;
    g.vte = sev && !sev_es && (c.nested_ctl & nested_ctl::VTE_ENABLE);
    g.vmsa = Spa(c.vmsa_pa);
    g.host_pat = r.msr.pat;
    g.host_if = (r.rflags & rflags::IF) != 0;
    g.npt = NptContext { c.nested_cr3, (r.efer & efer::NXE) != 0, host.sme(), host.c_bit, host.usable_phys_bits() };
    g.inject = *decode_event_injection(c.event_inj, c.event_inj_err);

    // §15.5.1 step 3: load the guest state. SEV-ES (§15.35.3): from the VMSA, decrypted with the
    // guest's key, and checked there.
    if (sev_es) {
        Vmsa v; // the modelled part (kVmsaUsedBytes)
        if (!read_vmsa_used(mc, g.vmsa, mmu::KeyId::slot(g.asid), v))
            return invalid(VmrunCheck::SevEsVmsaNotDram);
        if (auto ok = check_guest_state_of(v, host); !ok)
            return invalid(ok.error());
        load_guest_vmsa(cpu, v);
        cpu.ghcb_msr = c.ghcb_gpa; // the guest's GHCB MSR comes in through VMCB 0x0A0
    } else {
        load_guest(cpu, vmcb.save, np);
        cpu.interrupt_shadow = c.int_state & int_state::INTERRUPT_SHADOW;
    }
    // SEV_STATUS (Linux arch/x86/include/asm/msr-index.h MSR_AMD64_SEV_*): bit 0 SEV, bit 1 SEV-ES, as of this VMRUN.
    cpu.regs.msr.sev_status = (sev ? 1 : 0) | (sev_es ? 2 : 0);

    // §15.16.1: TLB_CONTROL for this entry (the interpreter applies it with the ASID switch).
    g.tlb_flush = tlb_flush_for(c.tlb_ctl);
    // §15.17: GIF = 1 on entry; EVENTINJ is delivered before the first guest instruction.
    cpu.gif = true;
    return {};
}

Result<void, mmu::MemError> vmexit(mmu::MemoryController& mc, SvmCpuView& cpu, GuestMode const& g, ExitInfo const& info)
{
    // §15.6 step 1: GIF = 0 (done in restore_host, the host sees it cleared).
    // §15.6 step 2: write the guest state and the exit information into the VMCB.
    // The fields written here, read first so that the bytes between them are kept: the control
    // fields #VMEXIT writes and, unless SEV-ES (below), the save area from ES to G_PAT.
    Vmcb vmcb;
    TRY(read_vmcb_range(mc, g.vmcb, g.vmcb_key, kVmcbExitControl, vmcb));
    if (!g.sev_es)
        TRY(read_vmcb_range(mc, g.vmcb, g.vmcb_key, kVmcbExitSave, vmcb));
    auto& c = vmcb.control;
    if (g.sev_es) {
        // §15.35.4: the whole guest register file goes into the encrypted VMSA; the VMCB save
        // area is not touched (the hypervisor sees only what the guest puts in its GHCB).
        Vmsa v;
        TRY(read_vmsa_used(mc, g.vmsa, mmu::KeyId::slot(g.asid), v));
        store_guest_vmsa(cpu, v);
        TRY(write_vmsa_used(mc, g.vmsa, mmu::KeyId::slot(g.asid), v));
        c.ghcb_gpa = cpu.ghcb_msr;
        c.int_state = (c.int_state & ~int_state::GUEST_INTERRUPT_MASK) |
                      ((cpu.regs.rflags & rflags::IF) ? int_state::GUEST_INTERRUPT_MASK : 0);
    } else {
        store_guest(cpu, vmcb.save, g.np);
    }
    c.int_state = (c.int_state & ~int_state::INTERRUPT_SHADOW) | (cpu.interrupt_shadow ? int_state::INTERRUPT_SHADOW : 0);
    // §15.21: V_TPR and V_IRQ as the guest left them.
    constexpr uint32_t kVintrOut = int_ctl::V_TPR_MASK | int_ctl::V_IRQ;
    c.int_ctl = (c.int_ctl & ~kVintrOut) | (g.control.int_ctl & kVintrOut);
    c.exit_code = info.exit_code;
    c.exit_info_1 = info.exit_info_1;
    c.exit_info_2 = info.exit_info_2;
    c.exit_int_info = info.exit_int_info ? encode_event(*info.exit_int_info) : 0;
    c.exit_int_info_err = (info.exit_int_info && info.exit_int_info->error_code) ? *info.exit_int_info->error_code : 0;
    c.next_rip = info.next_rip;
    c.insn_len = info.insn_len;
    std::copy(info.insn_bytes.begin(), info.insn_bytes.end(), c.insn_bytes);
    // The injected event was taken (or is reported in EXITINTINFO): EVENTINJ.V is cleared.
    c.event_inj &= ~evtinj::VALID;
    TRY(write_vmcb_range(mc, g.vmcb, g.vmcb_key, kVmcbExitControl, vmcb));
    if (!g.sev_es)
        TRY(write_vmcb_range(mc, g.vmcb, g.vmcb_key, kVmcbExitSave, vmcb));

    // §15.6 step 3: reload the host state saved by VMRUN (and the SEV-ES type B state).
    Vmsa hs;
    TRY(read_hsave(mc, g.hsave, g.hsave_key, hs, g.sev_es ? kHsaveSevEs : kHsaveTypeA));
    restore_host(cpu, hs, g.sev_es, g.np, g.host_pat);
    return {};
}

Result<void, SvmFault> vmload(mmu::MemoryController& mc, SvmCpuView& cpu, HostContext const& host)
{
    if (auto f = check_svm_instruction(cpu))
        return make_unexpected(*f);
    PhysOperand pa = phys_operand(rax_operand(cpu), host);
    if (!pa.valid)
        return make_unexpected(SvmFault { kGP, 0 });
    Vmcb v; // FS..SYSENTER_EIP only: VMLOAD reads nothing else
    if (!read_vmcb_range(mc, pa.spa, pa.key, kVmcbVmloadState, v))
        return make_unexpected(SvmFault { kGP, 0 });
    // §15.5.2: FS, GS, TR, LDTR (hidden state too), KernelGsBase, STAR, LSTAR, CSTAR, SFMASK,
    // SYSENTER_CS/ESP/EIP.
    auto const& s = v.save;
    auto& r = cpu.regs;
    r.seg[FS] = from_vmcb(s.fs);
    r.seg[GS] = from_vmcb(s.gs);
    r.tr = from_vmcb(s.tr);
    r.ldtr = from_vmcb(s.ldtr);
    r.msr.kernel_gs_base = s.kernel_gs_base;
    r.msr.star = s.star;
    r.msr.lstar = s.lstar;
    r.msr.cstar = s.cstar;
    r.msr.sfmask = s.sfmask;
    r.msr.sysenter_cs = s.sysenter_cs;
    r.msr.sysenter_esp = s.sysenter_esp;
    r.msr.sysenter_eip = s.sysenter_eip;
    return {};
}

Result<void, SvmFault> vmsave(mmu::MemoryController& mc, SvmCpuView const& cpu, HostContext const& host)
{
    if (auto f = check_svm_instruction(cpu))
        return make_unexpected(*f);
    PhysOperand pa = phys_operand(rax_operand(cpu), host);
    if (!pa.valid)
        return make_unexpected(SvmFault { kGP, 0 });
    Vmcb v; // FS..SYSENTER_EIP only: VMSAVE writes nothing else
    if (!read_vmcb_range(mc, pa.spa, pa.key, kVmcbVmloadState, v))
        return make_unexpected(SvmFault { kGP, 0 });
    auto& s = v.save;
    auto const& r = cpu.regs;
    s.fs = to_vmcb(r.seg[FS]);
    s.gs = to_vmcb(r.seg[GS]);
    s.tr = to_vmcb(r.tr);
    s.ldtr = to_vmcb(r.ldtr);
    s.kernel_gs_base = r.msr.kernel_gs_base;
    s.star = r.msr.star;
    s.lstar = r.msr.lstar;
    s.cstar = r.msr.cstar;
    s.sfmask = r.msr.sfmask;
    s.sysenter_cs = r.msr.sysenter_cs;
    s.sysenter_esp = r.msr.sysenter_esp;
    s.sysenter_eip = r.msr.sysenter_eip;
    if (!write_vmcb_range(mc, pa.spa, pa.key, kVmcbVmloadState, v))
        return make_unexpected(SvmFault { kGP, 0 });
    return {};
}

// =============================================================================================
// Key selection (APM vol 2 §15.34.5 Tables 15-30/15-31), one row per branch.
mmu::KeyId select_key(KeySelect const& k)
{
    using mmu::KeyId;
    // Row 1: the encryption engine is off: nothing is encrypted, C-bits are plain address bits.
    if (!k.mem_encryption_mod_en)
        return KeyId::none();
    // Row 2: the host (SME): its PTE C-bit.
    if (!k.guest_mode)
        return k.guest_c ? KeyId::host() : KeyId::none();
    // Row "nested page-table walk": the nested tables belong to the host.
    if (k.access == AccessType::NestedPageTableWalk)
        return k.nested_c ? KeyId::host() : KeyId::none();
    // Row 3: a guest without SEV: the nested C-bit only.
    if (!k.sev)
        return k.nested_c ? KeyId::host() : KeyId::none();
    // Rows 4-5: an SEV guest's code and page tables are always private: a hypervisor cannot
    // feed it instructions or page tables in plaintext.
    if (k.access == AccessType::InstructionFetch || k.access == AccessType::GuestPageTableWalk)
        return KeyId::slot(k.asid);
    // Rows 6-8: data. The guest chooses with its C-bit in long mode and PAE only; in other modes
    // (and with VTE, SEV without ES) every access is private. Guest C=1 wins over the nested C.
    bool guest_c = !k.guest_c_honoured || k.guest_c || (k.vte && !k.sev_es);
    if (guest_c)
        return KeyId::slot(k.asid);
    return k.nested_c ? KeyId::host() : KeyId::none();
}

} // namespace sevemu::cpu::svm
