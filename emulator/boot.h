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
}

} // namespace sevemu::emulator
