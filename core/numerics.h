/*
 * numerics.h - the one source of arithmetic that every backend shares.
 *
 * Compiled by the C compiler (C99, -ffp-contract=off) and by nvcc
 * (-fmad=false, no fast math). formats/SPEC.md, section "Arithmetic",
 * states the same operations in words; the two must agree.
 * MF_MUL/MF_ADD/MF_SUB/MF_DIV are single IEEE binary32 operations rounded
 * to nearest even; MF_FMA is fused (one rounding).
 */
#ifndef MF_NUMERICS_H
#define MF_NUMERICS_H

#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define MF_HD __host__ __device__ static inline
#else
#define MF_HD static inline
#endif

/* nvcc's device pass: intrinsics, so -fmad and fast-math cannot change a
 * rounding. Host passes (gcc, and nvcc's host side): plain C. */
#ifdef __CUDA_ARCH__
#define MF_MUL(a, b) __fmul_rn((a), (b))
#define MF_ADD(a, b) __fadd_rn((a), (b))
#define MF_SUB(a, b) __fsub_rn((a), (b))
#define MF_DIV(a, b) __fdiv_rn((a), (b))
#define MF_FMA(a, b, c) __fmaf_rn((a), (b), (c))
#else
#include <math.h>
#define MF_MUL(a, b) ((a) * (b))
#define MF_ADD(a, b) ((a) + (b))
#define MF_SUB(a, b) ((a) - (b))
#define MF_DIV(a, b) ((a) / (b))
#define MF_FMA(a, b, c) fmaf((a), (b), (c))
#endif

#define MF_TILE 64u /* elements per tile, tokens per block */

MF_HD uint32_t mf_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

MF_HD float mf_bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* fp16 -> fp32, exact; NaN payloads kept. The device converts finite
 * values with the hardware's exact conversion (the same bits, one
 * instruction); infinities and NaNs take the integer code. */
MF_HD float mf_h2f(uint16_t h) {
#ifdef __CUDA_ARCH__
    if ((h & 0x7c00u) != 0x7c00u) {
        float f;
        asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
        return f;
    }
#endif
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24 is exact in fp32 */
        float f = (float)man * 5.9604644775390625e-08f;
        return mf_bits_f32(mf_f32_bits(f) | sign);
    }
    if (exp == 31)
        return mf_bits_f32(sign | 0x7f800000u | (man << 13));
    return mf_bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

/* fp32 -> fp16, round to nearest even; overflow gives infinity, any NaN
 * gives the quiet NaN 0x7e00 with the input's sign. */
MF_HD uint16_t mf_f2h(float f) {
    uint32_t x = mf_f32_bits(f);
#ifdef __CUDA_ARCH__
    if (f == f) { /* the hardware's IEEE rounding, the same bits; NaNs below */
        unsigned short r;
        asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r) : "f"(f));
        return r;
    }
#endif
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t a = x & 0x7fffffffu;
    if (a > 0x7f800000u)
        return (uint16_t)(sign | 0x7e00u);
    if (a >= 0x477ff000u) /* >= 65520: rounds to infinity */
        return (uint16_t)(sign | 0x7c00u);
    if (a >= 0x38800000u) { /* fp16 normal range */
        uint32_t r = a - (112u << 23);
        r += 0x0fffu + ((r >> 13) & 1u);
        return (uint16_t)(sign | (r >> 13));
    }
    if (a <= 0x33000000u) /* <= 2^-25 rounds to zero (tie to even) */
        return (uint16_t)sign;
    {
        uint32_t m = (a & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - (a >> 23); /* 14..24 */
        uint32_t q = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1u);
        uint32_t half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (q & 1u)))
            q++;
        return (uint16_t)(sign | q);
    }
}

/* mf_h2f and mf_f2h for values known not to be NaNs (infinities allowed),
 * as the quantizer's parameters are: the same bits, and on the device one
 * hardware conversion without the NaN test. */
MF_HD float mf_h2f_nn(uint16_t h) {
#ifdef __CUDA_ARCH__
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
#else
    return mf_h2f(h);
#endif
}

