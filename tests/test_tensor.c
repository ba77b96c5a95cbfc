/*
 test_tensor.c - tensor geometry checks, strided copies and dtype conversion.

 float16/bfloat16 rounding is checked against an oracle written here from the definition:
 every finite value of the format is enumerated (bfloat16 decoded as the top half of a
 float32, float16 from its exponent/fraction formula), and the expected result for x is the
 nearest table entry, ties going to the even bit pattern, with infinity standing for the
 next power of two above the largest finite value (IEEE 754's overflow rule).
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/internal.h"

static sdict_storage *storage_of(const void *data, size_t n) {
    sdict_storage *s;
    assert_int_equal(sdict_storage_new(n, &s, NULL), SDICT_OK);
    if (n)
        memcpy(sdict_storage_data(s), data, n);
    return s;
}

/*==================================================================================================
 Geometry
==================================================================================================*/

static void test_init_and_strides(void **state) {
    (void)state;
    sdict_storage *s;
    assert_int_equal(sdict_storage_new(2 * 3 * 4 * 4, &s, NULL), SDICT_OK);
    sdict_tensor t;
    int64_t shape[3] = {2, 3, 4}, stride[3];
    assert_int_equal(sdict_tensor_init(&t, SDICT_FLOAT32, 3, shape, stride, s, NULL), SDICT_OK);
    assert_ptr_equal(t.shape, shape); /* t borrows both arrays */
    assert_ptr_equal(t.stride, stride);
    assert_int_equal(t.stride[0], 12);
    assert_int_equal(t.stride[1], 4);
    assert_int_equal(t.stride[2], 1);
    assert_int_equal(t.storage_offset, 0);
    assert_int_equal(sdict_tensor_numel(&t), 24);
    assert_int_equal(sdict_tensor_nbytes(&t), 96);
    assert_true(sdict_tensor_is_contiguous(&t));
    assert_ptr_equal(sdict_tensor_data(&t), sdict_storage_data(s));
    t.storage_offset = 1;
    assert_ptr_equal(sdict_tensor_data(&t), (char *)sdict_storage_data(s) + 4);
    assert_int_equal(sdict_tensor_check(&t, NULL), SDICT_E_STORAGE); /* one element past */

    /* torch.empty(2, 0, 3).stride() == (3, 3, 1): sizes of 0 count as 1 */
    int64_t z[3] = {2, 0, 3};
    assert_int_equal(sdict_tensor_init(&t, SDICT_FLOAT32, 3, z, stride, NULL, NULL), SDICT_OK);
    assert_int_equal(t.stride[0], 3);
    assert_int_equal(t.stride[1], 3);
    assert_int_equal(t.stride[2], 1);
    assert_int_equal(sdict_tensor_numel(&t), 0);
    assert_int_equal(sdict_tensor_nbytes(&t), 0);
    assert_true(sdict_tensor_is_contiguous(&t));
    assert_null(sdict_tensor_data(&t));

    /* scalar */
    assert_int_equal(sdict_tensor_init(&t, SDICT_INT64, 0, NULL, NULL, s, NULL), SDICT_OK);
    assert_int_equal(sdict_tensor_numel(&t), 1);
    assert_int_equal(sdict_tensor_nbytes(&t), 8);
    assert_true(sdict_tensor_is_contiguous(&t));

    /* errors */
    sdict_error err;
    int64_t neg[1] = {-1};
    assert_int_equal(sdict_tensor_init(&t, SDICT_FLOAT32, 1, neg, stride, NULL, &err),
                     SDICT_E_INVALID_ARG);
    assert_int_equal(sdict_tensor_init(&t, SDICT_FLOAT32, -1, shape, stride, NULL, &err),
                     SDICT_E_INVALID_ARG);
    assert_int_equal(sdict_tensor_init(&t, SDICT_FLOAT32, 3, NULL, stride, NULL, &err),
                     SDICT_E_INVALID_ARG);
    assert_int_equal(sdict_tensor_init(&t, SDICT_FLOAT32, 3, shape, NULL, NULL, &err),
                     SDICT_E_INVALID_ARG);
    int64_t big[2] = {INT64_C(1) << 32, INT64_C(1) << 32};
    assert_int_equal(sdict_tensor_init(&t, SDICT_FLOAT32, 2, big, stride, NULL, &err),
                     SDICT_E_SHAPE);
    int64_t too_big[1] = {100};
    assert_int_equal(sdict_tensor_init(&t, SDICT_FLOAT32, 1, too_big, stride, s, &err),
                     SDICT_E_STORAGE);
    assert_int_equal(err.code, SDICT_E_STORAGE);
    assert_int_equal(sdict_tensor_init(&t, SDICT_DTYPE_COUNT, 1, too_big, stride, NULL, &err),
                     SDICT_E_DTYPE);
    sdict_storage_release(s);
}

static void test_is_contiguous(void **state) {
    (void)state;
    sdict_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = SDICT_FLOAT32;
    t.ndim = 3;
    int64_t sh[3] = {3, 1, 4}, st[3] = {4, 99, 1};
    t.shape = sh;
    t.stride = st;
    assert_true(sdict_tensor_is_contiguous(&t)); /* the size-1 stride is ignored */
    st[0] = 5;
    assert_false(sdict_tensor_is_contiguous(&t));
    sh[0] = 0;
    assert_true(sdict_tensor_is_contiguous(&t)); /* empty tensors are contiguous */
    t.ndim = 2;
    sh[0] = 4;
    sh[1] = 3;
    st[0] = 1;
    st[1] = 4; /* a transpose */
    assert_false(sdict_tensor_is_contiguous(&t));
    st[0] = 0; /* expanded */
    st[1] = 1;
    assert_false(sdict_tensor_is_contiguous(&t));
}

