/* Bench guest "strings": the x86 string instructions as compilers and libcs use them —
 * REP MOVSB/MOVSQ (copies), REP STOSB/STOSQ (fills), REPNE SCASB (strlen), REPE CMPSB (memcmp),
 * over buffers of 64 KiB at several lengths and alignments, plus the byte loops a freestanding
 * strlen/memcmp compiles to. A fixed number of rounds. */
#include "guest.h"

#ifndef BENCH_ROUNDS
#define BENCH_ROUNDS 2400u
#endif
#define BUF (64u << 10)

static uint8_t src[BUF + 64], dst[BUF + 64];

static inline void rep_movsb(void* d, const void* s, size_t n)
{
    __asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
}
static inline void rep_movsq(void* d, const void* s, size_t n)
{
    __asm__ volatile("rep movsq" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
}
static inline void rep_stosb(void* d, uint8_t v, size_t n)
{
    __asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(v) : "memory");
}
static inline void rep_stosq(void* d, uint64_t v, size_t n)
{
    __asm__ volatile("rep stosq" : "+D"(d), "+c"(n) : "a"(v) : "memory");
}
/* strlen as REPNE SCASB: RCX counts down from ~0. */
static inline size_t scas_strlen(const char* s)
{
    size_t n = ~(size_t)0;
    __asm__ volatile("repne scasb" : "+D"(s), "+c"(n) : "a"(0) : "memory", "cc");
    return ~n - 1;
}
/* memcmp as REPE CMPSB: 0 when equal, else the sign of the first differing byte. */
static inline int cmps_memcmp(const void* a, const void* b, size_t n)
{
    if (n == 0)
        return 0;
    const uint8_t* x = a;
    const uint8_t* y = b;
    __asm__ volatile("repe cmpsb" : "+S"(x), "+D"(y), "+c"(n) : : "memory", "cc");
    uint8_t p = x[-1], q = y[-1];
    return (p > q) - (p < q);
}
static size_t loop_strlen(const char* s)
{
    size_t n = 0;
    while (s[n])
        ++n;
    return n;
}
static int loop_memcmp(const uint8_t* a, const uint8_t* b, size_t n)
{
    for (size_t i = 0; i < n; ++i)
        if (a[i] != b[i])
            return (a[i] > b[i]) - (a[i] < b[i]);
    return 0;
}

static uint64_t fnv(const uint8_t* p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i += 61)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

int guest_main(void)
{
    uint64_t state = 0x13198A2E03707344ull, sum = 0;
    for (uint32_t i = 0; i < sizeof src; ++i)
        src[i] = (uint8_t)('a' + guest_rand(&state) % 26);
    static const uint32_t lengths[] = { 7, 64, 333, 4096, 40000, BUF };
    for (uint32_t round = 0; round < BENCH_ROUNDS; ++round) {
        for (uint32_t k = 0; k < sizeof lengths / sizeof lengths[0]; ++k) {
            uint32_t len = lengths[k], so = round & 7, dof = (round >> 3) & 7;
            rep_stosb(dst, (uint8_t)round, BUF);
            rep_movsb(dst + dof, src + so, len);
            sum += cmps_memcmp(dst + dof, src + so, len);
            rep_stosq(dst, 0x0101010101010101ull * (round & 0xff), len / 8);
            rep_movsq(dst, src + (so & ~7u), len / 8);
            sum = sum * 31 + fnv(dst, len);
        }
        /* NUL-terminated strings: lengths drawn at random, measured both ways. */
        for (uint32_t k = 0; k < 8; ++k) {
            uint32_t n = (uint32_t)(guest_rand(&state) % 2048);
            src[n] = 0;
            size_t a = scas_strlen((const char*)src), b = loop_strlen((const char*)src);
            src[n] = (uint8_t)('a' + n % 26);
            sum += a * 3 + b;
            dst[n / 2] ^= 1;
            sum += (uint64_t)(loop_memcmp(dst, src, n) + 2) * 7 + (uint64_t)(cmps_memcmp(dst, src, n) + 2);
        }
    }
    guest_printf("bench strings: rounds %u\n", (unsigned)BENCH_ROUNDS);
    guest_printf("checksum %016llx\n", (unsigned long long)sum);
    return 0;
}
