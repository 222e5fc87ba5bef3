/* attend.c - CPU key scores, value combine and decode attention.
 *
 * Every operation follows formats/SPEC.md "Attention arithmetic": scores
 * are fused sums over channels in order; each 64-token chunk keeps a
 * softmax state (m, l, o); chunk states merge in the fixed binary tree.
 * Work is split into (row, segment) units of SEG chunks, which are whole
 * subtrees of that tree, so any thread count gives identical bits.
 *
 * Compressed and dense inputs share all of it: a source expands one chunk
 * of K (channel-major) or V (token-major) into fp32, or, for quantized
 * tiles with SIMD, hands the loops the tiles themselves to decode as they
 * go (piece); the order of every sum is the same. Zero terms add nothing
 * after mf_canon, so running the FMAs over the zeros of sparse tiles is
 * exact. */
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "../../core/internal.h"
#include "../../core/tile.h"
#include "cpu.h"
#include "expand.h"

#if MF_CPU_SIMD
#include <immintrin.h>
#endif

#define SEG 16u    /* chunks per work unit: a power of two */
#define LEVELS 6u  /* stack depth of a SEG-chunk subtree: log2(SEG) + 1, +1 spare */

/* Where chunks come from: a compressed tensor or a dense [rows, tokens,
 * dim] array. */
typedef struct source {
    const mf_ctensor *c;
    const uint16_t *dense;
    mf_kind kind;
    uint32_t tokens, dim;
} source;

static uint64_t chunks_of(uint32_t tokens) { return (tokens + MF_TILE - 1) / MF_TILE; }

/* One piece of a chunk: 64 channels (key) or 64 channels of every token
 * (value), as a 64 x 64 fp32 matrix (key buf[channel][token], value
 * buf[token][channel]) or, for quantized tiles with SIMD, as the tiles' own
 * bitmaps, code streams and code tables: the FMA loops decode 16 elements
 * at a time into table indices, integer work that runs beside the FMAs
 * (what makes "load as compressed, compute as dense" cheap on a CPU). */
typedef struct piece {
    uint32_t packed;       /* 0: buf; 2 or 4: packed tiles of that many bits */
    float *buf;            /* [64 * 64] */
    float *tables;         /* [64][16] code tables (4 bits packed: mf_cpu_code_planes) */
    uint64_t *rev;         /* packed: [64] bitmaps, element i at bit i */
    const uint8_t **code;  /* packed: [64] code streams, 40 bytes readable */
    uint64_t *pad;         /* packed: [64][5] zero-padded copies near the payload end */
    uint64_t *seg;         /* 2 bits packed: [4][64] codes of group g of tile j from bit 0 */
    int zeroed;            /* tables hold the 2-bit tables' leading zeros */
} piece;

/* Floats of scratch a piece takes (piece_bind), a multiple of 16. */
#define PIECE_FLOATS                                                                              \
    ((((size_t)MF_TILE * (MF_TILE + 16u) +                                                         \
       MF_TILE * (10u * sizeof(uint64_t) + sizeof(const uint8_t *)) / sizeof(float)) + 15u) &       \
     ~(size_t)15u)

static float *piece_bind(piece *pp, float *base) {
    pp->buf = base;
    pp->tables = pp->buf + MF_TILE * MF_TILE;
    pp->rev = (uint64_t *)(void *)(pp->tables + 16 * MF_TILE);
    pp->pad = pp->rev + MF_TILE;
    pp->seg = pp->pad + 5 * MF_TILE;
    pp->zeroed = 0;
    pp->code = (const uint8_t **)(void *)(pp->seg + 4 * MF_TILE);
    return base + PIECE_FLOATS;
}

/* Whether a tile of `words` payload words starting at word `start` lies
 * inside the payload. */
static int in_payload(const mf_ctensor *c, uint64_t start, uint32_t words) {
    return start <= c->payload_words && words <= c->payload_words - start;
}

#if MF_CPU_SIMD
/* Code stream of a tile near the payload end or beyond it, where
 * load_packed's one comparison does not vouch for 10 words: checked
 * exactly, and copied into the tile's pad when fewer are left. */
static const uint8_t *tail_stream(const mf_ctensor *c, uint32_t j, uint64_t start, uint64_t bm,
                                  piece *pp, int *bad) {
    if (!in_payload(c, start, mf_tile_words(mf_popcount64(bm), c->desc.bits))) {
        *bad = 1;
        pp->rev[j] = 0; /* reads as an empty tile */
        start = 0;
    }
    return mf_cpu_code_stream(c->payload + start, c->payload_words - start, pp->pad + 5 * j);
}

/* The popcount of each byte of x. */
static inline __m256i byte_popcounts(__m256i x) {
#if defined(__AVX512BITALG__) && defined(__AVX512VL__)
    return _mm256_popcnt_epi8(x);
#else
    const __m256i pop = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2,
                                         1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i nibble = _mm256_set1_epi8(0x0f);
    return _mm256_add_epi8(_mm256_shuffle_epi8(pop, _mm256_and_si256(x, nibble)),
                           _mm256_shuffle_epi8(pop, _mm256_and_si256(_mm256_srli_epi16(x, 4), nibble)));
#endif
}

/* Payload words of four packed tiles of bmp (mf_tile_words, bits 2 or
 * 4): byte popcounts summed per tile, rounded up to whole words. */
static inline __m256i tile_words4(const uint64_t *bmp, uint32_t bits) {
    __m256i n = _mm256_sad_epu8(byte_popcounts(_mm256_loadu_si256((const __m256i *)(const void *)bmp)),
                                _mm256_setzero_si256());
    int shift = bits == 2 ? 4 : 3; /* codes per word: 16 or 8 */
    return _mm256_srli_epi64(_mm256_add_epi64(n, _mm256_set1_epi64x((1 << shift) - 1)), shift);
}

/* Inclusive prefix sums of four 64-bit lanes. */
static inline __m256i prefix4(__m256i w) {
    const __m256i up1 = _mm256_setr_epi64x(0, -1, -1, -1), up2 = _mm256_setr_epi64x(0, 0, -1, -1);
    w = _mm256_add_epi64(w, _mm256_and_si256(_mm256_permute4x64_epi64(w, 0x90), up1));
    return _mm256_add_epi64(w, _mm256_and_si256(_mm256_permute4x64_epi64(w, 0x40), up2));
}

/* Payload words of n (a multiple of 4) packed tiles. */
static uint64_t words_of(const uint64_t *bmp, uint32_t n, uint32_t bits) {
    __m256i acc = _mm256_setzero_si256();
    uint64_t lane[4];
    uint32_t j;
    for (j = 0; j < n; j += 4)
        acc = _mm256_add_epi64(acc, tile_words4(bmp + j, bits));
    _mm256_storeu_si256((__m256i *)(void *)lane, acc);
    return lane[0] + lane[1] + lane[2] + lane[3];
}

