// sevemu — a seeded EntropySource for repeatable runs (io.h): RDRAND and RDSEED then return the
// same bytes in every run with the same seed. Not a cryptographic generator: a guest that
// derives secrets from RDRAND under it gets predictable secrets, which is the point of a
// repeatable run and the reason it is not the default (the default is getrandom(2)).
//
// The generator is SplitMix64 (Steele, Lea, Flood, "Fast splittable pseudorandom number
// generators", OOPSLA 2014; the constants as published there and in java.util.SplittableRandom):
// one 64-bit counter, so its whole state is one number for snapshots.
#pragma once

#include "cpu/io.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace sevemu::cpu {

class SeededEntropy final : public EntropySource {
public:
    explicit SeededEntropy(uint64_t seed) : m_state(seed) { }

    bool fill(std::span<uint8_t> out) override
    {
        size_t k = 0;
        while (k < out.size()) {
            uint64_t v = next();
            size_t n = std::min<size_t>(8, out.size() - k);
            std::memcpy(out.data() + k, &v, n); // little-endian host: the low bytes first
            k += n;
        }
        return true;
    }

    // The generator's state, for a snapshot that must continue the same sequence.
    uint64_t state() const { return m_state; }
    void set_state(uint64_t s) { m_state = s; }

private:
    uint64_t next()
    {
        uint64_t z = (m_state += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }

    uint64_t m_state;
};

} // namespace sevemu::cpu
