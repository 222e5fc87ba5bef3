/* test_encode_simd.c - the CPU backend's AVX2 encoder pieces against
 * core's definitions: pruning of four rows at a time (backends/cpu/
 * prune.c) against mf__prune_row, on rows built to stress the threshold
 * search (many ties, zeros, -0, subnormals, the largest finite magnitude,
 * every keep count); eight tiles' scales and zeros (quantize.c) against
 * mf_quant_params, ends of the fp16 range included. */
#include <criterion/criterion.h>

#include "../backends/cpu/expand.h"
#include "../backends/cpu/quantize.h"
#include "../core/internal.h"
#include "../core/numerics.h"
#include "helpers.h"

#if MF_CPU_SIMD
/* A magnitude drawn to collide: a few values per row, or the ends. */
static uint16_t stress_half(uint64_t *s, const uint16_t pool[4]) {
    uint64_t r = th_next(s);
    uint16_t sign = (uint16_t)((r >> 8 & 1u) << 15), mag;
    switch (r & 7u) {
    case 0: mag = 0; break;
    case 1: mag = 0x7bff; break;        /* largest finite */
    case 2: mag = (uint16_t)(r >> 16 & 0x3ffu); break; /* subnormal */
    case 3: mag = (uint16_t)(r >> 16 & 0x7bffu); break;
    default: mag = pool[r >> 3 & 3u];
    }
    return (uint16_t)(sign | mag);
}
#endif

Test(prune, four_rows_equal_core_rows) {
#if MF_CPU_SIMD
    static const uint32_t dims[3] = {64, 128, 256};
    uint64_t seed = 77;
    uint32_t di, trial, r, w, i;
    for (di = 0; di < 3; di++) {
        uint32_t dim = dims[di];
        for (trial = 0; trial < 400; trial++) {
            uint16_t x[4 * 256], pool[4];
            uint64_t m[4][4], ref[4];
            uint32_t keep = trial < dim + 1 ? trial : (uint32_t)(th_next(&seed) % (dim + 1));
            for (i = 0; i < 4; i++) /* neighbours in bits, across a high-byte edge */
                pool[i] = (uint16_t)((th_next(&seed) & 0x7bffu) | (i & 1u)) ^ (uint16_t)(i & 2u ? 0x100 : 0);
            for (i = 0; i < 4 * dim; i++)
                x[i] = stress_half(&seed, pool);
            cr_assert_eq(mf_cpu_prune_rows4(x, dim, keep, m), 0);
            for (r = 0; r < 4; r++) {
                cr_assert_eq(mf__prune_row(x + r * dim, dim, keep, ref), 0);
                for (w = 0; w < dim / 64; w++)
                    cr_assert_eq(m[r][w], ref[w], "dim %u keep %u trial %u row %u word %u: %016llx, core %016llx",
                                 dim, keep, trial, r, w, (unsigned long long)m[r][w],
                                 (unsigned long long)ref[w]);
            }
        }
    }
#else
    cr_skip_test("no AVX2 path in this build");
#endif
}

Test(prune, four_rows_report_the_first_nonfinite) {
#if MF_CPU_SIMD
    uint16_t x[4 * 128];
    uint64_t m[4][4];
    uint32_t i;
    for (i = 0; i < 4 * 128; i++)
        x[i] = 0x3c00;
    x[2 * 128 + 90] = 0xfc00; /* -inf, row 2 */
    x[3 * 128 + 5] = 0x7e00;  /* NaN, a later row */
    cr_assert_eq(mf_cpu_prune_rows4(x, 128, 10, m), 2 * 128 + 90 + 1);
    x[1 * 128 + 127] = 0x7c00; /* +inf, an earlier row */
    cr_assert_eq(mf_cpu_prune_rows4(x, 128, 10, m), 1 * 128 + 127 + 1);
#else
    cr_skip_test("no AVX2 path in this build");
#endif
}

Test(quant_params, eight_tiles_equal_mf_quant_params) {
#if MF_CPU_SIMD
    /* fp16 magnitudes at the edges: subnormal, smallest normal, 1, large */
    static const uint16_t edge[] = {0x0001, 0x0003, 0x03ff, 0x0400, 0x0401, 0x3c00,
                                    0x5bff, 0x7800, 0x7bfe, 0x7bff};
    uint64_t seed = 91;
    uint32_t trial, i, bits;
    for (bits = 2; bits <= 4; bits += 2)
        for (trial = 0; trial < 20000; trial++) {
            float lo[8], hi[8];
            uint16_t sc[8], zr[8], rs, rz;
            for (i = 0; i < 8; i++) {
                uint64_t r = th_next(&seed);
                uint16_t a = (r & 3u) ? (uint16_t)(r >> 8 & 0x7bffu) : edge[(r >> 8) % 10u];
                uint16_t b = (r >> 2 & 3u) ? (uint16_t)(r >> 24 & 0x7bffu) : edge[(r >> 24) % 10u];
                float x = mf_h2f((uint16_t)(a | (r >> 40 & 1u) << 15));
                float y = mf_h2f((uint16_t)(b | (r >> 41 & 1u) << 15));
                if ((r >> 42 & 7u) == 0) /* an empty tile, or a single value */
                    x = y = (r >> 45 & 1u) ? 0.0f : x;
                lo[i] = x < y ? x : y;
                hi[i] = x < y ? y : x;
            }
            mf_cpu_quant_params8(lo, hi, bits, sc, zr);
            for (i = 0; i < 8; i++) {
                mf_quant_params(lo[i], hi[i], bits, &rs, &rz);
                cr_assert(sc[i] == rs && zr[i] == rz,
                          "bits %u [%g, %g]: scale %04x zero %04x, core %04x %04x", bits,
                          (double)lo[i], (double)hi[i], sc[i], zr[i], rs, rz);
            }
        }
#else
    cr_skip_test("no AVX2 path in this build");
#endif
}
