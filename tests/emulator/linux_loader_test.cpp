// The Linux loaders and the ACPI tables on synthetic images (suite fast): every field of the
// zero page and of hvm_start_info read back from guest memory, the E820 map, the command line,
// initrd placement, the written ranges, the entry state; the ACPI tables parsed back by an
// independent reader (and disassembled by iasl when acpica-tools is installed); one test per
// refusal, each checking that guest memory is left as it was.
#include "emulator/acpi_tables.h"
#include "emulator/linux_boot.h"
#include "linux_test_util.h"

#include <catch2/catch.hpp>
#include <cstring>
#include <random>

using namespace sevemu;
using namespace sevemu::emulator;
using namespace sevemu::test;

namespace {

void put(std::vector<uint8_t>& b, size_t off, uint64_t v, unsigned size)
{
    if (b.size() < off + size)
        b.resize(off + size);
    for (unsigned i = 0; i < size; ++i)
        b[off + i] = uint8_t(v >> (8 * i));
}

struct BzSpec {
    uint16_t version = 0x020F;
    uint8_t setup_sects = 4;
    uint8_t loadflags = 0x01;
    uint16_t xloadflags = 0x7F;
    uint32_t pm_size = 0x3000;
    uint32_t init_size = 0x400000;
    uint32_t cmdline_size = 2047;
    uint32_t initrd_addr_max = 0x7FFFFFFF;
    uint8_t jump_len = 0x6A; // header ends at 0x26C, as Linux 6.1's
};

// A bzImage-shaped file: a setup header with the given fields (offsets from boot.rst), garbage
// in the rest of the setup sectors (the loader must not copy it), a patterned payload.
std::vector<uint8_t> make_bzimage(BzSpec const& s = {})
{
    size_t setup = (size_t(s.setup_sects ? s.setup_sects : 4) + 1) * 512;
    std::vector<uint8_t> f(setup + s.pm_size, 0xCC);
    put(f, 0x1EF, 0xFF, 1); // the sentinel sanitize_boot_params() looks at
    put(f, 0x1F1, s.setup_sects, 1);
    put(f, 0x1F4, s.pm_size / 16, 4);
    put(f, 0x1FE, 0xAA55, 2);
    put(f, 0x200, 0xEB, 1);
    put(f, 0x201, s.jump_len, 1);
    std::memcpy(f.data() + 0x202, "HdrS", 4);
    put(f, 0x206, s.version, 2);
    put(f, 0x210, 0, 1);
    put(f, 0x211, s.loadflags, 1);
    put(f, 0x214, 0x100000, 4);
    put(f, 0x218, 0, 8);
    put(f, 0x228, 0, 4);
    put(f, 0x22C, s.initrd_addr_max, 4);
    put(f, 0x230, 0x200000, 4);
    put(f, 0x234, 1, 1);
    put(f, 0x235, 21, 1);
    put(f, 0x236, s.xloadflags, 2);
    put(f, 0x238, s.cmdline_size, 4);
    put(f, 0x23C, 0, 4);
    put(f, 0x250, 0, 8);
    put(f, 0x258, 0x1000000, 8);
    put(f, 0x260, s.init_size, 4);
    put(f, 0x264, 0, 8);
    for (size_t i = setup; i < f.size(); ++i)
        f[i] = uint8_t(i * 7 + 3);
    return f;
}

// An ELF64 x86-64 vmlinux-shaped file: two PT_LOAD segments at 16 MiB and 16 MiB + 0x5000 (a
// page gap between them, the second with bss) and a PT_NOTE with the Xen PVH entry.
struct PvhSpec {
    bool with_note = true;
    uint32_t note_type = 18;
    uint32_t desc_size = 8;
    uint64_t entry = 0x1000040;
    uint64_t seg0_paddr = 0x1000000;
    uint64_t seg1_paddr = 0x1005000;
    uint16_t machine = 62;
    uint8_t elf_class = 2;
};
std::vector<uint8_t> make_pvh(PvhSpec const& s = {})
{
    std::vector<uint8_t> f(0x4000, 0);
    f[0] = 0x7F, f[1] = 'E', f[2] = 'L', f[3] = 'F', f[4] = s.elf_class, f[5] = 1, f[6] = 1;
    put(f, 16, 2, 2);           // ET_EXEC
    put(f, 18, s.machine, 2);
    put(f, 24, 0x1000000, 8);   // e_entry (not the PVH entry)
    put(f, 32, 64, 8);          // e_phoff
    put(f, 54, 56, 2);          // e_phentsize
    put(f, 56, s.with_note ? 3 : 2, 2);
    auto phdr = [&](int n, uint32_t type, uint64_t off, uint64_t paddr, uint64_t filesz, uint64_t memsz) {
        size_t p = 64 + size_t(n) * 56;
        put(f, p, type, 4);
        put(f, p + 8, off, 8);
        put(f, p + 16, paddr | 0xFFFFFFFF80000000ull, 8);
        put(f, p + 24, paddr, 8);
        put(f, p + 32, filesz, 8);
        put(f, p + 40, memsz, 8);
    };
    phdr(0, 1, 0x1000, s.seg0_paddr, 0x1000, 0x1000);
    phdr(1, 1, 0x2000, s.seg1_paddr, 0x800, 0x2000); // 0x1800 bytes of bss
    for (size_t i = 0x1000; i < 0x2800; ++i)
        f[i] = uint8_t(i * 13 + 1);
    if (s.with_note) {
        // Two notes: a GNU one first (skipped), then Xen's.
        size_t n = 0x3000;
        put(f, n, 4, 4), put(f, n + 4, 4, 4), put(f, n + 8, 3, 4);
        std::memcpy(f.data() + n + 12, "GNU", 4);
        put(f, n + 16, 0x12345678, 4);
        n += 20;
        put(f, n, 4, 4), put(f, n + 4, s.desc_size, 4), put(f, n + 8, s.note_type, 4);
        std::memcpy(f.data() + n + 12, "Xen", 4);
        put(f, n + 16, s.entry, s.desc_size);
        uint64_t size = 20 + 16 + ((s.desc_size + 3) & ~3u);
        phdr(2, 4, 0x3000, 0, size, size);
    }
    return f;
}

LinuxLoadParams params(uint64_t ram = 64ull << 20, std::string cmdline = "console=ttyS0 root=/dev/ram0")
{
    LinuxLoadParams p;
    p.cmdline = std::move(cmdline);
    p.ram_size = ram;
    p.acpi.cpu_count = 2;
    return p;
}

// Guest memory filled with 0x5A where the loader would write, to see what it changes.
void poison(mmu::MemoryController& mc, uint64_t ram)
{
    std::vector<uint8_t> junk(0x10000, 0x5A);
    for (uint64_t a = 0; a < std::min<uint64_t>(ram, 0xC0000000); a += junk.size())
        REQUIRE(mc.write(Spa(a), junk, mmu::KeyId::none()).has_value());
}
bool untouched(mmu::MemoryController& mc, uint64_t ram)
{
    for (uint64_t a = 0; a < std::min<uint64_t>(ram, 0xC0000000); a += 0x10000) {
        auto b = read_mem(mc, a, 0x10000);
        for (uint8_t c : b)
            if (c != 0x5A)
                return false;
    }
    return true;
}


} // namespace

