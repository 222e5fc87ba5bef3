/* test_roundtrip.c - random shapes, sparsities, bits and layouts: encode,
 * validate, decode; attention on compressed equals attention on decoded;
 * thread-count invariance. */
#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>

#include "helpers.h"

static const uint32_t dims[3] = {64, 128, 256};
static const uint32_t bitss[3] = {0, 2, 4};

/* Checks decode(encode(x)) against x: pruned entries are 0, at most keep
 * nonzeros per row of a full block, fp16 kept exactly, codes within half
 * a quantization step, the window verbatim. */
static void check_decoded(const mf_ctensor *c, const uint16_t *x, const uint16_t *y,
                          uint32_t keep) {
    const mf_desc *d = &c->desc;
    uint32_t blocks = d->tokens / 64, r, t, ch;
    for (r = 0; r < d->rows; r++)
        for (t = 0; t < d->tokens; t++) {
            const uint16_t *xr = x + ((size_t)r * d->tokens + t) * d->dim;
            const uint16_t *yr = y + ((size_t)r * d->tokens + t) * d->dim;
            uint32_t nz = 0;
            for (ch = 0; ch < d->dim; ch++) {
                if (t >= blocks * 64) {
                    cr_assert_eq(yr[ch], xr[ch], "window r%u t%u c%u", r, t, ch);
                    continue;
                }
                if (d->bits == 0) {
                    cr_assert(yr[ch] == 0 || yr[ch] == xr[ch], "r%u t%u c%u", r, t, ch);
                    nz += yr[ch] != 0;
                } else if (yr[ch] != 0 || xr[ch] != 0) {
                    /* within one scale step of the input for kept values */
                    float diff = fabsf(mf_fp16_to_float(yr[ch]) - mf_fp16_to_float(xr[ch]));
                    cr_assert(diff <= 4.0f * 2.0f / ((1u << d->bits) - 1) + 1e-3f || yr[ch] == 0,
                              "r%u t%u c%u diff %g", r, t, ch, diff);
                }
            }
            if (d->bits == 0 && t < blocks * 64)
                cr_assert_leq(nz, keep);
        }
}

Test(roundtrip, random_shapes) {
    uint64_t seed = 1;
    int iter;
    for (iter = 0; iter < 60; iter++) {
        uint32_t dim = dims[th_next(&seed) % 3], bits = bitss[th_next(&seed) % 3];
        uint32_t rows = 1 + (uint32_t)(th_next(&seed) % 3);
        uint32_t tokens = 1 + (uint32_t)(th_next(&seed) % 300);
        mf_layout layout = (mf_layout)(th_next(&seed) % 2);
        uint32_t keep;
        double sp = (double)(th_next(&seed) % 96) / 100.0;
        mf_kind kind = (mf_kind)(iter % 2);
        size_t n = (size_t)rows * tokens * dim;
        uint16_t *x = th_dense(&seed, n, 2.0f), *y = (uint16_t *)malloc(n * 2);
        mf_desc d = th_desc(kind, layout, bits, rows, tokens, dim);
        mf_ctensor c;
        mf_diag diag;
        mf_keep_count(dim, sp, &keep);
        cr_assert_eq(th_encode(&d, x, keep, &c), MF_OK);
        cr_assert_eq(mf_validate(&c, &diag), MF_OK, "%s", diag.msg);
        cr_assert_eq(mf_decode(MF_BACKEND_CPU, &c, y, NULL), MF_OK);
        check_decoded(&c, x, y, keep);
        /* encoding the decoded, already sparse input keeps its support */
        if (bits == 0) {
            mf_ctensor c2;
            uint64_t t, tiles = (uint64_t)(tokens / 64) * rows * dim;
            cr_assert_eq(th_encode(&d, y, dim, &c2), MF_OK);
            for (t = 0; t < tiles; t++)
                cr_assert_eq(c2.bitmaps[t], c.bitmaps[t]);
            mf_ctensor_free(&c2);
        }
        mf_ctensor_free(&c);
        free(x);
        free(y);
    }
}

