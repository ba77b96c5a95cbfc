/*
 cmd_ls.c - `statedict ls FILE`: the listing PyTorch's tutorial print loop gives, for any file.

 One line per leaf, in file order:
   KEY  DTYPE  SHAPE  BYTES  [MARKS]      for tensors (BYTES = numel * element size); sparse
                                          tensors show their values' dtype, their size and
                                          the bytes of their parts, nested tensors the sizes
                                          of their components
   KEY  DTYPE  storage(NUMEL)  BYTES  device=TAG
                                          for storages saved bare (not in a tensor)
   KEY  KIND  VALUE                       for other leaves (epoch, loss, param_groups.0.lr)
 Tensors whose storage was saved on another device than the CPU are marked device=TAG
 ("device=cuda:0"); statedict, like torch.load(map_location='cpu'), holds them in memory.
 then "N tensors, B bytes; S storages, SB bytes; format F, byteorder O", then one line
 "metadata 'KEY': VALUE" (reprs) per entry of the doc's metadata (safetensors __metadata__):
 after the summary line, where no key can forge one.

 Several files: each listing under "==> FILE <==" (blank line between), every file tried, the
 exit status the worst; --json writes one object per file, or {"files": [...]} for several
 (an unreadable file's entry {"path", "error": {"status", "message"}}). The JSON members and
 the number rule are the README's "JSON schema" (numbers past 2^53 and NaN/inf as strings);
 a non-tensor leaf carries "value" (for none/bool/int/float/str) and "repr" (the text shown).
*/
#include "cli.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* Open-addressing map from storage pointer to the number of tensors using it. */
typedef struct storage_count {
    const sdict_storage *s;
    size_t uses;
} storage_count;

typedef struct ls_entry {
    char *key;
    const sdict_value *v;
} ls_entry;

typedef struct ls_ctx {
    ls_entry *items;
    size_t n, cap;
    storage_count *map;
    size_t map_cap, map_n;
    bool oom;
    bool listing; /* a DCP folder read with SDICT_LOAD_METADATA_ONLY: meta tensors stand for
                     tensors whose data was not read; they are listed as cpu tensors */
} ls_ctx;

static size_t ptr_hash(const void *p) {
    uintptr_t x = (uintptr_t)p;
    x ^= x >> 17;
    x *= (uintptr_t)0x9E3779B97F4A7C15ull;
    return (size_t)(x ^ (x >> 29));
}

static storage_count *map_slot(ls_ctx *c, const sdict_storage *s) {
    size_t i = ptr_hash(s) & (c->map_cap - 1);
    while (c->map[i].s && c->map[i].s != s)
        i = (i + 1) & (c->map_cap - 1);
    return &c->map[i];
}

static bool map_add(ls_ctx *c, const sdict_storage *s) {
    if ((c->map_n + 1) * 2 > c->map_cap) {
        size_t ncap = c->map_cap ? c->map_cap * 2 : 64;
        storage_count *old = c->map;
        size_t ocap = c->map_cap;
        c->map = calloc(ncap, sizeof *c->map);
        if (!c->map) {
            c->map = old;
            return false;
        }
        c->map_cap = ncap;
        for (size_t i = 0; i < ocap; i++)
            if (old[i].s)
                *map_slot(c, old[i].s) = old[i];
        free(old);
    }
    storage_count *e = map_slot(c, s);
    if (!e->s) {
        e->s = s;
        c->map_n++;
    }
    e->uses++;
    return true;
}

static size_t map_uses(ls_ctx *c, const sdict_storage *s) {
    if (!c->map_cap)
        return 0;
    return map_slot(c, s)->uses;
}

