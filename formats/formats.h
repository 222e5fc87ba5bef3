/* formats.h - helpers shared by the container and .npy readers (internal). */
#ifndef MF_FORMATS_H
#define MF_FORMATS_H

#include <stdint.h>

#include "../core/internal.h"

/* CRC-32 of n bytes continuing from crc (0 to start). */
uint32_t mf__crc32(uint32_t crc, const uint8_t *p, uint64_t n);

/* Little-endian loads and stores, independent of the host's byte order. */
static inline uint32_t mf__ld32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t mf__ld64(const uint8_t *p) {
    return (uint64_t)mf__ld32(p) | (uint64_t)mf__ld32(p + 4) << 32;
}
static inline void mf__st32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}
static inline void mf__st64(uint8_t *p, uint64_t v) {
    mf__st32(p, (uint32_t)v);
    mf__st32(p + 4, (uint32_t)(v >> 32));
}

/* Reads a whole file (at most max bytes) into a malloc'd buffer. */
mf_status mf__read_file(const char *path, uint64_t max, uint8_t **buf, uint64_t *len,
                        mf_diag *diag);
/* Writes n files, each regular one through a temporary beside it
 * (target.tmp-XXXXXX) renamed onto it once every one is written, so a
 * failure leaves no partial file and, short of a failing rename, every
 * existing file as it was. A symbolic link's file is written, not the
 * link; a device or FIFO is written in place, before any temporary, and
 * /dev/stdout, /dev/stderr, /dev/fd/N through their descriptors; an
 * existing file keeps its permissions, a new one gets 0666 less the
 * umask. An empty path, two paths naming one file (devices aside), a
 * directory or a link to nothing fail before anything is written. */
mf_status mf__write_files(uint32_t n, const char *const *paths, const uint8_t *const *bufs,
                          const uint64_t *lens, mf_diag *diag);
mf_status mf__write_file(const char *path, const uint8_t *buf, uint64_t len, mf_diag *diag);

#endif /* MF_FORMATS_H */