/* Attention of a random layer through every path; returns 1 if all agree. */
static void attend_case(uint64_t seed, uint32_t rows, uint32_t tokens, uint32_t dim,
                        uint32_t group, uint32_t bits, mf_layout layout, double sp) {
    size_t n = (size_t)rows * tokens * dim, no = (size_t)rows * group * dim;
    uint16_t *k = th_dense(&seed, n, 3.0f), *v = th_dense(&seed, n, 1.0f);
    uint16_t *q = th_dense(&seed, (size_t)rows * group * dim, 1.0f);
    uint16_t *kd = (uint16_t *)malloc(n * 2), *vd = (uint16_t *)malloc(n * 2);
    float *o1 = (float *)malloc(no * 4), *o2 = (float *)malloc(no * 4), *o3 = (float *)malloc(no * 4);
    mf_desc dk = th_desc(MF_KEY, layout, bits, rows, tokens, dim);
    mf_desc dv = th_desc(MF_VALUE, layout, bits, rows, tokens, dim);
    mf_ctensor ck, cv;
    uint32_t keep;
    size_t ws_bytes, i;
    void *ws;
    int th;
    mf_keep_count(dim, sp, &keep);
    cr_assert_eq(th_encode(&dk, k, keep, &ck), MF_OK);
    cr_assert_eq(th_encode(&dv, v, keep, &cv), MF_OK);
    cr_assert_eq(mf_decode(MF_BACKEND_CPU, &ck, kd, NULL), MF_OK);
    cr_assert_eq(mf_decode(MF_BACKEND_CPU, &cv, vd, NULL), MF_OK);
    omp_set_num_threads(7); /* the workspace must fit the largest count */
    cr_assert_eq(mf_attend_workspace(MF_BACKEND_CPU, &dk, group, &ws_bytes), MF_OK);
    ws = malloc(ws_bytes);
    cr_assert_eq(mf_attend_dense(MF_BACKEND_CPU, kd, vd, rows, tokens, dim, q, group, o1, ws,
                                 ws_bytes), MF_OK);
    for (i = 0; i < no; i++)
        cr_assert(isfinite(o1[i]));
    for (th = 1; th <= 7; th += th == 1 ? 1 : 5) { /* 1, 2, 7 */
        omp_set_num_threads(th);
        cr_assert_eq(mf_attend(MF_BACKEND_CPU, &ck, &cv, q, group, o2, ws, ws_bytes), MF_OK);
        cr_assert_eq(memcmp(o1, o2, no * 4), 0, "attend differs: threads %d tokens %u dim %u",
                     th, tokens, dim);
        cr_assert_eq(mf_attend_dense(MF_BACKEND_CPU, kd, vd, rows, tokens, dim, q, group, o3, ws,
                                     ws_bytes), MF_OK);
        cr_assert_eq(memcmp(o1, o3, no * 4), 0, "dense differs: threads %d", th);
    }
    omp_set_num_threads(2);
    free(ws);
    mf_ctensor_free(&ck);
    mf_ctensor_free(&cv);
    free(k), free(v), free(q), free(kd), free(vd), free(o1), free(o2), free(o3);
}

/* The workspace variant on the CPU: no scratch needed, same bytes as
 * mf_encode; without a GPU the CUDA backend says so. */
Test(roundtrip, encode_ex_with_workspace_equals_encode) {
    uint64_t seed = 9;
    uint16_t *x = th_dense(&seed, (size_t)2 * 200 * 128, 2.0f);
    mf_desc d = th_desc(MF_KEY, MF_LAYOUT_REFERENCE, 2, 2, 200, 128);
    mf_ctensor a, b;
    mf_sizes s;
    size_t bytes = 1;
    char ws[8];
    cr_assert_eq(mf_encode_workspace(MF_BACKEND_CPU, &d, &bytes), MF_OK);
    cr_assert_eq(bytes, 0);
    cr_assert_eq(mf_encode_workspace(MF_BACKEND_CPU, NULL, &bytes), MF_ERR_NULL);
    d.dim = 100;
    cr_assert_eq(mf_encode_workspace(MF_BACKEND_CPU, &d, &bytes), MF_ERR_DIMS);
    d.dim = 128;
    cr_assert_eq(th_encode(&d, x, 38, &a), MF_OK);
    mf_sizes_of(&d, 38, &s);
    cr_assert_eq(mf_ctensor_alloc(&b, &d, s.payload_keep), MF_OK);
    cr_assert_eq(mf_encode_ex(MF_BACKEND_CPU, x, 38, &b, s.payload_keep, ws, sizeof ws, NULL), MF_OK);
    cr_assert_eq(a.payload_words, b.payload_words);
    cr_assert_arr_eq(a.payload, b.payload, a.payload_words * 4);
    cr_assert_arr_eq(a.bitmaps, b.bitmaps, (size_t)2 * 3 * 128 * 8);
    if (!mf_backend_available(MF_BACKEND_CUDA))
        cr_assert_eq(mf_encode_workspace(MF_BACKEND_CUDA, &d, &bytes), MF_ERR_NO_DEVICE);
    mf_ctensor_free(&a);
    mf_ctensor_free(&b);
    free(x);
}

