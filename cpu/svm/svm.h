// sevemu — AMD SVM as APM vol 2 §15 describes it, as a library the interpreter calls:
// VMRUN (§15.5) with its consistency checks (§15.5.1) and the SEV/SEV-ES checks (§15.34, §15.35),
// #VMEXIT (§15.6), VMLOAD/VMSAVE (§15.5.2), intercepts (§15.7-15.13) through the IOPM and MSRPM,
// event injection (§15.20), TLB control (§15.16), and the key selection of SEV (§15.34.5,
// Tables 15-30/15-31). Nested paging is in npt.h.
//
// The interpreter keeps its registers in cpu::CpuState; it hands them to these functions in an
// SvmCpuView (CpuState plus the few things CpuState does not hold: CPL, GIF, the interrupt
// shadow, the SEV-ES GHCB MSR) and takes them back. Everything the hypervisor put in a VMCB is
// validated here before use; a guest or hypervisor can cause a #VMEXIT code or a fault, never a
// crash (STYLE.md rule 3).
//
// How the interpreter uses it (host = not in guest mode, guest = a GuestMode is held):
//   VMRUN      guest: always #VMEXIT(VMRUN) (the intercept is mandatory). host: vmrun(); on
//              success keep the GuestMode, apply tlb_actions_on_vmrun(), deliver g.inject
//              (vector/type/error code) through the guest IDT before the first guest instruction;
//              on VmrunFailed::fault raise it; on ::check continue at next RIP (host restored).
//   #VMEXIT    whenever an intercept fires: vmexit(mc, cpu, g, {exit_code_for(i), info1, info2,
//              exitintinfo, nrip}); then tlb_actions_on_vmexit() and drop the GuestMode. For an
//              SEV-ES guest an exit that is not is_automatic_exit() raises #VC (29) in the guest
//              with the exit code as error code instead.
//   VMLOAD/VMSAVE/STGI/CLGI/INVLPGA/SKINIT: guest: #VMEXIT if intercepted; host:
//              vmload()/vmsave(); check_svm_instruction() then gif = true/false; INVLPGA flushes
//              linear rAX when invlpga_hits(tlb asid, ECX).
//   VMMCALL    guest: #VMEXIT(VMMCALL) if intercepted, else #UD; host: #UD.
//   CPUID, HLT, INVLPG, WBINVD, RDTSC, ... : intercepts(Intercept::X) -> #VMEXIT(exit_code_for(X)).
//   RDMSR/WRMSR: msr_intercepted(mc, ecx, write) -> #VMEXIT(SVM_EXIT_MSR, msr_exit_info_1(write)).
//   IN/OUT/INS/OUTS: io_intercepted(mc, port, size) -> #VMEXIT(SVM_EXIT_IOIO,
//              ioio_exit_info_1(...), EXITINFO2 = next RIP).
//   MOV CRn/DRn: intercepts_cr_read/_write, intercepts_dr_read/_write.
//   exceptions: intercepts_exception(v) -> #VMEXIT(0x40+v, EXITINFO1 = error code, for #PF
//              EXITINFO2 = the faulting address and guest CR2 unchanged).
//   INTR/NMI:  with physical_interrupts_enabled(): intercepts(INTR/NMI) -> #VMEXIT; virtual
//              interrupts from pending_virtual_interrupt().
//   memory:    guest linear -> guest page walk (its table reads are GPAs: npt_walk with
//              guest_page_walk=1, key select_key(GuestPageTableWalk)) -> GPA -> npt_walk ->
//              SPA, key = select_key(...); a NestedPageFault is #VMEXIT(SVM_EXIT_NPF).
#pragma once

#include "base/addr.h"
#include "base/result.h"
#include "cpu/state.h"
#include "cpu/svm/npt.h"
#include "cpu/svm/vmcb.h"
#include "mmu/memory_controller.h"

#include <cstdint>
#include <array>
#include <optional>
#include <string_view>

namespace sevemu {
struct CpuModelInfo; // base/epyc_model.h
}

