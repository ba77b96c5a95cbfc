/*
 cmd_show.c - `statedict show FILE KEY`: the values of one tensor, or the leaves of a subtree.

 Tensors print the way torch's print(tensor) does (torch/_tensor_str.py): nested brackets, a
 common format chosen from the shown values (integral floats as "1.", fixed "%.4f", or "%.4e"
 when the magnitudes span more than 1000x or leave [1e-4, 1e8]), for more than 1000 elements
 only the first and last 3 items of each dimension around "...", and the suffixes (dtype,
 size, requires_grad, ...) wrapped at 80 columns as _add_suffixes does. Quantized tensors show
 their dequantized values and quantizer, sparse tensors their parts, nested tensors their
 components, the conj/neg bits are applied; dtypes torch cannot print (bits*, uint1..7,
 int1..7) show their raw bytes as unsigned integers, float4_e2m1fn_x2 its bytes as numbers as
 torch does. Each shown element is read through a 0-dim view of the tensor, so the strides are
 honoured and a huge tensor is never copied whole.
*/
#include "cli.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define EDGE_ITEMS 3
#define SUMMARIZE_THRESHOLD 1000
#define LINE_WIDTH 80

/* How the elements of a dtype are read and shown. */
typedef enum elem_class { EC_FLOAT, EC_INT, EC_UINT, EC_BOOL, EC_COMPLEX, EC_QUANT, EC_RAW } elem_class;

typedef struct elem {
    double re, im;   /* EC_FLOAT, EC_COMPLEX, EC_QUANT (dequantized) */
    int64_t i;       /* EC_INT, EC_BOOL */
    uint64_t u;      /* EC_UINT, EC_RAW */
} elem;

static bool is_quantized(sdict_dtype d) {
    return d == SDICT_QINT8 || d == SDICT_QUINT8 || d == SDICT_QINT32 || d == SDICT_QUINT4X2 ||
           d == SDICT_QUINT2X4;
}

static elem_class class_of(sdict_dtype d) {
    switch (d) {
    case SDICT_INT8: case SDICT_INT16: case SDICT_INT32: case SDICT_INT64:
    case SDICT_UINT8: case SDICT_UINT16: case SDICT_UINT32:
        return EC_INT;
    case SDICT_UINT64:
        return EC_UINT;
    case SDICT_BOOL:
        return EC_BOOL;
    case SDICT_COMPLEX32: case SDICT_BCOMPLEX32: case SDICT_COMPLEX64: case SDICT_COMPLEX128:
        return EC_COMPLEX;
    case SDICT_FLOAT64: case SDICT_FLOAT32: case SDICT_FLOAT16: case SDICT_BFLOAT16:
    case SDICT_FLOAT8_E4M3FN: case SDICT_FLOAT8_E5M2: case SDICT_FLOAT8_E4M3FNUZ:
    case SDICT_FLOAT8_E5M2FNUZ: case SDICT_FLOAT8_E8M0FNU: case SDICT_FLOAT4_E2M1FN_X2:
        return EC_FLOAT;
    default:
        return is_quantized(d) ? EC_QUANT : EC_RAW;
    }
}

/* What is being printed: a strided tensor, with its quantizer's per-channel parameters. */
typedef struct show_ctx {
    const sdict_tensor *t;
    const sdict_quantizer *q;
    double *ch_scale, *ch_zero;  /* per channel, shape[axis] each */
    bool summarize;
    elem *vals;          /* shown elements, in print order */
    size_t nvals, cap;
    size_t next;         /* print pass cursor */
    sdict_status st;
    sdict_error err;
    struct formatter {
        int mode;        /* 0 integral "1.", 1 fixed "%.4f", 2 scientific "%.4e"; ints: 3 */
        int width;       /* every formatted number is right-aligned to this width */
    } f1, f2;            /* f2: imaginary parts of complex tensors */
} show_ctx;
typedef struct formatter formatter;

