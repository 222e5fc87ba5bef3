/*
 * tile.h - tile geometry shared by every backend (C99 and nvcc).
 *
 * A row (one batch*kv_head) of T tokens holds T/64 full blocks; each block
 * of a row is stored as dim tiles of 64 elements, numbered j = 0..dim-1:
 *   key:   tile j = channel j, element i = token i of the block;
 *   value: tile j = channel block j/64, token j%64, element i = channel
 *          (j/64)*64 + i.
 * The dim tiles of one (row, block) are consecutive in both layouts; only
 * the order of (row, block) units differs. formats/SPEC.md, "Tiles".
 */
#ifndef MF_TILE_H
#define MF_TILE_H

#include "numerics.h"
#include "mustafar.h"

/* Storage-order index of the unit (row, block). */
MF_HD uint64_t mf_unit_index(mf_layout layout, uint32_t rows, uint64_t blocks, uint32_t row,
                             uint64_t block) {
    return layout == MF_LAYOUT_NATIVE ? block * rows + row : (uint64_t)row * blocks + block;
}

/* First tile of the unit (row, block). */
MF_HD uint64_t mf_unit_tile(mf_layout layout, uint32_t rows, uint64_t blocks, uint32_t dim,
                            uint32_t row, uint64_t block) {
    return mf_unit_index(layout, rows, blocks, row, block) * dim;
}

/* Index into the native layout's offsets (one per unit). */
MF_HD uint64_t mf_native_group(uint32_t rows, uint32_t row, uint64_t block) {
    return block * rows + row;
}

/* Dense element (token in block, channel) of element i of tile j. */
MF_HD void mf_tile_elem(mf_kind kind, uint32_t j, uint32_t i, uint32_t *token,
                        uint32_t *channel) {
    if (kind == MF_KEY) {
        *token = i;
        *channel = j;
    } else {
        *token = j % MF_TILE;
        *channel = (j / MF_TILE) * MF_TILE + i;
    }
}

MF_HD uint32_t mf_popcount64(uint64_t x) {
#ifdef __CUDA_ARCH__
    return (uint32_t)__popcll(x);
#elif defined(__GNUC__)
    return (uint32_t)__builtin_popcountll(x);
#else
    uint32_t n = 0;
    while (x) {
        x &= x - 1;
        n++;
    }
    return n;
#endif
}

MF_HD int mf_tile_bit(uint64_t bitmap, uint32_t i) { return (int)((bitmap >> (63u - i)) & 1u); }

#endif /* MF_TILE_H */
