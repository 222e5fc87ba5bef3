/* bench.c - CPU benchmark on a Llama-3-8B-like layer (8 KV heads, 32 query
 * heads, D=128, batch 1): encoder throughput, decode attention on the
 * compressed cache against dense fp16 attention, at 1 and 2 threads, and
 * compressed bytes per element for both layouts. Prints a Markdown table.
 *
 * usage: mustafar-bench [--tokens T ...] [--quick]
 *        mustafar-bench --loop attend|dense|encode|read BITS REPS [native]
 * Times are the best of three rounds' medians of repeated runs, each
 * after a warm-up of a fifth of its time budget. --loop runs one
 * operation on the T=4096, s=0.7 layer REPS times (for `perf record` and
 * before/after timings; the layer in the reference layout, or the native
 * one) and prints the median, the fastest run and a checksum of the
 * attention output, so a change of results shows. */
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

/* A plain read of the dense K and V (no arithmetic but a sum of 64-bit
 * words): the memory floor under any dense attention of the layer. */
static void run_read(void *p) {
    layer *l = (layer *)p;
    const uint64_t *k = (const uint64_t *)(const void *)l->k, *v = (const uint64_t *)(const void *)l->v;
    long long n = (long long)ROWS * l->tokens * DIM / 4, i;
    uint64_t sum = 0;
#pragma omp parallel for schedule(static) reduction(+ : sum)
    for (i = 0; i < n; i++)
        sum += k[i] + v[i];
    l->out[0] = (float)(sum & 1u);
}

/* The layer's dense K, V and q for T = tokens, its output and attention
 * workspace; 0 when out of memory. */
static int layer_init(layer *l, uint32_t tokens) {
    size_t n = (size_t)ROWS * tokens * DIM;
    mf_desc d = {MF_KEY, MF_LAYOUT_REFERENCE, 2, ROWS, 0, DIM};
    memset(l, 0, sizeof *l);
    l->tokens = d.tokens = tokens;
    l->k = (uint16_t *)malloc(n * 2);
    l->v = (uint16_t *)malloc(n * 2);
    l->q = (uint16_t *)malloc((size_t)ROWS * GROUP * DIM * 2);
    l->out = (float *)calloc((size_t)ROWS * GROUP * DIM, 4);
    if (!l->k || !l->v || !l->q || !l->out ||
        mf_attend_workspace(MF_BACKEND_CPU, &d, GROUP, &l->ws_bytes) != MF_OK ||
        !(l->ws = malloc(l->ws_bytes)))
        return 0;
    fprintf(stderr, "T=%u: synthesizing...\n", tokens);
    mf_synth_layer(1, ROWS, tokens, DIM, GROUP, l->k, l->v, l->q);
    return 1;
}

