/*
 safetensors_read.c - the safetensors reader (huggingface/safetensors, safetensors/src/tensor.rs).

 A file is an 8-byte little-endian header length N, N bytes of UTF-8 JSON, then the data
 section. The JSON object maps each tensor name to {"dtype", "shape", "data_offsets": [begin,
 end]} (offsets relative to the data section) and may hold "__metadata__": str -> str (or
 null). The rules are those of the Rust core's read_metadata and Metadata::validate, each
 error naming its rule with the Rust error's name in parentheses:
   N > 100,000,000                                       HeaderTooLarge
   8 + N beyond the file                                 InvalidHeaderLength
   header not UTF-8                                      InvalidHeader
   not JSON, not an object, a field of the wrong type,
   a missing field, an unknown dtype, a negative or
   fractional number, __metadata__ not str -> str      InvalidHeaderDeserialization
   sorted by (begin, end), each tensor must begin where
   the previous ended, from 0, with end >= begin         InvalidOffset
   numel x bits overflows                                ValidationOverflow
   numel x bits not a multiple of 8                      MisalignedSlice
   end - begin != numel x bits / 8                       TensorInvalidInfo
   the last end is not the end of the file               MetadataIncompleteBuffer
 Stricter than the Rust core (it keeps the last of duplicate keys; jansson refuses them, as a
 file that means two things to two readers is refused everywhere in statedict); numbers past
 int64 (jansson cannot read them; the Rust core takes u64, which only a zero-sized tensor can
 use) and "\u0000" in names are refused too. Unknown fields inside a tensor entry are
 ignored, as serde does.

 F4 (4-bit floats) becomes torch's float4_e2m1fn_x2 with the last dimension halved, as
 safetensors' torch binding (0.8, safe_open(framework="pt")) gives it, when the last dimension
 is even; other F4 shapes (odd last dimension, which that binding refuses) stay float4_e2m1fn
 with the file's shape. F6_E2M3 / F6_E3M2 become float6_e2m3fn / float6_e3m2fn.

 The root is a dict of the tensors in data-offset order (ties in file order), as
 safetensors.torch.load_file (0.8) returns them; each tensor has its own storage, mapped from
 the file when the source is mapped, SDICT_LOAD_COPY is not set and its file offset is a
 multiple of its element size, else copied.
*/
#include "internal.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define ST_MAX_HEADER 100000000u

/* The safetensors dtype names (Dtype in tensor.rs) and what they become. */
static const struct {
    const char *name;
    sdict_dtype dtype;
} st_dtypes[] = {
    {"BOOL", SDICT_BOOL},
    {"F4", SDICT_FLOAT4_E2M1FN},
    {"F6_E2M3", SDICT_FLOAT6_E2M3FN},
    {"F6_E3M2", SDICT_FLOAT6_E3M2FN},
    {"U8", SDICT_UINT8},
    {"I8", SDICT_INT8},
    {"F8_E5M2", SDICT_FLOAT8_E5M2},
    {"F8_E4M3", SDICT_FLOAT8_E4M3FN},
    {"F8_E8M0", SDICT_FLOAT8_E8M0FNU},
    {"F8_E4M3FNUZ", SDICT_FLOAT8_E4M3FNUZ},
    {"F8_E5M2FNUZ", SDICT_FLOAT8_E5M2FNUZ},
    {"I16", SDICT_INT16},
    {"U16", SDICT_UINT16},
    {"F16", SDICT_FLOAT16},
    {"BF16", SDICT_BFLOAT16},
    {"I32", SDICT_INT32},
    {"U32", SDICT_UINT32},
    {"F32", SDICT_FLOAT32},
    {"C64", SDICT_COMPLEX64},
    {"F64", SDICT_FLOAT64},
    {"I64", SDICT_INT64},
    {"U64", SDICT_UINT64},
};

static bool json_space(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

bool sdict__st_sniff(const uint8_t *h, size_t n) {
    size_t i = 8;
    while (i < n && json_space(h[i]))
        i++;
    return i < n && (h[i] == '{' || h[i] == '[');
}

/* Offset of the first byte that breaks strict UTF-8 (Rust's str::from_utf8: no overlong
   forms, no surrogates, nothing past U+10FFFF), or n. */
static size_t utf8_bad_at(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint8_t lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF)
            len = 2;
        else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0)
                lo = 0xA0;
            else if (c == 0xED)
                hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0)
                lo = 0x90;
            else if (c == 0xF4)
                hi = 0x8F;
        } else
            return i;
        if (n - i < len || s[i + 1] < lo || s[i + 1] > hi)
            return i;
        for (size_t k = 2; k < len; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF)
                return i;
        i += len;
    }
    return n;
}

