/*
 cmd_dump.c - `statedict dump --json FILE`: the whole tree as one canonical JSON document.

   {"format": "zip"|"legacy"|"tar"|"safetensors"|"sharded", "byteorder": "little"|"big",
    "metadata": null|{KEY: VALUE...}, "root": NODE}

 Numbers follow the schema's rule (cli.h, README "JSON schema"): a JSON number where exact
 (integers within +-2^53, finite floats as Python's repr), else a string holding the exact
 text ("12345678901234567890", "nan", "inf", "-inf"). "metadata" is the doc's file-level
 metadata (a safetensors file's __metadata__, an index's "metadata"): str values as strings.
 `dump FILE` without --json writes the same document (JSON is dump's only output).

 NODE forms (keys in this order):
   {"type":"none"}  {"type":"bool","value":true}  {"type":"int","value":-12}
   {"type":"float","value":0.4}   ("nan", "inf", "-inf" as strings)
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

typedef struct dump_ctx {
    sdict_status st;
    sdict_error err;
    cli_view_cache digests; /* hex sha256 per tensor geometry */
    cli_jw w;
    uint64_t data_used, data_budget; /* tensor bytes hashed so far, and the most allowed */
} dump_ctx;

static void node(dump_ctx *c, const sdict_value *v, int depth);

static void typed(dump_ctx *c, const char *type) {
    cli_jw_open(&c->w, '{');
    cli_jw_key(&c->w, "type");
    cli_jw_str(&c->w, type, strlen(type));
}

static void str_field(dump_ctx *c, const char *key, const char *s) {
    cli_jw_key(&c->w, key);
    cli_jw_str(&c->w, s, strlen(s));
}

static void bool_field(dump_ctx *c, const char *key, bool b) {
    cli_jw_key(&c->w, key);
    cli_jw_raw(&c->w, b ? "true" : "false");
}

static void int_field(dump_ctx *c, const char *key, long long v) {
    cli_jw_key(&c->w, key);
    cli_jw_num(&c->w, v);
}

static void dims_field(dump_ctx *c, const char *key, const int64_t *d, int32_t n) {
    cli_jw_key(&c->w, key);
    cli_jw_open(&c->w, '[');
    for (int32_t i = 0; i < n; i++) {
        cli_jw_item(&c->w);
        cli_jw_num(&c->w, (long long)d[i]);
    }
    cli_jw_close(&c->w, ']');
}

static void float_field(dump_ctx *c, const char *key, double d) {
    cli_jw_key(&c->w, key);
    cli_jw_float(&c->w, d);
}

static void node_field(dump_ctx *c, const char *key, const sdict_value *v, int depth) {
    cli_jw_key(&c->w, key);
    node(c, v, depth);
}

/* [[KEY, NODE]...] of a dict; attribute names (key_nodes false) are plain strings. */
static void dict_items(dump_ctx *c, const sdict_value *d, int depth, bool key_nodes) {
    size_t n = sdict_dict_len(d);
    cli_jw_open(&c->w, '[');
    for (size_t i = 0; i < n; i++) {
        const sdict_value *k = sdict_dict_key(d, i);
        size_t len = 0;
        const char *s = key_nodes ? NULL : sdict_str_get(k, &len);
        cli_jw_item(&c->w);
        cli_jw_open(&c->w, '[');
        cli_jw_item(&c->w);
        if (s)
            cli_jw_str(&c->w, s, len);
        else
            node(c, k, depth + 1);
        cli_jw_item(&c->w);
        node(c, sdict_dict_val(d, i), depth + 1);
        cli_jw_close(&c->w, ']');
    }
    cli_jw_close(&c->w, ']');
}

/* "attrs" of a tensor-like value, when it has any. */
static void attrs_field(dump_ctx *c, const sdict_value *v, int depth) {
    const sdict_value *attrs = sdict_tensor_attrs(v);
    if (attrs && sdict_dict_len(attrs)) {
        cli_jw_key(&c->w, "attrs");
        dict_items(c, attrs, depth, false);
    }
}

static void quantizer_field(dump_ctx *c, const sdict_quantizer *q, int depth) {
    cli_jw_key(&c->w, "quantizer");
    cli_jw_open(&c->w, '{');
    str_field(c, "qscheme", sdict_qscheme_name(q->qscheme));
    if (q->qscheme == SDICT_PER_TENSOR_AFFINE) {
        float_field(c, "scale", q->scale);
        int_field(c, "zero_point", (long long)q->zero_point);
    } else {
        node_field(c, "scales", q->scales, depth + 1);
        node_field(c, "zero_points", q->zero_points, depth + 1);
        int_field(c, "axis", (long long)q->axis);
    }
    cli_jw_close(&c->w, '}');
}

