/* codec.cu - the encoder and decoder on the device.
 *
 * Encoding is one kernel, a block per (row, block) unit in storage order.
 * A block prunes its 64 token rows (core/encode.c's rule: the `keep`
 * largest magnitudes, ties to the lowest channels, never a zero), builds
 * the bitmaps, scales and zeros, and gets its payload start from the
 * units before it by a decoupled look-back over per-unit flags; then it
 * writes offsets and payload. The input is read once and the host reads
 * back one record (at once, or in mf_encode_kv_wait after
 * mf_encode_kv_async): the two error keys and the payload total. Errors
 * are keyed like the CPU's scan order so the same one is reported. */
#include <cuda_fp16.h>

#include "common.cuh"

#define THREADS 256 /* the decoder's block */
#define FULL 0xffffffffu

/* The pruning's search (search_mid): the first SEARCH_GUESSES steps
 * interpolate, the rest halve the range, so a row ends within
 * SEARCH_GUESSES + 15 steps. */
#define SEARCH_GUESSES 8u

/* Unit u of the storage order -> (row, block), as unit_coords in codec.c. */
__device__ static void unit_coords(const mf_view &c, uint64_t u, uint32_t *row, uint64_t *block) {
    if (c.layout == MF_LAYOUT_NATIVE) {
        *block = u / c.rows;
        *row = (uint32_t)(u % c.rows);
    } else {
        *row = (uint32_t)(u / c.blocks);
        *block = u % c.blocks;
    }
}

/* The workspace's front: the error keys, stored complemented so that zero
 * means none and atomicMax keeps the smallest key; the payload total; the
 * count of blocks done with the flags; whether a look-back gave up
 * (stuck). Per-unit flags follow. A launch leaves the count and flags
 * zero (leave_clean), so a queued call needs no clear; the keys stay
 * until a result is read (encode_results). */
struct enc_ctl {
    unsigned long long window_key, unit_key, total, done, stuck;
};
#define CTL_BYTES 256u

/* A unit's flag: 0 until published, then its word count (AGG) or the
 * inclusive prefix of word counts up to it (INC) in the low 62 bits. */
#define FLAG_AGG (1ull << 62)
#define FLAG_INC (2ull << 62)
#define FLAG_VALUE (FLAG_AGG - 1)

__device__ static inline void publish(unsigned long long *flags, uint64_t u,
                                      unsigned long long f) {
    ((volatile unsigned long long *)flags)[u] = f;
}

/* A look-back waits at most this long for a flag. Blocks start in index
 * order on NVIDIA GPUs (CUDA does not promise it; CUB's single-pass scan
 * relies on it too), so a unit's predecessors are running or done and
 * their flags come; only a workspace that was not clean (a stale count,
 * flags cleared under a look-back) would make it wait forever. It then
 * gives up and marks the control record stuck, an error for the host. */
#define LOOKBACK_LIMIT_NS 1000000000ull

__device__ static inline unsigned long long now_ns() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

/* Unit v's flag once published (or, past the limit, the prefix 0). */
__device__ static unsigned long long wait_flag(const unsigned long long *flags, uint64_t v,
                                               unsigned long long *stuck) {
    unsigned long long f = ((const volatile unsigned long long *)flags)[v], t0;
    if (f >> 62)
        return f;
    t0 = now_ns();
    while (!((f = ((const volatile unsigned long long *)flags)[v]) >> 62))
        if (now_ns() - t0 > LOOKBACK_LIMIT_NS) {
            *(volatile unsigned long long *)stuck = 1;
            return FLAG_INC;
        }
    return f;
}

/* Payload words of the units before u (one warp): reads 32 predecessors'
 * flags at a time, waiting for each to be published, and sums back to the
 * nearest inclusive prefix. A unit waits only on lower units, whose
 * blocks are running or done, so the wait ends. Word counts of a unit are
 * at most 8192, so 32 of them fit a 32-bit sum. */
__device__ static uint64_t lookback(const unsigned long long *flags, uint64_t u,
                                    unsigned long long *stuck) {
    const uint32_t lane = threadIdx.x % 32;
    uint64_t sum = 0, end = u;
    while (end > 0) {
        unsigned long long f = FLAG_INC; /* before unit 0: the prefix 0 */
        uint32_t inc;
        if (end > lane)
            f = wait_flag(flags, end - 1 - lane, stuck);
        inc = __ballot_sync(FULL, (f >> 62) == 2);
        if (inc) {
            uint32_t first = __ffs(inc) - 1;
            sum += __reduce_add_sync(FULL, lane < first ? (uint32_t)(f & FLAG_VALUE) : 0u);
            return sum + __shfl_sync(FULL, f & FLAG_VALUE, first);
        }
        sum += __reduce_add_sync(FULL, (uint32_t)(f & FLAG_VALUE));
        end = end > 32 ? end - 32 : 0;
    }
    return sum;
}

__device__ static inline __half2 as_h2(uint32_t x) {
    __half2 h;
    memcpy(&h, &x, sizeof h);
    return h;
}

/* Token row magnitudes are held as 16 words of fp16 pairs (channel 2w in
 * the low half of word w); for finite non-negative fp16 values the order
 * of the half compare is the order of the bits, so the packed compares of
 * the hardware count and select them. */

/* How many of the row's magnitudes are >= t (fp16 bits in both halves),
 * as an fp16 count in both halves of the result: counts stay exact in
 * fp16 (at most 256), and for non-negative fp16 values the order of the
 * bits is the order of the values, so callers compare the result's bits
 * with an integer. Four partial sums keep the dependent chain short. The
 * row's TPR threads are adjacent lanes. */
template <int TPR>
__device__ static inline uint32_t row_count_ge(const uint32_t (&a)[16], uint32_t t) {
    __half2 acc[4];
#pragma unroll
    for (int w = 0; w < 4; w++)
        acc[w] = __hadd2(__hge2(as_h2(a[w]), as_h2(t)), __hge2(as_h2(a[w + 4]), as_h2(t)));
#pragma unroll
    for (int w = 8; w < 16; w++)
        acc[w % 4] = __hadd2(acc[w % 4], __hge2(as_h2(a[w]), as_h2(t)));
    acc[0] = __hadd2(__hadd2(acc[0], acc[1]), __hadd2(acc[2], acc[3]));
#pragma unroll
    for (int o = TPR / 2; o > 0; o /= 2)
        acc[0] = __hadd2(acc[0], __shfl_xor_sync(FULL, acc[0], o));
    acc[0] = __hadd2(__low2half2(acc[0]), __high2half2(acc[0])); /* one HADD2 with swizzles */
    return *(const uint32_t *)&acc[0];
}

/* The larger of each half (16-bit unsigned). */
__device__ static inline uint32_t umax2(uint32_t x, uint32_t y) { return __vmaxu2(x, y); }

