// sevemu — internal interface between mmu/aes_xts.cpp (dispatch, key handling) and the
// instruction-set specific XTS kernels in aes_xts_aesni.cpp and aes_xts_vaes.cpp.
//
// Those two files are compiled with -maes/-mavx512f/... so they may only be entered after
// aes_path_supported() said yes. For that reason this header holds plain data and declarations
// only: an inline function here would be compiled once per translation unit with different
// target flags, and the linker could keep the AVX-512 copy for everyone.
#pragma once

#include <cstddef>
#include <cstdint>

namespace sevemu::mmu::xts {

// AES round keys for one key (FIPS-197 §5.2), encryption order, and for K1 also the
// "equivalent inverse cipher" decryption schedule (FIPS-197 §5.3.5; Intel AES-NI white paper
// §3 "The AES Instructions", AESIMC): dec[0] = enc[Nr], dec[r] = InvMixColumns(enc[Nr - r]),
// dec[Nr] = enc[0].
struct alignas(64) KeySchedule {
    uint8_t k1_enc[15][16];
    uint8_t k1_dec[15][16];
    uint8_t k2_enc[15][16];
    unsigned rounds; // Nr: 10 for AES-128, 14 for AES-256
};

// The same round keys, each broadcast to the four 128-bit lanes of a 512-bit vector, so the
// VAES kernel loads them straight into zmm registers.
struct alignas(64) WideKeySchedule {
    uint8_t k1_enc[15][64];
    uint8_t k1_dec[15][64];
};

// aes_xts_aesni.cpp (AES-NI, PCLMULQDQ, SSE4.1), built twice: namespace sse with legacy SSE
// encodings, namespace avx with VEX encodings (needs AVX and OS YMM state as well).
#define SEVEMU_AESNI_KERNELS                                                                                  \
    /* key = K1 || K2, half = 16 or 32 bytes each. */                                                        \
    void expand(KeySchedule& ks, uint8_t const* key, size_t half);                                           \
    void page(KeySchedule const& ks, bool encrypt, uint8_t const* in, uint8_t* out, uint64_t pfn);           \
    void line(KeySchedule const& ks, bool encrypt, uint8_t const* in, uint8_t* out, uint64_t pfn, unsigned line); \
    /* The tweak of the first block of line `line` of page pfn: E_K2(pfn) * alpha^(4 line), 16 bytes. */   \
    void line_tweak(KeySchedule const& ks, uint64_t pfn, unsigned line, uint8_t* tweak);
namespace sse {
SEVEMU_AESNI_KERNELS
}
namespace avx {
SEVEMU_AESNI_KERNELS
}
#undef SEVEMU_AESNI_KERNELS

// aes_xts_vaes.cpp (VAES, VPCLMULQDQ, AVX-512 F/VL/BW).
void vaes_widen(WideKeySchedule& wide, KeySchedule const& ks);
void vaes_page(KeySchedule const& ks, WideKeySchedule const& wide, bool encrypt, uint8_t const* in, uint8_t* out, uint64_t pfn);
void vaes_line(KeySchedule const& ks, WideKeySchedule const& wide, bool encrypt, uint8_t const* in, uint8_t* out, uint64_t pfn,
    unsigned line);

} // namespace sevemu::mmu::xts
