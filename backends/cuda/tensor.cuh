/* tensor.cuh - what the tensor-core attention kernels share: their
 * arguments, the m16n8k16 product and the work split's kernel shape.
 * tensor.cu holds the general kernel (any code width, tiles scattered
 * into shared memory), the merge kernel and the host entry; tensor_rd.cu
 * the 2- and 4-bit kernel that decodes tiles in registers. */
#ifndef MF_CUDA_TENSOR_CUH
#define MF_CUDA_TENSOR_CUH

#include <cuda_fp16.h>

#include "common.cuh"

#define HEADS 8 /* query heads per warp: the mma's N */

/* d += a b for one m16n8k16 tile. */
__device__ static inline void mma(float d[4], const uint32_t a[4], const uint32_t b[2]) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

/* mf_dequant's arithmetic with the RNE cvt instruction in place of core's
 * portable fp16 rounding: the same bits for every finite value, at a
 * fraction of the instructions. */
__device__ static inline uint16_t dequant(uint32_t code, float s, float z) {
    return __half_as_ushort(__float2half_rn(MF_MUL(MF_SUB((float)code, z), s)));
}

/* The online softmax over a chunk, for the two query heads a lane holds
 * (the lanes holding the same heads differ in bits 2-4 of the lane id):
 * the chunk maximum cmax reduced over them, the running maximum mrun moved
 * to it and alpha = exp(m_old - m_new) (first: a worker's first chunk,
 * where m_old is -inf and alpha 0 without the exponential) ... */
__device__ static inline void tc_softmax_max(float cmax[2], float mrun[2], float alpha[2],
                                             bool first = false) {
#pragma unroll
    for (uint32_t r = 0; r < 2; r++) {
        float mnew;
        for (uint32_t i = 4; i < 32; i <<= 1)
            cmax[r] = fmaxf(cmax[r], __shfl_xor_sync(0xffffffffu, cmax[r], i));
        mnew = fmaxf(mrun[r], cmax[r]);
        alpha[r] = first ? 0.0f : mf_exp(MF_SUB(mrun[r], mnew));
        mrun[r] = mnew;
    }
}

/* ... and the running sum lrun rescaled by alpha plus the chunk's sum
 * lsum reduced over the same lanes. */
__device__ static inline void tc_softmax_sum(float lsum[2], const float alpha[2], float lrun[2]) {
#pragma unroll
    for (uint32_t r = 0; r < 2; r++) {
        for (uint32_t i = 4; i < 32; i <<= 1)
            lsum[r] = MF_ADD(lsum[r], __shfl_xor_sync(0xffffffffu, lsum[r], i));
        lrun[r] = MF_ADD(MF_MUL(lrun[r], alpha[r]), lsum[r]);
    }
}

struct tc_args {
    mf_view k, v;
    const uint16_t *q;
    float *part; /* [rows][head tiles][workers][HEADS][D + 2]: m, l, o */
    uint32_t group, tiles, splits, per_worker, workers; /* workers per (row, tile) */
    uint64_t chunks;
    int coop; /* the block shares each chunk (COOP kernels) */
};

/* A kernel as the work split sees it: its function, threads and workers
 * (warps walking their own chunks, or one block sharing them) per block,
 * and dynamic shared memory. */
struct tc_shape {
    const void *fn;
    uint32_t threads, workers;
    size_t smem;
};

/* The register-decode kernel (tensor_rd.cu, 2- and 4-bit tensors): its
 * shape for head dim `dim` and code width `bits`, its block sharing chunks
 * (coop, dim >= 128, reference layout) or not. */
tc_shape mf__rd_shape(uint32_t dim, int coop, uint32_t bits);

/* Programmatic dependent launch (sm_90 on; a no-op before). The attention
 * kernels are launched so that each may start while the kernel before it
 * in the stream (the previous call's merge, the call's own partial states)
 * still runs: a block does what needs no global memory (rd_kernel builds
 * its table; a COOP block also reads its first chunk of K and V, which
 * mustafar.h's mf_attend_async requires no kernel queued before the call
 * to be writing) and then waits here for that kernel to finish and its
 * writes to show, before it reads anything else or writes global memory.
 * Past the wait it lets the next kernel start the same way. A kernel
 * launched without the attribute passes the wait at once. */
__device__ static inline void tc_pdl_wait() {
    mf__cu_pdl_wait();
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

#endif
