// sevemu — the Linux loaders behind `-kernel`: a bzImage through the 32-bit boot protocol
// (Linux Documentation/x86/boot.rst, protocol 2.12 or later) and an ELF vmlinux through PVH
// (the Xen PVH entry, XEN_ELFNOTE_PHYS32_ENTRY; Xen docs/misc/pvh.pandoc, Linux
// arch/x86/platform/pvh/), both with sevemu's ACPI tables (emulator/acpi_tables.h), through the
// boot-protocol layer (emulator/boot.h): each returns the guest-physical ranges it wrote (what an
// SEV launch encrypts and measures), the entry state, and the E820 map it reported.
//
// Free of Machine types, so `sevemu-owner measurement digest` can run the same load into a
// scratch MemoryController and measure the same pages.
//
// An SEV guest given an ELF vmlinux is not entered through PVH: Linux's PVH entry
// (arch/x86/platform/pvh/head.S) turns paging on with the kernel's static page tables, which carry
// no C-bit, so its first data read of loader-written (encrypted) memory sees ciphertext. The same
// file's ELF entry (e_entry, physical) is startup_64 (arch/x86/kernel/head_64.S), which takes the
// 64-bit boot protocol (boot.rst "64-bit BOOT PROTOCOL") and handles SEV itself (sme_enable reads
// SEV_STATUS, __startup_64 builds its tables with the C-bit, sev_verify_cbit): sevemu enters an SEV
// guest's vmlinux there, in long mode on identity-mapped tables with the C-bit, as the bzImage's
// own decompressor does (arch/x86/boot/compressed/head_64.S) and as Firecracker and
// cloud-hypervisor boot a vmlinux. Plain guests keep PVH: it is what QEMU does with a vmlinux.
//
// Guest-physical layout (all protocols; the facts behind it: shared/spec/linux-boot.md):
//   0x00000–0x9FFFF  zeroed and measured whole (uninitialised SEV memory reads as garbage; the
//                    kernel reads the BDA at 0x40E/0x413), holding:
//     0x06000        the boot GDT: null, null, 0x10 flat 4 GiB code, 0x18 flat 4 GiB data
//     0x07000        bzImage and SEV vmlinux: the zero page (struct boot_params);
//                    PVH: hvm_start_info (0x7000), its module list (0x7040), memory map (0x7080)
//     0x09000        SEV vmlinux (64-bit entry) only: the identity map of [0, 4 GiB) in 2 MiB pages,
//                    every entry with the C-bit: PML4 0x9000, PDPT 0xA000, PDs 0xB000-0xEFFF
//                    (inside the E820 RAM below 640 KiB, which Linux 6.1 reserves whole —
//                    arch/x86/realmode/init.c reserve_real_mode — and which head_64.S stops using
//                    when it loads early_top_pgt, before any allocation)
//     0x20000        the command line (QEMU's address, hw/i386/x86.c)
//   0x100000         bzImage: the protected-mode code ("code32_start"); ELF: PT_LOAD at p_paddr
//   high             the initrd: page aligned, ending below the ACPI region and the protocol's
//                    limit (initrd_addr_max), as QEMU's x86_load_linux places it
//   low_top - 64 KiB the ACPI tables (E820 type 3), low_top = RAM top below low_mem_top
//
// E820 map: [0, 0x9FC00) RAM; [0x9FC00, 0x100000) reserved; [1 MiB, ACPI) RAM; the ACPI region
// (type 3); RAM above 4 GiB when there is more than low_mem_top.
#pragma once

#include "base/result.h"
#include "emulator/acpi_tables.h"
#include "emulator/boot.h"
#include "emulator/multiboot.h" // LoadError, E820Entry

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace sevemu::mmu {
class MemoryController;
}

