// sevemu — AES-XTS kernels on VAES + VPCLMULQDQ + AVX-512 (compiled with -mvaes -mavx512f
// -mavx512vl -mavx512bw -mvpclmulqdq -maes -mpclmul; entered only when
// aes_path_supported(AesPath::Vaes), which also checks that the OS saves zmm state).
//
// A zmm register holds four consecutive XTS blocks, j..j+3, and the matching four tweaks
// T ⊗ α^j..α^(j+3) (IEEE 1619-2007 §5.3.1). VAESENC/VAESDEC apply one AES round to each 128-bit
// lane (Intel SDM vol 2, VAESENC), so one instruction advances four blocks; eight registers
// (32 blocks) are in flight to cover the instruction latency.
//
// Tweaks are produced in bulk: all 32 tweaks of the first group come straight from E_K2(PFN)
// by per-lane shifts of 0..31 bits plus one carry-less multiply of the bits shifted out by the
// reduction constant 0x87 (x^128 ≡ x^7 + x^2 + x + 1, §5.2); each following group is the
// previous one times α^(4·kVectors) = α^32, which is a 4-byte lane shift and one VPCLMULQDQ.
#include "mmu/aes_xts_kernels.h"

#include <immintrin.h>

namespace sevemu::mmu::xts {
namespace {

using V = __m128i;
using Z = __m512i;

// zmm registers of data in flight: 32 blocks, 512 bytes. Measured on the development machine
// (AMD EPYC with AVX-512): four and eight run at the same rate, in L2 and from DRAM; sixteen
// spill (16 data + 16 tweak registers) and lose 15%. Eight leaves room for cores with a longer
// VAESENC latency.
constexpr int kVectors = 8;
static_assert(kVectors % 2 == 0 && kVectors <= 16 && 64 % kVectors == 0);

// GCC 12's unmasked forms of these three pass an "undefined" vector that trips a false
// -Wuninitialized; the all-ones zero-masking forms compile to the same instructions.
Z sllv(Z x, Z n) { return _mm512_maskz_sllv_epi64(0xff, x, n); }
Z srlv(Z x, Z n) { return _mm512_maskz_srlv_epi64(0xff, x, n); }
Z broadcast(V x) { return _mm512_maskz_broadcast_i32x4(0xffff, x); }

Z zload(void const* p) { return _mm512_loadu_si512(p); }
void zstore(void* p, Z v) { _mm512_storeu_si512(p, v); }
Z zpoly() { return _mm512_set1_epi64(0x87); } // only the low qword of each lane is used

// T ⊗ α^k per 128-bit lane, with k given per qword (the same value in both qwords of a lane),
// 0 <= k <= 56 so that the k bits shifted out, times 0x87, stay within one qword.
// Shifts by 64 (k = 0) yield zero on AVX-512 variable shifts, which is what k = 0 needs.
Z mul_alpha_var(Z t, Z k, Z k_complement /* 64 - k */)
{
    Z shifted = sllv(t, k);
    Z carry_mid = srlv(_mm512_bslli_epi128(t, 8), k_complement); // lo qword's top k bits into hi
    Z out = srlv(_mm512_bsrli_epi128(t, 8), k_complement);      // hi qword's top k bits, in lo
    return _mm512_ternarylogic_epi64(shifted, carry_mid, _mm512_clmulepi64_epi128(out, zpoly(), 0x00), 0x96);
}

// T ⊗ α^(8·Bytes) per lane: a byte shift; the 8·Bytes bits shifted out (at most 64, in the low
// qword) times 0x87 fit in the 128-bit carry-less product.
template <int Bytes>
Z mul_alpha_bytes(Z t)
{
    static_assert(Bytes >= 1 && Bytes <= 8);
    Z out = _mm512_bsrli_epi128(t, 16 - Bytes);
    return _mm512_xor_si512(_mm512_bslli_epi128(t, Bytes), _mm512_clmulepi64_epi128(out, zpoly(), 0x00));
}

// Lane i of group g holds block 4g + i: shift counts 4g + i in both qwords of lane i.
Z lane_counts(int first)
{
    return _mm512_add_epi64(_mm512_set_epi64(3, 3, 2, 2, 1, 1, 0, 0), _mm512_set1_epi64(first));
}

V first_tweak(KeySchedule const& ks, uint64_t pfn)
{
    // The tweak value is the PFN as a 128-bit little-endian integer (ARCHITECTURE.md).
    V x = _mm_xor_si128(_mm_set_epi64x(0, static_cast<long long>(pfn)), _mm_loadu_si128(reinterpret_cast<V const*>(ks.k2_enc[0])));
    for (unsigned r = 1; r < ks.rounds; ++r)
        x = _mm_aesenc_si128(x, _mm_loadu_si128(reinterpret_cast<V const*>(ks.k2_enc[r])));
    return _mm_aesenclast_si128(x, _mm_loadu_si128(reinterpret_cast<V const*>(ks.k2_enc[ks.rounds])));
}

Z round(Z x, Z k, bool encrypt) { return encrypt ? _mm512_aesenc_epi128(x, k) : _mm512_aesdec_epi128(x, k); }
Z last_round(Z x, Z k, bool encrypt) { return encrypt ? _mm512_aesenclast_epi128(x, k) : _mm512_aesdeclast_epi128(x, k); }

// As in the AES-NI kernel, the input tweak XOR is merged with round key 0 (one VPTERNLOGQ) and
// the output tweak XOR with the last round key: AESENCLAST(x, k ^ T) = AESENCLAST(x, k) ^ T.
template <unsigned Nr, bool Encrypt>
void page_kernel(KeySchedule const& ks, WideKeySchedule const& wide, uint8_t const* in, uint8_t* out, uint64_t pfn)
{
    uint8_t const(*rk)[64] = Encrypt ? wide.k1_enc : wide.k1_dec;
    Z const t = broadcast(first_tweak(ks, pfn));
    Z tw[kVectors];
    for (int g = 0; g < kVectors; ++g) {
        Z k = lane_counts(4 * g);
        tw[g] = mul_alpha_var(t, k, _mm512_sub_epi64(_mm512_set1_epi64(64), k));
    }
    Z const k0 = zload(rk[0]);
    Z const klast = zload(rk[Nr]);
    for (size_t off = 0; off < 4096; off += 64 * kVectors) {
        Z x[kVectors];
        for (int g = 0; g < kVectors; ++g)
            x[g] = _mm512_ternarylogic_epi64(zload(in + off + 64 * g), tw[g], k0, 0x96);
        for (unsigned r = 1; r < Nr; ++r) {
            Z k = zload(rk[r]);
            for (int g = 0; g < kVectors; ++g)
                x[g] = round(x[g], k, Encrypt);
        }
        for (int g = 0; g < kVectors; ++g)
            x[g] = last_round(x[g], _mm512_xor_si512(klast, tw[g]), Encrypt);
        for (int g = 0; g < kVectors; ++g)
            zstore(out + off + 64 * g, x[g]);
        for (int g = 0; g < kVectors; ++g)
            tw[g] = mul_alpha_bytes<kVectors / 2>(tw[g]); // 4 · kVectors blocks on
    }
}

// One line is one zmm: the tweak of its first block comes from the AES-NI kernel (one GF(2^128)
// multiply by α^(4·line)), the other three by lane shifts of 0..3.
template <unsigned Nr, bool Encrypt>
void line_kernel(KeySchedule const& ks, WideKeySchedule const& wide, uint8_t const* in, uint8_t* out, uint64_t pfn, unsigned line)
{
    uint8_t const(*rk)[64] = Encrypt ? wide.k1_enc : wide.k1_dec;
    alignas(16) uint8_t first[16];
    avx::line_tweak(ks, pfn, line, first); // VAES implies AVX: the VEX build of the AES-NI kernels
    Z k = lane_counts(0);
    Z tw = mul_alpha_var(broadcast(_mm_load_si128(reinterpret_cast<V const*>(first))), k,
        _mm512_sub_epi64(_mm512_set1_epi64(64), k));
    Z x = _mm512_ternarylogic_epi64(zload(in), tw, zload(rk[0]), 0x96);
    for (unsigned r = 1; r < Nr; ++r)
        x = round(x, zload(rk[r]), Encrypt);
    zstore(out, last_round(x, _mm512_xor_si512(zload(rk[Nr]), tw), Encrypt));
}

} // namespace

void vaes_widen(WideKeySchedule& wide, KeySchedule const& ks)
{
    for (unsigned r = 0; r <= ks.rounds; ++r) {
        zstore(wide.k1_enc[r], broadcast(_mm_loadu_si128(reinterpret_cast<V const*>(ks.k1_enc[r]))));
        zstore(wide.k1_dec[r], broadcast(_mm_loadu_si128(reinterpret_cast<V const*>(ks.k1_dec[r]))));
    }
}

void vaes_page(KeySchedule const& ks, WideKeySchedule const& wide, bool encrypt, uint8_t const* in, uint8_t* out, uint64_t pfn)
{
    if (ks.rounds == 10)
        encrypt ? page_kernel<10, true>(ks, wide, in, out, pfn) : page_kernel<10, false>(ks, wide, in, out, pfn);
    else
        encrypt ? page_kernel<14, true>(ks, wide, in, out, pfn) : page_kernel<14, false>(ks, wide, in, out, pfn);
}

void vaes_line(KeySchedule const& ks, WideKeySchedule const& wide, bool encrypt, uint8_t const* in, uint8_t* out, uint64_t pfn,
    unsigned line)
{
    if (ks.rounds == 10)
        encrypt ? line_kernel<10, true>(ks, wide, in, out, pfn, line) : line_kernel<10, false>(ks, wide, in, out, pfn, line);
    else
        encrypt ? line_kernel<14, true>(ks, wide, in, out, pfn, line) : line_kernel<14, false>(ks, wide, in, out, pfn, line);
}

} // namespace sevemu::mmu::xts
