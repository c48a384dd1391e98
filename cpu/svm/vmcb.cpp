// sevemu — VMCB / VMSA page images (APM vol 2 Appendix B).
#include "cpu/svm/vmcb.h"

#include <cstring>
#include <type_traits>

namespace sevemu::cpu::svm {

static_assert(std::is_trivially_copyable_v<Vmcb> && std::is_trivially_copyable_v<Vmsa>);

Vmcb vmcb_from_bytes(std::span<uint8_t const, kVmcbSize> bytes)
{
    Vmcb v;
    std::memcpy(&v, bytes.data(), kVmcbSize);
    return v;
}

std::array<uint8_t, kVmcbSize> vmcb_to_bytes(Vmcb const& v)
{
    std::array<uint8_t, kVmcbSize> out;
    std::memcpy(out.data(), &v, kVmcbSize);
    return out;
}

Vmsa vmsa_from_bytes(std::span<uint8_t const, kVmcbSize> bytes)
{
    Vmsa v;
    std::memcpy(&v, bytes.data(), kVmcbSize);
    return v;
}

std::array<uint8_t, kVmcbSize> vmsa_to_bytes(Vmsa const& v)
{
    std::array<uint8_t, kVmcbSize> out;
    std::memcpy(out.data(), &v, kVmcbSize);
    return out;
}

Result<Vmcb, mmu::MemError> read_vmcb(mmu::MemoryController& mc, Spa at, mmu::KeyId key)
{
    std::array<uint8_t, kVmcbSize> b;
    TRY(mc.read(at, b, key));
    return vmcb_from_bytes(b);
}

Result<void, mmu::MemError> write_vmcb(mmu::MemoryController& mc, Spa at, Vmcb const& v, mmu::KeyId key)
{
    auto b = vmcb_to_bytes(v);
    return mc.write(at, b, key);
}

Result<Vmsa, mmu::MemError> read_vmsa(mmu::MemoryController& mc, Spa at, mmu::KeyId key)
{
    std::array<uint8_t, kVmcbSize> b;
    TRY(mc.read(at, b, key));
    return vmsa_from_bytes(b);
}

Result<void, mmu::MemError> write_vmsa(mmu::MemoryController& mc, Spa at, mmu::KeyId key, Vmsa const& v)
{
    auto b = vmsa_to_bytes(v);
    return mc.write(at, b, key);
}

Result<void, mmu::MemError> read_vmcb_range(mmu::MemoryController& mc, Spa at, mmu::KeyId key, VmcbRange r, Vmcb& out)
{
    return mc.read(at + r.offset, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&out) + r.offset, r.length), key);
}

Result<void, mmu::MemError> write_vmcb_range(mmu::MemoryController& mc, Spa at, mmu::KeyId key, VmcbRange r, Vmcb const& v)
{
    return mc.write(at + r.offset, std::span<uint8_t const>(reinterpret_cast<uint8_t const*>(&v) + r.offset, r.length), key);
}

Result<void, mmu::MemError> read_vmsa_used(mmu::MemoryController& mc, Spa at, mmu::KeyId key, Vmsa& out)
{
    return mc.read(at, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&out), kVmsaUsedBytes), key);
}

Result<void, mmu::MemError> write_vmsa_used(mmu::MemoryController& mc, Spa at, mmu::KeyId key, Vmsa const& v)
{
    return mc.write(at, std::span<uint8_t const>(reinterpret_cast<uint8_t const*>(&v), kVmsaUsedBytes), key);
}

} // namespace sevemu::cpu::svm
