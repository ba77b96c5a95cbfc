/*
 composite.c - tensors torch builds from more than one part: quantized tensors (integer
 representation plus a quantizer), sparse tensors (COO indices and values; compressed indices,
 plain indices and values for CSR/CSC/BSR/BSC) and nested tensors (one buffer plus per-component
 sizes, strides and offsets). Each constructor checks its parts the way torch's weights_only
 loader does before anything may index with them: kinds, dtypes, shapes against the declared
 size, and every index value inside its dimension (torch 2.x validates sparse invariants
 whenever weights_only is on; statedict always does). Index tensors may not expand their
 storage (stride 0 over a short storage), so a check reads each stored index at most once.
 Legacy files carry their storage bytes after the pickle, so their loader checks the values
 once the bytes are in (sdict__composite_check_values), as torch defers its own validation.
*/
#include "internal.h"

#include <string.h>

/*==================================================================================================
 MARK: Parts
==================================================================================================*/

static bool is_floating(sdict_dtype d) {
    return d == SDICT_FLOAT64 || d == SDICT_FLOAT32 || d == SDICT_FLOAT16 || d == SDICT_BFLOAT16;
}

static bool is_integer(sdict_dtype d) {
    return d == SDICT_INT64 || d == SDICT_INT32 || d == SDICT_INT16 || d == SDICT_INT8 ||
           d == SDICT_UINT8;
}

/* The tensor of part v (a tensor value of doc with data), or NULL after filling err. */
static const sdict_tensor *part(sdict_doc *doc, const sdict_value *v, const char *what,
                                sdict_error *err) {
    const sdict_tensor *t = sdict_value_tensor(v);
    if (!t || sdict__value_doc(v) != doc) {
        sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "%s must be a tensor of this document, "
                   "found %s", what, v ? sdict_kind_name(sdict_value_kind(v)) : "nothing");
        return NULL;
    }
    if (!t->storage) {
        sdict__err(err, SDICT_E_STORAGE, NULL, -1, "%s is a meta tensor (it has no data)", what);
        return NULL;
    }
    if (sdict_value_quantizer(v)) {
        sdict__err(err, SDICT_E_DTYPE, NULL, -1, "%s is a quantized tensor", what);
        return NULL;
    }
    return t;
}

static sdict_status want_ndim(const sdict_tensor *t, int32_t nd, const char *what,
                              sdict_error *err) {
    if (t->ndim != nd)
        return sdict__err(err, SDICT_E_SHAPE, NULL, -1, "%s has %d dimensions, expected %d", what,
                          (int)t->ndim, (int)nd);
    return SDICT_OK;
}

/*
 Reads every element of integer tensor t as int64, in C order, into a new array (free with
 sdict__free). Refuses tensors that show more elements than their storage holds: indices are
 read once each, and a 100-byte file cannot demand 2^40 reads.
*/
static sdict_status read_ints(const sdict_tensor *t, const char *what, int64_t **out,
                              sdict_error *err) {
    *out = NULL;
    int64_t n = sdict_tensor_numel(t);
    size_t es = sdict_dtype_size(t->dtype);
    if (n < 0 || (uint64_t)n > sdict_storage_nbytes(t->storage) / es)
        return sdict__err(err, SDICT_E_SHAPE, NULL, -1, "%s shows %lld elements over a storage "
                          "of %zu bytes (expanded index tensors are refused)", what,
                          (long long)n, sdict_storage_nbytes(t->storage));
    int64_t *v = sdict__calloc(n ? (size_t)n : 1, sizeof *v);
    if (!v)
        return sdict__err(err, SDICT_E_NOMEM, NULL, -1, "out of memory reading %s", what);
    sdict_status st = sdict_tensor_copy_to(t, SDICT_INT64, v, (size_t)n * sizeof *v, err);
    if (st != SDICT_OK) {
        sdict__free(v);
        return st;
    }
    *out = v;
    return SDICT_OK;
}

