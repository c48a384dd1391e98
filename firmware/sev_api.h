// sevemu — the SEV-KM command set as the host sees it: command IDs, command-buffer layouts,
// platform and guest states, guest policy bits (SEV-KM API 55766 §5-§6; AMD-ASPFW sev_mcmd.h;
// Linux include/linux/psp-sev.h).
//
// Buffers are packed, size-asserted and named as the spec names them (STYLE.md rule 6). The
// firmware copies the packed size in; AMD-ASPFW copies its naturally aligned size, 0-4 bytes larger,
// and ignores the tail, which Linux's page-sized scratch buffer always provides.
#pragma once

#include "base/epyc_model.h" // CpuModel: the generation fixes the API version and root-key size

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace sevemu::firmware {

// Command IDs (CmdResp[23:16]) — Linux enum sev_cmd = AMD-ASPFW sev_mcmd_id_t.
enum class CommandId : uint8_t {
    INIT = 0x01,
    SHUTDOWN = 0x02,
    PLATFORM_RESET = 0x03, // FACTORY_RESET
    PLATFORM_STATUS = 0x04,
    PEK_GEN = 0x05,
    PEK_CSR = 0x06,
    PEK_CERT_IMPORT = 0x07,
    PDH_CERT_EXPORT = 0x08,
    PDH_GEN = 0x09,
    DF_FLUSH = 0x0A,
    DOWNLOAD_FIRMWARE = 0x0B,
    GET_ID = 0x0C,
    INIT_EX = 0x0D,
    NOP = 0x0E,
    RING_BUFFER = 0x0F,
    DECOMMISSION = 0x20,
    ACTIVATE = 0x21,
    DEACTIVATE = 0x22,
    GUEST_STATUS = 0x23,
    COPY = 0x24,
    ACTIVATE_EX = 0x25,
    LAUNCH_START = 0x30,
    LAUNCH_UPDATE_DATA = 0x31,
    LAUNCH_UPDATE_VMSA = 0x32,
    LAUNCH_MEASURE = 0x33,
    LAUNCH_SECRET = 0x34,
    LAUNCH_FINISH = 0x35,
    ATTESTATION = 0x36,
    SEND_START = 0x40,
    SEND_UPDATE_DATA = 0x41,
    SEND_UPDATE_VMSA = 0x42,
    SEND_FINISH = 0x43,
    SEND_CANCEL = 0x44,
    RECEIVE_START = 0x50,
    RECEIVE_UPDATE_DATA = 0x51,
    RECEIVE_UPDATE_VMSA = 0x52,
    RECEIVE_FINISH = 0x53,
    DBG_DECRYPT = 0x60,
    DBG_ENCRYPT = 0x61,
    SWAP_OUT = 0x70,
    SWAP_IN = 0x71,
};

// Platform state, PLATFORM_STATUS byte 2 (Linux include/linux/psp-sev.h enum sev_state; AMD-ASPFW sev_plat.h).
enum class PlatformState : uint8_t { UNINIT = 0, INIT = 1, WORKING = 2 };
std::string_view platform_state_name(PlatformState);

// Guest state, GUEST_STATUS byte 0x0C (AMD-ASPFW sev_guest.h). UNINIT doubles as "no such guest".
enum class GuestState : uint8_t { UNINIT = 0, LUPDATE = 1, LSECRET = 2, RUNNING = 3, SUPDATE = 4, RUPDATE = 5, SENT = 6 };
std::string_view guest_state_name(GuestState);

// Bit masks of states, for the dispatch table.
constexpr uint8_t state_bit(PlatformState s) { return uint8_t(1u << unsigned(s)); }
constexpr uint8_t state_bit(GuestState s) { return uint8_t(1u << unsigned(s)); }

// Guest policy (Linux include/linux/psp-sev.h SEV_POLICY_*; AMD-ASPFW sev_guest.h).
namespace policy {
inline constexpr uint32_t NODBG = 1u << 0;
inline constexpr uint32_t NOKS = 1u << 1;
inline constexpr uint32_t ES = 1u << 2;
inline constexpr uint32_t NOSEND = 1u << 3;
inline constexpr uint32_t DOMAIN = 1u << 4;
inline constexpr uint32_t SEV = 1u << 5;
inline constexpr uint32_t RESERVED_MASK = 0x0000FFC0u; // bits 6..15 MBZ
constexpr uint8_t api_major(uint32_t p) { return uint8_t(p >> 16); }
constexpr uint8_t api_minor(uint32_t p) { return uint8_t(p >> 24); }
} // namespace policy

// INIT flags (Linux include/linux/psp-sev.h SEV_INIT_FLAGS_SEV_ES) and PLATFORM_STATUS flags.
inline constexpr uint32_t kInitFlagEs = 1u << 0;
inline constexpr uint32_t kStatusOwnerExternal = 1u << 0;
inline constexpr uint32_t kStatusConfigEs = 1u << 0; // in the u16 config at +4 (= Linux flags bit 8)

// Sizes the firmware insists on.
inline constexpr uint32_t kMaxGuests = 1024;           // handles 1..1024
inline constexpr uint32_t kNvSize = 0x8000;            // INIT_EX NV buffer, 32 KiB
inline constexpr uint32_t kTmrSize = 1u << 20;          // SEV-ES TMR, 1 MiB, 1 MiB aligned
inline constexpr uint32_t kVmsaSize = 0x1000;
inline constexpr uint32_t kMeasureSize = 48;            // MEASURE[32] || MNONCE[16]
inline constexpr uint32_t kAttestationReportSize = 0xD0;
inline constexpr uint32_t kGetIdSize = 64;              // per socket
inline constexpr uint32_t kTransportMax = 0x5000;       // AMD-ASPFW LAUNCH_SECRET scratch limit
inline constexpr uint32_t kInitExLength = 0x24;
inline constexpr uint32_t kActivateExLength = 0x18;

#define SEVEMU_OFFSET(T, f, off) static_assert(offsetof(T, f) == (off), #T "::" #f)

// 0x01 INIT
struct [[gnu::packed]] InitBuf {
    uint32_t flags;
    uint32_t reserved_004;
    uint64_t tmr_paddr;
    uint32_t tmr_length;
};
static_assert(sizeof(InitBuf) == 20);
SEVEMU_OFFSET(InitBuf, flags, 0x00);
SEVEMU_OFFSET(InitBuf, reserved_004, 0x04);
SEVEMU_OFFSET(InitBuf, tmr_paddr, 0x08);
SEVEMU_OFFSET(InitBuf, tmr_length, 0x10);

// 0x0D INIT_EX
struct [[gnu::packed]] InitExBuf {
    uint32_t length;
    uint32_t flags;
    uint64_t tmr_paddr;
    uint32_t tmr_length;
    uint32_t reserved_014;
    uint64_t nv_paddr;
    uint32_t nv_length;
};
static_assert(sizeof(InitExBuf) == 0x24);
SEVEMU_OFFSET(InitExBuf, length, 0x00);
SEVEMU_OFFSET(InitExBuf, flags, 0x04);
SEVEMU_OFFSET(InitExBuf, tmr_paddr, 0x08);
SEVEMU_OFFSET(InitExBuf, tmr_length, 0x10);
SEVEMU_OFFSET(InitExBuf, reserved_014, 0x14);
SEVEMU_OFFSET(InitExBuf, nv_paddr, 0x18);
SEVEMU_OFFSET(InitExBuf, nv_length, 0x20);

// 0x04 PLATFORM_STATUS (output only; same bytes as Linux's sev_user_data_status)
struct [[gnu::packed]] PlatformStatusBuf {
    uint8_t api_major;
    uint8_t api_minor;
    uint8_t state;
    uint8_t owner;   // bit 0: externally owned
    uint16_t config; // bit 0: SEV-ES initialised
    uint8_t reserved_006;
    uint8_t build;
    uint32_t guest_count;
};
static_assert(sizeof(PlatformStatusBuf) == 12);
SEVEMU_OFFSET(PlatformStatusBuf, state, 0x02);
SEVEMU_OFFSET(PlatformStatusBuf, owner, 0x03);
SEVEMU_OFFSET(PlatformStatusBuf, config, 0x04);
SEVEMU_OFFSET(PlatformStatusBuf, build, 0x07);
SEVEMU_OFFSET(PlatformStatusBuf, guest_count, 0x08);

// 0x06 PEK_CSR
struct [[gnu::packed]] PekCsrBuf {
    uint64_t csr_paddr;
    uint32_t csr_length;
};
static_assert(sizeof(PekCsrBuf) == 12);
SEVEMU_OFFSET(PekCsrBuf, csr_length, 0x08);

// 0x07 PEK_CERT_IMPORT
struct [[gnu::packed]] PekCertImportBuf {
    uint64_t pek_cert_paddr;
    uint32_t pek_cert_length;
    uint32_t reserved_00c;
    uint64_t oca_cert_paddr;
    uint32_t oca_cert_length;
};
static_assert(sizeof(PekCertImportBuf) == 28);
SEVEMU_OFFSET(PekCertImportBuf, pek_cert_length, 0x08);
SEVEMU_OFFSET(PekCertImportBuf, oca_cert_paddr, 0x10);
SEVEMU_OFFSET(PekCertImportBuf, oca_cert_length, 0x18);

// 0x08 PDH_CERT_EXPORT
struct [[gnu::packed]] PdhCertExportBuf {
    uint64_t pdh_cert_paddr;
    uint32_t pdh_cert_length;
    uint32_t reserved_00c;
    uint64_t certs_paddr;
    uint32_t certs_length;
};
static_assert(sizeof(PdhCertExportBuf) == 28);
SEVEMU_OFFSET(PdhCertExportBuf, pdh_cert_length, 0x08);
SEVEMU_OFFSET(PdhCertExportBuf, certs_paddr, 0x10);
SEVEMU_OFFSET(PdhCertExportBuf, certs_length, 0x18);

// 0x0C GET_ID
struct [[gnu::packed]] GetIdBuf {
    uint64_t id_paddr;
    uint32_t id_length;
};
static_assert(sizeof(GetIdBuf) == 12);
SEVEMU_OFFSET(GetIdBuf, id_length, 0x08);

// 0x20 DECOMMISSION, 0x22 DEACTIVATE, 0x35 LAUNCH_FINISH (and SEND_FINISH/CANCEL, RECEIVE_FINISH)
struct [[gnu::packed]] HandleBuf {
    uint32_t handle;
};
static_assert(sizeof(HandleBuf) == 4);

// 0x21 ACTIVATE
struct [[gnu::packed]] ActivateBuf {
    uint32_t handle;
    uint32_t asid;
};
static_assert(sizeof(ActivateBuf) == 8);
SEVEMU_OFFSET(ActivateBuf, asid, 0x04);

// 0x25 ACTIVATE_EX
struct [[gnu::packed]] ActivateExBuf {
    uint32_t ex_len;
    uint32_t handle;
    uint32_t asid;
    uint32_t numids;
    uint64_t ids_paddr;
};
static_assert(sizeof(ActivateExBuf) == 24);
SEVEMU_OFFSET(ActivateExBuf, handle, 0x04);
SEVEMU_OFFSET(ActivateExBuf, asid, 0x08);
SEVEMU_OFFSET(ActivateExBuf, numids, 0x0C);
SEVEMU_OFFSET(ActivateExBuf, ids_paddr, 0x10);

// 0x23 GUEST_STATUS (AMD-ASPFW writes back its 16-byte padded struct; the packed size is 13)
struct [[gnu::packed]] GuestStatusBuf {
    uint32_t handle;
    uint32_t policy;
    uint32_t asid;
    uint8_t state;
};
static_assert(sizeof(GuestStatusBuf) == 13);
SEVEMU_OFFSET(GuestStatusBuf, policy, 0x04);
SEVEMU_OFFSET(GuestStatusBuf, asid, 0x08);
SEVEMU_OFFSET(GuestStatusBuf, state, 0x0C);

// 0x24 COPY
struct [[gnu::packed]] CopyBuf {
    uint32_t handle;
    uint32_t length;
    uint64_t src_paddr;
    uint64_t dst_paddr;
};
static_assert(sizeof(CopyBuf) == 24);
SEVEMU_OFFSET(CopyBuf, length, 0x04);
SEVEMU_OFFSET(CopyBuf, src_paddr, 0x08);
SEVEMU_OFFSET(CopyBuf, dst_paddr, 0x10);

// 0x30 LAUNCH_START (also RECEIVE_START's layout)
struct [[gnu::packed]] LaunchStartBuf {
    uint32_t handle;
    uint32_t policy;
    uint64_t dh_cert_paddr;
    uint32_t dh_cert_len;
    uint32_t reserved_014;
    uint64_t session_paddr;
    uint32_t session_len;
};
static_assert(sizeof(LaunchStartBuf) == 36);
SEVEMU_OFFSET(LaunchStartBuf, policy, 0x04);
SEVEMU_OFFSET(LaunchStartBuf, dh_cert_paddr, 0x08);
SEVEMU_OFFSET(LaunchStartBuf, dh_cert_len, 0x10);
SEVEMU_OFFSET(LaunchStartBuf, session_paddr, 0x18);
SEVEMU_OFFSET(LaunchStartBuf, session_len, 0x20);

// 0x31 LAUNCH_UPDATE_DATA, 0x32 LAUNCH_UPDATE_VMSA
struct [[gnu::packed]] LaunchUpdateBuf {
    uint32_t handle;
    uint32_t reserved_004;
    uint64_t paddr;
    uint32_t length;
};
static_assert(sizeof(LaunchUpdateBuf) == 20);
SEVEMU_OFFSET(LaunchUpdateBuf, paddr, 0x08);
SEVEMU_OFFSET(LaunchUpdateBuf, length, 0x10);

// 0x33 LAUNCH_MEASURE
struct [[gnu::packed]] LaunchMeasureBuf {
    uint32_t handle;
    uint32_t reserved_004;
    uint64_t measure_paddr;
    uint32_t measure_len;
};
static_assert(sizeof(LaunchMeasureBuf) == 20);
SEVEMU_OFFSET(LaunchMeasureBuf, measure_paddr, 0x08);
SEVEMU_OFFSET(LaunchMeasureBuf, measure_len, 0x10);

// Transport layout: 0x34 LAUNCH_SECRET, SEND_UPDATE_*, RECEIVE_UPDATE_* (Linux include/linux/psp-sev.h
// sev_data_launch_secret, sev_data_send_update_data).
struct [[gnu::packed]] TransportBuf {
    uint32_t handle;
    uint32_t reserved_004;
    uint64_t hdr_paddr;
    uint32_t hdr_len;
    uint32_t reserved_014;
    uint64_t guest_paddr;
    uint32_t guest_len;
    uint32_t reserved_024;
    uint64_t trans_paddr;
    uint32_t trans_len;
};
static_assert(sizeof(TransportBuf) == 52);
SEVEMU_OFFSET(TransportBuf, hdr_paddr, 0x08);
SEVEMU_OFFSET(TransportBuf, hdr_len, 0x10);
SEVEMU_OFFSET(TransportBuf, guest_paddr, 0x18);
SEVEMU_OFFSET(TransportBuf, guest_len, 0x20);
SEVEMU_OFFSET(TransportBuf, trans_paddr, 0x28);
SEVEMU_OFFSET(TransportBuf, trans_len, 0x30);

// 0x40 SEND_START (AMD-ASPFW sev_mcmd.h sev_mcmd_send_start_t = Linux include/linux/psp-sev.h
// sev_data_send_start; SEV API 55766 SEND_START). policy is written back; session_len is the
// length query.
struct [[gnu::packed]] SendStartBuf {
    uint32_t handle;
    uint32_t policy;
    uint64_t pdh_cert_paddr;
    uint32_t pdh_cert_len;
    uint32_t reserved_014;
    uint64_t plat_certs_paddr;
    uint32_t plat_certs_len;
    uint32_t reserved_024;
    uint64_t amd_certs_paddr;
    uint32_t amd_certs_len;
    uint32_t reserved_034;
    uint64_t session_paddr;
    uint32_t session_len;
};
static_assert(sizeof(SendStartBuf) == 68);
SEVEMU_OFFSET(SendStartBuf, policy, 0x04);
SEVEMU_OFFSET(SendStartBuf, pdh_cert_paddr, 0x08);
SEVEMU_OFFSET(SendStartBuf, pdh_cert_len, 0x10);
SEVEMU_OFFSET(SendStartBuf, plat_certs_paddr, 0x18);
SEVEMU_OFFSET(SendStartBuf, plat_certs_len, 0x20);
SEVEMU_OFFSET(SendStartBuf, amd_certs_paddr, 0x28);
SEVEMU_OFFSET(SendStartBuf, amd_certs_len, 0x30);
SEVEMU_OFFSET(SendStartBuf, session_paddr, 0x38);
SEVEMU_OFFSET(SendStartBuf, session_len, 0x40);

// SEND_START's platform certificates: PEK || OCA || CEK (AMD-ASPFW sev_mcmd.c pdh_cert_chain_t, the
// PDH_CERT_EXPORT order).
inline constexpr uint32_t kPlatCertsLen = 3 * 0x824;

// 0x50 RECEIVE_START uses LaunchStartBuf (AMD-ASPFW sev_mcmd_receive_start_t: the same fields, the
// certificate being the SENDER's PDH). SEND_UPDATE_* / RECEIVE_UPDATE_* use TransportBuf: AMD-ASPFW
// sev_mcmd_transport_t has the reserved word after `handle` for VMSA too, where Linux's
// sev_data_send_update_vmsa leaves it out (its hdr_address lands at +4); the firmware's layout wins.

// 0x36 ATTESTATION
struct [[gnu::packed]] AttestationBuf {
    uint32_t handle;
    uint32_t reserved_004;
    uint64_t paddr;
    uint8_t mnonce[16];
    uint32_t length;
};
static_assert(sizeof(AttestationBuf) == 36);
SEVEMU_OFFSET(AttestationBuf, paddr, 0x08);
SEVEMU_OFFSET(AttestationBuf, mnonce, 0x10);
SEVEMU_OFFSET(AttestationBuf, length, 0x20);

// The attestation report (Linux include/linux/psp-sev.h sev_data_attestation_report; virtee/sev
// src/firmware/host/types/sev.rs), 0xD0 bytes.
struct [[gnu::packed]] AttestationReport {
    uint8_t mnonce[16];
    uint8_t launch_digest[32];
    uint32_t policy;
    uint32_t sig_usage;
    uint32_t sig_algo;
    uint32_t reserved_03c;
    uint8_t sig_r[72];
    uint8_t sig_s[72];
};
static_assert(sizeof(AttestationReport) == kAttestationReportSize);
SEVEMU_OFFSET(AttestationReport, launch_digest, 0x10);
SEVEMU_OFFSET(AttestationReport, policy, 0x30);
SEVEMU_OFFSET(AttestationReport, sig_usage, 0x34);
SEVEMU_OFFSET(AttestationReport, reserved_03c, 0x3C);
SEVEMU_OFFSET(AttestationReport, sig_r, 0x40);
SEVEMU_OFFSET(AttestationReport, sig_s, 0x88);
inline constexpr size_t kAttestationSignedBytes = 0x34; // mnonce..policy

// 0x60 DBG_DECRYPT, 0x61 DBG_ENCRYPT
struct [[gnu::packed]] DebugBuf {
    uint32_t handle;
    uint32_t reserved_004;
    uint64_t src_paddr;
    uint64_t dst_paddr;
    uint32_t length;
};
static_assert(sizeof(DebugBuf) == 28);
SEVEMU_OFFSET(DebugBuf, src_paddr, 0x08);
SEVEMU_OFFSET(DebugBuf, dst_paddr, 0x10);
SEVEMU_OFFSET(DebugBuf, length, 0x18);

// 0x0B DOWNLOAD_FIRMWARE (refused: sevemu has no firmware images)
struct [[gnu::packed]] DownloadFirmwareBuf {
    uint64_t fw_paddr;
    uint32_t fw_len;
};
static_assert(sizeof(DownloadFirmwareBuf) == 12);

#undef SEVEMU_OFFSET

} // namespace sevemu::firmware
