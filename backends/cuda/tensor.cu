/* tensor.cu - decode attention on the tensor cores (mma.sync m16n8k16,
 * fp16 inputs, fp32 accumulation; sm_80 and later).
 *
 * "Load as compressed, compute as dense": each warp walks its own range
 * of 64-token chunks of one KV row for 8 query heads (one n8 tile). Per
 * chunk it scatters the K tiles' nonzeros into a zeroed fp16 [64][D]
 * tile in shared memory, computes S = K Q^T (M = tokens, N = heads),
 * updates an online softmax, stores P as fp16, scatters V into the same
 * tile and accumulates O^T += V^T P^T (M = channels, N = heads). Warps
 * write (m, l, O) partial states; a second kernel merges them. Not
 * bit-identical to the reference: backends/cuda/BOUND.md bounds the
 * difference. */
#include <cuda_fp16.h>

#include "common.cuh"

#define WARPS 4
#define HEADS 8          /* query heads per warp: the mma's N */
#define PSTRIDE 72       /* halves per row of P: 64 tokens + 16 bytes of padding */

__device__ static inline uint32_t smem_addr(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}

__device__ static inline void ldsm_x4(uint32_t r[4], const uint16_t *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p))
                 : "memory");
}

__device__ static inline void ldsm_x4_trans(uint32_t r[4], const uint16_t *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p))
                 : "memory");
}

__device__ static inline void ldsm_x2(uint32_t r[2], const uint16_t *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(smem_addr(p))
                 : "memory");
}

/* d += a b for one m16n8k16 tile. */
__device__ static inline void mma(float d[4], const uint32_t a[4], const uint32_t b[2]) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

struct tc_args {
    mf_view k, v;
    const uint16_t *q;
    float *part; /* [rows][head tiles][workers][HEADS][D + 2]: m, l, o */
    uint32_t group, tiles, splits, per_worker;
    uint64_t chunks;
};

/* Chunk ch of row as a dense fp16 [64][D + 8] tile (token-major for K and
 * V alike) into the zeroed buf; returns its token count. Lane l expands
 * tiles l*D/32 .. (l+1)*D/32 - 1, whose starts are a warp prefix sum. */
template <int D>
__device__ static uint32_t fill(const mf_view &c, uint32_t row, uint64_t ch, uint16_t *buf) {
    const uint32_t lane = threadIdx.x % 32, per = D / 32;
    uint64_t bms[D / 32], u, start, base;
    uint32_t offs[D / 32];
    uint16_t sc[D / 32], zc[D / 32];
    uint32_t w0[D / 32], w1[D / 32], k, mine = 0, d, excl;
    if (ch == c.blocks) { /* the dense window */
        uint32_t n = c.tokens % MF_TILE, e;
        const uint16_t *p = c.window + (uint64_t)row * n * D;
        for (e = lane; e < n * D; e += 32)
            buf[(e / D) * (D + 8) + e % D] = p[e];
        return n;
    }
    u = mf_cu_unit(c, row, ch);
    /* Every load that does not depend on another is issued up front: the
     * kernel is bound by the latency of these chains, not by bandwidth. */
    base = c.layout == MF_LAYOUT_NATIVE ? c.offsets[u] : 0;
#pragma unroll
    for (k = 0; k < per; k++) {
        bms[k] = c.bitmaps[u * D + lane * per + k];
        if (c.layout == MF_LAYOUT_REFERENCE)
            offs[k] = c.offsets[u * D + lane * per + k];
        if (c.bits) {
            sc[k] = c.scales[u * D + lane * per + k];
            zc[k] = c.zeros[u * D + lane * per + k];
        }
    }
#pragma unroll
    for (k = 0; k < per; k++)
        mine += mf_tile_words(mf_popcount64(bms[k]), c.bits);
    excl = mine;
    for (d = 1; d < 32; d <<= 1) {
        uint32_t x = __shfl_up_sync(0xffffffffu, excl, d);
        if (lane >= d)
            excl += x;
    }
    start = base + excl - mine; /* native: the lane's first tile */
    /* the first two payload words of each tile, all in flight at once */
    {
        uint64_t st = start;
#pragma unroll
        for (k = 0; k < per; k++) {
            uint32_t words = mf_tile_words(mf_popcount64(bms[k]), c.bits);
            int ok;
            if (c.layout == MF_LAYOUT_REFERENCE)
                st = offs[k];
            ok = st <= c.payload_words && words <= c.payload_words - st;
            w0[k] = ok && words > 0 ? c.payload[st] : 0u;
            w1[k] = ok && words > 1 ? c.payload[st + 1] : 0u;
            st += words;
        }
    }
#pragma unroll
    for (k = 0; k < per; k++) {
        uint32_t j = lane * per + k, n = 0, cur = 0;
        uint32_t cpw = c.bits ? mf_codes_per_word(c.bits) : 2u, mask = (1u << c.bits) - 1u;
        uint64_t bm = bms[k];
        uint32_t words = mf_tile_words(mf_popcount64(bm), c.bits);
        const uint32_t *w;
        float s = 0.0f, z = 0.0f;
        if (c.layout == MF_LAYOUT_REFERENCE)
            start = offs[k];
        w = c.payload + start;
        if (!mf_cu_in_payload(c, start, words))
            bm = 0; /* reads as zeros; the call fails */
        if (c.bits) {
            s = mf_h2f(sc[k]);
            z = mf_h2f(zc[k]);
        }
        while (bm) {
            uint32_t i = __clzll(bm), tok, chn, wi;
            uint16_t h;
            bm ^= 1ull << (63 - i);
            if (c.bits == 0) {
                wi = n / 2;
                h = (uint16_t)((wi == 0 ? w0[k] : wi == 1 ? w1[k] : w[wi]) >> (16 * (n % 2)));
            } else {
                if (n % cpw == 0) {
                    wi = n / cpw;
                    cur = wi == 0 ? w0[k] : wi == 1 ? w1[k] : w[wi];
                }
                /* the same value as mf_dequant: one fp32 rounding each, RNE to fp16 */
                h = __half_as_ushort(__float2half_rn(MF_MUL(MF_SUB((float)(cur & mask), z), s)));
                cur >>= c.bits;
            }
            n++;
            mf_tile_elem(c.kind, j, i, &tok, &chn);
            buf[tok * (D + 8) + chn] = h;
        }
        start += words;
    }
    return MF_TILE;
}