/* The integer representation of quantized element `off` (packed dtypes read from their byte). */
static int64_t quantized_int(const sdict_tensor *t, int64_t off) {
    const uint8_t *base = sdict_storage_data(t->storage);
    size_t bits = sdict_dtype_bits(t->dtype);
    uint64_t bit = (uint64_t)off * bits;
    switch (t->dtype) {
    case SDICT_QINT8: return (int8_t)base[off];
    case SDICT_QUINT8: return base[off];
    case SDICT_QINT32: { int32_t v; memcpy(&v, base + 4 * off, 4); return v; }
    default: return (base[bit / 8] >> (bit % 8)) & ((1u << bits) - 1);
    }
}

/* Reads element `off` (a storage element index; `ch` its index along a per-channel axis). */
static sdict_status read_elem(const show_ctx *c, int64_t off, int64_t ch, elem *out,
                              sdict_error *err) {
    const sdict_tensor *t = c->t;
    sdict_tensor one = *t;
    one.ndim = 0;
    one.storage_offset = off;
    memset(out, 0, sizeof *out);
    switch (class_of(t->dtype)) {
    case EC_QUANT: {
        /* torch's dequantize: float((q - zero_point) * scale) */
        double q = (double)quantized_int(t, off);
        if (c->q->qscheme == SDICT_PER_TENSOR_AFFINE)
            out->re = (float)((float)c->q->scale * (float)(q - (double)c->q->zero_point));
        else
            out->re = (float)((q - c->ch_zero[ch]) * c->ch_scale[ch]);
        return SDICT_OK;
    }
    case EC_RAW: {
        uint8_t raw[8] = {0};
        sdict_status st = sdict_tensor_copy_to(&one, t->dtype, raw, sizeof raw, err);
        uint16_t h;
        memcpy(&h, raw, 2);
        out->u = sdict_dtype_size(t->dtype) == 2 ? h : raw[0];
        return st;
    }
    case EC_COMPLEX:
        return sdict_tensor_copy_to(&one, SDICT_COMPLEX128, &out->re, 2 * sizeof(double), err);
    case EC_INT: case EC_BOOL:
        return sdict_tensor_copy_to(&one, SDICT_INT64, &out->i, sizeof out->i, err);
    case EC_UINT:
        return sdict_tensor_copy_to(&one, SDICT_UINT64, &out->u, sizeof out->u, err);
    default:
        if (t->dtype == SDICT_FLOAT4_E2M1FN_X2) { /* torch shows the byte as a number */
            uint8_t raw;
            sdict_status st = sdict_tensor_copy_to(&one, t->dtype, &raw, 1, err);
            out->re = raw;
            return st;
        }
        return sdict_tensor_copy_to(&one, SDICT_FLOAT64, &out->re, sizeof out->re, err);
    }
}

/* The index after i in a dimension of n items as it is shown: summarised dimensions jump from
   the first EDGE_ITEMS to the last ones. n or more when the dimension is done. */
static int64_t shown_next(const show_ctx *c, int64_t i, int64_t n) {
    return (c->summarize && n > 2 * EDGE_ITEMS && i + 1 == EDGE_ITEMS) ? n - EDGE_ITEMS : i + 1;
}

/* Reads every shown element, in print order, into c->vals (with its index along a per-channel
   quantizer's axis). The index space is walked like an odometer over heap-held indices (any
   rank; no recursion per dimension); the caller makes sure the tensor has elements. */
