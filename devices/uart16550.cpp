#include "devices/uart16550.h"

#include "devices/state_check.h"

#include <vector>

namespace sevemu::devices {

// PC16550D Table II: offset, DLAB, then what a read and a write reach.
std::array<Uart16550::Register, 10> const Uart16550::kRegisters { {
    { 0, false, "RBR", "THR", &Uart16550::read_rbr, &Uart16550::write_thr },
    { 0, true, "DLL", "DLL", &Uart16550::read_dll, &Uart16550::write_dll },
    { 1, false, "IER", "IER", &Uart16550::read_ier, &Uart16550::write_ier },
    { 1, true, "DLM", "DLM", &Uart16550::read_dlm, &Uart16550::write_dlm },
    { 2, false, "IIR", "FCR", &Uart16550::read_iir, &Uart16550::write_fcr },
    { 3, false, "LCR", "LCR", &Uart16550::read_lcr, &Uart16550::write_lcr },
    { 4, false, "MCR", "MCR", &Uart16550::read_mcr, &Uart16550::write_mcr },
    { 5, false, "LSR", "LSR", &Uart16550::read_lsr, &Uart16550::write_lsr },
    { 6, false, "MSR", "MSR", &Uart16550::read_msr, &Uart16550::write_msr },
    { 7, false, "SCR", "SCR", &Uart16550::read_scr, &Uart16550::write_scr },
} };

Uart16550::Uart16550(IrqLine& irq, Sink sink, std::string name)
    : m_irq(irq)
    , m_sink(std::move(sink))
    , m_name(std::move(name))
{
    reset();
}

void Uart16550::reset()
{
    // Master reset values (PC16550D Table IV); the divisor is not reset by MR, QEMU starts it at
    // 0x0C (9600 baud).
    m_ier = m_lcr = m_mcr = m_scr = m_fcr = 0;
    m_dll = 0x0C;
    m_dlm = 0;
    m_lsr_errors = m_msr_delta = 0;
    m_last_modem = modem_lines();
    m_thr_interrupt = false;
    m_rx.clear();
    m_backlog.clear();
    update_irq();
}

Uart16550::Register const* Uart16550::decode(uint64_t offset) const
{
    bool dlab = (m_lcr & kLcrDlab) != 0;
    for (auto const& r : kRegisters) {
        if (r.offset != offset)
            continue;
        if (offset <= 1 && r.dlab != dlab)
            continue;
        return &r;
    }
    return nullptr;
}

uint64_t Uart16550::read(uint64_t offset, unsigned size)
{
    // An 8-bit part: a wider access reads the addressed register in the low byte (as QEMU's
    // 1-byte-implementation region does for the first byte); other bytes float high.
    uint64_t high = size >= 8 ? ~0ull << 8 : ((1ull << (8 * size)) - 1) & ~0xffull;
    auto const* r = decode(offset);
    if (!r)
        return 0xff | high;
    return (this->*(r->read))() | high;
}

void Uart16550::write(uint64_t offset, unsigned, uint64_t value)
{
    if (auto const* r = decode(offset))
        (this->*(r->write))(uint8_t(value));
}

void Uart16550::push_input(std::span<uint8_t const> bytes)
{
    m_backlog.insert(m_backlog.end(), bytes.begin(), bytes.end());
    refill();
    update_irq();
}

void Uart16550::push_input(std::string_view text)
{
    push_input(std::span<uint8_t const>(reinterpret_cast<uint8_t const*>(text.data()), text.size()));
}

void Uart16550::refill()
{
    // The host side is flow-controlled (as a QEMU chardev is: can_receive()): bytes wait in the
    // backlog rather than overrunning the receiver.
    while (!m_backlog.empty() && m_rx.size() < rx_capacity()) {
        m_rx.push_back(m_backlog.front());
        m_backlog.pop_front();
    }
}

void Uart16550::receive(uint8_t byte)
{
    if (m_rx.size() >= rx_capacity()) {
        m_lsr_errors |= kLsrOverrun; // PC16550D: the new character is lost
        update_irq();
        return;
    }
    m_rx.push_back(byte);
    update_irq();
}

size_t Uart16550::rx_trigger() const
{
    static constexpr size_t kLevels[4] = { 1, 4, 8, 14 }; // FCR[7:6]
    return kLevels[m_fcr >> 6];
}

uint8_t Uart16550::read_rbr()
{
    if (m_rx.empty())
        return 0;
    uint8_t b = m_rx.front();
    m_rx.pop_front();
    refill();
    update_irq();
    return b;
}

void Uart16550::write_thr(uint8_t v)
{
    // Transmission is instantaneous: THR and the shift register are empty again at once, so
    // the THRE interrupt (if enabled) is pending again right after the write (as QEMU).
    if (m_mcr & kMcrLoop)
        receive(v); // loopback: the transmitter feeds the receiver (PC16550D "Loopback")
    else if (m_sink)
        m_sink(v);
    m_thr_interrupt = true;
    update_irq();
}

void Uart16550::write_ier(uint8_t v)
{
    uint8_t old = m_ier;
    m_ier = v & 0x0F;
    // Enabling ETBEI while THR is empty raises the THRE interrupt (PC16550D, IIR priority 3).
    if ((m_ier & kIerThre) && !(old & kIerThre))
        m_thr_interrupt = true;
    update_irq();
}

uint8_t Uart16550::pending_interrupt() const
{
    // IIR priorities, highest first (PC16550D Table IV).
    uint8_t lsr = line_status();
    if ((m_ier & kIerLineStatus) && (lsr & (kLsrOverrun | kLsrParity | kLsrFraming | kLsrBreak)))
        return kIirLineStatus;
    if ((m_ier & kIerRxData) && (lsr & kLsrDataReady)) {
        // FIFO mode: data available at the trigger level, else the character timeout.
        if ((m_fcr & kFcrEnable) && m_rx.size() < rx_trigger())
            return kIirCharTimeout;
        return kIirRxData;
    }
    if ((m_ier & kIerThre) && m_thr_interrupt)
        return kIirThre;
    if ((m_ier & kIerModemStatus) && (m_msr_delta & 0x0F))
        return kIirModemStatus;
    return kIirNoInterrupt;
}

uint8_t Uart16550::read_iir()
{
    uint8_t id = pending_interrupt();
    // Reading IIR while THRE is the source clears that interrupt (PC16550D Table IV).
    if (id == kIirThre) {
        m_thr_interrupt = false;
        update_irq();
    }
    return id | ((m_fcr & kFcrEnable) ? kIirFifoEnabled : 0);
}

void Uart16550::write_fcr(uint8_t v)
{
    // Changing FCR0 (FIFO enable) clears both FIFOs (PC16550D "FIFO Control Register"; QEMU
    // does the same); the clear bits self-reset. The transmit FIFO is always empty here.
    if (((v ^ m_fcr) & kFcrEnable) || (v & kFcrClearRx))
        m_rx.clear();
    m_fcr = v & 0xC9; // enable, DMA mode, trigger level
    refill();
    update_irq();
}

void Uart16550::write_mcr(uint8_t v)
{
    m_mcr = v & 0x1F;
    uint8_t lines = modem_lines();
    uint8_t changed = lines ^ m_last_modem;
    if (changed & kMsrCts)
        m_msr_delta |= kMsrDcts;
    if (changed & kMsrDsr)
        m_msr_delta |= kMsrDdsr;
    if (changed & kMsrDcd)
        m_msr_delta |= kMsrDdcd;
    if ((m_last_modem & kMsrRi) && !(lines & kMsrRi))
        m_msr_delta |= kMsrTeri; // trailing edge of RI
    m_last_modem = lines;
    update_irq();
}

uint8_t Uart16550::line_status() const
{
    uint8_t lsr = kLsrThre | kLsrTemt | m_lsr_errors;
    if (!m_rx.empty())
        lsr |= kLsrDataReady;
    return lsr;
}

uint8_t Uart16550::read_lsr()
{
    uint8_t lsr = line_status();
    m_lsr_errors = 0; // error bits clear on read
    update_irq();
    return lsr;
}

uint8_t Uart16550::modem_lines() const
{
    // Loopback wires RTS->CTS, DTR->DSR, OUT1->RI, OUT2->DCD (PC16550D "Loopback"). Otherwise
    // the host end is a terminal that is always there: CTS, DSR and DCD asserted (as QEMU).
    if (m_mcr & kMcrLoop) {
        uint8_t m = 0;
        if (m_mcr & kMcrRts)
            m |= kMsrCts;
        if (m_mcr & kMcrDtr)
            m |= kMsrDsr;
        if (m_mcr & kMcrOut1)
            m |= kMsrRi;
        if (m_mcr & kMcrOut2)
            m |= kMsrDcd;
        return m;
    }
    return kMsrCts | kMsrDsr | kMsrDcd;
}

uint8_t Uart16550::read_msr()
{
    uint8_t v = modem_lines() | m_msr_delta;
    m_msr_delta = 0;
    update_irq();
    return v;
}

void Uart16550::update_irq()
{
    m_irq.set(pending_interrupt() != kIirNoInterrupt);
}

void Uart16550::save(StateWriter& w) const
{
    for (uint8_t v : { m_ier, m_lcr, m_mcr, m_scr, m_fcr, m_dll, m_dlm, m_lsr_errors, m_msr_delta, m_last_modem })
        w.u8(v);
    w.boolean(m_thr_interrupt);
    std::vector<uint8_t> rx(m_rx.begin(), m_rx.end()), backlog(m_backlog.begin(), m_backlog.end());
    w.bytes(rx);
    w.bytes(backlog);
}

void Uart16550::load(StateReader& r)
{
    uint8_t ier = r.u8(), lcr = r.u8(), mcr = r.u8(), scr = r.u8(), fcr = r.u8(), dll = r.u8(), dlm = r.u8();
    uint8_t lsr_errors = r.u8(), msr_delta = r.u8(), last_modem = r.u8();
    bool thr_interrupt = r.boolean();
    std::vector<uint8_t> rx = r.bytes(kFifoSize);
    std::vector<uint8_t> backlog = r.bytes(kMaxBacklog);
    if (!read_to_end(r))
        return;
    if (ier & ~0x0F)
        return r.fail("IER has reserved bits 7:4 set");
    if (mcr & ~0x1F)
        return r.fail("MCR has reserved bits 7:5 set");
    if (fcr & ~0xC9)
        return r.fail("FCR has bits other than enable, DMA mode and trigger level set");
    if (lsr_errors & ~(kLsrOverrun | kLsrParity | kLsrFraming | kLsrBreak | kLsrFifoError))
        return r.fail("LSR error bits include non-error bits");
    if (msr_delta & 0xF0)
        return r.fail("MSR deltas include line bits");
    if (last_modem & 0x0F)
        return r.fail("MSR lines include delta bits");
    size_t capacity = (fcr & kFcrEnable) ? kFifoSize : 1;
    if (rx.size() > capacity)
        return r.fail("receive FIFO holds " + std::to_string(rx.size()) + " bytes, more than its " + std::to_string(capacity));
    if (!backlog.empty() && rx.size() < capacity)
        return r.fail("host input waits while the receiver has room");
    m_ier = ier, m_lcr = lcr, m_mcr = mcr, m_scr = scr, m_fcr = fcr, m_dll = dll, m_dlm = dlm;
    m_lsr_errors = lsr_errors, m_msr_delta = msr_delta, m_last_modem = last_modem;
    m_thr_interrupt = thr_interrupt;
    m_rx.assign(rx.begin(), rx.end());
    m_backlog.assign(backlog.begin(), backlog.end());
    update_irq(); // the wiring hears the restored level
}

} // namespace sevemu::devices
