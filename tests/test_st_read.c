/*
 test_st_read.c - the safetensors reader through the public API: values, order (data offsets,
 as safetensors.torch.load_file 0.8 returns), `__metadata__` in file order, zero-copy mapping of
 aligned tensors and copies of misaligned ones (and under SDICT_LOAD_COPY / sdict_load_buffer),
 the sub-byte dtypes, scan and verify, and that sub-byte tensors cannot be saved as torch files.
 Files are built here byte by byte.

 Usage: test_st_read BUILD_TESTS_DIR (scratch files go there)
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "statedict.h"

static char g_dir[4000];

/* header text + data bytes -> a safetensors file image (malloc'd, *n bytes) */
static uint8_t *st_image(const char *hdr, const void *data, size_t dn, size_t *n) {
    size_t hn = strlen(hdr);
    uint8_t *p = malloc(8 + hn + dn);
    assert_non_null(p);
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)((uint64_t)hn >> (8 * i));
    memcpy(p + 8, hdr, hn);
    if (dn)
        memcpy(p + 8 + hn, data, dn);
    *n = 8 + hn + dn;
    return p;
}

static void write_file(const char *path, const uint8_t *p, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    fclose(f);
}

/* Header of 64 bytes (8 + 64 = 72, a multiple of 8): "b" (2 x int32, offsets [4, 12]) lies at
   file offset 76 (aligned for int32), "a" (1 x uint8 at [0, 1]), "c" (1 x float32 at [1, 5])
   would be misaligned: so the data are laid out b-first by offsets in the header below. */
static const char *k_hdr =
    "{\"__metadata__\":{\"z\":\"last\",\"a\":\"first\"},"
    "\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[1,9]},"
    "\"y\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[16,24]},"
    "\"u\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
    "\"p\":{\"dtype\":\"U8\",\"shape\":[7],\"data_offsets\":[9,16]}}";

static uint8_t *sample(size_t *n, size_t *data_at) {
    /* pad the header with spaces so that the data section starts at a multiple of 8 */
    char hdr[1024];
    size_t hn = strlen(k_hdr);
    size_t pad = (8 - (8 + hn) % 8) % 8;
    snprintf(hdr, sizeof hdr, "%s%*s", k_hdr, (int)pad, "");
    uint8_t data[24];
    float x[2] = {1.5f, -2.25f};
    int64_t y = -7;
    data[0] = 200;
    memcpy(data + 1, x, 8);
    for (int i = 0; i < 7; i++)
        data[9 + i] = (uint8_t)(i + 1);
    memcpy(data + 16, &y, 8);
    *data_at = 8 + strlen(hdr);
    assert_int_equal(*data_at % 8, 0);
    return st_image(hdr, data, sizeof data, n);
}

static void check_sample(const sdict_doc *doc, bool x_mapped, bool y_mapped) {
    assert_int_equal(sdict_doc_format(doc), SDICT_FORMAT_SAFETENSORS);
    const sdict_value *root = sdict_doc_root(doc);
    assert_int_equal(sdict_dict_len(root), 4);
    /* data-offset order: u [0,1], x [1,9], p [9,16], y [16,24] */
    const char *order[] = {"u", "x", "p", "y"};
    for (size_t i = 0; i < 4; i++)
        assert_string_equal(sdict_str_get(sdict_dict_key(root, i), NULL), order[i]);
    const sdict_tensor *x = sdict_value_tensor(sdict_dict_get(root, "x"));
    assert_non_null(x);
    assert_int_equal(x->dtype, SDICT_FLOAT32);
    assert_int_equal(x->ndim, 1);
    assert_int_equal(x->shape[0], 2);
    float xv[2];
    memcpy(xv, sdict_tensor_data(x), 8);
    assert_true(xv[0] == 1.5f && xv[1] == -2.25f);
    /* x starts at data offset 1: misaligned for float32, so copied (and aligned) */
    assert_int_equal(sdict_storage_is_mapped(x->storage), x_mapped);
    assert_int_equal((uintptr_t)sdict_tensor_data(x) % 4, 0);
    const sdict_tensor *y = sdict_value_tensor(sdict_dict_get(root, "y"));
    assert_int_equal(y->ndim, 0);
    int64_t yv;
    memcpy(&yv, sdict_tensor_data(y), 8);
    assert_int_equal(yv, -7);
    assert_int_equal(sdict_storage_is_mapped(y->storage), y_mapped);
    assert_string_equal(sdict_storage_key(y->storage), "y");
    const sdict_tensor *p = sdict_value_tensor(sdict_dict_get(root, "p"));
    assert_int_equal(((const uint8_t *)sdict_tensor_data(p))[6], 7);
    /* metadata: a dict of str -> str in the file's order, not in the root */
    const sdict_value *md = sdict_doc_metadata(doc);
    assert_non_null(md);
    assert_int_equal(sdict_dict_len(md), 2);
    assert_string_equal(sdict_str_get(sdict_dict_key(md, 0), NULL), "z");
    assert_string_equal(sdict_str_get(sdict_dict_get(md, "a"), NULL), "first");
    assert_null(sdict_dict_get(root, "__metadata__"));
}

