// SEV and AMD certificates against real AMD certificates (../shared/vectors, $SEVEMU_VECTORS) and
// freshly generated ones; every malformed input must be refused with an error value.
#include "firmware/amd_cert.h"
#include "firmware/cert_chain.h"
#include "firmware/sev_cert.h"

#include <catch2/catch.hpp>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <random>
#include <openssl/evp.h>
#include <string>

using namespace sevemu;
using namespace sevemu::firmware;

namespace {

std::optional<std::filesystem::path> vectors_dir()
{
    char const* env = std::getenv("SEVEMU_VECTORS");
    if (!env || !std::filesystem::is_directory(std::filesystem::path(env) / "sev-legacy"))
        return std::nullopt;
    return std::filesystem::path(env) / "sev-legacy";
}

#define REQUIRE_VECTORS(dir)                                                                       \
    auto dir##_opt = vectors_dir();                                                                \
    if (!dir##_opt) {                                                                              \
        WARN("SEVEMU_VECTORS not set or sev-legacy/ missing: real AMD certificate tests SKIPPED"); \
        return;                                                                                    \
    }                                                                                              \
    auto const& dir = *dir##_opt

Bytes slurp(std::filesystem::path const& p)
{
    std::ifstream in(p, std::ios::binary);
    REQUIRE(in);
    return Bytes(std::istreambuf_iterator<char>(in), {});
}

SevChain load_chain(std::filesystem::path const& dir, std::string const& product)
{
    auto sev = [&](char const* n) { return SevCert::parse(slurp(dir / (product + "_" + n + ".cert"))).value(); };
    auto amd = [&](char const* n) { return AmdCert::parse(slurp(dir / (product + "_" + n + ".cert"))).value(); };
    return SevChain { amd("ark"), amd("ask"), sev("cek"), sev("oca"), sev("pek"), sev("pdh") };
}

constexpr char const* kProducts[] = { "naples", "rome", "milan", "genoa", "turin" };

} // namespace

TEST_CASE("Real SEV chains (Naples, Rome) verify link by link", "[cert][vectors]")
{
    REQUIRE_VECTORS(dir);
    for (std::string product : { "naples", "rome" }) {
        INFO(product);
        SevChain c = load_chain(dir, product);
        auto report = verify_chain(c);
        if (!report)
            FAIL(report.error().message());
        CHECK(report->amd_rooted);
        REQUIRE(report->amd_product);
        CHECK(report->amd_product->size() > 0);

        // What real certificates contain (virtee/sev tests/naples, tests/rome).
        CHECK(c.cek->sig_usage_code(0) == uint32_t(SevUsage::ASK));
        CHECK(c.cek->sig_algo_code(0) == uint32_t(product == "naples" ? SevAlgo::RSA_SHA256 : SevAlgo::RSA_SHA384));
        CHECK(c.cek->slot_empty(1));
        CHECK(c.pek.algo() == SevAlgo::ECDSA_SHA256);
        CHECK(c.pdh.algo() == SevAlgo::ECDH_SHA256);
        CHECK(c.oca.sig_usage_code(0) == uint32_t(SevUsage::OCA));

        CHECK(sev_cert_validate(*c.cek, *c.ask));
        CHECK(sev_cert_validate(c.pek, *c.cek));
        CHECK(sev_cert_validate(c.pek, c.oca));
        CHECK(sev_cert_validate(c.oca, c.oca));
        CHECK(sev_cert_validate(c.pdh, c.pek));
        // Roles (AMD-ASPFW sev_cert.c sev_cert_validate, signer roles): no matching slot for the wrong signer.
        CHECK(sev_cert_validate(c.pdh, c.oca).error() == CertError::NoMatchingSlot);
        CHECK(sev_cert_validate(c.pek, c.ark->as_signer().value()).error() == CertError::NoMatchingSlot);
        CHECK(godh_cert_check(c.pdh));
    }
}

