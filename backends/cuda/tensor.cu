/* tensor.cu - decode attention on the tensor cores (mma.sync m16n8k16,
 * fp16 inputs, fp32 accumulation; sm_80 and later).
 *
 * "Load as compressed, compute as dense": each warp (in small layers,
 * each block of four warps) walks its own range of 64-token chunks of one
 * KV row for 8 query heads (one n8 tile). Per
 * chunk, 32 tokens at a time, it scatters the K tiles' nonzeros into a
 * zeroed fp16 [32][D] buffer in shared memory and computes S = K Q^T
 * (M = tokens, N = heads); it updates an online softmax, stores P as
 * fp16, then scatters V the same way and accumulates O^T += V^T P^T
 * (M = channels, N = heads). Each chunk's tile metadata is loaded one
 * phase ahead. Warps write (m, l, O) partial states; a second kernel
 * merges them. Specialized per head dim and code width. 2- and 4-bit
 * tensors take tensor_rd.cu's kernel instead (tiles decoded in registers), which
 * shares the work split, the partial states and the merge kernel here;
 * built with -DMF_TC_RD=0 they take this one, for comparisons. Not
 * bit-identical to the reference: backends/cuda/BOUND.md bounds the
 * difference; bench/GPU-NOTES.md records what each version measured. */
#include <cuda_fp16.h>

#include "tensor.cuh"

#define WARPS 4
#define PSTRIDE 72       /* halves per row of P: 64 tokens + 16 bytes of padding */
#ifndef MF_TC_BLOCKS
#define MF_TC_BLOCKS 4   /* blocks per SM asked of ptxas (D <= 128): caps registers */
#endif

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

/* One unit's tile metadata, lane l holding tiles q*32 + l (q < D/32):
 * for keys channels, for values token l (q even) or 32 + l (q odd) of
 * channel block q/2. Loaded a phase ahead of its use. */
template <int D> struct unit_meta {
    uint64_t bm[D / 32];
    uint32_t off[D / 32]; /* reference layout: the tile's start */
    uint32_t sz[D / 32];  /* scale | zero << 16 */
    uint64_t base;        /* native layout: the unit's start */
    uint32_t n;           /* tokens: 64, the window's count, or 0 (none) */
};

/* What a fill needs after the metadata arrived: starts, the first two
 * payload words of each tile, and for 2 bits the four decoded values. */
template <int D> struct unit_words {
    const uint32_t *payload; /* the unit's start (native) or the payload's */
    uint32_t start[D / 32];  /* from payload */
    uint32_t w0[D / 32], w1[D / 32];
    uint64_t lut[D / 32]; /* 2 bits: the values of codes 0..3, 16 bits each */
};

template <int D, int BITS>
__device__ static void load_meta(const mf_view &c, uint32_t row, uint64_t ch, bool any,
                                 unit_meta<D> &m) {
    const uint32_t lane = threadIdx.x % 32;
    uint64_t u;
    m.n = !any ? 0u : ch == c.blocks ? c.tokens % MF_TILE : MF_TILE;
    if (!any || ch == c.blocks)
        return;
    u = mf_cu_unit(c, row, ch);
    if (c.layout == MF_LAYOUT_NATIVE)
        m.base = c.offsets[u];
#pragma unroll
    for (uint32_t q = 0; q < D / 32; q++) {
        uint64_t t = u * D + q * 32 + lane;
        m.bm[q] = c.bitmaps[t];
        if (c.layout == MF_LAYOUT_REFERENCE)
            m.off[q] = c.offsets[t];
        if (BITS)
            m.sz[q] = c.scales[t] | (uint32_t)c.zeros[t] << 16;
    }
}

/* Tile starts (native: a prefix sum over tiles in storage order), the range
 * check (a tile outside the payload reads as zeros and fails the call) and
 * the first payload words. */
