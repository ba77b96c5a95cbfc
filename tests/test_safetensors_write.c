/*
 test_safetensors_write.c - the safetensors writer's rules (sdict_save_buffer with
 SDICT_FORMAT_SAFETENSORS), on trees built in C:

 - exact bytes: header JSON as serde_json writes it, entry order (dtype rank, then name),
   `__metadata__` first, padding with spaces to 8, data offsets, float4 shape doubling, string
   escaping; the expected texts were written by hand from safetensors' tensor.rs and agree
   with what safetensors 0.8's save_file writes (tests/safetensors/write_interop.py checks the
   same rules against the real package);
 - views: a transposed view and a slice of a larger storage are written as contiguous copies;
 - tied weights: one name kept (the least, or the first of keep_names), each dropped name
   reported through on_dropped; partial overlaps refused naming both, or copied on request;
 - non-tensor leaves refused in one message listing them, dropped, or kept as their Python
   repr in `__metadata__`; flattening of nested dicts and lists, collisions refused;
 - progress reports up to the total of tensor bytes;
 - bounded work: a tree whose values are reached through exponentially many paths;
 - refused inputs: a root that is not a dict, quantized, meta and complex128 tensors, a 0-dim
   float4 tensor, metadata that is not str -> str, a tensor named __metadata__, unknown or
   conflicting flags.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/internal.h"

/*==================================================================================================
 MARK: Helpers
==================================================================================================*/

/* A contiguous tensor value of dtype and shape over a new storage holding the bytes `data`
   (nbytes of them, or zeros when data is NULL). */
static sdict_value *tensor(sdict_doc *doc, sdict_dtype dt, int32_t ndim, const int64_t *shape,
                           const void *data, size_t nbytes) {
    sdict_storage *s = NULL;
    assert_int_equal(sdict_storage_new(nbytes, &s, NULL), SDICT_OK);
    if (data && nbytes)
        memcpy(sdict_storage_data(s), data, nbytes);
    int64_t stride[8];
    sdict_tensor t;
    assert_int_equal(sdict_tensor_init(&t, dt, ndim, shape, stride, s, NULL), SDICT_OK);
    sdict_value *v = NULL;
    assert_int_equal(sdict_tensor_new(doc, &t, &v, NULL), SDICT_OK);
    sdict_storage_release(s);
    return v;
}

/* A view of storage s with the given geometry. */
static sdict_value *view(sdict_doc *doc, sdict_storage *s, sdict_dtype dt, int32_t ndim,
                         const int64_t *shape, const int64_t *stride, int64_t offset) {
    sdict_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = dt;
    t.ndim = ndim;
    t.shape = shape;
    t.stride = stride;
    t.storage_offset = offset;
    t.storage = s;
    sdict_value *v = NULL;
    assert_int_equal(sdict_tensor_new(doc, &t, &v, NULL), SDICT_OK);
    return v;
}

typedef struct out_file {
    uint8_t *data;
    size_t size;
    uint64_t n;          /* header length */
    char header[4096];   /* header text, NUL-terminated */
} out_file;

static sdict_status save(const sdict_value *root, const sdict_save_opts *o, out_file *f,
                         sdict_error *err) {
    sdict_save_opts opts;
    if (o)
        opts = *o;
    else
        memset(&opts, 0, sizeof opts);
    opts.format = SDICT_FORMAT_SAFETENSORS;
    memset(f, 0, sizeof *f);
    void *p = NULL;
    size_t n = 0;
    sdict_status st = sdict_save_buffer(root, &opts, &p, &n, err);
    if (st)
        return st;
    f->data = p;
    f->size = n;
    assert_true(n >= 8);
    f->n = sdict__le64(p);
    assert_true(f->n % 8 == 0);
    assert_true(8 + f->n <= n && f->n < sizeof f->header);
    memcpy(f->header, f->data + 8, f->n);
    f->header[f->n] = 0;
    return SDICT_OK;
}

/* header without its padding */
static const char *trimmed(out_file *f) {
    size_t n = strlen(f->header);
    while (n && f->header[n - 1] == ' ')
        f->header[--n] = 0;
    return f->header;
}

static const uint8_t *data_section(const out_file *f) { return f->data + 8 + f->n; }

/*==================================================================================================
 MARK: Exact bytes
==================================================================================================*/

