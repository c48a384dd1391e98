// sevemu — a vCPU of the KVM-like hypervisor layer: it builds a VMCB in host DRAM as KVM's
// init_vmcb() does, runs the guest with VMRUN on the CPU, and turns each #VMEXIT into either an
// in-kernel action (CPUID, MSR, re-entry) or an exit for the VMM, like kvm_run's exit reasons
// (STYLE.md rule 8: Vcpu::run() returns an exit variant). Exit handling is a plain function of
// the VMCB image, so it is tested without a CPU.
//
// An SEV-ES vCPU (the VM made with KVM_SEV_ES_INIT, or KVM_SEV_INIT2 on a KVM_X86_SEV_ES_VM) has
// a VMSA page beside its VMCB: the VMM stages registers in state()/gprs() until
// KVM_SEV_LAUNCH_UPDATE_VMSA encrypts them (ghcb.h sev_es_sync_vmsa), after which the hypervisor
// sees only the automatic exits and what the guest puts in its GHCB (emulator/vmm/vcpu_es.cpp).
#pragma once

#include "cpu/svm/vmcb.h"
#include "emulator/vmm/ghcb.h"
#include "emulator/vmm/mmio_insn.h"
#include "emulator/vmm/vm.h"

#include <array>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

namespace sevemu::vmm {

// What executes VMRUN: the CPU, with rAX = the VMCB's physical address; returns after #VMEXIT
// (the exit is in the VMCB) or with a message when the CPU could not even try.
// The guest's general-purpose registers other than RAX and RSP (which live in the VMCB) travel
// beside VMRUN, as KVM's __svm_vcpu_run loads and saves them (index = x86 register number;
// entries 0 and 4 are unused).
using GuestGprs = std::array<uint64_t, 16>;

class SvmExecutor {
public:
    virtual ~SvmExecutor() = default;
    virtual Result<void, std::string> vmrun(Spa vmcb, Spa host_save_area, GuestGprs& gprs) = 0;
    // The host TSC now (for the GHCB's RDTSC/RDTSCP requests of an SEV-ES guest), if known.
    virtual std::optional<uint64_t> host_tsc() const { return std::nullopt; }
};

// Exit reasons, named as kvm_run's KVM_EXIT_* are.
struct ExitIo {
    uint16_t port;
    uint8_t size; // 1, 2, 4
    bool in;
    uint32_t value; // OUT: the value written; IN: filled in by complete_io_in()
};
struct ExitHlt {};
struct ExitShutdown {};               // triple fault in the guest
struct ExitHypercall {                // KVM_EXIT_HYPERCALL (KVM_HC_MAP_GPA_RANGE)
    uint64_t nr;
    std::array<uint64_t, 3> args;
};
struct ExitFailEntry {                // KVM_EXIT_FAIL_ENTRY: VMRUN's consistency check failed
    uint64_t hardware_entry_failure_reason;
};
struct ExitInternalError {            // KVM_EXIT_INTERNAL_ERROR: an exit the layer cannot handle
    std::string reason;
};
struct ExitMmio {                     // KVM_EXIT_MMIO: a guest access to a GPA outside every slot
    uint64_t gpa;
    uint8_t size;   // 1, 2, 4, 8
    bool is_write;
    uint64_t data;  // write: the value; read: supplied with complete_mmio_read()
};
struct ExitIrqWindowOpen {};          // KVM_EXIT_IRQ_WINDOW_OPEN: the guest can take an interrupt
struct ExitIntr {};                   // KVM_EXIT_INTR: the host took a physical interrupt (the
                                      // executor's time slice ended, or the VMM asked the vCPU to
                                      // stop); the VMM does its work and calls run() again
// KVM_EXIT_SYSTEM_EVENT with type KVM_SYSTEM_EVENT_SEV_TERM (Linux include/uapi/linux/kvm.h;
// arch/x86/kvm/svm/sev.c): an SEV-ES guest asked the hypervisor to terminate it, through the GHCB
// MSR protocol (GHCBInfo 0x100) or the termination NAE event (0x8000_FFFE). The guest cannot run
// on (QEMU treats it as a guest panic); running it again re-enters it where it asked.
struct ExitSevTerm {
    uint64_t ghcb_msr;   // system_event.data[0]: the GHCB MSR (or GHCB GPA) as the guest left it
    uint8_t reason_set;  // GHCBData[15:12] / SW_EXITINFO1[3:0]
    uint8_t reason_code; // GHCBData[23:16] / SW_EXITINFO1[11:4]
};
// KVM_EXIT_AP_RESET_HOLD (Linux include/uapi/linux/kvm.h; x86.c kvm_emulate_ap_reset_hold with a
// userspace local APIC): an SEV-ES AP parked itself in AP reset hold (NAE 0x8000_0004, or GHCB MSR
// protocol 0x006). The VMM keeps it stopped until a SIPI for it (Vcpu::deliver_sipi) releases it;
// a run() before that re-enters the guest, which is told "not released" and asks again.
struct ExitApResetHold {};
using VcpuExit = std::variant<ExitIo, ExitHlt, ExitShutdown, ExitHypercall, ExitFailEntry, ExitInternalError, ExitIntr,
    ExitIrqWindowOpen, ExitMmio, ExitSevTerm, ExitApResetHold>;

// KVM_SET_CPUID2 entries.
struct CpuidEntry {
    uint32_t function, index;
    uint32_t eax, ebx, ecx, edx;
};

// Linux's KVM_HC_MAP_GPA_RANGE (include/uapi/linux/kvm_para.h): a guest converts pages between
// private and shared; KVM forwards it to the VMM as KVM_EXIT_HYPERCALL.
inline constexpr uint64_t KVM_HC_MAP_GPA_RANGE = 12;

// The nested page tables of a VM's memory slots (GPA -> SPA, 4 KiB leaves), built when its
// first vCPU is created and shared by every vCPU of the VM, as KVM's TDP MMU shares one root
// among them: N vCPUs cost one set of tables (about 2 MiB of host memory per GiB of guest RAM),
// not N. Freed with the last vCPU.
class NestedPageTables {
public:
    static Result<std::shared_ptr<NestedPageTables>, int> build(Vm&);
    ~NestedPageTables();
    NestedPageTables(NestedPageTables const&) = delete;
    NestedPageTables& operator=(NestedPageTables const&) = delete;
    uint64_t root() const { return m_root; }
    // KVM's MMIO caching for a GPA outside every memory slot: a present leaf with a reserved
    // address bit, so that the guest's next access takes #NPF with RSVD set (for an SEV-ES guest
    // a #VC 0x400 the guest handles through its GHCB). False if the GPA is beyond the 4-level
    // tables or a page cannot be allocated.
    bool map_mmio(Gpa);

private:
    explicit NestedPageTables(HostMemory& host) : m_host(host) {}
    HostMemory& m_host;
    std::vector<Spa> m_pages;
    uint64_t m_root {};
};

class Vcpu {
public:
    // KVM_CREATE_VCPU: the VMCB, the I/O and MSR permission maps, and the VM's nested page
    // tables (shared with its other vCPUs).
    static Result<std::unique_ptr<Vcpu>, int> create(Vm&, uint32_t id);
    ~Vcpu();

