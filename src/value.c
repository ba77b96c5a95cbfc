/*
 value.c - documents and the values they own: scalars, big ints, strings, sequences, dicts
 with a hash index, tensors and storage values, and dotted-path lookup.

 Ownership: a doc allocates every value from its own chunked pool and every string, big-int
 digit string and tensor struct from its own bump arena; nothing is freed before
 sdict_doc_free(), which walks the pool once to free the growable arrays (sequence items,
 dict items and indexes) and to drop the storage references held by tensor and storage values.
 A value may therefore sit in several containers at once (the pickle memo shares objects).

 Dicts (and sets) keep insertion order in a plain array and, once they hold more than
 INDEX_MIN items, an open-addressing index of item positions (linear probing, load <= 1/2).
 Items are never removed, so the index needs no tombstones.
*/
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/*==================================================================================================
 MARK: Types
==================================================================================================*/

enum {
    FLAG_ORDERED = 1, /* dict: collections.OrderedDict */
    FLAG_BIG = 2,     /* int: value in u.s as minimal little-endian two's complement bytes */
    FLAG_NP_UNDERSCORE_CORE = 4, /* numpy value pickled through numpy._core (numpy >= 2) */
    FLAG_SHARED = 8,  /* the unpickler may have referenced it more than once (memo, DUP) */
    FLAG_TAGGED = 16, /* the unpickler keeps a tag for it (a callable or placeholder) */
};

#define INDEX_MIN 8      /* dicts/sets up to this many items are searched linearly */
#define MAX_KEY_DEPTH 200 /* nesting of tuple keys; deeper (or cyclic) keys are unhashable */

typedef struct dict_item {
    sdict_value *key;
    sdict_value *val;
    uint64_t hash;
} dict_item;

/* What a tensor value holds beyond the public struct: its quantizer and Python attributes.
   Sparse and nested values keep their description and attributes the same way. */
typedef struct tensor_ext {
    sdict_tensor t;
    bool quantized;
    sdict_quantizer q;
    sdict_value *attrs;
} tensor_ext;

typedef struct composite_ext {
    union {
        sdict_sparse s;
        sdict_nested n;
    } d;
    sdict_value *attrs;
} composite_ext;

/* An inert object (SDICT_KIND_OBJECT): what the pickle said to call, never called. */
typedef struct object_ext {
    const char *module, *name; /* the class (or function) reference, text in the arena */
    sdict_value *callee;       /* the inert object called, when the callable was one */
    sdict_value *args;         /* tuple; NULL for a class reference */
    sdict_value *kwargs;       /* NEWOBJ_EX keyword arguments, or NULL */
    sdict_value *state;        /* BUILD state, or NULL */
    sdict_value *items;        /* (key, value) tuples SETITEM/SETITEMS gave it, or NULL */
    sdict_object_call how;
} object_ext;

struct sdict_value {
    uint8_t kind;
    uint8_t flags;
    uint8_t pytype;   /* sdict_pytype */
    char np_order;    /* numpy values: byte order '<', '>', '|' */
    char np_kind;     /* numpy values: 'f', 'i', 'u', 'b', 'c' */
    uint8_t np_size;  /* numpy values: bytes per element */
    sdict_doc *doc;
    union {
        bool b;
        int64_t i;
        double d;
        sdict_dtype dtype;
        struct { /* str, bytes, big int */
            const uint8_t *p;
            size_t len;
        } s;
        struct { /* list, tuple, set (sets also use index) */
            sdict_value **items;
            size_t len, cap;
            uint32_t *index; /* slot -> item position + 1, 0 empty; NULL below INDEX_MIN */
            size_t index_cap;
        } seq;
        struct {
            dict_item *items;
            size_t len, cap;
            uint32_t *index;
            size_t index_cap;
            sdict_value *attrs;
        } dict;
        tensor_ext *tensor;
        composite_ext *comp; /* sparse, nested */
        object_ext *obj;
        struct {
            sdict_storage *storage;
            sdict_dtype dtype;
        } st;
        struct { /* device: type text in the arena, index or -1 */
            const char *type;
            int64_t index;
        } dev;
        struct {
            double re, im;
        } c;
        int e; /* qscheme, layout */
    } u;
};

typedef struct vchunk {
    struct vchunk *next;
    size_t used, cap;
    sdict_value v[];
} vchunk;

typedef struct bchunk {
    struct bchunk *next;
    size_t used, cap;
    _Alignas(16) uint8_t data[];
} bchunk;

struct sdict_doc {
    vchunk *values;      /* newest first */
    bchunk *bytes;       /* newest first; the head is the one being filled */
    sdict_value *root;
    uint64_t nvalues;
    sdict_value *metadata; /* safetensors __metadata__ dict, or NULL */
    sdict_value *script;   /* TorchScript archive side data (sdict__doc_script), or NULL */
    sdict_format format;
    bool big_endian;
};

#define BCHUNK_SIZE ((size_t)64 * 1024)

/*==================================================================================================
 MARK: Arena
==================================================================================================*/

/* n bytes, 16-byte aligned, owned by the doc; NULL on overflow or out of memory. */
static void *arena_alloc(sdict_doc *doc, size_t n) {
    if (n > SIZE_MAX - 15 - sizeof(bchunk)) /* rounding up must not wrap to a small block */
        return NULL;
    n = (n + 15) & ~(size_t)15;
    if (n == 0)
        n = 16;
    bchunk *c = doc->bytes;
    if (c && c->cap - c->used >= n) {
        void *p = c->data + c->used;
        c->used += n;
        return p;
    }
    if (n > SIZE_MAX - sizeof(bchunk))
        return NULL;
    if (n > BCHUNK_SIZE / 4) {
        /* big blocks get their own chunk behind the head, so the head keeps filling */
        bchunk *b = sdict__malloc(sizeof(bchunk) + n);
        if (!b)
            return NULL;
        b->used = b->cap = n;
        if (c) {
            b->next = c->next;
            c->next = b;
        } else {
            b->next = NULL;
            doc->bytes = b;
        }
        return b->data;
    }
    bchunk *b = sdict__malloc(sizeof(bchunk) + BCHUNK_SIZE);
    if (!b)
        return NULL;
    b->next = c;
    b->cap = BCHUNK_SIZE;
    b->used = n;
    doc->bytes = b;
    return b->data;
}

static sdict_value *value_alloc(sdict_doc *doc, sdict_kind kind) {
    if (!doc)
        return NULL;
    vchunk *c = doc->values;
    if (!c || c->used == c->cap) {
        /* chunks grow from 32 to 4096 values: small docs stay small, big ones allocate rarely */
        size_t cap = c ? c->cap * 2 : 32;
        if (cap > 4096)
            cap = 4096;
        vchunk *n = sdict__malloc(sizeof(vchunk) + cap * sizeof(sdict_value));
        if (!n)
            return NULL;
        n->next = c;
        n->used = 0;
        n->cap = cap;
        doc->values = c = n;
    }
    sdict_value *v = &c->v[c->used++];
    memset(v, 0, sizeof *v);
    v->kind = (uint8_t)kind;
    v->doc = doc;
    doc->nvalues++;
    return v;
}

/*==================================================================================================
 MARK: Documents
==================================================================================================*/

sdict_status sdict_doc_new(sdict_doc **out, sdict_error *err) {
    if (!out)
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "out is NULL");
    *out = NULL;
    sdict_doc *doc = sdict__malloc(sizeof *doc);
    if (!doc)
        return sdict__err(err, SDICT_E_NOMEM, NULL, -1, "out of memory for a document");
    memset(doc, 0, sizeof *doc);
    doc->root = value_alloc(doc, SDICT_KIND_NONE);
    if (!doc->root) {
        sdict_doc_free(doc);
        return sdict__err(err, SDICT_E_NOMEM, NULL, -1, "out of memory for a document");
    }
    *out = doc;
    return SDICT_OK;
}