TEST_CASE("Real chains: a certificate from the other product's chain is refused, naming the link", "[cert][vectors]")
{
    REQUIRE_VECTORS(dir);
    SevChain c = load_chain(dir, "rome");
    SevChain n = load_chain(dir, "naples");
    SevChain mixed = load_chain(dir, "rome");
    mixed.pdh = n.pdh;
    auto r = verify_chain(mixed);
    REQUIRE(!r);
    CHECK(r.error().link == ChainLink::PEK_PDH);
    CHECK(r.error().message().find("PEK -> PDH") != std::string::npos);

    mixed = load_chain(dir, "rome");
    mixed.ask = n.ask;
    r = verify_chain(mixed);
    REQUIRE(!r);
    CHECK(r.error().link == ChainLink::ARK_ASK);
    CHECK(r.error().error == CertError::WrongIssuer);

    mixed = load_chain(dir, "rome");
    mixed.cek = n.cek;
    r = verify_chain(mixed);
    REQUIRE(!r);
    CHECK(r.error().link == ChainLink::ASK_CEK);

    mixed = load_chain(dir, "rome");
    mixed.oca = n.oca;
    r = verify_chain(mixed);
    REQUIRE(!r);
    CHECK(r.error().link == ChainLink::OCA_PEK);

    mixed = load_chain(dir, "rome");
    mixed.ark.reset();
    r = verify_chain(mixed);
    REQUIRE(!r);
    CHECK(r.error().link == ChainLink::ARK);
    CHECK(r.error().error == CertError::Missing);
    CHECK(verify_chain(mixed, false));
    (void)c;
}

TEST_CASE("ARK and ASK of every product parse, ASK verifies under ARK, key ids match", "[cert][vectors]")
{
    REQUIRE_VECTORS(dir);
    for (std::string product : kProducts) {
        INFO(product);
        Bytes ark_bytes = slurp(dir / (product + "_ark.cert"));
        Bytes ask_bytes = slurp(dir / (product + "_ask.cert"));
        auto ark = AmdCert::parse(ark_bytes);
        auto ask = AmdCert::parse(ask_bytes);
        REQUIRE(ark);
        REQUIRE(ask);
        unsigned bits = product == "naples" ? 2048 : 4096;
        CHECK(ark->modulus_bits() == bits);
        CHECK(ask->modulus_bits() == bits);
        CHECK(ark_bytes.size() == (bits == 2048 ? kAmdCertSize2K : kAmdCertSize4K));
        CHECK(ark->usage() == AmdKeyUsage::ARK);
        CHECK(ask->usage() == AmdKeyUsage::ASK);
        CHECK(ark->certifying_id() == ark->key_id());
        CHECK(ask->certifying_id() == ark->key_id());
        CHECK(ark->verify(*ark));
        CHECK(ask->verify(*ark));
        CHECK(ark->serialize() == ark_bytes);
        CHECK(ask->serialize() == ask_bytes);
        auto name = known_ark_product(ark->key_id());
        REQUIRE(name);
        std::string lower(*name);
        for (auto& ch : lower)
            ch = char(std::tolower(ch));
        CHECK(lower == product);
        bool ask_known = false;
        for (auto const& r : known_amd_roots())
            ask_known |= r.ask_id == ask->key_id();
        CHECK(ask_known);
        // The ASK is not its own root and cannot sign.
        CHECK(!ark->verify(*ask));
        CHECK(!ask->verify(*ask));
        // SEND_START's AMD-certs buffer: ASK || ARK.
        Bytes both = ask_bytes;
        both.insert(both.end(), ark_bytes.begin(), ark_bytes.end());
        auto first = AmdCert::parse_prefix(both);
        REQUIRE(first);
        CHECK(first->second == ask_bytes.size());
        auto second = AmdCert::parse(std::span(both).subspan(first->second));
        REQUIRE(second);
        CHECK(*second == *ark);
    }
}

