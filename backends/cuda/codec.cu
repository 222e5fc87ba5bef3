/* codec.cu - the encoder and decoder on the device.
 *
 * Encoding is the CPU's two passes (backends/cpu/codec.c), one block per
 * (row, block) unit: (1) prune each token row, build bitmaps, scales,
 * zeros and the unit's payload size; a prefix sum over units; (2) write
 * offsets and pack the payload. Pruning keeps core/encode.c's rule: the
 * `keep` largest magnitudes, ties to the lowest channels, never a zero.
 * Errors are keyed like the CPU's scan order so the same one is reported. */
#include "common.cuh"

#define THREADS 256
#define KEY_NONE (~0ull)

/* Unit u of the storage order -> (row, block), as unit_coords in codec.c. */
__device__ static void unit_coords(const mf_view &c, uint64_t u, uint32_t *row, uint64_t *block) {
    if (c.layout == MF_LAYOUT_NATIVE) {
        *block = u / c.rows;
        *row = (uint32_t)(u % c.rows);
    } else {
        *row = (uint32_t)(u / c.blocks);
        *block = u % c.blocks;
    }
}

/* The unit's 64 x dim dense input into shared memory (16-byte aligned).
 * Every load of a thread is issued before its first store: the input is
 * read once per unit, and a loop of dependent 2-byte loads spent most of
 * the encoder's time waiting on memory. */
__device__ static void load_block(const mf_view &c, const uint16_t *dense, uint64_t u,
                                  uint16_t *blk) {
    uint32_t row, i, k, n = MF_TILE * c.dim;
    uint64_t block;
    const uint16_t *src;
    unit_coords(c, u, &row, &block);
    src = dense + ((uint64_t)row * c.tokens + block * MF_TILE) * c.dim;
    if ((uintptr_t)src % 16u == 0) {
        const uint4 *s4 = (const uint4 *)src;
        uint4 *d4 = (uint4 *)blk, v[8];
        for (i = threadIdx.x; i < n / 8; i += 8 * blockDim.x) {
#pragma unroll
            for (k = 0; k < 8; k++)
                if (i + k * blockDim.x < n / 8)
                    v[k] = s4[i + k * blockDim.x];
#pragma unroll
            for (k = 0; k < 8; k++)
                if (i + k * blockDim.x < n / 8)
                    d4[i + k * blockDim.x] = v[k];
        }
    } else {
        for (i = threadIdx.x; i < n; i += blockDim.x)
            blk[i] = src[i];
    }
    __syncthreads();
}

__device__ static uint32_t warp_sum(uint32_t x) { return __reduce_add_sync(0xffffffffu, x); }

/* Keep mask of token row x (dim channels) by one warp: mask[cb] for each
 * 64-channel block, as mf__prune_row. Returns the first non-finite
 * channel + 1, or 0. Lane l holds channels l + 32k. */
