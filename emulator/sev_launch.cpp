#include "emulator/sev_launch.h"

#include "mmu/memory_controller.h"

#include <algorithm>
#include <fmt/format.h>

namespace sevemu::emulator {

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
    out.kernel = TRY(load_kernel_image(*out.scratch, out.memory_map, launch.kernel, launch.initrd, launch.append, launch.smp,
        launch.cbitpos));
    out.memory_map = out.kernel.memory_map;
    out.ranges = out.kernel.ranges;
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
