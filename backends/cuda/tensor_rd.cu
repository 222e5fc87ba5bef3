/* tensor_rd.cu - tensor-core decode attention for 2- and 4-bit tensors,
 * tiles decoded in registers (regdecode.h): no shared-memory scatter, no
 * zeroing, the same work per element whatever the sparsity.
 *
 * Each warp walks its own range of 64-token chunks of one KV row for 8
 * query heads (the mma's N), as tensor.cu's tc_kernel, and writes the same
 * partial states for its merge kernel; in small layers (COOP) a block's
 * four warps share each chunk instead (rd_share, rd_kernel). Per chunk
 * and tensor:
 *
 *  - prep: lane l takes tiles l, l + 32, ... of the warp's share:
 *    metadata and code words, the tile's table (2 bits: mf_rd_table; 4
 *    bits: its scale and zero) and its four parts' inputs (mf_rd_parts,
 *    or a code window per bitmap byte) with their placement selectors go
 *    to the warp's records in shared memory;
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
 * output (COOP: split as BOUND.md says): backends/cuda/BOUND.md holds. */
#include "regdecode.h"
#include "tensor.cuh"

/* Warps per block: each its own worker, or in COOP blocks (small layers,
 * reference layout, D >= 128) four warps sharing each chunk. */
#define RD_WARPS(COOP) ((COOP) ? 4 : 8)
/* mf_rd_lut per byte (for the tensors' code width), RD_COPIES(COOP)
 * copies: with 16, prep's lookups (lane l reads copy l % 16) conflict at
 * most 2-way and two blocks still fit an SM (D 128). COOP blocks prep a
 * quarter of the tiles, so their lookups may conflict up to 8-way over 4
 * copies, which lets four blocks fit (D 128). */
#define RD_COPIES(COOP) ((COOP) ? 4 : 16)
/* COOP: the warps' partial scores, 16 floats a lane, then each lane's
 * maxima of its two heads */
#define RD_XS_FLOATS (RD_WARPS(1) * 16 * 32 + RD_WARPS(1) * 32 * 2)
/* Worker warps (not COOP) run rolled loops (frag); their B fragments
 * take RD_ROLL_WORDS(D) words of shared memory in xs's place. */
#define RD_ROLL_WORDS(D) (64 * (D) / 16 + RD_WARPS(0) * 64 * 4)

__host__ __device__ constexpr uint32_t log2_of(uint32_t x) { return x > 1 ? 1 + log2_of(x / 2) : 0; }

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

/* A warp's share of a chunk's tiles: TILES per lane, lane l's i-th being
 * tile own_tile(kind, warp, 32 i + l). A worker warp takes every tile; in
 * a COOP block warp w takes the key tiles (channels) of its channel steps
 * ks in [w D/64, (w + 1) D/64) and the value tiles (tokens) of its token
 * step ks = w: tokens 16 a + 4 w + b (a, b < 4) of every channel block. */
template <int D, bool COOP> struct rd_share {
    static const uint32_t TILES = COOP ? D / 128 : D / 32, B = TILES < 4 ? TILES : 4;
    static const uint32_t KS = COOP ? D / 64 : D / 16; /* channel steps */
    static const uint32_t VS = COOP ? 1 : 4;           /* token steps */
};

template <int D, bool COOP>
__device__ static inline uint32_t own_tile(mf_kind kind, uint32_t warp, uint32_t i) {
    if (!COOP)
        return i;
    if (kind == MF_KEY)
        return warp * (D / 4) + i;
    return 64 * (i / 16) + 16 * (i / 4 % 4) + 4 * warp + i % 4;
}

/* Inputs of B tiles of a warp's share, loaded in two rounds so that a
 * caller can keep both tensors' loads in flight together: meta (bitmaps,
 * scales and zeros, starts), then words (2 bits: the code words they
 * point to; 4 bits: the code window of each bitmap byte, mf_rd_window4,
 * so half as many tiles a batch). */
template <int D, bool COOP, int BITS> struct rd_in {
    static const uint32_t T = rd_share<D, COOP>::B;
    static const uint32_t B = BITS == 4 && T > 2 ? 2 : T, WORDS = BITS == 4 ? 8 : 4;
    uint64_t bm[B], start[B], run; /* run: native layout, the next tile's start */
    uint32_t sz[B], p[B][WORDS], jt[B], bad; /* bad: a tile left the payload */
};

