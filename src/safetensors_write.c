/*
 safetensors_write.c - writes safetensors files (sdict_save with SDICT_FORMAT_SAFETENSORS), byte
 for byte as safetensors 0.8's serialize_to_file writes the same tensors and metadata.

 On-disk layout (huggingface/safetensors, safetensors/src/tensor.rs `prepare` / `serialize`):
   u64 little-endian  N, the header length (a multiple of 8)
   N bytes            JSON object, as serde_json writes it (no spaces): "__metadata__" first
                      when there is metadata, then one member per tensor
                      {"dtype":"F32","shape":[2,3],"data_offsets":[BEGIN,END]}, padded with
                      spaces to a multiple of 8
   data               the tensors' bytes, contiguous row-major little-endian, in header order,
                      each tensor's BEGIN the previous one's END (no alignment padding)
 Entries are sorted by dtype, largest enum value of safetensors' Dtype first (U64, I64, F64,
 C64, F32, U32, I32, BF16, F16, U16, I16, the F8s, I8, U8, F4, BOOL), then by name as bytes.
 The `__metadata__` members keep the order they have in the metadata dict: safetensors keeps
 them in a Rust HashMap, whose order changes from one process to the next (checked with 0.8:
 two runs of save_file with the same four keys wrote two different orders), so no order is
 "the" order and insertion order is the one a caller can predict.

 The tree is flattened first (nested dicts and lists to '.'-joined names), then tensors that
 are exact aliases are written once (safetensors' save_model rule for the name kept), other
 overlaps in one storage are refused, and the data streams out tensor by tensor, through
 bounded chunks for views that are not contiguous.
*/
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*==================================================================================================
 MARK: Dtypes
==================================================================================================*/

/* safetensors' Dtype enum in declaration order (the rank sorted on, descending). */
static const char *const st_names[] = {
    "BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0",
    "F8_E4M3FNUZ", "F8_E5M2FNUZ", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "C64",
    "F64", "I64", "U64",
};

/* Rank of the safetensors dtype for a statedict dtype, or -1 when safetensors has none. */
static int st_rank(sdict_dtype d) {
    switch (d) {
    case SDICT_BOOL: return 0;
    case SDICT_FLOAT4_E2M1FN_X2: return 1;
    case SDICT_UINT8: return 4;
    case SDICT_INT8: return 5;
    case SDICT_FLOAT8_E5M2: return 6;
    case SDICT_FLOAT8_E4M3FN: return 7;
    case SDICT_FLOAT8_E8M0FNU: return 8;
    case SDICT_FLOAT8_E4M3FNUZ: return 9;
    case SDICT_FLOAT8_E5M2FNUZ: return 10;
    case SDICT_INT16: return 11;
    case SDICT_UINT16: return 12;
    case SDICT_FLOAT16: return 13;
    case SDICT_BFLOAT16: return 14;
    case SDICT_INT32: return 15;
    case SDICT_UINT32: return 16;
    case SDICT_FLOAT32: return 17;
    case SDICT_COMPLEX64: return 18;
    case SDICT_FLOAT64: return 19;
    case SDICT_INT64: return 20;
    case SDICT_UINT64: return 21;
    default: return -1;
    }
}

/*==================================================================================================
 MARK: Flattening
==================================================================================================*/

typedef struct st_entry {
    char *name;            /* '.'-joined path, NUL-terminated (keys may hold NULs: name_len) */
    size_t name_len;
    char *origin;          /* the path as Python subscripts, ['a'][0], for messages */
    const sdict_value *v;
    const sdict_tensor *t; /* NULL for a leaf that is not a tensor */
    int rank;
    uint64_t nbytes;       /* bytes written */
    uint64_t begin, end;   /* byte extent in the storage (numel > 0) */
    struct st_entry *alias_of; /* the entry kept for an exact alias, or NULL */
    bool dropped;
} st_entry;

typedef struct st_ctx {
    st_entry *e;
    size_t n, cap;
    sdict_error *err;
    sdict__buf name, origin;
    size_t max_leaves;
} st_ctx;

#define ST_MAX_DEPTH 1000

static bool is_container(sdict_kind k) {
    return k == SDICT_KIND_DICT || k == SDICT_KIND_LIST || k == SDICT_KIND_TUPLE ||
           k == SDICT_KIND_SET;
}

static bool is_tensor_like(sdict_kind k) {
    return k == SDICT_KIND_TENSOR || k == SDICT_KIND_SPARSE || k == SDICT_KIND_NESTED ||
           k == SDICT_KIND_STORAGE;
}

/* A list or tuple made only of scalars (or empty): one leaf, as `ls` shows it. */
static bool scalar_seq(const sdict_value *v) {
    size_t n = sdict_seq_len(v);
    for (size_t i = 0; i < n; i++) {
        sdict_kind k = sdict_value_kind(sdict_seq_item(v, i));
        if (is_container(k) || is_tensor_like(k))
            return false;
    }
    return true;
}

static const char *origin_text(st_ctx *c) {
    sdict__buf_byte(&c->origin, 0);
    c->origin.len--;
    return c->origin.oom ? "?" : (const char *)c->origin.data;
}

