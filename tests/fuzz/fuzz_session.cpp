// Fuzz harness `session`: what a guest owner hands the platform for a launch — the GODH
// certificate and the session blob, as base64 text the way sevemu reads `-object
// sev-guest,dh-cert-file=,session-file=` (emulator/sev_runtime.cpp read_base64_file, after
// QEMU's g_base64_decode), then LAUNCH_START, and a LAUNCH_SECRET packet (header + secret)
// for the launched guest, all through the PSP mailbox of the fixed platform (fuzz_fixed.h).
//
// Input: u32 policy, u8 flags (bit 0: the harness puts the correct MAC in the secret header,
// so the success path is reachable), u16 n + n bytes of GODH base64, u16 n + n bytes of session
// base64, u16 guest offset, 0x34 bytes packet header, then the secret's ciphertext.
// Properties checked:
//   - base64: what decodes re-encodes and decodes to the same bytes;
//   - no forgery: LAUNCH_START succeeds only with the reference GODH key and exactly the session
//     wrapped for it and this policy (nobody else knows the ECDH secret); with those and a
//     policy the platform accepts it must succeed;
//   - a refused LAUNCH_START leaves no guest; a refused LAUNCH_SECRET changes neither the guest's
//     state nor a byte of its memory;
//   - LAUNCH_SECRET succeeds only with the packet MAC computed with the session's TIK and the
//     launch measurement; with that MAC and valid lengths it must succeed, and then (policy
//     without NODBG) DBG_DECRYPT of the guest range gives AES-128-CTR(TEK, IV) of the ciphertext,
//     and no byte outside that range changed.
#include "fuzz_check.h"
#include "fuzz_fixed.h"

using namespace sevemu;
using namespace sevemu::fuzz;
using test::TestPlatform;

