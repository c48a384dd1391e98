// The interpreter as the vCPU's SvmExecutor (see cpu_executor.h).
#include "emulator/vmm/cpu_executor.h"

#include "cpu/cpu.h"

namespace sevemu::vmm {

Result<void, std::string> CpuExecutor::vmrun(Spa vmcb, Spa host_save_area, GuestGprs& gprs)
{
    auto r = m_cpu.host_vmrun(vmcb, host_save_area, gprs, m_slice);
    if (!r)
        return make_unexpected(r.error());
    return {};
}

std::optional<uint64_t> CpuExecutor::host_tsc() const { return m_cpu.tsc(); }

} // namespace sevemu::vmm