static void test_load_mapped_copy_buffer(void **state) {
    (void)state;
    size_t n, data_at;
    uint8_t *img = sample(&n, &data_at);
    char path[4096];
    snprintf(path, sizeof path, "%s/st_read_sample.safetensors", g_dir);
    write_file(path, img, n);
    sdict_error err;
    sdict_doc *doc = NULL;
    assert_int_equal(sdict_load(path, NULL, &doc, &err), SDICT_OK);
    check_sample(doc, false, true); /* y at data offset 16: aligned, mapped */
    sdict_doc_free(doc);
    sdict_load_opts opts = {0};
    opts.flags = SDICT_LOAD_COPY;
    assert_int_equal(sdict_load(path, &opts, &doc, &err), SDICT_OK);
    check_sample(doc, false, false);
    sdict_doc_free(doc);
    assert_int_equal(sdict_load_buffer(img, n, "mem", NULL, &doc, &err), SDICT_OK);
    check_sample(doc, false, false);
    sdict_doc_free(doc);
    /* scan: no globals, clean; verify: OK */
    size_t unsafe = 99;
    assert_int_equal(sdict_scan(path, NULL, NULL, NULL, &unsafe, &err), SDICT_OK);
    assert_int_equal(unsafe, 0);
    assert_int_equal(sdict_verify(path, &err), SDICT_OK);
    /* one trailing byte: refused by load, scan and verify, naming the rule and the offset */
    uint8_t *longer = malloc(n + 1);
    memcpy(longer, img, n);
    longer[n] = 0;
    write_file(path, longer, n + 1);
    assert_int_equal(sdict_load(path, NULL, &doc, &err), SDICT_E_FORMAT);
    assert_null(doc);
    assert_non_null(strstr(err.message, "MetadataIncompleteBuffer"));
    assert_int_equal(err.offset, (int64_t)n);
    assert_string_equal(err.file, path);
    assert_int_equal(sdict_scan(path, NULL, NULL, NULL, &unsafe, &err), SDICT_E_FORMAT);
    assert_int_equal(sdict_verify(path, &err), SDICT_E_FORMAT);
    free(longer);
    unlink(path);
    free(img);
}

static void test_sub_byte_dtypes(void **state) {
    (void)state;
    const char *hdr = "{\"f4\":{\"dtype\":\"F4\",\"shape\":[2,3],\"data_offsets\":[0,3]},"
                      "\"x2\":{\"dtype\":\"F4\",\"shape\":[3,2],\"data_offsets\":[8,11]},"
                      "\"f6\":{\"dtype\":\"F6_E2M3\",\"shape\":[4],\"data_offsets\":[3,6]},"
                      "\"g6\":{\"dtype\":\"F6_E3M2\",\"shape\":[0],\"data_offsets\":[6,6]},"
                      "\"e8\":{\"dtype\":\"F8_E8M0\",\"shape\":[2],\"data_offsets\":[6,8]}}";
    const uint8_t data[11] = {0x21, 0x43, 0x65, 0xAA, 0xBB, 0xCC, 127, 128, 1, 2, 3};
    size_t n;
    uint8_t *img = st_image(hdr, data, sizeof data, &n);
    sdict_doc *doc = NULL;
    sdict_error err;
    assert_int_equal(sdict_load_buffer(img, n, "sub", NULL, &doc, &err), SDICT_OK);
    const sdict_value *root = sdict_doc_root(doc);
    const sdict_tensor *f4 = sdict_value_tensor(sdict_dict_get(root, "f4"));
    assert_int_equal(f4->dtype, SDICT_FLOAT4_E2M1FN);
    assert_string_equal(sdict_dtype_name(f4->dtype), "float4_e2m1fn");
    assert_int_equal(sdict_tensor_nbytes(f4), 3);
    assert_memory_equal(sdict_tensor_data(f4), data, 3);
    /* an even last dimension: torch's float4_e2m1fn_x2, as safe_open(framework="pt") */
    const sdict_tensor *x2 = sdict_value_tensor(sdict_dict_get(root, "x2"));
    assert_int_equal(x2->dtype, SDICT_FLOAT4_E2M1FN_X2);
    assert_int_equal(x2->ndim, 2);
    assert_true(x2->shape[0] == 3 && x2->shape[1] == 1);
    assert_memory_equal(sdict_tensor_data(x2), data + 8, 3);
    const sdict_tensor *f6 = sdict_value_tensor(sdict_dict_get(root, "f6"));
    assert_int_equal(f6->dtype, SDICT_FLOAT6_E2M3FN);
    assert_int_equal(sdict_tensor_nbytes(f6), 3);
    uint8_t raw[3];
    assert_int_equal(sdict_tensor_copy_to(f6, f6->dtype, raw, sizeof raw, &err), SDICT_OK);
    assert_memory_equal(raw, data + 3, 3);
    /* no numeric conversion of the packed floats */
    double d[4];
    assert_int_equal(sdict_tensor_copy_to(f6, SDICT_FLOAT64, d, sizeof d, &err), SDICT_E_DTYPE);
    assert_int_equal(sdict_value_tensor(sdict_dict_get(root, "g6"))->dtype, SDICT_FLOAT6_E3M2FN);
    const sdict_tensor *e8 = sdict_value_tensor(sdict_dict_get(root, "e8"));
    assert_int_equal(e8->dtype, SDICT_FLOAT8_E8M0FNU);
    assert_int_equal(sdict_tensor_copy_to(e8, SDICT_FLOAT64, d, sizeof d, &err), SDICT_OK);
    assert_true(d[0] == 1.0 && d[1] == 2.0); /* 2^(127-127), 2^(128-127) */
    /* a torch file cannot hold them: refused naming the tensor */
    char path[4096];
    snprintf(path, sizeof path, "%s/st_read_sub.pt", g_dir);
    assert_int_equal(sdict_save(path, root, NULL, &err), SDICT_E_DTYPE);
    assert_non_null(strstr(err.message, "'f4'"));
    assert_non_null(strstr(err.message, "float4_e2m1fn"));
    assert_int_not_equal(access(path, F_OK), 0);
    sdict_doc_free(doc);
    free(img);
}