template <int D> __device__ static void zero(uint16_t *buf) {
    uint4 *p = (uint4 *)buf, z = make_uint4(0, 0, 0, 0);
    uint32_t i;
    __syncwarp();
    for (i = threadIdx.x % 32; i < MF_TILE * (D + 8) / 8; i += 32)
        p[i] = z;
    __syncwarp();
}

template <int D> __global__ static void __launch_bounds__(WARPS * 32) tc_kernel(tc_args a) {
    extern __shared__ uint4 smem4[];
    uint16_t *qs = (uint16_t *)smem4; /* [HEADS][D + 8] */
    const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    uint16_t *buf = qs + HEADS * (D + 8) + warp * (MF_TILE * (D + 8) + HEADS * PSTRIDE);
    uint16_t *ps = buf + MF_TILE * (D + 8); /* [HEADS][PSTRIDE]: P as fp16 */
    uint32_t split = blockIdx.x % a.splits, tile = blockIdx.x / a.splits % a.tiles;
    uint32_t row = blockIdx.x / (a.splits * a.tiles), worker = split * WARPS + warp, i, mt, ks, r;
    uint64_t c0 = (uint64_t)worker * a.per_worker, c1 = c0 + a.per_worker, ch;
    const float scale = mf_score_scale(D), ninf = -__int_as_float(0x7f800000);
    float o[D / 16][4], mrun[2] = {ninf, ninf}, lrun[2] = {0.0f, 0.0f};
    float *part;
    for (i = threadIdx.x; i < HEADS * D; i += blockDim.x) {
        uint32_t h = tile * HEADS + i / D;
        qs[(i / D) * (D + 8) + i % D] = h < a.group ? a.q[((size_t)row * a.group + h) * D + i % D] : 0;
    }
    __syncthreads();
#pragma unroll
    for (mt = 0; mt < D / 16; mt++)
        o[mt][0] = o[mt][1] = o[mt][2] = o[mt][3] = 0.0f;
    if (c1 > a.chunks)
        c1 = a.chunks;
    for (ch = c0; ch < c1; ch++) {
        float s[4][4], cmax[2], lsum[2], alpha[2];
        uint32_t n;
        zero<D>(buf);
        n = fill<D>(a.k, row, ch, buf);
        __syncwarp();
        /* S^T[token][head] = K Q^T */
#pragma unroll
        for (mt = 0; mt < 4; mt++)
            s[mt][0] = s[mt][1] = s[mt][2] = s[mt][3] = 0.0f;
#pragma unroll
        for (ks = 0; ks < D / 16; ks++) {
            uint32_t b[2];
            ldsm_x2(b, qs + (lane % 8) * (D + 8) + ks * 16 + ((lane / 8) % 2) * 8);
#pragma unroll
            for (mt = 0; mt < 4; mt++) {
                uint32_t av[4];
                ldsm_x4(av, buf + (mt * 16 + lane % 16) * (D + 8) + ks * 16 + (lane / 16) * 8);
                mma(s[mt], av, b);
            }
        }
        /* Online softmax; this lane holds heads 2(lane%4) + {0, 1} for
         * tokens 16mt + lane/4 (+8). */
        cmax[0] = cmax[1] = ninf;
#pragma unroll
        for (mt = 0; mt < 4; mt++)
#pragma unroll
            for (r = 0; r < 4; r++) {
                uint32_t t = mt * 16 + lane / 4 + 8 * (r / 2);
                s[mt][r] = t < n ? MF_MUL(s[mt][r], scale) : ninf;
                cmax[r % 2] = fmaxf(cmax[r % 2], s[mt][r]);
            }
#pragma unroll
        for (r = 0; r < 2; r++) {
            float mnew;
            for (i = 4; i < 32; i <<= 1)
                cmax[r] = fmaxf(cmax[r], __shfl_xor_sync(0xffffffffu, cmax[r], i));
            mnew = fmaxf(mrun[r], cmax[r]);
            alpha[r] = mf_exp(MF_SUB(mrun[r], mnew));
            mrun[r] = mnew;
            lsum[r] = 0.0f;
        }
#pragma unroll
        for (mt = 0; mt < 4; mt++)
#pragma unroll
            for (r = 0; r < 4; r++) {
                float e = mf_exp(MF_SUB(s[mt][r], mrun[r % 2]));
                lsum[r % 2] = MF_ADD(lsum[r % 2], e);
                ps[(2 * (lane % 4) + r % 2) * PSTRIDE + mt * 16 + lane / 4 + 8 * (r / 2)] =
                    __half_as_ushort(__float2half_rn(e));
            }
#pragma unroll
        for (r = 0; r < 2; r++) {
            for (i = 4; i < 32; i <<= 1)
                lsum[r] = MF_ADD(lsum[r], __shfl_xor_sync(0xffffffffu, lsum[r], i));
            lrun[r] = MF_ADD(MF_MUL(lrun[r], alpha[r]), lsum[r]);
        }
#pragma unroll
        for (mt = 0; mt < D / 16; mt++)
#pragma unroll
            for (r = 0; r < 4; r++)
                o[mt][r] = MF_MUL(o[mt][r], alpha[r % 2]);
        zero<D>(buf);
        fill<D>(a.v, row, ch, buf);
        __syncwarp();
        /* O^T[channel][head] += V^T P^T */
#pragma unroll
        for (ks = 0; ks < 4; ks++) {
            uint32_t b[2];
            ldsm_x2(b, ps + (lane % 8) * PSTRIDE + ks * 16 + ((lane / 8) % 2) * 8);
#pragma unroll
            for (mt = 0; mt < D / 16; mt++) {
                uint32_t av[4];
                ldsm_x4_trans(av, buf + (ks * 16 + lane % 8 + (lane / 16) * 8) * (D + 8) + mt * 16 +
                                      ((lane / 8) % 2) * 8);
                mma(o[mt], av, b);
            }
        }
    }
    part = a.part + (((size_t)row * a.tiles + tile) * a.splits * WARPS + worker) * HEADS * (D + 2);
    if (lane < 4)
        for (r = 0; r < 2; r++) {
            part[(2 * lane + r) * (D + 2)] = mrun[r];
            part[(2 * lane + r) * (D + 2) + 1] = lrun[r];
        }
#pragma unroll
    for (mt = 0; mt < D / 16; mt++)
#pragma unroll
        for (r = 0; r < 4; r++)
            part[(2 * (lane % 4) + r % 2) * (D + 2) + 2 + mt * 16 + lane / 4 + 8 * (r / 2)] = o[mt][r];
}

