/* fuzz_util.c - byte reader, tensors from bytes and spec oracles shared
 * by the fuzz targets and the corpus generator. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "fuzz.h"

void fz_init(fz_in *in, const uint8_t *p, size_t n) {
    in->p = p;
    in->n = n;
    in->pos = 0;
    in->mark = n; /* no wrap before fz_mark: reads past the end give 0 */
}

void fz_mark(fz_in *in) { in->mark = in->pos; }

void fz_fill(fz_in *in, void *dst, size_t bytes) {
    uint8_t *d = (uint8_t *)dst;
    while (bytes) {
        size_t k;
        if (in->pos >= in->n) {
            if (in->mark >= in->n) {
                memset(d, 0, bytes);
                return;
            }
            in->pos = in->mark;
        }
        k = in->n - in->pos < bytes ? in->n - in->pos : bytes;
        memcpy(d, in->p + in->pos, k);
        in->pos += k;
        d += k;
        bytes -= k;
    }
}

uint8_t fz_u8(fz_in *in) {
    uint8_t b;
    fz_fill(in, &b, 1);
    return b;
}

uint16_t fz_u16(fz_in *in) {
    uint8_t b[2];
    fz_fill(in, b, 2);
    return (uint16_t)(b[0] | b[1] << 8);
}

uint32_t fz_u32(fz_in *in) {
    uint8_t b[4];
    fz_fill(in, b, 4);
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

void fz_fail(const char *file, int line, const char *cond, const char *msg) {
    fprintf(stderr, "%s:%d: check failed: %s (%s)\n", file, line, cond, msg);
    abort();
}

int fz_status_in(mf_status st, uint32_t set) { return (unsigned)st < 32u && ((set >> st) & 1u); }

/* ---- descriptors ----------------------------------------------------- */
static const uint32_t dims[4] = {64, 128, 256, 64};
static const uint32_t bit_sel[4] = {0, 2, 4, 2};

int fz_desc(fz_in *in, mf_desc *d, uint32_t max_rows, uint32_t max_elems) {
    uint8_t m = fz_u8(in);
    uint32_t t;
    memset(d, 0, sizeof *d);
    if (m & 0x80) {
        d->kind = (mf_kind)fz_u8(in);
        d->layout = (mf_layout)fz_u8(in);
        d->bits = fz_u8(in);
        d->rows = fz_u32(in);
        d->tokens = fz_u32(in);
        d->dim = fz_u32(in);
        return 1;
    }
    d->kind = (mf_kind)(m & 1u);
    d->layout = (mf_layout)((m >> 1) & 1u);
    d->bits = bit_sel[(m >> 2) & 3u];
    d->dim = dims[(m >> 4) & 3u];
    d->rows = 1u + fz_u8(in) % max_rows;
    t = fz_u16(in); /* low 13 bits: tokens - 1; top 3: a shift toward small */
    d->tokens = 1u + ((t & 0x1fffu) % (max_elems / (d->rows * d->dim)) >> (t >> 13));
    return 0;
}

size_t fz_put_desc(uint8_t *out, const mf_desc *d) {
    uint32_t bs = d->bits == 0 ? 0u : d->bits == 2 ? 1u : 2u;
    uint32_t ds = d->dim == 64 ? 0u : d->dim == 128 ? 1u : 2u;
    out[0] = (uint8_t)((uint32_t)d->kind | (uint32_t)d->layout << 1 | bs << 2 | ds << 4);
    out[1] = (uint8_t)(d->rows - 1u);
    out[2] = (uint8_t)(d->tokens - 1u);
    out[3] = (uint8_t)((d->tokens - 1u) >> 8);
    return 4;
}

/* ---- tensors from bytes ---------------------------------------------- */
uint32_t fz_tile_words(uint32_t nnz, uint32_t bits) {
    if (bits == 0)
        return ((nnz + 7u) / 8u) * 4u; /* halves padded to 8 */
    return (nnz * bits + 31u) / 32u;
}

static uint32_t popcount64(uint64_t x) {
    uint32_t n = 0;
    for (; x; x &= x - 1)
        n++;
    return n;
}

/* fp16 with its exponent field clamped to at most e_max (sign kept). */
static uint16_t clamp_exp(uint16_t h, uint32_t e_max) {
    uint32_t e = (h >> 10) & 31u;
    return e <= e_max ? h : (uint16_t)((h & 0x83ffu) | e_max << 10);
}

/* Zero padding and nonzero fp16 values of tile payloads that fit; with
 * finite, fp16 values get a finite exponent too. */
static void fix_payload(mf_ctensor *c, uint64_t tiles, int finite) {
    uint32_t bits = c->desc.bits;
    uint64_t t, start = 0;
    for (t = 0; t < tiles; t++) {
        uint32_t nnz = popcount64(c->bitmaps[t]), words = fz_tile_words(nnz, bits), n;
        uint32_t *w = c->payload + start;
        if (start > c->payload_words || words > c->payload_words - start)
            return;
        if (bits == 0) {
            uint16_t *h = (uint16_t *)w; /* host order = payload half order on LE */
            for (n = 0; n < 2 * words; n++) {
                if (n >= nnz)
                    h[n] = 0;
                else if ((h[n] & 0x7fffu) == 0)
                    h[n] = 0x3c00u;
                else if (finite)
                    h[n] = clamp_exp(h[n], 30);
            }
        } else if (nnz % (32u / bits)) {
            w[words - 1] &= (1u << (nnz % (32u / bits) * bits)) - 1u;
        }
        start += words;
    }
}

mf_status fz_ctensor(fz_in *in, const mf_desc *d, unsigned fix, mf_ctensor *c) {
    mf_sizes s;
    mf_status st;
    uint64_t t, need = 0, words = 0;
    if ((st = mf_ctensor_alloc(c, d, 0)) != MF_OK)
        return st;
    mf_sizes_of(d, 0, &s);
    if (!(fix & FZ_AUTO_WORDS))
        words = fz_u16(in);
    fz_fill(in, c->bitmaps, s.tiles * sizeof *c->bitmaps);
    for (t = 0; t < s.tiles; t++) {
        uint32_t tw = fz_tile_words(popcount64(c->bitmaps[t]), d->bits);
        if (d->layout == MF_LAYOUT_REFERENCE)
            c->offsets[t] = (uint32_t)need;
        else if (t % d->dim == 0)
            c->offsets[t / d->dim] = (uint32_t)need;
        need += tw;
    }
    if (fix & FZ_AUTO_WORDS)
        words = need;
    if (!(fix & FZ_AUTO_OFFSETS))
        fz_fill(in, c->offsets, s.offsets * sizeof *c->offsets);
    if (d->bits) {
        fz_fill(in, c->scales, s.tiles * sizeof *c->scales);
        fz_fill(in, c->zeros, s.tiles * sizeof *c->zeros);
        if (fix & FZ_FIX_SCALES)
            for (t = 0; t < s.tiles; t++) {
                /* 0 < scale < 1 and |zero| < 512 keep every code finite */
                c->scales[t] = clamp_exp(c->scales[t] & 0x7fffu, 14);
                if (c->scales[t] == 0)
                    c->scales[t] = 1;
                c->zeros[t] = clamp_exp(c->zeros[t], 23);
            }
    }
    free(c->payload);
    if (!(c->payload = (uint32_t *)malloc(words ? words * 4u : 1u))) {
        mf_ctensor_free(c);
        return MF_ERR_NOMEM;
    }
    c->payload_words = words;
    fz_fill(in, c->payload, words * 4u);
    if (fix & FZ_FIX_PAYLOAD)
        fix_payload(c, s.tiles, (fix & FZ_FINITE) != 0);
    fz_fill(in, c->window, s.window * sizeof *c->window);
    if (fix & FZ_FINITE)
        for (t = 0; t < s.window; t++)
            c->window[t] = clamp_exp(c->window[t], 30);
    return MF_OK;
}

size_t fz_put_ctensor(uint8_t *out, const mf_ctensor *c) {
    mf_sizes s;
    size_t n = 0;
    mf_sizes_of(&c->desc, 0, &s);
#define PUT(p, count)                                                                              \
    do {                                                                                           \
        size_t b_ = (size_t)(count) * sizeof *(p);                                                 \
        if (out)                                                                                   \
            memcpy(out + n, (p), b_);                                                              \
        n += b_;                                                                                   \
    } while (0)
    PUT(c->bitmaps, s.tiles);
    if (c->desc.bits) {
        PUT(c->scales, s.tiles);
        PUT(c->zeros, s.tiles);
    }
    PUT(c->payload, c->payload_words);
    PUT(c->window, s.window);
#undef PUT
    return n;
}

int fz_same_ctensor(const mf_ctensor *a, const mf_ctensor *b) {
    mf_sizes s;
    if (memcmp(&a->desc, &b->desc, sizeof a->desc) != 0 || a->payload_words != b->payload_words ||
        mf_sizes_of(&a->desc, 0, &s) != MF_OK)
        return 0;
    return memcmp(a->bitmaps, b->bitmaps, s.tiles * 8u) == 0 &&
           memcmp(a->offsets, b->offsets, s.offsets * 4u) == 0 &&
           (!a->desc.bits || (memcmp(a->scales, b->scales, s.tiles * 2u) == 0 &&
                              memcmp(a->zeros, b->zeros, s.tiles * 2u) == 0)) &&
           memcmp(a->payload, b->payload, a->payload_words * 4u) == 0 &&
           memcmp(a->window, b->window, s.window * 2u) == 0;
}

/* ---- oracles --------------------------------------------------------- */
uint64_t fz_dense_count(const mf_desc *d) { return (uint64_t)d->rows * d->tokens * d->dim; }

int fz_h_finite(uint16_t h) { return (h & 0x7c00u) != 0x7c00u; }

uint64_t fz_tile_elem(const mf_desc *d, uint64_t t, uint32_t i) {
    uint64_t blocks = d->tokens / 64u, u = t / d->dim, block, token, channel;
    uint32_t j = (uint32_t)(t % d->dim), row;
    if (d->layout == MF_LAYOUT_NATIVE) {
        block = u / d->rows;
        row = (uint32_t)(u % d->rows);
    } else {
        row = (uint32_t)(u / blocks);
        block = u % blocks;
    }
    if (d->kind == MF_KEY) {
        token = block * 64u + i;
        channel = j;
    } else {
        token = block * 64u + j % 64u;
        channel = (j / 64u) * 64u + i;
    }
    return ((uint64_t)row * d->tokens + token) * d->dim + channel;
}

void fz_expect_dense(const mf_ctensor *c, uint16_t *dense) {
    const mf_desc *d = &c->desc;
    uint64_t blocks = d->tokens / 64u, tiles = blocks * d->rows * d->dim, t, start = 0;
    uint32_t wt = d->tokens % 64u, r, i;
    for (t = 0; t < tiles; t++) {
        uint32_t n = 0;
        for (i = 0; i < 64; i++) {
            uint16_t h = 0;
            if ((c->bitmaps[t] >> (63u - i)) & 1u) {
                if (d->bits == 0) {
                    h = (uint16_t)(c->payload[start + n / 2] >> (16 * (n % 2)));
                } else {
                    uint32_t cpw = 32u / d->bits;
                    uint32_t code = (c->payload[start + n / cpw] >> (n % cpw * d->bits)) &
                                    ((1u << d->bits) - 1u);
                    float s = mf_fp16_to_float(c->scales[t]), z = mf_fp16_to_float(c->zeros[t]);
                    h = mf_fp16_from_float(((float)code - z) * s);
                }
                n++;
            }
            dense[fz_tile_elem(d, t, i)] = h;
        }
        start += fz_tile_words(n, d->bits);
    }
    for (r = 0; r < d->rows; r++)
        memcpy(dense + ((uint64_t)r * d->tokens + blocks * 64u) * d->dim,
               c->window + (uint64_t)r * wt * d->dim, (size_t)wt * d->dim * 2u);
}

void fz_set_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}
