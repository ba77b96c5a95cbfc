/*
 test_hf.c - Hugging Face model folders through the library (src/hf_folder.c), no torch needed.

 - sdict_save_folder of a C-built dict: huggingface_hub's greedy split (a tensor larger than
   the shard size gets its own shard first, a tensor tying a storage joins its first tensor's
   shard and is counted once), its file names, the exact index text (indent 2, total_size
   then the metadata, Python's \u escapes, no newline at the end), stale shards removed and
   other files kept;
 - the folder read back: one doc of format "sharded" in index order, tied tensors still one
   storage, storages mapped from the shards after the shard docs are gone, str metadata kept
   and total_size not;
 - a save failing part-way (a link among the targets, a shard that cannot be written) leaves
   the folder's earlier files in place;
 - refusals with the entry named: a non-tensor leaf (and dropped on request), a root that is
   not a dict, a format a folder cannot hold, a shard name leaving the folder (record
   weight_map[KEY], offset of the key in the index).
*/
#define _DEFAULT_SOURCE /* mkdtemp, lstat */
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
#include <sys/stat.h>
#include <unistd.h>

#include "../src/internal.h"

static char g_dir[256];

static int setup_dir(void **state) {
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/sdict_test_hf.XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static void rm_rf(const char *dir) {
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char p[1024];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode))
            rm_rf(p);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static int teardown_dir(void **state) {
    (void)state;
    rm_rf(g_dir);
    return 0;
}

static void touch(const char *dir, const char *name) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs("old", f);
    fclose(f);
}

static bool exists(const char *dir, const char *name) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    struct stat sb;
    return lstat(p, &sb) == 0;
}

/* A 1-D tensor of n elements of dtype over a new storage filled with seed, seed+1, ... */
static sdict_value *vec(sdict_doc *doc, sdict_dtype dtype, int64_t n, int seed,
                        sdict_storage **storage_out) {
    sdict_storage *s = NULL;
    size_t es = sdict_dtype_size(dtype);
    assert_int_equal(sdict_storage_new((size_t)n * es, &s, NULL), SDICT_OK);
    uint8_t *p = sdict_storage_data(s);
    for (size_t i = 0; i < (size_t)n * es; i++)
        p[i] = (uint8_t)(seed + (int)i);
    int64_t shape[1] = {n}, stride[1];
    sdict_tensor t;
    sdict_value *v = NULL;
    assert_int_equal(sdict_tensor_init(&t, dtype, 1, shape, stride, s, NULL), SDICT_OK);
    assert_int_equal(sdict_tensor_new(doc, &t, &v, NULL), SDICT_OK);
    if (storage_out)
        *storage_out = s;
    sdict_storage_release(s);
    return v;
}

#define KEY_E "\xc3\xa9\n" /* "é\n" */

/* a 40 B, b 1200 B, c = a (tied), d 4000 B, e 40 B, "é\n" 8 B; shard size 1250 */
static sdict_doc *build(void) {
    sdict_doc *doc = NULL;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    sdict_value *root = sdict_dict_new(doc, true);
    assert_int_equal(sdict_doc_set_root(doc, root), SDICT_OK);
    sdict_value *a = vec(doc, SDICT_FLOAT32, 10, 1, NULL);
    assert_int_equal(sdict_dict_set_str(root, "a", a), SDICT_OK);
    assert_int_equal(sdict_dict_set_str(root, "b", vec(doc, SDICT_FLOAT32, 300, 2, NULL)),
                     SDICT_OK);
    sdict_value *c = NULL;
    assert_int_equal(sdict_tensor_new(doc, sdict_value_tensor(a), &c, NULL), SDICT_OK);
    assert_int_equal(sdict_dict_set_str(root, "c", c), SDICT_OK);
    assert_int_equal(sdict_dict_set_str(root, "d", vec(doc, SDICT_FLOAT32, 1000, 3, NULL)),
                     SDICT_OK);
    assert_int_equal(sdict_dict_set_str(root, "e", vec(doc, SDICT_INT64, 5, 4, NULL)), SDICT_OK);
    assert_int_equal(sdict_dict_set_str(root, KEY_E, vec(doc, SDICT_FLOAT32, 2, 5, NULL)),
                     SDICT_OK);
    return doc;
}

