/* container.c - the .mfkv container: one layer's compressed K and V.
 *
 * formats/CONTAINER.md documents every byte. The reader trusts nothing:
 * header fields are checked against the limits, section sizes against
 * the dims, every section against the buffer and its CRC, and finally
 * both tensors go through mf_validate. Allocation never exceeds the
 * input's length. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats.h"

#define HEADER_BYTES 64u
#define SECTIONS 12u /* 6 arrays for K, then 6 for V */
#define ENTRY_BYTES 24u
#define TABLE_END (HEADER_BYTES + SECTIONS * ENTRY_BYTES)
#define VERSION_MAJOR 1u
#define VERSION_MINOR 0u

static const uint8_t magic[8] = {0x89, 'M', 'F', 'K', 'V', '\r', '\n', 0x1a};

static const char *const section_names[6] = {"bitmaps", "offsets", "scales",
                                              "zeros",   "payload", "window"};
static const uint32_t elem_bytes[6] = {8, 4, 2, 2, 4, 2};

/* Element counts of the six arrays of a tensor. */
static void array_counts(const mf_sizes *s, uint32_t bits, uint64_t payload_words,
                         uint64_t n[6]) {
    n[0] = s->tiles;
    n[1] = s->offsets;
    n[2] = bits ? s->tiles : 0;
    n[3] = bits ? s->tiles : 0;
    n[4] = payload_words;
    n[5] = s->window;
}

/* CRC of header bytes [0, 60) and the section table [64, TABLE_END). */
static uint32_t header_crc(const uint8_t *buf) {
    return mf__crc32(mf__crc32(0, buf, 60), buf + HEADER_BYTES, TABLE_END - HEADER_BYTES);
}

static uint64_t align8(uint64_t x) { return (x + 7u) & ~(uint64_t)7u; }

static void put_array(uint8_t *p, const void *src, uint64_t n, uint32_t eb) {
    uint64_t i;
    for (i = 0; i < n; i++) {
        if (eb == 8)
            mf__st64(p + i * 8, ((const uint64_t *)src)[i]);
        else if (eb == 4)
            mf__st32(p + i * 4, ((const uint32_t *)src)[i]);
        else {
            uint16_t v = ((const uint16_t *)src)[i];
            p[i * 2] = (uint8_t)v;
            p[i * 2 + 1] = (uint8_t)(v >> 8);
        }
    }
}

static void get_array(const uint8_t *p, void *dst, uint64_t n, uint32_t eb) {
    uint64_t i;
    for (i = 0; i < n; i++) {
        if (eb == 8)
            ((uint64_t *)dst)[i] = mf__ld64(p + i * 8);
        else if (eb == 4)
            ((uint32_t *)dst)[i] = mf__ld32(p + i * 4);
        else
            ((uint16_t *)dst)[i] = (uint16_t)(p[i * 2] | p[i * 2 + 1] << 8);
    }
}

static void *array_ptr(const mf_ctensor *c, unsigned a) {
    switch (a) {
    case 0: return c->bitmaps;
    case 1: return c->offsets;
    case 2: return c->scales;
    case 3: return c->zeros;
    case 4: return c->payload;
    default: return c->window;
    }
}

/* The two tensors must describe one layer: same variant and shape. */
static mf_status check_pair(const mf_ctensor *k, const mf_ctensor *v, mf_diag *diag) {
    mf_status st;
    if (!k || !v)
        return mf__fail(diag, MF_ERR_NULL, "K or V tensor is NULL");
    if (k->desc.kind != MF_KEY || v->desc.kind != MF_VALUE)
        return mf__fail(diag, MF_ERR_ARG, "first tensor must be K, second V");
    if (k->desc.layout != v->desc.layout || k->desc.bits != v->desc.bits ||
        k->desc.rows != v->desc.rows || k->desc.tokens != v->desc.tokens ||
        k->desc.dim != v->desc.dim)
        return mf__fail(diag, MF_ERR_DIMS, "K and V differ in layout, bits or shape");
    if ((st = mf_validate(k, diag)) != MF_OK || (st = mf_validate(v, diag)) != MF_OK)
        return st;
    return MF_OK;
}

