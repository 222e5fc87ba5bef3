/* regdecode.h - 2- and 4-bit tiles decoded in registers for the
 * tensor-core attention (tensor_rd.cu): no shared-memory scatter, no
 * zeroing, no divergence, the same fp16 bits as mf_dequant.
 *
 * A tile is read in four *parts* of 16 elements (part j: elements 16j ..
 * 16j + 15), one per lane. A part becomes eight words, word k holding
 * elements 2k (low half) and 2k + 1 as fp16, by byte permutes alone:
 *
 *  1. codes to selector bytes: the part's codes are spread to nibbles,
 *     and a PRMT over the constant 0x76543210 turns code c into the byte
 *     0x10 + 0x22c, the PRMT selector of the table's half c;
 *  2. placement: a PRMT with a per-byte-of-bitmap selector (mf_rd_lut,
 *     a table lookup) puts the n-th selector at the n-th set element and
 *     the 8th byte, forced to 0xff, at every absent one;
 *  3. values: a PRMT over the tile's four fp16 values (the table): 0xff
 *     replicates the sign of the table's top byte, which is 0 (the table
 *     is negated when all its values are negative, and the caller negates
 *     the decoded words back), so absent elements read +0.
 *
 * The per-part inputs come from mf_rd_parts, once per tile. A 4-bit
 * tile's 16 values do not fit a PRMT's 8-byte table: its parts take
 * mf_dequant's arithmetic instead (mf_rd_byte4). Everything here is plain
 * C (MF_HD) so the host tests check it against core's decoder; on the
 * device PRMT is the prmt instruction. */
#ifndef MF_CUDA_REGDECODE_H
#define MF_CUDA_REGDECODE_H

#include "../../core/tile.h"

/* prmt.b32 in its default mode: byte i of the result is byte n & 7 of
 * b:a (a the low word) for nibble n = sel >> 4i, or with n & 8 that
 * byte's sign bit replicated. */
MF_HD uint32_t mf_rd_prmt(uint32_t a, uint32_t b, uint32_t sel) {
#ifdef __CUDA_ARCH__
    uint32_t d;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(sel));
    return d;
#else
    uint64_t src = (uint64_t)b << 32 | a;
    uint32_t d = 0, i;
    for (i = 0; i < 4; i++) {
        uint32_t n = sel >> (4 * i) & 0xfu, byte = (uint32_t)(src >> (8 * (n & 7u))) & 0xffu;
        if (n & 8u)
            byte = byte & 0x80u ? 0xffu : 0u;
        d |= byte << (8 * i);
    }
    return d;
#endif
}

/* Bits [sh, sh + 32) of hi:lo, sh < 32. */
MF_HD uint32_t mf_rd_funnel(uint32_t lo, uint32_t hi, uint32_t sh) {
#ifdef __CUDA_ARCH__
    return __funnelshift_r(lo, hi, sh);
#else
    return (uint32_t)(((uint64_t)hi << 32 | lo) >> sh);
#endif
}

/* The same for sh <= 32 (sh = 32: hi). */
MF_HD uint32_t mf_rd_funnel32(uint32_t lo, uint32_t hi, uint32_t sh) {
#ifdef __CUDA_ARCH__
    return __funnelshift_rc(lo, hi, sh);
#else
    return sh == 32u ? hi : mf_rd_funnel(lo, hi, sh);
#endif
}

MF_HD uint64_t mf_rd_brev64(uint64_t x) {
#ifdef __CUDA_ARCH__
    return __brevll(x);
#else
    uint64_t r = 0;
    uint32_t i;
    for (i = 0; i < 64; i++)
        r |= (x >> i & 1u) << (63 - i);
    return r;
#endif
}

/* Placement selector of one bitmap byte (element e at bit e): nibble e is
 * the rank of e among the set elements, or where e is absent 7 (2 bits:
 * see mf_rd_byte's fix) or 8 (4 bits: the sign of byte 0, which
 * mf_rd_byte4's code bytes always have set). */
MF_HD uint32_t mf_rd_lut(uint32_t byte, uint32_t bits) {
    uint32_t r = 0, rank = 0, e;
    for (e = 0; e < 8; e++)
        r |= (byte >> e & 1u ? rank++ : bits == 4u ? 8u : 7u) << (4 * e);
    return r;
}

/* The tile's table: values of codes 0..3 as fp16 (mf_dequant's bits) in
 * *lo (codes 0, 1) and *hi (2, 3), negated when the value of code 3 has
 * its sign bit set (then every value has: code 3's is the largest).
 * Returns 1 when negated. */
MF_HD uint32_t mf_rd_table(const uint16_t v[4], uint32_t *lo, uint32_t *hi) {
    uint32_t neg = v[3] >> 15, flip = neg * 0x80008000u;
    *lo = ((uint32_t)v[1] << 16 | v[0]) ^ flip;
    *hi = ((uint32_t)v[3] << 16 | v[2]) ^ flip;
    return neg;
}

