/* tensor_rd.cu - tensor-core decode attention for 2-bit tensors, tiles
 * decoded in registers (regdecode.h): no shared-memory scatter, no
 * zeroing, the same work per element whatever the sparsity.
 *
 * Each warp walks its own range of 64-token chunks of one KV row for 8
 * query heads (the mma's N), as tensor.cu's tc_kernel, and writes the same
 * partial states for its merge kernel. Per chunk and tensor:
 *
 *  - prep: lane l takes tiles l, l + 32, ...: metadata and code words,
 *    the tile's table (mf_rd_table) and its four parts' inputs
 *    (mf_rd_parts) with their placement selectors go to the warp's
 *    records in shared memory;
 *  - decode: lane (g, j) = (lane / 4, lane % 4) turns part j of a tile
 *    into eight registers. For keys the tile is channel 16 ks + g (+ 8),
 *    its part tokens 16 j .. 16 j + 15; for values the tile is token t
 *    of channel block cb, its part channels 64 cb + 16 j + (0 .. 15).
 *    Register k of a part, as the 8 x 8 matrix the warp holds (row g,
 *    columns 2 j, 2 j + 1), is transposed by movmatrix into an mma
 *    fragment: rows become tokens (keys: S^T = K Q^T) or channels
 *    (values: O^T = V^T P^T), columns the reduction dimension.
 *
 * Tokens and channels of a chunk are thereby permuted inside each mma
 * (row g of key m-tile mt is token 16 (g/2) + 4 mt + g%2, + 2 for rows
 * 8-15); P^T comes from S^T's accumulators by one movmatrix per 8 x 8, in
 * the same token order, so the products pair up. Scores still sum D/16
 * mma in channel order and each chunk adds 4 mma per value tile of the
 * output: backends/cuda/BOUND.md holds unchanged. */
#include "regdecode.h"
#include "tensor.cuh"

#define RD_WARPS 8
/* mf_rd_lut per byte, 16 copies: prep's lookups (lane l reads copy l % 16)
 * conflict at most 2-way, and two blocks still fit an SM */
#define RD_COPIES 16
#define RD_LUT (256 * RD_COPIES)

__device__ static inline uint32_t movm(uint32_t x) {
    uint32_t y;
    asm("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;" : "=r"(y) : "r"(x));
    return y;
}

/* Record index of tile jt: two spare records every 16 tiles keep the
 * value decode's four groups of tiles (16 apart) in different banks. */
__device__ static inline uint32_t rec_of(uint32_t jt) { return jt + 2 * (jt >> 4); }

template <int D> struct rd_recs {
    static const uint32_t N = D + D / 8; /* records per tensor, spares included */
    static const uint32_t P = N + 2;     /* records per part array: the four 8 banks apart */
    static const uint32_t BYTES = 8 * N + 16 * 4 * P; /* a warp's tables and part records */
};

/* Tables and part records of every tile of chunk ch of row into the warp's
 * records: rt[rec] = table, rp[j P + rec] = part j's (w, b) (mf_rd_parts)
 * and the placement selectors of its two bitmap bytes, looked up here in
 * lut (this lane's copy of the table), so that a part's decode waits on
 * one shared-memory round trip, not two. A tile whose words leave the
 * payload reads as empty and fails the call. Lane l takes tiles l, l + 32,
 * ..., B at a time: their metadata loads, then their code words, are all
 * in flight before any is used. */