    // The guest's register state lives in the VMCB save area (KVM_GET/SET_REGS, _SREGS).
    // SEV-ES: these are the VMM's staging copy, which LAUNCH_UPDATE_VMSA turns into the VMSA
    // (sev_es_sync_vmsa); once the state is protected they are neither read nor written by the
    // guest (the real state is in the encrypted VMSA) — use get_registers()/set_registers(),
    // which refuse then as KVM does.
    cpu::svm::VmcbSaveArea& state() { return m_vmcb.save; }
    GuestGprs& gprs() { return m_gprs; }
    // KVM_GET_REGS/KVM_SET_REGS (and _SREGS) with KVM's guest_state_protected rule: -EINVAL for
    // an SEV-ES vCPU whose VMSA was encrypted (x86.c kvm_arch_vcpu_ioctl_get_regs), else 0.
    int get_registers(cpu::svm::VmcbSaveArea& save, GuestGprs& gprs) const;
    int set_registers(cpu::svm::VmcbSaveArea const& save, GuestGprs const& gprs);

    // --- SEV-ES (the VM was made with KVM_SEV_ES_INIT or KVM_SEV_INIT2 on a KVM_X86_SEV_ES_VM
    // before this vCPU; emulator/vmm/vcpu_es.cpp).
    bool sev_es() const { return m_es; }
    // vcpu->arch.guest_state_protected: LAUNCH_UPDATE_VMSA encrypted this vCPU's VMSA.
    bool guest_state_protected() const { return m_guest_state_protected; }
    // The VMSA page (VMCB 0x108); its content is ciphertext once the state is protected.
    Spa vmsa_address() const { return m_vmsa_page; }
    // XCR0, PKRU, XSS (KVM_SET_XCRS, the PKRU in KVM_SET_XSAVE, MSR_IA32_XSS) as sev_es_sync_vmsa
    // takes them; staging state like state().
    VmsaSyncExtras& vmsa_extras() { return m_vmsa_extras; }
    // The VMSA image LAUNCH_UPDATE_VMSA would encrypt now (sev_es_sync_vmsa of the staging state).
    cpu::svm::Vmsa vmsa_image() const;
    // Vm::memory_encrypt_op(KVM_SEV_LAUNCH_UPDATE_VMSA), per vCPU: writes vmsa_image() to the
    // VMSA page in plaintext (-EINVAL when already protected or DR7 has bits beyond 0x400) ...
    int sync_vmsa();
    // ... and after the firmware encrypted it in place: the state is the guest's from now on.
    void set_guest_state_protected() { m_guest_state_protected = true; }
    // In AP reset hold (ExitApResetHold was reported and no SIPI has released it yet).
    bool in_ap_reset_hold() const { return m_ap_reset_hold != ApResetHold::None; }
    void set_cpuid(std::vector<CpuidEntry> entries) { m_cpuid = std::move(entries); }
    std::vector<CpuidEntry> const& cpuid_entries() const { return m_cpuid; }

