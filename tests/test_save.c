/*
 test_save.c - sdict_save / sdict_save_buffer and the protocol-2 pickler.

 - round trips of C-built trees (every dtype, 0-dim, empty, views, tied weights, nested
   checkpoint values, optimizer-style int keys, big ints) through sdict_save + sdict_load;
 - pickle bytes for the CPython rules the writer mirrors (int opcodes, batching quirks, memo
   by identity), with expected bytes derived from the pickle specification by hand;
 - zip layout: archive name from the path, data/<key> order sorted as strings;
 - errors: dtype conflicts, cycles, depth, unwritable directories, allocation failures, all
   leaving the previous file untouched;
 - what torch.save could not do is not done: a read-only target refused and kept, strs Python
   could not decode and archive names with '/' refused; what it can is done: 255-byte names,
   writing through dangling links and links to files;
 - crash safety: a child saving over a checkpoint is SIGKILLed at 30 points;
 - ENOSPC on a 1 MiB tmpfs (root only, skipped otherwise).
*/
#define _GNU_SOURCE /* memmem */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_util.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../src/internal.h"

/*==================================================================================================
 MARK: Helpers
==================================================================================================*/

static char g_dir[256];

static int setup_dir(void **state) {
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/sdict_test_save.XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int rm_rf_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    struct dirent *e;
    char p[512];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    return rmdir(dir);
}

static int teardown_dir(void **state) {
    (void)state;
    rm_rf_dir(g_dir);
    return 0;
}

static void path_in(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", g_dir, name); }

/* Number of entries in dir whose name contains needle; removes them when remove is set. */
static int count_entries(const char *dir, const char *needle, bool remove) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int count = 0;
    struct dirent *e;
    char p[4096 + 256 + 2]; /* dir (a temp path) + d_name + separator + NUL */
    while ((e = readdir(d))) {
        if (strstr(e->d_name, needle)) {
            count++;
            if (remove) {
                snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
                unlink(p);
            }
        }
    }
    closedir(d);
    return count;
}

/* The element pattern every test tensor uses: small integers exact in every dtype. */
static double pattern(size_t i) { return (double)((long)((i * 7 + 3) % 11) - 5); }

/* A contiguous tensor value over a new storage, filled with the pattern converted from
   float64 by the library's own conversion (tested elsewhere against torch). */
static sdict_value *new_tensor(sdict_doc *doc, sdict_dtype dt, int32_t ndim, const int64_t *shape) {
    size_t n = 1;
    for (int32_t i = 0; i < ndim; i++)
        n *= (size_t)shape[i];
    double *src = malloc((n ? n : 1) * sizeof *src);
    assert_non_null(src);
    for (size_t i = 0; i < n; i++)
        src[i] = pattern(i);
    sdict_storage *s = NULL, *tmp = NULL;
    assert_int_equal(sdict_storage_new(n * sdict_dtype_size(dt), &s, NULL), SDICT_OK);
    assert_int_equal(sdict_storage_wrap(src, n * sizeof *src, NULL, NULL, &tmp, NULL), SDICT_OK);
    sdict_tensor t, t64;
    int64_t *stride = calloc(ndim ? (size_t)ndim : 1, sizeof *stride);
    assert_non_null(stride);
    assert_int_equal(sdict_tensor_init(&t64, SDICT_FLOAT64, ndim, shape, stride, tmp, NULL), SDICT_OK);
    if (n && dt != SDICT_COMPLEX64 && dt != SDICT_COMPLEX128)
        assert_int_equal(sdict_tensor_copy_to(&t64, dt, sdict_storage_data(s), sdict_storage_nbytes(s), NULL),
                         SDICT_OK);
    if (dt == SDICT_COMPLEX128) /* (v, -v) pairs written directly */
        for (size_t i = 0; i < n; i++) {
            ((double *)sdict_storage_data(s))[2 * i] = src[i];
            ((double *)sdict_storage_data(s))[2 * i + 1] = -src[i];
        }
    if (dt == SDICT_COMPLEX64)
        for (size_t i = 0; i < n; i++) {
            ((float *)sdict_storage_data(s))[2 * i] = (float)src[i];
            ((float *)sdict_storage_data(s))[2 * i + 1] = (float)-src[i];
        }
    sdict_storage_release(tmp);
    free(src);
    assert_int_equal(sdict_tensor_init(&t, dt, ndim, shape, stride, s, NULL), SDICT_OK);
    sdict_value *v = NULL;
    assert_int_equal(sdict_tensor_new(doc, &t, &v, NULL), SDICT_OK);
    sdict_storage_release(s);
    free(stride);
    return v;
}

/* Deep equality of two values of different docs; tensors by metadata and element bytes. */
static void assert_same(const sdict_value *a, const sdict_value *b) {
    sdict_kind k = sdict_value_kind(a);
    assert_int_equal(k, sdict_value_kind(b));
    switch (k) {
    case SDICT_KIND_NONE:
        break;
    case SDICT_KIND_BOOL:
        assert_int_equal(sdict_bool_get(a), sdict_bool_get(b));
        break;
    case SDICT_KIND_INT: {
        char x[1024], y[1024];
        sdict_int_to_string(a, x, sizeof x);
        sdict_int_to_string(b, y, sizeof y);
        assert_string_equal(x, y);
        break;
    }
    case SDICT_KIND_FLOAT: {
        double x = sdict_float_get(a), y = sdict_float_get(b);
        assert_memory_equal(&x, &y, sizeof x); /* bitwise: -0.0 and NaN payloads too */
        break;
    }
    case SDICT_KIND_STR:
    case SDICT_KIND_BYTES: {
        size_t la = 0, lb = 0;
        const void *pa = k == SDICT_KIND_STR ? (const void *)sdict_str_get(a, &la) : sdict_bytes_get(a, &la);
        const void *pb = k == SDICT_KIND_STR ? (const void *)sdict_str_get(b, &lb) : sdict_bytes_get(b, &lb);
        assert_int_equal(la, lb);
        if (la)
            assert_memory_equal(pa, pb, la);
        break;
    }
    case SDICT_KIND_LIST:
    case SDICT_KIND_TUPLE:
    case SDICT_KIND_SET:
        assert_int_equal(sdict_seq_len(a), sdict_seq_len(b));
        for (size_t i = 0; i < sdict_seq_len(a); i++)
            assert_same(sdict_seq_item(a, i), sdict_seq_item(b, i));
        break;
    case SDICT_KIND_DICT:
        assert_int_equal(sdict_dict_is_ordered(a), sdict_dict_is_ordered(b));
        assert_int_equal(sdict_dict_len(a), sdict_dict_len(b));
        for (size_t i = 0; i < sdict_dict_len(a); i++) {
            assert_same(sdict_dict_key(a, i), sdict_dict_key(b, i));
            assert_same(sdict_dict_val(a, i), sdict_dict_val(b, i));
        }
        assert_int_equal(sdict_dict_attrs(a) != NULL, sdict_dict_attrs(b) != NULL);
        if (sdict_dict_attrs(a))
            assert_same(sdict_dict_attrs(a), sdict_dict_attrs(b));
        break;
    case SDICT_KIND_DTYPE:
        assert_int_equal(sdict_dtype_value_get(a), sdict_dtype_value_get(b));
        break;
    case SDICT_KIND_TENSOR: {
        const sdict_tensor *x = sdict_value_tensor(a), *y = sdict_value_tensor(b);
        assert_int_equal(x->dtype, y->dtype);
        assert_int_equal(x->ndim, y->ndim);
        for (int i = 0; i < x->ndim; i++) {
            assert_int_equal(x->shape[i], y->shape[i]);
            assert_int_equal(x->stride[i], y->stride[i]);
        }
        assert_int_equal(x->storage_offset, y->storage_offset);
        assert_int_equal(x->requires_grad, y->requires_grad);
        assert_int_equal(x->is_parameter, y->is_parameter);
        assert_int_equal(x->storage == NULL, y->storage == NULL);
        if (!x->storage)
            break;
        size_t n = sdict_tensor_nbytes(x);
        uint8_t *bx = malloc(n + 1), *by = malloc(n + 1);
        assert_int_equal(sdict_tensor_copy_to(x, x->dtype, bx, n, NULL), SDICT_OK);
        assert_int_equal(sdict_tensor_copy_to(y, y->dtype, by, n, NULL), SDICT_OK);
        if (n)
            assert_memory_equal(bx, by, n);
        free(bx);
        free(by);
        break;
    }
    default:
        fail_msg("unexpected kind %d", (int)k);
    }
}

