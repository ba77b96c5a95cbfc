/*
 dcp_write.c - torch.distributed.checkpoint folders written as torch 2.14's dcp.save writes them
 with the default planner and FileSystemWriter (one file per rank, no thread pool), from one
 process (sdict_save_dcp) or many (the plan API: sdict_dcp_plan_local -> sdict_dcp_plan_global
 -> sdict_dcp_begin -> sdict_dcp_write_rank on every rank -> sdict_dcp_commit, which
 statedict_mpi drives over MPI; sdict_save_dcp is its one-rank case).

 Layout:
   __<r>_0.distcp every item rank r keeps, back to back: first the non-tensor (bytes) items,
                  then the tensor items, each in flatten order; each item a torch.save archive
                  (torch 2.7+ records, archive folder "archive") of the value, tensors saved
                  contiguous with storage offset 0 (torch clones views before saving)
   .metadata      the pickled Metadata (state_dict_metadata, planner_data, storage_data,
                  storage_meta, version "1.0.0") with the class paths of torch 2.14
 Flattening follows torch 2.4+'s traverse_state_dict: every dict is descended (keys as str;
 an empty dict disappears), a list only when it holds a tensor or a dict (or such a list), a
 tuple never; the fqn is the path joined with '.'. Items replicated on several ranks are kept
 by one, chosen as torch 2.3+'s dedup_save_plans chooses, before anything is written.

 Crash safety: every rank's data file is written, fsynced and renamed to
 __<rank>_0.distcp.partial first; only when every rank succeeded does the commit remove an
 existing .metadata (and make the removal durable), rename the data files into place, and write
 .metadata last through a temporary file and a rename. A failure writing data (a full disk, a
 failing rank) leaves the old checkpoint as it was; a crash at any point leaves either the old
 complete checkpoint untouched (before the removal) or a folder without .metadata, which every
 reader (statedict and torch) refuses as unfinished — never an old .metadata over new data,
 which DCP's own in-place overwrite can leave.
*/
#define _DEFAULT_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char M_META[] = "torch.distributed.checkpoint.metadata";

static sdict_status nomem(sdict_error *err) {
    return sdict__err(err, SDICT_E_NOMEM, NULL, -1, "out of memory");
}

/*==================================================================================================
 MARK: Flattening
==================================================================================================*/

typedef struct flat_item {
    char *fqn;
    size_t fqn_len;
    const sdict_value *val;
    const sdict_value **path; /* path elements (str or int values of the input) */
    int64_t *index;           /* list index per element, -1 for a key */
    size_t depth;
    bool tensor;
} flat_item;

typedef struct flat {
    flat_item *items;
    size_t n, cap;
    const sdict_value *stack[1024];
    int64_t stack_ix[1024];
} flat;

static bool is_tensor(const sdict_value *v) {
    return sdict_value_kind(v) == SDICT_KIND_TENSOR;
}

/* torch's _is_terminal: a dict never; a list unless it holds a tensor or a non-terminal
   container; everything else always. */
static bool terminal(const sdict_value *v, int depth) {
    sdict_kind k = sdict_value_kind(v);
    if (k == SDICT_KIND_DICT)
        return false;
    if (k != SDICT_KIND_LIST)
        return true;
    if (depth > 1000)
        return true;
    for (size_t i = 0, n = sdict_seq_len(v); i < n; i++) {
        const sdict_value *e = sdict_seq_item(v, i);
        sdict_kind ek = sdict_value_kind(e);
        if (is_tensor(e) ||
            ((ek == SDICT_KIND_DICT || ek == SDICT_KIND_LIST) && !terminal(e, depth + 1)))
            return false;
    }
    return true;
}

/* str(key) of a dict key as Python spells it: str, int, bool. */
static bool key_text(const sdict_value *k, sdict__buf *b) {
    size_t len;
    const char *s;
    char num[64];
    switch (sdict_value_kind(k)) {
    case SDICT_KIND_STR:
        s = sdict_str_get(k, &len);
        sdict__buf_append(b, s, len);
        return true;
    case SDICT_KIND_INT:
        len = sdict_int_to_string(k, num, sizeof num);
        if (len >= sizeof num)
            return false;
        sdict__buf_append(b, num, len);
        return true;
    case SDICT_KIND_BOOL:
        s = sdict_bool_get(k) ? "True" : "False";
        sdict__buf_append(b, s, strlen(s));
        return true;
    default:
        return false;
    }
}

static sdict_status visit(flat *f, const sdict_value *v, size_t depth, sdict_error *err) {
    if (depth >= 1024)
        return sdict__err(err, SDICT_E_LIMIT, NULL, -1, "state dict nested deeper than 1024");
    sdict_kind k = sdict_value_kind(v);
    if (k == SDICT_KIND_DICT || (depth > 0 && !terminal(v, 0))) {
        bool dict = k == SDICT_KIND_DICT;
        size_t n = dict ? sdict_dict_len(v) : sdict_seq_len(v);
        for (size_t i = 0; i < n; i++) {
            f->stack[depth] = dict ? sdict_dict_key(v, i) : NULL;
            f->stack_ix[depth] = dict ? -1 : (int64_t)i;
            sdict_status st =
                visit(f, dict ? sdict_dict_val(v, i) : sdict_seq_item(v, i), depth + 1, err);
            if (st)
                return st;
        }
        return SDICT_OK;
    }
    if (depth == 0)
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1,
                          "a distributed checkpoint's root must be a dict, not a %s",
                          sdict_kind_name(k));
    if (k == SDICT_KIND_TENSOR && (sdict_value_quantizer(v) || !sdict_value_tensor(v)->storage))
        return sdict__err(err, SDICT_E_UNSUPPORTED, NULL, -1,
                          "quantized and meta tensors are not written to DCP folders");
    sdict__buf b;
    sdict__buf_init(&b);
    for (size_t d = 0; d < depth; d++) {
        if (d)
            sdict__buf_byte(&b, '.');
        if (f->stack_ix[d] >= 0) {
            char num[24];
            int n = snprintf(num, sizeof num, "%lld", (long long)f->stack_ix[d]);
            sdict__buf_append(&b, num, (size_t)n);
        } else if (!key_text(f->stack[d], &b)) {
            sdict__buf_free(&b);
            return sdict__err(err, SDICT_E_UNSUPPORTED, NULL, -1,
                              "a dict key of type %s: DCP's flattening spells keys with str()",
                              sdict_kind_name(sdict_value_kind(f->stack[d])));
        }
    }
    sdict__buf_byte(&b, 0);
    sdict_status st = sdict__buf_status(&b, err);
    if (st)
        return st;
    if (f->n == f->cap) {
        size_t cap = f->cap ? 2 * f->cap : 16;
        flat_item *ni = sdict__realloc(f->items, cap * sizeof *ni);
        if (!ni) {
            sdict__buf_free(&b);
            return nomem(err);
        }
        f->items = ni;
        f->cap = cap;
    }
    flat_item *it = &f->items[f->n];
    memset(it, 0, sizeof *it);
    it->fqn = (char *)b.data;
    it->fqn_len = b.len - 1;
    it->val = v;
    it->tensor = k == SDICT_KIND_TENSOR;
    it->depth = depth;
    it->path = sdict__calloc(depth, sizeof *it->path);
    it->index = sdict__calloc(depth, sizeof *it->index);
    if (!it->path || !it->index) {
        sdict__free(it->path);
        sdict__free(it->index);
        sdict__free(it->fqn);
        return nomem(err);
    }
    for (size_t d = 0; d < depth; d++) {
        it->path[d] = f->stack[d];
        it->index[d] = f->stack_ix[d];
    }
    f->n++;
    return SDICT_OK;
}