static const char EXPECTED_INDEX[] =
    "{\n"
    "  \"metadata\": {\n"
    "    \"total_size\": 5288,\n"
    "    \"note\": \"\\ud83d\\ude00 \\\"q\\\"\"\n"
    "  },\n"
    "  \"weight_map\": {\n"
    "    \"d\": \"pytorch_model-00001-of-00003.bin\",\n"
    "    \"a\": \"pytorch_model-00002-of-00003.bin\",\n"
    "    \"b\": \"pytorch_model-00002-of-00003.bin\",\n"
    "    \"c\": \"pytorch_model-00002-of-00003.bin\",\n"
    "    \"e\": \"pytorch_model-00003-of-00003.bin\",\n"
    "    \"\\u00e9\\n\": \"pytorch_model-00003-of-00003.bin\"\n"
    "  }\n"
    "}";

static void test_write_and_read_back(void **state) {
    (void)state;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/bin", g_dir);
    assert_int_equal(mkdir(dir, 0777), 0);
    touch(dir, "pytorch_model-00009-of-00009.bin"); /* stale shard of an earlier save */
    touch(dir, "pytorch_model.bin");                /* stale single file */
    touch(dir, "pytorch_model.bin.bak");            /* not ours: kept */
    touch(dir, "model.safetensors");                /* another pattern: kept */

    sdict_doc *doc = build();
    sdict_value *md = sdict_dict_new(doc, false);
    assert_int_equal(sdict_dict_set_str(md, "note", sdict_str_new(doc, "\xf0\x9f\x98\x80 \"q\"", 8)),
                     SDICT_OK);
    sdict_save_opts opts;
    memset(&opts, 0, sizeof opts);
    opts.format = SDICT_FORMAT_ZIP;
    opts.max_shard_size = 1250;
    opts.metadata = md;
    sdict_error err;
    assert_int_equal(sdict_save_folder(dir, sdict_doc_root(doc), &opts, &err), SDICT_OK);

    char path[1024];
    snprintf(path, sizeof path, "%s/pytorch_model.bin.index.json", dir);
    size_t n;
    uint8_t *text = test_read_file(path, &n);
    assert_non_null(text);
    assert_string_equal((char *)text, EXPECTED_INDEX);
    free(text);
    assert_false(exists(dir, "pytorch_model-00009-of-00009.bin"));
    assert_false(exists(dir, "pytorch_model.bin"));
    assert_true(exists(dir, "pytorch_model.bin.bak"));
    /* model.safetensors is another save's pattern: left, as huggingface_hub leaves it; but
       a folder read prefers it, so remove it to read ours back */
    assert_true(exists(dir, "model.safetensors"));
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    unlink(path);

    /* each shard is a plain torch file of its tensors */
    sdict_doc *shard = NULL;
    snprintf(path, sizeof path, "%s/pytorch_model-00002-of-00003.bin", dir);
    assert_int_equal(sdict_load(path, NULL, &shard, &err), SDICT_OK);
    assert_int_equal(sdict_dict_len(sdict_doc_root(shard)), 3);
    assert_false(sdict_dict_is_ordered(sdict_doc_root(shard)));
    sdict_doc_free(shard);

    sdict_doc *back = NULL;
    assert_int_equal(sdict_load(dir, NULL, &back, &err), SDICT_OK);
    assert_int_equal(sdict_doc_format(back), SDICT_FORMAT_SHARDED);
    const sdict_value *r = sdict_doc_root(back);
    static const char *const order[] = {"d", "a", "b", "c", "e", KEY_E};
    assert_int_equal(sdict_dict_len(r), 6);
    for (size_t i = 0; i < 6; i++) {
        const char *k = sdict_str_get(sdict_dict_key(r, i), NULL);
        assert_string_equal(k, order[i]);
        const sdict_tensor *t = sdict_value_tensor(sdict_dict_val(r, i));
        const sdict_tensor *o = sdict_value_tensor(sdict_dict_get(sdict_doc_root(doc), k));
        assert_non_null(t);
        assert_int_equal(t->dtype, o->dtype);
        assert_int_equal(t->shape[0], o->shape[0]);
        assert_memory_equal(sdict_tensor_data(t), sdict_tensor_data(o), sdict_tensor_nbytes(o));
        assert_true(sdict_storage_is_mapped(t->storage));
    }
    assert_ptr_equal(sdict_value_tensor(sdict_dict_get(r, "a"))->storage,
                     sdict_value_tensor(sdict_dict_get(r, "c"))->storage);
    assert_ptr_not_equal(sdict_value_tensor(sdict_dict_get(r, "a"))->storage,
                         sdict_value_tensor(sdict_dict_get(r, "b"))->storage);
    const sdict_value *bmd = sdict_doc_metadata(back);
    assert_int_equal(sdict_dict_len(bmd), 1); /* total_size, a number, is not kept */
    size_t len;
    assert_string_equal(sdict_str_get(sdict_dict_get(bmd, "note"), &len), "\xf0\x9f\x98\x80 \"q\"");
    /* the index itself reads the same */
    sdict_doc *viaidx = NULL;
    snprintf(path, sizeof path, "%s/pytorch_model.bin.index.json", dir);
    assert_int_equal(sdict_load(path, NULL, &viaidx, &err), SDICT_OK);
    assert_int_equal(sdict_dict_len(sdict_doc_root(viaidx)), 6);
    sdict_doc_free(viaidx);
    sdict_doc_free(back);

    /* everything fits: one pytorch_model.bin, the shards and the index go */
    opts.max_shard_size = 0;
    assert_int_equal(sdict_save_folder(dir, sdict_doc_root(doc), &opts, &err), SDICT_OK);
    assert_true(exists(dir, "pytorch_model.bin"));
    assert_false(exists(dir, "pytorch_model.bin.index.json"));
    assert_false(exists(dir, "pytorch_model-00001-of-00003.bin"));
    assert_int_equal(sdict_load(dir, NULL, &back, &err), SDICT_OK);
    assert_int_equal(sdict_doc_format(back), SDICT_FORMAT_ZIP);
    assert_int_equal(sdict_dict_len(sdict_doc_root(back)), 6);
    sdict_doc_free(back);
    sdict_doc_free(doc);
}

