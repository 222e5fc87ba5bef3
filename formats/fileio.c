/* fileio.c - whole-file reads and atomic writes (POSIX). */
#define _XOPEN_SOURCE 700 /* POSIX 2008 with realpath() */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
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

/* One output of mf__write_files: the file its path names (symbolic links
 * followed, the directory made absolute, so two names of one file
 * compare equal), and how it is written. */
typedef struct {
    char *target;
    char *tmp;   /* the temporary beside target, until renamed onto it */
    int exists;  /* target exists: a regular file or (direct) another kind */
    int direct;  /* a device or FIFO: written in place, never replaced */
    int fd;      /* direct: the descriptor a /dev/fd name stands for, else -1 */
    mode_t mode; /* an existing regular file's permissions, kept */
    dev_t dev;
    ino_t ino;
} out_file;

/* The descriptor that /dev/stdout, /dev/stderr, /dev/fd/N or
 * /proc/self/fd/N names, else -1: written through, so that a shell's
 * redirection (appending, or a socket) is honoured, not replaced. */
static int fd_name(const char *path) {
    const char *p = NULL;
    long v;
    char *end;
    if (!strcmp(path, "/dev/stdout"))
        return 1;
    if (!strcmp(path, "/dev/stderr"))
        return 2;
    if (!strncmp(path, "/dev/fd/", 8))
        p = path + 8;
    else if (!strncmp(path, "/proc/self/fd/", 14))
        p = path + 14;
    if (!p || *p < '0' || *p > '9')
        return -1;
    v = strtol(p, &end, 10);
    return *end || v > INT_MAX ? -1 : (int)v;
}

/* The file path names: realpath() of path if it exists, else of its
 * directory joined with its last component. */
static mf_status resolve(const char *path, out_file *o, mf_diag *diag) {
    struct stat st;
    const char *slash;
    char *dir, *real;
    size_t dlen;
    if (!*path)
        return mf__fail(diag, MF_ERR_IO, "an output path is empty");
    o->fd = fd_name(path);
    if (o->fd >= 0 ? fstat(o->fd, &st) == 0 : stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode))
            return mf__fail(diag, MF_ERR_IO, "%s: is a directory", path);
        o->exists = 1;
        o->direct = o->fd >= 0 || !S_ISREG(st.st_mode);
        /* a device or FIFO is opened by its own name (or descriptor) */
        if (!(o->target = o->direct ? strdup(path) : realpath(path, NULL)))
            return mf__fail(diag, MF_ERR_IO, "%s: %s", path, strerror(errno));
        o->mode = st.st_mode & 07777;
        o->dev = st.st_dev;
        o->ino = st.st_ino;
        return MF_OK;
    }
    if (errno != ENOENT)
        return mf__fail(diag, MF_ERR_IO, "%s: %s", path, strerror(errno));
    {
        struct stat lst;
        if (lstat(path, &lst) == 0) /* a link to nothing: no file to name */
            return mf__fail(diag, MF_ERR_IO, "%s: a symbolic link to a missing file", path);
    }
    slash = strrchr(path, '/');
    if (slash && !slash[1])
        return mf__fail(diag, MF_ERR_IO, "%s: names a directory", path);
    dlen = slash ? (size_t)(slash - path) : 0;
    if (!(dir = (char *)malloc(dlen + 2)))
        return mf__fail(diag, MF_ERR_NOMEM, "out of memory");
    if (!slash)
        strcpy(dir, ".");
    else if (!dlen)
        strcpy(dir, "/");
    else {
        memcpy(dir, path, dlen);
        dir[dlen] = 0;
    }
    real = realpath(dir, NULL);
    if (!real) {
        mf_status s = mf__fail(diag, MF_ERR_IO, "%s: directory %s: %s", path, dir, strerror(errno));
        free(dir);
        return s;
    }
    free(dir);
    {
        const char *base = slash ? slash + 1 : path;
        size_t rl = strlen(real), bl = strlen(base);
        o->target = (char *)malloc(rl + bl + 2);
        if (o->target) {
            memcpy(o->target, real, rl);
            o->target[rl] = '/';
            memcpy(o->target + rl + 1, base, bl + 1);
        }
    }
    free(real);
    return o->target ? MF_OK : mf__fail(diag, MF_ERR_NOMEM, "out of memory");
}

static int write_all(int fd, const uint8_t *buf, uint64_t len) {
    while (len) {
        size_t chunk = len > (UINT64_C(1) << 30) ? (size_t)1 << 30 : (size_t)len;
        ssize_t w = write(fd, buf, chunk);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (!w)
                errno = EIO; /* no progress, no error: say so */
            return 0;
        }
        buf += w;
        len -= (uint64_t)w;
    }
    return 1;
}

/* Writes o's temporary: target.tmp-XXXXXX (the target's name cut where
 * the suffix would pass the 255 bytes a name may have), created with the
 * target's permissions (an existing file's, else 0666 less the umask, as
 * any new file). The name's letters come from the clock, the process and
 * the stack address, tried afresh where one exists. */
