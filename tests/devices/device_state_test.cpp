// Device snapshots (devices/device.h): each device is programmed through its bus registers into
// a state with something in every corner, saved, loaded into a fresh device, and both are then
// driven through the same script of register accesses, interrupt lines and clock steps: every
// value read and every interrupt level must agree. Every truncation of each section and each
// out-of-range field is refused, with the device left exactly as it was.
#include "devices/acpi_pm.h"
#include "devices/amd_sp.h"
#include "devices/bus.h"
#include "devices/cmos_rtc.h"
#include "devices/debug_exit.h"
#include "devices/pc_ports.h"
#include "devices/pic8259.h"
#include "devices/pit8254.h"
#include "devices/uart16550.h"
#include "tests/firmware/fw_harness.h"

#include "tests/devices/device_state_util.h"

#include <catch2/catch.hpp>
#include <functional>
#include <set>
#include <string>
#include <vector>

using namespace sevemu;
using namespace sevemu::devices;

namespace {

using namespace sevemu::devices::state_test;

// The payload with byte `at` replaced by `value` is refused with a message containing `what`,
// and the device is unchanged.
void require_refused(Device& d, Bytes payload, size_t at, uint8_t value, std::string const& what)
{
    REQUIRE(at < payload.size());
    payload[at] = value;
    Bytes before = save_of(d);
    std::string e = load_error(d, payload);
    INFO(d.name() << ": byte " << at << " = " << int(value) << " -> '" << e << "'");
    CHECK(e.find(what) != std::string::npos);
    CHECK(save_of(d) == before);
}

// --- PIC -------------------------------------------------------------------------------------

struct PicRig {
    Pic8259Pair pic;
    Bus pio;
    PicRig()
    {
        REQUIRE(pio.add(Pic8259Pair::kMasterBase, 2, pic.master()).has_value());
        REQUIRE(pio.add(Pic8259Pair::kSlaveBase, 2, pic.slave()).has_value());
        REQUIRE(pio.add(Pic8259Pair::kElcrBase, 2, pic.elcr()).has_value());
    }
    uint8_t in(uint64_t port) { return uint8_t(pio.read(port, 1).first); }
    void out(uint64_t port, uint8_t v) { pio.write(port, 1, v); }
};

// What a guest and the CPU can observe, driven the same way on any PIC: the trace of INTR,
// INTA vectors, IRR/ISR/IMR/ELCR reads, EOIs, poll, and new edges on lines already high.
std::vector<int> pic_script(PicRig& p)
{
    std::vector<int> t;
    auto regs = [&] {
        t.push_back(p.pic.interrupt_pending());
        p.out(0x20, 0x0A); // OCW3: read IRR
        t.push_back(p.in(0x20));
        p.out(0x20, 0x0B); // read ISR
        t.push_back(p.in(0x20));
        p.out(0xA0, 0x0A);
        t.push_back(p.in(0xA0));
        p.out(0xA0, 0x0B);
        t.push_back(p.in(0xA0));
        t.push_back(p.in(0x21));
        t.push_back(p.in(0xA1));
        t.push_back(p.in(0x4D0));
        t.push_back(p.in(0x4D1));
    };
    regs();
    for (int i = 0; i < 4 && p.pic.interrupt_pending(); ++i) {
        t.push_back(p.pic.acknowledge());
        regs();
    }
    p.pic.set_irq(4, true); // already high: no new edge on an edge-triggered line
    p.pic.set_irq(4, false);
    p.pic.set_irq(4, true); // a new edge
    regs();
    p.out(0xA0, 0x20); // non-specific EOI to the slave
    p.out(0x20, 0x20); // and to the master
    regs();
    p.out(0x21, 0x00); // unmask everything
    regs();
    p.out(0x20, 0x0C); // poll
    t.push_back(p.in(0x20));
    regs();
    p.out(0x20, 0x20); // EOI for what the poll acknowledged
    regs();
    while (p.pic.interrupt_pending()) {
        uint8_t v = p.pic.acknowledge();
        t.push_back(v);
        if (v == 0x39)
            p.pic.set_irq(9, false); // the device behind the level-triggered line is served
        p.out(0x20, 0x20);
        p.out(0xA0, 0x20);
        regs();
        if (t.size() > 400)
            break;
    }
    p.pic.set_irq(9, false); // a level-triggered line drops its request
    regs();
    return t;
}

void program_pic(PicRig& p)
{
    // ICW1-ICW4 as Linux's init_8259A does (edge, cascade, ICW4), master then slave.
    p.out(0x20, 0x11);
    p.out(0x21, 0x30);
    p.out(0x21, 0x04);
    p.out(0x21, 0x01);
    p.out(0xA0, 0x11);
    p.out(0xA1, 0x38);
    p.out(0xA1, 0x02);
    p.out(0xA1, 0x01);
    p.out(0x4D1, 0x02);     // IRQ 9 level triggered
    p.out(0x21, 0xA0);      // mask IRQ 5 and 7
    p.out(0xA1, 0x40);      // mask IRQ 14
    for (unsigned irq : { 1u, 3u, 5u, 9u, 14u, 4u })
        p.pic.set_irq(irq, true);
    p.pic.set_irq(1, false);
    REQUIRE(p.pic.interrupt_pending());
    REQUIRE(p.pic.acknowledge() == 0x31); // IRQ 1 in service, IRQ 3/4/slave still requested
    p.out(0x20, 0x0B);                    // leave OCW3 "read ISR" selected
}

// --- PIT -------------------------------------------------------------------------------------

struct PitRig {
    int64_t now { 0 };
    int edges { 0 };
    IrqLine irq0 { [this](bool level) { edges += level; } };
    Pit8254 pit { irq0, [this] { return now; } };
    Bus pio;
    PitRig()
    {
        REQUIRE(pio.add(Pit8254::kBase, 4, pit.counters()).has_value());
        REQUIRE(pio.add(Pit8254::kPortB, 1, pit.port_b()).has_value());
    }
    uint8_t in(uint64_t port) { return uint8_t(pio.read(port, 1).first); }
    void out(uint64_t port, uint8_t v) { pio.write(port, 1, v); }
};

void program_pit(PitRig& p)
{
    p.now = 1'000'000;
    p.pit.advance(p.now);
    p.out(0x43, 0x34); // channel 0: LSB then MSB, mode 2 (rate generator)
    p.out(0x40, 0x9C);
    p.out(0x40, 0x2E); // 11932: a 100 Hz tick, as Linux programs it
    p.out(0x61, 0x01); // gate channel 2 on
    p.out(0x43, 0xB0); // channel 2: LSB then MSB, mode 0
    p.out(0x42, 0xFF);
    p.out(0x42, 0xFF);
    p.out(0x43, 0x72); // channel 1: LSB then MSB, mode 1 — no count yet (null count)
    p.out(0x41, 0x34); // only the LSB: the MSB write is pending
    p.now += 12'000'000; // one tick of channel 0 ...
    p.pit.advance(p.now);
    p.now += 13'123'456; // ... and another: mid-count
    p.pit.advance(p.now);
    REQUIRE(p.edges == 2);
    p.out(0x61, 0x00); // channel 2's gate low: counting suspended
    p.now += 777;
    p.out(0x43, 0x00); // latch channel 0 ...
    (void)p.in(0x40);  // ... and read its LSB only: the MSB is still to come
    p.out(0x43, 0xE8); // read-back: status of channel 2 only
    p.now += 3'000'000;
}

std::vector<int64_t> pit_script(PitRig& p)
{
    std::vector<int64_t> t;
    auto look = [&] {
        for (unsigned c = 0; c < 3; ++c) {
            t.push_back(p.pit.current_count(c, p.now));
            t.push_back(p.pit.output(c, p.now));
        }
        t.push_back(p.pit.next_irq_deadline(p.now).value_or(-1));
        t.push_back(p.in(0x61) & ~0x10); // refresh toggle aside (a function of the clock)
        t.push_back(p.edges);
    };
    look();
    t.push_back(p.in(0x40)); // the latched MSB
    t.push_back(p.in(0x42)); // the status byte from read-back
    t.push_back(p.in(0x42)); // then the count, LSB
    t.push_back(p.in(0x42)); // MSB
    look();
    p.out(0x41, 0x12); // channel 1's MSB completes its count
    look();
    for (int step = 0; step < 5; ++step) {
        p.now += 4'321'987;
        p.pit.advance(p.now);
        look();
    }
    p.out(0x61, 0x03); // gate 2 back on, speaker on
    p.now += 50'000'000;
    p.pit.advance(p.now);
    look();
    return t;
}

// --- RTC -------------------------------------------------------------------------------------

struct RtcRig {
    int64_t now { 0 };
    CmosRtc rtc;
    Bus pio;
    explicit RtcRig(int64_t epoch) : rtc([this] { return now; }, epoch) { REQUIRE(pio.add(CmosRtc::kBase, 2, rtc).has_value()); }
    uint8_t get(uint8_t index)
    {
        pio.write(0x70, 1, index);
        return uint8_t(pio.read(0x71, 1).first);
    }
    void set(uint8_t index, uint8_t v)
    {
        pio.write(0x70, 1, index);
        pio.write(0x71, 1, v);
    }
};

std::vector<int> rtc_script(RtcRig& r)
{
    std::vector<int> t;
    t.push_back(int(r.pio.read(0x71, 1).first)); // the index register as it was left
    for (int step = 0; step < 3; ++step) {
        for (uint8_t i = 0; i < 0x80; ++i)
            if (i != CmosRtc::kRegA) // UIP is a function of the clock; checked below
                t.push_back(r.get(i));
        t.push_back(r.get(CmosRtc::kRegA) & 0x7F);
        r.now += 61'500'000'000; // a minute and a half
    }
    return t;
}

// --- UART ------------------------------------------------------------------------------------

struct UartRig {
    int level_changes { 0 };
    IrqLine irq { [this](bool) { ++level_changes; } };
    std::string out;
    Uart16550 uart { irq, [this](uint8_t b) { out.push_back(char(b)); } };
    Bus pio;
    UartRig() { REQUIRE(pio.add(Uart16550::kCom1Base, 8, uart).has_value()); }
    uint8_t in(unsigned reg) { return uint8_t(pio.read(Uart16550::kCom1Base + reg, 1).first); }
    void out_(unsigned reg, uint8_t v) { pio.write(Uart16550::kCom1Base + reg, 1, v); }
};

void program_uart(UartRig& u)
{
    u.out_(3, 0x80); // DLAB
    u.out_(0, 0x01); // 115200 baud
    u.out_(1, 0x02);
    u.out_(3, 0x1B); // 8E1
    u.out_(7, 0x5A); // scratch
    u.out_(2, 0x87); // FIFO on, cleared, trigger 8
    u.uart.push_input("0123456789abcdefGHIJKLMNOP"); // 16 in the FIFO, 10 waiting
    (void)u.in(0); // one read: a backlog byte moves in
    u.out_(4, 0x1B); // loopback with DTR, RTS, OUT2
    u.out_(0, 'x');  // loopback into a full FIFO: overrun
    u.out_(4, 0x1F); // OUT1 on: RI in loopback
    u.out_(4, 0x1B); // and off again: trailing-edge RI
    u.out_(1, 0x0F); // every interrupt enabled (THRE pending since the write)
    REQUIRE(u.uart.pending_input() == 25);
}

std::vector<int> uart_script(UartRig& u)
{
    std::vector<int> t;
    auto look = [&] {
        t.push_back(u.irq.level());
        t.push_back(u.in(2)); // IIR (reading clears THRE when it is the source)
        t.push_back(u.irq.level());
    };
    look();
    t.push_back(u.in(5)); // LSR: overrun, data ready
    look();
    t.push_back(u.in(6)); // MSR with the deltas
    look();
    for (unsigned r : { 1u, 3u, 4u, 7u })
        t.push_back(u.in(r));
    u.out_(3, 0x9B);
    t.push_back(u.in(0));
    t.push_back(u.in(1));
    u.out_(3, 0x1B);
    while (u.in(5) & Uart16550::kLsrDataReady) {
        t.push_back(u.in(0));
        look();
        if (t.size() > 500)
            break;
    }
    u.out_(4, 0x03); // loopback off: output goes to the sink
    u.out_(0, '!');
    look();
    u.out_(2, 0x00); // FIFO off
    u.uart.push_input("zz");
    look();
    t.push_back(u.in(0));
    t.push_back(u.in(0));
    look();
    for (char c : u.out)
        t.push_back(c);
    return t;
}

// --- ACPI PM ---------------------------------------------------------------------------------

struct AcpiRig {
    int64_t now { 0 };
    int power_offs { 0 };
    AcpiPm pm { [this] { return now; }, [this] { ++power_offs; } };
    Bus pio;
    AcpiRig() { REQUIRE(pio.add(AcpiPm::kBase, AcpiPm::kLength, pm).has_value()); }
};

std::vector<uint64_t> acpi_script(AcpiRig& a)
{
    std::vector<uint64_t> t;
    for (uint64_t off = 0; off < 0x0C; off += 2)
        t.push_back(a.pio.read(AcpiPm::kBase + off, 2).first);
    t.push_back(a.pio.read(AcpiPm::kBase + AcpiPm::kPmTimer, 4).first);
    a.pio.write(AcpiPm::kBase + AcpiPm::kPm1Control, 2, a.pm.control() | AcpiPm::kSlpEn); // keeps SLP_TYP
    t.push_back(uint64_t(a.power_offs));
    return t;
}

} // namespace

