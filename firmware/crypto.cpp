#include "firmware/crypto.h"
#include "firmware/ossl_ptr.h"

// See Sha256Stream below: the one deliberate use of a deprecated OpenSSL interface.
#define OPENSSL_SUPPRESS_DEPRECATED

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>

namespace sevemu::firmware {

std::string_view crypto_error_name(CryptoError e)
{
    switch (e) {
    case CryptoError::BadLength:
        return "bad length";
    case CryptoError::BadKey:
        return "bad key";
    case CryptoError::BadPoint:
        return "point not on the curve";
    case CryptoError::BadSignature:
        return "signature does not verify";
    case CryptoError::BadMac:
        return "MAC mismatch";
    case CryptoError::Internal:
        return "internal crypto failure";
    }
    return "?";
}

size_t hash_size(HashAlgo h) { return h == HashAlgo::Sha256 ? 32 : 48; }

static EVP_MD const* evp_md(HashAlgo h) { return h == HashAlgo::Sha256 ? EVP_sha256() : EVP_sha384(); }

// RAII holders for the OpenSSL objects used below (firmware/ossl_ptr.h).
namespace {
using Bn = OsslPtr<BIGNUM, BN_free>;
using BnCtx = OsslPtr<BN_CTX, BN_CTX_free>;
using Group = OsslPtr<EC_GROUP, EC_GROUP_free>;
using Point = OsslPtr<EC_POINT, EC_POINT_free>;
using PkeyCtx = OsslPtr<EVP_PKEY_CTX, EVP_PKEY_CTX_free>;
using MdCtx = OsslPtr<EVP_MD_CTX, EVP_MD_CTX_free>;
using ParamBld = OsslPtr<OSSL_PARAM_BLD, OSSL_PARAM_BLD_free>;
using Params = OsslPtr<OSSL_PARAM, OSSL_PARAM_free>;
using Sig = OsslPtr<ECDSA_SIG, ECDSA_SIG_free>;
} // namespace

void PKeyDeleter::operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }

// ---------------------------------------------------------------------------------------------
// Hashes, HMAC, AES-CTR, RNG.

Sha256Digest sha256(std::span<const uint8_t> data)
{
    Sha256Digest out {};
    unsigned len = 0;
    EVP_Digest(data.data(), data.size(), out.data(), &len, EVP_sha256(), nullptr);
    return out;
}

Sha384Digest sha384(std::span<const uint8_t> data)
{
    Sha384Digest out {};
    unsigned len = 0;
    EVP_Digest(data.data(), data.size(), out.data(), &len, EVP_sha384(), nullptr);
    return out;
}

Bytes digest(HashAlgo h, std::span<const uint8_t> data)
{
    if (h == HashAlgo::Sha256) {
        auto d = sha256(data);
        return Bytes(d.begin(), d.end());
    }
    auto d = sha384(data);
    return Bytes(d.begin(), d.end());
}

// SHA256_CTX and SHA256_Init/Update/Final are deprecated in OpenSSL 3.0 but remain its only
// SHA-256 whose intermediate state is a documented public struct (openssl/sha.h), which saving a
// guest's running launch digest needs; EVP_MD_CTX cannot export it.
static SHA256_CTX* sha_ctx(void* p) { return static_cast<SHA256_CTX*>(p); }

Sha256Stream::Sha256Stream()
{
    m_ctx = new SHA256_CTX;
    reset();
}
Sha256Stream::~Sha256Stream()
{
    if (m_ctx)
        secure_zero(m_ctx, sizeof(SHA256_CTX));
    delete sha_ctx(m_ctx);
}
Sha256Stream::Sha256Stream(Sha256Stream const& o) : m_ctx(new SHA256_CTX(*sha_ctx(o.m_ctx))) {}
Sha256Stream& Sha256Stream::operator=(Sha256Stream const& o)
{
    if (this != &o)
        *sha_ctx(m_ctx) = *sha_ctx(o.m_ctx);
    return *this;
}
Sha256Stream::Sha256Stream(Sha256Stream&& o) noexcept : m_ctx(new SHA256_CTX(*sha_ctx(o.m_ctx))) {}
Sha256Stream& Sha256Stream::operator=(Sha256Stream&& o) noexcept
{
    *sha_ctx(m_ctx) = *sha_ctx(o.m_ctx);
    return *this;
}
void Sha256Stream::update(std::span<const uint8_t> data) { SHA256_Update(sha_ctx(m_ctx), data.data(), data.size()); }
Sha256Digest Sha256Stream::peek() const
{
    SHA256_CTX copy = *sha_ctx(m_ctx);
    Sha256Digest out {};
    SHA256_Final(out.data(), &copy);
    return out;
}
void Sha256Stream::reset() { SHA256_Init(sha_ctx(m_ctx)); }

