// The guest owner's library and the `sevemu-owner` program (INTERFACES.md §5). The program is run
// as a user runs it: bad inputs must give one clear line and a non-zero exit, never a crash; what
// it writes must be accepted by the firmware side of the spec (firmware/crypto.h), which here
// plays the PSP: ECDH with the PDH private key, unwrap, MAC checks.
#include "firmware/crypto.h"
#include "firmware/sev_cert.h"
#include "tools/sevemu-owner/owner.h"

#include <array>
#include "tests/tools/owner_run.h"

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace sevemu;
using namespace sevemu::firmware;
namespace fs = std::filesystem;

namespace {

using sevemu::testing::run_owner;

struct TempDir {
    fs::path path;
    TempDir()
    {
        std::string templ = (fs::temp_directory_path() / "sevemu-owner-test-XXXXXX").string();
        REQUIRE(mkdtemp(templ.data()));
        path = templ;
    }
    ~TempDir() { fs::remove_all(path); }
    std::string operator/(std::string const& name) const { return (path / name).string(); }
};

Bytes slurp(fs::path const& p)
{
    std::ifstream in(p, std::ios::binary);
    REQUIRE(in);
    return Bytes(std::istreambuf_iterator<char>(in), {});
}

void spit(fs::path const& p, std::span<const uint8_t> data)
{
    std::ofstream out(p, std::ios::binary);
    out.write(reinterpret_cast<char const*>(data.data()), std::streamsize(data.size()));
}

void spit(fs::path const& p, std::string const& text)
{
    spit(p, std::span(reinterpret_cast<uint8_t const*>(text.data()), text.size()));
}

Bytes from_b64_file(fs::path const& p)
{
    Bytes b = slurp(p);
    auto d = from_base64(std::string_view(reinterpret_cast<char const*>(b.data()), b.size()));
    REQUIRE(d);
    return *d;
}

// A platform's PDH key pair and certificate (unsigned; `session` checks the form, not the chain).
struct Pdh {
    PKey key;
    Bytes cert;
};
Pdh make_pdh()
{
    Pdh p;
    p.key = p384_generate().value();
    p.cert = SevCert::make_ec(1, 55, SevUsage::PDH, SevAlgo::ECDH_SHA256, p.key.get()).value().serialize();
    return p;
}

// What the firmware does in LAUNCH_START with the owner's files (AMD-ASPFW sev_channel.c, sev_mcmd.c).
UnwrappedSession firmware_unwrap(Pdh const& pdh, Bytes const& godh_cert, Bytes const& session, uint32_t policy)
{
    auto godh = SevCert::from_bytes(godh_cert).value();
    REQUIRE(godh_cert_check(godh));
    auto godh_pub = godh.public_key().value();
    auto z = ecdh_p384(pdh.key.get(), godh_pub.get()).value();
    auto un = unwrap_session(z, session_blob_from_bytes(session).value(), policy);
    REQUIRE(un);
    return *un;
}

Bytes ref_hmac(Bytes const& key, Bytes const& msg)
{
    uint8_t out[32];
    unsigned len = 0;
    HMAC(EVP_sha256(), key.data(), int(key.size()), msg.data(), msg.size(), out, &len);
    return Bytes(out, out + len);
}

bool has(std::string const& text, std::string const& what) { return text.find(what) != std::string::npos; }

// Exactly one line of error output.
bool one_line(std::string const& text) { return !text.empty() && text.find('\n') == text.size() - 1; }

} // namespace

// ---------------------------------------------------------------------------------------------
// Library.

