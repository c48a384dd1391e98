// sevemu — the host's AMD-SP driver, shaped like Linux's ccp driver
// (drivers/crypto/ccp/sev-dev.c: sev_do_cmd, __sev_do_cmd_locked, __sev_platform_init_locked).
// It owns one page of host DRAM for command buffers, writes the buffer's physical address and
// the command into the mailbox registers over the MMIO bus, waits for CmdResp bit 31 and copies
// the buffer back. No back doors: the firmware sees only what a real driver would give it.
#pragma once

#include "base/addr.h"
#include "base/result.h"
#include "devices/bus.h"
#include "devices/psp_mailbox.h"
#include "emulator/vmm/host_memory.h"
#include "firmware/sev_api.h"

#include <cstdint>
#include <span>

namespace sevemu::vmm {

// What a failed command reports, as the kernel does: a negative errno (-EIO when the firmware
// answered with a non-zero status) and the firmware's status code (0 when it never ran).
struct CmdError {
    int err;
    uint16_t psp_ret;
};

class PspDriver {
public:
    // bar_base: where the PSP function's BAR 2 sits on the MMIO bus.
    static Result<PspDriver, int> create(HostMemory&, devices::Bus& mmio, uint64_t bar_base, devices::PspVersion);

    // Buffer length the driver copies for each command (Linux sev_cmd_buffer_len). 0 = none.
    static uint32_t buffer_length(firmware::CommandId);

    // sev_do_cmd(): data may be empty for commands without a buffer.
    Result<void, CmdError> do_cmd(firmware::CommandId, std::span<uint8_t> data);

    // sev_platform_init(): INIT (SEV-ES enabled) then WBINVD + DF_FLUSH when the platform is
    // UNINIT; nothing otherwise.
    // sev_es: the CPU has SEV-ES (X86_FEATURE_SEV_ES); only then does Linux ask for it (with a
    // TMR), since firmware without SEV-ES (Naples) refuses the flag.
    Result<void, CmdError> platform_init(bool sev_es = true);
    // PLATFORM_STATUS, as sev_get_platform_state() reads it.
    Result<firmware::PlatformStatusBuf, CmdError> platform_status();

    HostMemory& host() { return *m_host; }

private:
    PspDriver(HostMemory& host, devices::Bus& mmio, uint64_t bar_base, devices::PspMailbox::Registers const& regs, Spa cmd_page)
        : m_host(&host), m_mmio(&mmio), m_bar(bar_base), m_regs(&regs), m_cmd_page(cmd_page) {}

    HostMemory* m_host;
    devices::Bus* m_mmio;
    uint64_t m_bar;
    devices::PspMailbox::Registers const* m_regs;
    Spa m_cmd_page;
};

} // namespace sevemu::vmm