static void test_save_refusals(void **state) {
    (void)state;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/refuse", g_dir);
    sdict_doc *doc = build();
    sdict_value *root = sdict_doc_root(doc);
    assert_int_equal(sdict_dict_set_str(root, "epoch", sdict_int_new(doc, 3)), SDICT_OK);
    sdict_save_opts opts;
    memset(&opts, 0, sizeof opts);
    sdict_error err;
    assert_int_equal(sdict_save_folder(dir, root, &opts, &err), SDICT_E_UNSUPPORTED);
    assert_string_equal(err.record, "epoch");
    assert_non_null(strstr(err.message, "'epoch' is a int"));
    assert_string_equal(err.file, dir);
    assert_false(exists(g_dir, "refuse")); /* nothing written */
    opts.st_flags = SDICT_SAVE_ST_DROP_NON_TENSORS;
    assert_int_equal(sdict_save_folder(dir, root, &opts, &err), SDICT_OK);
    sdict_doc *back = NULL;
    assert_int_equal(sdict_load(dir, NULL, &back, &err), SDICT_OK);
    assert_int_equal(sdict_dict_len(sdict_doc_root(back)), 6);
    assert_null(sdict_dict_get(sdict_doc_root(back), "epoch"));
    sdict_doc_free(back);
    opts.format = SDICT_FORMAT_LEGACY;
    assert_int_equal(sdict_save_folder(dir, root, &opts, &err), SDICT_E_INVALID_ARG);
    opts.format = SDICT_FORMAT_ZIP;
    assert_int_equal(sdict_save_folder(dir, sdict_dict_get(root, "a"), &opts, &err),
                     SDICT_E_INVALID_ARG);
    assert_non_null(strstr(err.message, "not a tensor"));
    assert_int_equal(sdict_save_folder(NULL, root, &opts, &err), SDICT_E_INVALID_ARG);
    sdict_doc_free(doc);
}