template <int D, int BITS>
__device__ static void load_words(const mf_view &c, unit_meta<D> &m, unit_words<D> &w) {
    const uint32_t lane = threadIdx.x % 32;
    const uint64_t base = c.layout == MF_LAYOUT_NATIVE ? m.base : 0;
    uint32_t run = 0;
    if (m.n != MF_TILE)
        return;
    w.payload = c.payload + (base <= c.payload_words ? base : 0);
#pragma unroll
    for (uint32_t q = 0; q < D / 32; q++) {
        uint32_t words = mf_tile_words(mf_popcount64(m.bm[q]), BITS), incl = words, d;
        if (c.layout == MF_LAYOUT_REFERENCE) {
            w.start[q] = m.off[q];
        } else {
            for (d = 1; d < 32; d <<= 1) {
                uint32_t x = __shfl_up_sync(0xffffffffu, incl, d);
                if (lane >= d)
                    incl += x;
            }
            w.start[q] = run + incl - words;
            run += __shfl_sync(0xffffffffu, incl, 31);
        }
        if (!mf_cu_in_payload(c, base + w.start[q], words))
            m.bm[q] = 0;
        w.w0[q] = m.bm[q] && words > 0 ? w.payload[w.start[q]] : 0u;
        w.w1[q] = m.bm[q] && words > 1 ? w.payload[w.start[q] + 1] : 0u;
        if (BITS == 2) {
            float s = mf_h2f((uint16_t)m.sz[q]), z = mf_h2f((uint16_t)(m.sz[q] >> 16));
            uint32_t v[4];
            for (uint32_t code = 0; code < 4; code++)
                v[code] = dequant(code, s, z);
            w.lut[q] = (uint64_t)(v[3] << 16 | v[2]) << 32 | (v[1] << 16 | v[0]);
        }
    }
}

/* The fp16 value of code c from a tile's table of four: PRMT bytes 2c and
 * 2c + 1, selector 0x10 + 0x22c. */
__device__ static inline uint16_t lut_pick(uint64_t lut, uint32_t sel) {
    uint32_t h;
    asm("prmt.b32 %0, %1, %2, %3;"
        : "=r"(h)
        : "r"((uint32_t)lut), "r"((uint32_t)(lut >> 32)), "r"(sel));
    return (uint16_t)h;
}

/* Element value of the low code of cur (BITS 2: from the tile's table;
 * 4: dequantized; 0: the fp16 bits). */
template <int BITS>
__device__ static inline uint16_t code_value(uint64_t cur, uint64_t lut, float s, float z) {
    if (BITS == 2)
        return lut_pick(lut, (uint32_t)cur % 4u * 0x22u + 0x10u);
    if (BITS == 4)
        return dequant((uint32_t)cur % 16u, s, z);
    return (uint16_t)cur;
}

/* Writes the nonzeros of 32 consecutive elements of one tile (bits: theirs,
 * MSB first; n: the tile's nonzeros before them) to dst[i * stride] for
 * element i of the 32. The codes come through a 64-bit window of two
 * payload words; a window holds them all unless a tile has over 32 - 16
 * nonzeros (2 bits), so the inner loop has no reload test. */
template <int BITS>
__device__ static void scatter32(uint32_t bits, uint32_t n, const uint32_t *p, uint32_t w0,
                                 uint32_t w1, uint64_t lut, uint32_t sz, uint16_t *dst,
                                 int stride) {
    const uint32_t width = BITS ? BITS : 16, per = 32 / width;
    uint16_t *last = dst + 31 * stride; /* element 31, bit 0 */
    float s = 0.0f, z = 0.0f;
    if (BITS == 4) {
        s = mf_h2f((uint16_t)sz);
        z = mf_h2f((uint16_t)(sz >> 16));
    }
    while (bits) {
        uint32_t k = n / per, sh = n % per * width, cnt = __popc(bits), avail = 2 * per - n % per;
        uint32_t lo = k == 0 ? w0 : k == 1 ? w1 : p[k], hi = 0;
        uint64_t cur;
        if (n % per + cnt > per) /* codes in the next word: it exists */
            hi = k == 0 ? w1 : p[k + 1];
        cur = ((uint64_t)hi << 32 | lo) >> sh;
        if (cnt <= avail) {
            do {
                uint32_t b = 31 - __clz(bits);
                bits ^= 1u << b;
                last[-(int)b * stride] = code_value<BITS>(cur, lut, s, z);
                cur >>= width;
            } while (bits);
            return;
        }
        n += avail;
        for (; avail; avail--) {
            uint32_t b = 31 - __clz(bits);
            bits ^= 1u << b;
            last[-(int)b * stride] = code_value<BITS>(cur, lut, s, z);
            cur >>= width;
        }
    }
}

/* A segment too long for the per-lane loop (an outlier channel's key
 * tile, say): the whole warp writes it, lane l element l. */
