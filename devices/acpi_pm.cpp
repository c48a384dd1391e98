#include "devices/acpi_pm.h"

#include "devices/state_check.h"

namespace sevemu::devices {

namespace {
constexpr uint64_t kNsPerSecond = 1'000'000'000;
constexpr uint64_t kOverflowTicks = 1ull << 23; // TMR_STS: bit 23 of the PM timer changes
} // namespace

void AcpiPm::reset()
{
    m_status = m_enable = m_control = 0;
    m_period = period_at(m_clock());
    update_sci();
}

uint64_t AcpiPm::period_at(int64_t ns) const
{
    if (ns < 0)
        ns = 0;
    return uint64_t((unsigned __int128)ns * kTimerHz / kNsPerSecond / kOverflowTicks);
}

void AcpiPm::update_sci()
{
    if (m_sci && m_sci->level() != sci_level())
        m_sci->set(sci_level());
}

void AcpiPm::advance(int64_t now_ns)
{
    uint64_t p = period_at(now_ns);
    if (p > m_period) {
        m_period = p;
        m_status |= kTmrSts;
        update_sci();
    }
}

std::optional<int64_t> AcpiPm::next_deadline() const
{
    if (!(m_enable & kTmrSts) || (m_status & kTmrSts))
        return std::nullopt;
    // The first nanosecond at which the timer has counted (m_period + 1) * 2^23 ticks.
    unsigned __int128 ticks = (unsigned __int128)(m_period + 1) * kOverflowTicks;
    return int64_t((ticks * kNsPerSecond + kTimerHz - 1) / kTimerHz);
}

void AcpiPm::press_power_button()
{
    m_status |= kPwrBtnSts;
    update_sci();
}

uint32_t AcpiPm::timer() const
{
    int64_t ns = m_clock();
    if (ns < 0)
        ns = 0;
    return uint32_t((unsigned __int128)ns * kTimerHz / 1'000'000'000u) & 0xFFFFFF; // TMR_VAL is 24 bits
}

uint8_t AcpiPm::read_byte(uint64_t offset)
{
    uint16_t reg = 0;
    if ((offset & ~uint64_t(1)) == kPm1Status)
        advance(m_clock()); // TMR_STS is current when read
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
            advance(m_clock());
            m_status &= uint16_t(~(bits & mask)); // write 1 to clear (ACPI 6.4 §4.8.3.1)
            update_sci();
        } else if (reg == kPm1Enable) {
            m_enable = uint16_t((m_enable & ~mask) | (bits & mask));
            update_sci();
        } else {
            m_control = uint16_t((m_control & ~mask) | (bits & mask));
            if (m_control & kSlpEn) {
                m_control &= uint16_t(~kSlpEn);
                unsigned slp_typ = (m_control >> 10) & 7;
                if (slp_typ == kS5SlpTyp && m_power_off)
                    m_power_off(); // \_S5: soft off
            }
        }
    }
}

void AcpiPm::save(StateWriter& w) const
{
    w.u16(m_status);
    w.u16(m_enable);
    w.u16(m_control);
    w.u64(m_period);
}

void AcpiPm::load(StateReader& r)
{
    uint16_t status = r.u16(), enable = r.u16(), control = r.u16();
    uint64_t period = r.u64();
    if (!read_to_end(r))
        return;
    if (control & kSlpEn)
        return r.fail("PM1_CNT has SLP_EN set (it is write-only)");
    m_status = status;
    m_enable = enable;
    m_control = control;
    m_period = period;
    update_sci();
}

} // namespace sevemu::devices