/* A sparse or nested node's opening with its requires_grad and parameter fields. */
static void composite_open(dump_ctx *c, const char *type, bool requires_grad, bool parameter) {
    typed(c, type);
    bool_field(c, "requires_grad", requires_grad);
    bool_field(c, "parameter", parameter);
}

static void sparse_node(dump_ctx *c, const sdict_value *v, int depth) {
    const sdict_sparse *sp = sdict_value_sparse(v);
    composite_open(c, "sparse", sp->requires_grad, sp->is_parameter);
    str_field(c, "layout", sdict_layout_name(sp->layout));
    cli_jw_key(&c->w, "size");
    cli_jw_open(&c->w, '[');
    for (size_t i = 0; i < sdict_seq_len(sp->size); i++) {
        cli_jw_item(&c->w);
        cli_jw_pyint(&c->w, sdict_seq_item(sp->size, i));
    }
    cli_jw_close(&c->w, ']');
    if (sp->layout == SDICT_LAYOUT_SPARSE_COO) {
        /* unrecorded (torch 1.13 files): torch then takes fewer than two entries as coalesced */
        const sdict_tensor *ix = sdict_value_tensor(sp->indices);
        bool_field(c, "is_coalesced",
                   sp->is_coalesced == 1 || (sp->is_coalesced == -1 && ix->shape[1] < 2));
    }
    node_field(c, "indices", sp->indices, depth + 1);
    if (sp->plain_indices)
        node_field(c, "plain_indices", sp->plain_indices, depth + 1);
    node_field(c, "values", sp->values, depth + 1);
    attrs_field(c, v, depth);
    cli_jw_close(&c->w, '}');
}

static void nested_node(dump_ctx *c, const sdict_value *v, int depth) {
    const sdict_nested *ns = sdict_value_nested(v);
    composite_open(c, "nested", ns->requires_grad, ns->is_parameter);
    node_field(c, "buffer", ns->buffer, depth + 1);
    node_field(c, "sizes", ns->sizes, depth + 1);
    node_field(c, "strides", ns->strides, depth + 1);
    node_field(c, "storage_offsets", ns->storage_offsets, depth + 1);
    attrs_field(c, v, depth);
    cli_jw_close(&c->w, '}');
}

/* "sha256": the digest of t's elements (see the top of the file), computed once per distinct
   tensor geometry over a storage; null for meta tensors and when reading the data failed. */
static void sha256_field(dump_ctx *c, const sdict_tensor *t) {
    cli_jw_key(&c->w, "sha256");
    if (!t->storage) {
        cli_jw_raw(&c->w, "null");
        return;
    }
    const char *known = cli_view_cache_find(&c->digests, t, NULL, 0);
    if (known) {
        cli_jw_str(&c->w, known, strlen(known));
        return;
    }
    struct sha256_ctx h;
    sha256_init(&h);
    sdict_status st = SDICT_E_LIMIT;
    if (c->st == SDICT_OK &&
        cli_charge_data(&c->data_used, c->data_budget, sdict_tensor_nbytes(t), &c->err))
        st = hash_tensor(t, &h, &c->err);
    if (st != SDICT_OK) {
        if (c->st == SDICT_OK)
            c->st = st;
        cli_jw_raw(&c->w, "null");
        return;
    }
    uint8_t digest[SHA256_DIGEST_SIZE];
    char hex[2 * SHA256_DIGEST_SIZE + 1];
    sha256_digest(&h, sizeof digest, digest);
    for (size_t i = 0; i < sizeof digest; i++)
        snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    cli_view_cache_put(&c->digests, t, NULL, 0, hex);
    cli_jw_str(&c->w, hex, strlen(hex));
}

/* "storage": the key in the file; storages made while loading (a dtype conversion torch's
   rebuild asked for) have none and are named by address, which keeps sharing visible. */
static void storage_field(dump_ctx *c, const sdict_storage *s) {
    const char *key = s ? sdict_storage_key(s) : NULL;
    char addr[32];
    cli_jw_key(&c->w, "storage");
    if (key) {
        cli_jw_str(&c->w, key, strlen(key));
    } else if (s) {
        snprintf(addr, sizeof addr, "mem:%p", (const void *)s);
        cli_jw_str(&c->w, addr, strlen(addr));
    } else {
        cli_jw_raw(&c->w, "null");
    }
}

