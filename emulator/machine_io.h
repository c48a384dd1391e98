// sevemu — the CPU's view of the machine's buses (cpu::IoHandler over the Machine's PIO and MMIO
// buses). Unclaimed accesses follow devices::UnclaimedPortPolicy (reads all ones, writes
// dropped) and are traced under "ioport.unclaimed" / "mmio.unclaimed"; port I/O of every kind
// can be traced under "ioport".
#pragma once

#include "base/trace.h"
#include "cpu/io.h"
#include "devices/bus.h"

#include <functional>

namespace sevemu::emulator {

class MachineIo final : public cpu::IoHandler {
public:
    MachineIo(devices::Bus& pio, devices::Bus& mmio, Trace const& trace)
        : m_pio(pio)
        , m_mmio(mmio)
        , m_trace(trace)
    {
    }

    uint32_t port_in(uint16_t port, uint8_t size) override;
    void port_out(uint16_t port, uint8_t size, uint32_t value) override;
    uint64_t mmio_read(Spa addr, uint8_t size) override;
    void mmio_write(Spa addr, uint8_t size, uint64_t value) override;

    // The interrupt controller (8259 pair now, the local APIC later) plugs in here.
    using PendingFn = std::function<bool()>;
    using AckFn = std::function<uint8_t()>;
    void set_interrupt_controller(PendingFn pending, AckFn ack)
    {
        m_pending = std::move(pending);
        m_ack = std::move(ack);
    }
    bool interrupt_pending() override { return m_pending && m_pending(); }
    uint8_t acknowledge_interrupt() override { return m_ack ? m_ack() : 0; }

private:
    devices::Bus& m_pio;
    devices::Bus& m_mmio;
    Trace const& m_trace;
    PendingFn m_pending;
    AckFn m_ack;
};

} // namespace sevemu::emulator