TEST_CASE("owner::make_session round-trips through the firmware-side unwrap", "[owner]")
{
    Pdh pdh = make_pdh();
    for (uint32_t policy : { 0u, 1u, 0x5u, 0x00170003u }) {
        auto s = owner::make_session(pdh.cert, policy);
        REQUIRE(s);
        CHECK(s->godh_cert.size() == kSevCertSize);
        CHECK(s->session_blob.size() == kSessionBlobSize);
        auto un = firmware_unwrap(pdh, s->godh_cert, s->session_blob, policy);
        CHECK(un.keys.tek == s->keys.tek);
        CHECK(un.keys.tik == s->keys.tik);
        // The host launching with another policy is caught.
        auto z = ecdh_p384(pdh.key.get(), SevCert::from_bytes(s->godh_cert)->public_key().value().get()).value();
        CHECK(unwrap_session(z, session_blob_from_bytes(s->session_blob).value(), policy ^ 1).error()
            == UnwrapError::PolicyMac);
    }
}

TEST_CASE("owner::make_session with fixed inputs matches vector B (PDH d=2, GODH d=3)", "[owner][kat]")
{
    Pdh pdh;
    pdh.key = p384_from_private(Bytes { 2 }).value();
    pdh.cert = SevCert::make_ec(0, 0, SevUsage::PDH, SevAlgo::ECDH_SHA256, pdh.key.get()).value().serialize();
    owner::SessionInputs in;
    in.godh = p384_from_private(Bytes { 3 }).value();
    for (uint8_t i = 0; i < 16; ++i)
        in.nonce[i] = i;
    in.keys.tek.fill(0x11);
    in.keys.tik.fill(0x22);
    in.wrap_iv.fill(0x33);
    auto s = owner::make_session(pdh.cert, 1, in);
    REQUIRE(s);
    CHECK(to_hex(s->session_blob)
        == "000102030405060708090a0b0c0d0e0f"
           "69f2bf0a93eec2626d0f173f9c199fe0099170535cbfbb9cd1999a8132eb38ba"
           "33333333333333333333333333333333"
           "1694c3a749a6a14a9b8fe0e9c17913cbd092b854ee231594b7b7c1ad51a70cce"
           "7c755d9385333694c8d35c958d1ae4ae99c15ae8163b769b6e2cf92cad09cb29");
}

TEST_CASE("owner::make_session refuses what is not a PDH", "[owner]")
{
    auto k = p384_generate().value();
    auto pek = SevCert::make_ec(0, 0, SevUsage::PEK, SevAlgo::ECDSA_SHA256, k.get()).value().serialize();
    auto r = owner::make_session(pek, 0);
    REQUIRE(!r);
    CHECK(has(r.error().message, "not a PDH"));
    CHECK(!owner::make_session(Bytes(100), 0));
    Bytes bad = make_pdh().cert;
    bad[0x20] ^= 1; // off the curve
    r = owner::make_session(bad, 0);
    REQUIRE(!r);
    CHECK(has(r.error().message, "curve"));
}

TEST_CASE("owner measurement and secret agree with the KATs (sev-tool test_calc_measurement; LAUNCH_SECRET)", "[owner][kat]")
{
    Key128 tik;
    std::copy_n(from_hex("66320db73158a35a255d051758e95ed4")->begin(), 16, tik.begin());
    Sha256Digest ld = sha256({});
    Bytes m = *from_hex("6faab2daae389bcd3405a05d6cafe33c0414f7bedd0bae19ba5f38b7fd1664ea"
                        "4fbe0bedbad6c86ae8f68971d103e554");
    CHECK(owner::verify_measurement(tik, m, { 0, 0x12, 0x0f }, 0, ld));
    CHECK(!owner::verify_measurement(tik, m, { 0, 0x11, 0x0f }, 0, ld));
    CHECK(!owner::verify_measurement(tik, m, { 0, 0x12, 0x0f }, 1, ld));
    CHECK(!owner::verify_measurement(tik, Bytes(m.begin(), m.end() - 1), { 0, 0x12, 0x0f }, 0, ld));

    Key128 tek, tik2;
    tek.fill(0x11);
    tik2.fill(0x22);
    Iv128 iv;
    iv.fill(0x55);
    Bytes meas(32, 0x44);
    meas.resize(48, 0x99); // mnonce is not part of the secret MAC
    std::string text = "0123456789abcdef0123456789abcdef";
    auto p = owner::build_secret(tek, tik2, meas, Bytes(text.begin(), text.end()), iv);
    REQUIRE(p);
    CHECK(to_hex(p->ciphertext) == "714a0fd53a9686be53ec6b029d7d9122993f1d7e0d37c7727541c9c3be937dec");
    CHECK(to_hex(p->header)
        == "00000000" + std::string(32, '5') + "1cdff74fb7d86c0a430b9b9fa4984f84d32c8d64d7162c9f4b8d98fe4e333d17");

    // Padding to 16-byte blocks; empty secret refused.
    auto short_secret = owner::build_secret(tek, tik2, meas, Bytes { 'x' }, iv);
    REQUIRE(short_secret);
    CHECK(short_secret->ciphertext.size() == 16);
    CHECK(!owner::build_secret(tek, tik2, meas, Bytes {}, iv));
}

