/*
 dcp_read.c - PyTorch distributed checkpoint folders (torch.distributed.checkpoint, DCP) read
 as one checkpoint, as torch's format_utils.dcp_to_torch_save rebuilds them.

 On disk (torch 2.2 - 2.14, FileSystemWriter):
   .metadata          one pickle (protocol 2-5) of torch.distributed.checkpoint.metadata.Metadata:
                      state_dict_metadata {fqn: TensorStorageMetadata | BytesStorageMetadata},
                      planner_data {fqn: path tuple}, storage_data {MetadataIndex: _StorageInfo},
                      storage_meta (2.4+), version (2.9+)
   __<r>_<n>.distcp   items back to back, each a complete torch.save zip at
                      [_StorageInfo.offset, offset + length) with offsets relative to its start
 A folder with .distcp files but no .metadata is an unfinished save and is refused.

 .metadata goes through the pickle machine in inert mode: DCP's dataclasses become inert objects
 (class names, NEWOBJ arguments and BUILD state; nothing is constructed or called), and every
 object is then checked field by field against the dataclass it claims to be. A global outside
 DCP's classes, enums, torch.Size, the dtypes, _get_layout, builtins.getattr (CPython 3.11's enum
 spelling) and pathlib's path classes (StorageMeta.checkpoint_id) is refused, naming it and its
 byte offset.

 Tensors are reassembled from their chunks (any dimension; uneven and empty shards): every chunk
 must lie inside the global shape, its item must be a tensor of the chunk's shape and the
 recorded dtype, and the chunks must tile the tensor exactly (an element bitmap finds overlaps
 and holes). A tensor saved as one whole chunk keeps its item's storage. Bytes items are read
 with the ordinary allow-list and copied into the result. The nesting is rebuilt from
 planner_data as torch's _traverse.set_element does (str keys make dicts, int keys lists
 padded with None), in state_dict_metadata order.

 Items are read from a mapping of their file (or with pread under SDICT_LOAD_COPY) and their
 storages copied out of it: items start at arbitrary file offsets, so their records are rarely
 aligned for mapping anyway.

 SDICT_LOAD_METADATA_ONLY (listing): tensors become meta tensors after their chunk checks, and
 no tensor item is read (each is only located: its file inside the folder, its bytes inside the
 file); bytes items still are.

 The lazy reader (sdict_dcp handle) parses .metadata and checks every entry's chunk geometry
 at open, then reads a region of a tensor from the items of the chunks overlapping it only, as
 DCP's load planner does for a destination shard; a full load is the region that is the whole
 tensor (a tensor saved as one whole chunk keeps its item's storage instead).
*/
#define _DEFAULT_SOURCE /* realpath */
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MD_NAME ".metadata"
/* A .metadata larger than this is refused (a 100,000-tensor, 64-rank checkpoint is ~100 MB). */
#define MD_MAX ((uint64_t)1 << 30)

static const char M_META[] = "torch.distributed.checkpoint.metadata";
static const char M_SHARD[] = "torch.distributed._shard.sharded_tensor.metadata";
static const char M_FS[] = "torch.distributed.checkpoint.filesystem";

/*==================================================================================================
 MARK: Helpers
==================================================================================================*/

static sdict_status nomem(sdict_error *err) {
    return sdict__err(err, SDICT_E_NOMEM, NULL, -1, "out of memory");
}

