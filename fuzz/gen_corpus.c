/* gen_corpus.c - writes the seed corpora under DIR/<target>/ from real
 * caches of many shapes, encoded through the public API: containers,
 * tensors and dense data in the targets' input formats (fuzz.h), and
 * .npy files of each version, dtype and rank.  usage: gen_corpus DIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

static const char *root;

static void put(const char *target, const char *name, const uint8_t *p, size_t n) {
    char path[1024];
    FILE *f;
    snprintf(path, sizeof path, "%s/%s/%s", root, target, name);
    if (!(f = fopen(path, "wb")) || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "gen_corpus: cannot write %s\n", path);
        exit(1);
    }
}

static uint64_t rng = 0x243f6a8885a308d3u;

static uint64_t next(void) { /* splitmix64 */
    uint64_t z = (rng += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* Activations-like fp16: mostly small, one in 8 exactly zero, rare outliers. */
static uint16_t half(void) {
    uint64_t r = next();
    float x = ((float)(r >> 40) / 8388608.0f - 1.0f) * ((r & 0xf0) == 0 ? 40.0f : 2.0f);
    return (r & 7u) == 0 ? 0 : mf_fp16_from_float(x);
}

static void fill(uint16_t *p, uint64_t n) {
    uint64_t i;
    for (i = 0; i < n; i++)
        p[i] = half();
}

static void encode(const mf_desc *d, const uint16_t *x, uint32_t keep, mf_ctensor *c) {
    mf_sizes s;
    mf_sizes_of(d, keep, &s);
    if (mf_ctensor_alloc(c, d, s.payload_keep) != MF_OK ||
        mf_encode(MF_BACKEND_CPU, x, keep, c, s.payload_keep, NULL) != MF_OK) {
        fprintf(stderr, "gen_corpus: encode failed\n");
        exit(1);
    }
}

/* One shape: a container, and inputs of the tensor targets whose size
 * budget (fz_desc's max_rows, max_elems in each target) it fits. */
static void shape(mf_layout layout, uint32_t bits, uint32_t rows, uint32_t tokens, uint32_t dim,
                  uint32_t keep) {
    mf_desc d;
    mf_ctensor k, v;
    uint64_t n, len;
    uint16_t *x, *y, *q;
    uint8_t *buf;
    size_t at;
    char name[64];
    memset(&d, 0, sizeof d);
    d.layout = layout;
    d.bits = bits;
    d.rows = rows;
    d.tokens = tokens;
    d.dim = dim;
    n = fz_dense_count(&d);
    x = (uint16_t *)malloc(n * 2);
    y = (uint16_t *)malloc(n * 2);
    q = (uint16_t *)malloc((size_t)rows * 2 * dim * 2);
    fill(x, n);
    fill(y, n);
    fill(q, (uint64_t)rows * 2 * dim);
    d.kind = MF_KEY;
    encode(&d, x, keep, &k);
    d.kind = MF_VALUE;
    encode(&d, y, keep, &v);
    snprintf(name, sizeof name, "%s-b%u-r%u-t%u-d%u-k%u", layout ? "nat" : "ref", bits, rows,
             tokens, dim, keep);
    mf_container_size(&k, &v, &len);
    buf = (uint8_t *)malloc(len + 16 + 2 * n * 2 + fz_put_ctensor(NULL, &k) +
                            fz_put_ctensor(NULL, &v));
    mf_container_write_mem(&k, &v, buf, len);
    put("container", name, buf, len);

    if (rows <= 3 && n <= 1u << 14) { /* fuzz_validate: desc, fix-ups, arrays */
        at = fz_put_desc(buf, &k.desc);
        buf[at++] = FZ_AUTO_WORDS | FZ_AUTO_OFFSETS;
        at += fz_put_ctensor(buf + at, &k);
        put("validate", name, buf, at);
    }
    if (rows <= 2 && n <= 1u << 13) { /* fuzz_roundtrip: desc, options, keep, data */
        at = fz_put_desc(buf, &v.desc);
        buf[at++] = 0;
        buf[at++] = (uint8_t)keep;
        memcpy(buf + at, y, n * 2);
        put("roundtrip", name, buf, at + n * 2);
    }
    if (rows <= 2 && n <= 5u << 14) { /* fuzz_attend: desc, group 2, all fix-ups, q, K, V */
        at = fz_put_desc(buf, &k.desc);
        buf[at++] = 1;
        buf[at++] = 0;
        memcpy(buf + at, q, (size_t)rows * 2 * dim * 2);
        at += (size_t)rows * 2 * dim * 2;
        at += fz_put_ctensor(buf + at, &k);
        at += fz_put_ctensor(buf + at, &v);
        put("attend", name, buf, at);
    }
    mf_ctensor_free(&k);
    mf_ctensor_free(&v);
    free(buf);
    free(x);
    free(y);
    free(q);
}

/* fuzz_validate's raw descriptor (fz_desc mode bit 7) and payload_words:
 * shapes within the limits reach the checks behind mf_desc_check. */
static void raw(const char *name, uint32_t rows, uint32_t tokens, uint32_t dim, uint64_t words) {
    uint8_t b[24] = {0x80, 0, 1, 2};
    uint32_t v[3];
    unsigned i;
    v[0] = rows;
    v[1] = tokens;
    v[2] = dim;
    for (i = 0; i < 16; i++) /* rows, tokens, dim, then words (low half first) */
        b[4 + i] = (uint8_t)((i < 12 ? v[i / 4] : (uint32_t)words) >> (8 * (i % 4)));
    for (i = 0; i < 4; i++)
        b[20 + i] = (uint8_t)((words >> 32) >> (8 * i));
    put("validate", name, b, sizeof b);
}

/* A .npy file of version major (1: u16 header length, 2 and 3: u32). */
static void npy(const char *name, int major, const char *descr, const char *shape,
                uint64_t count) {
    uint8_t buf[4096];
    char h[256];
    size_t pre = major == 1 ? 10u : 12u, hl, i;
    size_t esz = descr[3] == '2' ? 2u : 4u;
    hl = (size_t)snprintf(h, sizeof h, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }",
                          descr, shape);
    while ((pre + hl + 1) % 64)
        h[hl++] = ' ';
    h[hl++] = '\n';
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (uint8_t)major;
    buf[7] = 0;
    buf[8] = (uint8_t)hl;
    buf[9] = (uint8_t)(hl >> 8);
    buf[10] = buf[11] = 0;
    memcpy(buf + pre, h, hl);
    for (i = 0; i < count * esz; i += 2) {
        uint16_t v = half();
        buf[pre + hl + i] = (uint8_t)v;
        buf[pre + hl + i + 1] = (uint8_t)(v >> 8);
    }
    put("npy", name, buf, pre + hl + count * esz);
}