/* Lays out the 12 sections after the table: offsets and lengths. */
static mf_status plan(const mf_desc *d, uint64_t kw, uint64_t vw, uint64_t off[12],
                      uint64_t len[12], uint64_t *total) {
    mf_sizes s;
    uint64_t n[6], pos = TABLE_END;
    unsigned t, a;
    mf_status st;
    if ((st = mf_sizes_of(d, 0, &s)) != MF_OK)
        return st;
    for (t = 0; t < 2; t++) {
        array_counts(&s, d->bits, t ? vw : kw, n);
        for (a = 0; a < 6; a++) {
            unsigned i = t * 6 + a;
            if (!mf__mul64(n[a], elem_bytes[a], &len[i]))
                return MF_ERR_OVERFLOW;
            off[i] = pos;
            if (!mf__add64(pos, len[i], &pos) || pos > UINT64_MAX - 8)
                return MF_ERR_OVERFLOW;
            pos = align8(pos);
        }
    }
    *total = pos;
    return MF_OK;
}

mf_status mf_container_size(const mf_ctensor *k, const mf_ctensor *v, uint64_t *bytes) {
    uint64_t off[12], len[12];
    mf_status st;
    if (!bytes)
        return MF_ERR_NULL;
    if ((st = check_pair(k, v, NULL)) != MF_OK)
        return st;
    return plan(&k->desc, k->payload_words, v->payload_words, off, len, bytes);
}

/* Writes the container of a checked pair, laid out by plan, into buf
 * (total bytes). */
static void serialize(const mf_ctensor *k, const mf_ctensor *v, const uint64_t off[12],
                      const uint64_t len[12], uint64_t total, uint8_t *buf) {
    unsigned i;
    memset(buf, 0, (size_t)total);
    memcpy(buf, magic, 8);
    buf[8] = (uint8_t)VERSION_MAJOR;
    buf[10] = (uint8_t)VERSION_MINOR;
    mf__st32(buf + 12, TABLE_END);
    mf__st32(buf + 16, (uint32_t)k->desc.layout);
    mf__st32(buf + 20, k->desc.bits);
    mf__st32(buf + 24, k->desc.rows);
    mf__st32(buf + 28, k->desc.tokens);
    mf__st32(buf + 32, k->desc.dim);
    mf__st32(buf + 36, SECTIONS);
    mf__st64(buf + 40, k->payload_words);
    mf__st64(buf + 48, v->payload_words);
    for (i = 0; i < SECTIONS; i++) {
        const mf_ctensor *c = i < 6 ? k : v;
        uint8_t *e = buf + HEADER_BYTES + i * ENTRY_BYTES;
        unsigned a = i % 6;
        if (len[i])
            put_array(buf + off[i], array_ptr(c, a), len[i] / elem_bytes[a], elem_bytes[a]);
        mf__st32(e, i + 1);
        mf__st32(e + 4, mf__crc32(0, buf + off[i], len[i]));
        mf__st64(e + 8, off[i]);
        mf__st64(e + 16, len[i]);
    }
    mf__st32(buf + 60, header_crc(buf));
}

mf_status mf_container_write_mem(const mf_ctensor *k, const mf_ctensor *v, uint8_t *buf,
                                 uint64_t buflen) {
    uint64_t off[12], len[12], total;
    mf_status st;
    if (!buf)
        return MF_ERR_NULL;
    if ((st = check_pair(k, v, NULL)) != MF_OK)
        return st;
    if ((st = plan(&k->desc, k->payload_words, v->payload_words, off, len, &total)) != MF_OK)
        return st;
    if (buflen < total)
        return MF_ERR_BUFFER_SMALL;
    serialize(k, v, off, len, total, buf);
    return MF_OK;
}