static const sdict_dtype k_all_dtypes[] = {
    SDICT_FLOAT64, SDICT_FLOAT32, SDICT_FLOAT16, SDICT_BFLOAT16, SDICT_COMPLEX128,
    SDICT_COMPLEX64, SDICT_INT64, SDICT_INT32, SDICT_INT16, SDICT_INT8, SDICT_UINT8,
    SDICT_UINT16, SDICT_UINT32, SDICT_UINT64, SDICT_BOOL, SDICT_FLOAT8_E4M3FN,
    SDICT_FLOAT8_E5M2, SDICT_FLOAT8_E4M3FNUZ, SDICT_FLOAT8_E5M2FNUZ, SDICT_FLOAT8_E8M0FNU,
    SDICT_COMPLEX32};

/* The big checkpoint tree of the round-trip test. */
static sdict_value *build_tree(sdict_doc *doc) {
    sdict_value *root = sdict_dict_new(doc, false);
    sdict_value *sd = sdict_dict_new(doc, true);
    assert_int_equal(sdict_dict_set_str(root, "model", sd), SDICT_OK);
    const int64_t s23[2] = {2, 3};
    for (size_t i = 0; i < sizeof k_all_dtypes / sizeof k_all_dtypes[0]; i++) {
        sdict_dtype dt = k_all_dtypes[i];
        sdict_value *v;
        if (dt == SDICT_COMPLEX32 || dt >= SDICT_FLOAT8_E4M3FN || dt == SDICT_UINT16 ||
            dt == SDICT_UINT32 || dt == SDICT_UINT64) {
            /* dtypes the conversion may not cover: raw bytes 0..n-1 */
            sdict_storage *s;
            size_t nb = 6 * sdict_dtype_size(dt);
            assert_int_equal(sdict_storage_new(nb, &s, NULL), SDICT_OK);
            for (size_t b = 0; b < nb; b++)
                ((uint8_t *)sdict_storage_data(s))[b] = (uint8_t)(b * 13 + i);
            sdict_tensor t;
            int64_t stride[2];
            assert_int_equal(sdict_tensor_init(&t, dt, 2, s23, stride, s, NULL), SDICT_OK);
            assert_int_equal(sdict_tensor_new(doc, &t, &v, NULL), SDICT_OK);
            sdict_storage_release(s);
        } else {
            v = new_tensor(doc, dt, 2, s23);
        }
        assert_int_equal(sdict_dict_set_str(sd, sdict_dtype_name(dt), v), SDICT_OK);
    }
    assert_int_equal(sdict_dict_set_str(sd, "scalar", new_tensor(doc, SDICT_INT64, 0, NULL)), SDICT_OK);
    const int64_t e[2] = {0, 5};
    assert_int_equal(sdict_dict_set_str(sd, "empty", new_tensor(doc, SDICT_FLOAT32, 2, e)), SDICT_OK);
    /* a meta tensor (no storage): _rebuild_meta_tensor_no_storage */
    sdict_tensor mt;
    sdict_value *meta_t = NULL;
    int64_t meta_stride[2];
    assert_int_equal(sdict_tensor_init(&mt, SDICT_FLOAT16, 2, s23, meta_stride, NULL, NULL), SDICT_OK);
    assert_int_equal(sdict_tensor_new(doc, &mt, &meta_t, NULL), SDICT_OK);
    assert_int_equal(sdict_dict_set_str(sd, "meta", meta_t), SDICT_OK);
    /* a view with offset and transposed strides, and tied weights on one storage */
    const int64_t n24 = 24;
    sdict_value *base = new_tensor(doc, SDICT_FLOAT32, 1, &n24);
    sdict_tensor t = *sdict_value_tensor(base);
    const int64_t view_shape[2] = {3, 4}, view_stride[2] = {1, 5};
    t.ndim = 2;
    t.shape = view_shape; t.stride = view_stride; t.storage_offset = 3;
    sdict_value *view = NULL;
    assert_int_equal(sdict_tensor_new(doc, &t, &view, NULL), SDICT_OK);
    assert_int_equal(sdict_dict_set_str(sd, "base", base), SDICT_OK);
    assert_int_equal(sdict_dict_set_str(sd, "view", view), SDICT_OK);
    t = *sdict_value_tensor(base);
    t.is_parameter = true;
    t.requires_grad = true;
    sdict_value *tied = NULL;
    assert_int_equal(sdict_tensor_new(doc, &t, &tied, NULL), SDICT_OK);
    assert_int_equal(sdict_dict_set_str(sd, "tied", tied), SDICT_OK);
    sdict_value *attrs = sdict_dict_new(doc, false), *meta = sdict_dict_new(doc, true),
                *ver = sdict_dict_new(doc, false);
    assert_int_equal(sdict_dict_set_str(ver, "version", sdict_int_new(doc, 1)), SDICT_OK);
    assert_int_equal(sdict_dict_set_str(meta, "", ver), SDICT_OK);
    assert_int_equal(sdict_dict_set_str(attrs, "_metadata", meta), SDICT_OK);
    assert_int_equal(sdict_dict_set_attrs(sd, attrs), SDICT_OK);

    /* checkpoint values */
    assert_int_equal(sdict_dict_set_str(root, "epoch", sdict_int_new(doc, 12)), SDICT_OK);
    assert_int_equal(sdict_dict_set_str(root, "loss", sdict_float_new(doc, -0.0)), SDICT_OK);
    assert_int_equal(sdict_dict_set_str(root, "nan", sdict_float_new(doc, NAN)), SDICT_OK);
    assert_int_equal(sdict_dict_set_str(root, "name", sdict_str_new(doc, "r\xc3\xa9s\0net", 8)), SDICT_OK);
    assert_int_equal(sdict_dict_set_str(root, "none", sdict_none_new(doc)), SDICT_OK);
    assert_int_equal(sdict_dict_set_str(root, "blob", sdict_bytes_new(doc, "\x00\x80\xff", 3)), SDICT_OK);
    assert_int_equal(sdict_dict_set_str(root, "dtype", sdict_dtype_value_new(doc, SDICT_FLOAT16)), SDICT_OK);
    sdict_value *lst = sdict_list_new(doc), *tup = sdict_tuple_new(doc), *set = sdict_set_new(doc);
    static const int64_t iv[] = {0, 255, 256, 65535, 65536, -1, INT32_MIN, INT32_MAX,
                                 (int64_t)INT32_MAX + 1, INT64_MIN, INT64_MAX};
    for (size_t i = 0; i < sizeof iv / sizeof iv[0]; i++)
        assert_int_equal(sdict_seq_append(lst, sdict_int_new(doc, iv[i])), SDICT_OK);
    uint8_t big[300];
    memset(big, 0xab, sizeof big);
    assert_int_equal(sdict_seq_append(lst, sdict__int_from_le_bytes(doc, big, 20)), SDICT_OK);
    /* 255 bytes: the longest int LONG1 holds (LONG4 needs SDICT_SAVE_ALLOW_NOT_WEIGHTS_ONLY) */
    assert_int_equal(sdict_seq_append(lst, sdict__int_from_le_bytes(doc, big, 255)), SDICT_OK);
    for (int i = 0; i < 4; i++)
        assert_int_equal(sdict_seq_append(tup, sdict_bool_new(doc, i & 1)), SDICT_OK);
    assert_int_equal(sdict_seq_append(set, sdict_str_new(doc, "a", 1)), SDICT_OK);
    assert_int_equal(sdict_seq_append(lst, tup), SDICT_OK);
    assert_int_equal(sdict_seq_append(lst, set), SDICT_OK);
    assert_int_equal(sdict_dict_set_str(root, "list", lst), SDICT_OK);
    /* optimizer-style state keyed by int */
    sdict_value *state = sdict_dict_new(doc, false);
    for (int64_t p = 0; p < 3; p++) {
        sdict_value *ps = sdict_dict_new(doc, false);
        assert_int_equal(sdict_dict_set_str(ps, "step", sdict_int_new(doc, p)), SDICT_OK);
        assert_int_equal(sdict_dict_set_str(ps, "exp_avg", new_tensor(doc, SDICT_FLOAT32, 1, &n24)), SDICT_OK);
        assert_int_equal(sdict_dict_set(state, sdict_int_new(doc, p), ps), SDICT_OK);
    }
    assert_int_equal(sdict_dict_set_str(root, "state", state), SDICT_OK);
    assert_int_equal(sdict_doc_set_root(doc, root), SDICT_OK);
    return root;
}

