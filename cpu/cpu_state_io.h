// sevemu — a CPU's state in a snapshot section (base/state_stream.h), section version 2.
//
// Payload layout, version 2 (version 1 had no NMI fields) (StateWriter encoding: little-endian, booleans one byte 0/1), in
// CpuState's order (cpu/state.h):
//   16 x u64   GPRs RAX..R15
//   u64 RIP, u64 RFLAGS
//   8 segments ES CS SS DS FS GS LDTR TR, each: u16 selector, u16 attr (VMCB packing), u32 limit,
//              u64 base
//   GDTR, IDTR: u64 base, u16 limit
//   u64 CR0 CR2 CR3 CR4 CR8 EFER, DR0..DR3, DR6, DR7, XCR0
//   16 x (u64 low, u64 high)  XMM0..15
//   u32 MXCSR, u64 TSC
//   MSRs: u64 star lstar cstar sfmask kernel_gs_base sysenter_cs sysenter_esp sysenter_eip
//         tsc_aux apic_base pat mtrr_def_type, 16 x u64 mtrr_var, 11 x u64 mtrr_fix, u64 syscfg
//         hwcr vm_cr vm_hsave_pa sev_status tsc_ratio misc_enable
//   x87: 8 x 10 bytes R0..R7 (80-bit format), u16 FCW, u16 FSW, u8 abridged tag
//   bool halted, bool interrupt shadow, bool GIF, bool pending shutdown, bool NMI pending,
//   bool NMI blocked, u64 instructions
//   bool in SVM guest mode; if so: u64 vmcb, u32 vmcb key, u64 hsave, u32 hsave key,
//        0x400 bytes control area, u32 asid, bool np sev sev_es vte, u64 vmsa, u64 n_cr3,
//        bool npt_nxe npt_sme, u8 npt_c_bit npt_phys_bits, u8 tlb_flush, u32 event_inj,
//        u32 event_inj_err, u64 host_pat, bool host_if
// and nothing after it.
#pragma once

#include "base/state_stream.h"
#include "cpu/state.h"

#include <cstdint>

namespace sevemu::cpu {

inline constexpr uint32_t kCpuStateVersion = 2;

void save_cpu_state(StateWriter&, CpuState const&);
// Reads a whole version-2 payload into a local CpuState, checks it (the checks, each with the
// manual's section, are in cpu_state_io.cpp) and only then writes `out`; on any failure the
// reader holds the message (StateReader::finish()) and `out` is untouched. The payload must end
// with the state: trailing bytes are a failure too.
void load_cpu_state(StateReader&, CpuState& out);

// The same for a parsed section: checks its version first.
Result<CpuState, StateError> load_cpu_section(SnapshotSection const&);

// The check alone (what load_cpu_state() applies after reading): the first problem, or empty.
std::string check_cpu_state(CpuState const&);

} // namespace sevemu::cpu