std::array<uint8_t, Sha256Stream::kSavedStateSize> Sha256Stream::save_state() const
{
    SHA256_CTX const& c = *sha_ctx(m_ctx);
    std::array<uint8_t, kSavedStateSize> out {};
    out[0] = 1;
    for (int i = 0; i < 8; ++i)
        store_le(std::span(out).subspan(1 + 4 * i), c.h[i], 4);
    store_le(std::span(out).subspan(0x21), c.Nl, 4);
    store_le(std::span(out).subspan(0x25), c.Nh, 4);
    store_le(std::span(out).subspan(0x29), c.num, 4);
    // OpenSSL keeps the pending bytes in message order in `data` (memcpy'd in), whatever the host.
    std::memcpy(out.data() + 0x2D, c.data, std::min<size_t>(c.num, 64));
    return out;
}

Result<Sha256Stream, CryptoError> Sha256Stream::restore_state(std::span<const uint8_t> in)
{
    if (in.size() != kSavedStateSize || in[0] != 1)
        return make_unexpected(CryptoError::BadLength);
    Sha256Stream s;
    SHA256_CTX& c = *sha_ctx(s.m_ctx);
    for (int i = 0; i < 8; ++i)
        c.h[i] = static_cast<SHA_LONG>(load_le(in.subspan(1 + 4 * i), 4));
    c.Nl = static_cast<SHA_LONG>(load_le(in.subspan(0x21), 4));
    c.Nh = static_cast<SHA_LONG>(load_le(in.subspan(0x25), 4));
    uint32_t num = uint32_t(load_le(in.subspan(0x29), 4));
    // A corrupted stream must not make OpenSSL index past its 64-byte block.
    if (num >= 64 || ((c.Nl >> 3) & 63) != num)
        return make_unexpected(CryptoError::BadLength);
    c.num = num;
    std::memset(c.data, 0, sizeof(c.data));
    std::memcpy(c.data, in.data() + 0x2D, num);
    return s;
}

Mac256 hmac_sha256(std::span<const uint8_t> key, std::initializer_list<std::span<const uint8_t>> parts)
{
    Mac256 out {};
    EVP_MAC* mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
    EVP_MAC_CTX* ctx = mac ? EVP_MAC_CTX_new(mac) : nullptr;
    char digest_name[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest_name, 0),
        OSSL_PARAM_construct_end(),
    };
    // An empty key is legal for HMAC; OpenSSL wants a non-null pointer for it.
    static uint8_t const kEmpty = 0;
    size_t len = 0;
    bool ok = ctx && EVP_MAC_init(ctx, key.empty() ? &kEmpty : key.data(), key.size(), params) == 1;
    for (auto part : parts)
        ok = ok && EVP_MAC_update(ctx, part.data(), part.size()) == 1;
    ok = ok && EVP_MAC_final(ctx, out.data(), &len, out.size()) == 1 && len == out.size();
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    // HMAC-SHA256 cannot fail on valid inputs; a failure here is an OpenSSL/emulator bug.
    if (!ok)
        std::abort();
    return out;
}

Mac256 hmac_sha256(std::span<const uint8_t> key, std::span<const uint8_t> data) { return hmac_sha256(key, { data }); }

bool equal_ct(std::span<const uint8_t> a, std::span<const uint8_t> b)
{
    return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

Result<Bytes, CryptoError> aes128_ctr(std::span<const uint8_t> key, std::span<const uint8_t> iv,
    std::span<const uint8_t> data)
{
    if (key.size() != 16 || iv.size() != 16)
        return make_unexpected(CryptoError::BadLength);
    Bytes out(data.size());
    EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
    int len = 0, fin = 0;
    bool ok = ctx && EVP_EncryptInit_ex(ctx, EVP_aes_128_ctr(), nullptr, key.data(), iv.data()) == 1
        && EVP_EncryptUpdate(ctx, out.data(), &len, data.data(), int(data.size())) == 1
        && EVP_EncryptFinal_ex(ctx, out.data() + len, &fin) == 1;
    EVP_CIPHER_CTX_free(ctx);
    if (!ok)
        return make_unexpected(CryptoError::Internal);
    return out;
}

Result<void, CryptoError> random_bytes(std::span<uint8_t> out)
{
    if (out.empty())
        return {};
    if (RAND_bytes(out.data(), int(out.size())) != 1)
        return make_unexpected(CryptoError::Internal);
    return {};
}

Result<Key128, CryptoError> random_key128()
{
    Key128 k {};
    TRY(random_bytes(k));
    return k;
}

// SP 800-108 §5.1 (counter mode) with the field order and encodings of AMD-ASPFW nist_kdf.c
// (= virtee/sev src/session/key.rs).
Bytes kdf_sp800_108(std::span<const uint8_t> key, std::string_view label, std::span<const uint8_t> context,
    size_t out_len)
{
    Bytes out;
    out.reserve(out_len + 32);
    uint8_t length_bits[4];
    store_le(length_bits, uint64_t(out_len) * 8, 4);
    static uint8_t const kSeparator = 0x00;
    auto label_bytes = std::span(reinterpret_cast<uint8_t const*>(label.data()), label.size());
    for (uint32_t i = 1; out.size() < out_len; ++i) {
        uint8_t counter[4];
        store_le(counter, i, 4);
        Mac256 k = hmac_sha256(key, { counter, label_bytes, std::span(&kSeparator, 1), context, length_bits });
        out.insert(out.end(), k.begin(), k.end());
    }
    out.resize(out_len);
    return out;
}

// ---------------------------------------------------------------------------------------------
// Keys.

Bytes reversed(std::span<const uint8_t> data) { return Bytes(data.rbegin(), data.rend()); }

bool is_p384(EVP_PKEY const* key)
{
    if (!key || !EVP_PKEY_is_a(key, "EC"))
        return false;
    char name[64] = {};
    size_t len = 0;
    if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, name, sizeof(name), &len) != 1)
        return false;
    return OBJ_txt2nid(name) == NID_secp384r1 || std::string_view(name) == "P-384";
}