__device__ static uint32_t prune_row(const uint16_t *x, uint32_t dim, uint32_t keep,
                                     uint64_t *mask) {
    uint32_t lane = threadIdx.x % 32, slices = dim / 32, k, lo, hi, nz = 0, need, before = 0;
    uint32_t mag[8], bad = 0;
#pragma unroll
    for (k = 0; k < 8; k++) {
        mag[k] = k < slices ? mf_h_mag(x[lane + 32 * k]) : 0;
        if (k < slices && mag[k] >= 0x7c00u && !bad)
            bad = lane + 32 * k + 1;
        nz += mag[k] != 0;
    }
    bad = __reduce_min_sync(0xffffffffu, bad ? bad : 0xffffffffu);
    if (bad != 0xffffffffu)
        return bad;
    nz = warp_sum(nz);
    lo = 0; /* keep >= nz: every nonzero, i.e. magnitudes > 0 */
    need = 0;
    if (keep == 0) {
        lo = 0x7c00u; /* nothing is above the largest finite magnitude */
    } else if (keep < nz) {
        /* Largest threshold t with at least `keep` magnitudes >= t. */
        lo = 1;
        hi = 0x7c00u;
        while (hi - lo > 1) {
            uint32_t mid = (lo + hi) / 2, cnt = 0;
#pragma unroll
            for (k = 0; k < 8; k++)
                cnt += mag[k] >= mid; /* unused slices hold 0 < mid */
            if (warp_sum(cnt) >= keep)
                lo = mid;
            else
                hi = mid;
        }
#pragma unroll
        for (k = 0; k < 8; k++)
            need += mag[k] > lo;
        need = keep - warp_sum(need);
    }
    /* Above the threshold: kept; ties at it: the lowest `need` channels. */
#pragma unroll
    for (k = 0; k < 8; k += 2) {
        uint32_t b[2], s;
        if (k >= slices)
            break;
#pragma unroll
        for (s = 0; s < 2; s++) {
            uint32_t m = mag[k + s];
            uint32_t tie = __ballot_sync(0xffffffffu, m == lo && lo != 0);
            uint32_t rank = before + __popc(tie & ((1u << lane) - 1u));
            b[s] = __ballot_sync(0xffffffffu, m > lo || (m == lo && lo != 0 && rank < need));
            before += __popc(tie);
        }
        /* channel i of the block is bit 63 - i */
        mask[k / 2] = ((uint64_t)__brev(b[0]) << 32) | __brev(b[1]);
    }
    return 0;
}

/* Pass 1: bitmaps, scales, zeros and payload words of unit blockIdx.x. */
__global__ static void __launch_bounds__(THREADS)
    encode_tiles_kernel(mf_view c, uint64_t *bitmaps, uint16_t *scales, uint16_t *zeros,
                        const uint16_t *dense, uint32_t keep, uint64_t *unit_words,
                        unsigned long long *err) {
    extern __shared__ uint4 blk4[]; /* the unit's input, MF_TILE * dim halves */
    uint16_t *blk = (uint16_t *)blk4;
    __shared__ uint64_t masks[MF_TILE][4]; /* [token][channel block] */
    __shared__ uint32_t words[THREADS / 32];
    __shared__ int bad;
    uint64_t u = blockIdx.x, t0 = u * c.dim;
    uint32_t warp = threadIdx.x / 32, t, j, w = 0;
    if (threadIdx.x == 0)
        bad = 0;
    load_block(c, dense, u, blk);
    for (t = warp; t < MF_TILE; t += THREADS / 32) {
        uint32_t r = prune_row(blk + t * c.dim, c.dim, keep, masks[t]);
        if (r && threadIdx.x % 32 == 0) {
            bad = 1;
            atomicMin(err, u * MF_TILE * c.dim + t * c.dim + r - 1);
        }
    }
    __syncthreads();
    if (bad)
        return;
    for (j = threadIdx.x; j < c.dim; j += THREADS) {
        uint64_t bm = 0;
        if (c.kind == MF_KEY) {
            for (t = 0; t < MF_TILE; t++)
                bm |= ((masks[t][j / 64] >> (63 - j % 64)) & 1u) << (63 - t);
        } else {
            bm = masks[j % 64][j / 64];
        }
        bitmaps[t0 + j] = bm;
        w += mf_tile_words(mf_popcount64(bm), c.bits);
        if (c.bits) {
            /* min and max in value order (signed-integer order of fp16) */
            int32_t lo = 0, hi = 0;
            int first = 1;
            uint64_t rest = bm;
            while (rest) {
                uint32_t i = __clzll(rest), tok, ch;
                uint16_t h;
                int32_t key;
                rest &= ~(1ull << (63 - i));
                mf_tile_elem(c.kind, j, i, &tok, &ch);
                h = blk[tok * c.dim + ch];
                key = (h & 0x8000u) ? -(int32_t)(h & 0x7fffu) : (int32_t)h;
                if (first || key < lo)
                    lo = key;
                if (first || key > hi)
                    hi = key;
                first = 0;
            }
            mf_quant_params(mf_h2f(lo < 0 ? (uint16_t)(0x8000u | (uint32_t)-lo) : (uint16_t)lo),
                            mf_h2f(hi < 0 ? (uint16_t)(0x8000u | (uint32_t)-hi) : (uint16_t)hi),
                            c.bits, &scales[t0 + j], &zeros[t0 + j]);
        }
    }
    w = warp_sum(w);
    if (threadIdx.x % 32 == 0)
        words[warp] = w;
    __syncthreads();
    if (threadIdx.x == 0) {
        uint64_t total = 0;
        for (j = 0; j < THREADS / 32; j++)
            total += words[j];
        unit_words[u] = total;
    }
}