TEST_CASE("device names are the snapshot section names, unique, and versions are 1 (acpi-pm: 2)", "[devices][state]")
{
    PicRig pic;
    PitRig pit;
    RtcRig rtc(0);
    UartRig uart;
    AcpiRig acpi;
    PostPort post;
    DebugExit dbg { [](int) {} };
    test::TestPlatform platform;
    std::vector<Device const*> all { &pic.pic, &pit.pit, &rtc.rtc, &uart.uart, &acpi.pm, &post, &dbg, platform.sp.get() };
    std::vector<std::string> names;
    for (auto const* d : all) {
        names.emplace_back(d->name());
        CHECK(d->state_version() == (d->name() == "acpi-pm" ? 2u : 1u)); // acpi-pm 2: the TMR_STS period
    }
    CHECK(names == std::vector<std::string> { "pic", "pit", "rtc", "com1", "acpi-pm", "post", "debug-exit", "amd-sp" });
    CHECK(std::set<std::string>(names.begin(), names.end()).size() == names.size());
    // The PIC answers the vCPU as an InterruptController and takes ISA lines as an IrqSink.
    InterruptController& ic = pic.pic;
    IrqSink& sink = pic.pic;
    program_pic(pic);
    sink.set_irq(6, true);
    CHECK(ic.interrupt_pending() == pic.pic.intr());
}

