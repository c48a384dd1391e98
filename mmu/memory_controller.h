// sevemu — DRAM and the memory controller, the only door to DRAM contents
// (ARCHITECTURE.md rule 2). DRAM holds what the chips would hold: ciphertext for every page
// written under a key. Every reader — CPU, hypervisor, DMA, firmware, pmemsave, migration —
// comes here with an explicit key: a key slot (0 = host SME key, N = ASID N) or none.
//
// Encryption (ARCHITECTURE.md "Memory encryption, precisely"): the 4 KiB page with frame number
// PFN under a slot is AES-XTS(K1, K2) with one 4096-byte data unit and tweak = PFN (128-bit LE).
//
// The plaintext cache holds at most one decrypted copy of a page, tagged with its key. An access
// to that page with another key (or none) first writes the copy back, encrypted — the
// cross-domain coherence Milan and later enforce in hardware (CPUID 8000_001F EAX[10]
// HwEnfCacheCoh). Page pointers handed out on the fast path stay valid until generation()
// changes; invalidation listeners also hear which page went away.
//
// Not thread-safe: one Machine drives it from one thread (multi-vCPU threads are future work).
//
// Snapshots (save_dram / load_dram; the Machine names the section, version kDramStateVersion):
//   u32 range count R, then R × (u64 base, u64 size)   the DRAM layout (ranges(), in order)
//   u8  host key length (32 or 64), then the key        slot 0's key, K1 || K2
//   per range, per 4 KiB page in address order: u8 kind
//        0: the page is all zeros (nothing follows)
//        1: 4096 bytes of DRAM follow, as DRAM holds them
// DRAM is written as the chips hold it — ciphertext for pages written under a key — after the
// plaintext cache is written back, so the stream holds the truth. Slot 0 is the host's SME
// key, which a plain guest uses by turning SME on: pages it wrote with the C-bit are
// ciphertext under it, so the snapshot carries that key, or the restored guest could not read
// them. That is no new exposure: the key belongs to the guest being snapshotted, whose
// plaintext RAM the snapshot holds anyway (treat a snapshot file as you treat its RAM). Slots
// 1.. hold SEV guests' keys, which never leave the AMD-SP: snapshot_blocker() names them and
// the Machine refuses to save.
#pragma once

#include "base/addr.h"
#include "base/result.h"
#include "base/state_stream.h"
#include "mmu/aes_xts.h"

#include <cstdint>
#include <functional>
#include <array>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace sevemu::mmu {

enum class MemError : uint8_t {
    OutOfRange,   // not DRAM (an MMIO hole or beyond the top of memory)
    NoSuchSlot,   // key slot number beyond what the CPU model has
    SlotEmpty,    // the slot holds no key (never programmed, or cleared)
    BadKey,       // key material of the wrong length or shape
    NoMemory,     // the host refused the DRAM mapping
};
std::string_view mem_error_name(MemError);

// Which key an access uses: a key slot, or none (plain DRAM, what a read without the C-bit
// sees when SME is off).
class KeyId {
public:
    static constexpr KeyId none() { return KeyId(kNone); }
    static constexpr KeyId slot(uint32_t n) { return KeyId(n); }
    static constexpr KeyId host() { return KeyId(0); }
    constexpr bool is_none() const { return m_value == kNone; }
    constexpr uint32_t slot_number() const { return m_value; }
    constexpr bool operator==(KeyId const&) const = default;

private:
    static constexpr uint32_t kNone = 0xffffffffu;
    constexpr explicit KeyId(uint32_t v) : m_value(v) {}
    uint32_t m_value;
};

// A contiguous piece of DRAM in the system-physical address map.
struct DramRange {
    Spa base;
    uint64_t size;
    uint64_t host_offset; // where it starts in the host mapping
};

struct MemoryConfig {
    uint64_t dram_size { 256ull << 20 };
    // Number of key slots including slot 0 (host). EPYC-Milan: 509 ASIDs + host.
    uint32_t key_slots { 510 };
    // DRAM above this SPA is moved above 4 GiB, leaving the hole below 4 GiB to MMIO (PC layout).
    uint64_t low_mem_top { 0xC000'0000ull };
    AesPath aes_path { best_aes_path() };
    // Plaintext cache capacity in pages (256 MiB by default).
    uint32_t cache_pages { 65536 };
};

enum class Access : uint8_t { Read, Write };

class KeySlotPort;

class MemoryController {
public:
    static Result<std::unique_ptr<MemoryController>, MemError> create(MemoryConfig const&);
    ~MemoryController();
    MemoryController(MemoryController const&) = delete;
    MemoryController& operator=(MemoryController const&) = delete;

