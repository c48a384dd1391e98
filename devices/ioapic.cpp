#include "devices/ioapic.h"

#include "devices/state_check.h"

#include <string>

namespace sevemu::devices {

namespace {
// Writable bits of a redirection entry: everything but delivery status (12), remote IRR (14)
// and the reserved bits 55:17 (82093AA §3.2.4).
constexpr uint64_t kEntryWritable = 0xFF0000000001AFFFull;
} // namespace

void IoApic::reset()
{
    // 82093AA §3.2.4: every entry masked after reset; ID 0.
    m_regsel = 0;
    m_id = 0;
    m_redir.fill(kMasked);
    m_levels = 0;
}

uint32_t IoApic::read_indirect(uint32_t index) const
{
    switch (index) {
    case 0x00: return m_id;
    case 0x01: return kVersion;
    case 0x02: return m_id; // arbitration ID: the APIC ID after reset (82093AA §3.2.3)
    default: break;
    }
    if (index >= 0x10 && index < 0x10 + 2 * kPins) {
        uint64_t e = m_redir[(index - 0x10) / 2];
        return (index & 1) ? uint32_t(e >> 32) : uint32_t(e);
    }
    return 0;
}

void IoApic::write_indirect(uint32_t index, uint32_t value)
{
    if (index == 0x00) {
        m_id = value & 0x0F000000; // ID bits 27:24
        return;
    }
    if (index < 0x10 || index >= 0x10 + 2 * kPins)
        return; // version, arbitration: read-only; others unimplemented
    unsigned pin = (index - 0x10) / 2;
    uint64_t& e = m_redir[pin];
    uint64_t fixed = e & ~kEntryWritable; // remote IRR (and the RO delivery status) stay
    uint64_t v = (index & 1) ? ((uint64_t(value) << 32) | (e & 0xFFFFFFFFull)) : ((e & ~0xFFFFFFFFull) | value);
    e = (v & kEntryWritable) | (fixed & kRemoteIrr);
    if (!(e & kLevel))
        e &= ~kRemoteIrr; // an edge entry has no remote IRR (QEMU hw/intc/ioapic.c)
    service(pin);
}

uint64_t IoApic::read(uint64_t offset, unsigned size)
{
    uint64_t mask = size >= 8 ? ~0ull : (1ull << (8 * size)) - 1;
    if (offset == kRegSel)
        return m_regsel & mask;
    if (offset == kWindow)
        return read_indirect(m_regsel) & mask;
    return 0;
}

void IoApic::write(uint64_t offset, unsigned size, uint64_t value)
{
    if (offset == kRegSel) {
        m_regsel = uint32_t(value) & 0xFF;
        return;
    }
    if (offset == kWindow && size >= 4)
        write_indirect(m_regsel, uint32_t(value));
}

void IoApic::deliver(unsigned pin)
{
    uint64_t e = m_redir[pin];
    ApicMessage m;
    m.vector = uint8_t(e);
    m.mode = ApicDeliveryMode((e >> 8) & 7);
    m.logical = e & (1ull << 11);
    m.level_triggered = e & kLevel;
    m.destination = uint32_t(e >> 56);
    m.x2apic_format = false;
    unsigned accepted = m_bus ? m_bus->send(m) : 0;
    bool counts = m.mode == ApicDeliveryMode::Fixed || m.mode == ApicDeliveryMode::LowestPriority;
    if ((e & kLevel) && counts && accepted)
        m_redir[pin] |= kRemoteIrr;
}

void IoApic::service(unsigned pin)
{
    uint64_t e = m_redir[pin];
    if ((e & kLevel) && !(e & kMasked) && !(e & kRemoteIrr) && asserted(pin))
        deliver(pin);
}

void IoApic::set_irq(unsigned pin, bool level)
{
    if (pin >= kPins)
        return;
    bool was = asserted(pin);
    m_levels = level ? (m_levels | (1u << pin)) : (m_levels & ~(1u << pin));
    uint64_t e = m_redir[pin];
    if (e & kLevel)
        service(pin);
    else if (!was && asserted(pin) && !(e & kMasked))
        deliver(pin);
}

void IoApic::end_of_interrupt(uint8_t vector)
{
    for (unsigned pin = 0; pin < kPins; ++pin) {
        uint64_t& e = m_redir[pin];
        if (uint8_t(e) == vector && (e & kRemoteIrr)) {
            e &= ~kRemoteIrr;
            service(pin); // a level line still asserted interrupts again
        }
    }
}

void IoApic::save(StateWriter& w) const
{
    w.u32(m_regsel);
    w.u32(m_id);
    for (uint64_t e : m_redir)
        w.u64(e);
    w.u32(m_levels);
}

void IoApic::load(StateReader& r)
{
    uint32_t regsel = r.u32(), id = r.u32();
    std::array<uint64_t, kPins> redir;
    for (uint64_t& e : redir)
        e = r.u64();
    uint32_t levels = r.u32();
    if (!read_to_end(r))
        return;
    if (regsel > 0xFF)
        return r.fail("IOREGSEL " + std::to_string(regsel) + " is not 0-255");
    if (id & ~0x0F000000u)
        return r.fail("ID register has reserved bits set");
    for (unsigned pin = 0; pin < kPins; ++pin) {
        uint64_t e = redir[pin];
        if (e & ~(kEntryWritable | kRemoteIrr))
            return r.fail("redirection entry " + std::to_string(pin) + " has reserved bits set");
        if ((e & kRemoteIrr) && !(e & kLevel))
            return r.fail("redirection entry " + std::to_string(pin) + ": remote IRR on an edge entry");
    }
    if (levels >> kPins)
        return r.fail("pin levels beyond pin 23");
    m_regsel = regsel;
    m_id = id;
    m_redir = redir;
    m_levels = levels;
}

} // namespace sevemu::devices