/* The items of a size tuple (ints >= 0) in a new array (free with sdict__free). */
static sdict_status size_items(const sdict_value *size, int64_t **dims, size_t *n,
                               sdict_error *err) {
    *dims = NULL;
    if (sdict_value_kind(size) != SDICT_KIND_TUPLE)
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "size must be a tuple of ints, "
                          "found %s", sdict_kind_name(sdict_value_kind(size)));
    *n = sdict_seq_len(size);
    int64_t *d = sdict__calloc(*n ? *n : 1, sizeof *d);
    if (!d)
        return sdict__err(err, SDICT_E_NOMEM, NULL, -1, "out of memory");
    for (size_t i = 0; i < *n; i++) {
        const sdict_value *x = sdict_seq_item(size, i);
        if (sdict_value_kind(x) != SDICT_KIND_INT || sdict_int_get(x, &d[i]) != SDICT_OK ||
            d[i] < 0) {
            sdict__free(d);
            return sdict__err(err, SDICT_E_SHAPE, NULL, -1, "size[%zu] is not an int in "
                              "0..2^63-1", i);
        }
    }
    *dims = d;
    return SDICT_OK;
}

/*==================================================================================================
 MARK: Quantized tensors
==================================================================================================*/

static bool is_quantized_dtype(sdict_dtype d) {
    return d == SDICT_QINT8 || d == SDICT_QUINT8 || d == SDICT_QINT32 || d == SDICT_QUINT4X2 ||
           d == SDICT_QUINT2X4;
}

sdict_status sdict_qtensor_new(sdict_doc *doc, const sdict_tensor *t, const sdict_quantizer *q,
                               sdict_value **out, sdict_error *err) {
    if (out)
        *out = NULL;
    if (!doc || !t || !q || !out)
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "NULL doc, tensor, quantizer or out");
    if (!is_quantized_dtype(t->dtype))
        return sdict__err(err, SDICT_E_DTYPE, NULL, -1, "a quantized tensor needs a quantized "
                          "dtype (qint8, quint8, qint32, quint4x2, quint2x4), not %s",
                          sdict_dtype_name(t->dtype));
    sdict_quantizer qq = *q;
    if (q->qscheme == SDICT_PER_TENSOR_AFFINE) {
        qq.scales = qq.zero_points = NULL;
        qq.axis = 0;
        return sdict__tensor_value_new(doc, t, &qq, out, err);
    }
    if (q->qscheme != SDICT_PER_CHANNEL_AFFINE &&
        q->qscheme != SDICT_PER_CHANNEL_AFFINE_FLOAT_QPARAMS)
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "quantization scheme %s cannot be "
                          "saved by torch (only per_tensor_affine, per_channel_affine and "
                          "per_channel_affine_float_qparams)", sdict_qscheme_name(q->qscheme));
    if (q->axis < 0 || q->axis >= t->ndim)
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "per-channel axis %lld is outside "
                          "the tensor's %d dimensions", (long long)q->axis, (int)t->ndim);
    const sdict_tensor *s = part(doc, q->scales, "scales", err);
    const sdict_tensor *z = s ? part(doc, q->zero_points, "zero_points", err) : NULL;
    if (!z)
        return err ? err->code : SDICT_E_INVALID_ARG;
    int64_t channels = t->shape[q->axis];
    if (s->ndim != 1 || z->ndim != 1 || s->shape[0] != channels || z->shape[0] != channels)
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "per-channel scales and zero_points "
                          "must be 1-D with size[axis] = %lld elements (found %lld and %lld)",
                          (long long)channels, (long long)(s->ndim == 1 ? s->shape[0] : -1),
                          (long long)(z->ndim == 1 ? z->shape[0] : -1));
    if (!is_floating(s->dtype))
        return sdict__err(err, SDICT_E_DTYPE, NULL, -1, "scales must be floating, not %s",
                          sdict_dtype_name(s->dtype));
    if (is_floating(z->dtype)) {
        qq.qscheme = SDICT_PER_CHANNEL_AFFINE_FLOAT_QPARAMS; /* as torch has it after loading */
    } else if (!is_integer(z->dtype) || q->qscheme == SDICT_PER_CHANNEL_AFFINE_FLOAT_QPARAMS) {
        return sdict__err(err, SDICT_E_DTYPE, NULL, -1, "zero_points of %s must be %s, not %s",
                          sdict_qscheme_name(q->qscheme),
                          q->qscheme == SDICT_PER_CHANNEL_AFFINE ? "integers" : "floating",
                          sdict_dtype_name(z->dtype));
    }
    qq.scale = 0;
    qq.zero_point = 0;
    return sdict__tensor_value_new(doc, t, &qq, out, err);
}

