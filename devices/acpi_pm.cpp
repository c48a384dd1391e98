#include "devices/acpi_pm.h"

#include "devices/state_check.h"

namespace sevemu::devices {

uint32_t AcpiPm::timer() const
{
    int64_t ns = m_clock();
    if (ns < 0)
        ns = 0;
    return uint32_t((unsigned __int128)ns * kTimerHz / 1'000'000'000u) & 0xFFFFFF; // TMR_VAL is 24 bits
}

uint8_t AcpiPm::read_byte(uint64_t offset) const
{
    uint16_t reg = 0;
    switch (offset & ~uint64_t(1)) {
    case kPm1Status: reg = m_status; break;
    case kPm1Enable: reg = m_enable; break;
    case kPm1Control: reg = m_control & uint16_t(~kSlpEn); break; // SLP_EN is write-only
    case kPmTimer: return uint8_t(timer() >> (8 * (offset - kPmTimer)));
    case kPmTimer + 2: return uint8_t(timer() >> (8 * (offset - kPmTimer)));
    default: return 0;
    }
    return uint8_t(reg >> (8 * (offset & 1)));
}

uint64_t AcpiPm::read(uint64_t offset, unsigned size)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < size && offset + i < kLength; ++i)
        v |= uint64_t(read_byte(offset + i)) << (8 * i);
    return v;
}

void AcpiPm::write(uint64_t offset, unsigned size, uint64_t value)
{
    // Assemble each 16-bit register from the byte lanes written, then act once.
    for (uint64_t reg : { kPm1Status, kPm1Enable, kPm1Control }) {
        uint16_t mask = 0, bits = 0;
        for (unsigned i = 0; i < size; ++i) {
            uint64_t at = offset + i;
            if (at == reg || at == reg + 1) {
                unsigned lane = unsigned(at - reg);
                mask |= uint16_t(0xFF << (8 * lane));
                bits |= uint16_t(((value >> (8 * i)) & 0xFF) << (8 * lane));
            }
        }
        if (!mask)
            continue;
        if (reg == kPm1Status) {
            m_status &= uint16_t(~(bits & mask)); // write 1 to clear (ACPI 6.4 §4.8.3.1)
        } else if (reg == kPm1Enable) {
            m_enable = uint16_t((m_enable & ~mask) | (bits & mask));
        } else {
            m_control = uint16_t((m_control & ~mask) | (bits & mask));
            if (m_control & kSlpEn) {
                m_control &= uint16_t(~kSlpEn);
                unsigned slp_typ = (m_control >> 10) & 7;
                if (slp_typ == 0 && m_power_off)
                    m_power_off(); // QEMU's \_S5: soft off
            }
        }
    }
}

void AcpiPm::save(StateWriter& w) const
{
    w.u16(m_status);
    w.u16(m_enable);
    w.u16(m_control);
}

void AcpiPm::load(StateReader& r)
{
    uint16_t status = r.u16(), enable = r.u16(), control = r.u16();
    if (!read_to_end(r))
        return;
    if (control & kSlpEn)
        return r.fail("PM1_CNT has SLP_EN set (it is write-only)");
    m_status = status;
    m_enable = enable;
    m_control = control;
}

} // namespace sevemu::devices
