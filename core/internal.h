/* internal.h - helpers shared by the library's C sources (not public). */
#ifndef MF_INTERNAL_H
#define MF_INTERNAL_H

#include <stdint.h>
#include "mustafar.h"

/* Limits an untrusted description may ask for (formats/SPEC.md, "Limits"). */
#define MF_MAX_ROWS (1u << 20)
#define MF_MAX_TOKENS (1u << 24)
#define MF_MAX_ELEMENTS (UINT64_C(1) << 34) /* rows * tokens * dim */

#if defined(__GNUC__)
#define MF_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define MF_NOINLINE __attribute__((noinline))
#else
#define MF_PRINTF(a, b)
#define MF_NOINLINE
#endif

/* Writes a one-line message into diag (if any) and returns status. */
mf_status mf__fail(mf_diag *diag, mf_status status, const char *fmt, ...) MF_PRINTF(3, 4);

/* Overflow-checked arithmetic: return 0 on overflow. */
static inline int mf__mul64(uint64_t a, uint64_t b, uint64_t *out) {
    if (a != 0 && b > UINT64_MAX / a)
        return 0;
    *out = a * b;
    return 1;
}

static inline int mf__add64(uint64_t a, uint64_t b, uint64_t *out) {
    if (b > UINT64_MAX - a)
        return 0;
    *out = a + b;
    return 1;
}

/* The part of mf_validate that compute operations need: a supported
 * desc, payload_words within limits, every array present. They check
 * each tile's payload range as they read it. */
mf_status mf__check_structure(const mf_ctensor *c, mf_diag *diag);

/* Tile decoding and encoding units (core/encode.c, core/decode.c). */
/* Keep masks of 4 consecutive dim-long rows of x (token stride dim),
 * m[row][word] as mf__prune_row's. Returns 0 or (row * dim + channel + 1)
 * of the first non-finite element in row-major order. */
typedef uint32_t (*mf__prune4_fn)(const uint16_t *x, uint32_t dim, uint32_t keep,
                                  uint64_t m[4][4]);
/* Prunes and tiles the 64 x dim block (row-major, token stride dim) with
 * prune4 (NULL: core's own, the definition a backend's must equal):
 * writes the dim bitmaps of the unit and, if quantized and scales is not
 * NULL, scales and zeros.
 * Returns the index of a non-finite element in *bad (or -1). */
void mf__encode_unit_tiles(const mf_desc *d, const uint16_t *block, uint32_t keep,
                           mf__prune4_fn prune4, uint64_t *bitmaps, uint16_t *scales,
                           uint16_t *zeros, long *bad);
/* Packs the unit's nonzeros into payload at the tile start words. */
void mf__encode_unit_pack(const mf_desc *d, const uint16_t *block, const uint64_t *bitmaps,
                          const uint16_t *scales, const uint16_t *zeros,
                          const uint64_t *starts, uint32_t *payload);
/* Keep mask of one dim-long row: bit (63 - i%64) of word i/64 for channel
 * i. Returns 0 or the channel + 1 of a non-finite element. */
uint32_t mf__prune_row(const uint16_t *x, uint32_t dim, uint32_t keep, uint64_t *mask);
/* Decodes one tile to 64 fp16 values in element order. words points at
 * the tile's payload (mf_tile_words() of them, already bounds-checked). */
void mf__decode_tile(uint32_t bits, uint64_t bitmap, uint16_t scale, uint16_t zero,
                     const uint32_t *words, uint16_t out[64]);
/* Tile start words of the unit (row, block): from the per-tile offsets
 * (reference) or the unit offset plus a prefix sum (native). */
void mf__unit_starts(const mf_ctensor *c, uint32_t row, uint64_t block, uint64_t *starts);

#endif /* MF_INTERNAL_H */
