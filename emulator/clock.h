// sevemu — the machine's clock: virtual time in nanoseconds since power-on, deterministic.
//
// One retired guest instruction (summed over the vCPUs) is one nanosecond, and a machine whose
// vCPUs all halt skips ahead to the next timer event instead of waiting (QUIRKS.md). The PIT,
// the ACPI PM timer and the RTC read it; nothing else in the machine keeps time. The RTC also
// needs the host's wall clock at power-on (its epoch), which the clock keeps, so a restored
// machine's RTC goes on from the source's date rather than jumping to the host's.
//
// Reading is cheap (an offset plus the vCPUs' counters), so the run loop pays nothing per slice.
//
// Snapshot section "clock", version 1: i64 now_ns, i64 wall_epoch_ns.
#pragma once

#include "base/state_stream.h"

#include <cstdint>
#include <functional>

namespace sevemu::emulator {

class MachineClock {
public:
    static constexpr uint32_t kStateVersion = 1;
    // Instructions retired so far by the machine's vCPUs (monotonic).
    using Counter = std::function<uint64_t()>;

    MachineClock(Counter counter, int64_t wall_epoch_ns)
        : m_counter(std::move(counter))
        , m_wall_epoch_ns(wall_epoch_ns)
    {
    }

    int64_t now_ns() const { return m_offset_ns + int64_t(m_counter()); }
    // A halted machine jumps ahead (never back).
    void skip(int64_t ns)
    {
        if (ns > 0)
            m_offset_ns += ns;
    }
    // The host's wall clock (ns since the Unix epoch) at power-on: the RTC shows
    // wall_epoch_ns() + now_ns().
    int64_t wall_epoch_ns() const { return m_wall_epoch_ns; }

    void save(StateWriter& w) const
    {
        w.i64(now_ns());
        w.i64(m_wall_epoch_ns);
    }
    // Call once the vCPUs' counters are in their restored state: the clock then reads exactly
    // the saved time, whatever those counters say.
    void load(StateReader& r)
    {
        int64_t now = r.i64();
        int64_t epoch = r.i64();
        if (!r.ok())
            return;
        if (now < 0) {
            r.fail("negative virtual time");
            return;
        }
        m_offset_ns = now - int64_t(m_counter());
        m_wall_epoch_ns = epoch;
    }

private:
    Counter m_counter;
    int64_t m_offset_ns {};
    int64_t m_wall_epoch_ns {};
};

} // namespace sevemu::emulator
