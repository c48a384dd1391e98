#include "emulator/linux_boot.h"
#include "emulator/loader_memory.h"

#include "mmu/memory_controller.h"

#include <algorithm>
#include <cstring>
#include <fmt/format.h>
#include <optional>

namespace sevemu::emulator {

namespace {

Unexpected<LoadError> fail(std::string msg) { return Unexpected<LoadError>(LoadError { std::move(msg) }); }

uint16_t le16(std::span<uint8_t const> f, uint64_t off) { return uint16_t(f[off] | f[off + 1] << 8); }
uint32_t le32(std::span<uint8_t const> f, uint64_t off)
{
    return uint32_t(f[off]) | uint32_t(f[off + 1]) << 8 | uint32_t(f[off + 2]) << 16 | uint32_t(f[off + 3]) << 24;
}
uint64_t le64(std::span<uint8_t const> f, uint64_t off) { return le32(f, off) | uint64_t(le32(f, off + 4)) << 32; }

void put32(std::vector<uint8_t>& b, size_t off, uint32_t v) { for (int i = 0; i < 4; ++i) b[off + i] = uint8_t(v >> (8 * i)); }
void put64(std::vector<uint8_t>& b, size_t off, uint64_t v) { for (int i = 0; i < 8; ++i) b[off + i] = uint8_t(v >> (8 * i)); }

constexpr uint64_t page_down(uint64_t v) { return v & ~uint64_t(0xFFF); }
constexpr uint64_t page_up(uint64_t v) { return (v + 0xFFF) & ~uint64_t(0xFFF); }
constexpr uint64_t k4GiB = 0x1'0000'0000ull;

// Setup header offsets (boot.rst; uapi/asm/bootparam.h) and boot_params fields (zero-page.rst).
namespace bp {
constexpr size_t kSetupSects = 0x1F1, kSyssize = 0x1F4, kBootFlag = 0x1FE, kJump = 0x200, kHeader = 0x202,
                 kVersion = 0x206, kTypeOfLoader = 0x210, kLoadflags = 0x211, kCode32Start = 0x214,
                 kRamdiskImage = 0x218, kRamdiskSize = 0x21C, kCmdLinePtr = 0x228, kInitrdAddrMax = 0x22C,
                 kKernelAlignment = 0x230, kRelocatable = 0x234, kMinAlignment = 0x235, kXloadflags = 0x236,
                 kCmdlineSize = 0x238, kHardwareSubarch = 0x23C, kSetupData = 0x250, kPrefAddress = 0x258,
                 kInitSize = 0x260;
constexpr size_t kHeaderLimit = 0x290; // struct boot_params: edd_mbr_sig_buffer follows the header area
constexpr size_t kAcpiRsdpAddr = 0x070, kExtRamdiskImage = 0x0C0, kExtRamdiskSize = 0x0C4, kExtCmdLinePtr = 0x0C8,
                 kE820Entries = 0x1E8, kE820Table = 0x2D0;
constexpr size_t kE820Max = 128, kE820EntrySize = 20;
constexpr uint8_t kLoadedHigh = 1u << 0;
constexpr uint16_t kXlfKernel64 = 1u << 0;
constexpr uint16_t kMinVersion = 0x020C;
}

// ELF64 (System V gABI) and the Xen PVH note.
namespace elf {
constexpr uint32_t kPtLoad = 1, kPtNote = 4;
constexpr uint16_t kMachineX86_64 = 62;
constexpr uint32_t kXenElfnotePhys32Entry = 18; // Xen include/public/elfnote.h
}

// Written before anything is loaded: the pieces every load checks against RAM, in one place.
struct Layout {
    uint64_t low_top;   // RAM top below 4 GiB
    uint64_t acpi_base; // low_top - kAcpiRegionSize
    std::vector<E820Entry> e820; // what the guest is told (linux_e820_map)
};

Result<Layout, LoadError> layout_for(mmu::MemoryController& mc, LinuxLoadParams const& p)
{
    Layout l;
    l.e820 = TRY(linux_e820_map(p.ram_size, p.low_mem_top));
    l.low_top = std::min(p.ram_size, p.low_mem_top);
    l.acpi_base = l.low_top - kAcpiRegionSize;
    if (!mc.is_dram(Spa(0), kLinuxLowEnd) || !mc.is_dram(Spa(l.acpi_base), kAcpiRegionSize))
        return fail(fmt::format("the memory layout (RAM {:#x}, low top {:#x}) does not match the machine's RAM", p.ram_size,
            p.low_mem_top));
    return l;
}

// Initrd placement, as QEMU's x86_load_linux (hw/i386/x86.c): the highest page-aligned address
// with the whole image at or below `max` ("initrd_addr = (initrd_max - initrd_size) & ~4095"),
// where max is the protocol's limit capped below the ACPI tables.
Result<uint64_t, LoadError> place_initrd(uint64_t size, uint64_t limit, uint64_t acpi_base, uint64_t lowest)
{
    uint64_t max = std::min(limit, acpi_base - 1);
    if (size > max || ((max - size) & ~uint64_t(0xFFF)) < lowest)
        return fail(fmt::format("initrd of {} bytes does not fit in guest RAM between {:#x} and {:#x} (see -m)", size, lowest,
            max + 1));
    return (max - size) & ~uint64_t(0xFFF);
}

// The boot GDT both entries use (boot.rst "32-bit BOOT PROTOCOL": __BOOT_CS 0x10 execute/read,
// __BOOT_DS 0x18 read/write, both flat 4 GiB; asm/segment.h GDT_ENTRY_BOOT_CS = 2). The PVH ABI
// leaves the selectors unspecified (Xen docs/misc/pvh.pandoc) and asks for the same flat
// segments, so one GDT serves both.
void put_gdt(std::vector<uint8_t>& low)
{
    put64(low, kLinuxGdtAddr + 0x10, 0x00CF9B000000FFFFull); // code: P, S, type 0xB, D, G
    put64(low, kLinuxGdtAddr + 0x18, 0x00CF93000000FFFFull); // data: P, S, type 0x3, B, G
}

// Protected mode with paging off (CR0 = PE|ET), flat CS 0x10 / DS=ES=SS=FS=GS 0x18 loaded from
// the GDT above (attributes in VMCB packing, as cpu/state.h), GDTR at it, IF = 0.
BootEntryState flat32_entry(uint64_t rip)
{
    BootEntryState e;
    e.cr0 = 0x11;
    e.rflags = 2;
    e.rip = rip;
    e.seg[cpu::CS] = cpu::Segment { kBootCs, 0xC9B, 0xFFFFFFFF, 0 };
    for (unsigned s : { cpu::ES, cpu::SS, cpu::DS, cpu::FS, cpu::GS })
        e.seg[s] = cpu::Segment { kBootDs, 0xC93, 0xFFFFFFFF, 0 };
    e.gdtr = { kLinuxGdtAddr, kLinuxGdtLimit };
    return e;
}

// The zero page's loader-owned fields (zero-page.rst, boot.rst "THE REAL-MODE KERNEL HEADER"),
// the same for a bzImage (after its setup header was copied in) and an SEV vmlinux.
void put_zero_page(std::vector<uint8_t>& low, std::vector<E820Entry> const& e820, uint64_t initrd_addr,
    uint64_t initrd_size, uint64_t rsdp)
{
    size_t zp = kLinuxZeroPageAddr;
    low[zp + bp::kTypeOfLoader] = kLinuxLoaderType;
    put32(low, zp + bp::kCmdLinePtr, uint32_t(kLinuxCmdlineAddr));
    put32(low, zp + bp::kExtCmdLinePtr, 0);
    put32(low, zp + bp::kRamdiskImage, uint32_t(initrd_addr));
    put32(low, zp + bp::kRamdiskSize, uint32_t(initrd_size));
    put32(low, zp + bp::kExtRamdiskImage, 0);
    put32(low, zp + bp::kExtRamdiskSize, 0);
    put32(low, zp + bp::kHardwareSubarch, 0); // X86_SUBARCH_PC
    put64(low, zp + bp::kSetupData, 0);
    put64(low, zp + bp::kAcpiRsdpAddr, rsdp);
    low[zp + bp::kE820Entries] = uint8_t(e820.size());
    for (size_t n = 0; n < e820.size(); ++n) {
        size_t at = zp + bp::kE820Table + n * bp::kE820EntrySize;
        put64(low, at, e820[n].base);
        put64(low, at + 8, e820[n].length);
        put32(low, at + 16, e820[n].type);
    }
}

std::vector<GuestRange> merge_ranges(std::vector<GuestRange> r)
{
    std::sort(r.begin(), r.end(), [](auto const& a, auto const& b) { return a.gpa < b.gpa; });
    std::vector<GuestRange> out;
    for (auto const& x : r) {
        if (x.size == 0)
            continue;
        if (!out.empty() && out.back().gpa + out.back().size >= x.gpa) {
            uint64_t end = std::max(out.back().gpa + out.back().size, x.gpa + x.size);
            out.back().size = end - out.back().gpa;
        } else {
            out.push_back(x);
        }
    }
    return out;
}

bool overlaps(uint64_t a_lo, uint64_t a_hi, uint64_t b_lo, uint64_t b_hi) { return a_lo < b_hi && b_lo < a_hi; }

} // namespace

Result<std::vector<E820Entry>, LoadError> linux_e820_map(uint64_t ram_size, uint64_t low_mem_top)
{
    // The kernel needs RAM at 16 MiB and up for its decompressed image; anything below 32 MiB
    // cannot boot Linux at all, so refuse it here with a clear line.
    if (ram_size < (32ull << 20))
        return fail(fmt::format("guest RAM of {} MiB is too small for Linux (at least 32 MiB)", ram_size >> 20));
    if (low_mem_top < (32ull << 20) || (low_mem_top & 0xFFFF) || low_mem_top > k4GiB)
        return fail(fmt::format("low_mem_top {:#x} is not a 64 KiB-aligned address between 32 MiB and 4 GiB", low_mem_top));
    if (ram_size & 0xFFF)
        return fail(fmt::format("guest RAM size {:#x} is not a whole number of pages", ram_size));
    uint64_t low_top = std::min(ram_size, low_mem_top);
    uint64_t acpi_base = low_top - kAcpiRegionSize;
    std::vector<E820Entry> m {
        { 0, kLinuxLowRamEnd, E820Entry::kUsable },
        { kLinuxLowRamEnd, kLinuxKernelAddr - kLinuxLowRamEnd, E820Entry::kReserved },
        { kLinuxKernelAddr, acpi_base - kLinuxKernelAddr, E820Entry::kUsable },
        { acpi_base, kAcpiRegionSize, kE820Acpi },
    };
    if (ram_size > low_top)
        m.push_back({ k4GiB, ram_size - low_top, E820Entry::kUsable });
    return m;
}

bool is_elf64(std::span<uint8_t const> f)
{
    return f.size() >= 64 && f[0] == 0x7F && f[1] == 'E' && f[2] == 'L' && f[3] == 'F' && f[4] == 2;
}

Result<BzImageHeader, LoadError> parse_bzimage(std::span<uint8_t const> f)
{
    using namespace bp;
    if (f.size() < kHeader + 4 || std::memcmp(f.data() + kHeader, "HdrS", 4) != 0)
        return fail("not a Linux bzImage: no \"HdrS\" boot-protocol signature at offset 0x202");
    if (f.size() < kInitSize + 4)
        return fail(fmt::format("Linux bzImage is truncated: {} bytes, the setup header alone needs {}", f.size(), kInitSize + 4));
    if (le16(f, kBootFlag) != 0xAA55)
        return fail("not a Linux bzImage: boot_flag at 0x1FE is not 0xAA55");
    BzImageHeader h {};
    h.version = le16(f, kVersion);
    if (h.version < kMinVersion)
        return fail(fmt::format("Linux boot protocol {}.{:02} is too old: sevemu needs 2.12 or later (Linux 3.8+)",
            h.version >> 8, h.version & 0xFF));
    h.setup_sects = f[kSetupSects] ? f[kSetupSects] : 4; // boot.rst: "If this field is 0, the real value is 4"
    h.loadflags = f[kLoadflags];
    if (!(h.loadflags & kLoadedHigh))
        return fail("not a bzImage: loadflags LOADED_HIGH is clear (a zImage, loaded at 0x10000), which sevemu does not load");
    h.xloadflags = le16(f, kXloadflags);
    if (!(h.xloadflags & kXlfKernel64))
        return fail("not a 64-bit kernel: xloadflags XLF_KERNEL_64 is clear (sevemu boots x86-64 kernels only)");
    h.code32_start = le32(f, kCode32Start);
    h.initrd_addr_max = le32(f, kInitrdAddrMax);
    h.kernel_alignment = le32(f, kKernelAlignment);
    h.relocatable = f[kRelocatable];
    h.min_alignment = f[kMinAlignment];
    h.cmdline_size = le32(f, kCmdlineSize);
    h.pref_address = le64(f, kPrefAddress);
    h.init_size = le32(f, kInitSize);
    h.header_end = uint32_t(kHeader + f[0x201]); // boot.rst: the jump at 0x200 ends at 0x202 + byte 0x201
    if (h.header_end < kInitSize + 4 || h.header_end > kHeaderLimit)
        return fail(fmt::format("Linux bzImage has a bad setup header: it ends at {:#x} (jump byte at 0x201), outside "
                                "{:#x}..{:#x}", h.header_end, kInitSize + 4, kHeaderLimit));
    h.pm_offset = (uint64_t(h.setup_sects) + 1) * 512;
    if (h.pm_offset >= f.size())
        return fail(fmt::format("Linux bzImage is truncated: {} setup sectors end at {:#x}, past the end of the file ({} bytes)",
            h.setup_sects, h.pm_offset, f.size()));
    h.pm_size = f.size() - h.pm_offset;
    uint64_t syssize = uint64_t(le32(f, kSyssize)) * 16; // boot.rst: "in 16-byte paragraphs"
    if (syssize > h.pm_size)
        return fail(fmt::format("Linux bzImage is truncated: syssize says {} bytes of protected-mode code, the file has {}",
            syssize, h.pm_size));
    if (h.init_size == 0 || h.init_size < h.pm_size)
        return fail(fmt::format("Linux bzImage has a bad setup header: init_size {:#x} is below the kernel's own size {:#x}",
            h.init_size, h.pm_size));
    if (h.cmdline_size == 0)
        return fail("Linux bzImage has a bad setup header: cmdline_size is 0");
    return h;
}

Result<PvhImage, LoadError> parse_pvh_elf(std::span<uint8_t const> f)
{
    if (f.size() >= 4 && f[0] == 0x7F && f[1] == 'E' && f[2] == 'L' && f[3] == 'F' && (f.size() < 5 || f[4] != 2))
        return fail("not a 64-bit ELF kernel: sevemu boots ELF vmlinux files (ELFCLASS64, x86-64) through PVH only");
    if (!is_elf64(f))
        return fail("not an ELF vmlinux: no ELF64 header");
    if (f[5] != 1 || le16(f, 18) != elf::kMachineX86_64)
        return fail("ELF kernel is not little-endian x86-64");
    uint64_t phoff = le64(f, 32);
    uint16_t phentsize = le16(f, 54), phnum = le16(f, 56);
    if (phnum == 0 || phentsize < 56 || phoff > f.size() || uint64_t(phnum) * phentsize > f.size() - phoff)
        return fail("ELF kernel has a bad or truncated program header table");
    PvhImage img {};
    std::optional<uint64_t> entry;
    img.load_low = ~0ull;
    for (unsigned n = 0; n < phnum; ++n) {
        uint64_t ph = phoff + uint64_t(n) * phentsize;
        uint32_t type = le32(f, ph);
        uint64_t offset = le64(f, ph + 8), paddr = le64(f, ph + 24), filesz = le64(f, ph + 32), memsz = le64(f, ph + 40);
        if (offset > f.size() || filesz > f.size() - offset)
            return fail(fmt::format("ELF kernel is truncated: segment {} needs bytes up to {:#x}, the file has {:#x}", n,
                offset + filesz, f.size()));
        if (type == elf::kPtNote) {
            // Notes (gABI "Note Section"): namesz, descsz, type, name and desc each 4-byte padded.
            uint64_t at = offset, end = offset + filesz;
            while (end - at >= 12) {
                uint64_t namesz = le32(f, at), descsz = le32(f, at + 4);
                uint32_t ntype = le32(f, at + 8);
                uint64_t name_at = at + 12, desc_at = name_at + ((namesz + 3) & ~3ull);
                uint64_t next = desc_at + ((descsz + 3) & ~3ull);
                if (next > end)
                    break;
                // Xen's PVH entry note: name "Xen", a 32- or 64-bit physical address (QEMU
                // hw/i386/x86.c read_pvh_start_addr; Linux arch/x86/platform/pvh/head.S emits it
                // as _ASM_PTR, 8 bytes on x86-64).
                if (namesz == 4 && std::memcmp(f.data() + name_at, "Xen", 4) == 0 && ntype == elf::kXenElfnotePhys32Entry) {
                    if (descsz == 4)
                        entry = le32(f, desc_at);
                    else if (descsz == 8)
                        entry = le64(f, desc_at);
                    else
                        return fail(fmt::format("ELF kernel's PVH note (XEN_ELFNOTE_PHYS32_ENTRY) has {} bytes, not 4 or 8", descsz));
                }
                at = next;
            }
            continue;
        }
        if (type != elf::kPtLoad || memsz == 0)
            continue;
        if (filesz > memsz)
            return fail(fmt::format("ELF kernel: segment {} has p_filesz {:#x} > p_memsz {:#x}", n, filesz, memsz));
        if (paddr >= k4GiB || memsz > k4GiB - paddr)
            return fail(fmt::format("ELF kernel: segment {} at p_paddr {:#x} extends beyond 4 GiB", n, paddr));
        img.segments.push_back({ paddr, offset, filesz, memsz });
        img.load_low = std::min(img.load_low, paddr);
        img.load_high = std::max(img.load_high, paddr + memsz);
    }
    if (!entry)
        return fail("ELF kernel has no PVH entry note (Xen XEN_ELFNOTE_PHYS32_ENTRY, type 18): sevemu boots a vmlinux only "
                    "through PVH (build with CONFIG_PVH=y, or give the bzImage)");
    if (img.segments.empty())
        return fail("ELF kernel has no loadable segment");
    if (*entry < img.load_low || *entry >= img.load_high)
        return fail(fmt::format("ELF kernel's PVH entry {:#x} is outside its loaded segments {:#x}-{:#x}", *entry, img.load_low,
            img.load_high - 1));
    for (size_t a = 0; a < img.segments.size(); ++a)
        for (size_t b = a + 1; b < img.segments.size(); ++b) {
            auto const& x = img.segments[a];
            auto const& y = img.segments[b];
            if (overlaps(x.paddr, x.paddr + x.mem_size, y.paddr, y.paddr + y.mem_size))
                return fail(fmt::format("ELF kernel: segments at {:#x} and {:#x} overlap", x.paddr, y.paddr));
        }
    img.entry = uint32_t(*entry);
    img.elf_entry = le64(f, 24);
    return img;
}

Result<LinuxBoot, LoadError> load_bzimage(mmu::MemoryController& mc, BzImageHeader const& h, std::span<uint8_t const> file,
    LinuxLoadParams const& p)
{
    // Every check first: on an error nothing is written.
    if (file.size() < h.pm_offset + h.pm_size || h.pm_size == 0)
        return fail("kernel header does not belong to this file");
    Layout l = TRY(layout_for(mc, p));
    auto& e820 = l.e820;
    if (e820.size() > bp::kE820Max)
        return fail("E820 map has too many entries for the zero page");
    if (p.cmdline.size() > h.cmdline_size)
        return fail(fmt::format("kernel command line is {} bytes, the kernel accepts at most {} (cmdline_size)", p.cmdline.size(),
            h.cmdline_size));
    if (p.cmdline.find('\0') != std::string::npos)
        return fail("kernel command line contains a NUL byte");
    // The decompressed kernel goes at pref_address (LOAD_PHYSICAL_ADDR) and needs init_size
    // bytes there (boot.rst "init_size"; linux-boot.md §1.2): that RAM must exist below the
    // initrd and the tables.
    uint64_t kernel_need = std::max<uint64_t>(h.pref_address, kLinuxKernelAddr) + h.init_size;
    uint64_t pm_end = kLinuxKernelAddr + h.pm_size;
    uint64_t lowest_free = std::max(kernel_need, page_up(pm_end));
    if (lowest_free > l.acpi_base)
        return fail(fmt::format("guest RAM below 4 GiB ends at {:#x}: the kernel needs {:#x}-{:#x} (pref_address + init_size) "
                                "below the ACPI tables; give more -m",
            l.low_top, h.pref_address, kernel_need - 1));
    uint64_t initrd_addr = 0;
    if (!p.initrd.empty())
        initrd_addr = TRY(place_initrd(p.initrd.size(), h.initrd_addr_max, l.acpi_base, lowest_free));
    auto acpi = TRY(build_acpi_tables(l.acpi_base, p.acpi));
    if (!mc.is_dram(Spa(kLinuxKernelAddr), h.pm_size))
        return fail("the kernel does not fit in guest RAM at 0x100000");

    // Low memory: zeroed whole, with the GDT, the zero page and the command line in it.
    std::vector<uint8_t> low(kLinuxLowEnd, 0);
    put_gdt(low);
    // The zero page (zero-page.rst; linux-boot.md §1.2): zeroed, then only the setup header
    // bytes 0x1F1..header_end copied — never the sentinel at 0x1EF, or sanitize_boot_params()
    // wipes acpi_rsdp_addr and the ext_* fields.
    size_t zp = kLinuxZeroPageAddr;
    std::memcpy(low.data() + zp + bp::kSetupSects, file.data() + bp::kSetupSects, h.header_end - bp::kSetupSects);
    put_zero_page(low, e820, initrd_addr, p.initrd.size(), acpi.rsdp);
    std::memcpy(low.data() + kLinuxCmdlineAddr, p.cmdline.data(), p.cmdline.size());

    TRY(write_guest(mc, 0, low, "low memory (zero page, command line, GDT)"));
    TRY(write_guest(mc, kLinuxKernelAddr, file.subspan(h.pm_offset, h.pm_size), "kernel"));
    TRY(write_guest(mc, initrd_addr, p.initrd, "initrd"));
    TRY(write_guest(mc, acpi.base, acpi.bytes, "ACPI tables"));

    LinuxBoot b {};
    b.protocol = LinuxBoot::Protocol::BzImage;
    // boot.rst "32-bit BOOT PROTOCOL": %esi = boot_params, %ebp = %edi = %ebx = 0, interrupts off;
    // the entry is the protected-mode code's load address.
    b.entry = flat32_entry(kLinuxKernelAddr);
    b.entry.gpr[cpu::RSI] = kLinuxZeroPageAddr;
    b.boot_info = kLinuxZeroPageAddr;
    b.cmdline_addr = kLinuxCmdlineAddr;
    b.initrd_addr = initrd_addr;
    b.initrd_size = p.initrd.size();
    b.kernel_low = kLinuxKernelAddr;
    b.kernel_high = pm_end;
    b.acpi_base = acpi.base;
    b.rsdp = acpi.rsdp;
    b.e820 = std::move(e820);
    b.written = merge_ranges({
        { 0, kLinuxLowEnd },
        { kLinuxKernelAddr, page_up(pm_end) - kLinuxKernelAddr },
        { initrd_addr, p.initrd.empty() ? 0 : page_up(initrd_addr + p.initrd.size()) - initrd_addr },
        { acpi.base, kAcpiRegionSize },
    });
    return b;
}

Result<LinuxBoot, LoadError> load_pvh(mmu::MemoryController& mc, PvhImage const& img, std::span<uint8_t const> file,
    LinuxLoadParams const& p)
{
    Layout l = TRY(layout_for(mc, p));
    auto& e820 = l.e820;
    // Linux copies the command line into a COMMAND_LINE_SIZE (2048) buffer (asm/setup.h).
    if (p.cmdline.size() > 2047)
        return fail(fmt::format("kernel command line is {} bytes, Linux accepts at most 2047", p.cmdline.size()));
    if (p.cmdline.find('\0') != std::string::npos)
        return fail("kernel command line contains a NUL byte");
    for (auto const& s : img.segments) {
        if (s.file_offset > file.size() || s.file_size > file.size() - s.file_offset || s.file_size > s.mem_size)
            return fail("kernel segment lies outside the file (the image does not belong to this file)");
        if (overlaps(s.paddr, s.paddr + s.mem_size, 0, kLinuxKernelAddr))
            return fail(fmt::format("ELF kernel segment at {:#x} lies below 1 MiB, over the loader's boot structures", s.paddr));
        if (s.paddr + s.mem_size > l.acpi_base)
            return fail(fmt::format("ELF kernel segment at {:#x}-{:#x} does not fit in guest RAM below the ACPI tables at {:#x} "
                                    "(see -m)", s.paddr, s.paddr + s.mem_size - 1, l.acpi_base));
    }
    bool startup64 = p.sev_c_bit.has_value();
    if (startup64) {
        if (*p.sev_c_bit < 32 || *p.sev_c_bit > 63)
            return fail(fmt::format("C-bit position {} is not between 32 and 63", *p.sev_c_bit));
        if (img.elf_entry < img.load_low || img.elf_entry >= img.load_high)
            return fail(fmt::format("ELF kernel's entry (e_entry {:#x}, startup_64) is outside its loaded segments {:#x}-{:#x}: "
                                    "an SEV guest enters a vmlinux there (the PVH entry cannot run encrypted)",
                img.elf_entry, img.load_low, img.load_high - 1));
        if (e820.size() > bp::kE820Max)
            return fail("E820 map has too many entries for the zero page");
    }
    uint64_t kernel_low = page_down(img.load_low), kernel_high = page_up(img.load_high);
    uint64_t initrd_addr = 0;
    if (!p.initrd.empty())
        initrd_addr = TRY(place_initrd(p.initrd.size(), k4GiB - 1, l.acpi_base, kernel_high));
    auto acpi = TRY(build_acpi_tables(l.acpi_base, p.acpi));
    if (!mc.is_dram(Spa(kernel_low), kernel_high - kernel_low))
        return fail("the kernel does not fit in guest RAM");

    std::vector<uint8_t> low(kLinuxLowEnd, 0);
    put_gdt(low);
    if (startup64) {
        // boot.rst "64-bit BOOT PROTOCOL": __BOOT_CS is a flat 64-bit code segment (L set, D clear).
        put64(low, kLinuxGdtAddr + 0x10, 0x00AF9B000000FFFFull);
        // The zero page as a boot loader builds it for a kernel without its setup code
        // (Firecracker's configure_system does the same): the header fields a bzImage would
        // bring — boot_flag 0xAA55, "HdrS", the protocol version, LOADED_HIGH, the alignment —
        // then the loader's own fields as for a bzImage. head64.c copy_bootdata reads
        // cmd_line_ptr, setup.c the ramdisk fields and the E820 table.
        size_t zp = kLinuxZeroPageAddr;
        low[zp + bp::kBootFlag] = 0x55;
        low[zp + bp::kBootFlag + 1] = 0xAA;
        std::memcpy(low.data() + zp + bp::kHeader, "HdrS", 4);
        low[zp + bp::kVersion] = uint8_t(kLinuxVmlinuxVersion);
        low[zp + bp::kVersion + 1] = uint8_t(kLinuxVmlinuxVersion >> 8);
        low[zp + bp::kLoadflags] = bp::kLoadedHigh;
        put32(low, zp + bp::kKernelAlignment, 0x100'0000); // CONFIG_PHYSICAL_ALIGN's default, 16 MiB
        put32(low, zp + bp::kCmdlineSize, 2047);           // COMMAND_LINE_SIZE - 1 (asm/setup.h)
        put_zero_page(low, e820, initrd_addr, p.initrd.size(), acpi.rsdp);
        // The identity map of [0, 4 GiB) — the kernel, zero page, command line and initrd all
        // lie below the ACPI tables under 4 GiB — in 2 MiB pages, present and writable, each
        // entry with the C-bit so that the kernel's first data accesses are private (APM vol 2
        // §15.34.5: in long mode the guest's C-bit chooses).
        uint64_t c = 1ull << *p.sev_c_bit;
        put64(low, kLinuxPml4Addr, kLinuxPdptAddr | c | 0x3);
        for (uint64_t g = 0; g < 4; ++g) {
            put64(low, kLinuxPdptAddr + g * 8, (kLinuxPdAddr + g * 0x1000) | c | 0x3);
            for (uint64_t n = 0; n < 512; ++n)
                put64(low, kLinuxPdAddr + g * 0x1000 + n * 8, ((g << 30) | (n << 21)) | c | 0x83); // P, RW, PS
        }
    } else {
        // struct hvm_start_info (Xen include/public/arch-x86/hvm/start_info.h; Linux
        // include/xen/interface/hvm/start_info.h): magic, version 1, flags, nr_modules,
        // modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr, memmap_entries, reserved.
        size_t si = kPvhStartInfoAddr;
        put32(low, si + 0, kPvhStartMagic);
        put32(low, si + 4, 1); // version 1: the memory map fields are valid (Linux needs them
                               // outside Xen: arch/x86/platform/pvh/enlighten.c init_pvh_bootparams)
        put32(low, si + 8, 0);
        put32(low, si + 12, p.initrd.empty() ? 0 : 1);
        put64(low, si + 16, p.initrd.empty() ? 0 : kPvhModlistAddr);
        put64(low, si + 24, kLinuxCmdlineAddr);
        put64(low, si + 32, acpi.rsdp);
        put64(low, si + 40, kPvhMemmapAddr);
        put32(low, si + 48, uint32_t(e820.size()));
        if (!p.initrd.empty()) {
            // struct hvm_modlist_entry: paddr, size, cmdline_paddr, reserved. Linux takes the first
            // module as the initrd (enlighten.c).
            put64(low, kPvhModlistAddr + 0, initrd_addr);
            put64(low, kPvhModlistAddr + 8, p.initrd.size());
        }
        if (kPvhMemmapAddr + e820.size() * 24 > kPvhStartInfoAddr + 0x1000)
            return fail("E820 map has too many entries for the PVH start page");
        for (size_t n = 0; n < e820.size(); ++n) {
            // struct hvm_memmap_table_entry: addr, size, type (E820 values), reserved.
            size_t at = kPvhMemmapAddr + n * 24;
            put64(low, at, e820[n].base);
            put64(low, at + 8, e820[n].length);
            put32(low, at + 16, e820[n].type);
        }
    }
    std::memcpy(low.data() + kLinuxCmdlineAddr, p.cmdline.data(), p.cmdline.size());

    TRY(write_guest(mc, 0, low, startup64 ? "low memory (zero page, page tables, command line, GDT)"
                                          : "low memory (start info, command line, GDT)"));
    // The kernel span: segments at p_paddr, bss and every gap zeroed, so the measured span
    // [kernel_low, kernel_high) depends only on the file.
    std::vector<PvhSegment> segs = img.segments;
    std::sort(segs.begin(), segs.end(), [](auto const& a, auto const& b) { return a.paddr < b.paddr; });
    uint64_t cursor = kernel_low;
    for (auto const& s : segs) {
        TRY(write_guest_zeros(mc, cursor, s.paddr - cursor, "kernel gap"));
        TRY(write_guest(mc, s.paddr, file.subspan(s.file_offset, s.file_size), "kernel segment"));
        TRY(write_guest_zeros(mc, s.paddr + s.file_size, s.mem_size - s.file_size, "kernel bss"));
        cursor = s.paddr + s.mem_size;
    }
    TRY(write_guest_zeros(mc, cursor, kernel_high - cursor, "kernel tail"));
    TRY(write_guest(mc, initrd_addr, p.initrd, "initrd"));
    TRY(write_guest(mc, acpi.base, acpi.bytes, "ACPI tables"));

    LinuxBoot b {};
    b.protocol = LinuxBoot::Protocol::Pvh;
    // Xen docs/misc/pvh.pandoc "x86/HVM direct boot ABI": 32-bit protected mode, paging off,
    // flat 4 GiB CS (execute/read) and DS/ES/SS (read/write), EFLAGS.IF/TF/VM clear, CR0.PE set
    // and every other writable bit clear, CR4 = 0, EBX = start_info, everything else
    // unspecified (zero here). TR (the ABI's 32-bit TSS of limit 0x67) is left at its reset
    // value: BootEntryState has no TR, and Linux loads its own before using it.
    b.entry = flat32_entry(img.entry);
    b.entry.gpr[cpu::RBX] = kPvhStartInfoAddr;
    b.boot_info = kPvhStartInfoAddr;
    if (startup64) {
        // boot.rst "64-bit BOOT PROTOCOL": long mode (CR0 PE|PG, CR4 PAE, EFER LME|LMA), paging
        // on the identity map above, CS __BOOT_CS 64-bit, DS/ES/SS __BOOT_DS, %rsi = the zero
        // page, interrupts off. CR0.ET as the 32-bit entries; the kernel loads its own CR0, CR4,
        // GDT, IDT and stack in head_64.S.
        b.startup64 = true;
        b.entry.rip = img.elf_entry;
        b.entry.cr0 = 0x8000'0011;
        b.entry.cr3 = kLinuxPml4Addr;
        b.entry.cr4 = 0x20;
        b.entry.efer = 0x500;
        b.entry.seg[cpu::CS] = cpu::Segment { kBootCs, 0xA9B, 0xFFFFFFFF, 0 }; // L, not D
        b.entry.gpr[cpu::RBX] = 0;
        b.entry.gpr[cpu::RSI] = kLinuxZeroPageAddr;
        b.boot_info = kLinuxZeroPageAddr;
    }
    b.cmdline_addr = kLinuxCmdlineAddr;
    b.initrd_addr = initrd_addr;
    b.initrd_size = p.initrd.size();
    b.kernel_low = img.load_low;
    b.kernel_high = img.load_high;
    b.acpi_base = acpi.base;
    b.rsdp = acpi.rsdp;
    b.e820 = std::move(e820);
    b.written = merge_ranges({
        { 0, kLinuxLowEnd },
        { kernel_low, kernel_high - kernel_low },
        { initrd_addr, p.initrd.empty() ? 0 : page_up(initrd_addr + p.initrd.size()) - initrd_addr },
        { acpi.base, kAcpiRegionSize },
    });
    return b;
}

Result<LinuxBoot, LoadError> load_linux(mmu::MemoryController& mc, std::span<uint8_t const> file, LinuxLoadParams const& p)
{
    if (file.size() >= 0x206 && std::memcmp(file.data() + 0x202, "HdrS", 4) == 0) {
        auto h = TRY(parse_bzimage(file));
        return load_bzimage(mc, h, file, p);
    }
    if (file.size() >= 4 && file[0] == 0x7F && file[1] == 'E' && file[2] == 'L' && file[3] == 'F') {
        auto img = TRY(parse_pvh_elf(file));
        return load_pvh(mc, img, file, p);
    }
    return fail("not a Linux kernel: neither a bzImage (\"HdrS\" at 0x202) nor an ELF vmlinux");
}

} // namespace sevemu::emulator
