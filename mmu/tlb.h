// sevemu — the software TLB: direct-mapped, no hashing on a hit, mapping a linear page straight
// to a memory-controller page pointer (plaintext for an encrypted page). Entries are tagged by
// the access they allow (read/write/fetch each have their own tag, set only when the walk
// permitted that access at this privilege), one bank per privilege class (supervisor/user),
// and the whole TLB belongs to one (ASID, key) context: switching either flushes it, so SVM/SEV
// later need no redesign. Pages that are not DRAM get no fast tags (MMIO goes the slow way);
// pages holding decoded code get no write tag (writes take the slow path that invalidates code).
#pragma once

#include "base/addr.h"
#include "mmu/memory_controller.h"

#include <array>
#include <bit>
#include <cstdint>
#include <vector>

namespace sevemu::mmu {

// The hit path's part of an entry, 32 bytes (two to a cache line, the banks 256 KiB): every
// guest load/store reads a tag and the host pointer, so the rest (TlbMeta) lives apart. With
// the whole entry in one 56-byte record the TLB spanned 448 KiB and an entry could straddle two
// lines (perf: the TLB entry's load was the hot spot of the memory handlers).
struct alignas(32) TlbEntry {
    static constexpr uint64_t kInvalid = ~0ull;
    uint64_t tag_read { kInvalid };  // linear page number, when reads are allowed
    uint64_t tag_write { kInvalid };
    uint64_t tag_fetch { kInvalid };
    uint8_t* host {};                // page pointer from the memory controller
};
static_assert(sizeof(TlbEntry) == 32);

// The rest of an entry: what fills, flushes and the code cache look at.
struct TlbMeta {
    uint64_t spa_page {};            // SPA of the frame
    uint64_t lpn { TlbEntry::kInvalid }; // linear page number (for INVLPG / global handling)
    KeyId key { KeyId::none() };
    bool global {};
    bool listed {};                  // on the Tlb's used list (internal to Tlb)
};

// An entry being (re)filled: its hot and cold parts.
struct TlbSlot {
    TlbEntry& e;
    TlbMeta& m;
};

// Entries are only ever made through fill(), which records them on a used list: a flush then
// touches the entries the context filled, not the whole array. That keeps a flush (every CR3
// write, INVLPG, world switch) cheap however large N is, and N large enough that a kernel's
// working set (the bzImage decompressor's dictionary, a page-table-heavy boot) stays mapped.
template <size_t N>
class Tlb {
    static_assert((N & (N - 1)) == 0);

public:
    static constexpr size_t kBanks = 2; // 0 = supervisor, 1 = user (CPL 3)
    // Index: the linear page number folded once, so regions a power-of-two apart (stack vs heap,
    // source vs destination of a copy) do not all land on the same entry.
    static size_t index(uint64_t lin) { return ((lin >> kPageShift) ^ (lin >> (kPageShift + std::countr_zero(N)))) & (N - 1); }
    TlbEntry const& entry(unsigned bank, uint64_t lin) const { return m_e[bank][index(lin)]; }
    TlbMeta const& meta(unsigned bank, uint64_t lin) const { return m_m[bank][index(lin)]; }
    // The entry for `lin` in `bank`, to be (re)filled by the caller with the frame `spa_page`.
    TlbSlot fill(unsigned bank, uint64_t lin, uint64_t spa_page)
    {
        size_t k = index(lin);
        TlbMeta& m = m_m[bank][k];
        if (!m.listed) {
            m.listed = true;
            m_used.push_back(uint32_t(bank * N + k));
        }
        note_frame(spa_page);
        return { m_e[bank][k], m };
    }

    void flush_all()
    {
        for (uint32_t u : m_used) {
            at(u) = TlbEntry {};
            meta_at(u) = TlbMeta {};
        }
        m_used.clear();
        m_frames.fill(0);
    }
    void flush_non_global()
    {
        size_t keep = 0;
        m_frames.fill(0);
        for (uint32_t u : m_used) {
            TlbMeta& m = meta_at(u);
            if (m.global && m.lpn != TlbEntry::kInvalid) {
                m_used[keep++] = u;
                note_frame(m.spa_page);
            } else {
                at(u) = TlbEntry {};
                m = TlbMeta {};
            }
        }
        m_used.resize(keep);
    }
    void flush_page(uint64_t lin)
    {
        for (unsigned b = 0; b < kBanks; ++b) {
            size_t k = index(lin);
            if (m_m[b][k].lpn == (lin >> kPageShift))
                clear(uint32_t(b * N + k));
        }
    }
    void flush_spa(uint64_t spa_page)
    {
        if (!may_hold_frame(spa_page))
            return;
        for (uint32_t u : m_used) {
            TlbMeta const& m = meta_at(u);
            if (m.lpn != TlbEntry::kInvalid && m.spa_page == spa_page)
                clear(u);
        }
    }
    void drop_write(uint64_t spa_page)
    {
        if (!may_hold_frame(spa_page))
            return;
        for (uint32_t u : m_used) {
            if (meta_at(u).spa_page == spa_page)
                at(u).tag_write = TlbEntry::kInvalid;
        }
    }

    // The context the entries belong to (ASID 0 = host). set_context flushes on change.
    void set_context(uint32_t asid)
    {
        if (asid != m_asid) {
            flush_all();
            m_asid = asid;
        }
    }
    uint32_t asid() const { return m_asid; }
    // Takes over entries saved for `asid` (the CPU parks each ASID's TLB while another runs).
    void adopt_context(uint32_t asid) { m_asid = asid; }

private:
    TlbEntry& at(uint32_t u) { return m_e[u / N][u % N]; }
    TlbMeta& meta_at(uint32_t u) { return m_m[u / N][u % N]; }
    // A filter over the frames the entries map (a bit per frame number modulo its size, set at
    // fill, rebuilt at flushes): the memory controller's page invalidations and the code
    // cache's write drops name one frame, and most name one this TLB has never mapped.
    static constexpr size_t kFrameBits = 1u << 16;
    void note_frame(uint64_t spa_page)
    {
        uint64_t f = (spa_page >> kPageShift) % kFrameBits;
        m_frames[f / 64] |= 1ull << (f % 64);
    }
    bool may_hold_frame(uint64_t spa_page) const
    {
        uint64_t f = (spa_page >> kPageShift) % kFrameBits;
        return (m_frames[f / 64] >> (f % 64)) & 1;
    }
    void clear(uint32_t u)
    {
        at(u) = TlbEntry {};
        meta_at(u) = TlbMeta {};
        meta_at(u).listed = true; // still on the used list
    }

    std::array<std::array<TlbEntry, N>, kBanks> m_e {};
    std::array<std::array<TlbMeta, N>, kBanks> m_m {};
    std::vector<uint32_t> m_used;
    std::array<uint64_t, kFrameBits / 64> m_frames {};
    uint32_t m_asid {};
};

} // namespace sevemu::mmu
