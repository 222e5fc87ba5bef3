/*
 * mustafar.h - compressed KV caches for LLM decode attention.
 *
 * The one public header. Every function returns an mf_status; mf_strerror()
 * names it. The caller owns all memory: size queries come first, then the
 * caller allocates (mf_ctensor_alloc is a convenience for host buffers).
 * The exact format and arithmetic are specified in formats/SPEC.md.
 */
#ifndef MUSTAFAR_H
#define MUSTAFAR_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MF_VERSION_MAJOR 0
#define MF_VERSION_MINOR 1
#define MF_VERSION_PATCH 0

/* ------------------------------------------------------------------ */
/* Errors                                                              */
/* ------------------------------------------------------------------ */
typedef enum mf_status {
    MF_OK = 0,
    MF_ERR_NULL = 1,          /* a required pointer is NULL */
    MF_ERR_ARG = 2,           /* an argument is out of its range */
    MF_ERR_DIMS = 3,          /* unsupported or inconsistent dimensions */
    MF_ERR_OVERFLOW = 4,      /* a size computation overflows */
    MF_ERR_LIMIT = 5,         /* a documented limit is exceeded */
    MF_ERR_NOMEM = 6,         /* an allocation failed */
    MF_ERR_BUFFER_SMALL = 7,  /* a caller buffer is too small */
    MF_ERR_NONFINITE = 8,     /* input holds NaN or infinity */
    MF_ERR_OFFSET_RANGE = 9,  /* an offset points outside the payload */
    MF_ERR_OFFSET_ORDER = 10, /* offsets are not monotone */
    MF_ERR_NNZ = 11,          /* offsets or values disagree with a bitmap */
    MF_ERR_SCALE = 12,        /* a scale/zero pair is invalid */
    MF_ERR_PADDING = 13,      /* padding bits or halves are not zero */
    MF_ERR_IO = 14,           /* reading or writing a file failed */
    MF_ERR_MAGIC = 15,        /* not a mustafar container / not .npy */
    MF_ERR_VERSION = 16,      /* unsupported container version */
    MF_ERR_CHECKSUM = 17,     /* CRC mismatch */
    MF_ERR_TRUNCATED = 18,    /* input ends early */
    MF_ERR_HEADER = 19,       /* a header field is invalid */
    MF_ERR_DTYPE = 20,        /* unsupported element type */
    MF_ERR_NO_DEVICE = 21,    /* the CUDA backend is not available */
    MF_ERR_DEVICE = 22,       /* a CUDA call failed */
    MF_ERR_UNSUPPORTED = 23   /* valid request this build cannot do */
} mf_status;

const char *mf_strerror(mf_status status);

/* Optional detail for functions that read untrusted input: one line that
 * names the offending field and value. Pass NULL if not wanted. */
typedef struct mf_diag {
    char msg[256];
} mf_diag;

/* ------------------------------------------------------------------ */
/* Compressed tensors                                                  */
/* ------------------------------------------------------------------ */
typedef enum mf_kind {
    MF_KEY = 0,  /* tile = 64 tokens of one channel */
    MF_VALUE = 1 /* tile = one token, 64 channels */
} mf_kind;

typedef enum mf_layout {
    MF_LAYOUT_REFERENCE = 0, /* Mustafar's: head-major tiles, per-tile offsets */
    MF_LAYOUT_NATIVE = 1     /* block-major tiles, one offset per (block, row) */
} mf_layout;

typedef enum mf_backend { MF_BACKEND_CPU = 0, MF_BACKEND_CUDA = 1 } mf_backend;

/* Shape and variant of one compressed [rows, tokens, dim] fp16 tensor,
 * rows = batch * kv_heads. bits: 0 stores nonzeros as fp16, 2 or 4 stores
 * them as quantized codes. */
typedef struct mf_desc {
    mf_kind kind;
    mf_layout layout;
    uint32_t bits;
    uint32_t rows;
    uint32_t tokens;
    uint32_t dim; /* 64, 128 or 256 */
} mf_desc;