void sdict_doc_free(sdict_doc *doc) {
    if (!doc)
        return;
    for (vchunk *c = doc->values, *next; c; c = next) {
        next = c->next;
        for (size_t i = 0; i < c->used; i++) {
            sdict_value *v = &c->v[i];
            switch (v->kind) {
            case SDICT_KIND_LIST:
            case SDICT_KIND_TUPLE:
            case SDICT_KIND_SET:
                sdict__free(v->u.seq.items);
                sdict__free(v->u.seq.index);
                break;
            case SDICT_KIND_DICT:
                sdict__free(v->u.dict.items);
                sdict__free(v->u.dict.index);
                break;
            case SDICT_KIND_TENSOR:
                if (v->u.tensor)
                    sdict_storage_release(v->u.tensor->t.storage);
                break;
            case SDICT__KIND_STORAGE:
                sdict_storage_release(v->u.st.storage);
                break;
            default:
                break;
            }
        }
        sdict__free(c);
    }
    for (bchunk *b = doc->bytes, *next; b; b = next) {
        next = b->next;
        sdict__free(b);
    }
    sdict__free(doc);
}

sdict_value *sdict_doc_root(const sdict_doc *doc) { return doc ? doc->root : NULL; }

sdict_status sdict_doc_set_root(sdict_doc *doc, sdict_value *v) {
    if (!doc || !v || v->doc != doc)
        return SDICT_E_INVALID_ARG;
    doc->root = v;
    return SDICT_OK;
}

sdict_value *sdict_doc_metadata(const sdict_doc *doc) { return doc ? doc->metadata : NULL; }

sdict_status sdict_doc_set_metadata(sdict_doc *doc, sdict_value *md) {
    if (!doc || (md && (md->doc != doc || md->kind != SDICT_KIND_DICT)))
        return SDICT_E_INVALID_ARG;
    doc->metadata = md;
    return SDICT_OK;
}

sdict_value *sdict__doc_script(const sdict_doc *doc) { return doc ? doc->script : NULL; }

void sdict__doc_set_script(sdict_doc *doc, sdict_value *info) {
    if (doc)
        doc->script = info;
}

void sdict__doc_set_format(sdict_doc *doc, sdict_format f, bool big_endian) {
    if (!doc)
        return;
    doc->format = f;
    doc->big_endian = big_endian;
}

sdict_format sdict_doc_format(const sdict_doc *doc) {
    return doc ? doc->format : SDICT_FORMAT_NONE;
}

bool sdict_doc_big_endian(const sdict_doc *doc) { return doc && doc->big_endian; }

uint64_t sdict__doc_value_count(const sdict_doc *doc) { return doc ? doc->nvalues : 0; }

const char *sdict_format_name(sdict_format f) {
    switch (f) {
    case SDICT_FORMAT_NONE: return "none";
    case SDICT_FORMAT_ZIP: return "zip";
    case SDICT_FORMAT_LEGACY: return "legacy";
    case SDICT_FORMAT_TAR: return "tar";
    case SDICT_FORMAT_SAFETENSORS: return "safetensors";
    case SDICT_FORMAT_SHARDED: return "sharded";
    case SDICT_FORMAT_DCP: return "dcp";
    default: return "?";
    }
}

const char *sdict_kind_name(sdict_kind kind) {
    static const char *const names[] = {"none",   "bool",    "int",     "float",  "str",
                                        "bytes",  "list",    "tuple",   "set",    "dict",
                                        "tensor", "dtype",   "device",  "complex", "qscheme",
                                        "layout", "sparse",  "nested",  "storage", "object"};
    if ((unsigned)kind < SDICT_KIND_COUNT)
        return names[kind];
    if (kind == SDICT__KIND_STORAGE)
        return "storage";
    return "?";
}

sdict_doc *sdict__value_doc(const sdict_value *v) { return v ? v->doc : NULL; }

sdict_kind sdict_value_kind(const sdict_value *v) {
    return v ? (sdict_kind)v->kind : SDICT_KIND_NONE;
}

/*==================================================================================================
 MARK: Scalars
==================================================================================================*/

sdict_value *sdict_none_new(sdict_doc *doc) { return value_alloc(doc, SDICT_KIND_NONE); }

sdict_value *sdict_bool_new(sdict_doc *doc, bool b) {
    sdict_value *v = value_alloc(doc, SDICT_KIND_BOOL);
    if (v)
        v->u.b = b;
    return v;
}

sdict_value *sdict_int_new(sdict_doc *doc, int64_t i) {
    sdict_value *v = value_alloc(doc, SDICT_KIND_INT);
    if (v)
        v->u.i = i;
    return v;
}

sdict_value *sdict_float_new(sdict_doc *doc, double d) {
    sdict_value *v = value_alloc(doc, SDICT_KIND_FLOAT);
    if (v)
        v->u.d = d;
    return v;
}

/* A str/bytes-like value: len bytes copied into the arena plus a NUL terminator. */
static sdict_value *blob_new(sdict_doc *doc, sdict_kind kind, const void *p, size_t len) {
    if (!doc || (!p && len) || len == SIZE_MAX)
        return NULL;
    uint8_t *copy = arena_alloc(doc, len + 1);
    if (!copy)
        return NULL;
    if (len)
        memcpy(copy, p, len);
    copy[len] = 0;
    sdict_value *v = value_alloc(doc, kind);
    if (v) {
        v->u.s.p = copy;
        v->u.s.len = len;
    }
    return v;
}

sdict_value *sdict_str_new(sdict_doc *doc, const char *s, size_t len) {
    return blob_new(doc, SDICT_KIND_STR, s, len);
}

sdict_value *sdict_bytes_new(sdict_doc *doc, const void *p, size_t len) {
    return blob_new(doc, SDICT_KIND_BYTES, p, len);
}

sdict_value *sdict_dtype_value_new(sdict_doc *doc, sdict_dtype dtype) {
    if ((unsigned)dtype >= SDICT_DTYPE_COUNT)
        return NULL;
    sdict_value *v = value_alloc(doc, SDICT_KIND_DTYPE);
    if (v)
        v->u.dtype = dtype;
    return v;
}

