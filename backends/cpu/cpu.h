/* cpu.h - the CPU (OpenMP) backend: the oracle. Entry points called by
 * backends/dispatch.c after argument checks. */
#ifndef MF_CPU_H
#define MF_CPU_H

#include "mustafar.h"

mf_status mf_cpu_encode(const uint16_t *dense, uint32_t keep, mf_ctensor *out,
                        uint64_t capacity, mf_diag *diag);
mf_status mf_cpu_decode(const mf_ctensor *c, uint16_t *dense);
mf_status mf_cpu_key_scores(const mf_ctensor *k, const uint16_t *q, uint32_t group,
                            float *scores);
mf_status mf_cpu_value_combine(const mf_ctensor *v, const float *p, uint32_t group, float *out);
size_t mf_cpu_attend_workspace(uint32_t rows, uint32_t tokens, uint32_t dim, uint32_t group);
mf_status mf_cpu_attend(const mf_ctensor *k, const mf_ctensor *v, const uint16_t *kd,
                        const uint16_t *vd, uint32_t rows, uint32_t tokens, uint32_t dim,
                        const uint16_t *q, uint32_t group, float *out, void *ws,
                        size_t ws_bytes);

/* e[t] = mf_exp(x[t] - m) for t < n, vectorized where the CPU allows;
 * bit-identical to the scalar mf_exp (tests/test_known.c checks). */
void mf_cpu_exp_shifted(const float *x, float m, uint32_t n, float *e);

#endif
