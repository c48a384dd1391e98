#include "mmu/aes_xts.h"

#include "base/encoding.h"

#include <cstring>
#include <openssl/evp.h>

namespace sevemu::mmu {

std::string_view aes_path_name(AesPath p)
{
    switch (p) {
    case AesPath::Portable:
        return "portable";
    case AesPath::AesNi:
        return "aesni";
    case AesPath::Vaes:
        return "vaes";
    }
    return "?";
}

// Portable path: OpenSSL's EVP AES-XTS. The page is one XTS data unit and the IV is the PFN
// as 16 little-endian bytes. A single line is done with ECB on the underlying AES keys: the
// tweak of block j is E_K2(PFN) * alpha^j in GF(2^128) (IEEE 1619 §5.3.1).
struct XtsCipher::Impl {
    EVP_CIPHER_CTX* enc { nullptr };
    EVP_CIPHER_CTX* dec { nullptr };
    EVP_CIPHER_CTX* ecb_k1_enc { nullptr };
    EVP_CIPHER_CTX* ecb_k1_dec { nullptr };
    EVP_CIPHER_CTX* ecb_k2_enc { nullptr };
    ~Impl()
    {
        EVP_CIPHER_CTX_free(enc);
        EVP_CIPHER_CTX_free(dec);
        EVP_CIPHER_CTX_free(ecb_k1_enc);
        EVP_CIPHER_CTX_free(ecb_k1_dec);
        EVP_CIPHER_CTX_free(ecb_k2_enc);
    }
};

bool aes_path_supported(AesPath p) { return p == AesPath::Portable; }
AesPath best_aes_path() { return AesPath::Portable; }

Result<std::unique_ptr<XtsCipher>, XtsError> XtsCipher::create(std::span<const uint8_t> key, AesPath path)
{
    if (key.size() != 32 && key.size() != 64)
        return make_unexpected(XtsError::BadKeyLength);
    size_t half = key.size() / 2;
    // OpenSSL (and IEEE 1619) refuse K1 == K2.
    if (std::memcmp(key.data(), key.data() + half, half) == 0)
        return make_unexpected(XtsError::IdenticalHalves);
    if (!aes_path_supported(path))
        return make_unexpected(XtsError::PathUnsupported);
    std::unique_ptr<XtsCipher> c(new XtsCipher);
    c->m_path = path;
    c->m_key_size = half == 16 ? XtsKeySize::Aes128 : XtsKeySize::Aes256;
    c->m_impl = std::make_unique<Impl>();
    auto& i = *c->m_impl;
    EVP_CIPHER const* xts = half == 16 ? EVP_aes_128_xts() : EVP_aes_256_xts();
    EVP_CIPHER const* ecb = half == 16 ? EVP_aes_128_ecb() : EVP_aes_256_ecb();
    i.enc = EVP_CIPHER_CTX_new();
    i.dec = EVP_CIPHER_CTX_new();
    i.ecb_k1_enc = EVP_CIPHER_CTX_new();
    i.ecb_k1_dec = EVP_CIPHER_CTX_new();
    i.ecb_k2_enc = EVP_CIPHER_CTX_new();
    bool ok = EVP_EncryptInit_ex(i.enc, xts, nullptr, key.data(), nullptr) == 1
        && EVP_DecryptInit_ex(i.dec, xts, nullptr, key.data(), nullptr) == 1
        && EVP_EncryptInit_ex(i.ecb_k1_enc, ecb, nullptr, key.data(), nullptr) == 1
        && EVP_DecryptInit_ex(i.ecb_k1_dec, ecb, nullptr, key.data(), nullptr) == 1
        && EVP_EncryptInit_ex(i.ecb_k2_enc, ecb, nullptr, key.data() + half, nullptr) == 1;
    if (!ok)
        return make_unexpected(XtsError::BadKeyLength);
    EVP_CIPHER_CTX_set_padding(i.ecb_k1_enc, 0);
    EVP_CIPHER_CTX_set_padding(i.ecb_k1_dec, 0);
    EVP_CIPHER_CTX_set_padding(i.ecb_k2_enc, 0);
    return c;
}

XtsCipher::~XtsCipher() = default;

static void pfn_iv(uint8_t iv[16], uint64_t pfn)
{
    std::memset(iv, 0, 16);
    store_le({ iv, 8 }, pfn, 8);
}

static void run_xts(EVP_CIPHER_CTX* ctx, uint8_t const* in, uint8_t* out, uint64_t pfn)
{
    uint8_t iv[16];
    pfn_iv(iv, pfn);
    int len = 0;
    EVP_CipherInit_ex(ctx, nullptr, nullptr, nullptr, iv, -1);
    EVP_CipherUpdate(ctx, out, &len, in, int(kXtsDataUnit));
}

void XtsCipher::encrypt_page(uint8_t const* in, uint8_t* out, uint64_t pfn) const { run_xts(m_impl->enc, in, out, pfn); }
void XtsCipher::decrypt_page(uint8_t const* in, uint8_t* out, uint64_t pfn) const { run_xts(m_impl->dec, in, out, pfn); }

// Multiply a tweak by alpha (x) in GF(2^128), little-endian byte order (IEEE 1619 §5.2).
static void gf_mul_alpha(uint8_t t[16])
{
    uint8_t carry = 0;
    for (int k = 0; k < 16; ++k) {
        uint8_t next = t[k] >> 7;
        t[k] = uint8_t(t[k] << 1 | carry);
        carry = next;
    }
    if (carry)
        t[0] ^= 0x87;
}

static void line_portable(XtsCipher::Impl const& i, bool encrypt, uint8_t const* in, uint8_t* out, uint64_t pfn, unsigned line)
{
    uint8_t tweak[16];
    pfn_iv(tweak, pfn);
    int len = 0;
    EVP_EncryptUpdate(i.ecb_k2_enc, tweak, &len, tweak, 16);
    for (unsigned j = 0; j < line * 4; ++j)
        gf_mul_alpha(tweak);
    uint8_t buf[kCacheLine];
    for (unsigned b = 0; b < 4; ++b) {
        for (int k = 0; k < 16; ++k)
            buf[b * 16 + k] = in[b * 16 + k] ^ tweak[k];
        EVP_CIPHER_CTX* ctx = encrypt ? i.ecb_k1_enc : i.ecb_k1_dec;
        EVP_CipherUpdate(ctx, buf + b * 16, &len, buf + b * 16, 16);
        for (int k = 0; k < 16; ++k)
            out[b * 16 + k] = buf[b * 16 + k] ^ tweak[k];
        gf_mul_alpha(tweak);
    }
}

void XtsCipher::encrypt_line(uint8_t const* in, uint8_t* out, uint64_t pfn, unsigned line) const
{
    line_portable(*m_impl, true, in, out, pfn, line);
}
void XtsCipher::decrypt_line(uint8_t const* in, uint8_t* out, uint64_t pfn, unsigned line) const
{
    line_portable(*m_impl, false, in, out, pfn, line);
}

} // namespace sevemu::mmu
