/* Guest: string and memory functions on generated data — memcpy at every alignment and many
 * lengths, overlapping memmove, memset, strlen, strcmp/strncmp (sign only: C leaves the
 * magnitude to the implementation), strchr. */
#include "guest.h"

static char src[4096], dst[4096];

static int sign(int v) { return (v > 0) - (v < 0); }

static uint64_t fnv(const void* p, size_t n)
{
    const unsigned char* b = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; ++i)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

int guest_main(void)
{
    int failures = 0;
    guest_printf("strings: memcpy, memmove, memset, strlen, strcmp, strchr\n");
    uint64_t state = 0xC0FFEEull;
    for (size_t i = 0; i < sizeof src; ++i)
        src[i] = (char)('a' + guest_rand(&state) % 26);

    uint64_t h = 0;
    for (size_t so = 0; so < 8; ++so) {
        for (size_t dof = 0; dof < 8; ++dof) {
            for (size_t len = 0; len < 300; len += 13) {
                memset(dst, '#', 400);
                memcpy(dst + dof, src + so, len);
                if (memcmp(dst + dof, src + so, len) != 0)
                    ++failures;
                h = h * 1099511628211ull ^ fnv(dst, 400);
            }
        }
    }
    guest_printf("memcpy grid hash %016llx\n", (unsigned long long)h);

    memcpy(dst, src, 1024);
    memmove(dst + 3, dst, 700);
    guest_printf("memmove fwd %016llx\n", (unsigned long long)fnv(dst, 1024));
    memmove(dst, dst + 5, 900);
    guest_printf("memmove back %016llx\n", (unsigned long long)fnv(dst, 1024));

    /* NUL-terminated strings of generated lengths. */
    size_t total = 0;
    int cmp_hist[3] = { 0, 0, 0 };
    for (int i = 0; i < 200; ++i) {
        size_t la = guest_rand(&state) % 200, lb = guest_rand(&state) % 200;
        char a[256], b[256];
        memcpy(a, src + i, la);
        a[la] = 0;
        memcpy(b, src + i, lb);
        b[lb] = 0;
        if (i % 5 == 0 && lb > 10)
            b[lb / 2] = 'A';
        total += strlen(a) + strlen(b);
        cmp_hist[sign(strcmp(a, b)) + 1]++;
        cmp_hist[sign(strncmp(a, b, 20)) + 1]++;
        const char* c = strchr(a, 'q');
        total += c ? (size_t)(c - a) : 1000;
    }
    guest_printf("strlen total %zu, strcmp </=/> %d %d %d\n", total, cmp_hist[0], cmp_hist[1], cmp_hist[2]);
    if (strlen("") != 0 || strcmp("abc", "abd") >= 0 || strcmp("b", "abc") <= 0 || strcmp("same", "same") != 0)
        ++failures;
    if (strchr("hello", 0) == 0 || *strchr("hello", 'l') != 'l')
        ++failures;
    guest_printf("strings: %s\n", failures ? "FAIL" : "PASS");
    return failures;
}