static void flat_free(flat *f) {
    for (size_t i = 0; i < f->n; i++) {
        sdict__free(f->items[i].fqn);
        sdict__free(f->items[i].path);
        sdict__free(f->items[i].index);
    }
    sdict__free(f->items);
}

/*==================================================================================================
 MARK: The .metadata pickle (protocol 4, unframed; what Python's pickle.load reads)
==================================================================================================*/

static void p_str(sdict__buf *b, const char *s, size_t n) {
    if (n < 256) {
        sdict__buf_byte(b, 0x8c); /* SHORT_BINUNICODE */
        sdict__buf_byte(b, (uint8_t)n);
    } else {
        sdict__buf_byte(b, 'X'); /* BINUNICODE */
        sdict__buf_le32(b, (uint32_t)n);
    }
    sdict__buf_append(b, s, n);
}

static void p_cstr(sdict__buf *b, const char *s) {
    p_str(b, s, strlen(s));
}

static void p_global(sdict__buf *b, const char *module, const char *name) {
    p_cstr(b, module);
    p_cstr(b, name);
    sdict__buf_byte(b, 0x93); /* STACK_GLOBAL */
}

static void p_int(sdict__buf *b, int64_t v) {
    if (v >= 0 && v < 256) {
        sdict__buf_byte(b, 'K'); /* BININT1 */
        sdict__buf_byte(b, (uint8_t)v);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
        sdict__buf_byte(b, 'J'); /* BININT */
        sdict__buf_le32(b, (uint32_t)(int32_t)v);
    } else {
        sdict__buf_byte(b, 0x8a); /* LONG1: 8 bytes two's complement */
        sdict__buf_byte(b, 8);
        sdict__buf_le64(b, (uint64_t)v);
    }
}

/* NEWOBJ of module.name with no arguments; the caller then pushes the state and BUILDs. */
static void p_newobj(sdict__buf *b, const char *module, const char *name) {
    p_global(b, module, name);
    sdict__buf_byte(b, ')');  /* EMPTY_TUPLE */
    sdict__buf_byte(b, 0x81); /* NEWOBJ */
}

/*==================================================================================================
 MARK: Items and files
==================================================================================================*/

/* Counts the bytes an item writer passes on to the file. */
typedef struct counting {
    sdict__write_fn write;
    void *ctx;
    uint64_t n;
} counting;

static sdict_status count_write(void *ctx, const void *p, size_t n, sdict_error *err) {
    counting *c = ctx;
    c->n += n;
    return c->write(c->ctx, p, n, err);
}

/* Writes the torch.save archive of item it (a tensor saved contiguous with storage offset 0,
   as torch clones a view before saving: a contiguous tensor's bytes are borrowed, not
   copied). */
static sdict_status item_write(const flat_item *it, counting *out, sdict_error *err) {
    sdict_save_opts o;
    memset(&o, 0, sizeof o);
    o.flags = SDICT_SAVE_LAYOUT_TORCH2;
    o.archive_name = "archive";
    sdict_doc *tmp = NULL;
    const sdict_value *root = it->val;
    sdict_status st = SDICT_OK;
    if (it->tensor) {
        const sdict_tensor *t = sdict_value_tensor(it->val);
        size_t nb = sdict_tensor_nbytes(t);
        uint8_t *data = sdict_tensor_data(t);
        sdict_storage *s = NULL;
        sdict_tensor c;
        int64_t stride[64];
        int64_t *strides = t->ndim <= 64 ? stride : sdict__calloc((size_t)t->ndim, 8);
        sdict_value *v = NULL;
        if (!strides)
            return nomem(err);
        bool borrow = data && sdict_tensor_is_contiguous(t) && !t->is_conj && !t->is_neg;
        if ((st = sdict_doc_new(&tmp, err)) == SDICT_OK &&
            (st = borrow ? sdict_storage_wrap(data, nb, NULL, NULL, &s, err)
                         : sdict_storage_new(nb, &s, err)) == SDICT_OK &&
            (borrow ||
             (st = sdict_tensor_copy_to(t, t->dtype, sdict_storage_data(s), nb, err)) == SDICT_OK) &&
            (st = sdict_tensor_init(&c, t->dtype, t->ndim, t->shape, strides, s, err)) == SDICT_OK)
            st = sdict_tensor_new(tmp, &c, &v, err);
        sdict_storage_release(s);
        if (strides != stride)
            sdict__free(strides);
        root = v;
    }
    if (st == SDICT_OK)
        st = sdict__write_archive(root, "archive", &o, count_write, out, err);
    sdict_doc_free(tmp);
    return st;
}

static sdict_status io_err(sdict_error *err, const char *what, const char *path, int e) {
    char b[128];
    if (strerror_r(e, b, sizeof b) != 0)
        snprintf(b, sizeof b, "errno %d", e);
    sdict__err_file(err, path);
    return sdict__err(err, SDICT_E_IO, NULL, -1, "%s: %s", what, b);
}

/* A random UUID4 text, as uuid.uuid4() spells it (DCP's save_id). */
static void uuid4(char out[37]) {
    uint8_t r[16];
    uint64_t a = sdict__hash_seed(), x = a ^ (uint64_t)(uintptr_t)out;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read(fd, r, 16) != 16)
        for (int i = 0; i < 16; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            r[i] = (uint8_t)x;
        }
    if (fd >= 0)
        close(fd);
    r[6] = (uint8_t)((r[6] & 0x0f) | 0x40);
    r[8] = (uint8_t)((r[8] & 0x3f) | 0x80);
    static const char hex[] = "0123456789abcdef";
    size_t k = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[k++] = '-';
        out[k++] = hex[r[i] >> 4];
        out[k++] = hex[r[i] & 15];
    }
    out[k] = 0;
}

/*==================================================================================================
 MARK: Plans (DCP's SavePlan, as a flat byte buffer that can cross processes)

 All integers little-endian.
   plan    "SDCPPLN1", u32 rank (0xffffffff in a local plan), u32 n_items, then n_items items:
           u8 tensor, u8 keep, u16 dtype, u32 ndim, u32 fqn_len, fqn bytes, u32 depth,
           u32 path_len, path (depth elements: u8 0, u32 len, key bytes | u8 1, i64 list index),
           i64 global_shape[ndim], i64 offsets[ndim], i64 sizes[ndim], u64 file_offset,
           u64 length
   global  "SDCPGLB1", u32 world, then world times: u64 plan_len, plan bytes (keep set on the
           items the rank writes after deduplication)
   written "SDCPWRT1", u32 world of the global plan, u64 inode and u64 mtime (ns) of the staged
           file as written, then the rank's plan from the global plan with file_offset and
           length of the items it wrote
==================================================================================================*/

#define PLAN_MAGIC "SDCPPLN1"
#define GLOBAL_MAGIC "SDCPGLB1"
#define WRITTEN_MAGIC "SDCPWRT1"
#define WRITTEN_HEAD 28
#define NO_RANK 0xffffffffu

typedef struct pitem {
    const char *fqn;
    uint32_t fqn_len;
    bool tensor, keep;
    sdict_dtype dtype;
    uint32_t ndim, depth, path_len;
    const uint8_t *path;
    const uint8_t *dims; /* 3 * ndim i64: global shape, offsets, sizes */
    uint64_t foff, flen;
    size_t keep_at, foff_at; /* byte positions of keep and file_offset in the plan */
    uint32_t rank;
    size_t order;   /* position over all plans (rank-major) */
    size_t scratch; /* per-pass bookkeeping */
} pitem;

typedef struct plan {
    const uint8_t *data;
    size_t len;
    uint32_t rank;
    pitem *items;
    size_t n;
} plan;