/* Element counts of each array of a compressed tensor. */
typedef struct mf_sizes {
    uint64_t blocks;        /* full 64-token blocks per row */
    uint64_t tiles;         /* bitmaps, scales, zeros: one per tile */
    uint64_t offsets;       /* uint32 offsets */
    uint64_t window_tokens; /* tokens % 64: dense tail per row */
    uint64_t window;        /* fp16 elements of the dense tail */
    uint64_t payload_bound; /* uint32 payload words for any input */
    uint64_t payload_keep;  /* bound when rows keep at most `keep` nonzeros */
} mf_sizes;

typedef struct mf_ctensor {
    mf_desc desc;
    uint64_t payload_words; /* words of payload in use */
    uint64_t *bitmaps;      /* [tiles]; element i of a tile = bit 63-i */
    uint32_t *offsets;      /* [offsets]; start word of each tile/group */
    uint16_t *scales;       /* [tiles] fp16, quantized only (else NULL) */
    uint16_t *zeros;        /* [tiles] fp16, quantized only (else NULL) */
    uint32_t *payload;      /* [payload_words] codes or fp16 pairs */
    uint16_t *window;       /* [rows, window_tokens, dim] dense fp16 */
} mf_ctensor;

/* Sizes of every array for desc; keep (0..dim) tightens payload_keep. */
mf_status mf_sizes_of(const mf_desc *desc, uint32_t keep, mf_sizes *sizes);

/* Checks that desc names a supported shape and variant within limits. */
mf_status mf_desc_check(const mf_desc *desc, mf_diag *diag);

/* Host allocation of all arrays with room for payload_capacity words;
 * mf_ctensor_free releases them (and is safe on a zeroed struct). */
mf_status mf_ctensor_alloc(mf_ctensor *c, const mf_desc *desc, uint64_t payload_capacity);
void mf_ctensor_free(mf_ctensor *c);

/* Bytes the tensor occupies (all arrays, payload_words of payload). */
mf_status mf_ctensor_bytes(const mf_ctensor *c, uint64_t *bytes);

/* Accepts c or says exactly what is wrong (field, index, value). Reads
 * every array within its documented size and nothing beyond. */
mf_status mf_validate(const mf_ctensor *c, mf_diag *diag);

/* Number of kept elements per row for a target sparsity in [0, 1]:
 * keep = dim - floor(sparsity * dim + 0.5), computed in double. */
mf_status mf_keep_count(uint32_t dim, double sparsity, uint32_t *keep);

/* ------------------------------------------------------------------ */
/* Operations (backend chosen at run time)                             */
/* ------------------------------------------------------------------ */
/* 1 if the backend can run here, else 0. */
int mf_backend_available(mf_backend backend);
mf_status mf_backend_parse(const char *name, mf_backend *backend);
const char *mf_backend_name(mf_backend backend);

/* Prunes every token row of dense [rows, tokens, dim] fp16 to `keep`
 * largest magnitudes and compresses it into out, whose desc and arrays the
 * caller set up (payload capacity in words = capacity). The dense tail of
 * tokens % 64 tokens is stored unpruned. Non-finite input is rejected. */
mf_status mf_encode(mf_backend backend, const uint16_t *dense, uint32_t keep,
                    mf_ctensor *out, uint64_t capacity, mf_diag *diag);

/* mf_encode with caller-owned scratch (device memory for the CUDA backend)
 * of at least mf_encode_workspace bytes, so a call allocates nothing: for
 * encoding on the decode path (appending blocks). The CPU backend needs
 * none (0 bytes). mf_encode allocates and frees its own. */
mf_status mf_encode_workspace(mf_backend backend, const mf_desc *desc, size_t *bytes);
mf_status mf_encode_ex(mf_backend backend, const uint16_t *dense, uint32_t keep,
                       mf_ctensor *out, uint64_t capacity, void *workspace,
                       size_t workspace_bytes, mf_diag *diag);

/* A layer's K and V (k_out of kind MF_KEY, v_out of kind MF_VALUE, same
 * rows, tokens, dim and bits), each encoded as by mf_encode_ex, in one
 * call: on the CUDA backend one launch and one read-back for both, which
 * is most of the cost of appending a 64-token block on the decode path.
 * K's error is reported first; a tensor's payload_words is set only when
 * it was encoded. Scratch: at least mf_encode_kv_workspace bytes (CUDA),
 * or NULL to have the call allocate its own. */
