/* fuzz_npy.c - the .npy reader on untrusted bytes.
 *
 * Rejected: a reader status with a message and no array. Accepted: the
 * shape, count and data agree with the input's last bytes, and fp16 data
 * survives fp16 -> fp32 -> fp16 (NaN as the canonical quiet NaN). The
 * reader allocates no more bytes than the input holds. */
#include <string.h>

#include "fuzz.h"

#define NPY_ERRORS                                                                                 \
    (FZ_BIT(MF_ERR_MAGIC) | FZ_BIT(MF_ERR_VERSION) | FZ_BIT(MF_ERR_TRUNCATED) |                    \
     FZ_BIT(MF_ERR_HEADER) | FZ_BIT(MF_ERR_DTYPE) | FZ_BIT(MF_ERR_DIMS) | FZ_BIT(MF_ERR_LIMIT))

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mf_array a;
    mf_diag diag;
    mf_status st;
    uint64_t alloc, count = 1, bytes, i;
    uint32_t d;
    diag.msg[0] = 0;
    fz_alloc_start();
    st = mf_npy_read_mem(data, size, &a, &diag);
    alloc = fz_alloc_stop();
    FZ_CHECK(alloc <= size, "the reader allocated more bytes than the input holds");
    if (st != MF_OK) {
        FZ_CHECK(fz_status_in(st, NPY_ERRORS), diag.msg);
        FZ_CHECK(diag.msg[0] != 0, "rejection without a message");
        FZ_CHECK(a.data == NULL, "array left after rejection");
        return 0;
    }
    FZ_CHECK(a.ndim >= 1 && a.ndim <= 4 && (a.dtype == MF_F16 || a.dtype == MF_F32), "bad array");
    for (d = 0; d < a.ndim; d++)
        count *= a.shape[d];
    bytes = count * (a.dtype == MF_F16 ? 2u : 4u);
    FZ_CHECK(count == a.count && bytes <= size, "count disagrees with the shape or input");
    /* little-endian host: the array's bytes are the file's */
    FZ_CHECK(memcmp(a.data, data + size - bytes, bytes) == 0, "data is not the input's tail");
    if (a.dtype == MF_F16) {
        const uint8_t *orig = data + size - bytes;
        FZ_CHECK(mf_array_convert(&a, MF_F32) == MF_OK && mf_array_convert(&a, MF_F16) == MF_OK,
                 "conversion failed");
        for (i = 0; i < count; i++) {
            uint16_t h = (uint16_t)(orig[2 * i] | orig[2 * i + 1] << 8);
            uint16_t back = ((const uint16_t *)a.data)[i];
            if ((h & 0x7fffu) > 0x7c00u)
                h = (uint16_t)((h & 0x8000u) | 0x7e00u);
            FZ_CHECK(back == h, "fp16 -> fp32 -> fp16 is not the identity");
        }
    }
    mf_array_free(&a);
    return 0;
}
