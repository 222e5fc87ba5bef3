/* validate.cu - core/validate.c on the device, with the same verdicts.
 *
 * The CPU checks in storage order and stops at the first problem. Here
 * every tile is checked at once and each failure is a 64-bit key (phase,
 * tile, step, status) whose minimum, kept with atomicMin, is the failure
 * the CPU meets first: phase 0 = scales of every tile, phase 1 = offsets
 * and payload unit by unit, phase 2 = the payload_words total.
 *
 * Scratch: [error key][unit words][unit starts (units+1)][scan temp]. */
#include "common.cuh"

#define KEY_NONE (~0ull)

__device__ static unsigned long long fail_key(uint32_t phase, uint64_t tile, uint32_t step,
                                              mf_status st) {
    return ((unsigned long long)phase << 60) | ((unsigned long long)tile << 7) |
           ((unsigned long long)step << 5) | (unsigned long long)st;
}

/* validate.c's check_scales for one tile. */
__device__ static mf_status check_scale(uint16_t sh, uint16_t zh, uint32_t bits) {
    float hi = (float)((1u << bits) - 1u), s = mf_h2f(sh), z = mf_h2f(zh);
    if (!mf_h_finite(sh) || !(s > 0.0f) || !mf_h_finite(zh))
        return MF_ERR_SCALE;
    if (!mf_h_finite(mf_dequant(0, s, z)) || !mf_h_finite(mf_f2h(MF_MUL(MF_SUB(hi, z), s))))
        return MF_ERR_SCALE;
    return MF_OK;
}

/* validate.c's check_offset: the first of its tests that fails. */
__device__ static mf_status check_offset(uint64_t idx, uint64_t off, uint64_t prev,
                                         uint64_t expected, uint64_t need, uint64_t words) {
    if (off > words || need > words - off)
        return MF_ERR_OFFSET_RANGE;
    if (idx == 0 && off != 0)
        return MF_ERR_OFFSET_RANGE;
    if (idx > 0 && off < prev)
        return MF_ERR_OFFSET_ORDER;
    if (off != expected)
        return MF_ERR_NNZ;
    return MF_OK;
}

/* validate.c's check_tile_payload; words > 0 and in range. */
__device__ static mf_status check_payload(const uint32_t *w, uint32_t nnz, uint32_t words,
                                          uint32_t bits) {
    uint32_t n;
    if (bits == 0) {
        for (n = 0; n < 2 * words; n++) {
            uint16_t h = (uint16_t)(w[n / 2] >> (16 * (n % 2)));
            if (n < nnz && (h & 0x7fffu) == 0)
                return MF_ERR_NNZ;
            if (n >= nnz && h != 0)
                return MF_ERR_PADDING;
        }
    } else {
        uint32_t cpw = mf_codes_per_word(bits), used = nnz % cpw;
        if (used && (w[words - 1] >> (used * bits)) != 0)
            return MF_ERR_PADDING;
    }
    return MF_OK;
}

