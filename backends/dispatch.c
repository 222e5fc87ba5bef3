/* dispatch.c - the public operations: argument checks, then the backend.
 *
 * Every check that does not depend on the backend lives here, so the CPU
 * and CUDA backends receive only well-formed requests. The CUDA entry
 * points exist in every build: without nvcc they are stubs (cuda/none.c)
 * that answer MF_ERR_NO_DEVICE. */
#include <string.h>

#include "../core/internal.h"
#include "cpu/cpu.h"
#include "cuda/cuda.h"

int mf_backend_available(mf_backend backend) {
    if (backend == MF_BACKEND_CPU)
        return 1;
    if (backend == MF_BACKEND_CUDA)
        return mf_cuda_available();
    return 0;
}

mf_status mf_backend_parse(const char *name, mf_backend *backend) {
    if (!name || !backend)
        return MF_ERR_NULL;
    if (strcmp(name, "cpu") == 0)
        *backend = MF_BACKEND_CPU;
    else if (strcmp(name, "cuda") == 0)
        *backend = MF_BACKEND_CUDA;
    else
        return MF_ERR_ARG;
    return MF_OK;
}

const char *mf_backend_name(mf_backend backend) {
    return backend == MF_BACKEND_CPU ? "cpu" : backend == MF_BACKEND_CUDA ? "cuda" : "unknown";
}

static mf_status check_backend(mf_backend backend, mf_diag *diag) {
    if (backend == MF_BACKEND_CPU)
        return MF_OK;
    if (backend != MF_BACKEND_CUDA)
        return mf__fail(diag, MF_ERR_ARG, "backend %d is neither cpu (0) nor cuda (1)",
                        (int)backend);
    if (!mf_cuda_available())
        return mf__fail(diag, MF_ERR_NO_DEVICE, "%s", mf_cuda_unavailable_reason());
    return MF_OK;
}

static mf_status check_group(uint32_t group, uint32_t rows, mf_diag *diag) {
    if (group == 0 || group > MF_MAX_GROUP)
        return mf__fail(diag, MF_ERR_ARG, "group %u (query heads per KV head) is not 1..%u", group,
                        MF_MAX_GROUP);
    if ((uint64_t)group * rows > MF_MAX_ROWS)
        return mf__fail(diag, MF_ERR_LIMIT, "rows*group = %llu exceeds the limit %u",
                        (unsigned long long)group * rows, MF_MAX_ROWS);
    return MF_OK;
}

mf_status mf_encode_workspace(mf_backend backend, const mf_desc *desc, size_t *bytes) {
    mf_status st;
    if (!desc || !bytes)
        return MF_ERR_NULL;
    *bytes = 0;
    if ((st = check_backend(backend, NULL)) != MF_OK || (st = mf_desc_check(desc, NULL)) != MF_OK)
        return st;
    return backend == MF_BACKEND_CUDA ? mf_cuda_encode_workspace(desc, bytes) : MF_OK;
}

mf_status mf_encode(mf_backend backend, const uint16_t *dense, uint32_t keep, mf_ctensor *out,
                    uint64_t capacity, mf_diag *diag) {
    return mf_encode_ex(backend, dense, keep, out, capacity, NULL, 0, diag);
}

/* The checks of one encode's output and keep (after the NULL and backend
 * checks). */
static mf_status check_encode(uint32_t keep, const mf_ctensor *out, uint64_t capacity,
                              mf_diag *diag) {
    mf_sizes s;
    mf_status st;
    if ((st = mf_desc_check(&out->desc, diag)) != MF_OK)
        return st;
    mf_sizes_of(&out->desc, 0, &s);
    if (keep > out->desc.dim)
        return mf__fail(diag, MF_ERR_ARG, "keep %u exceeds dim %u", keep, out->desc.dim);
    if ((s.tiles && !out->bitmaps) || (s.offsets && !out->offsets) ||
        (s.window && !out->window) || (capacity && !out->payload) ||
        (s.tiles && out->desc.bits && (!out->scales || !out->zeros)))
        return mf__fail(diag, MF_ERR_NULL, "an output array is NULL");
    return MF_OK;
}

/* workspace NULL: the backend allocates its own (mf_encode). */
mf_status mf_encode_ex(mf_backend backend, const uint16_t *dense, uint32_t keep, mf_ctensor *out,
                       uint64_t capacity, void *workspace, size_t workspace_bytes, mf_diag *diag) {
    mf_status st;
    if (!dense || !out)
        return mf__fail(diag, MF_ERR_NULL, "dense input or output tensor is NULL");
    if ((st = check_backend(backend, diag)) != MF_OK ||
        (st = check_encode(keep, out, capacity, diag)) != MF_OK)
        return st;
    if (backend == MF_BACKEND_CUDA)
        return mf_cuda_encode(dense, keep, out, capacity, workspace, workspace_bytes, diag);
    return mf_cpu_encode(dense, keep, out, capacity, diag);
}

