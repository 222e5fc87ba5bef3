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
    /* First payload word of each unit, from a prefix sum of the bitmaps
     * (encoder, validator), or NULL: tile starts then come from offsets. */
    const uint64_t *unit_start;
    unsigned *bad; /* set when a tile's range leaves the payload, or NULL */
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

#ifndef MF_PDL
#define MF_PDL 1 /* 0: plain launches (for comparisons) */
#endif

/* Whether a kernel may be a programmatic dependent launch: only code
 * compiled for sm_90 on waits (mf__cu_pdl_wait), so a binary that the
 * driver compiles from older PTX runs its kernels in plain order. */
static inline int mf__cu_pdl_ok(int cc_major, int ptx_version) {
    return MF_PDL && cc_major >= 9 && ptx_version >= 90;
}

/* In a kernel launched so (sm_90 on; a no-op before, and for a plain
 * launch): waits for the kernel queued before it to finish and its writes
 * to show. Nothing before it may touch global memory that kernel writes. */
__device__ static inline void mf__cu_pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

/* Launches kernel fn (its arguments at args) on the default stream, as a
 * programmatic dependent launch when pdl: the kernel may then start while
 * the one before it runs, and waits for it (griddepcontrol.wait) before
 * it touches global memory. */
cudaError_t mf__cu_launch(const void *fn, uint32_t blocks, uint32_t threads, size_t smem, int pdl,
                          void **args);

/* Rounds a scratch size up so the next carve stays 256-byte aligned. */
static inline size_t mf__cu_align(size_t n) { return (n + 255u) & ~(size_t)255u; }

/* Storage-order unit index of (row, block). */
__device__ static inline uint64_t mf_cu_unit(const mf_view &c, uint32_t row, uint64_t block) {
    return mf_unit_index(c.layout, c.rows, c.blocks, row, block);
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

/* Payload start word of every tile of unit u into starts[dim], as
 * mf__unit_starts: the reference layout's per-tile offsets, or a unit
 * start plus a prefix sum of tile sizes. Called by the whole block. */
__device__ static inline void mf_cu_unit_starts(const mf_view &c, uint64_t u, uint64_t *starts) {
    uint32_t j, dim = c.dim;
    if (!c.unit_start && c.layout == MF_LAYOUT_REFERENCE) {
        for (j = threadIdx.x; j < dim; j += blockDim.x)
            starts[j] = c.offsets[u * dim + j];
        __syncthreads();
        return;
    }
    for (j = threadIdx.x; j < dim; j += blockDim.x)
        starts[j] = mf_tile_words(mf_popcount64(c.bitmaps[u * dim + j]), c.bits);
    __syncthreads();
    if (threadIdx.x == 0) {
        uint64_t base = c.unit_start ? c.unit_start[u] : c.offsets[u];
        for (j = 0; j < dim; j++) {
            uint64_t w = starts[j];
            starts[j] = base;
            base += w;
        }
    }
    __syncthreads();
}

/* Whether tile words [start, start + words) lie in the payload. */
__device__ static inline int mf_cu_payload_ok(const mf_view &c, uint64_t start, uint32_t words) {
    return start <= c.payload_words && words <= c.payload_words - start;
}

/* Fails the operation with MF_ERR_OFFSET_RANGE (as the CPU backend). */
__device__ static inline void mf_cu_flag_range(const mf_view &c) {
    if (c.bad)
        *c.bad = 1;
}

/* mf_cu_payload_ok, and if not, the tile reads as zeros and the
 * operation fails. */
__device__ static inline int mf_cu_in_payload(const mf_view &c, uint64_t start, uint32_t words) {
    if (mf_cu_payload_ok(c, start, words))
        return 1;
    mf_cu_flag_range(c);
    return 0;
}

/* fp16 bits of element i of tile t whose payload starts at word start. */
__device__ static inline uint16_t mf_cu_tile_value(const mf_view &c, uint64_t t, uint64_t start,
                                                   uint32_t i) {
    uint64_t bm = c.bitmaps[t];
    uint32_t words, n, cpw, code;
    if (!mf_tile_bit(bm, i))
        return 0;
    words = mf_tile_words(mf_popcount64(bm), c.bits);
    if (!mf_cu_in_payload(c, start, words))
        return 0;
    n = i ? mf_popcount64(bm >> (64u - i)) : 0u; /* nonzeros before element i */
    if (c.bits == 0)
        return (uint16_t)(c.payload[start + n / 2] >> (16 * (n % 2)));
    cpw = mf_codes_per_word(c.bits);
    code = (c.payload[start + n / cpw] >> ((n % cpw) * c.bits)) & ((1u << c.bits) - 1u);
    return mf_dequant(code, mf_h2f(c.scales[t]), mf_h2f(c.zeros[t]));
}

mf_view mf__cu_view(const mf_ctensor *c);

/* Compute operations (backends/dispatch.c's contract): the structure of
 * a compressed input is checked on the host, each tile's payload range
 * on the device as it is read, into a flag word. */
/* Host checks of c and its view with the flag at bad (device memory). */
mf_status mf__cu_compute_view(const mf_ctensor *c, unsigned *bad, mf_view *view);
/* Clears the flag / waits for the device and turns the flag into a status. */
mf_status mf__cu_flag_clear(unsigned *bad);
mf_status mf__cu_flag_result(const unsigned *bad);

/* Attention plumbing shared by attend.cu and tensor.cu. */
/* Workspace bytes of the tensor-core kernel's partial states. */
mf_status mf__cu_tensor_bytes(const mf_desc *k, uint32_t group, size_t *bytes);
/* Checks K and V and makes their views (range flag at the workspace's
 * front). */
mf_status mf__cu_attend_views(const mf_ctensor *k, const mf_ctensor *v, void *workspace,
                              mf_view *kv, mf_view *vv);
/* Checks the workspace against mf_cuda_attend_workspace's size (tc: the
 * tensor-core kernel's part of it, from the caller's plan), clears the
 * flag for a waiting call (an async one leaves earlier errors in it) and
 * returns the rest of the workspace for the kernel. */
mf_status mf__cu_attend_space(const mf_desc *k, uint32_t group, size_t tc, void *workspace,
                              size_t workspace_bytes, int wait, char **rest);
/* A call's status once its kernels are queued: a waiting call's range
 * errors (after waiting), or MF_OK for an async one. */
mf_status mf__cu_attend_done(void *workspace, int wait);

#endif
