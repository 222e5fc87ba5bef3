/* decode.c - decoding one tile, and tile start words of a unit. */
#include "internal.h"
#include "tile.h"

void mf__decode_tile(uint32_t bits, uint64_t bitmap, uint16_t scale, uint16_t zero,
                     const uint32_t *words, uint16_t out[64]) {
    uint32_t i, n = 0;
    if (bits == 0) {
        for (i = 0; i < MF_TILE; i++) {
            if (mf_tile_bit(bitmap, i)) {
                out[i] = (uint16_t)(words[n / 2] >> (16 * (n % 2)));
                n++;
            } else {
                out[i] = 0;
            }
        }
    } else {
        uint16_t lut[16];
        uint32_t cpw = mf_codes_per_word(bits), mask = (1u << bits) - 1u;
        float s = mf_h2f(scale), z = mf_h2f(zero);
        for (i = 0; i <= mask; i++)
            lut[i] = mf_dequant(i, s, z);
        for (i = 0; i < MF_TILE; i++) {
            if (mf_tile_bit(bitmap, i)) {
                out[i] = lut[(words[n / cpw] >> ((n % cpw) * bits)) & mask];
                n++;
            } else {
                out[i] = 0;
            }
        }
    }
}

void mf__unit_starts(const mf_ctensor *c, uint32_t row, uint64_t block, uint64_t *starts) {
    const mf_desc *d = &c->desc;
    uint64_t blocks = d->tokens / MF_TILE;
    uint64_t t0 = mf_unit_tile(d->layout, d->rows, blocks, d->dim, row, block);
    uint32_t j;
    if (d->layout == MF_LAYOUT_REFERENCE) {
        for (j = 0; j < d->dim; j++)
            starts[j] = c->offsets[t0 + j];
    } else {
        uint64_t base = c->offsets[mf_native_group(d->rows, row, block)];
        for (j = 0; j < d->dim; j++) {
            starts[j] = base;
            base += mf_tile_words(mf_popcount64(c->bitmaps[t0 + j]), d->bits);
        }
    }
}