/* The dense window, copied as is; non-finite values are errors. */
__global__ static void window_kernel(mf_view c, uint16_t *window, const uint16_t *dense,
                                     unsigned long long *err) {
    uint64_t wt = c.tokens % MF_TILE, n = (uint64_t)c.rows * wt * c.dim;
    uint64_t w = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    uint64_t r, rest;
    uint16_t h;
    if (w >= n)
        return;
    r = w / (wt * c.dim);
    rest = w % (wt * c.dim);
    h = dense[(r * c.tokens + c.blocks * MF_TILE) * c.dim + rest];
    if (!mf_h_finite(h))
        atomicMin(err, w);
    window[w] = h;
}

/* Pass 2: offsets and payload of unit blockIdx.x; thread j packs tile j. */
__global__ static void __launch_bounds__(THREADS)
    encode_pack_kernel(mf_view c, uint32_t *offsets, uint32_t *payload, const uint16_t *dense) {
    extern __shared__ uint4 blk4[]; /* the unit's input, MF_TILE * dim halves */
    uint16_t *blk = (uint16_t *)blk4;
    __shared__ uint64_t starts[256];
    uint64_t u = blockIdx.x, t0 = u * c.dim;
    uint32_t j;
    load_block(c, dense, u, blk);
    mf_cu_unit_starts(c, u, starts);
    if (c.layout == MF_LAYOUT_NATIVE && threadIdx.x == 0)
        offsets[u] = (uint32_t)c.unit_start[u];
    for (j = threadIdx.x; j < c.dim; j += THREADS) {
        uint64_t bm = c.bitmaps[t0 + j];
        uint32_t *w = payload + starts[j], n = 0, acc = 0;
        uint32_t per = c.bits ? mf_codes_per_word(c.bits) : 2u, width = c.bits ? c.bits : 16u;
        float s = c.bits ? mf_h2f(c.scales[t0 + j]) : 0.0f, z = c.bits ? mf_h2f(c.zeros[t0 + j]) : 0.0f;
        uint32_t words = mf_tile_words(mf_popcount64(bm), c.bits), k;
        if (c.layout == MF_LAYOUT_REFERENCE)
            offsets[t0 + j] = (uint32_t)starts[j];
        while (bm) {
            uint32_t i = __clzll(bm), tok, ch, v;
            bm &= ~(1ull << (63 - i));
            mf_tile_elem(c.kind, j, i, &tok, &ch);
            v = blk[tok * c.dim + ch];
            if (c.bits)
                v = mf_quant_code(mf_h2f((uint16_t)v), s, z, c.bits);
            acc |= v << ((n % per) * width);
            if (++n % per == 0) {
                w[n / per - 1] = acc;
                acc = 0;
            }
        }
        /* the partial last word, then fp16 padding words */
        k = n / per;
        if (n % per)
            w[k++] = acc;
        for (; k < words; k++)
            w[k] = 0;
    }
}

/* Encoder scratch for `units` units: the two error keys and the payload
 * total (read back together), then per-unit word counts, their prefix sum
 * and the scan's temporary. */
