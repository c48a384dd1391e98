// sevemu tests — SEV live migration between two independent platforms (two firmware instances,
// two platform directories), through the PSP mailbox as Linux's ccp driver drives it: SEND_START
// with the target's real PDH chain, SEND_UPDATE_DATA of every page, RECEIVE_START /
// RECEIVE_UPDATE_DATA / RECEIVE_FINISH on the target (SEV API 55766 SEND_* / RECEIVE_*;
// AMD-ASPFW sev_mcmd.c). The transport crypto is checked with OpenSSL directly (ECDH, the
// SP 800-108 KDF written out here, AES-128-CTR, HMAC-SHA256), never with firmware/crypto.
#include "tests/firmware/fw_harness.h"

#include <catch2/catch.hpp>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>

#include <algorithm>
#include <cstring>

using namespace sevemu;
using namespace sevemu::test;

namespace {

constexpr uint32_t kPages = 4;
constexpr uint64_t kPdhAt = TestPlatform::kData;                // 0x824 bytes
constexpr uint64_t kPlatAt = TestPlatform::kData + 0x1000;      // 3 * 0x824
constexpr uint64_t kAmdAt = TestPlatform::kData + 0x4000;       // ASK || ARK
constexpr uint64_t kSessionAt = TestPlatform::kData + 0x6000;
constexpr uint64_t kHdrAt = TestPlatform::kData + 0x7000;
constexpr uint64_t kTransAt = TestPlatform::kData + 0x8000;
constexpr uint64_t kExportPdh = TestPlatform::kData + 0xA000;
constexpr uint64_t kExportChain = TestPlatform::kData + 0xB000;

Bytes guest_pages(uint8_t seed)
{
    Bytes b(kPages * 4096);
    for (size_t i = 0; i < b.size(); ++i)
        b[i] = uint8_t(seed + i * 13 + (i >> 9));
    // A marker that must never be seen on the wire.
    std::memcpy(b.data() + 0x1230, "SEVEMU-PLAINTEXT-MARKER", 23);
    return b;
}

bool contains(Bytes const& hay, std::span<const uint8_t> needle)
{
    return std::search(hay.begin(), hay.end(), needle.begin(), needle.end()) != hay.end();
}

// A RUNNING guest holding `pages` at kGuest under ASID `asid`.
uint32_t launch(TestPlatform& p, uint32_t policy, uint32_t asid, Bytes const& pages)
{
    uint32_t h = 0;
    REQUIRE(p.launch_start(policy, h) == 0);
    REQUIRE(p.activate(h, asid) == 0);
    p.poke(TestPlatform::kGuest, pages);
    REQUIRE(p.update_data(h, TestPlatform::kGuest, uint32_t(pages.size())) == 0);
    REQUIRE(p.measure(h) == 0);
    REQUIRE(p.finish(h) == 0);
    REQUIRE(p.peek(TestPlatform::kGuest, pages.size(), mmu::KeyId::slot(asid)) == pages);
    return h;
}

struct Exported {
    Bytes pdh;   // 0x824
    Bytes chain; // PEK || OCA || CEK
};

Exported export_certs(TestPlatform& p)
{
    PdhCertExportBuf b {};
    b.pdh_cert_paddr = kExportPdh;
    b.pdh_cert_length = 0x824;
    b.certs_paddr = kExportChain;
    b.certs_length = 3 * 0x824;
    REQUIRE(p.run(CommandId::PDH_CERT_EXPORT, b) == 0);
    return { p.peek(kExportPdh, 0x824), p.peek(kExportChain, 3 * 0x824) };
}

struct Target {
    Bytes pdh;
    Bytes plat; // PEK || OCA || CEK
    Bytes amd;  // ASK || ARK
};

uint16_t send_start(TestPlatform& src, uint32_t handle, Target const& t, SendStartBuf* out = nullptr)
{
    src.poke(kPdhAt, t.pdh);
    src.poke(kPlatAt, t.plat);
    if (!t.amd.empty())
        src.poke(kAmdAt, t.amd);
    SendStartBuf b {};
    b.handle = handle;
    b.pdh_cert_paddr = kPdhAt;
    b.pdh_cert_len = uint32_t(t.pdh.size());
    b.plat_certs_paddr = kPlatAt;
    b.plat_certs_len = uint32_t(t.plat.size());
    b.amd_certs_paddr = kAmdAt;
    b.amd_certs_len = uint32_t(t.amd.size());
    b.session_paddr = kSessionAt;
    b.session_len = 0x80;
    uint16_t s = src.run(CommandId::SEND_START, b);
    if (out)
        *out = b;
    return s;
}

struct Packet {
    Bytes hdr;
    Bytes trans;
};

uint16_t send_page(TestPlatform& src, uint32_t handle, uint32_t page, Packet& out)
{
    TransportBuf b {};
    b.handle = handle;
    b.hdr_paddr = kHdrAt;
    b.hdr_len = 0x34;
    b.guest_paddr = TestPlatform::kGuest + page * 4096;
    b.guest_len = 4096;
    b.trans_paddr = kTransAt;
    b.trans_len = 4096;
    uint16_t s = src.run(CommandId::SEND_UPDATE_DATA, b);
    if (s == 0) {
        CHECK(b.hdr_len == 0x34);
        out = { src.peek(kHdrAt, 0x34), src.peek(kTransAt, 4096) };
    }
    return s;
}

uint16_t receive_start(TestPlatform& dst, uint32_t policy, Bytes const& sender_pdh, Bytes const& session, uint32_t& handle)
{
    dst.poke(kPdhAt, sender_pdh);
    dst.poke(kSessionAt, session);
    LaunchStartBuf b {};
    b.policy = policy;
    b.dh_cert_paddr = kPdhAt;
    b.dh_cert_len = uint32_t(sender_pdh.size());
    b.session_paddr = kSessionAt;
    b.session_len = uint32_t(session.size());
    uint16_t s = dst.run(CommandId::RECEIVE_START, b);
    handle = s == 0 ? b.handle : 0;
    return s;
}

uint16_t receive_page(TestPlatform& dst, uint32_t handle, uint32_t page, Packet const& pk)
{
    dst.poke(kHdrAt, pk.hdr);
    dst.poke(kTransAt, pk.trans);
    TransportBuf b {};
    b.handle = handle;
    b.hdr_paddr = kHdrAt;
    b.hdr_len = 0x34;
    b.guest_paddr = TestPlatform::kGuest + page * 4096;
    b.guest_len = uint32_t(pk.trans.size());
    b.trans_paddr = kTransAt;
    b.trans_len = uint32_t(pk.trans.size());
    return dst.run(CommandId::RECEIVE_UPDATE_DATA, b);
}

uint16_t handle_cmd(TestPlatform& p, CommandId id, uint32_t handle)
{
    HandleBuf b { handle };
    return p.run(id, b);
}

// --- An independent reference for the transport crypto: OpenSSL calls written out here.

Bytes hmac256(std::span<const uint8_t> key, std::span<const uint8_t> data)
{
    Bytes out(32);
    size_t n = 0;
    REQUIRE(EVP_Q_mac(nullptr, "HMAC", nullptr, "SHA256", nullptr, key.data(), key.size(), data.data(), data.size(),
                out.data(), out.size(), &n)
        != nullptr);
    REQUIRE(n == 32);
    return out;
}

void put_le32(Bytes& b, uint32_t v)
{
    for (int i = 0; i < 4; ++i)
        b.push_back(uint8_t(v >> (8 * i)));
}

// NIST SP 800-108 counter mode with HMAC-SHA256, 16-byte output (one block): SEV API 55766
// "Key derivation"; counter and bit length little-endian as AMD's firmware writes them.
Bytes kdf16(std::span<const uint8_t> key, std::string_view label, std::span<const uint8_t> context)
{
    Bytes msg;
    put_le32(msg, 1);
    msg.insert(msg.end(), label.begin(), label.end());
    msg.push_back(0);
    msg.insert(msg.end(), context.begin(), context.end());
    put_le32(msg, 128);
    Bytes k = hmac256(key, msg);
    k.resize(16);
    return k;
}

Bytes aes128_ctr_ref(std::span<const uint8_t> key, std::span<const uint8_t> iv, std::span<const uint8_t> in)
{
    EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
    REQUIRE(ctx);
    Bytes out(in.size());
    int n = 0, m = 0;
    REQUIRE(EVP_EncryptInit_ex(ctx, EVP_aes_128_ctr(), nullptr, key.data(), iv.data()) == 1);
    REQUIRE(EVP_EncryptUpdate(ctx, out.data(), &n, in.data(), int(in.size())) == 1);
    REQUIRE(EVP_EncryptFinal_ex(ctx, out.data() + n, &m) == 1);
    EVP_CIPHER_CTX_free(ctx);
    return out;
}

// A P-384 key of the test's own, and its SEV PDH certificate built byte by byte (SEV API 55766
// appendix "SEV certificate": version 1, usage PDH 0x1003, algo ECDH_SHA256 0x3, curve 2,
// little-endian 72-byte coordinates, both signature slots empty).
struct OwnPdh {
    EVP_PKEY* key {};
    Bytes cert;
    ~OwnPdh() { EVP_PKEY_free(key); }
};

void own_pdh(OwnPdh& o)
{
    o.key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-384");
    REQUIRE(o.key);
    uint8_t pub[97] = {};
    size_t n = 0;
    REQUIRE(EVP_PKEY_get_octet_string_param(o.key, OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof pub, &n) == 1);
    REQUIRE((n == 97 && pub[0] == 0x04));
    o.cert.assign(0x824, 0);
    auto le32 = [&](size_t off, uint32_t v) { std::memcpy(o.cert.data() + off, &v, 4); };
    le32(0x000, 1);
    le32(0x008, 0x1003);
    le32(0x00C, 0x3);
    le32(0x010, 2);
    for (int i = 0; i < 48; ++i) {
        o.cert[0x014 + i] = pub[1 + 47 - i];
        o.cert[0x05C + i] = pub[49 + 47 - i];
    }
    le32(0x414, 0x1000);
    le32(0x61C, 0x1000);
}

// ECDH between our key and the public key of an SEV certificate: the big-endian X coordinate.
Bytes ecdh_with_cert(EVP_PKEY* priv, Bytes const& cert)
{
    uint8_t pub[97];
    pub[0] = 0x04;
    for (int i = 0; i < 48; ++i) {
        pub[1 + i] = cert[0x014 + 47 - i];
        pub[49 + i] = cert[0x05C + 47 - i];
    }
    OSSL_PARAM_BLD* bld = OSSL_PARAM_BLD_new();
    REQUIRE(OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "secp384r1", 0) == 1);
    REQUIRE(OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof pub) == 1);
    OSSL_PARAM* params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX* fctx = EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr);
    EVP_PKEY* peer = nullptr;
    REQUIRE(EVP_PKEY_fromdata_init(fctx) == 1);
    REQUIRE(EVP_PKEY_fromdata(fctx, &peer, EVP_PKEY_PUBLIC_KEY, params) == 1);
    EVP_PKEY_CTX* dctx = EVP_PKEY_CTX_new(priv, nullptr);
    REQUIRE(EVP_PKEY_derive_init(dctx) == 1);
    REQUIRE(EVP_PKEY_derive_set_peer(dctx, peer) == 1);
    Bytes z(48);
    size_t zn = z.size();
    REQUIRE(EVP_PKEY_derive(dctx, z.data(), &zn) == 1);
    REQUIRE(zn == 48);
    EVP_PKEY_CTX_free(dctx);
    EVP_PKEY_free(peer);
    EVP_PKEY_CTX_free(fctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    return z;
}

