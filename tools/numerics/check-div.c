/* check-div.c - the exhaustive check behind core/numerics.h's mf_div_h:
 * for every finite fp16 x and every positive finite fp16 s, the product
 * with r = 1/s and one fused correction give the IEEE quotient x / s (a
 * zero may differ in sign only). About 2 * 10^9 pairs; scripts/test.sh
 * runs it. Exit status 0 when all agree. */
#include <stdio.h>
#include <stdlib.h>

#include "../../core/numerics.h"

int main(void) {
    float *xs = malloc(65536 * sizeof *xs);
    long long bad = 0;
    uint32_t nx = 0, h;
    int sh;
    if (!xs)
        return 2;
    for (h = 0; h < 65536; h++)
        if (mf_h_finite((uint16_t)h))
            xs[nx++] = mf_h2f((uint16_t)h);
#pragma omp parallel for reduction(+ : bad) schedule(dynamic, 64)
    for (sh = 1; sh < 0x7c00; sh++) {
        const float s = mf_h2f((uint16_t)sh), r = MF_DIV(1.0f, s);
        uint32_t i;
        for (i = 0; i < nx; i++)
            if (!(mf_div_h(xs[i], s, r) == MF_DIV(xs[i], s)))
                bad++;
    }
    printf("mf_div_h: %u finite x, %d positive finite s: %lld differ from x / s\n",
           (unsigned)nx, 0x7c00 - 1, bad);
    free(xs);
    return bad != 0;
}