typedef struct cursor {
    const uint8_t *p;
    size_t n, at;
    bool bad;
} cursor;

static const uint8_t *cur_take(cursor *c, size_t n) {
    if (c->bad || n > c->n - c->at) {
        c->bad = true;
        return NULL;
    }
    const uint8_t *r = c->p + c->at;
    c->at += n;
    return r;
}
static uint64_t cur_u(cursor *c, size_t w) {
    const uint8_t *p = cur_take(c, w);
    if (!p)
        return 0;
    return w == 1 ? p[0] : w == 2 ? sdict__le16(p) : w == 4 ? sdict__le32(p) : sdict__le64(p);
}
static int64_t dim_at(const pitem *it, uint32_t which, uint32_t d) {
    return (int64_t)sdict__le64(it->dims + 8 * ((size_t)which * it->ndim + d));
}

static sdict_status plan_err(sdict_error *err, const char *what, size_t at) {
    return sdict__err(err, SDICT_E_FORMAT, "plan", (int64_t)at, "not a statedict DCP plan: %s",
                      what);
}

/* Parses one plan buffer (items point into data). */
static sdict_status plan_parse(const void *data, size_t len, plan *out, sdict_error *err) {
    memset(out, 0, sizeof *out);
    cursor c = {data, len, 0, false};
    const uint8_t *m = cur_take(&c, 8);
    if (!data || !m || memcmp(m, PLAN_MAGIC, 8) != 0)
        return plan_err(err, "bad magic", 0);
    out->data = data;
    out->len = len;
    out->rank = (uint32_t)cur_u(&c, 4);
    uint64_t n = cur_u(&c, 4);
    /* every item takes at least 36 bytes (a 0-dim tensor or a value with an empty fqn and
       path: the fixed fields only) */
    if (c.bad || n > (len - c.at) / 36)
        return plan_err(err, "item count past the end", c.at);
    out->items = sdict__calloc(n ? (size_t)n : 1, sizeof *out->items);
    if (!out->items)
        return nomem(err);
    for (size_t i = 0; i < n; i++) {
        pitem *it = &out->items[i];
        it->rank = out->rank;
        it->tensor = cur_u(&c, 1) != 0;
        it->keep_at = c.at;
        it->keep = cur_u(&c, 1) != 0;
        it->dtype = (sdict_dtype)cur_u(&c, 2);
        it->ndim = (uint32_t)cur_u(&c, 4);
        it->fqn_len = (uint32_t)cur_u(&c, 4);
        it->fqn = (const char *)cur_take(&c, it->fqn_len);
        it->depth = (uint32_t)cur_u(&c, 4);
        it->path_len = (uint32_t)cur_u(&c, 4);
        it->path = cur_take(&c, it->path_len);
        if (it->ndim > 64 || (it->tensor && (unsigned)it->dtype >= SDICT_DTYPE_COUNT) ||
            (!it->tensor && it->ndim))
            c.bad = true;
        it->dims = cur_take(&c, (size_t)it->ndim * 24);
        it->foff_at = c.at;
        it->foff = cur_u(&c, 8);
        it->flen = cur_u(&c, 8);
        if (c.bad)
            return plan_err(err, "item past the end or out of range", c.at);
        for (uint32_t d = 0; d < it->ndim; d++) {
            int64_t g = dim_at(it, 0, d), o = dim_at(it, 1, d), s = dim_at(it, 2, d);
            if (g < 0 || o < 0 || s < 0 || o > g || s > g - o) {
                sdict_status st = sdict__err(
                    err, SDICT_E_SHAPE, "plan", (int64_t)c.at,
                    "'%.*s': chunk (offset %lld, size %lld in dimension %u) lies outside the "
                    "global size %lld",
                    (int)(it->fqn_len > 80 ? 80 : it->fqn_len), it->fqn, (long long)o,
                    (long long)s, d, (long long)g);
                sdict__free(out->items);
                out->items = NULL;
                return st;
            }
        }
        out->n++;
    }
    if (c.at != len)
        return plan_err(err, "bytes after the last item", c.at);
    return SDICT_OK;
}

static void plans_free(plan *p, size_t n) {
    for (size_t i = 0; p && i < n; i++)
        sdict__free(p[i].items);
    sdict__free(p);
}

/* Parses a global plan into world plans. */
static sdict_status global_parse(const void *data, size_t len, plan **out, size_t *world,
                                 sdict_error *err) {
    *out = NULL;
    *world = 0;
    cursor c = {data, len, 0, false};
    const uint8_t *m = cur_take(&c, 8);
    if (!data || !m || memcmp(m, GLOBAL_MAGIC, 8) != 0)
        return plan_err(err, "bad global plan magic", 0);
    uint64_t w = cur_u(&c, 4);
    if (c.bad || w == 0 || w > (len - c.at) / 8)
        return plan_err(err, "bad world size", 8);
    plan *p = sdict__calloc((size_t)w, sizeof *p);
    if (!p)
        return nomem(err);
    for (size_t r = 0; r < w; r++) {
        uint64_t n = cur_u(&c, 8);
        const uint8_t *b = cur_take(&c, (size_t)n);
        sdict_status st = b ? plan_parse(b, (size_t)n, &p[r], err)
                            : plan_err(err, "rank plan past the end", c.at);
        if (st) {
            plans_free(p, w);
            return st;
        }
    }
    *out = p;
    *world = (size_t)w;
    return SDICT_OK;
}

static int cmp_fqn(const pitem *a, const pitem *b) {
    int r = memcmp(a->fqn, b->fqn, a->fqn_len < b->fqn_len ? a->fqn_len : b->fqn_len);
    return r ? r : a->fqn_len < b->fqn_len ? -1 : a->fqn_len > b->fqn_len ? 1 : 0;
}

/* (fqn, offsets) as MetadataIndex compares */
static int cmp_key_only(const pitem *a, const pitem *b) {
    int r = cmp_fqn(a, b);
    if (r)
        return r;
    if (a->tensor != b->tensor)
        return a->tensor ? 1 : -1;
    for (uint32_t d = 0; d < a->ndim && d < b->ndim; d++)
        if (dim_at(a, 1, d) != dim_at(b, 1, d))
            return dim_at(a, 1, d) < dim_at(b, 1, d) ? -1 : 1;
    return a->ndim < b->ndim ? -1 : a->ndim > b->ndim;
}
/* ... then the order of appearance */
static int cmp_index(const void *pa, const void *pb) {
    const pitem *a = *(const pitem *const *)pa, *b = *(const pitem *const *)pb;
    int r = cmp_key_only(a, b);
    return r ? r : a->order < b->order ? -1 : a->order > b->order;
}
static int cmp_fqn_order(const void *pa, const void *pb) {
    const pitem *a = *(const pitem *const *)pa, *b = *(const pitem *const *)pb;
    int r = cmp_fqn(a, b);
    return r ? r : a->order < b->order ? -1 : a->order > b->order;
}
static int cmp_order(const void *pa, const void *pb) {
    const pitem *a = *(const pitem *const *)pa, *b = *(const pitem *const *)pb;
    return a->order < b->order ? -1 : a->order > b->order;
}

static pitem **all_items(plan *p, size_t world, size_t *n_out) {
    size_t n = 0;
    for (size_t r = 0; r < world; r++)
        n += p[r].n;
    pitem **v = sdict__calloc(n ? n : 1, sizeof *v);
    if (!v)
        return NULL;
    n = 0;
    for (size_t r = 0; r < world; r++)
        for (size_t i = 0; i < p[r].n; i++) {
            p[r].items[i].order = n;
            v[n++] = &p[r].items[i];
        }
    *n_out = n;
    return v;
}

