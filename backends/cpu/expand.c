/* expand.c - tile and dense-row expansion into fp32 and code tables (see
 * expand.h). With AVX2 the attention loops decode quantized tiles
 * themselves (attend.c); the tile expansion here serves fp16 tiles there,
 * and every tile in the portable build. */
#include <string.h>

#include "../../core/internal.h"
#include "../../core/tile.h"
#include "expand.h"

#if MF_CPU_SIMD
#include <immintrin.h>
#endif

void mf_cpu_expand_tile(uint32_t bits, uint64_t bm, const float *table, const uint32_t *w,
                        float *dst) {
    uint32_t n = 0, cpw = bits ? mf_codes_per_word(bits) : 2, mask = (1u << bits) - 1u;
    const float *lut = bits ? table + mf_cpu_table_floats(bits) - (1u << bits) : NULL;
    memset(dst, 0, MF_TILE * sizeof *dst);
    while (bm) {
        uint32_t i = (uint32_t)__builtin_clzll(bm);
        bm &= ~(UINT64_C(1) << (63 - i));
        if (bits)
            dst[i] = lut[(w[n / cpw] >> ((n % cpw) * bits)) & mask];
        else
            dst[i] = mf_h2f((uint16_t)(w[n / 2] >> (16 * (n % 2))));
        n++;
    }
}

static void code_tables_scalar(uint32_t bits, const uint16_t *scales, const uint16_t *zeros, uint32_t n,
                        float *tables) {
    uint32_t per = mf_cpu_table_floats(bits), codes = 1u << bits, j, c;
    for (j = 0; j < n; j++) {
        float *t = tables + (size_t)j * per, s = mf_h2f(scales[j]), z = mf_h2f(zeros[j]);
        for (c = 0; c < codes; c++)
            t[per - codes + c] = mf_h2f(mf_dequant(c, s, z));
    }
}


#if MF_CPU_SIMD

/* Transposes the 8x8 block r[0..7] (rows) in registers. */
static void transpose8(__m256 r[8]) {
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

void mf_cpu_expand_dense(const uint16_t *p, uint32_t n, uint32_t stride, mf_kind kind, float *buf) {
    uint32_t t, c, i;
    if (kind == MF_VALUE) {
        for (t = 0; t < n; t++)
            for (c = 0; c < MF_TILE; c += 8)
                _mm256_storeu_ps(buf + (size_t)t * MF_TILE + c,
                                 _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + (size_t)t * stride + c))));
        return;
    }
    for (t = 0; t < MF_TILE; t += 8)
        for (c = 0; c < MF_TILE; c += 8) {
            __m256 r[8];
            for (i = 0; i < 8; i++)
                r[i] = t + i < n ? _mm256_cvtph_ps(_mm_loadu_si128(
                                       (const __m128i *)(p + (size_t)(t + i) * stride + c)))
                                 : _mm256_setzero_ps();
            transpose8(r);
            for (i = 0; i < 8; i++)
                _mm256_storeu_ps(buf + (size_t)(c + i) * MF_TILE + t, r[i]);
        }
}

#else

void mf_cpu_expand_dense(const uint16_t *p, uint32_t n, uint32_t stride, mf_kind kind, float *buf) {
    uint32_t t, c;
    for (t = 0; t < MF_TILE; t++)
        for (c = 0; c < MF_TILE; c++) {
            float x = t < n ? mf_h2f(p[(size_t)t * stride + c]) : 0.0f;
            if (kind == MF_KEY)
                buf[c * MF_TILE + t] = x;
            else if (t < n)
                buf[t * MF_TILE + c] = x;
        }
}

#endif

#if MF_CPU_SIMD
/* 2-bit tables eight tiles at a time (the attention loops use no other
 * width): one vector per code across the tiles, rounded through fp16 by
 * F16C (round to nearest even, as mf_f2h), then 4 x 4 transposed so tile
 * i's four values land after its four zeros. */