    // Runs until an exit the VMM must see. For an IN, fill the value with complete_io_in()
    // before the next run(); it is written to RAX then.
    VcpuExit run(SvmExecutor&);
    void complete_io_in(uint32_t value);
    // For an MMIO read: the value read, written to the instruction's register before the next run().
    void complete_mmio_read(uint64_t value);
    // The VMM's answer to an ExitHypercall, returned to the guest in RAX (0 = success).
    void complete_hypercall(uint64_t ret);

    // Interrupts from a userspace interrupt controller, as with KVM_INTERRUPT and
    // kvm_run::request_interrupt_window (KVM's svm_set_irq / svm_enable_irq_window):
    // ready: RFLAGS.IF=1, no interrupt shadow, nothing already being injected.
    bool ready_for_interrupt_injection() const;
    // The guest's RFLAGS.IF as the hypervisor can know it: the save area's for a plain or SEV
    // guest; for SEV-ES the GUEST_INTERRUPT_MASK bit of VMCB int_state the CPU wrote at the last
    // #VMEXIT (APM vol 2 §15.35.6), since RFLAGS itself is in the encrypted VMSA.
    bool guest_interrupts_enabled() const;
    // Queues vector as an external interrupt (EVENTINJ) for the next entry; false if not ready.
    bool inject_interrupt(uint8_t vector);
    // Asks for an ExitIrqWindowOpen as soon as the guest can take an interrupt (V_IRQ with the
    // VINTR intercept); cleared when that exit is reported.
    void request_interrupt_window() { m_irq_window = true; }
    // NMIs, as KVM_NMI does on SVM (KVM's svm_inject_nmi / svm_nmi_blocked / iret_interception):
    // injected with EVENTINJ type NMI; from then on NMIs are masked and IRET is intercepted;
    // the mask is lifted at the first exit after that IRET completed (the guest's RIP has moved
    // on from it). Ready: not masked, no interrupt shadow, nothing already being injected.
    bool ready_for_nmi_injection() const;
    bool inject_nmi(); // false if not ready
    bool nmi_masked() const { return m_nmi_masked; }
    // KVM_REQ_TLB_FLUSH: the next entry flushes this guest's TLB entries (TLB_CONTROL 3); the
    // hypervisor needs it after changing translations the guest may have cached.
    void request_tlb_flush() { m_vmcb.control.tlb_ctl = cpu::svm::tlb_control::FLUSH_ASID; }

