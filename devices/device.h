// sevemu — what every device on the board has: a name, a reset, and its state written to and
// read from a snapshot section (base/state_stream.h). The Machine keeps its devices in one
// owned list of these, with where each sits on the port-I/O and MMIO buses (emulator/machine.h),
// and resets, saves and restores them in that order.
//
// And the interface a vCPU asks for its next external interrupt: the 8259 pair today (through
// the INTR pin), a local APIC per vCPU next. The CPU never sees which.
#pragma once

#include "base/state_stream.h"

#include <cstdint>
#include <optional>
#include <string_view>

namespace sevemu::devices {

class Device {
public:
    virtual ~Device() = default;
    // Unique on the machine and the name of its snapshot section: lowercase, digits, '-'.
    virtual std::string_view name() const = 0;
    // The power-on / system_reset state (the device's data sheet).
    virtual void reset() = 0;
    // The layout version of the section save() writes; load() refuses others.
    virtual uint32_t state_version() const = 0;
    virtual void save(StateWriter&) const = 0;
    // Reads what save() wrote (the section's version is already checked). On any failure the
    // reader carries the error (StateReader::fail) and the device is unchanged.
    virtual void load(StateReader&) = 0;
};

// The interrupt controller a vCPU asks: is an external interrupt pending for it, and (the INTA
// cycle, once the vCPU takes it) which vector. acknowledge() returns nothing when the request
// went away in between (a spurious interrupt is the controller's own business: the 8259 gives
// IRQ 7's vector).
class InterruptController {
public:
    virtual ~InterruptController() = default;
    virtual bool interrupt_pending() const = 0;
    virtual uint8_t acknowledge() = 0;
};

// Where interrupt request lines end: the machine's router hands each input line (a GSI, the ISA
// IRQ number for the legacy devices) to the interrupt controllers wired to it.
class IrqSink {
public:
    virtual ~IrqSink() = default;
    virtual void set_irq(unsigned line, bool level) = 0;
};

} // namespace sevemu::devices
