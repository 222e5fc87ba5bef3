/* test_cli.c - the mustafar command: exit codes, one-line errors, no
 * partial outputs. Runs the built binary (MF_CLI_PATH) in a temp dir. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"

static char dir[64];
static char out[4096];

/* Runs the CLI with args (a shell fragment) in dir; returns the exit
 * status and leaves stdout+stderr in out. */
static int cli(const char *args) {
    char cmd[1024];
    FILE *p;
    size_t n;
    int st;
    snprintf(cmd, sizeof cmd, "cd %s && %s %s 2>&1", dir, MF_CLI_PATH, args);
    p = popen(cmd, "r");
    cr_assert_not_null(p);
    n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int exists(const char *name) {
    char path[256];
    struct stat sb;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return stat(path, &sb) == 0;
}

static int rename_in_dir(const char *from, const char *to) {
    char a[256], b[256];
    snprintf(a, sizeof a, "%s/%s", dir, from);
    snprintf(b, sizeof b, "%s/%s", dir, to);
    return rename(a, b);
}

/* Writes name: seeded values of dtype, element at (none if at >= the
 * count) set to value. */
static void write_npy_as(const char *name, mf_dtype dtype, uint32_t ndim, const uint64_t *shape,
                         uint64_t seed, uint64_t at, float value) {
    char path[256];
    mf_array a;
    uint32_t i;
    memset(&a, 0, sizeof a);
    a.dtype = MF_F16;
    a.ndim = ndim;
    a.count = 1;
    for (i = 0; i < ndim; i++) {
        a.shape[i] = shape[i];
        a.count *= shape[i];
    }
    a.data = th_dense(&seed, (size_t)a.count, 2.0f);
    cr_assert_eq(mf_array_convert(&a, dtype), MF_OK);
    if (at < a.count && dtype == MF_F16)
        ((uint16_t *)a.data)[at] = mf_fp16_from_float(value);
    else if (at < a.count)
        ((float *)a.data)[at] = value;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    cr_assert_eq(mf_npy_save(path, &a, NULL), MF_OK);
    free(a.data);
}

static void write_npy(const char *name, uint32_t ndim, const uint64_t *shape, uint64_t seed) {
    write_npy_as(name, MF_F16, ndim, shape, seed, UINT64_MAX, 0.0f);
}

static void setup(void) {
    const uint64_t kv[3] = {4, 150, 64}, q[2] = {16, 64};
    strcpy(dir, "/tmp/mf-cli-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    write_npy("k.npy", 3, kv, 1);
    write_npy("v.npy", 3, kv, 2);
    write_npy("q.npy", 2, q, 3);
}

static void teardown(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(cli, .init = setup, .fini = teardown);

/* One line, prefixed with the program name. */
static void one_line_error(const char *needle) {
    char *nl = strchr(out, '\n');
    cr_assert(strncmp(out, "mustafar: ", 10) == 0, "output: %s", out);
    cr_assert(nl && nl[1] == 0, "not one line: %s", out);
    cr_assert(strstr(out, needle), "'%s' lacks '%s'", out, needle);
}

/* args exit with code and one line of error that holds needle. */
static void fails(int code, const char *args, const char *needle) {
    cr_assert_eq(cli(args), code, "%s: %s", args, out);
    one_line_error(needle);
}

Test(cli, usage) {
    cr_assert_eq(cli(""), 2);
    cr_assert(strstr(out, "usage: mustafar"));
    cr_assert_eq(cli("--help"), 0);
    cr_assert(strstr(out, "encode K.npy V.npy"));
    cr_assert_eq(cli("frobnicate"), 2);
    one_line_error("unknown command frobnicate");
    cr_assert(strncmp(out, "mustafar: mustafar", 18), "program named twice: %s", out);
}

Test(cli, each_command_has_help) {
    static const char *const cmds[] = {"encode", "decode", "inspect", "attend", "demo"};
    char args[64], head[64];
    size_t i;
    for (i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        snprintf(args, sizeof args, "%s %s", cmds[i], i % 2 ? "-h" : "--help");
        cr_assert_eq(cli(args), 0, "%s: %s", args, out);
        cr_assert(strstr(out, "-h, --help"), "%s: %s", args, out);
        /* the usage goes to stdout */
        snprintf(args, sizeof args, "%s --help | head -n 1", cmds[i]);
        snprintf(head, sizeof head, "usage: mustafar %s", cmds[i]);
        cli(args);
        cr_assert(strncmp(out, head, strlen(head)) == 0, "%s: %s", args, out);
    }
    cr_assert_eq(cli("encode --help"), 0);
    cr_assert(strstr(out, "K.npy V.npy -o CACHE.mfkv") && strstr(out, "--sparsity S"), "%s", out);
    cr_assert(!strstr(out, "--tokens"), "encode's help lists --tokens: %s", out);
    cr_assert_eq(cli("decode -h"), 0);
    cr_assert(!strstr(out, "--backend") && !strstr(out, "-o FILE"), "%s", out);
}

Test(cli, options_a_command_does_not_use_are_refused) {
    fails(2, "encode k.npy v.npy -o c.mfkv --tokens 5", "encode: takes no option --tokens");
    cr_assert(!exists("c.mfkv"));
    cr_assert_eq(cli("encode k.npy v.npy -o c.mfkv"), 0, "%s", out);
    fails(2, "decode c.mfkv kd.npy vd.npy -o x.npy", "decode: takes no option -o");
    cr_assert(!exists("kd.npy") && !exists("x.npy"));
    fails(2, "inspect c.mfkv --bits 4", "inspect: takes no option --bits");
    fails(2, "inspect --sparsity 0.1 c.mfkv", "--sparsity");
    /* not the missing GPU's error: the option itself is refused */
    fails(2, "decode --backend cuda c.mfkv kd.npy vd.npy", "decode: takes no option --backend");
    cr_assert_eq(cli("inspect c.mfkv --backend cpu"), 2);
    fails(2, "demo -o x.npy", "demo: takes no option -o");
}

Test(cli, double_dash_ends_the_options) {
    cr_assert_eq(rename_in_dir("k.npy", "-k.npy"), 0);
    fails(2, "encode -k.npy v.npy -o c.mfkv", "unknown option -k.npy");
    cr_assert_eq(cli("encode -o -c.mfkv -- -k.npy v.npy"), 0, "%s", out);
    cr_assert(exists("-c.mfkv"));
    cr_assert_eq(cli("inspect -- -c.mfkv"), 0, "%s", out);
    cr_assert(strstr(out, "-c.mfkv: mustafar container, valid"), "%s", out);
    fails(2, "inspect -- -c.mfkv --help", "unexpected argument --help");
}

/* The bytes of name in dir, for checking that a refused command left it. */
static char *slurp(const char *name, long *len) {
    char path[256];
    FILE *f;
    char *buf;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    fseek(f, 0, SEEK_END);
    *len = ftell(f);
    rewind(f);
    buf = malloc((size_t)*len + 1);
    cr_assert_eq(fread(buf, 1, (size_t)*len, f), (size_t)*len);
    fclose(f);
    return buf;
}

/* args are refused as writing over input name, which is left as it was. */
static void refused_over(const char *args, const char *name) {
    long n0, n1;
    char *before = slurp(name, &n0), *after;
    fails(1, args, "is the same file as input");
    after = slurp(name, &n1);
    cr_assert(n0 == n1 && memcmp(before, after, (size_t)n0) == 0, "%s changed", name);
    free(before);
    free(after);
}

Test(cli, an_output_that_is_an_input_is_refused) {
    char a[256], b[256];
    cr_assert_eq(cli("encode k.npy v.npy -o c.mfkv"), 0, "%s", out);
    refused_over("encode k.npy v.npy -o k.npy", "k.npy");
    refused_over("encode k.npy v.npy -o ./v.npy", "v.npy");
    refused_over("decode c.mfkv c.mfkv vd.npy", "c.mfkv");
    cr_assert(!exists("vd.npy"));
    refused_over("decode c.mfkv kd.npy ./c.mfkv", "c.mfkv");
    cr_assert(!exists("kd.npy"));
    refused_over("attend c.mfkv q.npy -o c.mfkv", "c.mfkv");
    refused_over("attend c.mfkv q.npy -o q.npy", "q.npy");
    /* a hard link is the same file under another name */
    snprintf(a, sizeof a, "%s/k.npy", dir);
    snprintf(b, sizeof b, "%s/hk.npy", dir);
    cr_assert_eq(link(a, b), 0);
    refused_over("encode k.npy v.npy -o hk.npy", "k.npy");
    cr_assert_eq(cli("encode k.npy v.npy -o c2.mfkv"), 0, "%s", out);
}

Test(cli, values_beyond_float16_are_named_as_such) {
    const uint64_t kv[3] = {4, 150, 64}, q[2] = {16, 64};
    const uint64_t k123 = (1 * 150 + 2) * 64 + 3, q57 = 5 * 64 + 7;
    write_npy_as("k32.npy", MF_F32, 3, kv, 1, k123, 1e6f);
    fails(1, "encode k32.npy v.npy -o c.mfkv",
          "k32.npy: input[1][2][3] = 1e+06 is out of the float16 range");
    cr_assert(!strstr(out, "NaN"), "%s", out);
    write_npy_as("k32.npy", MF_F32, 3, kv, 1, k123, NAN);
    fails(1, "encode k32.npy v.npy -o c.mfkv", "k32.npy: input[1][2][3] is NaN");
    cr_assert(!exists("c.mfkv"));
    /* just above 65504 still rounds to it */
    write_npy_as("k32.npy", MF_F32, 3, kv, 1, k123, 65510.0f);
    cr_assert_eq(cli("encode k32.npy v.npy -o c.mfkv"), 0, "%s", out);
    write_npy_as("q32.npy", MF_F32, 2, q, 3, q57, -1e6f);
    fails(1, "attend c.mfkv q32.npy -o o.npy",
          "q32.npy: input[5][7] = -1e+06 is out of the float16 range");
    write_npy_as("q32.npy", MF_F32, 2, q, 3, q57, NAN);
    fails(1, "attend c.mfkv q32.npy -o o.npy", "q32.npy: input[5][7] is NaN");
    write_npy_as("qh.npy", MF_F16, 2, q, 3, q57, INFINITY);
    fails(1, "attend c.mfkv qh.npy -o o.npy", "qh.npy: input[5][7] is inf");
    cr_assert(!exists("o.npy"));
    write_npy_as("q32.npy", MF_F32, 2, q, 3, q57, 1.5f);
    cr_assert_eq(cli("attend c.mfkv q32.npy -o o.npy"), 0, "%s", out);
}

Test(cli, encode_inspect_decode_attend) {
    cr_assert_eq(cli("encode k.npy v.npy -o c.mfkv --sparsity 0.5 --bits 4 --layout native"), 0,
                 "%s", out);
    cr_assert_eq(out[0], 0, "small inputs, yet progress lines: %s", out);
    cr_assert_eq(cli("inspect c.mfkv"), 0, "%s", out);
    cr_assert(strstr(out, "valid") && strstr(out, "native") && strstr(out, "4-bit"), "%s", out);
    cr_assert(strstr(out, "bytes/element"));
    cr_assert_eq(cli("decode c.mfkv kd.npy vd.npy"), 0, "%s", out);
    cr_assert_eq(out[0], 0, "%s", out);
    cr_assert(exists("kd.npy") && exists("vd.npy"));
    cr_assert_eq(cli("attend c.mfkv q.npy -o o.npy"), 0, "%s", out);
    cr_assert_eq(out[0], 0, "%s", out);
    {
        char path[256];
        mf_array a;
        snprintf(path, sizeof path, "%s/o.npy", dir);
        cr_assert_eq(mf_npy_load(path, &a, NULL), MF_OK);
        cr_assert_eq(a.dtype, MF_F32);
        cr_assert_eq(a.shape[0], 16);
        cr_assert_eq(a.shape[1], 64);
        mf_array_free(&a);
    }
}

Test(cli, bad_arguments) {
    fails(2, "encode k.npy v.npy -o c.mfkv --sparsity 1.5", "--sparsity 1.5");
    fails(2, "encode k.npy v.npy -o c.mfkv --bits 3", "--bits 3");
    fails(2, "encode k.npy -o c.mfkv", "needs K.npy V.npy");
    fails(2, "encode k.npy v.npy -o", "-o needs a value");
    fails(2, "attend c.mfkv q.npy --frob -o o.npy", "unknown option --frob");
    cr_assert(!exists("c.mfkv"));
}

Test(cli, missing_and_mismatched_inputs) {
    const uint64_t bad[3] = {4, 150, 96}, q3[3] = {16, 1, 64}, q[2] = {16, 64};
    const uint64_t q65[2] = {4 * 65, 64}, q64[2] = {4 * 64, 64};
    cr_assert_eq(cli("encode nothere.npy v.npy -o c.mfkv"), 1);
    one_line_error("nothere.npy");
    cr_assert(strstr(out, "nothere.npy: nothere.npy") == NULL, "path doubled: %s", out);
    cr_assert_eq(cli("inspect nothere.mfkv"), 1);
    one_line_error("nothere.mfkv");
    cr_assert(strstr(out, "nothere.mfkv: nothere.mfkv") == NULL, "path doubled: %s", out);
    write_npy("b.npy", 3, bad, 4);
    fails(1, "encode k.npy b.npy -o c.mfkv",
          "b.npy: shape [4, 150, 96] differs from k.npy's [4, 150, 64]");
    write_npy("k2.npy", 2, q, 6);
    fails(1, "encode k2.npy v.npy -o c.mfkv", "k2.npy: shape [16, 64], expected 3 dims");
    cr_assert_eq(cli("encode b.npy b.npy -o c.mfkv"), 1);
    one_line_error("dim 96");
    cr_assert(!exists("c.mfkv"));
    cr_assert_eq(cli("encode k.npy v.npy -o c.mfkv"), 0);
    write_npy("q3.npy", 3, q3, 5);
    fails(1, "attend c.mfkv q3.npy -o o.npy",
          "q3.npy: shape [16, 1, 64], expected shape [batch*q_heads, 64]");
    cr_assert(strstr(out, "multiple of 4: c.mfkv has 4 rows (batch*kv_heads) of dim 64"), "%s",
              out);
    write_npy("q65.npy", 2, q65, 7);
    fails(1, "attend c.mfkv q65.npy -o o.npy",
          "q65.npy: 260 rows are 65 query heads per KV head of c.mfkv (4 rows); "
          "attention takes at most 64");
    cr_assert(!exists("o.npy"));
    write_npy("q64.npy", 2, q64, 8);
    cr_assert_eq(cli("attend c.mfkv q64.npy -o o.npy"), 0, "%s", out);
}

Test(cli, corrupt_cache_names_the_field_and_writes_nothing) {
    char path[256];
    FILE *f;
    cr_assert_eq(cli("encode k.npy v.npy -o c.mfkv"), 0);
    snprintf(path, sizeof path, "%s/c.mfkv", dir);
    f = fopen(path, "r+b");
    fseek(f, -10, SEEK_END);
    fputc(0x5a, f);
    fclose(f);
    cr_assert_eq(cli("inspect c.mfkv"), 1);
    one_line_error("v.window: CRC mismatch");
    cr_assert_eq(cli("decode c.mfkv kd.npy vd.npy"), 1);
    one_line_error("CRC mismatch");
    cr_assert(!exists("kd.npy") && !exists("vd.npy"));
    cr_assert_eq(cli("attend c.mfkv q.npy -o o.npy"), 1);
    cr_assert(!exists("o.npy"));
    f = fopen(path, "wb");
    fputs("not a cache", f);
    fclose(f);
    cr_assert_eq(cli("inspect c.mfkv"), 1);
    one_line_error("magic");
}

Test(cli, decode_writes_both_outputs_or_neither) {
    cr_assert_eq(cli("encode k.npy v.npy -o c.mfkv"), 0);
    cr_assert_eq(cli("decode c.mfkv kd.npy nodir/vd.npy"), 1);
    one_line_error("nodir/vd.npy");
    cr_assert(strstr(out, "nodir/vd.npy: nodir/vd.npy") == NULL, "path doubled: %s", out);
    cr_assert(!exists("kd.npy") && !exists("kd.npy.partial"));
    cr_assert_eq(cli("encode k.npy v.npy -o nodir/c.mfkv"), 1);
    one_line_error("nodir/c.mfkv");
}

static mode_t mode_of(const char *name) {
    char path[256];
    struct stat sb;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    cr_assert_eq(lstat(path, &sb), 0, "%s", name);
    return sb.st_mode;
}

static void put(const char *name, const char *text) {
    char path[256];
    FILE *f;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    cr_assert_not_null(f = fopen(path, "w"));
    fputs(text, f);
    fclose(f);
}

/* Whether name exists and holds exactly text. */
static int holds(const char *name, const char *text) {
    long n;
    char *got;
    int same;
    if (!exists(name))
        return 0;
    got = slurp(name, &n);
    same = (size_t)n == strlen(text) && !memcmp(got, text, (size_t)n);
    free(got);
    return same;
}

Test(cli, decode_refuses_one_file_for_k_and_v) {
    cr_assert_eq(cli("encode k.npy v.npy -o c.mfkv"), 0);
    cr_assert_eq(cli("decode c.mfkv same.npy same.npy"), 1);
    one_line_error("same file");
    cr_assert(!exists("same.npy"));
    put("kd.npy", "old");
    cr_assert_eq(cli("decode c.mfkv kd.npy ./kd.npy"), 1);
    one_line_error("same file");
    cr_assert(holds("kd.npy", "old"));
    cr_assert_eq(cli("decode c.mfkv new.npy ./new.npy"), 1); /* no file yet: the writer sees it */
    one_line_error("same file");
    cr_assert(!exists("new.npy"));
    cr_assert_eq(cli("decode c.mfkv /dev/null /dev/null"), 0, "%s", out); /* devices: no file */
}

/* A failed decode leaves every existing file as it was, a name beside
 * the outputs included. */
Test(cli, decode_failure_touches_no_existing_file) {
    char path[256];
    cr_assert_eq(cli("encode k.npy v.npy -o c.mfkv"), 0);
    snprintf(path, sizeof path, "%s/kdir", dir);
    cr_assert_eq(mkdir(path, 0755), 0);
    put("vd.npy", "old");
    cr_assert_eq(cli("decode c.mfkv kdir vd.npy"), 1);
    one_line_error("kdir: is a directory");
    cr_assert(holds("vd.npy", "old"));
    put("kd.npy.partial", "mine");
    cr_assert_eq(cli("decode c.mfkv kd.npy vd.npy"), 0, "%s", out);
    cr_assert(holds("kd.npy.partial", "mine"));
}

/* New files follow the umask, replaced ones keep their mode, a symbolic
 * link stays a link (its file is written) and a device is written in
 * place, not replaced. */
Test(cli, outputs_keep_modes_links_and_devices) {
    char path[256];
    struct stat sb;
    cr_assert_eq(cli("encode k.npy v.npy -o c.mfkv"), 0);
    umask(077);
    cr_assert_eq(cli("attend c.mfkv q.npy -o p.npy"), 0, "%s", out);
    cr_assert_eq(mode_of("p.npy") & 0777, 0600);
    umask(022);
    put("kd.npy", "old");
    snprintf(path, sizeof path, "%s/kd.npy", dir);
    cr_assert_eq(chmod(path, 0640), 0);
    snprintf(path, sizeof path, "%s/vd-link.npy", dir);
    cr_assert_eq(symlink("vd.npy", path), 0);
    put("vd.npy", "old");
    cr_assert_eq(cli("decode c.mfkv kd.npy vd-link.npy"), 0, "%s", out);
    cr_assert_eq(mode_of("kd.npy") & 0777, 0640);
    cr_assert(S_ISLNK(mode_of("vd-link.npy")));
    cr_assert(!holds("vd.npy", "old") && !holds("kd.npy", "old"));
    cr_assert_eq(cli("attend c.mfkv q.npy -o /dev/null"), 0, "%s", out);
    cr_assert(stat("/dev/null", &sb) == 0 && S_ISCHR(sb.st_mode));
}

/* /dev/stdout is the shell's redirection, appended to as asked; an empty
 * name is refused; a name too long for a temporary beside it is cut. */
Test(cli, outputs_through_stdout_empty_and_long_names) {
    char cmd[400], *log, *o;
    long nlog, no;
    cr_assert_eq(cli("encode k.npy v.npy -o c.mfkv"), 0);
    put("log", "first\n");
    cr_assert_eq(cli("attend c.mfkv q.npy -o /dev/stdout >>log"), 0, "%s", out);
    cr_assert_eq(cli("attend c.mfkv q.npy -o o.npy"), 0, "%s", out);
    log = slurp("log", &nlog);
    o = slurp("o.npy", &no);
    cr_assert(nlog == 6 + no && !memcmp(log, "first\n", 6) && !memcmp(log + 6, o, (size_t)no),
              "the output did not follow the log's first line");
    free(log);
    free(o);
    cr_assert_eq(cli("decode c.mfkv kd.npy ''"), 1);
    one_line_error("empty");
    cr_assert(!exists("kd.npy"));
    memset(cmd, 0, sizeof cmd);
    strcpy(cmd, "attend c.mfkv q.npy -o ");
    memset(cmd + strlen(cmd), 'n', 250);
    strcat(cmd, ".npy");
    cr_assert_eq(cli(cmd), 0, "%s", out);
}

Test(cli, cuda_absent_is_a_clear_error) {
    if (mf_backend_available(MF_BACKEND_CUDA))
        cr_skip_test("a CUDA device is present");
    cr_assert_eq(cli("encode k.npy v.npy -o c.mfkv --backend cuda"), 1);
    one_line_error("cuda");
    cr_assert(!exists("c.mfkv"));
}

Test(cli, demo_runs_small) {
    cr_assert_eq(cli("demo --tokens 200"), 0, "%s", out);
    cr_assert(strstr(out, "ratio") && strstr(out, "bit-identical") && strstr(out, "pruning alone"),
              "%s", out);
    /* each long phase is announced before it starts */
    cr_assert(strstr(out, "encoding K and V (200 tokens)...\n"), "%s", out);
    cr_assert(strstr(out, "timing attention: 20 repetitions"), "%s", out);
}