static sdict_status add_leaf(st_ctx *c, const sdict_value *v) {
    /* A value reached through many paths (a list holding one list twice, nested) flattens to
       exponentially many names: the loader bounds that for files, this bounds built trees. */
    if (c->n >= c->max_leaves)
        return sdict__err(c->err, SDICT_E_LIMIT, origin_text(c), -1,
                          "the tree flattens to more than %zu names (values reached through "
                          "many paths)", c->max_leaves);
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64;
        st_entry *e = sdict__realloc(c->e, cap * sizeof *e);
        if (!e)
            return sdict__err(c->err, SDICT_E_NOMEM, NULL, -1, "out of memory");
        c->e = e;
        c->cap = cap;
    }
    st_entry *e = &c->e[c->n];
    memset(e, 0, sizeof *e);
    e->rank = -1;
    e->v = v;
    if (c->name.oom || c->origin.oom)
        return sdict__err(c->err, SDICT_E_NOMEM, NULL, -1, "out of memory");
    e->name = sdict__strndup((const char *)c->name.data ? (const char *)c->name.data : "",
                             c->name.len);
    e->name_len = c->name.len;
    e->origin = sdict__strndup(origin_text(c), c->origin.len);
    c->n++;
    if (!e->name || !e->origin)
        return sdict__err(c->err, SDICT_E_NOMEM, NULL, -1, "out of memory");
    return SDICT_OK;
}

static sdict_status flatten(st_ctx *c, const sdict_value *v, int depth) {
    sdict_kind k = sdict_value_kind(v);
    if (depth > ST_MAX_DEPTH)
        return sdict__err(c->err, SDICT_E_LIMIT, origin_text(c), -1,
                          "nesting deeper than %d levels", ST_MAX_DEPTH);
    bool dict = k == SDICT_KIND_DICT;
    /* an empty dict is a leaf (it cannot be written), except at the root: an empty file */
    if (!(dict || k == SDICT_KIND_LIST || k == SDICT_KIND_TUPLE) ||
        (dict ? sdict_dict_len(v) == 0 && depth > 0 : scalar_seq(v)))
        return add_leaf(c, v);
    size_t n = dict ? sdict_dict_len(v) : sdict_seq_len(v);
    size_t name_len = c->name.len, origin_len = c->origin.len;
    for (size_t i = 0; i < n; i++) {
        char num[32];
        const char *part;
        size_t part_len;
        bool quoted = false;
        if (dict) {
            const sdict_value *key = sdict_dict_key(v, i);
            if (sdict_value_kind(key) == SDICT_KIND_STR) {
                part = sdict_str_get(key, &part_len);
                quoted = true;
            } else if (sdict_value_kind(key) == SDICT_KIND_INT) {
                size_t len = sdict_int_to_string(key, num, sizeof num);
                if (len >= sizeof num)
                    return sdict__err(c->err, SDICT_E_INVALID_ARG, origin_text(c), -1,
                                      "a dict key is an int of %zu digits: not a tensor name", len);
                part = num, part_len = len;
            } else {
                return sdict__err(c->err, SDICT_E_INVALID_ARG, origin_text(c), -1,
                                  "a dict key is a %s: safetensors names are str (int keys are "
                                  "written in decimal)",
                                  sdict_kind_name(sdict_value_kind(key)));
            }
        } else {
            part_len = (size_t)snprintf(num, sizeof num, "%zu", i);
            part = num;
        }
        if (name_len)
            sdict__buf_byte(&c->name, '.');
        sdict__buf_append(&c->name, part, part_len);
        sdict__buf_append(&c->origin, quoted ? "['" : "[", quoted ? 2 : 1);
        sdict__buf_append(&c->origin, part, part_len);
        sdict__buf_append(&c->origin, quoted ? "']" : "]", quoted ? 2 : 1);
        sdict_status st = flatten(c, dict ? sdict_dict_val(v, i) : sdict_seq_item(v, i),
                                  depth + 1);
        if (st)
            return st;
        c->name.len = name_len;
        c->origin.len = origin_len;
    }
    return SDICT_OK;
}

/*==================================================================================================
 MARK: Python repr of the leaves kept as metadata
==================================================================================================*/

/* Python's repr(float): the shortest digits that read back, fixed notation for exponents
   -4..15 (with ".0" when integral), else d.ddde+XX. */
