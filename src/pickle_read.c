/*
 pickle_read.c - the pickle machine: every opcode of protocols 0-5, an exact allow-list of
 globals, and the torch rebuild functions. It never imports, resolves or calls anything: a
 GLOBAL either names an entry of a fixed table or is refused.

 Representation. The stack and the memo hold sdict_value pointers only. Things that are not
 data in our tree (allowed callables such as torch._utils._rebuild_tensor_v2, refused globals
 kept as inert placeholders in scan mode, numpy dtype/array objects under construction) are
 str values "module.name" registered in a side table (`tags`, keyed by the value's address),
 so they survive MARK/TUPLE/memo round trips and still cannot be mistaken for data: lists,
 dicts and sets refuse them, and so does STOP. Under SDICT_LOAD_INERT (u->inert, also on in
 scans) the placeholder of a refused global is a class reference, an object value tagged
 G_REFUSED: it is data (containers and STOP accept it), and calling or building it makes an
 inert object (untagged, data) instead of failing. Nothing is looked up by its name. Storage
 classes, legacy tensor types and torch dtypes become dtype values (load.c's persistent_load
 reads the storage class from the id tuple that way).

 Robustness. Nothing recurses on input: the machine is a loop, and the final nesting check is
 an explicit-stack walk memoised per container (a shared subtree is visited once, a cycle is
 detected). Every declared length is checked against the bytes remaining and max_str_bytes
 before anything is allocated. The memo is a dense array plus a hash for far indices, so
 LONG_BINPUT 4e9 costs one slot. Errors carry the opcode's byte offset and its pickletools name.
*/
#define _POSIX_C_SOURCE 200809L /* newlocale, uselocale */
#include "internal.h"
#include "compat_pickle.h"

#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*==================================================================================================
 MARK: Opcodes
==================================================================================================*/

enum {
    OP_MARK = '(', OP_STOP = '.', OP_POP = '0', OP_POP_MARK = '1', OP_DUP = '2', OP_FLOAT = 'F',
    OP_INT = 'I', OP_BININT = 'J', OP_BININT1 = 'K', OP_LONG = 'L', OP_BININT2 = 'M',
    OP_NONE = 'N', OP_PERSID = 'P', OP_BINPERSID = 'Q', OP_REDUCE = 'R', OP_STRING = 'S',
    OP_BINSTRING = 'T', OP_SHORT_BINSTRING = 'U', OP_UNICODE = 'V', OP_BINUNICODE = 'X',
    OP_APPEND = 'a', OP_BUILD = 'b', OP_GLOBAL = 'c', OP_DICT = 'd', OP_EMPTY_DICT = '}',
    OP_APPENDS = 'e', OP_GET = 'g', OP_BINGET = 'h', OP_INST = 'i', OP_LONG_BINGET = 'j',
    OP_LIST = 'l', OP_EMPTY_LIST = ']', OP_OBJ = 'o', OP_PUT = 'p', OP_BINPUT = 'q',
    OP_LONG_BINPUT = 'r', OP_SETITEM = 's', OP_TUPLE = 't', OP_EMPTY_TUPLE = ')',
    OP_SETITEMS = 'u', OP_BINFLOAT = 'G', OP_PROTO = 0x80, OP_NEWOBJ = 0x81, OP_EXT1 = 0x82,
    OP_EXT2 = 0x83, OP_EXT4 = 0x84, OP_TUPLE1 = 0x85, OP_TUPLE2 = 0x86, OP_TUPLE3 = 0x87,
    OP_NEWTRUE = 0x88, OP_NEWFALSE = 0x89, OP_LONG1 = 0x8a, OP_LONG4 = 0x8b, OP_BINBYTES = 'B',
    OP_SHORT_BINBYTES = 'C', OP_SHORT_BINUNICODE = 0x8c, OP_BINUNICODE8 = 0x8d,
    OP_BINBYTES8 = 0x8e, OP_EMPTY_SET = 0x8f, OP_ADDITEMS = 0x90, OP_FROZENSET = 0x91,
    OP_NEWOBJ_EX = 0x92, OP_STACK_GLOBAL = 0x93, OP_MEMOIZE = 0x94, OP_FRAME = 0x95,
    OP_BYTEARRAY8 = 0x96, OP_NEXT_BUFFER = 0x97, OP_READONLY_BUFFER = 0x98,
};

/* Names as pickletools spells them, for messages. */
static const char *op_name(int op) {
    switch (op) {
    case OP_MARK: return "MARK";
    case OP_STOP: return "STOP";
    case OP_POP: return "POP";
    case OP_POP_MARK: return "POP_MARK";
    case OP_DUP: return "DUP";
    case OP_FLOAT: return "FLOAT";
    case OP_INT: return "INT";
    case OP_BININT: return "BININT";
    case OP_BININT1: return "BININT1";
    case OP_LONG: return "LONG";
    case OP_BININT2: return "BININT2";
    case OP_NONE: return "NONE";
    case OP_PERSID: return "PERSID";
    case OP_BINPERSID: return "BINPERSID";
    case OP_REDUCE: return "REDUCE";
    case OP_STRING: return "STRING";
    case OP_BINSTRING: return "BINSTRING";
    case OP_SHORT_BINSTRING: return "SHORT_BINSTRING";
    case OP_UNICODE: return "UNICODE";
    case OP_BINUNICODE: return "BINUNICODE";
    case OP_APPEND: return "APPEND";
    case OP_BUILD: return "BUILD";
    case OP_GLOBAL: return "GLOBAL";
    case OP_DICT: return "DICT";
    case OP_EMPTY_DICT: return "EMPTY_DICT";
    case OP_APPENDS: return "APPENDS";
    case OP_GET: return "GET";
    case OP_BINGET: return "BINGET";
    case OP_INST: return "INST";
    case OP_LONG_BINGET: return "LONG_BINGET";
    case OP_LIST: return "LIST";
    case OP_EMPTY_LIST: return "EMPTY_LIST";
    case OP_OBJ: return "OBJ";
    case OP_PUT: return "PUT";
    case OP_BINPUT: return "BINPUT";
    case OP_LONG_BINPUT: return "LONG_BINPUT";
    case OP_SETITEM: return "SETITEM";
    case OP_TUPLE: return "TUPLE";
    case OP_EMPTY_TUPLE: return "EMPTY_TUPLE";
    case OP_SETITEMS: return "SETITEMS";
    case OP_BINFLOAT: return "BINFLOAT";
    case OP_PROTO: return "PROTO";
    case OP_NEWOBJ: return "NEWOBJ";
    case OP_EXT1: return "EXT1";
    case OP_EXT2: return "EXT2";
    case OP_EXT4: return "EXT4";
    case OP_TUPLE1: return "TUPLE1";
    case OP_TUPLE2: return "TUPLE2";
    case OP_TUPLE3: return "TUPLE3";
    case OP_NEWTRUE: return "NEWTRUE";
    case OP_NEWFALSE: return "NEWFALSE";
    case OP_LONG1: return "LONG1";
    case OP_LONG4: return "LONG4";
    case OP_BINBYTES: return "BINBYTES";
    case OP_SHORT_BINBYTES: return "SHORT_BINBYTES";
    case OP_SHORT_BINUNICODE: return "SHORT_BINUNICODE";
    case OP_BINUNICODE8: return "BINUNICODE8";
    case OP_BINBYTES8: return "BINBYTES8";
    case OP_EMPTY_SET: return "EMPTY_SET";
    case OP_ADDITEMS: return "ADDITEMS";
    case OP_FROZENSET: return "FROZENSET";
    case OP_NEWOBJ_EX: return "NEWOBJ_EX";
    case OP_STACK_GLOBAL: return "STACK_GLOBAL";
    case OP_MEMOIZE: return "MEMOIZE";
    case OP_FRAME: return "FRAME";
    case OP_BYTEARRAY8: return "BYTEARRAY8";
    case OP_NEXT_BUFFER: return "NEXT_BUFFER";
    case OP_READONLY_BUFFER: return "READONLY_BUFFER";
    default: return "?";
    }
}

/*==================================================================================================
 MARK: Tags (what a non-data value stands for)
==================================================================================================*/

typedef enum gkind {
    G_REFUSED = 1,     /* refused global kept as a placeholder (scan mode; under inert a class
                          reference object, which is data) */
    G_ODICT,           /* collections.OrderedDict */
    G_RT1,             /* torch._utils._rebuild_tensor */
    G_RT2,             /* torch._utils._rebuild_tensor_v2 */
    G_RT3,             /* torch._utils._rebuild_tensor_v3 */
    G_RP,              /* torch._utils._rebuild_parameter */
    G_RPS,             /* torch._utils._rebuild_parameter_with_state */
    G_RMETA,           /* torch._utils._rebuild_meta_tensor_no_storage */
    G_SIZE,            /* torch.Size */
    G_SET,             /* builtins.set / frozenset */
    G_BYTEARRAY,       /* builtins.bytearray */
    G_BYTES,           /* builtins.bytes (protocol 2 pickles b'' as bytes()) */
    G_ENCODE,          /* _codecs.encode */
    G_NP_SCALAR,       /* numpy.core.multiarray.scalar */
    G_NP_DTYPE_CLS,    /* numpy.dtype */
    G_NP_RECONSTRUCT,  /* numpy.core.multiarray._reconstruct */
    G_NP_NDARRAY_CLS,  /* numpy.ndarray */
    G_NP_DTYPE,        /* a numpy dtype object (REDUCE of numpy.dtype), BUILD sets byte order */
    G_NP_ARRAY,        /* an ndarray awaiting its BUILD state; then `fwd` is the tensor */
    G_COUNTER,         /* collections.Counter */
    G_DEVICE,          /* torch.device */
    G_COMPLEX,         /* builtins.complex */
    G_GET_LAYOUT,      /* torch.serialization._get_layout */
    G_RQT,             /* torch._utils._rebuild_qtensor */
    G_RSPARSE,         /* torch._utils._rebuild_sparse_tensor */
    G_RSPARSE_CSR,     /* torch._utils._rebuild_sparse_csr_tensor (torch 1.13) */
    G_RNESTED,         /* torch._utils._rebuild_nested_tensor */
    G_RWRAPPER,        /* torch._utils._rebuild_wrapper_subclass */
    G_RDEV_CPU,        /* torch._utils._rebuild_device_tensor_from_cpu_tensor */
    G_RDEV_NUMPY,      /* torch._utils._rebuild_device_tensor_from_numpy */
    G_FROM_TYPE,       /* torch._tensor._rebuild_from_type_v2 */
    G_TENSOR_CLS,      /* torch.Tensor (a class argument) */
    G_PARAM_CLS,       /* torch.nn.parameter.Parameter (a class argument) */
    G_NP_FROMBUFFER,   /* numpy.core.numeric._frombuffer (ndarrays under pickle protocol 5) */
    G_STORAGE_UNKNOWN, /* torch.XStorage that names no storage class statedict reads: only a
                          persistent id may hold it, which load.c refuses as SDICT_E_DTYPE */
} gkind;

typedef struct tag {
    gkind kind;
    int64_t offset;   /* opcode that made it */
    char np_kind;     /* numpy dtype: 'f', 'i', 'u', 'b', 'c' */
    uint8_t np_size;  /* bytes per element */
    char np_order;    /* '<', '>', '|', '=' */
    bool np_underscore; /* G_NP_ARRAY: made by numpy._core's _reconstruct (numpy >= 2) */
    sdict_value *fwd; /* G_NP_ARRAY after BUILD: the tensor it became */
} tag;

/*==================================================================================================
 MARK: Hash map (memo index -> value, value address -> tag index / height), keyed with the
       process's random seed (memo indices are chosen by the file)
==================================================================================================*/

typedef struct hent {
    uint64_t key;
    uint64_t val;
    bool used;
} hent;

typedef struct hmap {
    hent *e;
    size_t cap; /* power of two or 0 */
    size_t count;
} hmap;

static uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static hent *hmap_find(const hmap *h, uint64_t key) {
    if (h->count == 0)
        return NULL;
    size_t mask = h->cap - 1;
    for (size_t i = mix64(key ^ sdict__hash_seed()) & mask;; i = (i + 1) & mask) {
        if (!h->e[i].used)
            return NULL;
        if (h->e[i].key == key)
            return &h->e[i];
    }
}

/* Inserts or updates; false on out-of-memory. Load factor stays <= 1/2. */
static bool hmap_put(hmap *h, uint64_t key, uint64_t val) {
    if ((h->count + 1) * 2 > h->cap) {
        size_t ncap = h->cap ? h->cap * 2 : 64;
        hent *ne = sdict__calloc(ncap, sizeof *ne);
        if (!ne)
            return false;
        for (size_t i = 0; i < h->cap; i++) {
            if (!h->e[i].used)
                continue;
            size_t j = mix64(h->e[i].key ^ sdict__hash_seed()) & (ncap - 1);
            while (ne[j].used)
                j = (j + 1) & (ncap - 1);
            ne[j] = h->e[i];
        }
        sdict__free(h->e);
        h->e = ne;
        h->cap = ncap;
    }
    size_t mask = h->cap - 1;
    size_t i = mix64(key ^ sdict__hash_seed()) & mask;
    while (h->e[i].used && h->e[i].key != key)
        i = (i + 1) & mask;
    if (!h->e[i].used) {
        h->e[i].used = true;
        h->e[i].key = key;
        h->count++;
    }
    h->e[i].val = val;
    return true;
}

static void hmap_free(hmap *h) {
    sdict__free(h->e);
    h->e = NULL;
    h->cap = h->count = 0;
}

/*==================================================================================================
 MARK: Machine state and errors
==================================================================================================*/

typedef struct vm {
    sdict__unpickler *u;
    sdict_doc *doc;
    sdict_error *err;
    const char *rec;
    const uint8_t *p;
    size_t n;
    size_t pos;
    int64_t off; /* offset of the current opcode */
    int op;
    sdict_value **stack;
    size_t sp, scap;
    size_t *marks; /* stack heights at each MARK */
    size_t nmarks, mcap;
    sdict_value **memo_vec; /* dense memo slots 0..memo_len-1 (NULL: unset) */
    size_t memo_len, memo_cap;
    hmap memo;              /* memo slots far beyond memo_len */
    size_t memo_count;      /* slots set, in both */
    uint64_t entries;       /* items put into containers so far (count_entry), and the
                               dimensions of the tensors made (count_dims) */
    uint64_t copied;        /* bytes the constructors copied out of other values (count_copy) */
    int64_t *dims;          /* scratch for the sizes and strides of the tensor being made */
    size_t dims_cap;
    hmap tagmap; /* value address -> index into tags */
    tag *tags;
    size_t ntags, tcap;
    int proto;        /* the last PROTO's argument (0 without one), as CPython's self->proto */
    size_t frame_end; /* furthest end of the FRAMEs so far (0: none) */
} vm;

static sdict_status fail(vm *m, sdict_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static sdict_status vfail(vm *m, bool python_too, sdict_status code, const char *fmt,
                          va_list ap) {
    char msg[260];
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (!python_too)
        m->u->python_may_continue = true;
    return sdict__err(m->err, code, m->rec, m->off, "%s: %s", op_name(m->op), msg);
}

/* A refusal of statedict's own: a limit, a rule stricter than CPython's, or anything not known
   to stop Python's unpickler at the same opcode (u->python_may_continue is set). */
static sdict_status fail(vm *m, sdict_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    sdict_status st = vfail(m, false, code, fmt, ap);
    va_end(ap);
    return st;
}

/* An error CPython's _pickle raises at the same opcode too (unknown opcode, stack underflow, an
   unset memo slot, a negative length, text no int() or float() parses...). */
static sdict_status fail_py(vm *m, sdict_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static sdict_status fail_py(vm *m, sdict_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    sdict_status st = vfail(m, true, code, fmt, ap);
    va_end(ap);
    return st;
}

/* Text that Python's int(), float() or PyLong_FromString might still parse (they take signs,
   underscores, whitespace, hex/octal/binary prefixes, inf and nan): only ASCII letters,
   digits, '_', '+', '-', '.' and whitespace. Other bytes make every one of them fail. */
static bool python_numeric_chars(const char *s, size_t len) {
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              c == '_' || c == '+' || c == '-' || c == '.' || c == ' ' || (c >= '\t' && c <= '\r')))
            return false;
    }
    return true;
}

static sdict_status nomem(vm *m) { return fail(m, SDICT_E_NOMEM, "out of memory"); }

/* A status from another subsystem (tensor checks): keep its message, point it at our opcode. */
static sdict_status relocate(vm *m, sdict_status st) {
    if (m->err && st != SDICT_OK) {
        snprintf(m->err->record, sizeof m->err->record, "%s", m->rec ? m->rec : "");
        m->err->offset = m->off;
    }
    return st;
}

/* relocate for the constructors of quantized, sparse and nested tensors, whose
   SDICT_E_INVALID_ARG (a part of the wrong kind) is, coming from a file, a pickle argument of
   the wrong type. */
static sdict_status relocate_parts(vm *m, sdict_status st) {
    if (st == SDICT_E_INVALID_ARG) {
        st = SDICT_E_PICKLE_TYPE;
        if (m->err)
            m->err->code = st;
    }
    return relocate(m, st);
}

static const char *kind_of(vm *m, const sdict_value *v);

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        sdict_status st_ = (expr);                                                                 \
        if (st_ != SDICT_OK)                                                                       \
            return st_;                                                                            \
    } while (0)

#define NEWV(var, expr)                                                                            \
    do {                                                                                           \
        (var) = (expr);                                                                            \
        if (!(var))                                                                                \
            return nomem(m);                                                                       \
    } while (0)

static tag *tag_of(const vm *m, const sdict_value *v) {
    if (m->ntags == 0 || !sdict__value_maybe_tagged(v))
        return NULL;
    hent *e = hmap_find(&m->tagmap, (uint64_t)(uintptr_t)v);
    return e ? &m->tags[e->val] : NULL;
}

