// Known answers for the memory encryption cipher come from OpenSSL's EVP AES-XTS
// (IV = PFN as 16 little-endian bytes), never from the code under test.
#include "mmu/aes_xts.h"

#include <catch2/catch.hpp>
#include <openssl/evp.h>
#include <random>
#include <vector>

using namespace sevemu::mmu;

static std::vector<uint8_t> openssl_xts(bool enc, std::vector<uint8_t> const& key, std::vector<uint8_t> const& in, uint64_t pfn)
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

TEST_CASE("every supported AES path is byte-exact with OpenSSL EVP AES-XTS", "[mmu][aes]")
{
    std::mt19937_64 rng(1);
    uint64_t const pfns[] = { 0, 1, 0xfffff, 0x100000, 0x123456789ull, (1ull << 40) + 5, (1ull << 52) - 1 };
    for (AesPath path : { AesPath::Portable, AesPath::AesNi, AesPath::Vaes }) {
        if (!aes_path_supported(path)) {
            WARN("AES path " << aes_path_name(path) << " not supported on this CPU or build: skipped");
            continue;
        }
        for (size_t key_len : { 32u, 64u }) {
            std::vector<uint8_t> key(key_len);
            for (auto& b : key)
                b = uint8_t(rng());
            auto cipher = XtsCipher::create(key, path);
            REQUIRE(cipher.has_value());
            for (uint64_t pfn : pfns) {
                std::vector<uint8_t> page(kXtsDataUnit), out(kXtsDataUnit), back(kXtsDataUnit);
                for (auto& b : page)
                    b = uint8_t(rng());
                (*cipher)->encrypt_page(page.data(), out.data(), pfn);
                INFO("path " << aes_path_name(path) << " key " << key_len << " pfn " << pfn);
                REQUIRE(out == openssl_xts(true, key, page, pfn));
                (*cipher)->decrypt_page(out.data(), back.data(), pfn);
                REQUIRE(back == page);
                for (unsigned line : { 0u, 1u, 31u, 63u }) {
                    uint8_t l[64];
                    (*cipher)->encrypt_line(page.data() + line * 64, l, pfn, line);
                    REQUIRE(std::equal(l, l + 64, out.begin() + line * 64));
                    (*cipher)->decrypt_line(out.data() + line * 64, l, pfn, line);
                    REQUIRE(std::equal(l, l + 64, page.begin() + line * 64));
                }
            }
        }
    }
}

TEST_CASE("bad key material is refused", "[mmu][aes]")
{
    std::vector<uint8_t> short_key(16, 1);
    CHECK(XtsCipher::create(short_key, AesPath::Portable).error() == XtsError::BadKeyLength);
    std::vector<uint8_t> same_halves(32, 7);
    CHECK(XtsCipher::create(same_halves, AesPath::Portable).error() == XtsError::IdenticalHalves);
}