template <int BITS>
__device__ static void scatter32_warp(uint32_t bits, uint32_t n, const uint32_t *p, uint64_t lut,
                                      uint32_t sz, uint16_t *dst, int stride) {
    const uint32_t lane = threadIdx.x % 32, width = BITS ? BITS : 16, per = 32 / width;
    if ((bits << lane) & 0x80000000u) {
        uint32_t r = n + (lane ? __popc(bits >> (32 - lane)) : 0u);
        float s = BITS == 4 ? mf_h2f((uint16_t)sz) : 0.0f;
        float z = BITS == 4 ? mf_h2f((uint16_t)(sz >> 16)) : 0.0f;
        dst[lane * stride] = code_value<BITS>(p[r / per] >> (r % per * width), lut, s, z);
    }
}

/* Tokens 32h .. 32h+31 of the chunk as dense fp16 rows [32][D + 8] into the
 * zeroed buf, as D/32 segments of 32 elements per lane. Keys: segment s is
 * the half's 32 bits of tile (channel) 32s + lane; values: bits 0-31 or
 * 32-63 of the tile of token 32h + lane in channel block s/2. A segment
 * with 8 nonzeros more than the warp's mean for its slot goes to the whole
 * warp afterwards: one such lane would otherwise hold all 32 in its loop.
 * Only segments s_lo .. s_hi - 1 (channels 32s_lo .. 32s_hi - 1). */
template <int D, int BITS, mf_kind KIND>
__device__ static void fill_half(const mf_view &c, uint32_t row, const unit_meta<D> &m,
                                 const unit_words<D> &w, uint32_t h, uint32_t s_lo, uint32_t s_hi,
                                 uint16_t *buf) {
    const uint32_t lane = threadIdx.x % 32;
    const int stride = KIND == MF_KEY ? D + 8 : 1;
    uint32_t bits[D / 32], n[D / 32], dst[D / 32], deferred = 0;
    if (m.n != MF_TILE) { /* the dense window */
        const uint16_t *p = c.window + (uint64_t)row * m.n * D;
        for (uint32_t e = 32 * h * D + lane; e < m.n * D && e < 32 * (h + 1) * D; e += 32)
            buf[(e / D - 32 * h) * (D + 8) + e % D] = p[e];
        return;
    }
#pragma unroll
    for (uint32_t s = 0; s < D / 32; s++) {
        const uint32_t q = KIND == MF_KEY ? s : 2 * (s / 2) + h, part = KIND == MF_KEY ? h : s % 2;
        const uint32_t hi = (uint32_t)(m.bm[q] >> 32);
        if (s < s_lo || s >= s_hi)
            continue;
        bits[s] = part ? (uint32_t)m.bm[q] : hi;
        n[s] = part ? __popc(hi) : 0u;
        dst[s] = KIND == MF_KEY ? q * 32 + lane : lane * (D + 8) + q / 2 * MF_TILE + 32 * part;
        if ((uint32_t)__popc(bits[s]) > __reduce_add_sync(0xffffffffu, __popc(bits[s])) / 32 + 8)
            deferred |= 1u << s;
        else
            scatter32<BITS>(bits[s], n[s], w.payload + w.start[q], w.w0[q], w.w1[q], w.lut[q],
                            m.sz[q], buf + dst[s], stride);
    }
#pragma unroll
    for (uint32_t s = 0; s < D / 32; s++) {
        const uint32_t q = KIND == MF_KEY ? s : 2 * (s / 2) + h;
        if (s < s_lo || s >= s_hi)
            continue;
        for (uint32_t fl = __ballot_sync(0xffffffffu, deferred >> s & 1u); fl; fl &= fl - 1) {
            uint32_t src = __ffs(fl) - 1;
            uint64_t lut = (uint64_t)__shfl_sync(0xffffffffu, (uint32_t)(w.lut[q] >> 32), src) << 32 |
                           __shfl_sync(0xffffffffu, (uint32_t)w.lut[q], src);
            scatter32_warp<BITS>(__shfl_sync(0xffffffffu, bits[s], src),
                                 __shfl_sync(0xffffffffu, n[s], src),
                                 w.payload + __shfl_sync(0xffffffffu, w.start[q], src), lut,
                                 __shfl_sync(0xffffffffu, m.sz[q], src),
                                 buf + __shfl_sync(0xffffffffu, dst[s], src), stride);
        }
    }
}

/* Zeroes the [32][D + 8] buffer (N = 0) or its columns c0 .. c0 + 8N - 1. */
template <int D, int N> __device__ static void zero(uint16_t *buf, uint32_t c0) {
    const uint4 z = make_uint4(0, 0, 0, 0);
    uint32_t i;
    __syncwarp();
    const uint32_t n = N ? N : 1;
    if (N == 0)
        for (i = threadIdx.x % 32; i < 32 * (D + 8) / 8; i += 32)
            ((uint4 *)buf)[i] = z;
    else
        for (i = threadIdx.x % 32; i < 32 * n; i += 32)
            *(uint4 *)(buf + i / n * (D + 8) + c0 + i % n * 8) = z;
    __syncwarp();
}

