/*
 cmd_show.c - `statedict show FILE KEY`: the values of one tensor, or the leaves of a subtree.

 Tensors print the way torch's print(tensor) does: nested brackets, a common format chosen from
 the shown values (integral floats as "1.", fixed "%.4f", or "%.4e" when the magnitudes span
 more than 1000x or leave [1e-4, 1e8]), and for more than 1000 elements only the first and last
 3 items of each dimension around "...". Each shown element is read through a 0-dim view of the
 tensor, so the strides are honoured and a huge tensor is never copied whole.
*/
#include "cli.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define EDGE_ITEMS 3
#define SUMMARIZE_THRESHOLD 1000

/* How the elements of a dtype are read and shown. */
typedef enum elem_class { EC_FLOAT, EC_INT, EC_UINT, EC_BOOL, EC_COMPLEX } elem_class;

typedef struct elem {
    double re, im;   /* EC_FLOAT, EC_COMPLEX */
    int64_t i;       /* EC_INT, EC_BOOL */
    uint64_t u;      /* EC_UINT */
} elem;

static elem_class class_of(sdict_dtype d) {
    switch (d) {
    case SDICT_INT8: case SDICT_INT16: case SDICT_INT32: case SDICT_INT64:
    case SDICT_UINT8: case SDICT_UINT16: case SDICT_UINT32:
        return EC_INT;
    case SDICT_UINT64:
        return EC_UINT;
    case SDICT_BOOL:
        return EC_BOOL;
    case SDICT_COMPLEX32: case SDICT_COMPLEX64: case SDICT_COMPLEX128:
        return EC_COMPLEX;
    default:
        return EC_FLOAT;
    }
}

/* Reads the element at storage element index `off` (a 0-dim view of t). */
static sdict_status read_elem(const sdict_tensor *t, int64_t off, elem *out, sdict_error *err) {
    sdict_tensor one = *t;
    one.ndim = 0;
    one.storage_offset = off;
    memset(out, 0, sizeof *out);
    unsigned char raw[16];
    sdict_status st;
    switch (t->dtype) {
    case SDICT_FLOAT8_E4M3FN: case SDICT_FLOAT8_E5M2: case SDICT_FLOAT8_E4M3FNUZ:
    case SDICT_FLOAT8_E5M2FNUZ: case SDICT_FLOAT8_E8M0FNU:
        /* float8 converts only to itself: decode the byte here */
        st = sdict_tensor_copy_to(&one, t->dtype, raw, 1, err);
        if (st != SDICT_OK)
            return st;
        out->re = float8_value(t->dtype, raw[0]);
        return SDICT_OK;
    case SDICT_COMPLEX32: case SDICT_COMPLEX64: case SDICT_COMPLEX128:
        st = sdict_tensor_copy_to(&one, t->dtype, raw, sizeof raw, err);
        if (st != SDICT_OK)
            return st;
        if (t->dtype == SDICT_COMPLEX128) {
            memcpy(&out->re, raw, 8);
            memcpy(&out->im, raw + 8, 8);
        } else if (t->dtype == SDICT_COMPLEX64) {
            float re, im;
            memcpy(&re, raw, 4);
            memcpy(&im, raw + 4, 4);
            out->re = re, out->im = im;
        } else {
            uint16_t re, im;
            memcpy(&re, raw, 2);
            memcpy(&im, raw + 2, 2);
            out->re = minifloat(re, 5, 10, 15, 0), out->im = minifloat(im, 5, 10, 15, 0);
        }
        return SDICT_OK;
    default:
        break;
    }
    switch (class_of(t->dtype)) {
    case EC_INT: case EC_BOOL:
        return sdict_tensor_copy_to(&one, SDICT_INT64, &out->i, sizeof out->i, err);
    case EC_UINT:
        return sdict_tensor_copy_to(&one, SDICT_UINT64, &out->u, sizeof out->u, err);
    default:
        return sdict_tensor_copy_to(&one, SDICT_FLOAT64, &out->re, sizeof out->re, err);
    }
}

