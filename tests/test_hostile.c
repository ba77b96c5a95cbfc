/*
 test_hostile.c - every file of the hostile corpus (tests/hostile/gen_hostile.py) is refused with
 one of the statuses its manifest allows (and, when the manifest has a third column, with a
 message containing it), through the mapped, copying and in-memory loaders, and
 the error names the file, a record or offset, and says what was wrong. No case may leave the
 marker file its payload would create if anything ran.
 Then the whole corpus again under SDICT_LOAD_INERT, where a pickle of objects is data: each
 case loads (objects and all) or fails with a filled-in error, and still nothing runs.

 Usage: test_hostile BUILD_TESTS_DIR   (its hostile/ holds the generated cases and manifest.tsv)
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "statedict.h"

static const char *g_dir;

/* "SDICT_E_CRC: ..." -> compares the name part with one entry of a comma-separated set. */
static int status_in(sdict_status st, const char *set) {
    const char *s = sdict_status_str(st);
    size_t n = strcspn(s, ":");
    const char *p = set;
    while (*p) {
        size_t m = strcspn(p, ",");
        if (m == n && strncmp(p, s, n) == 0)
            return 1;
        p += m + (p[m] == ',');
    }
    return 0;
}

/* Loads case `name` (file path) with flags: mode 0 mapped, 1 copied, 2 from a buffer. */
static sdict_status load_case(const char *path, const char *name, uint32_t flags, int mode,
                              sdict_doc **doc, sdict_error *err) {
    sdict_load_opts opts = {0};
    opts.flags = flags | (mode == 1 ? SDICT_LOAD_COPY : 0);
    memset(err, 0, sizeof *err);
    if (mode < 2)
        return sdict_load(path, &opts, doc, err);
    size_t n = 0;
    void *data = test_read_file(path, &n);
    assert_true(data != NULL || n == 0);
    sdict_status st = sdict_load_buffer(data, n, name, &opts, doc, err);
    free(data);
    return st;
}

static void test_every_case_refused(void **state) {
    (void)state;
    char path[4096];
    snprintf(path, sizeof path, "%s/manifest.tsv", g_dir);
    FILE *m = fopen(path, "r");
    assert_non_null(m);
    char line[1024], text[1024];
    int cases = 0, refused = 0;
    while (fgets(line, sizeof line, m)) {
        char *tab = strchr(line, '\t');
        assert_non_null(tab);
        *tab = '\0';
        char *expect = tab + 1;
        expect[strcspn(expect, "\n")] = '\0';
        /* optional third column: words the error message must contain */
        char *want = strchr(expect, '\t');
        if (want)
            *want++ = '\0';
        snprintf(path, sizeof path, "%s/%s.pt", g_dir, line);
        cases++;
        int ok_all = 1;
        for (int mode = 0; mode < 3; mode++) {
            sdict_doc *doc = NULL;
            sdict_error err;
            sdict_status st = load_case(path, line, 0, mode, &doc, &err);
            if (st == SDICT_OK || !status_in(st, expect)) {
                char msg[1024];
                fprintf(stderr, "case %s (mode %d): got %s, expected one of %s; %s\n", line, mode,
                        sdict_status_str(st), expect,
                        st == SDICT_OK ? "loaded" : sdict_error_format(&err, msg, sizeof msg));
                ok_all = 0;
            } else if (want && !strstr(sdict_error_format(&err, text, sizeof text), want)) {
                /* the rendered (escaped) message, as the CLI prints it */
                fprintf(stderr, "case %s (mode %d): message '%s' lacks '%s'\n", line, mode,
                        text, want);
                ok_all = 0;
            } else if (err.code != st || err.message[0] == '\0' || err.file[0] == '\0') {
                fprintf(stderr, "case %s (mode %d): error detail missing (code %d, file '%s', "
                        "message '%s')\n", line, mode, err.code, err.file, err.message);
                ok_all = 0;
            }
            assert_null(doc);
            sdict_doc_free(doc);
        }
        refused += ok_all;
    }
    fclose(m);
    snprintf(path, sizeof path, "%s/PWNED", g_dir);
    assert_int_not_equal(access(path, F_OK), 0); /* nothing ran */
    printf("hostile corpus: %d cases, %d refused as specified in all three loaders\n", cases,
           refused);
    assert_true(cases > 100);
    assert_int_equal(refused, cases);
}

/* Every case under SDICT_LOAD_INERT, through the three loaders: data or a clear error. */
static void test_every_case_inert(void **state) {
    (void)state;
    char path[4096];
    snprintf(path, sizeof path, "%s/manifest.tsv", g_dir);
    FILE *m = fopen(path, "r");
    assert_non_null(m);
    char line[1024];
    int cases = 0, loaded = 0, refused = 0, bad = 0;
    while (fgets(line, sizeof line, m)) {
        line[strcspn(line, "\t\n")] = '\0';
        snprintf(path, sizeof path, "%s/%s.pt", g_dir, line);
        cases++;
        for (int mode = 0; mode < 3; mode++) {
            sdict_doc *doc = NULL;
            sdict_error err;
            sdict_status st = load_case(path, line, SDICT_LOAD_INERT, mode, &doc, &err);
            if (st == SDICT_OK) {
                loaded += mode == 0;
                assert_non_null(doc);
                assert_non_null(sdict_doc_root(doc));
            } else if (err.code != st || err.message[0] == '\0' || err.file[0] == '\0') {
                fprintf(stderr, "case %s (inert, mode %d): error detail missing (code %d, file "
                        "'%s', message '%s')\n", line, mode, err.code, err.file, err.message);
                bad++;
            } else {
                refused += mode == 0;
                assert_null(doc);
            }
            sdict_doc_free(doc);
        }
    }
    fclose(m);
    snprintf(path, sizeof path, "%s/PWNED", g_dir);
    assert_int_not_equal(access(path, F_OK), 0); /* nothing ran */
    printf("hostile corpus under SDICT_LOAD_INERT: %d cases, %d loaded as data, %d refused\n",
           cases, loaded, refused);
    assert_true(cases > 100);
    assert_int_equal(bad, 0);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_hostile DIR (run through ctest)\n");
        return 77;
    }
    static char dir[4096];
    snprintf(dir, sizeof dir, "%s/hostile", argv[1]);
    g_dir = dir;
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_every_case_refused),
                                       cmocka_unit_test(test_every_case_inert)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
