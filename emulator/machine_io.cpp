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

namespace {
// The registers whose writes end the slice (xAPIC offsets; x2APIC MSR = 0x800 + offset >> 4).
bool ends_slice(uint32_t offset)
{
    using L = devices::LocalApic;
    return offset == L::kIcrLow || offset == L::kLvtTimer || offset == L::kTimerInitial || offset == L::kTimerDivide
        || offset == L::kSelfIpi;
}

bool in_apic_page(devices::LocalApic const& lapic, Spa addr)
{
    return lapic.mmio_decoded() && addr.value - lapic.mmio_base() < devices::LocalApic::kMmioLength;
}
}

uint64_t MachineIo::mmio_read(Spa addr, uint8_t size)
{
    if (in_apic_page(m_lapic, addr))
        return m_lapic.read(addr.value - m_lapic.mmio_base(), size);
    auto [value, claimed] = m_mmio.read(addr.value, size);
    if (!claimed && m_trace.enabled("mmio.unclaimed"))
        m_trace.emit("mmio.unclaimed", fmt::format("read{} {:#x}", size * 8, addr.value));
    return value;
}

void MachineIo::mmio_write(Spa addr, uint8_t size, uint64_t value)
{
    if (in_apic_page(m_lapic, addr)) {
        uint64_t offset = addr.value - m_lapic.mmio_base();
        m_lapic.write(offset, size, value);
        if (m_end_slice && ends_slice(uint32_t(offset & 0xFF0)))
            m_end_slice();
        return;
    }
    bool claimed = m_mmio.write(addr.value, size, value);
    if (!claimed && m_trace.enabled("mmio.unclaimed"))
        m_trace.emit("mmio.unclaimed", fmt::format("write{} {:#x} <- {:#x}", size * 8, addr.value, value));
}

std::optional<uint64_t> MachineIo::apic_msr_read(uint32_t msr)
{
    if (!devices::LocalApic::handles_msr(msr))
        return std::nullopt;
    auto r = m_lapic.read_msr(msr);
    if (!r)
        return std::nullopt; // #GP(0)
    return *r;
}

std::optional<bool> MachineIo::apic_msr_write(uint32_t msr, uint64_t value)
{
    if (!devices::LocalApic::handles_msr(msr))
        return std::nullopt;
    bool ok = bool(m_lapic.write_msr(msr, value));
    if (m_end_slice && (msr == devices::LocalApic::kMsrTscDeadline
            || (msr >= devices::LocalApic::kMsrX2apicFirst && msr <= devices::LocalApic::kMsrX2apicLast
                && ends_slice((msr - devices::LocalApic::kMsrX2apicFirst) << 4))))
        m_end_slice();
    return ok;
}

} // namespace sevemu::emulator