static sdict_status item_err(sdict_error *err, sdict_status code, const pitem *it,
                             const char *what) {
    return sdict__err(err, code, NULL, -1, "'%.*s' (rank %u): %s",
                      (int)(it->fqn_len > 100 ? 100 : it->fqn_len), it->fqn, it->rank, what);
}

/* torch's _validate_global_plan over the kept items: for each fqn one kind, dtype and global
   shape on every rank; the kept chunks do not overlap and cover the global shape. v is sorted
   by (fqn, order). */
static sdict_status validate(pitem **v, size_t n, sdict_error *err) {
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        while (j < n && cmp_fqn(v[i], v[j]) == 0)
            j++;
        const pitem *a = v[i];
        uint64_t numel = 1, vol = 0;
        size_t kept = 0;
        for (uint32_t d = 0; a->tensor && d < a->ndim; d++)
            if (!sdict__mul_u64(numel, (uint64_t)dim_at(a, 0, d), &numel))
                return item_err(err, SDICT_E_SHAPE, a, "element count overflows");
        for (size_t k = i; k < j; k++) {
            const pitem *b = v[k];
            if (b->tensor != a->tensor)
                return item_err(err, SDICT_E_INVALID_ARG, b,
                                "a tensor on one rank and a non-tensor value on another");
            kept += b->keep;
            if (!a->tensor)
                continue;
            if (b->dtype != a->dtype)
                return item_err(err, SDICT_E_DTYPE, b, "another dtype than on another rank");
            bool same = b->ndim == a->ndim;
            for (uint32_t d = 0; same && d < a->ndim; d++)
                same = dim_at(a, 0, d) == dim_at(b, 0, d);
            if (!same)
                return item_err(err, SDICT_E_SHAPE, b, "another global shape than on another rank");
            if (!b->keep)
                continue;
            uint64_t cv = 1;
            for (uint32_t d = 0; d < b->ndim; d++)
                cv *= (uint64_t)dim_at(b, 2, d);
            vol += cv;
            for (size_t q = i; q < k && cv; q++) {
                const pitem *c = v[q];
                if (!c->keep)
                    continue;
                bool overlap = true;
                for (uint32_t d = 0; overlap && d < b->ndim; d++)
                    overlap = dim_at(b, 1, d) < dim_at(c, 1, d) + dim_at(c, 2, d) &&
                              dim_at(c, 1, d) < dim_at(b, 1, d) + dim_at(b, 2, d);
                if (overlap)
                    return item_err(err, SDICT_E_SHAPE, b,
                                    "its chunk overlaps another rank's chunk at other offsets");
            }
        }
        if (a->tensor && vol != numel)
            return item_err(err, SDICT_E_SHAPE, a,
                            "the ranks' chunks leave a hole in the global tensor");
        if (kept == 0 || (!a->tensor && kept > 1))
            return item_err(err, SDICT_E_INVALID_ARG, a,
                            kept ? "a non-tensor value written by more than one rank"
                                 : "written by no rank");
        i = j;
    }
    return SDICT_OK;
}

/* Encodes the flattened items of a local plan (ranks, keep and file positions unset). */
static sdict_status encode_local(const flat *f, const sdict_dcp_shard *shards, size_t n_shards,
                                 sdict__buf *b, sdict_error *err) {
    sdict__buf_append(b, PLAN_MAGIC, 8);
    sdict__buf_le32(b, NO_RANK);
    sdict__buf_le32(b, (uint32_t)f->n);
    for (size_t s = 0; s < n_shards; s++) {
        bool found = false;
        for (size_t i = 0; i < f->n && !found; i++)
            found = f->items[i].tensor && shards[s].fqn && strcmp(f->items[i].fqn, shards[s].fqn) == 0;
        if (!found)
            return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1,
                              "shard %zu names '%.100s', which is not a tensor of the state dict",
                              s, shards[s].fqn ? shards[s].fqn : "(NULL)");
    }
    for (size_t i = 0; i < f->n; i++) {
        const flat_item *it = &f->items[i];
        const sdict_tensor *t = it->tensor ? sdict_value_tensor(it->val) : NULL;
        const sdict_dcp_shard *sh = NULL;
        for (size_t s = 0; t && s < n_shards && !sh; s++)
            if (strcmp(it->fqn, shards[s].fqn) == 0)
                sh = &shards[s];
        if (t && t->ndim > 64)
            return sdict__err(err, SDICT_E_LIMIT, NULL, -1, "'%.100s' has over 64 dimensions",
                              it->fqn);
        if (sh && (!sh->global_shape || !sh->offsets))
            return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1,
                              "shard '%.100s': NULL global_shape or offsets", it->fqn);
        for (int32_t d = 0; sh && d < t->ndim; d++)
            if (sh->offsets[d] < 0 || sh->global_shape[d] < 0 ||
                sh->offsets[d] > sh->global_shape[d] ||
                t->shape[d] > sh->global_shape[d] - sh->offsets[d])
                return sdict__err(err, SDICT_E_SHAPE, NULL, -1,
                                  "shard '%.100s' (offset %lld, size %lld in dimension %d) lies "
                                  "outside its global size %lld",
                                  it->fqn, (long long)sh->offsets[d], (long long)t->shape[d], d,
                                  (long long)sh->global_shape[d]);
        sdict__buf_byte(b, t != NULL);
        sdict__buf_byte(b, 0);
        sdict__buf_le16(b, (uint16_t)(t ? t->dtype : 0));
        sdict__buf_le32(b, t ? (uint32_t)t->ndim : 0);
        sdict__buf_le32(b, (uint32_t)it->fqn_len);
        sdict__buf_append(b, it->fqn, it->fqn_len);
        sdict__buf_le32(b, (uint32_t)it->depth);
        sdict__buf path;
        sdict__buf_init(&path);
        for (size_t d = 0; d < it->depth; d++) {
            if (it->index[d] >= 0) {
                sdict__buf_byte(&path, 1);
                sdict__buf_le64(&path, (uint64_t)it->index[d]);
            } else {
                sdict__buf k;
                sdict__buf_init(&k);
                key_text(it->path[d], &k);
                sdict__buf_byte(&path, 0);
                sdict__buf_le32(&path, (uint32_t)k.len);
                sdict__buf_append(&path, k.data, k.len);
                if (k.oom)
                    path.oom = true;
                sdict__buf_free(&k);
            }
        }
        sdict__buf_le32(b, (uint32_t)path.len);
        sdict__buf_append(b, path.data, path.len);
        if (path.oom)
            b->oom = true;
        sdict__buf_free(&path);
        for (int32_t d = 0; t && d < t->ndim; d++)
            sdict__buf_le64(b, (uint64_t)(sh ? sh->global_shape[d] : t->shape[d]));
        for (int32_t d = 0; t && d < t->ndim; d++)
            sdict__buf_le64(b, (uint64_t)(sh ? sh->offsets[d] : 0));
        for (int32_t d = 0; t && d < t->ndim; d++)
            sdict__buf_le64(b, (uint64_t)t->shape[d]);
        sdict__buf_le64(b, 0);
        sdict__buf_le64(b, 0);
    }
    return sdict__buf_status(b, err);
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Flattens root and checks its fqns are unique (torch's "duplicated flatten key"). */
static sdict_status flatten(const sdict_value *root, flat *f, sdict_error *err) {
    memset(f, 0, sizeof *f);
    sdict_status st = visit(f, root, 0, err);
    const char **names = st ? NULL : sdict__calloc(f->n + 1, sizeof *names);
    if (st == SDICT_OK && !names)
        st = nomem(err);
    for (size_t i = 0; st == SDICT_OK && i < f->n; i++)
        names[i] = f->items[i].fqn;
    if (st == SDICT_OK)
        qsort(names, f->n, sizeof *names, cmp_name);
    for (size_t i = 1; st == SDICT_OK && i < f->n; i++)
        if (strcmp(names[i - 1], names[i]) == 0)
            st = sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1,
                            "duplicated flatten key '%.100s' (torch refuses it too)", names[i]);
    sdict__free(names);
    return st;
}