static void test_exact_bytes(void **state) {
    (void)state;
    sdict_doc *doc;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    sdict_value *root = sdict_dict_new(doc, true);
    float w[2] = {1.0f, 2.0f};
    int64_t b = 7, sw[1] = {2};
    uint8_t flags[3] = {1, 0, 1};
    int64_t sf[1] = {3};
    assert_int_equal(sdict_dict_set_str(root, "w", tensor(doc, SDICT_FLOAT32, 1, sw, w, 8)), 0);
    assert_int_equal(sdict_dict_set_str(root, "b", tensor(doc, SDICT_INT64, 0, NULL, &b, 8)), 0);
    assert_int_equal(sdict_dict_set_str(root, "a", tensor(doc, SDICT_BOOL, 1, sf, flags, 3)), 0);
    sdict_value *md = sdict_dict_new(doc, false);
    sdict_dict_set_str(md, "format", sdict_str_new(doc, "pt", 2));
    assert_int_equal(sdict_doc_set_metadata(doc, md), SDICT_OK);
    assert_int_equal(sdict_doc_set_root(doc, root), SDICT_OK);

    out_file f;
    assert_int_equal(save(root, NULL, &f, NULL), SDICT_OK);
    /* I64 before F32 before BOOL: descending Dtype rank, whatever the dict's order */
    const char *want = "{\"__metadata__\":{\"format\":\"pt\"},"
                       "\"b\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]},"
                       "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]},"
                       "\"a\":{\"dtype\":\"BOOL\",\"shape\":[3],\"data_offsets\":[16,19]}}";
    assert_int_equal(f.n, (strlen(want) + 7) / 8 * 8);
    assert_string_equal(trimmed(&f), want);
    for (size_t i = strlen(want); i < f.n; i++)
        assert_int_equal(f.data[8 + i], ' ');
    assert_int_equal(f.size, 8 + f.n + 19);
    assert_memory_equal(data_section(&f), &b, 8);
    assert_memory_equal(data_section(&f) + 8, w, 8);
    assert_memory_equal(data_section(&f) + 16, flags, 3);
    sdict_free_buffer(f.data);

    /* opts->metadata wins over the doc's; names sort as bytes within one dtype */
    sdict_value *md2 = sdict_dict_new(doc, false);
    sdict_dict_set_str(md2, "z", sdict_str_new(doc, "1", 1));
    sdict_dict_set_str(md2, "a", sdict_str_new(doc, "2", 1));
    sdict_value *r2 = sdict_dict_new(doc, false);
    int64_t s0[1] = {0};
    sdict_dict_set_str(r2, "b", tensor(doc, SDICT_FLOAT32, 1, s0, NULL, 0));
    sdict_dict_set_str(r2, "B", tensor(doc, SDICT_FLOAT32, 1, s0, NULL, 0));
    sdict_save_opts o;
    memset(&o, 0, sizeof o);
    o.metadata = md2;
    assert_int_equal(save(r2, &o, &f, NULL), SDICT_OK);
    assert_string_equal(trimmed(&f),
                        "{\"__metadata__\":{\"z\":\"1\",\"a\":\"2\"},"
                        "\"B\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},"
                        "\"b\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}");
    assert_int_equal(f.size, 8 + f.n);
    sdict_free_buffer(f.data);
    sdict_doc_free(doc);
}

