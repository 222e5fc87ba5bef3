/* encode.c - pruning and the per-(row, block) encoding units.
 *
 * The CPU backend drives these units in parallel; they are pure functions
 * of their inputs, so any schedule gives the same bytes. */
#include <string.h>

#include "internal.h"
#include "tile.h"

/* Number of magnitudes >= t (n <= 256). The 16-bit count lets compilers
 * vectorize 16 lanes wide. */
static uint32_t count_ge(const uint16_t *mag, uint32_t n, uint32_t t) {
    uint32_t i;
    uint16_t c = 0, tt = (uint16_t)t;
    for (i = 0; i < n; i++)
        c = (uint16_t)(c + (mag[i] >= tt));
    return c;
}

uint32_t mf__prune_row(const uint16_t *x, uint32_t dim, uint32_t keep, uint64_t *mask) {
    uint16_t mag[256];
    uint32_t i, w, nz = 0, lo, hi, need;
    for (i = 0; i < dim; i++) {
        mag[i] = (uint16_t)mf_h_mag(x[i]);
        if (mag[i] >= 0x7c00u)
            return i + 1;
        nz += mag[i] != 0;
    }
    for (i = 0; i < dim / 64; i++)
        mask[i] = 0;
    if (keep >= nz) { /* keep every nonzero */
        for (i = 0; i < dim; i++)
            mask[i / 64] |= (uint64_t)(mag[i] != 0) << (63 - i % 64);
        return 0;
    }
    if (keep == 0)
        return 0;
    /* Largest threshold t with at least `keep` magnitudes >= t. */
    lo = 1;
    hi = 0x7c00u;
    while (hi - lo > 1) {
        uint32_t mid = (lo + hi) / 2;
        if (count_ge(mag, dim, mid) >= keep)
            lo = mid;
        else
            hi = mid;
    }
    /* Everything above t is kept; ties at t go to the lowest channels:
     * the first `need` set bits of the tie masks (bit 63 = channel 0). */
    need = keep - count_ge(mag, dim, lo + 1);
    for (w = 0; w < dim / 64; w++) {
        const uint16_t *m = mag + 64 * w;
        uint64_t gt = 0, eq = 0;
        for (i = 0; i < 64; i++) {
            gt |= (uint64_t)(m[i] > lo) << (63 - i);
            eq |= (uint64_t)(m[i] == lo) << (63 - i);
        }
        for (; need > 0 && eq; need--) {
            uint64_t top = UINT64_C(1) << (63 - __builtin_clzll(eq));
            gt |= top;
            eq ^= top;
        }
        mask[w] = gt;
    }
    return 0;
}

/* Transposes a 64x64 bit matrix in place; element (r, c) is bit 63-c of
 * a[r]. Block-swap method: six rounds of halving block sizes. */
static void transpose64(uint64_t a[64]) {
    uint64_t m = UINT64_C(0x00000000ffffffff);
    unsigned j, k;
    for (j = 32; j != 0; j >>= 1, m ^= m << j) {
        for (k = 0; k < 64; k = ((k | j) + 1) & ~j) {
            uint64_t t = (a[k] ^ (a[k | j] >> j)) & m;
            a[k] ^= t;
            a[k | j] ^= t << j;
        }
    }
}

/* Total-order key of a finite fp16 value (signed integer order). */
static int32_t h_key(uint16_t h) { return (h & 0x8000u) ? -(int32_t)(h & 0x7fffu) : (int32_t)h; }

static uint16_t key_h(int32_t k) { return k < 0 ? (uint16_t)(0x8000u | (uint32_t)-k) : (uint16_t)k; }

/* Element i of tile j of a unit, from the row-major 64 x dim block. */
static uint16_t unit_elem(const mf_desc *d, const uint16_t *block, uint32_t j, uint32_t i) {
    uint32_t tok, ch;
    mf_tile_elem(d->kind, j, i, &tok, &ch);
    return block[(size_t)tok * d->dim + ch];
}

void mf__encode_unit_tiles(const mf_desc *d, const uint16_t *block, uint32_t keep,
                           uint64_t *bitmaps, uint16_t *scales, uint16_t *zeros, long *bad) {
    uint64_t masks[4][64]; /* [channel block][token] */
    uint32_t t, cb, j, nb = d->dim / 64;
    *bad = -1;
    for (t = 0; t < MF_TILE; t++) {
        uint64_t m[4];
        uint32_t r = mf__prune_row(block + (size_t)t * d->dim, d->dim, keep, m);
        if (r) {
            *bad = (long)(t * d->dim + r - 1);
            return;
        }
        for (cb = 0; cb < nb; cb++)
            masks[cb][t] = m[cb];
    }
    for (cb = 0; cb < nb; cb++) {
        if (d->kind == MF_KEY) {
            transpose64(masks[cb]); /* now [channel in block][token] */
            memcpy(bitmaps + cb * 64, masks[cb], sizeof masks[cb]);
        } else {
            memcpy(bitmaps + cb * 64, masks[cb], sizeof masks[cb]);
        }
    }
    if (d->bits == 0)
        return;
    for (j = 0; j < d->dim; j++) {
        uint64_t bm = bitmaps[j];
        int32_t lo = INT32_MAX, hi = INT32_MIN;
        while (bm) {
            uint32_t i = (uint32_t)__builtin_clzll(bm);
            int32_t k = h_key(unit_elem(d, block, j, i));
            bm &= ~(UINT64_C(1) << (63 - i));
            lo = k < lo ? k : lo;
            hi = k > hi ? k : hi;
        }
        if (!bitmaps[j]) /* empty tile: min = max = 0 */
            lo = hi = 0;
        mf_quant_params(mf_h2f(key_h(lo)), mf_h2f(key_h(hi)), d->bits, &scales[j], &zeros[j]);
    }
}

void mf__encode_unit_pack(const mf_desc *d, const uint16_t *block, const uint64_t *bitmaps,
                          const uint16_t *scales, const uint16_t *zeros, const uint64_t *starts,
                          uint32_t *payload) {
    uint32_t j;
    for (j = 0; j < d->dim; j++) {
        uint64_t bm = bitmaps[j];
        uint32_t nnz = mf_popcount64(bm), n = 0;
        uint32_t *w = payload + starts[j];
        memset(w, 0, (size_t)mf_tile_words(nnz, d->bits) * sizeof *w);
        if (d->bits == 0) {
            while (bm) {
                uint32_t i = (uint32_t)__builtin_clzll(bm);
                bm &= ~(UINT64_C(1) << (63 - i));
                w[n / 2] |= (uint32_t)unit_elem(d, block, j, i) << (16 * (n % 2));
                n++;
            }
        } else {
            /* codes collect in a register and go out a word at a time */
            float s = mf_h2f(scales[j]), z = mf_h2f(zeros[j]);
            uint64_t acc = 0;
            uint32_t fill = 0;
            while (bm) {
                uint32_t i = (uint32_t)__builtin_clzll(bm);
                bm &= ~(UINT64_C(1) << (63 - i));
                acc |= (uint64_t)mf_quant_code(mf_h2f(unit_elem(d, block, j, i)), s, z, d->bits)
                       << fill;
                fill += d->bits;
                if (fill == 32) {
                    w[n++] = (uint32_t)acc;
                    acc = 0;
                    fill = 0;
                }
            }
            if (fill)
                w[n] = (uint32_t)acc;
        }
    }
}