static sdict_status out_buf(sdict__buf *b, void **out, size_t *out_len, sdict_error *err) {
    sdict_status st = sdict__buf_status(b, err);
    if (st) {
        sdict__buf_free(b);
        return st;
    }
    *out = b->data;
    *out_len = b->len;
    return SDICT_OK;
}

SDICT_API sdict_status sdict_dcp_plan_local(const sdict_value *root,
                                            const sdict_dcp_shard *shards, size_t n_shards,
                                            void **plan_out, size_t *plan_len, sdict_error *err) {
    if (plan_out)
        *plan_out = NULL;
    if (plan_len)
        *plan_len = 0;
    if (!root || !plan_out || !plan_len || (n_shards && !shards)) {
        sdict__err_file(err, "");
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "sdict_dcp_plan_local: NULL argument");
    }
    flat f;
    sdict_status st = flatten(root, &f, err);
    sdict__buf b;
    sdict__buf_init(&b);
    if (st == SDICT_OK && (st = encode_local(&f, shards, n_shards, &b, err)) == SDICT_OK)
        st = out_buf(&b, plan_out, plan_len, err);
    else
        sdict__buf_free(&b);
    flat_free(&f);
    if (st)
        sdict__err_file(err, "");
    return st;
}

SDICT_API sdict_status sdict_dcp_plan_global(const void *const *plans, const size_t *plan_lens,
                                             size_t world, uint32_t flags, void **global_out,
                                             size_t *global_len, sdict_error *err) {
    if (global_out)
        *global_out = NULL;
    if (global_len)
        *global_len = 0;
    if (!plans || !plan_lens || !world || world > 0xfffffffeu || !global_out || !global_len) {
        sdict__err_file(err, "");
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1,
                          "sdict_dcp_plan_global: NULL argument or world 0");
    }
    plan *p = sdict__calloc(world, sizeof *p);
    if (!p)
        return nomem(err);
    sdict_status st = SDICT_OK;
    size_t n = 0, ng = 0;
    pitem **v = NULL, **heads = NULL;
    uint64_t *load = NULL;
    size_t *gend = NULL;
    for (size_t r = 0; r < world && st == SDICT_OK; r++) {
        if ((st = plan_parse(plans[r], plan_lens[r], &p[r], err)) == SDICT_OK)
            for (size_t i = 0; i < p[r].n; i++)
                p[r].items[i].rank = (uint32_t)r;
    }
    if (st == SDICT_OK &&
        (!(v = all_items(p, world, &n)) || !(load = sdict__calloc(world, sizeof *load)) ||
         !(heads = sdict__calloc(n + 1, sizeof *heads)) ||
         !(gend = sdict__calloc(n + 1, sizeof *gend))))
        st = nomem(err);
    if (st == SDICT_OK) {
        /* dedup_save_plans (torch 2.3+): each unique MetadataIndex (fqn, offsets), in order of
           first appearance (rank 0's plan, then what is new in rank 1's, ...), is kept on the
           candidate rank with the fewest planned bytes so far (ties: the lowest rank), which
           adds the item's global storage size (numel * element size of the global tensor, or 1
           for a bytes item or an empty tensor); DEDUP_LOWEST_RANK keeps it on the lowest */
        qsort(v, n, sizeof *v, cmp_index);
        for (size_t i = 0; i < n; i++) {
            if (i == 0 || cmp_key_only(v[i - 1], v[i]) != 0) {
                heads[ng] = v[i];
                heads[ng]->scratch = i; /* scratch: where the group starts in v */
                ng++;
            }
            gend[ng - 1] = i + 1;
        }
        size_t *gstart = sdict__calloc(ng + 1, sizeof *gstart);
        if (!gstart)
            st = nomem(err);
        for (size_t g = 0; st == SDICT_OK && g < ng; g++) {
            gstart[g] = heads[g]->scratch;
            heads[g]->scratch = g; /* scratch: the group of each head */
        }
        if (st == SDICT_OK)
            qsort(heads, ng, sizeof *heads, cmp_order);
        for (size_t h = 0; st == SDICT_OK && h < ng; h++) {
            size_t g = heads[h]->scratch;
            pitem *best = NULL;
            for (size_t k = gstart[g]; k < gend[g]; k++)
                if (!best || (!(flags & SDICT_DCP_DEDUP_LOWEST_RANK) &&
                              load[v[k]->rank] < load[best->rank]))
                    best = v[k];
            uint64_t size = 1;
            if (best->tensor) {
                size = sdict_dtype_size(best->dtype);
                for (uint32_t d = 0; d < best->ndim; d++)
                    size *= (uint64_t)dim_at(best, 0, d);
                if (!size)
                    size = 1;
            }
            load[best->rank] += size;
            best->keep = true;
        }
        sdict__free(gstart);
    }
    if (st == SDICT_OK) {
        qsort(v, n, sizeof *v, cmp_fqn_order);
        st = validate(v, n, err);
    }
    sdict__buf b;
    sdict__buf_init(&b);
    if (st == SDICT_OK) {
        sdict__buf_append(&b, GLOBAL_MAGIC, 8);
        sdict__buf_le32(&b, (uint32_t)world);
        for (size_t r = 0; r < world; r++) {
            sdict__buf_le64(&b, p[r].len);
            size_t at = b.len;
            sdict__buf_append(&b, p[r].data, p[r].len);
            if (b.oom)
                break;
            uint8_t rk[4] = {(uint8_t)r, (uint8_t)(r >> 8), (uint8_t)(r >> 16), (uint8_t)(r >> 24)};
            memcpy(b.data + at + 8, rk, 4);
            for (size_t i = 0; i < p[r].n; i++)
                b.data[at + p[r].items[i].keep_at] = p[r].items[i].keep;
        }
        st = out_buf(&b, global_out, global_len, err);
    }
    if (st)
        sdict__err_file(err, "");
    sdict__free(gend);
    sdict__free(heads);
    sdict__free(load);
    sdict__free(v);
    plans_free(p, world);
    return st;
}

static int cmp_fqn_scratch(const void *pa, const void *pb) {
    const pitem *a = *(const pitem *const *)pa, *b = *(const pitem *const *)pb;
    int r = cmp_fqn(a, b);
    return r ? r : a->scratch < b->scratch ? -1 : a->scratch > b->scratch;
}
static int cmp_scratch(const void *pa, const void *pb) {
    const pitem *a = *(const pitem *const *)pa, *b = *(const pitem *const *)pb;
    return a->scratch < b->scratch ? -1 : a->scratch > b->scratch;
}

/*==================================================================================================
 MARK: Writing a rank's file and committing .metadata
==================================================================================================*/

static void p_dims(sdict__buf *b, const pitem *it, uint32_t which) {
    p_global(b, "torch", "Size");
    sdict__buf_byte(b, '(');
    for (uint32_t d = 0; d < it->ndim; d++)
        p_int(b, dim_at(it, which, d));
    sdict__buf_byte(b, 't');  /* TUPLE */
    sdict__buf_byte(b, 0x85); /* TUPLE1 */
    sdict__buf_byte(b, 'R');  /* REDUCE */
}

