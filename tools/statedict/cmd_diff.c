/*
 cmd_diff.c - `statedict diff A B [--rtol R] [--atol A]`: compares two checkpoints leaf by leaf.

 Leaves are those `ls` lists (tensors, scalars, empty containers, sequences made only of
 scalars), matched by dotted path. Output lines, A's order first, then B's extra keys:
   only in A: KEY  DESC          only in B: KEY  DESC
   type: KEY  int -> float       value: KEY  5 -> 6
   dtype: KEY  float32 -> float16    shape: KEY  [3] -> [4]
   requires_grad: KEY  False -> True     parameter: KEY  False -> True
   values: KEY  N of M elements differ; max abs diff X, max rel diff Y
   device: KEY  cuda:0 -> cpu    (the location tag the storage was saved with)
   metadata: 'KEY'  'a' -> 'b'   metadata only in A: 'KEY'  'v'   (the files' metadata, e.g.
                                 safetensors __metadata__, compared only when both have some)
 A and B may be of different formats (a .pt file against a safetensors file or a model
 folder): the format, the container and the dict's Python type are not differences.
 Bare storages (torch.save({'s': t.storage()})) compare as 1-D tensors of their class's dtype.
 and a last line "N differences" or "no differences". Inert objects (--inert) of the same class
 are not compared inside: each pair gives "not compared: KEY  <object CLASS>", a last line
 counts them, and the exit status is 1 (as for differences), never "no differences".

 Tensor elements a (from A) and b (from B) are equal when a == b, both are NaN, or
 |a - b| <= atol + rtol * |b| (torch.allclose's rule, but NaN equals NaN here so a file compared
 with its own copy is equal); --rtol 0 --atol 0 demands exact equality. Floats, ints and bool
 compare as float64, ints of both sides exactly as int64 (uint64 as uint64) before the rule is
 applied, complex by the modulus of the difference, float8 decoded to float64, the conj/neg
 bits applied. Complex against real is reported as a dtype change without comparing values.
 Dtypes without arithmetic (bits*, float4_e2m1fn_x2, uint1..7, int1..7, quantized integer
 representations) compare their bytes exactly. The max abs and rel diff are over all elements
 (rel = |a-b|/|b|, inf where b is 0 and a is not). Strides are not compared (the same values
 laid out differently are equal). Quantizers are compared (scheme, scale and zero point, or
 per-channel parameters as tensors KEY.scales / KEY.zero_points), and sparse and nested
 tensors part by part (KEY.indices, KEY.plain_indices, KEY.values; KEY.buffer, KEY.sizes,
 KEY.strides, KEY.storage_offsets) after their layout and size.

 Exit 0 when nothing differs, 1 when something does, 3 when a file cannot be loaded.
*/
#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK_ELEMS ((int64_t)1 << 20)

typedef struct leaf {
    char *exact;      /* the path with each key's kind (walk_leaves_exact), or the dotted path
                         when matching flat (leaves.dotted): what is matched */
    const sdict_value *v;
    bool matched;
    size_t hash;
    size_t next_same; /* index + 1 of the next leaf with this path; 0 = none */
    size_t tail;      /* on the first leaf of a path: index + 1 of its last one */
    size_t cursor;    /* on the first leaf of a path: index + 1 of its first unmatched one */
} leaf;

typedef struct leaves {
    leaf *items;
    size_t n, cap;
    size_t *index;     /* open-addressing table of item indices + 1; 0 = empty */
    size_t index_cap;
    bool oom;
    bool dotted;          /* match by the dotted path as printed (see flat_match) */
    const cli_buf *exact; /* the walk's current exact path */
} leaves;

/* FNV-1a from a per-process random basis, then mixed: paths come from the file, so which
   ones collide must not be predictable. */
static size_t str_hash(const char *s) {
    uint64_t h = 1469598103934665603ull ^ cli_hash_seed();
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    h ^= h >> 31;
    h *= 0x94d049bb133111ebull;
    return (size_t)(h ^ (h >> 29));
}

static void collect(void *ctx, const char *path, const sdict_value *v) {
    leaves *l = ctx;
    if (l->oom)
        return;
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 64;
        leaf *p = realloc(l->items, ncap * sizeof *p);
        if (!p) {
            l->oom = true;
            return;
        }
        l->items = p;
        l->cap = ncap;
    }
    /* printed from the exact path when needed (exact_to_path) */
    char *e = cli_strdup(l->dotted ? path : l->exact->s ? l->exact->s : "");
    if (!e) {
        l->oom = true;
        return;
    }
    l->items[l->n++] = (leaf){e, v, false, str_hash(e), 0, 0, 0};
}