static void collect(void *ctx, const char *path, const sdict_value *v) {
    ls_ctx *c = ctx;
    if (c->oom)
        return;
    if (c->n == c->cap) {
        size_t ncap = c->cap ? c->cap * 2 : 64;
        ls_entry *p = realloc(c->items, ncap * sizeof *p);
        if (!p) {
            c->oom = true;
            return;
        }
        c->items = p;
        c->cap = ncap;
    }
    char *key = cli_strdup(path);
    if (!key) {
        c->oom = true;
        return;
    }
    c->items[c->n].key = key;
    c->items[c->n].v = v;
    c->n++;
    /* the storages of a tensor and of the parts of sparse, nested and per-channel quantized
       tensors */
    const sdict_value *parts[4] = {v, NULL, NULL, NULL};
    const sdict_sparse *sp = sdict_value_sparse(v);
    const sdict_nested *ns = sdict_value_nested(v);
    const sdict_quantizer *q = sdict_value_quantizer(v);
    if (sp)
        parts[0] = sp->indices, parts[1] = sp->plain_indices, parts[2] = sp->values;
    else if (ns)
        parts[0] = ns->buffer, parts[1] = ns->sizes, parts[2] = ns->strides,
        parts[3] = ns->storage_offsets;
    else if (q && q->scales)
        parts[1] = q->scales, parts[2] = q->zero_points;
    for (int i = 0; i < 4; i++) {
        const sdict_tensor *t = sdict_value_tensor(parts[i]);
        if (t && t->storage && !map_add(c, t->storage))
            c->oom = true;
    }
    const sdict_storage *bare = sdict_value_storage(v, NULL);
    if (bare && !map_add(c, bare))
        c->oom = true;
}

/* What a tensor-like leaf shows: dtype, shape text and bytes (for sparse and nested tensors,
   the bytes of their parts). False for other leaves. */
static bool tensor_summary(const sdict_value *v, const char **dtype, cli_buf *shape,
                           size_t *bytes) {
    const sdict_tensor *t = sdict_value_tensor(v);
    const sdict_sparse *sp = sdict_value_sparse(v);
    const sdict_nested *ns = sdict_value_nested(v);
    if (t) {
        *dtype = sdict_dtype_name(t->dtype);
        fmt_dims(shape, t->shape, t->ndim);
        *bytes = sdict_tensor_nbytes(t);
    } else if (sp) {
        const sdict_tensor *vals = sdict_value_tensor(sp->values);
        *dtype = sdict_dtype_name(vals->dtype);
        buf_puts(shape, "[");
        for (size_t i = 0; i < sdict_seq_len(sp->size); i++) {
            if (i)
                buf_puts(shape, ", ");
            fmt_int(shape, sdict_seq_item(sp->size, i));
        }
        buf_puts(shape, "]");
        *bytes = sdict_tensor_nbytes(sdict_value_tensor(sp->indices)) + sdict_tensor_nbytes(vals) +
                 (sp->plain_indices ? sdict_tensor_nbytes(sdict_value_tensor(sp->plain_indices))
                                    : 0);
    } else if (ns) {
        const sdict_tensor *buf = sdict_value_tensor(ns->buffer);
        *dtype = sdict_dtype_name(buf->dtype);
        buf_printf(shape, "nested(%lld)", (long long)sdict_value_tensor(ns->sizes)->shape[0]);
        *bytes = sdict_tensor_nbytes(buf);
    } else {
        return false;
    }
    return true;
}

/* What a bare storage shows: its class's dtype, "storage(NUMEL)" and its bytes. */
static bool storage_summary(const sdict_value *v, const char **dtype, cli_buf *shape,
                            size_t *bytes) {
    sdict_dtype dt = SDICT_UINT8;
    const sdict_storage *s = sdict_value_storage(v, &dt);
    if (!s)
        return false;
    size_t es = sdict_dtype_size(dt);
    *dtype = sdict_dtype_name(dt);
    *bytes = sdict_storage_nbytes(s);
    buf_printf(shape, "storage(%zu)", es ? *bytes / es : 0);
    return true;
}

static void storage_name(cli_buf *b, const sdict_storage *s) {
    const char *k = sdict_storage_key(s);
    if (k)
        buf_puts(b, k);
    else
        buf_printf(b, "%p", (const void *)s);
}