// Two platform directories that trust the same (sevemu test) AMD root, as two chips of one
// generation do: the second gets the first's ARK and ASK, and its own CEK signed by that ASK.
struct SharedRoots {
    TempDir a { "mig-src" };
    TempDir b { "mig-dst" };
    SharedRoots(CpuModel model)
    {
        auto store = PlatformStore::open(a.path);
        REQUIRE(store.has_value());
        auto params = FirmwareParams::for_model(model);
        REQUIRE((*store)->amd_chain(model, params.api_major, params.api_minor).has_value());
        for (auto const& gen : fs::directory_iterator(a.path / "roots")) {
            fs::create_directories(b.path / "roots" / gen.path().filename());
            for (char const* f : { "ark.pem", "ask.pem", "ark.cert", "ask.cert" })
                fs::copy_file(gen.path() / f, b.path / "roots" / gen.path().filename() / f);
        }
    }
};

// The target as the source's VMM learns it (QEMU's migrate-set-sev-info): PDH, PEK || OCA || CEK
// where the CEK is the ASK-signed one AMD's KDS would serve, and ASK || ARK.
Target target_of(TestPlatform& t)
{
    auto e = export_certs(t);
    auto chain = t.store->amd_chain(t.fw->params().model, t.fw->params().api_major, t.fw->params().api_minor);
    REQUIRE(chain.has_value());
    Bytes plat(e.chain.begin(), e.chain.begin() + 2 * 0x824);
    Bytes cek = chain->cek.serialize();
    plat.insert(plat.end(), cek.begin(), cek.end());
    Bytes amd = chain->ask.serialize();
    Bytes ark = chain->ark.serialize();
    amd.insert(amd.end(), ark.begin(), ark.end());
    return { e.pdh, plat, amd };
}

} // namespace

