/*
 test_composite.c - what torch 2.x added to checkpoints, through the public API: device,
 complex, qscheme and layout values, Counters, tensor attributes, the conj/neg bits, quantized,
 sparse and nested tensors (each constructor's checks), and a save/load round trip of all of
 them that keeps every type.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "statedict.h"

static sdict_doc *new_doc(void) {
    sdict_doc *d = NULL;
    assert_int_equal(sdict_doc_new(&d, NULL), SDICT_OK);
    return d;
}

/* A 1-D or 2-D contiguous tensor value of dtype dt holding the bytes of src. */
static sdict_value *tensor_of(sdict_doc *d, sdict_dtype dt, int32_t ndim, const int64_t *shape,
                              const void *src, size_t nbytes) {
    sdict_storage *s = NULL;
    assert_int_equal(sdict_storage_new(nbytes, &s, NULL), SDICT_OK);
    if (nbytes)
        memcpy(sdict_storage_data(s), src, nbytes);
    sdict_tensor t;
    int64_t stride[2];
    assert_int_equal(sdict_tensor_init(&t, dt, ndim, shape, stride, s, NULL), SDICT_OK);
    sdict_value *v = NULL;
    assert_int_equal(sdict_tensor_new(d, &t, &v, NULL), SDICT_OK);
    sdict_storage_release(s);
    return v;
}

static sdict_value *i64_tensor(sdict_doc *d, int32_t ndim, const int64_t *shape,
                               const int64_t *vals, size_t n) {
    return tensor_of(d, SDICT_INT64, ndim, shape, vals, n * sizeof *vals);
}

static sdict_value *size_tuple(sdict_doc *d, int n, const int64_t *dims) {
    sdict_value *t = sdict_tuple_new(d);
    for (int i = 0; i < n; i++)
        assert_int_equal(sdict_seq_append(t, sdict_int_new(d, dims[i])), SDICT_OK);
    return t;
}

/*==================================================================================================
 Scalars: device, complex, qscheme, layout; Counter
==================================================================================================*/

