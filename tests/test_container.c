/* test_container.c - container and .npy round trips and corruption. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <stdio.h>
#include <unistd.h>

#include "helpers.h"

static mf_ctensor k, v;
static uint8_t *buf;
static uint64_t len;

static void setup(void) {
    uint64_t seed = 21;
    uint32_t rows = 2, tokens = 100, dim = 64;
    uint16_t *x = th_dense(&seed, (size_t)rows * tokens * dim, 1.0f);
    mf_desc dk = th_desc(MF_KEY, MF_LAYOUT_REFERENCE, 2, rows, tokens, dim);
    mf_desc dv = th_desc(MF_VALUE, MF_LAYOUT_REFERENCE, 2, rows, tokens, dim);
    cr_assert_eq(th_encode(&dk, x, 20, &k), MF_OK);
    cr_assert_eq(th_encode(&dv, x, 20, &v), MF_OK);
    free(x);
    cr_assert_eq(mf_container_size(&k, &v, &len), MF_OK);
    buf = (uint8_t *)malloc(len);
    cr_assert_eq(mf_container_write_mem(&k, &v, buf, len), MF_OK);
}

static void teardown(void) {
    mf_ctensor_free(&k);
    mf_ctensor_free(&v);
    free(buf);
}

TestSuite(container, .init = setup, .fini = teardown);

static void st32(uint8_t *p, uint32_t x) {
    p[0] = (uint8_t)x, p[1] = (uint8_t)(x >> 8), p[2] = (uint8_t)(x >> 16), p[3] = (uint8_t)(x >> 24);
}

/* Recomputes the header CRC after a deliberate header edit, so the test
 * reaches the field check behind it. */
static uint32_t crc32(uint32_t crc, const uint8_t *p, size_t n) {
    int b;
    crc = ~crc;
    while (n--) {
        crc ^= *p++;
        for (b = 0; b < 8; b++)
            crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

static void fix_header_crc(void) {
    st32(buf + 60, crc32(crc32(0, buf, 60), buf + 64, 12 * 24));
}

static void expect(mf_status st, const char *field) {
    mf_ctensor k2, v2;
    mf_diag diag;
    memset(&diag, 0, sizeof diag);
    cr_assert_eq(mf_container_read_mem(buf, len, &k2, &v2, &diag), st, "got: %s", diag.msg);
    cr_assert(strstr(diag.msg, field) != NULL, "message '%s' lacks '%s'", diag.msg, field);
    cr_assert_null(k2.bitmaps); /* nothing stays allocated */
    cr_assert_null(v2.payload);
}

Test(container, round_trip_is_exact) {
    mf_ctensor k2, v2;
    mf_sizes s;
    uint8_t *again = (uint8_t *)malloc(len);
    cr_assert_eq(mf_container_read_mem(buf, len, &k2, &v2, NULL), MF_OK);
    mf_sizes_of(&k.desc, 0, &s);
    cr_assert_eq(memcmp(k2.bitmaps, k.bitmaps, s.tiles * 8), 0);
    cr_assert_eq(memcmp(v2.payload, v.payload, v.payload_words * 4), 0);
    cr_assert_eq(memcmp(k2.window, k.window, s.window * 2), 0);
    cr_assert_eq(mf_container_write_mem(&k2, &v2, again, len), MF_OK);
    cr_assert_eq(memcmp(again, buf, len), 0);
    free(again);
    mf_ctensor_free(&k2);
    mf_ctensor_free(&v2);
}

Test(container, bad_magic) {
    buf[1] = 'X';
    expect(MF_ERR_MAGIC, "magic");
}

Test(container, bad_version) {
    buf[8] = 2;
    expect(MF_ERR_VERSION, "version 2");
}

Test(container, header_checksum) {
    buf[24] ^= 1; /* rows */
    expect(MF_ERR_CHECKSUM, "header_crc");
}

Test(container, header_dims) {
    st32(buf + 32, 96);
    fix_header_crc();
    expect(MF_ERR_HEADER, "dim 96");
    st32(buf + 32, 64);
    st32(buf + 20, 3);
    fix_header_crc();
    expect(MF_ERR_HEADER, "bits 3");
}

Test(container, header_huge_dims_do_not_allocate) {
    st32(buf + 24, 1u << 20); /* rows at the limit: over the element limit */
    st32(buf + 28, 1u << 14);
    fix_header_crc();
    expect(MF_ERR_HEADER, "2^34");
    st32(buf + 24, 1u << 14); /* within limits: sections no longer match */
    st32(buf + 28, 1u << 10);
    fix_header_crc();
    expect(MF_ERR_HEADER, "length");
}

Test(container, section_length) {
    st32(buf + 64 + 24 * 4 + 16, 7); /* k.payload length */
    fix_header_crc();
    expect(MF_ERR_HEADER, "k.payload");
}

Test(container, section_checksum) {
    buf[len - 3] ^= 0x40; /* inside v.window */
    expect(MF_ERR_CHECKSUM, "v.window");
}

Test(container, truncated_and_trailing) {
    len -= 8;
    expect(MF_ERR_TRUNCATED, "bytes");
    len = 100;
    expect(MF_ERR_TRUNCATED, "header");
    len += 8 + 0; /* restore below */
}

Test(container, trailing_bytes) {
    uint8_t *b2 = (uint8_t *)calloc(len + 5, 1);
    memcpy(b2, buf, len);
    free(buf);
    buf = b2;
    len += 5;
    expect(MF_ERR_HEADER, "trailing");
}

Test(container, invalid_tensor_inside) {
    /* a consistent file whose K offsets are wrong: rewrite the section and
     * its CRC, so only mf_validate can catch it */
    uint8_t *e = buf + 64 + 24 * 1; /* k.offsets entry */
    uint64_t off = (uint64_t)e[8] | (uint64_t)e[9] << 8 | (uint64_t)e[10] << 16;
    st32(buf + off + 4 * 3, 0xffffu);
    st32(e + 4, crc32(0, buf + off, (size_t)(k.desc.rows * (k.desc.tokens / 64) * 64 * 4)));
    fix_header_crc();
    expect(MF_ERR_OFFSET_RANGE, "K: offsets[3]");
}

Test(container, save_never_clobbers_on_failure) {
    char path[] = "/tmp/mf-test-XXXXXX";
    int fd = mkstemp(path);
    mf_ctensor bad = v;
    mf_diag diag;
    FILE *f;
    char got[8] = {0};
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, "keepme", 6), 6);
    close(fd);
    bad.desc.kind = MF_KEY; /* K twice: rejected before writing */
    cr_assert_neq(mf_container_save(path, &k, &bad, &diag), MF_OK);
    f = fopen(path, "rb");
    cr_assert_eq(fread(got, 1, 6, f), 6);
    fclose(f);
    cr_assert_str_eq(got, "keepme");
    cr_assert_eq(mf_container_save(path, &k, &v, &diag), MF_OK);
    {
        mf_ctensor k2, v2;
        cr_assert_eq(mf_container_load(path, &k2, &v2, &diag), MF_OK);
        mf_ctensor_free(&k2);
        mf_ctensor_free(&v2);
    }
    {
        mf_ctensor k3, v3;
        cr_assert_eq(mf_container_load("/nonexistent/x.mfkv", &k3, &v3, &diag), MF_ERR_IO);
        cr_assert(strstr(diag.msg, "/nonexistent/x.mfkv"));
    }
    unlink(path);
}