TEST_CASE("Every corrupted signature byte of a real certificate is refused", "[cert][vectors]")
{
    REQUIRE_VECTORS(dir);
    for (std::string product : { "naples", "rome" }) {
        INFO(product);
        SevChain c = load_chain(dir, product);
        // SEV certificates: ECDSA r||s (144 bytes) or the RSA signature (modulus bytes).
        struct Case {
            SevCert const* cert;
            unsigned slot;
            size_t sig_len;
            std::function<Result<void, CertError>(SevCert const&)> validate;
        };
        std::vector<Case> cases = {
            { &c.pdh, 0, 144, [&](SevCert const& x) { return sev_cert_validate(x, c.pek); } },
            { &c.pek, 0, 144, [&](SevCert const& x) { return sev_cert_validate(x, c.oca); } },
            { &c.pek, 1, 144, [&](SevCert const& x) { return sev_cert_validate(x, *c.cek); } },
            { &c.oca, 0, 144, [&](SevCert const& x) { return sev_cert_validate(x, c.oca); } },
            { &*c.cek, 0, c.ask->modulus_bits() / 8, [&](SevCert const& x) { return sev_cert_validate(x, *c.ask); } },
        };
        for (auto const& k : cases) {
            REQUIRE(k.validate(*k.cert));
            Bytes good = k.cert->serialize();
            size_t base = 0x414 + k.slot * 0x208 + 8;
            size_t refused = 0;
            for (size_t i = 0; i < k.sig_len; ++i) {
                Bytes bad = good;
                bad[base + i] ^= 0x01;
                auto cert = SevCert::from_bytes(bad).value();
                auto r = k.validate(cert);
                if (!r && r.error() == CertError::BadSignature)
                    ++refused;
            }
            CHECK(refused == k.sig_len);
            // And every body byte is covered by the signature.
            size_t body_refused = 0;
            for (size_t i = 0; i < kSevCertBodySize; i += 7) {
                Bytes bad = good;
                bad[i] ^= 0x80;
                auto cert = SevCert::from_bytes(bad).value();
                body_refused += !k.validate(cert);
            }
            CHECK(body_refused == (kSevCertBodySize + 6) / 7);
        }
        // AMD certificates: every signature byte of the ASK and of the ARK.
        for (AmdCert const* cert : { &*c.ask, &*c.ark }) {
            Bytes good = cert->serialize();
            size_t sig_off = good.size() - cert->modulus_bits() / 8;
            size_t refused = 0;
            for (size_t i = sig_off; i < good.size(); ++i) {
                Bytes bad = good;
                bad[i] ^= 0x01;
                auto parsed = AmdCert::parse(bad).value();
                refused += !parsed.verify(*c.ark);
            }
            CHECK(refused == good.size() - sig_off);
        }
    }
}

TEST_CASE("Real SEV certificates round-trip byte-identically", "[cert][vectors]")
{
    REQUIRE_VECTORS(dir);
    for (std::string product : { "naples", "rome" }) {
        for (char const* n : { "cek", "oca", "pek", "pdh" }) {
            INFO(product << " " << n);
            Bytes bytes = slurp(dir / (product + "_" + n + ".cert"));
            auto cert = SevCert::parse(bytes);
            REQUIRE(cert);
            CHECK(cert->serialize() == bytes);
            CHECK(cert->validate_body());
        }
    }
}

