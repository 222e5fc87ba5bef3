/* quantize.h - AVX2 pruning (prune.c), quantization and packing
 * (quantize.c) of encoder units; only built where expand.h's MF_CPU_SIMD
 * is 1. */
#ifndef MF_CPU_QUANTIZE_H
#define MF_CPU_QUANTIZE_H

#include "mustafar.h"

/* Four rows' keep masks, as core's mf__prune4_fn (core/internal.h). */
uint32_t mf_cpu_prune_rows4(const uint16_t *x, uint32_t dim, uint32_t keep, uint64_t m[4][4]);
/* The unit's tiles as rows of 64 halves in element order: e[j*64 + i]
 * (e holds dim * 64). block is the row-major 64 x dim input. */
void mf_cpu_unit_elements(const mf_desc *d, const uint16_t *block, uint16_t *e);
/* mf_quant_params of eight tiles from their minima and maxima: its
 * common path in vector lanes (F16C rounds as mf_f2h for finite values),
 * the lanes that need its subnormal-scale or overflow fix-ups by
 * mf_quant_params itself. */
void mf_cpu_quant_params8(const float *lo, const float *hi, uint32_t bits, uint16_t *scales,
                          uint16_t *zeros);
/* Scale and zero of every tile of the unit (as mf_quant_params). */
void mf_cpu_unit_params(const mf_desc *d, const uint16_t *e, const uint64_t *bitmaps,
                        uint16_t *scales, uint16_t *zeros);
/* Codes of every tile at its start word (as mf__encode_unit_pack). */
void mf_cpu_unit_pack(const mf_desc *d, const uint16_t *e, const uint64_t *bitmaps,
                      const uint16_t *scales, const uint16_t *zeros, const uint64_t *starts,
                      uint32_t *payload);

#endif
