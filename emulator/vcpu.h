// sevemu — one vCPU of the Machine, and what it reports when it stops.
//
// A vCPU is an interpreter core (cpu::Cpu). A plain guest runs on it directly: port I/O and MMIO
// are done inside Cpu::run() through the machine's IoHandler (no exit: the hot path), and the
// core asks the machine's InterruptController for its next vector. An SEV guest runs on it
// through the hypervisor: the KVM-like vmm::Vcpu enters the guest with VMRUN on the same core,
// and port I/O, MMIO and hypercalls come back as exits (KVM_EXIT_*), with interrupts injected
// from the same InterruptController (QEMU's kernel_irqchip=off).
//
// Either way run() returns a VcpuExit, and Machine::handle_exit() is the one place that turns
// it into a machine outcome: std::visit over the variant with one handler per kind and no
// catch-all (base/overloaded.h), so a new kind that is not handled is a compile error. The
// board's own stop causes (isa-debug-exit, ACPI power-off) are kinds of the same variant.
#pragma once

#include "emulator/vmm/vcpu.h"

#include <cstdint>
#include <memory>
#include <variant>

namespace sevemu::cpu {
class Cpu;
}
namespace sevemu::devices {
class InterruptController;
}

namespace sevemu::emulator {

// A guest write to isa-debug-exit: the run ends with this status ((V << 1) | 1).
struct ExitDebugExit {
    int status;
};
// The guest turned the machine off (ACPI S5).
struct ExitPowerOff {};

using VcpuExit = std::variant<vmm::ExitIo, vmm::ExitMmio, vmm::ExitHlt, vmm::ExitShutdown, vmm::ExitHypercall,
    vmm::ExitFailEntry, vmm::ExitInternalError, vmm::ExitIntr, vmm::ExitIrqWindowOpen, vmm::ExitSevTerm,
    vmm::ExitApResetHold, ExitDebugExit, ExitPowerOff>;

class Vcpu {
public:
    Vcpu(uint32_t index, std::unique_ptr<cpu::Cpu> cpu);
    ~Vcpu();
    Vcpu(Vcpu&&) noexcept;
    Vcpu& operator=(Vcpu&&) noexcept;

    uint32_t index() const { return m_index; }
    cpu::Cpu& cpu() { return *m_cpu; }
    cpu::Cpu const& cpu() const { return *m_cpu; }
    // For an SEV guest: the hypervisor's vCPU that runs the guest on this core. Null otherwise.
    vmm::Vcpu* sev() const { return m_sev; }
    void attach_sev(vmm::Vcpu* v) { m_sev = v; }

    // Runs the guest for at most `budget` instructions (> 0) and says why it stopped:
    // ExitIntr when the budget is used up or a stop was requested (Cpu::request_stop).
    VcpuExit run(uint64_t budget, devices::InterruptController&);

    // Instructions retired on this core so far (the guest's, for an SEV guest too).
    uint64_t instructions() const;
    // The guest's instruction pointer and RFLAGS.IF, for messages and for HLT.
    uint64_t guest_rip() const;
    bool guest_interrupts_enabled() const;
    // An SEV guest's HLT whose wait the machine cut short (a QMP request): the vCPU stays halted
    // — run() gives ExitHlt again without entering the guest until an interrupt is pending (KVM's
    // KVM_MP_STATE_HALTED). A plain guest's CPU keeps this state itself.
    void set_halted() { m_halted = true; }
    // An SEV vCPU's INIT and start-up IPI from its local APIC, done by the hypervisor on the
    // VMCB (vmm::Vcpu::init_event, deliver_sipi); either ends its HLT. A plain vCPU's core is
    // reset by the Machine instead.
    void sev_init();
    void sev_sipi(uint8_t vector);
    // In HLT (the guest's, for an SEV vCPU).
    bool halted() const;
    // An NMI for the guest (from its LAPIC, or QMP inject-nmi): a plain guest's core latches
    // it (cpu::Cpu::inject_nmi); an SEV guest's is held here and injected (EVENTINJ type NMI)
    // at the next run() in which the guest can take it. One pending NMI at most, as on the pin.
    void inject_nmi();
    // An NMI is pending and could be taken now (it wakes a halted vCPU whatever RFLAGS.IF).
    bool nmi_deliverable() const;

private:
    bool m_halted { false };
    bool m_nmi_pending { false }; // SEV: not injected yet
    uint32_t m_index;
    std::unique_ptr<cpu::Cpu> m_cpu;
    vmm::Vcpu* m_sev { nullptr };
};

} // namespace sevemu::emulator