/* K and V in one call: the same tensors as two mf_encode_ex calls; the
 * pairing rules (kinds, shapes, widths); K's error first, V left
 * unencoded then. */
Test(roundtrip, encode_kv_equals_two_encodes) {
    uint64_t seed = 10;
    const size_t n = (size_t)3 * 150 * 128;
    uint16_t *k = th_dense(&seed, n, 2.0f), *v = th_dense(&seed, n, 2.0f);
    mf_desc kd = th_desc(MF_KEY, MF_LAYOUT_NATIVE, 2, 3, 150, 128);
    mf_desc vd = th_desc(MF_VALUE, MF_LAYOUT_NATIVE, 2, 3, 150, 128), bad;
    mf_ctensor ka, va, kb, vb;
    mf_sizes s;
    mf_diag diag;
    size_t bytes = 1;
    mf_sizes_of(&kd, 38, &s);
    cr_assert_eq(th_encode(&kd, k, 38, &ka), MF_OK);
    cr_assert_eq(th_encode(&vd, v, 38, &va), MF_OK);
    cr_assert_eq(mf_ctensor_alloc(&kb, &kd, s.payload_keep), MF_OK);
    cr_assert_eq(mf_ctensor_alloc(&vb, &vd, s.payload_keep), MF_OK);
    cr_assert_eq(mf_encode_kv_workspace(MF_BACKEND_CPU, &kd, &vd, &bytes), MF_OK);
    cr_assert_eq(bytes, 0);
    cr_assert_eq(mf_encode_kv_ex(MF_BACKEND_CPU, k, v, 38, &kb, &vb, s.payload_keep,
                                 s.payload_keep, NULL, 0, &diag), MF_OK, "%s", diag.msg);
    cr_assert_eq(ka.payload_words, kb.payload_words);
    cr_assert_eq(va.payload_words, vb.payload_words);
    cr_assert_arr_eq(ka.payload, kb.payload, ka.payload_words * 4);
    cr_assert_arr_eq(va.payload, vb.payload, va.payload_words * 4);
    cr_assert_arr_eq(ka.bitmaps, kb.bitmaps, (size_t)3 * 2 * 128 * 8);
    cr_assert_arr_eq(va.bitmaps, vb.bitmaps, (size_t)3 * 2 * 128 * 8);
    cr_assert_arr_eq(va.window, vb.window, (size_t)3 * 22 * 128 * 2);
    /* the pairing rules */
    cr_assert_eq(mf_encode_kv_ex(MF_BACKEND_CPU, k, v, 38, &vb, &kb, s.payload_keep,
                                 s.payload_keep, NULL, 0, &diag), MF_ERR_ARG);
    cr_assert_eq(mf_encode_kv_workspace(MF_BACKEND_CPU, &vd, &kd, &bytes), MF_ERR_ARG);
    bad = vd;
    bad.bits = 4;
    cr_assert_eq(mf_encode_kv_workspace(MF_BACKEND_CPU, &kd, &bad, &bytes), MF_ERR_DIMS);
    bad = vd;
    bad.tokens = 149;
    cr_assert_eq(mf_encode_kv_workspace(MF_BACKEND_CPU, &kd, &bad, &bytes), MF_ERR_DIMS);
    cr_assert_eq(mf_encode_kv_workspace(MF_BACKEND_CPU, &kd, NULL, &bytes), MF_ERR_NULL);
    cr_assert_eq(mf_encode_kv_ex(MF_BACKEND_CPU, k, NULL, 38, &kb, &vb, s.payload_keep,
                                 s.payload_keep, NULL, 0, &diag), MF_ERR_NULL);
    cr_assert_eq(mf_encode_kv_ex(MF_BACKEND_CPU, k, v, 129, &kb, &vb, s.payload_keep,
                                 s.payload_keep, NULL, 0, &diag), MF_ERR_ARG);
    /* K's non-finite input is reported and V is not encoded */
    k[5] = 0x7c00u;
    vb.payload_words = 12345;
    cr_assert_eq(mf_encode_kv_ex(MF_BACKEND_CPU, k, v, 38, &kb, &vb, s.payload_keep,
                                 s.payload_keep, NULL, 0, &diag), MF_ERR_NONFINITE);
    cr_assert(strstr(diag.msg, "input[0][0][5]") != NULL, "%s", diag.msg);
    cr_assert_eq(vb.payload_words, 12345);
    if (!mf_backend_available(MF_BACKEND_CUDA))
        cr_assert_eq(mf_encode_kv_ex(MF_BACKEND_CUDA, k, v, 38, &kb, &vb, s.payload_keep,
                                     s.payload_keep, NULL, 0, &diag), MF_ERR_NO_DEVICE);
    mf_ctensor_free(&ka);
    mf_ctensor_free(&va);
    mf_ctensor_free(&kb);
    mf_ctensor_free(&vb);
    free(k), free(v);
}

