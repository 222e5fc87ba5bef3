/* test_validate.c - every validator rejection, each naming its field. */
#include <criterion/criterion.h>

#include "helpers.h"

static mf_ctensor c;
static uint16_t *dense;

/* rows 2, tokens 130 (2 blocks + 2 window tokens), dim 64, keep 30 of 64 */
static void make(mf_layout layout, uint32_t bits) {
    mf_desc d = th_desc(MF_VALUE, layout, bits, 2, 130, 64);
    uint64_t seed = 5;
    dense = th_dense(&seed, 2 * 130 * 64, 1.0f);
    cr_assert_eq(th_encode(&d, dense, 30, &c), MF_OK);
    cr_assert_eq(mf_validate(&c, NULL), MF_OK);
}

static void teardown(void) {
    mf_ctensor_free(&c);
    free(dense);
}

static void expect(mf_status st, const char *field) {
    mf_diag diag;
    memset(&diag, 0, sizeof diag);
    cr_assert_eq(mf_validate(&c, &diag), st, "got: %s", diag.msg);
    cr_assert(strstr(diag.msg, field) != NULL, "message '%s' does not name '%s'", diag.msg, field);
}

static void setup_ref2(void) { make(MF_LAYOUT_REFERENCE, 2); }
static void setup_ref0(void) { make(MF_LAYOUT_REFERENCE, 0); }
static void setup_nat4(void) { make(MF_LAYOUT_NATIVE, 4); }

TestSuite(validate, .fini = teardown);

Test(validate, bad_dim, .init = setup_ref2) {
    c.desc.dim = 100;
    expect(MF_ERR_DIMS, "dim");
}

Test(validate, bad_bits, .init = setup_ref2) {
    c.desc.bits = 3;
    expect(MF_ERR_ARG, "bits");
}

Test(validate, bad_kind_and_layout, .init = setup_ref2) {
    c.desc.kind = (mf_kind)7;
    expect(MF_ERR_ARG, "kind");
    c.desc.kind = MF_VALUE;
    c.desc.layout = (mf_layout)9;
    expect(MF_ERR_ARG, "layout");
}

Test(validate, zero_rows, .init = setup_ref2) {
    c.desc.rows = 0;
    expect(MF_ERR_DIMS, "rows");
}

Test(validate, limits, .init = setup_ref2) {
    c.desc.tokens = (1u << 24) + 1;
    expect(MF_ERR_LIMIT, "tokens");
    c.desc.tokens = 1u << 24;
    c.desc.rows = 1u << 12; /* 2^12 * 2^24 * 64 > 2^34 */
    expect(MF_ERR_LIMIT, "2^34");
}

Test(validate, first_offset_not_zero, .init = setup_ref2) {
    c.offsets[0] = 1;
    expect(MF_ERR_OFFSET_RANGE, "offsets[0]");
}

Test(validate, offset_out_of_range, .init = setup_ref2) {
    c.offsets[5] = 0xfffffff0u;
    expect(MF_ERR_OFFSET_RANGE, "offsets[5]");
}

Test(validate, offsets_not_monotone, .init = setup_ref2) {
    c.offsets[7] = c.offsets[6] - 1;
    expect(MF_ERR_OFFSET_ORDER, "offsets[7]");
}

Test(validate, bitmap_disagrees_with_offsets, .init = setup_ref2) {
    /* dropping 3 nonzeros changes the word count of tile 3: offsets[4]
     * no longer matches the prefix sum */
    uint64_t bm = c.bitmaps[3];
    int i;
    for (i = 0; i < 3 * 16; i++) /* clear 48 set bits at most */
        bm &= bm - 1;
    c.bitmaps[3] = bm;
    expect(MF_ERR_NNZ, "offsets[4]");
}

Test(validate, payload_words_disagree, .init = setup_ref2) {
    c.payload_words += 1;
    expect(MF_ERR_NNZ, "payload_words");
}

Test(validate, payload_words_limit, .init = setup_ref2) {
    c.payload_words = UINT64_C(1) << 33;
    expect(MF_ERR_LIMIT, "payload_words");
}

Test(validate, zero_scale, .init = setup_ref2) {
    c.scales[9] = 0;
    expect(MF_ERR_SCALE, "scales[9]");
}

Test(validate, negative_or_inf_scale, .init = setup_ref2) {
    c.scales[2] = 0xbc00;
    expect(MF_ERR_SCALE, "scales[2]");
    c.scales[2] = 0x7c00;
    expect(MF_ERR_SCALE, "scales[2]");
}

Test(validate, nan_zero_point, .init = setup_ref2) {
    c.zeros[4] = 0x7e00;
    expect(MF_ERR_SCALE, "zeros[4]");
}

Test(validate, scale_zero_overflow, .init = setup_ref2) {
    c.scales[1] = 0x7bff; /* 65504 * (0 - 2) overflows fp16 */
    c.zeros[1] = 0x4000;
    expect(MF_ERR_SCALE, "tile 1");
}

Test(validate, nonzero_code_padding, .init = setup_ref2) {
    /* tile 0 of a unit has 32 +- nonzeros; find a tile whose last word
     * has free code slots and set one */
    uint64_t t;
    for (t = 0; t < 256; t++) {
        uint32_t nnz = (uint32_t)__builtin_popcountll(c.bitmaps[t]);
        if (nnz % 16) {
            c.payload[c.offsets[t] + nnz / 16] |= 0x80000000u;
            break;
        }
    }
    cr_assert_lt(t, 256);
    expect(MF_ERR_PADDING, "unused code bits");
}

Test(validate, fp16_zero_value, .init = setup_ref0) {
    c.payload[c.offsets[0]] &= 0xffff0000u;
    expect(MF_ERR_NNZ, "stored value 0");
}

Test(validate, fp16_nonzero_padding, .init = setup_ref0) {
    uint64_t t;
    for (t = 0; t < 256; t++) {
        uint32_t nnz = (uint32_t)__builtin_popcountll(c.bitmaps[t]);
        if (nnz % 8) {
            uint32_t *w = c.payload + c.offsets[t];
            w[(nnz + 7) / 8 * 4 - 1] |= 0x1234u << 16;
            break;
        }
    }
    cr_assert_lt(t, 256);
    expect(MF_ERR_PADDING, "padding half");
}

Test(validate, native_group_offset, .init = setup_nat4) {
    c.offsets[2] += 1;
    expect(MF_ERR_NNZ, "offsets[2]");
    c.offsets[2] = 0;
    expect(MF_ERR_OFFSET_ORDER, "offsets[2]");
}

Test(validate, null_arrays, .init = setup_ref2) {
    uint16_t *s = c.scales;
    c.scales = NULL;
    expect(MF_ERR_NULL, "scales");
    c.scales = s;
    {
        uint16_t *w = c.window;
        c.window = NULL;
        expect(MF_ERR_NULL, "window");
        c.window = w;
    }
    cr_assert_eq(mf_validate(NULL, NULL), MF_ERR_NULL);
}

Test(validate, decode_and_attend_refuse_invalid_input, .init = setup_ref2) {
    uint16_t *out = (uint16_t *)malloc(2 * 130 * 64 * 2);
    mf_diag diag;
    c.offsets[3] = 0xffffffffu;
    cr_assert_eq(mf_decode(MF_BACKEND_CPU, &c, out, &diag), MF_ERR_OFFSET_RANGE);
    cr_assert(strstr(diag.msg, "offsets[3]"));
    free(out);
}
