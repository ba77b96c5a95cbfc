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
   the memo), so a storage object itself is never memoized;
 - objects CPython creates while pickling values that it keeps a single copy of are memoized
   by content: the strs of one character below U+0100 and '' (the latin-1 text of bytes of
   zero or one byte, numpy's byte-order characters) and the bytes of one byte numpy's reducers
   make (a scalar's or array's data, the b'b' of _reconstruct). With the torch 2.x layout,
   strs of the tree of one character below U+0100 (and '') share that memo: under the Python
   (>= 3.12) torch 2.x runs on, every such str is the one object, string literals included.
   Under the Python 3.11 of torch 1.13 a script's literals are not, so with the 1.13 layout
   values of the tree are memoized by identity only: whether two equal strs in a file were
   one object is what the file itself says (the reader keeps BINGETs as shared values).
   torch's storage keys, made with str(int), are fresh objects under both;
 - numpy's built-in dtypes in native byte order are singletons too (memoized per dtype).
 Module names follow protocol 2's fix_imports: builtins.set is pickled as "__builtin__ set".

 Everything written loads with torch.load(weights_only=True) of torch >= 2.6, whose
 unpickler takes only protocol-2 opcodes without LONG4 and a fixed set of globals. Two
 deviations from CPython follow from that: b'' is written as _codecs.encode('', 'latin1')
 instead of __builtin__.bytes() (not allow-listed), and values the unpickler cannot accept at
 all (numpy scalars and arrays, frozensets, ints past 255 bytes) are refused unless the caller
 passes SDICT_SAVE_ALLOW_NOT_WEIGHTS_ONLY. Values keep their Python type (sdict_pytype):
 torch.Size, frozenset, bytearray, Counter and numpy values are pickled as CPython pickles them.

 What torch 2.x added is reduced as torch 2.x reduces it: quantized tensors through
 _rebuild_qtensor, sparse ones through _rebuild_sparse_tensor (a CSR tensor from a torch 1.13
 file through 1.13's _rebuild_sparse_csr_tensor in 1.13's layout), nested ones through
 _rebuild_nested_tensor, the conj/neg bits as the metadata argument, Python attributes through
 _rebuild_parameter_with_state or _rebuild_from_type_v2, devices, complex numbers, qschemes
 and layouts (copyreg's _get_layout, a singleton per layout) as their own reduces. Tensors are
 written like containers (open while written): their attributes may lead back to them.
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

/* One step of the path from the root to the value being written, for messages. */
typedef struct pw_step {
    const sdict_value *key; /* dict key, or NULL for a sequence index / attribute dict */
    size_t index;
} pw_step;

/* A numpy dtype object already written (native-order built-in dtypes are singletons). */
typedef struct pw_npdtype {
    char order, kind;
    uint8_t size;
    int64_t memo;
} pw_npdtype;

typedef struct pw {
    sdict__buf *out;
    sdict_error *err;
    uint32_t flags;        /* sdict_save_opts.flags */
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
    int64_t memo_char[257]; /* made str of one char U+0000..U+00FF, '' at 256 (singletons) */
    int64_t memo_byte[257]; /* made bytes of one byte, b'' at 256 (singletons) */
    pw_npdtype np_dtypes[32];
    size_t n_np_dtypes;
    pw_step *path;         /* steps from the root to the value being written */
    size_t n_path, cap_path;
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
 MARK: Where we are (for messages)
==================================================================================================*/

static sdict_status path_push(pw *w, const sdict_value *key, size_t index) {
    if (w->n_path == w->cap_path) {
        size_t ncap = w->cap_path ? w->cap_path * 2 : 32;
        pw_step *np = sdict__realloc(w->path, ncap * sizeof *np);
        if (!np)
            return nomem(w);
        w->path = np;
        w->cap_path = ncap;
    }
    w->path[w->n_path++] = (pw_step){key, index};
    return SDICT_OK;
}

static void path_pop(pw *w) { w->n_path--; }

/* The dotted path of the value being written, as `statedict ls` spells keys: str keys as they
   are, int keys and sequence indices in decimal, other keys by kind; "" is the root. */
static const char *path_text(const pw *w, char *buf, size_t n) {
    size_t len = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < w->n_path && len + 1 < n; i++) {
        const pw_step *s = &w->path[i];
        int k;
        const char *sep = len ? "." : "";
        if (!s->key) {
            k = snprintf(buf + len, n - len, "%s%zu", sep, s->index);
        } else if (sdict_value_kind(s->key) == SDICT_KIND_STR) {
            size_t sl = 0;
            const char *t = sdict_str_get(s->key, &sl);
            k = snprintf(buf + len, n - len, "%s%.*s", sep, (int)(sl > 64 ? 64 : sl), t);
        } else if (sdict_value_kind(s->key) == SDICT_KIND_INT) {
            char num[48];
            size_t nl = sdict_int_to_string(s->key, num, sizeof num);
            k = snprintf(buf + len, n - len, "%s%s", sep, nl < sizeof num ? num : "<int>");
        } else {
            k = snprintf(buf + len, n - len, "%s<%s key>", sep, sdict_kind_name(sdict_value_kind(s->key)));
        }
        if (k < 0)
            break;
        len += (size_t)k < n - len ? (size_t)k : n - len - 1;
    }
    return buf;
}

/* A value the weights-only unpickler of torch.load (its default since 2.6) cannot load. */
static sdict_status refuse(pw *w, const char *what, const char *why) {
    char where[160];
    path_text(w, where, sizeof where);
    return sdict__err(w->err, SDICT_E_UNSUPPORTED, NULL, -1,
                      "%s%s%s is %s, which torch.load(weights_only=True) refuses (%s); keeping it "
                      "needs SDICT_SAVE_ALLOW_NOT_WEIGHTS_ONLY and weights_only=False to load",
                      where[0] ? "'" : "", where[0] ? where : "the root value",
                      where[0] ? "'" : "", what, why);
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
    } else if (!(w->flags & SDICT_SAVE_ALLOW_NOT_WEIGHTS_ONLY)) {
        char what[64];
        snprintf(what, sizeof what, "an int of %zu bytes", n);
        return refuse(w, what, "it takes LONG4, an opcode it does not implement");
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

/* A str (value or key) Python's unpickler could not decode, so torch.load could not load the
   file: anything but UTF-8 with surrogates allowed (see sdict__utf8_invalid_at). The message
   quotes the text; sdict_error_format escapes it. */
static sdict_status check_str(pw *w, const char *s, size_t n) {
    size_t bad = sdict__utf8_invalid_at((const uint8_t *)s, n);
    if (bad == n)
        return SDICT_OK;
    char where[160];
    path_text(w, where, sizeof where);
    return sdict__err(w->err, SDICT_E_INVALID_ARG, NULL, -1,
                      "str '%.*s'%s at %s%s%s is not UTF-8 (byte 0x%02x at %zu of %zu), which "
                      "torch.load cannot decode; refusing to write it",
                      (int)(n > 48 ? 48 : n), s, n > 48 ? "..." : "", where[0] ? "'" : "",
                      where[0] ? where : "the root", where[0] ? "'" : "",
                      (unsigned)(uint8_t)s[bad], bad, n);
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

/* A str CPython keeps one object for (slot: its code point below 256, or 256 for ''),
   made while pickling: written once, then BINGET. */
static sdict_status write_slot_str(pw *w, int slot, const char *s, size_t n) {
    if (w->memo_char[slot] >= 0) {
        get(w, w->memo_char[slot]);
        return SDICT_OK;
    }
    return write_new_str(w, s, n, &w->memo_char[slot]);
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
    char where[160];
    return sdict__err(w->err, SDICT_E_INVALID_ARG, NULL, -1,
                      "Cannot save multiple tensors or storages that view the same data as "
                      "different types (one storage seen as %s and as %s, the second time at "
                      "'%s')", sdict_dtype_name(first), sdict_dtype_name(second),
                      path_text(w, where, sizeof where));
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

/* torch.Size(size): REDUCE of torch.Size on a one-tuple holding the size tuple (a tuple read
   as a torch.Size is written so by itself). */
static sdict_status write_size(pw *w, const sdict_value *size) {
    if (sdict_value_pytype(size) == SDICT_PYTYPE_TORCH_SIZE)
        return write_value(w, size);
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
    /* a CSR tensor from a torch 1.13 file keeps 1.13's function in 1.13's layout */
    bool legacy = sp && sp->legacy_csr && !(w->flags & SDICT_SAVE_LAYOUT_TORCH2);
    const char *fn = sp ? (legacy ? "_rebuild_sparse_csr_tensor" : "_rebuild_sparse_tensor")
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
        bool three = coo && sp->is_coalesced < 0; /* torch 1.13's COO data: TUPLE3 */
        if ((st = write_layout(w, sp->layout)))
            return st;
        if (!three)
            op(w, OP_MARK);
        if ((st = write_value(w, sp->indices)) ||
            (!coo && (st = write_value(w, sp->plain_indices))) ||
            (st = write_value(w, sp->values)) || (st = write_size(w, sp->size)))
            return st;
        if (coo && sp->is_coalesced >= 0)
            op(w, sp->is_coalesced ? OP_NEWTRUE : OP_NEWFALSE);
        op(w, three ? OP_TUPLE3 : OP_TUPLE);
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
    if (t && (t->ndim < 0 || (t->ndim > 0 && (!t->shape || !t->stride))))
        return sdict__err(w->err, SDICT_E_SHAPE, NULL, -1, "tensor has %d dimensions%s",
                          (int)t->ndim, t->ndim < 0 ? "" : " but no shape or stride");
    if (t && (t->dtype == SDICT_FLOAT4_E2M1FN || t->dtype == SDICT_FLOAT6_E2M3FN ||
              t->dtype == SDICT_FLOAT6_E3M2FN)) {
        /* safetensors' sub-byte floats: no torch has a dtype to rebuild them with */
        char where[160];
        path_text(w, where, sizeof where);
        return sdict__err(w->err, SDICT_E_DTYPE, NULL, -1,
                          "%s%s%s is a %s tensor (a safetensors sub-byte float), which no torch "
                          "dtype can hold: it can only be written to a safetensors file",
                          where[0] ? "'" : "", where[0] ? where : "the root value",
                          where[0] ? "'" : "", sdict_dtype_name(t->dtype));
    }
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
 MARK: bytes
==================================================================================================*/

/* _codecs.encode(<the bytes as a latin-1 str>, 'latin1') via REDUCE, the form protocol 2 gives
   bytes; the caller memoizes the result. The text of zero or one byte is one of CPython's
   single-character strs. */
static sdict_status write_encode(pw *w, const uint8_t *p, size_t n) {
    sdict_status st = write_global(w, "_codecs", "encode");
    if (st)
        return st;
    if (n <= 1) {
        char text[2];
        size_t tl = 0;
        if (n == 1) { /* latin-1 to UTF-8 */
            if (p[0] < 0x80) {
                text[tl++] = (char)p[0];
            } else {
                text[tl++] = (char)(0xc0 | (p[0] >> 6));
                text[tl++] = (char)(0x80 | (p[0] & 0x3f));
            }
        }
        if ((st = write_slot_str(w, n ? p[0] : 256, text, tl)))
            return st;
    } else {
        size_t extra = 0; /* bytes >= 0x80 become two bytes of UTF-8 */
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
    }
    if ((st = write_const_str(w, &w->memo_latin1, "latin1")))
        return st;
    op(w, OP_TUPLE2);
    put(w);
    op(w, OP_REDUCE);
    return SDICT_OK;
}

/*
 A bytes object, memoized; *memo receives its index. made: bytes numpy's reducers make, of
 which those of zero or one byte are CPython singletons, memoized by content; CPython pickles
 their b'' as __builtin__.bytes(). A b'' of the tree is written as _codecs.encode('', 'latin1')
 instead: torch's weights-only unpickler refuses __builtin__.bytes.
*/
static sdict_status write_bytes_object(pw *w, const uint8_t *p, size_t n, bool made,
                                       int64_t *memo) {
    int slot = !made ? -1 : n == 0 ? 256 : n == 1 ? p[0] : -1;
    if (slot >= 0 && w->memo_byte[slot] >= 0) {
        get(w, w->memo_byte[slot]);
        *memo = w->memo_byte[slot];
        return SDICT_OK;
    }
    sdict_status st;
    if (n == 0 && made) {
        if ((st = write_global(w, "__builtin__", "bytes")))
            return st;
        op(w, OP_EMPTY_TUPLE);
        op(w, OP_REDUCE);
    } else if ((st = write_encode(w, p, n))) {
        return st;
    }
    *memo = put(w);
    if (slot >= 0)
        w->memo_byte[slot] = *memo;
    return SDICT_OK;
}

/* bytearray(<bytes>) (bytearray() when empty); the bytes made for it are a fresh object. */
static sdict_status write_bytearray(pw *w, const uint8_t *p, size_t n) {
    sdict_status st = write_global(w, "__builtin__", "bytearray");
    if (st)
        return st;
    if (n == 0) {
        op(w, OP_EMPTY_TUPLE);
    } else {
        if ((st = write_encode(w, p, n)))
            return st;
        put(w);
        op(w, OP_TUPLE1);
        put(w);
    }
    op(w, OP_REDUCE);
    return SDICT_OK;
}

/*==================================================================================================
 MARK: numpy
==================================================================================================*/

static char native_order(void) {
    const uint16_t one = 1;
    uint8_t b;
    memcpy(&b, &one, 1);
    return b ? '<' : '>';
}

/* numpy's scalar type name for messages ("float32", "bool_"). */
static const char *np_type_name(char kind, uint8_t size, char *buf, size_t n) {
    const char *base = kind == 'f' ? "float" : kind == 'i' ? "int" : kind == 'u' ? "uint"
                       : kind == 'c' ? "complex" : NULL;
    if (kind == 'b')
        snprintf(buf, n, "bool_");
    else if (base)
        snprintf(buf, n, "%s%u", base, 8u * size);
    else
        snprintf(buf, n, "?");
    return buf;
}

/* The sdict dtype of a numpy dtype, SDICT_DTYPE_COUNT when statedict has none. */
static sdict_dtype np_sdict_dtype(char kind, uint8_t size) {
    switch (kind) {
    case 'f': return size == 2 ? SDICT_FLOAT16 : size == 4 ? SDICT_FLOAT32 : size == 8 ? SDICT_FLOAT64 : SDICT_DTYPE_COUNT;
    case 'i': return size == 1 ? SDICT_INT8 : size == 2 ? SDICT_INT16 : size == 4 ? SDICT_INT32 : size == 8 ? SDICT_INT64 : SDICT_DTYPE_COUNT;
    case 'u': return size == 1 ? SDICT_UINT8 : size == 2 ? SDICT_UINT16 : size == 4 ? SDICT_UINT32 : size == 8 ? SDICT_UINT64 : SDICT_DTYPE_COUNT;
    case 'b': return size == 1 ? SDICT_BOOL : SDICT_DTYPE_COUNT;
    case 'c': return size == 8 ? SDICT_COMPLEX64 : size == 16 ? SDICT_COMPLEX128 : SDICT_DTYPE_COUNT;
    default: return SDICT_DTYPE_COUNT;
    }
}

/*
 A numpy dtype object: numpy.dtype(('f4', False, True)) then BUILD with its state
 (3, '<', None, None, None, -1, -1, 0). numpy's built-in dtypes in native order ('|' for
 one-byte types) are singletons, written once per pickle; others are fresh objects.
*/
static sdict_status write_np_dtype(pw *w, char order, char kind, uint8_t size) {
    bool singleton = order == '|' || order == native_order();
    if (singleton) {
        for (size_t i = 0; i < w->n_np_dtypes; i++) {
            const pw_npdtype *d = &w->np_dtypes[i];
            if (d->order == order && d->kind == kind && d->size == size) {
                get(w, d->memo);
                return SDICT_OK;
            }
        }
    }
    sdict_status st = write_global(w, "numpy", "dtype");
    if (st)
        return st;
    char type[8];
    int tl = snprintf(type, sizeof type, "%c%u", kind, (unsigned)size);
    if ((st = write_new_str(w, type, (size_t)tl, NULL)))
        return st;
    op(w, OP_NEWFALSE);
    op(w, OP_NEWTRUE);
    op(w, OP_TUPLE3);
    put(w);
    op(w, OP_REDUCE);
    int64_t idx = put(w);
    if (singleton && w->n_np_dtypes < sizeof w->np_dtypes / sizeof w->np_dtypes[0])
        w->np_dtypes[w->n_np_dtypes++] = (pw_npdtype){order, kind, size, idx};
    op(w, OP_MARK);
    write_i64(w, 3);
    char oc[1] = {order};
    if ((st = write_slot_str(w, (uint8_t)order, oc, 1)))
        return st;
    op(w, OP_NONE);
    op(w, OP_NONE);
    op(w, OP_NONE);
    write_i64(w, -1);
    write_i64(w, -1);
    write_i64(w, 0);
    op(w, OP_TUPLE);
    put(w);
    op(w, OP_BUILD);
    return SDICT_OK;
}

static sdict_status np_unwritable(pw *w, const char *what) {
    char where[160];
    path_text(w, where, sizeof where);
    return sdict__err(w->err, SDICT_E_UNSUPPORTED, NULL, -1,
                      "%s%s%s: %s cannot be written back as numpy", where[0] ? "'" : "",
                      where[0] ? where : "the root value", where[0] ? "'" : "", what);
}

/* numpy.core.multiarray.scalar(dtype, <the element's bytes>), leaving the scalar memoized. */
static sdict_status write_np_scalar(pw *w, const sdict_value *v, char order, char kind,
                                    uint8_t size, bool underscore) {
    uint8_t raw[8] = {0};
    bool ok = size <= 8 && np_sdict_dtype(kind, size) != SDICT_DTYPE_COUNT;
    sdict_kind k = sdict_value_kind(v);
    if (ok && kind == 'b' && k == SDICT_KIND_BOOL) {
        raw[0] = sdict_bool_get(v) ? 1 : 0;
    } else if (ok && kind == 'f' && k == SDICT_KIND_FLOAT) {
        double d = sdict_float_get(v);
        if (size == 8) {
            memcpy(raw, &d, 8);
        } else if (size == 4) {
            float f = (float)d;
            ok = (double)f == d || d != d;
            memcpy(raw, &f, 4);
        } else {
            uint16_t h = sdict__half_from_double(d);
            memcpy(raw, &h, 2);
        }
    } else if (ok && (kind == 'i' || kind == 'u') && k == SDICT_KIND_INT) {
        /* two's complement, little-endian, sign- or zero-extended to the element size */
        uint8_t tmp[16];
        size_t n = 0;
        const uint8_t *le = sdict__int_le_bytes(v, tmp, &n);
        bool neg = le && n && (le[n - 1] & 0x80);
        ok = le && (kind == 'i' ? n <= size : !neg && (n <= size || (n == size + 1u && le[size] == 0)));
        for (size_t i = 0; ok && i < size; i++)
            raw[i] = i < n ? le[i] : neg ? 0xff : 0;
        if (native_order() == '>') /* host order, as numpy keeps it; swapped below if need be */
            for (size_t i = 0; i < size / 2u; i++) {
                uint8_t t = raw[i];
                raw[i] = raw[size - 1 - i];
                raw[size - 1 - i] = t;
            }
    } else {
        ok = false;
    }
    if (!ok) {
        char name[16], what[64];
        snprintf(what, sizeof what, "a %s value as numpy.%s", sdict_kind_name(k),
                 np_type_name(kind, size, name, sizeof name));
        return np_unwritable(w, what);
    }
    if (size > 1 && order != '|' && order != native_order())
        sdict__byteswap(raw, 1, size);
    sdict_status st = write_global(w, underscore ? "numpy._core.multiarray" : "numpy.core.multiarray",
                                   "scalar");
    int64_t idx;
    if (!st)
        st = write_np_dtype(w, order, kind, size);
    if (!st)
        st = write_bytes_object(w, raw, size, true, &idx);
    if (st)
        return st;
    op(w, OP_TUPLE2);
    put(w);
    op(w, OP_REDUCE);
    put(w);
    return SDICT_OK;
}

/*
 numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), b'b') then BUILD with the state
 (1, shape, dtype, is_fortran, <the elements' bytes>), as ndarray.__reduce__ gives it: the
 elements in Fortran order when the array is Fortran- but not C-contiguous, else in C order,
 in the dtype's byte order. Leaves the array memoized (the index of its REDUCE) in *memo.
*/
static sdict_status write_np_array(pw *w, const sdict_tensor *t, char order, char kind,
                                   uint8_t size, bool underscore, int64_t *memo) {
    if (!t->storage || np_sdict_dtype(kind, size) != t->dtype) {
        char name[16], what[96];
        snprintf(what, sizeof what, "a %s tensor as a numpy.ndarray of %s",
                 sdict_dtype_name(t->dtype), np_type_name(kind, size, name, sizeof name));
        return np_unwritable(w, what);
    }
    /* Fortran order: the reversed view is C-contiguous */
    int64_t *dims = sdict__malloc(2 * (size_t)t->ndim * sizeof *dims + 1);
    size_t n = sdict_tensor_nbytes(t);
    uint8_t *data = sdict__malloc(n ? n : 1);
    if (!dims || !data) {
        sdict__free(dims);
        sdict__free(data);
        return nomem(w);
    }
    sdict_tensor rev = *t;
    for (int32_t i = 0; i < t->ndim; i++) {
        dims[i] = t->shape[t->ndim - 1 - i];
        dims[t->ndim + i] = t->stride[t->ndim - 1 - i];
    }
    rev.shape = dims;
    rev.stride = dims + t->ndim;
    bool fortran = !sdict_tensor_is_contiguous(t) && sdict_tensor_is_contiguous(&rev);
    sdict_status st = sdict_tensor_copy_to(fortran ? &rev : t, t->dtype, data, n, w->err);
    sdict__free(dims);
    if (!st && size > 1 && order != '|' && order != native_order()) {
        if (kind == 'c')
            sdict__byteswap(data, n / (size / 2u), size / 2u);
        else
            sdict__byteswap(data, n / size, size);
    }
    const char *mod = underscore ? "numpy._core.multiarray" : "numpy.core.multiarray";
    if (!st)
        st = write_global(w, mod, "_reconstruct");
    if (!st)
        st = write_global(w, "numpy", "ndarray");
    int64_t b_memo;
    if (!st) {
        write_i64(w, 0);
        op(w, OP_TUPLE1);
        put(w);
        st = write_bytes_object(w, (const uint8_t *)"b", 1, true, &b_memo);
    }
    if (!st) {
        op(w, OP_TUPLE3);
        put(w);
        op(w, OP_REDUCE);
        *memo = put(w);
        op(w, OP_MARK);
        write_i64(w, 1);
        write_int_tuple(w, t->shape, t->ndim);
        st = write_np_dtype(w, order, kind, size);
    }
    if (!st) {
        op(w, fortran ? OP_NEWTRUE : OP_NEWFALSE);
        st = write_bytes_object(w, data, n, true, &b_memo);
    }
    sdict__free(data);
    if (st)
        return st;
    op(w, OP_TUPLE);
    put(w);
    op(w, OP_BUILD);
    return SDICT_OK;
}

/*==================================================================================================
 MARK: Containers
==================================================================================================*/

/* A child of the container being written, with its place on the path for messages. */
static sdict_status write_child(pw *w, const sdict_value *key, size_t index, const sdict_value *v) {
    sdict_status st = path_push(w, key, index);
    if (st)
        return st;
    st = write_value(w, v);
    path_pop(w);
    return st;
}

/* Items of a list, or of the list a set is reduced to: batch_list_exact (one item -> APPEND;
   otherwise MARK ... APPENDS per 1000, never an empty batch). */
static sdict_status write_list_items(pw *w, const sdict_value *seq) {
    size_t n = sdict_seq_len(seq);
    sdict_status st;
    if (n == 1) {
        if ((st = write_child(w, NULL, 0, sdict_seq_item(seq, 0))))
            return st;
        op(w, OP_APPEND);
        return SDICT_OK;
    }
    size_t i = 0;
    while (i < n) {
        op(w, OP_MARK);
        for (size_t b = 0; b < PW_BATCH && i < n; b++, i++)
            if ((st = write_child(w, NULL, i, sdict_seq_item(seq, i))))
                return st;
        op(w, OP_APPENDS);
    }
    return SDICT_OK;
}

/* Key and value of dict item i; a key's own place on the path is its dict's. */
static sdict_status write_item(pw *w, const sdict_value *d, size_t i) {
    const sdict_value *key = sdict_dict_key(d, i);
    sdict_status st = write_value(w, key);
    if (!st)
        st = write_child(w, key, i, sdict_dict_val(d, i));
    return st;
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
            if ((st = write_item(w, d, 0)))
                return st;
            op(w, OP_SETITEM);
            return SDICT_OK;
        }
        size_t b;
        do {
            op(w, OP_MARK);
            for (b = 0; b < PW_BATCH && i < n; b++, i++)
                if ((st = write_item(w, d, i)))
                    return st;
            op(w, OP_SETITEMS);
        } while (b == PW_BATCH);
        return SDICT_OK;
    }
    while (i < n) {
        if (n - i == 1) {
            if ((st = write_item(w, d, i)))
                return st;
            op(w, OP_SETITEM);
            return SDICT_OK;
        }
        op(w, OP_MARK);
        for (size_t b = 0; b < PW_BATCH && i < n; b++, i++)
            if ((st = write_item(w, d, i)))
                return st;
        op(w, OP_SETITEMS);
    }
    return SDICT_OK;
}

/* Memoizes container v (CPython memoize) and records the index in its map slot, looked up
   afresh: writing the items may have grown (rehashed) the map. */
static void put_value(pw *w, const sdict_value *v) {
    int64_t idx = put(w);
    map_find(&w->memo, v)->val = idx;
}

/* module.name(<fresh list or dict of v's items>) by REDUCE: how a set, a frozenset and a
   Counter reduce; the object is memoized after. */
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

/* torch.device -> (device, (type[, index])); complex -> (complex, (real, imag)); the object
   is memoized last. */
static sdict_status write_reduced_scalar(pw *w, const sdict_value *v) {
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

static sdict_status write_container(pw *w, const sdict_value *v, sdict_kind kind) {
    sdict_status st;
    sdict_pytype pt = sdict_value_pytype(v);
    switch (kind) {
    case SDICT_KIND_LIST:
        op(w, OP_EMPTY_LIST);
        put_value(w, v);
        return write_list_items(w, v);
    case SDICT_KIND_TUPLE: {
        size_t n = sdict_seq_len(v);
        if (pt == SDICT_PYTYPE_TORCH_SIZE) {
            /* torch.Size.__reduce__ -> (torch.Size, (tuple(self),)): a fresh inner tuple */
            for (size_t i = 0; i < n; i++)
                if (sdict_value_kind(sdict_seq_item(v, i)) != SDICT_KIND_INT)
                    return sdict__err(w->err, SDICT_E_INVALID_ARG, NULL, -1,
                                      "torch.Size item %zu is %s, not an int", i,
                                      sdict_kind_name(sdict_value_kind(sdict_seq_item(v, i))));
            if ((st = write_global(w, "torch", "Size")))
                return st;
        }
        if (n > 3)
            op(w, OP_MARK);
        for (size_t i = 0; i < n; i++)
            if ((st = write_child(w, NULL, i, sdict_seq_item(v, i))))
                return st;
        if (n == 0)
            op(w, OP_EMPTY_TUPLE);
        else
            op(w, n == 1 ? OP_TUPLE1 : n == 2 ? OP_TUPLE2 : n == 3 ? OP_TUPLE3 : OP_TUPLE);
        if (pt == SDICT_PYTYPE_TORCH_SIZE) {
            if (n)
                put(w);
            op(w, OP_TUPLE1);
            put(w);
            op(w, OP_REDUCE);
        }
        put_value(w, v);
        return SDICT_OK;
    }
    case SDICT_KIND_SET:
        /* set.__reduce__ -> (set, (list(self),), None); frozenset alike */
        return write_rebuilt_from_items(w, v, "__builtin__",
                                        pt == SDICT_PYTYPE_FROZENSET ? "frozenset" : "set");
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
        if (pt == SDICT_PYTYPE_COUNTER) /* Counter.__reduce__ -> (Counter, (dict(self),)) */
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

/*==================================================================================================
 MARK: Values
==================================================================================================*/

/* Refuses what torch's weights-only unpickler cannot load, unless the caller allows it. */
static sdict_status check_weights_only(pw *w, const sdict_value *v, sdict_pytype pt) {
    if (w->flags & SDICT_SAVE_ALLOW_NOT_WEIGHTS_ONLY)
        return SDICT_OK;
    char order, kind, what[80], name[16];
    uint8_t size;
    bool us;
    if (pt == SDICT_PYTYPE_FROZENSET)
        return refuse(w, "a frozenset", "builtins.frozenset is not an allowed global");
    if (!sdict__value_numpy(v, &order, &kind, &size, &us))
        return SDICT_OK;
    if (pt == SDICT_PYTYPE_NUMPY_SCALAR)
        snprintf(what, sizeof what, "a numpy.%s scalar", np_type_name(kind, size, name, sizeof name));
    else
        snprintf(what, sizeof what, "a numpy.ndarray of %s",
                 np_type_name(kind, size, name, sizeof name));
    return refuse(w, what, "numpy's globals are not allowed by default");
}

/* Values CPython memoizes by identity (strs, bytes, tensors, numpy scalars, containers). */
static sdict_status write_object(pw *w, const sdict_value *v, sdict_kind kind, sdict_pytype pt) {
    size_t n = 0;
    sdict_status st;
    if (kind == SDICT_KIND_STR && (w->flags & SDICT_SAVE_LAYOUT_TORCH2)) {
        const char *s = sdict_str_get(v, &n);
        const uint8_t *u = (const uint8_t *)s;
        int cp = n == 0                                   ? 256
                 : n == 1 && u[0] < 0x80                  ? u[0]
                 : n == 2 && (u[0] == 0xC2 || u[0] == 0xC3) && (u[1] & 0xC0) == 0x80
                     ? ((u[0] & 0x1F) << 6) | (u[1] & 0x3F)
                     : -1;
        if (cp >= 0)
            return write_slot_str(w, cp, s, n);
    }
    pw_slot *slot = map_find(&w->memo, v);
    if (slot) {
        if (slot->open)
            return sdict__err(w->err, SDICT_E_INVALID_ARG, NULL, -1,
                              "the value tree contains a cycle (a %s inside itself)",
                              sdict_kind_name(kind));
        get(w, slot->val);
        return SDICT_OK;
    }
    if ((st = check_weights_only(w, v, pt)))
        return st;

    /* Leaves: written, then the index of the object they made is recorded. Tensors (but numpy
       arrays) are written as containers: their Python attributes and parts are values that
       may lead back to them. */
    bool tensorish = (kind == SDICT_KIND_TENSOR && pt != SDICT_PYTYPE_NUMPY_ARRAY) ||
                     kind == SDICT_KIND_SPARSE || kind == SDICT_KIND_NESTED;
    if (kind != SDICT_KIND_LIST && kind != SDICT_KIND_TUPLE && kind != SDICT_KIND_SET &&
        kind != SDICT_KIND_DICT && !tensorish) {
        int64_t idx = -1;
        char order = 0, npk = 0;
        uint8_t size = 0;
        bool us = false;
        bool np = sdict__value_numpy(v, &order, &npk, &size, &us);
        if (kind == SDICT_KIND_STR) {
            const char *s = sdict_str_get(v, &n);
            st = check_str(w, s, n);
            if (!st)
                st = write_new_str(w, s, n, &idx);
        } else if (kind == SDICT_KIND_BYTES) {
            const uint8_t *p = sdict_bytes_get(v, &n);
            if (pt == SDICT_PYTYPE_BYTEARRAY) {
                if (!(st = write_bytearray(w, p, n)))
                    idx = put(w);
            } else {
                st = write_bytes_object(w, p, n, false, &idx);
            }
        } else if (kind == SDICT_KIND_TENSOR && np && pt == SDICT_PYTYPE_NUMPY_ARRAY) {
            st = write_np_array(w, sdict_value_tensor(v), order, npk, size, us, &idx);
        } else if (kind == SDICT_KIND_DEVICE || kind == SDICT_KIND_COMPLEX) {
            if (!(st = write_reduced_scalar(w, v)))
                idx = (int64_t)w->next_memo - 1;
        } else if (np && pt == SDICT_PYTYPE_NUMPY_SCALAR) {
            if (!(st = write_np_scalar(w, v, order, npk, size, us)))
                idx = (int64_t)w->next_memo - 1;
        } else {
            return sdict__err(w->err, SDICT_E_INVALID_ARG, NULL, -1, "a %s value cannot be pickled",
                              sdict_kind_name(kind));
        }
        if (st)
            return st;
        slot = map_insert(&w->memo, v);
        if (!slot)
            return nomem(w);
        slot->val = idx;
        return SDICT_OK;
    }

    /* Containers. */
    if (w->depth >= PW_MAX_DEPTH)
        return sdict__err(w->err, SDICT_E_LIMIT, NULL, -1,
                          "containers nested deeper than %d levels", PW_MAX_DEPTH);
    if (kind == SDICT_KIND_TUPLE && sdict_seq_len(v) == 0 && pt != SDICT_PYTYPE_TORCH_SIZE) {
        op(w, OP_EMPTY_TUPLE); /* () is a singleton CPython never memoizes */
        return SDICT_OK;
    }
    slot = map_insert(&w->memo, v);
    if (!slot)
        return nomem(w);
    slot->open = true;
    w->depth++;
    st = write_container(w, v, kind);
    w->depth--;
    if (st)
        return st;
    /* The map may have grown (rehashed) while writing the items: find the slot again. */
    slot = map_find(&w->memo, v);
    slot->open = false;
    return SDICT_OK;
}

static sdict_status write_value(pw *w, const sdict_value *v) {
    if (w->out->oom)
        return nomem(w);
    sdict_kind kind = sdict_value_kind(v);
    sdict_pytype pt = sdict_value_pytype(v);
    if (pt == SDICT_PYTYPE_NUMPY_SCALAR)
        return write_object(w, v, kind, pt); /* a numpy scalar is an object */
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
        if (dt == SDICT_FLOAT4_E2M1FN || dt == SDICT_FLOAT6_E2M3FN || dt == SDICT_FLOAT6_E3M2FN)
            return sdict__err(w->err, SDICT_E_DTYPE, NULL, -1,
                              "dtype value %s has no torch dtype (a safetensors sub-byte float)",
                              sdict_dtype_name(dt));
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
    return write_object(w, v, kind, pt);
}

/*==================================================================================================
 MARK: Entry point
==================================================================================================*/

sdict_status sdict__pickle_write(const sdict_value *root, uint32_t flags, sdict__buf *out,
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
    w.flags = flags;
    w.memo_storage = w.memo_cpu = w.memo_latin1 = -1;
    for (size_t i = 0; i < 257; i++)
        w.memo_char[i] = w.memo_byte[i] = -1;
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
    sdict__free(w.path);
    if (st) {
        sdict__free(w.st);
        return st;
    }
    *storages = w.st;
    *n_storages = w.n_st;
    return SDICT_OK;
}
