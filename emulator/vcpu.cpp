// One vCPU of the Machine (see vcpu.h).
#include "emulator/vcpu.h"

#include "cpu/cpu.h"
#include "devices/device.h"
#include "emulator/vmm/cpu_executor.h"

namespace sevemu::emulator {

Vcpu::Vcpu(uint32_t index, std::unique_ptr<cpu::Cpu> cpu)
    : m_index(index)
    , m_cpu(std::move(cpu))
{
}

Vcpu::~Vcpu() = default;
Vcpu::Vcpu(Vcpu&&) noexcept = default;
Vcpu& Vcpu::operator=(Vcpu&&) noexcept = default;

VcpuExit Vcpu::run(uint64_t budget, devices::InterruptController& ic)
{
    if (!m_sev) {
        // The hot path: I/O and interrupts happen inside Cpu::run() (the machine's IoHandler).
        auto r = m_cpu->run(budget);
        switch (r.reason) {
        case cpu::StopReason::Halted:
            return vmm::ExitHlt {};
        case cpu::StopReason::Shutdown:
            return vmm::ExitShutdown {};
        case cpu::StopReason::InstructionLimit:
        case cpu::StopReason::StopRequested:
        case cpu::StopReason::VmExit: // only host_vmrun() sees it
            break;
        }
        return vmm::ExitIntr {};
    }
    if (m_halted) {
        if (!ic.interrupt_pending() && !nmi_deliverable())
            return vmm::ExitHlt {};
        m_halted = false;
    }
    // An NMI first (KVM's inject_pending_event order: NMI before INTR).
    if (m_nmi_pending && m_sev->inject_nmi())
        m_nmi_pending = false;
    // The guest's interrupt controller is the machine's, in userspace as with QEMU's
    // -machine kernel_irqchip=off: inject when the guest can take it (KVM_INTERRUPT), else ask
    // for the interrupt window.
    if (ic.interrupt_pending()) {
        if (m_sev->ready_for_interrupt_injection())
            m_sev->inject_interrupt(ic.acknowledge());
        else
            m_sev->request_interrupt_window();
    }
    vmm::CpuExecutor executor(*m_cpu, budget);
    return std::visit([](auto&& e) -> VcpuExit { return std::move(e); }, m_sev->run(executor));
}

void Vcpu::sev_init()
{
    m_sev->init_event();
    m_halted = false;
    m_nmi_pending = false; // kvm_vcpu_reset clears a pending NMI
}

void Vcpu::sev_sipi(uint8_t vector)
{
    m_sev->deliver_sipi(vector);
    m_halted = false;
}

void Vcpu::inject_nmi()
{
    if (m_sev)
        m_nmi_pending = true;
    else
        m_cpu->inject_nmi();
}

bool Vcpu::nmi_deliverable() const
{
    if (m_sev)
        return m_nmi_pending && !m_sev->nmi_masked();
    return m_cpu->nmi_deliverable();
}

uint64_t Vcpu::instructions() const { return m_cpu->stats().instructions; }

bool Vcpu::halted() const { return m_sev ? m_halted : m_cpu->halted(); }

uint64_t Vcpu::guest_rip() const { return m_sev ? m_sev->state().rip : m_cpu->rip(); }

bool Vcpu::guest_interrupts_enabled() const
{
    if (m_sev)
        return m_sev->guest_interrupts_enabled(); // SEV-ES: from VMCB int_state, not the VMSA
    return m_cpu->state().rflags & cpu::rflags::IF;
}

} // namespace sevemu::emulator