static void repr_float(sdict__buf *b, double d) {
    char s[40];
    if (isnan(d)) {
        sdict__buf_append(b, "nan", 3);
        return;
    }
    if (isinf(d)) {
        sdict__buf_append(b, d < 0 ? "-inf" : "inf", d < 0 ? 4 : 3);
        return;
    }
    int p = 1;
    for (; p < 17; p++) {
        snprintf(s, sizeof s, "%.*e", p - 1, d);
        if (strtod(s, NULL) == d)
            break;
    }
    snprintf(s, sizeof s, "%.*e", p - 1, d);
    /* s: [-]D[.DDD]e[+-]XX */
    char digits[24];
    size_t nd = 0;
    const char *q = s;
    bool neg = *q == '-';
    if (neg)
        q++;
    for (; *q && *q != 'e'; q++)
        if (*q != '.')
            digits[nd++] = *q;
    int exp = atoi(q + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    if (neg)
        sdict__buf_byte(b, '-');
    if (exp >= -4 && exp < 16) {
        if (exp < 0) {
            sdict__buf_append(b, "0.", 2);
            for (int i = -1; i > exp; i--)
                sdict__buf_byte(b, '0');
            sdict__buf_append(b, digits, nd);
        } else {
            for (int i = 0; i <= exp; i++)
                sdict__buf_byte(b, (size_t)i < nd ? (uint8_t)digits[i] : '0');
            sdict__buf_byte(b, '.');
            if ((size_t)exp + 1 < nd)
                sdict__buf_append(b, digits + exp + 1, nd - (size_t)exp - 1);
            else
                sdict__buf_byte(b, '0');
        }
    } else {
        sdict__buf_byte(b, (uint8_t)digits[0]);
        if (nd > 1) {
            sdict__buf_byte(b, '.');
            sdict__buf_append(b, digits + 1, nd - 1);
        }
        char e[8];
        int n = snprintf(e, sizeof e, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
        sdict__buf_append(b, e, (size_t)n);
    }
}

/* Python's repr of a str or bytes: single quotes unless the text holds ' and no ". Text keeps
   its printable non-ASCII characters, as Python 3's repr does. */
static void repr_text(sdict__buf *b, const char *s, size_t n, bool bytes) {
    bool sq = memchr(s, '\'', n) != NULL, dq = memchr(s, '"', n) != NULL;
    char quote = sq && !dq ? '"' : '\'';
    if (bytes)
        sdict__buf_byte(b, 'b');
    sdict__buf_byte(b, (uint8_t)quote);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        char esc[8];
        if (ch == '\\' || ch == (unsigned char)quote) {
            sdict__buf_byte(b, '\\');
            sdict__buf_byte(b, ch);
        } else if (ch == '\n') {
            sdict__buf_append(b, "\\n", 2);
        } else if (ch == '\r') {
            sdict__buf_append(b, "\\r", 2);
        } else if (ch == '\t') {
            sdict__buf_append(b, "\\t", 2);
        } else if (ch < 0x20 || ch == 0x7f || (bytes && ch >= 0x80)) {
            snprintf(esc, sizeof esc, "\\x%02x", ch);
            sdict__buf_append(b, esc, 4);
        } else {
            sdict__buf_byte(b, ch);
        }
    }
    sdict__buf_byte(b, (uint8_t)quote);
}

static void repr_value(sdict__buf *b, const sdict_value *v, int depth);

static void repr_items(sdict__buf *b, const sdict_value *v, const char *open, const char *close,
                       int depth) {
    size_t n = sdict_seq_len(v);
    sdict__buf_append(b, open, strlen(open));
    for (size_t i = 0; i < n; i++) {
        if (i)
            sdict__buf_append(b, ", ", 2);
        repr_value(b, sdict_seq_item(v, i), depth + 1);
    }
    if (n == 1 && sdict_value_kind(v) == SDICT_KIND_TUPLE && !strcmp(open, "("))
        sdict__buf_byte(b, ',');
    sdict__buf_append(b, close, strlen(close));
}

/* A repr stops at 64 KiB ("..."): every call appends at least one byte, so a leaf built of
   shared values cannot make the work grow past that. */
#define ST_MAX_REPR 65536

static void repr_value(sdict__buf *b, const sdict_value *v, int depth) {
    char tmp[64];
    if (depth > 64 || b->len > ST_MAX_REPR) {
        sdict__buf_append(b, "...", 3);
        return;
    }
    switch (sdict_value_kind(v)) {
    case SDICT_KIND_NONE: sdict__buf_append(b, "None", 4); break;
    case SDICT_KIND_BOOL:
        sdict__buf_append(b, sdict_bool_get(v) ? "True" : "False", sdict_bool_get(v) ? 4 : 5);
        break;
    case SDICT_KIND_INT: {
        size_t n = sdict_int_to_string(v, tmp, sizeof tmp);
        if (n < sizeof tmp) {
            sdict__buf_append(b, tmp, n);
        } else {
            char *big = sdict__malloc(n + 1);
            if (!big) {
                b->oom = true;
                break;
            }
            sdict_int_to_string(v, big, n + 1);
            sdict__buf_append(b, big, n);
            sdict__free(big);
        }
        break;
    }
    case SDICT_KIND_FLOAT: repr_float(b, sdict_float_get(v)); break;
    case SDICT_KIND_COMPLEX: {
        double re, im;
        sdict_complex_get(v, &re, &im);
        bool bare = re == 0 && !signbit(re);
        if (!bare)
            sdict__buf_byte(b, '(');
        if (!bare) {
            repr_float(b, re);
            b->len -= (b->len >= 2 && !memcmp(b->data + b->len - 2, ".0", 2)) ? 2 : 0;
            if (!signbit(im) || isnan(im))
                sdict__buf_byte(b, '+');
        }
        repr_float(b, im);
        b->len -= (b->len >= 2 && !memcmp(b->data + b->len - 2, ".0", 2)) ? 2 : 0;
        sdict__buf_byte(b, 'j');
        if (!bare)
            sdict__buf_byte(b, ')');
        break;
    }
    case SDICT_KIND_STR: {
        size_t n;
        const char *s = sdict_str_get(v, &n);
        repr_text(b, s, n, false);
        break;
    }
    case SDICT_KIND_BYTES: {
        size_t n;
        const char *s = sdict_bytes_get(v, &n);
        bool ba = sdict_value_pytype(v) == SDICT_PYTYPE_BYTEARRAY;
        if (ba)
            sdict__buf_append(b, "bytearray(", 10);
        repr_text(b, s ? s : "", n, true);
        if (ba)
            sdict__buf_byte(b, ')');
        break;
    }
    case SDICT_KIND_LIST: repr_items(b, v, "[", "]", depth); break;
    case SDICT_KIND_TUPLE:
        if (sdict_value_pytype(v) == SDICT_PYTYPE_TORCH_SIZE)
            repr_items(b, v, "torch.Size([", "])", depth);
        else
            repr_items(b, v, "(", ")", depth);
        break;
    case SDICT_KIND_SET: {
        bool fz = sdict_value_pytype(v) == SDICT_PYTYPE_FROZENSET;
        if (sdict_seq_len(v) == 0)
            sdict__buf_append(b, fz ? "frozenset()" : "set()", fz ? 11 : 5);
        else
            repr_items(b, v, fz ? "frozenset({" : "{", fz ? "})" : "}", depth);
        break;
    }
    case SDICT_KIND_DICT: {
        size_t n = sdict_dict_len(v);
        sdict__buf_byte(b, '{');
        for (size_t i = 0; i < n; i++) {
            if (i)
                sdict__buf_append(b, ", ", 2);
            repr_value(b, sdict_dict_key(v, i), depth + 1);
            sdict__buf_append(b, ": ", 2);
            repr_value(b, sdict_dict_val(v, i), depth + 1);
        }
        sdict__buf_byte(b, '}');
        break;
    }
    case SDICT_KIND_DTYPE: {
        const char *name = sdict_dtype_name(sdict_dtype_value_get(v));
        sdict__buf_append(b, "torch.", 6);
        sdict__buf_append(b, name, strlen(name));
        break;
    }
    case SDICT_KIND_DEVICE: {
        int64_t index;
        const char *type = sdict_device_get(v, &index);
        sdict__buf_append(b, "device(type='", 13);
        sdict__buf_append(b, type, strlen(type));
        if (index >= 0) {
            int n = snprintf(tmp, sizeof tmp, "', index=%lld)", (long long)index);
            sdict__buf_append(b, tmp, (size_t)n);
        } else {
            sdict__buf_append(b, "')", 2);
        }
        break;
    }
    case SDICT_KIND_QSCHEME: {
        const char *name = sdict_qscheme_name(sdict_qscheme_value_get(v));
        sdict__buf_append(b, "torch.", 6);
        sdict__buf_append(b, name, strlen(name));
        break;
    }
    case SDICT_KIND_LAYOUT: {
        const char *name = sdict_layout_name(sdict_layout_value_get(v));
        sdict__buf_append(b, "torch.", 6);
        sdict__buf_append(b, name, strlen(name));
        break;
    }
    default: {
        const char *name = sdict_kind_name(sdict_value_kind(v));
        sdict__buf_byte(b, '<');
        sdict__buf_append(b, name, strlen(name));
        sdict__buf_byte(b, '>');
        break;
    }
    }
}

/*==================================================================================================
 MARK: JSON as serde_json writes it
==================================================================================================*/

/* serde_json's string escaping: \" \\ \b \f \n \r \t, other bytes below 0x20 as \u00xx (lower
   case hex); everything else (DEL, non-ASCII UTF-8) as it is. */
static void json_str(sdict__buf *b, const char *s, size_t n) {
    sdict__buf_byte(b, '"');
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        const char *esc = NULL;
        char u[8];
        switch (ch) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        default:
            if (ch < 0x20) {
                snprintf(u, sizeof u, "\\u%04x", ch);
                esc = u;
            }
        }
        if (esc) {
            sdict__buf_append(b, s + run, i - run);
            sdict__buf_append(b, esc, strlen(esc));
            run = i + 1;
        }
    }
    sdict__buf_append(b, s + run, n - run);
    sdict__buf_byte(b, '"');
}