static void test_index_refusal_names_entry(void **state) {
    (void)state;
    char dir[512], path[1024];
    snprintf(dir, sizeof dir, "%s/bad", g_dir);
    assert_int_equal(mkdir(dir, 0777), 0);
    snprintf(path, sizeof path, "%s/m.index.json", dir);
    static const char text[] = "{\"metadata\": {\"total_size\": 1},\n"
                               " \"weight_map\": {\"ok\": \"s.bin\", \"w.x\": \"../s.bin\"}}";
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_true(sdict__hf_claims(path));
    assert_true(sdict__hf_claims(dir));
    sdict_doc *doc = NULL;
    sdict_error err;
    assert_int_equal(sdict_load(path, NULL, &doc, &err), SDICT_E_FORMAT);
    assert_null(doc);
    assert_string_equal(err.file, path);
    assert_string_equal(err.record, "weight_map[w.x]");
    assert_int_equal(err.offset, (int64_t)(strstr(text, "\"w.x\"") - text));
    assert_non_null(strstr(err.message, "'../s.bin' contains '/'"));
    /* the folder has none of the four weights files */
    assert_int_equal(sdict_load(dir, NULL, &doc, &err), SDICT_E_NOT_FOUND);
    assert_non_null(strstr(err.message, "pytorch_model.bin.index.json"));
    assert_string_equal(err.file, dir);
}

static ino_t inode_of(const char *dir, const char *name) {
    char p[1024];
    struct stat sb;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return lstat(p, &sb) == 0 ? sb.st_ino : 0;
}

/* A save that fails part-way leaves the folder's earlier files as they were: every target is
   checked before anything is written (a shard name that is a symbolic link), and the files are
   written under staging names, renamed into place only when all are written (here the second
   shard's staging name is taken by a folder, so its write fails after the first's). */
static void test_failed_save_keeps_folder(void **state) {
    (void)state;
    char dir[512], p[1024];
    snprintf(dir, sizeof dir, "%s/keep", g_dir);
    sdict_doc *doc = build();
    sdict_save_opts opts;
    memset(&opts, 0, sizeof opts);
    opts.max_shard_size = 1250;
    sdict_error err;
    assert_int_equal(sdict_save_folder(dir, sdict_doc_root(doc), &opts, &err), SDICT_OK);
    static const char *const files[] = {"pytorch_model-00001-of-00003.bin",
                                        "pytorch_model-00002-of-00003.bin",
                                        "pytorch_model-00003-of-00003.bin",
                                        "pytorch_model.bin.index.json"};
    ino_t before[4];
    for (int i = 0; i < 4; i++)
        assert_int_not_equal(before[i] = inode_of(dir, files[i]), 0);

    /* the third shard's name becomes a link: refused before the first shard is written */
    snprintf(p, sizeof p, "%s/%s", dir, files[2]);
    assert_int_equal(rename(p, "/tmp/sdict_test_hf_moved"), 0);
    assert_int_equal(symlink("/tmp/sdict_test_hf_moved", p), 0);
    assert_int_equal(sdict_save_folder(dir, sdict_doc_root(doc), &opts, &err), SDICT_E_IO);
    assert_string_equal(err.file, p);
    assert_non_null(strstr(err.message, "symbolic link"));
    for (int i = 0; i < 2; i++)
        assert_int_equal(inode_of(dir, files[i]), before[i]);
    assert_int_equal(unlink(p), 0);
    assert_int_equal(rename("/tmp/sdict_test_hf_moved", p), 0);

    /* the second shard cannot be written: the first, written already, is not put in place */
    snprintf(p, sizeof p, "%s/.%s.sdict-new", dir, files[1]);
    assert_int_equal(mkdir(p, 0777), 0);
    assert_int_not_equal(sdict_save_folder(dir, sdict_doc_root(doc), &opts, &err), SDICT_OK);
    for (int i = 0; i < 4; i++)
        assert_int_equal(inode_of(dir, files[i]), before[i]);
    char staged[64];
    snprintf(staged, sizeof staged, ".%s.sdict-new", files[0]);
    assert_false(exists(dir, staged)); /* the staged first shard is removed */
    sdict_doc *back = NULL;
    assert_int_equal(sdict_load(dir, NULL, &back, &err), SDICT_OK);
    assert_int_equal(sdict_dict_len(sdict_doc_root(back)), 6);
    sdict_doc_free(back);
    snprintf(p, sizeof p, "%s/.%s.sdict-new", dir, files[1]);
    assert_int_equal(rmdir(p), 0);

    /* and with nothing in the way every file is replaced */
    assert_int_equal(sdict_save_folder(dir, sdict_doc_root(doc), &opts, &err), SDICT_OK);
    for (int i = 0; i < 4; i++)
        assert_int_not_equal(inode_of(dir, files[i]), before[i]);
    assert_false(exists(dir, staged));
    sdict_doc_free(doc);
}


