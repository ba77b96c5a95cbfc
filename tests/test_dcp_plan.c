/*
 test_dcp_plan.c - distributed DCP saves through the plan API (sdict_dcp_plan_local,
 sdict_dcp_plan_global, sdict_dcp_begin, sdict_dcp_write_rank, sdict_dcp_commit) with two
 "ranks" in one process, and the lazy reader (sdict_dcp_open, sdict_dcp_read_region,
 sdict_dcp_read_value, sdict_dcp_items_read).

 - deduplication as torch 2.3+'s dedup_save_plans: replicated items go to the rank with the
   fewest planned bytes (here rank 1), or to rank 0 with SDICT_DCP_DEDUP_LOWEST_RANK;
 - the folder reads back whole (sdict_load) and by regions; a region reads only the items of the
   chunks it overlaps: with rank 0's file overwritten, rank 1's rows and the replicated items
   still read, and a region touching rank 0's rows fails naming __0_0.distcp;
 - plan errors: dtype and global shape disagreements, overlapping chunks, holes, garbage plans,
   a state dict that differs from the planned one, a file of the wrong size at commit.
*/
#define _DEFAULT_SOURCE /* mkdtemp */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "statedict.h"

static char g_dir[256];

static void rm_rf(const char *dir) {
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char p[600];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static int setup(void **state) {
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/sdict_test_dcp_plan.XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}
static int teardown(void **state) {
    (void)state;
    rm_rf(g_dir);
    return 0;
}

/* A float32 tensor of shape [rows, cols] holding global rows row0.. of the [6, 4] tensor whose
   element i is i + 0.5 (or dtype int64 when wrong_dtype). */
static sdict_value *rows_of(sdict_doc *doc, int64_t row0, int64_t rows, int64_t cols,
                            bool wrong_dtype) {
    sdict_storage *s = NULL;
    int64_t shape[2] = {rows, cols}, stride[2];
    assert_int_equal(sdict_storage_new((size_t)(rows * cols) * 8, &s, NULL), SDICT_OK);
    for (int64_t i = 0; i < rows * cols; i++) {
        if (wrong_dtype)
            ((int64_t *)sdict_storage_data(s))[i] = i;
        else
            ((float *)sdict_storage_data(s))[i] = (float)(row0 * cols + i) + 0.5f;
    }
    sdict_tensor t;
    sdict_value *v = NULL;
    assert_int_equal(sdict_tensor_init(&t, wrong_dtype ? SDICT_INT64 : SDICT_FLOAT32, 2, shape,
                                       stride, s, NULL),
                     SDICT_OK);
    assert_int_equal(sdict_tensor_new(doc, &t, &v, NULL), SDICT_OK);
    sdict_storage_release(s);
    return v;
}

/* Rank r of 2: w rows [3r, 3r + 3) of [6, 4] (a shard), b [1, 4] and step replicated, and on
   rank 0 only a str. */
static sdict_value *rank_sd(sdict_doc *doc, int r, int64_t *off, int64_t *gshape) {
    sdict_value *root = sdict_dict_new(doc, false);
    sdict_dict_set_str(root, "w", rows_of(doc, 3 * r, 3, 4, false));
    sdict_dict_set_str(root, "b", rows_of(doc, 0, 1, 4, false));
    sdict_dict_set_str(root, "step", sdict_int_new(doc, 5));
    if (r == 0)
        sdict_dict_set_str(root, "tag", sdict_str_new(doc, "r0", 2));
    off[0] = 3 * r;
    off[1] = 0;
    gshape[0] = 6;
    gshape[1] = 4;
    return root;
}

/* Saves the two ranks' state dicts into g_dir. */
static void save2(uint32_t flags) {
    sdict_doc *doc = NULL;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    int64_t off[2][2], gs[2][2];
    sdict_value *root[2];
    sdict_dcp_shard sh[2];
    void *plan[2], *written[2], *global = NULL;
    size_t plen[2], wlen[2], glen = 0;
    sdict_error err;
    for (int r = 0; r < 2; r++) {
        root[r] = rank_sd(doc, r, off[r], gs[r]);
        sh[r] = (sdict_dcp_shard){"w", gs[r], off[r]};
        assert_int_equal(sdict_dcp_plan_local(root[r], &sh[r], 1, &plan[r], &plen[r], &err),
                         SDICT_OK);
    }
    assert_int_equal(sdict_dcp_plan_global((const void *const *)plan, plen, 2, flags, &global,
                                           &glen, &err),
                     SDICT_OK);
    assert_int_equal(sdict_dcp_begin(g_dir, &err), SDICT_OK);
    for (int r = 0; r < 2; r++)
        assert_int_equal(sdict_dcp_write_rank(g_dir, (size_t)r, root[r], &sh[r], 1, global, glen,
                                              &written[r], &wlen[r], &err),
                         SDICT_OK);
    /* a state dict other than the planned one is refused */
    void *junk = NULL;
    size_t jlen = 0;
    assert_int_equal(sdict_dcp_write_rank(g_dir, 0, root[1], &sh[1], 1, global, glen, &junk,
                                          &jlen, &err),
                     SDICT_E_INVALID_ARG);
    assert_null(junk);
    assert_int_equal(sdict_dcp_commit(g_dir, (const void *const *)written, wlen, 2, &err),
                     SDICT_OK);
    for (int r = 0; r < 2; r++) {
        sdict_free_buffer(plan[r]);
        sdict_free_buffer(written[r]);
    }
    sdict_free_buffer(global);
    sdict_doc_free(doc);
}

static void overwrite(const char *name) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", g_dir, name);
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
    FILE *f = fopen(p, "r+b");
    assert_non_null(f);
    for (long long i = 0; i < (long long)sb.st_size; i++)
        fputc('Z', f);
    fclose(f);
}

