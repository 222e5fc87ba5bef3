/*
 * mustafar-diff - differential check of the CUDA backend against the CPU
 * oracle (issue 3). Cases come from a seed; each runs every operation on
 * both backends:
 *   encode    GPU bytes == CPU bytes (or the same error and message)
 *   decode, key_scores, value_combine, attend, attend_dense: bit-identical
 *   tensor    tensor-core attention within backends/cuda/BOUND.md's bound
 *   validate  corrupted tensors: the device validator's status == mf_validate's
 *   self      CPU only: attend(compressed) == attend_dense(decode), bitwise
 * A table per operation follows; any violation prints the seed and shape
 * and makes the exit status 1, as does a run that checked nothing (2: a
 * usage error). Without a GPU only the CPU parts run.
 *
 *   mustafar-diff [--cases N] [--seed S] [--max-tokens T] [--case I] [--jobs J] [--bench]
 *
 * --jobs J runs J worker processes (case i in worker i % J), forked before
 * any CUDA call, and sums their tables. --case I runs the one case that a
 * reproduce line names: random case I from 0, fixed ones -1, -2, ...
 */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "mustafar.h"
#include "synth.h"
#include "timing.h"

/* ---- random numbers ------------------------------------------------- */
typedef struct rng {
    uint64_t s;
} rng;

