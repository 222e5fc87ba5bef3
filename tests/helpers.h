/* helpers.h - shared test utilities: a seeded generator and cache builders. */
#ifndef MF_TEST_HELPERS_H
#define MF_TEST_HELPERS_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mustafar.h"

static inline uint64_t th_next(uint64_t *s) {
    uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* Uniform in [-a, a), rounded to fp16; about one value in 8 exactly zero. */
static inline uint16_t th_half(uint64_t *s, float a) {
    uint64_t r = th_next(s);
    if ((r & 7u) == 0)
        return 0;
    return mf_fp16_from_float(a * ((float)(r >> 40) / 8388608.0f - 1.0f));
}

static inline uint16_t *th_dense(uint64_t *s, size_t n, float a) {
    uint16_t *p = (uint16_t *)malloc(n * sizeof *p);
    size_t i;
    for (i = 0; i < n; i++)
        p[i] = th_half(s, a);
    return p;
}

static inline mf_desc th_desc(mf_kind kind, mf_layout layout, uint32_t bits, uint32_t rows,
                              uint32_t tokens, uint32_t dim) {
    mf_desc d;
    memset(&d, 0, sizeof d);
    d.kind = kind;
    d.layout = layout;
    d.bits = bits;
    d.rows = rows;
    d.tokens = tokens;
    d.dim = dim;
    return d;
}

/* Encodes dense with the CPU backend into a freshly allocated tensor. */
static inline mf_status th_encode(const mf_desc *d, const uint16_t *dense, uint32_t keep,
                                  mf_ctensor *c) {
    mf_sizes s;
    mf_status st = mf_sizes_of(d, keep, &s);
    if (st != MF_OK)
        return st;
    if ((st = mf_ctensor_alloc(c, d, s.payload_keep)) != MF_OK)
        return st;
    return mf_encode(MF_BACKEND_CPU, dense, keep, c, s.payload_keep, NULL);
}

#endif
