/*
 pickle_write.c - protocol-2 pickler that reproduces the bytes CPython's C pickler (_pickle.c)
 emits when torch.save pickles a checkpoint.

 Byte-for-byte equality with torch 1.13 depends on mirroring CPython's rules exactly:
 - memoization is by object identity. Here the identity of a Python object is the identity of
   the sdict_value (a value met twice is a BINGET); objects torch creates on the fly (the
   rebuild argument tuples, size/stride tuples, backward-hook OrderedDicts, persistent-id
   tuples) are fresh every time, so they are memoized but never fetched again;
 - singletons inside torch/CPython are memoized once per pickle and fetched afterwards: every
   GLOBAL (classes, functions, dtypes), the string constants 'storage', 'cpu' and 'latin1',
   and the key string of a storage (torch keeps it in its id_map, so the second reference to
   a storage uses the very same str object);
 - PROTO 2 has no MEMOIZE opcode: BINPUT n (n < 256) or LONG_BINPUT n right after the object
   is complete; containers are memoized when created (EMPTY_LIST/EMPTY_DICT) so their items
   can refer back to them, tuples only after their TUPLE opcode;
 - exact dicts and lists use batch_dict_exact/batch_list_exact, which differ from the generic
   path used for OrderedDict items (see write_dict_items below);
 - the persistent id of a storage bypasses the memo (Pickler.save checks persistent_id before
   the memo), so a storage object itself is never memoized.
 Module names follow protocol 2's fix_imports: builtins.set is pickled as "__builtin__ set".
*/
#include "internal.h"

#include <stdio.h>
#include <string.h>

/* CPython's pickle BATCHSIZE for APPENDS/SETITEMS. */
#define PW_BATCH 1000
/* Nesting of containers accepted before SDICT_E_LIMIT (the loader's default max_depth). */
#define PW_MAX_DEPTH 1000

/*==================================================================================================
 MARK: Pointer hash map (identity -> memo slot / index)
==================================================================================================*/

typedef struct pw_slot {
    const void *key;  /* NULL = empty */
    int64_t val;      /* memo index (-1 while a tuple is open), or a storage index, or a dtype */
    bool open;        /* container currently being written: meeting it again is a cycle */
} pw_slot;

typedef struct pw_map {
    pw_slot *slots;
    size_t cap;  /* power of two, or 0 */
    size_t len;
} pw_map;

static size_t ptr_hash(const void *p) {
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x;
}