static bool build_index(leaves *l) {
    l->index_cap = 64;
    while (l->index_cap < l->n * 2 + 1)
        l->index_cap *= 2;
    l->index = calloc(l->index_cap, sizeof *l->index);
    if (!l->index)
        return false;
    /* one slot per distinct path; leaves that repeat a path are chained behind its first */
    for (size_t i = 0; i < l->n; i++) {
        leaf *it = &l->items[i];
        size_t h = it->hash & (l->index_cap - 1);
        for (; l->index[h]; h = (h + 1) & (l->index_cap - 1)) {
            leaf *e = &l->items[l->index[h] - 1];
            if (e->hash == it->hash && strcmp(e->exact, it->exact) == 0)
                break;
        }
        if (l->index[h]) {
            leaf *head = &l->items[l->index[h] - 1];
            l->items[head->tail - 1].next_same = i + 1;
            head->tail = i + 1;
        } else {
            l->index[h] = i + 1;
            it->tail = it->cursor = i + 1;
        }
    }
    return true;
}

/* First unmatched leaf with this exact path, or NULL. Each path's cursor only moves forward
   past matched leaves, so matching n leaves of one path costs O(n) in all, not O(n^2). */
static leaf *lookup(leaves *l, const char *exact) {
    size_t hash = str_hash(exact);
    size_t h = hash & (l->index_cap - 1);
    for (; l->index[h]; h = (h + 1) & (l->index_cap - 1)) {
        leaf *head = &l->items[l->index[h] - 1];
        if (head->hash != hash || strcmp(head->exact, exact) != 0)
            continue;
        while (head->cursor && l->items[head->cursor - 1].matched)
            head->cursor = l->items[head->cursor - 1].next_same;
        return head->cursor ? &l->items[head->cursor - 1] : NULL;
    }
    return NULL;
}

/* The dotted path as printed, from an exact path: each key's text (after its "KINDLEN:"), each
   index (after "#"), joined by dots. */
static void exact_to_path(const char *e, cli_buf *out) {
    buf_truncate(out, 0);
    buf_putn(out, "", 0);
    while (*e) {
        if (out->len)
            buf_putn(out, ".", 1);
        if (*e == '#') {
            const char *colon = strchr(e, ':');
            buf_putn(out, e + 1, (size_t)(colon - e - 1));
            e = colon + 1;
            continue;
        }
        while (*e && (*e < '0' || *e > '9'))
            e++;
        char *colon;
        size_t len = strtoull(e, &colon, 10);
        buf_putn(out, colon + 1, len);
        e = colon + 1 + len;
    }
}

static void leaves_free(leaves *l) {
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i].exact);
    free(l->items);
    free(l->index);
}

/* ---- non-tensor values ---- */

static bool values_equal(const sdict_value *a, const sdict_value *b, int depth) {
    sdict_kind k = sdict_value_kind(a);
    if (k != sdict_value_kind(b) || depth > 64)
        return false;
    switch (k) {
    case SDICT_KIND_NONE:
        return true;
    case SDICT_KIND_BOOL:
        return sdict_bool_get(a) == sdict_bool_get(b);
    case SDICT_KIND_INT: {
        cli_buf x, y;
        buf_init(&x);
        buf_init(&y);
        fmt_int(&x, a);
        fmt_int(&y, b);
        bool eq = strcmp(x.s, y.s) == 0;
        buf_free(&x);
        buf_free(&y);
        return eq;
    }
    case SDICT_KIND_FLOAT: {
        double x = sdict_float_get(a), y = sdict_float_get(b);
        return x == y || (isnan(x) && isnan(y));
    }
    case SDICT_KIND_STR:
    case SDICT_KIND_BYTES: {
        size_t la = 0, lb = 0;
        const void *pa = k == SDICT_KIND_STR ? (const void *)sdict_str_get(a, &la) : sdict_bytes_get(a, &la);
        const void *pb = k == SDICT_KIND_STR ? (const void *)sdict_str_get(b, &lb) : sdict_bytes_get(b, &lb);
        return la == lb && (la == 0 || memcmp(pa, pb, la) == 0);
    }
    case SDICT_KIND_DTYPE:
        return sdict_dtype_value_get(a) == sdict_dtype_value_get(b);
    case SDICT_KIND_QSCHEME:
        return sdict_qscheme_value_get(a) == sdict_qscheme_value_get(b);
    case SDICT_KIND_LAYOUT:
        return sdict_layout_value_get(a) == sdict_layout_value_get(b);
    case SDICT_KIND_DEVICE: {
        int64_t ia, ib;
        const char *ta = sdict_device_get(a, &ia), *tb = sdict_device_get(b, &ib);
        return ia == ib && strcmp(ta, tb) == 0;
    }
    case SDICT_KIND_COMPLEX: {
        double ra, ja, rb, jb;
        sdict_complex_get(a, &ra, &ja);
        sdict_complex_get(b, &rb, &jb);
        return (ra == rb || (isnan(ra) && isnan(rb))) && (ja == jb || (isnan(ja) && isnan(jb)));
    }
    case SDICT_KIND_LIST:
    case SDICT_KIND_TUPLE:
    case SDICT_KIND_SET: {
        size_t n = sdict_seq_len(a);
        if (n != sdict_seq_len(b))
            return false;
        for (size_t i = 0; i < n; i++)
            if (!values_equal(sdict_seq_item(a, i), sdict_seq_item(b, i), depth + 1))
                return false;
        return true;
    }
    case SDICT_KIND_DICT:
        return sdict_dict_len(a) == 0 && sdict_dict_len(b) == 0; /* only empty dicts are leaves */
    default:
        return false;
    }
}

