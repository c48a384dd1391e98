// sevemu — Multiboot v1 loader (Multiboot Specification 0.6.96), behaving like QEMU's
// `-kernel` for Multiboot images (hw/i386/multiboot.c plus its option ROM
// pc-bios/optionrom/multiboot.S), so a kernel that boots there boots here the same way.
//
// Three steps, each testable alone:
//   parse_multiboot()  — find and validate the header (§3.1.1), choose the load format:
//                        the a.out kludge (flags bit 16: addresses in the header, any file,
//                        ELF64 included, as QEMU) or ELF32 program headers (PT_LOAD at p_paddr).
//   load_multiboot()   — copy the image into DRAM through the memory controller with
//                        KeyId::none(), zero the bss, place modules, command lines, the
//                        Multiboot information structure (§3.3) and the memory map.
//   multiboot_entry_state(), multiboot_written_ranges()
//                      — what the boot-protocol layer (emulator/boot.h) hands the Machine:
//                        the §3.2 entry state and the pages the loader wrote.
//
// Every malformed image is an error value with one clear line; nothing here trusts a field of
// the file before checking it against the file's size and 32-bit address arithmetic.
#pragma once

#include "base/result.h"
#include "emulator/boot.h"

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace sevemu::mmu {
class MemoryController;
}

namespace sevemu::emulator {

struct LoadError {
    std::string message; // one line, no trailing newline; the caller adds the file name
};

// Multiboot spec §3.1.1, header fields (offsets from the magic).
struct MultibootHeaderFields {
    static constexpr uint32_t kMagic = 0x1BADB002;
    static constexpr uint32_t kBootloaderMagic = 0x2BADB002; // EAX at entry (§3.2)
    static constexpr size_t kSearchLimit = 8192;             // header within the first 8 KiB
    static constexpr uint32_t kFlagPageAlign = 1u << 0;
    static constexpr uint32_t kFlagMemoryInfo = 1u << 1;
    static constexpr uint32_t kFlagVideoMode = 1u << 2;
    static constexpr uint32_t kFlagAoutKludge = 1u << 16;
};

struct MultibootSegment {
    uint32_t paddr;       // where it goes in guest-physical (= system-physical) memory
    uint64_t file_offset; // where its bytes are in the file
    uint32_t file_size;   // bytes copied from the file
    uint32_t mem_size;    // >= file_size; the rest is zeroed (bss)
};

struct MultibootImage {
    enum class Format : uint8_t { AoutKludge, Elf32 };
    Format format;
    uint32_t header_offset; // where the magic is in the file
    uint32_t flags;
    uint32_t entry;
    uint32_t load_low;  // lowest address the image occupies
    uint32_t load_high; // one past the highest (bss included)
    std::vector<MultibootSegment> segments;
};

// What -kernel was given, judged by its first bytes; used to give a precise message for files
// that are not Multiboot.
enum class KernelKind : uint8_t { Multiboot, LinuxBzImage, Elf64WithoutKludge, Unknown };
KernelKind identify_kernel(std::span<uint8_t const> file);

Result<MultibootImage, LoadError> parse_multiboot(std::span<uint8_t const> file);

// One entry of the BIOS E820 map (ACPI 6.4 §15 "System Address Map Interfaces").
struct E820Entry {
    static constexpr uint32_t kUsable = 1, kReserved = 2;
    uint64_t base;
    uint64_t length;
    uint32_t type;
};

// A -initrd item: QEMU's multiboot treats -initrd as a comma-separated module list ("a,,b"
// escapes a comma); within one item, text after the first space is that module's arguments.
struct MultibootModuleSpec {
    std::string path;    // the file to load
    std::string cmdline; // the whole item, as the module's string (QEMU passes "path args")
};
std::vector<MultibootModuleSpec> parse_module_list(std::string_view initrd_option);

struct MultibootModule {
    std::string cmdline;
    std::vector<uint8_t> data;
};

struct MultibootLoadParams {
    std::string kernel_name;   // as given on the command line; QEMU's cmdline is "NAME APPEND"
    std::string append;        // -append
    std::string initrd_option; // -initrd as given (for QEMU's space accounting), may be empty
    std::vector<MultibootModule> modules;
    std::vector<E820Entry> memory_map;
    std::string bootloader_name { "sevemu" };
};

// Where QEMU's loader puts its low structures (hw/i386/multiboot.c): the memory map at 0x9000,
// the information structure at 0x9500. sevemu also keeps the flat GDT that QEMU's option ROM
// leaves in GDTR there (QUIRKS.md: QEMU's lives in the option ROM).
inline constexpr uint32_t kMultibootMmapAddr = 0x9000;
inline constexpr uint32_t kMultibootInfoAddr = 0x9500;
inline constexpr uint32_t kMultibootInfoSize = 88;
inline constexpr uint32_t kMultibootGdtAddr = 0x9600;
inline constexpr uint16_t kMultibootGdtLimit = 5 * 8 - 1;
inline constexpr uint32_t kMultibootStackTop = 0x7000; // ESP at entry (spec: undefined)

struct MultibootBoot {
    uint32_t entry;
    uint32_t info_addr;
    uint32_t mem_lower_kib;
    uint32_t mem_upper_kib;
    uint32_t info_flags;
    uint32_t load_low, load_high; // the kernel image
    uint32_t buffer_end;          // end of everything the loader placed above the kernel
};

// The vCPU at the kernel's entry (Multiboot spec §3.2), as QEMU's option ROM leaves it:
// 32-bit protected mode with paging off, CS = 0x08 flat 4 GiB execute/read, DS/ES/FS/GS/SS =
// 0x10 flat read/write from the boot GDT at kMultibootGdtAddr (GDTR points at it: the ROM's
// lgdt), CR0 = PE|ET, EFLAGS = 0x2, EAX = 0x2BADB002, EBX = the information structure,
// ECX = the entry point (the ROM jumps through ECX) and ESP = kMultibootStackTop (the spec
// leaves ESP undefined; QUIRKS.md); every other register zero.
BootEntryState multiboot_entry_state(MultibootBoot const&);

// The 4 KiB pages the loader wrote, ascending and merged: the page at 0x9000 (memory map,
// information structure, boot GDT) and the pages from the kernel's lowest load address, rounded
// down, to the end of the loader's buffer above the kernel, rounded up. The span is whole:
// bss (which the loader zeroes), gaps between segments and page tails (which it leaves as
// they were: zero in the fresh DRAM of an SEV launch) are in it, so what an SEV launch
// measures depends only on the image and the command line (README "What a -kernel launch
// measures").
std::vector<GuestRange> multiboot_written_ranges(MultibootBoot const&);

Result<MultibootBoot, LoadError> load_multiboot(mmu::MemoryController&, MultibootImage const&,
    std::span<uint8_t const> file, MultibootLoadParams const&);

} // namespace sevemu::emulator
