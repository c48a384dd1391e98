// sevemu — the AMD Secure Processor's SEV firmware: the SEV-KM API command set for SEV and
// SEV-ES guests (SEV-KM API 55766; behaviour follows AMD-ASPFW fw/psp_bl_uapps/sev_uapp,
// files sev_mcmd.c, sev_guest.c, sev_plat.c; host side: Linux drivers/crypto/ccp/sev-dev.c).
//
// The host reaches it only through the PSP mailbox (devices/psp_mailbox.h): a command ID and the
// system-physical address of a command buffer in DRAM. The firmware copies the buffer in through
// the memory controller, trusts none of it, writes results back, and changes no state when a
// command fails (every check comes before the first mutation; DF_FLUSH's partial clean-up on
// WBINVD_REQUIRED is the one exception the spec defines).
//
// One table (command_table()) states, per command: ID, name, buffer size, buffer copy mode, the
// platform states and guest states in which it is legal, and the handler. Handlers perform the
// checks in AMD-ASPFW's order and ask the table whether the current state is legal.
//
// Not thread-safe: one Machine (or one tool) drives it from one thread, as the one PSP core does.
#pragma once

#include "base/addr.h"
#include "base/result.h"
#include "base/trace.h"
#include "firmware/crypto.h"
#include "firmware/persistent.h"
#include "firmware/sev_api.h"
#include "firmware/sev_status.h"
#include "mmu/memory_controller.h"

#include <array>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace sevemu::firmware {

class PlatformStore;

// What the firmware knows about the part it runs on. The Machine fills it from the CPU model,
// so that CPUID 8000_001F and the firmware agree (ARCHITECTURE.md rule 1: the firmware does not
// know the CPU, it is told).
struct FirmwareParams {
    // The defaults are the facts of kDefaultModel (base/epyc_model.h); for_model() fills all.
    static constexpr CpuModel kDefaultModel = CpuModel::Milan;
    CpuModel model { kDefaultModel };
    uint8_t api_major { cpu_model_info(kDefaultModel).api_major };
    uint8_t api_minor { cpu_model_info(kDefaultModel).api_minor };
    uint8_t build { cpu_model_info(kDefaultModel).build };
    uint32_t max_asid { cpu_model_info(kDefaultModel).num_encrypted_guests }; // CPUID 8000_001F ECX
    uint32_t min_sev_asid { cpu_model_info(kDefaultModel).min_sev_asid }; // 8000_001F EDX: ASIDs below are SEV-ES
    bool es_supported { cpu_model_has_sev_es(kDefaultModel) };
    // Masked off command-buffer addresses, as AMD-ASPFW masks bit 51.
    uint8_t cbit_position { cpu_model_info(kDefaultModel).c_bit };

    // sevemu's defaults per model (see QUIRKS.md for how they compare with real parts).
    static FirmwareParams for_model(CpuModel);
};

// Copy mode of a command buffer, AMD-ASPFW sev_dispatch.c CMD_BUF_*.
enum class BufMode : uint8_t {
    None,         // no buffer
    In,           // copied in, never written back
    Out,          // written back on success only
    InOut,        // copied in, written back on success only
    InOutOnError, // copied in, written back on success and on INVALID_LEN (length queries)
};

// The identity of a trusted AMD root key: its key ID and SHA-384 of header || pub_exp || modulus
// (AMD-ASPFW amd_cert.c amd_cert_validate_ark, amd_cert_public_key_hash).
struct AmdKeyIdAndHash {
    std::array<uint8_t, 16> key_id {};
    Sha384Digest key_hash {};
};

// Activation of a guest's ASID (AMD-ASPFW sev_guest.c, sev_mcmd.c ACTIVATE; SEV API 55766, ACTIVATE).
enum class Activation : uint8_t { Inactive, Pending, Active };

