/* Guest: hashing — SHA-256 (FIPS 180-4), CRC-32 (IEEE 802.3, reflected) and FNV-1a 64 over
 * generated data. SHA-256("abc") is checked against FIPS 180-4's own example. */
#include "guest.h"
#include "sha256.h" /* sha256.c: FIPS 180-4, shared with the SEV guest */

static uint32_t crc32(const uint8_t* p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; ++i) {
        c ^= p[i];
        for (int k = 0; k < 8; ++k)
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
    }
    return ~c;
}

static uint64_t fnv1a64(const uint8_t* p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; ++i) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static void print_digest(const char* label, const uint8_t d[32])
{
    guest_printf("%s ", label);
    for (int i = 0; i < 32; ++i)
        guest_printf("%02x", d[i]);
    guest_printf("\n");
}

static uint8_t buffer[20000];

int guest_main(void)
{
    int failures = 0;
    guest_printf("hash: SHA-256, CRC-32, FNV-1a\n");

    /* FIPS 180-4 example: SHA-256("abc"). */
    static const uint8_t abc_expected[32] = {
        0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23,
        0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad,
    };
    uint8_t d[32];
    sha256((const uint8_t*)"abc", 3, d);
    print_digest("sha256(abc)", d);
    if (memcmp(d, abc_expected, 32) != 0) {
        guest_printf("FAIL sha256(abc)\n");
        ++failures;
    }
    /* CRC-32 check value of "123456789" (the catalogue's check value for CRC-32/ISO-HDLC). */
    uint32_t check = crc32((const uint8_t*)"123456789", 9);
    guest_printf("crc32(123456789) %08x\n", check);
    if (check != 0xCBF43926u) {
        guest_printf("FAIL crc32 check value\n");
        ++failures;
    }

    uint64_t state = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < sizeof buffer; ++i)
        buffer[i] = (uint8_t)(guest_rand(&state) >> 56);
    static const size_t lengths[] = { 0, 1, 55, 56, 63, 64, 65, 119, 120, 1000, 4096, 20000 };
    for (size_t i = 0; i < sizeof lengths / sizeof lengths[0]; ++i) {
        size_t n = lengths[i];
        sha256(buffer, n, d);
        guest_printf("len %5zu crc32 %08x fnv %016llx ", n, crc32(buffer, n),
            (unsigned long long)fnv1a64(buffer, n));
        print_digest("sha256", d);
    }
    guest_printf("hash: %s\n", failures ? "FAIL" : "PASS");
    return failures;
}