/*==================================================================================================
 MARK: Sparse tensors
==================================================================================================*/

static sdict_status check_coo(sdict_doc *doc, const sdict_sparse *sp, const int64_t *size,
                              size_t nsize, bool values, sdict_error *err) {
    const sdict_tensor *ix = part(doc, sp->indices, "sparse indices", err);
    const sdict_tensor *val = ix ? part(doc, sp->values, "sparse values", err) : NULL;
    if (!val)
        return err ? err->code : SDICT_E_INVALID_ARG;
    if (sp->plain_indices)
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "a COO tensor has no plain indices");
    if (ix->dtype != SDICT_INT64)
        return sdict__err(err, SDICT_E_DTYPE, NULL, -1, "COO indices must be int64, not %s",
                          sdict_dtype_name(ix->dtype));
    sdict_status st = want_ndim(ix, 2, "COO indices", err);
    if (st != SDICT_OK)
        return st;
    int64_t sparse_dim = ix->shape[0], nnz = ix->shape[1];
    if (val->ndim < 1 || val->shape[0] != nnz)
        return sdict__err(err, SDICT_E_SHAPE, NULL, -1, "COO values must have nnz = %lld rows",
                          (long long)nnz);
    int64_t dense_dim = val->ndim - 1;
    if ((uint64_t)(sparse_dim + dense_dim) != nsize)
        return sdict__err(err, SDICT_E_SHAPE, NULL, -1, "COO size has %zu dimensions but indices "
                          "give %lld sparse and values %lld dense ones", nsize,
                          (long long)sparse_dim, (long long)dense_dim);
    for (int64_t j = 0; j < dense_dim; j++)
        if (val->shape[1 + j] != size[sparse_dim + j])
            return sdict__err(err, SDICT_E_SHAPE, NULL, -1, "COO values dimension %lld is %lld, "
                              "size says %lld", (long long)(1 + j), (long long)val->shape[1 + j],
                              (long long)size[sparse_dim + j]);
    int64_t *v;
    if (!values)
        return SDICT_OK;
    if ((st = read_ints(ix, "COO indices", &v, err)) != SDICT_OK)
        return st;
    for (int64_t d = 0; d < sparse_dim && st == SDICT_OK; d++)
        for (int64_t k = 0; k < nnz; k++) {
            int64_t x = v[d * nnz + k];
            if (x < 0 || x >= size[d]) {
                st = sdict__err(err, SDICT_E_STORAGE, NULL, -1, "COO index %lld in dimension "
                                "%lld (entry %lld) is outside 0..%lld", (long long)x,
                                (long long)d, (long long)k, (long long)size[d] - 1);
                break;
            }
        }
    sdict__free(v);
    return st;
}