sdict_value *sdict_device_new(sdict_doc *doc, const char *type, int64_t index) {
    if (!doc || !type || !type[0] || index < -1)
        return NULL;
    size_t n = strlen(type);
    for (size_t i = 0; i < n; i++) {
        char c = type[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_'))
            return NULL;
    }
    char *copy = n < 256 ? arena_alloc(doc, n + 1) : NULL;
    if (!copy)
        return NULL;
    memcpy(copy, type, n + 1);
    sdict_value *v = value_alloc(doc, SDICT_KIND_DEVICE);
    if (v) {
        v->u.dev.type = copy;
        v->u.dev.index = index;
    }
    return v;
}

sdict_value *sdict_complex_new(sdict_doc *doc, double re, double im) {
    sdict_value *v = value_alloc(doc, SDICT_KIND_COMPLEX);
    if (v) {
        v->u.c.re = re;
        v->u.c.im = im;
    }
    return v;
}

static const char *const qscheme_names[SDICT_QSCHEME_COUNT] = {
    "per_tensor_affine", "per_channel_affine", "per_tensor_symmetric", "per_channel_symmetric",
    "per_channel_affine_float_qparams"};
static const char *const layout_names[SDICT_LAYOUT_COUNT] = {
    "strided", "sparse_coo", "sparse_csr", "sparse_csc", "sparse_bsr", "sparse_bsc", "_mkldnn",
    "jagged"};

const char *sdict_qscheme_name(sdict_qscheme q) {
    return (unsigned)q < SDICT_QSCHEME_COUNT ? qscheme_names[q] : "?";
}

const char *sdict_layout_name(sdict_layout l) {
    return (unsigned)l < SDICT_LAYOUT_COUNT ? layout_names[l] : "?";
}

sdict_value *sdict_qscheme_value_new(sdict_doc *doc, sdict_qscheme q) {
    sdict_value *v = (unsigned)q < SDICT_QSCHEME_COUNT ? value_alloc(doc, SDICT_KIND_QSCHEME) : NULL;
    if (v)
        v->u.e = (int)q;
    return v;
}

sdict_value *sdict_layout_value_new(sdict_doc *doc, sdict_layout l) {
    sdict_value *v = (unsigned)l < SDICT_LAYOUT_COUNT ? value_alloc(doc, SDICT_KIND_LAYOUT) : NULL;
    if (v)
        v->u.e = (int)l;
    return v;
}

sdict_qscheme sdict_qscheme_value_get(const sdict_value *v) {
    return v && v->kind == SDICT_KIND_QSCHEME ? (sdict_qscheme)v->u.e : SDICT_QSCHEME_COUNT;
}

sdict_layout sdict_layout_value_get(const sdict_value *v) {
    return v && v->kind == SDICT_KIND_LAYOUT ? (sdict_layout)v->u.e : SDICT_LAYOUT_COUNT;
}

const char *sdict_device_get(const sdict_value *v, int64_t *index) {
    bool ok = v && v->kind == SDICT_KIND_DEVICE;
    if (index)
        *index = ok ? v->u.dev.index : -1;
    return ok ? v->u.dev.type : NULL;
}

bool sdict_complex_get(const sdict_value *v, double *re, double *im) {
    bool ok = v && v->kind == SDICT_KIND_COMPLEX;
    if (re)
        *re = ok ? v->u.c.re : NAN;
    if (im)
        *im = ok ? v->u.c.im : NAN;
    return ok;
}

bool sdict_bool_get(const sdict_value *v) { return v && v->kind == SDICT_KIND_BOOL && v->u.b; }

sdict_status sdict_int_get(const sdict_value *v, int64_t *out) {
    if (out)
        *out = 0;
    if (!v || !out)
        return SDICT_E_INVALID_ARG;
    if (v->kind == SDICT_KIND_BOOL) {
        *out = v->u.b;
        return SDICT_OK;
    }
    if (v->kind != SDICT_KIND_INT)
        return SDICT_E_INVALID_ARG;
    if (v->flags & FLAG_BIG)
        return SDICT_E_LIMIT;
    *out = v->u.i;
    return SDICT_OK;
}

double sdict_float_get(const sdict_value *v) {
    if (!v)
        return NAN;
    switch (v->kind) {
    case SDICT_KIND_FLOAT: return v->u.d;
    case SDICT_KIND_BOOL: return v->u.b ? 1.0 : 0.0;
    case SDICT_KIND_INT:
        if (v->flags & FLAG_BIG) {
            /* sum of the two's complement bytes; the top byte carries the sign */
            const uint8_t *p = v->u.s.p;
            size_t n = v->u.s.len;
            double d = (double)(int8_t)p[n - 1];
            for (size_t k = n - 1; k-- > 0;)
                d = d * 256.0 + p[k];
            return d;
        }
        return (double)v->u.i;
    default: return NAN;
    }
}

const char *sdict_str_get(const sdict_value *v, size_t *len) {
    if (!v || v->kind != SDICT_KIND_STR) {
        if (len)
            *len = 0;
        return NULL;
    }
    if (len)
        *len = v->u.s.len;
    return (const char *)v->u.s.p;
}

const void *sdict_bytes_get(const sdict_value *v, size_t *len) {
    if (!v || v->kind != SDICT_KIND_BYTES) {
        if (len)
            *len = 0;
        return NULL;
    }
    if (len)
        *len = v->u.s.len;
    return v->u.s.p;
}

sdict_dtype sdict_dtype_value_get(const sdict_value *v) {
    return v && v->kind == SDICT_KIND_DTYPE ? v->u.dtype : SDICT_DTYPE_COUNT;
}

/*==================================================================================================
 MARK: Big ints
==================================================================================================*/

/* Length of the minimal two's complement encoding of n little-endian bytes: drop top bytes
   that only repeat the sign of the byte below. 0 for zero. */
static size_t le_minimal_len(const uint8_t *p, size_t n) {
    while (n > 1) {
        uint8_t top = p[n - 1], below = p[n - 2];
        if ((top == 0x00 && !(below & 0x80)) || (top == 0xFF && (below & 0x80)))
            n--;
        else
            break;
    }
    if (n == 1 && p[0] == 0)
        n = 0;
    return n;
}

sdict_value *sdict__int_from_le_bytes(sdict_doc *doc, const uint8_t *p, size_t n) {
    if (!doc || (!p && n))
        return NULL;
    n = le_minimal_len(p, n);
    if (n <= 8) {
        uint64_t u = 0;
        for (size_t k = 0; k < n; k++)
            u |= (uint64_t)p[k] << (8 * k);
        if (n && n < 8 && (p[n - 1] & 0x80))
            u |= ~(uint64_t)0 << (8 * n); /* sign-extend */
        return sdict_int_new(doc, (int64_t)u);
    }
    uint8_t *copy = arena_alloc(doc, n);
    if (!copy)
        return NULL;
    memcpy(copy, p, n);
    sdict_value *v = value_alloc(doc, SDICT_KIND_INT);
    if (v) {
        v->flags = FLAG_BIG;
        v->u.s.p = copy;
        v->u.s.len = n;
    }
    return v;
}

const uint8_t *sdict__int_le_bytes(const sdict_value *v, uint8_t buf[16], size_t *n) {
    if (!v || v->kind != SDICT_KIND_INT) {
        if (n)
            *n = 0;
        return NULL;
    }
    if (v->flags & FLAG_BIG) {
        *n = v->u.s.len;
        return v->u.s.p;
    }
    uint64_t u = (uint64_t)v->u.i;
    for (int k = 0; k < 8; k++)
        buf[k] = (uint8_t)(u >> (8 * k));
    *n = le_minimal_len(buf, 8);
    return buf;
}

/* Decimal text of a little-endian two's complement number of n bytes (n > 8) into out,
   which must hold at least 3 * n + 2 chars. Returns the length. Uses limbs (scratch, n/4+1
   words) and repeated division by 10^9. */
static size_t big_to_decimal(const uint8_t *p, size_t n, uint32_t *limbs, char *out) {
    bool neg = (p[n - 1] & 0x80) != 0;
    size_t nl = (n + 3) / 4;
    /* magnitude: negate by complement + 1 when negative */
    unsigned carry = neg ? 1 : 0;
    memset(limbs, 0, nl * sizeof *limbs);
    for (size_t k = 0; k < n; k++) {
        unsigned b = neg ? (unsigned)(uint8_t)~p[k] + carry : p[k];
        if (neg)
            carry = b >> 8;
        limbs[k / 4] |= (uint32_t)(b & 0xFF) << (8 * (k % 4));
    }
    size_t len = 0;
    while (nl > 0 && limbs[nl - 1] == 0)
        nl--;
    /* digits come out least significant first, in groups of nine */
    while (nl > 0) {
        uint64_t rem = 0;
        for (size_t k = nl; k-- > 0;) {
            uint64_t cur = (rem << 32) | limbs[k];
            limbs[k] = (uint32_t)(cur / 1000000000u);
            rem = cur % 1000000000u;
        }
        while (nl > 0 && limbs[nl - 1] == 0)
            nl--;
        for (int d = 0; d < 9; d++) {
            out[len++] = (char)('0' + rem % 10);
            rem /= 10;
            if (nl == 0 && rem == 0)
                break;
        }
    }
    if (len == 0)
        out[len++] = '0';
    if (neg)
        out[len++] = '-';
    for (size_t a = 0, b = len - 1; a < b; a++, b--) {
        char c = out[a];
        out[a] = out[b];
        out[b] = c;
    }
    return len;
}

size_t sdict_int_to_string(const sdict_value *v, char *buf, size_t n) {
    if (!v || v->kind != SDICT_KIND_INT) {
        if (buf && n)
            buf[0] = '\0';
        return 0;
    }
    if (!(v->flags & FLAG_BIG)) {
        char tmp[24];
        int len = snprintf(tmp, sizeof tmp, "%lld", (long long)v->u.i);
        if (buf && n) {
            size_t c = (size_t)len < n ? (size_t)len : n - 1;
            memcpy(buf, tmp, c);
            buf[c] = '\0';
        }
        return (size_t)len;
    }
    size_t nb = v->u.s.len;
    size_t text_cap = 3 * nb + 2, limb_n = nb / 4 + 1;
    /* small numbers on the stack; huge ones (LONG4 can be any length) on the heap */
    char stack_text[512];
    uint32_t stack_limbs[64];
    char *text = stack_text;
    uint32_t *limbs = stack_limbs;
    if (text_cap > sizeof stack_text || limb_n > 64) {
        text = sdict__malloc(text_cap);
        limbs = sdict__calloc(limb_n, sizeof *limbs);
        if (!text || !limbs) {
            sdict__free(text);
            sdict__free(limbs);
            if (buf && n)
                buf[0] = '\0';
            return 0;
        }
    }
    size_t len = big_to_decimal(v->u.s.p, nb, limbs, text);
    if (buf && n) {
        size_t c = len < n ? len : n - 1;
        memcpy(buf, text, c);
        buf[c] = '\0';
    }
    if (text != stack_text) {
        sdict__free(text);
        sdict__free(limbs);
    }
    return len;
}

/*==================================================================================================
 MARK: Hashing and key equality
==================================================================================================*/

static uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= UINT64_C(0xbf58476d1ce4e5b9);
    x ^= x >> 27;
    x *= UINT64_C(0x94d049bb133111eb);
    x ^= x >> 31;
    return x;
}