template <int D, bool COOP, int BITS>
__device__ static inline void meta(const mf_view &c, uint32_t row, uint64_t ch, uint32_t i0,
                                   rd_in<D, COOP, BITS> &in) {
    const uint32_t lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const uint64_t u = mf_cu_unit(c, row, ch);
    if (i0 == 0)
        in.run = c.layout == MF_LAYOUT_NATIVE ? c.offsets[u] : 0;
#pragma unroll
    for (uint32_t i = 0; i < rd_in<D, COOP, BITS>::B; i++) {
        in.jt[i] = own_tile<D, COOP>(c.kind, warp, 32 * (i0 + i) + lane);
        const uint64_t t = u * D + in.jt[i];
        in.bm[i] = c.bitmaps[t];
        in.sz[i] = c.scales[t] | (uint32_t)c.zeros[t] << 16;
        in.start[i] = c.layout == MF_LAYOUT_REFERENCE ? c.offsets[t] : 0;
    }
}

/* A tile whose words leave the payload reads as empty and fails the call
 * (in.bad, reported by report: a block may load and store its records
 * before its PDL wait, where it writes no global memory). Native tiles
 * start after the unit's earlier tiles: a scan over the lanes, which only
 * a warp holding every tile can do (COOP blocks take reference tensors
 * only). */
template <int D, bool COOP, int BITS>
__device__ static inline void words(const mf_view &c, rd_in<D, COOP, BITS> &in) {
    const uint32_t lane = threadIdx.x % 32;
    in.bad = 0;
#pragma unroll
    for (uint32_t i = 0; i < rd_in<D, COOP, BITS>::B; i++) {
        const uint32_t n = mf_tile_words((uint32_t)__popcll(in.bm[i]), BITS);
        if (!COOP && c.layout == MF_LAYOUT_NATIVE) {
            uint32_t incl = n, d;
            for (d = 1; d < 32; d <<= 1) {
                uint32_t x = __shfl_up_sync(0xffffffffu, incl, d);
                if (lane >= d)
                    incl += x;
            }
            in.start[i] = in.run + incl - n;
            in.run += __shfl_sync(0xffffffffu, incl, 31);
        }
#pragma unroll
        for (uint32_t k = 0; k < rd_in<D, COOP, BITS>::WORDS; k++)
            in.p[i][k] = 0u;
        if (!mf_cu_payload_ok(c, in.start[i], n)) {
            in.bm[i] = 0;
            in.bad = 1;
            continue;
        }
        if (BITS == 4) {
            const uint64_t rb = __brevll(in.bm[i]);
            uint32_t r = 0;
#pragma unroll
            for (uint32_t q = 0; q < 8; q++) {
                in.p[i][q] = mf_rd_window4(c.payload + in.start[i], n, r);
                r += (uint32_t)__popc((uint32_t)(rb >> (8 * q)) & 0xffu);
            }
        } else {
#pragma unroll
            for (uint32_t k = 0; k < 4; k++)
                if (k < n)
                    in.p[i][k] = c.payload[in.start[i] + k];
        }
    }
}

/* The loaded tiles' range errors to c's flag. */
template <int D, bool COOP, int BITS>
__device__ static inline void report(const mf_view &c, const rd_in<D, COOP, BITS> &in) {
    if (in.bad)
        mf_cu_flag_range(c);
}

/* Tables and part records of the loaded tiles into the warp's records:
 * rt[rec] = table (4 bits: scale and zero as fp32, the zero as
 * mf_rd_zero4 gives it), rp[j P + rec] = part j's (w, b) (mf_rd_parts;
 * 4 bits: the code windows of its two bitmap bytes) and the placement
 * selectors of its two bitmap bytes, looked up here in lut (this lane's
 * copy of the table), so that a part's decode waits on one shared-memory
 * round trip, not two (4 bits: windows and selectors in the fast form of
 * mf_rd_fast4's tiles). */
