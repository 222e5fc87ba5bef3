/* fuzz_container.c - the .mfkv reader on untrusted bytes.
 *
 * Each input is read twice: as it is, and with its CRCs recomputed from
 * the section table, so that mutations reach the checks behind the CRCs.
 * Rejected: a reader status with a message, and nothing left allocated.
 * Accepted: both tensors validate and serialize back to the input bytes
 * (but for the minor version, which the reader ignores, and the header
 * CRC that covers it). Either way the reader allocates no more bytes than
 * the input holds. */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "../formats/formats.h" /* mf__crc32, mf__ld64, mf__st32 */

#define READER_ERRORS                                                                              \
    (FZ_VALIDATE_ERRORS | FZ_BIT(MF_ERR_MAGIC) | FZ_BIT(MF_ERR_VERSION) |                          \
     FZ_BIT(MF_ERR_CHECKSUM) | FZ_BIT(MF_ERR_TRUNCATED) | FZ_BIT(MF_ERR_HEADER))

static int nothing_allocated(const mf_ctensor *c) {
    return !c->bitmaps && !c->offsets && !c->scales && !c->zeros && !c->payload && !c->window;
}

static void read_one(const uint8_t *data, size_t size) {
    mf_ctensor k, v;
    mf_diag diag;
    mf_status st;
    uint64_t alloc, n;
    uint8_t *out;
    diag.msg[0] = 0;
    fz_alloc_start();
    st = mf_container_read_mem(data, size, &k, &v, &diag);
    alloc = fz_alloc_stop();
    FZ_CHECK(alloc <= size, "the reader allocated more bytes than the input holds");
    if (st != MF_OK) {
        FZ_CHECK(fz_status_in(st, READER_ERRORS), diag.msg);
        FZ_CHECK(diag.msg[0] != 0, "rejection without a message");
        FZ_CHECK(nothing_allocated(&k) && nothing_allocated(&v), diag.msg);
        return;
    }
    FZ_CHECK(mf_validate(&k, NULL) == MF_OK && mf_validate(&v, NULL) == MF_OK,
             "accepted tensors do not validate");
    FZ_CHECK(mf_container_size(&k, &v, &n) == MF_OK && n == size, "size differs from the input");
    out = (uint8_t *)malloc(size);
    FZ_CHECK(out && mf_container_write_mem(&k, &v, out, n) == MF_OK, "cannot serialize");
    FZ_CHECK(memcmp(out, data, 10) == 0 && memcmp(out + 12, data + 12, 48) == 0 &&
                 memcmp(out + 64, data + 64, size - 64) == 0,
             "serialization differs from the accepted input");
    free(out);
    mf_ctensor_free(&k);
    mf_ctensor_free(&v);
}

/* formats/CONTAINER.md: 64-byte header, 12 entries of 24 bytes (id, crc,
 * offset, length); header CRC at 60 over [0, 60) and the table. */
static void fix_crcs(uint8_t *b, size_t size) {
    unsigned i;
    for (i = 0; i < 12; i++) {
        uint8_t *e = b + 64 + 24 * i;
        uint64_t off = mf__ld64(e + 8), len = mf__ld64(e + 16);
        if (off <= size && len <= size - off)
            mf__st32(e + 4, mf__crc32(0, b + off, len));
    }
    mf__st32(b + 60, mf__crc32(mf__crc32(0, b, 60), b + 64, 12 * 24));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *copy;
    read_one(data, size);
    if (size < 64 + 12 * 24)
        return 0;
    FZ_CHECK((copy = (uint8_t *)malloc(size)) != NULL, "out of memory");
    memcpy(copy, data, size);
    fix_crcs(copy, size);
    read_one(copy, size);
    free(copy);
    return 0;
}