TEST_CASE("linux: the bzImage zero page, command line, E820, initrd and entry", "[linux][bzimage]")
{
    uint64_t ram = 64ull << 20;
    auto mc = make_memory(ram);
    poison(*mc, ram);
    auto file = make_bzimage();
    std::vector<uint8_t> initrd(5000);
    for (size_t i = 0; i < initrd.size(); ++i)
        initrd[i] = uint8_t(i ^ 0x3C);
    auto p = params(ram);
    p.initrd = initrd;
    auto h = parse_bzimage(file);
    REQUIRE(h.has_value());
    CHECK(h->version == 0x020F);
    CHECK(h->pm_offset == 5 * 512);
    CHECK(h->header_end == 0x26C);
    auto r = load_bzimage(*mc, *h, file, p);
    REQUIRE(r.has_value());

    // The zero page: zero except the header bytes 0x1F1..0x26C and the loader's fields.
    auto zp = read_mem(*mc, 0x7000, 4096);
    CHECK(zp[0x1EF] == 0); // the sentinel is not copied
    for (size_t i = 0; i < 0x1F1; ++i)
        if (i != 0x070 && i != 0x071 && i != 0x072 && i != 0x073 && i != 0x1E8)
            REQUIRE(zp[i] == 0);
    for (size_t i = 0x1F1; i < 0x26C; ++i) {
        bool loader_field = (i == 0x210) || (i >= 0x218 && i < 0x220) || (i >= 0x228 && i < 0x22C);
        if (!loader_field)
            REQUIRE(zp[i] == file[i]);
    }
    for (size_t i = 0x26C; i < 0x2D0; ++i)
        REQUIRE(zp[i] == 0);
    CHECK(zp[0x210] == 0xFF);                 // type_of_loader
    CHECK(rd(zp, 0x228, 4) == 0x20000);       // cmd_line_ptr
    CHECK(rd(zp, 0x0C8, 4) == 0);             // ext_cmd_line_ptr
    uint64_t acpi_base = ram - 0x10000;
    uint64_t initrd_at = ((acpi_base - 1) - initrd.size()) & ~0xFFFull; // QEMU's formula
    CHECK(rd(zp, 0x218, 4) == initrd_at);
    CHECK(rd(zp, 0x21C, 4) == initrd.size());
    CHECK(rd(zp, 0x070, 8) == acpi_base);     // acpi_rsdp_addr: the RSDP opens the region
    CHECK(zp[0x1E8] == 4);                    // e820_entries
    struct E { uint64_t a, s; uint32_t t; };
    std::vector<E> expect { { 0, 0x9FC00, 1 }, { 0x9FC00, 0x60400, 2 }, { 0x100000, acpi_base - 0x100000, 1 },
        { acpi_base, 0x10000, 3 } };
    for (size_t n = 0; n < expect.size(); ++n) {
        CHECK(rd(zp, 0x2D0 + n * 20, 8) == expect[n].a);
        CHECK(rd(zp, 0x2D0 + n * 20 + 8, 8) == expect[n].s);
        CHECK(rd(zp, 0x2D0 + n * 20 + 16, 4) == expect[n].t);
    }
    for (size_t i = 0x2D0 + 4 * 20; i < 4096; ++i)
        REQUIRE(zp[i] == 0);
    REQUIRE(r->e820.size() == 4);
    CHECK(r->e820[3].type == 3);

    CHECK(rd_str(*mc, 0x20000) == "console=ttyS0 root=/dev/ram0");
    CHECK(read_mem(*mc, initrd_at, initrd.size()) == initrd);
    CHECK(read_mem(*mc, 0x100000, 0x3000) == std::vector<uint8_t>(file.begin() + 5 * 512, file.end()));
    // Low memory outside the structures is zero (it was 0x5A): page 0, the BDA words the kernel reads.
    CHECK(rd(*mc, 0x40E, 2) == 0);
    CHECK(rd(*mc, 0x413, 2) == 0);
    CHECK(read_mem(*mc, 0, 0x1000) == std::vector<uint8_t>(0x1000, 0));
    CHECK(rd(*mc, 0x9FFF8, 8) == 0);
    // The GDT: null, null, __BOOT_CS flat code, __BOOT_DS flat data.
    CHECK(rd(*mc, 0x6000, 8) == 0);
    CHECK(rd(*mc, 0x6008, 8) == 0);
    CHECK(rd(*mc, 0x6010, 8) == 0x00CF9B000000FFFFull);
    CHECK(rd(*mc, 0x6018, 8) == 0x00CF93000000FFFFull);

    // The entry (boot.rst 32-bit boot protocol).
    auto const& e = r->entry;
    CHECK(e.rip == 0x100000);
    CHECK(e.gpr[cpu::RSI] == 0x7000);
    CHECK(e.gpr[cpu::RBX] == 0);
    CHECK(e.gpr[cpu::RBP] == 0);
    CHECK(e.gpr[cpu::RDI] == 0);
    CHECK(e.cr0 == 0x11);
    CHECK(e.cr4 == 0);
    CHECK((e.rflags & 0x200) == 0);
    CHECK(e.seg[cpu::CS].selector == 0x10);
    CHECK(e.seg[cpu::CS].attr == 0xC9B);
    CHECK(e.seg[cpu::CS].limit == 0xFFFFFFFF);
    for (unsigned s : { cpu::DS, cpu::ES, cpu::SS })
        CHECK((e.seg[s].selector == 0x18 && e.seg[s].attr == 0xC93 && e.seg[s].base == 0));
    CHECK(e.gdtr.base == 0x6000);
    CHECK(e.gdtr.limit == 0x1F);

    // Written: low memory, the kernel, the initrd and the ACPI region — page aligned and merged
    // (the initrd's last page touches the ACPI region, so they are one range).
    CHECK(initrd_at + 0x2000 == acpi_base);
    REQUIRE(r->written.size() == 3);
    CHECK((r->written[0].gpa == 0 && r->written[0].size == 0xA0000));
    CHECK((r->written[1].gpa == 0x100000 && r->written[1].size == 0x3000));
    CHECK((r->written[2].gpa == initrd_at && r->written[2].size == 0x2000 + 0x10000));

    auto acpi = parse_acpi(*mc, rd(zp, 0x070, 8));
    check_acpi_fields(acpi, 2, true);
}