/* Registers v (NULL: out of memory) in the side table as kind. */
static sdict_status tag_value(vm *m, sdict_value *v, gkind kind, sdict_value **out, tag **t) {
    if (!v)
        return nomem(m);
    if (m->ntags == m->tcap) {
        size_t ncap = m->tcap ? m->tcap * 2 : 16;
        tag *nt = sdict__realloc(m->tags, ncap * sizeof *nt);
        if (!nt)
            return nomem(m);
        m->tags = nt;
        m->tcap = ncap;
    }
    if (!hmap_put(&m->tagmap, (uint64_t)(uintptr_t)v, m->ntags))
        return nomem(m);
    sdict__value_mark_tagged(v);
    tag *g = &m->tags[m->ntags++];
    memset(g, 0, sizeof *g);
    g->kind = kind;
    g->offset = m->off;
    *out = v;
    if (t)
        *t = g;
    return SDICT_OK;
}

/* A placeholder str value "module.name" tagged kind. */
static sdict_status new_tagged(vm *m, const char *text, size_t len, gkind kind, sdict_value **out,
                               tag **t) {
    return tag_value(m, sdict_str_new(m->doc, text, len), kind, out, t);
}

/* Class references and inert objects (inert mode) are data; class references are tagged. */
static bool is_inert(const vm *m, const sdict_value *v) {
    return sdict_value_kind(v) == SDICT_KIND_OBJECT && m->u->inert;
}

/* "module.name" of a tagged value or an object, for messages. */
static const char *tag_text(const sdict_value *v) {
    static _Thread_local char buf[200];
    if (sdict_value_kind(v) != SDICT_KIND_OBJECT)
        return sdict_str_get(v, NULL);
    snprintf(buf, sizeof buf, "%.90s.%.90s", sdict_object_module(v), sdict_object_name(v));
    return buf;
}

/* Description for messages: the kind, or "global 'x.y'" for tagged values. */
static const char *kind_of(vm *m, const sdict_value *v) {
    static _Thread_local char buf[200];
    tag *t = tag_of(m, v);
    if (t || sdict_value_kind(v) == SDICT_KIND_OBJECT) {
        snprintf(buf, sizeof buf, "%s'%.180s'", t ? "" : "object ", tag_text(v));
        return buf;
    }
    sdict_kind k = sdict_value_kind(v);
    return k == SDICT__KIND_STORAGE ? "storage" : sdict_kind_name(k);
}

/*==================================================================================================
 MARK: Stack, marks, input
==================================================================================================*/

static size_t base_of(const vm *m) { return m->nmarks ? m->marks[m->nmarks - 1] : 0; }
static size_t avail(const vm *m) { return m->sp - base_of(m); }

static sdict_status push(vm *m, sdict_value *v) {
    if (!v)
        return nomem(m);
    if (m->sp == m->scap) {
        if (m->sp >= m->u->limits->max_stack)
            return fail(m, SDICT_E_LIMIT, "stack exceeds max_stack (%llu entries)",
                        (unsigned long long)m->u->limits->max_stack);
        size_t ncap = m->scap ? m->scap * 2 : 64;
        sdict_value **ns = sdict__realloc(m->stack, ncap * sizeof *ns);
        if (!ns)
            return nomem(m);
        m->stack = ns;
        m->scap = ncap;
    }
    m->stack[m->sp++] = v;
    return SDICT_OK;
}

static sdict_status need_items(vm *m, size_t k) {
    if (avail(m) < k)
        return fail_py(m, SDICT_E_PICKLE_STACK, "needs %zu stack item%s above the last MARK, found %zu",
                    k, k == 1 ? "" : "s", avail(m));
    return SDICT_OK;
}

static sdict_status pop(vm *m, sdict_value **out) {
    TRY(need_items(m, 1));
    *out = m->stack[--m->sp];
    return SDICT_OK;
}

/* Removes the top MARK; *base receives the stack height where its items begin. */
static sdict_status pop_mark(vm *m, size_t *base) {
    if (m->nmarks == 0)
        return fail_py(m, SDICT_E_PICKLE_STACK, "no MARK on the stack");
    *base = m->marks[--m->nmarks];
    return SDICT_OK;
}

static sdict_status need_bytes(vm *m, size_t k) {
    if (m->n - m->pos < k)
        return sdict__err(m->err, SDICT_E_TRUNCATED, m->rec, m->off,
                          "%s: needs %zu byte%s of argument, only %zu remain", op_name(m->op), k,
                          k == 1 ? "" : "s", m->n - m->pos);
    return SDICT_OK;
}

/* A declared length: checked against the input first (a claim past the end is truncation),
   then against max_str_bytes, before anything is allocated. */
static sdict_status check_len(vm *m, uint64_t len) {
    if (len > m->n - m->pos)
        return sdict__err(m->err, SDICT_E_TRUNCATED, m->rec, m->off,
                          "%s: declares %llu bytes, only %zu remain", op_name(m->op),
                          (unsigned long long)len, m->n - m->pos);
    if (len > m->u->limits->max_str_bytes)
        return fail(m, SDICT_E_LIMIT, "length %llu exceeds max_str_bytes %llu",
                    (unsigned long long)len, (unsigned long long)m->u->limits->max_str_bytes);
    return SDICT_OK;
}

/* A protocol-0 text argument up to (not including) the next newline. */
static sdict_status read_line(vm *m, const char **s, size_t *len) {
    const uint8_t *start = m->p + m->pos;
    const uint8_t *nl = memchr(start, '\n', m->n - m->pos);
    if (!nl)
        return sdict__err(m->err, SDICT_E_TRUNCATED, m->rec, m->off,
                          "%s: argument line has no terminating newline", op_name(m->op));
    *s = (const char *)start;
    *len = (size_t)(nl - start);
    m->pos += *len + 1;
    if (*len > m->u->limits->max_str_bytes)
        return fail(m, SDICT_E_LIMIT, "line of %zu bytes exceeds max_str_bytes", *len);
    return SDICT_OK;
}

/*==================================================================================================
 MARK: Containers
==================================================================================================*/

/* Lists, dicts and sets hold data only: a callable or placeholder there would misstate the
   file (scan mode excepted, where placeholders are the point). Tuples may hold them because
   call arguments and persistent ids are tuples. */
static sdict_status check_data(vm *m, const sdict_value *v, const char *where) {
    if (m->ntags && !m->u->scan && tag_of(m, v) && !is_inert(m, v))
        return fail(m, SDICT_E_PICKLE_TYPE, "%s cannot be stored in a %s (only data can)",
                    kind_of(m, v), where);
    return SDICT_OK;
}

/* Dict keys and set items: str, int, float, bool, None, bytes, the torch singletons (dtype,
   device, qscheme, layout), complex, or tuples and frozensets of those. Checked
   with a small explicit stack; a key needing more than 256 nodes is refused (real keys have a
   handful), which also keeps hashing shared-subtuple bombs linear. */
static sdict_status check_hashable(vm *m, const sdict_value *key) {
    const sdict_value *st[256];
    size_t n = 0, visited = 0;
    st[n++] = key;
    while (n) {
        const sdict_value *v = st[--n];
        if (++visited > 256)
            return fail(m, SDICT_E_PICKLE_TYPE, "dict key or set item is a tuple too large to hash");
        if (m->ntags && tag_of(m, v))
            return fail(m, SDICT_E_PICKLE_TYPE, "%s is not a hashable key", kind_of(m, v));
        switch (sdict_value_kind(v)) {
        case SDICT_KIND_NONE:
        case SDICT_KIND_BOOL:
        case SDICT_KIND_INT:
        case SDICT_KIND_FLOAT:
        case SDICT_KIND_STR:
        case SDICT_KIND_BYTES:
        case SDICT_KIND_DTYPE:
        case SDICT_KIND_DEVICE:
        case SDICT_KIND_COMPLEX:
        case SDICT_KIND_QSCHEME:
        case SDICT_KIND_LAYOUT:
        case SDICT_KIND_OBJECT: /* inert objects hash by identity, as object.__hash__ */
            break;
        case SDICT_KIND_SET:
            /* a frozenset is hashable (torch loads {frozenset({1, 2}): v}); a set is not */
            if (sdict_value_pytype(v) != SDICT_PYTYPE_FROZENSET)
                return fail(m, SDICT_E_PICKLE_TYPE, "unhashable set used as a dict key or set "
                            "item");
            /* fall through */
        case SDICT_KIND_TUPLE: {
            size_t k = sdict_seq_len(v);
            if (k > 256 - n)
                return fail(m, SDICT_E_PICKLE_TYPE,
                            "dict key or set item is a tuple too large to hash");
            for (size_t i = 0; i < k; i++)
                st[n++] = sdict_seq_item(v, i);
            break;
        }
        default:
            return fail(m, SDICT_E_PICKLE_TYPE, "unhashable %s used as a dict key or set item",
                        kind_of(m, v));
        }
    }
    return SDICT_OK;
}

/* Every item put into a container counts. Values are bounded by max_values as they are made,
   but REDUCE can copy a whole list into a new set or OrderedDict for one opcode byte, again and
   again: so container entries are bounded too, by max_values and by 2 per pickle byte (a real
   pickle spends at least one opcode byte per entry it adds), which keeps memory proportional
   to the input. */
static uint64_t entry_cap(const vm *m) {
    uint64_t cap = 2 * (uint64_t)m->n + 65536;
    return cap < m->u->limits->max_values ? cap : m->u->limits->max_values;
}

static sdict_status count_entry(vm *m) {
    uint64_t cap = entry_cap(m);
    if (++m->entries > cap)
        return fail(m, SDICT_E_LIMIT, "more than %llu container entries (max_values, or 2 per "
                    "byte of a %zu-byte pickle)", (unsigned long long)cap, m->n);
    return SDICT_OK;
}

/* A tensor copies its sizes and strides into the doc, and one memoized size tuple can be
   passed to the rebuild functions again and again: so they count like container entries (2 per
   dimension), which keeps the memory and time tensors take proportional to the input whatever
   their rank. A real file spends at least 4 bytes per dimension on its two tuples. */
static sdict_status count_dims(vm *m, int32_t ndim) {
    uint64_t cap = entry_cap(m);
    m->entries += 2 * (uint64_t)ndim; /* ndim < 2^31: cannot overflow before the check fails */
    if (m->entries > cap)
        return fail(m, SDICT_E_LIMIT, "tensors of %d dimensions bring the container entries and "
                    "tensor dimensions past %llu (max_values, or 2 per byte of a %zu-byte pickle)",
                    (int)ndim, (unsigned long long)cap, m->n);
    return SDICT_OK;
}

/* bytes(), bytearray() and _codecs.encode() copy bytes out of a value that may be memoized and
   passed to them again and again: the copies count against twice the pickle's size plus
   64 MiB, which keeps their memory proportional to the input. */
static sdict_status count_copy(vm *m, size_t len) {
    uint64_t cap = 2 * (uint64_t)m->n + (UINT64_C(64) << 20);
    m->copied += len;   /* len <= the pickle's size: no overflow before the check fails */
    if (m->copied > cap)
        return fail(m, SDICT_E_LIMIT, "bytes constructors copy more than %llu bytes (2 per "
                    "byte of a %zu-byte pickle, plus 64 MiB)", (unsigned long long)cap, m->n);
    return SDICT_OK;
}

static sdict_status seq_add(vm *m, sdict_value *seq, sdict_value *item) {
    TRY(count_entry(m));
    sdict_kind k = sdict_value_kind(seq);
    if (k == SDICT_KIND_SET)
        TRY(check_hashable(m, item));
    else if (k != SDICT_KIND_TUPLE)
        TRY(check_data(m, item, sdict_kind_name(k)));
    sdict_status st = sdict_seq_append(seq, item);
    if (st == SDICT_E_NOMEM)
        return nomem(m);
    if (st != SDICT_OK)
        return fail(m, SDICT_E_PICKLE_TYPE, "cannot add %s to a %s", kind_of(m, item),
                    sdict_kind_name(k));
    return SDICT_OK;
}

static sdict_status dict_put(vm *m, sdict_value *d, sdict_value *key, sdict_value *val) {
    TRY(count_entry(m));
    TRY(check_hashable(m, key));
    TRY(check_data(m, val, "dict"));
    sdict_status st = sdict_dict_set(d, key, val);
    if (st == SDICT_E_NOMEM)
        return nomem(m);
    if (st != SDICT_OK)
        return fail(m, SDICT_E_PICKLE_TYPE, "cannot use %s as a dict key", kind_of(m, key));
    return SDICT_OK;
}

/* New container of kind from stack[base..sp), which is then dropped. */
static sdict_status collect(vm *m, size_t base, sdict_kind kind, sdict_value **out) {
    sdict_value *c;
    NEWV(c, kind == SDICT_KIND_LIST    ? sdict_list_new(m->doc)
            : kind == SDICT_KIND_TUPLE ? sdict_tuple_new(m->doc)
                                       : sdict_set_new(m->doc));
    for (size_t i = base; i < m->sp; i++)
        TRY(seq_add(m, c, m->stack[i]));
    m->sp = base;
    *out = c;
    return SDICT_OK;
}

/*==================================================================================================
 MARK: Numbers and text
==================================================================================================*/

/* Decimal text (protocol 0 INT/LONG) to an int of any size. Python caps int('...') at 4300
   digits; so do we, which keeps the schoolbook conversion linear in practice. */
static sdict_status int_from_text(vm *m, const char *s, size_t len, sdict_value **out) {
    size_t i = 0;
    bool neg = false;
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\r'))
        len--;
    while (i < len && s[i] == ' ')
        i++;
    if (i < len && (s[i] == '+' || s[i] == '-'))
        neg = s[i++] == '-';
    bool digits = i < len;
    for (size_t j = i; j < len; j++)
        digits = digits && s[j] >= '0' && s[j] <= '9';
    if (!digits)
        return (python_numeric_chars(s, len) ? fail : fail_py)(
            m, SDICT_E_PICKLE_OPCODE, "expected a decimal integer, found \"%.*s\"",
            (int)(len > 40 ? 40 : len), s);
    size_t nd = len - i;
    if (nd > 4300)
        return fail(m, SDICT_E_LIMIT, "integer literal of %zu digits (Python's limit is 4300)", nd);
    if (nd <= 18) {
        int64_t v = 0;
        for (size_t j = i; j < len; j++)
            v = v * 10 + (s[j] - '0');
        NEWV(*out, sdict_int_new(m->doc, neg ? -v : v));
        return SDICT_OK;
    }
    size_t nl = nd / 9 + 2;
    uint32_t *limb = sdict__calloc(nl, sizeof *limb);
    uint8_t *bytes = limb ? sdict__malloc(nl * 4 + 1) : NULL;
    if (!bytes) {
        sdict__free(limb);
        return nomem(m);
    }
    size_t used = 1;
    for (size_t j = i; j < len;) {
        uint32_t chunk = 0, mul = 1;
        for (int c = 0; c < 9 && j < len; c++, j++) {
            chunk = chunk * 10 + (uint32_t)(s[j] - '0');
            mul *= 10;
        }
        uint64_t carry = chunk;
        for (size_t k = 0; k < used; k++) {
            uint64_t t = (uint64_t)limb[k] * mul + carry;
            limb[k] = (uint32_t)t;
            carry = t >> 32;
        }
        if (carry)
            limb[used++] = (uint32_t)carry;
    }
    for (size_t k = 0; k < nl; k++)
        for (int b = 0; b < 4; b++)
            bytes[k * 4 + (size_t)b] = (uint8_t)(limb[k] >> (8 * b));
    bytes[nl * 4] = 0;
    if (neg) { /* two's complement of the magnitude */
        unsigned carry = 1;
        for (size_t k = 0; k <= nl * 4; k++) {
            unsigned t = (uint8_t)~bytes[k] + carry;
            bytes[k] = (uint8_t)t;
            carry = t >> 8;
        }
    }
    *out = sdict__int_from_le_bytes(m->doc, bytes, nl * 4 + 1);
    sdict__free(limb);
    sdict__free(bytes);
    return *out ? SDICT_OK : nomem(m);
}

/* Appends code point c as UTF-8 (surrogates kept as three bytes, as surrogatepass does). */
static size_t put_utf8(uint8_t *o, uint32_t c) {
    if (c < 0x80) {
        o[0] = (uint8_t)c;
        return 1;
    }
    if (c < 0x800) {
        o[0] = (uint8_t)(0xC0 | (c >> 6));
        o[1] = (uint8_t)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        o[0] = (uint8_t)(0xE0 | (c >> 12));
        o[1] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
        o[2] = (uint8_t)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (uint8_t)(0xF0 | (c >> 18));
    o[1] = (uint8_t)(0x80 | ((c >> 12) & 0x3F));
    o[2] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
    o[3] = (uint8_t)(0x80 | (c & 0x3F));
    return 4;
}

static int hexval(int c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static sdict_status py2_str(vm *m, const uint8_t *s, size_t len, sdict_value **out);

/* STRING: a quoted repr decoded with Python's escape_decode, then as a Python 2 str. */
static sdict_status string_op(vm *m, const char *s, size_t len, sdict_value **out) {
    while (len && (s[len - 1] == '\r' || s[len - 1] == ' '))
        len--;
    if (len < 2 || s[0] != s[len - 1] || (s[0] != '\'' && s[0] != '"'))
        return fail(m, SDICT_E_PICKLE_OPCODE, "the STRING argument must be quoted");
    s++;
    len -= 2;
    uint8_t *b = sdict__malloc(len + 1);
    if (!b)
        return nomem(m);
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '\\' || i + 1 == len) {
            b[o++] = (uint8_t)s[i];
            continue;
        }
        char c = s[++i];
        switch (c) {
        case 'n': b[o++] = '\n'; break;
        case 't': b[o++] = '\t'; break;
        case 'r': b[o++] = '\r'; break;
        case 'a': b[o++] = '\a'; break;
        case 'b': b[o++] = '\b'; break;
        case 'f': b[o++] = '\f'; break;
        case 'v': b[o++] = '\v'; break;
        case '\\': case '\'': case '"': b[o++] = (uint8_t)c; break;
        case 'x': {
            int h1 = i + 1 < len ? hexval((unsigned char)s[i + 1]) : -1;
            int h2 = i + 2 < len ? hexval((unsigned char)s[i + 2]) : -1;
            if (h1 < 0 || h2 < 0) {
                sdict__free(b);
                return fail(m, SDICT_E_PICKLE_OPCODE, "invalid \\x escape in STRING");
            }
            b[o++] = (uint8_t)(h1 * 16 + h2);
            i += 2;
            break;
        }
        default:
            if (c >= '0' && c <= '7') {
                unsigned v = (unsigned)(c - '0');
                for (int k = 0; k < 2 && i + 1 < len && s[i + 1] >= '0' && s[i + 1] <= '7'; k++)
                    v = v * 8 + (unsigned)(s[++i] - '0');
                b[o++] = (uint8_t)v;
            } else { /* unknown escapes stay as written */
                b[o++] = '\\';
                b[o++] = (uint8_t)c;
            }
        }
    }
    sdict_status st = py2_str(m, b, o, out);
    sdict__free(b);
    return st;
}

