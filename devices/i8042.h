// sevemu — the 8042 keyboard controller, as much as Linux needs: its probe (drivers/input/serio/
// i8042.c) and the reset line (arch/x86/kernel/reboot.c: 0xFE to port 0x64, polling bit 1).
// No keyboard or mouse is attached.
//
// Sources: the IBM PC/AT Technical Reference's 8042 command set, as QEMU hw/input/pckbd.c and
// Linux's i8042.h (I8042_CMD_*, I8042_STR_*, I8042_CTR_*) name it.
// - Port 0x64 read: status — OBF (bit 0), IBF (bit 1, always clear: commands complete at once),
//   SYS (bit 2, set by the self test and at reset, as after POST), CMD/DATA (bit 3: last write
//   was to 0x64), keyboard not inhibited (bit 4), AUX data (bit 5: the byte in the output buffer
//   came from the aux port), timeout (bit 6).
// - Port 0x64 write: 0x20 read the command byte (CTR), 0x60 write it (next byte on 0x60),
//   0xA7/0xA8 disable/enable aux (CTR bit 5), 0xA9 aux interface test -> 0x00, 0xAA self test
//   -> 0x55, 0xAB keyboard interface test -> 0x00, 0xAD/0xAE disable/enable keyboard (CTR bit
//   4), 0xC0 read input port -> 0x00, 0xD0 read output port, 0xD1 write output port (bit 0
//   low = reset), 0xD2/0xD3 the next byte appears in the output buffer as keyboard/aux data
//   (Linux's I8042_CMD_AUX_LOOP), 0xD4 the next byte goes to the aux device, 0xF0-0xFF pulse
//   output lines low for the bits clear in 3:0 (bit 0 = the CPU reset line: 0xFE resets).
//   Other commands are ignored.
// - Port 0x60 read: the output buffer (an empty one reads the last byte again, as an 8042 does).
//   Port 0x60 write after 0x60/0xD1/0xD2/0xD3/0xD4: that command's data; otherwise a byte for
//   the keyboard. With no device on a port, the controller answers a byte sent to it with 0xFE
//   and the timeout status bit (an AT controller's "no response" — Linux's atkbd/psmouse then
//   give up at once instead of waiting for their command timeouts).
// - IRQ 1 / IRQ 12: raised while a keyboard / aux byte waits and CTR bit 0 / bit 1 enables it,
//   lowered when it is read.
//
// Snapshot section "i8042", version 1: u8 CTR, u8 status, u8 output port, u8 pending command
// (0 none), u8 last byte read, u8 queue length (0-16), then per queued byte u8 value and
// bool from-aux.
#pragma once

#include "devices/bus.h"
#include "devices/device.h"

#include <cstdint>
#include <deque>
#include <functional>
#include <string_view>

namespace sevemu::devices {

class I8042 final : public Device {
public:
    static constexpr uint32_t kStateVersion = 1;
    static constexpr uint64_t kDataPort = 0x60, kCommandPort = 0x64;
    static constexpr uint8_t kStatusObf = 0x01, kStatusSys = 0x04, kStatusCmd = 0x08,
                             kStatusUnlocked = 0x10, kStatusAuxData = 0x20, kStatusTimeout = 0x40;
    static constexpr size_t kQueueLimit = 16;

    using ResetRequest = std::function<void()>;
    // kbd_irq is ISA IRQ 1, aux_irq IRQ 12.
    I8042(IrqLine& kbd_irq, IrqLine& aux_irq, ResetRequest reset_request);

    // The machine maps data_port() at 0x60 and command_port() at 0x64, one byte each (0x61 is
    // the PIT's port B, so the controller cannot claim 0x60-0x64 as one range).
    BusDevice& data_port() { return m_data_port; }
    BusDevice& command_port() { return m_command_port; }
    std::string_view name() const override { return "i8042"; }
    uint8_t read_data();
    uint8_t read_status() const { return m_status; }
    void write_data(uint8_t value) { data(value); }
    void write_command(uint8_t value) { command(value); }

    uint8_t command_byte() const { return m_ctr; }

    void reset() override;
    uint32_t state_version() const override { return kStateVersion; }
    void save(StateWriter&) const override;
    void load(StateReader&) override;

private:
    class Port final : public BusDevice {
    public:
        Port(I8042& kbc, bool command) : m_kbc(kbc), m_command(command) {}
        std::string_view name() const override { return m_command ? "i8042-cmd" : "i8042-data"; }
        uint64_t read(uint64_t, unsigned) override { return m_command ? m_kbc.read_status() : m_kbc.read_data(); }
        void write(uint64_t, unsigned, uint64_t value) override
        {
            m_command ? m_kbc.write_command(uint8_t(value)) : m_kbc.write_data(uint8_t(value));
        }

    private:
        I8042& m_kbc;
        bool m_command;
    };
    struct Byte {
        uint8_t value;
        bool aux;
    };
    void push(uint8_t value, bool aux);
    void command(uint8_t cmd);
    void data(uint8_t value);
    void update_irqs();

    IrqLine& m_kbd_irq;
    IrqLine& m_aux_irq;
    ResetRequest m_reset_request;
    uint8_t m_ctr {}, m_status {}, m_output_port {}, m_pending {}, m_last {};
    std::deque<Byte> m_queue;
    Port m_data_port { *this, false };
    Port m_command_port { *this, true };
};

} // namespace sevemu::devices
