/* npy.c - NumPy .npy import and export of dense fp16/fp32 arrays.
 *
 * Reads format versions 1.0, 2.0 and 3.0 with descr '<f2' or '<f4', C
 * order, 1 to 4 dims; writes version 1.0. The header is parsed strictly: anything
 * unexpected is an error that names it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats.h"

#define NPY_MAX_HEADER 65536u

static const char *skip_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* Finds 'key': in the dict text and returns the position after the colon. */
static const char *find_key(const char *h, const char *end, const char *key) {
    size_t n = strlen(key);
    const char *p;
    for (p = h; p + n + 2 < end; p++)
        if ((*p == '\'' || *p == '"') && memcmp(p + 1, key, n) == 0 && p[n + 1] == *p) {
            const char *q = skip_ws(p + n + 2, end);
            if (q < end && *q == ':')
                return skip_ws(q + 1, end);
        }
    return NULL;
}

static mf_status parse_header(const char *h, const char *end, mf_array *a, mf_diag *diag) {
    const char *p;
    uint64_t count = 1;
    if (!(p = find_key(h, end, "descr")))
        return mf__fail(diag, MF_ERR_HEADER, ".npy header has no 'descr'");
    if (end - p >= 5 && (p[0] == '\'' || p[0] == '"') && p[4] == p[0] && p[1] == '<' &&
        p[2] == 'f' && (p[3] == '2' || p[3] == '4'))
        a->dtype = p[3] == '2' ? MF_F16 : MF_F32;
    else {
        /* Name the file's dtype where it is a closed string of at most
         * 16 printable characters inside the header. */
        char got[17];
        int n = 0;
        if (p < end && (p[0] == '\'' || p[0] == '"'))
            while (n < 16 && p + 1 + n < end && p[1 + n] != p[0] && p[1 + n] >= ' ' &&
                   p[1 + n] <= '~') {
                got[n] = p[1 + n];
                n++;
            }
        got[n] = 0;
        if (!n || p + 1 + n >= end || p[1 + n] != p[0])
            return mf__fail(diag, MF_ERR_DTYPE, ".npy descr is not '<f2' (float16) or '<f4' (float32)");
        return mf__fail(diag, MF_ERR_DTYPE, ".npy descr is '%s', not '<f2' (float16) or '<f4' (float32)",
                        got);
    }
    if (!(p = find_key(h, end, "fortran_order")))
        return mf__fail(diag, MF_ERR_HEADER, ".npy header has no 'fortran_order'");
    if (end - p >= 5 && memcmp(p, "False", 5) == 0)
        ;
    else
        return mf__fail(diag, MF_ERR_HEADER, ".npy fortran_order must be False (C order)");
    if (!(p = find_key(h, end, "shape")) || p == end || *p != '(')
        return mf__fail(diag, MF_ERR_HEADER, ".npy header has no 'shape' tuple");
    p = skip_ws(p + 1, end);
    a->ndim = 0;
    while (p < end && *p != ')') {
        uint64_t v = 0;
        int digits = 0;
        while (p < end && *p >= '0' && *p <= '9') {
            if (v > (UINT64_C(1) << 40))
                return mf__fail(diag, MF_ERR_LIMIT, ".npy shape entry is too large");
            v = v * 10 + (uint64_t)(*p - '0');
            p++;
            digits++;
        }
        if (!digits)
            return mf__fail(diag, MF_ERR_HEADER, ".npy shape is not a tuple of integers");
        if (a->ndim == 4)
            return mf__fail(diag, MF_ERR_DIMS, ".npy array has more than 4 dimensions");
        a->shape[a->ndim++] = v;
        if (!mf__mul64(count, v, &count) || count > (UINT64_C(1) << 36))
            return mf__fail(diag, MF_ERR_LIMIT, ".npy element count exceeds 2^36");
        p = skip_ws(p, end);
        if (p < end && *p == ',')
            p = skip_ws(p + 1, end);
    }
    if (p >= end)
        return mf__fail(diag, MF_ERR_HEADER, ".npy shape tuple is not closed");
    if (a->ndim == 0)
        return mf__fail(diag, MF_ERR_DIMS, ".npy array is a scalar (shape ())");
    a->count = count;
    return MF_OK;
}