TEST_CASE("Migration between two platforms: every page arrives, the wire carries no plaintext", "[firmware][migration]")
{
    auto naples = FirmwareParams::for_model(CpuModel::Naples);
    SharedRoots roots(CpuModel::Naples);
    TestPlatform src(naples, roots.a.path), dst(naples, roots.b.path);
    REQUIRE(src.probe() == 0);
    REQUIRE(dst.probe() == 0);
    // SEV: send only to a genuine platform (the full ARK..PDH chain); API 0.17 minimum.
    uint32_t policy = policy::NODBG | policy::NOKS | policy::SEV | (0u << 16) | (17u << 24);
    Bytes pages = guest_pages(7);
    uint32_t sh = launch(src, policy, 5, pages);

    Target t = target_of(dst);
    SendStartBuf ss {};
    REQUIRE(send_start(src, sh, t, &ss) == 0);
    CHECK(ss.policy == policy);
    CHECK(ss.session_len == 0x80);
    CHECK(src.guest_status(sh).state == uint8_t(GuestState::SUPDATE));
    Bytes session = src.peek(kSessionAt, 0x80);

    std::vector<Packet> packets(kPages);
    for (uint32_t i = 0; i < kPages; ++i)
        REQUIRE(send_page(src, sh, i, packets[i]) == 0);
    REQUIRE(handle_cmd(src, CommandId::SEND_FINISH, sh) == 0);
    CHECK(src.guest_status(sh).state == uint8_t(GuestState::SENT));

    // Nothing of the plaintext is on the wire: not the marker, not any 32-byte run of a page.
    Bytes wire = session;
    for (auto const& pk : packets) {
        wire.insert(wire.end(), pk.hdr.begin(), pk.hdr.end());
        wire.insert(wire.end(), pk.trans.begin(), pk.trans.end());
    }
    CHECK_FALSE(contains(wire, std::span<const uint8_t>(reinterpret_cast<uint8_t const*>("SEVEMU-PLAINTEXT-MARKER"), 23)));
    for (size_t off = 0; off + 32 <= pages.size(); off += 32)
        REQUIRE_FALSE(contains(wire, std::span<const uint8_t>(pages).subspan(off, 32)));

    uint32_t th = 0;
    Bytes sender_pdh = export_certs(src).pdh;
    REQUIRE(receive_start(dst, policy, sender_pdh, session, th) == 0);
    CHECK(dst.guest_status(th).state == uint8_t(GuestState::RUPDATE));
    REQUIRE(dst.activate(th, 6) == 0);
    for (uint32_t i = 0; i < kPages; ++i)
        REQUIRE(receive_page(dst, th, i, packets[i]) == 0);
    REQUIRE(handle_cmd(dst, CommandId::RECEIVE_FINISH, th) == 0);
    CHECK(dst.guest_status(th).state == uint8_t(GuestState::RUNNING));
    CHECK(dst.guest_status(th).policy == policy);

    // The target's memory, read through its own key, is the source's plaintext; the DRAM
    // itself holds ciphertext.
    CHECK(dst.peek(TestPlatform::kGuest, pages.size(), mmu::KeyId::slot(6)) == pages);
    CHECK(dst.peek(TestPlatform::kGuest, pages.size()) != pages);

    // The trace shows every step.
    auto lines = dst.trace.captured();
    auto has = [&](std::string_view s) {
        return std::any_of(lines.begin(), lines.end(), [&](auto const& l) { return l.find(s) != std::string::npos; });
    };
    auto src_lines = src.trace.captured();
    for (std::string_view step : { "SEND_START", "SEND_UPDATE_DATA", "SEND_FINISH" })
        CHECK(std::any_of(src_lines.begin(), src_lines.end(), [&](auto const& l) { return l.find(step) != std::string::npos; }));
    CHECK(has("RECEIVE_START"));
    CHECK(has("RECEIVE_UPDATE_DATA"));
    CHECK(has("RECEIVE_FINISH"));
}

