/* fuzz.h - shared pieces of the fuzz targets (fuzz/README.md).
 *
 * Every target is a libFuzzer entry point; fuzz/replay.c turns it into a
 * plain program. Targets turn bytes into API inputs with the reader
 * below, so a short input still describes a whole tensor: once the bytes
 * run out the reader wraps to the start of the data region. */
#ifndef MF_FUZZ_H
#define MF_FUZZ_H

#include <stddef.h>
#include <stdint.h>

#include "mustafar.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- byte reader ---------------------------------------------------- */
typedef struct fz_in {
    const uint8_t *p;
    size_t n, pos, mark; /* after fz_mark, reads wrap to mark (not to 0) */
} fz_in;

void fz_init(fz_in *in, const uint8_t *p, size_t n);
void fz_mark(fz_in *in);
uint8_t fz_u8(fz_in *in);
uint16_t fz_u16(fz_in *in);
uint32_t fz_u32(fz_in *in);
void fz_fill(fz_in *in, void *dst, size_t bytes); /* little-endian arrays */

/* ---- failing loudly ------------------------------------------------- */
void fz_fail(const char *file, int line, const char *cond, const char *msg);
/* Sets of statuses a rejection may give. */
#define FZ_BIT(st) (1u << (st))
#define FZ_VALIDATE_ERRORS                                                                         \
    (FZ_BIT(MF_ERR_NULL) | FZ_BIT(MF_ERR_ARG) | FZ_BIT(MF_ERR_DIMS) | FZ_BIT(MF_ERR_LIMIT) |       \
     FZ_BIT(MF_ERR_OFFSET_RANGE) | FZ_BIT(MF_ERR_OFFSET_ORDER) | FZ_BIT(MF_ERR_NNZ) |              \
     FZ_BIT(MF_ERR_SCALE) | FZ_BIT(MF_ERR_PADDING))
int fz_status_in(mf_status st, uint32_t set);
#define FZ_CHECK(cond, msg)                                                                        \
    do {                                                                                           \
        if (!(cond))                                                                               \
            fz_fail(__FILE__, __LINE__, #cond, (msg));                                             \
    } while (0)

/* ---- descriptors and tensors from bytes ----------------------------- */
/* Shape and variant: 4 bytes. Mode byte bit 7 set: raw fields follow
 * (any value, to reach mf_desc_check's rejections; returns 1). Else a
 * supported shape of rows 1..max_rows and at most max_elems elements
 * (at least dim * max_rows): small, so that each run is fast. */
int fz_desc(fz_in *in, mf_desc *d, uint32_t max_rows, uint32_t max_elems);
/* The inverse for the corpus generator: bytes that fz_desc maps to d. */
size_t fz_put_desc(uint8_t *out, const mf_desc *d);

/* Fix-ups fz_ctensor applies so that random bytes reach deep checks;
 * each is the identity on a tensor the validator accepts (scales: on
 * the masked range), so every accepted tensor stays reachable. */
enum {
    FZ_AUTO_WORDS = 1,   /* payload_words = what the bitmaps need */
    FZ_AUTO_OFFSETS = 2, /* offsets = prefix sums in storage order */
    FZ_FIX_PAYLOAD = 4,  /* zero padding, nonzero fp16 values */
    FZ_FIX_SCALES = 8,   /* scales in (0, 1), |zeros| < 512 */
    FZ_FINITE = 16,      /* finite window and fp16 payload values */
    FZ_FIX_ALL = 31
};
/* Arrays of a tensor with desc d from in, in order: [payload_words as
 * u16 unless auto], bitmaps, [offsets unless auto], scales, zeros,
 * payload, window. Allocates c (free with mf_ctensor_free). */
mf_status fz_ctensor(fz_in *in, const mf_desc *d, unsigned fixups, mf_ctensor *c);
/* Bytes that fz_ctensor with FZ_AUTO_WORDS|FZ_AUTO_OFFSETS reads back as
 * c (out NULL: only the count). */
size_t fz_put_ctensor(uint8_t *out, const mf_ctensor *c);
/* 1 if a and b have the same desc and array contents. */
int fz_same_ctensor(const mf_ctensor *a, const mf_ctensor *b);

/* ---- oracles (from formats/SPEC.md, independent of the library) ----- */
/* Dense index of element i of tile t. */
uint64_t fz_tile_elem(const mf_desc *d, uint64_t t, uint32_t i);
/* Payload words of a tile with nnz nonzeros. */
uint32_t fz_tile_words(uint32_t nnz, uint32_t bits);
/* What mf_decode must write for an accepted tensor. */
void fz_expect_dense(const mf_ctensor *c, uint16_t *dense);
/* Dense element count rows * tokens * dim. */
uint64_t fz_dense_count(const mf_desc *d);
int fz_h_finite(uint16_t h);

/* ---- allocation accounting (fuzz/alloc_count.c, -Wl,--wrap=malloc) -- */
void fz_alloc_start(void);
uint64_t fz_alloc_stop(void); /* bytes malloc'd since fz_alloc_start */

/* ---- OpenMP thread count, a no-op in builds without OpenMP ---------- */
void fz_set_threads(int n);

#endif /* MF_FUZZ_H */
