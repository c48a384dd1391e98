/* Bench guest "sse": double-precision arithmetic compiled with SSE2 (scalar and packed, as
 * gcc -O2 emits it): a Mandelbrot grid, a dense matrix product, Newton square roots beside
 * SQRTSD, and Horner polynomial evaluation. Compiled with -ffp-contract=off; the checksum is
 * built from the exact bit patterns, so any rounding difference shows. */
#include "guest.h"

#ifndef BENCH_ROUNDS
#define BENCH_ROUNDS 48u
#endif
#define N 48

static double ma[N][N], mb[N][N], mc[N][N];

static uint64_t bits_of(double x)
{
    uint64_t u;
    __builtin_memcpy(&u, &x, sizeof u);
    return u;
}

static uint64_t mandelbrot(double cx0, double cy0, double step, int size, int max_iter)
{
    uint64_t total = 0;
    for (int py = 0; py < size; ++py) {
        for (int px = 0; px < size; ++px) {
            double cx = cx0 + px * step, cy = cy0 + py * step, x = 0, y = 0;
            int it = 0;
            while (it < max_iter && x * x + y * y <= 4.0) {
                double t = x * x - y * y + cx;
                y = 2.0 * x * y + cy;
                x = t;
                ++it;
            }
            total = total * 3 + (uint64_t)it;
        }
    }
    return total;
}

static void matmul(void)
{
    for (int i = 0; i < N; ++i)
        for (int j = 0; j < N; ++j) {
            double s = 0;
            for (int k = 0; k < N; ++k)
                s += ma[i][k] * mb[k][j];
            mc[i][j] = s;
        }
}

static double newton_sqrt(double v)
{
    double x = v > 1 ? v : 1;
    for (int i = 0; i < 30; ++i)
        x = 0.5 * (x + v / x);
    return x;
}

int guest_main(void)
{
    uint64_t sum = 0;
    for (int i = 0; i < N; ++i)
        for (int j = 0; j < N; ++j) {
            ma[i][j] = (double)((i * 7 + j * 13) % 17) / 16.0 - 0.5;
            mb[i][j] = (double)((i * 11 + j * 5) % 19) / 9.0 - 1.0;
        }
    for (uint32_t round = 0; round < BENCH_ROUNDS; ++round) {
        sum = sum * 7 + mandelbrot(-2.0 + round * 0.01, -1.25, 2.5 / 96, 96, 200);
        matmul();
        for (int i = 0; i < N; ++i)
            for (int j = 0; j < N; ++j)
                ma[i][j] = mc[i][j] * (1.0 / 128) + ma[i][j] * 0.5;
        sum ^= bits_of(mc[round % N][(round * 5) % N]);
        double acc = 0;
        for (int i = 1; i <= 4000; ++i) {
            double v = i * 0.37 + round;
            acc += newton_sqrt(v) - __builtin_sqrt(v);
            double t = v * 1e-3, p = 0.1;
            p = p * t + 0.3;
            p = p * t - 1.7;
            p = p * t + 2.9;
            p = p * t - 0.11;
            acc += p / (1.0 + t * t);
        }
        sum = sum * 31 + bits_of(acc);
    }
    guest_printf("bench sse: rounds %u\n", (unsigned)BENCH_ROUNDS);
    guest_printf("checksum %016llx\n", (unsigned long long)sum);
    return 0;
}