/* mix64 keyed with the process's random seed: which keys collide depends on it, so a file
   cannot choose dict keys or set items that make their index quadratic. */
static uint64_t smix(uint64_t x) { return mix64(x ^ sdict__hash_seed()); }

static uint64_t hash_bytes(uint64_t seed, const uint8_t *p, size_t n) {
    uint64_t h = seed ^ (n * UINT64_C(0x9E3779B97F4A7C15));
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ smix(w)) * UINT64_C(0x100000001b3);
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    for (size_t k = 0; k < n; k++)
        w |= (uint64_t)p[k] << (8 * k);
    h = (h ^ smix(w ^ 0xA5)) * UINT64_C(0x100000001b3);
    return smix(h);
}

static uint64_t hash_int64(int64_t i) { return smix((uint64_t)i ^ SDICT_KIND_INT); }

/* Numbers as Python compares them as dict keys and set items: True == 1 == 1.0 == (1+0j), so
   torch.load's dict {1: 'a', True: 'b', 1.0: 'c'} is {1: 'c'}. A number is an exact int64 (i),
   a big int (p, n: minimal little-endian two's complement), or a double (d) that is no int64;
   im is the imaginary part of a complex. */
typedef struct num {
    enum { NUM_I64, NUM_BIG, NUM_DBL } form;
    int64_t i;
    const uint8_t *p;
    size_t n;
    double d, im;
} num;

static bool is_number(const sdict_value *v) {
    return v->kind == SDICT_KIND_BOOL || v->kind == SDICT_KIND_INT ||
           v->kind == SDICT_KIND_FLOAT || v->kind == SDICT_KIND_COMPLEX;
}

static num num_of(const sdict_value *v) {
    num x = {NUM_I64, 0, NULL, 0, 0.0, 0.0};
    double d;
    switch (v->kind) {
    case SDICT_KIND_BOOL: x.i = v->u.b; return x;
    case SDICT_KIND_INT:
        if (v->flags & FLAG_BIG)
            x.form = NUM_BIG, x.p = v->u.s.p, x.n = v->u.s.len;
        else
            x.i = v->u.i;
        return x;
    case SDICT_KIND_COMPLEX: d = v->u.c.re, x.im = v->u.c.im; break;
    default: d = v->u.d; break;
    }
    /* an integral double within int64 is that int (-2^63 <= d < 2^63: the cast is defined) */
    if (d == floor(d) && d >= -9223372036854775808.0 && d < 9223372036854775808.0)
        x.i = (int64_t)d;
    else
        x.form = NUM_DBL, x.d = d;
    return x;
}

/* The double a big int equals exactly, if there is one (at most 53 significant bits, below
   2^1024). */
static bool big_as_double(const uint8_t *p, size_t n, double *out) {
    bool neg = n && (p[n - 1] & 0x80);
    uint8_t mag[64];
    if (n > sizeof mag)
        return false;
    int carry = 1; /* magnitude: two's complement negated when negative */
    for (size_t k = 0; k < n; k++) {
        int b = neg ? (uint8_t)~p[k] + carry : p[k];
        carry = neg && b > 0xFF;
        mag[k] = (uint8_t)b;
    }
    int hi = -1, lo = -1;
    for (size_t k = 0; k < n * 8; k++)
        if (mag[k / 8] >> (k % 8) & 1) {
            if (lo < 0)
                lo = (int)k;
            hi = (int)k;
        }
    if (hi < 0 || hi >= 1024 || hi - lo >= 53)
        return false;
    uint64_t m = 0;
    for (int k = hi; k >= lo; k--)
        m = m << 1 | (uint64_t)(mag[k / 8] >> (k % 8) & 1);
    *out = ldexp((double)m, lo) * (neg ? -1 : 1);
    return true;
}

static uint64_t hash_double(double d) {
    uint64_t b;
    memcpy(&b, &d, 8);
    return smix(b ^ ((uint64_t)SDICT_KIND_FLOAT << 56));
}

/* Equal numbers hash alike: an int64 by its value, a double by its bits, a big int by the
   double it equals or else its bytes; a non-zero imaginary part is mixed in. */
static uint64_t num_hash(const num *x) {
    uint64_t h;
    double d;
    if (x->form == NUM_I64)
        h = hash_int64(x->i);
    else if (x->form == NUM_DBL)
        h = hash_double(x->d);
    else if (big_as_double(x->p, x->n, &d))
        h = hash_double(d);
    else
        h = hash_bytes((uint64_t)SDICT_KIND_INT << 56 | 1, x->p, x->n);
    return x->im == 0.0 ? h : smix(h ^ hash_double(x->im));
}

static bool num_equal(const num *a, const num *b) {
    double d;
    if (a->im != b->im)
        return false;
    if (a->form == b->form) {
        switch (a->form) {
        case NUM_I64: return a->i == b->i;
        case NUM_DBL: return a->d == b->d;
        default: return a->n == b->n && memcmp(a->p, b->p, a->n) == 0;
        }
    }
    if (a->form == NUM_I64 || b->form == NUM_I64)
        return false; /* an int64 never equals a big int or a double outside int64 */
    const num *big = a->form == NUM_BIG ? a : b, *dbl = a->form == NUM_BIG ? b : a;
    return big_as_double(big->p, big->n, &d) && d == dbl->d;
}

/* Hash of a hashable key value; false when the value cannot be a dict key. Keys equal in
   Python hash alike (numbers: see num). */
static bool key_hash(const sdict_value *v, int depth, uint64_t *out) {
    if (!v || depth > MAX_KEY_DEPTH)
        return false;
    uint64_t kind = v->kind;
    if (is_number(v)) {
        num x = num_of(v);
        *out = num_hash(&x);
        return true;
    }
    switch (v->kind) {
    case SDICT_KIND_NONE: *out = smix(0x4e6f6e65); return true;
    case SDICT_KIND_STR:
    case SDICT_KIND_BYTES: *out = hash_bytes(kind, v->u.s.p, v->u.s.len); return true;
    case SDICT_KIND_DTYPE: *out = smix((kind << 32) | (uint64_t)v->u.dtype); return true;
    case SDICT_KIND_QSCHEME:
    case SDICT_KIND_LAYOUT: *out = smix((kind << 32) | (uint64_t)v->u.e); return true;
    case SDICT_KIND_OBJECT: /* hashed by identity, as object.__hash__ */
        *out = smix((uint64_t)(uintptr_t)v ^ (kind << 56));
        return true;
    case SDICT_KIND_DEVICE:
        *out = hash_bytes(kind ^ (uint64_t)v->u.dev.index, (const uint8_t *)v->u.dev.type,
                          strlen(v->u.dev.type));
        return true;
    case SDICT_KIND_SET: {
        /* a frozenset (Python's hash(frozenset) ignores order: so does this sum) */
        if (v->pytype != SDICT_PYTYPE_FROZENSET)
            return false;
        uint64_t h = mix64(kind << 40 | v->u.seq.len);
        for (size_t k = 0; k < v->u.seq.len; k++) {
            uint64_t e;
            if (!key_hash(v->u.seq.items[k], depth + 1, &e))
                return false;
            h += mix64(e);
        }
        *out = mix64(h);
        return true;
    }
    case SDICT_KIND_TUPLE: {
        uint64_t h = smix(kind << 40 | v->u.seq.len);
        for (size_t k = 0; k < v->u.seq.len; k++) {
            uint64_t e;
            if (!key_hash(v->u.seq.items[k], depth + 1, &e))
                return false;
            h = smix(h ^ e) + k;
        }
        *out = h;
        return true;
    }
    default: return false;
    }
}

