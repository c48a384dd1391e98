// Fuzz harness `certs`: SEV certificates (0x824 bytes) and AMD ARK/ASK certificates as a tool or
// the firmware receives them (firmware/sev_cert.h, firmware/amd_cert.h).
//
// Input: byte 0 chooses the kind (even: SEV certificate, odd: AMD certificate), byte 1 a bit
// to flip for the tamper check; the rest is the certificate.
// Properties checked:
//   - parse succeeds => serialize() gives back exactly the input bytes, from_bytes() agrees, the
//     body validates and the public key can be built (AMD: size() is the input size and
//     parse_prefix() consumes exactly it);
//   - parse_prefix() on any bytes consumes at most the input, and what it consumed parses alone;
//   - no forgery: a certificate that verifies against one of the fixed test keys (fuzz_fixed.h)
//     carries a body that key signed (the reference OCA, PEK, PDH, CEK, ARK, ASK); the seeds are
//     those certificates, so the success path is fuzzed too;
//   - tamper evidence: once it verifies, flipping any bit of the signed part makes it fail;
//   - the firmware's check (sev_cert_validate) never accepts what verify() refuses.
#include "fuzz_check.h"
#include "fuzz_fixed.h"

#include <vector>

using namespace sevemu;
using namespace sevemu::fuzz;