namespace sevemu::cpu::svm {

// ---------------------------------------------------------------------------------------------
// The processor configuration VMRUN checks against: CPUID values of the model and the MSRs
// that gate SEV. Built by the interpreter at each VMRUN (from_model() does it in one line).
struct HostContext {
    uint8_t phys_addr_bits { 48 };        // MAXPHYADDR, CPUID 8000_0008 EAX[7:0]
    uint8_t phys_addr_reduction { 5 };    // 8000_001F EBX[11:6], applies when SME is on
    uint8_t c_bit { 51 };                 // 8000_001F EBX[5:0]
    uint32_t mem_encrypt_features { 0x3F }; // 8000_001F EAX (bit 1 SEV, bit 3 SEV-ES, bit 11 64BitHost)
    uint32_t max_sev_asid { 509 };        // 8000_001F ECX
    uint32_t min_sev_asid { 0x80 };       // 8000_001F EDX: lowest ASID of an SEV guest without ES
                                          // (Milan as BIOS-configured: APM vol 3 CPUID Fn8000_001F EDX)
    uint64_t syscfg {};                   // SYSCFG (C001_0010)
    uint64_t hwcr {};                     // HWCR (C001_0015)
    bool host_64bit { true };             // the host is in 64-bit mode at VMRUN
    bool long_mode { true };              // CPUID 8000_0001 EDX[29]
    // EFER/CR4 bits this processor implements (the rest are MBZ, APM vol 2 §3.1.7, §3.1.3).
    uint64_t efer_valid { efer::SCE | efer::LME | efer::LMA | efer::NXE | efer::SVME | efer::LMSLE |
                          efer::FFXSR | efer::TCE };
    uint64_t cr4_valid { 0x00F70FFFull }; // VME..UMIP, FSGSBASE, PCIDE, OSXSAVE, SMEP, SMAP, PKE, CET

    bool sme() const { return syscfg & syscfg::MemEncryptionModEn; }
    // Width of usable system-physical addresses (reduced while SME is on; APM vol 2 §7.10; Linux
    // arch/x86/kernel/cpu/amd.c early_detect_mem_encrypt).
    uint8_t usable_phys_bits() const { return sme() ? uint8_t(phys_addr_bits - phys_addr_reduction) : phys_addr_bits; }
    bool sev_supported() const { return mem_encrypt_features & (1u << 1); }
    bool sev_es_supported() const { return mem_encrypt_features & (1u << 3); }
    bool requires_64bit_host() const { return mem_encrypt_features & (1u << 11); }