TEST_CASE("The transport crypto matches an independent OpenSSL computation", "[firmware][migration]")
{
    // The test is the target: it owns the PDH key, so it can run the ECDH, the KDF and the
    // unwrap itself and decrypt the packets. Policy 0: no chain checks, only the PDH's body.
    TestPlatform src;
    REQUIRE(src.probe() == 0);
    Bytes pages = guest_pages(42);
    uint32_t sh = launch(src, 0, 120, pages);
    OwnPdh own;
    own_pdh(own);
    Target t { own.cert, Bytes(3 * 0x824, 0), Bytes(1664, 0) };
    REQUIRE(send_start(src, sh, t) == 0);
    Bytes session = src.peek(kSessionAt, 0x80);
    Packet pk;
    REQUIRE(send_page(src, sh, 1, pk) == 0);

    Bytes z = ecdh_with_cert(own.key, export_certs(src).pdh);
    std::span<const uint8_t> s(session);
    Bytes master = kdf16(z, "sev-master-secret", s.subspan(0x00, 16));
    Bytes kek = kdf16(master, "sev-kek", {});
    Bytes kik = kdf16(master, "sev-kik", {});
    CHECK(hmac256(kik, s.subspan(0x10, 32)) == Bytes(session.begin() + 0x40, session.begin() + 0x60)); // wrap_mac
    Bytes tk = aes128_ctr_ref(kek, s.subspan(0x30, 16), s.subspan(0x10, 32));
    Bytes tek(tk.begin(), tk.begin() + 16), tik(tk.begin() + 16, tk.end());
    Bytes pol;
    put_le32(pol, 0);
    CHECK(hmac256(tik, pol) == Bytes(session.begin() + 0x60, session.end())); // policy_mac

    // Packet: flags 0, IV at +4, MAC at +0x14 over 0x02 || flags || IV || len || len || ciphertext.
    uint32_t flags = 0;
    std::memcpy(&flags, pk.hdr.data(), 4);
    CHECK(flags == 0);
    std::span<const uint8_t> iv(pk.hdr.data() + 4, 16);
    Bytes plain = aes128_ctr_ref(tek, iv, pk.trans);
    CHECK(plain == Bytes(pages.begin() + 4096, pages.begin() + 8192));
    Bytes macd { 0x02 };
    put_le32(macd, 0);
    macd.insert(macd.end(), iv.begin(), iv.end());
    put_le32(macd, 4096);
    put_le32(macd, 4096);
    macd.insert(macd.end(), pk.trans.begin(), pk.trans.end());
    CHECK(hmac256(tik, macd) == Bytes(pk.hdr.begin() + 0x14, pk.hdr.end()));
}