/* A layer's K and V descs: keys and values of the same shape and width. */
static mf_status check_kv(const mf_desc *k, const mf_desc *v, mf_diag *diag) {
    if (k->kind != MF_KEY || v->kind != MF_VALUE)
        return mf__fail(diag, MF_ERR_ARG, "K must be of kind key and V of kind value");
    if (k->rows != v->rows || k->tokens != v->tokens || k->dim != v->dim || k->bits != v->bits)
        return mf__fail(diag, MF_ERR_DIMS, "K is [%u, %u, %u] at %u bits, V [%u, %u, %u] at %u bits",
                        k->rows, k->tokens, k->dim, k->bits, v->rows, v->tokens, v->dim, v->bits);
    return MF_OK;
}

mf_status mf_encode_kv_workspace(mf_backend backend, const mf_desc *k, const mf_desc *v,
                                 size_t *bytes) {
    mf_status st;
    if (!k || !v || !bytes)
        return MF_ERR_NULL;
    *bytes = 0;
    if ((st = check_backend(backend, NULL)) != MF_OK || (st = mf_desc_check(k, NULL)) != MF_OK ||
        (st = mf_desc_check(v, NULL)) != MF_OK || (st = check_kv(k, v, NULL)) != MF_OK)
        return st;
    return backend == MF_BACKEND_CUDA ? mf_cuda_encode_kv_workspace(k, v, bytes) : MF_OK;
}

/* The checks of mf_encode_kv_* calls (keep 0 .. dim: any for the wait). */
static mf_status check_encode_kv(mf_backend backend, const uint16_t *k_dense,
                                 const uint16_t *v_dense, uint32_t keep, const mf_ctensor *k_out,
                                 const mf_ctensor *v_out, uint64_t k_capacity,
                                 uint64_t v_capacity, mf_diag *diag) {
    mf_status st;
    if (!k_dense || !v_dense || !k_out || !v_out)
        return mf__fail(diag, MF_ERR_NULL, "a dense input or output tensor is NULL");
    if ((st = check_backend(backend, diag)) != MF_OK ||
        (st = check_encode(keep, k_out, k_capacity, diag)) != MF_OK ||
        (st = check_encode(keep, v_out, v_capacity, diag)) != MF_OK)
        return st;
    return check_kv(&k_out->desc, &v_out->desc, diag);
}

/* mf_encode_kv_ex (wait 1) and mf_encode_kv_async (wait 0). */
static mf_status encode_kv(mf_backend backend, const uint16_t *k_dense, const uint16_t *v_dense,
                           uint32_t keep, mf_ctensor *k_out, mf_ctensor *v_out,
                           uint64_t k_capacity, uint64_t v_capacity, void *workspace,
                           size_t workspace_bytes, int wait, mf_diag *diag) {
    mf_status st;
    if ((st = check_encode_kv(backend, k_dense, v_dense, keep, k_out, v_out, k_capacity,
                              v_capacity, diag)) != MF_OK)
        return st;
    if (backend == MF_BACKEND_CUDA) {
        if (!wait && !workspace)
            return mf__fail(diag, MF_ERR_NULL, "mf_encode_kv_async needs a workspace");
        return mf_cuda_encode_kv(k_dense, v_dense, keep, k_out, v_out, k_capacity, v_capacity,
                                 workspace, workspace_bytes, wait, diag);
    }
    if ((st = mf_cpu_encode(k_dense, keep, k_out, k_capacity, diag)) != MF_OK)
        return st;
    return mf_cpu_encode(v_dense, keep, v_out, v_capacity, diag);
}

mf_status mf_encode_kv_ex(mf_backend backend, const uint16_t *k_dense, const uint16_t *v_dense,
                          uint32_t keep, mf_ctensor *k_out, mf_ctensor *v_out,
                          uint64_t k_capacity, uint64_t v_capacity, void *workspace,
                          size_t workspace_bytes, mf_diag *diag) {
    return encode_kv(backend, k_dense, v_dense, keep, k_out, v_out, k_capacity, v_capacity,
                     workspace, workspace_bytes, 1, diag);
}

mf_status mf_encode_kv_async(mf_backend backend, const uint16_t *k_dense,
                             const uint16_t *v_dense, uint32_t keep, mf_ctensor *k_out,
                             mf_ctensor *v_out, uint64_t k_capacity, uint64_t v_capacity,
                             void *workspace, size_t workspace_bytes, mf_diag *diag) {
    return encode_kv(backend, k_dense, v_dense, keep, k_out, v_out, k_capacity, v_capacity,
                     workspace, workspace_bytes, 0, diag);
}

