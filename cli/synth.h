/* synth.h - deterministic synthetic KV caches shaped like a real layer
 * (used by `mustafar demo` and the benchmark). */
#ifndef MF_SYNTH_H
#define MF_SYNTH_H

#include <stdint.h>

/* Fills k and v [rows, tokens, dim] and q [rows*group, dim] with fp16
 * values from seed: V standard normal, K normal with a few outlier
 * channels (large scale and offset), as observed in Llama keys, and each
 * query aimed at two tokens of its row so attention is peaked. */
void mf_synth_layer(uint64_t seed, uint32_t rows, uint32_t tokens, uint32_t dim, uint32_t group,
                    uint16_t *k, uint16_t *v, uint16_t *q);

#endif