TEST_CASE("A changed byte of a packet or its header is BAD_MEASUREMENT and the target page stays as it was",
    "[firmware][migration]")
{
    TestPlatform src, dst;
    REQUIRE(src.probe() == 0);
    REQUIRE(dst.probe() == 0);
    Bytes pages = guest_pages(3);
    uint32_t sh = launch(src, 0, 130, pages);
    Target t = { export_certs(dst).pdh, Bytes(3 * 0x824, 0), Bytes(1664, 0) };
    REQUIRE(send_start(src, sh, t) == 0);
    Bytes session = src.peek(kSessionAt, 0x80);
    Packet pk;
    REQUIRE(send_page(src, sh, 0, pk) == 0);

    uint32_t th = 0;
    REQUIRE(receive_start(dst, 0, export_certs(src).pdh, session, th) == 0);
    REQUIRE(dst.activate(th, 131) == 0);
    Bytes before = dst.peek(TestPlatform::kGuest, 4096);

    struct Case {
        char const* what;
        bool in_header;
        size_t offset;
        uint8_t bit;
        Status expect;
    };
    for (Case c : { Case { "ciphertext byte", false, 100, 0x01, Status::BAD_MEASUREMENT },
             Case { "last ciphertext byte", false, 4095, 0x80, Status::BAD_MEASUREMENT },
             Case { "IV", true, 4, 0x01, Status::BAD_MEASUREMENT },
             Case { "MAC", true, 0x20, 0x10, Status::BAD_MEASUREMENT },
             Case { "flags bit 1", true, 0, 0x02, Status::BAD_MEASUREMENT },
             Case { "flags COMPRESSED", true, 0, 0x01, Status::UNSUPPORTED } }) {
        INFO(c.what);
        Packet bad = pk;
        (c.in_header ? bad.hdr : bad.trans)[c.offset] ^= c.bit;
        CHECK(receive_page(dst, th, 0, bad) == st(c.expect));
        CHECK(dst.peek(TestPlatform::kGuest, 4096) == before);
    }
    // A truncated packet (the lengths are MACed too).
    Packet shorter = pk;
    shorter.trans.resize(2048);
    CHECK(receive_page(dst, th, 0, shorter) == st(Status::BAD_MEASUREMENT));
    CHECK(dst.peek(TestPlatform::kGuest, 4096) == before);
    // The intact packet still goes in.
    REQUIRE(receive_page(dst, th, 0, pk) == 0);
    CHECK(dst.peek(TestPlatform::kGuest, 4096, mmu::KeyId::slot(131)) == Bytes(pages.begin(), pages.begin() + 4096));

    // A host that changes the policy at RECEIVE_START (clearing NODBG, say) fails the policy MAC.
    uint32_t other = 0;
    CHECK(receive_start(dst, policy::NODBG, export_certs(src).pdh, session, other) == st(Status::BAD_MEASUREMENT));
    // A session for another platform's PDH fails the wrap MAC.
    Bytes wrong = session;
    wrong[0x10] ^= 1;
    CHECK(receive_start(dst, 0, export_certs(src).pdh, wrong, other) == st(Status::BAD_MEASUREMENT));
}

