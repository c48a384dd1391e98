#include "devices/bus.h"

namespace sevemu::devices {

Result<void, BusError> Bus::add(uint64_t base, uint64_t length, BusDevice& device)
{
    if (length == 0 || base + length < base)
        return make_unexpected(BusError::EmptyRange);
    auto next = m_ranges.lower_bound(base);
    if (next != m_ranges.end() && next->first < base + length)
        return make_unexpected(BusError::Overlap);
    if (next != m_ranges.begin()) {
        auto prev = std::prev(next);
        if (prev->first + prev->second.length > base)
            return make_unexpected(BusError::Overlap);
    }
    m_ranges.emplace(base, Range { length, &device });
    return {};
}

void Bus::remove(BusDevice& device)
{
    std::erase_if(m_ranges, [&](auto const& kv) { return kv.second.device == &device; });
}

std::optional<Bus::Hit> Bus::find(uint64_t address) const
{
    auto it = m_ranges.upper_bound(address);
    if (it == m_ranges.begin())
        return std::nullopt;
    --it;
    if (address - it->first >= it->second.length)
        return std::nullopt;
    return Hit { it->second.device, address - it->first };
}

std::pair<uint64_t, bool> Bus::read(uint64_t address, unsigned size) const
{
    auto hit = find(address);
    if (!hit)
        return { size >= 8 ? ~0ull : (1ull << (8 * size)) - 1, false };
    return { hit->device->read(hit->offset, size), true };
}

bool Bus::write(uint64_t address, unsigned size, uint64_t value) const
{
    auto hit = find(address);
    if (!hit)
        return false;
    hit->device->write(hit->offset, size, value);
    return true;
}

} // namespace sevemu::devices
