/* common.c - option parsing, error reporting, value formatting and tree walking for the CLI. */
#define _GNU_SOURCE /* fopencookie */
#include "cli.h"

#include <sys/stat.h>

#include <dirent.h>

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/*==================================================================================================
 MARK: Options
==================================================================================================*/

void cli_print_usage(const cli_cmd *cmd, FILE *f) {
    fprintf(f, "usage: statedict %s\n", cmd->usage);
    fprintf(f, "  %s\n", cmd->summary);
    if (cmd->details)
        fprintf(f, "%s", cmd->details);
    if (cmd->options & CLI_OPT_LOAD)
        fprintf(f, "load options:\n"
                   "  --copy        read storages into memory instead of mapping the file\n"
                   "  --verify-crc  check the CRC-32 of every record read\n"
                   "  --big-endian  treat payloads of files without a byteorder record as big-endian\n"
                   "  --inert       read pickled objects (torch.save(model)) as inert data, printed\n"
                   "                <object MODULE.NAME>: nothing is imported or called\n");
}

int cli_usage_error(const cli_cmd *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("statedict: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fprintf(stderr, "usage: statedict %s\n(statedict help %s for the options)\n", cmd->usage,
            cmd->name);
    return CLI_EXIT_USAGE;
}

/* Parses a non-negative finite tolerance. */
static bool parse_tol(const char *s, double *out) {
    char *end = NULL;
    double d = strtod(s, &end);
    if (end == s || *end != '\0' || !isfinite(d) || d < 0)
        return false;
    *out = d;
    return true;
}

int cli_parse_args(const cli_cmd *cmd, int argc, char **argv, cli_args *args) {
    memset(args, 0, sizeof *args);
    args->rtol = 1e-5;
    args->atol = 1e-8;
    args->conv.dtype = -1;
    args->pos = calloc((size_t)argc + 1, sizeof *args->pos);
    if (!args->pos) {
        fputs("statedict: out of memory\n", stderr);
        return CLI_EXIT_BAD_INPUT;
    }
    bool only_pos = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (only_pos || a[0] != '-' || a[1] == '\0') { /* "-" alone is a positional */
            args->pos[args->npos++] = argv[i];
            continue;
        }
        uint32_t o = cmd->options;
        if (strcmp(a, "--") == 0) {
            only_pos = true;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            args->help = true;
        } else if ((o & CLI_OPT_LOAD) && strcmp(a, "--copy") == 0) {
            args->load_flags |= SDICT_LOAD_COPY;
        } else if ((o & CLI_OPT_LOAD) && strcmp(a, "--verify-crc") == 0) {
            args->load_flags |= SDICT_LOAD_VERIFY_CRC;
        } else if ((o & CLI_OPT_LOAD) && strcmp(a, "--inert") == 0) {
            args->load_flags |= SDICT_LOAD_INERT;
        } else if ((o & CLI_OPT_LOAD) && strcmp(a, "--big-endian") == 0) {
            args->load_flags |= SDICT_LOAD_ASSUME_BIG_ENDIAN;
        } else if ((o & CLI_OPT_JSON) && strcmp(a, "--json") == 0) {
            args->json = true;
        } else if ((o & CLI_OPT_META) && strcmp(a, "--metadata") == 0) {
            args->metadata = true;
        } else if ((o & CLI_OPT_JSON) && strcmp(a, "--pretty") == 0) {
            args->pretty = true;
        } else if ((o & CLI_OPT_SAVE) && strcmp(a, "--layout") == 0) {
            if (i + 1 >= argc)
                return free(args->pos), args->pos = NULL, cli_usage_error(cmd, "%s needs a value", a);
            const char *l = argv[++i];
            args->layout_given = true;
            if (strcmp(l, "2.x") == 0 || strcmp(l, "2") == 0)
                args->save_flags |= SDICT_SAVE_LAYOUT_TORCH2;
            else if (strcmp(l, "1.13") == 0)
                args->save_flags &= ~(uint32_t)SDICT_SAVE_LAYOUT_TORCH2;
            else
                return free(args->pos), args->pos = NULL,
                       cli_usage_error(cmd, "--layout: '%s' is not 1.13 or 2.x", l);
        } else if ((o & CLI_OPT_SAVE) && strcmp(a, "--not-weights-only") == 0) {
            args->save_flags |= SDICT_SAVE_ALLOW_NOT_WEIGHTS_ONLY;
        } else if ((o & CLI_OPT_TOL) && (strcmp(a, "--rtol") == 0 || strcmp(a, "--atol") == 0)) {
            if (i + 1 >= argc)
                return free(args->pos), args->pos = NULL, cli_usage_error(cmd, "%s needs a value", a);
            double *dst = a[2] == 'r' ? &args->rtol : &args->atol;
            if (!parse_tol(argv[++i], dst))
                return free(args->pos), args->pos = NULL,
                       cli_usage_error(cmd, "%s: '%s' is not a non-negative number", a, argv[i]);
        } else if ((o & CLI_OPT_CONVERT) && cli_convert_option(cmd, &args->conv, argc, argv, &i)) {
            if (i < 0)
                return free(args->pos), args->pos = NULL, CLI_EXIT_USAGE;
        } else {
            free(args->pos);
            args->pos = NULL;
            return cli_usage_error(cmd, "%s: unknown option '%s'", cmd->name, a);
        }
    }
    if (args->help)
        return 0;
    if (args->npos < cmd->min_pos || (cmd->max_pos >= 0 && args->npos > cmd->max_pos)) {
        free(args->pos);
        args->pos = NULL;
        return cli_usage_error(cmd, "%s: wrong number of arguments", cmd->name);
    }
    return 0;
}

/*==================================================================================================
 MARK: Errors and loading
==================================================================================================*/

/* A file written with CRCs off (torch.serialization.set_crc32_options(False)) is not corrupt:
   its records carry no CRC to check against. The library says so in the message of the
   SDICT_E_CRC it returns. */
static bool no_crc(sdict_status st, const sdict_error *err) {
    return st == SDICT_E_CRC && err && err->code == SDICT_E_CRC &&
           strncmp(err->message, "no CRC recorded", 15) == 0;
}

const char *cli_status_class(sdict_status st, const sdict_error *err) {
    if (no_crc(st, err))
        return "unverified";
    switch (st) {
    case SDICT_E_IO:
    case SDICT_E_NOMEM:
    case SDICT_E_INVALID_ARG:
    case SDICT_E_NOT_FOUND:
        return "unreadable";
    case SDICT_E_PICKLE_UNSAFE_GLOBAL:
        return "unsafe";
    case SDICT_E_DTYPE:
    case SDICT_E_ZIP_UNSUPPORTED:
    case SDICT_E_UNSUPPORTED:
    case SDICT_E_VERSION:
        return "unsupported";
    case SDICT_E_FORMAT:
        return "not a checkpoint";
    case SDICT_E_LIMIT:
        return "over a limit";
    default:
        return "corrupt";
    }
}