TEST_CASE("SEND_* and RECEIVE_* states, length queries and policies", "[firmware][migration]")
{
    TestPlatform src, dst;
    REQUIRE(src.probe() == 0);
    REQUIRE(dst.probe() == 0);
    Bytes pages = guest_pages(5);
    Target t = { export_certs(dst).pdh, Bytes(3 * 0x824, 0), Bytes(1664, 0) };

    SECTION("length queries: SEND_START session_len, SEND_UPDATE_DATA hdr_len (before the handle)")
    {
        uint32_t sh = launch(src, 0, 140, pages);
        SendStartBuf q {};
        q.handle = sh;
        CHECK(src.run(CommandId::SEND_START, q) == st(Status::INVALID_LEN));
        CHECK(q.session_len == 0x80);
        CHECK(src.guest_status(sh).state == uint8_t(GuestState::RUNNING));
        TransportBuf u {};
        CHECK(src.run(CommandId::SEND_UPDATE_DATA, u) == st(Status::INVALID_LEN));
        CHECK(u.hdr_len == 0x34);
        CHECK(u.trans_len == 0); // AMD-ASPFW writes back hdr_len only
    }
    SECTION("wrong guest states are INVALID_GUEST_STATE")
    {
        uint32_t sh = launch(src, 0, 140, pages);
        Packet pk;
        CHECK(send_page(src, sh, 0, pk) == st(Status::INVALID_GUEST_STATE)); // RUNNING, not SUPDATE
        CHECK(handle_cmd(src, CommandId::SEND_FINISH, sh) == st(Status::INVALID_GUEST_STATE));
        CHECK(handle_cmd(src, CommandId::SEND_CANCEL, sh) == st(Status::INVALID_GUEST_STATE));
        CHECK(handle_cmd(src, CommandId::RECEIVE_FINISH, sh) == st(Status::INVALID_GUEST_STATE));
        REQUIRE(send_start(src, sh, t) == 0);
        CHECK(send_start(src, sh, t) == st(Status::INVALID_GUEST_STATE)); // already SUPDATE
        REQUIRE(handle_cmd(src, CommandId::SEND_FINISH, sh) == 0);
        CHECK(send_page(src, sh, 0, pk) == st(Status::INVALID_GUEST_STATE)); // SENT
        CHECK(send_start(src, sh, t) == st(Status::INVALID_GUEST_STATE));
        // A SENT guest's ASID cannot be given back to it: it never runs here again.
        REQUIRE(src.deactivate(sh) == 0);
        CHECK(src.activate(sh, 141) == st(Status::INVALID_GUEST_STATE));
        // A guest in LUPDATE cannot be sent.
        uint32_t lh = 0;
        REQUIRE(src.launch_start(0, lh) == 0);
        CHECK(send_start(src, lh, t) == st(Status::INVALID_GUEST_STATE));
        // The target: RECEIVE_UPDATE_DATA only in RUPDATE.
        uint32_t dh = dst.running_guest(0, 150);
        CHECK(receive_page(dst, dh, 0, Packet { Bytes(0x34, 0), Bytes(4096, 0) }) == st(Status::INVALID_GUEST_STATE));
    }
    SECTION("SEND_CANCEL returns the guest to RUNNING, unharmed, and it can be sent again")
    {
        uint32_t sh = launch(src, 0, 140, pages);
        REQUIRE(send_start(src, sh, t) == 0);
        Packet pk;
        REQUIRE(send_page(src, sh, 0, pk) == 0);
        REQUIRE(handle_cmd(src, CommandId::SEND_CANCEL, sh) == 0);
        CHECK(src.guest_status(sh).state == uint8_t(GuestState::RUNNING));
        CHECK(src.peek(TestPlatform::kGuest, pages.size(), mmu::KeyId::slot(140)) == pages);
        REQUIRE(send_start(src, sh, t) == 0);
        CHECK(send_page(src, sh, 0, pk) == 0);
    }
    SECTION("a session address outside DRAM is INVALID_ADDRESS and nothing changes")
    {
        uint32_t sh = launch(src, 0, 140, pages);
        src.poke(kPdhAt, t.pdh);
        SendStartBuf b {};
        b.handle = sh;
        b.pdh_cert_paddr = kPdhAt;
        b.pdh_cert_len = 0x824;
        b.session_paddr = TestPlatform::kDramSize + 0x1000;
        b.session_len = 0x80;
        CHECK(src.run(CommandId::SEND_START, b) == st(Status::INVALID_ADDRESS));
        CHECK(src.guest_status(sh).state == uint8_t(GuestState::RUNNING));
    }
    SECTION("RECEIVE_START refuses a policy above its API version, or with reserved bits (after the MAC)")
    {
        // LAUNCH_START without a session checks neither (AMD-ASPFW), so such guests can exist.
        for (uint32_t pol : { 2u << 16, 1u << 6 }) {
            INFO("policy " << pol);
            TestPlatform s2;
            REQUIRE(s2.probe() == 0);
            uint32_t sh = launch(s2, pol, 140, pages);
            REQUIRE(send_start(s2, sh, t) == 0);
            uint32_t th = 0;
            CHECK(receive_start(dst, pol, export_certs(s2).pdh, s2.peek(kSessionAt, 0x80), th) == st(Status::POLICY_FAILURE));
            CHECK(dst.fw->guest_count() == 0);
        }
    }
    SECTION("NOSEND refuses SEND_START")
    {
        uint32_t sh = launch(src, policy::NOSEND, 140, pages);
        CHECK(send_start(src, sh, t) == st(Status::POLICY_FAILURE));
        CHECK(src.guest_status(sh).state == uint8_t(GuestState::RUNNING));
    }
    SECTION("DOMAIN: a target with another OCA is POLICY_FAILURE")
    {
        uint32_t sh = launch(src, policy::DOMAIN, 140, pages);
        auto e = export_certs(dst);
        CHECK(send_start(src, sh, Target { e.pdh, e.chain, {} }) == st(Status::POLICY_FAILURE));
        // The wrong certificate sizes are INVALID_LEN.
        CHECK(send_start(src, sh, Target { e.pdh, Bytes(e.chain.begin(), e.chain.end() - 1), {} }) == st(Status::INVALID_LEN));
        CHECK(src.guest_status(sh).state == uint8_t(GuestState::RUNNING));
    }
    SECTION("a target PDH that is not an ECDH P-384 PDH is refused before any session is made")
    {
        uint32_t sh = launch(src, 0, 140, pages);
        Target bad = t;
        bad.pdh[0x00C] = 0x02; // algo ECDSA_SHA256: not a DH key
        CHECK(send_start(src, sh, bad) == st(Status::INVALID_CERTIFICATE));
        bad = t;
        bad.pdh[0x014] ^= 1; // the point leaves the curve (invalid-curve attack)
        CHECK(send_start(src, sh, bad) == st(Status::INVALID_CERTIFICATE));
        CHECK(src.guest_status(sh).state == uint8_t(GuestState::RUNNING));
    }
    SECTION("VMSA commands need an SEV-ES guest; RECEIVE_UPDATE_DATA needs an ASID")
    {
        uint32_t sh = launch(src, 0, 140, pages);
        REQUIRE(send_start(src, sh, t) == 0);
        TransportBuf v {};
        v.handle = sh;
        v.hdr_len = 0x34;
        CHECK(src.run(CommandId::SEND_UPDATE_VMSA, v) == st(Status::UNSUPPORTED));
        uint32_t th = 0;
        REQUIRE(receive_start(dst, 0, export_certs(src).pdh, src.peek(kSessionAt, 0x80), th) == 0);
        CHECK(receive_page(dst, th, 0, Packet { Bytes(0x34, 0), Bytes(4096, 0) }) == st(Status::INACTIVE));
    }
}

