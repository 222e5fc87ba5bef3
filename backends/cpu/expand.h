/* expand.h - turning tiles and dense fp16 rows into fp32 buffers.
 *
 * Pure data movement: every path (scalar, AVX2) produces the same floats,
 * h2f of the decoded fp16 values, so the choice never changes a result.
 * The AVX2 paths need AVX2, BMI2 (pdep) and F16C at compile time. */
#ifndef MF_CPU_EXPAND_H
#define MF_CPU_EXPAND_H

#include <stdint.h>

#include "mustafar.h"

#if defined(__AVX2__) && defined(__BMI2__) && defined(__F16C__) && defined(__FMA__)
#define MF_CPU_SIMD 1
#else
#define MF_CPU_SIMD 0
#endif

/* Floats per tile of a code table: the values of the 2^bits codes, for
 * 2 bits preceded by four 0.0 (the value of an absent element). */
static inline uint32_t mf_cpu_table_floats(uint32_t bits) { return bits == 2 ? 8u : 16u; }

/* Code tables of n tiles: h2f(mf_dequant(code, scale, zero)) per code. */
void mf_cpu_code_tables(uint32_t bits, const uint16_t *scales, const uint16_t *zeros, uint32_t n,
                        float *tables);

/* One tile to 64 floats in element order. table: its code table (bits
 * 2 or 4; unused for bits 0). w points at the tile's payload; avail words
 * from w on are readable (at least the tile's own, already checked), and
 * nothing beyond them is read. */
void mf_cpu_expand_tile(uint32_t bits, uint64_t bitmap, const float *table, const uint32_t *w,
                        uint64_t avail, float *dst);

#if MF_CPU_SIMD
/* Bit i of the result is bit 63-i of x: element i of a tile at bit i. */
static inline uint64_t mf_cpu_bit_reverse(uint64_t x) {
    x = ((x >> 1) & UINT64_C(0x5555555555555555)) | ((x & UINT64_C(0x5555555555555555)) << 1);
    x = ((x >> 2) & UINT64_C(0x3333333333333333)) | ((x & UINT64_C(0x3333333333333333)) << 2);
    x = ((x >> 4) & UINT64_C(0x0f0f0f0f0f0f0f0f)) | ((x & UINT64_C(0x0f0f0f0f0f0f0f0f)) << 4);
    return __builtin_bswap64(x);
}

/* A 2-bit tile as 64 nibble indices into its code table, 16 per word:
 * nibble i of idx[i/16] is 4 + code for a stored element, 0 otherwise.
 * Reads like mf_cpu_expand_tile. */
void mf_cpu_tile_nibbles(uint64_t bitmap, const uint32_t *w, uint64_t avail, uint64_t idx[4]);
#endif

/* 64 channels of n <= 64 dense fp16 token rows p[t*stride + c] into buf:
 * key layout buf[c*64 + t] (tokens n..63 read as 0), value layout
 * buf[t*64 + c]. */
void mf_cpu_expand_dense(const uint16_t *p, uint32_t n, uint32_t stride, mf_kind kind, float *buf);

#endif