TEST_CASE("linux: the initrd is placed under initrd_addr_max when that is lower than RAM", "[linux][bzimage]")
{
    uint64_t ram = 64ull << 20;
    auto mc = make_memory(ram);
    BzSpec s;
    s.initrd_addr_max = 0x02FFFFFF;
    auto file = make_bzimage(s);
    std::vector<uint8_t> initrd(0x1800, 1);
    auto p = params(ram);
    p.initrd = initrd;
    auto r = load_linux(*mc, file, p);
    REQUIRE(r.has_value());
    CHECK(r->initrd_addr == ((0x02FFFFFFull - 0x1800) & ~0xFFFull));
    CHECK(r->initrd_addr + r->initrd_size <= 0x03000000);
}

TEST_CASE("linux: RAM above low_mem_top goes to 4 GiB in the E820 map", "[linux][e820]")
{
    auto m = linux_e820_map(4ull << 30, 0xC0000000);
    REQUIRE(m.has_value());
    REQUIRE(m->size() == 5);
    CHECK((*m)[2].base == 0x100000);
    CHECK((*m)[2].length == 0xC0000000 - 0x10000 - 0x100000);
    CHECK(((*m)[3].base == 0xC0000000 - 0x10000 && (*m)[3].type == 3));
    CHECK(((*m)[4].base == 0x100000000ull && (*m)[4].length == (1ull << 30) && (*m)[4].type == 1));
    CHECK(!linux_e820_map(16ull << 20, 0xC0000000).has_value());
    CHECK(!linux_e820_map(64ull << 20, 0xC0001000).has_value());
}

