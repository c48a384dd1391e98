/* Guest: 64-bit and 32-bit division and modulo, signed and unsigned (DIV/IDIV with the
 * quotient's sign rules of C99 §6.5.5: truncation toward zero), including edge values. The
 * operands come through volatile so the compiler cannot fold them. */
#include "guest.h"

static volatile uint64_t sink;

int guest_main(void)
{
    int failures = 0;
    guest_printf("div: 64- and 32-bit divide and modulo\n");
    static const int64_t sn[] = { 0, 1, -1, 7, -7, 100, -100, 0x7FFFFFFFFFFFFFFFll, -0x7FFFFFFFFFFFFFFFll - 1,
        123456789012345ll, -98765432109876ll, 3 };
    static const int64_t sd[] = { 1, -1, 2, -2, 3, -3, 7, 10, -10, 0x100000000ll, 1000000007, -0x7FFFFFFFFFFFFFFFll };
    for (size_t i = 0; i < sizeof sn / sizeof sn[0]; ++i) {
        for (size_t j = 0; j < sizeof sd / sizeof sd[0]; ++j) {
            volatile int64_t n = sn[i], d = sd[j];
            if (n == (-0x7FFFFFFFFFFFFFFFll - 1) && d == -1)
                continue; /* #DE on hardware: not this guest's business */
            int64_t q = n / d, r = n % d;
            if (q * d + r != n)
                ++failures;
            guest_printf("s64 %lld / %lld = %lld r %lld\n", (long long)n, (long long)d, (long long)q, (long long)r);
        }
    }
    uint64_t state = 42;
    uint64_t qsum = 0, rsum = 0;
    for (int i = 0; i < 2000; ++i) {
        volatile uint64_t n = guest_rand(&state);
        volatile uint64_t d = guest_rand(&state) >> (i % 64);
        if (d == 0)
            d = 1;
        uint64_t q = n / d, r = n % d;
        if (r >= d || q * d + r != n)
            ++failures;
        qsum = qsum * 31 + q;
        rsum = rsum * 37 + r;
    }
    guest_printf("u64 random: qsum %016llx rsum %016llx\n", (unsigned long long)qsum, (unsigned long long)rsum);
    uint32_t q32 = 0, r32 = 0;
    int32_t sq32 = 0, sr32 = 0;
    for (int i = 0; i < 2000; ++i) {
        volatile uint32_t n = (uint32_t)guest_rand(&state);
        volatile uint32_t d = (uint32_t)(guest_rand(&state) >> (32 + i % 32)) | 1;
        q32 = q32 * 33 + n / d;
        r32 = r32 * 29 + n % d;
        volatile int32_t sn32 = (int32_t)n, sd32 = (int32_t)d * ((i & 1) ? -1 : 1);
        sq32 = sq32 * 3 + sn32 / sd32;
        sr32 = sr32 * 5 + sn32 % sd32;
    }
    guest_printf("u32 random: q %08x r %08x; s32 q %d r %d\n", q32, r32, sq32, sr32);
    /* Division by constants (the compiler's multiply-high sequences). */
    uint64_t k = 0;
    for (uint64_t v = 1; v < 100000; v = v * 3 + 1)
        k += v / 10 + v % 7 + v / 1000003 + (uint64_t)((int64_t)-v / 9);
    sink = k;
    guest_printf("by constants %llu\n", (unsigned long long)k);
    guest_printf("div: %s\n", failures ? "FAIL" : "PASS");
    return failures;
}
