/* mustafar.c - the command-line tool: encode, decode, inspect, attend, demo.
 *
 * Every failure prints one line "mustafar: <command>: <what>" to stderr
 * and exits 1 (2 for usage errors). Output files are written through a
 * temporary name, so a failure never leaves a partial or clobbered file. */
#define _POSIX_C_SOURCE 200809L /* stat */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "mustafar.h"
#include "synth.h"

/* The command being run, for messages; NULL before one is known. */
static const char *cmd = NULL;

/* Prints "mustafar: <command>: <message>" and returns code: 1 for a
 * failure (fail), 2 for a usage error (usage_error, which adds a hint). */
#ifdef __GNUC__ /* printf-style arguments checked where the compiler can */
#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#else
#define PRINTF_LIKE(f, a)
#endif
static int complain(int code, const char *fmt, ...) PRINTF_LIKE(2, 3);
static int complain(int code, const char *fmt, ...) {
    va_list ap;
    fputs("mustafar: ", stderr);
    if (cmd)
        fprintf(stderr, "%s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (code == 2)
        fprintf(stderr, " (see mustafar %s%s--help)", cmd ? cmd : "", cmd ? " " : "");
    fputc('\n', stderr);
    return code;
}
#define fail(...) complain(1, __VA_ARGS__)
#define usage_error(...) complain(2, __VA_ARGS__)

/* Inputs of this many bytes take seconds a phase: the phases are then
 * announced, so that a long run is not a silent one. */
#define PROGRESS_BYTES (UINT64_C(256) << 20)

/* "<what>..." on stderr where show is set. */
static void progress(int show, const char *fmt, ...) PRINTF_LIKE(2, 3);
static void progress(int show, const char *fmt, ...) {
    va_list ap;
    if (!show)
        return;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("...\n", stderr);
}

/* what (usually a path) is left out where the library's message already
 * starts with it, so that each message names it once. */
static int fail_st(const char *what, mf_status st, const mf_diag *diag) {
    const char *msg = diag && diag->msg[0] ? diag->msg : mf_strerror(st);
    size_t n = strlen(what);
    if (strncmp(msg, what, n) == 0 && msg[n] == ':')
        return fail("%s", msg);
    return fail("%s: %s", what, msg);
}

typedef struct opts {
    const char *pos[3];
    int npos, help;
    int progress; /* announce each phase (large inputs, the demo) */
    const char *out;
    double sparsity;
    uint32_t bits, tokens;
    mf_layout layout;
    mf_backend backend;
} opts;

/* The options that take a value; each command accepts a set of them. */
enum { OPT_OUT = 1, OPT_SPARSITY = 2, OPT_BITS = 4, OPT_LAYOUT = 8, OPT_BACKEND = 16,
       OPT_TOKENS = 32 };

typedef struct option_doc {
    unsigned bit;
    const char *name, *value, *text;
} option_doc;

static const option_doc options[] = {
    {OPT_OUT, "-o", "FILE", "the output file"},
    {OPT_TOKENS, "--tokens", "T", "tokens of the synthesized layer, 1..1048576 (default 4096)"},
    {OPT_SPARSITY, "--sparsity", "S", "fraction pruned per token row, 0..1 (default 0.7)"},
    {OPT_BITS, "--bits", "B", "0 (fp16 nonzeros), 2 or 4 (quantized codes; default 2)"},
    {OPT_LAYOUT, "--layout", "L", "reference (Mustafar's layout, default) or native"},
    {OPT_BACKEND, "--backend", "X", "cpu (default) or cuda"},
};
#define NOPTIONS (sizeof options / sizeof options[0])

typedef struct command {
    const char *name;
    const char *args;  /* positional arguments and required options */
    const char *about; /* one or more lines */
    int npos;          /* positional arguments, all required */
    int nin;           /* the first nin of them are inputs, the rest outputs */
    unsigned opts;     /* OPT_ bits accepted; OPT_OUT is required where accepted */
    int (*run)(opts o);
} command;

static int parse_double(const char *s, double lo, double hi, double *out) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= lo && v <= hi))
        return 0;
    *out = v;
    return 1;
}

/* Sets the option of bit from val: returns 0 or an exit code. */
static int set_option(unsigned bit, const char *val, opts *o) {
    double d;
    switch (bit) {
    case OPT_OUT:
        o->out = val;
        return 0;
    case OPT_SPARSITY:
        if (!parse_double(val, 0.0, 1.0, &o->sparsity))
            return usage_error("--sparsity %s is not a number in [0, 1]", val);
        return 0;
    case OPT_BITS:
        if (strcmp(val, "0") && strcmp(val, "2") && strcmp(val, "4"))
            return usage_error("--bits %s is not 0, 2 or 4", val);
        o->bits = (uint32_t)atoi(val);
        return 0;
    case OPT_LAYOUT:
        if (strcmp(val, "reference") == 0)
            o->layout = MF_LAYOUT_REFERENCE;
        else if (strcmp(val, "native") == 0)
            o->layout = MF_LAYOUT_NATIVE;
        else
            return usage_error("--layout %s is not reference or native", val);
        return 0;
    case OPT_BACKEND:
        if (mf_backend_parse(val, &o->backend) != MF_OK)
            return usage_error("--backend %s is not cpu or cuda", val);
        return 0;
    default: /* OPT_TOKENS */
        if (strspn(val, "0123456789") != strlen(val) || !parse_double(val, 1.0, 1048576.0, &d))
            return usage_error("--tokens %s is not an integer in 1..1048576", val);
        o->tokens = (uint32_t)d;
        return 0;
    }
}

