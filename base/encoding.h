// sevemu — hex and base64 (the formats QEMU, sevctl and snpguest exchange blobs in).
#pragma once

#include "base/result.h"

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace sevemu {

using Bytes = std::vector<uint8_t>;

std::string to_hex(std::span<const uint8_t> data);
// The value of one hex digit (either case), or -1.
int hex_digit_value(char c);
// Accepts upper or lower case; whitespace is ignored; an odd count or a non-hex digit is an error.
std::optional<Bytes> from_hex(std::string_view text);

std::string to_base64(std::span<const uint8_t> data);
// Standard alphabet with padding; whitespace (line breaks in files) is ignored.
std::optional<Bytes> from_base64(std::string_view text);

// Little-endian loads and stores: every AMD structure is little-endian.
inline uint64_t load_le(std::span<const uint8_t> p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i)
        v |= uint64_t(p[i]) << (8 * i);
    return v;
}
inline void store_le(std::span<uint8_t> p, uint64_t v, size_t n)
{
    for (size_t i = 0; i < n; ++i)
        p[i] = uint8_t(v >> (8 * i));
}

// Overwrites key material so it does not linger in freed memory.
void secure_zero(void* p, size_t n);

} // namespace sevemu