// ---------------------------------------------------------------------------------------------
// The program.

TEST_CASE("sevemu-owner --help and usage errors", "[owner][cli]")
{
    for (std::string cmd : { "--help", "verify-chain --help", "session --help", "measurement verify --help",
             "secret build --help" }) {
        auto r = run_owner(cmd);
        INFO(cmd << "\n" << r.out);
        CHECK(r.code == 0);
        CHECK(has(r.out, "Usage"));
    }
    auto none = run_owner("");
    CHECK(none.code != 0);
    auto unknown = run_owner("frobnicate");
    CHECK(unknown.code != 0);
    CHECK(unknown.out == "sevemu-owner: unknown command 'frobnicate' (see --help)\n");
    auto unknown_sub = run_owner("measurement frob");
    CHECK(unknown_sub.code != 0);
    CHECK(has(unknown_sub.out, "unknown command 'measurement frob'"));
    CHECK(one_line(unknown_sub.out));
    CHECK(one_line(run_owner("secret").out));
    auto missing = run_owner("session --pdh x --name y");
    CHECK(missing.code != 0);
    CHECK(has(missing.out, "--policy"));
    auto range = run_owner("measurement verify --tik a --measurement b --api-major 300 --api-minor 0 --build 0 "
                           "--policy 0 --digest 00");
    CHECK(range.code != 0);
    auto negative = run_owner("session --pdh x --name y --policy -1");
    CHECK(negative.code != 0);
}