/* ---- tensor values ---- */

typedef enum cmp_mode { CM_FLOAT, CM_INT, CM_UINT, CM_COMPLEX, CM_RAW, CM_NONE } cmp_mode;

static bool is_complex_dtype(sdict_dtype d) {
    return d == SDICT_COMPLEX32 || d == SDICT_BCOMPLEX32 || d == SDICT_COMPLEX64 ||
           d == SDICT_COMPLEX128;
}

/* Dtypes whose elements copy_to reads as numbers (the others compare as raw bytes). */
static bool is_numeric_dtype(sdict_dtype d) {
    switch (d) {
    case SDICT_FLOAT64: case SDICT_FLOAT32: case SDICT_FLOAT16: case SDICT_BFLOAT16:
    case SDICT_FLOAT8_E4M3FN: case SDICT_FLOAT8_E5M2: case SDICT_FLOAT8_E4M3FNUZ:
    case SDICT_FLOAT8_E5M2FNUZ: case SDICT_FLOAT8_E8M0FNU:
        return true;
    default:
        return is_complex_dtype(d);
    }
}

static bool is_integral_dtype(sdict_dtype d) {
    switch (d) {
    case SDICT_INT8: case SDICT_INT16: case SDICT_INT32: case SDICT_INT64: case SDICT_UINT8:
    case SDICT_UINT16: case SDICT_UINT32: case SDICT_UINT64: case SDICT_BOOL:
        return true;
    default:
        return false;
    }
}

static cmp_mode mode_for(sdict_dtype a, sdict_dtype b) {
    bool ia = is_integral_dtype(a), ib = is_integral_dtype(b);
    if ((!ia && !is_numeric_dtype(a)) || (!ib && !is_numeric_dtype(b)))
        return a == b ? CM_RAW : CM_NONE;
    if (is_complex_dtype(a) || is_complex_dtype(b))
        return is_complex_dtype(a) && is_complex_dtype(b) ? CM_COMPLEX : CM_NONE;
    if (ia && ib)
        return (a == SDICT_UINT64 || b == SDICT_UINT64) ? CM_UINT : CM_INT;
    return CM_FLOAT;
}

/* Elements of the piece s of a tensor as int64, uint64, float64, complex128 (per mode), or its
   own bytes (CM_RAW). */
static sdict_status fetch(const sdict_tensor *s, cmp_mode mode, void *out, size_t n_elems,
                          sdict_error *err) {
    switch (mode) {
    case CM_INT: return sdict_tensor_copy_to(s, SDICT_INT64, out, n_elems * 8, err);
    case CM_UINT: return sdict_tensor_copy_to(s, SDICT_UINT64, out, n_elems * 8, err);
    case CM_COMPLEX: return sdict_tensor_copy_to(s, SDICT_COMPLEX128, out, n_elems * 16, err);
    case CM_RAW: return sdict_tensor_copy_to(s, s->dtype, out, sdict_tensor_nbytes(s), err);
    default: return sdict_tensor_copy_to(s, SDICT_FLOAT64, out, n_elems * 8, err);
    }
}

typedef struct tensor_cmp {
    int64_t mismatched, total;
    double max_abs, max_rel;
} tensor_cmp;