static pw_slot *map_find(const pw_map *m, const void *key) {
    if (!m->cap)
        return NULL;
    for (size_t i = ptr_hash(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (m->slots[i].key == key)
            return &m->slots[i];
        if (!m->slots[i].key)
            return NULL;
    }
}

/* Inserts key (absent) and returns its slot, NULL when out of memory. */
static pw_slot *map_insert(pw_map *m, const void *key) {
    if ((m->len + 1) * 2 > m->cap) {
        size_t ncap = m->cap ? m->cap * 2 : 64;
        pw_slot *ns = sdict__calloc(ncap, sizeof *ns);
        if (!ns)
            return NULL;
        for (size_t j = 0; j < m->cap; j++) {
            if (!m->slots[j].key)
                continue;
            size_t i = ptr_hash(m->slots[j].key) & (ncap - 1);
            while (ns[i].key)
                i = (i + 1) & (ncap - 1);
            ns[i] = m->slots[j];
        }
        sdict__free(m->slots);
        m->slots = ns;
        m->cap = ncap;
    }
    size_t i = ptr_hash(key) & (m->cap - 1);
    while (m->slots[i].key)
        i = (i + 1) & (m->cap - 1);
    m->slots[i].key = key;
    m->slots[i].val = -1;
    m->slots[i].open = false;
    m->len++;
    return &m->slots[i];
}

static void map_free(pw_map *m) {
    sdict__free(m->slots);
    m->slots = NULL;
    m->cap = m->len = 0;
}

/*==================================================================================================
 MARK: Writer state
==================================================================================================*/

/* A GLOBAL already written: module and name point at static text (string literals, dtype
   table names), so pointer comparison would do, but strcmp keeps it robust. */
typedef struct pw_global {
    const char *module;
    const char *name;
    int64_t memo;
} pw_global;

typedef struct pw {
    sdict__buf *out;
    sdict_error *err;
    uint64_t next_memo;    /* len(memo) in CPython */
    pw_map memo;           /* sdict_value* -> memo index */
    pw_map storage_index;  /* sdict_storage* -> index into st */
    pw_map data_dtype;     /* storage data pointer -> dtype first saved with (torch keys its
                              dtype check by data_ptr) */
    pw_global globals[64];
    size_t n_globals;
    int64_t memo_storage;  /* 'storage' */
    int64_t memo_cpu;      /* 'cpu' */
    int64_t memo_latin1;   /* 'latin1' (CPython's interned constant in save_bytes) */
    int64_t memo_layout[SDICT_LAYOUT_COUNT]; /* torch.layout singletons */
    sdict__saved_storage *st;
    int64_t *st_key_memo;  /* memo index of each storage's key string, -1 until written */
    size_t n_st, cap_st;
    uint32_t depth;
} pw;

/* Opcodes (pickletools names). */
enum {
    OP_MARK = '(', OP_STOP = '.', OP_BINFLOAT = 'G', OP_BININT = 'J', OP_BININT1 = 'K',
    OP_BININT2 = 'M', OP_NONE = 'N', OP_BINPERSID = 'Q', OP_REDUCE = 'R', OP_BINUNICODE = 'X',
    OP_APPEND = 'a', OP_BUILD = 'b', OP_GLOBAL = 'c', OP_APPENDS = 'e', OP_BINGET = 'h',
    OP_LONG_BINGET = 'j', OP_EMPTY_LIST = ']', OP_BINPUT = 'q', OP_LONG_BINPUT = 'r',
    OP_SETITEM = 's', OP_TUPLE = 't', OP_SETITEMS = 'u', OP_EMPTY_DICT = '}',
    OP_EMPTY_TUPLE = ')', OP_PROTO = 0x80, OP_NEWTRUE = 0x88, OP_NEWFALSE = 0x89,
    OP_LONG1 = 0x8a, OP_LONG4 = 0x8b, OP_TUPLE1 = 0x85, OP_TUPLE2 = 0x86, OP_TUPLE3 = 0x87,
};

static void op(pw *w, int code) { sdict__buf_byte(w->out, (uint8_t)code); }

/* Memoizes the object just completed (CPython's memoize(): index = len(memo)). */
static int64_t put(pw *w) {
    uint64_t idx = w->next_memo++;
    if (idx < 256) {
        op(w, OP_BINPUT);
        op(w, (int)idx);
    } else {
        op(w, OP_LONG_BINPUT);
        sdict__buf_le32(w->out, (uint32_t)idx);
    }
    return (int64_t)idx;
}

static void get(pw *w, int64_t idx) {
    if (idx < 256) {
        op(w, OP_BINGET);
        op(w, (int)idx);
    } else {
        op(w, OP_LONG_BINGET);
        sdict__buf_le32(w->out, (uint32_t)idx);
    }
}

static sdict_status nomem(pw *w) {
    return sdict__err(w->err, SDICT_E_NOMEM, NULL, -1, "out of memory while pickling");
}

/*==================================================================================================
 MARK: Scalars
==================================================================================================*/

/* CPython save_long for values that fit in int64. */
static void write_i64(pw *w, int64_t v) {
    if (v >= 0 && v <= 0xff) {
        op(w, OP_BININT1);
        op(w, (int)v);
    } else if (v >= 0 && v <= 0xffff) {
        op(w, OP_BININT2);
        sdict__buf_le16(w->out, (uint16_t)v);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
        op(w, OP_BININT);
        sdict__buf_le32(w->out, (uint32_t)(int32_t)v);
    } else {
        /* LONG1 with the minimal two's complement little-endian encoding (encode_long). */
        uint8_t b[8];
        uint64_t u = (uint64_t)v;
        for (int i = 0; i < 8; i++)
            b[i] = (uint8_t)(u >> (8 * i));
        int n = 8;
        /* Drop redundant sign bytes: keep one while the next lower byte's top bit matches. */
        while (n > 1 && ((b[n - 1] == 0x00 && !(b[n - 2] & 0x80)) ||
                         (b[n - 1] == 0xff && (b[n - 2] & 0x80))))
            n--;
        op(w, OP_LONG1);
        op(w, n);
        sdict__buf_append(w->out, b, (size_t)n);
    }
}

static sdict_status write_int(pw *w, const sdict_value *v) {
    int64_t i;
    sdict_status st = sdict_int_get(v, &i);
    if (st == SDICT_OK) {
        write_i64(w, i);
        return SDICT_OK;
    }
    /* Larger than int64: LONG1, or LONG4 past 255 bytes, from the value's own encoding. */
    uint8_t tmp[16];
    size_t n = 0;
    const uint8_t *p = sdict__int_le_bytes(v, tmp, &n);
    if (!p)
        return sdict__err(w->err, SDICT_E_INVALID_ARG, NULL, -1, "int value has no byte encoding");
    if (n < 256) {
        op(w, OP_LONG1);
        op(w, (int)n);
    } else if (n <= UINT32_MAX) {
        op(w, OP_LONG4);
        sdict__buf_le32(w->out, (uint32_t)n);
    } else {
        return sdict__err(w->err, SDICT_E_INVALID_ARG, NULL, -1, "int of %zu bytes is too large", n);
    }
    sdict__buf_append(w->out, p, n);
    return SDICT_OK;
}

static void write_float(pw *w, double d) {
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(u >> (56 - 8 * i)); /* BINFLOAT is big-endian */
    op(w, OP_BINFLOAT);
    sdict__buf_append(w->out, b, 8);
}

/* BINUNICODE (protocol 2 has no SHORT_BINUNICODE or BINUNICODE8), then memoized. */
static sdict_status write_new_str(pw *w, const char *s, size_t n, int64_t *memo) {
    if (n > UINT32_MAX)
        return sdict__err(w->err, SDICT_E_INVALID_ARG, NULL, -1,
                          "str of %zu bytes does not fit pickle protocol 2 (max 4 GiB)", n);
    op(w, OP_BINUNICODE);
    sdict__buf_le32(w->out, (uint32_t)n);
    sdict__buf_append(w->out, s, n);
    int64_t idx = put(w);
    if (memo)
        *memo = idx;
    return SDICT_OK;
}

/* A str that torch holds as one object (a code constant): written once, then BINGET. */
static sdict_status write_const_str(pw *w, int64_t *slot, const char *s) {
    if (*slot >= 0) {
        get(w, *slot);
        return SDICT_OK;
    }
    return write_new_str(w, s, strlen(s), slot);
}

/* GLOBAL 'module\nname\n', memoized once per pickle (classes/functions are singletons). */
static sdict_status write_global(pw *w, const char *module, const char *name) {
    for (size_t i = 0; i < w->n_globals; i++) {
        if (strcmp(w->globals[i].module, module) == 0 && strcmp(w->globals[i].name, name) == 0) {
            get(w, w->globals[i].memo);
            return SDICT_OK;
        }
    }
    op(w, OP_GLOBAL);
    sdict__buf_append(w->out, module, strlen(module));
    op(w, '\n');
    sdict__buf_append(w->out, name, strlen(name));
    op(w, '\n');
    int64_t idx = put(w);
    /* The table holds every distinct global a torch pickle can contain (about 40); past its
       size further globals are simply written again, which is still a valid pickle. */
    if (w->n_globals < sizeof w->globals / sizeof w->globals[0])
        w->globals[w->n_globals++] = (pw_global){module, name, idx};
    return SDICT_OK;
}

/* A tuple torch builds of small ints (size, stride): fresh, so memoized but never reused. */
static void write_int_tuple(pw *w, const int64_t *v, int32_t n) {
    if (n == 0) {
        op(w, OP_EMPTY_TUPLE);
        return;
    }
    if (n > 3)
        op(w, OP_MARK);
    for (int32_t i = 0; i < n; i++)
        write_i64(w, v[i]);
    op(w, n == 1 ? OP_TUPLE1 : n == 2 ? OP_TUPLE2 : n == 3 ? OP_TUPLE3 : OP_TUPLE);
    put(w);
}

/* collections.OrderedDict() as torch passes for backward_hooks: GLOBAL, (), REDUCE, BINPUT. */
static sdict_status write_empty_ordered_dict(pw *w) {
    sdict_status st = write_global(w, "collections", "OrderedDict");
    if (st)
        return st;
    op(w, OP_EMPTY_TUPLE);
    op(w, OP_REDUCE);
    put(w);
    return SDICT_OK;
}

/*==================================================================================================
 MARK: Storages and tensors
==================================================================================================*/

static sdict_status dtype_conflict(pw *w, sdict_dtype first, sdict_dtype second) {
    return sdict__err(w->err, SDICT_E_INVALID_ARG, NULL, -1,
                      "Cannot save multiple tensors or storages that view the same data as "
                      "different types (one storage seen as %s and as %s)",
                      sdict_dtype_name(first), sdict_dtype_name(second));
}

/*
 Writes the persistent id ('storage', <class>, key, 'cpu', numel) + BINPERSID for storage s
 viewed as dtype (torch 1.13 _save.persistent_id). The storage is registered on first sight;
 seeing it again with another dtype is the error torch raises.
*/
static sdict_status write_storage_pid(pw *w, sdict_storage *s, sdict_dtype dtype) {
    const char *cls = sdict_dtype_storage_class(dtype);
    /* dtypes without a storage class travel as UntypedStorage: bytes, checked as uint8 (torch
       2.x uses torch.uint8 as the dtype of an untyped storage in its check). */
    sdict_dtype check_dtype = cls ? dtype : SDICT_UINT8;
    size_t elsize = sdict_dtype_size(check_dtype);
    size_t nbytes = sdict_storage_nbytes(s);
    const void *data = sdict_storage_data(s);

    pw_slot *slot = map_find(&w->storage_index, s);
    size_t idx;
    if (slot) {
        idx = (size_t)slot->val;
        if (w->st[idx].dtype != check_dtype)
            return dtype_conflict(w, w->st[idx].dtype, check_dtype);
    } else {
        /* torch keys its dtype check by data pointer, so two storage objects over the same
           memory conflict too; empty storages (data_ptr 0) are exempt as in torch. */
        if (data && nbytes) {
            pw_slot *d = map_find(&w->data_dtype, data);
            if (d && d->val != (int64_t)check_dtype)
                return dtype_conflict(w, (sdict_dtype)d->val, check_dtype);
            if (!d) {
                d = map_insert(&w->data_dtype, data);
                if (!d)
                    return nomem(w);
                d->val = (int64_t)check_dtype;
            }
        }
        if (w->n_st == w->cap_st) {
            size_t ncap = w->cap_st ? w->cap_st * 2 : 16;
            sdict__saved_storage *ns = sdict__realloc(w->st, ncap * sizeof *ns);
            if (!ns)
                return nomem(w);
            w->st = ns;
            int64_t *nk = sdict__realloc(w->st_key_memo, ncap * sizeof *nk);
            if (!nk)
                return nomem(w);
            w->st_key_memo = nk;
            w->cap_st = ncap;
        }
        slot = map_insert(&w->storage_index, s);
        if (!slot)
            return nomem(w);
        idx = w->n_st++;
        slot->val = (int64_t)idx;
        /* Whole elements only: torch's loader reads numel * element size bytes. */
        w->st[idx] = (sdict__saved_storage){s, check_dtype, (uint64_t)(nbytes / elsize * elsize)};
        w->st_key_memo[idx] = -1;
    }

    op(w, OP_MARK);
    sdict_status st = write_const_str(w, &w->memo_storage, "storage");
    if (!st)
        st = cls ? write_global(w, "torch", cls) : write_global(w, "torch.storage", "UntypedStorage");
    if (st)
        return st;
    if (w->st_key_memo[idx] >= 0) {
        get(w, w->st_key_memo[idx]);
    } else {
        char key[24];
        int n = snprintf(key, sizeof key, "%zu", idx);
        st = write_new_str(w, key, (size_t)n, &w->st_key_memo[idx]);
        if (st)
            return st;
    }
    st = write_const_str(w, &w->memo_cpu, "cpu");
    if (st)
        return st;
    write_i64(w, (int64_t)(w->st[idx].nbytes / elsize));
    op(w, OP_TUPLE);
    put(w);
    op(w, OP_BINPERSID);
    return SDICT_OK;
}

static sdict_status write_value(pw *w, const sdict_value *v);

/* A torch.layout: copyreg's (_get_layout, ('torch.sparse_coo',)). Layouts are singletons in
   torch, so each is written once per pickle and fetched afterwards. */
static sdict_status write_layout(pw *w, sdict_layout l) {
    if (w->memo_layout[l] >= 0) {
        get(w, w->memo_layout[l]);
        return SDICT_OK;
    }
    char name[32];
    sdict_status st = write_global(w, "torch.serialization", "_get_layout");
    if (st)
        return st;
    int n = snprintf(name, sizeof name, "torch.%s", sdict_layout_name(l));
    if ((st = write_new_str(w, name, (size_t)n, NULL)))
        return st;
    op(w, OP_TUPLE1);
    put(w);
    op(w, OP_REDUCE);
    w->memo_layout[l] = put(w);
    return SDICT_OK;
}

/* torch.Size(size): REDUCE of torch.Size on a one-tuple holding the size tuple. */
static sdict_status write_size(pw *w, const sdict_value *size) {
    sdict_status st = write_global(w, "torch", "Size");
    if (!st)
        st = write_value(w, size);
    if (st)
        return st;
    op(w, OP_TUPLE1);
    put(w);
    op(w, OP_REDUCE);
    put(w);
    return SDICT_OK;
}

/* The rebuild function of tensor-like v (Tensor._reduce_ex_internal's first item). */
static sdict_status write_rebuild_fn(pw *w, const sdict_value *v) {
    const sdict_tensor *t = sdict_value_tensor(v);
    const sdict_sparse *sp = sdict_value_sparse(v);
    const char *fn = sp ? (sp->legacy_csr ? "_rebuild_sparse_csr_tensor" : "_rebuild_sparse_tensor")
                     : sdict_value_nested(v) ? "_rebuild_nested_tensor"
                     : sdict_value_quantizer(v) ? "_rebuild_qtensor"
                     : !t->storage ? "_rebuild_meta_tensor_no_storage"
                     : sdict_dtype_storage_class(t->dtype) ? "_rebuild_tensor_v2"
                                                           : "_rebuild_tensor_v3";
    return write_global(w, "torch._utils", fn);
}

/* (qscheme, scale, zero_point) or (qscheme, scales, zero_points, axis); torch writes both
   per-channel schemes as per_channel_affine (float zero points tell float_qparams apart). */
static sdict_status write_qparams(pw *w, const sdict_quantizer *q) {
    sdict_status st;
    if (q->qscheme == SDICT_PER_TENSOR_AFFINE) {
        if ((st = write_global(w, "torch", "per_tensor_affine")))
            return st;
        write_float(w, q->scale);
        write_i64(w, q->zero_point);
        op(w, OP_TUPLE3);
        put(w);
        return SDICT_OK;
    }
    op(w, OP_MARK);
    if ((st = write_global(w, "torch", "per_channel_affine")) || (st = write_value(w, q->scales)) ||
        (st = write_value(w, q->zero_points)))
        return st;
    write_i64(w, q->axis);
    op(w, OP_TUPLE);
    put(w);
    return SDICT_OK;
}

/* {'conj': True, 'neg': True} (the bits set), as torch._utils.get_tensor_metadata. */
static void write_metadata(pw *w, const sdict_tensor *t) {
    int64_t unused;
    op(w, OP_EMPTY_DICT);
    put(w);
    if (t->is_conj && t->is_neg)
        op(w, OP_MARK);
    if (t->is_conj) {
        write_new_str(w, "conj", 4, &unused);
        op(w, OP_NEWTRUE);
    }
    if (t->is_neg) {
        write_new_str(w, "neg", 3, &unused);
        op(w, OP_NEWTRUE);
    }
    op(w, t->is_conj && t->is_neg ? OP_SETITEMS : OP_SETITEM);
}

/*
 The argument tuple of tensor-like v's rebuild function (Tensor._reduce_ex_internal, 1.13; v3
 and the others from 2.x), memoized. requires_grad is passed separately because a Parameter's
 inner tensor is param.data, which never requires grad.
*/
static sdict_status write_rebuild_args(pw *w, const sdict_value *v, bool requires_grad) {
    sdict_status st;
    const sdict_tensor *t = sdict_value_tensor(v);
    const sdict_sparse *sp = sdict_value_sparse(v);
    const sdict_nested *ns = sdict_value_nested(v);
    const sdict_quantizer *q = sdict_value_quantizer(v);
    if (sp) {
        /* (layout, (indices, values, size[, is_coalesced])) or
           (layout, (compressed_indices, plain_indices, values, size)) */
        bool coo = sp->layout == SDICT_LAYOUT_SPARSE_COO;
        if ((st = write_layout(w, sp->layout)))
            return st;
        op(w, OP_MARK);
        if ((st = write_value(w, sp->indices)) ||
            (!coo && (st = write_value(w, sp->plain_indices))) ||
            (st = write_value(w, sp->values)) || (st = write_size(w, sp->size)))
            return st;
        if (coo && sp->is_coalesced >= 0)
            op(w, sp->is_coalesced ? OP_NEWTRUE : OP_NEWFALSE);
        op(w, OP_TUPLE);
        put(w);
        op(w, OP_TUPLE2);
        put(w);
        return SDICT_OK;
    }
    op(w, OP_MARK);
    if (ns) {
        if ((st = write_value(w, ns->buffer)) || (st = write_value(w, ns->sizes)) ||
            (st = write_value(w, ns->strides)) || (st = write_value(w, ns->storage_offsets)))
            return st;
    } else if (!t->storage) {
        /* _rebuild_meta_tensor_no_storage(dtype, size, stride, requires_grad) */
        if ((st = write_global(w, "torch", sdict_dtype_name(t->dtype))))
            return st;
        write_int_tuple(w, t->shape, t->ndim);
        write_int_tuple(w, t->stride, t->ndim);
        op(w, requires_grad ? OP_NEWTRUE : OP_NEWFALSE);
    } else {
        bool v3 = !q && sdict_dtype_storage_class(t->dtype) == NULL;
        if ((st = write_storage_pid(w, t->storage, t->dtype)))
            return st;
        write_i64(w, t->storage_offset);
        write_int_tuple(w, t->shape, t->ndim);
        write_int_tuple(w, t->stride, t->ndim);
        if (q && (st = write_qparams(w, q)))
            return st;
        op(w, requires_grad ? OP_NEWTRUE : OP_NEWFALSE);
        if ((st = write_empty_ordered_dict(w)))
            return st;
        if (v3 && (st = write_global(w, "torch", sdict_dtype_name(t->dtype))))
            return st;
        if (!q && (t->is_conj || t->is_neg))
            write_metadata(w, t);
    }
    op(w, OP_TUPLE);
    put(w);
    return SDICT_OK;
}

/* fn(*args): the rebuilt object, memoized. */
static sdict_status write_reduce(pw *w, const sdict_value *v, bool requires_grad) {
    sdict_status st = write_rebuild_fn(w, v);
    if (!st)
        st = write_rebuild_args(w, v, requires_grad);
    if (st)
        return st;
    op(w, OP_REDUCE);
    put(w);
    return SDICT_OK;
}

/*
 A tensor, sparse or nested value, as torch 2.x reduces it: a Parameter through
 _rebuild_parameter(self.data, requires_grad, OrderedDict()) or, with Python attributes,
 _rebuild_parameter_with_state(..., state); another tensor with attributes through
 torch._tensor._rebuild_from_type_v2(fn, torch.Tensor, args, state); otherwise the plain
 reduce. Leaves the object memoized as the last slot.
*/
static sdict_status write_tensorish(pw *w, const sdict_value *v) {
    const sdict_tensor *t = sdict_value_tensor(v);
    const sdict_sparse *sp = sdict_value_sparse(v);
    const sdict_nested *ns = sdict_value_nested(v);
    bool param = t ? t->is_parameter : sp ? sp->is_parameter : ns->is_parameter;
    bool rg = t ? t->requires_grad : sp ? sp->requires_grad : ns->requires_grad;
    const sdict_value *attrs = sdict_tensor_attrs(v);
    sdict_status st;
    if (t && sdict_dtype_size(t->dtype) == 0)
        return sdict__err(w->err, SDICT_E_DTYPE, NULL, -1, "tensor has invalid dtype %d",
                          (int)t->dtype);
    if (t && (t->ndim < 0 || t->ndim > SDICT_MAX_DIMS))
        return sdict__err(w->err, SDICT_E_SHAPE, NULL, -1, "tensor has %d dimensions",
                          (int)t->ndim);
    if (attrs && sdict_dict_len(attrs) == 0)
        attrs = NULL;
    if (param) {
        st = write_global(w, "torch._utils",
                          attrs ? "_rebuild_parameter_with_state" : "_rebuild_parameter");
        if (!st && attrs)
            op(w, OP_MARK);
        if (!st)
            st = write_reduce(w, v, false);
        if (st)
            return st;
        op(w, rg ? OP_NEWTRUE : OP_NEWFALSE);
        if ((st = write_empty_ordered_dict(w)) || (attrs && (st = write_value(w, attrs))))
            return st;
        op(w, attrs ? OP_TUPLE : OP_TUPLE3);
        put(w);
    } else if (attrs) {
        if ((st = write_global(w, "torch._tensor", "_rebuild_from_type_v2")))
            return st;
        op(w, OP_MARK);
        if ((st = write_rebuild_fn(w, v)) || (st = write_global(w, "torch", "Tensor")) ||
            (st = write_rebuild_args(w, v, rg)) || (st = write_value(w, attrs)))
            return st;
        op(w, OP_TUPLE);
        put(w);
    } else {
        return write_reduce(w, v, rg);
    }
    op(w, OP_REDUCE);
    put(w);
    return SDICT_OK;
}

/*==================================================================================================
 MARK: Containers
==================================================================================================*/

/* Items of a list, or of the list a set is reduced to: batch_list_exact (one item -> APPEND;
   otherwise MARK ... APPENDS per 1000, never an empty batch). */
static sdict_status write_list_items(pw *w, const sdict_value *seq) {
    size_t n = sdict_seq_len(seq);
    sdict_status st;
    if (n == 1) {
        if ((st = write_value(w, sdict_seq_item(seq, 0))))
            return st;
        op(w, OP_APPEND);
        return SDICT_OK;
    }
    size_t i = 0;
    while (i < n) {
        op(w, OP_MARK);
        for (size_t b = 0; b < PW_BATCH && i < n; b++, i++)
            if ((st = write_value(w, sdict_seq_item(seq, i))))
                return st;
        op(w, OP_APPENDS);
    }
    return SDICT_OK;
}

/*
 Items of a dict. A plain dict goes through batch_dict_exact: one item -> SETITEM, otherwise
 MARK ... SETITEMS batches that repeat while a batch was full, so 1000 items end with an empty
 "MARK SETITEMS". OrderedDict items come from an iterator (save_reduce -> batch_dict): a final
 batch of one item is a bare SETITEM and no empty batch is written.
*/
static sdict_status write_dict_items(pw *w, const sdict_value *d, bool exact) {
    size_t n = sdict_dict_len(d);
    sdict_status st;
    size_t i = 0;
    if (exact) {
        if (n == 0)
            return SDICT_OK;
        if (n == 1) {
            if ((st = write_value(w, sdict_dict_key(d, 0))) || (st = write_value(w, sdict_dict_val(d, 0))))
                return st;
            op(w, OP_SETITEM);
            return SDICT_OK;
        }
        size_t b;
        do {
            op(w, OP_MARK);
            for (b = 0; b < PW_BATCH && i < n; b++, i++)
                if ((st = write_value(w, sdict_dict_key(d, i))) ||
                    (st = write_value(w, sdict_dict_val(d, i))))
                    return st;
            op(w, OP_SETITEMS);
        } while (b == PW_BATCH);
        return SDICT_OK;
    }
    while (i < n) {
        if (n - i == 1) {
            if ((st = write_value(w, sdict_dict_key(d, i))) || (st = write_value(w, sdict_dict_val(d, i))))
                return st;
            op(w, OP_SETITEM);
            return SDICT_OK;
        }
        op(w, OP_MARK);
        for (size_t b = 0; b < PW_BATCH && i < n; b++, i++)
            if ((st = write_value(w, sdict_dict_key(d, i))) || (st = write_value(w, sdict_dict_val(d, i))))
                return st;
        op(w, OP_SETITEMS);
    }
    return SDICT_OK;
}

/* bytes under protocol 2: _codecs.encode(<the bytes as a latin-1 str>, 'latin1') via REDUCE;
   empty bytes are __builtin__.bytes() (CPython save_bytes). The value is memoized after. */
static sdict_status write_bytes(pw *w, const sdict_value *v) {
    size_t n = 0;
    const uint8_t *p = sdict_bytes_get(v, &n);
    sdict_status st;
    if (n == 0) {
        if ((st = write_global(w, "__builtin__", "bytes")))
            return st;
        op(w, OP_EMPTY_TUPLE);
        op(w, OP_REDUCE);
        return SDICT_OK;
    }
    if ((st = write_global(w, "_codecs", "encode")))
        return st;
    /* Latin-1 decode to UTF-8: bytes >= 0x80 become two bytes. */
    size_t extra = 0;
    for (size_t i = 0; i < n; i++)
        extra += p[i] >> 7;
    if (n > UINT32_MAX - extra)
        return sdict__err(w->err, SDICT_E_INVALID_ARG, NULL, -1,
                          "bytes of %zu bytes do not fit pickle protocol 2", n);
    op(w, OP_BINUNICODE);
    sdict__buf_le32(w->out, (uint32_t)(n + extra));
    for (size_t i = 0; i < n; i++) {
        if (p[i] < 0x80) {
            op(w, p[i]);
        } else {
            op(w, 0xc0 | (p[i] >> 6));
            op(w, 0x80 | (p[i] & 0x3f));
        }
    }
    put(w);
    if ((st = write_const_str(w, &w->memo_latin1, "latin1")))
        return st;
    op(w, OP_TUPLE2);
    put(w);
    op(w, OP_REDUCE);
    return SDICT_OK;
}

/* Memoizes container v (CPython memoize) and records the index in its map slot, looked up
   afresh: writing the items may have grown (rehashed) the map. */
static void put_value(pw *w, const sdict_value *v) {
    int64_t idx = put(w);
    map_find(&w->memo, v)->val = idx;
}

/* torch.device -> (device, (type[, index])); complex -> (complex, (real, imag)); memoized. */
static sdict_status write_object(pw *w, const sdict_value *v) {
    sdict_status st;
    if (sdict_value_kind(v) == SDICT_KIND_DEVICE) {
        int64_t index;
        const char *type = sdict_device_get(v, &index);
        if ((st = write_global(w, "torch", "device")) ||
            (st = write_new_str(w, type, strlen(type), NULL)))
            return st;
        if (index >= 0)
            write_i64(w, index);
        op(w, index >= 0 ? OP_TUPLE2 : OP_TUPLE1);
    } else {
        double re, im;
        sdict_complex_get(v, &re, &im);
        if ((st = write_global(w, "__builtin__", "complex")))
            return st;
        write_float(w, re);
        write_float(w, im);
        op(w, OP_TUPLE2);
    }
    put(w);
    op(w, OP_REDUCE);
    put(w);
    return SDICT_OK;
}

/* module.name(<fresh list or dict of v's items>) by REDUCE: how a set and a Counter reduce;
   the object is memoized after. */
static sdict_status write_rebuilt_from_items(pw *w, const sdict_value *v, const char *module,
                                             const char *name) {
    bool dict = sdict_value_kind(v) == SDICT_KIND_DICT;
    sdict_status st = write_global(w, module, name);
    if (st)
        return st;
    op(w, dict ? OP_EMPTY_DICT : OP_EMPTY_LIST);
    put(w);
    if ((st = dict ? write_dict_items(w, v, true) : write_list_items(w, v)))
        return st;
    op(w, OP_TUPLE1);
    put(w);
    op(w, OP_REDUCE);
    put_value(w, v);
    return SDICT_OK;
}

static sdict_status write_container(pw *w, const sdict_value *v, sdict_kind kind) {
    sdict_status st;
    switch (kind) {
    case SDICT_KIND_LIST:
        op(w, OP_EMPTY_LIST);
        put_value(w, v);
        return write_list_items(w, v);
    case SDICT_KIND_TUPLE: {
        size_t n = sdict_seq_len(v);
        if (n > 3)
            op(w, OP_MARK);
        for (size_t i = 0; i < n; i++)
            if ((st = write_value(w, sdict_seq_item(v, i))))
                return st;
        op(w, n == 1 ? OP_TUPLE1 : n == 2 ? OP_TUPLE2 : n == 3 ? OP_TUPLE3 : OP_TUPLE);
        put_value(w, v);
        return SDICT_OK;
    }
    case SDICT_KIND_SET:
        /* set.__reduce__ -> (set, (list(self),), None) */
        return write_rebuilt_from_items(w, v, "__builtin__", "set");
    case SDICT_KIND_TENSOR:
    case SDICT_KIND_SPARSE:
    case SDICT_KIND_NESTED:
        /* the object is memoized last; record it for later references */
        if ((st = write_tensorish(w, v)))
            return st;
        map_find(&w->memo, v)->val = (int64_t)w->next_memo - 1;
        return SDICT_OK;
    case SDICT_KIND_DICT: {
        const sdict_value *attrs = sdict_dict_attrs(v);
        if (sdict_dict_is_counter(v)) /* Counter.__reduce__ -> (Counter, (dict(self),)) */
            return write_rebuilt_from_items(w, v, "collections", "Counter");
        if (!sdict_dict_is_ordered(v)) {
            if (attrs && sdict_dict_len(attrs))
                return sdict__err(w->err, SDICT_E_INVALID_ARG, NULL, -1,
                                  "a plain dict cannot carry attributes (only an OrderedDict can)");
            op(w, OP_EMPTY_DICT);
            put_value(w, v);
            return write_dict_items(w, v, true);
        }
        /* OrderedDict.__reduce__ -> (OrderedDict, (), state or None, None, iter(items)):
           the object is memoized after REDUCE, items follow, then state + BUILD. */
        if ((st = write_global(w, "collections", "OrderedDict")))
            return st;
        op(w, OP_EMPTY_TUPLE);
        op(w, OP_REDUCE);
        put_value(w, v);
        if ((st = write_dict_items(w, v, false)))
            return st;
        if (attrs && sdict_dict_len(attrs)) {
            if ((st = write_value(w, attrs)))
                return st;
            op(w, OP_BUILD);
        }
        return SDICT_OK;
    }
    default:
        return SDICT_OK;
    }
}

static sdict_status write_value(pw *w, const sdict_value *v) {
    if (w->out->oom)
        return nomem(w);
    sdict_kind kind = sdict_value_kind(v);
    switch (kind) {
    case SDICT_KIND_NONE:
        op(w, OP_NONE);
        return SDICT_OK;
    case SDICT_KIND_BOOL:
        op(w, sdict_bool_get(v) ? OP_NEWTRUE : OP_NEWFALSE);
        return SDICT_OK;
    case SDICT_KIND_INT:
        return write_int(w, v);
    case SDICT_KIND_FLOAT:
        write_float(w, sdict_float_get(v));
        return SDICT_OK;
    case SDICT_KIND_DTYPE: {
        sdict_dtype dt = sdict_dtype_value_get(v);
        if (sdict_dtype_size(dt) == 0)
            return sdict__err(w->err, SDICT_E_DTYPE, NULL, -1, "dtype value is invalid");
        return write_global(w, "torch", sdict_dtype_name(dt));
    }
    case SDICT_KIND_QSCHEME: /* a module-level singleton: GLOBAL torch per_tensor_affine */
        return write_global(w, "torch", sdict_qscheme_name(sdict_qscheme_value_get(v)));
    case SDICT_KIND_LAYOUT:
        return write_layout(w, sdict_layout_value_get(v));
    case SDICT__KIND_STORAGE: {
        /* A bare storage in the tree: only its persistent id (never memoized). */
        sdict_dtype dt = SDICT_UINT8;
        sdict_storage *s = sdict__storage_value_get(v, &dt);
        if (!s)
            return sdict__err(w->err, SDICT_E_INVALID_ARG, NULL, -1, "storage value without storage");
        return write_storage_pid(w, s, dt);
    }
    default:
        break;
    }
    if ((unsigned)kind >= (unsigned)SDICT_KIND_COUNT)
        return sdict__err(w->err, SDICT_E_INVALID_ARG, NULL, -1, "value of unknown kind %d",
                          (int)kind);

    /* Everything below is memoized by identity. */
    pw_slot *slot = map_find(&w->memo, v);
    if (slot) {
        if (slot->open)
            return sdict__err(w->err, SDICT_E_INVALID_ARG, NULL, -1,
                              "the value tree contains a cycle (a %s inside itself)",
                              sdict_kind_name(kind));
        get(w, slot->val);
        return SDICT_OK;
    }
    /* Strings and bytes do not nest: memoize them directly. */
    if (kind == SDICT_KIND_STR || kind == SDICT_KIND_BYTES) {
        sdict_status st;
        if (kind == SDICT_KIND_STR) {
            size_t n = 0;
            const char *s = sdict_str_get(v, &n);
            int64_t idx;
            if ((st = write_new_str(w, s, n, &idx)))
                return st;
            slot = map_insert(&w->memo, v);
            if (!slot)
                return nomem(w);
            slot->val = idx;
            return SDICT_OK;
        }
        st = write_bytes(w, v);
        if (st)
            return st;
        int64_t idx = put(w);
        slot = map_insert(&w->memo, v);
        if (!slot)
            return nomem(w);
        slot->val = idx;
        return SDICT_OK;
    }
    if (kind == SDICT_KIND_DEVICE || kind == SDICT_KIND_COMPLEX) {
        sdict_status st = write_object(w, v);
        if (st)
            return st;
        slot = map_insert(&w->memo, v);
        if (!slot)
            return nomem(w);
        slot->val = (int64_t)w->next_memo - 1;
        return SDICT_OK;
    }

    /* Containers, and tensors (whose Python attributes and parts are values too). */
    if (w->depth >= PW_MAX_DEPTH)
        return sdict__err(w->err, SDICT_E_LIMIT, NULL, -1,
                          "containers nested deeper than %d levels", PW_MAX_DEPTH);
    if (kind == SDICT_KIND_TUPLE && sdict_seq_len(v) == 0) {
        op(w, OP_EMPTY_TUPLE); /* () is a singleton CPython never memoizes */
        return SDICT_OK;
    }
    slot = map_insert(&w->memo, v);
    if (!slot)
        return nomem(w);
    slot->open = true;
    w->depth++;
    sdict_status st = write_container(w, v, kind);
    w->depth--;
    if (st)
        return st;
    /* The map may have grown (rehashed) while writing the items: find the slot again. */
    slot = map_find(&w->memo, v);
    slot->open = false;
    return SDICT_OK;
}

/*==================================================================================================
 MARK: Entry point
==================================================================================================*/

sdict_status sdict__pickle_write(const sdict_value *root, sdict__buf *out,
                                 sdict__saved_storage **storages, size_t *n_storages,
                                 sdict_error *err) {
    if (storages)
        *storages = NULL;
    if (n_storages)
        *n_storages = 0;
    if (!root || !out || !storages || !n_storages)
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "NULL argument to the pickler");
    pw w;
    memset(&w, 0, sizeof w);
    w.out = out;
    w.err = err;
    w.memo_storage = w.memo_cpu = w.memo_latin1 = -1;
    for (int l = 0; l < SDICT_LAYOUT_COUNT; l++)
        w.memo_layout[l] = -1;

    op(&w, OP_PROTO);
    op(&w, 2);
    sdict_status st = write_value(&w, root);
    op(&w, OP_STOP);
    if (!st && out->oom)
        st = nomem(&w);
    map_free(&w.memo);
    map_free(&w.storage_index);
    map_free(&w.data_dtype);
    sdict__free(w.st_key_memo);
    if (st) {
        sdict__free(w.st);
        return st;
    }
    *storages = w.st;
    *n_storages = w.n_st;
    return SDICT_OK;
}
