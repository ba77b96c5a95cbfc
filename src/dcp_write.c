/*
 dcp_write.c - sdict_save_dcp: a state dict written as a torch.distributed.checkpoint folder
 from one process, laid out as torch 2.14's dcp.save(sd, checkpoint_id=DIR) writes it without a
 process group (FileSystemWriter defaults: one file per rank, no thread pool).

 Layout:
   __0_0.distcp   every item back to back: first the non-tensor (bytes) items, then the tensor
                  items, each in flatten order; each item a torch.save archive (torch 2.7+
                  records, archive folder "archive") of the value, tensors saved contiguous
                  with storage offset 0 (torch clones views before saving)
   .metadata      the pickled Metadata (state_dict_metadata, planner_data, storage_data,
                  storage_meta, version "1.0.0") with the class paths of torch 2.14
 Flattening follows torch 2.4+'s traverse_state_dict: every dict is descended (keys as str;
 an empty dict disappears), a list only when it holds a tensor or a dict (or such a list), a
 tuple never; the fqn is the path joined with '.'.

 Crash safety: the data file is written and fsynced as __0_0.distcp.partial, then an existing
 .metadata is removed (and the removal made durable), the data file renamed into place, and
 .metadata written last through a temporary file and a rename. A failure writing the data (a
 full disk) leaves the old checkpoint as it was; a crash at any point leaves either the old
 complete checkpoint untouched (before the removal) or a folder without .metadata, which every reader (statedict and torch) refuses as
 unfinished — never an old .metadata over new data, which DCP's own in-place overwrite can
 leave.
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
    uint64_t off, len; /* in __0_0.distcp */
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

static void p_size(sdict__buf *b, size_t nd, const int64_t *v, bool zeros) {
    p_global(b, "torch", "Size");
    sdict__buf_byte(b, '(');
    for (size_t d = 0; d < nd; d++)
        p_int(b, zeros ? 0 : v[d]);
    sdict__buf_byte(b, 't');  /* TUPLE */
    sdict__buf_byte(b, 0x85); /* TUPLE1 */
    sdict__buf_byte(b, 'R');  /* REDUCE */
}

static void p_path_elem(sdict__buf *b, const flat_item *it, size_t d) {
    if (it->index[d] >= 0) {
        p_int(b, it->index[d]);
        return;
    }
    sdict__buf t;
    sdict__buf_init(&t);
    key_text(it->path[d], &t);
    p_str(b, t.data ? (const char *)t.data : "", t.len);
    sdict__buf_free(&t);
}

static void p_tensor_meta(sdict__buf *b, const sdict_tensor *t) {
    p_newobj(b, M_META, "TensorStorageMetadata");
    sdict__buf_byte(b, '}'); /* EMPTY_DICT */
    sdict__buf_byte(b, '(');
    p_cstr(b, "properties");
    p_newobj(b, M_META, "TensorProperties");
    sdict__buf_byte(b, '(');
    p_global(b, "torch", sdict_dtype_name(t->dtype));
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
    p_size(b, (size_t)t->ndim, t->shape, false);
    p_cstr(b, "chunks");
    sdict__buf_byte(b, ']'); /* EMPTY_LIST */
    p_newobj(b, M_META, "ChunkStorageMetadata");
    sdict__buf_byte(b, '}');
    sdict__buf_byte(b, '(');
    p_cstr(b, "offsets");
    p_size(b, (size_t)t->ndim, t->shape, true);
    p_cstr(b, "sizes");
    p_size(b, (size_t)t->ndim, t->shape, false);
    sdict__buf_byte(b, 'u'); /* SETITEMS */
    sdict__buf_byte(b, 'b');
    sdict__buf_byte(b, 'a'); /* APPEND */
    sdict__buf_byte(b, 'u');
    sdict__buf_byte(b, 'b');
}

