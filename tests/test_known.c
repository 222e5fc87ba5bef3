/* test_known.c - hand-computed answers for tiny tiles: bit order, code
 * packing, scale/zero rounding, fp16 conversion, pruning ties, exp. */
#include <criterion/criterion.h>
#include <math.h>

#include "helpers.h"

static uint16_t block[64 * 128];

static mf_ctensor encode_block(mf_kind kind, uint32_t bits, uint32_t dim, uint32_t keep) {
    mf_desc d = th_desc(kind, MF_LAYOUT_REFERENCE, bits, 1, 64, dim);
    mf_ctensor c;
    cr_assert_eq(th_encode(&d, block, keep, &c), MF_OK);
    cr_assert_eq(mf_validate(&c, NULL), MF_OK);
    return c;
}

Test(known, key_tile_bit_order_and_fp16_payload) {
    mf_ctensor c;
    uint32_t j;
    memset(block, 0, sizeof block);
    block[0 * 64 + 0] = 0x3c00; /* token 0, channel 0: 1.0 */
    block[5 * 64 + 0] = 0x4000; /* token 5, channel 0: 2.0 */
    c = encode_block(MF_KEY, 0, 64, 64);
    cr_assert_eq(c.bitmaps[0], UINT64_C(0x8400000000000000));
    for (j = 1; j < 64; j++)
        cr_assert_eq(c.bitmaps[j], 0);
    /* two halves padded to 8: four words */
    cr_assert_eq(c.payload_words, 4);
    cr_assert_eq(c.payload[0], 0x40003c00u);
    cr_assert_eq(c.payload[1] | c.payload[2] | c.payload[3], 0);
    cr_assert_eq(c.offsets[0], 0);
    cr_assert_eq(c.offsets[1], 4);
    cr_assert_eq(c.offsets[63], 4);
    mf_ctensor_free(&c);
}

Test(known, value_tile_index_and_bit) {
    mf_ctensor c;
    uint32_t j;
    memset(block, 0, sizeof block);
    block[3 * 128 + 70] = 0xbc00; /* token 3, channel 70: -1.0 */
    c = encode_block(MF_VALUE, 0, 128, 128);
    /* tile = channel block 1 * 64 + token 3; element 70 - 64 = 6 */
    for (j = 0; j < 128; j++)
        cr_assert_eq(c.bitmaps[j], j == 67 ? UINT64_C(0x0200000000000000) : 0, "tile %u", j);
    cr_assert_eq(c.payload[0], 0xbc00u);
    mf_ctensor_free(&c);
}

Test(known, two_bit_codes_scale_zero) {
    mf_ctensor c;
    uint16_t out[64 * 64];
    memset(block, 0, sizeof block);
    block[0 * 64] = 0xbc00; /* -1.0 */
    block[1 * 64] = 0x3800; /* 0.5 */
    block[2 * 64] = 0x4000; /* 2.0 */
    c = encode_block(MF_KEY, 2, 64, 64);
    cr_assert_eq(c.bitmaps[0], UINT64_C(0xe000000000000000));
    cr_assert_eq(c.scales[0], 0x3c00); /* (2 - -1) / 3 = 1 */
    cr_assert_eq(c.zeros[0], 0x3c00);  /* floor(1/1 + 0.5) = 1 */
    /* codes 0, floor(0.5+0.5)+1 = 2, floor(2.5)+1 = 3 at bits 0, 2, 4 */
    cr_assert_eq(c.payload[0], 0x38u);
    cr_assert_eq(c.payload_words, 1);
    /* empty tiles: scale 1, zero floor(0 + 0.5) = 0 */
    cr_assert_eq(c.scales[1], 0x3c00);
    cr_assert_eq(c.zeros[1], 0);
    cr_assert_eq(mf_decode(MF_BACKEND_CPU, &c, out, NULL), MF_OK);
    cr_assert_eq(out[0], 0xbc00);
    cr_assert_eq(out[64], 0x3c00); /* 0.5 decodes as (2 - 1) * 1 = 1.0 */
    cr_assert_eq(out[128], 0x4000);
    mf_ctensor_free(&c);
}