mf_status mf_encode_kv_workspace(mf_backend backend, const mf_desc *k, const mf_desc *v,
                                 size_t *bytes);
mf_status mf_encode_kv_ex(mf_backend backend, const uint16_t *k_dense, const uint16_t *v_dense,
                          uint32_t keep, mf_ctensor *k_out, mf_ctensor *v_out,
                          uint64_t k_capacity, uint64_t v_capacity, void *workspace,
                          size_t workspace_bytes, mf_diag *diag);

/* Encoding in a decode loop: mf_encode_kv_async is mf_encode_kv_ex that,
 * on the CUDA backend (a workspace required, else MF_ERR_NULL), returns
 * once its work is queued (CUDA's default stream) instead of reading its
 * result back, a wait for the GPU. Checks on the host still fail it at
 * once. What the device finds (non-finite input, a payload over capacity)
 * and both tensors' payload_words come from mf_encode_kv_wait, called
 * after an async call that returned MF_OK, with the same backend and
 * arguments (less keep); it waits for the queued work. The wait cannot
 * tell a stale workspace from a fresh result. Until it returns, the
 * workspace, the inputs and both tensors belong to the queued work: a
 * decoder can queue a full block's encode and collect it a step later.
 * The async call does not clear its workspace first (the waiting calls
 * do): it needs a clean one, as mf_buffer_alloc gives and every encode
 * call on it leaves behind (errors found on the device stay in it until
 * a wait or waiting call reads them, which clears them). On a dirty one
 * the tensors come out wrong, though nothing is read or written out of
 * bounds and nothing hangs; the wait reports what it can see of it
 * (MF_ERR_ARG) and then clears it. A block of the kernel that waits over
 * a second for the block before it (a debugger, a preempted GPU) is also
 * reported so. On compute capability 9.0 and later the kernel may
 * start while the kernel queued before it still runs (programmatic
 * dependent launch); it reads and writes nothing until that kernel ends.
 * On the CPU backend the async call does all the work and returns its
 * errors; the wait then only checks its arguments. */
mf_status mf_encode_kv_async(mf_backend backend, const uint16_t *k_dense,
                             const uint16_t *v_dense, uint32_t keep, mf_ctensor *k_out,
                             mf_ctensor *v_out, uint64_t k_capacity, uint64_t v_capacity,
                             void *workspace, size_t workspace_bytes, mf_diag *diag);
mf_status mf_encode_kv_wait(mf_backend backend, const uint16_t *k_dense,
                            const uint16_t *v_dense, mf_ctensor *k_out, mf_ctensor *v_out,
                            uint64_t k_capacity, uint64_t v_capacity, void *workspace,
                            size_t workspace_bytes, mf_diag *diag);

/* Validates c, then writes dense [rows, tokens, dim] fp16. */
mf_status mf_decode(mf_backend backend, const mf_ctensor *c, uint16_t *dense, mf_diag *diag);

/* Compute operations (key scores, value combine, attention) never read
 * out of bounds: they check the tensor's structure and each tile's payload
 * range as they go (MF_ERR_OFFSET_RANGE). They do not re-run mf_validate
 * on every call; validate untrusted tensors once when they arrive
 * (mf_container_load does). */

/* Raw scores q . k for every token: q [rows*group, dim] fp16 (query row i
 * uses KV row i / group), scores [rows*group, tokens] fp32. */
mf_status mf_key_scores(mf_backend backend, const mf_ctensor *k, const uint16_t *q,
                        uint32_t group, float *scores);

/* out [rows*group, dim] fp32 = p [rows*group, tokens] fp32 . V. Like
 * key scores, a building block for checking kernels rather than a hot
 * path: it allocates its own scratch. */
mf_status mf_value_combine(mf_backend backend, const mf_ctensor *v, const float *p,
                           uint32_t group, float *out);

/* Query heads per KV head (group) that every attention call takes: 1 to
 * MF_MAX_GROUP (formats/SPEC.md's G). */
#define MF_MAX_GROUP 64u

