// sevemu — the guest owner's side of the legacy SEV launch (SEV-KM API 55766 §"Launching a guest";
// AMD-ASPFW sev_cert.c, sev_channel.c, sev_mcmd.c; virtee/sev src/session), as a library the `sevemu-owner`
// tool and the firmware
// tests share. Modelled on `sevctl session / measurement / secret / verify` (virtee/sevctl).
//
// It uses firmware/crypto.h and the certificate code, which implement the spec's formulas for
// both sides, but never the firmware's command handlers: what it checks is what a remote owner
// can check, from certificates and the values QEMU reports.
#pragma once

#include "base/encoding.h"
#include "base/file_io.h"
#include "base/result.h"
#include "firmware/cert_chain.h"
#include "firmware/crypto.h"
#include "firmware/sev_cert.h"

#include <array>
#include <cstdint>
#include <cstddef>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace sevemu::owner {

using firmware::Iv128;
using firmware::Key128;
using firmware::Mac256;
using firmware::Nonce128;
using firmware::Sha256Digest;
using firmware::TransportKeys;

// One clear line for the user (the CLI prints it as "sevemu-owner: <message>").
struct OwnerError {
    std::string message;
};
template <class T>
using OwnerResult = Result<T, OwnerError>;

// ---------------------------------------------------------------------------------------------
// Certificate chain (`sevemu-owner verify-chain DIR`).

// Reads pdh.cert, pek.cert, oca.cert and, when present, cek.cert, ask.cert, ark.cert from `dir`
// (the layout `sevemu-host export --full DIR` writes).
OwnerResult<firmware::SevChain> load_chain_dir(std::filesystem::path const& dir);
// Loads and verifies; with `require_amd`, the AMD part (ARK -> ASK -> CEK) must be present.
OwnerResult<firmware::ChainReport> verify_chain_dir(std::filesystem::path const& dir, bool require_amd = true);

// ---------------------------------------------------------------------------------------------
// Session (`sevemu-owner session`; virtee/sevctl, virtee/sev src/session).

struct Session {
    Bytes godh_cert;    // 0x824 bytes: the guest owner's DH certificate (QEMU dh-cert-file, base64)
    Bytes session_blob; // 0x80 bytes: nonce, wrapped TEK/TIK, MACs (QEMU session-file, base64)
    TransportKeys keys; // TEK and TIK, kept secret by the owner
    uint32_t policy { 0 };
};

// Fixed inputs for known-answer tests; make_session() draws them at random.
struct SessionInputs {
    firmware::PKey godh; // P-384 private key
    Nonce128 nonce {};
    TransportKeys keys;
    Iv128 wrap_iv {};
};

// Checks that `pdh_cert` is a P-384 ECDH PDH certificate (not its signature: verify the chain
// first), then builds the GODH certificate and the session blob bound to `policy`.
OwnerResult<Session> make_session(std::span<const uint8_t> pdh_cert, uint32_t policy);
OwnerResult<Session> make_session(std::span<const uint8_t> pdh_cert, uint32_t policy, SessionInputs const&);

// ---------------------------------------------------------------------------------------------
// Measurement (`sevemu-owner measurement verify`; SEV API 55766, LAUNCH_MEASURE).

inline constexpr size_t kMeasurementSize = 48; // MEASURE[32] || MNONCE[16], as QEMU reports it

struct LaunchMeasurement {
    Mac256 measure {};
    Nonce128 mnonce {};
};
OwnerResult<LaunchMeasurement> parse_measurement(std::span<const uint8_t> bytes);

struct PlatformVersion {
    uint8_t api_major { 0 };
    uint8_t api_minor { 0 };
    uint8_t build { 0 };
};

// The HMAC the firmware should have produced for these inputs.
Mac256 expected_measurement(Key128 const& tik, PlatformVersion, uint32_t policy, Sha256Digest const& launch_digest,
    Nonce128 const& mnonce);
// Ok when the reported measurement matches (constant-time compare); the error says what differs.
OwnerResult<void> verify_measurement(Key128 const& tik, std::span<const uint8_t> measurement, PlatformVersion,
    uint32_t policy, Sha256Digest const& launch_digest);

// ---------------------------------------------------------------------------------------------
// Secret injection (`sevemu-owner secret build`; SEV API 55766, LAUNCH_SECRET).

struct SecretPacket {
    Bytes header;     // 0x34-byte packet header (QEMU sev-inject-launch-secret packet-header, base64)
    Bytes ciphertext; // AES-128-CTR(TEK) of the secret (QEMU secret, base64)
};

// The secret is zero-padded to a multiple of 16 bytes (LAUNCH_SECRET requires it); empty
// secrets are refused. The MAC binds the packet to this launch's measurement.
OwnerResult<SecretPacket> build_secret(Key128 const& tek, Key128 const& tik, std::span<const uint8_t> measurement,
    std::span<const uint8_t> secret);
OwnerResult<SecretPacket> build_secret(Key128 const& tek, Key128 const& tik, std::span<const uint8_t> measurement,
    std::span<const uint8_t> secret, Iv128 const& iv, uint32_t flags = 0);

// ---------------------------------------------------------------------------------------------
// Attestation report (ATTESTATION 0x36, QEMU query-sev-attestation-report; virtee/sev
// src/firmware/host/types/sev.rs).

struct [[gnu::packed]] AttestationReportWire {
    uint8_t mnonce[16];
    uint8_t launch_digest[32];
    uint32_t policy;
    uint32_t sig_usage; // PEK usage 0x1002
    uint32_t sig_algo;  // PEK algo
    uint32_t reserved_03c;
    uint8_t sig_r[72]; // ECDSA by the PEK over SHA-256 of bytes 0x00..0x33, little-endian
    uint8_t sig_s[72];
};
static_assert(sizeof(AttestationReportWire) == 0xD0);
static_assert(offsetof(AttestationReportWire, policy) == 0x30);
static_assert(offsetof(AttestationReportWire, sig_usage) == 0x34);
static_assert(offsetof(AttestationReportWire, reserved_03c) == 0x3C);
static_assert(offsetof(AttestationReportWire, sig_r) == 0x40);
static_assert(offsetof(AttestationReportWire, sig_s) == 0x88);

struct AttestationReport {
    Nonce128 mnonce {};
    Sha256Digest launch_digest {};
    uint32_t policy { 0 };
};

// Verifies the PEK's signature (the PEK certificate should come from a verified chain) and, when
// given, that the report answers this request's mnonce (a replayed old report is refused).
OwnerResult<AttestationReport> verify_attestation_report(std::span<const uint8_t> report,
    firmware::SevCert const& pek, std::optional<Nonce128> expected_mnonce = std::nullopt);

// ---------------------------------------------------------------------------------------------
// Small file helpers shared by the CLI and the tests (base/file_io.h with the owner's error):
// a regular file of at most `max_size` bytes (file_limits::...), and several outputs written
// all or none.
OwnerResult<Bytes> read_file(std::filesystem::path const&, uint64_t max_size);
OwnerResult<void> write_files(std::vector<OutputFile> const&);
// A 16-byte key file (TEK/TIK as `sevctl session` writes them: raw binary).
OwnerResult<Key128> read_key_file(std::filesystem::path const&);

} // namespace sevemu::owner