    // The local APIC's INIT and start-up IPIs for a vCPU whose state the hypervisor can write
    // (not SEV-ES: a plain SEV guest's VMCB save area is not encrypted), as KVM does from
    // kvm_apic_accept_events(). INIT: kvm_vcpu_reset(init_event) through svm_vcpu_reset and
    // init_vmcb — the registers of power-on (real mode at F000:FFF0, RDX = CPUID 1 EAX) except
    // what INIT keeps (the MSRs held in the save area: STAR..SYSENTER_*, PAT), nothing pending.
    // SIPI: kvm_vcpu_deliver_sipi_vector — CS = vector << 8 with base vector << 12, IP = 0.
    // SEV-ES (KVM's sev_vcpu_deliver_sipi_vector and its INIT path): INIT leaves the encrypted
    // state alone (only pending events and requests are dropped); the first SIPI starts the vCPU
    // from its VMSA as launched, a later one releases it from AP reset hold (SW_EXITINFO2 = 1 in
    // its GHCB, or a non-zero AP-reset-hold MSR response) and is ignored otherwise.
    void init_event();
    void deliver_sipi(uint8_t vector);

    // IA32_APIC_BASE (MSR 0x1B), which KVM keeps in the kernel even when the local APIC is the
    // VMM's (vcpu->arch.apic_base): the guest's RDMSR reads it, its WRMSR is checked as
    // kvm_set_apic_base() checks it (reserved bits, and EXTD: x2APIC is not offered to these
    // guests) and stored. The VMM sets it (KVM_SET_SREGS' apic_base) and reads it back after
    // each exit to update its LAPIC (kvm_run::apic_base, QEMU's kvm_arch_post_run).
    uint64_t apic_base() const { return m_apic_base; }
    void set_apic_base(uint64_t value) { m_apic_base = value; }

    // What migration carries of a vCPU (QEMU's KVM_GET_REGS/SREGS/MSRS/VCPU_EVENTS for a plain
    // SEV guest, whose VMCB save area is not encrypted): the save area, the event being
    // injected, the interrupt shadow and virtual-interrupt state, the other GPRs, IA32_APIC_BASE
    // and whether an interrupt window was asked for. Nothing host-specific (ASID, nested CR3,
    // permission maps) travels: the target's vCPU keeps its own.
    struct MigrationState {
        cpu::svm::VmcbSaveArea save;
        uint32_t event_inj, event_inj_err, int_state, int_ctl;
        GuestGprs gprs;
        uint64_t apic_base;
        bool irq_window;
        // SEV-ES (the registers travel in the VMSA, SEND/RECEIVE_UPDATE_VMSA): the GHCB MSR as
        // VMCB 0x0A0 holds it between runs, whether the state is protected, the SIPI and AP
        // reset hold state of sev_vcpu_deliver_sipi_vector, the NMI mask.
        uint64_t ghcb_msr {};
        bool guest_state_protected {}, received_first_sipi {};
        uint8_t ap_reset_hold {}; // 0 none, 1 NAE event, 2 MSR protocol
        bool nmi_masked {};
    };
    MigrationState migration_state() const;
    void set_migration_state(MigrationState const&);

    // The exit decoder on its own: given the VMCB after #VMEXIT, either handles it (updating the
    // VMCB for re-entry, returns nullopt) or names the exit for the VMM.
    std::optional<VcpuExit> handle_exit(cpu::svm::Vmcb& vmcb);
    // SEV-ES #VMEXIT(VMGEXIT) on its own (KVM's sev_handle_vmgexit): the GHCB MSR protocol or the
    // GHCB page named by VMCB 0x0A0, read through the VM's memory slots.
    std::optional<VcpuExit> handle_vmgexit(cpu::svm::Vmcb& vmcb);

    Spa vmcb_address() const { return m_vmcb_page; }
    uint64_t nested_cr3() const { return m_npt->root(); }
    cpu::svm::Vmcb const& vmcb() const { return m_vmcb; }

    uint32_t id() const { return m_id; }

private:
    void drop_pending_events(); // what an INIT discards (init_event)
    Vcpu(Vm& vm, uint32_t id) : m_vm(vm), m_id(id) {}
    void sev_es_init_vmcb();
    void inject_gp(cpu::svm::Vmcb&);
    unsigned guest_phys_bits() const;
    bool has_pv_feature(unsigned bit) const;
    CpuidEntry cpuid_lookup(uint32_t fn, uint32_t index) const;
    bool emulate_msr(uint32_t msr, bool write, uint64_t& value);
    void inject_exception(cpu::svm::Vmcb&, uint8_t vector, std::optional<uint32_t> error_code);