bool sdict__dcp_claims(const char *path) {
    struct stat sb;
    if (!path || stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return false;
    char *md = sdict__path_join(path, MD_NAME);
    bool has = md && lstat(md, &sb) == 0;
    sdict__free(md);
    if (has)
        return true;
    /* .distcp files without .metadata: an unfinished save, claimed to be refused */
    DIR *d = opendir(path);
    if (!d)
        return false;
    struct dirent *e;
    while (!has && (e = readdir(d)) != NULL)
        has = sdict__ends_with(e->d_name, ".distcp");
    closedir(d);
    return has;
}

/*==================================================================================================
 MARK: .metadata: parsing and the allow-list
==================================================================================================*/

static bool global_allowed(const char *module, const char *name) {
    static const char *const meta[] = {
        "Metadata",      "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata",
        "MetadataIndex", "TensorProperties",      "_MEM_FORMAT_ENCODING", "StorageMeta"};
    if (strcmp(module, M_META) == 0) {
        for (size_t i = 0; i < sizeof meta / sizeof meta[0]; i++)
            if (strcmp(name, meta[i]) == 0)
                return true;
        return false;
    }
    if (strcmp(module, M_SHARD) == 0)
        return strcmp(name, "TensorProperties") == 0 || strcmp(name, "MEM_FORMAT_ENCODING") == 0;
    if (strcmp(module, M_FS) == 0)
        return strcmp(name, "_StorageInfo") == 0;
    if (strcmp(module, "torch") == 0) {
        sdict_dtype dt;
        return strcmp(name, "Size") == 0 || sdict_dtype_from_name(name, &dt) == SDICT_OK;
    }
    if (strcmp(module, "torch.serialization") == 0)
        return strcmp(name, "_get_layout") == 0;
    if (strcmp(module, "builtins") == 0)
        return strcmp(name, "getattr") == 0;
    if (strcmp(module, "pathlib") == 0 || strcmp(module, "pathlib._local") == 0)
        return strcmp(name, "PosixPath") == 0 || strcmp(name, "WindowsPath") == 0 ||
               strcmp(name, "PurePosixPath") == 0 || strcmp(name, "PureWindowsPath") == 0;
    return false;
}

typedef struct global_report {
    void (*fn)(void *ctx, const sdict_scan_item *item);
    void *ctx;
    size_t refused;
    char first[200];
    int64_t first_offset;
} global_report;

static void on_global(void *ctx, const char *module, const char *name, bool allowed,
                      int64_t offset) {
    global_report *r = ctx;
    (void)allowed;
    bool ok = global_allowed(module, name);
    if (!ok && r->refused++ == 0) {
        snprintf(r->first, sizeof r->first, "%s.%s", module, name);
        r->first_offset = offset;
    }
    if (r->fn) {
        sdict_scan_item it = {module, name, ok, MD_NAME, offset};
        r->fn(r->ctx, &it);
    }
}

static sdict_status no_storages(void *ctx, sdict_value *pid, int64_t offset, sdict_value **out,
                                sdict_error *err) {
    (void)ctx;
    (void)pid;
    *out = NULL;
    return sdict__err(err, SDICT_E_PICKLE_UNSAFE_GLOBAL, MD_NAME, offset,
                      "persistent id in .metadata: DCP's metadata holds no storages");
}

static void fill_limits(sdict_limits *l, const sdict_load_opts *opts) {
    if (opts)
        *l = opts->limits;
    else
        memset(l, 0, sizeof *l);
    if (!l->max_depth)
        l->max_depth = 1000;
    if (!l->max_memo)
        l->max_memo = 16u << 20;
    if (!l->max_stack)
        l->max_stack = 16u << 20;
    if (!l->max_str_bytes)
        l->max_str_bytes = 1u << 30;
    if (!l->max_values)
        l->max_values = 64u << 20;
    if (!l->max_records)
        l->max_records = 1u << 20;
    if (!l->max_inflate)
        l->max_inflate = (uint64_t)16 << 30;
}

/* One storage_data entry. */
typedef struct dcp_store {
    const char *fqn;
    size_t fqn_len;
    const sdict_value *offset; /* torch.Size tuple, NULL for a bytes item */
    const char *rel;
    uint64_t off, len;
} dcp_store;

/* One .distcp file, opened on first use. */
typedef struct dcp_file {
    char *name;
    char *path;
    dev_t dev; /* the file's identity: two names for one file are refused */
    ino_t ino;
    uint64_t size; /* when first opened: a file reopened must be the same */
    sdict__source src;
    bool open;
} dcp_file;

typedef struct dcp {
    const char *dir;
    char *rdir; /* realpath(dir) */
    const sdict_load_opts *opts;
    uint32_t flags;
    sdict_limits limits;
    sdict_doc *md;              /* the unpickled .metadata */
    const sdict_value *sdm;     /* state_dict_metadata */
    const sdict_value *planner; /* planner_data dict or NULL */
    dcp_store *stores;          /* sorted by (fqn, offset) */
    size_t n_stores;
    dcp_file *files;
    size_t n_files, cap_files;
    /* open-addressed indexes of files (slot = file index + 1, 0 empty), by name and by
       (dev, ino), cap_ix slots each (a power of two, at least twice n_files) */
    size_t *ix_name, *ix_id, cap_ix;
    size_t fd_file; /* the one file holding a descriptor, plus 1 (0: none) */
    char errfile[256]; /* the file an error is about (set with the error) */
    bool no_items;     /* metadata checks only: entries become None, no item is read */
    /* all tensors' chunk bytes claimed so far, and the item bytes backing them: a small folder
       cannot claim more than its items could inflate to */
    uint64_t claimed, backing;
    uint64_t pad_left; /* list slots planner_data may still create (node_slot) */
    uint64_t values_left; /* values the non-tensor items may still copy (copy_value) */
    uint64_t items_read;  /* items opened by item_read */
} dcp;

static sdict_status md_err(dcp *c, sdict_error *err, sdict_status code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static sdict_status md_err(dcp *c, sdict_error *err, sdict_status code, const char *fmt, ...) {
    char msg[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(c->errfile, sizeof c->errfile, "%s/%s", c->dir, MD_NAME);
    return sdict__err(err, code, MD_NAME, -1, "%s", msg);
}

/* True when v is an inert object made by NEWOBJ of module.name with no arguments. */
static bool is_obj(const sdict_value *v, const char *module, const char *name) {
    if (sdict_value_kind(v) != SDICT_KIND_OBJECT || sdict_object_how(v) != SDICT_OBJECT_NEWOBJ ||
        sdict_object_callee(v) || sdict_object_kwargs(v))
        return false;
    const sdict_value *a = sdict_object_args(v);
    if (!a || sdict_value_kind(a) != SDICT_KIND_TUPLE || sdict_seq_len(a) != 0)
        return false;
    return strcmp(sdict_object_module(v), module) == 0 && strcmp(sdict_object_name(v), name) == 0;
}

static const char *what(const sdict_value *v) {
    return sdict_value_kind(v) == SDICT_KIND_OBJECT ? sdict_object_name(v)
                                                    : sdict_kind_name(sdict_value_kind(v));
}

/* The BUILD dict of a dataclass object, its keys all among fields[0, n); required[i] says
   whether field i must be present. NULL (err filled) when not. */
static sdict_status fields_of(dcp *c, const sdict_value *obj, const char *cls,
                              const char *const *fields, size_t n, unsigned required,
                              const sdict_value **vals, sdict_error *err) {
    const sdict_value *st = sdict_object_state(obj);
    for (size_t i = 0; i < n; i++)
        vals[i] = NULL;
    if (!st && required == 0)
        return SDICT_OK;
    if (!st || sdict_value_kind(st) != SDICT_KIND_DICT)
        return md_err(c, err, SDICT_E_PICKLE_TYPE, "%s state is a %s, not a dict of fields", cls,
                      st ? what(st) : "missing BUILD");
    for (size_t k = 0, m = sdict_dict_len(st); k < m; k++) {
        size_t len;
        const char *key = sdict_str_get(sdict_dict_key(st, k), &len);
        size_t i = 0;
        while (key && i < n && !(strlen(fields[i]) == len && memcmp(fields[i], key, len) == 0))
            i++;
        if (!key || i == n)
            return md_err(c, err, SDICT_E_PICKLE_TYPE,
                          "%s has a field %s%.60s%s that DCP's "
                          "dataclass does not have",
                          cls, key ? "'" : "of type ", key ? key : what(sdict_dict_key(st, k)),
                          key ? "'" : "");
        vals[i] = sdict_dict_val(st, k);
    }
    for (size_t i = 0; i < n; i++)
        if ((required >> i & 1) && !vals[i])
            return md_err(c, err, SDICT_E_PICKLE_TYPE, "%s lacks its field '%s'", cls, fields[i]);
    return SDICT_OK;
}

static bool int_field(const sdict_value *v, int64_t *out) {
    return sdict_value_kind(v) == SDICT_KIND_INT && sdict_int_get(v, out) == SDICT_OK;
}

/* A torch.Size: a tuple of ints >= 0. */
static bool size_ok(const sdict_value *v) {
    if (sdict_value_kind(v) != SDICT_KIND_TUPLE)
        return false;
    for (size_t i = 0, n = sdict_seq_len(v); i < n; i++) {
        int64_t x;
        if (!int_field(sdict_seq_item(v, i), &x) || x < 0)
            return false;
    }
    return true;
}

static int64_t size_at(const sdict_value *v, size_t i) {
    int64_t x = 0;
    sdict_int_get(sdict_seq_item(v, i), &x);
    return x;
}

/* _MEM_FORMAT_ENCODING(0..2), by value or as getattr(enum class, member name). */
static bool mem_format_ok(const sdict_value *v) {
    if (sdict_value_kind(v) != SDICT_KIND_OBJECT || sdict_object_how(v) != SDICT_OBJECT_REDUCE ||
        sdict_object_callee(v) || sdict_object_kwargs(v) || sdict_object_state(v))
        return false;
    const sdict_value *a = sdict_object_args(v);
    const char *m = sdict_object_module(v), *n = sdict_object_name(v);
    bool enum_cls = (strcmp(m, M_META) == 0 && strcmp(n, "_MEM_FORMAT_ENCODING") == 0) ||
                    (strcmp(m, M_SHARD) == 0 && strcmp(n, "MEM_FORMAT_ENCODING") == 0);
    int64_t x;
    if (enum_cls)
        return sdict_seq_len(a) == 1 && int_field(sdict_seq_item(a, 0), &x) && x >= 0 && x <= 2;
    if (strcmp(m, "builtins") != 0 || strcmp(n, "getattr") != 0 || sdict_seq_len(a) != 2)
        return false;
    const sdict_value *cls = sdict_seq_item(a, 0);
    const char *name = sdict_str_get(sdict_seq_item(a, 1), NULL);
    if (sdict_value_kind(cls) != SDICT_KIND_OBJECT || sdict_object_how(cls) != SDICT_OBJECT_CLASS ||
        !name)
        return false;
    m = sdict_object_module(cls);
    n = sdict_object_name(cls);
    return ((strcmp(m, M_META) == 0 && strcmp(n, "_MEM_FORMAT_ENCODING") == 0) ||
            (strcmp(m, M_SHARD) == 0 && strcmp(n, "MEM_FORMAT_ENCODING") == 0)) &&
           (strcmp(name, "TORCH_CONTIGUOUS_FORMAT") == 0 ||
            strcmp(name, "TORCH_CHANNELS_LAST") == 0 || strcmp(name, "TORCH_PRESERVE_FORMAT") == 0);
}

/* TensorProperties: its 5-tuple state (dtype, layout, requires_grad, memory_format,
   pin_memory); the dtype out. */
static sdict_status props_check(dcp *c, const char *fqn, const sdict_value *p, sdict_dtype *dtype,
                                sdict_error *err) {
    if (!is_obj(p, M_META, "TensorProperties") && !is_obj(p, M_SHARD, "TensorProperties"))
        return md_err(c, err, SDICT_E_PICKLE_TYPE,
                      "'%.80s': properties is a %s, not "
                      "TensorProperties",
                      fqn, what(p));
    const sdict_value *s = sdict_object_state(p);
    if (!s || sdict_value_kind(s) != SDICT_KIND_TUPLE || sdict_seq_len(s) != 5)
        return md_err(c, err, SDICT_E_PICKLE_TYPE,
                      "'%.80s': TensorProperties state is not the "
                      "5-tuple (dtype, layout, requires_grad, memory_format, pin_memory)",
                      fqn);
    const sdict_value *dt = sdict_seq_item(s, 0), *lay = sdict_seq_item(s, 1);
    if (sdict_value_kind(dt) != SDICT_KIND_DTYPE)
        return md_err(c, err, SDICT_E_PICKLE_TYPE, "'%.80s': TensorProperties.dtype is a %s", fqn,
                      what(dt));
    if (sdict_value_kind(lay) != SDICT_KIND_LAYOUT ||
        sdict_layout_value_get(lay) != SDICT_LAYOUT_STRIDED)
        return md_err(c, err, SDICT_E_PICKLE_TYPE,
                      "'%.80s': TensorProperties.layout is not "
                      "torch.strided",
                      fqn);
    if (sdict_value_kind(sdict_seq_item(s, 2)) != SDICT_KIND_BOOL ||
        sdict_value_kind(sdict_seq_item(s, 4)) != SDICT_KIND_BOOL)
        return md_err(c, err, SDICT_E_PICKLE_TYPE,
                      "'%.80s': TensorProperties requires_grad / "
                      "pin_memory is not a bool",
                      fqn);
    if (!mem_format_ok(sdict_seq_item(s, 3)))
        return md_err(c, err, SDICT_E_PICKLE_TYPE,
                      "'%.80s': TensorProperties.memory_format is "
                      "not a _MEM_FORMAT_ENCODING member",
                      fqn);
    *dtype = sdict_dtype_value_get(dt);
    return SDICT_OK;
}

/* StorageMeta(checkpoint_id, save_id, load_id[, modules]): types only; the values are labels. */
static sdict_status storage_meta_check(dcp *c, const sdict_value *v, sdict_error *err) {
    if (sdict_value_kind(v) == SDICT_KIND_NONE)
        return SDICT_OK;
    if (!is_obj(v, M_META, "StorageMeta"))
        return md_err(c, err, SDICT_E_PICKLE_TYPE,
                      "Metadata.storage_meta is a %s, not "
                      "StorageMeta",
                      what(v));
    static const char *const f[] = {"checkpoint_id", "save_id", "load_id", "modules"};
    const sdict_value *x[4];
    sdict_status st = fields_of(c, v, "StorageMeta", f, 4, 0, x, err);
    if (st)
        return st;
    const sdict_value *id = x[0];
    bool id_ok =
        !id || sdict_value_kind(id) == SDICT_KIND_NONE || sdict_value_kind(id) == SDICT_KIND_STR;
    if (!id_ok && sdict_value_kind(id) == SDICT_KIND_OBJECT &&
        sdict_object_how(id) == SDICT_OBJECT_REDUCE && !sdict_object_callee(id) &&
        !sdict_object_state(id) && !sdict_object_kwargs(id) &&
        (strcmp(sdict_object_module(id), "pathlib") == 0 ||
         strcmp(sdict_object_module(id), "pathlib._local") == 0)) {
        const sdict_value *a = sdict_object_args(id);
        id_ok = true;
        for (size_t i = 0, n = sdict_seq_len(a); i < n && id_ok; i++)
            id_ok = sdict_value_kind(sdict_seq_item(a, i)) == SDICT_KIND_STR;
    }
    if (!id_ok)
        return md_err(c, err, SDICT_E_PICKLE_TYPE,
                      "StorageMeta.checkpoint_id is a %s, not a "
                      "str or path",
                      what(id));
    for (int i = 1; i < 3; i++)
        if (x[i] && sdict_value_kind(x[i]) != SDICT_KIND_NONE &&
            sdict_value_kind(x[i]) != SDICT_KIND_STR)
            return md_err(c, err, SDICT_E_PICKLE_TYPE, "StorageMeta.%s is a %s, not a str", f[i],
                          what(x[i]));
    if (x[3]) {
        bool ok = sdict_value_kind(x[3]) == SDICT_KIND_LIST;
        for (size_t i = 0, n = sdict_seq_len(x[3]); ok && i < n; i++)
            ok = sdict_value_kind(sdict_seq_item(x[3], i)) == SDICT_KIND_STR;
        if (!ok)
            return md_err(c, err, SDICT_E_PICKLE_TYPE, "StorageMeta.modules is not a list of str");
    }
    return SDICT_OK;
}

static int cmp_size(const sdict_value *a, const sdict_value *b) {
    if (!a || !b)
        return a ? 1 : b ? -1 : 0;
    size_t na = sdict_seq_len(a), nb = sdict_seq_len(b);
    for (size_t i = 0; i < na && i < nb; i++) {
        int64_t x = size_at(a, i), y = size_at(b, i);
        if (x != y)
            return x < y ? -1 : 1;
    }
    return na < nb ? -1 : na > nb ? 1 : 0;
}

static int cmp_key(const char *fa, size_t la, const sdict_value *oa, const char *fb, size_t lb,
                   const sdict_value *ob) {
    int r = memcmp(fa, fb, la < lb ? la : lb);
    if (r == 0 && la != lb)
        r = la < lb ? -1 : 1;
    return r ? r : cmp_size(oa, ob);
}

static int cmp_store(const void *pa, const void *pb) {
    const dcp_store *a = pa, *b = pb;
    return cmp_key(a->fqn, a->fqn_len, a->offset, b->fqn, b->fqn_len, b->offset);
}

/* By file, then byte offset. */
static int cmp_place(const void *pa, const void *pb) {
    const dcp_store *a = *(const dcp_store *const *)pa, *b = *(const dcp_store *const *)pb;
    int r = strcmp(a->rel, b->rel);
    return r ? r : a->off < b->off ? -1 : a->off > b->off ? 1 : 0;
}

/* Two items sharing bytes of a file: torch writes each item once, after the previous one, so
   this only comes from a crafted .metadata (one item's bytes read, and its values copied, once
   for every entry naming them). */
static sdict_status items_disjoint(dcp *c, sdict_error *err) {
    const dcp_store **by = sdict__calloc(c->n_stores + 1, sizeof *by);
    if (!by)
        return nomem(err);
    for (size_t i = 0; i < c->n_stores; i++)
        by[i] = &c->stores[i];
    qsort(by, c->n_stores, sizeof *by, cmp_place);
    sdict_status st = SDICT_OK;
    for (size_t i = 1; st == SDICT_OK && i < c->n_stores; i++) {
        const dcp_store *a = by[i - 1], *b = by[i];
        if (strcmp(a->rel, b->rel) == 0 && b->off - a->off < a->len)
            st = md_err(c, err, SDICT_E_FORMAT,
                        "items '%.80s' and '%.80s' share bytes of %.60s (%llu..%llu and "
                        "%llu..%llu): torch writes every item to bytes of its own",
                        a->fqn, b->fqn, a->rel, (unsigned long long)a->off,
                        (unsigned long long)(a->off + a->len), (unsigned long long)b->off,
                        (unsigned long long)(b->off + b->len));
    }
    sdict__free(by);
    return st;
}

/* storage_data: MetadataIndex -> _StorageInfo, into c->stores (sorted). */
static sdict_status storage_data_read(dcp *c, const sdict_value *sd, sdict_error *err) {
    size_t n = sdict_dict_len(sd);
    c->stores = sdict__calloc(n ? n : 1, sizeof *c->stores);
    if (!c->stores)
        return nomem(err);
    static const char *const fi[] = {"fqn", "offset", "index"};
    static const char *const fs[] = {"relative_path", "offset", "length", "transform_descriptors"};
    for (size_t i = 0; i < n; i++) {
        const sdict_value *k = sdict_dict_key(sd, i), *v = sdict_dict_val(sd, i), *x[4];
        if (!is_obj(k, M_META, "MetadataIndex"))
            return md_err(c, err, SDICT_E_PICKLE_TYPE,
                          "storage_data key %zu is a %s, not "
                          "MetadataIndex",
                          i, what(k));
        sdict_status st = fields_of(c, k, "MetadataIndex", fi, 3, 1u, x, err);
        if (st)
            return st;
        dcp_store *s = &c->stores[i];
        int64_t idx;
        if (!(s->fqn = sdict_str_get(x[0], &s->fqn_len)))
            return md_err(c, err, SDICT_E_PICKLE_TYPE, "MetadataIndex.fqn is a %s, not a str",
                          what(x[0]));
        if (x[1] && sdict_value_kind(x[1]) != SDICT_KIND_NONE && !size_ok(x[1]))
            return md_err(c, err, SDICT_E_PICKLE_TYPE,
                          "MetadataIndex('%.80s').offset is not a "
                          "torch.Size",
                          s->fqn);
        s->offset = x[1] && sdict_value_kind(x[1]) != SDICT_KIND_NONE ? x[1] : NULL;
        if (x[2] && sdict_value_kind(x[2]) != SDICT_KIND_NONE && !int_field(x[2], &idx))
            return md_err(c, err, SDICT_E_PICKLE_TYPE,
                          "MetadataIndex('%.80s').index is a %s, "
                          "not an int",
                          s->fqn, what(x[2]));
        if (!is_obj(v, M_FS, "_StorageInfo"))
            return md_err(c, err, SDICT_E_PICKLE_TYPE,
                          "storage_data['%.80s'] is a %s, not "
                          "_StorageInfo",
                          s->fqn, what(v));
        if ((st = fields_of(c, v, "_StorageInfo", fs, 4, 7u, x, err)))
            return st;
        size_t rl;
        int64_t off, len;
        if (!(s->rel = sdict_str_get(x[0], &rl)) || strlen(s->rel) != rl)
            return md_err(c, err, SDICT_E_PICKLE_TYPE,
                          "_StorageInfo('%.80s').relative_path is "
                          "not a str",
                          s->fqn);
        if (!int_field(x[1], &off) || off < 0 || !int_field(x[2], &len) || len < 0)
            return md_err(c, err, SDICT_E_PICKLE_TYPE,
                          "_StorageInfo('%.80s') offset / length "
                          "is not an int >= 0",
                          s->fqn);
        s->off = (uint64_t)off;
        s->len = (uint64_t)len;
        if (x[3] && sdict_value_kind(x[3]) != SDICT_KIND_NONE &&
            !(sdict_value_kind(x[3]) == SDICT_KIND_LIST && sdict_seq_len(x[3]) == 0))
            return md_err(c, err, SDICT_E_UNSUPPORTED,
                          "item '%.80s' is stored through stream "
                          "transforms (_StorageInfo.transform_descriptors, DCP's experimental "
                          "extensions such as zstd), which statedict does not read",
                          s->fqn);
    }
    c->n_stores = n;
    qsort(c->stores, n, sizeof *c->stores, cmp_store);
    for (size_t i = 1; i < n; i++)
        if (cmp_store(&c->stores[i - 1], &c->stores[i]) == 0)
            return md_err(c, err, SDICT_E_FORMAT,
                          "storage_data has two entries for item "
                          "'%.80s' at the same offsets",
                          c->stores[i].fqn);
    return items_disjoint(c, err);
}

static const dcp_store *store_find(const dcp *c, const char *fqn, size_t len,
                                   const sdict_value *offset) {
    size_t lo = 0, hi = c->n_stores;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const dcp_store *s = &c->stores[mid];
        int r = cmp_key(s->fqn, s->fqn_len, s->offset, fqn, len, offset);
        if (r == 0)
            return s;
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* Unpickles and checks the .metadata bytes (everything but the per-entry tensor metadata, which
   entry_tensor checks); gr->fn, if set, gets every global (scan). */
static sdict_status md_parse(dcp *c, const uint8_t *buf, size_t size, global_report *gr,
                             sdict_error *err) {
    sdict_value *root = NULL;
    sdict_status st = sdict_doc_new(&c->md, err);
    if (st == SDICT_OK) {
        sdict__unpickler u;
        memset(&u, 0, sizeof u);
        u.doc = c->md;
        u.data = buf;
        u.size = size;
        u.record = MD_NAME;
        u.limits = &c->limits;
        u.persistent_load = no_storages;
        u.on_global = on_global;
        u.ctx = gr;
        u.inert = true;
        st = sdict__unpickle(&u, &root, err);
        if (gr->refused)
            st = sdict__err(err, SDICT_E_PICKLE_UNSAFE_GLOBAL, MD_NAME, gr->first_offset,
                            "global '%.150s' is not one of DCP's metadata classes: refused "
                            "(torch would import and call it)",
                            gr->first);
        else if (st == SDICT_OK && u.consumed != u.size)
            st = sdict__err(err, SDICT_E_FORMAT, MD_NAME, (int64_t)u.consumed,
                            "%zu bytes after the pickle's STOP", u.size - u.consumed);
    }
    if (st)
        return st;
    if (!is_obj(root, M_META, "Metadata"))
        return md_err(c, err, SDICT_E_PICKLE_TYPE, "the pickle is a %s, not DCP's Metadata",
                      what(root));
    static const char *const f[] = {"state_dict_metadata", "planner_data", "storage_data",
                                    "storage_meta", "version"};
    const sdict_value *x[5];
    if ((st = fields_of(c, root, "Metadata", f, 5, 1u | 4u, x, err)))
        return st;
    if (sdict_value_kind(x[0]) != SDICT_KIND_DICT || sdict_value_kind(x[2]) != SDICT_KIND_DICT)
        return md_err(c, err, SDICT_E_PICKLE_TYPE, "Metadata.%s is a %s, not a dict",
                      sdict_value_kind(x[0]) != SDICT_KIND_DICT ? f[0] : f[2],
                      what(sdict_value_kind(x[0]) != SDICT_KIND_DICT ? x[0] : x[2]));
    if (x[1] && sdict_value_kind(x[1]) != SDICT_KIND_NONE &&
        sdict_value_kind(x[1]) != SDICT_KIND_DICT)
        return md_err(c, err, SDICT_E_PICKLE_TYPE, "Metadata.planner_data is a %s, not a dict",
                      what(x[1]));
    if (x[4] && sdict_value_kind(x[4]) != SDICT_KIND_STR)
        return md_err(c, err, SDICT_E_PICKLE_TYPE, "Metadata.version is a %s, not a str",
                      what(x[4]));
    if (x[3] && (st = storage_meta_check(c, x[3], err)))
        return st;
    c->sdm = x[0];
    c->planner = x[1] && sdict_value_kind(x[1]) == SDICT_KIND_DICT ? x[1] : NULL;
    for (size_t i = 0, n = sdict_dict_len(c->sdm); i < n; i++)
        if (!sdict_str_get(sdict_dict_key(c->sdm, i), NULL))
            return md_err(c, err, SDICT_E_PICKLE_TYPE,
                          "state_dict_metadata key %zu is a %s, "
                          "not a str",
                          i, what(sdict_dict_key(c->sdm, i)));
    if (c->planner)
        for (size_t i = 0, n = sdict_dict_len(c->planner); i < n; i++) {
            const sdict_value *k = sdict_dict_key(c->planner, i),
                              *v = sdict_dict_val(c->planner, i);
            bool ok = sdict_str_get(k, NULL) && sdict_value_kind(v) == SDICT_KIND_TUPLE &&
                      sdict_seq_len(v) > 0;
            for (size_t j = 0, m = sdict_seq_len(v); ok && j < m; j++) {
                sdict_kind kk = sdict_value_kind(sdict_seq_item(v, j));
                int64_t ix;
                ok = kk == SDICT_KIND_STR ||
                     (int_field(sdict_seq_item(v, j), &ix) && ix >= 0 && ix < (1 << 30));
            }
            if (!ok)
                return md_err(c, err, SDICT_E_PICKLE_TYPE,
                              "planner_data entry %zu is not str -> "
                              "non-empty tuple of str keys and list indices",
                              i);
        }
    return storage_data_read(c, x[2], err);
}

/* True when the real path real lies inside the checkpoint folder. */
static bool inside_dir(const dcp *c, const char *real) {
    size_t n = strlen(c->rdir);
    return real && (strcmp(c->rdir, "/") == 0
                        ? real[1] != '\0'
                        : strncmp(real, c->rdir, n) == 0 && real[n] == '/');
}

/* Reads .metadata from the folder and parses it (md_parse). */
static sdict_status md_read(dcp *c, global_report *gr, sdict_error *err) {
    char *p = sdict__path_join(c->dir, MD_NAME);
    if (!p)
        return nomem(err);
    snprintf(c->errfile, sizeof c->errfile, "%s", p);
    struct stat sb;
    if (lstat(p, &sb) != 0) {
        sdict__free(p);
        snprintf(c->errfile, sizeof c->errfile, "%s", c->dir);
        return sdict__err(err, SDICT_E_FORMAT, NULL, -1,
                          "distributed checkpoint folder without .metadata: an unfinished save "
                          "(torch writes .metadata last, after every rank's .distcp data)");
    }
    /* a symbolic link leaving the folder is refused, as for the items' files */
    char *real = realpath(p, NULL);
    bool inside = inside_dir(c, real);
    free(real);
    if (!inside) {
        sdict__free(p);
        return sdict__err(err, SDICT_E_FORMAT, MD_NAME, -1,
                          ".metadata is a symbolic link leaving the checkpoint folder");
    }
    sdict__source src;
    sdict_status st = sdict__source_open_file(&src, p, false, err);
    sdict__free(p);
    if (st)
        return st;
    uint8_t *buf = NULL;
    uint64_t size = src.size;
    if (size > MD_MAX)
        st = sdict__err(err, SDICT_E_LIMIT, MD_NAME, -1,
                        ".metadata is %llu bytes, over the "
                        "limit of %llu",
                        (unsigned long long)size, (unsigned long long)MD_MAX);
    else if (!(buf = sdict__malloc((size_t)size)))
        st = nomem(err);
    else
        st = sdict__source_read(&src, 0, buf, (size_t)size, MD_NAME, err);
    sdict__source_close(&src);
    if (st == SDICT_OK)
        st = md_parse(c, buf, (size_t)size, gr, err);
    sdict__free(buf);
    return st;
}

/*==================================================================================================
 MARK: Items
==================================================================================================*/

static uint64_t id_hash(dev_t dev, ino_t ino) {
    uint64_t h = ((uint64_t)ino ^ ((uint64_t)dev << 32) ^ sdict__hash_seed()) * 0x9e3779b97f4a7c15u;
    return h ^ (h >> 31);
}
/* The slot of name (or of (dev, ino) when name is NULL) in its index: its file's, or the empty
   one where it would go. */
static size_t *ix_slot(dcp *c, const char *name, dev_t dev, ino_t ino) {
    size_t mask = c->cap_ix - 1, *tab = name ? c->ix_name : c->ix_id;
    size_t start = (size_t)(name ? sdict__str_hash(name) : id_hash(dev, ino)) & mask;
    for (size_t i = start;; i = (i + 1) & mask) {
        size_t k = tab[i];
        if (k == 0 || (name ? strcmp(c->files[k - 1].name, name) == 0
                            : c->files[k - 1].dev == dev && c->files[k - 1].ino == ino))
            return &tab[i];
    }
}
/* Indexes c->files[0 .. n_files) again into tables of at least 4 * n_files slots. */
static bool ix_grow(dcp *c) {
    size_t cap = 16;
    while (cap < 4 * (c->n_files + 1))
        cap *= 2;
    size_t *a = sdict__calloc(cap, sizeof *a), *b = sdict__calloc(cap, sizeof *b);
    if (!a || !b) {
        sdict__free(a);
        sdict__free(b);
        return false;
    }
    sdict__free(c->ix_name);
    sdict__free(c->ix_id);
    c->ix_name = a;
    c->ix_id = b;
    c->cap_ix = cap;
    for (size_t i = 0; i < c->n_files; i++) {
        *ix_slot(c, c->files[i].name, 0, 0) = i + 1;
        *ix_slot(c, NULL, c->files[i].dev, c->files[i].ino) = i + 1;
    }
    return true;
}

/* The .distcp file rel of the folder, opened (mapped unless SDICT_LOAD_COPY) on first use. */
static sdict_status file_get(dcp *c, const char *rel, dcp_file **out, sdict_error *err) {
    /* a file read with pread (SDICT_LOAD_COPY, or one that cannot be mapped) holds its fd: only
       the one in use stays open, so that a folder of one file per item (torch's
       single_file_per_rank=False) does not run out of file descriptors; mapped files hold
       none */
    if (2 * (c->n_files + 1) > c->cap_ix && !ix_grow(c))
        return nomem(err);
    size_t k = *ix_slot(c, rel, 0, 0);
    dcp_file *hit = k ? &c->files[k - 1] : NULL;
    if (c->fd_file && c->fd_file != k) {
        dcp_file *o = &c->files[c->fd_file - 1];
        if (o->open && o->src.fd >= 0) {
            sdict__source_close(&o->src);
            o->open = false;
        }
        c->fd_file = 0;
    }
    if (hit && !hit->open) {
        sdict_status st =
            sdict__source_open_file(&hit->src, hit->path, !(c->flags & SDICT_LOAD_COPY), err);
        if (st) {
            snprintf(c->errfile, sizeof c->errfile, "%s", hit->path);
            return st;
        }
        hit->open = true;
        if (hit->src.fd >= 0)
            c->fd_file = k;
        /* items are read at .metadata's offsets: the file replaced (a newer save committed)
           or resized since would give another save's bytes */
        struct stat rb;
        int sr = hit->src.fd >= 0 ? fstat(hit->src.fd, &rb) : stat(hit->path, &rb);
        if (sr != 0 || rb.st_dev != hit->dev ||
            rb.st_ino != hit->ino || hit->src.size != hit->size) {
            sdict__source_close(&hit->src);
            hit->open = false;
            snprintf(c->errfile, sizeof c->errfile, "%s", hit->path);
            return sdict__err(err, SDICT_E_IO, NULL, -1,
                              "changed since the checkpoint was opened (replaced or resized, "
                              "as by another save): open it again");
        }
    }
    if (hit) {
        *out = hit;
        return SDICT_OK;
    }
    if (!*rel || strchr(rel, '/') || strcmp(rel, ".") == 0 || strcmp(rel, "..") == 0 ||
        strcmp(rel, MD_NAME) == 0)
        return md_err(c, err, SDICT_E_FORMAT,
                      "relative_path '%.120s' is not a file name inside "
                      "the checkpoint folder",
                      rel);
    char *p = sdict__path_join(c->dir, rel);
    if (!p)
        return nomem(err);
    char *real = realpath(p, NULL);
    bool inside = inside_dir(c, real);
    struct stat sb;
    bool regular = real && stat(real, &sb) == 0 && S_ISREG(sb.st_mode);
    free(real);
    /* a link to another item file of the folder would let two entries name the same bytes
       through two names, past the check that items do not share bytes */
    size_t alias = regular ? *ix_slot(c, NULL, sb.st_dev, sb.st_ino) : 0;
    if (alias) {
        sdict__free(p);
        return md_err(c, err, SDICT_E_FORMAT,
                      "relative_path '%.100s' is the same file as '%.100s' (a link): torch "
                      "writes every item file once",
                      rel, c->files[alias - 1].name);
    }
    if (!real || !inside || !regular) {
        sdict__free(p);
        return md_err(c, err, SDICT_E_FORMAT, "relative_path '%.120s' %s", rel,
                      !real     ? "does not exist in the checkpoint folder"
                      : !inside ? "is a symbolic link leaving the checkpoint folder"
                                : "is not a regular file");
    }
    if (c->n_files == c->cap_files) {
        size_t cap = c->cap_files ? 2 * c->cap_files : 8;
        dcp_file *f = sdict__realloc(c->files, cap * sizeof *f);
        if (!f) {
            sdict__free(p);
            return nomem(err);
        }
        c->files = f;
        c->cap_files = cap;
    }
    dcp_file *f = &c->files[c->n_files];
    memset(f, 0, sizeof *f);
    f->path = p;
    f->dev = sb.st_dev;
    f->ino = sb.st_ino;
    f->size = (uint64_t)sb.st_size;
    if (!(f->name = sdict__strndup(rel, strlen(rel)))) {
        sdict__free(p);
        return nomem(err);
    }
    sdict_status st = sdict__source_open_file(&f->src, p, !(c->flags & SDICT_LOAD_COPY), err);
    if (st) {
        snprintf(c->errfile, sizeof c->errfile, "%s", p);
        sdict__free(f->name);
        sdict__free(p);
        return st;
    }
    f->open = true;
    c->n_files++;
    *ix_slot(c, f->name, 0, 0) = c->n_files;
    *ix_slot(c, NULL, f->dev, f->ino) = c->n_files;
    if (f->src.fd >= 0)
        c->fd_file = c->n_files;
    *out = f;
    return SDICT_OK;
}

/* Rewrites an item reader's error so it names the .distcp file and where the item lies. */
static void item_err(dcp *c, const dcp_file *f, const dcp_store *s, sdict_error *err) {
    snprintf(c->errfile, sizeof c->errfile, "%s", f->path);
    if (!err)
        return;
    char rec[sizeof err->record];
    snprintf(rec, sizeof rec, "item@%llu:%.120s", (unsigned long long)s->off, err->record);
    memcpy(err->record, rec, sizeof rec);
    char msg[sizeof err->message];
    snprintf(msg, sizeof msg, "item '%.60s' (bytes %llu..%llu): %.190s", s->fqn,
             (unsigned long long)s->off, (unsigned long long)(s->off + s->len), err->message);
    memcpy(err->message, msg, sizeof msg);
}

/* Finds the file of item s (a file inside the folder) and checks that the item lies inside it;
   reads none of its bytes. */
static sdict_status item_locate(dcp *c, const dcp_store *s, dcp_file **out, sdict_error *err) {
    dcp_file *f = NULL;
    sdict_status st = file_get(c, s->rel, &f, err);
    if (st)
        return st;
    uint64_t end;
    if (!sdict__add_u64(s->off, s->len, &end) || end > f->src.size) {
        snprintf(c->errfile, sizeof c->errfile, "%s", f->path);
        return sdict__err(err, SDICT_E_TRUNCATED, MD_NAME, -1,
                          "item '%.80s' lies at bytes "
                          "%llu..%llu of %s, past its end (%llu bytes)",
                          s->fqn, (unsigned long long)s->off, (unsigned long long)s->off + s->len,
                          s->rel, (unsigned long long)f->src.size);
    }
    *out = f;
    return SDICT_OK;
}

/* Reads the torch.save archive of item s with job's mode (a doc out for loads). */
static sdict_status item_read(dcp *c, const dcp_store *s, const sdict__read_job *job,
                              sdict_doc **out, sdict_error *err) {
    if (out)
        *out = NULL;
    dcp_file *f = NULL;
    c->items_read++;
    sdict_status st = item_locate(c, s, &f, err);
    if (st)
        return st;
    uint8_t *buf = NULL;
    const uint8_t *data = f->src.data ? f->src.data + s->off : NULL;
    if (!data && s->len) {
        if (!(buf = sdict__malloc((size_t)s->len)))
            return nomem(err);
        if ((st = sdict__source_read(&f->src, s->off, buf, (size_t)s->len, s->rel, err))) {
            sdict__free(buf);
            snprintf(c->errfile, sizeof c->errfile, "%s", f->path);
            return st;
        }
        data = buf;
    }
    if (s->len < 4 || memcmp(data, "PK\x03\x04", 4) != 0) {
        sdict__free(buf);
        st = sdict__err(err, SDICT_E_FORMAT, "", 0,
                        "not a torch.save archive (no zip local "
                        "header at its start)");
        item_err(c, f, s, err);
        return st;
    }
    sdict__source sub;
    sdict__source_init_mem(&sub, data, (size_t)s->len, f->name);
    if (!buf)
        sub.mapping = f->src.mapping; /* storages map the item's records in place */
    sdict_load_opts o;
    memset(&o, 0, sizeof o);
    o.flags = c->flags & ~(uint32_t)SDICT_LOAD_METADATA_ONLY;
    o.limits = c->limits;
    st = sdict__torch_read(&sub, SDICT__IN_ZIP, &o, job, out, err);
    sdict__free(buf);
    if (st)
        item_err(c, f, s, err);
    return st;
}

/*==================================================================================================
 MARK: Values: tensors from chunks, bytes items copied
==================================================================================================*/

/* Copies v into doc; *left bounds the values copied (each item's unpickling bounds its own
   expansion through shared references, *left the sum over all the items). */
static sdict_status copy_value(sdict_doc *doc, const sdict_value *v, uint32_t depth,
                               uint64_t *left, sdict_value **out, sdict_error *err) {
    *out = NULL;
    if (depth > 1000)
        return sdict__err(err, SDICT_E_LIMIT, NULL, -1, "value nested deeper than 1000");
    if (*left == 0)
        return sdict__err(err, SDICT_E_LIMIT, NULL, -1,
                          "the non-tensor items expand to more values through shared "
                          "references than their bytes plus 64K: copying them would cost far "
                          "more than the files");
    --*left;
    sdict_value *r = NULL;
    sdict_status st = SDICT_OK;
    size_t len;
    switch (sdict_value_kind(v)) {
    case SDICT_KIND_NONE:
        r = sdict_none_new(doc);
        break;
    case SDICT_KIND_BOOL:
        r = sdict_bool_new(doc, sdict_bool_get(v));
        break;
    case SDICT_KIND_INT: {
        uint8_t b[16];
        const uint8_t *p = sdict__int_le_bytes(v, b, &len);
        r = sdict__int_from_le_bytes(doc, p, len);
        break;
    }
    case SDICT_KIND_FLOAT:
        r = sdict_float_new(doc, sdict_float_get(v));
        break;
    case SDICT_KIND_STR: {
        const char *s = sdict_str_get(v, &len);
        r = sdict_str_new(doc, s, len);
        break;
    }
    case SDICT_KIND_BYTES: {
        const void *p = sdict_bytes_get(v, &len);
        r = sdict_bytes_new(doc, p, len);
        break;
    }
    case SDICT_KIND_DTYPE:
        r = sdict_dtype_value_new(doc, sdict_dtype_value_get(v));
        break;
    case SDICT_KIND_COMPLEX: {
        double re, im;
        sdict_complex_get(v, &re, &im);
        r = sdict_complex_new(doc, re, im);
        break;
    }
    case SDICT_KIND_DEVICE: {
        int64_t ix;
        const char *t = sdict_device_get(v, &ix);
        r = sdict_device_new(doc, t, ix);
        break;
    }
    case SDICT_KIND_LAYOUT:
        r = sdict_layout_value_new(doc, sdict_layout_value_get(v));
        break;
    case SDICT_KIND_QSCHEME:
        r = sdict_qscheme_value_new(doc, sdict_qscheme_value_get(v));
        break;
    case SDICT_KIND_LIST:
    case SDICT_KIND_TUPLE:
    case SDICT_KIND_SET: {
        sdict_kind k = sdict_value_kind(v);
        r = k == SDICT_KIND_LIST    ? sdict_list_new(doc)
            : k == SDICT_KIND_TUPLE ? sdict_tuple_new(doc)
                                    : sdict_set_new(doc);
        for (size_t i = 0, n = sdict_seq_len(v); r && st == SDICT_OK && i < n; i++) {
            sdict_value *x;
            if ((st = copy_value(doc, sdict_seq_item(v, i), depth + 1, left, &x, err)) == SDICT_OK &&
                sdict_seq_append(r, x) != SDICT_OK)
                st = nomem(err);
        }
        break;
    }
    case SDICT_KIND_DICT:
        r = sdict_dict_new(doc, sdict_dict_is_ordered(v));
        for (size_t i = 0, n = sdict_dict_len(v); r && st == SDICT_OK && i < n; i++) {
            sdict_value *k, *x;
            if ((st = copy_value(doc, sdict_dict_key(v, i), depth + 1, left, &k, err)) == SDICT_OK &&
                (st = copy_value(doc, sdict_dict_val(v, i), depth + 1, left, &x, err)) == SDICT_OK &&
                sdict_dict_set(r, k, x) != SDICT_OK)
                st = nomem(err);
        }
        break;
    case SDICT_KIND_TENSOR:
        if (sdict_value_quantizer(v) || sdict_tensor_attrs(v))
            return sdict__err(err, SDICT_E_UNSUPPORTED, NULL, -1,
                              "a quantized tensor or one "
                              "with Python attributes inside a non-tensor DCP item");
        return sdict__tensor_value_new(doc, sdict_value_tensor(v), NULL, out, err);
    default:
        return sdict__err(err, SDICT_E_UNSUPPORTED, NULL, -1,
                          "a %s value inside a non-tensor "
                          "DCP item",
                          sdict_kind_name(sdict_value_kind(v)));
    }
    if (st)
        return st;
    if (!r)
        return nomem(err);
    sdict_pytype pt = sdict_value_pytype(v);
    char order, kind;
    uint8_t size;
    bool core;
    if (pt == SDICT_PYTYPE_NUMPY_SCALAR || pt == SDICT_PYTYPE_NUMPY_ARRAY) {
        if (sdict__value_numpy(v, &order, &kind, &size, &core))
            sdict__value_set_numpy(r, pt, order, kind, size, core);
    } else if (pt != SDICT_PYTYPE_PLAIN && sdict_value_set_pytype(r, pt) != SDICT_OK) {
        return sdict__err(err, SDICT_E_UNSUPPORTED, NULL, -1,
                          "cannot keep a value's Python "
                          "type (%d) in a non-tensor DCP item",
                          (int)pt);
    }
    *out = r;
    return SDICT_OK;
}

/* The loaded item of a tensor chunk: its root must be a plain tensor of dtype and shape
   sizes[nd]. */
static sdict_status chunk_tensor(dcp *c, const char *fqn, const sdict_doc *idoc, sdict_dtype dtype,
                                 const int64_t *sizes, size_t nd, const sdict_tensor **out,
                                 sdict_error *err) {
    const sdict_value *root = sdict_doc_root(idoc);
    const sdict_tensor *t = sdict_value_tensor(root);
    if (sdict_value_kind(root) != SDICT_KIND_TENSOR || !t || sdict_value_quantizer(root))
        return md_err(c, err, SDICT_E_FORMAT,
                      "'%.80s': the chunk's item holds a %s, not a "
                      "tensor",
                      fqn, what(root));
    if (t->dtype != dtype)
        return md_err(c, err, SDICT_E_DTYPE,
                      "'%.80s': a chunk's item is %s, the metadata says "
                      "%s",
                      fqn, sdict_dtype_name(t->dtype), sdict_dtype_name(dtype));
    bool same = (size_t)t->ndim == nd;
    for (int32_t d = 0; same && d < t->ndim; d++)
        same = t->shape[d] == sizes[d];
    if (!same)
        return md_err(c, err, SDICT_E_SHAPE,
                      "'%.80s': a chunk's item has another shape than "
                      "ChunkStorageMetadata.sizes",
                      fqn);
    if (!t->storage)
        return md_err(c, err, SDICT_E_STORAGE, "'%.80s': a chunk's item is a meta tensor", fqn);
    *out = t;
    return SDICT_OK;
}

static bool whole_chunk(const int64_t *off, const int64_t *sz, const int64_t *shape, size_t nd) {
    for (size_t d = 0; d < nd; d++)
        if (off[d] != 0 || sz[d] != shape[d])
            return false;
    return true;
}

/* A tensor entry's geometry, checked: dtype, global shape, every chunk inside it with its
   storage_data entry, chunk volumes summing to the element count. Overlaps (which the volume
   sum cannot see when they are offset by a hole) are found when chunks are copied. */
typedef struct dcp_geom {
    sdict_dtype dtype;
    size_t nd, nch, es;
    uint64_t numel, nbytes;
    int64_t *shape;          /* nd */
    int64_t *co, *cs;        /* nch * nd chunk offsets and sizes */
    const dcp_store **store; /* nch */
} dcp_geom;

static void geom_free(dcp_geom *g) {
    sdict__free(g->shape);
    sdict__free(g->store);
    memset(g, 0, sizeof *g);
}

static sdict_status entry_geom(dcp *c, const char *fqn, size_t flen, const sdict_value *tsm,
                               dcp_geom *g, sdict_error *err) {
    memset(g, 0, sizeof *g);
    static const char *const f[] = {"properties", "size", "chunks"};
    const sdict_value *x[3];
    sdict_status st = fields_of(c, tsm, "TensorStorageMetadata", f, 3, 7u, x, err);
    if (st)
        return st;
    g->dtype = SDICT_FLOAT32;
    if ((st = props_check(c, fqn, x[0], &g->dtype, err)))
        return st;
    if (!size_ok(x[1]))
        return md_err(c, err, SDICT_E_PICKLE_TYPE, "'%.80s': size is not a torch.Size", fqn);
    const sdict_value *chunks = x[2];
    if (sdict_value_kind(chunks) != SDICT_KIND_LIST)
        return md_err(c, err, SDICT_E_PICKLE_TYPE, "'%.80s': chunks is a %s, not a list", fqn,
                      what(chunks));
    size_t es = g->es = sdict_dtype_size(g->dtype);
    if (es == 0 || sdict_dtype_bits(g->dtype) != 8 * es)
        return md_err(c, err, SDICT_E_UNSUPPORTED, "'%.80s': dtype %s is not byte-sized", fqn,
                      sdict_dtype_name(g->dtype));
    size_t nd = g->nd = sdict_seq_len(x[1]), nch = g->nch = sdict_seq_len(chunks);
    uint64_t cells;
    if (!sdict__mul_u64((uint64_t)nch + 1, (uint64_t)nd + 1, &cells) || cells > (SIZE_MAX >> 5))
        return md_err(c, err, SDICT_E_LIMIT, "'%.80s': too many chunks", fqn);
    g->shape = sdict__calloc((size_t)(2 * cells + nd + 1), sizeof *g->shape);
    g->store = sdict__calloc(nch + 1, sizeof *g->store);
    if (!g->shape || !g->store) {
        geom_free(g);
        return nomem(err);
    }
    g->co = g->shape + nd + 1;
    g->cs = g->co + cells;
    uint64_t numel = 1;
    for (size_t d = nd; d-- > 0;) {
        g->shape[d] = size_at(x[1], d);
        if (!sdict__mul_u64(numel, (uint64_t)g->shape[d], &numel) || numel > INT64_MAX) {
            geom_free(g);
            return md_err(c, err, SDICT_E_SHAPE, "'%.80s': element count overflows", fqn);
        }
    }
    g->numel = numel;
    if (!sdict__mul_u64(numel, es, &g->nbytes) || g->nbytes > SIZE_MAX / 2) {
        geom_free(g);
        return md_err(c, err, SDICT_E_SHAPE, "'%.80s': byte size overflows", fqn);
    }
    /* every chunk: a ChunkStorageMetadata inside the shape, with a storage entry */
    static const char *const fc[] = {"offsets", "sizes"};
    uint64_t volume = 0;
    for (size_t k = 0; k < nch; k++) {
        const sdict_value *ch = sdict_seq_item(chunks, k), *y[2];
        if (!is_obj(ch, M_META, "ChunkStorageMetadata")) {
            geom_free(g);
            return md_err(c, err, SDICT_E_PICKLE_TYPE,
                          "'%.80s': chunk %zu is a %s, not "
                          "ChunkStorageMetadata",
                          fqn, k, what(ch));
        }
        if ((st = fields_of(c, ch, "ChunkStorageMetadata", fc, 2, 3u, y, err))) {
            geom_free(g);
            return st;
        }
        if (!size_ok(y[0]) || !size_ok(y[1]) || sdict_seq_len(y[0]) != nd ||
            sdict_seq_len(y[1]) != nd) {
            geom_free(g);
            return md_err(c, err, SDICT_E_SHAPE,
                          "'%.80s': chunk %zu offsets / sizes are not "
                          "torch.Size values of the tensor's %zu dimensions",
                          fqn, k, nd);
        }
        int64_t *co = g->co + k * nd, *cs = g->cs + k * nd;
        for (size_t d = 0; d < nd; d++) {
            int64_t o = co[d] = size_at(y[0], d), s = cs[d] = size_at(y[1], d);
            int64_t sd = g->shape[d];
            if (o > sd || s > sd - o) {
                geom_free(g);
                return md_err(c, err, SDICT_E_SHAPE,
                              "'%.80s': chunk %zu (offset %lld, size "
                              "%lld in dimension %zu) lies outside the size %lld",
                              fqn, k, (long long)o, (long long)s, d, (long long)sd);
            }
        }
        const dcp_store *sk = g->store[k] = store_find(c, fqn, flen, y[0]);
        if (!sk) {
            geom_free(g);
            return md_err(c, err, SDICT_E_FORMAT,
                          "'%.80s': chunk %zu has no storage_data entry "
                          "(MetadataIndex with its offsets)",
                          fqn, k);
        }
        dcp_file *skf;
        if ((c->flags & SDICT_LOAD_METADATA_ONLY) && !c->no_items &&
            (st = item_locate(c, sk, &skf, err))) {
            geom_free(g);
            return st;
        }
        /* chunks inside the shape have volumes <= numel; their sum must be numel (else a
           hole or an overlap), and each must be backed by its item's bytes (at most the
           inflate ratio the zip reader allows), so nothing is allocated for data a small
           file does not hold */
        uint64_t vol = 1;
        for (size_t d = 0; d < nd; d++)
            vol *= (uint64_t)cs[d];
        if (!sdict__add_u64(volume, vol, &volume))
            volume = UINT64_MAX;
        /* counted over every tensor of the folder, so that many chunks (or tensors) with
           small items cannot each claim the allowance */
        if (vol) {
            if (!sdict__add_u64(c->claimed, vol * es, &c->claimed))
                c->claimed = UINT64_MAX;
            if (!sdict__add_u64(c->backing, sk->len, &c->backing))
                c->backing = UINT64_MAX;
        }
        uint64_t cap = c->backing > (UINT64_MAX >> 6) ? UINT64_MAX
                                                      : 32 * c->backing + ((uint64_t)32 << 20);
        if (c->claimed > cap) {
            geom_free(g);
            return md_err(c, err, SDICT_E_STORAGE,
                          "'%.80s': chunk %zu (%llu bytes, its item in %.60s %llu bytes long) "
                          "brings the tensors to %llu bytes, but all their items together are "
                          "only %llu bytes long",
                          fqn, k, (unsigned long long)(vol * es), sk->rel,
                          (unsigned long long)sk->len, (unsigned long long)c->claimed,
                          (unsigned long long)c->backing);
        }
    }
    if (volume != numel) {
        geom_free(g);
        return md_err(c, err, SDICT_E_SHAPE,
                      "'%.80s': the chunks hold %llu elements, the tensor %llu: they %s", fqn,
                      (unsigned long long)volume, (unsigned long long)numel,
                      volume < numel ? "leave a hole" : "overlap");
    }
    if (numel > 0 && nch == 0) {
        geom_free(g);
        return md_err(c, err, SDICT_E_FORMAT, "'%.80s': no chunks for %llu elements", fqn,
                      (unsigned long long)numel);
    }
    return SDICT_OK;
}

/* Marks elements at..at+n-1 in the bitmap of elements already copied; false (nothing is
   marked past the first element found) if one of them already was: two chunks overlap. Whole
   bytes at a time, as a run is a row of a chunk. */
static bool mark_run(uint8_t *bits, uint64_t at, uint64_t n) {
    uint64_t e = at, end = at + n;
    for (; e < end && (e & 7); e++) {
        if (bits[e >> 3] & (1u << (e & 7)))
            return false;
        bits[e >> 3] |= (uint8_t)(1u << (e & 7));
    }
    uint64_t whole = (end - e) >> 3;
    for (uint64_t i = 0; i < whole; i++)
        if (bits[(e >> 3) + i])
            return false;
    memset(bits + (e >> 3), 0xFF, (size_t)whole);
    for (e += whole << 3; e < end; e++) {
        if (bits[e >> 3] & (1u << (e & 7)))
            return false;
        bits[e >> 3] |= (uint8_t)(1u << (e & 7));
    }
    return true;
}

/* Copies n bytes at src, inside the mapping of file f, to dst with pread when n is large: the
   kernel's copy from the page cache, as a copy load reads, instead of a memcpy that faults in
   every page of the mapping. *fd is opened on first use and must be the file f mapped (same
   device and inode); on any failure the bytes are copied from the mapping. */
static void copy_out(const dcp_file *f, int *fd, const uint8_t *src, uint8_t *dst, size_t n) {
    const uint8_t *base = f->src.data;
    if (n >= ((size_t)1 << 12) && base && src >= base && (uint64_t)(src - base) + n <= f->src.size) {
        if (*fd == -1) {
            struct stat sb;
            *fd = open(f->path, O_RDONLY | O_CLOEXEC);
            if (*fd >= 0 && (fstat(*fd, &sb) != 0 || sb.st_dev != f->dev || sb.st_ino != f->ino)) {
                close(*fd);
                *fd = -2;
            }
        }
        size_t done = 0;
        while (*fd >= 0 && done < n) {
            ssize_t r = pread(*fd, dst + done, n - done, (off_t)(src - base) + (off_t)done);
            if (r <= 0)
                break;
            done += (size_t)r;
        }
        if (done == n)
            return;
        memcpy(dst + done, src + done, n - done);
        return;
    }
    memcpy(dst, src, n);
}

/* Copies the part of chunk k of g inside the region (offsets ro, lengths rl, a contiguous
   tensor at dst marked in the region's bitmap bits) from the chunk's item, read only when the
   chunk overlaps the region. *copied counts the elements. */
static sdict_status region_chunk(dcp *c, const char *fqn, const dcp_geom *g, size_t k,
                                 const int64_t *ro, const int64_t *rl, uint8_t *dst, uint8_t *bits,
                                 uint64_t *copied, sdict_error *err) {
    size_t nd = g->nd, es = g->es;
    const int64_t *co = g->co + k * nd, *cs = g->cs + k * nd;
    int64_t lo[64], len[64], idx[64], rstride[64], cstride[64];
    uint64_t cn = 1, ov = 1;
    for (size_t d = nd; d-- > 0;) {
        lo[d] = co[d] > ro[d] ? co[d] : ro[d];
        int64_t hi = co[d] + cs[d] < ro[d] + rl[d] ? co[d] + cs[d] : ro[d] + rl[d];
        len[d] = hi > lo[d] ? hi - lo[d] : 0;
        ov *= (uint64_t)len[d];
        rstride[d] = d + 1 < nd ? rstride[d + 1] * rl[d + 1] : 1;
        cstride[d] = d + 1 < nd ? cstride[d + 1] * cs[d + 1] : 1;
        cn *= (uint64_t)cs[d];
    }
    if (ov == 0)
        return SDICT_OK;
    sdict__read_job job = {SDICT__READ_LOAD_BYTES, NULL, NULL, NULL, NULL};
    sdict_doc *idoc = NULL;
    const sdict_tensor *t;
    dcp_file *f = NULL;
    int fd = -1;
    sdict_status st = item_read(c, g->store[k], &job, &idoc, err);
    if (st == SDICT_OK)
        st = item_locate(c, g->store[k], &f, err);
    if (st == SDICT_OK)
        st = chunk_tensor(c, fqn, idoc, g->dtype, cs, nd, &t, err);
    uint8_t *tmp = NULL;
    const uint8_t *src = st ? NULL : sdict_tensor_data(t);
    if (st == SDICT_OK && (!sdict_tensor_is_contiguous(t) || t->is_conj || t->is_neg || !src)) {
        if (!(tmp = sdict__malloc((size_t)cn * es)))
            st = nomem(err);
        else
            st = sdict_tensor_copy_to(t, g->dtype, tmp, (size_t)cn * es, err);
        src = tmp;
    }
    if (st == SDICT_OK) {
        /* runs: the overlap's rows over dimensions [0, in), each contiguous in the chunk and
           in the region because every dimension after `in` is whole in both */
        size_t in = nd ? nd - 1 : 0;
        while (in > 0 && len[in] == cs[in] && len[in] == rl[in])
            in--;
        int64_t run = 1, rows = 1;
        for (size_t d = 0; d < nd; d++) {
            if (d < in)
                rows *= len[d];
            else
                run *= len[d];
            idx[d] = 0;
        }
        for (int64_t r = 0; r < rows && st == SDICT_OK; r++) {
            int64_t at = 0, from = 0;
            for (size_t d = 0; d < nd; d++) {
                at += (lo[d] + idx[d] - ro[d]) * rstride[d];
                from += (lo[d] + idx[d] - co[d]) * cstride[d];
            }
            if (!mark_run(bits, (uint64_t)at, (uint64_t)run)) {
                st = md_err(c, err, SDICT_E_SHAPE, "'%.80s': chunk %zu overlaps another chunk",
                            fqn, k);
                break;
            }
            copy_out(f, &fd, src + (size_t)from * es, dst + (size_t)at * es, (size_t)run * es);
            for (size_t d = in; d-- > 0;) { /* the next row: odometer over [0, in) */
                if (++idx[d] < len[d])
                    break;
                idx[d] = 0;
            }
        }
        *copied += ov;
    }
    if (fd >= 0)
        close(fd);
    sdict__free(tmp);
    sdict_doc_free(idoc);
    return st;
}

/* The region (offsets ro, lengths rl of each of g's dimensions) of a tensor entry as a new
   contiguous tensor in doc, from the chunks overlapping it only. */
static sdict_status region_tensor(dcp *c, const char *fqn, const dcp_geom *g, const int64_t *ro,
                                  const int64_t *rl, sdict_doc *doc, sdict_value **out,
                                  sdict_error *err) {
    uint64_t numel = 1;
    for (size_t d = 0; d < g->nd; d++)
        numel *= (uint64_t)rl[d];
    sdict_storage *stg = NULL;
    uint8_t *bits = sdict__calloc((size_t)(numel / 8) + 1, 1);
    sdict_status st = bits ? sdict_storage_new((size_t)(numel * g->es), &stg, err) : nomem(err);
    if (st == SDICT_OK)
        st = sdict__storage_set_key(stg, fqn, err);
    uint64_t covered = 0;
    for (size_t k = 0; k < g->nch && st == SDICT_OK && numel; k++)
        st = region_chunk(c, fqn, g, k, ro, rl, sdict_storage_data(stg), bits, &covered, err);
    sdict__free(bits);
    if (st == SDICT_OK && covered != numel)
        st = md_err(c, err, SDICT_E_SHAPE,
                    "'%.80s': the chunks leave %llu of %llu elements "
                    "uncovered (a hole)",
                    fqn, (unsigned long long)(numel - covered), (unsigned long long)numel);
    if (st == SDICT_OK) {
        sdict_tensor t;
        int64_t stride[64];
        if ((st = sdict_tensor_init(&t, g->dtype, (int32_t)g->nd, rl, stride, stg, err)) ==
            SDICT_OK)
            st = sdict_tensor_new(doc, &t, out, err);
    }
    sdict_storage_release(stg);
    return st;
}

/* A tensor entry: checks its TensorStorageMetadata and builds the full tensor in doc. */
static sdict_status entry_tensor(dcp *c, sdict_doc *doc, const char *fqn, size_t flen,
                                 const sdict_value *tsm, sdict_value **out, sdict_error *err) {
    dcp_geom g;
    sdict_status st = entry_geom(c, fqn, flen, tsm, &g, err);
    if (st)
        return st;
    if (g.nd > 64) {
        st = md_err(c, err, SDICT_E_LIMIT, "'%.80s': %zu dimensions (at most 64)", fqn, g.nd);
    } else if (c->no_items) {
        st = (*out = sdict_none_new(doc)) ? SDICT_OK : nomem(err);
    } else if (c->flags & SDICT_LOAD_METADATA_ONLY) { /* a meta tensor: dtype and shape, no data */
        sdict_tensor t;
        int64_t stride[64];
        if ((st = sdict_tensor_init(&t, g.dtype, (int32_t)g.nd, g.shape, stride, NULL, err)) ==
            SDICT_OK)
            st = sdict_tensor_new(doc, &t, out, err);
    } else {
        bool kept = false;
        if (g.nch == 1 && whole_chunk(g.co, g.cs, g.shape, g.nd)) {
            /* a tensor saved whole keeps its item's storage */
            sdict__read_job job = {SDICT__READ_LOAD, NULL, NULL, NULL, NULL};
            sdict_doc *idoc = NULL;
            const sdict_tensor *t;
            if ((st = item_read(c, g.store[0], &job, &idoc, err)) == SDICT_OK &&
                (st = chunk_tensor(c, fqn, idoc, g.dtype, g.cs, g.nd, &t, err)) == SDICT_OK &&
                /* only a compact contiguous one: as dcp_to_torch_save's copy into torch.empty,
                   the result is contiguous and holds no bytes past the tensor's (else it is
                   copied below, as a sharded tensor is) */
                (kept = sdict_tensor_is_contiguous(t) && !t->is_conj && !t->is_neg &&
                        t->storage_offset == 0 &&
                        sdict_storage_nbytes(t->storage) == (size_t)g.nbytes)) {
                int64_t gstride[64];
                for (size_t d = g.nd, m = 1; d-- > 0; m *= (size_t)g.shape[d])
                    gstride[d] = (int64_t)m; /* torch.empty's (sizes 1 may have others) */
                sdict_tensor tt = *t;
                tt.stride = gstride;
                tt.requires_grad = false;
                tt.is_parameter = false;
                /* the storage is this tensor's alone: named after it, as a safetensors load
                   names its storages */
                if ((st = sdict__storage_set_key(tt.storage, fqn, err)) == SDICT_OK)
                    st = sdict__tensor_value_new(doc, &tt, NULL, out, err);
            }
            sdict_doc_free(idoc);
        }
        if (st == SDICT_OK && !kept) { /* sharded, or a view: copied into a new storage */
            int64_t zero[64] = {0};
            st = region_tensor(c, fqn, &g, zero, g.shape, doc, out, err);
        }
    }
    geom_free(&g);
    return st;
}

/*==================================================================================================
 MARK: Nesting (torch's _traverse.set_element over planner_data paths)
==================================================================================================*/

/* A container being built: a dict (keys kept in first-set order, found through an index dict
   of the scratch doc) or a list (slots NULL until set, None when padded). */
typedef struct node {
    bool is_list;
    size_t n, cap;
    struct node **kids;   /* child containers, NULL for leaves / empty slots */
    sdict_value **leaves; /* leaf values (in the result doc), NULL for containers */
    const char **keys;    /* dict keys (borrowed from the metadata doc) */
    size_t *klen;
    sdict_value *index; /* dict: str -> int slot, in the scratch doc */
} node;

static void node_free(node *n) {
    if (!n)
        return;
    for (size_t i = 0; i < n->n; i++)
        node_free(n->kids[i]);
    sdict__free(n->kids);
    sdict__free(n->leaves);
    sdict__free(n->keys);
    sdict__free(n->klen);
    sdict__free(n);
}

static node *node_new(sdict_doc *scratch, bool is_list) {
    node *n = sdict__calloc(1, sizeof *n);
    if (n && !is_list && !(n->index = sdict_dict_new(scratch, false))) {
        sdict__free(n);
        return NULL;
    }
    if (n)
        n->is_list = is_list;
    return n;
}

static bool node_grow(node *n, size_t want) {
    if (want <= n->cap)
        return true;
    size_t cap = n->cap ? n->cap : 4;
    while (cap < want)
        cap *= 2;
    node **k = sdict__realloc(n->kids, cap * sizeof *k);
    if (k)
        n->kids = k;
    sdict_value **l = k ? sdict__realloc(n->leaves, cap * sizeof *l) : NULL;
    if (l)
        n->leaves = l;
    const char **ks = l ? sdict__realloc(n->keys, cap * sizeof *ks) : NULL;
    if (ks)
        n->keys = ks;
    size_t *kl = ks ? sdict__realloc(n->klen, cap * sizeof *kl) : NULL;
    if (!kl)
        return false;
    n->klen = kl;
    n->cap = cap;
    return true;
}

/* The slot of path element e in n, created (lists padded with empty slots) when missing;
   SIZE_MAX on a mismatch of element and container type or out of memory (*oom). */
static size_t node_slot(sdict_doc *scratch, node *n, const sdict_value *e, uint64_t *pad_left,
                        bool *too_far, bool *oom) {
    int64_t ix;
    if (n->is_list) {
        if (!int_field(e, &ix) || ix < 0)
            return SIZE_MAX;
        if ((uint64_t)ix >= n->n && (uint64_t)ix - n->n >= *pad_left) {
            *too_far = true;
            return SIZE_MAX;
        }
        if ((uint64_t)ix >= n->n)
            *pad_left -= (uint64_t)ix + 1 - n->n;
        if (!node_grow(n, (size_t)ix + 1)) {
            *oom = true;
            return SIZE_MAX;
        }
        while (n->n <= (size_t)ix) {
            n->kids[n->n] = NULL;
            n->leaves[n->n] = NULL;
            n->n++;
        }
        return (size_t)ix;
    }
    size_t len;
    const char *k = sdict_str_get(e, &len);
    if (!k)
        return SIZE_MAX;
    sdict_value *key = sdict_str_new(scratch, k, len);
    sdict_value *hit = key ? sdict_dict_find(n->index, key) : NULL;
    if (hit) {
        sdict_int_get(hit, &ix);
        return (size_t)ix;
    }
    sdict_value *pos = key ? sdict_int_new(scratch, (int64_t)n->n) : NULL;
    if (!pos || !node_grow(n, n->n + 1) || sdict_dict_set(n->index, key, pos) != SDICT_OK) {
        *oom = true;
        return SIZE_MAX;
    }
    n->kids[n->n] = NULL;
    n->leaves[n->n] = NULL;
    n->keys[n->n] = k;
    n->klen[n->n] = len;
    return n->n++;
}

/* True when ".".join(map(str, path)) is fqn: the key torch's load planner finds the entry under
   again when it flattens the state dict it rebuilt (any other path fails its load with
   "Missing key", or, when the joined path names another entry, fills the place with that
   entry's data). */
static bool path_joins_to(const sdict_value *path, const char *fqn, size_t flen) {
    size_t at = 0;
    for (size_t i = 0, n = sdict_seq_len(path); i < n; i++) {
        const sdict_value *e = sdict_seq_item(path, i);
        char num[24];
        size_t len;
        const char *part = sdict_str_get(e, &len);
        int64_t ix;
        if (!part && int_field(e, &ix)) {
            len = (size_t)snprintf(num, sizeof num, "%lld", (long long)ix);
            part = num;
        }
        if (!part || (i && (at >= flen || fqn[at++] != '.')) || len > flen - at ||
            memcmp(fqn + at, part, len) != 0)
            return false;
        at += len;
    }
    return at == flen;
}

/* set_element(root, path, value): the containers along path made as needed. */
static sdict_status node_set(dcp *c, sdict_doc *scratch, node *root, const char *fqn,
                             const sdict_value *path, sdict_value *leaf, sdict_error *err) {
    node *cur = root;
    size_t n = sdict_seq_len(path);
    bool oom = false, too_far = false;
    /* the containers are built, emitted and freed recursively */
    if (n > c->limits.max_depth)
        return md_err(c, err, SDICT_E_LIMIT,
                      "planner_data path of '%.80s' is %zu deep, over the limit of %u", fqn, n,
                      (unsigned)c->limits.max_depth);
    for (size_t i = 0; i < n; i++) {
        size_t slot = node_slot(scratch, cur, sdict_seq_item(path, i), &c->pad_left, &too_far, &oom);
        if (oom)
            return nomem(err);
        /* list indices past every entry there is would only pad with None: the padding of
           all lists together is bounded so that a small .metadata cannot ask for a list of
           a billion slots, or for many nested lists of a few thousand */
        if (too_far)
            return md_err(c, err, SDICT_E_LIMIT,
                          "planner_data path of '%.80s' has a list index that pads the lists "
                          "past %llu slots in all",
                          fqn, (unsigned long long)sdict_dict_len(c->sdm) + 65536);
        if (slot == SIZE_MAX)
            return md_err(c, err, SDICT_E_FORMAT,
                          "planner_data path of '%.80s' indexes a %s "
                          "with a %s",
                          fqn, cur->is_list ? "list" : "dict", what(sdict_seq_item(path, i)));
        if (i + 1 == n) {
            if (cur->kids[slot] || cur->leaves[slot])
                return md_err(c, err, SDICT_E_FORMAT,
                              "planner_data path of '%.80s' names a "
                              "place another entry already fills",
                              fqn);
            cur->leaves[slot] = leaf;
            return SDICT_OK;
        }
        if (cur->leaves[slot])
            return md_err(c, err, SDICT_E_FORMAT,
                          "planner_data path of '%.80s' goes through "
                          "another entry's value",
                          fqn);
        if (!cur->kids[slot]) {
            bool list = sdict_value_kind(sdict_seq_item(path, i + 1)) == SDICT_KIND_INT;
            if (!(cur->kids[slot] = node_new(scratch, list)))
                return nomem(err);
        }
        cur = cur->kids[slot];
    }
    return SDICT_OK;
}

static sdict_status node_emit(sdict_doc *doc, const node *n, sdict_value **out, sdict_error *err) {
    sdict_value *r = n->is_list ? sdict_list_new(doc) : sdict_dict_new(doc, false);
    if (!r)
        return nomem(err);
    for (size_t i = 0; i < n->n; i++) {
        sdict_value *v = n->leaves[i];
        sdict_status st;
        if (n->kids[i] && (st = node_emit(doc, n->kids[i], &v, err)))
            return st;
        if (!v && !(v = sdict_none_new(doc)))
            return nomem(err);
        if (n->is_list) {
            if (sdict_seq_append(r, v) != SDICT_OK)
                return nomem(err);
        } else {
            sdict_value *k = sdict_str_new(doc, n->keys[i], n->klen[i]);
            if (!k || sdict_dict_set(r, k, v) != SDICT_OK)
                return nomem(err);
        }
    }
    *out = r;
    return SDICT_OK;
}

/*==================================================================================================
 MARK: Entry points
==================================================================================================*/

static sdict_status dcp_open(dcp *c, const char *dir, const sdict_load_opts *opts,
                             global_report *gr, sdict_error *err) {
    memset(c, 0, sizeof *c);
    c->dir = dir;
    c->opts = opts;
    c->flags = opts ? opts->flags : 0;
    fill_limits(&c->limits, opts);
    snprintf(c->errfile, sizeof c->errfile, "%s", dir);
    if (!(c->rdir = realpath(dir, NULL)))
        return sdict__err(err, SDICT_E_IO, NULL, -1, "realpath: %s", strerror(errno));
    return md_read(c, gr, err);
}

static void dcp_close(dcp *c) {
    for (size_t i = 0; i < c->n_files; i++) {
        if (c->files[i].open)
            sdict__source_close(&c->files[i].src);
        sdict__free(c->files[i].name);
        sdict__free(c->files[i].path);
    }
    sdict__free(c->files);
    sdict__free(c->ix_name);
    sdict__free(c->ix_id);
    sdict__free(c->stores);
    sdict_doc_free(c->md);
    free(c->rdir);
}

/* Builds the state dict of c into doc (the value of every entry, nested by planner_data). */
static sdict_status dcp_build(dcp *c, sdict_doc *doc, sdict_error *err) {
    sdict_doc *scratch = NULL;
    sdict_status st = sdict_doc_new(&scratch, err);
    node *root = st ? NULL : node_new(scratch, false);
    if (!st && !root)
        st = nomem(err);
    sdict__read_job job = {SDICT__READ_LOAD, NULL, NULL, NULL, NULL};
    c->pad_left = (uint64_t)sdict_dict_len(c->sdm) + 65536;
    c->values_left = 65536; /* the unpickler's rule over all the non-tensor items together */
    for (size_t i = 0; i < c->n_stores; i++)
        if (!c->stores[i].offset && !sdict__add_u64(c->values_left, c->stores[i].len, &c->values_left))
            c->values_left = UINT64_MAX;
    for (size_t i = 0, n = sdict_dict_len(c->sdm); st == SDICT_OK && i < n; i++) {
        size_t flen;
        const sdict_value *kv = sdict_dict_key(c->sdm, i), *m = sdict_dict_val(c->sdm, i);
        const char *fqn = sdict_str_get(kv, &flen);
        sdict_value *leaf = NULL;
        if (is_obj(m, M_META, "BytesStorageMetadata")) {
            const sdict_value *ms = sdict_object_state(m);
            const dcp_store *s = store_find(c, fqn, flen, NULL);
            sdict_doc *idoc = NULL;
            if (ms && !(sdict_value_kind(ms) == SDICT_KIND_DICT && sdict_dict_len(ms) == 0))
                st = md_err(c, err, SDICT_E_PICKLE_TYPE,
                            "'%.80s': BytesStorageMetadata has "
                            "fields",
                            fqn);
            else if (!s)
                st = md_err(c, err, SDICT_E_FORMAT,
                            "'%.80s': no storage_data entry for the "
                            "item",
                            fqn);
            else if (c->no_items)
                st = (leaf = sdict_none_new(doc)) ? SDICT_OK : nomem(err);
            else if ((st = item_read(c, s, &job, &idoc, err)) == SDICT_OK &&
                     (st = copy_value(doc, sdict_doc_root(idoc), 0, &c->values_left, &leaf,
                                      err)) != SDICT_OK) {
                dcp_file *f; /* open already: the error names the item and its file */
                if (file_get(c, s->rel, &f, NULL) == SDICT_OK)
                    item_err(c, f, s, err);
            }
            sdict_doc_free(idoc);
        } else if (is_obj(m, M_META, "TensorStorageMetadata")) {
            st = entry_tensor(c, doc, fqn, flen, m, &leaf, err);
        } else {
            st = md_err(c, err, SDICT_E_PICKLE_TYPE,
                        "state_dict_metadata['%.80s'] is a %s, not "
                        "TensorStorageMetadata or BytesStorageMetadata",
                        fqn, what(m));
        }
        if (st)
            break;
        const sdict_value *path = c->planner ? sdict_dict_find(c->planner, kv) : NULL;
        if (path && !path_joins_to(path, fqn, flen)) {
            st = md_err(c, err, SDICT_E_FORMAT,
                        "planner_data path of '%.80s' does not join to its name (torch's load "
                        "finds each entry again by its path joined with '.', and fails or fills "
                        "another entry's place)",
                        fqn);
        } else if (path) {
            st = node_set(c, scratch, root, fqn, path, leaf, err);
        } else {
            sdict_value *one = sdict_tuple_new(scratch), *k = sdict_str_new(scratch, fqn, flen);
            if (!one || !k || sdict_seq_append(one, k) != SDICT_OK)
                st = nomem(err);
            else
                st = node_set(c, scratch, root, fqn, one, leaf, err);
        }
    }
    sdict_value *r = NULL;
    if (st == SDICT_OK && (st = node_emit(doc, root, &r, err)) == SDICT_OK)
        st = sdict_doc_set_root(doc, r) == SDICT_OK ? SDICT_OK : nomem(err);
    node_free(root);
    sdict_doc_free(scratch);
    return st;
}

sdict_status sdict__dcp_load(const char *path, const sdict_load_opts *opts, sdict_doc **out,
                             sdict_error *err) {
    *out = NULL;
    dcp c;
    global_report gr;
    memset(&gr, 0, sizeof gr);
    sdict_doc *doc = NULL;
    sdict_status st = dcp_open(&c, path, opts, &gr, err);
    if (st == SDICT_OK && (st = sdict_doc_new(&doc, err)) == SDICT_OK)
        st = dcp_build(&c, doc, err);
    if (st == SDICT_OK) {
        sdict__doc_set_format(doc, SDICT_FORMAT_DCP, false);
        *out = doc;
    } else {
        sdict_doc_free(doc);
        sdict__err_file(err, c.errfile);
    }
    dcp_close(&c);
    return st;
}

sdict_status sdict__dcp_scan(const char *path, const sdict_load_opts *opts,
                             void (*fn)(void *ctx, const sdict_scan_item *item), void *ctx,
                             size_t *unsafe_count, sdict_error *err) {
    dcp c;
    global_report gr;
    memset(&gr, 0, sizeof gr);
    gr.fn = fn;
    gr.ctx = ctx;
    sdict_status st = dcp_open(&c, path, opts, &gr, err);
    size_t unsafe = gr.refused;
    for (size_t i = 0; st == SDICT_OK && i < c.n_stores; i++) {
        size_t u = 0;
        char prefix[400];
        snprintf(prefix, sizeof prefix, "%s@%llu", c.stores[i].rel,
                 (unsigned long long)c.stores[i].off);
        sdict__scan_relay relay = {fn, ctx, prefix};
        sdict__read_job job = {SDICT__READ_SCAN, sdict__scan_relay_item, &relay, &u, NULL};
        st = item_read(&c, &c.stores[i], &job, NULL, err);
        unsafe += u;
    }
    if (unsafe_count)
        *unsafe_count = unsafe;
    if (st)
        sdict__err_file(err, c.errfile);
    dcp_close(&c);
    return st;
}

sdict_status sdict__dcp_verify(const char *path, sdict_error *err) {
    sdict_load_opts o;
    memset(&o, 0, sizeof o);
    o.flags = SDICT_LOAD_COPY | SDICT_LOAD_VERIFY_CRC;
    sdict_doc *doc = NULL;
    sdict_status st = sdict__dcp_load(path, &o, &doc, err);
    sdict_doc_free(doc);
    return st;
}

sdict_status sdict__dcp_metadata_check(const uint8_t *data, size_t size, sdict_error *err) {
    dcp c;
    memset(&c, 0, sizeof c);
    c.dir = ".";
    c.no_items = true;
    fill_limits(&c.limits, NULL);
    c.limits.max_values = 1u << 20;
    global_report gr;
    memset(&gr, 0, sizeof gr);
    sdict_doc *doc = NULL;
    sdict_status st = md_parse(&c, data, size, &gr, err);
    if (st == SDICT_OK && (st = sdict_doc_new(&doc, err)) == SDICT_OK)
        st = dcp_build(&c, doc, err);
    sdict_doc_free(doc);
    dcp_close(&c);
    return st;
}

/*==================================================================================================
 MARK: The lazy reader (sdict_dcp handle)
==================================================================================================*/

struct sdict_dcp {
    dcp c;
    char *dir;
    sdict_dcp_entry *entries; /* state_dict_metadata order */
    dcp_geom *geoms;
    const sdict_value **values; /* the BytesStorageMetadata / TensorStorageMetadata */
    size_t n;
    const sdict_dcp_entry **by_name; /* entries sorted by fqn */
};

static int cmp_by_name(const void *a, const void *b) {
    return strcmp((*(const sdict_dcp_entry *const *)a)->fqn,
                  (*(const sdict_dcp_entry *const *)b)->fqn);
}

void sdict_dcp_close(sdict_dcp *d) {
    if (!d)
        return;
    for (size_t i = 0; d->geoms && i < d->n; i++)
        geom_free(&d->geoms[i]);
    sdict__free(d->geoms);
    sdict__free(d->entries);
    sdict__free(d->values);
    sdict__free(d->by_name);
    dcp_close(&d->c);
    sdict__free(d->dir);
    sdict__free(d);
}

sdict_status sdict_dcp_open(const char *dir, const sdict_load_opts *opts, sdict_dcp **out,
                            sdict_error *err) {
    if (out)
        *out = NULL;
    if (!dir || !out) {
        sdict__err_file(err, dir ? dir : "");
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "sdict_dcp_open: NULL argument");
    }
    sdict_dcp *d = sdict__calloc(1, sizeof *d);
    if (!d || !(d->dir = sdict__strndup(dir, strlen(dir)))) {
        sdict__free(d);
        sdict__err_file(err, dir);
        return nomem(err);
    }
    global_report gr;
    memset(&gr, 0, sizeof gr);
    sdict_load_opts o;
    memset(&o, 0, sizeof o);
    if (opts)
        o = *opts;
    o.flags &= ~(uint32_t)SDICT_LOAD_METADATA_ONLY; /* chunks are located when read */
    d->c.opts = NULL;
    sdict_status st = dcp_open(&d->c, d->dir, &o, &gr, err);
    d->c.opts = NULL;
    size_t n = st ? 0 : sdict_dict_len(d->c.sdm);
    if (st == SDICT_OK &&
        (!(d->entries = sdict__calloc(n + 1, sizeof *d->entries)) ||
         !(d->geoms = sdict__calloc(n + 1, sizeof *d->geoms)) ||
         !(d->values = sdict__calloc(n + 1, sizeof *d->values)) ||
         !(d->by_name = sdict__calloc(n + 1, sizeof *d->by_name))))
        st = nomem(err);
    for (size_t i = 0; st == SDICT_OK && i < n; i++) {
        size_t flen;
        const sdict_value *m = sdict_dict_val(d->c.sdm, i);
        const char *fqn = sdict_str_get(sdict_dict_key(d->c.sdm, i), &flen);
        sdict_dcp_entry *e = &d->entries[i];
        e->fqn = fqn;
        d->values[i] = m;
        if (strlen(fqn) != flen) {
            st = md_err(&d->c, err, SDICT_E_FORMAT, "an fqn holds a NUL character");
        } else if (is_obj(m, M_META, "BytesStorageMetadata")) {
            const sdict_value *ms = sdict_object_state(m);
            if (ms && !(sdict_value_kind(ms) == SDICT_KIND_DICT && sdict_dict_len(ms) == 0))
                st = md_err(&d->c, err, SDICT_E_PICKLE_TYPE,
                            "'%.80s': BytesStorageMetadata has fields", fqn);
            else if (!store_find(&d->c, fqn, flen, NULL))
                st = md_err(&d->c, err, SDICT_E_FORMAT,
                            "'%.80s': no storage_data entry for the item", fqn);
        } else if (is_obj(m, M_META, "TensorStorageMetadata")) {
            dcp_geom *g = &d->geoms[i];
            if ((st = entry_geom(&d->c, fqn, flen, m, g, err)) == SDICT_OK && g->nd > 64)
                st = md_err(&d->c, err, SDICT_E_LIMIT, "'%.80s': %zu dimensions (at most 64)",
                            fqn, g->nd);
            if (st == SDICT_OK) {
                e->is_tensor = true;
                e->dtype = g->dtype;
                e->ndim = (int32_t)g->nd;
                e->shape = g->shape;
                e->n_chunks = g->nch;
                e->chunk_offsets = g->co;
                e->chunk_sizes = g->cs;
            }
        } else {
            st = md_err(&d->c, err, SDICT_E_PICKLE_TYPE,
                        "state_dict_metadata['%.80s'] is a %s, not "
                        "TensorStorageMetadata or BytesStorageMetadata",
                        fqn, what(m));
        }
        d->n = i + 1;
        d->by_name[i] = e;
    }
    /* every item file opened now (mapped files hold none of the descriptors, and a mapping
       keeps reading the file it was made of) and every item checked to lie inside it: reads
       come from the files of this .metadata, not from those of a later save renamed over
       them */
    for (size_t i = 0; st == SDICT_OK && i < d->c.n_stores; i++) {
        dcp_file *f;
        st = item_locate(&d->c, &d->c.stores[i], &f, err);
    }
    if (st) {
        sdict__err_file(err, d->c.errfile);
        sdict_dcp_close(d);
        return st;
    }
    qsort(d->by_name, d->n, sizeof *d->by_name, cmp_by_name);
    *out = d;
    return SDICT_OK;
}

size_t sdict_dcp_entry_count(const sdict_dcp *d) {
    return d ? d->n : 0;
}

const sdict_dcp_entry *sdict_dcp_entry_at(const sdict_dcp *d, size_t i) {
    return d && i < d->n ? &d->entries[i] : NULL;
}

static size_t find_ix(const sdict_dcp *d, const char *fqn) {
    size_t lo = 0, hi = d->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int r = strcmp(d->by_name[mid]->fqn, fqn);
        if (r == 0)
            return (size_t)(d->by_name[mid] - d->entries);
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return SIZE_MAX;
}

const sdict_dcp_entry *sdict_dcp_find(const sdict_dcp *d, const char *fqn) {
    size_t i = d && fqn ? find_ix(d, fqn) : SIZE_MAX;
    return i == SIZE_MAX ? NULL : &d->entries[i];
}

uint64_t sdict_dcp_items_read(const sdict_dcp *d) {
    return d ? d->c.items_read : 0;
}

static sdict_status entry_arg(sdict_dcp *d, const char *fqn, sdict_doc *doc, sdict_value **out,
                              bool tensor, size_t *ix, sdict_error *err) {
    if (out)
        *out = NULL;
    if (!d || !fqn || !doc || !out) {
        sdict__err_file(err, d ? d->dir : "");
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "sdict_dcp_read: NULL argument");
    }
    *ix = find_ix(d, fqn);
    if (*ix == SIZE_MAX || d->entries[*ix].is_tensor != tensor) {
        sdict__err_file(err, d->dir);
        return sdict__err(err, *ix == SIZE_MAX ? SDICT_E_NOT_FOUND : SDICT_E_INVALID_ARG, NULL, -1,
                          "'%.100s' %s", fqn,
                          *ix == SIZE_MAX ? "is not in the checkpoint"
                          : tensor        ? "is a non-tensor item, not a tensor"
                                          : "is a tensor, not a non-tensor item");
    }
    return SDICT_OK;
}

sdict_status sdict_dcp_read_region(sdict_dcp *d, const char *fqn, const int64_t *offsets,
                                   const int64_t *lengths, sdict_doc *doc, sdict_value **out,
                                   sdict_error *err) {
    size_t ix;
    sdict_status st = entry_arg(d, fqn, doc, out, true, &ix, err);
    if (st)
        return st;
    const dcp_geom *g = &d->geoms[ix];
    int64_t zero[64] = {0};
    const int64_t *ro = offsets ? offsets : zero, *rl = lengths ? lengths : g->shape;
    for (size_t k = 0; k < g->nd; k++)
        if (ro[k] < 0 || rl[k] < 0 || ro[k] > g->shape[k] || rl[k] > g->shape[k] - ro[k]) {
            sdict__err_file(err, d->dir);
            return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1,
                              "'%.100s': region (offset %lld, length %lld in dimension %zu) lies "
                              "outside the size %lld",
                              fqn, (long long)ro[k], (long long)rl[k], k, (long long)g->shape[k]);
        }
    st = region_tensor(&d->c, fqn, g, ro, rl, doc, out, err);
    if (st)
        sdict__err_file(err, d->c.errfile);
    return st;
}

sdict_status sdict_dcp_read_value(sdict_dcp *d, const char *fqn, sdict_doc *doc,
                                  sdict_value **out, sdict_error *err) {
    size_t ix;
    sdict_status st = entry_arg(d, fqn, doc, out, false, &ix, err);
    if (st)
        return st;
    const dcp_store *s = store_find(&d->c, fqn, strlen(fqn), NULL);
    sdict__read_job job = {SDICT__READ_LOAD, NULL, NULL, NULL, NULL};
    sdict_doc *idoc = NULL;
    /* the full load's rule for one item: its values through shared references stay within
       its bytes plus 64K */
    uint64_t left = s->len > UINT64_MAX - 65536 ? UINT64_MAX : s->len + 65536;
    if ((st = item_read(&d->c, s, &job, &idoc, err)) == SDICT_OK)
        st = copy_value(doc, sdict_doc_root(idoc), 0, &left, out, err);
    sdict_doc_free(idoc);
    if (st)
        sdict__err_file(err, d->c.errfile);
    return st;
}
