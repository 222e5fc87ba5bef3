/* attend.cu - reference key scores, value combine and decode attention.
 *
 * Bit-identical to backends/cpu/attend.c: one block per (row, 64-token
 * chunk) computes the chunk's softmax state (m, l, o) per query head with
 * the CPU's loops, in the CPU's order; then one thread per output element
 * merges that row's chunk states in the fixed binary tree (tree_push /
 * tree_fold of attend.c) and finishes. Value combine is the same job with
 * p given and m = l = 0 (merge factors exp(0) = 1); key scores stops
 * after the scores. */
#include "common.cuh"

#define THREADS 256

enum job_mode { MODE_SCORES, MODE_COMBINE, MODE_ATTEND };

/* Where chunks come from: a compressed tensor or dense [rows, tokens, dim]. */
struct mf_src {
    mf_view c;
    const uint16_t *dense; /* non-NULL: dense source */
    mf_kind kind;
};

/* Chunk ch of row into buf as fp16 (key [channel][64], value
 * [token][dim]); returns its token count. Called by the whole block. */
__device__ static uint32_t load_chunk(const mf_src &s, uint32_t row, uint64_t ch, uint32_t tokens,
                                      uint32_t dim, uint16_t *buf, uint64_t *starts) {
    uint64_t blocks = tokens / MF_TILE;
    uint32_t e, n = MF_TILE;
    if (s.dense || ch == blocks) {
        const uint16_t *p;
        if (s.dense) {
            p = s.dense + ((uint64_t)row * tokens + ch * MF_TILE) * dim;
            n = (uint32_t)(tokens - ch * MF_TILE < MF_TILE ? tokens - ch * MF_TILE : MF_TILE);
        } else {
            n = tokens % MF_TILE;
            p = s.c.window + (uint64_t)row * n * dim;
        }
        for (e = threadIdx.x; e < MF_TILE * dim; e += blockDim.x) {
            uint32_t tok = e / dim, c = e % dim;
            buf[s.kind == MF_KEY ? c * MF_TILE + tok : e] = tok < n ? p[e] : 0;
        }
    } else {
        uint64_t u = mf_cu_unit(s.c, row, ch);
        mf_cu_unit_starts(s.c, u, starts);
        /* every tile's range, empty or not, as the CPU checks it */
        for (e = threadIdx.x; e < dim; e += blockDim.x)
            mf_cu_in_payload(s.c, starts[e], mf_tile_words(mf_popcount64(s.c.bitmaps[u * dim + e]), s.c.bits));
        for (e = threadIdx.x; e < MF_TILE * dim; e += blockDim.x) {
            uint32_t tok = e / dim, c = e % dim, j, i;
            mf_cu_elem_tile(s.kind, tok, c, &j, &i);
            buf[s.kind == MF_KEY ? c * MF_TILE + tok : e] =
                mf_cu_tile_value(s.c, u * dim + j, starts[j], i);
        }
    }
    __syncthreads();
    return n;
}

struct job {
    mf_src k, v;
    const uint16_t *q; /* scores, attention */
    const float *p;    /* value combine: [rows*group, tokens] */
    float *scores;     /* key scores: [rows*group, tokens] */
    float *states;     /* [rows][chunks][group][dim + 2]: m, l, o */
    uint32_t rows, tokens, dim, group;
    uint64_t chunks;
};

static size_t chunk_smem(uint32_t dim, uint32_t group) {
    return 256 * 8 + (size_t)group * MF_TILE * 4 + (size_t)group * 2 * 4 + (size_t)MF_TILE * dim * 2;
}

