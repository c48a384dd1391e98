// sevemu — the SEV side of a Machine: what QEMU's target/i386/sev.c and the host kernel do for
// an SEV guest, built from the same parts a real host has.
//
//   DRAM = [ host reserve (the hypervisor's pages) | guest RAM ]
//   the board's AMD-SP (owned by the Machine, devices/amd_sp.h) behind its PSP mailbox on the
//   machine's host-only MMIO bus, which the guest never reaches
//   HostMemory + PspDriver (Linux's ccp driver) + SevHost + Vm (KVM's SEV interface)
//
// create() runs the launch as QEMU does before the guest first runs: KVM_SEV_INIT,
// LAUNCH_START (with the owner's dh-cert-file and session-file, base64 as QEMU reads them),
// LAUNCH_UPDATE_DATA over exactly the pages the kernel loader wrote (emulator/boot.h; README
// "What a -kernel launch measures": the same scratch load as kernel_launch_digest(), so an
// owner's digest matches), the vCPUs: the BSP in the loader's entry state, the APs (-smp N) in
// INIT's state waiting for their start-up IPI — for SEV-ES (policy bit 2: KVM_SEV_ES_INIT) the
// APs at the measured AP stub instead and every vCPU's VMSA measured and encrypted by
// LAUNCH_UPDATE_VMSA (emulator/sev_launch.h) — then LAUNCH_MEASURE. The guest
// is then in "launch-secret": the QMP SEV commands can read the measurement and inject a secret
// until launch_finish(), which the Machine calls when the guest first runs (QEMU's
// sev_vm_state_change).
//
// Every answer comes from the firmware through the mailbox; nothing is computed on the side.
// Not thread-safe: the Machine calls it on its own thread (QMP handlers post to it).
#pragma once

#include "base/addr.h"
#include "base/encoding.h"
#include "base/result.h"
#include "base/trace.h"
#include "emulator/machine.h"
#include "emulator/machine_config.h"
#include "emulator/sev_launch.h"

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace sevemu::devices {
class AmdSp;
}
namespace sevemu::vmm {
class HostMemory;
class PspDriver;
class SevHost;
class Vm;
class Vcpu;
}

namespace sevemu::emulator {

// One line for QMP (GenericError's desc) or the CLI.
struct SevError {
    std::string message;
};

// QEMU's SevState (qapi/misc-target.json), as QEMU tracks it across the launch.
// Migration adds QEMU's SEV migration series' "send-update" and "receive-update", and sevemu's
// "sent": the source after SEND_FINISH, which can never run again (QUIRKS.md).
enum class SevState : uint8_t { Uninit, LaunchUpdate, LaunchSecret, Running, SendUpdate, ReceiveUpdate, Sent };
std::string_view sev_state_name(SevState); // "uninit", "launch-update", "launch-secret", "running", ...

// query-sev: the platform's API version and build (PLATFORM_STATUS) and the guest's handle,
// policy and state (GUEST_STATUS), read from the firmware at the time of the query.
struct SevInfo {
    uint8_t api_major {}, api_minor {}, build_id {};
    uint32_t handle {}, policy {};
    SevState state { SevState::Uninit };
};

// query-sev-capabilities, as QEMU builds it from /dev/sev: PDH_CERT_EXPORT (the PDH, and the
// PEK, OCA and CEK one after the other), GET_ID, and CPUID 8000_001F.
struct SevCapabilities {
    Bytes pdh;
    Bytes cert_chain;
    Bytes cpu0_id;
    uint32_t cbitpos {};
    uint32_t reduced_phys_bits {};
};

// A KVM_HC_MAP_GPA_RANGE request from the guest (Linux's kvm_para.h): pages made shared or
// private again. sevemu records them and keeps the VM's shared-regions list (vmm::Vm), which
// migration uses; the nested page tables need no change for SEV (the guest's own C-bit picks
// the key).
struct GpaRangeChange {
    uint64_t gpa;
    uint64_t pages;
    uint64_t attributes; // KVM_MAP_GPA_RANGE_* (bit 4: encrypted)
};

class SevRuntime {
public:
    // The hypervisor's share of DRAM, below guest RAM.
    static constexpr uint64_t kHostReserveBase = 1ull << 20;
    static constexpr uint64_t kHostReserveEnd = 64ull << 20;
    static constexpr uint64_t kGuestRamBase = kHostReserveEnd;
    // sevemu keeps guest RAM in one contiguous range below the PCI hole (QUIRKS.md).
    static constexpr uint64_t kMaxGuestRam = 2ull << 30;

    // DRAM size a machine with this much guest RAM needs.
    static uint64_t dram_size(uint64_t guest_ram) { return kGuestRamBase + guest_ram; }
    // Checks the -object sev-guest configuration sevemu can run (before anything is built).
    static Result<void, MachineError> check_config(MachineConfig const&);

