// Devices of the PC platform (not the PSP mailbox, which has its own executable): the 16550A
// UART, isa-debug-exit and the small fixed ports, driven through a Bus at their real ports.
#include "devices/bus.h"
#include "devices/debug_exit.h"
#include "devices/pc_ports.h"
#include "devices/uart16550.h"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

using namespace sevemu::devices;

namespace {

struct UartRig {
    IrqLine irq;
    std::string out;
    Uart16550 uart { irq, [this](uint8_t b) { out.push_back(char(b)); } };
    Bus pio;
    static constexpr uint64_t base = Uart16550::kCom1Base;
    UartRig() { REQUIRE(pio.add(base, 8, uart).has_value()); }
    uint8_t in(unsigned reg) { return uint8_t(pio.read(base + reg, 1).first); }
    void out_(unsigned reg, uint8_t v) { pio.write(base + reg, 1, v); }
};

} // namespace

TEST_CASE("uart: transmit goes to the sink, LSR shows THR empty")
{
    UartRig r;
    for (char c : std::string("hello\n"))
        r.out_(0, uint8_t(c));
    CHECK(r.out == "hello\n");
    CHECK((r.in(5) & (Uart16550::kLsrThre | Uart16550::kLsrTemt)) == 0x60);
    CHECK((r.in(5) & Uart16550::kLsrDataReady) == 0);
}

TEST_CASE("uart: reset values as the 16550A data sheet gives them")
{
    UartRig r;
    CHECK(r.in(1) == 0x00);        // IER
    CHECK(r.in(2) == 0x01);        // IIR: no interrupt, FIFOs off
    CHECK(r.in(3) == 0x00);        // LCR
    CHECK(r.in(4) == 0x00);        // MCR
    CHECK(r.in(5) == 0x60);        // LSR: THRE | TEMT
    CHECK((r.in(6) & 0xF0) == 0xB0); // MSR: DCD, DSR, CTS
}

TEST_CASE("uart: divisor latch is reached with LCR.DLAB and does not transmit")
{
    UartRig r;
    r.out_(3, 0x80);
    r.out_(0, 0x01);
    r.out_(1, 0x00);
    CHECK(r.in(0) == 0x01);
    CHECK(r.in(1) == 0x00);
    r.out_(3, 0x03); // 8N1, DLAB off
    CHECK(r.uart.divisor() == 1);
    CHECK(r.out.empty());
    CHECK(r.in(3) == 0x03);
    r.out_(1, 0x05);
    CHECK(r.in(1) == 0x05); // IER, not DLM
}

TEST_CASE("uart: receive from the input queue, data-ready and RX interrupt")
{
    UartRig r;
    r.out_(1, Uart16550::kIerRxData);
    CHECK_FALSE(r.irq.level());
    r.uart.push_input("ab");
    CHECK(r.irq.level());
    CHECK((r.in(2) & 0x0F) == Uart16550::kIirRxData);
    CHECK((r.in(5) & Uart16550::kLsrDataReady) != 0);
    CHECK(r.in(0) == 'a');
    CHECK(r.irq.level());
    CHECK(r.in(0) == 'b');
    CHECK_FALSE(r.irq.level());
    CHECK((r.in(5) & Uart16550::kLsrDataReady) == 0);
    CHECK(r.in(2) == 0x01);
}

TEST_CASE("uart: THRE interrupt on enable, cleared by reading IIR, re-armed by a write")
{
    UartRig r;
    r.out_(1, Uart16550::kIerThre);
    CHECK(r.irq.level());
    CHECK((r.in(2) & 0x0F) == Uart16550::kIirThre);
    CHECK_FALSE(r.irq.level());
    CHECK(r.in(2) == 0x01);
    r.out_(0, 'x');
    CHECK(r.irq.level());
    CHECK(r.out == "x");
}

