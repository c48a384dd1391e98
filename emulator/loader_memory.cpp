#include "emulator/loader_memory.h"

#include "mmu/memory_controller.h"

#include <algorithm>
#include <fmt/format.h>
#include <vector>

namespace sevemu::emulator {

Result<void, LoadError> write_guest(mmu::MemoryController& mc, uint64_t addr, std::span<uint8_t const> bytes, std::string_view what)
{
    if (bytes.empty())
        return {};
    if (!mc.is_dram(Spa(addr), bytes.size()))
        return Unexpected(LoadError { fmt::format("{} at {:#x}-{:#x} does not fit in guest RAM (see -m)", what, addr, addr + bytes.size() - 1) });
    if (auto r = mc.write(Spa(addr), bytes, mmu::KeyId::none()); !r)
        return Unexpected(LoadError { fmt::format("cannot write {} at {:#x}: {}", what, addr, mmu::mem_error_name(r.error())) });
    return {};
}

Result<void, LoadError> write_guest_zeros(mmu::MemoryController& mc, uint64_t addr, uint64_t size, std::string_view what)
{
    static constexpr size_t kChunk = 64 * 1024;
    std::vector<uint8_t> zeros(std::min<uint64_t>(kChunk, size), 0);
    for (uint64_t at = 0; at < size; at += kChunk) {
        size_t n = size_t(std::min<uint64_t>(kChunk, size - at));
        TRY(write_guest(mc, addr + at, std::span<uint8_t const>(zeros.data(), n), what));
    }
    return {};
}

} // namespace sevemu::emulator