mf_status mf_encode_kv_wait(mf_backend backend, const uint16_t *k_dense,
                            const uint16_t *v_dense, mf_ctensor *k_out, mf_ctensor *v_out,
                            uint64_t k_capacity, uint64_t v_capacity, void *workspace,
                            size_t workspace_bytes, mf_diag *diag) {
    mf_status st;
    if ((st = check_encode_kv(backend, k_dense, v_dense, 0, k_out, v_out, k_capacity,
                              v_capacity, diag)) != MF_OK)
        return st;
    if (backend == MF_BACKEND_CPU)
        return MF_OK;
    if (!workspace)
        return mf__fail(diag, MF_ERR_NULL, "mf_encode_kv_wait needs the async call's workspace");
    return mf_cuda_encode_kv_wait(k_dense, v_dense, k_out, v_out, k_capacity, v_capacity,
                                  workspace, workspace_bytes, diag);
}

mf_status mf_decode(mf_backend backend, const mf_ctensor *c, uint16_t *dense, mf_diag *diag) {
    mf_status st;
    if (!c || !dense)
        return mf__fail(diag, MF_ERR_NULL, "tensor or output is NULL");
    if ((st = check_backend(backend, diag)) != MF_OK)
        return st;
    if (backend == MF_BACKEND_CUDA)
        return mf_cuda_decode(c, dense, diag);
    if ((st = mf_validate(c, diag)) != MF_OK)
        return st;
    return mf_cpu_decode(c, dense);
}

/* Compute operations check the structure of compressed inputs (desc,
 * arrays) and each tile's payload range as they read it, so no input can
 * make them read out of bounds; a range outside the payload is
 * MF_ERR_OFFSET_RANGE. They do not re-run the full mf_validate on every
 * call: untrusted tensors are validated once, when they arrive
 * (mf_container_load does). With the CUDA backend the arrays are device
 * pointers and the backend checks on the device. */
mf_status mf_key_scores(mf_backend backend, const mf_ctensor *k, const uint16_t *q,
                        uint32_t group, float *scores) {
    mf_status st;
    if (!k || !q || !scores)
        return MF_ERR_NULL;
    if ((st = check_backend(backend, NULL)) != MF_OK)
        return st;
    if (k->desc.kind != MF_KEY)
        return MF_ERR_ARG;
    if (backend == MF_BACKEND_CPU && (st = mf__check_structure(k, NULL)) != MF_OK)
        return st;
    if ((st = check_group(group, k->desc.rows, NULL)) != MF_OK)
        return st;
    if (backend == MF_BACKEND_CUDA)
        return mf_cuda_key_scores(k, q, group, scores);
    return mf_cpu_key_scores(k, q, group, scores);
}

mf_status mf_value_combine(mf_backend backend, const mf_ctensor *v, const float *p,
                           uint32_t group, float *out) {
    mf_status st;
    if (!v || !p || !out)
        return MF_ERR_NULL;
    if ((st = check_backend(backend, NULL)) != MF_OK)
        return st;
    if (v->desc.kind != MF_VALUE)
        return MF_ERR_ARG;
    if (backend == MF_BACKEND_CPU && (st = mf__check_structure(v, NULL)) != MF_OK)
        return st;
    if ((st = check_group(group, v->desc.rows, NULL)) != MF_OK)
        return st;
    if (backend == MF_BACKEND_CUDA)
        return mf_cuda_value_combine(v, p, group, out);
    return mf_cpu_value_combine(v, p, group, out);
}

static mf_status check_dense_dims(uint32_t rows, uint32_t tokens, uint32_t dim) {
    mf_desc d;
    memset(&d, 0, sizeof d);
    d.rows = rows;
    d.tokens = tokens;
    d.dim = dim;
    return mf_desc_check(&d, NULL);
}

mf_status mf_attend_workspace(mf_backend backend, const mf_desc *k, uint32_t group,
                              size_t *bytes) {
    mf_status st;
    if (!k || !bytes)
        return MF_ERR_NULL;
    if ((st = check_backend(backend, NULL)) != MF_OK)
        return st;
    if ((st = mf_desc_check(k, NULL)) != MF_OK)
        return st;
    if ((st = check_group(group, k->rows, NULL)) != MF_OK)
        return st;
    if (backend == MF_BACKEND_CUDA)
        return mf_cuda_attend_workspace(k, group, bytes);
    *bytes = mf_cpu_attend_workspace(k->rows, k->tokens, k->dim, group);
    return MF_OK;
}