    // What the launch reads from the user's files (-kernel, -initrd, dh-cert-file, session-file),
    // read before the platform directory is opened or the firmware asked anything, so that a bad
    // file is reported first.
    struct LaunchInputs {
        LoadedLaunch loaded;
        std::optional<Bytes> dh_cert, session;
    };
    static Result<LaunchInputs, MachineError> read_launch_inputs(MachineConfig const&);

    // Builds the host side over the board's AMD-SP (mapped on host_mmio) and launches the guest
    // up to LAUNCH_MEASURE (see the file comment).
    static Result<std::unique_ptr<SevRuntime>, MachineError> create(MachineConfig const&, LaunchInputs,
        mmu::MemoryController&, devices::AmdSp&, devices::Bus& host_mmio, Trace&);
    ~SevRuntime();
    SevRuntime(SevRuntime const&) = delete;
    SevRuntime& operator=(SevRuntime const&) = delete;

    SevGuestConfig const& config() const { return m_config; }
    SevState state() const { return m_state; }
    std::optional<MultibootBoot> const& boot() const { return m_boot; }
    std::optional<LinuxBoot> const& linux_boot() const { return m_linux_boot; }
    std::vector<E820Entry> const& memory_map() const { return m_memory_map; }
    std::vector<MeasuredRange> const& measured_ranges() const { return m_ranges; }
    uint64_t guest_ram_size() const { return m_ram_size; }
    uint32_t asid() const;

    // --- The QMP SEV commands (QEMU's semantics and error texts).
    Result<SevInfo, SevError> query();
    Result<SevCapabilities, SevError> capabilities();
    // LAUNCH_MEASURE's 48 bytes (measurement then mnonce); from launch-secret on, as QEMU.
    Result<Bytes, SevError> launch_measurement() const;
    // KVM_SEV_LAUNCH_SECRET into guest memory at `gpa`; only in launch-secret.
    Result<void, SevError> inject_launch_secret(std::span<uint8_t const> header, std::span<uint8_t const> secret, uint64_t gpa);
    // KVM_SEV_GET_ATTESTATION_REPORT for a 16-byte mnonce.
    Result<Bytes, SevError> attestation_report(std::span<uint8_t const> mnonce);

    // KVM_SEV_LAUNCH_FINISH; the state becomes "running". Nothing to do when already running.
    Result<void, SevError> launch_finish();

    // --- Live migration (QEMU's out-of-tree SEV migration series, target/i386/sev.c:
    // sev_save_setup, sev_save_outgoing_page, sev_load_incoming_page; emulator/
    // sev_runtime_migration.cpp). The target's PDH, its platform chain (PEK, OCA, CEK) and the
    // AMD chain (ASK, ARK), as QMP migrate-set-sev-info gives them (decoded from base64).
    Result<void, SevError> set_migration_target(Bytes pdh, Bytes plat_cert, Bytes amd_cert);
    bool has_migration_target() const { return !m_target_pdh.empty(); }
    // SEND_START toward the target (the length query, then the call): the 0x80-byte session
    // (wrapped transport keys) for the target's RECEIVE_START. The state becomes "send-update".
    Result<Bytes, SevError> send_start();
    // SEND_UPDATE_DATA of one 4 KiB page of guest RAM: the packet header (packet_header_length()
    // bytes) and the page re-encrypted under the transport key (4096 bytes), into the caller's
    // buffers (the migration stream's record).
    Result<uint32_t, SevError> packet_header_length();
    Result<void, SevError> send_page(uint64_t gpa, std::span<uint8_t> header, std::span<uint8_t> data);
    // SEV-ES, at the stop (the vCPUs never run again on this side unless the migration is
    // cancelled): SEND_UPDATE_VMSA of vCPU `index`'s VMSA page into the caller's buffers (a
    // header of packet_header_length() bytes and a 4096-byte packet).
    bool sev_es() const;
    Result<void, SevError> send_vmsa(size_t index, std::span<uint8_t> header, std::span<uint8_t> data);
    // SEND_FINISH: the source is "sent" and never runs again.
    Result<void, SevError> send_finish();
    // SEND_CANCEL: back to "running" (the migration failed or was cancelled).
    Result<void, SevError> send_cancel();
    // The policy the guest was launched with, and this platform's PDH (the target's
    // RECEIVE_START needs the sender's).
    uint32_t policy() const { return uint32_t(m_config.policy); }
    Result<Bytes, SevError> platform_pdh();