bool is_rsa(EVP_PKEY const* key) { return key && EVP_PKEY_is_a(key, "RSA"); }

static EC_GROUP* p384_group() { return EC_GROUP_new_by_curve_name(NID_secp384r1); }

// Builds an EVP_PKEY for P-384 from an encoded public point and an optional private scalar.
static Result<PKey, CryptoError> p384_fromdata(std::span<const uint8_t> pub_octets, BIGNUM const* priv)
{
    ParamBld bld(OSSL_PARAM_BLD_new());
    if (!bld)
        return make_unexpected(CryptoError::Internal);
    bool ok = OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, "P-384", 0) == 1
        && OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, pub_octets.data(), pub_octets.size())
            == 1
        && (!priv || OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_PRIV_KEY, priv) == 1);
    if (!ok)
        return make_unexpected(CryptoError::Internal);
    Params params(OSSL_PARAM_BLD_to_param(bld.get()));
    PkeyCtx ctx(EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr));
    EVP_PKEY* key = nullptr;
    if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1
        || EVP_PKEY_fromdata(ctx.get(), &key, priv ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY, params.get()) != 1)
        return make_unexpected(CryptoError::BadKey);
    return PKey(key);
}

Result<PKey, CryptoError> p384_generate()
{
    EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-384");
    if (!key)
        return make_unexpected(CryptoError::Internal);
    return PKey(key);
}

Result<PKey, CryptoError> p384_from_private(std::span<const uint8_t> scalar_be)
{
    if (scalar_be.empty() || scalar_be.size() > kP384Bytes)
        return make_unexpected(CryptoError::BadLength);
    Group group(p384_group());
    BnCtx bn_ctx(BN_CTX_new());
    Bn priv(BN_bin2bn(scalar_be.data(), int(scalar_be.size()), nullptr));
    if (!group || !bn_ctx || !priv)
        return make_unexpected(CryptoError::Internal);
    // 0 < d < n (FIPS 186-4 B.4).
    if (BN_is_zero(priv.get()) || BN_cmp(priv.get(), EC_GROUP_get0_order(group.get())) >= 0)
        return make_unexpected(CryptoError::BadKey);
    Point pub(EC_POINT_new(group.get()));
    if (!pub || EC_POINT_mul(group.get(), pub.get(), priv.get(), nullptr, nullptr, bn_ctx.get()) != 1)
        return make_unexpected(CryptoError::Internal);
    uint8_t oct[1 + 2 * kP384Bytes];
    size_t n = EC_POINT_point2oct(group.get(), pub.get(), POINT_CONVERSION_UNCOMPRESSED, oct, sizeof(oct),
        bn_ctx.get());
    if (n != sizeof(oct))
        return make_unexpected(CryptoError::Internal);
    return p384_fromdata(oct, priv.get());
}

