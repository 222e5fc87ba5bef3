/* validate.c - accepts a compressed tensor or names exactly what is wrong.
 *
 * Checks run in storage order and stop at the first problem, so the
 * message names the first offending tile. Nothing is read outside the
 * documented array sizes: each tile's payload range is checked before
 * its words are looked at. */
#include "internal.h"
#include "tile.h"

static mf_status check_scales(const mf_ctensor *c, uint64_t tiles, mf_diag *diag) {
    uint64_t i;
    float hi = (float)((1u << c->desc.bits) - 1u);
    for (i = 0; i < tiles; i++) {
        uint16_t sh = c->scales[i], zh = c->zeros[i];
        float s = mf_h2f(sh), z = mf_h2f(zh);
        if (!mf_h_finite(sh) || !(s > 0.0f))
            return mf__fail(diag, MF_ERR_SCALE, "scales[%llu] = 0x%04x is not a positive finite fp16",
                            (unsigned long long)i, sh);
        if (!mf_h_finite(zh))
            return mf__fail(diag, MF_ERR_SCALE, "zeros[%llu] = 0x%04x is not finite",
                            (unsigned long long)i, zh);
        if (!mf_h_finite(mf_dequant(0, s, z)) || !mf_h_finite(mf_f2h(MF_MUL(MF_SUB(hi, z), s))))
            return mf__fail(diag, MF_ERR_SCALE,
                            "tile %llu: scale 0x%04x and zero 0x%04x give non-finite values",
                            (unsigned long long)i, sh, zh);
    }
    return MF_OK;
}

/* Padding after a tile's nnz codes/halves must be zero; stored fp16
 * nonzeros must be nonzero (the bitmap says so). */
static mf_status check_tile_payload(const mf_ctensor *c, uint64_t tile, uint64_t start,
                                    uint32_t nnz, uint32_t words, mf_diag *diag) {
    const uint32_t *w = c->payload + start;
    uint32_t bits = c->desc.bits, n;
    if (bits == 0) {
        for (n = 0; n < 2 * words; n++) {
            uint16_t h = (uint16_t)(w[n / 2] >> (16 * (n % 2)));
            if (n < nnz && (h & 0x7fffu) == 0)
                return mf__fail(diag, MF_ERR_NNZ, "tile %llu: stored value %u is zero but its bitmap bit is set",
                                (unsigned long long)tile, n);
            if (n >= nnz && h != 0)
                return mf__fail(diag, MF_ERR_PADDING, "tile %llu: padding half %u is 0x%04x, not 0",
                                (unsigned long long)tile, n, h);
        }
    } else {
        uint32_t cpw = mf_codes_per_word(bits), used = nnz % cpw;
        if (used && (w[words - 1] >> (used * bits)) != 0)
            return mf__fail(diag, MF_ERR_PADDING, "tile %llu: unused code bits of word %llu are not 0",
                            (unsigned long long)tile, (unsigned long long)(start + words - 1));
    }
    return MF_OK;
}

/* Checks one offset against the running expectation. */
static mf_status check_offset(const char *what, uint64_t idx, uint64_t off, uint64_t prev,
                              uint64_t expected, uint64_t need, uint64_t payload_words,
                              mf_diag *diag) {
    if (off > payload_words || need > payload_words - off)
        return mf__fail(diag, MF_ERR_OFFSET_RANGE,
                        "%s[%llu] = %llu with %llu words runs past payload_words %llu", what,
                        (unsigned long long)idx, (unsigned long long)off,
                        (unsigned long long)need, (unsigned long long)payload_words);
    if (idx == 0 && off != 0)
        return mf__fail(diag, MF_ERR_OFFSET_RANGE, "%s[0] = %llu, must be 0", what,
                        (unsigned long long)off);
    if (idx > 0 && off < prev)
        return mf__fail(diag, MF_ERR_OFFSET_ORDER, "%s[%llu] = %llu is below %s[%llu] = %llu", what,
                        (unsigned long long)idx, (unsigned long long)off, what,
                        (unsigned long long)(idx - 1), (unsigned long long)prev);
    if (off != expected)
        return mf__fail(diag, MF_ERR_NNZ,
                        "%s[%llu] = %llu but the bitmaps before it need %llu words", what,
                        (unsigned long long)idx, (unsigned long long)off,
                        (unsigned long long)expected);
    return MF_OK;
}

mf_status mf__check_structure(const mf_ctensor *c, mf_diag *diag) {
    const mf_desc *d;
    mf_sizes s;
    mf_status st;
    if (!c)
        return mf__fail(diag, MF_ERR_NULL, "compressed tensor is NULL");
    d = &c->desc;
    if ((st = mf_desc_check(d, diag)) != MF_OK)
        return st;
    mf_sizes_of(d, 0, &s);
    if (c->payload_words > UINT32_MAX)
        return mf__fail(diag, MF_ERR_LIMIT, "payload_words %llu exceeds 2^32-1",
                        (unsigned long long)c->payload_words);
    if (s.tiles && (!c->bitmaps || !c->offsets))
        return mf__fail(diag, MF_ERR_NULL, "bitmaps or offsets array is NULL");
    if (c->payload_words && !c->payload)
        return mf__fail(diag, MF_ERR_NULL, "payload is NULL but payload_words is %llu",
                        (unsigned long long)c->payload_words);
    if (s.tiles && d->bits && (!c->scales || !c->zeros))
        return mf__fail(diag, MF_ERR_NULL, "scales or zeros array is NULL");
    if (s.window && !c->window)
        return mf__fail(diag, MF_ERR_NULL, "window array is NULL");
    return MF_OK;
}

mf_status mf_validate(const mf_ctensor *c, mf_diag *diag) {
    const mf_desc *d;
    mf_sizes s;
    mf_status st;
    uint64_t u, units, expected = 0, prev = 0;
    if ((st = mf__check_structure(c, diag)) != MF_OK)
        return st;
    d = &c->desc;
    mf_sizes_of(d, 0, &s);
    if (d->bits && (st = check_scales(c, s.tiles, diag)) != MF_OK)
        return st;
    units = s.blocks * d->rows;
    for (u = 0; u < units; u++) {
        uint64_t t0 = u * d->dim, start, need = 0;
        uint32_t j;
        if (d->layout == MF_LAYOUT_NATIVE) {
            for (j = 0; j < d->dim; j++)
                need += mf_tile_words(mf_popcount64(c->bitmaps[t0 + j]), d->bits);
            start = c->offsets[u];
            if ((st = check_offset("offsets", u, start, prev, expected, need, c->payload_words,
                                   diag)) != MF_OK)
                return st;
            prev = start;
        } else {
            start = 0; /* set per tile below */
        }
        for (j = 0; j < d->dim; j++) {
            uint64_t t = t0 + j;
            uint32_t nnz = mf_popcount64(c->bitmaps[t]);
            uint32_t words = mf_tile_words(nnz, d->bits);
            if (d->layout == MF_LAYOUT_REFERENCE) {
                start = c->offsets[t];
                if ((st = check_offset("offsets", t, start, prev, expected, words,
                                       c->payload_words, diag)) != MF_OK)
                    return st;
                prev = start;
            }
            if (words && (st = check_tile_payload(c, t, start, nnz, words, diag)) != MF_OK)
                return st;
            start += words;
            expected += words;
        }
    }
    if (expected != c->payload_words)
        return mf__fail(diag, MF_ERR_NNZ, "payload_words is %llu but the bitmaps need %llu",
                        (unsigned long long)c->payload_words, (unsigned long long)expected);
    return MF_OK;
}