static size_t encode_scratch(uint64_t units) {
    return 512 + mf__cu_align(units * 8) + mf__cu_align((units + 1) * 8) + mf__cu_scan_bytes(units);
}

extern "C" mf_status mf_cuda_encode_workspace(const mf_desc *d, size_t *bytes) {
    mf_sizes s;
    mf_sizes_of(d, 0, &s);
    *bytes = encode_scratch(s.blocks * d->rows);
    return MF_OK;
}

__global__ static void copy_total_kernel(const uint64_t *total, unsigned long long *dst) {
    *dst = *total;
}

extern "C" mf_status mf_cuda_encode(const uint16_t *dense, uint32_t keep, mf_ctensor *out,
                                    uint64_t capacity, void *workspace, size_t workspace_bytes,
                                    mf_diag *diag) {
    const mf_desc *d = &out->desc;
    mf_sizes s;
    mf_view v;
    mf_status st = MF_OK;
    uint64_t units, total;
    unsigned long long key[3];
    char *scratch = (char *)workspace;
    uint64_t *words, *starts;
    size_t bytes;
    mf_sizes_of(d, 0, &s);
    units = s.blocks * d->rows;
    bytes = encode_scratch(units);
    if (workspace && workspace_bytes < bytes)
        return mf__fail(diag, MF_ERR_BUFFER_SMALL, "encode workspace has %zu bytes, needs %zu",
                        workspace_bytes, bytes);
    if (!workspace && (st = mf_cuda_alloc(bytes, (void **)&scratch)) != MF_OK)
        return st;
    words = (uint64_t *)(scratch + 512);
    starts = (uint64_t *)((char *)words + mf__cu_align(units * 8));
    v = mf__cu_view(out);
    v.unit_start = starts;
    if (cudaMemsetAsync(scratch, 0xff, 16) != cudaSuccess)
        goto device;
    if (s.window) {
        window_kernel<<<(unsigned)((s.window + 255) / 256), 256>>>(
            v, out->window, dense, (unsigned long long *)scratch);
        if (cudaGetLastError() != cudaSuccess)
            goto device;
    }
    if (units) {
        encode_tiles_kernel<<<(unsigned)units, THREADS, MF_TILE * d->dim * 2>>>(
            v, out->bitmaps, out->scales, out->zeros, dense, keep, words,
            (unsigned long long *)scratch + 1);
        if (cudaGetLastError() != cudaSuccess)
            goto device;
    }
    /* One read-back for the keys and the total: a scan of words that a
     * non-finite input left incomplete is computed, then ignored. */
    if (mf__cu_scan(words, starts, units, (char *)starts + mf__cu_align((units + 1) * 8)) != MF_OK)
        goto device;
    copy_total_kernel<<<1, 1>>>(starts + units, (unsigned long long *)scratch + 2);
    if (cudaGetLastError() != cudaSuccess ||
        cudaMemcpy(key, scratch, sizeof key, cudaMemcpyDeviceToHost) != cudaSuccess)
        goto device;
    if (key[0] != KEY_NONE) {
        uint64_t wt = s.window_tokens, r = key[0] / (wt * d->dim), rest = key[0] % (wt * d->dim);
        uint16_t h = 0;
        cudaMemcpy(&h, dense + (r * d->tokens + s.blocks * MF_TILE) * d->dim + rest, 2,
                   cudaMemcpyDeviceToHost);
        st = mf__fail(diag, MF_ERR_NONFINITE, "input[%llu][%llu][%llu] is 0x%04x (NaN or inf)",
                      (unsigned long long)r, (unsigned long long)(s.blocks * MF_TILE + rest / d->dim),
                      (unsigned long long)(rest % d->dim), h);
        goto done;
    }
    if (key[1] != KEY_NONE) {
        uint64_t e = key[1], u = e / (MF_TILE * d->dim);
        uint64_t bad = e % (MF_TILE * d->dim), block;
        uint32_t row;
        if (d->layout == MF_LAYOUT_NATIVE)
            block = u / d->rows, row = (uint32_t)(u % d->rows);
        else
            row = (uint32_t)(u / s.blocks), block = u % s.blocks;
        st = mf__fail(diag, MF_ERR_NONFINITE, "input[%u][%llu][%lu] is NaN or inf", row,
                      (unsigned long long)(block * MF_TILE + bad / d->dim),
                      (unsigned long)(bad % d->dim));
        goto done;
    }
    total = key[2];
    if (total > UINT32_MAX) {
        st = mf__fail(diag, MF_ERR_LIMIT, "payload exceeds 2^32-1 words (uint32 offsets)");
        goto done;
    }
    if (total > capacity) {
        st = mf__fail(diag, MF_ERR_BUFFER_SMALL, "payload needs %llu words, capacity is %llu",
                      (unsigned long long)total, (unsigned long long)capacity);
        goto done;
    }
    v.payload_words = total;
    if (units) {
        encode_pack_kernel<<<(unsigned)units, THREADS, MF_TILE * d->dim * 2>>>(
            v, out->offsets, out->payload, dense);
        if (cudaGetLastError() != cudaSuccess || cudaDeviceSynchronize() != cudaSuccess)
            goto device;
    }
    out->payload_words = total;
    goto done;
device:
    st = mf__fail(diag, MF_ERR_DEVICE, "a CUDA call failed while encoding");
done:
    if (!workspace)
        cudaFree(scratch);
    return st;
}