static void expect_rows(const sdict_value *v, int64_t row0, int64_t rows, int64_t col0,
                        int64_t cols) {
    const sdict_tensor *t = sdict_value_tensor(v);
    assert_non_null(t);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], rows);
    assert_int_equal(t->shape[1], cols);
    const float *d = sdict_tensor_data(t);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
            assert_true(d[r * cols + c] == (float)((row0 + r) * 4 + col0 + c) + 0.5f);
}

static void test_save_and_lazy_read(void **state) {
    (void)state;
    save2(0);
    /* the whole folder, as sdict_load / dcp_to_torch_save read it */
    sdict_doc *full = NULL;
    sdict_error err;
    assert_int_equal(sdict_load(g_dir, NULL, &full, &err), SDICT_OK);
    const sdict_value *root = sdict_doc_root(full);
    expect_rows(sdict_dict_get(root, "w"), 0, 6, 0, 4);
    expect_rows(sdict_dict_get(root, "b"), 0, 1, 0, 4);
    assert_true(sdict_float_get(sdict_dict_get(root, "step")) == 5.0);
    assert_non_null(sdict_str_get(sdict_dict_get(root, "tag"), NULL));
    sdict_doc_free(full);

    sdict_dcp *d = NULL;
    assert_int_equal(sdict_dcp_open(g_dir, NULL, &d, &err), SDICT_OK);
    assert_int_equal(sdict_dcp_entry_count(d), 4);
    const sdict_dcp_entry *w = sdict_dcp_find(d, "w");
    assert_non_null(w);
    assert_true(w->is_tensor);
    assert_int_equal(w->n_chunks, 2);
    assert_int_equal(w->chunk_offsets[0], 0);
    assert_int_equal(w->chunk_offsets[2], 3);
    assert_int_equal(w->chunk_sizes[2], 3);
    assert_int_equal(sdict_dcp_find(d, "b")->n_chunks, 1);
    assert_false(sdict_dcp_find(d, "tag")->is_tensor);
    assert_null(sdict_dcp_find(d, "nope"));
    assert_int_equal(sdict_dcp_items_read(d), 0);

    /* rank 0's file gone bad: rank 1's rows and the replicated items (deduplicated onto
       rank 1, which had planned fewer bytes) still read, one item each */
    overwrite("__0_0.distcp");
    sdict_doc *doc = NULL;
    sdict_value *v = NULL;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    int64_t o[2] = {3, 1}, l[2] = {3, 2};
    assert_int_equal(sdict_dcp_read_region(d, "w", o, l, doc, &v, &err), SDICT_OK);
    expect_rows(v, 3, 3, 1, 2);
    assert_int_equal(sdict_dcp_items_read(d), 1);
    assert_int_equal(sdict_dcp_read_region(d, "b", NULL, NULL, doc, &v, &err), SDICT_OK);
    expect_rows(v, 0, 1, 0, 4);
    assert_int_equal(sdict_dcp_read_value(d, "step", doc, &v, &err), SDICT_OK);
    assert_true(sdict_float_get(v) == 5.0);
    assert_int_equal(sdict_dcp_items_read(d), 3);
    /* an empty region reads nothing */
    int64_t lz[2] = {0, 4};
    assert_int_equal(sdict_dcp_read_region(d, "w", NULL, lz, doc, &v, &err), SDICT_OK);
    assert_int_equal(sdict_value_tensor(v)->shape[0], 0);
    assert_int_equal(sdict_dcp_items_read(d), 3);
    /* a region touching rows 2 and 3 needs rank 0's item */
    int64_t o2[2] = {2, 0}, l2[2] = {2, 4};
    assert_int_not_equal(sdict_dcp_read_region(d, "w", o2, l2, doc, &v, &err), SDICT_OK);
    assert_null(v);
    assert_non_null(strstr(err.file, "__0_0.distcp"));
    /* misuse */
    int64_t o3[2] = {5, 0}, l3[2] = {2, 4};
    assert_int_equal(sdict_dcp_read_region(d, "w", o3, l3, doc, &v, &err), SDICT_E_INVALID_ARG);
    assert_int_equal(sdict_dcp_read_region(d, "nope", NULL, NULL, doc, &v, &err),
                     SDICT_E_NOT_FOUND);
    assert_int_equal(sdict_dcp_read_value(d, "w", doc, &v, &err), SDICT_E_INVALID_ARG);
    sdict_dcp_close(d);
    sdict_doc_free(doc);
}