/* UNICODE: raw-unicode-escape, i.e. latin-1 bytes plus \uXXXX and \UXXXXXXXX escapes. */

/* Python 2 str bytes (STRING, BINSTRING, SHORT_BINSTRING): torch.load unpickles with
   encoding='utf-8' (its default in 1.13 and 2.x), so they are decoded as bytes.decode('utf-8'):
   well-formed UTF-8 without encoded surrogates, else torch raises UnicodeDecodeError. */
static sdict_status py2_str(vm *m, const uint8_t *s, size_t len, sdict_value **out) {
    size_t bad = sdict__utf8_invalid_at(s, len);
    for (size_t i = 0; i + 1 < bad; i++)
        if (s[i] == 0xED && s[i + 1] >= 0xA0)
            bad = i;
    if (bad != len)
        return fail(m, SDICT_E_PICKLE_TYPE, "Python 2 str is not UTF-8: byte %zu of %zu is 0x%02x "
                    "(torch.load decodes such strs with encoding='utf-8' and raises "
                    "UnicodeDecodeError)", bad, len, s[bad]);
    *out = sdict_str_new(m->doc, (const char *)s, len);
    return *out ? SDICT_OK : nomem(m);
}

static sdict_status unicode_op(vm *m, const char *s, size_t len, sdict_value **out) {
    uint8_t *b = sdict__malloc(len * 2 + 4);
    if (!b)
        return nomem(m);
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '\\' && i + 1 < len && (s[i + 1] == 'u' || s[i + 1] == 'U')) {
            size_t nh = s[i + 1] == 'u' ? 4 : 8;
            uint32_t c = 0;
            bool ok = i + 2 + nh <= len;
            for (size_t k = 0; ok && k < nh; k++) {
                int h = hexval((unsigned char)s[i + 2 + k]);
                ok = h >= 0;
                c = c * 16 + (uint32_t)(h < 0 ? 0 : h);
            }
            if (!ok || c > 0x10FFFF) {
                sdict__free(b);
                return fail(m, SDICT_E_PICKLE_OPCODE, "invalid \\%c escape in UNICODE", s[i + 1]);
            }
            o += put_utf8(b + o, c);
            i += 1 + nh;
        } else {
            o += put_utf8(b + o, (unsigned char)s[i]);
        }
    }
    *out = sdict_str_new(m->doc, (const char *)b, o);
    sdict__free(b);
    return *out ? SDICT_OK : nomem(m);
}

static sdict_status float_text(vm *m, const char *s, size_t len, sdict_value **out) {
    char buf[128];
    while (len && (s[len - 1] == '\r' || s[len - 1] == ' '))
        len--;
    if (len == 0 || len >= sizeof buf)
        return (python_numeric_chars(s, len) ? fail : fail_py)(
            m, SDICT_E_PICKLE_OPCODE, "float literal of %zu bytes", len);
    memcpy(buf, s, len);
    buf[len] = '\0';
    /* strtod follows LC_NUMERIC, which the calling program may have set to a locale whose
       decimal point is ','; pickle text always uses '.', so parse in the C locale */
    locale_t c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    if (c_locale == (locale_t)0)
        return nomem(m);
    locale_t old = uselocale(c_locale);
    char *end = NULL;
    double d = strtod(buf, &end);
    uselocale(old);
    freelocale(c_locale);
    if (end != buf + len)
        return (python_numeric_chars(s, len) ? fail : fail_py)(
            m, SDICT_E_PICKLE_OPCODE, "invalid float literal \"%s\"", buf);
    NEWV(*out, sdict_float_new(m->doc, d));
    return SDICT_OK;
}

/* The bytes of a str whose code points are all < 256 (latin-1 encoding), for _codecs.encode
   and bytearray(str, 'latin-1'). */
static sdict_status latin1_bytes(vm *m, const sdict_value *v, sdict_value **out) {
    size_t len;
    const uint8_t *s = (const uint8_t *)sdict_str_get(v, &len);
    TRY(count_copy(m, len));
    uint8_t *b = sdict__malloc(len + 1);
    if (!b)
        return nomem(m);
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        uint8_t c = s[i];
        if (c < 0x80) {
            b[o++] = c;
            i++;
        } else if ((c & 0xE0) == 0xC0 && c <= 0xC3 && i + 1 < len && (s[i + 1] & 0xC0) == 0x80) {
            b[o++] = (uint8_t)(((c & 0x1F) << 6) | (s[i + 1] & 0x3F));
            i += 2;
        } else {
            sdict__free(b);
            return fail(m, SDICT_E_PICKLE_TYPE,
                        "text has characters outside latin-1 (at byte %zu of %zu)", i, len);
        }
    }
    *out = sdict_bytes_new(m->doc, b, o);
    sdict__free(b);
    return *out ? SDICT_OK : nomem(m);
}

/*==================================================================================================
 MARK: Globals (the allow-list)
==================================================================================================*/

static bool eq(const char *s, size_t n, const char *lit) {
    return n == strlen(lit) && memcmp(s, lit, n) == 0;
}

typedef struct resolved {
    gkind kind;          /* 0 when the global is a plain value (dtype, qscheme) or refused */
    bool allowed;
    bool is_dtype;
    sdict_dtype dtype;
    int qscheme;         /* >= 0: the global is this qscheme object */
} resolved;

/* torch's quantization schemes, as module torch names them. */
static int qscheme_of(const char *name, size_t nl) {
    for (int q = 0; q < SDICT_QSCHEME_COUNT; q++)
        if (eq(name, nl, sdict_qscheme_name((sdict_qscheme)q)))
            return q;
    return -1;
}

/* Exact names of the torch._utils rebuild functions the machine interprets. */
static const struct {
    const char *name;
    gkind kind;
} rebuild_fns[] = {
    {"_rebuild_tensor", G_RT1},
    {"_rebuild_tensor_v2", G_RT2},
    {"_rebuild_tensor_v3", G_RT3},
    {"_rebuild_parameter", G_RP},
    {"_rebuild_parameter_with_state", G_RPS},
    {"_rebuild_meta_tensor_no_storage", G_RMETA},
    {"_rebuild_qtensor", G_RQT},
    {"_rebuild_sparse_tensor", G_RSPARSE},
    {"_rebuild_sparse_csr_tensor", G_RSPARSE_CSR},
    {"_rebuild_nested_tensor", G_RNESTED},
    {"_rebuild_wrapper_subclass", G_RWRAPPER},
    {"_rebuild_device_tensor_from_cpu_tensor", G_RDEV_CPU},
    {"_rebuild_device_tensor_from_numpy", G_RDEV_NUMPY},
};

/* Exact (module, name) lookup. Nothing is resolved by prefix or attribute walk. */
static resolved resolve_global(const char *mod, size_t ml, const char *name, size_t nl) {
    resolved r = {0};
    r.allowed = true;
    r.qscheme = -1;
    bool builtins = eq(mod, ml, "builtins"); /* __builtin__ arrives renamed (compat_global) */
    bool np_multiarray = eq(mod, ml, "numpy.core.multiarray") || eq(mod, ml, "numpy._core.multiarray");
    char tmp[64];
    if (eq(mod, ml, "torch._utils")) {
        for (size_t i = 0; i < sizeof rebuild_fns / sizeof rebuild_fns[0]; i++)
            if (eq(name, nl, rebuild_fns[i].name))
                r.kind = rebuild_fns[i].kind;
        r.allowed = r.kind != 0;
    } else if (eq(mod, ml, "collections") && eq(name, nl, "OrderedDict"))
        r.kind = G_ODICT;
    else if (eq(mod, ml, "collections") && eq(name, nl, "Counter"))
        r.kind = G_COUNTER;
    else if (eq(mod, ml, "torch._tensor") && eq(name, nl, "_rebuild_from_type_v2"))
        r.kind = G_FROM_TYPE;
    else if (eq(mod, ml, "torch.serialization") && eq(name, nl, "_get_layout"))
        r.kind = G_GET_LAYOUT;
    else if (eq(mod, ml, "torch.nn.parameter") && eq(name, nl, "Parameter"))
        r.kind = G_PARAM_CLS;
    else if (eq(mod, ml, "torch") && eq(name, nl, "Tensor"))
        r.kind = G_TENSOR_CLS;
    else if (eq(mod, ml, "torch") && eq(name, nl, "device"))
        r.kind = G_DEVICE;
    else if (eq(mod, ml, "torch") && qscheme_of(name, nl) >= 0)
        r.qscheme = qscheme_of(name, nl);
    else if (builtins && eq(name, nl, "complex"))
        r.kind = G_COMPLEX;
    else if (eq(mod, ml, "torch") && eq(name, nl, "Size"))
        r.kind = G_SIZE;
    else if ((eq(mod, ml, "numpy.core.numeric") || eq(mod, ml, "numpy._core.numeric")) &&
             eq(name, nl, "_frombuffer"))
        r.kind = G_NP_FROMBUFFER;
    else if (builtins && (eq(name, nl, "set") || eq(name, nl, "frozenset")))
        r.kind = G_SET;
    else if (builtins && eq(name, nl, "bytearray"))
        r.kind = G_BYTEARRAY;
    else if (builtins && eq(name, nl, "bytes"))
        r.kind = G_BYTES;
    else if (eq(mod, ml, "_codecs") && eq(name, nl, "encode"))
        r.kind = G_ENCODE;
    else if (np_multiarray && eq(name, nl, "scalar"))
        r.kind = G_NP_SCALAR;
    else if (np_multiarray && eq(name, nl, "_reconstruct"))
        r.kind = G_NP_RECONSTRUCT;
    else if (eq(mod, ml, "numpy") && eq(name, nl, "dtype"))
        r.kind = G_NP_DTYPE_CLS;
    else if (eq(mod, ml, "numpy") && eq(name, nl, "ndarray"))
        r.kind = G_NP_NDARRAY_CLS;
    else if (eq(mod, ml, "torch.storage") && eq(name, nl, "UntypedStorage")) {
        r.is_dtype = true;
        r.dtype = SDICT_UINT8; /* numel of an untyped storage counts bytes */
    } else if ((eq(mod, ml, "torch") || eq(mod, ml, "torch.cuda")) && nl < sizeof tmp &&
               !memchr(name, '\0', nl) && !memchr(name, '.', nl)) {
        memcpy(tmp, name, nl);
        tmp[nl] = '\0';
        char storage_name[sizeof tmp + 2];
        if (nl > 7 && strcmp(tmp + nl - 7, "Storage") == 0 &&
            sdict__dtype_from_storage_class(tmp, &r.dtype))
            r.is_dtype = true;
        /* legacy tensor types (torch.FloatTensor), named by torch < 0.4 tar files: type markers
           standing for their dtype, like the storage classes (torch's weights_only allows them) */
        else if (nl > 6 && strcmp(tmp + nl - 6, "Tensor") == 0 &&
                 snprintf(storage_name, sizeof storage_name, "%.*sStorage", (int)(nl - 6),
                          tmp) > 0 &&
                 sdict__dtype_from_storage_class(storage_name, &r.dtype))
            r.is_dtype = true;
        else if (eq(mod, ml, "torch") && sdict_dtype_from_name(tmp, &r.dtype) == SDICT_OK)
            r.is_dtype = true;
        else if (eq(mod, ml, "torch") && strcmp(tmp, "UntypedStorage") == 0) {
            r.is_dtype = true; /* torch.UntypedStorage is torch.storage.UntypedStorage */
            r.dtype = SDICT_UINT8;
        } else {
            r.allowed = false;
            /* A storage class name (identifier ending in "Storage") statedict cannot read: still
               refused (scan reports it REFUSED, nothing calls it), but a load says the dtype is
               unsupported instead of calling the file unsafe. */
            bool ident = nl > 7 && strcmp(tmp + nl - 7, "Storage") == 0;
            for (size_t i = 0; ident && i < nl; i++)
                ident = (tmp[i] >= 'A' && tmp[i] <= 'Z') || (tmp[i] >= 'a' && tmp[i] <= 'z') ||
                        (tmp[i] >= '0' && tmp[i] <= '9') || (tmp[i] == '_' && i > 0);
            if (ident)
                r.kind = G_STORAGE_UNKNOWN;
        }
    } else {
        r.allowed = false;
    }
    return r;
}

/* The (module, name) CPython's find_class imports: protocols 0-2 rename Python 2 modules and
   names (fix_imports), by NAME_MAPPING first, then IMPORT_MAPPING (compat_pickle.h). */
static void compat_global(const vm *m, const char **mod, size_t *ml, const char **name,
                          size_t *nl) {
    if (m->proto >= 3)
        return;
    for (size_t i = 0; i < sizeof compat_names / sizeof compat_names[0]; i++)
        if (eq(*mod, *ml, compat_names[i].mod) && eq(*name, *nl, compat_names[i].name)) {
            *mod = compat_names[i].to_mod;
            *ml = strlen(*mod);
            *name = compat_names[i].to_name;
            *nl = strlen(*name);
            return;
        }
    for (size_t i = 0; i < sizeof compat_modules / sizeof compat_modules[0]; i++)
        if (eq(*mod, *ml, compat_modules[i].mod)) {
            *mod = compat_modules[i].to_mod;
            *ml = strlen(*mod);
            return;
        }
}

/* GLOBAL / STACK_GLOBAL / INST: report, then push the value the global stands for. For INST
   (call_now) a refused global is an error even in scan mode, since INST calls it (under inert
   it makes an object). Header pickles (u->literals_only) refuse every global; a scan (inert)
   reports each as refused and goes on. */
static sdict_status push_global(vm *m, const char *mod, size_t ml, const char *name, size_t nl,
                                bool call_now, sdict_value **out) {
    const char *wmod = mod, *wname = name; /* as written, for messages */
    size_t wml = ml, wnl = nl;
    compat_global(m, &mod, &ml, &name, &nl);
    char written[200] = "";
    if (mod != wmod || name != wname)
        snprintf(written, sizeof written, " (written '%.*s.%.*s', renamed by protocol %d's "
                 "fix_imports)", (int)(wml > 80 ? 80 : wml), wmod, (int)(wnl > 80 ? 80 : wnl),
                 wname, m->proto);
    resolved r = resolve_global(mod, ml, name, nl);
    if (m->u->literals_only)
        r.allowed = false;
    char *full = sdict__malloc(ml + nl + 2);
    if (!full)
        return nomem(m);
    memcpy(full, mod, ml);
    full[ml] = '\0';
    memcpy(full + ml + 1, name, nl);
    full[ml + 1 + nl] = '\0';
    if (m->u->on_global)
        m->u->on_global(m->u->ctx, full, full + ml + 1, r.allowed, m->off);
    full[ml] = '.';
    sdict_status st = SDICT_OK;
    if (m->u->literals_only && !m->u->scan) {
        st = fail(m, SDICT_E_PICKLE_UNSAFE_GLOBAL,
                  "global '%s'%s in a header pickle: torch reads it with an unrestricted "
                  "pickle.load, so header pickles may hold only literals", full, written);
    } else if (r.kind == G_STORAGE_UNKNOWN && !m->u->scan) {
        st = new_tagged(m, full, ml + nl + 1, G_STORAGE_UNKNOWN, out, NULL);
    } else if (!r.allowed && m->u->inert) {
        st = tag_value(m, sdict__object_new(m->doc, mod, ml, name, nl, SDICT_OBJECT_CLASS),
                       G_REFUSED, out, NULL);
    } else if (!r.allowed && (!m->u->scan || call_now)) {
        /* a class name (CamelCase, as Conv2d, Net, DetectionModel): most likely a pickled
           model, which extract reads as inert data */
        bool cls = nl > 0 && name[0] >= 'A' && name[0] <= 'Z';
        st = fail(m, SDICT_E_PICKLE_UNSAFE_GLOBAL, "global '%s'%s is not on the allow-list%s",
                  full, written,
                  cls ? " (a whole pickled object such as torch.save(model)? `statedict extract` "
                        "reads its state_dict without running it)"
                      : "");
    } else if (r.is_dtype) {
        *out = sdict_dtype_value_new(m->doc, r.dtype);
        st = *out ? SDICT_OK : nomem(m);
    } else if (r.qscheme >= 0) {
        *out = sdict_qscheme_value_new(m->doc, (sdict_qscheme)r.qscheme);
        st = *out ? SDICT_OK : nomem(m);
    } else {
        st = new_tagged(m, full, ml + nl + 1, r.allowed ? r.kind : G_REFUSED, out, NULL);
        /* scan: unknown storage classes are placeholders like any refused global */
    }
    sdict__free(full);
    return st;
}

/*==================================================================================================
 MARK: Tensors
==================================================================================================*/

