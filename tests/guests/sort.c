/* Guest: sorting — quicksort (median of three, insertion sort below 16), heapsort and a
 * bottom-up merge sort on pseudo-random 64- and 32-bit data; the results must agree and be
 * ordered. Exercises compares, branches, indexed loads/stores and recursion. */
#include "guest.h"

#define N 6000

static uint64_t a[N], b[N], tmp[N];
static int32_t s32[N];

static void swap64(uint64_t* x, uint64_t* y)
{
    uint64_t t = *x;
    *x = *y;
    *y = t;
}

static void insertion(uint64_t* v, long lo, long hi)
{
    for (long i = lo + 1; i <= hi; ++i) {
        uint64_t x = v[i];
        long j = i - 1;
        while (j >= lo && v[j] > x) {
            v[j + 1] = v[j];
            --j;
        }
        v[j + 1] = x;
    }
}

static void quicksort(uint64_t* v, long lo, long hi)
{
    while (hi - lo > 16) {
        long mid = lo + (hi - lo) / 2;
        if (v[mid] < v[lo])
            swap64(&v[mid], &v[lo]);
        if (v[hi] < v[lo])
            swap64(&v[hi], &v[lo]);
        if (v[hi] < v[mid])
            swap64(&v[hi], &v[mid]);
        uint64_t pivot = v[mid];
        long i = lo, j = hi;
        while (i <= j) {
            while (v[i] < pivot)
                ++i;
            while (v[j] > pivot)
                --j;
            if (i <= j)
                swap64(&v[i++], &v[j--]);
        }
        if (j - lo < hi - i) {
            quicksort(v, lo, j);
            lo = i;
        } else {
            quicksort(v, i, hi);
            hi = j;
        }
    }
    insertion(v, lo, hi);
}

static void sift(int32_t* v, long start, long end)
{
    long root = start;
    while (2 * root + 1 <= end) {
        long child = 2 * root + 1;
        if (child + 1 <= end && v[child] < v[child + 1])
            ++child;
        if (v[root] >= v[child])
            return;
        int32_t t = v[root];
        v[root] = v[child];
        v[child] = t;
        root = child;
    }
}

static void heapsort32(int32_t* v, long n)
{
    for (long start = (n - 2) / 2; start >= 0; --start)
        sift(v, start, n - 1);
    for (long end = n - 1; end > 0; --end) {
        int32_t t = v[0];
        v[0] = v[end];
        v[end] = t;
        sift(v, 0, end - 1);
    }
}

static void mergesort64(uint64_t* v, uint64_t* scratch, long n)
{
    for (long width = 1; width < n; width *= 2) {
        for (long lo = 0; lo < n; lo += 2 * width) {
            long mid = lo + width < n ? lo + width : n;
            long hi = lo + 2 * width < n ? lo + 2 * width : n;
            long i = lo, j = mid, k = lo;
            while (i < mid && j < hi)
                scratch[k++] = v[i] <= v[j] ? v[i++] : v[j++];
            while (i < mid)
                scratch[k++] = v[i++];
            while (j < hi)
                scratch[k++] = v[j++];
        }
        memcpy(v, scratch, (size_t)n * sizeof *v);
    }
}

static uint64_t checksum(const uint64_t* v, long n)
{
    uint64_t h = 0;
    for (long i = 0; i < n; ++i)
        h = (h ^ v[i]) * 0x100000001b3ull + (uint64_t)i;
    return h;
}

int guest_main(void)
{
    int failures = 0;
    guest_printf("sort: quicksort, heapsort, mergesort on %d elements\n", N);
    uint64_t state = 0x0123456789ABCDEFull;
    for (long i = 0; i < N; ++i) {
        a[i] = guest_rand(&state);
        if (i % 7 == 0)
            a[i] &= 0xFF; /* duplicates and small values */
        b[i] = a[i];
        s32[i] = (int32_t)(a[i] >> 17);
    }
    guest_printf("input checksum %016llx\n", (unsigned long long)checksum(a, N));
    quicksort(a, 0, N - 1);
    mergesort64(b, tmp, N);
    heapsort32(s32, N);
    long disorder = 0;
    for (long i = 1; i < N; ++i) {
        disorder += a[i - 1] > a[i];
        disorder += s32[i - 1] > s32[i];
    }
    int agree = memcmp(a, b, sizeof a) == 0;
    guest_printf("quicksort checksum %016llx\n", (unsigned long long)checksum(a, N));
    guest_printf("mergesort agrees %d, out-of-order pairs %ld\n", agree, disorder);
    for (long i = 0; i < N; i += N / 8)
        guest_printf("a[%4ld] = %016llx  s32[%4ld] = %d\n", i, (unsigned long long)a[i], i, s32[i]);
    guest_printf("min %d max %d\n", s32[0], s32[N - 1]);
    if (!agree || disorder)
        ++failures;
    guest_printf("sort: %s\n", failures ? "FAIL" : "PASS");
    return failures;
}
