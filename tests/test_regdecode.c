/* test_regdecode.c - the CUDA tensor-core kernel's register decode of
 * 2- and 4-bit tiles (backends/cuda/regdecode.h, the same C the device
 * runs with prmt emulated) against the format: every element of random
 * tiles, of every density, of tables of either sign and (4 bits) of any
 * finite scale and zero, as mf_dequant gives it. */
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
        mf_rd_part(w[j], b[j], mf_rd_lut(b[j] >> 7 & 0xffu, 2), mf_rd_lut(b[j] >> 16 & 0xffu, 2), lo,
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
    cr_assert_eq(mf_rd_lut(0x00, 2), 0x77777777u);
    cr_assert_eq(mf_rd_lut(0xff, 2), 0x76543210u);
    cr_assert_eq(mf_rd_lut(0x05, 2), 0x77777170u); /* elements 0 and 2 */
    cr_assert_eq(mf_rd_lut(0x80, 2), 0x07777777u);
    cr_assert_eq(mf_rd_lut(0x05, 4), 0x88888180u);
    cr_assert_eq(mf_rd_lut(0xff, 4), 0x76543210u);
}

Test(regdecode, prmt_emulation) {
    cr_assert_eq(mf_rd_prmt(0x33221100u, 0x77665544u, 0x7531u), 0x77553311u);
    cr_assert_eq(mf_rd_prmt(0x00800000u, 0u, 0x8a98u), 0x00ff0000u);
}

/* A 4-bit tile (bm, codes, sh, zh) decoded part by part as the kernel
 * does (a window per bitmap byte from the packed words, mf_rd_part4),
 * against mf_dequant. */
static void check_tile4(uint64_t bm, const uint32_t code[64], uint16_t sh, uint16_t zh) {
    uint32_t p[8] = {0, 0, 0, 0, 0, 0, 0, 0}, w[8], n = 0, i, q, j, r = 0;
    uint64_t rb = mf_rd_brev64(bm);
    float s = mf_h2f(sh), z = mf_h2f(zh);
    for (i = 0; i < 64; i++)
        if (mf_tile_bit(bm, i)) {
            p[n / 8] |= code[i] << (4 * (n % 8));
            n++;
        }
    for (q = 0; q < 8; q++) { /* bitmap byte q: elements 8q .. 8q + 7 */
        w[q] = mf_rd_window4(p, mf_tile_words(n, 4), r);
        r += (uint32_t)mf_popcount64(rb >> (8 * q) & 0xffu);
    }
    for (j = 0; j < 4; j++) { /* part j: bytes 2j, 2j + 1 */
        uint32_t out[8], k;
        mf_rd_part4(w[2 * j], w[2 * j + 1], mf_rd_lut((uint32_t)(rb >> (16 * j)) & 0xffu, 4),
                    mf_rd_lut((uint32_t)(rb >> (16 * j + 8)) & 0xffu, 4), s, z, out);
        for (k = 0; k < 16; k++) {
            uint32_t e = 16 * j + k;
            uint16_t got = (uint16_t)(out[k / 2] >> (16 * (k % 2)));
            uint16_t want = mf_tile_bit(bm, e) ? mf_dequant(code[e], s, z) : 0;
            cr_assert_eq(got, want, "element %u: %04x, want %04x (bitmap %016llx, sh %04x zh %04x)",
                         e, got, want, (unsigned long long)bm, sh, zh);
        }
    }
}

/* Tile t of a run (state s) of `bits`-bit codes: bitmaps of every
 * density; scale and zero from a random range, one-signed (zero points
 * outside the codes) or tiny (subnormal scales), or for 4 bits every
 * third tile any finite pair a file may hold. */
static void rand_tile(uint64_t *s, uint32_t t, uint32_t bits, uint64_t *bm, uint32_t code[64],
                      uint16_t *sh, uint16_t *zh) {
    static const uint32_t dens[] = {0, 1, 8, 19, 32, 45, 63, 64};
    float mn = mf_h2f(th_half(s, 4.0f)), mx = mf_h2f(th_half(s, 4.0f)), x;
    uint32_t i;
    *bm = rand_bitmap(s, dens[t % 8]);
    if (t % 5 == 1)
        mn = mx > 0 ? mx * 0.25f : mx * 4.0f;
    if (t % 7 == 2)
        mx = mn + 1e-6f;
    if (mn > mx) {
        x = mn;
        mn = mx;
        mx = x;
    }
    mf_quant_params(mn, mx, bits, sh, zh);
    if (bits == 4 && t % 3 == 0) {
        *sh = (uint16_t)(th_next(s) % 0x7c00u);
        *zh = (uint16_t)(th_next(s) % 0x7c00u | (th_next(s) % 2) << 15);
    }
    for (i = 0; i < 64; i++)
        code[i] = (uint32_t)(th_next(s) % (1u << bits));
}

/* Parts full, empty or half full in every combination: the codes of a
 * part after full ones start exactly at a word boundary (mf_rd_parts). */
Test(regdecode, part_boundaries) {
    uint64_t s = 5, bm;
    uint32_t c, j, i, code[64];
    for (c = 0; c < 81; c++) {
        bm = 0;
        for (j = 0, i = c; j < 4; j++, i /= 3) {
            const uint64_t part = i % 3 == 0 ? 0 : i % 3 == 1 ? 0xffffu : 0x5a3cu;
            bm |= part << (48 - 16 * j);
        }
        for (i = 0; i < 64; i++)
            code[i] = (uint32_t)(th_next(&s) % 4);
        check_tile(bm, code, mf_f2h(0.5f), mf_f2h(1.0f));
        check_tile(bm, code, mf_f2h(0.5f), mf_f2h(5.0f)); /* a negated table */
    }
}

Test(regdecode, every_element_of_random_tiles) {
    uint64_t s = 77, bm;
    uint32_t bits, t, code[64];
    uint16_t sh, zh;
    for (bits = 2; bits <= 4; bits += 2)
        for (t = 0; t < 20000; t++) {
            rand_tile(&s, t, bits, &bm, code, &sh, &zh);
            if (bits == 2)
                check_tile(bm, code, sh, zh);
            else
                check_tile4(bm, code, sh, zh);
        }
}