/* Parses argv[2..] for command c: returns 0 or an exit code. After "--"
 * every argument is positional, so file names may start with '-'. */
static int parse_opts(int argc, char **argv, const command *c, opts *o) {
    int i, rc, ended = 0;
    memset(o, 0, sizeof *o);
    o->sparsity = 0.7;
    o->bits = 2;
    o->tokens = 4096;
    o->layout = MF_LAYOUT_REFERENCE;
    o->backend = MF_BACKEND_CPU;
    for (i = 2; i < argc; i++) {
        const char *a = argv[i];
        size_t k;
        if (!ended && (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)) {
            o->help = 1;
            return 0;
        }
        if (!ended && strcmp(a, "--") == 0) {
            ended = 1;
        } else if (!ended && a[0] == '-' && a[1]) {
            for (k = 0; k < NOPTIONS && strcmp(a, options[k].name); k++)
                ;
            if (k == NOPTIONS)
                return usage_error("unknown option %s", a);
            if (!(c->opts & options[k].bit))
                return usage_error("takes no option %s", a);
            if (++i == argc)
                return usage_error("option %s needs a value", a);
            if ((rc = set_option(options[k].bit, argv[i], o)))
                return rc;
        } else {
            if (o->npos == c->npos)
                return usage_error("unexpected argument %s", a);
            o->pos[o->npos++] = a;
        }
    }
    if (o->backend == MF_BACKEND_CUDA && !mf_backend_available(MF_BACKEND_CUDA))
        return fail("--backend cuda: no usable CUDA device or driver here");
    return 0;
}

static double now(void) {
#ifdef _OPENMP
    return omp_get_wtime();
#else
    return 0.0;
#endif
}

static int threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* "[4, 150, 64]": a's shape in buf, which it returns. */
static const char *shape_of(const mf_array *a, char *buf, size_t n) {
    size_t len = (size_t)snprintf(buf, n, "[");
    uint32_t d;
    for (d = 0; d < a->ndim && len < n; d++)
        len += (size_t)snprintf(buf + len, n - len, "%s%llu", d ? ", " : "",
                                (unsigned long long)a->shape[d]);
    if (len < n)
        snprintf(buf + len, n - len, "]");
    return buf;
}

/* Element e of a as a float. */
static float element(const mf_array *a, uint64_t e) {
    return a->dtype == MF_F16 ? mf_fp16_to_float(((const uint16_t *)a->data)[e])
                              : ((const float *)a->data)[e];
}

/* Whether element e of a is a finite float16 value once converted. */
static int fits_f16(const mf_array *a, uint64_t e) {
    float x;
    if (a->dtype == MF_F16) /* an exponent of all ones is inf or NaN */
        return (((const uint16_t *)a->data)[e] & 0x7c00u) != 0x7c00u;
    x = ((const float *)a->data)[e];
    /* 65504 is float16's largest; up to 65520 still rounds down to it */
    return fabsf(x) <= 65504.0f || (mf_fp16_from_float(x) & 0x7c00u) != 0x7c00u;
}

/* Fails on the first element of a that is NaN, infinite or beyond
 * float16's range: converted, it would be NaN or inf, which the encoder
 * refuses and attention would spread over a whole head. */
static int check_f16_range(const char *path, const mf_array *a) {
    char at[96];
    size_t len = 0;
    uint64_t e, rest, stride;
    uint32_t d;
    float x;
    for (e = 0; e < a->count && fits_f16(a, e); e++)
        ;
    if (e == a->count)
        return 0;
    for (d = 0, rest = e, stride = a->count; d < a->ndim; d++) {
        stride /= a->shape[d];
        len += (size_t)snprintf(at + len, sizeof at - len, "[%llu]",
                                (unsigned long long)(rest / stride));
        rest %= stride;
    }
    x = element(a, e);
    if (isfinite(x))
        return fail("%s: input%s = %g is out of the float16 range (+-65504)", path, at, (double)x);
    return fail("%s: input%s is %s; inputs must be finite", path, at,
                isnan(x) ? "NaN" : x < 0 ? "-inf" : "inf");
}

