#include "firmware/sev_cert.h"

#include "firmware/amd_cert.h"

#include <algorithm>
#include <cstring>

namespace sevemu::firmware {

std::optional<SevUsage> sev_usage_from(uint32_t v)
{
    switch (v) {
    case uint32_t(SevUsage::ARK):
    case uint32_t(SevUsage::ASK):
    case uint32_t(SevUsage::Invalid):
    case uint32_t(SevUsage::OCA):
    case uint32_t(SevUsage::PEK):
    case uint32_t(SevUsage::PDH):
    case uint32_t(SevUsage::CEK):
        return SevUsage(v);
    }
    return std::nullopt;
}

std::optional<SevAlgo> sev_algo_from(uint32_t v)
{
    switch (v) {
    case uint32_t(SevAlgo::Invalid):
    case uint32_t(SevAlgo::RSA_SHA256):
    case uint32_t(SevAlgo::ECDSA_SHA256):
    case uint32_t(SevAlgo::ECDH_SHA256):
    case uint32_t(SevAlgo::RSA_SHA384):
    case uint32_t(SevAlgo::ECDSA_SHA384):
    case uint32_t(SevAlgo::ECDH_SHA384):
        return SevAlgo(v);
    }
    return std::nullopt;
}

std::string_view sev_usage_name(SevUsage u)
{
    switch (u) {
    case SevUsage::ARK:
        return "ARK";
    case SevUsage::ASK:
        return "ASK";
    case SevUsage::Invalid:
        return "INVALID";
    case SevUsage::OCA:
        return "OCA";
    case SevUsage::PEK:
        return "PEK";
    case SevUsage::PDH:
        return "PDH";
    case SevUsage::CEK:
        return "CEK";
    }
    return "?";
}

std::string_view sev_algo_name(SevAlgo a)
{
    switch (a) {
    case SevAlgo::Invalid:
        return "INVALID";
    case SevAlgo::RSA_SHA256:
        return "RSA_SHA256";
    case SevAlgo::ECDSA_SHA256:
        return "ECDSA_SHA256";
    case SevAlgo::ECDH_SHA256:
        return "ECDH_SHA256";
    case SevAlgo::RSA_SHA384:
        return "RSA_SHA384";
    case SevAlgo::ECDSA_SHA384:
        return "ECDSA_SHA384";
    case SevAlgo::ECDH_SHA384:
        return "ECDH_SHA384";
    }
    return "?";
}

bool sev_algo_is_rsa(SevAlgo a) { return a == SevAlgo::RSA_SHA256 || a == SevAlgo::RSA_SHA384; }
bool sev_algo_is_ecdsa(SevAlgo a) { return a == SevAlgo::ECDSA_SHA256 || a == SevAlgo::ECDSA_SHA384; }
bool sev_algo_is_ecdh(SevAlgo a) { return a == SevAlgo::ECDH_SHA256 || a == SevAlgo::ECDH_SHA384; }
HashAlgo sev_algo_hash(SevAlgo a) { return (uint32_t(a) & 0x100) ? HashAlgo::Sha384 : HashAlgo::Sha256; }

std::string_view cert_error_name(CertError e)
{
    switch (e) {
    case CertError::BadSize:
        return "wrong certificate size";
    case CertError::BadVersion:
        return "unsupported certificate version";
    case CertError::BadUsage:
        return "bad key usage";
    case CertError::BadAlgo:
        return "bad algorithm";
    case CertError::BadCurve:
        return "unsupported curve (P-384 only)";
    case CertError::BadKeySize:
        return "unsupported RSA key size";
    case CertError::BadPoint:
        return "public key point not on the curve";
    case CertError::ReservedNonZero:
        return "reserved field not zero";
    case CertError::HalfEmptySlot:
        return "malformed signature slot (usage/algo half empty)";
    case CertError::NoMatchingSlot:
        return "no signature by this signer";
    case CertError::BadSignature:
        return "signature does not verify";
    case CertError::WrongSigner:
        return "signer may not sign this certificate";
    case CertError::WrongIssuer:
        return "certifying id does not name the signer";
    case CertError::NoFreeSlot:
        return "no free signature slot";
    case CertError::BadSignerKey:
        return "bad signing key";
    case CertError::Internal:
        return "internal crypto failure";
    case CertError::Missing:
        return "certificate missing";
    }
    return "?";
}

uint16_t cert_error_status(CertError e)
{
    // SEV-KM 55766 status codes: 0x0A BAD_SIGNATURE, 0x06 INVALID_CERTIFICATE.
    switch (e) {
    case CertError::BadSignature:
    case CertError::HalfEmptySlot:
        return 0x0A;
    default:
        return 0x06;
    }
}

static_assert(offsetof(SevCertWire, pub_key) + offsetof(SevEcPubKeyWire, qx) == 0x014);
static_assert(offsetof(SevCertWire, pub_key) + offsetof(SevEcPubKeyWire, qy) == 0x05C);
static_assert(offsetof(SevCertWire, pub_key) + offsetof(SevEcPubKeyWire, reserved_0a4) == 0x0A4);
static_assert(offsetof(SevCertWire, pub_key) + offsetof(SevRsaPubKeyWire, pub_exp) == 0x014);
static_assert(offsetof(SevCertWire, pub_key) + offsetof(SevRsaPubKeyWire, modulus) == 0x214);

static bool slot_is_empty(SevSigSlotWire const& s)
{
    return s.usage == uint32_t(SevUsage::Invalid) && s.algo == uint32_t(SevAlgo::Invalid);
}

static bool all_zero(std::span<const uint8_t> b)
{
    return std::all_of(b.begin(), b.end(), [](uint8_t x) { return x == 0; });
}

// ---------------------------------------------------------------------------------------------
// Public key of the body.

static Result<PKey, CertError> decode_pubkey(SevCertWire const& w)
{
    auto algo = sev_algo_from(w.pub_key_algo);
    if (!algo || *algo == SevAlgo::Invalid)
        return make_unexpected(CertError::BadAlgo);
    if (sev_algo_is_rsa(*algo)) {
        uint32_t bits = w.pub_key.rsa.modulus_size;
        // AMD-ASPFW rsa_pubkey_is_valid: the union holds at most 4096 bits; AMD uses 2048 and 4096.
        if (bits < 2048 || bits > 4096 || bits % 8)
            return make_unexpected(CertError::BadKeySize);
        size_t n = bits / 8;
        auto key = rsa_from_amd(std::span(w.pub_key.rsa.modulus, n), std::span(w.pub_key.rsa.pub_exp, n));
        if (!key)
            return make_unexpected(CertError::BadKeySize);
        return std::move(key).value();
    }
    // ECDSA or ECDH: AMD-ASPFW ecc_pubkey_is_valid accepts P-384 only and checks the point.
    if (w.pub_key.ec.curve != uint32_t(EcCurve::P384))
        return make_unexpected(CertError::BadCurve);
    AmdEcPoint point;
    std::memcpy(point.qx.data(), w.pub_key.ec.qx, kAmdEcIntBytes);
    std::memcpy(point.qy.data(), w.pub_key.ec.qy, kAmdEcIntBytes);
    auto key = p384_from_amd_point(point);
    if (!key)
        return make_unexpected(key.error() == CryptoError::Internal ? CertError::Internal : CertError::BadPoint);
    return std::move(key).value();
}

// ---------------------------------------------------------------------------------------------

Result<SevCert, CertError> SevCert::from_bytes(std::span<const uint8_t> data)
{
    if (data.size() != kSevCertSize)
        return make_unexpected(CertError::BadSize);
    SevCert c;
    std::memcpy(&c.m_wire, data.data(), kSevCertSize);
    return c;
}

Result<SevCert, CertError> SevCert::parse(std::span<const uint8_t> data)
{
    SevCert c = TRY(from_bytes(data));
    SevCertWire const& w = c.m_wire;
    if (w.version != 1)
        return make_unexpected(CertError::BadVersion);
    if (w.reserved_006[0] || w.reserved_006[1])
        return make_unexpected(CertError::ReservedNonZero);
    auto usage = sev_usage_from(w.pub_key_usage);
    // An SEV-format certificate carries an OCA, PEK, PDH or CEK key; ARK and ASK have their own
    // format (amd_cert.h) and appear here only as signers.
    if (!usage || (*usage != SevUsage::OCA && *usage != SevUsage::PEK && *usage != SevUsage::PDH
            && *usage != SevUsage::CEK))
        return make_unexpected(CertError::BadUsage);
    auto algo = sev_algo_from(w.pub_key_algo);
    if (!algo || *algo == SevAlgo::Invalid)
        return make_unexpected(CertError::BadAlgo);
    // A PDH is a key-agreement key and nothing else is: an ECDH key must never be accepted as a
    // signing key (and the other way round), or one key would serve two purposes.
    if ((*usage == SevUsage::PDH) != sev_algo_is_ecdh(*algo))
        return make_unexpected(CertError::BadAlgo);
    if (*usage == SevUsage::PEK && !sev_algo_is_ecdsa(*algo))
        return make_unexpected(CertError::BadAlgo);
    if (sev_algo_is_rsa(*algo)) {
        uint32_t bits = w.pub_key.rsa.modulus_size;
        if (bits != 2048 && bits != 4096)
            return make_unexpected(CertError::BadKeySize);
        if (!all_zero(std::span(w.pub_key.rsa.pub_exp + bits / 8, 512 - bits / 8))
            || !all_zero(std::span(w.pub_key.rsa.modulus + bits / 8, 512 - bits / 8)))
            return make_unexpected(CertError::ReservedNonZero);
    }
    TRY(decode_pubkey(w));
    for (auto const& slot : w.sig) {
        if (slot_is_empty(slot)) {
            if (!all_zero(slot.sig))
                return make_unexpected(CertError::ReservedNonZero);
            continue;
        }
        auto su = sev_usage_from(slot.usage);
        auto sa = sev_algo_from(slot.algo);
        if (!su || !sa)
            return make_unexpected(!su ? CertError::BadUsage : CertError::BadAlgo);
        if (*su == SevUsage::Invalid || *sa == SevAlgo::Invalid)
            return make_unexpected(CertError::HalfEmptySlot);
        if (sev_algo_is_ecdh(*sa)) // an ECDH key cannot have made a signature
            return make_unexpected(CertError::BadAlgo);
        if (sev_algo_is_ecdsa(*sa) && !all_zero(std::span(slot.sig + 2 * kAmdEcIntBytes, kSevSigSize - 2 * kAmdEcIntBytes)))
            return make_unexpected(CertError::ReservedNonZero);
    }
    return c;
}

Result<SevCert, CertError> SevCert::make_ec(uint8_t api_major, uint8_t api_minor, SevUsage usage, SevAlgo algo,
    EVP_PKEY const* key)
{
    if (usage != SevUsage::OCA && usage != SevUsage::PEK && usage != SevUsage::PDH && usage != SevUsage::CEK)
        return make_unexpected(CertError::BadUsage);
    if (!sev_algo_is_ecdsa(algo) && !sev_algo_is_ecdh(algo))
        return make_unexpected(CertError::BadAlgo);
    auto point = p384_to_amd_point(key);
    if (!point)
        return make_unexpected(CertError::BadSignerKey);
    SevCert c;
    c.m_wire.version = 1;
    c.m_wire.api_major = api_major;
    c.m_wire.api_minor = api_minor;
    c.m_wire.pub_key_usage = uint32_t(usage);
    c.m_wire.pub_key_algo = uint32_t(algo);
    c.m_wire.pub_key.ec.curve = uint32_t(EcCurve::P384);
    std::memcpy(c.m_wire.pub_key.ec.qx, point->qx.data(), kAmdEcIntBytes);
    std::memcpy(c.m_wire.pub_key.ec.qy, point->qy.data(), kAmdEcIntBytes);
    c.clear_slot(0);
    c.clear_slot(1);
    return c;
}

Bytes SevCert::serialize() const
{
    auto b = bytes();
    return Bytes(b.begin(), b.end());
}

std::span<const uint8_t, kSevCertSize> SevCert::bytes() const
{
    return std::span<const uint8_t, kSevCertSize>(reinterpret_cast<uint8_t const*>(&m_wire), kSevCertSize);
}

std::span<const uint8_t, kSevCertBodySize> SevCert::body() const
{
    return std::span<const uint8_t, kSevCertBodySize>(reinterpret_cast<uint8_t const*>(&m_wire), kSevCertBodySize);
}

bool SevCert::slot_empty(unsigned slot) const { return slot_is_empty(m_wire.sig[slot & 1]); }

std::optional<unsigned> SevCert::first_empty_slot() const
{
    // AMD-ASPFW sev_cert_set_sig looks at the usage only.
    for (unsigned i = 0; i < 2; ++i)
        if (m_wire.sig[i].usage == uint32_t(SevUsage::Invalid))
            return i;
    return std::nullopt;
}

void SevCert::set_api_version(uint8_t major, uint8_t minor)
{
    m_wire.api_major = major;
    m_wire.api_minor = minor;
}

void SevCert::clear_slot(unsigned slot)
{
    auto& s = m_wire.sig[slot & 1];
    s.usage = uint32_t(SevUsage::Invalid);
    s.algo = uint32_t(SevAlgo::Invalid);
    std::memset(s.sig, 0, sizeof(s.sig));
}

void SevCert::copy_slot_from(SevCert const& other, unsigned from_slot, unsigned to_slot)
{
    m_wire.sig[to_slot & 1] = other.m_wire.sig[from_slot & 1];
}

Result<void, CertError> SevCert::validate_body() const
{
    // AMD-ASPFW sev_cert_validate_body: version, then pubkey_is_valid (usage known, algo-specific key check).
    if (m_wire.version != 1)
        return make_unexpected(CertError::BadVersion);
    auto usage = sev_usage_from(m_wire.pub_key_usage);
    if (!usage || *usage == SevUsage::Invalid)
        return make_unexpected(CertError::BadUsage);
    TRY(decode_pubkey(m_wire));
    return {};
}

Result<PKey, CertError> SevCert::public_key() const { return decode_pubkey(m_wire); }

Result<CertSigner, CertError> SevCert::as_signer() const
{
    auto usage = sev_usage_from(m_wire.pub_key_usage);
    auto algo = sev_algo_from(m_wire.pub_key_algo);
    if (!usage || *usage == SevUsage::Invalid)
        return make_unexpected(CertError::BadUsage);
    if (!algo || *algo == SevAlgo::Invalid)
        return make_unexpected(CertError::BadAlgo);
    CertSigner s;
    s.usage = *usage;
    s.algo = *algo;
    s.key = TRY(decode_pubkey(m_wire));
    return s;
}

Result<void, CertError> SevCert::sign(unsigned slot, CertSigner const& signer)
{
    if (slot > 1)
        return make_unexpected(CertError::NoFreeSlot);
    if (signer.usage == SevUsage::Invalid || !signer.key)
        return make_unexpected(CertError::BadSignerKey);
    SevSigSlotWire out {};
    out.usage = uint32_t(signer.usage);
    out.algo = uint32_t(signer.algo);
    HashAlgo hash = sev_algo_hash(signer.algo);
    if (sev_algo_is_ecdsa(signer.algo)) {
        auto sig = ecdsa_p384_sign(signer.key.get(), hash, body());
        if (!sig)
            return make_unexpected(CertError::BadSignerKey);
        std::memcpy(out.sig, sig->r.data(), kAmdEcIntBytes);
        std::memcpy(out.sig + kAmdEcIntBytes, sig->s.data(), kAmdEcIntBytes);
    } else if (sev_algo_is_rsa(signer.algo)) {
        auto sig = rsa_pss_sign(signer.key.get(), hash, body());
        if (!sig || sig->size() > kSevSigSize)
            return make_unexpected(CertError::BadSignerKey);
        std::memcpy(out.sig, sig->data(), sig->size());
    } else {
        // ECDH keys do not sign (AMD-ASPFW sev_cert_sign returns UNSUPPORTED).
        return make_unexpected(CertError::BadSignerKey);
    }
    m_wire.sig[slot] = out;
    return {};
}

Result<unsigned, CertError> SevCert::sign(CertSigner const& signer)
{
    auto slot = first_empty_slot();
    if (!slot)
        return make_unexpected(CertError::NoFreeSlot);
    TRY(sign(*slot, signer));
    return *slot;
}

// One signature slot against one key; the slot is known to name the key's (usage, algo).
static Result<void, CertError> verify_slot(SevCert const& cert, SevSigSlotWire const& slot, CertSigner const& signer)
{
    HashAlgo hash = sev_algo_hash(signer.algo);
    if (sev_algo_is_ecdsa(signer.algo)) {
        if (!is_p384(signer.key.get()))
            return make_unexpected(CertError::BadSignerKey);
        AmdEcdsaSig sig;
        std::memcpy(sig.r.data(), slot.sig, kAmdEcIntBytes);
        std::memcpy(sig.s.data(), slot.sig + kAmdEcIntBytes, kAmdEcIntBytes);
        if (!ecdsa_p384_verify(signer.key.get(), hash, cert.body(), sig))
            return make_unexpected(CertError::BadSignature);
        return {};
    }
    if (sev_algo_is_rsa(signer.algo)) {
        auto pub = rsa_to_amd(signer.key.get());
        if (!pub || pub->modulus_bits / 8 > kSevSigSize)
            return make_unexpected(CertError::BadSignerKey);
        if (!rsa_pss_verify(signer.key.get(), hash, cert.body(), std::span(slot.sig, pub->modulus_bits / 8)))
            return make_unexpected(CertError::BadSignature);
        return {};
    }
    // An ECDH "signer": nothing it could have signed verifies.
    return make_unexpected(CertError::BadSignature);
}

static bool signer_is_valid(CertSigner const& signer)
{
    if (signer.usage == SevUsage::Invalid || signer.algo == SevAlgo::Invalid || !signer.key)
        return false;
    if (sev_algo_is_rsa(signer.algo))
        return is_rsa(signer.key.get());
    return is_p384(signer.key.get());
}

// AMD-ASPFW sev_cert_validate_sig: every slot is checked for malformation; the result of the last
// slot that names the signer wins (a matching slot whose signature fails does not stop the
// loop, since two slots may name the same usage/algo with different parents).
static Result<void, CertError> validate_sig(SevCert const& cert, CertSigner const& signer)
{
    std::optional<Result<void, CertError>> result;
    for (unsigned i = 0; i < 2; ++i) {
        SevSigSlotWire const& slot = cert.wire().sig[i];
        bool usage_invalid = slot.usage == uint32_t(SevUsage::Invalid);
        bool algo_invalid = slot.algo == uint32_t(SevAlgo::Invalid);
        if (usage_invalid != algo_invalid)
            return make_unexpected(CertError::HalfEmptySlot);
        if (slot.usage != uint32_t(signer.usage) || slot.algo != uint32_t(signer.algo))
            continue;
        result = verify_slot(cert, slot, signer);
    }
    if (!result)
        return make_unexpected(CertError::NoMatchingSlot);
    return *result;
}

Result<void, CertError> SevCert::verify(CertSigner const& signer) const
{
    if (!signer_is_valid(signer))
        return make_unexpected(CertError::BadSignerKey);
    return validate_sig(*this, signer);
}

Result<void, CertError> sev_cert_validate(SevCert const& cert, CertSigner const& signer)
{
    // 1. The signing key itself.
    if (!signer_is_valid(signer))
        return make_unexpected(CertError::BadSignerKey);
    // 2-3. Signatures before anything else (AMD-ASPFW: "Validate the signature before we do any other checking").
    TRY(validate_sig(cert, signer));
    // 4. The body.
    TRY(cert.validate_body());
    // 5. Roles: a valid signature by the wrong kind of key is still refused, so that e.g. a PDH
    // signed by an OCA cannot stand in for one certified by the platform's PEK.
    SevUsage usage = *cert.usage();
    bool ok = false;
    switch (usage) {
    case SevUsage::PDH:
        ok = signer.usage == SevUsage::PEK;
        break;
    case SevUsage::PEK:
        ok = signer.usage == SevUsage::OCA || signer.usage == SevUsage::CEK;
        break;
    case SevUsage::OCA:
        ok = signer.usage == SevUsage::OCA;
        break;
    case SevUsage::CEK:
        ok = signer.usage == SevUsage::ASK;
        break;
    default:
        ok = false;
    }
    if (!ok)
        return make_unexpected(CertError::WrongSigner);
    return {};
}

Result<void, CertError> sev_cert_validate(SevCert const& cert, SevCert const& signer_cert)
{
    auto signer = signer_cert.as_signer();
    if (!signer)
        return make_unexpected(CertError::BadSignerKey);
    return sev_cert_validate(cert, *signer);
}

Result<void, CertError> sev_cert_validate(SevCert const& cert, AmdCert const& ask)
{
    auto signer = ask.as_signer();
    if (!signer)
        return make_unexpected(CertError::BadSignerKey);
    return sev_cert_validate(cert, *signer);
}

Result<void, CertError> sev_cert_sanity_check(SevCert const& cert, SevUsage usage, SevAlgo algo)
{
    TRY(cert.validate_body());
    if (cert.usage_code() != uint32_t(usage))
        return make_unexpected(CertError::BadUsage);
    if (cert.algo_code() != uint32_t(algo))
        return make_unexpected(CertError::BadAlgo);
    return {};
}

Result<void, CertError> godh_cert_check(SevCert const& cert)
{
    // AMD-ASPFW checks the GODH with sev_cert_sanity_check(PDH, ECDH_SHA256); the point check stops an
    // invalid-curve attack on the PDH private key through LAUNCH_START.
    return sev_cert_sanity_check(cert, SevUsage::PDH, SevAlgo::ECDH_SHA256);
}

bool operator==(SevCert const& a, SevCert const& b) { return std::memcmp(&a.m_wire, &b.m_wire, kSevCertSize) == 0; }

} // namespace sevemu::firmware
