/*
 fuzz_roundtrip.c - load -> save -> load must give an equal tree. Anything the loader accepts and
 the writer agrees to write must come back with the same kinds, Python types, values, tensor
 metadata (conj/neg bits, quantizers, attributes, sparse and nested parts) and element bytes; a
 difference aborts (a finding). The writer runs with
 SDICT_SAVE_ALLOW_NOT_WEIGHTS_ONLY (so numpy values are written too), in the torch 1.13 or 2.x
 layout depending on the input's size.
*/
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool same(const sdict_value *a, const sdict_value *b, int depth, long *budget);

/* The Python attributes of two tensor-like values. */
static bool same_attrs(const sdict_value *a, const sdict_value *b, int depth, long *budget) {
    const sdict_value *x = sdict_tensor_attrs(a), *y = sdict_tensor_attrs(b);
    size_t n = sdict_dict_len(x);
    return n == sdict_dict_len(y) && (n == 0 || same(x, y, depth + 1, budget));
}

/* Compares two trees, spending at most *budget node visits (shared subtrees are visited again,
   so a "billion laughs" DAG exhausts the budget instead of the time limit). */
static bool same(const sdict_value *a, const sdict_value *b, int depth, long *budget) {
    if (depth > 200 || --*budget < 0)
        return true; /* too big to compare: not a finding */
    sdict_kind k = sdict_value_kind(a);
    char na[8], nb[8];
    const char *da = sdict_value_numpy_dtype(a, na), *db = sdict_value_numpy_dtype(b, nb);
    if (k != sdict_value_kind(b) || sdict_value_pytype(a) != sdict_value_pytype(b) ||
        (da == NULL) != (db == NULL) || (da && strcmp(da, db) != 0))
        return false;
    switch (k) {
    case SDICT_KIND_NONE:
        return true;
    case SDICT_KIND_BOOL:
        return sdict_bool_get(a) == sdict_bool_get(b);
    case SDICT_KIND_INT: {
        char x[128], y[128];
        size_t n = sdict_int_to_string(a, x, sizeof x), m = sdict_int_to_string(b, y, sizeof y);
        return n == m && strcmp(x, y) == 0;
    }
    case SDICT_KIND_FLOAT: {
        double x = sdict_float_get(a), y = sdict_float_get(b);
        return memcmp(&x, &y, sizeof x) == 0 || (isnan(x) && isnan(y));
    }
    case SDICT_KIND_STR:
    case SDICT_KIND_BYTES: {
        size_t n = 0, m = 0;
        const void *x = k == SDICT_KIND_STR ? (const void *)sdict_str_get(a, &n) : sdict_bytes_get(a, &n);
        const void *y = k == SDICT_KIND_STR ? (const void *)sdict_str_get(b, &m) : sdict_bytes_get(b, &m);
        return n == m && (n == 0 || memcmp(x, y, n) == 0);
    }
    case SDICT_KIND_LIST:
    case SDICT_KIND_TUPLE:
    case SDICT_KIND_SET:
        if (sdict_seq_len(a) != sdict_seq_len(b))
            return false;
        for (size_t i = 0; i < sdict_seq_len(a); i++)
            if (!same(sdict_seq_item(a, i), sdict_seq_item(b, i), depth + 1, budget))
                return false;
        return true;
    case SDICT_KIND_DICT:
        if (sdict_dict_len(a) != sdict_dict_len(b) ||
            sdict_dict_is_ordered(a) != sdict_dict_is_ordered(b))
            return false;
        for (size_t i = 0; i < sdict_dict_len(a); i++)
            if (!same(sdict_dict_key(a, i), sdict_dict_key(b, i), depth + 1, budget) ||
                !same(sdict_dict_val(a, i), sdict_dict_val(b, i), depth + 1, budget))
                return false;
        if ((sdict_dict_attrs(a) == NULL) != (sdict_dict_attrs(b) == NULL))
            return false;
        return !sdict_dict_attrs(a) ||
               same(sdict_dict_attrs(a), sdict_dict_attrs(b), depth + 1, budget);
    case SDICT_KIND_DTYPE:
        return sdict_dtype_value_get(a) == sdict_dtype_value_get(b);
    case SDICT_KIND_QSCHEME:
        return sdict_qscheme_value_get(a) == sdict_qscheme_value_get(b);
    case SDICT_KIND_LAYOUT:
        return sdict_layout_value_get(a) == sdict_layout_value_get(b);
    case SDICT_KIND_DEVICE: {
        int64_t i, j;
        const char *x = sdict_device_get(a, &i), *y = sdict_device_get(b, &j);
        return i == j && strcmp(x, y) == 0;
    }
    case SDICT_KIND_COMPLEX: {
        double x[2], y[2];
        sdict_complex_get(a, &x[0], &x[1]);
        sdict_complex_get(b, &y[0], &y[1]);
        return memcmp(x, y, sizeof x) == 0 || (isnan(x[0]) && isnan(y[0])) ||
               (isnan(x[1]) && isnan(y[1]));
    }
    case SDICT_KIND_SPARSE: {
        const sdict_sparse *x = sdict_value_sparse(a), *y = sdict_value_sparse(b);
        return x->layout == y->layout && x->is_coalesced == y->is_coalesced &&
               x->is_parameter == y->is_parameter && x->requires_grad == y->requires_grad &&
               same(x->size, y->size, depth + 1, budget) &&
               same(x->indices, y->indices, depth + 1, budget) &&
               (!x->plain_indices || same(x->plain_indices, y->plain_indices, depth + 1, budget)) &&
               same(x->values, y->values, depth + 1, budget) && same_attrs(a, b, depth, budget);
    }
    case SDICT_KIND_NESTED: {
        const sdict_nested *x = sdict_value_nested(a), *y = sdict_value_nested(b);
        return x->is_parameter == y->is_parameter && x->requires_grad == y->requires_grad &&
               same(x->buffer, y->buffer, depth + 1, budget) &&
               same(x->sizes, y->sizes, depth + 1, budget) &&
               same(x->strides, y->strides, depth + 1, budget) &&
               same(x->storage_offsets, y->storage_offsets, depth + 1, budget) &&
               same_attrs(a, b, depth, budget);
    }
    case SDICT_KIND_TENSOR: {
        const sdict_tensor *x = sdict_value_tensor(a), *y = sdict_value_tensor(b);
        const sdict_quantizer *qa = sdict_value_quantizer(a), *qb = sdict_value_quantizer(b);
        if (x->dtype != y->dtype || x->ndim != y->ndim || x->storage_offset != y->storage_offset ||
            x->requires_grad != y->requires_grad || x->is_parameter != y->is_parameter ||
            x->is_conj != y->is_conj || x->is_neg != y->is_neg ||
            (x->storage == NULL) != (y->storage == NULL) || (qa == NULL) != (qb == NULL) ||
            !same_attrs(a, b, depth, budget))
            return false;
        if (qa && (qa->qscheme != qb->qscheme || qa->axis != qb->axis ||
                   qa->zero_point != qb->zero_point ||
                   memcmp(&qa->scale, &qb->scale, sizeof qa->scale) != 0 ||
                   (qa->scales && (!same(qa->scales, qb->scales, depth + 1, budget) ||
                                   !same(qa->zero_points, qb->zero_points, depth + 1, budget)))))
            return false;
        /* a numpy array's strides follow its memory order, which numpy (and the writer) take
           as C order whenever the array is C-contiguous: only the shape must match */
        bool np = sdict_value_pytype(a) == SDICT_PYTYPE_NUMPY_ARRAY;
        for (int i = 0; i < x->ndim; i++)
            if (x->shape[i] != y->shape[i] || (!np && x->stride[i] != y->stride[i]))
                return false;
        if (!x->storage)
            return true;
        size_t n = sdict_tensor_nbytes(x);
        if (n > (1u << 24))
            return true;
        void *p = malloc(n ? n : 1), *q = malloc(n ? n : 1);
        bool eq = p && q && sdict_tensor_copy_to(x, x->dtype, p, n, NULL) == SDICT_OK &&
                  sdict_tensor_copy_to(y, y->dtype, q, n, NULL) == SDICT_OK &&
                  memcmp(p, q, n) == 0;
        free(p);
        free(q);
        return eq || !p || !q;
    }
    default:
        return true;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sdict_load_opts opts = {.limits = {.max_str_bytes = 1u << 20, .max_values = 1u << 20,
                                       .max_records = 4096, .max_inflate = 1u << 24}};
    sdict_doc *a = NULL, *b = NULL;
    void *buf = NULL;
    size_t n = 0;
    if (sdict_load_buffer(data, size, "fuzz", &opts, &a, NULL) != SDICT_OK)
        return 0;
    sdict_save_opts so = {.flags = SDICT_SAVE_ALLOW_NOT_WEIGHTS_ONLY |
                                    (size & 1 ? (uint32_t)SDICT_SAVE_LAYOUT_TORCH2 : 0u)};
    if (sdict_save_buffer(sdict_doc_root(a), &so, &buf, &n, NULL) == SDICT_OK) {
        sdict_error err;
        if (sdict_load_buffer(buf, n, "resaved", &opts, &b, &err) != SDICT_OK)
            abort(); /* statedict wrote a file it cannot read back */
        long budget = 1L << 20;
        if (!same(sdict_doc_root(a), sdict_doc_root(b), 0, &budget))
            abort(); /* the tree changed on the way through save and load */
        sdict_doc_free(b);
        sdict_free_buffer(buf);
    }
    sdict_doc_free(a);
    return 0;
}
