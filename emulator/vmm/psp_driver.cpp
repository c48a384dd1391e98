#include "emulator/vmm/psp_driver.h"

#include <cerrno>

namespace sevemu::vmm {

using firmware::CommandId;

Result<PspDriver, int> PspDriver::create(HostMemory& host, devices::Bus& mmio, uint64_t bar_base, devices::PspVersion v)
{
    auto const& regs = devices::PspMailbox::registers(v);
    // Probe as sp-pci.c does: the feature register must answer, with SEV supported.
    auto [feature, claimed] = mmio.read(bar_base + regs.feature, 4);
    if (!claimed || feature == 0xffffffffu || !(feature & devices::PspMailbox::kFeatureSev))
        return make_unexpected(-ENODEV);
    Spa page = TRY(host.alloc_pages(1));
    return PspDriver(host, mmio, bar_base, regs, page);
}

uint32_t PspDriver::buffer_length(CommandId id)
{
    using namespace firmware;
    switch (id) {
    case CommandId::INIT:
        return sizeof(InitBuf);
    case CommandId::INIT_EX:
        return sizeof(InitExBuf);
    case CommandId::PLATFORM_STATUS:
        return sizeof(PlatformStatusBuf);
    case CommandId::PEK_CSR:
        return sizeof(PekCsrBuf);
    case CommandId::PEK_CERT_IMPORT:
        return sizeof(PekCertImportBuf);
    case CommandId::PDH_CERT_EXPORT:
        return sizeof(PdhCertExportBuf);
    case CommandId::GET_ID:
        return sizeof(GetIdBuf);
    case CommandId::DECOMMISSION:
    case CommandId::DEACTIVATE:
    case CommandId::LAUNCH_FINISH:
    case CommandId::SEND_FINISH:
    case CommandId::SEND_CANCEL:
    case CommandId::RECEIVE_FINISH:
        return sizeof(HandleBuf);
    case CommandId::ACTIVATE:
        return sizeof(ActivateBuf);
    case CommandId::ACTIVATE_EX:
        return sizeof(ActivateExBuf);
    case CommandId::GUEST_STATUS:
        return sizeof(GuestStatusBuf);
    case CommandId::COPY:
        return sizeof(CopyBuf);
    case CommandId::LAUNCH_START:
        return sizeof(LaunchStartBuf);
    case CommandId::LAUNCH_UPDATE_DATA:
    case CommandId::LAUNCH_UPDATE_VMSA:
        return sizeof(LaunchUpdateBuf);
    case CommandId::LAUNCH_MEASURE:
        return sizeof(LaunchMeasureBuf);
    case CommandId::LAUNCH_SECRET:
    case CommandId::SEND_UPDATE_DATA:
    case CommandId::SEND_UPDATE_VMSA:
    case CommandId::RECEIVE_UPDATE_DATA:
    case CommandId::RECEIVE_UPDATE_VMSA:
        return sizeof(TransportBuf);
    case CommandId::SEND_START:
        return sizeof(SendStartBuf);
    case CommandId::RECEIVE_START:
        return sizeof(LaunchStartBuf);
    case CommandId::ATTESTATION:
        return sizeof(AttestationBuf);
    case CommandId::DBG_DECRYPT:
    case CommandId::DBG_ENCRYPT:
        return sizeof(DebugBuf);
    default:
        return 0;
    }
}

Result<void, CmdError> PspDriver::do_cmd(CommandId id, std::span<uint8_t> data)
{
    uint32_t len = buffer_length(id);
    if (data.size() < len)
        return make_unexpected(CmdError { -EINVAL, 0 });
    auto& mc = m_host->memory();
    // The driver copies the caller's structure into its own DMA-able page (sev->cmd_buf).
    if (len && !mc.write(m_cmd_page, data.first(len), mmu::KeyId::none()))
        return make_unexpected(CmdError { -EFAULT, 0 });
    uint64_t phys = len ? m_cmd_page.value : 0;
    m_mmio->write(m_bar + m_regs->cmdbuf_lo, 4, uint32_t(phys));
    m_mmio->write(m_bar + m_regs->cmdbuf_hi, 4, uint32_t(phys >> 32));
    m_mmio->write(m_bar + m_regs->cmdresp, 4, (uint32_t(id) << 16) | devices::PspMailbox::kCmdRespIoc);
    // The mailbox runs the command synchronously; a response bit still clear is a dead PSP
    // (Linux marks it dead after psp_cmd_timeout and returns -ETIMEDOUT).
    uint32_t reg = uint32_t(m_mmio->read(m_bar + m_regs->cmdresp, 4).first);
    if (!(reg & devices::PspMailbox::kCmdRespResp))
        return make_unexpected(CmdError { -ETIMEDOUT, 0 });
    // Acknowledge the completion interrupt (write-1-to-clear), as psp_irq_handler does.
    m_mmio->write(m_bar + m_regs->intsts, 4, devices::PspMailbox::kIntCmdComplete);
    // The buffer comes back whatever the status: length queries report through it.
    if (len && !mc.read(m_cmd_page, data.first(len), mmu::KeyId::none()))
        return make_unexpected(CmdError { -EFAULT, 0 });
    uint16_t status = uint16_t(reg & 0xffff);
    if (status)
        return make_unexpected(CmdError { -EIO, status });
    return {};
}

Result<firmware::PlatformStatusBuf, CmdError> PspDriver::platform_status()
{
    firmware::PlatformStatusBuf st {};
    TRY(do_cmd(CommandId::PLATFORM_STATUS, { reinterpret_cast<uint8_t*>(&st), sizeof st }));
    return st;
}

Result<void, CmdError> PspDriver::platform_init(bool sev_es)
{
    auto st = TRY(platform_status());
    if (st.state != uint8_t(firmware::PlatformState::UNINIT))
        return {};
    // SEV-ES needs a TMR: Linux allocates 1 MiB, 1 MiB aligned (SEV_TMR_SIZE), and sets
    // SEV_INIT_FLAGS_SEV_ES.
    firmware::InitBuf init {};
    auto tmr = sev_es ? m_host->alloc_pages((firmware::kTmrSize + firmware::kTmrSize) >> kPageShift) : Result<Spa, int>(make_unexpected(0));
    if (tmr) {
        uint64_t aligned = (tmr->value + firmware::kTmrSize - 1) & ~uint64_t(firmware::kTmrSize - 1);
        init.flags = firmware::kInitFlagEs;
        init.tmr_paddr = aligned;
        init.tmr_length = firmware::kTmrSize;
    }
    TRY(do_cmd(CommandId::INIT, { reinterpret_cast<uint8_t*>(&init), sizeof init }));
    // "Prepare for first SEV guest launch after INIT": WBINVD on all CPUs, then DF_FLUSH
    // (Linux __sev_platform_init_locked).
    m_host->memory().wbinvd();
    return do_cmd(CommandId::DF_FLUSH, {});
}

} // namespace sevemu::vmm
