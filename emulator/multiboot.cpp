#include "emulator/multiboot.h"
#include "emulator/loader_memory.h"

#include "mmu/memory_controller.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <fmt/format.h>

namespace sevemu::emulator {

namespace {

using H = MultibootHeaderFields;

uint32_t le32(std::span<uint8_t const> f, uint64_t off)
{
    return uint32_t(f[off]) | uint32_t(f[off + 1]) << 8 | uint32_t(f[off + 2]) << 16 | uint32_t(f[off + 3]) << 24;
}
uint16_t le16(std::span<uint8_t const> f, uint64_t off) { return uint16_t(f[off] | f[off + 1] << 8); }

void put32(std::vector<uint8_t>& b, size_t off, uint32_t v)
{
    for (int i = 0; i < 4; ++i)
        b[off + i] = uint8_t(v >> (8 * i));
}
void put64(std::vector<uint8_t>& b, size_t off, uint64_t v)
{
    for (int i = 0; i < 8; ++i)
        b[off + i] = uint8_t(v >> (8 * i));
}

constexpr uint64_t page_align(uint64_t v) { return (v + 4095) & ~uint64_t(4095); }

Unexpected<LoadError> fail(std::string msg) { return Unexpected<LoadError>(LoadError { std::move(msg) }); }

// Multiboot information structure, Multiboot spec 0.6.96 §3.3 (offsets QEMU names MBI_*).
namespace mbi {
constexpr size_t kFlags = 0, kMemLower = 4, kMemUpper = 8, kBootDevice = 12, kCmdline = 16, kModsCount = 20,
                 kModsAddr = 24, kMmapLength = 44, kMmapAddr = 48, kBootLoaderName = 64;
constexpr uint32_t kHasMemory = 1u << 0, kHasBootDevice = 1u << 1, kHasCmdline = 1u << 2, kHasMods = 1u << 3,
                   kHasMmap = 1u << 6, kHasLoaderName = 1u << 9;
constexpr size_t kModuleSize = 16; // mod_start, mod_end, string, reserved (§3.3)
constexpr size_t kMmapEntrySize = 24; // size field + 20 bytes (§3.3 "mmap_*")
}

// ELF32 (System V gABI; Intel386 psABI): the fields a loader needs.
namespace elf {
constexpr uint8_t kClass32 = 1, kClass64 = 2, kDataLsb = 1;
constexpr uint16_t kMachine386 = 3, kMachineX86_64 = 62;
constexpr uint32_t kPtLoad = 1;
constexpr size_t kEhdr32Size = 52, kPhdr32Size = 32;
}

bool is_elf(std::span<uint8_t const> f)
{
    return f.size() >= 16 && f[0] == 0x7F && f[1] == 'E' && f[2] == 'L' && f[3] == 'F';
}

std::optional<uint32_t> find_header(std::span<uint8_t const> f)
{
    // §3.1.1: 32-bit aligned, wholly within the first 8192 bytes; magic + flags + checksum = 0.
    size_t limit = std::min(f.size(), H::kSearchLimit);
    for (size_t i = 0; i + 12 <= limit; i += 4) {
        if (le32(f, i) != H::kMagic)
            continue;
        uint32_t flags = le32(f, i + 4);
        if (uint32_t(H::kMagic + flags + le32(f, i + 8)) == 0)
            return uint32_t(i);
    }
    return std::nullopt;
}

Result<void, LoadError> parse_aout_kludge(std::span<uint8_t const> f, MultibootImage& img)
{
    uint32_t i = img.header_offset;
    if (uint64_t(i) + 32 > f.size())
        return fail("Multiboot header is cut off: the a.out kludge fields (flags bit 16) run past the end of the file");
    uint32_t header_addr = le32(f, i + 12);
    uint32_t load_addr = le32(f, i + 16);
    uint32_t load_end_addr = le32(f, i + 20);
    uint32_t bss_end_addr = le32(f, i + 24);
    img.entry = le32(f, i + 28);

    // The checks QEMU makes (hw/i386/multiboot.c), plus the ones it leaves to luck.
    if (header_addr < load_addr)
        return fail(fmt::format("invalid Multiboot header: header_addr {:#x} is below load_addr {:#x}", header_addr, load_addr));
    if (header_addr - load_addr > i)
        return fail(fmt::format("invalid Multiboot header: load_addr {:#x} would start {} bytes before the file",
            load_addr, (header_addr - load_addr) - i));
    uint64_t text_offset = i - (header_addr - load_addr);
    uint64_t load_size;
    if (load_end_addr) {
        if (load_end_addr < load_addr)
            return fail(fmt::format("invalid Multiboot header: load_end_addr {:#x} is below load_addr {:#x}", load_end_addr, load_addr));
        load_size = load_end_addr - load_addr;
    } else {
        load_size = f.size() - text_offset; // §3.1.3: 0 means "to the end of the file"
    }
    if (text_offset + load_size > f.size())
        return fail(fmt::format("kernel image is truncated: the Multiboot header asks for {} bytes at file offset {:#x}, the file has {}",
            load_size, text_offset, f.size()));
    uint64_t kernel_size = load_size;
    if (bss_end_addr) {
        if (bss_end_addr < load_addr + load_size)
            return fail(fmt::format("invalid Multiboot header: bss_end_addr {:#x} is below load_end_addr {:#x}",
                bss_end_addr, load_addr + load_size));
        kernel_size = bss_end_addr - load_addr;
    }
    if (load_addr + kernel_size > 0x1'0000'0000ull)
        return fail("invalid Multiboot header: the image extends beyond 4 GiB");
    img.format = MultibootImage::Format::AoutKludge;
    img.load_low = load_addr;
    img.load_high = uint32_t(load_addr + kernel_size);
    img.segments.push_back({ load_addr, text_offset, uint32_t(load_size), uint32_t(kernel_size) });
    return {};
}

Result<void, LoadError> parse_elf32(std::span<uint8_t const> f, MultibootImage& img)
{
    if (!is_elf(f))
        return fail("Multiboot header without the a.out kludge (flags bit 16) but the file is not ELF");
    if (f[4] == elf::kClass64 || (f.size() >= 20 && le16(f, 18) == elf::kMachineX86_64))
        return fail("cannot load an x86-64 ELF Multiboot kernel without the a.out kludge (flags bit 16); give a 32-bit one, as QEMU requires");
    if (f[4] != elf::kClass32 || f[5] != elf::kDataLsb || f.size() < elf::kEhdr32Size)
        return fail("Multiboot ELF kernel is not a little-endian ELF32 file");
    if (le16(f, 18) != elf::kMachine386)
        return fail(fmt::format("Multiboot ELF kernel is for machine {}, not i386", le16(f, 18)));
    uint32_t phoff = le32(f, 28);
    uint16_t phentsize = le16(f, 42);
    uint16_t phnum = le16(f, 44);
    if (phnum == 0 || phentsize < elf::kPhdr32Size || uint64_t(phoff) + uint64_t(phnum) * phentsize > f.size())
        return fail("Multiboot ELF kernel has a bad or truncated program header table");
    img.entry = le32(f, 24);
    uint64_t low = ~0ull, high = 0;
    for (unsigned n = 0; n < phnum; ++n) {
        uint64_t ph = phoff + uint64_t(n) * phentsize;
        if (le32(f, ph) != elf::kPtLoad)
            continue;
        uint32_t offset = le32(f, ph + 4), paddr = le32(f, ph + 12), filesz = le32(f, ph + 16), memsz = le32(f, ph + 20);
        if (memsz == 0)
            continue;
        if (filesz > memsz)
            return fail(fmt::format("Multiboot ELF kernel: segment {} has p_filesz {:#x} > p_memsz {:#x}", n, filesz, memsz));
        if (uint64_t(offset) + filesz > f.size())
            return fail(fmt::format("Multiboot ELF kernel is truncated: segment {} needs bytes up to {:#x}, the file has {:#x}",
                n, uint64_t(offset) + filesz, f.size()));
        if (uint64_t(paddr) + memsz > 0x1'0000'0000ull)
            return fail(fmt::format("Multiboot ELF kernel: segment {} extends beyond 4 GiB", n));
        // QEMU's load_elf places segments at p_paddr.
        img.segments.push_back({ paddr, offset, filesz, memsz });
        low = std::min<uint64_t>(low, paddr);
        high = std::max<uint64_t>(high, uint64_t(paddr) + memsz);
    }
    if (img.segments.empty())
        return fail("Multiboot ELF kernel has no loadable segment");
    img.format = MultibootImage::Format::Elf32;
    img.load_low = uint32_t(low);
    img.load_high = uint32_t(high);
    return {};
}

} // namespace

KernelKind identify_kernel(std::span<uint8_t const> f)
{
    // Linux boot protocol: "HdrS" at 0x202 (Documentation/arch/x86/boot.rst). QEMU checks this
    // before looking for a Multiboot header, and so do we.
    if (f.size() >= 0x206 && std::memcmp(f.data() + 0x202, "HdrS", 4) == 0)
        return KernelKind::LinuxBzImage;
    auto off = find_header(f);
    if (off) {
        uint32_t flags = le32(f, *off + 4);
        if (!(flags & H::kFlagAoutKludge) && is_elf(f) && f[4] == elf::kClass64)
            return KernelKind::Elf64WithoutKludge;
        return KernelKind::Multiboot;
    }
    return KernelKind::Unknown;
}

Result<MultibootImage, LoadError> parse_multiboot(std::span<uint8_t const> f)
{
    if (identify_kernel(f) == KernelKind::LinuxBzImage)
        return fail("not a Multiboot kernel: a Linux bzImage (\"HdrS\" at 0x202), which sevemu loads through the Linux boot "
                    "protocol (emulator/linux_boot.h)");
    auto off = find_header(f);
    if (!off) {
        if (f.empty())
            return fail("kernel file is empty");
        return fail("not a Multiboot v1 kernel: no header with magic 0x1BADB002 and a valid checksum in the first 8 KiB");
    }
    MultibootImage img {};
    img.header_offset = *off;
    img.flags = le32(f, *off + 4);
    // QEMU ignores the video-mode request (it prints "multiboot knows VBE. we don't.") and
    // honours neither page alignment of modules beyond what it always does; we match it.
    if (img.flags & H::kFlagAoutKludge)
        TRY(parse_aout_kludge(f, img));
    else
        TRY(parse_elf32(f, img));
    return img;
}

std::vector<MultibootModuleSpec> parse_module_list(std::string_view s)
{
    // QEMU's get_opt_value(): items separated by ',', a doubled ",," is a literal comma.
    std::vector<MultibootModuleSpec> out;
    if (s.empty())
        return out;
    std::string item;
    for (size_t i = 0; i <= s.size(); ++i) {
        if (i < s.size() && s[i] == ',' && i + 1 < s.size() && s[i + 1] == ',') {
            item.push_back(',');
            ++i;
            continue;
        }
        if (i == s.size() || s[i] == ',') {
            MultibootModuleSpec spec;
            spec.cmdline = item;
            spec.path = item.substr(0, item.find(' '));
            out.push_back(std::move(spec));
            item.clear();
            continue;
        }
        item.push_back(s[i]);
    }
    return out;
}

BootEntryState multiboot_entry_state(MultibootBoot const& boot)
{
    BootEntryState e;
    e.cr0 = 0x11; // PE | ET
    e.rflags = 2;
    e.seg[cpu::CS] = cpu::Segment { 0x08, 0xC9B, 0xFFFFFFFF, 0 };
    for (unsigned s : { cpu::ES, cpu::SS, cpu::DS, cpu::FS, cpu::GS })
        e.seg[s] = cpu::Segment { 0x10, 0xC93, 0xFFFFFFFF, 0 };
    e.gdtr = { kMultibootGdtAddr, kMultibootGdtLimit };
    e.rip = boot.entry;
    e.gpr[cpu::RAX] = MultibootHeaderFields::kBootloaderMagic;
    e.gpr[cpu::RBX] = boot.info_addr;
    e.gpr[cpu::RCX] = boot.entry;
    e.gpr[cpu::RSP] = kMultibootStackTop;
    return e;
}

std::vector<GuestRange> multiboot_written_ranges(MultibootBoot const& boot)
{
    auto down = [](uint64_t v) { return v & ~uint64_t(0xFFF); };
    auto up = [](uint64_t v) { return (v + 0xFFF) & ~uint64_t(0xFFF); };
    std::vector<GuestRange> r {
        { down(kMultibootMmapAddr), up(uint64_t(kMultibootGdtAddr) + kMultibootGdtLimit + 1) - down(kMultibootMmapAddr) },
        { down(boot.load_low), up(boot.buffer_end) - down(boot.load_low) },
    };
    std::sort(r.begin(), r.end(), [](auto const& a, auto const& b) { return a.gpa < b.gpa; });
    if (r[0].gpa + r[0].size >= r[1].gpa) {
        uint64_t end = std::max(r[0].gpa + r[0].size, r[1].gpa + r[1].size);
        r = { { r[0].gpa, end - r[0].gpa } };
    }
    return r;
}

Result<MultibootBoot, LoadError> load_multiboot(mmu::MemoryController& mc, MultibootImage const& img,
    std::span<uint8_t const> file, MultibootLoadParams const& p)
{
    // The loader's own structures at fixed low addresses (memory map, information structure,
    // GDT): a kernel or module list placed over them would be overwritten after loading, so the
    // guest would start on a corrupted image or command line. Found by tests/fuzz fuzz_multiboot.
    constexpr uint64_t kLowLo = kMultibootMmapAddr, kLowHi = uint64_t(kMultibootGdtAddr) + kMultibootGdtLimit + 1;
    auto over_low = [&](uint64_t lo, uint64_t hi) { return lo < kLowHi && kLowLo < hi; };

    // 1. The kernel image, bss zeroed (§3.1.3 bss_end_addr; ELF: p_memsz beyond p_filesz).
    for (auto const& seg : img.segments)
        if (over_low(seg.paddr, uint64_t(seg.paddr) + std::max<uint64_t>(seg.mem_size, 1)))
            return fail(fmt::format("kernel segment at {:#x}-{:#x} overlaps the Multiboot information at {:#x}-{:#x}",
                seg.paddr, uint64_t(seg.paddr) + seg.mem_size - 1, kLowLo, kLowHi - 1));
    for (auto const& seg : img.segments) {
        if (!mc.is_dram(Spa(seg.paddr), std::max<uint64_t>(seg.mem_size, 1)))
            return fail(fmt::format("kernel segment at {:#x}-{:#x} does not fit in guest RAM (see -m)", seg.paddr,
                uint64_t(seg.paddr) + seg.mem_size - 1));
        if (seg.file_offset + seg.file_size > file.size() || seg.file_size > seg.mem_size)
            return fail("kernel segment lies outside the file (the image does not belong to this file)");
        TRY(write_guest(mc, seg.paddr, file.subspan(seg.file_offset, seg.file_size), "kernel segment"));
        TRY(write_guest_zeros(mc, uint64_t(seg.paddr) + seg.file_size, seg.mem_size - seg.file_size, "kernel bss"));
    }

    // 2. Above the kernel, page aligned, QEMU's "mb_buf" layout (hw/i386/multiboot.c):
    //    module descriptors, then command lines (modules' first, then the kernel's), then the
    //    boot loader name; then each module on its own page boundary.
    uint64_t base = img.load_low;
    uint64_t off_mods = page_align(uint64_t(img.load_high) - img.load_low);
    std::string kernel_cmdline = p.kernel_name + " " + p.append; // QEMU: "%s %s"
    size_t cmdline_len = kernel_cmdline.size() + 1;
    for (auto const& m : p.modules)
        cmdline_len += m.cmdline.size() + 1;
    uint64_t off_cmdlines = off_mods + mbi::kModuleSize * p.modules.size();
    uint64_t off_loader = off_cmdlines + cmdline_len;
    uint64_t buf_size = page_align(off_loader + p.bootloader_name.size() + 1);
    if (over_low(base + off_mods, base + buf_size))
        return fail(fmt::format("the Multiboot command lines above the kernel ({:#x}-{:#x}) would overlap the "
                                "Multiboot information at {:#x}-{:#x}",
            base + off_mods, base + buf_size - 1, kLowLo, kLowHi - 1));

    std::vector<uint8_t> area(buf_size - off_mods, 0);
    auto at = [&](uint64_t off) { return size_t(off - off_mods); };
    uint64_t cmd_cursor = off_cmdlines;
    auto add_string = [&](std::string const& s, uint64_t& cursor) {
        std::memcpy(area.data() + at(cursor), s.data(), s.size());
        uint32_t phys = uint32_t(base + cursor);
        cursor += s.size() + 1;
        return phys;
    };
    uint64_t mod_cursor = buf_size;
    for (size_t n = 0; n < p.modules.size(); ++n) {
        auto const& m = p.modules[n];
        uint32_t string_phys = add_string(m.cmdline, cmd_cursor);
        uint64_t start = base + mod_cursor;
        if (start + m.data.size() > 0x1'0000'0000ull)
            return fail(fmt::format("Multiboot module '{}' would end beyond 4 GiB", m.cmdline));
        TRY(write_guest(mc, start, m.data, fmt::format("Multiboot module '{}'", m.cmdline)));
        put32(area, at(off_mods + n * mbi::kModuleSize) + 0, uint32_t(start));
        put32(area, at(off_mods + n * mbi::kModuleSize) + 4, uint32_t(start + m.data.size()));
        put32(area, at(off_mods + n * mbi::kModuleSize) + 8, string_phys);
        mod_cursor = page_align(mod_cursor + m.data.size());
    }
    uint32_t cmdline_phys = add_string(kernel_cmdline, cmd_cursor);
    uint64_t loader_cursor = off_loader;
    uint32_t loader_phys = add_string(p.bootloader_name, loader_cursor);
    if (base + buf_size > 0x1'0000'0000ull)
        return fail("no room for the Multiboot information above the kernel below 4 GiB");
    TRY(write_guest(mc, base + off_mods, area, "Multiboot command lines and module list"));

    // 3. The memory map at 0x9000 in the information structure's format (§3.3: size, then
    //    base_addr, length, type), as QEMU's option ROM copies it from INT 15h E820.
    size_t max_entries = (kMultibootInfoAddr - kMultibootMmapAddr) / mbi::kMmapEntrySize;
    if (p.memory_map.size() > max_entries)
        return fail("memory map has too many entries for the Multiboot information area");
    std::vector<uint8_t> mmap(p.memory_map.size() * mbi::kMmapEntrySize, 0);
    for (size_t n = 0; n < p.memory_map.size(); ++n) {
        auto const& e = p.memory_map[n];
        put32(mmap, n * mbi::kMmapEntrySize, 20);
        put64(mmap, n * mbi::kMmapEntrySize + 4, e.base);
        put64(mmap, n * mbi::kMmapEntrySize + 12, e.length);
        put32(mmap, n * mbi::kMmapEntrySize + 20, e.type);
    }
    TRY(write_guest(mc, kMultibootMmapAddr, mmap, "Multiboot memory map"));

    // mem_lower: what INT 12h reports (conventional memory below the EBDA); mem_upper: the
    // usable memory contiguous from 1 MiB below 4 GiB — computed as QEMU's option ROM does.
    uint32_t mem_lower = 0;
    for (auto const& e : p.memory_map)
        if (e.type == E820Entry::kUsable && e.base == 0)
            mem_lower = uint32_t(std::min<uint64_t>(e.length, 640 * 1024) / 1024);
    uint64_t upper = 0x100000;
    for (bool grew = true; grew;) {
        grew = false;
        for (auto const& e : p.memory_map) {
            if (e.type != E820Entry::kUsable || e.base >= 0x1'0000'0000ull)
                continue;
            if (e.base <= upper && upper < e.base + e.length) {
                upper = e.base + e.length;
                grew = true;
            }
        }
    }
    uint32_t mem_upper = uint32_t((upper - 0x100000) >> 10);

    // 4. The information structure itself (§3.3), at QEMU's address.
    uint32_t flags = mbi::kHasMemory | mbi::kHasBootDevice | mbi::kHasCmdline | mbi::kHasMods | mbi::kHasMmap
        | mbi::kHasLoaderName;
    std::vector<uint8_t> info(kMultibootInfoSize, 0);
    put32(info, mbi::kFlags, flags);
    put32(info, mbi::kMemLower, mem_lower);
    put32(info, mbi::kMemUpper, mem_upper);
    put32(info, mbi::kBootDevice, 0x8000FFFF); // QEMU: first hard disk, no partition
    put32(info, mbi::kCmdline, cmdline_phys);
    put32(info, mbi::kModsCount, uint32_t(p.modules.size()));
    put32(info, mbi::kModsAddr, uint32_t(base + off_mods));
    put32(info, mbi::kMmapLength, uint32_t(mmap.size()));
    put32(info, mbi::kMmapAddr, kMultibootMmapAddr);
    put32(info, mbi::kBootLoaderName, loader_phys);
    TRY(write_guest(mc, kMultibootInfoAddr, info, "Multiboot information structure"));

    // 5. The GDT QEMU's option ROM leaves loaded: null, 0x08 flat 32-bit code, 0x10 flat data,
    //    0x18 16-bit code, 0x20 16-bit data (pc-bios/optionrom/multiboot.S).
    static constexpr uint64_t kGdt[5] = { 0, 0x00CF9A000000FFFFull, 0x00CF92000000FFFFull, 0x00009E000000FFFFull,
        0x000092000000FFFFull };
    std::vector<uint8_t> gdt(sizeof kGdt);
    for (size_t n = 0; n < 5; ++n)
        put64(gdt, n * 8, kGdt[n]);
    TRY(write_guest(mc, kMultibootGdtAddr, gdt, "boot GDT"));

    MultibootBoot boot {};
    boot.entry = img.entry;
    boot.info_addr = kMultibootInfoAddr;
    boot.mem_lower_kib = mem_lower;
    boot.mem_upper_kib = mem_upper;
    boot.info_flags = flags;
    boot.load_low = img.load_low;
    boot.load_high = img.load_high;
    boot.buffer_end = uint32_t(base + mod_cursor);
    return boot;
}

} // namespace sevemu::emulator