static uint64_t next(rng *r) { /* splitmix64 */
    uint64_t z = (r->s += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}
static double urand(rng *r) { return (double)(next(r) >> 11) * (1.0 / 9007199254740992.0); }
static uint32_t below(rng *r, uint32_t n) { return (uint32_t)(next(r) % n); }
static double normal(rng *r) {
    double a = urand(r) + 1e-300, b = urand(r);
    return sqrt(-2.0 * log(a)) * cos(6.283185307179586 * b);
}

/* ---- cases ------------------------------------------------------------ */
enum dist {
    D_NORMAL, D_OUTLIER, D_CONST, D_ZERO_ROWS, D_TIES, D_DENORMAL, D_WIDE, D_NONFINITE, NDIST
};
static const char *const dist_name[NDIST] = {"normal", "outlier", "constant", "zero-rows",
                                             "ties", "denormal", "wide", "nonfinite"};

typedef struct kase {
    uint32_t batch, kv, group, dim, tokens, bits;
    mf_layout layout;
    double sparsity;
    int dist;
    uint64_t seed;  /* values */
    int vother;     /* V in the other layout than K */
    int foreign;    /* tiles' scales and zeros rewritten (foreign_params) */
} kase;

/* Regression and edge cases, run before the random ones. */
static const kase fixed[] = {
    {1, 1, 1, 64, 1, 0, MF_LAYOUT_REFERENCE, 0.0, D_NORMAL, 1, 0, 0},
    {1, 1, 4, 128, 63, 2, MF_LAYOUT_NATIVE, 0.5, D_NORMAL, 2, 0, 0},
    {1, 1, 8, 256, 64, 4, MF_LAYOUT_REFERENCE, 0.7, D_OUTLIER, 3, 0, 0},
    {2, 2, 4, 128, 65, 2, MF_LAYOUT_NATIVE, 0.7, D_TIES, 4, 0, 0},
    {1, 2, 64, 64, 200, 4, MF_LAYOUT_REFERENCE, 0.95, D_NORMAL, 5, 0, 0},
    {1, 1, 1, 128, 128, 2, MF_LAYOUT_REFERENCE, 0.0, D_CONST, 6, 0, 0},
    {1, 3, 2, 64, 130, 0, MF_LAYOUT_NATIVE, 1.0, D_NORMAL, 7, 0, 0},
    {1, 1, 4, 256, 1000, 2, MF_LAYOUT_NATIVE, 0.3, D_ZERO_ROWS, 8, 0, 0},
    {1, 1, 4, 128, 333, 4, MF_LAYOUT_REFERENCE, 0.5, D_DENORMAL, 9, 0, 0},
    {2, 1, 8, 64, 640, 0, MF_LAYOUT_REFERENCE, 0.9, D_WIDE, 10, 0, 0},
    {1, 1, 1, 128, 100, 2, MF_LAYOUT_NATIVE, 0.5, D_NONFINITE, 11, 0, 0},
    {1, 1, 4, 128, 4096, 2, MF_LAYOUT_REFERENCE, 0.7, D_OUTLIER, 12, 0, 0},
    /* Regressions. The CPU oracle merged segment states of 3+ segments
     * (over 2048 tokens) in the wrong slots (backends/cpu/attend.c): */
    {1, 1, 1, 256, 2300, 2, MF_LAYOUT_REFERENCE, 0.7, D_NORMAL, 13, 0, 0},
    {1, 2, 4, 128, 3406, 0, MF_LAYOUT_REFERENCE, 0.0, D_OUTLIER, 14, 0, 0},
    /* subnormal scales (the rounding-up step of mf_quant_params): */
    {1, 1, 1, 256, 64, 4, MF_LAYOUT_NATIVE, 0.5, D_DENORMAL, 15, 0, 0},
    {2, 2, 4, 128, 178, 2, MF_LAYOUT_NATIVE, 0.0, D_DENORMAL, 16, 0, 0},
    /* scores too large for any tensor-core guarantee (bound = inf): */
    {1, 3, 4, 256, 416, 0, MF_LAYOUT_NATIVE, 0.0, D_WIDE, 17, 0, 0},
    /* K and V in different layouts; the tensor kernel's work split
     * looked at K's alone (a small layer took blocks that read V as a
     * reference tensor): */
    {1, 2, 4, 128, 1000, 2, MF_LAYOUT_REFERENCE, 0.7, D_NORMAL, 18, 1, 0},
    {2, 1, 4, 256, 130, 2, MF_LAYOUT_NATIVE, 0.5, D_OUTLIER, 19, 1, 0},
    /* scales and zeros no encoder makes (foreign_params), both widths: */
    {2, 2, 4, 128, 700, 2, MF_LAYOUT_REFERENCE, 0.7, D_NORMAL, 20, 0, 1},
    {1, 2, 4, 128, 4100, 4, MF_LAYOUT_NATIVE, 0.5, D_OUTLIER, 21, 1, 1},
    {1, 1, 8, 64, 130, 4, MF_LAYOUT_REFERENCE, 0.3, D_WIDE, 22, 0, 1},
};
#define NFIXED (sizeof fixed / sizeof fixed[0])

static uint32_t pick(rng *r, const uint32_t *v, uint32_t n) { return v[below(r, n)]; }

static kase make_case(uint64_t seed, uint64_t index, uint32_t max_tokens) {
    static const uint32_t dims[] = {64, 128, 256}, groups[] = {1, 4, 8}, bitss[] = {0, 2, 4};
    static const uint32_t edges[] = {1, 63, 64, 65, 127, 128, 129, 192, 257};
    static const double sps[] = {0.0, 0.3, 0.5, 0.7, 0.9, 0.95};
    static const double dw[NDIST] = {0.30, 0.15, 0.07, 0.10, 0.10, 0.10, 0.10, 0.08};
    rng r;
    kase k;
    double x, acc = 0.0;
    int d;
    r.s = seed * UINT64_C(0x100000001b3) ^ (index + 1) * UINT64_C(0x9e3779b97f4a7c15);
    next(&r);
    k.dim = pick(&r, dims, 3);
    k.group = urand(&r) < 0.9 ? pick(&r, groups, 3) : 1 + below(&r, 64);
    k.bits = pick(&r, bitss, 3);
    k.layout = below(&r, 2) ? MF_LAYOUT_NATIVE : MF_LAYOUT_REFERENCE;
    k.sparsity = urand(&r) < 0.8 ? sps[below(&r, 6)] : urand(&r) * 0.95;
    x = urand(&r);
    if (x < 0.86) { /* small: most cases */
        k.batch = 1 + below(&r, 2);
        k.kv = 1 + below(&r, 4);
        k.tokens = urand(&r) < 0.3 ? pick(&r, edges, 9) : 1 + below(&r, 640);
    } else if (x < 0.997) {
        k.batch = 1;
        k.kv = 1 + below(&r, 2);
        k.tokens = 641 + below(&r, 8192 - 640);
    } else { /* large: one row, long history */
        k.batch = k.kv = 1;
        k.group = 1 + below(&r, 4);
        k.tokens = 8193 + below(&r, max_tokens > 8193 ? max_tokens - 8192 : 1);
    }
    if (k.tokens > max_tokens)
        k.tokens = max_tokens;
    x = urand(&r);
    for (d = 0; d < NDIST - 1 && x >= acc + dw[d]; d++)
        acc += dw[d];
    k.dist = d;
    k.seed = next(&r);
    k.vother = (k.seed >> 61) == 0; /* one case in 8, without a draw (seeds keep their cases) */
    k.foreign = k.bits && (k.seed >> 58 & 7u) == 1u; /* one quantized case in 8, the same way */
    return k;
}

static void print_case(FILE *f, const kase *k) {
    fprintf(f, "batch=%u kv=%u group=%u dim=%u tokens=%u bits=%u layout=%s%s sparsity=%.4f dist=%s",
            k->batch, k->kv, k->group, k->dim, k->tokens, k->bits,
            k->layout == MF_LAYOUT_NATIVE ? "native" : "reference",
            k->vother ? " (V the other)" : "", k->sparsity, dist_name[k->dist]);
    if (k->foreign)
        fprintf(f, " foreign");
}

/* Dense [rows, tokens, dim] fp16 of the case's distribution. */
static void fill(const kase *k, rng *r, uint16_t *x, uint64_t n, uint32_t rowlen) {
    uint64_t i;
    double cval = normal(r) * 4.0;
    uint32_t ch0 = below(r, k->dim), ch1 = below(r, k->dim);
    for (i = 0; i < n; i++) {
        uint32_t ch = (uint32_t)(i % k->dim);
        double v = normal(r);
        switch (k->dist) {
        case D_NORMAL: case D_NONFINITE: break;
        case D_OUTLIER: v = (ch == ch0 || ch == ch1) ? v * 200.0 + 50.0 : v; break;
        case D_CONST: v = cval; break;
        case D_ZERO_ROWS: v = ((i / rowlen) % 3 == 0) ? 0.0 : v; break;
        case D_TIES: v = (double)((int)below(r, 5) - 2) * 0.5; break;
        case D_DENORMAL: v = below(r, 2) ? v * 1e-6 : v * 3e-8; break;
        case D_WIDE: { /* sign, exponent, mantissa: C leaves an expression's order open */
            const double sign = below(r, 2) ? 1.0 : -1.0;
            const int e = (int)below(r, 29) - 14;
            v = sign * ldexp(1.0 + urand(r) * 0.99, e);
            break;
        }
        }
        x[i] = mf_fp16_from_float((float)v);
    }
}

/* ---- results table ---------------------------------------------------- */
enum op { OP_ENCODE, OP_DECODE, OP_SCORES, OP_COMBINE, OP_ATTEND, OP_DENSE, OP_TENSOR,
          OP_ASYNC, OP_VALIDATE, OP_CORRUPT, OP_SELF, OP_EXACT, NOPS };
static const char *const op_name[NOPS] = {"encode", "decode", "key_scores", "value_combine",
                                          "attend", "attend_dense", "attend_tensor",
                                          "attend_async", "validate", "attend_corrupt",
                                          "cpu_self", "cpu_exact"};

typedef struct stats {
    uint64_t cases, identical, violations, elems, elems_identical;
    double max_err, max_ratio;
    long long worst_case; /* where max_ratio was seen */
} stats;

/* Failed calls that are no comparison (a case that could not run). */
static uint64_t errors;

#define DEFAULT_MAX_TOKENS 131072

typedef struct ctx {
    stats st[NOPS];
    int gpu;
    uint64_t seed;
    uint32_t max_tokens; /* random cases' tokens depend on it */
    long long index; /* case index; negative: fixed case -index-1 */
    const kase *k;
} ctx;

/* The command that runs c's case alone, and its shape. */
static void print_reproduce(const ctx *c) {
    printf("  reproduce: mustafar-diff --seed %llu --case %lld", (unsigned long long)c->seed, c->index);
    if (c->max_tokens != DEFAULT_MAX_TOKENS)
        printf(" --max-tokens %u", c->max_tokens);
    printf("\n  ");
    print_case(stdout, c->k);
    printf("\n");
}

static void violation(ctx *c, enum op op, const char *what) {
    c->st[op].violations++;
    printf("VIOLATION %s: %s\n", op_name[op], what);
    print_reproduce(c);
}

/* Bitwise comparison of outputs: one case. */
static void compare_bits(ctx *c, enum op op, const void *a, const void *b, size_t bytes) {
    c->st[op].cases++;
    if (memcmp(a, b, bytes) == 0) {
        c->st[op].identical++;
    } else {
        char msg[128];
        size_t i = 0;
        while (((const unsigned char *)a)[i] == ((const unsigned char *)b)[i])
            i++;
        snprintf(msg, sizeof msg, "outputs differ (first at byte %zu)", i);
        violation(c, op, msg);
    }
}

/* Every output within its bound of a reference (NaN never passes);
 * counts outputs bit-identical to `same_as`. */
static void check_bound(ctx *c, enum op op, const float *out, const double *ref, const double *b1,
                        const double *b2, const float *same_as, uint64_t n) {
    stats *t = &c->st[op];
    uint64_t i, same = 0, worst = 0;
    double worst_ratio = 0.0;
    t->cases++;
    for (i = 0; i < n; i++) {
        double bound = b1[i] + (b2 ? b2[i] : 0.0), e = fabs((double)out[i] - ref[i]), ratio;
        if (same_as && memcmp(&out[i], &same_as[i], 4) == 0)
            same++;
        ratio = e <= bound ? (bound > 0.0 ? e / bound : 0.0) : HUGE_VAL;
        if (ratio > worst_ratio)
            worst_ratio = ratio, worst = i;
        if (e > t->max_err && e == e)
            t->max_err = e;
        if (ratio < HUGE_VAL && ratio > t->max_ratio)
            t->max_ratio = ratio, t->worst_case = c->index;
    }
    t->elems += n;
    t->elems_identical += same;
    if (worst_ratio > 1.0) {
        char msg[200];
        snprintf(msg, sizeof msg, "output %llu: %.9g, reference %.9g, bound %.3g",
                 (unsigned long long)worst, out[worst], ref[worst], b1[worst] + (b2 ? b2[worst] : 0.0));
        violation(c, op, msg);
    } else if (same_as && same == n) {
        t->identical++;
    }
}

/* ---- tensors ----------------------------------------------------------- */
static void desc_of(const kase *k, mf_kind kind, mf_desc *d) {
    d->kind = kind;
    d->layout = kind == MF_VALUE && k->vother
                    ? (k->layout == MF_LAYOUT_NATIVE ? MF_LAYOUT_REFERENCE : MF_LAYOUT_NATIVE)
                    : k->layout;
    d->bits = k->bits;
    d->rows = k->batch * k->kv;
    d->tokens = k->tokens;
    d->dim = k->dim;
}

/* mf_encode_kv_async, then (when it queued) mf_encode_kv_wait. */
static mf_status async_pair(void *k, void *v, uint32_t keep, mf_ctensor *gk, mf_ctensor *gv,
                            uint64_t capacity, void *ws, size_t wsb, mf_diag *d) {
    mf_status st = mf_encode_kv_async(MF_BACKEND_CUDA, k, v, keep, gk, gv, capacity, capacity, ws,
                                      wsb, d);
    return st != MF_OK ? st
                       : mf_encode_kv_wait(MF_BACKEND_CUDA, k, v, gk, gv, capacity, capacity, ws,
                                           wsb, d);
}

/* First index where n elements of size sz differ, or n. */
static uint64_t first_diff(const void *a, const void *b, uint64_t n, size_t sz) {
    uint64_t i;
    for (i = 0; i < n; i++)
        if (memcmp((const char *)a + i * sz, (const char *)b + i * sz, sz))
            return i;
    return n;
}

/* Byte equality of two host tensors; else names the first difference. */
static int same_tensor(const mf_ctensor *a, const mf_ctensor *b, char *msg, size_t len) {
    mf_sizes s;
    uint64_t i;
    mf_sizes_of(&a->desc, 0, &s);
    if (memcmp(&a->desc, &b->desc, sizeof a->desc) || a->payload_words != b->payload_words) {
        snprintf(msg, len, "payload_words %llu vs %llu", (unsigned long long)a->payload_words,
                 (unsigned long long)b->payload_words);
        return 0;
    }
#define SAME(arr, n, fmt, cast)                                                              \
    if ((i = first_diff(a->arr, b->arr, n, sizeof *a->arr)) < (n)) {                        \
        snprintf(msg, len, #arr "[%llu]: cpu " fmt " cuda " fmt, (unsigned long long)i,      \
                 (cast)a->arr[i], (cast)b->arr[i]);                                          \
        return 0;                                                                            \
    }
    SAME(bitmaps, s.tiles, "%016llx", unsigned long long)
    SAME(offsets, s.offsets, "%u", unsigned)
    SAME(window, s.window, "%04x", unsigned)
    if (a->desc.bits) {
        SAME(scales, s.tiles, "%04x", unsigned)
        SAME(zeros, s.tiles, "%04x", unsigned)
    }
    SAME(payload, a->payload_words, "%08x", unsigned)
#undef SAME
    return 1;
}

/* Host copy of c with `extra` zeroed payload words of room. */
static mf_status clone(const mf_ctensor *c, uint64_t extra, mf_ctensor *out) {
    mf_sizes s;
    mf_status st;
    mf_sizes_of(&c->desc, 0, &s);
    if ((st = mf_ctensor_alloc(out, &c->desc, c->payload_words + extra)) != MF_OK)
        return st;
    memcpy(out->bitmaps, c->bitmaps, s.tiles * 8);
    memcpy(out->offsets, c->offsets, s.offsets * 4);
    memset(out->payload, 0, (c->payload_words + extra) * 4);
    memcpy(out->payload, c->payload, c->payload_words * 4);
    memcpy(out->window, c->window, s.window * 2);
    if (c->desc.bits) {
        memcpy(out->scales, c->scales, s.tiles * 2);
        memcpy(out->zeros, c->zeros, s.tiles * 2);
    }
    out->payload_words = c->payload_words;
    return MF_OK;
}

/* ---- the tensor-core bound (backends/cuda/BOUND.md) ------------------- */
#define U 5.9604644775390625e-08      /* 2^-24: fp32 unit roundoff */
#define EPS_EXP 2.384185791015625e-07 /* 2^-22: mf_exp's relative error */
#define KAPPA 9.5367431640625e-07     /* 2^-20: one tensor-core block */

static double gam(double n) { return n * U / (1.0 - n * U); }
/* (1+a)(1+b)... - 1 for n repetitions of the factor (1+x). */
static double compose(double acc, double x, double n) { return (1.0 + acc) * pow(1.0 + x, n) - 1.0; }

typedef struct errmodel {
    double eta_a, eta_b, nu, tau;
} errmodel;

static double model_bound(const errmodel *m, double v1, double v0) {
    if (!(m->eta_b < 1.0)) /* scores too large for any guarantee */
        return HUGE_VAL;
    return (1.0 + U) * ((m->eta_a + m->eta_b) * v1 + m->nu * (1.0 + m->eta_a) * v1 + m->tau * v0) /
               (1.0 - m->eta_b) +
           U * v1;
}

/* For every query row r and channel c, at r*dim + c: the exact attention
 * of the fp16 inputs (double), and the bounds of the oracle's and the
 * tensor-core kernel's distance from it. */
static void exact_and_bounds(const kase *k, const uint16_t *dk, const uint16_t *dv,
                             const uint16_t *q, double *exact, double *b_or, double *b_tc) {
    uint32_t rows = k->batch * k->kv, dim = k->dim, T = k->tokens;
    double sigma = (double)(dim == 64 ? 0.125f : dim == 128 ? 0.0883883461356163f : 0.0625f);
    double nch = ceil(T / 64.0), depth = nch > 1 ? ceil(log2(nch)) : 0.0;
    double g_or = gam(dim) * (1.0 + U) + U, nb = dim / 8.0;
    double g_tc = nb * KAPPA * (1.0 + nb * KAPPA) * (1.0 + U) + U, cpw = nch, W = nch + 3.0;
    long long qr;
#pragma omp parallel for schedule(dynamic, 1)
    for (qr = 0; qr < (long long)rows * k->group; qr++) {
        const uint16_t *qq = q + (size_t)qr * dim;
        const uint16_t *kk = dk + (size_t)(qr / k->group) * T * dim, *vv = dv + (size_t)(qr / k->group) * T * dim;
        double *s = malloc(sizeof *s * T), M = -HUGE_VAL, S = 0.0, L = 0.0, rho, step;
        double qf[256];
        errmodel o, t;
        uint32_t i, c;
        for (c = 0; c < dim; c++)
            qf[c] = mf_fp16_to_float(qq[c]);
        for (i = 0; i < T; i++) {
            double a = 0.0, b = 0.0;
            for (c = 0; c < dim; c++) {
                double p = qf[c] * mf_fp16_to_float(kk[(size_t)i * dim + c]);
                a += p;
                b += fabs(p);
            }
            s[i] = sigma * a;
            M = s[i] > M ? s[i] : M;
            S = sigma * b > S ? sigma * b : S;
        }
        for (i = 0; i < T; i++)
            L += (s[i] = exp(s[i] - M));
        rho = expm1(U * 2.0 * S * (1.0 + g_tc + g_or));
        step = compose(compose(rho, EPS_EXP, 1), U, 1); /* one exp factor and its multiply */
        /* oracle: chunk exp, then depth merges */
        o.eta_a = compose(compose(compose(expm1(g_or * S), rho, 1), EPS_EXP, 1), step, depth);
        o.eta_b = compose(o.eta_a, gam(64 + depth), 1) + T * 0x1p-126;
        o.nu = gam(64 + depth);
        o.tau = 0x1p-126;
        /* tensor cores: chunk exp, fp16 P, a rescale per chunk, the final merge */
        t.eta_a = compose(compose(compose(compose(expm1(g_tc * S), rho, 1), EPS_EXP, 1), step, cpw + 1), 0x1p-11, 1);
        t.eta_b = compose(compose(compose(compose(expm1(g_tc * S), rho, 1), EPS_EXP, 1), step, cpw + 1),
                          gam(64 + cpw + W), 1) + T * 0x1p-126;
        t.nu = compose(8.0 * cpw * KAPPA * (1.0 + 8.0 * cpw * KAPPA), gam(cpw + W), 1);
        t.tau = 0x1p-25 + 0x1p-126;
        for (c = 0; c < dim; c++) {
            double v1 = 0.0, v0 = 0.0, y = 0.0;
            for (i = 0; i < T; i++) {
                double v = (double)mf_fp16_to_float(vv[(size_t)i * dim + c]);
                y += s[i] * v;
                v1 += s[i] * fabs(v);
                v0 += fabs(v);
            }
            exact[(size_t)qr * dim + c] = y / L;
            b_or[(size_t)qr * dim + c] = model_bound(&o, v1 / L, v0 / L);
            b_tc[(size_t)qr * dim + c] = model_bound(&t, v1 / L, v0 / L);
        }
        free(s);
    }
}

/* ---- one case ----------------------------------------------------------- */
typedef struct bufs { /* backend arrays of one case */
    void *p[8];
} bufs;

#define TRY(x)                                                                              \
    do {                                                                                    \
        mf_status st_ = (x);                                                                \
        if (st_ != MF_OK) {                                                                 \
            printf("ERROR %s at %s:%d: %s\n", #x, __FILE__, __LINE__, mf_strerror(st_));   \
            print_reproduce(c);                                                             \
            errors++;                                                                       \
            goto out;                                                                       \
        }                                                                                   \
    } while (0)

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "mustafar-diff: out of memory\n");
        exit(2);
    }
    return p;
}

