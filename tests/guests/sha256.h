/* sevemu test guests — SHA-256 (FIPS 180-4 §6.2), freestanding: no libc beyond memcpy/memset. */
#ifndef SEVEMU_GUEST_SHA256_H
#define SEVEMU_GUEST_SHA256_H

#include <stddef.h>
#include <stdint.h>

struct sha256_ctx {
    uint32_t h[8];
    uint64_t len;      /* bytes hashed so far */
    uint8_t buf[64];   /* a partial block */
};

void sha256_init(struct sha256_ctx* c);
void sha256_update(struct sha256_ctx* c, const void* data, size_t len);
void sha256_final(struct sha256_ctx* c, uint8_t out[32]);
void sha256(const void* data, size_t len, uint8_t out[32]);

#endif
