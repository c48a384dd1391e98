// Multiboot v1 loader: header search and validation, both load formats, the information
// structure and memory map in DRAM (read back through the memory controller), and bad images
// (truncated, garbage, inconsistent fields) that must give one error and never crash.
#include "emulator/multiboot.h"
#include "mmu/memory_controller.h"

#include <catch2/catch.hpp>
#include <cstring>
#include <random>
#include <string>

using namespace sevemu;
using namespace sevemu::emulator;

namespace {

void put32(std::vector<uint8_t>& b, size_t off, uint32_t v)
{
    if (b.size() < off + 4)
        b.resize(off + 4);
    for (int i = 0; i < 4; ++i)
        b[off + i] = uint8_t(v >> (8 * i));
}
void put16(std::vector<uint8_t>& b, size_t off, uint16_t v)
{
    b[off] = uint8_t(v);
    b[off + 1] = uint8_t(v >> 8);
}

uint32_t get32(mmu::MemoryController& mc, uint64_t addr)
{
    uint8_t b[4];
    REQUIRE(mc.read(Spa(addr), b, mmu::KeyId::none()).has_value());
    return uint32_t(b[0]) | uint32_t(b[1]) << 8 | uint32_t(b[2]) << 16 | uint32_t(b[3]) << 24;
}
uint64_t get64(mmu::MemoryController& mc, uint64_t addr) { return get32(mc, addr) | uint64_t(get32(mc, addr + 4)) << 32; }
std::string get_string(mmu::MemoryController& mc, uint64_t addr)
{
    std::string s;
    for (;;) {
        uint8_t c;
        REQUIRE(mc.read(Spa(addr++), std::span(&c, 1), mmu::KeyId::none()).has_value());
        if (!c)
            return s;
        s.push_back(char(c));
    }
}

// A flat a.out-kludge image: the header at file offset 0x40, loaded at 1 MiB from file offset 0.
std::vector<uint8_t> kludge_image(uint32_t payload = 0x300, uint32_t bss = 0x1000)
{
    std::vector<uint8_t> f(payload, 0);
    for (uint32_t i = 0x60; i < payload; ++i)
        f[i] = uint8_t(i * 7);
    uint32_t flags = (1u << 1) | (1u << 16);
    put32(f, 0x40, 0x1BADB002);
    put32(f, 0x44, flags);
    put32(f, 0x48, uint32_t(-(0x1BADB002 + flags)));
    put32(f, 0x4C, 0x100040);           // header_addr
    put32(f, 0x50, 0x100000);           // load_addr
    put32(f, 0x54, 0x100000 + payload); // load_end_addr
    put32(f, 0x58, 0x100000 + payload + bss);
    put32(f, 0x5C, 0x100060);           // entry
    return f;
}

// An ELF32 image with two PT_LOAD segments and a Multiboot header without the kludge.
std::vector<uint8_t> elf32_image()
{
    std::vector<uint8_t> f(0x2000, 0);
    f[0] = 0x7F, f[1] = 'E', f[2] = 'L', f[3] = 'F', f[4] = 1, f[5] = 1, f[6] = 1;
    put16(f, 16, 2);      // ET_EXEC
    put16(f, 18, 3);      // EM_386
    put32(f, 20, 1);
    put32(f, 24, 0x200010); // e_entry
    put32(f, 28, 52);     // e_phoff
    put16(f, 40, 52);
    put16(f, 42, 32);     // e_phentsize
    put16(f, 44, 2);      // e_phnum
    auto ph = [&](size_t at, uint32_t off, uint32_t paddr, uint32_t filesz, uint32_t memsz) {
        put32(f, at, 1);
        put32(f, at + 4, off);
        put32(f, at + 8, 0xC0000000 + paddr); // vaddr differs: paddr must be used
        put32(f, at + 12, paddr);
        put32(f, at + 16, filesz);
        put32(f, at + 20, memsz);
    };
    ph(52, 0x1000, 0x200000, 0x800, 0x800);
    ph(84, 0x1800, 0x201000, 0x100, 0x2000);
    uint32_t flags = 1u << 1;
    put32(f, 0x1000, 0x1BADB002);
    put32(f, 0x1004, flags);
    put32(f, 0x1008, uint32_t(-(0x1BADB002 + flags)));
    for (size_t i = 0x1010; i < 0x1900; ++i)
        f[i] = uint8_t(i);
    return f;
}

std::unique_ptr<mmu::MemoryController> memory(uint64_t size = 32ull << 20)
{
    mmu::MemoryConfig cfg;
    cfg.dram_size = size;
    cfg.cache_pages = 64;
    return std::move(*mmu::MemoryController::create(cfg));
}

std::vector<E820Entry> test_map(uint64_t size)
{
    return { { 0, 0x9FC00, 1 }, { 0x9FC00, 0x400, 2 }, { 0xF0000, 0x10000, 2 }, { 0x100000, size - 0x100000, 1 } };
}

} // namespace