/* The packed part of load_piece: tiles t0 .. t0+63 as bit-reversed
 * bitmaps and code streams; next is the first tile's start (native). */
static void load_packed(const mf_ctensor *c, uint64_t t0, int native, uint64_t next, piece *pp,
                        int *bad) {
    uint32_t j;
    for (j = 0; j < MF_TILE; j += 4)
        _mm256_storeu_si256((__m256i *)(pp->rev + j), mf_cpu_bit_reverse4(_mm256_loadu_si256(
                                                          (const __m256i *)(c->bitmaps + t0 + j))));
    j = 0;
#if UINTPTR_MAX == UINT64_MAX
    /* Four tiles at a time: stream = payload + start while every start
     * leaves 10 words; the first four that do not, and all after them, go
     * the checked way below. Starts are the offsets (reference) or prefix
     * sums of the tiles' words from next (native; on leaving, next is tile
     * j's start). */
    if (c->payload_words >= 10 && (!native || next <= c->payload_words)) {
        const __m256i base = _mm256_set1_epi64x((long long)(uintptr_t)c->payload);
        const __m256i safe = _mm256_set1_epi64x((long long)(c->payload_words - 10));
        __m256i run = _mm256_set1_epi64x((long long)next), incl = _mm256_setzero_si256(), start, over;
        for (; j < MF_TILE; j += 4) {
            if (native) {
                __m256i w = tile_words4(c->bitmaps + t0 + j, c->desc.bits);
                incl = prefix4(w);
                start = _mm256_sub_epi64(_mm256_add_epi64(run, incl), w);
            } else {
                start = _mm256_cvtepu32_epi64(
                    _mm_loadu_si128((const __m128i *)(const void *)(c->offsets + t0 + j)));
            }
            over = _mm256_cmpgt_epi64(start, safe);
            if (!_mm256_testz_si256(over, over))
                break;
            _mm256_storeu_si256((__m256i *)(void *)(pp->code + j),
                                _mm256_add_epi64(base, _mm256_slli_epi64(start, 2)));
            if (native)
                run = _mm256_add_epi64(run, _mm256_permute4x64_epi64(incl, 0xff));
        }
        next = (uint64_t)_mm256_extract_epi64(run, 0);
    }
#endif
    for (; j < MF_TILE; j++) {
        uint64_t bm = c->bitmaps[t0 + j], start = native ? next : c->offsets[t0 + j];
        next = start + mf_tile_words(mf_popcount64(bm), c->desc.bits);
        /* a tile has at most 8 words, and decoding reads at most 40 bytes
         * from its start (mf_cpu_stream_at): 10 words cover both */
        pp->code[j] = c->payload_words >= 10 && start <= c->payload_words - 10
                          ? (const uint8_t *)(c->payload + start)
                          : tail_stream(c, j, start, bm, pp, bad);
    }
}
#endif

#if MF_CPU_SIMD
/* The 2-bit code streams cut at the four 16-element groups of each tile,
 * four tiles per vector. A group's first code is at bit 2 * (stored
 * elements before it) of the stream's first 16 bytes: byte popcounts
 * (doubled) summed over the bytes before it. Group 1 starts within bit
 * 32, so the low word shifted holds it; group 2 within bit 64, so a
 * two-word shift; group 3 within 32 bits of group 2. */
static void code_segments(piece *pp) {
    const __m256i c64 = _mm256_set1_epi64x(64);
    const __m256i g0 = _mm256_set1_epi64x(0xffff), g01 = _mm256_set1_epi64x(0xffffffff);
    const __m256i g2 = _mm256_set1_epi64x(0xffff00000000), zero = _mm256_setzero_si256();
    const uint64_t *revs = pp->rev;
    const uint8_t *const *code = pp->code;
    uint64_t *seg = pp->seg;
    uint32_t j;
    for (j = 0; j < MF_TILE; j += 4) {
        __m256i bits = byte_popcounts(_mm256_loadu_si256((const __m256i *)(revs + j)));
        bits = _mm256_add_epi8(bits, bits); /* two code bits per stored element */
        __m256i p1 = _mm256_sad_epu8(_mm256_and_si256(bits, g0), zero);
        __m256i p2 = _mm256_sad_epu8(_mm256_and_si256(bits, g01), zero);
        __m256i d3 = _mm256_sad_epu8(_mm256_and_si256(bits, g2), zero);
        __m256i a = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)code[j])),
            _mm_loadu_si128((const __m128i *)(const void *)code[j + 2]), 1);
        __m256i b = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)code[j + 1])),
            _mm_loadu_si128((const __m128i *)(const void *)code[j + 3]), 1);
        __m256i lo = _mm256_unpacklo_epi64(a, b), hi = _mm256_unpackhi_epi64(a, b);
        __m256i s2 = _mm256_or_si256(_mm256_srlv_epi64(lo, p2),
                                     _mm256_sllv_epi64(hi, _mm256_sub_epi64(c64, p2)));
        _mm256_storeu_si256((__m256i *)(void *)(seg + j), lo);
        _mm256_storeu_si256((__m256i *)(void *)(seg + MF_TILE + j), _mm256_srlv_epi64(lo, p1));
        _mm256_storeu_si256((__m256i *)(void *)(seg + 2 * MF_TILE + j), s2);
        _mm256_storeu_si256((__m256i *)(void *)(seg + 3 * MF_TILE + j), _mm256_srlv_epi64(s2, d3));
    }
}
#endif

/* Fills piece pc (channels or tiles 64*pc .. 64*pc+63) of chunk ch of
 * row and returns the chunk's token count. A tile whose payload range
 * leaves the payload counts in *bad and reads as 0. */
