/* check-thresholds.c - the exhaustive check behind core/numerics.h's
 * mf_code_threshold at 2 bits. For every positive finite fp16 scale s:
 * floor(x / s + 1/2) as mf_quant_code takes it never falls as x walks
 * every finite fp16 value upwards, so no code does (its rounded sum with
 * z + 2^23 and the clamp keep the order); then for every fp16 integer
 * zero z in [-65504, 65504] and k = 1, 2, 3 the threshold T is the least
 * such x: code(T) >= k and code(the fp16 below T) < k (where T is +inf,
 * code(65504) < k). About 1.4 * 10^9 (s, z, k); scripts/test.sh runs it.
 * Exit status 0 when all agree. */
#include <stdio.h>
#include <stdlib.h>

#include "../../core/numerics.h"

#define KEYS 0x7bff /* keys (mf_h_key) of the finite fp16 values: -KEYS .. KEYS */

int main(void) {
    float *zs = malloc(65536 * sizeof *zs);
    long long bad = 0, falls = 0, checked = 0;
    uint32_t nz = 0, h;
    int sh;
    if (!zs)
        return 2;
    for (h = 0; h < 0x7c00; h++) { /* the integer fp16 values, both signs */
        const float f = mf_h2f((uint16_t)h);
        if (f == (float)(int32_t)f) {
            zs[nz++] = f;
            if (h)
                zs[nz++] = -f;
        }
    }
#pragma omp parallel for reduction(+ : bad, falls, checked) schedule(dynamic, 64)
    for (sh = 1; sh < 0x7c00; sh++) {
        const float s = mf_h2f((uint16_t)sh), r = MF_DIV(1.0f, s);
        float prev = -1e30f;
        int32_t key;
        uint32_t i, k;
        for (key = -KEYS; key <= KEYS; key++) {
            const float f = floorf(MF_ADD(mf_div_h(mf_h2f(mf_key_h(key)), s, r), 0.5f));
            falls += f < prev;
            prev = f;
        }
        for (i = 0; i < nz; i++)
            for (k = 1; k <= 3; k++) {
                const int32_t t = mf_h_key(mf_code_threshold(k, s, r, zs[i], 2));
                int ok;
                if (t > KEYS)
                    ok = mf_quant_code(65504.0f, s, r, zs[i], 2) < k;
                else
                    ok = mf_quant_code(mf_h2f(mf_key_h(t)), s, r, zs[i], 2) >= k &&
                         (t == -KEYS || mf_quant_code(mf_h2f(mf_key_h(t - 1)), s, r, zs[i], 2) < k);
                bad += !ok;
                checked++;
            }
    }
    printf("mf_code_threshold: %d positive finite s, %u integer z, k 1..3: %lld thresholds, %lld wrong; "
           "the code fell %lld times\n",
           0x7c00 - 1, (unsigned)nz, checked, bad, falls);
    free(zs);
    return bad != 0 || falls != 0;
}