/* Single-token decode attention: softmax(q.K^T / sqrt(dim)) . V over the
 * compressed history and the dense window. out [rows*group, dim] fp32.
 * The workspace query (CPU) sizes per-thread scratch for the current
 * OpenMP thread count; a workspace sized for fewer threads still works,
 * on fewer threads, with identical results. */
mf_status mf_attend_workspace(mf_backend backend, const mf_desc *k, uint32_t group,
                              size_t *bytes);
mf_status mf_attend(mf_backend backend, const mf_ctensor *k, const mf_ctensor *v,
                    const uint16_t *q, uint32_t group, float *out, void *workspace,
                    size_t workspace_bytes);

/* The same attention, same arithmetic, on dense fp16 K and V
 * [rows, tokens, dim]: the baseline and the cross-check. */
mf_status mf_attend_dense(mf_backend backend, const uint16_t *k, const uint16_t *v,
                          uint32_t rows, uint32_t tokens, uint32_t dim, const uint16_t *q,
                          uint32_t group, float *out, void *workspace,
                          size_t workspace_bytes);

/* ------------------------------------------------------------------ */
/* Backend memory (backends/memory.c)                                  */
/* ------------------------------------------------------------------ */
/* Buffers live where the backend computes: host memory for the CPU,
 * device memory for CUDA; new buffers are zeroed. Upload copies host ->
 * backend, download backend -> host. Freeing NULL is a no-op. */
mf_status mf_buffer_alloc(mf_backend backend, size_t bytes, void **ptr);
mf_status mf_buffer_free(mf_backend backend, void *ptr);
mf_status mf_buffer_upload(mf_backend backend, void *dst, const void *src_host, size_t bytes);
mf_status mf_buffer_download(mf_backend backend, void *dst_host, const void *src, size_t bytes);

/* mf_ctensor_alloc on the backend (arrays in backend memory, struct on
 * the host); release with mf_ctensor_free_on. */
mf_status mf_ctensor_alloc_on(mf_backend backend, mf_ctensor *c, const mf_desc *desc,
                              uint64_t payload_capacity);
mf_status mf_ctensor_free_on(mf_backend backend, mf_ctensor *c);
/* Copies a host tensor (arrays of their documented sizes, payload_words
 * of payload) into new backend arrays of dev. */
mf_status mf_ctensor_upload(mf_backend backend, const mf_ctensor *host, mf_ctensor *dev);
/* Copies a backend tensor into new host arrays of host (mf_ctensor_free). */
mf_status mf_ctensor_download(mf_backend backend, const mf_ctensor *dev, mf_ctensor *host);

/* Attention kernels. REFERENCE follows formats/SPEC.md bit for bit (every
 * backend). TENSOR (CUDA only, sm_80+) multiplies on the tensor cores in
 * fp16 with fp32 accumulation: within backends/cuda/BOUND.md's bound of
 * the reference, not bit-identical; it needs K and V of one code width
 * (MF_ERR_UNSUPPORTED otherwise; REFERENCE takes any). mf_attend =
 * mf_attend_ex(REFERENCE); mf_attend_workspace covers both kernels. */
typedef enum mf_kernel { MF_KERNEL_REFERENCE = 0, MF_KERNEL_TENSOR = 1 } mf_kernel;
mf_status mf_attend_ex(mf_backend backend, mf_kernel kernel, const mf_ctensor *k,
                       const mf_ctensor *v, const uint16_t *q, uint32_t group, float *out,
                       void *workspace, size_t workspace_bytes);

/* Attention for decode loops: mf_attend_async is mf_attend_ex that, on
 * the CUDA backend, returns once its work is queued (CUDA's default
 * stream) instead of waiting for the GPU to report the tile range checks:
 * that wait is about 10 us a call on an H100 host, as long as a small
 * layer's kernels. Checks on the host still fail the call at once. Range
 * errors found on the device (MF_ERR_OFFSET_RANGE) accumulate in the
 * workspace until mf_attend_wait, which waits for the queued work, returns
 * them and clears them; mf_attend_ex on that workspace clears them too.
 * out is written when the default stream reaches the call (any later CUDA
 * copy or mf_attend_wait). A workspace from mf_buffer_alloc starts with no
 * errors; one from elsewhere needs an mf_attend_wait first. On the CPU
 * backend both return at once: the call's errors come from the call.
 * On compute capability 9.0 and later the TENSOR kernel of either call
 * may start, and read K's and V's bitmaps, offsets, scales, zeros and
 * payload (nothing else), while the kernel queued before it still runs
 * (programmatic dependent launch). So a kernel that writes K or V and is
 * queued right before the call must not let its dependents start early
 * at all (griddepcontrol.launch_dependents,
 * cudaTriggerProgrammaticLaunchCompletion): such a trigger makes no
 * writes visible. This library's encoder never triggers. (Attention on
 * the tensors of an mf_encode_kv_async call comes after its
 * mf_encode_kv_wait, which sets their payload_words.) */