Test(known, scale_rounds_to_fp16_and_dequant_rounds_to_even) {
    mf_ctensor c;
    uint16_t out[64 * 64];
    memset(block, 0, sizeof block);
    block[0] = 0x2e66;  /* 0.0999755859375 */
    block[64] = 0x3c00; /* 1.0 */
    c = encode_block(MF_KEY, 2, 64, 64);
    /* (1 - 0.0999755859375) / 3 = 0.300008... rounds to fp16 0.300048828125 */
    cr_assert_eq(c.scales[0], 0x34cd);
    cr_assert_eq(c.zeros[0], 0); /* floor(-0.3332 + 0.5) = 0 */
    cr_assert_eq(c.payload[0], 0x3u << 2);
    cr_assert_eq(mf_decode(MF_BACKEND_CPU, &c, out, NULL), MF_OK);
    cr_assert_eq(out[0], 0);      /* a kept value may decode to 0 */
    /* 3 * 0.300048828125 = 0.900146484375, a tie in fp16: to even */
    cr_assert_eq(out[64], 0x3b34);
    mf_ctensor_free(&c);
}

Test(known, four_bit_codes) {
    mf_ctensor c;
    uint32_t t;
    memset(block, 0, sizeof block);
    for (t = 0; t < 9; t++) /* 1..9 on channel 0: scale 8/15, zero floor(-1.875+.5) */
        block[t * 64] = mf_fp16_from_float((float)(t + 1));
    c = encode_block(MF_KEY, 4, 64, 64);
    cr_assert_eq(c.scales[0], mf_fp16_from_float(8.0f / 15.0f));
    cr_assert_eq(mf_fp16_to_float(c.zeros[0]), -2.0f);
    cr_assert_eq(c.payload_words, 2); /* 9 codes, 8 per word */
    /* value 1: floor(1/s + .5) + z = floor(1.375...)... compute from spec */
    {
        float s = mf_fp16_to_float(c.scales[0]);
        uint32_t n;
        for (n = 0; n < 9; n++) {
            float q = floorf((float)(n + 1) / s + 0.5f) - 2.0f;
            uint32_t code = q < 0 ? 0 : q > 15 ? 15 : (uint32_t)q;
            cr_assert_eq((c.payload[n / 8] >> (4 * (n % 8))) & 15u, code, "code %u", n);
        }
    }
    cr_assert_eq(c.payload[1] >> 4, 0); /* padding codes are zero */
    mf_ctensor_free(&c);
}

Test(known, pruning_ties_go_to_lowest_channels) {
    mf_ctensor c;
    uint32_t i;
    for (i = 0; i < 64 * 64; i++)
        block[i] = 0x3c00;
    block[40] = 0xc000; /* token 0, channel 40: -2.0, largest magnitude */
    c = encode_block(MF_VALUE, 0, 64, 20);
    /* token 0: channel 40 plus channels 0..18; other tokens 0..19 */
    cr_assert_eq(c.bitmaps[0], UINT64_C(0xffffe00000000000) | (UINT64_C(1) << (63 - 40)));
    cr_assert_eq(c.bitmaps[1], UINT64_C(0xfffff00000000000));
    mf_ctensor_free(&c);
}

Test(known, zeros_are_never_kept) {
    mf_ctensor c;
    memset(block, 0, sizeof block);
    block[3] = 0x8000; /* -0 counts as zero */
    block[4] = 0x0001; /* smallest subnormal is kept */
    c = encode_block(MF_VALUE, 0, 64, 64);
    cr_assert_eq(c.bitmaps[0], UINT64_C(1) << (63 - 4));
    mf_ctensor_free(&c);
}