static void test_check_cases(void **state) {
    (void)state;
    sdict_storage *s;
    assert_int_equal(sdict_storage_new(40, &s, NULL), SDICT_OK); /* ten float32 */
    sdict_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = SDICT_FLOAT32;
    t.storage = s;
    int64_t sh[2], st[2];
    t.shape = sh;
    t.stride = st;
    t.ndim = 2;
    sh[0] = 2;
    sh[1] = 5;
    st[0] = 5;
    st[1] = 1;
    sdict_error err;
    assert_int_equal(sdict_tensor_check(&t, &err), SDICT_OK);
    /* extent: offset + (2-1)*5 + (5-1)*1 + 1 = offset + 10 elements */
    t.storage_offset = 1;
    assert_int_equal(sdict_tensor_check(&t, &err), SDICT_E_STORAGE);
    assert_non_null(strstr(err.message, "40"));
    t.storage_offset = 0;
    st[0] = 6;
    assert_int_equal(sdict_tensor_check(&t, &err), SDICT_E_STORAGE);
    st[0] = 0; /* expanded rows: extent 5 elements */
    t.storage_offset = 5;
    assert_int_equal(sdict_tensor_check(&t, &err), SDICT_OK);
    t.storage_offset = 6;
    assert_int_equal(sdict_tensor_check(&t, &err), SDICT_E_STORAGE);
    t.storage_offset = 0;

    st[1] = -1;
    assert_int_equal(sdict_tensor_check(&t, &err), SDICT_E_SHAPE);
    st[1] = 1;
    sh[0] = -2;
    assert_int_equal(sdict_tensor_check(&t, &err), SDICT_E_SHAPE);
    sh[0] = 2;
    t.storage_offset = -1;
    assert_int_equal(sdict_tensor_check(&t, &err), SDICT_E_SHAPE);
    t.storage_offset = 0;
    t.ndim = -1;
    assert_int_equal(sdict_tensor_check(&t, &err), SDICT_E_SHAPE);
    t.ndim = 2;
    t.stride = NULL;
    assert_int_equal(sdict_tensor_check(&t, &err), SDICT_E_INVALID_ARG);
    assert_int_equal(sdict_tensor_numel(&t), -1);
    t.stride = st;
    t.ndim = 2;
    t.dtype = (sdict_dtype)99;
    assert_int_equal(sdict_tensor_check(&t, &err), SDICT_E_DTYPE);
    t.dtype = SDICT_FLOAT32;

    /* overflow of the extent computation */
    st[0] = INT64_MAX;
    assert_int_equal(sdict_tensor_check(&t, &err), SDICT_E_SHAPE);
    st[0] = INT64_MAX / 2;
    t.storage_offset = INT64_MAX / 2 + 2; /* (1 * stride) + offset overflows */
    assert_int_equal(sdict_tensor_check(&t, &err), SDICT_E_SHAPE);
    st[0] = 1;
    t.storage_offset = INT64_MAX / 8; /* extent in bytes fits in 64 bits: merely too big */
    assert_int_equal(sdict_tensor_check(&t, &err), SDICT_E_STORAGE);
    t.storage_offset = INT64_MAX - 20; /* fits in int64, but not once multiplied by 4 bytes */
    assert_int_equal(sdict_tensor_check(&t, &err), SDICT_E_SHAPE);
    t.storage_offset = 0;
    /* numel overflow */
    sh[0] = INT64_C(1) << 40;
    sh[1] = INT64_C(1) << 40;
    assert_int_equal(sdict_tensor_check(&t, &err), SDICT_E_SHAPE);
    /* element count fits int64 but bytes do not */
    t.ndim = 1;
    sh[0] = INT64_C(1) << 62;
    st[0] = 0;
    assert_int_equal(sdict_tensor_check(&t, &err), SDICT_E_SHAPE);
    /* empty tensors never touch the storage, whatever their strides */
    t.ndim = 2;
    sh[0] = 0;
    sh[1] = 7;
    st[0] = INT64_MAX;
    st[1] = INT64_MAX;
    assert_int_equal(sdict_tensor_check(&t, &err), SDICT_OK);
    /* meta tensors (no storage) are checked for shape only */
    t.storage = NULL;
    sh[0] = 1000;
    st[0] = 7;
    st[1] = 1;
    assert_int_equal(sdict_tensor_check(&t, &err), SDICT_OK);
    assert_int_equal(sdict_tensor_check(NULL, &err), SDICT_E_INVALID_ARG);
    sdict_storage_release(s);
}

/*==================================================================================================
 Strided copies
==================================================================================================*/

/* A float64 storage holding 0, 1, 2, ... n-1. */
static sdict_storage *iota_f64(size_t n) {
    sdict_storage *s;
    assert_int_equal(sdict_storage_new(n * 8, &s, NULL), SDICT_OK);
    double *d = sdict_storage_data(s);
    for (size_t i = 0; i < n; i++)
        d[i] = (double)i;
    return s;
}

/* Expected C-order values of a strided view over iota: the storage index itself. */
static void expect_view(const sdict_tensor *t, const double *got) {
    int64_t n = sdict_tensor_numel(t);
    int64_t *idx = calloc(t->ndim ? (size_t)t->ndim : 1, sizeof *idx);
    assert_non_null(idx);
    for (int64_t e = 0; e < n; e++) {
        int64_t rem = e, pos = t->storage_offset;
        for (int k = t->ndim - 1; k >= 0; k--) {
            idx[k] = rem % t->shape[k];
            rem /= t->shape[k];
        }
        for (int k = 0; k < t->ndim; k++)
            pos += idx[k] * t->stride[k];
        assert_true(got[e] == (double)pos);
    }
    free(idx);
}