/* ---- .npy ---------------------------------------------------------- */

Test(npy, round_trip_f16_and_f32) {
    char path[] = "/tmp/mf-npy-XXXXXX";
    mf_array a, b;
    uint16_t data[6] = {1, 2, 3, 0x3c00, 0xbc00, 0x7bff};
    int fd = mkstemp(path);
    close(fd);
    memset(&a, 0, sizeof a);
    a.dtype = MF_F16;
    a.ndim = 2;
    a.shape[0] = 2;
    a.shape[1] = 3;
    a.count = 6;
    a.data = data;
    cr_assert_eq(mf_npy_save(path, &a, NULL), MF_OK);
    cr_assert_eq(mf_npy_load(path, &b, NULL), MF_OK);
    cr_assert_eq(b.ndim, 2);
    cr_assert_eq(b.shape[1], 3);
    cr_assert_eq(memcmp(b.data, data, 12), 0);
    cr_assert_eq(mf_array_convert(&b, MF_F32), MF_OK);
    cr_assert_eq(((float *)b.data)[3], 1.0f);
    cr_assert_eq(mf_array_convert(&b, MF_F16), MF_OK);
    cr_assert_eq(memcmp(b.data, data, 12), 0);
    mf_array_free(&b);
    unlink(path);
}

/* All or none: a second path that cannot be written (here the first
 * again, under another name) leaves the first file as it was. */