TEST_CASE("multiboot: a.out kludge header is found and validated")
{
    auto f = kludge_image();
    auto img = parse_multiboot(f);
    REQUIRE(img.has_value());
    CHECK(img->format == MultibootImage::Format::AoutKludge);
    CHECK(img->header_offset == 0x40);
    CHECK(img->entry == 0x100060);
    CHECK(img->load_low == 0x100000);
    CHECK(img->load_high == 0x100000 + 0x300 + 0x1000);
    REQUIRE(img->segments.size() == 1);
    CHECK(img->segments[0].file_offset == 0);
    CHECK(img->segments[0].file_size == 0x300);
    CHECK(identify_kernel(f) == KernelKind::Multiboot);
}

TEST_CASE("multiboot: load places image, bss, info structure, memory map and cmdline as QEMU does")
{
    auto mc = memory();
    auto f = kludge_image();
    // Dirty the bss area first: the loader must zero it.
    std::vector<uint8_t> junk(0x1000, 0xEE);
    REQUIRE(mc->write(Spa(0x100300), junk, mmu::KeyId::none()).has_value());
    auto img = parse_multiboot(f);
    REQUIRE(img.has_value());
    MultibootLoadParams p;
    p.kernel_name = "guest.elf";
    p.append = "console=ttyS0 x=1";
    p.memory_map = test_map(32ull << 20);
    auto boot = load_multiboot(*mc, *img, f, p);
    REQUIRE(boot.has_value());
    CHECK(boot->entry == 0x100060);
    CHECK(boot->info_addr == 0x9500);
    CHECK(boot->mem_lower_kib == 639);
    CHECK(boot->mem_upper_kib == (32u << 10) - 1024);

    std::vector<uint8_t> back(0x300);
    REQUIRE(mc->read(Spa(0x100000), back, mmu::KeyId::none()).has_value());
    CHECK(back == f);
    REQUIRE(mc->read(Spa(0x100300), junk, mmu::KeyId::none()).has_value());
    CHECK(std::all_of(junk.begin(), junk.end(), [](uint8_t b) { return b == 0; }));

    // Multiboot spec §3.3 fields.
    CHECK(get32(*mc, 0x9500) == 0x24F); // MEM, BOOTDEV, CMDLINE, MODS, MMAP, LOADER
    CHECK(get32(*mc, 0x9504) == 639);
    CHECK(get32(*mc, 0x9508) == (32u << 10) - 1024);
    CHECK(get32(*mc, 0x950C) == 0x8000FFFF);
    CHECK(get_string(*mc, get32(*mc, 0x9510)) == "guest.elf console=ttyS0 x=1");
    CHECK(get32(*mc, 0x9514) == 0);                       // mods_count
    CHECK(get32(*mc, 0x9518) == 0x100000 + 0x2000);        // mods_addr: page after the image
    CHECK(get32(*mc, 0x952C) == 4 * 24);                   // mmap_length
    CHECK(get32(*mc, 0x9530) == 0x9000);                   // mmap_addr
    CHECK(get_string(*mc, get32(*mc, 0x9540)) == "sevemu");
    // mmap entries: size 20, base, length, type.
    CHECK(get32(*mc, 0x9000) == 20);
    CHECK(get64(*mc, 0x9004) == 0);
    CHECK(get64(*mc, 0x900C) == 0x9FC00);
    CHECK(get32(*mc, 0x9014) == 1);
    CHECK(get64(*mc, 0x9000 + 3 * 24 + 4) == 0x100000);
    CHECK(get32(*mc, 0x9000 + 3 * 24 + 20) == 1);
    // The option ROM's flat GDT, in GDTR at entry.
    CHECK(get64(*mc, kMultibootGdtAddr + 8) == 0x00CF9A000000FFFFull);
    CHECK(get64(*mc, kMultibootGdtAddr + 16) == 0x00CF92000000FFFFull);
}

