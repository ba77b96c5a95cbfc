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

typedef struct show_ctx {
    const sdict_tensor *t;
    bool summarize;
    elem *vals;          /* shown elements, in print order */
    size_t nvals, cap;
    size_t next;         /* print pass cursor */
    sdict_status st;
    sdict_error err;
    /* float formatter */
    int mode;            /* 0 integral "1.", 1 fixed "%.4f", 2 scientific "%.4e" */
    int width;
} show_ctx;

/* Calls visit for the storage index of every shown element in print order. */
static void gather(show_ctx *c, int dim, int64_t off) {
    const sdict_tensor *t = c->t;
    if (c->st != SDICT_OK)
        return;
    if (dim == t->ndim) {
        if (c->nvals == c->cap) {
            size_t ncap = c->cap ? c->cap * 2 : 256;
            elem *p = realloc(c->vals, ncap * sizeof *p);
            if (!p) {
                c->st = SDICT_E_NOMEM;
                return;
            }
            c->vals = p;
            c->cap = ncap;
        }
        c->st = read_elem(t, off, &c->vals[c->nvals++], &c->err);
        return;
    }
    int64_t n = t->shape[dim];
    bool cut = c->summarize && n > 2 * EDGE_ITEMS;
    for (int64_t i = 0; i < n; i++) {
        if (cut && i == EDGE_ITEMS)
            i = n - EDGE_ITEMS;
        gather(c, dim + 1, off + i * t->stride[dim]);
    }
}

static void fmt_one_float(const show_ctx *c, double d, char *buf, size_t n) {
    if (isnan(d))
        snprintf(buf, n, "nan");
    else if (isinf(d))
        snprintf(buf, n, d < 0 ? "-inf" : "inf");
    else if (c->mode == 0)
        snprintf(buf, n, "%.0f.", d);
    else if (c->mode == 1)
        snprintf(buf, n, "%.4f", d);
    else
        snprintf(buf, n, "%.4e", d);
}

static void fmt_elem(const show_ctx *c, const elem *e, char *buf, size_t n) {
    switch (class_of(c->t->dtype)) {
    case EC_INT:
        snprintf(buf, n, "%" PRId64, e->i);
        break;
    case EC_UINT:
        snprintf(buf, n, "%" PRIu64, e->u);
        break;
    case EC_BOOL:
        snprintf(buf, n, "%s", e->i ? "True" : "False");
        break;
    case EC_COMPLEX: {
        char re[40], im[40];
        fmt_one_float(c, e->re, re, sizeof re);
        fmt_one_float(c, fabs(e->im), im, sizeof im);
        snprintf(buf, n, "%s%s%sj", re, signbit(e->im) ? "-" : "+", im);
        break;
    }
    default:
        fmt_one_float(c, e->re, buf, n);
        break;
    }
}

/* torch's _Formatter: choose integral / fixed / scientific from the finite shown values. */
static void choose_format(show_ctx *c) {
    bool integral = true, any = false;
    double lo = INFINITY, hi = 0;
    for (size_t i = 0; i < c->nvals; i++) {
        double parts[2] = {c->vals[i].re, c->vals[i].im};
        int np = class_of(c->t->dtype) == EC_COMPLEX ? 2 : 1;
        for (int k = 0; k < np; k++) {
            double a = fabs(parts[k]);
            if (!isfinite(a))
                continue;
            if (a != floor(a))
                integral = false;
            if (a != 0) {
                any = true;
                if (a < lo)
                    lo = a;
                if (a > hi)
                    hi = a;
            }
        }
    }
    if (integral)
        c->mode = (any && hi > 1e8) ? 2 : 0;
    else if (any && (hi / lo > 1000.0 || hi > 1e8 || lo < 1e-4))
        c->mode = 2;
    else
        c->mode = 1;
    c->width = 0;
    for (size_t i = 0; i < c->nvals; i++) {
        char buf[96];
        fmt_elem(c, &c->vals[i], buf, sizeof buf);
        int w = (int)strlen(buf);
        if (w > c->width)
            c->width = w;
    }
}

static void print_dim(show_ctx *c, cli_buf *b, int dim, int indent) {
    const sdict_tensor *t = c->t;
    if (dim == t->ndim) {
        char buf[96];
        fmt_elem(c, &c->vals[c->next++], buf, sizeof buf);
        buf_printf(b, "%*s", c->width, buf);
        return;
    }
    int64_t n = t->shape[dim];
    bool cut = c->summarize && n > 2 * EDGE_ITEMS;
    bool inner = dim == t->ndim - 1;
    buf_puts(b, "[");
    for (int64_t i = 0; i < n; i++) {
        if (i) {
            if (inner) {
                buf_puts(b, ", ");
            } else {
                buf_puts(b, ",");
                for (int k = 0; k < t->ndim - dim - 1; k++)
                    buf_puts(b, "\n");
                buf_printf(b, "%*s", indent + 1, "");
            }
        }
        if (cut && i == EDGE_ITEMS) {
            buf_puts(b, "...");
            i = n - EDGE_ITEMS - 1;
            continue;
        }
        print_dim(c, b, dim + 1, indent + 1);
    }
    buf_puts(b, "]");
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
    gather(&c, 0, t->storage_offset);
    int rc = CLI_EXIT_OK;
    if (c.st != SDICT_OK) {
        if (c.err.code == SDICT_OK)
            c.err.code = c.st;
        cli_report_error(c.st, &c.err);
        rc = CLI_EXIT_BAD_INPUT;
    } else {
        choose_format(&c);
        buf_puts(&b, "tensor(");
        if (sdict_tensor_numel(t) == 0) {
            buf_puts(&b, "[]");
        } else {
            print_dim(&c, &b, 0, 7); /* 7 = strlen("tensor(") */
        }
        sdict_dtype d = t->dtype;
        if (d != SDICT_FLOAT32 && d != SDICT_INT64 && d != SDICT_BOOL)
            buf_printf(&b, ", dtype=torch.%s", sdict_dtype_name(d));
        if (t->requires_grad)
            buf_puts(&b, ", requires_grad=True");
        buf_puts(&b, ")");
        printf("%s\n", b.s);
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

int cmd_show(const cli_cmd *cmd, const cli_args *args) {
    (void)cmd;
    const char *key = args->pos[1];
    sdict_doc *doc = cli_load(args->pos[0], args);
    if (!doc)
        return CLI_EXIT_BAD_INPUT;
    const sdict_value *v = sdict_value_at(sdict_doc_root(doc), key);
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
