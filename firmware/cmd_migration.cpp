// sevemu — migration commands: SEND_START, SEND_UPDATE_DATA/VMSA, SEND_FINISH, SEND_CANCEL,
// RECEIVE_START, RECEIVE_UPDATE_DATA/VMSA, RECEIVE_FINISH (SEV-KM API 55766 "SEND_*" and
// "RECEIVE_*"; AMD-ASPFW sev_mcmd.c sev_mcmd_send_* / sev_mcmd_receive_*, sev_channel.c).
//
// The source firmware acts as the guest owner did at launch: SEND_START runs ECDH between its
// PDH and the target's PDH, makes fresh TEK/TIK and wraps them under the KEK/KIK of that
// exchange (the 0x80-byte session the target's RECEIVE_START unwraps). Each SEND_UPDATE_DATA
// packet is the guest's plaintext (read through the VEK) under AES-128-CTR(TEK, IV) with
// HMAC-SHA256(TIK) over 0x02 || LE32(flags) || IV || LE32(len) || LE32(len) || ciphertext;
// RECEIVE_UPDATE_DATA checks that MAC before anything is written and re-encrypts under the
// target's new VEK. Every handler checks in AMD-ASPFW's order and changes nothing until the
// last check has passed.
#include "firmware/amd_cert.h"
#include "firmware/cmd_util.h"
#include "firmware/firmware.h"
#include "firmware/platform_store.h"
#include "firmware/sev_cert.h"

#include <cstring>

