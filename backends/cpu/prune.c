/* prune.c - AVX2 pruning of encoder rows, four at a time, with the masks
 * of core/encode.c (the `keep` largest magnitudes, ties to the lowest
 * channels, never a zero).
 *
 * Both find the threshold t: the largest magnitude with at least `keep`
 * magnitudes >= t. Core bisects all 15 bits with 16-bit counts; here the
 * search is two byte-wide ones, the high byte of the magnitudes and then
 * the low byte among those sharing it, each count a compare, a movemask
 * and a popcount per 32 channels. tests/test_prune.c checks the masks
 * against mf__prune_row. */
#include "../../core/internal.h"
#include "expand.h"
#include "quantize.h"

#if MF_CPU_SIMD
#include <immintrin.h>

#define ROWS 4u

/* Lanes of v[0..n) greater than t (signed bytes). */
static uint32_t count_gt(const __m256i *v, uint32_t n, int t) {
    const __m256i tv = _mm256_set1_epi8((char)t);
    uint32_t c = 0, k;
    for (k = 0; k < n; k++)
        c += (uint32_t)__builtin_popcount((uint32_t)_mm256_movemask_epi8(_mm256_cmpgt_epi8(v[k], tv)));
    return c;
}

/* Bytes of the 16-bit lanes of a and b (values in [-128, 127]); the lane
 * order is packs', which counting does not see. */
static __m256i bytes_of(__m256i a, __m256i b) { return _mm256_packs_epi16(a, b); }

/* 32 channels' compare results (16-bit lanes of a, b) as bits, channel i
 * at bit i. */
static uint32_t bits_of(__m256i a, __m256i b) {
    return (uint32_t)_mm256_movemask_epi8(_mm256_permute4x64_epi64(_mm256_packs_epi16(a, b), 0xd8));
}

/* The body, inlined per head dim so the counts' loops have fixed trip
 * counts; the searches are branch-free (their outcomes are coin flips). */
static inline __attribute__((always_inline)) uint32_t prune4(const uint16_t *x, uint32_t dim,
                                                             uint32_t keep, uint64_t m[4][4]) {
    const __m256i low15 = _mm256_set1_epi16(0x7fff), finite = _mm256_set1_epi16(0x7bff);
    const __m256i zero = _mm256_setzero_si256();
    __m256i mag[ROWS][16], key[ROWS][8];
    uint32_t nv = dim / 16, nb = dim / 32, r, k, step, nz[ROWS], hi[ROWS], lo[ROWS];
    for (r = 0; r < ROWS; r++) {
        __m256i over = zero;
        uint32_t zeros = 0;
        for (k = 0; k < nv; k++) {
            __m256i v = _mm256_and_si256(
                _mm256_loadu_si256((const __m256i *)(const void *)(x + (size_t)r * dim + 16 * k)), low15);
            mag[r][k] = v;
            over = _mm256_or_si256(over, _mm256_cmpgt_epi16(v, finite));
            zeros += (uint32_t)__builtin_popcount((uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi16(v, zero)));
        }
        if (!_mm256_testz_si256(over, over))
            for (k = 0; k < dim; k++)
                if ((x[(size_t)r * dim + k] & 0x7fffu) > 0x7bffu)
                    return r * dim + k + 1;
        nz[r] = dim - zeros / 2; /* movemask gives two bits per 16-bit lane */
        for (k = 0; k < nb; k++)
            key[r][k] = bytes_of(_mm256_srli_epi16(mag[r][2 * k], 8), _mm256_srli_epi16(mag[r][2 * k + 1], 8));
        hi[r] = 0;
    }
    /* The largest high byte h with at least keep magnitudes >= h << 8
     * (h = 0 always has all of them); rows interleaved so their counts
     * overlap. */
    for (step = 64; step; step >>= 1)
        for (r = 0; r < ROWS; r++)
            hi[r] += step & -(uint32_t)(count_gt(key[r], nb, (int)(hi[r] + step) - 1) >= keep);
    /* Then the largest low byte l with at least keep magnitudes >=
     * (h << 8) + l, from keys biased by -128: above h's range 127 (always
     * counted), in it l - 128, below it -128 (never counted at l >= 1;
     * l = 0 holds without a test). */
    for (r = 0; r < ROWS; r++) {
        const __m256i h = _mm256_set1_epi16((short)hi[r]), lowb = _mm256_set1_epi16(0xff);
        const __m256i top = _mm256_set1_epi16(127), bottom = _mm256_set1_epi16(-128);
        __m256i kw[16];
        for (k = 0; k < nv; k++) {
            __m256i hb = _mm256_srli_epi16(mag[r][k], 8);
            __m256i in = _mm256_sub_epi16(_mm256_and_si256(mag[r][k], lowb), _mm256_set1_epi16(128));
            kw[k] = _mm256_blendv_epi8(bottom, in, _mm256_cmpeq_epi16(hb, h));
            kw[k] = _mm256_blendv_epi8(kw[k], top, _mm256_cmpgt_epi16(hb, h));
        }
        for (k = 0; k < nb; k++)
            key[r][k] = bytes_of(kw[2 * k], kw[2 * k + 1]);
        lo[r] = 0;
    }
    for (step = 128; step; step >>= 1)
        for (r = 0; r < ROWS; r++)
            lo[r] += step & -(uint32_t)(count_gt(key[r], nb, (int)(lo[r] + step) - 129) >= keep);
    /* Masks: above t, then ties at t from the lowest channel; with
     * keep >= nz (no search) every nonzero, with keep = 0 none. */
    for (r = 0; r < ROWS; r++) {
        const __m256i t = _mm256_set1_epi16((short)((hi[r] << 8) | lo[r]));
        int all = keep >= nz[r];
        uint64_t gt[4], eq[4];
        uint32_t need = keep, w;
        for (w = 0; w < dim / 64; w++) {
            const __m256i *v = mag[r] + 4 * w;
            __m256i g[4], e[4];
            for (k = 0; k < 4; k++) {
                g[k] = all ? _mm256_xor_si256(_mm256_cmpeq_epi16(v[k], zero), _mm256_set1_epi16(-1))
                           : _mm256_cmpgt_epi16(v[k], t);
                e[k] = _mm256_cmpeq_epi16(v[k], t);
            }
            gt[w] = bits_of(g[0], g[1]) | (uint64_t)bits_of(g[2], g[3]) << 32;
            eq[w] = all ? 0 : bits_of(e[0], e[1]) | (uint64_t)bits_of(e[2], e[3]) << 32;
            need -= all ? 0 : (uint32_t)__builtin_popcountll(gt[w]);
        }
        for (w = 0; w < dim / 64; w++) {
            uint32_t n = (uint32_t)__builtin_popcountll(eq[w]);
            uint64_t ties = need >= n ? eq[w] : _pdep_u64((UINT64_C(1) << need) - 1u, eq[w]);
            need -= need >= n ? n : need;
            m[r][w] = keep ? mf_cpu_bit_reverse(gt[w] | ties) : 0;
        }
    }
    return 0;
}

uint32_t mf_cpu_prune_rows4(const uint16_t *x, uint32_t dim, uint32_t keep, uint64_t m[4][4]) {
    return dim == 64 ? prune4(x, 64, keep, m) : dim == 128 ? prune4(x, 128, keep, m) : prune4(x, 256, keep, m);
}

#endif