static void test_objects(void **state) {
    (void)state;
    sdict_doc *d = new_doc();
    sdict_value *cpu = sdict_device_new(d, "cpu", -1), *cuda1 = sdict_device_new(d, "cuda", 1);
    int64_t ix = 7;
    assert_string_equal(sdict_device_get(cpu, &ix), "cpu");
    assert_int_equal(ix, -1);
    assert_string_equal(sdict_device_get(cuda1, &ix), "cuda");
    assert_int_equal(ix, 1);
    assert_null(sdict_device_new(d, "cu da", 0));
    assert_null(sdict_device_new(d, "", 0));
    assert_null(sdict_device_new(d, "cuda", -2));
    assert_null(sdict_device_get(sdict_int_new(d, 1), &ix));
    sdict_value *z = sdict_complex_new(d, 1.5, -2.0);
    double re, im;
    assert_true(sdict_complex_get(z, &re, &im));
    assert_true(re == 1.5 && im == -2.0);
    assert_false(sdict_complex_get(cpu, &re, &im));
    assert_true(isnan(re));
    sdict_value *q = sdict_qscheme_value_new(d, SDICT_PER_CHANNEL_AFFINE);
    assert_int_equal(sdict_qscheme_value_get(q), SDICT_PER_CHANNEL_AFFINE);
    assert_string_equal(sdict_qscheme_name(SDICT_PER_CHANNEL_AFFINE_FLOAT_QPARAMS),
                        "per_channel_affine_float_qparams");
    assert_null(sdict_qscheme_value_new(d, SDICT_QSCHEME_COUNT));
    sdict_value *l = sdict_layout_value_new(d, SDICT_LAYOUT_SPARSE_BSC);
    assert_int_equal(sdict_layout_value_get(l), SDICT_LAYOUT_SPARSE_BSC);
    assert_int_equal(sdict_layout_value_get(q), SDICT_LAYOUT_COUNT);
    assert_string_equal(sdict_layout_name(SDICT_LAYOUT_JAGGED), "jagged");
    assert_string_equal(sdict_layout_name(SDICT_LAYOUT_COUNT), "?");
    /* all of them are dict keys, equal by value as in Python */
    sdict_value *dict = sdict_dict_new(d, false);
    assert_int_equal(sdict_dict_set(dict, cuda1, sdict_int_new(d, 1)), SDICT_OK);
    assert_int_equal(sdict_dict_set(dict, z, sdict_int_new(d, 2)), SDICT_OK);
    assert_int_equal(sdict_dict_set(dict, l, sdict_int_new(d, 3)), SDICT_OK);
    assert_int_equal(sdict_dict_set(dict, sdict_device_new(d, "cuda", 1), sdict_int_new(d, 4)),
                     SDICT_OK);
    assert_int_equal(sdict_dict_len(dict), 3);
    int64_t got = 0;
    assert_int_equal(sdict_int_get(sdict_dict_find(dict, sdict_complex_new(d, 1.5, -2.0)), &got),
                     SDICT_OK);
    assert_int_equal(got, 2);
    assert_null(sdict_dict_find(dict, sdict_device_new(d, "cuda", -1)));
    /* a Counter is a dict that remembers being one; an OrderedDict cannot be one */
    sdict_value *c = sdict_dict_new(d, false);
    assert_int_equal(sdict_value_set_pytype(c, SDICT_PYTYPE_COUNTER), SDICT_OK);
    assert_int_equal(sdict_value_kind(c), SDICT_KIND_DICT);
    assert_int_equal(sdict_value_pytype(c), SDICT_PYTYPE_COUNTER);
    assert_false(sdict_dict_is_ordered(c));
    assert_int_equal(sdict_value_pytype(dict), SDICT_PYTYPE_PLAIN);
    assert_int_equal(sdict_value_set_pytype(sdict_dict_new(d, true), SDICT_PYTYPE_COUNTER),
                     SDICT_E_INVALID_ARG);
    assert_int_equal(sdict_value_set_pytype(z, SDICT_PYTYPE_COUNTER), SDICT_E_INVALID_ARG);
    sdict_doc_free(d);
}

/*==================================================================================================
 Quantized tensors
==================================================================================================*/