static void tensor_node(dump_ctx *c, const sdict_value *v, int depth) {
    const sdict_tensor *t = sdict_value_tensor(v);
    const sdict_quantizer *q = sdict_value_quantizer(v);
    typed(c, "tensor");
    str_field(c, "dtype", sdict_dtype_name(t->dtype));
    dims_field(c, "shape", t->shape, t->ndim);
    dims_field(c, "stride", t->stride, t->ndim);
    int_field(c, "storage_offset", (long long)t->storage_offset);
    bool_field(c, "requires_grad", t->requires_grad);
    bool_field(c, "parameter", t->is_parameter);
    storage_field(c, t->storage);
    str_field(c, "device", sdict_tensor_device(t));
    if (t->is_conj)
        bool_field(c, "conj", true);
    if (t->is_neg)
        bool_field(c, "neg", true);
    if (q)
        quantizer_field(c, q, depth);
    attrs_field(c, v, depth);
    sha256_field(c, t);
    cli_jw_close(&c->w, '}');
}

/* A bare storage: its elements as a 1-D tensor of its class's dtype, hashed like a tensor. */
static void storage_node(dump_ctx *c, const sdict_value *v) {
    sdict_dtype dt = SDICT_UINT8;
    sdict_storage *s = sdict_value_storage(v, &dt);
    size_t es = sdict_dtype_size(dt), nbytes = sdict_storage_nbytes(s);
    int64_t numel = (int64_t)(es ? nbytes / es : 0);
    typed(c, "storage");
    str_field(c, "dtype", sdict_dtype_name(dt));
    int_field(c, "numel", (long long)numel);
    int_field(c, "nbytes", (long long)nbytes);
    str_field(c, "device", sdict_storage_location(s));
    storage_field(c, s);
    int64_t shape[1], stride[1];
    sdict_tensor t;
    cli_storage_tensor(v, &t, shape, stride);
    sha256_field(c, &t);
    cli_jw_close(&c->w, '}');
}

