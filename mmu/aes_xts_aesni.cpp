// sevemu — AES-XTS kernels on AES-NI + PCLMULQDQ + SSE4.1 (entered only when
// aes_path_supported(AesPath::AesNi)). See aes_xts_kernels.h for why nothing here is inline in
// a header and everything lives in an anonymous namespace.
//
// This file is compiled twice (mmu/meson.build): with -maes -mpclmul -msse4.1 into namespace
// xts::sse, and with -mavx added into xts::avx. The code is the same; the VEX encoding of the
// second has three operands, which saves the register copies the destructive SSE forms need
// around every tweak XOR — worth about 30% on this loop (Intel AES-NI white paper §5, AVX
// versions). aes_xts.cpp picks the AVX build when the CPU and OS support AVX.
//
// XTS (IEEE 1619-2007 §5.3.1): for block j of the data unit with tweak value i,
//   T = E_K2(i) ⊗ α^j,  C = E_K1(P ⊕ T) ⊕ T
// and decryption (§5.4.1) P = D_K1(C ⊕ T) ⊕ T with the same T. A 4 KiB page is 256 full
// blocks, so ciphertext stealing never happens. GF(2^128) elements are 16 bytes read as a
// little-endian 128-bit integer, reduced by x^128 + x^7 + x^2 + x + 1 (§5.2) — the natural bit
// order of PCLMULQDQ, unlike GCM's reflected one.
#include "mmu/aes_xts_kernels.h"

#include <immintrin.h>

#ifndef SEVEMU_AESNI_NS
#error "build with -DSEVEMU_AESNI_NS=sse or =avx (mmu/meson.build)"
#endif