static void test_dtype_order_and_f4(void **state) {
    (void)state;
    sdict_doc *doc;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    sdict_value *root = sdict_dict_new(doc, false);
    static const sdict_dtype dts[] = {
        SDICT_BOOL, SDICT_FLOAT4_E2M1FN_X2, SDICT_UINT8, SDICT_INT8, SDICT_FLOAT8_E5M2,
        SDICT_FLOAT8_E4M3FN, SDICT_FLOAT8_E8M0FNU, SDICT_FLOAT8_E4M3FNUZ, SDICT_FLOAT8_E5M2FNUZ,
        SDICT_INT16, SDICT_UINT16, SDICT_FLOAT16, SDICT_BFLOAT16, SDICT_INT32, SDICT_UINT32,
        SDICT_FLOAT32, SDICT_COMPLEX64, SDICT_FLOAT64, SDICT_INT64, SDICT_UINT64,
    };
    static const char *names[] = {
        "BOOL", "F4", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ",
        "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "C64", "F64", "I64", "U64",
    };
    size_t n = sizeof dts / sizeof *dts;
    int64_t shape[2] = {2, 3};
    for (size_t i = 0; i < n; i++) {
        char key[8];
        snprintf(key, sizeof key, "t%02zu", i);
        sdict_dict_set_str(root, key, tensor(doc, dts[i], 2, shape, NULL,
                                             6 * sdict_dtype_size(dts[i])));
    }
    out_file f;
    assert_int_equal(save(root, NULL, &f, NULL), SDICT_OK);
    /* entries appear from U64 down to BOOL; F4's last dimension counts 4-bit elements */
    const char *p = f.header;
    uint64_t off = 0;
    for (size_t k = n; k-- > 0;) {
        char want[160];
        uint64_t nb = 6 * sdict_dtype_size(dts[k]);
        snprintf(want, sizeof want,
                 "\"t%02zu\":{\"dtype\":\"%s\",\"shape\":[2,%d],\"data_offsets\":[%llu,%llu]}",
                 k, names[k], dts[k] == SDICT_FLOAT4_E2M1FN_X2 ? 6 : 3,
                 (unsigned long long)off, (unsigned long long)(off + nb));
        const char *q = strstr(p, want);
        assert_non_null(q);
        p = q + strlen(want);
        off += nb;
    }
    assert_int_equal(f.size, 8 + f.n + off);
    sdict_free_buffer(f.data);

    /* refused dtypes and shapes */
    sdict_error err;
    sdict_value *r2 = sdict_dict_new(doc, false);
    sdict_dict_set_str(r2, "c", tensor(doc, SDICT_COMPLEX128, 1, shape, NULL, 32));
    assert_int_equal(save(r2, NULL, &f, &err), SDICT_E_UNSUPPORTED);
    assert_string_equal(err.record, "c");
    assert_non_null(strstr(err.message, "complex128"));
    sdict_value *r3 = sdict_dict_new(doc, false);
    sdict_dict_set_str(r3, "f4", tensor(doc, SDICT_FLOAT4_E2M1FN_X2, 0, NULL, NULL, 1));
    assert_int_equal(save(r3, NULL, &f, &err), SDICT_E_UNSUPPORTED);
    assert_non_null(strstr(err.message, "0-dim"));
    sdict_doc_free(doc);
}

static void test_escaping(void **state) {
    (void)state;
    sdict_doc *doc;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    sdict_value *root = sdict_dict_new(doc, false);
    const char key[] = "k\"\\\n\x01\x7f\xc3\xa9";
    sdict_dict_set(root, sdict_str_new(doc, key, sizeof key - 1),
                   tensor(doc, SDICT_UINT8, 0, NULL, "x", 1));
    sdict_value *md = sdict_dict_new(doc, false);
    sdict_dict_set_str(md, "m\x1f", sdict_str_new(doc, "\b\f\r\t/", 5));
    sdict_save_opts o;
    memset(&o, 0, sizeof o);
    o.metadata = md;
    out_file f;
    assert_int_equal(save(root, &o, &f, NULL), SDICT_OK);
    assert_string_equal(trimmed(&f),
                        "{\"__metadata__\":{\"m\\u001f\":\"\\b\\f\\r\\t/\"},"
                        "\"k\\\"\\\\\\n\\u0001\x7f\xc3\xa9\":{\"dtype\":\"U8\",\"shape\":[],"
                        "\"data_offsets\":[0,1]}}");
    sdict_free_buffer(f.data);

    /* text Rust cannot hold: a lone surrogate (Python's surrogatepass form) */
    sdict_value *r2 = sdict_dict_new(doc, false);
    sdict_dict_set(r2, sdict_str_new(doc, "\xed\xa0\x80", 3),
                   tensor(doc, SDICT_UINT8, 0, NULL, "x", 1));
    sdict_error err;
    assert_int_equal(save(r2, NULL, &f, &err), SDICT_E_INVALID_ARG);
    assert_non_null(strstr(err.message, "UTF-8"));
    sdict_doc_free(doc);
}

/*==================================================================================================
 MARK: Views, aliases, overlaps
==================================================================================================*/