/* Warp per unit: words of the unit, and phase 0 (scales) of its tiles. */
__global__ static void unit_words_kernel(mf_view c, uint64_t units, uint64_t *unit_words,
                                         unsigned long long *err) {
    uint64_t u = ((uint64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    uint32_t lane = threadIdx.x % 32, j;
    uint64_t sum = 0;
    if (u >= units)
        return;
    for (j = lane; j < c.dim; j += 32) {
        uint64_t t = u * c.dim + j;
        mf_status st;
        sum += mf_tile_words(mf_popcount64(c.bitmaps[t]), c.bits);
        if (c.bits && (st = check_scale(c.scales[t], c.zeros[t], c.bits)) != MF_OK)
            atomicMin(err, fail_key(0, t, 0, st));
    }
    for (j = 16; j; j >>= 1)
        sum += __shfl_xor_sync(0xffffffffu, sum, j);
    if (lane == 0)
        unit_words[u] = sum;
}

/* Warp per unit: phase 1. Lane l owns tiles [l*per, (l+1)*per), so a
 * warp scan of lane sums gives every tile's expected start. */
__global__ static void unit_check_kernel(mf_view c, uint64_t units, const uint64_t *unit_words,
                                         unsigned long long *err) {
    uint64_t u = ((uint64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    uint32_t lane = threadIdx.x % 32, per = c.dim / 32, k, d;
    uint64_t t0, mine = 0, start;
    if (u >= units)
        return;
    t0 = u * c.dim;
    for (k = 0; k < per; k++)
        mine += mf_tile_words(mf_popcount64(c.bitmaps[t0 + lane * per + k]), c.bits);
    start = mine;
    for (d = 1; d < 32; d <<= 1) {
        uint64_t x = __shfl_up_sync(0xffffffffu, start, d);
        if (lane >= d)
            start += x;
    }
    start = c.unit_start[u] + start - mine; /* exclusive */
    if (lane == 0 && c.layout == MF_LAYOUT_NATIVE) {
        mf_status st = check_offset(u, c.offsets[u], u ? c.offsets[u - 1] : 0, c.unit_start[u],
                                    unit_words[u], c.payload_words);
        if (st != MF_OK)
            atomicMin(err, fail_key(1, t0, 0, st));
    }
    for (k = 0; k < per; k++) {
        uint64_t t = t0 + lane * per + k;
        uint32_t nnz = mf_popcount64(c.bitmaps[t]), words = mf_tile_words(nnz, c.bits);
        mf_status st;
        if (c.layout == MF_LAYOUT_REFERENCE) {
            st = check_offset(t, c.offsets[t], t ? c.offsets[t - 1] : 0, start, words,
                              c.payload_words);
            if (st != MF_OK)
                atomicMin(err, fail_key(1, t, 1, st));
        }
        /* Out of range only when an offset check above (or the unit's) fails. */
        if (words && start <= c.payload_words && words <= c.payload_words - start &&
            (st = check_payload(c.payload + start, nnz, words, c.bits)) != MF_OK)
            atomicMin(err, fail_key(1, t, 2, st));
        start += words;
    }
}

__global__ static void total_kernel(const uint64_t *total, uint64_t payload_words,
                                    unsigned long long *err) {
    if (*total != payload_words)
        atomicMin(err, fail_key(2, 0, 0, MF_ERR_NNZ));
}

size_t mf__cu_validate_bytes(uint64_t units) {
    return 256 + mf__cu_align(units * 8) + mf__cu_align((units + 1) * 8) + mf__cu_scan_bytes(units);
}

mf_status mf__cu_validate_launch(const mf_ctensor *c, void *scratch, mf_view *view,
                                 mf_diag *diag) {
    const mf_desc *d;
    mf_sizes s;
    mf_status st;
    uint64_t units;
    unsigned long long *err = (unsigned long long *)scratch;
    uint64_t *words, *starts;
    /* The host-side checks are core's, so the messages are the same. */
    if ((st = mf__check_structure(c, diag)) != MF_OK)
        return st;
    d = &c->desc;
    mf_sizes_of(d, 0, &s);
    units = s.blocks * d->rows;
    words = (uint64_t *)((char *)scratch + 256);
    starts = (uint64_t *)((char *)words + mf__cu_align(units * 8));
    *view = mf__cu_view(c);
    view->unit_start = starts;
    MF_CU(cudaMemsetAsync(err, 0xff, sizeof *err));
    if (units) {
        unsigned grid = (unsigned)((units * 32 + 255) / 256);
        unit_words_kernel<<<grid, 256>>>(*view, units, words, err);
        MF_CU_LAUNCHED();
        if ((st = mf__cu_scan(words, starts, units,
                              (char *)starts + mf__cu_align((units + 1) * 8))) != MF_OK)
            return st;
        unit_check_kernel<<<grid, 256>>>(*view, units, words, err);
        MF_CU_LAUNCHED();
    } else {
        MF_CU(cudaMemsetAsync(starts, 0, sizeof *starts));
    }
    total_kernel<<<1, 1>>>(starts + units, c->payload_words, err);
    MF_CU_LAUNCHED();
    return MF_OK;
}

mf_status mf__cu_validate_result(const void *scratch, mf_diag *diag) {
    static const char *const what[3][3] = {
        {"scale or zero point", "", ""},
        {"unit offset", "tile offset", "tile payload"},
        {"payload_words total", "", ""}};
    unsigned long long key;
    uint32_t phase, step;
    MF_CU(cudaMemcpy(&key, scratch, sizeof key, cudaMemcpyDeviceToHost));
    if (key == KEY_NONE)
        return MF_OK;
    phase = (uint32_t)(key >> 60);
    step = (uint32_t)(key >> 5) & 3u;
    return mf__fail(diag, (mf_status)(key & 31u), "tile %llu: %s check failed: %s (device validator)",
                    (unsigned long long)((key >> 7) & ((1ull << 53) - 1)), what[phase][step],
                    mf_strerror((mf_status)(key & 31u)));
}