MF_HD uint16_t mf_f2h_nn(float f) {
#ifdef __CUDA_ARCH__
    unsigned short r;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r) : "f"(f));
    return r;
#else
    return mf_f2h(f);
#endif
}

/* |x| ordering key of an fp16 value: larger key = larger magnitude. */
MF_HD uint32_t mf_h_mag(uint16_t h) { return h & 0x7fffu; }
MF_HD int mf_h_finite(uint16_t h) { return (h & 0x7c00u) != 0x7c00u; }
/* Value ordering key of a finite fp16 (signed integer order; -0 and +0
 * both 0), and back: tile minima and maxima compare these. */
MF_HD int32_t mf_h_key(uint16_t h) { return (h & 0x8000u) ? -(int32_t)(h & 0x7fffu) : (int32_t)h; }
MF_HD uint16_t mf_key_h(int32_t k) { return k < 0 ? (uint16_t)(0x8000u | (uint32_t)-k) : (uint16_t)k; }

/* Turns -0 into +0 and leaves every other value alone: applied once to
 * each final sum, so skipping zero terms never changes a result's bits. */
MF_HD float mf_canon(float x) { return MF_ADD(x, 0.0f); }

/* mf_exp's constants, named once for its vector twins in backends/cpu:
 * log2(e), ln 2 split high/low (Cody-Waite), Taylor coefficients 1/n!
 * rounded to fp32 (the last two steps use 1.0f). */
#define MF_EXP_LOG2E 1.44269502163e+00f
#define MF_EXP_LN2_HI 6.93359375e-01f
#define MF_EXP_LN2_LO -2.12194440e-04f
#define MF_EXP_C6 1.38888889e-03f
#define MF_EXP_C5 8.33333377e-03f
#define MF_EXP_C4 4.16666679e-02f
#define MF_EXP_C3 1.66666672e-01f
#define MF_EXP_C2 5.00000000e-01f

/* exp(x) in fp32: Cody-Waite reduction by ln 2, degree-6 Taylor polynomial
 * in Horner form with fused steps, scaled by 2^k. Results below 2^-126
 * flush to +0, above 2^127 give +inf. exp(0) is exactly 1. */
MF_HD float mf_exp(float x) {
    /* Written without early returns so compilers can vectorize it; the
     * selects at the end give the special cases. */
    float kf = floorf(MF_ADD(MF_MUL(x, MF_EXP_LOG2E), 0.5f));
    float kc = kf < -126.0f ? -126.0f : (kf > 127.0f ? 127.0f : kf);
    float r, p, y;
    if (kc != kc) /* NaN input */
        kc = 0.0f;
    r = MF_FMA(-kc, MF_EXP_LN2_HI, x);
    r = MF_FMA(-kc, MF_EXP_LN2_LO, r);
    p = MF_EXP_C6;
    p = MF_FMA(p, r, MF_EXP_C5);
    p = MF_FMA(p, r, MF_EXP_C4);
    p = MF_FMA(p, r, MF_EXP_C3);
    p = MF_FMA(p, r, MF_EXP_C2);
    p = MF_FMA(p, r, 1.0f);
    p = MF_FMA(p, r, 1.0f);
    y = MF_MUL(p, mf_bits_f32((uint32_t)((int32_t)kc + 127) << 23));
    y = kf < -126.0f ? 0.0f : y;
    y = kf > 127.0f ? mf_bits_f32(0x7f800000u) : y;
    return x != x ? x : y;
}

/* 1/sqrt(dim) rounded to fp32, for the supported head dims. */
MF_HD float mf_score_scale(uint32_t dim) {
    return dim == 64u ? 0.125f : dim == 128u ? mf_bits_f32(0x3db504f3u) : 0.0625f;
}

/* ---- quantization (bits = 2 or 4) ---------------------------------- */
/* bits is 2 or 4 (no division: this runs once per tile). */
MF_HD uint32_t mf_codes_per_word(uint32_t bits) { return bits == 2u ? 16u : 8u; }

/* Payload words of one tile holding nnz nonzeros. bits 0 (fp16): nonzeros
 * padded to a multiple of 8 halves, as Mustafar's 128-bit loads need. */