/*==================================================================================================
 MARK: Round trips
==================================================================================================*/

static void test_round_trip(void **state) {
    (void)state;
    sdict_doc *doc = NULL;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    sdict_value *root = build_tree(doc);
    char path[512];
    path_in(path, sizeof path, "tree.pt");
    sdict_error err;
    memset(&err, 0, sizeof err);
    assert_int_equal(sdict_save(path, root, NULL, &err), SDICT_OK);

    sdict_doc *back = NULL;
    assert_int_equal(sdict_load(path, NULL, &back, &err), SDICT_OK);
    assert_same(root, sdict_doc_root(back));

    /* sharing survives: base, view and tied use one storage; unrelated tensors do not */
    sdict_value *m = sdict_dict_get(sdict_doc_root(back), "model");
    sdict_storage *sb = sdict_value_tensor(sdict_dict_get(m, "base"))->storage;
    assert_ptr_equal(sdict_value_tensor(sdict_dict_get(m, "view"))->storage, sb);
    assert_ptr_equal(sdict_value_tensor(sdict_dict_get(m, "tied"))->storage, sb);
    assert_ptr_not_equal(sdict_value_tensor(sdict_dict_get(m, "float32"))->storage, sb);

    /* the buffer variant with the same archive name gives the same bytes as the file */
    void *buf = NULL;
    size_t n = 0, fn = 0;
    sdict_save_opts o = {.archive_name = "tree", .flags = 0};
    assert_int_equal(sdict_save_buffer(root, &o, &buf, &n, &err), SDICT_OK);
    uint8_t *file = test_read_file(path, &fn);
    assert_non_null(file);
    assert_int_equal(n, fn);
    assert_memory_equal(buf, file, n);
    free(file);

    /* saving what was loaded gives the same bytes again */
    char path2[512];
    path_in(path2, sizeof path2, "tree.pt.again");
    sdict_save_opts o2 = {.archive_name = "tree", .flags = 0};
    assert_int_equal(sdict_save(path2, sdict_doc_root(back), &o2, &err), SDICT_OK);
    file = test_read_file(path2, &fn);
    assert_non_null(file);
    assert_int_equal(n, fn);
    assert_memory_equal(buf, file, n);
    free(file);
    sdict_free_buffer(buf);

    /* default buffer archive name is "archive" */
    assert_int_equal(sdict_save_buffer(root, NULL, &buf, &n, &err), SDICT_OK);
    assert_memory_equal((uint8_t *)buf + 30, "archive/data.pkl", 16);
    sdict_doc *fromb = NULL;
    assert_int_equal(sdict_load_buffer(buf, n, "buf", NULL, &fromb, &err), SDICT_OK);
    assert_same(root, sdict_doc_root(fromb));
    sdict_free_buffer(buf);
    sdict_doc_free(fromb);
    sdict_doc_free(back);
    sdict_doc_free(doc);
}

/*==================================================================================================
 MARK: Pickle bytes
==================================================================================================*/

/* Pickles v with the save flags and returns the bytes between PROTO 2 and STOP in *body. */
static size_t pickle_body_flags(const sdict_value *v, uint32_t flags, uint8_t *body, size_t cap) {
    sdict__buf b;
    sdict__buf_init(&b);
    sdict__saved_storage *st = NULL;
    size_t nst = 0;
    assert_int_equal(sdict__pickle_write(v, flags, &b, &st, &nst, NULL), SDICT_OK);
    sdict__free(st);
    assert_true(b.len >= 3);
    assert_int_equal(b.data[0], 0x80);
    assert_int_equal(b.data[1], 2);
    assert_int_equal(b.data[b.len - 1], '.');
    size_t n = b.len - 3;
    assert_true(n <= cap);
    memcpy(body, b.data + 2, n);
    sdict__buf_free(&b);
    return n;
}

static size_t pickle_body(const sdict_value *v, uint8_t *body, size_t cap) {
    return pickle_body_flags(v, 0, body, cap);
}

static void test_pickle_ints(void **state) {
    (void)state;
    sdict_doc *doc = NULL;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    struct {
        int64_t v;
        const char *bytes;
        size_t n;
    } cases[] = {
        {0, "K\x00", 2}, {255, "K\xff", 2}, {256, "M\x00\x01", 3}, {65535, "M\xff\xff", 3},
        {65536, "J\x00\x00\x01\x00", 5}, {-1, "J\xff\xff\xff\xff", 5},
        {INT32_MIN, "J\x00\x00\x00\x80", 5},
        /* LONG1: minimal two's complement, a sign byte only when the top bit needs it */
        {2147483648LL, "\x8a\x05\x00\x00\x00\x80\x00", 7},
        {-2147483649LL, "\x8a\x05\xff\xff\xff\x7f\xff", 7},
        {INT64_MAX, "\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f", 10},
        {INT64_MIN, "\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80", 10},
        {-1099511627776LL, "\x8a\x06\x00\x00\x00\x00\x00\xff", 8},
    };
    uint8_t body[64];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = pickle_body(sdict_int_new(doc, cases[i].v), body, sizeof body);
        assert_int_equal(n, cases[i].n);
        assert_memory_equal(body, cases[i].bytes, n);
    }
    /* 300-byte int: LONG4, which torch's weights-only unpickler lacks: refused by default,
       naming where it is */
    uint8_t big[300];
    memset(big, 0x11, sizeof big);
    uint8_t out[400];
    sdict_value *huge = sdict__int_from_le_bytes(doc, big, 300), *hd = sdict_dict_new(doc, false);
    assert_int_equal(sdict_dict_set_str(hd, "big", huge), SDICT_OK);
    sdict__buf b;
    sdict__buf_init(&b);
    sdict__saved_storage *sst = NULL;
    size_t nst = 0;
    sdict_error err;
    assert_int_equal(sdict__pickle_write(hd, 0, &b, &sst, &nst, &err), SDICT_E_UNSUPPORTED);
    assert_non_null(strstr(err.message, "'big' is an int of 300 bytes"));
    assert_non_null(strstr(err.message, "LONG4"));
    sdict__buf_free(&b);
    size_t n = pickle_body_flags(huge, SDICT_SAVE_ALLOW_NOT_WEIGHTS_ONLY, out, sizeof out);
    assert_int_equal(n, 305);
    assert_memory_equal(out, "\x8b\x2c\x01\x00\x00", 5);
    assert_memory_equal(out + 5, big, 300);
    /* floats are big-endian BINFLOAT */
    n = pickle_body(sdict_float_new(doc, 1.5), body, sizeof body);
    assert_int_equal(n, 9);
    assert_memory_equal(body, "G\x3f\xf8\x00\x00\x00\x00\x00\x00", 9);
    sdict_doc_free(doc);
}

/* Counts opcode bytes at opcode positions by walking a pickle made only of the opcodes the
   batching test produces. */
static void count_ops(const uint8_t *p, size_t n, int *marks, int *setitems, int *setitem,
                      int *appends, int *append) {
    *marks = *setitems = *setitem = *appends = *append = 0;
    for (size_t i = 0; i < n;) {
        switch (p[i]) {
        case '(': (*marks)++; i++; break;
        case 'u': (*setitems)++; i++; break;
        case 's': (*setitem)++; i++; break;
        case 'e': (*appends)++; i++; break;
        case 'a': (*append)++; i++; break;
        case '}': case ']': case ')': case 'R': case 'N': i++; break;
        case 'K': case 'q': case 'h': i += 2; break;
        case 'M': i += 3; break;
        case 'r': case 'j': i += 5; break;
        case 'c': i++; while (p[i] != '\n') i++; i++; while (p[i] != '\n') i++; i++; break;
        case 'X': i += 5 + sdict__le32(p + i + 1); break;
        default: fail_msg("unexpected opcode 0x%02x at %zu", p[i], i);
        }
    }
}

