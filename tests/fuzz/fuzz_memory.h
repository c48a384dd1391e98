// sevemu fuzzing — the guest DRAM a loader harness loads into: one memory controller of `dram`
// bytes per process (made once; libFuzzer calls the harness millions of times).
#pragma once

#include "fuzz_check.h"
#include "mmu/memory_controller.h"

#include <memory>

namespace sevemu::fuzz {

inline std::unique_ptr<mmu::MemoryController> make_loader_memory(uint64_t dram)
{
    mmu::MemoryConfig cfg;
    cfg.dram_size = dram;
    cfg.key_slots = 2;
    cfg.cache_pages = 64;
    auto m = mmu::MemoryController::create(cfg);
    FUZZ_CHECK(m.has_value(), "memory controller");
    return std::move(*m);
}

} // namespace sevemu::fuzz