static void test_copy_strided(void **state) {
    (void)state;
    sdict_storage *s = iota_f64(200);
    sdict_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = SDICT_FLOAT64;
    t.storage = s;
    double out[256];
    int32_t out_i[256];
    struct {
        int ndim;
        int64_t shape[4], stride[4], off;
    } cases[] = {
        {2, {3, 4}, {4, 1}, 0},          /* contiguous */
        {2, {4, 3}, {1, 4}, 0},          /* transpose of (3,4) */
        {2, {3, 4}, {0, 1}, 5},          /* expand(3, 4) of a row at offset 5 */
        {2, {3, 4}, {1, 0}, 2},          /* expanded columns */
        {3, {2, 3, 4}, {1, 2, 6}, 0},    /* permute(2, 1, 0) of a (4,3,2) */
        {3, {2, 3, 4}, {40, 10, 2}, 7},  /* every other element of a slice */
        {0, {0}, {0}, 13},               /* 0-dim view at offset 13 */
        {1, {5}, {0}, 9},                /* stride-0 vector */
        {4, {2, 1, 3, 2}, {50, 99, 1, 3}, 1},
        {2, {0, 4}, {4, 1}, 0},          /* empty */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        t.ndim = cases[c].ndim;
        t.shape = cases[c].shape;
        t.stride = cases[c].stride;
        t.storage_offset = cases[c].off;
        int64_t n = sdict_tensor_numel(&t);
        memset(out, 0xFF, sizeof out);
        assert_int_equal(sdict_tensor_copy_to(&t, SDICT_FLOAT64, out, (size_t)n * 8, NULL),
                         SDICT_OK);
        expect_view(&t, out);
        /* with conversion to int32 along the same path */
        assert_int_equal(sdict_tensor_copy_to(&t, SDICT_INT32, out_i, (size_t)n * 4, NULL),
                         SDICT_OK);
        for (int64_t e = 0; e < n; e++)
            out[e] = out_i[e];
        expect_view(&t, out);
        if (n > 0) {
            sdict_error err;
            assert_int_equal(sdict_tensor_copy_to(&t, SDICT_FLOAT64, out, (size_t)n * 8 - 1, &err),
                             SDICT_E_INVALID_ARG);
        }
    }
    /* a view reaching past the storage is refused before copying */
    int64_t sh[1] = {10}, st[1] = {25};
    t.ndim = 1;
    t.shape = sh;
    t.stride = st;
    t.storage_offset = 0;
    assert_int_equal(sdict_tensor_copy_to(&t, SDICT_FLOAT64, out, sizeof out, NULL),
                     SDICT_E_STORAGE);
    /* meta tensors have nothing to copy */
    t.storage = NULL;
    st[0] = 1;
    assert_int_equal(sdict_tensor_copy_to(&t, SDICT_FLOAT64, out, sizeof out, NULL),
                     SDICT_E_STORAGE);
    sdict_storage_release(s);
}

static void test_copy_same_dtype_odd_types(void **state) {
    (void)state;
    /* complex64 transposed: pairs move together */
    float cbuf[12];
    for (int i = 0; i < 12; i++)
        cbuf[i] = (float)i;
    sdict_storage *s = storage_of(cbuf, sizeof cbuf);
    sdict_tensor t;
    int64_t shape[2] = {2, 3}, stride[2];
    assert_int_equal(sdict_tensor_init(&t, SDICT_COMPLEX64, 2, shape, stride, s, NULL), SDICT_OK);
    shape[0] = 3;
    shape[1] = 2;
    stride[0] = 1;
    stride[1] = 3;
    float out[12];
    assert_int_equal(sdict_tensor_copy_to(&t, SDICT_COMPLEX64, out, sizeof out, NULL), SDICT_OK);
    /* element (i, j) is complex number i + 3j, i.e. floats 2(i+3j), 2(i+3j)+1 */
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++) {
            assert_true(out[2 * (i * 2 + j)] == (float)(2 * (i + 3 * j)));
            assert_true(out[2 * (i * 2 + j) + 1] == (float)(2 * (i + 3 * j) + 1));
        }
    /* complex to real keeps the real part; complex widens part by part */
    assert_int_equal(sdict_tensor_copy_to(&t, SDICT_FLOAT32, out, sizeof out, NULL), SDICT_OK);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++)
            assert_true(out[i * 2 + j] == (float)(2 * (i + 3 * j)));
    double wide[12];
    assert_int_equal(sdict_tensor_copy_to(&t, SDICT_COMPLEX128, wide, sizeof wide, NULL),
                     SDICT_OK);
    assert_true(wide[2] == 6.0 && wide[3] == 7.0); /* element (0, 1) */
    /* the conjugate bit negates imaginary parts; the negative bit whole values */
    t.is_conj = true;
    assert_int_equal(sdict_tensor_copy_to(&t, SDICT_COMPLEX64, out, sizeof out, NULL), SDICT_OK);
    assert_true(out[2] == 6.0f && out[3] == -7.0f);
    t.is_neg = true;
    assert_int_equal(sdict_tensor_copy_to(&t, SDICT_COMPLEX64, out, sizeof out, NULL), SDICT_OK);
    assert_true(out[2] == -6.0f && out[3] == 7.0f);
    sdict_error err;
    sdict_storage_release(s);

    uint8_t f8[4] = {0x38, 0x40, 0x7F, 0x01};
    s = storage_of(f8, 4);
    int64_t n4[1] = {4};
    assert_int_equal(sdict_tensor_init(&t, SDICT_FLOAT8_E4M3FN, 1, n4, stride, s, NULL), SDICT_OK);
    n4[0] = 2;
    stride[0] = 2;
    uint8_t o8[2];
    assert_int_equal(sdict_tensor_copy_to(&t, SDICT_FLOAT8_E4M3FN, o8, 2, NULL), SDICT_OK);
    assert_int_equal(o8[0], 0x38);
    assert_int_equal(o8[1], 0x7F);
    /* float8 decodes exactly into wider types (0x38 = 1.0, 0x7F = NaN in e4m3fn) */
    assert_int_equal(sdict_tensor_copy_to(&t, SDICT_FLOAT32, out, sizeof out, &err), SDICT_OK);
    assert_true(out[0] == 1.0f && isnan(out[1]));
    /* but nothing converts to a float8 type or between float8 types */
    assert_int_equal(sdict_tensor_copy_to(&t, SDICT_FLOAT8_E5M2, out, sizeof out, &err),
                     SDICT_E_DTYPE);
    t.is_neg = true;
    assert_int_equal(sdict_tensor_copy_to(&t, SDICT_FLOAT8_E4M3FN, o8, 2, &err), SDICT_E_DTYPE);
    sdict_storage_release(s);

    /* packed quint4x2: 5 elements in 3 bytes, copied raw, and only when contiguous */
    uint8_t q4[3] = {0x10, 0x32, 0x04};
    s = storage_of(q4, 3);
    int64_t n5[1] = {5};
    assert_int_equal(sdict_tensor_init(&t, SDICT_QUINT4X2, 1, n5, stride, s, NULL), SDICT_OK);
    assert_int_equal(sdict_tensor_nbytes(&t), 3);
    uint8_t oq[3];
    assert_int_equal(sdict_tensor_copy_to(&t, SDICT_QUINT4X2, oq, 3, NULL), SDICT_OK);
    assert_memory_equal(oq, q4, 3);
    assert_int_equal(sdict_tensor_copy_to(&t, SDICT_UINT8, oq, 3, &err), SDICT_E_DTYPE);
    n5[0] = 7; /* needs 4 bytes */
    assert_int_equal(sdict_tensor_check(&t, &err), SDICT_E_STORAGE);
    n5[0] = 2;
    t.storage_offset = 1; /* half a byte in */
    assert_int_equal(sdict_tensor_check(&t, &err), SDICT_E_SHAPE);
    t.storage_offset = 2;
    assert_int_equal(sdict_tensor_check(&t, &err), SDICT_OK);
    assert_ptr_equal(sdict_tensor_data(&t), (uint8_t *)sdict_storage_data(s) + 1);
    sdict_storage_release(s);
}