/* Per-part inputs of a tile with bitmap bm (element i at bit 63 - i) and
 * code words p0..p3 (words past the tile's own read as 0): w[j] holds the
 * part's codes from its first; b[j] packs, for the part's bitmap bytes
 * b0 (elements 16j .. 16j + 7, element 16j + e at bit e) and b1:
 *   bits 0-4    2 popcount(b0): where b1's codes start in w
 *   bits 7-14   b0 (so b & 0x7f80 is b0's table offset, 128 bytes a row)
 *   bits 16-23  b1
 *   bit 29, 30  b1, b0 not full (see mf_rd_byte's fix)
 *   bit 31      neg (mf_rd_table) */
MF_HD void mf_rd_parts(uint64_t bm, uint32_t p0, uint32_t p1, uint32_t p2, uint32_t p3,
                       uint32_t neg, uint32_t w[4], uint32_t b[4]) {
    uint64_t rb = mf_rd_brev64(bm);
    uint32_t rank = 0, j;
    for (j = 0; j < 4; j++) {
        uint32_t part = (uint32_t)(rb >> (16 * j)) & 0xffffu, b0 = part & 0xffu, b1 = part >> 8;
        uint32_t n0 = (uint32_t)mf_popcount64(b0), n1 = (uint32_t)mf_popcount64(b1);
        /* rank <= 16 j, so part j's codes start in words 0..j: word pairs
         * (p0, p1) up to bit 32, then (p1, p2) and (p2, p3), the last bit
         * of each range reading the pair's second word (mf_rd_funnel32) */
        uint32_t sh = 2 * rank, lo = p0, hi = p1;
        if (j >= 2 && sh > 32u) {
            lo = j >= 3 && sh > 64u ? p2 : p1;
            hi = j >= 3 && sh > 64u ? p3 : p2;
            sh -= j >= 3 && sh > 64u ? 64u : 32u;
        }
        w[j] = mf_rd_funnel32(lo, hi, sh);
        /* n0, n1 have bit 3 set only for a full byte */
        b[j] = 2 * n0 | b0 << 7 | b1 << 16 | (~n1 << 26 & 0x20000000u) | (~n0 << 27 & 0x40000000u) |
               neg << 31;
        rank += n0 + n1;
    }
}

/* Eight elements (one bitmap byte) into out[0..3]: w's low 16 bits hold
 * their codes from the first; fix (0 or 0x40000000) makes selector byte 7
 * 0xff when the byte has an absent element; sel = mf_rd_lut(byte);
 * lo, hi: the table. */
MF_HD void mf_rd_byte(uint32_t w, uint32_t fix, uint32_t sel, uint32_t lo, uint32_t hi,
                      uint32_t out[4]) {
    uint32_t x = mf_rd_prmt(w, 0u, 0x4140u); /* code bytes to bytes 0 and 2 */
    uint32_t s0, s1, e0, e1;
    x = (x | x << 4) & 0x0f0f0f0fu;
    x = ((x | x << 2) & 0x33333333u) | fix; /* code n in nibble n */
    s0 = mf_rd_prmt(0x76543210u, 0xffffffffu, x);
    s1 = mf_rd_prmt(0x76543210u, 0xffffffffu, x >> 16);
    e0 = mf_rd_prmt(s0, s1, sel);
    e1 = mf_rd_prmt(s0, s1, sel >> 16);
    out[0] = mf_rd_prmt(lo, hi, e0);
    out[1] = mf_rd_prmt(lo, hi, e0 >> 16);
    out[2] = mf_rd_prmt(lo, hi, e1);
    out[3] = mf_rd_prmt(lo, hi, e1 >> 16);
}

/* A part into out[0..7] from its w and b (mf_rd_parts), the selectors of
 * its two bytes and the table. When b's bit 31 is set the table was
 * negated: the caller flips the sign bits of out (absent elements then
 * read -0). */
MF_HD void mf_rd_part(uint32_t w, uint32_t b, uint32_t sel0, uint32_t sel1, uint32_t lo,
                      uint32_t hi, uint32_t out[8]) {
    mf_rd_byte(w, b & 0x40000000u, sel0, lo, hi, out);
    mf_rd_byte(mf_rd_funnel(w, 0u, b & 31u), (b << 1) & 0x40000000u, sel1, lo, hi, out + 4);
}

/* 4 bits: the code window of a bitmap byte whose first code has rank r
 * among the tile's nonzeros (code r + i in nibble i), from the tile's n
 * code words at p; words past them read as 0. */
MF_HD uint32_t mf_rd_window4(const uint32_t *p, uint32_t n, uint32_t r) {
    uint32_t k = r >> 3, lo = k < n ? p[k] : 0u, hi = k + 1u < n ? p[k + 1u] : 0u;
    return mf_rd_funnel(lo, hi, 4u * (r & 7u));
}

/* fp16 bits of lo (low half) and hi, each rounded to nearest even: the
 * F2FP instruction on the device, core's rounding on the host. */
MF_HD uint32_t mf_rd_pack(float lo, float hi) {
#ifdef __CUDA_ARCH__
    uint32_t d;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(d) : "f"(hi), "f"(lo));
    return d;
#else
    return (uint32_t)mf_f2h(hi) << 16 | mf_f2h(lo);
#endif
}

