/* quantize.c - AVX2 quantization and packing of encoder units.
 *
 * The same arithmetic as core/encode.c (mf_quant_params, mf_quant_code:
 * each lane one IEEE operation of the same kind and order, the code's
 * quotient an IEEE division where core computes the same f32 with
 * mf_div_h), reorganized
 * so a tile's 64 elements are quantized 8 at a time and its kept codes
 * are compacted with pext. tests/test_golden.c pins the bytes, which the
 * portable build (core's units) must produce too. */
#include <string.h>

#include "../../core/internal.h"
#include "../../core/tile.h"
#include "expand.h"
#include "quantize.h"

#if MF_CPU_SIMD
#include <immintrin.h>

/* 8x8 transpose of 16-bit elements: rows r[0..7] in place. */
static void transpose8x16(__m128i r[8]) {
    __m128i a0 = _mm_unpacklo_epi16(r[0], r[1]), a1 = _mm_unpackhi_epi16(r[0], r[1]);
    __m128i a2 = _mm_unpacklo_epi16(r[2], r[3]), a3 = _mm_unpackhi_epi16(r[2], r[3]);
    __m128i a4 = _mm_unpacklo_epi16(r[4], r[5]), a5 = _mm_unpackhi_epi16(r[4], r[5]);
    __m128i a6 = _mm_unpacklo_epi16(r[6], r[7]), a7 = _mm_unpackhi_epi16(r[6], r[7]);
    __m128i b0 = _mm_unpacklo_epi32(a0, a2), b1 = _mm_unpackhi_epi32(a0, a2);
    __m128i b2 = _mm_unpacklo_epi32(a1, a3), b3 = _mm_unpackhi_epi32(a1, a3);
    __m128i b4 = _mm_unpacklo_epi32(a4, a6), b5 = _mm_unpackhi_epi32(a4, a6);
    __m128i b6 = _mm_unpacklo_epi32(a5, a7), b7 = _mm_unpackhi_epi32(a5, a7);
    r[0] = _mm_unpacklo_epi64(b0, b4);
    r[1] = _mm_unpackhi_epi64(b0, b4);
    r[2] = _mm_unpacklo_epi64(b1, b5);
    r[3] = _mm_unpackhi_epi64(b1, b5);
    r[4] = _mm_unpacklo_epi64(b2, b6);
    r[5] = _mm_unpackhi_epi64(b2, b6);
    r[6] = _mm_unpacklo_epi64(b3, b7);
    r[7] = _mm_unpackhi_epi64(b3, b7);
}

void mf_cpu_unit_elements(const mf_desc *d, const uint16_t *block, uint16_t *e) {
    uint32_t j, t, c, i;
    if (d->kind == MF_VALUE) { /* tile j: token j % 64, channels of block j / 64 */
        for (j = 0; j < d->dim; j++)
            memcpy(e + (size_t)j * MF_TILE, block + (size_t)(j % MF_TILE) * d->dim + (j / MF_TILE) * MF_TILE,
                   MF_TILE * sizeof *e);
        return;
    }
    for (t = 0; t < MF_TILE; t += 8) /* key: tile j = channel j, the transpose */
        for (c = 0; c < d->dim; c += 8) {
            __m128i r[8];
            for (i = 0; i < 8; i++)
                r[i] = _mm_loadu_si128((const __m128i *)(block + (size_t)(t + i) * d->dim + c));
            transpose8x16(r);
            for (i = 0; i < 8; i++)
                _mm_storeu_si128((__m128i *)(e + (size_t)(c + i) * MF_TILE + t), r[i]);
        }
}

/* All-ones lanes for the kept elements 8g .. 8g+7 of bitmap bm. */
static __m256i kept_lanes(uint64_t bm, uint32_t g) {
    const __m256i bit = _mm256_setr_epi32(128, 64, 32, 16, 8, 4, 2, 1);
    __m256i b = _mm256_set1_epi32((int)((bm >> (56u - 8u * g)) & 0xffu));
    return _mm256_cmpeq_epi32(_mm256_and_si256(b, bit), bit);
}