static size_t set_find_at(const sdict_value *s, const sdict_value *item, uint64_t h, int depth);

static bool key_equal(const sdict_value *a, const sdict_value *b, int depth) {
    if (a == b)
        return true;
    if (!a || !b || depth > MAX_KEY_DEPTH)
        return false;
    if (is_number(a) && is_number(b)) {
        num x = num_of(a), y = num_of(b);
        return num_equal(&x, &y);
    }
    if (a->kind != b->kind)
        return false;
    switch (a->kind) {
    case SDICT_KIND_NONE: return true;
    case SDICT_KIND_STR:
    case SDICT_KIND_BYTES:
        return a->u.s.len == b->u.s.len && memcmp(a->u.s.p, b->u.s.p, a->u.s.len) == 0;
    case SDICT_KIND_DTYPE: return a->u.dtype == b->u.dtype;
    case SDICT_KIND_QSCHEME:
    case SDICT_KIND_LAYOUT: return a->u.e == b->u.e;
    case SDICT_KIND_DEVICE:
        return a->u.dev.index == b->u.dev.index && strcmp(a->u.dev.type, b->u.dev.type) == 0;
    case SDICT_KIND_TUPLE:
        if (a->u.seq.len != b->u.seq.len)
            return false;
        for (size_t k = 0; k < a->u.seq.len; k++)
            if (!key_equal(a->u.seq.items[k], b->u.seq.items[k], depth + 1))
                return false;
        return true;
    case SDICT_KIND_SET:
        /* frozensets: equal when every item of a is in b (items are distinct, sizes equal) */
        if (a->pytype != SDICT_PYTYPE_FROZENSET || b->pytype != SDICT_PYTYPE_FROZENSET ||
            a->u.seq.len != b->u.seq.len)
            return false;
        for (size_t k = 0; k < a->u.seq.len; k++) { /* b's index: linear, not quadratic */
            uint64_t h;
            if (!key_hash(a->u.seq.items[k], depth + 1, &h) ||
                set_find_at(b, a->u.seq.items[k], h, depth + 1) == SIZE_MAX)
                return false;
        }
        return true;
    default: return false;
    }
}

/*==================================================================================================
 MARK: Open-addressing index (shared by dicts and sets)
==================================================================================================*/

/* Builds a fresh index with room for at least `want` items at load <= 1/2. hash_at(i) gives
   the hash of item i. Returns false on out of memory (the old index is left in place). */
typedef uint64_t (*hash_at_fn)(const sdict_value *c, size_t i);

static bool index_rebuild(uint32_t **index, size_t *index_cap, size_t len, size_t want,
                          const sdict_value *c, hash_at_fn hash_at) {
    size_t cap = 16;
    while (cap < want * 2)
        cap *= 2;
    uint32_t *idx = sdict__calloc(cap, sizeof *idx);
    if (!idx)
        return false;
    for (size_t i = 0; i < len; i++) {
        size_t slot = (size_t)hash_at(c, i) & (cap - 1);
        while (idx[slot])
            slot = (slot + 1) & (cap - 1);
        idx[slot] = (uint32_t)(i + 1);
    }
    sdict__free(*index);
    *index = idx;
    *index_cap = cap;
    return true;
}

static uint64_t dict_hash_at(const sdict_value *d, size_t i) { return d->u.dict.items[i].hash; }

static uint64_t set_hash_at(const sdict_value *s, size_t i) {
    uint64_t h = 0;
    key_hash(s->u.seq.items[i], 0, &h); /* set items were checked hashable on insert */
    return h;
}

/*==================================================================================================
 MARK: Sequences
==================================================================================================*/

static sdict_value *seq_new(sdict_doc *doc, sdict_kind kind) { return value_alloc(doc, kind); }

sdict_value *sdict_list_new(sdict_doc *doc) { return seq_new(doc, SDICT_KIND_LIST); }
sdict_value *sdict_tuple_new(sdict_doc *doc) { return seq_new(doc, SDICT_KIND_TUPLE); }
sdict_value *sdict_set_new(sdict_doc *doc) { return seq_new(doc, SDICT_KIND_SET); }

static bool is_seq(const sdict_value *v) {
    return v && (v->kind == SDICT_KIND_LIST || v->kind == SDICT_KIND_TUPLE ||
                 v->kind == SDICT_KIND_SET);
}

static bool seq_reserve(sdict_value *s, size_t extra) {
    size_t len = s->u.seq.len;
    if (s->u.seq.cap - len >= extra)
        return true;
    if (len >= UINT32_MAX - extra)
        return false; /* positions must fit the 32-bit index */
    size_t cap = s->u.seq.cap ? s->u.seq.cap * 2 : 4;
    while (cap < len + extra)
        cap *= 2;
    sdict_value **items = sdict__realloc(s->u.seq.items, cap * sizeof *items);
    if (!items)
        return false;
    s->u.seq.items = items;
    s->u.seq.cap = cap;
    return true;
}

/* Position of an item equal to `item` in a set, or SIZE_MAX. */
static size_t set_find_at(const sdict_value *s, const sdict_value *item, uint64_t h, int depth) {
    if (s->u.seq.index) {
        size_t mask = s->u.seq.index_cap - 1;
        for (size_t slot = (size_t)h & mask;; slot = (slot + 1) & mask) {
            uint32_t e = s->u.seq.index[slot];
            if (!e)
                return SIZE_MAX;
            if (key_equal(s->u.seq.items[e - 1], item, depth))
                return e - 1;
        }
    }
    for (size_t k = 0; k < s->u.seq.len; k++)
        if (key_equal(s->u.seq.items[k], item, depth))
            return k;
    return SIZE_MAX;
}

static size_t set_find(const sdict_value *s, const sdict_value *item, uint64_t h) {
    return set_find_at(s, item, h, 0);
}

sdict_status sdict_seq_append(sdict_value *seq, sdict_value *item) {
    if (!is_seq(seq) || !item || item->doc != seq->doc)
        return SDICT_E_INVALID_ARG;
    uint64_t h = 0;
    if (seq->kind == SDICT_KIND_SET) {
        if (!key_hash(item, 0, &h))
            return SDICT_E_INVALID_ARG;
        if (set_find(seq, item, h) != SIZE_MAX)
            return SDICT_OK;
    }
    if (!seq_reserve(seq, 1))
        return SDICT_E_NOMEM;
    if (seq->kind == SDICT_KIND_SET && seq->u.seq.len + 1 > INDEX_MIN &&
        (seq->u.seq.len + 1) * 2 > seq->u.seq.index_cap) {
        if (!index_rebuild(&seq->u.seq.index, &seq->u.seq.index_cap, seq->u.seq.len,
                           seq->u.seq.len + 1, seq, set_hash_at))
            return SDICT_E_NOMEM;
    }
    size_t pos = seq->u.seq.len++;
    seq->u.seq.items[pos] = item;
    if (seq->kind == SDICT_KIND_SET && seq->u.seq.index) {
        size_t mask = seq->u.seq.index_cap - 1, slot = (size_t)h & mask;
        while (seq->u.seq.index[slot])
            slot = (slot + 1) & mask;
        seq->u.seq.index[slot] = (uint32_t)(pos + 1);
    }
    return SDICT_OK;
}

size_t sdict_seq_len(const sdict_value *seq) { return is_seq(seq) ? seq->u.seq.len : 0; }

sdict_value *sdict_seq_item(const sdict_value *seq, size_t i) {
    if (!is_seq(seq) || i >= seq->u.seq.len)
        return NULL;
    return seq->u.seq.items[i];
}

