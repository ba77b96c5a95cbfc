/*
 test_values.c - what a checkpoint says about its values beyond their bytes: the location tag a
 storage was saved with (sdict_storage_location, sdict_tensor_device) and which tags torch.load
 (map_location='cpu') refuses; bare storages saved as values (SDICT_KIND_STORAGE,
 sdict_value_storage) through save and load; frozensets as dict keys.

 The files are made in memory with sdict_save_buffer (which writes every location as "cpu")
 and their pickled location string is then rewritten in place to a tag of the same length: the
 CRC check is off by default, so the edited archive loads.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "../src/internal.h"

static sdict_doc *new_doc(void) {
    sdict_doc *d = NULL;
    assert_int_equal(sdict_doc_new(&d, NULL), SDICT_OK);
    return d;
}

/* {'w': tensor([0., 1., 2., 3.]), 's': FloatStorage of [10., 20.]} saved into memory. */
static uint8_t *saved_file(size_t *n) {
    sdict_doc *d = new_doc();
    sdict_storage *ws = NULL, *ss = NULL;
    assert_int_equal(sdict_storage_new(16, &ws, NULL), SDICT_OK);
    assert_int_equal(sdict_storage_new(8, &ss, NULL), SDICT_OK);
    float *w = sdict_storage_data(ws), *s = sdict_storage_data(ss);
    for (int i = 0; i < 4; i++)
        w[i] = (float)i;
    s[0] = 10.0f;
    s[1] = 20.0f;
    int64_t shape[1] = {4}, stride[1];
    sdict_tensor t;
    assert_int_equal(sdict_tensor_init(&t, SDICT_FLOAT32, 1, shape, stride, ws, NULL), SDICT_OK);
    sdict_value *tv = NULL;
    assert_int_equal(sdict_tensor_new(d, &t, &tv, NULL), SDICT_OK);
    sdict_value *sv = sdict__storage_value_new(d, ss, SDICT_FLOAT32);
    assert_non_null(sv);
    sdict_value *root = sdict_dict_new(d, false);
    assert_int_equal(sdict_dict_set_str(root, "w", tv), SDICT_OK);
    assert_int_equal(sdict_dict_set_str(root, "s", sv), SDICT_OK);
    sdict_storage_release(ws);
    sdict_storage_release(ss);
    void *buf = NULL;
    sdict_error err;
    assert_int_equal(sdict_save_buffer(root, NULL, &buf, n, &err), SDICT_OK);
    uint8_t *copy = malloc(*n);
    assert_non_null(copy);
    memcpy(copy, buf, *n);
    sdict_free_buffer(buf);
    sdict_doc_free(d);
    return copy;
}

/* Replaces the one pickled "cpu" location (BINUNICODE, then memo-fetched) by 8 bytes of
   pickle that push another tag. */
static void set_location_op(uint8_t *buf, size_t n, const char op[8]) {
    static const char cpu[8] = {'X', 3, 0, 0, 0, 'c', 'p', 'u'};
    size_t hits = 0;
    for (size_t i = 0; i + 8 <= n; i++)
        if (memcmp(buf + i, cpu, 8) == 0) {
            memcpy(buf + i, op, 8);
            hits++;
        }
    assert_int_equal(hits, 1);
}

