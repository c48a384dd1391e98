// sevemu — the AMD-SP as a part of the board: the platform directory's store (fuses and SPI
// flash), the SEV firmware running on it, and the PSP mailbox that is its only face, mapped at
// the PSP function's BAR 2 on a given MMIO bus. The one assembly that `sevemu` (SevRuntime),
// `sevemu-host` (its Ccp) and the firmware tests build; the host reaches it only through the
// mailbox registers (vmm::PspDriver, Linux's ccp driver shape).
//
// It lives in devices/ because the mailbox is a bus device and devices/ is the lowest library
// that sees both firmware/ and the bus (layering: base → mmu → firmware → devices → cpu → emulator).
#pragma once

#include "base/epyc_model.h"
#include "base/result.h"
#include "base/trace.h"
#include "devices/bus.h"
#include "devices/psp_mailbox.h"
#include "firmware/firmware.h"
#include "firmware/platform_store.h"
#include "mmu/memory_controller.h"

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

namespace sevemu::devices {

struct AmdSpError {
    enum class Kind : uint8_t {
        Store, // the platform directory could not be opened (message: the store's own text)
        Bar,   // the BAR overlaps another device on the MMIO bus
    };
    Kind kind;
    std::string message;
};

class AmdSp {
public:
    // Where the PSP's BAR 2 sits on the MMIO bus: in the PCI hole below 4 GiB, as on a PC.
    static constexpr uint64_t kBar = 0xFE00'0000ull;

    // The part a CPU model has: firmware parameters and PSP generation from base/epyc_model.h.
    static Result<std::unique_ptr<AmdSp>, AmdSpError> create(mmu::MemoryController&, Bus& mmio, IrqLine& irq,
        std::filesystem::path const& platform, CpuModel, Trace&);
    // The same with explicit firmware parameters and PSP generation (tests vary them).
    static Result<std::unique_ptr<AmdSp>, AmdSpError> create(mmu::MemoryController&, Bus& mmio, IrqLine& irq,
        std::filesystem::path const& platform, firmware::FirmwareParams, PspVersion, Trace&);

    // Unmaps the mailbox from the bus; the firmware and the store go with it.
    ~AmdSp();
    AmdSp(AmdSp const&) = delete;
    AmdSp& operator=(AmdSp const&) = delete;

    firmware::FirmwareParams const& params() const { return m_params; }
    PspVersion psp_version() const { return m_version; }
    uint64_t bar() const { return kBar; }
    firmware::PlatformStore& store() { return *m_store; }
    firmware::Firmware& firmware() { return *m_firmware; }
    PspMailbox& mailbox() { return *m_mailbox; }

private:
    AmdSp(Bus& mmio, firmware::FirmwareParams params, PspVersion v) : m_mmio(mmio), m_params(params), m_version(v) {}

    Bus& m_mmio;
    firmware::FirmwareParams m_params;
    PspVersion m_version;
    std::unique_ptr<firmware::PlatformStore> m_store;
    std::unique_ptr<firmware::Firmware> m_firmware;
    std::unique_ptr<PspMailbox> m_mailbox;
    bool m_mapped { false };
};

} // namespace sevemu::devices