/* The softmax state of chunk blockIdx.x % chunks of row blockIdx.x / chunks. */
template <int MODE>
__global__ static void __launch_bounds__(THREADS) chunk_kernel(job jb) {
    extern __shared__ uint64_t smem[];
    uint64_t *starts = smem;
    float *sc = (float *)(smem + 256);           /* [group][64]: scores, then weights */
    float *ml = sc + (size_t)jb.group * MF_TILE; /* [group][2]: m, l */
    uint16_t *buf = (uint16_t *)(ml + 2 * jb.group);
    uint32_t row = (uint32_t)(blockIdx.x / jb.chunks), dim = jb.dim, group = jb.group, n, i;
    uint64_t ch = blockIdx.x % jb.chunks;
    if (MODE != MODE_COMBINE) {
        float scale = mf_score_scale(dim);
        n = load_chunk(jb.k, row, ch, jb.tokens, dim, buf, starts);
        for (i = threadIdx.x; i < group * MF_TILE; i += THREADS) {
            uint32_t h = i / MF_TILE, t = i % MF_TILE, c;
            const uint16_t *qh = jb.q + ((size_t)row * group + h) * dim;
            float acc = 0.0f, x;
            for (c = 0; c < dim; c++)
                acc = MF_FMA(mf_h2f(qh[c]), mf_h2f(buf[c * MF_TILE + t]), acc);
            x = mf_canon(acc);
            if (MODE == MODE_SCORES && t < n)
                jb.scores[((size_t)row * group + h) * jb.tokens + ch * MF_TILE + t] = x;
            sc[i] = t < n ? MF_MUL(x, scale) : 0.0f;
        }
        if (MODE == MODE_SCORES)
            return;
        __syncthreads();
        for (i = threadIdx.x; i < group; i += THREADS) {
            float m = sc[i * MF_TILE];
            uint32_t t;
            for (t = 1; t < n; t++)
                m = sc[i * MF_TILE + t] > m ? sc[i * MF_TILE + t] : m;
            ml[2 * i] = m;
        }
        __syncthreads();
        for (i = threadIdx.x; i < group * MF_TILE; i += THREADS)
            if (i % MF_TILE < n)
                sc[i] = mf_exp(MF_SUB(sc[i], ml[2 * (i / MF_TILE)]));
        __syncthreads();
        for (i = threadIdx.x; i < group; i += THREADS) {
            float l = 0.0f;
            uint32_t t;
            for (t = 0; t < n; t++)
                l = MF_ADD(l, sc[i * MF_TILE + t]);
            ml[2 * i + 1] = l;
        }
    } else {
        n = (uint32_t)(jb.tokens - ch * MF_TILE < MF_TILE ? jb.tokens - ch * MF_TILE : MF_TILE);
        for (i = threadIdx.x; i < group * MF_TILE; i += THREADS)
            if (i % MF_TILE < n)
                sc[i] = jb.p[((size_t)row * group + i / MF_TILE) * jb.tokens + ch * MF_TILE + i % MF_TILE];
        for (i = threadIdx.x; i < 2 * group; i += THREADS)
            ml[i] = 0.0f;
    }
    __syncthreads();
    load_chunk(jb.v, row, ch, jb.tokens, dim, buf, starts);
    for (i = threadIdx.x; i < group * dim; i += THREADS) {
        uint32_t h = i / dim, c = i % dim, t;
        float o = 0.0f;
        float *st = jb.states + ((size_t)(row * jb.chunks + ch) * group + h) * (dim + 2u);
        for (t = 0; t < n; t++)
            o = MF_FMA(sc[h * MF_TILE + t], mf_h2f(buf[(size_t)t * dim + c]), o);
        st[2 + c] = o;
        if (c == 0) {
            st[0] = ml[2 * h];
            st[1] = ml[2 * h + 1];
        }
    }
}

/* Thread per output (row, head, channel): the binary counter of attend.c
 * over the row's chunk states, then canon(o / l) or canon(o). */