static void test_lowest_rank(void **state) {
    (void)state;
    save2(SDICT_DCP_DEDUP_LOWEST_RANK);
    overwrite("__1_0.distcp"); /* replicated items are rank 0's now */
    sdict_dcp *d = NULL;
    sdict_doc *doc = NULL;
    sdict_value *v = NULL;
    sdict_error err;
    assert_int_equal(sdict_dcp_open(g_dir, NULL, &d, &err), SDICT_OK);
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    assert_int_equal(sdict_dcp_read_region(d, "b", NULL, NULL, doc, &v, &err), SDICT_OK);
    assert_int_equal(sdict_dcp_read_value(d, "step", doc, &v, &err), SDICT_OK);
    int64_t l[2] = {3, 4};
    assert_int_equal(sdict_dcp_read_region(d, "w", NULL, l, doc, &v, &err), SDICT_OK);
    expect_rows(v, 0, 3, 0, 4);
    assert_int_not_equal(sdict_dcp_read_region(d, "w", NULL, NULL, doc, &v, &err), SDICT_OK);
    sdict_dcp_close(d);
    sdict_doc_free(doc);
}

/* plan_global of two one-tensor plans: x of local rows at offsets o0 / o1 of global rows g. */
static sdict_status global_of(int64_t rows0, int64_t o0, int64_t rows1, int64_t o1, int64_t g,
                              bool dtype1, sdict_error *err) {
    sdict_doc *doc = NULL;
    sdict_doc_new(&doc, NULL);
    int64_t rows[2] = {rows0, rows1}, offs[2][2] = {{o0, 0}, {o1, 0}}, gs[2] = {g, 4};
    void *plan[2], *global = NULL;
    size_t plen[2], glen;
    for (int r = 0; r < 2; r++) {
        sdict_value *root = sdict_dict_new(doc, false);
        sdict_dict_set_str(root, "x", rows_of(doc, 0, rows[r], 4, r == 1 && dtype1));
        sdict_dcp_shard sh = {"x", gs, offs[r]};
        assert_int_equal(sdict_dcp_plan_local(root, &sh, 1, &plan[r], &plen[r], err), SDICT_OK);
    }
    sdict_status st =
        sdict_dcp_plan_global((const void *const *)plan, plen, 2, 0, &global, &glen, err);
    sdict_free_buffer(plan[0]);
    sdict_free_buffer(plan[1]);
    sdict_free_buffer(global);
    sdict_doc_free(doc);
    return st;
}