static sdict_status check_compressed(sdict_doc *doc, const sdict_sparse *sp, const int64_t *size,
                                     size_t nsize, bool values, sdict_error *err) {
    bool rowwise = sp->layout == SDICT_LAYOUT_SPARSE_CSR || sp->layout == SDICT_LAYOUT_SPARSE_BSR;
    bool blocked = sp->layout == SDICT_LAYOUT_SPARSE_BSR || sp->layout == SDICT_LAYOUT_SPARSE_BSC;
    const char *name = sdict_layout_name(sp->layout);
    const sdict_tensor *ci = part(doc, sp->indices, "compressed indices", err);
    const sdict_tensor *pi = ci ? part(doc, sp->plain_indices, "plain indices", err) : NULL;
    const sdict_tensor *val = pi ? part(doc, sp->values, "sparse values", err) : NULL;
    if (!val)
        return err ? err->code : SDICT_E_INVALID_ARG;
    if ((ci->dtype != SDICT_INT64 && ci->dtype != SDICT_INT32) || pi->dtype != ci->dtype)
        return sdict__err(err, SDICT_E_DTYPE, NULL, -1, "%s indices must both be int32 or both "
                          "int64 (found %s and %s)", name, sdict_dtype_name(ci->dtype),
                          sdict_dtype_name(pi->dtype));
    int32_t batch = ci->ndim - 1;
    if (ci->ndim < 1 || pi->ndim != ci->ndim)
        return sdict__err(err, SDICT_E_SHAPE, NULL, -1, "%s indices have %d and %d dimensions",
                          name, (int)ci->ndim, (int)pi->ndim);
    int32_t dense = val->ndim - batch - 1 - (blocked ? 2 : 0);
    if (dense < 0 || nsize != (size_t)(batch + 2 + dense))
        return sdict__err(err, SDICT_E_SHAPE, NULL, -1, "%s size has %zu dimensions; indices "
                          "(%d batch) and values (%d dimensions) do not add up", name, nsize,
                          (int)batch, (int)val->ndim);
    for (int32_t b = 0; b < batch; b++)
        if (pi->shape[b] != ci->shape[b] || val->shape[b] != ci->shape[b] ||
            size[b] != ci->shape[b])
            return sdict__err(err, SDICT_E_SHAPE, NULL, -1, "%s batch dimension %d differs "
                              "between indices, values and size", name, (int)b);
    int64_t nnz = pi->shape[batch];
    if (val->shape[batch] != nnz)
        return sdict__err(err, SDICT_E_SHAPE, NULL, -1, "%s has %lld plain indices but %lld "
                          "values", name, (long long)nnz, (long long)val->shape[batch]);
    int64_t brow = blocked ? val->shape[batch + 1] : 1, bcol = blocked ? val->shape[batch + 2] : 1;
    int64_t bc = rowwise ? brow : bcol, bp = rowwise ? bcol : brow;
    int64_t dc = size[batch + (rowwise ? 0 : 1)], dp = size[batch + (rowwise ? 1 : 0)];
    if (bc <= 0 || bp <= 0 || dc % bc || dp % bp)
        return sdict__err(err, SDICT_E_SHAPE, NULL, -1, "%s blocks of %lldx%lld do not tile a "
                          "%lldx%lld matrix", name, (long long)brow, (long long)bcol,
                          (long long)size[batch], (long long)size[batch + 1]);
    int64_t ncomp = dc / bc, nplain = dp / bp;
    if (ci->shape[batch] != ncomp + 1)
        return sdict__err(err, SDICT_E_SHAPE, NULL, -1, "%s compressed indices have %lld "
                          "entries, expected %lld", name, (long long)ci->shape[batch],
                          (long long)(ncomp + 1));
    for (int32_t j = 0; j < dense; j++)
        if (val->ndim > 0 && val->shape[val->ndim - dense + j] != size[batch + 2 + j])
            return sdict__err(err, SDICT_E_SHAPE, NULL, -1, "%s dense dimension %d is %lld, size "
                              "says %lld", name, (int)j,
                              (long long)val->shape[val->ndim - dense + j],
                              (long long)size[batch + 2 + j]);
    int64_t *c = NULL, *p = NULL;
    if (!values)
        return SDICT_OK;
    sdict_status st = read_ints(ci, "compressed indices", &c, err);
    if (st == SDICT_OK)
        st = read_ints(pi, "plain indices", &p, err);
    int64_t nbatch = sdict_tensor_numel(ci) / (ncomp + 1);
    for (int64_t b = 0; st == SDICT_OK && b < nbatch; b++) {
        const int64_t *cb = c + b * (ncomp + 1), *pb = p + b * nnz;
        if (cb[0] != 0 || cb[ncomp] != nnz)
            st = sdict__err(err, SDICT_E_STORAGE, NULL, -1, "%s compressed indices must run from "
                            "0 to nnz = %lld (batch %lld: %lld to %lld)", name, (long long)nnz,
                            (long long)b, (long long)cb[0], (long long)cb[ncomp]);
        for (int64_t k = 0; st == SDICT_OK && k < ncomp; k++)
            if (cb[k + 1] < cb[k])
                st = sdict__err(err, SDICT_E_STORAGE, NULL, -1, "%s compressed indices decrease "
                                "at %lld (batch %lld)", name, (long long)k, (long long)b);
        for (int64_t k = 0; st == SDICT_OK && k < nnz; k++)
            if (pb[k] < 0 || pb[k] >= nplain)
                st = sdict__err(err, SDICT_E_STORAGE, NULL, -1, "%s plain index %lld (entry %lld, "
                                "batch %lld) is outside 0..%lld", name, (long long)pb[k],
                                (long long)k, (long long)b, (long long)nplain - 1);
    }
    sdict__free(c);
    sdict__free(p);
    return st;
}

