// sevemu — the PC's CMOS RTC (Motorola MC146818A compatible) at ports 0x70 (index, bit 7 = NMI
// mask) and 0x71 (data): the clock registers 0x00-0x09, status registers A-D, and the CMOS
// bytes firmware and kernels read, with the memory-size fields filled as QEMU's pc_cmos_init()
// fills them for SeaBIOS.
//
// Time comes from the owner's clock (wall time at machine start + the machine's elapsed
// virtual time), so it advances with the guest. Interrupts (periodic, alarm, update-ended) are
// not raised yet (QUIRKS.md); the flags in register C are.
//
// Snapshot section "rtc", version 1 (devices/device.h):
//   128 bytes  CMOS RAM and registers 0x00-0x7F as stored (the clock registers hold what the
//              guest wrote while SET was on; register A without UIP, which is derived)
//   u8         index register (0x00-0x7F), bool NMI masked (port 0x70 bit 7)
//   i64        the guest's time base: the Unix time in nanoseconds the guest's clock shows
//              at machine time 0. The guest's date continues from the snapshot rather than
//              being read from the host again: a restored RTC shows snapshot time + the
//              virtual time elapsed since (with the two-clock constructor; see below).
#pragma once

#include "devices/bus.h"
#include "devices/device.h"

#include <array>
#include <cstdint>
#include <ctime>
#include <functional>
#include <string_view>

namespace sevemu::devices {

class CmosRtc final : public BusDevice, public Device {
public:
    static constexpr uint64_t kBase = 0x70;
    static constexpr unsigned kIrq = 8;
    static constexpr uint32_t kStateVersion = 1;
    using Clock = std::function<int64_t()>;

    // now_ns: the machine's clock (virtual nanoseconds since power-on); epoch_ns: the Unix
    // time in nanoseconds at machine time 0 (the host's wall clock when the machine was built).
    // The guest sees epoch_ns + now_ns() until it sets the time; a snapshot carries the guest's
    // time base, so a restored guest's date continues from the snapshot.
    CmosRtc(Clock now_ns, int64_t epoch_ns);
    // One clock giving Unix nanoseconds directly (epoch 0). A snapshot's time base is then
    // relative to that clock, so a restore continues from the snapshot only if the clock does.
    explicit CmosRtc(Clock unix_ns) : CmosRtc(std::move(unix_ns), 0) {}

    std::string_view name() const override { return "rtc"; }
    uint64_t read(uint64_t offset, unsigned size) override;
    void write(uint64_t offset, unsigned size, uint64_t value) override;

    // Device. reset(): what a system reset changes on an MC146818A (data sheet, "RESET"):
    // register B's interrupt enables and SQWE, register C's flags; the clock, the CMOS bytes
    // and the time base are battery backed and stay.
    void reset() override;
    uint32_t state_version() const override { return kStateVersion; }
    void save(StateWriter&) const override;
    void load(StateReader&) override;
    // The guest's current time in Unix nanoseconds.
    int64_t guest_now_ns() const { return int64_t(uint64_t(m_epoch_ns) + uint64_t(m_clock()) + uint64_t(m_offset_ns)); } // wraps

    // PC memory-size bytes (QEMU hw/i386/pc.c pc_cmos_init): base memory, extended memory
    // above 1 MiB (KiB), above 16 MiB (64 KiB units), above 4 GiB (64 KiB units), CPU count.
    void set_memory_size(uint64_t below_4g, uint64_t above_4g, unsigned cpus);

    uint8_t cmos(uint8_t index) const { return m_cmos[index & 0x7F]; }
    bool nmi_masked() const { return m_nmi_masked; }

    // Register numbers (MC146818A data sheet, "Address Map").
    static constexpr uint8_t kSeconds = 0x00, kMinutes = 0x02, kHours = 0x04, kDayOfWeek = 0x06,
                             kDayOfMonth = 0x07, kMonth = 0x08, kYear = 0x09, kRegA = 0x0A, kRegB = 0x0B,
                             kRegC = 0x0C, kRegD = 0x0D, kCentury = 0x32;
    static constexpr uint8_t kRegAUip = 0x80, kRegBSet = 0x80, kRegB24h = 0x02, kRegBBinary = 0x04;

private:
    uint8_t read_register(uint8_t index);
    void write_register(uint8_t index, uint8_t value);
    std::tm guest_time() const;
    uint8_t encode(int value) const;
    int decode(uint8_t value) const;

    Clock m_clock;
    int64_t m_epoch_ns {};
    std::array<uint8_t, 128> m_cmos {};
    uint8_t m_index {};
    bool m_nmi_masked { true };
    int64_t m_offset_ns {}; // guest-set time minus (epoch + clock time)
};

} // namespace sevemu::devices