/* torch's _Formatter for one set of numbers (the real parts, or the imaginary parts). */
typedef struct formatter {
    int mode;            /* 0 integral "1.", 1 fixed "%.4f", 2 scientific "%.4e"; ints: 3 */
    int width;           /* every formatted number is right-aligned to this width */
} formatter;

typedef struct show_ctx {
    const sdict_tensor *t;
    bool summarize;
    elem *vals;          /* shown elements, in print order */
    size_t nvals, cap;
    size_t next;         /* print pass cursor */
    sdict_status st;
    sdict_error err;
    formatter f1, f2;    /* f2: imaginary parts of complex tensors */
} show_ctx;

/* The index after i in a dimension of n items as it is shown: summarised dimensions jump from
   the first EDGE_ITEMS to the last ones. n or more when the dimension is done. */
static int64_t shown_next(const show_ctx *c, int64_t i, int64_t n) {
    return (c->summarize && n > 2 * EDGE_ITEMS && i + 1 == EDGE_ITEMS) ? n - EDGE_ITEMS : i + 1;
}

/* Reads every shown element, in print order, into c->vals. The index space is walked like an
   odometer over heap-held indices (any rank; no recursion per dimension); the caller makes
   sure the tensor has elements. */
static void gather(show_ctx *c) {
    const sdict_tensor *t = c->t;
    int32_t nd = t->ndim;
    int64_t *idx = calloc(nd ? (size_t)nd : 1, sizeof *idx), off = t->storage_offset;
    if (!idx) {
        c->st = SDICT_E_NOMEM;
        return;
    }
    for (;;) {
        if (c->nvals == c->cap) {
            size_t ncap = c->cap ? c->cap * 2 : 256;
            elem *p = realloc(c->vals, ncap * sizeof *p);
            if (!p) {
                c->st = SDICT_E_NOMEM;
                break;
            }
            c->vals = p;
            c->cap = ncap;
        }
        c->st = read_elem(t, off, &c->vals[c->nvals++], &c->err);
        if (c->st != SDICT_OK)
            break;
        int32_t k = nd - 1;
        for (; k >= 0; k--) {
            int64_t next = shown_next(c, idx[k], t->shape[k]);
            if (next < t->shape[k]) {
                off += (next - idx[k]) * t->stride[k];
                idx[k] = next;
                break;
            }
            off -= idx[k] * t->stride[k];
            idx[k] = 0;
        }
        if (k < 0)
            break;
    }
    free(idx);
}

/* One float as torch's _Formatter.format prints it, padded to the formatter's width. */
static void fmt_float(const formatter *f, double d, char *buf, size_t n) {
    char tmp[64];
    if (isnan(d))
        snprintf(tmp, sizeof tmp, "nan");
    else if (isinf(d))
        snprintf(tmp, sizeof tmp, d < 0 ? "-inf" : "inf");
    else if (f->mode == 0)
        snprintf(tmp, sizeof tmp, "%.0f.", d);
    else if (f->mode == 1)
        snprintf(tmp, sizeof tmp, "%.4f", d);
    else
        snprintf(tmp, sizeof tmp, "%.4e", d);
    snprintf(buf, n, "%*s", f->width, tmp);
}

/* One element, padded: ints and bools as str(), complex as torch's "re+imj" (the imaginary
   part formatted by its own formatter, then stripped of padding and given a sign). */
static void fmt_elem(const show_ctx *c, const elem *e, char *buf, size_t n) {
    char tmp[64];
    switch (class_of(c->t->dtype)) {
    case EC_INT:
        snprintf(tmp, sizeof tmp, "%" PRId64, e->i);
        snprintf(buf, n, "%*s", c->f1.width, tmp);
        break;
    case EC_UINT:
        snprintf(tmp, sizeof tmp, "%" PRIu64, e->u);
        snprintf(buf, n, "%*s", c->f1.width, tmp);
        break;
    case EC_BOOL:
        snprintf(buf, n, "%*s", c->f1.width, e->i ? "True" : "False");
        break;
    case EC_COMPLEX: {
        char re[64], im[64];
        fmt_float(&c->f1, e->re, re, sizeof re);
        fmt_float(&c->f2, e->im, im, sizeof im);
        const char *p = im;
        while (*p == ' ')
            p++;
        snprintf(buf, n, "%s%s%sj", re, (*p == '-' || *p == '+') ? "" : "+", p);
        break;
    }
    default:
        fmt_float(&c->f1, e->re, buf, n);
        break;
    }
}