/* The checks of sdict_sparse_new; the index values only when `values`. */
static sdict_status sparse_check(sdict_doc *doc, const sdict_sparse *s, bool values,
                                 sdict_error *err) {
    if (s->layout < SDICT_LAYOUT_SPARSE_COO || s->layout > SDICT_LAYOUT_SPARSE_BSC)
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "layout %s is not sparse",
                          sdict_layout_name(s->layout));
    if (s->legacy_csr && s->layout != SDICT_LAYOUT_SPARSE_CSR)
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "legacy_csr is only for sparse_csr");
    if (s->is_coalesced < -1 || s->is_coalesced > 1 ||
        (s->is_coalesced != -1 && s->layout != SDICT_LAYOUT_SPARSE_COO))
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "is_coalesced is -1, 0 or 1, and "
                          "only COO tensors record it");
    if (sdict__value_doc(s->size) != doc)
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "size is not a value of this document");
    int64_t *size = NULL;
    size_t nsize = 0;
    sdict_status st = size_items(s->size, &size, &nsize, err);
    if (st == SDICT_OK)
        st = s->layout == SDICT_LAYOUT_SPARSE_COO
                 ? check_coo(doc, s, size, nsize, values, err)
                 : check_compressed(doc, s, size, nsize, values, err);
    sdict__free(size);
    return st;
}

sdict_status sdict__sparse_new(sdict_doc *doc, const sdict_sparse *s, bool check_values,
                               sdict_value **out, sdict_error *err) {
    if (out)
        *out = NULL;
    if (!doc || !s || !out)
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "NULL doc, description or out");
    sdict_status st = sparse_check(doc, s, check_values, err);
    if (st != SDICT_OK)
        return st;
    *out = sdict__sparse_value_new(doc, s);
    return *out ? SDICT_OK : sdict__err(err, SDICT_E_NOMEM, NULL, -1, "out of memory");
}

sdict_status sdict_sparse_new(sdict_doc *doc, const sdict_sparse *s, sdict_value **out,
                              sdict_error *err) {
    return sdict__sparse_new(doc, s, true, out, err);
}

/*==================================================================================================
 MARK: Nested tensors
==================================================================================================*/