/* The next midpoint of the pruning's search, plus 2^23 so that its
 * float's low bits are the integer: near where count(>= x) would reach
 * keep if counts fell linearly from (lo, clo) to (hi, chi), clo > keep >
 * chi, or the middle once the guesses are spent; rounded down, in [lo1,
 * hi - 1] for lo1 = lo + 1 <= hi - 1. The ends are integers, so lo1 +
 * (hi - 1 - lo1) f rounds into that range for f in [0, 1], and f <= 1 -
 * 1 / 2D (clo - keep <= clo - chi - 1, clo - chi <= 2D) leaves room for
 * the approximate reciprocal. Any midpoint in the range is correct. On
 * the sweep's synthetic rows a warp's slowest row ends in about half the
 * steps that halving takes (bench/GPU-NOTES.md); the stand-in count 2D
 * for lo = 1 puts the first guess nearer M, where the threshold lies on
 * those rows. */
__device__ static inline float search_mid(float lo1, float hi, float clo, float chi, float keep,
                                          uint32_t step) {
    float r, f;
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(clo - chi));
    f = step < SEARCH_GUESSES ? (clo - keep) * r : 0.5f;
    return __fadd_rd(fmaf(hi - lo1 - 1.0f, f, lo1), 0x1p23f); /* floor, + 2^23 */
}

/* (a ^ f) & (c ^ f) in one LOP3 (the compiler splits it where f is a
 * select). */
__device__ static inline uint32_t flip_and(uint32_t a, uint32_t c, uint32_t f) {
    uint32_t d;
    asm("lop3.b32 %0, %1, %2, %3, 0x42;" : "=r"(d) : "r"(a), "r"(c), "r"(f));
    return d;
}

/* The row's t where its search ended one off keep (the pruning): at_min,
 * the smallest magnitude at or above lo; at_max, the largest below hi;
 * otherwise lo. One pass of packed maxima serves both: with c = (x < lo
 * or x < hi), at_max takes the largest x & c and at_min the largest ~x &
 * ~c, the complement of the smallest x | c. */
template <int TPR>
__device__ static inline uint32_t end_magnitude(const uint32_t (&a)[16], bool at_min, bool at_max,
                                                uint32_t lo, uint32_t hi) {
    const uint32_t flip = at_min ? 0xffffffffu : 0u, bound = (at_min ? lo : hi) * 0x10001u;
    uint32_t acc = 0, x;
#pragma unroll
    for (int w = 0; w < 16; w++)
        acc = umax2(acc, flip_and(a[w], __hlt2_mask(as_h2(a[w]), as_h2(bound)), flip));
#pragma unroll
    for (int o = TPR / 2; o > 0; o /= 2)
        acc = umax2(acc, __shfl_xor_sync(FULL, acc, o));
    x = max(acc & 0xffffu, acc >> 16);
    return at_min ? ~x & 0xffffu : at_max ? x : lo;
}

/* A mask over the 16 words, from 0xffff-per-half compare results: channel
 * 2w at bit w, channel 2w + 1 at bit 16 + w (one LOP3 per word). */
__device__ static inline uint32_t mask_bits(uint32_t m, int w) { return m & (0x10001u << w); }

/* That mask in the tile order: channel c at bit 31 - c. Interleaving the
 * halves (Hacker's Delight's outer perfect shuffle) gives channel c at
 * bit c; the reversal finishes it. */
__device__ static inline uint32_t mask_order(uint32_t x) {
    x = (x & 0xff0000ffu) | ((x >> 8) & 0x0000ff00u) | ((x & 0x0000ff00u) << 8);
    x = (x & 0xf00ff00fu) | ((x >> 4) & 0x00f000f0u) | ((x & 0x00f000f0u) << 4);
    x = (x & 0xc3c3c3c3u) | ((x >> 2) & 0x0c0c0c0cu) | ((x & 0x0c0c0c0cu) << 2);
    x = (x & 0x99999999u) | ((x >> 1) & 0x22222222u) | ((x & 0x22222222u) << 1);
    return __brev(x);
}

/* Transposes the 32 x 32 bit matrix held one row per lane (column k at
 * bit 31 - k) by swapping off-diagonal blocks, halving their size. */
__device__ static inline uint32_t transpose32(uint32_t a) {
    const uint32_t lane = threadIdx.x % 32;
    uint32_t m = 0x0000ffffu;
#pragma unroll
    for (uint32_t j = 16; j > 0; j >>= 1, m ^= m << j) {
        uint32_t x = __shfl_xor_sync(FULL, a, j);
        a = (lane & j) ? (a & m) | ((x & m) << j) : (a & ~m) | ((x & ~m) >> j);
    }
    return a;
}

/* b with its first n set bits (from bit 63 down) cleared, for n <
 * popcount(b): the 32-bit word holding set bit n, then a binary search in
 * it for the longest prefix with at most m set bits (n less the high
 * word's count where that word is the low one). */
__device__ static inline uint64_t skip_bits(uint64_t b, uint32_t n) {
    const uint32_t hi = (uint32_t)(b >> 32), lo = (uint32_t)b, c = __popc(hi);
    const bool in_hi = n < c;
    const uint32_t w = in_hi ? hi : lo, m = in_hi ? n : n - c;
    uint32_t p = 0, x;
#pragma unroll
    for (uint32_t s = 16; s > 0; s >>= 1)
        if ((uint32_t)__popc(w >> (32 - (p + s))) <= m)
            p += s;
    x = w & (0xffffffffu >> p);
    return in_hi ? (uint64_t)x << 32 | lo : x;
}

/* The sum of MF_CODE_BIAS_BITS << (i * BITS) over a word's codes (mod 2^32):
 * what mf_quant_biased's bias adds to a word packed by adds. */
template <int BITS>
__device__ constexpr uint32_t bias_sum() {
    uint32_t sum = 0;
    for (int i = 0; BITS && i < 32 / (BITS ? BITS : 32); i++)
        sum += MF_CODE_BIAS_BITS << (i * BITS);
    return sum;
}

/* 2 bits: the sum of the first p registers' 1024 + code halves (0x6400 +
 * code each), register r's shifted by 2r (the payload's PAIRS codes). */
__device__ constexpr uint32_t pair_bias(uint32_t p) {
    uint32_t sum = 0;
    for (uint32_t r = 0; r < p; r++)
        sum += 0x64006400u << (2 * r);
    return sum;
}

/* Codes per chunk: a tile's nonzeros are packed 16 at a time, by one
 * thread each, so the threads share the unit's nonzeros evenly whatever
 * the tiles' sizes; 16 codes are one word (2 bits), two (4 bits) or eight
 * (fp16), so no two chunks share a word. */
#define CHUNK 16u

/* Dense window elements per thread of a window block. */
#define WINDOW_PER_THREAD 4u

/* One tensor's encoding in a launch: its view, outputs, input, and its
 * control record and flags; nblocks = units + window blocks. */