mf_status mf_attend_async(mf_backend backend, mf_kernel kernel, const mf_ctensor *k,
                          const mf_ctensor *v, const uint16_t *q, uint32_t group, float *out,
                          void *workspace, size_t workspace_bytes);
mf_status mf_attend_wait(mf_backend backend, void *workspace, size_t workspace_bytes);

/* ------------------------------------------------------------------ */
/* fp16 helpers (the same conversions the kernels use)                 */
/* ------------------------------------------------------------------ */
uint16_t mf_fp16_from_float(float x); /* round to nearest even */
float mf_fp16_to_float(uint16_t h);   /* exact */

/* ------------------------------------------------------------------ */
/* Container file (formats/CONTAINER.md): one layer's K and V          */
/* ------------------------------------------------------------------ */
/* Serialized size, and serialization into a caller buffer. */
mf_status mf_container_size(const mf_ctensor *k, const mf_ctensor *v, uint64_t *bytes);
mf_status mf_container_write_mem(const mf_ctensor *k, const mf_ctensor *v, uint8_t *buf,
                                 uint64_t len);
/* Parses and validates untrusted bytes; allocates k and v (free them with
 * mf_ctensor_free). On error nothing stays allocated. */
mf_status mf_container_read_mem(const uint8_t *buf, uint64_t len, mf_ctensor *k,
                                mf_ctensor *v, mf_diag *diag);
/* Files: written to a temporary name and renamed, so a failure never
 * leaves a partial or clobbered file. */
mf_status mf_container_save(const char *path, const mf_ctensor *k, const mf_ctensor *v,
                            mf_diag *diag);
mf_status mf_container_load(const char *path, mf_ctensor *k, mf_ctensor *v, mf_diag *diag);

/* ------------------------------------------------------------------ */
/* NumPy .npy arrays (little-endian float16 / float32, C order)        */
/* ------------------------------------------------------------------ */
typedef enum mf_dtype { MF_F16 = 0, MF_F32 = 1 } mf_dtype;

typedef struct mf_array {
    mf_dtype dtype;
    uint32_t ndim;
    uint64_t shape[4];
    uint64_t count; /* product of shape */
    void *data;     /* count elements; free with mf_array_free */
} mf_array;

mf_status mf_npy_read_mem(const uint8_t *buf, uint64_t len, mf_array *a, mf_diag *diag);
mf_status mf_npy_load(const char *path, mf_array *a, mf_diag *diag);
mf_status mf_npy_save(const char *path, const mf_array *a, mf_diag *diag);
/* Saves arrays[i] to paths[i], i < n, all or none: each regular file is
 * written to a temporary beside it, and the temporaries are renamed into
 * place only once all are written (a failing rename, the last step, is
 * the one way to leave some replaced: say, in a sticky directory such as
 * /tmp, a file of another user). Paths naming one file are refused. Both
 * save functions write a symbolic link's file, write a device or FIFO in
 * place (first, as it cannot be taken back; /dev/stdout and /dev/fd/N
 * through their descriptors, so a shell's >> appends) and keep an
 * existing file's permissions. */
mf_status mf_npy_save_all(uint32_t n, const char *const *paths, const mf_array *arrays,
                          mf_diag *diag);
void mf_array_free(mf_array *a);
/* Converts a in place to fp16 (round to nearest even) or fp32 (exact). */
mf_status mf_array_convert(mf_array *a, mf_dtype to);

#ifdef __cplusplus
}
#endif
#endif /* MUSTAFAR_H */