namespace {

constexpr uint64_t kCert = TestPlatform::kData + 0x8000;
constexpr uint64_t kSession = TestPlatform::kData + 0xA000;
constexpr uint64_t kHdr = TestPlatform::kData + 0xC000;
constexpr uint64_t kTrans = TestPlatform::kData + 0xD000;
constexpr uint64_t kPlain = TestPlatform::kData + 0x20000;

std::optional<Bytes> decode(std::span<uint8_t const> text)
{
    auto b = from_base64(std::string_view(reinterpret_cast<char const*>(text.data()), text.size()));
    if (b) {
        auto again = from_base64(to_base64(*b));
        FUZZ_CHECK(again && *again == *b, "base64 round trip differs");
    }
    return b;
}

bool same_point(Bytes const& cert, SevCert const& ref)
{
    if (cert.size() != kSevCertSize)
        return false;
    auto const& ec = ref.wire().pub_key.ec;
    size_t qx = offsetof(SevCertWire, pub_key) + offsetof(SevEcPubKeyWire, qx);
    return std::memcmp(cert.data() + qx, ec.qx, sizeof ec.qx) == 0
        && std::memcmp(cert.data() + qx + sizeof ec.qx, ec.qy, sizeof ec.qy) == 0;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(uint8_t const* data, size_t size)
{
    static FuzzPlatform platform;
    Reader in(data, size);
    uint32_t policy = in.u32();
    uint8_t flags = in.u8();
    auto godh = decode(in.take(in.u16()));
    auto session = decode(in.take(in.u16()));
    uint32_t guest_off = in.u16() & 0xFFF;
    auto hdr_in = in.take(kPacketHeaderSize);
    auto ct = in.take(0x1000);
    // sevemu refuses undecodable or empty files before the firmware sees them.
    if (!godh || !session || godh->empty() || session->empty() || godh->size() > 0x2000 || session->size() > 0x1000)
        return 0;

    auto& p = platform.fresh();
    auto const& ref = platform.ref();
    FUZZ_CHECK(p.probe() == 0, "INIT failed");
    p.poke(kCert, *godh);
    p.poke(kSession, *session);
    LaunchStartBuf b {};
    b.policy = policy;
    b.dh_cert_paddr = kCert;
    b.dh_cert_len = uint32_t(godh->size());
    b.session_paddr = kSession;
    b.session_len = uint32_t(session->size());
    uint16_t st = p.run(CommandId::LAUNCH_START, b);

    auto expected_blob = session_blob_bytes(reference_session(policy));
    bool blob_match = session->size() == kSessionBlobSize
        && std::equal(expected_blob.begin(), expected_blob.end(), session->begin());
    bool exact = *godh == ref.godh.serialize() && blob_match;
    unsigned want = (unsigned(policy::api_major(policy)) << 8) | policy::api_minor(policy);
    auto fw = fixed_params();
    unsigned have = (unsigned(fw.api_major) << 8) | fw.api_minor;
    bool policy_ok = !(policy & policy::RESERVED_MASK) && !(policy & policy::ES) && want <= have;
    if (st == 0)
        FUZZ_CHECK(same_point(*godh, ref.godh) && blob_match, "forgery: LAUNCH_START accepted a session not made for it");
    if (exact && policy_ok)
        FUZZ_CHECK(st == 0, "the reference session was refused (0x%x)", st);
    if (st != 0) {
        FUZZ_CHECK(p.fw->guest_count() == 0 && !p.fw->guest_state(1), "a refused LAUNCH_START left a guest");
        return 0;
    }
    uint32_t h = b.handle;

    // To LSECRET: activate, one page, measure.
    Bytes page(0x2000);
    for (size_t i = 0; i < page.size(); ++i)
        page[i] = uint8_t(i * 13 + 1);
    p.poke(TestPlatform::kGuest, page);
    std::array<uint8_t, 48> measure {};
    if (p.activate(h, 100) != 0)
        return 0; // an ES policy wants an ES ASID: not this harness's subject
    FUZZ_CHECK(p.update_data(h, TestPlatform::kGuest, 0x2000) == 0 && p.measure(h, &measure) == 0, "launch failed");

    PacketHeader hdr {};
    std::memcpy(&hdr, hdr_in.data(), hdr_in.size());
    Iv128 iv {};
    std::memcpy(iv.data(), hdr.iv, 16);
    Mac256 m {};
    std::memcpy(m.data(), measure.data(), 32);
    auto keys = reference_transport_keys();
    Mac256 right = packet_mac(keys.tik, kContextSecret, hdr.flags, iv, uint32_t(ct.size()), uint32_t(ct.size()), ct, m);
    if (flags & 1)
        std::memcpy(hdr.mac, right.data(), 32);
    bool mac_ok = std::memcmp(hdr.mac, right.data(), 32) == 0;
    p.poke(kHdr, packet_header_bytes(hdr));
    if (!ct.empty())
        p.poke(kTrans, ct.data(), ct.size());
    TransportBuf t {};
    t.handle = h;
    t.hdr_paddr = kHdr;
    t.hdr_len = kPacketHeaderSize;
    t.guest_paddr = TestPlatform::kGuest + guest_off;
    t.guest_len = t.trans_len = uint32_t(ct.size());
    t.trans_paddr = kTrans;
    Bytes raw_before = p.peek(TestPlatform::kGuest, 0x2000);
    auto state_before = p.fw->guest_state(h);
    uint16_t st2 = p.run(CommandId::LAUNCH_SECRET, t);
    Bytes raw_after = p.peek(TestPlatform::kGuest, 0x2000);

    bool valid = (guest_off % 16) == 0 && !ct.empty() && ct.size() % 16 == 0 && !(hdr.flags & kPacketFlagCompressed);
    if (st2 == 0)
        FUZZ_CHECK(mac_ok && valid, "LAUNCH_SECRET accepted a packet with a wrong MAC or layout");
    if (mac_ok && valid)
        FUZZ_CHECK(st2 == 0, "LAUNCH_SECRET refused a correct packet (0x%x)", st2);
    FUZZ_CHECK(p.fw->guest_state(h) == state_before, "LAUNCH_SECRET changed the guest state");
    if (st2 != 0) {
        FUZZ_CHECK(raw_after == raw_before, "a refused LAUNCH_SECRET wrote guest memory");
        return 0;
    }
    for (size_t i = 0; i < raw_before.size(); ++i)
        if (i < guest_off || i >= guest_off + ct.size())
            FUZZ_CHECK(raw_after[i] == raw_before[i], "LAUNCH_SECRET wrote outside its range at +0x%zx", i);
    if (policy & policy::NODBG)
        return 0;
    DebugBuf d {};
    d.handle = h;
    d.src_paddr = t.guest_paddr;
    d.dst_paddr = kPlain;
    d.length = t.guest_len;
    FUZZ_CHECK(p.run(CommandId::DBG_DECRYPT, d) == 0, "DBG_DECRYPT of the secret failed");
    auto plain = aes128_ctr(keys.tek, iv, ct);
    FUZZ_CHECK(plain && p.peek(kPlain, ct.size()) == *plain, "the guest does not hold the decrypted secret");
    return 0;
}