    // --- Layout
    uint64_t dram_size() const { return m_config.dram_size; }
    std::span<DramRange const> ranges() const { return m_ranges; }
    bool is_dram(Spa spa, uint64_t len = 1) const;
    uint32_t key_slot_count() const { return m_config.key_slots; }
    AesPath aes_path() const { return m_config.aes_path; }

    // --- Data: any length, any alignment, may cross pages (each page with the same key).
    Result<void, MemError> read(Spa spa, std::span<uint8_t> out, KeyId key);
    Result<void, MemError> write(Spa spa, std::span<uint8_t const> in, KeyId key);
    // A write from outside the CPU's caches (the AMD-SP's DMA: RECEIVE_UPDATE_DATA): a whole page
    // under a key goes straight to DRAM as ciphertext instead of into the plaintext cache
    // (a cached copy of it is written back and dropped first, a raw pointer to it invalidated);
    // anything else is write(). The bytes every key reads afterwards are write()'s.
    Result<void, MemError> write_past_cache(Spa spa, std::span<uint8_t const> in, KeyId key);

    // --- Fast path for the CPU: a host pointer to the 4 KiB page at `page` as seen with `key`
    // (plaintext for a slot, raw DRAM for none). Valid until generation() changes. A Write
    // access marks the cached copy dirty.
    Result<uint8_t*, MemError> page_pointer(Spa page, KeyId key, Access access);
    uint64_t generation() const { return m_generation; }
    using InvalidationListener = std::function<void(Spa page)>;
    void add_invalidation_listener(InvalidationListener l) { m_listeners.push_back(std::move(l)); }

    // --- Cache maintenance (the firmware's DF_FLUSH / DEACTIVATE rules, WBINVD, CLFLUSH).
    void wbinvd();                      // write back and drop every cached page
    void clflush(Spa spa);              // write back and drop the page holding spa, whatever its key
    void flush_key(KeyId key);          // write back and drop every page cached under key
    bool key_has_cached_pages(KeyId key) const;

    // --- The firmware's narrow door to the key slots.
    KeySlotPort& key_slot_port() { return *m_key_port; }
    bool slot_programmed(uint32_t slot) const;
    XtsKeySize slot_key_size(uint32_t slot) const;

    // --- Snapshots (the file comment has the layout).
    static constexpr uint32_t kDramStateVersion = 1;
    // Why DRAM cannot be saved now, if it cannot: a key slot other than 0 holds a key.
    std::optional<std::string> snapshot_blocker() const;
    // Writes back the plaintext cache, then DRAM and the host key.
    void save_dram(StateWriter&);
    // Validates the whole payload (layout equal to this machine's, kinds, the key, nothing
    // missing) before it changes anything; on failure the reader carries the error and DRAM,
    // the cache and the key slots are as they were. On success every cached page and every
    // page pointer handed out is invalidated (listeners hear each page that had one,
    // generation() changes).
    void load_dram(StateReader&);
    // The live stream's "ram" section (version 2, emulator/machine_state.cpp): the layout and the
    // host key only; the pages travel in "ram-pages" sections. load_dram_layout() checks the
    // layout against this machine's and the key before it changes anything (the error is then
    // on the reader), and on success programs slot 0 with the key.
    static constexpr uint32_t kDramLayoutStateVersion = 2;
    void save_dram_layout(StateWriter&) const;
    void load_dram_layout(StateReader&);

    // --- Dirty-page logging (live migration's pre-copy, emulator/migration.cpp). While it is on,
    // every way a DRAM page gets new contents marks the page in a bitmap: write() (DMA, devices,
    // firmware, loaders, the page-table walker's A/D bits) marks what it writes, and
    // page_pointer(Access::Write) marks the page whose pointer it hands out, because the holder
    // (a vCPU's TLB) then stores through it without coming back. To catch the first store after
    // a sync, sync_dirty_log() (and start_dirty_log()) invalidates every page a write pointer was
    // handed out for since the last one (the listeners drop their TLB entries, as KVM
    // write-protects pages when it clears its dirty log), so the CPU's store path itself is not
    // changed. Bit N of the bitmap is page frame N (SPA >> 12); frames in MMIO holes stay clear.
    void start_dirty_log();
    void stop_dirty_log();
    bool dirty_logging() const { return m_dirty_logging; }
    // The pages marked since the last sync (or the start), and a fresh empty bitmap.
    std::vector<uint64_t> sync_dirty_log();
    uint64_t dirty_page_count() const;
    uint64_t frame_limit() const { return m_frame_limit; } // bitmaps cover frames [0, frame_limit)
    // A page's bytes as DRAM holds them once the plaintext cache is written back (ciphertext
    // for a page cached dirty under a key), without changing the cache. False if not DRAM.
    bool copy_dram_page(uint64_t pfn, std::span<uint8_t, kPageSize> out);
    // Replaces a page's DRAM bytes (raw, as copy_dram_page gave them); null = a zero page.
    // For an incoming machine that has not run (the caller flushes decoded code afterwards).
    bool store_dram_page(uint64_t pfn, uint8_t const* bytes);
    // Backs `pages` DRAM pages from `pfn` up with host memory now (MADV_POPULATE_WRITE), for a
    // caller about to write every one of them (a migration's target): one call instead of a
    // page fault per page. Contents are unchanged; a hint only (an older kernel ignores it).
    void prefault_dram(uint64_t pfn, uint64_t pages);

