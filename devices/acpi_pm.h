// sevemu — the ACPI power-management register block of QEMU's PC chipsets (PIIX4 PM / ICH9
// LPC), at the I/O base SeaBIOS gives it, 0x600: PM1a event (status, enable), PM1a control and
// the 24-bit PM timer. ACPI 6.4 §4.8.3 (PM1 event/control registers) and §4.8.3.3 (PM timer).
//
// A write to PM1_CNT with SLP_EN and SLP_TYP = kS5SlpTyp (0) is S5: the guest powers the
// machine off, and the run ends with status 0. The DSDT sevemu writes must therefore say
// Name(\_S5, Package(){kS5SlpTyp, kS5SlpTyp, 0, 0}) — QEMU's DSDT does the same (hw/i386/
// acpi-build.c, \_S5 = {0, 0}). Other sleep types are not modelled (QUIRKS.md).
//
// PM1 status/enable (ACPI 6.4 §4.8.3.1): TMR_STS (bit 0) is set each time bit 23 of the PM
// timer changes (every 2^23 ticks, about 2.34 s; §4.8.3.3); PWRBTN_STS (bit 8) by
// press_power_button() (QMP system_powerdown); both write-1-to-clear. The SCI (connect_sci; the
// FADT's SCI_INT, IRQ 9 on the 8259 / GSI 9 on the IOAPIC, active high, level) is high while
// PM1_STS & PM1_EN has TMR, GBL, PWRBTN, SLPBTN or RTC set — the rule QEMU's acpi_update_sci
// (hw/acpi/core.c) uses. Time reaches TMR_STS through advance(now); next_deadline() says when
// the next overflow would raise the SCI.
//
// The ACPI reset register is the chipset's 0xCF9 (devices/pci_host.h), not a PM register.
//
// Snapshot section "acpi-pm", version 2 (devices/device.h): u16 PM1a_STS, u16 PM1a_EN,
// u16 PM1a_CNT (SLP_EN clear: it is write-only and acts at once), u64 the PM timer's bit-23
// period (ticks / 2^23) TMR_STS was last brought up to. The PM timer is the machine's clock,
// restored by the Machine; the SCI level is re-derived after a load.
#pragma once

#include "devices/bus.h"
#include "devices/device.h"

#include <cstdint>
#include <functional>
#include <optional>
#include <string_view>

namespace sevemu::devices {

class AcpiPm final : public BusDevice, public Device {
public:
    static constexpr uint32_t kStateVersion = 2;
    static constexpr uint64_t kBase = 0x600, kLength = 0x40;
    static constexpr uint64_t kTimerHz = 3'579'545; // ACPI PM timer frequency (ACPI 6.4 §4.8.3.3)
    static constexpr uint64_t kPm1Status = 0x00, kPm1Enable = 0x02, kPm1Control = 0x04, kPmTimer = 0x08;
    static constexpr uint16_t kSlpEn = 1u << 13, kSciEn = 1u << 0;
    static constexpr uint16_t kTmrSts = 1u << 0, kGblSts = 1u << 5, kPwrBtnSts = 1u << 8, kSlpBtnSts = 1u << 9,
                              kRtcSts = 1u << 10;
    static constexpr uint16_t kSciSources = kTmrSts | kGblSts | kPwrBtnSts | kSlpBtnSts | kRtcSts;
    static constexpr unsigned kS5SlpTyp = 0; // the DSDT's \_S5 values (see above)

    using Clock = std::function<int64_t()>;     // virtual nanoseconds
    using PowerOff = std::function<void()>;

    AcpiPm(Clock clock, PowerOff power_off) : m_clock(std::move(clock)), m_power_off(std::move(power_off)) { reset(); }
    // The SCI line (wired once by the machine). Not owned.
    void connect_sci(IrqLine* sci)
    {
        m_sci = sci;
        update_sci();
    }
    bool sci_level() const { return m_status & m_enable & kSciSources; }
    void press_power_button();
    void advance(int64_t now_ns);
    std::optional<int64_t> next_deadline() const;

    std::string_view name() const override { return "acpi-pm"; }
    uint64_t read(uint64_t offset, unsigned size) override;
    void write(uint64_t offset, unsigned size, uint64_t value) override;

    uint32_t timer() const;
    uint16_t control() const { return m_control; }
    void reset() override; // a system reset clears PM1 (ACPI §4.8.3)
    uint32_t state_version() const override { return kStateVersion; }
    void save(StateWriter&) const override;
    void load(StateReader&) override;
    uint16_t status() const { return m_status; }
    uint16_t enable() const { return m_enable; }

private:
    uint8_t read_byte(uint64_t offset);
    uint64_t period_at(int64_t ns) const;
    void update_sci();

    Clock m_clock;
    PowerOff m_power_off;
    IrqLine* m_sci {};
    uint16_t m_status {}, m_enable {}, m_control {};
    uint64_t m_period {};
};

} // namespace sevemu::devices
