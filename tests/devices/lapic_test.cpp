// The local APIC (devices/lapic.h), the APIC bus (devices/apic_bus.h) and the IOAPIC
// (devices/ioapic.h). Expected values come from the manuals, not from the code: AMD APM vol 2
// §16 (register map, reset values, ESR, timer divide encoding, priority rules), Intel SDM vol 3
// §11.12 (x2APIC MSR map, #GP rules, Figure 11-27 transitions), §11.5.4 (TSC-deadline), the
// 82093AA data sheet (IOAPIC), and Linux 6.1's own access sequences (smpboot.c
// wakeup_secondary_cpu_via_init, apic.c setup_local_APIC's virtual-wire LVT0).
#include "devices/apic_bus.h"
#include "devices/bus.h"
#include "devices/ioapic.h"
#include "devices/lapic.h"
#include "devices/pic8259.h"

#include <algorithm>
#include "tests/devices/device_state_util.h"

#include <catch2/catch.hpp>
#include <memory>
#include <random>
#include <string>
#include <vector>

using namespace sevemu;
using namespace sevemu::devices;

namespace {

using namespace sevemu::devices::state_test;
constexpr uint32_t kEsrIllegalReg = 0x80, kEsrSendIllegal = 0x20, kEsrRecvIllegal = 0x40, kEsrSendAccept = 0x04;


// N vCPUs' LAPICs on one ApicRouter, APIC IDs 0..N-1 (vCPU 0 the BSP), one clock.
struct Rig {
    int64_t now { 0 };
    ApicRouter bus;
    std::vector<std::unique_ptr<LocalApic>> cpu;
    explicit Rig(unsigned n = 1, uint64_t tsc_hz = LocalApic::kDefaultTscHz)
    {
        for (unsigned i = 0; i < n; ++i) {
            LocalApic::Config c;
            c.cpu_index = i;
            c.apic_id = i;
            c.bsp = i == 0;
            c.tsc_hz = tsc_hz;
            cpu.push_back(std::make_unique<LocalApic>(c, [this] { return now; }));
            cpu.back()->connect_bus(&bus);
            bus.attach(*cpu.back());
        }
    }
    LocalApic& operator[](unsigned i) { return *cpu[i]; }
};

uint32_t rd(LocalApic& l, uint32_t off) { return uint32_t(l.read(off, 4)); }
void wr(LocalApic& l, uint32_t off, uint32_t v) { l.write(off, 4, v); }
void enable_sw(LocalApic& l, uint8_t spurious = 0xFF) { wr(l, LocalApic::kSvr, 0x100u | spurious); }
bool irr_has(LocalApic& l, uint8_t v) { return rd(l, LocalApic::kIrr + 0x10 * (v / 32)) & (1u << (v % 32)); }
bool isr_has(LocalApic& l, uint8_t v) { return rd(l, LocalApic::kIsr + 0x10 * (v / 32)) & (1u << (v % 32)); }
bool tmr_has(LocalApic& l, uint8_t v) { return rd(l, LocalApic::kTmr + 0x10 * (v / 32)) & (1u << (v % 32)); }
void send_ipi(LocalApic& l, uint32_t dest8, uint32_t low)
{
    wr(l, LocalApic::kIcrHigh, dest8 << 24);
    wr(l, LocalApic::kIcrLow, low);
}
uint32_t esr(LocalApic& l)
{
    wr(l, LocalApic::kEsr, 0);
    return rd(l, LocalApic::kEsr);
}
// x2APIC mode through the legal path (xAPIC -> x2APIC).
void to_x2apic(LocalApic& l)
{
    uint64_t base = l.apic_base_msr();
    REQUIRE(l.write_msr(LocalApic::kMsrApicBase, base | LocalApic::kBaseExtd).has_value());
}

} // namespace

TEST_CASE("lapic: power-on register values (APM vol 2 §16.3, SDM §11.4.7.1)", "[devices][lapic]")
{
    Rig r(2);
    LocalApic& bsp = r[0];
    LocalApic& ap = r[1];
    CHECK(bsp.apic_base_msr() == (0xFEE00000u | 0x800 | 0x100)); // enabled, BSP
    CHECK(ap.apic_base_msr() == (0xFEE00000u | 0x800));
    CHECK(bsp.mmio_base() == 0xFEE00000u);
    CHECK(bsp.mmio_decoded());
    CHECK(rd(bsp, LocalApic::kId) == 0);
    CHECK(rd(ap, LocalApic::kId) == 0x01000000); // ID in bits 31:24
    CHECK(rd(bsp, LocalApic::kVer) == 0x00050010); // version 0x10, max LVT 5
    CHECK(rd(bsp, LocalApic::kTpr) == 0);
    CHECK(rd(bsp, LocalApic::kLdr) == 0);
    CHECK(rd(bsp, LocalApic::kDfr) == 0xFFFFFFFF);
    CHECK(rd(bsp, LocalApic::kSvr) == 0xFF); // software disabled, spurious vector 0xFF
    for (uint32_t off = LocalApic::kLvtTimer; off <= LocalApic::kLvtError; off += 0x10) {
        INFO(std::hex << off);
        if (off == LocalApic::kLvtLint0)
            continue;
        CHECK(rd(bsp, off) == 0x10000);
        CHECK(rd(ap, off) == 0x10000);
    }
    // The BSP's LINT0 is virtual wire (ExtINT, unmasked), as QEMU's reset leaves it.
    CHECK(rd(bsp, LocalApic::kLvtLint0) == 0x700);
    CHECK(rd(ap, LocalApic::kLvtLint0) == 0x10000);
    CHECK(rd(bsp, LocalApic::kTimerInitial) == 0);
    CHECK(rd(bsp, LocalApic::kTimerCurrent) == 0);
    CHECK(rd(bsp, LocalApic::kTimerDivide) == 0);
    CHECK_FALSE(bsp.waiting_for_sipi());
    CHECK(ap.waiting_for_sipi());
    CHECK(bsp.name() == "lapic0");
    CHECK(ap.name() == "lapic1");
}