namespace {

struct FreshChain {
    PKey ark_key, ask_key, cek_key, oca_key, pek_key, pdh_key;
    std::optional<SevChain> chain;
};

FreshChain make_fresh_chain(unsigned rsa_bits)
{
    FreshChain f;
    f.ark_key = rsa_generate(rsa_bits).value();
    f.ask_key = rsa_generate(rsa_bits).value();
    AmdKeyId ark_id {}, ask_id {};
    ark_id.fill(0xa1);
    ask_id.fill(0xa2);
    auto ark = AmdCert::build(AmdKeyUsage::ARK, ark_id, ark_id, f.ark_key.get()).value();
    REQUIRE(ark.sign(f.ark_key.get()));
    auto ask = AmdCert::build(AmdKeyUsage::ASK, ask_id, ark_id, f.ask_key.get()).value();
    REQUIRE(ask.sign(f.ark_key.get()));

    f.cek_key = p384_generate().value();
    f.oca_key = p384_generate().value();
    f.pek_key = p384_generate().value();
    f.pdh_key = p384_generate().value();
    auto cek = SevCert::make_ec(1, 55, SevUsage::CEK, SevAlgo::ECDSA_SHA256, f.cek_key.get()).value();
    auto oca = SevCert::make_ec(1, 55, SevUsage::OCA, SevAlgo::ECDSA_SHA256, f.oca_key.get()).value();
    auto pek = SevCert::make_ec(1, 55, SevUsage::PEK, SevAlgo::ECDSA_SHA256, f.pek_key.get()).value();
    auto pdh = SevCert::make_ec(1, 55, SevUsage::PDH, SevAlgo::ECDH_SHA256, f.pdh_key.get()).value();

    // Signing needs the private key: the signer holds a copy of the key pair.
    CertSigner ask_signer { SevUsage::ASK, ask.sev_signer_algo(), PKey(EVP_PKEY_dup(f.ask_key.get())) };
    REQUIRE(cek.sign(0, ask_signer));
    CertSigner oca_signer { SevUsage::OCA, SevAlgo::ECDSA_SHA256, PKey(EVP_PKEY_dup(f.oca_key.get())) };
    REQUIRE(oca.sign(0, oca_signer));
    REQUIRE(pek.sign(0, oca_signer));
    CertSigner cek_signer { SevUsage::CEK, SevAlgo::ECDSA_SHA256, PKey(EVP_PKEY_dup(f.cek_key.get())) };
    REQUIRE(pek.sign(cek_signer).value() == 1);
    CertSigner pek_signer { SevUsage::PEK, SevAlgo::ECDSA_SHA256, PKey(EVP_PKEY_dup(f.pek_key.get())) };
    REQUIRE(pdh.sign(0, pek_signer));
    f.chain.emplace(SevChain { std::move(ark), std::move(ask), std::move(cek), std::move(oca), std::move(pek), std::move(pdh) });
    return f;
}

// RSA key generation dominates the run time: tests that only read a chain share one.
FreshChain const& shared_chain_2048()
{
    static FreshChain chain = make_fresh_chain(2048);
    return chain;
}

} // namespace

TEST_CASE("Freshly generated chains sign and verify (RSA-2048 and RSA-4096 AMD keys)", "[cert]")
{
    for (unsigned bits : { 2048u, 4096u }) {
        INFO(bits);
        auto f = make_fresh_chain(bits);
        auto r = verify_chain(*f.chain);
        if (!r)
            FAIL(r.error().message());
        CHECK(r->amd_rooted);
        CHECK(!r->amd_product); // not one of AMD's roots
        // Serialized and parsed again, still valid and identical.
        for (SevCert const* c : { &*f.chain->cek, &f.chain->oca, &f.chain->pek, &f.chain->pdh }) {
            auto again = SevCert::parse(c->serialize());
            REQUIRE(again);
            CHECK(*again == *c);
        }
        auto ark2 = AmdCert::parse(f.chain->ark->serialize());
        REQUIRE(ark2);
        CHECK(ark2->verify(*f.chain->ark));
        CHECK(f.chain->ark->size() == (bits == 2048 ? kAmdCertSize2K : kAmdCertSize4K));
    }
}

TEST_CASE("Signing into either slot; SHA-384 algorithms; no free slot", "[cert]")
{
    auto oca_key = p384_generate().value();
    auto pek_key = p384_generate().value();
    for (SevAlgo algo : { SevAlgo::ECDSA_SHA256, SevAlgo::ECDSA_SHA384 }) {
        auto oca = SevCert::make_ec(0, 0, SevUsage::OCA, algo, oca_key.get()).value();
        CertSigner oca_signer { SevUsage::OCA, algo, PKey(EVP_PKEY_dup(oca_key.get())) };
        REQUIRE(oca.sign(1, oca_signer)); // self-signature in slot 2
        CHECK(oca.slot_empty(0));
        CHECK(sev_cert_validate(oca, oca));
        auto pek = SevCert::make_ec(0, 0, SevUsage::PEK, SevAlgo::ECDSA_SHA256, pek_key.get()).value();
        REQUIRE(pek.sign(1, oca_signer));
        CHECK(sev_cert_validate(pek, oca));
        CHECK(pek.first_empty_slot() == 0u);
        REQUIRE(pek.sign(0, oca_signer));
        CHECK(!pek.sign(oca_signer)); // both taken
        CHECK(pek.sign(oca_signer).error() == CertError::NoFreeSlot);
    }
    // An ECDH key cannot sign.
    auto pdh_key = p384_generate().value();
    auto x = SevCert::make_ec(0, 0, SevUsage::PEK, SevAlgo::ECDSA_SHA256, pek_key.get()).value();
    CHECK(x.sign(0, CertSigner { SevUsage::PDH, SevAlgo::ECDH_SHA256, PKey(EVP_PKEY_dup(pdh_key.get())) }).error()
        == CertError::BadSignerKey);
}

