// sevemu — AMD root (ARK) and signing (ASK) key certificates in AMD's legacy format
// (SEV-KM API 55766 appendix "AMD root key / signing key certificate";
// AMD-ASPFW amd_cert.h/.c, sev-tool src/amdcert.cpp, virtee/sev src/certs/sev/ca/cert/v1.rs).
//
// Variable size: a 64-byte header, then pub_exp (pub_exp_size/8 bytes), modulus and signature
// (modulus_size/8 bytes each), all little-endian. RSA-2048 (Naples, 832 bytes) or RSA-4096
// (Rome and later, 1600 bytes). The signature is RSASSA-PSS over header || pub_exp || modulus,
// SHA-256 for a 2048-bit signer and SHA-384 for a 4096-bit signer, salt = hash length.
#pragma once

#include "base/encoding.h"
#include "base/result.h"
#include "firmware/crypto.h"
#include "firmware/sev_cert.h"

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <utility>

namespace sevemu::firmware {

enum class AmdKeyUsage : uint32_t { ARK = 0x00, ASK = 0x13 };

using AmdKeyId = std::array<uint8_t, 16>;

struct [[gnu::packed]] AmdCertHeaderWire {
    uint32_t version;
    uint8_t key_id[16];
    uint8_t certifying_id[16];
    uint32_t key_usage;
    uint8_t reserved_028[16];
    uint32_t pub_exp_size; // bits
    uint32_t modulus_size; // bits
};
static_assert(sizeof(AmdCertHeaderWire) == 0x40);
static_assert(offsetof(AmdCertHeaderWire, version) == 0x00);
static_assert(offsetof(AmdCertHeaderWire, key_id) == 0x04);
static_assert(offsetof(AmdCertHeaderWire, certifying_id) == 0x14);
static_assert(offsetof(AmdCertHeaderWire, key_usage) == 0x24);
static_assert(offsetof(AmdCertHeaderWire, reserved_028) == 0x28);
static_assert(offsetof(AmdCertHeaderWire, pub_exp_size) == 0x38);
static_assert(offsetof(AmdCertHeaderWire, modulus_size) == 0x3C);

inline constexpr size_t kAmdCertSize2K = 0x40 + 3 * 256; // 832
inline constexpr size_t kAmdCertSize4K = 0x40 + 3 * 512; // 1600

// The AMD products whose root keys virtee/sev ships (src/certs/sev/builtin/*/ark.cert).
struct KnownAmdRoot {
    std::string_view product;
    AmdKeyId ark_id;
    AmdKeyId ask_id;
};
std::span<const KnownAmdRoot> known_amd_roots();
std::optional<std::string_view> known_ark_product(AmdKeyId const&);

class AmdCert {
public:
    // Full validation: version 1, usage ARK or ASK, pub_exp_size and modulus_size 2048 or 4096,
    // the exponent no wider than the modulus, reserved_028 zero, exact size.
    static Result<AmdCert, CertError> parse(std::span<const uint8_t>);
    // Parses one certificate at the start of `data` and returns how many bytes it used
    // (SEND_START's "AMD certs" buffer is ASK || ARK).
    static Result<std::pair<AmdCert, size_t>, CertError> parse_prefix(std::span<const uint8_t> data);

    // A new unsigned certificate for an RSA public key (2048 or 4096 bits); pub_exp_size = modulus size.
    static Result<AmdCert, CertError> build(AmdKeyUsage, AmdKeyId const& key_id, AmdKeyId const& certifying_id,
        EVP_PKEY const* rsa_key);

    Bytes serialize() const;
    size_t size() const;
    // header || pub_exp || modulus: what the signature covers.
    Bytes signed_part() const;

    uint32_t version() const { return m_header.version; }
    AmdKeyId key_id() const;
    AmdKeyId certifying_id() const;
    AmdKeyUsage usage() const { return m_usage; }
    unsigned modulus_bits() const { return m_header.modulus_size; }
    unsigned pub_exp_bits() const { return m_header.pub_exp_size; }
    std::span<const uint8_t> pub_exp_le() const { return m_pub_exp; }
    std::span<const uint8_t> modulus_le() const { return m_modulus; }
    std::span<const uint8_t> signature_le() const { return m_signature; }

    // The hash this key signs with: SHA-256 for RSA-2048, SHA-384 for RSA-4096 (virtee/sev
    // src/certs/sev/builtin: Naples RSA-2048, Rome and later RSA-4096; AMD-ASPFW amd_cert.c).
    HashAlgo signing_hash() const;
    // The algorithm code a SEV certificate slot names when this key signs it (CEK sig1):
    // RSA_SHA256 (0x1) for 2048 bits, RSA_SHA384 (0x101) for 4096 bits (CEK sig1 in virtee/sev tests/naples,
    // tests/rome cek.cert).
    SevAlgo sev_signer_algo() const;

    Result<PKey, CertError> public_key() const;
    // This key as a signer of SEV certificates (the ASK signs the CEK).
    Result<CertSigner, CertError> as_signer() const;

    // Signs with the signer's RSA private key (its size chooses the hash).
    Result<void, CertError> sign(EVP_PKEY const* signer_priv);
    // Verifies the signature with `signer`'s key and that certifying_id == signer.key_id
    // (WrongIssuer otherwise). For the ARK, pass the ARK itself.
    Result<void, CertError> verify(AmdCert const& signer) const;

    friend bool operator==(AmdCert const& a, AmdCert const& b);

private:
    AmdCert() = default;
    AmdCertHeaderWire m_header {};
    AmdKeyUsage m_usage { AmdKeyUsage::ARK };
    Bytes m_pub_exp;
    Bytes m_modulus;
    Bytes m_signature;
};

} // namespace sevemu::firmware