void cli_report_error(sdict_status st, const sdict_error *err) {
    char text[1024];
    if (err && err->code != SDICT_OK)
        sdict_error_format(err, text, sizeof text);
    else
        text[0] = '\0';
    const char *tag = no_crc(st, err) ? "no CRC to check" : sdict_status_str(st);
    if (text[0])
        fprintf(stderr, "statedict: %s: %s [%s]\n", cli_status_class(st, err), text, tag);
    else
        fprintf(stderr, "statedict: %s: %s\n", cli_status_class(st, err), tag);
}

sdict_doc *cli_load(const char *path, const cli_args *args) {
    sdict_status st;
    sdict_error err;
    return cli_load_ex(path, args, &st, &err);
}

sdict_doc *cli_load_ex(const char *path, const cli_args *args, sdict_status *st_out,
                       sdict_error *err_out) {
    sdict_load_opts opts;
    memset(&opts, 0, sizeof opts);
    opts.flags = args->load_flags;
    sdict_error err;
    memset(&err, 0, sizeof err);
    sdict_doc *doc = NULL;
    sdict_status st = sdict_load(path, &opts, &doc, &err);
    *st_out = st;
    if (st != SDICT_OK) {
        if (err.code == SDICT_OK) { /* be robust to a library that left err unfilled */
            err.code = st;
            snprintf(err.file, sizeof err.file, "%s", path);
            err.offset = -1;
        }
        cli_report_error(st, &err);
        *err_out = err;
        sdict_doc_free(doc);
        return NULL;
    }
    memset(err_out, 0, sizeof *err_out);
    if (!(opts.flags & SDICT_LOAD_COPY))
        cli_note_mapped(path);
    return doc;
}

/*==================================================================================================
 MARK: Text buffer
==================================================================================================*/

void buf_init(cli_buf *b) {
    b->s = NULL;
    b->len = b->cap = 0;
}

void buf_free(cli_buf *b) {
    free(b->s);
    buf_init(b);
}