MF_HD uint32_t mf_tile_words(uint32_t nnz, uint32_t bits) {
    if (bits == 0)
        return ((nnz + 7u) & ~7u) >> 1;
    return (nnz * bits + 31u) >> 5; /* ceil(nnz / (32 / bits)) */
}

/* The fp16 value a code stands for: (code - z) * s, rounded to fp16;
 * mf_dequant_f32 is the product before that rounding. */
MF_HD float mf_dequant_f32(uint32_t code, float s, float z) {
    return MF_MUL(MF_SUB((float)code, z), s);
}

MF_HD uint16_t mf_dequant(uint32_t code, float s, float z) {
    return mf_f2h(mf_dequant_f32(code, s, z));
}

/* Which end code of (s, z) decodes to +-inf: 1 the lowest (z too large),
 * -1 the highest (z too small), 0 neither; the codes between lie between.
 * For finite s and z (mf_quant_params's): no product is a NaN. */
MF_HD int mf_quant_overflow(float s, float z, uint32_t bits) {
    if (!mf_h_finite(mf_f2h_nn(mf_dequant_f32(0, s, z))))
        return 1;
    return mf_h_finite(mf_f2h_nn(mf_dequant_f32((1u << bits) - 1u, s, z))) ? 0 : -1;
}

/* Per-tile scale and zero point from the min and max of its nonzeros
 * (fp32 values of finite fp16 inputs, so no value below is a NaN). Empty
 * tiles use mn = mx = 0. */
MF_HD void mf_quant_params(float mn, float mx, uint32_t bits, uint16_t *scale,
                           uint16_t *zero) {
    float levels = (float)((1u << bits) - 1u);
    uint16_t sh = mf_f2h_nn(MF_DIV(MF_SUB(mx, mn), levels));
    float s, z;
    int over;
    if (!(mf_h2f_nn(sh) > 0.0f)) /* zero range, or it underflows fp16 */
        sh = 0x3c00u;            /* 1.0 */
    /* A subnormal scale moves in steps of 2^-24: rounded down, L steps can
     * fall well short of the range, clamping its ends by over a step. */
    else if (sh < 0x0400u && MF_MUL(mf_h2f_nn(sh), levels) < MF_SUB(mx, mn))
        sh++;
    s = mf_h2f_nn(sh);
    z = floorf(MF_ADD(MF_DIV(-mn, s), 0.5f));
    if (z > 65504.0f)
        z = 65504.0f;
    if (z < -65504.0f)
        z = -65504.0f;
    /* Every code must decode finite (the validator checks both ends). The
     * rounding of z can push an end code just past 65504: move z one code
     * inward. Where that is not enough (a range near -65504..65504, or a
     * z that fp16 cannot move by one), take the widest finite grid. */
    if ((over = mf_quant_overflow(s, mf_h2f_nn(mf_f2h_nn(z)), bits)) != 0) {
        z = MF_SUB(z, (float)over);
        if (mf_quant_overflow(s, mf_h2f_nn(mf_f2h_nn(z)), bits)) {
            z = floorf(MF_MUL(levels, 0.5f));
            sh = mf_f2h_nn(MF_DIV(65504.0f, MF_SUB(levels, z)));
        }
    }
    *scale = sh;
    *zero = mf_f2h_nn(z);
}

/* x / s, bit for bit MF_DIV(x, s) (a zero may come out +0 for -0), for
 * fp16 values x and s > 0 and r = MF_DIV(1.0f, s): the product, then one
 * fused correction with its exact residual. Not a general division:
 * tools/numerics/check-div.c checks it for every finite fp16 x against
 * every positive finite fp16 s (scripts/test.sh runs it). Three
 * operations for the encoder's every nonzero instead of a division (a
 * dozen or more on a GPU). */
MF_HD float mf_div_h(float x, float s, float r) {
    float q = MF_MUL(x, r);
    return MF_FMA(MF_FMA(-q, s, x), r, q);
}

/* The code of value x (fp32 of an fp16) given fp32 scale s (an fp16
 * value), its reciprocal r = MF_DIV(1.0f, s) and zb = z + 2^23 (exact: z
 * is an integer of magnitude at most 65504), as the float 2^23 + code:
 * its bits are 0x4b000000 + code, so codes pack by integer adds without a
 * float-to-integer conversion. The sum's rounding cannot move a value
 * across the clamp's ends, so this is SPEC.md's code exactly. */
