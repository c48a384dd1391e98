#include "emulator/vmm/host_memory.h"

namespace sevemu::vmm {

HostMemory::HostMemory(mmu::MemoryController& mc, Spa base, uint64_t size)
    : m_mc(mc)
    , m_base(base)
    , m_pages(size >> kPageShift)
    , m_used(m_pages, false)
{
}

Result<Spa, int> HostMemory::alloc_pages(uint64_t count)
{
    if (count == 0 || count > m_pages)
        return make_unexpected(-ENOMEM);
    // First fit, from the lowest page that may be free: the SEV migration commands allocate
    // their buffers per page sent (as the kernel's kzalloc per ioctl), so this is on a hot path.
    uint64_t run = 0;
    for (uint64_t i = m_first_free; i < m_pages; ++i) {
        run = m_used[i] ? 0 : run + 1;
        if (run == count) {
            uint64_t first = i + 1 - count;
            for (uint64_t j = first; j <= i; ++j)
                m_used[j] = true;
            while (m_first_free < m_pages && m_used[m_first_free])
                ++m_first_free;
            Spa spa = m_base + (first << kPageShift);
            // Fresh pages are zeroed, as the kernel's __GFP_ZERO allocations are.
            static uint8_t const kZero[kPageSize] {};
            for (uint64_t p = 0; p < count; ++p)
                if (!m_mc.write(spa + (p << kPageShift), kZero, mmu::KeyId::none()))
                    return make_unexpected(-EFAULT);
            return spa;
        }
    }
    return make_unexpected(-ENOMEM);
}

void HostMemory::free_pages(Spa first, uint64_t count)
{
    if (first < m_base)
        return;
    uint64_t index = (first - m_base) >> kPageShift;
    m_first_free = std::min(m_first_free, index);
    for (uint64_t j = index; j < index + count && j < m_pages; ++j)
        m_used[j] = false;
}

uint64_t HostMemory::free_page_count() const
{
    uint64_t n = 0;
    for (bool u : m_used)
        n += !u;
    return n;
}

std::optional<Spa> HostMemory::to_spa(Hva hva, uint64_t len) const
{
    if (hva.value < kDirectMapBase)
        return std::nullopt;
    Spa spa(hva.value - kDirectMapBase);
    if (!m_mc.is_dram(spa, len))
        return std::nullopt;
    return spa;
}

Result<void, int> HostMemory::copy_from(Hva src, std::span<uint8_t> out) const
{
    auto spa = to_spa(src, out.size());
    if (!spa || !m_mc.read(*spa, out, mmu::KeyId::none()))
        return make_unexpected(-EFAULT);
    return {};
}

Result<void, int> HostMemory::copy_to(Hva dst, std::span<uint8_t const> in) const
{
    auto spa = to_spa(dst, in.size());
    if (!spa || !m_mc.write(*spa, in, mmu::KeyId::none()))
        return make_unexpected(-EFAULT);
    return {};
}

} // namespace sevemu::vmm
