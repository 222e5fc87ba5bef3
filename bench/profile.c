/* profile.c - one operation of the benchmark's layer (8 KV heads, 32
 * query heads, D=128, batch 1, T=4096, s=0.7) run many times, for
 * `perf record` and quick before/after timings. Prints the median and
 * the fastest run, and a checksum of the attention output so a change
 * that alters results shows.
 *
 * usage: mustafar-profile [attend|dense|encode] [bits] [reps] */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mustafar.h"
#include "synth.h"
#include "timing.h"

enum { ROWS = 8, GROUP = 4, DIM = 128, TOKENS = 4096, MAX_REPS = 10000 };

int main(int argc, char **argv) {
    const char *op = argc > 1 ? argv[1] : "attend";
    uint32_t bits = argc > 2 ? (uint32_t)atoi(argv[2]) : 2, keep;
    int reps = argc > 3 ? atoi(argv[3]) : 500, i;
    size_t n = (size_t)ROWS * TOKENS * DIM, ws_bytes;
    mf_desc d = {MF_KEY, MF_LAYOUT_REFERENCE, 0, ROWS, TOKENS, DIM};
    mf_sizes sz;
    mf_ctensor ck, cv;
    uint16_t *k = malloc(n * 2), *v = malloc(n * 2), *q = malloc(ROWS * GROUP * DIM * 2);
    float *out = calloc(ROWS * GROUP * DIM, sizeof *out);
    double *t = malloc(MAX_REPS * sizeof *t), best, sum = 0;
    void *ws;
    if ((strcmp(op, "attend") && strcmp(op, "dense") && strcmp(op, "encode")) ||
        (bits != 0 && bits != 2 && bits != 4) || reps < 1 || reps > MAX_REPS) {
        fprintf(stderr, "usage: mustafar-profile [attend|dense|encode] [bits 0|2|4] [reps 1-%d]\n",
                MAX_REPS);
        return 2;
    }
    if (!k || !v || !q || !out || !t)
        return 1;
    d.bits = bits;
    mf_synth_layer(1, ROWS, TOKENS, DIM, GROUP, k, v, q);
    mf_keep_count(DIM, 0.7, &keep);
    mf_sizes_of(&d, keep, &sz);
    if (mf_ctensor_alloc(&ck, &d, sz.payload_keep) != MF_OK)
        return 1;
    d.kind = MF_VALUE;
    if (mf_ctensor_alloc(&cv, &d, sz.payload_keep) != MF_OK ||
        mf_attend_workspace(MF_BACKEND_CPU, &d, GROUP, &ws_bytes) != MF_OK ||
        !(ws = malloc(ws_bytes)))
        return 1;
    for (i = 0; i < reps; i++) {
        double t0 = omp_get_wtime();
        mf_status st;
        if (i == 0 || !strcmp(op, "encode")) {
            st = mf_encode(MF_BACKEND_CPU, k, keep, &ck, sz.payload_keep, NULL);
            if (st == MF_OK)
                st = mf_encode(MF_BACKEND_CPU, v, keep, &cv, sz.payload_keep, NULL);
        } else
            st = MF_OK;
        if (st == MF_OK && !strcmp(op, "attend"))
            st = mf_attend(MF_BACKEND_CPU, &ck, &cv, q, GROUP, out, ws, ws_bytes);
        else if (st == MF_OK && !strcmp(op, "dense"))
            st = mf_attend_dense(MF_BACKEND_CPU, k, v, ROWS, TOKENS, DIM, q, GROUP, out, ws,
                                 ws_bytes);
        if (st != MF_OK) {
            fprintf(stderr, "mustafar-profile: %s\n", mf_strerror(st));
            return 1;
        }
        t[i] = omp_get_wtime() - t0;
    }
    best = t[0];
    for (i = 1; i < reps; i++)
        best = t[i] < best ? t[i] : best;
    for (i = 0; i < ROWS * GROUP * DIM; i++)
        sum += out[i];
    printf("%s bits=%u threads=%d: median %.3f ms, fastest %.3f ms, checksum %.9g\n", op, bits,
           omp_get_max_threads(), mf_median(t, reps) * 1e3, best * 1e3, sum);
    return 0;
}