static void test_views_are_copied(void **state) {
    (void)state;
    sdict_doc *doc;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    sdict_storage *s;
    assert_int_equal(sdict_storage_new(12 * 4, &s, NULL), SDICT_OK);
    float *x = sdict_storage_data(s);
    for (int i = 0; i < 12; i++)
        x[i] = (float)i;
    /* base.view(3, 4).t(): shape (4, 3), stride (1, 4) -> its C-order elements */
    int64_t tshape[2] = {4, 3}, tstride[2] = {1, 4};
    sdict_value *root = sdict_dict_new(doc, false);
    sdict_dict_set_str(root, "t", view(doc, s, SDICT_FLOAT32, 2, tshape, tstride, 0));
    sdict_storage_release(s);
    out_file f;
    assert_int_equal(save(root, NULL, &f, NULL), SDICT_OK);
    float want[12] = {0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11};
    assert_int_equal(f.size - 8 - f.n, sizeof want);
    assert_memory_equal(data_section(&f), want, sizeof want);
    assert_non_null(strstr(f.header, "\"shape\":[4,3],\"data_offsets\":[0,48]"));
    sdict_free_buffer(f.data);

    /* two disjoint slices of one storage (a split fused weight) are both written */
    assert_int_equal(sdict_storage_new(12 * 4, &s, NULL), SDICT_OK);
    x = sdict_storage_data(s);
    for (int i = 0; i < 12; i++)
        x[i] = (float)i;
    int64_t sshape[1] = {6}, sstride[1] = {1};
    sdict_value *r2 = sdict_dict_new(doc, false);
    sdict_dict_set_str(r2, "q", view(doc, s, SDICT_FLOAT32, 1, sshape, sstride, 0));
    sdict_dict_set_str(r2, "k", view(doc, s, SDICT_FLOAT32, 1, sshape, sstride, 6));
    sdict_storage_release(s);
    assert_int_equal(save(r2, NULL, &f, NULL), SDICT_OK);
    assert_string_equal(trimmed(&f),
                        "{\"k\":{\"dtype\":\"F32\",\"shape\":[6],\"data_offsets\":[0,24]},"
                        "\"q\":{\"dtype\":\"F32\",\"shape\":[6],\"data_offsets\":[24,48]}}");
    float kq[12] = {6, 7, 8, 9, 10, 11, 0, 1, 2, 3, 4, 5};
    assert_memory_equal(data_section(&f), kq, sizeof kq);
    sdict_free_buffer(f.data);
    sdict_doc_free(doc);
}

typedef struct dropped_log {
    char text[512];
    int n;
} dropped_log;

static void on_dropped(void *ctx, const char *dropped, const char *kept) {
    dropped_log *l = ctx;
    size_t len = strlen(l->text);
    snprintf(l->text + len, sizeof l->text - len, "%s->%s;", dropped, kept);
    l->n++;
}

static void test_tied_weights(void **state) {
    (void)state;
    sdict_doc *doc;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    sdict_storage *s;
    assert_int_equal(sdict_storage_new(6 * 4, &s, NULL), SDICT_OK);
    int64_t shape[2] = {2, 3}, stride[2] = {3, 1};
    sdict_value *root = sdict_dict_new(doc, false);
    sdict_dict_set_str(root, "lm_head.weight", view(doc, s, SDICT_FLOAT32, 2, shape, stride, 0));
    sdict_dict_set_str(root, "wte.weight", view(doc, s, SDICT_FLOAT32, 2, shape, stride, 0));
    sdict_dict_set_str(root, "emb", view(doc, s, SDICT_FLOAT32, 2, shape, stride, 0));
    sdict_storage_release(s);

    dropped_log log;
    memset(&log, 0, sizeof log);
    sdict_save_opts o;
    memset(&o, 0, sizeof o);
    o.on_dropped = on_dropped;
    o.ctx = &log;
    out_file f;
    /* save_model keeps sorted(names)[0]: "emb" */
    assert_int_equal(save(root, &o, &f, NULL), SDICT_OK);
    assert_string_equal(trimmed(&f),
                        "{\"emb\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}");
    assert_string_equal(log.text, "lm_head.weight->emb;wte.weight->emb;");
    sdict_free_buffer(f.data);

    /* keep_names: the first listed name of the group wins */
    const char *keep[] = {"absent", "wte.weight", "lm_head.weight"};
    o.keep_names = keep;
    o.keep_names_count = 3;
    memset(&log, 0, sizeof log);
    assert_int_equal(save(root, &o, &f, NULL), SDICT_OK);
    assert_non_null(strstr(f.header, "\"wte.weight\":"));
    assert_null(strstr(f.header, "\"emb\":"));
    assert_string_equal(log.text, "emb->wte.weight;lm_head.weight->wte.weight;");
    sdict_free_buffer(f.data);
    sdict_doc_free(doc);
}

