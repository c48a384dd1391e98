// sevemu — 16550A UART (COM1 at 0x3F8, IRQ 4 on a PC).
//
// Register map: National Semiconductor PC16550D data sheet, Table II ("Summary of Registers").
// The eight offsets are decoded through one table (kRegisters in uart16550.cpp) keyed by offset
// and the Divisor Latch Access Bit (LCR[7]); each row names the register as the data sheet does.
//
// Behaviour matches QEMU's hw/char/serial.c where the two could differ (QUIRKS.md): output is
// instantaneous (THR empty again at once, no baud-rate timing), the interrupt is not gated by
// MCR.OUT2, and host input is flow-controlled: it waits in a backlog and enters the receiver
// as it has room (1 byte in RBR, or the 16-byte FIFO), so a guest that clears or toggles the
// FIFO loses only what was already inside, as on QEMU. With the FIFO on, the receive interrupt
// follows the trigger level; below it, the character-timeout interrupt is reported at once
// (there is no character timing).
//
// Snapshot section "com1" (the name given at construction; COM1 by default), version 1
// (devices/device.h):
//   u8 IER, LCR, MCR, SCR, FCR (enable, DMA mode, trigger: FCR & 0xC9), DLL, DLM,
//   u8 LSR error bits (overrun, parity, framing, break, FIFO error; cleared by reading LSR),
//   u8 MSR deltas (MSR[3:0]), u8 modem lines last reported (MSR[7:4]),
//   bool THRE interrupt pending,
//   bytes receive FIFO / RBR (at most 16 with the FIFO on, 1 with it off),
//   bytes host input not yet received (at most kMaxBacklog; only while the receiver is full).
// The transmitter has no state to carry: output is instantaneous. The IRQ line's level is
// re-derived (and driven) after a load.
#pragma once

#include "devices/bus.h"
#include "devices/device.h"

#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <span>
#include <string>
#include <string_view>

namespace sevemu::devices {

class Uart16550 final : public BusDevice, public Device {
public:
    static constexpr uint64_t kCom1Base = 0x3F8;
    static constexpr unsigned kCom1Irq = 4;
    static constexpr uint64_t kRegisterCount = 8;
    static constexpr uint32_t kStateVersion = 1;
    // The most host input a snapshot section may carry waiting for the receiver. A length is
    // also never believed beyond the payload's own size (StateReader::bytes), so this bounds
    // only what a saved machine could hold: far more than any terminal or test script types.
    static constexpr uint64_t kMaxBacklog = 1ull << 30;

    // What the guest transmits goes to the sink, one byte at a time.
    using Sink = std::function<void(uint8_t)>;

    // name: the device's name on the bus and its snapshot section ("com1", "com2", ...).
    Uart16550(IrqLine& irq, Sink sink, std::string name = "com1");

    std::string_view name() const override { return m_name; }
    uint64_t read(uint64_t offset, unsigned size) override;
    void write(uint64_t offset, unsigned size, uint64_t value) override;

    // Host side: bytes the guest will receive (a terminal's keystrokes, a test's script).
    void push_input(std::span<uint8_t const> bytes);
    void push_input(std::string_view text);
    size_t pending_input() const { return m_rx.size() + m_backlog.size(); }

    void reset() override;
    uint32_t state_version() const override { return kStateVersion; }
    void save(StateWriter&) const override;
    void load(StateReader&) override;

    // Register bits (PC16550D Table II).
    static constexpr uint8_t kIerRxData = 0x01, kIerThre = 0x02, kIerLineStatus = 0x04, kIerModemStatus = 0x08;
    static constexpr uint8_t kIirNoInterrupt = 0x01, kIirLineStatus = 0x06, kIirRxData = 0x04,
                             kIirCharTimeout = 0x0C, kIirThre = 0x02, kIirModemStatus = 0x00,
                             kIirFifoEnabled = 0xC0;
    static constexpr size_t kFifoSize = 16;
    static constexpr uint8_t kFcrEnable = 0x01, kFcrClearRx = 0x02, kFcrClearTx = 0x04;
    static constexpr uint8_t kLcrDlab = 0x80;
    static constexpr uint8_t kMcrDtr = 0x01, kMcrRts = 0x02, kMcrOut1 = 0x04, kMcrOut2 = 0x08, kMcrLoop = 0x10;
    static constexpr uint8_t kLsrDataReady = 0x01, kLsrOverrun = 0x02, kLsrParity = 0x04, kLsrFraming = 0x08,
                             kLsrBreak = 0x10, kLsrThre = 0x20, kLsrTemt = 0x40, kLsrFifoError = 0x80;
    static constexpr uint8_t kMsrDcts = 0x01, kMsrDdsr = 0x02, kMsrTeri = 0x04, kMsrDdcd = 0x08,
                             kMsrCts = 0x10, kMsrDsr = 0x20, kMsrRi = 0x40, kMsrDcd = 0x80;

    // Visible for tests and traces.
    uint16_t divisor() const { return uint16_t(m_dll | (m_dlm << 8)); }

private:
    struct Register {
        uint8_t offset;
        bool dlab; // the row applies when LCR.DLAB has this value (offsets 0 and 1 only)
        std::string_view read_name, write_name;
        uint8_t (Uart16550::*read)();
        void (Uart16550::*write)(uint8_t);
    };
    static std::array<Register, 10> const kRegisters;
    Register const* decode(uint64_t offset) const;

    uint8_t read_rbr();
    void write_thr(uint8_t);
    uint8_t read_dll() { return m_dll; }
    void write_dll(uint8_t v) { m_dll = v; }
    uint8_t read_dlm() { return m_dlm; }
    void write_dlm(uint8_t v) { m_dlm = v; }
    uint8_t read_ier() { return m_ier; }
    void write_ier(uint8_t);
    uint8_t read_iir();
    void write_fcr(uint8_t);
    uint8_t read_lcr() { return m_lcr; }
    void write_lcr(uint8_t v) { m_lcr = v; }
    uint8_t read_mcr() { return m_mcr; }
    void write_mcr(uint8_t);
    uint8_t read_lsr();
    void write_lsr(uint8_t) {} // factory test register on the real part; ignored (as QEMU)
    uint8_t read_msr();
    void write_msr(uint8_t) {} // read-only
    uint8_t read_scr() { return m_scr; }
    void write_scr(uint8_t v) { m_scr = v; }

    void receive(uint8_t byte); // from the line (loopback): overruns when the receiver is full
    void refill();              // host backlog -> receiver, as room allows
    size_t rx_capacity() const { return (m_fcr & kFcrEnable) ? kFifoSize : 1; }
    size_t rx_trigger() const;
    uint8_t line_status() const;
    uint8_t modem_lines() const;
    uint8_t pending_interrupt() const; // IIR[3:0]
    void update_irq();

    IrqLine& m_irq;
    Sink m_sink;
    std::string m_name;
    std::deque<uint8_t> m_rx;      // RBR / receive FIFO
    std::deque<uint8_t> m_backlog; // host input not yet received
    uint8_t m_ier {}, m_lcr {}, m_mcr {}, m_scr {}, m_fcr {}, m_dll { 0x0C }, m_dlm {};
    uint8_t m_lsr_errors {}; // overrun etc., cleared by reading LSR
    uint8_t m_msr_delta {};  // MSR[3:0], cleared by reading MSR
    uint8_t m_last_modem {}; // MSR[7:4] last reported, to compute deltas
    bool m_thr_interrupt {}; // THRE interrupt pending (cleared by reading IIR or writing THR)
};

} // namespace sevemu::devices