TEST_CASE("sevemu-owner verify-chain", "[owner][cli]")
{
    TempDir t;
    char const* env = std::getenv("SEVEMU_VECTORS");
    if (!env || !fs::is_directory(fs::path(env) / "sev-legacy")) {
        WARN("SEVEMU_VECTORS not set: verify-chain on real AMD chains SKIPPED");
    } else {
        for (std::string product : { "naples", "rome" }) {
            fs::create_directory(t.path / product);
            for (std::string n : { "ark", "ask", "cek", "oca", "pek", "pdh" })
                fs::copy_file(fs::path(env) / "sev-legacy" / (product + "_" + n + ".cert"), t.path / product / (n + ".cert"));
            auto r = run_owner("verify-chain " + (t / product));
            INFO(r.out);
            CHECK(r.code == 0);
            CHECK(has(r.out, "chain valid"));
            auto j = run_owner("verify-chain --json " + (t / product));
            CHECK(j.code == 0);
            CHECK(has(j.out, "\"valid\": true"));
        }
        // Swap in the other platform's PEK: the link is named.
        fs::copy_file(t.path / "naples" / "pek.cert", t.path / "rome" / "pek.cert", fs::copy_options::overwrite_existing);
        auto bad = run_owner("verify-chain " + (t / "rome"));
        INFO(bad.out);
        CHECK(bad.code == 1);
        CHECK(has(bad.out, "CEK -> PEK"));
        CHECK(one_line(bad.out));
        // Without the AMD part.
        fs::remove(t.path / "naples" / "ark.cert");
        auto no_ark = run_owner("verify-chain " + (t / "naples"));
        CHECK(no_ark.code == 1);
        CHECK(has(no_ark.out, "ark.cert"));
        auto partial = run_owner("verify-chain --no-amd " + (t / "naples"));
        CHECK(partial.code == 0);
        // A truncated certificate.
        Bytes pdh = slurp(t.path / "naples" / "pdh.cert");
        pdh.resize(100);
        spit(t.path / "naples" / "pdh.cert", pdh);
        auto trunc = run_owner("verify-chain --no-amd " + (t / "naples"));
        CHECK(trunc.code == 1);
        CHECK(has(trunc.out, "pdh.cert"));
        CHECK(has(trunc.out, "size"));
    }
    // Certificates that are directories or oversized: named, with the reason.
    fs::create_directories(t.path / "odd" / "pdh.cert");
    auto odd = run_owner("verify-chain --no-amd " + (t / "odd"));
    CHECK(odd.code == 1);
    CHECK(has(odd.out, "pdh.cert: is a directory"));
    CHECK(one_line(odd.out));
    auto missing = run_owner("verify-chain " + (t / "nope"));
    CHECK(missing.code == 1);
    CHECK(has(missing.out, "not a directory"));
    CHECK(one_line(missing.out));
    fs::create_directory(t.path / "empty");
    auto empty = run_owner("verify-chain " + (t / "empty"));
    CHECK(empty.code == 1);
    CHECK(has(empty.out, "pdh.cert"));
}

