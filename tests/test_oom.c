/*
 test_oom.c - out-of-memory paths. An allocator that fails the Nth allocation drives every
 allocation failure path in loading (zip and legacy, mapped/copied/in-memory), saving and value
 building: each must return SDICT_E_NOMEM (never crash) and free everything it had allocated.
 N runs from 1 until the operation succeeds, so every allocation site on the path is hit once.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "statedict.h"
#include "test_util.h"

static const sdict_allocator failing = {test_failing_malloc, test_failing_realloc, test_failing_free, NULL};

typedef sdict_status (*op_fn)(const char *path, const void *data, size_t n);

static sdict_status op_load_mmap(const char *path, const void *data, size_t n) {
    (void)data, (void)n;
    sdict_doc *doc = NULL;
    sdict_status st = sdict_load(path, NULL, &doc, NULL);
    sdict_doc_free(doc);
    return st;
}
static sdict_status op_load_copy(const char *path, const void *data, size_t n) {
    (void)data, (void)n;
    sdict_load_opts o = {.flags = SDICT_LOAD_COPY | SDICT_LOAD_VERIFY_CRC};
    sdict_doc *doc = NULL;
    sdict_status st = sdict_load(path, &o, &doc, NULL);
    sdict_doc_free(doc);
    return st;
}
/* load from memory, then save to memory: the writer's allocation paths (numpy values and
   the rest of what only weights_only=False loads included), in either layout */
static sdict_status roundtrip(const void *data, size_t n, uint32_t layout) {
    sdict_doc *doc = NULL;
    sdict_status st = sdict_load_buffer(data, n, "oom", NULL, &doc, NULL);
    if (st == SDICT_OK) {
        void *out = NULL;
        size_t len = 0;
        sdict_save_opts o = {.archive_name = NULL, .flags = SDICT_SAVE_ALLOW_NOT_WEIGHTS_ONLY | layout};
        st = sdict_save_buffer(sdict_doc_root(doc), &o, &out, &len, NULL);
        sdict_free_buffer(out);
    }
    sdict_doc_free(doc);
    return st;
}
static sdict_status op_roundtrip(const char *path, const void *data, size_t n) {
    (void)path;
    return roundtrip(data, n, 0);
}
static sdict_status op_roundtrip2(const char *path, const void *data, size_t n) {
    (void)path;
    return roundtrip(data, n, SDICT_SAVE_LAYOUT_TORCH2);
}

static long g_paths;

static void drive(const char *path, op_fn op) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *data = malloc((size_t)n);
    assert_non_null(data);
    assert_int_equal(fread(data, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    sdict_set_allocator(&failing);
    for (long fail_at = 0;; fail_at++) {
        test_alloc()->countdown = fail_at;
        test_alloc()->live = 0;
        sdict_status st = op(path, data, (size_t)n);
        if (test_alloc()->live != 0)
            fail_msg("%s: %ld blocks leaked when allocation %ld failed", path, test_alloc()->live, fail_at);
        if (st == SDICT_OK)
            break;
        if (st != SDICT_E_NOMEM)
            fail_msg("%s: allocation %ld failed but status was %s", path, fail_at,
                     sdict_status_str(st));
        g_paths++;
        assert_true(fail_at < 1000000);
    }
    sdict_set_allocator(NULL);
    free(data);
}

static void test_oom(void **state) {
    (void)state;
    const char *dir = SDICT_TEST_DATA "/../fuzz/corpus/fuzz_load";
    const op_fn ops[] = {op_load_mmap, op_load_copy, op_roundtrip, op_roundtrip2};
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
            drive(path, ops[i]);
    }
    closedir(d);
    printf("oom: %ld allocation failures driven, each returned SDICT_E_NOMEM without leaks\n",
           g_paths);
    assert_true(g_paths > 100);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_oom)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
