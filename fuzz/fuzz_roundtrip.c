/* fuzz_roundtrip.c - encode then decode on arbitrary shapes and data.
 *
 * Input: a descriptor (fz_desc), an option byte, a keep byte, then fp16
 * data (wrapping). Non-finite data must be refused with
 * MF_ERR_NONFINITE. Otherwise the encoder's output validates, does not
 * depend on the thread count, fits payload_keep, and decodes to: 0 where
 * pruned; the input exactly (bits 0) or within the tile's quantization
 * step (bits 2, 4) where kept; per token row min(keep, nonzeros) kept
 * entries, none smaller in magnitude than a pruned one; the dense window
 * unchanged. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

enum { OPT_SPARSITY = 1, OPT_NONFINITE = 2 };

static uint32_t mag(uint16_t h) { return h & 0x7fffu; }

static mf_status encode(const mf_desc *d, const uint16_t *x, uint32_t keep, int threads,
                        mf_ctensor *c, mf_diag *diag) {
    mf_sizes s;
    mf_sizes_of(d, keep, &s);
    FZ_CHECK(mf_ctensor_alloc(c, d, s.payload_keep) == MF_OK, "cannot allocate");
    fz_set_threads(threads);
    return mf_encode(MF_BACKEND_CPU, x, keep, c, s.payload_keep, diag);
}

/* Kept entries against the input, tile by tile; marks them in kept. */
static void check_tiles(const mf_ctensor *c, const uint16_t *x, const uint16_t *y,
                        uint8_t *kept) {
    const mf_desc *d = &c->desc;
    uint64_t tiles = (uint64_t)(d->tokens / 64u) * d->rows * d->dim, t;
    uint32_t i;
    for (t = 0; t < tiles; t++) {
        float step = d->bits ? mf_fp16_to_float(c->scales[t]) : 0.0f;
        for (i = 0; i < 64; i++) {
            uint64_t e = fz_tile_elem(d, t, i);
            kept[e] = (uint8_t)((c->bitmaps[t] >> (63u - i)) & 1u);
            if (!kept[e]) {
                FZ_CHECK(y[e] == 0, "a pruned entry decodes nonzero");
            } else if (d->bits == 0) {
                FZ_CHECK(y[e] == x[e] && mag(x[e]) != 0, "a kept fp16 entry changed");
            } else {
                float xv = mf_fp16_to_float(x[e]), yv = mf_fp16_to_float(y[e]);
                /* one step, plus the fp16 rounding of the decoded value */
                float tol = step + (fabsf(xv) + step) * (1.0f / 1024.0f);
                FZ_CHECK(mag(x[e]) != 0 && fabsf(yv - xv) <= tol,
                         "a kept quantized entry is off by more than a step");
            }
        }
    }
}

/* Per token row of the compressed region: how many kept, and which. */
static void check_rows(const mf_desc *d, const uint16_t *x, const uint16_t *y,
                       const uint8_t *kept, uint32_t keep) {
    uint32_t r, t, ch, full = d->tokens / 64u * 64u;
    for (r = 0; r < d->rows; r++)
        for (t = 0; t < d->tokens; t++) {
            uint64_t base = ((uint64_t)r * d->tokens + t) * d->dim;
            uint32_t nz = 0, nk = 0, min_kept = 0x7fffu, max_pruned = 0, first_pruned = 0;
            int pruned_tie = 0;
            if (t >= full) {
                FZ_CHECK(memcmp(y + base, x + base, d->dim * 2u) == 0, "the window changed");
                continue;
            }
            for (ch = 0; ch < d->dim; ch++) {
                uint32_t m = mag(x[base + ch]);
                nz += m != 0;
                if (kept[base + ch]) {
                    nk++;
                    min_kept = m < min_kept ? m : min_kept;
                } else if (m > max_pruned) {
                    max_pruned = m;
                }
            }
            FZ_CHECK(nk == (keep < nz ? keep : nz), "a token row keeps the wrong count");
            FZ_CHECK(nk == 0 || min_kept >= max_pruned, "a pruned entry outranks a kept one");
            /* ties at the threshold go to the lowest channels */
            for (ch = 0; ch < d->dim && nk; ch++) {
                uint32_t m = mag(x[base + ch]);
                if (m == min_kept && !kept[base + ch] && !pruned_tie)
                    pruned_tie = 1, first_pruned = ch;
                FZ_CHECK(!(pruned_tie && m == min_kept && kept[base + ch] && ch > first_pruned),
                         "a tie kept above a pruned one of the same magnitude");
            }
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_in in;
    mf_desc d;
    mf_ctensor c, c1;
    mf_diag diag;
    mf_status st;
    uint64_t n, i;
    uint32_t keep;
    uint16_t *x, *y;
    uint8_t opt, kb, *kept;
    int finite = 1;
    fz_init(&in, data, size);
    if (fz_desc(&in, &d, 2, 1u << 13))
        return 0; /* the validator target covers bad descriptors */
    opt = fz_u8(&in);
    kb = fz_u8(&in);
    if (opt & OPT_SPARSITY)
        FZ_CHECK(mf_keep_count(d.dim, kb / 255.0, &keep) == MF_OK && keep <= d.dim, "keep count");
    else
        keep = kb % (d.dim + 1u);
    fz_mark(&in);
    n = fz_dense_count(&d);
    x = (uint16_t *)malloc(n * 2);
    y = (uint16_t *)malloc(n * 2);
    kept = (uint8_t *)malloc(n);
    FZ_CHECK(x && y && kept, "out of memory");
    fz_fill(&in, x, n * 2);
    for (i = 0; i < n; i++) {
        if (!(opt & OPT_NONFINITE) && !fz_h_finite(x[i]))
            x[i] ^= 0x0400u; /* exponent 31 -> 30 */
        finite &= fz_h_finite(x[i]);
    }
    diag.msg[0] = 0;
    st = encode(&d, x, keep, 3, &c, &diag);
    if (!finite) {
        FZ_CHECK(st == MF_ERR_NONFINITE && strstr(diag.msg, "input[") != NULL,
                 "non-finite input not refused");
    } else {
        FZ_CHECK(st == MF_OK, diag.msg);
        FZ_CHECK(mf_validate(&c, &diag) == MF_OK, diag.msg);
        FZ_CHECK(encode(&d, x, keep, 1, &c1, &diag) == MF_OK && fz_same_ctensor(&c, &c1),
                 "the encoding depends on the thread count");
        mf_ctensor_free(&c1);
        FZ_CHECK(mf_decode(MF_BACKEND_CPU, &c, y, &diag) == MF_OK, diag.msg);
        check_tiles(&c, x, y, kept);
        check_rows(&d, x, y, kept, keep);
    }
    mf_ctensor_free(&c);
    free(x);
    free(y);
    free(kept);
    return 0;
}
