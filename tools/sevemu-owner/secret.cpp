// Packaging a launch secret (SEV-KM API 55766 "LAUNCH_SECRET"; AMD-ASPFW sev_mcmd.c): encrypted with
// the TEK and MACed with the TIK over the header, lengths, ciphertext and the launch measurement,
// so the secret can only be injected into the guest whose measurement the owner verified.
#include "tools/sevemu-owner/owner.h"

#include <cstring>

namespace sevemu::owner {

using namespace sevemu::firmware;

// Large enough for any secret table OVMF reserves, small enough to catch a wrong file.
static constexpr size_t kMaxSecret = 1u << 20;

OwnerResult<SecretPacket> build_secret(Key128 const& tek, Key128 const& tik, std::span<const uint8_t> measurement,
    std::span<const uint8_t> secret, Iv128 const& iv, uint32_t flags)
{
    auto m = TRY(parse_measurement(measurement));
    if (secret.empty())
        return make_unexpected(OwnerError { "the secret is empty" });
    if (secret.size() > kMaxSecret)
        return make_unexpected(OwnerError { "the secret is larger than 1 MiB" });
    // LAUNCH_SECRET takes whole 16-byte blocks (AMD-ASPFW sev_mcmd.c): pad with zeros.
    Bytes plain(secret.begin(), secret.end());
    plain.resize((plain.size() + 15) / 16 * 16, 0);
    auto ct = aes128_ctr(tek, iv, plain);
    secure_zero(plain.data(), plain.size());
    if (!ct)
        return make_unexpected(OwnerError { "AES-CTR failed: " + std::string(crypto_error_name(ct.error())) });

    PacketHeader h {};
    h.flags = flags;
    std::memcpy(h.iv, iv.data(), 16);
    Mac256 mac = launch_secret_mac(tik, flags, iv, *ct, m.measure);
    std::memcpy(h.mac, mac.data(), 32);
    auto hb = packet_header_bytes(h);

    SecretPacket p;
    p.header.assign(hb.begin(), hb.end());
    p.ciphertext = std::move(ct).value();
    return p;
}

OwnerResult<SecretPacket> build_secret(Key128 const& tek, Key128 const& tik, std::span<const uint8_t> measurement,
    std::span<const uint8_t> secret)
{
    Iv128 iv {};
    if (auto r = random_bytes(iv); !r)
        return make_unexpected(OwnerError { "random generation failed" });
    return build_secret(tek, tik, measurement, secret, iv, 0);
}

} // namespace sevemu::owner