Result<PKey, CryptoError> p384_from_amd_point(AmdEcPoint const& point)
{
    // AMD pads coordinates to 72 bytes; for P-384 bytes 48..71 must be zero, or the integer is
    // >= 2^384 > p and cannot be a field element (AMD-ASPFW sev_cert.c, ecdh.c).
    for (size_t i = kP384Bytes; i < kAmdEcIntBytes; ++i)
        if (point.qx[i] || point.qy[i])
            return make_unexpected(CryptoError::BadPoint);
    uint8_t oct[1 + 2 * kP384Bytes];
    oct[0] = POINT_CONVERSION_UNCOMPRESSED;
    for (size_t i = 0; i < kP384Bytes; ++i) {
        oct[1 + i] = point.qx[kP384Bytes - 1 - i];
        oct[1 + kP384Bytes + i] = point.qy[kP384Bytes - 1 - i];
    }
    // On-curve check before the point is used for anything: an off-curve point in ECDH leaks the
    // private key modulo small orders (invalid-curve attack). oct2point also refuses x,y >= p.
    Group group(p384_group());
    Point p(group ? EC_POINT_new(group.get()) : nullptr);
    if (!p)
        return make_unexpected(CryptoError::Internal);
    if (EC_POINT_oct2point(group.get(), p.get(), oct, sizeof(oct), nullptr) != 1
        || EC_POINT_is_on_curve(group.get(), p.get(), nullptr) != 1 || EC_POINT_is_at_infinity(group.get(), p.get()))
        return make_unexpected(CryptoError::BadPoint);
    auto key = p384_fromdata(oct, nullptr);
    if (!key)
        return make_unexpected(CryptoError::BadPoint);
    return key;
}

Result<AmdEcPoint, CryptoError> p384_to_amd_point(EVP_PKEY const* key)
{
    if (!is_p384(key))
        return make_unexpected(CryptoError::BadKey);
    BIGNUM* x = nullptr;
    BIGNUM* y = nullptr;
    if (EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_X, &x) != 1
        || EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_Y, &y) != 1) {
        BN_free(x);
        BN_free(y);
        return make_unexpected(CryptoError::BadKey);
    }
    Bn bx(x), by(y);
    AmdEcPoint out;
    if (BN_bn2lebinpad(bx.get(), out.qx.data(), int(out.qx.size())) < 0
        || BN_bn2lebinpad(by.get(), out.qy.data(), int(out.qy.size())) < 0)
        return make_unexpected(CryptoError::Internal);
    return out;
}

Result<Bytes, CryptoError> p384_private_scalar(EVP_PKEY const* key)
{
    if (!is_p384(key))
        return make_unexpected(CryptoError::BadKey);
    BIGNUM* d = nullptr;
    if (EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_PRIV_KEY, &d) != 1)
        return make_unexpected(CryptoError::BadKey);
    Bn bd(d);
    Bytes out(kP384Bytes);
    if (BN_bn2binpad(bd.get(), out.data(), int(out.size())) < 0)
        return make_unexpected(CryptoError::Internal);
    return out;
}

Result<PKey, CryptoError> public_only(EVP_PKEY const* key)
{
    if (is_p384(key)) {
        auto point = TRY(p384_to_amd_point(key));
        return p384_from_amd_point(point);
    }
    if (is_rsa(key)) {
        auto pub = TRY(rsa_to_amd(key));
        return rsa_from_amd(pub.modulus_le, pub.pub_exp_le);
    }
    return make_unexpected(CryptoError::BadKey);
}

Result<EcdhSecret, CryptoError> ecdh_p384(EVP_PKEY const* priv, EVP_PKEY const* peer_pub)
{
    if (!is_p384(priv) || !is_p384(peer_pub))
        return make_unexpected(CryptoError::BadKey);
    PkeyCtx ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, const_cast<EVP_PKEY*>(priv), nullptr));
    if (!ctx || EVP_PKEY_derive_init(ctx.get()) != 1)
        return make_unexpected(CryptoError::BadKey);
    // validate_peer = 1: OpenSSL checks the peer's point again (on the curve, not infinity).
    if (EVP_PKEY_derive_set_peer_ex(ctx.get(), const_cast<EVP_PKEY*>(peer_pub), 1) != 1)
        return make_unexpected(CryptoError::BadPoint);
    EcdhSecret z {};
    size_t len = z.size();
    if (EVP_PKEY_derive(ctx.get(), z.data(), &len) != 1 || len != z.size())
        return make_unexpected(CryptoError::Internal);
    return z;
}

Result<AmdEcdsaSig, CryptoError> ecdsa_p384_sign(EVP_PKEY const* priv, HashAlgo h, std::span<const uint8_t> message)
{
    if (!is_p384(priv))
        return make_unexpected(CryptoError::BadKey);
    MdCtx md(EVP_MD_CTX_new());
    if (!md || EVP_DigestSignInit_ex(md.get(), nullptr, h == HashAlgo::Sha256 ? "SHA256" : "SHA384", nullptr, nullptr,
                   const_cast<EVP_PKEY*>(priv), nullptr)
            != 1)
        return make_unexpected(CryptoError::BadKey);
    size_t der_len = 0;
    if (EVP_DigestSign(md.get(), nullptr, &der_len, message.data(), message.size()) != 1)
        return make_unexpected(CryptoError::BadKey);
    Bytes der(der_len);
    if (EVP_DigestSign(md.get(), der.data(), &der_len, message.data(), message.size()) != 1)
        return make_unexpected(CryptoError::BadKey);
    uint8_t const* p = der.data();
    Sig sig(d2i_ECDSA_SIG(nullptr, &p, long(der_len)));
    if (!sig)
        return make_unexpected(CryptoError::Internal);
    AmdEcdsaSig out;
    if (BN_bn2lebinpad(ECDSA_SIG_get0_r(sig.get()), out.r.data(), int(out.r.size())) < 0
        || BN_bn2lebinpad(ECDSA_SIG_get0_s(sig.get()), out.s.data(), int(out.s.size())) < 0)
        return make_unexpected(CryptoError::Internal);
    return out;
}

