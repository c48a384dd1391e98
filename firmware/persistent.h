// sevemu — the firmware's persistent state and its NV image (AMD-ASPFW
// sev_persistent.c; SEV API 55766, INIT_EX), plus the keys derived from the chip's fused secret.
//
// Persistent state: the OCA (key pair when self-owned, only its certificate when externally
// owned), the PEK and the PDH key pairs and certificates, and the ownership flag. It lives in
// the SPI flash (a file of the platform directory) or, after INIT_EX with an NV buffer, in the
// host's 32 KiB DRAM buffer.
//
// NV image format (sevemu's own; the content is opaque to the host, as on real parts):
//   +0x0000  ciphertext  kNvSize - 48 bytes: AES-128-CTR(K_enc, iv)(record)
//   +0x7FD0  mac         32 bytes: HMAC-SHA256(K_int, ciphertext || iv)
//   +0x7FF0  iv          16 bytes
// with K_enc = KDF(CUK, "sev-persistent-encryption", -, 16) and K_int = KDF(CUK,
// "sev-persistent-integrity", -, 32) as AMD-ASPFW labels them. The record (plaintext) is
//   "SVNV" u32 version(=1) u8 ext_owned u8[3] 0, then three (u32 len, bytes) pairs per key
//   (OCA, PEK, PDH): private scalar (48 or 0 bytes), certificate (0x824 or 0 bytes); zero padded.
// "Erased" is all 0xFF; the first four bytes 0xFFFFFFFF mean "empty".
#pragma once

#include "base/encoding.h"
#include "base/result.h"
#include "firmware/crypto.h"

#include <array>
#include <optional>
#include <span>

namespace sevemu::firmware {

using ChipUniqueKey = std::array<uint8_t, 32>;

struct PersistentState {
    bool ext_owned {};
    Bytes oca_priv; // 48-byte P-384 scalar (big-endian); empty when externally owned or absent
    Bytes oca_cert; // 0x824 bytes or empty
    Bytes pek_priv;
    Bytes pek_cert;
    Bytes pdh_priv;
    Bytes pdh_cert;

    bool has_oca() const { return !oca_cert.empty(); }
    bool has_pek() const { return !pek_cert.empty() && !pek_priv.empty(); }
    bool has_pdh() const { return !pdh_cert.empty() && !pdh_priv.empty(); }
    void wipe(); // zeroes the private scalars and empties everything
    friend bool operator==(PersistentState const&, PersistentState const&) = default;
};

enum class NvError : uint8_t {
    BadSize,  // not kNvSize bytes
    Corrupt,  // integrity check failed (SECURE_DATA_INVALID, 0x18)
    Crypto,
};

inline constexpr size_t kNvImageSize = 0x8000;

// std::nullopt: the image is erased/empty (generate new keys).
Result<std::optional<PersistentState>, NvError> nv_unseal(std::span<const uint8_t> image, ChipUniqueKey const&);
Result<Bytes, NvError> nv_seal(PersistentState const&, ChipUniqueKey const&);
Bytes nv_erased_image();

// The Chip Endorsement Key, deterministic per chip (AMD-ASPFW sev_plat.c): SHA-256 of the CUK, then
// KDF(.., "sev-chip-endorsement-key", -, 56) reduced into [1, n-1] by FIPS 186-4 B.4.1
// ("extra random bits"). The exact byte order of AMD-ASPFW's reduction is not public; sevemu's is
// big-endian (the CEK is only ever checked through its certificate, so any fixed key works).
Result<PKey, CryptoError> derive_cek(ChipUniqueKey const&);

// GET_ID's 64 bytes: X || Y, big-endian, of CUK * G on secp256k1 (AMD-ASPFW sev_plat.c sev_get_id).
Result<std::array<uint8_t, 64>, CryptoError> chip_id_from_cuk(ChipUniqueKey const&);

} // namespace sevemu::firmware