/* The queued K and V encode on the CPU is mf_encode_kv_ex: the same bits
 * and errors from the call itself; the wait checks its arguments. */
Test(roundtrip, encode_kv_async_then_wait) {
    uint64_t seed = 11;
    const size_t n = (size_t)2 * 70 * 64;
    uint16_t *k = th_dense(&seed, n, 2.0f), *v = th_dense(&seed, n, 2.0f);
    mf_desc kd = th_desc(MF_KEY, MF_LAYOUT_REFERENCE, 4, 2, 70, 64);
    mf_desc vd = th_desc(MF_VALUE, MF_LAYOUT_REFERENCE, 4, 2, 70, 64);
    mf_ctensor ka, va, kb, vb;
    mf_sizes s;
    mf_diag diag;
    int ws;
    mf_sizes_of(&kd, 20, &s);
    cr_assert_eq(mf_ctensor_alloc(&ka, &kd, s.payload_keep), MF_OK);
    cr_assert_eq(mf_ctensor_alloc(&va, &vd, s.payload_keep), MF_OK);
    cr_assert_eq(mf_ctensor_alloc(&kb, &kd, s.payload_keep), MF_OK);
    cr_assert_eq(mf_ctensor_alloc(&vb, &vd, s.payload_keep), MF_OK);
    cr_assert_eq(mf_encode_kv_ex(MF_BACKEND_CPU, k, v, 20, &ka, &va, s.payload_keep,
                                 s.payload_keep, NULL, 0, &diag), MF_OK, "%s", diag.msg);
    cr_assert_eq(mf_encode_kv_async(MF_BACKEND_CPU, k, v, 20, &kb, &vb, s.payload_keep,
                                    s.payload_keep, NULL, 0, &diag), MF_OK, "%s", diag.msg);
    cr_assert_eq(mf_encode_kv_wait(MF_BACKEND_CPU, k, v, &kb, &vb, s.payload_keep,
                                   s.payload_keep, NULL, 0, &diag), MF_OK, "%s", diag.msg);
    cr_assert_eq(ka.payload_words, kb.payload_words);
    cr_assert_eq(va.payload_words, vb.payload_words);
    cr_assert_arr_eq(ka.payload, kb.payload, ka.payload_words * 4);
    cr_assert_arr_eq(va.payload, vb.payload, va.payload_words * 4);
    cr_assert_arr_eq(ka.bitmaps, kb.bitmaps, (size_t)s.tiles * 8);
    cr_assert_arr_eq(va.bitmaps, vb.bitmaps, (size_t)s.tiles * 8);
    cr_assert_arr_eq(ka.offsets, kb.offsets, (size_t)s.offsets * 4);
    cr_assert_arr_eq(va.offsets, vb.offsets, (size_t)s.offsets * 4);
    cr_assert_arr_eq(ka.scales, kb.scales, (size_t)s.tiles * 2);
    cr_assert_arr_eq(va.scales, vb.scales, (size_t)s.tiles * 2);
    cr_assert_arr_eq(ka.zeros, kb.zeros, (size_t)s.tiles * 2);
    cr_assert_arr_eq(va.zeros, vb.zeros, (size_t)s.tiles * 2);
    cr_assert_arr_eq(ka.window, kb.window, (size_t)s.window * 2);
    cr_assert_arr_eq(va.window, vb.window, (size_t)s.window * 2);
    /* errors come from the call; the wait checks what it is given */
    v[7] = 0xfc00u;
    cr_assert_eq(mf_encode_kv_async(MF_BACKEND_CPU, k, v, 20, &kb, &vb, s.payload_keep,
                                    s.payload_keep, NULL, 0, &diag), MF_ERR_NONFINITE);
    cr_assert_eq(mf_encode_kv_async(MF_BACKEND_CPU, k, v, 20, &kb, &vb, 1, 1, NULL, 0, &diag),
                 MF_ERR_BUFFER_SMALL);
    cr_assert_eq(mf_encode_kv_async(MF_BACKEND_CPU, k, v, 65, &kb, &vb, s.payload_keep,
                                    s.payload_keep, NULL, 0, &diag), MF_ERR_ARG);
    cr_assert_eq(mf_encode_kv_wait(MF_BACKEND_CPU, k, NULL, &kb, &vb, s.payload_keep,
                                   s.payload_keep, NULL, 0, &diag), MF_ERR_NULL);
    cr_assert_eq(mf_encode_kv_wait(MF_BACKEND_CPU, k, v, &vb, &kb, s.payload_keep,
                                   s.payload_keep, NULL, 0, &diag), MF_ERR_ARG);
    cr_assert_eq(mf_encode_kv_wait((mf_backend)7, k, v, &kb, &vb, s.payload_keep,
                                   s.payload_keep, NULL, 0, &diag), MF_ERR_ARG);
    if (!mf_backend_available(MF_BACKEND_CUDA)) {
        cr_assert_eq(mf_encode_kv_async(MF_BACKEND_CUDA, k, v, 20, &kb, &vb, s.payload_keep,
                                        s.payload_keep, &ws, sizeof ws, &diag),
                     MF_ERR_NO_DEVICE);
        cr_assert_eq(mf_encode_kv_wait(MF_BACKEND_CUDA, k, v, &kb, &vb, s.payload_keep,
                                       s.payload_keep, &ws, sizeof ws, &diag),
                     MF_ERR_NO_DEVICE);
    }
    mf_ctensor_free(&ka);
    mf_ctensor_free(&va);
    mf_ctensor_free(&kb);
    mf_ctensor_free(&vb);
    free(k), free(v);
}

