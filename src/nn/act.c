/*
 act.c - activation buffers (sdict_act) and the small functional ops user forwards need,
 plus the error helper shared by the nn sources.
*/
#include "nn_private.h"
#include "statedict_nn.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


/* Fills the public error struct directly: the nn layer uses only the public API, and its
   errors concern modules rather than file records, so record is "" and offset -1. */
sdict_status sdict_nn__err(sdict_error *err, sdict_status code, const char *fmt, ...) {
    if (err) {
        err->code = code;
        err->offset = -1;
        err->file[0] = '\0';
        err->record[0] = '\0';
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

int64_t sdict_act_numel(const sdict_act *a) {
    int64_t n = 1;
    for (int32_t i = 0; i < a->ndim; i++) n *= a->shape[i];
    return n;
}

float *sdict_act_f32(const sdict_act *a) {
    return a && a->dtype == SDICT_FLOAT32 ? (float *)a->data : NULL;
}

sdict_status sdict_act_init(sdict_act *a, sdict_dtype dtype, int32_t ndim, const int64_t *shape,
                            sdict_error *err) {
    memset(a, 0, sizeof *a);
    if ((dtype != SDICT_FLOAT32 && dtype != SDICT_INT64) || ndim < 0 || ndim > SDICT_NN_MAX_DIMS)
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "activation: bad dtype or ndim %d",
                             (int)ndim);
    int64_t n = 1;
    for (int32_t i = 0; i < ndim; i++) {
        if (shape[i] < 0 || (shape[i] > 0 && n > INT64_MAX / 8 / shape[i]))
            return sdict_nn__err(err, SDICT_E_INVALID_ARG, "activation: bad size %lld",
                                 (long long)shape[i]);
        n *= shape[i];
    }
    a->dtype = dtype;
    a->ndim = ndim;
    for (int32_t i = 0; i < ndim; i++) a->shape[i] = shape[i];
    if (n > 0) {
        a->data = calloc((size_t)n, sdict_dtype_size(dtype));
        if (!a->data) {
            memset(a, 0, sizeof *a);
            return sdict_nn__err(err, SDICT_E_NOMEM, "activation: out of memory");
        }
    }
    return SDICT_OK;
}

void sdict_act_free(sdict_act *a) {
    if (!a) return;
    free(a->data);
    memset(a, 0, sizeof *a);
}

sdict_status sdict_act_copy(sdict_act *dst, const sdict_act *src, sdict_error *err) {
    sdict_status st = sdict_act_init(dst, src->dtype, src->ndim, src->shape, err);
    if (st == SDICT_OK && dst->data)
        memcpy(dst->data, src->data, (size_t)sdict_act_numel(src) * sdict_dtype_size(src->dtype));
    return st;
}

static bool is_integer_dtype(sdict_dtype d) {
    switch (d) {
    case SDICT_INT64: case SDICT_INT32: case SDICT_INT16: case SDICT_INT8: case SDICT_UINT8:
    case SDICT_UINT16: case SDICT_UINT32: case SDICT_UINT64:
        return true;
    default:
        return false;
    }
}

sdict_status sdict_act_from_tensor(const sdict_tensor *t, sdict_act *out, sdict_error *err) {
    sdict_dtype to = is_integer_dtype(t->dtype) ? SDICT_INT64 : SDICT_FLOAT32;
    if (t->ndim > SDICT_NN_MAX_DIMS) {
        memset(out, 0, sizeof *out);
        return sdict_nn__err(err, SDICT_E_LIMIT, "a tensor of %d dimensions cannot be an "
                             "activation (at most SDICT_NN_MAX_DIMS, %d)", (int)t->ndim,
                             SDICT_NN_MAX_DIMS);
    }
    /* A stride-0 (expanded) tensor in a tiny file can describe terabytes of elements; an
       activation is always dense, so refuse expansions far beyond the bytes the file holds. */
    int64_t numel = sdict_tensor_numel(t);
    uint64_t stored = t->storage ? sdict_storage_nbytes(t->storage) : 0;
    if (numel > 0 && (uint64_t)numel > (1u << 28) / sdict_dtype_size(to) &&
        (uint64_t)numel / 64 > stored) {
        memset(out, 0, sizeof *out);
        return sdict_nn__err(err, SDICT_E_LIMIT, "a tensor of %lld elements over a storage of "
                             "%llu bytes (expanded with stride 0) is too large to make dense",
                             (long long)numel, (unsigned long long)stored);
    }
    sdict_status st = sdict_act_init(out, to, t->ndim, t->shape, err);
    if (st != SDICT_OK) return st;
    size_t nbytes = (size_t)sdict_act_numel(out) * sdict_dtype_size(to);
    if (nbytes == 0) return SDICT_OK;
    st = sdict_tensor_copy_to(t, to, out->data, nbytes, err);
    if (st != SDICT_OK) sdict_act_free(out);
    return st;
}

sdict_status sdict_act_to_value(const sdict_act *a, sdict_doc *doc, sdict_value **out,
                                sdict_error *err) {
    *out = NULL;
    size_t nbytes = (size_t)sdict_act_numel(a) * sdict_dtype_size(a->dtype);
    sdict_storage *s = NULL;
    sdict_status st = sdict_storage_new(nbytes, &s, err);
    if (st != SDICT_OK) return st;
    if (nbytes) memcpy(sdict_storage_data(s), a->data, nbytes);
    /* Filled by hand (contiguous strides) rather than with sdict_tensor_init so the nn layer
       depends on as little of the core as possible. */
    sdict_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = a->dtype;
    t.ndim = a->ndim;
    int64_t strides[SDICT_NN_MAX_DIMS], stride = 1;
    for (int32_t i = a->ndim - 1; i >= 0; i--) {
        strides[i] = stride;
        stride *= a->shape[i] > 1 ? a->shape[i] : 1;
    }
    t.shape = a->shape;
    t.stride = strides;
    t.storage = s;
    st = sdict_tensor_new(doc, &t, out, err);
    sdict_storage_release(s); /* the value holds its own reference */
    return st;
}

void sdict_act_relu_(sdict_act *a) {
    float *p = sdict_act_f32(a);
    int64_t n = sdict_act_numel(a);
    for (int64_t i = 0; p && i < n; i++)
        if (!(p[i] > 0.0f)) p[i] = p[i] != p[i] ? p[i] : 0.0f; /* NaN propagates, as torch */
}

sdict_status sdict_act_add_(sdict_act *a, const sdict_act *b, sdict_error *err) {
    if (a->dtype != SDICT_FLOAT32 || b->dtype != SDICT_FLOAT32 || a->ndim != b->ndim ||
        memcmp(a->shape, b->shape, sizeof(int64_t) * (size_t)a->ndim) != 0)
        return sdict_nn__err(err, SDICT_E_SHAPE, "add: operands differ in shape or dtype");
    float *x = a->data;
    const float *y = b->data;
    int64_t n = sdict_act_numel(a);
    for (int64_t i = 0; i < n; i++) x[i] += y[i];
    return SDICT_OK;
}

sdict_status sdict_act_flatten_(sdict_act *a, int32_t start_dim, int32_t end_dim,
                                sdict_error *err) {
    int32_t nd = a->ndim ? a->ndim : 1; /* torch treats a 0-dim tensor as 1-dim here */
    int32_t s = start_dim < 0 ? start_dim + nd : start_dim;
    int32_t e = end_dim < 0 ? end_dim + nd : end_dim;
    if (s < 0 || e >= nd || s > e)
        return sdict_nn__err(err, SDICT_E_INVALID_ARG,
                             "flatten: dims %d..%d out of range for %d-dim input",
                             (int)start_dim, (int)end_dim, (int)a->ndim);
    if (a->ndim == 0) {
        a->ndim = 1;
        a->shape[0] = 1;
        return SDICT_OK;
    }
    int64_t m = 1;
    for (int32_t i = s; i <= e; i++) m *= a->shape[i];
    int64_t shape[SDICT_NN_MAX_DIMS];
    int32_t k = 0;
    for (int32_t i = 0; i < s; i++) shape[k++] = a->shape[i];
    shape[k++] = m;
    for (int32_t i = e + 1; i < a->ndim; i++) shape[k++] = a->shape[i];
    a->ndim = k;
    memcpy(a->shape, shape, sizeof(int64_t) * (size_t)k);
    return SDICT_OK;
}
