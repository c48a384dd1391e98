// DRAM in a snapshot (MemoryController::save_dram / load_dram): the layout, the host (SME) key,
// zero pages as one byte, the plaintext cache written back first, and everything invalid
// refused before DRAM changes.
#include "mmu/memory_controller.h"

#include <catch2/catch.hpp>
#include <cstring>
#include <random>

using namespace sevemu;
using namespace sevemu::mmu;

namespace {

using Bytes = std::vector<uint8_t>;

std::unique_ptr<MemoryController> make_mc(uint64_t size, uint64_t low_top, uint32_t slots = 16)
{
    MemoryConfig cfg;
    cfg.dram_size = size;
    cfg.low_mem_top = low_top;
    cfg.key_slots = slots;
    cfg.cache_pages = 64;
    auto mc = MemoryController::create(cfg);
    REQUIRE(mc.has_value());
    return std::move(*mc);
}

Bytes pattern(size_t n, uint64_t seed)
{
    std::mt19937_64 rng(seed);
    Bytes v(n);
    for (auto& b : v)
        b = uint8_t(rng() | 1); // never all zero
    return v;
}

Bytes read(MemoryController& mc, uint64_t spa, size_t n, KeyId key = KeyId::none())
{
    Bytes v(n);
    REQUIRE(mc.read(Spa(spa), v, key).has_value());
    return v;
}

Bytes save(MemoryController& mc)
{
    StateWriter w;
    mc.save_dram(w);
    return w.take();
}

std::string load(MemoryController& mc, Bytes const& payload)
{
    StateReader r("ram", payload);
    mc.load_dram(r);
    auto f = r.finish();
    return f ? std::string() : f.error().message;
}

// All of DRAM as it reads without a key (ciphertext where a key wrote), for "unchanged" checks.
Bytes all_dram(MemoryController& mc)
{
    Bytes all;
    for (auto const& r : mc.ranges()) {
        Bytes part = read(mc, r.base.value, r.size);
        all.insert(all.end(), part.begin(), part.end());
    }
    return all;
}

constexpr uint64_t k4G = 1ull << 32;

} // namespace

TEST_CASE("dram: round trip over two ranges, zero pages elided, an SME page dirty in the cache", "[mmu][state]")
{
    // 8 MiB with the PCI hole at 4 MiB: two ranges, [0, 4 MiB) and [4 GiB, 4 GiB + 4 MiB).
    auto a = make_mc(8ull << 20, 4ull << 20);
    REQUIRE(a->ranges().size() == 2);
    Bytes p1 = pattern(4096, 1), p2 = pattern(5000, 2), secret = pattern(4096, 3);
    REQUIRE(a->write(Spa(0x3000), p1, KeyId::none()).has_value());
    REQUIRE(a->write(Spa(k4G + 0x10000 + 100), p2, KeyId::none()).has_value()); // spans 2 pages
    // A plain guest with SME on writes through the host key (slot 0): the page sits dirty in the
    // plaintext cache, and DRAM still holds the old (zero) bytes until it is written back.
    REQUIRE(a->write(Spa(0x20000), secret, KeyId::host()).has_value());
    REQUIRE(a->key_has_cached_pages(KeyId::host()));
    CHECK(read(*a, 0x3000, 4096) == p1);
    CHECK(!a->snapshot_blocker());

    Bytes payload = save(*a);
    CHECK(!a->key_has_cached_pages(KeyId::host())); // written back first
    Bytes ciphertext = read(*a, 0x20000, 4096);
    CHECK(ciphertext != secret);
    // Layout (4 + 2 × 16), the key (1 + 32), 2048 kind bytes, and 4 raw pages: p1, p2's two
    // pages, and the SME page's ciphertext; the other 2044 pages are one byte each.
    uint64_t pages = (8ull << 20) / 4096;
    CHECK(payload.size() == 4 + 2 * 16 + 1 + 32 + pages + 4 * 4096);

    // A fresh controller has a host key of its own; the snapshot brings the guest's.
    auto b = make_mc(8ull << 20, 4ull << 20);
    CHECK(read(*b, 0x20000, 4096, KeyId::host()) != secret);
    REQUIRE(load(*b, payload).empty());
    CHECK(read(*b, 0x3000, 4096) == p1);
    CHECK(read(*b, k4G + 0x10000 + 100, 5000) == p2);
    CHECK(read(*b, 0x20000, 4096) == ciphertext);
    CHECK(read(*b, 0x20000, 4096, KeyId::host()) == secret);
    CHECK((all_dram(*a) == all_dram(*b)));
    CHECK(save(*b) == payload);
}

TEST_CASE("dram: a load invalidates cached pages and raw page pointers handed out", "[mmu][state]")
{
    auto a = make_mc(4ull << 20, 4ull << 20);
    Bytes p = pattern(4096, 7);
    REQUIRE(a->write(Spa(0x5000), p, KeyId::none()).has_value());
    Bytes payload = save(*a);

    auto b = make_mc(4ull << 20, 4ull << 20);
    std::vector<uint64_t> heard;
    b->add_invalidation_listener([&](Spa s) { heard.push_back(s.value); });
    auto raw = b->page_pointer(Spa(0x5000), KeyId::none(), Access::Read);
    REQUIRE(raw.has_value());
    auto cached = b->page_pointer(Spa(0x9000), KeyId::host(), Access::Write);
    REQUIRE(cached.has_value());
    (*cached)[0] = 0xAB; // dirty plaintext that the load must not let reach DRAM afterwards
    uint64_t gen = b->generation();
    heard.clear();
    REQUIRE(load(*b, payload).empty());
    CHECK(b->generation() != gen);
    CHECK(std::find(heard.begin(), heard.end(), 0x5000) != heard.end());
    CHECK(std::find(heard.begin(), heard.end(), 0x9000) != heard.end());
    CHECK(std::memcmp(*raw, p.data(), 4096) == 0); // the same mapping shows the restored page
    CHECK(!b->key_has_cached_pages(KeyId::host()));
    b->wbinvd();
    CHECK(read(*b, 0x9000, 4096) == Bytes(4096, 0)); // the stale dirty copy never comes back
    CHECK((all_dram(*a) == all_dram(*b)));
}

