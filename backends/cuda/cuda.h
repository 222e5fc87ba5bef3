/* cuda.h - the CUDA backend's entry points, called by backends/dispatch.c.
 *
 * With the CUDA backend every array of an mf_ctensor, and q, out, p,
 * scores, dense and the workspace, are device pointers; the mf_ctensor
 * struct itself lives on the host. mf_cuda_decode validates on the device
 * (core/validate.c's checks and statuses); compute operations check the
 * structure on the host and each tile's payload range on the device, as
 * backends/dispatch.c documents. Builds without nvcc link cuda/none.c instead,
 * whose functions report MF_ERR_NO_DEVICE. */
#ifndef MF_CUDA_H
#define MF_CUDA_H

#include "mustafar.h"

#ifdef __cplusplus
extern "C" {
#endif

int mf_cuda_available(void);
/* Why mf_cuda_available() is 0: one line for error messages. */
const char *mf_cuda_unavailable_reason(void);
mf_status mf_cuda_encode_workspace(const mf_desc *desc, size_t *bytes);
/* workspace NULL: allocates its own. */
mf_status mf_cuda_encode(const uint16_t *dense, uint32_t keep, mf_ctensor *out,
                         uint64_t capacity, void *workspace, size_t workspace_bytes,
                         mf_diag *diag);
mf_status mf_cuda_encode_kv_workspace(const mf_desc *k, const mf_desc *v, size_t *bytes);
/* wait 0: mf_encode_kv_async (return once queued, the results left in the
 * workspace for mf_cuda_encode_kv_wait, which needs the same arguments). */
mf_status mf_cuda_encode_kv(const uint16_t *k_dense, const uint16_t *v_dense, uint32_t keep,
                            mf_ctensor *k_out, mf_ctensor *v_out, uint64_t k_capacity,
                            uint64_t v_capacity, void *workspace, size_t workspace_bytes,
                            int wait, mf_diag *diag);
mf_status mf_cuda_encode_kv_wait(const uint16_t *k_dense, const uint16_t *v_dense,
                                 mf_ctensor *k_out, mf_ctensor *v_out, uint64_t k_capacity,
                                 uint64_t v_capacity, void *workspace,
                                 size_t workspace_bytes, mf_diag *diag);
mf_status mf_cuda_decode(const mf_ctensor *c, uint16_t *dense, mf_diag *diag);
mf_status mf_cuda_key_scores(const mf_ctensor *k, const uint16_t *q, uint32_t group,
                             float *scores);
mf_status mf_cuda_value_combine(const mf_ctensor *v, const float *p, uint32_t group,
                                float *out);
mf_status mf_cuda_attend_workspace(const mf_desc *k, uint32_t group, size_t *bytes);
/* wait 0: mf_attend_async (return once queued, range errors left in the
 * workspace's flag for mf_cuda_attend_wait). */
mf_status mf_cuda_attend(const mf_ctensor *k, const mf_ctensor *v, const uint16_t *q,
                         uint32_t group, float *out, void *workspace, size_t workspace_bytes,
                         int wait);
/* The tensor-core attention (mf_attend_ex with MF_KERNEL_TENSOR). */
mf_status mf_cuda_attend_tensor(const mf_ctensor *k, const mf_ctensor *v, const uint16_t *q,
                                uint32_t group, float *out, void *workspace,
                                size_t workspace_bytes, int wait);
/* Waits for the queued work; the flag's range errors, then cleared. */
mf_status mf_cuda_attend_wait(void *workspace);
/* Device memory for backends/memory.c: cudaMalloc/cudaFree/cudaMemcpy. */
mf_status mf_cuda_alloc(size_t bytes, void **ptr);
mf_status mf_cuda_free(void *ptr);
mf_status mf_cuda_upload(void *dst, const void *src_host, size_t bytes);
mf_status mf_cuda_download(void *dst_host, const void *src, size_t bytes);
mf_status mf_cuda_attend_dense(const uint16_t *k, const uint16_t *v, uint32_t rows,
                               uint32_t tokens, uint32_t dim, const uint16_t *q, uint32_t group,
                               float *out, void *workspace, size_t workspace_bytes);

#ifdef __cplusplus
}
#endif
#endif /* MF_CUDA_H */
