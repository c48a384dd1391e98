// sevemu — the architectural state of one x86-64 logical processor, as the outside world
// (Machine, tests, snapshots: cpu/cpu_state_io.h writes it down) reads and writes it: registers,
// x87/SSE, MSRs, the run state (HLT, interrupt shadow, GIF) and SVM guest mode — everything a
// restored CPU needs to continue exactly; what the interpreter derives from it (CPL, decode mode,
// TLBs, decoded code) is not here. Hidden segment parts are kept
// in the VMCB "attrib" packing (APM vol 2 §15.5.1, Table B-2: type[3:0] S[4] DPL[6:5] P[7]
// AVL[8] L[9] DB[10] G[11]) so SVM save/restore is a field copy.
#pragma once

#include <array>
#include <cstdint>
#include <optional>

namespace sevemu::cpu {

enum Gpr : uint8_t { RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8, R9, R10, R11, R12, R13, R14, R15 };
enum SegReg : uint8_t { ES, CS, SS, DS, FS, GS };

struct Segment {
    uint16_t selector {};
    uint16_t attr {};   // VMCB packing, see above
    uint32_t limit {};  // byte-granular (already scaled by G)
    uint64_t base {};
    bool operator==(Segment const&) const = default;

    bool present() const { return attr & 0x80; }
    uint8_t dpl() const { return (attr >> 5) & 3; }
    bool code() const { return (attr & 0x18) == 0x18; }
    bool long_mode() const { return attr & 0x200; }
    bool big() const { return attr & 0x400; }
};

struct DescriptorTable {
    uint64_t base {};
    uint16_t limit {};
    bool operator==(DescriptorTable const&) const = default;
};

namespace rflags {
inline constexpr uint64_t CF = 1u << 0, PF = 1u << 2, AF = 1u << 4, ZF = 1u << 6, SF = 1u << 7,
                          TF = 1u << 8, IF = 1u << 9, DF = 1u << 10, OF = 1u << 11, IOPL = 3u << 12,
                          NT = 1u << 14, RF = 1u << 16, VM = 1u << 17, AC = 1u << 18, VIF = 1u << 19,
                          VIP = 1u << 20, ID = 1u << 21;
inline constexpr uint64_t kArith = CF | PF | AF | ZF | SF | OF;
}

namespace cr0 {
inline constexpr uint64_t PE = 1u << 0, MP = 1u << 1, EM = 1u << 2, TS = 1u << 3, ET = 1u << 4,
                          NE = 1u << 5, WP = 1u << 16, AM = 1u << 18, NW = 1u << 29, CD = 1u << 30,
                          PG = 1u << 31;
}
namespace cr4 {
inline constexpr uint64_t VME = 1u << 0, PVI = 1u << 1, TSD = 1u << 2, DE = 1u << 3, PSE = 1u << 4,
                          PAE = 1u << 5, MCE = 1u << 6, PGE = 1u << 7, PCE = 1u << 8, OSFXSR = 1u << 9,
                          OSXMMEXCPT = 1u << 10, UMIP = 1u << 11, FSGSBASE = 1u << 16, PCIDE = 1u << 17,
                          OSXSAVE = 1u << 18, SMEP = 1u << 20, SMAP = 1u << 21;
}
namespace efer {
inline constexpr uint64_t SCE = 1u << 0, LME = 1u << 8, LMA = 1u << 10, NXE = 1u << 11,
                          SVME = 1u << 12, LMSLE = 1u << 13, FFXSR = 1u << 14, TCE = 1u << 15;
}

// The MSRs the CPU model implements (cpu_model.h lists them with their numbers).
struct MsrState {
    uint64_t star {}, lstar {}, cstar {}, sfmask {};
    uint64_t kernel_gs_base {};
    uint64_t sysenter_cs {}, sysenter_esp {}, sysenter_eip {};
    uint64_t tsc_aux {};
    uint64_t apic_base { 0xFEE00000ull | (1u << 11) | (1u << 8) }; // enabled, BSP
    uint64_t pat { 0x0007040600070406ull };
    uint64_t mtrr_def_type {};
    std::array<uint64_t, 16> mtrr_var {};   // PhysBase0/PhysMask0 .. 7
    std::array<uint64_t, 11> mtrr_fix {};   // 250, 258, 259, 268..26F
    uint64_t syscfg {};
    uint64_t hwcr {};
    uint64_t vm_cr {};
    uint64_t vm_hsave_pa {};
    uint64_t sev_status {};
    uint64_t tsc_ratio { 0x1'0000'0000ull };
    uint64_t misc_enable {};
    bool operator==(MsrState const&) const = default;
};

namespace syscfg {
inline constexpr uint64_t MtrrFixDramEn = 1u << 18, MtrrFixDramModEn = 1u << 19,
                          MtrrVarDramEn = 1u << 20, MemEncryptionModEn = 1u << 23,
                          SNPEn = 1u << 24, VMPLEn = 1u << 25;
}

// The x87 FPU (APM vol 1 §6). Registers in physical order R0..R7 (ST(i) is R[(TOP + i) & 7],
// TOP = FSW[13:11]), each the 10 bytes of the 80-bit extended format as memory holds them
// (significand bits 63:0, then sign and exponent: APM vol 1 §6.2.2, the FLD m80 layout). The tag is
// FXSAVE's abridged one (APM vol 2 §11.4.4.1, FXSAVE: bit i = 1 when R[i] holds a value): the
// full tag word's valid/zero/special classes are a function of the registers (FSTENV computes
// them), so carrying them would add state that could contradict the registers.
// FOP, FIP and FDP are not kept by the interpreter (FXSAVE stores them as 0, QUIRKS.md).
struct X87State {
    std::array<std::array<uint8_t, 10>, 8> fpr {};
    uint16_t fcw { 0x37F }; // FINIT's value (the power-on value is 0x0040; Cpu::reset() sets it)
    uint16_t fsw {};
    uint8_t ftw {};         // abridged tag, 0 = all empty
    bool operator==(X87State const&) const = default;
};

// SVM guest mode (APM vol 2 §15): what VMRUN established and #VMEXIT will use, live while the
// guest of a hypervisor that runs *inside* the emulated machine executes (cpu/svm/svm.h,
// svm::GuestMode, field for field). Cpu::host_vmrun() (the built-in hypervisor) never leaves a
// guest mode behind between calls, so this is only ever set for a guest-run hypervisor.
struct SvmGuestState {
    static constexpr uint32_t kNoKey = 0xFFFFFFFF; // mmu::KeyId::none()
    uint64_t vmcb {};               // SPA of the VMCB (rAX at VMRUN, C-bit stripped)
    uint32_t vmcb_key { kNoKey };   // key slot of its accesses
    uint64_t hsave {};              // VM_HSAVE_PA at VMRUN (C-bit stripped)
    uint32_t hsave_key { kNoKey };
    std::array<uint8_t, 0x400> control {}; // VmcbControlArea as VMRUN read it (V_TPR/V_IRQ kept current)
    uint32_t asid {};
    bool np {}, sev {}, sev_es {}, vte {};
    uint64_t vmsa {};               // SEV-ES
    uint64_t n_cr3 {};              // svm::NptContext, valid when np
    bool npt_nxe {}, npt_sme {};
    uint8_t npt_c_bit { 51 }, npt_phys_bits { 43 };
    uint8_t tlb_flush {};           // svm::TlbFlush
    uint32_t event_inj {};          // EVENTINJ as VMRUN decoded it (V bit clear: none), §15.20
    uint32_t event_inj_err {};
    uint64_t host_pat {};
    bool host_if {};
    bool operator==(SvmGuestState const&) const = default;
};

struct CpuState {
    std::array<uint64_t, 16> gpr {};
    uint64_t rip {};
    uint64_t rflags { 2 };
    std::array<Segment, 6> seg {};  // indexed by SegReg
    Segment ldtr {}, tr {};
    DescriptorTable gdtr {}, idtr {};
    uint64_t cr0 {}, cr2 {}, cr3 {}, cr4 {}, cr8 {};
    uint64_t efer {};
    std::array<uint64_t, 4> dr {};
    uint64_t dr6 { 0xFFFF0FF0 }, dr7 { 0x400 };
    uint64_t xcr0 { 1 };
    std::array<std::array<uint64_t, 2>, 16> xmm {};
    uint32_t mxcsr { 0x1F80 };
    uint64_t tsc {};
    MsrState msr {};
    X87State x87 {};

    // Run state: what decides the next instruction besides the registers.
    bool halted {};                 // HLT executed, no interrupt taken since
    bool interrupt_shadow {};       // the instruction before was STI or MOV SS (APM vol 2 §8.1.3)
    bool gif { true };              // global interrupt flag (APM vol 2 §15.17)
    bool pending_shutdown {};       // a triple fault happened (run() keeps returning Shutdown)
    bool nmi_pending {};            // an NMI is latched on the NMI input (Cpu::inject_nmi)
    bool nmi_blocked {};            // an NMI was delivered and no IRET since (APM vol 2 §8.2.3)
    // Retired instructions since the CPU was built: the TSC's source (TSC = instructions +
    // an offset, so set_state() with `tsc` continues RDTSC exactly) and CpuStats::instructions,
    // which set_state() sets to it. A state built from scratch restarts the count at 0; keep it
    // by starting from state().
    uint64_t instructions {};
    std::optional<SvmGuestState> svm_guest; // set between VMRUN and #VMEXIT

    bool operator==(CpuState const&) const = default;
};

} // namespace sevemu::cpu
