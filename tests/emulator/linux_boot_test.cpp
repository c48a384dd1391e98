// Debian 12's own kernel through sevemu's Linux loaders (suite linux): the bzImage (boot protocol)
// and the vmlinux inside it (PVH) are loaded into a MemoryController with the busybox initramfs,
// and every zero-page / hvm_start_info field, the E820 map, the command line, the initrd
// placement, the loaded bytes, the ACPI tables and the written ranges are read back. Known
// answers come from outside the loaders: the header fields and the PVH entry that
// scripts/linux-assets.sh read with Python (BUILD/linux-assets/facts), the files themselves, the
// ACPI spec (independent reader) and iasl.
//
// Skips (exit 77) when the assets are absent: `scripts/linux-assets.sh` (run by `make test`)
// makes them with `apt-get download`.
#define CATCH_CONFIG_RUNNER
#include "emulator/linux_boot.h"
#include "linux_test_util.h"

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <string>

using namespace sevemu;
using namespace sevemu::emulator;
using namespace sevemu::test;

namespace {

std::string g_dir;

std::vector<uint8_t> slurp(std::string const& path)
{
    std::ifstream in(path, std::ios::binary);
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

std::map<std::string, uint64_t> facts()
{
    std::map<std::string, uint64_t> m;
    std::ifstream in(g_dir + "/facts");
    std::string name, value;
    while (in >> name >> value)
        m[name] = std::stoull(value, nullptr, 16);
    return m;
}

constexpr uint64_t kRam = 512ull << 20;
constexpr char const* kCmdline = "console=ttyS0 rdinit=/init panic=-1";

void check_e820(std::vector<E820Entry> const& e)
{
    uint64_t acpi = kRam - 0x10000;
    REQUIRE(e.size() == 4);
    CHECK((e[0].base == 0 && e[0].length == 0x9FC00 && e[0].type == 1));
    CHECK((e[1].base == 0x9FC00 && e[1].length == 0x60400 && e[1].type == 2));
    CHECK((e[2].base == 0x100000 && e[2].length == acpi - 0x100000 && e[2].type == 1));
    CHECK((e[3].base == acpi && e[3].length == 0x10000 && e[3].type == 3));
}

} // namespace

TEST_CASE("linux: Debian's bzImage through the 32-bit boot protocol", "[linux][bzimage]")
{
    auto file = slurp(g_dir + "/bzImage");
    auto initrd = slurp(g_dir + "/initramfs.cpio.gz");
    auto f = facts();
    REQUIRE(f.count("version"));

    auto h = parse_bzimage(file);
    REQUIRE(h.has_value());
    CHECK(h->version == f["version"]);
    CHECK(h->version >= 0x020C);
    CHECK(h->xloadflags == f["xloadflags"]);
    CHECK(h->init_size == f["init_size"]);
    CHECK(h->pref_address == f["pref_address"]);
    CHECK(h->cmdline_size == f["cmdline_size"]);
    CHECK(h->initrd_addr_max == f["initrd_addr_max"]);
    CHECK(h->header_end == f["header_end"]);
    CHECK(h->pm_offset == (f["setup_sects"] + 1) * 512);
    std::printf("Debian bzImage: protocol %u.%02u, setup_sects %u, loadflags %#x, xloadflags %#x, init_size %#x, "
                "pref_address %#llx, kernel_alignment %#x, cmdline_size %u, protected-mode code %llu bytes\n",
        h->version >> 8, h->version & 0xFF, h->setup_sects, h->loadflags, h->xloadflags, h->init_size,
        (unsigned long long)h->pref_address, h->kernel_alignment, h->cmdline_size, (unsigned long long)h->pm_size);

    auto mc = make_memory(kRam);
    LinuxLoadParams p;
    p.cmdline = kCmdline;
    p.initrd = initrd;
    p.ram_size = kRam;
    p.acpi.cpu_count = 2;
    auto r = load_bzimage(*mc, *h, file, p);
    REQUIRE(r.has_value());

    auto zp = read_mem(*mc, 0x7000, 4096);
    for (size_t i = 0; i < 0x1F1; ++i)
        if (i < 0x070 || i >= 0x078)
            if (i != 0x1E8)
                REQUIRE(zp[i] == 0);
    for (size_t i = 0x1F1; i < f["header_end"]; ++i) {
        bool loader_field = (i == 0x210) || (i >= 0x218 && i < 0x220) || (i >= 0x228 && i < 0x22C);
        if (!loader_field) {
            INFO("zero page offset " << i);
            REQUIRE(zp[i] == file[i]);
        }
    }
    CHECK(zp[0x210] == 0xFF);
    CHECK(rd(zp, 0x228, 4) == 0x20000);
    CHECK(rd_str(*mc, 0x20000) == kCmdline);
    uint64_t acpi_base = kRam - 0x10000;
    uint64_t initrd_at = ((acpi_base - 1) - initrd.size()) & ~0xFFFull;
    CHECK(rd(zp, 0x218, 4) == initrd_at);
    CHECK(rd(zp, 0x21C, 4) == initrd.size());
    CHECK(initrd_at >= f["pref_address"] + f["init_size"]); // clear of the decompressed kernel
    CHECK(rd(zp, 0x070, 8) == acpi_base);
    CHECK(zp[0x1E8] == 4);
    std::vector<E820Entry> from_zp;
    for (unsigned n = 0; n < zp[0x1E8]; ++n)
        from_zp.push_back({ rd(zp, 0x2D0 + n * 20, 8), rd(zp, 0x2D0 + n * 20 + 8, 8), uint32_t(rd(zp, 0x2D0 + n * 20 + 16, 4)) });
    check_e820(from_zp);
    check_e820(r->e820);

    CHECK(read_mem(*mc, 0x100000, file.size() - h->pm_offset)
        == std::vector<uint8_t>(file.begin() + long(h->pm_offset), file.end()));
    CHECK(read_mem(*mc, initrd_at, initrd.size()) == initrd);

    CHECK(r->entry.rip == 0x100000);
    CHECK(r->entry.gpr[cpu::RSI] == 0x7000);
    CHECK(r->entry.seg[cpu::CS].selector == 0x10);
    CHECK(r->entry.seg[cpu::DS].selector == 0x18);
    CHECK(rd(*mc, r->entry.gdtr.base + 0x10, 8) == 0x00CF9B000000FFFFull);
    CHECK(rd(*mc, r->entry.gdtr.base + 0x18, 8) == 0x00CF93000000FFFFull);

    uint64_t kernel_end = (0x100000 + file.size() - h->pm_offset + 0xFFF) & ~0xFFFull;
    REQUIRE(r->written.size() == 3);
    CHECK((r->written[0].gpa == 0 && r->written[0].size == 0xA0000));
    CHECK((r->written[1].gpa == 0x100000 && r->written[1].size == kernel_end - 0x100000));
    CHECK((r->written[2].gpa == initrd_at && r->written[2].gpa + r->written[2].size == kRam));

    auto acpi = parse_acpi(*mc, rd(zp, 0x070, 8));
    check_acpi_fields(acpi, 2, true);
    std::printf("bzImage layout: zero page 0x7000, command line 0x20000, GDT 0x6000, kernel 0x100000-%#llx, "
                "initrd %#llx (%zu bytes), ACPI %#llx, RSDP %#llx\n",
        (unsigned long long)kernel_end, (unsigned long long)initrd_at, initrd.size(), (unsigned long long)acpi_base,
        (unsigned long long)r->rsdp);
}

TEST_CASE("linux: Debian's vmlinux through PVH", "[linux][pvh]")
{
    auto file = slurp(g_dir + "/vmlinux");
    auto initrd = slurp(g_dir + "/initramfs.cpio.gz");
    auto f = facts();
    REQUIRE(f.count("pvh_entry"));

    auto img = parse_pvh_elf(file);
    REQUIRE(img.has_value());
    CHECK(img->entry == f["pvh_entry"]);
    std::printf("Debian vmlinux: PVH entry %#x, %zu PT_LOAD segments, %#llx-%#llx\n", img->entry, img->segments.size(),
        (unsigned long long)img->load_low, (unsigned long long)img->load_high);

    auto mc = make_memory(kRam);
    LinuxLoadParams p;
    p.cmdline = kCmdline;
    p.initrd = initrd;
    p.ram_size = kRam;
    p.acpi.cpu_count = 2;
    p.acpi.ioapic = false;
    auto r = load_pvh(*mc, *img, file, p);
    REQUIRE(r.has_value());

    // Every PT_LOAD segment at p_paddr, read from the program headers here (ELF64 gABI).
    uint64_t phoff = rd(file, 32, 8);
    unsigned phnum = unsigned(rd(file, 56, 2)), phentsize = unsigned(rd(file, 54, 2));
    unsigned loads = 0;
    uint64_t lo = ~0ull, hi = 0;
    for (unsigned n = 0; n < phnum; ++n) {
        uint64_t ph = phoff + uint64_t(n) * phentsize;
        if (rd(file, ph, 4) != 1)
            continue;
        uint64_t off = rd(file, ph + 8, 8), paddr = rd(file, ph + 24, 8), filesz = rd(file, ph + 32, 8),
                 memsz = rd(file, ph + 40, 8);
        ++loads;
        INFO("segment " << n << " at " << paddr);
        CHECK(read_mem(*mc, paddr, filesz) == std::vector<uint8_t>(file.begin() + long(off), file.begin() + long(off + filesz)));
        if (memsz > filesz)
            CHECK(read_mem(*mc, paddr + filesz, memsz - filesz) == std::vector<uint8_t>(memsz - filesz, 0));
        lo = std::min(lo, paddr);
        hi = std::max(hi, paddr + memsz);
    }
    CHECK(loads == img->segments.size());

    auto si = read_mem(*mc, 0x7000, 56);
    CHECK(rd(si, 0, 4) == 0x336EC578);
    CHECK(rd(si, 4, 4) == 1);
    CHECK(rd(si, 12, 4) == 1);
    CHECK(rd_str(*mc, rd(si, 24, 8)) == kCmdline);
    uint64_t acpi_base = kRam - 0x10000;
    CHECK(rd(si, 32, 8) == acpi_base);
    uint64_t initrd_at = ((acpi_base - 1) - initrd.size()) & ~0xFFFull;
    CHECK(rd(*mc, rd(si, 16, 8), 8) == initrd_at);
    CHECK(rd(*mc, rd(si, 16, 8) + 8, 8) == initrd.size());
    CHECK(read_mem(*mc, initrd_at, initrd.size()) == initrd);
    std::vector<E820Entry> mm;
    for (unsigned n = 0; n < rd(si, 48, 4); ++n) {
        uint64_t at = rd(si, 40, 8) + n * 24;
        mm.push_back({ rd(*mc, at, 8), rd(*mc, at + 8, 8), uint32_t(rd(*mc, at + 16, 4)) });
    }
    check_e820(mm);
    check_e820(r->e820);

    CHECK(r->entry.rip == f["pvh_entry"]);
    CHECK(r->entry.gpr[cpu::RBX] == 0x7000);
    CHECK(r->entry.cr0 == 0x11);

    REQUIRE(r->written.size() == 3);
    CHECK((r->written[0].gpa == 0 && r->written[0].size == 0xA0000));
    CHECK((r->written[1].gpa == (lo & ~0xFFFull) && r->written[1].size == ((hi + 0xFFF) & ~0xFFFull) - (lo & ~0xFFFull)));
    CHECK((r->written[2].gpa == initrd_at && r->written[2].gpa + r->written[2].size == kRam));

    auto acpi = parse_acpi(*mc, rd(si, 32, 8));
    check_acpi_fields(acpi, 2, false);
    std::printf("PVH layout: start_info 0x7000, modlist 0x7040, memmap 0x7080, command line 0x20000, kernel %#llx-%#llx, "
                "initrd %#llx, ACPI %#llx\n",
        (unsigned long long)lo, (unsigned long long)hi, (unsigned long long)initrd_at, (unsigned long long)acpi_base);
}

int main(int argc, char** argv)
{
    char const* env = std::getenv("SEVEMU_LINUX_ASSETS");
    g_dir = env ? env : LINUX_ASSETS;
    for (char const* name : { "bzImage", "vmlinux", "initramfs.cpio.gz", "facts" }) {
        std::ifstream probe(g_dir + "/" + name);
        if (!probe) {
            std::printf("SKIP: %s/%s is missing: run scripts/linux-assets.sh (make test does) to fetch Debian 12's kernel "
                        "and busybox with apt-get download\n",
                g_dir.c_str(), name);
            return 77;
        }
    }
    return Catch::Session().run(argc, argv);
}