/* COOP 0: each warp is a worker walking its own chunks over all channels.
 * COOP 1 (layers with no more chunks than one wave has blocks, D >= 128):
 * the block is the worker and its four warps share each chunk, warp w
 * taking channels [D/4 w, D/4 (w + 1)) of K and of V: a warp's partial
 * scores go through shared memory and are summed in warp order, then every
 * warp runs the same softmax. A quarter of the fill and products per warp
 * cuts the latency of one chunk, which is what a small layer waits for. */
template <int D, int BITS, int COOP>
__global__ static void __launch_bounds__(WARPS * 32, D == 256 ? 2 : MF_TC_BLOCKS) tc_kernel(tc_args a) {
    extern __shared__ uint4 smem4[];
    uint16_t *qs = (uint16_t *)smem4; /* [HEADS][D + 8] */
    const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const uint32_t BUF = 32 * (D + 8) + HEADS * PSTRIDE; /* halves per warp */
    const uint32_t SEGS = COOP ? D / 128 : D / 32, s_lo = COOP ? warp * SEGS : 0; /* 32-channel segments */
    const uint32_t MTS = 2 * SEGS, mt_lo = 2 * s_lo; /* 16-channel output tiles */
    uint16_t *buf = qs + HEADS * (D + 8) + warp * BUF;
    uint16_t *ps = buf + 32 * (D + 8); /* [HEADS][PSTRIDE]: P as fp16 */
    uint32_t split = blockIdx.x % a.splits, tile = blockIdx.x / a.splits % a.tiles;
    uint32_t row = blockIdx.x / (a.splits * a.tiles), worker = COOP ? split : split * WARPS + warp;
    uint32_t i, mt, ks, r, h;
    uint64_t c0 = (uint64_t)worker * a.per_worker, c1 = c0 + a.per_worker, ch;
    const float scale = mf_score_scale(D), ninf = -__int_as_float(0x7f800000);
    float o[MTS][4], mrun[2] = {ninf, ninf}, lrun[2] = {0.0f, 0.0f};
    unit_meta<D> mk, mv;
    unit_words<D> w;
    float *part;
    tc_pdl_wait();
    for (i = threadIdx.x; i < HEADS * D; i += blockDim.x) {
        uint32_t hd = tile * HEADS + i / D;
        qs[(i / D) * (D + 8) + i % D] = hd < a.group ? a.q[((size_t)row * a.group + hd) * D + i % D] : 0;
    }
    __syncthreads();
#pragma unroll
    for (mt = 0; mt < MTS; mt++)
        o[mt][0] = o[mt][1] = o[mt][2] = o[mt][3] = 0.0f;
    if (c1 > a.chunks)
        c1 = a.chunks;
    load_meta<D, BITS>(a.k, row, c0, c0 < c1, mk);
    /* Per chunk: V's metadata loads while K is expanded and multiplied,
     * the next chunk's K metadata while V is. */
    for (ch = c0; ch < c1; ch++) {
        float s[4][4], cmax[2], lsum[2], alpha[2];
        uint32_t n = mk.n;
        load_meta<D, BITS>(a.v, row, ch, true, mv);
        load_words<D, BITS>(a.k, mk, w);
        /* S^T[token][head] = K Q^T, 32 tokens at a time */
#pragma unroll
        for (mt = 0; mt < 4; mt++)
            s[mt][0] = s[mt][1] = s[mt][2] = s[mt][3] = 0.0f;
#pragma unroll
        for (h = 0; h < 2; h++) {
            zero<D, COOP ? 4 * SEGS : 0>(buf, 32 * s_lo);
            fill_half<D, BITS, MF_KEY>(a.k, row, mk, w, h, s_lo, s_lo + SEGS, buf);
            __syncwarp();
#pragma unroll
            for (ks = 0; ks < 2 * SEGS; ks++) {
                const uint32_t kc = (2 * s_lo + ks) * 16;
                uint32_t b[2];
                ldsm_x2(b, qs + (lane % 8) * (D + 8) + kc + ((lane / 8) % 2) * 8);
#pragma unroll
                for (mt = 0; mt < 2; mt++) {
                    uint32_t av[4];
                    ldsm_x4(av, buf + (mt * 16 + lane % 16) * (D + 8) + kc + (lane / 16) * 8);
                    mma(s[2 * h + mt], av, b);
                }
            }
        }
        if (COOP) { /* S = ((S_0 + S_1) + S_2) + S_3 over the warps' channel quarters */
            const float *xs = (const float *)(qs + HEADS * (D + 8));
            __syncwarp();
#pragma unroll
            for (mt = 0; mt < 4; mt++)
#pragma unroll
                for (r = 0; r < 4; r++)
                    ((float *)buf)[(mt * 4 + r) * 32 + lane] = s[mt][r];
            __syncthreads();
#pragma unroll
            for (mt = 0; mt < 4; mt++)
#pragma unroll
                for (r = 0; r < 4; r++) {
                    float v = xs[(mt * 4 + r) * 32 + lane];
                    for (i = 1; i < WARPS; i++)
                        v = MF_ADD(v, xs[i * (BUF / 2) + (mt * 4 + r) * 32 + lane]);
                    s[mt][r] = v;
                }
            __syncthreads();
        }
        load_meta<D, BITS>(a.k, row, ch + 1, ch + 1 < c1, mk);
        load_words<D, BITS>(a.v, mv, w);
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
        tc_softmax_max(cmax, mrun, alpha);
        lsum[0] = lsum[1] = 0.0f;
#pragma unroll
        for (mt = 0; mt < 4; mt++)
#pragma unroll
            for (r = 0; r < 4; r++) {
                float e = mf_exp(MF_SUB(s[mt][r], mrun[r % 2]));
                lsum[r % 2] = MF_ADD(lsum[r % 2], e);
                ps[(2 * (lane % 4) + r % 2) * PSTRIDE + mt * 16 + lane / 4 + 8 * (r / 2)] =
                    __half_as_ushort(__float2half_rn(e));
            }
        tc_softmax_sum(lsum, alpha, lrun);
#pragma unroll
        for (mt = 0; mt < MTS; mt++)
#pragma unroll
            for (r = 0; r < 4; r++)
                o[mt][r] = MF_MUL(o[mt][r], alpha[r % 2]);
        /* O^T[channel][head] += V^T P^T, 32 tokens at a time */
#pragma unroll
        for (h = 0; h < 2; h++) {
            zero<D, COOP ? 4 * SEGS : 0>(buf, 32 * s_lo);
            fill_half<D, BITS, MF_VALUE>(a.v, row, mv, w, h, s_lo, s_lo + SEGS, buf);
            __syncwarp();
#pragma unroll
            for (ks = 0; ks < 2; ks++) {
                uint32_t b[2];
                ldsm_x2(b, ps + (lane % 8) * PSTRIDE + (2 * h + ks) * 16 + ((lane / 8) % 2) * 8);
#pragma unroll
                for (mt = 0; mt < MTS; mt++) {
                    uint32_t av[4];
                    ldsm_x4_trans(av, buf + (ks * 16 + lane % 8 + (lane / 16) * 8) * (D + 8) +
                                          (mt_lo + mt) * 16 + ((lane / 8) % 2) * 8);
                    mma(o[mt], av, b);
                }
            }
        }
    }
    part = a.part + (((size_t)row * a.tiles + tile) * a.workers + worker) * HEADS * (D + 2);
    if (lane < 4 && (!COOP || warp == 0))
        for (r = 0; r < 2; r++) {
            part[(2 * lane + r) * (D + 2)] = mrun[r];
            part[(2 * lane + r) * (D + 2) + 1] = lrun[r];
        }
#pragma unroll
    for (mt = 0; mt < MTS; mt++)
#pragma unroll
        for (r = 0; r < 4; r++)
            part[(2 * (lane % 4) + r % 2) * (D + 2) + 2 + (mt_lo + mt) * 16 + lane / 4 + 8 * (r / 2)] = o[mt][r];
}