static void gather(show_ctx *c) {
    const sdict_tensor *t = c->t;
    int32_t nd = t->ndim;
    int64_t *idx = calloc(nd ? (size_t)nd : 1, sizeof *idx), off = t->storage_offset;
    int32_t axis = c->q && c->q->qscheme != SDICT_PER_TENSOR_AFFINE ? (int32_t)c->q->axis : -1;
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
        c->st = read_elem(c, off, axis >= 0 ? idx[axis] : 0, &c->vals[c->nvals++], &c->err);
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
    case EC_UINT: case EC_RAW:
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
static void choose_float_format(formatter *f, const elem *vals, size_t n, bool imag,
                                sdict_dtype dt) {
    bool integral = true, any = false;
    double lo = INFINITY, hi = 0;
    /* float8_e8m0fnu has no zero and torch's isfinite() does not see its NaN: torch's
       ne(0) drops the smallest value (2^-127, what 0 becomes), and a NaN among the rest turns
       the min/max tests false: fixed notation, widths over every value but 2^-127 */
    bool e8m0 = dt == SDICT_FLOAT8_E8M0FNU, nan_seen = false;
    for (size_t i = 0; e8m0 && i < n; i++)
        nan_seen = nan_seen || isnan(vals[i].re);
    if (nan_seen) {
        formatter probe = {1, 0};
        f->mode = 1;
        f->width = 1;
        for (size_t i = 0; i < n; i++) {
            char buf[64];
            if (vals[i].re == ldexp(1.0, -127))
                continue;
            fmt_float(&probe, vals[i].re, buf, sizeof buf);
            if ((int)strlen(buf) > f->width)
                f->width = (int)strlen(buf);
        }
        return;
    }
    for (size_t i = 0; i < n; i++) {
        double v = imag ? vals[i].im : vals[i].re, a = fabs(v);
        if (!isfinite(a) || a == 0 || (e8m0 && a == ldexp(1.0, -127)))
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
        if (!isfinite(v) || v == 0 || (e8m0 && v == ldexp(1.0, -127)))
            continue;
        char buf[64];
        fmt_float(&probe, v, buf, sizeof buf);
        if ((int)strlen(buf) > f->width)
            f->width = (int)strlen(buf);
    }
}

static void choose_format(show_ctx *c) {
    elem_class ec = class_of(c->t->dtype);
    if (ec == EC_FLOAT || ec == EC_COMPLEX || ec == EC_QUANT) {
        choose_float_format(&c->f1, c->vals, c->nvals, false, c->t->dtype);
        if (ec == EC_COMPLEX)
            choose_float_format(&c->f2, c->vals, c->nvals, true, c->t->dtype);
        return;
    }
    c->f1.mode = 3;
    c->f1.width = 0;
    for (size_t i = 0; i < c->nvals; i++) {
        char buf[160];
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

/* A parameter tensor of a quantizer as doubles (NULL after reporting into c on failure). */
static double *channel_params(show_ctx *c, const sdict_value *v) {
    const sdict_tensor *t = sdict_value_tensor(v);
    int64_t n = sdict_tensor_numel(t);
    double *d = malloc((size_t)(n > 0 ? n : 1) * sizeof *d);
    if (!d)
        c->st = SDICT_E_NOMEM;
    else if ((c->st = sdict_tensor_copy_to(t, SDICT_FLOAT64, d, (size_t)n * sizeof *d, &c->err)))
        free(d), d = NULL;
    return d;
}

/* torch's _tensor_str: the bracketed values of t (dequantized when q) for a given indent. */
static sdict_status tensor_body(const sdict_tensor *t, const sdict_quantizer *q, int indent,
                                cli_buf *out, sdict_error *err) {
    show_ctx c;
    memset(&c, 0, sizeof c);
    c.t = t;
    c.q = q;
    c.summarize = sdict_tensor_numel(t) > SUMMARIZE_THRESHOLD;
    if (sdict_tensor_numel(t) == 0) {
        buf_puts(out, "[]");
        return SDICT_OK;
    }
    /* torch prints every element of a dimension up to 6 long, so an expanded view (stride 0)
       of many short dimensions prints without bound; a tensor's own storage bounds what a
       file holds, so more than that plus a million elements is refused */
    uint64_t shown = 1, cap = UINT64_C(1000000);
    if (t->storage && sdict_dtype_size(t->dtype))
        cap += sdict_storage_nbytes(t->storage) / sdict_dtype_size(t->dtype);
    for (int32_t k = 0; k < t->ndim && shown <= cap; k++)
        shown *= (uint64_t)(c.summarize && t->shape[k] > 2 * EDGE_ITEMS ? 2 * EDGE_ITEMS
                                                                        : t->shape[k]);
    if (shown > cap) {
        if (err) {
            memset(err, 0, sizeof *err);
            err->code = SDICT_E_LIMIT;
            err->offset = -1;
            snprintf(err->message, sizeof err->message,
                     "printing it as torch does would show more than %llu elements (its "
                     "storage's elements plus a million): an expanded view (stride 0) of "
                     "short dimensions",
                     (unsigned long long)cap);
        }
        return SDICT_E_LIMIT;
    }
    if (q && q->qscheme != SDICT_PER_TENSOR_AFFINE) {
        c.ch_scale = channel_params(&c, q->scales);
        if (c.ch_scale)
            c.ch_zero = channel_params(&c, q->zero_points);
    }
    if (c.st == SDICT_OK)
        gather(&c);
    if (c.st == SDICT_OK) {
        choose_format(&c);
        print_tensor(&c, out, indent);
    }
    if (c.st != SDICT_OK && err) {
        *err = c.err;
        if (err->code == SDICT_OK)
            err->code = c.st;
    }
    free(c.vals);
    free(c.ch_scale);
    free(c.ch_zero);
    return c.st;
}

/* A suffix list, joined by _add_suffixes. */
typedef struct suffixes {
    char *items[16];
    int n;
} suffixes;

static void suffix(suffixes *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void suffix(suffixes *s, const char *fmt, ...) {
    cli_buf b;
    buf_init(&b);
    va_list ap;
    va_start(ap, fmt);
    char tmp[512];
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    buf_puts(&b, tmp);
    if (s->n < 16)
        s->items[s->n++] = b.s;
    else
        free(b.s);
}

/* A suffix that is itself a (multi-line) text: "scale=" + str(scales). */
static void suffix_text(suffixes *s, const char *name, const cli_buf *text) {
    cli_buf b;
    buf_init(&b);
    buf_printf(&b, "%s=", name);
    buf_puts(&b, text->s ? text->s : "");
    if (s->n < 16)
        s->items[s->n++] = b.s;
    else
        free(b.s);
}

/* torch's _add_suffixes: appends each suffix after ", " while the line stays within 80
   columns, else on a new line indented to the prefix; then ")". */
static void add_suffixes(cli_buf *out, suffixes *s, int indent, bool force_newline) {
    const char *nl = strrchr(out->s ? out->s : "", '\n');
    /* torch's len(s) - s.rfind("\n") + 1, where rfind gives -1 without a newline */
    long last = (long)out->len - (nl ? (long)(nl - out->s) : -1) + 1;
    for (int i = 0; i < s->n; i++) {
        long len = (long)strlen(s->items[i]);
        if (force_newline || last + len + 2 > LINE_WIDTH) {
            buf_printf(out, ",\n%*s%s", indent, "", s->items[i]);
            last = indent + len;
            force_newline = false;
        } else {
            buf_printf(out, ", %s", s->items[i]);
            last += len + 2;
        }
        free(s->items[i]);
    }
    s->n = 0;
    buf_puts(out, ")");
}

/* str(tuple(shape)): "(2, 3)", "(5,)", "()", appended to b. */
static void size_text(cli_buf *b, const int64_t *d, int32_t nd) {
    buf_puts(b, "(");
    for (int32_t i = 0; i < nd; i++)
        buf_printf(b, "%s%lld", i ? ", " : "", (long long)d[i]);
    buf_puts(b, nd == 1 ? ",)" : ")");
}

static bool default_dtype(sdict_dtype d) {
    return d == SDICT_FLOAT32 || d == SDICT_COMPLEX64 || d == SDICT_INT64 || d == SDICT_BOOL;
}

static sdict_status value_repr(const sdict_value *v, cli_buf *out, sdict_error *err);

/* safetensors' sub-byte floats (F4, F6_E2M3, F6_E3M2), which no torch dtype prints */
static bool packed_float(sdict_dtype d) {
    return d == SDICT_FLOAT4_E2M1FN || d == SDICT_FLOAT6_E2M3FN || d == SDICT_FLOAT6_E3M2FN;
}

/* "packed 0x21 0x43 ..." : the raw bytes of a packed sub-byte tensor (first 256, then "...") */
static sdict_status packed_bytes(const sdict_tensor *t, cli_buf *out, sdict_error *err) {
    size_t n = sdict_tensor_nbytes(t);
    uint8_t *raw = malloc(n ? n : 1);
    if (!raw)
        return SDICT_E_NOMEM;
    sdict_status st = sdict_tensor_copy_to(t, t->dtype, raw, n, err);
    if (st == SDICT_OK) {
        buf_puts(out, "packed");
        for (size_t i = 0; i < n && i < 256; i++)
            buf_printf(out, " 0x%02x", raw[i]);
        if (n > 256)
            buf_puts(out, " ...");
    }
    free(raw);
    return st;
}

/* str() of a strided (possibly quantized) tensor. */
static sdict_status tensor_repr(const sdict_tensor *t, const sdict_quantizer *q, cli_buf *out,
                                sdict_error *err) {
    suffixes sx = {{0}, 0};
    cli_buf size;
    buf_init(&size);
    size_text(&size, t->shape, t->ndim);
    buf_puts(out, "tensor(");
    sdict_status st = SDICT_OK;
    if (!t->storage) {
        buf_puts(out, "...");
        suffix(&sx, "device='meta'");
        suffix_text(&sx, "size", &size);
        if (t->dtype != SDICT_FLOAT32)
            suffix(&sx, "dtype=torch.%s", sdict_dtype_name(t->dtype));
    } else if (packed_float(t->dtype)) {
        st = packed_bytes(t, out, err);
        suffix_text(&sx, "size", &size);
        suffix(&sx, "dtype=%s", sdict_dtype_name(t->dtype));
    } else if (q) {
        suffix_text(&sx, "size", &size);
        suffix(&sx, "dtype=torch.%s", sdict_dtype_name(t->dtype));
        suffix(&sx, "quantization_scheme=torch.%s", sdict_qscheme_name(q->qscheme));
        if (q->qscheme == SDICT_PER_TENSOR_AFFINE) {
            char scale[40];
            fmt_float_repr(q->scale, scale, sizeof scale);
            suffix(&sx, "scale=%s", scale);
            suffix(&sx, "zero_point=%lld", (long long)q->zero_point);
        } else {
            cli_buf p;
            buf_init(&p);
            st = value_repr(q->scales, &p, err);
            suffix_text(&sx, "scale", &p);
            buf_truncate(&p, 0);
            if (st == SDICT_OK)
                st = value_repr(q->zero_points, &p, err);
            suffix_text(&sx, "zero_point", &p);
            buf_free(&p);
            suffix(&sx, "axis=%lld", (long long)q->axis);
        }
        if (st == SDICT_OK)
            st = tensor_body(t, q, 7, out, err);
    } else {
        if (sdict_tensor_numel(t) == 0) {
            if (t->ndim != 1)
                suffix_text(&sx, "size", &size);
            if (t->dtype != SDICT_FLOAT32)
                suffix(&sx, "dtype=torch.%s", sdict_dtype_name(t->dtype));
        } else if (!default_dtype(t->dtype)) {
            suffix(&sx, "dtype=torch.%s", sdict_dtype_name(t->dtype));
        }
        st = tensor_body(t, NULL, 7, out, err);
    }
    if (t->requires_grad)
        suffix(&sx, "requires_grad=True");
    if (st == SDICT_OK)
        add_suffixes(out, &sx, 7, false);
    for (int i = 0; i < sx.n; i++)
        free(sx.items[i]);
    buf_free(&size);
    return st;
}

/* "NAME=tensor(" + the part's values at the matching indent + ")" (", size=(..)" when empty). */
static sdict_status sparse_part(cli_buf *out, const char *name, const sdict_value *part,
                                sdict_error *err) {
    const sdict_tensor *t = sdict_value_tensor(part);
    buf_printf(out, "%s=tensor(", name);
    sdict_status st = tensor_body(t, NULL, 7 + (int)strlen(name) + 8, out, err);
    if (sdict_tensor_numel(t) == 0) {
        buf_puts(out, ", size=");
        size_text(out, t->shape, t->ndim);
    }
    buf_puts(out, ")");
    return st;
}

/* str() of a sparse tensor, as _str_intern prints its parts and suffixes. */
static sdict_status sparse_repr(const sdict_sparse *sp, cli_buf *out, sdict_error *err) {
    static const char *const names[][2] = {{"crow_indices", "col_indices"},
                                           {"ccol_indices", "row_indices"}};
    bool coo = sp->layout == SDICT_LAYOUT_SPARSE_COO;
    bool rowwise = sp->layout == SDICT_LAYOUT_SPARSE_CSR || sp->layout == SDICT_LAYOUT_SPARSE_BSR;
    const sdict_tensor *vals = sdict_value_tensor(sp->values);
    const sdict_tensor *plain = sdict_value_tensor(coo ? sp->indices : sp->plain_indices);
    suffixes sx = {{0}, 0};
    cli_buf size;
    buf_init(&size);
    buf_puts(&size, "(");
    for (size_t i = 0; i < sdict_seq_len(sp->size); i++) {
        if (i)
            buf_puts(&size, ", ");
        fmt_int(&size, sdict_seq_item(sp->size, i));
    }
    buf_puts(&size, sdict_seq_len(sp->size) == 1 ? ",)" : ")");
    suffix(&sx, "size=%s", size.s);
    buf_free(&size);
    suffix(&sx, "nnz=%lld", (long long)plain->shape[plain->ndim - 1]);
    if (!default_dtype(vals->dtype))
        suffix(&sx, "dtype=torch.%s", sdict_dtype_name(vals->dtype));
    buf_puts(out, "tensor(");
    sdict_status st = coo ? sparse_part(out, "indices", sp->indices, err)
                          : sparse_part(out, names[!rowwise][0], sp->indices, err);
    if (st == SDICT_OK && !coo) {
        buf_puts(out, ",\n       ");
        st = sparse_part(out, names[!rowwise][1], sp->plain_indices, err);
    }
    if (st == SDICT_OK) {
        buf_puts(out, ",\n       ");
        st = sparse_part(out, "values", sp->values, err);
    }
    suffix(&sx, "layout=torch.%s", sdict_layout_name(sp->layout));
    if (sp->requires_grad)
        suffix(&sx, "requires_grad=True");
    if (st == SDICT_OK)
        add_suffixes(out, &sx, 7, coo);
    for (int i = 0; i < sx.n; i++)
        free(sx.items[i]);
    return st;
}

/* str() of a nested tensor: "nested_tensor([", each component's str() indented by two, "])". */
static sdict_status nested_repr(const sdict_nested *ns, cli_buf *out, sdict_error *err) {
    const sdict_tensor *buf = sdict_value_tensor(ns->buffer);
    const sdict_tensor *sizes = sdict_value_tensor(ns->sizes);
    int64_t n = sizes->shape[0], nd = sizes->shape[1];
    int64_t *meta = malloc((size_t)(3 * n * nd + n + 1) * sizeof *meta);
    if (!meta)
        return SDICT_E_NOMEM;
    /* sizes, strides, offsets: checked by the loader to fit int64 arrays of these shapes */
    sdict_status st = sdict_tensor_copy_to(sizes, SDICT_INT64, meta, (size_t)(n * nd) * 8, err);
    if (st == SDICT_OK)
        st = sdict_tensor_copy_to(sdict_value_tensor(ns->strides), SDICT_INT64, meta + n * nd,
                                  (size_t)(n * nd) * 8, err);
    if (st == SDICT_OK)
        st = sdict_tensor_copy_to(sdict_value_tensor(ns->storage_offsets), SDICT_INT64,
                                  meta + 2 * n * nd, (size_t)n * 8, err);
    buf_puts(out, "nested_tensor([\n");
    for (int64_t i = 0; st == SDICT_OK && i < n; i++) {
        sdict_tensor c = *buf;
        c.ndim = (int32_t)nd;
        c.storage_offset = buf->storage_offset + meta[2 * n * nd + i];
        c.shape = meta + i * nd;
        c.stride = meta + n * nd + i * nd;
        c.requires_grad = false;
        cli_buf one;
        buf_init(&one);
        st = tensor_repr(&c, NULL, &one, err);
        for (const char *line = one.s; st == SDICT_OK && line;) { /* "  " before each line */
            const char *end = strchr(line, '\n');
            buf_puts(out, "  ");
            buf_putn(out, line, end ? (size_t)(end - line) : strlen(line));
            line = end ? end + 1 : NULL;
            if (line)
                buf_puts(out, "\n");
        }
        buf_free(&one);
        buf_puts(out, i + 1 < n ? ",\n" : "\n");
    }
    buf_puts(out, "]");
    free(meta);
    suffixes sx = {{0}, 0};
    if (ns->requires_grad)
        suffix(&sx, "requires_grad=True");
    if (st == SDICT_OK)
        add_suffixes(out, &sx, 14, false);
    for (int i = 0; i < sx.n; i++)
        free(sx.items[i]);
    return st;
}

/* str() of a tensor, sparse or nested value (without "Parameter containing:"). */
static sdict_status value_repr(const sdict_value *v, cli_buf *out, sdict_error *err) {
    if (sdict_value_sparse(v))
        return sparse_repr(sdict_value_sparse(v), out, err);
    if (sdict_value_nested(v))
        return nested_repr(sdict_value_nested(v), out, err);
    return tensor_repr(sdict_value_tensor(v), sdict_value_quantizer(v), out, err);
}

/* Reports a failure to print key's values (the tensor's own checks name neither file nor
   key: they are added) and returns the exit status. */
static int repr_error(const char *file, const char *key, sdict_status st, sdict_error *err) {
    if (err->code == SDICT_OK)
        err->code = st, err->offset = -1;
    if (!err->file[0]) {
        snprintf(err->file, sizeof err->file, "%s", file);
        snprintf(err->record, sizeof err->record, "%s", key);
    }
    cli_report_error(st, err);
    return CLI_EXIT_BAD_INPUT;
}

/* The header line (key, dtype, shape, layout) and str() of a tensor-like value. */
static int show_tensor(const char *file, const char *key, const sdict_value *v) {
    const sdict_tensor *t = sdict_value_tensor(v);
    const sdict_sparse *sp = sdict_value_sparse(v);
    const sdict_nested *ns = sdict_value_nested(v);
    cli_buf b;
    buf_init(&b);
    if (t) {
        buf_printf(&b, "%s ", sdict_dtype_name(t->dtype));
        fmt_dims(&b, t->shape, t->ndim);
        buf_puts(&b, " stride ");
        fmt_dims(&b, t->stride, t->ndim);
        buf_printf(&b, " offset %lld, %zu bytes%s%s", (long long)t->storage_offset,
                   sdict_tensor_nbytes(t), t->is_parameter ? ", parameter" : "",
                   t->requires_grad ? ", requires_grad" : "");
        if (t->storage && strcmp(sdict_tensor_device(t), "cpu") != 0) {
            buf_puts(&b, ", device=");
            fmt_device_tag(&b, sdict_tensor_device(t));
        }
    } else {
        fmt_value(&b, v, 16);
    }
    printf("%s: %s\n", key[0] ? key : "<root>", b.s);
    buf_truncate(&b, 0);
    bool param = t ? t->is_parameter : sp ? sp->is_parameter : ns->is_parameter;
    sdict_error err;
    memset(&err, 0, sizeof err);
    sdict_status st = value_repr(v, &b, &err);
    int rc = CLI_EXIT_OK;
    if (st != SDICT_OK) {
        rc = repr_error(file, key, st, &err);
    } else {
        /* str() of an nn.Parameter */
        printf("%s%s\n", param ? "Parameter containing:\n" : "", b.s);
    }
    buf_free(&b);
    return rc;
}
/* A bare storage: a header (dtype, numel, bytes, device) and its elements printed as the 1-D
   tensor torch.tensor(storage) would be. */
static int show_storage(const char *file, const char *key, const sdict_value *v) {
    int64_t shape[1], stride[1];
    sdict_tensor t;
    cli_storage_tensor(v, &t, shape, stride);
    sdict_dtype dt = t.dtype;
    const sdict_storage *s = t.storage;
    size_t nbytes = sdict_storage_nbytes(s);
    cli_buf b;
    buf_init(&b);
    buf_printf(&b, "storage %s, numel %lld, %zu bytes, device=", sdict_dtype_name(dt),
               (long long)shape[0], nbytes);
    fmt_device_tag(&b, sdict_storage_location(s));
    printf("%s: %s\n", key[0] ? key : "<root>", b.s);
    buf_truncate(&b, 0);
    sdict_error err;
    memset(&err, 0, sizeof err);
    sdict_status st = tensor_repr(&t, NULL, &b, &err);
    int rc = CLI_EXIT_OK;
    if (st != SDICT_OK) {
        rc = repr_error(file, key, st, &err);
    } else {
        printf("%s\n", b.s);
    }
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
        if (t->storage && strcmp(sdict_tensor_device(t), "cpu") != 0) {
            buf_puts(&b, "  device=");
            fmt_device_tag(&b, sdict_tensor_device(t));
        }
    } else if (sdict_value_sparse(v) || sdict_value_nested(v)) {
        buf_printf(&b, "%s  ", sdict_kind_name(sdict_value_kind(v)));
        fmt_value(&b, v, 16);
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

/* show --metadata FILE [KEY]: every entry of the doc's metadata as "KEY: KIND  VALUE" (the key
   escaped, the value as repr), or the one entry KEY (exit 1 when absent). A file without
   metadata prints nothing. */
static int show_metadata(const char *file, const char *key, const sdict_doc *doc) {
    const sdict_value *md = sdict_doc_metadata(doc);
    bool found = false;
    cli_buf b;
    buf_init(&b);
    for (size_t i = 0; md && i < sdict_dict_len(md); i++) {
        const sdict_value *k = sdict_dict_key(md, i), *v = sdict_dict_val(md, i);
        buf_truncate(&b, 0);
        fmt_key(&b, k);
        if (key && strcmp(b.s, key) != 0)
            continue;
        found = true;
        buf_truncate(&b, 0);
        size_t klen = 0;
        const char *ks = sdict_str_get(k, &klen);
        if (ks)
            fmt_escaped(&b, ks, klen);
        else
            fmt_key(&b, k);
        char tn[32];
        buf_printf(&b, ": %s  ", cli_type_name(v, tn));
        fmt_value(&b, v, 1000);
        printf("%s\n", b.s);
    }
    buf_free(&b);
    if (key && !found) {
        fprintf(stderr, "statedict: %s: no metadata key '%s'\n", file, key);
        return CLI_EXIT_DIFFERENT;
    }
    return CLI_EXIT_OK;
}

int cmd_show(const cli_cmd *cmd, const cli_args *args) {
    if (args->metadata) {
        sdict_doc *doc = cli_load(args->pos[0], args);
        if (!doc)
            return CLI_EXIT_BAD_INPUT;
        int rc = show_metadata(args->pos[0], args->npos > 1 ? args->pos[1] : NULL, doc);
        cli_forget_ints();
        sdict_doc_free(doc);
        return rc;
    }
    if (args->npos != 2)
        return cli_usage_error(cmd, "show: wrong number of arguments");
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
    } else if (sdict_value_kind(v) == SDICT_KIND_TENSOR || sdict_value_kind(v) == SDICT_KIND_SPARSE ||
               sdict_value_kind(v) == SDICT_KIND_NESTED) {
        rc = show_tensor(args->pos[0], key, v);
    } else if (sdict_value_kind(v) == SDICT_KIND_STORAGE) {
        rc = show_storage(args->pos[0], key, v);
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
    if (v)
        cli_inert_hint("show", doc, v, 0);
    cli_forget_ints();
    sdict_doc_free(doc);
    return rc;
}