/* torch's _Formatter over the shown values: integral floats print as "1.", magnitudes spanning
   more than 1000x or outside [1e-4, 1e8] as "%.4e", the rest as "%.4f"; widths come from the
   nonzero finite values only (so nan/inf may stick out, as in torch). */
static void choose_float_format(formatter *f, const elem *vals, size_t n, bool imag) {
    bool integral = true, any = false;
    double lo = INFINITY, hi = 0;
    for (size_t i = 0; i < n; i++) {
        double v = imag ? vals[i].im : vals[i].re, a = fabs(v);
        if (!isfinite(a) || a == 0)
            continue;
        any = true;
        if (a != floor(a))
            integral = false;
        if (a < lo)
            lo = a;
        if (a > hi)
            hi = a;
    }
    f->width = 1;
    f->mode = 0;
    if (!any)
        return;
    if (integral)
        f->mode = (hi / lo > 1000.0 || hi > 1e8) ? 2 : 0;
    else
        f->mode = (hi / lo > 1000.0 || hi > 1e8 || lo < 1e-4) ? 2 : 1;
    formatter probe = {f->mode, 0};
    for (size_t i = 0; i < n; i++) {
        double v = imag ? vals[i].im : vals[i].re;
        if (!isfinite(v) || v == 0)
            continue;
        char buf[64];
        fmt_float(&probe, v, buf, sizeof buf);
        if ((int)strlen(buf) > f->width)
            f->width = (int)strlen(buf);
    }
}

static void choose_format(show_ctx *c) {
    elem_class ec = class_of(c->t->dtype);
    if (ec == EC_FLOAT || ec == EC_COMPLEX) {
        choose_float_format(&c->f1, c->vals, c->nvals, false);
        if (ec == EC_COMPLEX)
            choose_float_format(&c->f2, c->vals, c->nvals, true);
        return;
    }
    c->f1.mode = 3;
    c->f1.width = 0;
    for (size_t i = 0; i < c->nvals; i++) {
        char buf[64];
        fmt_elem(c, &c->vals[i], buf, sizeof buf);
        if ((int)strlen(buf) > c->f1.width)
            c->f1.width = (int)strlen(buf);
    }
}

/* Width of one element plus ", ", for torch's line wrapping at 80 columns. */
static int element_length(const show_ctx *c) {
    if (class_of(c->t->dtype) == EC_COMPLEX)
        return c->f1.width + c->f2.width + 3;
    return c->f1.width + 2;
}