template <int D, bool COOP, int BITS>
__device__ static inline void store(const rd_in<D, COOP, BITS> &in, uint2 *rt, uint4 *rp,
                                    const char *lut) {
    const uint32_t L = log2_of(4 * RD_COPIES(COOP)); /* a lut row's bytes */
#pragma unroll
    for (uint32_t i = 0; i < rd_in<D, COOP, BITS>::B; i++) {
        const uint32_t r = rec_of(in.jt[i]);
        const float s = __half2float(__ushort_as_half((uint16_t)in.sz[i]));
        const float z = __half2float(__ushort_as_half((uint16_t)(in.sz[i] >> 16)));
        uint32_t lo, hi, w[4], b[4];
        uint16_t v[4];
        if (BITS == 4) {
            const uint64_t rb = __brevll(in.bm[i]);
            const bool fast = mf_rd_fast4(s, z);
            rt[r] = make_uint2(__float_as_uint(s), __float_as_uint(mf_rd_zero4(s, z)));
#pragma unroll
            for (uint32_t k = 0; k < 4; k++) { /* part k: bitmap bytes 2k, 2k + 1 */
                const uint32_t b0 = (uint32_t)(rb >> (16 * k)) & 0xffu;
                const uint32_t b1 = (uint32_t)(rb >> (16 * k + 8)) & 0xffu;
                uint32_t w0 = in.p[i][2 * k], w1 = in.p[i][2 * k + 1];
                uint32_t sel0 = *(const uint32_t *)(lut + (b0 << L));
                uint32_t sel1 = *(const uint32_t *)(lut + (b1 << L));
                if (fast) {
                    mf_rd_fastbyte4(b0, (uint32_t)z, &w0, &sel0);
                    mf_rd_fastbyte4(b1, (uint32_t)z, &w1, &sel1);
                }
                rp[k * rd_recs<D>::P + r] = make_uint4(w0, w1, sel0, sel1);
            }
        } else {
#pragma unroll
            for (uint32_t code = 0; code < 4; code++)
                v[code] = dequant(code, s, z);
            mf_rd_parts(in.bm[i], in.p[i][0], in.p[i][1], in.p[i][2], in.p[i][3],
                        mf_rd_table(v, &lo, &hi), w, b);
            rt[r] = make_uint2(lo, hi);
#pragma unroll
            for (uint32_t k = 0; k < 4; k++) /* b0 at bits 7-14, b1 at 16-23 */
                rp[k * rd_recs<D>::P + r] = make_uint4(
                    w[k], b[k], *(const uint32_t *)(lut + ((b[k] >> (7 - L)) & (0xffu << L))),
                    *(const uint32_t *)(lut + ((b[k] >> (16 - L)) & (0xffu << L))));
        }
    }
}

/* A worker warp's records of chunk ch of row, B tiles at a time: their
 * metadata loads, then their code words, all in flight before any is
 * used. (A COOP warp has one batch per tensor: coop_load.) */
template <int D, int BITS>
__device__ static void prep(const mf_view &c, uint32_t row, uint64_t ch, uint2 *rt, uint4 *rp,
                            const char *lut) {
    rd_in<D, false, BITS> in;
#pragma unroll
    for (uint32_t i0 = 0; i0 < rd_share<D, false>::TILES; i0 += rd_in<D, false, BITS>::B) {
        meta<D, false, BITS>(c, row, ch, i0, in);
        words<D, false, BITS>(c, in);
        report<D, false, BITS>(c, in);
        store<D, false, BITS>(in, rt, rp, lut);
    }
}

/* Whether chunk ch holds 64 compressed tokens (else it is the dense
 * window's). */
__device__ static inline bool full_chunk(const tc_args &a, uint64_t ch) { return ch != a.k.blocks; }

/* A COOP warp's one batch of K's and of V's tiles of chunk ch: both
 * tensors' loads in flight together; V's wait in registers while K's
 * scores and the softmax run. */
template <int D, bool COOP, int BITS>
__device__ static inline void coop_load(const tc_args &a, uint32_t row, uint64_t ch,
                                        rd_in<D, COOP, BITS> &kin, rd_in<D, COOP, BITS> &vin) {
    meta<D, COOP, BITS>(a.k, row, ch, 0, kin);
    meta<D, COOP, BITS>(a.v, row, ch, 0, vin);
    words<D, COOP, BITS>(a.k, kin);
    words<D, COOP, BITS>(a.v, vin);
}

