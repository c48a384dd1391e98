#include "devices/psp_mailbox.h"

#include "firmware/firmware.h"

namespace sevemu::devices {

PspMailbox::Registers const& PspMailbox::registers(PspVersion v)
{
    // Linux drivers/crypto/ccp/sp-pci.c sevv1/sevv2 + pspv1/2/4/6.
    static constexpr Registers kV1 { 0x10580, 0x105E0, 0x105E4, 0x105FC, 0x10610, 0x10614, 0x1456 };
    static constexpr Registers kV2 { 0x10980, 0x109E0, 0x109E4, 0x109FC, 0x10690, 0x10694, 0x1486 };
    static constexpr Registers kV4 { 0x10980, 0x109E0, 0x109E4, 0x109FC, 0x10690, 0x10694, 0x14CA };
    static constexpr Registers kV6 { 0x10980, 0x109E0, 0x109E4, 0x109FC, 0x10510, 0x10514, 0x156E };
    switch (v) {
    case PspVersion::V1:
        return kV1;
    case PspVersion::V2:
        return kV2;
    case PspVersion::V4:
        return kV4;
    case PspVersion::V6:
        return kV6;
    }
    return kV2;
}

PspVersion psp_version_for(CpuModel model)
{
    for (PspVersion v : { PspVersion::V1, PspVersion::V2, PspVersion::V4, PspVersion::V6 })
        if (PspMailbox::registers(v).pci_device == cpu_model_info(model).psp_pci_device)
            return v;
    return PspVersion::V2; // unreachable: tests/devices check every model's device is listed above
}

PspMailbox::PspMailbox(firmware::Firmware& fw, PspVersion v, IrqLine& irq)
    : m_fw(fw)
    , m_regs(registers(v))
    , m_irq(irq)
{
}

uint32_t PspMailbox::read32(uint64_t offset) const
{
    if (offset == m_regs.cmdresp)
        return m_cmdresp;
    if (offset == m_regs.cmdbuf_lo)
        return m_cmdbuf_lo;
    if (offset == m_regs.cmdbuf_hi)
        return m_cmdbuf_hi;
    if (offset == m_regs.feature)
        return kFeatureSev;
    if (offset == m_regs.inten)
        return m_inten;
    if (offset == m_regs.intsts)
        return m_intsts;
    return 0; // other PSP registers (TEE ring, doorbells) are not modelled
}

void PspMailbox::write32(uint64_t offset, uint32_t value)
{
    if (offset == m_regs.cmdresp) {
        run_command(value);
    } else if (offset == m_regs.cmdbuf_lo) {
        m_cmdbuf_lo = value;
    } else if (offset == m_regs.cmdbuf_hi) {
        m_cmdbuf_hi = value;
    } else if (offset == m_regs.inten) {
        m_inten = value;
        update_irq();
    } else if (offset == m_regs.intsts) {
        m_intsts &= ~value; // write 1 to clear, as the PSP IRQ handler does
        update_irq();
    }
}

uint64_t PspMailbox::read(uint64_t offset, unsigned size)
{
    if (size == 8)
        return read32(offset) | (uint64_t(read32(offset + 4)) << 32);
    uint32_t aligned = read32(offset & ~3ull);
    uint32_t v = aligned >> (8 * (offset & 3));
    return size >= 4 ? v : v & ((1u << (8 * size)) - 1);
}

void PspMailbox::write(uint64_t offset, unsigned size, uint64_t value)
{
    if (size == 8) {
        write32(offset, uint32_t(value));
        write32(offset + 4, uint32_t(value >> 32));
        return;
    }
    if (size == 4 && (offset & 3) == 0)
        write32(offset, uint32_t(value));
    // Narrower or unaligned writes to mailbox registers are not something the driver does;
    // they are dropped, as the PSP ignores partial writes to its message registers.
}

void PspMailbox::run_command(uint32_t cmdresp)
{
    // Linux puts the command in bits 26:16; AMD-ASPFW decodes 23:16. IDs above 0xFF are unknown
    // commands either way (INVALID_COMMAND).
    uint32_t cmd = (cmdresp >> 16) & 0x7FF;
    bool ioc = cmdresp & kCmdRespIoc;
    uint64_t buffer = (uint64_t(m_cmdbuf_hi) << 32) | m_cmdbuf_lo;
    m_cmdresp = cmdresp & ~kCmdRespResp; // busy while it runs
    uint16_t status = m_fw.execute(cmd, Spa(buffer));
    ++m_commands;
    m_cmdbuf_lo = 0; // no extended error stack recorded
    m_cmdbuf_hi = 0;
    m_cmdresp = kCmdRespResp | status;
    if (ioc) {
        m_intsts |= kIntCmdComplete;
        update_irq();
    }
}

void PspMailbox::update_irq()
{
    bool level = (m_intsts & m_inten) != 0;
    if (level != m_irq.level())
        m_irq.set(level);
}

void PspMailbox::save(StateWriter& w) const
{
    for (uint32_t v : { m_cmdresp, m_cmdbuf_lo, m_cmdbuf_hi, m_inten, m_intsts })
        w.u32(v);
    w.u64(m_commands);
}

std::optional<PspMailbox::SavedState> PspMailbox::read_state(StateReader& r)
{
    SavedState st {};
    st.cmdresp = r.u32(), st.cmdbuf_lo = r.u32(), st.cmdbuf_hi = r.u32(), st.inten = r.u32(), st.intsts = r.u32();
    st.commands = r.u64();
    if (!r.ok())
        return std::nullopt;
    // The firmware runs each command to completion before the write returns, so a saved
    // mailbox is never busy: CmdResp is 0 (never used) or has PSP_CMDRESP_RESP set.
    if (st.cmdresp != 0 && !(st.cmdresp & kCmdRespResp)) {
        r.fail("mailbox: CmdResp shows a command still running");
        return std::nullopt;
    }
    if (st.intsts & ~kIntCmdComplete) {
        r.fail("mailbox: P2CMSG_INTSTS has bits other than SEV_CMD_COMPLETE set");
        return std::nullopt;
    }
    return st;
}

void PspMailbox::restore(SavedState const& st)
{
    m_cmdresp = st.cmdresp, m_cmdbuf_lo = st.cmdbuf_lo, m_cmdbuf_hi = st.cmdbuf_hi, m_inten = st.inten;
    m_intsts = st.intsts;
    m_commands = st.commands;
    m_irq.set((m_intsts & m_inten) != 0);
}

void PspMailbox::reset()
{
    m_cmdresp = m_cmdbuf_lo = m_cmdbuf_hi = m_inten = m_intsts = 0;
    m_irq.set(false);
}

} // namespace sevemu::devices
