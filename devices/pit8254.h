// sevemu — the 8254 programmable interval timer (ports 0x40-0x43) and the PC's system control
// port B (0x61: channel 2 gate, speaker enable, refresh toggle, channel 2 output).
//
// Follows the Intel 8254 data sheet (order no. 231164): control word (channel, read/load mode,
// counting mode, BCD), the six counting modes, counter latch and read-back commands, LSB/MSB
// access with the byte flip-flop. Time is the owner's clock in nanoseconds (the Machine's
// virtual time); the counters run at 1.193182 MHz. Channel 0's output drives IRQ 0: the owner
// calls advance(now) and the timer raises an edge on the line for every rising OUT seen since
// the last call (several periods in one call make one interrupt, as a busy PIC would see).
// BCD counting is accepted and stored but counts in binary (QUIRKS.md).
//
// Snapshot section "pit", version 1 (devices/device.h). Times are the machine's clock in
// nanoseconds, as they are (the Machine saves and restores its clock, so a restored timer
// fires at the same virtual instant). Per channel 0, 1, 2:
//   u8 mode (0-5), u8 access (0: none yet, behaves as 3; 1 LSB, 2 MSB, 3 LSB then MSB),
//   bool BCD, u32 reload (1..0x10000; 2.. in modes 2, 3 once armed), bool armed,
//   i64 load time, bool gate (always 1 for channels 0 and 1), i64 gate-low time,
//   bool write-MSB-next, bool read-MSB-next, u8 written LSB,
//   bool count latched, u16 latched count, bool latched-MSB-next,
//   bool status latched, u8 status, bool null count;
// then i64 the time IRQ 0 edges were computed up to, bool speaker enable (port 0x61 bit 1).
// IRQ 0 is an edge the timer pulses, so there is no line level to re-derive after a load.
#pragma once

#include "devices/bus.h"
#include "devices/device.h"

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string_view>

namespace sevemu::devices {

class Pit8254 final : public Device {
public:
    static constexpr uint64_t kBase = 0x40, kPortB = 0x61;
    static constexpr uint32_t kStateVersion = 1;
    static constexpr uint64_t kFrequencyHz = 1'193'182;

    // Nanoseconds of the machine's (virtual) time; port accesses read it to know "now".
    using Clock = std::function<int64_t()>;
    Pit8254(IrqLine& irq0, Clock clock);

    BusDevice& counters() { return m_counter_port; }  // 0x40-0x43
    BusDevice& port_b() { return m_port_b; }           // 0x61

    // Power-on state (a system reset): every channel unprogrammed, IRQ 0 low, the speaker off.
    void reset() override;
    std::string_view name() const override { return "pit"; }
    uint32_t state_version() const override { return kStateVersion; }
    void save(StateWriter&) const override;
    void load(StateReader&) override;
    // Bring the outputs up to `now_ns` (raising IRQ 0 on channel 0's rising edges).
    void advance(int64_t now_ns);
    // When channel 0's output next rises (for a halted CPU to sleep until), if ever.
    std::optional<int64_t> next_irq_deadline(int64_t now_ns) const;

    // For tests.
    uint16_t current_count(unsigned channel, int64_t now_ns) const;
    bool output(unsigned channel, int64_t now_ns) const;

private:
    struct Channel {
        uint8_t mode {};          // 0-5
        uint8_t access {};        // 1 LSB, 2 MSB, 3 LSB then MSB
        bool bcd {};
        uint32_t reload { 0x10000 };
        bool armed {};            // a count has been loaded since the last control word
        int64_t load_ns {};       // when counting started
        bool gate { true };
        int64_t gate_low_ns {};   // when the gate went low (counting suspended in modes 0, 2, 3, 4)
        bool write_msb_next {}, read_msb_next {};
        uint8_t write_lsb {};
        std::optional<uint16_t> latched;
        bool latched_msb_next {};
        std::optional<uint8_t> status_latch;
        bool null_count { true };
    };

    class Counters final : public BusDevice {
    public:
        explicit Counters(Pit8254& pit) : m_pit(pit) {}
        std::string_view name() const override { return "pit8254"; }
        uint64_t read(uint64_t offset, unsigned size) override;
        void write(uint64_t offset, unsigned size, uint64_t value) override;

    private:
        Pit8254& m_pit;
    };
    class PortB final : public BusDevice {
    public:
        explicit PortB(Pit8254& pit) : m_pit(pit) {}
        std::string_view name() const override { return "port61"; }
        uint64_t read(uint64_t offset, unsigned size) override;
        void write(uint64_t offset, unsigned size, uint64_t value) override;

    private:
        Pit8254& m_pit;
    };

    uint64_t ticks(Channel const& c, int64_t now_ns) const;
    uint16_t count_at(Channel const& c, int64_t now_ns) const;
    bool out_at(Channel const& c, int64_t now_ns) const;
    void control_word(uint8_t v);
    void load_count(Channel& c, uint16_t value);
    uint8_t read_counter(Channel& c);
    void latch(Channel& c);
    void set_gate2(bool gate);

    IrqLine& m_irq0;
    std::array<Channel, 3> m_ch;
    Clock m_clock;
    int64_t m_advanced_to {};
    bool m_speaker_enable {};
    Counters m_counter_port { *this };
    PortB m_port_b { *this };
};

} // namespace sevemu::devices