mf_status mf_attend(mf_backend backend, const mf_ctensor *k, const mf_ctensor *v,
                    const uint16_t *q, uint32_t group, float *out, void *workspace,
                    size_t workspace_bytes) {
    return mf_attend_ex(backend, MF_KERNEL_REFERENCE, k, v, q, group, out, workspace,
                        workspace_bytes);
}

/* mf_attend_ex (wait 1) and mf_attend_async (wait 0). */
static mf_status attend(mf_backend backend, mf_kernel kernel, const mf_ctensor *k,
                        const mf_ctensor *v, const uint16_t *q, uint32_t group, float *out,
                        void *workspace, size_t workspace_bytes, int wait) {
    const mf_desc *kd, *vd;
    mf_status st;
    if (!k || !v || !q || !out || (!workspace && workspace_bytes))
        return MF_ERR_NULL;
    if ((st = check_backend(backend, NULL)) != MF_OK)
        return st;
    if (kernel != MF_KERNEL_REFERENCE && kernel != MF_KERNEL_TENSOR)
        return MF_ERR_ARG;
    if (kernel == MF_KERNEL_TENSOR && backend != MF_BACKEND_CUDA)
        return MF_ERR_UNSUPPORTED;
    if (backend == MF_BACKEND_CPU &&
        ((st = mf__check_structure(k, NULL)) != MF_OK ||
         (st = mf__check_structure(v, NULL)) != MF_OK))
        return st;
    kd = &k->desc;
    vd = &v->desc;
    if (kd->kind != MF_KEY || vd->kind != MF_VALUE)
        return MF_ERR_ARG;
    if (kd->rows != vd->rows || kd->tokens != vd->tokens || kd->dim != vd->dim)
        return MF_ERR_DIMS;
    if ((st = check_group(group, kd->rows, NULL)) != MF_OK)
        return st;
    if (kernel == MF_KERNEL_TENSOR)
        return mf_cuda_attend_tensor(k, v, q, group, out, workspace, workspace_bytes, wait);
    if (backend == MF_BACKEND_CUDA)
        return mf_cuda_attend(k, v, q, group, out, workspace, workspace_bytes, wait);
    return mf_cpu_attend(k, v, NULL, NULL, kd->rows, kd->tokens, kd->dim, q, group, out,
                         workspace, workspace_bytes);
}

mf_status mf_attend_ex(mf_backend backend, mf_kernel kernel, const mf_ctensor *k,
                       const mf_ctensor *v, const uint16_t *q, uint32_t group, float *out,
                       void *workspace, size_t workspace_bytes) {
    return attend(backend, kernel, k, v, q, group, out, workspace, workspace_bytes, 1);
}

mf_status mf_attend_async(mf_backend backend, mf_kernel kernel, const mf_ctensor *k,
                          const mf_ctensor *v, const uint16_t *q, uint32_t group, float *out,
                          void *workspace, size_t workspace_bytes) {
    return attend(backend, kernel, k, v, q, group, out, workspace, workspace_bytes, 0);
}

mf_status mf_attend_wait(mf_backend backend, void *workspace, size_t workspace_bytes) {
    mf_status st;
    if (!workspace && workspace_bytes)
        return MF_ERR_NULL;
    if ((st = check_backend(backend, NULL)) != MF_OK)
        return st;
    if (backend == MF_BACKEND_CPU)
        return MF_OK;
    if (!workspace || workspace_bytes < sizeof(unsigned))
        return MF_ERR_BUFFER_SMALL;
    return mf_cuda_attend_wait(workspace);
}

mf_status mf_attend_dense(mf_backend backend, const uint16_t *k, const uint16_t *v,
                          uint32_t rows, uint32_t tokens, uint32_t dim, const uint16_t *q,
                          uint32_t group, float *out, void *workspace, size_t workspace_bytes) {
    mf_status st;
    if (!k || !v || !q || !out || (!workspace && workspace_bytes))
        return MF_ERR_NULL;
    if ((st = check_backend(backend, NULL)) != MF_OK)
        return st;
    if ((st = check_dense_dims(rows, tokens, dim)) != MF_OK)
        return st;
    if ((st = check_group(group, rows, NULL)) != MF_OK)
        return st;
    if (backend == MF_BACKEND_CUDA)
        return mf_cuda_attend_dense(k, v, rows, tokens, dim, q, group, out, workspace,
                                    workspace_bytes);
    return mf_cpu_attend(NULL, NULL, k, v, rows, tokens, dim, q, group, out, workspace,
                         workspace_bytes);
}