void sdict__value_retag(sdict_value *v, sdict_kind kind) {
    if (!is_seq(v) || (kind != SDICT_KIND_LIST && kind != SDICT_KIND_TUPLE &&
                       kind != SDICT_KIND_SET) || v->kind == kind)
        return;
    if (kind != SDICT_KIND_SET) {
        /* sets keep an index that lists and tuples do not use */
        sdict__free(v->u.seq.index);
        v->u.seq.index = NULL;
        v->u.seq.index_cap = 0;
        v->kind = (uint8_t)kind;
        return;
    }
    /* Becoming a set: keep the first of equal items, drop unhashable ones (a set cannot hold
       them), and index when large. Works in place, so it cannot fail; if the index cannot be
       allocated lookups stay linear. */
    sdict_value **items = v->u.seq.items;
    size_t n = v->u.seq.len;
    v->kind = SDICT_KIND_SET;
    v->u.seq.len = 0;
    sdict__free(v->u.seq.index);
    v->u.seq.index = NULL;
    v->u.seq.index_cap = 0;
    if (n > INDEX_MIN)
        index_rebuild(&v->u.seq.index, &v->u.seq.index_cap, 0, n, v, set_hash_at);
    for (size_t k = 0; k < n; k++) {
        uint64_t h;
        if (!key_hash(items[k], 0, &h) || set_find(v, items[k], h) != SIZE_MAX)
            continue;
        size_t pos = v->u.seq.len++;
        items[pos] = items[k];
        if (v->u.seq.index) {
            size_t mask = v->u.seq.index_cap - 1, slot = (size_t)h & mask;
            while (v->u.seq.index[slot])
                slot = (slot + 1) & mask;
            v->u.seq.index[slot] = (uint32_t)(pos + 1);
        }
    }
}

/*==================================================================================================
 MARK: Dicts
==================================================================================================*/

void sdict__value_mark_shared(sdict_value *v) {
    if (v)
        v->flags |= FLAG_SHARED;
}

bool sdict__value_maybe_shared(const sdict_value *v) {
    return v && (v->flags & FLAG_SHARED);
}

void sdict__value_mark_tagged(sdict_value *v) {
    if (v)
        v->flags |= FLAG_TAGGED;
}

bool sdict__value_maybe_tagged(const sdict_value *v) {
    return v && (v->flags & FLAG_TAGGED);
}

sdict_value *sdict_dict_new(sdict_doc *doc, bool ordered) {
    sdict_value *v = value_alloc(doc, SDICT_KIND_DICT);
    if (v && ordered)
        v->flags = FLAG_ORDERED;
    return v;
}

bool sdict_dict_is_ordered(const sdict_value *d) {
    return d && d->kind == SDICT_KIND_DICT && (d->flags & FLAG_ORDERED);
}


size_t sdict_dict_len(const sdict_value *d) {
    return d && d->kind == SDICT_KIND_DICT ? d->u.dict.len : 0;
}

sdict_value *sdict_dict_key(const sdict_value *d, size_t i) {
    if (!d || d->kind != SDICT_KIND_DICT || i >= d->u.dict.len)
        return NULL;
    return d->u.dict.items[i].key;
}

sdict_value *sdict_dict_val(const sdict_value *d, size_t i) {
    if (!d || d->kind != SDICT_KIND_DICT || i >= d->u.dict.len)
        return NULL;
    return d->u.dict.items[i].val;
}

/* Generic lookup: position of the item whose hash is h and for which eq(item key, ctx) holds,
   or SIZE_MAX. */
typedef bool (*key_match_fn)(const sdict_value *key, const void *ctx);

static size_t dict_lookup(const sdict_value *d, uint64_t h, key_match_fn eq, const void *ctx) {
    const dict_item *items = d->u.dict.items;
    if (d->u.dict.index) {
        size_t mask = d->u.dict.index_cap - 1;
        for (size_t slot = (size_t)h & mask;; slot = (slot + 1) & mask) {
            uint32_t e = d->u.dict.index[slot];
            if (!e)
                return SIZE_MAX;
            if (items[e - 1].hash == h && eq(items[e - 1].key, ctx))
                return e - 1;
        }
    }
    for (size_t k = 0; k < d->u.dict.len; k++)
        if (items[k].hash == h && eq(items[k].key, ctx))
            return k;
    return SIZE_MAX;
}

static bool match_value(const sdict_value *key, const void *ctx) {
    return key_equal(key, ctx, 0);
}

typedef struct strn {
    const char *p;
    size_t n;
} strn;

static bool match_strn(const sdict_value *key, const void *ctx) {
    const strn *s = ctx;
    return key->kind == SDICT_KIND_STR && key->u.s.len == s->n &&
           memcmp(key->u.s.p, s->p, s->n) == 0;
}

static bool match_int(const sdict_value *key, const void *ctx) {
    return key->kind == SDICT_KIND_INT && !(key->flags & FLAG_BIG) &&
           key->u.i == *(const int64_t *)ctx;
}

static sdict_value *dict_get_strn(const sdict_value *d, const char *p, size_t n) {
    if (!d || d->kind != SDICT_KIND_DICT)
        return NULL;
    strn s = {p, n};
    size_t pos = dict_lookup(d, hash_bytes(SDICT_KIND_STR, (const uint8_t *)p, n), match_strn, &s);
    return pos == SIZE_MAX ? NULL : d->u.dict.items[pos].val;
}

sdict_value *sdict_dict_get(const sdict_value *d, const char *key) {
    if (!key)
        return NULL;
    return dict_get_strn(d, key, strlen(key));
}

sdict_value *sdict_dict_get_int(const sdict_value *d, int64_t key) {
    if (!d || d->kind != SDICT_KIND_DICT)
        return NULL;
    size_t pos = dict_lookup(d, hash_int64(key), match_int, &key);
    return pos == SIZE_MAX ? NULL : d->u.dict.items[pos].val;
}

sdict_value *sdict_dict_find(const sdict_value *d, const sdict_value *key) {
    uint64_t h;
    if (!d || d->kind != SDICT_KIND_DICT || !key_hash(key, 0, &h))
        return NULL;
    size_t pos = dict_lookup(d, h, match_value, key);
    return pos == SIZE_MAX ? NULL : d->u.dict.items[pos].val;
}

/* Appends a new item (the key is known to be absent). */
static sdict_status dict_append(sdict_value *d, sdict_value *key, sdict_value *val, uint64_t h) {
    size_t len = d->u.dict.len;
    if (len == d->u.dict.cap) {
        if (len >= UINT32_MAX / 2)
            return SDICT_E_NOMEM;
        size_t cap = d->u.dict.cap ? d->u.dict.cap * 2 : 4;
        dict_item *items = sdict__realloc(d->u.dict.items, cap * sizeof *items);
        if (!items)
            return SDICT_E_NOMEM;
        d->u.dict.items = items;
        d->u.dict.cap = cap;
    }
    if (len + 1 > INDEX_MIN && (len + 1) * 2 > d->u.dict.index_cap) {
        if (!index_rebuild(&d->u.dict.index, &d->u.dict.index_cap, len, len + 1, d,
                           dict_hash_at))
            return SDICT_E_NOMEM;
    }
    d->u.dict.items[len] = (dict_item){key, val, h};
    d->u.dict.len = len + 1;
    if (d->u.dict.index) {
        size_t mask = d->u.dict.index_cap - 1, slot = (size_t)h & mask;
        while (d->u.dict.index[slot])
            slot = (slot + 1) & mask;
        d->u.dict.index[slot] = (uint32_t)(len + 1);
    }
    return SDICT_OK;
}

sdict_status sdict_dict_set(sdict_value *d, sdict_value *key, sdict_value *val) {
    uint64_t h;
    if (!d || d->kind != SDICT_KIND_DICT || !key || !val || key->doc != d->doc ||
        val->doc != d->doc || !key_hash(key, 0, &h))
        return SDICT_E_INVALID_ARG;
    size_t pos = dict_lookup(d, h, match_value, key);
    if (pos != SIZE_MAX) {
        d->u.dict.items[pos].val = val; /* Python keeps the first key object and position */
        return SDICT_OK;
    }
    return dict_append(d, key, val, h);
}