TEST_CASE("pic: a restored pair behaves as the original (ICW, masks, IRR/ISR, ELCR, line levels)", "[devices][state]")
{
    PicRig a;
    program_pic(a);
    Bytes payload = save_of(a.pic);
    CHECK(payload.size() == 2 * 16);
    PicRig b;
    REQUIRE(load_error(b.pic, payload).empty());
    CHECK(save_of(b.pic) == payload);
    CHECK(b.pic.intr() == a.pic.intr()); // INTR re-derived by the load
    auto ta = pic_script(a), tb = pic_script(b);
    CHECK(ta.size() > 100);
    CHECK(ta == tb);
    // The script is not blind: a fresh pair gives another trace.
    PicRig c;
    CHECK(pic_script(c) != ta);
}

TEST_CASE("pic: truncated or out-of-range sections are refused and change nothing", "[devices][state]")
{
    PicRig a;
    program_pic(a);
    Bytes payload = save_of(a.pic);
    PicRig b;
    b.out(0x21, 0x55);
    b.pic.set_irq(3, true);
    require_truncations_refused(b.pic, payload);
    // Master: irr isr imr level elcr base rotation step, 8 booleans; the slave from 16.
    require_refused(b.pic, payload, 7, 4, "initialization step");
    require_refused(b.pic, payload, 6, 8, "rotation");
    require_refused(b.pic, payload, 5, 0x21, "vector base");
    require_refused(b.pic, payload, 4, 0x01, "always edge"); // ELCR for IRQ 0
    require_refused(b.pic, payload, 16 + 4, 0x01, "always edge"); // IRQ 8
    require_refused(b.pic, payload, 8, 2, "");            // a boolean that is not 0 or 1
    require_refused(b.pic, payload, 16 + 15, 7, "");
}

