/* gpu_sweep.c - GPU benchmark of compressed decode attention (issue 5).
 *
 * Llama-3-8B-like layers (8 KV heads per batch entry, 32 query heads,
 * D=128) for each batch x T x sparsity x bits: the GPU encoder's
 * throughput (dense fp16 in), the time of one mf_attend_ex call with the
 * tensor-core kernel (host checks, kernels and the tile-range flag read
 * back, so one synchronization, as a caller sees it; the encoder's is the
 * median of 5 K + V pairs), the time per call of a decode loop's queued
 * calls (51 mf_attend_async calls and one mf_attend_wait, best of 3) and
 * the host's share of it (enqueue: until the last call returns; when it
 * is the whole queued time, the host sets the pace), and the compressed
 * bytes. Also the time to encode one 64-token block of every row (an
 * append): as two calls, as one K and V call, and per call of K and V
 * calls queued back to back (20 mf_encode_kv_async calls and one
 * mf_encode_kv_wait, median of 51). Prints CSV; bench/gpu_report.py joins
 * it with bench/sdpa.py's dense baseline into a table and a plot
 * (bench/run-gpu.sh).
 *
 * The keys and values are mf_synth_layer's first 4096 tokens of each row
 * repeated along T: the work per token is that of real synthetic data,
 * without synthesizing gigabytes on the host.
 *
 * usage: mustafar-gpu-sweep [--batch B ...] [--tokens T ...] [--bits 2|4 ...] [--quick]
 * (--quick: s 0.7 only, and 2 bits unless --bits says). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mustafar.h"
#include "synth.h"
#include "timing.h"

enum { KV = 8, GROUP = 4, DIM = 128, BASE = 4096, REPS = 51, WARM = 10, ENC_REPS = 5, QUEUED = 20 };

#define TRY(call)                                                                          \
    do {                                                                                   \
        mf_status st_ = (call);                                                            \
        if (st_ != MF_OK) {                                                                \
            fprintf(stderr, "gpu_sweep: %s: %s (line %d)\n", #call, mf_strerror(st_), __LINE__); \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

/* Device copy of rows x tokens x DIM whose every row repeats the host
 * rows' first BASE tokens. */
static void *repeat_upload(const uint16_t *host, uint32_t rows, uint32_t tokens) {
    size_t row_bytes = (size_t)tokens * DIM * 2;
    char *dev;
    uint32_t r, t;
    TRY(mf_buffer_alloc(MF_BACKEND_CUDA, row_bytes * rows, (void **)&dev));
    for (r = 0; r < rows; r++)
        for (t = 0; t < tokens; t += BASE) {
            uint32_t n = tokens - t < BASE ? tokens - t : BASE;
            TRY(mf_buffer_upload(MF_BACKEND_CUDA, dev + r * row_bytes + (size_t)t * DIM * 2,
                                 host + (size_t)r * BASE * DIM, (size_t)n * DIM * 2));
        }
    return dev;
}

/* Encodes dense (device) into a new device tensor with mf_encode_ex and
 * scratch allocated beforehand; returns the seconds of that call. */
static double encode(mf_kind kind, uint32_t bits, uint32_t rows, uint32_t tokens, uint32_t keep,
                     const void *dense, mf_ctensor *out) {
    mf_desc d = {kind, MF_LAYOUT_REFERENCE, bits, rows, tokens, DIM};
    mf_sizes s;
    size_t wsb;
    void *ws;
    double t0, t;
    TRY(mf_sizes_of(&d, keep, &s));
    TRY(mf_ctensor_alloc_on(MF_BACKEND_CUDA, out, &d, s.payload_keep));
    TRY(mf_encode_workspace(MF_BACKEND_CUDA, &d, &wsb));
    TRY(mf_buffer_alloc(MF_BACKEND_CUDA, wsb, &ws));
    t0 = mf_now();
    TRY(mf_encode_ex(MF_BACKEND_CUDA, dense, keep, out, s.payload_keep, ws, wsb, NULL));
    t = mf_now() - t0;
    TRY(mf_buffer_free(MF_BACKEND_CUDA, ws));
    return t;
}