/* Corrupts one field of t (payload has 8 spare words); returns a label. */
static const char *corrupt(rng *r, mf_ctensor *t) {
    mf_sizes s;
    uint32_t what = below(r, 7);
    mf_sizes_of(&t->desc, 0, &s);
    if (!s.tiles && what < 5)
        what = 5;
    switch (what) {
    case 0: t->bitmaps[next(r) % s.tiles] ^= UINT64_C(1) << below(r, 64); return "bitmap bit";
    case 1: t->offsets[next(r) % s.offsets] += 1 + below(r, 3); return "offset";
    case 2:
        if (!t->desc.bits)
            return "none";
        t->scales[next(r) % s.tiles] = below(r, 2) ? 0x7c00u : (below(r, 2) ? 0x0000u : 0xbc00u);
        return "scale";
    case 3:
        if (!t->desc.bits)
            return "none";
        t->zeros[next(r) % s.tiles] = below(r, 2) ? 0x7c00u : 0x7bffu;
        return "zero";
    case 4:
        if (!t->payload_words)
            return "none";
        t->payload[next(r) % t->payload_words] ^= 1u << below(r, 32);
        return "payload bit";
    case 5:
        t->payload_words = below(r, 2) && t->payload_words ? t->payload_words - 1 : t->payload_words + 1;
        return "payload_words";
    default: return "none";
    }
}

