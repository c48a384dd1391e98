// A little-endian byte writer for the corpus generators' seeds (gen_corpus.cpp,
// gen_ghcb_corpus.cpp): each call appends, and returns the writer so calls chain.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace sevemu::fuzz {

struct SeedWriter {
    std::vector<uint8_t> b;
    SeedWriter& u8(uint8_t v)
    {
        b.push_back(v);
        return *this;
    }
    SeedWriter& u16(uint16_t v) { return u8(uint8_t(v)).u8(uint8_t(v >> 8)); }
    SeedWriter& u32(uint32_t v) { return u16(uint16_t(v)).u16(uint16_t(v >> 16)); }
    SeedWriter& u64(uint64_t v) { return u32(uint32_t(v)).u32(uint32_t(v >> 32)); }
    SeedWriter& bytes(std::span<uint8_t const> s)
    {
        b.insert(b.end(), s.begin(), s.end());
        return *this;
    }
    SeedWriter& text(std::string_view s)
    {
        b.insert(b.end(), s.begin(), s.end());
        return *this;
    }
    template <class T> SeedWriter& raw(T const& v)
    {
        auto p = reinterpret_cast<uint8_t const*>(&v);
        b.insert(b.end(), p, p + sizeof v);
        return *this;
    }
};

} // namespace sevemu::fuzz