struct enc_job {
    mf_view c;
    uint64_t *bitmaps;
    uint16_t *scales, *zeros, *window;
    uint32_t *offsets, *payload;
    const uint16_t *dense;
    uint64_t capacity, units, nblocks;
    enc_ctl *ctl;
    unsigned long long *flags;
};

/* Counts a block as done with the flags (its reads and writes of them
 * before it: a release, which a __syncthreads or __syncwarp before it
 * extends to the other threads); the count's old value, for leave_clean. */
__device__ static inline unsigned long long count_done(enc_ctl *ctl) {
    unsigned long long old;
    asm volatile("atom.release.gpu.global.add.u64 %0, [%1], 1;"
                 : "=l"(old)
                 : "l"(&ctl->done)
                 : "memory");
    return old;
}

/* One warp of each block, with lane 0's count_done value: the launch's
 * last block to count (after an acquire fence: every other block's flag
 * accesses come before) clears the flags its units used and the count,
 * so the next launch finds them zero. */
__device__ static void leave_clean(const enc_job &j0, const enc_job &j1, unsigned long long old) {
    const uint32_t lane = threadIdx.x % 32;
    uint64_t i;
    if (__shfl_sync(FULL, old, 0) != gridDim.x - 1ull)
        return;
    if (lane == 0) /* the acquire; __syncwarp passes it on to the warp */
        __threadfence();
    __syncwarp();
#pragma unroll 4
    for (i = lane; i < j0.units; i += 32)
        j0.flags[i] = 0;
#pragma unroll 4
    for (i = lane; i < j1.units; i += 32)
        j1.flags[i] = 0;
    if (lane == 0)
        j0.ctl->done = 0;
}

/* One unit, or a share of the dense window for blocks past the units,
 * of job j0 (the first j0.nblocks blocks) or j1 (the rest): a layer's K
 * and V in one launch.
 * D: head dim; 2 * D threads; thread (row r, part q) prunes channels
 * 32q .. 32q + 31 of token row r. Registers capped for 1536 threads per
 * SM (6 blocks at D = 128, 40 registers, a few bytes spilled): 2-3% faster
 * than the 5 blocks that 47 registers allow (bench/GPU-NOTES.md). */
