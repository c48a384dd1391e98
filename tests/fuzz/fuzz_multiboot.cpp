// Fuzz harness `multiboot`: the Multiboot v1 loader (emulator/multiboot.h) on any file given
// as -kernel, a.out-kludge and ELF32 images alike, loaded into 16 MiB of guest DRAM.
//
// Input: byte 0 chooses the load parameters (bit 0: one module; bit 1: an -append text), the
// rest is the kernel file. Properties checked:
//   - a refused image gets one non-empty line of error;
//   - an accepted image is consistent with the file: the header is 4-byte aligned in the first
//     8 KiB with magic + flags + checksum = 0 (spec §3.1.1), every segment's bytes lie inside
//     the file, file_size <= mem_size, no segment wraps past 4 GiB, and every segment lies in
//     [load_low, load_high);
//   - after a successful load, DRAM holds each segment's file bytes followed by zeros (bss),
//     wherever no later segment of the image overlaps it (the loader's own structures never
//     may: a kernel under them is refused); the boot state names
//     the image's entry point and extent, and the information structure's command line is the
//     one given.
#include "fuzz_check.h"
#include "fuzz_memory.h"

#include "base/encoding.h"
#include "emulator/multiboot.h"
#include "mmu/memory_controller.h"

#include <algorithm>
#include <string>

using namespace sevemu;
using namespace sevemu::emulator;

namespace {

constexpr uint64_t kDram = 16ull << 20;

mmu::MemoryController& memory()
{
    static auto mc = fuzz::make_loader_memory(kDram);
    return *mc;
}

void check_message(LoadError const& e)
{
    FUZZ_CHECK(!e.message.empty(), "empty error message");
    FUZZ_CHECK(e.message.find('\n') == std::string::npos, "error message spans lines: %s", e.message.c_str());
}

uint32_t le32(std::span<uint8_t const> f, size_t off) { return uint32_t(load_le(f.subspan(off, 4), 4)); }

struct Range {
    uint64_t lo, hi;
    bool overlaps(uint64_t a, uint64_t b) const { return a < hi && lo < b; }
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(uint8_t const* data, size_t size)
{
    if (size == 0)
        return 0;
    uint8_t opts = data[0];
    std::span<uint8_t const> file(data + 1, size - 1);
    (void)identify_kernel(file);
    auto img = parse_multiboot(file);
    if (!img) {
        check_message(img.error());
        return 0;
    }
    FUZZ_CHECK(identify_kernel(file) == KernelKind::Multiboot, "parsed, but not identified as Multiboot");
    size_t h = img->header_offset;
    FUZZ_CHECK(h % 4 == 0 && h + 12 <= std::min<size_t>(file.size(), MultibootHeaderFields::kSearchLimit),
        "header at %zu", h);
    FUZZ_CHECK(le32(file, h) == MultibootHeaderFields::kMagic, "no magic at the header");
    FUZZ_CHECK(uint32_t(le32(file, h) + le32(file, h + 4) + le32(file, h + 8)) == 0, "checksum does not sum to 0");
    FUZZ_CHECK(img->flags == le32(file, h + 4), "flags differ from the header's");
    FUZZ_CHECK(img->load_low <= img->load_high, "load_low > load_high");
    for (auto const& s : img->segments) {
        FUZZ_CHECK(s.file_offset + s.file_size <= file.size(), "segment bytes outside the file");
        FUZZ_CHECK(s.file_size <= s.mem_size, "file_size > mem_size");
        FUZZ_CHECK(uint64_t(s.paddr) + s.mem_size <= 0x1'0000'0000ull, "segment wraps past 4 GiB");
        FUZZ_CHECK(s.paddr >= img->load_low && uint64_t(s.paddr) + s.mem_size <= img->load_high,
            "segment %#x+%#x outside [%#x, %#x)", s.paddr, s.mem_size, img->load_low, img->load_high);
    }

    MultibootLoadParams p;
    p.kernel_name = "fuzz.elf";
    if (opts & 2)
        p.append = "console=ttyS0 x=1";
    if (opts & 1)
        p.modules.push_back(MultibootModule { "mod1 arg", std::vector<uint8_t>(100, 0x5A) });
    p.memory_map = { { 0, 0x9FC00, 1 }, { 0x9FC00, 0x400, 2 }, { 0xF0000, 0x10000, 2 }, { 0x100000, kDram - 0x100000, 1 } };
    auto& mc = memory();
    auto boot = load_multiboot(mc, *img, file, p);
    if (!boot) {
        check_message(boot.error());
        return 0;
    }
    FUZZ_CHECK(boot->entry == img->entry && boot->info_addr == kMultibootInfoAddr, "entry or info address");
    FUZZ_CHECK(boot->load_low == img->load_low && boot->load_high == img->load_high, "extent differs from the image's");
    FUZZ_CHECK(boot->buffer_end >= boot->load_high, "loader buffer below the kernel's end");

    // Nothing the loader writes afterwards (the low structures, the buffer above the kernel,
    // modules) may land on the kernel: only a later segment of the image itself may.
    auto const& segs = img->segments;
    for (size_t i = 0; i < segs.size(); ++i) {
        auto const& s = segs[i];
        Range mine { s.paddr, uint64_t(s.paddr) + s.mem_size };
        bool clobbered = false;
        for (size_t j = i + 1; j < segs.size(); ++j)
            clobbered |= mine.overlaps(segs[j].paddr, uint64_t(segs[j].paddr) + segs[j].mem_size);
        if (clobbered || s.mem_size == 0)
            continue;
        std::vector<uint8_t> back(s.mem_size);
        FUZZ_CHECK(mc.read(Spa(s.paddr), back, mmu::KeyId::none()).has_value(), "loaded segment not readable");
        FUZZ_CHECK(std::equal(back.begin(), back.begin() + s.file_size, file.begin() + long(s.file_offset)),
            "segment %zu bytes differ from the file", i);
        FUZZ_CHECK(std::all_of(back.begin() + s.file_size, back.end(), [](uint8_t b) { return b == 0; }),
            "segment %zu bss not zeroed", i);
    }
    // The information structure's command line (§3.3 offset 16, flag bit 2): "NAME APPEND".
    uint8_t info[kMultibootInfoSize];
    FUZZ_CHECK(mc.read(Spa(kMultibootInfoAddr), std::span(info), mmu::KeyId::none()).has_value(), "info unreadable");
    uint32_t flags = uint32_t(load_le(info, 4));
    FUZZ_CHECK(flags == boot->info_flags, "info flags %#x, boot says %#x", flags, boot->info_flags);
    if (flags & 4) {
        std::string want = p.kernel_name + " " + p.append;
        std::vector<uint8_t> got(want.size() + 1);
        FUZZ_CHECK(mc.read(Spa(uint32_t(load_le(std::span(info).subspan(16), 4))), got, mmu::KeyId::none()).has_value(),
            "cmdline unreadable");
        FUZZ_CHECK(std::equal(want.begin(), want.end(), got.begin()) && got.back() == 0, "cmdline differs");
    }
    return 0;
}
