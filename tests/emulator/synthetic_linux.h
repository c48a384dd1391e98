// Synthetic Linux kernels for the Machine tests, written from the public formats (not from
// emulator/linux_boot.cpp): a bzImage as Linux Documentation/x86/boot.rst lays out its setup
// header, and an ELF64 vmlinux with the Xen PVH entry note (Xen include/public/elfnote.h
// XEN_ELFNOTE_PHYS32_ENTRY = 18). Their "code" is a byte pattern: they are loaded and
// measured, never run.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

namespace sevemu::test {

using LinuxBytes = std::vector<uint8_t>;

inline void put_le(LinuxBytes& b, size_t off, uint64_t v, unsigned n)
{
    for (unsigned i = 0; i < n; ++i)
        b.at(off + i) = uint8_t(v >> (8 * i));
}

// A bzImage as Documentation/x86/boot.rst describes one: 7 setup sectors, protocol 2.15,
// LOADED_HIGH, XLF_KERNEL_64, then 12 KiB of protected-mode "code" (a pattern).
inline LinuxBytes synthetic_bzimage()
{
    LinuxBytes f(0x1000 + 0x3000, 0);
    f[0x1F1] = 7;                       // setup_sects: protected-mode code at (7 + 1) * 512
    put_le(f, 0x1F4, 0x3000 / 16, 4);   // syssize, 16-byte paragraphs
    put_le(f, 0x1FE, 0xAA55, 2);
    f[0x200] = 0xEB;
    f[0x201] = 0x66;                    // the header ends at 0x268
    std::memcpy(f.data() + 0x202, "HdrS", 4);
    put_le(f, 0x206, 0x020F, 2);
    f[0x211] = 1;                       // LOADED_HIGH
    put_le(f, 0x214, 0x100000, 4);      // code32_start
    put_le(f, 0x22C, 0x7FFFFFFF, 4);    // initrd_addr_max
    put_le(f, 0x230, 0x200000, 4);      // kernel_alignment
    f[0x234] = 1;
    put_le(f, 0x236, 1, 2);             // XLF_KERNEL_64
    put_le(f, 0x238, 2047, 4);          // cmdline_size
    put_le(f, 0x258, 0x1000000, 8);     // pref_address
    put_le(f, 0x260, 0x400000, 4);      // init_size
    for (size_t i = 0x1000; i < f.size(); ++i)
        f[i] = uint8_t(i * 7 + 3);
    return f;
}

// An ELF64 vmlinux with one PT_LOAD at 1 MiB (8 KiB of file, 12 KiB in memory), e_entry 1 MiB
// and the Xen PVH note (XEN_ELFNOTE_PHYS32_ENTRY, 8-byte entry at 1 MiB + 0x40).
inline LinuxBytes synthetic_pvh()
{
    LinuxBytes f(0x3000, 0);
    std::memcpy(f.data(), "\x7F" "ELF", 4);
    f[4] = 2; // ELFCLASS64
    f[5] = 1; // little-endian
    f[6] = 1;
    put_le(f, 16, 2, 2);    // ET_EXEC
    put_le(f, 18, 62, 2);   // EM_X86_64
    put_le(f, 20, 1, 4);
    put_le(f, 24, 0x100000, 8); // e_entry: "startup_64", physical (an SEV guest's entry)
    put_le(f, 32, 64, 8);   // e_phoff
    put_le(f, 52, 64, 2);   // e_ehsize
    put_le(f, 54, 56, 2);   // e_phentsize
    put_le(f, 56, 2, 2);    // e_phnum
    // PT_LOAD: offset 0x1000, paddr 0x100000, filesz 0x2000, memsz 0x3000.
    put_le(f, 64 + 0, 1, 4);
    put_le(f, 64 + 8, 0x1000, 8);
    put_le(f, 64 + 16, 0xFFFFFFFF81000000ull, 8);
    put_le(f, 64 + 24, 0x100000, 8);
    put_le(f, 64 + 32, 0x2000, 8);
    put_le(f, 64 + 40, 0x3000, 8);
    // PT_NOTE at 0x200: namesz 4 "Xen", descsz 8, type 18.
    put_le(f, 120 + 0, 4, 4);
    put_le(f, 120 + 8, 0x200, 8);
    put_le(f, 120 + 32, 24, 8);
    put_le(f, 120 + 40, 24, 8);
    put_le(f, 0x200, 4, 4);
    put_le(f, 0x204, 8, 4);
    put_le(f, 0x208, 18, 4);
    std::memcpy(f.data() + 0x20C, "Xen", 4);
    put_le(f, 0x210, 0x100040, 8);
    for (size_t i = 0x1000; i < f.size(); ++i)
        f[i] = uint8_t(i * 5 + 1);
    return f;
}

} // namespace sevemu::test