#define MERGE_THREADS 128

/* Block reduction over MERGE_THREADS threads (max when is_max, else sum). */
__device__ static float merge_reduce(float x, bool is_max, float *red) {
    uint32_t i;
    for (i = 16; i; i >>= 1) {
        float y = __shfl_xor_sync(0xffffffffu, x, i);
        x = is_max ? fmaxf(x, y) : MF_ADD(x, y);
    }
    __syncthreads();
    if (threadIdx.x % 32 == 0)
        red[threadIdx.x / 32] = x;
    __syncthreads();
    x = red[0];
    for (i = 1; i < MERGE_THREADS / 32; i++)
        x = is_max ? fmaxf(x, red[i]) : MF_ADD(x, red[i]);
    return x;
}

/* Block per (row, query head): merges the workers' states. Each worker's
 * factor exp(m_w - m) is computed once, and every thread sums its
 * channels over the workers in order. The states of up to MERGE_BATCH
 * workers are loaded into registers before the maximum is known, so that
 * a small layer's merge waits out about one load latency, not one per
 * handful of workers. */
template <int D> __global__ static void __launch_bounds__(MERGE_THREADS) tc_merge_kernel(tc_args a, float *out) {
    const uint32_t CH = (D + MERGE_THREADS - 1) / MERGE_THREADS, MERGE_BATCH = 64 / CH;
    __shared__ float fs[MERGE_BATCH], red[MERGE_THREADS / 32];
    const uint32_t t = threadIdx.x, workers = a.workers, row = blockIdx.x / a.group;
    const uint32_t h = blockIdx.x % a.group;
    const size_t ws = (size_t)HEADS * (D + 2);
    const float *p = a.part + ((size_t)row * a.tiles + h / HEADS) * workers * ws + (h % HEADS) * (D + 2);
    float m = -__int_as_float(0x7f800000), l = 0.0f, o[CH], x[CH][MERGE_BATCH];
    uint32_t w0, w, k;
    tc_pdl_wait();
    for (k = 0; k < CH; k++)
        o[k] = 0.0f;
    for (w0 = 0; w0 < workers; w0 += MERGE_BATCH) {
        const uint32_t nw = workers - w0 < MERGE_BATCH ? workers - w0 : MERGE_BATCH;
        float f = 0.0f;
#pragma unroll
        for (k = 0; k < CH; k++)
#pragma unroll
            for (w = 0; w < MERGE_BATCH; w++)
                x[k][w] = w < nw && t + k * MERGE_THREADS < D ? p[(w0 + w) * ws + 2 + t + k * MERGE_THREADS] : 0.0f;
        if (w0 == 0) {
            for (w = t; w < workers; w += MERGE_THREADS)
                m = fmaxf(m, p[w * ws]);
            m = merge_reduce(m, true, red);
        }
        if (t < nw) {
            f = mf_exp(MF_SUB(p[(w0 + t) * ws], m));
            l = MF_ADD(l, MF_MUL(p[(w0 + t) * ws + 1], f));
        }
        __syncthreads();
        if (t < nw)
            fs[t] = f;
        __syncthreads();
#pragma unroll
        for (k = 0; k < CH; k++)
#pragma unroll
            for (w = 0; w < MERGE_BATCH; w++)
                if (w < nw)
                    o[k] = MF_ADD(o[k], MF_MUL(x[k][w], fs[w]));
    }
    l = merge_reduce(l, false, red);
    for (k = 0; k < CH; k++)
        if (t + k * MERGE_THREADS < D)
            out[((size_t)row * a.group + h) * D + t + k * MERGE_THREADS] = mf_canon(MF_DIV(o[k], l));
}

