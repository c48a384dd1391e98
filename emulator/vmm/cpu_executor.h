// sevemu — the interpreter as the vCPU's SvmExecutor: what KVM's __svm_vcpu_run does on real
// hardware (load the guest GPRs, VMRUN, save them after #VMEXIT), done by cpu::Cpu::host_vmrun().
// The host side of sevemu is C++ (the built-in hypervisor), so the CPU holds a synthetic 64-bit
// host context while it runs the guest; the host's time comes back at each #VMEXIT.
//
// Time slicing: after `slice` guest instructions, or when Cpu::request_stop() was called (QMP,
// another thread), the executor raises a physical interrupt in the host. With the INTR intercept
// set (Vcpu sets it, as KVM does) that is a #VMEXIT(INTR), which Vcpu::run() reports as ExitIntr.
#pragma once

#include "emulator/vmm/vcpu.h"

namespace sevemu::cpu {
class Cpu;
}

namespace sevemu::vmm {

class CpuExecutor final : public SvmExecutor {
public:
    explicit CpuExecutor(cpu::Cpu& cpu, uint64_t slice = 20'000'000) : m_cpu(cpu), m_slice(slice) {}
    Result<void, std::string> vmrun(Spa vmcb, Spa host_save_area, GuestGprs& gprs) override;
    std::optional<uint64_t> host_tsc() const override;
    cpu::Cpu& cpu() { return m_cpu; }

private:
    cpu::Cpu& m_cpu;
    uint64_t m_slice;
};

} // namespace sevemu::vmm