static void test_quantized(void **state) {
    (void)state;
    sdict_doc *d = new_doc();
    int8_t raw[6] = {-3, 0, 5, 7, -8, 1};
    int64_t shape[2] = {2, 3};
    sdict_storage *s = NULL;
    assert_int_equal(sdict_storage_new(6, &s, NULL), SDICT_OK);
    memcpy(sdict_storage_data(s), raw, 6);
    sdict_tensor t;
    int64_t stride[2];
    assert_int_equal(sdict_tensor_init(&t, SDICT_QINT8, 2, shape, stride, s, NULL), SDICT_OK);
    sdict_quantizer q = {SDICT_PER_TENSOR_AFFINE, 0.5, -1, NULL, NULL, 0};
    sdict_value *v = NULL;
    sdict_error err;
    assert_int_equal(sdict_qtensor_new(d, &t, &q, &v, &err), SDICT_OK);
    const sdict_quantizer *got = sdict_value_quantizer(v);
    assert_non_null(got);
    assert_true(got->scale == 0.5 && got->zero_point == -1);
    assert_int_equal(sdict_value_tensor(v)->dtype, SDICT_QINT8);
    /* per channel: float64 scales and int64 zero points, one per row */
    double sc[2] = {0.1, 0.2};
    int64_t zp[2] = {1, 2}, two[1] = {2}, three[1] = {3};
    q = (sdict_quantizer){SDICT_PER_CHANNEL_AFFINE, 0, 0,
                          tensor_of(d, SDICT_FLOAT64, 1, two, sc, sizeof sc),
                          i64_tensor(d, 1, two, zp, 2), 0};
    assert_int_equal(sdict_qtensor_new(d, &t, &q, &v, &err), SDICT_OK);
    assert_int_equal(sdict_value_quantizer(v)->qscheme, SDICT_PER_CHANNEL_AFFINE);
    q.axis = 1; /* three channels along axis 1, two parameters */
    assert_int_equal(sdict_qtensor_new(d, &t, &q, &v, &err), SDICT_E_INVALID_ARG);
    assert_null(v);
    q.axis = 2;
    assert_int_equal(sdict_qtensor_new(d, &t, &q, &v, &err), SDICT_E_INVALID_ARG);
    q.axis = 0;
    /* float zero points make it float_qparams, as torch has it after loading */
    float fz[2] = {0.5f, 1.5f}, fs[2] = {0.1f, 0.2f};
    q.zero_points = tensor_of(d, SDICT_FLOAT32, 1, two, fz, sizeof fz);
    q.scales = tensor_of(d, SDICT_FLOAT32, 1, two, fs, sizeof fs);
    assert_int_equal(sdict_qtensor_new(d, &t, &q, &v, &err), SDICT_OK);
    assert_int_equal(sdict_value_quantizer(v)->qscheme, SDICT_PER_CHANNEL_AFFINE_FLOAT_QPARAMS);
    q.scales = i64_tensor(d, 1, two, zp, 2); /* integer scales */
    assert_int_equal(sdict_qtensor_new(d, &t, &q, &v, &err), SDICT_E_DTYPE);
    q.scales = tensor_of(d, SDICT_FLOAT64, 1, three, (double[3]){1, 2, 3}, 24);
    assert_int_equal(sdict_qtensor_new(d, &t, &q, &v, &err), SDICT_E_INVALID_ARG);
    /* torch cannot save the symmetric schemes; a plain dtype cannot be quantized */
    q.qscheme = SDICT_PER_TENSOR_SYMMETRIC;
    assert_int_equal(sdict_qtensor_new(d, &t, &q, &v, &err), SDICT_E_INVALID_ARG);
    q.qscheme = SDICT_PER_TENSOR_AFFINE;
    t.dtype = SDICT_INT8;
    assert_int_equal(sdict_qtensor_new(d, &t, &q, &v, &err), SDICT_E_DTYPE);
    /* a plain tensor of a quantized dtype has no quantizer */
    t.dtype = SDICT_QUINT8;
    assert_int_equal(sdict_tensor_new(d, &t, &v, &err), SDICT_OK);
    assert_null(sdict_value_quantizer(v));
    sdict_storage_release(s);
    sdict_doc_free(d);
}

/*==================================================================================================
 Sparse and nested tensors
==================================================================================================*/

