// sevemu — the PC's cascaded pair of 8259A programmable interrupt controllers (master at 0x20,
// slave at 0xA0 on the master's IR2) and the edge/level control registers at 0x4D0/0x4D1.
//
// Follows the Intel 8259A data sheet (order no. 231468): the ICW1-ICW4 initialization sequence,
// OCW1 (mask), OCW2 (EOI, specific EOI, rotation, set priority), OCW3 (read IRR/ISR, poll,
// special mask), auto-EOI and special fully nested mode; edge or level triggering per line
// as the PIIX/ICH ELCR sets it. The CPU sees intr() and acknowledge() (the INTA cycles).
//
// Snapshot section "pic", version 1 (devices/device.h): per chip, master then slave —
//   u8 IRR, ISR, IMR, line levels (the edge detector's last level per IR), ELCR,
//   u8 vector base (ICW2 & 0xF8), lowest-priority rotation (0-7), initialization step (0-3),
//   bool ICW4 needed, single, auto-EOI, rotate on auto-EOI, special fully nested,
//        read ISR (OCW3 RR/RIS), poll pending, special mask.
// INTR and the master's IR2 (the slave's INT) are re-derived after a load.
#pragma once

#include "devices/bus.h"
#include "devices/device.h"

#include <array>
#include <cstdint>
#include <string_view>

namespace sevemu::devices {

class Pic8259Pair final : public Device, public InterruptController, public IrqSink {
public:
    static constexpr uint64_t kMasterBase = 0x20, kSlaveBase = 0xA0, kElcrBase = 0x4D0;
    static constexpr uint32_t kStateVersion = 1;

    Pic8259Pair();

    // The 16 ISA interrupt request lines (IRQ 2 is the cascade and is not a device line).
    void set_irq(unsigned irq, bool level) override;
    bool intr() const { return m_intr; }
    bool interrupt_pending() const override { return m_intr; }
    uint8_t acknowledge() override; // the vector, as the two INTA cycles deliver it

    BusDevice& master() { return m_master_port; }
    BusDevice& slave() { return m_slave_port; }
    BusDevice& elcr() { return m_elcr_port; }

    // For traces and tests.
    uint8_t irr(bool slave) const { return m_chip[slave].irr; }
    uint8_t isr(bool slave) const { return m_chip[slave].isr; }
    uint8_t imr(bool slave) const { return m_chip[slave].imr; }

    // Device.
    std::string_view name() const override { return "pic"; }
    void reset() override;
    uint32_t state_version() const override { return kStateVersion; }
    void save(StateWriter&) const override;
    void load(StateReader&) override;

private:
    struct Chip {
        uint8_t irr {}, isr {}, imr {}, last_level {}, elcr {}, elcr_mask {};
        uint8_t vector_base {}, lowest_priority_rotation {}; // IR (n + rotation) & 7 has priority n
        uint8_t init_step {}; // 0: operational; 1..3: expecting ICW2..ICW4
        bool icw4_needed {}, single {}, auto_eoi {}, rotate_on_auto_eoi {}, special_fully_nested {};
        bool read_isr {}, poll {}, special_mask {};

        void set_line(unsigned line, bool level);
        int priority_of(uint8_t bits) const; // 0 = highest; 8 = none
        int pending(bool is_master) const;   // the IR line that would interrupt now, or -1
        void acknowledge_line(unsigned line);
        void write(uint64_t offset, uint8_t value);
        uint8_t read(uint64_t offset, bool is_master);
        void reset_chip();
        void save(StateWriter&) const;
        void load(StateReader&); // fields only; the caller validates
    };

    class Port final : public BusDevice {
    public:
        Port(Pic8259Pair& pair, int which, std::string_view name) : m_pair(pair), m_which(which), m_name(name) {}
        std::string_view name() const override { return m_name; }
        uint64_t read(uint64_t offset, unsigned size) override;
        void write(uint64_t offset, unsigned size, uint64_t value) override;

    private:
        Pic8259Pair& m_pair;
        int m_which; // 0 master, 1 slave, 2 ELCR
        std::string_view m_name;
    };

    void update();

    std::array<Chip, 2> m_chip;
    bool m_intr {};
    Port m_master_port { *this, 0, "pic-master" };
    Port m_slave_port { *this, 1, "pic-slave" };
    Port m_elcr_port { *this, 2, "pic-elcr" };
};

} // namespace sevemu::devices
