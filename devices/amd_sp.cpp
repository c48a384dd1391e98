#include "devices/amd_sp.h"

namespace sevemu::devices {

Result<std::unique_ptr<AmdSp>, AmdSpError> AmdSp::create(mmu::MemoryController& mc, Bus& mmio, IrqLine& irq,
    std::filesystem::path const& platform, CpuModel model, Trace& trace)
{
    return create(mc, mmio, irq, platform, firmware::FirmwareParams::for_model(model), psp_version_for(model), trace);
}

Result<std::unique_ptr<AmdSp>, AmdSpError> AmdSp::create(mmu::MemoryController& mc, Bus& mmio, IrqLine& irq,
    std::filesystem::path const& platform, firmware::FirmwareParams params, PspVersion version, Trace& trace)
{
    std::unique_ptr<AmdSp> sp(new AmdSp(mmio, params, version));
    auto store = firmware::PlatformStore::open(platform);
    if (!store)
        return make_unexpected(AmdSpError { AmdSpError::Kind::Store, store.error().message });
    sp->m_store = std::move(*store);
    sp->m_firmware = std::make_unique<firmware::Firmware>(mc, sp->m_params, *sp->m_store, trace);
    sp->m_mailbox = std::make_unique<PspMailbox>(*sp->m_firmware, version, irq);
    if (!mmio.add(kBar, PspMailbox::kMmioSize, *sp->m_mailbox))
        return make_unexpected(AmdSpError { AmdSpError::Kind::Bar, "the PSP's BAR overlaps another MMIO device" });
    sp->m_mapped = true;
    return sp;
}

AmdSp::~AmdSp()
{
    if (m_mapped)
        m_mmio.remove(*m_mailbox);
}

} // namespace sevemu::devices