TEST_CASE("linux: bzImage refusals, each one clear line, memory untouched", "[linux][bzimage]")
{
    uint64_t ram = 64ull << 20;
    auto mc = make_memory(ram);
    poison(*mc, ram);
    auto p = params(ram);
    auto refuse = [&](std::vector<uint8_t> const& f, std::string const& needle, LinuxLoadParams const& lp) {
        auto r = load_linux(*mc, f, lp);
        INFO(needle);
        REQUIRE(!r.has_value());
        INFO(r.error().message);
        CHECK(r.error().message.find(needle) != std::string::npos);
        CHECK(r.error().message.find('\n') == std::string::npos);
        CHECK(untouched(*mc, ram));
    };
    auto with = [](auto change) {
        BzSpec s;
        change(s);
        return make_bzimage(s);
    };
    {
        auto f = make_bzimage();
        std::memcpy(f.data() + 0x202, "HdrX", 4);
        refuse(f, "not a Linux kernel", p);
        CHECK(parse_bzimage(f).error().message.find("no \"HdrS\"") != std::string::npos);
    }
    {
        auto f = make_bzimage();
        put(f, 0x1FE, 0x1234, 2);
        refuse(f, "0xAA55", p);
    }
    refuse(with([](BzSpec& s) { s.version = 0x020B; }), "protocol 2.11 is too old", p);
    refuse(with([](BzSpec& s) { s.loadflags = 0; }), "LOADED_HIGH", p);
    refuse(with([](BzSpec& s) { s.xloadflags = 0x7E; }), "XLF_KERNEL_64", p);
    refuse(with([](BzSpec& s) { s.jump_len = 0x10; }), "bad setup header", p);
    {
        auto f = make_bzimage();
        put(f, 0x1F4, 0x4000 / 16, 4); // syssize says more than the file has
        refuse(f, "truncated", p);
    }
    {
        auto f = make_bzimage();
        f.resize(0x300);
        refuse(f, "truncated", p);
    }
    refuse(with([](BzSpec& s) { s.init_size = 0x1000; }), "init_size", p);
    refuse(with([](BzSpec& s) { s.cmdline_size = 8; }), "command line is 28 bytes", p);
    refuse(with([](BzSpec& s) { s.init_size = 0x3000000; }), "give more -m", p);
    {
        std::vector<uint8_t> big(60ull << 20, 1);
        auto lp = p;
        lp.initrd = big;
        refuse(make_bzimage(), "initrd of", lp);
    }
    {
        auto lp = p;
        lp.acpi.cpu_count = 0;
        refuse(make_bzimage(), "at least one vCPU", lp);
    }
    {
        auto lp = p;
        lp.ram_size = 128ull << 20; // not what the MemoryController has
        refuse(make_bzimage(), "does not match the machine's RAM", lp);
    }
    refuse(std::vector<uint8_t>(100, 0), "not a Linux kernel", p);
}

