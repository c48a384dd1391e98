// sevemu — strong address types (STYLE.md rule 9). Spa = system physical, Gpa = guest physical,
// Gva = guest virtual, Hva = host virtual. They do not convert into each other implicitly: the
// C-bit and key selection happen in one place (mmu/), never by accident.
#pragma once

#include <compare>
#include <cstdint>
#include <functional>

namespace sevemu {

inline constexpr uint64_t kPageShift = 12;
inline constexpr uint64_t kPageSize = 1ull << kPageShift;
inline constexpr uint64_t kPageMask = kPageSize - 1;

template <class Tag>
struct Address {
    uint64_t value {};

    constexpr Address() = default;
    constexpr explicit Address(uint64_t v) : value(v) {}

    constexpr uint64_t pfn() const { return value >> kPageShift; }
    constexpr uint64_t page_offset() const { return value & kPageMask; }
    constexpr Address page_base() const { return Address(value & ~kPageMask); }
    constexpr bool page_aligned() const { return (value & kPageMask) == 0; }
    constexpr Address operator+(uint64_t off) const { return Address(value + off); }
    constexpr Address operator-(uint64_t off) const { return Address(value - off); }
    constexpr Address& operator+=(uint64_t off) { value += off; return *this; }
    constexpr uint64_t operator-(Address other) const { return value - other.value; }
    constexpr auto operator<=>(Address const&) const = default;

    static constexpr Address from_pfn(uint64_t pfn) { return Address(pfn << kPageShift); }
};

struct SpaTag {};
struct GpaTag {};
struct GvaTag {};
struct HvaTag {};
using Spa = Address<SpaTag>;
using Gpa = Address<GpaTag>;
using Gva = Address<GvaTag>;
using Hva = Address<HvaTag>;

} // namespace sevemu

template <class Tag>
struct std::hash<sevemu::Address<Tag>> {
    size_t operator()(sevemu::Address<Tag> a) const noexcept { return std::hash<uint64_t> {}(a.value); }
};