TEST_CASE("pit: restored channels count, latch and interrupt at the same virtual instants", "[devices][state]")
{
    PitRig a;
    program_pit(a);
    Bytes payload = save_of(a.pit);
    PitRig b;
    b.now = a.now; // the machine restores its clock; the PIT's times are on it
    b.edges = a.edges;
    REQUIRE(load_error(b.pit, payload).empty());
    CHECK(save_of(b.pit) == payload);
    REQUIRE(a.pit.next_irq_deadline(a.now).has_value());
    CHECK(b.pit.next_irq_deadline(b.now) == a.pit.next_irq_deadline(a.now));
    auto ta = pit_script(a), tb = pit_script(b);
    CHECK(ta == tb);
    CHECK(a.edges > 2); // channel 0 kept ticking through the script
    PitRig c;
    c.now = a.now - 50'000'000 - 5 * 4'321'987; // where a's script started
    c.edges = 2;
    CHECK(pit_script(c) != ta);
}

TEST_CASE("pit: truncated or out-of-range sections are refused and change nothing", "[devices][state]")
{
    PitRig a;
    program_pit(a);
    Bytes payload = save_of(a.pit);
    PitRig b;
    b.out(0x43, 0x36);
    b.out(0x40, 0x10);
    b.out(0x40, 0x00);
    require_truncations_refused(b.pit, payload);
    // Per channel (46 bytes): mode, access, bcd, reload u32 @3, armed @7, load i64 @8,
    // gate @16, gate-low @17, wmsb @25, rmsb @26, lsb @27, latched @28, value @29, lmsb @31,
    // status? @32, status @33, null @34 ... the channel is 35 bytes.
    constexpr size_t kChannel = 35;
    REQUIRE(payload.size() == 3 * kChannel + 9);
    require_refused(b.pit, payload, 0, 6, "counting mode");
    require_refused(b.pit, payload, 1, 4, "access mode");
    Bytes zero_count = payload;
    for (size_t i = 3; i < 7; ++i)
        zero_count[i] = 0;
    require_refused(b.pit, zero_count, 3, 0, "count 0");
    require_refused(b.pit, payload, 6, 0x02, "count"); // > 0x10000
    Bytes count_one = payload;
    count_one[3] = 1, count_one[4] = 0, count_one[5] = 0, count_one[6] = 0;
    require_refused(b.pit, count_one, 3, 1, "count 1 in mode 2");
    require_refused(b.pit, payload, 16, 0, "gate low"); // channel 0's gate is wired high
    require_refused(b.pit, payload, kChannel + 16, 0, "gate low");
    require_refused(b.pit, payload, 2 * kChannel + 2, 2, ""); // bcd not a boolean
}