Test(attend, compressed_equals_decoded_at_1_2_7_threads) {
    uint64_t seed = 7;
    int iter;
    for (iter = 0; iter < 24; iter++) {
        uint32_t dim = dims[th_next(&seed) % 3], bits = bitss[th_next(&seed) % 3];
        uint32_t tokens = 1 + (uint32_t)(th_next(&seed) % 1500);
        uint32_t group = (uint32_t[]){1, 4, 8, 3}[th_next(&seed) % 4];
        attend_case(seed, 1 + (uint32_t)(th_next(&seed) % 3), tokens, dim, group, bits,
                    (mf_layout)(iter % 2), (double)(th_next(&seed) % 96) / 100.0);
    }
    /* a long row: several merge-tree segments */
    attend_case(99, 1, 64 * 37 + 5, 128, 4, 2, MF_LAYOUT_REFERENCE, 0.7);
    /* full tiles: every 16-element group's codes start at its end bound
     * (bits 32, 64 and 96 of the stream) */
    attend_case(100, 2, 64 * 3 + 7, 64, 4, 2, MF_LAYOUT_REFERENCE, 0.0);
    attend_case(101, 1, 64 * 2, 128, 4, 2, MF_LAYOUT_NATIVE, 0.0);
}

Test(attend, one_token_returns_its_value_row) {
    uint16_t k[64], v[64], q[64];
    float out[64], ws_buf[1 << 16];
    size_t ws_bytes;
    mf_desc d = th_desc(MF_KEY, MF_LAYOUT_REFERENCE, 2, 1, 1, 64);
    uint64_t seed = 3;
    uint32_t i;
    for (i = 0; i < 64; i++) {
        k[i] = th_half(&seed, 4.0f);
        v[i] = th_half(&seed, 4.0f);
        q[i] = th_half(&seed, 4.0f);
    }
    cr_assert_eq(mf_attend_workspace(MF_BACKEND_CPU, &d, 1, &ws_bytes), MF_OK);
    cr_assert_leq(ws_bytes, sizeof ws_buf);
    cr_assert_eq(mf_attend_dense(MF_BACKEND_CPU, k, v, 1, 1, 64, q, 1, out, ws_buf, ws_bytes),
                 MF_OK);
    for (i = 0; i < 64; i++) /* softmax weight exp(0)/1 = 1: o = v exactly */
        cr_assert_eq(out[i], mf_fp16_to_float(v[i]) + 0.0f, "channel %u", i);
}

