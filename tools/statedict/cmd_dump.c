/*
 cmd_dump.c - `statedict dump --json FILE`: the whole tree as one canonical JSON document.

   {"format": "zip"|"legacy"|"tar", "byteorder": "little"|"big", "root": NODE}

 NODE forms (keys in this order):
   {"type":"none"}  {"type":"bool","value":true}  {"type":"int","value":"-12"}
   {"type":"float","value":"0x1.999999999999ap-2"}   (C99 %a; "nan", "inf", "-inf")
   {"type":"str","value":"..."}  {"type":"bytes","hex":"00ff"}  {"type":"dtype","value":"float16"}
   {"type":"list"|"tuple"|"set","items":[NODE...]}  (a frozenset: "frozenset":true before items)
   {"type":"dict","ordered":B,"items":[[KEY,NODE]...],"attrs":[["_metadata",NODE]]}  (attrs if any)
   {"type":"tensor","dtype":"float32","shape":[..],"stride":[..],"storage_offset":0,
    "requires_grad":false,"parameter":false,"storage":"0"|"mem:ADDR"|null,"sha256":"hex"|null}
     plus, only when they apply: "conj":true, "neg":true (torch's lazy bits), "quantizer":
     {"qscheme":"per_tensor_affine","scale":"%a","zero_point":3} or {"qscheme":...,
     "scales":NODE,"zero_points":NODE,"axis":0}, and "attrs":[[NAME,NODE]...] (Python
     attributes of the tensor)
     and "device":"cpu"|"cuda:0"|"meta"|... (the location tag its storage was saved with)
   {"type":"storage","dtype":"float32","numel":4,"nbytes":16,"device":"cpu","storage":"0",
    "sha256":"hex"}   (a bare storage saved as a value; numel counts bytes for UntypedStorage,
                       which torch loads as a uint8 TypedStorage; sha256 as for a tensor over
                       the whole storage)
   {"type":"device","value":"cuda:1"}  {"type":"complex","real":"%a","imag":"%a"}
   {"type":"qscheme","value":"per_tensor_affine"}  {"type":"layout","value":"sparse_csr"}
   {"type":"sparse","requires_grad":B,"parameter":B,"layout":"sparse_coo","size":[..],
    "is_coalesced":B (COO only; when the file did not say, nnz < 2, as torch then reports),
    "indices":NODE,"plain_indices":NODE (compressed layouts only),"values":NODE[,"attrs"]}
   {"type":"nested","requires_grad":B,"parameter":B,"buffer":NODE,"sizes":NODE,
    "strides":NODE,"storage_offsets":NODE[,"attrs"]}
   A collections.Counter is a dict node with "counter":true.

 The text is ASCII, as Python's json.dumps writes it (cli_json_dump): every str is kept exactly,
 non-ASCII and control characters as \uXXXX, lone surrogates (which Python strs may hold and
 torch.save writes with 'surrogatepass') as "\ud800", so json.loads gives back the same str.

 The tensor digest is over the elements in C-contiguous order, little-endian, whatever the
 strides and the file's byte order, with the conj/neg bits applied (torch's resolve_conj() and
 resolve_neg()); quantized tensors hash their integer representation (int_repr(); quint4x2 and
 quint2x4 as packed bytes): two files hold the same tensor exactly when digests agree. Meta
 tensors (no storage) have null storage and digest.
*/
#include "cli.h"

#include <math.h>
#include <nettle/sha2.h>
#include <stdlib.h>
#include <string.h>

/* Chunk size bounding the memory used to hash a non-contiguous or big-endian tensor. */
#define HASH_CHUNK_BYTES ((size_t)16 << 20)