/* Accounts one element pair given |a-b| (or NaN when exactly one side is NaN) and |b|. */
static void account(tensor_cmp *c, double absdiff, double babs, bool same, double rtol, double atol) {
    c->total++;
    if (same)
        return;
    /* NaN against a number, or an infinity against anything but the same infinity: never
       close, whatever the tolerances (torch.isclose); atol + rtol * inf must not excuse it */
    if (!isfinite(absdiff)) {
        c->mismatched++;
        c->max_abs = INFINITY;
        c->max_rel = INFINITY;
        return;
    }
    double rel = babs == 0 ? (absdiff == 0 ? 0 : INFINITY) : absdiff / babs;
    if (absdiff > c->max_abs)
        c->max_abs = absdiff;
    if (rel > c->max_rel)
        c->max_rel = rel;
    if (!(absdiff <= atol + rtol * babs))
        c->mismatched++;
}

static sdict_status compare_tensors(const sdict_tensor *a, const sdict_tensor *b, cmp_mode mode,
                                    double rtol, double atol, tensor_cmp *out, sdict_error *err) {
    memset(out, 0, sizeof *out);
    if (sdict_tensor_numel(a) == 0)
        return SDICT_OK;
    sdict_status st = cli_check_expansion(a, err);
    if (st == SDICT_OK)
        st = cli_check_expansion(b, err);
    if (st != SDICT_OK)
        return st;
    size_t width = mode == CM_COMPLEX ? 16 : 8;
    if (mode == CM_RAW && sdict_dtype_bits(a->dtype) % 8) {
        /* packed elements: whole contiguous tensors byte by byte (pieces could split a byte) */
        size_t nb = sdict_tensor_nbytes(a);
        if (!sdict_tensor_is_contiguous(a) || !sdict_tensor_is_contiguous(b)) {
            if (err) {
                memset(err, 0, sizeof *err);
                err->code = SDICT_E_DTYPE;
                err->offset = -1;
                snprintf(err->message, sizeof err->message, "non-contiguous %s tensors (several "
                         "elements per byte) cannot be compared", sdict_dtype_name(a->dtype));
            }
            return SDICT_E_DTYPE;
        }
        const uint8_t *x = sdict_tensor_data(a), *y = sdict_tensor_data(b);
        for (size_t i = 0; i < nb; i++)
            account(out, x[i] == y[i] ? 0 : INFINITY, 0, x[i] == y[i], rtol, atol);
        return SDICT_OK;
    }
    unsigned char *ba = malloc((size_t)CHUNK_ELEMS * width), *bb = malloc((size_t)CHUNK_ELEMS * width);
    st = (ba && bb) ? SDICT_OK : SDICT_E_NOMEM;
    cli_chunker c;
    cli_piece pa, pb;
    for (cli_chunker_init(&c, a, CHUNK_ELEMS); st == SDICT_OK && cli_chunk_view(&c, a, &pa);
         cli_chunker_next(&c, a)) {
        cli_chunk_view(&c, b, &pb);
        size_t n = (size_t)sdict_tensor_numel(&pa.t);
        st = fetch(&pa.t, mode, ba, n, err);
        if (st == SDICT_OK)
            st = fetch(&pb.t, mode, bb, n, err);
        for (size_t i = 0; st == SDICT_OK && i < n; i++) {
            if (mode == CM_RAW) {
                size_t es = sdict_dtype_size(a->dtype);
                bool same = memcmp(ba + i * es, bb + i * es, es) == 0;
                account(out, same ? 0 : INFINITY, 0, same, rtol, atol);
            } else if (mode == CM_INT || mode == CM_UINT) {
                double absdiff, babs;
                bool same;
                if (mode == CM_INT) {
                    int64_t x = ((int64_t *)(void *)ba)[i], y = ((int64_t *)(void *)bb)[i];
                    same = x == y;
                    /* exact difference in unsigned arithmetic, then to double */
                    uint64_t d = x > y ? (uint64_t)x - (uint64_t)y : (uint64_t)y - (uint64_t)x;
                    absdiff = (double)d;
                    babs = y < 0 ? -(double)y : (double)y;
                } else {
                    uint64_t x = ((uint64_t *)(void *)ba)[i], y = ((uint64_t *)(void *)bb)[i];
                    same = x == y;
                    absdiff = (double)(x > y ? x - y : y - x);
                    babs = (double)y;
                }
                account(out, absdiff, babs, same, rtol, atol);
            } else if (mode == CM_FLOAT) {
                double x = ((double *)(void *)ba)[i], y = ((double *)(void *)bb)[i];
                bool same = x == y || (isnan(x) && isnan(y));
                account(out, (isnan(x) || isnan(y)) ? NAN : fabs(x - y), fabs(y), same, rtol, atol);
            } else {
                const double *x = (double *)(void *)ba + 2 * i, *y = (double *)(void *)bb + 2 * i;
                bool xn = isnan(x[0]) || isnan(x[1]), yn = isnan(y[0]) || isnan(y[1]);
                bool same = (x[0] == y[0] && x[1] == y[1]) || (xn && yn);
                double d = (xn || yn) ? NAN : hypot(x[0] - y[0], x[1] - y[1]);
                account(out, d, hypot(y[0], y[1]), same, rtol, atol);
            }
        }
    }
    free(ba);
    free(bb);
    return st;
}

