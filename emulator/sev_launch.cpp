#include "emulator/sev_launch.h"

#include "mmu/memory_controller.h"

#include <algorithm>
#include <fmt/format.h>

namespace sevemu::emulator {

std::vector<MeasuredRange> multiboot_measured_ranges(MultibootBoot const& boot)
{
    auto down = [](uint64_t v) { return v & ~kPageMask; };
    auto up = [](uint64_t v) { return (v + kPageMask) & ~kPageMask; };
    std::vector<MeasuredRange> r {
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

Result<LoadedLaunch, MachineError> load_kernel_launch(KernelLaunch const& launch)
{
    mmu::MemoryConfig cfg;
    cfg.dram_size = launch.memory_size;
    cfg.cache_pages = 16; // only raw (no key) accesses happen here
    auto mc = mmu::MemoryController::create(cfg);
    if (!mc)
        return make_unexpected(MachineError { fmt::format("cannot create {} MiB of scratch memory: {}",
            launch.memory_size >> 20, mmu::mem_error_name(mc.error())) });
    LoadedLaunch out;
    out.scratch = std::move(*mc);
    out.memory_map = pc_memory_map(*out.scratch);
    out.kernel = TRY(load_kernel_image(*out.scratch, out.memory_map, launch.kernel, launch.initrd, launch.append));
    out.ranges = multiboot_measured_ranges(out.kernel.boot);
    return out;
}

Result<LaunchDigest, MachineError> kernel_launch_digest(KernelLaunch const& launch)
{
    auto loaded = TRY(load_kernel_launch(launch));
    LaunchDigest out;
    out.ranges = loaded.ranges;
    firmware::Sha256Stream ld;
    std::vector<uint8_t> page(kPageSize);
    for (auto const& range : out.ranges) {
        for (uint64_t off = 0; off < range.size; off += kPageSize) {
            if (!loaded.scratch->read(Spa(range.gpa + off), page, mmu::KeyId::none()))
                return make_unexpected(MachineError { fmt::format("measured page {:#x} is not guest RAM", range.gpa + off) });
            ld.update(page);
        }
    }
    out.digest = ld.peek();
    return out;
}

} // namespace sevemu::emulator