/* Loads a .npy as fp16. */
static int load_f16(const char *path, int show, mf_array *a) {
    mf_diag diag = {{0}};
    mf_status st;
    int rc;
    progress(show, "reading %s", path);
    if ((st = mf_npy_load(path, a, &diag)) != MF_OK)
        return fail_st(path, st, &diag);
    if (!(rc = check_f16_range(path, a)) && (st = mf_array_convert(a, MF_F16)) != MF_OK)
        rc = fail_st(path, st, NULL);
    if (rc)
        mf_array_free(a);
    return rc;
}

/* Compresses dense [rows, tokens, dim] on the backend into the host
 * tensor c (allocated here). */
static mf_status compress(mf_backend be, const uint16_t *dense, mf_kind kind, const opts *o,
                          uint32_t rows, uint32_t tokens, uint32_t dim, mf_ctensor *c,
                          mf_diag *diag) {
    mf_desc d;
    mf_sizes s;
    mf_ctensor dc;
    void *dd = NULL;
    size_t bytes = (size_t)rows * tokens * dim * 2;
    uint32_t keep;
    mf_status st;
    memset(&d, 0, sizeof d);
    memset(&dc, 0, sizeof dc);
    d.kind = kind;
    d.layout = o->layout;
    d.bits = o->bits;
    d.rows = rows;
    d.tokens = tokens;
    d.dim = dim;
    if ((st = mf_desc_check(&d, diag)) != MF_OK)
        return st;
    mf_keep_count(dim, o->sparsity, &keep);
    mf_sizes_of(&d, keep, &s);
    if (be == MF_BACKEND_CPU) {
        if ((st = mf_ctensor_alloc(c, &d, s.payload_keep)) != MF_OK)
            return st;
        if ((st = mf_encode(be, dense, keep, c, s.payload_keep, diag)) != MF_OK)
            mf_ctensor_free(c);
        return st;
    }
    if ((st = mf_buffer_alloc(be, bytes, &dd)) == MF_OK &&
        (st = mf_buffer_upload(be, dd, dense, bytes)) == MF_OK &&
        (st = mf_ctensor_alloc_on(be, &dc, &d, s.payload_keep)) == MF_OK &&
        (st = mf_encode(be, (const uint16_t *)dd, keep, &dc, s.payload_keep, diag)) == MF_OK)
        st = mf_ctensor_download(be, &dc, c);
    mf_ctensor_free_on(be, &dc);
    mf_buffer_free(be, dd);
    return st;
}

/* Attention of host tensors on the backend into host out; *seconds is
 * the time of the attention call itself (with its result's download). */
static mf_status attend_on(mf_backend be, const mf_ctensor *k, const mf_ctensor *v,
                           const uint16_t *q, uint32_t group, float *out, double *seconds) {
    size_t ws_bytes = 0, qn = (size_t)k->desc.rows * group * k->desc.dim;
    mf_ctensor dk, dv;
    void *ws = NULL, *dq = NULL, *dout = NULL;
    mf_status st;
    double t0;
    memset(&dk, 0, sizeof dk);
    memset(&dv, 0, sizeof dv);
    if ((st = mf_attend_workspace(be, &k->desc, group, &ws_bytes)) != MF_OK)
        return st;
    if (be == MF_BACKEND_CPU) {
        if (!(ws = malloc(ws_bytes ? ws_bytes : 1)))
            return MF_ERR_NOMEM;
        t0 = now();
        st = mf_attend(be, k, v, q, group, out, ws, ws_bytes);
        *seconds = now() - t0;
        free(ws);
        return st;
    }
    if ((st = mf_ctensor_upload(be, k, &dk)) == MF_OK && (st = mf_ctensor_upload(be, v, &dv)) == MF_OK &&
        (st = mf_buffer_alloc(be, qn * 2, &dq)) == MF_OK &&
        (st = mf_buffer_upload(be, dq, q, qn * 2)) == MF_OK &&
        (st = mf_buffer_alloc(be, qn * 4, &dout)) == MF_OK &&
        (st = mf_buffer_alloc(be, ws_bytes ? ws_bytes : 1, &ws)) == MF_OK) {
        t0 = now();
        if ((st = mf_attend(be, &dk, &dv, (const uint16_t *)dq, group, (float *)dout, ws,
                            ws_bytes)) == MF_OK)
            st = mf_buffer_download(be, out, dout, qn * 4);
        *seconds = now() - t0;
    }
    mf_ctensor_free_on(be, &dk);
    mf_ctensor_free_on(be, &dv);
    mf_buffer_free(be, dq);
    mf_buffer_free(be, dout);
    mf_buffer_free(be, ws);
    return st;
}