static float hmin(__m256 v) {
    __m128 x = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_min_ps(x, _mm_movehl_ps(x, x));
    x = _mm_min_ss(x, _mm_shuffle_ps(x, x, 1));
    return _mm_cvtss_f32(x);
}

static float hmax(__m256 v) {
    __m128 x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_max_ps(x, _mm_movehl_ps(x, x));
    x = _mm_max_ss(x, _mm_shuffle_ps(x, x, 1));
    return _mm_cvtss_f32(x);
}

/* Whether each fp16 lane of h is inf or NaN, as 16-bit masks. */
static __m128i h_nonfinite(__m128i h) {
    const __m128i e = _mm_set1_epi16(0x7c00);
    return _mm_cmpeq_epi16(_mm_and_si128(h, e), e);
}

void mf_cpu_quant_params8(const float *lo, const float *hi, uint32_t bits, uint16_t *scales,
                          uint16_t *zeros) {
    const __m256 levels = _mm256_set1_ps((float)((1u << bits) - 1u)), zero = _mm256_setzero_ps();
    const __m256 one = _mm256_set1_ps(1.0f), top = _mm256_set1_ps(65504.0f);
    __m256 mn = _mm256_loadu_ps(lo), mx = _mm256_loadu_ps(hi), s, z, zf, pos;
    __m128i sh = _mm256_cvtps_ph(_mm256_div_ps(_mm256_sub_ps(mx, mn), levels), _MM_FROUND_TO_NEAREST_INT);
    __m128i zh, pos16, rare;
    uint32_t i, lanes;
    s = _mm256_cvtph_ps(sh);
    pos = _mm256_cmp_ps(s, zero, _CMP_GT_OQ); /* else a zero range: scale 1.0 */
    pos16 = _mm_packs_epi32(_mm256_castsi256_si128(_mm256_castps_si256(pos)),
                            _mm256_extracti128_si256(_mm256_castps_si256(pos), 1));
    sh = _mm_blendv_epi8(_mm_set1_epi16(0x3c00), sh, pos16);
    s = _mm256_blendv_ps(one, s, pos);
    /* A subnormal scale's step-up needs mf_quant_params' own test. */
    rare = _mm_and_si128(pos16, _mm_cmplt_epi16(sh, _mm_set1_epi16(0x0400)));
    z = _mm256_floor_ps(_mm256_add_ps(_mm256_div_ps(_mm256_sub_ps(zero, mn), s), _mm256_set1_ps(0.5f)));
    z = _mm256_max_ps(_mm256_min_ps(z, top), _mm256_sub_ps(zero, top));
    zh = _mm256_cvtps_ph(z, _MM_FROUND_TO_NEAREST_INT);
    zf = _mm256_cvtph_ps(zh);
    /* End codes decoding to inf (mf_quant_overflow): its fix-up too. */
    rare = _mm_or_si128(rare, h_nonfinite(_mm256_cvtps_ph(_mm256_mul_ps(_mm256_sub_ps(zero, zf), s),
                                                          _MM_FROUND_TO_NEAREST_INT)));
    rare = _mm_or_si128(rare, h_nonfinite(_mm256_cvtps_ph(_mm256_mul_ps(_mm256_sub_ps(levels, zf), s),
                                                          _MM_FROUND_TO_NEAREST_INT)));
    _mm_storeu_si128((__m128i *)scales, sh);
    _mm_storeu_si128((__m128i *)zeros, zh);
    lanes = (uint32_t)_mm_movemask_epi8(rare);
    for (i = 0; i < 8; i++)
        if (lanes >> (2 * i) & 1u)
            mf_quant_params(lo[i], hi[i], bits, &scales[i], &zeros[i]);
}