static uint32_t load_piece(const source *s, uint32_t row, uint64_t ch, uint32_t pc, piece *pp,
                           int *bad) {
    uint32_t dim = s->dim, c0 = pc * MF_TILE;
    uint64_t blocks = s->tokens / MF_TILE;
    pp->packed = 0;
    if (!s->c) {
        uint64_t t0 = ch * MF_TILE;
        uint32_t n = (uint32_t)(s->tokens - t0 < MF_TILE ? s->tokens - t0 : MF_TILE);
        mf_cpu_expand_dense(s->dense + ((uint64_t)row * s->tokens + t0) * dim + c0, n, dim, s->kind,
                            pp->buf);
        return n;
    }
    if (ch == blocks) { /* the dense window */
        uint32_t wt = s->tokens % MF_TILE;
        mf_cpu_expand_dense(s->c->window + (uint64_t)row * wt * dim + c0, wt, dim, s->kind, pp->buf);
        return wt;
    } else {
        const mf_ctensor *c = s->c;
        uint32_t bits = c->desc.bits, j, per = mf_cpu_table_floats(bits);
        uint64_t t0 = mf_unit_tile(c->desc.layout, c->desc.rows, blocks, dim, row, ch) + c0;
        uint64_t next = 0; /* native: the start of the next tile */
        int native = c->desc.layout == MF_LAYOUT_NATIVE;
        if (native) { /* the unit's offset plus the words of its tiles before c0 */
            next = c->offsets[mf_native_group(c->desc.rows, row, ch)];
#if MF_CPU_SIMD
            if (bits)
                next += words_of(c->bitmaps + t0 - c0, c0, bits);
            else
#endif
                for (j = 0; j < c0; j++)
                    next += mf_tile_words(mf_popcount64(c->bitmaps[t0 - c0 + j]), bits);
        }
        pp->packed = MF_CPU_SIMD ? bits : 0;
#if MF_CPU_SIMD
        if (bits == 4) {
            pp->zeroed = 0;
            mf_cpu_code_planes(c->scales + t0, c->zeros + t0, MF_TILE, (uint8_t *)pp->tables);
            load_packed(c, t0, native, next, pp, bad);
            return MF_TILE;
        }
#endif
        if (bits == 2 && !pp->zeroed) {
            for (j = 0; j < MF_TILE; j++)
                memset(pp->tables + (size_t)j * per, 0, 4 * sizeof(float));
            pp->zeroed = 1;
        }
        if (bits)
            mf_cpu_code_tables(bits, c->scales + t0, c->zeros + t0, MF_TILE, pp->tables);
#if MF_CPU_SIMD
        if (bits == 2) {
            load_packed(c, t0, native, next, pp, bad);
            code_segments(pp);
            return MF_TILE;
        }
#endif
        for (j = 0; j < MF_TILE; j++) {
            uint64_t bm = c->bitmaps[t0 + j], start = native ? next : c->offsets[t0 + j];
            uint32_t words = mf_tile_words(mf_popcount64(bm), bits);
            next = start + words;
            if (!in_payload(c, start, words)) {
                *bad = 1;
                bm = 0; /* reads as an empty tile */
                start = 0;
            }
            mf_cpu_expand_tile(bits, bm, pp->tables + (size_t)j * per, c->payload + start,
                               pp->buf + (size_t)j * MF_TILE);
        }
        return MF_TILE;
    }
}

#if MF_CPU_SIMD
/* The table indices of group qd (elements 16qd .. 16qd+15) of 2-bit
 * packed tile j, nibble e for element 16qd + e: 4 + code for a stored
 * element and 0 (a 0.0 entry of the table) for an absent one. pdep
 * deposits the group's codes at the positions its bitmap marks. */
static inline uint64_t nibble_indices(const piece *pp, uint32_t j, uint32_t qd) {
    uint16_t gm; /* the group's 16 bitmap bits (x86: little-endian) */
    memcpy(&gm, (const uint8_t *)(pp->rev + j) + 2 * qd, sizeof gm);
    uint64_t pres = _pdep_u64(gm, UINT64_C(0x1111111111111111));
    return _pdep_u64(pp->seg[qd * MF_TILE + j], pres * 3u) + pres * 4u;
}

#if !MF_CPU_AVX512
/* Lane order of the packed loops: a group's 16 elements sit in two
 * vectors as {0,8,1,9,2,10,3,11} and {4,12,5,13,6,14,7,15}, the order in
 * which one broadcast 64-bit word of nibbles splits by 32-bit shifts. */
static const int32_t nibble_shifts[16] = {0, 0, 4, 4, 8, 8, 12, 12, 16, 16, 20, 20, 24, 24, 28, 28};

static inline void to_lanes(__m256 lo, __m256 hi, __m256 *a, __m256 *b) {
    __m256 u = _mm256_unpacklo_ps(lo, hi), v = _mm256_unpackhi_ps(lo, hi);
    *a = _mm256_permute2f128_ps(u, v, 0x20);
    *b = _mm256_permute2f128_ps(u, v, 0x31);
}

static inline void from_lanes(__m256 a, __m256 b, float *dst) {
    __m256 u = _mm256_permute2f128_ps(a, b, 0x20), v = _mm256_permute2f128_ps(a, b, 0x31);
    _mm256_storeu_ps(dst, _mm256_shuffle_ps(u, v, 0x88));
    _mm256_storeu_ps(dst + 8, _mm256_shuffle_ps(u, v, 0xdd));
}

/* The 16 values of group qd of packed tile j, in lane order. 2 bits:
 * nibble_indices split by shifts and looked up with lane permutes.
 * 4 bits: byte indices, the code or 0x80 for an absent element (pdep as
 * above), looked up in the tile's two byte planes of fp16 values (a byte
 * shuffle reads 0 where bit 7 is set), then widened; lane order is then
 * element order. */
static inline void group_values(const piece *pp, uint32_t bits, uint32_t j, uint32_t qd, __m256 *v0,
                                __m256 *v1) {
    if (bits == 2) {
        const __m256 tab = _mm256_loadu_ps(pp->tables + 8 * j);
        __m256i w = _mm256_set1_epi64x((long long)nibble_indices(pp, j, qd));
        *v0 = _mm256_permutevar8x32_ps(
            tab, _mm256_srlv_epi32(w, _mm256_loadu_si256((const __m256i *)nibble_shifts)));
        *v1 = _mm256_permutevar8x32_ps(
            tab, _mm256_srlv_epi32(w, _mm256_loadu_si256((const __m256i *)(nibble_shifts + 8))));
    } else {
        const uint8_t *planes = (const uint8_t *)pp->tables + 32 * j;
        uint64_t rev = pp->rev[j];
        uint32_t rank = qd ? (uint32_t)__builtin_popcountll(rev << (64u - 16u * qd)) : 0u;
        uint64_t lo = _pdep_u64(rev >> (16u * qd), UINT64_C(0x0101010101010101));
        uint64_t hi = _pdep_u64(rev >> (16u * qd + 8u), UINT64_C(0x0101010101010101));
        uint32_t rank_hi = rank + (uint32_t)__builtin_popcountll(lo);
        uint64_t w0 = _pdep_u64(mf_cpu_stream_at(pp->code[j], 4u * rank), lo * 15u) |
                      ((lo << 7) ^ UINT64_C(0x8080808080808080));
        uint64_t w1 = _pdep_u64(mf_cpu_stream_at(pp->code[j], 4u * rank_hi), hi * 15u) |
                      ((hi << 7) ^ UINT64_C(0x8080808080808080));
        __m128i idx = _mm_insert_epi64(_mm_cvtsi64_si128((long long)w0), (long long)w1, 1);
        __m128i l = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)planes), idx);
        __m128i h = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(planes + 16)), idx);
        *v0 = _mm256_cvtph_ps(_mm_unpacklo_epi8(l, h));
        *v1 = _mm256_cvtph_ps(_mm_unpackhi_epi8(l, h));
    }
}