/* Every allocation of a folder load and a sharded save (safetensors aliases included) fails
   once: each returns SDICT_E_NOMEM, frees what it had, and succeeds when nothing fails (the
   safetensors save only once the safetensors writer is built). */
static void test_out_of_memory(void **state) {
    (void)state;
    static const sdict_allocator failing = {test_failing_malloc, test_failing_realloc, test_failing_free, NULL};
    sdict_set_allocator(&failing);
    char dir[512], out[512];
    snprintf(dir, sizeof dir, "%s/oom", g_dir);
    snprintf(out, sizeof out, "%s/oom_out", g_dir);
    sdict_doc *doc = build();
    sdict_save_opts opts;
    memset(&opts, 0, sizeof opts);
    opts.max_shard_size = 1250;
    assert_int_equal(sdict_save_folder(dir, sdict_doc_root(doc), &opts, NULL), SDICT_OK);
    long base = test_alloc()->live;
    for (int op = 0; op < 3; op++) {
        /* the status with no failure: SDICT_OK, or for safetensors output on a build without
           the safetensors writer its refusal (reached after every allocation of the plan) */
        sdict_status ref = SDICT_STATUS_COUNT;
        bool done = false;
        for (long n = -1; !done && n < 100000; n++) {
            test_alloc()->countdown = n;
            sdict_status st;
            if (op == 0) {
                sdict_doc *back = NULL;
                st = sdict_load(dir, NULL, &back, NULL);
                sdict_doc_free(back);
            } else {
                opts.format = op == 1 ? SDICT_FORMAT_ZIP : SDICT_FORMAT_SAFETENSORS;
                st = sdict_save_folder(out, sdict_doc_root(doc), &opts, NULL);
            }
            test_alloc()->countdown = -1;
            assert_int_equal(test_alloc()->live, base);
            if (n < 0)
                ref = st;
            else if (st == ref)
                done = true;
            else
                assert_int_equal(st, SDICT_E_NOMEM);
        }
        assert_true(ref == SDICT_OK || (op == 2 && ref == SDICT_E_UNSUPPORTED));
        assert_true(done);
    }
    sdict_doc_free(doc);
    assert_int_equal(test_alloc()->live, 0);
    sdict_set_allocator(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_and_read_back),
        cmocka_unit_test(test_save_refusals),
        cmocka_unit_test(test_index_refusal_names_entry),
        cmocka_unit_test(test_failed_save_keeps_folder),
        cmocka_unit_test(test_out_of_memory),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
