// sevemu — devices see offsets on a bus (STYLE.md rule 2). One small BusDevice interface,
// a Bus for port I/O and one for MMIO, typed overlap errors, interrupt lines as objects.
#pragma once

#include "base/result.h"

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace sevemu::devices {

class BusDevice {
public:
    virtual ~BusDevice() = default;
    virtual std::string_view name() const = 0;
    // size is 1, 2, 4 or 8; offset is relative to the device's base on the bus.
    virtual uint64_t read(uint64_t offset, unsigned size) = 0;
    virtual void write(uint64_t offset, unsigned size, uint64_t value) = 0;
};

enum class BusError : uint8_t { Overlap, EmptyRange };

class Bus {
public:
    // The bus does not own devices; the Machine does.
    Result<void, BusError> add(uint64_t base, uint64_t length, BusDevice& device);
    void remove(BusDevice& device);

    struct Hit {
        BusDevice* device;
        uint64_t offset;
    };
    std::optional<Hit> find(uint64_t address) const;

    // Unclaimed reads return all ones (an open bus); unclaimed writes are dropped. The bool
    // in the result tells whether a device answered.
    std::pair<uint64_t, bool> read(uint64_t address, unsigned size) const;
    bool write(uint64_t address, unsigned size, uint64_t value) const;

private:
    struct Range {
        uint64_t length;
        BusDevice* device;
    };
    std::map<uint64_t, Range> m_ranges; // by base
};

// An interrupt line: the device raises and lowers it; whoever is wired to it (an interrupt
// controller, a test) hears the level.
class IrqLine {
public:
    using Sink = std::function<void(bool level)>;
    IrqLine() = default;
    explicit IrqLine(Sink sink) : m_sink(std::move(sink)) {}
    void connect(Sink sink) { m_sink = std::move(sink); }
    void set(bool level)
    {
        m_level = level;
        if (m_sink)
            m_sink(level);
    }
    void raise() { set(true); }
    void lower() { set(false); }
    void pulse() { set(true); set(false); }
    bool level() const { return m_level; }

private:
    Sink m_sink;
    bool m_level { false };
};

} // namespace sevemu::devices