TEST_CASE("lapic: register write masks and read-only registers (xAPIC MMIO)", "[devices][lapic]")
{
    Rig r;
    LocalApic& l = r[0];
    wr(l, LocalApic::kId, 0xFFFFFFFF);
    CHECK(rd(l, LocalApic::kId) == 0xFF000000);
    CHECK(l.apic_id() == 0xFF);
    wr(l, LocalApic::kId, 0);
    wr(l, LocalApic::kVer, 0);
    CHECK(rd(l, LocalApic::kVer) == 0x00050010);
    wr(l, LocalApic::kTpr, 0xFFFFFFFF);
    CHECK(rd(l, LocalApic::kTpr) == 0xFF);
    wr(l, LocalApic::kTpr, 0);
    wr(l, LocalApic::kLdr, 0xFFFFFFFF);
    CHECK(rd(l, LocalApic::kLdr) == 0xFF000000);
    wr(l, LocalApic::kDfr, 0);
    CHECK(rd(l, LocalApic::kDfr) == 0x0FFFFFFF); // cluster model; bits 27:0 read 1
    wr(l, LocalApic::kSvr, 0xFFFFFFFF);
    CHECK(rd(l, LocalApic::kSvr) == 0x3FF); // vector, APIC enable, focus check
    // LVT writable bits (delivery status and remote IRR are read-only).
    wr(l, LocalApic::kLvtTimer, 0xFFFFFFFF);
    CHECK(rd(l, LocalApic::kLvtTimer) == 0x000700FF);
    wr(l, LocalApic::kLvtThermal, 0xFFFFFFFF);
    CHECK(rd(l, LocalApic::kLvtThermal) == 0x000107FF);
    wr(l, LocalApic::kLvtPerf, 0xFFFFFFFF);
    CHECK(rd(l, LocalApic::kLvtPerf) == 0x000107FF);
    wr(l, LocalApic::kLvtLint0, 0xFFFFFFFF);
    CHECK(rd(l, LocalApic::kLvtLint0) == 0x0001A7FF);
    wr(l, LocalApic::kLvtLint1, 0xFFFFFFFF);
    CHECK(rd(l, LocalApic::kLvtLint1) == 0x0001A7FF);
    wr(l, LocalApic::kLvtError, 0xFFFFFFFF);
    CHECK(rd(l, LocalApic::kLvtError) == 0x000100FF);
    wr(l, LocalApic::kTimerDivide, 0xFFFFFFFF);
    CHECK(rd(l, LocalApic::kTimerDivide) == 0xB);
    wr(l, LocalApic::kIcrHigh, 0xFFFFFFFF);
    CHECK(rd(l, LocalApic::kIcrHigh) == 0xFF000000);
    // Clearing the software enable masks every LVT, and they stay masked while disabled.
    wr(l, LocalApic::kLvtTimer, 0x20);
    CHECK(rd(l, LocalApic::kLvtTimer) == 0x20);
    wr(l, LocalApic::kSvr, 0xFF);
    CHECK(rd(l, LocalApic::kLvtTimer) == 0x10020);
    wr(l, LocalApic::kLvtTimer, 0x21);
    CHECK(rd(l, LocalApic::kLvtTimer) == 0x10021);
    // Read-only registers ignore writes and set no error.
    wr(l, LocalApic::kPpr, 0xFF);
    wr(l, LocalApic::kIrr, 0xFFFFFFFF);
    wr(l, LocalApic::kTimerCurrent, 5);
    CHECK(rd(l, LocalApic::kPpr) == 0);
    CHECK(rd(l, LocalApic::kIrr) == 0);
    CHECK(rd(l, LocalApic::kTimerCurrent) == 0);
    CHECK(esr(l) == 0);
    // Narrow and unaligned writes are dropped; narrow reads return the register's bytes.
    l.write(LocalApic::kTpr, 1, 0x40);
    CHECK(rd(l, LocalApic::kTpr) == 0);
    wr(l, LocalApic::kTpr, 0x5A);
    CHECK(l.read(LocalApic::kTpr, 1) == 0x5A);
    CHECK(l.read(LocalApic::kVer + 2, 1) == 0x05);
    CHECK(l.read(LocalApic::kVer + 2, 2) == 0x0005);
}

TEST_CASE("lapic: ESR accumulates, a write latches it, reads show the latched value (APM §16.4.6)", "[devices][lapic]")
{
    Rig r;
    LocalApic& l = r[0];
    enable_sw(l);
    CHECK(rd(l, 0x000) == 0); // no register at offset 0
    CHECK(rd(l, LocalApic::kEsr) == 0); // not visible before a write
    wr(l, LocalApic::kEsr, 0);
    CHECK(rd(l, LocalApic::kEsr) == kEsrIllegalReg);
    CHECK(rd(l, LocalApic::kEsr) == kEsrIllegalReg); // reading does not clear it
    wr(l, LocalApic::kEsr, 0);
    CHECK(rd(l, LocalApic::kEsr) == 0); // the accumulator was emptied by the first write
    // A self IPI with vector 3: send illegal vector; nothing delivered.
    send_ipi(l, 0, 0x00040003);
    CHECK(esr(l) == kEsrSendIllegal);
    CHECK(rd(l, LocalApic::kIrr) == 0);
    // An error interrupt through the error LVT when unmasked.
    wr(l, LocalApic::kLvtError, 0xFE);
    l.write(0x3A0, 4, 1); // a hole in the map
    CHECK(irr_has(l, 0xFE));
    CHECK(esr(l) == kEsrIllegalReg);
    // A fixed interrupt arriving with vector < 16: receive illegal vector.
    l.accept_fixed(7, false);
    CHECK(esr(l) == kEsrRecvIllegal);
    // An IPI to an APIC ID nobody has: send accept error.
    send_ipi(l, 9, 0x40);
    CHECK(esr(l) == kEsrSendAccept);
}

TEST_CASE("lapic: IRR/ISR priority with TPR and PPR, EOI order, spurious vector", "[devices][lapic]")
{
    Rig r;
    LocalApic& l = r[0];
    enable_sw(l, 0xEF);
    l.accept_fixed(0x31, false);
    l.accept_fixed(0x52, false);
    l.accept_fixed(0x45, false);
    CHECK(l.interrupt_pending());
    // APR: TPR 0 is below the highest IRR class: the highest class (0x50).
    CHECK(rd(l, LocalApic::kApr) == 0x50);
    CHECK(l.acknowledge() == 0x52);
    CHECK(isr_has(l, 0x52));
    CHECK_FALSE(irr_has(l, 0x52));
    CHECK(rd(l, LocalApic::kPpr) == 0x50); // ISR class above TPR's
    // 0x45 (class 4) cannot interrupt the class-5 handler; neither can 0x5F (same class).
    l.accept_fixed(0x5F, false);
    CHECK_FALSE(l.interrupt_pending());
    l.accept_fixed(0x61, false);
    CHECK(l.interrupt_pending());
    CHECK(l.acknowledge() == 0x61); // nests
    wr(l, LocalApic::kEoi, 0);      // EOI goes to the highest ISR bit: 0x61
    CHECK_FALSE(isr_has(l, 0x61));
    CHECK(isr_has(l, 0x52));
    CHECK_FALSE(l.interrupt_pending()); // 0x5F still blocked by ISR 0x52
    wr(l, LocalApic::kEoi, 0);
    CHECK(l.acknowledge() == 0x5F);
    wr(l, LocalApic::kEoi, 0);
    // TPR 0x40 blocks class 4 and below: 0x45 waits, 0x31 waits.
    wr(l, LocalApic::kTpr, 0x40);
    CHECK(rd(l, LocalApic::kPpr) == 0x40);
    CHECK_FALSE(l.interrupt_pending());
    CHECK(rd(l, LocalApic::kApr) == 0x40); // TPR class >= IRR class and > ISR class: TPR
    wr(l, LocalApic::kTpr, 0x3F);
    CHECK(l.acknowledge() == 0x45);
    CHECK(rd(l, LocalApic::kPpr) == 0x40);
    wr(l, LocalApic::kEoi, 0);
    CHECK(l.acknowledge() == 0xEF); // class 3 == TPR class 3: blocked -> spurious
    CHECK(irr_has(l, 0x31));
    CHECK_FALSE(isr_has(l, 0xEF)); // the spurious vector never enters ISR
    wr(l, LocalApic::kTpr, 0);
    CHECK(l.acknowledge() == 0x31);
    wr(l, LocalApic::kEoi, 0);
    CHECK_FALSE(l.interrupt_pending());
    CHECK(l.acknowledge() == 0xEF); // nothing left: the spurious vector
    // A software-disabled APIC keeps IRR but does not interrupt.
    l.accept_fixed(0x80, false);
    wr(l, LocalApic::kSvr, 0xFF);
    CHECK_FALSE(l.interrupt_pending());
    CHECK(irr_has(l, 0x80));
    enable_sw(l);
    CHECK(l.interrupt_pending());
}

