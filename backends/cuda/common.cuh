/* common.cuh - what the CUDA backend's kernels share: a by-value view of
 * a compressed tensor, the device validator's interface, tile starts and
 * element decoding. All arithmetic comes from core/numerics.h. */
#ifndef MF_CUDA_COMMON_CUH
#define MF_CUDA_COMMON_CUH

#include <cuda_runtime.h>

extern "C" {
#include "../../core/internal.h"
}
#include "../../core/tile.h"
#include "cuda.h"

/* Returns MF_ERR_DEVICE from the enclosing function when a CUDA call fails. */
#define MF_CU(call)                                                                       \
    do {                                                                                  \
        if ((call) != cudaSuccess)                                                        \
            return MF_ERR_DEVICE;                                                         \
    } while (0)
#define MF_CU_LAUNCHED() MF_CU(cudaGetLastError())

/* Device arrays and shape of a compressed tensor, passed to kernels by value. */
struct mf_view {
    const uint64_t *bitmaps;
    const uint32_t *offsets;
    const uint16_t *scales, *zeros;
    const uint32_t *payload;
    const uint16_t *window;
    const uint64_t *unit_start; /* validator: first payload word of each unit */
    uint64_t payload_words, blocks;
    mf_kind kind;
    mf_layout layout;
    uint32_t bits, rows, tokens, dim;
};

/* Validation scratch for `units` units; the error word comes first. */
size_t mf__cu_validate_bytes(uint64_t units);
/* Starts validating c on the device into scratch (nothing is read back
 * yet) and fills the view, whose unit_start points into scratch. Host-side
 * checks (NULL arrays, desc, limits) answer at once. */
mf_status mf__cu_validate_launch(const mf_ctensor *c, void *scratch, mf_view *view,
                                 mf_diag *diag);
/* Waits for the device and reads the verdict of the validator. */
mf_status mf__cu_validate_result(const void *scratch, mf_diag *diag);

/* Inclusive prefix sum of n uint64 from in into out+1, out[0] = 0; tmp of
 * mf__cu_scan_bytes(n) bytes. */
size_t mf__cu_scan_bytes(uint64_t n);
mf_status mf__cu_scan(const uint64_t *in, uint64_t *out, uint64_t n, void *tmp);

/* Rounds a scratch size up so the next carve stays 256-byte aligned. */
static inline size_t mf__cu_align(size_t n) { return (n + 255u) & ~(size_t)255u; }

/* Storage-order unit index of (row, block). */
__device__ static inline uint64_t mf_cu_unit(const mf_view &c, uint32_t row, uint64_t block) {
    return mf_unit_tile(c.layout, c.rows, c.blocks, c.dim, row, block) / c.dim;
}

/* Tile j and element i that hold dense (token in block, channel): the
 * inverse of mf_tile_elem. */
__device__ static inline void mf_cu_elem_tile(mf_kind kind, uint32_t tok, uint32_t ch,
                                              uint32_t *j, uint32_t *i) {
    if (kind == MF_KEY) {
        *j = ch;
        *i = tok;
    } else {
        *j = (ch / MF_TILE) * MF_TILE + tok;
        *i = ch % MF_TILE;
    }
}

/* Payload start word of every tile of unit u into starts[dim]: the unit's
 * start plus a prefix sum of tile sizes. Called by the whole block. */
__device__ static inline void mf_cu_unit_starts(const uint64_t *bitmaps, uint64_t u,
                                                uint32_t dim, uint32_t bits, uint64_t base,
                                                uint64_t *starts) {
    uint32_t j;
    for (j = threadIdx.x; j < dim; j += blockDim.x)
        starts[j] = mf_tile_words(mf_popcount64(bitmaps[u * dim + j]), bits);
    __syncthreads();
    if (threadIdx.x == 0) {
        for (j = 0; j < dim; j++) {
            uint64_t w = starts[j];
            starts[j] = base;
            base += w;
        }
    }
    __syncthreads();
}

/* fp16 bits of element i of tile t whose payload starts at word start; a
 * tile whose words leave the payload reads as zeros (only an invalid
 * tensor has one, and the validator rejects it). */
__device__ static inline uint16_t mf_cu_tile_value(const mf_view &c, uint64_t t, uint64_t start,
                                                   uint32_t i) {
    uint64_t bm = c.bitmaps[t];
    uint32_t words, n, cpw, code;
    if (!mf_tile_bit(bm, i))
        return 0;
    words = mf_tile_words(mf_popcount64(bm), c.bits);
    if (start > c.payload_words || words > c.payload_words - start)
        return 0;
    n = i ? mf_popcount64(bm >> (64u - i)) : 0u; /* nonzeros before element i */
    if (c.bits == 0)
        return (uint16_t)(c.payload[start + n / 2] >> (16 * (n % 2)));
    cpw = mf_codes_per_word(c.bits);
    code = (c.payload[start + n / cpw] >> ((n % cpw) * c.bits)) & ((1u << c.bits) - 1u);
    return mf_dequant(code, mf_h2f(c.scales[t]), mf_h2f(c.zeros[t]));
}

mf_view mf__cu_view(const mf_ctensor *c);

#endif