/* One tensor entry of the header. */
typedef struct st_entry {
    const char *name;    /* jansson's key (lives with the JSON tree) */
    size_t name_len;
    sdict_dtype dtype;
    int32_t ndim;
    size_t shape_at;     /* index of its first dimension in the shape arena */
    uint64_t begin, end; /* data_offsets */
    size_t order;        /* position in the header */
} st_entry;

typedef struct st_reader {
    const sdict__source *src;
    const uint8_t *hdr;  /* the N header bytes */
    uint64_t n;
    json_t *root;
    st_entry *ents;
    size_t n_ents;
    int64_t *dims;       /* every tensor's shape, back to back */
    size_t n_dims;
    int32_t max_ndim;
    sdict_error *err;
} st_reader;

/* The file offset of key's text in the header (best effort: its first occurrence as a quoted
   string, else the header's start), for messages about a tensor entry. */
static int64_t key_offset(const st_reader *r, const char *key, size_t len) {
    for (uint64_t i = 0; i + len + 2 <= r->n; i++) {
        const uint8_t *p = memchr(r->hdr + i, '"', (size_t)(r->n - i));
        if (!p)
            break;
        i = (uint64_t)(p - r->hdr);
        if (i + len + 2 <= r->n && memcmp(p + 1, key, len) == 0 && p[len + 1] == '"')
            return (int64_t)(8 + i);
    }
    return 8;
}

/* An error about the entry of `key` (its offset in the header, best effort). */
#define ENTRY_ERR(r, code, key, klen, ...)                                                        \
    sdict__err((r)->err, code, key, key_offset(r, key, klen), __VA_ARGS__)

/* A non-negative JSON integer into *out; else an error naming what (a field of tensor key). */
static sdict_status get_uint(st_reader *r, const char *key, size_t klen, const char *what,
                             json_t *v, uint64_t *out) {
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *out = (uint64_t)json_integer_value(v);
        return SDICT_OK;
    }
    const char *kind = json_is_integer(v) ? "a negative number"
                       : json_is_real(v)  ? "a number with a fraction or exponent"
                                          : "not a number";
    return ENTRY_ERR(r, SDICT_E_SHAPE, key, klen,
                     "%s is %s: safetensors takes only non-negative integers there "
                     "(InvalidHeaderDeserialization)",
                     what, kind);
}

static sdict_status parse_entry(st_reader *r, const char *key, json_t *v, size_t order) {
    size_t klen = strlen(key);
    if (!json_is_object(v))
        return ENTRY_ERR(r, SDICT_E_FORMAT, key, klen,
                         "tensor entry is not a JSON object with dtype, shape and data_offsets "
                         "(InvalidHeaderDeserialization)");
    json_t *dt = json_object_get(v, "dtype"), *shape = json_object_get(v, "shape"),
           *offs = json_object_get(v, "data_offsets");
    if (!dt || !shape || !offs)
        return ENTRY_ERR(r, SDICT_E_FORMAT, key, klen,
                         "tensor entry has no \"%s\" field (InvalidHeaderDeserialization)",
                         !dt ? "dtype" : !shape ? "shape" : "data_offsets");
    if (!json_is_string(dt))
        return ENTRY_ERR(r, SDICT_E_FORMAT, key, klen,
                         "\"dtype\" is not a string (InvalidHeaderDeserialization)");
    st_entry e;
    memset(&e, 0, sizeof e);
    e.name = key;
    e.name_len = klen;
    e.order = order;
    e.dtype = SDICT_DTYPE_COUNT;
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (strcmp(json_string_value(dt), st_dtypes[i].name) == 0 &&
            json_string_length(dt) == strlen(st_dtypes[i].name))
            e.dtype = st_dtypes[i].dtype;
    if (e.dtype == SDICT_DTYPE_COUNT) {
        return ENTRY_ERR(r, SDICT_E_DTYPE, key, klen,
                         "unknown safetensors dtype \"%.64s\" (InvalidHeaderDeserialization)",
                         json_string_value(dt));
    }
    if (!json_is_array(shape))
        return ENTRY_ERR(r, SDICT_E_SHAPE, key, klen,
                         "\"shape\" is not an array (InvalidHeaderDeserialization)");
    size_t nd = json_array_size(shape);
    if (nd > INT32_MAX)
        return ENTRY_ERR(r, SDICT_E_LIMIT, key, klen, "%zu dimensions", nd);
    e.ndim = (int32_t)nd;
    e.shape_at = r->n_dims;
    for (size_t k = 0; k < nd; k++) {
        char what[48];
        snprintf(what, sizeof what, "dimension %zu of \"shape\"", k);
        uint64_t d = 0;
        sdict_status st = get_uint(r, key, klen, what, json_array_get(shape, k), &d);
        if (st != SDICT_OK)
            return st;
        r->dims[r->n_dims++] = (int64_t)d;
    }
    if (e.ndim > r->max_ndim)
        r->max_ndim = e.ndim;
    if (!json_is_array(offs) || json_array_size(offs) != 2)
        return ENTRY_ERR(r, SDICT_E_FORMAT, key, klen,
                         "\"data_offsets\" is not an array of two numbers "
                         "(InvalidHeaderDeserialization)");
    sdict_status st = get_uint(r, key, klen, "data_offsets[0]", json_array_get(offs, 0), &e.begin);
    if (st == SDICT_OK)
        st = get_uint(r, key, klen, "data_offsets[1]", json_array_get(offs, 1), &e.end);
    if (st != SDICT_OK)
        return st;
    r->ents[r->n_ents++] = e;
    return SDICT_OK;
}

