// sevemu — the AMD-SP's cryptography for the legacy SEV / SEV-ES API, on OpenSSL 3 (EVP).
//
// Everything the firmware and the guest owner compute in common lives here as plain functions of
// plain inputs, so that the firmware command handlers and tools/sevemu-owner share one
// implementation of the spec and tests can check it against an independent reference:
//   - primitives: SHA-256/384, HMAC-SHA256, AES-128-CTR, random bytes;
//   - the SP 800-108 KDF (SEV-KM API 55766 §"Key derivation"; AMD-ASPFW nist_kdf.c);
//   - P-384 ECDH and ECDSA with AMD's little-endian 72-byte integer encoding, RSA-PSS;
//   - the transport channel: master secret, KEK/KIK, the LAUNCH_START / RECEIVE_START session
//     wrap and unwrap, the LAUNCH_MEASURE HMAC and the packet MAC shared by
//     LAUNCH_SECRET and SEND/RECEIVE_UPDATE_* (SEV API 55766 under those commands; AMD-ASPFW sev_channel.c).
//
// AMD integers (curve coordinates, ECDSA r/s, RSA moduli and signatures) are little-endian on the
// wire; OpenSSL's are big-endian. The conversion happens only in this file and sev_cert/amd_cert.
#pragma once

#include "base/encoding.h"
#include "base/result.h"

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

typedef struct evp_pkey_st EVP_PKEY;

namespace sevemu::firmware {

enum class CryptoError : uint8_t {
    BadLength,    // an input has the wrong size
    BadKey,       // not a key of the expected kind (e.g. not P-384, not RSA, no private part)
    BadPoint,     // an EC point that is not on the curve: refused before ECDH (invalid-curve attack)
    BadSignature, // a signature that does not verify
    BadMac,       // an HMAC that does not match (constant-time compare)
    Internal,     // OpenSSL failed where it should not (out of memory, RNG failure)
};
std::string_view crypto_error_name(CryptoError);

// ---------------------------------------------------------------------------------------------
// Fixed-size values.
inline constexpr size_t kP384Bytes = 48;     // field and scalar size of P-384
inline constexpr size_t kAmdEcIntBytes = 72; // AMD's zero-padded little-endian EC integer width

using Key128 = std::array<uint8_t, 16>;   // TEK, TIK, KEK, KIK, master secret
using Iv128 = std::array<uint8_t, 16>;    // AES-CTR initial counter block
using Nonce128 = std::array<uint8_t, 16>; // session nonce, MNONCE
using Sha256Digest = std::array<uint8_t, 32>;
using Sha384Digest = std::array<uint8_t, 48>;
using Mac256 = std::array<uint8_t, 32>; // HMAC-SHA256 output
using EcdhSecret = std::array<uint8_t, kP384Bytes>; // shared X coordinate, big-endian

enum class HashAlgo : uint8_t { Sha256, Sha384 };
size_t hash_size(HashAlgo);

// ---------------------------------------------------------------------------------------------
// Primitives.
Sha256Digest sha256(std::span<const uint8_t> data);
Sha384Digest sha384(std::span<const uint8_t> data);
Bytes digest(HashAlgo, std::span<const uint8_t> data);

// Incremental SHA-256: the running launch digest GCTX.LD of LAUNCH_UPDATE_* (AMD-ASPFW sev_mcmd.c).
// Copyable (the copy continues independently). Its state can be saved and restored (snapshots of a
// guest mid-launch, STYLE.md rule 13). Saved-state stream format, version 1 (109 bytes):
//   +0x00 u8     version = 1
//   +0x01 u32[8] H0..H7 (LE)         the chaining value after the last whole block
//   +0x21 u32    bit count, low (LE)  +0x25 u32 bit count, high (LE)
//   +0x29 u32    bytes pending in the partial block (0..63, LE)
//   +0x2D u8[64] the partial block (only the first `pending` bytes are meaningful; rest zero)
class Sha256Stream {
public:
    Sha256Stream();
    ~Sha256Stream();
    Sha256Stream(Sha256Stream const&);
    Sha256Stream& operator=(Sha256Stream const&);
    Sha256Stream(Sha256Stream&&) noexcept;
    Sha256Stream& operator=(Sha256Stream&&) noexcept;

    void update(std::span<const uint8_t> data);
    // The digest of everything so far; the stream itself is left unchanged and can continue.
    Sha256Digest peek() const;
    void reset();

