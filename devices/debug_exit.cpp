#include "devices/debug_exit.h"

namespace sevemu::devices {

int DebugExit::exit_status(uint64_t value, unsigned size)
{
    // QEMU: exit((val << 1) | 1) with val of the access width; the process status keeps the low
    // 8 bits (so a write of 0x10 gives 0x21 = 33, a write of 0x80 gives 1).
    uint64_t v = size >= 8 ? value : value & ((1ull << (8 * size)) - 1);
    return int(((v << 1) | 1) & 0xff);
}

void DebugExit::write(uint64_t, unsigned size, uint64_t value)
{
    if (m_on_exit)
        m_on_exit(exit_status(value, size));
}

} // namespace sevemu::devices