    Vm& m_vm;
    uint32_t m_id;
    cpu::svm::Vmcb m_vmcb {};
    Spa m_vmcb_page, m_hsave_page, m_iopm, m_msrpm;
    std::shared_ptr<NestedPageTables> m_npt;
    std::vector<CpuidEntry> m_cpuid;
    GuestGprs m_gprs {};
    std::optional<ExitIo> m_pending_in;
    std::optional<MmioInsn> m_pending_mmio;
    std::optional<VcpuExit> emulate_mmio(cpu::svm::Vmcb&, uint64_t gpa);
    uint64_t get_gpr(cpu::svm::Vmcb const&, unsigned index) const;
    void set_gpr(cpu::svm::Vmcb&, unsigned index, uint64_t value);
    uint64_t m_apic_base { 0xFEE00000 | (1u << 11) };
    bool m_first_run { true };
    bool m_irq_window {};
    bool m_nmi_masked {};
    std::optional<uint64_t> m_nmi_iret_rip; // the intercepted IRET's RIP, until it completes

    // SEV-ES state (KVM's struct vcpu_sev_es_state).
    bool m_es {};
    bool m_guest_state_protected {};
    bool m_received_first_sipi {};
    Spa m_vmsa_page;
    VmsaSyncExtras m_vmsa_extras;
    enum class ApResetHold : uint8_t { None, Nae, MsrProtocol };
    ApResetHold m_ap_reset_hold { ApResetHold::None };
    // The GHCB of the request being served, mapped (copied) from the guest until the next VMRUN
    // (KVM's svm->sev_es.ghcb, unmapped by sev_es_unmap_ghcb).
    struct MappedGhcb {
        MappedGhcb(uint64_t g, Ghcb const& p)
            : gpa(g)
            , page(p)
        {
        }
        uint64_t gpa {};
        Ghcb page {};
        GuestGprs regs {};        // RAX..RSI as the request gave them, then the answers
        bool regs_out {};         // the request was accepted: RAX/RBX/RCX/RDX go back
        uint64_t scratch_gpa {};  // SW_SCRATCH (if valid)
        std::vector<uint8_t> scratch;
        bool scratch_in_ghcb {}, scratch_sync {};
        size_t scratch_offset {};
    };
    std::optional<MappedGhcb> m_ghcb;
    // A GHCB request that needs more than one VMM exit, or the VMM's answer.
    struct EsPending {
        enum class Kind : uint8_t { IoIn, StringIo, MmioRead, MmioWrite, Hypercall } kind {};
        bool awaiting {};         // an IN / MMIO read exit was returned and not completed yet
        uint16_t port {};
        uint8_t size {};          // I/O element size, or the MMIO fragment being read
        bool in {};
        uint64_t gpa {};          // MMIO
        uint32_t total {}, done {}; // string I/O: elements; MMIO: bytes
    };
    std::optional<EsPending> m_es_pending;
    SvmExecutor* m_executor {};   // during run(), for the TSC of GHCB RDTSC
    struct ScratchOutcome {
        bool ok;
        std::optional<VcpuExit> exit;
    };
    std::optional<VcpuExit> handle_exit_es(cpu::svm::Vmcb&);
    std::optional<VcpuExit> handle_ghcb_msr_protocol(cpu::svm::Vmcb&);
    std::optional<VcpuExit> handle_ghcb_nae(cpu::svm::Vmcb&);
    ScratchOutcome setup_scratch(uint64_t len, bool sync);
    std::optional<VcpuExit> next_es_pending_exit();
    void unmap_ghcb();
    bool complete_es_io_in(uint32_t);
    bool complete_es_mmio_read(uint64_t);
    bool complete_es_hypercall(uint64_t);
    void deliver_sipi_es();
    bool guest_read(uint64_t gpa, std::span<uint8_t>) const;
    bool guest_write(uint64_t gpa, std::span<uint8_t const>);
};

} // namespace sevemu::vmm
