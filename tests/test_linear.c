/*
 test_linear.c - no crash on API misuse or on a file that changes under a mapped doc, and the
 per-process hash seed (issue 11).

 - sdict_str_new / sdict_bytes_new with lengths near SIZE_MAX return NULL instead of rounding
   the allocation up past SIZE_MAX into a tiny block and copying gigabytes into it;
 - a file truncated while a doc maps it: reading the tensor data raises SIGBUS, as the header
   documents (the library installs no signal handler; the CLI turns it into exit 3), checked in
   a child process; the same file loaded with SDICT_LOAD_COPY keeps its values after the
   truncation;
 - sdict__hash_seed() is drawn once and never 0.

 Usage: test_linear BUILD_TESTS_DIR   (a scratch file is written there)
*/
#define _DEFAULT_SOURCE /* truncate, fork */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "statedict.h"
#include "../src/internal.h"

static const char *g_dir;
static char g_path[4096];

enum { N_ELEMS = 1 << 18 }; /* 1 MB of float32: many pages past the truncation point */

/* Writes {'w': arange(N_ELEMS) as float32} to g_path with sdict_save (payload 64-byte aligned,
   so a default load maps it in place). */
static void write_checkpoint(void) {
    snprintf(g_path, sizeof g_path, "%s/linear_mapped.pt", g_dir);
    sdict_error err;
    sdict_doc *doc = NULL;
    assert_int_equal(sdict_doc_new(&doc, &err), SDICT_OK);
    sdict_storage *s = NULL;
    assert_int_equal(sdict_storage_new((size_t)N_ELEMS * 4, &s, &err), SDICT_OK);
    float *f = sdict_storage_data(s);
    for (int i = 0; i < N_ELEMS; i++)
        f[i] = (float)i;
    int64_t shape[1] = {N_ELEMS}, stride[1];
    sdict_tensor t;
    assert_int_equal(sdict_tensor_init(&t, SDICT_FLOAT32, 1, shape, stride, s, &err), SDICT_OK);
    sdict_value *tv = NULL;
    assert_int_equal(sdict_tensor_new(doc, &t, &tv, &err), SDICT_OK);
    sdict_storage_release(s);
    sdict_value *root = sdict_dict_new(doc, true);
    assert_non_null(root);
    assert_int_equal(sdict_dict_set_str(root, "w", tv), SDICT_OK);
    assert_int_equal(sdict_save(g_path, root, NULL, &err), SDICT_OK);
    sdict_doc_free(doc);
}

static const sdict_tensor *tensor_w(sdict_doc *doc) {
    const sdict_tensor *t = sdict_value_tensor(sdict_dict_get(sdict_doc_root(doc), "w"));
    assert_non_null(t);
    assert_int_equal(t->shape[0], N_ELEMS);
    return t;
}

static void test_str_bytes_near_size_max(void **state) {
    (void)state;
    sdict_doc *doc = NULL;
    sdict_error err;
    assert_int_equal(sdict_doc_new(&doc, &err), SDICT_OK);
    static const char small[64] = "only 64 bytes behind this pointer";
    /* lengths whose allocation (len + 1, rounded up to 16, plus a chunk header) would wrap */
    const size_t lens[] = {SIZE_MAX, SIZE_MAX - 1, SIZE_MAX - 2, SIZE_MAX - 15, SIZE_MAX - 16,
                           SIZE_MAX - 17, SIZE_MAX - 40};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        assert_null(sdict_str_new(doc, small, lens[i]));
        assert_null(sdict_bytes_new(doc, small, lens[i]));
    }
    /* the doc is still usable */
    sdict_value *v = sdict_str_new(doc, small, 4);
    assert_non_null(v);
    size_t n = 0;
    assert_string_equal(sdict_str_get(v, &n), "only");
    assert_int_equal(n, 4);
    sdict_doc_free(doc);
}

static void test_mapped_file_truncated_raises_sigbus(void **state) {
    (void)state;
    write_checkpoint();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* child: map, check, truncate, touch: the documented outcome is SIGBUS. Exit codes
           say which step went wrong. The default action is restored in case a sanitizer
           runtime installed its own handler. */
        signal(SIGBUS, SIG_DFL);
        sdict_doc *doc = NULL;
        sdict_error err;
        if (sdict_load(g_path, NULL, &doc, &err) != SDICT_OK)
            _exit(10);
        const sdict_tensor *t = sdict_value_tensor(sdict_dict_get(sdict_doc_root(doc), "w"));
        if (!t)
            _exit(11);
        volatile const float *f = sdict_tensor_data(t);
        if (f[N_ELEMS - 1] != (float)(N_ELEMS - 1)) /* mapped and readable before */
            _exit(12);
        if (truncate(g_path, 0) != 0)
            _exit(13);
        float x = f[N_ELEMS - 1]; /* past the file's new end: SIGBUS */
        (void)x;
        _exit(14);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (WIFEXITED(status))
        fail_msg("child exited %d instead of dying of SIGBUS", WEXITSTATUS(status));
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGBUS);
}

static void test_copy_load_survives_truncation(void **state) {
    (void)state;
    write_checkpoint();
    sdict_load_opts opts = {0};
    opts.flags = SDICT_LOAD_COPY;
    sdict_doc *doc = NULL;
    sdict_error err;
    assert_int_equal(sdict_load(g_path, &opts, &doc, &err), SDICT_OK);
    assert_int_equal(truncate(g_path, 0), 0);
    const float *f = sdict_tensor_data(tensor_w(doc));
    for (int i = 0; i < N_ELEMS; i += 4093)
        assert_true(f[i] == (float)i);
    assert_true(f[N_ELEMS - 1] == (float)(N_ELEMS - 1));
    sdict_doc_free(doc);
    unlink(g_path);
}

static void test_hash_seed(void **state) {
    (void)state;
    uint64_t a = sdict__hash_seed(), b = sdict__hash_seed();
    assert_true(a != 0);
    assert_true(a == b);
}

int main(int argc, char **argv) {
    g_dir = argc > 1 ? argv[1] : ".";
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_str_bytes_near_size_max),
        cmocka_unit_test(test_mapped_file_truncated_raises_sigbus),
        cmocka_unit_test(test_copy_load_survives_truncation),
        cmocka_unit_test(test_hash_seed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