/* The checks of sdict_nested_new; the sizes, strides and offsets only when `values`. */
static sdict_status nested_check(sdict_doc *doc, const sdict_nested *n, bool values,
                                 sdict_error *err) {
    const sdict_tensor *buf = part(doc, n->buffer, "nested buffer", err);
    const sdict_tensor *sz = buf ? part(doc, n->sizes, "nested sizes", err) : NULL;
    const sdict_tensor *sd = sz ? part(doc, n->strides, "nested strides", err) : NULL;
    const sdict_tensor *of = sd ? part(doc, n->storage_offsets, "nested offsets", err) : NULL;
    if (!of)
        return err ? err->code : SDICT_E_INVALID_ARG;
    sdict_status st = want_ndim(buf, 1, "nested buffer", err);
    if (st == SDICT_OK)
        st = want_ndim(sz, 2, "nested sizes", err);
    if (st == SDICT_OK)
        st = want_ndim(of, 1, "nested offsets", err);
    if (st != SDICT_OK)
        return st;
    if (buf->shape[0] > 1 && buf->stride[0] != 1)
        return sdict__err(err, SDICT_E_SHAPE, NULL, -1, "nested buffer must be contiguous");
    if (sz->dtype != SDICT_INT64 || sd->dtype != SDICT_INT64 || of->dtype != SDICT_INT64)
        return sdict__err(err, SDICT_E_DTYPE, NULL, -1, "nested sizes, strides and offsets must "
                          "be int64");
    if (sd->ndim != 2 || sd->shape[0] != sz->shape[0] || sd->shape[1] != sz->shape[1] ||
        of->shape[0] != sz->shape[0])
        return sdict__err(err, SDICT_E_SHAPE, NULL, -1, "nested sizes [%lld, %lld], strides and "
                          "offsets do not match", (long long)sz->shape[0], (long long)sz->shape[1]);
    int64_t *a = NULL, *b = NULL, *c = NULL;
    if (!values)
        return SDICT_OK;
    st = read_ints(sz, "nested sizes", &a, err);
    if (st == SDICT_OK)
        st = read_ints(sd, "nested strides", &b, err);
    if (st == SDICT_OK)
        st = read_ints(of, "nested offsets", &c, err);
    int64_t count = sz->shape[0], nd = sz->shape[1], have = buf->shape[0];
    for (int64_t i = 0; st == SDICT_OK && i < count; i++) {
        /* last element = offset + sum((size - 1) * stride), each term checked */
        int64_t last = c[i], numel = 1, term;
        bool ok = last >= 0;
        for (int64_t d = 0; ok && d < nd; d++) {
            int64_t s = a[i * nd + d], t = b[i * nd + d];
            ok = s >= 0 && t >= 0 && sdict__mul_i64(numel, s, &numel);
            if (ok && s > 0)
                ok = sdict__mul_i64(s - 1, t, &term) && sdict__add_i64(last, term, &last);
        }
        if (!ok || (numel > 0 && last >= have))
            st = sdict__err(err, SDICT_E_STORAGE, NULL, -1, "nested component %lld does not fit "
                            "in the buffer of %lld elements (negative, overflowing or past the "
                            "end)", (long long)i, (long long)have);
    }
    sdict__free(a);
    sdict__free(b);
    sdict__free(c);
    return st;
}

sdict_status sdict__nested_new(sdict_doc *doc, const sdict_nested *n, bool check_values,
                               sdict_value **out, sdict_error *err) {
    if (out)
        *out = NULL;
    if (!doc || !n || !out)
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "NULL doc, description or out");
    sdict_status st = nested_check(doc, n, check_values, err);
    if (st != SDICT_OK)
        return st;
    *out = sdict__nested_value_new(doc, n);
    return *out ? SDICT_OK : sdict__err(err, SDICT_E_NOMEM, NULL, -1, "out of memory");
}

sdict_status sdict_nested_new(sdict_doc *doc, const sdict_nested *n, sdict_value **out,
                              sdict_error *err) {
    return sdict__nested_new(doc, n, true, out, err);
}

sdict_status sdict__composite_check_values(const sdict_value *v, sdict_error *err) {
    sdict_doc *doc = sdict__value_doc(v);
    if (sdict_value_sparse(v))
        return sparse_check(doc, sdict_value_sparse(v), true, err);
    if (sdict_value_nested(v))
        return nested_check(doc, sdict_value_nested(v), true, err);
    return SDICT_OK;
}