Test(attend, key_scores_and_value_combine_known_sums) {
    /* K all 1.0 in a 64-token block (dim 64), q = 0.5: each score is
     * 64 * 0.5 = 32 exactly. V all 2.0 with p = 1: each output 64 * 2. */
    static uint16_t kx[64 * 64], q[64];
    static float scores[64], p[64], out[64];
    mf_desc dk = th_desc(MF_KEY, MF_LAYOUT_NATIVE, 0, 1, 64, 64);
    mf_desc dv = th_desc(MF_VALUE, MF_LAYOUT_NATIVE, 0, 1, 64, 64);
    mf_ctensor ck, cv;
    uint32_t i;
    for (i = 0; i < 64 * 64; i++)
        kx[i] = 0x3c00;
    for (i = 0; i < 64; i++) {
        q[i] = 0x3800;
        p[i] = 1.0f;
    }
    cr_assert_eq(th_encode(&dk, kx, 64, &ck), MF_OK);
    cr_assert_eq(mf_key_scores(MF_BACKEND_CPU, &ck, q, 1, scores), MF_OK);
    for (i = 0; i < 64; i++)
        cr_assert_eq(scores[i], 32.0f);
    for (i = 0; i < 64 * 64; i++)
        kx[i] = 0x4000;
    cr_assert_eq(th_encode(&dv, kx, 64, &cv), MF_OK);
    cr_assert_eq(mf_value_combine(MF_BACKEND_CPU, &cv, p, 1, out), MF_OK);
    for (i = 0; i < 64; i++)
        cr_assert_eq(out[i], 128.0f);
    cr_assert_eq(mf_key_scores(MF_BACKEND_CPU, &cv, q, 1, scores), MF_ERR_ARG);
    cr_assert_eq(mf_key_scores(MF_BACKEND_CPU, &ck, q, 0, scores), MF_ERR_ARG);
    mf_ctensor_free(&ck);
    mf_ctensor_free(&cv);
}

Test(attend, key_scores_match_decoded_dot_products) {
    uint64_t seed = 11;
    uint32_t rows = 2, tokens = 200, dim = 128, group = 4, keep;
    size_t n = (size_t)rows * tokens * dim;
    uint16_t *k = th_dense(&seed, n, 2.0f), *kd = (uint16_t *)malloc(n * 2);
    uint16_t *q = th_dense(&seed, (size_t)rows * group * dim, 1.0f);
    float *sc = (float *)malloc((size_t)rows * group * tokens * 4);
    mf_desc d = th_desc(MF_KEY, MF_LAYOUT_REFERENCE, 4, rows, tokens, dim);
    mf_ctensor c;
    uint32_t r, h, t, ch;
    mf_keep_count(dim, 0.5, &keep);
    cr_assert_eq(th_encode(&d, k, keep, &c), MF_OK);
    cr_assert_eq(mf_decode(MF_BACKEND_CPU, &c, kd, NULL), MF_OK);
    cr_assert_eq(mf_key_scores(MF_BACKEND_CPU, &c, q, group, sc), MF_OK);
    for (r = 0; r < rows; r++)
        for (h = 0; h < group; h++)
            for (t = 0; t < tokens; t++) {
                float acc = 0.0f;
                for (ch = 0; ch < dim; ch++)
                    acc = fmaf(mf_fp16_to_float(q[(r * group + h) * dim + ch]),
                               mf_fp16_to_float(kd[((size_t)r * tokens + t) * dim + ch]), acc);
                cr_assert_eq(sc[((size_t)r * group + h) * tokens + t], acc + 0.0f);
            }
    mf_ctensor_free(&c);
    free(k), free(kd), free(q), free(sc);
}