mf_status mf_npy_read_mem(const uint8_t *buf, uint64_t len, mf_array *a, mf_diag *diag) {
    uint32_t major, hlen, hstart;
    uint64_t esz, bytes, i;
    mf_status st;
    if (!buf || !a)
        return mf__fail(diag, MF_ERR_NULL, "buffer or array is NULL");
    memset(a, 0, sizeof *a);
    if (len < 10 || memcmp(buf, "\x93NUMPY", 6) != 0)
        return mf__fail(diag, MF_ERR_MAGIC, "not a .npy file (magic bytes differ)");
    major = buf[6];
    if (major == 1) {
        hlen = (uint32_t)(buf[8] | buf[9] << 8);
        hstart = 10;
    } else if (major == 2 || major == 3) {
        if (len < 12)
            return mf__fail(diag, MF_ERR_TRUNCATED, ".npy header is truncated");
        hlen = mf__ld32(buf + 8);
        hstart = 12;
    } else {
        return mf__fail(diag, MF_ERR_VERSION, ".npy version %u.%u is not 1, 2 or 3", major, buf[7]);
    }
    if (hlen > NPY_MAX_HEADER)
        return mf__fail(diag, MF_ERR_LIMIT, ".npy header length %u exceeds %u", hlen, NPY_MAX_HEADER);
    if (len < (uint64_t)hstart + hlen)
        return mf__fail(diag, MF_ERR_TRUNCATED, ".npy header is truncated");
    if ((st = parse_header((const char *)buf + hstart, (const char *)buf + hstart + hlen, a,
                           diag)) != MF_OK)
        return st;
    esz = a->dtype == MF_F16 ? 2 : 4;
    bytes = a->count * esz; /* count <= 2^36: no overflow */
    if (len - hstart - hlen < bytes)
        return mf__fail(diag, MF_ERR_TRUNCATED, ".npy data has %llu bytes, shape needs %llu",
                        (unsigned long long)(len - hstart - hlen), (unsigned long long)bytes);
    if (len - hstart - hlen > bytes)
        return mf__fail(diag, MF_ERR_HEADER, ".npy file has %llu bytes after the data",
                        (unsigned long long)(len - hstart - hlen - bytes));
    if (bytes > SIZE_MAX || !(a->data = malloc(bytes ? (size_t)bytes : 1)))
        return mf__fail(diag, MF_ERR_NOMEM, "cannot allocate %llu bytes", (unsigned long long)bytes);
    buf += hstart + hlen;
    for (i = 0; i < a->count; i++) {
        if (esz == 2)
            ((uint16_t *)a->data)[i] = (uint16_t)(buf[2 * i] | buf[2 * i + 1] << 8);
        else
            ((uint32_t *)a->data)[i] = mf__ld32(buf + 4 * i);
    }
    return MF_OK;
}

mf_status mf_npy_load(const char *path, mf_array *a, mf_diag *diag) {
    uint8_t *buf;
    uint64_t len;
    mf_status st;
    if (!a)
        return mf__fail(diag, MF_ERR_NULL, "array is NULL");
    memset(a, 0, sizeof *a);
    if ((st = mf__read_file(path, UINT64_C(1) << 40, &buf, &len, diag)) != MF_OK)
        return st;
    st = mf_npy_read_mem(buf, len, a, diag);
    free(buf);
    return st;
}

