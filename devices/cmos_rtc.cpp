#include "devices/cmos_rtc.h"

#include "devices/state_check.h"

#include <algorithm>
#include <string>

namespace sevemu::devices {

namespace {

int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    // Howard Hinnant's days_from_civil: proleptic Gregorian date to days since 1970-01-01.
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = unsigned(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + int64_t(doe) - 719468;
}

} // namespace

CmosRtc::CmosRtc(Clock now_ns, int64_t epoch_ns)
    : m_clock(std::move(now_ns))
    , m_epoch_ns(epoch_ns)
{
    m_cmos[kRegA] = 0x26;                    // 32.768 kHz time base, 1.024 kHz periodic rate
    m_cmos[kRegB] = kRegB24h;                // 24-hour, BCD (as SeaBIOS expects and QEMU resets to)
    m_cmos[kRegD] = 0x80;                    // VRT: the battery is good
    m_cmos[0x14] = 0x06;                     // equipment: FPU, display adapter
}

void CmosRtc::set_memory_size(uint64_t below_4g, uint64_t above_4g, unsigned cpus)
{
    auto put16 = [&](uint8_t at, uint64_t v) {
        v = v > 0xFFFF ? 0xFFFF : v;
        m_cmos[at] = uint8_t(v);
        m_cmos[at + 1] = uint8_t(v >> 8);
    };
    put16(0x15, 640);                                                             // base memory, KiB
    uint64_t ext_kib = below_4g > (1u << 20) ? (below_4g - (1u << 20)) >> 10 : 0;
    put16(0x17, ext_kib);                                                         // extended, KiB
    put16(0x30, ext_kib);
    put16(0x34, below_4g > (16u << 20) ? (below_4g - (16u << 20)) >> 16 : 0);     // above 16 MiB
    uint64_t high = above_4g >> 16;
    m_cmos[0x5B] = uint8_t(high), m_cmos[0x5C] = uint8_t(high >> 8), m_cmos[0x5D] = uint8_t(high >> 16);
    m_cmos[0x5F] = uint8_t(cpus - 1);
}

std::tm CmosRtc::guest_time() const
{
    int64_t ns = guest_now_ns();
    std::time_t secs = std::time_t(ns / 1'000'000'000);
    std::tm tm {};
    gmtime_r(&secs, &tm);
    return tm;
}

uint8_t CmosRtc::encode(int v) const
{
    if (m_cmos[kRegB] & kRegBBinary)
        return uint8_t(v);
    return uint8_t(((v / 10) << 4) | (v % 10));
}

int CmosRtc::decode(uint8_t v) const
{
    if (m_cmos[kRegB] & kRegBBinary)
        return v;
    return (v >> 4) * 10 + (v & 0x0F);
}

uint8_t CmosRtc::read_register(uint8_t index)
{
    bool frozen = m_cmos[kRegB] & kRegBSet; // SET: the guest is writing the time; show its values
    if (!frozen && (index <= kYear || index == kCentury) && index != 0x01 && index != 0x03 && index != 0x05) {
        std::tm tm = guest_time();
        switch (index) {
        case kSeconds: return encode(tm.tm_sec);
        case kMinutes: return encode(tm.tm_min);
        case kHours:
            if (m_cmos[kRegB] & kRegB24h)
                return encode(tm.tm_hour);
            return uint8_t(encode(tm.tm_hour % 12 ? tm.tm_hour % 12 : 12) | (tm.tm_hour >= 12 ? 0x80 : 0));
        case kDayOfWeek: return encode(tm.tm_wday + 1);
        case kDayOfMonth: return encode(tm.tm_mday);
        case kMonth: return encode(tm.tm_mon + 1);
        case kYear: return encode(tm.tm_year % 100);
        case kCentury: return encode((tm.tm_year + 1900) / 100);
        }
    }
    if (index == kRegA) {
        // UIP is set for the 244 us before each update (MC146818A "Update Cycle").
        int64_t ns = guest_now_ns();
        int64_t into_second = ((ns % 1'000'000'000) + 1'000'000'000) % 1'000'000'000;
        bool uip = !frozen && into_second >= 1'000'000'000 - 244'000;
        return uint8_t((m_cmos[kRegA] & 0x7F) | (uip ? kRegAUip : 0));
    }
    if (index == kRegC) {
        uint8_t v = m_cmos[kRegC];
        m_cmos[kRegC] = 0; // flags clear on read
        return v;
    }
    return m_cmos[index];
}

void CmosRtc::write_register(uint8_t index, uint8_t v)
{
    switch (index) {
    case kRegA:
        m_cmos[kRegA] = v & 0x7F; // UIP is read-only
        return;
    case kRegB: {
        bool was_set = m_cmos[kRegB] & kRegBSet;
        if (!was_set && (v & kRegBSet)) {
            // Entering SET: latch the current time into the registers so the guest edits them.
            std::tm tm = guest_time();
            m_cmos[kSeconds] = encode(tm.tm_sec);
            m_cmos[kMinutes] = encode(tm.tm_min);
            m_cmos[kHours] = encode(tm.tm_hour);
            m_cmos[kDayOfWeek] = encode(tm.tm_wday + 1);
            m_cmos[kDayOfMonth] = encode(tm.tm_mday);
            m_cmos[kMonth] = encode(tm.tm_mon + 1);
            m_cmos[kYear] = encode(tm.tm_year % 100);
            m_cmos[kCentury] = encode((tm.tm_year + 1900) / 100);
        }
        m_cmos[kRegB] = v;
        if (was_set && !(v & kRegBSet)) {
            // Leaving SET: the edited registers become the guest's time.
            int year = decode(m_cmos[kCentury]) * 100 + decode(m_cmos[kYear]);
            int64_t days = days_from_civil(year, unsigned(decode(m_cmos[kMonth])), unsigned(decode(m_cmos[kDayOfMonth])));
            int hour = decode(m_cmos[kHours] & 0x7F);
            if (!(v & kRegB24h)) {
                hour %= 12;
                if (m_cmos[kHours] & 0x80)
                    hour += 12;
            }
            int64_t secs = days * 86400 + hour * 3600 + decode(m_cmos[kMinutes]) * 60 + decode(m_cmos[kSeconds]);
            // A date far outside what 64-bit nanoseconds hold (invalid BCD digits, a year 16665)
            // wraps, as guest_now_ns() does: a meaningless time for meaningless registers,
            // never undefined behaviour (tests/emulator/device_fuzz_test.cpp found it).
            m_offset_ns = int64_t(uint64_t(secs) * 1'000'000'000ull - uint64_t(m_clock()) - uint64_t(m_epoch_ns));
        }
        return;
    }
    case kRegC:
    case kRegD:
        return; // read-only
    default:
        m_cmos[index] = v;
    }
}

uint64_t CmosRtc::read(uint64_t offset, unsigned)
{
    if (offset == 0)
        return 0xFF; // the index register is write-only
    return read_register(m_index);
}

void CmosRtc::write(uint64_t offset, unsigned, uint64_t value)
{
    if (offset == 0) {
        m_index = uint8_t(value) & 0x7F;
        m_nmi_masked = value & 0x80;
        return;
    }
    write_register(m_index, uint8_t(value));
}

void CmosRtc::reset()
{
    // MC146818A data sheet, "RESET": clears PIE, AIE, UIE and SQWE in register B and IRQF,
    // PF, AF, UF in register C. Nothing else (the part is battery backed).
    m_cmos[kRegB] &= uint8_t(~0x78);
    m_cmos[kRegC] = 0;
}

void CmosRtc::save(StateWriter& w) const
{
    w.raw(m_cmos);
    w.u8(m_index);
    w.boolean(m_nmi_masked);
    // The guest's clock at machine time 0: with the machine's clock restored, the guest reads
    // the time it would have read had the run gone on.
    w.i64(int64_t(uint64_t(m_epoch_ns) + uint64_t(m_offset_ns)));
}

void CmosRtc::load(StateReader& r)
{
    std::array<uint8_t, 128> cmos {};
    auto bytes = r.raw(cmos.size());
    if (bytes.size() == cmos.size())
        std::copy(bytes.begin(), bytes.end(), cmos.begin());
    uint8_t index = r.u8();
    bool nmi_masked = r.boolean();
    int64_t base = r.i64();
    if (!read_to_end(r))
        return;
    if (index > 0x7F)
        return r.fail("index register " + std::to_string(index) + " is not 0x00-0x7f");
    if (base < -(int64_t(1) << 62) || base > (int64_t(1) << 62))
        return r.fail("time base out of range");
    if (cmos[kRegA] & kRegAUip)
        return r.fail("register A has UIP stored (it is derived)");
    if (cmos[kRegD] & 0x7F)
        return r.fail("register D has bits other than VRT set");
    m_cmos = cmos;
    m_index = index;
    m_nmi_masked = nmi_masked;
    m_offset_ns = int64_t(uint64_t(base) - uint64_t(m_epoch_ns)); // wraps like the sums it undoes
}

} // namespace sevemu::devices