static void layer_free(layer *l) {
    free(l->k), free(l->v), free(l->q), free(l->out), free(l->ws);
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

/* Best of ROUNDS medians of a and, alternating with it, of b (if any):
 * a burst of load on a shared machine then spoils one round, not the
 * figure. */
static void best_medians(bench_fn a, bench_fn b, void *ctx, double budget, double *ta,
                         double *tb) {
    int r;
    *ta = 1e30;
    if (b)
        *tb = 1e30;
    for (r = 0; r < ROUNDS; r++) {
        double x = median_time(a, ctx, budget / ROUNDS);
        *ta = x < *ta ? x : *ta;
        if (b) {
            x = median_time(b, ctx, budget / ROUNDS);
            *tb = x < *tb ? x : *tb;
        }
    }
}

static double bytes_per_elem(const layer *l) {
    uint64_t kb, vb;
    mf_ctensor_bytes(&l->ck, &kb);
    mf_ctensor_bytes(&l->cv, &vb);
    return (double)(kb + vb) / (2.0 * ROWS * l->tokens * DIM);
}

/* --loop: op on the T = 4096, s = 0.7 layer, reps times, one timing each. */
static int loop(const char *op, uint32_t bits, int reps, mf_layout layout) {
    bench_fn fn = !strcmp(op, "attend") ? run_attend
                  : !strcmp(op, "dense") ? run_dense
                  : !strcmp(op, "encode") ? run_encode
                  : !strcmp(op, "read")   ? run_read
                                          : NULL;
    double *t = (double *)malloc((size_t)(reps > 0 ? reps : 1) * sizeof *t), med, sum = 0.0;
    layer l;
    int i;
    if (!fn || (bits != 0 && bits != 2 && bits != 4) || reps < 1) {
        fprintf(stderr,
                "usage: mustafar-bench --loop attend|dense|encode|read BITS(0|2|4) REPS(>=1) [native]\n");
        free(t);
        return 2;
    }
    if (!t || !layer_init(&l, 4096))
        return 1;
    setup(&l, layout, bits, 0.7);
    run_encode(&l);
    for (i = 0; i < reps; i++) {
        double t0 = omp_get_wtime();
        fn(&l);
        t[i] = omp_get_wtime() - t0;
    }
    med = mf_median(t, reps); /* sorts t: t[0] is the fastest */
    for (i = 0; i < ROWS * GROUP * DIM; i++)
        sum += l.out[i];
    printf("%s bits=%u %s threads=%d: median %.3f ms, fastest %.3f ms, checksum %.9g\n", op, bits,
           layout == MF_LAYOUT_NATIVE ? "native" : "reference", omp_get_max_threads(), med * 1e3,
           t[0] * 1e3, sum);
    mf_ctensor_free(&l.ck);
    mf_ctensor_free(&l.cv);
    layer_free(&l);
    free(t);
    return 0;
}

int main(int argc, char **argv) {
    uint32_t tokens_list[8] = {4096, 32768};
    int ntok = 2, i, quick = 0, max_threads = omp_get_max_threads();
    const double sparsities[2] = {0.5, 0.7};
    const uint32_t bits_list[2] = {2, 4};
    if ((argc == 5 || (argc == 6 && strcmp(argv[5], "native") == 0)) &&
        strcmp(argv[1], "--loop") == 0)
        return loop(argv[2], (uint32_t)atoi(argv[3]), atoi(argv[4]),
                    argc == 6 ? MF_LAYOUT_NATIVE : MF_LAYOUT_REFERENCE);
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            quick = 1;
        else if (strcmp(argv[i], "--tokens") == 0 && i + 1 < argc) {
            if (ntok == 2 && tokens_list[0] == 4096 && i == 1)
                ntok = 0;
            if (ntok < 8)
                tokens_list[ntok++] = (uint32_t)atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: mustafar-bench [--tokens T ...] [--quick]\n"
                            "       mustafar-bench --loop attend|dense|encode|read BITS REPS [native]\n");
            return 2;
        }
    }
    printf("| T | s | bits | B/elem ref | B/elem native | encode GB/s (%d thr) | threads | "
           "compressed ms | dense fp16 ms | speedup |\n", max_threads);
    printf("|---|---|---|---|---|---|---|---|---|---|\n");
    for (i = 0; i < ntok; i++) {
        layer l;
        size_t n = (size_t)ROWS * tokens_list[i] * DIM;
        int si, bi;
        if (!layer_init(&l, tokens_list[i]))
            return 1;
        for (si = 0; si < 2; si++)
            for (bi = 0; bi < (quick ? 1 : 2); bi++) {
                double enc, bpe_native, bpe_ref;
                int th;
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
                best_medians(run_encode, NULL, &l, quick ? 0.2 : 1.0, &enc, NULL);
                bpe_ref = bytes_per_elem(&l);
                for (th = 1; th <= max_threads; th++) {
                    double tc, td;
                    omp_set_num_threads(th);
                    best_medians(run_attend, run_dense, &l, quick ? 0.2 : 1.0, &tc, &td);
                    printf("| %u | %.1f | %u | %.4f | %.4f | %.2f | %d | %.3f | %.3f | %.2fx |\n",
                           l.tokens, sparsities[si], l.bits, bpe_ref, bpe_native,
                           4.0 * n / enc / 1e9, th, tc * 1e3, td * 1e3, td / tc);
                    fflush(stdout);
                }
                mf_ctensor_free(&l.ck);
                mf_ctensor_free(&l.cv);
            }
        layer_free(&l);
    }
    return 0;
}
