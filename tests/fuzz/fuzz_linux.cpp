// Fuzz harness `linux`: the Linux loaders (emulator/linux_boot.h) on any file given as -kernel —
// bzImage through the 32-bit boot protocol and ELF64 through PVH — loaded into 64 MiB of guest
// DRAM with sevemu's ACPI tables.
//
// Input: byte 0 chooses the load parameters (bit 0: an -append text; bit 1: an initrd of the
// next byte × 97 bytes; bits 2-3: 1 to 4 vCPUs; bit 4: no IOAPIC); the rest is the kernel file.
// Properties checked:
//   - a refused image gets one non-empty line of error, and guest memory is untouched (every
//     check runs before the loader writes: sentinels in each page it could write are intact);
//   - an accepted image: the written ranges are page aligned, ascending, apart and inside RAM;
//     the E820 map has at least two entries, ascending and apart, with the ACPI region as type 3;
//     the command line and the initrd are in memory as given, the initrd page aligned and below
//     the ACPI region; the RSDP's checksums hold; the entry state is the protocol's (32-bit
//     protected mode with paging off, CS 0x10, ESI = zero page or EBX = start_info);
//   - bzImage: the zero page says what was loaded (loader type, command line, initrd, E820
//     count, RSDP) and its sanitize sentinel (0x1EF) is 0; PVH: start_info's magic.
#include "fuzz_check.h"
#include "fuzz_memory.h"

#include "base/encoding.h"
#include "emulator/linux_boot.h"
#include "mmu/memory_controller.h"

#include <algorithm>
#include <string>
#include <vector>

using namespace sevemu;
using namespace sevemu::emulator;

