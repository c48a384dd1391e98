#include "emulator/machine_io.h"

#include "devices/pc_ports.h"

#include <fmt/format.h>

namespace sevemu::emulator {

uint32_t MachineIo::port_in(uint16_t port, uint8_t size)
{
    auto [value, claimed] = m_pio.read(port, size);
    if (!claimed && m_trace.enabled(devices::UnclaimedPortPolicy::kTraceCategory))
        m_trace.emit(devices::UnclaimedPortPolicy::kTraceCategory, fmt::format("in{} {:#06x}", size * 8, port));
    else if (m_trace.enabled("ioport"))
        m_trace.emit("ioport", fmt::format("in{} {:#06x} -> {:#x}", size * 8, port, value));
    return uint32_t(value);
}

void MachineIo::port_out(uint16_t port, uint8_t size, uint32_t value)
{
    bool claimed = m_pio.write(port, size, value);
    if (!claimed && m_trace.enabled(devices::UnclaimedPortPolicy::kTraceCategory))
        m_trace.emit(devices::UnclaimedPortPolicy::kTraceCategory, fmt::format("out{} {:#06x} <- {:#x}", size * 8, port, value));
    else if (m_trace.enabled("ioport"))
        m_trace.emit("ioport", fmt::format("out{} {:#06x} <- {:#x}", size * 8, port, value));
}

uint64_t MachineIo::mmio_read(Spa addr, uint8_t size)
{
    auto [value, claimed] = m_mmio.read(addr.value, size);
    if (!claimed && m_trace.enabled("mmio.unclaimed"))
        m_trace.emit("mmio.unclaimed", fmt::format("read{} {:#x}", size * 8, addr.value));
    return value;
}

void MachineIo::mmio_write(Spa addr, uint8_t size, uint64_t value)
{
    bool claimed = m_mmio.write(addr.value, size, value);
    if (!claimed && m_trace.enabled("mmio.unclaimed"))
        m_trace.emit("mmio.unclaimed", fmt::format("write{} {:#x} <- {:#x}", size * 8, addr.value, value));
}

} // namespace sevemu::emulator