TEST_CASE("linux: PVH start_info, module list, memory map, segments and entry", "[linux][pvh]")
{
    uint64_t ram = 64ull << 20;
    auto mc = make_memory(ram);
    poison(*mc, ram);
    auto file = make_pvh();
    std::vector<uint8_t> initrd(0x2345, 0x77);
    auto p = params(ram, "console=ttyS0");
    p.initrd = initrd;
    p.acpi.cpu_count = 1;
    p.acpi.ioapic = false;
    auto img = parse_pvh_elf(file);
    REQUIRE(img.has_value());
    CHECK(img->entry == 0x1000040);
    auto r = load_linux(*mc, file, p);
    REQUIRE(r.has_value());
    CHECK(r->protocol == LinuxBoot::Protocol::Pvh);

    auto si = read_mem(*mc, 0x7000, 56);
    CHECK(rd(si, 0, 4) == 0x336EC578);
    CHECK(rd(si, 4, 4) == 1);
    CHECK(rd(si, 8, 4) == 0);
    CHECK(rd(si, 12, 4) == 1);
    uint64_t modlist = rd(si, 16, 8), memmap = rd(si, 40, 8);
    CHECK(rd_str(*mc, rd(si, 24, 8)) == "console=ttyS0");
    uint64_t acpi_base = ram - 0x10000;
    CHECK(rd(si, 32, 8) == acpi_base);
    CHECK(rd(si, 48, 4) == 4);
    CHECK(rd(si, 52, 4) == 0);
    uint64_t initrd_at = ((acpi_base - 1) - initrd.size()) & ~0xFFFull;
    CHECK(rd(*mc, modlist, 8) == initrd_at);
    CHECK(rd(*mc, modlist + 8, 8) == initrd.size());
    CHECK(rd(*mc, modlist + 16, 8) == 0);
    CHECK(read_mem(*mc, initrd_at, initrd.size()) == initrd);
    uint64_t expect[4][3] = { { 0, 0x9FC00, 1 }, { 0x9FC00, 0x60400, 2 }, { 0x100000, acpi_base - 0x100000, 1 },
        { acpi_base, 0x10000, 3 } };
    for (unsigned n = 0; n < 4; ++n) {
        CHECK(rd(*mc, memmap + n * 24, 8) == expect[n][0]);
        CHECK(rd(*mc, memmap + n * 24 + 8, 8) == expect[n][1]);
        CHECK(rd(*mc, memmap + n * 24 + 16, 4) == expect[n][2]);
        CHECK(rd(*mc, memmap + n * 24 + 20, 4) == 0);
    }
    // Segments at p_paddr, the gap and the bss zeroed (they were 0x5A).
    CHECK(read_mem(*mc, 0x1000000, 0x1000) == std::vector<uint8_t>(file.begin() + 0x1000, file.begin() + 0x2000));
    CHECK(read_mem(*mc, 0x1001000, 0x4000) == std::vector<uint8_t>(0x4000, 0));
    CHECK(read_mem(*mc, 0x1005000, 0x800) == std::vector<uint8_t>(file.begin() + 0x2000, file.begin() + 0x2800));
    CHECK(read_mem(*mc, 0x1005800, 0x1800) == std::vector<uint8_t>(0x1800, 0));

    auto const& e = r->entry;
    CHECK(e.rip == 0x1000040);
    CHECK(e.gpr[cpu::RBX] == 0x7000);
    CHECK(e.cr0 == 0x11);
    CHECK(e.cr4 == 0);
    CHECK((e.rflags & (0x200 | 0x100 | 0x20000)) == 0);
    CHECK((e.seg[cpu::CS].base == 0 && e.seg[cpu::CS].limit == 0xFFFFFFFF && e.seg[cpu::CS].attr == 0xC9B));
    CHECK((e.seg[cpu::DS].base == 0 && e.seg[cpu::DS].limit == 0xFFFFFFFF && e.seg[cpu::DS].attr == 0xC93));

    CHECK(initrd_at + 0x3000 == acpi_base);
    REQUIRE(r->written.size() == 3);
    CHECK((r->written[0].gpa == 0 && r->written[0].size == 0xA0000));
    CHECK((r->written[1].gpa == 0x1000000 && r->written[1].size == 0x7000));
    CHECK((r->written[2].gpa == initrd_at && r->written[2].size == 0x3000 + 0x10000));

    auto acpi = parse_acpi(*mc, rd(si, 32, 8));
    check_acpi_fields(acpi, 1, false);
}