TEST_CASE("lapic: level-triggered vectors set TMR and broadcast their EOI to the IOAPIC", "[devices][lapic][ioapic]")
{
    Rig r;
    LocalApic& l = r[0];
    enable_sw(l);
    struct Listener : EoiListener {
        std::vector<int> seen;
        void end_of_interrupt(uint8_t v) override { seen.push_back(v); }
    } listener;
    r.bus.attach(listener);
    l.accept_fixed(0x40, true);
    l.accept_fixed(0x41, false);
    CHECK(tmr_has(l, 0x40));
    CHECK_FALSE(tmr_has(l, 0x41));
    CHECK(l.acknowledge() == 0x41);
    wr(l, LocalApic::kEoi, 0);
    CHECK(listener.seen.empty()); // edge: no broadcast
    CHECK(l.acknowledge() == 0x40);
    wr(l, LocalApic::kEoi, 0);
    CHECK(listener.seen == std::vector<int> { 0x40 });
}

TEST_CASE("lapic: one-shot timer counts down at 1 GHz / divisor and fires once", "[devices][lapic][timer]")
{
    Rig r;
    LocalApic& l = r[0];
    enable_sw(l);
    r.now = 1000;
    wr(l, LocalApic::kTimerDivide, 0x3); // divide by 16 (APM Figure 16-13)
    wr(l, LocalApic::kLvtTimer, 0x30);   // one-shot, vector 0x30
    wr(l, LocalApic::kTimerInitial, 1000);
    CHECK(rd(l, LocalApic::kTimerInitial) == 1000);
    CHECK(rd(l, LocalApic::kTimerCurrent) == 1000);
    r.now = 1000 + 160; // 10 counts
    CHECK(rd(l, LocalApic::kTimerCurrent) == 990);
    r.now = 1000 + 16 * 999 + 15;
    CHECK(rd(l, LocalApic::kTimerCurrent) == 1);
    REQUIRE(l.next_deadline().has_value());
    CHECK(*l.next_deadline() == 1000 + 16000);
    l.advance(1000 + 15999);
    CHECK_FALSE(irr_has(l, 0x30));
    l.advance(1000 + 16000);
    CHECK(irr_has(l, 0x30));
    r.now = 1000 + 16000;
    CHECK(rd(l, LocalApic::kTimerCurrent) == 0);
    CHECK_FALSE(l.next_deadline().has_value());
    CHECK(l.acknowledge() == 0x30);
    wr(l, LocalApic::kEoi, 0);
    l.advance(1'000'000);
    CHECK_FALSE(irr_has(l, 0x30)); // one-shot: once
    // Every divide encoding (bits 3, 1:0): 000 -> 2 ... 110 -> 128, 111 -> 1.
    std::vector<std::pair<uint32_t, uint32_t>> enc { { 0x0, 2 }, { 0x1, 4 }, { 0x2, 8 }, { 0x3, 16 }, { 0x8, 32 },
        { 0x9, 64 }, { 0xA, 128 }, { 0xB, 1 } };
    for (auto [code, div] : enc) {
        r.now = 0;
        wr(l, LocalApic::kTimerDivide, code);
        wr(l, LocalApic::kTimerInitial, 100);
        r.now = int64_t(div) * 7;
        INFO("divide code " << code);
        CHECK(rd(l, LocalApic::kTimerCurrent) == 93);
    }
    // Writing 0 stops the timer.
    wr(l, LocalApic::kTimerInitial, 0);
    CHECK_FALSE(l.next_deadline().has_value());
    CHECK(rd(l, LocalApic::kTimerCurrent) == 0);
}

TEST_CASE("lapic: periodic timer reloads from the initial count; masked timers still count", "[devices][lapic][timer]")
{
    Rig r;
    LocalApic& l = r[0];
    enable_sw(l);
    wr(l, LocalApic::kTimerDivide, 0xB); // divide by 1: one count per ns
    wr(l, LocalApic::kLvtTimer, 0x20031); // periodic, vector 0x31
    wr(l, LocalApic::kTimerInitial, 500);
    r.now = 499;
    CHECK(rd(l, LocalApic::kTimerCurrent) == 1);
    r.now = 500;
    CHECK(rd(l, LocalApic::kTimerCurrent) == 500); // reloaded
    r.now = 1234;
    CHECK(rd(l, LocalApic::kTimerCurrent) == 500 - 234);
    CHECK(*l.next_deadline() == 500);
    l.advance(500);
    CHECK(irr_has(l, 0x31));
    CHECK(*l.next_deadline() == 1000);
    CHECK(l.acknowledge() == 0x31);
    wr(l, LocalApic::kEoi, 0);
    l.advance(2700); // four periods missed: one interrupt, the next deadline on the grid
    CHECK(irr_has(l, 0x31));
    CHECK(*l.next_deadline() == 3000);
    CHECK(l.acknowledge() == 0x31);
    wr(l, LocalApic::kEoi, 0);
    // Masked: no interrupt and no deadline, but the count keeps its period.
    wr(l, LocalApic::kLvtTimer, 0x30031);
    CHECK_FALSE(l.next_deadline().has_value());
    l.advance(3000);
    CHECK_FALSE(irr_has(l, 0x31));
    r.now = 3100;
    CHECK(rd(l, LocalApic::kTimerCurrent) == 400);
    // A divisor change keeps the count reached and continues at the new rate.
    wr(l, LocalApic::kLvtTimer, 0x20031);
    wr(l, LocalApic::kTimerDivide, 0x0); // divide by 2
    CHECK(rd(l, LocalApic::kTimerCurrent) == 400);
    r.now = 3100 + 200;
    CHECK(rd(l, LocalApic::kTimerCurrent) == 300);
    CHECK(*l.next_deadline() == 3100 + 800);
    l.advance(3900);
    CHECK(irr_has(l, 0x31));
    r.now = 3900 + 2;
    CHECK(rd(l, LocalApic::kTimerCurrent) == 499); // the reload: 500 at the new rate
}