static int cmd_encode(opts o) {
    mf_array ka, va;
    mf_ctensor k, v;
    mf_diag diag = {{0}};
    mf_status st;
    int rc;
    uint32_t i;
    char ks[96], vs[96];
    if ((rc = load_f16(o.pos[0], o.progress, &ka)))
        return rc;
    if ((rc = load_f16(o.pos[1], o.progress, &va))) {
        mf_array_free(&ka);
        return rc;
    }
    rc = 0;
    if (ka.ndim != 3)
        rc = fail("%s: shape %s, expected 3 dims [batch*kv_heads, T, D]", o.pos[0],
                  shape_of(&ka, ks, sizeof ks));
    else if (va.ndim != 3 || va.shape[0] != ka.shape[0] || va.shape[1] != ka.shape[1] ||
             va.shape[2] != ka.shape[2])
        rc = fail("%s: shape %s differs from %s's %s; K and V must have the same shape",
                  o.pos[1], shape_of(&va, vs, sizeof vs), o.pos[0], shape_of(&ka, ks, sizeof ks));
    else if (ka.shape[0] > UINT32_MAX || ka.shape[1] > UINT32_MAX || ka.shape[2] > UINT32_MAX)
        rc = fail("%s: dims too large", o.pos[0]);
    if (!rc)
        progress(o.progress, "encoding K and V (%llu tokens)", (unsigned long long)ka.shape[1]);
    for (i = 0; !rc && i < 2; i++) {
        mf_ctensor *c = i ? &v : &k;
        st = compress(o.backend, (const uint16_t *)(i ? va.data : ka.data), i ? MF_VALUE : MF_KEY,
                      &o, (uint32_t)ka.shape[0], (uint32_t)ka.shape[1], (uint32_t)ka.shape[2], c,
                      &diag);
        if (st != MF_OK) {
            rc = fail_st(o.pos[i], st, &diag);
            if (i)
                mf_ctensor_free(&k);
        }
    }
    mf_array_free(&ka);
    mf_array_free(&va);
    if (rc)
        return rc;
    progress(o.progress, "writing %s", o.out);
    st = mf_container_save(o.out, &k, &v, &diag);
    mf_ctensor_free(&k);
    mf_ctensor_free(&v);
    if (st != MF_OK)
        return fail_st("write", st, &diag); /* diag names the path */
    return 0;
}

static int load_cache(const char *path, int show, mf_ctensor *k, mf_ctensor *v) {
    mf_diag diag = {{0}};
    mf_status st;
    progress(show, "reading %s", path);
    st = mf_container_load(path, k, v, &diag);
    return st == MF_OK ? 0 : fail_st(path, st, &diag);
}

/* A decoded tensor as a (rows, tokens, dim) fp16 array. */
static mf_array f16_array(uint16_t *data, const mf_desc *d) {
    mf_array a;
    memset(&a, 0, sizeof a);
    a.dtype = MF_F16;
    a.ndim = 3;
    a.shape[0] = d->rows;
    a.shape[1] = d->tokens;
    a.shape[2] = d->dim;
    a.count = (uint64_t)d->rows * d->tokens * d->dim;
    a.data = data;
    return a;
}

static int cmd_decode(opts o) {
    mf_ctensor k, v;
    uint16_t *kd, *vd;
    mf_diag diag = {{0}};
    mf_status st;
    size_t n;
    int rc;
    if ((rc = load_cache(o.pos[0], o.progress, &k, &v)))
        return rc;
    n = (size_t)k.desc.rows * k.desc.tokens * k.desc.dim;
    kd = (uint16_t *)malloc(n * 2);
    vd = (uint16_t *)malloc(n * 2);
    /* the outputs, fp16, are some times the size of the cache */
    progress(o.progress || 4 * (uint64_t)n >= PROGRESS_BYTES, "decoding K and V into %s and %s",
             o.pos[1], o.pos[2]);
    if (!kd || !vd)
        rc = fail("%s: out of memory", o.pos[0]);
    else if ((st = mf_decode(MF_BACKEND_CPU, &k, kd, &diag)) != MF_OK ||
             (st = mf_decode(MF_BACKEND_CPU, &v, vd, &diag)) != MF_OK)
        rc = fail_st(o.pos[0], st, &diag);
    else {
        /* Both files or neither (mf_npy_save_all). */
        const char *paths[2];
        mf_array arrays[2];
        paths[0] = o.pos[1];
        paths[1] = o.pos[2];
        arrays[0] = f16_array(kd, &k.desc);
        arrays[1] = f16_array(vd, &v.desc);
        if ((st = mf_npy_save_all(2, paths, arrays, &diag)) != MF_OK)
            rc = fail_st("write", st, &diag); /* diag names the path */
    }
    free(kd);
    free(vd);
    mf_ctensor_free(&k);
    mf_ctensor_free(&v);
    return rc;
}