/* Thread per output (row, head, channel): merges the workers' states. */
__global__ static void tc_merge_kernel(tc_args a, uint32_t rows, uint32_t dim, float *out) {
    uint64_t idx = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    uint32_t workers = a.splits * WARPS, row, h, c, w;
    const float *p;
    float m = -__int_as_float(0x7f800000), l = 0.0f, o = 0.0f;
    if (idx >= (uint64_t)rows * a.group * dim)
        return;
    row = (uint32_t)(idx / ((uint64_t)a.group * dim));
    h = (uint32_t)(idx / dim % a.group);
    c = (uint32_t)(idx % dim);
    p = a.part + ((size_t)row * a.tiles + h / HEADS) * workers * HEADS * (dim + 2) + (h % HEADS) * (dim + 2);
    for (w = 0; w < workers; w++)
        m = fmaxf(m, p[(size_t)w * HEADS * (dim + 2)]);
    for (w = 0; w < workers; w++) {
        const float *x = p + (size_t)w * HEADS * (dim + 2);
        float f = mf_exp(MF_SUB(x[0], m));
        l = MF_ADD(l, MF_MUL(x[1], f));
        o = MF_ADD(o, MF_MUL(x[2 + c], f));
    }
    out[idx] = mf_canon(MF_DIV(o, l));
}

