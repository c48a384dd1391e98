// sevemu — the machine's clock: virtual time in nanoseconds since power-on, deterministic.
//
// One retired guest instruction (summed over the vCPUs) is one nanosecond, and a machine whose
// vCPUs all halt skips ahead to the next timer event instead of waiting (QUIRKS.md). The PIT,
// the ACPI PM timer and the RTC read it; nothing else in the machine keeps time (the RTC adds
// its own time base, the host's wall clock at power-on, which its snapshot section carries).
//
// Reading is cheap (an offset plus the vCPUs' counters), so the run loop pays nothing per slice.
//
// Snapshot section "clock", version 1: i64 now_ns (virtual nanoseconds since power-on).
#pragma once

#include "base/state_stream.h"

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace sevemu::emulator {

class MachineClock {
public:
    static constexpr uint32_t kStateVersion = 1;
    // Instructions retired so far by the machine's vCPUs (monotonic).
    using Counter = std::function<uint64_t()>;

    explicit MachineClock(Counter counter)
        : m_counter(std::move(counter))
    {
    }

    int64_t now_ns() const { return m_offset_ns + int64_t(m_counter()); }
    // A halted machine jumps ahead (never back).
    void skip(int64_t ns)
    {
        if (ns > 0)
            m_offset_ns += ns;
    }
    void save(StateWriter& w) const
    {
        w.i64(now_ns());
    }
    // Reads a saved clock and checks it (on failure the reader carries the error); restore()
    // then sets it — once the vCPUs' counters are in their restored state, so that the clock
    // reads exactly the saved time whatever those counters say.
    static std::optional<int64_t> read_state(StateReader& r)
    {
        int64_t now = r.i64();
        if (!r.ok())
            return std::nullopt;
        if (now < 0) {
            r.fail("negative virtual time");
            return std::nullopt;
        }
        if (r.remaining() != 0) {
            r.fail(std::to_string(r.remaining()) + " trailing bytes after the payload's last field");
            return std::nullopt;
        }
        return now;
    }
    void restore(int64_t now_ns) { m_offset_ns = now_ns - int64_t(m_counter()); }

private:
    Counter m_counter;
    int64_t m_offset_ns {};
};

} // namespace sevemu::emulator