template <int D, int BITS>
__global__ static void __launch_bounds__(2 * D, 1536 / (2 * D))
    encode_kernel(const __grid_constant__ enc_job j0, const __grid_constant__ enc_job j1,
                  uint32_t keep) {
    constexpr uint32_t NT = 2 * D, TPR = D / 32;
    __shared__ uint4 blk4[MF_TILE * D / 8]; /* the unit's input, row-major */
    __shared__ uint32_t rows[MF_TILE][TPR + 1]; /* keep masks, channel 32q + c at bit 31 - c */
    __shared__ uint64_t bm[D];                   /* tile bitmaps */
    __shared__ uint32_t wstart[D];               /* tile start words in the unit */
    __shared__ uint16_t chunk_tile[D * MF_TILE / CHUNK]; /* tile << 2 | chunk in tile */
    __shared__ int32_t kmin[D], kmax[D];         /* min and max keys of each tile */
    __shared__ float sf[D], rf[D], zbf[D];       /* each tile's s, 1 / s, z + 2^23 */
    __shared__ uint4 thr[BITS == 2 ? D : 1];     /* 2 bits: each tile's code thresholds, in pairs */
    __shared__ uint32_t wsum[D / 32], wtally[D / 32];
    __shared__ unsigned long long s_start;
    __shared__ int s_bad;
    const uint16_t *blk = (const uint16_t *)blk4;
    const uint32_t tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    uint64_t u, block, t0, start;
    uint32_t row, words, chunks, h;
    unsigned long long counted = 0; /* count_done's value (one lane) */

    mf__cu_pdl_wait(); /* never a trigger of its own: mustafar.h, mf_attend_async */
    if (tid == 0)
        s_bad = 0;
    const enc_job &job = blockIdx.x < j0.nblocks ? j0 : j1;
    const mf_view &c = job.c;
    const uint16_t *dense = job.dense;
    uint64_t *bitmaps = job.bitmaps;
    uint16_t *scales = job.scales, *zeros = job.zeros, *window = job.window;
    uint32_t *offsets = job.offsets, *payload = job.payload;
    const uint64_t capacity = job.capacity, units = job.units;
    enc_ctl *ctl = job.ctl;
    unsigned long long *flags = job.flags;
    u = blockIdx.x < j0.nblocks ? blockIdx.x : blockIdx.x - j0.nblocks;
    if (u >= units) {
        uint64_t wt = c.tokens % MF_TILE, n = (uint64_t)c.rows * wt * D;
        if (tid == 0)
            counted = count_done(j0.ctl);
        uint64_t w = (u - units) * NT * WINDOW_PER_THREAD + tid;
        for (h = 0; h < WINDOW_PER_THREAD; h++, w += NT)
            if (w < n) {
                uint64_t r = w / (wt * D), rest = w % (wt * D);
                uint16_t x = dense[(r * c.tokens + c.blocks * MF_TILE) * D + rest];
                if (!mf_h_finite(x))
                    atomicMax(&ctl->window_key, ~(unsigned long long)w);
                window[w] = x;
            }
        if (warp == 0)
            leave_clean(j0, j1, counted);
        return;
    }
    t0 = u * D;

    /* The input, read once with 16-byte loads all issued before the
     * first store (4 per thread). */
    unit_coords(c, u, &row, &block);
    {
        const uint16_t *src = dense + ((uint64_t)row * c.tokens + block * MF_TILE) * D;
        if ((uintptr_t)src % 16u == 0) {
            uint4 v[4];
#pragma unroll
            for (h = 0; h < 4; h++)
                v[h] = __ldcs((const uint4 *)src + tid + h * NT);
#pragma unroll
            for (h = 0; h < 4; h++)
                blk4[tid + h * NT] = v[h];
        } else {
            for (h = tid; h < MF_TILE * D; h += NT)
                ((uint16_t *)blk4)[h] = src[h];
        }
    }
    __syncthreads();

    /* Pruning, as mf__prune_row: the largest t with at least `keep`
     * magnitudes >= t; all above t are kept, then the lowest channels of
     * those equal to t. A search narrows [lo, hi) from [1, M + 1) for the
     * row's largest magnitude M, keeping count(>= lo) >= keep >
     * count(>= hi) (but lo stays 1 while fewer than keep are nonzero);
     * search_mid picks each midpoint. The kept set is every magnitude
     * above a t' and the first `need` equal to it, where the row ends:
     *  - hi = lo + 1 (so does a step counting exactly keep, need 0): t'
     *    = lo, need = keep - count(>= hi);
     *  - count(>= hi) = keep - 1 with lo > 1, so count(>= lo) >= keep:
     *    t' = t, the largest magnitude below hi, need 1;
     *  - count(>= lo) = keep + 1: t' is the smallest at or above lo,
     *    need = its ties - 1 (t' = t where it has ties).
     * Where these overlap they keep the same set. One pass of packed
     * maxima after the search (end_magnitude) finds the last two t'. */
    {
        const uint32_t r = tid / TPR, q = tid % TPR;
        const uint32_t keep_h = __half_as_ushort(__uint2half_rn(keep)) * 0x10001u;
        const float keep_f = (float)keep;
        uint32_t a[16], bad, mx = 0, gt = 0, eq = 0, m, t, step;
        /* lo1 = lo + 1; clo, chi: the counts at lo and hi, with 2D
         * standing in for lo = 1's (2D > keep + 1: clo = keep + 1 only
         * where counted) */
        float lo1 = 2.0f, hi, clo = 2.0f * D, chi = 0.0f;
        bool done, at_min, at_max;
#pragma unroll
        for (h = 0; h < 4; h++) {
            uint4 v = blk4[(r * D + q * 32) / 8 + h];
            a[4 * h] = v.x & 0x7fff7fffu;
            a[4 * h + 1] = v.y & 0x7fff7fffu;
            a[4 * h + 2] = v.z & 0x7fff7fffu;
            a[4 * h + 3] = v.w & 0x7fff7fffu;
        }
        /* The row's largest magnitude: a half >= 0x7c00 is non-finite,
         * and M + 1 bounds the search (no magnitude reaches it). */
#pragma unroll
        for (h = 0; h < 16; h++)
            mx = umax2(mx, a[h]);
        bad = max(mx & 0xffffu, mx >> 16) >= 0x7c00u;
#pragma unroll
        for (h = TPR / 2; h > 0; h /= 2)
            mx = umax2(mx, __shfl_xor_sync(FULL, mx, h));
        hi = (float)(max(mx & 0xffffu, mx >> 16) + 1u);
        done = keep == 0 || hi <= lo1;
        if (bad) {
            uint32_t first = 0;
#pragma unroll
            for (h = 32; h-- > 0;) /* unrolled: a stays in registers */
                if ((a[h / 2] >> (16 * (h % 2)) & 0x7fffu) >= 0x7c00u)
                    first = h;
            atomicMax(&ctl->unit_key, ~(u * MF_TILE * D + r * D + q * 32 + first));
            s_bad = 1;
        }
        /* Counts are compared as fp16 bits (row_count_ge); selects, not a
         * branch, freeze a finished row. */
#pragma unroll 1
        for (step = 0; !__all_sync(FULL, done); step++) {
            const float biased = search_mid(lo1, hi, clo, chi, keep_f, step);
            const float mid = biased - 0x1p23f;
            const uint32_t n = row_count_ge<TPR>(a, __byte_perm(__float_as_uint(biased), 0, 0x1010));
            const float nf = __half2float(__ushort_as_half((unsigned short)n));
            const bool up = !done && n > keep_h, down = !done && n <= keep_h;
            lo1 = up ? biased - (0x1p23f - 1.0f) : down && n == keep_h ? mid : lo1;
            hi = down ? mid : hi;
            clo = up ? nf : clo;
            chi = down ? nf : chi;
            at_min = clo == keep_f + 1.0f;
            at_max = chi == keep_f - 1.0f && lo1 > 2.0f;
            done = done || hi <= lo1 || at_min || at_max;
        }
        /* Again from the final state: carried out of the loop instead,
         * the flags took selects in every step (bench/GPU-NOTES.md). */
        at_min = clo == keep_f + 1.0f;
        at_max = chi == keep_f - 1.0f && lo1 > 2.0f;
        t = (uint32_t)lo1 - 1u;
        if (__any_sync(FULL, at_min || at_max))
            t = end_magnitude<TPR>(a, at_min, at_max, t, (uint32_t)hi);
        if (keep) {
            const uint32_t tg = (t + 1) * 0x10001u, te = t * 0x10001u;
#pragma unroll
            for (h = 0; h < 16; h++) {
                gt |= mask_bits(__hge2_mask(as_h2(a[h]), as_h2(tg)), h);
                eq |= mask_bits(__heq2_mask(as_h2(a[h]), as_h2(te)), h);
            }
        } /* t' >= 1, so eq never takes a zero */
        {
            /* Ties before this thread's channels (the row's lower parts),
             * and how many of its own are kept. */
            uint32_t ties = __popc(eq), before = ties, row_ties, need, quota, o;
#pragma unroll
            for (o = 1; o < TPR; o <<= 1) {
                uint32_t x = __shfl_up_sync(FULL, before, o, TPR);
                if (q >= o)
                    before += x;
            }
            row_ties = __shfl_sync(FULL, before, TPR - 1, TPR);
            need = at_min ? row_ties - 1u : keep - (uint32_t)chi;
            before -= ties;
            quota = need > before ? min(need - before, ties) : 0u;
            /* All or none of a thread's ties in the common case: one
             * reordering; the rare part of them (the first quota in
             * channel order) takes a second. */
            m = mask_order(gt | (quota == ties ? eq : 0u));
            if (quota && quota != ties) {
                uint32_t e = mask_order(eq);
                for (; quota > 0; quota--) {
                    uint32_t b = 0x80000000u >> __clz(e);
                    m |= b;
                    e ^= b;
                }
            }
        }
        rows[r][q] = m;
    }
    __syncthreads();
    if (s_bad) { /* nothing is written; the chain of prefixes goes on */
        if (warp == 0) {
            if (lane == 0)
                publish(flags, u, u ? FLAG_AGG : FLAG_INC);
            start = lookback(flags, u, &j0.ctl->stuck);
            __syncwarp(); /* the warp's flag reads before the count */
            if (lane == 0) {
                publish(flags, u, FLAG_INC | start);
                if (u == units - 1)
                    ctl->total = start;
                counted = count_done(j0.ctl);
            }
            leave_clean(j0, j1, counted);
        }
        return;
    }

    /* Tile bitmaps: a value tile is a row's mask of 64 channels; key
     * tiles are columns, 32 x 32 bit blocks transposed by each warp. */
    if (c.kind == MF_KEY) {
        const uint32_t half = warp / TPR, cw = warp % TPR;
        uint32_t m = transpose32(rows[32 * half + lane][cw]);
        ((uint32_t *)bm)[2 * (32 * cw + lane) + 1 - half] = m;
    } else if (tid < D) {
        const uint32_t t = tid % MF_TILE, cb = tid / MF_TILE;
        bm[tid] = (uint64_t)rows[t][2 * cb] << 32 | rows[t][2 * cb + 1];
    }
    __syncthreads();

    /* Tile sizes and the chunk list. A tile's chunks are full but for its
     * last; the list puts chunks of 13-16 codes first, then the last
     * chunks of 9-12, 5-8 and 1-4, so that most warps gather and code
     * fewer than 16 slots (each stops at its longest chunk, in steps of
     * 4). One scan of (words << 16 | long chunks), both fitting 16 bits
     * for a whole unit (at most 8192 words and 1024 chunks); a ballot per
     * shorter class ranks its chunks (10-bit counts: at most D). The
     * tiles' threads are whole warps (D is a multiple of 32); the others
     * only read the totals. */
    {
        uint32_t mine = 0, incl = 0, o, cls = 0, full = 0, rank = 0, tally, below = 0;
        if (tid < D) {
            uint64_t b = bm[tid];
            uint32_t nnz = (uint32_t)__popcll(b), b1, b2, b3;
            bitmaps[t0 + tid] = b;
            full = nnz / CHUNK;
            cls = (nnz % CHUNK + 3) / 4; /* 0: no partial chunk */
            mine = mf_tile_words(nnz, BITS) << 16 | (full + (cls == 4));
            kmin[tid] = INT32_MAX;
            kmax[tid] = INT32_MIN;
            b1 = __ballot_sync(FULL, cls == 1);
            b2 = __ballot_sync(FULL, cls == 2);
            b3 = __ballot_sync(FULL, cls == 3);
            asm("mov.u32 %0, %%lanemask_lt;" : "=r"(rank));
            rank = __popc((cls == 1 ? b1 : cls == 2 ? b2 : b3) & rank);
            incl = mine;
#pragma unroll
            for (o = 1; o < 32; o <<= 1) {
                uint32_t x = __shfl_up_sync(FULL, incl, o);
                if (lane >= o)
                    incl += x;
            }
            if (lane == 31) {
                wsum[warp] = incl;
                wtally[warp] = __popc(b1) | __popc(b2) << 10 | __popc(b3) << 20;
            }
        }
        __syncthreads();
        words = 0;
        tally = 0;
        for (o = 0; o < D / 32; o++) {
            if (o == warp) {
                incl += words; /* now the unit-wide inclusive sum */
                below = tally;
            }
            words += wsum[o];
            tally += wtally[o];
        }
        /* The class starts: long chunks, then classes 3, 2 and 1. */
        const uint32_t c3 = words & 0xffffu, c2 = c3 + (tally >> 20), c1 = c2 + (tally >> 10 & 1023u);
        chunks = c1 + (tally & 1023u);
        words >>= 16;
        if (tid < D) {
            uint32_t e = incl - mine, k;
            wstart[tid] = e >> 16;
            for (k = 0; k < (mine & 0xffffu); k++)
                chunk_tile[(e & 0xffffu) + k] = (uint16_t)(tid << 2 | k);
            if (cls && cls < 4)
                chunk_tile[(cls == 3 ? c3 : cls == 2 ? c2 : c1) + (below >> (10 * (cls - 1)) & 1023u) +
                           rank] = (uint16_t)(tid << 2 | full);
        }
        if (tid == 0)
            publish(flags, u, (u ? FLAG_AGG : FLAG_INC) | words);
    }
    __syncthreads();

    /* Each thread gathers the nonzeros of at most two chunks into
     * registers, with their min and max keys for the tile's parameters;
     * a warp fills the slots up to its longest chunk, in steps of 4.
     * Register i holds slots 2i, 2i + 1, but at 2 bits slots i and i + 8
     * (PAIRS): their codes lie 16 bits apart in the chunk's word, as a
     * register's halves do; slot 0 fills every register until its own
     * slots come, so that every half holds a kept value of the tile. */
    constexpr bool PAIRS = BITS == 2;
    uint32_t val[2][CHUNK / 2], centry[2], ncodes[2];
#pragma unroll
    for (h = 0; h < 2; h++) {
        uint32_t ci = tid + h * NT, i, e = 0, n = 0, slots;
#pragma unroll
        for (i = 0; i < CHUNK / 2; i++)
            val[h][i] = 0;
        if (ci < chunks) {
            e = chunk_tile[ci];
            n = min(CHUNK, (uint32_t)__popcll(bm[e >> 2]) - CHUNK * (e & 3u));
        }
        slots = __reduce_max_sync(FULL, n);
        ncodes[h] = n;
        centry[h] = e;
        if (n) {
            uint32_t j = e >> 2, k = e & 3u, base, stride;
            uint64_t b = bm[j];
            b = k ? skip_bits(b, CHUNK * k) : b;
            if (c.kind == MF_KEY) {
                base = j;
                stride = D;
            } else {
                base = (j % MF_TILE) * D + (j / MF_TILE) * MF_TILE;
                stride = 1;
            }
            /* Without branches but the warp's stops, so the loads
             * overlap. The walk takes b a 32-bit word at a time: w is the
             * word being walked, its bit 31 at byte p of blk, and nx (at
             * pn) the last nonzero word, walked again once w is spent:
             * w is never 0 (n >= 1, so b is not), and every slot holds a
             * nonzero of tile j. Slots past n hold 0 (fp16 padding) or,
             * for codes, such a repeat, which leaves the tile's min and
             * max alone. */
            const uint32_t hi = (uint32_t)(b >> 32), nx = (uint32_t)b ? (uint32_t)b : hi,
                           pn = 2u * (base + ((uint32_t)b ? 32u : 0u) * stride), bstride = 2u * stride;
            uint32_t w = hi ? hi : nx, p = hi ? 2u * base : pn;
            __half2 lo2, hi2; /* the chunk's min and max, a pair at a time */
#pragma unroll
            for (i = 0; i < CHUNK; i++) {
                uint32_t z, x;
                if (i % 4 == 0 && i && i >= slots)
                    break;
                asm("bfind.shiftamt.u32 %0, %1;" : "=r"(z) : "r"(w)); /* the first set bit's clz */
                x = *(const uint16_t *)((const char *)blk + p + z * bstride);
                w &= __funnelshift_r(0x7fffffffu, 0x7fffffffu, z); /* ~(0x80000000 >> z) */
                if (!w) {
                    w = nx;
                    p = pn;
                }
                if (!BITS)
                    x = i < n ? x : 0u;
                if (PAIRS) {
                    if (i < CHUNK / 2)
                        val[h][i] = x * 0x10001u;
                    else
                        val[h][i % 8] = __byte_perm(val[h][i % 8], x, 0x5410);
                    if (i == 0)
#pragma unroll
                        for (uint32_t r = 1; r < CHUNK / 2; r++)
                            val[h][r] = val[h][0];
                } else {
                    val[h][i / 2] |= x << (16 * (i % 2));
                }
                if (BITS && !PAIRS && i % 2) {
                    lo2 = i == 1 ? as_h2(val[h][0]) : __hmin2(lo2, as_h2(val[h][i / 2]));
                    hi2 = i == 1 ? as_h2(val[h][0]) : __hmax2(hi2, as_h2(val[h][i / 2]));
                }
            }
            if (PAIRS) {
                lo2 = hi2 = as_h2(val[h][0]);
#pragma unroll
                for (i = 1; i < CHUNK / 2; i++) {
                    lo2 = __hmin2(lo2, as_h2(val[h][i]));
                    hi2 = __hmax2(hi2, as_h2(val[h][i]));
                }
            }
            if (BITS) {
                atomicMin(&kmin[j], mf_h_key(__half_as_ushort(__hmin(__low2half(lo2), __high2half(lo2)))));
                atomicMax(&kmax[j], mf_h_key(__half_as_ushort(__hmax(__low2half(hi2), __high2half(hi2)))));
            }
        }
    }
    __syncthreads();

    /* Scales and zeros (threads below D); meanwhile the last warp, whose
     * threads have no tile, finds the unit's payload start. */
    if (BITS && tid < D) {
        int32_t klo = kmin[tid], khi = kmax[tid];
        uint16_t sh, zh;
        if (!bm[tid]) /* empty tile: min = max = 0 */
            klo = khi = 0;
        mf_quant_params(mf_h2f_nn(mf_key_h(klo)), mf_h2f_nn(mf_key_h(khi)), BITS, &sh, &zh);
        scales[t0 + tid] = sh;
        zeros[t0 + tid] = zh;
        const float s = mf_h2f_nn(sh), r = MF_DIV(1.0f, s), z = mf_h2f_nn(zh);
        if (PAIRS) {
            thr[tid] = make_uint4(mf_code_threshold(1, s, r, z, 2) * 0x10001u,
                                  mf_code_threshold(2, s, r, z, 2) * 0x10001u,
                                  mf_code_threshold(3, s, r, z, 2) * 0x10001u, 0u);
        } else {
            sf[tid] = s;
            rf[tid] = r;
            zbf[tid] = MF_ADD(z, MF_CODE_BIAS);
        }
    }
    if (warp == NT / 32 - 1) {
        start = lookback(flags, u, &j0.ctl->stuck);
        if (lane == 0) {
            if (u)
                publish(flags, u, FLAG_INC | (start + words));
            if (u == units - 1)
                ctl->total = start + words;
            s_start = start;
        }
    }
    __syncthreads();
    start = s_start;
    if (tid == NT - 32) /* the look-back's warp; leave_clean waits for it */
        counted = count_done(j0.ctl);
    if (c.layout == MF_LAYOUT_REFERENCE) {
        if (tid < D)
            offsets[t0 + tid] = (uint32_t)(start + wstart[tid]);
    } else if (tid == 0) {
        offsets[u] = (uint32_t)start;
    }

    /* Payload: each chunk's words, written once by its thread, unless
     * they pass capacity (the host reports it). The fp16 -> fp32
     * conversion is the hardware's (exact, as mf_h2f). */
    if (start + words <= capacity) {
#pragma unroll
        for (h = 0; h < 2; h++) {
            const uint32_t n = ncodes[h], j = centry[h] >> 2, k = centry[h] & 3u,
                           slots = __reduce_max_sync(FULL, n);
            uint32_t *w, i;
            if (!n)
                continue;
            w = payload + start + wstart[j];
            if (BITS == 0) {
#pragma unroll
                for (i = 0; i < CHUNK / 2; i++)
                    if (i < (n + 7) / 8 * 4)
                        w[CHUNK / 2 * k + i] = val[h][i];
            } else if (PAIRS) {
                /* A pair's codes count the thresholds at or below each
                 * half (mf_code_threshold), added to 1024 in fp16, so
                 * each half is 0x6400 + code; register i's go in at bits
                 * 2i and 2i + 16, and the 0x6400s come off at once. The
                 * warp's stop: 4 registers where no chunk has over 4
                 * slots. */
                const uint4 t = thr[j];
                const __half2 base = as_h2(0x64006400u);
                uint32_t out = 0;
#pragma unroll
                for (i = 0; i < CHUNK / 2; i++) {
                    if (i == 4 && slots <= 4)
                        break;
                    const __half2 v = as_h2(val[h][i]);
                    const __half2 c = __hadd2(__hadd2(__hadd2(__hge2(v, as_h2(t.x)), base), __hge2(v, as_h2(t.y))),
                                              __hge2(v, as_h2(t.z)));
                    out += *(const uint32_t *)&c << (2 * i);
                }
                out -= slots <= 4 ? pair_bias(4) : pair_bias(8);
                w[k] = n == CHUNK ? out : out & ((1u << (2 * n)) - 1u);
            } else {
                /* Every slot up to the warp's stop gets a code (slots
                 * past n hold a kept value) and adds 2^23 + code shifted
                 * into its word: the biases' sum comes off once (a slot
                 * not coded only borrows from the bits above the coded
                 * ones), and the mask keeps n codes. */
                constexpr uint32_t PER = 32 / (BITS ? BITS : 32); /* BITS 0 never gets here */
                const float s = sf[j], r = rf[j], zb = zbf[j];
                uint32_t out[CHUNK / PER] = {};
#pragma unroll
                for (i = 0; i < CHUNK; i++) {
                    if (i % 4 == 0 && i && i >= slots) /* the gather's stop */
                        break;
                    const uint16_t x = (uint16_t)(val[h][i / 2] >> (16 * (i % 2)));
                    const float xf = __half2float(__ushort_as_half(x));
                    out[i / PER] += mf_f32_bits(mf_quant_biased(xf, s, r, zb, BITS))
                                    << (i % PER * BITS);
                }
#pragma unroll
                for (i = 0; i < CHUNK / PER; i++) {
                    const uint32_t used = min(n * BITS - min(n * BITS, 32 * i), 32u);
                    out[i] = (out[i] - bias_sum<BITS>()) & (used == 32 ? ~0u : (1u << used) - 1u);
                }
                if (BITS == 2) {
                    w[k] = out[0];
                } else {
                    w[2 * k] = out[0];
                    if (n > 8)
                        w[2 * k + 1] = out[1];
                }
            }
        }
    }
    if (warp == NT / 32 - 1)
        leave_clean(j0, j1, counted);
}

