// sevemu — the machine's clock: virtual time in nanoseconds since power-on, deterministic.
//
// One retired guest instruction (of any vCPU) is one nanosecond, and a machine whose vCPUs all
// halt skips ahead to the next timer event instead of waiting (QUIRKS.md). The PIT, the ACPI PM
// timer, the local APIC timers and the RTC read it; nothing else in the machine keeps time (the
// RTC adds its own time base, the host's wall clock at power-on, which its snapshot section
// carries).
//
// N vCPUs share the one timebase as N processes share one host CPU (Machine::run): the machine
// runs in rounds; in a round every runnable vCPU, in vCPU order, runs one slice (at most
// Machine::kSmpQuantum instructions, and never past the next timer deadline) while the others
// wait, and the clock counts the instructions of all. So time is one global, monotonic line: a
// value one vCPU reads after another wrote it is never older (Linux's TSC warp check,
// check_tsc_sync_source, passes), and each vCPU runs at 1/N of the clock's rate when all are busy.
//
// Every vCPU's TSC is the clock (1 GHz, one tick per nanosecond) plus whatever the guest wrote
// into it: the machine moves a waiting vCPU's TSC forward by what the running one retired, and
// every TSC by a skip (Cpu::set_tsc), so RDTSC on any vCPU, the PIT, the ACPI PM timer and the
// LAPIC timers (TSC-deadline included) agree. A system reset leaves the TSC on the clock
// (QUIRKS.md).
//
// Reading is cheap (an offset plus the vCPUs' counters), so the run loop pays nothing per slice.
//
// Snapshot section "clock", version 1: i64 now_ns (virtual nanoseconds since power-on). The
// machine is saved only between rounds, so that is all the scheduler's state.
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