static void test_pickle_batching(void **state) {
    (void)state;
    /* Expected counts are CPython 3.11 _pickle.c behaviour: batch_dict_exact/batch_list_exact
       for dict and list, batch_dict (iterator) for OrderedDict items. */
    struct {
        int kind; /* 0 dict, 1 list, 2 OrderedDict */
        int n, marks, multi, single;
    } cases[] = {
        {0, 1, 0, 0, 1}, {0, 2, 1, 1, 0}, {0, 1000, 2, 2, 0}, {0, 1001, 2, 2, 0}, {0, 2000, 3, 3, 0},
        {1, 1, 0, 0, 1}, {1, 2, 1, 1, 0}, {1, 1000, 1, 1, 0}, {1, 1001, 2, 2, 0}, {1, 2000, 2, 2, 0},
        {2, 1, 0, 0, 1}, {2, 2, 1, 1, 0}, {2, 1000, 1, 1, 0}, {2, 1001, 1, 1, 1}, {2, 2000, 2, 2, 0},
        {0, 0, 0, 0, 0}, {1, 0, 0, 0, 0}, {2, 0, 0, 0, 0},
    };
    static uint8_t body[1 << 16];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        sdict_doc *doc = NULL;
        assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
        sdict_value *v = cases[c].kind == 1 ? sdict_list_new(doc) : sdict_dict_new(doc, cases[c].kind == 2);
        for (int i = 0; i < cases[c].n; i++) {
            if (cases[c].kind == 1) {
                assert_int_equal(sdict_seq_append(v, sdict_int_new(doc, i % 200)), SDICT_OK);
            } else {
                assert_int_equal(sdict_dict_set(v, sdict_int_new(doc, 1000 + i), sdict_none_new(doc)), SDICT_OK);
            }
        }
        size_t n = pickle_body(v, body, sizeof body);
        int marks, setitems, setitem, appends, append;
        count_ops(body, n, &marks, &setitems, &setitem, &appends, &append);
        int multi = cases[c].kind == 1 ? appends : setitems;
        int single = cases[c].kind == 1 ? append : setitem;
        if (marks != cases[c].marks || multi != cases[c].multi || single != cases[c].single)
            fail_msg("kind %d n %d: marks %d multi %d single %d", cases[c].kind, cases[c].n, marks,
                     multi, single);
        sdict_doc_free(doc);
    }
}

static void test_pickle_memo(void **state) {
    (void)state;
    sdict_doc *doc = NULL;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    /* [s, s, t] with s one str object and t an equal but distinct one:
       ] q0 ( X"ab" q1 h1 X"ab" q2 e */
    sdict_value *l = sdict_list_new(doc), *s = sdict_str_new(doc, "ab", 2);
    assert_int_equal(sdict_seq_append(l, s), SDICT_OK);
    assert_int_equal(sdict_seq_append(l, s), SDICT_OK);
    assert_int_equal(sdict_seq_append(l, sdict_str_new(doc, "ab", 2)), SDICT_OK);
    uint8_t body[256];
    size_t n = pickle_body(l, body, sizeof body);
    static const uint8_t want[] = {']', 'q', 0, '(', 'X', 2, 0, 0, 0, 'a', 'b', 'q', 1,
                                   'h', 1, 'X', 2, 0, 0, 0, 'a', 'b', 'q', 2, 'e'};
    assert_int_equal(n, sizeof want);
    assert_memory_equal(body, want, n);

    /* bytes: _codecs.encode(latin-1 text, 'latin1'); 'latin1' and the GLOBAL are reused */
    sdict_value *l2 = sdict_list_new(doc);
    assert_int_equal(sdict_seq_append(l2, sdict_bytes_new(doc, "\xe9", 1)), SDICT_OK);
    assert_int_equal(sdict_seq_append(l2, sdict_bytes_new(doc, "z", 1)), SDICT_OK);
    n = pickle_body(l2, body, sizeof body);
    static const char want2[] = "]q\x00(c_codecs\nencode\nq\x01X\x02\x00\x00\x00\xc3\xa9q\x02"
                                "X\x06\x00\x00\x00latin1q\x03\x86q\x04Rq\x05"
                                "h\x01X\x01\x00\x00\x00zq\x06h\x03\x86q\x07Rq\x08" "e";
    assert_int_equal(n, sizeof want2 - 1);
    assert_memory_equal(body, want2, n);

    /* more than 256 memo entries switch to LONG_BINPUT / LONG_BINGET */
    sdict_value *l3 = sdict_list_new(doc), *last = NULL;
    for (int i = 0; i < 300; i++) {
        last = sdict_str_new(doc, "kk", 2);
        assert_int_equal(sdict_seq_append(l3, last), SDICT_OK);
    }
    assert_int_equal(sdict_seq_append(l3, last), SDICT_OK);
    static uint8_t big[8192];
    n = pickle_body(l3, big, sizeof big);
    /* ... X"kk" r 300 (LONG_BINPUT) then j 300 (LONG_BINGET) e */
    assert_memory_equal(big + n - 11, "r\x2c\x01\x00\x00j\x2c\x01\x00\x00" "e", 11);

    /* tuples and sets memoized after many items (the identity map grows meanwhile), then
       referenced again: a tuple (set(300 strs), [300 strs]) appended twice */
    sdict_value *outer = sdict_list_new(doc), *tp = sdict_tuple_new(doc), *st = sdict_set_new(doc),
                *ls = sdict_list_new(doc);
    char k[16];
    for (int i = 0; i < 300; i++) {
        snprintf(k, sizeof k, "s%d", i);
        assert_int_equal(sdict_seq_append(st, sdict_str_new(doc, k, strlen(k))), SDICT_OK);
        assert_int_equal(sdict_seq_append(ls, sdict_str_new(doc, k, strlen(k))), SDICT_OK);
    }
    assert_int_equal(sdict_seq_append(tp, st), SDICT_OK);
    assert_int_equal(sdict_seq_append(tp, ls), SDICT_OK);
    assert_int_equal(sdict_seq_append(outer, tp), SDICT_OK);
    assert_int_equal(sdict_seq_append(outer, tp), SDICT_OK);
    assert_int_equal(sdict_seq_append(outer, st), SDICT_OK);
    void *buf = NULL;
    assert_int_equal(sdict_save_buffer(outer, NULL, &buf, &n, NULL), SDICT_OK);
    sdict_doc *back = NULL;
    assert_int_equal(sdict_load_buffer(buf, n, "memo", NULL, &back, NULL), SDICT_OK);
    assert_same(outer, sdict_doc_root(back));
    sdict_free_buffer(buf);
    sdict_doc_free(back);
    sdict_doc_free(doc);
}

/*==================================================================================================
 MARK: Zip layout
==================================================================================================*/

/* Tensors of rank 0, 17, 100 and 1000 (sizes of 1 around a few larger ones, a reversed view
   of the same storage, a Parameter) save and load back unchanged. */
