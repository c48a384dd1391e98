/* Guest: double-precision floating point (SSE2, as the x86-64 ABI does it) — sqrt, series,
 * Newton iterations, conversions and rounding, printed as fixed-point integers so the output
 * is exact text. Compiled with -ffp-contract=off -fno-math-errno on both sides so that the
 * native build performs the very same IEEE 754 operations. */
#include "guest.h"

static int64_t fixed(double x, double scale)
{
    double y = x * scale;
    return (int64_t)(y < 0 ? y - 0.5 : y + 0.5);
}

static void show(const char* label, double x)
{
    int64_t v = fixed(x, 1e9);
    int64_t whole = v / 1000000000;
    int64_t frac = v % 1000000000;
    if (frac < 0)
        frac = -frac;
    guest_printf("%-22s %s%lld.%09lld\n", label, (v < 0 && whole == 0) ? "-" : "", (long long)whole,
        (long long)frac);
}

static uint64_t bits_of(double x)
{
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

int guest_main(void)
{
    int failures = 0;
    guest_printf("fp: doubles\n");

    for (int i = 1; i <= 10; ++i) {
        double r = __builtin_sqrt((double)i);
        guest_printf("sqrt(%2d) bits %016llx ", i, (unsigned long long)bits_of(r));
        show("", r);
        if (r * r - i > 1e-12 || i - r * r > 1e-12)
            ++failures;
    }

    /* e by its Taylor series, pi by Nilakantha's series, ln 2 by the alternating harmonic. */
    double e = 1.0, term = 1.0;
    for (int k = 1; k < 20; ++k) {
        term /= k;
        e += term;
    }
    show("e", e);
    double pi = 3.0, sign = 1.0;
    for (int k = 2; k < 2000; k += 2) {
        pi += sign * 4.0 / ((double)k * (k + 1) * (k + 2));
        sign = -sign;
    }
    show("pi (Nilakantha)", pi);
    double ln2 = 0.0;
    for (int k = 1; k <= 100000; ++k)
        ln2 += (k & 1 ? 1.0 : -1.0) / k;
    show("ln 2 (1e5 terms)", ln2);

    /* Newton's method for the cube root of 2, and 1/x via reciprocal iteration. */
    double x = 1.0;
    for (int k = 0; k < 40; ++k)
        x = x - (x * x * x - 2.0) / (3.0 * x * x);
    show("cbrt(2)", x);
    double y = 0.1;
    for (int k = 0; k < 6; ++k)
        y = y * (2.0 - 7.0 * y);
    show("1/7", y);

    /* Conversions, rounding toward zero, negative values, tiny and large magnitudes. */
    double vals[] = { -2.5, -1.5, -0.4, 0.0, 0.49999999999999994, 1e-300, 123456789.987654321, -9.007199254740993e15 };
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; ++i) {
        double v = vals[i];
        guest_printf("v %016llx trunc %lld x3 %016llx\n", (unsigned long long)bits_of(v), (long long)v,
            (unsigned long long)bits_of(v * 3.0));
    }
    uint64_t big = 0xFFFFFFFFFFFFF001ull;
    double dbig = (double)big;
    guest_printf("u64->double %016llx, back %llu\n", (unsigned long long)bits_of(dbig),
        (unsigned long long)(uint64_t)(dbig / 2.0));
    double acc = 0.0;
    for (int i = 1; i <= 1000; ++i)
        acc += __builtin_sqrt((double)i) / (double)(i + 1);
    show("sum sqrt(i)/(i+1)", acc);
    int cmp = (acc > 600.0) + 2 * (acc < 700.0) + 4 * (acc == acc);
    guest_printf("compares %d\n", cmp);
    if (fixed(e, 1e9) != 2718281828)
        ++failures;
    guest_printf("fp: %s\n", failures ? "FAIL" : "PASS");
    return failures;
}
