#include "devices/i8042.h"

#include "devices/state_check.h"

#include <string>

namespace sevemu::devices {

namespace {
constexpr uint8_t kCtrKbdInt = 0x01, kCtrAuxInt = 0x02, kCtrKbdDisable = 0x10, kCtrAuxDisable = 0x20;
constexpr uint8_t kNoDeviceReply = 0xFE;
} // namespace

I8042::I8042(IrqLine& kbd_irq, IrqLine& aux_irq, ResetRequest reset_request)
    : m_kbd_irq(kbd_irq)
    , m_aux_irq(aux_irq)
    , m_reset_request(std::move(reset_request))
{
    reset();
}

void I8042::reset()
{
    // QEMU hw/input/pckbd.c kbd_reset: both interrupts enabled, translation off; the status as
    // after POST (SYS set), keyboard not inhibited. Output port: reset line high, A20 on.
    m_ctr = kCtrKbdInt | kCtrAuxInt | 0x04;
    m_status = kStatusSys | kStatusUnlocked;
    m_output_port = 0x03;
    m_pending = 0;
    m_last = 0;
    m_queue.clear();
    update_irqs();
}

void I8042::push(uint8_t value, bool aux)
{
    if (m_queue.size() < kQueueLimit)
        m_queue.push_back({ value, aux });
    update_irqs();
}

void I8042::update_irqs()
{
    bool have = !m_queue.empty();
    bool aux = have && m_queue.front().aux;
    m_status = uint8_t((m_status & ~(kStatusObf | kStatusAuxData)) | (have ? kStatusObf : 0) | (aux ? kStatusAuxData : 0));
    bool kbd_level = have && !aux && (m_ctr & kCtrKbdInt);
    bool aux_level = have && aux && (m_ctr & kCtrAuxInt);
    if (m_kbd_irq.level() != kbd_level)
        m_kbd_irq.set(kbd_level);
    if (m_aux_irq.level() != aux_level)
        m_aux_irq.set(aux_level);
}

void I8042::command(uint8_t cmd)
{
    m_status |= kStatusCmd;
    m_pending = 0;
    switch (cmd) {
    case 0x20: push(m_ctr, false); break;
    case 0x60:
    case 0xD1:
    case 0xD2:
    case 0xD3:
    case 0xD4: m_pending = cmd; break;
    case 0xA7: m_ctr |= kCtrAuxDisable; break;
    case 0xA8: m_ctr &= uint8_t(~kCtrAuxDisable); break;
    case 0xA9: push(0x00, false); break; // aux interface test: no error
    case 0xAA:
        m_status |= kStatusSys;
        push(0x55, false); // self test passed
        break;
    case 0xAB: push(0x00, false); break; // keyboard interface test: no error
    case 0xAD: m_ctr |= kCtrKbdDisable; break;
    case 0xAE: m_ctr &= uint8_t(~kCtrKbdDisable); break;
    case 0xC0: push(0x00, false); break;
    case 0xD0: push(m_output_port, false); break;
    default:
        if (cmd >= 0xF0 && !(cmd & 0x01) && m_reset_request)
            m_reset_request(); // pulse output port bit 0: the CPU reset line
        break;
    }
}

void I8042::data(uint8_t value)
{
    m_status &= uint8_t(~kStatusCmd);
    uint8_t pending = m_pending;
    m_pending = 0;
    switch (pending) {
    case 0x60:
        m_ctr = value;
        update_irqs();
        return;
    case 0xD1:
        m_output_port = value;
        if (!(value & 0x01) && m_reset_request)
            m_reset_request(); // output port bit 0 low holds the CPU in reset
        return;
    case 0xD2: push(value, false); return;
    case 0xD3: push(value, true); return;
    case 0xD4:
        m_status |= kStatusTimeout; // no aux device answers
        push(kNoDeviceReply, true);
        return;
    default:
        m_status |= kStatusTimeout; // no keyboard answers
        push(kNoDeviceReply, false);
        return;
    }
}

uint8_t I8042::read_data()
{
    if (!m_queue.empty()) {
        m_last = m_queue.front().value;
        m_queue.pop_front();
        if (m_queue.empty())
            m_status &= uint8_t(~kStatusTimeout);
        update_irqs();
    }
    return m_last; // an empty buffer reads the last byte again
}

void I8042::save(StateWriter& w) const
{
    w.u8(m_ctr);
    w.u8(m_status);
    w.u8(m_output_port);
    w.u8(m_pending);
    w.u8(m_last);
    w.u8(uint8_t(m_queue.size()));
    for (Byte const& b : m_queue) {
        w.u8(b.value);
        w.boolean(b.aux);
    }
}

void I8042::load(StateReader& r)
{
    uint8_t ctr = r.u8(), status = r.u8(), output_port = r.u8(), pending = r.u8(), last = r.u8();
    uint8_t n = r.u8();
    if (r.ok() && n > kQueueLimit)
        return r.fail("output queue of " + std::to_string(n) + " bytes exceeds " + std::to_string(kQueueLimit));
    std::deque<Byte> queue;
    for (unsigned i = 0; i < n && r.ok(); ++i) {
        uint8_t v = r.u8();
        bool aux = r.boolean();
        queue.push_back({ v, aux });
    }
    if (!read_to_end(r))
        return;
    if (pending != 0 && pending != 0x60 && (pending < 0xD1 || pending > 0xD4))
        return r.fail("pending command " + std::to_string(pending) + " takes no data byte");
    if (status & 0x82)
        return r.fail("status has IBF or parity error set");
    m_ctr = ctr;
    m_status = status;
    m_output_port = output_port;
    m_pending = pending;
    m_last = last;
    m_queue = std::move(queue);
    update_irqs();
}

} // namespace sevemu::devices
