/* bench.c - CPU benchmark on a Llama-3-8B-like layer (8 KV heads, 32 query
 * heads, D=128, batch 1): encoder throughput, decode attention on the
 * compressed cache against dense fp16 attention, at 1 and 2 threads, and
 * compressed bytes per element for both layouts. Prints a Markdown table.
 *
 * usage: mustafar-bench [--tokens T ...] [--quick]
 * Times are the best of three rounds' medians of repeated runs, each
 * after a warm-up of a fifth of its time budget. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mustafar.h"
#include "synth.h"
#include "timing.h"

enum { ROWS = 8, GROUP = 4, DIM = 128, MAX_REPS = 101, ROUNDS = 3 };

/* Median seconds of fn over enough repetitions to fill about budget s. */
typedef void (*bench_fn)(void *ctx);

static double median_time(bench_fn fn, void *ctx, double budget) {
    double t[MAX_REPS], start = omp_get_wtime();
    int n = 0;
    do /* warm-up: a fifth of the budget, at least one run (caches, clocks) */
        fn(ctx);
    while (omp_get_wtime() - start < budget / 5);
    start = omp_get_wtime();
    while (n < MAX_REPS && (n < 5 || omp_get_wtime() - start < budget)) {
        double t0 = omp_get_wtime();
        fn(ctx);
        t[n++] = omp_get_wtime() - t0;
    }
    return mf_median(t, n);
}

typedef struct layer {
    uint32_t tokens;
    uint16_t *k, *v, *q;
    mf_ctensor ck, cv;
    float *out;
    void *ws;
    size_t ws_bytes;
    mf_layout layout;
    uint32_t bits, keep;
} layer;

static void run_encode(void *p) {
    layer *l = (layer *)p;
    mf_sizes s;
    mf_sizes_of(&l->ck.desc, l->keep, &s);
    if (mf_encode(MF_BACKEND_CPU, l->k, l->keep, &l->ck, s.payload_keep, NULL) != MF_OK ||
        mf_encode(MF_BACKEND_CPU, l->v, l->keep, &l->cv, s.payload_keep, NULL) != MF_OK)
        abort();
}

static void run_attend(void *p) {
    layer *l = (layer *)p;
    if (mf_attend(MF_BACKEND_CPU, &l->ck, &l->cv, l->q, GROUP, l->out, l->ws, l->ws_bytes) != MF_OK)
        abort();
}

static void run_dense(void *p) {
    layer *l = (layer *)p;
    if (mf_attend_dense(MF_BACKEND_CPU, l->k, l->v, ROWS, l->tokens, DIM, l->q, GROUP, l->out,
                        l->ws, l->ws_bytes) != MF_OK)
        abort();
}

static void setup(layer *l, mf_layout layout, uint32_t bits, double sparsity) {
    mf_desc d = {MF_KEY, MF_LAYOUT_REFERENCE, 0, ROWS, 0, DIM};
    mf_sizes s;
    d.layout = layout;
    d.bits = bits;
    d.tokens = l->tokens;
    l->layout = layout;
    l->bits = bits;
    mf_keep_count(DIM, sparsity, &l->keep);
    mf_sizes_of(&d, l->keep, &s);
    if (mf_ctensor_alloc(&l->ck, &d, s.payload_keep) != MF_OK)
        abort();
    d.kind = MF_VALUE;
    if (mf_ctensor_alloc(&l->cv, &d, s.payload_keep) != MF_OK)
        abort();
}

static double bytes_per_elem(const layer *l) {
    uint64_t kb, vb;
    mf_ctensor_bytes(&l->ck, &kb);
    mf_ctensor_bytes(&l->cv, &vb);
    return (double)(kb + vb) / (2.0 * ROWS * l->tokens * DIM);
}

