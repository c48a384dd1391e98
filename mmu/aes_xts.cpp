// sevemu — the memory encryption cipher: CPUID-based path selection, key set-up, dispatch to the
// AES-NI / VAES kernels, and the Portable (OpenSSL EVP) path.
#include "mmu/aes_xts.h"

#include "base/encoding.h"
#include "mmu/aes_xts_kernels.h"

#include <cpuid.h>
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
//
// AesNi and Vaes paths: our own key schedules (aes_xts_kernels.h) and kernels in
// aes_xts_aesni.cpp / aes_xts_vaes.cpp. The schedules are wiped when the cipher dies (a key
// slot cleared or reprogrammed); EVP_CIPHER_CTX_free cleanses OpenSSL's own copies.
struct XtsCipher::Impl {
    xts::KeySchedule ks {};
    bool vex {}; // AesNi: use the VEX-encoded (xts::avx) build of the kernels
    std::unique_ptr<xts::WideKeySchedule> wide; // Vaes only
    EVP_CIPHER_CTX* enc { nullptr };
    EVP_CIPHER_CTX* dec { nullptr };
    EVP_CIPHER_CTX* ecb_k1_enc { nullptr };
    EVP_CIPHER_CTX* ecb_k1_dec { nullptr };
    EVP_CIPHER_CTX* ecb_k2_enc { nullptr };
    ~Impl()
    {
        secure_zero(&ks, sizeof ks);
        if (wide)
            secure_zero(wide.get(), sizeof *wide);
        EVP_CIPHER_CTX_free(enc);
        EVP_CIPHER_CTX_free(dec);
        EVP_CIPHER_CTX_free(ecb_k1_enc);
        EVP_CIPHER_CTX_free(ecb_k1_dec);
        EVP_CIPHER_CTX_free(ecb_k2_enc);
    }
};

namespace {

struct CpuFeatures {
    bool aesni {};
    bool avx {}; // AES-NI kernels may use their VEX-encoded build
    bool vaes {};
};

// XCR0 through XGETBV; only executed once CPUID says the OS enabled it (OSXSAVE).
uint64_t read_xcr0()
{
    uint32_t lo, hi;
    asm volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return uint64_t(hi) << 32 | lo;
}

CpuFeatures detect_cpu()
{
    CpuFeatures f;
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return f;
    // CPUID.01H:ECX — SSE4.1 [19], PCLMULQDQ [1], AESNI [25] (Intel AES-NI white paper §5.1,
    // "Detecting Intel AES-NI"), OSXSAVE [27].
    bool sse41 = c & (1u << 19), pclmul = c & (1u << 1), aes = c & (1u << 25), osxsave = c & (1u << 27);
    f.aesni = sse41 && pclmul && aes;
    if (!f.aesni || !osxsave)
        return f;
    uint64_t xcr0 = read_xcr0();
    // AVX: CPUID.01H:ECX[28] and XCR0 bits 1, 2 (SSE and YMM state; SDM vol 1 §14.3).
    f.avx = (c & (1u << 28)) && (xcr0 & 0x6) == 0x6;
    // AVX-512: the OS must also save opmask, ZMM_Hi256 and Hi16_ZMM state, XCR0 bits 5, 6, 7
    // (SDM vol 1 §15.2, "Detection of AVX-512 Foundation Instructions").
    if (!f.avx || (xcr0 & 0xe6) != 0xe6)
        return f;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return f;
    // CPUID.(EAX=07H,ECX=0): EBX AVX512F [16], AVX512BW [30], AVX512VL [31];
    // ECX VAES [9], VPCLMULQDQ [10].
    bool avx512 = (b & (1u << 16)) && (b & (1u << 30)) && (b & (1u << 31));
    f.vaes = avx512 && (c & (1u << 9)) && (c & (1u << 10));
    return f;
}

CpuFeatures const& cpu()
{
    static CpuFeatures const features = detect_cpu();
    return features;
}

} // namespace

bool aes_path_supported(AesPath p)
{
    switch (p) {
    case AesPath::Portable:
        return true;
    case AesPath::AesNi:
        return cpu().aesni;
    case AesPath::Vaes:
        return cpu().vaes;
    }
    return false;
}

AesPath best_aes_path()
{
    if (aes_path_supported(AesPath::Vaes))
        return AesPath::Vaes;
    if (aes_path_supported(AesPath::AesNi))
        return AesPath::AesNi;
    return AesPath::Portable;
}

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
    if (path != AesPath::Portable) {
        i.vex = cpu().avx;
        (i.vex ? xts::avx::expand : xts::sse::expand)(i.ks, key.data(), half);
        if (path == AesPath::Vaes) {
            i.wide = std::make_unique<xts::WideKeySchedule>();
            xts::vaes_widen(*i.wide, i.ks);
        }
        return c;
    }
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