/* TensorStorageMetadata of the chunks c[0..n) (kept items of one fqn in rank order). */
static void p_tensor_meta(sdict__buf *b, pitem *const *c, size_t n) {
    p_newobj(b, M_META, "TensorStorageMetadata");
    sdict__buf_byte(b, '}'); /* EMPTY_DICT */
    sdict__buf_byte(b, '(');
    p_cstr(b, "properties");
    p_newobj(b, M_META, "TensorProperties");
    sdict__buf_byte(b, '(');
    p_global(b, "torch", sdict_dtype_name(c[0]->dtype));
    p_global(b, "torch.serialization", "_get_layout");
    p_cstr(b, "torch.strided");
    sdict__buf_byte(b, 0x85);
    sdict__buf_byte(b, 'R');
    sdict__buf_byte(b, 0x89); /* NEWFALSE: requires_grad */
    p_global(b, M_META, "_MEM_FORMAT_ENCODING");
    p_int(b, 0);
    sdict__buf_byte(b, 0x85);
    sdict__buf_byte(b, 'R');
    sdict__buf_byte(b, 0x89); /* pin_memory */
    sdict__buf_byte(b, 't');
    sdict__buf_byte(b, 'b'); /* BUILD (tuple state: __setstate__) */
    p_cstr(b, "size");
    p_dims(b, c[0], 0);
    p_cstr(b, "chunks");
    sdict__buf_byte(b, ']'); /* EMPTY_LIST */
    for (size_t k = 0; k < n; k++) {
        c[k]->scratch = k; /* MetadataIndex.index: the chunk's position */
        p_newobj(b, M_META, "ChunkStorageMetadata");
        sdict__buf_byte(b, '}');
        sdict__buf_byte(b, '(');
        p_cstr(b, "offsets");
        p_dims(b, c[k], 1);
        p_cstr(b, "sizes");
        p_dims(b, c[k], 2);
        sdict__buf_byte(b, 'u'); /* SETITEMS */
        sdict__buf_byte(b, 'b');
        sdict__buf_byte(b, 'a'); /* APPEND */
    }
    sdict__buf_byte(b, 'u');
    sdict__buf_byte(b, 'b');
}

static void p_path(sdict__buf *b, const pitem *it) {
    cursor c = {it->path, it->path_len, 0, false};
    sdict__buf_byte(b, '(');
    for (uint32_t d = 0; d < it->depth && !c.bad; d++) {
        if (cur_u(&c, 1) == 1) {
            p_int(b, (int64_t)cur_u(&c, 8));
        } else {
            uint32_t n = (uint32_t)cur_u(&c, 4);
            const uint8_t *s = cur_take(&c, n);
            if (s)
                p_str(b, (const char *)s, n);
        }
    }
    sdict__buf_byte(b, 't');
}

/* The pickled Metadata of a save by world ranks, as torch's create_default_global_save_plan
   and FileSystemWriter.finish build it (orders: DCP.md 3.8). */
static sdict_status metadata_pickle(sdict__buf *b, plan *p, size_t world, const char *checkpoint_id,
                                    const char *save_id, sdict_error *err) {
    size_t n = 0, nk = 0;
    pitem **v = all_items(p, world, &n);
    pitem **k = v ? sdict__calloc(n + 1, sizeof *k) : NULL;
    pitem **h = k ? sdict__calloc(n + 1, sizeof *h) : NULL;
    if (!h) {
        sdict__free(v);
        sdict__free(k);
        return nomem(err);
    }
    for (size_t i = 0; i < n; i++)
        if (v[i]->keep)
            k[nk++] = v[i];
    sdict__buf_byte(b, 0x80); /* PROTO 4 */
    sdict__buf_byte(b, 4);
    p_newobj(b, M_META, "Metadata");
    sdict__buf_byte(b, '}');
    sdict__buf_byte(b, '(');
    /* state_dict_metadata: fqns in order of first appearance among the kept items */
    p_cstr(b, "state_dict_metadata");
    sdict__buf_byte(b, '}');
    qsort(k, nk, sizeof *k, cmp_fqn_order);
    size_t nh = 0;
    for (size_t i = 0; i < nk; i++)
        if (i == 0 || cmp_fqn(k[i - 1], k[i]) != 0)
            h[nh++] = k[i];
    qsort(h, nh, sizeof *h, cmp_order);
    for (size_t j = 0; j < nh; j++) {
        pitem **first = bsearch(&h[j], k, nk, sizeof *k, cmp_fqn_order);
        size_t cnt = 1;
        while (first + cnt < k + nk && cmp_fqn(first[cnt], first[0]) == 0)
            cnt++;
        sdict__buf_byte(b, '(');
        p_str(b, h[j]->fqn, h[j]->fqn_len);
        if (h[j]->tensor)
            p_tensor_meta(b, first, cnt);
        else
            p_newobj(b, M_META, "BytesStorageMetadata");
        sdict__buf_byte(b, 'u');
    }
    /* planner_data: every flattened fqn, as dict(ChainMap(*maps)) orders them: the last rank's
       map first, then the keys new in the one before it, down to rank 0's */
    p_cstr(b, "planner_data");
    sdict__buf_byte(b, '}');
    for (size_t i = 0; i < n; i++)
        v[i]->scratch = (world - 1 - v[i]->rank) * n + v[i]->order;
    qsort(v, n, sizeof *v, cmp_fqn_scratch);
    nh = 0;
    for (size_t i = 0; i < n; i++)
        if (i == 0 || cmp_fqn(v[i - 1], v[i]) != 0)
            h[nh++] = v[i];
    qsort(h, nh, sizeof *h, cmp_scratch);
    for (size_t j = 0; j < nh; j++) {
        sdict__buf_byte(b, '(');
        p_str(b, h[j]->fqn, h[j]->fqn_len);
        p_path(b, h[j]);
        sdict__buf_byte(b, 'u');
    }
    /* storage_data: each rank's write results, non-tensor items first, then tensors (file
       order); scratch holds each chunk's position from the state_dict_metadata pass */
    p_cstr(b, "storage_data");
    sdict__buf_byte(b, '}');
    for (size_t r = 0; r < world; r++) {
        char rel[32];
        snprintf(rel, sizeof rel, "__%zu_0.distcp", r);
        for (int pass = 0; pass < 2; pass++)
            for (size_t i = 0; i < p[r].n; i++) {
                const pitem *it = &p[r].items[i];
                if (!it->keep || it->tensor != (pass == 1))
                    continue;
                sdict__buf_byte(b, '(');
                p_newobj(b, M_META, "MetadataIndex");
                sdict__buf_byte(b, '}');
                sdict__buf_byte(b, '(');
                p_cstr(b, "fqn");
                p_str(b, it->fqn, it->fqn_len);
                p_cstr(b, "index");
                if (it->tensor) {
                    p_int(b, (int64_t)it->scratch);
                    p_cstr(b, "offset");
                    p_dims(b, it, 1);
                } else {
                    sdict__buf_byte(b, 'N'); /* NONE */
                }
                sdict__buf_byte(b, 'u');
                sdict__buf_byte(b, 'b');
                p_newobj(b, "torch.distributed.checkpoint.filesystem", "_StorageInfo");
                sdict__buf_byte(b, '}');
                sdict__buf_byte(b, '(');
                p_cstr(b, "relative_path");
                p_cstr(b, rel);
                p_cstr(b, "offset");
                p_int(b, (int64_t)it->foff);
                p_cstr(b, "length");
                p_int(b, (int64_t)it->flen);
                sdict__buf_byte(b, 'u');
                sdict__buf_byte(b, 'b');
                sdict__buf_byte(b, 'u');
            }
    }
    p_cstr(b, "storage_meta");
    p_newobj(b, M_META, "StorageMeta");
    sdict__buf_byte(b, '}');
    sdict__buf_byte(b, '(');
    p_cstr(b, "checkpoint_id");
    p_cstr(b, checkpoint_id);
    p_cstr(b, "save_id");
    p_cstr(b, save_id);
    p_cstr(b, "load_id");
    sdict__buf_byte(b, 'N');
    p_cstr(b, "modules");
    sdict__buf_byte(b, ']');
    sdict__buf_byte(b, 'u');
    sdict__buf_byte(b, 'b');
    p_cstr(b, "version");
    p_cstr(b, "1.0.0");
    sdict__buf_byte(b, 'u');
    sdict__buf_byte(b, 'b');
    sdict__buf_byte(b, '.'); /* STOP */
    sdict__free(v);
    sdict__free(k);
    sdict__free(h);
    return sdict__buf_status(b, err);
}