// Per-ASID state on the (single, modelled) CCX (AMD-ASPFW sev_mcmd.c DF_FLUSH; SEV API 55766, DF_FLUSH).
enum class AsidState : uint8_t { Clean, Dirty, Pending, InUse };
std::string_view asid_state_name(AsidState);

class Firmware {
public:
    Firmware(mmu::MemoryController&, FirmwareParams, PlatformStore&, Trace&);
    ~Firmware();
    Firmware(Firmware const&) = delete;
    Firmware& operator=(Firmware const&) = delete;

    // The mailbox entry point: run command `cmd_id` (CmdResp[23:16]) with the command buffer at
    // `cmd_buffer`; returns the 16-bit status for CmdResp[15:0].
    uint16_t execute(uint32_t cmd_id, Spa cmd_buffer);

    // --- One row of the dispatch table.
    struct CommandInfo {
        CommandId id;
        std::string_view name;
        uint32_t buffer_size;   // packed size copied in/out
        BufMode mode;
        uint8_t platform_states; // bit per PlatformState; 0xff = not checked
        uint8_t guest_states;    // bit per GuestState; 0 = the command names no existing guest
        Result<void, Status> (*run)(Firmware&, std::span<uint8_t> buffer);
    };
    static std::span<CommandInfo const> command_table();
    // The largest command buffer any row of the table copies in or out: execute() copies into a
    // buffer of this size, and command_table() checks every row against it at compile time, so a
    // new command with a larger buffer than SEND_START's 68 bytes (SEV API 55766) is a build error,
    // never an overflow.
    static constexpr uint32_t kMaxCommandBuffer = 68;
    static CommandInfo const* find_command(uint32_t cmd_id);

    // --- Read-only views (tests, tools, the Machine's query-sev).
    PlatformState platform_state() const { return m_state; }
    FirmwareParams const& params() const { return m_params; }
    uint32_t guest_count() const { return m_guest_count; }
    std::optional<GuestState> guest_state(uint32_t handle) const;
    std::optional<uint32_t> guest_asid(uint32_t handle) const;
    AsidState asid_state(uint32_t asid) const;

private:
    struct Guest {
        uint32_t handle {};
        GuestState state { GuestState::UNINIT };
        uint32_t policy {};
        uint32_t asid {}; // 0 = none
        Activation activation { Activation::Inactive };
        std::array<uint8_t, 32> vek {}; // VM encryption key: AES-128-XTS K1 || K2
        bool has_channel {};
        TransportKeys keys {};             // TEK/TIK (TIK all zero without a session: AMD-ASPFW sev_mcmd.c LAUNCH_START)
        Sha256Stream launch_digest;        // GCTX.LD, running
        Sha256Digest ld {};                // LD saved at LAUNCH_MEASURE (ATTESTATION)
        Mac256 measure {};                 // MEASURE saved at LAUNCH_MEASURE (LAUNCH_SECRET)
        // SEND/RECEIVE_UPDATE_*'s cipher and MAC contexts for `keys`, made at the first packet
        // (firmware/cmd_migration.cpp transport_of) and dropped when the channel is erased.
        std::shared_ptr<TransportCrypto> transport;
        bool es() const { return policy & policy::ES; }
        ~Guest();
    };
    struct AsidSlot {
        AsidState state { AsidState::Clean };
        uint32_t owner {}; // guest handle while Pending / InUse
    };
    enum class NvLocation : uint8_t { Spi, Dram };

    template <class Buf, Result<void, Status> (Firmware::*H)(Buf&)>
    static Result<void, Status> thunk(Firmware&, std::span<uint8_t>);
    template <Result<void, Status> (Firmware::*H)()>
    static Result<void, Status> thunk0(Firmware&, std::span<uint8_t>);