static bool host_is_little_endian(void) {
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* Reverses each `unit`-byte group in p (unit = element size, or half of it for complex). */
static void byteswap_units(unsigned char *p, size_t nbytes, size_t unit) {
    if (unit <= 1)
        return;
    for (size_t i = 0; i + unit <= nbytes; i += unit)
        for (size_t a = i, z = i + unit - 1; a < z; a++, z--) {
            unsigned char t = p[a];
            p[a] = p[z];
            p[z] = t;
        }
}

static bool is_complex(sdict_dtype d) {
    return d == SDICT_COMPLEX32 || d == SDICT_BCOMPLEX32 || d == SDICT_COMPLEX64 ||
           d == SDICT_COMPLEX128;
}

/*
 Feeds the tensor's elements to the digest. A contiguous tensor on a little-endian host is
 hashed in place; otherwise the tensor is copied in slices along its outermost dimension
 (each slice is itself a strided view, so sdict_tensor_copy_to does the stride walking) to keep
 memory bounded for multi-gigabyte tensors.
*/
static sdict_status hash_tensor(const sdict_tensor *t, struct sha256_ctx *h, sdict_error *err) {
    size_t esize = sdict_dtype_size(t->dtype);
    size_t total = sdict_tensor_nbytes(t);
    bool le = host_is_little_endian();
    if (total == 0)
        return SDICT_OK;
    if (le && sdict_tensor_is_contiguous(t) && sdict_tensor_data(t) && !t->is_conj &&
        !t->is_neg) {
        sha256_update(h, total, sdict_tensor_data(t));
        return SDICT_OK;
    }
    sdict_status st = cli_check_expansion(t, err);
    if (st != SDICT_OK)
        return st;
    size_t unit = is_complex(t->dtype) ? esize / 2 : esize;
    int64_t max_elems = (int64_t)(HASH_CHUNK_BYTES / esize);
    unsigned char *buf = malloc(total < HASH_CHUNK_BYTES ? total : HASH_CHUNK_BYTES);
    if (!buf)
        return SDICT_E_NOMEM;
    cli_chunker c;
    cli_piece piece;
    for (cli_chunker_init(&c, t, max_elems); st == SDICT_OK && cli_chunk_view(&c, t, &piece);
         cli_chunker_next(&c, t)) {
        size_t nb = sdict_tensor_nbytes(&piece.t);
        st = sdict_tensor_copy_to(&piece.t, t->dtype, buf, nb, err);
        if (st == SDICT_OK) {
            if (!le)
                byteswap_units(buf, nb, unit);
            sha256_update(h, nb, buf);
        }
    }
    free(buf);
    return st;
}

/* Digests already computed, keyed by what determines them (storage, offset, dtype, shape,
   strides, conj/neg bits): a tensor reached many times through the memo, or many tensors
   viewing one storage the same way, are hashed once. Shapes and strides are borrowed from the
   doc, which outlives the dump. */
typedef struct digest_ent {
    uint64_t hash;
    const sdict_tensor *t;
    char hex[2 * SHA256_DIGEST_SIZE + 1];
} digest_ent;

typedef struct digest_cache {
    digest_ent *ents;
    size_t n, cap;
    size_t *index; /* entry + 1; 0 = empty */
    size_t index_cap;
} digest_cache;

static uint64_t mix_u64(uint64_t h, uint64_t x) {
    h ^= x + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
    h ^= h >> 31;
    h *= 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 29);
}

static uint64_t geometry_hash(const sdict_tensor *t) {
    uint64_t h = mix_u64(cli_hash_seed(), (uint64_t)(uintptr_t)t->storage);
    h = mix_u64(h, (uint64_t)t->storage_offset);
    h = mix_u64(h, (uint64_t)t->dtype | (uint64_t)t->is_conj << 16 | (uint64_t)t->is_neg << 17);
    h = mix_u64(h, (uint64_t)t->ndim);
    for (int32_t i = 0; i < t->ndim; i++)
        h = mix_u64(mix_u64(h, (uint64_t)t->shape[i]), (uint64_t)t->stride[i]);
    return h;
}

static bool same_geometry(const sdict_tensor *a, const sdict_tensor *b) {
    return a->storage == b->storage && a->storage_offset == b->storage_offset &&
           a->dtype == b->dtype && a->is_conj == b->is_conj && a->is_neg == b->is_neg &&
           a->ndim == b->ndim &&
           (a->ndim == 0 || (memcmp(a->shape, b->shape, (size_t)a->ndim * sizeof *a->shape) == 0 &&
                             memcmp(a->stride, b->stride, (size_t)a->ndim * sizeof *a->stride) == 0));
}

static const char *digest_find(const digest_cache *dc, const sdict_tensor *t, uint64_t h) {
    if (!dc->index_cap)
        return NULL;
    for (size_t i = h & (dc->index_cap - 1); dc->index[i]; i = (i + 1) & (dc->index_cap - 1)) {
        const digest_ent *e = &dc->ents[dc->index[i] - 1];
        if (e->hash == h && same_geometry(e->t, t))
            return e->hex;
    }
    return NULL;
}