Test(known, keep_count) {
    uint32_t k;
    cr_assert_eq(mf_keep_count(128, 0.7, &k), MF_OK);
    cr_assert_eq(k, 38); /* 128 - floor(89.6 + 0.5) */
    mf_keep_count(64, 0.5, &k);
    cr_assert_eq(k, 32);
    mf_keep_count(256, 0.0, &k);
    cr_assert_eq(k, 256);
    mf_keep_count(64, 1.0, &k);
    cr_assert_eq(k, 0);
    cr_assert_eq(mf_keep_count(64, 1.5, &k), MF_ERR_ARG);
    cr_assert_eq(mf_keep_count(64, NAN, &k), MF_ERR_ARG);
}

Test(known, fp16_conversion) {
    cr_assert_eq(mf_fp16_from_float(1.0f), 0x3c00);
    cr_assert_eq(mf_fp16_from_float(65504.0f), 0x7bff);
    cr_assert_eq(mf_fp16_from_float(65519.996f), 0x7bff);
    cr_assert_eq(mf_fp16_from_float(65520.0f), 0x7c00);
    cr_assert_eq(mf_fp16_from_float(-INFINITY), 0xfc00);
    cr_assert_eq(mf_fp16_from_float(NAN) & 0x7fff, 0x7e00);
    cr_assert_eq(mf_fp16_from_float(ldexpf(1.0f, -24)), 0x0001);
    cr_assert_eq(mf_fp16_from_float(ldexpf(1.0f, -25)), 0x0000);           /* tie to even */
    cr_assert_eq(mf_fp16_from_float(ldexpf(3.0f, -26)), 0x0001);           /* 0.75 ulp */
    cr_assert_eq(mf_fp16_from_float(ldexpf(3.0f, -25)), 0x0002);           /* 1.5 ulp: even */
    cr_assert_eq(mf_fp16_from_float(1.0f + ldexpf(1.0f, -11)), 0x3c00);    /* tie to even */
    cr_assert_eq(mf_fp16_from_float(1.0f + ldexpf(3.0f, -11)), 0x3c02);
    cr_assert_eq(mf_fp16_to_float(0x0001), ldexpf(1.0f, -24));
    cr_assert_eq(mf_fp16_to_float(0xc000), -2.0f);
    cr_assert(isinf(mf_fp16_to_float(0x7c00)));
}

Test(known, fp16_round_trip_of_every_half) {
    uint32_t h;
    for (h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff))
            continue; /* NaN payloads are canonicalized */
        cr_assert_eq(mf_fp16_from_float(mf_fp16_to_float((uint16_t)h)), h, "0x%04x", h);
    }
}

Test(known, nonfinite_input_is_rejected_with_its_position) {
    mf_desc d = th_desc(MF_KEY, MF_LAYOUT_REFERENCE, 2, 1, 70, 64);
    mf_ctensor c;
    mf_sizes s;
    mf_diag diag;
    static uint16_t dense[70 * 64];
    memset(dense, 0, sizeof dense);
    dense[10 * 64 + 7] = 0x7e00;
    mf_sizes_of(&d, 64, &s);
    cr_assert_eq(mf_ctensor_alloc(&c, &d, s.payload_keep), MF_OK);
    cr_assert_eq(mf_encode(MF_BACKEND_CPU, dense, 64, &c, s.payload_keep, &diag),
                 MF_ERR_NONFINITE);
    cr_assert(strstr(diag.msg, "[0][10][7]"), "%s", diag.msg);
    dense[10 * 64 + 7] = 0;
    dense[66 * 64 + 1] = 0xfc00; /* in the dense window */
    cr_assert_eq(mf_encode(MF_BACKEND_CPU, dense, 64, &c, s.payload_keep, &diag),
                 MF_ERR_NONFINITE);
    cr_assert(strstr(diag.msg, "[0][66][1]"), "%s", diag.msg);
    mf_ctensor_free(&c);
}

#include "../backends/cpu/cpu.h"
#include "../core/numerics.h"