template <int D>
__device__ static void prep(const mf_view &c, uint32_t row, uint64_t ch, uint2 *rt, uint4 *rp,
                            const char *lut) {
    const uint32_t lane = threadIdx.x % 32, B = D / 32 < 4 ? D / 32 : 4;
    const uint64_t u = mf_cu_unit(c, row, ch);
    uint64_t run = c.layout == MF_LAYOUT_NATIVE ? c.offsets[u] : 0;
#pragma unroll
    for (uint32_t i0 = 0; i0 < D / 32; i0 += B) {
        uint64_t bm[B], start[B];
        uint32_t sz[B], p[B][4];
#pragma unroll
        for (uint32_t i = 0; i < B; i++) {
            const uint64_t t = u * D + 32 * (i0 + i) + lane;
            bm[i] = c.bitmaps[t];
            sz[i] = c.scales[t] | (uint32_t)c.zeros[t] << 16;
            start[i] = c.layout == MF_LAYOUT_REFERENCE ? c.offsets[t] : 0;
        }
#pragma unroll
        for (uint32_t i = 0; i < B; i++) {
            const uint32_t words = mf_tile_words((uint32_t)__popcll(bm[i]), 2);
            if (c.layout == MF_LAYOUT_NATIVE) { /* the unit's start plus the tiles before */
                uint32_t incl = words, d;
                for (d = 1; d < 32; d <<= 1) {
                    uint32_t x = __shfl_up_sync(0xffffffffu, incl, d);
                    if (lane >= d)
                        incl += x;
                }
                start[i] = run + incl - words;
                run += __shfl_sync(0xffffffffu, incl, 31);
            }
            p[i][0] = p[i][1] = p[i][2] = p[i][3] = 0u;
            if (!mf_cu_in_payload(c, start[i], words)) {
                bm[i] = 0;
                continue;
            }
#pragma unroll
            for (uint32_t k = 0; k < 4; k++)
                if (k < words)
                    p[i][k] = c.payload[start[i] + k];
        }
#pragma unroll
        for (uint32_t i = 0; i < B; i++) {
            const uint32_t r = rec_of(32 * (i0 + i) + lane);
            const float s = __half2float(__ushort_as_half((uint16_t)sz[i]));
            const float z = __half2float(__ushort_as_half((uint16_t)(sz[i] >> 16)));
            uint32_t lo, hi, w[4], b[4];
            uint16_t v[4];
#pragma unroll
            for (uint32_t code = 0; code < 4; code++)
                v[code] = dequant(code, s, z);
            mf_rd_parts(bm[i], p[i][0], p[i][1], p[i][2], p[i][3], mf_rd_table(v, &lo, &hi), w, b);
            rt[r] = make_uint2(lo, hi);
#pragma unroll
            for (uint32_t k = 0; k < 4; k++) /* b0 at bits 7-14, b1 at 16-23; 64 bytes a row */
                rp[k * rd_recs<D>::P + r] =
                    make_uint4(w[k], b[k], *(const uint32_t *)(lut + ((b[k] >> 1) & 0x3fc0u)),
                               *(const uint32_t *)(lut + ((b[k] >> 10) & 0x3fc0u)));
        }
    }
}

/* Part j of tile jt from the records, transposed (see the header). */
template <int D>
__device__ static inline void part(const uint2 *rt, const uint4 *rp, uint32_t jt, uint32_t j,
                                   uint32_t x[8]) {
    const uint32_t r = rec_of(jt);
    const uint2 tb = rt[r];
    const uint4 q = rp[j * rd_recs<D>::P + r];
    mf_rd_part(q.x, q.y, q.z, q.w, tb.x, tb.y, x);
    if (__any_sync(0xffffffffu, q.y >> 31)) { /* a negated table: flip back */
        const uint32_t f = (q.y >> 31) * 0x80008000u;
#pragma unroll
        for (uint32_t k = 0; k < 8; k++)
            x[k] ^= f;
    }
#pragma unroll
    for (uint32_t k = 0; k < 8; k++)
        x[k] = movm(x[k]);
}

/* The same registers for the dense window chunk of n tokens, as if it
 * were tiles: key "tile" jt (channel jt) has tokens 16j .. 16j + 15, value
 * "tile" jt (token jt % 64) channels 64 (jt / 64) + 16j .. + 15; tokens
 * from n on read 0. */
template <int D>
__device__ static void window_part(const mf_view &c, uint32_t row, uint32_t n, mf_kind kind,
                                   uint32_t jt, uint32_t j, uint32_t x[8]) {
    const uint16_t *p = c.window + (uint64_t)row * n * D;
#pragma unroll
    for (uint32_t k = 0; k < 8; k++) {
        uint32_t h[2];
        for (uint32_t e = 0; e < 2; e++) {
            uint32_t tok, ch;
            if (kind == MF_KEY) {
                tok = 16 * j + 2 * k + e;
                ch = jt;
            } else {
                tok = jt % MF_TILE;
                ch = jt / MF_TILE * MF_TILE + 16 * j + 2 * k + e;
            }
            h[e] = tok < n ? p[tok * D + ch] : 0u;
        }
        x[k] = movm(h[1] << 16 | h[0]);
    }
}

/* S^T += K Q^T over the chunk's D / 16 channel steps (WIN: the dense
 * window of n tokens). */