static void buf_reserve(cli_buf *b, size_t extra) {
    if (b->len + extra + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *s = realloc(b->s, cap);
    if (!s) { /* the CLI has no sensible recovery from OOM while formatting text */
        fputs("statedict: out of memory\n", stderr);
        exit(CLI_EXIT_BAD_INPUT);
    }
    b->s = s;
    b->cap = cap;
}

void buf_putn(cli_buf *b, const char *s, size_t n) {
    buf_reserve(b, n);
    if (n)
        memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

void buf_puts(cli_buf *b, const char *s) { buf_putn(b, s, strlen(s)); }

void buf_printf(cli_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0)
        return;
    buf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void buf_truncate(cli_buf *b, size_t len) {
    if (len < b->len) {
        b->len = len;
        b->s[len] = '\0';
    }
}

/*==================================================================================================
 MARK: Value text
==================================================================================================*/

/*
 Python's float repr: the shortest digit string that reads back to the same double, shown in
 positional notation when the decimal exponent is in [-4, 16) and in scientific notation
 ("1e-05", "1.5e+16") otherwise, always with a ".0" when positional and integral.
*/
void fmt_float_repr(double d, char *buf, size_t n) {
    if (isnan(d)) {
        snprintf(buf, n, "nan");
        return;
    }
    if (isinf(d)) {
        snprintf(buf, n, d < 0 ? "-inf" : "inf");
        return;
    }
    char e[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(e, sizeof e, "%.*e", prec - 1, d);
        if (strtod(e, NULL) == d)
            break;
    }
    /* e is "[-]D.DDDDe[+-]XX": collect the digits and the exponent */
    const char *p = e;
    bool neg = *p == '-';
    if (neg)
        p++;
    char digits[24];
    int nd = 0;
    for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9' && nd < 23)
            digits[nd++] = *p;
    int exp10 = *p == 'e' ? atoi(p + 1) : 0;
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    digits[nd] = '\0';

    char out[64];
    size_t o = 0;
    if (neg)
        out[o++] = '-';
    if (exp10 >= -4 && exp10 < 16) {
        if (exp10 < 0) {
            out[o++] = '0';
            out[o++] = '.';
            for (int i = 0; i < -exp10 - 1; i++)
                out[o++] = '0';
            for (int i = 0; i < nd; i++)
                out[o++] = digits[i];
        } else {
            for (int i = 0; i <= exp10; i++)
                out[o++] = i < nd ? digits[i] : '0';
            out[o++] = '.';
            if (nd > exp10 + 1)
                for (int i = exp10 + 1; i < nd; i++)
                    out[o++] = digits[i];
            else
                out[o++] = '0';
        }
        out[o] = '\0';
    } else {
        out[o++] = digits[0];
        if (nd > 1) {
            out[o++] = '.';
            for (int i = 1; i < nd; i++)
                out[o++] = digits[i];
        }
        snprintf(out + o, sizeof out - o, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
    }
    snprintf(buf, n, "%s", out);
}

/* Decimal text of big ints already converted, by value address (a doc's values stay put while
   it is open; cli_forget_ints() drops them before a doc is freed). Converting is quadratic in
   the digits, and one memoized int can be reached thousands of times: each is converted once. */
typedef struct int_text {
    const sdict_value *v;
    char *text;
} int_text;
static int_text *g_ints;
static size_t g_ints_cap, g_ints_n;

void cli_forget_ints(void) {
    for (size_t i = 0; i < g_ints_cap; i++)
        free(g_ints[i].text);
    free(g_ints);
    g_ints = NULL;
    g_ints_cap = g_ints_n = 0;
}

static size_t ptr_slot(const void *p, size_t cap) {
    uint64_t h = (uint64_t)(uintptr_t)p * 0x9E3779B97F4A7C15ull;
    return (size_t)(h ^ (h >> 32)) & (cap - 1);
}

static const char *int_text_find(const sdict_value *v) {
    if (!g_ints_cap)
        return NULL;
    for (size_t i = ptr_slot(v, g_ints_cap); g_ints[i].v; i = (i + 1) & (g_ints_cap - 1))
        if (g_ints[i].v == v)
            return g_ints[i].text;
    return NULL;
}

/* Takes text; frees it if it cannot be remembered. */
static void int_text_put(const sdict_value *v, char *text) {
    if (2 * (g_ints_n + 1) > g_ints_cap) {
        size_t ncap = g_ints_cap ? 2 * g_ints_cap : 64;
        int_text *nt = calloc(ncap, sizeof *nt);
        if (!nt) {
            free(text);
            return;
        }
        for (size_t k = 0; k < g_ints_cap; k++) {
            if (!g_ints[k].v)
                continue;
            size_t i = ptr_slot(g_ints[k].v, ncap);
            while (nt[i].v)
                i = (i + 1) & (ncap - 1);
            nt[i] = g_ints[k];
        }
        free(g_ints);
        g_ints = nt;
        g_ints_cap = ncap;
    }
    size_t i = ptr_slot(v, g_ints_cap);
    while (g_ints[i].v)
        i = (i + 1) & (g_ints_cap - 1);
    g_ints[i] = (int_text){v, text};
    g_ints_n++;
}

void fmt_int(cli_buf *b, const sdict_value *v) {
    char small[32];
    int64_t i64;
    if (sdict_int_get(v, &i64) == SDICT_OK) {
        snprintf(small, sizeof small, "%lld", (long long)i64);
        buf_puts(b, small);
        return;
    }
    const char *known = int_text_find(v);
    if (known) {
        buf_puts(b, known);
        return;
    }
    size_t need = sdict_int_to_string(v, small, sizeof small);
    if (need < sizeof small) {
        buf_puts(b, small);
        return;
    }
    char *big = malloc(need + 1);
    if (!big) {
        buf_puts(b, "<int>");
        return;
    }
    sdict_int_to_string(v, big, need + 1);
    buf_puts(b, big);
    int_text_put(v, big);
}

/* Python repr of str/bytes content: quotes, escapes for quotes, backslash, controls. */
/* Appends the run of bytes >= 0x80 at s (n > 0 bytes), escaped by sdict_escape_text: C1
   controls, lone surrogates and invalid bytes as repr-like escapes, other UTF-8 as it is.
   Returns the run's length. */
static size_t fmt_escaped_run(cli_buf *b, const unsigned char *s, size_t n) {
    size_t run = 0;
    while (run < n && s[run] >= 0x80)
        run++;
    size_t need = sdict_escape_text((const char *)s, run, 0, NULL, 0);
    buf_reserve(b, need);
    sdict_escape_text((const char *)s, run, 0, b->s + b->len, need + 1);
    b->len += need;
    return run;
}

static void fmt_quoted(cli_buf *b, const unsigned char *s, size_t len, bool is_bytes) {
    if (is_bytes)
        buf_putn(b, "b", 1);
    buf_putn(b, "'", 1);
    for (size_t i = 0; i < len; i++) {
        unsigned c = s[i];
        if (c == '\'' || c == '\\')
            buf_printf(b, "\\%c", (char)c);
        else if (c == '\n')
            buf_puts(b, "\\n");
        else if (c == '\t')
            buf_puts(b, "\\t");
        else if (c == '\r')
            buf_puts(b, "\\r");
        else if (c < 0x20 || c == 0x7f || (is_bytes && c >= 0x80))
            buf_printf(b, "\\x%02x", c);
        else if (c >= 0x80)
            i += fmt_escaped_run(b, s + i, len - i) - 1;
        else
            buf_putn(b, (const char *)&s[i], 1);
    }
    buf_putn(b, "'", 1);
}

void fmt_dims(cli_buf *b, const int64_t *d, int32_t n) {
    buf_putn(b, "[", 1);
    for (int32_t i = 0; i < n; i++)
        buf_printf(b, "%s%lld", i ? ", " : "", (long long)d[i]);
    buf_putn(b, "]", 1);
}

static void fmt_value_depth(cli_buf *b, const sdict_value *v, size_t max_items, int depth);

/* One part of a complex repr: Python's repr of the float without a trailing ".0". */
static void complex_part(char *buf, size_t n, double d) {
    fmt_float_repr(d, buf, n);
    size_t len = strlen(buf);
    if (len > 2 && strcmp(buf + len - 2, ".0") == 0)
        buf[len - 2] = '\0';
}

void fmt_complex_repr(cli_buf *b, const sdict_value *v) {
    double re, im;
    char r[40], i[40];
    sdict_complex_get(v, &re, &im);
    complex_part(r, sizeof r, re);
    complex_part(i, sizeof i, im);
    if (re == 0 && !signbit(re))
        buf_printf(b, "%sj", i); /* repr(1j) is '1j' */
    else
        buf_printf(b, "(%s%s%sj)", r, (i[0] == '-') ? "" : "+", i);
}

static void fmt_seq_items(cli_buf *b, const sdict_value *v, size_t max_items, int depth) {
    size_t n = sdict_seq_len(v);
    for (size_t i = 0; i < n; i++) {
        if (n > max_items && i == max_items / 2) {
            buf_printf(b, "%s...", i ? ", " : "");
            i = n - (max_items - max_items / 2);
            buf_puts(b, ", ");
        } else if (i) {
            buf_puts(b, ", ");
        }
        fmt_value_depth(b, sdict_seq_item(v, i), max_items, depth + 1);
    }
}

static void fmt_value_depth(cli_buf *b, const sdict_value *v, size_t max_items, int depth) {
    char tmp[64];
    if (depth > 64) {
        buf_puts(b, "...");
        return;
    }
    switch (sdict_value_kind(v)) {
    case SDICT_KIND_NONE:
        buf_puts(b, "None");
        break;
    case SDICT_KIND_BOOL:
        buf_puts(b, sdict_bool_get(v) ? "True" : "False");
        break;
    case SDICT_KIND_INT:
        fmt_int(b, v);
        break;
    case SDICT_KIND_FLOAT:
        fmt_float_repr(sdict_float_get(v), tmp, sizeof tmp);
        buf_puts(b, tmp);
        break;
    case SDICT_KIND_STR: {
        size_t len = 0;
        const char *s = sdict_str_get(v, &len);
        fmt_quoted(b, (const unsigned char *)s, s ? len : 0, false);
        break;
    }
    case SDICT_KIND_BYTES: {
        size_t len = 0;
        const void *p = sdict_bytes_get(v, &len);
        fmt_quoted(b, p, p ? len : 0, true);
        break;
    }
    case SDICT_KIND_DTYPE:
        buf_printf(b, "torch.%s", sdict_dtype_name(sdict_dtype_value_get(v)));
        break;
    case SDICT_KIND_QSCHEME:
        buf_printf(b, "torch.%s", sdict_qscheme_name(sdict_qscheme_value_get(v)));
        break;
    case SDICT_KIND_LAYOUT:
        buf_printf(b, "torch.%s", sdict_layout_name(sdict_layout_value_get(v)));
        break;
    case SDICT_KIND_DEVICE: {
        int64_t index;
        const char *type = sdict_device_get(v, &index);
        if (index >= 0)
            buf_printf(b, "device(type='%s', index=%lld)", type, (long long)index);
        else
            buf_printf(b, "device(type='%s')", type);
        break;
    }
    case SDICT_KIND_COMPLEX:
        fmt_complex_repr(b, v);
        break;
    case SDICT_KIND_TENSOR: {
        const sdict_tensor *t = sdict_value_tensor(v);
        buf_printf(b, "tensor(%s ", sdict_dtype_name(t->dtype));
        fmt_dims(b, t->shape, t->ndim);
        buf_puts(b, ")");
        break;
    }
    case SDICT_KIND_SPARSE: {
        const sdict_sparse *sp = sdict_value_sparse(v);
        const sdict_tensor *vals = sdict_value_tensor(sp->values);
        buf_printf(b, "tensor(%s ", sdict_dtype_name(vals->dtype));
        fmt_value_depth(b, sp->size, max_items, depth + 1);
        buf_printf(b, ", layout=torch.%s)", sdict_layout_name(sp->layout));
        break;
    }
    case SDICT_KIND_STORAGE: {
        sdict_dtype dt = SDICT_UINT8;
        const sdict_storage *st = sdict_value_storage(v, &dt);
        size_t es = sdict_dtype_size(dt);
        buf_printf(b, "storage(%s, numel=%zu, nbytes=%zu, device=", sdict_dtype_name(dt),
                   es ? sdict_storage_nbytes(st) / es : 0, sdict_storage_nbytes(st));
        fmt_device_tag(b, sdict_storage_location(st));
        buf_puts(b, ")");
        break;
    }
    case SDICT_KIND_NESTED: {
        const sdict_nested *ns = sdict_value_nested(v);
        const sdict_tensor *sizes = sdict_value_tensor(ns->sizes);
        buf_printf(b, "nested_tensor(%s, %lld components)",
                   sdict_dtype_name(sdict_value_tensor(ns->buffer)->dtype),
                   (long long)sizes->shape[0]);
        break;
    }
    case SDICT_KIND_OBJECT: {
        /* <object torch.nn.modules.conv.Conv2d>; a class reference <class ...>; the names
           come from the file: escaped */
        const char *mod = sdict_object_module(v), *name = sdict_object_name(v);
        buf_puts(b, sdict_object_how(v) == SDICT_OBJECT_CLASS ? "<class " : "<object ");
        fmt_escaped(b, mod, strlen(mod));
        buf_puts(b, ".");
        fmt_escaped(b, name, strlen(name));
        buf_puts(b, sdict_object_callee(v) ? "(...)>" : ">");
        break;
    }
    case SDICT_KIND_LIST:
        buf_puts(b, "[");
        fmt_seq_items(b, v, max_items, depth);
        buf_puts(b, "]");
        break;
    case SDICT_KIND_TUPLE:
        buf_puts(b, "(");
        fmt_seq_items(b, v, max_items, depth);
        buf_puts(b, sdict_seq_len(v) == 1 ? ",)" : ")");
        break;
    case SDICT_KIND_SET: {
        bool frozen = sdict_value_pytype(v) == SDICT_PYTYPE_FROZENSET; /* as Python's repr */
        if (sdict_seq_len(v) == 0) {
            buf_puts(b, frozen ? "frozenset()" : "set()");
        } else {
            buf_puts(b, frozen ? "frozenset({" : "{");
            fmt_seq_items(b, v, max_items, depth);
            buf_puts(b, frozen ? "})" : "}");
        }
        break;
    }
    case SDICT_KIND_DICT: {
        size_t n = sdict_dict_len(v);
        bool counter = (sdict_value_pytype(v) == SDICT_PYTYPE_COUNTER);
        if (counter && n == 0) {
            buf_puts(b, "Counter()");
            break;
        }
        buf_puts(b, counter ? "Counter({" : "{");
        for (size_t i = 0; i < n; i++) {
            if (n > max_items && i == max_items / 2) {
                buf_puts(b, ", ...");
                i = n - (max_items - max_items / 2) - 1;
                continue;
            }
            if (i)
                buf_puts(b, ", ");
            fmt_value_depth(b, sdict_dict_key(v, i), max_items, depth + 1);
            buf_puts(b, ": ");
            fmt_value_depth(b, sdict_dict_val(v, i), max_items, depth + 1);
        }
        buf_puts(b, counter ? "})" : "}");
        break;
    }
    default:
        buf_puts(b, "?");
        break;
    }
}

void fmt_device_tag(cli_buf *b, const char *tag) {
    /* A location tag is any text the file chose: spaces, quotes, backslashes and control
       characters are written as \xNN so a tag cannot forge fields or reach the terminal. */
    for (const unsigned char *p = (const unsigned char *)tag; p && *p; p++) {
        if (*p <= 0x20 || *p == 0x7f || *p == '\\' || *p == '\'' || *p == '"' || *p == ',' ||
            *p == ')')
            buf_printf(b, "\\x%02x", *p);
        else
            buf_putn(b, (const char *)p, 1);
    }
}

void fmt_value(cli_buf *b, const sdict_value *v, size_t max_items) {
    fmt_value_depth(b, v, max_items < 2 ? 2 : max_items, 0);
}

void fmt_escaped(cli_buf *b, const char *s, size_t n) {
    size_t need = sdict_escape_text(s, n, 0, NULL, 0);
    buf_reserve(b, need);
    sdict_escape_text(s, n, 0, b->s + b->len, need + 1);
    b->len += need;
}

void fmt_key(cli_buf *b, const sdict_value *key) {
    if (sdict_value_kind(key) == SDICT_KIND_STR) {
        /* Control characters (newlines, NUL, terminal escapes, C1), lone surrogates and bytes
           that are not UTF-8 are written as escapes (sdict_escape_text), so a key cannot
           forge output lines or reach the terminal; show resolves the same text. */
        size_t len = 0;
        const char *s = sdict_str_get(key, &len);
        if (s)
            fmt_escaped(b, s, len);
    } else {
        fmt_value(b, key, 16);
    }
}

/*==================================================================================================
 MARK: Walking
==================================================================================================*/

bool is_scalar_kind(sdict_kind k) {
    return k != SDICT_KIND_LIST && k != SDICT_KIND_TUPLE && k != SDICT_KIND_SET &&
           k != SDICT_KIND_DICT;
}

bool is_scalar_seq(const sdict_value *v) {
    sdict_kind k = sdict_value_kind(v);
    if (k != SDICT_KIND_LIST && k != SDICT_KIND_TUPLE && k != SDICT_KIND_SET)
        return false;
    size_t n = sdict_seq_len(v);
    for (size_t i = 0; i < n; i++) {
        sdict_kind ik = sdict_value_kind(sdict_seq_item(v, i));
        if (!is_scalar_kind(ik) || ik == SDICT_KIND_TENSOR || ik == SDICT_KIND_SPARSE ||
            ik == SDICT_KIND_NESTED)
            return false;
    }
    return true;
}

/* Appends one path component to exact (when given): the key's kind, the length of its text and
   the text, so that keys printing alike (1 and '1', 'a.b' and a then b) differ there. */
static void exact_component(cli_buf *exact, const char *kind, const char *text, size_t len) {
    if (exact) {
        buf_printf(exact, "%s%zu:", kind, len);
        buf_putn(exact, text, len);
    }
}

static bool walk_rec(const sdict_value *v, cli_buf *path, cli_buf *exact, bool inline_seqs,
                     leaf_fn fn, void *ctx, int depth) {
    if (depth > CLI_MAX_DEPTH) {
        fprintf(stderr, "statedict: nesting deeper than %d at '%s' (cyclic tree?)\n", CLI_MAX_DEPTH,
                path->s ? path->s : "");
        return false;
    }
    sdict_kind k = sdict_value_kind(v);
    size_t base = path->len, ebase = exact ? exact->len : 0;
    if (k == SDICT_KIND_DICT) {
        size_t n = sdict_dict_len(v);
        if (n == 0)
            fn(ctx, path->s ? path->s : "", v);
        for (size_t i = 0; i < n; i++) {
            if (base)
                buf_putn(path, ".", 1);
            size_t kstart = path->len;
            const sdict_value *key = sdict_dict_key(v, i);
            fmt_key(path, key);
            exact_component(exact, sdict_kind_name(sdict_value_kind(key)), path->s + kstart,
                            path->len - kstart);
            bool ok = walk_rec(sdict_dict_val(v, i), path, exact, inline_seqs, fn, ctx, depth + 1);
            buf_truncate(path, base);
            if (exact)
                buf_truncate(exact, ebase);
            if (!ok)
                return false;
        }
        return true;
    }
    if (!is_scalar_kind(k) && !(inline_seqs && is_scalar_seq(v))) {
        size_t n = sdict_seq_len(v);
        if (n == 0)
            fn(ctx, path->s ? path->s : "", v);
        for (size_t i = 0; i < n; i++) {
            buf_printf(path, base ? ".%zu" : "%zu", i);
            if (exact)
                buf_printf(exact, "#%zu:", i);
            bool ok = walk_rec(sdict_seq_item(v, i), path, exact, inline_seqs, fn, ctx, depth + 1);
            buf_truncate(path, base);
            if (exact)
                buf_truncate(exact, ebase);
            if (!ok)
                return false;
        }
        return true;
    }
    fn(ctx, path->s ? path->s : "", v);
    return true;
}

bool walk_leaves(const sdict_value *v, cli_buf *path, bool inline_seqs, leaf_fn fn, void *ctx) {
    return walk_rec(v, path, NULL, inline_seqs, fn, ctx, 0);
}

bool walk_leaves_exact(const sdict_value *v, cli_buf *path, cli_buf *exact, bool inline_seqs,
                       leaf_fn fn, void *ctx) {
    return walk_rec(v, path, exact, inline_seqs, fn, ctx, 0);
}

/*==================================================================================================
 MARK: Results per tensor view
==================================================================================================*/

static uint64_t mix_u64(uint64_t h, uint64_t x) {
    h ^= x + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
    h ^= h >> 31;
    h *= 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 29);
}

static uint64_t geometry_hash(uint64_t h, const sdict_tensor *t) {
    if (!t)
        return mix_u64(h, 0);
    h = mix_u64(h, (uint64_t)(uintptr_t)t->storage);
    h = mix_u64(h, (uint64_t)t->storage_offset);
    h = mix_u64(h, (uint64_t)t->dtype | (uint64_t)t->is_conj << 16 | (uint64_t)t->is_neg << 17);
    h = mix_u64(h, (uint64_t)t->ndim);
    for (int32_t i = 0; i < t->ndim; i++)
        h = mix_u64(mix_u64(h, (uint64_t)t->shape[i]), (uint64_t)t->stride[i]);
    return h;
}

static bool same_geometry(const sdict_tensor *a, const sdict_tensor *b) {
    if (!a || !b)
        return a == b;
    return a->storage == b->storage && a->storage_offset == b->storage_offset &&
           a->dtype == b->dtype && a->is_conj == b->is_conj && a->is_neg == b->is_neg &&
           a->ndim == b->ndim &&
           (a->ndim == 0 || (memcmp(a->shape, b->shape, (size_t)a->ndim * sizeof *a->shape) == 0 &&
                             memcmp(a->stride, b->stride, (size_t)a->ndim * sizeof *a->stride) == 0));
}

void cli_view_cache_init(cli_view_cache *c, size_t val_size) {
    memset(c, 0, sizeof *c);
    c->val_size = val_size;
}

const void *cli_view_cache_find(const cli_view_cache *c, const sdict_tensor *a,
                                const sdict_tensor *b, int tag) {
    if (!c->index_cap)
        return NULL;
    uint64_t h = geometry_hash(geometry_hash(mix_u64(cli_hash_seed(), (uint64_t)tag), a), b);
    for (size_t i = h & (c->index_cap - 1); c->index[i]; i = (i + 1) & (c->index_cap - 1)) {
        const cli_view_key *k = &c->keys[c->index[i] - 1];
        if (k->hash == h && k->tag == tag && same_geometry(k->a, a) && same_geometry(k->b, b))
            return c->vals + (c->index[i] - 1) * c->val_size;
    }
    return NULL;
}

void cli_view_cache_put(cli_view_cache *c, const sdict_tensor *a, const sdict_tensor *b, int tag,
                        const void *val) {
    if (c->n == c->cap) {
        size_t ncap = c->cap ? 2 * c->cap : 16;
        cli_view_key *nk = realloc(c->keys, ncap * sizeof *nk);
        if (!nk)
            return;
        c->keys = nk;
        unsigned char *nv = realloc(c->vals, ncap * c->val_size);
        if (!nv)
            return;
        c->vals = nv;
        c->cap = ncap;
    }
    if (2 * (c->n + 1) > c->index_cap) {
        size_t ncap = c->index_cap ? 2 * c->index_cap : 32;
        size_t *ni = calloc(ncap, sizeof *ni);
        if (!ni)
            return;
        for (size_t k = 0; k < c->n; k++) {
            size_t i = c->keys[k].hash & (ncap - 1);
            while (ni[i])
                i = (i + 1) & (ncap - 1);
            ni[i] = k + 1;
        }
        free(c->index);
        c->index = ni;
        c->index_cap = ncap;
    }
    uint64_t h = geometry_hash(geometry_hash(mix_u64(cli_hash_seed(), (uint64_t)tag), a), b);
    c->keys[c->n] = (cli_view_key){h, a, b, tag};
    memcpy(c->vals + c->n * c->val_size, val, c->val_size);
    size_t i = h & (c->index_cap - 1);
    while (c->index[i])
        i = (i + 1) & (c->index_cap - 1);
    c->index[i] = ++c->n;
}

void cli_view_cache_free(cli_view_cache *c) {
    free(c->keys);
    free(c->vals);
    free(c->index);
    memset(c, 0, sizeof *c);
}

/* Bytes of the regular files directly in dir (a model folder's shards). */
static uint64_t folder_bytes(const char *dir) {
    uint64_t total = 0;
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    cli_buf p;
    buf_init(&p);
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        struct stat sb;
        buf_truncate(&p, 0);
        buf_printf(&p, "%s/%s", dir, e->d_name);
        if (stat(p.s, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size > 0 &&
            total <= UINT64_MAX - (uint64_t)sb.st_size)
            total += (uint64_t)sb.st_size;
    }
    buf_free(&p);
    closedir(d);
    return total;
}

uint64_t cli_data_budget(char *const *paths, int n) {
    uint64_t total = 0;
    for (int i = 0; i < n; i++) {
        struct stat sb;
        size_t len = strlen(paths[i]);
        static const char index_suffix[] = ".index.json";
        uint64_t add = 0;
        if (stat(paths[i], &sb) != 0)
            continue;
        if (S_ISDIR(sb.st_mode)) {
            add = folder_bytes(paths[i]);
        } else if (len >= sizeof index_suffix - 1 &&
                   strcmp(paths[i] + len - (sizeof index_suffix - 1), index_suffix) == 0) {
            /* an index: the shards beside it */
            cli_buf dir;
            buf_init(&dir);
            const char *slash = strrchr(paths[i], '/');
            if (slash)
                buf_putn(&dir, paths[i], (size_t)(slash - paths[i]) + (slash == paths[i]));
            else
                buf_puts(&dir, ".");
            add = folder_bytes(dir.s);
            buf_free(&dir);
        } else if (sb.st_size > 0) {
            add = (uint64_t)sb.st_size;
        }
        total = total <= UINT64_MAX - add ? total + add : UINT64_MAX;
    }
    return (total > (UINT64_MAX >> 8) ? UINT64_MAX >> 2 : 64 * total) + (UINT64_C(256) << 20);
}

bool cli_charge_data(uint64_t *used, uint64_t budget, uint64_t bytes, sdict_error *err) {
    if (bytes <= budget && *used <= budget - bytes) {
        *used += bytes;
        return true;
    }
    memset(err, 0, sizeof *err);
    err->code = SDICT_E_LIMIT;
    err->offset = -1;
    snprintf(err->message, sizeof err->message,
             "reading the tensors' elements would take more than %llu bytes in all (64 x the "
             "input's size + 256 MiB): many distinct views of shared storage",
             (unsigned long long)budget);
    return false;
}

void cli_storage_tensor(const sdict_value *v, sdict_tensor *t, int64_t shape[1],
                        int64_t stride[1]) {
    sdict_dtype dt = SDICT_UINT8;
    sdict_storage *s = sdict_value_storage(v, &dt);
    size_t es = sdict_dtype_size(dt);
    memset(t, 0, sizeof *t);
    shape[0] = (int64_t)(es ? sdict_storage_nbytes(s) / es : 0);
    stride[0] = 1;
    t->dtype = dt;
    t->ndim = 1;
    t->shape = shape;
    t->stride = stride;
    t->storage = s;
}

const char *cli_type_name(const sdict_value *v, char buf[32]) {
    char np[8];
    switch (sdict_value_pytype(v)) {
    case SDICT_PYTYPE_TORCH_SIZE: return "torch.Size";
    case SDICT_PYTYPE_FROZENSET: return "frozenset";
    case SDICT_PYTYPE_BYTEARRAY: return "bytearray";
    case SDICT_PYTYPE_COUNTER: return "Counter";
    case SDICT_PYTYPE_NUMPY_SCALAR:
        if (sdict_value_numpy_dtype(v, np)) {
            const char *base = np[1] == 'f' ? "float" : np[1] == 'i' ? "int"
                             : np[1] == 'u' ? "uint" : np[1] == 'c' ? "complex" : NULL;
            if (base)
                snprintf(buf, 32, "numpy.%s%d", base, 8 * atoi(np + 2));
            else
                snprintf(buf, 32, "numpy.bool_");
            return buf;
        }
        break;
    default:
        break;
    }
    return sdict_kind_name(sdict_value_kind(v));
}


/*==================================================================================================
 MARK: JSON text
==================================================================================================*/

/* Length (1-4) and code point of the UTF-8 sequence at s (n > 0 bytes), or 0 when the bytes
   are not UTF-8 as Python decodes a pickle's str: overlong forms and values past U+10FFFF are
   invalid, lone surrogates in their three-byte form are kept ('surrogatepass'). */
static size_t utf8_cp(const unsigned char *s, size_t n, uint32_t *cp_out) {
    unsigned c = s[0];
    size_t len;
    uint32_t cp, min;
    if (c < 0x80) {
        *cp_out = c;
        return 1;
    } else if ((c & 0xE0) == 0xC0) {
        len = 2, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4, cp = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF)
        return 0;
    *cp_out = cp;
    return len;
}

json_t *json_text(const char *s, size_t len) {
    json_t *j = json_stringn(s ? s : "", s ? len : 0);
    if (j)
        return j;
    /* jansson holds only strict UTF-8: keep the lone surrogates (cli_json_dump writes them as
       \udXXX, as Python's json.dumps does) and replace what Python could not have read. */
    cli_buf b;
    buf_init(&b);
    buf_putn(&b, "", 0);
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t k = utf8_cp(p + i, len - i, &cp);
        if (k) {
            buf_putn(&b, (const char *)p + i, k);
            i += k;
        } else {
            buf_puts(&b, "\xEF\xBF\xBD");
            i++;
        }
    }
    j = json_stringn_nocheck(b.s, b.len);
    buf_free(&b);
    return j ? j : json_string("");
}

/* A JSON string as Python's json.dumps writes it (ensure_ascii): printable ASCII as it is,
   everything else as \uXXXX escapes (surrogate pairs past U+FFFF, lone surrogates as they
   are), so the output holds no control bytes and no byte >= 0x80. */
static void json_put_string(cli_buf *b, const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    buf_putn(b, "\"", 1);
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k = utf8_cp(p + i, n - i, &cp);
        if (!k)
            cp = 0xFFFD, k = 1; /* json_text never stores such bytes */
        i += k;
        if (cp == '"' || cp == '\\')
            buf_printf(b, "\\%c", (char)cp);
        else if (cp == '\n')
            buf_puts(b, "\\n");
        else if (cp == '\r')
            buf_puts(b, "\\r");
        else if (cp == '\t')
            buf_puts(b, "\\t");
        else if (cp == '\b')
            buf_puts(b, "\\b");
        else if (cp == '\f')
            buf_puts(b, "\\f");
        else if (cp >= 0x20 && cp < 0x7F) {
            char ch = (char)cp;
            buf_putn(b, &ch, 1);
        }
        else if (cp < 0x10000)
            buf_printf(b, "\\u%04x", (unsigned)cp);
        else
            buf_printf(b, "\\u%04x\\u%04x", (unsigned)(0xD800 + ((cp - 0x10000) >> 10)),
                       (unsigned)(0xDC00 + ((cp - 0x10000) & 0x3FF)));
    }
    buf_putn(b, "\"", 1);
}