static size_t tc_smem(uint32_t dim) {
    return (size_t)HEADS * (dim + 8) * 2 + (size_t)WARPS * (32 * (dim + 8) + HEADS * PSTRIDE) * 2;
}

typedef void (*tc_fn)(tc_args);

template <int D, int COOP> static tc_fn tc_kernel_bits(uint32_t bits) {
    return bits == 2 ? tc_kernel<D, 2, COOP> : bits == 4 ? tc_kernel<D, 4, COOP> : tc_kernel<D, 0, COOP>;
}

static tc_fn tc_kernel_of(const mf_desc *d, int coop) {
    if (d->dim == 64)
        return tc_kernel_bits<64, 0>(d->bits);
    if (d->dim == 128)
        return coop ? tc_kernel_bits<128, 1>(d->bits) : tc_kernel_bits<128, 0>(d->bits);
    return coop ? tc_kernel_bits<256, 1>(d->bits) : tc_kernel_bits<256, 0>(d->bits);
}

#ifndef MF_TC_RD
#define MF_TC_RD 1 /* 0: 2- and 4-bit tensors also take tc_kernel (for comparisons) */
#endif

/* Whether a layer takes tensor_rd.cu's kernel: 2- and 4-bit tensors do. */
static int uses_rd(const mf_desc *d) { return MF_TC_RD && (d->bits == 2 || d->bits == 4); }

