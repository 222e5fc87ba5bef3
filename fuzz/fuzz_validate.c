/* fuzz_validate.c - the validator and decoder on tensors built from bytes.
 *
 * Input: a descriptor (fz_desc), a fix-up byte, then the arrays
 * (fz_ctensor). Rejected: a validator status with a message, and
 * mf_decode refuses with the same status. Accepted: mf_decode writes
 * exactly what formats/SPEC.md says (fz_expect_dense), quantized values
 * are finite, and the tensor survives a container round trip. */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

/* A descriptor with raw fields and no arrays: never accepted, never read. */
static void raw_desc(const mf_desc *d, uint64_t words) {
    mf_ctensor c;
    mf_diag diag;
    mf_status st, dst = mf_desc_check(d, NULL);
    memset(&c, 0, sizeof c);
    c.desc = *d;
    c.payload_words = words;
    diag.msg[0] = 0;
    st = mf_validate(&c, &diag);
    FZ_CHECK(st != MF_OK && diag.msg[0] != 0, "a tensor without arrays was accepted");
    FZ_CHECK(fz_status_in(st, FZ_VALIDATE_ERRORS), diag.msg);
    FZ_CHECK(dst == MF_OK || dst == st, "mf_validate and mf_desc_check disagree");
}

static void check_decode(const mf_ctensor *c) {
    const mf_desc *d = &c->desc;
    uint64_t n = fz_dense_count(d), i, compressed = (uint64_t)(d->tokens / 64u) * 64u * d->dim;
    uint16_t *got = (uint16_t *)malloc(n * 2), *want = (uint16_t *)malloc(n * 2);
    mf_diag diag;
    FZ_CHECK(got && want, "out of memory");
    memset(got, 0xa5, n * 2); /* so an element decode skips cannot match */
    FZ_CHECK(mf_decode(MF_BACKEND_CPU, c, got, &diag) == MF_OK, diag.msg);
    fz_expect_dense(c, want);
    FZ_CHECK(memcmp(got, want, n * 2) == 0, "decode differs from the spec");
    if (d->bits)
        for (i = 0; i < n; i++)
            FZ_CHECK(i % ((uint64_t)d->tokens * d->dim) >= compressed || fz_h_finite(got[i]),
                     "an accepted quantized tile decodes to a non-finite value");
    free(got);
    free(want);
}

/* The tensor as K and as V of one container, written and read back. */
static void check_container(const mf_ctensor *c) {
    mf_ctensor k = *c, v = *c, k2, v2;
    mf_diag diag;
    uint64_t n;
    uint8_t *buf;
    k.desc.kind = MF_KEY;
    v.desc.kind = MF_VALUE;
    FZ_CHECK(mf_container_size(&k, &v, &n) == MF_OK, "no container size");
    FZ_CHECK((buf = (uint8_t *)malloc(n)) != NULL, "out of memory");
    FZ_CHECK(mf_container_write_mem(&k, &v, buf, n) == MF_OK, "cannot write the container");
    FZ_CHECK(mf_container_read_mem(buf, n, &k2, &v2, &diag) == MF_OK, diag.msg);
    FZ_CHECK(fz_same_ctensor(&k, &k2) && fz_same_ctensor(&v, &v2), "container changed the tensor");
    mf_ctensor_free(&k2);
    mf_ctensor_free(&v2);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_in in;
    mf_desc d;
    mf_ctensor c;
    mf_diag diag;
    mf_status st;
    unsigned fix;
    fz_set_threads(1); /* thread counts are fuzz_attend's and fuzz_roundtrip's business */
    fz_init(&in, data, size);
    if (fz_desc(&in, &d, 3, 1u << 14)) {
        uint64_t lo = fz_u32(&in);
        raw_desc(&d, lo | (uint64_t)fz_u32(&in) << 32);
        return 0;
    }
    fix = fz_u8(&in) & FZ_FIX_ALL;
    fz_mark(&in);
    FZ_CHECK(fz_ctensor(&in, &d, fix, &c) == MF_OK, "cannot build the tensor");
    diag.msg[0] = 0;
    st = mf_validate(&c, &diag);
    if (st != MF_OK) {
        uint16_t one;
        FZ_CHECK(fz_status_in(st, FZ_VALIDATE_ERRORS), diag.msg);
        FZ_CHECK(diag.msg[0] != 0, "rejection without a message");
        /* decode must refuse before writing: a 1-element buffer is enough */
        FZ_CHECK(mf_decode(MF_BACKEND_CPU, &c, &one, NULL) == st, "decode disagrees with validate");
    } else {
        check_decode(&c);
        check_container(&c);
    }
    mf_ctensor_free(&c);
    return 0;
}