/* Bytes of each array of c, for inspect. */
static void print_tensor(const char *name, const mf_ctensor *c) {
    mf_sizes s;
    uint64_t t, nnz = 0, bytes;
    const mf_desc *d = &c->desc;
    double elems;
    mf_sizes_of(d, 0, &s);
    for (t = 0; t < s.tiles; t++)
        nnz += (uint64_t)__builtin_popcountll(c->bitmaps[t]);
    mf_ctensor_bytes(c, &bytes);
    elems = (double)d->rows * d->tokens * d->dim;
    printf("%s: %llu tiles, %llu nonzeros, sparsity %.4f of the compressed part\n", name,
           (unsigned long long)s.tiles, (unsigned long long)nnz,
           s.tiles ? 1.0 - (double)nnz / (double)(s.tiles * 64u) : 0.0);
    printf("  bitmaps %llu B, offsets %llu B, scales+zeros %llu B, payload %llu B, window %llu B\n",
           (unsigned long long)(s.tiles * 8u), (unsigned long long)(s.offsets * 4u),
           (unsigned long long)(d->bits ? s.tiles * 4u : 0u),
           (unsigned long long)(c->payload_words * 4u), (unsigned long long)(s.window * 2u));
    printf("  %.4f bytes/element, compression ratio %.2fx vs fp16\n", (double)bytes / elems,
           2.0 * elems / (double)bytes);
}

static int cmd_inspect(opts o) {
    mf_ctensor k, v;
    const mf_desc *d;
    int rc;
    if ((rc = load_cache(o.pos[0], o.progress, &k, &v)))
        return rc;
    d = &k.desc;
    printf("%s: mustafar container, valid\n", o.pos[0]);
    printf("rows (batch*kv_heads) %u, tokens %u (%u blocks of 64 + %u window), dim %u\n", d->rows,
           d->tokens, d->tokens / 64, d->tokens % 64, d->dim);
    printf("layout %s, %s\n", d->layout == MF_LAYOUT_NATIVE ? "native" : "reference",
           d->bits ? (d->bits == 2 ? "2-bit codes" : "4-bit codes") : "fp16 nonzeros");
    print_tensor("K", &k);
    print_tensor("V", &v);
    {
        uint64_t kb, vb;
        double elems = 2.0 * d->rows * d->tokens * d->dim;
        mf_ctensor_bytes(&k, &kb);
        mf_ctensor_bytes(&v, &vb);
        printf("K+V: %.4f bytes/element, compression ratio %.2fx vs fp16\n",
               (double)(kb + vb) / elems, 2.0 * elems / (double)(kb + vb));
    }
    mf_ctensor_free(&k);
    mf_ctensor_free(&v);
    return 0;
}

static int cmd_attend(opts o) {
    mf_ctensor k, v;
    mf_array qa, out;
    mf_diag diag = {{0}};
    mf_status st;
    uint32_t group;
    double secs;
    int rc;
    char qs[96];
    if ((rc = load_cache(o.pos[0], o.progress, &k, &v)))
        return rc;
    if ((rc = load_f16(o.pos[1], o.progress, &qa))) {
        mf_ctensor_free(&k);
        mf_ctensor_free(&v);
        return rc;
    }
    memset(&out, 0, sizeof out);
    if (qa.ndim != 2 || qa.shape[1] != k.desc.dim || qa.shape[0] % k.desc.rows ||
        qa.shape[0] == 0)
        rc = fail("%s: shape %s, expected shape [batch*q_heads, %u] with batch*q_heads a "
                  "multiple of %u: %s has %u rows (batch*kv_heads) of dim %u",
                  o.pos[1], shape_of(&qa, qs, sizeof qs), k.desc.dim, k.desc.rows, o.pos[0],
                  k.desc.rows, k.desc.dim);
    else if (qa.shape[0] / k.desc.rows > MF_MAX_GROUP) /* mf_attend has no diag to say so */
        rc = fail("%s: %llu rows are %llu query heads per KV head of %s (%u rows); attention "
                  "takes at most %u",
                  o.pos[1], (unsigned long long)qa.shape[0],
                  (unsigned long long)(qa.shape[0] / k.desc.rows), o.pos[0], k.desc.rows,
                  MF_MAX_GROUP);
    group = rc ? 0 : (uint32_t)(qa.shape[0] / k.desc.rows);
    if (!rc) {
        out.dtype = MF_F32;
        out.ndim = 2;
        out.shape[0] = qa.shape[0];
        out.shape[1] = qa.shape[1];
        out.count = qa.count;
        if (!(out.data = malloc(out.count * sizeof(float))))
            rc = fail("%s: out of memory", o.pos[0]);
    }
    if (!rc)
        progress(o.progress, "attention of %s over %u tokens", o.pos[1], k.desc.tokens);
    /* mf_attend has no diag: the message says what it was given */
    if (!rc && (st = attend_on(o.backend, &k, &v, (const uint16_t *)qa.data, group,
                               (float *)out.data, &secs)) != MF_OK)
        rc = fail("%s: attention of %s (%u query heads per KV head): %s", o.pos[0], o.pos[1],
                  group, mf_strerror(st));
    if (!rc && (st = mf_npy_save(o.out, &out, &diag)) != MF_OK)
        rc = fail_st("write", st, &diag);
    mf_array_free(&out);
    mf_array_free(&qa);
    mf_ctensor_free(&k);
    mf_ctensor_free(&v);
    return rc;
}