/*
 Prints the tensor like torch's _tensor_str_with_formatter, starting at column `indent`: the
 innermost dimension as rows of elements wrapped so that each line holds
 floor((80 - indent) / element_length) items (the " ..." of a summarised row counts as an
 item), outer dimensions as sub-tensors separated by "," and one newline per remaining
 dimension, "..." standing for the skipped middle. torch recurses per dimension; this walks the
 same nesting with one heap-held position per dimension, so any rank prints. The caller makes
 sure the tensor has elements.
*/
static void print_tensor(show_ctx *c, cli_buf *b, int indent) {
    const sdict_tensor *t = c->t;
    int32_t nd = t->ndim;
    char buf[160];
    if (nd == 0) {
        fmt_elem(c, &c->vals[c->next++], buf, sizeof buf);
        buf_puts(b, buf);
        return;
    }
    /* pos[d]: index being printed in dimension d; item[d]: its place in torch's data list
       (the "..." of a summarised dimension takes one place), for wrapping */
    int64_t *pos = calloc(2 * (size_t)nd, sizeof *pos);
    if (!pos) {
        c->st = SDICT_E_NOMEM;
        return;
    }
    int64_t *item = pos + nd;
    int32_t d = 0;
    buf_puts(b, "[");
    while (d >= 0) {
        int64_t n = t->shape[d], i = pos[d];
        if (i >= n) { /* dimension d done: back to its parent's next item */
            buf_puts(b, "]");
            if (--d >= 0) {
                pos[d]++;
                item[d]++;
            }
            continue;
        }
        bool inner = d == nd - 1;
        int col = indent + d; /* column of this dimension's "[" */
        if (i) {
            int per_line = (80 - col) / element_length(c);
            if (per_line < 1)
                per_line = 1;
            if (inner && item[d] % per_line != 0) {
                buf_puts(b, ", ");
            } else {
                buf_puts(b, ",");
                for (int32_t k = 0; k < (inner ? 1 : nd - d - 1); k++)
                    buf_puts(b, "\n");
                buf_printf(b, "%*s", col + 1, "");
            }
        }
        if (c->summarize && n > 2 * EDGE_ITEMS && i == EDGE_ITEMS) {
            buf_puts(b, inner ? " ..." : "..."); /* torch pads the inner one */
            pos[d] = n - EDGE_ITEMS;
            item[d]++;
            continue;
        }
        if (inner) {
            fmt_elem(c, &c->vals[c->next++], buf, sizeof buf);
            buf_puts(b, buf);
            pos[d]++;
            item[d]++;
        } else {
            buf_puts(b, "[");
            d++;
            pos[d] = item[d] = 0;
        }
    }
    free(pos);
}

