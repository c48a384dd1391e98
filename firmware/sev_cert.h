// sevemu — the 0x824-byte SEV certificate (SEV-KM API 55766 appendix "SEV certificate format";
// AMD-ASPFW sev_cert.h/.c, sev-tool src/sevcert.cpp, virtee/sev src/certs/sev/sev/cert/v1).
//
// SevCert keeps the exact 0x824 wire bytes and offers typed accessors, so parse -> serialize is
// byte-identical and a signature always covers exactly what was received. Two ways in:
//   SevCert::parse      full validation of the body and of both signature slots (tools, tests);
//   SevCert::from_bytes size only; the firmware then calls sev_cert_validate(), which follows
//                       AMD-ASPFW sev_cert_validate's check order and error codes (sev_cert.c) exactly.
#pragma once

#include "base/encoding.h"
#include "base/result.h"
#include "firmware/crypto.h"

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace sevemu::firmware {

class AmdCert;

// Key usage codes (AMD-ASPFW sev_cert.h; virtee/sev src/certs/sev/sev/cert/v1). ARK and ASK appear only as
// signer usages in SEV certificates.
enum class SevUsage : uint32_t {
    ARK = 0x0000,
    ASK = 0x0013,
    Invalid = 0x1000, // an empty signature slot
    OCA = 0x1001,
    PEK = 0x1002,
    PDH = 0x1003,
    CEK = 0x1004,
};
// Algorithm codes (AMD-ASPFW sev_cert.h; virtee/sev src/certs/sev/sev/cert/v1).
enum class SevAlgo : uint32_t {
    Invalid = 0x000,
    RSA_SHA256 = 0x001,
    ECDSA_SHA256 = 0x002,
    ECDH_SHA256 = 0x003,
    RSA_SHA384 = 0x101,
    ECDSA_SHA384 = 0x102,
    ECDH_SHA384 = 0x103,
};
enum class EcCurve : uint32_t { P256 = 1, P384 = 2 };

std::optional<SevUsage> sev_usage_from(uint32_t);
std::optional<SevAlgo> sev_algo_from(uint32_t);
std::string_view sev_usage_name(SevUsage);
std::string_view sev_algo_name(SevAlgo);
bool sev_algo_is_rsa(SevAlgo);
bool sev_algo_is_ecdsa(SevAlgo);
bool sev_algo_is_ecdh(SevAlgo);
HashAlgo sev_algo_hash(SevAlgo); // SHA-256 for 0x00x, SHA-384 for 0x10x

// Why a certificate was refused. cert_error_status() maps each to the SEV status AMD-ASPFW returns.
enum class CertError : uint8_t {
    BadSize,         // not exactly the format's size
    BadVersion,      // version != 1
    BadUsage,        // unknown usage code, or one this certificate kind cannot have
    BadAlgo,         // unknown algorithm code, or one that does not fit the usage / key
    BadCurve,        // EC curve other than P-384
    BadKeySize,      // RSA modulus / exponent size not supported
    BadPoint,        // EC point not on the curve (invalid-curve attack on ECDH/ECDSA)
    ReservedNonZero, // a reserved field is not zero
    HalfEmptySlot,   // exactly one of a slot's usage/algo is INVALID (AMD-ASPFW: BAD_SIGNATURE)
    NoMatchingSlot,  // no signature slot names the signer's usage and algorithm
    BadSignature,    // the matching slot's signature does not verify
    WrongSigner,     // the signer's role may not sign this certificate (e.g. PDH signing a PEK)
    WrongIssuer,     // AMD cert: certifying_id differs from the signer's key_id
    NoFreeSlot,      // sign(): both slots are taken
    BadSignerKey,    // the signing / verifying key is not of the kind the algorithm needs
    Internal,
    Missing,         // verify_chain(): a certificate the chain needs is absent
};
std::string_view cert_error_name(CertError);
// SEV status codes (Linux include/uapi/linux/psp-sev.h enum sev_ret_code): 0x06 INVALID_CERTIFICATE or 0x0A
// BAD_SIGNATURE.
uint16_t cert_error_status(CertError);

inline constexpr size_t kSevCertSize = 0x824;
inline constexpr size_t kSevCertBodySize = 0x414; // version..pubkey: what every signature covers
inline constexpr size_t kSevSigSize = 0x200;

// Wire layout (AMD-ASPFW sev_cert.h; SEV API 55766 appendix "SEV certificate format").
struct [[gnu::packed]] SevSigSlotWire {
    uint32_t usage;
    uint32_t algo;
    uint8_t sig[kSevSigSize]; // ECDSA: r[72] LE, s[72] LE, zeros; RSA: LE signature
};
static_assert(sizeof(SevSigSlotWire) == 0x208);

struct [[gnu::packed]] SevEcPubKeyWire {
    uint32_t curve;
    uint8_t qx[kAmdEcIntBytes];
    uint8_t qy[kAmdEcIntBytes];
    uint8_t reserved_0a4[0x404 - 0x94]; // union padding (offsets relative to the cert: 0x0A4..0x413)
};
static_assert(sizeof(SevEcPubKeyWire) == 0x404);

struct [[gnu::packed]] SevRsaPubKeyWire {
    uint32_t modulus_size; // bits
    uint8_t pub_exp[512];  // LE
    uint8_t modulus[512];  // LE
};
static_assert(sizeof(SevRsaPubKeyWire) == 0x404);

struct [[gnu::packed]] SevCertWire {
    uint32_t version;
    uint8_t api_major;
    uint8_t api_minor;
    uint8_t reserved_006[2];
    uint32_t pub_key_usage;
    uint32_t pub_key_algo;
    union [[gnu::packed]] {
        SevEcPubKeyWire ec;
        SevRsaPubKeyWire rsa;
        uint8_t raw[0x404];
    } pub_key;
    SevSigSlotWire sig[2];
};
static_assert(sizeof(SevCertWire) == kSevCertSize);
static_assert(offsetof(SevCertWire, version) == 0x000);
static_assert(offsetof(SevCertWire, api_major) == 0x004);
static_assert(offsetof(SevCertWire, api_minor) == 0x005);
static_assert(offsetof(SevCertWire, reserved_006) == 0x006);
static_assert(offsetof(SevCertWire, pub_key_usage) == 0x008);
static_assert(offsetof(SevCertWire, pub_key_algo) == 0x00C);
static_assert(offsetof(SevCertWire, pub_key) == 0x010);
static_assert(offsetof(SevCertWire, sig) == 0x414);
static_assert(offsetof(SevCertWire, sig) + sizeof(SevSigSlotWire) == 0x61C);

// A signer as AMD-ASPFW sees it: the (usage, algo) pair a signature slot must name, and the key.
struct CertSigner {
    SevUsage usage { SevUsage::Invalid };
    SevAlgo algo { SevAlgo::Invalid };
    PKey key; // public key for verification, private key for signing
};

class SevCert {
public:
    // Full validation: size, version 1, reserved_006 zero, known usage (OCA/PEK/PDH/CEK) with a
    // fitting algorithm (ECDSA for OCA/PEK/CEK, ECDH for PDH; RSA keys allowed for OCA/CEK with
    // a 2048- or 4096-bit modulus), P-384 on the curve, and each signature slot either empty
    // (0x1000/0) or a known (usage, algo) pair.
    static Result<SevCert, CertError> parse(std::span<const uint8_t>);
    // Size check only: the firmware's entry point before sev_cert_validate().
    static Result<SevCert, CertError> from_bytes(std::span<const uint8_t>);

    // A fresh certificate for an EC key (both signature slots empty). `algo` must be an ECDSA or
    // ECDH code; the key must be P-384.
    static Result<SevCert, CertError> make_ec(uint8_t api_major, uint8_t api_minor, SevUsage, SevAlgo,
        EVP_PKEY const* key);

    Bytes serialize() const;
    std::span<const uint8_t, kSevCertSize> bytes() const;
    std::span<const uint8_t, kSevCertBodySize> body() const;
    SevCertWire const& wire() const { return m_wire; }

    uint32_t version() const { return m_wire.version; }
    uint8_t api_major() const { return m_wire.api_major; }
    uint8_t api_minor() const { return m_wire.api_minor; }
    uint32_t usage_code() const { return m_wire.pub_key_usage; }
    uint32_t algo_code() const { return m_wire.pub_key_algo; }
    std::optional<SevUsage> usage() const { return sev_usage_from(m_wire.pub_key_usage); }
    std::optional<SevAlgo> algo() const { return sev_algo_from(m_wire.pub_key_algo); }
    uint32_t sig_usage_code(unsigned slot) const { return m_wire.sig[slot & 1].usage; }
    uint32_t sig_algo_code(unsigned slot) const { return m_wire.sig[slot & 1].algo; }
    bool slot_empty(unsigned slot) const;
    std::optional<unsigned> first_empty_slot() const;

    void set_api_version(uint8_t major, uint8_t minor);
    // Empties a slot (usage 0x1000, algo 0, zero signature): a PEK CSR has both slots empty.
    void clear_slot(unsigned slot);
    // Copies one signature slot from another certificate (PEK_CERT_IMPORT keeps the CEK's).
    void copy_slot_from(SevCert const& other, unsigned from_slot, unsigned to_slot);

    // The body's validity as AMD-ASPFW checks it (sev_cert_validate_body): version 1, known usage/algo,
    // P-384 point on the curve (or a sane RSA key).
    Result<void, CertError> validate_body() const;

    // The embedded public key (ECDSA/ECDH P-384 or RSA) as an EVP_PKEY.
    Result<PKey, CertError> public_key() const;
    // This certificate as a signer: its usage, algo and public key.
    Result<CertSigner, CertError> as_signer() const;

    // Signs the body into `slot` with the signer's private key (ECDSA P-384, or RSA-PSS for an
    // RSA signer such as an emulated ASK signing a CEK); the slot records the signer's usage/algo.
    Result<void, CertError> sign(unsigned slot, CertSigner const& signer);
    // Signs into the first empty slot.
    Result<unsigned, CertError> sign(CertSigner const& signer);
    // Verifies the slot that names the signer's (usage, algo); no role rules (see sev_cert_validate).
    Result<void, CertError> verify(CertSigner const& signer) const;

    friend bool operator==(SevCert const& a, SevCert const& b);

private:
    SevCert() = default;
    SevCertWire m_wire {};
};

// AMD-ASPFW sev_cert_validate (sev_cert.c), in AMD-ASPFW's order:
//   1. signer malformed -> BadSignerKey (0x06)
//   2. per slot: half-empty -> HalfEmptySlot (0x0A, stops); non-matching skipped; matching verified
//   3. no slot matched -> NoMatchingSlot (0x06); a matched slot that failed -> BadSignature (0x0A)
//   4. body invalid -> (0x06)
//   5. role rules: PDH<-PEK, PEK<-OCA|CEK, OCA<-OCA (self), CEK<-ASK -> else WrongSigner (0x06)
Result<void, CertError> sev_cert_validate(SevCert const& cert, CertSigner const& signer);
Result<void, CertError> sev_cert_validate(SevCert const& cert, SevCert const& signer_cert);
// CEK signed by the AMD signing key (ASK), as the real chain does (virtee/sev tests/naples, tests/rome cek.cert).
Result<void, CertError> sev_cert_validate(SevCert const& cert, AmdCert const& ask);

// AMD-ASPFW sev_cert_sanity_check: a valid body (step 4 above) with exactly this usage and algorithm.
Result<void, CertError> sev_cert_sanity_check(SevCert const&, SevUsage, SevAlgo);

// The guest owner's DH certificate as LAUNCH_START checks it (AMD-ASPFW sev_mcmd.c, "GODH"): version 1,
// usage PDH, algo exactly ECDH_SHA256 (0x103 is refused), curve P-384 on the curve. Its signature
// is not checked by AMD-ASPFW.
Result<void, CertError> godh_cert_check(SevCert const&);

} // namespace sevemu::firmware
