// The shared-regions list of an SEV VM: what the guest reported through KVM_HC_MAP_GPA_RANGE,
// kept as the SEV live-migration series (v10, arch/x86/kvm/svm/sev.c svm_page_enc_status_hc,
// KVM_GET_SHARED_PAGES_LIST, KVM_SET_SHARED_PAGES_LIST) keeps it: sorted, merged runs of gfns.
// Migration sends the pages of these runs in the clear and every other page through
// SEND_UPDATE_DATA; the target installs the source's list before it runs.
#include "emulator/vmm/vm.h"

#include <algorithm>
#include <cerrno>

namespace sevemu::vmm {

namespace {

// Sorts and merges overlapping or adjacent runs (entries are non-empty and do not wrap).
void normalise(std::vector<kvm_shared_region>& v)
{
    std::sort(v.begin(), v.end(), [](auto const& a, auto const& b) { return a.gfn_start < b.gfn_start; });
    std::vector<kvm_shared_region> out;
    for (auto const& r : v) {
        if (!out.empty() && r.gfn_start <= out.back().gfn_start + out.back().npages) {
            uint64_t end = std::max(out.back().gfn_start + out.back().npages, r.gfn_start + r.npages);
            out.back().npages = end - out.back().gfn_start;
            continue;
        }
        out.push_back(r);
    }
    v = std::move(out);
}

} // namespace

void Vm::map_gpa_range(uint64_t gfn, uint64_t npages, bool encrypted)
{
    if (npages == 0 || gfn + npages < gfn)
        return;
    uint64_t end = gfn + npages;
    // Cut [gfn, end) out of every run, then add it back when it became shared.
    std::vector<kvm_shared_region> out;
    for (auto const& r : m_shared) {
        uint64_t r_end = r.gfn_start + r.npages;
        if (r_end <= gfn || r.gfn_start >= end) {
            out.push_back(r);
            continue;
        }
        if (r.gfn_start < gfn)
            out.push_back({ r.gfn_start, gfn - r.gfn_start });
        if (r_end > end)
            out.push_back({ end, r_end - end });
    }
    if (!encrypted)
        out.push_back({ gfn, npages });
    normalise(out);
    m_shared = std::move(out);
}

bool Vm::is_shared(uint64_t gfn) const
{
    auto it = std::upper_bound(m_shared.begin(), m_shared.end(), gfn,
        [](uint64_t g, kvm_shared_region const& r) { return g < r.gfn_start; });
    if (it == m_shared.begin())
        return false;
    --it;
    return gfn - it->gfn_start < it->npages;
}

int Vm::get_shared_pages_list(kvm_shared_pages_list const& list) const
{
    auto& host = m_host.psp().host();
    if (list.size == 0)
        return -EINVAL;
    uint32_t count = uint32_t(m_shared.size());
    if (!host.copy_to(Hva(list.pnents), { reinterpret_cast<uint8_t const*>(&count), sizeof count }))
        return -EFAULT;
    uint64_t bytes = uint64_t(count) * sizeof(kvm_shared_region);
    if (bytes > list.size)
        return -E2BIG;
    if (bytes && !host.copy_to(Hva(list.buffer), { reinterpret_cast<uint8_t const*>(m_shared.data()), bytes }))
        return -EFAULT;
    return 0;
}

int Vm::set_shared_pages_list(kvm_shared_pages_list const& list)
{
    auto& host = m_host.psp().host();
    uint32_t count = 0;
    if (!host.copy_from(Hva(list.pnents), { reinterpret_cast<uint8_t*>(&count), sizeof count }))
        return -EFAULT;
    if (uint64_t(count) * sizeof(kvm_shared_region) > list.size)
        return -EINVAL;
    std::vector<kvm_shared_region> entries(count);
    if (count && !host.copy_from(Hva(list.buffer), { reinterpret_cast<uint8_t*>(entries.data()), count * sizeof(kvm_shared_region) }))
        return -EFAULT;
    for (auto const& r : entries)
        if (r.npages == 0 || r.gfn_start + r.npages < r.gfn_start)
            return -EINVAL;
    normalise(entries);
    m_shared = std::move(entries);
    return 0;
}

} // namespace sevemu::vmm
