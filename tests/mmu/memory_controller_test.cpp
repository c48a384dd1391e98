#include "mmu/memory_controller.h"

#include <catch2/catch.hpp>
#include <cstring>
#include <openssl/evp.h>
#include <random>

using namespace sevemu;
using namespace sevemu::mmu;

namespace {

std::vector<uint8_t> random_bytes(size_t n, uint64_t seed)
{
    std::mt19937_64 rng(seed);
    std::vector<uint8_t> v(n);
    for (auto& b : v)
        b = uint8_t(rng());
    return v;
}

struct Fixture {
    std::unique_ptr<MemoryController> mc;
    std::vector<uint8_t> key1 = random_bytes(32, 11), key2 = random_bytes(32, 22);
    Fixture(uint64_t size = 64ull << 20, uint32_t cache_pages = 256)
    {
        MemoryConfig cfg;
        cfg.dram_size = size;
        cfg.cache_pages = cache_pages;
        mc = std::move(*MemoryController::create(cfg));
        REQUIRE(mc->key_slot_port().program(1, key1).has_value());
        REQUIRE(mc->key_slot_port().program(2, key2).has_value());
    }
    std::vector<uint8_t> read(Spa a, size_t n, KeyId k)
    {
        std::vector<uint8_t> v(n);
        REQUIRE(mc->read(a, v, k).has_value());
        return v;
    }
};

std::vector<uint8_t> openssl_xts_encrypt(std::vector<uint8_t> const& key, std::vector<uint8_t> const& in, uint64_t pfn)
{
    uint8_t iv[16] {};
    for (int i = 0; i < 8; ++i)
        iv[i] = uint8_t(pfn >> (8 * i));
    EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
    EVP_EncryptInit_ex(ctx, key.size() == 32 ? EVP_aes_128_xts() : EVP_aes_256_xts(), nullptr, key.data(), iv);
    std::vector<uint8_t> out(in.size());
    int len = 0;
    EVP_EncryptUpdate(ctx, out.data(), &len, in.data(), int(in.size()));
    EVP_CIPHER_CTX_free(ctx);
    return out;
}

} // namespace

TEST_CASE("DRAM holds exactly the OpenSSL AES-XTS ciphertext of a guest page", "[mmu]")
{
    Fixture f;
    auto plain = random_bytes(kPageSize, 3);
    Spa page(0x5000);
    REQUIRE(f.mc->write(page, plain, KeyId::slot(1)).has_value());
    CHECK(f.read(page, kPageSize, KeyId::slot(1)) == plain);
    CHECK(f.read(page, kPageSize, KeyId::none()) == openssl_xts_encrypt(f.key1, plain, page.pfn()));
}