Result<void, CryptoError> ecdsa_p384_verify(EVP_PKEY const* pub, HashAlgo h, std::span<const uint8_t> message,
    AmdEcdsaSig const& amd_sig)
{
    if (!is_p384(pub))
        return make_unexpected(CryptoError::BadKey);
    Sig sig(ECDSA_SIG_new());
    BIGNUM* r = BN_lebin2bn(amd_sig.r.data(), int(amd_sig.r.size()), nullptr);
    BIGNUM* s = BN_lebin2bn(amd_sig.s.data(), int(amd_sig.s.size()), nullptr);
    if (!sig || !r || !s || ECDSA_SIG_set0(sig.get(), r, s) != 1) {
        BN_free(r);
        BN_free(s);
        return make_unexpected(CryptoError::Internal);
    }
    unsigned char* der = nullptr;
    int der_len = i2d_ECDSA_SIG(sig.get(), &der);
    if (der_len <= 0)
        return make_unexpected(CryptoError::Internal);
    MdCtx md(EVP_MD_CTX_new());
    bool ok = md
        && EVP_DigestVerifyInit_ex(md.get(), nullptr, h == HashAlgo::Sha256 ? "SHA256" : "SHA384", nullptr, nullptr,
               const_cast<EVP_PKEY*>(pub), nullptr)
            == 1
        && EVP_DigestVerify(md.get(), der, size_t(der_len), message.data(), message.size()) == 1;
    OPENSSL_free(der);
    if (!ok)
        return make_unexpected(CryptoError::BadSignature);
    return {};
}

Result<PKey, CryptoError> rsa_generate(unsigned bits)
{
    if (bits < 2048 || bits > 4096)
        return make_unexpected(CryptoError::BadLength);
    EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t(bits));
    if (!key)
        return make_unexpected(CryptoError::Internal);
    return PKey(key);
}

Result<PKey, CryptoError> rsa_from_amd(std::span<const uint8_t> modulus_le, std::span<const uint8_t> pub_exp_le)
{
    Bn n(BN_lebin2bn(modulus_le.data(), int(modulus_le.size()), nullptr));
    Bn e(BN_lebin2bn(pub_exp_le.data(), int(pub_exp_le.size()), nullptr));
    if (!n || !e)
        return make_unexpected(CryptoError::Internal);
    // An even modulus, an even or tiny exponent is no RSA key.
    if (BN_num_bits(n.get()) < 1024 || !BN_is_odd(n.get()) || !BN_is_odd(e.get()) || BN_is_one(e.get())
        || BN_cmp(e.get(), n.get()) >= 0)
        return make_unexpected(CryptoError::BadKey);
    ParamBld bld(OSSL_PARAM_BLD_new());
    if (!bld || OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, n.get()) != 1
        || OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, e.get()) != 1)
        return make_unexpected(CryptoError::Internal);
    Params params(OSSL_PARAM_BLD_to_param(bld.get()));
    PkeyCtx ctx(EVP_PKEY_CTX_new_from_name(nullptr, "RSA", nullptr));
    EVP_PKEY* key = nullptr;
    if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1
        || EVP_PKEY_fromdata(ctx.get(), &key, EVP_PKEY_PUBLIC_KEY, params.get()) != 1)
        return make_unexpected(CryptoError::BadKey);
    return PKey(key);
}

Result<AmdRsaPublic, CryptoError> rsa_to_amd(EVP_PKEY const* key)
{
    if (!is_rsa(key))
        return make_unexpected(CryptoError::BadKey);
    BIGNUM* n = nullptr;
    BIGNUM* e = nullptr;
    if (EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_N, &n) != 1
        || EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_E, &e) != 1) {
        BN_free(n);
        BN_free(e);
        return make_unexpected(CryptoError::BadKey);
    }
    Bn bn(n), be(e);
    AmdRsaPublic out;
    out.modulus_bits = unsigned(BN_num_bytes(bn.get())) * 8;
    size_t width = out.modulus_bits / 8;
    out.modulus_le.resize(width);
    out.pub_exp_le.resize(width);
    if (BN_bn2lebinpad(bn.get(), out.modulus_le.data(), int(width)) < 0
        || BN_bn2lebinpad(be.get(), out.pub_exp_le.data(), int(width)) < 0)
        return make_unexpected(CryptoError::Internal);
    return out;
}

