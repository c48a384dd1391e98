/* Guest: SSE3, SSSE3, SSE4.1 and SSE4.2 through the compiler's intrinsics, end to end. Built with
 * -msse4.2 for the guest and natively, so the known answer is the host CPU running the same
 * instructions on the same generated data: CPUID feature bits, then one digest per instruction
 * group, then self-checks that need no host (CRC32 vs. a bitwise CRC-32C, PCMPISTRI strlen and
 * PCMPESTRI search vs. plain C, ROUNDSD vs. the mode's definition). */
#include "guest.h"

#include <cpuid.h>
#include <immintrin.h>

static uint64_t digest = 0xcbf29ce484222325ull;
static void mix(const void* p, size_t n)
{
    const unsigned char* b = p;
    for (size_t i = 0; i < n; ++i)
        digest = (digest ^ b[i]) * 0x100000001b3ull;
}
static void mixv(__m128i v) { mix(&v, sizeof v); }
static void mixi(uint64_t v) { mix(&v, sizeof v); }

static uint64_t state = 0x5E4E4ull;
static __m128i rnd128(void)
{
    uint64_t lo = guest_rand(&state), hi = guest_rand(&state);
    return _mm_set_epi64x((long long)hi, (long long)lo);
}
/* Finite doubles with fractions: quarters (ties for the rounding modes) and wider values. */
static double rnd_double(void)
{
    int64_t k = (int64_t)(guest_rand(&state) % 4001) - 2000;
    return (guest_rand(&state) & 1) ? (double)k / 4 : (double)k * 1.37;
}
static float rnd_float(void) { return (float)rnd_double(); }

static void group(const char* name)
{
    guest_printf("%-10s %016llx\n", name, (unsigned long long)digest);
    digest = 0xcbf29ce484222325ull;
}

static uint32_t crc32c_bitwise(uint32_t crc, const unsigned char* p, size_t n)
{
    for (size_t i = 0; i < n; ++i) {
        crc ^= p[i];
        for (int k = 0; k < 8; ++k)
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1)));
    }
    return crc;
}