TEST_CASE("linux: PVH refusals, each one clear line, memory untouched", "[linux][pvh]")
{
    uint64_t ram = 64ull << 20;
    auto mc = make_memory(ram);
    poison(*mc, ram);
    auto p = params(ram);
    auto refuse = [&](std::vector<uint8_t> const& f, std::string const& needle) {
        auto r = load_linux(*mc, f, p);
        INFO(needle);
        REQUIRE(!r.has_value());
        INFO(r.error().message);
        CHECK(r.error().message.find(needle) != std::string::npos);
        CHECK(untouched(*mc, ram));
    };
    auto with = [](auto change) {
        PvhSpec s;
        change(s);
        return make_pvh(s);
    };
    refuse(with([](PvhSpec& s) { s.with_note = false; }), "no PVH entry note");
    refuse(with([](PvhSpec& s) { s.note_type = 17; }), "no PVH entry note");
    refuse(with([](PvhSpec& s) { s.desc_size = 2; }), "not 4 or 8");
    refuse(with([](PvhSpec& s) { s.entry = 0x2000000; }), "outside its loaded segments");
    refuse(with([](PvhSpec& s) { s.machine = 3; }), "not little-endian x86-64");
    refuse(with([](PvhSpec& s) { s.elf_class = 1; }), "not a 64-bit ELF kernel");
    refuse(with([](PvhSpec& s) { s.seg1_paddr = 0x1000800; }), "overlap");
    refuse(with([](PvhSpec& s) { s.seg0_paddr = 0x90000; s.entry = 0x90010; }), "below 1 MiB");
    refuse(with([](PvhSpec& s) { s.seg1_paddr = 0x3FF0000; }), "below the ACPI tables");
    {
        auto f = make_pvh();
        f.resize(0x2400); // the second segment's bytes are cut off
        refuse(f, "truncated");
    }
    {
        PvhSpec s;
        auto f = make_pvh(s);
        put(f, 56, 400, 2); // e_phnum: the table runs past the end of the file
        refuse(f, "program header table");
    }
    {
        auto f = make_pvh();
        auto lp = p;
        lp.cmdline = std::string(2048, 'x');
        auto r = load_linux(*mc, f, lp);
        REQUIRE(!r.has_value());
        CHECK(r.error().message.find("at most 2047") != std::string::npos);
        CHECK(untouched(*mc, ram));
    }
}