TEST_CASE("rtc: the guest's date continues from the snapshot, not from the host's clock", "[devices][state]")
{
    int64_t const epoch_a = 1'700'000'000'000'000'000; // 2023-11-14
    int64_t const epoch_b = 1'800'000'000'000'000'000; // another host, three years later
    RtcRig a(epoch_a);
    a.now = 5'000'000'000;
    a.set(CmosRtc::kRegB, CmosRtc::kRegB24h | CmosRtc::kRegBBinary | 0x40); // binary, 24 h, PIE
    for (uint8_t i = 0x0E; i < 0x80; ++i)
        if (i != CmosRtc::kCentury)
            a.set(i, uint8_t(i * 7 + 3));
    // The guest sets the clock: 2031-02-03 04:05:06.
    a.set(CmosRtc::kRegB, CmosRtc::kRegBSet | CmosRtc::kRegB24h | CmosRtc::kRegBBinary | 0x40);
    a.set(CmosRtc::kYear, 31);
    a.set(CmosRtc::kCentury, 20);
    a.set(CmosRtc::kMonth, 2);
    a.set(CmosRtc::kDayOfMonth, 3);
    a.set(CmosRtc::kHours, 4);
    a.set(CmosRtc::kMinutes, 5);
    a.set(CmosRtc::kSeconds, 6);
    a.set(CmosRtc::kRegB, CmosRtc::kRegB24h | CmosRtc::kRegBBinary | 0x40);
    a.now += 2'500'000'000;
    a.set(CmosRtc::kRegA, 0x2F);
    a.pio.write(0x70, 1, 0x0F); // index left at 0x0F, NMI unmasked
    Bytes payload = save_of(a.rtc);
    CHECK(payload.size() == 128 + 1 + 1 + 8);

    RtcRig b(epoch_b);
    b.now = a.now;
    REQUIRE(load_error(b.rtc, payload).empty());
    CHECK(b.rtc.guest_now_ns() == a.rtc.guest_now_ns());
    CHECK(b.rtc.nmi_masked() == a.rtc.nmi_masked());
    auto ta = rtc_script(a), tb = rtc_script(b);
    CHECK(ta == tb);
    CHECK(b.get(CmosRtc::kYear) == 31);
    CHECK(b.get(CmosRtc::kMonth) == 2);

    // A guest that never set its clock: the restored one still shows the snapshot's date.
    RtcRig c(epoch_a), d(epoch_b);
    c.now = d.now = 9'000'000'000;
    REQUIRE(load_error(d.rtc, save_of(c.rtc)).empty());
    CHECK(d.get(CmosRtc::kYear) == c.get(CmosRtc::kYear));
    CHECK(rtc_script(c) == rtc_script(d));
    RtcRig e(epoch_b);
    e.now = c.now;
    CHECK(rtc_script(e) != rtc_script(c)); // the host clock would have given another date
}

