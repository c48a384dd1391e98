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
#include <cstdint>

namespace sevemu::mmu {

struct TlbEntry {
    static constexpr uint64_t kInvalid = ~0ull;
    uint64_t tag_read { kInvalid };  // linear page number, when reads are allowed
    uint64_t tag_write { kInvalid };
    uint64_t tag_fetch { kInvalid };
    uint8_t* host {};                // page pointer from the memory controller
    uint64_t spa_page {};            // SPA of the frame
    uint64_t lpn { kInvalid };       // linear page number (for INVLPG / global handling)
    KeyId key { KeyId::none() };
    bool global {};
};

template <size_t N>
class Tlb {
    static_assert((N & (N - 1)) == 0);

public:
    static constexpr size_t kBanks = 2; // 0 = supervisor, 1 = user (CPL 3)
    // Index: the linear page number folded once, so regions a power-of-two apart (stack vs heap,
    // source vs destination of a copy) do not all land on the same entry.
    static size_t index(uint64_t lin) { return ((lin >> kPageShift) ^ (lin >> (kPageShift + 9))) & (N - 1); }
    TlbEntry& entry(unsigned bank, uint64_t lin) { return m_e[bank][index(lin)]; }

    void flush_all()
    {
        for (auto& b : m_e)
            for (auto& e : b)
                e = TlbEntry {};
    }
    void flush_non_global()
    {
        for (auto& b : m_e)
            for (auto& e : b)
                if (!e.global)
                    e = TlbEntry {};
    }
    void flush_page(uint64_t lin)
    {
        for (auto& b : m_e) {
            auto& e = b[index(lin)];
            if (e.lpn == (lin >> kPageShift))
                e = TlbEntry {};
        }
    }
    void flush_spa(uint64_t spa_page)
    {
        for (auto& b : m_e)
            for (auto& e : b)
                if (e.lpn != TlbEntry::kInvalid && e.spa_page == spa_page)
                    e = TlbEntry {};
    }
    void drop_write(uint64_t spa_page)
    {
        for (auto& b : m_e)
            for (auto& e : b)
                if (e.spa_page == spa_page)
                    e.tag_write = TlbEntry::kInvalid;
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
    std::array<std::array<TlbEntry, N>, kBanks> m_e {};
    uint32_t m_asid {};
};

} // namespace sevemu::mmu
