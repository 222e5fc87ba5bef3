/* timing.h - wall-clock time and medians for the programs that time
 * things (bench/, tools/). A file that includes it defines
 * _POSIX_C_SOURCE before its first include (clock_gettime). */
#ifndef MF_TIMING_H
#define MF_TIMING_H

#include <stdlib.h>
#include <time.h>

static inline double mf_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline int mf_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Sorts t[0..n) and returns its median. */
static inline double mf_median(double *t, int n) {
    qsort(t, (size_t)n, sizeof *t, mf_cmp_double);
    return t[n / 2];
}

#endif
