/* ctensor.c - shapes, sizes, limits and host allocation of compressed tensors. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "tile.h"

mf_status mf_desc_check(const mf_desc *d, mf_diag *diag) {
    uint64_t n;
    if (!d)
        return mf__fail(diag, MF_ERR_NULL, "descriptor is NULL");
    if (d->kind != MF_KEY && d->kind != MF_VALUE)
        return mf__fail(diag, MF_ERR_ARG, "kind %d is neither key (0) nor value (1)", (int)d->kind);
    if (d->layout != MF_LAYOUT_REFERENCE && d->layout != MF_LAYOUT_NATIVE)
        return mf__fail(diag, MF_ERR_ARG, "layout %d is neither reference (0) nor native (1)",
                        (int)d->layout);
    if (d->bits != 0 && d->bits != 2 && d->bits != 4)
        return mf__fail(diag, MF_ERR_ARG, "bits %u is not 0 (fp16), 2 or 4", d->bits);
    if (d->dim != 64 && d->dim != 128 && d->dim != 256)
        return mf__fail(diag, MF_ERR_DIMS, "dim %u is not 64, 128 or 256", d->dim);
    if (d->rows == 0 || d->tokens == 0)
        return mf__fail(diag, MF_ERR_DIMS, "rows %u and tokens %u must be at least 1", d->rows,
                        d->tokens);
    if (d->rows > MF_MAX_ROWS)
        return mf__fail(diag, MF_ERR_LIMIT, "rows %u exceeds the limit %u", d->rows, MF_MAX_ROWS);
    if (d->tokens > MF_MAX_TOKENS)
        return mf__fail(diag, MF_ERR_LIMIT, "tokens %u exceeds the limit %u", d->tokens,
                        MF_MAX_TOKENS);
    n = (uint64_t)d->rows * d->tokens * d->dim; /* < 2^52: no overflow */
    if (n > MF_MAX_ELEMENTS)
        return mf__fail(diag, MF_ERR_LIMIT,
                        "rows*tokens*dim = %llu exceeds the limit of 2^34 elements",
                        (unsigned long long)n);
    return MF_OK;
}

mf_status mf_sizes_of(const mf_desc *d, uint32_t keep, mf_sizes *s) {
    mf_status st = mf_desc_check(d, NULL);
    uint64_t units, per_unit, per_unit_keep;
    if (st != MF_OK)
        return st;
    if (!s)
        return MF_ERR_NULL;
    if (keep > d->dim)
        return MF_ERR_ARG;
    memset(s, 0, sizeof *s);
    s->blocks = d->tokens / MF_TILE;
    units = s->blocks * d->rows;
    s->tiles = units * d->dim;
    s->offsets = d->layout == MF_LAYOUT_NATIVE ? units : s->tiles;
    s->window_tokens = d->tokens % MF_TILE;
    s->window = (uint64_t)d->rows * s->window_tokens * d->dim;
    per_unit = (uint64_t)d->dim * mf_tile_words(MF_TILE, d->bits);
    /* A unit holds at most 64*keep nonzeros; ceil adds under one word (or
     * 4 words of fp16 padding) per tile. */
    if (d->bits == 0)
        per_unit_keep = 32u * (uint64_t)keep + 4u * d->dim;
    else
        per_unit_keep = (64u * (uint64_t)keep + mf_codes_per_word(d->bits) - 1u) /
                            mf_codes_per_word(d->bits) + d->dim;
    s->payload_bound = units * per_unit;
    s->payload_keep = units * (per_unit_keep < per_unit ? per_unit_keep : per_unit);
    return MF_OK;
}

void mf_ctensor_free(mf_ctensor *c) {
    if (!c)
        return;
    free(c->bitmaps);
    free(c->offsets);
    free(c->scales);
    free(c->zeros);
    free(c->payload);
    free(c->window);
    c->bitmaps = NULL;
    c->offsets = NULL;
    c->scales = c->zeros = c->window = NULL;
    c->payload = NULL;
    c->payload_words = 0;
}

/* malloc of n elements of size sz, checked; returns 0 on failure. A zero
 * count still gets a valid pointer so views never hold NULL arrays. */
static int alloc_n(void **p, uint64_t n, size_t sz) {
    uint64_t bytes;
    if (!mf__mul64(n, sz, &bytes) || bytes > (uint64_t)SIZE_MAX)
        return 0;
    *p = malloc(bytes ? (size_t)bytes : 1);
    return *p != NULL;
}

mf_status mf_ctensor_alloc(mf_ctensor *c, const mf_desc *d, uint64_t capacity) {
    mf_sizes s;
    mf_status st;
    int ok;
    if (!c)
        return MF_ERR_NULL;
    memset(c, 0, sizeof *c);
    if ((st = mf_sizes_of(d, 0, &s)) != MF_OK)
        return st;
    c->desc = *d;
    ok = alloc_n((void **)&c->bitmaps, s.tiles, sizeof *c->bitmaps) &&
         alloc_n((void **)&c->offsets, s.offsets, sizeof *c->offsets) &&
         alloc_n((void **)&c->payload, capacity, sizeof *c->payload) &&
         alloc_n((void **)&c->window, s.window, sizeof *c->window);
    if (ok && d->bits != 0)
        ok = alloc_n((void **)&c->scales, s.tiles, sizeof *c->scales) &&
             alloc_n((void **)&c->zeros, s.tiles, sizeof *c->zeros);
    if (!ok) {
        mf_ctensor_free(c);
        return MF_ERR_NOMEM;
    }
    return MF_OK;
}

mf_status mf_ctensor_bytes(const mf_ctensor *c, uint64_t *bytes) {
    mf_sizes s;
    mf_status st;
    if (!c || !bytes)
        return MF_ERR_NULL;
    if ((st = mf_sizes_of(&c->desc, 0, &s)) != MF_OK)
        return st;
    *bytes = s.tiles * 8u + s.offsets * 4u + (c->desc.bits ? s.tiles * 4u : 0u) +
             c->payload_words * 4u + s.window * 2u;
    return MF_OK;
}

mf_status mf_keep_count(uint32_t dim, double sparsity, uint32_t *keep) {
    double pruned;
    if (!keep)
        return MF_ERR_NULL;
    if (!(sparsity >= 0.0 && sparsity <= 1.0))
        return MF_ERR_ARG;
    pruned = (double)(uint64_t)(sparsity * (double)dim + 0.5);
    *keep = dim - (uint32_t)pruned;
    return MF_OK;
}

uint16_t mf_fp16_from_float(float x) { return mf_f2h(x); }
float mf_fp16_to_float(uint16_t h) { return mf_h2f(h); }