/* Remembers a digest; on out of memory it is simply not remembered. */
static void digest_put(digest_cache *dc, const sdict_tensor *t, uint64_t h, const char *hex) {
    if (dc->n == dc->cap) {
        size_t ncap = dc->cap ? 2 * dc->cap : 16;
        digest_ent *ne = realloc(dc->ents, ncap * sizeof *ne);
        if (!ne)
            return;
        dc->ents = ne;
        dc->cap = ncap;
    }
    if (2 * (dc->n + 1) > dc->index_cap) {
        size_t ncap = dc->index_cap ? 2 * dc->index_cap : 32;
        size_t *ni = calloc(ncap, sizeof *ni);
        if (!ni)
            return;
        for (size_t k = 0; k < dc->n; k++) {
            size_t i = dc->ents[k].hash & (ncap - 1);
            while (ni[i])
                i = (i + 1) & (ncap - 1);
            ni[i] = k + 1;
        }
        free(dc->index);
        dc->index = ni;
        dc->index_cap = ncap;
    }
    digest_ent *e = &dc->ents[dc->n];
    e->hash = h;
    e->t = t;
    memcpy(e->hex, hex, sizeof e->hex);
    size_t i = h & (dc->index_cap - 1);
    while (dc->index[i])
        i = (i + 1) & (dc->index_cap - 1);
    dc->index[i] = ++dc->n;
}

static void digest_cache_free(digest_cache *dc) {
    free(dc->ents);
    free(dc->index);
    memset(dc, 0, sizeof *dc);
}

typedef struct dump_ctx {
    sdict_status st;
    sdict_error err;
    digest_cache digests;
} dump_ctx;

static json_t *node(dump_ctx *c, const sdict_value *v, int depth);

static json_t *typed(const char *type) {
    json_t *o = json_object();
    json_object_set_new(o, "type", json_string(type));
    return o;
}

static json_t *dims(const int64_t *d, int32_t n) {
    json_t *a = json_array();
    for (int32_t i = 0; i < n; i++)
        json_array_append_new(a, json_integer((json_int_t)d[i]));
    return a;
}

static json_t *float_json(double d) {
    char text[64];
    if (isnan(d))
        snprintf(text, sizeof text, "nan");
    else if (isinf(d))
        snprintf(text, sizeof text, d < 0 ? "-inf" : "inf");
    else
        snprintf(text, sizeof text, "%a", d);
    return json_string(text);
}

static json_t *dict_items(dump_ctx *c, const sdict_value *d, int depth, bool key_nodes);

/* "attrs" of a tensor-like value, when it has any. */
static void attrs_field(dump_ctx *c, json_t *o, const sdict_value *v, int depth) {
    const sdict_value *attrs = sdict_tensor_attrs(v);
    if (attrs && sdict_dict_len(attrs))
        json_object_set_new(o, "attrs", dict_items(c, attrs, depth, false));
}

/* A sparse or nested node with its requires_grad and parameter fields. */
static json_t *composite_node(const char *type, bool requires_grad, bool parameter) {
    json_t *o = typed(type);
    json_object_set_new(o, "requires_grad", json_boolean(requires_grad));
    json_object_set_new(o, "parameter", json_boolean(parameter));
    return o;
}

static json_t *quantizer_node(dump_ctx *c, const sdict_quantizer *q, int depth) {
    json_t *o = json_object();
    json_object_set_new(o, "qscheme", json_string(sdict_qscheme_name(q->qscheme)));
    if (q->qscheme == SDICT_PER_TENSOR_AFFINE) {
        json_object_set_new(o, "scale", float_json(q->scale));
        json_object_set_new(o, "zero_point", json_integer((json_int_t)q->zero_point));
    } else {
        json_object_set_new(o, "scales", node(c, q->scales, depth + 1));
        json_object_set_new(o, "zero_points", node(c, q->zero_points, depth + 1));
        json_object_set_new(o, "axis", json_integer((json_int_t)q->axis));
    }
    return o;
}