TEST_CASE("acpi: \\_S5 AML bytes, encoded by hand from ACPI 6.4 §20.2", "[acpi]")
{
    CHECK(dsdt_s5_aml(0) == std::vector<uint8_t> { 0x08, 0x5C, 0x5F, 0x53, 0x35, 0x5F, 0x12, 0x06, 0x04, 0x00, 0x00, 0x00, 0x00 });
    CHECK(dsdt_s5_aml(1) == std::vector<uint8_t> { 0x08, 0x5C, 0x5F, 0x53, 0x35, 0x5F, 0x12, 0x06, 0x04, 0x01, 0x01, 0x00, 0x00 });
    CHECK(dsdt_s5_aml(5)
        == std::vector<uint8_t> { 0x08, 0x5C, 0x5F, 0x53, 0x35, 0x5F, 0x12, 0x08, 0x04, 0x0A, 0x05, 0x0A, 0x05, 0x00, 0x00 });
}

TEST_CASE("acpi: tables for 1..8 vCPUs, symmetric I/O or virtual wire, parsed back independently", "[acpi]")
{
    for (unsigned cpus : { 1u, 2u, 8u })
        for (bool ioapic : { true, false }) {
            auto mc = make_memory(64ull << 20);
            AcpiConfig cfg;
            cfg.cpu_count = cpus;
            cfg.ioapic = ioapic;
            auto t = build_acpi_tables(0x3FF0000, cfg);
            REQUIRE(t.has_value());
            REQUIRE(t->bytes.size() == kAcpiRegionSize);
            REQUIRE(mc->write(Spa(t->base), t->bytes, mmu::KeyId::none()).has_value());
            auto p = parse_acpi(*mc, t->rsdp);
            INFO(cpus << " vCPUs, ioapic " << ioapic);
            check_acpi_fields(p, cpus, ioapic);
            CHECK(p.tables["APIC"] == t->madt);
            CHECK(p.bytes["APIC"].size() == 44 + 8 * cpus + (ioapic ? 12 + 20 : 0) + 6);
        }
}

TEST_CASE("acpi: iasl (acpica-tools) disassembles the tables to the expected fields", "[acpi][iasl]")
{
    if (!have_iasl()) {
        WARN("iasl is not installed (Debian acpica-tools): the tables were checked by the independent reader only");
        return;
    }
    auto mc = make_memory(64ull << 20);
    AcpiConfig cfg;
    cfg.cpu_count = 2;
    auto t = build_acpi_tables(0x3FF0000, cfg);
    REQUIRE(t.has_value());
    REQUIRE(mc->write(Spa(t->base), t->bytes, mmu::KeyId::none()).has_value());
    auto dsl = iasl_disassemble(parse_acpi(*mc, t->rsdp));
    auto has = [&](std::string const& sig, std::string const& text) {
        INFO(sig << " should contain: " << text << "\n" << dsl[sig]);
        CHECK(dsl[sig].find(text) != std::string::npos);
    };
    has("DSDT", "Name (\\_S5, Package (0x04)");
    has("DSDT", "Zero, \n");
    has("FACP", "SCI Interrupt : 0009");
    has("FACP", "PM1A Event Block Address : 00000600");
    has("FACP", "PM1A Control Block Address : 00000604");
    has("FACP", "PM Timer Block Address : 00000608");
    has("FACP", "SMI Command Port : 00000000");
    has("FACP", "Reset Register Supported (V2) : 1");
    has("FACP", "Address : 0000000000000CF9");
    has("FACP", "Value to cause reset : 06");
    has("FACP", "8042 Present on ports 60/64 (V2) : 1");
    has("FACP", "Checksum : ");
    has("APIC", "Local Apic Address : FEE00000");
    has("APIC", "Local Apic ID : 01");
    has("APIC", "Address : FEC00000");
    has("APIC", "Interrupt : 00000002");
    has("APIC", "Interrupt Input LINT : 01");
    has("FACS", "Length : 00000040");
    for (auto& [sig, text] : dsl) {
        INFO(sig << "\n" << text);
        CHECK(text.find("Incorrect checksum") == std::string::npos);
        CHECK(text.find("Invalid") == std::string::npos);
    }
}