/* Marks after a tensor line, space-separated. */
static void tensor_marks(cli_buf *b, ls_ctx *c, const sdict_value *v) {
    const sdict_tensor *t = sdict_value_tensor(v);
    const sdict_sparse *sp = sdict_value_sparse(v);
    const sdict_nested *ns = sdict_value_nested(v);
    const sdict_value *attrs = sdict_tensor_attrs(v);
    bool param = t ? t->is_parameter : sp ? sp->is_parameter : ns->is_parameter;
    bool grad = t ? t->requires_grad : sp ? sp->requires_grad : ns->requires_grad;
    if (sp) {
        /* nnz: COO indices are [sparse_dim, nnz]; plain indices [batch..., nnz] */
        const sdict_tensor *ix = sdict_value_tensor(sp->plain_indices ? sp->plain_indices
                                                                       : sp->indices);
        buf_printf(b, " %s nnz=%lld", sdict_layout_name(sp->layout),
                   (long long)ix->shape[ix->ndim - 1]);
    }
    if (attrs && sdict_dict_len(attrs)) {
        buf_puts(b, " attrs=");
        for (size_t i = 0; i < sdict_dict_len(attrs); i++) {
            if (i)
                buf_puts(b, ",");
            fmt_key(b, sdict_dict_key(attrs, i));
        }
    }
    if (!t) {
        if (param)
            buf_puts(b, " param");
        if (grad)
            buf_puts(b, " grad");
        return;
    }
    const sdict_quantizer *q = sdict_value_quantizer(v);
    if (q && q->qscheme == SDICT_PER_TENSOR_AFFINE) {
        char scale[40];
        fmt_float_repr(q->scale, scale, sizeof scale);
        buf_printf(b, " quantized(%s, scale=%s, zero_point=%lld)", sdict_qscheme_name(q->qscheme),
                   scale, (long long)q->zero_point);
    } else if (q) {
        buf_printf(b, " quantized(%s, axis=%lld)", sdict_qscheme_name(q->qscheme),
                   (long long)q->axis);
    }
    if (t->is_conj)
        buf_puts(b, " conj");
    if (t->is_neg)
        buf_puts(b, " neg");
    if (!t->storage && !c->listing)
        buf_puts(b, " meta");
    else if (!sdict_tensor_is_contiguous(t)) {
        buf_puts(b, " non-contiguous(stride ");
        fmt_dims(b, t->stride, t->ndim);
        buf_puts(b, ")");
    }
    if (t->storage && strcmp(sdict_storage_location(t->storage), "cpu") != 0) {
        buf_puts(b, " device=");
        fmt_device_tag(b, sdict_storage_location(t->storage));
    }
    if (t->storage && map_uses(c, t->storage) > 1) {
        buf_puts(b, " shared=");
        storage_name(b, t->storage);
        if (t->storage_offset)
            buf_printf(b, "@%lld", (long long)t->storage_offset);
    }
    if (t->is_parameter)
        buf_puts(b, " param");
    if (t->requires_grad)
        buf_puts(b, " grad");
}

static const char *display_key(const char *k) { return k[0] ? k : "<root>"; }

