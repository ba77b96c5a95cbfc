/* test_util.h - small helpers shared by the C tests. */
#ifndef SDICT_TEST_UTIL_H
#define SDICT_TEST_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* The whole file in a malloc'ed buffer with a NUL after its last byte (so an empty file still
   gets a non-NULL buffer); *n gets its size. NULL (and *n 0) if it cannot be opened or read. */
static inline uint8_t *test_read_file(const char *path, size_t *n) {
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = len >= 0 ? malloc((size_t)len + 1) : NULL;
    size_t got = buf ? fread(buf, 1, (size_t)len, f) : 0;
    fclose(f);
    if (!buf || got != (size_t)len) {
        free(buf);
        return NULL;
    }
    buf[len] = 0; /* text files can be parsed as strings */
    *n = (size_t)len;
    return buf;
}

/* A failing allocator for sdict_set_allocator: every allocation fails once
   test_alloc()->countdown reaches 0 (< 0: never), and test_alloc()->live counts live blocks
   (it must come back to 0: nothing leaked on any failure path). */
typedef struct test_alloc_state {
    long countdown;
    long live;
} test_alloc_state;

static inline test_alloc_state *test_alloc(void) {
    static test_alloc_state s = {-1, 0};
    return &s;
}

static inline void *test_failing_malloc(void *ctx, size_t n) {
    (void)ctx;
    test_alloc_state *a = test_alloc();
    if (a->countdown == 0)
        return NULL;
    if (a->countdown > 0)
        a->countdown--;
    void *p = malloc(n ? n : 1);
    if (p)
        a->live++;
    return p;
}

static inline void *test_failing_realloc(void *ctx, void *p, size_t n) {
    if (!p)
        return test_failing_malloc(ctx, n);
    test_alloc_state *a = test_alloc();
    if (a->countdown == 0)
        return NULL;
    if (a->countdown > 0)
        a->countdown--;
    return realloc(p, n ? n : 1);
}

static inline void test_failing_free(void *ctx, void *p) {
    (void)ctx;
    if (p)
        test_alloc()->live--;
    free(p);
}

#endif