static json_t *sparse_node(dump_ctx *c, const sdict_value *v, int depth) {
    const sdict_sparse *sp = sdict_value_sparse(v);
    json_t *o = composite_node("sparse", sp->requires_grad, sp->is_parameter), *size = json_array();
    for (size_t i = 0; i < sdict_seq_len(sp->size); i++) {
        int64_t d = 0;
        sdict_int_get(sdict_seq_item(sp->size, i), &d);
        json_array_append_new(size, json_integer((json_int_t)d));
    }
    json_object_set_new(o, "layout", json_string(sdict_layout_name(sp->layout)));
    json_object_set_new(o, "size", size);
    if (sp->layout == SDICT_LAYOUT_SPARSE_COO) {
        /* unrecorded (torch 1.13 files): torch then takes fewer than two entries as coalesced */
        const sdict_tensor *ix = sdict_value_tensor(sp->indices);
        json_object_set_new(o, "is_coalesced", json_boolean(sp->is_coalesced == 1 ||
                                                            (sp->is_coalesced == -1 &&
                                                             ix->shape[1] < 2)));
    }
    json_object_set_new(o, "indices", node(c, sp->indices, depth + 1));
    if (sp->plain_indices)
        json_object_set_new(o, "plain_indices", node(c, sp->plain_indices, depth + 1));
    json_object_set_new(o, "values", node(c, sp->values, depth + 1));
    attrs_field(c, o, v, depth);
    return o;
}

static json_t *nested_node(dump_ctx *c, const sdict_value *v, int depth) {
    const sdict_nested *ns = sdict_value_nested(v);
    json_t *o = composite_node("nested", ns->requires_grad, ns->is_parameter);
    json_object_set_new(o, "buffer", node(c, ns->buffer, depth + 1));
    json_object_set_new(o, "sizes", node(c, ns->sizes, depth + 1));
    json_object_set_new(o, "strides", node(c, ns->strides, depth + 1));
    json_object_set_new(o, "storage_offsets", node(c, ns->storage_offsets, depth + 1));
    attrs_field(c, o, v, depth);
    return o;
}

static json_t *tensor_node(dump_ctx *c, const sdict_value *v, int depth) {
    const sdict_tensor *t = sdict_value_tensor(v);
    const sdict_quantizer *q = sdict_value_quantizer(v);
    json_t *o = typed("tensor");
    json_object_set_new(o, "dtype", json_string(sdict_dtype_name(t->dtype)));
    json_object_set_new(o, "shape", dims(t->shape, t->ndim));
    json_object_set_new(o, "stride", dims(t->stride, t->ndim));
    json_object_set_new(o, "storage_offset", json_integer((json_int_t)t->storage_offset));
    json_object_set_new(o, "requires_grad", json_boolean(t->requires_grad));
    json_object_set_new(o, "parameter", json_boolean(t->is_parameter));
    /* the key in the file; storages made while loading (a dtype conversion torch's rebuild
       asked for) have none and are named by address, which keeps sharing visible */
    const char *key = t->storage ? sdict_storage_key(t->storage) : NULL;
    char addr[32];
    if (t->storage && !key)
        snprintf(addr, sizeof addr, "mem:%p", (const void *)t->storage);
    json_object_set_new(o, "storage", key ? json_text(key, strlen(key))
                                          : t->storage ? json_string(addr) : json_null());
    const char *dev = sdict_tensor_device(t);
    json_object_set_new(o, "device", json_text(dev, strlen(dev)));
    if (t->is_conj)
        json_object_set_new(o, "conj", json_true());
    if (t->is_neg)
        json_object_set_new(o, "neg", json_true());
    if (q)
        json_object_set_new(o, "quantizer", quantizer_node(c, q, depth));
    attrs_field(c, o, v, depth);
    if (!t->storage) {
        json_object_set_new(o, "sha256", json_null());
        return o;
    }
    uint64_t gh = geometry_hash(t);
    const char *known = digest_find(&c->digests, t, gh);
    if (known) {
        json_object_set_new(o, "sha256", json_string(known));
        return o;
    }
    struct sha256_ctx h;
    sha256_init(&h);
    sdict_status st = hash_tensor(t, &h, &c->err);
    if (st != SDICT_OK) {
        if (c->st == SDICT_OK)
            c->st = st;
        json_object_set_new(o, "sha256", json_null());
        return o;
    }
    uint8_t digest[SHA256_DIGEST_SIZE];
    char hex[2 * SHA256_DIGEST_SIZE + 1];
    sha256_digest(&h, sizeof digest, digest);
    for (size_t i = 0; i < sizeof digest; i++)
        snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    digest_put(&c->digests, t, gh, hex);
    json_object_set_new(o, "sha256", json_string(hex));
    return o;
}

