// sevemu — the ACPI power-management register block of QEMU's PC chipsets (PIIX4 PM / ICH9
// LPC), at the I/O base SeaBIOS gives it, 0x600: PM1a event (status, enable), PM1a control and
// the 24-bit PM timer. ACPI 6.4 §4.8.3 (PM1 event/control registers) and §4.8.3.3 (PM timer).
//
// A write to PM1_CNT with SLP_EN and SLP_TYP = 0 is QEMU's S5 (its DSDT's \_S5 is {0, 0}):
// the guest powers the machine off, and the run ends with status 0. Other sleep types are not
// modelled (QUIRKS.md).
//
// Snapshot section "acpi-pm", version 1 (devices/device.h): u16 PM1a_STS, u16 PM1a_EN,
// u16 PM1a_CNT (SLP_EN clear: it is write-only and acts at once). The PM timer is the
// machine's clock, restored by the Machine.
#pragma once

#include "devices/bus.h"
#include "devices/device.h"

#include <cstdint>
#include <functional>
#include <string_view>

namespace sevemu::devices {

class AcpiPm final : public BusDevice, public Device {
public:
    static constexpr uint32_t kStateVersion = 1;
    static constexpr uint64_t kBase = 0x600, kLength = 0x40;
    static constexpr uint64_t kTimerHz = 3'579'545; // ACPI PM timer frequency (ACPI 6.4 §4.8.3.3)
    static constexpr uint64_t kPm1Status = 0x00, kPm1Enable = 0x02, kPm1Control = 0x04, kPmTimer = 0x08;
    static constexpr uint16_t kSlpEn = 1u << 13, kSciEn = 1u << 0;

    using Clock = std::function<int64_t()>;     // virtual nanoseconds
    using PowerOff = std::function<void()>;

    AcpiPm(Clock clock, PowerOff power_off) : m_clock(std::move(clock)), m_power_off(std::move(power_off)) {}

    std::string_view name() const override { return "acpi-pm"; }
    uint64_t read(uint64_t offset, unsigned size) override;
    void write(uint64_t offset, unsigned size, uint64_t value) override;

    uint32_t timer() const;
    uint16_t control() const { return m_control; }
    void reset() override { m_status = m_enable = m_control = 0; } // a system reset clears PM1 (ACPI §4.8.3)
    uint32_t state_version() const override { return kStateVersion; }
    void save(StateWriter&) const override;
    void load(StateReader&) override;
    uint16_t status() const { return m_status; }
    uint16_t enable() const { return m_enable; }

private:
    uint8_t read_byte(uint64_t offset) const;

    Clock m_clock;
    PowerOff m_power_off;
    uint16_t m_status {}, m_enable {}, m_control {};
};

} // namespace sevemu::devices
