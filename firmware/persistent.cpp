#include "firmware/persistent.h"
#include "firmware/ossl_ptr.h"

#include <cstring>
#include <memory>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/obj_mac.h>

namespace sevemu::firmware {

namespace {

constexpr size_t kMacOffset = kNvImageSize - 48;
constexpr size_t kIvOffset = kNvImageSize - 16;
constexpr size_t kRecordSize = kMacOffset;
constexpr uint32_t kRecordVersion = 1;

struct NvKeys {
    Bytes enc;
    Bytes integrity;
    ~NvKeys()
    {
        secure_zero(enc.data(), enc.size());
        secure_zero(integrity.data(), integrity.size());
    }
};

NvKeys nv_keys(ChipUniqueKey const& cuk)
{
    return { kdf_sp800_108(cuk, "sev-persistent-encryption", {}, 16), kdf_sp800_108(cuk, "sev-persistent-integrity", {}, 32) };
}

void put_u32(Bytes& out, uint32_t v)
{
    for (int i = 0; i < 4; ++i)
        out.push_back(uint8_t(v >> (8 * i)));
}

void put_blob(Bytes& out, Bytes const& b)
{
    put_u32(out, uint32_t(b.size()));
    out.insert(out.end(), b.begin(), b.end());
}

// Reads one (len, bytes) field; only the sizes sevemu writes are accepted.
bool get_blob(std::span<const uint8_t> rec, size_t& at, Bytes& out, size_t allowed)
{
    if (at + 4 > rec.size())
        return false;
    uint32_t len = uint32_t(load_le(rec.subspan(at, 4), 4));
    at += 4;
    if (len != 0 && len != allowed)
        return false;
    if (at + len > rec.size())
        return false;
    out.assign(rec.begin() + at, rec.begin() + at + len);
    at += len;
    return true;
}

// Private scalars are cleared when freed (BN_clear_free).
using Bn = OsslPtr<BIGNUM, BN_clear_free>;
using BnCtx = OsslPtr<BN_CTX, BN_CTX_free>;
using Group = OsslPtr<EC_GROUP, EC_GROUP_free>;
using Point = OsslPtr<EC_POINT, EC_POINT_free>;

} // namespace

void PersistentState::wipe()
{
    for (Bytes* b : { &oca_priv, &pek_priv, &pdh_priv })
        secure_zero(b->data(), b->size());
    *this = PersistentState {};
}

Bytes nv_erased_image() { return Bytes(kNvImageSize, 0xFF); }

Result<Bytes, NvError> nv_seal(PersistentState const& s, ChipUniqueKey const& cuk)
{
    Bytes rec;
    rec.reserve(kRecordSize);
    rec.insert(rec.end(), { 'S', 'V', 'N', 'V' });
    put_u32(rec, kRecordVersion);
    rec.push_back(s.ext_owned ? 1 : 0);
    rec.insert(rec.end(), { 0, 0, 0 });
    put_blob(rec, s.oca_priv);
    put_blob(rec, s.oca_cert);
    put_blob(rec, s.pek_priv);
    put_blob(rec, s.pek_cert);
    put_blob(rec, s.pdh_priv);
    put_blob(rec, s.pdh_cert);
    if (rec.size() > kRecordSize)
        return make_unexpected(NvError::BadSize);
    rec.resize(kRecordSize, 0);

    Iv128 iv {};
    if (!random_bytes(iv))
        return make_unexpected(NvError::Crypto);
    auto keys = nv_keys(cuk);
    auto ct = aes128_ctr(keys.enc, iv, rec);
    secure_zero(rec.data(), rec.size());
    if (!ct)
        return make_unexpected(NvError::Crypto);
    Mac256 mac = hmac_sha256(keys.integrity, { std::span<const uint8_t>(*ct), std::span<const uint8_t>(iv) });
    Bytes image = std::move(*ct);
    image.insert(image.end(), mac.begin(), mac.end());
    image.insert(image.end(), iv.begin(), iv.end());
    return image;
}

Result<std::optional<PersistentState>, NvError> nv_unseal(std::span<const uint8_t> image, ChipUniqueKey const& cuk)
{
    if (image.size() != kNvImageSize)
        return make_unexpected(NvError::BadSize);
    if (load_le(image, 4) == 0xFFFFFFFFu)
        return std::optional<PersistentState> {};
    auto keys = nv_keys(cuk);
    auto ct = image.first(kRecordSize);
    auto iv = image.subspan(kIvOffset, 16);
    Mac256 mac = hmac_sha256(keys.integrity, { ct, iv });
    // Integrity first: a flipped bit or an image from another chip is refused before decryption.
    if (!equal_ct(mac, image.subspan(kMacOffset, 32)))
        return make_unexpected(NvError::Corrupt);
    auto pt = aes128_ctr(keys.enc, iv, ct);
    if (!pt)
        return make_unexpected(NvError::Crypto);
    std::span<const uint8_t> rec(*pt);
    PersistentState s;
    size_t at = 12;
    bool ok = std::memcmp(rec.data(), "SVNV", 4) == 0 && load_le(rec.subspan(4), 4) == kRecordVersion && rec[8] <= 1;
    if (ok) {
        s.ext_owned = rec[8] == 1;
        ok = get_blob(rec, at, s.oca_priv, kP384Bytes) && get_blob(rec, at, s.oca_cert, 0x824)
            && get_blob(rec, at, s.pek_priv, kP384Bytes) && get_blob(rec, at, s.pek_cert, 0x824)
            && get_blob(rec, at, s.pdh_priv, kP384Bytes) && get_blob(rec, at, s.pdh_cert, 0x824);
    }
    secure_zero(pt->data(), pt->size());
    if (!ok) {
        s.wipe();
        return make_unexpected(NvError::Corrupt);
    }
    return std::optional<PersistentState>(std::move(s));
}

Result<PKey, CryptoError> derive_cek(ChipUniqueKey const& cuk)
{
    Sha256Digest seed = sha256(cuk);
    Bytes c = kdf_sp800_108(seed, "sev-chip-endorsement-key", {}, 56);
    BnCtx ctx(BN_CTX_new());
    Group group(EC_GROUP_new_by_curve_name(NID_secp384r1));
    Bn bc(BN_bin2bn(c.data(), int(c.size()), nullptr));
    Bn n1(BN_dup(EC_GROUP_get0_order(group.get())));
    Bn d(BN_new());
    secure_zero(c.data(), c.size());
    if (!ctx || !group || !bc || !n1 || !d)
        return make_unexpected(CryptoError::Internal);
    // d = (c mod (n - 1)) + 1, FIPS 186-4 B.4.1.
    if (!BN_sub_word(n1.get(), 1) || !BN_mod(d.get(), bc.get(), n1.get(), ctx.get()) || !BN_add_word(d.get(), 1))
        return make_unexpected(CryptoError::Internal);
    std::array<uint8_t, kP384Bytes> scalar {};
    if (BN_bn2binpad(d.get(), scalar.data(), int(scalar.size())) != int(scalar.size()))
        return make_unexpected(CryptoError::Internal);
    auto key = p384_from_private(scalar);
    secure_zero(scalar.data(), scalar.size());
    return key;
}

Result<std::array<uint8_t, 64>, CryptoError> chip_id_from_cuk(ChipUniqueKey const& cuk)
{
    BnCtx ctx(BN_CTX_new());
    Group group(EC_GROUP_new_by_curve_name(NID_secp256k1));
    if (!ctx || !group)
        return make_unexpected(CryptoError::Internal);
    Bn k(BN_bin2bn(cuk.data(), int(cuk.size()), nullptr));
    Bn d(BN_new());
    if (!k || !d || !BN_nnmod(d.get(), k.get(), EC_GROUP_get0_order(group.get()), ctx.get()))
        return make_unexpected(CryptoError::Internal);
    if (BN_is_zero(d.get()))
        BN_one(d.get());
    Point pub(EC_POINT_new(group.get()));
    Bn x(BN_new()), y(BN_new());
    if (!pub || !x || !y || !EC_POINT_mul(group.get(), pub.get(), d.get(), nullptr, nullptr, ctx.get())
        || !EC_POINT_get_affine_coordinates(group.get(), pub.get(), x.get(), y.get(), ctx.get()))
        return make_unexpected(CryptoError::Internal);
    std::array<uint8_t, 64> id {};
    if (BN_bn2binpad(x.get(), id.data(), 32) != 32 || BN_bn2binpad(y.get(), id.data() + 32, 32) != 32)
        return make_unexpected(CryptoError::Internal);
    return id;
}

} // namespace sevemu::firmware
