/* cuda_floor.cu - what the CUDA calls around a kernel cost on this host,
 * with empty kernels: the fixed part of every mf_attend_ex / mf_encode_ex
 * call (flag clear, launches, the synchronous read-back of a result word).
 * Prints a table of host microseconds per call, mean of 2,000.
 * usage: mustafar-cuda-floor */
#include <chrono>
#include <cstdio>

#include <cuda_runtime.h>

__global__ static void empty_kernel(unsigned *p) {
    if (p && threadIdx.x == 0)
        p[1] = 0;
}

static double now(void) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

#define REPS 2000
#define ROW(name, ...)                                                                 \
    do {                                                                               \
        double t0;                                                                     \
        int i;                                                                         \
        for (i = 0; i < 20; i++) {                                                     \
            __VA_ARGS__;                                                               \
        }                                                                              \
        cudaDeviceSynchronize();                                                       \
        t0 = now();                                                                    \
        for (i = 0; i < REPS; i++) {                                                   \
            __VA_ARGS__;                                                               \
        }                                                                              \
        cudaDeviceSynchronize();                                                       \
        printf("| %-58s | %6.2f |\n", name, (now() - t0) / REPS * 1e6);               \
    } while (0)

int main(void) {
    unsigned *flag = NULL, *pinned = NULL, h = 0;
    int sms = 0, occ = 0;
    cudaFuncAttributes fa;
    cudaDeviceProp prop;
    if (cudaMalloc(&flag, 256) != cudaSuccess || cudaMallocHost(&pinned, 64) != cudaSuccess ||
        cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
        fprintf(stderr, "mustafar-cuda-floor: no usable CUDA device\n");
        return 1;
    }
    printf("# %s\n| call (empty kernels) | us |\n|---|---:|\n", prop.name);
    /* the launches as the tensor attention makes them (backends/cuda/tensor.cu) */
    cudaLaunchConfig_t plain = {}, pdl;
    cudaLaunchAttribute at;
    void *args[1] = {&flag};
    at.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at.val.programmaticStreamSerializationAllowed = 1;
    plain.gridDim = dim3(1);
    plain.blockDim = dim3(32);
    pdl = plain;
    pdl.attrs = &at;
    pdl.numAttrs = 1;
    ROW("cudaDeviceGetAttribute (SM count)",
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    ROW("cudaOccupancyMaxActiveBlocksPerMultiprocessor",
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, (const void *)empty_kernel, 128, 0));
    ROW("cudaFuncGetAttributes", cudaFuncGetAttributes(&fa, (const void *)empty_kernel));
    ROW("cudaFuncSetAttribute (max dynamic shared memory)",
        cudaFuncSetAttribute((const void *)empty_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 1024));
    ROW("cudaMemsetAsync of 4 bytes", cudaMemsetAsync(flag, 0, 4));
    ROW("kernel launch (no wait)", empty_kernel<<<1, 32>>>(flag));
    ROW("cudaLaunchKernelExC, no attributes", cudaLaunchKernelExC(&plain, (const void *)empty_kernel, args));
    ROW("cudaLaunchKernelExC, programmatic stream serialization",
        cudaLaunchKernelExC(&pdl, (const void *)empty_kernel, args));
    ROW("kernel launch + cudaStreamSynchronize",
        empty_kernel<<<1, 32>>>(flag); cudaStreamSynchronize(0));
    ROW("memset + 2 launches + 4-byte cudaMemcpy read-back",
        cudaMemsetAsync(flag, 0, 4); empty_kernel<<<1, 32>>>(flag); empty_kernel<<<1, 32>>>(flag);
        cudaMemcpy(&h, flag, 4, cudaMemcpyDeviceToHost));
    ROW("the same, read back into pinned memory",
        cudaMemsetAsync(flag, 0, 4); empty_kernel<<<1, 32>>>(flag); empty_kernel<<<1, 32>>>(flag);
        cudaMemcpyAsync(pinned, flag, 4, cudaMemcpyDeviceToHost); cudaStreamSynchronize(0));
    cudaFree(flag);
    cudaFreeHost(pinned);
    return 0;
}
