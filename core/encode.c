/* encode.c - pruning and the per-(row, block) encoding units.
 *
 * The CPU backend drives these units in parallel; they are pure functions
 * of their inputs, so any schedule gives the same bytes. */
#include <string.h>

#include "internal.h"
#include "tile.h"

/* Number of magnitudes >= t. In 16-bit lanes when vectorized: finite
 * magnitudes and t are below 0x8000, so the signed compare is exact, and
 * n <= 256 fits the count. Kept out of line: inlined into the
 * interleaved search below, GCC 12 no longer vectorizes it. */
static MF_NOINLINE uint32_t count_ge(const uint16_t *mag, uint32_t n, uint32_t t) {
    const int16_t *m = (const int16_t *)mag;
    int16_t ts = (int16_t)t;
    uint16_t c = 0;
    uint32_t i;
    for (i = 0; i < n; i++)
        c = (uint16_t)(c + (m[i] >= ts));
    return c;
}

/* Pruning state of one row: magnitudes, the threshold search range. */
typedef struct prune_state {
    uint16_t mag[256];
    uint32_t lo, hi, nz;
} prune_state;

/* Magnitudes of row x; returns 0 or the channel + 1 of a non-finite. */
static uint32_t prune_begin(const uint16_t *x, uint32_t dim, prune_state *p) {
    uint32_t i, nonfinite = 0;
    p->nz = 0;
    for (i = 0; i < dim; i++) { /* branch-free: vectorizes */
        p->mag[i] = (uint16_t)mf_h_mag(x[i]);
        nonfinite |= p->mag[i] >= 0x7c00u;
        p->nz += p->mag[i] != 0;
    }
    if (nonfinite)
        for (i = 0; i < dim; i++)
            if (p->mag[i] >= 0x7c00u)
                return i + 1;
    p->lo = 1;
    p->hi = 0x7c00u;
    return 0;
}

/* One bisection step towards the largest t with at least keep
 * magnitudes >= t (lo satisfies it, hi does not). */
static void prune_step(prune_state *p, uint32_t dim, uint32_t keep) {
    uint32_t mid = (p->lo + p->hi) / 2;
    if (p->hi - p->lo <= 1)
        return;
    if (count_ge(p->mag, dim, mid) >= keep)
        p->lo = mid;
    else
        p->hi = mid;
}

/* The keep mask once the search is done: everything above t = lo, then
 * ties at t in ascending channel order (bit 63 of word 0 = channel 0). */
static void prune_end(const prune_state *p, uint32_t dim, uint32_t keep, uint64_t *mask) {
    uint32_t i, w, need, lo = p->lo;
    if (keep >= p->nz || keep == 0) { /* every nonzero, or nothing */
        for (w = 0; w < dim / 64; w++) {
            uint64_t m = 0;
            for (i = 0; i < 64; i++)
                m |= (uint64_t)(keep && p->mag[64 * w + i] != 0) << (63 - i);
            mask[w] = m;
        }
        return;
    }
    need = keep - count_ge(p->mag, dim, lo + 1);
    for (w = 0; w < dim / 64; w++) {
        const uint16_t *m = p->mag + 64 * w;
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
}

/* 15 steps narrow [1, 0x7c00) to one value. */
#define PRUNE_STEPS 15

uint32_t mf__prune_row(const uint16_t *x, uint32_t dim, uint32_t keep, uint64_t *mask) {
    prune_state p;
    uint32_t r = prune_begin(x, dim, &p), k;
    if (r)
        return r;
    if (keep < p.nz && keep > 0)
        for (k = 0; k < PRUNE_STEPS; k++)
            prune_step(&p, dim, keep);
    prune_end(&p, dim, keep, mask);
    return 0;
}

/* Prunes 4 rows with their searches interleaved: each step's counts are
 * independent, so they overlap instead of waiting on each other. */
static uint32_t prune_rows4(const uint16_t *x, uint32_t dim, uint32_t keep, uint64_t m[4][4]) {
    prune_state p[4];
    uint32_t r, k;
    for (r = 0; r < 4; r++) {
        uint32_t bad = prune_begin(x + (size_t)r * dim, dim, &p[r]);
        if (bad)
            return r * dim + bad;
        if (keep >= p[r].nz || keep == 0)
            p[r].hi = p[r].lo; /* no search */
    }
    for (k = 0; k < PRUNE_STEPS; k++) { /* written out: keeps each count vectorized */
        prune_step(&p[0], dim, keep);
        prune_step(&p[1], dim, keep);
        prune_step(&p[2], dim, keep);
        prune_step(&p[3], dim, keep);
    }
    for (r = 0; r < 4; r++)
        prune_end(&p[r], dim, keep, m[r]);
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

/* Element i of tile j of a unit, from the row-major 64 x dim block. */
static uint16_t unit_elem(const mf_desc *d, const uint16_t *block, uint32_t j, uint32_t i) {
    uint32_t tok, ch;
    mf_tile_elem(d->kind, j, i, &tok, &ch);
    return block[(size_t)tok * d->dim + ch];
}

void mf__encode_unit_tiles(const mf_desc *d, const uint16_t *block, uint32_t keep,
                           mf__prune4_fn prune4, uint64_t *bitmaps, uint16_t *scales,
                           uint16_t *zeros, long *bad) {
    uint64_t masks[4][64]; /* [channel block][token] */
    uint32_t t, cb, j, nb = d->dim / 64;
    *bad = -1;
    if (!prune4)
        prune4 = prune_rows4;
    for (t = 0; t < MF_TILE; t += 4) {
        uint64_t m[4][4];
        uint32_t r = prune4(block + (size_t)t * d->dim, d->dim, keep, m), i;
        if (r) {
            *bad = (long)(t * d->dim + r - 1);
            return;
        }
        for (i = 0; i < 4; i++)
            for (cb = 0; cb < nb; cb++)
                masks[cb][t + i] = m[i][cb];
    }
    for (cb = 0; cb < nb; cb++) {
        if (d->kind == MF_KEY) {
            transpose64(masks[cb]); /* now [channel in block][token] */
            memcpy(bitmaps + cb * 64, masks[cb], sizeof masks[cb]);
        } else {
            memcpy(bitmaps + cb * 64, masks[cb], sizeof masks[cb]);
        }
    }
    if (d->bits == 0 || !scales)
        return;
    for (j = 0; j < d->dim; j++) {
        uint64_t bm = bitmaps[j];
        int32_t lo = INT32_MAX, hi = INT32_MIN;
        while (bm) {
            uint32_t i = (uint32_t)__builtin_clzll(bm);
            int32_t k = mf_h_key(unit_elem(d, block, j, i));
            bm &= ~(UINT64_C(1) << (63 - i));
            lo = k < lo ? k : lo;
            hi = k > hi ? k : hi;
        }
        if (!bitmaps[j]) /* empty tile: min = max = 0 */
            lo = hi = 0;
        mf_quant_params(mf_h2f(mf_key_h(lo)), mf_h2f(mf_key_h(hi)), d->bits, &scales[j], &zeros[j]);
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
            float s = mf_h2f(scales[j]), r = MF_DIV(1.0f, s), z = mf_h2f(zeros[j]);
            uint64_t acc = 0;
            uint32_t fill = 0;
            while (bm) {
                uint32_t i = (uint32_t)__builtin_clzll(bm);
                bm &= ~(UINT64_C(1) << (63 - i));
                acc |= (uint64_t)mf_quant_code(mf_h2f(unit_elem(d, block, j, i)), s, r, z, d->bits)
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