static int print_text(ls_ctx *c, const sdict_doc *doc) {
    size_t wkey = 0, wdtype = 0, wshape = 0, wbytes = 0;
    cli_buf b, shape;
    buf_init(&b);
    buf_init(&shape);
    for (size_t i = 0; i < c->n; i++) {
        size_t kl = strlen(display_key(c->items[i].key));
        if (kl > wkey)
            wkey = kl;
        char tn[32];
        const char *kind = cli_type_name(c->items[i].v, tn);
        size_t bytes = 0;
        buf_truncate(&shape, 0);
        if (tensor_summary(c->items[i].v, &kind, &shape, &bytes) ||
            storage_summary(c->items[i].v, &kind, &shape, &bytes)) {
            if (shape.len > wshape)
                wshape = shape.len;
            buf_truncate(&b, 0);
            buf_printf(&b, "%zu", bytes);
            if (b.len > wbytes)
                wbytes = b.len;
        }
        if (strlen(kind) > wdtype)
            wdtype = strlen(kind);
    }
    if (wkey > 80)
        wkey = 80;
    if (wshape > 80) /* one tensor of a thousand dimensions does not widen every line */
        wshape = 80;

    size_t ntensors = 0, nstorages = 0;
    unsigned long long tbytes = 0, sbytes = 0;
    for (size_t i = 0; i < c->n; i++) {
        const sdict_value *v = c->items[i].v;
        const char *dtype;
        size_t bytes = 0;
        buf_truncate(&b, 0);
        buf_truncate(&shape, 0);
        if (tensor_summary(v, &dtype, &shape, &bytes)) {
            ntensors++;
            tbytes += bytes;
            buf_printf(&b, "%-*s  %-*s  %-*s  %*zu", (int)wkey, display_key(c->items[i].key),
                       (int)wdtype, dtype, (int)wshape, shape.s, (int)wbytes, bytes);
            tensor_marks(&b, c, v);
            const sdict_tensor *mt = sdict_value_tensor(v);
            if (c->listing && mt && !mt->storage) { /* a full load gives each its own storage */
                nstorages++;
                sbytes += bytes;
            }
        } else if (storage_summary(v, &dtype, &shape, &bytes)) {
            const sdict_storage *st = sdict_value_storage(v, NULL);
            buf_printf(&b, "%-*s  %-*s  %-*s  %*zu  device=", (int)wkey,
                       display_key(c->items[i].key), (int)wdtype, dtype, (int)wshape, shape.s,
                       (int)wbytes, bytes);
            fmt_device_tag(&b, sdict_storage_location(st));
            if (map_uses(c, st) > 1) {
                buf_puts(&b, " shared=");
                storage_name(&b, st);
            }
        } else {
            char tn[32];
            buf_printf(&b, "%-*s  %-*s  ", (int)wkey, display_key(c->items[i].key), (int)wdtype,
                       cli_type_name(v, tn));
            fmt_value(&b, v, 16);
        }
        while (b.len && b.s[b.len - 1] == ' ')
            buf_truncate(&b, b.len - 1);
        printf("%s\n", b.s);
    }
    for (size_t i = 0; i < c->map_cap; i++)
        if (c->map[i].s) {
            nstorages++;
            sbytes += sdict_storage_nbytes(c->map[i].s);
        }
    printf("%zu tensor%s, %llu bytes; %zu storage%s, %llu bytes; format %s, byteorder %s\n",
           ntensors, ntensors == 1 ? "" : "s", tbytes, nstorages, nstorages == 1 ? "" : "s",
           sbytes, sdict_format_name(sdict_doc_format(doc)),
           sdict_doc_big_endian(doc) ? "big" : "little");
    cli_inert_hint("ls", doc, sdict_doc_root(doc), ntensors);
    /* after the summary line, where no key can forge one: metadata 'KEY': VALUE (reprs) */
    const sdict_value *md = sdict_doc_metadata(doc);
    for (size_t i = 0; md && i < sdict_dict_len(md); i++) {
        buf_truncate(&b, 0);
        buf_puts(&b, "metadata ");
        fmt_value(&b, sdict_dict_key(md, i), 16);
        buf_puts(&b, ": ");
        fmt_value(&b, sdict_dict_val(md, i), 16);
        printf("%s\n", b.s);
    }
    buf_free(&b);
    buf_free(&shape);
    return CLI_EXIT_OK;
}

static json_t *json_dims(const int64_t *d, int32_t n) {
    json_t *a = json_array();
    for (int32_t i = 0; i < n; i++)
        json_array_append_new(a, cli_json_num((long long)d[i]));
    return a;
}