/* Relative L2 error and max abs error of a against reference b. */
static void compare(const float *a, const float *b, size_t n, double *rel, double *maxabs) {
    double num = 0, den = 0, mx = 0;
    size_t i;
    for (i = 0; i < n; i++) {
        double e = (double)a[i] - (double)b[i];
        num += e * e;
        den += (double)b[i] * b[i];
        mx = fabs(e) > mx ? fabs(e) : mx;
    }
    *rel = den > 0 ? sqrt(num / den) : sqrt(num);
    *maxabs = mx;
}

/* Best of reps runs of attention (compressed if k != NULL, else dense). */
static double time_attend(const mf_ctensor *k, const mf_ctensor *v, const uint16_t *kd,
                          const uint16_t *vd, const mf_desc *d, const uint16_t *q,
                          uint32_t group, float *out, void *ws, size_t ws_bytes, int reps) {
    double best = 1e30;
    int r;
    for (r = 0; r < reps; r++) {
        double t0 = now(), t;
        if (k)
            mf_attend(MF_BACKEND_CPU, k, v, q, group, out, ws, ws_bytes);
        else
            mf_attend_dense(MF_BACKEND_CPU, kd, vd, d->rows, d->tokens, d->dim, q, group, out, ws,
                            ws_bytes);
        t = now() - t0;
        best = t < best ? t : best;
    }
    return best;
}