static void test_high_rank_round_trip(void **state) {
    (void)state;
    sdict_doc *doc = NULL;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    sdict_value *root = sdict_dict_new(doc, true);
    assert_int_equal(sdict_doc_set_root(doc, root), SDICT_OK);
    static const int32_t ranks[] = {0, 17, 100, 1000};
    for (size_t c = 0; c < sizeof ranks / sizeof ranks[0]; c++) {
        int32_t r = ranks[c];
        size_t n = r ? (size_t)r : 1;
        int64_t *shape = calloc(2 * n, sizeof *shape), *rev = calloc(2 * n, sizeof *rev);
        assert_true(shape && rev);
        for (int32_t k = 0; k < r; k++)
            shape[k] = 1;
        if (r > 2)
            shape[1] = 3, shape[r - 2] = 2;
        sdict_value *base = new_tensor(doc, SDICT_FLOAT32, r, shape);
        const sdict_tensor *bt = sdict_value_tensor(base);
        sdict_tensor t = *bt;
        for (int32_t k = 0; k < r; k++) {
            rev[k] = bt->shape[r - 1 - k];
            rev[n + k] = bt->stride[r - 1 - k];
        }
        t.shape = rev;
        t.stride = rev + n;
        t.is_parameter = t.requires_grad = true;
        sdict_value *view = NULL;
        assert_int_equal(sdict_tensor_new(doc, &t, &view, NULL), SDICT_OK);
        char key[32];
        snprintf(key, sizeof key, "rank%d", (int)r);
        assert_int_equal(sdict_dict_set_str(root, key, base), SDICT_OK);
        snprintf(key, sizeof key, "rank%d_reversed", (int)r);
        assert_int_equal(sdict_dict_set_str(root, key, view), SDICT_OK);
        free(shape);
        free(rev);
    }
    void *buf = NULL;
    size_t nbuf = 0;
    sdict_error err;
    assert_int_equal(sdict_save_buffer(root, NULL, &buf, &nbuf, &err), SDICT_OK);
    sdict_doc *back = NULL;
    assert_int_equal(sdict_load_buffer(buf, nbuf, "high_rank", NULL, &back, &err), SDICT_OK);
    assert_same(root, sdict_doc_root(back));
    const sdict_value *b = sdict_doc_root(back);
    const sdict_tensor *x = sdict_value_tensor(sdict_dict_get(b, "rank1000"));
    const sdict_tensor *y = sdict_value_tensor(sdict_dict_get(b, "rank1000_reversed"));
    assert_int_equal(x->ndim, 1000);
    assert_int_equal(x->shape[998], 2);
    assert_int_equal(x->stride[0], 6);
    assert_int_equal(y->stride[999], 6);
    assert_ptr_equal(x->storage, y->storage);
    assert_true(y->is_parameter);
    /* saving what was loaded gives the same bytes */
    void *again = NULL;
    size_t nagain = 0;
    assert_int_equal(sdict_save_buffer(b, NULL, &again, &nagain, &err), SDICT_OK);
    assert_int_equal(nagain, nbuf);
    assert_memory_equal(again, buf, nbuf);
    sdict_free_buffer(again);
    sdict_free_buffer(buf);
    sdict_doc_free(back);
    sdict_doc_free(doc);
}

static void test_archive_name_and_order(void **state) {
    (void)state;
    sdict_doc *doc = NULL;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    sdict_value *root = sdict_dict_new(doc, true);
    const int64_t two = 2;
    char key[16];
    for (int i = 0; i < 12; i++) {
        snprintf(key, sizeof key, "t%d", i);
        assert_int_equal(sdict_dict_set_str(root, key, new_tensor(doc, SDICT_INT16, 1, &two)), SDICT_OK);
    }
    char path[512];
    path_in(path, sizeof path, "ckpt.pth.tar");
    assert_int_equal(sdict_save(path, root, NULL, NULL), SDICT_OK);

    size_t n = 0;
    uint8_t *file = test_read_file(path, &n);
    assert_non_null(file);
    sdict__source src;
    sdict__source_init_mem(&src, file, n, "mem");
    sdict_limits lim = {0};
    lim.max_records = 100;
    sdict__zip *z = NULL;
    assert_int_equal(sdict__zip_open(&src, &lim, &z, NULL), SDICT_OK);
    static const char *order[] = {"data.pkl", "data/0", "data/1", "data/10", "data/11", "data/2",
                                  "data/3", "data/4", "data/5", "data/6", "data/7", "data/8",
                                  "data/9", "version"};
    assert_int_equal(sdict__zip_count(z), 14);
    for (size_t i = 0; i < 14; i++) {
        char want[64];
        snprintf(want, sizeof want, "ckpt.pth/%s", order[i]);
        assert_string_equal(sdict__zip_entry_at(z, i)->name, want);
        assert_int_equal(sdict__zip_entry_at(z, i)->data_offset % 64, 0);
    }
    const sdict__zip_entry *ver = sdict__zip_find(z, "version");
    char v[2];
    assert_int_equal(sdict__zip_read(z, ver, v, 2, true, NULL), SDICT_OK);
    assert_memory_equal(v, "3\n", 2);
    sdict__zip_close(z);
    free(file);

    /* no dot: the whole name is the archive name */
    path_in(path, sizeof path, "weights");
    assert_int_equal(sdict_save(path, root, NULL, NULL), SDICT_OK);
    file = test_read_file(path, &n);
    assert_non_null(file);
    assert_memory_equal(file + 30, "weights/data.pkl", 16);
    free(file);
    /* opts->archive_name wins */
    sdict_save_opts o = {.archive_name = "custom", .flags = 0};
    assert_int_equal(sdict_save(path, root, &o, NULL), SDICT_OK);
    file = test_read_file(path, &n);
    assert_non_null(file);
    assert_memory_equal(file + 30, "custom/data.pkl", 15);
    free(file);
    sdict_doc_free(doc);
}

/*==================================================================================================
 MARK: Errors
==================================================================================================*/

