// sevemu — the machine's interrupt routing: devices drive interrupt lines (devices::IrqLine),
// each line is an input of the router by number (the ISA IRQ number for the legacy devices, the
// GSI later), and the router hands every level change to the interrupt controllers wired to it
// (devices::IrqSink): the 8259 pair and, beside it, the IOAPIC (through the machine's ISA-to-GSI
// map: IRQ 0 is GSI 2), without a device or the CPU knowing.
#pragma once

#include "devices/bus.h"
#include "devices/device.h"

#include <array>
#include <vector>

namespace sevemu::emulator {

class IrqRouter final : public devices::IrqSink {
public:
    static constexpr unsigned kIsaLines = 16;

    IrqRouter()
    {
        for (unsigned n = 0; n < kIsaLines; ++n)
            m_isa[n].connect([this, n](bool level) { set_irq(n, level); });
    }
    IrqRouter(IrqRouter const&) = delete;
    IrqRouter& operator=(IrqRouter const&) = delete;

    // An interrupt controller that hears every line.
    void connect(devices::IrqSink& sink) { m_sinks.push_back(&sink); }
    // The line a device on ISA IRQ n drives.
    devices::IrqLine& isa_line(unsigned n) { return m_isa.at(n); }

    void set_irq(unsigned line, bool level) override
    {
        for (auto* s : m_sinks)
            s->set_irq(line, level);
    }

private:
    std::array<devices::IrqLine, kIsaLines> m_isa;
    std::vector<devices::IrqSink*> m_sinks;
};

} // namespace sevemu::emulator