namespace {

struct SevSigner {
    char const* name;
    CertSigner signer;
    std::vector<Bytes> signed_bodies;
};

struct Keys {
    Reference ref;
    std::vector<SevSigner> sev;
    std::vector<Bytes> amd_signed; // what the RSA test key signed (ARK, ASK)
};

Bytes body_of(SevCert const& c) { return Bytes(c.body().begin(), c.body().end()); }

Keys& keys()
{
    static Keys k = [] {
        Keys k { make_reference(), {}, {} };
        auto cek = derive_cek(fixed_cuk());
        k.sev.push_back({ "OCA", signer(SevUsage::OCA, SevAlgo::ECDSA_SHA256, fixed_p384("sevemu-fuzz OCA")),
            { body_of(k.ref.oca), body_of(k.ref.pek) } });
        k.sev.push_back({ "CEK", signer(SevUsage::CEK, SevAlgo::ECDSA_SHA256, std::move(*cek)), { body_of(k.ref.pek) } });
        k.sev.push_back({ "PEK", signer(SevUsage::PEK, SevAlgo::ECDSA_SHA256, fixed_p384("sevemu-fuzz PEK")),
            { body_of(k.ref.pdh) } });
        auto ask = k.ref.ask.as_signer();
        k.sev.push_back({ "ASK", std::move(*ask), { body_of(k.ref.cek) } });
        k.amd_signed = { k.ref.ark.signed_part(), k.ref.ask.signed_part() };
        return k;
    }();
    return k;
}

bool contains(std::vector<Bytes> const& v, Bytes const& b)
{
    for (auto const& x : v)
        if (x == b)
            return true;
    return false;
}

void fuzz_sev(std::span<uint8_t const> in, unsigned flip)
{
    auto& k = keys();
    auto raw = SevCert::from_bytes(in);
    FUZZ_CHECK(raw.has_value() == (in.size() == kSevCertSize), "from_bytes size check");
    auto parsed = SevCert::parse(in);
    if (parsed) {
        auto out = parsed->serialize();
        FUZZ_CHECK(out.size() == in.size() && std::equal(out.begin(), out.end(), in.begin()), "SEV round trip differs");
        FUZZ_CHECK(*raw == *parsed, "from_bytes and parse disagree");
        FUZZ_CHECK(parsed->validate_body().has_value(), "parsed certificate has an invalid body");
        FUZZ_CHECK(parsed->public_key().has_value(), "parsed certificate has no usable key");
        auto again = SevCert::parse(out);
        FUZZ_CHECK(again && *again == *parsed, "re-parse of the serialised certificate differs");
    }
    if (!raw)
        return;
    for (auto const& s : k.sev) {
        bool verified = raw->verify(s.signer).has_value();
        bool validated = sev_cert_validate(*raw, s.signer).has_value();
        FUZZ_CHECK(!validated || verified, "sev_cert_validate accepted what verify refused (%s)", s.name);
        if (!verified)
            continue;
        FUZZ_CHECK(contains(s.signed_bodies, body_of(*raw)), "forgery: a body the %s key never signed verifies", s.name);
        Bytes tampered(in.begin(), in.end());
        unsigned bit = flip % (kSevCertBodySize * 8);
        tampered[bit / 8] ^= uint8_t(1u << (bit % 8));
        auto t = SevCert::from_bytes(tampered);
        FUZZ_CHECK(t && !t->verify(s.signer), "flipping body bit %u still verifies (%s)", bit, s.name);
    }
}

void fuzz_amd(std::span<uint8_t const> in, unsigned flip)
{
    auto& k = keys();
    auto parsed = AmdCert::parse(in);
    auto prefix = AmdCert::parse_prefix(in);
    if (prefix) {
        FUZZ_CHECK(prefix->second <= in.size() && prefix->second == prefix->first.size(), "parse_prefix length");
        auto alone = AmdCert::parse(in.first(prefix->second));
        FUZZ_CHECK(alone && *alone == prefix->first, "parse_prefix result does not parse alone");
    }
    if (!parsed)
        return;
    auto out = parsed->serialize();
    FUZZ_CHECK(out.size() == in.size() && std::equal(out.begin(), out.end(), in.begin()), "AMD round trip differs");
    FUZZ_CHECK(parsed->size() == in.size(), "size() is not the input size");
    FUZZ_CHECK(prefix && prefix->second == in.size() && prefix->first == *parsed, "parse and parse_prefix disagree");
    FUZZ_CHECK(parsed->public_key().has_value(), "parsed AMD certificate has no usable key");
    auto signed_part = parsed->signed_part();
    FUZZ_CHECK(signed_part.size() + parsed->signature_le().size() == in.size(), "signed part + signature != certificate");
    if (!parsed->verify(k.ref.ark))
        return;
    FUZZ_CHECK(contains(k.amd_signed, signed_part), "forgery: a certificate the test ARK never signed verifies");
    Bytes tampered(in.begin(), in.end());
    unsigned bit = flip % unsigned(signed_part.size() * 8);
    tampered[bit / 8] ^= uint8_t(1u << (bit % 8));
    auto t = AmdCert::parse(tampered);
    FUZZ_CHECK(!t || !t->verify(k.ref.ark), "flipping signed bit %u still verifies", bit);
}

// The real AMD certificates beside the project ($SEVEMU_VECTORS/sev-legacy, never copied into
// it), when present: each goes through the same properties once (round trip, no forgery), and
// every product's ASK verifies under its ARK (a known answer from outside sevemu).
void real_vectors()
{
    char const* env = std::getenv("SEVEMU_VECTORS");
    if (!env)
        return;
    fs::path dir = fs::path(env) / "sev-legacy";
    std::error_code ec;
    if (!fs::is_directory(dir, ec))
        return;
    for (auto const& e : fs::directory_iterator(dir, ec)) {
        auto bytes = read_file(e.path());
        if (!bytes)
            continue;
        auto name = e.path().filename().string();
        bool amd = name.ends_with("_ark.cert") || name.ends_with("_ask.cert");
        if (amd)
            fuzz_amd(*bytes, 7);
        else
            fuzz_sev(*bytes, 7);
        if (name.ends_with("_ask.cert")) {
            auto ark = read_file(dir / (name.substr(0, name.size() - 9) + "_ark.cert"));
            auto ask = AmdCert::parse(*bytes);
            auto ark_cert = ark ? AmdCert::parse(*ark) : Result<AmdCert, CertError>(make_unexpected(CertError::Missing));
            FUZZ_CHECK(ask && ark_cert && ask->verify(*ark_cert), "real %s does not verify under its ARK", name.c_str());
        }
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(uint8_t const* data, size_t size)
{
    static bool const vectors_checked = (real_vectors(), true);
    (void)vectors_checked;
    Reader in(data, size);
    uint8_t kind = in.u8();
    unsigned flip = in.u16();
    auto cert = in.rest();
    if (kind & 1)
        fuzz_amd(cert, flip);
    else
        fuzz_sev(cert, flip);
    return 0;
}