template <int D, bool WIN>
__device__ static inline void key_scores(const mf_view &c, uint32_t row, uint32_t n,
                                         const uint2 *rt, const uint4 *rp,
                                         const uint32_t (&qf)[D / 16][2], float (&s)[4][4]) {
    const uint32_t g = threadIdx.x % 32 / 4, j = threadIdx.x % 4;
#pragma unroll
    for (uint32_t ks = 0; ks < D / 16; ks++) {
        uint32_t x0[8], x1[8];
        if (WIN) {
            window_part<D>(c, row, n, MF_KEY, 16 * ks + g, j, x0);
            window_part<D>(c, row, n, MF_KEY, 16 * ks + 8 + g, j, x1);
        } else {
            part<D>(rt, rp, 16 * ks + g, j, x0);
            part<D>(rt, rp, 16 * ks + 8 + g, j, x1);
        }
#pragma unroll
        for (uint32_t mt = 0; mt < 4; mt++) {
            const uint32_t av[4] = {x0[2 * mt], x0[2 * mt + 1], x1[2 * mt], x1[2 * mt + 1]};
            mma(s[mt], av, qf[ks]);
        }
    }
}

/* O^T += V^T P^T: per channel block, value tiles of tokens
 * t0 = 16 (g/2) + 4 ks + g%2 and t0 + 2. */
template <int D, bool WIN>
__device__ static inline void value_combine(const mf_view &c, uint32_t row, uint32_t n,
                                            const uint2 *rt, const uint4 *rp,
                                            const uint32_t (&pb)[4][2], float (&o)[D / 16][4]) {
    const uint32_t g = threadIdx.x % 32 / 4, j = threadIdx.x % 4;
#pragma unroll
    for (uint32_t ks = 0; ks < 4; ks++)
#pragma unroll
        for (uint32_t cb = 0; cb < D / 64; cb++) {
            const uint32_t t0 = 64 * cb + 16 * (g / 2) + 4 * ks + g % 2;
            uint32_t x0[8], x1[8];
            if (WIN) {
                window_part<D>(c, row, n, MF_VALUE, t0, j, x0);
                window_part<D>(c, row, n, MF_VALUE, t0 + 2, j, x1);
            } else {
                part<D>(rt, rp, t0, j, x0);
                part<D>(rt, rp, t0 + 2, j, x1);
            }
#pragma unroll
            for (uint32_t mm = 0; mm < 4; mm++) {
                const uint32_t av[4] = {x0[2 * mm], x0[2 * mm + 1], x1[2 * mm], x1[2 * mm + 1]};
                mma(o[4 * cb + mm], av, pb[ks]);
            }
        }
}