static void test_plan_errors(void **state) {
    (void)state;
    sdict_error err;
    assert_int_equal(global_of(3, 0, 3, 3, 6, false, &err), SDICT_OK);
    assert_int_equal(global_of(3, 0, 3, 3, 6, true, &err), SDICT_E_DTYPE);
    assert_int_equal(global_of(3, 0, 3, 2, 6, false, &err), SDICT_E_SHAPE); /* overlap */
    assert_non_null(strstr(err.message, "overlaps"));
    assert_int_equal(global_of(2, 0, 3, 3, 6, false, &err), SDICT_E_SHAPE); /* hole */
    assert_non_null(strstr(err.message, "hole"));
    /* a shard outside its global shape: refused by the rank's own plan */
    sdict_doc *d0 = NULL;
    sdict_doc_new(&d0, NULL);
    sdict_value *r0 = sdict_dict_new(d0, false);
    sdict_dict_set_str(r0, "x", rows_of(d0, 0, 3, 4, false));
    int64_t go[2] = {4, 0}, gg[2] = {6, 4};
    sdict_dcp_shard s0 = {"x", gg, go};
    void *p0 = NULL;
    size_t l0;
    assert_int_equal(sdict_dcp_plan_local(r0, &s0, 1, &p0, &l0, &err), SDICT_E_SHAPE);
    assert_null(p0);
    sdict_doc_free(d0);
    /* the same chunk on both ranks is replicated, kept once */
    assert_int_equal(global_of(6, 0, 6, 0, 6, false, &err), SDICT_OK);

    const char junk[] = "SDCPPLN1\xff\xff\xff\xff\x05\x00\x00\x00";
    const void *pj[1] = {junk};
    size_t lj = sizeof junk - 1;
    void *g = NULL;
    size_t gl;
    assert_int_equal(sdict_dcp_plan_global(pj, &lj, 1, 0, &g, &gl, &err), SDICT_E_FORMAT);
    assert_null(g);
    lj = 3;
    assert_int_equal(sdict_dcp_plan_global(pj, &lj, 1, 0, &g, &gl, &err), SDICT_E_FORMAT);
    assert_int_equal(sdict_dcp_plan_global(pj, &lj, 0, 0, &g, &gl, &err), SDICT_E_INVALID_ARG);

    /* a shard naming no tensor */
    sdict_doc *doc = NULL;
    sdict_doc_new(&doc, NULL);
    sdict_value *root = sdict_dict_new(doc, false);
    sdict_dict_set_str(root, "x", sdict_int_new(doc, 1));
    int64_t z[1] = {0};
    sdict_dcp_shard sh = {"x", z, z};
    void *p = NULL;
    size_t pl;
    assert_int_equal(sdict_dcp_plan_local(root, &sh, 1, &p, &pl, &err), SDICT_E_INVALID_ARG);
    assert_null(p);
    sdict_doc_free(doc);
}