/* ---- driver ---- */

typedef struct diff_ctx {
    size_t ndiff;
    size_t nobjects; /* pairs of inert objects of one class: their contents are not compared */
    double rtol, atol;
    bool failed;
    const char *file_a, *file_b;
    cli_view_cache cmps; /* tensor_cmp per pair of geometries and mode */
    uint64_t data_used, data_budget; /* tensor bytes compared so far, and the most allowed */
} diff_ctx;

static void describe(cli_buf *b, const sdict_value *v) {
    const sdict_tensor *t = sdict_value_tensor(v);
    if (t) {
        buf_printf(b, "%s ", sdict_dtype_name(t->dtype));
        fmt_dims(b, t->shape, t->ndim);
    } else {
        buf_printf(b, "%s ", sdict_kind_name(sdict_value_kind(v)));
        fmt_value(b, v, 16);
    }
}

static void report_only(diff_ctx *c, const char *side, const char *path, const sdict_value *v) {
    cli_buf b;
    buf_init(&b);
    describe(&b, v);
    printf("only in %s: %s  %s\n", side, path, b.s);
    buf_free(&b);
    c->ndiff++;
}

static void compare_leaf(diff_ctx *c, const char *path, const sdict_value *a, const sdict_value *b);

/* compare_leaf on the part `name` of composite leaves a and b (KEY.name). */
static void compare_part(diff_ctx *c, const char *path, const char *name, const sdict_value *a,
                         const sdict_value *b) {
    cli_buf p;
    buf_init(&p);
    buf_printf(&p, "%s.%s", path, name);
    compare_leaf(c, p.s, a, b);
    buf_free(&p);
}

/* Sparse and nested tensors: layout and size, then their parts as tensors. */
static void compare_composite(diff_ctx *c, const char *path, const sdict_value *a,
                              const sdict_value *b) {
    const sdict_sparse *sa = sdict_value_sparse(a), *sb = sdict_value_sparse(b);
    if (sa) {
        cli_buf x, y;
        buf_init(&x);
        buf_init(&y);
        fmt_value(&x, a, 16);
        fmt_value(&y, b, 16);
        if (sa->layout != sb->layout || !values_equal(sa->size, sb->size, 0)) {
            printf("shape: %s  %s -> %s\n", path, x.s, y.s);
            c->ndiff++;
        } else {
            compare_part(c, path, "indices", sa->indices, sb->indices);
            if (sa->plain_indices)
                compare_part(c, path, "plain_indices", sa->plain_indices, sb->plain_indices);
            compare_part(c, path, "values", sa->values, sb->values);
        }
        buf_free(&x);
        buf_free(&y);
        return;
    }
    const sdict_nested *na = sdict_value_nested(a), *nb = sdict_value_nested(b);
    compare_part(c, path, "buffer", na->buffer, nb->buffer);
    compare_part(c, path, "sizes", na->sizes, nb->sizes);
    compare_part(c, path, "strides", na->strides, nb->strides);
    compare_part(c, path, "storage_offsets", na->storage_offsets, nb->storage_offsets);
}

/* Quantizers: scheme and per-tensor parameters, or per-channel axis and parameter tensors. */
static void compare_quantizers(diff_ctx *c, const char *path, const sdict_quantizer *qa,
                               const sdict_quantizer *qb) {
    if (!qa && !qb)
        return;
    cli_buf x, y;
    buf_init(&x);
    buf_init(&y);
    for (int i = 0; i < 2; i++) {
        const sdict_quantizer *q = i ? qb : qa;
        cli_buf *t = i ? &y : &x;
        char scale[40];
        if (!q) {
            buf_puts(t, "none");
        } else if (q->qscheme == SDICT_PER_TENSOR_AFFINE) {
            fmt_float_repr(q->scale, scale, sizeof scale);
            buf_printf(t, "%s(scale=%s, zero_point=%lld)", sdict_qscheme_name(q->qscheme), scale,
                       (long long)q->zero_point);
        } else {
            buf_printf(t, "%s(axis=%lld)", sdict_qscheme_name(q->qscheme), (long long)q->axis);
        }
    }
    if (strcmp(x.s, y.s) != 0) {
        printf("quantizer: %s  %s -> %s\n", path, x.s, y.s);
        c->ndiff++;
    } else if (qa->qscheme != SDICT_PER_TENSOR_AFFINE) {
        compare_part(c, path, "scales", qa->scales, qb->scales);
        compare_part(c, path, "zero_points", qa->zero_points, qb->zero_points);
    }
    buf_free(&x);
    buf_free(&y);
}