    // --- Handlers, one per command (firmware/cmd_platform.cpp, firmware/cmd_guest.cpp,
    // firmware/cmd_migration.cpp).
    Result<void, Status> cmd_init(InitBuf&);
    Result<void, Status> cmd_init_ex(InitExBuf&);
    Result<void, Status> cmd_shutdown();
    Result<void, Status> cmd_platform_reset();
    Result<void, Status> cmd_platform_status(PlatformStatusBuf&);
    Result<void, Status> cmd_pek_gen();
    Result<void, Status> cmd_pek_csr(PekCsrBuf&);
    Result<void, Status> cmd_pek_cert_import(PekCertImportBuf&);
    Result<void, Status> cmd_pdh_cert_export(PdhCertExportBuf&);
    Result<void, Status> cmd_pdh_gen();
    Result<void, Status> cmd_df_flush();
    Result<void, Status> cmd_get_id(GetIdBuf&);
    Result<void, Status> cmd_nop();
    Result<void, Status> cmd_decommission(HandleBuf&);
    Result<void, Status> cmd_activate(ActivateBuf&);
    Result<void, Status> cmd_activate_ex(ActivateExBuf&);
    Result<void, Status> cmd_deactivate(HandleBuf&);
    Result<void, Status> cmd_guest_status(GuestStatusBuf&);
    Result<void, Status> cmd_copy(CopyBuf&);
    Result<void, Status> cmd_launch_start(LaunchStartBuf&);
    Result<void, Status> cmd_launch_update_data(LaunchUpdateBuf&);
    Result<void, Status> cmd_launch_update_vmsa(LaunchUpdateBuf&);
    Result<void, Status> cmd_launch_measure(LaunchMeasureBuf&);
    Result<void, Status> cmd_launch_secret(TransportBuf&);
    Result<void, Status> cmd_launch_finish(HandleBuf&);
    Result<void, Status> cmd_attestation(AttestationBuf&);
    Result<void, Status> cmd_dbg_decrypt(DebugBuf&);
    Result<void, Status> cmd_dbg_encrypt(DebugBuf&);
    // Migration (firmware/cmd_migration.cpp).
    Result<void, Status> cmd_send_start(SendStartBuf&);
    Result<void, Status> cmd_send_update_data(TransportBuf&);
    Result<void, Status> cmd_send_update_vmsa(TransportBuf&);
    Result<void, Status> cmd_send_finish(HandleBuf&);
    Result<void, Status> cmd_send_cancel(HandleBuf&);
    Result<void, Status> cmd_receive_start(LaunchStartBuf&);
    Result<void, Status> cmd_receive_update_data(TransportBuf&);
    Result<void, Status> cmd_receive_update_vmsa(TransportBuf&);
    Result<void, Status> cmd_receive_finish(HandleBuf&);

    // --- Shared steps.
    Result<void, Status> init_common(uint32_t flags, uint64_t tmr_paddr, uint32_t tmr_len, NvLocation, uint64_t nv_paddr);
    Result<void, Status> launch_update(LaunchUpdateBuf&, bool vmsa);
    Result<void, Status> activate_common(Guest&, uint32_t asid);
    Result<void, Status> debug_common(DebugBuf&, bool decrypt);
    // The server side of a transport channel (LAUNCH_START with a session, RECEIVE_START): copies
    // the session and the peer's DH certificate, runs ECDH with our PDH, unwraps TEK/TIK and
    // checks the policy MAC, API version and reserved bits (AMD-ASPFW sev_channel.c
    // sev_channel_open_server, sev_guest.c sev_guest_verify_policy).
    Result<TransportKeys, Status> open_server_channel(uint64_t cert_paddr, uint32_t cert_len, uint64_t session_paddr,
        uint32_t session_len, uint32_t policy);
    // A new guest for LAUNCH_START / RECEIVE_START: key sharing (NOKS), a free handle, the ES
    // platform check; on success the guest exists in `initial` state and the platform is WORKING.
    Result<Guest*, Status> create_guest(uint32_t share_handle, uint32_t policy, TransportKeys const&, bool channel,
        GuestState initial);
    // SEND_START's checks of the target's certificates (AMD-ASPFW sev_mcmd.c validate_platform,
    // validate_domain); `pdh_out` receives the target PDH certificate bytes.
    Result<void, Status> validate_send_target(SendStartBuf const&, Guest const&, Bytes& pdh_out);
    Result<void, Status> send_update(TransportBuf&, bool vmsa);
    Result<void, Status> receive_update(TransportBuf&, bool vmsa);
    // The AMD root key this part trusts (AMD-ASPFW: its generation's root key ID and the fused hash
    // of the ARK public key); sevemu's is the platform directory's test ARK for the model.
    Result<AmdKeyIdAndHash const*, Status> trusted_ark();

