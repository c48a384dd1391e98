#include "firmware/amd_cert.h"

#include "base/epyc_model.h"

#include <algorithm>
#include <cstring>

namespace sevemu::firmware {

static constexpr AmdKeyId id_from_hex(char const (&hex)[33])
{
    AmdKeyId id {};
    auto nibble = [](char c) -> uint8_t { return uint8_t(c <= '9' ? c - '0' : c - 'a' + 10); };
    for (size_t i = 0; i < 16; ++i)
        id[i] = uint8_t(nibble(hex[2 * i]) << 4 | nibble(hex[2 * i + 1]));
    return id;
}

// Key ids as they appear in the certificates' key_id field (byte order as stored), from the
// public ARK/ASK files shipped in virtee/sev src/certs/sev/builtin/*/.
// The product names of the models sevemu emulates come from base/epyc_model.h; Turin is not
// emulated, but its root is still recognised in a chain.
static constexpr KnownAmdRoot kKnownRoots[] = {
    { cpu_model_info(CpuModel::Naples).amd_product, id_from_hex("1bb987c359494606b174945601c9ea5b"),
        id_from_hex("e139970cfc464377ae61b289e2f9e96e") },
    { cpu_model_info(CpuModel::Rome).amd_product, id_from_hex("e6002122fb58419399d15fee7b131351"),
        id_from_hex("c6cbcf145b3146f498e40ecb4ad4fded") },
    { cpu_model_info(CpuModel::Milan).amd_product, id_from_hex("94c38e4177d0479292a7ae671d083fb6"),
        id_from_hex("73478c05cc174bfeb06e718fa75dc3c8") },
    { cpu_model_info(CpuModel::Genoa).amd_product, id_from_hex("9f9d4a8fe761456599f6946c4c010f3a"),
        id_from_hex("acbb4ad21acc436fb3e932f812cd01b0") },
    { "Turin", id_from_hex("d05c3a8bde484904b49552422ceb3942"), id_from_hex("15051693f7304d65a527b4a7f3f7cb77") },
};

std::span<const KnownAmdRoot> known_amd_roots() { return kKnownRoots; }

std::optional<std::string_view> known_ark_product(AmdKeyId const& id)
{
    for (auto const& r : kKnownRoots)
        if (r.ark_id == id)
            return r.product;
    return std::nullopt;
}

static bool supported_bits(uint32_t bits) { return bits == 2048 || bits == 4096; }

Result<std::pair<AmdCert, size_t>, CertError> AmdCert::parse_prefix(std::span<const uint8_t> data)
{
    if (data.size() < sizeof(AmdCertHeaderWire))
        return make_unexpected(CertError::BadSize);
    AmdCert c;
    std::memcpy(&c.m_header, data.data(), sizeof(AmdCertHeaderWire));
    AmdCertHeaderWire const& h = c.m_header;
    if (h.version != 1)
        return make_unexpected(CertError::BadVersion);
    if (h.key_usage == uint32_t(AmdKeyUsage::ARK))
        c.m_usage = AmdKeyUsage::ARK;
    else if (h.key_usage == uint32_t(AmdKeyUsage::ASK))
        c.m_usage = AmdKeyUsage::ASK;
    else
        return make_unexpected(CertError::BadUsage);
    if (std::any_of(std::begin(h.reserved_028), std::end(h.reserved_028), [](uint8_t b) { return b != 0; }))
        return make_unexpected(CertError::ReservedNonZero);
    // The sizes drive every later offset: only AMD's two sizes are accepted, so a hostile size
    // cannot make the parser read past the buffer or allocate wildly.
    if (!supported_bits(h.pub_exp_size) || !supported_bits(h.modulus_size) || h.pub_exp_size > h.modulus_size)
        return make_unexpected(CertError::BadKeySize);
    size_t exp_len = h.pub_exp_size / 8;
    size_t mod_len = h.modulus_size / 8;
    size_t total = sizeof(AmdCertHeaderWire) + exp_len + 2 * mod_len;
    if (data.size() < total)
        return make_unexpected(CertError::BadSize);
    auto p = data.begin() + sizeof(AmdCertHeaderWire);
    c.m_pub_exp.assign(p, p + exp_len);
    p += exp_len;
    c.m_modulus.assign(p, p + mod_len);
    p += mod_len;
    c.m_signature.assign(p, p + mod_len);
    // The key must decode (odd modulus of the stated size, sane exponent).
    if (!rsa_from_amd(c.m_modulus, c.m_pub_exp))
        return make_unexpected(CertError::BadKeySize);
    return std::pair { std::move(c), total };
}

Result<AmdCert, CertError> AmdCert::parse(std::span<const uint8_t> data)
{
    auto [cert, used] = TRY(parse_prefix(data));
    if (used != data.size())
        return make_unexpected(CertError::BadSize);
    return std::move(cert);
}

Result<AmdCert, CertError> AmdCert::build(AmdKeyUsage usage, AmdKeyId const& key_id, AmdKeyId const& certifying_id,
    EVP_PKEY const* rsa_key)
{
    auto pub = rsa_to_amd(rsa_key);
    if (!pub)
        return make_unexpected(CertError::BadSignerKey);
    if (!supported_bits(pub->modulus_bits))
        return make_unexpected(CertError::BadKeySize);
    AmdCert c;
    c.m_header.version = 1;
    std::memcpy(c.m_header.key_id, key_id.data(), 16);
    std::memcpy(c.m_header.certifying_id, certifying_id.data(), 16);
    c.m_header.key_usage = uint32_t(usage);
    c.m_usage = usage;
    c.m_header.pub_exp_size = pub->modulus_bits;
    c.m_header.modulus_size = pub->modulus_bits;
    c.m_pub_exp = pub->pub_exp_le;
    c.m_modulus = pub->modulus_le;
    c.m_signature.assign(pub->modulus_bits / 8, 0);
    return c;
}

size_t AmdCert::size() const { return sizeof(AmdCertHeaderWire) + m_pub_exp.size() + 2 * m_modulus.size(); }

Bytes AmdCert::signed_part() const
{
    Bytes out(sizeof(AmdCertHeaderWire) + m_pub_exp.size() + m_modulus.size());
    std::memcpy(out.data(), &m_header, sizeof(AmdCertHeaderWire));
    std::copy(m_pub_exp.begin(), m_pub_exp.end(), out.begin() + sizeof(AmdCertHeaderWire));
    std::copy(m_modulus.begin(), m_modulus.end(), out.begin() + sizeof(AmdCertHeaderWire) + m_pub_exp.size());
    return out;
}

Bytes AmdCert::serialize() const
{
    Bytes out = signed_part();
    out.insert(out.end(), m_signature.begin(), m_signature.end());
    return out;
}

AmdKeyId AmdCert::key_id() const
{
    AmdKeyId id;
    std::memcpy(id.data(), m_header.key_id, 16);
    return id;
}

AmdKeyId AmdCert::certifying_id() const
{
    AmdKeyId id;
    std::memcpy(id.data(), m_header.certifying_id, 16);
    return id;
}

HashAlgo AmdCert::signing_hash() const { return m_header.modulus_size == 2048 ? HashAlgo::Sha256 : HashAlgo::Sha384; }

SevAlgo AmdCert::sev_signer_algo() const
{
    return m_header.modulus_size == 2048 ? SevAlgo::RSA_SHA256 : SevAlgo::RSA_SHA384;
}

Result<PKey, CertError> AmdCert::public_key() const
{
    auto key = rsa_from_amd(m_modulus, m_pub_exp);
    if (!key)
        return make_unexpected(CertError::BadKeySize);
    return std::move(key).value();
}

Result<CertSigner, CertError> AmdCert::as_signer() const
{
    CertSigner s;
    s.usage = m_usage == AmdKeyUsage::ARK ? SevUsage::ARK : SevUsage::ASK;
    s.algo = sev_signer_algo();
    s.key = TRY(public_key());
    return s;
}

Result<void, CertError> AmdCert::sign(EVP_PKEY const* signer_priv)
{
    auto pub = rsa_to_amd(signer_priv);
    // The format has room for exactly modulus_size/8 signature bytes, so the signer's modulus
    // must be as wide as this certificate's.
    if (!pub || pub->modulus_bits != m_header.modulus_size)
        return make_unexpected(CertError::BadSignerKey);
    HashAlgo hash = pub->modulus_bits == 2048 ? HashAlgo::Sha256 : HashAlgo::Sha384;
    auto sig = rsa_pss_sign(signer_priv, hash, signed_part());
    if (!sig || sig->size() != m_signature.size())
        return make_unexpected(CertError::BadSignerKey);
    m_signature = std::move(sig).value();
    return {};
}

Result<void, CertError> AmdCert::verify(AmdCert const& signer) const
{
    // Role: the ARK signs itself and the ASK; nothing else signs an AMD certificate.
    if (signer.usage() != AmdKeyUsage::ARK)
        return make_unexpected(CertError::WrongSigner);
    if (m_usage == AmdKeyUsage::ARK && signer.key_id() != key_id())
        return make_unexpected(CertError::WrongSigner);
    // The certifying id names the parent; a mismatch means a certificate from another product's
    // chain (or a forged one) is being presented under this root.
    if (certifying_id() != signer.key_id())
        return make_unexpected(CertError::WrongIssuer);
    if (signer.modulus_bits() != modulus_bits())
        return make_unexpected(CertError::BadSignature);
    auto key = TRY(signer.public_key());
    if (!rsa_pss_verify(key.get(), signer.signing_hash(), signed_part(), m_signature))
        return make_unexpected(CertError::BadSignature);
    return {};
}

bool operator==(AmdCert const& a, AmdCert const& b) { return a.serialize() == b.serialize(); }

} // namespace sevemu::firmware