/* dtype, shape, device and values of two tensors (or two bare storages seen as 1-D tensors);
   x and y are scratch buffers. Without ga/gb (storages) requires_grad, parameter and the
   quantizer are not compared. */
static void compare_tensor_data(diff_ctx *c, const char *path, const sdict_tensor *ta,
                                const sdict_tensor *tb, const sdict_value *ga,
                                const sdict_value *gb, cli_buf *x, cli_buf *y) {
    bool same_shape = ta->ndim == tb->ndim &&
                      (ta->ndim == 0 || memcmp(ta->shape, tb->shape,
                                               (size_t)ta->ndim * sizeof ta->shape[0]) == 0);
    if (ta->dtype != tb->dtype) {
        printf("dtype: %s  %s -> %s\n", path, sdict_dtype_name(ta->dtype), sdict_dtype_name(tb->dtype));
        c->ndiff++;
    }
    if (!same_shape) {
        fmt_dims(x, ta->shape, ta->ndim);
        fmt_dims(y, tb->shape, tb->ndim);
        printf("shape: %s  %s -> %s\n", path, x->s, y->s);
        c->ndiff++;
    }
    if (ta->storage && tb->storage &&
        strcmp(sdict_tensor_device(ta), sdict_tensor_device(tb)) != 0) {
        buf_truncate(x, 0);
        buf_truncate(y, 0);
        fmt_device_tag(x, sdict_tensor_device(ta));
        fmt_device_tag(y, sdict_tensor_device(tb));
        printf("device: %s  %s -> %s\n", path, x->s, y->s);
        c->ndiff++;
    }
    if (ga && gb) {
        if (ta->requires_grad != tb->requires_grad) {
            printf("requires_grad: %s  %s -> %s\n", path, ta->requires_grad ? "True" : "False",
                   tb->requires_grad ? "True" : "False");
            c->ndiff++;
        }
        if (ta->is_parameter != tb->is_parameter) {
            printf("parameter: %s  %s -> %s\n", path, ta->is_parameter ? "True" : "False",
                   tb->is_parameter ? "True" : "False");
            c->ndiff++;
        }
        compare_quantizers(c, path, sdict_value_quantizer(ga), sdict_value_quantizer(gb));
    }
    cmp_mode mode = mode_for(ta->dtype, tb->dtype);
    if (!ta->storage || !tb->storage) {
        if ((ta->storage == NULL) != (tb->storage == NULL)) {
            printf("values: %s  %s -> %s\n", path, ta->storage ? "data" : "meta (no data)",
                   tb->storage ? "data" : "meta (no data)");
            c->ndiff++;
        }
    } else if (same_shape && mode != CM_NONE) {
        tensor_cmp r;
        sdict_error err;
        memset(&err, 0, sizeof err);
        const tensor_cmp *known = cli_view_cache_find(&c->cmps, ta, tb, (int)mode);
        sdict_status st = SDICT_OK;
        if (known) {
            r = *known;
        } else {
            st = SDICT_E_LIMIT;
            if (cli_charge_data(&c->data_used, c->data_budget,
                                (uint64_t)sdict_tensor_nbytes(ta) + sdict_tensor_nbytes(tb), &err))
                st = compare_tensors(ta, tb, mode, c->rtol, c->atol, &r, &err);
            if (st == SDICT_OK)
                cli_view_cache_put(&c->cmps, ta, tb, (int)mode, &r);
        }
        if (st != SDICT_OK) {
            if (err.code == SDICT_OK)
                err.code = st, err.offset = -1;
            if (!err.file[0]) /* the tensor's checks name no file: name both */
                snprintf(err.file, sizeof err.file, "%s (or %s)", c->file_a, c->file_b);
            fprintf(stderr, "statedict: cannot compare %s: ", path);
            cli_report_error(st, &err);
            c->failed = true;
        } else if (r.mismatched) {
            printf("values: %s  %lld of %lld elements differ; max abs diff %.6g, max rel diff %.6g\n",
                   path, (long long)r.mismatched, (long long)r.total, r.max_abs, r.max_rel);
            c->ndiff++;
        }
    }
}

