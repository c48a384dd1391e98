// sevemu — QEMU's isa-debug-exit device (hw/misc/debugexit.c): a port range where a guest write
// of V ends the run with exit status (V << 1) | 1, so that a test guest can report success or
// failure through the emulator's exit status. Configured like QEMU's
// `-device isa-debug-exit,iobase=0xf4,iosize=0x04`.
//
// Snapshot section "debug-exit", version 1: empty (the device has no state; its ports are
// the machine's configuration).
#pragma once

#include "devices/bus.h"
#include "devices/device.h"
#include "devices/state_check.h"

#include <cstdint>
#include <functional>
#include <string_view>

namespace sevemu::devices {

struct DebugExitConfig {
    uint64_t iobase { 0x501 }; // QEMU's defaults
    uint64_t iosize { 0x02 };
};

class DebugExit final : public BusDevice, public Device {
public:
    static constexpr uint32_t kStateVersion = 1;
    // Called with the requested exit status; the owner ends the run.
    using ExitRequest = std::function<void(int status)>;

    explicit DebugExit(ExitRequest on_exit) : m_on_exit(std::move(on_exit)) {}

    std::string_view name() const override { return "debug-exit"; }
    void reset() override {}
    uint32_t state_version() const override { return kStateVersion; }
    void save(StateWriter&) const override {}
    void load(StateReader& r) override { read_to_end(r); }
    // Reads see no device behind the port (QEMU's region has no read handler): all ones.
    uint64_t read(uint64_t, unsigned size) override { return size >= 8 ? ~0ull : (1ull << (8 * size)) - 1; }
    void write(uint64_t offset, unsigned size, uint64_t value) override;

    static int exit_status(uint64_t value, unsigned size);

private:
    ExitRequest m_on_exit;
};

} // namespace sevemu::devices
