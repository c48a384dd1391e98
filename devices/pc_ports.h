// sevemu — the small fixed ports of a PC, and the policy for ports nobody claims.
//
// Port 0x80 is the POST diagnostic port: firmware and kernels write progress codes there and
// Linux uses it for I/O delays (outb_p). Writes are kept (the last code is visible to traces and
// tests); reads return 0xff, as QEMU's ioport80 does. Snapshot section "post", version 1:
// u8 last code, u64 writes seen (neither is guest-visible; traces and tests read them).
//
// Unclaimed ports (UnclaimedPortPolicy): a read returns all ones (an ISA bus with nothing
// driving it floats high), a write is dropped; neither is an error for the guest. The Machine
// traces them under "ioport.unclaimed" so a missing device is easy to spot.
#pragma once

#include "devices/bus.h"
#include "devices/device.h"
#include "devices/state_check.h"

#include <cstdint>
#include <string_view>

namespace sevemu::devices {

class PostPort final : public BusDevice, public Device {
public:
    static constexpr uint64_t kPort = 0x80;
    static constexpr uint32_t kStateVersion = 1;
    std::string_view name() const override { return "post"; }
    void reset() override { m_last_code = 0, m_writes = 0; }
    uint32_t state_version() const override { return kStateVersion; }
    void save(StateWriter& w) const override
    {
        w.u8(m_last_code);
        w.u64(m_writes);
    }
    void load(StateReader& r) override
    {
        uint8_t code = r.u8();
        uint64_t writes = r.u64();
        if (read_to_end(r))
            m_last_code = code, m_writes = writes;
    }
    uint64_t read(uint64_t, unsigned size) override { return size >= 8 ? ~0ull : (1ull << (8 * size)) - 1; }
    void write(uint64_t, unsigned, uint64_t value) override
    {
        m_last_code = uint8_t(value);
        ++m_writes;
    }
    uint8_t last_code() const { return m_last_code; }
    uint64_t writes() const { return m_writes; }

private:
    uint8_t m_last_code { 0 };
    uint64_t m_writes { 0 };
};

struct UnclaimedPortPolicy {
    static constexpr uint64_t read_value(unsigned size) { return size >= 8 ? ~0ull : (1ull << (8 * size)) - 1; }
    static constexpr std::string_view kTraceCategory = "ioport.unclaimed";
};

} // namespace sevemu::devices