static void metadata_pickle(sdict__buf *b, const flat *f, const char *checkpoint_id,
                            const char *save_id) {
    sdict__buf_byte(b, 0x80); /* PROTO 4 */
    sdict__buf_byte(b, 4);
    p_newobj(b, M_META, "Metadata");
    sdict__buf_byte(b, '}');
    sdict__buf_byte(b, '(');
    p_cstr(b, "state_dict_metadata");
    sdict__buf_byte(b, '}');
    for (size_t i = 0; i < f->n; i++) {
        const flat_item *it = &f->items[i];
        sdict__buf_byte(b, '(');
        p_str(b, it->fqn, it->fqn_len);
        if (it->tensor)
            p_tensor_meta(b, sdict_value_tensor(it->val));
        else
            p_newobj(b, M_META, "BytesStorageMetadata");
        sdict__buf_byte(b, 'u');
    }
    p_cstr(b, "planner_data");
    sdict__buf_byte(b, '}');
    for (size_t i = 0; i < f->n; i++) {
        const flat_item *it = &f->items[i];
        sdict__buf_byte(b, '(');
        p_str(b, it->fqn, it->fqn_len);
        sdict__buf_byte(b, '(');
        for (size_t d = 0; d < it->depth; d++)
            p_path_elem(b, it, d);
        sdict__buf_byte(b, 't');
        sdict__buf_byte(b, 'u');
    }
    p_cstr(b, "storage_data");
    sdict__buf_byte(b, '}');
    /* write results: non-tensor items first, then tensors (file order) */
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < f->n; i++) {
            const flat_item *it = &f->items[i];
            if (it->tensor != (pass == 1))
                continue;
            sdict__buf_byte(b, '(');
            p_newobj(b, M_META, "MetadataIndex");
            sdict__buf_byte(b, '}');
            sdict__buf_byte(b, '(');
            p_cstr(b, "fqn");
            p_str(b, it->fqn, it->fqn_len);
            p_cstr(b, "index");
            if (it->tensor) {
                const sdict_tensor *t = sdict_value_tensor(it->val);
                p_int(b, 0);
                p_cstr(b, "offset");
                p_size(b, (size_t)t->ndim, t->shape, true);
            } else {
                sdict__buf_byte(b, 'N'); /* NONE */
            }
            sdict__buf_byte(b, 'u');
            sdict__buf_byte(b, 'b');
            p_newobj(b, "torch.distributed.checkpoint.filesystem", "_StorageInfo");
            sdict__buf_byte(b, '}');
            sdict__buf_byte(b, '(');
            p_cstr(b, "relative_path");
            p_cstr(b, "__0_0.distcp");
            p_cstr(b, "offset");
            p_int(b, (int64_t)it->off);
            p_cstr(b, "length");
            p_int(b, (int64_t)it->len);
            sdict__buf_byte(b, 'u');
            sdict__buf_byte(b, 'b');
            sdict__buf_byte(b, 'u');
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
}

/*==================================================================================================
 MARK: Items and files
==================================================================================================*/

/* Appends the torch.save archive of item it to out (a tensor saved contiguous, offset 0). */
static sdict_status item_bytes(const flat_item *it, sdict__buf *out, sdict_error *err) {
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
        sdict_storage *s = NULL;
        sdict_tensor c;
        int64_t stride[64];
        int64_t *strides = t->ndim <= 64 ? stride : sdict__calloc((size_t)t->ndim, 8);
        sdict_value *v = NULL;
        if (!strides)
            return nomem(err);
        if ((st = sdict_doc_new(&tmp, err)) == SDICT_OK &&
            (st = sdict_storage_new(nb, &s, err)) == SDICT_OK &&
            (st = sdict_tensor_copy_to(t, t->dtype, sdict_storage_data(s), nb, err)) == SDICT_OK &&
            (st = sdict_tensor_init(&c, t->dtype, t->ndim, t->shape, strides, s, err)) == SDICT_OK)
            st = sdict_tensor_new(tmp, &c, &v, err);
        sdict_storage_release(s);
        if (strides != stride)
            sdict__free(strides);
        root = v;
    }
    void *data = NULL;
    size_t n = 0;
    if (st == SDICT_OK && (st = sdict_save_buffer(root, &o, &data, &n, err)) == SDICT_OK)
        sdict__buf_append(out, data, n);
    sdict_free_buffer(data);
    sdict_doc_free(tmp);
    return st ? st : sdict__buf_status(out, err);
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