/*==================================================================================================
 Any rank
==================================================================================================*/

/* Rank r: sizes of 1 with 2, 3 and 4 spread over the first, middle and last dimensions (24
   elements; 1 for rank 0; for rank 17 the middle one is dimension 8). */
static void high_rank_shape(int32_t r, int64_t *shape) {
    for (int32_t k = 0; k < r; k++)
        shape[k] = 1;
    if (r >= 3) {
        shape[0] = 2;
        shape[r / 2] = 3;
        shape[r - 1] = 4;
    }
}

/* init, check, numel, contiguity, copies (plain, converted, of a permuted view) and doc values
   at ranks torch saves but older statedict refused (its cap was 16). */
static void test_high_rank(void **state) {
    (void)state;
    static const int32_t ranks[] = {0, 17, 100, 1000};
    for (size_t c = 0; c < sizeof ranks / sizeof ranks[0]; c++) {
        const int32_t r = ranks[c];
        const size_t n = r ? (size_t)r : 1;
        int64_t *shape = calloc(n, sizeof *shape), *stride = calloc(n, sizeof *stride);
        int64_t *rshape = calloc(n, sizeof *rshape), *rstride = calloc(n, sizeof *rstride);
        assert_true(shape && stride && rshape && rstride);
        high_rank_shape(r, shape);
        const int64_t numel = r ? 24 : 1;
        sdict_storage *s = iota_f64((size_t)numel);
        sdict_tensor t;
        sdict_error err;
        assert_int_equal(sdict_tensor_init(&t, SDICT_FLOAT64, r, r ? shape : NULL,
                                           r ? stride : NULL, s, &err), SDICT_OK);
        assert_int_equal(t.ndim, r);
        assert_int_equal(sdict_tensor_check(&t, &err), SDICT_OK);
        assert_int_equal(sdict_tensor_numel(&t), numel);
        assert_int_equal(sdict_tensor_nbytes(&t), (size_t)numel * 8);
        assert_true(sdict_tensor_is_contiguous(&t));
        /* torch's contiguous strides: max(size, 1) products from the right */
        int64_t want = 1;
        for (int32_t k = r - 1; k >= 0; k--) {
            assert_int_equal(stride[k], want);
            want *= shape[k];
        }
        double out[24];
        int32_t out_i[24];
        assert_int_equal(sdict_tensor_copy_to(&t, SDICT_FLOAT64, out, sizeof out, NULL), SDICT_OK);
        for (int64_t e = 0; e < numel; e++)
            assert_true(out[e] == (double)e);

        /* the reversed dimensions: a non-contiguous view of the same storage */
        for (int32_t k = 0; k < r; k++) {
            rshape[k] = shape[r - 1 - k];
            rstride[k] = stride[r - 1 - k];
        }
        sdict_tensor v = t;
        v.shape = rshape;
        v.stride = rstride;
        assert_int_equal(sdict_tensor_check(&v, &err), SDICT_OK);
        assert_int_equal(sdict_tensor_is_contiguous(&v), r < 3);
        assert_int_equal(sdict_tensor_copy_to(&v, SDICT_FLOAT64, out, sizeof out, NULL), SDICT_OK);
        expect_view(&v, out);
        assert_int_equal(sdict_tensor_copy_to(&v, SDICT_INT32, out_i, sizeof out_i, NULL), SDICT_OK);
        for (int64_t e = 0; e < numel; e++)
            out[e] = out_i[e];
        expect_view(&v, out);

        /* a value copies the dimensions: the caller's arrays may change or go */
        sdict_doc *doc = NULL;
        assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
        sdict_value *val = NULL;
        assert_int_equal(sdict_tensor_new(doc, &v, &val, &err), SDICT_OK);
        const sdict_tensor *held = sdict_value_tensor(val);
        assert_int_equal(held->ndim, r);
        if (r) {
            assert_true(held->shape != rshape && held->stride != rstride);
            assert_memory_equal(held->shape, rshape, n * sizeof *rshape);
            assert_memory_equal(held->stride, rstride, n * sizeof *rstride);
            rshape[r - 1] = 99;
            rstride[r - 1] = 99;
            assert_int_equal(held->shape[r - 1], shape[0]);
            assert_int_equal(held->stride[r - 1], stride[0]);
        } else {
            assert_null(held->shape);
            assert_null(held->stride);
        }
        assert_int_equal(sdict_tensor_copy_to(held, SDICT_FLOAT64, out, sizeof out, NULL), SDICT_OK);
        expect_view(held, out);

        if (r) {
            /* errors name the dimension, however deep */
            stride[r - 1] = -1;
            assert_int_equal(sdict_tensor_check(&t, &err), SDICT_E_SHAPE);
            char dim[32];
            snprintf(dim, sizeof dim, "dimension %d", (int)(r - 1));
            assert_non_null(strstr(err.message, dim));
            stride[r - 1] = 1;
            /* one element past the storage, through the outermost stride */
            stride[0] += 1;
            assert_int_equal(sdict_tensor_check(&t, &err), SDICT_E_STORAGE);
            assert_int_equal(sdict_tensor_new(doc, &t, &val, &err), SDICT_E_STORAGE);
            stride[0] -= 1;
            /* meta: shape only */
            t.storage = NULL;
            assert_int_equal(sdict_tensor_check(&t, &err), SDICT_OK);
            t.storage = s;
        }
        if (r >= 100) {
            /* 63 sizes of 2 overflow the element count, whatever the rank */
            for (int32_t k = 0; k < 63; k++)
                shape[k * (r / 63)] = 2;
            assert_int_equal(sdict_tensor_check(&t, &err), SDICT_E_SHAPE);
            assert_int_equal(sdict_tensor_numel(&t), -1);
            assert_int_equal(sdict_tensor_init(&t, SDICT_FLOAT64, r, shape, stride, NULL, &err),
                             SDICT_E_SHAPE);
        }
        sdict_doc_free(doc);
        sdict_storage_release(s);
        free(shape);
        free(stride);
        free(rshape);
        free(rstride);
    }
}