static bool setup_pss(EVP_PKEY_CTX* pctx, HashAlgo h)
{
    return EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1
        && EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1
        && EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, evp_md(h)) == 1;
}

Result<Bytes, CryptoError> rsa_pss_sign(EVP_PKEY const* priv, HashAlgo h, std::span<const uint8_t> message)
{
    if (!is_rsa(priv))
        return make_unexpected(CryptoError::BadKey);
    MdCtx md(EVP_MD_CTX_new());
    EVP_PKEY_CTX* pctx = nullptr;
    if (!md || EVP_DigestSignInit(md.get(), &pctx, evp_md(h), nullptr, const_cast<EVP_PKEY*>(priv)) != 1
        || !setup_pss(pctx, h))
        return make_unexpected(CryptoError::BadKey);
    size_t len = 0;
    if (EVP_DigestSign(md.get(), nullptr, &len, message.data(), message.size()) != 1)
        return make_unexpected(CryptoError::BadKey);
    Bytes sig(len);
    if (EVP_DigestSign(md.get(), sig.data(), &len, message.data(), message.size()) != 1)
        return make_unexpected(CryptoError::BadKey);
    sig.resize(len);
    std::reverse(sig.begin(), sig.end());
    return sig;
}

Result<void, CryptoError> rsa_pss_verify(EVP_PKEY const* pub, HashAlgo h, std::span<const uint8_t> message,
    std::span<const uint8_t> signature_le)
{
    if (!is_rsa(pub))
        return make_unexpected(CryptoError::BadKey);
    size_t width = size_t(EVP_PKEY_get_size(pub));
    if (signature_le.size() != width)
        return make_unexpected(CryptoError::BadLength);
    Bytes sig_be = reversed(signature_le);
    MdCtx md(EVP_MD_CTX_new());
    EVP_PKEY_CTX* pctx = nullptr;
    if (!md || EVP_DigestVerifyInit(md.get(), &pctx, evp_md(h), nullptr, const_cast<EVP_PKEY*>(pub)) != 1
        || !setup_pss(pctx, h))
        return make_unexpected(CryptoError::BadKey);
    if (EVP_DigestVerify(md.get(), sig_be.data(), sig_be.size(), message.data(), message.size()) != 1)
        return make_unexpected(CryptoError::BadSignature);
    return {};
}

// ---------------------------------------------------------------------------------------------
// Transport channel.

Result<SessionBlob, CryptoError> session_blob_from_bytes(std::span<const uint8_t> bytes)
{
    if (bytes.size() != kSessionBlobSize)
        return make_unexpected(CryptoError::BadLength);
    SessionBlob blob;
    std::memcpy(&blob, bytes.data(), sizeof(blob));
    return blob;
}

std::array<uint8_t, kSessionBlobSize> session_blob_bytes(SessionBlob const& blob)
{
    std::array<uint8_t, kSessionBlobSize> out;
    std::memcpy(out.data(), &blob, sizeof(blob));
    return out;
}

static Key128 to_key128(Bytes const& b)
{
    Key128 k {};
    std::copy_n(b.begin(), k.size(), k.begin());
    return k;
}

ChannelKeys derive_channel_keys(std::span<const uint8_t> shared_z, Nonce128 const& nonce)
{
    ChannelKeys keys;
    Bytes master = kdf_sp800_108(shared_z, "sev-master-secret", nonce, 16);
    keys.master = to_key128(master);
    Bytes kek = kdf_sp800_108(keys.master, "sev-kek", {}, 16);
    Bytes kik = kdf_sp800_108(keys.master, "sev-kik", {}, 16);
    keys.kek = to_key128(kek);
    keys.kik = to_key128(kik);
    secure_zero(master.data(), master.size());
    secure_zero(kek.data(), kek.size());
    secure_zero(kik.data(), kik.size());
    return keys;
}

static Mac256 policy_mac(Key128 const& tik, uint32_t policy)
{
    uint8_t le[4];
    store_le(le, policy, 4);
    return hmac_sha256(tik, std::span<const uint8_t>(le));
}