static void run(uint32_t batch, uint32_t tokens, double sparsity, uint32_t bits,
                const uint16_t *hk, const uint16_t *hv, const uint16_t *hq) {
    uint32_t rows = batch * KV, keep;
    uint64_t kb = 0, vb = 0, nq = (uint64_t)rows * GROUP * DIM;
    void *dk = repeat_upload(hk, rows, tokens), *dv = repeat_upload(hv, rows, tokens);
    void *q, *out, *ws;
    size_t wsb;
    mf_ctensor ck, cv;
    double t[REPS], te[ENC_REPS], tenc, tq, th;
    int i;
    TRY(mf_keep_count(DIM, sparsity, &keep));
    encode(MF_KEY, bits, rows, tokens, keep, dk, &ck); /* warm-up */
    TRY(mf_ctensor_free_on(MF_BACKEND_CUDA, &ck));
    for (i = 0; i < ENC_REPS; i++) { /* the tensors of the last pair are kept */
        if (i) {
            TRY(mf_ctensor_free_on(MF_BACKEND_CUDA, &ck));
            TRY(mf_ctensor_free_on(MF_BACKEND_CUDA, &cv));
        }
        te[i] = encode(MF_KEY, bits, rows, tokens, keep, dk, &ck);
        te[i] += encode(MF_VALUE, bits, rows, tokens, keep, dv, &cv);
    }
    tenc = mf_median(te, ENC_REPS);
    TRY(mf_buffer_free(MF_BACKEND_CUDA, dk));
    TRY(mf_buffer_free(MF_BACKEND_CUDA, dv));
    TRY(mf_ctensor_bytes(&ck, &kb));
    TRY(mf_ctensor_bytes(&cv, &vb));
    TRY(mf_attend_workspace(MF_BACKEND_CUDA, &ck.desc, GROUP, &wsb));
    TRY(mf_buffer_alloc(MF_BACKEND_CUDA, wsb, &ws));
    TRY(mf_buffer_alloc(MF_BACKEND_CUDA, nq * 2, &q));
    TRY(mf_buffer_alloc(MF_BACKEND_CUDA, nq * 4, &out));
    TRY(mf_buffer_upload(MF_BACKEND_CUDA, q, hq, nq * 2));
    for (i = -WARM; i < REPS; i++) {
        double t0 = mf_now();
        TRY(mf_attend_ex(MF_BACKEND_CUDA, MF_KERNEL_TENSOR, &ck, &cv, q, GROUP, out, ws, wsb));
        if (i >= 0)
            t[i] = mf_now() - t0;
    }
    tq = th = 1e30;
    for (i = 0; i < 3; i++) {
        double t0 = mf_now(), t1;
        int r;
        for (r = 0; r < REPS; r++)
            TRY(mf_attend_async(MF_BACKEND_CUDA, MF_KERNEL_TENSOR, &ck, &cv, q, GROUP, out, ws, wsb));
        t1 = (mf_now() - t0) / REPS;
        TRY(mf_attend_wait(MF_BACKEND_CUDA, ws, wsb));
        t0 = (mf_now() - t0) / REPS;
        if (t0 < tq) {
            tq = t0;
            th = t1;
        }
    }
    printf("%u,%u,%.1f,%u,%.2f,%llu,%llu,%.1f,%.2f,%.2f\n", batch, tokens, sparsity, bits,
           mf_median(t, REPS) * 1e6, (unsigned long long)(kb + vb),
           (unsigned long long)rows * tokens * DIM * 4, 4.0 * rows * tokens * DIM / tenc / 1e9,
           tq * 1e6, th * 1e6);
    fflush(stdout);
    TRY(mf_ctensor_free_on(MF_BACKEND_CUDA, &ck));
    TRY(mf_ctensor_free_on(MF_BACKEND_CUDA, &cv));
    TRY(mf_buffer_free(MF_BACKEND_CUDA, ws));
    TRY(mf_buffer_free(MF_BACKEND_CUDA, q));
    TRY(mf_buffer_free(MF_BACKEND_CUDA, out));
}

/* One 64-token block of every row of a batch-8 layer, K and V: what a
 * decoder appends every 64 steps. */