static void compare_leaf(diff_ctx *c, const char *path, const sdict_value *a, const sdict_value *b) {
    sdict_kind ka = sdict_value_kind(a), kb = sdict_value_kind(b);
    cli_buf x, y;
    buf_init(&x);
    buf_init(&y);
    if (ka != kb) {
        printf("type: %s  %s -> %s\n", path, sdict_kind_name(ka), sdict_kind_name(kb));
        c->ndiff++;
    } else if (ka == SDICT_KIND_SPARSE || ka == SDICT_KIND_NESTED) {
        compare_composite(c, path, a, b);
    } else if (ka == SDICT_KIND_OBJECT) {
        /* inert objects (--inert): the classes are compared, not what they hold */
        fmt_value(&x, a, 16);
        fmt_value(&y, b, 16);
        if (strcmp(x.s, y.s) != 0) {
            printf("value: %s  %s -> %s\n", path, x.s, y.s);
            c->ndiff++;
        } else {
            printf("not compared: %s  %s (the contents of inert objects)\n",
                   path[0] ? path : "<root>", x.s);
            c->nobjects++;
        }
    } else if (ka != SDICT_KIND_TENSOR && ka != SDICT_KIND_STORAGE) {
        if (!values_equal(a, b, 0)) {
            fmt_value(&x, a, 16);
            fmt_value(&y, b, 16);
            printf("value: %s  %s -> %s\n", path, x.s, y.s);
            c->ndiff++;
        }
    } else if (ka == SDICT_KIND_STORAGE) {
        /* bare storages: compared as 1-D tensors of their class's dtype, by content */
        sdict_tensor t[2];
        int64_t shape[2], stride[2];
        cli_storage_tensor(a, &t[0], &shape[0], &stride[0]);
        cli_storage_tensor(b, &t[1], &shape[1], &stride[1]);
        compare_tensor_data(c, path, &t[0], &t[1], NULL, NULL, &x, &y);
    } else {
        compare_tensor_data(c, path, sdict_value_tensor(a), sdict_value_tensor(b), a, b, &x, &y);
    }
    buf_free(&x);
    buf_free(&y);
}

static bool load_leaves(sdict_doc *doc, bool dotted, leaves *l) {
    cli_buf path, exact;
    buf_init(&path);
    buf_init(&exact);
    memset(l, 0, sizeof *l);
    l->dotted = dotted;
    l->exact = &exact;
    bool ok = walk_leaves_exact(sdict_doc_root(doc), &path, &exact, true, collect, l);
    l->exact = NULL;
    buf_free(&path);
    buf_free(&exact);
    if (ok && !l->oom && build_index(l))
        return true;
    if (ok)
        fputs("statedict: out of memory\n", stderr);
    leaves_free(l);
    return false;
}

/* The walk of A: each leaf against B's leaf with the same path, or reported as only in A. */
typedef struct diff_a {
    diff_ctx c;
    leaves *b;
    const cli_buf *exact; /* the walk's current exact path */
} diff_a;

static void visit_a(void *ctx, const char *path, const sdict_value *v) {
    diff_a *a = ctx;
    leaf *m = lookup(a->b, a->b->dotted ? path : a->exact->s ? a->exact->s : "");
    if (!m) {
        report_only(&a->c, "A", path, v);
        return;
    }
    m->matched = true;
    compare_leaf(&a->c, path, v, m->v);
}

/* The metadata entry of md whose key prints as key (fmt_key), or NULL. Quadratic in the
   entries, which are few (a safetensors header's __metadata__). */
static const sdict_value *metadata_get(const sdict_value *md, const char *key, cli_buf *tmp) {
    for (size_t i = 0; i < sdict_dict_len(md); i++) {
        buf_truncate(tmp, 0);
        fmt_key(tmp, sdict_dict_key(md, i));
        if (strcmp(tmp->s ? tmp->s : "", key) == 0)
            return sdict_dict_val(md, i);
    }
    return NULL;
}

/* Compares the docs' metadata when both have some (a torch file has none: the format is not a
   difference). Lines: "metadata: 'KEY'  A -> B", "metadata only in A|B: 'KEY'  VALUE". */