TEST_CASE("Policy SEV: the target's chain must lead to this platform's AMD root", "[firmware][migration]")
{
    auto naples = FirmwareParams::for_model(CpuModel::Naples);
    SharedRoots roots(CpuModel::Naples);
    TestPlatform src(naples, roots.a.path), dst(naples, roots.b.path);
    TestPlatform stranger(naples); // its own roots: another "vendor"
    REQUIRE(src.probe() == 0);
    REQUIRE(dst.probe() == 0);
    REQUIRE(stranger.probe() == 0);
    uint32_t policy = policy::SEV;
    uint32_t sh = launch(src, policy, 5, guest_pages(9));
    Target good = target_of(dst);

    SECTION("a PDH the target's PEK did not sign")
    {
        Target forged = good;
        forged.pdh = export_certs(stranger).pdh;
        CHECK(send_start(src, sh, forged) == st(Status::BAD_SIGNATURE));
        OwnPdh own;
        own_pdh(own);
        forged.pdh = own.cert; // no signature at all
        CHECK(send_start(src, sh, forged) == st(Status::INVALID_CERTIFICATE));
    }
    SECTION("a chain under another root is INVALID_CERTIFICATE")
    {
        CHECK(send_start(src, sh, target_of(stranger)) == st(Status::INVALID_CERTIFICATE));
    }
    SECTION("the genuine ASK and ARK over another platform's ASK-signed CEK is BAD_SIGNATURE")
    {
        // The ARK is ours and the ASK verifies under it, but that ASK never signed the stranger's
        // CEK (AMD-ASPFW sev_mcmd.c validate_platform: sev_cert_validate of the CEK with the ASK).
        Target mixed = target_of(stranger);
        mixed.amd = good.amd;
        CHECK(send_start(src, sh, mixed) == st(Status::BAD_SIGNATURE));
    }
    SECTION("the CEK as PDH_CERT_EXPORT gives it (not signed by the ASK)")
    {
        Target unsigned_cek = good;
        auto e = export_certs(dst);
        std::copy(e.chain.begin() + 2 * 0x824, e.chain.end(), unsigned_cek.plat.begin() + 2 * 0x824);
        CHECK(send_start(src, sh, unsigned_cek) == st(Status::INVALID_CERTIFICATE));
    }
    SECTION("a changed PEK signature byte")
    {
        Target bad = good;
        bad.plat[0x41C + 5] ^= 1;
        bad.plat[0x624 + 5] ^= 1;
        CHECK(send_start(src, sh, bad) == st(Status::BAD_SIGNATURE));
    }
    SECTION("the AMD certificate lengths")
    {
        Target bad = good;
        bad.amd.pop_back();
        CHECK(send_start(src, sh, bad) == st(Status::INVALID_LEN));
    }
    SECTION("the owner's minimum API version above the target's")
    {
        // LAUNCH_START without a session does not check the version (AMD-ASPFW), SEND_START does.
        uint32_t h2 = launch(src, policy::SEV | (1u << 16), 7, guest_pages(1));
        CHECK(send_start(src, h2, good) == st(Status::POLICY_FAILURE));
        CHECK(src.guest_status(h2).state == uint8_t(GuestState::RUNNING));
    }
    CHECK(src.guest_status(sh).state == uint8_t(GuestState::RUNNING));
    // And the good chain is accepted.
    CHECK(send_start(src, sh, good) == 0);
}