void XtsCipher::encrypt_page(uint8_t const* in, uint8_t* out, uint64_t pfn) const
{
    switch (m_path) {
    case AesPath::Vaes:
        return xts::vaes_page(m_impl->ks, *m_impl->wide, true, in, out, pfn);
    case AesPath::AesNi:
        return (m_impl->vex ? xts::avx::page : xts::sse::page)(m_impl->ks, true, in, out, pfn);
    case AesPath::Portable:
        return run_xts(m_impl->enc, in, out, pfn);
    }
}

void XtsCipher::decrypt_page(uint8_t const* in, uint8_t* out, uint64_t pfn) const
{
    switch (m_path) {
    case AesPath::Vaes:
        return xts::vaes_page(m_impl->ks, *m_impl->wide, false, in, out, pfn);
    case AesPath::AesNi:
        return (m_impl->vex ? xts::avx::page : xts::sse::page)(m_impl->ks, false, in, out, pfn);
    case AesPath::Portable:
        return run_xts(m_impl->dec, in, out, pfn);
    }
}

// Multiply a tweak by alpha (x) in GF(2^128), little-endian byte order (IEEE 1619 §5.2):
// shift the 128-bit value left by one; a carry out of x^127 comes back as x^7 + x^2 + x + 1.
static void gf_mul_alpha_n(uint8_t t[16], unsigned n)
{
    uint64_t lo = load_le({ t, 8 }, 8), hi = load_le({ t + 8, 8 }, 8);
    for (unsigned k = 0; k < n; ++k) {
        uint64_t carry = hi >> 63;
        hi = hi << 1 | lo >> 63;
        lo = lo << 1 ^ (0x87 & (0 - carry));
    }
    store_le({ t, 8 }, lo, 8);
    store_le({ t + 8, 8 }, hi, 8);
}

static void line_portable(XtsCipher::Impl const& i, bool encrypt, uint8_t const* in, uint8_t* out, uint64_t pfn, unsigned line)
{
    uint8_t tweaks[kCacheLine];
    pfn_iv(tweaks, pfn);
    int len = 0;
    EVP_EncryptUpdate(i.ecb_k2_enc, tweaks, &len, tweaks, 16);
    gf_mul_alpha_n(tweaks, (line % 64) * 4);
    for (unsigned b = 1; b < 4; ++b) {
        std::memcpy(tweaks + b * 16, tweaks + (b - 1) * 16, 16);
        gf_mul_alpha_n(tweaks + b * 16, 1);
    }
    // The four blocks in one ECB call: PP = P ^ T, CC = E_K1(PP), C = CC ^ T (IEEE 1619 §5.3.2).
    uint8_t buf[kCacheLine];
    for (size_t k = 0; k < kCacheLine; ++k)
        buf[k] = in[k] ^ tweaks[k];
    EVP_CipherUpdate(encrypt ? i.ecb_k1_enc : i.ecb_k1_dec, buf, &len, buf, int(kCacheLine));
    for (size_t k = 0; k < kCacheLine; ++k)
        out[k] = buf[k] ^ tweaks[k];
    secure_zero(buf, sizeof buf);
}

void XtsCipher::encrypt_line(uint8_t const* in, uint8_t* out, uint64_t pfn, unsigned line) const
{
    switch (m_path) {
    case AesPath::Vaes:
        return xts::vaes_line(m_impl->ks, *m_impl->wide, true, in, out, pfn, line);
    case AesPath::AesNi:
        return (m_impl->vex ? xts::avx::line : xts::sse::line)(m_impl->ks, true, in, out, pfn, line);
    case AesPath::Portable:
        return line_portable(*m_impl, true, in, out, pfn, line);
    }
}

void XtsCipher::decrypt_line(uint8_t const* in, uint8_t* out, uint64_t pfn, unsigned line) const
{
    switch (m_path) {
    case AesPath::Vaes:
        return xts::vaes_line(m_impl->ks, *m_impl->wide, false, in, out, pfn, line);
    case AesPath::AesNi:
        return (m_impl->vex ? xts::avx::line : xts::sse::line)(m_impl->ks, false, in, out, pfn, line);
    case AesPath::Portable:
        return line_portable(*m_impl, false, in, out, pfn, line);
    }
}

} // namespace sevemu::mmu