/* mf_attend_async on the CPU is mf_attend: the same bits; mf_attend_wait
 * has nothing to wait for; argument errors as documented; buffers from
 * mf_buffer_alloc start zeroed (the async error flag relies on it). */
Test(attend, async_is_the_same_call_on_the_cpu) {
    const uint32_t rows = 3, tokens = 64 * 3 + 17, dim = 64, group = 2;
    uint64_t seed = 5;
    size_t n = (size_t)rows * tokens * dim, no = (size_t)rows * group * dim, ws_bytes, i;
    uint16_t *k = th_dense(&seed, n, 2.0f), *v = th_dense(&seed, n, 1.0f);
    uint16_t *q = th_dense(&seed, no, 1.0f);
    float *o1 = (float *)malloc(no * 4), *o2 = (float *)malloc(no * 4);
    mf_desc dk = th_desc(MF_KEY, MF_LAYOUT_REFERENCE, 2, rows, tokens, dim);
    mf_desc dv = th_desc(MF_VALUE, MF_LAYOUT_REFERENCE, 2, rows, tokens, dim);
    mf_ctensor ck, cv;
    unsigned char *ws;
    cr_assert_eq(th_encode(&dk, k, 20, &ck), MF_OK);
    cr_assert_eq(th_encode(&dv, v, 20, &cv), MF_OK);
    cr_assert_eq(mf_attend_workspace(MF_BACKEND_CPU, &dk, group, &ws_bytes), MF_OK);
    cr_assert_eq(mf_buffer_alloc(MF_BACKEND_CPU, ws_bytes, (void **)&ws), MF_OK);
    for (i = 0; i < ws_bytes; i++)
        cr_assert_eq(ws[i], 0);
    cr_assert_eq(mf_attend(MF_BACKEND_CPU, &ck, &cv, q, group, o1, ws, ws_bytes), MF_OK);
    cr_assert_eq(mf_attend_async(MF_BACKEND_CPU, MF_KERNEL_REFERENCE, &ck, &cv, q, group, o2, ws,
                                 ws_bytes),
                 MF_OK);
    cr_assert_eq(mf_attend_wait(MF_BACKEND_CPU, ws, ws_bytes), MF_OK);
    cr_assert_eq(memcmp(o1, o2, no * 4), 0);
    cr_assert_eq(mf_attend_async(MF_BACKEND_CPU, MF_KERNEL_TENSOR, &ck, &cv, q, group, o2, ws,
                                 ws_bytes),
                 MF_ERR_UNSUPPORTED);
    cr_assert_eq(mf_attend_async(MF_BACKEND_CPU, MF_KERNEL_REFERENCE, &ck, &cv, q, group, o2, ws,
                                 4),
                 MF_ERR_BUFFER_SMALL);
    cr_assert_eq(mf_attend_async(MF_BACKEND_CPU, MF_KERNEL_REFERENCE, &ck, &cv, NULL, group, o2,
                                 ws, ws_bytes),
                 MF_ERR_NULL);
    cr_assert_eq(mf_attend_wait(MF_BACKEND_CPU, NULL, 4), MF_ERR_NULL);
    cr_assert_eq(mf_attend_wait((mf_backend)7, ws, ws_bytes), MF_ERR_ARG);
    if (!mf_backend_available(MF_BACKEND_CUDA))
        cr_assert_eq(mf_attend_wait(MF_BACKEND_CUDA, ws, ws_bytes), MF_ERR_NO_DEVICE);
    mf_buffer_free(MF_BACKEND_CPU, ws);
    mf_ctensor_free(&ck);
    mf_ctensor_free(&cv);
    free(k), free(v), free(q), free(o1), free(o2);
}

