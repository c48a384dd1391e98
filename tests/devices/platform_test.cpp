// The small platform devices Linux probes: the i8042 (devices/i8042.h), the PCI host bridge and
// the reset control register (devices/pci_host.h), the ACPI PM1 event block's SCI and TMR_STS
// (devices/acpi_pm.h), and the PIT channel 2 as Linux's quick_pit_calibrate() reads it. Expected
// values come from the data sheets and from Linux 6.1's access sequences (i8042.c, pci/direct.c,
// kernel/tsc.c, acpica/hwsleep.c), not from the code under test.
#include "devices/acpi_pm.h"
#include "devices/bus.h"
#include "devices/i8042.h"
#include "devices/pci_host.h"
#include "devices/pit8254.h"

#include "tests/devices/device_state_util.h"

#include <catch2/catch.hpp>
#include <random>
#include <string>
#include <vector>

using namespace sevemu;
using namespace sevemu::devices;

namespace {

using namespace sevemu::devices::state_test;

struct KbcRig {
    IrqLine irq1, irq12;
    int resets = 0;
    I8042 kbc { irq1, irq12, [this] { ++resets; } };
    Bus pio;
    KbcRig()
    {
        REQUIRE(pio.add(0x60, 1, kbc.data_port()).has_value());
        REQUIRE(pio.add(0x64, 1, kbc.command_port()).has_value());
    }
    uint8_t status() { return uint8_t(pio.read(0x64, 1).first); }
    uint8_t data() { return uint8_t(pio.read(0x60, 1).first); }
    void cmd(uint8_t c) { pio.write(0x64, 1, c); }
    void out(uint8_t v) { pio.write(0x60, 1, v); }
};

} // namespace

// --- i8042 -------------------------------------------------------------------------------------

TEST_CASE("i8042: Linux's probe sequence is answered (i8042.c controller_check/selftest/init)", "[devices][i8042]")
{
    KbcRig r;
    CHECK((r.status() & 0x03) == 0); // nothing to read, input buffer empty
    CHECK(r.status() & 0x04);        // SYS flag as after POST
    r.cmd(0xAA);                     // I8042_CMD_CTL_TEST
    CHECK(r.status() & 0x01);
    CHECK(r.data() == 0x55);
    CHECK_FALSE(r.status() & 0x01);
    r.cmd(0x20); // I8042_CMD_CTL_RCTR
    uint8_t ctr = r.data();
    CHECK(ctr == 0x07); // QEMU's reset command byte: both interrupts, SYS
    r.cmd(0x60); // I8042_CMD_CTL_WCTR
    CHECK((r.status() & 0x02) == 0);
    r.out(0x44);
    CHECK(r.kbc.command_byte() == 0x44);
    r.cmd(0x20);
    CHECK(r.data() == 0x44);
    r.cmd(0xA7); // disable AUX: CTR bit 5
    r.cmd(0x20);
    CHECK(r.data() == 0x64);
    r.cmd(0xA8);
    r.cmd(0x20);
    CHECK(r.data() == 0x44);
    r.cmd(0xAB); // keyboard interface test
    CHECK(r.data() == 0x00);
    r.cmd(0xA9); // aux interface test
    CHECK(r.data() == 0x00);
    // AUX loopback (I8042_CMD_AUX_LOOP 0xD3): the byte comes back as aux data.
    r.cmd(0xD3);
    r.out(0x5A);
    CHECK((r.status() & 0x21) == 0x21);
    CHECK(r.data() == 0x5A);
    // A keyboard command with no keyboard: 0xFE with the timeout bit, never a hang.
    r.out(0xF2); // ATKBD_CMD_GETID
    CHECK((r.status() & 0x41) == 0x41);
    CHECK(r.data() == 0xFE);
    CHECK_FALSE(r.status() & 0x41);
    r.cmd(0xD4); // to the mouse: none either
    r.out(0xFF);
    CHECK((r.status() & 0x61) == 0x61);
    CHECK(r.data() == 0xFE);
    // An empty output buffer reads its last byte again.
    CHECK(r.data() == 0xFE);
    CHECK(r.resets == 0);
}