/* piece_mac's sums for lanes 16qd .. 16qd+15 of nh <= 4 heads of a
 * packed piece, all accumulators in registers; x rows hold the heads side
 * by side, so one pointer serves them all. */
static inline __attribute__((always_inline)) void packed_quarter(
    const piece *pp, uint32_t bits, uint32_t qd, const float *x, size_t xs, uint32_t n, uint32_t nh,
    int accumulate, float *o, size_t os) {
    uint32_t j, h;
    __m256 a[4][2];
    for (h = 0; h < nh; h++) {
        __m256 lo = _mm256_setzero_ps(), hi = lo;
        if (accumulate) {
            lo = _mm256_loadu_ps(o + h * os + 16 * qd);
            hi = _mm256_loadu_ps(o + h * os + 16 * qd + 8);
        }
        if (bits == 2)
            to_lanes(lo, hi, &a[h][0], &a[h][1]);
        else
            a[h][0] = lo, a[h][1] = hi;
    }
    for (j = 0; j < n; j++) {
        __m256 v0, v1;
        group_values(pp, bits, j, qd, &v0, &v1);
        for (h = 0; h < nh; h++) {
            __m256 xv = _mm256_broadcast_ss(x + (size_t)j * xs + h);
            a[h][0] = _mm256_fmadd_ps(xv, v0, a[h][0]);
            a[h][1] = _mm256_fmadd_ps(xv, v1, a[h][1]);
        }
    }
    for (h = 0; h < nh; h++) {
        if (bits == 2)
            from_lanes(a[h][0], a[h][1], o + h * os + 16 * qd);
        else {
            _mm256_storeu_ps(o + h * os + 16 * qd, a[h][0]);
            _mm256_storeu_ps(o + h * os + 16 * qd + 8, a[h][1]);
        }
    }
}

#else /* AVX-512 */
/* 64 bits of a 4-bit code stream from code n on (n <= 48: at most 33
 * bytes read). */
static inline uint64_t codes_at(const uint8_t *s, uint32_t n) {
    uint32_t sh = 4u * (n & 1u);
    uint64_t x;
    memcpy(&x, s + n / 2u, sizeof x);
    return x >> sh | (uint64_t)s[n / 2u + 8u] << 1 << (63u - sh);
}

/* group_values 16 lanes wide. 2 bits: the broadcast word of
 * nibble_indices split by one 32-bit shift puts elements
 * {0,8,1,9,..,7,15} in the lanes (lane 2k: low word >> 4k, lane 2k+1:
 * high word >> 4k) and one permute looks them up (it reads the low 4
 * bits, the nibble). 4 bits: the codes deposited as nibbles, each
 * spread to a 16-bit lane by a multishift, looked up among the tile's 16
 * fp16 values by a word permute that zeroes the absent elements, then
 * converted; element order. */
static inline __m512 group_values16(const piece *pp, uint32_t bits, uint32_t j, uint32_t qd) {
    if (bits == 2) {
        const __m512i shifts = _mm512_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12, 16, 16, 20, 20, 24, 24, 28, 28);
        /* indices are at most 7: the upper half is never read */
        const __m512 tab = _mm512_castps256_ps512(_mm256_loadu_ps(pp->tables + 8 * j));
        __m512i w = _mm512_set1_epi64((long long)nibble_indices(pp, j, qd));
        return _mm512_permutexvar_ps(_mm512_srlv_epi32(w, shifts), tab);
    } else {
        const __m256i tab = _mm256_loadu_si256((const __m256i *)(const void *)(pp->tables + 8 * j));
        const __m256i nib = _mm256_setr_epi16(0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52, 56, 60);
        uint64_t rev = pp->rev[j];
        uint32_t rank = qd ? (uint32_t)__builtin_popcountll(rev << (64u - 16u * qd)) : 0u;
        uint64_t pres = _pdep_u64(rev >> (16u * qd), UINT64_C(0x1111111111111111));
        uint64_t w = _pdep_u64(codes_at(pp->code[j], rank), pres * 15u);
        __m256i idx = _mm256_multishift_epi64_epi8(nib, _mm256_set1_epi64x((long long)w));
        return _mm512_cvtph_ps(_mm256_maskz_permutexvar_epi16((__mmask16)(rev >> (16u * qd)), idx, tab));
    }
}

/* packed_quarter 16 lanes wide; 2-bit lanes are permuted from and to
 * element order around the loop. */
static inline __attribute__((always_inline)) void packed_quarter16(
    const piece *pp, uint32_t bits, uint32_t qd, const float *x, size_t xs, uint32_t n, uint32_t nh,
    int accumulate, float *o, size_t os) {
    const __m512i to = _mm512_setr_epi32(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);
    const __m512i from = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    uint32_t j, h;
    __m512 a[4];
    for (h = 0; h < nh; h++) {
        a[h] = accumulate ? _mm512_loadu_ps(o + h * os + 16 * qd) : _mm512_setzero_ps();
        if (bits == 2)
            a[h] = _mm512_permutexvar_ps(to, a[h]);
    }
    for (j = 0; j < n; j++) {
        __m512 v = group_values16(pp, bits, j, qd);
        for (h = 0; h < nh; h++)
            a[h] = _mm512_fmadd_ps(_mm512_set1_ps(x[(size_t)j * xs + h]), v, a[h]);
    }
    for (h = 0; h < nh; h++)
        _mm512_storeu_ps(o + h * os + 16 * qd, bits == 2 ? _mm512_permutexvar_ps(from, a[h]) : a[h]);
}
#endif

/* The four quarters written out, so each loop sees its group as a
 * constant (shifts by immediates, no rank for the first). Always inlined:
 * out of line, with its width and head count not constants, a call took
 * 2.4 ms instead of 1.7. */
static inline __attribute__((always_inline)) void packed_mac(const piece *pp, uint32_t bits, const float *x, size_t xs, uint32_t n,
                              uint32_t nh, int accumulate, float *o, size_t os) {
#if MF_CPU_AVX512
    packed_quarter16(pp, bits, 0, x, xs, n, nh, accumulate, o, os);
    packed_quarter16(pp, bits, 1, x, xs, n, nh, accumulate, o, os);
    packed_quarter16(pp, bits, 2, x, xs, n, nh, accumulate, o, os);
    packed_quarter16(pp, bits, 3, x, xs, n, nh, accumulate, o, os);
#else
    packed_quarter(pp, bits, 0, x, xs, n, nh, accumulate, o, os);
    packed_quarter(pp, bits, 1, x, xs, n, nh, accumulate, o, os);
    packed_quarter(pp, bits, 2, x, xs, n, nh, accumulate, o, os);
    packed_quarter(pp, bits, 3, x, xs, n, nh, accumulate, o, os);
#endif
}

