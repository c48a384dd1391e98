// sevemu — the AMD Secure Processor's SEV mailbox, as Linux's ccp driver uses it
// (drivers/crypto/ccp/sev-dev.c __sev_do_cmd_locked, sp-pci.c register maps).
//
// An MMIO BusDevice at the PSP function's BAR 2. The host writes the command buffer's physical
// address to CmdBuff_Addr_Lo/Hi, then CmdResp = (cmd << 16) | IOC. The command runs at once
// (synchronously) through the Firmware; CmdResp then reads 0x80000000 | status (bit 31 =
// PSP_CMDRESP_RESP, bits 15:0 = status). With IOC set, P2CMSG_INTSTS bit 1 (SEV_CMD_COMPLETE)
// is set and the interrupt line is raised while INTSTS & INTEN is non-zero; INTSTS is
// write-1-to-clear. After each command the firmware leaves its extended error stack in
// CmdBuff_Addr_Hi:Lo (AMD-ASPFW); sevemu records none, so both read 0.
#pragma once

#include "base/epyc_model.h"
#include "base/state_stream.h"
#include "devices/bus.h"

#include <cstdint>
#include <optional>
#include <string_view>

namespace sevemu::firmware {
class Firmware;
}

namespace sevemu::devices {

// Which register layout (PCI device) the mailbox presents: Linux drivers/crypto/ccp/sp-pci.c sevv1/sevv2.
enum class PspVersion : uint8_t {
    V1, // 1022:1456 (Naples): sevv1/pspv1
    V2, // 1022:1486 (Rome, Milan): sevv2/pspv2
    V4, // 1022:14CA (Genoa): sevv2/pspv4
    V6, // 1022:156E: sevv2/pspv6
};

// The layout of the AMD-SP on a CPU model: the one whose PCI device is the model's
// (base/epyc_model.h psp_pci_device).
PspVersion psp_version_for(CpuModel);

class PspMailbox final : public BusDevice {
public:
    // The one register table (STYLE.md rule 2): offsets within BAR 2 per layout.
    struct Registers {
        uint32_t cmdresp;    // C2PMSG_32 (v1) / base 0x10900 + 4*32 (v2)
        uint32_t cmdbuf_lo;  // C2PMSG_56
        uint32_t cmdbuf_hi;  // C2PMSG_57
        uint32_t feature;    // C2PMSG_63: bit 0 = SEV supported
        uint32_t inten;      // P2CMSG_INTEN
        uint32_t intsts;     // P2CMSG_INTSTS
        uint16_t pci_device; // PCI device ID (vendor 1022)
    };
    static Registers const& registers(PspVersion);

    static constexpr uint64_t kMmioSize = 0x100000; // BAR 2 is 1 MiB
    static constexpr uint32_t kCmdRespResp = 1u << 31;  // PSP_CMDRESP_RESP
    static constexpr uint32_t kCmdRespIoc = 1u << 0;    // interrupt on completion
    static constexpr uint32_t kIntCmdComplete = 1u << 1; // SEV_CMD_COMPLETE
    static constexpr uint32_t kFeatureSev = 1u << 0;

    PspMailbox(firmware::Firmware&, PspVersion, IrqLine& irq);

    std::string_view name() const override { return "psp-mailbox"; }
    uint64_t read(uint64_t offset, unsigned size) override;
    void write(uint64_t offset, unsigned size, uint64_t value) override;

    Registers const& layout() const { return m_regs; }
    uint64_t commands_run() const { return m_commands; }

    // Part of the AMD-SP's snapshot section (devices/amd_sp.h): u32 CmdResp, CmdBuff_Addr_Lo,
    // CmdBuff_Addr_Hi, P2CMSG_INTEN, P2CMSG_INTSTS, u64 commands run. read_state() reads and
    // validates (on failure the reader carries the error); restore() assigns and drives the
    // interrupt line.
    struct SavedState {
        uint32_t cmdresp, cmdbuf_lo, cmdbuf_hi, inten, intsts;
        uint64_t commands;
    };
    void save(StateWriter&) const;
    static std::optional<SavedState> read_state(StateReader&);
    void restore(SavedState const&);
    // Power-on values (registers zero, line low); the command count stays.
    void reset();

private:
    uint32_t read32(uint64_t offset) const;
    void write32(uint64_t offset, uint32_t value);
    void run_command(uint32_t cmdresp);
    void update_irq();

    firmware::Firmware& m_fw;
    Registers const& m_regs;
    IrqLine& m_irq;
    uint32_t m_cmdresp {};
    uint32_t m_cmdbuf_lo {};
    uint32_t m_cmdbuf_hi {};
    uint32_t m_inten {};
    uint32_t m_intsts {};
    uint64_t m_commands {};
};

} // namespace sevemu::devices