TEST_CASE("acpi: ACPICA's acpiexec loads the tables and evaluates \\_S5 to {0, 0, 0, 0}", "[acpi][iasl]")
{
    if (std::system("command -v acpiexec >/dev/null 2>&1") != 0) {
        WARN("acpiexec is not installed (Debian acpica-tools): the tables were checked by the independent reader only");
        return;
    }
    auto mc = make_memory(64ull << 20);
    AcpiConfig cfg;
    cfg.cpu_count = 2;
    auto t = build_acpi_tables(0x3FF0000, cfg);
    REQUIRE(t.has_value());
    REQUIRE(mc->write(Spa(t->base), t->bytes, mmu::KeyId::none()).has_value());
    auto out = acpiexec_s5(parse_acpi(*mc, t->rsdp));
    INFO(out);
    CHECK(out.find("ACPI: FACP") != std::string::npos);
    CHECK(out.find("ACPI: FACS") != std::string::npos); // found through the FADT's FIRMWARE_CTRL
    CHECK(out.find("1 ACPI AML tables successfully acquired and loaded") != std::string::npos);
    CHECK(out.find("[Package] Contains 4 Elements:") != std::string::npos);
    size_t zeros = 0;
    for (size_t at = out.find("[Integer] = 0000000000000000"); at != std::string::npos;
         at = out.find("[Integer] = 0000000000000000", at + 1))
        ++zeros;
    CHECK(zeros == 4);
    // ACPICA's FADT checks (tbfadt.c: 32/64 address mismatches, register widths) print warnings.
    // ("Firmware Warning (ACPI): 32/64X address mismatch in FADT/Pm1aEventBlock ..." and the like).
    CHECK(out.find("Warning") == std::string::npos);
    CHECK(out.find("Error") == std::string::npos);
    CHECK(out.find("Exception") == std::string::npos);
}

TEST_CASE("acpi: refusals", "[acpi]")
{
    AcpiConfig cfg;
    cfg.cpu_count = 0;
    CHECK(build_acpi_tables(0x3FF0000, cfg).error().message.find("at least one vCPU") != std::string::npos);
    cfg.cpu_count = 256;
    CHECK(build_acpi_tables(0x3FF0000, cfg).error().message.find("x2APIC") != std::string::npos);
    cfg.cpu_count = 1;
    CHECK(build_acpi_tables(0x3FF0800, cfg).error().message.find("not page aligned") != std::string::npos);
    CHECK(build_acpi_tables(0xFFFF8000, cfg).error().message.find("below 4 GiB") != std::string::npos);
    cfg.s5_slp_typ = 8;
    CHECK(build_acpi_tables(0x3FF0000, cfg).error().message.find("SLP_TYP 8") != std::string::npos);
}

TEST_CASE("linux: mutated bzImage and ELF headers are loaded or refused with one line, never a crash", "[linux][robustness]")
{
    uint64_t ram = 64ull << 20;
    auto mc = make_memory(ram);
    std::mt19937 rng(20261206);
    auto bz = make_bzimage();
    auto elf = make_pvh();
    unsigned loaded = 0, refused = 0;
    for (int i = 0; i < 1500; ++i) {
        bool use_bz = i % 2 == 0;
        auto f = use_bz ? bz : elf;
        size_t span = use_bz ? 0x270 : 0x3040; // the header, program headers and notes
        size_t lo = use_bz ? 0x1F0 : 0;
        int flips = 1 + int(rng() % 4);
        for (int k = 0; k < flips; ++k)
            f[lo + rng() % (span - lo)] = uint8_t(rng());
        if (rng() % 8 == 0)
            f.resize(rng() % f.size());
        auto r = load_linux(*mc, f, params(ram));
        if (r) {
            ++loaded;
            CHECK(!r->written.empty());
        } else {
            ++refused;
            CHECK(!r.error().message.empty());
            CHECK(r.error().message.find('\n') == std::string::npos);
        }
    }
    CHECK(loaded > 0);
    CHECK(refused > 0);
}