TEST_CASE("uart: FIFO enable shows in IIR[7:6]; FCR clear-RX empties the receiver")
{
    UartRig r;
    r.out_(2, 0x07);
    CHECK((r.in(2) & 0xC0) == 0xC0);
    r.uart.push_input("xyz");
    r.out_(2, 0x03);
    CHECK(r.uart.pending_input() == 0);
}

TEST_CASE("uart: loopback feeds the receiver and wires MCR to MSR")
{
    UartRig r;
    r.out_(4, Uart16550::kMcrLoop | Uart16550::kMcrRts | Uart16550::kMcrOut2);
    r.out_(0, 'Q');
    CHECK(r.out.empty());
    CHECK(r.in(0) == 'Q');
    uint8_t msr = r.in(6);
    CHECK((msr & 0xF0) == (Uart16550::kMsrCts | Uart16550::kMsrDcd));
    CHECK((r.in(6) & 0x0F) == 0); // deltas clear on read
}

TEST_CASE("uart: scratch register and wide reads")
{
    UartRig r;
    r.out_(7, 0x5A);
    CHECK(r.in(7) == 0x5A);
    CHECK(r.pio.read(Uart16550::kCom1Base + 7, 2).first == 0xFF5A);
}

TEST_CASE("debug-exit: a write of V requests status (V << 1) | 1")
{
    std::vector<int> statuses;
    DebugExit dev([&](int s) { statuses.push_back(s); });
    Bus pio;
    REQUIRE(pio.add(0xF4, 4, dev).has_value());
    pio.write(0xF4, 1, 0);
    pio.write(0xF4, 4, 0x10);
    pio.write(0xF7, 1, 0x3);
    REQUIRE(statuses.size() == 3);
    CHECK(statuses[0] == 1);
    CHECK(statuses[1] == 0x21);
    CHECK(statuses[2] == 7);
    CHECK(DebugExit::exit_status(0x1FF, 1) == ((0xFF << 1 | 1) & 0xFF));
    CHECK(pio.read(0xF4, 1).first == 0xFF);
    CHECK(statuses.size() == 3);
}

TEST_CASE("post port and unclaimed ports")
{
    PostPort post;
    Bus pio;
    REQUIRE(pio.add(PostPort::kPort, 1, post).has_value());
    pio.write(0x80, 1, 0x42);
    CHECK(post.last_code() == 0x42);
    CHECK(pio.read(0x80, 1).first == 0xFF);
    auto [v, claimed] = pio.read(0x1234, 2);
    CHECK_FALSE(claimed);
    CHECK(v == UnclaimedPortPolicy::read_value(2));
    CHECK_FALSE(pio.write(0x1234, 1, 0));
}

TEST_CASE("bus: overlapping device ranges are refused")
{
    PostPort a, b;
    Bus pio;
    REQUIRE(pio.add(0x3F8, 8, a).has_value());
    auto r = pio.add(0x3FF, 2, b);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error() == BusError::Overlap);
}

// ---------------------------------------------------------------------------------------------
// 8259A pair, programmed the way Linux and SeaBIOS do (ICW1 0x11, ICW2 base, ICW3 cascade, ICW4 0x01).
#include "devices/cmos_rtc.h"
#include "devices/pic8259.h"

namespace {

struct PicRig {
    Pic8259Pair pic;
    Bus pio;
    PicRig()
    {
        REQUIRE(pio.add(0x20, 2, pic.master()).has_value());
        REQUIRE(pio.add(0xA0, 2, pic.slave()).has_value());
        REQUIRE(pio.add(0x4D0, 2, pic.elcr()).has_value());
        pio.write(0x20, 1, 0x11);
        pio.write(0x21, 1, 0x20); // vectors 0x20-0x27
        pio.write(0x21, 1, 0x04); // slave on IR2
        pio.write(0x21, 1, 0x01); // 8086 mode
        pio.write(0xA0, 1, 0x11);
        pio.write(0xA1, 1, 0x28); // vectors 0x28-0x2F
        pio.write(0xA1, 1, 0x02);
        pio.write(0xA1, 1, 0x01);
        pio.write(0x21, 1, 0x00); // unmask all
        pio.write(0xA1, 1, 0x00);
    }
};

} // namespace

