// sevemu — what an SEV `-kernel` launch measures, so that a guest owner can compute the
// expected launch digest without sevemu's firmware (README "What a -kernel launch measures").
//
// sevemu loads a kernel exactly as `sevemu -kernel` does without SEV, through the one loader
// entry (load_kernel_image: Multiboot, Linux bzImage or Linux vmlinux — which an SEV guest
// enters at startup_64 with the 64-bit boot protocol, not PVH), then LAUNCH_UPDATE_DATA
// encrypts and measures, in ascending guest-physical order, the ranges the loader reports it
// wrote (emulator/boot.h). For Multiboot, multiboot_written_ranges():
//   1. the page at 0x9000 (memory map at 0x9000, information structure at 0x9500, boot GDT at
//      0x9600), and
//   2. the pages from the kernel's lowest load address, rounded down, to the end of the
//      loader's buffer above the kernel (bss, module list, command lines, boot loader name,
//      modules), rounded up;
// pages in both sets are measured once. For Linux (emulator/linux_boot.h): low memory
// [0, 0xA0000) with the GDT, the zero page, the identity page tables of a vmlinux's 64-bit
// entry, and the command line; the kernel; the initrd; the 64 KiB ACPI region. The firmware's launch digest is SHA-256 over the measured
// bytes in that order (SEV-KM API 55766 §6.3: LD is extended with each update's data).
#pragma once

#include "base/result.h"
#include "emulator/machine.h"
#include "base/epyc_model.h"
#include "firmware/crypto.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sevemu::emulator {

// A measured range: page aligned, a multiple of 4 KiB (the loader's written ranges).
using MeasuredRange = GuestRange;

struct KernelLaunch {
    uint64_t memory_size { 128ull << 20 }; // -m
    std::string kernel;                    // -kernel, as typed (it is part of the command line)
    std::string initrd;                    // -initrd
    std::string append;                    // -append
    unsigned smp { 1 };                    // -smp: the Linux MADT lists one LAPIC per vCPU
    // sev-guest cbitpos (the CPU model's C-bit; sevemu refuses any other): an ELF vmlinux is
    // entered at startup_64 on identity tables with this C-bit (linux_boot.h), which are measured.
    unsigned cbitpos { cpu_model_info(CpuModel::Milan).c_bit }; // the default -cpu, EPYC-Milan
};

struct LaunchDigest {
    firmware::Sha256Digest digest;
    std::vector<MeasuredRange> ranges;
};

// The kernel as an SEV launch loads it: a scratch DRAM of the launch's size holding exactly what
// the loader wrote (raw, no key), the guest's memory map (the PC map for Multiboot, the Linux
// loader's E820 map for Linux: an SEV guest's RAM is GPA [0, -m), sev_runtime.h), and the ranges LAUNCH_UPDATE_DATA
// measures. Both kernel_launch_digest() and the SEV runtime (sev_runtime.h) start from this, so
// the pages sevemu encrypts are the pages an owner's digest covers.
struct LoadedLaunch {
    std::unique_ptr<mmu::MemoryController> scratch;
    std::vector<E820Entry> memory_map;
    LoadedKernel kernel;
    std::vector<MeasuredRange> ranges;
};
Result<LoadedLaunch, MachineError> load_kernel_launch(KernelLaunch const&);

// Loads the kernel into a scratch DRAM of the launch's size and hashes the measured pages.
Result<LaunchDigest, MachineError> kernel_launch_digest(KernelLaunch const&);

} // namespace sevemu::emulator