/* Block per unit: every dense element of the unit from its tile. */
__global__ static void __launch_bounds__(THREADS) decode_kernel(mf_view c, uint16_t *dense) {
    __shared__ uint64_t starts[256];
    uint64_t u = blockIdx.x, block;
    uint32_t row, e;
    uint16_t *dst;
    unit_coords(c, u, &row, &block);
    mf_cu_unit_starts(c, u, starts);
    dst = dense + ((uint64_t)row * c.tokens + block * MF_TILE) * c.dim;
    for (e = threadIdx.x; e < MF_TILE * c.dim; e += THREADS) {
        uint32_t j, i;
        mf_cu_elem_tile(c.kind, e / c.dim, e % c.dim, &j, &i);
        dst[e] = mf_cu_tile_value(c, u * c.dim + j, starts[j], i);
    }
}

extern "C" mf_status mf_cuda_decode(const mf_ctensor *c, uint16_t *dense, mf_diag *diag) {
    mf_sizes s;
    mf_view v;
    mf_status st;
    void *scratch = NULL;
    uint64_t units;
    if ((st = mf_desc_check(&c->desc, diag)) != MF_OK)
        return st;
    mf_sizes_of(&c->desc, 0, &s);
    units = s.blocks * c->desc.rows;
    if ((st = mf_cuda_alloc(mf__cu_validate_bytes(units), &scratch)) != MF_OK)
        return st;
    if ((st = mf__cu_validate_launch(c, scratch, &v, diag)) == MF_OK) {
        size_t pitch = (size_t)c->desc.tokens * c->desc.dim * 2, wbytes = s.window_tokens * c->desc.dim * 2;
        if (units)
            decode_kernel<<<(unsigned)units, THREADS>>>(v, dense);
        if (cudaGetLastError() != cudaSuccess ||
            (wbytes && cudaMemcpy2D(dense + s.blocks * MF_TILE * c->desc.dim, pitch, c->window,
                                    wbytes, wbytes, c->desc.rows,
                                    cudaMemcpyDeviceToDevice) != cudaSuccess))
            st = mf__fail(diag, MF_ERR_DEVICE, "a CUDA call failed while decoding");
        else
            st = mf__cu_validate_result(scratch, diag);
    }
    cudaFree(scratch);
    return st;
}