    static constexpr size_t kSavedStateSize = 109;
    std::array<uint8_t, kSavedStateSize> save_state() const;
    // Refuses a wrong size or version and an inconsistent state (pending != bit count / 8 mod 64).
    static Result<Sha256Stream, CryptoError> restore_state(std::span<const uint8_t>);

private:
    void* m_ctx { nullptr }; // SHA256_CTX: OpenSSL's only SHA-256 whose state can be exported
};

// HMAC-SHA256 over the concatenation of `parts` (so callers need not build a buffer).
Mac256 hmac_sha256(std::span<const uint8_t> key, std::initializer_list<std::span<const uint8_t>> parts);
Mac256 hmac_sha256(std::span<const uint8_t> key, std::span<const uint8_t> data);

// Constant-time equality of two equal-length buffers (false when the lengths differ). Every
// MAC comparison goes through it so a timing side channel cannot reveal a forged MAC byte by byte.
bool equal_ct(std::span<const uint8_t> a, std::span<const uint8_t> b);

// AES-128-CTR with the full 128-bit big-endian counter increment (OpenSSL semantics; the CCP's carry
// width is not documented in SEV API 55766). Encryption and decryption are the same.
Result<Bytes, CryptoError> aes128_ctr(std::span<const uint8_t> key, std::span<const uint8_t> iv,
    std::span<const uint8_t> data);

// Cryptographically random bytes (OpenSSL's DRBG).
Result<void, CryptoError> random_bytes(std::span<uint8_t> out);
Result<Key128, CryptoError> random_key128();

// NIST SP 800-108 counter-mode KDF, PRF = HMAC-SHA256, exactly as SEV-KM 55766 uses it
// (AMD-ASPFW nist_kdf.c; virtee/sev src/session/key.rs):
//   K_i = HMAC(key, LE32(i) || label || 0x00 || context || LE32(out_len * 8)), i = 1, 2, ...
// The counter and the length in bits are little-endian; the 0x00 separator is always present.
Bytes kdf_sp800_108(std::span<const uint8_t> key, std::string_view label, std::span<const uint8_t> context,
    size_t out_len);

// ---------------------------------------------------------------------------------------------
// Keys. An owning EVP_PKEY handle.
struct PKeyDeleter {
    void operator()(EVP_PKEY*) const;
};
using PKey = std::unique_ptr<EVP_PKEY, PKeyDeleter>;

// Reverses a byte string (AMD little-endian <-> OpenSSL big-endian).
Bytes reversed(std::span<const uint8_t> data);

// AMD's EC point encoding: two little-endian coordinates zero-padded to 72 bytes.
struct AmdEcPoint {
    std::array<uint8_t, kAmdEcIntBytes> qx {};
    std::array<uint8_t, kAmdEcIntBytes> qy {};
};

Result<PKey, CryptoError> p384_generate();
// Private scalar as big-endian bytes (at most 48); for fixed keys (the emulated CEK) and test vectors.
Result<PKey, CryptoError> p384_from_private(std::span<const uint8_t> scalar_be);
// Checks that the point lies on P-384 (and that the padding bytes 48..71 are zero).
Result<PKey, CryptoError> p384_from_amd_point(AmdEcPoint const&);
Result<AmdEcPoint, CryptoError> p384_to_amd_point(EVP_PKEY const*);
// The private scalar, big-endian, 48 bytes (for NV storage of firmware key pairs).
Result<Bytes, CryptoError> p384_private_scalar(EVP_PKEY const*);
// The public half only.
Result<PKey, CryptoError> public_only(EVP_PKEY const*);
bool is_p384(EVP_PKEY const*);
bool is_rsa(EVP_PKEY const*);

// ECDH on P-384: the 48-byte big-endian X coordinate of priv * peer (AMD-ASPFW ecdh.c; virtee/sev src/session).
Result<EcdhSecret, CryptoError> ecdh_p384(EVP_PKEY const* priv, EVP_PKEY const* peer_pub);

// ECDSA P-384 over hash(message), r and s in AMD's 72-byte little-endian form.
struct AmdEcdsaSig {
    std::array<uint8_t, kAmdEcIntBytes> r {};
    std::array<uint8_t, kAmdEcIntBytes> s {};
};
Result<AmdEcdsaSig, CryptoError> ecdsa_p384_sign(EVP_PKEY const* priv, HashAlgo, std::span<const uint8_t> message);
Result<void, CryptoError> ecdsa_p384_verify(EVP_PKEY const* pub, HashAlgo, std::span<const uint8_t> message,
    AmdEcdsaSig const&);

// RSA. Moduli and exponents little-endian as in AMD's certificates.
Result<PKey, CryptoError> rsa_generate(unsigned bits);
Result<PKey, CryptoError> rsa_from_amd(std::span<const uint8_t> modulus_le, std::span<const uint8_t> pub_exp_le);
struct AmdRsaPublic {
    Bytes modulus_le; // modulus_bits / 8 bytes
    Bytes pub_exp_le; // same width as the modulus, zero-padded
    unsigned modulus_bits { 0 };
};
Result<AmdRsaPublic, CryptoError> rsa_to_amd(EVP_PKEY const*);
// RSASSA-PSS, MGF1 with the same hash, salt length = hash length (AMD-ASPFW amd_cert.c, sev_cert.c).
// The signature is little-endian and exactly modulus_bits/8 bytes.
Result<Bytes, CryptoError> rsa_pss_sign(EVP_PKEY const* priv, HashAlgo, std::span<const uint8_t> message);
Result<void, CryptoError> rsa_pss_verify(EVP_PKEY const* pub, HashAlgo, std::span<const uint8_t> message,
    std::span<const uint8_t> signature_le);

// ---------------------------------------------------------------------------------------------
// The transport channel (SEV-KM 55766 "LAUNCH_START", "SEND_START"; AMD-ASPFW sev_channel.c).

// The session buffer, 0x80 bytes (sev-tool src/sevapi.h; virtee/sev src/launch, Session).
struct [[gnu::packed]] SessionBlob {
    uint8_t nonce[16];
    uint8_t wrap_tk[32]; // AES-128-CTR(KEK, wrap_iv)(TEK || TIK)
    uint8_t wrap_iv[16];
    uint8_t wrap_mac[32]; // HMAC-SHA256(KIK, wrap_tk)
    uint8_t policy_mac[32]; // HMAC-SHA256(TIK, LE32(policy))
};
static_assert(sizeof(SessionBlob) == 0x80);
static_assert(offsetof(SessionBlob, nonce) == 0x00);
static_assert(offsetof(SessionBlob, wrap_tk) == 0x10);
static_assert(offsetof(SessionBlob, wrap_iv) == 0x30);
static_assert(offsetof(SessionBlob, wrap_mac) == 0x40);
static_assert(offsetof(SessionBlob, policy_mac) == 0x60);
inline constexpr size_t kSessionBlobSize = sizeof(SessionBlob);

Result<SessionBlob, CryptoError> session_blob_from_bytes(std::span<const uint8_t>);
std::array<uint8_t, kSessionBlobSize> session_blob_bytes(SessionBlob const&);

struct TransportKeys {
    Key128 tek {}; // transport encryption key (AES-128-CTR)
    Key128 tik {}; // transport integrity key (HMAC-SHA256)
};

struct ChannelKeys {
    Key128 master {};
    Key128 kek {};
    Key128 kik {};
};

// master = KDF(Z, "sev-master-secret", nonce, 16); KEK = KDF(master, "sev-kek", -, 16);
// KIK = KDF(master, "sev-kik", -, 16)  (AMD-ASPFW sev_channel.c; virtee/sev src/session/key.rs).
ChannelKeys derive_channel_keys(std::span<const uint8_t> shared_z, Nonce128 const& nonce);

// The key wrap as the sending side computes it (guest owner, or the firmware in SEND_START):
// deterministic given its inputs so that known-answer tests can fix them.
SessionBlob wrap_session(std::span<const uint8_t> shared_z, Nonce128 const& nonce, TransportKeys const&,
    Iv128 const& wrap_iv, uint32_t policy);
// The same with fresh random nonce, wrap IV, TEK and TIK; `keys_out` receives the new keys.
Result<SessionBlob, CryptoError> wrap_session_random(std::span<const uint8_t> shared_z, uint32_t policy,
    TransportKeys& keys_out);

// The receiving side (firmware LAUNCH_START / RECEIVE_START; AMD-ASPFW sev_channel.c
// establish_channel, then sev_mcmd.c): derive master/KEK/KIK, check wrap_mac, decrypt TEK||TIK,
// check policy_mac with the TIK. Both MAC failures are SEV status 0x0B (BAD_MEASUREMENT).
enum class UnwrapError : uint8_t {
    WrapMac,   // wrap_mac mismatch: the blob was not made for this PDH (or was tampered with)
    PolicyMac, // policy_mac mismatch: the host changed the guest policy the owner chose
};
std::string_view unwrap_error_name(UnwrapError);
struct UnwrappedSession {
    ChannelKeys channel;
    TransportKeys keys;
};
Result<UnwrappedSession, UnwrapError> unwrap_session(std::span<const uint8_t> shared_z, SessionBlob const&,
    uint32_t policy);

// ---------------------------------------------------------------------------------------------
// LAUNCH_MEASURE (SEV API 55766, LAUNCH_MEASURE; AMD-ASPFW sev_mcmd.c):
//   MEASURE = HMAC-SHA256(TIK, 0x04 || api_major || api_minor || build || LE32(policy) || LD || MNONCE)
inline constexpr uint8_t kContextMeasure = 0x04;
Mac256 launch_measure_mac(Key128 const& tik, uint8_t api_major, uint8_t api_minor, uint8_t build, uint32_t policy,
    Sha256Digest const& launch_digest, Nonce128 const& mnonce);

// Packet header of LAUNCH_SECRET and SEND/RECEIVE_UPDATE_* (AMD-ASPFW sev_channel.h), 0x34 bytes.
struct [[gnu::packed]] PacketHeader {
    uint32_t flags; // bit 0 COMPRESSED
    uint8_t iv[16];
    uint8_t mac[32];
};
static_assert(sizeof(PacketHeader) == 0x34);
static_assert(offsetof(PacketHeader, flags) == 0x00);
static_assert(offsetof(PacketHeader, iv) == 0x04);
static_assert(offsetof(PacketHeader, mac) == 0x14);
inline constexpr size_t kPacketHeaderSize = sizeof(PacketHeader);
inline constexpr uint32_t kPacketFlagCompressed = 1u << 0;

Result<PacketHeader, CryptoError> packet_header_from_bytes(std::span<const uint8_t>);
std::array<uint8_t, kPacketHeaderSize> packet_header_bytes(PacketHeader const&);

// Context bytes of the packet MAC (AMD-ASPFW sev_channel.h): 0x01 LAUNCH_SECRET, 0x02 SEND/RECEIVE_UPDATE
// (DATA and, in AMD-ASPFW, also VMSA; context 0x03 is defined there but unused).
inline constexpr uint8_t kContextSecret = 0x01;
inline constexpr uint8_t kContextTransport = 0x02;

// MAC = HMAC-SHA256(TIK, context || LE32(flags) || IV || LE32(guest_len) || LE32(trans_len)
//                        || ciphertext [|| measure])     (AMD-ASPFW sev_channel.c)
// `measure` is the 32-byte LAUNCH_MEASURE HMAC for LAUNCH_SECRET, empty for SEND/RECEIVE_UPDATE.
Mac256 packet_mac(Key128 const& tik, uint8_t context, uint32_t flags, Iv128 const& iv, uint32_t guest_len,
    uint32_t trans_len, std::span<const uint8_t> ciphertext, std::span<const uint8_t> measure);

// The transport channel of SEND_UPDATE_* / RECEIVE_UPDATE_*: AES-128-CTR under the TEK and the
// packet MAC (as packet_mac, empty `measure`) under the TIK, with OpenSSL's key schedules made
// once per session instead of once per packet (a migration sends every page of the guest
// through it). The keys are kept to tell whether the guest's channel is still the one this was
// made for; the destructor erases them and the contexts.
class TransportCrypto {
public:
    static std::unique_ptr<TransportCrypto> create(TransportKeys const&);
    ~TransportCrypto();
    TransportCrypto(TransportCrypto const&) = delete;
    TransportCrypto& operator=(TransportCrypto const&) = delete;