static sdict_status int_arg(vm *m, const sdict_value *v, const char *what, int64_t *out) {
    sdict_kind k = sdict_value_kind(v);
    if (k != SDICT_KIND_INT && k != SDICT_KIND_BOOL)
        return fail(m, SDICT_E_PICKLE_TYPE, "%s must be an int, found %s", what, kind_of(m, v));
    if (sdict_int_get(v, out) != SDICT_OK)
        return fail(m, SDICT_E_SHAPE, "%s does not fit in int64", what);
    return SDICT_OK;
}

/* Room for n int64 in the machine's scratch (m->dims), kept between tensors. */
static sdict_status dims_room(vm *m, size_t n) {
    if (n <= m->dims_cap && m->dims)   /* allocated even for 0-dim tensors: m->dims + 0 is used */
        return SDICT_OK;
    size_t cap = m->dims_cap ? m->dims_cap : 64;
    while (cap < n)
        cap = cap > SIZE_MAX / 2 ? n : cap * 2;
    int64_t *p = cap <= SIZE_MAX / sizeof *p ? sdict__realloc(m->dims, cap * sizeof *p) : NULL;
    if (!p)
        return nomem(m);
    m->dims = p;
    m->dims_cap = cap;
    return SDICT_OK;
}

/* Length of a size or stride tuple (torch.Size arrives as a tuple), or a type error. A tuple
   has at most max_values items, so any length that gets here fits int32. */
static sdict_status dims_len(vm *m, const sdict_value *v, const char *what, size_t *n) {
    sdict_kind k = sdict_value_kind(v);
    if (k != SDICT_KIND_TUPLE && k != SDICT_KIND_LIST)
        return fail(m, SDICT_E_PICKLE_TYPE, "%s must be a tuple of ints, found %s", what,
                    kind_of(m, v));
    *n = sdict_seq_len(v);
    if (*n > INT32_MAX)
        return fail(m, SDICT_E_LIMIT, "%s has %zu dimensions", what, *n);
    return SDICT_OK;
}

/* A size or stride tuple of ints >= 0 into dims (room for its length, from dims_len). */
static sdict_status dims_arg(vm *m, const sdict_value *v, const char *what, int64_t *dims,
                             int32_t *nd) {
    size_t n = 0;
    TRY(dims_len(m, v, what, &n));
    for (size_t i = 0; i < n; i++) {
        TRY(int_arg(m, sdict_seq_item(v, i), what, &dims[i]));
        if (dims[i] < 0)
            return fail(m, SDICT_E_SHAPE, "%s[%zu] is %lld, must be >= 0", what, i,
                        (long long)dims[i]);
    }
    *nd = (int32_t)n;
    return SDICT_OK;
}

static sdict_status flag_arg(vm *m, const sdict_value *v, const char *what, bool *out) {
    sdict_kind k = sdict_value_kind(v);
    if (k == SDICT_KIND_BOOL)
        *out = sdict_bool_get(v);
    else if (k == SDICT_KIND_INT) {
        int64_t i = 0;
        *out = sdict_int_get(v, &i) != SDICT_OK || i != 0;
    } else
        return fail(m, SDICT_E_PICKLE_TYPE, "%s must be a bool, found %s", what, kind_of(m, v));
    return SDICT_OK;
}

/* torch drops backward hooks with a warning; a file carrying any is refused here. Files of the
   torch 0.4 era pass None instead of an empty OrderedDict. */
static sdict_status hooks_arg(vm *m, const sdict_value *v) {
    if (sdict_value_kind(v) == SDICT_KIND_NONE)
        return SDICT_OK;
    if (sdict_value_kind(v) != SDICT_KIND_DICT)
        return fail(m, SDICT_E_PICKLE_TYPE, "backward_hooks must be an OrderedDict, found %s",
                    kind_of(m, v));
    if (sdict_dict_len(v) != 0)
        return fail(m, SDICT_E_PICKLE_TYPE, "backward_hooks has %zu entries, expected none",
                    sdict_dict_len(v));
    return SDICT_OK;
}

/* 2.x passes tensor metadata only when non-empty: {'conj': bool, 'neg': bool} (torch's
   _get_tensor_metadata). Other keys are ignored, as torch's _set_tensor_metadata ignores them;
   the conjugate bit on a non-complex tensor is refused (torch fails an internal assert). */
static sdict_status metadata_arg(vm *m, const sdict_value *v, sdict_tensor *t) {
    if (sdict_value_kind(v) != SDICT_KIND_DICT)
        return fail(m, SDICT_E_PICKLE_TYPE, "metadata must be a dict, found %s", kind_of(m, v));
    const sdict_value *c = sdict_dict_get(v, "conj"), *n = sdict_dict_get(v, "neg");
    if (c)
        TRY(flag_arg(m, c, "metadata 'conj'", &t->is_conj));
    if (n)
        TRY(flag_arg(m, n, "metadata 'neg'", &t->is_neg));
    if (t->is_conj && t->dtype != SDICT_COMPLEX32 && t->dtype != SDICT_BCOMPLEX32 &&
        t->dtype != SDICT_COMPLEX64 && t->dtype != SDICT_COMPLEX128)
        return fail(m, SDICT_E_PICKLE_TYPE, "metadata sets the conjugate bit on a %s tensor (only "
                    "complex tensors have one)", sdict_dtype_name(t->dtype));
    return SDICT_OK;
}

/* The size and stride arguments of a rebuild function into t->ndim, t->shape and t->stride
   (pointing into the machine's scratch until the next tensor), counted by count_dims. */
static sdict_status shape_args(vm *m, const sdict_value *size, const sdict_value *stride,
                               sdict_tensor *t) {
    size_t n1 = 0, n2 = 0;
    TRY(dims_len(m, size, "size", &n1));
    TRY(dims_len(m, stride, "stride", &n2));
    TRY(dims_room(m, n1 + n2));
    int32_t nd = 0, nds = 0;
    TRY(dims_arg(m, size, "size", m->dims, &nd));
    TRY(dims_arg(m, stride, "stride", m->dims + n1, &nds));
    if (nds != nd)
        return fail(m, SDICT_E_SHAPE, "size has %d dimensions but stride has %d", (int)nd,
                    (int)nds);
    TRY(count_dims(m, nd));
    t->ndim = nd;
    t->shape = m->dims;
    t->stride = m->dims + n1;
    return SDICT_OK;
}

/* storage, storage_offset, size, stride -> t (shape and stride in the machine's scratch);
   dtype_v overrides the storage's dtype (v3). */
static sdict_status fill_tensor(vm *m, const sdict_value *const *a, const sdict_value *dtype_v,
                                sdict_tensor *t) {
    memset(t, 0, sizeof *t);
    sdict_dtype sdt = SDICT_DTYPE_COUNT;
    sdict_storage *s = sdict__storage_value_get(a[0], &sdt);
    if (!s)
        return fail(m, SDICT_E_PICKLE_TYPE, "argument 1 must be a storage, found %s",
                    kind_of(m, a[0]));
    t->dtype = sdt;
    if (dtype_v) {
        if (sdict_value_kind(dtype_v) != SDICT_KIND_DTYPE)
            return fail(m, SDICT_E_PICKLE_TYPE, "dtype argument must be a torch dtype, found %s",
                        kind_of(m, dtype_v));
        t->dtype = sdict_dtype_value_get(dtype_v);
    }
    TRY(int_arg(m, a[1], "storage_offset", &t->storage_offset));
    if (t->storage_offset < 0)
        return fail(m, SDICT_E_SHAPE, "storage_offset is %lld, must be >= 0",
                    (long long)t->storage_offset);
    TRY(shape_args(m, a[2], a[3], t));
    t->storage = s;
    return SDICT_OK;
}

static sdict_status args_count(vm *m, const sdict_value *args, const char *fn, size_t lo,
                               size_t hi) {
    size_t n = sdict_seq_len(args);
    if (n < lo || n > hi) {
        if (lo == hi)
            return fail(m, SDICT_E_PICKLE_TYPE, "%s takes %zu arguments, got %zu", fn, lo, n);
        return fail(m, SDICT_E_PICKLE_TYPE, "%s takes %zu to %zu arguments, got %zu", fn, lo, hi,
                    n);
    }
    return SDICT_OK;
}

/*
 src.to(dtype) as torch computes it (memory_format=torch.preserve_format): a non-overlapping,
 dense source keeps its strides, anything else becomes contiguous. The elements are copied in
 the source's memory order, which for a dense source is C order of its dimensions sorted by
 stride.
*/
static sdict_status convert_tensor(vm *m, const sdict_tensor *src, sdict_dtype dt, bool rg,
                                   sdict_value **out) {
    /* scratch: the sorted sizes and strides, then the new tensor's strides */
    size_t nd = (size_t)src->ndim;
    TRY(dims_room(m, 3 * nd));
    TRY(count_dims(m, src->ndim));
    int64_t *osize = m->dims, *ostride = m->dims + nd, *cstride = m->dims + 2 * nd;
    if (nd) {
        memcpy(osize, src->shape, nd * sizeof *osize);
        memcpy(ostride, src->stride, nd * sizeof *ostride);
    }
    /* src's dimensions by decreasing stride (insertion sort, stable) */
    for (size_t i = 1; i < nd; i++)
        for (size_t j = i; j > 0 && ostride[j - 1] < ostride[j]; j--) {
            int64_t sz = osize[j], sd = ostride[j];
            osize[j] = osize[j - 1], ostride[j] = ostride[j - 1];
            osize[j - 1] = sz, ostride[j - 1] = sd;
        }
    sdict_tensor c, order = *src;
    order.shape = osize;
    order.stride = ostride;
    bool dense = sdict_tensor_numel(src) > 0 && sdict_tensor_is_contiguous(&order);
    TRY(relocate(m, sdict_tensor_init(&c, dt, src->ndim, src->shape, cstride, NULL, m->err)));
    if (dense && nd)
        memcpy(cstride, src->stride, nd * sizeof *cstride);
    size_t nb = sdict_tensor_nbytes(&c);
    sdict_storage *st = NULL;
    TRY(relocate(m, sdict_storage_new(nb, &st, m->err)));
    sdict_status cst = relocate(m, sdict_tensor_copy_to(dense ? &order : src, dt,
                                                        sdict_storage_data(st), nb, m->err));
    c.storage = st;
    c.requires_grad = rg;
    if (cst == SDICT_OK)
        cst = relocate(m, sdict_tensor_new(m->doc, &c, out, m->err));
    sdict_storage_release(st);
    return cst;
}

/* Whether index values are checked later (legacy files) or never (scans read no bytes). */
static bool defer(const vm *m) { return m->u->defer_checks || m->u->scan; }

/* Records v for the caller's later check of its index values, when deferring. */
static sdict_status defer_check(vm *m, sdict_value *v) {
    sdict__unpickler *u = m->u;
    if (!u->defer_checks || u->scan)
        return SDICT_OK;
    if (u->n_deferred == u->cap_deferred) {
        size_t ncap = u->cap_deferred ? u->cap_deferred * 2 : 16;
        struct sdict__deferred *nd = sdict__realloc(u->deferred, ncap * sizeof *nd);
        if (!nd)
            return nomem(m);
        u->deferred = nd;
        u->cap_deferred = ncap;
    }
    u->deferred[u->n_deferred].v = v;
    u->deferred[u->n_deferred++].offset = m->off;
    return SDICT_OK;
}

/* The value a tagged placeholder became (an ndarray after its BUILD), else v itself. */
static const sdict_value *resolved_value(vm *m, const sdict_value *v) {
    tag *t = tag_of(m, v);
    return t && t->fwd ? t->fwd : v;
}

static bool is_tensorish(const sdict_value *v) {
    sdict_kind k = sdict_value_kind(v);
    return k == SDICT_KIND_TENSOR || k == SDICT_KIND_SPARSE || k == SDICT_KIND_NESTED;
}

/* Attributes of torch.Tensor itself (its properties and getset descriptors, torch 1.13 and
   2.14: dir(torch.Tensor)). torch 2.x restores a tensor's state with setattr, so a state
   setting one of these changes the tensor (its data, dtype, requires_grad...), while torch 1.13
   ignores the state of a plain tensor: such a state is refused as ambiguous rather than kept as
   an attribute. */
static const char *const tensor_attr_names[] = {
    "H", "T", "_backward_hooks", "_base", "_cdata", "_grad", "_grad_fn",
    "_has_symbolic_sizes_strides", "_post_accumulate_grad_hooks", "_python_dispatch", "_version",
    "data", "device", "dtype", "grad", "grad_dtype", "grad_fn", "imag", "is_cpu", "is_cuda",
    "is_ipu", "is_leaf", "is_maia", "is_meta", "is_mkldnn", "is_mps", "is_mtia", "is_nested",
    "is_ort", "is_quantized", "is_sparse", "is_sparse_csr", "is_vulkan", "is_xla", "is_xpu",
    "itemsize", "layout", "mH", "mT", "name", "names", "nbytes", "ndim", "output_nr", "real",
    "requires_grad", "retains_grad", "shape", "volatile", "__dict__", "__class__",
};

static bool is_tensor_attr(const char *name, size_t len) {
    for (size_t i = 0; i < sizeof tensor_attr_names / sizeof tensor_attr_names[0]; i++)
        if (strlen(tensor_attr_names[i]) == len && memcmp(tensor_attr_names[i], name, len) == 0)
            return true;
    return false;
}

/* A Python object state (its __dict__, or (__dict__ or None, slots dict or None)) merged into
   the str-keyed attribute dict *attrs, which is created when NULL and something is set. */
static sdict_status state_attrs(vm *m, const sdict_value *state, const char *whose,
                                sdict_value **attrs) {
    const sdict_value *parts[2] = {state, NULL};
    if (sdict_value_kind(state) == SDICT_KIND_TUPLE) {
        if (sdict_seq_len(state) != 2)
            return fail(m, SDICT_E_PICKLE_TYPE, "%s state tuple must have 2 items", whose);
        parts[0] = sdict_seq_item(state, 0);
        parts[1] = sdict_seq_item(state, 1);
    }
    for (int i = 0; i < 2; i++) {
        const sdict_value *d = parts[i];
        if (!d || sdict_value_kind(d) == SDICT_KIND_NONE)
            continue;
        if (sdict_value_kind(d) != SDICT_KIND_DICT)
            return fail(m, SDICT_E_PICKLE_TYPE, "%s state must be a dict, found %s", whose,
                        kind_of(m, d));
        for (size_t k = 0; k < sdict_dict_len(d); k++) {
            sdict_value *key = sdict_dict_key(d, k);
            if (sdict_value_kind(key) != SDICT_KIND_STR)
                return fail(m, SDICT_E_PICKLE_TYPE, "attribute name is %s, not a str",
                            kind_of(m, key));
            size_t len = 0;
            const char *name = sdict_str_get(key, &len);
            if (strcmp(whose, "OrderedDict") != 0 && is_tensor_attr(name, len))
                return fail(m, SDICT_E_PICKLE_TYPE,
                            "ambiguous %s state: it sets '%s', an attribute of torch.Tensor "
                            "itself, which torch 2.x assigns (changing the tensor) while torch "
                            "1.13 ignores it", whose, name);
            if (!*attrs)
                NEWV(*attrs, sdict_dict_new(m->doc, false));
            TRY(dict_put(m, *attrs, key, sdict_dict_val(d, k)));
        }
    }
    return SDICT_OK;
}

/* A new value like tensor-like v (tensor, sparse, nested) made a Parameter when param, with
   requires_grad rg when rg >= 0, carrying attrs (or v's own when attrs is NULL). */
static sdict_status retag(vm *m, const sdict_value *v, bool param, int rg, sdict_value *attrs,
                          sdict_value **out) {
    const sdict_tensor *src = sdict_value_tensor(v);
    const sdict_sparse *sp = sdict_value_sparse(v);
    const sdict_nested *ns = sdict_value_nested(v);
    if (src) {
        /* the copy duplicates the dimensions: a memoized tensor rebuilt again and again must
           count them each time */
        TRY(count_dims(m, src->ndim));
        sdict_tensor t = *src;
        t.is_parameter = t.is_parameter || param;
        if (rg >= 0)
            t.requires_grad = rg != 0;
        TRY(relocate(m, sdict__tensor_value_new(m->doc, &t, sdict_value_quantizer(v), out,
                                                m->err)));
    } else if (sp) {
        sdict_sparse c = *sp;
        c.is_parameter = c.is_parameter || param;
        if (rg >= 0)
            c.requires_grad = rg != 0;
        NEWV(*out, sdict__sparse_value_new(m->doc, &c));
    } else if (ns) {
        sdict_nested c = *ns;
        c.is_parameter = c.is_parameter || param;
        if (rg >= 0)
            c.requires_grad = rg != 0;
        NEWV(*out, sdict__nested_value_new(m->doc, &c));
    } else {
        return fail(m, SDICT_E_PICKLE_TYPE, "expected a tensor, found %s", kind_of(m, v));
    }
    if (sdict_tensor_set_attrs(*out, attrs ? attrs : sdict_tensor_attrs(v)) != SDICT_OK)
        return fail(m, SDICT_E_PICKLE_TYPE, "cannot set the tensor's attributes");
    return SDICT_OK;
}

/*==================================================================================================
 MARK: numpy
==================================================================================================*/

static bool np_dtype_of(const tag *t, sdict_dtype *out) {
    switch (t->np_kind) {
    case 'f':
        *out = t->np_size == 2 ? SDICT_FLOAT16 : t->np_size == 4 ? SDICT_FLOAT32 : SDICT_FLOAT64;
        return t->np_size == 2 || t->np_size == 4 || t->np_size == 8;
    case 'i':
        *out = t->np_size == 1 ? SDICT_INT8 : t->np_size == 2 ? SDICT_INT16
               : t->np_size == 4 ? SDICT_INT32 : SDICT_INT64;
        return t->np_size == 1 || t->np_size == 2 || t->np_size == 4 || t->np_size == 8;
    case 'u':
        *out = t->np_size == 1 ? SDICT_UINT8 : t->np_size == 2 ? SDICT_UINT16
               : t->np_size == 4 ? SDICT_UINT32 : SDICT_UINT64;
        return t->np_size == 1 || t->np_size == 2 || t->np_size == 4 || t->np_size == 8;
    case 'b':
        *out = SDICT_BOOL;
        return t->np_size == 1;
    case 'c':
        *out = t->np_size == 8 ? SDICT_COMPLEX64 : SDICT_COMPLEX128;
        return t->np_size == 8 || t->np_size == 16;
    default:
        return false;
    }
}

