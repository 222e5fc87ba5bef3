/* fuzz_attend.c - decode attention on caches built from bytes.
 *
 * Input: a descriptor (fz_desc), a group byte, a flag byte (a set bit
 * turns the matching fz_ctensor fix-up off), then q, K and V (wrapping).
 * If the validator refuses K or V, mf_attend must still stay in bounds
 * (ASan) and answer OK or a validator status. Otherwise the result is the same with 1 and 3 threads, equals
 * mf_attend_dense on the decoded cache bit for bit, and is finite when
 * q and the decoded K and V are. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

static int all_finite(const uint16_t *h, uint64_t n) {
    uint64_t i;
    for (i = 0; i < n; i++)
        if (!fz_h_finite(h[i]))
            return 0;
    return 1;
}

static uint16_t *decoded(const mf_ctensor *c) {
    uint64_t n = fz_dense_count(&c->desc);
    uint16_t *p = (uint16_t *)malloc(n * 2);
    mf_diag diag;
    FZ_CHECK(p != NULL, "out of memory");
    FZ_CHECK(mf_decode(MF_BACKEND_CPU, c, p, &diag) == MF_OK, diag.msg);
    return p;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_in in;
    mf_desc d;
    mf_ctensor k, v;
    mf_status sk, sv, st;
    uint32_t group;
    unsigned fix;
    uint64_t nq, nout, i;
    uint16_t *q, *kd, *vd;
    float *out3, *out1, *outd;
    size_t wsb;
    void *ws;
    fz_init(&in, data, size);
    if (fz_desc(&in, &d, 2, 5u << 14))
        return 0; /* the validator target covers bad descriptors */
    group = 1u + fz_u8(&in) % 3u;
    fix = ~(unsigned)fz_u8(&in) & FZ_FIX_ALL;
    fz_mark(&in);
    nq = (uint64_t)d.rows * group * d.dim;
    nout = nq * sizeof(float);
    q = (uint16_t *)malloc(nq * 2);
    out3 = (float *)malloc(nout);
    out1 = (float *)malloc(nout);
    outd = (float *)malloc(nout);
    FZ_CHECK(q && out3 && out1 && outd, "out of memory");
    fz_fill(&in, q, nq * 2);
    if (fix & FZ_FINITE)
        for (i = 0; i < nq; i++)
            q[i] = fz_h_finite(q[i]) ? q[i] : (uint16_t)(q[i] ^ 0x0400u);
    d.kind = MF_KEY;
    FZ_CHECK(fz_ctensor(&in, &d, fix, &k) == MF_OK, "cannot build K");
    d.kind = MF_VALUE;
    FZ_CHECK(fz_ctensor(&in, &d, fix, &v) == MF_OK, "cannot build V");
    sk = mf_validate(&k, NULL);
    sv = mf_validate(&v, NULL);

    fz_set_threads(3);
    FZ_CHECK(mf_attend_workspace(MF_BACKEND_CPU, &k.desc, group, &wsb) == MF_OK, "workspace");
    FZ_CHECK((ws = malloc(wsb ? wsb : 1)) != NULL, "out of memory");
    st = mf_attend(MF_BACKEND_CPU, &k, &v, q, group, out3, ws, wsb);
    if (sk != MF_OK || sv != MF_OK) {
        /* attend checks only structure and payload ranges (dispatch.c) */
        FZ_CHECK(st == MF_OK || fz_status_in(st, FZ_VALIDATE_ERRORS), "unexpected status");
    } else {
        FZ_CHECK(st == MF_OK, "attend failed on a valid cache");
        fz_set_threads(1);
        FZ_CHECK(mf_attend(MF_BACKEND_CPU, &k, &v, q, group, out1, ws, wsb) == MF_OK, "attend");
        FZ_CHECK(memcmp(out1, out3, nout) == 0, "the result depends on the thread count");
        kd = decoded(&k);
        vd = decoded(&v);
        FZ_CHECK(mf_attend_dense(MF_BACKEND_CPU, kd, vd, d.rows, d.tokens, d.dim, q, group, outd,
                                 ws, wsb) == MF_OK,
                 "dense attend failed");
        FZ_CHECK(memcmp(outd, out3, nout) == 0, "compressed and dense attention differ");
        if (all_finite(q, nq) && all_finite(kd, fz_dense_count(&d)) &&
            all_finite(vd, fz_dense_count(&d)))
            for (i = 0; i < nq; i++)
                FZ_CHECK(isfinite(out3[i]), "non-finite result from finite inputs");
        free(kd);
        free(vd);
    }
    free(ws);
    mf_ctensor_free(&k);
    mf_ctensor_free(&v);
    free(q);
    free(out3);
    free(out1);
    free(outd);
    return 0;
}