    // --- Statistics (benchmarks, tests).
    struct Stats {
        uint64_t cache_hits {}, cache_misses {}, writebacks {}, evictions {}, key_switches {};
    };
    Stats const& stats() const { return m_stats; }

private:
    uint8_t read_layout_and_key(StateReader&, std::array<uint8_t, 64>& key, char const* source) const;
    friend class KeySlotPort;
    explicit MemoryController(MemoryConfig const&);
    Result<void, MemError> program_slot(uint32_t slot, std::span<uint8_t const> key);
    Result<void, MemError> clear_slot(uint32_t slot);

    struct CacheEntry {
        KeyId key { KeyId::none() };
        uint32_t frame {}; // index into the cache arena
        bool dirty {};
    };

    uint8_t* dram_page(uint64_t pfn); // nullptr if not DRAM
    Result<XtsCipher const*, MemError> cipher_for(KeyId key) const;
    // `overwrite`: the caller writes the whole page next, so DRAM's old contents are not
    // decrypted into the frame (nor read: a never-touched page stays unmapped until write-back).
    Result<uint8_t*, MemError> cached_page(uint64_t pfn, KeyId key, bool for_write, bool overwrite = false);
    void drop_entry(uint64_t pfn, CacheEntry& e, bool* ok = nullptr);
    void make_raw(uint64_t pfn);
    void invalidate(uint64_t pfn);
    void revoke_raw(uint64_t pfn);
    uint32_t allocate_frame();

    MemoryConfig m_config;
    std::vector<DramRange> m_ranges;
    std::array<uint8_t, 64> m_host_key {}; // slot 0's key (snapshots carry it), m_host_key_len bytes
    uint8_t m_host_key_len {};
    uint8_t* m_dram { nullptr };
    uint64_t m_map_size {};
    std::vector<std::unique_ptr<XtsCipher>> m_slots;
    std::unique_ptr<KeySlotPort> m_key_port;

    // Plaintext cache.
    uint8_t* m_arena { nullptr };
    std::unordered_map<uint64_t, CacheEntry> m_cache;
    std::vector<uint64_t> m_frame_owner; // pfn + 1 per frame, 0 = free
    std::vector<uint32_t> m_free_frames;
    uint32_t m_clock_hand {};
    std::vector<uint64_t> m_raw_exposed; // bitmap: raw pointer handed out for this DRAM page
    // Bitmap: this DRAM page is in m_cache. Page walks read table entries with no key (host and
    // nested tables) at every TLB miss; the bit spares them a hash lookup.
    std::vector<uint64_t> m_cached;
    bool is_cached(uint64_t pfn) const { return (m_cached[pfn / 64] >> (pfn % 64)) & 1; }

    // Dirty-page logging (see start_dirty_log). m_write_exposed: a write pointer was handed out
    // for the page since the last write-protect (kept whether logging is on or not: it is set on
    // page_pointer's slow path only).
    void mark_written(uint64_t pfn)
    {
        if (m_dirty_logging)
            m_dirty[pfn / 64] |= 1ull << (pfn % 64);
    }
    void write_protect_exposed();
    uint64_t m_frame_limit {};
    bool m_dirty_logging { false };
    std::vector<uint64_t> m_dirty;
    std::vector<uint64_t> m_write_exposed;

    uint64_t m_generation { 1 };
    std::vector<InvalidationListener> m_listeners;
    Stats m_stats;
};

// Programs and clears key slots. Held by the firmware (ACTIVATE/DEACTIVATE, SNP_ACTIVATE);
// nothing else in sevemu has a reason to call it. Clearing a slot first writes back and drops
// every cached page of that key.
class KeySlotPort {
public:
    // key = K1 || K2: 32 bytes (AES-128-XTS) or 64 bytes (AES-256-XTS).
    Result<void, MemError> program(uint32_t slot, std::span<uint8_t const> key) { return m_mc.program_slot(slot, key); }
    Result<void, MemError> clear(uint32_t slot) { return m_mc.clear_slot(slot); }

private:
    friend class MemoryController;
    explicit KeySlotPort(MemoryController& mc) : m_mc(mc) {}
    MemoryController& m_mc;
};

} // namespace sevemu::mmu