TEST_CASE("multiboot: modules from -initrd, page aligned, with their strings")
{
    auto mc = memory();
    auto f = kludge_image();
    auto img = parse_multiboot(f);
    REQUIRE(img.has_value());
    MultibootLoadParams p;
    p.kernel_name = "k";
    p.memory_map = test_map(32ull << 20);
    p.modules.push_back({ "mod1 arg", std::vector<uint8_t>(5000, 0xAB) });
    p.modules.push_back({ "mod2", std::vector<uint8_t>(3, 0xCD) });
    auto boot = load_multiboot(*mc, *img, f, p);
    REQUIRE(boot.has_value());
    CHECK(get32(*mc, 0x9514) == 2);
    uint32_t mods = get32(*mc, 0x9518);
    uint32_t s0 = get32(*mc, mods), e0 = get32(*mc, mods + 4);
    uint32_t s1 = get32(*mc, mods + 16), e1 = get32(*mc, mods + 20);
    CHECK(s0 % 4096 == 0);
    CHECK(e0 - s0 == 5000);
    CHECK(s1 % 4096 == 0);
    CHECK(s1 >= e0);
    CHECK(e1 - s1 == 3);
    CHECK(get_string(*mc, get32(*mc, mods + 8)) == "mod1 arg");
    CHECK(get_string(*mc, get32(*mc, mods + 24)) == "mod2");
    CHECK(get_string(*mc, get32(*mc, 0x9510)) == "k ");
    uint8_t b;
    REQUIRE(mc->read(Spa(s1), std::span(&b, 1), mmu::KeyId::none()).has_value());
    CHECK(b == 0xCD);
}

TEST_CASE("multiboot: -initrd module list splits on ',' with ',,' as a literal comma")
{
    auto l = parse_module_list("a.bin x=1,b,,c.bin,d");
    REQUIRE(l.size() == 3);
    CHECK(l[0].path == "a.bin");
    CHECK(l[0].cmdline == "a.bin x=1");
    CHECK(l[1].path == "b,c.bin");
    CHECK(l[2].path == "d");
    CHECK(parse_module_list("").empty());
}

TEST_CASE("multiboot: ELF32 program headers load at p_paddr")
{
    auto mc = memory();
    auto f = elf32_image();
    auto img = parse_multiboot(f);
    REQUIRE(img.has_value());
    CHECK(img->format == MultibootImage::Format::Elf32);
    CHECK(img->entry == 0x200010);
    CHECK(img->load_low == 0x200000);
    CHECK(img->load_high == 0x203000);
    MultibootLoadParams p;
    p.memory_map = test_map(32ull << 20);
    REQUIRE(load_multiboot(*mc, *img, f, p).has_value());
    CHECK(get32(*mc, 0x200000) == 0x1BADB002);
    CHECK(get32(*mc, 0x201000) == 0x03020100); // file bytes from 0x1800
    CHECK(get32(*mc, 0x201100) == 0);
}

TEST_CASE("multiboot: ELF64 without the kludge is refused with QEMU's reason")
{
    auto f = elf32_image();
    f[4] = 2;
    put16(f, 18, 62);
    auto img = parse_multiboot(f);
    REQUIRE_FALSE(img.has_value());
    CHECK(img.error().message.find("x86-64") != std::string::npos);
    CHECK(identify_kernel(f) == KernelKind::Elf64WithoutKludge);
}

TEST_CASE("multiboot: non-Multiboot files get one precise message")
{
    std::vector<uint8_t> bz(0x1000, 0);
    std::memcpy(bz.data() + 0x202, "HdrS", 4);
    auto r = parse_multiboot(bz);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().message.find("bzImage") != std::string::npos);
    CHECK(r.error().message.find("Linux boot protocol") != std::string::npos);

    std::vector<uint8_t> empty;
    CHECK_FALSE(parse_multiboot(empty).has_value());
    std::vector<uint8_t> text(100, 'x');
    auto t = parse_multiboot(text);
    REQUIRE_FALSE(t.has_value());
    CHECK(t.error().message.find("0x1BADB002") != std::string::npos);

    auto bad = kludge_image();
    put32(bad, 0x48, 0x12345678); // checksum wrong
    CHECK_FALSE(parse_multiboot(bad).has_value());

    // A header beyond the first 8 KiB does not count (§3.1.1).
    std::vector<uint8_t> late(0x3000, 0);
    put32(late, 0x2000, 0x1BADB002);
    put32(late, 0x2004, 0);
    put32(late, 0x2008, uint32_t(-0x1BADB002));
    CHECK_FALSE(parse_multiboot(late).has_value());
}