TEST_CASE("i8042: IRQ 1 and 12 follow the output buffer and the command byte", "[devices][i8042]")
{
    KbcRig r;
    r.cmd(0xD2); // write keyboard output buffer
    r.out(0x1C);
    CHECK(r.irq1.level());
    CHECK_FALSE(r.irq12.level());
    CHECK(r.data() == 0x1C);
    CHECK_FALSE(r.irq1.level());
    r.cmd(0xD3);
    r.out(0x08);
    CHECK(r.irq12.level());
    CHECK(r.data() == 0x08);
    CHECK_FALSE(r.irq12.level());
    r.cmd(0x60);
    r.out(0x00); // interrupts off
    r.cmd(0xD2);
    r.out(0x1C);
    CHECK_FALSE(r.irq1.level());
    CHECK(r.status() & 0x01); // polled instead
}

TEST_CASE("i8042: 0xFE and an output port write with bit 0 clear pulse the reset line", "[devices][i8042]")
{
    KbcRig r;
    // arch/x86/kernel/reboot.c: wait for the input buffer (status bit 1), then 0xFE to 0x64.
    CHECK((r.status() & 0x02) == 0);
    r.cmd(0xFE);
    CHECK(r.resets == 1);
    r.cmd(0xFF); // pulses nothing (bit 0 set)
    CHECK(r.resets == 1);
    r.cmd(0xD0);
    CHECK(r.data() == 0x03); // reset line high, A20 on
    r.cmd(0xD1);
    r.out(0x02);
    CHECK(r.resets == 2);
}

TEST_CASE("i8042: save/load round trip; truncation and bad fields refused", "[devices][i8042][state]")
{
    KbcRig a;
    a.cmd(0x60);
    a.out(0x45);
    a.cmd(0xD2);
    a.out(0x11);
    a.cmd(0xD3);
    a.out(0x22);
    a.cmd(0xD4); // pending: the next byte goes to the aux port
    Bytes payload = save_of(a.kbc);
    CHECK(payload.size() == 6 + 2 * 2);
    KbcRig b;
    REQUIRE(load_error(b.kbc, payload).empty());
    CHECK(b.irq1.level()); // re-derived
    auto script = [](KbcRig& r) {
        std::vector<int> t;
        r.out(0x01);
        for (int i = 0; i < 4; ++i) {
            t.push_back(r.status());
            t.push_back(r.data());
            t.push_back(r.irq1.level());
            t.push_back(r.irq12.level());
        }
        return t;
    };
    CHECK(script(a) == script(b));
    KbcRig c;
    require_truncations_refused(c.kbc, payload);
    Bytes p = payload;
    p[3] = 0x20; // a pending command that takes no data
    CHECK(load_error(c.kbc, p).find("pending") != std::string::npos);
    p = payload;
    p[5] = 17;
    CHECK(load_error(c.kbc, p).find("exceeds") != std::string::npos);
    p = payload;
    p[1] |= 0x02;
    CHECK(load_error(c.kbc, p).find("IBF") != std::string::npos);
}

// --- PCI host ----------------------------------------------------------------------------------

namespace {

struct PciRig {
    int resets = 0;
    PciHost host { [this] { ++resets; } };
    Bus pio;
    PciRig()
    {
        REQUIRE(pio.add(PciHost::kAddressPort, 4, host.address_port()).has_value());
        REQUIRE(pio.add(PciHost::kDataPort, 4, host.data_port()).has_value());
    }
    uint32_t cfg(unsigned bus, unsigned dev, unsigned fn, unsigned reg, unsigned size = 4)
    {
        pio.write(0xCF8, 4, 0x80000000u | (bus << 16) | (dev << 11) | (fn << 8) | (reg & 0xFC));
        return uint32_t(pio.read(0xCFC + (reg & 3), size).first);
    }
};

} // namespace