    static HostContext from_model(CpuModelInfo const&, CpuState const& host, bool host_64bit);
};

// The registers SVM reads and writes. CpuState is used as it is, registers only: its run-state
// fields (halted, interrupt_shadow, gif, instructions, svm_guest) are neither read nor written
// here — the interpreter moves CPL, GIF and the shadow through the fields below.
struct SvmCpuView {
    CpuState regs;
    uint8_t cpl {};
    bool gif { true };             // global interrupt flag (APM vol 2 §15.17)
    bool interrupt_shadow {};      // MOV SS / STI shadow, VMCB int_state bit 0
    uint64_t ghcb_msr {};          // SEV_ES_GHCB (C001_0130), exchanged through VMCB 0x0A0
};

// A fault an SVM instruction raises instead of executing (delivered to the caller's context).
struct SvmFault {
    uint8_t vector {};             // 6 #UD or 13 #GP
    uint32_t error_code {};
    bool operator==(SvmFault const&) const = default;
};
inline constexpr uint8_t kUD = 6, kGP = 13;

// ---------------------------------------------------------------------------------------------
// VMRUN consistency checks, in the order of APM vol 2 §15.5.1 and then §15.34-15.35. Each one
// fails VMRUN with EXITCODE = VMEXIT_INVALID.
enum class VmrunCheck : uint8_t {
    // §15.5.1 guest state
    EferSvmeClear,          // EFER.SVME is zero
    Cr0CdClearNwSet,        // CR0.CD = 0 and CR0.NW = 1
    Cr0High,                // CR0[63:32] not zero
    Cr3Mbz,                 // an MBZ bit of CR3 is set
    Cr4Mbz,                 // an MBZ bit of CR4 is set
    Dr6High,                // DR6[63:32] not zero
    Dr7High,                // DR7[63:32] not zero
    EferMbz,                // an MBZ bit of EFER is set
    LongModeUnsupported,    // EFER.LMA/LME set on a CPU without long mode
    LmePgWithoutPae,        // EFER.LME and CR0.PG set, CR4.PAE clear
    LmePgWithoutPe,         // EFER.LME and CR0.PG set, CR0.PE clear
    LmePgPaeCsLAndD,        // EFER.LME, CR0.PG, CR4.PAE, CS.L and CS.D all set
    // §15.5.1 controls
    VmrunNotIntercepted,    // the VMRUN intercept bit is clear
    MsrpmBeyondMaxPa,       // MSRPM extends to or past the maximum physical address
    IopmBeyondMaxPa,        // IOPM extends to or past the maximum physical address
    IllegalEventInjection,  // §15.20
    AsidZero,               // ASID 0 is the host's
    IllegalTlbControl,      // TLB_CONTROL not one of 0/1/3/7 (§15.16.1; as KVM nested.c refuses it)
    // §15.34 SEV
    SevUnsupported,         // SEV_ENABLE on a CPU without SEV (8000_001F EAX[1])
    SevWithoutNestedPaging, // SEV_ENABLE needs NP_ENABLE
    SevSmmLockClear,        // HWCR.SmmLock must be 1
    SevHostNot64Bit,        // 8000_001F EAX[11]: SEV guests only from a 64-bit host
    SevAsidBeyondMax,       // ASID > 8000_001F ECX
    SevAsidBelowMin,        // SEV without ES needs ASID >= 8000_001F EDX
    SevKeyNotActivated,     // no key in the ASID's slot (the firmware never ACTIVATEd it)
    // §15.35 SEV-ES
    SevEsUnsupported,       // SEV-ES_ENABLE on a CPU without SEV-ES (8000_001F EAX[3])
    SevEsWithoutSev,        // SEV-ES_ENABLE needs SEV_ENABLE
    SevEsAsidNotBelowMin,   // SEV-ES needs ASID < 8000_001F EDX
    SevEsWithoutLbrVirt,    // SEV-ES needs VMCB 0x0B8 bit 0 (LBR virtualization)
    SevEsVmsaMisaligned,    // VMSA pointer not 4 KiB aligned
    SevEsVmsaNotDram,       // VMSA pointer not in DRAM
};
std::string_view vmrun_check_name(VmrunCheck);

// The checks on a save area (the VMCB's, or the VMSA's for SEV-ES).
Result<void, VmrunCheck> check_guest_state(VmcbSaveArea const&, HostContext const&);
// All checks on the VMCB: guest state (unless SEV-ES, whose state is in the VMSA), controls, SEV.
Result<void, VmrunCheck> vmrun_consistency_check(Vmcb const&, HostContext const&, mmu::MemoryController const&);

// EVENTINJ decode and validation (APM vol 2 §15.20): nullopt when V=0; an error for a reserved
// TYPE or an EXCEPTION whose vector is not an exception (2 = NMI, or >= 32).
Result<std::optional<Event>, VmrunCheck> decode_event_injection(uint32_t event_inj, uint32_t event_inj_err);

// ---------------------------------------------------------------------------------------------
// TLB control (APM vol 2 §15.16). The interpreter keeps one software TLB per ASID (the running
// one active, the others parked): on VMRUN it switches to the guest ASID's and flushes as
// TLB_CONTROL says; TlbActions describes that for a single TLB.
enum class TlbFlush : uint8_t { None, AllAsids, ThisAsid, ThisAsidNonGlobal };
TlbFlush tlb_flush_for(uint8_t tlb_ctl);

// What the interpreter does to its TLB, which holds the entries of one ASID at a time.
struct TlbActions {
    uint32_t context_asid {};      // Tlb::set_context(asid): flushes when the ASID changes
    bool flush_all {};             // then Tlb::flush_all()
    bool flush_non_global {};      // then Tlb::flush_non_global()
    bool operator==(TlbActions const&) const = default;
};
class GuestMode;
TlbActions tlb_actions_on_vmrun(GuestMode const&);
// #VMEXIT: back to the host's context, ASID 0 (§15.16: the host's entries are tagged 0).
constexpr TlbActions tlb_actions_on_vmexit() { return TlbActions { 0, false, false }; }
// INVLPGA rAX, ECX (APM vol 2 §15.16.3) invalidates linear rAX in ASID ECX: only the context the
// TLB holds can contain it (another ASID's entries were flushed when the context switched).
constexpr bool invlpga_hits(uint32_t tlb_context_asid, uint32_t ecx_asid) { return tlb_context_asid == ecx_asid; }

// ---------------------------------------------------------------------------------------------
// Guest mode: what VMRUN established and the interpreter keeps until #VMEXIT.
class GuestMode {
public:
    Spa vmcb;                       // the VMCB's SPA (rAX at VMRUN, C-bit stripped)
    mmu::KeyId vmcb_key { mmu::KeyId::none() };
    Spa hsave;                      // VM_HSAVE_PA at VMRUN (C-bit stripped)
    mmu::KeyId hsave_key { mmu::KeyId::none() };
    VmcbControlArea control {};     // as VMRUN read it
    uint32_t asid {};
    bool np {}, sev {}, sev_es {}, vte {};
    Spa vmsa;                       // SEV-ES
    NptContext npt;                 // valid when np
    TlbFlush tlb_flush { TlbFlush::None };
    std::optional<Event> inject;    // EVENTINJ to deliver before the first guest instruction
    uint64_t host_pat {};           // host PAT while G_PAT is in force (NP)
    bool host_if {};                // host RFLAGS.IF at VMRUN (gates physical INTR with V_INTR_MASKING)

