/* test_spec_reference.c - an independent, literal implementation of the
 * attention arithmetic of formats/SPEC.md section 4 (recursive merge tree,
 * scalar, no shared code with backends/cpu beyond core/numerics.h), and
 * bitwise comparisons with the CPU backend. Long rows cross the backend's
 * 16-chunk work units, whose merge once dropped states (found by the CUDA
 * differential harness). */
#include <criterion/criterion.h>
#include <omp.h>

#include "../core/numerics.h"
#include "helpers.h"

typedef struct state {
    float m, l, o[256];
} state;

/* Chunk c of row r for query head h, as the spec writes it. */
static void chunk_state(const uint16_t *k, const uint16_t *v, const float *q, uint32_t tokens,
                        uint32_t dim, uint32_t c, state *st) {
    uint32_t t0 = 64 * c, n = tokens - t0 < 64 ? tokens - t0 : 64, t, ch;
    float x[64] = {0}, e[64];
    for (t = 0; t < n; t++) {
        float s = 0.0f;
        for (ch = 0; ch < dim; ch++)
            s = MF_FMA(q[ch], mf_h2f(k[(size_t)(t0 + t) * dim + ch]), s);
        x[t] = MF_MUL(mf_canon(s), mf_score_scale(dim));
    }
    st->m = x[0];
    for (t = 1; t < n; t++)
        st->m = x[t] > st->m ? x[t] : st->m;
    st->l = 0.0f;
    for (t = 0; t < n; t++) {
        e[t] = mf_exp(MF_SUB(x[t], st->m));
        st->l = MF_ADD(st->l, e[t]);
    }
    for (ch = 0; ch < dim; ch++) {
        float o = 0.0f;
        for (t = 0; t < n; t++)
            o = MF_FMA(e[t], mf_h2f(v[(size_t)(t0 + t) * dim + ch]), o);
        st->o[ch] = o;
    }
}

/* merge(first, n): split at the largest power of two strictly below n. */
static void tree(const uint16_t *k, const uint16_t *v, const float *q, uint32_t tokens,
                 uint32_t dim, uint32_t first, uint32_t n, state *out) {
    uint32_t p = 1, ch;
    state b;
    float m, fa, fb;
    if (n == 1) {
        chunk_state(k, v, q, tokens, dim, first, out);
        return;
    }
    while (2 * p < n)
        p *= 2;
    tree(k, v, q, tokens, dim, first, p, out);
    tree(k, v, q, tokens, dim, first + p, n - p, &b);
    mf_merge_factors(out->m, b.m, &m, &fa, &fb);
    out->m = m;
    out->l = mf_merge_term(out->l, fa, b.l, fb);
    for (ch = 0; ch < dim; ch++)
        out->o[ch] = mf_merge_term(out->o[ch], fa, b.o[ch], fb);
}

static void compare(uint32_t tokens, uint32_t dim, uint32_t group, uint64_t seed) {
    const uint32_t rows = 2;
    size_t n = (size_t)rows * tokens * dim, no = (size_t)rows * group * dim, i;
    uint16_t *k = th_dense(&seed, n, 3.0f), *v = th_dense(&seed, n, 1.0f);
    uint16_t *q = th_dense(&seed, no, 1.0f);
    float *got = (float *)malloc(no * 4), qf[256];
    mf_desc d = th_desc(MF_KEY, MF_LAYOUT_REFERENCE, 0, rows, tokens, dim);
    size_t ws_bytes;
    void *ws;
    uint32_t r, h, ch;
    int th;
    mf_attend_workspace(MF_BACKEND_CPU, &d, group, &ws_bytes);
    ws = malloc(ws_bytes);
    for (th = 1; th <= 3; th += 2) {
        omp_set_num_threads(th);
        cr_assert_eq(mf_attend_dense(MF_BACKEND_CPU, k, v, rows, tokens, dim, q, group, got, ws,
                                     ws_bytes), MF_OK);
        for (r = 0; r < rows; r++)
            for (h = 0; h < group; h++) {
                state st;
                const float *g = got + ((size_t)r * group + h) * dim;
                for (ch = 0; ch < dim; ch++)
                    qf[ch] = mf_h2f(q[((size_t)r * group + h) * dim + ch]);
                tree(k + (size_t)r * tokens * dim, v + (size_t)r * tokens * dim, qf, tokens, dim, 0,
                     (tokens + 63) / 64, &st);
                for (ch = 0; ch < dim; ch++) {
                    float want = mf_canon(MF_DIV(st.o[ch], st.l));
                    cr_assert(memcmp(&want, &g[ch], 4) == 0,
                              "T=%u threads %d row %u head %u ch %u: %a, spec %a", tokens, th, r, h,
                              ch, g[ch], want);
                }
            }
    }
    for (i = 0; i < no; i++)
        cr_assert(isfinite(got[i]));
    free(k), free(v), free(q), free(got), free(ws);
}

Test(spec_reference, short_rows) {
    compare(1, 64, 1, 1);
    compare(63, 64, 4, 2);
    compare(64, 128, 4, 3);
    compare(65, 64, 3, 4);
    compare(1029, 64, 4, 5);
}

Test(spec_reference, rows_across_work_units) {
    compare(64 * 37 + 5, 64, 4, 6); /* 38 chunks: 3 units of 16 */
    compare(5000, 128, 2, 7);
    compare(64 * 33, 64, 1, 8);
}