static void test_overlaps(void **state) {
    (void)state;
    sdict_doc *doc;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    sdict_storage *s;
    assert_int_equal(sdict_storage_new(12 * 4, &s, NULL), SDICT_OK);
    float *x = sdict_storage_data(s);
    for (int i = 0; i < 12; i++)
        x[i] = (float)i;
    int64_t full[1] = {12}, part[1] = {4}, one[1] = {1};
    sdict_value *root = sdict_dict_new(doc, false);
    sdict_dict_set_str(root, "whole", view(doc, s, SDICT_FLOAT32, 1, full, one, 0));
    sdict_dict_set_str(root, "middle", view(doc, s, SDICT_FLOAT32, 1, part, one, 4));
    sdict_storage_release(s);
    sdict_error err;
    out_file f;
    assert_int_equal(save(root, NULL, &f, &err), SDICT_E_INVALID_ARG);
    assert_non_null(strstr(err.message, "'whole' and 'middle' overlap"));
    assert_string_equal(err.record, "middle");

    sdict_save_opts o;
    memset(&o, 0, sizeof o);
    o.st_flags = SDICT_SAVE_ST_COPY_OVERLAPS;
    assert_int_equal(save(root, &o, &f, NULL), SDICT_OK);
    assert_string_equal(trimmed(&f),
                        "{\"middle\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                        "\"whole\":{\"dtype\":\"F32\",\"shape\":[12],\"data_offsets\":[16,64]}}");
    assert_memory_equal(data_section(&f), x + 4, 16);
    assert_memory_equal(data_section(&f) + 16, x, 48);
    sdict_free_buffer(f.data);
    sdict_doc_free(doc);
}

/*==================================================================================================
 MARK: Flattening and leaves that are not tensors
==================================================================================================*/

static sdict_value *checkpoint(sdict_doc *doc) {
    sdict_value *root = sdict_dict_new(doc, false);
    sdict_value *model = sdict_dict_new(doc, true);
    int64_t shape[1] = {2};
    sdict_dict_set_str(model, "w", tensor(doc, SDICT_FLOAT32, 1, shape, NULL, 8));
    sdict_dict_set_str(root, "model", model);
    sdict_dict_set_str(root, "epoch", sdict_int_new(doc, 3));
    sdict_dict_set_str(root, "lr", sdict_float_new(doc, 1e-5));
    sdict_value *l = sdict_list_new(doc);
    sdict_seq_append(l, tensor(doc, SDICT_INT8, 1, shape, NULL, 2));
    sdict_seq_append(l, sdict_str_new(doc, "it's", 4));
    sdict_dict_set_str(root, "hist", l);
    sdict_value *state = sdict_dict_new(doc, false);
    sdict_value *inner = sdict_dict_new(doc, false);
    sdict_dict_set_str(inner, "step", tensor(doc, SDICT_FLOAT32, 0, NULL, NULL, 4));
    sdict_dict_set(state, sdict_int_new(doc, 0), inner);
    sdict_dict_set_str(root, "state", state);
    return root;
}