Test(known, exp_vector_path_equals_scalar_mf_exp) {
    static float x[4096], e[4096];
    uint64_t seed = 17;
    uint32_t i;
    const float special[] = {0.0f, -0.0f, 1.0f, -1.0f, -87.0f, -87.4f, -88.0f, -100.0f, -200.0f,
                             88.0f, 88.8f, 89.0f, 1e30f, -1e30f, INFINITY, -INFINITY, NAN,
                             1e-30f, -1e-40f, 0.5f};
    for (i = 0; i < 4096; i++) {
        uint64_t r = th_next(&seed);
        x[i] = i < sizeof special / sizeof *special
                   ? special[i]
                   : ((float)(r >> 40) / 16777216.0f - 0.9f) * (float)(1u << (r & 7u)) * 10.0f;
    }
    mf_cpu_exp_shifted(x, 0.0f, 4096, e);
    for (i = 0; i < 4096; i++) {
        float want = mf_exp(x[i]);
        cr_assert(memcmp(&want, &e[i], 4) == 0 || (want != want && e[i] != e[i]),
                  "x = %a: vector %a, scalar %a", x[i], e[i], want);
    }
    cr_assert_eq(mf_exp(0.0f), 1.0f);
    cr_assert_eq(mf_exp(-200.0f), 0.0f);
    cr_assert(isinf(mf_exp(100.0f)));
    cr_assert(fabsf(mf_exp(1.0f) - 2.7182817f) < 1e-6f);
}

/* Every finite x divided by the fp16 scale sh. */
static void check_div_h(uint32_t sh) {
    const float s = mf_h2f((uint16_t)sh), r = MF_DIV(1.0f, s);
    uint32_t h;
    for (h = 0; h < 0x10000; h++) {
        const float x = mf_h2f((uint16_t)h);
        if (mf_h_finite((uint16_t)h))
            cr_assert(mf_div_h(x, s, r) == MF_DIV(x, s), "x 0x%04x, s 0x%04x: %a, not %a", h, sh,
                      (double)mf_div_h(x, s, r), (double)MF_DIV(x, s));
    }
}

/* mf_div_h, the encoder's quotient, is the IEEE one for fp16 operands
 * (every pair: tools/numerics/check-div.c, run by scripts/test.sh); here
 * every finite x against a sample of scales: every 7th subnormal, every
 * 97th normal and the largest. */
Test(known, div_h_equals_division_for_fp16_operands) {
    uint32_t sh;
    for (sh = 1; sh < 0x7c00; sh += sh < 0x400 ? 7 : 97)
        check_div_h(sh);
    check_div_h(0x7bff);
}

/* mf_code_threshold, 2-bit codes by comparison: for sampled
 * scales and zeros (every (s, z): tools/numerics/check-thresholds.c, run
 * by scripts/test.sh), every finite x has the code that counts the
 * thresholds at or below it. */
Test(known, code_thresholds_count_codes) {
    static const float zs[] = {0.0f, 1.0f, -3.0f, 2.0f, 5.0f, -2048.0f, 4096.0f, 65504.0f, -65504.0f};
    uint32_t sh, i, h, k;
    for (sh = 1; sh < 0x7c00; sh += sh < 0x400 ? 61 : 661)
        for (i = 0; i < sizeof zs / sizeof zs[0]; i++) {
            const float s = mf_h2f((uint16_t)sh), r = MF_DIV(1.0f, s);
            float t[3];
            for (k = 0; k < 3; k++) /* +inf past 65504 */
                t[k] = mf_h2f(mf_code_threshold(k + 1, s, r, zs[i], 2));
            for (h = 0; h < 0x10000; h++) {
                const float x = mf_h2f((uint16_t)h);
                if (mf_h_finite((uint16_t)h))
                    cr_assert_eq((uint32_t)(x >= t[0]) + (x >= t[1]) + (x >= t[2]),
                                 mf_quant_code(x, s, r, zs[i], 2), "x 0x%04x, s 0x%04x, z %g", h, sh,
                                 (double)zs[i]);
            }
        }
}