static void test_commit_checks_files(void **state) {
    (void)state;
    save2(0);
    sdict_doc *doc = NULL;
    sdict_doc_new(&doc, NULL);
    sdict_value *root = sdict_dict_new(doc, false);
    sdict_dict_set_str(root, "a", rows_of(doc, 0, 2, 4, false));
    void *plan = NULL, *global = NULL, *written = NULL;
    size_t pl, gl, wl;
    sdict_error err;
    assert_int_equal(sdict_dcp_plan_local(root, NULL, 0, &plan, &pl, &err), SDICT_OK);
    const void *pp[1] = {plan};
    assert_int_equal(sdict_dcp_plan_global(pp, &pl, 1, 0, &global, &gl, &err), SDICT_OK);
    assert_int_equal(sdict_dcp_begin(g_dir, &err), SDICT_OK);
    char p[512];
    snprintf(p, sizeof p, "%s/.metadata", g_dir);
    assert_int_equal(access(p, F_OK), 0); /* begin keeps the old checkpoint */
    assert_int_equal(
        sdict_dcp_write_rank(g_dir, 0, root, NULL, 0, global, gl, &written, &wl, &err), SDICT_OK);
    /* the rank's file is staged beside the old one until commit */
    snprintf(p, sizeof p, "%s/__0_0.distcp.partial", g_dir);
    assert_int_equal(access(p, F_OK), 0);
    /* the staged file changed under the save: commit refuses and the old
       checkpoint (written by save2) still loads */
    FILE *f = fopen(p, "ab");
    fputc(0, f);
    fclose(f);
    const void *ww[1] = {written};
    assert_int_equal(sdict_dcp_commit(g_dir, ww, &wl, 1, &err), SDICT_E_IO);
    snprintf(p, sizeof p, "%s/.metadata", g_dir);
    assert_int_equal(access(p, F_OK), 0);
    sdict_doc *old = NULL;
    assert_int_equal(sdict_load(g_dir, NULL, &old, &err), SDICT_OK);
    sdict_doc_free(old);
    /* discard removes the staged file; a second discard finds nothing to do */
    assert_int_equal(sdict_dcp_discard(g_dir, 0, &err), SDICT_OK);
    snprintf(p, sizeof p, "%s/__0_0.distcp.partial", g_dir);
    assert_int_not_equal(access(p, F_OK), 0);
    assert_int_equal(sdict_dcp_discard(g_dir, 0, &err), SDICT_OK);
    /* a local (unwritten) plan is no written plan */
    assert_int_equal(sdict_dcp_commit(g_dir, pp, &pl, 1, &err), SDICT_E_INVALID_ARG);
    sdict_free_buffer(plan);
    sdict_free_buffer(global);
    sdict_free_buffer(written);
    sdict_doc_free(doc);
}

/* Items of a few bytes each: one-letter keys, a 0-dim tensor, the empty key (a plan's items
   can be as short as its fixed fields). */
static void test_small_items(void **state) {
    (void)state;
    sdict_doc *doc = NULL;
    sdict_error err;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    sdict_value *root = sdict_dict_new(doc, false);
    sdict_dict_set_str(root, "a", sdict_int_new(doc, 7));
    sdict_dict_set_str(root, "", sdict_int_new(doc, 8));
    sdict_value *t0 = NULL;
    sdict_tensor t;
    sdict_storage *s = NULL;
    assert_int_equal(sdict_storage_new(4, &s, NULL), SDICT_OK);
    *(float *)sdict_storage_data(s) = 2.5f;
    assert_int_equal(sdict_tensor_init(&t, SDICT_FLOAT32, 0, NULL, NULL, s, NULL), SDICT_OK);
    assert_int_equal(sdict_tensor_new(doc, &t, &t0, NULL), SDICT_OK);
    sdict_storage_release(s);
    sdict_dict_set_str(root, "t", t0);
    assert_int_equal(sdict_save_dcp(g_dir, root, &err), SDICT_OK);
    sdict_dcp *d = NULL;
    sdict_value *v = NULL;
    assert_int_equal(sdict_dcp_open(g_dir, NULL, &d, &err), SDICT_OK);
    assert_int_equal(sdict_dcp_entry_count(d), 3);
    assert_int_equal(sdict_dcp_read_value(d, "a", doc, &v, &err), SDICT_OK);
    assert_true(sdict_float_get(v) == 7.0);
    assert_int_equal(sdict_dcp_read_value(d, "", doc, &v, &err), SDICT_OK);
    assert_true(sdict_float_get(v) == 8.0);
    assert_int_equal(sdict_dcp_read_region(d, "t", NULL, NULL, doc, &v, &err), SDICT_OK);
    assert_int_equal(sdict_value_tensor(v)->ndim, 0);
    assert_true(*(const float *)sdict_tensor_data(sdict_value_tensor(v)) == 2.5f);
    sdict_dcp_close(d);
    sdict_doc_free(doc);
}