/* Scales and zeros of a kind no encoder makes, for the decoders' sake:
 * they must take any tile whose codes all decode finite (mf_validate's
 * rule), not only mf_quant_params's. Scales of 2^-12 to 2 (1 in 16
 * subnormal), with, for half the tensors, a zero with a fraction of
 * either sign (|z| <= 24) on half the tiles, and for the others a whole
 * zero, -0 or one of the codes, on every tile (the tensor-core kernel's
 * 4-bit fast form: regdecode.h). Every code decodes finite. */
static void foreign_params(uint64_t seed, mf_ctensor *t) {
    mf_sizes s;
    rng r;
    uint64_t i;
    int whole;
    mf_sizes_of(&t->desc, 0, &s);
    r.s = seed ^ UINT64_C(0x5851f42d4c957f2d);
    whole = (int)below(&r, 2);
    for (i = 0; t->desc.bits && i < s.tiles; i++) {
        double sc, z;
        int e;
        if (!whole && below(&r, 2))
            continue;
        if (below(&r, 16)) { /* two draws in order (one expression leaves it open) */
            e = (int)below(&r, 13) - 12;
            sc = ldexp(1.0 + urand(&r), e);
        } else {
            sc = ldexp(1.0 + below(&r, 1023), -24);
        }
        if (whole) {
            const uint32_t c = below(&r, 1u << t->desc.bits);
            z = c ? (double)c : (below(&r, 2) ? 0.0 : -0.0);
        } else {
            z = (urand(&r) * 2.0 - 1.0) * 24.0;
        }
        t->scales[i] = mf_fp16_from_float((float)sc);
        t->zeros[i] = mf_fp16_from_float((float)z);
    }
}

/* Encoding into a payload one word short of what the input needs: the
 * same error and message from both backends, and the GPU writes nothing
 * at or past the capacity (the payload beyond it holds a pattern). */
static void capacity_short(ctx *c, const mf_desc *d, const uint16_t *host, void *dev,
                           uint32_t keep, uint64_t need) {
    const uint64_t cap = need - 1, room = need + 64;
    uint32_t *pat = xmalloc(room * 4);
    mf_ctensor hc, gc;
    mf_diag dc, dg;
    mf_status sc, sg;
    uint64_t i;
    memset(&hc, 0, sizeof hc);
    memset(&gc, 0, sizeof gc);
    for (i = 0; i < room; i++)
        pat[i] = 0xa5a5a5a5u;
    TRY(mf_ctensor_alloc(&hc, d, room));
    TRY(mf_ctensor_alloc_on(MF_BACKEND_CUDA, &gc, d, room));
    TRY(mf_buffer_upload(MF_BACKEND_CUDA, gc.payload, pat, room * 4));
    memset(&dc, 0, sizeof dc);
    memset(&dg, 0, sizeof dg);
    sc = mf_encode(MF_BACKEND_CPU, host, keep, &hc, cap, &dc);
    sg = mf_encode(MF_BACKEND_CUDA, dev, keep, &gc, cap, &dg);
    TRY(mf_buffer_download(MF_BACKEND_CUDA, pat, gc.payload, room * 4));
    c->st[OP_ENCODE].cases++;
    for (i = cap; i < room && pat[i] == 0xa5a5a5a5u; i++)
        ;
    if (sc != MF_ERR_BUFFER_SMALL || sc != sg || strcmp(dc.msg, dg.msg) != 0 || i < room) {
        char msg[700];
        snprintf(msg, sizeof msg, "capacity %llu of %llu: cpu %s (%s) vs cuda %s (%s)%s",
                 (unsigned long long)cap, (unsigned long long)need, mf_strerror(sc), dc.msg,
                 mf_strerror(sg), dg.msg, i < room ? ", cuda wrote past the capacity" : "");
        violation(c, OP_ENCODE, msg);
    } else {
        c->st[OP_ENCODE].identical++;
    }
out:
    mf_ctensor_free(&hc);
    mf_ctensor_free_on(MF_BACKEND_CUDA, &gc);
    free(pat);
}