/* The dimensions of every entry's "shape" array (sizes the shape arena: an over-count at
   worst). */
static size_t count_dims(json_t *root) {
    size_t n = 0;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        json_t *shape = json_is_object(v) ? json_object_get(v, "shape") : NULL;
        if (json_is_array(shape))
            n += json_array_size(shape);
    }
    return n;
}

static int entry_cmp(const void *a, const void *b) {
    const st_entry *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

/* Metadata::validate over the sorted entries; *data_end gets the last end. */
static sdict_status validate(st_reader *r, uint64_t *data_end) {
    uint64_t start = 0, data_at = 8 + r->n;
    for (size_t i = 0; i < r->n_ents; i++) {
        const st_entry *e = &r->ents[i];
        if (e->begin != start || e->end < e->begin) {
            const char *why = e->end < e->begin       ? "it ends before it begins"
                              : e->begin < start     ? "it overlaps the tensor before it"
                              : i == 0               ? "the data section does not start with it"
                                                     : "it leaves a hole after the tensor before it";
            return sdict__err(r->err, SDICT_E_STORAGE, e->name, (int64_t)(data_at + start),
                              "data_offsets [%llu, %llu] do not tile the data section: the "
                              "next tensor in offset order must begin at %llu, and %s "
                              "(InvalidOffset)",
                              (unsigned long long)e->begin, (unsigned long long)e->end,
                              (unsigned long long)start, why);
        }
        start = e->end;
        uint64_t numel = 1, nbits;
        for (int32_t k = 0; k < e->ndim; k++)
            if (!sdict__mul_u64(numel, (uint64_t)r->dims[e->shape_at + (size_t)k], &numel))
                return sdict__err(r->err, SDICT_E_SHAPE, e->name, (int64_t)(data_at + e->begin),
                                  "the element count of its shape overflows 64 bits "
                                  "(ValidationOverflow)");
        size_t bits = sdict_dtype_bits(e->dtype);
        if (!sdict__mul_u64(numel, bits, &nbits))
            return sdict__err(r->err, SDICT_E_SHAPE, e->name, (int64_t)(data_at + e->begin),
                              "%llu elements of %zu bits overflow 64 bits (ValidationOverflow)",
                              (unsigned long long)numel, bits);
        if (nbits % 8)
            return sdict__err(r->err, SDICT_E_SHAPE, e->name, (int64_t)(data_at + e->begin),
                              "%llu elements of %zu bits do not end on a byte boundary "
                              "(MisalignedSlice)",
                              (unsigned long long)numel, bits);
        if (e->end - e->begin != nbits / 8)
            return sdict__err(r->err, SDICT_E_SHAPE, e->name, (int64_t)(data_at + e->begin),
                              "data_offsets [%llu, %llu] hold %llu bytes, but %llu elements of "
                              "%s take %llu (TensorInvalidInfo)",
                              (unsigned long long)e->begin, (unsigned long long)e->end,
                              (unsigned long long)(e->end - e->begin), (unsigned long long)numel,
                              sdict_dtype_name(e->dtype), (unsigned long long)(nbits / 8));
    }
    *data_end = start;
    return SDICT_OK;
}

size_t sdict__json_containers(const uint8_t *p, size_t n) {
    size_t count = 0;
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '{' || c == '[') {
            count++;
        }
    }
    return count;
}