/* A bare storage: its elements as a 1-D tensor of its class's dtype, hashed like a tensor. */
static json_t *storage_node(dump_ctx *c, const sdict_value *v) {
    sdict_dtype dt = SDICT_UINT8;
    sdict_storage *s = sdict_value_storage(v, &dt);
    size_t es = sdict_dtype_size(dt), nbytes = sdict_storage_nbytes(s);
    int64_t numel = (int64_t)(es ? nbytes / es : 0);
    json_t *o = typed("storage");
    json_object_set_new(o, "dtype", json_string(sdict_dtype_name(dt)));
    json_object_set_new(o, "numel", json_integer((json_int_t)numel));
    json_object_set_new(o, "nbytes", json_integer((json_int_t)nbytes));
    const char *dev = sdict_storage_location(s), *key = sdict_storage_key(s);
    json_object_set_new(o, "device", json_text(dev, strlen(dev)));
    char addr[32];
    if (!key)
        snprintf(addr, sizeof addr, "mem:%p", (const void *)s);
    json_object_set_new(o, "storage", key ? json_text(key, strlen(key)) : json_string(addr));
    int64_t shape[1] = {numel}, stride[1] = {1};
    sdict_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = dt;
    t.ndim = 1;
    t.shape = shape;
    t.stride = stride;
    t.storage = s;
    struct sha256_ctx h;
    sha256_init(&h);
    sdict_status st = hash_tensor(&t, &h, &c->err);
    if (st != SDICT_OK) {
        if (c->st == SDICT_OK)
            c->st = st;
        json_object_set_new(o, "sha256", json_null());
        return o;
    }
    uint8_t digest[SHA256_DIGEST_SIZE];
    char hex[2 * SHA256_DIGEST_SIZE + 1];
    sha256_digest(&h, sizeof digest, digest);
    for (size_t i = 0; i < sizeof digest; i++)
        snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    json_object_set_new(o, "sha256", json_string(hex));
    return o;
}

static json_t *items_of(dump_ctx *c, const sdict_value *v, int depth) {
    json_t *a = json_array();
    size_t n = sdict_seq_len(v);
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, node(c, sdict_seq_item(v, i), depth + 1));
    return a;
}

static json_t *dict_items(dump_ctx *c, const sdict_value *d, int depth, bool key_nodes) {
    json_t *a = json_array();
    size_t n = sdict_dict_len(d);
    for (size_t i = 0; i < n; i++) {
        json_t *pair = json_array();
        const sdict_value *k = sdict_dict_key(d, i);
        if (key_nodes) {
            json_array_append_new(pair, node(c, k, depth + 1));
        } else { /* attrs: plain attribute names */
            size_t len = 0;
            const char *s = sdict_str_get(k, &len);
            json_array_append_new(pair, s ? json_text(s, len) : node(c, k, depth + 1));
        }
        json_array_append_new(pair, node(c, sdict_dict_val(d, i), depth + 1));
        json_array_append_new(a, pair);
    }
    return a;
}