TEST_CASE("sev_cert_validate follows AMD-ASPFW's order and codes (sev_cert.c)", "[cert]")
{
    auto const& f = shared_chain_2048();
    SevCert const& pek = f.chain->pek;
    SevCert const& oca = f.chain->oca;

    SECTION("half-empty slot is BAD_SIGNATURE and stops even after a good slot")
    {
        Bytes b = pek.serialize();
        // Slot 2 (the CEK's): keep the usage, clear the algo.
        std::memset(b.data() + 0x620, 0, 4);
        auto bad = SevCert::from_bytes(b).value();
        auto r = sev_cert_validate(bad, oca);
        REQUIRE(!r);
        CHECK(r.error() == CertError::HalfEmptySlot);
        CHECK(cert_error_status(r.error()) == 0x0A);
        CHECK(SevCert::parse(b).error() == CertError::HalfEmptySlot);
    }
    SECTION("no slot by this signer is INVALID_CERTIFICATE")
    {
        auto r = sev_cert_validate(f.chain->pdh, oca);
        REQUIRE(!r);
        CHECK(r.error() == CertError::NoMatchingSlot);
        CHECK(cert_error_status(r.error()) == 0x06);
    }
    SECTION("a valid signature by the wrong role is refused (OCA self-signing as a PDH signer)")
    {
        // A PDH-usage cert signed by the OCA key: signature valid, role wrong.
        auto k = p384_generate().value();
        auto pdh = SevCert::make_ec(0, 0, SevUsage::PDH, SevAlgo::ECDH_SHA256, k.get()).value();
        REQUIRE(pdh.sign(0, CertSigner { SevUsage::OCA, SevAlgo::ECDSA_SHA256, PKey(EVP_PKEY_dup(f.oca_key.get())) }));
        auto r = sev_cert_validate(pdh, oca);
        REQUIRE(!r);
        CHECK(r.error() == CertError::WrongSigner);
    }
    SECTION("bad body after a good signature: version is checked after the signature")
    {
        auto k = p384_generate().value();
        auto cert = SevCert::make_ec(0, 0, SevUsage::PEK, SevAlgo::ECDSA_SHA256, k.get()).value();
        Bytes b = cert.serialize();
        b[0] = 2; // version 2, then sign it so the signature is good
        auto v2 = SevCert::from_bytes(b).value();
        REQUIRE(v2.sign(0, CertSigner { SevUsage::OCA, SevAlgo::ECDSA_SHA256, PKey(EVP_PKEY_dup(f.oca_key.get())) }));
        auto r = sev_cert_validate(v2, oca);
        REQUIRE(!r);
        CHECK(r.error() == CertError::BadVersion);
        CHECK(SevCert::parse(v2.serialize()).error() == CertError::BadVersion);
    }
    SECTION("malformed signer is refused first")
    {
        CertSigner s { SevUsage::Invalid, SevAlgo::ECDSA_SHA256, PKey(EVP_PKEY_dup(f.oca_key.get())) };
        CHECK(sev_cert_validate(pek, s).error() == CertError::BadSignerKey);
        CertSigner wrong_kind { SevUsage::OCA, SevAlgo::RSA_SHA256, PKey(EVP_PKEY_dup(f.oca_key.get())) };
        CHECK(sev_cert_validate(pek, wrong_kind).error() == CertError::BadSignerKey);
    }
}

