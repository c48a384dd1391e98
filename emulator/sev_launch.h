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
#include "cpu/svm/vmcb.h"
#include "firmware/crypto.h"

#include <array>

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
    // SEV-ES (policy bit 2): the AP page is written and measured, and the launch ends with one
    // VMSA per vCPU (see below). The CPU model gives the vCPUs' reset RDX (CPUID 1 EAX).
    bool sev_es {};
    CpuModel model { CpuModel::Milan };
};

// --- SEV-ES: the vCPUs' registers are part of the launch. After the data, LAUNCH_UPDATE_VMSA
// measures and encrypts each vCPU's VMSA page in vCPU order (QEMU target/i386/sev.c
// sev_launch_get_measure: sev_launch_update_vmsa before LAUNCH_MEASURE; KVM's
// sev_launch_update_vmsa walks the vCPUs in order), each page being what KVM's
// sev_es_sync_vmsa builds from the registers the VMM set (vmm::sev_es_sync_vmsa): the save
// area below, the GPRs, XCR0 = 1, and with KVM_SEV_ES_INIT no SEV_FEATURES and no FPU state.
//
// The hypervisor can no longer set an AP's registers at its start-up IPI (they are encrypted),
// so sevemu does what OVMF does for QEMU: the APs start in a measured real-mode stub that reads
// the AP jump table Linux fills (arch/x86/kernel/sev.c sev_es_setup_ap_jump_table: the IP at
// word 0, the CS at word 1 of the page the AP_JUMP_TABLE NAE event's GET names) and far-jumps
// there, or parks in AP reset hold (GHCB MSR protocol 0x006) until the next SIPI while the
// table is empty. The page (inside the E820/Multiboot reserved BIOS area [0xF0000, 1 MiB)):
//   kSevEsApPageGpa + 0x00  the jump table: IP (u16), CS (u16), zero at launch
//   kSevEsApPageGpa + 0x10  the stub (kSevEsApStub), where every AP's VMSA starts:
//                           CS = kSevEsApPageGpa >> 4 (base kSevEsApPageGpa), IP = 0x10
// and the hypervisor answers the AP_JUMP_TABLE GET with kSevEsApPageGpa.
inline constexpr uint64_t kSevEsApPageGpa = 0xFE000;
inline constexpr uint16_t kSevEsApStubIp = 0x10;
// 16-bit code (assembled with GNU as, .code16):
//   00 fa                cli
//   01 2e a1 00 00       1: mov ax, cs:[0]        ; the jump table's IP ...
//   05 2e 0b 06 02 00    or ax, cs:[2]            ; ... and CS: both zero = not set yet
//   0a 74 05             jz 2f
//   0c 2e ff 2e 00 00    jmp far cs:[0]           ; to CS:IP as Linux wrote them
//   11 66 b9 30 01 01 c0 2: mov ecx, 0xC0010130  ; the GHCB MSR
//   17 66 b8 06 00 00 00 mov eax, 0x006           ; AP reset hold request
//   1d 66 31 d2          xor edx, edx
//   20 0f 30             wrmsr
//   22 f3 0f 01 d9       vmgexit                  ; back when a SIPI releases it (or spuriously)
//   26 eb d9             jmp 1b
inline constexpr uint8_t kSevEsApStub[] = { 0xfa, 0x2e, 0xa1, 0x00, 0x00, 0x2e, 0x0b, 0x06, 0x02, 0x00, 0x74, 0x05,
    0x2e, 0xff, 0x2e, 0x00, 0x00, 0x66, 0xb9, 0x30, 0x01, 0x01, 0xc0, 0x66, 0xb8, 0x06, 0x00, 0x00, 0x00, 0x66, 0x31,
    0xd2, 0x0f, 0x30, 0xf3, 0x0f, 0x01, 0xd9, 0xeb, 0xd9 };

// A vCPU's registers at launch, as the VMM sets them (KVM_SET_SREGS / KVM_SET_REGS): the VMCB
// save-area layout, and the GPRs beside it (index = x86 register number; RAX and RSP are in the
// save area).
struct VcpuLaunchRegisters {
    cpu::svm::VmcbSaveArea save {};
    std::array<uint64_t, 16> gprs {};
};
// Power-on state (APM vol 2 §14.1.3 Table 14-1, as KVM's init_vmcb writes it): real mode at
// F000:FFF0, CR0 = CD|NW|ET, EFER.SVME (which VMRUN requires), DR6/DR7 reset values, the PAT
// reset value, RDX = the processor signature (CPUID 1 EAX).
VcpuLaunchRegisters power_on_registers(CpuModel);
// The loader's entry state (emulator/boot.h) written over a save area and its GPRs, as the VMM's
// KVM_SET_SREGS/KVM_SET_REGS do: segments, descriptor tables, CPL, control registers, EFER's long-mode
// bits (SVME, which VMRUN requires, stays), RFLAGS, RIP, RSP/RAX in the save area, the others beside it.
void apply_entry_state(cpu::svm::VmcbSaveArea&, std::array<uint64_t, 16>& gprs, BootEntryState const&);
// The BSP: power-on state overlaid with the loader's entry state.
VcpuLaunchRegisters bsp_launch_registers(BootEntryState const&, CpuModel);
// An AP of an SEV-ES launch: power-on state at kSevEsApPageGpa:kSevEsApStubIp (real mode).
VcpuLaunchRegisters sev_es_ap_launch_registers(CpuModel);
// The VMSA page LAUNCH_UPDATE_VMSA measures for these registers (KVM_SEV_ES_INIT's VM).
std::array<uint8_t, 4096> sev_es_launch_vmsa(VcpuLaunchRegisters const&);

struct LaunchDigest {
    firmware::Sha256Digest digest;
    std::vector<MeasuredRange> ranges;
    unsigned vmsas {}; // SEV-ES: the VMSA pages measured after the ranges (one per vCPU)
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
    // SEV-ES: each vCPU's launch registers, BSP first (their VMSAs are measured after the ranges).
    std::vector<VcpuLaunchRegisters> sev_es_vcpus;
};
Result<LoadedLaunch, MachineError> load_kernel_launch(KernelLaunch const&);

// Loads the kernel into a scratch DRAM of the launch's size and hashes the measured pages.
Result<LaunchDigest, MachineError> kernel_launch_digest(KernelLaunch const&);

} // namespace sevemu::emulator