/* Parses and validates the header (everything but the data bytes). */
static sdict_status parse_header(st_reader *r, const sdict_limits *limits) {
    json_error_t jerr;
    /* jansson spends ~200 bytes on each object or array: a header of little else ('[{},{},..]'
       in an ignored field) would cost 70 times its size; a real one has 3 in 49 bytes or more */
    size_t containers = sdict__json_containers(r->hdr, (size_t)r->n);
    if (containers > SDICT_JSON_MAX_CONTAINERS((size_t)r->n))
        return sdict__err(r->err, SDICT_E_LIMIT, "header", 8,
                          "the %llu-byte header holds %zu JSON objects and arrays, more than one "
                          "per 8 bytes (a safetensors header has 3 per tensor entry)",
                          (unsigned long long)r->n, containers);
    r->root = json_loadb((const char *)r->hdr, (size_t)r->n, JSON_REJECT_DUPLICATES, &jerr);
    if (!r->root) {
        if (json_error_code(&jerr) == json_error_out_of_memory)
            return sdict__err(r->err, SDICT_E_NOMEM, "header", 8, "out of memory parsing the "
                              "%llu-byte header", (unsigned long long)r->n);
        return sdict__err(r->err, SDICT_E_FORMAT, "header", 8 + (int64_t)jerr.position,
                          "header is not valid JSON: %s (InvalidHeaderDeserialization)", jerr.text);
    }
    if (!json_is_object(r->root))
        return sdict__err(r->err, SDICT_E_FORMAT, "header", 8,
                          "header is a JSON array, not an object (InvalidHeaderDeserialization)");
    size_t n_keys = json_object_size(r->root), n_dims = count_dims(r->root);
    uint64_t max_values = limits && limits->max_values ? limits->max_values : 64u << 20;
    if (n_keys > max_values / 2)
        return sdict__err(r->err, SDICT_E_LIMIT, "header", 8,
                          "%zu entries exceed the limit of %llu values", n_keys,
                          (unsigned long long)max_values);
    r->ents = sdict__calloc(n_keys ? n_keys : 1, sizeof *r->ents);
    r->dims = sdict__calloc(n_dims ? n_dims : 1, sizeof *r->dims);
    if (!r->ents || !r->dims)
        return sdict__err(r->err, SDICT_E_NOMEM, "header", 8,
                          "out of memory for %zu tensor entries", n_keys);
    const char *key;
    json_t *v;
    size_t order = 0;
    json_object_foreach(r->root, key, v) {
        if (strcmp(key, "__metadata__") == 0) {
            if (json_is_null(v))
                continue;
            if (!json_is_object(v))
                return ENTRY_ERR(r, SDICT_E_FORMAT, key, strlen(key),
                                 "__metadata__ is not an object of str -> str "
                                 "(InvalidHeaderDeserialization)");
            const char *mk;
            json_t *mv;
            json_object_foreach(v, mk, mv) {
                if (!json_is_string(mv)) {
                    return ENTRY_ERR(r, SDICT_E_FORMAT, "__metadata__", 12,
                                     "__metadata__ value of \"%.100s\" is not a string (safetensors "
                                     "metadata is str -> str) (InvalidHeaderDeserialization)",
                                     mk);
                }
            }
            continue;
        }
        sdict_status st = parse_entry(r, key, v, order++);
        if (st != SDICT_OK)
            return st;
    }
    qsort(r->ents, r->n_ents, sizeof *r->ents, entry_cmp);
    uint64_t data_end = 0;
    sdict_status st = validate(r, &data_end);
    if (st != SDICT_OK)
        return st;
    if (data_end > r->src->size - 8 - r->n)
        return sdict__err(r->err, SDICT_E_TRUNCATED,
                          r->n_ents ? r->ents[r->n_ents - 1].name : "header",
                          (int64_t)r->src->size,
                          "the tensors end at byte %llu of the data section, past the end of "
                          "the %llu-byte file (MetadataIncompleteBuffer)",
                          (unsigned long long)data_end, (unsigned long long)r->src->size);
    uint64_t file_end = 8 + r->n + data_end; /* within the file: checked above */
    if (file_end != r->src->size)
        return sdict__err(r->err, SDICT_E_FORMAT, "data", (int64_t)file_end,
                          "%llu bytes follow the last tensor's data (a safetensors data section "
                          "must end with the file; a polyglot file?) (MetadataIncompleteBuffer)",
                          (unsigned long long)(r->src->size - file_end));
    return SDICT_OK;
}