static void json_newline(cli_buf *b, int indent, int depth) {
    if (indent <= 0)
        return;
    buf_putn(b, "\n", 1);
    for (int i = 0; i < indent * depth; i++)
        buf_putn(b, " ", 1);
}

/* Appends j as JSON text (see cli_json_dump). Depth is bounded by the trees the CLI builds
   (CLI_MAX_DEPTH levels of values, each at most a few JSON levels). */
static void json_put(cli_buf *b, const json_t *j, int indent, int depth) {
    const char *comma = indent > 0 ? "," : ", ";
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        const char *key;
        json_t *v;
        bool first = true;
        buf_putn(b, "{", 1);
        size_t key_len;
        json_object_keylen_foreach((json_t *)j, key, key_len, v) {
            if (!first)
                buf_puts(b, comma);
            first = false;
            json_newline(b, indent, depth + 1);
            json_put_string(b, key, key_len);
            buf_puts(b, ": ");
            json_put(b, v, indent, depth + 1);
        }
        if (!first)
            json_newline(b, indent, depth);
        buf_putn(b, "}", 1);
        break;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(j);
        buf_putn(b, "[", 1);
        for (size_t i = 0; i < n; i++) {
            if (i)
                buf_puts(b, comma);
            json_newline(b, indent, depth + 1);
            json_put(b, json_array_get(j, i), indent, depth + 1);
        }
        if (n)
            json_newline(b, indent, depth);
        buf_putn(b, "]", 1);
        break;
    }
    case JSON_STRING:
        json_put_string(b, json_string_value(j), json_string_length(j));
        break;
    case JSON_INTEGER:
        buf_printf(b, "%" JSON_INTEGER_FORMAT, json_integer_value(j));
        break;
    case JSON_REAL: { /* finite (jansson holds no NaN or inf): Python's repr, which reads back
                         exactly */
        char text[40];
        fmt_float_repr(json_real_value(j), text, sizeof text);
        buf_puts(b, text);
        break;
    }
    case JSON_TRUE:
        buf_puts(b, "true");
        break;
    case JSON_FALSE:
        buf_puts(b, "false");
        break;
    default:
        buf_puts(b, "null");
        break;
    }
}