TEST_CASE("sevemu-owner session writes what the firmware accepts", "[owner][cli]")
{
    TempDir t;
    Pdh pdh = make_pdh();
    spit(t.path / "pdh.cert", pdh.cert);
    auto r = run_owner("session --pdh " + (t / "pdh.cert") + " --policy 0x5 --name " + (t / "guest"));
    INFO(r.out);
    REQUIRE(r.code == 0);
    Bytes godh = from_b64_file(t / "guest_godh.b64");
    Bytes session = from_b64_file(t / "guest_session.b64");
    Bytes tek = slurp(t / "guest_tek.bin");
    Bytes tik = slurp(t / "guest_tik.bin");
    REQUIRE(godh.size() == 0x824);
    REQUIRE(session.size() == 0x80);
    REQUIRE(tek.size() == 16);
    REQUIRE(tik.size() == 16);
    auto un = firmware_unwrap(pdh, godh, session, 5);
    CHECK(Bytes(un.keys.tek.begin(), un.keys.tek.end()) == tek);
    CHECK(Bytes(un.keys.tik.begin(), un.keys.tik.end()) == tik);
    // Policy MAC covers 5, not 4.
    CHECK(ref_hmac(tik, Bytes { 5, 0, 0, 0 }) == Bytes(session.begin() + 0x60, session.end()));

    auto j = run_owner("session --json --pdh " + (t / "pdh.cert") + " --policy 1 --name " + (t / "g2"));
    CHECK(j.code == 0);
    CHECK(has(j.out, "\"policy\": 1"));

    SECTION("bad inputs")
    {
        auto missing = run_owner("session --pdh " + (t / "none.cert") + " --policy 0 --name " + (t / "x"));
        CHECK(missing.code == 1);
        CHECK(has(missing.out, "no such file"));
        CHECK(one_line(missing.out));
        spit(t.path / "short.cert", Bytes(0x823));
        auto short_cert = run_owner("session --pdh " + (t / "short.cert") + " --policy 0 --name " + (t / "x"));
        CHECK(short_cert.code == 1);
        CHECK(has(short_cert.out, "2084 bytes"));
        Bytes bad_version = pdh.cert;
        bad_version[0] = 2;
        spit(t.path / "v2.cert", bad_version);
        auto v2 = run_owner("session --pdh " + (t / "v2.cert") + " --policy 0 --name " + (t / "x"));
        CHECK(v2.code == 1);
        CHECK(has(v2.out, "version"));
        auto dir = run_owner("session --pdh " + t.path.string() + " --policy 0 --name " + (t / "x"));
        CHECK(dir.code == 1);
        CHECK(has(dir.out, "directory"));
        auto unwritable = run_owner("session --pdh " + (t / "pdh.cert") + " --policy 0 --name " + (t / "no/such/dir/x"));
        CHECK(unwritable.code == 1);
        CHECK(has(unwritable.out, "cannot create"));
        // One of the four outputs cannot be written (x_tik.bin is a directory): none appears.
        fs::create_directory(t.path / "x_tik.bin");
        auto partial = run_owner("session --pdh " + (t / "pdh.cert") + " --policy 0 --name " + (t / "x"));
        CHECK(partial.code == 1);
        CHECK(has(partial.out, "x_tik.bin: is a directory"));
        for (char const* f : { "x_godh.b64", "x_session.b64", "x_tek.bin" })
            CHECK_FALSE(fs::exists(t.path / f));
        // The PDH is a device or a FIFO, or larger than a certificate: named, with the reason.
        auto zero = run_owner("session --pdh /dev/zero --policy 0 --name " + (t / "x"));
        CHECK(zero.code == 1);
        CHECK(has(zero.out, "/dev/zero: not a regular file"));
        REQUIRE(::mkfifo((t.path / "fifo").c_str(), 0600) == 0);
        auto fifo = run_owner("session --pdh " + (t / "fifo") + " --policy 0 --name " + (t / "x"));
        CHECK(fifo.code == 1);
        CHECK(has(fifo.out, "FIFO"));
        spit(t.path / "long.cert", Bytes(0x825));
        auto long_cert = run_owner("session --pdh " + (t / "long.cert") + " --policy 0 --name " + (t / "x"));
        CHECK(long_cert.code == 1);
        CHECK(has(long_cert.out, "larger than the 2084-byte limit"));
        auto bad_policy = run_owner("session --pdh " + (t / "pdh.cert") + " --policy banana --name " + (t / "x"));
        CHECK(bad_policy.code != 0);
        auto big_policy = run_owner("session --pdh " + (t / "pdh.cert") + " --policy 0x100000000 --name " + (t / "x"));
        CHECK(big_policy.code != 0);
    }
}