namespace {

constexpr uint64_t kDram = 64ull << 20;

mmu::MemoryController& memory()
{
    static auto mc = fuzz::make_loader_memory(kDram);
    return *mc;
}

std::vector<uint8_t> read(uint64_t addr, size_t n)
{
    std::vector<uint8_t> b(n);
    FUZZ_CHECK(memory().read(Spa(addr), b, mmu::KeyId::none()).has_value(), "read %#llx", (unsigned long long)addr);
    return b;
}

uint64_t rd(uint64_t addr, unsigned size)
{
    auto b = read(addr, size);
    return load_le(b, size);
}

// One sentinel word at the start of every page: a refused load must leave all of them.
constexpr uint64_t kSentinel = 0x5E5E'A11C'0FFE'E5E5ull;

void plant_sentinels()
{
    uint8_t word[8];
    for (int i = 0; i < 8; ++i)
        word[i] = uint8_t(kSentinel >> (8 * i));
    for (uint64_t a = 0; a < kDram; a += 4096)
        FUZZ_CHECK(memory().write(Spa(a), word, mmu::KeyId::none()).has_value(), "sentinel");
}

void check_sentinels()
{
    for (uint64_t a = 0; a < kDram; a += 4096)
        FUZZ_CHECK(rd(a, 8) == kSentinel, "a refused load wrote the page at %#llx", (unsigned long long)a);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(uint8_t const* data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t sel = data[0];
    std::span<uint8_t const> rest(data + 1, size - 1);
    std::vector<uint8_t> initrd;
    if (sel & 2) {
        if (rest.empty())
            return 0;
        initrd.assign(size_t(rest[0]) * 97 + 1, uint8_t(rest[0] ^ 0xA5));
        rest = rest.subspan(1);
    }
    LinuxLoadParams p;
    if (sel & 1)
        p.cmdline = "console=ttyS0 panic=-1 rdinit=/init";
    p.initrd = initrd;
    p.ram_size = kDram;
    p.acpi.cpu_count = 1 + ((sel >> 2) & 3);
    p.acpi.ioapic = !(sel & 16);

    plant_sentinels();
    auto r = load_linux(memory(), rest, p);
    // SEVEMU_FUZZ_VERBOSE=1 says what became of each input (to see that seeds load).
    static bool const verbose = std::getenv("SEVEMU_FUZZ_VERBOSE");
    if (verbose)
        std::fprintf(stderr, "  %s\n", r ? (r->protocol == LinuxBoot::Protocol::BzImage ? "loaded as bzImage" : "loaded as PVH")
                                          : ("refused: " + r.error().message).c_str());
    if (!r) {
        FUZZ_CHECK(!r.error().message.empty(), "empty error message");
        FUZZ_CHECK(r.error().message.find('\n') == std::string::npos, "error spans lines: %s", r.error().message.c_str());
        check_sentinels();
        return 0;
    }
    LinuxBoot const& b = *r;

    // Written ranges: page aligned, ascending, apart (merged), inside RAM.
    FUZZ_CHECK(!b.written.empty(), "nothing written");
    uint64_t prev_end = 0;
    for (size_t i = 0; i < b.written.size(); ++i) {
        auto const& w = b.written[i];
        FUZZ_CHECK(w.gpa % 4096 == 0 && w.size % 4096 == 0 && w.size > 0, "range not page aligned");
        FUZZ_CHECK(i == 0 || w.gpa > prev_end, "ranges not ascending and apart");
        FUZZ_CHECK(w.gpa + w.size <= kDram, "range beyond RAM");
        prev_end = w.gpa + w.size;
    }
    auto covered = [&](uint64_t a, uint64_t n) {
        return std::any_of(b.written.begin(), b.written.end(), [&](GuestRange const& w) { return a >= w.gpa && a + n <= w.gpa + w.size; });
    };
    FUZZ_CHECK(covered(0, kLinuxLowEnd), "low memory not written whole");

    // E820.
    FUZZ_CHECK(b.e820.size() >= 2, "fewer than two E820 entries");
    bool acpi = false;
    for (size_t i = 0; i < b.e820.size(); ++i) {
        FUZZ_CHECK(i == 0 || b.e820[i].base >= b.e820[i - 1].base + b.e820[i - 1].length, "E820 overlaps");
        if (b.e820[i].type == kE820Acpi)
            acpi = acpi || (b.e820[i].base <= b.acpi_base && b.acpi_base < b.e820[i].base + b.e820[i].length);
    }
    FUZZ_CHECK(acpi, "ACPI tables not in a type-3 region");
    FUZZ_CHECK(covered(b.acpi_base, kAcpiRegionSize), "ACPI tables not written");

    // Command line and initrd.
    auto cmd = read(b.cmdline_addr, p.cmdline.size() + 1);
    FUZZ_CHECK(std::equal(p.cmdline.begin(), p.cmdline.end(), cmd.begin()) && cmd.back() == 0, "command line");
    FUZZ_CHECK(b.initrd_size == initrd.size(), "initrd size");
    if (!initrd.empty()) {
        FUZZ_CHECK(b.initrd_addr % 4096 == 0 && b.initrd_addr + b.initrd_size <= b.acpi_base, "initrd placement");
        FUZZ_CHECK(read(b.initrd_addr, initrd.size()) == initrd, "initrd bytes");
        FUZZ_CHECK(covered(b.initrd_addr, b.initrd_size), "initrd not written");
    }

    // RSDP checksums (ACPI 6.4 §5.2.5.3: the first 20 bytes, then the whole 36).
    auto rsdp = read(b.rsdp, 36);
    FUZZ_CHECK(std::equal(rsdp.begin(), rsdp.begin() + 8, "RSD PTR "), "RSDP signature");
    FUZZ_CHECK(acpi_checksum(rsdp.data(), 20) == 0 && acpi_checksum(rsdp.data(), 36) == 0, "RSDP checksum");

    // Entry state: 32-bit protected mode, paging off, interrupts off (boot.rst; Xen pvh.pandoc).
    FUZZ_CHECK((b.entry.cr0 & 0x80000001) == 1 && !(b.entry.rflags & 0x200), "entry mode");
    FUZZ_CHECK(b.entry.seg[1].selector == kBootCs, "entry CS");
    if (b.protocol == LinuxBoot::Protocol::BzImage) {
        FUZZ_CHECK(b.entry.rip == kLinuxKernelAddr && b.entry.gpr[6] == kLinuxZeroPageAddr, "bzImage entry");
        uint64_t zp = b.boot_info;
        FUZZ_CHECK(rd(zp + 0x1EF, 1) == 0, "sanitize sentinel copied");
        FUZZ_CHECK(rd(zp + 0x210, 1) == kLinuxLoaderType, "type_of_loader");
        FUZZ_CHECK(rd(zp + 0x228, 4) == b.cmdline_addr, "cmd_line_ptr");
        FUZZ_CHECK(rd(zp + 0x218, 4) == (initrd.empty() ? 0 : b.initrd_addr) && rd(zp + 0x21C, 4) == b.initrd_size, "ramdisk");
        FUZZ_CHECK(rd(zp + 0x1E8, 1) == b.e820.size(), "e820_entries");
        FUZZ_CHECK(rd(zp + 0x70, 8) == b.rsdp, "acpi_rsdp_addr");
    } else {
        FUZZ_CHECK(b.entry.gpr[3] == kPvhStartInfoAddr && rd(b.boot_info, 4) == kPvhStartMagic, "PVH start_info");
        FUZZ_CHECK(b.entry.rip >= b.kernel_low && b.entry.rip < b.kernel_high, "PVH entry outside the image");
    }
    return 0;
}
