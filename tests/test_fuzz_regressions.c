/* test_fuzz_regressions.c - one test per fuzzer finding (fuzz/README.md).
 * The minimized inputs live in fuzz/regressions/<target>/ and CI also
 * replays them through the fuzz targets (scripts/fuzz-ci.sh). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>

#include "helpers.h"

/* Reads fuzz/regressions/<name> into an exact-size buffer, so a read past
 * its end is a heap overflow under ASan, as in the fuzzer. */
static uint8_t *load(const char *name, uint64_t *len) {
    char path[1024];
    FILE *f;
    uint8_t *buf;
    long n;
    snprintf(path, sizeof path, "%s/fuzz/regressions/%s", MF_SOURCE_DIR, name);
    f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    rewind(f);
    buf = (uint8_t *)malloc(n > 0 ? (size_t)n : 1);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (uint64_t)n;
    return buf;
}

/* fuzz_npy (AFL++): a header ending right after 'shape': read one byte
 * past the buffer looking for '('. */
Test(fuzz_regressions, npy_shape_at_header_end) {
    mf_array a;
    mf_diag diag;
    uint64_t len;
    uint8_t *buf = load("npy/shape-at-header-end", &len);
    cr_assert_eq(mf_npy_read_mem(buf, len, &a, &diag), MF_ERR_HEADER, "got: %s", diag.msg);
    cr_assert(strstr(diag.msg, "'shape'") != NULL, "message '%s' does not name 'shape'", diag.msg);
    cr_assert_null(a.data);
    free(buf);
}

/* Encodes one 64-token key block (dim 64, keep all) whose channel 0 holds
 * vals and every other element is 0; returns channel 0 decoded. */
static void encode_channel0(uint32_t bits, const uint16_t *vals, uint32_t n, mf_ctensor *c,
                            uint16_t *dec) {
    mf_desc d = th_desc(MF_KEY, MF_LAYOUT_REFERENCE, bits, 1, 64, 64);
    uint16_t x[64 * 64], y[64 * 64];
    uint32_t t;
    mf_diag diag;
    memset(x, 0, sizeof x);
    for (t = 0; t < n; t++)
        x[t * 64] = vals[t];
    cr_assert_eq(th_encode(&d, x, 64, c), MF_OK);
    cr_assert_eq(mf_validate(c, &diag), MF_OK, "encoder output refused: %s", diag.msg);
    cr_assert_eq(mf_decode(MF_BACKEND_CPU, c, y, NULL), MF_OK);
    for (t = 0; t < 64; t++)
        dec[t] = y[t * 64];
}

static void within_a_step(const uint16_t *vals, const uint16_t *dec, uint32_t n, uint16_t scale) {
    uint32_t t;
    for (t = 0; t < n; t++) {
        float x = mf_fp16_to_float(vals[t]), y = mf_fp16_to_float(dec[t]);
        cr_assert(isfinite(y) && fabsf(y - x) <= mf_fp16_to_float(scale),
                  "value %u: 0x%04x decodes to 0x%04x, step 0x%04x", t, vals[t], dec[t], scale);
    }
}

/* fuzz_roundtrip: a tile from -65504 to 16 (bits 2) got scale 21840 and
 * zero 3, so code 0 decoded to -65520 = -inf and the encoder's own
 * output failed validation. The zero now moves one code inward. */
Test(fuzz_regressions, quant_end_code_overflow) {
    static const uint16_t vals[2] = {0xfbffu /* -65504 */, 0x4c00u /* 16 */};
    mf_ctensor c;
    mf_diag diag;
    uint16_t dec[64];
    encode_channel0(2, vals, 2, &c, dec);
    cr_assert_eq(c.scales[0], 0x7555u); /* 21840 */
    cr_assert_eq(c.zeros[0], 0x4000u);  /* 2, not 3 */
    within_a_step(vals, dec, 2, c.scales[0]);
    c.zeros[0] = 0x4200u; /* the old zero point */
    cr_assert_eq(mf_validate(&c, &diag), MF_ERR_SCALE);
    cr_assert(strstr(diag.msg, "scale 0x7555") != NULL && strstr(diag.msg, "zero 0x4200") != NULL,
              "message '%s' does not name the scale and zero", diag.msg);
    mf_ctensor_free(&c);
}

/* fuzz_roundtrip: subnormal values 37 and 2 (x 2^-24), bits 4: the scale
 * 35/15 rounded to 2 covered only 30 of the 35 units, and 37 decoded 2.5
 * steps off. A short subnormal scale now rounds up (3). */
Test(fuzz_regressions, quant_subnormal_scale) {
    static const uint16_t vals[2] = {0x0025u, 0x0002u};
    mf_ctensor c;
    uint16_t dec[64];
    encode_channel0(4, vals, 2, &c, dec);
    cr_assert_eq(c.scales[0], 0x0003u);
    within_a_step(vals, dec, 2, c.scales[0]);
    mf_ctensor_free(&c);
}