/* A copy walks only the dimensions of size > 1: a million size-1 dimensions around three
   sizes of 2 cost one pass over the dimensions, not one per element (rank 2^20, 8 elements). */
static void test_copy_huge_rank(void **state) {
    (void)state;
    const int32_t r = 1 << 20;
    int64_t *shape = malloc((size_t)r * sizeof *shape), *stride = malloc((size_t)r * sizeof *stride);
    assert_true(shape && stride);
    for (int32_t k = 0; k < r; k++)
        shape[k] = 1, stride[k] = 1000;
    shape[0] = shape[r / 2] = shape[r - 1] = 2;
    stride[0] = 1, stride[r / 2] = 2, stride[r - 1] = 4; /* reversed: Fortran order */
    sdict_storage *s = iota_f64(8);
    sdict_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = SDICT_FLOAT64;
    t.ndim = r;
    t.shape = shape;
    t.stride = stride;
    t.storage = s;
    assert_int_equal(sdict_tensor_check(&t, NULL), SDICT_OK); /* size-1 strides move nothing */
    assert_false(sdict_tensor_is_contiguous(&t));
    double out[8];
    assert_int_equal(sdict_tensor_copy_to(&t, SDICT_FLOAT64, out, sizeof out, NULL), SDICT_OK);
    for (int i = 0; i < 8; i++) /* element (a, b, c) is a + 2b + 4c */
        assert_true(out[i] == (double)((i >> 2 & 1) + 2 * (i >> 1 & 1) + 4 * (i & 1)));
    sdict_storage_release(s);
    free(shape);
    free(stride);
}

/*==================================================================================================
 Scalar conversions
==================================================================================================*/

/* Converts one element of type `from` (bytes at src) to `to`, into dst. */
static void conv1(sdict_dtype from, const void *src, sdict_dtype to, void *dst) {
    sdict_storage *s = storage_of(src, sdict_dtype_size(from));
    sdict_tensor t;
    assert_int_equal(sdict_tensor_init(&t, from, 0, NULL, NULL, s, NULL), SDICT_OK);
    assert_int_equal(sdict_tensor_copy_to(&t, to, dst, sdict_dtype_size(to), NULL), SDICT_OK);
    sdict_storage_release(s);
}

static int64_t to_i64(sdict_dtype from, double d) {
    int64_t r;
    conv1(from, &d, SDICT_INT64, &r);
    return r;
}