static void append(const uint16_t *hk, const uint16_t *hv) {
    uint32_t rows = 8 * KV, keep;
    void *dk = repeat_upload(hk, rows, 64), *dv = repeat_upload(hv, rows, 64);
    mf_ctensor ck, cv;
    double t[REPS];
    int i;
    TRY(mf_keep_count(DIM, 0.7, &keep));
    for (i = -WARM; i < REPS; i++) {
        double e = encode(MF_KEY, 2, rows, 64, keep, dk, &ck) + encode(MF_VALUE, 2, rows, 64, keep, dv, &cv);
        if (i >= 0)
            t[i] = e;
        TRY(mf_ctensor_free_on(MF_BACKEND_CUDA, &ck));
        TRY(mf_ctensor_free_on(MF_BACKEND_CUDA, &cv));
    }
    printf("# append: one 64-token block of K and V, batch 8 (64 rows), s 0.7, 2 bits: "
           "two mf_encode_ex calls (scratch allocated beforehand), median %.1f us\n",
           mf_median(t, REPS) * 1e6);
    {
        mf_desc kd = {MF_KEY, MF_LAYOUT_REFERENCE, 2, rows, 64, DIM}, vd = kd;
        mf_sizes s;
        size_t wsb;
        void *ws;
        vd.kind = MF_VALUE;
        TRY(mf_sizes_of(&kd, keep, &s));
        TRY(mf_ctensor_alloc_on(MF_BACKEND_CUDA, &ck, &kd, s.payload_keep));
        TRY(mf_ctensor_alloc_on(MF_BACKEND_CUDA, &cv, &vd, s.payload_keep));
        TRY(mf_encode_kv_workspace(MF_BACKEND_CUDA, &kd, &vd, &wsb));
        TRY(mf_buffer_alloc(MF_BACKEND_CUDA, wsb, &ws));
        for (i = -WARM; i < REPS; i++) {
            double t0 = mf_now();
            TRY(mf_encode_kv_ex(MF_BACKEND_CUDA, dk, dv, keep, &ck, &cv, s.payload_keep,
                                s.payload_keep, ws, wsb, NULL));
            if (i >= 0)
                t[i] = mf_now() - t0;
        }
        printf("# append: the same as one mf_encode_kv_ex call, median %.1f us\n",
               mf_median(t, REPS) * 1e6);
        /* A decoder's pipeline: calls queued back to back, one wait. All
         * share one workspace and pair of tensors, which the stream's
         * order keeps apart; only the last call's result is read. */
        for (i = -WARM; i < REPS; i++) {
            double t0 = mf_now();
            int j;
            for (j = 0; j < QUEUED; j++)
                TRY(mf_encode_kv_async(MF_BACKEND_CUDA, dk, dv, keep, &ck, &cv, s.payload_keep,
                                       s.payload_keep, ws, wsb, NULL));
            TRY(mf_encode_kv_wait(MF_BACKEND_CUDA, dk, dv, &ck, &cv, s.payload_keep,
                                  s.payload_keep, ws, wsb, NULL));
            if (i >= 0)
                t[i] = (mf_now() - t0) / QUEUED;
        }
        printf("# append: the same as mf_encode_kv_async calls, %d queued back to back and "
               "one mf_encode_kv_wait, median of %d such runs %.1f us per call\n",
               QUEUED, REPS, mf_median(t, REPS) * 1e6);
        TRY(mf_buffer_free(MF_BACKEND_CUDA, ws));
        TRY(mf_ctensor_free_on(MF_BACKEND_CUDA, &ck));
        TRY(mf_ctensor_free_on(MF_BACKEND_CUDA, &cv));
    }
    TRY(mf_buffer_free(MF_BACKEND_CUDA, dk));
    TRY(mf_buffer_free(MF_BACKEND_CUDA, dv));
}

int main(int argc, char **argv) {
    uint32_t batches[8] = {1, 8, 32}, tokens[16] = {1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072};
    uint32_t widths[8] = {0};
    int nb = 3, nt = 8, nw = 0, a, b, t, quick = 0;
    for (a = 1; a < argc; a++) {
        if (!strcmp(argv[a], "--quick")) {
            quick = 1;
        } else if (!strcmp(argv[a], "--batch") || !strcmp(argv[a], "--tokens") ||
                   !strcmp(argv[a], "--bits")) {
            uint32_t *list = argv[a][3] == 'a' ? batches : argv[a][3] == 'i' ? widths : tokens;
            int *n = argv[a][3] == 'a' ? &nb : argv[a][3] == 'i' ? &nw : &nt;
            for (*n = 0; a + 1 < argc && argv[a + 1][0] != '-' && *n < 8; (*n)++)
                list[*n] = (uint32_t)strtoul(argv[++a], NULL, 10);
        } else {
            fprintf(stderr, "usage: mustafar-gpu-sweep [--batch B ...] [--tokens T ...] [--bits 2|4 ...] "
                            "[--quick]\n");
            return 2;
        }
    }
    if (!mf_backend_available(MF_BACKEND_CUDA)) {
        printf("skipped: no GPU\n");
        return 0;
    }
    printf("batch,tokens,sparsity,bits,attend_us,compressed_bytes,dense_bytes,encode_GBps,"
           "queued_us,enqueue_us\n");
    for (b = 0; b < nb; b++) {
        uint32_t rows = batches[b] * KV;
        uint16_t *hk = malloc((size_t)rows * BASE * DIM * 2), *hv = malloc((size_t)rows * BASE * DIM * 2);
        uint16_t *hq = malloc((size_t)rows * GROUP * DIM * 2);
        if (!hk || !hv || !hq)
            return 1;
        mf_synth_layer(7, rows, BASE, DIM, GROUP, hk, hv, hq);
        if (batches[b] == 8)
            append(hk, hv);
        for (t = 0; t < nt; t++) {
            double s;
            uint32_t bits;
            for (s = 0.5; s < 0.75; s += 0.2)
                for (bits = 2; bits <= 4; bits += 2) {
                    int w, take = nw ? 0 : !quick || bits == 2;
                    for (w = 0; w < nw; w++)
                        take |= widths[w] == bits;
                    if (take && (!quick || s > 0.6))
                        run(batches[b], tokens[t], s, bits, hk, hv, hq);
                }
        }
        free(hk);
        free(hv);
        free(hq);
    }
    return 0;
}
