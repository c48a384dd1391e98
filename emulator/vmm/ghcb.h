// sevemu — the SEV-ES side of the hypervisor layer that is not tied to one vCPU: the GHCB page and
// the GHCB MSR protocol as the guest and KVM exchange them (GHCB specification 56421; Linux
// arch/x86/include/asm/sev-common.h, arch/x86/include/asm/svm.h struct ghcb,
// arch/x86/include/uapi/asm/svm.h SVM_VMGEXIT_*), and the initial VMSA image KVM builds before
// LAUNCH_UPDATE_VMSA (Linux arch/x86/kvm/svm/sev.c sev_es_sync_vmsa).
//
// sev_es_sync_vmsa() is a pure function so that the VMM (which measures the launch) and
// sevemu-owner (which predicts the measurement) build the same bytes the firmware measures.
#pragma once

#include "cpu/svm/vmcb.h"

#include <array>
#include <cstddef>
#include <cstdint>

namespace sevemu::vmm {

// The guest's general-purpose registers beside the VMCB (index = x86 register number; RAX and
// RSP live in the save area, entries 0 and 4 unused). Also declared by vcpu.h.
using GuestGprs = std::array<uint64_t, 16>;

// What KVM keeps outside the VMCB save area and sev_es_sync_vmsa() copies into the VMSA.
struct VmsaSyncExtras {
    uint64_t xcr0 { 1 };      // vcpu->arch.xcr0 (XFEATURE_MASK_FP at reset)
    uint32_t pkru {};         // vcpu->arch.pkru
    uint64_t xss {};          // vcpu->arch.ia32_xss
    uint64_t sev_features {}; // sev->vmsa_features (KVM_SEV_INIT2's vmsa_features; 0 for KVM_SEV_ES_INIT)
    // KVM copies the vCPU's FPU state (reset: FCW 0x37F, MXCSR 0x1F80, the rest zero) into the
    // VMSA only for VMs not of KVM_X86_DEFAULT_VM type (i.e. made with KVM_SEV_INIT2): "Skip FPU
    // and AVX setup with KVM_SEV_ES_INIT to avoid breaking older measurements" (sev.c).
    bool fpu_state {};
};

// The VMSA image of a vCPU as KVM's sev_es_sync_vmsa() writes it before LAUNCH_UPDATE_VMSA: the
// VMCB save area (0x2E8 bytes, same layout), the GPRs (RAX, RSP, RIP from the save area, the
// others from `gprs`), XCR0, PKRU, XSS, DR6, SEV_FEATURES and (fpu_state) the reset FPU state;
// everything else zero.
cpu::svm::Vmsa sev_es_sync_vmsa(cpu::svm::VmcbSaveArea const& save, GuestGprs const& gprs, VmsaSyncExtras const& extras);
// KVM refuses to encrypt a VMSA whose DR7 has bits other than DR7_FIXED_1 (0x400) set
// (sev_es_sync_vmsa's "Check some debug related fields before encrypting the VMSA").
inline constexpr uint64_t kDr7Fixed1 = 0x400;

// ---------------------------------------------------------------------------------------------
// GHCB MSR protocol (GHCB spec §2.3.1; Linux sev-common.h GHCB_MSR_*): GHCBInfo = bits 11:0.
namespace ghcb_msr {
inline constexpr uint64_t INFO_MASK = 0xFFF;
inline constexpr uint64_t SEV_INFO_RESP = 0x001, SEV_INFO_REQ = 0x002, CPUID_REQ = 0x004, CPUID_RESP = 0x005,
                          AP_RESET_HOLD_REQ = 0x006, AP_RESET_HOLD_RESP = 0x007, REG_GPA_REQ = 0x012,
                          REG_GPA_RESP = 0x013, HV_FT_REQ = 0x080, HV_FT_RESP = 0x081, TERM_REQ = 0x100;
// SEV_INFO response: [63:48] max protocol, [47:32] min protocol, [31:24] C-bit position.
constexpr uint64_t sev_info(uint16_t max, uint16_t min, uint8_t cbit)
{
    return (uint64_t(max) << 48) | (uint64_t(min) << 32) | (uint64_t(cbit) << 24) | SEV_INFO_RESP;
}
}

// SW_EXITCODE values the hypervisor serves (Linux uapi/asm/svm.h SVM_VMGEXIT_*).
namespace vmgexit {
inline constexpr uint64_t MMIO_READ = 0x80000001, MMIO_WRITE = 0x80000002, NMI_COMPLETE = 0x80000003,
                          AP_HLT_LOOP = 0x80000004, AP_JUMP_TABLE = 0x80000005, HV_FEATURES = 0x8000FFFD,
                          TERM_REQUEST = 0x8000FFFE, UNSUPPORTED_EVENT = 0x8000FFFF;
}
// SW_EXITINFO1 = 2 replies: the reason in SW_EXITINFO2 (Linux sev-common.h GHCB_ERR_*).
namespace ghcb_err {
inline constexpr uint64_t NOT_REGISTERED = 1, INVALID_USAGE = 2, INVALID_SCRATCH_AREA = 3, MISSING_INPUT = 4,
                          INVALID_INPUT = 5, INVALID_EVENT = 6;
}

// The GHCB page (Linux arch/x86/include/asm/svm.h struct ghcb / ghcb_save_area). The save-area
// fields sit at their VMSA offsets; a field is valid when its bit (offset / 8) is set in
// valid_bitmap. The page is the guest's shared (C-bit clear) memory: the hypervisor reads it
// through its own view of the GPA and trusts none of it.
struct __attribute__((packed)) Ghcb {
    uint8_t reserved_000[0xCB];
    uint8_t cpl;                  // 0x0CB
    uint8_t reserved_0cc[0x74];
    uint64_t xss;                 // 0x140
    uint8_t reserved_148[0x18];
    uint64_t dr7;                 // 0x160
    uint8_t reserved_168[0x90];
    uint64_t rax;                 // 0x1F8
    uint8_t reserved_200[0x108];
    uint64_t rcx;                 // 0x308
    uint64_t rdx;                 // 0x310
    uint64_t rbx;                 // 0x318
    uint8_t reserved_320[0x10];
    uint64_t rsi;                 // 0x330
    uint8_t reserved_338[0x58];
    uint64_t sw_exit_code;        // 0x390
    uint64_t sw_exit_info_1;      // 0x398
    uint64_t sw_exit_info_2;      // 0x3A0
    uint64_t sw_scratch;          // 0x3A8
    uint8_t reserved_3b0[0x38];
    uint64_t xcr0;                // 0x3E8
    uint8_t valid_bitmap[16];     // 0x3F0
    uint64_t x87_state_gpa;       // 0x400
    uint8_t reserved_408[0x3F8];
    uint8_t shared_buffer[0x7F0]; // 0x800
    uint8_t reserved_ff0[0xA];
    uint16_t protocol_version;    // 0xFFA
    uint32_t ghcb_usage;          // 0xFFC
};
static_assert(sizeof(Ghcb) == 4096);
#define SEVEMU_GHCB_OFF(f, o) static_assert(offsetof(Ghcb, f) == (o), "Ghcb::" #f)
SEVEMU_GHCB_OFF(cpl, 0x0CB);
SEVEMU_GHCB_OFF(xss, 0x140);
SEVEMU_GHCB_OFF(dr7, 0x160);
SEVEMU_GHCB_OFF(rax, 0x1F8);
SEVEMU_GHCB_OFF(rcx, 0x308);
SEVEMU_GHCB_OFF(rdx, 0x310);
SEVEMU_GHCB_OFF(rbx, 0x318);
SEVEMU_GHCB_OFF(rsi, 0x330);
SEVEMU_GHCB_OFF(sw_exit_code, 0x390);
SEVEMU_GHCB_OFF(sw_exit_info_1, 0x398);
SEVEMU_GHCB_OFF(sw_exit_info_2, 0x3A0);
SEVEMU_GHCB_OFF(sw_scratch, 0x3A8);
SEVEMU_GHCB_OFF(xcr0, 0x3E8);
SEVEMU_GHCB_OFF(valid_bitmap, 0x3F0);
SEVEMU_GHCB_OFF(shared_buffer, 0x800);
SEVEMU_GHCB_OFF(protocol_version, 0xFFA);
SEVEMU_GHCB_OFF(ghcb_usage, 0xFFC);
#undef SEVEMU_GHCB_OFF
inline constexpr uint64_t kGhcbSharedBufferOffset = 0x800, kGhcbSharedBufferEnd = 0xFF0;
// KVM's GHCB_SCRATCH_AREA_LIMIT: a scratch area outside the GHCB is at most 16 pages.
inline constexpr uint64_t kGhcbScratchAreaLimit = 16 * 4096;

// Valid-bitmap bit of a GHCB save-area field: its offset / 8.
constexpr unsigned ghcb_valid_bit(size_t offset) { return unsigned(offset / 8); }
inline bool ghcb_is_valid(uint8_t const (&bitmap)[16], size_t offset)
{
    unsigned bit = ghcb_valid_bit(offset);
    return (bitmap[bit / 8] >> (bit % 8)) & 1;
}

} // namespace sevemu::vmm