static void run_case(ctx *c) {
    const kase *k = c->k;
    mf_desc kd, vd;
    mf_sizes s;
    uint32_t keep, rows = k->batch * k->kv, group = k->group, dim = k->dim, T = k->tokens;
    uint64_t n = (uint64_t)rows * T * dim, nq = (uint64_t)rows * group * dim, np = (uint64_t)rows * group * T;
    uint16_t *hk = xmalloc(n * 2), *hv = xmalloc(n * 2), *hq = xmalloc(nq * 2), *dk = xmalloc(n * 2),
             *dv = xmalloc(n * 2), *tmp16 = xmalloc(n * 4),
             *dkv = xmalloc(n * 4);
    float *hp = xmalloc(np * 4), *o_cpu = xmalloc(nq * 4), *o_dense = xmalloc(nq * 4),
          *o_gpu = xmalloc(np > nq ? np * 4 : nq * 4), *sc_cpu = xmalloc(np > nq ? np * 4 : nq * 4);
    double *exact = xmalloc(nq * sizeof *exact), *b_or = xmalloc(nq * sizeof *b_or),
           *b_tc = xmalloc(nq * sizeof *b_tc);
    mf_ctensor ck, cv, gk, gv, tk, bad, gbad;
    mf_diag dc, dg;
    mf_status sc, sg;
    size_t ws_cpu = 0, ws_gpu = 0;
    void *wcpu = NULL;
    bufs g;
    rng r;
    uint64_t i;
    int j;
    memset(&ck, 0, sizeof ck), memset(&cv, 0, sizeof cv), memset(&gk, 0, sizeof gk);
    memset(&gv, 0, sizeof gv), memset(&tk, 0, sizeof tk), memset(&bad, 0, sizeof bad);
    memset(&gbad, 0, sizeof gbad), memset(&g, 0, sizeof g);
    r.s = k->seed;
    fill(k, &r, hk, n, T * dim);
    fill(k, &r, hv, n, T * dim);
    if (k->dist == D_NONFINITE) { /* one NaN or infinity, in K or V (draws in order) */
        static const uint16_t nonfinite[] = {0x7c00u, 0xfc00u, 0x7e00u, 0x7c01u};
        const uint16_t bad = nonfinite[below(&r, 4)];
        const uint64_t at = next(&r) % n;
        (below(&r, 2) ? hk : hv)[at] = bad;
    }
    for (i = 0; i < nq; i++)
        hq[i] = mf_fp16_from_float((float)normal(&r));
    for (i = 0; i < np; i++)
        hp[i] = below(&r, 8) ? (float)urand(&r) : 0.0f;
    desc_of(k, MF_KEY, &kd);
    desc_of(k, MF_VALUE, &vd);
    TRY(mf_keep_count(dim, k->sparsity, &keep));
    TRY(mf_sizes_of(&kd, keep, &s));

    /* encode: CPU, then GPU from the same input */
    TRY(mf_ctensor_alloc(&ck, &kd, s.payload_keep));
    TRY(mf_ctensor_alloc(&cv, &vd, s.payload_keep));
    memset(&dc, 0, sizeof dc);
    sc = mf_encode(MF_BACKEND_CPU, hk, keep, &ck, s.payload_keep, &dc);
    if (sc == MF_OK)
        sc = mf_encode(MF_BACKEND_CPU, hv, keep, &cv, s.payload_keep, &dc);
    if (c->gpu) {
        mf_ctensor hk2, hv2;
        TRY(mf_buffer_alloc(MF_BACKEND_CUDA, n * 2, &g.p[0]));
        TRY(mf_buffer_alloc(MF_BACKEND_CUDA, n * 2, &g.p[1]));
        TRY(mf_buffer_upload(MF_BACKEND_CUDA, g.p[0], hk, n * 2));
        TRY(mf_buffer_upload(MF_BACKEND_CUDA, g.p[1], hv, n * 2));
        TRY(mf_ctensor_alloc_on(MF_BACKEND_CUDA, &gk, &kd, s.payload_keep));
        TRY(mf_ctensor_alloc_on(MF_BACKEND_CUDA, &gv, &vd, s.payload_keep));
        memset(&dg, 0, sizeof dg);
        if (c->index % 2) { /* K and V in one call, caller's scratch; queued for 1 in 2 */
            size_t wsb;
            void *ws;
            TRY(mf_encode_kv_workspace(MF_BACKEND_CUDA, &kd, &vd, &wsb));
            TRY(mf_buffer_alloc(MF_BACKEND_CUDA, wsb, &ws));
            if (c->index % 4 == 1) {
                sg = mf_encode_kv_ex(MF_BACKEND_CUDA, g.p[0], g.p[1], keep, &gk, &gv,
                                     s.payload_keep, s.payload_keep, ws, wsb, &dg);
            } else {
                /* Queued calls rely on a workspace that launches leave
                 * clean. 1 in 8: a dirty one (all bits set, or an error
                 * key naming no input element) is reported and cleared,
                 * without a hang. Then two rounds on the same
                 * workspace, the first with K's and V's inputs swapped
                 * (other flags, other errors): the second, compared, must
                 * not see the first's. */
                if (c->index % 8 == 7) {
                    mf_diag d1;
                    unsigned char *junk = (unsigned char *)malloc(wsb);
                    if (!junk)
                        abort();
                    /* all bits set, or a clean one but for K's first error
                     * key, 1: stored complemented, the element 2^64 - 2 */
                    memset(junk, c->index % 16 == 7 ? 0xff : 0, wsb);
                    junk[0] = c->index % 16 == 7 ? 0xff : 1;
                    TRY(mf_buffer_upload(MF_BACKEND_CUDA, ws, junk, wsb));
                    free(junk);
                    memset(&d1, 0, sizeof d1);
                    /* (a true non-finite K window element replaces the key) */
                    if (async_pair(g.p[0], g.p[1], keep, &gk, &gv, s.payload_keep, ws, wsb, &d1) !=
                            MF_ERR_ARG &&
                        (c->index % 16 == 7 || sc == MF_OK))
                        violation(c, OP_ENCODE,
                                  "a queued encode on a dirty workspace not reported");
                }
                async_pair(g.p[1], g.p[0], keep, &gk, &gv, s.payload_keep, ws, wsb, NULL);
                sg = async_pair(g.p[0], g.p[1], keep, &gk, &gv, s.payload_keep, ws, wsb, &dg);
            }
            if (c->index % 4 != 1 && /* the queued pair's own checks */
                (mf_encode_kv_async(MF_BACKEND_CUDA, g.p[0], g.p[1], keep, &gk, &gv,
                                    s.payload_keep, s.payload_keep, NULL, 0, NULL) != MF_ERR_NULL ||
                 mf_encode_kv_wait(MF_BACKEND_CUDA, g.p[0], g.p[1], &gk, &gv, s.payload_keep,
                                   s.payload_keep, ws, 8, NULL) != MF_ERR_BUFFER_SMALL))
                violation(c, OP_ENCODE, "mf_encode_kv_async without a workspace or "
                                        "mf_encode_kv_wait with 8 bytes of it accepted");
            TRY(mf_buffer_free(MF_BACKEND_CUDA, ws));
        } else { /* K through mf_encode (own scratch), V through mf_encode_ex */
            sg = mf_encode(MF_BACKEND_CUDA, g.p[0], keep, &gk, s.payload_keep, &dg);
            if (sg == MF_OK) {
                size_t wsb;
                void *ws;
                TRY(mf_encode_workspace(MF_BACKEND_CUDA, &vd, &wsb));
                TRY(mf_buffer_alloc(MF_BACKEND_CUDA, wsb, &ws));
                sg = mf_encode_ex(MF_BACKEND_CUDA, g.p[1], keep, &gv, s.payload_keep, ws, wsb, &dg);
                TRY(mf_buffer_free(MF_BACKEND_CUDA, ws));
            }
        }
        c->st[OP_ENCODE].cases++;
        if (sc != sg || strcmp(dc.msg, dg.msg) != 0) {
            char msg[600];
            snprintf(msg, sizeof msg, "cpu %s (%s) vs cuda %s (%s)", mf_strerror(sc), dc.msg,
                     mf_strerror(sg), dg.msg);
            violation(c, OP_ENCODE, msg);
        } else if (sc == MF_OK) {
            TRY(mf_ctensor_download(MF_BACKEND_CUDA, &gk, &hk2));
            TRY(mf_ctensor_download(MF_BACKEND_CUDA, &gv, &hv2));
            char msg[200] = "";
            if (same_tensor(&ck, &hk2, msg, sizeof msg) && same_tensor(&cv, &hv2, msg, sizeof msg))
                c->st[OP_ENCODE].identical++;
            else
                violation(c, OP_ENCODE, msg);
            mf_ctensor_free(&hk2);
            mf_ctensor_free(&hv2);
        } else {
            c->st[OP_ENCODE].identical++; /* same rejection, same message */
        }
        if (sc == MF_OK && ck.payload_words > 0)
            capacity_short(c, &kd, hk, g.p[0], keep, ck.payload_words);
        mf_ctensor_free_on(MF_BACKEND_CUDA, &gk);
        mf_ctensor_free_on(MF_BACKEND_CUDA, &gv);
    }
    if (sc != MF_OK) {
        if (k->dist != D_NONFINITE) {
            printf("ERROR: CPU encode failed: %s (%s)\n", mf_strerror(sc), dc.msg);
            errors++;
        }
        goto out;
    }
    if (k->foreign) { /* from here on every backend reads these */
        foreign_params(k->seed, &ck);
        foreign_params(k->seed + 1, &cv);
        TRY(mf_validate(&ck, NULL));
        TRY(mf_validate(&cv, NULL));
    }

    /* CPU: decode, attention both ways (the oracle's self-consistency) */
    TRY(mf_decode(MF_BACKEND_CPU, &ck, dk, NULL));
    TRY(mf_decode(MF_BACKEND_CPU, &cv, dv, NULL));
    TRY(mf_attend_workspace(MF_BACKEND_CPU, &kd, group, &ws_cpu));
    wcpu = xmalloc(ws_cpu);
    TRY(mf_attend(MF_BACKEND_CPU, &ck, &cv, hq, group, o_cpu, wcpu, ws_cpu));
    TRY(mf_attend_dense(MF_BACKEND_CPU, dk, dv, rows, T, dim, hq, group, o_dense, wcpu, ws_cpu));
    compare_bits(c, OP_SELF, o_cpu, o_dense, nq * 4);
    /* the oracle against exact attention, within its own bound */
    exact_and_bounds(k, dk, dv, hq, exact, b_or, b_tc);
    check_bound(c, OP_EXACT, o_cpu, exact, b_or, NULL, NULL, nq);
    if (!c->gpu)
        goto out;

    /* GPU on the CPU's compressed tensors */
    TRY(mf_ctensor_upload(MF_BACKEND_CUDA, &ck, &gk));
    TRY(mf_ctensor_upload(MF_BACKEND_CUDA, &cv, &gv));
    /* K and V decoded into one buffer: one case */
    TRY(mf_decode(MF_BACKEND_CUDA, &gk, g.p[0], NULL));
    TRY(mf_buffer_download(MF_BACKEND_CUDA, tmp16, g.p[0], n * 2));
    TRY(mf_decode(MF_BACKEND_CUDA, &gv, g.p[1], NULL));
    TRY(mf_buffer_download(MF_BACKEND_CUDA, tmp16 + n, g.p[1], n * 2));
    memcpy(dkv, dk, n * 2);
    memcpy(dkv + n, dv, n * 2);
    compare_bits(c, OP_DECODE, dkv, tmp16, n * 4);

    TRY(mf_buffer_alloc(MF_BACKEND_CUDA, nq * 2, &g.p[2]));
    TRY(mf_buffer_alloc(MF_BACKEND_CUDA, np * 4, &g.p[3]));
    TRY(mf_buffer_alloc(MF_BACKEND_CUDA, (np > nq ? np : nq) * 4, &g.p[4]));
    TRY(mf_buffer_upload(MF_BACKEND_CUDA, g.p[2], hq, nq * 2));
    TRY(mf_buffer_upload(MF_BACKEND_CUDA, g.p[3], hp, np * 4));

    TRY(mf_key_scores(MF_BACKEND_CPU, &ck, hq, group, sc_cpu));
    TRY(mf_key_scores(MF_BACKEND_CUDA, &gk, g.p[2], group, g.p[4]));
    TRY(mf_buffer_download(MF_BACKEND_CUDA, o_gpu, g.p[4], np * 4));
    compare_bits(c, OP_SCORES, sc_cpu, o_gpu, np * 4);

    TRY(mf_value_combine(MF_BACKEND_CPU, &cv, hp, group, sc_cpu));
    TRY(mf_value_combine(MF_BACKEND_CUDA, &gv, g.p[3], group, g.p[4]));
    TRY(mf_buffer_download(MF_BACKEND_CUDA, o_gpu, g.p[4], nq * 4));
    compare_bits(c, OP_COMBINE, sc_cpu, o_gpu, nq * 4);

    TRY(mf_attend_workspace(MF_BACKEND_CUDA, &kd, group, &ws_gpu));
    TRY(mf_buffer_alloc(MF_BACKEND_CUDA, ws_gpu, &g.p[5]));
    TRY(mf_attend(MF_BACKEND_CUDA, &gk, &gv, g.p[2], group, g.p[4], g.p[5], ws_gpu));
    TRY(mf_buffer_download(MF_BACKEND_CUDA, o_gpu, g.p[4], nq * 4));
    compare_bits(c, OP_ATTEND, o_cpu, o_gpu, nq * 4);

    TRY(mf_buffer_upload(MF_BACKEND_CUDA, g.p[0], dk, n * 2));
    TRY(mf_buffer_upload(MF_BACKEND_CUDA, g.p[1], dv, n * 2));
    TRY(mf_attend_dense(MF_BACKEND_CUDA, g.p[0], g.p[1], rows, T, dim, g.p[2], group, g.p[4],
                        g.p[5], ws_gpu));
    TRY(mf_buffer_download(MF_BACKEND_CUDA, o_gpu, g.p[4], nq * 4));
    compare_bits(c, OP_DENSE, o_dense, o_gpu, nq * 4);

    /* tensor cores: within the bound of every output */
    TRY(mf_attend_ex(MF_BACKEND_CUDA, MF_KERNEL_TENSOR, &gk, &gv, g.p[2], group, g.p[4], g.p[5],
                     ws_gpu));
    TRY(mf_buffer_download(MF_BACKEND_CUDA, o_gpu, g.p[4], nq * 4));
    {
        double *ref = xmalloc(nq * sizeof *ref);
        for (i = 0; i < nq; i++)
            ref[i] = o_cpu[i];
        /* |tensor - oracle| <= |tensor - exact| + |exact - oracle| */
        check_bound(c, OP_TENSOR, o_gpu, ref, b_tc, b_or, o_cpu, nq);
        free(ref);
    }
    /* the async call: the same bits as the waiting one (each kernel) */
    TRY(mf_buffer_alloc(MF_BACKEND_CUDA, nq * 4, &g.p[6]));
    for (j = 0; j < 2; j++) {
        TRY(mf_attend_ex(MF_BACKEND_CUDA, (mf_kernel)j, &gk, &gv, g.p[2], group, g.p[4], g.p[5],
                         ws_gpu));
        TRY(mf_buffer_download(MF_BACKEND_CUDA, o_dense, g.p[4], nq * 4));
        TRY(mf_attend_async(MF_BACKEND_CUDA, (mf_kernel)j, &gk, &gv, g.p[2], group, g.p[6],
                            g.p[5], ws_gpu));
        TRY(mf_attend_wait(MF_BACKEND_CUDA, g.p[5], ws_gpu));
        TRY(mf_buffer_download(MF_BACKEND_CUDA, o_gpu, g.p[6], nq * 4));
        compare_bits(c, OP_ASYNC, o_dense, o_gpu, nq * 4);
    }

    /* corrupted copies: the device validator agrees with mf_validate */
    for (j = 0; j < 2; j++) {
        const char *what;
        TRY(clone(j ? &cv : &ck, 8, &bad));
        what = corrupt(&r, &bad);
        sc = mf_validate(&bad, NULL);
        TRY(mf_ctensor_upload(MF_BACKEND_CUDA, &bad, &gbad));
        sg = mf_decode(MF_BACKEND_CUDA, &gbad, g.p[0], NULL);
        c->st[OP_VALIDATE].cases++;
        if (sc == sg) {
            c->st[OP_VALIDATE].identical++;
        } else {
            char msg[200];
            snprintf(msg, sizeof msg, "%s corrupted (%s): mf_validate %s, device %s", j ? "V" : "K",
                     what, mf_strerror(sc), mf_strerror(sg));
            violation(c, OP_VALIDATE, msg);
        }
        /* compute ops check only structure and tile ranges: same status,
         * and the same bits whatever the corrupted tensor holds */
        sc = mf_attend(MF_BACKEND_CPU, j ? &ck : &bad, j ? &bad : &cv, hq, group, o_dense, wcpu,
                       ws_cpu);
        sg = mf_attend(MF_BACKEND_CUDA, j ? &gk : &gbad, j ? &gbad : &gv, g.p[2], group, g.p[4],
                       g.p[5], ws_gpu);
        {
            /* async: the corrupted call's range error outlives a clean
             * call after it, until mf_attend_wait reports and clears it */
            mf_status sa = mf_attend_async(MF_BACKEND_CUDA, (mf_kernel)j, j ? &gk : &gbad,
                                           j ? &gbad : &gv, g.p[2], group, g.p[6], g.p[5], ws_gpu);
            mf_status s2 = mf_attend_async(MF_BACKEND_CUDA, (mf_kernel)j, &gk, &gv, g.p[2], group,
                                           g.p[6], g.p[5], ws_gpu);
            mf_status w1 = mf_attend_wait(MF_BACKEND_CUDA, g.p[5], ws_gpu), w2;
            if (sa == MF_OK)
                sa = w1;
            s2 = s2 == MF_OK ? mf_attend_async(MF_BACKEND_CUDA, (mf_kernel)j, &gk, &gv, g.p[2],
                                               group, g.p[6], g.p[5], ws_gpu)
                             : s2;
            w2 = mf_attend_wait(MF_BACKEND_CUDA, g.p[5], ws_gpu);
            c->st[OP_ASYNC].cases++;
            if (sa == sg && s2 == MF_OK && w2 == MF_OK) {
                c->st[OP_ASYNC].identical++;
            } else {
                char msg[200];
                snprintf(msg, sizeof msg, "%s corrupted (%s), async %s kernel: %s, waiting call "
                         "%s; then clean %s, %s", j ? "V" : "K", what, j ? "tensor" : "reference",
                         mf_strerror(sa), mf_strerror(sg), mf_strerror(s2), mf_strerror(w2));
                violation(c, OP_ASYNC, msg);
            }
        }
        if (sc != sg) {
            char msg[200];
            c->st[OP_CORRUPT].cases++;
            snprintf(msg, sizeof msg, "%s corrupted (%s): cpu %s, cuda %s", j ? "V" : "K", what,
                     mf_strerror(sc), mf_strerror(sg));
            violation(c, OP_CORRUPT, msg);
        } else if (sc == MF_OK) {
            /* bitwise, except that any NaN equals any NaN: invalid scales
             * make NaNs whose payload bits no contract fixes */
            uint64_t e;
            TRY(mf_buffer_download(MF_BACKEND_CUDA, o_gpu, g.p[4], nq * 4));
            for (e = 0; e < nq; e++)
                if (memcmp(&o_dense[e], &o_gpu[e], 4) && !(o_dense[e] != o_dense[e] && o_gpu[e] != o_gpu[e]))
                    break;
            c->st[OP_CORRUPT].cases++;
            if (e == nq) {
                c->st[OP_CORRUPT].identical++;
            } else {
                char msg[200];
                snprintf(msg, sizeof msg, "%s corrupted (%s): output %llu cpu %.9g cuda %.9g",
                         j ? "V" : "K", what, (unsigned long long)e, o_dense[e], o_gpu[e]);
                violation(c, OP_CORRUPT, msg);
            }
        } else {
            c->st[OP_CORRUPT].cases++, c->st[OP_CORRUPT].identical++;
        }
        mf_ctensor_free_on(MF_BACKEND_CUDA, &gbad);
        mf_ctensor_free(&bad);
    }
out:
    for (j = 0; j < 8; j++)
        mf_buffer_free(MF_BACKEND_CUDA, g.p[j]);
    mf_ctensor_free_on(MF_BACKEND_CUDA, &gk);
    mf_ctensor_free_on(MF_BACKEND_CUDA, &gv);
    mf_ctensor_free_on(MF_BACKEND_CUDA, &gbad);
    mf_ctensor_free(&bad);
    mf_ctensor_free(&ck);
    mf_ctensor_free(&cv);
    free(hk), free(hv), free(hq), free(dk), free(dv), free(tmp16), free(dkv), free(hp), free(o_cpu);
    free(o_dense), free(o_gpu), free(sc_cpu), free(exact), free(b_or), free(b_tc), free(wcpu);
}

