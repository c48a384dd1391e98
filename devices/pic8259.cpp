#include "devices/pic8259.h"

#include "devices/state_check.h"

#include <string>

namespace sevemu::devices {

Pic8259Pair::Pic8259Pair()
{
    m_chip[0].elcr_mask = 0xF8; // IRQ 0, 1, 2 are always edge (PIIX4 ELCR1)
    m_chip[1].elcr_mask = 0xDE; // IRQ 8 and 13 are always edge (PIIX4 ELCR2)
    reset();
}

void Pic8259Pair::reset()
{
    for (auto& c : m_chip) {
        c.reset_chip();
        c.imr = 0;
        c.elcr = 0;
        c.last_level = 0;
        c.irr = 0;
    }
    update();
}

void Pic8259Pair::Chip::reset_chip()
{
    // What ICW1 does (8259A data sheet, "Initialization Command Words"): clear the ISR and the
    // edge-sense latch, IR7 lowest priority, special mask off, status read = IRR.
    isr = 0;
    lowest_priority_rotation = 0;
    init_step = 0;
    icw4_needed = single = auto_eoi = rotate_on_auto_eoi = special_fully_nested = false;
    read_isr = poll = special_mask = false;
}

void Pic8259Pair::Chip::set_line(unsigned line, bool level)
{
    uint8_t bit = uint8_t(1u << line);
    if (elcr & bit) { // level triggered: IRR follows the line
        if (level)
            irr |= bit, last_level |= bit;
        else
            irr &= uint8_t(~bit), last_level &= uint8_t(~bit);
        return;
    }
    if (level) { // edge triggered: a rising edge sets IRR
        if (!(last_level & bit))
            irr |= bit;
        last_level |= bit;
    } else {
        last_level &= uint8_t(~bit);
    }
}

int Pic8259Pair::Chip::priority_of(uint8_t bits) const
{
    if (!bits)
        return 8;
    int p = 0;
    while (!(bits & (1u << ((p + lowest_priority_rotation) & 7))))
        ++p;
    return p;
}

int Pic8259Pair::Chip::pending(bool is_master) const
{
    int p = priority_of(uint8_t(irr & ~imr));
    if (p == 8)
        return -1;
    uint8_t in_service = isr;
    if (special_mask)
        in_service &= uint8_t(~imr); // special mask mode: masked levels do not block
    if (special_fully_nested && is_master)
        in_service &= uint8_t(~(1u << 2)); // SFNM: the slave may interrupt its own service
    return p < priority_of(in_service) ? (p + lowest_priority_rotation) & 7 : -1;
}

void Pic8259Pair::Chip::acknowledge_line(unsigned line)
{
    uint8_t bit = uint8_t(1u << line);
    if (auto_eoi) {
        if (rotate_on_auto_eoi)
            lowest_priority_rotation = uint8_t((line + 1) & 7);
    } else {
        isr |= bit;
    }
    if (!(elcr & bit))
        irr &= uint8_t(~bit); // edge: the request is consumed; level: it stays while the line is high
}

void Pic8259Pair::Chip::write(uint64_t offset, uint8_t v)
{
    if (offset == 0) {
        if (v & 0x10) { // ICW1
            reset_chip();
            imr = 0;
            irr &= elcr; // edge-sense latch cleared
            init_step = 1;
            single = v & 0x02;
            icw4_needed = v & 0x01;
        } else if (v & 0x08) { // OCW3
            if (v & 0x04)
                poll = true;
            if (v & 0x02)
                read_isr = v & 0x01;
            if (v & 0x40)
                special_mask = (v >> 5) & 1;
        } else { // OCW2
            unsigned cmd = v >> 5;
            switch (cmd) {
            case 0: rotate_on_auto_eoi = false; break;
            case 4: rotate_on_auto_eoi = true; break;
            case 1:   // non-specific EOI
            case 5: { // rotate on non-specific EOI
                int p = priority_of(isr);
                if (p != 8) {
                    unsigned line = (p + lowest_priority_rotation) & 7;
                    isr &= uint8_t(~(1u << line));
                    if (cmd == 5)
                        lowest_priority_rotation = uint8_t((line + 1) & 7);
                }
                break;
            }
            case 3: isr &= uint8_t(~(1u << (v & 7))); break; // specific EOI
            case 7:                                           // rotate on specific EOI
                isr &= uint8_t(~(1u << (v & 7)));
                lowest_priority_rotation = uint8_t(((v & 7) + 1) & 7);
                break;
            case 6: lowest_priority_rotation = uint8_t(((v & 7) + 1) & 7); break; // set priority
            default: break;                                                       // 2: no operation
            }
        }
        return;
    }
    switch (init_step) {
    case 0: imr = v; break; // OCW1
    case 1:                 // ICW2: vector base (x86 mode: T7-T3)
        vector_base = v & 0xF8;
        init_step = single ? (icw4_needed ? 3 : 0) : 2;
        break;
    case 2: init_step = icw4_needed ? 3 : 0; break; // ICW3: cascade wiring is fixed on a PC
    case 3:                                         // ICW4
        auto_eoi = v & 0x02;
        special_fully_nested = v & 0x10;
        init_step = 0;
        break;
    }
}

uint8_t Pic8259Pair::Chip::read(uint64_t offset, bool is_master)
{
    if (poll) { // poll command: the next read is the poll word, and acts as an INTA
        poll = false;
        int line = pending(is_master);
        if (line < 0)
            return 0;
        acknowledge_line(unsigned(line));
        return uint8_t(0x80 | line);
    }
    if (offset == 0)
        return read_isr ? isr : irr;
    return imr;
}

void Pic8259Pair::set_irq(unsigned irq, bool level)
{
    if (irq >= 16 || irq == 2)
        return;
    m_chip[irq >= 8].set_line(irq & 7, level);
    update();
}

void Pic8259Pair::update()
{
    // The slave's INT output drives the master's IR2. It is wired, not a device line: the
    // request follows INT (a request withdrawn before INTA is not latched, so the master then
    // answers with a spurious IR7, as the 8259A data sheet describes for a vanished request).
    if (m_chip[1].pending(false) >= 0)
        m_chip[0].irr |= 0x04;
    else
        m_chip[0].irr &= uint8_t(~0x04);
    m_intr = m_chip[0].pending(true) >= 0;
}

uint8_t Pic8259Pair::acknowledge()
{
    uint8_t vector;
    int line = m_chip[0].pending(true);
    if (line < 0) {
        vector = m_chip[0].vector_base | 7; // spurious IRQ 7
    } else {
        m_chip[0].acknowledge_line(unsigned(line));
        if (line == 2) {
            int sline = m_chip[1].pending(false);
            if (sline < 0) {
                vector = m_chip[1].vector_base | 7; // spurious IRQ 15
            } else {
                m_chip[1].acknowledge_line(unsigned(sline));
                vector = uint8_t(m_chip[1].vector_base + sline);
            }
        } else {
            vector = uint8_t(m_chip[0].vector_base + line);
        }
    }
    update();
    return vector;
}

uint64_t Pic8259Pair::Port::read(uint64_t offset, unsigned)
{
    if (m_which == 2)
        return m_pair.m_chip[offset & 1].elcr;
    uint8_t v = m_pair.m_chip[m_which].read(offset & 1, m_which == 0);
    m_pair.update();
    return v;
}

void Pic8259Pair::Port::write(uint64_t offset, unsigned, uint64_t value)
{
    if (m_which == 2) {
        auto& c = m_pair.m_chip[offset & 1];
        c.elcr = uint8_t(value) & c.elcr_mask;
    } else {
        m_pair.m_chip[m_which].write(offset & 1, uint8_t(value));
    }
    m_pair.update();
}

void Pic8259Pair::Chip::save(StateWriter& w) const
{
    for (uint8_t v : { irr, isr, imr, last_level, elcr, vector_base, lowest_priority_rotation, init_step })
        w.u8(v);
    for (bool b : { icw4_needed, single, auto_eoi, rotate_on_auto_eoi, special_fully_nested, read_isr, poll, special_mask })
        w.boolean(b);
}

void Pic8259Pair::Chip::load(StateReader& r)
{
    for (uint8_t* v : { &irr, &isr, &imr, &last_level, &elcr, &vector_base, &lowest_priority_rotation, &init_step })
        *v = r.u8();
    for (bool* b : { &icw4_needed, &single, &auto_eoi, &rotate_on_auto_eoi, &special_fully_nested, &read_isr, &poll, &special_mask })
        *b = r.boolean();
}

void Pic8259Pair::save(StateWriter& w) const
{
    for (auto const& c : m_chip)
        c.save(w);
}

void Pic8259Pair::load(StateReader& r)
{
    std::array<Chip, 2> chip = m_chip; // keeps the wiring constants (elcr_mask)
    for (auto& c : chip)
        c.load(r);
    if (!read_to_end(r))
        return;
    for (unsigned i = 0; i < 2; ++i) {
        auto const& c = chip[i];
        char const* which = i ? "slave" : "master";
        if (c.init_step > 3)
            return r.fail(std::string(which) + ": initialization step " + std::to_string(c.init_step) + " is not 0-3");
        if (c.lowest_priority_rotation > 7)
            return r.fail(std::string(which) + ": priority rotation " + std::to_string(c.lowest_priority_rotation) + " is not 0-7");
        if (c.vector_base & 7)
            return r.fail(std::string(which) + ": vector base has bits 2:0 set");
        if (c.elcr & ~c.elcr_mask)
            return r.fail(std::string(which) + ": ELCR sets lines that are always edge triggered");
    }
    m_chip = chip;
    update(); // INTR and the cascade request follow from the restored registers
}

} // namespace sevemu::devices