__global__ static void merge_kernel(job jb, int attend, float *out) {
    uint64_t idx = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    uint32_t dim = jb.dim, group = jb.group, depth = 0, level[32], row, h, c;
    float m[32], l[32], o[32];
    uint64_t ch;
    if (idx >= (uint64_t)jb.rows * group * dim)
        return;
    row = (uint32_t)(idx / ((uint64_t)group * dim));
    h = (uint32_t)(idx / dim % group);
    c = (uint32_t)(idx % dim);
    for (ch = 0; ch < jb.chunks; ch++) {
        const float *st = jb.states + ((size_t)(row * jb.chunks + ch) * group + h) * (dim + 2u);
        m[depth] = st[0];
        l[depth] = st[1];
        o[depth] = st[2 + c];
        level[depth++] = 0;
        while (depth >= 2 && level[depth - 1] == level[depth - 2]) {
            float mm, fa, fb;
            mf_merge_factors(m[depth - 2], m[depth - 1], &mm, &fa, &fb);
            m[depth - 2] = mm;
            l[depth - 2] = mf_merge_term(l[depth - 2], fa, l[depth - 1], fb);
            o[depth - 2] = mf_merge_term(o[depth - 2], fa, o[depth - 1], fb);
            level[depth - 2]++;
            depth--;
        }
    }
    while (depth >= 2) {
        float mm, fa, fb;
        mf_merge_factors(m[depth - 2], m[depth - 1], &mm, &fa, &fb);
        m[depth - 2] = mm;
        l[depth - 2] = mf_merge_term(l[depth - 2], fa, l[depth - 1], fb);
        o[depth - 2] = mf_merge_term(o[depth - 2], fa, o[depth - 1], fb);
        depth--;
    }
    out[idx] = mf_canon(attend ? MF_DIV(o[0], l[0]) : o[0]);
}

static size_t states_bytes(uint32_t rows, uint32_t tokens, uint32_t dim, uint32_t group) {
    uint64_t chunks = (tokens + MF_TILE - 1) / MF_TILE;
    return mf__cu_align((size_t)rows * chunks * group * (dim + 2u) * sizeof(float));
}

/* Launches the chunk kernel and, unless scores only, the merge. */
template <int MODE> static mf_status run_job(job *jb, float *out) {
    size_t smem = chunk_smem(jb->dim, jb->group);
    uint64_t outs = (uint64_t)jb->rows * jb->group * jb->dim;
    jb->chunks = (jb->tokens + MF_TILE - 1) / MF_TILE;
    MF_CU(cudaFuncSetAttribute(chunk_kernel<MODE>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               (int)smem));
    chunk_kernel<MODE><<<(unsigned)(jb->rows * jb->chunks), THREADS, smem>>>(*jb);
    MF_CU_LAUNCHED();
    if (MODE != MODE_SCORES) {
        merge_kernel<<<(unsigned)((outs + 255) / 256), 256>>>(*jb, MODE == MODE_ATTEND, out);
        MF_CU_LAUNCHED();
    }
    return MF_OK;
}

static void init_job(job *jb, uint32_t rows, uint32_t tokens, uint32_t dim, uint32_t group) {
    memset(jb, 0, sizeof *jb);
    jb->k.kind = MF_KEY;
    jb->v.kind = MF_VALUE;
    jb->rows = rows;
    jb->tokens = tokens;
    jb->dim = dim;
    jb->group = group;
}

/* Scratch of key scores and value combine: the flag, then states. */
#define FLAG_BYTES 256

extern "C" mf_status mf_cuda_key_scores(const mf_ctensor *k, const uint16_t *q, uint32_t group,
                                        float *scores) {
    const mf_desc *d = &k->desc;
    unsigned *flag = NULL;
    mf_status st;
    job jb;
    init_job(&jb, d->rows, d->tokens, d->dim, group);
    jb.q = q;
    jb.scores = scores;
    if ((st = mf_cuda_alloc(FLAG_BYTES, (void **)&flag)) != MF_OK)
        return st;
    if ((st = mf__cu_compute_view(k, flag, &jb.k.c)) == MF_OK &&
        (st = mf__cu_flag_clear(flag)) == MF_OK && (st = run_job<MODE_SCORES>(&jb, NULL)) == MF_OK)
        st = mf__cu_flag_result(flag);
    cudaFree(flag);
    return st;
}

extern "C" mf_status mf_cuda_value_combine(const mf_ctensor *v, const float *p, uint32_t group,
                                           float *out) {
    const mf_desc *d = &v->desc;
    char *scratch = NULL;
    mf_status st;
    job jb;
    init_job(&jb, d->rows, d->tokens, d->dim, group);
    if ((st = mf_cuda_alloc(FLAG_BYTES + states_bytes(d->rows, d->tokens, d->dim, group),
                            (void **)&scratch)) != MF_OK)
        return st;
    jb.p = p;
    jb.states = (float *)(scratch + FLAG_BYTES);
    if ((st = mf__cu_compute_view(v, (unsigned *)scratch, &jb.v.c)) == MF_OK &&
        (st = mf__cu_flag_clear((unsigned *)scratch)) == MF_OK &&
        (st = run_job<MODE_COMBINE>(&jb, out)) == MF_OK)
        st = mf__cu_flag_result((unsigned *)scratch);
    cudaFree(scratch);
    return st;
}