static void json_u64(sdict__buf *b, uint64_t v) {
    char s[24];
    int n = snprintf(s, sizeof s, "%llu", (unsigned long long)v);
    sdict__buf_append(b, s, (size_t)n);
}

/* Text Rust's String holds: UTF-8 without surrogates (Python's 'surrogatepass' form of a lone
   surrogate, which statedict keeps in a str, cannot cross into safetensors). */
static bool strict_utf8(const char *s, size_t n) {
    if (sdict__utf8_invalid_at((const uint8_t *)s, n) != n)
        return false;
    for (size_t i = 0; i + 1 < n; i++)
        if ((unsigned char)s[i] == 0xED && (unsigned char)s[i + 1] >= 0xA0)
            return false;
    return true;
}

/*==================================================================================================
 MARK: Checks, aliases and overlaps
==================================================================================================*/

static const char *leaf_type(const sdict_value *v) {
    sdict_pytype p = sdict_value_pytype(v);
    if (p == SDICT_PYTYPE_TORCH_SIZE)
        return "torch.Size";
    if (p == SDICT_PYTYPE_NUMPY_SCALAR)
        return "numpy scalar";
    return sdict_kind_name(sdict_value_kind(v));
}

/* Refuses tensors safetensors cannot hold; fills rank, nbytes and the storage extent. */
static sdict_status check_tensor(st_entry *e, sdict_error *err) {
    const sdict_value *v = e->v;
    sdict_kind k = sdict_value_kind(v);
    const char *what = NULL;
    if (k == SDICT_KIND_SPARSE)
        what = "a sparse tensor (safetensors holds strided tensors; save t.to_dense())";
    else if (k == SDICT_KIND_NESTED)
        what = "a nested tensor (safetensors holds strided tensors)";
    else if (k == SDICT_KIND_STORAGE)
        what = "a bare storage, not a tensor";
    else if (sdict_value_quantizer(v))
        what = "a quantized tensor (safetensors has no quantized dtypes; save t.dequantize() "
               "or t.int_repr())";
    if (what)
        return sdict__err(err, SDICT_E_UNSUPPORTED, e->name, -1, "'%s' is %s", e->name, what);
    const sdict_tensor *t = sdict_value_tensor(v);
    char np[8];
    if (sdict_value_pytype(v) == SDICT_PYTYPE_NUMPY_ARRAY && sdict_value_numpy_dtype(v, np) &&
        np[0] == '>')
        return sdict__err(err, SDICT_E_UNSUPPORTED, e->name, -1,
                          "'%s' is a big-endian numpy array (%s): safetensors is little-endian",
                          e->name, np);
    if (!t->storage)
        return sdict__err(err, SDICT_E_UNSUPPORTED, e->name, -1,
                          "'%s' is a meta tensor: it has no data to write", e->name);
    e->rank = st_rank(t->dtype);
    if (e->rank < 0)
        return sdict__err(err, SDICT_E_UNSUPPORTED, e->name, -1,
                          "'%s' has dtype %s, which safetensors cannot hold", e->name,
                          sdict_dtype_name(t->dtype));
    if (t->dtype == SDICT_FLOAT4_E2M1FN_X2 && t->ndim == 0)
        return sdict__err(err, SDICT_E_UNSUPPORTED, e->name, -1,
                          "'%s' is a 0-dim float4_e2m1fn_x2 tensor: safetensors' F4 shape doubles "
                          "the last dimension, which it does not have",
                          e->name);
    sdict_status st = sdict_tensor_check(t, err);
    if (st) {
        snprintf(err->record, sizeof err->record, "%s", e->name);
        return st;
    }
    e->t = t;
    e->nbytes = sdict_tensor_nbytes(t);
    uint64_t es = sdict_dtype_size(t->dtype);
    if (sdict_tensor_numel(t) > 0) {
        uint64_t last = (uint64_t)t->storage_offset;
        for (int32_t i = 0; i < t->ndim; i++)
            last += (uint64_t)(t->shape[i] - 1) * (uint64_t)t->stride[i]; /* checked above */
        e->begin = (uint64_t)t->storage_offset * es;
        e->end = (last + 1) * es;
        /* Expanded (stride-0) views could turn a few bytes of input into exabytes of output:
           refuse a tensor of more than 256 MiB that is 64 times its storage. */
        uint64_t cap = (uint64_t)sdict_storage_nbytes(t->storage) * 64u;
        if (e->nbytes > ((uint64_t)256 << 20) && e->nbytes > cap)
            return sdict__err(err, SDICT_E_LIMIT, e->name, -1,
                              "'%s' is an expanded view of %llu bytes over a storage of %zu bytes",
                              e->name, (unsigned long long)e->nbytes,
                              sdict_storage_nbytes(t->storage));
    }
    return SDICT_OK;
}