sdict_status sdict_dict_set_str(sdict_value *d, const char *key, sdict_value *val) {
    if (!d || d->kind != SDICT_KIND_DICT || !key || !val || val->doc != d->doc)
        return SDICT_E_INVALID_ARG;
    size_t n = strlen(key);
    uint64_t h = hash_bytes(SDICT_KIND_STR, (const uint8_t *)key, n);
    strn s = {key, n};
    size_t pos = dict_lookup(d, h, match_strn, &s);
    if (pos != SIZE_MAX) {
        d->u.dict.items[pos].val = val;
        return SDICT_OK;
    }
    sdict_value *k = sdict_str_new(d->doc, key, n);
    if (!k)
        return SDICT_E_NOMEM;
    return dict_append(d, k, val, h);
}

sdict_value *sdict_dict_attrs(const sdict_value *d) {
    return d && d->kind == SDICT_KIND_DICT ? d->u.dict.attrs : NULL;
}

sdict_status sdict_dict_set_attrs(sdict_value *d, sdict_value *attrs) {
    if (!d || d->kind != SDICT_KIND_DICT || d == attrs ||
        (attrs && (attrs->kind != SDICT_KIND_DICT || attrs->doc != d->doc)))
        return SDICT_E_INVALID_ARG;
    d->u.dict.attrs = attrs;
    return SDICT_OK;
}

/*==================================================================================================
 MARK: Tensors and storages
==================================================================================================*/

sdict_status sdict__tensor_value_new(sdict_doc *doc, const sdict_tensor *t,
                                     const sdict_quantizer *q, sdict_value **out,
                                     sdict_error *err) {
    if (out)
        *out = NULL;
    if (!doc || !t || !out)
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "NULL doc, tensor or out");
    sdict_status st = sdict_tensor_check(t, err);
    if (st != SDICT_OK)
        return st;
    /* the tensor (with its quantizer and attributes), then its shape and stride arrays, in
       one arena block */
    size_t nd = (size_t)t->ndim;
    uint64_t bytes;
    if (!sdict__mul_u64(nd, 2 * sizeof(int64_t), &bytes) ||
        !sdict__add_u64(bytes, sizeof(tensor_ext), &bytes) || bytes > SIZE_MAX)
        return sdict__err(err, SDICT_E_NOMEM, NULL, -1, "no room for a tensor of rank %zu", nd);
    tensor_ext *ext = arena_alloc(doc, (size_t)bytes);
    if (!ext)
        return sdict__err(err, SDICT_E_NOMEM, NULL, -1, "out of memory for a tensor");
    sdict_value *v = value_alloc(doc, SDICT_KIND_TENSOR);
    if (!v)
        return sdict__err(err, SDICT_E_NOMEM, NULL, -1, "out of memory for a tensor");
    memset(ext, 0, sizeof *ext);
    ext->t = *t;
    int64_t *dims = (int64_t *)(void *)(ext + 1);
    if (nd) {
        memcpy(dims, t->shape, nd * sizeof *dims);
        memcpy(dims + nd, t->stride, nd * sizeof *dims);
        ext->t.shape = dims;
        ext->t.stride = dims + nd;
    } else {
        ext->t.shape = ext->t.stride = NULL;
    }
    ext->t.storage = sdict_storage_retain(t->storage);
    if (q) {
        ext->quantized = true;
        ext->q = *q;
    }
    v->u.tensor = ext;
    *out = v;
    return SDICT_OK;
}

sdict_status sdict_tensor_new(sdict_doc *doc, const sdict_tensor *t, sdict_value **out,
                              sdict_error *err) {
    return sdict__tensor_value_new(doc, t, NULL, out, err);
}

const sdict_tensor *sdict_value_tensor(const sdict_value *v) {
    return v && v->kind == SDICT_KIND_TENSOR ? &v->u.tensor->t : NULL;
}

const sdict_quantizer *sdict_value_quantizer(const sdict_value *v) {
    return v && v->kind == SDICT_KIND_TENSOR && v->u.tensor->quantized ? &v->u.tensor->q : NULL;
}

/* A sparse or nested value holding a copy of its description (nbytes of desc). */
static sdict_value *composite_new(sdict_doc *doc, sdict_kind kind, const void *desc,
                                  size_t nbytes) {
    composite_ext *ext = doc ? arena_alloc(doc, sizeof *ext) : NULL;
    sdict_value *v = ext ? value_alloc(doc, kind) : NULL;
    if (v) {
        memset(ext, 0, sizeof *ext);
        memcpy(&ext->d, desc, nbytes);
        v->u.comp = ext;
    }
    return v;
}

sdict_value *sdict__sparse_value_new(sdict_doc *doc, const sdict_sparse *s) {
    return composite_new(doc, SDICT_KIND_SPARSE, s, sizeof *s);
}

sdict_value *sdict__nested_value_new(sdict_doc *doc, const sdict_nested *n) {
    return composite_new(doc, SDICT_KIND_NESTED, n, sizeof *n);
}

const sdict_sparse *sdict_value_sparse(const sdict_value *v) {
    return v && v->kind == SDICT_KIND_SPARSE ? &v->u.comp->d.s : NULL;
}

const sdict_nested *sdict_value_nested(const sdict_value *v) {
    return v && v->kind == SDICT_KIND_NESTED ? &v->u.comp->d.n : NULL;
}

/* The attribute slot of a tensor-like value, NULL for other kinds. */
static sdict_value **attrs_slot(const sdict_value *v) {
    if (!v)
        return NULL;
    switch (v->kind) {
    case SDICT_KIND_TENSOR: return &v->u.tensor->attrs;
    case SDICT_KIND_SPARSE:
    case SDICT_KIND_NESTED: return &v->u.comp->attrs;
    default: return NULL;
    }
}

sdict_value *sdict_tensor_attrs(const sdict_value *v) {
    sdict_value **slot = attrs_slot(v);
    return slot ? *slot : NULL;
}

sdict_status sdict_tensor_set_attrs(sdict_value *v, sdict_value *attrs) {
    sdict_value **slot = attrs_slot(v);
    if (!slot || (attrs && (attrs->kind != SDICT_KIND_DICT || attrs->doc != v->doc)))
        return SDICT_E_INVALID_ARG;
    *slot = attrs;
    return SDICT_OK;
}

sdict_value *sdict__storage_value_new(sdict_doc *doc, sdict_storage *s, sdict_dtype dtype) {
    if (!s)
        return NULL;
    sdict_value *v = value_alloc(doc, SDICT__KIND_STORAGE);
    if (v) {
        v->u.st.storage = sdict_storage_retain(s);
        v->u.st.dtype = dtype;
    }
    return v;
}

sdict_storage *sdict_value_storage(const sdict_value *v, sdict_dtype *dtype) {
    return sdict__storage_value_get(v, dtype);
}

sdict_storage *sdict__storage_value_get(const sdict_value *v, sdict_dtype *dtype) {
    if (!v || v->kind != SDICT__KIND_STORAGE)
        return NULL;
    if (dtype)
        *dtype = v->u.st.dtype;
    return v->u.st.storage;
}

/*==================================================================================================
 MARK: Paths
==================================================================================================*/

/* Parses p[0..n) as canonical decimal int64 text ("0", "17", "-3"; no "+", no leading zeros). */
static bool parse_index(const char *p, size_t n, int64_t *out) {
    size_t k = 0;
    bool neg = false;
    if (n && p[0] == '-') {
        neg = true;
        k = 1;
    }
    if (k == n || (p[k] == '0' && n - k > 1) || (neg && p[k] == '0'))
        return false;
    uint64_t u = 0;
    for (; k < n; k++) {
        if (p[k] < '0' || p[k] > '9')
            return false;
        if (u > (UINT64_MAX - 9) / 10)
            return false;
        u = u * 10 + (uint64_t)(p[k] - '0');
    }
    if (neg ? u > (uint64_t)INT64_MAX + 1 : u > (uint64_t)INT64_MAX)
        return false;
    *out = neg ? (int64_t)(0 - u) : (int64_t)u;
    return true;
}

/* At a dict: the value of the longest key equal to a prefix of path that ends at a '.' or at
   the end; *rest gets what follows (without the dot). Candidates are tried longest first
   through the hash index, so this costs one lookup per dot, not one per key. */
