#include "base/encoding.h"

#include <openssl/crypto.h>

namespace sevemu {

std::string to_hex(std::span<const uint8_t> data)
{
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string out;
    out.reserve(data.size() * 2);
    for (uint8_t b : data) {
        out.push_back(kDigits[b >> 4]);
        out.push_back(kDigits[b & 15]);
    }
    return out;
}

int hex_digit_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool is_space(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

std::optional<Bytes> from_hex(std::string_view text)
{
    Bytes out;
    int high = -1;
    for (char c : text) {
        if (is_space(c))
            continue;
        int v = hex_digit_value(c);
        if (v < 0)
            return std::nullopt;
        if (high < 0) {
            high = v;
        } else {
            out.push_back(uint8_t(high << 4 | v));
            high = -1;
        }
    }
    if (high >= 0)
        return std::nullopt;
    return out;
}

static constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string to_base64(std::span<const uint8_t> data)
{
    std::string out;
    out.reserve((data.size() + 2) / 3 * 4);
    size_t i = 0;
    for (; i + 3 <= data.size(); i += 3) {
        uint32_t v = uint32_t(data[i]) << 16 | uint32_t(data[i + 1]) << 8 | data[i + 2];
        out += kB64[v >> 18];
        out += kB64[(v >> 12) & 63];
        out += kB64[(v >> 6) & 63];
        out += kB64[v & 63];
    }
    if (size_t rest = data.size() - i) {
        uint32_t v = uint32_t(data[i]) << 16 | (rest == 2 ? uint32_t(data[i + 1]) << 8 : 0);
        out += kB64[v >> 18];
        out += kB64[(v >> 12) & 63];
        out += rest == 2 ? kB64[(v >> 6) & 63] : '=';
        out += '=';
    }
    return out;
}

static int b64_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

std::optional<Bytes> from_base64(std::string_view text)
{
    Bytes out;
    uint32_t acc = 0;
    int bits = 0;
    int pad = 0;
    size_t symbols = 0;
    for (char c : text) {
        if (is_space(c))
            continue;
        if (c == '=') {
            ++pad;
            ++symbols;
            continue;
        }
        if (pad)
            return std::nullopt; // data after padding
        int v = b64_value(c);
        if (v < 0)
            return std::nullopt;
        ++symbols;
        acc = (acc << 6) | uint32_t(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out.push_back(uint8_t(acc >> bits));
        }
    }
    if (symbols % 4 != 0 || pad > 2)
        return std::nullopt;
    // Leftover bits must be zero (canonical encoding).
    if (bits && (acc & ((1u << bits) - 1)))
        return std::nullopt;
    return out;
}

void secure_zero(void* p, size_t n) { OPENSSL_cleanse(p, n); }

} // namespace sevemu