static void test_sparse(void **state) {
    (void)state;
    sdict_doc *d = new_doc();
    sdict_error err;
    int64_t ishape[2] = {2, 3}, n3[1] = {3}, sz[2] = {4, 5};
    int64_t idx[6] = {0, 1, 3, 4, 0, 2};
    float vals[3] = {1, 2, 3};
    sdict_sparse sp = {SDICT_LAYOUT_SPARSE_COO, size_tuple(d, 2, sz), i64_tensor(d, 2, ishape, idx, 6),
                       NULL, tensor_of(d, SDICT_FLOAT32, 1, n3, vals, sizeof vals), 1, false,
                       false, false};
    sdict_value *v = NULL;
    assert_int_equal(sdict_sparse_new(d, &sp, &v, &err), SDICT_OK);
    assert_int_equal(sdict_value_kind(v), SDICT_KIND_SPARSE);
    assert_int_equal(sdict_value_sparse(v)->is_coalesced, 1);
    assert_null(sdict_value_tensor(v));
    /* an index past its dimension (5 in a dimension of 5) */
    int64_t bad[6] = {0, 1, 3, 4, 5, 2};
    sp.indices = i64_tensor(d, 2, ishape, bad, 6);
    assert_int_equal(sdict_sparse_new(d, &sp, &v, &err), SDICT_E_STORAGE);
    assert_non_null(strstr(err.message, "outside"));
    sp.indices = i64_tensor(d, 2, ishape, idx, 6);
    int64_t sz3[3] = {4, 5, 6};
    sp.size = size_tuple(d, 3, sz3); /* no dense dimension in the values */
    assert_int_equal(sdict_sparse_new(d, &sp, &v, &err), SDICT_E_SHAPE);
    sp.size = size_tuple(d, 2, sz);
    sp.is_coalesced = 2;
    assert_int_equal(sdict_sparse_new(d, &sp, &v, &err), SDICT_E_INVALID_ARG);
    sp.is_coalesced = -1;
    sp.values = sdict_int_new(d, 3);
    assert_int_equal(sdict_sparse_new(d, &sp, &v, &err), SDICT_E_INVALID_ARG);
    /* CSR 2x3: rows [0, 1), [1, 3) */
    int64_t crow[3] = {0, 1, 3}, col[3] = {2, 0, 1}, n1[1] = {3}, csz[2] = {2, 3};
    sdict_sparse csr = {SDICT_LAYOUT_SPARSE_CSR, size_tuple(d, 2, csz), i64_tensor(d, 1, n1, crow, 3),
                        i64_tensor(d, 1, n1, col, 3),
                        tensor_of(d, SDICT_FLOAT32, 1, n3, vals, sizeof vals), -1, false, false,
                        false};
    assert_int_equal(sdict_sparse_new(d, &csr, &v, &err), SDICT_OK);
    csr.legacy_csr = true;
    assert_int_equal(sdict_sparse_new(d, &csr, &v, &err), SDICT_OK);
    int64_t crow_bad[3] = {0, 2, 1};
    csr.indices = i64_tensor(d, 1, n1, crow_bad, 3);
    assert_int_equal(sdict_sparse_new(d, &csr, &v, &err), SDICT_E_STORAGE);
    csr.indices = i64_tensor(d, 1, n1, crow, 3);
    csr.layout = SDICT_LAYOUT_SPARSE_CSC; /* 3 columns need 4 compressed indices */
    csr.legacy_csr = false;
    assert_int_equal(sdict_sparse_new(d, &csr, &v, &err), SDICT_E_SHAPE);
    csr.layout = SDICT_LAYOUT_STRIDED;
    assert_int_equal(sdict_sparse_new(d, &csr, &v, &err), SDICT_E_INVALID_ARG);
    sdict_doc_free(d);
}