/* Writes what the buffer holds once it passes 64 KiB (or always, when force): memory stays
   bounded by the largest single value, not the document. */
static void jw_flush(cli_jw *w, bool force) {
    if (!w->b.len || (!force && w->b.len < ((size_t)64 << 10)))
        return;
    if (fwrite(w->b.s, 1, w->b.len, w->f) != w->b.len)
        w->failed = true;
    buf_truncate(&w->b, 0);
}

void cli_jw_init(cli_jw *w, FILE *f, int indent) {
    memset(w, 0, sizeof *w);
    buf_init(&w->b);
    w->f = f;
    w->indent = indent;
    w->first = true;
}

void cli_jw_open(cli_jw *w, char ch) {
    buf_putn(&w->b, &ch, 1);
    w->depth++;
    w->first = true;
}

void cli_jw_close(cli_jw *w, char ch) {
    w->depth--;
    if (!w->first)
        json_newline(&w->b, w->indent, w->depth);
    buf_putn(&w->b, &ch, 1);
    w->first = false; /* the container just closed was a member of the one around it */
    jw_flush(w, false);
}

void cli_jw_item(cli_jw *w) {
    if (!w->first)
        buf_puts(&w->b, w->indent > 0 ? "," : ", ");
    w->first = false;
    json_newline(&w->b, w->indent, w->depth);
}