TEST_CASE("rtc: truncated or out-of-range sections are refused and change nothing", "[devices][state]")
{
    RtcRig a(1'700'000'000'000'000'000);
    a.set(0x40, 0x99);
    Bytes payload = save_of(a.rtc);
    RtcRig b(1'600'000'000'000'000'000);
    b.set(0x41, 0x77);
    require_truncations_refused(b.rtc, payload);
    require_refused(b.rtc, payload, 128, 0x80, "index register");
    require_refused(b.rtc, payload, 129, 2, "");
    require_refused(b.rtc, payload, CmosRtc::kRegA, 0xA6, "UIP");
    require_refused(b.rtc, payload, CmosRtc::kRegD, 0x81, "register D");
    require_refused(b.rtc, payload, 137, 0x7F, "time base");
}

TEST_CASE("uart: FIFOs, backlog, errors, modem deltas and the pending interrupt survive a restore", "[devices][state]")
{
    UartRig a;
    program_uart(a);
    Bytes payload = save_of(a.uart);
    UartRig b;
    int before = b.level_changes;
    REQUIRE(load_error(b.uart, payload).empty());
    CHECK(save_of(b.uart) == payload);
    CHECK(b.irq.level() == a.irq.level()); // the line was driven to the restored level
    CHECK(b.irq.level());
    CHECK(b.level_changes > before);
    CHECK(b.uart.divisor() == a.uart.divisor());
    CHECK(b.uart.pending_input() == 25);
    auto ta = uart_script(a), tb = uart_script(b);
    CHECK(ta.size() > 100);
    CHECK(ta == tb);
    UartRig c;
    CHECK(uart_script(c) != ta);
}