/* SPEC.md's code for kept value x, as written there (IEEE quotient). */
static uint32_t spec_code(float x, float s, float z, uint32_t bits) {
    float q = MF_ADD(floorf(MF_ADD(MF_DIV(x, s), 0.5f)), z), hi = (float)((1u << bits) - 1u);
    return q < 0.0f ? 0u : q > hi ? (uint32_t)hi : (uint32_t)q;
}

/* The device's form of mf_quant_biased: y + zb in one sum rounded down
 * instead of floor(y) + zb rounded to nearest. Here the sum rounded down
 * comes from the rounded-to-nearest one, stepped down where it exceeds
 * the exact sum (s - zb and the comparison are exact in double for these
 * operands). */
static void check_sum_rounded_down(float y, float zb) {
    float s = y + zb, rd = (double)s - (double)zb > (double)y ? nextafterf(s, -INFINITY) : s;
    uint32_t bits;
    for (bits = 2; bits <= 4; bits += 2)
        cr_assert(mf_f32_bits(mf_code_clamp(rd, bits)) == mf_f32_bits(mf_code_clamp(floorf(y) + zb, bits)),
                  "y %a, zb %a, %u bits", (double)y, (double)zb, bits);
}

/* ... equals the host's for quotients of fp16 values (every 5th finite x
 * against a sample of scales) and for y at and next to integers and
 * halves across every zero's range, from zeros of both ends. */
Test(known, device_code_sum_equals_host_form) {
    static const float zs[] = {-65504.0f, -2049.0f, -3.0f, 0.0f, 1.0f, 2.0f, 15.0f, 65504.0f};
    uint32_t sh, h, k;
    int32_t i;
    for (sh = 1; sh < 0x7c00; sh += sh < 0x400 ? 7 : 97) {
        const float sc = mf_h2f((uint16_t)sh), r = MF_DIV(1.0f, sc);
        for (h = 0; h < 0x10000; h += 5)
            if (mf_h_finite((uint16_t)h))
                for (k = 0; k < sizeof zs / sizeof zs[0]; k++)
                    check_sum_rounded_down(MF_ADD(mf_div_h(mf_h2f((uint16_t)h), sc, r), 0.5f),
                                           MF_ADD(zs[k], MF_CODE_BIAS));
    }
    for (k = 0; k < sizeof zs / sizeof zs[0]; k++)
        for (i = -65540; i <= 65540; i++) {
            const float y = (float)i, zb = MF_ADD(zs[k], MF_CODE_BIAS);
            check_sum_rounded_down(y, zb);
            check_sum_rounded_down(nextafterf(y, -INFINITY), zb);
            check_sum_rounded_down(nextafterf(y, INFINITY), zb);
            check_sum_rounded_down(y + 0.5f, zb);
            check_sum_rounded_down(ldexpf(y, 25), zb);
        }
}

/* mf_quant_code, which adds z + 2^23 and reads the code from the float's
 * bits, against the spec's form: every 5th finite x, a sample of scales,
 * zeros from both ends of the range, both code widths. */
Test(known, biased_code_equals_spec_code) {
    static const float zs[] = {-65504.0f, -2049.0f, -3.0f, 0.0f, 1.0f, 2.0f, 15.0f, 65504.0f};
    uint32_t sh, h, k, bits;
    for (sh = 1; sh < 0x7c00; sh += sh < 0x400 ? 7 : 97) {
        const float s = mf_h2f((uint16_t)sh), r = MF_DIV(1.0f, s);
        for (h = 0; h < 0x10000; h += 5) {
            const float x = mf_h2f((uint16_t)h);
            if (!mf_h_finite((uint16_t)h))
                continue;
            for (k = 0; k < sizeof zs / sizeof zs[0]; k++)
                for (bits = 2; bits <= 4; bits += 2)
                    cr_assert(mf_quant_code(x, s, r, zs[k], bits) == spec_code(x, s, zs[k], bits),
                              "x 0x%04x, s 0x%04x, z %g, %u bits", h, sh, (double)zs[k], bits);
        }
    }
}