void cli_jw_key(cli_jw *w, const char *key) {
    cli_jw_item(w);
    json_put_string(&w->b, key, strlen(key));
    buf_puts(&w->b, ": ");
}

void cli_jw_str(cli_jw *w, const char *s, size_t n) {
    json_put_string(&w->b, s ? s : "", s ? n : 0);
}

void cli_jw_raw(cli_jw *w, const char *text) {
    buf_puts(&w->b, text);
}

void cli_jw_int(cli_jw *w, long long v) {
    buf_printf(&w->b, "%lld", v);
}

void cli_jw_json(cli_jw *w, const json_t *j) {
    json_put(&w->b, j, w->indent, w->depth);
    jw_flush(w, false);
}

/*==================================================================================================
 MARK: JSON numbers (the schema's rule)
==================================================================================================*/

bool cli_int_exact(long long v) {
    return v >= -CLI_JSON_MAX_EXACT && v <= CLI_JSON_MAX_EXACT;
}

void cli_jw_num(cli_jw *w, long long v) {
    if (cli_int_exact(v))
        buf_printf(&w->b, "%lld", v);
    else
        buf_printf(&w->b, "\"%lld\"", v);
}

void cli_jw_unum(cli_jw *w, unsigned long long v) {
    if (v <= (unsigned long long)CLI_JSON_MAX_EXACT)
        buf_printf(&w->b, "%llu", v);
    else
        buf_printf(&w->b, "\"%llu\"", v);
}