static void test_rules(void **state) {
    (void)state;
    static const struct {
        const char *hdr;
        size_t data;
        sdict_status st;
        const char *record, *words;
    } cases[] = {
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[2,6]}}",
         6, SDICT_E_STORAGE, "b", "InvalidOffset"},
        {"{\"a\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[0,4]}}", 4, SDICT_E_SHAPE,
         "a", "TensorInvalidInfo"},
        {"{\"a\":{\"dtype\":\"F4\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, SDICT_E_SHAPE, "a",
         "MisalignedSlice"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
         4, SDICT_E_FORMAT, "header", "duplicate"},
        {"{\"__metadata__\":{\"k\":[]}}", 0, SDICT_E_FORMAT, "__metadata__", "not a string"},
        {"{\"a\":{\"dtype\":\"BF16\",\"shape\":[-2],\"data_offsets\":[0,4]}}", 4, SDICT_E_SHAPE,
         "a", "negative"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t zeros[8] = {0};
        size_t n;
        uint8_t *img = st_image(cases[i].hdr, zeros, cases[i].data, &n);
        sdict_doc *doc = NULL;
        sdict_error err;
        memset(&err, 0, sizeof err);
        sdict_status st = sdict_load_buffer(img, n, "case", NULL, &doc, &err);
        if (st != cases[i].st || strcmp(err.record, cases[i].record) != 0 ||
            !strstr(err.message, cases[i].words))
            fail_msg("case %zu: %s, record '%s': %s", i, sdict_status_str(st), err.record,
                     err.message);
        assert_true(err.offset >= 8);
        assert_null(doc);
        free(img);
    }
    /* a metadata-only file with no tensors is valid, and null metadata is no metadata */
    const char *ok[] = {"{\"__metadata__\":{\"format\":\"pt\"}}", "{\"__metadata__\":null}",
                        "  {}"};
    for (size_t i = 0; i < 3; i++) {
        size_t n;
        uint8_t *img = st_image(ok[i], NULL, 0, &n);
        sdict_doc *doc = NULL;
        sdict_error err;
        assert_int_equal(sdict_load_buffer(img, n, "ok", NULL, &doc, &err), SDICT_OK);
        assert_int_equal(sdict_dict_len(sdict_doc_root(doc)), 0);
        assert_int_equal(sdict_doc_metadata(doc) != NULL, i == 0);
        sdict_doc_free(doc);
        free(img);
    }
}

int main(int argc, char **argv) {
    snprintf(g_dir, sizeof g_dir, "%s", argc > 1 ? argv[1] : ".");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_mapped_copy_buffer),
        cmocka_unit_test(test_sub_byte_dtypes),
        cmocka_unit_test(test_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
