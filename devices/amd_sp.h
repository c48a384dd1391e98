// sevemu — the AMD-SP as a part of the board: the platform directory's store (fuses and SPI
// flash), the SEV firmware running on it, and the PSP mailbox that is its only face, mapped at
// the PSP function's BAR 2 on a given MMIO bus. The one assembly that `sevemu` (SevRuntime),
// `sevemu-host` (its Ccp) and the firmware tests build; the host reaches it only through the
// mailbox registers (vmm::PspDriver, Linux's ccp driver shape).
//
// It lives in devices/ because the mailbox is a bus device and devices/ is the lowest library
// that sees both firmware/ and the bus (layering: base → mmu → firmware → devices → cpu → emulator).
//
// Snapshot section "amd-sp", version 1 (devices/device.h):
//   u16 PSP PCI device (the mailbox layout: 1022:1456, 1486, 14CA, 156E)
//   u8 firmware API major, u8 API minor, u8 build
//   mailbox registers (PspMailbox::save: 5 × u32, u64 commands run)
//   u8 platform state (0 UNINIT, 1 INIT, 2 WORKING), u32 guest contexts (always 0)
// What a snapshot may carry of the firmware is only this: the platform's keys (CEK, OCA,
// PEK, PDH) live in the --platform store, and an SEV guest's VEK and transport keys never
// leave the AMD-SP. So saving is refused while any guest context exists (snapshot_blocker()),
// and a load is refused unless this machine's AMD-SP is the same part, in the same platform
// state, with no guest contexts either: the state is checked, not recreated.
#pragma once

#include "base/epyc_model.h"
#include "base/result.h"
#include "base/trace.h"
#include "devices/bus.h"
#include "devices/device.h"
#include "devices/psp_mailbox.h"
#include "firmware/firmware.h"
#include "firmware/platform_store.h"
#include "mmu/memory_controller.h"

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
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

class AmdSp final : public Device {
public:
    // Where the PSP's BAR 2 sits on the MMIO bus: in the PCI hole below 4 GiB, as on a PC.
    static constexpr uint64_t kBar = 0xFE00'0000ull;
    static constexpr uint32_t kStateVersion = 1;

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

    // Device. reset(): the mailbox registers and its line (the firmware's state is the AMD-SP's
    // own: a host system reset does not reset the PSP).
    std::string_view name() const override { return "amd-sp"; }
    void reset() override;
    uint32_t state_version() const override { return kStateVersion; }
    void save(StateWriter&) const override;
    void load(StateReader&) override;
    // Why a snapshot cannot be taken now, if it cannot: the firmware holds SEV guest contexts.
    // The Machine asks before save().
    std::optional<std::string> snapshot_blocker() const;

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