static void test_nested(void **state) {
    (void)state;
    sdict_doc *d = new_doc();
    sdict_error err;
    float buf[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    int64_t n8[1] = {8}, s21[2] = {2, 1}, n2[1] = {2};
    int64_t sizes[2] = {3, 5}, strides[2] = {1, 1}, offs[2] = {0, 3};
    sdict_nested ns = {tensor_of(d, SDICT_FLOAT32, 1, n8, buf, sizeof buf),
                       i64_tensor(d, 2, s21, sizes, 2), i64_tensor(d, 2, s21, strides, 2),
                       i64_tensor(d, 1, n2, offs, 2), false, false};
    sdict_value *v = NULL;
    assert_int_equal(sdict_nested_new(d, &ns, &v, &err), SDICT_OK);
    assert_int_equal(sdict_value_kind(v), SDICT_KIND_NESTED);
    assert_ptr_equal(sdict_value_nested(v)->buffer, ns.buffer);
    int64_t far[2] = {0, 4}; /* 5 elements from 4 run past 8 */
    ns.storage_offsets = i64_tensor(d, 1, n2, far, 2);
    assert_int_equal(sdict_nested_new(d, &ns, &v, &err), SDICT_E_STORAGE);
    ns.storage_offsets = tensor_of(d, SDICT_FLOAT32, 1, n2, buf, 8);
    assert_int_equal(sdict_nested_new(d, &ns, &v, &err), SDICT_E_DTYPE);
    sdict_doc_free(d);
}

/*==================================================================================================
 Save and load keep every type
==================================================================================================*/

static void test_round_trip(void **state) {
    (void)state;
    sdict_doc *d = new_doc();
    sdict_value *root = sdict_dict_new(d, true);
    assert_int_equal(sdict_doc_set_root(d, root), SDICT_OK);
    sdict_value *counter = sdict_dict_new(d, false);
    assert_int_equal(sdict_value_set_pytype(counter, SDICT_PYTYPE_COUNTER), SDICT_OK);
    assert_int_equal(sdict_dict_set(counter, sdict_int_new(d, 30), sdict_int_new(d, 2)), SDICT_OK);
    assert_int_equal(sdict_dict_set_str(root, "milestones", counter), SDICT_OK);
    assert_int_equal(sdict_dict_set_str(root, "dev", sdict_device_new(d, "cuda", 0)), SDICT_OK);
    assert_int_equal(sdict_dict_set_str(root, "z", sdict_complex_new(d, -0.0, INFINITY)), SDICT_OK);
    assert_int_equal(sdict_dict_set_str(root, "q", sdict_qscheme_value_new(d, SDICT_PER_TENSOR_AFFINE)),
                     SDICT_OK);
    assert_int_equal(sdict_dict_set_str(root, "l", sdict_layout_value_new(d, SDICT_LAYOUT_SPARSE_CSR)),
                     SDICT_OK);
    /* a Parameter with attributes and a conjugated complex tensor */
    float w[2] = {1, 2}, cz[4] = {1, 2, 3, 4};
    int64_t n2[1] = {2};
    sdict_value *p = tensor_of(d, SDICT_FLOAT32, 1, n2, w, sizeof w);
    sdict_tensor pt = *sdict_value_tensor(p);
    pt.is_parameter = pt.requires_grad = true;
    assert_int_equal(sdict_tensor_new(d, &pt, &p, NULL), SDICT_OK);
    sdict_value *attrs = sdict_dict_new(d, false);
    assert_int_equal(sdict_dict_set_str(attrs, "note", sdict_str_new(d, "tied", 4)), SDICT_OK);
    assert_int_equal(sdict_tensor_set_attrs(p, attrs), SDICT_OK);
    assert_int_equal(sdict_tensor_set_attrs(counter, attrs), SDICT_E_INVALID_ARG);
    assert_int_equal(sdict_dict_set_str(root, "param", p), SDICT_OK);
    sdict_value *c = tensor_of(d, SDICT_COMPLEX64, 1, n2, cz, sizeof cz);
    sdict_tensor ct = *sdict_value_tensor(c);
    ct.is_conj = true;
    assert_int_equal(sdict_tensor_new(d, &ct, &c, NULL), SDICT_OK);
    assert_int_equal(sdict_dict_set_str(root, "conj", c), SDICT_OK);
    /* quantized, sparse, nested */
    uint8_t q4[2] = {0x21, 0x03};
    int64_t n3[1] = {3};
    sdict_value *raw = tensor_of(d, SDICT_QUINT4X2, 1, n3, q4, 2);
    sdict_quantizer q = {SDICT_PER_TENSOR_AFFINE, 0.25, 1, NULL, NULL, 0};
    sdict_value *qv = NULL;
    assert_int_equal(sdict_qtensor_new(d, sdict_value_tensor(raw), &q, &qv, NULL), SDICT_OK);
    assert_int_equal(sdict_dict_set_str(root, "q4", qv), SDICT_OK);
    int64_t ishape[2] = {1, 2}, idx[2] = {0, 3}, sz[1] = {4};
    sdict_sparse sp = {SDICT_LAYOUT_SPARSE_COO, size_tuple(d, 1, sz), i64_tensor(d, 2, ishape, idx, 2),
                       NULL, tensor_of(d, SDICT_FLOAT32, 1, n2, w, sizeof w), -1, false, false,
                       false};
    sdict_value *spv = NULL;
    assert_int_equal(sdict_sparse_new(d, &sp, &spv, NULL), SDICT_OK);
    assert_int_equal(sdict_dict_set_str(root, "coo", spv), SDICT_OK);
    int64_t s11[2] = {1, 1}, n1[1] = {1}, one[1] = {2}, unit[1] = {1}, zero[1] = {0};
    sdict_nested ns = {tensor_of(d, SDICT_FLOAT32, 1, n2, w, sizeof w), i64_tensor(d, 2, s11, one, 1),
                       i64_tensor(d, 2, s11, unit, 1), i64_tensor(d, 1, n1, zero, 1), false, false};
    sdict_value *nv = NULL;
    assert_int_equal(sdict_nested_new(d, &ns, &nv, NULL), SDICT_OK);
    assert_int_equal(sdict_dict_set_str(root, "nested", nv), SDICT_OK);

    void *buf = NULL;
    size_t n = 0;
    sdict_error err;
    assert_int_equal(sdict_save_buffer(root, NULL, &buf, &n, &err), SDICT_OK);
    sdict_doc *e = NULL;
    assert_int_equal(sdict_load_buffer(buf, n, "round trip", NULL, &e, &err), SDICT_OK);
    sdict_free_buffer(buf);
    const sdict_value *r = sdict_doc_root(e);
    assert_int_equal(sdict_value_pytype(sdict_dict_get(r, "milestones")), SDICT_PYTYPE_COUNTER);
    int64_t ix;
    assert_string_equal(sdict_device_get(sdict_dict_get(r, "dev"), &ix), "cuda");
    assert_int_equal(ix, 0);
    double re, im;
    assert_true(sdict_complex_get(sdict_dict_get(r, "z"), &re, &im));
    assert_true(re == 0 && signbit(re) && isinf(im));
    assert_int_equal(sdict_qscheme_value_get(sdict_dict_get(r, "q")), SDICT_PER_TENSOR_AFFINE);
    assert_int_equal(sdict_layout_value_get(sdict_dict_get(r, "l")), SDICT_LAYOUT_SPARSE_CSR);
    const sdict_value *p2 = sdict_dict_get(r, "param");
    assert_true(sdict_value_tensor(p2)->is_parameter && sdict_value_tensor(p2)->requires_grad);
    assert_string_equal(sdict_str_get(sdict_dict_get(sdict_tensor_attrs(p2), "note"), NULL), "tied");
    assert_true(sdict_value_tensor(sdict_dict_get(r, "conj"))->is_conj);
    float cout[4];
    assert_int_equal(sdict_tensor_copy_to(sdict_value_tensor(sdict_dict_get(r, "conj")),
                                          SDICT_COMPLEX64, cout, sizeof cout, NULL), SDICT_OK);
    assert_true(cout[1] == -2.0f && cout[3] == -4.0f);
    const sdict_value *q2 = sdict_dict_get(r, "q4");
    assert_true(sdict_value_quantizer(q2)->scale == 0.25);
    assert_int_equal(sdict_value_tensor(q2)->dtype, SDICT_QUINT4X2);
    assert_memory_equal(sdict_tensor_data(sdict_value_tensor(q2)), q4, 2);
    const sdict_sparse *sp2 = sdict_value_sparse(sdict_dict_get(r, "coo"));
    assert_non_null(sp2);
    assert_int_equal(sp2->is_coalesced, -1);
    const sdict_nested *ns2 = sdict_value_nested(sdict_dict_get(r, "nested"));
    assert_non_null(ns2);
    assert_int_equal(sdict_value_tensor(ns2->buffer)->shape[0], 2);
    sdict_doc_free(e);
    sdict_doc_free(d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_objects),
        cmocka_unit_test(test_quantized),
        cmocka_unit_test(test_sparse),
        cmocka_unit_test(test_nested),
        cmocka_unit_test(test_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