/* The JSON object of one file's listing (README "JSON schema"). */
static json_t *listing_json(ls_ctx *c, const sdict_doc *doc, const char *path) {
    json_t *root = json_object();
    json_t *arr = json_array();
    json_object_set_new(root, "path", json_text(path, strlen(path)));
    json_object_set_new(root, "format", json_string(sdict_format_name(sdict_doc_format(doc))));
    json_object_set_new(root, "byteorder", json_string(sdict_doc_big_endian(doc) ? "big" : "little"));
    json_object_set_new(root, "metadata", cli_json_metadata(doc));
    size_t ntensors = 0;
    unsigned long long tbytes = 0;
    cli_buf b;
    buf_init(&b);
    for (size_t i = 0; i < c->n; i++) {
        const sdict_value *v = c->items[i].v;
        const sdict_tensor *t = sdict_value_tensor(v);
        json_t *o = json_object();
        json_object_set_new(o, "key", json_text(c->items[i].key, strlen(c->items[i].key)));
        if (t) {
            ntensors++;
            tbytes += sdict_tensor_nbytes(t);
            json_object_set_new(o, "type", json_string("tensor"));
            json_object_set_new(o, "dtype", json_string(sdict_dtype_name(t->dtype)));
            json_object_set_new(o, "shape", json_dims(t->shape, t->ndim));
            json_object_set_new(o, "stride", json_dims(t->stride, t->ndim));
            json_object_set_new(o, "storage_offset", cli_json_num((long long)t->storage_offset));
            json_object_set_new(o, "nbytes", cli_json_unum(sdict_tensor_nbytes(t)));
            json_object_set_new(o, "contiguous", json_boolean(sdict_tensor_is_contiguous(t)));
            if (t->storage) {
                buf_truncate(&b, 0);
                storage_name(&b, t->storage);
                json_object_set_new(o, "storage", json_string(b.s));
            } else {
                json_object_set_new(o, "storage", json_null());
            }
            json_object_set_new(o, "shared", json_boolean(t->storage && map_uses(c, t->storage) > 1));
            const char *dev = !t->storage && c->listing ? "cpu" : sdict_tensor_device(t);
            json_object_set_new(o, "device", json_text(dev, strlen(dev)));
            const sdict_quantizer *q = sdict_value_quantizer(v);
            if (q)
                json_object_set_new(o, "qscheme", json_string(sdict_qscheme_name(q->qscheme)));
            if (t->is_conj)
                json_object_set_new(o, "conj", json_true());
            if (t->is_neg)
                json_object_set_new(o, "neg", json_true());
        } else if (sdict_value_sparse(v) || sdict_value_nested(v)) {
            const sdict_sparse *sp = sdict_value_sparse(v);
            const char *dtype;
            size_t bytes = 0;
            buf_truncate(&b, 0);
            tensor_summary(v, &dtype, &b, &bytes);
            ntensors++;
            tbytes += bytes;
            json_object_set_new(o, "type", json_string(sdict_kind_name(sdict_value_kind(v))));
            json_object_set_new(o, "dtype", json_string(dtype));
            if (sp) {
                json_t *size = json_array();
                for (size_t k = 0; k < sdict_seq_len(sp->size); k++)
                    json_array_append_new(size, cli_json_scalar(sdict_seq_item(sp->size, k)));
                json_object_set_new(o, "shape", size);
                json_object_set_new(o, "layout", json_string(sdict_layout_name(sp->layout)));
            } else {
                const sdict_tensor *sizes = sdict_value_tensor(sdict_value_nested(v)->sizes);
                json_object_set_new(o, "components", cli_json_num((long long)sizes->shape[0]));
            }
            json_object_set_new(o, "nbytes", cli_json_unum(bytes));
        } else if (sdict_value_storage(v, NULL)) {
            sdict_dtype dt = SDICT_UINT8;
            const sdict_storage *st = sdict_value_storage(v, &dt);
            size_t es = sdict_dtype_size(dt), nb = sdict_storage_nbytes(st);
            json_object_set_new(o, "type", json_string("storage"));
            json_object_set_new(o, "dtype", json_string(sdict_dtype_name(dt)));
            json_object_set_new(o, "numel", cli_json_unum(es ? nb / es : 0));
            json_object_set_new(o, "nbytes", cli_json_unum(nb));
            buf_truncate(&b, 0);
            storage_name(&b, st);
            json_object_set_new(o, "storage", json_string(b.s));
            json_object_set_new(o, "shared", json_boolean(map_uses(c, st) > 1));
            const char *dev = sdict_storage_location(st);
            json_object_set_new(o, "device", json_text(dev, strlen(dev)));
        } else {
            json_object_set_new(o, "type", json_string(sdict_kind_name(sdict_value_kind(v))));
            json_t *val = cli_json_scalar(v);
            if (val)
                json_object_set_new(o, "value", val);
            buf_truncate(&b, 0);
            fmt_value(&b, v, 64);
            json_object_set_new(o, "repr", json_text(b.s, b.len));
        }
        json_array_append_new(arr, o);
    }
    json_object_set_new(root, "leaves", arr);
    json_object_set_new(root, "tensors", cli_json_unum(ntensors));
    json_object_set_new(root, "tensor_bytes", cli_json_unum(tbytes));
    buf_free(&b);
    return root;
}