    bool made_for(TransportKeys const&) const;
    // A fresh random IV for the next packet. Drawn from a pool that one RAND_bytes call fills
    // 256 IVs at a time (a per-packet call costs a DRBG lock and a fork check each time); the
    // IVs are as random either way and go out in the clear in the packet header.
    bool next_iv(Iv128& iv);
    // The firmware's packet buffer for one SEND/RECEIVE_UPDATE_* (at most kTransportMax bytes,
    // like AMD-ASPFW's scratch area): kept for the session instead of allocated per packet.
    // The commands erase any plaintext in it before they return; the destructor erases it too.
    std::span<uint8_t> packet_buffer(size_t len);
    // AES-128-CTR(TEK, iv) of `in` into `out` (same size; they may be the same buffer).
    bool ctr(Iv128 const& iv, std::span<const uint8_t> in, std::span<uint8_t> out);
    // HMAC-SHA256(TIK, context || LE32(flags) || IV || LE32(guest_len) || LE32(trans_len) || ciphertext).
    std::optional<Mac256> packet_mac(uint8_t context, uint32_t flags, Iv128 const& iv, uint32_t guest_len,
        uint32_t trans_len, std::span<const uint8_t> ciphertext);

private:
    TransportCrypto() = default;
    TransportKeys m_keys {};
    std::vector<uint8_t> m_packet;
    std::array<uint8_t, 16 * 256> m_iv_pool {};
    size_t m_iv_next { sizeof m_iv_pool }; // the pool's next unused IV (all used: refill)
    void* m_cipher {}; // EVP_CIPHER_CTX, keyed with the TEK
    void* m_mac {};    // EVP_MAC_CTX (HMAC-SHA256), keyed with the TIK
};

// LAUNCH_SECRET's MAC: packet_mac with context 0x01 and guest_len = trans_len = ciphertext size.
Mac256 launch_secret_mac(Key128 const& tik, uint32_t flags, Iv128 const& iv, std::span<const uint8_t> ciphertext,
    Mac256 const& measure);

} // namespace sevemu::firmware