TEST_CASE("Malformed SEV certificates are refused", "[cert]")
{
    auto k = p384_generate().value();
    auto good = SevCert::make_ec(0, 0, SevUsage::PDH, SevAlgo::ECDH_SHA256, k.get()).value();
    Bytes g = good.serialize();
    REQUIRE(SevCert::parse(g));
    REQUIRE(godh_cert_check(good));

    auto refused = [](Bytes const& b) {
        auto r = SevCert::parse(b);
        REQUIRE(!r);
        return r.error();
    };
    CHECK(refused(Bytes(g.begin(), g.end() - 1)) == CertError::BadSize);
    CHECK(refused(Bytes()) == CertError::BadSize);
    Bytes longer = g;
    longer.push_back(0);
    CHECK(refused(longer) == CertError::BadSize);

    auto mutate = [&](size_t off, std::initializer_list<uint8_t> v) {
        Bytes b = g;
        std::copy(v.begin(), v.end(), b.begin() + long(off));
        return b;
    };
    CHECK(refused(mutate(0x000, { 2 })) == CertError::BadVersion);
    CHECK(refused(mutate(0x000, { 0 })) == CertError::BadVersion);
    CHECK(refused(mutate(0x006, { 1 })) == CertError::ReservedNonZero);
    CHECK(refused(mutate(0x008, { 0x05, 0x10 })) == CertError::BadUsage);   // 0x1005
    CHECK(refused(mutate(0x008, { 0x13, 0x00 })) == CertError::BadUsage);   // ASK usage in an SEV cert
    CHECK(refused(mutate(0x00C, { 0x04, 0x00 })) == CertError::BadAlgo);    // 0x004
    CHECK(refused(mutate(0x00C, { 0x00, 0x00 })) == CertError::BadAlgo);    // INVALID
    CHECK(refused(mutate(0x00C, { 0x02, 0x00 })) == CertError::BadAlgo);    // PDH with ECDSA
    CHECK(refused(mutate(0x010, { 1 })) == CertError::BadCurve);            // P-256
    CHECK(refused(mutate(0x014, { uint8_t(g[0x14] ^ 1) })) == CertError::BadPoint);
    CHECK(refused(mutate(0x014 + 60, { 1 })) == CertError::BadPoint);      // coordinate padding
    CHECK(refused(mutate(0x414, { 0x02, 0x10 })) == CertError::HalfEmptySlot); // usage PEK, algo 0
    CHECK(refused(mutate(0x418, { 0x02 })) == CertError::HalfEmptySlot);       // usage INVALID, algo 2
    CHECK(refused(mutate(0x414, { 0x02, 0x10, 0, 0, 0x03 })) == CertError::BadAlgo); // ECDH "signature"
    CHECK(refused(mutate(0x41C, { 1 })) == CertError::ReservedNonZero);        // data in an empty slot

    // GODH rules (AMD-ASPFW sev_mcmd.c LAUNCH_START): algo exactly 0x3.
    auto k384 = SevCert::make_ec(0, 0, SevUsage::PDH, SevAlgo::ECDH_SHA384, k.get()).value();
    CHECK(godh_cert_check(k384).error() == CertError::BadAlgo);
    auto pek = SevCert::make_ec(0, 0, SevUsage::PEK, SevAlgo::ECDSA_SHA256, k.get()).value();
    CHECK(godh_cert_check(pek).error() == CertError::BadUsage);
    auto off_curve = SevCert::from_bytes(mutate(0x014, { uint8_t(g[0x14] ^ 1) })).value();
    CHECK(godh_cert_check(off_curve).error() == CertError::BadPoint);

    // make_ec refuses wrong inputs.
    auto rsa = rsa_generate(2048).value();
    CHECK(!SevCert::make_ec(0, 0, SevUsage::PEK, SevAlgo::ECDSA_SHA256, rsa.get()));
    CHECK(!SevCert::make_ec(0, 0, SevUsage::ASK, SevAlgo::ECDSA_SHA256, k.get()));
    CHECK(!SevCert::make_ec(0, 0, SevUsage::PEK, SevAlgo::RSA_SHA256, k.get()));
}