/* packed_mac over a group of heads, four at a time, specialized by code
 * width. */
static void packed_group(const piece *pp, const float *x, size_t xs, uint32_t n, uint32_t group,
                         int accumulate, float *o, size_t os) {
    uint32_t h = 0;
    for (; h + 4 <= group; h += 4) {
        if (pp->packed == 2)
            packed_mac(pp, 2, x + h, xs, n, 4, accumulate, o + h * os, os);
        else
            packed_mac(pp, 4, x + h, xs, n, 4, accumulate, o + h * os, os);
    }
    for (; h < group; h++) {
        if (pp->packed == 2)
            packed_mac(pp, 2, x + h, xs, n, 1, accumulate, o + h * os, os);
        else
            packed_mac(pp, 4, x + h, xs, n, 1, accumulate, o + h * os, os);
    }
}
#endif

/* For every head h of the group and the piece's 64 lanes i:
 * o[h][i] = fma chain over rows j < n in order of fma(x[j][h], piece row j
 * element i, acc), from o[h][i] (accumulate) or +0. Key scores: rows are
 * channels, x is q transposed, o the scores, continuing the chains of
 * earlier pieces; value combine: rows are tokens, x the weights
 * transposed, o the outputs. x rows are xs floats apart, o rows os. */
static void piece_mac(const piece *pp, const float *x, size_t xs, uint32_t n, uint32_t group,
                      int accumulate, float *o, size_t os) {
    uint32_t h, j, i;
#if MF_CPU_SIMD
    if (pp->packed) {
        packed_group(pp, x, xs, n, group, accumulate, o, os);
        return;
    }
#endif
    for (h = 0; h < group; h++) {
        float *oh = o + h * os;
#if MF_CPU_AVX512
        /* 64 chains in 4 registers; _mm512_fmadd_ps is fmaf per lane */
        __m512 a[4];
        for (i = 0; i < 4; i++)
            a[i] = accumulate ? _mm512_loadu_ps(oh + 16 * i) : _mm512_setzero_ps();
        for (j = 0; j < n; j++) {
            const float *row = pp->buf + (size_t)j * MF_TILE;
            __m512 xv = _mm512_set1_ps(x[(size_t)j * xs + h]);
            for (i = 0; i < 4; i++)
                a[i] = _mm512_fmadd_ps(xv, _mm512_loadu_ps(row + 16 * i), a[i]);
        }
        for (i = 0; i < 4; i++)
            _mm512_storeu_ps(oh + 16 * i, a[i]);
#elif MF_CPU_SIMD
        /* 64 chains in 8 registers; _mm256_fmadd_ps is fmaf per lane */
        __m256 a[8];
        for (i = 0; i < 8; i++)
            a[i] = accumulate ? _mm256_loadu_ps(oh + 8 * i) : _mm256_setzero_ps();
        for (j = 0; j < n; j++) {
            const float *row = pp->buf + (size_t)j * MF_TILE;
            __m256 xv = _mm256_broadcast_ss(x + (size_t)j * xs + h);
            for (i = 0; i < 8; i++)
                a[i] = _mm256_fmadd_ps(xv, _mm256_loadu_ps(row + 8 * i), a[i]);
        }
        for (i = 0; i < 8; i++)
            _mm256_storeu_ps(oh + 8 * i, a[i]);
#else
        if (!accumulate)
            for (i = 0; i < MF_TILE; i++)
                oh[i] = 0.0f;
        for (j = 0; j < n; j++)
            for (i = 0; i < MF_TILE; i++)
                oh[i] = MF_FMA(x[(size_t)j * xs + h], pp->buf[(size_t)j * MF_TILE + i], oh[i]);
#endif
    }
}

/* nh query rows of q ([nh][dim] fp16) as fp32, transposed: qt[c][h]. */
static void load_q(const uint16_t *q, uint32_t nh, uint32_t dim, float *qt) {
    uint32_t h, c;
    for (h = 0; h < nh; h++) {
        const uint16_t *qh = q + (size_t)h * dim;
#if MF_CPU_SIMD
        /* F16C gives mf_h2f's value for every fp16 but a signaling NaN,
         * which it quiets as the first FMA on it would: same scores */
        for (c = 0; c < dim; c += 8) {
            float f[8];
            uint32_t i;
            _mm256_storeu_ps(f, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(qh + c))));
            for (i = 0; i < 8; i++)
                qt[(size_t)(c + i) * nh + h] = f[i];
        }
#else
        for (c = 0; c < dim; c++)
            qt[(size_t)c * nh + h] = mf_h2f(qh[c]);
#endif
    }
}

/* Scores of a whole chunk: sc[h][t] = canon(sum over c of fma(...)). */
static uint32_t chunk_scores(const source *k, uint32_t row, uint64_t ch, const float *qt,
                             uint32_t group, piece *pp, float *sc, int *bad) {
    uint32_t pc, i, n = 0;
    for (i = 0; i < group * MF_TILE; i++)
        sc[i] = 0.0f;
    for (pc = 0; pc < k->dim / MF_TILE; pc++) {
        n = load_piece(k, row, ch, pc, pp, bad);
        piece_mac(pp, qt + (size_t)pc * MF_TILE * group, group, MF_TILE, group, 1, sc, MF_TILE);
    }
    for (i = 0; i < group * MF_TILE; i++)
        sc[i] = mf_canon(sc[i]);
    return n;
}

#if MF_CPU_SIMD
/* mf_exp of 8 lanes: the same operations in the same order (numerics.h),
 * each a single IEEE operation, so every lane equals mf_exp. */
static __m256 exp8(__m256 x) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 kf = _mm256_floor_ps(
        _mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(MF_EXP_LOG2E)), _mm256_set1_ps(0.5f)));
    __m256 kc = _mm256_min_ps(_mm256_max_ps(kf, _mm256_set1_ps(-126.0f)), _mm256_set1_ps(127.0f));
    __m256 nk = _mm256_xor_ps(kc, sign);
    __m256 r = _mm256_fmadd_ps(nk, _mm256_set1_ps(MF_EXP_LN2_HI), x);
    __m256 p = _mm256_set1_ps(MF_EXP_C6), y;
    r = _mm256_fmadd_ps(nk, _mm256_set1_ps(MF_EXP_LN2_LO), r);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(MF_EXP_C5));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(MF_EXP_C4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(MF_EXP_C3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(MF_EXP_C2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    y = _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(
                             _mm256_add_epi32(_mm256_cvttps_epi32(kc), _mm256_set1_epi32(127)), 23)));
    y = _mm256_blendv_ps(y, _mm256_setzero_ps(), _mm256_cmp_ps(kf, _mm256_set1_ps(-126.0f), _CMP_LT_OQ));
    y = _mm256_blendv_ps(y, _mm256_castsi256_ps(_mm256_set1_epi32(0x7f800000)),
                         _mm256_cmp_ps(kf, _mm256_set1_ps(127.0f), _CMP_GT_OQ));
    return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}