TEST_CASE("dram: a different layout is refused with both layouts named; DRAM unchanged", "[mmu][state]")
{
    auto a = make_mc(128ull << 20, 0xC000'0000ull);
    Bytes payload = save(*a);
    auto b = make_mc(256ull << 20, 0xC000'0000ull);
    Bytes mark = pattern(4096, 9);
    REQUIRE(b->write(Spa(0x1000), mark, KeyId::none()).has_value());
    CHECK(load(*b, payload) == "RAM layout differs: snapshot has 128 MiB at 0x0, this machine 256 MiB at 0x0");
    CHECK(read(*b, 0x1000, 4096) == mark);
    auto c = make_mc(8ull << 20, 4ull << 20);
    CHECK(load(*c, save(*make_mc(8ull << 20, 2ull << 20)))
        == "RAM layout differs: snapshot has 2 MiB at 0x0 + 6 MiB at 0x100000000, this machine 4 MiB at 0x0 + 4 MiB "
           "at 0x100000000");
}

TEST_CASE("dram: truncated, corrupted and unloadable payloads are refused and change nothing", "[mmu][state]")
{
    auto a = make_mc(1ull << 20, 1ull << 20);
    REQUIRE(a->write(Spa(0x2000), pattern(4096, 4), KeyId::host()).has_value());
    REQUIRE(a->write(Spa(0x7000), pattern(8192, 5), KeyId::none()).has_value());
    Bytes payload = save(*a);
    size_t const header = 4 + 16 + 1 + 32;
    REQUIRE(payload.size() == header + 256 + 3 * 4096);

    auto b = make_mc(1ull << 20, 1ull << 20);
    REQUIRE(b->write(Spa(0x4000), pattern(4096, 6), KeyId::host()).has_value());
    Bytes host_view = read(*b, 0x4000, 4096, KeyId::host());
    b->wbinvd();
    Bytes before = all_dram(*b);
    auto unchanged = [&] {
        CHECK((all_dram(*b) == before));
        CHECK((read(*b, 0x4000, 4096, KeyId::host()) == host_view)); // the host key is still b's
    };
    // Every cut inside the header and the kind bytes, and a spread of cuts through the pages.
    for (size_t n = 0; n < payload.size(); n += (n < header + 300 ? 1 : 401)) {
        Bytes cut(payload.begin(), payload.begin() + long(n));
        INFO("cut to " << n);
        CHECK_FALSE(load(*b, cut).empty());
    }
    CHECK_FALSE(load(*b, Bytes(payload.begin(), payload.end() - 1)).empty());
    unchanged();
    Bytes longer = payload;
    longer.push_back(0);
    CHECK(load(*b, longer).find("trailing") != std::string::npos);
    unchanged();

    auto corrupt = [&](size_t at, uint8_t v) {
        Bytes p = payload;
        p[at] = v;
        return load(*b, p);
    };
    CHECK(corrupt(0, 200).find("ranges") != std::string::npos);   // range count
    CHECK(corrupt(4 + 8, 0x20).find("RAM layout differs") != std::string::npos);
    CHECK(corrupt(20, 31).find("host key of 31 bytes") != std::string::npos);
    // A kind byte that is neither 0 nor 1, in the last page: found before anything is copied.
    Bytes bad_kind = payload;
    size_t kind_8000 = header + 8 + 2 * 4096; // pages 0-7, two of them raw, come before it
    REQUIRE(bad_kind[kind_8000] == 1);
    bad_kind[kind_8000] = 2;
    CHECK(load(*b, bad_kind) == "page at 0x8000: kind 2 is not 0 (zero) or 1 (raw)");
    // K1 == K2 is not an XTS key (IEEE 1619 / SP 800-38E, refused by the cipher).
    Bytes same_halves = payload;
    std::memcpy(same_halves.data() + 21 + 16, same_halves.data() + 21, 16);
    CHECK(load(*b, same_halves) == "host key is not a valid AES-XTS key");
    unchanged();
}

TEST_CASE("dram: an SEV guest's key slot blocks the snapshot and the load", "[mmu][state]")
{
    auto a = make_mc(1ull << 20, 1ull << 20);
    Bytes payload = save(*a);
    auto b = make_mc(1ull << 20, 1ull << 20);
    Bytes key = pattern(32, 8);
    REQUIRE(b->key_slot_port().program(5, key).has_value());
    auto blocker = b->snapshot_blocker();
    REQUIRE(blocker);
    CHECK(*blocker == "memory key slot 5 holds an SEV guest's key (ASID 5); guest keys never leave the AMD-SP, so a "
                      "snapshot cannot carry its memory");
    Bytes before = all_dram(*b);
    CHECK(load(*b, payload).find("key slot 5 is in use") != std::string::npos);
    CHECK((all_dram(*b) == before));
    REQUIRE(b->key_slot_port().clear(5).has_value());
    CHECK(!b->snapshot_blocker());
    CHECK(load(*b, payload).empty());
}