TEST_CASE("lapic: TSC-deadline mode (MSR 0x6E0, SDM §11.5.4.1)", "[devices][lapic][timer]")
{
    Rig r(1, 2'000'000'000); // a 2 GHz TSC: deadline 2*N ticks is N ns
    LocalApic& l = r[0];
    enable_sw(l);
    // Outside deadline mode the MSR reads 0 and ignores writes.
    REQUIRE(l.write_msr(LocalApic::kMsrTscDeadline, 1000).has_value());
    CHECK(*l.read_msr(LocalApic::kMsrTscDeadline) == 0);
    wr(l, LocalApic::kTimerInitial, 100);
    wr(l, LocalApic::kLvtTimer, 0x40040); // TSC-deadline, vector 0x40: disarms the count
    CHECK(rd(l, LocalApic::kTimerInitial) == 0);
    wr(l, LocalApic::kTimerInitial, 100); // ignored in deadline mode
    CHECK(rd(l, LocalApic::kTimerInitial) == 0);
    CHECK(rd(l, LocalApic::kTimerCurrent) == 0);
    CHECK_FALSE(l.next_deadline().has_value());
    REQUIRE(l.write_msr(LocalApic::kMsrTscDeadline, 5001).has_value());
    CHECK(*l.read_msr(LocalApic::kMsrTscDeadline) == 5001);
    CHECK(*l.next_deadline() == 2501); // the first ns at which TSC >= 5001
    l.advance(2500);
    CHECK_FALSE(irr_has(l, 0x40));
    l.advance(2501);
    CHECK(irr_has(l, 0x40));
    CHECK(*l.read_msr(LocalApic::kMsrTscDeadline) == 0); // disarmed after firing
    CHECK_FALSE(l.next_deadline().has_value());
    // Writing 0 disarms.
    REQUIRE(l.write_msr(LocalApic::kMsrTscDeadline, 90000).has_value());
    REQUIRE(l.write_msr(LocalApic::kMsrTscDeadline, 0).has_value());
    CHECK_FALSE(l.next_deadline().has_value());
    // Leaving deadline mode clears the deadline.
    REQUIRE(l.write_msr(LocalApic::kMsrTscDeadline, 90000).has_value());
    wr(l, LocalApic::kLvtTimer, 0x40);
    wr(l, LocalApic::kLvtTimer, 0x40040);
    CHECK(*l.read_msr(LocalApic::kMsrTscDeadline) == 0);
}

TEST_CASE("lapic: ExtINT through LINT0 takes the vector from the real 8259 pair", "[devices][lapic][pic]")
{
    Rig r;
    LocalApic& l = r[0];
    Pic8259Pair pic;
    Bus pio;
    REQUIRE(pio.add(Pic8259Pair::kMasterBase, 2, pic.master()).has_value());
    REQUIRE(pio.add(Pic8259Pair::kSlaveBase, 2, pic.slave()).has_value());
    l.connect_pic(&pic);
    // Linux's init_8259A: ICW1-ICW4, master vectors 0x30, slave 0x38.
    for (auto [port, v] : std::vector<std::pair<uint64_t, uint8_t>> { { 0x20, 0x11 }, { 0x21, 0x30 }, { 0x21, 0x04 },
             { 0x21, 0x01 }, { 0xA0, 0x11 }, { 0xA1, 0x38 }, { 0xA1, 0x02 }, { 0xA1, 0x01 }, { 0x21, 0x00 }, { 0xA1, 0x00 } })
        pio.write(port, 1, v);
    CHECK_FALSE(l.interrupt_pending());
    pic.set_irq(1, true);
    // The reset BSP LINT0 (0x700, ExtINT) passes INTR even while software disabled.
    CHECK(l.interrupt_pending());
    CHECK(l.acknowledge() == 0x31);
    pio.write(0x20, 1, 0x20); // EOI to the 8259
    pic.set_irq(1, false);
    // setup_local_APIC's virtual wire: LVT0 = ExtINT (0x700) with the APIC enabled. ExtINT goes
    // ahead of IRR vectors and does not pass through IRR/ISR.
    enable_sw(l);
    wr(l, LocalApic::kLvtLint0, 0x700);
    l.accept_fixed(0x90, false);
    pic.set_irq(8 + 3, true); // slave IR3
    CHECK(l.interrupt_pending());
    CHECK(l.acknowledge() == 0x3B);
    CHECK_FALSE(isr_has(l, 0x3B));
    CHECK(l.acknowledge() == 0x90);
    wr(l, LocalApic::kEoi, 0);
    pio.write(0xA0, 1, 0x20);
    pio.write(0x20, 1, 0x20);
    pic.set_irq(8 + 3, false);
    // Masked LINT0: the 8259's request does not reach the vCPU.
    wr(l, LocalApic::kLvtLint0, 0x10700);
    pic.set_irq(4, true);
    CHECK(pic.interrupt_pending());
    CHECK_FALSE(l.interrupt_pending());
    // Globally disabled APIC: the 8259 is the vCPU's controller directly.
    REQUIRE(l.write_msr(LocalApic::kMsrApicBase, 0xFEE00000u | 0x100).has_value());
    CHECK_FALSE(l.mmio_decoded());
    CHECK(l.interrupt_pending());
    CHECK(l.acknowledge() == 0x34);
    // An IOAPIC ExtINT message also asks the 8259 for the vector.
    REQUIRE(l.write_msr(LocalApic::kMsrApicBase, 0xFEE00000u | 0x900).has_value());
    pio.write(0x20, 1, 0x20);
    pic.set_irq(4, false);
    pic.set_irq(5, true);
    CHECK_FALSE(l.interrupt_pending()); // LINT0 masked after the re-enable
    l.accept_extint();
    CHECK(l.interrupt_pending());
    CHECK(l.acknowledge() == 0x35);
}

TEST_CASE("lapic: LINT1 as NMI, NMI IPIs, and the LINT pins while disabled", "[devices][lapic]")
{
    Rig r(2);
    LocalApic& l = r[0];
    enable_sw(l);
    wr(l, LocalApic::kLvtLint1, 0x400); // NMI, edge (Linux: setup_local_APIC on the BSP)
    l.set_lint(1, true);
    CHECK(l.take_nmi());
    CHECK_FALSE(l.take_nmi());
    l.set_lint(1, true); // no new edge
    CHECK_FALSE(l.nmi_pending());
    l.set_lint(1, false);
    wr(l, LocalApic::kLvtLint1, 0x10400);
    l.set_lint(1, true);
    CHECK_FALSE(l.nmi_pending()); // masked
    l.set_lint(1, false);
    // Fixed-mode LINT0, level-triggered: remote IRR until EOI.
    wr(l, LocalApic::kLvtLint0, 0x8000 | 0x55);
    l.set_lint(0, true);
    CHECK(rd(l, LocalApic::kLvtLint0) & (1u << 14));
    CHECK(l.acknowledge() == 0x55);
    l.set_lint(0, true); // still asserted: no second interrupt before the EOI
    CHECK_FALSE(irr_has(l, 0x55));
    wr(l, LocalApic::kEoi, 0); // EOI with the pin still asserted: delivered again
    CHECK(irr_has(l, 0x55));
    CHECK(l.acknowledge() == 0x55);
    l.set_lint(0, false);
    wr(l, LocalApic::kEoi, 0);
    CHECK_FALSE(rd(l, LocalApic::kLvtLint0) & (1u << 14));
    CHECK_FALSE(irr_has(l, 0x55));
    // An NMI IPI from CPU 1 (ICR delivery mode 100b).
    enable_sw(r[1]);
    send_ipi(r[1], 0, 0x400);
    CHECK(l.take_nmi());
}

TEST_CASE("lapic: IPIs between four APICs — physical, logical flat/cluster, shorthands, lowest priority", "[devices][lapic][ipi]")
{
    Rig r(4);
    for (unsigned i = 0; i < 4; ++i) {
        enable_sw(r[i]);
        wr(r[i], LocalApic::kLdr, (1u << i) << 24); // flat: one bit each
    }
    auto only = [&](uint8_t v, std::vector<unsigned> const& who) {
        for (unsigned i = 0; i < 4; ++i) {
            bool want = std::find(who.begin(), who.end(), i) != who.end();
            INFO("cpu " << i << " vector " << int(v));
            CHECK(irr_has(r[i], v) == want);
            if (irr_has(r[i], v)) {
                CHECK(r[i].acknowledge() == v);
                wr(r[i], LocalApic::kEoi, 0);
            }
        }
    };
    send_ipi(r[0], 2, 0x4041); // fixed, physical, to APIC ID 2
    CHECK(rd(r[0], LocalApic::kIcrLow) == 0x4041); // delivery status (bit 12) idle
    only(0x41, { 2 });
    send_ipi(r[0], 0x0A, 0x4842); // logical flat: bits 1 and 3
    only(0x42, { 1, 3 });
    send_ipi(r[1], 0xFF, 0x4043); // physical broadcast
    only(0x43, { 0, 1, 2, 3 });
    send_ipi(r[1], 0, 0x44044);   // self
    only(0x44, { 1 });
    send_ipi(r[1], 0, 0x84045);   // all including self
    only(0x45, { 0, 1, 2, 3 });
    send_ipi(r[1], 0, 0xC4046);   // all excluding self
    only(0x46, { 0, 2, 3 });
    // Cluster model: LDR[31:28] cluster, [27:24] members.
    for (unsigned i = 0; i < 4; ++i) {
        wr(r[i], LocalApic::kDfr, 0x0FFFFFFF);
        wr(r[i], LocalApic::kLdr, (((i / 2) << 4) | (1u << (i % 2))) << 24);
    }
    send_ipi(r[0], 0x13, 0x4847); // cluster 1, members 0 and 1: CPUs 2 and 3
    only(0x47, { 2, 3 });
    send_ipi(r[0], 0x02, 0x4848); // cluster 0, member 1: CPU 1
    only(0x48, { 1 });
    // Lowest priority among CPUs 1-3 (flat again): the lowest TPR wins, ties to the lowest ID.
    for (unsigned i = 0; i < 4; ++i) {
        wr(r[i], LocalApic::kDfr, 0xFFFFFFFF);
        wr(r[i], LocalApic::kLdr, (1u << i) << 24);
    }
    wr(r[1], LocalApic::kTpr, 0x50);
    wr(r[2], LocalApic::kTpr, 0x30);
    wr(r[3], LocalApic::kTpr, 0x40);
    send_ipi(r[0], 0x0E, 0x4949);
    only(0x49, { 2 });
    wr(r[2], LocalApic::kTpr, 0x40);
    send_ipi(r[0], 0x0E, 0x495A);
    only(0x5A, { 2 }); // tie between 2 and 3 at 0x40: the lower APIC ID
    // A globally disabled APIC takes nothing.
    REQUIRE(r[3].write_msr(LocalApic::kMsrApicBase, 0xFEE00000u).has_value());
    send_ipi(r[0], 0xFF, 0x404B);
    for (unsigned i = 0; i < 3; ++i) {
        CHECK(irr_has(r[i], 0x4B));
    }
    CHECK(esr(r[0]) == 0);
}

TEST_CASE("lapic: INIT-SIPI-SIPI as Linux's wakeup_secondary_cpu_via_init sends it", "[devices][lapic][ipi]")
{
    Rig r(2);
    LocalApic& bsp = r[0];
    LocalApic& ap = r[1];
    enable_sw(bsp);
    // smpboot.c: clear ESR (write, read), INIT level assert to the AP, wait for ICR idle.
    wr(bsp, LocalApic::kEsr, 0);
    rd(bsp, LocalApic::kEsr);
    wr(bsp, LocalApic::kIcrHigh, 1u << 24);
    wr(bsp, LocalApic::kIcrLow, 0xC500); // APIC_INT_LEVELTRIG | APIC_INT_ASSERT | APIC_DM_INIT
    CHECK((rd(bsp, LocalApic::kIcrLow) & (1u << 12)) == 0); // safe_apic_wait_icr_idle
    CHECK(ap.take_init());
    CHECK(ap.waiting_for_sipi());
    // INIT de-assert must not reset the AP again.
    wr(bsp, LocalApic::kIcrHigh, 1u << 24);
    wr(bsp, LocalApic::kIcrLow, 0x8500);
    CHECK((rd(bsp, LocalApic::kIcrLow) & (1u << 12)) == 0);
    CHECK_FALSE(ap.take_init());
    // Two SIPIs, each framed by ESR clears; only the first starts the AP.
    for (int j = 0; j < 2; ++j) {
        wr(bsp, LocalApic::kEsr, 0);
        rd(bsp, LocalApic::kEsr);
        wr(bsp, LocalApic::kIcrHigh, 1u << 24);
        wr(bsp, LocalApic::kIcrLow, 0x600 | 0x9A); // APIC_DM_STARTUP | trampoline >> 12
        CHECK((rd(bsp, LocalApic::kIcrLow) & (1u << 12)) == 0);
        wr(bsp, LocalApic::kEsr, 0);
        CHECK((rd(bsp, LocalApic::kEsr) & 0xEF) == 0); // accept_status
        if (j == 0) {
            CHECK_FALSE(ap.waiting_for_sipi());
        }
    }
    CHECK(ap.take_sipi() == std::optional<uint8_t>(0x9A));
    CHECK_FALSE(ap.take_sipi().has_value()); // the second SIPI was ignored
    // INIT resets the AP's APIC registers (ID kept) and parks it again.
    enable_sw(ap);
    wr(ap, LocalApic::kTpr, 0x20);
    send_ipi(bsp, 1, 0xC500);
    CHECK(rd(ap, LocalApic::kTpr) == 0);
    CHECK(rd(ap, LocalApic::kSvr) == 0xFF);
    CHECK(rd(ap, LocalApic::kId) == 0x01000000);
    CHECK(ap.take_init());
    CHECK(ap.waiting_for_sipi());
    // A SIPI to a running vCPU (the BSP) is ignored.
    enable_sw(ap);
    send_ipi(ap, 0, 0x600 | 0x10);
    CHECK_FALSE(bsp.take_sipi().has_value());
}

TEST_CASE("lapic: APIC base MSR transitions and #GP (SDM Figure 11-27)", "[devices][lapic][x2apic]")
{
    Rig r;
    LocalApic& l = r[0];
    uint64_t x = 0xFEE00000u | 0x100;
    auto w = [&](uint64_t v) { return l.write_msr(LocalApic::kMsrApicBase, v).has_value(); };
    CHECK_FALSE(w(x | 0x800 | 0x1));         // reserved bit 0
    CHECK_FALSE(w(x | 0x800 | 0x200));       // reserved bit 9
    CHECK_FALSE(w(x | 0x800 | (1ull << 48))); // above MAXPHYADDR
    CHECK_FALSE(w(x | 0x400));               // EXTD without EN: invalid
    CHECK(w(x | 0x800 | 0x400));             // xAPIC -> x2APIC
    CHECK(l.x2apic());
    CHECK_FALSE(l.mmio_decoded());
    CHECK(l.read(LocalApic::kVer, 4) == 0xFFFFFFFF); // the MMIO page is not decoded
    CHECK_FALSE(w(x | 0x800));               // x2APIC -> xAPIC
    CHECK(w(x));                             // x2APIC -> disabled
    CHECK_FALSE(w(x | 0x800 | 0x400));       // disabled -> x2APIC
    CHECK(w(x | 0x800));                     // disabled -> xAPIC
    CHECK(w(0xFED00000u | 0x800));           // relocation; the BSP bit is not the guest's to clear
    CHECK(l.apic_base_msr() == (0xFED00000u | 0x900));
    CHECK(l.mmio_base() == 0xFED00000u);
    // Disabling resets registers to their power-on values.
    enable_sw(l);
    wr(l, LocalApic::kTpr, 0x70);
    CHECK(w(x));
    CHECK(w(x | 0x800));
    CHECK(rd(l, LocalApic::kTpr) == 0);
    CHECK(rd(l, LocalApic::kSvr) == 0xFF);
    // A CPU without x2APIC refuses EXTD.
    LocalApic::Config c;
    c.x2apic_supported = false;
    c.tsc_deadline_supported = false;
    LocalApic plain(c, [] { return int64_t(0); });
    CHECK_FALSE(plain.write_msr(LocalApic::kMsrApicBase, 0xFEE00C00u).has_value());
    // ... and without TSC-deadline, timer mode bit 18 is reserved and MSR 0x6E0 is #GP.
    wr(plain, LocalApic::kSvr, 0x1FF);
    wr(plain, LocalApic::kLvtTimer, 0x40040);
    CHECK(rd(plain, LocalApic::kLvtTimer) == 0x40);
    CHECK_FALSE(plain.read_msr(LocalApic::kMsrTscDeadline).has_value());
    CHECK_FALSE(plain.write_msr(LocalApic::kMsrTscDeadline, 1).has_value());
}

TEST_CASE("lapic: x2APIC MSR interface (SDM §11.12, Table 11-6)", "[devices][lapic][x2apic]")
{
    Rig r(3);
    // x2APIC MSRs #GP in xAPIC mode.
    CHECK_FALSE(r[0].read_msr(0x802).has_value());
    CHECK_FALSE(r[0].write_msr(0x808, 0).has_value());
    for (unsigned i = 0; i < 3; ++i)
        to_x2apic(r[i]);
    LocalApic& l = r[1];
    auto rdm = [&](uint32_t msr) { return l.read_msr(msr); };
    CHECK(*rdm(0x802) == 1);          // 32-bit x2APIC ID
    CHECK(*rdm(0x803) == 0x00050010); // version
    CHECK(*rdm(0x80D) == 0x00000002); // LDR: cluster 0, bit 1 (SDM §11.12.10.2)
    // Absent in x2APIC: APR 0x809, RRD 0x80C, DFR 0x80E, ICR2 0x831, 0x800/0x801, 0x840+.
    for (uint32_t msr : { 0x800u, 0x801u, 0x804u, 0x809u, 0x80Cu, 0x80Eu, 0x831u, 0x82Fu, 0x83Au, 0x840u, 0x8FFu }) {
        INFO(std::hex << msr);
        CHECK_FALSE(rdm(msr).has_value());
        CHECK_FALSE(l.write_msr(msr, 0).has_value());
    }
    // Write-only: EOI, SELF IPI. Read-only: ID, version, PPR, LDR, ISR/TMR/IRR, current count.
    CHECK_FALSE(rdm(0x80B).has_value());
    CHECK_FALSE(rdm(0x83F).has_value());
    for (uint32_t msr : { 0x802u, 0x803u, 0x80Au, 0x80Du, 0x810u, 0x817u, 0x818u, 0x820u, 0x827u, 0x839u }) {
        INFO(std::hex << msr);
        CHECK(rdm(msr).has_value());
        CHECK_FALSE(l.write_msr(msr, 0).has_value());
    }
    // Reserved bits: 63:32 of ordinary registers, non-zero EOI/ESR, SELF IPI beyond the vector.
    CHECK_FALSE(l.write_msr(0x808, 1ull << 32).has_value());
    CHECK_FALSE(l.write_msr(0x80B, 1).has_value());
    CHECK_FALSE(l.write_msr(0x828, 1).has_value());
    CHECK_FALSE(l.write_msr(0x83F, 0x100).has_value());
    REQUIRE(l.write_msr(0x808, 0x3F).has_value());
    CHECK(*rdm(0x808) == 0x3F);
    REQUIRE(l.write_msr(0x808, 0).has_value());
    REQUIRE(l.write_msr(0x80F, 0x1FF).has_value()); // SVR
    // SELF IPI.
    REQUIRE(l.write_msr(0x83F, 0x61).has_value());
    CHECK((*rdm(0x800 + (0x200 >> 4) + 3) >> 1) & 1); // IRR bank 3 (vectors 0x60-0x7F), bit 1
    CHECK(l.acknowledge() == 0x61);
    REQUIRE(l.write_msr(0x80B, 0).has_value());
    // ICR as one 64-bit MSR: destination in 63:32; reads back whole; reserved bits #GP.
    for (unsigned i = 0; i < 3; ++i)
        REQUIRE(r[i].write_msr(0x80F, 0x1FF).has_value());
    REQUIRE(l.write_msr(0x830, (2ull << 32) | 0x4071).has_value());
    CHECK(*rdm(0x830) == ((2ull << 32) | 0x4071));
    CHECK(r[2].acknowledge() == 0x71);
    REQUIRE(r[2].write_msr(0x80B, 0).has_value());
    CHECK_FALSE(l.write_msr(0x830, 0x1000 | 0x72).has_value()); // bit 12 is reserved in x2APIC
    // Logical x2APIC: cluster 0, bits 0 and 2 -> CPUs 0 and 2.
    REQUIRE(l.write_msr(0x830, (0x00000005ull << 32) | 0x4873).has_value());
    for (unsigned i : { 0u, 2u }) {
        CHECK(r[i].acknowledge() == 0x73);
        REQUIRE(r[i].write_msr(0x80B, 0).has_value());
    }
    CHECK_FALSE(r[1].interrupt_pending());
    // Broadcast is 0xFFFFFFFF in x2APIC (0xFF is an ordinary ID).
    REQUIRE(l.write_msr(0x830, (0xFFull << 32) | 0x4074).has_value());
    CHECK_FALSE(r[0].interrupt_pending());
    REQUIRE(l.write_msr(0x830, (0xFFFFFFFFull << 32) | 0x4075).has_value());
    for (unsigned i = 0; i < 3; ++i)
        CHECK(r[i].acknowledge() == 0x75);
    // ESR: only 0 may be written.
    CHECK_FALSE(l.write_msr(0x828, 5).has_value());
    REQUIRE(l.write_msr(0x828, 0).has_value());
    CHECK(*rdm(0x828) == kEsrSendAccept); // the 0xFF destination nobody had
    // The timer through MSRs.
    REQUIRE(l.write_msr(0x83E, 0xB).has_value());
    REQUIRE(l.write_msr(0x832, 0x50).has_value());
    REQUIRE(l.write_msr(0x838, 1000).has_value());
    r.now = 10;
    CHECK(*rdm(0x839) == 990);
}

TEST_CASE("lapic: save/load round trip continues identically; truncation and bad fields refused", "[devices][lapic][state]")
{
    Rig a(2);
    LocalApic& l = a[0];
    enable_sw(l, 0xEE);
    wr(l, LocalApic::kTpr, 0x20);
    wr(l, LocalApic::kLdr, 0x01000000);
    wr(l, LocalApic::kLvtLint1, 0x400);
    wr(l, LocalApic::kLvtError, 0xFD);
    wr(l, LocalApic::kTimerDivide, 0x1);
    wr(l, LocalApic::kLvtTimer, 0x20041);
    a.now = 100;
    wr(l, LocalApic::kTimerInitial, 250);
    l.accept_fixed(0x90, true);
    l.accept_fixed(0xA0, false);
    CHECK(l.acknowledge() == 0xA0);
    l.accept_fixed(0x33, false);
    l.write(0x3A0, 4, 0); // an error pending in the accumulator
    a.now = 777;
    Bytes payload = save_of(l);

    Rig b(2);
    b.now = a.now;
    REQUIRE(load_error(b[0], payload).empty());
    CHECK(save_of(b[0]) == payload);
    // Both continue identically.
    auto script = [](Rig& r) {
        std::vector<uint64_t> t;
        LocalApic& x = r[0];
        for (uint32_t off = 0x20; off < 0x400; off += 0x10)
            if (off != 0x3A0 && off != 0x3B0 && off != 0x3C0 && off != 0x3D0 && off != 0x3F0 && !(off >= 0x290 && off < 0x300)
                && off != 0x40 && off != 0x50 && off != 0x60 && off != 0x70)
                t.push_back(rd(x, off));
        t.push_back(x.next_deadline().value_or(-1));
        for (int64_t at : { 1000, 1900, 5000 }) {
            x.advance(at);
            r.now = at;
            t.push_back(rd(x, LocalApic::kTimerCurrent));
            while (x.interrupt_pending()) {
                t.push_back(x.acknowledge());
                wr(x, LocalApic::kEoi, 0);
            }
        }
        t.push_back(esr(x));
        return t;
    };
    CHECK(script(a) == script(b));
    require_truncations_refused(b[0], payload);
    // Bad fields: reserved base bits, the BSP flag of another vCPU, ID low bits, divide bits.
    auto refused = [&](size_t at, uint8_t v, std::string const& what) {
        Bytes p = payload;
        p[at] = v;
        Bytes before = save_of(b[0]);
        std::string e = load_error(b[0], p);
        INFO("byte " << at << " -> " << e);
        CHECK(e.find(what) != std::string::npos);
        CHECK(save_of(b[0]) == before);
    };
    refused(0, 0x01, "reserved");
    refused(1, 0x05, "x2APIC without"); // EXTD (bit 10) without EN (bit 11), BSP (bit 8) kept
    refused(1, 0x08, "BSP");
    refused(8, 0x01, "ID register");
    // The AP's section does not load into the BSP.
    Bytes ap = save_of(a[1]);
    CHECK(load_error(b[0], ap).find("BSP") != std::string::npos);
}

// --- IOAPIC -----------------------------------------------------------------------------------

namespace {

struct IoRig : Rig {
    IoApic io;
    explicit IoRig(unsigned n = 2) : Rig(n)
    {
        io.connect_bus(&bus);
        bus.attach(io);
        for (auto& l : cpu)
            enable_sw(*l);
    }
    uint32_t ird(uint32_t index)
    {
        io.write(IoApic::kRegSel, 4, index);
        return uint32_t(io.read(IoApic::kWindow, 4));
    }
    void iwr(uint32_t index, uint32_t v)
    {
        io.write(IoApic::kRegSel, 4, index);
        io.write(IoApic::kWindow, 4, v);
    }
    void route(unsigned pin, uint32_t low, uint8_t dest)
    {
        iwr(0x11 + 2 * pin, uint32_t(dest) << 24);
        iwr(0x10 + 2 * pin, low);
    }
};

} // namespace

TEST_CASE("ioapic: identification registers and redirection entry bits (82093AA §3)", "[devices][ioapic]")
{
    IoRig r;
    CHECK(r.ird(0x01) == 0x00170011); // version 0x11, max redirection entry 23
    CHECK(r.ird(0x00) == 0);
    r.iwr(0x00, 0xFFFFFFFF);
    CHECK(r.ird(0x00) == 0x0F000000);
    CHECK(r.ird(0x02) == 0x0F000000); // arbitration ID follows the ID
    r.iwr(0x01, 0);
    CHECK(r.ird(0x01) == 0x00170011);
    CHECK(r.io.read(IoApic::kRegSel, 4) == 0x01);
    for (unsigned pin = 0; pin < 24; ++pin)
        CHECK(r.ird(0x10 + 2 * pin) == 0x00010000); // masked after reset
    r.iwr(0x10, 0xFFFFFFFF);
    CHECK(r.ird(0x10) == 0x0001AFFF); // delivery status, remote IRR, 31:17 read-only/reserved
    r.iwr(0x11, 0xFFFFFFFF);
    CHECK(r.ird(0x11) == 0xFF000000);
    CHECK(r.ird(0x40) == 0); // beyond entry 23
    CHECK(r.ird(0x03) == 0);
}

TEST_CASE("ioapic: edge entries deliver on rising edges; masked edges are lost", "[devices][ioapic]")
{
    IoRig r;
    r.route(2, 0x30, 1); // IRQ0 override to GSI 2, vector 0x30, physical to APIC 1, edge, high
    r.io.set_irq(2, true);
    CHECK(irr_has(r[1], 0x30));
    CHECK_FALSE(irr_has(r[0], 0x30));
    CHECK(r[1].acknowledge() == 0x30);
    wr(r[1], LocalApic::kEoi, 0);
    r.io.set_irq(2, true); // still high: no edge
    CHECK_FALSE(irr_has(r[1], 0x30));
    r.io.set_irq(2, false);
    r.io.set_irq(2, true);
    CHECK(irr_has(r[1], 0x30));
    CHECK(r[1].acknowledge() == 0x30);
    wr(r[1], LocalApic::kEoi, 0);
    // Masked: the edge is lost, and unmasking does not replay it.
    r.io.set_irq(2, false);
    r.route(2, 0x10030, 1);
    r.io.set_irq(2, true);
    r.route(2, 0x30, 1);
    CHECK_FALSE(irr_has(r[1], 0x30));
    CHECK_FALSE(r.ird(0x14) & (1u << 14)); // no remote IRR on edge entries
    // Active low: the falling electrical edge asserts.
    r.route(3, 0x2000 | 0x31, 0);
    r.io.set_irq(3, true); // idle high
    CHECK_FALSE(irr_has(r[0], 0x31));
    r.io.set_irq(3, false);
    CHECK(irr_has(r[0], 0x31));
    // Logical destination (flat LDR bits) and lowest priority.
    wr(r[0], LocalApic::kLdr, 0x01000000);
    wr(r[1], LocalApic::kLdr, 0x02000000);
    wr(r[0], LocalApic::kTpr, 0x80);
    r.route(4, 0x900 | 0x32, 0x03); // lowest priority, logical, to both
    r.io.set_irq(4, true);
    CHECK(irr_has(r[1], 0x32));
    CHECK_FALSE(irr_has(r[0], 0x32));
}

TEST_CASE("ioapic: level entries, remote IRR, and EOI re-delivery", "[devices][ioapic]")
{
    IoRig r;
    r.route(9, 0x8000 | 0x49, 0); // SCI: level, active high, vector 0x49, to the BSP
    r.io.set_irq(9, true);
    CHECK(irr_has(r[0], 0x49));
    CHECK(tmr_has(r[0], 0x49));
    CHECK(r.ird(0x10 + 18) & (1u << 14)); // remote IRR
    CHECK(r[0].acknowledge() == 0x49);
    // While remote IRR is set, the asserted line does not deliver again.
    r.io.set_irq(9, true);
    CHECK_FALSE(irr_has(r[0], 0x49));
    // EOI with the line still asserted: remote IRR clears, and the line interrupts again.
    wr(r[0], LocalApic::kEoi, 0);
    CHECK(irr_has(r[0], 0x49));
    CHECK(r.ird(0x10 + 18) & (1u << 14));
    CHECK(r[0].acknowledge() == 0x49);
    r.io.set_irq(9, false); // the device deasserts before the EOI
    wr(r[0], LocalApic::kEoi, 0);
    CHECK_FALSE(irr_has(r[0], 0x49));
    CHECK_FALSE(r.ird(0x10 + 18) & (1u << 14));
    // Unmasking an asserted level entry delivers it.
    r.route(10, 0x18000 | 0x4A, 1);
    r.io.set_irq(10, true);
    CHECK_FALSE(irr_has(r[1], 0x4A));
    r.route(10, 0x8000 | 0x4A, 1);
    CHECK(irr_has(r[1], 0x4A));
    // Rewriting the entry as edge clears remote IRR.
    CHECK(r.ird(0x10 + 20) & (1u << 14));
    r.route(10, 0x4A, 1);
    CHECK_FALSE(r.ird(0x10 + 20) & (1u << 14));
    // Pins beyond 23 are ignored.
    r.io.set_irq(24, true);
    r.io.set_irq(1000, true);
}

TEST_CASE("ioapic: save/load round trip; truncation and bad fields refused", "[devices][ioapic][state]")
{
    IoRig a;
    a.iwr(0x00, 0x02000000);
    a.route(9, 0x8000 | 0x49, 0);
    a.route(2, 0x30, 1);
    a.io.set_irq(9, true); // remote IRR set, line high
    a.io.write(IoApic::kRegSel, 4, 0x12);
    Bytes payload = save_of(a.io);
    CHECK(payload.size() == 4 + 4 + 24 * 8 + 4);
    IoRig b;
    REQUIRE(load_error(b.io, payload).empty());
    CHECK(save_of(b.io) == payload);
    // Both continue identically: EOI re-delivers the still-asserted level line, an edge fires.
    auto script = [](IoRig& r) {
        std::vector<uint64_t> t;
        t.push_back(r.io.read(IoApic::kWindow, 4));
        wr(r[0], LocalApic::kEoi, 0);
        r.io.end_of_interrupt(0x49);
        t.push_back(irr_has(r[0], 0x49));
        r.io.set_irq(2, true);
        t.push_back(irr_has(r[1], 0x30));
        for (uint32_t i = 0; i < 0x40; ++i)
            t.push_back(r.ird(i));
        return t;
    };
    CHECK(script(a) == script(b));
    IoRig c;
    Bytes fresh = save_of(c.io);
    require_truncations_refused(c.io, payload);
    auto refused = [&](Bytes p, std::string const& what) {
        std::string e = load_error(c.io, p);
        INFO(e);
        CHECK(e.find(what) != std::string::npos);
        CHECK(save_of(c.io) == fresh);
    };
    Bytes p = payload;
    p[1] = 1; // IOREGSEL 0x112
    refused(p, "IOREGSEL");
    p = payload;
    p[4] = 1; // ID low bits
    refused(p, "ID");
    p = payload;
    p[8 + 2 * 8 + 3] = 0x01; // entry 2, bit 24: reserved
    refused(p, "reserved");
    p = payload;
    p[8 + 2 * 8 + 1] |= 0x40; // entry 2 (edge) with remote IRR
    refused(p, "remote IRR");
    p = payload;
    p[8 + 24 * 8 + 3] = 0x01; // pin 24 level
    refused(p, "beyond");
}

TEST_CASE("lapic/ioapic: random register traffic never breaks them, and their state still round-trips", "[devices][lapic][ioapic][fuzz]")
{
    std::mt19937_64 rng(0x5EE5EE);
    IoRig r(3);
    Pic8259Pair pic;
    for (auto& l : r.cpu)
        l->connect_pic(&pic);
    for (int i = 0; i < 200000; ++i) {
        uint64_t x = rng();
        LocalApic& l = r[unsigned(x % 3)];
        unsigned size = 1u << ((x >> 2) & 3);
        uint64_t v = rng();
        switch ((x >> 4) % 12) {
        case 0: l.write((x >> 8) & 0xFFF, size, v); break;
        case 1: (void)l.read((x >> 8) & 0xFFF, size); break;
        case 2: (void)l.write_msr(0x800 + uint32_t((x >> 8) & 0xFF), (x & (1u << 20)) ? v : uint32_t(v)); break;
        case 3: (void)l.read_msr(0x800 + uint32_t((x >> 8) & 0xFF)); break;
        case 4: (void)l.write_msr(LocalApic::kMsrApicBase, (v & 0xD00) | 0xFEE00000u); break;
        case 5: (void)l.write_msr(LocalApic::kMsrTscDeadline, v % 100000 + uint64_t(r.now)); break;
        case 6: r.io.write((x >> 8) & 0x1F, size, v); break;
        case 7: (void)r.io.read((x >> 8) & 0x1F, size); break;
        case 8: r.io.set_irq(unsigned((x >> 8) % 30), v & 1); break;
        case 9: l.set_lint(unsigned((x >> 8) & 1), v & 1); break;
        case 10:
            r.now += int64_t(v % 5000);
            for (auto& c : r.cpu)
                c->advance(r.now);
            break;
        default:
            if (l.interrupt_pending())
                (void)l.acknowledge();
            (void)l.take_init();
            (void)l.take_sipi();
            (void)l.take_nmi();
            break;
        }
    }
    for (unsigned i = 0; i < 3; ++i) {
        Bytes s = save_of(r[i]);
        Rig fresh(3);
        REQUIRE(load_error(fresh[i], s).empty());
        CHECK(save_of(fresh[i]) == s);
    }
    Bytes s = save_of(r.io);
    IoApic fresh;
    REQUIRE(load_error(fresh, s).empty());
    CHECK(save_of(fresh) == s);
}