static void test_non_tensors(void **state) {
    (void)state;
    sdict_doc *doc;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    sdict_value *root = checkpoint(doc);
    sdict_error err;
    out_file f;
    assert_int_equal(save(root, NULL, &f, &err), SDICT_E_INVALID_ARG);
    assert_string_equal(err.record, "epoch");
    assert_non_null(strstr(err.message, "3 values are not tensors"));
    assert_non_null(strstr(err.message, "epoch (int), lr (float), hist.1 (str)"));

    sdict_save_opts o;
    memset(&o, 0, sizeof o);
    o.st_flags = SDICT_SAVE_ST_DROP_NON_TENSORS;
    assert_int_equal(save(root, &o, &f, NULL), SDICT_OK);
    /* nested dicts and lists flatten to dotted names; int keys in decimal */
    assert_string_equal(trimmed(&f),
                        "{\"model.w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                        "\"state.0.step\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[8,12]},"
                        "\"hist.0\":{\"dtype\":\"I8\",\"shape\":[2],\"data_offsets\":[12,14]}}");
    sdict_free_buffer(f.data);

    o.st_flags = SDICT_SAVE_ST_NON_TENSORS_AS_METADATA;
    assert_int_equal(save(root, &o, &f, NULL), SDICT_OK);
    assert_non_null(strstr(f.header, "{\"__metadata__\":{\"epoch\":\"3\",\"lr\":\"1e-05\","
                                     "\"hist.1\":\"\\\"it's\\\"\"},\"model.w\":"));
    sdict_free_buffer(f.data);

    o.st_flags = SDICT_SAVE_ST_NON_TENSORS_AS_METADATA | SDICT_SAVE_ST_DROP_NON_TENSORS;
    assert_int_equal(save(root, &o, &f, &err), SDICT_E_INVALID_ARG);
    o.st_flags = 1u << 7;
    assert_int_equal(save(root, &o, &f, &err), SDICT_E_INVALID_ARG);

    /* a metadata key the non-tensor leaf would take is refused, not overwritten */
    sdict_value *md = sdict_dict_new(doc, false);
    sdict_dict_set_str(md, "epoch", sdict_str_new(doc, "9", 1));
    o.st_flags = SDICT_SAVE_ST_NON_TENSORS_AS_METADATA;
    o.metadata = md;
    assert_int_equal(save(root, &o, &f, &err), SDICT_E_INVALID_ARG);
    assert_string_equal(err.record, "epoch");
    sdict_doc_free(doc);
}

static void test_refused(void **state) {
    (void)state;
    sdict_doc *doc;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    sdict_error err;
    out_file f;
    int64_t shape[1] = {2};

    /* root not a dict */
    sdict_value *lst = sdict_list_new(doc);
    assert_int_equal(save(lst, NULL, &f, &err), SDICT_E_INVALID_ARG);
    assert_non_null(strstr(err.message, "the root is a list"));

    /* collision after flattening names both origins */
    sdict_value *r = sdict_dict_new(doc, false);
    sdict_value *a = sdict_dict_new(doc, false);
    sdict_dict_set_str(a, "b", tensor(doc, SDICT_FLOAT32, 1, shape, NULL, 8));
    sdict_dict_set_str(r, "a", a);
    sdict_dict_set_str(r, "a.b", tensor(doc, SDICT_FLOAT32, 1, shape, NULL, 8));
    assert_int_equal(save(r, NULL, &f, &err), SDICT_E_INVALID_ARG);
    assert_non_null(strstr(err.message, "['a']['b'] and ['a.b'] both flatten to the name 'a.b'"));

    /* __metadata__ is not a tensor name */
    sdict_value *r2 = sdict_dict_new(doc, false);
    sdict_dict_set_str(r2, "__metadata__", tensor(doc, SDICT_FLOAT32, 1, shape, NULL, 8));
    assert_int_equal(save(r2, NULL, &f, &err), SDICT_E_INVALID_ARG);

    /* metadata is str -> str */
    sdict_value *r3 = sdict_dict_new(doc, false);
    sdict_dict_set_str(r3, "w", tensor(doc, SDICT_FLOAT32, 1, shape, NULL, 8));
    sdict_value *md = sdict_dict_new(doc, false);
    sdict_dict_set_str(md, "n", sdict_int_new(doc, 1));
    sdict_save_opts o;
    memset(&o, 0, sizeof o);
    o.metadata = md;
    assert_int_equal(save(r3, &o, &f, &err), SDICT_E_INVALID_ARG);
    assert_string_equal(err.record, "__metadata__");
    assert_non_null(strstr(err.message, "metadata value of 'n' is a int"));

    /* a meta tensor has no data */
    sdict_tensor t;
    int64_t stride[1];
    assert_int_equal(sdict_tensor_init(&t, SDICT_FLOAT32, 1, shape, stride, NULL, NULL), 0);
    sdict_value *mv = NULL;
    assert_int_equal(sdict_tensor_new(doc, &t, &mv, NULL), SDICT_OK);
    sdict_value *r4 = sdict_dict_new(doc, false);
    sdict_dict_set_str(r4, "m", mv);
    assert_int_equal(save(r4, NULL, &f, &err), SDICT_E_UNSUPPORTED);
    assert_non_null(strstr(err.message, "'m' is a meta tensor"));

    /* a quantized tensor */
    sdict_storage *s;
    assert_int_equal(sdict_storage_new(2, &s, NULL), SDICT_OK);
    assert_int_equal(sdict_tensor_init(&t, SDICT_QINT8, 1, shape, stride, s, NULL), 0);
    sdict_quantizer q;
    memset(&q, 0, sizeof q);
    q.qscheme = SDICT_PER_TENSOR_AFFINE;
    q.scale = 0.5;
    sdict_value *qv = NULL;
    assert_int_equal(sdict_qtensor_new(doc, &t, &q, &qv, NULL), SDICT_OK);
    sdict_storage_release(s);
    sdict_value *r5 = sdict_dict_new(doc, false);
    sdict_dict_set_str(r5, "q", qv);
    assert_int_equal(save(r5, NULL, &f, &err), SDICT_E_UNSUPPORTED);
    assert_string_equal(err.record, "q");
    assert_non_null(strstr(err.message, "quantized"));
    sdict_doc_free(doc);
}