SessionBlob wrap_session(std::span<const uint8_t> shared_z, Nonce128 const& nonce, TransportKeys const& tk,
    Iv128 const& wrap_iv, uint32_t policy)
{
    ChannelKeys ch = derive_channel_keys(shared_z, nonce);
    uint8_t plain[32];
    std::memcpy(plain, tk.tek.data(), 16);
    std::memcpy(plain + 16, tk.tik.data(), 16);
    // Key and IV sizes are fixed here, so AES-CTR cannot fail short of an OpenSSL bug.
    Bytes wrapped = aes128_ctr(ch.kek, wrap_iv, plain).value();
    secure_zero(plain, sizeof(plain));

    SessionBlob blob {};
    std::memcpy(blob.nonce, nonce.data(), 16);
    std::memcpy(blob.wrap_tk, wrapped.data(), 32);
    std::memcpy(blob.wrap_iv, wrap_iv.data(), 16);
    Mac256 wmac = hmac_sha256(ch.kik, wrapped);
    std::memcpy(blob.wrap_mac, wmac.data(), 32);
    Mac256 pmac = policy_mac(tk.tik, policy);
    std::memcpy(blob.policy_mac, pmac.data(), 32);
    secure_zero(&ch, sizeof(ch));
    return blob;
}

Result<SessionBlob, CryptoError> wrap_session_random(std::span<const uint8_t> shared_z, uint32_t policy,
    TransportKeys& keys_out)
{
    Nonce128 nonce {};
    Iv128 iv {};
    TRY(random_bytes(nonce));
    TRY(random_bytes(iv));
    keys_out.tek = TRY(random_key128());
    keys_out.tik = TRY(random_key128());
    return wrap_session(shared_z, nonce, keys_out, iv, policy);
}

std::string_view unwrap_error_name(UnwrapError e)
{
    switch (e) {
    case UnwrapError::WrapMac:
        return "wrap_mac mismatch (session not made for this PDH, or tampered)";
    case UnwrapError::PolicyMac:
        return "policy_mac mismatch (policy differs from the guest owner's)";
    }
    return "?";
}

Result<UnwrappedSession, UnwrapError> unwrap_session(std::span<const uint8_t> shared_z, SessionBlob const& blob,
    uint32_t policy)
{
    Nonce128 nonce;
    std::memcpy(nonce.data(), blob.nonce, 16);
    UnwrappedSession out;
    out.channel = derive_channel_keys(shared_z, nonce);
    // AMD-ASPFW sev_channel.c: authenticate the wrapped keys before decrypting them (encrypt-then-MAC), so a
    // host cannot feed the firmware chosen ciphertext.
    Mac256 wmac = hmac_sha256(out.channel.kik, std::span<const uint8_t>(blob.wrap_tk));
    if (!equal_ct(wmac, std::span<const uint8_t>(blob.wrap_mac)))
        return make_unexpected(UnwrapError::WrapMac);
    Iv128 iv;
    std::memcpy(iv.data(), blob.wrap_iv, 16);
    Bytes plain = aes128_ctr(out.channel.kek, iv, std::span<const uint8_t>(blob.wrap_tk)).value();
    std::copy_n(plain.begin(), 16, out.keys.tek.begin());
    std::copy_n(plain.begin() + 16, 16, out.keys.tik.begin());
    secure_zero(plain.data(), plain.size());
    // AMD-ASPFW sev_mcmd.c LAUNCH_START: the policy is bound to the owner's TIK; a host that launches the
    // guest with a
    // weaker policy (e.g. debugging allowed) than the owner chose is refused here.
    Mac256 pmac = policy_mac(out.keys.tik, policy);
    if (!equal_ct(pmac, std::span<const uint8_t>(blob.policy_mac))) {
        secure_zero(&out, sizeof(out));
        return make_unexpected(UnwrapError::PolicyMac);
    }
    return out;
}

Mac256 launch_measure_mac(Key128 const& tik, uint8_t api_major, uint8_t api_minor, uint8_t build, uint32_t policy,
    Sha256Digest const& launch_digest, Nonce128 const& mnonce)
{
    uint8_t head[4] = { kContextMeasure, api_major, api_minor, build };
    uint8_t pol[4];
    store_le(pol, policy, 4);
    return hmac_sha256(tik, { head, pol, launch_digest, mnonce });
}

Result<PacketHeader, CryptoError> packet_header_from_bytes(std::span<const uint8_t> bytes)
{
    if (bytes.size() != kPacketHeaderSize)
        return make_unexpected(CryptoError::BadLength);
    PacketHeader h;
    std::memcpy(&h, bytes.data(), sizeof(h));
    return h;
}

std::array<uint8_t, kPacketHeaderSize> packet_header_bytes(PacketHeader const& h)
{
    std::array<uint8_t, kPacketHeaderSize> out;
    std::memcpy(out.data(), &h, sizeof(h));
    return out;
}

Mac256 packet_mac(Key128 const& tik, uint8_t context, uint32_t flags, Iv128 const& iv, uint32_t guest_len,
    uint32_t trans_len, std::span<const uint8_t> ciphertext, std::span<const uint8_t> measure)
{
    uint8_t ctx[1] = { context };
    uint8_t fl[4], gl[4], tl[4];
    store_le(fl, flags, 4);
    store_le(gl, guest_len, 4);
    store_le(tl, trans_len, 4);
    return hmac_sha256(tik, { ctx, fl, iv, gl, tl, ciphertext, measure });
}