TEST_CASE("multiboot: inconsistent a.out kludge fields")
{
    auto a = kludge_image();
    put32(a, 0x4C, 0x0FFFFF); // header_addr < load_addr
    CHECK(parse_multiboot(a).error().message.find("header_addr") != std::string::npos);
    auto b = kludge_image();
    put32(b, 0x54, 0x0F0000); // load_end < load
    CHECK(parse_multiboot(b).error().message.find("load_end_addr") != std::string::npos);
    auto c = kludge_image();
    put32(c, 0x58, 0x100010); // bss_end < load_end
    CHECK(parse_multiboot(c).error().message.find("bss_end_addr") != std::string::npos);
    auto d = kludge_image();
    put32(d, 0x4C, 0x200000); // header far above load: starts before the file
    CHECK_FALSE(parse_multiboot(d).has_value());
    auto e = kludge_image();
    put32(e, 0x50, 0xFFFFF000);
    put32(e, 0x4C, 0xFFFFF040);
    put32(e, 0x54, 0xFFFFF300);
    put32(e, 0x58, 0xFFFFFFFF);
    auto img = parse_multiboot(e);
    REQUIRE(img.has_value());
    auto mc = memory();
    MultibootLoadParams p;
    p.memory_map = test_map(32ull << 20);
    auto boot = load_multiboot(*mc, *img, e, p);
    REQUIRE_FALSE(boot.has_value());
    CHECK(boot.error().message.find("guest RAM") != std::string::npos);
}

TEST_CASE("multiboot: every truncation of a valid image is an error or a clean load")
{
    auto full = kludge_image();
    for (size_t n = 0; n <= full.size(); ++n) {
        std::vector<uint8_t> cut(full.begin(), full.begin() + long(n));
        auto img = parse_multiboot(cut);
        if (n < full.size())
            CHECK_FALSE(img.has_value());
        else
            CHECK(img.has_value());
    }
    auto elf = elf32_image();
    for (size_t n = 0; n < 0x1900; n += 7) { // the last segment ends at file offset 0x1900
        std::vector<uint8_t> cut(elf.begin(), elf.begin() + long(n));
        CHECK_FALSE(parse_multiboot(cut).has_value());
    }
}

TEST_CASE("multiboot: random garbage with planted headers never crashes")
{
    auto mc = memory(8ull << 20);
    std::mt19937_64 rng(1234);
    for (int iter = 0; iter < 3000; ++iter) {
        std::vector<uint8_t> f(size_t(rng() % 9000));
        for (auto& b : f)
            b = uint8_t(rng());
        if (f.size() >= 64 && (iter & 1)) {
            size_t at = (rng() % (std::min<size_t>(f.size(), 8192) - 12)) & ~size_t(3);
            uint32_t flags = uint32_t(rng()) & (iter & 2 ? 0x00010007u : 0x7u);
            put32(f, at, 0x1BADB002);
            put32(f, at + 4, flags);
            put32(f, at + 8, uint32_t(-(0x1BADB002 + flags)));
            if (iter % 5 == 0 && f.size() > 64) {
                f[0] = 0x7F, f[1] = 'E', f[2] = 'L', f[3] = 'F', f[4] = 1, f[5] = 1;
                put16(f, 18, 3);
            }
        }
        auto img = parse_multiboot(f);
        if (!img) {
            CHECK_FALSE(img.error().message.empty());
            CHECK(img.error().message.find('\n') == std::string::npos);
            continue;
        }
        MultibootLoadParams p;
        p.memory_map = test_map(8ull << 20);
        auto boot = load_multiboot(*mc, *img, f, p);
        if (!boot)
            CHECK_FALSE(boot.error().message.empty());
    }
}

TEST_CASE("multiboot: a large bss is zeroed to its last byte")
{
    auto mc = memory();
    auto f = kludge_image(0x300, 8u << 20);
    auto img = parse_multiboot(f);
    REQUIRE(img.has_value());
    uint64_t last = img->load_high - 1;
    uint8_t dirty = 0xA5;
    REQUIRE(mc->write(Spa(last), std::span(&dirty, 1), mmu::KeyId::none()).has_value());
    MultibootLoadParams p;
    p.memory_map = test_map(32ull << 20);
    REQUIRE(load_multiboot(*mc, *img, f, p).has_value());
    uint8_t b = 0xFF;
    REQUIRE(mc->read(Spa(last), std::span(&b, 1), mmu::KeyId::none()).has_value());
    CHECK(b == 0);
    // Modules and strings go above the bss, on a page boundary.
    CHECK(get32(*mc, 0x9518) == ((img->load_high + 4095) & ~4095u));
}