static void test_int_float_conversions(void **state) {
    (void)state;
    /* floats truncate toward zero */
    assert_int_equal(to_i64(SDICT_FLOAT64, 2.7), 2);
    assert_int_equal(to_i64(SDICT_FLOAT64, -2.7), -2);
    assert_int_equal(to_i64(SDICT_FLOAT64, -0.5), 0);
    assert_int_equal(to_i64(SDICT_FLOAT64, 1e15 + 0.5), 1000000000000000);
    float f = -7.9f;
    int8_t i8;
    conv1(SDICT_FLOAT32, &f, SDICT_INT8, &i8);
    assert_int_equal(i8, -7);
    /* narrower ints wrap modulo 2^bits, as torch's casts do */
    double d = 300.5;
    conv1(SDICT_FLOAT64, &d, SDICT_INT8, &i8);
    assert_int_equal(i8, 300 - 256);
    d = -1.0;
    uint8_t u8;
    conv1(SDICT_FLOAT64, &d, SDICT_UINT8, &u8);
    assert_int_equal(u8, 255);
    int64_t m1 = -1;
    uint64_t u64;
    conv1(SDICT_INT64, &m1, SDICT_UINT64, &u64);
    assert_true(u64 == UINT64_MAX);
    int32_t i32 = 70000;
    int16_t i16;
    conv1(SDICT_INT32, &i32, SDICT_INT16, &i16);
    assert_int_equal(i16, 70000 - 65536);
    uint16_t u16 = 65535;
    conv1(SDICT_UINT16, &u16, SDICT_INT32, &i32);
    assert_int_equal(i32, 65535);
    u64 = UINT64_MAX;
    double back;
    conv1(SDICT_UINT64, &u64, SDICT_FLOAT64, &back);
    assert_true(back == 18446744073709551615.0);
    int64_t i64 = INT64_MIN;
    conv1(SDICT_INT64, &i64, SDICT_FLOAT64, &back);
    assert_true(back == -9223372036854775808.0);
    /* int64 -> float32 rounds once: 2^40 + 2^16 + 1 is just above a float32 midpoint */
    i64 = (INT64_C(1) << 40) + (INT64_C(1) << 16) + 1;
    float fl;
    conv1(SDICT_INT64, &i64, SDICT_FLOAT32, &fl);
    assert_true(fl == (float)(ldexp(1, 40) + ldexp(1, 17)));
    /* NaN and out-of-range floats do not trip undefined behaviour; they give INT64_MIN as
       torch 1.13 on x86 does for int64 (checked with Tensor.to(torch.int64)) */
    d = NAN;
    assert_true(to_i64(SDICT_FLOAT64, d) == INT64_MIN);
    assert_true(to_i64(SDICT_FLOAT64, 1e300) == INT64_MIN);
    assert_true(to_i64(SDICT_FLOAT64, -1e300) == INT64_MIN);
    assert_true(to_i64(SDICT_FLOAT64, 1e19) == INT64_MIN);
    assert_true(to_i64(SDICT_FLOAT64, -9223372036854775808.0) == INT64_MIN);
    assert_true(to_i64(SDICT_FLOAT64, 9223372036854774784.0) == INT64_C(9223372036854774784));
    /* uint8 from float64 wraps the int64 value (torch: 2**32+300 -> 44, -(2**32+300) -> 212) */
    d = 4294967296.0 + 300;
    conv1(SDICT_FLOAT64, &d, SDICT_UINT8, &u8);
    assert_int_equal(u8, 44);
    d = -d;
    conv1(SDICT_FLOAT64, &d, SDICT_UINT8, &u8);
    assert_int_equal(u8, 212);
    d = 1e300;
    conv1(SDICT_FLOAT64, &d, SDICT_UINT64, &u64);
    assert_true(u64 == UINT64_C(1) << 63);
    d = 1.5e19; /* above INT64_MAX, within uint64 */
    conv1(SDICT_FLOAT64, &d, SDICT_UINT64, &u64);
    assert_true(u64 == UINT64_C(15000000000000000000));
    /* bool is != 0 from every type, and reads back as 0/1 */
    double bools_in[] = {0.0, -0.0, 0.1, -3.0, NAN, INFINITY};
    bool bools_want[] = {false, false, true, true, true, true};
    for (size_t k = 0; k < 6; k++) {
        uint8_t b;
        conv1(SDICT_FLOAT64, &bools_in[k], SDICT_BOOL, &b);
        assert_int_equal(b, bools_want[k]);
    }
    int16_t small = 256; /* low byte 0: still true, bool is not truncation */
    uint8_t b;
    conv1(SDICT_INT16, &small, SDICT_BOOL, &b);
    assert_int_equal(b, 1);
    uint8_t b2 = 7; /* non-canonical bool byte reads as true */
    conv1(SDICT_BOOL, &b2, SDICT_FLOAT32, &fl);
    assert_true(fl == 1.0f);
    conv1(SDICT_BOOL, &b2, SDICT_INT64, &i64);
    assert_int_equal(i64, 1);
    /* float64 -> float32 -> float64 */
    d = 0.1;
    conv1(SDICT_FLOAT64, &d, SDICT_FLOAT32, &fl);
    assert_true(fl == 0.1f);
    conv1(SDICT_FLOAT32, &fl, SDICT_FLOAT64, &back);
    assert_true(back == (double)0.1f);
}

/*==================================================================================================
 float16 / bfloat16 oracle
==================================================================================================*/

#define F16_FINITE 0x7C00 /* positive finite patterns 0x0000..0x7BFF */
#define BF16_FINITE 0x7F80

static double f16_value(unsigned bits) { /* positive patterns, from the IEEE definition */
    unsigned e = bits >> 10, m = bits & 0x3FF;
    if (e == 0)
        return m * pow(2.0, -24);
    return (1024 + m) * pow(2.0, (double)e - 25);
}