static bool same_geometry(const sdict_tensor *a, const sdict_tensor *b) {
    if (a->storage != b->storage || a->dtype != b->dtype || a->ndim != b->ndim ||
        a->storage_offset != b->storage_offset || a->is_conj != b->is_conj ||
        a->is_neg != b->is_neg)
        return false;
    for (int32_t i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i] || a->stride[i] != b->stride[i])
            return false;
    return true;
}

static int name_cmp(const st_entry *a, const st_entry *b) {
    size_t n = a->name_len < b->name_len ? a->name_len : b->name_len;
    int c = memcmp(a->name, b->name, n);
    return c ? c : (a->name_len > b->name_len) - (a->name_len < b->name_len);
}

/* The sorts below order arrays of entry pointers (qsort has no context argument in C11). */
static int by_name(const void *x, const void *y) {
    return name_cmp(*(st_entry *const *)x, *(st_entry *const *)y);
}

/* Written order: dtype rank descending, then name ascending (prepare() in tensor.rs). */
static int by_header(const void *x, const void *y) {
    const st_entry *a = *(st_entry *const *)x, *b = *(st_entry *const *)y;
    if (a->rank != b->rank)
        return a->rank > b->rank ? -1 : 1;
    return name_cmp(a, b);
}

/* Storage, then extent, then name: neighbours are the candidates for sharing. */
static int by_extent(const void *x, const void *y) {
    const st_entry *a = *(st_entry *const *)x, *b = *(st_entry *const *)y;
    uintptr_t sa = (uintptr_t)a->t->storage, sb = (uintptr_t)b->t->storage;
    if (sa != sb)
        return sa < sb ? -1 : 1;
    if (a->begin != b->begin)
        return a->begin < b->begin ? -1 : 1;
    if (a->end != b->end)
        return a->end < b->end ? -1 : 1;
    return name_cmp(a, b);
}

static bool listed(const sdict_save_opts *o, const st_entry *e, size_t *pos) {
    for (size_t i = 0; o && o->keep_names && i < o->keep_names_count; i++)
        if (o->keep_names[i] && strlen(o->keep_names[i]) == e->name_len &&
            memcmp(o->keep_names[i], e->name, e->name_len) == 0) {
            *pos = i;
            return true;
        }
    return false;
}

/* Exact aliases: one name kept per group, the others dropped and reported. save_model keeps
   sorted(names)[0] among the names covering the whole storage; an exact alias group has one
   geometry, so that is the least name of the group; keep_names overrides. Any other pair of
   tensors of one storage whose byte extents intersect is a partial overlap. */
static sdict_status resolve_sharing(st_entry **idx, size_t n, const sdict_save_opts *opts,
                                    sdict_error *err) {
    qsort(idx, n, sizeof *idx, by_extent);
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        while (j < n && same_geometry(idx[i]->t, idx[j]->t))
            j++;
        /* idx[i..j) are exact aliases, sorted by name within one extent */
        st_entry *keep = idx[i];
        size_t best = SIZE_MAX, pos;
        for (size_t k = i; k < j; k++)
            if (listed(opts, idx[k], &pos) && pos < best)
                best = pos, keep = idx[k];
        for (size_t k = i; k < j; k++)
            if (idx[k] != keep)
                idx[k]->dropped = true, idx[k]->alias_of = keep;
        i = j;
    }
    if (opts && (opts->st_flags & SDICT_SAVE_ST_COPY_OVERLAPS))
        return SDICT_OK;
    const st_entry *reach = NULL; /* kept entry of the current storage reaching furthest */
    for (size_t i = 0; i < n; i++) {
        const st_entry *x = idx[i];
        if (x->dropped)
            continue;
        if (reach && reach->t->storage == x->t->storage && x->begin < reach->end)
            return sdict__err(err, SDICT_E_INVALID_ARG, x->name, -1,
                              "'%s' and '%s' overlap in one storage (bytes %llu..%llu and "
                              "%llu..%llu) without being the same view (tied weights): each "
                              "would be written whole, the shared bytes twice; refused unless "
                              "copies are asked for",
                              reach->name, x->name, (unsigned long long)reach->begin,
                              (unsigned long long)reach->end, (unsigned long long)x->begin,
                              (unsigned long long)x->end);
        if (!reach || reach->t->storage != x->t->storage || x->end > reach->end)
            reach = x;
    }
    return SDICT_OK;
}

