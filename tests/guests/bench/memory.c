/* Bench guest "memory": a 4 MiB array filled, summed sequentially and with a stride, copied
 * into a second 4 MiB array with a plain loop, and walked as a random cyclic linked list (one
 * dependent load after another across 1 MiB), a fixed number of passes. */
#include "guest.h"

#ifndef BENCH_PASSES
#define BENCH_PASSES 32u
#endif
#define WORDS ((4u << 20) / 8u)
#define CHAIN ((1u << 20) / 4u)

static uint64_t a[WORDS], b[WORDS];
static uint32_t chain[CHAIN];

int guest_main(void)
{
    uint64_t state = 0x243F6A8885A308D3ull;
    for (uint32_t i = 0; i < WORDS; ++i)
        a[i] = guest_rand(&state);
    /* Sattolo's algorithm: one cycle through every slot. */
    for (uint32_t i = 0; i < CHAIN; ++i)
        chain[i] = i;
    for (uint32_t i = CHAIN - 1; i > 0; --i) {
        uint32_t j = (uint32_t)(guest_rand(&state) % i);
        uint32_t t = chain[i];
        chain[i] = chain[j];
        chain[j] = t;
    }

    uint64_t sum = 0;
    for (uint32_t pass = 0; pass < BENCH_PASSES; ++pass) {
        for (uint32_t i = 0; i < WORDS; ++i)
            sum += a[i];
        for (uint32_t s = 0; s < 64; s += 8) /* 512-byte stride: a new line every load */
            for (uint32_t i = s; i < WORDS; i += 64)
                sum ^= a[i] + i;
        for (uint32_t i = 0; i < WORDS; ++i)
            b[i] = a[i] ^ sum;
        for (uint32_t i = 0; i < WORDS; i += 2)
            a[i] = b[WORDS - 1 - i] + pass;
        uint32_t p = pass;
        for (uint32_t k = 0; k < CHAIN; ++k)
            p = chain[p];
        sum += p;
    }
    guest_printf("bench memory: passes %u over %u KiB\n", (unsigned)BENCH_PASSES, (unsigned)(sizeof a / 1024));
    guest_printf("checksum %016llx\n", (unsigned long long)(sum ^ a[12345] ^ b[WORDS - 7]));
    return 0;
}
