// sevemu tests — the guest owner's side of a launch, built from the crypto layer alone (so the
// firmware's launch can be tested before and independently of tools/sevemu-owner).
#pragma once

#include "fw_harness.h"
#include "firmware/crypto.h"
#include "firmware/sev_cert.h"

namespace sevemu::test {

struct OwnerSession {
    PKey godh;
    Bytes godh_cert;
    SessionBlob blob {};
    TransportKeys keys {};
};

// The platform's PDH certificate, exported through PDH_CERT_EXPORT.
inline Bytes export_pdh(TestPlatform& p, Bytes* chain = nullptr)
{
    PdhCertExportBuf b {};
    b.pdh_cert_paddr = TestPlatform::kData;
    b.pdh_cert_length = kSevCertSize;
    b.certs_paddr = TestPlatform::kData + 0x1000;
    b.certs_length = 3 * kSevCertSize;
    if (p.run(CommandId::PDH_CERT_EXPORT, b) != 0)
        throw std::runtime_error("PDH_CERT_EXPORT failed");
    if (chain)
        *chain = p.peek(TestPlatform::kData + 0x1000, 3 * kSevCertSize);
    return p.peek(TestPlatform::kData, kSevCertSize);
}

inline OwnerSession make_owner_session(Bytes const& pdh_cert, uint32_t policy)
{
    OwnerSession s;
    s.godh = std::move(*p384_generate());
    s.godh_cert = SevCert::make_ec(0, 0, SevUsage::PDH, SevAlgo::ECDH_SHA256, s.godh.get())->serialize();
    auto pdh = SevCert::from_bytes(pdh_cert);
    auto pdh_pub = pdh->public_key();
    auto z = ecdh_p384(s.godh.get(), pdh_pub->get());
    s.blob = *wrap_session_random(*z, policy, s.keys);
    return s;
}

// LAUNCH_START with the owner's GODH certificate and session blob.
inline uint16_t launch_start_with_session(TestPlatform& p, OwnerSession const& s, uint32_t policy, uint32_t& handle)
{
    constexpr uint64_t kCert = TestPlatform::kData + 0x8000;
    constexpr uint64_t kSession = TestPlatform::kData + 0xA000;
    p.poke(kCert, s.godh_cert);
    auto blob = session_blob_bytes(s.blob);
    p.poke(kSession, blob);
    LaunchStartBuf b {};
    b.policy = policy;
    b.dh_cert_paddr = kCert;
    b.dh_cert_len = kSevCertSize;
    b.session_paddr = kSession;
    b.session_len = kSessionBlobSize;
    uint16_t st = p.run(CommandId::LAUNCH_START, b);
    handle = st == 0 ? b.handle : 0;
    return st;
}

// Packages a secret as LAUNCH_SECRET wants it (SEV API 55766, LAUNCH_SECRET) and places header and ciphertext
// in DRAM.
inline TransportBuf package_secret(TestPlatform& p, OwnerSession const& s, Mac256 const& measure, Bytes const& secret,
    uint32_t handle, uint64_t guest_pa, uint32_t flags = 0)
{
    constexpr uint64_t kHdr = TestPlatform::kData + 0xC000;
    constexpr uint64_t kTrans = TestPlatform::kData + 0xD000;
    Iv128 iv {};
    (void)random_bytes(iv);
    Bytes ct = *aes128_ctr(s.keys.tek, iv, secret);
    PacketHeader h {};
    h.flags = flags;
    std::memcpy(h.iv, iv.data(), 16);
    Mac256 mac = launch_secret_mac(s.keys.tik, flags, iv, ct, measure);
    std::memcpy(h.mac, mac.data(), 32);
    p.poke(kHdr, packet_header_bytes(h));
    p.poke(kTrans, ct);
    TransportBuf b {};
    b.handle = handle;
    b.hdr_paddr = kHdr;
    b.hdr_len = kPacketHeaderSize;
    b.guest_paddr = guest_pa;
    b.guest_len = uint32_t(secret.size());
    b.trans_paddr = kTrans;
    b.trans_len = uint32_t(ct.size());
    return b;
}

} // namespace sevemu::test