/* Encoder scratch of one launch: the jobs' control records side by side
 * (one read-back for all), then each job's per-unit flags. */
static size_t flags_bytes(const mf_desc *d) {
    mf_sizes s;
    mf_sizes_of(d, 0, &s);
    return mf__cu_align(s.blocks * d->rows * 8);
}

extern "C" mf_status mf_cuda_encode_workspace(const mf_desc *d, size_t *bytes) {
    *bytes = CTL_BYTES + flags_bytes(d);
    return MF_OK;
}

extern "C" mf_status mf_cuda_encode_kv_workspace(const mf_desc *k, const mf_desc *v, size_t *bytes) {
    *bytes = 2 * CTL_BYTES + flags_bytes(k) + flags_bytes(v);
    return MF_OK;
}

template <int D>
static const void *encode_fn(uint32_t bits) {
    return bits == 0   ? (const void *)encode_kernel<D, 0>
           : bits == 2 ? (const void *)encode_kernel<D, 2>
                       : (const void *)encode_kernel<D, 4>;
}

/* The launch: as a programmatic dependent launch where it can be, so the
 * kernel can start as the kernel queued before it (a previous append)
 * drains. */
static mf_status launch_encode(const mf_desc *d, unsigned grid, enc_job *job, uint32_t keep) {
    const void *fn = d->dim == 64    ? encode_fn<64>(d->bits)
                     : d->dim == 128 ? encode_fn<128>(d->bits)
                                     : encode_fn<256>(d->bits);
    void *args[3] = {&job[0], &job[1], &keep};
    cudaFuncAttributes fa;
    int dev = 0, cc = 0;
    MF_CU(cudaGetDevice(&dev));
    MF_CU(cudaDeviceGetAttribute(&cc, cudaDevAttrComputeCapabilityMajor, dev));
    MF_CU(cudaFuncGetAttributes(&fa, fn));
    MF_CU(mf__cu_launch(fn, grid, 2 * d->dim, 0, mf__cu_pdl_ok(cc, fa.ptxVersion), args));
    return MF_OK;
}