namespace sevemu::mmu::xts::SEVEMU_AESNI_NS {
namespace {

using V = __m128i;

V load(void const* p) { return _mm_loadu_si128(static_cast<V const*>(p)); }
void store(void* p, V v) { _mm_storeu_si128(static_cast<V*>(p), v); }

// --- Key expansion (FIPS-197 §5.2; Intel AES-NI white paper rev 3.01 §4.1 "Key Expansion
// Using AESKEYGENASSIST"). AESKEYGENASSIST(X, rcon) returns, per 32-bit lane,
// [SubWord(X1), RotWord(SubWord(X1)) ^ rcon, SubWord(X3), RotWord(SubWord(X3)) ^ rcon].

// The four words of the next round key: w'[n] = w[0] ^ ... ^ w[n] ^ t (the chained XOR of
// FIPS-197 §5.2), with the prefix XOR done in two shifts.
V chain(V prev, V t)
{
    prev = _mm_xor_si128(prev, _mm_slli_si128(prev, 4));
    prev = _mm_xor_si128(prev, _mm_slli_si128(prev, 8));
    return _mm_xor_si128(prev, t);
}

template <int Rcon>
V next128(V k)
{
    return chain(k, _mm_shuffle_epi32(_mm_aeskeygenassist_si128(k, Rcon), 0xff));
}

void expand128(uint8_t const* key, uint8_t (*rk)[16])
{
    V k = load(key);
    store(rk[0], k);
    k = next128<0x01>(k), store(rk[1], k);
    k = next128<0x02>(k), store(rk[2], k);
    k = next128<0x04>(k), store(rk[3], k);
    k = next128<0x08>(k), store(rk[4], k);
    k = next128<0x10>(k), store(rk[5], k);
    k = next128<0x20>(k), store(rk[6], k);
    k = next128<0x40>(k), store(rk[7], k);
    k = next128<0x80>(k), store(rk[8], k);
    k = next128<0x1b>(k), store(rk[9], k);
    k = next128<0x36>(k), store(rk[10], k);
}

// AES-256 (Nk = 8): even round keys take RotWord+SubWord+Rcon of the previous key's last
// word (lane 3 of the assist), odd ones SubWord only (lane 2), FIPS-197 §5.2 "Nk > 6".
template <int Rcon>
void next256(V& a, V& b, uint8_t (*rk)[16], int i)
{
    a = chain(a, _mm_shuffle_epi32(_mm_aeskeygenassist_si128(b, Rcon), 0xff));
    store(rk[i], a);
    if (i + 1 < 15) {
        b = chain(b, _mm_shuffle_epi32(_mm_aeskeygenassist_si128(a, 0), 0xaa));
        store(rk[i + 1], b);
    }
}

void expand256(uint8_t const* key, uint8_t (*rk)[16])
{
    V a = load(key), b = load(key + 16);
    store(rk[0], a);
    store(rk[1], b);
    next256<0x01>(a, b, rk, 2);
    next256<0x02>(a, b, rk, 4);
    next256<0x04>(a, b, rk, 6);
    next256<0x08>(a, b, rk, 8);
    next256<0x10>(a, b, rk, 10);
    next256<0x20>(a, b, rk, 12);
    next256<0x40>(a, b, rk, 14);
}

// Equivalent inverse cipher schedule (FIPS-197 §5.3.5; white paper §3, AESIMC).
void make_decrypt_schedule(uint8_t const (*enc)[16], uint8_t (*dec)[16], unsigned nr)
{
    store(dec[0], load(enc[nr]));
    for (unsigned r = 1; r < nr; ++r)
        store(dec[r], _mm_aesimc_si128(load(enc[nr - r])));
    store(dec[nr], load(enc[0]));
}

V encrypt_block(V x, uint8_t const (*rk)[16], unsigned nr)
{
    x = _mm_xor_si128(x, load(rk[0]));
    for (unsigned r = 1; r < nr; ++r)
        x = _mm_aesenc_si128(x, load(rk[r]));
    return _mm_aesenclast_si128(x, load(rk[nr]));
}

// --- GF(2^128) arithmetic on tweaks (IEEE 1619-2007 §5.2).

// x^128 mod the XTS polynomial. A function, not a namespace-scope constant: nothing in this
// file may run during static initialisation.
V poly() { return _mm_set_epi64x(0, 0x87); }

// T ⊗ α: shift the 128-bit value left by one; the bit shifted out of x^127 comes back as 0x87.
// Each 32-bit lane doubles on its own; the lane below's top bit (or x^127's, as 0x87) is
// added back from the sign mask rotated one lane up.
V mul_alpha(V t)
{
    V carries = _mm_shuffle_epi32(_mm_srai_epi32(t, 31), 0x93);
    carries = _mm_and_si128(carries, _mm_set_epi32(1, 1, 1, 0x87));
    return _mm_xor_si128(_mm_add_epi32(t, t), carries);
}

// T ⊗ α^8: a one-byte shift, and the byte shifted out multiplied by 0x87 (at most 15 bits).
V mul_alpha8(V t)
{
    V top = _mm_srli_si128(t, 15);
    return _mm_xor_si128(_mm_slli_si128(t, 1), _mm_clmulepi64_si128(top, poly(), 0x00));
}

// a ⊗ b for arbitrary elements: schoolbook carry-less product, then two folds of the high half
// by x^128 ≡ x^7 + x^2 + x + 1.
V gf_mul(V a, V b)
{
    V lo = _mm_clmulepi64_si128(a, b, 0x00);
    V hi = _mm_clmulepi64_si128(a, b, 0x11);
    V mid = _mm_xor_si128(_mm_clmulepi64_si128(a, b, 0x01), _mm_clmulepi64_si128(a, b, 0x10));
    lo = _mm_xor_si128(lo, _mm_slli_si128(mid, 8));
    hi = _mm_xor_si128(hi, _mm_srli_si128(mid, 8));
    V f0 = _mm_clmulepi64_si128(hi, poly(), 0x00); // hi.lo * 0x87, < 2^71
    V f1 = _mm_clmulepi64_si128(hi, poly(), 0x01); // hi.hi * 0x87, < 2^71, weight x^64
    lo = _mm_xor_si128(lo, _mm_xor_si128(f0, _mm_slli_si128(f1, 8)));
    V over = _mm_srli_si128(f1, 8); // the 7 bits that passed x^127
    return _mm_xor_si128(lo, _mm_clmulepi64_si128(over, poly(), 0x00));
}

// α^(4L) for L = 0..63: the first tweak multiplier of line L of a page (4 blocks per line).
struct AlphaPowers {
    uint64_t v[64][2];
};
constexpr AlphaPowers make_alpha_powers()
{
    AlphaPowers p {};
    uint64_t lo = 1, hi = 0;
    for (int line = 0; line < 64; ++line) {
        p.v[line][0] = lo;
        p.v[line][1] = hi;
        for (int k = 0; k < 4; ++k) {
            uint64_t carry = hi >> 63;
            hi = hi << 1 | lo >> 63;
            lo = lo << 1 ^ (carry ? 0x87 : 0);
        }
    }
    return p;
}
constexpr AlphaPowers kAlpha4L = make_alpha_powers();

V first_tweak(KeySchedule const& ks, uint64_t pfn, unsigned nr)
{
    // The tweak value is the PFN as a 128-bit little-endian integer (ARCHITECTURE.md).
    return encrypt_block(_mm_set_epi64x(0, static_cast<long long>(pfn)), ks.k2_enc, nr);
}

// --- The page: 8 blocks in flight. AESENC has a latency of about 4 cycles and issues up to two
// per cycle on current cores, so eight independent blocks keep the AES units busy
// (white paper §5 "Software-side performance", parallel modes). The first round-key XOR is
// folded with the tweak XOR, and the tweak XOR after the last round is folded into the last
// round key: AESENCLAST(x, k ^ T) = AESENCLAST(x, k) ^ T.
template <unsigned Nr, bool Encrypt>
void page_kernel(KeySchedule const& ks, uint8_t const* in, uint8_t* out, uint64_t pfn)
{
    uint8_t const(*rk)[16] = Encrypt ? ks.k1_enc : ks.k1_dec;
    V tw[8];
    tw[0] = first_tweak(ks, pfn, Nr);
    for (int i = 1; i < 8; ++i)
        tw[i] = mul_alpha(tw[i - 1]);
    V const k0 = load(rk[0]);
    V const klast = load(rk[Nr]);
    for (size_t off = 0; off < 4096; off += 128) {
        V x[8];
        for (int i = 0; i < 8; ++i)
            x[i] = _mm_xor_si128(load(in + off + 16 * i), _mm_xor_si128(tw[i], k0));
        for (unsigned r = 1; r < Nr; ++r) {
            V k = load(rk[r]);
            for (int i = 0; i < 8; ++i)
                x[i] = Encrypt ? _mm_aesenc_si128(x[i], k) : _mm_aesdec_si128(x[i], k);
        }
        for (int i = 0; i < 8; ++i) {
            V kl = _mm_xor_si128(klast, tw[i]);
            x[i] = Encrypt ? _mm_aesenclast_si128(x[i], kl) : _mm_aesdeclast_si128(x[i], kl);
        }
        for (int i = 0; i < 8; ++i)
            store(out + off + 16 * i, x[i]);
        for (int i = 0; i < 8; ++i)
            tw[i] = mul_alpha8(tw[i]);
    }
}

template <unsigned Nr, bool Encrypt>
void line_kernel(KeySchedule const& ks, uint8_t const* in, uint8_t* out, uint64_t pfn, unsigned line)
{
    uint8_t const(*rk)[16] = Encrypt ? ks.k1_enc : ks.k1_dec;
    V tw[4];
    tw[0] = gf_mul(first_tweak(ks, pfn, Nr), load(kAlpha4L.v[line & 63]));
    for (int i = 1; i < 4; ++i)
        tw[i] = mul_alpha(tw[i - 1]);
    V const k0 = load(rk[0]);
    V x[4];
    for (int i = 0; i < 4; ++i)
        x[i] = _mm_xor_si128(load(in + 16 * i), _mm_xor_si128(tw[i], k0));
    for (unsigned r = 1; r < Nr; ++r) {
        V k = load(rk[r]);
        for (int i = 0; i < 4; ++i)
            x[i] = Encrypt ? _mm_aesenc_si128(x[i], k) : _mm_aesdec_si128(x[i], k);
    }
    V const klast = load(rk[Nr]);
    for (int i = 0; i < 4; ++i) {
        V kl = _mm_xor_si128(klast, tw[i]);
        x[i] = Encrypt ? _mm_aesenclast_si128(x[i], kl) : _mm_aesdeclast_si128(x[i], kl);
    }
    for (int i = 0; i < 4; ++i)
        store(out + 16 * i, x[i]);
}

} // namespace

void expand(KeySchedule& ks, uint8_t const* key, size_t half)
{
    if (half == 16) {
        ks.rounds = 10;
        expand128(key, ks.k1_enc);
        expand128(key + 16, ks.k2_enc);
    } else {
        ks.rounds = 14;
        expand256(key, ks.k1_enc);
        expand256(key + 32, ks.k2_enc);
    }
    make_decrypt_schedule(ks.k1_enc, ks.k1_dec, ks.rounds);
}

void line_tweak(KeySchedule const& ks, uint64_t pfn, unsigned line, uint8_t* tweak)
{
    store(tweak, gf_mul(first_tweak(ks, pfn, ks.rounds), load(kAlpha4L.v[line & 63])));
}

void page(KeySchedule const& ks, bool encrypt, uint8_t const* in, uint8_t* out, uint64_t pfn)
{
    if (ks.rounds == 10)
        encrypt ? page_kernel<10, true>(ks, in, out, pfn) : page_kernel<10, false>(ks, in, out, pfn);
    else
        encrypt ? page_kernel<14, true>(ks, in, out, pfn) : page_kernel<14, false>(ks, in, out, pfn);
}

void line(KeySchedule const& ks, bool encrypt, uint8_t const* in, uint8_t* out, uint64_t pfn, unsigned line)
{
    if (ks.rounds == 10)
        encrypt ? line_kernel<10, true>(ks, in, out, pfn, line) : line_kernel<10, false>(ks, in, out, pfn, line);
    else
        encrypt ? line_kernel<14, true>(ks, in, out, pfn, line) : line_kernel<14, false>(ks, in, out, pfn, line);
}

} // namespace sevemu::mmu::xts::SEVEMU_AESNI_NS