    // The target: a runtime built for an incoming guest (create_incoming) has no launch; it
    // receives the guest with RECEIVE_START (the source's policy, PDH and session),
    // RECEIVE_UPDATE_DATA per private page, and RECEIVE_FINISH (then "running").
    Result<void, SevError> receive_start(uint32_t policy, std::span<uint8_t const> sender_pdh, std::span<uint8_t const> session);
    Result<void, SevError> receive_page(uint64_t gpa, std::span<uint8_t const> header, std::span<uint8_t const> data);
    // SEV-ES: RECEIVE_UPDATE_VMSA into vCPU `index`'s VMSA page (before RECEIVE_FINISH); the
    // vCPU then runs from it.
    Result<void, SevError> receive_vmsa(size_t index, std::span<uint8_t const> header, std::span<uint8_t const> data);
    Result<void, SevError> receive_finish();
    // A shared page arrives in the clear: written as the hypervisor writes it (no key).
    Result<void, SevError> write_shared_page(uint64_t gpa, std::span<uint8_t const> data);
    // KVM_SET_SHARED_PAGES_LIST on the target, from the source's list.
    Result<void, SevError> set_shared_regions(std::span<vmm::kvm_shared_region const>);
    static Result<std::unique_ptr<SevRuntime>, MachineError> create_incoming(MachineConfig const&,
        mmu::MemoryController&, devices::AmdSp&, devices::Bus& host_mmio, Trace&);

    // Guest-physical memory as the hypervisor sees it (through the memory slots, no key):
    // ciphertext for private pages, plaintext for shared ones. False when not all of it is RAM.
    bool read_guest_physical(uint64_t gpa, std::span<uint8_t> out) const;

    vmm::Vm& vm() { return *m_vm; }
    // The hypervisor's vCPUs, one per -smp vCPU (vCPU i has APIC ID i; vCPU 0 is the BSP).
    vmm::Vcpu& vcpu(size_t index = 0) { return *m_vcpus.at(index); }
    size_t vcpu_count() const { return m_vcpus.size(); }
    // The VMM's half of KVM_HC_MAP_GPA_RANGE (the kernel already refused unaligned, empty and
    // wrapping ranges): the attributes must name a page size (4K, 2M, 1G) and nothing but the
    // encryption bit beside it, else -KVM_EINVAL and nothing changes. Returns the guest's RAX.
    uint64_t map_gpa_range(GpaRangeChange);
    // The guest wrote KVM_MIGRATION_READY to MSR_KVM_MIGRATION_CONTROL (QEMU's SEV migration
    // series refuses `migrate` until then: the guest has not reported its shared pages yet).
    bool migration_ready() const;
    std::vector<GpaRangeChange> const& gpa_range_changes() const { return m_gpa_changes; }

private:
    SevRuntime(MachineConfig const&, mmu::MemoryController&, devices::AmdSp&, devices::Bus& host_mmio, Trace&);
    Result<void, MachineError> build_host();
    Result<void, MachineError> launch(LaunchInputs&, uint32_t vcpu_count);
    Result<void, MachineError> create_vcpus(BootEntryState const&, uint32_t count);
    // KVM_SEV_INIT and guest RAM's memory slot (and encrypted region): the part of the launch a
    // migration target also does.
    Result<void, MachineError> init_vm();
    // KVM_MEMORY_ENCRYPT_OP with the command's structure copied in and out of host memory.
    template <class T>
    int encrypt_op(uint32_t id, T* data, uint32_t& fw_error);
    void set_state(SevState);

    SevGuestConfig m_config;
    CpuModel m_model;
    uint64_t m_ram_size;
    mmu::MemoryController& m_mc;
    devices::AmdSp& m_amd_sp;
    // The host's own MMIO space, where the AMD-SP's BAR is: the guest never reaches it (its MMIO
    // exits go to the machine's bus of guest-visible devices).
    devices::Bus& m_host_mmio;
    Trace& m_trace;

    std::unique_ptr<vmm::HostMemory> m_host;
    std::unique_ptr<vmm::PspDriver> m_psp;
    std::unique_ptr<vmm::SevHost> m_sev_host;
    std::unique_ptr<vmm::Vm> m_vm;
    std::vector<std::unique_ptr<vmm::Vcpu>> m_vcpus;

    SevState m_state { SevState::Uninit };
    Bytes m_measurement; // LAUNCH_MEASURE's output (48 bytes)
    std::optional<MultibootBoot> m_boot;
    std::optional<LinuxBoot> m_linux_boot;
    std::vector<E820Entry> m_memory_map;
    std::vector<MeasuredRange> m_ranges;
    std::vector<GpaRangeChange> m_gpa_changes;
    Bytes m_target_pdh, m_target_plat, m_target_amd; // migrate-set-sev-info
    uint32_t m_packet_header_len {};
    // The userspace buffers of SEND/RECEIVE_UPDATE_DATA, kept for the whole migration (QEMU
    // allocates its page and header buffers once too): the kvm structure, the packet header and
    // the packet, a page each.
    std::optional<Spa> m_xfer;
    Result<Spa, SevError> xfer_buffers();
    int xfer_op(uint32_t id, void* data, size_t size, uint32_t& fw_error);
};

} // namespace sevemu::emulator