static void test_location_kept(void **state) {
    (void)state;
    size_t n;
    uint8_t *buf = saved_file(&n);
    set_location_op(buf, n, (const char[8]){'X', 3, 0, 0, 0, 'm', 'p', 's'});
    sdict_doc *doc = NULL;
    sdict_error err;
    assert_int_equal(sdict_load_buffer(buf, n, "mps.pt", NULL, &doc, &err), SDICT_OK);
    const sdict_value *root = sdict_doc_root(doc);
    const sdict_tensor *t = sdict_value_tensor(sdict_dict_get(root, "w"));
    assert_non_null(t);
    assert_string_equal(sdict_tensor_device(t), "mps");
    assert_string_equal(sdict_storage_location(t->storage), "mps");
    /* the data is in host memory whatever the tag, as with map_location='cpu' */
    assert_true(((const float *)sdict_tensor_data(t))[3] == 3.0f);
    sdict_dtype dt = SDICT_DTYPE_COUNT;
    sdict_storage *s = sdict_value_storage(sdict_dict_get(root, "s"), &dt);
    assert_non_null(s);
    assert_string_equal(sdict_storage_location(s), "mps");
    sdict_doc_free(doc);

    /* an ASCII bytes tag (SHORT_BINBYTES) decodes as torch's _maybe_decode_ascii does */
    free(buf);
    buf = saved_file(&n);
    set_location_op(buf, n, (const char[8]){'C', 6, 'c', 'u', 'd', 'a', ':', '1'});
    assert_int_equal(sdict_load_buffer(buf, n, "cuda1.pt", NULL, &doc, &err), SDICT_OK);
    t = sdict_value_tensor(sdict_dict_get(sdict_doc_root(doc), "w"));
    assert_string_equal(sdict_tensor_device(t), "cuda:1");
    sdict_doc_free(doc);
    free(buf);
}

static void test_location_refused(void **state) {
    (void)state;
    size_t n;
    uint8_t *buf = saved_file(&n);
    /* non-ASCII bytes: torch.load fails decoding them, map_location='cpu' or not */
    set_location_op(buf, n, (const char[8]){'C', 6, (char)0xff, 'a', 'b', 'c', 'd', 'e'});
    sdict_doc *doc = NULL;
    sdict_error err;
    assert_int_equal(sdict_load_buffer(buf, n, "bad.pt", NULL, &doc, &err), SDICT_E_STORAGE);
    assert_null(doc);
    assert_non_null(strstr(err.message, "location tag b'\\xffabcde' is not ASCII"));
    assert_non_null(strstr(err.message, "storage '0'"));
    assert_true(err.offset > 0);
    assert_non_null(strstr(err.record, "data.pkl"));
    free(buf);

    /* a location that is no string at all (an int) */
    buf = saved_file(&n);
    set_location_op(buf, n, (const char[8]){'K', 1, 'N', '0', 'N', '0', 'N', '0'});
    assert_int_equal(sdict_load_buffer(buf, n, "int.pt", NULL, &doc, &err), SDICT_E_PICKLE_TYPE);
    assert_non_null(strstr(err.message, "location is a int, not a string"));
    free(buf);
}

static void test_device_accessors(void **state) {
    (void)state;
    assert_null(sdict_tensor_device(NULL));
    assert_string_equal(sdict_storage_location(NULL), "cpu");
    sdict_storage *s = NULL;
    assert_int_equal(sdict_storage_new(4, &s, NULL), SDICT_OK);
    assert_string_equal(sdict_storage_location(s), "cpu"); /* made in memory */
    assert_int_equal(sdict__storage_set_location(s, "xpu:1", 5, NULL), SDICT_OK);
    assert_string_equal(sdict_storage_location(s), "xpu:1");
    int64_t shape[1] = {1}, stride[1];
    sdict_tensor t;
    assert_int_equal(sdict_tensor_init(&t, SDICT_FLOAT32, 1, shape, stride, s, NULL), SDICT_OK);
    assert_string_equal(sdict_tensor_device(&t), "xpu:1");
    assert_int_equal(sdict__storage_set_location(s, "cpu", 3, NULL), SDICT_OK);
    assert_string_equal(sdict_storage_location(s), "cpu");
    t.storage = NULL; /* a meta tensor */
    assert_string_equal(sdict_tensor_device(&t), "meta");
    sdict_storage_release(s);
}