Mac256 launch_secret_mac(Key128 const& tik, uint32_t flags, Iv128 const& iv, std::span<const uint8_t> ciphertext,
    Mac256 const& measure)
{
    auto len = uint32_t(ciphertext.size());
    return packet_mac(tik, kContextSecret, flags, iv, len, len, ciphertext, measure);
}

std::unique_ptr<TransportCrypto> TransportCrypto::create(TransportKeys const& keys)
{
    std::unique_ptr<TransportCrypto> t(new TransportCrypto());
    t->m_keys = keys;
    auto* cipher = EVP_CIPHER_CTX_new();
    t->m_cipher = cipher;
    EVP_MAC* mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
    auto* mctx = mac ? EVP_MAC_CTX_new(mac) : nullptr;
    EVP_MAC_free(mac); // the context holds its own reference
    t->m_mac = mctx;
    char digest_name[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest_name, 0),
        OSSL_PARAM_construct_end(),
    };
    if (!cipher || !mctx || EVP_EncryptInit_ex(cipher, EVP_aes_128_ctr(), nullptr, keys.tek.data(), nullptr) != 1
        || EVP_MAC_init(mctx, keys.tik.data(), keys.tik.size(), params) != 1)
        return nullptr;
    return t;
}

TransportCrypto::~TransportCrypto()
{
    EVP_CIPHER_CTX_free(static_cast<EVP_CIPHER_CTX*>(m_cipher)); // both free functions cleanse
    EVP_MAC_CTX_free(static_cast<EVP_MAC_CTX*>(m_mac));
    secure_zero(&m_keys, sizeof m_keys);
    if (!m_packet.empty())
        secure_zero(m_packet.data(), m_packet.size());
    secure_zero(m_iv_pool.data(), m_iv_pool.size());
}

bool TransportCrypto::next_iv(Iv128& iv)
{
    if (m_iv_next + iv.size() > m_iv_pool.size()) {
        if (RAND_bytes(m_iv_pool.data(), int(m_iv_pool.size())) != 1)
            return false;
        m_iv_next = 0;
    }
    std::memcpy(iv.data(), m_iv_pool.data() + m_iv_next, iv.size());
    secure_zero(m_iv_pool.data() + m_iv_next, iv.size()); // each IV is handed out once
    m_iv_next += iv.size();
    return true;
}

std::span<uint8_t> TransportCrypto::packet_buffer(size_t len)
{
    if (m_packet.size() < len)
        m_packet.resize(len);
    return std::span<uint8_t>(m_packet).first(len);
}

bool TransportCrypto::made_for(TransportKeys const& keys) const
{
    return CRYPTO_memcmp(&keys, &m_keys, sizeof keys) == 0;
}

bool TransportCrypto::ctr(Iv128 const& iv, std::span<const uint8_t> in, std::span<uint8_t> out)
{
    auto* ctx = static_cast<EVP_CIPHER_CTX*>(m_cipher);
    int len = 0, fin = 0;
    // A new IV on the keyed context restarts the counter (and the keystream position).
    return in.size() == out.size() && in.size() <= size_t(INT32_MAX)
        && EVP_EncryptInit_ex(ctx, nullptr, nullptr, nullptr, iv.data()) == 1
        && EVP_EncryptUpdate(ctx, out.data(), &len, in.data(), int(in.size())) == 1
        && EVP_EncryptFinal_ex(ctx, out.data() + len, &fin) == 1 && size_t(len + fin) == in.size();
}

std::optional<Mac256> TransportCrypto::packet_mac(uint8_t context, uint32_t flags, Iv128 const& iv, uint32_t guest_len,
    uint32_t trans_len, std::span<const uint8_t> ciphertext)
{
    auto* ctx = static_cast<EVP_MAC_CTX*>(m_mac);
    uint8_t head[1 + 4 + 16 + 4 + 4];
    std::span<uint8_t> h(head);
    h[0] = context;
    store_le(h.subspan(1), flags, 4);
    std::memcpy(head + 5, iv.data(), 16);
    store_le(h.subspan(21), guest_len, 4);
    store_le(h.subspan(25), trans_len, 4);
    Mac256 out {};
    size_t len = 0;
    // EVP_MAC_init without a key starts a new MAC under the key already set (OpenSSL 3 HMAC).
    bool ok = EVP_MAC_init(ctx, nullptr, 0, nullptr) == 1 && EVP_MAC_update(ctx, head, sizeof head) == 1
        && EVP_MAC_update(ctx, ciphertext.data(), ciphertext.size()) == 1
        && EVP_MAC_final(ctx, out.data(), &len, out.size()) == 1 && len == out.size();
    if (!ok)
        return std::nullopt;
    return out;
}

} // namespace sevemu::firmware