TEST_CASE("pci-host: configuration mechanism #1 finds the AMD host bridge and nothing else", "[devices][pci]")
{
    PciRig r;
    // pci_check_type1 (arch/x86/pci/direct.c): 0x80000000 reads back from 0xCF8.
    r.pio.write(0xCFB, 1, 0x01);
    r.pio.write(0xCF8, 4, 0x80000000);
    CHECK(r.pio.read(0xCF8, 4).first == 0x80000000);
    CHECK(r.cfg(0, 0, 0, 0x00) == 0x14801022); // device 0x1480, vendor 0x1022
    CHECK(r.cfg(0, 0, 0, 0x08) == 0x06000000); // class 06/00/00, revision 0
    CHECK(r.cfg(0, 0, 0, 0x0A, 2) == 0x0600);   // pci_sanity_check: PCI_CLASS_BRIDGE_HOST
    CHECK(r.cfg(0, 0, 0, 0x0E, 1) == 0x00);     // header type 0, single function
    CHECK(r.cfg(0, 0, 0, 0x02, 2) == 0x1480);
    CHECK(r.cfg(0, 0, 0, 0x10) == 0);           // no BARs
    for (unsigned dev = 1; dev < 32; ++dev)
        CHECK(r.cfg(0, dev, 0, 0) == 0xFFFFFFFF);
    CHECK(r.cfg(0, 0, 1, 0) == 0xFFFFFFFF);
    CHECK(r.cfg(1, 0, 0, 0) == 0xFFFFFFFF);
    CHECK(r.cfg(0, 5, 0, 0, 1) == 0xFF);
    // Command register: memory space and bus master writable, the rest fixed.
    r.pio.write(0xCF8, 4, 0x80000004);
    r.pio.write(0xCFC, 2, 0xFFFF);
    CHECK(r.cfg(0, 0, 0, 0x04) == 0x00000006);
    // Vendor ID is read-only.
    r.pio.write(0xCF8, 4, 0x80000000);
    r.pio.write(0xCFC, 4, 0);
    CHECK(r.cfg(0, 0, 0, 0x00) == 0x14801022);
    // Enable bit clear: CONFIG_DATA floats.
    r.pio.write(0xCF8, 4, 0x00000000);
    CHECK(r.pio.read(0xCFC, 4).first == 0xFFFFFFFF);
    // Reserved address bits read 0.
    r.pio.write(0xCF8, 4, 0xFFFFFFFF);
    CHECK(r.pio.read(0xCF8, 4).first == 0x80FFFFFC);
    // Mechanism #2's probe (pci_check_type2) sees no zeroes at 0xCF8/0xCFA.
    r.pio.write(0xCF8, 1, 0x00);
    CHECK(r.pio.read(0xCF8, 1).first == 0xFF);
    CHECK(r.pio.read(0xCFA, 1).first == 0xFF);
}

TEST_CASE("pci-host: 0xCF9 reset control (the FADT's reset register, value 0x0F)", "[devices][pci]")
{
    PciRig r;
    r.pio.write(0xCF9, 1, 0x02); // SYS_RST kept, no reset yet
    CHECK(r.pio.read(0xCF9, 1).first == 0x02);
    CHECK(r.resets == 0);
    r.pio.write(PciHost::kResetRegisterPort, 1, PciHost::kResetValue);
    CHECK(r.resets == 1);
    // A dword at 0xCF8 is CONFIG_ADDRESS, not the reset register.
    r.pio.write(0xCF8, 4, 0x80000400);
    CHECK(r.resets == 1);
}

TEST_CASE("pci-host: save/load round trip; truncation and bad fields refused", "[devices][pci][state]")
{
    PciRig a;
    a.cfg(0, 0, 0, 0);
    a.pio.write(0xCF8, 4, 0x80000004);
    a.pio.write(0xCFC, 2, 0x0006);
    a.pio.write(0xCF9, 1, 0x08);
    a.pio.write(0xCF8, 4, 0x80001808);
    Bytes payload = save_of(a.host);
    CHECK(payload == Bytes { 0x08, 0x18, 0x00, 0x80, 0x06, 0x00, 0x08 });
    PciRig b;
    REQUIRE(load_error(b.host, payload).empty());
    CHECK(b.pio.read(0xCF8, 4).first == 0x80001808);
    CHECK(b.pio.read(0xCF9, 1).first == 0x08);
    CHECK(b.cfg(0, 0, 0, 4) == 6);
    PciRig c;
    require_truncations_refused(c.host, payload);
    Bytes p = payload;
    p[0] |= 1;
    CHECK(load_error(c.host, p).find("CONFIG_ADDRESS") != std::string::npos);
    p = payload;
    p[4] = 0x07;
    CHECK(load_error(c.host, p).find("command") != std::string::npos);
    p = payload;
    p[6] = 0x04;
    CHECK(load_error(c.host, p).find("reset control") != std::string::npos);
}

