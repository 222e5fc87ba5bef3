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
 * does (a window per bitmap byte from the packed words, mf_rd_part4; in
 * the fast form where the tile has one), against mf_dequant, absent
 * elements +0; returns whether the tile took the fast form. */
static int check_tile4(uint64_t bm, const uint32_t code[64], uint16_t sh, uint16_t zh) {
    uint32_t p[8] = {0, 0, 0, 0, 0, 0, 0, 0}, w[8], sel[8], n = 0, i, q, j, r = 0;
    uint64_t rb = mf_rd_brev64(bm);
    float s = mf_h2f(sh), z = mf_h2f(zh), zr = mf_rd_zero4(s, z);
    int fast = mf_rd_fast4(s, z), path;
    cr_assert_eq(mf_rd_isfast4(zr), fast, "sh %04x zh %04x", sh, zh);
    for (i = 0; i < 64; i++)
        if (mf_tile_bit(bm, i)) {
            p[n / 8] |= code[i] << (4 * (n % 8));
            n++;
        }
    for (q = 0; q < 8; q++) { /* bitmap byte q: elements 8q .. 8q + 7 */
        uint32_t byte = (uint32_t)(rb >> (8 * q)) & 0xffu;
        w[q] = mf_rd_window4(p, mf_tile_words(n, 4), r);
        sel[q] = mf_rd_lut(byte, 4);
        if (fast)
            mf_rd_fastbyte4(byte, (uint32_t)z, &w[q], &sel[q]);
        r += (uint32_t)mf_popcount64(byte);
    }
    /* the general path always (a warp of mixed tiles takes it), the fast
     * one where the tile has the fast form */
    for (path = 0; path < 1 + fast; path++)
        for (j = 0; j < 4; j++) { /* part j: bytes 2j, 2j + 1 */
            uint32_t out[8], k;
            mf_rd_part4(w[2 * j], w[2 * j + 1], sel[2 * j], sel[2 * j + 1], s, zr, path, out);
            for (k = 0; k < 16; k++) {
                uint32_t e = 16 * j + k;
                uint16_t got = (uint16_t)(out[k / 2] >> (16 * (k % 2)));
                uint16_t want = mf_tile_bit(bm, e) ? mf_dequant(code[e], s, z) : 0;
                cr_assert_eq(got, want,
                             "path %d, element %u: %04x, want %04x (bitmap %016llx, sh %04x zh %04x)",
                             path, e, got, want, (unsigned long long)bm, sh, zh);
            }
        }
    return fast;
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
    uint32_t bits, t, code[64], fast = 0;
    uint16_t sh, zh;
    for (bits = 2; bits <= 4; bits += 2)
        for (t = 0; t < 20000; t++) {
            rand_tile(&s, t, bits, &bm, code, &sh, &zh);
            if (bits == 2)
                check_tile(bm, code, sh, zh);
            else
                fast += (uint32_t)check_tile4(bm, code, sh, zh);
        }
    /* tiles straddling 0 have the fast form, one-signed and random ones
     * mostly not */
    cr_assert(fast > 3000 && fast < 17000, "%u of 20000 4-bit tiles fast", fast);
}

/* 4 bits, the fast form: every positive finite scale with the zeros -0,
 * 0, 7 and 15, on bytes that are empty, full, or hold 7 of 8 (code 7 of
 * the window is then z), both paths against mf_dequant. */
Test(regdecode, fast_form_every_scale) {
    static const uint16_t zs[] = {0x8000u, 0x0000u, 0x4700u, 0x4b80u};
    static const uint64_t bms[] = {UINT64_C(0x00ff7ffe80ff0001), UINT64_C(0xfe7f00ff01800000)};
    uint32_t sh, i, e, code[64];
    for (e = 0; e < 64; e++)
        code[e] = (e * 7u + 3u) % 16u;
    for (sh = 0x0001u; sh < 0x7c00u; sh++)
        for (i = 0; i < 8; i++)
            cr_assert(check_tile4(bms[i % 2], code, (uint16_t)sh, zs[i / 2]));
}

/* 4 bits: zeros no validated tensor holds (the tensor kernel does not
 * validate), whose NaNs and infinities either path gives as mf_dequant
 * does, and edges of the fast form (-0, 0.5, -100, 15). */
Test(regdecode, odd_zeros_4bit) {
    static const uint16_t zs[] = {0x7c00u, 0xfc00u, 0x7e00u, 0x8000u, 0x3800u, 0xd640u, 0x4b80u};
    uint64_t s = 9;
    uint32_t i, k, code[64];
    for (i = 0; i < sizeof zs / sizeof zs[0]; i++)
        for (k = 0; k < 20; k++) {
            uint32_t e;
            for (e = 0; e < 64; e++)
                code[e] = (uint32_t)(th_next(&s) % 16);
            check_tile4(rand_bitmap(&s, 8 * (k % 9)), code, mf_f2h(0.25f), zs[i]);
        }
}
