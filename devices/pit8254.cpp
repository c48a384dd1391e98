#include "devices/pit8254.h"

#include "devices/state_check.h"

#include <string>

namespace sevemu::devices {

namespace {

constexpr uint64_t kNsPerSecond = 1'000'000'000;

int64_t ticks_to_ns(uint64_t ticks)
{
    // Rounded up: the first nanosecond at which `ticks` input clocks have elapsed.
    return int64_t((unsigned __int128)ticks * kNsPerSecond / Pit8254::kFrequencyHz
        + (((unsigned __int128)ticks * kNsPerSecond % Pit8254::kFrequencyHz) != 0));
}

bool gate_suspends(uint8_t mode) { return mode == 0 || mode == 2 || mode == 3 || mode == 4; }

} // namespace

Pit8254::Pit8254(IrqLine& irq0, Clock clock)
    : m_irq0(irq0)
    , m_clock(std::move(clock))
{
    m_ch[2].gate = false; // channel 2's gate is port 0x61 bit 0, low at reset
}

void Pit8254::reset()
{
    m_ch = {};
    m_ch[2].gate = false;
    m_speaker_enable = false;
    m_advanced_to = m_clock();
    m_irq0.set(false);
}

uint64_t Pit8254::ticks(Channel const& c, int64_t now_ns) const
{
    if (!c.gate && gate_suspends(c.mode))
        now_ns = c.gate_low_ns;
    if (now_ns <= c.load_ns)
        return 0;
    return uint64_t((unsigned __int128)(now_ns - c.load_ns) * kFrequencyHz / kNsPerSecond);
}

uint16_t Pit8254::count_at(Channel const& c, int64_t now_ns) const
{
    if (!c.armed)
        return uint16_t(c.reload);
    uint64_t t = ticks(c, now_ns), n = c.reload;
    switch (c.mode) {
    case 2: return uint16_t(n - t % n);
    case 3: return uint16_t(n - (2 * t) % n);
    default: return uint16_t((n - t) & 0xFFFF); // 0, 1, 4, 5: count down, wrapping after zero
    }
}

bool Pit8254::out_at(Channel const& c, int64_t now_ns) const
{
    if (!c.armed)
        return c.mode != 0; // after a control word: low in mode 0, high in the others
    uint64_t t = ticks(c, now_ns), n = c.reload;
    switch (c.mode) {
    case 0:
    case 1: return t >= n;                  // high at terminal count
    case 2: return t % n != n - 1;           // low for the one clock when the count is 1
    case 3: return t % n < (n + 1) / 2;      // square wave: high for the first (longer) half
    default: return t != n;                 // 4, 5: a one-clock low strobe at terminal count
    }
}

uint16_t Pit8254::current_count(unsigned channel, int64_t now_ns) const { return count_at(m_ch[channel], now_ns); }
bool Pit8254::output(unsigned channel, int64_t now_ns) const { return out_at(m_ch[channel], now_ns); }

void Pit8254::advance(int64_t now_ns)
{
    Channel const& c = m_ch[0];
    int64_t from = m_advanced_to;
    m_advanced_to = now_ns;
    if (!c.armed || now_ns <= from || (!c.gate && gate_suspends(c.mode)))
        return;
    uint64_t t0 = ticks(c, from), t1 = ticks(c, now_ns), n = c.reload;
    bool edge = false;
    switch (c.mode) {
    case 0:
    case 1: edge = t0 < n && t1 >= n; break;
    case 2:
    case 3: edge = t1 / n > t0 / n; break;            // OUT rises as each period begins
    default: edge = t0 < n + 1 && t1 >= n + 1; break; // after the strobe
    }
    if (edge) {
        // An edge for the interrupt controller (the PIC latches it in IRR).
        m_irq0.set(true);
        m_irq0.set(false);
    }
}

std::optional<int64_t> Pit8254::next_irq_deadline(int64_t now_ns) const
{
    Channel const& c = m_ch[0];
    if (!c.armed || (!c.gate && gate_suspends(c.mode)))
        return std::nullopt;
    uint64_t t = ticks(c, now_ns), n = c.reload, next;
    switch (c.mode) {
    case 0:
    case 1:
        if (t >= n)
            return std::nullopt;
        next = n;
        break;
    case 2:
    case 3: next = (t / n + 1) * n; break;
    default:
        if (t >= n + 1)
            return std::nullopt;
        next = n + 1;
        break;
    }
    return c.load_ns + ticks_to_ns(next);
}

void Pit8254::latch(Channel& c)
{
    if (c.latched)
        return; // a second latch before the first is read is ignored (8254 data sheet)
    c.latched = count_at(c, m_clock());
    c.latched_msb_next = false;
}

void Pit8254::control_word(uint8_t v)
{
    unsigned sc = v >> 6;
    if (sc == 3) {
        // Read-back command: bit 5 = 0 latches counts, bit 4 = 0 latches status, bits 3-1 select.
        for (unsigned i = 0; i < 3; ++i) {
            if (!(v & (2u << i)))
                continue;
            Channel& c = m_ch[i];
            if (!(v & 0x20))
                latch(c);
            if (!(v & 0x10) && !c.status_latch) {
                uint8_t status = uint8_t((out_at(c, m_clock()) ? 0x80 : 0) | (c.null_count ? 0x40 : 0)
                    | (c.access << 4) | (c.mode << 1) | (c.bcd ? 1 : 0));
                c.status_latch = status;
            }
        }
        return;
    }
    Channel& c = m_ch[sc];
    unsigned rw = (v >> 4) & 3;
    if (rw == 0) { // counter latch command
        latch(c);
        return;
    }
    c.access = uint8_t(rw);
    c.mode = uint8_t((v >> 1) & 7);
    if (c.mode > 5)
        c.mode -= 4; // modes 6 and 7 are aliases of 2 and 3
    c.bcd = v & 1;
    c.armed = false; // counting waits for the new initial count
    c.null_count = true;
    c.write_msb_next = c.read_msb_next = false;
    c.latched.reset();
    c.status_latch.reset();
}

void Pit8254::load_count(Channel& c, uint16_t value)
{
    c.reload = value ? value : 0x10000; // 0 is the largest count, 2^16 (binary)
    if (c.mode == 2 || c.mode == 3) {
        if (c.reload == 1)
            c.reload = 2; // a count of 1 is illegal in modes 2 and 3; behave sanely
    }
    int64_t now = m_clock();
    c.load_ns = now;
    c.armed = true;
    c.null_count = false;
    if (m_advanced_to > now)
        m_advanced_to = now;
}

uint8_t Pit8254::read_counter(Channel& c)
{
    if (c.status_latch) {
        uint8_t s = *c.status_latch;
        c.status_latch.reset();
        return s;
    }
    uint16_t value;
    bool* msb_next;
    if (c.latched) {
        value = *c.latched;
        msb_next = &c.latched_msb_next;
    } else {
        value = count_at(c, m_clock());
        msb_next = &c.read_msb_next;
    }
    uint8_t out;
    switch (c.access) {
    case 1: out = uint8_t(value); break;
    case 2: out = uint8_t(value >> 8); break;
    default:
        out = *msb_next ? uint8_t(value >> 8) : uint8_t(value);
        *msb_next = !*msb_next;
        if (c.latched && !*msb_next) {
            c.latched.reset();
            return out;
        }
        return out;
    }
    c.latched.reset();
    return out;
}

void Pit8254::set_gate2(bool gate)
{
    Channel& c = m_ch[2];
    int64_t now = m_clock();
    if (gate == c.gate)
        return;
    if (!gate) {
        c.gate_low_ns = now;
    } else if (c.mode == 1 || c.mode == 5 || c.mode == 2 || c.mode == 3) {
        c.load_ns = now; // a rising gate (re)triggers these modes
    } else if (c.armed) {
        c.load_ns += now - c.gate_low_ns; // modes 0 and 4 resume where they stopped
    }
    c.gate = gate;
}

uint64_t Pit8254::Counters::read(uint64_t offset, unsigned)
{
    if (offset == 3)
        return 0xFF; // the control word register is write-only
    return m_pit.read_counter(m_pit.m_ch[offset]);
}

void Pit8254::Counters::write(uint64_t offset, unsigned, uint64_t value)
{
    uint8_t v = uint8_t(value);
    if (offset == 3) {
        m_pit.control_word(v);
        return;
    }
    Channel& c = m_pit.m_ch[offset];
    switch (c.access) {
    case 1: m_pit.load_count(c, v); break;
    case 2: m_pit.load_count(c, uint16_t(v << 8)); break;
    default:
        if (!c.write_msb_next) {
            c.write_lsb = v;
            c.write_msb_next = true;
            c.null_count = true;
        } else {
            c.write_msb_next = false;
            m_pit.load_count(c, uint16_t(c.write_lsb | (v << 8)));
        }
    }
}

uint64_t Pit8254::PortB::read(uint64_t, unsigned)
{
    // Port 0x61 (PC/AT system control port B): bit 0 gate 2, bit 1 speaker data, bit 4
    // refresh request (toggles every 15.085 us), bit 5 channel 2 OUT.
    int64_t now = m_pit.m_clock();
    bool refresh = (now / 15085) & 1;
    return (m_pit.m_ch[2].gate ? 0x01 : 0) | (m_pit.m_speaker_enable ? 0x02 : 0) | (refresh ? 0x10 : 0)
        | (m_pit.out_at(m_pit.m_ch[2], now) ? 0x20 : 0);
}

void Pit8254::PortB::write(uint64_t, unsigned, uint64_t value)
{
    m_pit.set_gate2(value & 0x01);
    m_pit.m_speaker_enable = value & 0x02;
}

void Pit8254::save(StateWriter& w) const
{
    for (Channel const& c : m_ch) {
        w.u8(c.mode);
        w.u8(c.access);
        w.boolean(c.bcd);
        w.u32(c.reload);
        w.boolean(c.armed);
        w.i64(c.load_ns);
        w.boolean(c.gate);
        w.i64(c.gate_low_ns);
        w.boolean(c.write_msb_next);
        w.boolean(c.read_msb_next);
        w.u8(c.write_lsb);
        w.boolean(c.latched.has_value());
        w.u16(c.latched.value_or(0));
        w.boolean(c.latched_msb_next);
        w.boolean(c.status_latch.has_value());
        w.u8(c.status_latch.value_or(0));
        w.boolean(c.null_count);
    }
    w.i64(m_advanced_to);
    w.boolean(m_speaker_enable);
}

void Pit8254::load(StateReader& r)
{
    std::array<Channel, 3> ch;
    for (Channel& c : ch) {
        c.mode = r.u8();
        c.access = r.u8();
        c.bcd = r.boolean();
        c.reload = r.u32();
        c.armed = r.boolean();
        c.load_ns = r.i64();
        c.gate = r.boolean();
        c.gate_low_ns = r.i64();
        c.write_msb_next = r.boolean();
        c.read_msb_next = r.boolean();
        c.write_lsb = r.u8();
        bool latched = r.boolean();
        uint16_t latched_value = r.u16();
        c.latched = latched ? std::optional<uint16_t>(latched_value) : std::nullopt;
        c.latched_msb_next = r.boolean();
        bool status = r.boolean();
        uint8_t status_value = r.u8();
        c.status_latch = status ? std::optional<uint8_t>(status_value) : std::nullopt;
        c.null_count = r.boolean();
    }
    int64_t advanced_to = r.i64();
    bool speaker = r.boolean();
    if (!read_to_end(r))
        return;
    for (unsigned i = 0; i < 3; ++i) {
        Channel const& c = ch[i];
        std::string which = "channel " + std::to_string(i);
        if (c.mode > 5)
            return r.fail(which + ": counting mode " + std::to_string(c.mode) + " is not 0-5");
        if (c.access > 3)
            return r.fail(which + ": access mode " + std::to_string(c.access) + " is not 0-3");
        if (c.reload == 0 || c.reload > 0x10000)
            return r.fail(which + ": count " + std::to_string(c.reload) + " is not 1-65536");
        if (c.armed && (c.mode == 2 || c.mode == 3) && c.reload < 2)
            return r.fail(which + ": count 1 in mode " + std::to_string(c.mode));
        if (i < 2 && !c.gate)
            return r.fail(which + ": gate low (it is wired high)");
    }
    m_ch = ch;
    m_advanced_to = advanced_to;
    m_speaker_enable = speaker;
}

} // namespace sevemu::devices