static void diff_metadata(diff_ctx *c, const sdict_doc *da, const sdict_doc *db) {
    const sdict_value *ma = sdict_doc_metadata(da), *mb = sdict_doc_metadata(db);
    if (!ma || !mb)
        return;
    cli_buf key, tmp, va, vb;
    buf_init(&key), buf_init(&tmp), buf_init(&va), buf_init(&vb);
    for (int side = 0; side < 2; side++) {
        const sdict_value *m = side ? mb : ma, *other = side ? ma : mb;
        for (size_t i = 0; i < sdict_dict_len(m); i++) {
            buf_truncate(&key, 0);
            fmt_key(&key, sdict_dict_key(m, i));
            const sdict_value *v = sdict_dict_val(m, i);
            const sdict_value *w = metadata_get(other, key.s ? key.s : "", &tmp);
            buf_truncate(&va, 0);
            buf_truncate(&vb, 0);
            fmt_value(&va, v, 16);
            buf_truncate(&tmp, 0);
            fmt_value(&tmp, sdict_dict_key(m, i), 16);
            if (!w) {
                printf("metadata only in %s: %s  %s\n", side ? "B" : "A", tmp.s, va.s);
                c->ndiff++;
            } else if (!side) {
                fmt_value(&vb, w, 16);
                if (strcmp(va.s, vb.s) != 0) {
                    printf("metadata: %s  %s -> %s\n", tmp.s, va.s, vb.s);
                    c->ndiff++;
                }
            }
        }
    }
    buf_free(&key), buf_free(&tmp), buf_free(&va), buf_free(&vb);
}

/* A safetensors file or model folder holds one flat dict whose keys are the dotted paths of
   the tree it was converted from (`model_state_dict.fc.weight`), so against one of them leaves
   are matched by the dotted path as printed; otherwise by the exact path (key kinds and
   nesting), so a key "a.b" and a nested a -> b stay apart. */
static bool flat_match(const sdict_doc *da, const sdict_doc *db) {
    for (int i = 0; i < 2; i++) {
        sdict_format f = sdict_doc_format(i ? db : da);
        if (f == SDICT_FORMAT_SAFETENSORS || f == SDICT_FORMAT_SHARDED)
            return true;
    }
    return false;
}

int cmd_diff(const cli_cmd *cmd, const cli_args *args) {
    (void)cmd;
    sdict_doc *da = cli_load(args->pos[0], args);
    if (!da)
        return CLI_EXIT_BAD_INPUT;
    sdict_doc *db = cli_load(args->pos[1], args);
    if (!db) {
        cli_forget_ints();
        sdict_doc_free(da);
        return CLI_EXIT_BAD_INPUT;
    }
    /* B's leaves are indexed by path; A's are compared as its walk reaches them, so only one
       side's leaves are ever held */
    leaves lb;
    int rc = CLI_EXIT_BAD_INPUT;
    if (load_leaves(db, flat_match(da, db), &lb)) {
        diff_a a = {{0, 0, args->rtol, args->atol, false, args->pos[0], args->pos[1], {0}, 0,
                     cli_data_budget(args->pos, 2)},
                    &lb, NULL};
        cli_view_cache_init(&a.c.cmps, sizeof(tensor_cmp));
        cli_buf path, exact;
        buf_init(&path);
        buf_init(&exact);
        a.exact = &exact;
        bool ok = walk_leaves_exact(sdict_doc_root(da), &path, &exact, true, visit_a, &a);
        buf_free(&exact);
        diff_ctx *c = &a.c;
        if (ok) {
            for (size_t i = 0; i < lb.n; i++)
                if (!lb.items[i].matched) {
                    if (lb.dotted) {
                        buf_truncate(&path, 0);
                        buf_puts(&path, lb.items[i].exact);
                    } else {
                        exact_to_path(lb.items[i].exact, &path);
                    }
                    report_only(c, "B", path.s ? path.s : "", lb.items[i].v);
                }
            diff_metadata(c, da, db);
            if (c->ndiff)
                printf("%zu difference%s\n", c->ndiff, c->ndiff == 1 ? "" : "s");
            else if (!c->failed && !c->nobjects)
                printf("no differences\n");
            if (c->nobjects && !c->failed) {
                /* never "no differences" over what was not compared: exit as if different */
                printf("%zu pair%s of inert objects not compared: diff what `statedict extract` "
                       "writes of each\n", c->nobjects, c->nobjects == 1 ? "" : "s");
                fflush(stdout);
            }
            rc = c->failed                  ? CLI_EXIT_BAD_INPUT
                 : c->ndiff || c->nobjects ? CLI_EXIT_DIFFERENT
                                            : CLI_EXIT_OK;
        }
        buf_free(&path);
        cli_view_cache_free(&c->cmps);
        leaves_free(&lb);
    }
    cli_forget_ints();
    sdict_doc_free(da);
    cli_forget_ints();
    sdict_doc_free(db);
    return rc;
}