/* 4 bits, the fast form of a tile: where its zero z is one of the codes
 * 0..15 (mf_quant_params's zero of any tile whose values straddle 0)
 * and 0 < s <= 65504, an absent element can decode as a code equal to
 * z: (z - z) s = +0, with no mask. Such a tile's byte windows hold z as
 * code 7 where the byte has fewer than 8 codes (code 7 is then not its
 * own), its placement selectors say 7 where mf_rd_lut says 8, and its
 * record holds zr = 2^23 + 128 + z, so that one subtraction from a
 * placed code's 2^23 + 128 + c gives c - z exactly (both are integers
 * below 2^24). Other tiles keep z and the mask. */
MF_HD int mf_rd_fast4(float s, float z) {
    return z >= 0.0f && z <= 15.0f && (float)(int)z == z && s > 0.0f && s <= 65504.0f;
}

/* The record's zero of a tile (s, z), and whether a record's zero is
 * fast (zr in [2^23 + 128, 2^23 + 143], which no fp16 reaches). */
MF_HD float mf_rd_zero4(float s, float z) { return mf_rd_fast4(s, z) ? MF_ADD(8388736.0f, z) : z; }
MF_HD int mf_rd_isfast4(float zr) { return mf_f32_bits(zr) - 0x4b000080u < 16u; }

/* A bitmap byte's window w and selector sel (mf_rd_window4, mf_rd_lut(byte,
 * 4)) in the fast form of a tile whose zero is the code z. */
MF_HD void mf_rd_fastbyte4(uint32_t byte, uint32_t z, uint32_t *w, uint32_t *sel) {
    if (byte != 0xffu)
        *w = (*w & 0x0fffffffu) | z << 28;
    *sel ^= (*sel >> 3 & 0x11111111u) * 15u; /* nibbles 8 -> 7 */
}

/* 4 bits: eight elements (one bitmap byte) into out[0..3], as mf_dequant
 * computes them: w holds their codes from the first (mf_rd_window4), sel
 * = mf_rd_lut(byte, 4), s the tile's scale and zr its record's zero
 * (both in the fast form where mf_rd_isfast4(zr)); fast: every lane's
 * tile is (so its part takes no mask).
 *
 *  1. the codes spread to bytes 0x80 + c (the top bit marks a code), and
 *     placed by sel as in mf_rd_byte: absent elements read 0xff, or in
 *     the fast form 0x80 + z;
 *  2. each element's byte goes into the low byte of 2^23 (one PRMT):
 *     2^23 + 128 + c, exact; fast, c - z is that less zr; else c comes
 *     first (less 2^23 + 128) and then z, mf_dequant's rounding of c - z;
 *     then the product with s and the fp16 rounding;
 *  3. not fast, absent elements (bit 6 of 0xff, clear in 0x80 + c) are
 *     cleared to +0 by a mask of their bytes' sign after a shift (in a
 *     fast tile they are +0 already). */
MF_HD void mf_rd_byte4(uint32_t w, uint32_t sel, float s, float zr, int fast, uint32_t out[4]) {
    uint32_t lo = (w & 0x0f0f0f0fu) | 0x80808080u, hi = (w >> 4 & 0x0f0f0f0fu) | 0x80808080u;
    uint32_t s0 = mf_rd_prmt(lo, hi, 0x5140u), s1 = mf_rd_prmt(lo, hi, 0x7362u), e[2], k;
    const float z = fast || !mf_rd_isfast4(zr) ? zr : MF_SUB(zr, 8388736.0f);
    e[0] = mf_rd_prmt(s0, s1, sel);
    e[1] = mf_rd_prmt(s0, s1, sel >> 16);
    for (k = 0; k < 4; k++) {
        const uint32_t x = e[k / 2], b = 2 * (k % 2);
        const float f0 = mf_bits_f32(mf_rd_prmt(x, 0x4b000000u, 0x7540u + b));
        const float f1 = mf_bits_f32(mf_rd_prmt(x, 0x4b000000u, 0x7541u + b));
        if (fast) {
            out[k] = mf_rd_pack(MF_MUL(MF_SUB(f0, z), s), MF_MUL(MF_SUB(f1, z), s));
        } else {
            const float d0 = MF_SUB(MF_SUB(f0, 8388736.0f), z), d1 = MF_SUB(MF_SUB(f1, 8388736.0f), z);
            const uint32_t absent = mf_rd_prmt(x << 1, 0u, 0x9988u + 0x1111u * b);
            out[k] = mf_rd_pack(MF_MUL(d0, s), MF_MUL(d1, s)) & ~absent;
        }
    }
}

/* 4 bits: a part into out[0..7] from the code windows w0, w1 of its two
 * bitmap bytes, their selectors, the tile's scale and record zero, and
 * the path (all as mf_rd_byte4). */
MF_HD void mf_rd_part4(uint32_t w0, uint32_t w1, uint32_t sel0, uint32_t sel1, float s, float zr,
                       int fast, uint32_t out[8]) {
    mf_rd_byte4(w0, sel0, s, zr, fast, out);
    mf_rd_byte4(w1, sel1, s, zr, fast, out + 4);
}

#endif