namespace sevemu::emulator {

inline constexpr uint32_t kE820Acpi = 3; // ACPI 6.4 §15 Table 15.312 AddressRangeACPI

inline constexpr uint64_t kLinuxLowEnd = 0xA0000;        // zeroed, measured low memory [0, 640 KiB)
inline constexpr uint64_t kLinuxLowRamEnd = 0x9FC00;     // E820 RAM below 1 MiB (Firecracker, QEMU)
inline constexpr uint64_t kLinuxGdtAddr = 0x6000;
inline constexpr uint16_t kLinuxGdtLimit = 4 * 8 - 1;
inline constexpr uint64_t kLinuxZeroPageAddr = 0x7000;
inline constexpr uint64_t kPvhStartInfoAddr = 0x7000;
inline constexpr uint64_t kPvhModlistAddr = 0x7040;
inline constexpr uint64_t kPvhMemmapAddr = 0x7080;
inline constexpr uint64_t kLinuxPml4Addr = 0x9000;  // SEV vmlinux: the entry's identity map
inline constexpr uint64_t kLinuxPdptAddr = 0xA000;
inline constexpr uint64_t kLinuxPdAddr = 0xB000;    // 4 pages: [0, 4 GiB) in 2 MiB pages
inline constexpr uint16_t kLinuxVmlinuxVersion = 0x020F; // the boot protocol the vmlinux's zero page claims
inline constexpr uint64_t kLinuxCmdlineAddr = 0x20000;
inline constexpr uint64_t kLinuxKernelAddr = 0x100000;
inline constexpr uint16_t kBootCs = 0x10, kBootDs = 0x18; // arch/x86/include/asm/segment.h __BOOT_CS/__BOOT_DS
inline constexpr uint8_t kLinuxLoaderType = 0xFF;         // boot.rst: "no assigned id" (QEMU's is 0xB0)
inline constexpr uint32_t kPvhStartMagic = 0x336EC578;    // Xen include/public/arch-x86/hvm/start_info.h

// The setup header fields sevemu reads (boot.rst "THE REAL-MODE KERNEL HEADER";
// arch/x86/include/uapi/asm/bootparam.h struct setup_header).
struct BzImageHeader {
    uint8_t setup_sects;      // 0x1F1 (0 means 4)
    uint16_t version;         // 0x206
    uint8_t loadflags;        // 0x211
    uint32_t code32_start;    // 0x214
    uint32_t initrd_addr_max; // 0x22C
    uint32_t kernel_alignment; // 0x230
    uint8_t relocatable;      // 0x234
    uint8_t min_alignment;    // 0x235
    uint16_t xloadflags;      // 0x236
    uint32_t cmdline_size;    // 0x238
    uint64_t pref_address;    // 0x258
    uint32_t init_size;       // 0x260
    uint32_t header_end;      // 0x202 + byte[0x201]: the bytes copied into the zero page
    uint64_t pm_offset;       // file offset of the protected-mode code: (setup_sects + 1) * 512
    uint64_t pm_size;         // its size: the rest of the file
};

// The PVH image: PT_LOAD segments and the PVH entry (a 32-bit physical address).
struct PvhSegment {
    uint64_t paddr, file_offset, file_size, mem_size;
};
struct PvhImage {
    uint32_t entry;
    uint64_t elf_entry;           // e_entry: startup_64's physical address (vmlinux.lds.S ENTRY(phys_startup_64))
    uint64_t load_low, load_high; // span of the segments, bss included
    std::vector<PvhSegment> segments;
};

// Refusals, each one line: not a bzImage ("HdrS"/0xAA55 missing, zImage), protocol older than
// 2.12, not a 64-bit kernel (xloadflags XLF_KERNEL_64), truncated header or payload.
Result<BzImageHeader, LoadError> parse_bzimage(std::span<uint8_t const> file);
// Refusals: not ELF64 little-endian x86-64, bad program headers, segments outside the file or
// 4 GiB, no PVH note (XEN_ELFNOTE_PHYS32_ENTRY, type 18) or an entry outside the segments.
Result<PvhImage, LoadError> parse_pvh_elf(std::span<uint8_t const> file);
bool is_elf64(std::span<uint8_t const> file);

struct LinuxLoadParams {
    std::string cmdline;               // -append
    std::span<uint8_t const> initrd;   // -initrd bytes (empty: none)
    uint64_t ram_size {};              // the machine's DRAM (MemoryConfig::dram_size)
    uint64_t low_mem_top { 0xC000'0000 }; // MemoryConfig::low_mem_top: DRAM above it is at 4 GiB
    AcpiConfig acpi;                   // cpu_count, IOAPIC or virtual wire, ...
    // Set for an SEV guest: an ELF vmlinux is entered at e_entry (startup_64) through the 64-bit
    // boot protocol, its identity map carrying this C-bit (the sev-guest object's cbitpos),
    // instead of through PVH (see the top of this file). bzImages ignore it.
    std::optional<unsigned> sev_c_bit;
};

struct LinuxBoot {
    enum class Protocol : uint8_t { BzImage, Pvh };
    Protocol protocol;               // Pvh: an ELF vmlinux, whichever its entry
    bool startup64 {};               // an ELF vmlinux entered at startup_64 (64-bit boot protocol)
    BootEntryState entry;
    std::vector<GuestRange> written; // page aligned, ascending, merged
    std::vector<E820Entry> e820;     // as reported to the guest
    uint64_t boot_info;              // zero page (bzImage, startup64) or hvm_start_info (PVH)
    uint64_t cmdline_addr;
    uint64_t initrd_addr, initrd_size; // 0, 0 without an initrd
    uint64_t kernel_low, kernel_high;  // what was loaded from the image
    uint64_t acpi_base;
    uint64_t rsdp;
};

// The E820 map of the layout above (also what the tests check against).
Result<std::vector<E820Entry>, LoadError> linux_e820_map(uint64_t ram_size, uint64_t low_mem_top);

// Loads and returns the boot description; on an error nothing was written (every check runs first).
Result<LinuxBoot, LoadError> load_bzimage(mmu::MemoryController&, BzImageHeader const&, std::span<uint8_t const> file,
    LinuxLoadParams const&);
Result<LinuxBoot, LoadError> load_pvh(mmu::MemoryController&, PvhImage const&, std::span<uint8_t const> file,
    LinuxLoadParams const&);

// Picks the protocol by the file's first bytes ("HdrS" → bzImage; ELF64 → PVH), parses and loads.
Result<LinuxBoot, LoadError> load_linux(mmu::MemoryController&, std::span<uint8_t const> file, LinuxLoadParams const&);

} // namespace sevemu::emulator
