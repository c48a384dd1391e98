// A whole launch with the guest owner's library (tools/sevemu-owner) at the far end: the owner
// opens a session against the exported PDH, checks the measurement and builds the secret; the
// firmware is driven through the mailbox as KVM drives it.
#include "fw_harness.h"
#include "owner_side.h"
#include "tools/sevemu-owner/owner.h"

#include <catch2/catch.hpp>

using namespace sevemu;
using namespace sevemu::test;

TEST_CASE("Owner session -> launch -> measurement verified -> secret injected -> finish", "[firmware][launch]")
{
    TestPlatform p;
    REQUIRE(p.probe() == 0);
    Bytes pdh = export_pdh(p);
    uint32_t policy = GENERATE(0x0u, uint32_t(policy::NODBG | policy::NOKS));
    INFO("policy " << policy);

    auto session = owner::make_session(pdh, policy);
    REQUIRE(session);
    constexpr uint64_t kCert = TestPlatform::kData + 0x8000, kSession = TestPlatform::kData + 0xA000;
    p.poke(kCert, session->godh_cert);
    p.poke(kSession, session->session_blob);
    LaunchStartBuf ls {};
    ls.policy = policy;
    ls.dh_cert_paddr = kCert;
    ls.dh_cert_len = uint32_t(session->godh_cert.size());
    ls.session_paddr = kSession;
    ls.session_len = uint32_t(session->session_blob.size());
    REQUIRE(p.run(CommandId::LAUNCH_START, ls) == 0);
    uint32_t h = ls.handle;
    REQUIRE(p.activate(h, 123) == 0);

    // Known pages: what the owner expects the hypervisor to load.
    Bytes image(2 * 4096);
    for (size_t i = 0; i < image.size(); ++i)
        image[i] = uint8_t(i * 13 + 1);
    p.poke(TestPlatform::kGuest, image);
    REQUIRE(p.update_data(h, TestPlatform::kGuest, 4096) == 0);
    REQUIRE(p.update_data(h, TestPlatform::kGuest + 4096, 4096) == 0);

    std::array<uint8_t, 48> m {};
    REQUIRE(p.measure(h, &m) == 0);
    owner::PlatformVersion ver { 1, 51, 3 };
    auto digest = sha256(image);
    REQUIRE(owner::verify_measurement(session->keys.tik, m, ver, policy, digest));
    // A different image, or a different policy, is caught by the owner.
    Bytes other = image;
    other[100] ^= 1;
    CHECK_FALSE(owner::verify_measurement(session->keys.tik, m, ver, policy, sha256(other)));
    CHECK_FALSE(owner::verify_measurement(session->keys.tik, m, ver, policy ^ 1, digest));

    std::string text = "the owner's disk key: 0123456789abcdef";
    Bytes secret(text.begin(), text.end());
    auto packet = owner::build_secret(session->keys.tek, session->keys.tik, m, secret);
    REQUIRE(packet);
    constexpr uint64_t kHdr = TestPlatform::kData + 0xC000, kTrans = TestPlatform::kData + 0xD000;
    constexpr uint64_t kSecretPa = TestPlatform::kGuest + 0x4000;
    p.poke(kHdr, packet->header);
    p.poke(kTrans, packet->ciphertext);
    TransportBuf tb {};
    tb.handle = h;
    tb.hdr_paddr = kHdr;
    tb.hdr_len = uint32_t(packet->header.size());
    tb.guest_paddr = kSecretPa;
    tb.guest_len = uint32_t(packet->ciphertext.size());
    tb.trans_paddr = kTrans;
    tb.trans_len = uint32_t(packet->ciphertext.size());
    REQUIRE(p.run(CommandId::LAUNCH_SECRET, tb) == 0);
    REQUIRE(p.finish(h) == 0);
    CHECK(p.guest_status(h).state == uint8_t(GuestState::RUNNING));

    // The hypervisor's view (no key) is ciphertext; the guest's view is the secret.
    Bytes host_view = p.peek(kSecretPa, secret.size());
    CHECK(host_view != secret);
    Bytes guest_view = p.peek(kSecretPa, secret.size(), mmu::KeyId::slot(123));
    CHECK(guest_view == secret);

    DebugBuf d {};
    d.handle = h;
    d.src_paddr = kSecretPa;
    d.dst_paddr = TestPlatform::kData + 0xE000;
    d.length = uint32_t(packet->ciphertext.size());
    if (policy & policy::NODBG) {
        CHECK(p.run(CommandId::DBG_DECRYPT, d) == st(Status::POLICY_FAILURE));
    } else {
        REQUIRE(p.run(CommandId::DBG_DECRYPT, d) == 0);
        CHECK(p.peek(d.dst_paddr, secret.size()) == secret);
    }
}
