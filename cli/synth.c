/* synth.c - synthetic Llama-like K, V and q. */
#include <math.h>

#include "mustafar.h"
#include "synth.h"

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* Standard normal by Box-Muller from two uniform draws in (0, 1]. */
static float normal(uint64_t *s) {
    double u1 = ((double)(splitmix(s) >> 11) + 1.0) / 9007199254740992.0;
    double u2 = (double)(splitmix(s) >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

void mf_synth_layer(uint64_t seed, uint32_t rows, uint32_t tokens, uint32_t dim, uint32_t group,
                    uint16_t *k, uint16_t *v, uint16_t *q) {
    uint64_t s = seed, i, n = (uint64_t)rows * tokens * dim;
    float scale[256], bias[256];
    uint32_t c;
    for (c = 0; c < dim; c++) {
        /* About 1 channel in 16 is an outlier channel. */
        int outlier = (splitmix(&s) & 15u) == 0;
        scale[c] = outlier ? 8.0f : 1.0f;
        bias[c] = outlier ? 4.0f * normal(&s) : 0.0f;
    }
    for (i = 0; i < n; i++) {
        c = (uint32_t)(i % dim);
        k[i] = mf_fp16_from_float(scale[c] * normal(&s) + bias[c]);
        v[i] = mf_fp16_from_float(normal(&s));
    }
    /* Each query looks for two tokens of its KV row (attention in trained
     * models is peaked, not uniform): q = (k[a] + k[b]) / 16 + noise. */
    for (i = 0; i < (uint64_t)rows * group; i++) {
        uint64_t r = i / group, a = splitmix(&s) % tokens, b = splitmix(&s) % tokens;
        const uint16_t *ka = k + (r * tokens + a) * dim, *kb = k + (r * tokens + b) * dim;
        for (c = 0; c < dim; c++)
            q[i * dim + c] = mf_fp16_from_float(
                (mf_fp16_to_float(ka[c]) + mf_fp16_to_float(kb[c])) * 0.0625f + 0.5f * normal(&s));
    }
}