static bool host_big_endian(void) {
    const uint16_t one = 1;
    uint8_t b;
    memcpy(&b, &one, 1);
    return b == 0;
}

static bool np_swapped(const tag *t) {
    if (t->np_size == 1 || t->np_order == '|' || t->np_order == '=')
        return false;
    return (t->np_order == '>') != host_big_endian();
}

static double half_to_double(uint16_t h) {
    int e = (h >> 10) & 0x1F, f = h & 0x3FF;
    double v = e == 0 ? ldexp(f, -24) : e == 31 ? (f ? NAN : INFINITY) : ldexp(f + 1024, e - 25);
    return (h & 0x8000) ? -v : v;
}

/* The byte order a numpy value is written back with: '=' (native) as the host spells it. */
static char np_order_of(const tag *t) {
    if (t->np_order == '=')
        return t->np_size == 1 ? '|' : host_big_endian() ? '>' : '<';
    return t->np_order;
}

/* numpy.core.multiarray.scalar(dtype, bytes) -> a number that remembers its numpy type. */
static sdict_status np_scalar(vm *m, const sdict_value *args, bool underscore, sdict_value **out) {
    TRY(args_count(m, args, "numpy scalar", 2, 2));
    tag *t = tag_of(m, sdict_seq_item(args, 0));
    size_t len = 0;
    const uint8_t *raw = sdict_bytes_get(sdict_seq_item(args, 1), &len);
    sdict_dtype dt;
    if (!t || t->kind != G_NP_DTYPE || !raw)
        return fail(m, SDICT_E_PICKLE_TYPE, "numpy scalar expects (numpy.dtype, bytes)");
    if (!np_dtype_of(t, &dt) || t->np_kind == 'c')
        return fail(m, SDICT_E_UNSUPPORTED, "numpy scalar of dtype '%c%u' is not supported",
                    t->np_kind, t->np_size);
    if (len != t->np_size)
        return fail(m, SDICT_E_PICKLE_TYPE, "numpy scalar of %u bytes carries %zu bytes",
                    t->np_size, len);
    uint8_t le[9] = {0}; /* little-endian copy, plus a zero byte for unsigned 64-bit */
    bool big = t->np_order == '>' || ((t->np_order == '=' || t->np_order == '|') && host_big_endian());
    for (size_t i = 0; i < len; i++)
        le[i] = big ? raw[len - 1 - i] : raw[i];
    uint64_t bits = sdict__le64(le);
    switch (t->np_kind) {
    case 'b': NEWV(*out, sdict_bool_new(m->doc, le[0] != 0)); break;
    case 'u': NEWV(*out, sdict__int_from_le_bytes(m->doc, le, len + 1)); break;
    case 'i': NEWV(*out, sdict__int_from_le_bytes(m->doc, le, len)); break;
    default: {
        double d;
        if (len == 8)
            memcpy(&d, &bits, 8);
        else if (len == 4) {
            uint32_t b32 = (uint32_t)bits;
            float f;
            memcpy(&f, &b32, 4);
            d = f;
        } else
            d = half_to_double((uint16_t)bits);
        NEWV(*out, sdict_float_new(m->doc, d));
    }
    }
    sdict__value_set_numpy(*out, SDICT_PYTYPE_NUMPY_SCALAR, np_order_of(t), t->np_kind,
                           t->np_size, underscore);
    return SDICT_OK;
}

/* numpy.dtype(('f8', False, True)) -> a dtype object; its byte order comes with BUILD. */
static sdict_status np_dtype_new(vm *m, const sdict_value *args, sdict_value **out) {
    TRY(args_count(m, args, "numpy.dtype", 1, 3));
    size_t len;
    const char *s = sdict_str_get(sdict_seq_item(args, 0), &len);
    if (!s)
        return fail(m, SDICT_E_PICKLE_TYPE, "numpy.dtype expects a type string");
    int size = 0;
    for (size_t i = 1; i < len && i < 4 && s[i] >= '0' && s[i] <= '9'; i++)
        size = size * 10 + (s[i] - '0');
    tag *t;
    TRY(new_tagged(m, "numpy.dtype", 11, G_NP_DTYPE, out, &t));
    t->np_kind = len ? s[0] : '?';
    t->np_size = (uint8_t)size;
    t->np_order = '=';
    sdict_dtype dt;
    if (len < 2 || len > 4 || !np_dtype_of(t, &dt))
        return fail(m, SDICT_E_UNSUPPORTED, "numpy dtype '%.*s' is not supported",
                    (int)(len > 16 ? 16 : len), s);
    return SDICT_OK;
}

/* BUILD of an ndarray: state (version, shape, dtype, is_fortran, raw bytes) -> owned tensor. */
static sdict_status np_array_build(vm *m, tag *arr, const sdict_value *state, sdict_value **out) {
    if (sdict_value_kind(state) != SDICT_KIND_TUPLE || sdict_seq_len(state) != 5)
        return fail(m, SDICT_E_PICKLE_TYPE, "ndarray state must be a 5-tuple");
    tag *dt = tag_of(m, sdict_seq_item(state, 2));
    bool fortran = false;
    size_t len = 0;
    const uint8_t *raw = sdict_bytes_get(sdict_seq_item(state, 4), &len);
    sdict_tensor t;
    memset(&t, 0, sizeof t);
    if (!dt || dt->kind != G_NP_DTYPE || !raw)
        return fail(m, SDICT_E_UNSUPPORTED,
                    "ndarray state needs a numpy dtype and raw bytes (object arrays unsupported)");
    TRY(flag_arg(m, sdict_seq_item(state, 3), "is_fortran", &fortran));
    size_t nd = 0;
    TRY(dims_len(m, sdict_seq_item(state, 1), "ndarray shape", &nd));
    TRY(dims_room(m, 2 * nd));
    TRY(dims_arg(m, sdict_seq_item(state, 1), "ndarray shape", m->dims, &t.ndim));
    TRY(count_dims(m, t.ndim));
    int64_t *shape = m->dims, *stride = m->dims + nd;
    t.shape = shape;
    t.stride = stride;
    if (!np_dtype_of(dt, &t.dtype))
        return fail(m, SDICT_E_UNSUPPORTED, "numpy dtype not supported");
    uint64_t numel = 1, nbytes;
    for (int32_t i = 0; i < t.ndim; i++)
        if (!sdict__mul_u64(numel, (uint64_t)shape[i], &numel))
            return fail(m, SDICT_E_SHAPE, "ndarray element count overflows");
    if (!sdict__mul_u64(numel, dt->np_size, &nbytes) || nbytes != len)
        return fail(m, SDICT_E_PICKLE_TYPE, "ndarray data has %zu bytes, shape needs %llu", len,
                    (unsigned long long)nbytes);
    uint64_t acc = 1;
    for (int32_t k = 0; k < t.ndim; k++) { /* C order: last dim fastest; Fortran: first fastest */
        int32_t i = fortran ? k : t.ndim - 1 - k;
        stride[i] = (int64_t)acc;
        /* an empty array may have huge other sizes: its strides must still be int64s */
        if (!sdict__mul_u64(acc, (uint64_t)(shape[i] > 0 ? shape[i] : 1), &acc) ||
            acc > (uint64_t)INT64_MAX)
            return fail(m, SDICT_E_SHAPE, "ndarray strides overflow int64");
    }
    sdict_storage *s = NULL;
    TRY(relocate(m, sdict_storage_new(len, &s, m->err)));
    if (len)
        memcpy(sdict_storage_data(s), raw, len);
    if (np_swapped(dt)) {
        if (dt->np_kind == 'c')
            sdict__byteswap(sdict_storage_data(s), (size_t)numel * 2, dt->np_size / 2u);
        else
            sdict__byteswap(sdict_storage_data(s), (size_t)numel, dt->np_size);
    }
    t.storage = s;
    sdict_status st = relocate(m, sdict_tensor_new(m->doc, &t, out, m->err));
    sdict_storage_release(s);
    if (st == SDICT_OK) {
        sdict__value_set_numpy(*out, SDICT_PYTYPE_NUMPY_ARRAY, np_order_of(dt), dt->np_kind,
                               dt->np_size, arr->np_underscore);
        arr->fwd = *out;
    }
    return st;
}

/*==================================================================================================
 MARK: Calls (REDUCE, NEWOBJ, INST, OBJ) and BUILD
==================================================================================================*/

/* A call on a class reference or an inert object: an inert object (nothing is called). */
static sdict_status inert_call(vm *m, sdict_value *fn, sdict_value *args, sdict_value *kwargs,
                               bool newobj, sdict_value **out) {
    if (sdict_value_kind(args) != SDICT_KIND_TUPLE || tag_of(m, args))
        return fail(m, SDICT_E_PICKLE_TYPE, "arguments of '%s' must be a tuple, found %s",
                    tag_text(fn), kind_of(m, args));
    if (kwargs && (sdict_value_kind(kwargs) != SDICT_KIND_DICT || tag_of(m, kwargs)))
        return fail(m, SDICT_E_PICKLE_TYPE, "keyword arguments of '%s' must be a dict, found %s",
                    tag_text(fn), kind_of(m, kwargs));
    NEWV(*out, sdict__object_call(m->doc, fn, newobj ? SDICT_OBJECT_NEWOBJ : SDICT_OBJECT_REDUCE,
                                  args, kwargs));
    return SDICT_OK;
}