namespace sevemu::firmware {

namespace {

// AMD-ASPFW amd_cert.c amd_cert_chain_length_is_valid: ASK || ARK with 2048- or 4096-bit keys, the
// four lengths 2 * 0x40 + 2 * ASK + 4 * ARK key bytes. For equal sizes that is the two certificates'
// real size (0x40 + 3 * key bytes each, amd_cert_get_size); a mixed pair passes this check and then
// fails to parse, in AMD-ASPFW too.
bool amd_chain_length_valid(uint32_t len)
{
    for (uint32_t ask : { 256u, 512u })
        for (uint32_t ark : { 256u, 512u })
            if (len == 2 * 0x40 + 2 * ask + 4 * ark)
                return true;
    return false;
}

Status chain_status(CertError e) { return cert_status(e); }

// The guest's transport contexts for its channel's current keys: made once per session rather
// than once per packet (SEND_START gives new keys, and the contexts follow them).
template <class G>
TransportCrypto* transport_of(G& g)
{
    if (!g.transport || !g.transport->made_for(g.keys))
        g.transport = TransportCrypto::create(g.keys);
    return g.transport.get();
}

} // namespace

// ---------------------------------------------------------------------------------------------
// SEND_START (0x40)

Result<AmdKeyIdAndHash const*, Status> Firmware::trusted_ark()
{
    if (!m_trusted_ark) {
        // The "fused" root: the platform directory's ARK for this generation (PlatformStore).
        auto chain = m_store.amd_chain(m_params.model, m_params.api_major, m_params.api_minor);
        if (!chain) {
            note("(no trusted ARK: " + chain.error().message + ")");
            return make_unexpected(Status::HWERROR_PLATFORM);
        }
        AmdKeyIdAndHash t;
        t.key_id = chain->ark.key_id();
        t.key_hash = sha384(chain->ark.signed_part());
        m_trusted_ark = t;
    }
    return &*m_trusted_ark;
}

// AMD-ASPFW sev_mcmd.c validate_platform (policy SEV) and validate_domain (policy DOMAIN), then the
// plain PDH copy; order and status codes as there.
Result<void, Status> Firmware::validate_send_target(SendStartBuf const& b, Guest const& g, Bytes& pdh_bytes)
{
    bool have_certs = false;
    Bytes plat(kPlatCertsLen);
    pdh_bytes.assign(kSevCertSize, 0);
    auto load_platform_certs = [&]() -> Result<void, Status> {
        if (b.plat_certs_len != kPlatCertsLen || b.pdh_cert_len != kSevCertSize)
            return make_unexpected(Status::INVALID_LEN);
        if (have_certs)
            return {};
        TRY(read_dram(b.plat_certs_paddr, plat, mmu::KeyId::none()));
        TRY(read_dram(b.pdh_cert_paddr, pdh_bytes, mmu::KeyId::none()));
        have_certs = true;
        return {};
    };
    auto cert_at = [&](size_t index) { return SevCert::from_bytes(std::span<const uint8_t>(plat).subspan(index * kSevCertSize, kSevCertSize)); };

    if (g.policy & policy::SEV) {
        // "Send only to a genuine AMD SEV platform": PDH <- PEK <- CEK <- ASK <- ARK, the ARK
        // being the root this part trusts. Without it a host could migrate the guest to a
        // software platform of its own making and read it there.
        if (b.plat_certs_len != kPlatCertsLen || b.pdh_cert_len != kSevCertSize || !amd_chain_length_valid(b.amd_certs_len))
            return make_unexpected(Status::INVALID_LEN);
        TRY(load_platform_certs());
        Bytes amd(b.amd_certs_len);
        TRY(read_dram(b.amd_certs_paddr, amd, mmu::KeyId::none()));
        auto ask = AmdCert::parse_prefix(amd);
        if (!ask)
            return make_unexpected(chain_status(ask.error()));
        auto ark = AmdCert::parse_prefix(std::span<const uint8_t>(amd).subspan(ask->second));
        if (!ark)
            return make_unexpected(chain_status(ark.error()));
        AmdCert const& ark_cert = ark->first;
        AmdCert const& ask_cert = ask->first;
        // ARK: self-signed, then our generation's key ID and the fused key hash.
        if (ark_cert.usage() != AmdKeyUsage::ARK)
            return make_unexpected(Status::INVALID_CERTIFICATE);
        if (auto r = ark_cert.verify(ark_cert); !r)
            return make_unexpected(chain_status(r.error()));
        auto trusted = TRY(trusted_ark());
        if (ark_cert.key_id() != trusted->key_id || !equal_ct(sha384(ark_cert.signed_part()), trusted->key_hash)) {
            note("(ARK is not this platform's root)");
            return make_unexpected(Status::INVALID_CERTIFICATE);
        }
        if (ask_cert.usage() != AmdKeyUsage::ASK)
            return make_unexpected(Status::INVALID_CERTIFICATE);
        if (auto r = ask_cert.verify(ark_cert); !r)
            return make_unexpected(chain_status(r.error()));
        auto pek = cert_at(0);
        auto cek = cert_at(2);
        auto pdh = SevCert::from_bytes(pdh_bytes);
        if (!pek || !cek || !pdh)
            return make_unexpected(Status::INVALID_CERTIFICATE);
        if (auto r = sev_cert_validate(*cek, ask_cert); !r) {
            note("(ASK -> CEK: " + std::string(cert_error_name(r.error())) + ")");
            return make_unexpected(chain_status(r.error()));
        }
        if (auto r = sev_cert_validate(*pek, *cek); !r) {
            note("(CEK -> PEK: " + std::string(cert_error_name(r.error())) + ")");
            return make_unexpected(chain_status(r.error()));
        }
        if (auto r = sev_cert_validate(*pdh, *pek); !r) {
            note("(PEK -> PDH: " + std::string(cert_error_name(r.error())) + ")");
            return make_unexpected(chain_status(r.error()));
        }
        // The target firmware must be at least the API version the owner asked for.
        unsigned want = (unsigned(policy::api_major(g.policy)) << 8) | policy::api_minor(g.policy);
        unsigned have = (unsigned(pek->api_major()) << 8) | pek->api_minor();
        if (have < want) {
            note("(target API " + std::to_string(pek->api_major()) + "." + std::to_string(pek->api_minor()) + " below policy)");
            return make_unexpected(Status::POLICY_FAILURE);
        }
    }
    if (g.policy & policy::DOMAIN) {
        // "Send only within the domain": the target's OCA must be ours, byte for byte.
        TRY(load_platform_certs());
        auto pek = cert_at(0);
        auto oca = cert_at(1);
        auto pdh = SevCert::from_bytes(pdh_bytes);
        if (!pek || !oca || !pdh)
            return make_unexpected(Status::INVALID_CERTIFICATE);
        if (auto r = sev_cert_validate(*oca, *oca); !r)
            return make_unexpected(chain_status(r.error()));
        if (auto r = sev_cert_validate(*pek, *oca); !r)
            return make_unexpected(chain_status(r.error()));
        if (auto r = sev_cert_validate(*pdh, *pek); !r)
            return make_unexpected(chain_status(r.error()));
        auto target_oca = std::span<const uint8_t>(plat).subspan(kSevCertSize, kSevCertSize);
        if (m_persistent.oca_cert.size() != kSevCertSize || std::memcmp(target_oca.data(), m_persistent.oca_cert.data(), kSevCertSize) != 0) {
            note("(target OCA is not ours)");
            return make_unexpected(Status::POLICY_FAILURE);
        }
    }
    if (!have_certs) {
        if (b.pdh_cert_len != kSevCertSize)
            return make_unexpected(Status::INVALID_LEN);
        TRY(read_dram(b.pdh_cert_paddr, pdh_bytes, mmu::KeyId::none()));
    }
    return {};
}

// SEND_START (0x40): SEV API 55766 SEND_START; AMD-ASPFW sev_mcmd.c sev_mcmd_send_start.
Result<void, Status> Firmware::cmd_send_start(SendStartBuf& b)
{
    note("handle=" + std::to_string(b.handle) + " session_len=" + std::to_string(b.session_len));
    TRY(check_platform_state());
    Guest* g = TRY(find_guest(b.handle));
    if (b.session_len != kSessionBlobSize) {
        b.session_len = kSessionBlobSize; // the length query KVM makes first
        return make_unexpected(Status::INVALID_LEN);
    }
    TRY(check_guest_state(*g));
    // NOSEND: the owner forbade migration altogether.
    if (g->policy & policy::NOSEND) {
        note("(policy NOSEND)");
        return make_unexpected(Status::POLICY_FAILURE);
    }
    Bytes pdh_bytes;
    TRY(validate_send_target(b, *g, pdh_bytes));

    // AMD-ASPFW sev_channel.c sev_channel_open_client: our PDH key pair, the target PDH's body
    // (usage PDH, ECDH_SHA256, P-384 on the curve: an invalid-curve point would leak our PDH key).
    auto local = p384_from_private(m_persistent.pdh_priv);
    if (!local)
        return make_unexpected(Status::INVALID_CERTIFICATE);
    auto pdh = SevCert::from_bytes(pdh_bytes);
    if (!pdh)
        return make_unexpected(Status::INVALID_CERTIFICATE);
    if (auto r = sev_cert_sanity_check(*pdh, SevUsage::PDH, SevAlgo::ECDH_SHA256); !r)
        return make_unexpected(cert_status(r.error()));
    auto peer = pdh->public_key();
    if (!peer)
        return make_unexpected(Status::INVALID_CERTIFICATE);
    auto z = ecdh_p384(local->get(), peer->get());
    if (!z)
        return make_unexpected(Status::INVALID_CERTIFICATE);
    TransportKeys keys {};
    auto session = wrap_session_random(*z, g->policy, keys);
    secure_zero(z->data(), z->size());
    if (!session)
        return make_unexpected(Status::HWERROR_PLATFORM);
    // The session goes out after the channel is made (AMD-ASPFW copy_to_x86 at that point): a bad
    // session address is INVALID_ADDRESS, and nothing has changed yet.
    auto bytes = session_blob_bytes(*session);
    if (auto w = write_dram(b.session_paddr, bytes, mmu::KeyId::none()); !w) {
        secure_zero(&keys, sizeof keys);
        return w;
    }
    b.policy = g->policy;
    g->keys = keys;
    g->has_channel = true;
    secure_zero(&keys, sizeof keys);
    transition(*g, GuestState::SUPDATE);
    return {};
}

// ---------------------------------------------------------------------------------------------
// SEND_UPDATE_DATA (0x41) / SEND_UPDATE_VMSA (0x42): AMD-ASPFW sev_mcmd.c sev_mcmd_send_update.
Result<void, Status> Firmware::send_update(TransportBuf& b, bool vmsa)
{
    if (m_trace.enabled("psp"))
        note("handle=" + std::to_string(b.handle) + " guest=" + hex(b.guest_paddr) + " len=" + std::to_string(b.guest_len));
    TRY(check_platform_state());
    // Checked before the handle, so hdr_len = 0 is a length query (KVM
    // __sev_send_update_data_query_lengths). AMD-ASPFW writes back hdr_len only; trans_len stays.
    if (b.hdr_len < kPacketHeaderSize) {
        b.hdr_len = kPacketHeaderSize;
        return make_unexpected(Status::INVALID_LEN);
    }
    Guest* g = TRY(find_guest(b.handle));
    TRY(check_guest_state(*g));
    if (vmsa && !g->es())
        return make_unexpected(Status::UNSUPPORTED);
    if (!g->asid || g->activation != Activation::Active)
        return make_unexpected(Status::INACTIVE);
    if (b.guest_len == 0 || b.guest_len > kTransportMax || (b.guest_len & 15) || b.trans_len == 0 || b.trans_len < b.guest_len)
        return make_unexpected(Status::INVALID_LEN);
    if (b.guest_paddr & 15)
        return make_unexpected(Status::INVALID_ADDRESS);
    TRY(check_range(b.guest_paddr, b.guest_len));
    TRY(check_range(b.trans_paddr, b.guest_len));
    TRY(check_range(b.hdr_paddr, kPacketHeaderSize));
    TransportCrypto* tc = transport_of(*g);
    if (!tc)
        return make_unexpected(Status::HWERROR_PLATFORM);

    // Compression is never used: the packet is exactly guest_len bytes (AMD-ASPFW CSF-832). The
    // plaintext is encrypted where it was read (the session's packet buffer), so no copy of it
    // outlives this call.
    auto packet = tc->packet_buffer(b.guest_len);
    if (auto r = read_dram(b.guest_paddr, packet, mmu::KeyId::slot(g->asid)); !r) {
        secure_zero(packet.data(), packet.size()); // a read that failed part-way
        return make_unexpected(r.error());
    }
    PacketHeader hdr {};
    Iv128 iv {};
    if (!tc->next_iv(iv) || !tc->ctr(iv, packet, packet)) {
        secure_zero(packet.data(), packet.size());
        return make_unexpected(Status::HWERROR_PLATFORM);
    }
    auto mac = tc->packet_mac(kContextTransport, hdr.flags, iv, b.guest_len, b.guest_len, packet);
    if (!mac)
        return make_unexpected(Status::HWERROR_PLATFORM);
    std::memcpy(hdr.iv, iv.data(), 16);
    std::memcpy(hdr.mac, mac->data(), 32);
    TRY(write_dram(b.trans_paddr, packet, mmu::KeyId::none()));
    TRY(write_dram(b.hdr_paddr, packet_header_bytes(hdr), mmu::KeyId::none()));
    b.hdr_len = kPacketHeaderSize;
    return {};
}

Result<void, Status> Firmware::cmd_send_update_data(TransportBuf& b) { return send_update(b, false); }
Result<void, Status> Firmware::cmd_send_update_vmsa(TransportBuf& b) { return send_update(b, true); }

// SEND_FINISH (0x43) / SEND_CANCEL (0x44): AMD-ASPFW sev_mcmd.c. The channel is erased either way;
// FINISH leaves the guest SENT (ACTIVATE refuses it from now on), CANCEL returns it to RUNNING.
Result<void, Status> Firmware::cmd_send_finish(HandleBuf& b)
{
    note("handle=" + std::to_string(b.handle));
    TRY(check_platform_state());
    Guest* g = TRY(find_guest(b.handle));
    TRY(check_guest_state(*g));
    secure_zero(&g->keys, sizeof g->keys);
    g->transport.reset();
    g->has_channel = false;
    transition(*g, GuestState::SENT);
    return {};
}

Result<void, Status> Firmware::cmd_send_cancel(HandleBuf& b)
{
    note("handle=" + std::to_string(b.handle));
    TRY(check_platform_state());
    Guest* g = TRY(find_guest(b.handle));
    TRY(check_guest_state(*g));
    secure_zero(&g->keys, sizeof g->keys);
    g->transport.reset();
    g->has_channel = false;
    transition(*g, GuestState::RUNNING);
    return {};
}

// ---------------------------------------------------------------------------------------------
// RECEIVE_START (0x50): SEV API 55766 RECEIVE_START; AMD-ASPFW sev_mcmd.c sev_mcmd_receive_start.
// The certificate is the SENDER's PDH; the session is the one its SEND_START made. There is no
// session-less form.
Result<void, Status> Firmware::cmd_receive_start(LaunchStartBuf& b)
{
    note("handle=" + std::to_string(b.handle) + " policy=" + hex(b.policy));
    TRY(check_platform_state());
    TransportKeys keys = TRY(open_server_channel(b.dh_cert_paddr, b.dh_cert_len, b.session_paddr, b.session_len, b.policy));
    auto g = create_guest(b.handle, b.policy, keys, true, GuestState::RUPDATE);
    secure_zero(&keys, sizeof keys);
    if (!g)
        return make_unexpected(g.error());
    b.handle = (*g)->handle;
    note("-> handle " + std::to_string(b.handle));
    return {};
}

// RECEIVE_UPDATE_DATA (0x51) / RECEIVE_UPDATE_VMSA (0x52): AMD-ASPFW sev_mcmd.c sev_mcmd_receive_update.
// The MAC is checked before a byte reaches guest memory: a changed packet, header, IV or length
// is refused with BAD_MEASUREMENT and the guest is left as it was.
Result<void, Status> Firmware::receive_update(TransportBuf& b, bool vmsa)
{
    if (m_trace.enabled("psp"))
        note("handle=" + std::to_string(b.handle) + " guest=" + hex(b.guest_paddr) + " len=" + std::to_string(b.guest_len));
    TRY(check_platform_state());
    Guest* g = TRY(find_guest(b.handle));
    TRY(check_guest_state(*g));
    if (vmsa && !g->es())
        return make_unexpected(Status::UNSUPPORTED);
    if (!g->asid)
        return make_unexpected(Status::INACTIVE);
    if (b.trans_len == 0 || b.trans_len > kTransportMax || b.guest_len == 0 || b.guest_len != b.trans_len || (b.guest_len & 15)
        || b.hdr_len < kPacketHeaderSize)
        return make_unexpected(Status::INVALID_LEN);
    if (b.guest_paddr & 15)
        return make_unexpected(Status::INVALID_ADDRESS);
    TRY(check_range(b.guest_paddr, b.guest_len));
    std::array<uint8_t, kPacketHeaderSize> hdr_bytes {};
    TRY(read_dram(b.hdr_paddr, hdr_bytes, mmu::KeyId::none()));
    auto hdr = packet_header_from_bytes(hdr_bytes);
    if (!hdr)
        return make_unexpected(Status::INVALID_LEN);
    if (hdr->flags & kPacketFlagCompressed)
        return make_unexpected(Status::UNSUPPORTED);
    TransportCrypto* tc = transport_of(*g);
    if (!tc)
        return make_unexpected(Status::HWERROR_PLATFORM);
    auto packet = tc->packet_buffer(b.trans_len);
    TRY(read_dram(b.trans_paddr, packet, mmu::KeyId::none()));
    Iv128 iv {};
    std::memcpy(iv.data(), hdr->iv, 16);
    auto mac = tc->packet_mac(kContextTransport, hdr->flags, iv, b.trans_len, b.trans_len, packet);
    if (!mac)
        return make_unexpected(Status::HWERROR_PLATFORM);
    if (!equal_ct(*mac, std::span<const uint8_t>(hdr->mac, 32))) {
        note("(packet MAC mismatch)");
        return make_unexpected(Status::BAD_MEASUREMENT);
    }
    // Decrypted in place; the plaintext is erased once it is in guest memory.
    if (!tc->ctr(iv, packet, packet)) {
        secure_zero(packet.data(), packet.size());
        return make_unexpected(Status::HWERROR_PLATFORM);
    }
    // The AMD-SP writes the page by DMA, past the x86 caches (KVM flushed them first on a
    // non-coherent CPU, vm_migration.cpp): straight into DRAM under the guest's key, with
    // write_dram's range check.
    Result<void, Status> w {};
    if (auto a = check_range(b.guest_paddr, b.guest_len); !a)
        w = make_unexpected(a.error());
    else if (!m_mc.write_past_cache(Spa(*a), packet, mmu::KeyId::slot(g->asid)))
        w = make_unexpected(Status::INVALID_ADDRESS);
    secure_zero(packet.data(), packet.size());
    return w;
}

Result<void, Status> Firmware::cmd_receive_update_data(TransportBuf& b) { return receive_update(b, false); }
Result<void, Status> Firmware::cmd_receive_update_vmsa(TransportBuf& b) { return receive_update(b, true); }

// RECEIVE_FINISH (0x53): AMD-ASPFW sev_mcmd.c sev_mcmd_receive_finish. No measurement is checked
// (AMD-ASPFW has none here; the packets' MACs already bound every byte to the session); a
// pending activation becomes active, the channel is erased, the guest may run.
Result<void, Status> Firmware::cmd_receive_finish(HandleBuf& b)
{
    note("handle=" + std::to_string(b.handle));
    TRY(check_platform_state());
    Guest* g = TRY(find_guest(b.handle));
    TRY(check_guest_state(*g));
    g->transport.reset();
    open_for_running(*g);
    return {};
}

} // namespace sevemu::firmware
