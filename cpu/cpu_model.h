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

// Who reads CPUID.
//   Host:  the bare part, as the host kernel (and sevemu's built-in hypervisor, emulator/) sees
//          it: leaf 8000_001F carries the model's SME/SEV facts, no hypervisor bit, no KVM leaves.
//   Guest: a VM of a KVM host without SEV, as QEMU + KVM present it (QEMU target/i386/cpu.c
//          cpu_x86_cpuid; KVM Documentation/virt/kvm/x86/cpuid.rst): CPUID 1 ECX[31] set, the
//          KVM signature leaf 4000_0000, an empty 4000_0001 feature word (sevemu implements no
//          paravirtual interface yet), and leaf 8000_001F all zero (no SME/SEV for a plain VM).
//          The Cpu answers with this view unless told otherwise (Cpu::set_cpuid_view).
// An SEV guest's CPUID is the VMM's table (emulator/), built from this function.
enum class CpuidView : uint8_t { Host, Guest };

// What else the answer depends on: the view, the vCPU's place in the machine (leaf 1 EBX, leaf
// 0xB, 8000_0008 ECX) and two live bits of state, reflected as real hardware does (CPUID 1
// ECX[27] OSXSAVE mirrors CR4.OSXSAVE; EDX[9] APIC mirrors APIC_BASE.EN, APM vol 3 E.3.2).
struct CpuidContext {
    CpuidView view { CpuidView::Host };
    uint32_t apic_id {};       // initial APIC ID: 1 EBX[31:24], 0xB EDX
    uint32_t vcpu_count { 1 }; // logical processors in the machine: 1 EBX[23:16], 0xB, 8000_0008 ECX
    bool osxsave {};
    bool apic_enabled { true };
    // Local APIC capabilities the Machine's LAPIC implements (1 ECX[21], ECX[24]); clear
    // while the CPU has no LAPIC behind IoHandler::apic_msr_*.
    bool x2apic {};
    bool tsc_deadline {};
};

// Leaf/subleaf as the model answers it.
CpuidResult cpuid_query(CpuModel, uint32_t leaf, uint32_t subleaf, CpuidContext const& = {});

// KVM's CPUID signature leaves (Linux arch/x86/include/uapi/asm/kvm_para.h: KVM_CPUID_SIGNATURE,
// KVM_CPUID_FEATURES) and the 4000_0001 EAX word sevemu offers (no KVM_FEATURE_* bit: no
// kvmclock, no PV EOI, no async PF; the migration issue adds KVM_FEATURE_MIGRATION_CONTROL).
inline constexpr uint32_t kKvmCpuidSignature = 0x40000000, kKvmCpuidFeatures = 0x40000001;
inline constexpr uint32_t kKvmFeatures = 0;

namespace msr {
inline constexpr uint32_t TSC = 0x10, APIC_BASE = 0x1B, MTRRCAP = 0xFE, SYSENTER_CS = 0x174,
                          SYSENTER_ESP = 0x175, SYSENTER_EIP = 0x176, MCG_CAP = 0x179, MCG_STATUS = 0x17A,
                          PAT = 0x277, MTRR_DEF_TYPE = 0x2FF, MTRR_PHYS_BASE0 = 0x200,
                          EFER = 0xC0000080, STAR = 0xC0000081, LSTAR = 0xC0000082, CSTAR = 0xC0000083,
                          SFMASK = 0xC0000084, FS_BASE = 0xC0000100, GS_BASE = 0xC0000101,
                          KERNEL_GS_BASE = 0xC0000102, TSC_AUX = 0xC0000103, TSC_RATIO = 0xC0000104,
                          SYSCFG = 0xC0010010, HWCR = 0xC0010015, NB_CFG = 0xC001001F, VM_CR = 0xC0010114,
                          VM_HSAVE_PA = 0xC0010117, SEV_STATUS = 0xC0010131,
                          SEV_ES_GHCB = 0xC0010130;
// The local APIC's MSRs, forwarded to IoHandler::apic_msr_read/write: APIC_BASE (0x1B),
// TSC_DEADLINE (0x6E0, Intel SDM vol 3 §10.5.4.1; AMD PPR Fn0000_0001 ECX[24]) and the x2APIC
// register range 0x800-0x8FF (APM vol 2 §16.11).
inline constexpr uint32_t TSC_DEADLINE = 0x6E0, X2APIC_FIRST = 0x800, X2APIC_LAST = 0x8FF;
constexpr bool is_apic_msr(uint32_t idx) { return idx == TSC_DEADLINE || (idx >= X2APIC_FIRST && idx <= X2APIC_LAST); }
}

} // namespace sevemu::cpu
