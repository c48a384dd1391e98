// sevemu — the hypervisor's memory. The built-in hypervisor is host software, and its memory
// is DRAM like everyone else's (ARCHITECTURE.md rule 2): command buffers for the PSP, bounce
// pages, VMCBs, guest RAM. HostMemory hands out pages from a DRAM range reserved for the host
// and gives the hypervisor a direct map, Hva = kDirectMapBase + Spa, as Linux's page_offset_base
// does, so that "user addresses" passed to the KVM-like API name real DRAM.
//
// The host runs without SME on its own pages: host memory is accessed with KeyId::none().
#pragma once

#include "base/addr.h"
#include "base/result.h"
#include "mmu/memory_controller.h"

#include <cerrno>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace sevemu::vmm {

inline constexpr uint64_t kDirectMapBase = 0xffff'8880'0000'0000ull; // Linux x86-64 page_offset_base

inline Hva direct_map(Spa spa) { return Hva(kDirectMapBase + spa.value); }

class HostMemory {
public:
    // [base, base + size) of DRAM belongs to the host allocator; both page aligned.
    HostMemory(mmu::MemoryController&, Spa base, uint64_t size);

    // Errors are negative errno values, as the kernel's allocators report them.
    Result<Spa, int> alloc_pages(uint64_t count);
    void free_pages(Spa first, uint64_t count);
    uint64_t free_page_count() const;

    // Direct-map translation; nullopt for an address that is not DRAM (-EFAULT to callers).
    std::optional<Spa> to_spa(Hva hva, uint64_t len = 1) const;

    // copy_from_user / copy_to_user: -EFAULT when any byte is not mapped.
    Result<void, int> copy_from(Hva src, std::span<uint8_t> out) const;
    Result<void, int> copy_to(Hva dst, std::span<uint8_t const> in) const;

    mmu::MemoryController& memory() const { return m_mc; }

private:
    mmu::MemoryController& m_mc;
    Spa m_base;
    uint64_t m_pages;
    std::vector<bool> m_used;
    uint64_t m_first_free {}; // every page below it is in use: first fit starts its search here
};

} // namespace sevemu::vmm