static sdict_status call(vm *m, sdict_value *fn, sdict_value *args, bool newobj,
                         sdict_value **out) {
    if (is_inert(m, fn))
        return inert_call(m, fn, args, NULL, newobj, out);
    tag *t = tag_of(m, fn);
    if (!t)
        return fail(m, SDICT_E_PICKLE_TYPE, "expects a callable, found %s", kind_of(m, fn));
    const char *name = sdict_str_get(fn, NULL);
    if (t->kind == G_REFUSED)
        return fail(m, SDICT_E_PICKLE_UNSAFE_GLOBAL, "calls refused global '%s' (from offset %lld)",
                    name, (long long)t->offset);
    if (t->kind == G_STORAGE_UNKNOWN)
        return fail(m, SDICT_E_DTYPE, "unsupported dtype: '%s' is no storage class statedict "
                    "reads (from offset %lld)", name, (long long)t->offset);
    if (sdict_value_kind(args) != SDICT_KIND_TUPLE)
        return fail(m, SDICT_E_PICKLE_TYPE, "arguments of '%s' must be a tuple, found %s", name,
                    kind_of(m, args));
    size_t n = sdict_seq_len(args);
    const sdict_value *a[8] = {0};
    for (size_t i = 0; i < n && i < 8; i++)
        a[i] = sdict_seq_item(args, i);
    if (newobj && t->kind != G_ODICT && t->kind != G_SET && t->kind != G_COUNTER &&
        t->kind != G_COMPLEX)
        return fail(m, SDICT_E_PICKLE_TYPE, "cls.__new__ of '%s' is not supported", name);
    switch (t->kind) {
    case G_ODICT: {
        /* OrderedDict() as torch writes it, or OrderedDict([[k, v], ...]) as Python 2's
           pickler wrote state_dicts (items as a list of 2-item lists or tuples). */
        NEWV(*out, sdict_dict_new(m->doc, true));
        if (n == 0 || newobj)
            return SDICT_OK;
        sdict_kind k = sdict_value_kind(a[0]);
        if (n != 1 || (k != SDICT_KIND_LIST && k != SDICT_KIND_TUPLE))
            return fail(m, SDICT_E_PICKLE_TYPE, "OrderedDict() expects no arguments or one list "
                        "of pairs, got %zu arguments", n);
        for (size_t i = 0; i < sdict_seq_len(a[0]); i++) {
            sdict_value *pair = sdict_seq_item(a[0], i);
            sdict_kind pk = sdict_value_kind(pair);
            if ((pk != SDICT_KIND_LIST && pk != SDICT_KIND_TUPLE) || sdict_seq_len(pair) != 2)
                return fail(m, SDICT_E_PICKLE_TYPE, "OrderedDict() item %zu is not a pair", i);
            TRY(dict_put(m, *out, sdict_seq_item(pair, 0), sdict_seq_item(pair, 1)));
        }
        return SDICT_OK;
    }
    case G_SET: {
        NEWV(*out, sdict_set_new(m->doc));
        size_t nl = strlen(name);
        if (nl >= 9 && strcmp(name + nl - 9, "frozenset") == 0)
            (void)sdict_value_set_pytype(*out, SDICT_PYTYPE_FROZENSET);
        if (newobj || n == 0)
            return SDICT_OK;
        sdict_kind k = sdict_value_kind(a[0]);
        if (n != 1 || (k != SDICT_KIND_LIST && k != SDICT_KIND_TUPLE && k != SDICT_KIND_SET))
            return fail(m, SDICT_E_PICKLE_TYPE, "'%s' expects one list argument", name);
        for (size_t i = 0; i < sdict_seq_len(a[0]); i++)
            TRY(seq_add(m, *out, sdict_seq_item(a[0], i)));
        return SDICT_OK;
    }
    case G_SIZE:
        if (n != 1 || sdict_value_kind(a[0]) != SDICT_KIND_TUPLE)
            return fail(m, SDICT_E_PICKLE_TYPE, "torch.Size expects one tuple argument");
        for (size_t i = 0; i < sdict_seq_len(a[0]); i++)
            if (sdict_value_kind(sdict_seq_item(a[0], i)) != SDICT_KIND_INT)
                return fail(m, SDICT_E_PICKLE_TYPE, "torch.Size item %zu is %s, not an int", i,
                            kind_of(m, sdict_seq_item(a[0], i)));
        /* a tuple of its own: the argument tuple may be shared as a plain tuple */
        NEWV(*out, sdict_tuple_new(m->doc));
        for (size_t i = 0; i < sdict_seq_len(a[0]); i++)
            TRY(seq_add(m, *out, sdict_seq_item(a[0], i)));
        (void)sdict_value_set_pytype(*out, SDICT_PYTYPE_TORCH_SIZE); /* items checked above */
        return SDICT_OK;
    case G_BYTES:
        if (n != 0)
            return fail(m, SDICT_E_PICKLE_TYPE, "bytes() is only accepted without arguments");
        NEWV(*out, sdict_bytes_new(m->doc, "", 0));
        return SDICT_OK;
    case G_ENCODE:
    case G_BYTEARRAY: {
        if (t->kind == G_BYTEARRAY && (n == 0 || (n == 1 && sdict_value_kind(a[0]) == SDICT_KIND_BYTES))) {
            /* bytes of its own (the argument may be shared as plain bytes) */
            size_t bl = 0;
            const void *bp = n ? sdict_bytes_get(a[0], &bl) : "";
            TRY(count_copy(m, bl));
            NEWV(*out, sdict_bytes_new(m->doc, bp, bl));
            (void)sdict_value_set_pytype(*out, SDICT_PYTYPE_BYTEARRAY);
            return SDICT_OK;
        }
        const char *enc = n == 2 ? sdict_str_get(a[1], NULL) : NULL;
        if (!enc || sdict_value_kind(a[0]) != SDICT_KIND_STR ||
            (strcmp(enc, "latin1") != 0 && strcmp(enc, "latin-1") != 0))
            return fail(m, SDICT_E_PICKLE_TYPE, "'%s' is only accepted as (str, 'latin1')", name);
        TRY(latin1_bytes(m, a[0], out));
        if (t->kind == G_BYTEARRAY) /* bytearray('...', 'latin-1'): a new value */
            (void)sdict_value_set_pytype(*out, SDICT_PYTYPE_BYTEARRAY);
        return SDICT_OK;
    }
    case G_RT1:
    case G_RT2:
    case G_RT3: {
        /* v1 (storage, offset, size, stride); v2 adds requires_grad, backward_hooks and
           optional metadata; v3 (torch 2.x, dtypes without a storage class) puts the dtype
           before the metadata. */
        bool v1 = t->kind == G_RT1, v3 = t->kind == G_RT3;
        size_t lo = v1 ? 4 : v3 ? 7 : 6;
        sdict_tensor tt;
        TRY(args_count(m, args, name, lo, v1 ? 4 : lo + 1));
        TRY(fill_tensor(m, a, v3 ? a[6] : NULL, &tt));
        if (!v1) {
            TRY(flag_arg(m, a[4], "requires_grad", &tt.requires_grad));
            TRY(hooks_arg(m, a[5]));
            if (n == lo + 1)
                TRY(metadata_arg(m, a[lo], &tt));
        }
        return relocate(m, sdict_tensor_new(m->doc, &tt, out, m->err));
    }
    case G_RQT: {
        /* (storage, offset, size, stride, quantizer_params, requires_grad, backward_hooks) */
        sdict_tensor tt;
        sdict_quantizer q;
        memset(&q, 0, sizeof q);
        TRY(args_count(m, args, name, 7, 7));
        TRY(fill_tensor(m, a, NULL, &tt));
        TRY(flag_arg(m, a[5], "requires_grad", &tt.requires_grad));
        TRY(hooks_arg(m, a[6]));
        const sdict_value *qp = a[4];
        size_t np = sdict_seq_len(qp);
        q.qscheme = np ? sdict_qscheme_value_get(sdict_seq_item(qp, 0)) : SDICT_QSCHEME_COUNT;
        if (sdict_value_kind(qp) != SDICT_KIND_TUPLE || q.qscheme == SDICT_QSCHEME_COUNT)
            return fail(m, SDICT_E_PICKLE_TYPE, "quantizer_params must be a tuple starting with a "
                        "torch.qscheme, found %s", kind_of(m, qp));
        if (q.qscheme == SDICT_PER_TENSOR_AFFINE) {
            const sdict_value *sc = sdict_seq_item(qp, 1);
            sdict_kind sk = sdict_value_kind(sc);
            if (np != 3 || (sk != SDICT_KIND_FLOAT && sk != SDICT_KIND_INT))
                return fail(m, SDICT_E_PICKLE_TYPE, "per_tensor_affine parameters are "
                            "(qscheme, scale, zero_point)");
            q.scale = sdict_float_get(sc);
            TRY(int_arg(m, sdict_seq_item(qp, 2), "zero_point", &q.zero_point));
        } else if (q.qscheme == SDICT_PER_CHANNEL_AFFINE ||
                   q.qscheme == SDICT_PER_CHANNEL_AFFINE_FLOAT_QPARAMS) {
            if (np != 4)
                return fail(m, SDICT_E_PICKLE_TYPE, "per-channel parameters are (qscheme, "
                            "scales, zero_points, axis), got %zu items", np);
            q.scales = (sdict_value *)resolved_value(m, sdict_seq_item(qp, 1));
            q.zero_points = (sdict_value *)resolved_value(m, sdict_seq_item(qp, 2));
            TRY(int_arg(m, sdict_seq_item(qp, 3), "axis", &q.axis));
        } else {
            return fail(m, SDICT_E_UNSUPPORTED, "torch cannot load quantized tensors of qscheme "
                        "%s (\"Can't deserialize quantized tensor\")",
                        sdict_qscheme_name(q.qscheme));
        }
        return relocate_parts(m, sdict_qtensor_new(m->doc, &tt, &q, out, m->err));
    }
    case G_RSPARSE:
    case G_RSPARSE_CSR: {
        /* (layout, data): COO data (indices, values, size[, is_coalesced]); compressed
           layouts (compressed_indices, plain_indices, values, size) */
        TRY(args_count(m, args, name, 2, 2));
        sdict_sparse sp;
        memset(&sp, 0, sizeof sp);
        sp.layout = sdict_layout_value_get(a[0]);
        sp.is_coalesced = -1;
        sp.legacy_csr = t->kind == G_RSPARSE_CSR;
        size_t nd = sdict_seq_len(a[1]);
        bool coo = sp.layout == SDICT_LAYOUT_SPARSE_COO;
        if (sp.layout == SDICT_LAYOUT_COUNT)
            return fail(m, SDICT_E_PICKLE_TYPE, "%s: the layout must be a torch.layout, found %s",
                        name, kind_of(m, a[0]));
        if ((sp.legacy_csr && sp.layout != SDICT_LAYOUT_SPARSE_CSR) ||
            sp.layout == SDICT_LAYOUT_STRIDED || sp.layout >= SDICT_LAYOUT_MKLDNN)
            return fail(m, SDICT_E_UNSUPPORTED, "%s cannot rebuild layout torch.%s (torch raises "
                        "NotImplementedError)", name, sdict_layout_name(sp.layout));
        if (sdict_value_kind(a[1]) != SDICT_KIND_TUPLE || nd < (coo ? 3 : 4) || nd > 4)
            return fail(m, SDICT_E_PICKLE_TYPE, "%s data must be a tuple of %s items", name,
                        coo ? "3 or 4" : "4");
        sdict_value *d[4];
        for (size_t i = 0; i < nd; i++)
            d[i] = (sdict_value *)resolved_value(m, sdict_seq_item(a[1], i));
        sp.indices = d[0];
        sp.plain_indices = coo ? NULL : d[1];
        sp.values = coo ? d[1] : d[2];
        sp.size = coo ? d[2] : d[3];
        if (coo && nd == 4 && sdict_value_kind(d[3]) != SDICT_KIND_NONE) {
            bool c;
            TRY(flag_arg(m, d[3], "is_coalesced", &c));
            sp.is_coalesced = c;
        }
        TRY(relocate_parts(m, sdict__sparse_new(m->doc, &sp, !defer(m), out, m->err)));
        return defer_check(m, *out);
    }
    case G_RNESTED: {
        TRY(args_count(m, args, name, 4, 4));
        sdict_nested ns;
        memset(&ns, 0, sizeof ns);
        ns.buffer = (sdict_value *)resolved_value(m, a[0]);
        ns.sizes = (sdict_value *)resolved_value(m, a[1]);
        ns.strides = (sdict_value *)resolved_value(m, a[2]);
        ns.storage_offsets = (sdict_value *)resolved_value(m, a[3]);
        TRY(relocate_parts(m, sdict__nested_new(m->doc, &ns, !defer(m), out, m->err)));
        return defer_check(m, *out);
    }
    case G_RDEV_CPU:
    case G_RDEV_NUMPY: {
        /* (data, dtype, device, requires_grad): data.to(dtype), on the CPU as with
           map_location='cpu'; the data is a tensor (a numpy array already decoded to one) */
        TRY(args_count(m, args, name, 4, 4));
        const sdict_value *data = resolved_value(m, a[0]);
        const sdict_tensor *src = sdict_value_tensor(data);
        bool rg = false;
        if (!src || sdict_value_quantizer(data) || !src->storage)
            return fail(m, SDICT_E_PICKLE_TYPE, "%s data must be a plain tensor with data, "
                        "found %s", name, kind_of(m, data));
        if (sdict_value_kind(a[1]) != SDICT_KIND_DTYPE || sdict_value_kind(a[2]) != SDICT_KIND_STR)
            return fail(m, SDICT_E_PICKLE_TYPE, "%s expects (tensor, dtype, device str, bool)",
                        name);
        TRY(flag_arg(m, a[3], "requires_grad", &rg));
        sdict_dtype dt = sdict_dtype_value_get(a[1]);
        if (dt == src->dtype)
            return retag(m, data, false, rg, NULL, out);
        return convert_tensor(m, src, dt, rg, out);
    }
    case G_RWRAPPER:
        /* (cls, dtype, size, stride, storage_offset, layout, device, requires_grad): a
           storage-less instance of a tensor subclass. The allowed classes are torch.Tensor,
           Parameter and the legacy tensor types, none of which defines __torch_dispatch__, so
           torch itself fails; the classes that can be rebuilt must be allow-listed by hand. */
        TRY(args_count(m, args, name, 8, 8));
        return fail(m, SDICT_E_UNSUPPORTED, "%s of %s: torch refuses it as well (\"must define "
                    "__torch_dispatch__\"); wrapper subclasses are user classes", name,
                    kind_of(m, a[0]));
    case G_FROM_TYPE: {
        /* (func, new_type, args, state): func(*args), made an instance of new_type (torch.Tensor
           or Parameter), with the Python attributes in state */
        TRY(args_count(m, args, name, 4, 4));
        tag *ft = tag_of(m, a[0]), *cls = tag_of(m, a[1]);
        if (!ft || ft->kind == G_FROM_TYPE || ft->kind == G_REFUSED)
            return fail(m, SDICT_E_PICKLE_TYPE, "%s: the function must be a torch rebuild "
                        "function, found %s", name, kind_of(m, a[0]));
        if (!cls || (cls->kind != G_TENSOR_CLS && cls->kind != G_PARAM_CLS))
            return fail(m, SDICT_E_UNSUPPORTED, "%s: only torch.Tensor and nn.Parameter are "
                        "rebuilt (found %s)", name, kind_of(m, a[1]));
        sdict_value *inner = NULL, *attrs = NULL;
        TRY(call(m, sdict_seq_item(args, 0), sdict_seq_item(args, 2), false, &inner));
        if (!is_tensorish(inner))
            return fail(m, SDICT_E_PICKLE_TYPE, "%s: the function made %s, not a tensor", name,
                        kind_of(m, inner));
        TRY(state_attrs(m, a[3], "tensor", &attrs));
        return retag(m, inner, cls->kind == G_PARAM_CLS, -1, attrs, out);
    }
    case G_RP:
    case G_RPS: {
        /* (data, requires_grad, backward_hooks[, state]) */
        TRY(args_count(m, args, name, t->kind == G_RP ? 3 : 4, t->kind == G_RP ? 3 : 4));
        bool rg = false;
        sdict_value *attrs = NULL;
        if (!is_tensorish(a[0]))
            return fail(m, SDICT_E_PICKLE_TYPE, "Parameter data must be a tensor, found %s",
                        kind_of(m, a[0]));
        TRY(flag_arg(m, a[1], "requires_grad", &rg));
        TRY(hooks_arg(m, a[2]));
        if (t->kind == G_RPS)
            TRY(state_attrs(m, a[3], "Parameter", &attrs));
        return retag(m, a[0], true, rg, attrs, out);
    }
    case G_RMETA: {
        TRY(args_count(m, args, name, 4, 4));
        sdict_tensor mt;
        memset(&mt, 0, sizeof mt);
        if (sdict_value_kind(a[0]) != SDICT_KIND_DTYPE)
            return fail(m, SDICT_E_PICKLE_TYPE, "dtype argument must be a torch dtype, found %s",
                        kind_of(m, a[0]));
        mt.dtype = sdict_dtype_value_get(a[0]);
        TRY(shape_args(m, a[1], a[2], &mt));
        TRY(flag_arg(m, a[3], "requires_grad", &mt.requires_grad));
        return relocate(m, sdict_tensor_new(m->doc, &mt, out, m->err));
    }
    case G_COUNTER: {
        /* Counter.__reduce__ gives (Counter, (dict(self),)) */
        NEWV(*out, sdict_dict_new(m->doc, false));
        (void)sdict_value_set_pytype(*out, SDICT_PYTYPE_COUNTER); /* a plain dict: cannot fail */
        if (n == 0 || newobj)
            return SDICT_OK;
        if (n != 1 || sdict_value_kind(a[0]) != SDICT_KIND_DICT)
            return fail(m, SDICT_E_UNSUPPORTED, "Counter() is rebuilt from one dict, got %zu "
                        "arguments (first %s)", n, n ? kind_of(m, a[0]) : "none");
        for (size_t i = 0; i < sdict_dict_len(a[0]); i++)
            TRY(dict_put(m, *out, sdict_dict_key(a[0], i), sdict_dict_val(a[0], i)));
        return SDICT_OK;
    }
    case G_DEVICE: {
        /* torch.device.__reduce__ gives (device, (type,)) or (device, (type, index)); a
           "type:index" string is accepted as torch's constructor accepts it */
        size_t len = 0;
        const char *ty = n ? sdict_str_get(a[0], &len) : NULL;
        int64_t index = -1;
        char buf[64];
        if (!ty || n > 2 || len >= sizeof buf)
            return fail(m, SDICT_E_PICKLE_TYPE, "torch.device expects (type[, index]) with a "
                        "short str type");
        memcpy(buf, ty, len + 1);
        char *colon = strchr(buf, ':');
        if (colon && n == 1) {
            char *end = NULL;
            *colon = '\0';
            long long ix = strtoll(colon + 1, &end, 10);
            if (!colon[1] || *end || ix < 0)
                return fail(m, SDICT_E_PICKLE_TYPE, "invalid device string '%.60s'", ty);
            index = ix;
        }
        if (n == 2) {
            TRY(int_arg(m, a[1], "device index", &index));
            if (index < 0)
                return fail(m, SDICT_E_PICKLE_TYPE, "device index %lld must not be negative",
                            (long long)index);
        }
        *out = sdict_device_new(m->doc, buf, index);
        if (!*out)
            return fail(m, SDICT_E_PICKLE_TYPE, "invalid device type '%.60s'", buf);
        return SDICT_OK;
    }
    case G_COMPLEX: {
        /* complex(real, imag) from numbers, as complex.__reduce__ writes it */
        double part[2] = {0.0, 0.0};
        if (n > 2)
            return fail(m, SDICT_E_PICKLE_TYPE, "complex() takes at most 2 arguments, got %zu", n);
        for (size_t i = 0; i < n; i++) {
            sdict_kind k = sdict_value_kind(a[i]);
            if (k != SDICT_KIND_FLOAT && k != SDICT_KIND_INT && k != SDICT_KIND_BOOL)
                return fail(m, SDICT_E_UNSUPPORTED, "complex() from %s is not supported (only "
                            "numbers)", kind_of(m, a[i]));
            part[i] = sdict_float_get(a[i]);
        }
        NEWV(*out, sdict_complex_new(m->doc, part[0], part[1]));
        return SDICT_OK;
    }
    case G_GET_LAYOUT: {
        const char *ln = n == 1 ? sdict_str_get(a[0], NULL) : NULL;
        for (int l = 0; ln && l < SDICT_LAYOUT_COUNT; l++) {
            if (strncmp(ln, "torch.", 6) == 0 && strcmp(ln + 6, sdict_layout_name((sdict_layout)l)) == 0) {
                NEWV(*out, sdict_layout_value_new(m->doc, (sdict_layout)l));
                return SDICT_OK;
            }
        }
        return fail(m, SDICT_E_PICKLE_TYPE, "_get_layout expects a layout name such as "
                    "'torch.sparse_coo'%s%.60s%s", ln ? ", found '" : "", ln ? ln : "",
                    ln ? "'" : "");
    }
    case G_NP_SCALAR:
        return np_scalar(m, args, strncmp(name, "numpy._core.", 12) == 0, out);
    case G_NP_DTYPE_CLS:
        return np_dtype_new(m, args, out);
    case G_NP_RECONSTRUCT: {
        tag *cls = n == 3 ? tag_of(m, a[0]) : NULL;
        if (!cls || cls->kind != G_NP_NDARRAY_CLS)
            return fail(m, SDICT_E_PICKLE_TYPE, "_reconstruct is only accepted for numpy.ndarray");
        tag *arr;
        TRY(new_tagged(m, "numpy.ndarray", 13, G_NP_ARRAY, out, &arr));
        arr->np_underscore = strncmp(name, "numpy._core.", 12) == 0;
        return SDICT_OK;
    }
    case G_NP_FROMBUFFER: {
        /* numpy's reduce under protocol 5: _frombuffer(PickleBuffer(arr), dtype, shape, order),
           the buffer written in band (BYTEARRAY8, or bytes for a read-only array); the same
           array _reconstruct's BUILD state (version, shape, dtype, is_fortran, raw) describes */
        if (n != 4)
            return fail(m, SDICT_E_PICKLE_TYPE, "'%s' takes 4 arguments, got %zu", name, n);
        size_t ol = 0;
        const char *order = sdict_str_get(a[3], &ol);
        if (!order || ol != 1 || (order[0] != 'C' && order[0] != 'F'))
            return fail(m, SDICT_E_PICKLE_TYPE, "'%s': order must be 'C' or 'F'", name);
        if (sdict_value_kind(a[0]) != SDICT_KIND_BYTES)
            return fail(m, SDICT_E_PICKLE_TYPE, "'%s': buffer is a %s, not in-band bytes", name,
                        kind_of(m, a[0]));
        sdict_value *state, *ver, *fortran;
        NEWV(state, sdict_tuple_new(m->doc));
        NEWV(ver, sdict_int_new(m->doc, 1));
        NEWV(fortran, sdict_bool_new(m->doc, order[0] == 'F'));
        sdict_value *items[5] = {ver, (sdict_value *)a[2], (sdict_value *)a[1], fortran,
                                 (sdict_value *)a[0]};
        for (int i = 0; i < 5; i++)
            if (sdict_seq_append(state, items[i]) != SDICT_OK)
                return nomem(m);
        tag *arr;
        sdict_value *placeholder;
        TRY(new_tagged(m, "numpy.ndarray", 13, G_NP_ARRAY, &placeholder, &arr));
        arr->np_underscore = strncmp(name, "numpy._core.", 12) == 0;
        return np_array_build(m, arr, state, out);
    }
    default:
        return fail(m, SDICT_E_PICKLE_TYPE, "'%s' cannot be called", name);
    }
}

static sdict_status build(vm *m, sdict_value *obj, sdict_value *state, sdict_value **result) {
    *result = obj;
    tag *t = tag_of(m, obj);
    if (t) {
        if (t->kind == G_REFUSED && m->u->scan && m->u->inert)
            return SDICT_OK; /* a scan only lists globals: it goes on, nothing is built */
        if (t->kind == G_REFUSED)
            return fail(m, SDICT_E_PICKLE_UNSAFE_GLOBAL, "BUILD on %srefused global '%s'",
                        is_inert(m, obj) ? "the class reference of " : "", tag_text(obj));
        if (t->kind == G_STORAGE_UNKNOWN)
            return fail(m, SDICT_E_DTYPE, "unsupported dtype: BUILD on '%s', no storage class "
                        "statedict reads", sdict_str_get(obj, NULL));
        if (t->kind == G_NP_DTYPE) {
            const char *order = sdict_value_kind(state) == SDICT_KIND_TUPLE
                                    ? sdict_str_get(sdict_seq_item(state, 1), NULL)
                                    : NULL;
            if (!order || strlen(order) != 1 || !strchr("<>|=", order[0]))
                return fail(m, SDICT_E_PICKLE_TYPE, "numpy dtype state has no byte order");
            t->np_order = order[0];
            return SDICT_OK;
        }
        if (t->kind == G_NP_ARRAY && !t->fwd)
            return np_array_build(m, t, state, result);
        return fail(m, SDICT_E_PICKLE_TYPE, "BUILD on %s is not supported", kind_of(m, obj));
    }
    if (is_inert(m, obj)) {
        /* an inert object (class references are tagged and refused above): its state is kept
           as the pickle gives it. A second BUILD is refused: Python would merge __dict__s or
           call __setstate__ twice, which cannot be told apart without the class, and keeping
           either state alone could hide the other (a scan, which builds nothing, goes on) */
        if (!sdict__object_set_state(obj, state) && !m->u->scan)
            return fail(m, SDICT_E_PICKLE_TYPE, "second BUILD on %s (one state per inert object)",
                        kind_of(m, obj));
        return SDICT_OK;
    }
    if (sdict_value_kind(obj) != SDICT_KIND_DICT || !sdict_dict_is_ordered(obj))
        return fail(m, SDICT_E_PICKLE_TYPE, "BUILD on %s is not supported", kind_of(m, obj));
    /* OrderedDict.__reduce__ state: its __dict__ (Module.state_dict()'s _metadata), possibly
       as (dict-or-None, slotstate). Both become the dict's attributes. */
    sdict_value *attrs = sdict_dict_attrs(obj);
    TRY(state_attrs(m, state, "OrderedDict", &attrs));
    if (attrs != sdict_dict_attrs(obj) && sdict_dict_set_attrs(obj, attrs) != SDICT_OK)
        return fail(m, SDICT_E_PICKLE_TYPE, "cannot set attributes");
    return SDICT_OK;
}