/* ---- benchmark: one decode layer, batch 8 ------------------------------- */
static int bench(void) {
    const uint32_t rows = 64, group = 4, dim = 128, T = 32768, reps = 30;
    uint64_t n = (uint64_t)rows * T * dim, nq = (uint64_t)rows * group * dim;
    uint16_t *k = xmalloc(n * 2), *v = xmalloc(n * 2), *q = xmalloc(nq * 2);
    float *oc = xmalloc(nq * 4), *og = xmalloc(nq * 4);
    mf_desc kd = {MF_KEY, MF_LAYOUT_REFERENCE, 2, rows, T, dim}, vd = kd;
    mf_ctensor ck, cv, gk, gv;
    mf_sizes s;
    uint32_t keep, kern;
    size_t ws;
    void *gq, *go, *gw, *cw;
    double t[30], med, best, maxerr = 0.0;
    uint64_t i, same = 0;
    vd.kind = MF_VALUE;
    mf_synth_layer(7, rows, T, dim, group, k, v, q);
    mf_keep_count(dim, 0.7, &keep);
    mf_sizes_of(&kd, keep, &s);
    if (mf_ctensor_alloc(&ck, &kd, s.payload_keep) || mf_ctensor_alloc(&cv, &vd, s.payload_keep) ||
        mf_encode(MF_BACKEND_CPU, k, keep, &ck, s.payload_keep, NULL) ||
        mf_encode(MF_BACKEND_CPU, v, keep, &cv, s.payload_keep, NULL) ||
        mf_attend_workspace(MF_BACKEND_CPU, &kd, group, &ws))
        return 2;
    cw = xmalloc(ws);
    if (mf_attend(MF_BACKEND_CPU, &ck, &cv, q, group, oc, cw, ws) ||
        mf_ctensor_upload(MF_BACKEND_CUDA, &ck, &gk) || mf_ctensor_upload(MF_BACKEND_CUDA, &cv, &gv) ||
        mf_attend_workspace(MF_BACKEND_CUDA, &kd, group, &ws) ||
        mf_buffer_alloc(MF_BACKEND_CUDA, ws, &gw) || mf_buffer_alloc(MF_BACKEND_CUDA, nq * 2, &gq) ||
        mf_buffer_alloc(MF_BACKEND_CUDA, nq * 4, &go) || mf_buffer_upload(MF_BACKEND_CUDA, gq, q, nq * 2))
        return 2;
    {
        uint64_t kb = 0, vb = 0;
        mf_ctensor_bytes(&ck, &kb);
        mf_ctensor_bytes(&cv, &vb);
        printf("bench: batch 8 x 8 KV heads, group 4, D 128, T 32768, sparsity 0.7, 2-bit; "
               "compressed K+V %.1f MB\n", (double)(kb + vb) * 1e-6);
    }
    for (kern = 0; kern < 2; kern++) {
        for (i = 0; i < reps + 3; i++) {
            double t0 = mf_now();
            if (mf_attend_ex(MF_BACKEND_CUDA, (mf_kernel)kern, &gk, &gv, gq, group, go, gw, ws))
                return 2;
            if (i >= 3)
                t[i - 3] = mf_now() - t0;
        }
        med = mf_median(t, (int)reps); /* sorted: t[0] is the minimum */
        mf_buffer_download(MF_BACKEND_CUDA, og, go, nq * 4);
        for (i = 0, same = 0, maxerr = 0.0; i < nq; i++) {
            double e = fabs((double)og[i] - oc[i]);
            same += memcmp(&og[i], &oc[i], 4) == 0;
            maxerr = e > maxerr ? e : maxerr;
        }
        printf("  %-9s median %8.1f us (one mf_attend_ex call: host checks, kernels, range flag), min %8.1f us; "
               "bit-identical %.4f, max |err| %.3g\n",
               kern ? "tensor" : "reference", med * 1e6, t[0] * 1e6, (double)same / nq, maxerr);
    }
    /* a decode loop's cost per call: reps tensor calls queued, one wait */
    for (i = 0, best = 1e30; i < 3; i++) {
        double t0 = mf_now();
        uint64_t r;
        for (r = 0; r < reps; r++)
            if (mf_attend_async(MF_BACKEND_CUDA, MF_KERNEL_TENSOR, &gk, &gv, gq, group, go, gw, ws))
                return 2;
        if (mf_attend_wait(MF_BACKEND_CUDA, gw, ws))
            return 2;
        t0 = (mf_now() - t0) / reps;
        best = t0 < best ? t0 : best;
    }
    printf("  tensor    async %8.1f us per call (%u mf_attend_async calls, one mf_attend_wait; "
           "best of 3)\n", best * 1e6, reps);
    return 0;
}