/* A 2-rank save of {"w": rows [0, split) and [split, 6) of [6, 4]} planned; the ranks whose
   write[r] is set stage their files. written[r] gets each written plan (NULL if not written). */
static void stage2(int64_t split, const bool write[2], void *written[2], size_t wlen[2]) {
    sdict_doc *doc = NULL;
    sdict_error err;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    int64_t gs[2] = {6, 4}, off[2][2] = {{0, 0}, {split, 0}}, rows[2] = {split, 6 - split};
    sdict_value *root[2];
    sdict_dcp_shard sh[2];
    void *plan[2], *global = NULL;
    size_t plen[2], glen = 0;
    for (int r = 0; r < 2; r++) {
        root[r] = sdict_dict_new(doc, false);
        sdict_dict_set_str(root[r], "w", rows_of(doc, off[r][0], rows[r], 4, false));
        sh[r] = (sdict_dcp_shard){"w", gs, off[r]};
        assert_int_equal(sdict_dcp_plan_local(root[r], &sh[r], 1, &plan[r], &plen[r], &err),
                         SDICT_OK);
    }
    assert_int_equal(sdict_dcp_plan_global((const void *const *)plan, plen, 2, 0, &global, &glen,
                                           &err),
                     SDICT_OK);
    for (int r = 0; r < 2; r++) {
        written[r] = NULL;
        if (write[r])
            assert_int_equal(sdict_dcp_write_rank(g_dir, (size_t)r, root[r], &sh[r], 1, global,
                                                  glen, &written[r], &wlen[r], &err),
                             SDICT_OK);
        sdict_free_buffer(plan[r]);
    }
    sdict_free_buffer(global);
    sdict_doc_free(doc);
}

static void expect_old_checkpoint(void) {
    sdict_doc *old = NULL;
    sdict_error err;
    assert_int_equal(sdict_load(g_dir, NULL, &old, &err), SDICT_OK);
    expect_rows(sdict_dict_get(sdict_doc_root(old), "w"), 0, 6, 0, 4);
    assert_non_null(sdict_dict_get(sdict_doc_root(old), "tag"));
    sdict_doc_free(old);
}

/* Commits given written plans that do not make one save are refused before the old checkpoint
   is touched: fewer plans than the save's ranks, plans of two saves staged into one folder,
   offsets edited. */