TEST_CASE("first and last page of memory, and pages above 4 GiB, encrypt exactly", "[mmu]")
{
    // 3 GiB + 16 MiB of DRAM: the last 16 MiB sit above 4 GiB.
    Fixture f((3ull << 30) + (16ull << 20));
    auto plain = random_bytes(kPageSize, 4);
    Spa last(0x1'0000'0000ull + (16ull << 20) - kPageSize);
    for (Spa page : { Spa(0), Spa(0xC000'0000ull - kPageSize), Spa(0x1'0000'0000ull), last }) {
        REQUIRE(f.mc->write(page, plain, KeyId::slot(2)).has_value());
        CHECK(f.read(page, kPageSize, KeyId::none()) == openssl_xts_encrypt(f.key2, plain, page.pfn()));
    }
    std::vector<uint8_t> buf(8);
    CHECK(f.mc->read(Spa(0xC000'0000ull), buf, KeyId::none()).error() == MemError::OutOfRange);
    CHECK(f.mc->read(last + kPageSize, buf, KeyId::slot(1)).error() == MemError::OutOfRange);
    CHECK(f.mc->write(last + kPageSize - 4, buf, KeyId::none()).error() == MemError::OutOfRange);
}

TEST_CASE("the same plaintext under two ASIDs, or at two PFNs, gives different ciphertext", "[mmu]")
{
    Fixture f;
    auto plain = random_bytes(kPageSize, 5);
    REQUIRE(f.mc->write(Spa(0x10000), plain, KeyId::slot(1)).has_value());
    REQUIRE(f.mc->write(Spa(0x11000), plain, KeyId::slot(1)).has_value());
    REQUIRE(f.mc->write(Spa(0x12000), plain, KeyId::slot(2)).has_value());
    auto a = f.read(Spa(0x10000), kPageSize, KeyId::none());
    auto b = f.read(Spa(0x11000), kPageSize, KeyId::none());
    auto c = f.read(Spa(0x12000), kPageSize, KeyId::none());
    CHECK(a != b);
    CHECK(a != plain);
    // Same PFN offset but ASID 2 at its own page: compare ASID 2 at PFN 0x10 too.
    REQUIRE(f.mc->write(Spa(0x10000), plain, KeyId::slot(2)).has_value());
    CHECK(f.read(Spa(0x10000), kPageSize, KeyId::none()) != a);
    CHECK(c != plain);
}

TEST_CASE("ciphertext moved to another PFN does not decrypt to the original", "[mmu]")
{
    Fixture f;
    auto plain = random_bytes(kPageSize, 6);
    REQUIRE(f.mc->write(Spa(0x20000), plain, KeyId::slot(1)).has_value());
    auto cipher = f.read(Spa(0x20000), kPageSize, KeyId::none());
    REQUIRE(f.mc->write(Spa(0x40000), cipher, KeyId::none()).has_value());
    CHECK(f.read(Spa(0x40000), kPageSize, KeyId::slot(1)) != plain);
    // Put back at its own PFN it decrypts again (the tweak, not the key, is what differs).
    REQUIRE(f.mc->write(Spa(0x20000), cipher, KeyId::none()).has_value());
    CHECK(f.read(Spa(0x20000), kPageSize, KeyId::slot(1)) == plain);
}

TEST_CASE("a read with no key never returns guest plaintext, even of small writes", "[mmu]")
{
    Fixture f;
    std::vector<uint8_t> secret = { 's', 'e', 'c', 'r', 'e', 't', '!', '!' };
    for (uint64_t off : { 0ull, 8ull, 4092ull }) {
        Spa at(0x30000 + off);
        REQUIRE(f.mc->write(at, secret, KeyId::slot(1)).has_value());
        CHECK(f.read(at, secret.size(), KeyId::none()) != secret);
        CHECK(f.read(at, secret.size(), KeyId::slot(1)) == secret);
    }
}

TEST_CASE("writes through the plaintext cache are written back before another key reads", "[mmu]")
{
    Fixture f;
    Spa page(0x8000);
    auto plain = random_bytes(kPageSize, 8);
    auto p = f.mc->page_pointer(page, KeyId::slot(1), Access::Write);
    REQUIRE(p.has_value());
    uint64_t gen = f.mc->generation();
    std::memcpy(*p, plain.data(), kPageSize);
    // The hypervisor's read forces the write-back and invalidates the pointer.
    CHECK(f.read(page, kPageSize, KeyId::none()) == openssl_xts_encrypt(f.key1, plain, page.pfn()));
    CHECK(f.mc->generation() != gen);
    CHECK(f.mc->stats().writebacks >= 1);
    // Another ASID's read also sees the written-back ciphertext (decrypted with the wrong key).
    CHECK(f.read(page, kPageSize, KeyId::slot(2)) != plain);
    CHECK(f.read(page, kPageSize, KeyId::slot(1)) == plain);
}

TEST_CASE("a write past the cache puts a whole page in DRAM as ciphertext", "[mmu]")
{
    Fixture f(64ull << 20, 4);
    Spa page(0xA000);
    std::vector<Spa> heard;
    f.mc->add_invalidation_listener([&](Spa s) { heard.push_back(s); });
    // A raw pointer handed out for the page must not outlive the write.
    REQUIRE(f.mc->page_pointer(page, KeyId::none(), Access::Write).has_value());
    auto plain = random_bytes(kPageSize, 9);
    f.mc->start_dirty_log();
    REQUIRE(f.mc->write_past_cache(page, plain, KeyId::slot(1)).has_value());
    REQUIRE_FALSE(heard.empty());
    CHECK(heard.back() == page);
    CHECK_FALSE(f.mc->key_has_cached_pages(KeyId::slot(1)));
    auto dirty = f.mc->sync_dirty_log();
    CHECK(((dirty[page.pfn() / 64] >> (page.pfn() % 64)) & 1) == 1);
    // DRAM holds the XTS ciphertext (OpenSSL's), and the key reads the plaintext back.
    CHECK(f.read(page, kPageSize, KeyId::none()) == openssl_xts_encrypt(f.key1, plain, page.pfn()));
    CHECK(f.read(page, kPageSize, KeyId::slot(1)) == plain);
    // A page cached dirty under another key is written back and dropped first; the new bytes win.
    auto other = random_bytes(kPageSize, 10), again = random_bytes(kPageSize, 11);
    REQUIRE(f.mc->write(page, other, KeyId::slot(2)).has_value());
    REQUIRE(f.mc->key_has_cached_pages(KeyId::slot(2)));
    REQUIRE(f.mc->write_past_cache(page, again, KeyId::slot(1)).has_value());
    CHECK_FALSE(f.mc->key_has_cached_pages(KeyId::slot(2)));
    CHECK(f.read(page, kPageSize, KeyId::slot(1)) == again);
    // Not whole pages, or no key: write() (through the cache).
    std::vector<uint8_t> half(kPageSize / 2, 0x77);
    REQUIRE(f.mc->write_past_cache(page + 16, half, KeyId::slot(1)).has_value());
    CHECK(f.mc->key_has_cached_pages(KeyId::slot(1)));
    CHECK(f.read(page + 16, half.size(), KeyId::slot(1)) == half);
    CHECK(f.mc->write_past_cache(Spa(64ull << 20), plain, KeyId::slot(1)).error() == MemError::OutOfRange);
    CHECK(f.mc->write_past_cache(page, plain, KeyId::slot(3)).error() == MemError::SlotEmpty);
}

TEST_CASE("raw pointers are invalidated when a key takes the page", "[mmu]")
{
    Fixture f;
    Spa page(0x9000);
    std::vector<Spa> heard;
    f.mc->add_invalidation_listener([&](Spa s) { heard.push_back(s); });
    REQUIRE(f.mc->page_pointer(page, KeyId::none(), Access::Write).has_value());
    uint64_t gen = f.mc->generation();
    REQUIRE(f.mc->page_pointer(page, KeyId::slot(1), Access::Read).has_value());
    CHECK(f.mc->generation() != gen);
    REQUIRE_FALSE(heard.empty());
    CHECK(heard.back() == page);
}

TEST_CASE("eviction from a small cache writes dirty pages back", "[mmu]")
{
    Fixture f(64ull << 20, 4);
    for (uint64_t i = 0; i < 32; ++i) {
        std::vector<uint8_t> v(kPageSize, uint8_t(i));
        REQUIRE(f.mc->write(Spa::from_pfn(0x100 + i), v, KeyId::slot(1)).has_value());
    }
    CHECK(f.mc->stats().evictions >= 28);
    for (uint64_t i = 0; i < 32; ++i)
        CHECK(f.read(Spa::from_pfn(0x100 + i), kPageSize, KeyId::slot(1)) == std::vector<uint8_t>(kPageSize, uint8_t(i)));
}

TEST_CASE("unprogrammed and out-of-range slots are refused", "[mmu]")
{
    Fixture f;
    std::vector<uint8_t> buf(16);
    CHECK(f.mc->read(Spa(0), buf, KeyId::slot(3)).error() == MemError::SlotEmpty);
    CHECK(f.mc->write(Spa(0), buf, KeyId::slot(3)).error() == MemError::SlotEmpty);
    CHECK(f.mc->read(Spa(0), buf, KeyId::slot(100000)).error() == MemError::NoSuchSlot);
    CHECK(f.mc->page_pointer(Spa(0), KeyId::slot(7), Access::Read).error() == MemError::SlotEmpty);
    // A cleared slot is empty again, and its cached pages reached DRAM first.
    auto plain = random_bytes(kPageSize, 9);
    REQUIRE(f.mc->write(Spa(0x1000), plain, KeyId::slot(2)).has_value());
    REQUIRE(f.mc->key_slot_port().clear(2).has_value());
    CHECK_FALSE(f.mc->key_has_cached_pages(KeyId::slot(2)));
    CHECK(f.read(Spa(0x1000), kPageSize, KeyId::none()) == openssl_xts_encrypt(f.key2, plain, 1));
    CHECK(f.mc->read(Spa(0x1000), buf, KeyId::slot(2)).error() == MemError::SlotEmpty);
    CHECK(f.mc->key_slot_port().clear(0).error() == MemError::BadKey);
    CHECK(f.mc->key_slot_port().program(1, std::vector<uint8_t>(20, 1)).error() == MemError::BadKey);
}

TEST_CASE("an 8 GiB machine costs nothing until touched", "[mmu]")
{
    MemoryConfig cfg;
    cfg.dram_size = 8ull << 30;
    auto mc = MemoryController::create(cfg);
    REQUIRE(mc.has_value());
    CHECK((*mc)->is_dram(Spa(0x2'0000'0000ull)));
    std::vector<uint8_t> buf(16, 0xaa);
    REQUIRE((*mc)->write(Spa(0x2'3fff'0000ull), buf, KeyId::host()).has_value());
}

TEST_CASE("AES-256 slots (SNP MEM_AES_256_XTS) encrypt with AES-256-XTS", "[mmu]")
{
    Fixture f;
    auto key = random_bytes(64, 12);
    REQUIRE(f.mc->key_slot_port().program(5, key).has_value());
    CHECK(f.mc->slot_key_size(5) == XtsKeySize::Aes256);
    auto plain = random_bytes(kPageSize, 13);
    REQUIRE(f.mc->write(Spa(0x7000), plain, KeyId::slot(5)).has_value());
    CHECK(f.read(Spa(0x7000), kPageSize, KeyId::none()) == openssl_xts_encrypt(key, plain, 7));
}