// --- ACPI PM -----------------------------------------------------------------------------------

TEST_CASE("acpi-pm: SCI from PM1 status & enable; power button; TMR_STS on timer bit 23", "[devices][acpi]")
{
    int64_t now = 0;
    int power_offs = 0;
    IrqLine sci;
    AcpiPm pm([&] { return now; }, [&] { ++power_offs; });
    pm.connect_sci(&sci);
    Bus pio;
    REQUIRE(pio.add(AcpiPm::kBase, AcpiPm::kLength, pm).has_value());
    CHECK_FALSE(sci.level());
    // The power button (QMP system_powerdown): status set, SCI only once enabled.
    pm.press_power_button();
    CHECK(pio.read(0x600, 2).first == 0x0100);
    CHECK_FALSE(sci.level());
    pio.write(0x602, 2, 0x0100); // PWRBTN_EN
    CHECK(sci.level());
    pio.write(0x600, 2, 0x0100); // write 1 to clear
    CHECK_FALSE(sci.level());
    // acpi_hw_legacy_sleep clears WAK_STS and every status bit by writing ones: harmless here.
    pio.write(0x600, 2, 0xFFFF);
    // TMR_STS: bit 23 of the 3.579545 MHz timer changes every 2^23 ticks.
    pio.write(0x602, 2, 0x0101); // TMR_EN | PWRBTN_EN
    auto d = pm.next_deadline();
    REQUIRE(d.has_value());
    // The first ns with 2^23 ticks counted: ceil(2^23 * 1e9 / 3579545).
    CHECK(*d == int64_t((8388608ull * 1'000'000'000ull + 3579544) / 3579545));
    pm.advance(*d - 1);
    CHECK_FALSE(sci.level());
    now = *d;
    CHECK((pio.read(AcpiPm::kBase + AcpiPm::kPmTimer, 4).first & 0xFFFFFF) == 0x800000);
    pm.advance(*d);
    CHECK(sci.level());
    CHECK(pio.read(0x600, 2).first == 0x0001);
    CHECK_FALSE(pm.next_deadline().has_value()); // already pending
    pio.write(0x600, 2, 0x0001);
    CHECK_FALSE(sci.level());
    REQUIRE(pm.next_deadline().has_value());
    CHECK(*pm.next_deadline() > now);
    // A read of PM1_STS brings TMR_STS up to date by itself.
    now += 3'000'000'000;
    CHECK(pio.read(0x600, 2).first == 0x0001);
    CHECK(sci.level());
    // S5: SLP_TYP = kS5SlpTyp with SLP_EN (acpi_hw_legacy_sleep writes the type, then SLP_EN).
    pio.write(0x604, 2, AcpiPm::kSciEn | (AcpiPm::kS5SlpTyp << 10));
    CHECK(power_offs == 0);
    pio.write(0x604, 2, AcpiPm::kSciEn | (AcpiPm::kS5SlpTyp << 10) | AcpiPm::kSlpEn);
    CHECK(power_offs == 1);
    // A reset lowers the SCI.
    pm.reset();
    CHECK_FALSE(sci.level());
}

TEST_CASE("acpi-pm: save/load keeps the TMR_STS period and re-derives the SCI", "[devices][acpi][state]")
{
    int64_t now = 0;
    IrqLine sci_a, sci_b;
    AcpiPm a([&] { return now; }, [] {});
    a.connect_sci(&sci_a);
    a.write(AcpiPm::kPm1Enable, 2, 0x0001);
    now = 5'000'000'000; // two bit-23 changes later
    a.advance(now);
    CHECK(sci_a.level());
    Bytes payload = save_of(a);
    CHECK(payload.size() == 6 + 8);
    CHECK(payload[0] == 0x01); // TMR_STS
    AcpiPm b([&] { return now; }, [] {});
    b.connect_sci(&sci_b);
    REQUIRE(load_error(b, payload).empty());
    CHECK(sci_b.level());
    CHECK(a.next_deadline() == b.next_deadline());
    a.write(AcpiPm::kPm1Status, 2, 1);
    b.write(AcpiPm::kPm1Status, 2, 1);
    CHECK(a.next_deadline() == b.next_deadline());
    AcpiPm c([&] { return now; }, [] {});
    require_truncations_refused(c, payload);
}

// --- PIT channel 2 as quick_pit_calibrate reads it ---------------------------------------------

TEST_CASE("pit: quick_pit_calibrate's sequence sees the MSB fall at 1.193182 MHz (kernel/tsc.c)", "[devices][pit]")
{
    int64_t now = 0;
    IrqLine irq0;
    Pit8254 pit(irq0, [&] { return now; });
    Bus pio;
    REQUIRE(pio.add(0x40, 4, pit.counters()).has_value());
    REQUIRE(pio.add(0x61, 1, pit.port_b()).has_value());
    // Gate high, speaker off; channel 2 mode 0 LSB/MSB, count 0xFFFF.
    pio.write(0x61, 1, (pio.read(0x61, 1).first & ~0x02ull) | 0x01);
    CHECK((pio.read(0x61, 1).first & 0x03) == 0x01);
    pio.write(0x43, 1, 0xB0);
    pio.write(0x42, 1, 0xFF);
    pio.write(0x42, 1, 0xFF);
    auto msb = [&] {
        pio.read(0x42, 1); // pit_verify_msb: LSB first, then the MSB
        return int(pio.read(0x42, 1).first);
    };
    CHECK(msb() == 0xFF);
    for (int i = 1; i <= 20; ++i) {
        // Count 0xFFFF - ticks: the MSB leaves 0xFF - i + 1 after 256 * i ticks.
        uint64_t ticks = 256ull * unsigned(i);
        now = int64_t((ticks * 1'000'000'000ull + Pit8254::kFrequencyHz - 1) / Pit8254::kFrequencyHz);
        INFO("step " << i);
        CHECK(msb() == 0xFF - i);
        now -= 2;
        CHECK(msb() == 0xFF - i + 1);
    }
    // OUT2 (port 0x61 bit 5) rises at terminal count (pit_calibrate_tsc's poll).
    CHECK_FALSE(pio.read(0x61, 1).first & 0x20);
    now = int64_t((0xFFFFull * 1'000'000'000ull + Pit8254::kFrequencyHz - 1) / Pit8254::kFrequencyHz);
    CHECK(pio.read(0x61, 1).first & 0x20);
}

TEST_CASE("i8042, pci-host, acpi-pm: random port traffic never breaks them; state round-trips", "[devices][fuzz]")
{
    std::mt19937_64 rng(0xC0FFEE);
    KbcRig k;
    PciRig p;
    int64_t now = 0;
    IrqLine sci;
    AcpiPm pm([&] { return now; }, [] {});
    pm.connect_sci(&sci);
    Bus pio;
    REQUIRE(pio.add(AcpiPm::kBase, AcpiPm::kLength, pm).has_value());
    for (int i = 0; i < 100000; ++i) {
        uint64_t x = rng(), v = rng();
        unsigned size = 1u << ((x >> 2) & 2 ? 2 : (x >> 2) & 1);
        switch ((x >> 4) % 8) {
        case 0: k.pio.write((x & 0x100) ? 0x64 : 0x60, 1, v); break;
        case 1: (void)k.pio.read((x & 0x100) ? 0x64 : 0x60, 1); break;
        case 2: p.pio.write(0xCF8 + ((x >> 8) & 7), size, v & ~uint64_t(0x04)); break; // no resets
        case 3: (void)p.pio.read(0xCF8 + ((x >> 8) & 7), size); break;
        case 4: pio.write(AcpiPm::kBase + ((x >> 8) % AcpiPm::kLength), size, v & ~uint64_t(AcpiPm::kSlpEn)); break;
        case 5: (void)pio.read(AcpiPm::kBase + ((x >> 8) % AcpiPm::kLength), size); break;
        case 6: now += int64_t(v % 100'000'000); pm.advance(now); break;
        default: p.host.config_write(unsigned(x >> 8) & 0xFF, unsigned(x >> 16) & 0x1F, unsigned(x >> 21) & 7, unsigned(x >> 24) & 0xFF, 4, uint32_t(v)); break;
        }
    }
    CHECK(sci.level() == pm.sci_level());
    for (Device* d : std::vector<Device*> { &k.kbc, &p.host, &pm }) {
        Bytes s = save_of(*d);
        INFO(d->name());
        REQUIRE(load_error(*d, s).empty());
        CHECK(save_of(*d) == s);
    }
}
