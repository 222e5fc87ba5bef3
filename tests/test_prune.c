/* test_prune.c - the CPU backend's pruning of four rows at a time
 * (backends/cpu/prune.c) against core's definition, mf__prune_row, on
 * rows built to stress the threshold search: many ties, zeros, -0,
 * subnormals, the largest finite magnitude, every keep count. */
#include <criterion/criterion.h>

#include "../backends/cpu/expand.h"
#include "../backends/cpu/quantize.h"
#include "../core/internal.h"
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
