#include "devices/amd_sp.h"

#include "devices/state_check.h"

#include <fmt/format.h>

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

void AmdSp::reset() { m_mailbox->reset(); }

std::optional<std::string> AmdSp::snapshot_blocker() const
{
    uint32_t n = m_firmware->guest_count();
    if (n == 0)
        return std::nullopt;
    return "the AMD-SP holds " + std::to_string(n) + " SEV guest context" + (n == 1 ? "" : "s")
        + "; their keys never leave it, so a snapshot cannot carry them";
}

void AmdSp::save(StateWriter& w) const
{
    w.u16(m_mailbox->layout().pci_device);
    w.u8(m_params.api_major);
    w.u8(m_params.api_minor);
    w.u8(m_params.build);
    m_mailbox->save(w);
    w.u8(uint8_t(m_firmware->platform_state()));
    w.u32(m_firmware->guest_count());
}

void AmdSp::load(StateReader& r)
{
    uint16_t device = r.u16();
    uint8_t major = r.u8(), minor = r.u8(), build = r.u8();
    if (!r.ok())
        return;
    if (device != m_mailbox->layout().pci_device)
        return r.fail(fmt::format("the snapshot's AMD-SP is PCI device 1022:{:04X}, this machine's is 1022:{:04X}",
            device, m_mailbox->layout().pci_device));
    if (major != m_params.api_major || minor != m_params.api_minor || build != m_params.build)
        return r.fail(fmt::format("the snapshot's AMD-SP firmware is API {}.{} build {}, this machine's is {}.{} build {}",
            major, minor, build, m_params.api_major, m_params.api_minor, m_params.build));
    auto mailbox = PspMailbox::read_state(r);
    uint8_t state = r.u8();
    uint32_t guests = r.u32();
    if (!read_to_end(r) || !mailbox)
        return;
    if (state > uint8_t(firmware::PlatformState::WORKING))
        return r.fail("platform state " + std::to_string(state) + " is not UNINIT, INIT or WORKING");
    auto saved = firmware::PlatformState(state);
    if (guests != 0)
        return r.fail("the snapshot claims SEV guest contexts (" + std::to_string(guests)
            + "); guest keys never leave the AMD-SP, so no snapshot can carry them");
    if (m_firmware->guest_count() != 0)
        return r.fail("this machine's AMD-SP holds SEV guest contexts; a snapshot cannot replace them");
    if (saved != m_firmware->platform_state())
        return r.fail(fmt::format("the snapshot's AMD-SP firmware is in state {}, this machine's is in {}: the platform "
                                  "state and its keys live in the --platform store, which a snapshot does not carry",
            firmware::platform_state_name(saved), firmware::platform_state_name(m_firmware->platform_state())));
    m_mailbox->restore(*mailbox);
}

} // namespace sevemu::devices
