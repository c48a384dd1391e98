// sevemu — how every kernel loader (multiboot.cpp, linux_boot.cpp) writes guest RAM: raw DRAM
// bytes through the memory controller, refused with one line naming what did not fit.
#pragma once

#include "base/result.h"
#include "emulator/multiboot.h" // LoadError

#include <cstdint>
#include <span>
#include <string_view>

namespace sevemu::mmu {
class MemoryController;
}

namespace sevemu::emulator {

// `bytes` at guest-physical `addr`; `what` names the piece in the error ("kernel segment").
Result<void, LoadError> write_guest(mmu::MemoryController&, uint64_t addr, std::span<uint8_t const> bytes, std::string_view what);
// `size` zero bytes at `addr`, a chunk at a time (a bss may be as large as RAM below 4 GiB).
Result<void, LoadError> write_guest_zeros(mmu::MemoryController&, uint64_t addr, uint64_t size, std::string_view what);

} // namespace sevemu::emulator