/* The kernel a layer takes: tensor_rd.cu's, or tc_kernel, its block
 * sharing chunks (coop) or not. */
static tc_shape shape_of(const mf_desc *d, int coop) {
    tc_shape sh;
    if (uses_rd(d))
        return mf__rd_shape(d->dim, coop, d->bits);
    sh.fn = (const void *)tc_kernel_of(d, coop);
    sh.threads = WARPS * 32;
    sh.workers = coop ? 1 : WARPS;
    sh.smem = tc_smem(d->dim);
    return sh;
}

/* Kernel fn's attributes on the current device, its dynamic shared
 * memory limit raised to smem where it is lower (set once per process and
 * device in practice; each query and set costs the host 0.3-0.5 us). */
static mf_status func_attrs(const void *fn, size_t smem, cudaFuncAttributes *fa) {
    MF_CU(cudaFuncGetAttributes(fa, fn));
    if ((size_t)fa->maxDynamicSharedSizeBytes < smem)
        MF_CU(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    return MF_OK;
}

/* Blocks of shape sh that fit one SM, and its kernel's attributes. */
static mf_status blocks_per_sm(const tc_shape *sh, cudaFuncAttributes *fa, int *occ) {
    mf_status st = func_attrs(sh->fn, sh->smem, fa);
    if (st != MF_OK)
        return st;
    MF_CU(cudaOccupancyMaxActiveBlocksPerMultiprocessor(occ, sh->fn, (int)sh->threads, sh->smem));
    return *occ < 1 ? MF_ERR_UNSUPPORTED : MF_OK;
}

#ifndef MF_RD_COOP_WAVES
#define MF_RD_COOP_WAVES 4 /* for experiments */
#endif

/* Coop for layers of at most this many chunks per coop block of a full
 * wave. Measured for rd_kernel (H100, 2026-12-06): 4 against 1, queued
 * calls, batch 1 T 8K 24.0 us against 28.1, T 16K 35.9 against 39.0,
 * batch 8 T 1K 22.8 against 26.8, the rest the same; for tc_kernel one
 * chunk per block was best (below). */
static uint64_t coop_waves(const mf_desc *d) { return uses_rd(d) ? MF_RD_COOP_WAVES : 1; }

/* What the work split and the launches ask of the current device, once
 * a call. */
struct tc_device {
    int sms, max_blocks, cc, sm_smem;
};

static mf_status device_of(tc_device *dv) {
    int dev = 0;
    MF_CU(cudaGetDevice(&dev));
    MF_CU(cudaDeviceGetAttribute(&dv->sms, cudaDevAttrMultiProcessorCount, dev));
    MF_CU(cudaDeviceGetAttribute(&dv->max_blocks, cudaDevAttrMaxBlocksPerMultiprocessor, dev));
    MF_CU(cudaDeviceGetAttribute(&dv->cc, cudaDevAttrComputeCapabilityMajor, dev));
    MF_CU(cudaDeviceGetAttribute(&dv->sm_smem, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev));
    return MF_OK;
}

/* Work split: enough workers for one full wave of blocks; each takes
 * per_worker consecutive chunks. The workers are warps, or for a small
 * layer (D >= 128; rd_kernel: K and V in the reference layout, vlayout
 * being V's; see coop_waves) blocks whose warps share each chunk: there a
 * few chunks' latency is the call's (measured for tc_kernel: 10-15%
 * faster for batch 1 at T 1K-4K; from two chunks per block on, slower). */
static mf_status plan(const tc_device *dv, const mf_desc *k, mf_layout vlayout, uint32_t group,
                      tc_args *a, tc_shape *shape, cudaFuncAttributes *fa) {
    const int sms = dv->sms, max_blocks = dv->max_blocks;
    int occ = 0;
    uint64_t units, want, per;
    tc_shape sh;
    cudaFuncAttributes fa_own;
    mf_status st;
    if (!fa)
        fa = &fa_own;
    a->group = group;
    a->tiles = (group + HEADS - 1) / HEADS;
    a->chunks = (k->tokens + MF_TILE - 1) / MF_TILE;
    units = (uint64_t)k->rows * a->tiles;
    a->coop = 0;
    /* the coop shape is asked of layers it could take, the other shape
     * only of those it does not take */
    if (k->dim >= 128 && units * a->chunks <= coop_waves(k) * sms * (uint64_t)max_blocks &&
        (!uses_rd(k) || (k->layout == MF_LAYOUT_REFERENCE && vlayout == MF_LAYOUT_REFERENCE))) {
        sh = shape_of(k, 1);
        if ((st = blocks_per_sm(&sh, fa, &occ)) != MF_OK)
            return st;
        a->coop = units * a->chunks <= coop_waves(k) * sms * (uint64_t)occ;
    }
    if (!a->coop) {
        sh = shape_of(k, 0);
        if ((st = blocks_per_sm(&sh, fa, &occ)) != MF_OK)
            return st;
    }
    per = sh.workers; /* workers per block */
    want = (uint64_t)sms * (uint64_t)occ / units;
    if (want < 1)
        want = 1;
    if (want > (a->chunks + per - 1) / per)
        want = (a->chunks + per - 1) / per;
    a->splits = (uint32_t)want;
    a->workers = (uint32_t)(want * per);
    a->per_worker = (uint32_t)((a->chunks + a->workers - 1) / a->workers);
    if (shape)
        *shape = sh;
    return MF_OK;
}

/* Bytes of the partial states of plan a. */
static size_t part_bytes(const mf_desc *k, const tc_args *a) {
    return mf__cu_align((size_t)k->rows * a->tiles * a->workers * HEADS * (k->dim + 2) * 4);
}

/* The workspace query sees K alone: enough for the plans of either V
 * layout. */
mf_status mf__cu_tensor_bytes(const mf_desc *k, uint32_t group, size_t *bytes) {
    tc_args a, b;
    tc_device dv;
    size_t ref, nat;
    mf_status st;
    if ((st = device_of(&dv)) != MF_OK ||
        (st = plan(&dv, k, MF_LAYOUT_REFERENCE, group, &a, NULL, NULL)) != MF_OK ||
        (st = plan(&dv, k, MF_LAYOUT_NATIVE, group, &b, NULL, NULL)) != MF_OK)
        return st;
    ref = part_bytes(k, &a);
    nat = part_bytes(k, &b);
    *bytes = ref > nat ? ref : nat;
    return MF_OK;
}

extern "C" mf_status mf_cuda_attend_tensor(const mf_ctensor *k, const mf_ctensor *v,
                                           const uint16_t *q, uint32_t group, float *out,
                                           void *workspace, size_t workspace_bytes, int wait) {
    const mf_desc *d = &k->desc;
    mf_status st;
    char *rest;
    tc_args a;
    tc_shape sh;
    void *args[2];
    const void *merge = d->dim == 64    ? (const void *)tc_merge_kernel<64>
                        : d->dim == 128 ? (const void *)tc_merge_kernel<128>
                                        : (const void *)tc_merge_kernel<256>;
    size_t merge_smem;
    cudaFuncAttributes fa, fm;
    tc_device dv;
    int pdl;
    if (v->desc.bits != d->bits) /* the kernels are specialized for one code width */
        return MF_ERR_UNSUPPORTED;
    if ((st = mf__cu_attend_views(k, v, workspace, &a.k, &a.v)) != MF_OK ||
        (st = device_of(&dv)) != MF_OK ||
        (st = plan(&dv, d, v->desc.layout, group, &a, &sh, &fa)) != MF_OK ||
        (st = mf__cu_attend_space(d, group, part_bytes(d, &a), workspace, workspace_bytes, wait,
                                   &rest)) != MF_OK)
        return st;
    a.q = q;
    a.part = (float *)rest;
    /* An early merge block takes the first SM that frees up, and as many
     * as fit would pile onto it: a merge of at most one wave is launched
     * early (PDL) only with enough (unused) shared memory to hold one
     * block per SM. Measured (H100, batch 1, T 32K): 63 us per queued call
     * piled against 57 us without the early launch. */
    merge_smem = d->rows * group <= (uint32_t)dv.sms ? (size_t)dv.sm_smem / 2 + 1 : 0;
    if ((st = func_attrs(merge, merge_smem, &fm)) != MF_OK)
        return st;
    pdl = mf__cu_pdl_ok(dv.cc, fa.ptxVersion) && mf__cu_pdl_ok(dv.cc, fm.ptxVersion);
    if (!pdl)
        merge_smem = 0;
    args[0] = &a;
    args[1] = &out;
    MF_CU(mf__cu_launch(sh.fn, d->rows * a.tiles * a.splits, sh.threads, sh.smem, pdl, args));
    MF_CU(mf__cu_launch(merge, d->rows * group, MERGE_THREADS, merge_smem, merge_smem > 0, args));
    return mf__cu_attend_done(workspace, wait);
}
