// Known answers for the memory encryption cipher come from OpenSSL's EVP AES-XTS
// (IV = PFN as 16 little-endian bytes), never from the code under test.
#include "mmu/aes_xts.h"
#include "mmu/aes_xts_kernels.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstring>
#include <openssl/evp.h>
#include <random>
#include <vector>

using namespace sevemu::mmu;

namespace {

std::vector<uint8_t> openssl_xts(bool enc, std::vector<uint8_t> const& key, std::vector<uint8_t> const& in, uint64_t pfn)
{
    uint8_t iv[16] {};
    for (int i = 0; i < 8; ++i)
        iv[i] = uint8_t(pfn >> (8 * i));
    EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
    EVP_CipherInit_ex(ctx, key.size() == 32 ? EVP_aes_128_xts() : EVP_aes_256_xts(), nullptr, key.data(), iv, enc ? 1 : 0);
    std::vector<uint8_t> out(in.size());
    int len = 0;
    EVP_CipherUpdate(ctx, out.data(), &len, in.data(), int(in.size()));
    EVP_CIPHER_CTX_free(ctx);
    return out;
}

std::vector<uint8_t> random_bytes(std::mt19937_64& rng, size_t n)
{
    std::vector<uint8_t> v(n);
    for (auto& b : v)
        b = uint8_t(rng());
    return v;
}

std::vector<uint8_t> random_key(std::mt19937_64& rng, size_t n)
{
    for (;;) {
        auto k = random_bytes(rng, n);
        if (!std::equal(k.begin(), k.begin() + long(n / 2), k.begin() + long(n / 2)))
            return k;
    }
}

// PFNs at the edges: the first page, pages either side of 4 GiB, above 2^40 bytes, the last page
// of a 256 MiB machine and of the 52-bit physical address space, and tweaks with the high bytes
// of the 64-bit PFN set (bits carried across the tweak's 64-bit halves when multiplied by α).
constexpr uint64_t kPfns[] = {
    0,
    1,
    0xffff,                // last page of a 256 MiB machine
    0xfffff,               // last page below 4 GiB
    0x100000,              // first page above 4 GiB
    0x123456789ull,        // above 2^44 bytes
    (1ull << 28) + 5,      // above 2^40 bytes
    (1ull << 40) + 5,      // PFN above 2^40
    (1ull << 40) - 1,      // last page of a 52-bit physical address space
    0xffffffffffffffffull, // largest tweak the API can express
};

constexpr AesPath kPaths[] = { AesPath::Portable, AesPath::AesNi, AesPath::Vaes };

bool skip_unsupported(AesPath path)
{
    if (aes_path_supported(path))
        return false;
    WARN("AES path " << aes_path_name(path) << " not supported on this CPU or build: skipped");
    return true;
}

} // namespace

TEST_CASE("every supported AES path is byte-exact with OpenSSL EVP AES-XTS", "[mmu][aes]")
{
    std::mt19937_64 rng(1);
    for (AesPath path : kPaths) {
        if (skip_unsupported(path))
            continue;
        for (size_t key_len : { 32u, 64u }) {
            auto key = random_key(rng, key_len);
            auto cipher = XtsCipher::create(key, path);
            REQUIRE(cipher.has_value());
            XtsCipher const& c = **cipher;
            CHECK(c.path() == path);
            CHECK(c.key_size() == (key_len == 32 ? XtsKeySize::Aes128 : XtsKeySize::Aes256));
            for (uint64_t pfn : kPfns) {
                INFO("path " << aes_path_name(path) << " key " << key_len << " pfn 0x" << std::hex << pfn);
                auto page = random_bytes(rng, kXtsDataUnit);
                std::vector<uint8_t> out(kXtsDataUnit), back(kXtsDataUnit);

                // Encrypt: against OpenSSL; decrypt: of OpenSSL's decryption of random bytes, and
                // the round trip.
                c.encrypt_page(page.data(), out.data(), pfn);
                REQUIRE(out == openssl_xts(true, key, page, pfn));
                c.decrypt_page(page.data(), back.data(), pfn);
                REQUIRE(back == openssl_xts(false, key, page, pfn));
                c.decrypt_page(out.data(), back.data(), pfn);
                REQUIRE(back == page);

                // Every line of the page, both ways.
                for (unsigned line = 0; line < kXtsDataUnit / kCacheLine; ++line) {
                    uint8_t l[kCacheLine];
                    c.encrypt_line(page.data() + line * kCacheLine, l, pfn, line);
                    REQUIRE(std::equal(l, l + kCacheLine, out.begin() + line * kCacheLine));
                    c.decrypt_line(out.data() + line * kCacheLine, l, pfn, line);
                    REQUIRE(std::equal(l, l + kCacheLine, page.begin() + line * kCacheLine));
                }
            }
        }
    }
}

