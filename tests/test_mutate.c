/*
 test_mutate.c - truncation and bit flips on real torch files (the committed fuzz seeds, written by
 torch 1.13): every prefix and single-bit flips at many positions either load or fail cleanly
 (sanitizers catch anything else), never allocate more than a small multiple of the file size,
 and with CRC verification on, every flip inside a record's payload is detected.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_util.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---- an allocator that tracks live and peak bytes -------------------------------------------- */
static size_t g_live, g_peak;

static void *t_malloc(void *ctx, size_t n) {
    (void)ctx;
    size_t *p = malloc(n + 16);
    if (!p)
        return NULL;
    p[0] = n;
    g_live += n;
    if (g_live > g_peak)
        g_peak = g_live;
    return (char *)p + 16;
}
static void t_free(void *ctx, void *q) {
    (void)ctx;
    if (!q)
        return;
    size_t *p = (size_t *)((char *)q - 16);
    g_live -= p[0];
    free(p);
}
static void *t_realloc(void *ctx, void *q, size_t n) {
    if (!q)
        return t_malloc(ctx, n);
    size_t *p = (size_t *)((char *)q - 16);
    size_t old = p[0];
    size_t *r = realloc(p, n + 16);
    if (!r)
        return NULL;
    r[0] = n;
    g_live = g_live - old + n;
    if (g_live > g_peak)
        g_peak = g_live;
    return (char *)r + 16;
}
static const sdict_allocator tracking = {t_malloc, t_realloc, t_free, NULL};

/* Loads data; returns the status. Checks the memory bound and that nothing leaked. */
static sdict_status load_checked(const uint8_t *data, size_t n, uint32_t flags) {
    sdict_load_opts opts = {.flags = flags};
    sdict_doc *doc = NULL;
    sdict_error err;
    g_peak = g_live = 0;
    sdict_status st = sdict_load_buffer(data, n, "mutant", &opts, &doc, &err);
    sdict_doc_free(doc);
    if (g_peak > 64 * (size_t)n + (1u << 20))
        fail_msg("load of %zu bytes peaked at %zu bytes", n, g_peak);
    assert_int_equal(g_live, 0);
    return st;
}

static int g_prefixes, g_flips, g_payload_flips;

static void mutate_file(const char *path) {
    size_t n = 0;
    uint8_t *orig = test_read_file(path, &n);
    assert_non_null(orig);
    uint8_t *buf = malloc(n + 1);
    assert_non_null(buf);
    assert_int_equal(load_checked(orig, n, SDICT_LOAD_VERIFY_CRC), SDICT_OK);

    /* every prefix: a shorter file is never a crash; zip prefixes lose their end records */
    for (size_t len = 0; len < n; len++) {
        sdict_status st = load_checked(orig, len, 0);
        if (orig[0] == 'P')
            assert_int_not_equal(st, SDICT_OK);
        g_prefixes++;
    }

    /* payload byte ranges of the zip records, to know which flips the CRC must catch */
    uint64_t lo[256], hi[256];
    size_t nrec = 0;
    if (n > 4 && memcmp(orig, "PK\3\4", 4) == 0) {
        sdict__source src;
        sdict__source_init_mem(&src, orig, n, path);
        sdict__zip *z = NULL;
        assert_int_equal(sdict__zip_open(&src, &(sdict_limits){.max_records = 1000}, &z, NULL), SDICT_OK);
        for (size_t i = 0; i < sdict__zip_count(z) && nrec < 256; i++, nrec++) {
            lo[nrec] = sdict__zip_entry_at(z, i)->data_offset;
            hi[nrec] = lo[nrec] + sdict__zip_entry_at(z, i)->comp_size;
        }
        sdict__zip_close(z);
        sdict__source_close(&src);
    }
    size_t step = n > 4000 ? n / 2000 : 1;
    for (size_t pos = 0; pos < n; pos += step) {
        for (int bit = 0; bit < 8; bit += 3) {
            memcpy(buf, orig, n);
            buf[pos] ^= (uint8_t)(1u << bit);
            (void)load_checked(buf, n, 0);
            sdict_status st = load_checked(buf, n, SDICT_LOAD_VERIFY_CRC);
            g_flips++;
            for (size_t r = 0; r < nrec; r++) {
                if (pos >= lo[r] && pos < hi[r]) {
                    if (st == SDICT_OK)
                        fail_msg("%s: flip at byte %zu (payload of record %zu) not detected", path, pos, r);
                    g_payload_flips++;
                }
            }
        }
    }
    free(buf);
    free(orig);
}

static void test_mutations(void **state) {
    (void)state;
    const char *dir = SDICT_TEST_DATA "/../fuzz/corpus/fuzz_load";
    DIR *d = opendir(dir);
    assert_non_null(d);
    sdict_set_allocator(&tracking);
    struct dirent *e;
    int files = 0;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        mutate_file(path);
        files++;
    }
    closedir(d);
    sdict_set_allocator(NULL);
    printf("mutations: %d files, %d prefixes, %d bit flips (%d inside payloads, all detected by "
           "CRC verification)\n", files, g_prefixes, g_flips, g_payload_flips);
    assert_true(files >= 6);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_mutations)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