/* What the device reported for one tensor (its control record ctl): the
 * first non-finite input, or the payload total against the capacity. */
static mf_status encode_result(const unsigned long long *ctl, const uint16_t *dense,
                               mf_ctensor *out, uint64_t capacity, mf_diag *diag) {
    const mf_desc *d = &out->desc;
    mf_sizes s;
    uint64_t total;
    mf_sizes_of(d, 0, &s);
    total = s.blocks ? ctl[2] : 0; /* a launch without units leaves the total alone */
    if (ctl[0]) {
        uint64_t key = ~ctl[0], wt = s.window_tokens, r = key / (wt * d->dim), rest = key % (wt * d->dim);
        uint16_t h = 0;
        cudaMemcpy(&h, dense + (r * d->tokens + s.blocks * MF_TILE) * d->dim + rest, 2,
                   cudaMemcpyDeviceToHost);
        return mf__fail(diag, MF_ERR_NONFINITE, "input[%llu][%llu][%llu] is 0x%04x (NaN or inf)",
                        (unsigned long long)r, (unsigned long long)(s.blocks * MF_TILE + rest / d->dim),
                        (unsigned long long)(rest % d->dim), h);
    }
    if (ctl[1]) {
        uint64_t e = ~ctl[1], u = e / (MF_TILE * d->dim);
        uint64_t bad = e % (MF_TILE * d->dim), block;
        uint32_t row;
        if (d->layout == MF_LAYOUT_NATIVE)
            block = u / d->rows, row = (uint32_t)(u % d->rows);
        else
            row = (uint32_t)(u / s.blocks), block = u % s.blocks;
        return mf__fail(diag, MF_ERR_NONFINITE, "input[%u][%llu][%llu] is NaN or inf", row,
                        (unsigned long long)(block * MF_TILE + bad / d->dim),
                        (unsigned long long)(bad % d->dim));
    }
    if (total > UINT32_MAX)
        return mf__fail(diag, MF_ERR_LIMIT, "payload exceeds 2^32-1 words (uint32 offsets)");
    if (total > capacity)
        return mf__fail(diag, MF_ERR_BUFFER_SMALL, "payload needs %llu words, capacity is %llu",
                        (unsigned long long)total, (unsigned long long)capacity);
    out->payload_words = total;
    return MF_OK;
}