TEST_CASE("AES paths work in place and on unaligned buffers", "[mmu][aes]")
{
    std::mt19937_64 rng(2);
    for (AesPath path : kPaths) {
        if (skip_unsupported(path))
            continue;
        for (size_t key_len : { 32u, 64u }) {
            INFO("path " << aes_path_name(path) << " key " << key_len);
            auto key = random_key(rng, key_len);
            auto cipher = XtsCipher::create(key, path);
            REQUIRE(cipher.has_value());
            XtsCipher const& c = **cipher;
            uint64_t const pfn = 0x1'0000'0123ull;
            auto page = random_bytes(rng, kXtsDataUnit);
            auto const expect = openssl_xts(true, key, page, pfn);

            // in == out, page.
            std::vector<uint8_t> buf = page;
            c.encrypt_page(buf.data(), buf.data(), pfn);
            REQUIRE(buf == expect);
            c.decrypt_page(buf.data(), buf.data(), pfn);
            REQUIRE(buf == page);

            // in == out, lines.
            for (unsigned line = 0; line < 64; ++line)
                c.encrypt_line(buf.data() + line * 64, buf.data() + line * 64, pfn, line);
            REQUIRE(buf == expect);
            for (unsigned line = 0; line < 64; ++line)
                c.decrypt_line(buf.data() + line * 64, buf.data() + line * 64, pfn, line);
            REQUIRE(buf == page);

            // Buffers at odd addresses.
            std::vector<uint8_t> in(kXtsDataUnit + 3), out(kXtsDataUnit + 5);
            std::copy(page.begin(), page.end(), in.begin() + 3);
            c.encrypt_page(in.data() + 3, out.data() + 5, pfn);
            REQUIRE(std::equal(expect.begin(), expect.end(), out.begin() + 5));
            c.encrypt_line(in.data() + 3 + 17 * 64, out.data() + 1, pfn, 17);
            REQUIRE(std::equal(out.begin() + 1, out.begin() + 65, expect.begin() + 17 * 64));
        }
    }
}

TEST_CASE("the SSE-encoded build of the AES-NI kernels is byte-exact too", "[mmu][aes]")
{
    // On a CPU with AVX the AesNi path runs the VEX-encoded build; the legacy-SSE build (for
    // AES-NI CPUs without AVX) is reached here through the kernel interface directly.
    if (skip_unsupported(AesPath::AesNi))
        return;
    std::mt19937_64 rng(3);
    for (size_t key_len : { 32u, 64u }) {
        auto key = random_key(rng, key_len);
        sevemu::mmu::xts::KeySchedule ks {};
        sevemu::mmu::xts::sse::expand(ks, key.data(), key_len / 2);
        for (uint64_t pfn : kPfns) {
            INFO("key " << key_len << " pfn 0x" << std::hex << pfn);
            auto page = random_bytes(rng, kXtsDataUnit);
            std::vector<uint8_t> out(kXtsDataUnit), back(kXtsDataUnit);
            sevemu::mmu::xts::sse::page(ks, true, page.data(), out.data(), pfn);
            REQUIRE(out == openssl_xts(true, key, page, pfn));
            sevemu::mmu::xts::sse::page(ks, false, out.data(), back.data(), pfn);
            REQUIRE(back == page);
            for (unsigned line = 0; line < 64; ++line) {
                uint8_t l[64];
                sevemu::mmu::xts::sse::line(ks, true, page.data() + line * 64, l, pfn, line);
                REQUIRE(std::equal(l, l + 64, out.begin() + line * 64));
                sevemu::mmu::xts::sse::line(ks, false, out.data() + line * 64, l, pfn, line);
                REQUIRE(std::equal(l, l + 64, page.begin() + line * 64));
            }
        }
    }
}

TEST_CASE("best_aes_path picks the fastest supported path", "[mmu][aes]")
{
    AesPath best = best_aes_path();
    CHECK(aes_path_supported(best));
    CHECK(aes_path_supported(AesPath::Portable));
    if (aes_path_supported(AesPath::Vaes))
        CHECK(best == AesPath::Vaes);
    else if (aes_path_supported(AesPath::AesNi))
        CHECK(best == AesPath::AesNi);
    else
        CHECK(best == AesPath::Portable);
    // VAES is only ever offered together with AES-NI (its key schedule and line tweak use it).
    if (aes_path_supported(AesPath::Vaes))
        CHECK(aes_path_supported(AesPath::AesNi));
    INFO("best AES path on this machine: " << aes_path_name(best));
    SUCCEED();
}

TEST_CASE("an unsupported path is refused, not run", "[mmu][aes]")
{
    std::vector<uint8_t> key(32);
    for (size_t i = 0; i < key.size(); ++i)
        key[i] = uint8_t(i);
    for (AesPath path : kPaths) {
        auto c = XtsCipher::create(key, path);
        if (aes_path_supported(path))
            CHECK(c.has_value());
        else
            CHECK(c.error() == XtsError::PathUnsupported);
    }
}

TEST_CASE("bad key material is refused", "[mmu][aes]")
{
    for (AesPath path : kPaths) {
        if (!aes_path_supported(path))
            continue;
        std::vector<uint8_t> short_key(16, 1);
        CHECK(XtsCipher::create(short_key, path).error() == XtsError::BadKeyLength);
        std::vector<uint8_t> odd_key(48, 1);
        CHECK(XtsCipher::create(odd_key, path).error() == XtsError::BadKeyLength);
        std::vector<uint8_t> same_halves(32, 7);
        CHECK(XtsCipher::create(same_halves, path).error() == XtsError::IdenticalHalves);
        std::vector<uint8_t> same_halves_256(64, 9);
        CHECK(XtsCipher::create(same_halves_256, path).error() == XtsError::IdenticalHalves);
    }
}
