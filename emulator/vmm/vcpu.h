// sevemu — a vCPU of the KVM-like hypervisor layer: it builds a VMCB in host DRAM as KVM's
// init_vmcb() does, runs the guest with VMRUN on the CPU, and turns each #VMEXIT into either an
// in-kernel action (CPUID, MSR, re-entry) or an exit for the VMM, like kvm_run's exit reasons
// (STYLE.md rule 8: Vcpu::run() returns an exit variant). Exit handling is a plain function of
// the VMCB image, so it is tested without a CPU.
#pragma once

#include "cpu/svm/vmcb.h"
#include "emulator/vmm/mmio_insn.h"
#include "emulator/vmm/vm.h"

#include <array>
#include <memory>
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
using VcpuExit = std::variant<ExitIo, ExitHlt, ExitShutdown, ExitHypercall, ExitFailEntry, ExitInternalError, ExitIntr,
    ExitIrqWindowOpen, ExitMmio>;

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
    cpu::svm::VmcbSaveArea& state() { return m_vmcb.save; }
    GuestGprs& gprs() { return m_gprs; }
    void set_cpuid(std::vector<CpuidEntry> entries) { m_cpuid = std::move(entries); }
    std::vector<CpuidEntry> const& cpuid_entries() const { return m_cpuid; }

    // Runs until an exit the VMM must see. For an IN, fill the value with complete_io_in()
    // before the next run(); it is written to RAX then.
    VcpuExit run(SvmExecutor&);
    void complete_io_in(uint32_t value);
    // For an MMIO read: the value read, written to the instruction's register before the next run().
    void complete_mmio_read(uint64_t value);
    // The VMM's answer to an ExitHypercall, returned to the guest in RAX (0 = success).
    void complete_hypercall(uint64_t ret) { m_vmcb.save.rax = ret; }

    // Interrupts from a userspace interrupt controller, as with KVM_INTERRUPT and
    // kvm_run::request_interrupt_window (KVM's svm_set_irq / svm_enable_irq_window):
    // ready: RFLAGS.IF=1, no interrupt shadow, nothing already being injected.
    bool ready_for_interrupt_injection() const;
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
    };
    MigrationState migration_state() const;
    void set_migration_state(MigrationState const&);

    // The exit decoder on its own: given the VMCB after #VMEXIT, either handles it (updating the
    // VMCB for re-entry, returns nullopt) or names the exit for the VMM.
    std::optional<VcpuExit> handle_exit(cpu::svm::Vmcb& vmcb);

    Spa vmcb_address() const { return m_vmcb_page; }
    uint64_t nested_cr3() const { return m_npt->root(); }
    cpu::svm::Vmcb const& vmcb() const { return m_vmcb; }

private:
    Vcpu(Vm& vm, uint32_t id) : m_vm(vm), m_id(id) {}
    void inject_gp(cpu::svm::Vmcb&);
    unsigned guest_phys_bits() const;
    bool has_pv_feature(unsigned bit) const;

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
};

} // namespace sevemu::vmm