static void write_marker(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void assert_file_is(const char *path, const char *text) {
    size_t n = 0;
    uint8_t *p = test_read_file(path, &n);
    assert_non_null(p);
    assert_int_equal(n, strlen(text));
    assert_memory_equal(p, text, n);
    free(p);
}

static void test_errors(void **state) {
    (void)state;
    sdict_doc *doc = NULL;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    char path[512];
    path_in(path, sizeof path, "keep.pt");
    write_marker(path, "previous");
    sdict_error err;

    /* one storage seen as two dtypes */
    const int64_t four = 4;
    sdict_value *a = new_tensor(doc, SDICT_FLOAT32, 1, &four);
    sdict_tensor t = *sdict_value_tensor(a);
    t.dtype = SDICT_INT32;
    sdict_value *b = NULL;
    assert_int_equal(sdict_tensor_new(doc, &t, &b, NULL), SDICT_OK);
    sdict_value *l = sdict_list_new(doc);
    assert_int_equal(sdict_seq_append(l, a), SDICT_OK);
    assert_int_equal(sdict_seq_append(l, b), SDICT_OK);
    memset(&err, 0, sizeof err);
    assert_int_equal(sdict_save(path, l, NULL, &err), SDICT_E_INVALID_ARG);
    assert_non_null(strstr(err.message, "view the same data as different types"));
    assert_string_equal(err.file, path);
    assert_file_is(path, "previous");

    /* a list inside itself */
    sdict_value *cyc = sdict_list_new(doc);
    assert_int_equal(sdict_seq_append(cyc, sdict_int_new(doc, 1)), SDICT_OK);
    if (sdict_seq_append(cyc, cyc) == SDICT_OK) {
        assert_int_equal(sdict_save(path, cyc, NULL, &err), SDICT_E_INVALID_ARG);
        assert_non_null(strstr(err.message, "cycle"));
        assert_file_is(path, "previous");
    }

    /* nesting: 1000 levels are accepted, 1001 are not */
    sdict_value *deep = sdict_list_new(doc), *cur = deep;
    for (int i = 1; i < 1000; i++) {
        sdict_value *nx = sdict_list_new(doc);
        assert_int_equal(sdict_seq_append(cur, nx), SDICT_OK);
        cur = nx;
    }
    void *buf = NULL;
    size_t n = 0;
    assert_int_equal(sdict_save_buffer(deep, NULL, &buf, &n, &err), SDICT_OK);
    sdict_free_buffer(buf);
    assert_int_equal(sdict_seq_append(cur, sdict_list_new(doc)), SDICT_OK);
    assert_int_equal(sdict_save(path, deep, NULL, &err), SDICT_E_LIMIT);
    assert_file_is(path, "previous");

    /* a directory that does not exist: the operation and errno text are named */
    char bad[600];
    snprintf(bad, sizeof bad, "%s/no/such/dir/x.pt", g_dir);
    assert_int_equal(sdict_save(bad, sdict_int_new(doc, 1), NULL, &err), SDICT_E_IO);
    assert_non_null(strstr(err.message, "create a temporary file beside"));
    assert_non_null(strstr(err.message, strerror(ENOENT)));
    assert_string_equal(err.file, bad);

    /* targets that exist but are not regular files are refused before anything is written:
       renaming over a device node or a FIFO would replace the node itself */
    char dirpath[600];
    snprintf(dirpath, sizeof dirpath, "%s/adir", g_dir);
    assert_int_equal(mkdir(dirpath, 0755), 0);
    assert_int_equal(sdict_save(dirpath, sdict_int_new(doc, 1), NULL, &err), SDICT_E_IO);
    assert_non_null(strstr(err.message, "not a regular file"));
    rmdir(dirpath);
    char fifo[600];
    snprintf(fifo, sizeof fifo, "%s/fifo.pt", g_dir);
    assert_int_equal(mkfifo(fifo, 0644), 0);
    assert_int_equal(sdict_save(fifo, sdict_int_new(doc, 1), NULL, &err), SDICT_E_IO);
    struct stat fst;
    assert_int_equal(stat(fifo, &fst), 0);
    assert_true(S_ISFIFO(fst.st_mode));
    unlink(fifo);
    assert_int_equal(sdict_save("/dev/null", sdict_int_new(doc, 1), NULL, &err), SDICT_E_IO);
    assert_int_equal(stat("/dev/null", &fst), 0);
    assert_true(S_ISCHR(fst.st_mode));
    assert_int_equal(count_entries(g_dir, ".sdtmp", false), 0);

    /* a symbolic link is written through, as torch.save does: the link stays a link and the
       file it names gets the new checkpoint */
    char real[600], link[600];
    snprintf(real, sizeof real, "%s/real.pt", g_dir);
    snprintf(link, sizeof link, "%s/link.pt", g_dir);
    write_marker(real, "previous");
    assert_int_equal(symlink("real.pt", link), 0);
    assert_int_equal(sdict_save(link, sdict_int_new(doc, 7), NULL, &err), SDICT_OK);
    assert_int_equal(lstat(link, &fst), 0);
    assert_true(S_ISLNK(fst.st_mode));
    sdict_doc *back = NULL;
    assert_int_equal(sdict_load(real, NULL, &back, &err), SDICT_OK);
    int64_t seven = 0;
    assert_int_equal(sdict_int_get(sdict_doc_root(back), &seven), SDICT_OK);
    assert_int_equal(seven, 7);
    sdict_doc_free(back);
    unlink(link);
    unlink(real);

    /* NULL arguments */
    assert_int_equal(sdict_save(NULL, l, NULL, &err), SDICT_E_INVALID_ARG);
    assert_int_equal(sdict_save(path, NULL, NULL, &err), SDICT_E_INVALID_ARG);
    assert_int_equal(sdict_save_buffer(l, NULL, NULL, &n, &err), SDICT_E_INVALID_ARG);
    assert_file_is(path, "previous");
    assert_int_equal(count_entries(g_dir, ".sdtmp", false), 0);
    sdict_doc_free(doc);
}

/* Loads path and returns its root int (which must be one). */
static int64_t load_int(const char *path) {
    sdict_doc *back = NULL;
    sdict_error err;
    assert_int_equal(sdict_load(path, NULL, &back, &err), SDICT_OK);
    int64_t v = -1;
    assert_int_equal(sdict_int_get(sdict_doc_root(back), &v), SDICT_OK);
    sdict_doc_free(back);
    return v;
}

/*
 Saving never destroys what torch.save could not overwrite: a file the caller may not write is
 refused and left as it was, although its folder (writable by everyone) would allow the rename.
 As root (who may write anything, as torch would) the save runs in a child that drops to
 nobody; the child also saves a file it owns in the same folder, which must work.
*/
static void test_read_only_target(void **state) {
    (void)state;
    char dir[600], ro[700], own[700];
    snprintf(dir, sizeof dir, "%s/shared", g_dir);
    assert_int_equal(mkdir(dir, 0777), 0);
    assert_int_equal(chmod(dir, 0777), 0); /* past the umask */
    snprintf(ro, sizeof ro, "%s/readonly.pt", dir);
    snprintf(own, sizeof own, "%s/own.pt", dir);
    write_marker(ro, "precious");
    assert_int_equal(chmod(ro, 0444), 0);
    write_marker(own, "old");
    bool root = geteuid() == 0;
    if (root) {
        assert_int_equal(chmod(g_dir, 0711), 0); /* nobody may pass through */
        assert_int_equal(chown(own, 65534, 65534), 0);
    } else {
        assert_int_equal(chmod(own, 0644), 0);
    }
    fflush(NULL);
    pid_t pid = root ? fork() : 0;
    assert_true(pid >= 0);
    if (pid == 0) {
        int code = 0;
        if (root && (setgid(65534) != 0 || setuid(65534) != 0))
            code = 10;
        sdict_doc *doc = NULL;
        sdict_error err;
        char msg[1024];
        if (!code && sdict_doc_new(&doc, NULL) != SDICT_OK)
            code = 11;
        if (!code && sdict_save(ro, sdict_int_new(doc, 1), NULL, &err) != SDICT_E_IO)
            code = 12;
        sdict_error_format(&err, msg, sizeof msg);
        if (!code && (strcmp(err.file, ro) != 0 || !strstr(msg, "readonly.pt") ||
                      !strstr(err.message, strerror(EACCES)) ||
                      !strstr(err.message, "left as it was")))
            code = 13;
        if (!code && sdict_save(own, sdict_int_new(doc, 2), NULL, &err) != SDICT_OK)
            code = 14;
        sdict_doc_free(doc);
        if (root)
            _exit(code);
        assert_int_equal(code, 0);
    } else {
        int ws = 0;
        assert_int_equal(waitpid(pid, &ws, 0), pid);
        assert_true(WIFEXITED(ws));
        assert_int_equal(WEXITSTATUS(ws), 0);
        assert_int_equal(chmod(g_dir, 0700), 0);
    }
    assert_file_is(ro, "precious");
    struct stat st;
    assert_int_equal(stat(ro, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0444);
    assert_int_equal(load_int(own), 2);
    assert_int_equal(count_entries(dir, ".sdtmp", false), 0);
    unlink(ro);
    unlink(own);
    assert_int_equal(rmdir(dir), 0);
}

/* Saving refuses what torch could not load back, naming it: a str that Python's unpickler
   cannot decode ('utf-8' with 'surrogatepass'), and an archive name with a '/'. The
   surrogatepass forms themselves are written and read back byte for byte. */
static void test_refuse_unloadable(void **state) {
    (void)state;
    sdict_doc *doc = NULL;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    char path[512];
    path_in(path, sizeof path, "strs.pt");
    write_marker(path, "previous");
    sdict_error err;
    char msg[1024];
    void *buf = NULL;
    size_t n = 0;

    /* a key that is not UTF-8: refused, the message quotes it (escaped) */
    sdict_value *root = sdict_dict_new(doc, false);
    assert_int_equal(sdict_dict_set_str(root, "fine", sdict_int_new(doc, 1)), SDICT_OK);
    assert_int_equal(sdict_dict_set(root, sdict_str_new(doc, "bad\xffkey", 7), sdict_int_new(doc, 2)),
                     SDICT_OK);
    assert_int_equal(sdict_save(path, root, NULL, &err), SDICT_E_INVALID_ARG);
    sdict_error_format(&err, msg, sizeof msg);
    assert_non_null(strstr(msg, "str 'bad\\xffkey'"));
    assert_non_null(strstr(msg, "byte 0xff at 3 of 7"));
    assert_string_equal(err.file, path);
    assert_file_is(path, "previous");
    assert_int_equal(sdict_save_buffer(root, NULL, &buf, &n, &err), SDICT_E_INVALID_ARG);
    assert_null(buf);

    /* values that are not UTF-8 as Python reads it, each named with its path */
    static const struct { const char *s; size_t n; } bad[] = {
        {"a\xc0\x80", 3},          /* overlong NUL */
        {"\xe0\x80\xaf", 3},       /* overlong '/' */
        {"\xf4\x90\x80\x80", 4},   /* past U+10FFFF */
        {"\xe2\x82", 2},           /* truncated */
        {"\x80", 1},               /* stray continuation byte */
        {"\xed\xa0", 2},           /* a surrogate cut short */
        {"\xf8\x88\x80\x80\x80", 5}, /* five-byte form */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sdict_value *r = sdict_dict_new(doc, false);
        sdict_value *inner = sdict_dict_new(doc, false);
        assert_int_equal(sdict_dict_set_str(r, "outer", inner), SDICT_OK);
        assert_int_equal(sdict_dict_set_str(inner, "name", sdict_str_new(doc, bad[i].s, bad[i].n)),
                         SDICT_OK);
        assert_int_equal(sdict_save(path, r, NULL, &err), SDICT_E_INVALID_ARG);
        assert_non_null(strstr(err.message, "at 'outer.name'"));
        assert_non_null(strstr(err.message, "not UTF-8"));
        assert_file_is(path, "previous");
    }

    /* what Python accepts: encoded lone surrogates (surrogatepass), U+D7FF, U+E000,
       U+10FFFF, NUL, as keys and values; they come back byte for byte */
    static const char ok[] = "\xed\xa0\x80|\xed\xbf\xbf|\xed\x9f\xbf|\xee\x80\x80|\xf4\x8f\xbf\xbf|\0|";
    sdict_value *good = sdict_dict_new(doc, false);
    assert_int_equal(sdict_dict_set(good, sdict_str_new(doc, "\xed\xb0\x80", 3),
                                    sdict_str_new(doc, ok, sizeof ok - 1)), SDICT_OK);
    assert_int_equal(sdict_save(path, good, NULL, &err), SDICT_OK);
    sdict_doc *back = NULL;
    assert_int_equal(sdict_load(path, NULL, &back, &err), SDICT_OK);
    const sdict_value *br = sdict_doc_root(back);
    assert_int_equal(sdict_dict_len(br), 1);
    size_t kl = 0, vl = 0;
    const char *k = sdict_str_get(sdict_dict_key(br, 0), &kl);
    const char *v = sdict_str_get(sdict_dict_val(br, 0), &vl);
    assert_int_equal(kl, 3);
    assert_memory_equal(k, "\xed\xb0\x80", 3);
    assert_int_equal(vl, sizeof ok - 1);
    assert_memory_equal(v, ok, vl);
    sdict_doc_free(back);
    write_marker(path, "previous");

    /* an archive name with '/': torch.load would look for data.pkl under "a" */
    sdict_save_opts opts = {.archive_name = "a/b", .flags = 0};
    assert_int_equal(sdict_save(path, sdict_int_new(doc, 1), &opts, &err), SDICT_E_INVALID_ARG);
    assert_non_null(strstr(err.message, "archive name 'a/b' contains '/'"));
    assert_string_equal(err.file, path);
    assert_file_is(path, "previous");
    assert_int_equal(sdict_save_buffer(sdict_int_new(doc, 1), &opts, &buf, &n, &err),
                     SDICT_E_INVALID_ARG);
    assert_null(buf);
    /* and a usable one is kept as given */
    opts.archive_name = "my model";
    assert_int_equal(sdict_save_buffer(sdict_int_new(doc, 1), &opts, &buf, &n, &err), SDICT_OK);
    assert_non_null(memmem(buf, n, "my model/data.pkl", 17));
    sdict_free_buffer(buf);
    assert_int_equal(count_entries(g_dir, ".sdtmp", false), 0);
    unlink(path);
    sdict_doc_free(doc);
}

/* Any name the filesystem allows can be saved: a 255-byte name (NAME_MAX) works, because the
   temporary file's name is short. */
static void test_long_name(void **state) {
    (void)state;
    sdict_doc *doc = NULL;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    char name[256];
    memset(name, 'n', 252);
    memcpy(name + 252, ".pt", 4);
    assert_int_equal(strlen(name), 255);
    char path[600];
    path_in(path, sizeof path, name);
    sdict_error err;
    assert_int_equal(sdict_save(path, sdict_int_new(doc, 255), NULL, &err), SDICT_OK);
    assert_int_equal(load_int(path), 255);
    /* and again over the existing file */
    assert_int_equal(sdict_save(path, sdict_int_new(doc, 254), NULL, &err), SDICT_OK);
    assert_int_equal(load_int(path), 254);
    /* one byte more is the filesystem's refusal, named */
    char longer[600];
    snprintf(longer, sizeof longer, "%s/x%s", g_dir, name);
    assert_int_equal(sdict_save(longer, sdict_int_new(doc, 1), NULL, &err), SDICT_E_IO);
    assert_non_null(strstr(err.message, strerror(ENAMETOOLONG)));
    assert_int_equal(count_entries(g_dir, ".sdtmp", false), 0);
    unlink(path);
    sdict_doc_free(doc);
}

/* Symbolic links are written through as torch.save's open(path, 'wb') writes through them: a
   dangling link gets its target created, a link to a file gets the file's content replaced,
   and the links themselves stay as they were (chains and relative links included). */
static void test_symlinks(void **state) {
    (void)state;
    sdict_doc *doc = NULL;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    sdict_error err;
    char sub[600], link[600], link2[600], target[700], got[700];
    struct stat st;
    snprintf(sub, sizeof sub, "%s/sub", g_dir);
    assert_int_equal(mkdir(sub, 0755), 0);
    snprintf(link, sizeof link, "%s/dangling.pt", g_dir);
    snprintf(link2, sizeof link2, "%s/chain.pt", g_dir);
    snprintf(target, sizeof target, "%s/made.pt", sub);

    /* chain.pt -> dangling.pt -> sub/made.pt, which does not exist yet */
    assert_int_equal(symlink("sub/made.pt", link), 0);
    assert_int_equal(symlink("dangling.pt", link2), 0);
    assert_int_equal(stat(target, &st), -1);
    assert_int_equal(sdict_save(link2, sdict_int_new(doc, 5), NULL, &err), SDICT_OK);
    assert_int_equal(lstat(target, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(lstat(link, &st), 0);
    assert_true(S_ISLNK(st.st_mode));
    assert_int_equal(lstat(link2, &st), 0);
    assert_true(S_ISLNK(st.st_mode));
    ssize_t n = readlink(link, got, sizeof got - 1);
    assert_int_equal(n, 11);
    got[n] = '\0';
    assert_string_equal(got, "sub/made.pt");
    assert_int_equal(load_int(target), 5);
    assert_int_equal(load_int(link2), 5);

    /* a link to an existing file: the file's content is replaced, the link kept */
    write_marker(target, "previous");
    struct stat before;
    assert_int_equal(chmod(target, 0640), 0);
    assert_int_equal(stat(target, &before), 0);
    assert_int_equal(sdict_save(link, sdict_int_new(doc, 6), NULL, &err), SDICT_OK);
    assert_int_equal(lstat(link, &st), 0);
    assert_true(S_ISLNK(st.st_mode));
    assert_int_equal(stat(target, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0640);
    assert_int_equal(load_int(target), 6);

    /* a loop of links is refused, naming the path */
    char la[600], lb[600];
    snprintf(la, sizeof la, "%s/loop_a.pt", g_dir);
    snprintf(lb, sizeof lb, "%s/loop_b.pt", g_dir);
    assert_int_equal(symlink("loop_b.pt", la), 0);
    assert_int_equal(symlink("loop_a.pt", lb), 0);
    assert_int_equal(sdict_save(la, sdict_int_new(doc, 1), NULL, &err), SDICT_E_IO);
    assert_non_null(strstr(err.message, strerror(ELOOP)));
    assert_int_equal(lstat(la, &st), 0);
    assert_true(S_ISLNK(st.st_mode));
    /* a dangling link into a folder that does not exist: open() would fail too */
    char nodir[600];
    snprintf(nodir, sizeof nodir, "%s/nodir.pt", g_dir);
    assert_int_equal(symlink("no/such/dir/x.pt", nodir), 0);
    assert_int_equal(sdict_save(nodir, sdict_int_new(doc, 1), NULL, &err), SDICT_E_IO);
    assert_non_null(strstr(err.message, strerror(ENOENT)));

    assert_int_equal(count_entries(g_dir, ".sdtmp", false), 0);
    assert_int_equal(count_entries(sub, ".sdtmp", false), 0);
    unlink(la);
    unlink(lb);
    unlink(nodir);
    unlink(link);
    unlink(link2);
    unlink(target);
    assert_int_equal(rmdir(sub), 0);
    sdict_doc_free(doc);
}

/* Allocator failing the Nth allocation. */
static long g_alloc_left;
static void *fail_malloc(void *ctx, size_t n) {
    (void)ctx;
    if (g_alloc_left-- == 0)
        return NULL;
    return malloc(n);
}
static void *fail_realloc(void *ctx, void *p, size_t n) {
    (void)ctx;
    if (g_alloc_left-- == 0)
        return NULL;
    return realloc(p, n);
}
static void fail_free(void *ctx, void *p) {
    (void)ctx;
    free(p);
}

static void test_out_of_memory(void **state) {
    (void)state;
    const sdict_allocator alc = {fail_malloc, fail_realloc, fail_free, NULL};
    sdict_set_allocator(&alc);
    g_alloc_left = -1;
    sdict_doc *doc = NULL;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    sdict_value *root = build_tree(doc);
    char path[512];
    path_in(path, sizeof path, "oom.pt");
    write_marker(path, "previous");
    int failures = 0;
    for (long k = 0;; k++) {
        g_alloc_left = k;
        void *buf = NULL;
        size_t n = 0;
        sdict_status st = sdict_save_buffer(root, NULL, &buf, &n, NULL);
        sdict_status st2 = SDICT_OK;
        if (st == SDICT_OK) {
            sdict_free_buffer(buf);
            g_alloc_left = k;
            st2 = sdict_save(path, root, NULL, NULL);
        }
        g_alloc_left = -1;
        if (st == SDICT_OK && st2 == SDICT_OK)
            break;
        assert_int_equal(st ? st : st2, SDICT_E_NOMEM);
        assert_null(st ? buf : NULL);
        assert_file_is(path, "previous");
        failures++;
        assert_true(k < 100000);
    }
    assert_true(failures > 5);
    assert_int_equal(count_entries(g_dir, ".sdtmp", false), 0);
    sdict_doc_free(doc);
    sdict_set_allocator(NULL);
}

/*==================================================================================================
 MARK: Crash safety
==================================================================================================*/

static sdict_value *big_tree(sdict_doc *doc, size_t nbytes, uint8_t fillb) {
    sdict_value *root = sdict_dict_new(doc, true);
    for (int i = 0; i < 8; i++) {
        sdict_storage *s = NULL;
        assert_int_equal(sdict_storage_new(nbytes / 8, &s, NULL), SDICT_OK);
        memset(sdict_storage_data(s), fillb + i, nbytes / 8);
        sdict_tensor t;
        const int64_t n = (int64_t)(nbytes / 8 / 4);
        int64_t stride;
        assert_int_equal(sdict_tensor_init(&t, SDICT_FLOAT32, 1, &n, &stride, s, NULL), SDICT_OK);
        sdict_value *v = NULL;
        assert_int_equal(sdict_tensor_new(doc, &t, &v, NULL), SDICT_OK);
        sdict_storage_release(s);
        char key[16];
        snprintf(key, sizeof key, "layer%d.weight", i);
        assert_int_equal(sdict_dict_set_str(root, key, v), SDICT_OK);
    }
    return root;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void test_crash_kill(void **state) {
    (void)state;
    sdict_doc *doc = NULL;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    sdict_value *old_root = big_tree(doc, 1 << 20, 1);
    sdict_value *new_root = big_tree(doc, 48u << 20, 100);
    char path[512];
    path_in(path, sizeof path, "crash.pt");
    assert_int_equal(sdict_save(path, old_root, NULL, NULL), SDICT_OK);
    size_t old_n = 0, new_n = 0;
    uint8_t *old_bytes = test_read_file(path, &old_n);
    assert_non_null(old_bytes);
    void *new_bytes = NULL;
    sdict_save_opts o = {.archive_name = "crash", .flags = 0};
    assert_int_equal(sdict_save_buffer(new_root, &o, &new_bytes, &new_n, NULL), SDICT_OK);

    /* How long one save takes here, to spread the kills over it. */
    char probe[512];
    path_in(probe, sizeof probe, "probe.pt");
    double t0 = now_s();
    assert_int_equal(sdict_save(probe, new_root, NULL, NULL), SDICT_OK);
    double dur = now_s() - t0;
    unlink(probe);

    int killed_before = 0, completed = 0;
    for (int i = 0; i < 30; i++) {
        int go[2];
        assert_int_equal(pipe(go), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            char c = 1;
            close(go[0]);
            if (write(go[1], &c, 1) != 1)
                _exit(3);
            _exit(sdict_save(path, new_root, NULL, NULL) == SDICT_OK ? 0 : 2);
        }
        close(go[1]);
        char c;
        assert_int_equal(read(go[0], &c, 1), 1);
        close(go[0]);
        /* delays from 0 to the measured save time (the child, writing from the same memory,
           is about as fast), so most kills land inside the save and a few after it */
        double delay = dur * i / 29.0;
        struct timespec ts = {(time_t)delay, (long)((delay - (double)(time_t)delay) * 1e9)};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);

        size_t n = 0;
        uint8_t *now = test_read_file(path, &n);
        assert_non_null(now);
        bool is_old = n == old_n && memcmp(now, old_bytes, n) == 0;
        bool is_new = n == new_n && memcmp(now, new_bytes, n) == 0;
        if (!is_old && !is_new)
            fail_msg("kill %d after %.3f s: %s holds %zu bytes, neither the old nor the new file",
                     i, delay, path, n);
        free(now);
        if (WIFSIGNALED(status) && is_old)
            killed_before++;
        if (is_new) {
            completed++;
            assert_int_equal(sdict_save(path, old_root, NULL, NULL), SDICT_OK); /* restore */
        }
        /* a killed save may leave its temporary; that is allowed, and cleaned here */
        count_entries(g_dir, ".sdtmp", true);
    }
    print_message("crash test: %d kills left the old file, %d saves completed (save takes %.3f s)\n",
                  killed_before, completed, dur);
    assert_true(killed_before >= 5);
    free(old_bytes);
    sdict_free_buffer(new_bytes);
    sdict_doc_free(doc);
}

/*==================================================================================================
 MARK: ENOSPC
==================================================================================================*/

static void test_enospc(void **state) {
    (void)state;
    if (geteuid() != 0) {
        print_message("SKIP ENOSPC test: not running as root, cannot mount a small tmpfs\n");
        skip();
    }
    char mnt[300], cmd[400];
    snprintf(mnt, sizeof mnt, "%s/small", g_dir);
    assert_int_equal(mkdir(mnt, 0755), 0);
    snprintf(cmd, sizeof cmd, "mount -t tmpfs -o size=1m sdict_enospc '%s' 2>/dev/null", mnt);
    if (system(cmd) != 0) {
        rmdir(mnt);
        print_message("SKIP ENOSPC test: 'mount -t tmpfs -o size=1m' failed here\n");
        skip();
    }
    sdict_doc *doc = NULL;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    char path[400];
    snprintf(path, sizeof path, "%s/model.pt", mnt);
    const int64_t small = 16, big = 1 << 20; /* 4 MiB of float32 */
    sdict_value *old_root = sdict_dict_new(doc, true);
    assert_int_equal(sdict_dict_set_str(old_root, "w", new_tensor(doc, SDICT_FLOAT32, 1, &small)), SDICT_OK);
    assert_int_equal(sdict_save(path, old_root, NULL, NULL), SDICT_OK);
    size_t old_n = 0;
    uint8_t *old_bytes = test_read_file(path, &old_n);
    assert_non_null(old_bytes);

    sdict_value *new_root = sdict_dict_new(doc, true);
    assert_int_equal(sdict_dict_set_str(new_root, "w", new_tensor(doc, SDICT_FLOAT32, 1, &big)), SDICT_OK);
    sdict_error err;
    memset(&err, 0, sizeof err);
    sdict_status st = sdict_save(path, new_root, NULL, &err);
    size_t n = 0;
    uint8_t *now = test_read_file(path, &n);
    assert_non_null(now);
    int leftovers = count_entries(mnt, ".sdtmp", true);
    snprintf(cmd, sizeof cmd, "umount '%s'", mnt);
    assert_int_equal(system(cmd), 0);
    rmdir(mnt);

    assert_int_equal(st, SDICT_E_IO);
    assert_non_null(strstr(err.message, strerror(ENOSPC)));
    assert_non_null(now);
    assert_int_equal(n, old_n);
    assert_memory_equal(now, old_bytes, n);
    assert_int_equal(leftovers, 0);
    free(now);
    free(old_bytes);
    sdict_doc_free(doc);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pickle_ints),
        cmocka_unit_test(test_pickle_batching),
        cmocka_unit_test(test_pickle_memo),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_high_rank_round_trip),
        cmocka_unit_test(test_archive_name_and_order),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_read_only_target),
        cmocka_unit_test(test_refuse_unloadable),
        cmocka_unit_test(test_long_name),
        cmocka_unit_test(test_symlinks),
        cmocka_unit_test(test_out_of_memory),
        cmocka_unit_test(test_crash_kill),
        cmocka_unit_test(test_enospc),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
