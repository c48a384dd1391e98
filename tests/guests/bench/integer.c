/* Bench guest "integer": xorshift64, a 64-bit LCG, multiply-rotate mixing and 32-bit ALU work,
 * a fixed number of rounds, no memory traffic beyond the stack. Prints the checksum on COM1
 * (sevemu-bench cpu compares it with QEMU's). */
#include "guest.h"

#ifndef BENCH_ROUNDS
#define BENCH_ROUNDS 12000000u
#endif

static inline uint64_t rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
static inline uint32_t rotr32(uint32_t x, int k) { return (x >> k) | (x << (32 - k)); }

int guest_main(void)
{
    uint64_t x = 0x9E3779B97F4A7C15ull, lcg = 1, acc = 0;
    uint32_t h = 0x811C9DC5u;
    for (uint32_t i = 0; i < BENCH_ROUNDS; ++i) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
        acc += (x ^ (lcg >> 29)) * 0xBF58476D1CE4E5B9ull;
        acc = rotl64(acc, 23);
        h = rotr32(h ^ (uint32_t)acc, 5) + i;
        h ^= h >> 11;
        if ((i & 1023) == 0)
            acc ^= x % 1000003u; /* an occasional division */
    }
    guest_printf("bench integer: rounds %u\n", (unsigned)BENCH_ROUNDS);
    guest_printf("checksum %016llx\n", (unsigned long long)(acc ^ ((uint64_t)h << 32) ^ lcg));
    return 0;
}