static json_t *node(dump_ctx *c, const sdict_value *v, int depth) {
    if (depth > CLI_MAX_DEPTH) {
        if (c->st == SDICT_OK) {
            c->st = SDICT_E_LIMIT;
            c->err.code = SDICT_E_LIMIT;
            c->err.offset = -1;
            snprintf(c->err.message, sizeof c->err.message,
                     "tree nested deeper than %d (cyclic?)", CLI_MAX_DEPTH);
        }
        return typed("none");
    }
    sdict_kind k = sdict_value_kind(v);
    json_t *o = typed(sdict_kind_name(k));
    switch (k) {
    case SDICT_KIND_NONE:
        break;
    case SDICT_KIND_BOOL:
        json_object_set_new(o, "value", json_boolean(sdict_bool_get(v)));
        break;
    case SDICT_KIND_INT: {
        cli_buf b;
        buf_init(&b);
        fmt_int(&b, v);
        json_object_set_new(o, "value", json_string(b.s ? b.s : ""));
        buf_free(&b);
        break;
    }
    case SDICT_KIND_FLOAT:
        json_object_set_new(o, "value", float_json(sdict_float_get(v)));
        break;
    case SDICT_KIND_COMPLEX: {
        double re, im;
        sdict_complex_get(v, &re, &im);
        json_object_set_new(o, "real", float_json(re));
        json_object_set_new(o, "imag", float_json(im));
        break;
    }
    case SDICT_KIND_DEVICE: {
        int64_t index;
        char text[300];
        const char *type = sdict_device_get(v, &index);
        if (index >= 0)
            snprintf(text, sizeof text, "%s:%lld", type, (long long)index);
        else
            snprintf(text, sizeof text, "%s", type);
        json_object_set_new(o, "value", json_string(text));
        break;
    }
    case SDICT_KIND_QSCHEME:
        json_object_set_new(o, "value", json_string(sdict_qscheme_name(sdict_qscheme_value_get(v))));
        break;
    case SDICT_KIND_LAYOUT:
        json_object_set_new(o, "value", json_string(sdict_layout_name(sdict_layout_value_get(v))));
        break;
    case SDICT_KIND_STR: {
        size_t len = 0;
        const char *s = sdict_str_get(v, &len);
        json_object_set_new(o, "value", json_text(s, s ? len : 0));
        break;
    }
    case SDICT_KIND_BYTES: {
        size_t len = 0;
        const unsigned char *p = sdict_bytes_get(v, &len);
        char *hex = malloc(2 * len + 1);
        if (!hex) {
            c->st = SDICT_E_NOMEM;
            break;
        }
        hex[0] = '\0';
        for (size_t i = 0; i < len; i++)
            snprintf(hex + 2 * i, 3, "%02x", p[i]);
        json_object_set_new(o, "hex", json_string(hex));
        free(hex);
        break;
    }
    case SDICT_KIND_DTYPE:
        json_object_set_new(o, "value", json_string(sdict_dtype_name(sdict_dtype_value_get(v))));
        break;
    case SDICT_KIND_LIST:
    case SDICT_KIND_TUPLE:
    case SDICT_KIND_SET:
        if (sdict_value_pytype(v) == SDICT_PYTYPE_FROZENSET)
            json_object_set_new(o, "frozenset", json_true());
        json_object_set_new(o, "items", items_of(c, v, depth));
        break;
    case SDICT_KIND_DICT: {
        json_object_set_new(o, "ordered", json_boolean(sdict_dict_is_ordered(v)));
        if ((sdict_value_pytype(v) == SDICT_PYTYPE_COUNTER))
            json_object_set_new(o, "counter", json_true());
        json_object_set_new(o, "items", dict_items(c, v, depth, true));
        const sdict_value *attrs = sdict_dict_attrs(v);
        if (attrs)
            json_object_set_new(o, "attrs", dict_items(c, attrs, depth, false));
        break;
    }
    case SDICT_KIND_TENSOR:
        json_decref(o);
        return tensor_node(c, v, depth);
    case SDICT_KIND_SPARSE:
        json_decref(o);
        return sparse_node(c, v, depth);
    case SDICT_KIND_NESTED:
        json_decref(o);
        return nested_node(c, v, depth);
    case SDICT_KIND_STORAGE:
        json_decref(o);
        return storage_node(c, v);
    default:
        break;
    }
    return o;
}

int cmd_dump(const cli_cmd *cmd, const cli_args *args) {
    (void)cmd;
    sdict_doc *doc = cli_load(args->pos[0], args);
    if (!doc)
        return CLI_EXIT_BAD_INPUT;
    dump_ctx c;
    memset(&c, 0, sizeof c);
    json_t *root = json_object();
    json_object_set_new(root, "format", json_string(sdict_format_name(sdict_doc_format(doc))));
    json_object_set_new(root, "byteorder", json_string(sdict_doc_big_endian(doc) ? "big" : "little"));
    json_object_set_new(root, "root", node(&c, sdict_doc_root(doc), 0));
    int rc = CLI_EXIT_OK;
    if (c.st != SDICT_OK) {
        if (c.err.code == SDICT_OK)
            c.err.code = c.st;
        snprintf(c.err.file, sizeof c.err.file, "%s", args->pos[0]);
        cli_report_error(c.st, &c.err);
        rc = CLI_EXIT_BAD_INPUT;
    } else if (cli_json_dump(root, stdout, args->pretty ? 2 : 0) != 0) {
        rc = CLI_EXIT_BAD_INPUT;
    } else {
        fputc('\n', stdout);
    }
    json_decref(root);
    digest_cache_free(&c.digests);
    cli_forget_ints();
    sdict_doc_free(doc);
    return rc;
}
