// sevemu — the boot-protocol layer: what a kernel loader hands the machine, whatever the
// protocol (Multiboot v1 now; Linux bzImage and PVH next; OVMF later).
//
// A loader writes the image and its boot structures into guest RAM through the memory
// controller and returns (1) the guest-physical ranges it wrote, page-granular, ascending and
// merged — exactly what an SEV launch encrypts and measures with LAUNCH_UPDATE_DATA (README
// "What a -kernel launch measures") — and (2) the vCPU state at the kernel's entry point. The
// Machine puts that state in its interpreter CPU (plain guests) or in the vCPU's VMCB (SEV
// guests, through the hypervisor): one description, two consumers, no protocol types in either.
#pragma once

#include "cpu/state.h"

#include <array>
#include <cstdint>
#include <vector>

namespace sevemu::emulator {

// A range of guest-physical memory: page aligned, a whole number of 4 KiB pages.
struct GuestRange {
    uint64_t gpa;
    uint64_t size;
    bool operator==(GuestRange const&) const = default;
};

// The architectural state at the kernel's entry point; everything not named here is the
// processor's reset state (APM vol 2 §14.1.3).
struct BootEntryState {
    std::array<uint64_t, 16> gpr {}; // RSP included; by cpu::Gpr index
    uint64_t rip {};
    uint64_t rflags { 2 };
    std::array<cpu::Segment, 6> seg {}; // by cpu::SegReg index
    cpu::DescriptorTable gdtr {}, idtr {};
    uint64_t cr0 {}, cr3 {}, cr4 {};
    uint64_t efer {}; // LME|LMA for an entry in long mode (Linux's 64-bit boot protocol)
};

// Applies an entry state to a CPU state that is at reset.
inline void apply_boot_entry(BootEntryState const& e, cpu::CpuState& st)
{
    st.gpr = e.gpr;
    st.rip = e.rip;
    st.rflags = e.rflags;
    st.seg = e.seg;
    st.gdtr = e.gdtr;
    st.idtr = e.idtr;
    st.cr0 = e.cr0;
    st.cr3 = e.cr3;
    st.cr4 = e.cr4;
    st.efer = e.efer;
}

// The MTRRs as a PC's firmware leaves them before it starts an OS (SeaBIOS src/fw/mtrr.c
// mtrr_setup does this on every CPU; OVMF likewise): MTRRs and fixed ranges enabled, write-back
// by default (MTRRdefType = E | FE | WB, APM vol 2 §7.7.1), the legacy VGA window
// 0xA0000-0xBFFFF uncacheable, the rest below 1 MiB write-back, and one variable range making
// the 1 GiB below 4 GiB (the PCI hole) uncacheable. sevemu is the firmware of a Linux guest, so
// its loader does it: Linux 6.1 skips PAT when the MTRRs are disabled ("MTRRs disabled, skipping
// PAT initialization too", arch/x86/kernel/cpu/mtrr/mtrr.c), and an SEV guest then cannot map
// memory write-protected (early_memremap_encrypted_wp fails: kernel BUG in __sme_early_enc_dec).
inline void apply_firmware_mtrrs(cpu::CpuState& st, unsigned phys_addr_bits)
{
    constexpr uint64_t kWb = 0x0606060606060606ull, kUc = 0;
    st.msr.mtrr_def_type = (1u << 11) | (1u << 10) | 6;
    // MTRRfix64K_00000, MTRRfix16K_80000, MTRRfix16K_A0000, MTRRfix4K_C0000..F8000 (250, 258,
    // 259, 268..26F: the order of CpuState::msr.mtrr_fix).
    st.msr.mtrr_fix = { kWb, kWb, kUc, kWb, kWb, kWb, kWb, kWb, kWb, kWb, kWb };
    uint64_t phys_mask = (1ull << phys_addr_bits) - 1;
    st.msr.mtrr_var = {};
    st.msr.mtrr_var[0] = 0xC000'0000ull;                                // PhysBase0, type UC
    st.msr.mtrr_var[1] = (phys_mask & ~(0x4000'0000ull - 1)) | (1u << 11); // PhysMask0, valid
}

} // namespace sevemu::emulator