static mf_status read_header(const uint8_t *buf, uint64_t len, mf_desc *d, uint64_t pw[2],
                             mf_diag *diag) {
    uint32_t major, minor, v;
    mf_status st;
    if (len < 8 || memcmp(buf, magic, 8) != 0)
        return mf__fail(diag, MF_ERR_MAGIC, "not a mustafar container (magic bytes differ)");
    if (len < TABLE_END)
        return mf__fail(diag, MF_ERR_TRUNCATED, "file has %llu bytes, the header needs %u",
                        (unsigned long long)len, TABLE_END);
    major = (uint32_t)(buf[8] | buf[9] << 8);
    minor = (uint32_t)(buf[10] | buf[11] << 8);
    if (major != VERSION_MAJOR)
        return mf__fail(diag, MF_ERR_VERSION, "container version %u.%u, this reader reads %u.x",
                        major, minor, VERSION_MAJOR);
    if (mf__ld32(buf + 60) != header_crc(buf))
        return mf__fail(diag, MF_ERR_CHECKSUM, "header_crc 0x%08x does not match the header (0x%08x)",
                        mf__ld32(buf + 60), header_crc(buf));
    if ((v = mf__ld32(buf + 12)) != TABLE_END)
        return mf__fail(diag, MF_ERR_HEADER, "header_bytes = %u, expected %u", v, TABLE_END);
    if ((v = mf__ld32(buf + 36)) != SECTIONS)
        return mf__fail(diag, MF_ERR_HEADER, "section_count = %u, expected %u", v, SECTIONS);
    if ((v = mf__ld32(buf + 56)) != 0)
        return mf__fail(diag, MF_ERR_HEADER, "reserved = %u, must be 0", v);
    memset(d, 0, sizeof *d);
    v = mf__ld32(buf + 16);
    if (v > 1)
        return mf__fail(diag, MF_ERR_HEADER, "layout = %u, not 0 (reference) or 1 (native)", v);
    d->layout = (mf_layout)v;
    d->bits = mf__ld32(buf + 20);
    d->rows = mf__ld32(buf + 24);
    d->tokens = mf__ld32(buf + 28);
    d->dim = mf__ld32(buf + 32);
    if ((st = mf_desc_check(d, diag)) != MF_OK)
        return MF_ERR_HEADER;
    pw[0] = mf__ld64(buf + 40);
    pw[1] = mf__ld64(buf + 48);
    if (pw[0] > UINT32_MAX || pw[1] > UINT32_MAX)
        return mf__fail(diag, MF_ERR_HEADER, "%s_payload_words = %llu exceeds 2^32-1",
                        pw[0] > UINT32_MAX ? "k" : "v",
                        (unsigned long long)(pw[0] > UINT32_MAX ? pw[0] : pw[1]));
    return MF_OK;
}