static sdict_value *dict_step(const sdict_value *d, const char *path, const char **rest,
                              bool *dot) {
    size_t n = strlen(path);
    for (size_t end = n;;) {
        sdict_value *v = dict_get_strn(d, path, end);
        int64_t ik;
        if (!v && parse_index(path, end, &ik))
            v = sdict_dict_get_int(d, ik);
        if (v) {
            *dot = path[end] != '\0';
            *rest = *dot ? path + end + 1 : path + end;
            return v;
        }
        /* next candidate: the prefix ending before the previous dot */
        while (end > 0 && path[end - 1] != '.')
            end--;
        if (end == 0)
            return NULL;
        end--;
    }
}

sdict_value *sdict_value_at(const sdict_value *root, const char *path) {
    if (!root || !path)
        return NULL;
    const sdict_value *v = root;
    /* pending: a dot was just consumed, so one more segment (possibly "") must follow */
    bool pending = false;
    while (*path || pending) {
        if (v->kind == SDICT_KIND_DICT) {
            v = dict_step(v, path, &path, &pending);
        } else if (v->kind == SDICT_KIND_LIST || v->kind == SDICT_KIND_TUPLE) {
            const char *dot = strchr(path, '.');
            size_t n = dot ? (size_t)(dot - path) : strlen(path);
            int64_t i;
            if (!parse_index(path, n, &i) || i < 0 || (uint64_t)i >= v->u.seq.len)
                return NULL;
            v = v->u.seq.items[i];
            pending = dot != NULL;
            path = dot ? dot + 1 : path + n;
        } else {
            return NULL;
        }
        if (!v)
            return NULL;
    }
    return (sdict_value *)v;
}

/*==================================================================================================
 MARK: Python types folded into kinds
==================================================================================================*/

sdict_pytype sdict_value_pytype(const sdict_value *v) {
    return v ? (sdict_pytype)v->pytype : SDICT_PYTYPE_PLAIN;
}

const char *sdict_value_numpy_dtype(const sdict_value *v, char buf[8]) {
    if (!v || !buf || (v->pytype != SDICT_PYTYPE_NUMPY_SCALAR && v->pytype != SDICT_PYTYPE_NUMPY_ARRAY))
        return NULL;
    snprintf(buf, 8, "%c%c%u", v->np_order, v->np_kind, (unsigned)v->np_size);
    return buf;
}

bool sdict__value_numpy(const sdict_value *v, char *order, char *kind, uint8_t *size,
                        bool *underscore_core) {
    if (!v || (v->pytype != SDICT_PYTYPE_NUMPY_SCALAR && v->pytype != SDICT_PYTYPE_NUMPY_ARRAY))
        return false;
    *order = v->np_order;
    *kind = v->np_kind;
    *size = v->np_size;
    *underscore_core = (v->flags & FLAG_NP_UNDERSCORE_CORE) != 0;
    return true;
}

void sdict__value_set_numpy(sdict_value *v, sdict_pytype t, char order, char kind, uint8_t size,
                            bool underscore_core) {
    v->pytype = (uint8_t)t;
    v->np_order = order;
    v->np_kind = kind;
    v->np_size = size;
    if (underscore_core)
        v->flags |= FLAG_NP_UNDERSCORE_CORE;
}

sdict_status sdict_value_set_pytype(sdict_value *v, sdict_pytype t) {
    if (!v)
        return SDICT_E_INVALID_ARG;
    sdict_kind want = t == SDICT_PYTYPE_TORCH_SIZE  ? SDICT_KIND_TUPLE
                      : t == SDICT_PYTYPE_FROZENSET ? SDICT_KIND_SET
                      : t == SDICT_PYTYPE_BYTEARRAY ? SDICT_KIND_BYTES
                      : t == SDICT_PYTYPE_COUNTER   ? SDICT_KIND_DICT
                                                    : (sdict_kind)v->kind;
    if (t != SDICT_PYTYPE_PLAIN && t != SDICT_PYTYPE_TORCH_SIZE && t != SDICT_PYTYPE_FROZENSET &&
        t != SDICT_PYTYPE_BYTEARRAY && t != SDICT_PYTYPE_COUNTER)
        return SDICT_E_INVALID_ARG; /* numpy types come with a numpy dtype: read from files */
    if (v->kind != want || (t == SDICT_PYTYPE_COUNTER && (v->flags & FLAG_ORDERED)))
        return SDICT_E_INVALID_ARG; /* a Counter is a dict, not an OrderedDict */
    if (t == SDICT_PYTYPE_TORCH_SIZE)
        for (size_t i = 0; i < v->u.seq.len; i++)
            if (v->u.seq.items[i]->kind != SDICT_KIND_INT)
                return SDICT_E_INVALID_ARG;
    v->pytype = (uint8_t)t;
    v->flags &= (uint8_t)~FLAG_NP_UNDERSCORE_CORE;
    return SDICT_OK;
}

/*==================================================================================================
 MARK: Inert objects
==================================================================================================*/

static const char *arena_text(sdict_doc *doc, const char *s, size_t n) {
    char *p = arena_alloc(doc, n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

sdict_value *sdict__object_new(sdict_doc *doc, const char *module, size_t ml, const char *name,
                               size_t nl, sdict_object_call how) {
    if (!doc || !module || !name)
        return NULL;
    object_ext *o = arena_alloc(doc, sizeof *o);
    const char *mt = o ? arena_text(doc, module, ml) : NULL;
    const char *nt = mt ? arena_text(doc, name, nl) : NULL;
    sdict_value *v = nt ? value_alloc(doc, SDICT_KIND_OBJECT) : NULL;
    if (!v)
        return NULL;
    memset(o, 0, sizeof *o);
    o->module = mt;
    o->name = nt;
    o->how = how;
    v->u.obj = o;
    return v;
}

sdict_value *sdict__object_call(sdict_doc *doc, sdict_value *callee, sdict_object_call how,
                                sdict_value *args, sdict_value *kwargs) {
    if (!callee || callee->kind != SDICT_KIND_OBJECT || callee->doc != doc)
        return NULL;
    const object_ext *c = callee->u.obj;
    /* the class text is the callee's own arena text: shared, never freed before the doc */
    sdict_value *v = value_alloc(doc, SDICT_KIND_OBJECT);
    object_ext *o = v ? arena_alloc(doc, sizeof *o) : NULL;
    if (!o)
        return NULL;
    memset(o, 0, sizeof *o);
    o->module = c->module;
    o->name = c->name;
    o->callee = c->how == SDICT_OBJECT_CLASS ? NULL : callee;
    o->how = how;
    o->args = args;
    o->kwargs = kwargs;
    v->u.obj = o;
    return v;
}

bool sdict__object_set_state(sdict_value *v, sdict_value *state) {
    if (!v || v->kind != SDICT_KIND_OBJECT || v->u.obj->how == SDICT_OBJECT_CLASS ||
        v->u.obj->state)
        return false;
    v->u.obj->state = state;
    return true;
}

bool sdict__object_set_items(sdict_value *v, sdict_value *items) {
    if (!v || v->kind != SDICT_KIND_OBJECT || v->u.obj->how == SDICT_OBJECT_CLASS ||
        v->u.obj->items)
        return false;
    v->u.obj->items = items;
    return true;
}

static const object_ext *obj_of(const sdict_value *v) {
    return v && v->kind == SDICT_KIND_OBJECT ? v->u.obj : NULL;
}

const char *sdict_object_module(const sdict_value *v) {
    return obj_of(v) ? obj_of(v)->module : NULL;
}
const char *sdict_object_name(const sdict_value *v) { return obj_of(v) ? obj_of(v)->name : NULL; }
sdict_object_call sdict_object_how(const sdict_value *v) {
    return obj_of(v) ? obj_of(v)->how : SDICT_OBJECT_CLASS;
}
sdict_value *sdict_object_args(const sdict_value *v) { return obj_of(v) ? obj_of(v)->args : NULL; }
sdict_value *sdict_object_kwargs(const sdict_value *v) {
    return obj_of(v) ? obj_of(v)->kwargs : NULL;
}
sdict_value *sdict_object_state(const sdict_value *v) {
    return obj_of(v) ? obj_of(v)->state : NULL;
}
sdict_value *sdict_object_items(const sdict_value *v) {
    return obj_of(v) ? obj_of(v)->items : NULL;
}
sdict_value *sdict_object_callee(const sdict_value *v) {
    return obj_of(v) ? obj_of(v)->callee : NULL;
}