#endif

#if MF_CPU_AVX512
/* exp8 16 lanes wide: the same operations in the same order. */
static __m512 exp16(__m512 x) {
    __m512 kf = _mm512_roundscale_ps(
        _mm512_add_ps(_mm512_mul_ps(x, _mm512_set1_ps(MF_EXP_LOG2E)), _mm512_set1_ps(0.5f)),
        _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m512 kc = _mm512_min_ps(_mm512_max_ps(kf, _mm512_set1_ps(-126.0f)), _mm512_set1_ps(127.0f));
    __m512 nk = _mm512_castsi512_ps(
        _mm512_xor_si512(_mm512_castps_si512(kc), _mm512_castps_si512(_mm512_set1_ps(-0.0f))));
    __m512 r = _mm512_fmadd_ps(nk, _mm512_set1_ps(MF_EXP_LN2_HI), x);
    __m512 p = _mm512_set1_ps(MF_EXP_C6), y;
    r = _mm512_fmadd_ps(nk, _mm512_set1_ps(MF_EXP_LN2_LO), r);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(MF_EXP_C5));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(MF_EXP_C4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(MF_EXP_C3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(MF_EXP_C2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    y = _mm512_mul_ps(p, _mm512_castsi512_ps(_mm512_slli_epi32(
                             _mm512_add_epi32(_mm512_cvttps_epi32(kc), _mm512_set1_epi32(127)), 23)));
    y = _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(kf, _mm512_set1_ps(-126.0f), _CMP_LT_OQ),
                           _mm512_setzero_ps());
    y = _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(kf, _mm512_set1_ps(127.0f), _CMP_GT_OQ),
                           _mm512_castsi512_ps(_mm512_set1_epi32(0x7f800000)));
    return _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), x);
}
#endif

void mf_cpu_exp_shifted(const float *x, float m, uint32_t n, float *e) {
    uint32_t t = 0;
#if MF_CPU_AVX512
    for (; t + 16 <= n; t += 16)
        _mm512_storeu_ps(e + t, exp16(_mm512_sub_ps(_mm512_loadu_ps(x + t), _mm512_set1_ps(m))));
#endif
#if MF_CPU_SIMD
    for (; t + 8 <= n; t += 8)
        _mm256_storeu_ps(e + t, exp8(_mm256_sub_ps(_mm256_loadu_ps(x + t), _mm256_set1_ps(m))));
#endif
    for (; t < n; t++)
        e[t] = mf_exp(MF_SUB(x[t], m));
}

/* max over x[0..n) folded in order, m = x[t] > m ? x[t] : m from x[0]:
 * with SIMD, lanes fold strided subsequences by the same rule (maxps is
 * exactly it) and then fold into m in order; equal to the plain fold, as
 * a NaN is only kept where x[0] is one, and scores carry no -0. */
static float chunk_max(const float *x, uint32_t n) {
    float m = x[0];
    uint32_t t = 0;
#if MF_CPU_SIMD
    if (n >= 8) {
        float lane[8];
        __m256 mv = _mm256_set1_ps(m);
        for (; t + 8 <= n; t += 8)
            mv = _mm256_max_ps(_mm256_loadu_ps(x + t), mv);
        _mm256_storeu_ps(lane, mv);
        for (n -= t, x += t, t = 0; t < 8; t++)
            m = lane[t] > m ? lane[t] : m;
        t = 0;
    }
#endif
    for (; t < n; t++)
        m = x[t] > m ? x[t] : m;
    return m;
}

/* The weights x[h][t] (rows xs floats apart) of n tokens transposed into
 * et[t][h]; with l, also l[h * ls] = sum over t < n in order of x[h][t].
 * With SIMD four heads at a time: 4 x 4 transposes, and the sums four
 * heads per vector, each lane its own ordered sum. */
static void put_weights(const float *x, size_t xs, uint32_t n, uint32_t group, float *et,
                        float *l, size_t ls) {
    uint32_t h = 0, t, k;
#if MF_CPU_SIMD
    for (; h + 4 <= group; h += 4) {
        float lane[4];
        __m128 acc = _mm_setzero_ps(), r[4];
        for (t = 0; t + 4 <= n; t += 4) {
            for (k = 0; k < 4; k++)
                r[k] = _mm_loadu_ps(x + (h + k) * xs + t);
            _MM_TRANSPOSE4_PS(r[0], r[1], r[2], r[3]);
            for (k = 0; k < 4; k++) {
                _mm_storeu_ps(et + (size_t)(t + k) * group + h, r[k]);
                acc = _mm_add_ps(acc, r[k]);
            }
        }
        for (; t < n; t++) {
            for (k = 0; k < 4; k++)
                lane[k] = x[(h + k) * xs + t];
            r[0] = _mm_loadu_ps(lane);
            _mm_storeu_ps(et + (size_t)t * group + h, r[0]);
            acc = _mm_add_ps(acc, r[0]);
        }
        _mm_storeu_ps(lane, acc);
        for (k = 0; l && k < 4; k++)
            l[(h + k) * ls] = lane[k];
    }
#endif
    for (; h < group; h++) {
        float acc = 0.0f;
        for (t = 0; t < n; t++) {
            et[(size_t)t * group + h] = x[h * xs + t];
            acc = MF_ADD(acc, x[h * xs + t]);
        }
        if (l)
            l[h * ls] = acc;
    }
    (void)k;
}

/* A softmax state per query head: [m, l, o[dim]]. */
static size_t state_floats(uint32_t dim, uint32_t group) { return (size_t)group * (dim + 2u); }