/* Workspace of either attention kernel: the flag, then the larger of the
 * two kernels' states (tc: the tensor-core kernel's). */
static size_t attend_need(const mf_desc *k, uint32_t group, size_t tc) {
    size_t ref = states_bytes(k->rows, k->tokens, k->dim, group);
    return FLAG_BYTES + (ref > tc ? ref : tc);
}

extern "C" mf_status mf_cuda_attend_workspace(const mf_desc *k, uint32_t group, size_t *bytes) {
    size_t tc;
    mf_status st = mf__cu_tensor_bytes(k, group, &tc);
    if (st != MF_OK)
        return st;
    *bytes = attend_need(k, group, tc);
    return MF_OK;
}

mf_status mf__cu_attend_views(const mf_ctensor *k, const mf_ctensor *v, void *workspace,
                              mf_view *kv, mf_view *vv) {
    mf_status st = mf__cu_compute_view(k, (unsigned *)workspace, kv);
    return st != MF_OK ? st : mf__cu_compute_view(v, (unsigned *)workspace, vv);
}

mf_status mf__cu_attend_space(const mf_desc *k, uint32_t group, size_t tc, void *workspace,
                              size_t workspace_bytes, int wait, char **rest) {
    if (workspace_bytes < attend_need(k, group, tc))
        return MF_ERR_BUFFER_SMALL;
    *rest = (char *)workspace + FLAG_BYTES;
    return wait ? mf__cu_flag_clear((unsigned *)workspace) : MF_OK;
}

mf_status mf__cu_attend_done(void *workspace, int wait) {
    return wait ? mf__cu_flag_result((const unsigned *)workspace) : MF_OK;
}

extern "C" mf_status mf_cuda_attend_wait(void *workspace) {
    mf_status st = mf__cu_flag_result((const unsigned *)workspace);
    if (st != MF_ERR_DEVICE && mf__cu_flag_clear((unsigned *)workspace) != MF_OK)
        st = MF_ERR_DEVICE;
    return st;
}

extern "C" mf_status mf_cuda_attend(const mf_ctensor *k, const mf_ctensor *v, const uint16_t *q,
                                    uint32_t group, float *out, void *workspace,
                                    size_t workspace_bytes, int wait) {
    const mf_desc *d = &k->desc;
    mf_status st;
    char *rest;
    job jb;
    init_job(&jb, d->rows, d->tokens, d->dim, group);
    jb.q = q;
    size_t tc;
    if ((st = mf__cu_attend_views(k, v, workspace, &jb.k.c, &jb.v.c)) != MF_OK ||
        (st = mf__cu_tensor_bytes(d, group, &tc)) != MF_OK ||
        (st = mf__cu_attend_space(d, group, tc, workspace, workspace_bytes, wait, &rest)) != MF_OK)
        return st;
    jb.states = (float *)rest;
    if ((st = run_job<MODE_ATTEND>(&jb, out)) != MF_OK)
        return st;
    return mf__cu_attend_done(workspace, wait);
}

extern "C" mf_status mf_cuda_attend_dense(const uint16_t *k, const uint16_t *v, uint32_t rows,
                                          uint32_t tokens, uint32_t dim, const uint16_t *q,
                                          uint32_t group, float *out, void *workspace,
                                          size_t workspace_bytes) {
    job jb;
    init_job(&jb, rows, tokens, dim, group);
    if (workspace_bytes < states_bytes(rows, tokens, dim, group))
        return MF_ERR_BUFFER_SMALL;
    jb.k.dense = k;
    jb.v.dense = v;
    jb.q = q;
    jb.states = (float *)workspace;
    return run_job<MODE_ATTEND>(&jb, out) != MF_OK || cudaDeviceSynchronize() != cudaSuccess
               ? MF_ERR_DEVICE
               : MF_OK;
}