int guest_main(void)
{
    int failures = 0;
    unsigned a = 0, b = 0, c = 0, d = 0;
    __get_cpuid(1, &a, &b, &c, &d);
    guest_printf("sse4: SSE3 %d SSSE3 %d SSE4.1 %d SSE4.2 %d\n", (int)(c & 1), (int)(c >> 9 & 1), (int)(c >> 19 & 1),
        (int)(c >> 20 & 1));

    for (int i = 0; i < 200; ++i) {
        __m128 x = _mm_set_ps(rnd_float(), rnd_float(), rnd_float(), rnd_float());
        __m128 y = _mm_set_ps(rnd_float(), rnd_float(), rnd_float(), rnd_float());
        __m128d p = _mm_set_pd(rnd_double(), rnd_double()), q = _mm_set_pd(rnd_double(), rnd_double());
        mixv(_mm_castps_si128(_mm_addsub_ps(x, y)));
        mixv(_mm_castps_si128(_mm_hadd_ps(x, y)));
        mixv(_mm_castps_si128(_mm_hsub_ps(x, y)));
        mixv(_mm_castpd_si128(_mm_addsub_pd(p, q)));
        mixv(_mm_castpd_si128(_mm_hadd_pd(p, q)));
        mixv(_mm_castpd_si128(_mm_hsub_pd(p, q)));
        mixv(_mm_castps_si128(_mm_moveldup_ps(x)));
        mixv(_mm_castps_si128(_mm_movehdup_ps(y)));
        mixv(_mm_castpd_si128(_mm_movedup_pd(p)));
    }
    group("sse3");

    for (int i = 0; i < 200; ++i) {
        __m128i x = rnd128(), y = rnd128();
        mixv(_mm_shuffle_epi8(x, y));
        mixv(_mm_hadd_epi16(x, y));
        mixv(_mm_hadds_epi16(x, y));
        mixv(_mm_hsub_epi32(x, y));
        mixv(_mm_maddubs_epi16(x, y));
        mixv(_mm_mulhrs_epi16(x, y));
        mixv(_mm_sign_epi8(x, y));
        mixv(_mm_sign_epi16(x, _mm_srai_epi16(y, 14)));
        mixv(_mm_abs_epi8(x));
        mixv(_mm_abs_epi32(y));
        mixv(_mm_alignr_epi8(x, y, 5));
        mixv(_mm_alignr_epi8(x, y, 19));
    }
    group("ssse3");

    for (int i = 0; i < 200; ++i) {
        __m128i x = rnd128(), y = rnd128(), m = rnd128();
        mixv(_mm_blendv_epi8(x, y, m));
        mixv(_mm_blend_epi16(x, y, 0xA5));
        mixv(_mm_cvtepi8_epi16(x));
        mixv(_mm_cvtepu16_epi64(y));
        mixv(_mm_cvtepi32_epi64(m));
        mixv(_mm_mul_epi32(x, y));
        mixv(_mm_mullo_epi32(x, y));
        mixv(_mm_min_epi8(x, y));
        mixv(_mm_max_epu32(x, y));
        mixv(_mm_min_epu16(x, y));
        mixv(_mm_packus_epi32(x, y));
        mixv(_mm_cmpeq_epi64(x, _mm_blend_epi16(x, y, 0x0F)));
        mixv(_mm_minpos_epu16(x));
        mixv(_mm_mpsadbw_epu8(x, y, 5));
        mixv(_mm_insert_epi8(x, i, 7));
        mixv(_mm_insert_epi64(y, i * 3, 1));
        mixi((uint64_t)_mm_extract_epi8(x, 13) | (uint64_t)_mm_extract_epi32(y, 2) << 8);
        mixi((uint64_t)_mm_extract_epi64(m, 1));
        mixi((uint64_t)_mm_testz_si128(x, y) | (uint64_t)_mm_testc_si128(x, m) << 1
            | (uint64_t)_mm_testnzc_si128(_mm_and_si128(x, y), y) << 2);
    }
    group("sse4.1-int");

    for (int i = 0; i < 200; ++i) {
        __m128 x = _mm_set_ps(rnd_float(), rnd_float(), rnd_float(), rnd_float());
        __m128 y = _mm_set_ps(rnd_float(), rnd_float(), rnd_float(), rnd_float());
        __m128d p = _mm_set_pd(rnd_double(), rnd_double()), q = _mm_set_pd(rnd_double(), rnd_double());
        mixv(_mm_castps_si128(_mm_dp_ps(x, y, 0xF1)));
        mixv(_mm_castps_si128(_mm_dp_ps(x, y, 0x7E)));
        mixv(_mm_castpd_si128(_mm_dp_pd(p, q, 0x33)));
        mixv(_mm_castps_si128(_mm_blendv_ps(x, y, x)));
        mixv(_mm_castpd_si128(_mm_blend_pd(p, q, 2)));
        mixv(_mm_castps_si128(_mm_insert_ps(x, y, 0x9A)));
        mixi((uint64_t)(uint32_t)_mm_extract_ps(y, 3));
        mixv(_mm_castps_si128(_mm_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)));
        mixv(_mm_castpd_si128(_mm_round_pd(p, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC)));
        mixv(_mm_castpd_si128(_mm_round_sd(q, p, _MM_FROUND_TO_POS_INF)));
        mixv(_mm_castps_si128(_mm_round_ss(y, x, _MM_FROUND_TO_ZERO)));
    }
    group("sse4.1-fp");

    /* ROUNDSD against the definition of each mode, on quarters (every tie is exercised). */
    for (int k = -40; k <= 40; ++k) {
        double v = k / 4.0;
        double tr = (double)(int64_t)v;       /* C conversion truncates */
        double fl = tr > v ? tr - 1 : tr;
        double ce = tr < v ? tr + 1 : tr;
        double frac = v - fl;
        double ne = (frac > 0.5 || (frac == 0.5 && ((int64_t)fl & 1))) ? fl + 1 : fl;
        __m128d s = _mm_set_sd(v);
        if (_mm_cvtsd_f64(_mm_round_sd(s, s, _MM_FROUND_TO_NEAREST_INT)) != ne) ++failures;
        if (_mm_cvtsd_f64(_mm_round_sd(s, s, _MM_FROUND_TO_NEG_INF)) != fl) ++failures;
        if (_mm_cvtsd_f64(_mm_round_sd(s, s, _MM_FROUND_TO_POS_INF)) != ce) ++failures;
        if (_mm_cvtsd_f64(_mm_round_sd(s, s, _MM_FROUND_TO_ZERO)) != tr) ++failures;
    }
    guest_printf("roundsd self-check failures %d\n", failures);

    /* SSE4.2: PCMPGTQ, CRC32, and the string instructions as strlen and substring search. */
    static unsigned char buf[4096];
    for (size_t i = 0; i < sizeof buf; ++i)
        buf[i] = (unsigned char)('a' + guest_rand(&state) % 6);
    uint32_t crc = 0xFFFFFFFFu, crc_ref = crc32c_bitwise(0xFFFFFFFFu, buf, sizeof buf);
    for (size_t i = 0; i < sizeof buf; i += 8) {
        uint64_t w;
        memcpy(&w, buf + i, 8);
        crc = (uint32_t)_mm_crc32_u64(crc, w);
    }
    uint32_t crc_mixed = _mm_crc32_u8(_mm_crc32_u16(_mm_crc32_u32(0, 0xDEADBEEF), 0x1234), 0x56);
    if (crc != crc_ref) ++failures;
    guest_printf("crc32c %08x mixed %08x\n", (unsigned)~crc, (unsigned)crc_mixed);

    int found = 0, lens = 0;
    for (int i = 0; i < 300; ++i) {
        char s[48];
        size_t len = guest_rand(&state) % 40;
        memcpy(s, buf + i * 7, len);
        memset(s + len, 0, sizeof s - len);
        /* strlen: the first NUL in 16-byte chunks (equal each against zero, masked negative). */
        size_t n = 0;
        for (;;) {
            __m128i chunk = _mm_loadu_si128((const __m128i*)(s + n));
            int idx = _mm_cmpistri(chunk, chunk, _SIDD_UBYTE_OPS | _SIDD_CMP_EQUAL_EACH | _SIDD_MASKED_NEGATIVE_POLARITY);
            n += (size_t)idx;
            if (idx < 16)
                break;
        }
        if (n != strlen(s)) ++failures;
        lens += (int)n;
        /* Search "ab" in the first 16 bytes with explicit lengths; compare with plain C. */
        __m128i needle = _mm_setr_epi8('a', 'b', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
        int hay = (int)(len < 16 ? len : 16);
        int at = _mm_cmpestri(needle, 2, _mm_loadu_si128((const __m128i*)s), hay, _SIDD_UBYTE_OPS | _SIDD_CMP_EQUAL_ORDERED);
        int ref = 16;
        for (int k = 0; k < hay; ++k)
            /* a needle running past the register's end matches in part; past the string's end not */
            if (s[k] == 'a' && (k + 1 == 16 || (k + 1 < hay && s[k + 1] == 'b'))) { ref = k; break; }
        if (at != ref) ++failures;
        found += at < 16;
        __m128i x = rnd128(), y = rnd128();
        mixv(_mm_cmpgt_epi64(x, y));
        mixv(_mm_cmpistrm(x, y, _SIDD_SWORD_OPS | _SIDD_CMP_RANGES | _SIDD_UNIT_MASK));
        mixi((uint64_t)_mm_cmpestri(x, i % 19 - 9, y, i % 23 - 11, _SIDD_UWORD_OPS | _SIDD_CMP_EQUAL_ANY | _SIDD_MOST_SIGNIFICANT));
    }
    group("sse4.2");
    guest_printf("strings: total length %d, \"ab\" found %d times, failures %d\n", lens, found, failures);
    return failures != 0;
}