/* a <- merge(a, b): a is the left (earlier) subtree. */
static void merge_states(float *restrict a, const float *restrict b, uint32_t dim,
                         uint32_t group) {
    uint32_t h, c, k, nf;
    for (h = 0; h < group; h += nf) {
        float m[4], f[8]; /* f: fa of each head, then fb */
        nf = group - h < 4 ? group - h : 4;
#if MF_CPU_SIMD
        /* four heads' factors in one exp8: maxps is the rule's max and
         * exp8 is mf_exp in every lane */
        if (nf == 4) {
            float ms[8];
            __m128 ma, mb, mm;
            for (k = 0; k < 4; k++) {
                ms[k] = a[(size_t)(h + k) * (dim + 2u)];
                ms[4 + k] = b[(size_t)(h + k) * (dim + 2u)];
            }
            ma = _mm_loadu_ps(ms), mb = _mm_loadu_ps(ms + 4), mm = _mm_max_ps(ma, mb);
            _mm_storeu_ps(m, mm);
            _mm256_storeu_ps(f, exp8(_mm256_sub_ps(_mm256_loadu_ps(ms),
                                                   _mm256_set_m128(mm, mm))));
        } else
#endif
            for (k = 0; k < nf; k++)
                mf_merge_factors(a[(size_t)(h + k) * (dim + 2u)], b[(size_t)(h + k) * (dim + 2u)],
                                 &m[k], &f[k], &f[4 + k]);
        for (k = 0; k < nf; k++) {
            float *x = a + (size_t)(h + k) * (dim + 2u), fa = f[k], fb = f[4 + k];
            const float *y = b + (size_t)(h + k) * (dim + 2u);
            x[0] = m[k];
            x[1] = mf_merge_term(x[1], fa, y[1], fb);
#if MF_CPU_AVX512
            /* mf_merge_term per lane: two products and a sum, each rounded */
            for (c = 0; c < dim; c += 16)
                _mm512_storeu_ps(
                    x + 2 + c, _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(x + 2 + c), _mm512_set1_ps(fa)),
                                             _mm512_mul_ps(_mm512_loadu_ps(y + 2 + c), _mm512_set1_ps(fb))));
#elif MF_CPU_SIMD
            /* mf_merge_term per lane: two products and a sum, each rounded */
            for (c = 0; c < dim; c += 8)
                _mm256_storeu_ps(
                    x + 2 + c, _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(x + 2 + c), _mm256_set1_ps(fa)),
                                             _mm256_mul_ps(_mm256_loadu_ps(y + 2 + c), _mm256_set1_ps(fb))));
#else
            for (c = 0; c < dim; c++)
                x[2 + c] = mf_merge_term(x[2 + c], fa, y[2 + c], fb);
#endif
        }
    }
}

/* The merge tree as a binary counter: leaf k is pushed, equal-level tops
 * merge, and at the end the stack folds from the top. This equals the
 * recursive rule of SPEC.md (split n leaves at the largest power of two
 * below n). slot(i) addresses stack entry i. */
typedef struct tree {
    uint32_t depth;
    uint32_t level[40];
} tree;

static void tree_push(tree *tr, float *(*slot)(void *, uint32_t), void *ctx, uint32_t dim,
                      uint32_t group) {
    tr->level[tr->depth++] = 0;
    while (tr->depth >= 2 && tr->level[tr->depth - 1] == tr->level[tr->depth - 2]) {
        merge_states(slot(ctx, tr->depth - 2), slot(ctx, tr->depth - 1), dim, group);
        tr->level[tr->depth - 2]++;
        tr->depth--;
    }
}

static void tree_fold(tree *tr, float *(*slot)(void *, uint32_t), void *ctx, uint32_t dim,
                      uint32_t group) {
    while (tr->depth >= 2) {
        merge_states(slot(ctx, tr->depth - 2), slot(ctx, tr->depth - 1), dim, group);
        tr->depth--;
    }
}

/* Per-thread scratch. */
typedef struct scratch {
    piece pc;
    float *qt, *sc, *et, *stack; /* q and the weights transposed: [dim][group], [64][group] */
    size_t state;
} scratch;

/* Per-thread scratch: the piece, q, scores, weights and the tree stack;
 * a multiple of 16 floats so every thread's part stays 64-byte aligned. */
static size_t scratch_floats(uint32_t dim, uint32_t group) {
    size_t n = PIECE_FLOATS + (size_t)group * dim +
               2u * (size_t)group * MF_TILE + LEVELS * state_floats(dim, group);
    return (n + 15u) & ~(size_t)15u;
}

static float *stack_slot(void *ctx, uint32_t i) {
    scratch *w = (scratch *)ctx;
    return w->stack + (size_t)i * w->state;
}

typedef struct partials {
    float *base;
    size_t state;
    uint64_t first;
} partials;

static float *partial_slot(void *ctx, uint32_t i) {
    partials *p = (partials *)ctx;
    return p->base + (p->first + i) * p->state;
}

/* What a unit computes: full attention, or only p.V (p given, m = 0 so
 * every merge factor is exp(0) = 1 and merges are plain sums). */
typedef struct job {
    source k, v;
    const uint16_t *q; /* attention */
    const float *p;    /* value combine: [rows*group, tokens] */
    uint32_t rows, tokens, dim, group;
} job;

/* Softmax state of chunks [c0, c1) of row into out (state layout). */
static void run_unit(const job *jb, scratch *w, uint32_t row, uint64_t c0, uint64_t c1,
                     float *out, int *bad) {
    uint32_t dim = jb->dim, group = jb->group, h, t, pc;
    float scale = mf_score_scale(dim);
    tree tr;
    uint64_t ch;
    tr.depth = 0;
    if (jb->q)
        load_q(jb->q + (size_t)row * group * dim, group, dim, w->qt);
    for (ch = c0; ch < c1; ch++) {
        uint32_t n;
        float *st = stack_slot(w, tr.depth);
        if (jb->q) {
            n = chunk_scores(&jb->k, row, ch, w->qt, group, &w->pc, w->sc, bad);
            for (h = 0; h < group; h++) {
                float *x = w->sc + (size_t)h * MF_TILE, m;
                for (t = 0; t < n; t++)
                    x[t] = MF_MUL(x[t], scale);
                m = chunk_max(x, n);
                mf_cpu_exp_shifted(x, m, n, x);
                st[(size_t)h * (dim + 2u)] = m;
            }
            put_weights(w->sc, MF_TILE, n, group, w->et, st + 1, dim + 2u);
        } else {
            n = (uint32_t)(jb->tokens - ch * MF_TILE < MF_TILE ? jb->tokens - ch * MF_TILE : MF_TILE);
            put_weights(jb->p + (size_t)row * group * jb->tokens + ch * MF_TILE, jb->tokens, n, group,
                        w->et, NULL, 0);
            for (h = 0; h < group; h++) {
                st[(size_t)h * (dim + 2u)] = 0.0f;
                st[(size_t)h * (dim + 2u) + 1] = 0.0f;
            }
        }
        for (pc = 0; pc < dim / MF_TILE; pc++) {
            load_piece(&jb->v, row, ch, pc, &w->pc, bad);
            piece_mac(&w->pc, w->et, group, n, group, 0, st + 2 + pc * MF_TILE, dim + 2u);
        }
        tree_push(&tr, stack_slot, w, dim, group);
    }
    tree_fold(&tr, stack_slot, w, dim, group);
    memcpy(out, w->stack, w->state * sizeof *out);
}

static int max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static size_t job_floats(uint32_t rows, uint32_t tokens, uint32_t dim, uint32_t group,
                         int threads) {
    uint64_t segs = (chunks_of(tokens) + SEG - 1) / SEG;
    return (size_t)rows * segs * state_floats(dim, group) +
           (size_t)threads * scratch_floats(dim, group);
}

size_t mf_cpu_attend_workspace(uint32_t rows, uint32_t tokens, uint32_t dim, uint32_t group) {
    return job_floats(rows, tokens, dim, group, max_threads()) * sizeof(float);
}