TEST_CASE("Malformed AMD certificates are refused", "[cert]")
{
    auto key = rsa_generate(2048).value();
    AmdKeyId id {};
    id.fill(7);
    auto ark = AmdCert::build(AmdKeyUsage::ARK, id, id, key.get()).value();
    REQUIRE(ark.sign(key.get()));
    Bytes g = ark.serialize();
    REQUIRE(g.size() == kAmdCertSize2K);
    REQUIRE(AmdCert::parse(g));

    auto refused = [](Bytes const& b) {
        auto r = AmdCert::parse(b);
        REQUIRE(!r);
        return r.error();
    };
    auto mutate = [&](size_t off, std::initializer_list<uint8_t> v) {
        Bytes b = g;
        std::copy(v.begin(), v.end(), b.begin() + long(off));
        return b;
    };
    CHECK(refused(Bytes(g.begin(), g.begin() + 0x3f)) == CertError::BadSize);
    CHECK(refused(Bytes(g.begin(), g.end() - 1)) == CertError::BadSize);
    Bytes longer = g;
    longer.push_back(0);
    CHECK(refused(longer) == CertError::BadSize);
    CHECK(refused(mutate(0x00, { 2 })) == CertError::BadVersion);
    CHECK(refused(mutate(0x24, { 0x12 })) == CertError::BadUsage);
    CHECK(refused(mutate(0x28, { 1 })) == CertError::ReservedNonZero);
    CHECK(refused(mutate(0x3C, { 0x00, 0x04 })) == CertError::BadKeySize); // modulus 1024
    CHECK(refused(mutate(0x3C, { 0xff, 0xff, 0xff, 0xff })) == CertError::BadKeySize);
    CHECK(refused(mutate(0x38, { 0x00, 0x20 })) == CertError::BadKeySize); // exp 8192 bits
    // A 4096-bit header on 2048-bit data: too short.
    CHECK(refused(mutate(0x38, { 0x00, 0x10, 0, 0, 0x00, 0x10 })) == CertError::BadSize);

    // Signing with a key of a different size is refused (no room for the signature).
    auto big = rsa_generate(4096).value();
    CHECK(ark.sign(big.get()).error() == CertError::BadSignerKey);
    // A certificate claiming another issuer.
    AmdKeyId other {};
    other.fill(8);
    auto ask = AmdCert::build(AmdKeyUsage::ASK, other, other, key.get()).value();
    REQUIRE(ask.sign(key.get()));
    CHECK(ask.verify(ark).error() == CertError::WrongIssuer);
}

TEST_CASE("Random corruption of certificates never crashes and never validates", "[cert][robust]")
{
    auto const& f = shared_chain_2048();
    std::mt19937_64 rng(0x5e7e3u);
    Bytes pek = f.chain->pek.serialize();
    Bytes ark = f.chain->ark->serialize();
    size_t sev_accepted = 0;
    for (int iter = 0; iter < 1500; ++iter) {
        Bytes b = pek;
        int flips = 1 + int(rng() % 4);
        for (int k = 0; k < flips; ++k)
            b[rng() % b.size()] ^= uint8_t(1 + rng() % 255);
        (void)SevCert::parse(b);
        auto c = SevCert::from_bytes(b).value();
        (void)c.public_key();
        (void)c.validate_body();
        auto r = sev_cert_validate(c, f.chain->oca);
        // Only flips outside the signed body and outside the OCA's slot may leave it valid.
        sev_accepted += bool(r);

        Bytes a = ark;
        a[rng() % 0x40] ^= uint8_t(1 + rng() % 255);
        if (rng() % 3 == 0)
            a.resize(rng() % a.size());
        auto parsed = AmdCert::parse_prefix(a);
        if (parsed)
            CHECK(!parsed->first.verify(*f.chain->ark)); // the header is signed
    }
    // Sanity: the sweep did land on the signed part most of the time.
    CHECK(sev_accepted < 750);
}