/* Whether a control record's error keys name elements of d's input
 * (encode_result decodes them): a dirty scratch can hold any bits. */
static int keys_in_range(const unsigned long long *ctl, const mf_desc *d) {
    mf_sizes s;
    mf_sizes_of(d, 0, &s);
    return (!ctl[0] || ~ctl[0] < (uint64_t)d->rows * s.window_tokens * d->dim) &&
           (!ctl[1] || ~ctl[1] < s.blocks * d->rows * MF_TILE * d->dim);
}

/* Bytes of the scratch for n tensors. */
static size_t scratch_bytes(uint32_t n, mf_ctensor *const out[2]) {
    size_t bytes = n * CTL_BYTES;
    uint32_t i;
    for (i = 0; i < n; i++)
        bytes += flags_bytes(&out[i]->desc);
    return bytes;
}

/* The results of n tensors' encoding from their control records (the
 * scratch's front): a failing tensor is reported, the first one first;
 * the other's payload_words is set only if it was encoded. A scratch
 * seen to be dirty (the block count not back at zero, a look-back that
 * gave up, an error key out of range) is reported first. The records'
 * errors are cleared (queued, not waited for); a dirty scratch is
 * cleared whole. */
static mf_status encode_results(uint32_t n, void *scratch, const uint16_t *const dense[2],
                                mf_ctensor *const out[2], const uint64_t capacity[2],
                                mf_diag *diag) {
    unsigned long long ctl[2 * CTL_BYTES / 8];
    const enc_ctl *c0 = (const enc_ctl *)ctl;
    mf_status st = MF_OK;
    uint32_t i;
    int dirty;
    if (cudaMemcpy(ctl, scratch, n * CTL_BYTES, cudaMemcpyDeviceToHost) != cudaSuccess)
        return mf__fail(diag, MF_ERR_DEVICE, "a CUDA call failed while encoding");
    dirty = c0->done || c0->stuck;
    for (i = 0; i < n; i++)
        dirty = dirty || !keys_in_range(ctl + i * CTL_BYTES / 8, &out[i]->desc);
    if (dirty)
        st = mf__fail(diag, MF_ERR_ARG,
                      "the encode workspace was not clean (%s; a queued encode needs one from "
                      "mf_buffer_alloc or last used by an encode call); it is cleared now",
                      c0->done    ? "its block count was not zero"
                      : c0->stuck ? "a look-back waited over a second"
                                  : "an error key out of range");
    for (i = 0; i < n && st == MF_OK; i++)
        st = encode_result(ctl + i * CTL_BYTES / 8, dense[i], out[i], capacity[i], diag);
    if (dirty && cudaMemsetAsync(scratch, 0, scratch_bytes(n, out)) != cudaSuccess)
        return mf__fail(diag, MF_ERR_DEVICE, "a CUDA call failed while encoding");
    for (i = 0; i < n && !dirty; i++) {
        const enc_ctl *ci = (const enc_ctl *)(ctl + i * CTL_BYTES / 8);
        if ((ci->window_key || ci->unit_key) &&
            cudaMemsetAsync((char *)scratch + i * CTL_BYTES, 0, 2 * sizeof ctl[0]) != cudaSuccess)
            return mf__fail(diag, MF_ERR_DEVICE, "a CUDA call failed while encoding");
    }
    return st;
}

/* Encodes n (1 or 2) tensors of one head dim and code width in one
 * launch: (wait 1) a scratch clear, the kernel and one read-back; wait 0
 * queues the kernel alone and returns, the results left in the
 * workspace. */