/* a as .npy bytes in a malloc'd buffer. */
static mf_status npy_encode(const mf_array *a, uint8_t **out, uint64_t *len, mf_diag *diag) {
    char h[256];
    int n;
    uint32_t i, hlen;
    uint64_t esz, bytes, total, k;
    uint8_t *buf;
    if (!a || !a->data)
        return mf__fail(diag, MF_ERR_NULL, "array or its data is NULL");
    if (a->ndim < 1 || a->ndim > 4 || (a->dtype != MF_F16 && a->dtype != MF_F32))
        return mf__fail(diag, MF_ERR_ARG, "array must have 1..4 dims and dtype f16 or f32");
    n = snprintf(h, sizeof h, "{'descr': '<f%c', 'fortran_order': False, 'shape': (",
                 a->dtype == MF_F16 ? '2' : '4');
    for (i = 0; i < a->ndim; i++)
        n += snprintf(h + n, sizeof h - (size_t)n, "%llu,%s", (unsigned long long)a->shape[i],
                      i + 1 < a->ndim ? " " : "");
    if (a->ndim > 1)
        n--; /* numpy writes (2, 3) but (2,) */
    n += snprintf(h + n, sizeof h - (size_t)n, "), }");
    /* Pad with spaces and a newline so the data starts 64-byte aligned. */
    hlen = (uint32_t)n + 1;
    hlen += (64u - (10u + hlen) % 64u) % 64u;
    esz = a->dtype == MF_F16 ? 2 : 4;
    if (!mf__mul64(a->count, esz, &bytes) || !mf__add64(bytes, 10u + hlen, &total) ||
        total > SIZE_MAX)
        return mf__fail(diag, MF_ERR_OVERFLOW, "array too large");
    if (!(buf = (uint8_t *)malloc((size_t)total)))
        return mf__fail(diag, MF_ERR_NOMEM, "cannot allocate %llu bytes", (unsigned long long)total);
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (uint8_t)hlen;
    buf[9] = (uint8_t)(hlen >> 8);
    memcpy(buf + 10, h, (size_t)n);
    memset(buf + 10 + n, ' ', hlen - (uint32_t)n - 1);
    buf[10 + hlen - 1] = '\n';
    for (k = 0; k < a->count; k++) {
        uint8_t *p = buf + 10 + hlen + k * esz;
        if (esz == 2) {
            uint16_t v = ((const uint16_t *)a->data)[k];
            p[0] = (uint8_t)v;
            p[1] = (uint8_t)(v >> 8);
        } else {
            mf__st32(p, ((const uint32_t *)a->data)[k]);
        }
    }
    *out = buf;
    *len = total;
    return MF_OK;
}

mf_status mf_npy_save(const char *path, const mf_array *a, mf_diag *diag) {
    return mf_npy_save_all(1, &path, a, diag);
}

mf_status mf_npy_save_all(uint32_t n, const char *const *paths, const mf_array *arrays,
                          mf_diag *diag) {
    uint8_t **bufs;
    uint64_t *lens;
    uint32_t i;
    mf_status st = MF_OK;
    if (!paths || (n && !arrays))
        return mf__fail(diag, MF_ERR_NULL, "paths or arrays are NULL");
    bufs = (uint8_t **)calloc(n ? n : 1, sizeof *bufs);
    lens = (uint64_t *)calloc(n ? n : 1, sizeof *lens);
    if (!bufs || !lens)
        st = mf__fail(diag, MF_ERR_NOMEM, "out of memory");
    for (i = 0; i < n && st == MF_OK; i++)
        st = npy_encode(&arrays[i], &bufs[i], &lens[i], diag);
    if (st == MF_OK)
        st = mf__write_files(n, paths, (const uint8_t *const *)bufs, lens, diag);
    for (i = 0; bufs && i < n; i++)
        free(bufs[i]);
    free(bufs);
    free(lens);
    return st;
}

void mf_array_free(mf_array *a) {
    if (!a)
        return;
    free(a->data);
    a->data = NULL;
    a->count = 0;
}

mf_status mf_array_convert(mf_array *a, mf_dtype to) {
    uint64_t i;
    void *out;
    if (!a || (!a->data && a->count))
        return MF_ERR_NULL;
    if (to != MF_F16 && to != MF_F32)
        return MF_ERR_ARG;
    if (a->dtype == to)
        return MF_OK;
    if (a->count > SIZE_MAX / 4 || !(out = malloc(a->count ? (size_t)a->count * 4 : 1)))
        return MF_ERR_NOMEM;
    for (i = 0; i < a->count; i++) {
        if (to == MF_F16)
            ((uint16_t *)out)[i] = mf_fp16_from_float(((const float *)a->data)[i]);
        else
            ((float *)out)[i] = mf_fp16_to_float(((const uint16_t *)a->data)[i]);
    }
    free(a->data);
    a->data = out;
    a->dtype = to;
    return MF_OK;
}