TEST_CASE("uart: truncated or out-of-range sections are refused and change nothing", "[devices][state]")
{
    UartRig a;
    program_uart(a);
    Bytes payload = save_of(a.uart);
    UartRig b;
    b.out_(7, 0x11);
    b.uart.push_input("q");
    require_truncations_refused(b.uart, payload);
    // IER LCR MCR SCR FCR DLL DLM lsr msr modem thr, rx length @11 ...
    require_refused(b.uart, payload, 0, 0x1F, "IER");
    require_refused(b.uart, payload, 2, 0x3B, "MCR");
    require_refused(b.uart, payload, 4, 0xCF, "FCR");
    require_refused(b.uart, payload, 7, 0x61, "LSR");
    require_refused(b.uart, payload, 8, 0x10, "MSR deltas");
    require_refused(b.uart, payload, 9, 0x01, "MSR lines");
    require_refused(b.uart, payload, 10, 2, "");
    require_refused(b.uart, payload, 11, 17, "");               // receive FIFO longer than 16
    require_refused(b.uart, payload, 4, 0x00, "more than its 1"); // FIFO off: 16 bytes do not fit
    // A FIFO with room while host input waits is a state the UART never reaches.
    UartRig c;
    c.out_(2, 0x01);
    c.uart.push_input("ab");
    Bytes room = save_of(c.uart);
    Bytes with_backlog(room.begin(), room.end() - 8);
    for (int v : { 1, 0, 0, 0, 0, 0, 0, 0, int('z') })
        with_backlog.push_back(uint8_t(v));
    require_refused(b.uart, with_backlog, 0, with_backlog[0], "has room");
}

TEST_CASE("acpi-pm: enables and PM1 control are restored; SLP_EN is never stored", "[devices][state]")
{
    AcpiRig a;
    a.pio.write(AcpiPm::kBase + AcpiPm::kPm1Enable, 2, 0x0121);
    a.pio.write(AcpiPm::kBase + AcpiPm::kPm1Control, 2, AcpiPm::kSciEn | (5u << 10)); // SLP_TYP 5 without SLP_EN
    a.now = 123'456'789;
    Bytes payload = save_of(a.pm);
    // PM1 status, enable, control; the TMR_STS period (123.456789 ms: bit 23 has not changed yet).
    CHECK(payload == Bytes { 0, 0, 0x21, 0x01, 0x01, 0x14, 0, 0, 0, 0, 0, 0, 0, 0 });
    AcpiRig b;
    b.now = a.now;
    REQUIRE(load_error(b.pm, payload).empty());
    CHECK(acpi_script(a) == acpi_script(b));
    require_truncations_refused(b.pm, payload);
    require_refused(b.pm, payload, 5, 0x34, "SLP_EN");
}

TEST_CASE("post and debug-exit: their sections round-trip; debug-exit's is empty", "[devices][state]")
{
    PostPort a;
    a.write(0, 1, 0x42);
    a.write(0, 1, 0x43);
    Bytes payload = save_of(a);
    PostPort b;
    REQUIRE(load_error(b, payload).empty());
    CHECK(b.last_code() == 0x43);
    CHECK(b.writes() == 2);
    require_truncations_refused(b, payload);
    b.reset();
    CHECK(b.last_code() == 0);

    int exits = 0;
    DebugExit d { [&](int) { ++exits; } };
    CHECK(save_of(d).empty());
    CHECK(load_error(d, {}).empty());
    CHECK(load_error(d, { 0 }).find("trailing") != std::string::npos);
    d.reset();
    d.write(0, 1, 1);
    CHECK(exits == 1);
}

