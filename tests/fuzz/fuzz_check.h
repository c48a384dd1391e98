// sevemu fuzzing — what every harness shares: the libFuzzer entry point's signature and
// FUZZ_CHECK, a property check that aborts with one line naming the broken property. libFuzzer
// treats the abort as a crash and saves the input; the replay driver (replay_main.cpp) names the
// input and fails its meson test.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>

extern "C" int LLVMFuzzerTestOneInput(uint8_t const* data, size_t size);

#define FUZZ_CHECK(cond, ...)                                                                  \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            std::fprintf(stderr, "fuzz property failed at %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            std::fprintf(stderr, __VA_ARGS__);                                                 \
            std::fputc('\n', stderr);                                                          \
            std::abort();                                                                      \
        }                                                                                      \
    } while (0)

namespace sevemu::fuzz {

// Reads the input front to back; past the end every read yields zeros, so any byte string is a
// well-formed input (libFuzzer mutates lengths freely).
class Reader {
public:
    Reader(uint8_t const* data, size_t size) : m_data(data), m_size(size) {}
    bool empty() const { return m_pos >= m_size; }
    size_t left() const { return m_pos < m_size ? m_size - m_pos : 0; }
    uint8_t u8() { return m_pos < m_size ? m_data[m_pos++] : 0; }
    // Little-endian; each byte read in its own statement (the operands of | are unsequenced,
    // and g++ and clang must read an input the same way for a crash to replay).
    uint16_t u16()
    {
        uint16_t lo = u8();
        return uint16_t(lo | (u8() << 8));
    }
    uint32_t u32()
    {
        uint32_t lo = u16();
        return lo | (uint32_t(u16()) << 16);
    }
    uint64_t u64()
    {
        uint64_t lo = u32();
        return lo | (uint64_t(u32()) << 32);
    }
    // Up to n bytes (fewer at the end of the input).
    std::span<uint8_t const> take(size_t n)
    {
        size_t k = n < left() ? n : left();
        std::span<uint8_t const> s(m_data + m_pos, k);
        m_pos += k;
        return s;
    }
    std::span<uint8_t const> rest() { return take(left()); }

private:
    uint8_t const* m_data;
    size_t m_size;
    size_t m_pos { 0 };
};

} // namespace sevemu::fuzz
