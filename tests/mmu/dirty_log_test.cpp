// The memory controller's dirty-page log (live migration's pre-copy): every write path marks its
// pages while the log is on, a sync hands the set over and write-protects (the holders of write
// pointers hear an invalidation, so their next store comes back and marks again), and the
// migration's page copy and page store.
#include "mmu/memory_controller.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstring>
#include <set>

using namespace sevemu;
using namespace sevemu::mmu;

namespace {

std::unique_ptr<MemoryController> make_mc()
{
    MemoryConfig cfg;
    cfg.dram_size = 4ull << 20;
    cfg.key_slots = 4;
    cfg.cache_pages = 16;
    auto mc = MemoryController::create(cfg);
    REQUIRE(mc.has_value());
    return std::move(*mc);
}

std::set<uint64_t> frames(std::vector<uint64_t> const& bits)
{
    std::set<uint64_t> out;
    for (size_t w = 0; w < bits.size(); ++w)
        for (uint64_t b = bits[w]; b; b &= b - 1)
            out.insert(w * 64 + uint64_t(__builtin_ctzll(b)));
    return out;
}

} // namespace

TEST_CASE("dirty log: off, nothing is marked; on, write() and write pointers mark their pages, reads do not", "[mmu]")
{
    auto mc = make_mc();
    uint8_t bytes[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
    REQUIRE(mc->write(Spa(0x3000), bytes, KeyId::none()));
    CHECK(!mc->dirty_logging());
    CHECK(frames(mc->sync_dirty_log()).empty());

    mc->start_dirty_log();
    CHECK(mc->dirty_logging());
    CHECK(mc->dirty_page_count() == 0);
    REQUIRE(mc->write(Spa(0x5FFC), bytes, KeyId::none()));     // crosses into page 6
    REQUIRE(mc->write(Spa(0x9000), bytes, KeyId::host()));     // under a key (plaintext cache)
    REQUIRE(mc->page_pointer(Spa(0xA000), KeyId::none(), Access::Write));
    REQUIRE(mc->page_pointer(Spa(0xB000), KeyId::host(), Access::Write));
    REQUIRE(mc->page_pointer(Spa(0xC000), KeyId::none(), Access::Read));
    uint8_t out[8];
    REQUIRE(mc->read(Spa(0xD000), out, KeyId::none()));
    CHECK(mc->dirty_page_count() == 5);
    CHECK(frames(mc->sync_dirty_log()) == std::set<uint64_t> { 5, 6, 9, 0xA, 0xB });
    CHECK(mc->dirty_page_count() == 0);
    CHECK(frames(mc->sync_dirty_log()).empty());
    mc->stop_dirty_log();
    REQUIRE(mc->write(Spa(0x3000), bytes, KeyId::none()));
    CHECK(frames(mc->sync_dirty_log()).empty());
}

TEST_CASE("dirty log: start and every sync invalidate the pages write pointers went out for", "[mmu]")
{
    auto mc = make_mc();
    std::vector<uint64_t> heard;
    mc->add_invalidation_listener([&](Spa s) { heard.push_back(s.pfn()); });
    // Handed out before the log starts: the holder would store without asking again.
    REQUIRE(mc->page_pointer(Spa(0x7000), KeyId::none(), Access::Write));
    REQUIRE(mc->page_pointer(Spa(0x8000), KeyId::none(), Access::Read));
    heard.clear();
    mc->start_dirty_log();
    CHECK(heard == std::vector<uint64_t> { 7 });
    heard.clear();
    REQUIRE(mc->page_pointer(Spa(0x7000), KeyId::none(), Access::Write)); // the holder asks again
    REQUIRE(mc->page_pointer(Spa(0x4000), KeyId::none(), Access::Write));
    CHECK(frames(mc->sync_dirty_log()) == std::set<uint64_t> { 4, 7 });
    std::sort(heard.begin(), heard.end());
    CHECK(heard == std::vector<uint64_t> { 4, 7 });
    heard.clear();
    CHECK(frames(mc->sync_dirty_log()).empty());
    CHECK(heard.empty()); // no write pointer went out since
}

TEST_CASE("dirty log: a page's copy is what DRAM holds after write-back, without writing back", "[mmu]")
{
    auto mc = make_mc();
    std::vector<uint8_t> plain(kPageSize, 0x5A);
    REQUIRE(mc->write(Spa(0x2000), plain, KeyId::host())); // cached dirty under the host key
    std::array<uint8_t, kPageSize> before {}, after {};
    REQUIRE(mc->copy_dram_page(2, before));
    CHECK(mc->key_has_cached_pages(KeyId::host())); // still cached
    CHECK(!std::equal(before.begin(), before.end(), plain.begin())); // ciphertext
    mc->clflush(Spa(0x2000));
    REQUIRE(mc->copy_dram_page(2, after));
    CHECK(before == after);
    CHECK(!mc->copy_dram_page(0x10000, after)); // beyond DRAM

    // The target's side: a page stored raw reads back under the key; a zero page is zeros.
    auto dst = make_mc();
    REQUIRE(dst->store_dram_page(2, after.data()));
    std::array<uint8_t, 16> got {};
    // (Different host keys: compare raw DRAM.)
    REQUIRE(dst->read(Spa(0x2000), got, KeyId::none()));
    CHECK(std::equal(got.begin(), got.end(), after.begin()));
    REQUIRE(dst->store_dram_page(2, nullptr));
    REQUIRE(dst->read(Spa(0x2000), got, KeyId::none()));
    CHECK(std::all_of(got.begin(), got.end(), [](uint8_t b) { return b == 0; }));
}