static bool host_big_endian(void) {
    const uint16_t one = 1;
    uint8_t b;
    memcpy(&b, &one, 1);
    return b == 0;
}

/* The storage of entry e: a view of the mapping, or a copy. */
static sdict_status entry_storage(st_reader *r, const st_entry *e, bool copy,
                                  sdict_storage **out) {
    uint64_t at = 8 + r->n + e->begin, nbytes = e->end - e->begin;
    size_t es = sdict_dtype_size(e->dtype);
    bool swap = host_big_endian() && es > 1;
    if (nbytes > SIZE_MAX)
        return sdict__err(r->err, SDICT_E_LIMIT, e->name, (int64_t)at,
                          "%llu bytes do not fit in memory", (unsigned long long)nbytes);
    if (r->src->mapping && !copy && !swap && at % es == 0 && nbytes > 0)
        return sdict__storage_new_mapped(r->src->mapping, at, (size_t)nbytes, out, r->err);
    sdict_status st = sdict_storage_new((size_t)nbytes, out, r->err);
    if (st == SDICT_OK && nbytes)
        st = sdict__source_read(r->src, at, sdict_storage_data(*out), (size_t)nbytes, e->name,
                                r->err);
    if (st == SDICT_OK && swap) {
        bool cplx = e->dtype == SDICT_COMPLEX64;
        sdict__byteswap(sdict_storage_data(*out), (size_t)nbytes / (cplx ? es / 2 : es),
                        cplx ? es / 2 : es);
    }
    if (st != SDICT_OK) {
        sdict_storage_release(*out);
        *out = NULL;
    }
    return st;
}

/* The doc: root dict of tensors in offset order, metadata in file order. */
static sdict_status build_doc(st_reader *r, uint32_t flags, sdict_doc *doc) {
    sdict_value *root = sdict_dict_new(doc, false);
    int64_t *stride = sdict__calloc(r->max_ndim ? (size_t)r->max_ndim : 1, sizeof *stride);
    sdict_status st = SDICT_OK;
    if (!root || !stride)
        st = sdict__err(r->err, SDICT_E_NOMEM, "header", 8, "out of memory for the tensors");
    for (size_t i = 0; st == SDICT_OK && i < r->n_ents; i++) {
        const st_entry *e = &r->ents[i];
        sdict_storage *s = NULL;
        st = entry_storage(r, e, (flags & SDICT_LOAD_COPY) != 0, &s);
        /* the storage is known by its tensor's name (dump's "storage" field) */
        if (st == SDICT_OK && (st = sdict__storage_set_key(s, e->name, r->err)) != SDICT_OK)
            sdict_storage_release(s);
        if (st != SDICT_OK)
            break;
        sdict_tensor t;
        sdict_value *tv = NULL, *kv;
        int64_t *dims = r->dims + e->shape_at;
        sdict_dtype dt = e->dtype;
        if (dt == SDICT_FLOAT4_E2M1FN && e->ndim > 0 && dims[e->ndim - 1] % 2 == 0) {
            /* as safe_open(framework="pt") gives it: two per byte, the last dimension halved */
            dt = SDICT_FLOAT4_E2M1FN_X2;
            dims[e->ndim - 1] /= 2;
        }
        st = sdict_tensor_init(&t, dt, e->ndim, dims, stride, s, r->err);
        if (st == SDICT_OK)
            st = sdict_tensor_new(doc, &t, &tv, r->err);
        sdict_storage_release(s);
        if (st != SDICT_OK) {
            /* name the tensor: a stride overflowing int64 (a zero-sized tensor with huge
               dimensions) is refused by the tensor checks */
            if (r->err) {
                snprintf(r->err->record, sizeof r->err->record, "%s", e->name);
                r->err->offset = (int64_t)(8 + r->n + e->begin);
            }
            break;
        }
        kv = sdict_str_new(doc, e->name, e->name_len);
        if (!kv || sdict_dict_set(root, kv, tv) != SDICT_OK)
            st = sdict__err(r->err, SDICT_E_NOMEM, e->name, 8, "out of memory for the tensors");
    }
    sdict__free(stride);
    if (st == SDICT_OK)
        st = sdict_doc_set_root(doc, root);
    json_t *md = json_object_get(r->root, "__metadata__");
    if (st == SDICT_OK && json_is_object(md)) {
        sdict_value *d = sdict_dict_new(doc, false);
        const char *mk;
        json_t *mv;
        if (!d)
            st = SDICT_E_NOMEM;
        json_object_foreach(md, mk, mv) {
            if (st != SDICT_OK)
                break;
            sdict_value *k = sdict_str_new(doc, mk, strlen(mk)),
                        *v = sdict_str_new(doc, json_string_value(mv), json_string_length(mv));
            if (!k || !v || sdict_dict_set(d, k, v) != SDICT_OK)
                st = SDICT_E_NOMEM;
        }
        if (st == SDICT_OK)
            st = sdict_doc_set_metadata(doc, d);
        if (st != SDICT_OK)
            st = sdict__err(r->err, SDICT_E_NOMEM, "__metadata__", 8,
                            "out of memory for the metadata");
    }
    if (st == SDICT_OK)
        sdict__doc_set_format(doc, SDICT_FORMAT_SAFETENSORS, false);
    return st;
}