void cli_jw_float(cli_jw *w, double d) {
    char text[40];
    fmt_float_repr(d, text, sizeof text);
    if (isfinite(d))
        buf_puts(&w->b, text);
    else
        cli_jw_str(w, text, strlen(text));
}

void cli_jw_pyint(cli_jw *w, const sdict_value *v) {
    int64_t i64;
    if (sdict_int_get(v, &i64) == SDICT_OK) {
        cli_jw_num(w, (long long)i64);
        return;
    }
    cli_buf t;
    buf_init(&t);
    fmt_int(&t, v);
    cli_jw_str(w, t.s ? t.s : "", t.len);
    buf_free(&t);
}

json_t *cli_json_num(long long v) {
    if (cli_int_exact(v))
        return json_integer((json_int_t)v);
    char text[32];
    snprintf(text, sizeof text, "%lld", v);
    return json_string(text);
}

json_t *cli_json_unum(unsigned long long v) {
    if (v <= (unsigned long long)CLI_JSON_MAX_EXACT)
        return json_integer((json_int_t)v);
    char text[32];
    snprintf(text, sizeof text, "%llu", v);
    return json_string(text);
}

json_t *cli_json_float(double d) {
    if (isfinite(d))
        return json_real(d);
    char text[8];
    fmt_float_repr(d, text, sizeof text);
    return json_string(text);
}

json_t *cli_json_scalar(const sdict_value *v) {
    switch (sdict_value_kind(v)) {
    case SDICT_KIND_NONE:
        return json_null();
    case SDICT_KIND_BOOL:
        return json_boolean(sdict_bool_get(v));
    case SDICT_KIND_INT: {
        int64_t i64;
        if (sdict_int_get(v, &i64) == SDICT_OK)
            return cli_json_num((long long)i64);
        cli_buf t;
        buf_init(&t);
        fmt_int(&t, v);
        json_t *j = json_stringn(t.s ? t.s : "", t.len);
        buf_free(&t);
        return j;
    }
    case SDICT_KIND_FLOAT:
        return cli_json_float(sdict_float_get(v));
    case SDICT_KIND_STR: {
        size_t len = 0;
        const char *s = sdict_str_get(v, &len);
        return json_text(s, len);
    }
    default:
        return NULL;
    }
}

json_t *cli_json_metadata(const sdict_doc *doc) {
    const sdict_value *md = sdict_doc_metadata(doc);
    if (!md)
        return json_null();
    json_t *o = json_object();
    cli_buf k, t;
    buf_init(&k);
    buf_init(&t);
    for (size_t i = 0; i < sdict_dict_len(md); i++) {
        const sdict_value *key = sdict_dict_key(md, i), *val = sdict_dict_val(md, i);
        buf_truncate(&k, 0);
        size_t klen = 0;
        const char *ks = sdict_str_get(key, &klen);
        if (ks) {
            /* the key as json_text keeps a str (lone surrogates, U+FFFD for bad bytes) */
            json_t *kj = json_text(ks, klen);
            buf_putn(&k, json_string_value(kj), json_string_length(kj));
            json_decref(kj);
        } else {
            fmt_key(&k, key);
        }
        json_t *j = cli_json_scalar(val);
        if (!j) {
            buf_truncate(&t, 0);
            fmt_value(&t, val, 64);
            j = json_text(t.s ? t.s : "", t.len);
        }
        json_object_setn_new_nocheck(o, k.s ? k.s : "", k.len, j);
    }
    buf_free(&k);
    buf_free(&t);
    return o;
}

int cli_jw_finish(cli_jw *w) {
    jw_flush(w, true);
    buf_free(&w->b);
    return w->failed ? -1 : 0;
}

int cli_json_dump(const json_t *j, FILE *f, int indent) {
    cli_jw w;
    cli_jw_init(&w, f, indent);
    cli_jw_json(&w, j);
    return cli_jw_finish(&w);
}

/*==================================================================================================
 MARK: Escaped standard streams
==================================================================================================*/

#ifdef __GLIBC__
/* State of one escaping stream: where the escaped text goes, and the start of a UTF-8
   sequence that the next write may complete. */
typedef struct esc_stream {
    FILE *to;
    char pend[4];
    size_t npend;
} esc_stream;
static esc_stream esc_out, esc_err;
static FILE *esc_out_file, *esc_err_file;

