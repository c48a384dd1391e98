// sevemu — the I/O APIC: an 82093AA-style IOAPIC at 0xFEC00000 with 24 input pins (GSIs 0-23).
//
// Source: Intel 82093AA I/O Advanced Programmable Interrupt Controller data sheet (order no.
// 290566): §3.0 registers — IOREGSEL at offset 0x00 (bits 7:0 select), IOWIN at 0x10; indirect
// registers IOAPICID (0x00, ID in bits 27:24), IOAPICVER (0x01: version 0x11, maximum
// redirection entry 23 in bits 23:16), IOAPICARB (0x02, arbitration ID in 27:24, read-only),
// IOREDTBL[n] at 0x10 + 2n (low) / 0x11 + 2n (high): vector 7:0, delivery mode 10:8,
// destination mode 11, delivery status 12 (RO), interrupt input pin polarity 13 (1 = active
// low), remote IRR 14 (RO), trigger mode 15 (1 = level), mask 16, destination 63:56.
//
// Behaviour (82093AA §2.4/§3.2.4):
// - set_irq(pin, level) takes the pin's electrical level; the polarity bit says which level is
//   "asserted". The machine routes each GSI's source here; sources that raise IrqLine true when
//   they interrupt are active high, which is what the MADT must declare for them (ISA
//   defaults, and active-high level for the SCI as QEMU's MADT does).
// - Edge-triggered entries deliver on each transition to asserted while unmasked (an edge while
//   masked is lost). Level-triggered entries deliver while the pin is asserted, unmasked and
//   remote IRR is clear; remote IRR is set when a LAPIC accepts the message and cleared by the
//   EOI broadcast of its vector (end_of_interrupt, wired through ApicRouter::attach), after which
//   a still-asserted pin is delivered again. Unmasking an asserted level entry delivers it.
//   Rewriting an entry as edge-triggered clears remote IRR (QEMU hw/intc/ioapic.c does the same).
// - Delivery through the ApicBus (devices/apic_bus.h) is synchronous, so delivery status
//   reads idle. Messages carry the 8-bit xAPIC destination (no interrupt remapping).
// - IOREGSEL/IOWIN take 32-bit accesses; a narrower write to IOREGSEL sets the select byte,
//   narrower IOWIN writes are dropped. Unimplemented indirect registers read 0, writes are
//   ignored. Other offsets in the 4 KiB window read 0.
//
// Snapshot section "ioapic", version 1: u32 IOREGSEL, u32 ID register, 24 x u64 redirection
// entries (remote IRR included), u32 pin levels (bit n = pin n).
#pragma once

#include "devices/apic_bus.h"
#include "devices/bus.h"
#include "devices/device.h"

#include <array>
#include <cstdint>
#include <string_view>

namespace sevemu::devices {

class IoApic final : public BusDevice, public Device, public IrqSink, public EoiListener {
public:
    static constexpr uint32_t kStateVersion = 1;
    static constexpr uint64_t kDefaultBase = 0xFEC00000, kMmioLength = 0x1000;
    static constexpr unsigned kPins = 24;
    static constexpr uint32_t kVersion = 0x00170011; // 82093AA: version 0x11, max entry 23
    static constexpr uint64_t kRegSel = 0x00, kWindow = 0x10;
    static constexpr uint64_t kMasked = 1ull << 16, kRemoteIrr = 1ull << 14, kLevel = 1ull << 15,
                              kActiveLow = 1ull << 13;

    IoApic() { reset(); }
    void connect_bus(ApicBus* bus) { m_bus = bus; }

    // BusDevice (MMIO at kDefaultBase).
    std::string_view name() const override { return "ioapic"; }
    uint64_t read(uint64_t offset, unsigned size) override;
    void write(uint64_t offset, unsigned size, uint64_t value) override;

    // IrqSink: GSI `pin` (0-23; others ignored) at electrical level `level`.
    void set_irq(unsigned pin, bool level) override;
    // EoiListener: a LAPIC's EOI of a level-triggered vector.
    void end_of_interrupt(uint8_t vector) override;

    uint64_t entry(unsigned pin) const { return m_redir[pin]; }

    void reset() override;
    uint32_t state_version() const override { return kStateVersion; }
    void save(StateWriter&) const override;
    void load(StateReader&) override;

private:
    uint32_t read_indirect(uint32_t index) const;
    void write_indirect(uint32_t index, uint32_t value);
    bool asserted(unsigned pin) const { return bool(m_levels & (1u << pin)) != bool(m_redir[pin] & kActiveLow); }
    void service(unsigned pin); // delivers a level entry if it should be
    void deliver(unsigned pin);

    ApicBus* m_bus {};
    uint32_t m_regsel {};
    uint32_t m_id {};
    std::array<uint64_t, kPins> m_redir {};
    uint32_t m_levels {};
};

} // namespace sevemu::devices