TEST_CASE("pic: an edge on IRQ 4 gives vector base + 4, ISR until EOI")
{
    PicRig r;
    CHECK_FALSE(r.pic.intr());
    r.pic.set_irq(4, true);
    CHECK(r.pic.intr());
    CHECK(r.pic.acknowledge() == 0x24);
    CHECK(r.pic.isr(false) == 0x10);
    CHECK_FALSE(r.pic.intr()); // edge consumed; the line is still high but no new edge
    r.pio.write(0x20, 1, 0x0B); // OCW3: read ISR
    CHECK(r.pio.read(0x20, 1).first == 0x10);
    r.pio.write(0x20, 1, 0x20); // non-specific EOI
    CHECK(r.pic.isr(false) == 0);
    CHECK_FALSE(r.pic.intr());
    r.pic.set_irq(4, false);
    r.pic.set_irq(4, true);
    CHECK(r.pic.intr());
}

TEST_CASE("pic: priorities, masking and the cascade")
{
    PicRig r;
    r.pic.set_irq(3, true);
    r.pic.set_irq(1, true);
    CHECK(r.pic.acknowledge() == 0x21); // IRQ 1 before IRQ 3
    // IRQ 3 is lower priority than the in-service IRQ 1: held until EOI.
    CHECK_FALSE(r.pic.intr());
    r.pio.write(0x20, 1, 0x20);
    CHECK(r.pic.acknowledge() == 0x23);
    r.pio.write(0x20, 1, 0x20);

    r.pio.write(0xA1, 1, 0x10); // mask IRQ 12
    r.pic.set_irq(12, true);
    CHECK_FALSE(r.pic.intr());
    r.pio.write(0xA1, 1, 0x00);
    CHECK(r.pic.intr());
    CHECK(r.pic.acknowledge() == 0x2C);
    CHECK(r.pic.isr(true) == 0x10);
    CHECK(r.pic.isr(false) == 0x04);
    r.pio.write(0xA0, 1, 0x20);
    r.pio.write(0x20, 1, 0x20);
    CHECK(r.pic.isr(true) == 0);
    CHECK(r.pic.isr(false) == 0);
    CHECK(r.pio.read(0xA1, 1).first == 0x00);
}

TEST_CASE("pic: level-triggered lines via ELCR, spurious IRQ 7, poll mode")
{
    PicRig r;
    r.pio.write(0x4D1, 1, 0x08); // IRQ 11 level
    CHECK(r.pio.read(0x4D1, 1).first == 0x08);
    r.pic.set_irq(11, true);
    CHECK(r.pic.acknowledge() == 0x2B);
    r.pio.write(0xA0, 1, 0x20);
    r.pio.write(0x20, 1, 0x20);
    CHECK(r.pic.intr()); // still asserted: level
    r.pic.set_irq(11, false);
    CHECK_FALSE(r.pic.intr());
    CHECK(r.pic.acknowledge() == 0x27); // nothing pending: spurious IRQ 7

    r.pic.set_irq(5, true);
    r.pio.write(0x20, 1, 0x0C); // OCW3 poll
    CHECK(r.pio.read(0x20, 1).first == (0x80 | 5));
    CHECK(r.pic.isr(false) == 0x20);
}

