/* test_regdecode.c - the CUDA tensor-core kernel's register decode of
 * 2-bit tiles (backends/cuda/regdecode.h, the same C the device runs with
 * prmt emulated) against the format: every element of random tiles, of
 * every density and of tables of either sign, as mf_dequant gives it. */
#include <criterion/criterion.h>

#include "../backends/cuda/regdecode.h"
#include "../core/internal.h"
#include "helpers.h"

/* Bit i of the tile's bitmap set with probability num/64. */
static uint64_t rand_bitmap(uint64_t *s, uint32_t num) {
    uint64_t bm = 0;
    uint32_t i;
    for (i = 0; i < 64; i++)
        if (th_next(s) % 64 < num)
            bm |= UINT64_C(1) << (63 - i);
    return bm;
}

/* Decodes tile (bm, codes, sh, zh) part by part as the kernel does and
 * compares every element with mf_dequant. */
static void check_tile(uint64_t bm, const uint32_t code[64], uint16_t sh, uint16_t zh) {
    uint32_t p[4] = {0, 0, 0, 0}, w[4], b[4], lo, hi, neg, n = 0, i, j;
    uint16_t v[4];
    float s = mf_h2f(sh), z = mf_h2f(zh);
    for (i = 0; i < 64; i++)
        if (mf_tile_bit(bm, i)) {
            p[n / 16] |= code[i] << (2 * (n % 16));
            n++;
        }
    for (i = 0; i < 4; i++)
        v[i] = mf_dequant(i, s, z);
    neg = mf_rd_table(v, &lo, &hi);
    mf_rd_parts(bm, p[0], p[1], p[2], p[3], neg, w, b);
    for (j = 0; j < 4; j++) {
        uint32_t out[8], k;
        cr_assert_eq(b[j] >> 31, neg);
        mf_rd_part(w[j], b[j], mf_rd_lut(b[j] >> 7 & 0xffu), mf_rd_lut(b[j] >> 16 & 0xffu), lo,
                   hi, out);
        for (k = 0; k < 16; k++) {
            uint32_t e = 16 * j + k;
            uint16_t got = (uint16_t)(out[k / 2] >> (16 * (k % 2))) ^ (uint16_t)(neg << 15);
            uint16_t want = mf_tile_bit(bm, e) ? v[code[e]] : (uint16_t)(neg << 15);
            cr_assert_eq(got, want, "element %u: %04x, want %04x (bitmap %016llx, sh %04x zh %04x)",
                         e, got, want, (unsigned long long)bm, sh, zh);
        }
    }
}

Test(regdecode, lut_ranks) {
    cr_assert_eq(mf_rd_lut(0x00), 0x77777777u);
    cr_assert_eq(mf_rd_lut(0xff), 0x76543210u);
    cr_assert_eq(mf_rd_lut(0x05), 0x77777170u); /* elements 0 and 2 */
    cr_assert_eq(mf_rd_lut(0x80), 0x07777777u);
}

Test(regdecode, prmt_emulation) {
    cr_assert_eq(mf_rd_prmt(0x33221100u, 0x77665544u, 0x7531u), 0x77553311u);
    cr_assert_eq(mf_rd_prmt(0x00800000u, 0u, 0x8a98u), 0x00ff0000u);
}

Test(regdecode, every_element_of_random_tiles) {
    static const uint32_t dens[] = {0, 1, 8, 19, 32, 45, 63, 64};
    uint64_t s = 77;
    uint32_t t, i;
    for (t = 0; t < 20000; t++) {
        uint32_t code[64];
        uint16_t sh, zh;
        uint64_t bm = rand_bitmap(&s, dens[t % 8]);
        float mn = mf_h2f(th_half(&s, 4.0f)), mx = mf_h2f(th_half(&s, 4.0f)), x;
        if (t % 5 == 1) /* one-signed tiles: zero points outside 0..3 */
            mn = mx > 0 ? mx * 0.25f : mx * 4.0f;
        if (t % 7 == 2) /* tiny ranges: subnormal scales */
            mx = mn + 1e-6f;
        if (mn > mx) {
            x = mn;
            mn = mx;
            mx = x;
        }
        mf_quant_params(mn, mx, 2, &sh, &zh);
        for (i = 0; i < 64; i++)
            code[i] = (uint32_t)(th_next(&s) % 4);
        check_tile(bm, code, sh, zh);
    }
}