TEST_CASE("Without policy SEV the target's chain is not checked: a platform under another root receives the guest",
    "[firmware][migration]")
{
    // AMD-ASPFW sev_mcmd.c sev_mcmd_send_start: validate_platform runs only under
    // SEV_GUEST_POLICY_SEV_FLAG; otherwise only the PDH is copied. So the chains refused in the
    // test case above are accepted here, and the guest's pages arrive on the stranger platform.
    auto naples = FirmwareParams::for_model(CpuModel::Naples);
    SharedRoots roots(CpuModel::Naples);
    TestPlatform src(naples, roots.a.path), dst(naples, roots.b.path);
    TestPlatform stranger(naples); // its own roots
    REQUIRE(src.probe() == 0);
    REQUIRE(dst.probe() == 0);
    REQUIRE(stranger.probe() == 0);
    Bytes pages = guest_pages(21);
    uint32_t sh = launch(src, policy::NODBG, 5, pages);
    Target other = target_of(stranger);
    Target mixed = other;
    mixed.amd = target_of(dst).amd; // the genuine roots over a CEK they never signed
    Target no_chain { other.pdh, Bytes(3 * 0x824, 0), Bytes(0x40, 0) };
    for (Target const* t : { &mixed, &no_chain }) {
        REQUIRE(send_start(src, sh, *t) == 0);
        REQUIRE(handle_cmd(src, CommandId::SEND_CANCEL, sh) == 0);
    }
    // The whole migration toward the stranger, policy NODBG: every page arrives.
    SendStartBuf ss {};
    REQUIRE(send_start(src, sh, other, &ss) == 0);
    std::vector<Packet> packets(kPages);
    for (uint32_t i = 0; i < kPages; ++i)
        REQUIRE(send_page(src, sh, i, packets[i]) == 0);
    REQUIRE(handle_cmd(src, CommandId::SEND_FINISH, sh) == 0);
    uint32_t th = 0;
    REQUIRE(receive_start(stranger, policy::NODBG, export_certs(src).pdh, src.peek(kSessionAt, 0x80), th) == 0);
    REQUIRE(stranger.activate(th, 7) == 0);
    for (uint32_t i = 0; i < kPages; ++i)
        REQUIRE(receive_page(stranger, th, i, packets[i]) == 0);
    REQUIRE(handle_cmd(stranger, CommandId::RECEIVE_FINISH, th) == 0);
    CHECK(stranger.peek(TestPlatform::kGuest, pages.size(), mmu::KeyId::slot(7)) == pages);

    // The same targets for a guest whose policy has SEV are refused: the chain is read and fails.
    uint32_t checked = launch(src, policy::NODBG | policy::SEV, 6, pages);
    CHECK(send_start(src, checked, other) == st(Status::INVALID_CERTIFICATE));
    CHECK(send_start(src, checked, mixed) == st(Status::BAD_SIGNATURE));
    CHECK(send_start(src, checked, no_chain) == st(Status::INVALID_LEN)); // 0x40 bytes are no ASK || ARK
    CHECK(src.guest_status(checked).state == uint8_t(GuestState::RUNNING));
}

TEST_CASE("An SEV-ES guest's VMSA page moves with SEND/RECEIVE_UPDATE_VMSA", "[firmware][migration]")
{
    TestPlatform src, dst;
    REQUIRE(src.probe(kInitFlagEs) == 0);
    REQUIRE(dst.probe(kInitFlagEs) == 0);
    uint32_t h = 0;
    REQUIRE(src.launch_start(policy::ES, h) == 0);
    REQUIRE(src.activate(h, 10) == 0); // SEV-ES ASIDs are below min_sev_asid (100)
    Bytes vmsa = guest_pages(77);
    vmsa.resize(4096);
    src.poke(TestPlatform::kGuest, vmsa);
    LaunchUpdateBuf lu {};
    lu.handle = h;
    lu.paddr = TestPlatform::kGuest;
    lu.length = 4096;
    REQUIRE(src.run(CommandId::LAUNCH_UPDATE_VMSA, lu) == 0);
    REQUIRE(src.measure(h) == 0);
    REQUIRE(src.finish(h) == 0);
    Target t { export_certs(dst).pdh, Bytes(3 * 0x824, 0), Bytes(1664, 0) };
    REQUIRE(send_start(src, h, t) == 0);
    TransportBuf b {};
    b.handle = h;
    b.hdr_paddr = kHdrAt;
    b.hdr_len = 0x34;
    b.guest_paddr = TestPlatform::kGuest;
    b.guest_len = 4096;
    b.trans_paddr = kTransAt;
    b.trans_len = 4096;
    REQUIRE(src.run(CommandId::SEND_UPDATE_VMSA, b) == 0);
    Packet pk { src.peek(kHdrAt, 0x34), src.peek(kTransAt, 4096) };
    CHECK(pk.trans != vmsa);

    uint32_t th = 0;
    REQUIRE(receive_start(dst, policy::ES, export_certs(src).pdh, src.peek(kSessionAt, 0x80), th) == 0);
    REQUIRE(dst.activate(th, 11) == 0);
    dst.poke(kHdrAt, pk.hdr);
    dst.poke(kTransAt, pk.trans);
    b.handle = th;
    // A DATA command would accept the packet too (AMD-ASPFW uses MAC context 0x02 for both).
    REQUIRE(dst.run(CommandId::RECEIVE_UPDATE_VMSA, b) == 0);
    REQUIRE(handle_cmd(dst, CommandId::RECEIVE_FINISH, th) == 0);
    CHECK(dst.peek(TestPlatform::kGuest, 4096, mmu::KeyId::slot(11)) == vmsa);
}