TEST_CASE("pic: auto-EOI and specific EOI")
{
    PicRig r;
    r.pio.write(0x20, 1, 0x11);
    r.pio.write(0x21, 1, 0x08);
    r.pio.write(0x21, 1, 0x04);
    r.pio.write(0x21, 1, 0x03); // auto-EOI
    r.pic.set_irq(0, true);
    CHECK(r.pic.acknowledge() == 0x08);
    CHECK(r.pic.isr(false) == 0);
    r.pio.write(0x20, 1, 0x11);
    r.pio.write(0x21, 1, 0x08);
    r.pio.write(0x21, 1, 0x04);
    r.pio.write(0x21, 1, 0x01);
    r.pic.set_irq(6, true);
    CHECK(r.pic.acknowledge() == 0x0E);
    r.pio.write(0x20, 1, 0x60 | 6); // specific EOI for IR6
    CHECK(r.pic.isr(false) == 0);
}

// ---------------------------------------------------------------------------------------------
// CMOS RTC

TEST_CASE("rtc: BCD time from the clock, 24-hour, NMI mask bit")
{
    // 2024-02-29 13:45:56 UTC, a Thursday.
    int64_t now = int64_t(1709214356) * 1'000'000'000;
    CmosRtc rtc([&] { return now; });
    Bus pio;
    REQUIRE(pio.add(0x70, 2, rtc).has_value());
    auto rd = [&](uint8_t reg) {
        pio.write(0x70, 1, 0x80 | reg);
        return uint8_t(pio.read(0x71, 1).first);
    };
    CHECK(rd(0x00) == 0x56);
    CHECK(rd(0x02) == 0x45);
    CHECK(rd(0x04) == 0x13);
    CHECK(rd(0x06) == 0x05);
    CHECK(rd(0x07) == 0x29);
    CHECK(rd(0x08) == 0x02);
    CHECK(rd(0x09) == 0x24);
    CHECK(rd(0x32) == 0x20);
    CHECK(rd(0x0D) == 0x80);
    CHECK(rtc.nmi_masked());
    now += 3'000'000'000;
    CHECK(rd(0x00) == 0x59);
    // Binary mode.
    pio.write(0x70, 1, 0x0B);
    pio.write(0x71, 1, 0x06);
    CHECK(rd(0x00) == 59);
}

TEST_CASE("rtc: the guest sets the time with SET, and it keeps running from there")
{
    int64_t now = 0;
    CmosRtc rtc([&] { return now; });
    Bus pio;
    REQUIRE(pio.add(0x70, 2, rtc).has_value());
    auto wr = [&](uint8_t reg, uint8_t v) {
        pio.write(0x70, 1, reg);
        pio.write(0x71, 1, v);
    };
    auto rd = [&](uint8_t reg) {
        pio.write(0x70, 1, reg);
        return uint8_t(pio.read(0x71, 1).first);
    };
    wr(0x0B, 0x82); // SET, 24h, BCD
    wr(0x09, 0x30);
    wr(0x08, 0x12);
    wr(0x07, 0x31);
    wr(0x04, 0x23);
    wr(0x02, 0x59);
    wr(0x00, 0x58);
    wr(0x0B, 0x02);
    CHECK(rd(0x00) == 0x58);
    now += 2'000'000'000;
    CHECK(rd(0x00) == 0x00);
    CHECK(rd(0x09) == 0x31);
    CHECK(rd(0x08) == 0x01);
}

TEST_CASE("rtc: CMOS memory-size bytes as QEMU fills them")
{
    CmosRtc rtc([] { return int64_t(0); });
    rtc.set_memory_size(256ull << 20, 1ull << 30, 1);
    CHECK((rtc.cmos(0x15) | rtc.cmos(0x16) << 8) == 640);
    CHECK((rtc.cmos(0x17) | rtc.cmos(0x18) << 8) == 0xFFFF); // 255 MiB in KiB saturates
    CHECK((rtc.cmos(0x34) | rtc.cmos(0x35) << 8) == ((256 - 16) << 4));
    CHECK((rtc.cmos(0x5B) | rtc.cmos(0x5C) << 8 | rtc.cmos(0x5D) << 16) == (1 << 14));
}

