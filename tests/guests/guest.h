/* sevemu test guests — the tiny API a guest's C core uses. The same core is compiled twice:
 * freestanding for the emulated machine (runtime_bare.c: COM1, isa-debug-exit) and natively
 * for the host (runtime_native.c: stdout, exit), and the two outputs must match byte for byte.
 * String and memory functions come from the host's libc natively and from runtime_bare.c in
 * the guest, so the native run also checks the freestanding runtime. */
#ifndef SEVEMU_GUEST_H
#define SEVEMU_GUEST_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

void guest_putc(char c);
/* printf subset: %d %i %u %x %X %c %s %% with flags '-', '0', a width and l/ll/z lengths. */
int guest_printf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
int guest_vprintf(const char* fmt, va_list ap);

void* memcpy(void* dst, const void* src, size_t n);
void* memmove(void* dst, const void* src, size_t n);
void* memset(void* dst, int c, size_t n);
int memcmp(const void* a, const void* b, size_t n);
size_t strlen(const char* s);
int strcmp(const char* a, const char* b);
int strncmp(const char* a, const char* b, size_t n);
char* strchr(const char* s, int c);

/* The guest's core: returns 0 when its self-checks pass. */
int guest_main(void);

/* xorshift64*: the deterministic "generated data" every guest uses. */
static inline uint64_t guest_rand(uint64_t* state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* WRMSR / RDMSR (the SEV-ES guests' GHCB MSR, SEV_STATUS). */
static inline void wrmsr(uint32_t msr, uint64_t v)
{
    __asm__ volatile("wrmsr" : : "c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)) : "memory");
}

static inline uint64_t rdmsr(uint32_t msr)
{
    uint32_t lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr) : "memory");
    return (uint64_t)hi << 32 | lo;
}

#endif