static void test_bare_storage_round_trip(void **state) {
    (void)state;
    size_t n;
    uint8_t *buf = saved_file(&n);
    sdict_doc *doc = NULL;
    sdict_error err;
    assert_int_equal(sdict_load_buffer(buf, n, "bare.pt", NULL, &doc, &err), SDICT_OK);
    const sdict_value *sv = sdict_dict_get(sdict_doc_root(doc), "s");
    assert_int_equal(sdict_value_kind(sv), SDICT_KIND_STORAGE);
    assert_string_equal(sdict_kind_name(SDICT_KIND_STORAGE), "storage");
    assert_null(sdict_value_storage(sdict_dict_get(sdict_doc_root(doc), "w"), NULL));
    sdict_dtype dt = SDICT_DTYPE_COUNT;
    sdict_storage *s = sdict_value_storage(sv, &dt);
    assert_int_equal(dt, SDICT_FLOAT32);
    assert_int_equal(sdict_storage_nbytes(s), 8);
    const float *f = sdict_storage_data(s);
    assert_true(f[0] == 10.0f && f[1] == 20.0f);
    assert_string_equal(sdict_storage_location(s), "cpu");
    assert_string_equal(sdict_storage_key(s), "1");
    sdict_doc_free(doc);
    free(buf);
}

static void test_frozenset_keys(void **state) {
    (void)state;
    sdict_doc *d = new_doc();
    sdict_value *a = sdict_set_new(d), *b = sdict_set_new(d), *plain = sdict_set_new(d);
    assert_int_equal(sdict_seq_append(a, sdict_int_new(d, 1)), SDICT_OK);
    assert_int_equal(sdict_seq_append(a, sdict_str_new(d, "x", 1)), SDICT_OK);
    assert_int_equal(sdict_seq_append(b, sdict_str_new(d, "x", 1)), SDICT_OK);
    assert_int_equal(sdict_seq_append(b, sdict_int_new(d, 1)), SDICT_OK);
    assert_int_equal(sdict_seq_append(plain, sdict_int_new(d, 1)), SDICT_OK);
    assert_int_equal(sdict_value_set_pytype(a, SDICT_PYTYPE_FROZENSET), SDICT_OK);
    assert_int_equal(sdict_value_set_pytype(b, SDICT_PYTYPE_FROZENSET), SDICT_OK);
    sdict_value *dict = sdict_dict_new(d, false);
    assert_int_equal(sdict_dict_set(dict, a, sdict_int_new(d, 1)), SDICT_OK);
    /* equal frozensets in another order are the same key */
    assert_int_equal(sdict_dict_set(dict, b, sdict_int_new(d, 2)), SDICT_OK);
    assert_int_equal(sdict_dict_len(dict), 1);
    int64_t v = 0;
    assert_int_equal(sdict_int_get(sdict_dict_find(dict, a), &v), SDICT_OK);
    assert_int_equal(v, 2);
    /* a set is unhashable, as in Python; a frozenset with one item less is another key */
    assert_int_equal(sdict_dict_set(dict, plain, sdict_int_new(d, 3)), SDICT_E_INVALID_ARG);
    assert_int_equal(sdict_value_set_pytype(plain, SDICT_PYTYPE_FROZENSET), SDICT_OK);
    assert_int_equal(sdict_dict_set(dict, plain, sdict_int_new(d, 3)), SDICT_OK);
    assert_int_equal(sdict_dict_len(dict), 2);
    /* a frozenset inside a tuple key */
    sdict_value *tup = sdict_tuple_new(d);
    assert_int_equal(sdict_seq_append(tup, a), SDICT_OK);
    assert_int_equal(sdict_dict_set(dict, tup, sdict_none_new(d)), SDICT_OK);
    assert_int_equal(sdict_dict_len(dict), 3);
    sdict_doc_free(d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_location_kept),
        cmocka_unit_test(test_location_refused),
        cmocka_unit_test(test_device_accessors),
        cmocka_unit_test(test_bare_storage_round_trip),
        cmocka_unit_test(test_frozenset_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