int main(int argc, char **argv) {
    static const char *targets[] = {"container", "validate", "roundtrip", "attend", "npy"};
    char dir[1024];
    unsigned i;
    if (argc != 2) {
        fprintf(stderr, "usage: gen_corpus DIR\n");
        return 2;
    }
    root = argv[1];
    for (i = 0; i < 5; i++) {
        FILE *probe;
        snprintf(dir, sizeof dir, "%s/%s/.keep", root, targets[i]);
        if (!(probe = fopen(dir, "wb"))) {
            fprintf(stderr, "gen_corpus: %s/%s/ must exist\n", root, targets[i]);
            return 1;
        }
        fclose(probe);
        remove(dir);
    }
    fz_set_threads(1);
    /* layout, bits, rows, tokens, dim, keep: windows only, one block,
     * block + window, several rows and blocks (where layouts differ),
     * every dim, dense to very sparse. */
    shape(MF_LAYOUT_REFERENCE, 2, 1, 1, 64, 20);
    shape(MF_LAYOUT_REFERENCE, 0, 1, 64, 64, 20);
    shape(MF_LAYOUT_REFERENCE, 2, 1, 64, 64, 32);
    shape(MF_LAYOUT_REFERENCE, 4, 1, 65, 64, 64);
    shape(MF_LAYOUT_NATIVE, 4, 2, 128, 64, 8);
    shape(MF_LAYOUT_NATIVE, 0, 2, 130, 64, 16);
    shape(MF_LAYOUT_NATIVE, 2, 3, 128, 64, 4);
    shape(MF_LAYOUT_REFERENCE, 2, 2, 64, 64, 0);
    shape(MF_LAYOUT_REFERENCE, 4, 1, 64, 128, 38);
    shape(MF_LAYOUT_NATIVE, 0, 1, 70, 128, 40);
    shape(MF_LAYOUT_REFERENCE, 0, 1, 64, 256, 77);
    shape(MF_LAYOUT_NATIVE, 2, 1, 3, 256, 100);
    raw("raw-null-arrays", 1024, 4096, 256, 100);
    raw("raw-payload-words-2p32", 1, 64, 64, UINT64_C(1) << 32);
    npy("f2-1d", 1, "<f2", "(5,)", 5);
    npy("f2-3d", 1, "<f2", "(2, 3, 4)", 24);
    npy("f4-2d", 1, "<f4", "(2, 64)", 128);
    npy("f2-4d-v2", 2, "<f2", "(1, 2, 1, 3)", 6);
    npy("f4-v3", 3, "<f4", "(3,)", 3);
    npy("f2-empty", 1, "<f2", "(0, 4)", 0);
    return 0;
}
