/* alloc_count.c - counts the bytes malloc hands out between
 * fz_alloc_start and fz_alloc_stop. Linked with -Wl,--wrap=malloc, so
 * the readers' own allocations are seen whatever the sanitizer. The
 * readers run on one thread, so a plain counter will do. */
#include <stdlib.h>

#include "fuzz.h"

void *__real_malloc(size_t n);
void *__wrap_malloc(size_t n);

static int counting;
static uint64_t counted;

void *__wrap_malloc(size_t n) {
    if (counting)
        counted += n;
    return __real_malloc(n);
}

void fz_alloc_start(void) {
    counted = 0;
    counting = 1;
}

uint64_t fz_alloc_stop(void) {
    counting = 0;
    return counted;
}