static void test_commit_checks_plans(void **state) {
    (void)state;
    save2(0);
    sdict_error err;
    const bool both[2] = {true, true}, second[2] = {false, true};
    void *a[2], *b[2];
    size_t al[2], bl[2];
    stage2(3, both, a, al);
    /* world 1 with rank 0's plan of a 2-rank save: rank 1's items would be lost */
    assert_int_equal(sdict_dcp_commit(g_dir, (const void *const *)a, al, 1, &err),
                     SDICT_E_INVALID_ARG);
    assert_non_null(strstr(err.message, "2 ranks"));
    expect_old_checkpoint();
    /* a second save of the same layout replaces rank 1's staged file (same size): the first
       save's commit would mix the two saves' data */
    stage2(3, second, b, bl);
    assert_int_equal(sdict_dcp_commit(g_dir, (const void *const *)a, al, 2, &err), SDICT_E_IO);
    assert_non_null(strstr(err.message, "another save"));
    expect_old_checkpoint();
    sdict_free_buffer(b[1]);
    /* a second save's rank 1 (rows [2, 6)) replaces the first's staged file: its plan and the
       first save's rank 0 (rows [0, 3)) overlap */
    stage2(2, second, b, bl);
    const void *mix[2] = {a[0], b[1]};
    size_t mixl[2] = {al[0], bl[1]};
    assert_int_equal(sdict_dcp_commit(g_dir, mix, mixl, 2, &err), SDICT_E_SHAPE);
    assert_non_null(strstr(err.message, "overlaps"));
    expect_old_checkpoint();
    /* an item's offset moved (its length and the file size unchanged) */
    uint8_t *w1 = b[1];
    size_t foff = bl[1] - 16; /* the last item's file_offset */
    w1[foff] ^= 1;
    const void *cur[2] = {a[0], b[1]};
    assert_int_equal(sdict_dcp_commit(g_dir, cur, mixl, 2, &err), SDICT_E_INVALID_ARG);
    expect_old_checkpoint();
    for (int r = 0; r < 2; r++) {
        sdict_free_buffer(a[r]);
        sdict_free_buffer(b[r]);
    }
    /* a staged file replaced by a folder after the rank wrote it */
    stage2(3, both, a, al);
    char p[512];
    snprintf(p, sizeof p, "%s/__1_0.distcp.partial", g_dir);
    assert_int_equal(unlink(p), 0);
    assert_int_equal(mkdir(p, 0700), 0);
    assert_int_equal(sdict_dcp_commit(g_dir, (const void *const *)a, al, 2, &err), SDICT_E_IO);
    assert_non_null(strstr(err.message, "regular file"));
    assert_int_equal(rmdir(p), 0);
    for (int r = 0; r < 2; r++)
        sdict_free_buffer(a[r]);
    expect_old_checkpoint();
}

/* A handle opened before another save commits into the same folder reads its own save's data
   or fails naming the file, never the new files at the old offsets: mapped files keep the old
   contents; a file reopened with SDICT_LOAD_COPY must be the one that was opened. */
static void test_read_after_new_save(void **state) {
    (void)state;
    save2(0);
    sdict_error err;
    sdict_dcp *mapped = NULL, *copied = NULL;
    sdict_load_opts o;
    memset(&o, 0, sizeof o);
    o.flags = SDICT_LOAD_COPY;
    assert_int_equal(sdict_dcp_open(g_dir, NULL, &mapped, &err), SDICT_OK);
    assert_int_equal(sdict_dcp_open(g_dir, &o, &copied, &err), SDICT_OK);
    /* a new save: rows [0, 2) and [2, 6), other items and offsets */
    const bool both[2] = {true, true};
    void *w[2];
    size_t wl[2];
    stage2(2, both, w, wl);
    assert_int_equal(sdict_dcp_commit(g_dir, (const void *const *)w, wl, 2, &err), SDICT_OK);
    sdict_free_buffer(w[0]);
    sdict_free_buffer(w[1]);
    sdict_doc *doc = NULL;
    sdict_value *v = NULL;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    assert_int_equal(sdict_dcp_read_region(mapped, "w", NULL, NULL, doc, &v, &err), SDICT_OK);
    expect_rows(v, 0, 6, 0, 4);
    assert_int_equal(sdict_dcp_read_value(mapped, "tag", doc, &v, &err), SDICT_OK);
    /* opened last, rank 1's file is still open; rank 0's was closed and is another file now */
    int64_t o1[2] = {3, 0}, l1[2] = {3, 4};
    assert_int_equal(sdict_dcp_read_region(copied, "w", o1, l1, doc, &v, &err), SDICT_OK);
    expect_rows(v, 3, 3, 0, 4);
    assert_int_equal(sdict_dcp_read_value(copied, "tag", doc, &v, &err), SDICT_E_IO);
    assert_null(v);
    assert_non_null(strstr(err.file, "__0_0.distcp"));
    assert_non_null(strstr(err.message, "changed since"));
    sdict_dcp_close(mapped);
    sdict_dcp_close(copied);
    sdict_doc_free(doc);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_save_and_lazy_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lowest_rank, setup, teardown),
        cmocka_unit_test(test_plan_errors),
        cmocka_unit_test_setup_teardown(test_commit_checks_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_small_items, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_checks_plans, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_after_new_save, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
