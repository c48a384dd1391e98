// sevemu — the CPU's view of the machine's buses (cpu::IoHandler over the Machine's PIO and MMIO
// buses). Unclaimed accesses follow devices::UnclaimedPortPolicy (reads all ones, writes
// dropped) and are traced under "ioport.unclaimed" / "mmio.unclaimed"; port I/O of every kind
// can be traced under "ioport". The INTR pin is the machine's InterruptController (the 8259
// pair today, a local APIC per vCPU next): the CPU never sees which.
#pragma once

#include "base/trace.h"
#include "cpu/io.h"
#include "devices/bus.h"
#include "devices/device.h"

namespace sevemu::emulator {

class MachineIo final : public cpu::IoHandler {
public:
    MachineIo(devices::Bus& pio, devices::Bus& mmio, devices::InterruptController& interrupts, Trace const& trace)
        : m_pio(pio)
        , m_mmio(mmio)
        , m_interrupts(interrupts)
        , m_trace(trace)
    {
    }

    uint32_t port_in(uint16_t port, uint8_t size) override;
    void port_out(uint16_t port, uint8_t size, uint32_t value) override;
    uint64_t mmio_read(Spa addr, uint8_t size) override;
    void mmio_write(Spa addr, uint8_t size, uint64_t value) override;

    bool interrupt_pending() override { return m_interrupts.interrupt_pending(); }
    uint8_t acknowledge_interrupt() override { return m_interrupts.acknowledge(); }

private:
    devices::Bus& m_pio;
    devices::Bus& m_mmio;
    devices::InterruptController& m_interrupts;
    Trace const& m_trace;
};

} // namespace sevemu::emulator