/* Lists one file: its text listing on stdout, or (json) its object in *out. Returns the exit
   status for this file; a file that cannot be read is reported on stderr and, with json, is an
   entry {"path", "error": {"status", "message"}}. */
static int ls_one(const char *path, const cli_args *args, json_t **out) {
    sdict_status st = SDICT_OK;
    sdict_error err;
    /* a DCP folder is listed from its .metadata (and bytes items) alone, unless CRCs are
       to be verified, which needs every item */
    cli_args a = *args;
    if (!(a.load_flags & SDICT_LOAD_VERIFY_CRC))
        a.load_flags |= SDICT_LOAD_METADATA_ONLY;
    sdict_doc *doc = cli_load_ex(path, &a, &st, &err);
    if (!doc) {
        if (out) {
            char text[1024];
            json_t *e = json_object(), *o = json_object();
            json_object_set_new(e, "status", json_string(cli_status_class(st, &err)));
            sdict_error_format(&err, text, sizeof text);
            json_object_set_new(e, "message", json_text(text, strlen(text)));
            json_object_set_new(o, "path", json_text(path, strlen(path)));
            json_object_set_new(o, "error", e);
            *out = o;
        }
        return CLI_EXIT_BAD_INPUT;
    }
    ls_ctx c;
    memset(&c, 0, sizeof c);
    c.listing = (a.load_flags & SDICT_LOAD_METADATA_ONLY) && sdict_doc_format(doc) == SDICT_FORMAT_DCP;
    cli_buf kpath;
    buf_init(&kpath);
    bool ok = walk_leaves(sdict_doc_root(doc), &kpath, true, collect, &c);
    buf_free(&kpath);
    int rc = CLI_EXIT_BAD_INPUT;
    if (c.oom) {
        fputs("statedict: out of memory\n", stderr);
    } else if (ok && out) {
        *out = listing_json(&c, doc, path);
        rc = CLI_EXIT_OK;
    } else if (ok) {
        rc = print_text(&c, doc);
    }
    for (size_t i = 0; i < c.n; i++)
        free(c.items[i].key);
    free(c.items);
    free(c.map);
    cli_forget_ints();
    sdict_doc_free(doc);
    return rc;
}

int cmd_ls(const cli_cmd *cmd, const cli_args *args) {
    (void)cmd;
    int worst = CLI_EXIT_OK;
    bool several = args->npos > 1;
    cli_jw w;
    if (args->json) {
        cli_jw_init(&w, stdout, args->pretty ? 2 : 0);
        if (several) {
            cli_jw_open(&w, '{');
            cli_jw_key(&w, "files");
            cli_jw_open(&w, '[');
        }
    }
    for (int i = 0; i < args->npos; i++) {
        const char *path = args->pos[i];
        json_t *j = NULL;
        if (several && !args->json) {
            if (i)
                fputc('\n', stdout);
            cli_buf h;
            buf_init(&h);
            buf_puts(&h, "==> ");
            fmt_escaped(&h, path, strlen(path));
            buf_puts(&h, " <==\n");
            fputs(h.s, stdout);
            buf_free(&h);
        }
        int rc = ls_one(path, args, args->json ? &j : NULL);
        if (j && (several || rc == CLI_EXIT_OK)) {
            if (several)
                cli_jw_item(&w);
            cli_jw_json(&w, j);
        }
        json_decref(j);
        if (rc > worst)
            worst = rc;
        fflush(stdout); /* each file's listing and errors before the next file's */
        fflush(stderr);
    }
    if (args->json) {
        if (several) {
            cli_jw_close(&w, ']');
            cli_jw_close(&w, '}');
        }
        if (several || worst == CLI_EXIT_OK)
            cli_jw_raw(&w, "\n");
        if (cli_jw_finish(&w) != 0 && worst == CLI_EXIT_OK)
            worst = CLI_EXIT_BAD_INPUT;
    }
    return worst;
}
