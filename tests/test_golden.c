/* test_golden.c - fixed hashes of encoder bytes and attention bits.
 *
 * The same constants must come out of every build: the AVX2 paths
 * (-march=native) and the portable scalar paths (MF_NATIVE=OFF, which
 * scripts/test.sh also runs), on any thread count. A change here is a
 * change of the format or of the numerics spec. */
#include <criterion/criterion.h>
#include <omp.h>

#include "helpers.h"

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = (const uint8_t *)p;
    while (n--)
        h = (h ^ *b++) * UINT64_C(0x100000001b3);
    return h;
}

static uint64_t hash_tensor(const mf_ctensor *c) {
    mf_sizes s;
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    mf_sizes_of(&c->desc, 0, &s);
    h = fnv(h, c->bitmaps, s.tiles * 8);
    h = fnv(h, c->offsets, s.offsets * 4);
    if (c->desc.bits) {
        h = fnv(h, c->scales, s.tiles * 2);
        h = fnv(h, c->zeros, s.tiles * 2);
    }
    h = fnv(h, c->payload, c->payload_words * 4);
    return fnv(h, c->window, s.window * 2);
}

/* Encodes K and V of a seeded layer and attends; returns the hashes. */
static void golden(uint32_t bits, mf_layout layout, uint32_t dim, uint64_t out[3]) {
    const uint32_t rows = 2, tokens = 200, group = 4;
    size_t n = (size_t)rows * tokens * dim, no = (size_t)rows * group * dim;
    uint64_t seed = 1234 + bits + dim;
    uint16_t *k = th_dense(&seed, n, 4.0f), *v = th_dense(&seed, n, 1.0f);
    uint16_t *q = th_dense(&seed, (size_t)rows * group * dim, 1.0f);
    float *o = (float *)malloc(no * 4);
    mf_desc dk = th_desc(MF_KEY, layout, bits, rows, tokens, dim);
    mf_desc dv = th_desc(MF_VALUE, layout, bits, rows, tokens, dim);
    mf_ctensor ck, cv;
    uint32_t keep;
    size_t ws_bytes;
    void *ws;
    mf_keep_count(dim, 0.7, &keep);
    cr_assert_eq(th_encode(&dk, k, keep, &ck), MF_OK);
    cr_assert_eq(th_encode(&dv, v, keep, &cv), MF_OK);
    out[0] = hash_tensor(&ck) ^ hash_tensor(&cv) * 3;
    mf_attend_workspace(MF_BACKEND_CPU, &dk, group, &ws_bytes);
    ws = malloc(ws_bytes);
    cr_assert_eq(mf_attend(MF_BACKEND_CPU, &ck, &cv, q, group, o, ws, ws_bytes), MF_OK);
    out[1] = fnv(UINT64_C(0xcbf29ce484222325), o, no * 4);
    cr_assert_eq(mf_attend_dense(MF_BACKEND_CPU, k, v, rows, tokens, dim, q, group, o, ws, ws_bytes),
                 MF_OK);
    out[2] = fnv(UINT64_C(0xcbf29ce484222325), o, no * 4);
    free(ws), free(k), free(v), free(q), free(o);
    mf_ctensor_free(&ck);
    mf_ctensor_free(&cv);
}

static void check(uint32_t bits, mf_layout layout, uint32_t dim, const uint64_t want[3]) {
    uint64_t got[3];
    int th;
    for (th = 1; th <= 3; th += 2) {
        omp_set_num_threads(th);
        golden(bits, layout, dim, got);
        cr_expect_eq(got[0], want[0], "bits %u dim %u encoder: 0x%016llx", bits, dim,
                     (unsigned long long)got[0]);
        cr_expect_eq(got[1], want[1], "bits %u dim %u attend: 0x%016llx", bits, dim,
                     (unsigned long long)got[1]);
        cr_expect_eq(got[2], want[2], "bits %u dim %u dense: 0x%016llx", bits, dim,
                     (unsigned long long)got[2]);
    }
}

Test(golden, two_bit_reference_128) {
    static const uint64_t want[3] = {UINT64_C(0xde02d78a117feb82), UINT64_C(0xb48f6de82d8bbedb),
                                     UINT64_C(0x2f65fdf7659d4c16)};
    check(2, MF_LAYOUT_REFERENCE, 128, want);
}

Test(golden, four_bit_native_64) {
    static const uint64_t want[3] = {UINT64_C(0xcabdf62eac3919ec), UINT64_C(0xaa226ffce14723d4),
                                     UINT64_C(0x54205e940f48ab4a)};
    check(4, MF_LAYOUT_NATIVE, 64, want);
}

Test(golden, fp16_reference_256) {
    static const uint64_t want[3] = {UINT64_C(0xf87a7405bdb9355d), UINT64_C(0x6a05a9a72226cc3b),
                                     UINT64_C(0xbaa4779bf1be2cb2)};
    check(0, MF_LAYOUT_REFERENCE, 256, want);
}
