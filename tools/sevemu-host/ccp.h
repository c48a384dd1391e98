// sevemu-host — a host that talks to the emulated AMD-SP as Linux's ccp driver does
// (drivers/crypto/ccp/sev-dev.c): its own small DRAM, command buffers in a scratch page, the
// PSP mailbox registers written over the MMIO bus. Everything the tool does to the platform
// directory goes through firmware commands; nothing reads the NV store behind the firmware's back.
#pragma once

#include "base/trace.h"
#include "devices/bus.h"
#include "devices/psp_mailbox.h"
#include "firmware/firmware.h"
#include "firmware/platform_store.h"
#include "mmu/memory_controller.h"

#include <cstring>
#include <memory>
#include <string>

namespace sevemu::host {

using namespace sevemu::firmware;

struct HostError {
    std::string message;
};

class Ccp {
public:
    static constexpr uint64_t kMmioBase = 0xFE00'0000ull;
    static constexpr uint64_t kScratch = 0x1000; // the driver's command-buffer page
    static constexpr uint64_t kData = 0x10000;   // blobs (certificates, IDs)

    static constexpr uint64_t kNvBuffer = 0x100000; // INIT_EX's 32 KiB NV buffer (4 KiB aligned)

    // `init_ex`: use INIT_EX with the NV area in host memory, kept in the file DIR/init_ex_nv.bin
    // as Linux's ccp driver keeps it in its init_ex_path file; otherwise INIT (the SPI flash).
    static Result<std::unique_ptr<Ccp>, HostError> open(std::filesystem::path const& platform, CpuModel, Trace&,
        bool init_ex = false);

    // One command with a typed buffer, as __sev_do_cmd_locked: copy in, ring, wait, copy out.
    template <class Buf>
    uint16_t run(CommandId id, Buf& b)
    {
        (void)m_mc->write(Spa(kScratch), std::span(reinterpret_cast<uint8_t const*>(&b), sizeof b), mmu::KeyId::none());
        uint16_t s = ring(uint32_t(id), kScratch);
        (void)m_mc->read(Spa(kScratch), std::span(reinterpret_cast<uint8_t*>(&b), sizeof b), mmu::KeyId::none());
        return s;
    }
    uint16_t run0(CommandId id) { return ring(uint32_t(id), 0); }

    // sev_platform_init: INIT or INIT_EX (retried once on SECURE_DATA_INVALID), WBINVD, DF_FLUSH.
    Result<void, HostError> platform_init();
    // sev_write_init_ex_file: after a command that changes the NV area (INIT_EX, PEK_GEN,
    // PDH_GEN, PEK_CERT_IMPORT, a factory reset) the driver writes the buffer back to its file,
    // atomically. Nothing to do with INIT (the firmware writes its SPI flash itself).
    Result<void, HostError> sync_nv();
    // A factory reset with INIT_EX: AMD-ASPFW does not touch the host's buffer, so the driver erases it.
    Result<void, HostError> erase_init_ex_nv();
    bool uses_init_ex() const { return !m_init_ex_file.empty(); }
    Result<PlatformStatusBuf, HostError> platform_status();

    void put(uint64_t pa, std::span<const uint8_t> data);
    Bytes get(uint64_t pa, size_t n);

    uint32_t feature_register();
    PlatformStore& store() { return *m_store; }
    Firmware& firmware() { return *m_fw; }
    FirmwareParams const& params() const { return m_params; }

private:
    Ccp() = default;
    uint16_t ring(uint32_t cmd, uint64_t buffer);

    FirmwareParams m_params;
    std::unique_ptr<mmu::MemoryController> m_mc;
    std::unique_ptr<PlatformStore> m_store;
    std::unique_ptr<Firmware> m_fw;
    devices::IrqLine m_irq;
    std::unique_ptr<devices::PspMailbox> m_mbox;
    devices::Bus m_bus;
    std::filesystem::path m_init_ex_file;
};

// "SEV command PEK_GEN failed: INVALID_PLATFORM_STATE (0x01)"
std::string command_error(CommandId, uint16_t status);

} // namespace sevemu::host