/* Part j of tile jt from the records, transposed (see the header). */
template <int D, int BITS>
__device__ static inline void part(const uint2 *rt, const uint4 *rp, uint32_t jt, uint32_t j,
                                   uint32_t x[8]) {
    const uint32_t r = rec_of(jt);
    const uint2 tb = rt[r];
    const uint4 q = rp[j * rd_recs<D>::P + r];
    if (BITS == 4) {
        const float sc = __uint_as_float(tb.x), zr = __uint_as_float(tb.y);
        if (__all_sync(0xffffffffu, mf_rd_isfast4(zr))) /* no masks, a subtraction less */
            mf_rd_part4(q.x, q.y, q.z, q.w, sc, zr, 1, x);
        else
            mf_rd_part4(q.x, q.y, q.z, q.w, sc, zr, 0, x);
    } else {
        mf_rd_part(q.x, q.y, q.z, q.w, tb.x, tb.y, x);
    }
    if (BITS == 2 && __any_sync(0xffffffffu, q.y >> 31)) { /* a negated table: flip back */
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

/* Rolled loops (ROLL: worker warps). Unrolled, their 4-bit decode
 * overflows the instruction cache and their 2-bit one spills registers
 * (D 128); rolled, the loops' B fragments (Q^T's, P^T's) come from shared
 * memory, fragment k of this lane at sm[64 k + lane] and sm[64 k + 32 +
 * lane], not from registers, which a loop index would send to local
 * memory. */
/* A fragment word, or one from its fp16 halves: volatile, so that it
 * stays at the product instead of being hoisted to the loads. */
__device__ static inline uint32_t word(uint32_t x) { return x; }
__device__ static inline uint32_t word(const uint32_t (&h)[2]) {
    uint32_t x;
    asm volatile("prmt.b32 %0, %1, %2, 0x5410;" : "=r"(x) : "r"(h[0]), "r"(h[1]));
    return x;
}

template <bool ROLL, typename F>
__device__ static inline void frag(const F &f, const uint32_t *sm, uint32_t k, uint32_t kl,
                                   uint32_t b[2]) {
    if (ROLL) {
        b[0] = sm[64 * k + threadIdx.x % 32];
        b[1] = sm[64 * k + 32 + threadIdx.x % 32];
    } else {
        b[0] = word(f[kl][0]);
        b[1] = word(f[kl][1]);
    }
}

/* S^T += K Q^T over KS channel steps from ks0 (WIN: the dense window of n
 * tokens); qf (ROLL: qsm) holds Q^T's fragments of those steps (qf: as
 * their fp16 halves). */
template <int D, int BITS, bool WIN, bool ROLL, uint32_t KS>
__device__ static inline void key_scores(const mf_view &c, uint32_t row, uint32_t n,
                                         const uint2 *rt, const uint4 *rp, uint32_t ks0,
                                         const uint32_t (&qf)[KS][2][2], const uint32_t *qsm,
                                         float (&s)[4][4]) {
    const uint32_t g = threadIdx.x % 32 / 4, j = threadIdx.x % 4;
#pragma unroll(ROLL ? 1 : KS)
    for (uint32_t kl = 0; kl < KS; kl++) {
        const uint32_t ks = ks0 + kl;
        uint32_t x0[8], x1[8];
        if (WIN) {
            window_part<D>(c, row, n, MF_KEY, 16 * ks + g, j, x0);
            window_part<D>(c, row, n, MF_KEY, 16 * ks + 8 + g, j, x1);
        } else {
            part<D, BITS>(rt, rp, 16 * ks + g, j, x0);
            part<D, BITS>(rt, rp, 16 * ks + 8 + g, j, x1);
        }
        uint32_t qb[2];
        frag<ROLL>(qf, qsm, ks, kl, qb);
#pragma unroll
        for (uint32_t mt = 0; mt < 4; mt++) {
            const uint32_t av[4] = {x0[2 * mt], x0[2 * mt + 1], x1[2 * mt], x1[2 * mt + 1]};
            mma(s[mt], av, qb);
        }
    }
}

/* O^T += V^T P^T over VS token steps from ks0: per channel block, value
 * tiles of tokens t0 = 16 (g/2) + 4 ks + g%2 and t0 + 2; pb (ROLL: psm)
 * holds P^T's fragments of those steps. */
template <int D, int BITS, bool WIN, bool ROLL, uint32_t VS>
__device__ static inline void value_combine(const mf_view &c, uint32_t row, uint32_t n,
                                            const uint2 *rt, const uint4 *rp, uint32_t ks0,
                                            const uint32_t (&pb)[VS][2], const uint32_t *psm,
                                            float (&o)[D / 16][4]) {
    const uint32_t g = threadIdx.x % 32 / 4, j = threadIdx.x % 4;
#pragma unroll(ROLL ? 1 : VS)
    for (uint32_t kl = 0; kl < VS; kl++) {
        uint32_t pk[2];
        frag<ROLL>(pb, psm, kl, kl, pk);
#pragma unroll
        for (uint32_t cb = 0; cb < D / 64; cb++) {
            const uint32_t t0 = 64 * cb + 16 * (g / 2) + 4 * (ks0 + kl) + g % 2;
            uint32_t x0[8], x1[8];
            if (WIN) {
                window_part<D>(c, row, n, MF_VALUE, t0, j, x0);
                window_part<D>(c, row, n, MF_VALUE, t0 + 2, j, x1);
            } else {
                part<D, BITS>(rt, rp, t0, j, x0);
                part<D, BITS>(rt, rp, t0 + 2, j, x1);
            }
#pragma unroll
            for (uint32_t mm = 0; mm < 4; mm++) {
                const uint32_t av[4] = {x0[2 * mm], x0[2 * mm + 1], x1[2 * mm], x1[2 * mm + 1]};
                mma(o[4 * cb + mm], av, pk);
            }
        }
    }
}

/* Per lane, its heads 2j + {0, 1} and the rows of its accumulators: row
 * g of m-tile (cb, mm) is 64 cb + 16 (g/2) + 4 mm + g%2, + 2 for rows
 * 8-15 (r >= 2): the token of score s[mm][r] in its chunk, the output
 * channel of o[4 cb + mm][r]. */
__device__ static inline uint32_t acc_row(uint32_t mt, uint32_t r) {
    const uint32_t g = threadIdx.x % 32 / 4;
    return 64 * (mt / 4) + 16 * (g / 2) + 4 * (mt % 4) + 2 * (r / 2) + g % 2;
}

/* COOP: the scores of this warp's token step vs0 summed over the warps'
 * channel quarters, S = ((S_0 + S_1) + S_2) + S_3, scaled and masked
 * (tokens from n on: -inf) into s[0], and in cmax the maxima of the
 * lane's two heads over the block's four steps (xs: 16 partial scores a
 * lane per warp, then the warps' maxima). The second barrier also keeps
 * the next chunk's partials from overwriting any being read; the maxima
 * are read before any warp can pass the next chunk's first barrier. */
__device__ static inline void coop_scores(float *xs, float (&s)[4][4], uint32_t vs0, uint32_t n,
                                          float scale, float cmax[2]) {
    const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const float ninf = -__int_as_float(0x7f800000);
    float *mx = xs + RD_WARPS(1) * 16 * 32;
#pragma unroll
    for (uint32_t k = 0; k < 16; k++)
        xs[(warp * 16 + k) * 32 + lane] = s[k / 4][k % 4];
    __syncthreads();
#pragma unroll
    for (uint32_t r = 0; r < 4; r++) {
        const uint32_t t = acc_row(vs0, r);
        float x = xs[(4 * vs0 + r) * 32 + lane];
        for (uint32_t w = 1; w < RD_WARPS(1); w++)
            x = MF_ADD(x, xs[(w * 16 + 4 * vs0 + r) * 32 + lane]);
        s[0][r] = t < n ? MF_MUL(x, scale) : ninf;
        cmax[r % 2] = fmaxf(cmax[r % 2], s[0][r]);
    }
    mx[(warp * 32 + lane) * 2] = cmax[0];
    mx[(warp * 32 + lane) * 2 + 1] = cmax[1];
    __syncthreads();
    for (uint32_t w = 0; w < RD_WARPS(1); w++) {
        cmax[0] = fmaxf(cmax[0], mx[(w * 32 + lane) * 2]);
        cmax[1] = fmaxf(cmax[1], mx[(w * 32 + lane) * 2 + 1]);
    }
}

/* A worker: a warp walking its chunks over every tile, or (COOP) a block
 * whose four warps share each chunk (rd_share): each sums the warps'
 * partial scores of its own token step and all keep the block's running
 * maximum (coop_scores); each computes the weights of its step and adds
 * them and their products to its own sum and accumulators, and these are
 * summed in warp order at the end (BOUND.md). For small layers (tensor.cu's
 * plan), where a few chunks' latency is the call's. */
template <int D, bool COOP, int BITS>
__global__ static void __launch_bounds__(RD_WARPS(COOP) * 32, (D == 256 ? 1 : 2) * (COOP ? 2 : 1))
    rd_kernel(tc_args a) {
    typedef rd_share<D, COOP> sh;
    extern __shared__ uint4 smem4[];
    uint32_t *lut = (uint32_t *)smem4;
    char *recs = (char *)(lut + 256 * RD_COPIES(COOP));
    const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, j = lane % 4;
    uint2 *rt = (uint2 *)(recs + warp * rd_recs<D>::BYTES);
    uint4 *rp = (uint4 *)(rt + rd_recs<D>::N);
    float *xs = (float *)(recs + RD_WARPS(COOP) * rd_recs<D>::BYTES); /* COOP: partial scores */
    const bool ROLL = !COOP; /* sm holds Q^T's, then each warp's P^T's fragments */
    uint32_t *qsm = (uint32_t *)xs, *psm = qsm + 64 * sh::KS + warp * 64 * sh::VS;
    const char *lutc = (const char *)lut + 4 * (lane % RD_COPIES(COOP));
    const uint32_t split = blockIdx.x % a.splits, tile = blockIdx.x / a.splits % a.tiles;
    const uint32_t row = blockIdx.x / (a.splits * a.tiles);
    const uint32_t worker = COOP ? split : split * RD_WARPS(COOP) + warp;
    const uint32_t hd = tile * HEADS + g, ks0 = COOP ? warp * sh::KS : 0, vs0 = COOP ? warp : 0;
    const float scale = mf_score_scale(D), ninf = -__int_as_float(0x7f800000);
    uint64_t c0 = (uint64_t)worker * a.per_worker, c1 = c0 + a.per_worker, ch;
    float o[D / 16][4], mrun[2] = {ninf, ninf}, lrun[2] = {0.0f, 0.0f}, *part_out;
    uint32_t qf[sh::KS][2][2], i;
    rd_in<D, COOP, BITS> kin, vin; /* COOP: the chunk's tiles */
    for (i = threadIdx.x; i < 256; i += blockDim.x) { /* each entry once, stored 4 copies at a time */
        const uint32_t e = mf_rd_lut(i, BITS);
        for (uint32_t k = 0; k < RD_COPIES(COOP) / 4; k++)
            ((uint4 *)lut)[i * (RD_COPIES(COOP) / 4) + k] = make_uint4(e, e, e, e);
    }
    if (c1 > a.chunks)
        c1 = a.chunks;
    /* A COOP block loads its first chunk (a small layer's only one, often)
     * and stores K's records while the kernel before it in the stream
     * ends: mf_attend_async (mustafar.h) requires that kernel not to be
     * writing K or V; q it may be writing. */
    if (COOP) {
        if (c0 < c1 && full_chunk(a, c0))
            coop_load<D, COOP, BITS>(a, row, c0, kin, vin);
        __syncthreads(); /* the table */
        if (c0 < c1 && full_chunk(a, c0))
            store<D, COOP, BITS>(kin, rt, rp, lutc);
    }
    tc_pdl_wait();
    /* B fragments of Q^T: head g, channels 16 ks + 2j (+ 1) and + 8 (ROLL:
     * warp 0 stores them for all; else their halves wait in qf, so that
     * nothing waits for the loads before the first product) */
#pragma unroll
    for (uint32_t kl = 0; kl < sh::KS; kl++)
#pragma unroll
        for (uint32_t h = 0; h < 2; h++) {
            const uint16_t *q =
                a.q + ((size_t)row * a.group + hd) * D + 16 * (ks0 + kl) + 8 * h + 2 * j;
            const uint32_t lo = hd < a.group ? q[0] : 0u, hi = hd < a.group ? q[1] : 0u;
            if (!ROLL) {
                qf[kl][h][0] = lo;
                qf[kl][h][1] = hi;
            } else if (warp == 0) {
                qsm[64 * kl + 32 * h + lane] = hi << 16 | lo;
            }
        }
#pragma unroll
    for (uint32_t mt = 0; mt < D / 16; mt++)
        o[mt][0] = o[mt][1] = o[mt][2] = o[mt][3] = 0.0f;
    if (ROLL)
        __syncthreads(); /* the table and qsm */
    for (ch = c0; ch < c1; ch++) {
        const uint32_t n = full_chunk(a, ch) ? MF_TILE : a.k.tokens % MF_TILE;
        float s[4][4], cmax[2], lsum[2], alpha[2];
        uint32_t pb[sh::VS][2];
        /* S^T[token][head] = K Q^T */
        if (n == MF_TILE) {
            if (COOP) {
                report<D, COOP, BITS>(a.k, kin);
                if (ch != c0) /* the first chunk's records are stored */
                    store<D, COOP, BITS>(kin, rt, rp, lutc);
            } else
                prep<D, BITS>(a.k, row, ch, rt, rp, lutc);
        }
        __syncwarp();
#pragma unroll
        for (uint32_t mt = 0; mt < 4; mt++)
            s[mt][0] = s[mt][1] = s[mt][2] = s[mt][3] = 0.0f;
        if (n == MF_TILE)
            key_scores<D, BITS, false, ROLL, sh::KS>(a.k, row, n, rt, rp, ks0, qf, qsm, s);
        else
            key_scores<D, BITS, true, ROLL, sh::KS>(a.k, row, n, rt, rp, ks0, qf, qsm, s);
        cmax[0] = cmax[1] = ninf;
        if (COOP)
            coop_scores(xs, s, vs0, n, scale, cmax);
        __syncwarp();
        if (n == MF_TILE) { /* V's records, while the softmax runs */
            if (COOP) {
                report<D, COOP, BITS>(a.v, vin);
                store<D, COOP, BITS>(vin, rt, rp, lutc);
            } else
                prep<D, BITS>(a.v, row, ch, rt, rp, lutc);
        }
        /* Online softmax; this lane holds heads 2j + {0, 1} of tokens
         * 16 (g/2) + 4 mt + g%2 (+ 2 for r >= 2) (COOP: mt = vs0 only,
         * in s[0]). */
#pragma unroll
        for (uint32_t mt = 0; !COOP && mt < 4; mt++)
#pragma unroll
            for (uint32_t r = 0; r < 4; r++) {
                s[mt][r] = acc_row(mt, r) < n ? MF_MUL(s[mt][r], scale) : ninf;
                cmax[r % 2] = fmaxf(cmax[r % 2], s[mt][r]);
            }
        tc_softmax_max(cmax, mrun, alpha, ch == c0);
        /* The weights: a COOP warp's of its token step only, so its lrun
         * is the sum over its tokens, as its o. */
        lsum[0] = lsum[1] = 0.0f;
#pragma unroll
        for (uint32_t mt = 0; mt < sh::VS; mt++) {
            uint32_t e16[4];
#pragma unroll
            for (uint32_t r = 0; r < 4; r++) {
                const float e = mf_exp(MF_SUB(s[mt][r], mrun[r % 2]));
                lsum[r % 2] = MF_ADD(lsum[r % 2], e);
                e16[r] = __half_as_ushort(__float2half_rn(e));
            }
            /* P^T as B fragments: tokens 16j + 4 (mt or vs0) + {0, 1} (+ 2), head g */
            if (ROLL) {
                psm[64 * mt + lane] = movm(e16[1] << 16 | e16[0]);
                psm[64 * mt + 32 + lane] = movm(e16[3] << 16 | e16[2]);
            } else {
                pb[mt][0] = movm(e16[1] << 16 | e16[0]);
                pb[mt][1] = movm(e16[3] << 16 | e16[2]);
            }
        }
        tc_softmax_sum(lsum, alpha, lrun);
#pragma unroll
        for (uint32_t mt = 0; ch != c0 && mt < D / 16; mt++) /* first chunk: o is 0 */
#pragma unroll
            for (uint32_t r = 0; r < 4; r++)
                o[mt][r] = MF_MUL(o[mt][r], alpha[r % 2]);
        __syncwarp();
        if (n == MF_TILE)
            value_combine<D, BITS, false, ROLL, sh::VS>(a.v, row, n, rt, rp, vs0, pb, psm, o);
        else
            value_combine<D, BITS, true, ROLL, sh::VS>(a.v, row, n, rt, rp, vs0, pb, psm, o);
        if (COOP && ch + 1 < c1 && full_chunk(a, ch + 1)) /* the next chunk's tiles */
            coop_load<D, COOP, BITS>(a, row, ch + 1, kin, vin);
        __syncwarp();
    }
    /* the states of the tile's query heads (heads past the group pad the
     * mma's N, and the merge reads none of theirs) */
    part_out = a.part + (((size_t)row * a.tiles + tile) * a.workers + worker) * HEADS * (D + 2);
    const uint32_t heads = a.group - tile * HEADS < HEADS ? a.group - tile * HEADS : HEADS;
    if (!COOP) {
        if (lane < 4)
            for (uint32_t r = 0; r < 2; r++)
                if (2 * lane + r < heads) {
                    part_out[(2 * lane + r) * (D + 2)] = mrun[r];
                    part_out[(2 * lane + r) * (D + 2) + 1] = lrun[r];
                }
#pragma unroll
        for (uint32_t mt = 0; mt < D / 16; mt++)
#pragma unroll
            for (uint32_t r = 0; r < 4; r++)
                if (2 * j + r % 2 < heads)
                    part_out[(2 * j + r % 2) * (D + 2) + 2 + acc_row(mt, r)] = o[mt][r];
        return;
    }
    /* COOP: O = ((O_0 + O_1) + O_2) + O_3 over the warps' token steps, the
     * accumulators of the group's heads going through the records
     * ([warp][head][channel], a head's row padded by a word: a store's
     * lanes meet in a bank at most two at a time), and l the same way
     * through xs ([warp][head]); m is every warp's. */
    const uint32_t OR = D + 1, SUMS = HEADS * D / (RD_WARPS(1) * 32);
    static_assert(HEADS * OR * 4 <= rd_recs<D>::BYTES, "a warp's accumulators fit its records");
    float *ob = (float *)recs, x[SUMS][RD_WARPS(1)];
    __syncthreads();
#pragma unroll
    for (uint32_t mt = 0; mt < D / 16; mt++)
#pragma unroll
        for (uint32_t r = 0; r < 4; r++)
            if (2 * j + r % 2 < heads)
                ob[(warp * HEADS + 2 * j + r % 2) * OR + acc_row(mt, r)] = o[mt][r];
    if (lane < 4)
        for (uint32_t r = 0; r < 2; r++)
            xs[warp * HEADS + 2 * lane + r] = lrun[r];
    __syncthreads();
    if (warp == 0 && lane < 4)
        for (uint32_t r = 0; r < 2; r++) {
            const uint32_t h = 2 * lane + r;
            float l = xs[h];
            for (uint32_t w = 1; w < RD_WARPS(1); w++)
                l = MF_ADD(l, xs[w * HEADS + h]);
            if (h < heads) {
                part_out[h * (D + 2)] = mrun[r];
                part_out[h * (D + 2) + 1] = l;
            }
        }
    /* every load of the sums before the first add (the block's thread
     * count is known); element e is head e / D, channel e % D */
#pragma unroll
    for (uint32_t k = 0; k < SUMS; k++) {
        const uint32_t e = threadIdx.x + k * RD_WARPS(1) * 32;
#pragma unroll
        for (uint32_t w = 0; w < RD_WARPS(1); w++)
            x[k][w] = e < heads * D ? ob[(w * HEADS + e / D) * OR + e % D] : 0.0f;
    }
#pragma unroll
    for (uint32_t k = 0; k < SUMS; k++) {
        const uint32_t e = threadIdx.x + k * RD_WARPS(1) * 32;
        float sum = x[k][0];
        for (uint32_t w = 1; w < RD_WARPS(1); w++)
            sum = MF_ADD(sum, x[k][w]);
        if (e < heads * D)
            part_out[e / D * (D + 2) + 2 + e % D] = sum;
    }
}

typedef void (*rd_fn)(tc_args);

template <int BITS> static rd_fn rd_bits(uint32_t dim, int coop) {
    if (coop)
        return dim == 128 ? rd_kernel<128, true, BITS> : rd_kernel<256, true, BITS>;
    return dim == 64    ? rd_kernel<64, false, BITS>
           : dim == 128 ? rd_kernel<128, false, BITS>
                        : rd_kernel<256, false, BITS>;
}

/* COOP blocks need D >= 128 (a quarter of the channels is at least one
 * channel step per warp); tensor.cu's plan asks for them only then. */
static rd_fn rd_of(uint32_t dim, int coop, uint32_t bits) {
    return bits == 4 ? rd_bits<4>(dim, coop) : rd_bits<2>(dim, coop);
}

static size_t rd_smem(uint32_t dim, int coop) {
    const size_t recs = dim == 64 ? rd_recs<64>::BYTES : dim == 128 ? rd_recs<128>::BYTES : rd_recs<256>::BYTES;
    return (size_t)1024 * RD_COPIES(coop) + RD_WARPS(coop) * recs + (coop ? RD_XS_FLOATS * 4 : RD_ROLL_WORDS(dim) * 4);
}

tc_shape mf__rd_shape(uint32_t dim, int coop, uint32_t bits) {
    tc_shape sh;
    sh.fn = (const void *)rd_of(dim, coop, bits);
    sh.threads = RD_WARPS(coop) * 32;
    sh.workers = coop ? 1 : RD_WARPS(coop);
    sh.smem = rd_smem(dim, coop);
    return sh;
}