template <int D>
__global__ static void __launch_bounds__(RD_WARPS * 32, D == 256 ? 1 : 2) rd_kernel(tc_args a) {
    extern __shared__ uint4 smem4[];
    uint32_t *lut = (uint32_t *)smem4;
    const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, j = lane % 4;
    uint2 *rt = (uint2 *)((char *)(lut + RD_LUT) + warp * rd_recs<D>::BYTES);
    uint4 *rp = (uint4 *)(rt + rd_recs<D>::N);
    const char *lutc = (const char *)lut + 4 * (lane % RD_COPIES);
    const uint32_t split = blockIdx.x % a.splits, tile = blockIdx.x / a.splits % a.tiles;
    const uint32_t row = blockIdx.x / (a.splits * a.tiles), worker = split * RD_WARPS + warp;
    const uint32_t hd = tile * HEADS + g;
    const float scale = mf_score_scale(D), ninf = -__int_as_float(0x7f800000);
    uint64_t c0 = (uint64_t)worker * a.per_worker, c1 = c0 + a.per_worker, ch;
    float o[D / 16][4], mrun[2] = {ninf, ninf}, lrun[2] = {0.0f, 0.0f}, *part_out;
    uint32_t qf[D / 16][2], i;
    for (i = threadIdx.x; i < RD_LUT; i += blockDim.x)
        lut[i] = mf_rd_lut(i / RD_COPIES);
    /* B fragments of Q^T: head g, channels 16 ks + 2j (+ 1) and + 8 */
#pragma unroll
    for (uint32_t ks = 0; ks < D / 16; ks++)
#pragma unroll
        for (uint32_t h = 0; h < 2; h++) {
            const uint16_t *q = a.q + ((size_t)row * a.group + hd) * D + 16 * ks + 8 * h + 2 * j;
            qf[ks][h] = hd < a.group ? (uint32_t)q[1] << 16 | q[0] : 0u;
        }
#pragma unroll
    for (uint32_t mt = 0; mt < D / 16; mt++)
        o[mt][0] = o[mt][1] = o[mt][2] = o[mt][3] = 0.0f;
    __syncthreads();
    if (c1 > a.chunks)
        c1 = a.chunks;
    for (ch = c0; ch < c1; ch++) {
        const uint32_t n = ch == a.k.blocks ? a.k.tokens % MF_TILE : MF_TILE;
        float s[4][4], cmax[2], lsum[2], alpha[2];
        uint32_t pb[4][2];
        /* S^T[token][head] = K Q^T */
        if (n == MF_TILE)
            prep<D>(a.k, row, ch, rt, rp, lutc);
        __syncwarp();
#pragma unroll
        for (uint32_t mt = 0; mt < 4; mt++)
            s[mt][0] = s[mt][1] = s[mt][2] = s[mt][3] = 0.0f;
        if (n == MF_TILE)
            key_scores<D, false>(a.k, row, n, rt, rp, qf, s);
        else
            key_scores<D, true>(a.k, row, n, rt, rp, qf, s);
        __syncwarp();
        if (n == MF_TILE) /* V's records, while the softmax runs */
            prep<D>(a.v, row, ch, rt, rp, lutc);
        /* Online softmax; this lane holds heads 2j + {0, 1} of tokens
         * 16 (g/2) + 4 mt + g%2 (+ 2 for r >= 2). */
        cmax[0] = cmax[1] = ninf;
#pragma unroll
        for (uint32_t mt = 0; mt < 4; mt++)
#pragma unroll
            for (uint32_t r = 0; r < 4; r++) {
                const uint32_t t = 16 * (g / 2) + 4 * mt + 2 * (r / 2) + g % 2;
                s[mt][r] = t < n ? MF_MUL(s[mt][r], scale) : ninf;
                cmax[r % 2] = fmaxf(cmax[r % 2], s[mt][r]);
            }
        tc_softmax_max(cmax, mrun, alpha);
        lsum[0] = lsum[1] = 0.0f;
#pragma unroll
        for (uint32_t mt = 0; mt < 4; mt++) {
            uint32_t e16[4];
#pragma unroll
            for (uint32_t r = 0; r < 4; r++) {
                const float e = mf_exp(MF_SUB(s[mt][r], mrun[r % 2]));
                lsum[r % 2] = MF_ADD(lsum[r % 2], e);
                e16[r] = __half_as_ushort(__float2half_rn(e));
            }
            /* P^T as B fragments: tokens 16j + 4 mt + {0, 1} (+ 2), head g */
            pb[mt][0] = movm(e16[1] << 16 | e16[0]);
            pb[mt][1] = movm(e16[3] << 16 | e16[2]);
        }
        tc_softmax_sum(lsum, alpha, lrun);
#pragma unroll
        for (uint32_t mt = 0; mt < D / 16; mt++)
#pragma unroll
            for (uint32_t r = 0; r < 4; r++)
                o[mt][r] = MF_MUL(o[mt][r], alpha[r % 2]);
        __syncwarp();
        if (n == MF_TILE)
            value_combine<D, false>(a.v, row, n, rt, rp, pb, o);
        else
            value_combine<D, true>(a.v, row, n, rt, rp, pb, o);
        __syncwarp();
    }
    part_out = a.part + (((size_t)row * a.tiles + tile) * a.workers + worker) * HEADS * (D + 2);
    if (lane < 4)
        for (uint32_t r = 0; r < 2; r++) {
            part_out[(2 * lane + r) * (D + 2)] = mrun[r];
            part_out[(2 * lane + r) * (D + 2) + 1] = lrun[r];
        }
    /* row g of output m-tile (cb, mm) is channel 64 cb + 16 (g/2) + 4 mm
     * + g%2, + 2 for rows 8-15 */
#pragma unroll
    for (uint32_t cb = 0; cb < D / 64; cb++)
#pragma unroll
        for (uint32_t mm = 0; mm < 4; mm++)
#pragma unroll
            for (uint32_t r = 0; r < 4; r++) {
                const uint32_t c = 64 * cb + 16 * (g / 2) + 4 * mm + 2 * (r / 2) + g % 2;
                part_out[(2 * j + r % 2) * (D + 2) + 2 + c] = o[4 * cb + mm][r];
            }
}

typedef void (*rd_fn)(tc_args);

static rd_fn rd_of(uint32_t dim) {
    return dim == 64 ? rd_kernel<64> : dim == 128 ? rd_kernel<128> : rd_kernel<256>;
}

tc_shape mf__rd_shape(uint32_t dim) {
    tc_shape sh;
    sh.fn = (const void *)rd_of(dim);
    sh.threads = RD_WARPS * 32;
    sh.workers = RD_WARPS;
    sh.smem = (size_t)RD_LUT * 4 + (size_t)RD_WARPS * (dim == 64    ? rd_recs<64>::BYTES
                                                       : dim == 128 ? rd_recs<128>::BYTES
                                                                    : rd_recs<256>::BYTES);
    return sh;
}

void mf__rd_launch(const tc_args &a, const tc_shape &sh, uint32_t blocks) {
    ((rd_fn)sh.fn)<<<blocks, sh.threads, sh.smem>>>(a);
}