/* Runs a job: units in parallel, then per-row merge of unit states.
 * finish: 1 writes canon(o / l) (attention), 0 writes canon(o). */
static mf_status run_job(const job *jb, float *out, float *ws, size_t ws_bytes) {
    uint32_t dim = jb->dim, group = jb->group;
    uint64_t nch = chunks_of(jb->tokens), segs = (nch + SEG - 1) / SEG;
    size_t state = state_floats(dim, group);
    int threads = max_threads(), bad = 0;
    float *part = ws, *scr = ws + (size_t)jb->rows * segs * state;
    size_t fit;
    if (ws_bytes < job_floats(jb->rows, jb->tokens, dim, group, 1) * sizeof(float))
        return MF_ERR_BUFFER_SMALL;
    /* A workspace sized for fewer threads than now allowed (the thread
     * count changed after the query) runs on as many as it has room for:
     * the result does not depend on it. */
    fit = (ws_bytes / sizeof(float) - (size_t)jb->rows * segs * state) / scratch_floats(dim, group);
    if ((size_t)threads > fit)
        threads = (int)fit;

#pragma omp parallel num_threads(threads) reduction(| : bad)
    {
        int tid = 0;
        scratch w;
        float *base;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        base = scr + (size_t)tid * scratch_floats(dim, group);
        w.qt = piece_bind(&w.pc, base);
        w.sc = w.qt + (size_t)group * dim;
        w.et = w.sc + (size_t)group * MF_TILE;
        w.stack = w.et + (size_t)group * MF_TILE;
        w.state = state;
#pragma omp for schedule(dynamic, 1)
        for (long long u = 0; u < (long long)(jb->rows * segs); u++) {
            uint32_t row = (uint32_t)((uint64_t)u / segs);
            uint64_t sg = (uint64_t)u % segs, c0 = sg * SEG, c1 = c0 + SEG < nch ? c0 + SEG : nch;
            run_unit(jb, &w, row, c0, c1, part + (size_t)u * state, &bad);
        }
#pragma omp for schedule(static)
        for (long long r = 0; r < (long long)jb->rows; r++) {
            partials p;
            tree tr;
            uint64_t sg;
            uint32_t h, c;
            p.base = part;
            p.state = state;
            p.first = (uint64_t)r * segs;
            tr.depth = 0;
            for (sg = 0; sg < segs; sg++) {
                /* Leaf sg becomes stack entry tr.depth (<= sg): after a
                 * merge the stack is shorter than the leaves pushed. */
                if (tr.depth != sg)
                    memcpy(partial_slot(&p, tr.depth), partial_slot(&p, (uint32_t)sg),
                           state * sizeof(float));
                tree_push(&tr, partial_slot, &p, dim, group);
            }
            tree_fold(&tr, partial_slot, &p, dim, group);
            for (h = 0; h < group; h++) {
                const float *x = part + (size_t)r * segs * state + (size_t)h * (dim + 2u);
                float *o = out + ((size_t)r * group + h) * dim;
                for (c = 0; c < dim; c++)
                    o[c] = mf_canon(jb->q ? MF_DIV(x[2 + c], x[1]) : x[2 + c]);
            }
        }
    }
    return bad ? MF_ERR_OFFSET_RANGE : MF_OK;
}

static void set_source(source *s, const mf_ctensor *c, const uint16_t *dense, mf_kind kind,
                       uint32_t tokens, uint32_t dim) {
    s->c = c;
    s->dense = dense;
    s->kind = kind;
    s->tokens = tokens;
    s->dim = dim;
}

static void init_job(job *jb, uint32_t rows, uint32_t tokens, uint32_t dim, uint32_t group) {
    memset(jb, 0, sizeof *jb);
    jb->rows = rows;
    jb->tokens = tokens;
    jb->dim = dim;
    jb->group = group;
}

mf_status mf_cpu_attend(const mf_ctensor *k, const mf_ctensor *v, const uint16_t *kd,
                        const uint16_t *vd, uint32_t rows, uint32_t tokens, uint32_t dim,
                        const uint16_t *q, uint32_t group, float *out, void *ws,
                        size_t ws_bytes) {
    job jb;
    init_job(&jb, rows, tokens, dim, group);
    set_source(&jb.k, k, kd, MF_KEY, tokens, dim);
    set_source(&jb.v, v, vd, MF_VALUE, tokens, dim);
    jb.q = q;
    return run_job(&jb, out, (float *)ws, ws_bytes);
}

mf_status mf_cpu_value_combine(const mf_ctensor *v, const float *p, uint32_t group, float *out) {
    const mf_desc *d = &v->desc;
    size_t bytes = mf_cpu_attend_workspace(d->rows, d->tokens, d->dim, group);
    void *ws = malloc(bytes ? bytes : 1);
    job jb;
    mf_status st;
    if (!ws)
        return MF_ERR_NOMEM;
    init_job(&jb, d->rows, d->tokens, d->dim, group);
    set_source(&jb.v, v, NULL, MF_VALUE, d->tokens, d->dim);
    jb.p = p;
    st = run_job(&jb, out, (float *)ws, bytes);
    free(ws);
    return st;
}

/* Heads per pass of key scores: each chunk is expanded once per batch. */
#define SCORE_HEADS 8u

mf_status mf_cpu_key_scores(const mf_ctensor *k, const uint16_t *q, uint32_t group,
                            float *scores) {
    const mf_desc *d = &k->desc;
    uint64_t nch = chunks_of(d->tokens);
    int bad = 0;
    source s;
    set_source(&s, k, NULL, MF_KEY, d->tokens, d->dim);
#pragma omp parallel for schedule(static) reduction(| : bad)
    for (long long u = 0; u < (long long)(d->rows * nch); u++) {
        uint32_t row = (uint32_t)((uint64_t)u / nch), h0, h;
        uint64_t ch = (uint64_t)u % nch;
        float space[PIECE_FLOATS], qt[SCORE_HEADS * 256], sc[SCORE_HEADS * MF_TILE];
        piece pp;
        piece_bind(&pp, space);
        for (h0 = 0; h0 < group; h0 += SCORE_HEADS) {
            uint32_t nh = group - h0 < SCORE_HEADS ? group - h0 : SCORE_HEADS, n;
            load_q(q + ((size_t)row * group + h0) * d->dim, nh, d->dim, qt);
            n = chunk_scores(&s, row, ch, qt, nh, &pp, sc, &bad);
            for (h = 0; h < nh; h++)
                memcpy(scores + ((size_t)row * group + h0 + h) * d->tokens + ch * MF_TILE,
                       sc + (size_t)h * MF_TILE, n * sizeof *sc);
        }
    }
    return bad ? MF_ERR_OFFSET_RANGE : MF_OK;
}