int main(int argc, char **argv) {
    uint32_t tokens_list[8] = {4096, 32768};
    int ntok = 2, i, quick = 0, max_threads = omp_get_max_threads();
    const double sparsities[2] = {0.5, 0.7};
    const uint32_t bits_list[2] = {2, 4};
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            quick = 1;
        else if (strcmp(argv[i], "--tokens") == 0 && i + 1 < argc) {
            if (ntok == 2 && tokens_list[0] == 4096 && i == 1)
                ntok = 0;
            if (ntok < 8)
                tokens_list[ntok++] = (uint32_t)atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: mustafar-bench [--tokens T ...] [--quick]\n");
            return 2;
        }
    }
    printf("| T | s | bits | B/elem ref | B/elem native | encode GB/s (%d thr) | threads | "
           "compressed ms | dense fp16 ms | speedup |\n", max_threads);
    printf("|---|---|---|---|---|---|---|---|---|---|\n");
    for (i = 0; i < ntok; i++) {
        layer l;
        size_t n;
        int si, bi;
        memset(&l, 0, sizeof l);
        l.tokens = tokens_list[i];
        n = (size_t)ROWS * l.tokens * DIM;
        l.k = (uint16_t *)malloc(n * 2);
        l.v = (uint16_t *)malloc(n * 2);
        l.q = (uint16_t *)malloc((size_t)ROWS * GROUP * DIM * 2);
        l.out = (float *)malloc((size_t)ROWS * GROUP * DIM * 4);
        if (!l.k || !l.v || !l.q || !l.out)
            return 1;
        fprintf(stderr, "T=%u: synthesizing...\n", l.tokens);
        mf_synth_layer(1, ROWS, l.tokens, DIM, GROUP, l.k, l.v, l.q);
        omp_set_num_threads(max_threads);
        {
            mf_desc d = {MF_KEY, MF_LAYOUT_REFERENCE, 2, ROWS, 0, DIM};
            d.tokens = l.tokens;
            mf_attend_workspace(MF_BACKEND_CPU, &d, GROUP, &l.ws_bytes);
            l.ws = malloc(l.ws_bytes);
        }
        for (si = 0; si < 2; si++)
            for (bi = 0; bi < (quick ? 1 : 2); bi++) {
                double enc, bpe_native, bpe_ref;
                int th, r;
                layer ln = l;
                setup(&ln, MF_LAYOUT_NATIVE, bits_list[bi], sparsities[si]);
                run_encode(&ln);
                bpe_native = bytes_per_elem(&ln);
                mf_ctensor_free(&ln.ck);
                mf_ctensor_free(&ln.cv);
                setup(&l, MF_LAYOUT_REFERENCE, bits_list[bi], sparsities[si]);
                fprintf(stderr, "T=%u s=%.1f b=%u: encoding...\n", l.tokens, sparsities[si],
                        l.bits);
                omp_set_num_threads(max_threads);
                enc = 1e30;
                for (r = 0; r < ROUNDS; r++) {
                    double a = median_time(run_encode, &l, (quick ? 0.2 : 1.0) / ROUNDS);
                    enc = a < enc ? a : enc;
                }
                bpe_ref = bytes_per_elem(&l);
                for (th = 1; th <= max_threads; th++) {
                    double tc, td;
                    omp_set_num_threads(th);
                    /* Rounds alternate the two, and each keeps its best
                     * median: a burst of load on a shared machine then
                     * spoils one round, not the figure. */
                    tc = td = 1e30;
                    for (r = 0; r < ROUNDS; r++) {
                        double a = median_time(run_attend, &l, (quick ? 0.2 : 1.0) / ROUNDS);
                        double b = median_time(run_dense, &l, (quick ? 0.2 : 1.0) / ROUNDS);
                        tc = a < tc ? a : tc;
                        td = b < td ? b : td;
                    }
                    printf("| %u | %.1f | %u | %.4f | %.4f | %.2f | %d | %.3f | %.3f | %.2fx |\n",
                           l.tokens, sparsities[si], l.bits, bpe_ref, bpe_native,
                           4.0 * n / enc / 1e9, th, tc * 1e3, td * 1e3, td / tc);
                    fflush(stdout);
                }
                mf_ctensor_free(&l.ck);
                mf_ctensor_free(&l.cv);
            }
        free(l.k), free(l.v), free(l.q), free(l.out), free(l.ws);
    }
    return 0;
}
