/* codec.c - CPU encoder and decoder: the core units driven by OpenMP.
 *
 * Encoding is two parallel passes over (row, block) units with a serial
 * prefix sum between them; every unit is a pure function of its input, so
 * the bytes do not depend on the thread count. */
#include <string.h>

#include "../../core/internal.h"
#include "../../core/tile.h"
#include "cpu.h"
#include "expand.h"
#include "quantize.h"

static void unit_coords(const mf_desc *d, uint64_t blocks, uint64_t u, uint32_t *row,
                        uint64_t *block) {
    if (d->layout == MF_LAYOUT_NATIVE) {
        *block = u / d->rows;
        *row = (uint32_t)(u % d->rows);
    } else {
        *row = (uint32_t)(u / blocks);
        *block = u % blocks;
    }
}

static const uint16_t *unit_input(const mf_desc *d, const uint16_t *dense, uint32_t row,
                                  uint64_t block) {
    return dense + ((uint64_t)row * d->tokens + block * MF_TILE) * d->dim;
}

#if MF_CPU_SIMD
#define PRUNE4 mf_cpu_prune_rows4
#else
#define PRUNE4 NULL /* core's */
#endif

mf_status mf_cpu_encode(const uint16_t *dense, uint32_t keep, mf_ctensor *out,
                        uint64_t capacity, mf_diag *diag) {
    const mf_desc *d = &out->desc;
    mf_sizes s;
    uint64_t units, u, total = 0, w;
    long long bad_unit = -1;
    long bad_elem = -1;
    mf_sizes_of(d, 0, &s);
    units = s.blocks * d->rows;

    /* A non-finite value anywhere is an error; report the first one. */
    for (w = 0; w < (uint64_t)d->rows * s.window_tokens * d->dim; w++) {
        uint64_t r = w / (s.window_tokens * d->dim), rest = w % (s.window_tokens * d->dim);
        uint16_t h = dense[(r * d->tokens + s.blocks * MF_TILE) * d->dim + rest];
        if (!mf_h_finite(h))
            return mf__fail(diag, MF_ERR_NONFINITE, "input[%llu][%llu][%llu] is 0x%04x (NaN or inf)",
                            (unsigned long long)r,
                            (unsigned long long)(s.blocks * MF_TILE + rest / d->dim),
                            (unsigned long long)(rest % d->dim), h);
        out->window[w] = h;
    }

#pragma omp parallel for schedule(static)
    for (long long ui = 0; ui < (long long)units; ui++) {
        uint32_t row;
        uint64_t block, t0 = (uint64_t)ui * d->dim;
        long bad;
        const uint16_t *in;
        unit_coords(d, s.blocks, (uint64_t)ui, &row, &block);
        in = unit_input(d, dense, row, block);
        /* With SIMD the quantization parameters come from quantize.c. */
        mf__encode_unit_tiles(d, in, keep, PRUNE4, out->bitmaps + t0,
                              d->bits && !MF_CPU_SIMD ? out->scales + t0 : NULL,
                              d->bits && !MF_CPU_SIMD ? out->zeros + t0 : NULL, &bad);
#if MF_CPU_SIMD
        if (d->bits && bad < 0) {
            uint16_t e[256 * MF_TILE];
            mf_cpu_unit_elements(d, in, e);
            mf_cpu_unit_params(d, e, out->bitmaps + t0, out->scales + t0, out->zeros + t0);
        }
#endif
        if (bad >= 0) {
#pragma omp critical(mf_encode_bad)
            if (bad_unit < 0 || ui < bad_unit) {
                bad_unit = ui;
                bad_elem = bad;
            }
        }
    }
    if (bad_unit >= 0) {
        uint32_t row;
        uint64_t block;
        unit_coords(d, s.blocks, (uint64_t)bad_unit, &row, &block);
        return mf__fail(diag, MF_ERR_NONFINITE, "input[%u][%llu][%lu] is NaN or inf", row,
                        (unsigned long long)(block * MF_TILE + (uint64_t)bad_elem / d->dim),
                        (unsigned long)(bad_elem % d->dim));
    }

    /* Offsets: prefix sums in storage order. */
    for (u = 0; u < units; u++) {
        uint32_t j;
        if (d->layout == MF_LAYOUT_NATIVE)
            out->offsets[u] = (uint32_t)total;
        for (j = 0; j < d->dim; j++) {
            uint64_t t = u * d->dim + j;
            if (d->layout == MF_LAYOUT_REFERENCE)
                out->offsets[t] = (uint32_t)total;
            total += mf_tile_words(mf_popcount64(out->bitmaps[t]), d->bits);
        }
        if (total > UINT32_MAX)
            return mf__fail(diag, MF_ERR_LIMIT, "payload exceeds 2^32-1 words (uint32 offsets)");
    }
    if (total > capacity)
        return mf__fail(diag, MF_ERR_BUFFER_SMALL, "payload needs %llu words, capacity is %llu",
                        (unsigned long long)total, (unsigned long long)capacity);
    out->payload_words = total;

#pragma omp parallel for schedule(static)
    for (long long ui = 0; ui < (long long)units; ui++) {
        uint32_t row;
        uint64_t block, t0 = (uint64_t)ui * d->dim, starts[256];
        unit_coords(d, s.blocks, (uint64_t)ui, &row, &block);
        mf__unit_starts(out, row, block, starts);
#if MF_CPU_SIMD
        if (d->bits) {
            /* Rebuilt rather than kept from pass 1: keeping them all would
             * cost a copy of the whole input. */
            uint16_t e[256 * MF_TILE];
            mf_cpu_unit_elements(d, unit_input(d, dense, row, block), e);
            mf_cpu_unit_pack(d, e, out->bitmaps + t0, out->scales + t0, out->zeros + t0, starts,
                             out->payload);
            continue;
        }
#endif
        mf__encode_unit_pack(d, unit_input(d, dense, row, block), out->bitmaps + t0,
                             d->bits ? out->scales + t0 : NULL, d->bits ? out->zeros + t0 : NULL,
                             starts, out->payload);
    }
    return MF_OK;
}