/* Bytes at the end of s that start a UTF-8 sequence longer than what is there. */
static size_t utf8_open_tail(const unsigned char *s, size_t n) {
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        unsigned c = s[n - k];
        if ((c & 0xC0) == 0x80)
            continue;
        size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        return need > k ? k : 0;
    }
    return 0;
}

static void esc_emit(esc_stream *e, const char *s, size_t n) {
    char out[4 * 1024 + 1];
    while (n) {
        size_t k = n > 1024 ? 1024 : n;
        if (k < n) /* do not cut a sequence in two */
            k -= utf8_open_tail((const unsigned char *)s, k);
        size_t m = sdict_escape_text(s, k, SDICT_ESCAPE_KEEP_LAYOUT, out, sizeof out);
        fwrite(out, 1, m, e->to);
        s += k;
        n -= k;
    }
}

static ssize_t esc_write(void *cookie, const char *buf, size_t size) {
    esc_stream *e = cookie;
    size_t total = e->npend + size;
    char *all = malloc(total ? total : 1);
    if (!all)
        return -1;
    memcpy(all, e->pend, e->npend);
    memcpy(all + e->npend, buf, size);
    size_t keep = utf8_open_tail((const unsigned char *)all, total);
    esc_emit(e, all, total - keep);
    memcpy(e->pend, all + total - keep, keep);
    e->npend = keep;
    free(all);
    return ferror(e->to) ? -1 : (ssize_t)size;
}

static int esc_close(void *cookie) {
    esc_stream *e = cookie;
    esc_emit(e, e->pend, e->npend); /* an unfinished sequence: its bytes as \xNN */
    e->npend = 0;
    return fflush(e->to) == 0 && !ferror(e->to) ? 0 : EOF;
}

static FILE *esc_open(esc_stream *e, FILE *to, int mode) {
    cookie_io_functions_t io = {NULL, esc_write, NULL, esc_close};
    e->to = to;
    e->npend = 0;
    FILE *f = fopencookie(e, "w", io);
    if (f)
        setvbuf(f, NULL, mode, BUFSIZ);
    return f;
}
#endif

void cli_escape_streams_begin(void) {
#ifdef __GLIBC__
    esc_out_file = esc_open(&esc_out, stdout, _IOFBF);
    esc_err_file = esc_open(&esc_err, stderr, _IOLBF);
    if (esc_out_file)
        stdout = esc_out_file;
    if (esc_err_file)
        stderr = esc_err_file;
#endif
}

int cli_escape_streams_end(void) {
    int rc = 0;
#ifdef __GLIBC__
    if (esc_out_file) {
        rc |= fclose(esc_out_file) != 0;
        stdout = esc_out.to;
        esc_out_file = NULL;
    }
    if (esc_err_file) {
        (void)fclose(esc_err_file);
        stderr = esc_err.to;
        esc_err_file = NULL;
    }
#endif
    return rc ? -1 : 0;
}

char *cli_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

/* ---- chunked element walks ---------------------------------------------------------------- */

void cli_chunker_init(cli_chunker *c, const sdict_tensor *t, int64_t max_elems) {
    memset(c, 0, sizeof *c);
    c->done = sdict_tensor_numel(t) <= 0; /* else every size is >= 1 */
    for (int32_t k = 0; !c->done && k < t->ndim; k++)
        if (t->shape[k] > 1 && c->nd < CLI_MAX_SQUEEZED)
            c->dim[c->nd++] = k;
    int64_t inner = 1;
    int32_t d = c->nd;
    while (!c->done && d > 0 && t->shape[c->dim[d - 1]] <= max_elems / inner) {
        inner *= t->shape[c->dim[d - 1]];
        d--;
    }
    c->split = d - 1; /* dimensions split+1.. fit whole; split itself is cut into runs */
    c->run = max_elems / inner; /* >= 1: inner never exceeds max_elems */
}

bool cli_chunk_view(const cli_chunker *c, const sdict_tensor *t, cli_piece *piece) {
    if (c->done)
        return false;
    int32_t first = c->split < 0 ? 0 : c->split;
    int64_t off = t->storage_offset;
    for (int32_t j = 0; j < first; j++)
        off += c->idx[j] * t->stride[c->dim[j]];
    for (int32_t j = first; j < c->nd; j++) {
        piece->shape[j - first] = t->shape[c->dim[j]];
        piece->stride[j - first] = t->stride[c->dim[j]];
    }
    if (c->split >= 0) {
        int64_t left = t->shape[c->dim[first]] - c->idx[first];
        piece->shape[0] = left < c->run ? left : c->run;
        off += c->idx[first] * t->stride[c->dim[first]];
    }
    piece->t = *t;
    piece->t.ndim = c->nd - first;
    piece->t.shape = piece->shape;
    piece->t.stride = piece->stride;
    piece->t.storage_offset = off;
    return true;
}

void cli_chunker_next(cli_chunker *c, const sdict_tensor *t) {
    if (c->split < 0) {
        c->done = true;
        return;
    }
    c->idx[c->split] += c->run;
    for (int32_t j = c->split; j >= 0; j--) {
        if (c->idx[j] < t->shape[c->dim[j]])
            return;
        if (j == 0) {
            c->done = true;
            return;
        }
        c->idx[j] = 0;
        c->idx[j - 1] += 1;
    }
}

sdict_status cli_check_expansion(const sdict_tensor *t, sdict_error *err) {
    uint64_t logical = sdict_tensor_nbytes(t);
    uint64_t stored = t->storage ? sdict_storage_nbytes(t->storage) : 0;
    if (logical <= (1ull << 30) || logical / 64 <= stored)
        return SDICT_OK;
    if (err) {
        memset(err, 0, sizeof *err);
        err->code = SDICT_E_LIMIT;
        err->offset = -1;
        snprintf(err->message, sizeof err->message,
                 "tensor spans %llu bytes of elements over a storage of %llu bytes (stride-0 "
                 "expansion beyond 64x): too large to walk element by element",
                 (unsigned long long)logical, (unsigned long long)stored);
    }
    return SDICT_E_LIMIT;
}

/* The root is an object, or a dict or sequence holding one (a YOLO-style checkpoint). */
static bool holds_object(const sdict_value *root) {
    sdict_kind k = sdict_value_kind(root);
    if (k == SDICT_KIND_OBJECT)
        return true;
    size_t n = k == SDICT_KIND_DICT ? sdict_dict_len(root) : sdict_seq_len(root);
    for (size_t i = 0; i < n; i++)
        if (sdict_value_kind(k == SDICT_KIND_DICT ? sdict_dict_val(root, i)
                                                  : sdict_seq_item(root, i)) == SDICT_KIND_OBJECT)
            return true;
    return false;
}

void cli_inert_hint(const char *cmd, const sdict_doc *doc, const sdict_value *v,
                    size_t ntensors) {
    if (sdict_doc_is_script(doc))
        fprintf(stderr, "statedict: %s: a TorchScript archive (torch.jit.save), read as inert "
                        "objects: `statedict extract FILE OUT` writes its state_dict\n", cmd);
    else if (ntensors == 0 && holds_object(v))
        fprintf(stderr, "statedict: %s: the tensors of a pickled object are not listed: "
                        "`statedict extract FILE OUT` writes its state_dict\n", cmd);
}
