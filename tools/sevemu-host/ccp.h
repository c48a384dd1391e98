// sevemu-host — a host that talks to the emulated AMD-SP as Linux's ccp driver does
// (drivers/crypto/ccp/sev-dev.c): its own small DRAM, the AMD-SP as sevemu builds it
// (devices/amd_sp.h) on its own MMIO bus, and the same driver sevemu's hypervisor uses
// (vmm::PspDriver: command buffers in its page, the mailbox registers written over the bus).
// What is left here is the tool's own part of the driver: INIT_EX's NV file (init_ex_path),
// sync_nv, and the blob area. Everything the tool does to the platform directory goes through
// firmware commands; nothing reads the NV store behind the firmware's back.
#pragma once

#include "base/trace.h"
#include "devices/amd_sp.h"
#include "devices/bus.h"
#include "emulator/vmm/host_memory.h"
#include "emulator/vmm/psp_driver.h"
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
    static constexpr uint64_t kScratch = 0x1000; // the driver's command-buffer page (its HostMemory)
    static constexpr uint64_t kData = 0x10000;   // blobs (certificates, IDs)

    static constexpr uint64_t kNvBuffer = 0x100000; // INIT_EX's 32 KiB NV buffer (4 KiB aligned)

    // `init_ex`: use INIT_EX with the NV area in host memory, kept in the file DIR/init_ex_nv.bin
    // as Linux's ccp driver keeps it in its init_ex_path file; otherwise INIT (the SPI flash).
    static Result<std::unique_ptr<Ccp>, HostError> open(std::filesystem::path const& platform, CpuModel, Trace&,
        bool init_ex = false);

    // One command with a typed buffer through the driver (sev_do_cmd: copy in, ring, wait, copy
    // out): the firmware's status, or an error when the driver itself failed (no status).
    template <class Buf>
    Result<uint16_t, HostError> status_of(CommandId id, Buf& b)
    {
        return command(id, { reinterpret_cast<uint8_t*>(&b), sizeof b });
    }
    // The same, with a non-zero status as command_error()'s message.
    template <class Buf>
    Result<void, HostError> run(CommandId id, Buf& b)
    {
        return succeed(id, TRY(status_of(id, b)));
    }
    Result<void, HostError> run0(CommandId id) { return succeed(id, TRY(command(id, {}))); }

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
    PlatformStore& store() { return m_sp->store(); }
    Firmware& firmware() { return m_sp->firmware(); }
    FirmwareParams const& params() const { return m_sp->params(); }

private:
    Ccp() = default;
    Result<uint16_t, HostError> command(CommandId, std::span<uint8_t> data);
    static Result<void, HostError> succeed(CommandId id, uint16_t status);

    // Declared in construction order; destroyed in reverse (the driver before the AMD-SP, the
    // AMD-SP before its bus and DRAM).
    std::unique_ptr<mmu::MemoryController> m_mc;
    devices::IrqLine m_irq;
    devices::Bus m_bus;
    std::unique_ptr<devices::AmdSp> m_sp;
    std::unique_ptr<vmm::HostMemory> m_host;
    std::unique_ptr<vmm::PspDriver> m_driver;
    std::filesystem::path m_init_ex_file;
};

// "SEV command PEK_GEN failed: INVALID_PLATFORM_STATE (0x01)"
std::string command_error(CommandId, uint16_t status);

} // namespace sevemu::host
