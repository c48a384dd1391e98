// sevemu — the AMD EPYC CPU models: identification, CPUID leaves and the MSR numbers the CPU
// implements. CPUID advertises exactly what the interpreter implements (features the
// interpreter lacks are cleared even when the real part has them; QUIRKS.md lists them).
// The per-model values (signature, brand, address sizes, leaf 8000_001F) come from the table
// in base/epyc_model.h, which the firmware reads too.
#pragma once

#include "base/epyc_model.h" // CpuModel, CpuModelInfo: the one table of per-model facts

#include <cstdint>

namespace sevemu::cpu {

struct CpuidResult {
    uint32_t eax {}, ebx {}, ecx {}, edx {};
};

// Leaf/subleaf as the model answers it. apic_id fills 1.EBX[31:24]; osxsave/apic_enabled
// reflect CR4.OSXSAVE and APIC_BASE.EN as real hardware does.
CpuidResult cpuid_query(CpuModel, uint32_t leaf, uint32_t subleaf, bool osxsave = false, bool apic_enabled = true);

namespace msr {
inline constexpr uint32_t TSC = 0x10, APIC_BASE = 0x1B, MTRRCAP = 0xFE, SYSENTER_CS = 0x174,
                          SYSENTER_ESP = 0x175, SYSENTER_EIP = 0x176, MCG_CAP = 0x179, MCG_STATUS = 0x17A,
                          PAT = 0x277, MTRR_DEF_TYPE = 0x2FF, MTRR_PHYS_BASE0 = 0x200,
                          EFER = 0xC0000080, STAR = 0xC0000081, LSTAR = 0xC0000082, CSTAR = 0xC0000083,
                          SFMASK = 0xC0000084, FS_BASE = 0xC0000100, GS_BASE = 0xC0000101,
                          KERNEL_GS_BASE = 0xC0000102, TSC_AUX = 0xC0000103, TSC_RATIO = 0xC0000104,
                          SYSCFG = 0xC0010010, HWCR = 0xC0010015, VM_CR = 0xC0010114,
                          VM_HSAVE_PA = 0xC0010117, SEV_STATUS = 0xC0010131;
}

} // namespace sevemu::cpu