/* A tile whose start lies at or past the end of the payload (the tensor
 * was never validated) makes every compute operation fail with
 * MF_ERR_OFFSET_RANGE, whatever the code width and layout; restored, the
 * same tensors work again. */
static void corrupt_case(uint32_t bits, mf_layout layout, uint32_t bad) {
    const uint32_t rows = 2, tokens = 64 * 5 + 3, dim = 128, group = 4;
    uint64_t seed = 11 + bits + 3 * layout;
    size_t n = (size_t)rows * tokens * dim, no = (size_t)rows * group * dim, ws_bytes;
    uint16_t *k = th_dense(&seed, n, 3.0f), *v = th_dense(&seed, n, 1.0f);
    uint16_t *q = th_dense(&seed, no, 1.0f);
    float *out = (float *)malloc(no * 4), *scores = (float *)malloc((size_t)rows * group * tokens * 4);
    float *p = (float *)calloc((size_t)rows * group * tokens, 4);
    mf_desc dk = th_desc(MF_KEY, layout, bits, rows, tokens, dim);
    mf_desc dv = th_desc(MF_VALUE, layout, bits, rows, tokens, dim);
    mf_ctensor ck, cv, *cs[2] = {&ck, &cv};
    mf_sizes s;
    void *ws;
    int which;
    cr_assert_eq(th_encode(&dk, k, 38, &ck), MF_OK);
    cr_assert_eq(th_encode(&dv, v, 38, &cv), MF_OK);
    cr_assert_eq(mf_attend_workspace(MF_BACKEND_CPU, &dk, group, &ws_bytes), MF_OK);
    ws = malloc(ws_bytes);
    mf_sizes_of(&dk, 0, &s);
    for (which = 0; which < 2; which++) {
        mf_ctensor *c = cs[which];
        uint64_t i = s.offsets / 2;
        uint32_t saved;
        if (layout == MF_LAYOUT_REFERENCE) /* a tile that has words */
            while (i < s.offsets && !c->bitmaps[i])
                i++;
        cr_assert_lt(i, s.offsets);
        saved = c->offsets[i];
        c->offsets[i] = bad ? bad : (uint32_t)c->payload_words;
        cr_assert_eq(mf_attend(MF_BACKEND_CPU, &ck, &cv, q, group, out, ws, ws_bytes),
                     MF_ERR_OFFSET_RANGE, "bits %u layout %d %s", bits, layout, which ? "V" : "K");
        /* on the CPU the async call reports at once; nothing is left to wait for */
        cr_assert_eq(mf_attend_async(MF_BACKEND_CPU, MF_KERNEL_REFERENCE, &ck, &cv, q, group, out,
                                     ws, ws_bytes),
                     MF_ERR_OFFSET_RANGE);
        cr_assert_eq(mf_attend_wait(MF_BACKEND_CPU, ws, ws_bytes), MF_OK);
        if (which == 0)
            cr_assert_eq(mf_key_scores(MF_BACKEND_CPU, c, q, group, scores), MF_ERR_OFFSET_RANGE);
        else
            cr_assert_eq(mf_value_combine(MF_BACKEND_CPU, c, p, group, out), MF_ERR_OFFSET_RANGE);
        c->offsets[i] = saved;
        cr_assert_eq(mf_attend(MF_BACKEND_CPU, &ck, &cv, q, group, out, ws, ws_bytes), MF_OK);
    }
    free(ws);
    mf_ctensor_free(&ck);
    mf_ctensor_free(&cv);
    free(k), free(v), free(q), free(out), free(scores), free(p);
}

Test(attend, offsets_past_the_payload_fail_every_operation) {
    uint32_t bits;
    for (bits = 0; bits <= 4; bits += 2) {
        corrupt_case(bits, MF_LAYOUT_REFERENCE, 0);
        corrupt_case(bits, MF_LAYOUT_REFERENCE, 0xffffffffu);
        corrupt_case(bits, MF_LAYOUT_NATIVE, 0);
        corrupt_case(bits, MF_LAYOUT_NATIVE, 0xffffffffu);
    }
}