static int show_tensor(const char *key, const sdict_tensor *t) {
    printf("%s: %s ", key[0] ? key : "<root>", sdict_dtype_name(t->dtype));
    cli_buf b;
    buf_init(&b);
    fmt_dims(&b, t->shape, t->ndim);
    buf_puts(&b, " stride ");
    fmt_dims(&b, t->stride, t->ndim);
    printf("%s offset %lld, %zu bytes%s%s\n", b.s, (long long)t->storage_offset,
           sdict_tensor_nbytes(t), t->is_parameter ? ", parameter" : "",
           t->requires_grad ? ", requires_grad" : "");
    buf_truncate(&b, 0);
    if (!t->storage) {
        printf("tensor(..., device='meta', size=%s)\n", (fmt_dims(&b, t->shape, t->ndim), b.s));
        buf_free(&b);
        return CLI_EXIT_OK;
    }
    show_ctx c;
    memset(&c, 0, sizeof c);
    c.t = t;
    c.summarize = sdict_tensor_numel(t) > SUMMARIZE_THRESHOLD;
    if (sdict_tensor_numel(t) > 0)
        gather(&c);
    if (c.st == SDICT_OK) {
        choose_format(&c);
        buf_puts(&b, "tensor(");
        if (sdict_tensor_numel(t) == 0)
            buf_puts(&b, "[]");
        else
            print_tensor(&c, &b, 7); /* 7 = strlen("tensor(") */
    }
    int rc = CLI_EXIT_OK;
    if (c.st != SDICT_OK) {
        if (c.err.code == SDICT_OK)
            c.err.code = c.st;
        cli_report_error(c.st, &c.err);
        rc = CLI_EXIT_BAD_INPUT;
    } else {
        sdict_dtype d = t->dtype;
        if (sdict_tensor_numel(t) == 0 && t->ndim != 1) { /* torch: size=(0, 3) */
            buf_puts(&b, ", size=(");
            for (int32_t i = 0; i < t->ndim; i++)
                buf_printf(&b, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
            buf_puts(&b, t->ndim == 1 ? ",)" : ")");
        }
        /* torch omits the default dtypes: float32, complex64, int64, bool */
        if (d != SDICT_FLOAT32 && d != SDICT_COMPLEX64 && d != SDICT_INT64 && d != SDICT_BOOL)
            buf_printf(&b, ", dtype=torch.%s", sdict_dtype_name(d));
        if (t->requires_grad)
            buf_puts(&b, ", requires_grad=True");
        buf_puts(&b, ")");
        /* str() of an nn.Parameter */
        printf("%s%s\n", t->is_parameter ? "Parameter containing:\n" : "", b.s);
    }
    free(c.vals);
    buf_free(&b);
    return rc;
}

static void print_leaf(void *ctx, const char *path, const sdict_value *v) {
    (void)ctx;
    cli_buf b;
    buf_init(&b);
    buf_printf(&b, "%s  ", path[0] ? path : "<root>");
    const sdict_tensor *t = sdict_value_tensor(v);
    if (t) {
        buf_printf(&b, "%s  ", sdict_dtype_name(t->dtype));
        fmt_dims(&b, t->shape, t->ndim);
    } else {
        buf_printf(&b, "%s  ", sdict_kind_name(sdict_value_kind(v)));
        fmt_value(&b, v, 64);
    }
    printf("%s\n", b.s);
    buf_free(&b);
}

/*
 Resolves a dotted path the way ls prints keys, for keys sdict_value_at cannot address (float,
 bool, None, bytes and tuple keys, ints past int64): at a dict every key whose printed text is
 the whole remaining path or a prefix of it followed by "." is tried, longest first; list,
 tuple and set items by decimal index.
*/
static const sdict_value *resolve(const sdict_value *v, const char *path, int depth) {
    if (!*path)
        return v;
    if (depth > CLI_MAX_DEPTH)
        return NULL;
    sdict_kind k = sdict_value_kind(v);
    if (k == SDICT_KIND_DICT) {
        size_t n = sdict_dict_len(v);
        size_t plen = strlen(path);
        const sdict_value *best = NULL;
        size_t best_len = 0;
        cli_buf kb;
        buf_init(&kb);
        for (size_t i = 0; i < n; i++) {
            buf_truncate(&kb, 0);
            buf_putn(&kb, "", 0);
            fmt_key(&kb, sdict_dict_key(v, i));
            size_t kl = kb.len;
            if (kl > plen || memcmp(kb.s, path, kl) != 0 || (kl < plen && path[kl] != '.'))
                continue;
            if (best && kl <= best_len)
                continue;
            const sdict_value *r = resolve(sdict_dict_val(v, i), path + kl + (kl < plen), depth + 1);
            if (r)
                best = r, best_len = kl;
        }
        buf_free(&kb);
        return best;
    }
    if (k == SDICT_KIND_LIST || k == SDICT_KIND_TUPLE || k == SDICT_KIND_SET) {
        char *end = NULL;
        if (*path < '0' || *path > '9')
            return NULL;
        unsigned long long idx = strtoull(path, &end, 10);
        if ((*end != '\0' && *end != '.') || idx >= sdict_seq_len(v))
            return NULL;
        return resolve(sdict_seq_item(v, (size_t)idx), *end ? end + 1 : end, depth + 1);
    }
    return NULL;
}

int cmd_show(const cli_cmd *cmd, const cli_args *args) {
    (void)cmd;
    const char *key = args->pos[1];
    sdict_doc *doc = cli_load(args->pos[0], args);
    if (!doc)
        return CLI_EXIT_BAD_INPUT;
    const sdict_value *v = sdict_value_at(sdict_doc_root(doc), key);
    if (!v)
        v = resolve(sdict_doc_root(doc), key, 0);
    int rc = CLI_EXIT_OK;
    if (!v) {
        fprintf(stderr, "statedict: %s: no key '%s'\n", args->pos[0], key);
        rc = CLI_EXIT_DIFFERENT;
    } else if (sdict_value_kind(v) == SDICT_KIND_TENSOR) {
        rc = show_tensor(key, sdict_value_tensor(v));
    } else if (is_scalar_kind(sdict_value_kind(v))) {
        cli_buf b;
        buf_init(&b);
        fmt_value(&b, v, 1000);
        printf("%s: %s  %s\n", key[0] ? key : "<root>", sdict_kind_name(sdict_value_kind(v)), b.s);
        buf_free(&b);
    } else {
        cli_buf path;
        buf_init(&path);
        buf_puts(&path, key);
        if (!walk_leaves(v, &path, true, print_leaf, NULL))
            rc = CLI_EXIT_BAD_INPUT;
        buf_free(&path);
    }
    sdict_doc_free(doc);
    return rc;
}