mf_status mf_container_read_mem(const uint8_t *buf, uint64_t len, mf_ctensor *k, mf_ctensor *v,
                                mf_diag *diag) {
    mf_desc d;
    uint64_t pw[2], off[12], len_[12], total;
    mf_status st;
    unsigned i, t;
    if (!buf || !k || !v)
        return mf__fail(diag, MF_ERR_NULL, "buffer or output tensor is NULL");
    memset(k, 0, sizeof *k);
    memset(v, 0, sizeof *v);
    if ((st = read_header(buf, len, &d, pw, diag)) != MF_OK)
        return st;
    if (plan(&d, pw[0], pw[1], off, len_, &total) != MF_OK)
        return mf__fail(diag, MF_ERR_HEADER, "section sizes overflow");
    /* Sizes first, before any allocation: everything must fit in buf. */
    for (i = 0; i < SECTIONS; i++) {
        const uint8_t *e = buf + HEADER_BYTES + i * ENTRY_BYTES;
        const char *tn = i < 6 ? "k" : "v", *an = section_names[i % 6];
        if (mf__ld32(e) != i + 1)
            return mf__fail(diag, MF_ERR_HEADER, "section %u: id %u, expected %u", i,
                            mf__ld32(e), i + 1);
        if (mf__ld64(e + 16) != len_[i])
            return mf__fail(diag, MF_ERR_HEADER, "section %s.%s: length %llu, the dims need %llu",
                            tn, an, (unsigned long long)mf__ld64(e + 16),
                            (unsigned long long)len_[i]);
        if (mf__ld64(e + 8) != off[i])
            return mf__fail(diag, MF_ERR_HEADER, "section %s.%s: offset %llu, expected %llu", tn,
                            an, (unsigned long long)mf__ld64(e + 8), (unsigned long long)off[i]);
    }
    if (len < total)
        return mf__fail(diag, MF_ERR_TRUNCATED, "file has %llu bytes, its sections need %llu",
                        (unsigned long long)len, (unsigned long long)total);
    if (len > total)
        return mf__fail(diag, MF_ERR_HEADER, "%llu trailing bytes after the last section",
                        (unsigned long long)(len - total));
    for (i = 0; i < SECTIONS; i++) {
        const uint8_t *e = buf + HEADER_BYTES + i * ENTRY_BYTES;
        uint64_t end = off[i] + len_[i], p;
        if (mf__crc32(0, buf + off[i], len_[i]) != mf__ld32(e + 4))
            return mf__fail(diag, MF_ERR_CHECKSUM, "section %s.%s: CRC mismatch",
                            i < 6 ? "k" : "v", section_names[i % 6]);
        for (p = end; p < align8(end) && p < total; p++)
            if (buf[p])
                return mf__fail(diag, MF_ERR_PADDING, "padding byte at %llu after %s.%s is not 0",
                                (unsigned long long)p, i < 6 ? "k" : "v", section_names[i % 6]);
    }
    for (t = 0; t < 2; t++) {
        mf_ctensor *c = t ? v : k;
        d.kind = t ? MF_VALUE : MF_KEY;
        if ((st = mf_ctensor_alloc(c, &d, pw[t])) != MF_OK) {
            mf_ctensor_free(k);
            mf_ctensor_free(v);
            return mf__fail(diag, st, "cannot allocate the %s tensor", t ? "V" : "K");
        }
        c->payload_words = pw[t];
        for (i = 0; i < 6; i++)
            if (len_[t * 6 + i])
                get_array(buf + off[t * 6 + i], array_ptr(c, i), len_[t * 6 + i] / elem_bytes[i],
                          elem_bytes[i]);
        if ((st = mf_validate(c, diag)) != MF_OK) {
            if (diag) {
                char tmp[sizeof diag->msg - 4];
                memcpy(tmp, diag->msg, sizeof tmp - 1);
                tmp[sizeof tmp - 1] = 0;
                snprintf(diag->msg, sizeof diag->msg, "%s: %s", t ? "V" : "K", tmp);
            }
            mf_ctensor_free(k);
            mf_ctensor_free(v);
            return st;
        }
    }
    return MF_OK;
}

mf_status mf_container_save(const char *path, const mf_ctensor *k, const mf_ctensor *v,
                            mf_diag *diag) {
    uint64_t off[12], len[12], total;
    uint8_t *buf;
    mf_status st;
    if ((st = check_pair(k, v, diag)) != MF_OK) /* validates both, once */
        return st;
    if ((st = plan(&k->desc, k->payload_words, v->payload_words, off, len, &total)) != MF_OK)
        return mf__fail(diag, st, "container size: %s", mf_strerror(st));
    if (total > SIZE_MAX || !(buf = (uint8_t *)malloc((size_t)total)))
        return mf__fail(diag, MF_ERR_NOMEM, "cannot allocate %llu bytes", (unsigned long long)total);
    serialize(k, v, off, len, total, buf);
    st = mf__write_file(path, buf, total, diag);
    free(buf);
    return st;
}

mf_status mf_container_load(const char *path, mf_ctensor *k, mf_ctensor *v, mf_diag *diag) {
    uint8_t *buf;
    uint64_t len;
    mf_status st;
    if (!k || !v)
        return mf__fail(diag, MF_ERR_NULL, "output tensor is NULL");
    memset(k, 0, sizeof *k);
    memset(v, 0, sizeof *v);
    if ((st = mf__read_file(path, UINT64_C(1) << 40, &buf, &len, diag)) != MF_OK)
        return st;
    st = mf_container_read_mem(buf, len, k, v, diag);
    free(buf);
    return st;
}