// ---------------------------------------------------------------------------------------------
// 8254 PIT and port 0x61
#include "devices/pit8254.h"

namespace {

struct PitRig {
    int64_t now = 0;
    IrqLine irq0;
    int edges = 0;
    Pit8254 pit { irq0, [this] { return now; } };
    Bus pio;
    PitRig()
    {
        irq0.connect([this](bool level) { edges += level; });
        REQUIRE(pio.add(0x40, 4, pit.counters()).has_value());
        REQUIRE(pio.add(0x61, 1, pit.port_b()).has_value());
    }
    uint16_t read16(unsigned ch)
    {
        uint16_t lo = uint16_t(pio.read(0x40 + ch, 1).first);
        return uint16_t(lo | pio.read(0x40 + ch, 1).first << 8);
    }
    static int64_t ns(uint64_t ticks) { return int64_t(ticks * 1'000'000'000ull / Pit8254::kFrequencyHz); }
};

} // namespace

TEST_CASE("pit: mode 2 rate generator on channel 0 interrupts once per period (Linux's HZ timer)")
{
    PitRig r;
    uint16_t divisor = 11932; // ~100 Hz
    r.pio.write(0x43, 1, 0x34); // channel 0, LSB then MSB, mode 2, binary
    r.pio.write(0x40, 1, divisor & 0xFF);
    r.pio.write(0x40, 1, divisor >> 8);
    auto d = r.pit.next_irq_deadline(0);
    REQUIRE(d.has_value());
    CHECK(*d == PitRig::ns(divisor) + 1);
    r.now = *d - 10;
    r.pit.advance(r.now);
    CHECK(r.edges == 0);
    r.now = *d;
    r.pit.advance(r.now);
    CHECK(r.edges == 1);
    r.now += 5 * PitRig::ns(divisor); // several periods at once: one interrupt
    r.pit.advance(r.now);
    CHECK(r.edges == 2);
    CHECK(*r.pit.next_irq_deadline(r.now) > r.now);
}

TEST_CASE("pit: counting down, counter latch and read-back status")
{
    PitRig r;
    r.pio.write(0x43, 1, 0x30); // channel 0, LSB/MSB, mode 0
    r.pio.write(0x40, 1, 0x00);
    r.pio.write(0x40, 1, 0x10); // 0x1000
    CHECK(r.read16(0) == 0x1000);
    r.now = PitRig::ns(0x100) + 1;
    CHECK(r.read16(0) == 0x0F00);
    r.pio.write(0x43, 1, 0x00); // latch channel 0
    r.now += PitRig::ns(0x200) + 3;
    CHECK(r.read16(0) == 0x0F00); // the latched value
    CHECK(r.read16(0) == 0x0D00); // live again
    CHECK_FALSE(r.pit.output(0, r.now));
    r.pio.write(0x43, 1, 0xE2); // read-back: status only, channel 0
    CHECK(r.pio.read(0x40, 1).first == 0x30); // OUT low, count loaded, LSB/MSB, mode 0, binary
    r.now = PitRig::ns(0x1000) + 1;
    CHECK(r.pit.output(0, r.now));
    r.pit.advance(r.now);
    CHECK(r.edges == 1);
    CHECK_FALSE(r.pit.next_irq_deadline(r.now).has_value()); // one-shot
}

TEST_CASE("pit: channel 2 gated by port 0x61, OUT2 visible in bit 5 (TSC calibration loop)")
{
    PitRig r;
    r.pio.write(0x61, 1, 0x01); // gate 2 high, speaker off
    r.pio.write(0x43, 1, 0xB0); // channel 2, LSB/MSB, mode 0
    r.pio.write(0x42, 1, 0xFF);
    r.pio.write(0x42, 1, 0x0F);
    CHECK((r.pio.read(0x61, 1).first & 0x21) == 0x01);
    r.now = PitRig::ns(0x1000) + 1;
    CHECK((r.pio.read(0x61, 1).first & 0x20) == 0x20);
    // Gate low suspends mode 0 counting.
    r.pio.write(0x43, 1, 0xB0);
    r.pio.write(0x42, 1, 0x00);
    r.pio.write(0x42, 1, 0x10);
    r.pio.write(0x61, 1, 0x00);
    r.now += PitRig::ns(0x800);
    CHECK(r.pit.current_count(2, r.now) == 0x1000);
    r.pio.write(0x61, 1, 0x01);
    r.now += PitRig::ns(0x100) + 1;
    CHECK(r.pit.current_count(2, r.now) == 0x0F00);
}

TEST_CASE("uart: host input is flow-controlled into RBR or the FIFO; FIFO changes lose only what is inside")
{
    UartRig r;
    r.uart.push_input("hello");
    CHECK(r.uart.pending_input() == 5);
    r.out_(2, 0x07); // FIFO on (a change of FCR0 clears it): 'h' in RBR is lost, the rest enters
    CHECK(r.in(0) == 'e');
    CHECK(r.in(0) == 'l');
    CHECK(r.uart.pending_input() == 2);
    r.uart.push_input(std::string(40, 'x'));
    CHECK(r.uart.pending_input() == 42);
    r.out_(2, 0x03); // clear RX, FIFO stays on: 16 bytes go, the backlog refills the FIFO
    CHECK(r.uart.pending_input() == 42 - 16);
}

TEST_CASE("uart: FIFO trigger level and character timeout in IIR")
{
    UartRig r;
    r.out_(2, 0xC1); // FIFO on, trigger 14
    r.out_(1, Uart16550::kIerRxData);
    r.uart.push_input("abc");
    CHECK(r.irq.level());
    CHECK(r.in(2) == (0xC0 | Uart16550::kIirCharTimeout));
    r.uart.push_input(std::string(11, 'z'));
    CHECK(r.in(2) == (0xC0 | Uart16550::kIirRxData));
}

TEST_CASE("uart: loopback overrun sets LSR.OE")
{
    UartRig r;
    r.out_(4, Uart16550::kMcrLoop);
    r.out_(0, '1');
    r.out_(0, '2'); // no FIFO: RBR full
    uint8_t lsr = r.in(5);
    CHECK((lsr & Uart16550::kLsrOverrun) != 0);
    CHECK((r.in(5) & Uart16550::kLsrOverrun) == 0);
    CHECK(r.in(0) == '1');
}

// ---------------------------------------------------------------------------------------------
// ACPI PM block
#include "devices/acpi_pm.h"

TEST_CASE("acpi-pm: PM timer at 3.579545 MHz, 24 bits; S5 via PM1_CNT powers off")
{
    int64_t now = 0;
    int power_offs = 0;
    AcpiPm pm([&] { return now; }, [&] { ++power_offs; });
    Bus pio;
    REQUIRE(pio.add(AcpiPm::kBase, AcpiPm::kLength, pm).has_value());
    CHECK(pio.read(0x608, 4).first == 0);
    now = 1'000'000'000; // one second
    CHECK(pio.read(0x608, 4).first == (3'579'545u & 0xFFFFFF));
    now = 10'000'000'000;
    CHECK(pio.read(0x608, 4).first == (35'795'450u & 0xFFFFFF));
    pio.write(0x604, 2, 0x0001); // SCI_EN
    CHECK(pio.read(0x604, 2).first == 0x0001);
    pio.write(0x604, 2, 0x1400 | 0x2000); // SLP_TYP 5 + SLP_EN: not QEMU's S5 encoding
    CHECK(power_offs == 0);
    pio.write(0x605, 1, 0x20); // SLP_TYP 0 + SLP_EN, as a byte write to the high lane
    CHECK(power_offs == 1);
    CHECK((pio.read(0x604, 2).first & AcpiPm::kSlpEn) == 0);
}