TEST_CASE("amd-sp: mailbox registers and the platform state; guest contexts block a snapshot", "[devices][state]")
{
    test::TestPlatform a;
    auto const& l = a.mbox->layout();
    uint64_t bar = test::TestPlatform::kMmioBase;
    // PLATFORM_STATUS with IOC, the interrupt left unacknowledged: INTSTS set, line high.
    a.bus.write(bar + l.cmdbuf_lo, 4, uint32_t(test::TestPlatform::kCmdBuf));
    a.bus.write(bar + l.cmdbuf_hi, 4, 0);
    a.bus.write(bar + l.cmdresp, 4, (0x04u << 16) | 1u);
    a.bus.write(bar + l.inten, 4, 0x2);
    REQUIRE(a.irq.level());
    CHECK(!a.sp->snapshot_blocker());
    Bytes payload = save_of(*a.sp);
    CHECK(payload.size() == 2 + 3 + 5 * 4 + 8 + 1 + 4);

    test::TestPlatform b;
    b.bus.write(bar + l.inten, 4, 0);
    REQUIRE_FALSE(b.irq.level());
    REQUIRE(load_error(*b.sp, payload).empty());
    CHECK(b.irq.level()); // INTSTS & INTEN drive the restored line
    for (uint32_t off : { l.cmdresp, l.cmdbuf_lo, l.cmdbuf_hi, l.inten, l.intsts, l.feature })
        CHECK(b.bus.read(bar + off, 4).first == a.bus.read(bar + off, 4).first);
    CHECK(b.mbox->commands_run() == a.mbox->commands_run());
    CHECK(save_of(*b.sp) == payload);
    // The restored AMD-SP runs commands as the original does.
    CHECK(a.platform_status().state == b.platform_status().state);

    require_truncations_refused(*b.sp, payload);
    require_refused(*b.sp, payload, 0, 0x87, "1022:1487");        // another PSP generation
    require_refused(*b.sp, payload, 2, 9, "firmware is API 9.");   // another firmware
    Bytes busy = payload;
    busy[5] = 0x01; // CmdResp = IOC without PSP_CMDRESP_RESP: a command still running
    require_refused(*b.sp, busy, 8, 0x00, "still running");
    require_refused(*b.sp, payload, 21, 0x04, "P2CMSG_INTSTS");
    require_refused(*b.sp, payload, 33, 3, "platform state 3");
    require_refused(*b.sp, payload, 34, 1, "guest keys never leave");

    // The platform state is the --platform store's and the firmware's: a snapshot taken in
    // INIT does not go into a machine whose AMD-SP is UNINIT, nor the reverse.
    test::TestPlatform c;
    REQUIRE(c.init() == 0);
    Bytes init_payload = save_of(*c.sp);
    test::TestPlatform d;
    Bytes d_before = save_of(*d.sp);
    std::string e = load_error(*d.sp, init_payload);
    CHECK(e.find("state INIT") != std::string::npos);
    CHECK(e.find("UNINIT") != std::string::npos);
    CHECK(e.find("--platform store") != std::string::npos);
    CHECK(save_of(*d.sp) == d_before);
    CHECK(load_error(*c.sp, payload).find("state UNINIT") != std::string::npos);
    REQUIRE(d.init() == 0);
    CHECK(load_error(*d.sp, init_payload).empty());

    // A guest context: the blocker names it, and its section is refused everywhere.
    uint32_t handle = 0;
    REQUIRE(c.launch_start(0, handle) == 0);
    auto blocker = c.sp->snapshot_blocker();
    REQUIRE(blocker);
    CHECK(*blocker == "the AMD-SP holds 1 SEV guest context; their keys never leave it, so a snapshot cannot carry them");
    Bytes with_guest = save_of(*c.sp);
    CHECK(load_error(*d.sp, with_guest).find("guest keys never leave the AMD-SP") != std::string::npos);
    CHECK(load_error(*c.sp, init_payload).find("this machine's AMD-SP holds SEV guest contexts") != std::string::npos);
    REQUIRE(c.decommission(handle) == 0);
    CHECK(!c.sp->snapshot_blocker());
}
