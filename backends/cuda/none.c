/* none.c - the CUDA backend in a build without nvcc: always absent. */
#include "cuda.h"

int mf_cuda_available(void) { return 0; }

const char *mf_cuda_unavailable_reason(void) {
    return "this build of mustafar has no CUDA backend (nvcc was not found at build time)";
}

mf_status mf_cuda_encode_workspace(const mf_desc *desc, size_t *bytes) {
    (void)desc, (void)bytes;
    return MF_ERR_NO_DEVICE;
}

mf_status mf_cuda_encode(const uint16_t *dense, uint32_t keep, mf_ctensor *out,
                         uint64_t capacity, void *workspace, size_t workspace_bytes,
                         mf_diag *diag) {
    (void)dense, (void)keep, (void)out, (void)capacity, (void)workspace, (void)workspace_bytes;
    (void)diag;
    return MF_ERR_NO_DEVICE;
}

mf_status mf_cuda_encode_kv_workspace(const mf_desc *k, const mf_desc *v, size_t *bytes) {
    (void)k, (void)v, (void)bytes;
    return MF_ERR_NO_DEVICE;
}

mf_status mf_cuda_encode_kv(const uint16_t *k_dense, const uint16_t *v_dense, uint32_t keep,
                            mf_ctensor *k_out, mf_ctensor *v_out, uint64_t k_capacity,
                            uint64_t v_capacity, void *workspace, size_t workspace_bytes,
                            int wait, mf_diag *diag) {
    (void)k_dense, (void)v_dense, (void)keep, (void)k_out, (void)v_out, (void)k_capacity;
    (void)v_capacity, (void)workspace, (void)workspace_bytes, (void)wait, (void)diag;
    return MF_ERR_NO_DEVICE;
}

mf_status mf_cuda_encode_kv_wait(const uint16_t *k_dense, const uint16_t *v_dense,
                                 mf_ctensor *k_out, mf_ctensor *v_out, uint64_t k_capacity,
                                 uint64_t v_capacity, void *workspace,
                                 size_t workspace_bytes, mf_diag *diag) {
    (void)k_dense, (void)v_dense, (void)k_out, (void)v_out, (void)k_capacity, (void)v_capacity;
    (void)workspace, (void)workspace_bytes, (void)diag;
    return MF_ERR_NO_DEVICE;
}

mf_status mf_cuda_decode(const mf_ctensor *c, uint16_t *dense, mf_diag *diag) {
    (void)c, (void)dense, (void)diag;
    return MF_ERR_NO_DEVICE;
}

mf_status mf_cuda_key_scores(const mf_ctensor *k, const uint16_t *q, uint32_t group,
                             float *scores) {
    (void)k, (void)q, (void)group, (void)scores;
    return MF_ERR_NO_DEVICE;
}

mf_status mf_cuda_value_combine(const mf_ctensor *v, const float *p, uint32_t group,
                                float *out) {
    (void)v, (void)p, (void)group, (void)out;
    return MF_ERR_NO_DEVICE;
}

mf_status mf_cuda_attend_workspace(const mf_desc *k, uint32_t group, size_t *bytes) {
    (void)k, (void)group, (void)bytes;
    return MF_ERR_NO_DEVICE;
}

mf_status mf_cuda_attend(const mf_ctensor *k, const mf_ctensor *v, const uint16_t *q,
                         uint32_t group, float *out, void *workspace, size_t workspace_bytes,
                         int wait) {
    (void)k, (void)v, (void)q, (void)group, (void)out, (void)workspace, (void)workspace_bytes;
    (void)wait;
    return MF_ERR_NO_DEVICE;
}

mf_status mf_cuda_attend_wait(void *workspace) {
    (void)workspace;
    return MF_ERR_NO_DEVICE;
}

mf_status mf_cuda_attend_dense(const uint16_t *k, const uint16_t *v, uint32_t rows,
                               uint32_t tokens, uint32_t dim, const uint16_t *q, uint32_t group,
                               float *out, void *workspace, size_t workspace_bytes) {
    (void)k, (void)v, (void)rows, (void)tokens, (void)dim, (void)q, (void)group, (void)out;
    (void)workspace, (void)workspace_bytes;
    return MF_ERR_NO_DEVICE;
}

mf_status mf_cuda_attend_tensor(const mf_ctensor *k, const mf_ctensor *v, const uint16_t *q,
                                uint32_t group, float *out, void *workspace,
                                size_t workspace_bytes, int wait) {
    (void)k, (void)v, (void)q, (void)group, (void)out, (void)workspace, (void)workspace_bytes;
    (void)wait;
    return MF_ERR_NO_DEVICE;
}

mf_status mf_cuda_alloc(size_t bytes, void **ptr) {
    (void)bytes, (void)ptr;
    return MF_ERR_NO_DEVICE;
}

mf_status mf_cuda_free(void *ptr) {
    (void)ptr;
    return MF_ERR_NO_DEVICE;
}

mf_status mf_cuda_upload(void *dst, const void *src_host, size_t bytes) {
    (void)dst, (void)src_host, (void)bytes;
    return MF_ERR_NO_DEVICE;
}

mf_status mf_cuda_download(void *dst_host, const void *src, size_t bytes) {
    (void)dst_host, (void)src, (void)bytes;
    return MF_ERR_NO_DEVICE;
}