static double bf16_value(unsigned bits) { /* bfloat16 is the upper half of a float32 */
    uint32_t u = (uint32_t)bits << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static double table_f16[F16_FINITE + 1], table_bf16[BF16_FINITE + 1];

static void build_tables(void) {
    for (unsigned b = 0; b < F16_FINITE; b++)
        table_f16[b] = f16_value(b);
    table_f16[F16_FINITE] = 65536.0; /* overflow threshold stand-in: 2^16 */
    for (unsigned b = 0; b < BF16_FINITE; b++)
        table_bf16[b] = bf16_value(b);
    table_bf16[BF16_FINITE] = ldexp(1.0, 128);
    for (unsigned b = 1; b <= F16_FINITE; b++)
        assert_true(table_f16[b] > table_f16[b - 1]);
    for (unsigned b = 1; b <= BF16_FINITE; b++)
        assert_true(table_bf16[b] > table_bf16[b - 1]);
}

/* Expected bits for x (finite) by nearest search in the table; ties to the even pattern. */
static uint16_t oracle(const double *table, unsigned count, unsigned sign_bit, double x) {
    uint16_t sign = signbit(x) ? (uint16_t)sign_bit : 0;
    double a = fabs(x);
    if (a >= table[count])
        return sign | (uint16_t)count; /* infinity */
    unsigned lo = 0, hi = count; /* table[lo] <= a < table[hi] */
    while (hi - lo > 1) {
        unsigned mid = (lo + hi) / 2;
        if (table[mid] <= a)
            lo = mid;
        else
            hi = mid;
    }
    double midpoint = (table[lo] + table[hi]) / 2; /* exact: few significant bits */
    unsigned pick = a < midpoint ? lo : a > midpoint ? hi : (lo % 2 == 0 ? lo : hi);
    return sign | (uint16_t)pick;
}

static void check_small(sdict_dtype to, const double *table, unsigned count, unsigned sign_bit,
                        const double *xs, size_t n) {
    /* converted as one float64 tensor and, where exact in float32, as a float32 tensor */
    sdict_storage *s64 = storage_of(xs, n * 8);
    float *xf = malloc(n * 4);
    bool *fexact = malloc(n);
    for (size_t i = 0; i < n; i++) {
        xf[i] = (float)xs[i];
        fexact[i] = (double)xf[i] == xs[i];
    }
    sdict_storage *s32 = storage_of(xf, n * 4);
    uint16_t *o64 = malloc(n * 2), *o32 = malloc(n * 2);
    int64_t shape[1] = {(int64_t)n}, stride[1];
    sdict_tensor t;
    assert_int_equal(sdict_tensor_init(&t, SDICT_FLOAT64, 1, shape, stride, s64, NULL), SDICT_OK);
    assert_int_equal(sdict_tensor_copy_to(&t, to, o64, n * 2, NULL), SDICT_OK);
    assert_int_equal(sdict_tensor_init(&t, SDICT_FLOAT32, 1, shape, stride, s32, NULL), SDICT_OK);
    assert_int_equal(sdict_tensor_copy_to(&t, to, o32, n * 2, NULL), SDICT_OK);
    for (size_t i = 0; i < n; i++) {
        uint16_t want = oracle(table, count, sign_bit, xs[i]);
        if (o64[i] != want)
            fail_msg("%s(%.17g): got 0x%04x want 0x%04x", sdict_dtype_name(to), xs[i], o64[i],
                     want);
        if (fexact[i] && o32[i] != want)
            fail_msg("%s(float %.9g): got 0x%04x want 0x%04x", sdict_dtype_name(to), xs[i],
                     o32[i], want);
    }
    free(xf);
    free(fexact);
    free(o64);
    free(o32);
    sdict_storage_release(s64);
    sdict_storage_release(s32);
}

/* Inputs: every table value, every midpoint, midpoints nudged either way, signed, plus
   values beyond the range and pseudo-random doubles across it. */
static double *make_inputs(const double *table, unsigned count, size_t *n_out) {
    size_t cap = (size_t)count * 8 + 20000, n = 0;
    double *xs = malloc(cap * sizeof *xs);
    for (unsigned b = 0; b < count; b++) {
        double mid = (table[b] + table[b + 1]) / 2;
        double v[4] = {table[b], mid, nextafter(mid, 0), nextafter(mid, INFINITY)};
        for (int k = 0; k < 4; k++) {
            xs[n++] = v[k];
            xs[n++] = -v[k];
        }
    }
    uint64_t r = 0x9E3779B97F4A7C15u;
    double top = table[count];
    for (int k = 0; k < 20000; k++) {
        r ^= r << 13;
        r ^= r >> 7;
        r ^= r << 17;
        /* log-uniform magnitudes from far below the smallest subnormal to beyond the max */
        double e = ((double)(r >> 11) / 9007199254740992.0) * (log2(top) + 40) - 40 -
                   (table == table_f16 ? 24 : 133);
        xs[n++] = (r & 1 ? -1 : 1) * exp2(e);
    }
    *n_out = n;
    return xs;
}

static void test_f16_bf16_rounding(void **state) {
    (void)state;
    build_tables();
    size_t n;
    double *xs = make_inputs(table_f16, F16_FINITE, &n);
    check_small(SDICT_FLOAT16, table_f16, F16_FINITE, 0x8000, xs, n);
    free(xs);
    xs = make_inputs(table_bf16, BF16_FINITE, &n);
    check_small(SDICT_BFLOAT16, table_bf16, BF16_FINITE, 0x8000, xs, n);
    free(xs);

    /* special values */
    double sp[4] = {INFINITY, -INFINITY, NAN, -NAN};
    uint16_t h[4];
    sdict_storage *s = storage_of(sp, sizeof sp);
    int64_t shape[1] = {4}, stride[1];
    sdict_tensor t;
    assert_int_equal(sdict_tensor_init(&t, SDICT_FLOAT64, 1, shape, stride, s, NULL), SDICT_OK);
    assert_int_equal(sdict_tensor_copy_to(&t, SDICT_FLOAT16, h, sizeof h, NULL), SDICT_OK);
    assert_int_equal(h[0], 0x7C00);
    assert_int_equal(h[1], 0xFC00);
    assert_int_equal(h[2], 0x7E00); /* torch: float16 NaN keeps its sign */
    assert_int_equal(h[3], 0xFE00);
    assert_int_equal(sdict_tensor_copy_to(&t, SDICT_BFLOAT16, h, sizeof h, NULL), SDICT_OK);
    assert_int_equal(h[0], 0x7F80);
    assert_int_equal(h[1], 0xFF80);
    assert_int_equal(h[2], 0x7FC0); /* c10's scalar bfloat16 NaN */
    assert_int_equal(h[3], 0x7FC0);
    sdict_storage_release(s);
}

static void test_f16_bf16_decode(void **state) {
    (void)state;
    /* every pattern decodes to the table value (or inf/NaN), and re-encodes to itself */
    static uint16_t all[65536];
    for (unsigned b = 0; b < 65536; b++)
        all[b] = (uint16_t)b;
    sdict_storage *s = storage_of(all, sizeof all);
    static double dec[65536];
    static uint16_t again[65536];
    int64_t shape[1] = {65536}, stride[1];
    for (int which = 0; which < 2; which++) {
        sdict_dtype dt = which ? SDICT_BFLOAT16 : SDICT_FLOAT16;
        unsigned count = which ? BF16_FINITE : F16_FINITE;
        sdict_tensor t;
        assert_int_equal(sdict_tensor_init(&t, dt, 1, shape, stride, s, NULL), SDICT_OK);
        assert_int_equal(sdict_tensor_copy_to(&t, SDICT_FLOAT64, dec, sizeof dec, NULL),
                         SDICT_OK);
        assert_int_equal(sdict_tensor_copy_to(&t, dt, again, sizeof again, NULL), SDICT_OK);
        assert_memory_equal(again, all, sizeof all);
        for (unsigned b = 0; b < 65536; b++) {
            unsigned mag = b & 0x7FFF;
            double want = which ? bf16_value(mag) : f16_value(mag);
            if (mag == count)
                want = INFINITY;
            if (mag > count) {
                assert_true(isnan(dec[b]));
                continue;
            }
            if (b & 0x8000)
                want = -want;
            assert_true(dec[b] == want);
            assert_int_equal(!!signbit(dec[b]), !!(b & 0x8000));
        }
        /* float16 -> float32 via the same path */
        float f;
        uint16_t one = which ? 0x3F80 : 0x3C00;
        conv1(dt, &one, SDICT_FLOAT32, &f);
        assert_true(f == 1.0f);
    }
    sdict_storage_release(s);
}

static void test_int_to_small(void **state) {
    (void)state;
    uint16_t h;
    /* 2049 lies halfway between float16 2048 and 2050: ties to even (2048) */
    int32_t i = 2049;
    conv1(SDICT_INT32, &i, SDICT_FLOAT16, &h);
    assert_int_equal(h, oracle(table_f16, F16_FINITE, 0x8000, 2049.0));
    assert_true(f16_value(h) == 2048.0);
    i = 2051;
    conv1(SDICT_INT32, &i, SDICT_FLOAT16, &h);
    assert_true(f16_value(h) == 2052.0);
    i = -65520; /* halfway between 65504 and 2^16: rounds to -inf */
    conv1(SDICT_INT32, &i, SDICT_FLOAT16, &h);
    assert_int_equal(h, 0xFC00);
    i = -65519;
    conv1(SDICT_INT32, &i, SDICT_FLOAT16, &h);
    assert_int_equal(h, 0xFBFF);
    /* 2^60 + 2^52 + 1 rounds up in bfloat16 (ulp 2^53 there); a float64 intermediate would
       lose the +1 and tie down to 2^60 */
    int64_t big = (INT64_C(1) << 60) + (INT64_C(1) << 52) + 1;
    conv1(SDICT_INT64, &big, SDICT_BFLOAT16, &h);
    assert_true(bf16_value(h) == ldexp(1, 60) + ldexp(1, 53));
    big = (INT64_C(1) << 60) + (INT64_C(1) << 52);
    conv1(SDICT_INT64, &big, SDICT_BFLOAT16, &h);
    assert_true(bf16_value(h) == ldexp(1, 60));
    uint64_t ubig = UINT64_MAX;
    conv1(SDICT_UINT64, &ubig, SDICT_BFLOAT16, &h);
    assert_true(bf16_value(h) == ldexp(1, 64));
    int8_t neg = -128;
    conv1(SDICT_INT8, &neg, SDICT_BFLOAT16, &h);
    assert_int_equal(h, 0x8000 | oracle(table_bf16, BF16_FINITE, 0x8000, 128.0));
    uint8_t zero = 0;
    conv1(SDICT_UINT8, &zero, SDICT_FLOAT16, &h);
    assert_int_equal(h, 0);
    /* float16 -> int truncates like any float */
    uint16_t h_m25 = 0xC100; /* -2.5 */
    int64_t r;
    conv1(SDICT_FLOAT16, &h_m25, SDICT_INT64, &r);
    assert_int_equal(r, -2);
}

static void test_byteswap(void **state) {
    (void)state;
    uint8_t a[16];
    for (int i = 0; i < 16; i++)
        a[i] = (uint8_t)i;
    sdict__byteswap(a, 8, 2);
    assert_int_equal(a[0], 1);
    assert_int_equal(a[1], 0);
    assert_int_equal(a[15], 14);
    sdict__byteswap(a, 8, 2);
    sdict__byteswap(a, 4, 4);
    static const uint8_t w4[16] = {3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12};
    assert_memory_equal(a, w4, 16);
    sdict__byteswap(a, 4, 4);
    sdict__byteswap(a, 2, 8);
    static const uint8_t w8[16] = {7, 6, 5, 4, 3, 2, 1, 0, 15, 14, 13, 12, 11, 10, 9, 8};
    assert_memory_equal(a, w8, 16);
    sdict__byteswap(a, 2, 8);
    sdict__byteswap(a, 1, 16);
    for (int i = 0; i < 16; i++)
        assert_int_equal(a[i], 15 - i);
    sdict__byteswap(a, 16, 1); /* no-op */
    assert_int_equal(a[0], 15);
    /* a big-endian float32 reads correctly after a swap */
    uint8_t be[4] = {0x3F, 0x80, 0x00, 0x00};
    sdict__byteswap(be, 1, 4);
    float f;
    memcpy(&f, be, 4);
    assert_true(f == 1.0f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_and_strides),
        cmocka_unit_test(test_is_contiguous),
        cmocka_unit_test(test_check_cases),
        cmocka_unit_test(test_copy_strided),
        cmocka_unit_test(test_copy_same_dtype_odd_types),
        cmocka_unit_test(test_high_rank),
        cmocka_unit_test(test_copy_huge_rank),
        cmocka_unit_test(test_int_float_conversions),
        cmocka_unit_test(test_f16_bf16_rounding),
        cmocka_unit_test(test_f16_bf16_decode),
        cmocka_unit_test(test_int_to_small),
        cmocka_unit_test(test_byteswap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