/* Expects a validated tensor (mf_decode validates first). */
mf_status mf_cpu_decode(const mf_ctensor *c, uint16_t *dense) {
    const mf_desc *d = &c->desc;
    mf_sizes s;
    uint64_t units, r;
    mf_sizes_of(d, 0, &s);
    units = s.blocks * d->rows;
#pragma omp parallel for schedule(static)
    for (long long ui = 0; ui < (long long)units; ui++) {
        uint32_t row, j;
        uint64_t block, t0 = (uint64_t)ui * d->dim, starts[256];
        uint16_t *dst;
        unit_coords(d, s.blocks, (uint64_t)ui, &row, &block);
        dst = dense + ((uint64_t)row * d->tokens + block * MF_TILE) * d->dim;
        mf__unit_starts(c, row, block, starts);
        for (j = 0; j < d->dim; j++) {
            uint16_t vals[64];
            uint32_t i;
            uint64_t t = t0 + j;
            mf__decode_tile(d->bits, c->bitmaps[t], d->bits ? c->scales[t] : 0,
                            d->bits ? c->zeros[t] : 0, c->payload + starts[j], vals);
            for (i = 0; i < MF_TILE; i++) {
                uint32_t tok, ch;
                mf_tile_elem(d->kind, j, i, &tok, &ch);
                dst[(size_t)tok * d->dim + ch] = vals[i];
            }
        }
    }
    for (r = 0; r < d->rows; r++)
        memcpy(dense + (r * d->tokens + s.blocks * MF_TILE) * d->dim,
               c->window + r * s.window_tokens * d->dim,
               s.window_tokens * d->dim * sizeof *dense);
    return MF_OK;
}