    // Virtual interrupts (APM vol 2 §15.21). The interpreter keeps V_TPR and V_IRQ up to date in
    // control.int_ctl (guest CR8 accesses go to V_TPR when V_INTR_MASKING=1; V_IRQ is cleared
    // when the virtual interrupt is taken); #VMEXIT writes both back to the VMCB.
    bool v_intr_masking() const { return control.int_ctl & int_ctl::V_INTR_MASKING; }
    // A physical INTR can be taken (or cause #VMEXIT(INTR)) in the guest: GIF=1 and, with
    // V_INTR_MASKING, the host's IF from VMRUN; without it, the guest's IF (§15.21.1).
    bool physical_interrupts_enabled(SvmCpuView const& cpu) const;
    // The vector of a virtual interrupt the guest can take now (V_IRQ, GIF, guest IF, no shadow,
    // V_INTR_PRIO above V_TPR unless V_IGN_TPR; §15.21.4), or nullopt.
    std::optional<uint8_t> pending_virtual_interrupt(SvmCpuView const& cpu) const;

    // Intercept queries (APM vol 2 §15.7-15.13).
    bool intercepts(Intercept i) const
    {
        auto n = unsigned(i);
        return n < 32 * kInterceptWords && (control.intercepts[n / 32] >> (n % 32)) & 1;
    }
    bool intercepts_cr_read(unsigned cr) const { return cr < 16 && intercepts(Intercept(cr)); }
    bool intercepts_cr_write(unsigned cr) const { return cr < 16 && intercepts(Intercept(16 + cr)); }
    bool intercepts_dr_read(unsigned dr) const { return dr < 16 && intercepts(Intercept(32 + dr)); }
    bool intercepts_dr_write(unsigned dr) const { return dr < 16 && intercepts(Intercept(48 + dr)); }
    bool intercepts_exception(uint8_t vector) const { return vector < 32 && intercepts(Intercept(64 + vector)); }
    // IN/OUT/INS/OUTS: IOIO_PROT and the IOPM bits of every port the access touches (§15.10.1).
    bool io_intercepted(mmu::MemoryController&, uint16_t port, unsigned size) const;
    // RDMSR/WRMSR: MSR_PROT and the MSRPM (§15.11).
    bool msr_intercepted(mmu::MemoryController&, uint32_t msr, bool write) const;