static mf_status encode_jobs(uint32_t n, const uint16_t *const dense[2], uint32_t keep,
                             mf_ctensor *const out[2], const uint64_t capacity[2],
                             void *workspace, size_t workspace_bytes, int wait,
                             mf_diag *diag) {
    const mf_desc *d = &out[0]->desc;
    enc_job job[2];
    mf_status st = MF_OK;
    char *scratch = (char *)workspace, *fl;
    size_t bytes = scratch_bytes(n, out);
    uint64_t grid = 0;
    uint32_t i;
    if (workspace && workspace_bytes < bytes)
        return mf__fail(diag, MF_ERR_BUFFER_SMALL, "encode workspace has %zu bytes, needs %zu",
                        workspace_bytes, bytes);
    if (!workspace && (st = mf_cuda_alloc(bytes, (void **)&scratch)) != MF_OK)
        return st;
    fl = scratch + n * CTL_BYTES;
    for (i = 0; i < n; i++) {
        mf_ctensor *o = out[i];
        mf_sizes s;
        mf_sizes_of(&o->desc, 0, &s);
        job[i].c = mf__cu_view(o);
        job[i].bitmaps = o->bitmaps;
        job[i].scales = o->scales;
        job[i].zeros = o->zeros;
        job[i].window = o->window;
        job[i].offsets = o->offsets;
        job[i].payload = o->payload;
        job[i].dense = dense[i];
        job[i].capacity = capacity[i];
        job[i].units = s.blocks * o->desc.rows;
        job[i].nblocks = job[i].units + (s.window + 2 * d->dim * WINDOW_PER_THREAD - 1) /
                                            (2 * d->dim * WINDOW_PER_THREAD);
        job[i].ctl = (enc_ctl *)(scratch + i * CTL_BYTES);
        job[i].flags = (unsigned long long *)fl;
        fl += flags_bytes(&o->desc);
        grid += job[i].nblocks;
    }
    if (n == 1) {
        job[1] = job[0];
        job[1].units = job[1].nblocks = 0;
    }
    /* A queued call relies on the scratch that launches leave clean; a
     * waiting one clears it, so any scratch does. */
    if (wait && cudaMemsetAsync(scratch, 0, bytes) != cudaSuccess)
        goto device;
    if (launch_encode(d, (unsigned)grid, job, keep) != MF_OK) /* grid >= 1: rows, tokens >= 1 */
        goto device;
    if (wait)
        st = encode_results(n, scratch, dense, out, capacity, diag);
    goto done;
device:
    st = mf__fail(diag, MF_ERR_DEVICE, "a CUDA call failed while encoding");
done:
    if (!workspace)
        cudaFree(scratch);
    return st;
}

extern "C" mf_status mf_cuda_encode(const uint16_t *dense, uint32_t keep, mf_ctensor *out,
                                    uint64_t capacity, void *workspace, size_t workspace_bytes,
                                    mf_diag *diag) {
    const uint16_t *const in[2] = {dense, NULL};
    mf_ctensor *const outs[2] = {out, NULL};
    const uint64_t cap[2] = {capacity, 0};
    return encode_jobs(1, in, keep, outs, cap, workspace, workspace_bytes, 1, diag);
}

extern "C" mf_status mf_cuda_encode_kv(const uint16_t *k_dense, const uint16_t *v_dense,
                                       uint32_t keep, mf_ctensor *k_out, mf_ctensor *v_out,
                                       uint64_t k_capacity, uint64_t v_capacity, void *workspace,
                                       size_t workspace_bytes, int wait, mf_diag *diag) {
    const uint16_t *const in[2] = {k_dense, v_dense};
    mf_ctensor *const outs[2] = {k_out, v_out};
    const uint64_t cap[2] = {k_capacity, v_capacity};
    return encode_jobs(2, in, keep, outs, cap, workspace, workspace_bytes, wait, diag);
}

extern "C" mf_status mf_cuda_encode_kv_wait(const uint16_t *k_dense, const uint16_t *v_dense,
                                            mf_ctensor *k_out, mf_ctensor *v_out,
                                            uint64_t k_capacity, uint64_t v_capacity,
                                            void *workspace, size_t workspace_bytes,
                                            mf_diag *diag) {
    const uint16_t *const in[2] = {k_dense, v_dense};
    mf_ctensor *const outs[2] = {k_out, v_out};
    const uint64_t cap[2] = {k_capacity, v_capacity};
    if (workspace_bytes < scratch_bytes(2, outs))
        return mf__fail(diag, MF_ERR_BUFFER_SMALL, "encode workspace has %zu bytes, needs %zu",
                        workspace_bytes, scratch_bytes(2, outs));
    return encode_results(2, workspace, in, outs, cap, diag);
}

/* Block per unit: every dense element of the unit from its tile. */
__global__ static void __launch_bounds__(THREADS) decode_kernel(mf_view c, uint16_t *dense) {
    __shared__ uint64_t starts[256];
    uint64_t u = blockIdx.x, block;
    uint32_t row, e;
    uint16_t *dst;
    unit_coords(c, u, &row, &block);
    mf_cu_unit_starts(c, u, starts);
    dst = dense + ((uint64_t)row * c.tokens + block * MF_TILE) * c.dim;
    for (e = threadIdx.x; e < MF_TILE * c.dim; e += THREADS) {
        uint32_t j, i;
        mf_cu_elem_tile(c.kind, e / c.dim, e % c.dim, &j, &i);
        dst[e] = mf_cu_tile_value(c, u * c.dim + j, starts[j], i);
    }
}

extern "C" mf_status mf_cuda_decode(const mf_ctensor *c, uint16_t *dense, mf_diag *diag) {
    mf_sizes s;
    mf_view v;
    mf_status st;
    void *scratch = NULL;
    uint64_t units;
    if ((st = mf_desc_check(&c->desc, diag)) != MF_OK)
        return st;
    mf_sizes_of(&c->desc, 0, &s);
    units = s.blocks * c->desc.rows;
    if ((st = mf_cuda_alloc(mf__cu_validate_bytes(units), &scratch)) != MF_OK)
        return st;
    if ((st = mf__cu_validate_launch(c, scratch, &v, diag)) == MF_OK) {
        size_t pitch = (size_t)c->desc.tokens * c->desc.dim * 2, wbytes = s.window_tokens * c->desc.dim * 2;
        if (units)
            decode_kernel<<<(unsigned)units, THREADS>>>(v, dense);
        if (cudaGetLastError() != cudaSuccess ||
            (wbytes && cudaMemcpy2D(dense + s.blocks * MF_TILE * c->desc.dim, pitch, c->window,
                                    wbytes, wbytes, c->desc.rows,
                                    cudaMemcpyDeviceToDevice) != cudaSuccess))
            st = mf__fail(diag, MF_ERR_DEVICE, "a CUDA call failed while decoding");
        else
            st = mf__cu_validate_result(scratch, diag);
    }
    cudaFree(scratch);
    return st;
}
