/* runtime.cu - device presence, device memory, views and the prefix sum. */
#include <cub/device/device_scan.cuh>

#include "common.cuh"

/* The first usable device, or why there is none: asked afresh each time so
 * the library keeps no state. */
static cudaError_t probe(void) {
    int n = 0, major = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess)
        return e;
    if (n == 0)
        return cudaErrorNoDevice;
    e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0);
    if (e != cudaSuccess)
        return e;
    return major >= 8 ? cudaSuccess : cudaErrorNoKernelImageForDevice;
}

extern "C" int mf_cuda_available(void) { return probe() == cudaSuccess; }

extern "C" const char *mf_cuda_unavailable_reason(void) {
    cudaError_t e = probe();
    if (e == cudaSuccess)
        return "a CUDA device is available";
    if (e == cudaErrorNoKernelImageForDevice)
        return "the CUDA device is older than compute capability 8.0 (sm_80)";
    /* a static string of the runtime, e.g. "no CUDA-capable device is detected" */
    return cudaGetErrorString(e);
}

extern "C" mf_status mf_cuda_alloc(size_t bytes, void **ptr) {
    cudaError_t e = cudaMalloc(ptr, bytes ? bytes : 1);
    if (e == cudaErrorMemoryAllocation) {
        cudaGetLastError(); /* clear it: not sticky */
        *ptr = NULL;
        return MF_ERR_NOMEM;
    }
    if (e != cudaSuccess) {
        *ptr = NULL;
        return MF_ERR_DEVICE;
    }
    if (cudaMemset(*ptr, 0, bytes ? bytes : 1) != cudaSuccess) {
        cudaFree(*ptr);
        *ptr = NULL;
        return MF_ERR_DEVICE;
    }
    return MF_OK;
}

extern "C" mf_status mf_cuda_free(void *ptr) {
    return cudaFree(ptr) == cudaSuccess ? MF_OK : MF_ERR_DEVICE;
}

extern "C" mf_status mf_cuda_upload(void *dst, const void *src_host, size_t bytes) {
    return cudaMemcpy(dst, src_host, bytes, cudaMemcpyHostToDevice) == cudaSuccess
               ? MF_OK
               : MF_ERR_DEVICE;
}

extern "C" mf_status mf_cuda_download(void *dst_host, const void *src, size_t bytes) {
    return cudaMemcpy(dst_host, src, bytes, cudaMemcpyDeviceToHost) == cudaSuccess
               ? MF_OK
               : MF_ERR_DEVICE;
}

mf_view mf__cu_view(const mf_ctensor *c) {
    mf_view v;
    v.bitmaps = c->bitmaps;
    v.offsets = c->offsets;
    v.scales = c->scales;
    v.zeros = c->zeros;
    v.payload = c->payload;
    v.window = c->window;
    v.unit_start = NULL;
    v.bad = NULL;
    v.payload_words = c->payload_words;
    v.blocks = c->desc.tokens / MF_TILE;
    v.kind = c->desc.kind;
    v.layout = c->desc.layout;
    v.bits = c->desc.bits;
    v.rows = c->desc.rows;
    v.tokens = c->desc.tokens;
    v.dim = c->desc.dim;
    return v;
}

size_t mf__cu_scan_bytes(uint64_t n) {
    size_t bytes = 0;
    cub::DeviceScan::InclusiveSum(NULL, bytes, (const uint64_t *)NULL, (uint64_t *)NULL,
                                  (int64_t)(n ? n : 1));
    return mf__cu_align(bytes);
}

mf_status mf__cu_scan(const uint64_t *in, uint64_t *out, uint64_t n, void *tmp) {
    size_t bytes = mf__cu_scan_bytes(n);
    MF_CU(cudaMemsetAsync(out, 0, sizeof *out));
    if (n)
        MF_CU(cub::DeviceScan::InclusiveSum(tmp, bytes, in, out + 1, (int64_t)n));
    return MF_OK;
}

cudaError_t mf__cu_launch(const void *fn, uint32_t blocks, uint32_t threads, size_t smem, int pdl,
                          void **args) {
    cudaLaunchConfig_t cfg = {};
    cudaLaunchAttribute at;
    at.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at.val.programmaticStreamSerializationAllowed = 1;
    cfg.gridDim = dim3(blocks);
    cfg.blockDim = dim3(threads);
    cfg.dynamicSmemBytes = smem;
    cfg.attrs = &at;
    cfg.numAttrs = pdl ? 1 : 0;
    return cudaLaunchKernelExC(&cfg, fn, args);
}

mf_status mf__cu_compute_view(const mf_ctensor *c, unsigned *bad, mf_view *view) {
    mf_status st = mf__check_structure(c, NULL);
    if (st != MF_OK)
        return st;
    *view = mf__cu_view(c);
    view->bad = bad;
    return MF_OK;
}

mf_status mf__cu_flag_clear(unsigned *bad) {
    MF_CU(cudaMemsetAsync(bad, 0, sizeof *bad));
    return MF_OK;
}

mf_status mf__cu_flag_result(const unsigned *bad) {
    unsigned flag = 0;
    MF_CU(cudaMemcpy(&flag, bad, sizeof flag, cudaMemcpyDeviceToHost));
    return flag ? MF_ERR_OFFSET_RANGE : MF_OK;
}