/*==================================================================================================
 MARK: Writing
==================================================================================================*/

/* The sink with progress reporting (sdict_save_opts.progress). */
typedef struct st_sink {
    sdict__write_fn write;
    void *ctx;
    const sdict_save_opts *opts;
    uint64_t done, total;
} st_sink;

#define ST_PIECE ((size_t)64 << 20)

static sdict_status sink_data(st_sink *k, const void *p, size_t n, sdict_error *err) {
    const uint8_t *b = p;
    while (n) {
        size_t m = n < ST_PIECE ? n : ST_PIECE;
        sdict_status st = k->write(k->ctx, b, m, err);
        if (st)
            return st;
        b += m, n -= m;
        k->done += m;
        if (k->opts && k->opts->progress)
            k->opts->progress(k->opts->ctx, k->done, k->total);
    }
    return SDICT_OK;
}

/* Writes the tensor's elements in C order: straight from the storage when it is contiguous and
   carries no conj/neg bit, else through copies of at most ~16 MiB of whole outer rows. */
static sdict_status write_data(const st_entry *e, st_sink *k, sdict_error *err) {
    const sdict_tensor *t = e->t;
    if (e->nbytes == 0)
        return SDICT_OK;
    if (sdict_tensor_is_contiguous(t) && !t->is_conj && !t->is_neg)
        return sink_data(k, sdict_tensor_data(t), (size_t)e->nbytes, err);
    sdict_tensor piece = *t;
    int64_t rows = 1, row_bytes = (int64_t)e->nbytes;
    int32_t d = 0;
    while (d < t->ndim && t->shape[d] == 1)
        d++;
    if (d < t->ndim) {
        rows = t->shape[d];
        row_bytes = (int64_t)(e->nbytes / (uint64_t)rows);
    }
    int64_t per = row_bytes > 0 ? (int64_t)(((int64_t)16 << 20) / row_bytes) : rows;
    if (per < 1)
        per = 1;
    size_t cap = (size_t)((per < rows ? per : rows) * row_bytes);
    void *buf = sdict__malloc(cap);
    if (!buf)
        return sdict__err(err, SDICT_E_NOMEM, e->name, -1, "out of memory copying %s",
                          e->origin);
    int64_t *sh = NULL;
    if (d < t->ndim) {
        sh = sdict__malloc((size_t)t->ndim * sizeof *sh);
        if (!sh) {
            sdict__free(buf);
            return sdict__err(err, SDICT_E_NOMEM, e->name, -1, "out of memory");
        }
        memcpy(sh, t->shape, (size_t)t->ndim * sizeof *sh);
        piece.shape = sh;
    }
    sdict_status st = SDICT_OK;
    for (int64_t r = 0; r < rows && !st; r += per) {
        int64_t nr = rows - r < per ? rows - r : per;
        if (sh) {
            sh[d] = nr;
            piece.storage_offset = t->storage_offset + r * t->stride[d];
        }
        size_t nb = (size_t)(nr * row_bytes);
        st = sdict_tensor_copy_to(&piece, t->dtype, buf, nb, err);
        if (!st)
            st = sink_data(k, buf, nb, err);
    }
    if (st && err && !err->record[0])
        snprintf(err->record, sizeof err->record, "%s", e->name);
    sdict__free(sh);
    sdict__free(buf);
    return st;
}

static sdict_status check_metadata(const sdict_value *md, sdict_error *err) {
    if (sdict_value_kind(md) != SDICT_KIND_DICT)
        return sdict__err(err, SDICT_E_INVALID_ARG, "__metadata__", -1,
                          "the metadata is a %s, not a dict of str -> str",
                          sdict_kind_name(sdict_value_kind(md)));
    for (size_t i = 0; i < sdict_dict_len(md); i++) {
        const sdict_value *k = sdict_dict_key(md, i), *v = sdict_dict_val(md, i);
        size_t kn, vn;
        const char *ks = sdict_str_get(k, &kn), *vs = sdict_str_get(v, &vn);
        if (!ks)
            return sdict__err(err, SDICT_E_INVALID_ARG, "__metadata__", -1,
                              "metadata key %zu is a %s: metadata is str -> str", i,
                              sdict_kind_name(sdict_value_kind(k)));
        if (!strict_utf8(ks, kn))
            return sdict__err(err, SDICT_E_INVALID_ARG, "__metadata__", -1,
                              "metadata key %zu is not UTF-8 text", i);
        if (!vs)
            return sdict__err(err, SDICT_E_INVALID_ARG, "__metadata__", -1,
                              "metadata value of '%s' is a %s: metadata is str -> str", ks,
                              sdict_kind_name(sdict_value_kind(v)));
        if (!strict_utf8(vs, vn))
            return sdict__err(err, SDICT_E_INVALID_ARG, "__metadata__", -1,
                              "metadata value of '%s' is not UTF-8 text", ks);
    }
    return SDICT_OK;
}