/* Runs the cases of shard `shard` of `shards` into c: the fixed ones and
 * `cases` random ones, or case `only` alone (LLONG_MIN: all). */
static void run_shard(ctx *c, uint64_t cases, long long only, int shard, int shards, double t0) {
    uint64_t idx, first = 0, end = NFIXED + cases;
    if (only != LLONG_MIN)
        first = only < 0 ? (uint64_t)(-only - 1) : NFIXED + (uint64_t)only, end = first + 1;
    for (idx = first; idx < end; idx++) {
        kase k;
        long long index = idx < NFIXED ? -(long long)idx - 1 : (long long)(idx - NFIXED);
        if ((int)(idx % (uint64_t)shards) != shard)
            continue;
        k = idx < NFIXED ? fixed[idx] : make_case(c->seed, idx - NFIXED, c->max_tokens);
        if (k.tokens > c->max_tokens)
            continue;
        c->k = &k;
        c->index = index;
        run_case(c);
        if ((idx + 1) % 1000 == 0)
            fprintf(stderr, "  %llu cases, %.0f s\n", (unsigned long long)idx + 1, mf_now() - t0);
    }
}

/* What a worker sends back. */
typedef struct report {
    stats st[NOPS];
    uint64_t errors;
    int gpu;
} report;

static void add_report(ctx *c, const report *r) {
    int o;
    for (o = 0; o < NOPS; o++) {
        stats *a = &c->st[o];
        const stats *b = &r->st[o];
        a->cases += b->cases, a->identical += b->identical, a->violations += b->violations;
        a->elems += b->elems, a->elems_identical += b->elems_identical;
        a->max_err = b->max_err > a->max_err ? b->max_err : a->max_err;
        if (b->max_ratio > a->max_ratio)
            a->max_ratio = b->max_ratio, a->worst_case = b->worst_case;
    }
    errors += r->errors;
    c->gpu |= r->gpu;
}

#define MAX_JOBS 64
/* Case indices are printed as long long, fixed ones below zero. */
#define MAX_CASES ((uint64_t)LLONG_MAX - NFIXED)

static void usage(FILE *f) {
    fprintf(f, "usage: mustafar-diff [--cases N] [--seed S] [--max-tokens T] [--case I] [--jobs J] "
               "[--bench]\n"
               "  --cases N       random cases after the %u fixed ones (default 10000)\n"
               "  --seed S        the seed the random cases come from (default 1)\n"
               "  --max-tokens T  longest history, 1 to %u (default %u)\n"
               "  --case I        only case I of the seed, as a reproduce line names it:\n"
               "                  random cases from 0, fixed ones -1 to -%u\n"
               "  --jobs J        worker processes, 1 to %d (default 1)\n"
               "  --bench         time one batch-8 layer instead (needs a GPU)\n"
               "exit status: 0 all checks passed, 1 failed, 2 usage error\n",
            (unsigned)NFIXED, (unsigned)UINT32_MAX, DEFAULT_MAX_TOKENS, (unsigned)NFIXED, MAX_JOBS);
}

/* v as decimal digits alone, in [lo, hi]: strtoull would take a sign,
 * spaces, or no digits at all. */