static void node(dump_ctx *c, const sdict_value *v, int depth) {
    if (depth > CLI_MAX_DEPTH) {
        if (c->st == SDICT_OK) {
            c->st = SDICT_E_LIMIT;
            c->err.code = SDICT_E_LIMIT;
            c->err.offset = -1;
            snprintf(c->err.message, sizeof c->err.message,
                     "tree nested deeper than %d (cyclic?)", CLI_MAX_DEPTH);
        }
        typed(c, "none");
        cli_jw_close(&c->w, '}');
        return;
    }
    sdict_kind k = sdict_value_kind(v);
    switch (k) {
    case SDICT_KIND_TENSOR:
        tensor_node(c, v, depth);
        return;
    case SDICT_KIND_SPARSE:
        sparse_node(c, v, depth);
        return;
    case SDICT_KIND_NESTED:
        nested_node(c, v, depth);
        return;
    case SDICT_KIND_STORAGE:
        storage_node(c, v);
        return;
    default:
        break;
    }
    typed(c, sdict_kind_name(k));
    switch (k) {
    case SDICT_KIND_BOOL:
        bool_field(c, "value", sdict_bool_get(v));
        break;
    case SDICT_KIND_INT:
        cli_jw_key(&c->w, "value");
        cli_jw_pyint(&c->w, v);
        break;
    case SDICT_KIND_FLOAT:
        float_field(c, "value", sdict_float_get(v));
        break;
    case SDICT_KIND_COMPLEX: {
        double re, im;
        sdict_complex_get(v, &re, &im);
        float_field(c, "real", re);
        float_field(c, "imag", im);
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
        str_field(c, "value", text);
        break;
    }
    case SDICT_KIND_QSCHEME:
        str_field(c, "value", sdict_qscheme_name(sdict_qscheme_value_get(v)));
        break;
    case SDICT_KIND_LAYOUT:
        str_field(c, "value", sdict_layout_name(sdict_layout_value_get(v)));
        break;
    case SDICT_KIND_STR: {
        size_t len = 0;
        const char *s = sdict_str_get(v, &len);
        cli_jw_key(&c->w, "value");
        cli_jw_str(&c->w, s, len);
        break;
    }
    case SDICT_KIND_BYTES: {
        size_t len = 0;
        const unsigned char *p = sdict_bytes_get(v, &len);
        cli_jw_key(&c->w, "hex");
        buf_putn(&c->w.b, "\"", 1);
        for (size_t i = 0; i < len; i++)
            buf_printf(&c->w.b, "%02x", p[i]);
        buf_putn(&c->w.b, "\"", 1);
        break;
    }
    case SDICT_KIND_DTYPE:
        str_field(c, "value", sdict_dtype_name(sdict_dtype_value_get(v)));
        break;
    case SDICT_KIND_LIST:
    case SDICT_KIND_TUPLE:
    case SDICT_KIND_SET: {
        if (sdict_value_pytype(v) == SDICT_PYTYPE_FROZENSET)
            bool_field(c, "frozenset", true);
        size_t n = sdict_seq_len(v);
        cli_jw_key(&c->w, "items");
        cli_jw_open(&c->w, '[');
        for (size_t i = 0; i < n; i++) {
            cli_jw_item(&c->w);
            node(c, sdict_seq_item(v, i), depth + 1);
        }
        cli_jw_close(&c->w, ']');
        break;
    }
    case SDICT_KIND_OBJECT: {
        static const char *const how[] = {"class", "reduce", "newobj"};
        sdict_object_call h = sdict_object_how(v);
        str_field(c, "module", sdict_object_module(v));
        str_field(c, "name", sdict_object_name(v));
        str_field(c, "call", (unsigned)h < 3 ? how[h] : "?");
        if (sdict_object_callee(v))
            node_field(c, "callee", sdict_object_callee(v), depth + 1);
        if (sdict_object_args(v))
            node_field(c, "args", sdict_object_args(v), depth + 1);
        if (sdict_object_kwargs(v))
            node_field(c, "kwargs", sdict_object_kwargs(v), depth + 1);
        if (sdict_object_state(v))
            node_field(c, "state", sdict_object_state(v), depth + 1);
        if (sdict_object_items(v))
            node_field(c, "items", sdict_object_items(v), depth + 1);
        break;
    }
    case SDICT_KIND_DICT: {
        bool_field(c, "ordered", sdict_dict_is_ordered(v));
        if (sdict_value_pytype(v) == SDICT_PYTYPE_COUNTER)
            bool_field(c, "counter", true);
        cli_jw_key(&c->w, "items");
        dict_items(c, v, depth, true);
        const sdict_value *attrs = sdict_dict_attrs(v);
        if (attrs) {
            cli_jw_key(&c->w, "attrs");
            dict_items(c, attrs, depth, false);
        }
        break;
    }
    default:
        break;
    }
    cli_jw_close(&c->w, '}');
}

int cmd_dump(const cli_cmd *cmd, const cli_args *args) {
    (void)cmd;
    sdict_doc *doc = cli_load(args->pos[0], args);
    if (!doc)
        return CLI_EXIT_BAD_INPUT;
    dump_ctx c;
    memset(&c, 0, sizeof c);
    c.data_budget = cli_data_budget(args->pos, 1);
    cli_view_cache_init(&c.digests, 2 * SHA256_DIGEST_SIZE + 1);
    /* streamed as it is walked: a file of many small values must not become a document tree
       in memory many times its size */
    cli_jw_init(&c.w, stdout, args->pretty ? 2 : 0);
    cli_jw_open(&c.w, '{');
    str_field(&c, "format", sdict_format_name(sdict_doc_format(doc)));
    str_field(&c, "byteorder", sdict_doc_big_endian(doc) ? "big" : "little");
    json_t *md = cli_json_metadata(doc);
    cli_jw_key(&c.w, "metadata");
    cli_jw_json(&c.w, md);
    json_decref(md);
    node_field(&c, "root", sdict_doc_root(doc), 0);
    cli_jw_close(&c.w, '}');
    if (c.st == SDICT_OK)
        cli_jw_raw(&c.w, "\n");
    int rc = cli_jw_finish(&c.w) == 0 ? CLI_EXIT_OK : CLI_EXIT_BAD_INPUT;
    if (c.st != SDICT_OK) {
        if (c.err.code == SDICT_OK)
            c.err.code = c.st;
        snprintf(c.err.file, sizeof c.err.file, "%s", args->pos[0]);
        cli_report_error(c.st, &c.err);
        rc = CLI_EXIT_BAD_INPUT;
    }
    cli_view_cache_free(&c.digests);
    cli_forget_ints();
    sdict_doc_free(doc);
    return rc;
}
