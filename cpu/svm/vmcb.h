// sevemu — the VMCB (virtual machine control block) and the SEV-ES VMSA as the bytes in DRAM hold
// them (APM vol 2 §15.5, Appendix B "Layout of VMCB"; Linux arch/x86/include/asm/svm.h,
// arch/x86/include/uapi/asm/svm.h).
//
// Wire structures (STYLE.md rule 6): packed, size-asserted, every field's offset asserted, named as
// Linux arch/x86/include/asm/svm.h names them (struct vmcb_control_area, vmcb_save_area,
// sev_es_save_area), reserved fields named by their offset. These structs are never trusted: what
// a hypervisor wrote into a VMCB is checked by vmrun_consistency_check() (svm.h) before anything
// acts on it, and enums are only built from raw bytes through the decode functions below.
//
// The VMCB lives in DRAM and is read and written through the memory controller with
// KeyId::none() (the host runs without SME on its own pages, QUIRKS.md "Hypervisor layer");
// read_vmcb()/write_vmcb() are the one place that does that.
#pragma once

#include "base/addr.h"
#include "base/result.h"
#include "mmu/memory_controller.h"

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

namespace sevemu::cpu::svm {

static_assert(std::endian::native == std::endian::little, "the VMCB structs are little-endian wire images");

inline constexpr uint64_t kVmcbSize = 4096;

// ---------------------------------------------------------------------------------------------
// Intercept bits: bit index = 32 * word + bit, words at VMCB 0x000-0x017 (Linux enum
// intercept_words / INTERCEPT_*; APM vol 2 Appendix B Table B-1).
enum class Intercept : uint16_t {
    // word 0 (0x000): CRn reads 0-15, CRn writes 16-31
    CR0_READ = 0, CR3_READ = 3, CR4_READ = 4, CR8_READ = 8,
    CR0_WRITE = 16, CR3_WRITE = 19, CR4_WRITE = 20, CR8_WRITE = 24,
    // word 1 (0x004): DRn reads 32-47, DRn writes 48-63
    DR0_READ = 32, DR7_READ = 39, DR0_WRITE = 48, DR7_WRITE = 55,
    // word 2 (0x008): exception vector n = 64 + n
    EXCEPTION_OFFSET = 64,
    // word 3 (0x00C)
    INTR = 96, NMI, SMI, INIT, VINTR, SELECTIVE_CR0, STORE_IDTR, STORE_GDTR, STORE_LDTR, STORE_TR,
    LOAD_IDTR, LOAD_GDTR, LOAD_LDTR, LOAD_TR, RDTSC, RDPMC, PUSHF, POPF, CPUID, RSM, IRET, INTn, INVD,
    PAUSE, HLT, INVLPG, INVLPGA, IOIO_PROT, MSR_PROT, TASK_SWITCH, FERR_FREEZE, SHUTDOWN,
    // word 4 (0x010)
    VMRUN = 128, VMMCALL, VMLOAD, VMSAVE, STGI, CLGI, SKINIT, RDTSCP, ICEBP, WBINVD, MONITOR, MWAIT,
    MWAIT_COND, XSETBV, RDPRU, TRAP_EFER_WRITE, TRAP_CR0_WRITE /* .. TRAP_CR15_WRITE = 159 */,
    // word 5 (0x014)
    INVLPGB = 160, INVLPGB_ILLEGAL, INVPCID, MCOMMIT, TLBSYNC, BUSLOCK, IDLE_HLT,
};
inline constexpr unsigned kInterceptWords = 6;
// The EXITCODE an intercept produces: APM vol 2 Appendix C numbers the exit codes of words 0-5 in
// the same order as the intercept bits (CR reads 0x00.., exceptions 0x40.., word3 0x60..,
// word4 0x80.., word5 0xA0..), so the code is the bit index.
constexpr uint64_t exit_code_for(Intercept i) { return uint64_t(i); }

// ---------------------------------------------------------------------------------------------
// EXITCODE values (APM vol 2 Appendix C; Linux uapi/asm/svm.h SVM_EXIT_*).
namespace exitcode {
inline constexpr uint64_t SVM_EXIT_READ_CR0 = 0x000, SVM_EXIT_WRITE_CR0 = 0x010,
    SVM_EXIT_READ_DR0 = 0x020, SVM_EXIT_WRITE_DR0 = 0x030, SVM_EXIT_EXCP_BASE = 0x040,
    SVM_EXIT_INTR = 0x060, SVM_EXIT_NMI = 0x061, SVM_EXIT_SMI = 0x062, SVM_EXIT_INIT = 0x063,
    SVM_EXIT_VINTR = 0x064, SVM_EXIT_CR0_SEL_WRITE = 0x065, SVM_EXIT_IDTR_READ = 0x066,
    SVM_EXIT_GDTR_READ = 0x067, SVM_EXIT_LDTR_READ = 0x068, SVM_EXIT_TR_READ = 0x069,
    SVM_EXIT_IDTR_WRITE = 0x06A, SVM_EXIT_GDTR_WRITE = 0x06B, SVM_EXIT_LDTR_WRITE = 0x06C,
    SVM_EXIT_TR_WRITE = 0x06D, SVM_EXIT_RDTSC = 0x06E, SVM_EXIT_RDPMC = 0x06F, SVM_EXIT_PUSHF = 0x070,
    SVM_EXIT_POPF = 0x071, SVM_EXIT_CPUID = 0x072, SVM_EXIT_RSM = 0x073, SVM_EXIT_IRET = 0x074,
    SVM_EXIT_SWINT = 0x075, SVM_EXIT_INVD = 0x076, SVM_EXIT_PAUSE = 0x077, SVM_EXIT_HLT = 0x078,
    SVM_EXIT_INVLPG = 0x079, SVM_EXIT_INVLPGA = 0x07A, SVM_EXIT_IOIO = 0x07B, SVM_EXIT_MSR = 0x07C,
    SVM_EXIT_TASK_SWITCH = 0x07D, SVM_EXIT_FERR_FREEZE = 0x07E, SVM_EXIT_SHUTDOWN = 0x07F,
    SVM_EXIT_VMRUN = 0x080, SVM_EXIT_VMMCALL = 0x081, SVM_EXIT_VMLOAD = 0x082, SVM_EXIT_VMSAVE = 0x083,
    SVM_EXIT_STGI = 0x084, SVM_EXIT_CLGI = 0x085, SVM_EXIT_SKINIT = 0x086, SVM_EXIT_RDTSCP = 0x087,
    SVM_EXIT_ICEBP = 0x088, SVM_EXIT_WBINVD = 0x089, SVM_EXIT_MONITOR = 0x08A, SVM_EXIT_MWAIT = 0x08B,
    SVM_EXIT_MWAIT_COND = 0x08C, SVM_EXIT_XSETBV = 0x08D, SVM_EXIT_RDPRU = 0x08E,
    SVM_EXIT_EFER_WRITE_TRAP = 0x08F, SVM_EXIT_CR0_WRITE_TRAP = 0x090, SVM_EXIT_INVLPGB = 0x0A0,
    SVM_EXIT_INVLPGB_ILLEGAL = 0x0A1, SVM_EXIT_INVPCID = 0x0A2, SVM_EXIT_MCOMMIT = 0x0A3,
    SVM_EXIT_TLBSYNC = 0x0A4, SVM_EXIT_BUS_LOCK = 0x0A5, SVM_EXIT_IDLE_HLT = 0x0A6,
    SVM_EXIT_NPF = 0x400, SVM_EXIT_AVIC_INCOMPLETE_IPI = 0x401, SVM_EXIT_AVIC_UNACCELERATED_ACCESS = 0x402,
    SVM_EXIT_VMGEXIT = 0x403,
    VMEXIT_INVALID = ~0ull,       // -1: failed VMRUN consistency check
    VMEXIT_BUSY = ~0ull - 1,      // -2: SNP VMSA busy
    VMEXIT_IDLE_REQUIRED = ~0ull - 2,
    VMEXIT_INVALID_PMC = ~0ull - 3;
}

// TLB_CONTROL (VMCB 0x05C; APM vol 2 §15.16.1; Linux TLB_CONTROL_*).
namespace tlb_control {
inline constexpr uint8_t DO_NOTHING = 0, FLUSH_ALL_ASID = 1, FLUSH_ASID = 3, FLUSH_ASID_LOCAL = 7;
}

// VMCB 0x090 (Linux nested_ctl / SVM_NESTED_CTL_* in arch/x86/include/asm/svm.h).
namespace nested_ctl {
inline constexpr uint64_t NP_ENABLE = 1u << 0, SEV_ENABLE = 1u << 1, SEV_ES_ENABLE = 1u << 2,
                          VTE_ENABLE = 1u << 5;
}
// VMCB 0x0B8 (Linux virt_ext).
namespace virt_ext {
inline constexpr uint64_t LBR_CTL_ENABLE = 1u << 0, VIRTUAL_VMLOAD_VMSAVE_ENABLE = 1u << 1;
}
// VMCB 0x060 int_ctl and 0x068 int_state.
namespace int_ctl {
inline constexpr uint32_t V_TPR_MASK = 0x0F, V_IRQ = 1u << 8, V_GIF = 1u << 9, V_NMI_PENDING = 1u << 11,
                          V_NMI_BLOCKING = 1u << 12, V_INTR_PRIO_MASK = 0xFu << 16, V_IGN_TPR = 1u << 20,
                          V_INTR_MASKING = 1u << 24, V_GIF_ENABLE = 1u << 25, V_NMI_ENABLE = 1u << 26,
                          AVIC_ENABLE = 1u << 31;
}
namespace int_state {
inline constexpr uint32_t INTERRUPT_SHADOW = 1u << 0, GUEST_INTERRUPT_MASK = 1u << 1;
}
// VMCB clean bits (0x0C0; APM vol 2 §15.15.3).
namespace clean {
inline constexpr uint32_t INTERCEPTS = 1u << 0, IOPM = 1u << 1, ASID = 1u << 2, TPR = 1u << 3, NP = 1u << 4,
                          CRX = 1u << 5, DRX = 1u << 6, DT = 1u << 7, SEG = 1u << 8, CR2 = 1u << 9,
                          LBR = 1u << 10, AVIC = 1u << 11;
}

// ---------------------------------------------------------------------------------------------
// Event injection / EXITINTINFO (APM vol 2 §15.20).
namespace evtinj {
inline constexpr uint32_t VEC_MASK = 0xFF, TYPE_SHIFT = 8, TYPE_MASK = 7u << 8, VALID_ERR = 1u << 11,
                          VALID = 1u << 31;
}
enum class EventType : uint8_t { INTR = 0, NMI = 2, EXCEPTION = 3, SOFT_INT = 4 };

struct Event {
    uint8_t vector {};
    EventType type { EventType::INTR };
    std::optional<uint32_t> error_code;
    bool operator==(Event const&) const = default;
};
// The u32 event word and its error-code word (as EVENTINJ/EXITINTINFO hold them).
inline uint32_t encode_event(Event const& e)
{
    return evtinj::VALID | e.vector | (uint32_t(e.type) << evtinj::TYPE_SHIFT) |
           (e.error_code ? evtinj::VALID_ERR : 0);
}

// ---------------------------------------------------------------------------------------------
// Segment in VMCB packing: attrib [7:0] = descriptor bits 47:40, [11:8] = bits 55:52.
struct __attribute__((packed)) VmcbSeg {
    uint16_t selector;
    uint16_t attrib;
    uint32_t limit;
    uint64_t base;
};
static_assert(sizeof(VmcbSeg) == 16);
static_assert(offsetof(VmcbSeg, attrib) == 2 && offsetof(VmcbSeg, limit) == 4 && offsetof(VmcbSeg, base) == 8);
namespace seg_attrib {
inline constexpr uint16_t TYPE_MASK = 0xF, S = 1u << 4, DPL_SHIFT = 5, P = 1u << 7, AVL = 1u << 8,
                          L = 1u << 9, DB = 1u << 10, G = 1u << 11;
}

// VMCB control area, 0x000-0x3FF (Linux struct vmcb_control_area, arch/x86/include/asm/svm.h).
struct __attribute__((packed)) VmcbControlArea {
    uint32_t intercepts[kInterceptWords]; // 0x000 CR, DR, exceptions, word3, word4, word5
    uint8_t reserved_018[0x24];
    uint16_t pause_filter_thresh;         // 0x03C
    uint16_t pause_filter_count;          // 0x03E
    uint64_t iopm_base_pa;                // 0x040 IOPM_BASE_PA, 12 KiB
    uint64_t msrpm_base_pa;               // 0x048 MSRPM_BASE_PA, 8 KiB
    uint64_t tsc_offset;                  // 0x050
    uint32_t asid;                        // 0x058 guest ASID
    uint8_t tlb_ctl;                      // 0x05C TLB_CONTROL
    uint8_t erap_ctl;                     // 0x05D
    uint8_t reserved_05e[2];
    uint32_t int_ctl;                     // 0x060 V_TPR, V_IRQ, V_INTR_MASKING ...
    uint32_t int_vector;                  // 0x064
    uint32_t int_state;                   // 0x068 INTERRUPT_SHADOW
    uint8_t reserved_06c[4];
    uint64_t exit_code;                   // 0x070 EXITCODE
    uint64_t exit_info_1;                 // 0x078 EXITINFO1
    uint64_t exit_info_2;                 // 0x080 EXITINFO2
    uint32_t exit_int_info;               // 0x088 EXITINTINFO
    uint32_t exit_int_info_err;           // 0x08C
    uint64_t nested_ctl;                  // 0x090 NP_ENABLE, SEV_ENABLE, SEV-ES_ENABLE, VTE
    uint64_t avic_vapic_bar;              // 0x098
    uint64_t ghcb_gpa;                    // 0x0A0
    uint32_t event_inj;                   // 0x0A8 EVENTINJ
    uint32_t event_inj_err;               // 0x0AC
    uint64_t nested_cr3;                  // 0x0B0 N_CR3
    uint64_t virt_ext;                    // 0x0B8 LBR virtualization, virtual VMLOAD/VMSAVE
    uint32_t clean;                       // 0x0C0 VMCB clean bits
    uint32_t reserved_0c4;
    uint64_t next_rip;                    // 0x0C8 nRIP
    uint8_t insn_len;                     // 0x0D0
    uint8_t insn_bytes[15];               // 0x0D1
    uint64_t avic_backing_page;           // 0x0E0
    uint8_t reserved_0e8[8];
    uint64_t avic_logical_id;             // 0x0F0
    uint64_t avic_physical_id;            // 0x0F8
    uint8_t reserved_100[8];
    uint64_t vmsa_pa;                     // 0x108 VMSA pointer (SEV-ES)
    uint8_t reserved_110[16];
    uint16_t bus_lock_counter;            // 0x120
    uint8_t reserved_122[22];
    uint64_t allowed_sev_features;        // 0x138
    uint64_t guest_sev_features;          // 0x140
    uint8_t reserved_148[0x298];
    uint8_t reserved_sw[32];              // 0x3E0 for hypervisor software
};
static_assert(sizeof(VmcbControlArea) == 0x400);
#define SEVEMU_OFF(T, f, o) static_assert(offsetof(T, f) == (o), #T "::" #f)
SEVEMU_OFF(VmcbControlArea, intercepts, 0x000);
SEVEMU_OFF(VmcbControlArea, reserved_018, 0x018);
SEVEMU_OFF(VmcbControlArea, pause_filter_thresh, 0x03C);
SEVEMU_OFF(VmcbControlArea, pause_filter_count, 0x03E);
SEVEMU_OFF(VmcbControlArea, iopm_base_pa, 0x040);
SEVEMU_OFF(VmcbControlArea, msrpm_base_pa, 0x048);
SEVEMU_OFF(VmcbControlArea, tsc_offset, 0x050);
SEVEMU_OFF(VmcbControlArea, asid, 0x058);
SEVEMU_OFF(VmcbControlArea, tlb_ctl, 0x05C);
SEVEMU_OFF(VmcbControlArea, erap_ctl, 0x05D);
SEVEMU_OFF(VmcbControlArea, int_ctl, 0x060);
SEVEMU_OFF(VmcbControlArea, int_vector, 0x064);
SEVEMU_OFF(VmcbControlArea, int_state, 0x068);
SEVEMU_OFF(VmcbControlArea, exit_code, 0x070);
SEVEMU_OFF(VmcbControlArea, exit_info_1, 0x078);
SEVEMU_OFF(VmcbControlArea, exit_info_2, 0x080);
SEVEMU_OFF(VmcbControlArea, exit_int_info, 0x088);
SEVEMU_OFF(VmcbControlArea, exit_int_info_err, 0x08C);
SEVEMU_OFF(VmcbControlArea, nested_ctl, 0x090);
SEVEMU_OFF(VmcbControlArea, avic_vapic_bar, 0x098);
SEVEMU_OFF(VmcbControlArea, ghcb_gpa, 0x0A0);
SEVEMU_OFF(VmcbControlArea, event_inj, 0x0A8);
SEVEMU_OFF(VmcbControlArea, event_inj_err, 0x0AC);
SEVEMU_OFF(VmcbControlArea, nested_cr3, 0x0B0);
SEVEMU_OFF(VmcbControlArea, virt_ext, 0x0B8);
SEVEMU_OFF(VmcbControlArea, clean, 0x0C0);
SEVEMU_OFF(VmcbControlArea, next_rip, 0x0C8);
SEVEMU_OFF(VmcbControlArea, insn_len, 0x0D0);
SEVEMU_OFF(VmcbControlArea, insn_bytes, 0x0D1);
SEVEMU_OFF(VmcbControlArea, avic_backing_page, 0x0E0);
SEVEMU_OFF(VmcbControlArea, avic_logical_id, 0x0F0);
SEVEMU_OFF(VmcbControlArea, avic_physical_id, 0x0F8);
SEVEMU_OFF(VmcbControlArea, vmsa_pa, 0x108);
SEVEMU_OFF(VmcbControlArea, bus_lock_counter, 0x120);
SEVEMU_OFF(VmcbControlArea, allowed_sev_features, 0x138);
SEVEMU_OFF(VmcbControlArea, guest_sev_features, 0x140);
SEVEMU_OFF(VmcbControlArea, reserved_sw, 0x3E0);

// Legacy / SEV (non-ES) state-save area at VMCB+0x400 (Linux struct vmcb_save_area, 0x2E8 bytes;
// arch/x86/include/asm/svm.h). Offsets here are relative to the save area.
struct __attribute__((packed)) VmcbSaveArea {
    VmcbSeg es, cs, ss, ds, fs, gs, gdtr, ldtr, idtr, tr; // 0x000-0x09F
    uint8_t reserved_0a0[42];
    uint8_t vmpl;                          // 0x0CA
    uint8_t cpl;                           // 0x0CB
    uint8_t reserved_0cc[4];
    uint64_t efer;                         // 0x0D0
    uint8_t reserved_0d8[112];
    uint64_t cr4;                          // 0x148
    uint64_t cr3;                          // 0x150
    uint64_t cr0;                          // 0x158
    uint64_t dr7;                          // 0x160
    uint64_t dr6;                          // 0x168
    uint64_t rflags;                       // 0x170
    uint64_t rip;                          // 0x178
    uint8_t reserved_180[88];
    uint64_t rsp;                          // 0x1D8
    uint64_t s_cet;                        // 0x1E0
    uint64_t ssp;                          // 0x1E8
    uint64_t isst_addr;                    // 0x1F0
    uint64_t rax;                          // 0x1F8
    uint64_t star;                         // 0x200
    uint64_t lstar;                        // 0x208
    uint64_t cstar;                        // 0x210
    uint64_t sfmask;                       // 0x218
    uint64_t kernel_gs_base;               // 0x220
    uint64_t sysenter_cs;                  // 0x228
    uint64_t sysenter_esp;                 // 0x230
    uint64_t sysenter_eip;                 // 0x238
    uint64_t cr2;                          // 0x240
    uint8_t reserved_248[32];
    uint64_t g_pat;                        // 0x268
    uint64_t dbgctl;                       // 0x270
    uint64_t br_from;                      // 0x278
    uint64_t br_to;                        // 0x280
    uint64_t last_excp_from;               // 0x288
    uint64_t last_excp_to;                 // 0x290
    uint8_t reserved_298[72];
    uint64_t spec_ctrl;                    // 0x2E0
};
static_assert(sizeof(VmcbSaveArea) == 0x2E8);
SEVEMU_OFF(VmcbSaveArea, es, 0x000);
SEVEMU_OFF(VmcbSaveArea, cs, 0x010);
SEVEMU_OFF(VmcbSaveArea, ss, 0x020);
SEVEMU_OFF(VmcbSaveArea, ds, 0x030);
SEVEMU_OFF(VmcbSaveArea, fs, 0x040);
SEVEMU_OFF(VmcbSaveArea, gs, 0x050);
SEVEMU_OFF(VmcbSaveArea, gdtr, 0x060);
SEVEMU_OFF(VmcbSaveArea, ldtr, 0x070);
SEVEMU_OFF(VmcbSaveArea, idtr, 0x080);
SEVEMU_OFF(VmcbSaveArea, tr, 0x090);
SEVEMU_OFF(VmcbSaveArea, vmpl, 0x0CA);
SEVEMU_OFF(VmcbSaveArea, cpl, 0x0CB);
SEVEMU_OFF(VmcbSaveArea, efer, 0x0D0);
SEVEMU_OFF(VmcbSaveArea, cr4, 0x148);
SEVEMU_OFF(VmcbSaveArea, cr3, 0x150);
SEVEMU_OFF(VmcbSaveArea, cr0, 0x158);
SEVEMU_OFF(VmcbSaveArea, dr7, 0x160);
SEVEMU_OFF(VmcbSaveArea, dr6, 0x168);
SEVEMU_OFF(VmcbSaveArea, rflags, 0x170);
SEVEMU_OFF(VmcbSaveArea, rip, 0x178);
SEVEMU_OFF(VmcbSaveArea, rsp, 0x1D8);
SEVEMU_OFF(VmcbSaveArea, s_cet, 0x1E0);
SEVEMU_OFF(VmcbSaveArea, ssp, 0x1E8);
SEVEMU_OFF(VmcbSaveArea, isst_addr, 0x1F0);
SEVEMU_OFF(VmcbSaveArea, rax, 0x1F8);
SEVEMU_OFF(VmcbSaveArea, star, 0x200);
SEVEMU_OFF(VmcbSaveArea, lstar, 0x208);
SEVEMU_OFF(VmcbSaveArea, cstar, 0x210);
SEVEMU_OFF(VmcbSaveArea, sfmask, 0x218);
SEVEMU_OFF(VmcbSaveArea, kernel_gs_base, 0x220);
SEVEMU_OFF(VmcbSaveArea, sysenter_cs, 0x228);
SEVEMU_OFF(VmcbSaveArea, sysenter_esp, 0x230);
SEVEMU_OFF(VmcbSaveArea, sysenter_eip, 0x238);
SEVEMU_OFF(VmcbSaveArea, cr2, 0x240);
SEVEMU_OFF(VmcbSaveArea, g_pat, 0x268);
SEVEMU_OFF(VmcbSaveArea, dbgctl, 0x270);
SEVEMU_OFF(VmcbSaveArea, br_from, 0x278);
SEVEMU_OFF(VmcbSaveArea, br_to, 0x280);
SEVEMU_OFF(VmcbSaveArea, last_excp_from, 0x288);
SEVEMU_OFF(VmcbSaveArea, last_excp_to, 0x290);
SEVEMU_OFF(VmcbSaveArea, spec_ctrl, 0x2E0);

// The whole 4 KiB VMCB page (Linux struct vmcb, padded to the page).
struct __attribute__((packed)) Vmcb {
    VmcbControlArea control;               // 0x000
    VmcbSaveArea save;                     // 0x400
    uint8_t reserved_6e8[kVmcbSize - 0x400 - sizeof(VmcbSaveArea)];
};
static_assert(sizeof(Vmcb) == kVmcbSize);
SEVEMU_OFF(Vmcb, control, 0x000);
SEVEMU_OFF(Vmcb, save, 0x400);

// SEV-ES / SNP VMSA, the full 4 KiB page (Linux struct sev_es_save_area for 0x000-0x66F,
// coconut-svsm VMSA / openvmm SevVmsa for the rest). Its first 0x2E8 bytes have
// the same layout as VmcbSaveArea (asserted below), which is why the host save area at
// VM_HSAVE_PA+0x400 can be in this format for every guest kind.
struct __attribute__((packed)) Vmsa {
    VmcbSeg es, cs, ss, ds, fs, gs, gdtr, ldtr, idtr, tr; // 0x000
    uint64_t pl0_ssp, pl1_ssp, pl2_ssp, pl3_ssp;         // 0x0A0
    uint64_t u_cet;                        // 0x0C0
    uint8_t reserved_0c8[2];
    uint8_t vmpl;                          // 0x0CA
    uint8_t cpl;                           // 0x0CB
    uint8_t reserved_0cc[4];
    uint64_t efer;                         // 0x0D0
    uint8_t reserved_0d8[104];
    uint64_t xss;                          // 0x140
    uint64_t cr4;                          // 0x148
    uint64_t cr3;                          // 0x150
    uint64_t cr0;                          // 0x158
    uint64_t dr7;                          // 0x160
    uint64_t dr6;                          // 0x168
    uint64_t rflags;                       // 0x170
    uint64_t rip;                          // 0x178
    uint64_t dr0, dr1, dr2, dr3;           // 0x180
    uint64_t dr0_addr_mask, dr1_addr_mask, dr2_addr_mask, dr3_addr_mask; // 0x1A0
    uint8_t reserved_1c0[24];
    uint64_t rsp;                          // 0x1D8
    uint64_t s_cet;                        // 0x1E0
    uint64_t ssp;                          // 0x1E8
    uint64_t isst_addr;                    // 0x1F0
    uint64_t rax;                          // 0x1F8
    uint64_t star, lstar, cstar, sfmask, kernel_gs_base; // 0x200
    uint64_t sysenter_cs, sysenter_esp, sysenter_eip;    // 0x228
    uint64_t cr2;                          // 0x240
    uint8_t reserved_248[32];
    uint64_t g_pat;                        // 0x268
    uint64_t dbgctl, br_from, br_to, last_excp_from, last_excp_to; // 0x270
    uint8_t reserved_298[72];
    uint64_t spec_ctrl;                    // 0x2E0
    uint32_t pkru;                         // 0x2E8
    uint32_t tsc_aux;                      // 0x2EC
    uint64_t tsc_scale;                    // 0x2F0
    uint64_t tsc_offset;                   // 0x2F8
    uint64_t reg_prot_nonce;               // 0x300
    uint64_t rcx, rdx, rbx;                // 0x308
    uint64_t reserved_320;                 // RSP is at 0x1D8
    uint64_t rbp, rsi, rdi;                // 0x328
    uint64_t r8, r9, r10, r11, r12, r13, r14, r15; // 0x340
    uint8_t reserved_380[16];
    uint64_t guest_exit_info_1;            // 0x390
    uint64_t guest_exit_info_2;            // 0x398
    uint64_t guest_exit_int_info;          // 0x3A0
    uint64_t guest_nrip;                   // 0x3A8
    uint64_t sev_features;                 // 0x3B0
    uint64_t vintr_ctrl;                   // 0x3B8
    uint64_t guest_exit_code;              // 0x3C0
    uint64_t virtual_tom;                  // 0x3C8
    uint64_t tlb_id;                       // 0x3D0
    uint64_t pcpu_id;                      // 0x3D8
    uint64_t event_inj;                    // 0x3E0 64-bit form
    uint64_t xcr0;                         // 0x3E8
    uint8_t reserved_3f0[16];
    uint64_t x87_dp;                       // 0x400
    uint32_t mxcsr;                        // 0x408
    uint16_t x87_ftw, x87_fsw, x87_fcw, x87_fop, x87_ds, x87_cs; // 0x40C
    uint64_t x87_rip;                      // 0x418
    uint8_t fpreg_x87[80];                 // 0x420
    uint8_t fpreg_xmm[256];                // 0x470
    uint8_t fpreg_ymm[256];                // 0x570
    uint8_t lbr_stack[256];                // 0x670
    uint64_t lbr_select;                   // 0x770
    uint64_t ibs_fetch_ctl, ibs_fetch_linaddr, ibs_op_ctl, ibs_op_rip, ibs_op_data, ibs_op_data2,
        ibs_op_data3, ibs_dc_linaddr, bp_ibstgt_rip, ic_ibs_extd_ctl; // 0x778
    uint8_t reserved_7c8[kVmcbSize - 0x7C8];
};
static_assert(sizeof(Vmsa) == 4096);
SEVEMU_OFF(Vmsa, pl0_ssp, 0x0A0);
SEVEMU_OFF(Vmsa, u_cet, 0x0C0);
SEVEMU_OFF(Vmsa, vmpl, 0x0CA);
SEVEMU_OFF(Vmsa, cpl, 0x0CB);
SEVEMU_OFF(Vmsa, efer, 0x0D0);
SEVEMU_OFF(Vmsa, xss, 0x140);
SEVEMU_OFF(Vmsa, cr4, 0x148);
SEVEMU_OFF(Vmsa, cr3, 0x150);
SEVEMU_OFF(Vmsa, cr0, 0x158);
SEVEMU_OFF(Vmsa, dr7, 0x160);
SEVEMU_OFF(Vmsa, dr6, 0x168);
SEVEMU_OFF(Vmsa, rflags, 0x170);
SEVEMU_OFF(Vmsa, rip, 0x178);
SEVEMU_OFF(Vmsa, dr0, 0x180);
SEVEMU_OFF(Vmsa, dr0_addr_mask, 0x1A0);
SEVEMU_OFF(Vmsa, rsp, 0x1D8);
SEVEMU_OFF(Vmsa, rax, 0x1F8);
SEVEMU_OFF(Vmsa, star, 0x200);
SEVEMU_OFF(Vmsa, sysenter_eip, 0x238);
SEVEMU_OFF(Vmsa, cr2, 0x240);
SEVEMU_OFF(Vmsa, g_pat, 0x268);
SEVEMU_OFF(Vmsa, dbgctl, 0x270);
SEVEMU_OFF(Vmsa, last_excp_to, 0x290);
SEVEMU_OFF(Vmsa, spec_ctrl, 0x2E0);
SEVEMU_OFF(Vmsa, pkru, 0x2E8);
SEVEMU_OFF(Vmsa, tsc_aux, 0x2EC);
SEVEMU_OFF(Vmsa, tsc_scale, 0x2F0);
SEVEMU_OFF(Vmsa, reg_prot_nonce, 0x300);
SEVEMU_OFF(Vmsa, rcx, 0x308);
SEVEMU_OFF(Vmsa, rbx, 0x318);
SEVEMU_OFF(Vmsa, rbp, 0x328);
SEVEMU_OFF(Vmsa, rdi, 0x338);
SEVEMU_OFF(Vmsa, r8, 0x340);
SEVEMU_OFF(Vmsa, r15, 0x378);
SEVEMU_OFF(Vmsa, guest_exit_info_1, 0x390);
SEVEMU_OFF(Vmsa, guest_exit_int_info, 0x3A0);
SEVEMU_OFF(Vmsa, guest_nrip, 0x3A8);
SEVEMU_OFF(Vmsa, sev_features, 0x3B0);
SEVEMU_OFF(Vmsa, vintr_ctrl, 0x3B8);
SEVEMU_OFF(Vmsa, guest_exit_code, 0x3C0);
SEVEMU_OFF(Vmsa, virtual_tom, 0x3C8);
SEVEMU_OFF(Vmsa, pcpu_id, 0x3D8);
SEVEMU_OFF(Vmsa, event_inj, 0x3E0);
SEVEMU_OFF(Vmsa, xcr0, 0x3E8);
SEVEMU_OFF(Vmsa, x87_dp, 0x400);
SEVEMU_OFF(Vmsa, mxcsr, 0x408);
SEVEMU_OFF(Vmsa, x87_ftw, 0x40C);
SEVEMU_OFF(Vmsa, x87_fcw, 0x410);
SEVEMU_OFF(Vmsa, x87_cs, 0x416);
SEVEMU_OFF(Vmsa, x87_rip, 0x418);
SEVEMU_OFF(Vmsa, fpreg_x87, 0x420);
SEVEMU_OFF(Vmsa, fpreg_xmm, 0x470);
SEVEMU_OFF(Vmsa, fpreg_ymm, 0x570);
SEVEMU_OFF(Vmsa, lbr_stack, 0x670);
SEVEMU_OFF(Vmsa, lbr_select, 0x770);
SEVEMU_OFF(Vmsa, ibs_fetch_ctl, 0x778);
SEVEMU_OFF(Vmsa, ic_ibs_extd_ctl, 0x7C0);
// The shared prefix with the legacy save area.
static_assert(offsetof(Vmsa, efer) == offsetof(VmcbSaveArea, efer) && offsetof(Vmsa, rip) == offsetof(VmcbSaveArea, rip) &&
              offsetof(Vmsa, rsp) == offsetof(VmcbSaveArea, rsp) && offsetof(Vmsa, rax) == offsetof(VmcbSaveArea, rax) &&
              offsetof(Vmsa, cr2) == offsetof(VmcbSaveArea, cr2) && offsetof(Vmsa, g_pat) == offsetof(VmcbSaveArea, g_pat) &&
              offsetof(Vmsa, spec_ctrl) == offsetof(VmcbSaveArea, spec_ctrl));
#undef SEVEMU_OFF

// VMSA VINTR_CTRL (0x3B8) bit 63: BUSY (SNP; coconut-svsm cpuarch/src/vmsa.rs).
inline constexpr uint64_t kVmsaBusy = 1ull << 63;

// ---------------------------------------------------------------------------------------------
// Parsing from / serialising to the page bytes. Any byte pattern is a valid image: nothing here
// interprets a field; checks come later (vmrun_consistency_check).
Vmcb vmcb_from_bytes(std::span<uint8_t const, kVmcbSize>);
std::array<uint8_t, kVmcbSize> vmcb_to_bytes(Vmcb const&);
Vmsa vmsa_from_bytes(std::span<uint8_t const, kVmcbSize>);
std::array<uint8_t, kVmcbSize> vmsa_to_bytes(Vmsa const&);

// The VMCB page in DRAM, read/written with KeyId::none() (or the host key when an SME host put
// the C-bit in rAX, as Linux's __sme_set(vmcb_pa) does).
Result<Vmcb, mmu::MemError> read_vmcb(mmu::MemoryController&, Spa, mmu::KeyId = mmu::KeyId::none());
Result<void, mmu::MemError> write_vmcb(mmu::MemoryController&, Spa, Vmcb const&, mmu::KeyId = mmu::KeyId::none());
// A VMSA page with the key it is encrypted with (the guest's slot for SEV-ES).
Result<Vmsa, mmu::MemError> read_vmsa(mmu::MemoryController&, Spa, mmu::KeyId);
Result<void, mmu::MemError> write_vmsa(mmu::MemoryController&, Spa, mmu::KeyId, Vmsa const&);

// The world switch's own accesses: only the bytes the processor reads or writes, into and out
// of the caller's structure (no 4 KiB page image per access, no copy of it on return; perf: the
// page-sized copies were most of an SEV guest's VMRUN/#VMEXIT round trip). Bytes outside a range
// are neither read into `out` nor written to DRAM, so the reserved rest of a VMCB page and the
// VMSA fields sevemu does not model keep whatever the page holds.
struct VmcbRange {
    uint64_t offset, length;
};
// VMRUN reads the control area through GUEST_SEV_FEATURES (beyond it: reserved, and the
// hypervisor's software area at 0x3E0) and, except for SEV-ES, the legacy save area.
inline constexpr VmcbRange kVmcbControlUsed { 0x000, offsetof(VmcbControlArea, reserved_148) };
inline constexpr VmcbRange kVmcbSaveArea { 0x400, sizeof(VmcbSaveArea) };
// #VMEXIT writes control fields from INT_CTL to the decode-assist bytes (V_TPR/V_IRQ,
// INT_STATE, EXITCODE..EXITINTINFO, the GHCB GPA, EVENTINJ.V, nRIP, the instruction bytes) and,
// except for SEV-ES, the save area from ES to G_PAT (APM vol 2 §15.6).
inline constexpr VmcbRange kVmcbExitControl { offsetof(VmcbControlArea, int_ctl),
    offsetof(VmcbControlArea, avic_backing_page) - offsetof(VmcbControlArea, int_ctl) };
inline constexpr VmcbRange kVmcbExitSave { 0x400, offsetof(VmcbSaveArea, dbgctl) };
// VMLOAD / VMSAVE: FS, GS, GDTR (unused), LDTR, IDTR (unused), TR, then STAR..SYSENTER_EIP
// (APM vol 2 §15.5.2): the save area from FS to SYSENTER_EIP.
inline constexpr VmcbRange kVmcbVmloadState { 0x400 + offsetof(VmcbSaveArea, fs),
    offsetof(VmcbSaveArea, cr2) - offsetof(VmcbSaveArea, fs) };
static_assert(kVmcbExitControl.offset == 0x060 && kVmcbExitControl.length == 0x080);
static_assert(kVmcbExitSave.length == 0x270 && kVmcbVmloadState.offset == 0x440 && kVmcbVmloadState.length == 0x200);
Result<void, mmu::MemError> read_vmcb_range(mmu::MemoryController&, Spa, mmu::KeyId, VmcbRange, Vmcb& out);
Result<void, mmu::MemError> write_vmcb_range(mmu::MemoryController&, Spa, mmu::KeyId, VmcbRange, Vmcb const&);
// The VMSA from 0x000 to the end of the XMM registers (0x56F): what VMRUN loads and #VMEXIT
// stores for SEV-ES (the YMM halves, LBR stack and IBS state are not modelled, QUIRKS.md).
inline constexpr uint64_t kVmsaUsedBytes = 0x570;
static_assert(offsetof(Vmsa, fpreg_xmm) + sizeof(Vmsa::fpreg_xmm) == kVmsaUsedBytes);
Result<void, mmu::MemError> read_vmsa_used(mmu::MemoryController&, Spa, mmu::KeyId, Vmsa& out);
Result<void, mmu::MemError> write_vmsa_used(mmu::MemoryController&, Spa, mmu::KeyId, Vmsa const&);

} // namespace sevemu::cpu::svm
