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

#endif