static int whole(const char *v, uint64_t lo, uint64_t hi, uint64_t *out) {
    char *end;
    unsigned long long x;
    if (!isdigit((unsigned char)v[0]))
        return 0;
    errno = 0;
    x = strtoull(v, &end, 10);
    if (*end || errno || x < lo || x > hi)
        return 0;
    *out = x;
    return 1;
}

/* Option opt's value v (NULL: none given); else says what it wants. */
static int value(const char *opt, const char *v, uint64_t lo, uint64_t hi, uint64_t *out) {
    if (v && whole(v, lo, hi, out))
        return 1;
    fprintf(stderr, "mustafar-diff: %s wants a whole number from %llu to %llu%s%s\n", opt,
            (unsigned long long)lo, (unsigned long long)hi, v ? ", not " : "", v ? v : "");
    return 0;
}

/* --case I: random case I >= 0, or fixed case -1 to -NFIXED. */
static int case_value(const char *v, long long *only) {
    uint64_t x;
    int neg = v && v[0] == '-';
    if (v && whole(v + neg, neg, neg ? NFIXED : MAX_CASES - 1, &x)) {
        *only = neg ? -(long long)x : (long long)x;
        return 1;
    }
    fprintf(stderr, "mustafar-diff: --case wants a random case 0 to %llu or a fixed case -1 to "
                    "-%u%s%s\n", (unsigned long long)(MAX_CASES - 1), (unsigned)NFIXED,
            v ? ", not " : "", v ? v : "");
    return 0;
}

int main(int argc, char **argv) {
    uint64_t cases = 10000, seed = 1, x = 0;
    uint32_t max_tokens = DEFAULT_MAX_TOKENS;
    long long only = LLONG_MIN;
    uint64_t checked = 0;
    int a, o, j, jobs = 1, bad = 0, timing = 0, cases_set = 0, fds[MAX_JOBS];
    double t0 = mf_now();
    ctx c;
    setvbuf(stdout, NULL, _IOLBF, 0); /* workers' lines stay whole */
    memset(&c, 0, sizeof c);
    for (a = 1; a < argc; a++) {
        const char *opt = argv[a], *v = a + 1 < argc ? argv[a + 1] : NULL;
        int ok;
        if (!strcmp(opt, "--help") || !strcmp(opt, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(opt, "--bench")) {
            timing = 1;
            continue;
        } else if (!strcmp(opt, "--cases")) {
            ok = value(opt, v, 0, MAX_CASES, &cases);
            cases_set = 1;
        } else if (!strcmp(opt, "--seed")) {
            ok = value(opt, v, 0, UINT64_MAX, &seed);
        } else if (!strcmp(opt, "--max-tokens")) {
            ok = value(opt, v, 1, UINT32_MAX, &x);
            max_tokens = (uint32_t)x;
        } else if (!strcmp(opt, "--case")) {
            ok = case_value(v, &only);
        } else if (!strcmp(opt, "--jobs")) {
            ok = value(opt, v, 1, MAX_JOBS, &x);
            jobs = (int)x;
        } else {
            fprintf(stderr, "mustafar-diff: unknown option %s\n", opt);
            usage(stderr);
            return 2;
        }
        if (!ok)
            return 2;
        a++;
    }
    /* --case alone runs any case of the seed; with --cases, one of the run */
    if (only >= 0 && cases_set && (uint64_t)only >= cases) {
        fprintf(stderr, "mustafar-diff: --case %lld is outside --cases %llu (random cases count "
                        "from 0)\n", only, (unsigned long long)cases);
        return 2;
    }
    if (only < 0 && only != LLONG_MIN && fixed[-only - 1].tokens > max_tokens) {
        fprintf(stderr, "mustafar-diff: fixed case %lld has %u tokens, over --max-tokens %u\n", only,
                fixed[-only - 1].tokens, max_tokens);
        return 2;
    }
    if (timing) {
        if (!mf_backend_available(MF_BACKEND_CUDA)) {
            printf("bench skipped: no GPU (%s)\n", "mf_backend_available(cuda) is 0");
            return 0;
        }
        return bench();
    }
    c.seed = seed;
    if (only != LLONG_MIN)
        printf("mustafar-diff: seed %llu, case %lld, max tokens %u, %d jobs\n",
               (unsigned long long)seed, only, max_tokens, jobs);
    else
        printf("mustafar-diff: seed %llu, %llu random cases + %u fixed, max tokens %u, %d jobs\n",
               (unsigned long long)seed, (unsigned long long)cases, (unsigned)NFIXED, max_tokens,
               jobs);
    fflush(stdout);
    for (j = 0; j < jobs; j++) {
        int fd[2];
        pid_t pid;
        if (pipe(fd) != 0 || (pid = fork()) < 0) {
            perror("mustafar-diff");
            return 2;
        }
        if (pid == 0) { /* worker: CUDA starts here, after the fork */
            report r;
            ctx w;
            memset(&w, 0, sizeof w);
            close(fd[0]);
#ifdef _OPENMP
            omp_set_num_threads(omp_get_num_procs() / jobs > 0 ? omp_get_num_procs() / jobs : 1);
#endif
            w.seed = seed;
            w.max_tokens = max_tokens;
            w.gpu = mf_backend_available(MF_BACKEND_CUDA);
            run_shard(&w, cases, only, j, jobs, t0);
            memcpy(r.st, w.st, sizeof r.st);
            r.errors = errors;
            r.gpu = w.gpu;
            fflush(stdout);
            _exit(write(fd[1], &r, sizeof r) == (ssize_t)sizeof r ? 0 : 3);
        }
        close(fd[1]);
        fds[j] = fd[0]; /* read once every worker runs */
    }
    for (j = 0; j < jobs; j++) {
        report r;
        ssize_t got = 0, n;
        while (got < (ssize_t)sizeof r && (n = read(fds[j], (char *)&r + got, sizeof r - got)) > 0)
            got += n;
        close(fds[j]);
        if (got != (ssize_t)sizeof r) {
            printf("ERROR: worker %d died\n", j);
            errors++;
            continue;
        }
        add_report(&c, &r);
    }
    while (wait(NULL) > 0)
        ;
    printf("GPU: %s\n", c.gpu ? "yes" : "no");
    printf("\n%-14s %8s %14s %10s %12s %12s %16s\n", "operation", "cases", "bit-identical",
           "violations", "max |err|", "err/bound", "identical elems");
    for (o = 0; o < NOPS; o++) {
        const stats *s = &c.st[o];
        int gpu_op = o != OP_SELF && o != OP_EXACT;
        bad |= s->violations != 0;
        checked += s->cases;
        if (gpu_op && !c.gpu) {
            printf("%-14s skipped: no GPU\n", op_name[o]);
            continue;
        }
        if (o == OP_TENSOR)
            printf("%-14s %8llu %14llu %10llu %12.3g %12.3g %15.4f%%\n", op_name[o],
                   (unsigned long long)s->cases, (unsigned long long)s->identical,
                   (unsigned long long)s->violations, s->max_err, s->max_ratio,
                   s->elems ? 100.0 * (double)s->elems_identical / (double)s->elems : 0.0);
        else if (o == OP_EXACT) /* against exact attention: nothing is bit-identical */
            printf("%-14s %8llu %14s %10llu %12.3g %12.3g %16s\n", op_name[o],
                   (unsigned long long)s->cases, "-", (unsigned long long)s->violations,
                   s->max_err, s->max_ratio, "-");
        else
            printf("%-14s %8llu %14llu %10llu %12s %12s %16s\n", op_name[o],
                   (unsigned long long)s->cases, (unsigned long long)s->identical,
                   (unsigned long long)s->violations, "-", "-", "-");
    }
    for (o = 0; o < NOPS; o++)
        if (c.st[o].max_ratio > 0.0)
            printf("%s: largest err/bound %.3g in case %lld\n", op_name[o], c.st[o].max_ratio,
                   c.st[o].worst_case);
    if (errors)
        printf("%llu cases could not run (ERROR lines above)\n", (unsigned long long)errors);
    /* without a GPU, a case whose input the CPU encoder rejects (a NaN
     * or infinity) has only GPU checks: a run of such cases proves nothing */
    if (!checked)
        printf("no check ran%s\n", c.gpu ? "" : " (without a GPU, a case with a NaN or infinity "
                                                 "in its input has none)");
    bad |= errors != 0 || !checked;
    printf("%.1f s; %s\n", mf_now() - t0, bad ? "FAILED: see above" : "all checks passed");
    return bad;
}
