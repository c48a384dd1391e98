// sevemu — the CPU's view of the machine's buses (cpu::IoHandler over the Machine's PIO and MMIO
// buses). Unclaimed accesses follow devices::UnclaimedPortPolicy (reads all ones, writes
// dropped) and are traced under "ioport.unclaimed" / "mmio.unclaimed"; port I/O of every kind
// can be traced under "ioport". There is one MachineIo per vCPU: its INTR pin is that vCPU's
// local APIC (which hears the 8259 pair through LVT0 ExtINT), the APIC's MMIO page is decoded
// here ahead of the shared MMIO bus for this vCPU only (only loads and stores that are not DRAM
// come here, so RAM and port I/O pay nothing for it), and the APIC's MSRs come through the
// cpu/io.h hooks.
#pragma once

#include "base/trace.h"
#include "cpu/io.h"
#include "devices/bus.h"
#include "devices/device.h"
#include "devices/lapic.h"

#include <functional>

namespace sevemu::emulator {

class MachineIo final : public cpu::IoHandler {
public:
    MachineIo(devices::Bus& pio, devices::Bus& mmio, devices::LocalApic& lapic, Trace const& trace)
        : m_pio(pio)
        , m_mmio(mmio)
        , m_lapic(lapic)
        , m_trace(trace)
    {
    }

    uint32_t port_in(uint16_t port, uint8_t size) override;
    void port_out(uint16_t port, uint8_t size, uint32_t value) override;
    uint64_t mmio_read(Spa addr, uint8_t size) override;
    void mmio_write(Spa addr, uint8_t size, uint64_t value) override;

    bool interrupt_pending() override { return m_lapic.interrupt_pending(); }
    uint8_t acknowledge_interrupt() override { return m_lapic.acknowledge(); }
    std::optional<uint64_t> apic_msr_read(uint32_t msr) override;
    std::optional<bool> apic_msr_write(uint32_t msr, uint64_t value) override;

    // Called after a guest write that may move a timer deadline (the LAPIC timer registers and
    // TSC_DEADLINE) or send an IPI (ICR): the Machine ends the vCPU's time slice there, so that
    // the next slice is sized to the new deadline and an IPI's target runs next — where slices
    // end depends only on what the guest did.
    void set_end_slice(std::function<void()> end_slice) { m_end_slice = std::move(end_slice); }

private:
    devices::Bus& m_pio;
    devices::Bus& m_mmio;
    devices::LocalApic& m_lapic;
    std::function<void()> m_end_slice;
    Trace const& m_trace;
};

} // namespace sevemu::emulator