static mf_status write_tmp(out_file *o, const char *path, const uint8_t *buf, uint64_t len,
                           mf_diag *diag) {
    static const char letters[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    size_t n = strlen(o->target), base = n - (size_t)(strrchr(o->target, '/') + 1 - o->target);
    uint64_t x = ((uint64_t)time(NULL) ^ (uint64_t)getpid() << 32 ^ (uint64_t)(uintptr_t)&n ^
                  (uint64_t)clock()) | 1u; /* xorshift never leaves 0 */
    int fd = -1, tries, ok, e;
    if (base > 255 - 11)
        n -= base - (255 - 11);
    if (!(o->tmp = (char *)malloc(n + 12)))
        return mf__fail(diag, MF_ERR_NOMEM, "out of memory");
    memcpy(o->tmp, o->target, n);
    for (tries = 0; tries < 100 && fd < 0; tries++) {
        int i;
        memcpy(o->tmp + n, ".tmp-", 5);
        for (i = 0; i < 6; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17; /* xorshift64 */
            o->tmp[n + 5 + i] = letters[x % 36u];
        }
        o->tmp[n + 11] = 0;
        fd = open(o->tmp, O_WRONLY | O_CREAT | O_EXCL, o->exists ? o->mode : 0666);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0) {
        e = errno;
        free(o->tmp);
        o->tmp = NULL;
        return mf__fail(diag, MF_ERR_IO, "%s: cannot create a file beside it: %s", path,
                        strerror(e));
    }
    /* an existing file's mode is set again: the umask may have cut it */
    ok = write_all(fd, buf, len) && (!o->exists || fchmod(fd, o->mode) == 0) && fsync(fd) == 0;
    e = errno;
    if (close(fd) != 0 && ok) {
        ok = 0;
        e = errno;
    }
    if (!ok) {
        unlink(o->tmp);
        free(o->tmp);
        o->tmp = NULL;
        return mf__fail(diag, MF_ERR_IO, "%s: write failed: %s", path, strerror(e));
    }
    return MF_OK;
}

mf_status mf__write_files(uint32_t n, const char *const *paths, const uint8_t *const *bufs,
                          const uint64_t *lens, mf_diag *diag) {
    out_file *o;
    uint32_t i, j;
    mf_status st = MF_OK;
    if (!paths || (n && (!bufs || !lens)))
        return mf__fail(diag, MF_ERR_NULL, "paths, buffers or lengths are NULL");
    if (!(o = (out_file *)calloc(n ? n : 1, sizeof *o)))
        return mf__fail(diag, MF_ERR_NOMEM, "out of memory");
    for (i = 0; i < n && st == MF_OK; i++)
        st = paths[i] ? resolve(paths[i], &o[i], diag)
                      : mf__fail(diag, MF_ERR_NULL, "path is NULL");
    for (i = 0; i < n && st == MF_OK; i++)
        for (j = 0; j < i && st == MF_OK; j++)
            if (!(o[i].direct && o[j].direct) && /* /dev/null twice is fine */
                (!strcmp(o[i].target, o[j].target) ||
                 (o[i].exists && o[j].exists && o[i].dev == o[j].dev && o[i].ino == o[j].ino)))
                st = mf__fail(diag, MF_ERR_ARG, "%s and %s name the same file", paths[j], paths[i]);
    /* Devices and pipes first: they cannot be taken back, and a reader
     * that waits or goes away (SIGPIPE) then leaves no temporary behind. */
    for (i = 0; i < n && st == MF_OK; i++) {
        int fd;
        if (!o[i].direct)
            continue;
        fd = o[i].fd >= 0 ? o[i].fd : open(o[i].target, O_WRONLY);
        if (fd < 0 || !write_all(fd, bufs[i], lens[i]))
            st = mf__fail(diag, MF_ERR_IO, "%s: write failed: %s", paths[i], strerror(errno));
        if (fd >= 0 && fd != o[i].fd)
            close(fd);
    }
    /* Every regular file's bytes go to its temporary before any rename,
     * so that a failure before the renames leaves every file as it was. */
    for (i = 0; i < n && st == MF_OK; i++)
        if (!o[i].direct)
            st = write_tmp(&o[i], paths[i], bufs[i], lens[i], diag);
    for (i = 0; i < n && st == MF_OK; i++)
        if (o[i].tmp) {
            if (rename(o[i].tmp, o[i].target) != 0)
                st = mf__fail(diag, MF_ERR_IO, "%s: cannot replace it: %s%s", paths[i],
                              strerror(errno), i ? " (the files before it were written)" : "");
            else {
                free(o[i].tmp);
                o[i].tmp = NULL;
            }
        }
    for (i = 0; i < n; i++) {
        if (o[i].tmp)
            unlink(o[i].tmp);
        free(o[i].tmp);
        free(o[i].target);
    }
    free(o);
    return st;
}

mf_status mf__write_file(const char *path, const uint8_t *buf, uint64_t len, mf_diag *diag) {
    return mf__write_files(1, &path, &buf, &len, diag);
}