void mf_cpu_unit_params(const mf_desc *d, const uint16_t *e, const uint64_t *bitmaps,
                        uint16_t *scales, uint16_t *zeros) {
    const __m256 inf = _mm256_set1_ps(__builtin_inff()), ninf = _mm256_set1_ps(-__builtin_inff());
    uint32_t j, g;
    for (j = 0; j < d->dim; j += 8) {
        float lo[8], hi[8];
        uint32_t t;
        for (t = 0; t < 8; t++) {
            /* Kept values are finite and nonzero, so float order is the
             * order of the fp16 values that core/encode.c compares. */
            __m256 mn = inf, mx = ninf;
            uint64_t bm = bitmaps[j + t];
            lo[t] = hi[t] = 0.0f; /* an empty tile */
            if (!bm)
                continue;
            for (g = 0; g < 8; g++) {
                __m256 x = _mm256_cvtph_ps(
                    _mm_loadu_si128((const __m128i *)(e + (size_t)(j + t) * MF_TILE + 8 * g)));
                __m256 k = _mm256_castsi256_ps(kept_lanes(bm, g));
                mn = _mm256_min_ps(mn, _mm256_blendv_ps(inf, x, k));
                mx = _mm256_max_ps(mx, _mm256_blendv_ps(ninf, x, k));
            }
            lo[t] = hmin(mn);
            hi[t] = hmax(mx);
        }
        mf_cpu_quant_params8(lo, hi, d->bits, scales + j, zeros + j);
    }
}

/* Appends the low n bits of v (n <= 64) at bit pos of buf. */
static void put_bits(uint64_t *buf, uint32_t *pos, uint64_t v, uint32_t n) {
    uint32_t o = *pos & 63u, w = *pos >> 6;
    if (n == 0)
        return;
    buf[w] |= v << o;
    if (o && o + n > 64)
        buf[w + 1] |= v >> (64u - o);
    *pos += n;
}

void mf_cpu_unit_pack(const mf_desc *d, const uint16_t *e, const uint64_t *bitmaps,
                      const uint16_t *scales, const uint16_t *zeros, const uint64_t *starts,
                      uint32_t *payload) {
    const uint32_t b = d->bits, per_word = 64u / b; /* codes per 64-bit dense word */
    const __m256i lane_shift = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256 half = _mm256_set1_ps(0.5f), top = _mm256_set1_ps((float)((1u << b) - 1u));
    const uint64_t spread = b == 2 ? UINT64_C(0x5555555555555555) : UINT64_C(0x1111111111111111);
    uint32_t j, g, k;
    for (j = 0; j < d->dim; j++) {
        uint64_t dense[4] = {0, 0, 0, 0}, out[5] = {0, 0, 0, 0, 0}, rb = 0, bm = bitmaps[j];
        uint32_t pos = 0, nnz = mf_popcount64(bm);
        __m256 s = _mm256_set1_ps(mf_h2f(scales[j])), z = _mm256_set1_ps(mf_h2f(zeros[j]));
        __m256i sh = _mm256_mullo_epi32(lane_shift, _mm256_set1_epi32((int)b));
        if (!nnz)
            continue;
        /* Codes of all 64 elements, b bits each, element i at bit b*i. */
        for (g = 0; g < 8; g++) {
            __m256 x = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(e + (size_t)j * MF_TILE + 8 * g)));
            __m256 q = _mm256_add_ps(_mm256_floor_ps(_mm256_add_ps(_mm256_div_ps(x, s), half)), z);
            __m256i c = _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(q, _mm256_setzero_ps()), top));
            __m256i v = _mm256_sllv_epi32(c, sh);
            __m128i h = _mm_or_si128(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
            uint64_t bits8;
            h = _mm_or_si128(h, _mm_unpackhi_epi64(h, h));
            h = _mm_or_si128(h, _mm_srli_epi64(h, 32));
            bits8 = (uint64_t)(uint32_t)_mm_cvtsi128_si32(h); /* 8 codes, 8*b bits */
            dense[(8u * g) / per_word] |= bits8 << ((8u * g % per_word) * b);
        }
        /* Kept codes in element order: pext with each kept element's b bits. */
        rb = mf_cpu_bit_reverse(bm);
        for (k = 0; k < b; k++) {
            uint64_t m = _pdep_u64((rb >> (k * per_word)) & ((UINT64_C(1) << per_word) - 1u), spread) *
                         ((1u << b) - 1u);
            put_bits(out, &pos, _pext_u64(dense[k], m), (uint32_t)__builtin_popcountll(m));
        }
        memcpy(payload + starts[j], out, (size_t)mf_tile_words(nnz, b) * 4u);
    }
}

#endif
