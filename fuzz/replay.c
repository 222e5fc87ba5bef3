/* replay.c - runs a fuzz target over files and directories (or stdin),
 * without libFuzzer: the CI replay build and a debugging aid. Any failed
 * check aborts, so exit status 0 means every input passed. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

static unsigned long runs;

static int run_stream(FILE *f, const char *name) {
    size_t cap = 4096, n = 0, got;
    uint8_t *buf = (uint8_t *)malloc(cap), *exact;
    while (buf) {
        if (n == cap) {
            uint8_t *bigger = (uint8_t *)realloc(buf, cap * 2);
            if (!bigger)
                break;
            buf = bigger;
            cap *= 2;
        }
        if ((got = fread(buf + n, 1, cap - n, f)) == 0)
            break;
        n += got;
    }
    if (!buf || n == cap || ferror(f)) {
        fprintf(stderr, "replay: %s: read failed\n", name);
        free(buf);
        return 1;
    }
    /* An exact-size copy, as libFuzzer passes: a read past the input's
     * end must land outside the allocation for ASan to see it. */
    exact = (uint8_t *)malloc(n ? n : 1);
    if (exact) {
        memcpy(exact, buf, n);
        LLVMFuzzerTestOneInput(exact, n);
        runs++;
    }
    free(exact);
    free(buf);
    return exact ? 0 : 1;
}

static int run_path(const char *path) {
    struct stat st;
    struct dirent **ents;
    int n, i, rc = 0;
    if (stat(path, &st) != 0) {
        perror(path);
        return 1;
    }
    if (!S_ISDIR(st.st_mode)) {
        FILE *f = fopen(path, "rb");
        if (!f) {
            perror(path);
            return 1;
        }
        rc = run_stream(f, path);
        fclose(f);
        return rc;
    }
    /* Sorted, so a failure is reproducible in order. */
    if ((n = scandir(path, &ents, NULL, alphasort)) < 0) {
        perror(path);
        return 1;
    }
    for (i = 0; i < n; i++) {
        if (ents[i]->d_name[0] != '.') {
            size_t len = strlen(path) + strlen(ents[i]->d_name) + 2;
            char *p = (char *)malloc(len);
            if (!p) {
                rc = 1;
            } else {
                snprintf(p, len, "%s/%s", path, ents[i]->d_name);
                rc |= run_path(p);
                free(p);
            }
        }
        free(ents[i]);
    }
    free(ents);
    return rc;
}

int main(int argc, char **argv) {
    int i, rc = 0;
    if (argc < 2)
        rc = run_stream(stdin, "stdin");
    for (i = 1; i < argc; i++)
        rc |= run_path(argv[i]);
    fprintf(stderr, "%s: %lu inputs passed\n", argv[0], runs);
    return rc;
}
