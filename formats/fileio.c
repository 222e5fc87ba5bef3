/* fileio.c - whole-file reads and atomic writes (POSIX). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats.h"

mf_status mf__read_file(const char *path, uint64_t max, uint8_t **buf, uint64_t *len,
                        mf_diag *diag) {
    FILE *f;
    struct stat st;
    uint8_t *b;
    size_t got;
    *buf = NULL;
    *len = 0;
    if (!path)
        return mf__fail(diag, MF_ERR_NULL, "path is NULL");
    f = fopen(path, "rb");
    if (!f)
        return mf__fail(diag, MF_ERR_IO, "%s: %s", path, strerror(errno));
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return mf__fail(diag, MF_ERR_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > max || (uint64_t)st.st_size > SIZE_MAX) {
        fclose(f);
        return mf__fail(diag, MF_ERR_LIMIT, "%s: %llu bytes exceeds the limit of %llu", path,
                        (unsigned long long)st.st_size, (unsigned long long)max);
    }
    b = (uint8_t *)malloc(st.st_size ? (size_t)st.st_size : 1);
    if (!b) {
        fclose(f);
        return mf__fail(diag, MF_ERR_NOMEM, "%s: cannot allocate %llu bytes", path,
                        (unsigned long long)st.st_size);
    }
    got = fread(b, 1, (size_t)st.st_size, f);
    if (got != (size_t)st.st_size || ferror(f)) {
        fclose(f);
        free(b);
        return mf__fail(diag, MF_ERR_IO, "%s: read failed", path);
    }
    fclose(f);
    *buf = b;
    *len = (uint64_t)st.st_size;
    return MF_OK;
}

mf_status mf__write_file(const char *path, const uint8_t *buf, uint64_t len, mf_diag *diag) {
    char *tmp;
    size_t n;
    int fd, ok;
    FILE *f;
    if (!path)
        return mf__fail(diag, MF_ERR_NULL, "path is NULL");
    n = strlen(path);
    tmp = (char *)malloc(n + 16);
    if (!tmp)
        return mf__fail(diag, MF_ERR_NOMEM, "out of memory");
    memcpy(tmp, path, n);
    memcpy(tmp + n, ".tmp-XXXXXX", 12);
    fd = mkstemp(tmp);
    if (fd < 0) {
        mf_status st = mf__fail(diag, MF_ERR_IO, "%s: cannot create a file beside it: %s", path,
                                strerror(errno));
        free(tmp);
        return st;
    }
    f = fdopen(fd, "wb");
    if (!f) {
        close(fd);
        unlink(tmp);
        free(tmp);
        return mf__fail(diag, MF_ERR_IO, "%s: fdopen failed", path);
    }
    ok = fwrite(buf, 1, (size_t)len, f) == (size_t)len;
    ok = fflush(f) == 0 && ok;
    ok = fsync(fileno(f)) == 0 && ok;
    ok = fclose(f) == 0 && ok;
    if (ok) /* mkstemp creates 0600; the result gets ordinary permissions */
        ok = chmod(tmp, 0644) == 0;
    if (ok)
        ok = rename(tmp, path) == 0;
    if (!ok) {
        int e = errno;
        unlink(tmp);
        free(tmp);
        return mf__fail(diag, MF_ERR_IO, "%s: write failed: %s", path, strerror(e));
    }
    free(tmp);
    return MF_OK;
}
