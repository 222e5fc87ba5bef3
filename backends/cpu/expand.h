/* expand.h - turning tiles and dense fp16 rows into fp32 buffers.
 *
 * Pure data movement: every path (scalar, AVX2, AVX-512) produces the
 * same floats, h2f of the decoded fp16 values, so the choice never changes
 * a result. The SIMD paths need AVX2, BMI2 (pdep) and F16C at compile
 * time; the AVX-512 ones F, BW, VL and VBMI as well. */
#ifndef MF_CPU_EXPAND_H
#define MF_CPU_EXPAND_H

#include <stdint.h>
#include <string.h>

#include "mustafar.h"

#if defined(__AVX2__) && defined(__BMI2__) && defined(__F16C__) && defined(__FMA__)
#define MF_CPU_SIMD 1
#else
#define MF_CPU_SIMD 0
#endif

/* AVX-512 (F, BW, VL, VBMI, with the AVX2 set above): the FMA loops run
 * 16 lanes wide with the heads' factors as embedded broadcasts. Same fmaf
 * per lane in the same order, so the same bits. */
#if MF_CPU_SIMD && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    defined(__AVX512VBMI__)
#define MF_CPU_AVX512 1
#else
#define MF_CPU_AVX512 0
#endif

/* Floats per tile of a code table: the values of the 2^bits codes, for
 * 2 bits preceded by four 0.0 (the value of an absent element). */
static inline uint32_t mf_cpu_table_floats(uint32_t bits) { return bits == 2 ? 8u : 16u; }

/* Code tables of n tiles: h2f(mf_dequant(code, scale, zero)) per code.
 * Only the code values are written: the four leading zeros of 2-bit
 * tables are the caller's (they stay from one piece to the next). */
void mf_cpu_code_tables(uint32_t bits, const uint16_t *scales, const uint16_t *zeros, uint32_t n,
                        float *tables);

/* Code values of n 4-bit tiles, 32 bytes per tile: mf_dequant(code,
 * scale, zero) for codes 0-15, with AVX-512 as 16 fp16 values in code
 * order (what a word permute looks up), else as byte planes, the values'
 * low bytes then their high bytes (what a byte shuffle looks up). */
void mf_cpu_code_planes(const uint16_t *scales, const uint16_t *zeros, uint32_t n, uint8_t *planes);

/* One tile to 64 floats in element order. table: its code table (bits
 * 2 or 4; unused for bits 0). w points at the tile's payload, whose words
 * the caller has checked; nothing beyond them is read. */
void mf_cpu_expand_tile(uint32_t bits, uint64_t bitmap, const float *table, const uint32_t *w,
                        float *dst);

#if MF_CPU_SIMD
#include <immintrin.h>

/* Bit i of the result is bit 63-i of x: element i of a tile at bit i.
 * mf_cpu_bit_reverse4 does four at once: with GFNI an affine transform
 * per byte, else nibble lookups, then a byte swap. (The GFNI form also
 * asks for AVX512VL so that the Valgrind build, which leaves out
 * AVX-512, keeps to instructions Valgrind decodes.) */
static inline uint64_t mf_cpu_bit_reverse(uint64_t x) {
    x = ((x >> 1) & UINT64_C(0x5555555555555555)) | ((x & UINT64_C(0x5555555555555555)) << 1);
    x = ((x >> 2) & UINT64_C(0x3333333333333333)) | ((x & UINT64_C(0x3333333333333333)) << 2);
    x = ((x >> 4) & UINT64_C(0x0f0f0f0f0f0f0f0f)) | ((x & UINT64_C(0x0f0f0f0f0f0f0f0f)) << 4);
    return __builtin_bswap64(x);
}

static inline __m256i mf_cpu_bit_reverse4(__m256i x) {
    const __m256i bswap = _mm256_setr_epi8(7, 6, 5, 4, 3, 2, 1, 0, 15, 14, 13, 12, 11, 10, 9, 8, 7,
                                           6, 5, 4, 3, 2, 1, 0, 15, 14, 13, 12, 11, 10, 9, 8);
#if defined(__GFNI__) && defined(__AVX512VL__)
    /* bits reversed within each byte by one affine transform, then bytes */
    return _mm256_shuffle_epi8(
        _mm256_gf2p8affine_epi64_epi8(x, _mm256_set1_epi64x((long long)UINT64_C(0x8040201008040201)), 0),
        bswap);
#else
    const __m256i rev = _mm256_setr_epi8(0x0, 0x8, 0x4, 0xc, 0x2, 0xa, 0x6, 0xe, 0x1, 0x9, 0x5, 0xd,
                                         0x3, 0xb, 0x7, 0xf, 0x0, 0x8, 0x4, 0xc, 0x2, 0xa, 0x6, 0xe,
                                         0x1, 0x9, 0x5, 0xd, 0x3, 0xb, 0x7, 0xf);
    const __m256i low = _mm256_set1_epi8(0x0f);
    __m256i lo = _mm256_shuffle_epi8(rev, _mm256_and_si256(x, low));
    __m256i hi = _mm256_shuffle_epi8(rev, _mm256_and_si256(_mm256_srli_epi16(x, 4), low));
    return _mm256_shuffle_epi8(_mm256_or_si256(_mm256_slli_epi16(lo, 4), hi), bswap);
#endif
}

/* A tile's code stream as bytes with at least 40 readable: the payload
 * itself when 10 words are available (words after the tile's own, the
 * next tiles', are harmless: pdep takes only as many code bits as a group
 * has elements), else a zero-padded copy in pad. */
static inline const uint8_t *mf_cpu_code_stream(const uint32_t *w, uint64_t avail, uint64_t pad[5]) {
    if (avail >= 10)
        return (const uint8_t *)w;
    memset(pad, 0, 5 * sizeof *pad);
    memcpy(pad, w, (size_t)avail * 4u);
    return (const uint8_t *)pad;
}

/* At least 57 bits of the stream from bit pos on, in the low bits. */
static inline uint64_t mf_cpu_stream_at(const uint8_t *s, uint32_t pos) {
    uint64_t x;
    memcpy(&x, s + (pos >> 3), sizeof x);
    return x >> (pos & 7u);
}

#endif

/* 64 channels of n <= 64 dense fp16 token rows p[t*stride + c] into buf:
 * key layout buf[c*64 + t] (tokens n..63 read as 0), value layout
 * buf[t*64 + c]. */
void mf_cpu_expand_dense(const uint16_t *p, uint32_t n, uint32_t stride, mf_kind kind, float *buf);

#endif