TEST_CASE("sevemu-owner measurement verify and secret build", "[owner][cli]")
{
    TempDir t;
    Key128 tik_key, tek_key;
    tik_key.fill(0x22);
    tek_key.fill(0x11);
    spit(t.path / "tik.bin", tik_key);
    spit(t.path / "tek.bin", tek_key);
    Sha256Digest ld = sha256(Bytes(4096, 0x90));
    Nonce128 mnonce;
    mnonce.fill(0x7e);
    // The firmware's LAUNCH_MEASURE for api 1.55 build 3, policy 1.
    Mac256 meas = launch_measure_mac(tik_key, 1, 55, 3, 1, ld, mnonce);
    Bytes m(meas.begin(), meas.end());
    m.insert(m.end(), mnonce.begin(), mnonce.end());
    std::string m_b64 = to_base64(m);
    std::string base = "measurement verify --tik " + (t / "tik.bin") + " --measurement " + m_b64
        + " --api-major 1 --api-minor 55 --build 3 --policy 1 ";

    auto ok = run_owner(base + "--digest " + to_hex(ld));
    INFO(ok.out);
    CHECK(ok.code == 0);
    CHECK(has(ok.out, "matches"));
    auto j = run_owner(base + "--json --digest " + to_hex(ld));
    CHECK(j.code == 0);
    CHECK(has(j.out, "\"match\": true"));

    Sha256Digest other = sha256(Bytes(4096, 0x91));
    auto mismatch = run_owner(base + "--digest " + to_hex(other));
    CHECK(mismatch.code == 1);
    CHECK(has(mismatch.out, "does not match"));
    CHECK(one_line(mismatch.out));
    auto jm = run_owner(base + "--json --digest " + to_hex(other));
    CHECK(jm.code == 1);
    CHECK(has(jm.out, "\"match\": false"));

    auto bad_b64 = run_owner("measurement verify --tik " + (t / "tik.bin")
        + " --measurement '***' --api-major 1 --api-minor 55 --build 3 --policy 1 --digest " + to_hex(ld));
    CHECK(bad_b64.code == 1);
    CHECK(has(bad_b64.out, "base64"));
    auto short_m = run_owner("measurement verify --tik " + (t / "tik.bin") + " --measurement "
        + to_base64(Bytes(47)) + " --api-major 1 --api-minor 55 --build 3 --policy 1 --digest " + to_hex(ld));
    CHECK(short_m.code == 1);
    CHECK(has(short_m.out, "48 bytes"));
    auto bad_digest = run_owner(base + "--digest abc");
    CHECK(bad_digest.code == 1);
    CHECK(has(bad_digest.out, "--digest"));
    auto short_digest = run_owner(base + "--digest 0011");
    CHECK(short_digest.code == 1);
    CHECK(has(short_digest.out, "32 bytes"));
    spit(t.path / "tik15.bin", Bytes(15));
    auto bad_tik = run_owner("measurement verify --tik " + (t / "tik15.bin") + " --measurement " + m_b64
        + " --api-major 1 --api-minor 55 --build 3 --policy 1 --digest " + to_hex(ld));
    CHECK(bad_tik.code == 1);
    CHECK(has(bad_tik.out, "16 bytes"));

    // secret build, then the firmware side checks and decrypts it (LAUNCH_SECRET, AMD-ASPFW sev_mcmd.c).
    std::string secret_text = "disk-key: correct horse battery staple";
    spit(t.path / "secret.txt", secret_text);
    std::string sb = "secret build --tik " + (t / "tik.bin") + " --tek " + (t / "tek.bin") + " --measurement " + m_b64;
    auto built = run_owner(sb + " --secret " + (t / "secret.txt") + " --out-header " + (t / "hdr.b64")
        + " --out-secret " + (t / "sec.b64"));
    INFO(built.out);
    REQUIRE(built.code == 0);
    Bytes hdr_bytes = from_b64_file(t / "hdr.b64");
    Bytes ct = from_b64_file(t / "sec.b64");
    REQUIRE(hdr_bytes.size() == kPacketHeaderSize);
    REQUIRE(ct.size() == 48); // 38 bytes padded to 48
    auto hdr = packet_header_from_bytes(hdr_bytes).value();
    Iv128 iv;
    std::copy_n(hdr.iv, 16, iv.begin());
    Mac256 mac = launch_secret_mac(tik_key, hdr.flags, iv, ct, meas);
    CHECK(equal_ct(mac, std::span<const uint8_t>(hdr.mac)));
    Bytes plain = aes128_ctr(tek_key, iv, ct).value();
    CHECK(std::string(plain.begin(), plain.begin() + long(secret_text.size())) == secret_text);
    // Bound to this measurement: another MEASURE gives another MAC.
    Mac256 other_meas = meas;
    other_meas[0] ^= 1;
    CHECK(!equal_ct(launch_secret_mac(tik_key, hdr.flags, iv, ct, other_meas), std::span<const uint8_t>(hdr.mac)));

    auto js = run_owner("--json " + sb + " --secret " + (t / "secret.txt") + " --out-header " + (t / "h2.b64")
        + " --out-secret " + (t / "s2.b64"));
    CHECK(js.code == 0);
    CHECK(has(js.out, "\"length\": 48"));

    spit(t.path / "empty.txt", std::string());
    auto empty = run_owner(sb + " --secret " + (t / "empty.txt") + " --out-header " + (t / "h.b64") + " --out-secret "
        + (t / "s.b64"));
    CHECK(empty.code == 1);
    CHECK(has(empty.out, "empty"));
    auto no_secret = run_owner(sb + " --secret " + (t / "nope.txt") + " --out-header " + (t / "h.b64")
        + " --out-secret " + (t / "s.b64"));
    CHECK(no_secret.code == 1);
    CHECK(has(no_secret.out, "nope.txt"));
    auto no_tek = run_owner("secret build --tik " + (t / "tik.bin") + " --tek " + (t / "missing.bin")
        + " --measurement " + m_b64 + " --secret " + (t / "secret.txt") + " --out-header " + (t / "h.b64")
        + " --out-secret " + (t / "s.b64"));
    CHECK(no_tek.code == 1);
    CHECK(has(no_tek.out, "missing.bin"));
    auto bad_m = run_owner("secret build --tik " + (t / "tik.bin") + " --tek " + (t / "tek.bin")
        + " --measurement Zm9v --secret " + (t / "secret.txt") + " --out-header " + (t / "h.b64") + " --out-secret "
        + (t / "s.b64"));
    CHECK(bad_m.code == 1);
    CHECK(has(bad_m.out, "48 bytes"));
    auto no_out = run_owner(sb + " --secret " + (t / "secret.txt"));
    CHECK(no_out.code != 0);

    SECTION("a failed secret build leaves no outputs (issue 9)")
    {
        std::string in = sb + " --secret " + (t / "secret.txt");
        // The second output cannot be written (its directory does not exist): the first must
        // not appear either.
        auto half = run_owner(in + " --out-header " + (t / "half_h.b64") + " --out-secret " + (t / "no/dir/s.b64"));
        CHECK(half.code == 1);
        CHECK(one_line(half.out));
        CHECK(has(half.out, "no/dir/s.b64"));
        CHECK_FALSE(fs::exists(t.path / "half_h.b64"));
        // The second output is a directory: refused, named, the first not written.
        fs::create_directory(t.path / "adir");
        auto to_dir = run_owner(in + " --out-header " + (t / "h3.b64") + " --out-secret " + (t / "adir"));
        CHECK(to_dir.code == 1);
        CHECK(has(to_dir.out, "adir: is a directory"));
        CHECK_FALSE(fs::exists(t.path / "h3.b64"));
        // An earlier build's outputs stay as they were when a new build fails.
        Bytes old_hdr = slurp(t.path / "hdr.b64");
        auto keep = run_owner(in + " --out-header " + (t / "hdr.b64") + " --out-secret " + (t / "no/dir/s.b64"));
        CHECK(keep.code == 1);
        CHECK(slurp(t.path / "hdr.b64") == old_hdr);
        // The same file for both outputs.
        auto same = run_owner(in + " --out-header " + (t / "same.b64") + " --out-secret " + (t / "same.b64"));
        CHECK(same.code == 1);
        CHECK_FALSE(fs::exists(t.path / "same.b64"));
        // Inputs that are not regular files or too large: named with the reason.
        auto dir_secret = run_owner(sb + " --secret " + t.path.string() + " --out-header " + (t / "h4.b64")
            + " --out-secret " + (t / "s4.b64"));
        CHECK(dir_secret.code == 1);
        CHECK(has(dir_secret.out, t.path.string() + ": is a directory"));
        auto zero_secret = run_owner(sb + " --secret /dev/zero --out-header " + (t / "h4.b64") + " --out-secret "
            + (t / "s4.b64"));
        CHECK(zero_secret.code == 1);
        CHECK(has(zero_secret.out, "/dev/zero: not a regular file"));
        {
            std::ofstream(t.path / "big.txt").close();
            fs::resize_file(t.path / "big.txt", (1u << 20) + 1);
        }
        auto big_secret = run_owner(sb + " --secret " + (t / "big.txt") + " --out-header " + (t / "h4.b64")
            + " --out-secret " + (t / "s4.b64"));
        CHECK(big_secret.code == 1);
        CHECK(has(big_secret.out, "larger than the 1 MiB limit"));
        auto dir_tik = run_owner("secret build --tik " + t.path.string() + " --tek " + (t / "tek.bin") + " --measurement "
            + m_b64 + " --secret " + (t / "secret.txt") + " --out-header " + (t / "h4.b64") + " --out-secret " + (t / "s4.b64"));
        CHECK(dir_tik.code == 1);
        CHECK(has(dir_tik.out, "is a directory"));
        spit(t.path / "tik17.bin", Bytes(17));
        auto long_tik = run_owner("secret build --tik " + (t / "tik17.bin") + " --tek " + (t / "tek.bin")
            + " --measurement " + m_b64 + " --secret " + (t / "secret.txt") + " --out-header " + (t / "h4.b64")
            + " --out-secret " + (t / "s4.b64"));
        CHECK(long_tik.code == 1);
        CHECK(has(long_tik.out, "larger than the 16-byte limit"));
        CHECK_FALSE(fs::exists(t.path / "h4.b64"));
        CHECK_FALSE(fs::exists(t.path / "s4.b64"));
        // No temporary files left anywhere.
        for (auto const& e : fs::directory_iterator(t.path))
            CHECK(e.path().filename().string().find(".tmp.") == std::string::npos);
    }
}