/*==================================================================================================
 MARK: Final nesting check
==================================================================================================*/

/* The values a tensor-like value refers to: its attributes, a per-channel quantizer's tensors,
   the parts of sparse and nested tensors (NULLs skipped by the caller's count). */
static size_t tensor_refs(const sdict_value *v, sdict_value *out[6]) {
    const sdict_quantizer *q = sdict_value_quantizer(v);
    const sdict_sparse *sp = sdict_value_sparse(v);
    const sdict_nested *ns = sdict_value_nested(v);
    size_t n = 0;
    out[n++] = sdict_tensor_attrs(v);
    if (q && q->scales)
        out[n++] = q->scales, out[n++] = q->zero_points;
    if (sp)
        out[n++] = sp->size, out[n++] = sp->indices, out[n++] = sp->plain_indices,
        out[n++] = sp->values;
    if (ns)
        out[n++] = ns->buffer, out[n++] = ns->sizes, out[n++] = ns->strides,
        out[n++] = ns->storage_offsets;
    return n;
}

static bool is_container(const sdict_value *v) {
    sdict_kind k = sdict_value_kind(v);
    return k == SDICT_KIND_LIST || k == SDICT_KIND_TUPLE || k == SDICT_KIND_SET ||
           k == SDICT_KIND_DICT || k == SDICT_KIND_TENSOR || k == SDICT_KIND_SPARSE ||
           k == SDICT_KIND_NESTED || k == SDICT_KIND_OBJECT;
}

static size_t n_children(const sdict_value *v) {
    sdict_kind k = sdict_value_kind(v);
    sdict_value *refs[6];
    if (k == SDICT_KIND_DICT)
        return sdict_dict_len(v) * 2 + (sdict_dict_attrs(v) ? 1 : 0);
    if (k == SDICT_KIND_OBJECT)
        return 5; /* callee, args, kwargs, state, items */
    if (k == SDICT_KIND_TENSOR || k == SDICT_KIND_SPARSE || k == SDICT_KIND_NESTED)
        return tensor_refs(v, refs);
    return sdict_seq_len(v);
}

static sdict_value *child(const sdict_value *v, size_t i) {
    sdict_kind k = sdict_value_kind(v);
    if (k == SDICT_KIND_OBJECT)
        return i == 0 ? sdict_object_callee(v) : i == 1 ? sdict_object_args(v)
               : i == 2 ? sdict_object_kwargs(v) : i == 3 ? sdict_object_state(v)
                                                      : sdict_object_items(v);
    if (k == SDICT_KIND_TENSOR || k == SDICT_KIND_SPARSE || k == SDICT_KIND_NESTED) {
        sdict_value *refs[6];
        tensor_refs(v, refs);
        return refs[i];
    }
    if (k != SDICT_KIND_DICT)
        return sdict_seq_item(v, i);
    size_t n = sdict_dict_len(v);
    if (i == 2 * n)
        return sdict_dict_attrs(v);
    return (i & 1) ? sdict_dict_val(v, i / 2) : sdict_dict_key(v, i / 2);
}

/* Memo slots can link containers into any depth, or into a cycle, with a flat stack (tensors
   count as containers of their attributes and parts: an attribute list can be made to hold its
   own tensor). Users of
   the tree recurse, so the result is walked once (explicitly, each container once) and must
   nest at most max_depth deep and be acyclic. Shared containers are also how a small pickle
   describes a huge tree ("billion laughs": each list holds the previous one twice), so the
   walk also sums each container's expanded size, counting shared subtrees every time they are
   reachable (a tensor with its dimensions, a string, bytes or big int with a value per 16 of
   its bytes), and the whole must stay within max_values and
   within the pickle's size plus 64K (tree_cap): whatever walks the tree later (ls, dump,
   show, diff, convert) then does work linear in the input. A tree without shared containers
   never comes near that cap: every value costs at least one opcode byte, a dimension four
   (its size and its stride), and 16 bytes of text at least 16 bytes. */
static uint64_t tree_cap(const vm *m) {
    uint64_t cap = (uint64_t)m->n + (UINT64_C(64) << 10);
    return cap < m->u->limits->max_values ? cap : m->u->limits->max_values;
}

/* What walking a value costs by itself: 1, plus a tensor's dimensions, which are walked with
   it (printed, saved, compared). */
static uint64_t own_size(const sdict_value *v) {
    const sdict_tensor *t = sdict_value_tensor(v);
    return 1 + (t ? (uint64_t)t->ndim : 0);
}

/* What walking a leaf costs: 1, plus one per 16 bytes of a str, bytes or big int, which are
   printed or compared whole each time they are reached (one memoized 1 MB string referenced a
   million times is a terabyte of output). */
static uint64_t leaf_size(const sdict_value *v) {
    size_t len = 0;
    uint8_t tmp[16];
    switch (sdict_value_kind(v)) {
    case SDICT_KIND_STR: sdict_str_get(v, &len); break;
    case SDICT_KIND_BYTES: sdict_bytes_get(v, &len); break;
    case SDICT_KIND_INT: sdict__int_le_bytes(v, tmp, &len); break;
    default: break;
    }
    return 1 + (uint64_t)len / 16;
}

static sdict_status check_nesting(vm *m, sdict_value *root) {
    if (!is_container(root))
        return SDICT_OK;
    typedef struct frame {
        sdict_value *v;
        size_t next;
        uint64_t size; /* values in the expanded subtree so far, this container included */
    } frame;
    const uint64_t max_values = tree_cap(m);
    size_t max = m->u->limits->max_depth, nf = 0, fcap = 64;
    frame *f = sdict__malloc(fcap * sizeof *f);
    /* container address -> 1 in progress, 2 + expanded size when done; only for containers
       the unpickler may have referenced twice (sdict__value_maybe_shared): any other is
       reached exactly once, so remembering it would only cost memory */
    hmap seen = {0};
    sdict_status st = SDICT_OK;
    if (!f || (sdict__value_maybe_shared(root) &&
               !hmap_put(&seen, (uint64_t)(uintptr_t)root, 1))) {
        st = nomem(m);
        goto out;
    }
    f[nf++] = (frame){root, 0, own_size(root)};
    while (nf) {
        frame *top = &f[nf - 1];
        if (top->size > max_values) {
            st = fail(m, SDICT_E_LIMIT, "the result expands to more than %llu values through "
                      "shared references (max_values, or the %zu-byte pickle's size plus 64K): "
                      "walking it would cost far more than the file", (unsigned long long)max_values,
                      m->n);
            goto out;
        }
        if (top->next == n_children(top->v)) {
            uint64_t size = top->size;
            if (sdict__value_maybe_shared(top->v)) /* key exists: cannot fail */
                hmap_put(&seen, (uint64_t)(uintptr_t)top->v, 2 + size);
            if (--nf)
                f[nf - 1].size += size; /* both <= max_values: cannot overflow */
            continue;
        }
        sdict_value *c = child(top->v, top->next++);
        if (c && !m->u->scan && tag_of(m, c) && !is_inert(m, c)) {
            /* a callable or placeholder got into the result inside a tuple (direct items of
               lists, dicts and sets are refused as they are added) */
            st = fail(m, SDICT_E_PICKLE_TYPE, "the result holds the callable '%s', not data",
                      sdict_str_get(c, NULL));
            goto out;
        }
        if (!is_container(c)) {
            top->size += c ? leaf_size(c) : 0; /* <= 2^60 and size <= max_values: no overflow */
            continue;
        }
        bool shared = sdict__value_maybe_shared(c);
        hent *e = shared ? hmap_find(&seen, (uint64_t)(uintptr_t)c) : NULL;
        if (e && e->val >= 2) {
            top->size += e->val - 2;
            continue;
        }
        if (e) {
            st = fail(m, SDICT_E_UNSUPPORTED, "the result contains a container inside itself");
            goto out;
        }
        if (nf >= max) {
            st = fail(m, SDICT_E_LIMIT, "containers nest deeper than max_depth (%zu)", max);
            goto out;
        }
        if (nf == fcap) {
            frame *nfp = sdict__realloc(f, fcap * 2 * sizeof *f);
            if (!nfp) {
                st = nomem(m);
                goto out;
            }
            f = nfp;
            fcap *= 2;
        }
        if (shared && !hmap_put(&seen, (uint64_t)(uintptr_t)c, 1)) {
            st = nomem(m);
            goto out;
        }
        f[nf++] = (frame){c, 0, own_size(c)};
    }
out:
    sdict__free(f);
    hmap_free(&seen);
    return st;
}

/*==================================================================================================
 MARK: The machine
==================================================================================================*/

/* The memo. CPython numbers slots 0, 1, 2, ... so a dense array holds real files' memos with
   sequential, cache-friendly access; an index far beyond the slots in use (LONG_BINPUT 4e9 from
   a hostile file) goes to the hash instead, so it costs one entry, not a huge array. */
static sdict_value *memo_raw(vm *m, uint64_t idx) {
    if (idx < m->memo_len && m->memo_vec[idx])
        return m->memo_vec[idx];
    hent *e = hmap_find(&m->memo, idx);
    return e ? (sdict_value *)(uintptr_t)e->val : NULL;
}

static sdict_value *memo_get(vm *m, uint64_t idx) {
    sdict_value *v = memo_raw(m, idx);
    if (!v)
        return NULL;
    tag *t = tag_of(m, v);
    return t && t->fwd ? t->fwd : v;
}

static sdict_status memo_put(vm *m, uint64_t idx) {
    if (avail(m) < 1)
        return fail_py(m, SDICT_E_PICKLE_STACK, "memo store with an empty stack");
    sdict_value *v = m->stack[m->sp - 1];
    /* not marked shared here: a second reference can only come from a GET (memo_fetch) or a
       DUP, which mark it; torch's pickles PUT every object, most of them never fetched */
    bool is_new = memo_raw(m, idx) == NULL;
    if (is_new && m->memo_count >= m->u->limits->max_memo)
        return fail(m, SDICT_E_LIMIT, "memo exceeds max_memo (%llu entries)",
                    (unsigned long long)m->u->limits->max_memo);
    /* a slot stays where it is; a new one is dense when the array would stay within about
       twice the slots set (counting against the set slots, not the array's length, so indices
       that double each time cannot grow the array geometrically) */
    bool dense;
    if (idx < m->memo_len && m->memo_vec[idx])
        dense = true;
    else if (hmap_find(&m->memo, idx))
        dense = false;
    else
        dense = idx <= 2 * (uint64_t)m->memo_count + 1024;
    if (dense) {
        if (idx >= m->memo_cap) {
            size_t ncap = m->memo_cap ? m->memo_cap : 1024;
            while (ncap <= idx)
                ncap *= 2;
            sdict_value **nv = sdict__realloc(m->memo_vec, ncap * sizeof *nv);
            if (!nv)
                return nomem(m);
            m->memo_vec = nv;
            m->memo_cap = ncap;
        }
        while (m->memo_len <= idx)
            m->memo_vec[m->memo_len++] = NULL;
        m->memo_vec[idx] = v;
    } else if (!hmap_put(&m->memo, idx, (uint64_t)(uintptr_t)v)) {
        return nomem(m);
    }
    m->memo_count += is_new;
    return SDICT_OK;
}

static sdict_status memo_fetch(vm *m, uint64_t idx) {
    sdict_value *v = memo_get(m, idx);
    if (!v)
        return fail_py(m, SDICT_E_PICKLE_STACK, "memo slot %llu is not set",
                    (unsigned long long)idx);
    sdict__value_mark_shared(v);
    return push(m, v);
}