typedef struct progress_log {
    uint64_t last, total;
    int calls;
    bool monotonic;
} progress_log;

static void on_progress(void *ctx, uint64_t done, uint64_t total) {
    progress_log *l = ctx;
    l->monotonic = l->monotonic && done >= l->last && done <= total;
    l->last = done;
    l->total = total;
    l->calls++;
}

/* progress reports the tensor bytes written, ending at their total; a transposed view is
   reported as it is copied out */
static void test_progress(void **state) {
    (void)state;
    sdict_doc *doc;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    sdict_value *root = sdict_dict_new(doc, false);
    int64_t shape[2] = {300, 200};
    sdict_dict_set_str(root, "a", tensor(doc, SDICT_FLOAT64, 2, shape, NULL, 300 * 200 * 8));
    sdict_storage *s;
    assert_int_equal(sdict_storage_new(300 * 200 * 4, &s, NULL), SDICT_OK);
    int64_t tshape[2] = {200, 300}, tstride[2] = {1, 200};
    sdict_dict_set_str(root, "b", view(doc, s, SDICT_FLOAT32, 2, tshape, tstride, 0));
    sdict_storage_release(s);
    progress_log log = {0, 0, 0, true};
    sdict_save_opts o;
    memset(&o, 0, sizeof o);
    o.progress = on_progress;
    o.ctx = &log;
    out_file f;
    assert_int_equal(save(root, &o, &f, NULL), SDICT_OK);
    assert_true(log.monotonic);
    assert_int_equal(log.total, 300 * 200 * 12);
    assert_int_equal(log.last, log.total);
    assert_int_equal(log.calls, 2);
    assert_int_equal(f.size - 8 - f.n, log.total);
    sdict_free_buffer(f.data);
    sdict_doc_free(doc);
}

/* A list holding one list twice, 40 deep: 2^40 paths to one tensor are refused, not walked. */
static void test_shared_paths_bounded(void **state) {
    (void)state;
    sdict_doc *doc;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    int64_t shape[1] = {1};
    sdict_value *v = tensor(doc, SDICT_FLOAT32, 1, shape, NULL, 4);
    for (int i = 0; i < 40; i++) {
        sdict_value *l = sdict_list_new(doc);
        assert_int_equal(sdict_seq_append(l, v), SDICT_OK);
        assert_int_equal(sdict_seq_append(l, v), SDICT_OK);
        v = l;
    }
    sdict_value *root = sdict_dict_new(doc, false);
    sdict_dict_set_str(root, "x", v);
    sdict_error err;
    out_file f;
    assert_int_equal(save(root, NULL, &f, &err), SDICT_E_LIMIT);
    assert_non_null(strstr(err.message, "many paths"));
    sdict_doc_free(doc);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_bytes),
        cmocka_unit_test(test_dtype_order_and_f4),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_views_are_copied),
        cmocka_unit_test(test_tied_weights),
        cmocka_unit_test(test_overlaps),
        cmocka_unit_test(test_non_tensors),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_shared_paths_bounded),
        cmocka_unit_test(test_progress),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
