// sevemu — guest commands: LAUNCH_*, ATTESTATION, ACTIVATE/ACTIVATE_EX/DEACTIVATE,
// DECOMMISSION, GUEST_STATUS, COPY, DBG_DECRYPT/DBG_ENCRYPT (SEV-KM API 55766 chapters 6-7;
// AMD-ASPFW sev_mcmd.c, sev_guest.c). Every handler checks in AMD-ASPFW's order and changes
// nothing until the last check has passed.
#include "firmware/cmd_util.h"
#include "firmware/firmware.h"
#include "firmware/platform_store.h"
#include "firmware/sev_cert.h"

#include <cinttypes>
#include <cstdio>
#include <cstring>

namespace sevemu::firmware {

namespace {

constexpr uint32_t kMaxApicIds = 1024;

} // namespace

// ---------------------------------------------------------------------------------------------
// LAUNCH_START (0x30): SEV API 55766, LAUNCH_START; AMD-ASPFW sev_mcmd.c.
Result<void, Status> Firmware::cmd_launch_start(LaunchStartBuf& b)
{
    note("handle=" + std::to_string(b.handle) + " policy=" + hex(b.policy) + (b.dh_cert_paddr ? " (with session)" : " (no session)"));
    TRY(check_platform_state());

    TransportKeys keys {};
    bool channel = false;
    if (b.dh_cert_paddr != 0) {
        keys = TRY(open_server_channel(b.dh_cert_paddr, b.dh_cert_len, b.session_paddr, b.session_len, b.policy));
        channel = true;
    }
    auto g = create_guest(b.handle, b.policy, keys, channel, GuestState::LUPDATE);
    secure_zero(&keys, sizeof keys);
    if (!g)
        return make_unexpected(g.error());
    b.handle = (*g)->handle;
    note("-> handle " + std::to_string(b.handle));
    return {};
}

// AMD-ASPFW sev_channel.c sev_channel_open_server + sev_guest.c sev_guest_verify_policy, in the order
// sev_mcmd.c LAUNCH_START and RECEIVE_START run them.
Result<TransportKeys, Status> Firmware::open_server_channel(uint64_t cert_paddr, uint32_t cert_len, uint64_t session_paddr,
    uint32_t session_len, uint32_t policy)
{
    if (session_len != kSessionBlobSize)
        return make_unexpected(Status::INVALID_LEN);
    std::array<uint8_t, kSessionBlobSize> session {};
    TRY(read_dram(session_paddr, session, mmu::KeyId::none()));
    if (cert_len != kSevCertSize)
        return make_unexpected(Status::INVALID_LEN);
    Bytes cert_bytes(kSevCertSize);
    TRY(read_dram(cert_paddr, cert_bytes, mmu::KeyId::none()));

    // Session setup (AMD-ASPFW sev_channel.c, ecdh.c): our PDH, the peer's DH certificate, the
    // shared secret. The peer's point is checked to be on P-384 before ECDH (invalid-curve
    // attack on the PDH key).
    auto pdh = p384_from_private(m_persistent.pdh_priv);
    if (!pdh)
        return make_unexpected(Status::INVALID_CERTIFICATE);
    auto godh = SevCert::from_bytes(cert_bytes);
    if (!godh)
        return make_unexpected(Status::INVALID_CERTIFICATE);
    if (auto r = godh_cert_check(*godh); !r)
        return make_unexpected(cert_status(r.error()));
    auto peer = godh->public_key();
    if (!peer)
        return make_unexpected(Status::INVALID_CERTIFICATE);
    auto z = ecdh_p384(pdh->get(), peer->get());
    if (!z)
        return make_unexpected(Status::INVALID_CERTIFICATE);
    auto blob = session_blob_from_bytes(session);
    if (!blob)
        return make_unexpected(Status::INVALID_LEN);
    // wrap_mac proves the blob was made for our PDH; policy_mac proves the host did not change
    // the policy the owner (or the sending firmware) chose, e.g. clearing NODBG or NOSEND.
    auto unwrapped = unwrap_session(*z, *blob, policy);
    secure_zero(z->data(), z->size());
    if (!unwrapped) {
        note(std::string("(") + std::string(unwrap_error_name(unwrapped.error())) + ")");
        return make_unexpected(Status::BAD_MEASUREMENT);
    }
    // The owner's minimum firmware API, and reserved bits.
    unsigned want = (unsigned(policy::api_major(policy)) << 8) | policy::api_minor(policy);
    unsigned have = (unsigned(m_params.api_major) << 8) | m_params.api_minor;
    if (want > have || (policy & policy::RESERVED_MASK)) {
        secure_zero(&*unwrapped, sizeof *unwrapped);
        return make_unexpected(Status::POLICY_FAILURE);
    }
    TransportKeys keys = unwrapped->keys;
    secure_zero(&*unwrapped, sizeof *unwrapped);
    return keys;
}

// The part LAUNCH_START and RECEIVE_START share after the channel (AMD-ASPFW sev_mcmd.c).
Result<Firmware::Guest*, Status> Firmware::create_guest(uint32_t share_handle, uint32_t policy, TransportKeys const& keys,
    bool channel, GuestState initial)
{
    // Key sharing: the new guest uses an existing guest's VEK only when both policies are
    // identical and the existing one allows it (NOKS), so no owner's key is shared against its will.
    std::array<uint8_t, 32> vek {};
    if (share_handle != 0) {
        Guest* other = TRY(find_guest(share_handle));
        if (other->policy != policy || (other->policy & policy::NOKS))
            return make_unexpected(Status::POLICY_FAILURE);
        vek = other->vek;
    } else {
        do {
            if (!random_bytes(vek))
                return make_unexpected(Status::HWERROR_PLATFORM);
        } while (std::memcmp(vek.data(), vek.data() + 16, 16) == 0); // XTS needs K1 != K2
    }

    uint32_t slot = 0;
    while (slot < kMaxGuests && m_guests[slot])
        ++slot;
    if (slot == kMaxGuests) {
        secure_zero(vek.data(), vek.size());
        return make_unexpected(Status::RESOURCE_LIMIT);
    }
    if ((policy & policy::ES) && !(m_config & kInitFlagEs)) {
        secure_zero(vek.data(), vek.size());
        return make_unexpected(Status::UNSUPPORTED);
    }

    auto g = std::make_unique<Guest>();
    g->handle = slot + 1;
    g->policy = policy;
    g->vek = vek;
    g->keys = keys;
    g->has_channel = channel;
    secure_zero(vek.data(), vek.size());
    Guest& guest = *g;
    m_guests[slot] = std::move(g);
    ++m_guest_count;
    transition(guest, initial);
    transition(PlatformState::WORKING);
    return &guest;
}

// LAUNCH_UPDATE_DATA (0x31) / LAUNCH_UPDATE_VMSA (0x32): SEV API 55766, LAUNCH_UPDATE_DATA /
// LAUNCH_UPDATE_VMSA; AMD-ASPFW sev_mcmd.c.
Result<void, Status> Firmware::launch_update(LaunchUpdateBuf& b, bool vmsa)
{
    note("handle=" + std::to_string(b.handle) + " paddr=" + hex(b.paddr) + " len=" + std::to_string(b.length));
    if (vmsa && b.length != kVmsaSize) // AMD-ASPFW checks this first, before the platform state
        return make_unexpected(Status::INVALID_LEN);
    TRY(check_platform_state());
    Guest* g = TRY(find_guest(b.handle));
    TRY(check_guest_state(*g));
    if (vmsa && !g->es())
        return make_unexpected(Status::UNSUPPORTED);
    if (!g->asid)
        return make_unexpected(Status::INACTIVE);
    if (b.paddr & 15)
        return make_unexpected(Status::INVALID_ADDRESS);
    if (b.length == 0 || (b.length & 15))
        return make_unexpected(Status::INVALID_LEN);
    TRY(check_range(b.paddr, b.length));

    // The plaintext as the host placed it is measured unaltered, then written back in place
    // under the guest's key. From here on the host sees only ciphertext.
    constexpr uint32_t kChunk = 0x5000;
    Bytes buf(std::min(b.length, kChunk));
    for (uint32_t done = 0; done < b.length;) {
        uint32_t n = std::min(kChunk, b.length - done);
        std::span<uint8_t> chunk(buf.data(), n);
        TRY(read_dram(b.paddr + done, chunk, mmu::KeyId::none()));
        g->launch_digest.update(chunk);
        TRY(write_dram(b.paddr + done, chunk, mmu::KeyId::slot(g->asid)));
        done += n;
    }
    secure_zero(buf.data(), buf.size());
    return {};
}

Result<void, Status> Firmware::cmd_launch_update_data(LaunchUpdateBuf& b) { return launch_update(b, false); }
Result<void, Status> Firmware::cmd_launch_update_vmsa(LaunchUpdateBuf& b) { return launch_update(b, true); }

// LAUNCH_MEASURE (0x33): SEV API 55766, LAUNCH_MEASURE; AMD-ASPFW sev_mcmd.c.
Result<void, Status> Firmware::cmd_launch_measure(LaunchMeasureBuf& b)
{
    note("handle=" + std::to_string(b.handle) + " len=" + std::to_string(b.measure_len));
    TRY(check_platform_state());
    Guest* g = TRY(find_guest(b.handle));
    TRY(check_guest_state(*g));
    if (b.measure_len < kMeasureSize) {
        b.measure_len = kMeasureSize; // the length query KVM makes first
        return make_unexpected(Status::INVALID_LEN);
    }
    TRY(check_range(b.measure_paddr, kMeasureSize));
    Sha256Digest ld = g->launch_digest.peek();
    Nonce128 mnonce {};
    if (!random_bytes(mnonce))
        return make_unexpected(Status::HWERROR_PLATFORM);
    Mac256 measure = launch_measure_mac(g->keys.tik, m_params.api_major, m_params.api_minor, m_params.build, g->policy, ld, mnonce);
    std::array<uint8_t, kMeasureSize> out {};
    std::memcpy(out.data(), measure.data(), 32);
    std::memcpy(out.data() + 32, mnonce.data(), 16);
    TRY(write_dram(b.measure_paddr, out, mmu::KeyId::none()));
    g->ld = ld;
    g->measure = measure;
    b.measure_len = kMeasureSize;
    note("digest=" + to_hex(ld));
    transition(*g, GuestState::LSECRET);
    return {};
}

// LAUNCH_SECRET (0x34): SEV API 55766, LAUNCH_SECRET; AMD-ASPFW sev_mcmd.c.
Result<void, Status> Firmware::cmd_launch_secret(TransportBuf& b)
{
    note("handle=" + std::to_string(b.handle) + " guest=" + hex(b.guest_paddr) + " len=" + std::to_string(b.guest_len));
    TRY(check_platform_state());
    Guest* g = TRY(find_guest(b.handle));
    if (b.guest_paddr & 15)
        return make_unexpected(Status::INVALID_ADDRESS);
    if (b.hdr_len != kPacketHeaderSize || b.guest_len == 0 || (b.guest_len & 15) || b.guest_len > kTransportMax
        || b.guest_len != b.trans_len)
        return make_unexpected(Status::INVALID_LEN);
    TRY(check_guest_state(*g));
    if (!g->asid)
        return make_unexpected(Status::INACTIVE);

    std::array<uint8_t, kPacketHeaderSize> hdr_bytes {};
    TRY(read_dram(b.hdr_paddr, hdr_bytes, mmu::KeyId::none()));
    Bytes ciphertext(b.trans_len);
    TRY(read_dram(b.trans_paddr, ciphertext, mmu::KeyId::none()));
    TRY(check_range(b.guest_paddr, b.guest_len));
    auto hdr = packet_header_from_bytes(hdr_bytes);
    if (!hdr)
        return make_unexpected(Status::INVALID_LEN);
    Iv128 iv {};
    std::memcpy(iv.data(), hdr->iv, 16);
    // The MAC binds the secret to this launch's measurement: a secret made for another guest
    // (or for this guest with different contents) is refused.
    Mac256 mac = packet_mac(g->keys.tik, kContextSecret, hdr->flags, iv, b.guest_len, b.trans_len, ciphertext, g->measure);
    if (!equal_ct(mac, std::span<const uint8_t>(hdr->mac, 32)))
        return make_unexpected(Status::BAD_MEASUREMENT);
    if (hdr->flags & kPacketFlagCompressed)
        return make_unexpected(Status::UNSUPPORTED);
    auto plain = aes128_ctr(g->keys.tek, iv, ciphertext);
    if (!plain)
        return make_unexpected(Status::HWERROR_PLATFORM);
    auto w = write_dram(b.guest_paddr, *plain, mmu::KeyId::slot(g->asid));
    secure_zero(plain->data(), plain->size());
    return w;
}

// LAUNCH_FINISH (0x35): SEV API 55766, LAUNCH_FINISH; AMD-ASPFW sev_mcmd.c.
Result<void, Status> Firmware::cmd_launch_finish(HandleBuf& b)
{
    note("handle=" + std::to_string(b.handle));
    TRY(check_platform_state());
    Guest* g = TRY(find_guest(b.handle));
    TRY(check_guest_state(*g));
    g->launch_digest.reset();
    open_for_running(*g);
    return {};
}

// What LAUNCH_FINISH and RECEIVE_FINISH end with (AMD-ASPFW sev_mcmd.c): a pending activation
// becomes active, the channel's keys are erased (nothing more can be injected or received), and
// the guest is RUNNING.
void Firmware::open_for_running(Guest& g)
{
    if (g.activation == Activation::Pending) {
        g.activation = Activation::Active;
        set_asid(g.asid, AsidState::InUse, g.handle);
    }
    secure_zero(&g.keys, sizeof g.keys);
    g.has_channel = false;
    transition(g, GuestState::RUNNING);
}

// ATTESTATION (0x36), SEV API 55766 ATTESTATION, AMD-ASPFW sev_mcmd.c: the launch digest and policy, signed
// by the PEK.
Result<void, Status> Firmware::cmd_attestation(AttestationBuf& b)
{
    note("handle=" + std::to_string(b.handle));
    TRY(check_platform_state());
    Guest* g = TRY(find_guest(b.handle));
    TRY(check_guest_state(*g));
    if (b.length < kAttestationReportSize) {
        b.length = kAttestationReportSize;
        return make_unexpected(Status::INVALID_LEN);
    }
    TRY(check_range(b.paddr, kAttestationReportSize));
    AttestationReport r {};
    std::memcpy(r.mnonce, b.mnonce, 16);
    std::memcpy(r.launch_digest, g->ld.data(), 32);
    r.policy = g->policy;
    r.sig_usage = uint32_t(SevUsage::PEK);
    r.sig_algo = uint32_t(SevAlgo::ECDSA_SHA256);
    auto pek = p384_from_private(m_persistent.pek_priv);
    if (!pek)
        return make_unexpected(Status::HWERROR_PLATFORM);
    auto sig = ecdsa_p384_sign(pek->get(), HashAlgo::Sha256,
        std::span<const uint8_t>(reinterpret_cast<uint8_t const*>(&r), kAttestationSignedBytes));
    if (!sig)
        return make_unexpected(Status::HWERROR_PLATFORM);
    std::memcpy(r.sig_r, sig->r.data(), 72);
    std::memcpy(r.sig_s, sig->s.data(), 72);
    TRY(write_dram(b.paddr, std::span<const uint8_t>(reinterpret_cast<uint8_t const*>(&r), sizeof r), mmu::KeyId::none()));
    b.length = kAttestationReportSize;
    return {};
}

// ---------------------------------------------------------------------------------------------
// ASIDs (SEV API 55766, ACTIVATE / DEACTIVATE / DF_FLUSH; AMD-ASPFW sev_mcmd.c).

// ACTIVATE (0x21), check order (AMD-ASPFW mcmd_activate_common).
Result<void, Status> Firmware::cmd_activate(ActivateBuf& b)
{
    note("handle=" + std::to_string(b.handle) + " asid=" + std::to_string(b.asid));
    TRY(check_platform_state());
    Guest* g = TRY(find_guest(b.handle));
    if (b.asid == 0 || b.asid > effective_max_asid())
        return make_unexpected(Status::INVALID_ASID);
    // One ASID, one key: giving a second guest an ASID in use would let it read the first's memory.
    if (m_asids[b.asid].state == AsidState::Pending || m_asids[b.asid].state == AsidState::InUse)
        return make_unexpected(Status::ASID_OWNED);
    if (g->asid)
        return make_unexpected(Status::ACTIVE);
    return activate_common(*g, b.asid);
}

// ACTIVATE_EX (0x25): ACTIVATE with an APIC-ID list naming the CCXs to enable (AMD-ASPFW
// sev_mcmd_activate_ex + mcmd_activate_ex_common). Unlike ACTIVATE it may be repeated for a
// guest on the ASID it already has (to enable more CCXs). sevemu models one CCX, so the list is
// checked for size and readability only (QUIRKS.md).
Result<void, Status> Firmware::cmd_activate_ex(ActivateExBuf& b)
{
    note("handle=" + std::to_string(b.handle) + " asid=" + std::to_string(b.asid) + " numids=" + std::to_string(b.numids));
    TRY(check_platform_state());
    if (b.ex_len != kActivateExLength)
        return make_unexpected(Status::INVALID_PARAM);
    Guest* g = TRY(find_guest(b.handle));
    if (b.asid == 0 || b.asid > effective_max_asid())
        return make_unexpected(Status::INVALID_ASID);
    if (b.numids == 0 || b.numids > kMaxApicIds)
        return make_unexpected(Status::INVALID_PARAM);
    Bytes ids(size_t(b.numids) * 4);
    TRY(read_dram(b.ids_paddr, ids, mmu::KeyId::none()));
    if (g->asid) {
        TRY(check_guest_state(*g)); // not SENT
        if (g->asid != b.asid)
            return make_unexpected(Status::ACTIVE); // a guest has one ASID at a time
        return {};                                   // the same ASID: more CCXs (one here)
    }
    // An ASID another guest holds is "not clean" here: ASID_OWNED, after the SENT check.
    return activate_common(*g, b.asid);
}

// The part of ACTIVATE and ACTIVATE_EX for a guest without an ASID (AMD-ASPFW activate_common and
// sev_guest_activate).
Result<void, Status> Firmware::activate_common(Guest& g, uint32_t asid)
{
    TRY(check_guest_state(g)); // not SENT
    // Lines of the ASID's previous owner may still sit in caches tagged with this ASID: they must
    // be written back and flushed (WBINVD + DF_FLUSH) before a new key takes the ASID.
    if (m_asids[asid].state == AsidState::Dirty)
        return make_unexpected(Status::DFFLUSH_REQUIRED);
    if (m_asids[asid].state != AsidState::Clean)
        return make_unexpected(Status::ASID_OWNED);
    // SEV-ES guests use ASIDs below CPUID 8000_001F EDX, SEV guests the rest (AMD-ASPFW sev_mcmd.c; Linux
    // arch/x86/kvm/svm/sev.c min_sev_asid).
    if (g.es() ? asid >= m_params.min_sev_asid : asid < m_params.min_sev_asid)
        return make_unexpected(Status::INVALID_ASID);
    if (!m_mc.key_slot_port().program(asid, g.vek))
        return make_unexpected(Status::HWERROR_PLATFORM);
    g.asid = asid;
    // Running guests (re-activated after a DEACTIVATE) become valid at once; launching ones
    // are pending until LAUNCH_FINISH.
    if (g.state == GuestState::RUNNING || g.state == GuestState::SUPDATE) {
        g.activation = Activation::Active;
        set_asid(asid, AsidState::InUse, g.handle);
    } else {
        g.activation = Activation::Pending;
        set_asid(asid, AsidState::Pending, g.handle);
    }
    return {};
}

// DEACTIVATE (0x22): SEV API 55766, DEACTIVATE; AMD-ASPFW sev_mcmd.c.
Result<void, Status> Firmware::cmd_deactivate(HandleBuf& b)
{
    note("handle=" + std::to_string(b.handle));
    TRY(check_platform_state());
    Guest* g = TRY(find_guest(b.handle));
    TRY(check_guest_state(*g));
    if (!g->asid)
        return make_unexpected(Status::INACTIVE);
    uint32_t asid = g->asid;
    if (g->activation == Activation::Active) {
        // The guest ran: caches may hold its lines. The key stays in the slot (so those lines
        // can still be written back correctly) until DF_FLUSH finds the ASID clean.
        set_asid(asid, AsidState::Dirty, 0);
    } else {
        // Only pending: no core ever used the ASID; the firmware's own writes are flushed when
        // the slot is cleared.
        (void)m_mc.key_slot_port().clear(asid);
        set_asid(asid, AsidState::Clean, 0);
    }
    g->asid = 0;
    g->activation = Activation::Inactive;
    return {};
}

// DECOMMISSION (0x20): SEV API 55766, DECOMMISSION; AMD-ASPFW sev_mcmd.c.
Result<void, Status> Firmware::cmd_decommission(HandleBuf& b)
{
    note("handle=" + std::to_string(b.handle));
    TRY(check_platform_state());
    Guest* g = TRY(find_guest(b.handle));
    TRY(check_guest_state(*g));
    if (g->asid)
        return make_unexpected(Status::ACTIVE); // DEACTIVATE first
    transition(*g, GuestState::UNINIT);
    m_guests[g->handle - 1].reset();
    --m_guest_count;
    if (m_guest_count == 0)
        transition(PlatformState::INIT);
    return {};
}

// GUEST_STATUS (0x23), AMD-ASPFW sev_mcmd.c: an unknown handle is SUCCESS with state 0.
Result<void, Status> Firmware::cmd_guest_status(GuestStatusBuf& b)
{
    note("handle=" + std::to_string(b.handle));
    TRY(check_platform_state());
    auto found = find_guest(b.handle);
    if (!found) {
        b.state = uint8_t(GuestState::UNINIT);
        return {};
    }
    Guest* g = *found;
    TRY(check_guest_state(*g));
    b.policy = g->policy;
    b.asid = g->asid;
    b.state = uint8_t(g->state);
    note("state=" + std::string(guest_state_name(g->state)));
    return {};
}

// COPY (0x24), AMD-ASPFW sev_mcmd.c: page copy under the guest's key (used to move guest pages).
Result<void, Status> Firmware::cmd_copy(CopyBuf& b)
{
    note("handle=" + std::to_string(b.handle) + " src=" + hex(b.src_paddr) + " dst=" + hex(b.dst_paddr) + " len=" + std::to_string(b.length));
    TRY(check_platform_state());
    Guest* g = TRY(find_guest(b.handle));
    TRY(check_guest_state(*g));
    if (!g->asid)
        return make_unexpected(Status::INACTIVE);
    if (b.length == 0 || (b.length & 0xFFF))
        return make_unexpected(Status::INVALID_LEN);
    if ((b.src_paddr & 0xFFF) || (b.dst_paddr & 0xFFF))
        return make_unexpected(Status::INVALID_ADDRESS);
    TRY(check_range(b.src_paddr, b.length));
    TRY(check_range(b.dst_paddr, b.length));
    if (b.src_paddr == b.dst_paddr)
        return {}; // the first pages overlap: AMD-ASPFW succeeds without copying
    auto key = mmu::KeyId::slot(g->asid);
    return transfer(b.src_paddr, key, b.dst_paddr, key, b.length);
}

// DBG_DECRYPT (0x60) / DBG_ENCRYPT (0x61): SEV API 55766, DBG_DECRYPT / DBG_ENCRYPT; AMD-ASPFW sev_mcmd.c.
Result<void, Status> Firmware::debug_common(DebugBuf& b, bool decrypt)
{
    note("handle=" + std::to_string(b.handle) + " src=" + hex(b.src_paddr) + " dst=" + hex(b.dst_paddr) + " len=" + std::to_string(b.length));
    TRY(check_platform_state());
    if ((b.src_paddr & 15) || (b.dst_paddr & 15))
        return make_unexpected(Status::INVALID_ADDRESS);
    if (b.length & 15)
        return make_unexpected(Status::INVALID_LEN);
    Guest* g = TRY(find_guest(b.handle));
    TRY(check_guest_state(*g));
    // NODBG: the owner forbade the hypervisor to read or write its memory through the firmware.
    if (g->policy & policy::NODBG)
        return make_unexpected(Status::POLICY_FAILURE);
    if (!g->asid)
        return make_unexpected(Status::INACTIVE);
    TRY(check_range(b.src_paddr, b.length));
    TRY(check_range(b.dst_paddr, b.length));
    auto guest_key = mmu::KeyId::slot(g->asid);
    if (decrypt)
        return transfer(b.src_paddr, guest_key, b.dst_paddr, mmu::KeyId::none(), b.length);
    return transfer(b.src_paddr, mmu::KeyId::none(), b.dst_paddr, guest_key, b.length);
}

Result<void, Status> Firmware::cmd_dbg_decrypt(DebugBuf& b) { return debug_common(b, true); }
Result<void, Status> Firmware::cmd_dbg_encrypt(DebugBuf& b) { return debug_common(b, false); }

} // namespace sevemu::firmware