static size_t tc_smem(uint32_t dim) {
    return (size_t)HEADS * (dim + 8) * 2 + (size_t)WARPS * (MF_TILE * (dim + 8) + HEADS * PSTRIDE) * 2;
}

static void *tc_kernel_of(uint32_t dim) {
    return dim == 64 ? (void *)tc_kernel<64> : dim == 128 ? (void *)tc_kernel<128> : (void *)tc_kernel<256>;
}

/* Work split: enough warps for one full wave of blocks; each worker (warp)
 * takes per_worker consecutive chunks. */
static mf_status plan(const mf_desc *k, uint32_t group, tc_args *a) {
    int sms = 0, occ = 0;
    uint64_t units, want;
    size_t smem = tc_smem(k->dim);
    MF_CU(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    MF_CU(cudaFuncSetAttribute(tc_kernel_of(k->dim), cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    MF_CU(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, tc_kernel_of(k->dim), WARPS * 32, smem));
    if (occ < 1)
        return MF_ERR_UNSUPPORTED;
    a->group = group;
    a->tiles = (group + HEADS - 1) / HEADS;
    a->chunks = (k->tokens + MF_TILE - 1) / MF_TILE;
    units = (uint64_t)k->rows * a->tiles;
    want = (uint64_t)sms * (uint64_t)occ / units;
    if (want < 1)
        want = 1;
    if (want > (a->chunks + WARPS - 1) / WARPS)
        want = (a->chunks + WARPS - 1) / WARPS;
    a->splits = (uint32_t)want;
    a->per_worker = (uint32_t)((a->chunks + want * WARPS - 1) / (want * WARPS));
    return MF_OK;
}

mf_status mf__cu_tensor_bytes(const mf_desc *k, uint32_t group, size_t *bytes) {
    tc_args a;
    mf_status st = plan(k, group, &a);
    if (st != MF_OK)
        return st;
    *bytes = mf__cu_align((size_t)k->rows * a.tiles * a.splits * WARPS * HEADS * (k->dim + 2) * 4);
    return MF_OK;
}

extern "C" mf_status mf_cuda_attend_tensor(const mf_ctensor *k, const mf_ctensor *v,
                                           const uint16_t *q, uint32_t group, float *out,
                                           void *workspace, size_t workspace_bytes) {
    const mf_desc *d = &k->desc;
    uint64_t outs = (uint64_t)d->rows * group * d->dim;
    mf_status st;
    char *rest;
    tc_args a;
    if ((st = mf__cu_attend_prepare(k, v, group, workspace, workspace_bytes, &a.k, &a.v, &rest)) != MF_OK ||
        (st = plan(d, group, &a)) != MF_OK)
        return st;
    a.q = q;
    a.part = (float *)rest;
    if (d->dim == 64)
        tc_kernel<64><<<d->rows * a.tiles * a.splits, WARPS * 32, tc_smem(64)>>>(a);
    else if (d->dim == 128)
        tc_kernel<128><<<d->rows * a.tiles * a.splits, WARPS * 32, tc_smem(128)>>>(a);
    else
        tc_kernel<256><<<d->rows * a.tiles * a.splits, WARPS * 32, tc_smem(256)>>>(a);
    MF_CU_LAUNCHED();
    tc_merge_kernel<<<(unsigned)((outs + 255) / 256), 256>>>(a, d->rows, d->dim, out);
    MF_CU_LAUNCHED();
    return mf__cu_flag_result((const unsigned *)workspace);
}