Test(npy, save_all_is_all_or_none) {
    char dirpath[] = "/tmp/mf-npy-XXXXXX", p0[64], p1[64];
    const char *paths[2];
    mf_array a[2], b;
    uint16_t d0[2] = {0x3c00, 0x4000}, d1[2] = {0x4200, 0x4400};
    mf_diag diag = {{0}};
    int i;
    cr_assert_not_null(mkdtemp(dirpath));
    snprintf(p0, sizeof p0, "%s/k.npy", dirpath);
    snprintf(p1, sizeof p1, "%s/../%s/k.npy", dirpath, strrchr(dirpath, '/') + 1);
    memset(a, 0, sizeof a);
    for (i = 0; i < 2; i++) {
        a[i].dtype = MF_F16;
        a[i].ndim = 1;
        a[i].shape[0] = a[i].count = 2;
    }
    a[0].data = d0;
    a[1].data = d1;
    cr_assert_eq(mf_npy_save(p0, &a[0], NULL), MF_OK);
    paths[0] = p0;
    paths[1] = p1;
    cr_assert_eq(mf_npy_save_all(2, paths, a, &diag), MF_ERR_ARG);
    cr_assert(strstr(diag.msg, "same file"), "%s", diag.msg);
    cr_assert_eq(mf_npy_load(p0, &b, NULL), MF_OK);
    cr_assert_eq(memcmp(b.data, d0, 4), 0);
    mf_array_free(&b);
    snprintf(p1, sizeof p1, "%s/v.npy", dirpath);
    cr_assert_eq(mf_npy_save_all(2, paths, a, NULL), MF_OK);
    cr_assert_eq(mf_npy_load(p1, &b, NULL), MF_OK);
    cr_assert_eq(memcmp(b.data, d1, 4), 0);
    mf_array_free(&b);
    cr_assert_eq(unlink(p0), 0);
    cr_assert_eq(unlink(p1), 0);
    cr_assert_eq(rmdir(dirpath), 0);
}

static mf_status parse(const char *header, size_t data_bytes, mf_diag *diag) {
    uint8_t raw[512];
    size_t hl = strlen(header);
    mf_array a;
    mf_status st;
    memset(raw, 0, sizeof raw);
    memcpy(raw, "\x93NUMPY\x01\x00", 8);
    raw[8] = (uint8_t)hl;
    memcpy(raw + 10, header, hl);
    st = mf_npy_read_mem(raw, 10 + hl + data_bytes, &a, diag);
    mf_array_free(&a);
    return st;
}

Test(npy, header_errors) {
    mf_diag d;
    cr_assert_eq(parse("{'descr': '<f2', 'fortran_order': False, 'shape': (2, 3), }\n", 12, &d),
                 MF_OK);
    cr_assert_eq(parse("{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }\n", 8, &d),
                 MF_ERR_DTYPE);
    cr_assert(strstr(d.msg, "descr is '<i4'"), "%s", d.msg);
    cr_assert_eq(parse("{'descr': '<f2\n", 8, &d), MF_ERR_DTYPE); /* unclosed: not quoted back */
    cr_assert(strstr(d.msg, "descr is not"), "%s", d.msg);
    cr_assert_eq(parse("{'descr': 'abcdefghijklmnopq', 'fortran_order': False, 'shape': (2,), }\n", 8, &d),
                 MF_ERR_DTYPE); /* too long to quote whole */
    cr_assert(strstr(d.msg, "descr is not"), "%s", d.msg);
    cr_assert_eq(parse("{'descr': '>f2', 'fortran_order': False, 'shape': (2,), }\n", 4, &d),
                 MF_ERR_DTYPE);
    cr_assert_eq(parse("{'descr': '<f2', 'fortran_order': True, 'shape': (2,), }\n", 4, &d),
                 MF_ERR_HEADER);
    cr_assert(strstr(d.msg, "fortran_order"));
    cr_assert_eq(parse("{'descr': '<f2', 'fortran_order': False, 'shape': (2, 3), }\n", 11, &d),
                 MF_ERR_TRUNCATED);
    cr_assert_eq(parse("{'descr': '<f2', 'fortran_order': False, 'shape': (2, 3), }\n", 14, &d),
                 MF_ERR_HEADER);
    cr_assert_eq(parse("{'descr': '<f2', 'fortran_order': False, 'shape': (1,1,1,1,1), }\n", 2,
                       &d), MF_ERR_DIMS);
    cr_assert_eq(parse("{'descr': '<f2', 'fortran_order': False, 'shape': (99999999999,99999999), }\n",
                       2, &d), MF_ERR_LIMIT);
    cr_assert_eq(parse("{'descr': '<f2', 'fortran_order': False, 'shape': (), }\n", 2, &d),
                 MF_ERR_DIMS);
    cr_assert_eq(parse("{'descr': '<f2', 'fortran_order': False, 'shape': (2, 3\n", 12, &d),
                 MF_ERR_HEADER);
    {
        mf_array a;
        cr_assert_eq(mf_npy_read_mem((const uint8_t *)"PK\x03\x04junkjunk", 12, &a, &d),
                     MF_ERR_MAGIC);
    }
}
