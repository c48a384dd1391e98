/* Bench guest "branch": data-dependent control flow — a small bytecode interpreter (a switch
 * over opcodes running Collatz sequences and a sieve-like loop) and quicksort/insertion sort
 * of random keys, a fixed number of rounds. */
#include "guest.h"

#ifndef BENCH_ROUNDS
#define BENCH_ROUNDS 30u
#endif
#define KEYS 16384u

enum { OP_LOADI, OP_ADD, OP_ADDI, OP_SHR1, OP_MUL3P1, OP_JODD, OP_JNE1, OP_JLT, OP_INC, OP_XOR, OP_HALT };

struct Insn {
    uint8_t op, a, b;
    int32_t imm;
};

/* r0 = start value, r1 = steps, r2 = checksum, r3 = start counter, r4 = limit. For each start
 * value below the limit: run its Collatz sequence to 1, counting steps. */
static const struct Insn program[] = {
    /* 0 */ { OP_LOADI, 3, 0, 1 },
    /* 1 */ { OP_LOADI, 1, 0, 0 },
    /* 2 */ { OP_ADDI, 0, 3, 0 },       /* r0 = r3 */
    /* 3 */ { OP_JNE1, 0, 0, 5 },       /* if r0 != 1 goto 5 */
    /* 4 */ { OP_LOADI, 5, 0, 11 },     /* r5 = 11 (continue at 11) */
    /* 5 */ { OP_JODD, 0, 0, 8 },       /* if r0 odd goto 8 */
    /* 6 */ { OP_SHR1, 0, 0, 0 },
    /* 7 */ { OP_INC, 1, 0, 9 },        /* r1++, goto 9 */
    /* 8 */ { OP_MUL3P1, 0, 0, 0 },
    /* 9 */ { OP_INC, 1, 0, 3 },        /* r1++, goto 3 */
    /* 10 */ { OP_HALT, 0, 0, 0 },
    /* 11 */ { OP_XOR, 2, 1, 0 },       /* r2 = (r2 ^ r1) * ... */
    /* 12 */ { OP_INC, 3, 0, 13 },
    /* 13 */ { OP_JLT, 3, 4, 1 },       /* if r3 < r4 goto 1 */
    /* 14 */ { OP_HALT, 0, 0, 0 },
};

static uint64_t run_vm(uint64_t limit)
{
    uint64_t r[8] = { 0, 0, 0, 0, limit, 0, 0, 0 };
    uint32_t pc = 0;
    for (;;) {
        const struct Insn* in = &program[pc];
        uint32_t next = pc + 1;
        switch (in->op) {
        case OP_LOADI: r[in->a] = (uint64_t)(int64_t)in->imm; break;
        case OP_ADD: r[in->a] += r[in->b]; break;
        case OP_ADDI: r[in->a] = r[in->b] + (uint64_t)(int64_t)in->imm; break;
        case OP_SHR1: r[in->a] >>= 1; break;
        case OP_MUL3P1: r[in->a] = 3 * r[in->a] + 1; break;
        case OP_JODD: if (r[in->a] & 1) next = (uint32_t)in->imm; break;
        case OP_JNE1:
            if (r[in->a] != 1)
                next = (uint32_t)in->imm;
            else
                next = 11;
            break;
        case OP_JLT: if (r[in->a] < r[in->b]) next = (uint32_t)in->imm; break;
        case OP_INC: ++r[in->a]; next = (uint32_t)in->imm; break;
        case OP_XOR: r[in->a] = (r[in->a] ^ r[in->b]) * 0x100000001B3ull; break;
        case OP_HALT: return r[2] ^ r[1];
        }
        pc = next;
    }
}

static uint32_t keys[KEYS];

static void insertion_sort(uint32_t* v, int n)
{
    for (int i = 1; i < n; ++i) {
        uint32_t x = v[i];
        int j = i - 1;
        while (j >= 0 && v[j] > x) {
            v[j + 1] = v[j];
            --j;
        }
        v[j + 1] = x;
    }
}

static void quicksort(uint32_t* v, int n)
{
    while (n > 16) {
        uint32_t p = v[n / 2];
        int i = 0, j = n - 1;
        for (;;) {
            while (v[i] < p)
                ++i;
            while (v[j] > p)
                --j;
            if (i >= j)
                break;
            uint32_t t = v[i];
            v[i] = v[j];
            v[j] = t;
            ++i;
            --j;
        }
        /* Recurse on the smaller side, loop on the larger. */
        if (j + 1 < n - j - 1) {
            quicksort(v, j + 1);
            v += j + 1;
            n -= j + 1;
        } else {
            quicksort(v + j + 1, n - j - 1);
            n = j + 1;
        }
    }
    insertion_sort(v, n);
}

int guest_main(void)
{
    uint64_t state = 0x452821E638D01377ull, sum = 0;
    int failures = 0;
    for (uint32_t round = 0; round < BENCH_ROUNDS; ++round) {
        sum = sum * 31 + run_vm(2000 + round);
        for (uint32_t i = 0; i < KEYS; ++i)
            keys[i] = (uint32_t)(guest_rand(&state) >> 32);
        quicksort(keys, KEYS);
        for (uint32_t i = 1; i < KEYS; ++i)
            if (keys[i - 1] > keys[i])
                ++failures;
        sum ^= keys[round * 97 % KEYS] + keys[KEYS / 2];
    }
    guest_printf("bench branch: rounds %u, sort %s\n", (unsigned)BENCH_ROUNDS, failures ? "FAIL" : "ok");
    guest_printf("checksum %016llx\n", (unsigned long long)sum);
    return failures;
}