#define MF_CODE_BIAS 8388608.0f         /* 2^23 */
#define MF_CODE_BIAS_BITS 0x4b000000u    /* its f32 bits */

/* A biased code sum clamped to the codes' range [2^23, 2^23 + 2^bits - 1]. */
MF_HD float mf_code_clamp(float q, uint32_t bits) {
    float hi = MF_ADD(MF_CODE_BIAS, (float)((1u << bits) - 1u));
    if (q < MF_CODE_BIAS)
        q = MF_CODE_BIAS;
    if (q > hi)
        q = hi;
    return q;
}

MF_HD float mf_quant_biased(float x, float s, float r, float zb, uint32_t bits) {
#ifdef __CUDA_ARCH__
    /* floor(y) + zb in one sum rounded down: for an integer F = floor(y)
     * + zb in the clamp's range (integers of [2^23, 2^24)) both give F,
     * as y + zb lies in [F, F + 1); below or above the range both stay
     * below 2^23 or reach 2^23 + L + 1, the same clamp (every end is a
     * float, and a sum rounded down to -0 clamps as +0 would). */
    float q = __fadd_rd(MF_ADD(mf_div_h(x, s, r), 0.5f), zb);
#else
    float q = MF_ADD(floorf(MF_ADD(mf_div_h(x, s, r), 0.5f)), zb);
#endif
    return mf_code_clamp(q, bits);
}

/* The code itself (same arguments, but the zero z unbiased). */
MF_HD uint32_t mf_quant_code(float x, float s, float r, float z, uint32_t bits) {
    return mf_f32_bits(mf_quant_biased(x, s, r, MF_ADD(z, MF_CODE_BIAS), bits)) - MF_CODE_BIAS_BITS;
}

/* The least fp16 x (its bits) whose code is at least k (1 <= k <= 2^bits
 * - 1), +inf (0x7c00) where no finite x has: as the code never falls as x
 * grows, code(x) = #{k : x >= T_k} for every finite x, so a 2-bit code is
 * three fp16 comparisons. T_k is x0 = (k - z - 1/2) s rounded to fp16
 * (saturated to the finite range) or the next fp16 above x0, so one code
 * decides: tools/numerics/check-thresholds.c checks, for every positive
 * finite fp16 s and every integer fp16 z at bits 2, that the code never
 * falls as x grows and reaches k at T_k but not one fp16 below it.
 * k - 1/2 - z is exact (an integer z, |z| <= 65504). s, r and z as for
 * mf_quant_code. */
MF_HD uint16_t mf_code_threshold(uint32_t k, float s, float r, float z, uint32_t bits) {
    int32_t key = mf_h_key(mf_f2h_nn(MF_MUL(MF_SUB(MF_SUB((float)k, 0.5f), z), s)));
    if (key > 0x7bff)
        key = 0x7bff;
    if (key < -0x7bff)
        key = -0x7bff;
    if (mf_quant_code(mf_h2f_nn(mf_key_h(key)), s, r, z, bits) < k)
        key++; /* 0x7c00 past 65504: +inf */
    return mf_key_h(key);
}

/* ---- softmax state merge ------------------------------------------- */
/* Rescale factors for merging two partial softmax states with maxima ma
 * (left) and mb (right): m = max(ma, mb), a = exp(ma - m), b = exp(mb - m).
 * Merged l = l_a*a + l_b*b and o = o_a*a + o_b*b (MF_MUL, MF_MUL, MF_ADD). */
MF_HD void mf_merge_factors(float ma, float mb, float *m, float *a, float *b) {
    float mm = ma > mb ? ma : mb;
    *m = mm;
    *a = mf_exp(MF_SUB(ma, mm));
    *b = mf_exp(MF_SUB(mb, mm));
}

MF_HD float mf_merge_term(float xa, float a, float xb, float b) {
    return MF_ADD(MF_MUL(xa, a), MF_MUL(xb, b));
}

#endif /* MF_NUMERICS_H */