    // State checks against the running command's table row.
    Result<void, Status> check_platform_state() const;
    Result<void, Status> check_guest_state(Guest const&) const;
    Result<Guest*, Status> find_guest(uint32_t handle);

    // The ONE place state changes: checks the transition is one the spec defines and traces it.
    void transition(PlatformState to);
    void transition(Guest&, GuestState to);
    void open_for_running(Guest&); // the end of LAUNCH_FINISH and RECEIVE_FINISH
    // `trace` = false for the bulk changes of INIT and DF_FLUSH, which print one summary line.
    void set_asid(uint32_t asid, AsidState to, uint32_t owner, bool trace = true);

    // DRAM access by physical address, the only way the firmware touches host memory. The
    // C-bit is masked (as AMD-ASPFW masks bit 51) and anything outside DRAM is INVALID_ADDRESS.
    Result<uint64_t, Status> check_range(uint64_t paddr, uint64_t len) const;
    Result<void, Status> read_dram(uint64_t paddr, std::span<uint8_t> out, mmu::KeyId key);
    Result<void, Status> write_dram(uint64_t paddr, std::span<uint8_t const> in, mmu::KeyId key);
    // Moves len bytes from src (read with src_key) to dst (written with dst_key), correct for
    // overlapping ranges (inputs are consumed before they are overwritten).
    Result<void, Status> transfer(uint64_t src, mmu::KeyId src_key, uint64_t dst, mmu::KeyId dst_key, uint64_t len);

    // Persistent state (OCA, PEK, PDH) in the NV store: the SPI flash file, or INIT_EX's DRAM buffer.
    Result<void, Status> save_persistent(PersistentState const&);
    Result<PersistentState, Status> generate_oca_pek_pdh(PersistentState base, bool new_oca, bool new_pek, bool new_pdh);

    void note(std::string text);
    // psp.state lines are printed after the command's own "psp" line, so a trace reads as
    // "COMMAND -> STATUS" followed by what it changed.
    void state_trace(std::string line);
    uint32_t effective_max_asid() const;

    mmu::MemoryController& m_mc;
    FirmwareParams m_params;
    PlatformStore& m_store;
    Trace& m_trace;

    PlatformState m_state { PlatformState::UNINIT };
    uint32_t m_config {}; // INIT flags (bit 0 ES), reported in PLATFORM_STATUS
    uint64_t m_tmr_paddr {};
    bool m_tmr_valid {}; // SEV-ES Trusted Memory Region reserved by INIT (AMD-ASPFW sev_mcmd.c sev_mcmd_init_common)
    NvLocation m_nv_location { NvLocation::Spi };
    uint64_t m_nv_paddr {};
    PersistentState m_persistent;
    PKey m_cek;

    std::optional<AmdKeyIdAndHash> m_trusted_ark; // loaded at the first SEND_START that needs it
    std::vector<std::unique_ptr<Guest>> m_guests; // index = handle - 1
    uint32_t m_guest_count {};
    std::vector<AsidSlot> m_asids; // index = ASID

    CommandInfo const* m_current { nullptr }; // the command being executed
    std::string m_note;                       // detail for the trace line
    std::vector<std::string> m_state_lines;   // psp.state lines of the running command
};

} // namespace sevemu::firmware