sdict_status sdict__st_read(sdict__source *src, const sdict_load_opts *opts,
                            const sdict__read_job *job, sdict_doc **out, sdict_error *err) {
    if (job->unsafe_count)
        *job->unsafe_count = 0;
    st_reader r;
    memset(&r, 0, sizeof r);
    r.src = src;
    r.err = err;
    if (src->size < 8)
        return sdict__err(err, SDICT_E_TRUNCATED, "header", 0,
                          "%llu bytes: a safetensors file starts with an 8-byte header length "
                          "(HeaderTooSmall)",
                          (unsigned long long)src->size);
    uint8_t len[8];
    sdict_status st = sdict__source_read(src, 0, len, 8, "header", err);
    if (st != SDICT_OK)
        return st;
    r.n = sdict__le64(len);
    if (r.n > ST_MAX_HEADER)
        return sdict__err(err, SDICT_E_LIMIT, "header", 0,
                          "header length %llu exceeds safetensors' limit of %u bytes "
                          "(HeaderTooLarge)",
                          (unsigned long long)r.n, ST_MAX_HEADER);
    if (r.n > src->size - 8)
        return sdict__err(err, SDICT_E_TRUNCATED, "header", 0,
                          "header length %llu runs past the end of the %llu-byte file "
                          "(InvalidHeaderLength)",
                          (unsigned long long)r.n, (unsigned long long)src->size);
    uint8_t *copy = NULL;
    if (src->data) {
        r.hdr = src->data + 8;
    } else {
        copy = sdict__malloc((size_t)r.n ? (size_t)r.n : 1);
        if (!copy)
            return sdict__err(err, SDICT_E_NOMEM, "header", 8,
                              "out of memory for a %llu-byte header", (unsigned long long)r.n);
        st = sdict__source_read(src, 8, copy, (size_t)r.n, "header", err);
        r.hdr = copy;
    }
    if (st == SDICT_OK) {
        size_t bad = utf8_bad_at(r.hdr, (size_t)r.n);
        if (bad < r.n)
            st = sdict__err(err, SDICT_E_FORMAT, "header", 8 + (int64_t)bad,
                            "header is not UTF-8: byte 0x%02x at offset %zu of the header "
                            "(InvalidHeader)",
                            r.hdr[bad], bad);
    }
    if (st == SDICT_OK)
        st = parse_header(&r, opts ? &opts->limits : NULL);
    sdict_doc *doc = NULL;
    if (st == SDICT_OK && job->mode == SDICT__READ_LOAD && out) {
        st = sdict_doc_new(&doc, err);
        if (st == SDICT_OK)
            st = build_doc(&r, opts ? opts->flags : 0, doc);
        if (st == SDICT_OK) {
            *out = doc;
            doc = NULL;
        }
    }
    sdict_doc_free(doc);
    json_decref(r.root);
    sdict__free(r.ents);
    sdict__free(r.dims);
    sdict__free(copy);
    return st;
}