/* safetensors refuses headers above MAX_HEADER_SIZE (tensor.rs) on write and on read. */
#define ST_MAX_HEADER 100000000u

sdict_status sdict__st_write(const sdict_value *root, const sdict_save_opts *opts,
                             sdict__write_fn write, void *ctx, sdict_error *err) {
    uint32_t sf = opts ? opts->st_flags : 0;
    if (sf & ~(uint32_t)(SDICT_SAVE_ST_COPY_OVERLAPS | SDICT_SAVE_ST_DROP_NON_TENSORS |
                         SDICT_SAVE_ST_NON_TENSORS_AS_METADATA))
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "unknown safetensors flags 0x%x",
                          (unsigned)sf);
    if ((sf & SDICT_SAVE_ST_DROP_NON_TENSORS) && (sf & SDICT_SAVE_ST_NON_TENSORS_AS_METADATA))
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1,
                          "non-tensor leaves can be dropped or kept as metadata, not both");
    if (sdict_value_kind(root) != SDICT_KIND_DICT)
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1,
                          "safetensors holds a dict of tensors; the root is a %s",
                          sdict_kind_name(sdict_value_kind(root)));
    const sdict_value *md = opts && opts->metadata ? opts->metadata
                                                   : sdict_doc_metadata(sdict__value_doc(root));
    sdict_status st = md ? check_metadata(md, err) : SDICT_OK;
    if (st)
        return st;

    st_ctx c;
    memset(&c, 0, sizeof c);
    c.err = err;
    c.max_leaves = (size_t)sdict__doc_value_count(sdict__value_doc(root)) * 16 + 4096;
    sdict__buf_init(&c.name);
    sdict__buf_init(&c.origin);
    sdict__buf hdr, rep;
    sdict__buf_init(&hdr);
    sdict__buf_init(&rep);
    st_entry **idx = NULL, **tens = NULL;
    size_t nt = 0, nshared = 0, nother = 0;

    if ((st = flatten(&c, root, 0)))
        goto done;
    idx = sdict__calloc(c.n ? c.n : 1, sizeof *idx);
    tens = sdict__calloc(c.n ? c.n : 1, sizeof *tens);
    if (!idx || !tens) {
        st = sdict__err(err, SDICT_E_NOMEM, NULL, -1, "out of memory");
        goto done;
    }

    /* names: UTF-8, not __metadata__, and no two leaves flattened to one name */
    for (size_t i = 0; i < c.n; i++) {
        idx[i] = &c.e[i];
        if (!strict_utf8(c.e[i].name, c.e[i].name_len)) {
            st = sdict__err(err, SDICT_E_INVALID_ARG, c.e[i].name, -1,
                            "%s: the name is not UTF-8 text", c.e[i].origin);
            goto done;
        }
        if (c.e[i].name_len == 12 && !memcmp(c.e[i].name, "__metadata__", 12)) {
            st = sdict__err(err, SDICT_E_INVALID_ARG, c.e[i].name, -1,
                            "%s: '__metadata__' is safetensors' metadata, not a tensor name",
                            c.e[i].origin);
            goto done;
        }
    }
    qsort(idx, c.n, sizeof *idx, by_name);
    for (size_t i = 1; i < c.n; i++)
        if (!name_cmp(idx[i - 1], idx[i])) {
            const st_entry *a = idx[i - 1] < idx[i] ? idx[i - 1] : idx[i];
            const st_entry *b = idx[i - 1] < idx[i] ? idx[i] : idx[i - 1];
            st = sdict__err(err, SDICT_E_INVALID_ARG, a->name, -1,
                            "%s and %s both flatten to the name '%s'", a->origin, b->origin,
                            a->name);
            goto done;
        }

    /* tensors checked; every other leaf listed */
    for (size_t i = 0; i < c.n; i++) {
        if (!is_tensor_like(sdict_value_kind(c.e[i].v))) {
            nother++;
            continue;
        }
        if ((st = check_tensor(&c.e[i], err)))
            goto done;
        tens[nt++] = &c.e[i];
    }
    if (nother && !(sf & (SDICT_SAVE_ST_DROP_NON_TENSORS | SDICT_SAVE_ST_NON_TENSORS_AS_METADATA))) {
        char list[192];
        size_t len = 0, shown = 0;
        const char *first = NULL;
        for (size_t i = 0; i < c.n; i++) {
            if (c.e[i].t)
                continue;
            if (!first)
                first = c.e[i].name;
            char item[96];
            int n = snprintf(item, sizeof item, "%s%s (%s)", shown ? ", " : "", c.e[i].name,
                             leaf_type(c.e[i].v));
            if (n < 0 || (size_t)n >= sizeof item || len + (size_t)n >= sizeof list)
                break;
            memcpy(list + len, item, (size_t)n + 1);
            len += (size_t)n;
            shown++;
        }
        list[len] = '\0';
        char more[48] = "";
        if (shown < nother)
            snprintf(more, sizeof more, "%s and %zu more", shown ? "," : "", nother - shown);
        st = sdict__err(err, SDICT_E_INVALID_ARG, first, -1,
                        "%zu %s not tensors (safetensors holds tensors only; drop them or keep "
                        "them as metadata): %s%s",
                        nother, nother == 1 ? "value is" : "values are", list, more);
        goto done;
    }

    /* sharing: only tensors with elements take part (save_model skips empty storages) */
    for (size_t i = 0; i < nt; i++)
        if (sdict_tensor_numel(tens[i]->t) > 0)
            idx[nshared++] = tens[i];
    if ((st = resolve_sharing(idx, nshared, opts, err)))
        goto done;

    /* header: the tensors in written order */
    size_t nw = 0;
    for (size_t i = 0; i < nt; i++)
        if (!tens[i]->dropped)
            idx[nw++] = tens[i];
    qsort(idx, nw, sizeof *idx, by_header);

    sdict__buf_byte(&hdr, '{');
    bool first = true;
    bool as_md = (sf & SDICT_SAVE_ST_NON_TENSORS_AS_METADATA) && nother;
    if (md || as_md) {
        json_str(&hdr, "__metadata__", 12);
        sdict__buf_append(&hdr, ":{", 2);
        size_t nm = md ? sdict_dict_len(md) : 0;
        for (size_t i = 0; i < nm; i++) {
            size_t kn, vn;
            const char *ks = sdict_str_get(sdict_dict_key(md, i), &kn);
            const char *vs = sdict_str_get(sdict_dict_val(md, i), &vn);
            if (i)
                sdict__buf_byte(&hdr, ',');
            json_str(&hdr, ks, kn);
            sdict__buf_byte(&hdr, ':');
            json_str(&hdr, vs, vn);
        }
        for (size_t i = 0; as_md && i < c.n; i++) {
            if (c.e[i].t)
                continue;
            if (md && sdict_dict_get(md, c.e[i].name) &&
                strlen(c.e[i].name) == c.e[i].name_len) {
                st = sdict__err(err, SDICT_E_INVALID_ARG, c.e[i].name, -1,
                                "'%s' would become a metadata key the metadata already has",
                                c.e[i].name);
                goto done;
            }
            rep.len = 0;
            repr_value(&rep, c.e[i].v, 0);
            if ((st = sdict__buf_status(&rep, err)))
                goto done;
            if (!strict_utf8((const char *)rep.data, rep.len)) {
                st = sdict__err(err, SDICT_E_INVALID_ARG, c.e[i].name, -1,
                                "%s: its repr is not UTF-8 text", c.e[i].origin);
                goto done;
            }
            if (nm++)
                sdict__buf_byte(&hdr, ',');
            json_str(&hdr, c.e[i].name, c.e[i].name_len);
            sdict__buf_byte(&hdr, ':');
            json_str(&hdr, (const char *)rep.data, rep.len);
        }
        sdict__buf_byte(&hdr, '}');
        first = false;
    }
    uint64_t off = 0;
    for (size_t i = 0; i < nw; i++) {
        const st_entry *e = idx[i];
        const sdict_tensor *t = e->t;
        if (!first)
            sdict__buf_byte(&hdr, ',');
        first = false;
        json_str(&hdr, e->name, e->name_len);
        sdict__buf_append(&hdr, ":{\"dtype\":", 10);
        json_str(&hdr, st_names[e->rank], strlen(st_names[e->rank]));
        sdict__buf_append(&hdr, ",\"shape\":[", 10);
        for (int32_t d = 0; d < t->ndim; d++) {
            if (d)
                sdict__buf_byte(&hdr, ',');
            uint64_t size = (uint64_t)t->shape[d];
            /* safetensors' F4 counts 4-bit elements: torch's float4_e2m1fn_x2 packs two in
               each, so the last dimension doubles (what save_file 0.8 writes) */
            if (t->dtype == SDICT_FLOAT4_E2M1FN_X2 && d == t->ndim - 1)
                size *= 2;
            json_u64(&hdr, size);
        }
        sdict__buf_append(&hdr, "],\"data_offsets\":[", 18);
        json_u64(&hdr, off);
        sdict__buf_byte(&hdr, ',');
        if (!sdict__add_u64(off, e->nbytes, &off)) {
            st = sdict__err(err, SDICT_E_LIMIT, e->name, -1, "data past 2^64 bytes");
            goto done;
        }
        json_u64(&hdr, off);
        sdict__buf_append(&hdr, "]}", 2);
    }
    sdict__buf_byte(&hdr, '}');
    static const char spaces[8] = "       ";
    sdict__buf_append(&hdr, spaces, (8 - hdr.len % 8) % 8);
    if ((st = sdict__buf_status(&hdr, err)))
        goto done;
    if (hdr.len > ST_MAX_HEADER) {
        st = sdict__err(err, SDICT_E_LIMIT, "__metadata__", -1,
                        "the header would be %zu bytes; safetensors reads at most %u", hdr.len,
                        ST_MAX_HEADER);
        goto done;
    }

    /* report the dropped aliases, in name order, only once the file can be written */
    if (opts && opts->on_dropped) {
        size_t nd = 0;
        for (size_t i = 0; i < c.n; i++)
            if (c.e[i].dropped)
                tens[nd++] = &c.e[i];
        qsort(tens, nd, sizeof *tens, by_name);
        for (size_t i = 0; i < nd; i++)
            opts->on_dropped(opts->ctx, tens[i]->name, tens[i]->alias_of->name);
    }

    uint8_t len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (uint8_t)((uint64_t)hdr.len >> (8 * i));
    if ((st = write(ctx, len8, 8, err)) || (st = write(ctx, hdr.data, hdr.len, err)))
        goto done;
    st_sink sink = {write, ctx, opts, 0, off};
    if (!off && opts && opts->progress)
        opts->progress(opts->ctx, 0, 0);
    for (size_t i = 0; i < nw; i++)
        if ((st = write_data(idx[i], &sink, err)))
            goto done;

done:
    for (size_t i = 0; i < c.n; i++) {
        sdict__free(c.e[i].name);
        sdict__free(c.e[i].origin);
    }
    sdict__free(c.e);
    sdict__free(idx);
    sdict__free(tens);
    sdict__buf_free(&c.name);
    sdict__buf_free(&c.origin);
    sdict__buf_free(&hdr);
    sdict__buf_free(&rep);
    return st;
}