void mf_cpu_code_tables(uint32_t bits, const uint16_t *scales, const uint16_t *zeros, uint32_t n,
                        float *tables) {
    uint32_t j = 0, i;
    for (; bits == 2 && j + 8 <= n; j += 8) {
        __m256 s = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(scales + j)));
        __m256 z = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(zeros + j)));
        __m256 r[4], t0, t1, t2, t3, u[4];
        float *t = tables + (size_t)j * 8;
        for (i = 0; i < 4; i++)
            r[i] = _mm256_cvtph_ps(_mm256_cvtps_ph(
                _mm256_mul_ps(_mm256_sub_ps(_mm256_set1_ps((float)i), z), s), _MM_FROUND_TO_NEAREST_INT));
        t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
        t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
        u[0] = _mm256_shuffle_ps(t0, t2, 0x44), u[1] = _mm256_shuffle_ps(t0, t2, 0xee);
        u[2] = _mm256_shuffle_ps(t1, t3, 0x44), u[3] = _mm256_shuffle_ps(t1, t3, 0xee);
        for (i = 0; i < 4; i++) { /* tile i in the low half, tile i + 4 in the high */
            _mm_storeu_ps(t + 8 * i + 4, _mm256_castps256_ps128(u[i]));
#if MF_CPU_AVX512
            _mm256_mask_storeu_ps(t + 8 * (i + 4), 0xf0, u[i]);
#else
            _mm_storeu_ps(t + 8 * (i + 4) + 4, _mm256_extractf128_ps(u[i], 1));
#endif
        }
    }
    code_tables_scalar(bits, scales + j, zeros + j, n - j, tables + (size_t)j * mf_cpu_table_floats(bits));
}

/* Eight tiles at a time: each tile's scale and zero broadcast from the
 * eight, codes 0-7 and 8-15 dequantized and rounded by F16C; without
 * AVX-512 the bytes are then sorted into the low and the high plane. */
void mf_cpu_code_planes(const uint16_t *scales, const uint16_t *zeros, uint32_t n, uint8_t *planes) {
    const __m256 lo = _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7), hi = _mm256_add_ps(lo, _mm256_set1_ps(8));
#if !MF_CPU_AVX512
    const __m128i split = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
#endif
    uint32_t j, i, c;
    for (j = 0; j + 8 <= n; j += 8) {
        __m256 s8 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(scales + j)));
        __m256 z8 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(zeros + j)));
        for (i = 0; i < 8; i++) {
            __m256 s = _mm256_permutevar8x32_ps(s8, _mm256_set1_epi32((int)i));
            __m256 z = _mm256_permutevar8x32_ps(z8, _mm256_set1_epi32((int)i));
            __m128i a = _mm256_cvtps_ph(_mm256_mul_ps(_mm256_sub_ps(lo, z), s), _MM_FROUND_TO_NEAREST_INT);
            __m128i b = _mm256_cvtps_ph(_mm256_mul_ps(_mm256_sub_ps(hi, z), s), _MM_FROUND_TO_NEAREST_INT);
            uint8_t *p = planes + 32u * (j + i);
#if MF_CPU_AVX512
            _mm_storeu_si128((__m128i *)p, a);
            _mm_storeu_si128((__m128i *)(p + 16), b);
#else
            a = _mm_shuffle_epi8(a, split);
            b = _mm_shuffle_epi8(b, split);
            _mm_storeu_si128((__m128i *)p, _mm_unpacklo_epi64(a, b));
            _mm_storeu_si128((__m128i *)(p + 16), _mm_unpackhi_epi64(a, b));
#endif
        }
    }
    for (; j < n; j++) {
        float s = mf_h2f(scales[j]), z = mf_h2f(zeros[j]);
        for (c = 0; c < 16; c++) {
            uint16_t v = mf_dequant(c, s, z);
#if MF_CPU_AVX512
            memcpy(planes + 32u * j + 2u * c, &v, sizeof v);
#else
            planes[32u * j + c] = (uint8_t)(v & 0xffu);
            planes[32u * j + 16u + c] = (uint8_t)(v >> 8);
#endif
        }
    }
}
#else
void mf_cpu_code_tables(uint32_t bits, const uint16_t *scales, const uint16_t *zeros, uint32_t n,
                        float *tables) {
    code_tables_scalar(bits, scales, zeros, n, tables);
}
#endif