static int cmd_demo(opts o) {
    const uint32_t rows = 8, group = 4, dim = 128;
    mf_ctensor k, v, k0, v0;
    uint16_t *kd = NULL, *vd = NULL, *q = NULL, *dec = NULL;
    float *ref = NULL, *got = NULL, *viadec = NULL;
    void *ws = NULL;
    size_t n, ws_bytes = 0;
    mf_diag diag = {{0}};
    mf_status st;
    double t0, tenc, tc, td, rel, mx, rel0 = 0.0, mx0 = 0.0;
    uint64_t kb, vb;
    int rc = 0, same;
    o.progress = 1; /* every phase of the demo is announced */
    n = (size_t)rows * o.tokens * dim;
    memset(&k, 0, sizeof k);
    memset(&v, 0, sizeof v);
    memset(&k0, 0, sizeof k0);
    memset(&v0, 0, sizeof v0);
    printf("mustafar demo: Llama-3-8B-shaped layer, 8 KV heads, 32 query heads, D=128, T=%u\n",
           o.tokens);
    printf("sparsity %.2f, %s, %s layout, backend %s, %d threads\n", o.sparsity,
           o.bits ? (o.bits == 2 ? "2-bit codes" : "4-bit codes") : "fp16 nonzeros",
           o.layout == MF_LAYOUT_NATIVE ? "native" : "reference", mf_backend_name(o.backend),
           threads());
    kd = (uint16_t *)malloc(n * 2);
    vd = (uint16_t *)malloc(n * 2);
    dec = (uint16_t *)malloc(n * 2);
    q = (uint16_t *)malloc((size_t)rows * group * dim * 2);
    ref = (float *)malloc((size_t)rows * group * dim * 4);
    got = (float *)malloc((size_t)rows * group * dim * 4);
    viadec = (float *)malloc((size_t)rows * group * dim * 4);
    if (!kd || !vd || !dec || !q || !ref || !got || !viadec) {
        rc = fail("out of memory");
        goto done;
    }
    progress(o.progress, "synthesizing %zu MB of fp16 K and V", (2 * n * 2) >> 20);
    mf_synth_layer(42, rows, o.tokens, dim, group, kd, vd, q);
    progress(o.progress, "encoding K and V (%u tokens)", o.tokens);
    t0 = now();
    if ((st = compress(o.backend, kd, MF_KEY, &o, rows, o.tokens, dim, &k, &diag)) != MF_OK ||
        (st = compress(o.backend, vd, MF_VALUE, &o, rows, o.tokens, dim, &v, &diag)) != MF_OK) {
        rc = fail_st("encode", st, &diag);
        goto done;
    }
    tenc = now() - t0;
    mf_ctensor_bytes(&k, &kb);
    mf_ctensor_bytes(&v, &vb);
    if ((st = mf_attend_workspace(MF_BACKEND_CPU, &k.desc, group, &ws_bytes)) != MF_OK ||
        !(ws = malloc(ws_bytes ? ws_bytes : 1))) {
        rc = fail_st("workspace", st ? st : MF_ERR_NOMEM, NULL);
        goto done;
    }
    progress(o.progress, "computing attention, and checking it against the decoded cache");
    mf_attend_dense(MF_BACKEND_CPU, kd, vd, rows, o.tokens, dim, q, group, ref, ws, ws_bytes);
    if ((st = mf_attend(MF_BACKEND_CPU, &k, &v, q, group, got, ws, ws_bytes)) != MF_OK) {
        rc = fail_st("attend", st, NULL);
        goto done;
    }
    compare(got, ref, (size_t)rows * group * dim, &rel, &mx);
    if (o.bits) { /* the error of pruning alone, for comparison: fp16 nonzeros */
        opts p = o;
        p.bits = 0;
        if ((st = compress(o.backend, kd, MF_KEY, &p, rows, o.tokens, dim, &k0, &diag)) != MF_OK ||
            (st = compress(o.backend, vd, MF_VALUE, &p, rows, o.tokens, dim, &v0, &diag)) != MF_OK ||
            (st = mf_attend(MF_BACKEND_CPU, &k0, &v0, q, group, viadec, ws, ws_bytes)) != MF_OK) {
            rc = fail_st("encode without codes", st, &diag);
            goto done;
        }
        compare(viadec, ref, (size_t)rows * group * dim, &rel0, &mx0);
    }
    /* The oracle's own check: attention on the compressed cache equals
     * dense attention on the decoded cache, bit for bit. */
    mf_decode(MF_BACKEND_CPU, &k, dec, NULL);
    mf_decode(MF_BACKEND_CPU, &v, vd, NULL);
    mf_attend_dense(MF_BACKEND_CPU, dec, vd, rows, o.tokens, dim, q, group, viadec, ws, ws_bytes);
    same = memcmp(got, viadec, (size_t)rows * group * dim * sizeof *got) == 0;
    progress(o.progress, "timing attention: 20 repetitions each, compressed and dense");
    tc = time_attend(&k, &v, NULL, NULL, &k.desc, q, group, got, ws, ws_bytes, 20);
    td = time_attend(NULL, NULL, kd, vd, &k.desc, q, group, ref, ws, ws_bytes, 20);
    printf("compressed K+V: %.2f MB of %.2f MB fp16: ratio %.2fx, %.4f bytes/element\n",
           (double)(kb + vb) / 1e6, 4.0 * n / 1e6, 4.0 * n / (double)(kb + vb),
           (double)(kb + vb) / (2.0 * n));
    printf("attention error vs dense fp32 attention on the unpruned cache: relative L2 %.4f, "
           "max abs %.4f\n", rel, mx);
    if (o.bits)
        printf("  pruning alone (fp16 nonzeros, no codes) gives relative L2 %.4f, max abs %.4f\n",
               rel0, mx0);
    printf("compressed attention vs dense attention on the decoded cache: %s\n",
           same ? "bit-identical" : "DIFFERENT");
    printf("encode: %.1f ms (%.2f GB/s of fp16 input%s)\n", tenc * 1e3, 4.0 * n / tenc / 1e9,
           o.backend == MF_BACKEND_CUDA
               ? "; host to host: the first CUDA call's setup and the copies included" : "");
    printf("attend: compressed %.3f ms, dense fp16 %.3f ms (best of 20)\n", tc * 1e3, td * 1e3);
    if (!same)
        rc = fail("compressed attention differs from attention on the decoded cache");
    if (o.backend == MF_BACKEND_CUDA) { /* the device against the oracle */
        double tg = 0.0;
        progress(o.progress, "attention on cuda");
        if ((st = attend_on(o.backend, &k, &v, q, group, viadec, &tg)) != MF_OK) {
            rc = fail_st("attend on cuda", st, NULL);
            goto done;
        }
        printf("attend on cuda: %.3f ms, %s the CPU oracle\n", tg * 1e3,
               memcmp(got, viadec, (size_t)rows * group * dim * sizeof *got) == 0
                   ? "bit-identical to"
                   : "DIFFERENT from");
    }
done:
    free(kd);
    free(vd);
    free(dec);
    free(q);
    free(ref);
    free(got);
    free(viadec);
    free(ws);
    mf_ctensor_free(&k);
    mf_ctensor_free(&v);
    mf_ctensor_free(&k0);
    mf_ctensor_free(&v0);
    return rc;
}

/* Refuses an output that is the same regular file as an input (which
 * writing it would destroy) or as an earlier output (which it would
 * overwrite): the same name, or the same device and inode, so links and
 * other spellings of the path count. Returns 0 or an exit code. */
static int refuse_same_file(const char *out, const char *const *files, int n, const char *kind) {
    struct stat so, si;
    int i, seen = stat(out, &so) == 0;
    if (seen && !S_ISREG(so.st_mode))
        return 0; /* a device or pipe: written in place, nothing destroyed */
    for (i = 0; i < n; i++)
        if (!strcmp(out, files[i]) ||
            (seen && stat(files[i], &si) == 0 && si.st_dev == so.st_dev && si.st_ino == so.st_ino))
            return fail("output %s is the same file as %s %s; refusing to overwrite it", out, kind,
                        files[i]);
    return 0;
}

