/* memory.c - buffers and compressed tensors in a backend's memory.
 *
 * The CPU path is malloc/memcpy; the CUDA path calls backends/cuda (stubs
 * answering MF_ERR_NO_DEVICE in builds without nvcc). Tensor copies are
 * written once, on top of the four buffer operations. */
#include <stdlib.h>
#include <string.h>

#include "../core/internal.h"
#include "cuda/cuda.h"

static mf_status check_backend(mf_backend backend) {
    if (backend == MF_BACKEND_CPU)
        return MF_OK;
    if (backend != MF_BACKEND_CUDA)
        return MF_ERR_ARG;
    return mf_cuda_available() ? MF_OK : MF_ERR_NO_DEVICE;
}

mf_status mf_buffer_alloc(mf_backend backend, size_t bytes, void **ptr) {
    mf_status st;
    if (!ptr)
        return MF_ERR_NULL;
    *ptr = NULL;
    if ((st = check_backend(backend)) != MF_OK)
        return st;
    if (backend == MF_BACKEND_CUDA)
        return mf_cuda_alloc(bytes, ptr);
    /* a zero-byte request still gets a valid pointer */
    *ptr = calloc(bytes ? bytes : 1, 1);
    return *ptr ? MF_OK : MF_ERR_NOMEM;
}

mf_status mf_buffer_free(mf_backend backend, void *ptr) {
    mf_status st;
    if (!ptr)
        return MF_OK;
    if ((st = check_backend(backend)) != MF_OK)
        return st;
    if (backend == MF_BACKEND_CUDA)
        return mf_cuda_free(ptr);
    free(ptr);
    return MF_OK;
}

/* One copy between the host and the backend, either way. */
static mf_status copy(mf_backend backend, void *dst, const void *src, size_t bytes, int upload) {
    mf_status st;
    if (bytes && (!dst || !src))
        return MF_ERR_NULL;
    if ((st = check_backend(backend)) != MF_OK)
        return st;
    if (!bytes)
        return MF_OK;
    if (backend == MF_BACKEND_CUDA)
        return upload ? mf_cuda_upload(dst, src, bytes) : mf_cuda_download(dst, src, bytes);
    memcpy(dst, src, bytes);
    return MF_OK;
}

mf_status mf_buffer_upload(mf_backend backend, void *dst, const void *src_host, size_t bytes) {
    return copy(backend, dst, src_host, bytes, 1);
}

mf_status mf_buffer_download(mf_backend backend, void *dst_host, const void *src, size_t bytes) {
    return copy(backend, dst_host, src, bytes, 0);
}

/* The arrays of a tensor with their element counts and sizes, so every
 * copy below is one loop. */
typedef struct arrays {
    void **p[6];
    uint64_t n[6];
    size_t sz[6];
} arrays;

static mf_status arrays_of(mf_ctensor *c, uint64_t payload, arrays *a) {
    mf_sizes s;
    mf_status st = mf_sizes_of(&c->desc, 0, &s);
    uint64_t q = c->desc.bits ? s.tiles : 0;
    if (st != MF_OK)
        return st;
    a->p[0] = (void **)&c->bitmaps, a->n[0] = s.tiles, a->sz[0] = sizeof *c->bitmaps;
    a->p[1] = (void **)&c->offsets, a->n[1] = s.offsets, a->sz[1] = sizeof *c->offsets;
    a->p[2] = (void **)&c->scales, a->n[2] = q, a->sz[2] = sizeof *c->scales;
    a->p[3] = (void **)&c->zeros, a->n[3] = q, a->sz[3] = sizeof *c->zeros;
    a->p[4] = (void **)&c->payload, a->n[4] = payload, a->sz[4] = sizeof *c->payload;
    a->p[5] = (void **)&c->window, a->n[5] = s.window, a->sz[5] = sizeof *c->window;
    return MF_OK;
}

mf_status mf_ctensor_free_on(mf_backend backend, mf_ctensor *c) {
    void **p[6];
    mf_status st = MF_OK, st2;
    int i;
    if (!c)
        return MF_OK;
    p[0] = (void **)&c->bitmaps, p[1] = (void **)&c->offsets, p[2] = (void **)&c->scales;
    p[3] = (void **)&c->zeros, p[4] = (void **)&c->payload, p[5] = (void **)&c->window;
    for (i = 0; i < 6; i++) {
        if ((st2 = mf_buffer_free(backend, *p[i])) != MF_OK)
            st = st2;
        *p[i] = NULL;
    }
    c->payload_words = 0;
    return st;
}

mf_status mf_ctensor_alloc_on(mf_backend backend, mf_ctensor *c, const mf_desc *desc,
                              uint64_t capacity) {
    arrays a;
    mf_status st;
    int i;
    if (!c || !desc)
        return MF_ERR_NULL;
    memset(c, 0, sizeof *c);
    c->desc = *desc;
    if ((st = arrays_of(c, capacity, &a)) != MF_OK)
        return st;
    for (i = 0; i < 6; i++) {
        uint64_t bytes;
        if (i >= 2 && i <= 3 && !desc->bits)
            continue; /* unquantized: scales and zeros stay NULL */
        if (!mf__mul64(a.n[i], a.sz[i], &bytes) || bytes > (uint64_t)SIZE_MAX)
            st = MF_ERR_OVERFLOW;
        else
            st = mf_buffer_alloc(backend, (size_t)bytes, a.p[i]);
        if (st != MF_OK) {
            mf_ctensor_free_on(backend, c);
            return st;
        }
    }
    return MF_OK;
}

/* Copies every array of src into dst (same desc, dst allocated). */
static mf_status copy_arrays(mf_backend backend, int upload, const mf_ctensor *src,
                             mf_ctensor *dst) {
    arrays as, ad;
    mf_status st;
    int i;
    if ((st = arrays_of((mf_ctensor *)src, src->payload_words, &as)) != MF_OK ||
        (st = arrays_of(dst, src->payload_words, &ad)) != MF_OK)
        return st;
    for (i = 0; i < 6; i++) {
        size_t bytes = (size_t)(as.n[i] * as.sz[i]);
        if (!bytes)
            continue;
        st = upload ? mf_buffer_upload(backend, *ad.p[i], *as.p[i], bytes)
                    : mf_buffer_download(backend, *ad.p[i], *as.p[i], bytes);
        if (st != MF_OK)
            return st;
    }
    dst->payload_words = src->payload_words;
    return MF_OK;
}

mf_status mf_ctensor_upload(mf_backend backend, const mf_ctensor *host, mf_ctensor *dev) {
    mf_status st;
    if (!host || !dev)
        return MF_ERR_NULL;
    if ((st = mf_ctensor_alloc_on(backend, dev, &host->desc, host->payload_words)) != MF_OK)
        return st;
    if ((st = copy_arrays(backend, 1, host, dev)) != MF_OK)
        mf_ctensor_free_on(backend, dev);
    return st;
}

mf_status mf_ctensor_download(mf_backend backend, const mf_ctensor *dev, mf_ctensor *host) {
    mf_status st;
    if (!dev || !host)
        return MF_ERR_NULL;
    if ((st = check_backend(backend)) != MF_OK)
        return st;
    if ((st = mf_ctensor_alloc(host, &dev->desc, dev->payload_words)) != MF_OK)
        return st;
    if ((st = copy_arrays(backend, 0, dev, host)) != MF_OK)
        mf_ctensor_free(host);
    return st;
}