static int cmp_name(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

SDICT_API sdict_status sdict_save_dcp(const char *dir, const sdict_value *root, sdict_error *err) {
    if (!dir || !root) {
        sdict__err_file(err, dir ? dir : "");
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "sdict_save_dcp: %s is NULL",
                          dir ? "root" : "dir");
    }
    flat f;
    memset(&f, 0, sizeof f);
    sdict_status st = visit(&f, root, 0, err);
    const char **names = st ? NULL : sdict__calloc(f.n + 1, sizeof *names);
    if (st == SDICT_OK && !names)
        st = nomem(err);
    for (size_t i = 0; st == SDICT_OK && i < f.n; i++)
        names[i] = f.items[i].fqn;
    if (st == SDICT_OK)
        qsort(names, f.n, sizeof *names, cmp_name);
    for (size_t i = 1; st == SDICT_OK && i < f.n; i++)
        if (strcmp(names[i - 1], names[i]) == 0)
            st = sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1,
                            "duplicated flatten key '%.100s' (torch refuses it too)", names[i]);
    sdict__free(names);
    sdict__buf data, md;
    sdict__buf_init(&data);
    sdict__buf_init(&md);
    for (int pass = 0; pass < 2 && st == SDICT_OK; pass++)
        for (size_t i = 0; i < f.n && st == SDICT_OK; i++) {
            flat_item *it = &f.items[i];
            if (it->tensor != (pass == 1))
                continue;
            it->off = data.len;
            st = item_bytes(it, &data, err);
            it->len = data.len - it->off;
        }
    char *mdpath = NULL, *datapath = NULL, *stagepath = NULL;
    if (st == SDICT_OK) {
        struct stat sb;
        if (mkdir(dir, 0777) != 0 && errno != EEXIST)
            st = io_err(err, "mkdir", dir, errno);
        else if (stat(dir, &sb) != 0)
            st = io_err(err, "stat", dir, errno);
        else if (!S_ISDIR(sb.st_mode)) {
            sdict__err_file(err, dir);
            st = sdict__err(err, SDICT_E_IO, NULL, -1,
                            "exists and is not a folder: a DCP checkpoint is a folder");
        }
    }
    if (st == SDICT_OK &&
        (!(mdpath = sdict__path_join(dir, ".metadata")) || !(datapath = sdict__path_join(dir, "__0_0.distcp")) ||
         !(stagepath = sdict__path_join(dir, "__0_0.distcp.partial"))))
        st = nomem(err);
    if (st == SDICT_OK) {
        char id[37];
        uuid4(id);
        metadata_pickle(&md, &f, dir, id);
        st = sdict__buf_status(&md, err);
    }
    /* the new data is written (and fsynced) under a name of its own first: a failure writing it
       (a full disk, a file size limit) leaves the previous checkpoint as it was */
    bool staged = false;
    if (st == SDICT_OK)
        staged = (st = sdict__save_bytes(stagepath, data.data, data.len, err)) == SDICT_OK;
    /* the old .metadata goes next (durably): from here until the new one is renamed in, the
       folder reads as an unfinished save */
    if (st == SDICT_OK && unlink(mdpath) != 0 && errno != ENOENT)
        st = io_err(err, "unlink", mdpath, errno);
    if (st == SDICT_OK) {
        int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0) {
            if (fsync(fd) != 0 && errno != EINVAL)
                st = io_err(err, "fsync directory", dir, errno);
            close(fd);
        }
    }
    if (st == SDICT_OK && rename(stagepath, datapath) != 0)
        st = io_err(err, "rename", datapath, errno);
    else if (st == SDICT_OK)
        staged = false;
    if (staged)
        unlink(stagepath);
    /* .metadata's save syncs the folder, the data file's rename with it */
    if (st == SDICT_OK)
        st = sdict__save_bytes(mdpath, md.data, md.len, err);
    sdict__free(stagepath);
    sdict__free(mdpath);
    sdict__free(datapath);
    sdict__buf_free(&data);
    sdict__buf_free(&md);
    flat_free(&f);
    return st;
}