TEST_CASE("owner::verify_attestation_report checks the PEK signature and the nonce (SEV API 55766, ATTESTATION)", "[owner]")
{
    auto pek_key = p384_generate().value();
    auto pek = SevCert::make_ec(1, 55, SevUsage::PEK, SevAlgo::ECDSA_SHA256, pek_key.get()).value();
    // A report as the firmware lays it out, signed here with OpenSSL-backed primitives.
    Bytes report(0xD0, 0);
    for (int i = 0; i < 16; ++i)
        report[i] = uint8_t(0xa0 + i);
    Sha256Digest ld = sha256(Bytes(64, 3));
    std::copy(ld.begin(), ld.end(), report.begin() + 0x10);
    report[0x30] = 0x05; // policy
    report[0x34] = 0x02;
    report[0x35] = 0x10; // 0x1002
    report[0x38] = 0x02;
    auto sig = ecdsa_p384_sign(pek_key.get(), HashAlgo::Sha256, std::span(report).first(0x34)).value();
    std::copy(sig.r.begin(), sig.r.end(), report.begin() + 0x40);
    std::copy(sig.s.begin(), sig.s.end(), report.begin() + 0x88);

    Nonce128 mnonce;
    std::copy_n(report.begin(), 16, mnonce.begin());
    auto r = owner::verify_attestation_report(report, pek, mnonce);
    REQUIRE(r);
    CHECK(r->launch_digest == ld);
    CHECK(r->policy == 5);

    Nonce128 other = mnonce;
    other[0] ^= 1;
    auto replay = owner::verify_attestation_report(report, pek, other);
    REQUIRE(!replay);
    CHECK(has(replay.error().message, "another request"));
    for (size_t i : { 0x00u, 0x10u, 0x30u, 0x40u, 0x88u, 0xCFu }) {
        Bytes bad = report;
        bad[i] ^= 1;
        INFO(i);
        CHECK(!owner::verify_attestation_report(bad, pek));
    }
    Bytes wrong_usage = report;
    wrong_usage[0x34] = 0x01; // OCA
    CHECK(has(owner::verify_attestation_report(wrong_usage, pek).error().message, "not signed by a PEK"));
    CHECK(!owner::verify_attestation_report(Bytes(0xCF), pek));
    auto other_key = p384_generate().value();
    auto other_pek = SevCert::make_ec(1, 55, SevUsage::PEK, SevAlgo::ECDSA_SHA256, other_key.get()).value();
    CHECK(!owner::verify_attestation_report(report, other_pek));
}