/* Bytes of the files at paths; one that stat() cannot see counts 0. */
static uint64_t input_bytes(const char *const *paths, int n) {
    struct stat sb;
    uint64_t total = 0;
    int i;
    for (i = 0; i < n; i++)
        if (stat(paths[i], &sb) == 0)
            total += (uint64_t)sb.st_size;
    return total;
}

static const command commands[] = {
    {"encode", "K.npy V.npy -o CACHE.mfkv",
     "compress one layer's K and V, each [batch*kv_heads, T, D] float16/float32", 2, 2,
     OPT_OUT | OPT_SPARSITY | OPT_BITS | OPT_LAYOUT | OPT_BACKEND, cmd_encode},
    {"decode", "CACHE.mfkv K.npy V.npy", "write the decompressed K and V as float16", 3, 1, 0,
     cmd_decode},
    {"inspect", "CACHE.mfkv", "dims, sparsity, bytes per element, section sizes", 1, 1, 0,
     cmd_inspect},
    {"attend", "CACHE.mfkv Q.npy -o OUT.npy",
     "decode attention of Q [batch*q_heads, D]; OUT is float32 [batch*q_heads, D]", 2, 2,
     OPT_OUT | OPT_BACKEND, cmd_attend},
    {"demo", "",
     "synthesize a Llama-3-8B-shaped layer (8 KV heads, 32 query heads, D=128,\n"
     "T=4096 by default), compress it, report ratio, error and timings",
     0, 0, OPT_TOKENS | OPT_SPARSITY | OPT_BITS | OPT_LAYOUT | OPT_BACKEND, cmd_demo},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

/* "name args [--opt V]...", then the about lines indented by 8. */
static void print_command(FILE *f, const command *c) {
    const char *p, *nl;
    size_t k;
    fprintf(f, "%s%s%s", c->name, c->args[0] ? " " : "", c->args);
    for (k = 0; k < NOPTIONS; k++)
        if ((c->opts & options[k].bit) && options[k].bit != OPT_OUT)
            fprintf(f, " [%s %s]", options[k].name, options[k].value);
    fputc('\n', f);
    for (p = c->about; (nl = strchr(p, '\n')); p = nl + 1)
        fprintf(f, "        %.*s\n", (int)(nl - p), p);
    fprintf(f, "        %s\n", p);
}

/* The options of mask, then those every command takes. */
static void print_options(FILE *f, unsigned mask) {
    char name[32];
    size_t k;
    fputs("\noptions:\n", f);
    for (k = 0; k < NOPTIONS; k++)
        if (mask & options[k].bit) {
            snprintf(name, sizeof name, "%s %s", options[k].name, options[k].value);
            fprintf(f, "  %-13s %s\n", name, options[k].text);
        }
    fputs("  -h, --help    this help\n"
          "  --            ends the options: later arguments are file names\n"
          "\nThreads: OMP_NUM_THREADS. Inputs (or decode's outputs) of 256 MiB or more, and\n"
          "the demo, announce each long phase on stderr.\n", f);
}

static int help(FILE *f, int code) {
    size_t i;
    fputs("usage: mustafar <command> [options]\n"
          "       mustafar <command> --help   the command's arguments and options\n"
          "\ncommands:\n", f);
    for (i = 0; i < NCOMMANDS; i++) {
        fputs("  ", f);
        print_command(f, &commands[i]);
    }
    print_options(f, ~0u);
    return code;
}

int main(int argc, char **argv) {
    const command *c = commands;
    opts o;
    int i, rc;
    if (argc < 2)
        return help(stderr, 2);
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0)
        return help(stdout, 0);
    if (strcmp(argv[1], "--version") == 0) {
        printf("mustafar %d.%d.%d\n", MF_VERSION_MAJOR, MF_VERSION_MINOR, MF_VERSION_PATCH);
        return 0;
    }
    while (c < commands + NCOMMANDS && strcmp(c->name, argv[1]))
        c++;
    if (c == commands + NCOMMANDS)
        return usage_error("unknown command %s", argv[1]);
    cmd = c->name;
    if ((rc = parse_opts(argc, argv, c, &o)))
        return rc;
    if (o.help) {
        fputs("usage: mustafar ", stdout);
        print_command(stdout, c);
        print_options(stdout, c->opts);
        return 0;
    }
    if (o.npos != c->npos || ((c->opts & OPT_OUT) && !o.out))
        return usage_error("needs %s", c->args);
    for (i = c->nin; i < o.npos; i++)
        if ((rc = refuse_same_file(o.pos[i], o.pos, c->nin, "input")) ||
            (rc = refuse_same_file(o.pos[i], o.pos + c->nin, i - c->nin, "output")))
            return rc;
    if (o.out && (rc = refuse_same_file(o.out, o.pos, c->nin, "input")))
        return rc;
    o.progress = input_bytes(o.pos, c->nin) >= PROGRESS_BYTES;
    return c->run(o);
}