static sdict_status text_index(vm *m, uint64_t *idx) {
    const char *s;
    size_t len;
    TRY(read_line(m, &s, &len));
    uint64_t v = 0;
    bool digits = len > 0 && len <= 19;
    for (size_t i = 0; digits && i < len; i++) {
        digits = s[i] >= '0' && s[i] <= '9';
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (!digits)
        return (python_numeric_chars(s, len) ? fail : fail_py)(
            m, SDICT_E_PICKLE_OPCODE, "expected a memo index, found \"%.*s\"",
            (int)(len > 20 ? 20 : len), s);
    *idx = v;
    return SDICT_OK;
}

/* The dict key whose value is being built, for messages: above the topmost dict on the stack
   sits either its key (SETITEM) or, after a MARK, key/value pairs (SETITEMS) whose last
   unpaired key is it. NULL when there is no such str or int key. */
static const sdict_value *pending_key(const vm *m) {
    size_t i = m->sp;
    while (i > 0 && sdict_value_kind(m->stack[i - 1]) != SDICT_KIND_DICT)
        i--;
    if (i == 0 || i >= m->sp)
        return NULL;
    size_t start = i, end = m->sp; /* stack[i - 1] is the dict */
    for (size_t j = 0; j < m->nmarks; j++)
        if (m->marks[j] == start) {
            for (size_t k = j + 1; k < m->nmarks; k++)
                if (m->marks[k] > start) {
                    end = m->marks[k];
                    break;
                }
            if (end > start)
                i = start + (end - start - 1) / 2 * 2;
            break;
        }
    sdict_kind k = sdict_value_kind(m->stack[i]);
    return i < m->sp && (k == SDICT_KIND_STR || k == SDICT_KIND_INT) && !tag_of(m, m->stack[i])
               ? m->stack[i]
               : NULL;
}

static sdict_status persistent(vm *m, sdict_value *pid) {
    if (!m->u->persistent_load)
        return fail(m, SDICT_E_STORAGE, "persistent id but no storages to resolve it");
    sdict_value *v = NULL;
    sdict_status pst = m->u->persistent_load(m->u->ctx, pid, m->off, &v, m->err);
    if (pst == SDICT_E_DTYPE && m->err) {
        /* "unsupported dtype X for storage key '0'": name the dict key too */
        const sdict_value *key = pending_key(m);
        size_t used = strlen(m->err->message), len = 0;
        char num[24];
        const char *text = sdict_str_get(key, &len);
        int64_t iv = 0;
        if (!text && key && sdict_int_get(key, &iv) == SDICT_OK) {
            len = (size_t)snprintf(num, sizeof num, "%lld", (long long)iv);
            text = num;
        }
        if (text && used < sizeof m->err->message) {
            char shown[64];
            size_t n = 0;
            for (size_t c = 0; c < len && n + 5 < sizeof shown; c++) {
                unsigned char ch = (unsigned char)text[c];
                if (ch < 0x20 || ch == 0x7f || ch == '\\' || ch == '\'')
                    n += (size_t)snprintf(shown + n, sizeof shown - n, "\\x%02x", ch);
                else
                    shown[n++] = (char)ch;
            }
            shown[n] = '\0';
            snprintf(m->err->message + used, sizeof m->err->message - used, " (value of key '%s%s')",
                     shown, n < len ? "..." : "");
        }
    }
    TRY(pst);
    if (!v)
        return fail(m, SDICT_E_STORAGE, "persistent id resolved to nothing");
    return push(m, v);
}

static sdict_status step(vm *m, bool *stop, sdict_value **result) {
    const uint8_t *p = m->p;
    sdict_value *v = NULL, *a = NULL, *b = NULL;
    size_t base = 0;
    const char *s;
    size_t len;
    m->off = (int64_t)m->pos;
    m->op = p[m->pos++];
    switch (m->op) {
    case OP_PROTO:
        TRY(need_bytes(m, 1));
        if (p[m->pos] > 5)
            return fail_py(m, SDICT_E_PICKLE_OPCODE, "unsupported pickle protocol %u", p[m->pos]);
        m->proto = p[m->pos];
        m->pos++;
        return SDICT_OK;
    case OP_FRAME: {
        TRY(need_bytes(m, 8));
        uint64_t fl = sdict__le64(p + m->pos);
        m->pos += 8;
        /* frames only batch reads; the content is ordinary opcodes */
        if (fl > m->n - m->pos)
            return sdict__err(m->err, SDICT_E_TRUNCATED, m->rec, m->off,
                              "FRAME: declares %llu bytes, only %zu remain",
                              (unsigned long long)fl, m->n - m->pos);
        if (m->pos + (size_t)fl > m->frame_end) /* a frame inside a frame: the outer end counts */
            m->frame_end = m->pos + (size_t)fl;
        return SDICT_OK;
    }
    case OP_STOP:
        /* CPython reads a frame of 8 KiB or more from the file in one read, a smaller one from
           its peek buffer: where the next pickle of a stream starts (the end of the frame, or
           just after STOP) then depends on buffering, so a frame must end at its STOP. */
        if (m->frame_end > m->pos)
            return fail(m, SDICT_E_FORMAT,
                        "ambiguous pickle: STOP at byte %llu inside a FRAME that runs to byte "
                        "%llu (Python may go on reading after the frame, statedict after STOP)",
                        (unsigned long long)m->off, (unsigned long long)m->frame_end);
        TRY(pop(m, result));
        *stop = true;
        return SDICT_OK;
    case OP_MARK:
        if (m->nmarks >= m->u->limits->max_depth)
            return fail(m, SDICT_E_LIMIT, "MARKs nest deeper than max_depth (%u)",
                        m->u->limits->max_depth);
        if (m->nmarks == m->mcap) {
            size_t ncap = m->mcap ? m->mcap * 2 : 32;
            size_t *nm = sdict__realloc(m->marks, ncap * sizeof *nm);
            if (!nm)
                return nomem(m);
            m->marks = nm;
            m->mcap = ncap;
        }
        m->marks[m->nmarks++] = m->sp;
        return SDICT_OK;
    case OP_POP:
        if (avail(m) > 0)
            m->sp--;
        else if (m->nmarks) /* CPython: POP with nothing above the MARK drops the MARK */
            m->nmarks--;
        else
            return fail_py(m, SDICT_E_PICKLE_STACK, "pop from an empty stack");
        return SDICT_OK;
    case OP_POP_MARK:
        TRY(pop_mark(m, &base));
        m->sp = base;
        return SDICT_OK;
    case OP_DUP:
        TRY(need_items(m, 1));
        sdict__value_mark_shared(m->stack[m->sp - 1]);
        return push(m, m->stack[m->sp - 1]);
    case OP_NONE: return push(m, sdict_none_new(m->doc));
    case OP_NEWTRUE: return push(m, sdict_bool_new(m->doc, true));
    case OP_NEWFALSE: return push(m, sdict_bool_new(m->doc, false));
    case OP_BININT1:
        TRY(need_bytes(m, 1));
        return push(m, sdict_int_new(m->doc, p[m->pos++]));
    case OP_BININT2:
        TRY(need_bytes(m, 2));
        m->pos += 2;
        return push(m, sdict_int_new(m->doc, sdict__le16(p + m->pos - 2)));
    case OP_BININT:
        TRY(need_bytes(m, 4));
        m->pos += 4;
        return push(m, sdict_int_new(m->doc, (int32_t)sdict__le32(p + m->pos - 4)));
    case OP_LONG1:
    case OP_LONG4: {
        uint64_t n;
        if (m->op == OP_LONG1) {
            TRY(need_bytes(m, 1));
            n = p[m->pos++];
        } else {
            TRY(need_bytes(m, 4));
            int32_t sn = (int32_t)sdict__le32(p + m->pos);
            m->pos += 4;
            if (sn < 0)
                return fail_py(m, SDICT_E_PICKLE_OPCODE, "negative byte count %d", (int)sn);
            n = (uint64_t)sn;
        }
        TRY(check_len(m, n));
        /* Python refuses int <-> str past 4300 digits (1786 bytes); anything longer is no
           checkpoint's, and printing it exactly would cost quadratic time */
        if (n > 1786)
            return fail(m, SDICT_E_LIMIT, "integer of %llu bytes (more than Python's 4300 "
                        "decimal digits)", (unsigned long long)n);
        v = sdict__int_from_le_bytes(m->doc, p + m->pos, (size_t)n);
        m->pos += (size_t)n;
        return push(m, v);
    }
    case OP_INT:
        TRY(read_line(m, &s, &len));
        if (len == 2 && s[0] == '0' && (s[1] == '0' || s[1] == '1')) /* Python 2 bools */
            return push(m, sdict_bool_new(m->doc, s[1] == '1'));
        TRY(int_from_text(m, s, len, &v));
        return push(m, v);
    case OP_LONG:
        TRY(read_line(m, &s, &len));
        if (len && s[len - 1] == 'L')
            len--;
        TRY(int_from_text(m, s, len, &v));
        return push(m, v);
    case OP_FLOAT:
        TRY(read_line(m, &s, &len));
        TRY(float_text(m, s, len, &v));
        return push(m, v);
    case OP_BINFLOAT: {
        TRY(need_bytes(m, 8));
        uint64_t bits = 0;
        for (int i = 0; i < 8; i++)
            bits = (bits << 8) | p[m->pos + (size_t)i];
        m->pos += 8;
        double d;
        memcpy(&d, &bits, 8);
        return push(m, sdict_float_new(m->doc, d));
    }
    case OP_SHORT_BINUNICODE:
    case OP_BINUNICODE:
    case OP_BINUNICODE8:
    case OP_SHORT_BINBYTES:
    case OP_BINBYTES:
    case OP_BINBYTES8:
    case OP_BYTEARRAY8:
    case OP_SHORT_BINSTRING:
    case OP_BINSTRING: {
        size_t w = (m->op == OP_SHORT_BINUNICODE || m->op == OP_SHORT_BINBYTES ||
                    m->op == OP_SHORT_BINSTRING)
                       ? 1
                   : (m->op == OP_BINUNICODE8 || m->op == OP_BINBYTES8 || m->op == OP_BYTEARRAY8)
                       ? 8
                       : 4;
        TRY(need_bytes(m, w));
        uint64_t n = w == 1 ? p[m->pos] : w == 4 ? sdict__le32(p + m->pos) : sdict__le64(p + m->pos);
        if (m->op == OP_BINSTRING && (int32_t)n < 0)
            return fail_py(m, SDICT_E_PICKLE_OPCODE, "negative byte count %d", (int)(int32_t)n);
        m->pos += w;
        TRY(check_len(m, n));
        const uint8_t *data = p + m->pos;
        m->pos += (size_t)n;
        if (m->op == OP_SHORT_BINSTRING || m->op == OP_BINSTRING) {
            TRY(py2_str(m, data, (size_t)n, &v));
            return push(m, v);
        }
        if (m->op == OP_SHORT_BINUNICODE || m->op == OP_BINUNICODE || m->op == OP_BINUNICODE8) {
            size_t bad = sdict__utf8_invalid_at(data, (size_t)n);
            if (bad != (size_t)n)
                return fail_py(m, SDICT_E_PICKLE_OPCODE, "string is not UTF-8: byte %zu of %llu is "
                            "0x%02x (Python's unpickler raises UnicodeDecodeError)", bad,
                            (unsigned long long)n, data[bad]);
            return push(m, sdict_str_new(m->doc, (const char *)data, (size_t)n));
        }
        v = sdict_bytes_new(m->doc, data, (size_t)n);
        if (v && m->op == OP_BYTEARRAY8)
            (void)sdict_value_set_pytype(v, SDICT_PYTYPE_BYTEARRAY);
        return push(m, v);
    }
    case OP_STRING:
        TRY(read_line(m, &s, &len));
        TRY(string_op(m, s, len, &v));
        return push(m, v);
    case OP_UNICODE:
        TRY(read_line(m, &s, &len));
        TRY(unicode_op(m, s, len, &v));
        return push(m, v);
    case OP_EMPTY_LIST: return push(m, sdict_list_new(m->doc));
    case OP_EMPTY_TUPLE: return push(m, sdict_tuple_new(m->doc));
    case OP_EMPTY_DICT: return push(m, sdict_dict_new(m->doc, false));
    case OP_EMPTY_SET: return push(m, sdict_set_new(m->doc));
    case OP_TUPLE1:
    case OP_TUPLE2:
    case OP_TUPLE3: {
        size_t k = (size_t)(m->op - OP_TUPLE1 + 1);
        TRY(need_items(m, k));
        TRY(collect(m, m->sp - k, SDICT_KIND_TUPLE, &v));
        return push(m, v);
    }
    case OP_TUPLE:
    case OP_LIST:
    case OP_FROZENSET:
        TRY(pop_mark(m, &base));
        TRY(collect(m, base,
                    m->op == OP_TUPLE  ? SDICT_KIND_TUPLE
                    : m->op == OP_LIST ? SDICT_KIND_LIST
                                       : SDICT_KIND_SET,
                    &v));
        if (m->op == OP_FROZENSET)
            (void)sdict_value_set_pytype(v, SDICT_PYTYPE_FROZENSET);
        return push(m, v);
    case OP_DICT:
        TRY(pop_mark(m, &base));
        if ((m->sp - base) % 2)
            return fail_py(m, SDICT_E_PICKLE_STACK, "odd number of items (%zu) for key/value pairs",
                        m->sp - base);
        NEWV(v, sdict_dict_new(m->doc, false));
        for (size_t i = base; i < m->sp; i += 2)
            TRY(dict_put(m, v, m->stack[i], m->stack[i + 1]));
        m->sp = base;
        return push(m, v);
    case OP_APPEND:
    case OP_SETITEM:
    case OP_APPENDS:
    case OP_SETITEMS:
    case OP_ADDITEMS: {
        bool batch = m->op == OP_APPENDS || m->op == OP_SETITEMS || m->op == OP_ADDITEMS;
        size_t k = m->op == OP_SETITEM ? 2 : 1;
        if (batch) {
            TRY(pop_mark(m, &base));
        } else {
            TRY(need_items(m, k + 1));
            base = m->sp - k;
        }
        if (base == 0 || base <= base_of(m))
            return fail_py(m, SDICT_E_PICKLE_STACK, "no target object below the items");
        sdict_value *target = m->stack[base - 1];
        sdict_kind tk = sdict_value_kind(target);
        bool dict_op = m->op == OP_SETITEM || m->op == OP_SETITEMS;
        if (dict_op && tk == SDICT_KIND_OBJECT && !tag_of(m, target) &&
            sdict_object_how(target) != SDICT_OBJECT_CLASS) {
            /* an inert object of a dict subclass (collections.defaultdict, an OrderedDict
               subclass): Python's __setitem__ would store the items; they are kept in order as
               (key, value) pairs (sdict_object_items), keys of any kind */
            if ((m->sp - base) % 2)
                return fail_py(m, SDICT_E_PICKLE_STACK,
                               "odd number of items (%zu) for key/value pairs", m->sp - base);
            sdict_value *items = sdict_object_items(target), *pair;
            if (!items) {
                NEWV(items, sdict_list_new(m->doc));
                if (!sdict__object_set_items(target, items))
                    return nomem(m);
            }
            for (size_t i = base; i < m->sp; i += 2) {
                NEWV(pair, sdict_tuple_new(m->doc));
                TRY(seq_add(m, pair, m->stack[i]));
                TRY(seq_add(m, pair, m->stack[i + 1]));
                TRY(seq_add(m, items, pair));
            }
            m->sp = base;
            return SDICT_OK;
        }
        sdict_kind want = dict_op ? SDICT_KIND_DICT
                          : m->op == OP_ADDITEMS ? SDICT_KIND_SET
                                                 : SDICT_KIND_LIST;
        /* Python calls the target's append/extend/__setitem__/add: a list takes items by
           index and a bytearray is a mutable sequence, other built-in values fail there too */
        bool python_too = !tag_of(m, target) && tk != SDICT_KIND_BYTES &&
                          !(tk == SDICT_KIND_LIST && dict_op);
        if (tk != want || tag_of(m, target))
            return (python_too ? fail_py : fail)(m, SDICT_E_PICKLE_TYPE,
                                                 "target must be a %s, found %s",
                                                 sdict_kind_name(want), kind_of(m, target));
        if (sdict_value_pytype(target) == SDICT_PYTYPE_FROZENSET)
            /* frozensets are immutable (and may already be a dict key, hashed) */
            return fail_py(m, SDICT_E_PICKLE_TYPE, "ADDITEMS on a frozenset");
        if (dict_op) {
            if ((m->sp - base) % 2)
                return fail_py(m, SDICT_E_PICKLE_STACK,
                            "odd number of items (%zu) for key/value pairs", m->sp - base);
            for (size_t i = base; i < m->sp; i += 2)
                TRY(dict_put(m, target, m->stack[i], m->stack[i + 1]));
        } else {
            for (size_t i = base; i < m->sp; i++)
                TRY(seq_add(m, target, m->stack[i]));
        }
        m->sp = base;
        return SDICT_OK;
    }
    case OP_GET:
    case OP_BINGET:
    case OP_LONG_BINGET:
    case OP_PUT:
    case OP_BINPUT:
    case OP_LONG_BINPUT: {
        uint64_t idx = 0;
        if (m->op == OP_GET || m->op == OP_PUT) {
            TRY(text_index(m, &idx));
        } else if (m->op == OP_BINGET || m->op == OP_BINPUT) {
            TRY(need_bytes(m, 1));
            idx = p[m->pos++];
        } else {
            TRY(need_bytes(m, 4));
            idx = sdict__le32(p + m->pos);
            m->pos += 4;
        }
        if (m->op == OP_GET || m->op == OP_BINGET || m->op == OP_LONG_BINGET)
            return memo_fetch(m, idx);
        return memo_put(m, idx);
    }
    case OP_MEMOIZE:
        return memo_put(m, m->memo_count);
    case OP_GLOBAL:
    case OP_INST: {
        const char *ms, *ns;
        size_t ml, nl;
        TRY(read_line(m, &ms, &ml));
        TRY(read_line(m, &ns, &nl));
        if (m->op == OP_GLOBAL) {
            TRY(push_global(m, ms, ml, ns, nl, false, &v));
            return push(m, v);
        }
        TRY(push_global(m, ms, ml, ns, nl, true, &a));
        TRY(pop_mark(m, &base));
        TRY(collect(m, base, SDICT_KIND_TUPLE, &b));
        TRY(call(m, a, b, false, &v));
        return push(m, v);
    }
    case OP_STACK_GLOBAL: {
        TRY(pop(m, &b));
        TRY(pop(m, &a));
        const char *ms = tag_of(m, a) ? NULL : sdict_str_get(a, NULL);
        const char *ns = tag_of(m, b) ? NULL : sdict_str_get(b, NULL);
        size_t ml = 0, nl = 0;
        if (!ms || !ns)
            return (tag_of(m, a) || tag_of(m, b) ? fail : fail_py)(
                m, SDICT_E_PICKLE_TYPE, "module and name must both be str (found %s, %s)",
                        sdict_kind_name(sdict_value_kind(a)), sdict_kind_name(sdict_value_kind(b)));
        sdict_str_get(a, &ml);
        sdict_str_get(b, &nl);
        TRY(push_global(m, ms, ml, ns, nl, false, &v));
        return push(m, v);
    }
    case OP_REDUCE:
    case OP_NEWOBJ:
        TRY(need_items(m, 2));
        b = m->stack[--m->sp];
        a = m->stack[--m->sp];
        TRY(call(m, a, b, m->op == OP_NEWOBJ, &v));
        return push(m, v);
    case OP_NEWOBJ_EX: {
        sdict_value *kw;
        TRY(need_items(m, 3));
        kw = m->stack[--m->sp];
        b = m->stack[--m->sp];
        a = m->stack[--m->sp];
        if (is_inert(m, a)) {
            TRY(inert_call(m, a, b, kw, true, &v));
            return push(m, v);
        }
        if (tag_of(m, a) && tag_of(m, a)->kind == G_REFUSED)
            return call(m, a, b, true, &v);
        if (sdict_value_kind(kw) != SDICT_KIND_DICT || sdict_dict_len(kw) != 0)
            return fail(m, SDICT_E_PICKLE_TYPE, "keyword arguments are not supported");
        TRY(call(m, a, b, true, &v));
        return push(m, v);
    }
    case OP_OBJ:
        TRY(pop_mark(m, &base));
        if (m->sp == base)
            return fail_py(m, SDICT_E_PICKLE_STACK, "no class after the MARK");
        a = m->stack[base];
        TRY(collect(m, base + 1, SDICT_KIND_TUPLE, &b));
        m->sp = base;
        TRY(call(m, a, b, false, &v));
        return push(m, v);
    case OP_BUILD:
        TRY(need_items(m, 2));
        b = m->stack[--m->sp];
        a = m->stack[m->sp - 1];
        TRY(build(m, a, b, &v));
        m->stack[m->sp - 1] = v;
        return SDICT_OK;
    case OP_PERSID:
        TRY(read_line(m, &s, &len));
        NEWV(v, sdict_str_new(m->doc, s, len));
        return persistent(m, v);
    case OP_BINPERSID:
        TRY(pop(m, &v));
        return persistent(m, v);
    case OP_EXT1:
    case OP_EXT2:
    case OP_EXT4:
        /* Python raises too (no extension code is registered in torch's process), but the
           code names a global: refusing it is never "Python stops here" */
        return fail(m, SDICT_E_PICKLE_UNSAFE_GLOBAL,
                    "extension registry codes name globals indirectly and are refused");
    case OP_NEXT_BUFFER:
    case OP_READONLY_BUFFER:
        /* Python raises too: torch passes no buffers= to pickle.load */
        return fail_py(m, SDICT_E_UNSUPPORTED, "out-of-band buffers are not supported");
    default:
        return fail_py(m, SDICT_E_PICKLE_OPCODE, "unknown opcode 0x%02x", (unsigned)m->op);
    }
}

sdict_status sdict__unpickle(sdict__unpickler *u, sdict_value **out, sdict_error *err) {
    if (out)
        *out = NULL;
    if (!u || !out || !u->doc || !u->limits || (!u->data && u->size))
        return sdict__err(err, SDICT_E_INVALID_ARG, u ? u->record : NULL, -1,
                          "unpickle: missing document, data or limits");
    vm m;
    memset(&m, 0, sizeof m);
    m.u = u;
    m.doc = u->doc;
    m.err = err;
    m.rec = u->record;
    m.p = u->data;
    m.n = u->size;
    u->consumed = 0;
    sdict_status st = SDICT_OK;
    bool stop = false;
    sdict_value *result = NULL;
    while (!stop) {
        if (m.pos >= m.n) {
            st = sdict__err(err, SDICT_E_TRUNCATED, m.rec, (int64_t)m.n,
                            "pickle ends without STOP");
            break;
        }
        if (sdict__doc_value_count(m.doc) > u->limits->max_values) {
            st = fail(&m, SDICT_E_LIMIT, "more than max_values (%llu) values",
                      (unsigned long long)u->limits->max_values);
            break;
        }
        st = step(&m, &stop, &result);
        if (st != SDICT_OK)
            break;
    }
    if (st == SDICT_OK && !u->scan && tag_of(&m, result) && !is_inert(&m, result)) {
        tag *t = tag_of(&m, result);
        if (t->fwd)
            result = t->fwd;
        else
            st = fail(&m, SDICT_E_PICKLE_TYPE, "the pickle's result is %s, not data",
                      kind_of(&m, result));
    }
    if (st == SDICT_OK)
        st = check_nesting(&m, result);
    if (st == SDICT_OK) {
        u->consumed = m.pos;
        *out = result;
    }
    sdict__free(m.stack);
    sdict__free(m.dims);
    sdict__free(m.marks);
    sdict__free(m.tags);
    sdict__free(m.memo_vec);
    hmap_free(&m.memo);
    hmap_free(&m.tagmap);
    return st;
}