static sdict_status ensure_dir(const char *dir, sdict_error *err) {
    struct stat sb;
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return io_err(err, "mkdir", dir, errno);
    if (stat(dir, &sb) != 0)
        return io_err(err, "stat", dir, errno);
    if (!S_ISDIR(sb.st_mode)) {
        sdict__err_file(err, dir);
        return sdict__err(err, SDICT_E_IO, NULL, -1,
                          "exists and is not a folder: a DCP checkpoint is a folder");
    }
    return SDICT_OK;
}

SDICT_API sdict_status sdict_dcp_begin(const char *dir, sdict_error *err) {
    if (!dir) {
        sdict__err_file(err, "");
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "sdict_dcp_begin: dir is NULL");
    }
    return ensure_dir(dir, err);
}

/* dir/__<rank>_0.distcp, with ".partial" while staged; NULL when out of memory. */
static char *rank_path(const char *dir, size_t rank, bool staged) {
    char rel[48];
    snprintf(rel, sizeof rel, "__%zu_0.distcp%s", rank, staged ? ".partial" : "");
    return sdict__path_join(dir, rel);
}

SDICT_API sdict_status sdict_dcp_discard(const char *dir, size_t rank, sdict_error *err) {
    if (!dir) {
        sdict__err_file(err, "");
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "sdict_dcp_discard: dir is NULL");
    }
    char *path = rank_path(dir, rank, true);
    sdict_status st = path ? SDICT_OK : nomem(err);
    if (st == SDICT_OK && unlink(path) != 0 && errno != ENOENT)
        st = io_err(err, "unlink", path, errno);
    sdict__free(path);
    return st;
}

/* A file's modification time in nanoseconds (with the inode, a staged file's identity). */
static uint64_t mtime_ns(const struct stat *sb) {
    return (uint64_t)sb->st_mtim.tv_sec * 1000000000u + (uint64_t)sb->st_mtim.tv_nsec;
}

/* fsync of the folder dir (a rename or unlink in it made durable); EINVAL: not supported. */
static sdict_status sync_dir(const char *dir, sdict_error *err) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    sdict_status st = SDICT_OK;
    if (fd >= 0) {
        if (fsync(fd) != 0 && errno != EINVAL)
            st = io_err(err, "fsync directory", dir, errno);
        close(fd);
    }
    return st;
}

/* The items a rank keeps, non-tensor items first, then tensors, each in plan order, streamed
   into the rank's file; their offsets and lengths patched into the written plan. */
typedef struct rank_job {
    const flat *f;
    const plan *q;
    uint8_t *written;
} rank_job;

static sdict_status rank_items(void *pctx, sdict__write_fn write, void *wctx, sdict_error *err) {
    rank_job *j = pctx;
    counting c = {write, wctx, 0};
    sdict_status st = SDICT_OK;
    for (int pass = 0; pass < 2 && st == SDICT_OK; pass++)
        for (size_t i = 0; i < j->f->n && st == SDICT_OK; i++) {
            const pitem *it = &j->q->items[i];
            if (!it->keep || it->tensor != (pass == 1))
                continue;
            uint64_t off = c.n;
            if ((st = item_write(&j->f->items[i], &c, err)) == SDICT_OK) {
                uint64_t len = c.n - off;
                for (int k = 0; k < 8; k++) {
                    j->written[it->foff_at + (size_t)k] = (uint8_t)(off >> (8 * k));
                    j->written[it->foff_at + 8 + (size_t)k] = (uint8_t)(len >> (8 * k));
                }
            }
        }
    return st;
}

SDICT_API sdict_status sdict_dcp_write_rank(const char *dir, size_t rank, const sdict_value *root,
                                            const sdict_dcp_shard *shards, size_t n_shards,
                                            const void *global, size_t global_len,
                                            void **written_out, size_t *written_len,
                                            sdict_error *err) {
    if (written_out)
        *written_out = NULL;
    if (written_len)
        *written_len = 0;
    if (!dir || !root || !global || !written_out || !written_len || (n_shards && !shards)) {
        sdict__err_file(err, dir ? dir : "");
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "sdict_dcp_write_rank: NULL argument");
    }
    plan *p = NULL;
    size_t world = 0;
    flat f;
    memset(&f, 0, sizeof f);
    sdict__buf mine, out;
    sdict__buf_init(&mine);
    sdict__buf_init(&out);
    char *path = NULL;
    sdict_status st = global_parse(global, global_len, &p, &world, err);
    if (st == SDICT_OK && rank >= world)
        st = sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1,
                        "rank %zu of a global plan for %zu ranks", rank, world);
    if (st == SDICT_OK && (st = flatten(root, &f, err)) == SDICT_OK)
        st = encode_local(&f, shards, n_shards, &mine, err);
    plan *q = st ? NULL : &p[rank];
    if (st == SDICT_OK) {
        /* the state dict must be the one this rank planned with: its local plan is the rank's
           section of the global plan but for the rank number and the keep flags */
        sdict__buf_append(&out, WRITTEN_MAGIC, 8);
        sdict__buf_le32(&out, (uint32_t)world);
        sdict__buf_le64(&out, 0);
        sdict__buf_le64(&out, 0);
        sdict__buf_append(&out, q->data, q->len);
        if ((st = sdict__buf_status(&out, err)) == SDICT_OK) {
            uint8_t *pl = out.data + WRITTEN_HEAD;
            for (size_t i = 0; i < q->n; i++)
                pl[q->items[i].keep_at] = 0;
            memset(pl + 8, 0xff, 4);
            if (q->len != mine.len || memcmp(pl, mine.data, mine.len) != 0 || q->n != f.n)
                st = sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1,
                                "rank %zu: the state dict or its shards differ from the ones in "
                                "the rank's local plan",
                                rank);
            memcpy(pl, q->data, q->len);
        }
    }
    if (st == SDICT_OK && (st = ensure_dir(dir, err)) == SDICT_OK &&
        !(path = rank_path(dir, rank, true)))
        st = nomem(err);
    /* the staged name is the library's own: a link planted under it goes first (writing
       through it would overwrite whatever it names, outside the folder or the previous
       checkpoint's data); a leftover regular file (a crashed or concurrent save's) is
       replaced by the rename, so the new file never reuses its inode */
    struct stat lb;
    if (st == SDICT_OK && lstat(path, &lb) == 0 && !S_ISREG(lb.st_mode) && unlink(path) != 0)
        st = io_err(err, "remove the leftover staged file", path, errno);
    if (st == SDICT_OK) {
        rank_job job = {&f, q, out.data + WRITTEN_HEAD};
        st = sdict__save_stream(path, rank_items, &job, err);
    }
    /* the staged file's identity: commit checks that no other save replaced it since */
    struct stat sb;
    if (st == SDICT_OK && lstat(path, &sb) != 0)
        st = io_err(err, "stat", path, errno);
    if (st == SDICT_OK) {
        uint64_t id[2] = {(uint64_t)sb.st_ino, mtime_ns(&sb)};
        for (int k = 0; k < 16; k++)
            out.data[12 + k] = (uint8_t)(id[k / 8] >> (8 * (k % 8)));
    }
    if (st == SDICT_OK)
        st = out_buf(&out, written_out, written_len, err);
    else
        sdict__buf_free(&out);
    if (st)
        sdict__err_file(err, path ? path : dir);
    sdict__free(path);
    sdict__buf_free(&mine);
    flat_free(&f);
    plans_free(p, world);
    return st;
}