    // The key of a guest access (APM vol 2 Tables 15-30/15-31), for this guest.
    mmu::KeyId nested_table_key(bool nested_c) const;
};

// IOPM / MSRPM lookups by base address (exposed for tests and for the VMM's own checks).
// An unreadable bitmap byte (not DRAM) counts as intercepted (QUIRKS.md): the hypervisor sees
// the access rather than the guest reaching a port it was never granted.
bool iopm_intercepted(mmu::MemoryController&, uint64_t iopm_base_pa, uint16_t port, unsigned size);
bool msrpm_intercepted(mmu::MemoryController&, uint64_t msrpm_base_pa, uint32_t msr, bool write);
inline constexpr uint64_t kIopmSize = 12 * 1024, kMsrpmSize = 8 * 1024;

// ---------------------------------------------------------------------------------------------
// EXITINFO1 encodings.
struct IoioInfo {
    uint16_t port {};
    unsigned size { 1 };          // operand size in bytes: 1, 2, 4
    bool in {};                   // IN/INS (TYPE=1) vs OUT/OUTS
    bool string {};               // INS/OUTS
    bool rep {};
    unsigned address_size { 64 }; // 16, 32, 64
    uint8_t segment { DS };       // effective segment of OUTS (cpu::SegReg numbering)
};
// APM vol 2 §15.10.2 Figure 15-2: [0] TYPE, [2] STR, [3] REP, [6:4] SZ32/16/8 one-hot,
// [9:7] A64/A32/A16 one-hot, [12:10] SEG, [31:16] PORT. EXITINFO2 is the next RIP.
uint64_t ioio_exit_info_1(IoioInfo const&);
// APM vol 2 §15.11: EXITINFO1 = 0 for RDMSR, 1 for WRMSR.
constexpr uint64_t msr_exit_info_1(bool write) { return write ? 1 : 0; }
// APM vol 2 §15.8.1 (decode assists): MOV CRn: bit 63 set, [3:0] the GPR.
constexpr uint64_t mov_cr_exit_info_1(unsigned gpr) { return (1ull << 63) | (gpr & 0xF); }

// SEV-ES: which exits are automatic (AE) — all others become #VC (vector 29) in the guest with
// the exit code as error code (APM vol 2 §15.35.5).
bool is_automatic_exit(uint64_t exit_code, uint64_t exit_info_1);
inline constexpr uint8_t kVcVector = 29;

// ---------------------------------------------------------------------------------------------
// The instructions.

// VMRUN rAX (APM vol 2 §15.5). On a fault nothing changed. On a failed consistency check the
// VMCB got EXITCODE = VMEXIT_INVALID and the host state is as after any #VMEXIT (continue at
// next_rip with GIF = 0). On success `cpu` holds the guest state and GuestMode is returned.
struct VmrunFailed {
    std::optional<SvmFault> fault;    // #UD / #GP: deliver in the host
    std::optional<VmrunCheck> check;  // VMEXIT_INVALID was taken
};
Result<GuestMode, VmrunFailed> vmrun(mmu::MemoryController&, SvmCpuView& cpu, HostContext const&, uint64_t next_rip);
// The same, the GuestMode written into `out` (every field; on failure `out` is unspecified):
// the interpreter's own, without copying the control area through the return value.
Result<void, VmrunFailed> vmrun(mmu::MemoryController&, SvmCpuView& cpu, HostContext const&, uint64_t next_rip, GuestMode& out);

// #VMEXIT (APM vol 2 §15.6): saves the guest state and the exit information into the VMCB (or
// the VMSA for SEV-ES), clears GIF and reloads the host state from VM_HSAVE_PA. After it the
// interpreter switches the TLB context back to ASID 0 and drops GuestMode.
struct ExitInfo {
    uint64_t exit_code {};
    uint64_t exit_info_1 {};
    uint64_t exit_info_2 {};
    std::optional<Event> exit_int_info; // an event whose delivery the exit interrupted
    uint64_t next_rip {};               // nRIP for instruction intercepts (0 otherwise)
    // Decode assist for #NPF (APM vol 2 §15.8.4): the bytes of the instruction that faulted, as
    // the processor fetched them (0 bytes when the fetch itself failed).
    uint8_t insn_len {};
    std::array<uint8_t, 15> insn_bytes {};
};
Result<void, mmu::MemError> vmexit(mmu::MemoryController&, SvmCpuView& cpu, GuestMode const&, ExitInfo const&);

// VMLOAD / VMSAVE rAX (APM vol 2 §15.5.2): FS, GS, TR, LDTR with their hidden state,
// KernelGsBase, STAR, LSTAR, CSTAR, SFMASK, SYSENTER_CS/ESP/EIP.
Result<void, SvmFault> vmload(mmu::MemoryController&, SvmCpuView& cpu, HostContext const&);
Result<void, SvmFault> vmsave(mmu::MemoryController&, SvmCpuView const& cpu, HostContext const&);
// STGI / CLGI / INVLPGA / VMMCALL preconditions in the host (APM vol 2 §15.17, §15.16.3,
// §15.5 Table "instruction behaviour"): nullopt = execute.
std::optional<SvmFault> check_svm_instruction(SvmCpuView const& cpu);
// VMMCALL outside guest mode (or not intercepted) is #UD (APM vol 2 §15.5 VMMCALL).
inline constexpr SvmFault kVmmcallNotIntercepted { kUD, 0 };

// ---------------------------------------------------------------------------------------------
// Key selection of one access (APM vol 2 §15.34.5, Tables 15-30/15-31).
enum class AccessType : uint8_t { InstructionFetch, GuestPageTableWalk, Data, NestedPageTableWalk };
struct KeySelect {
    bool mem_encryption_mod_en {}; // SYSCFG.MemEncryptionModEn
    bool guest_mode {};
    bool sev {}, sev_es {};
    bool guest_c_honoured {};      // guest paging is long mode or legacy PAE
    AccessType access { AccessType::Data };
    bool guest_c {};               // guest PTE C-bit (or the host PTE/CR3 C-bit outside guest mode)
    bool nested_c {};              // nested PTE / N_CR3 C-bit
    bool vte {};                   // VMCB 0x090 bit 5
    uint32_t asid {};
};
mmu::KeyId select_key(KeySelect const&);

} // namespace sevemu::cpu::svm