SDICT_API sdict_status sdict_dcp_commit(const char *dir, const void *const *written,
                                        const size_t *written_lens, size_t world,
                                        sdict_error *err) {
    if (!dir || !written || !written_lens || !world || world > 0xfffffffeu) {
        sdict__err_file(err, dir ? dir : "");
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1,
                          "sdict_dcp_commit: NULL argument or world 0");
    }
    plan *p = sdict__calloc(world, sizeof *p);
    if (!p)
        return nomem(err);
    sdict_status st = SDICT_OK;
    char *path = NULL;
    for (size_t r = 0; r < world && st == SDICT_OK; r++) {
        const uint8_t *w = written[r];
        if (w && written_lens[r] >= 8 && memcmp(w, PLAN_MAGIC, 8) == 0) {
            st = sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1,
                            "plan %zu is a local or global plan's, not a written plan "
                            "(sdict_dcp_write_rank's result expected)",
                            r);
            break;
        }
        if (!w || written_lens[r] < WRITTEN_HEAD || memcmp(w, WRITTEN_MAGIC, 8) != 0) {
            st = plan_err(err, "bad written plan magic", 0);
            break;
        }
        if (sdict__le32(w + 8) != world) {
            st = sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1,
                            "written plan %zu is from a save by %u ranks, not %zu: every "
                            "rank's written plan is needed",
                            r, (unsigned)sdict__le32(w + 8), world);
            break;
        }
        if ((st = plan_parse(w + WRITTEN_HEAD, written_lens[r] - WRITTEN_HEAD, &p[r], err)))
            break;
        if (p[r].rank != r) {
            st = sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1,
                            "written plan %zu is rank %u's (plans go in rank order)", r,
                            p[r].rank);
            break;
        }
        /* the kept items lie back to back in the rank's file as sdict_dcp_write_rank wrote
           them (non-tensor items, then tensors), and the file ends with the last one */
        uint64_t end = 0;
        for (int pass = 0; pass < 2 && st == SDICT_OK; pass++)
            for (size_t i = 0; i < p[r].n && st == SDICT_OK; i++) {
                const pitem *it = &p[r].items[i];
                if (it->tensor != (pass == 1))
                    continue;
                if (it->keep && it->flen == 0)
                    st = item_err(err, SDICT_E_INVALID_ARG, it,
                                  "kept by the plan but not written (sdict_dcp_write_rank's "
                                  "result expected)");
                else if (it->keep ? it->foff != end || !sdict__add_u64(end, it->flen, &end)
                                  : it->foff || it->flen)
                    st = item_err(err, SDICT_E_INVALID_ARG, it,
                                  "its file offset and length are not where "
                                  "sdict_dcp_write_rank puts it");
            }
        struct stat sb;
        sdict__free(path);
        path = NULL;
        if (st == SDICT_OK && !(path = rank_path(dir, r, true)))
            st = nomem(err);
        else if (st == SDICT_OK && lstat(path, &sb) != 0)
            st = io_err(err, "stat", path, errno);
        else if (st == SDICT_OK && !S_ISREG(sb.st_mode)) {
            sdict__err_file(err, path);
            st = sdict__err(err, SDICT_E_IO, NULL, -1,
                            "is not a regular file: not a file sdict_dcp_write_rank staged");
        } else if (st == SDICT_OK && (uint64_t)sb.st_size != end) {
            sdict__err_file(err, path);
            st = sdict__err(err, SDICT_E_IO, NULL, -1,
                            "is %llu bytes, rank %zu wrote %llu: not this save's data",
                            (unsigned long long)sb.st_size, r, (unsigned long long)end);
        } else if (st == SDICT_OK && ((uint64_t)sb.st_ino != sdict__le64(w + 12) ||
                                      mtime_ns(&sb) != sdict__le64(w + 20))) {
            sdict__err_file(err, path);
            st = sdict__err(err, SDICT_E_IO, NULL, -1,
                            "is not the file rank %zu staged (replaced or rewritten since, as by "
                            "another save into the folder)",
                            r);
        }
    }
    sdict__free(path);
    path = NULL;
    /* the written plans must make one consistent save (as sdict_dcp_plan_global checked it):
       plans of different saves, or edited ones, would leave a .metadata every reader refuses
       in place of the old checkpoint */
    if (st == SDICT_OK) {
        size_t n = 0;
        pitem **v = all_items(p, world, &n);
        if (!v)
            st = nomem(err);
        else {
            qsort(v, n, sizeof *v, cmp_fqn_order);
            st = validate(v, n, err);
        }
        sdict__free(v);
    }
    sdict__buf md;
    sdict__buf_init(&md);
    if (st == SDICT_OK) {
        char id[37];
        uuid4(id);
        st = metadata_pickle(&md, p, world, dir, id, err);
    }
    if (st == SDICT_OK && !(path = sdict__path_join(dir, ".metadata")))
        st = nomem(err);
    /* the old .metadata goes first (durably): from here until the new one is renamed in, the
       folder reads as an unfinished save */
    if (st == SDICT_OK && unlink(path) != 0 && errno != ENOENT)
        st = io_err(err, "unlink", path, errno);
    if (st == SDICT_OK)
        st = sync_dir(dir, err);
    for (size_t r = 0; r < world && st == SDICT_OK; r++) {
        char *from = rank_path(dir, r, true), *to = rank_path(dir, r, false);
        if (!from || !to)
            st = nomem(err);
        else if (rename(from, to) != 0)
            st = io_err(err, "rename", from, errno);
        sdict__free(from);
        sdict__free(to);
    }
    /* .metadata's save syncs the folder, the data files' renames with it */
    if (st == SDICT_OK)
        st = sdict__save_bytes(path, md.data, md.len, err);
    if (st && st != SDICT_E_IO) /* I/O errors name their file */
        sdict__err_file(err, dir);
    sdict__free(path);
    sdict__buf_free(&md);
    plans_free(p, world);
    return st;
}

SDICT_API sdict_status sdict_save_dcp(const char *dir, const sdict_value *root, sdict_error *err) {
    if (!dir || !root) {
        sdict__err_file(err, dir ? dir : "");
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "sdict_save_dcp: %s is NULL",
                          dir ? "root" : "dir");
    }
    /* the one-rank case of a distributed save: local plan, global plan, write, commit */
    void *local = NULL, *global = NULL, *written = NULL;
    size_t local_len = 0, global_len = 0, written_len = 0;
    sdict_status st = sdict_dcp_plan_local(root, NULL, 0, &local, &local_len, err);
    if (st == SDICT_OK) {
        const void *pl[1] = {local};
        st = sdict_dcp_plan_global(pl, &local_len, 1, 0, &global, &global_len, err);
    }
    if (st == SDICT_OK)
        st = sdict_dcp_begin(dir, err);
    if (st == SDICT_OK)
        st = sdict_dcp_write_rank(dir, 0, root, NULL, 0, global, global_len, &written,
                                  &written_len, err);
    if (st == SDICT_OK) {
        const void *wr[1] = {written};
        st = sdict_dcp_commit(dir, wr, &written_len, 1, err);
    }
    if (st)
        sdict_dcp_discard(dir, 0, NULL);
    sdict_free_buffer(local);
    sdict_free_buffer(global);
    sdict_free_buffer(written);
    return st;
}
