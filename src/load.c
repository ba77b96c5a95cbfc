/*
 load.c - the torch formats behind sdict_load / sdict_load_buffer / sdict_scan / sdict_verify
 (format.c tells the formats apart from the content and calls sdict__torch_read).

 Drives the zip reader and the pickle machine:
   zip    (torch >= 1.6)  data.pkl + data/<key> records; storages mapped or copied
   legacy (torch 0.4-1.5) magic, protocol, sys_info, object pickle, key list, raw payloads
   tar    (torch < 0.4)   members sys_info, pickle, tensors, storages
 Storages are created by the persistent_load callback given to the pickle machine and cached by
 key, so tensors that shared a storage in torch share one sdict_storage here.
*/
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*==================================================================================================
 MARK: Small helpers
==================================================================================================*/

static bool host_big_endian(void) {
    const uint16_t one = 1;
    uint8_t b;
    memcpy(&b, &one, 1);
    return b == 0;
}

static void fill_limits(sdict_limits *l, const sdict_load_opts *opts) {
    if (opts)
        *l = opts->limits;
    else
        memset(l, 0, sizeof *l);
    if (!l->max_depth) l->max_depth = 1000;
    if (!l->max_memo) l->max_memo = 16u << 20;
    if (!l->max_stack) l->max_stack = 16u << 20;
    if (!l->max_str_bytes) l->max_str_bytes = 1u << 30;
    if (!l->max_values) l->max_values = 64u << 20;
    if (!l->max_records) l->max_records = 1u << 20;
    if (!l->max_inflate) l->max_inflate = (uint64_t)16 << 30;
}

/* Swaps payload bytes read from a file of the other byte order. Complex types swap each
   component (a complex64 is two float32). */
static void swap_payload(void *data, size_t nbytes, sdict_dtype dtype) {
    size_t es = sdict_dtype_size(dtype);
    if (dtype == SDICT_COMPLEX128 || dtype == SDICT_COMPLEX64 || dtype == SDICT_COMPLEX32)
        es /= 2;
    if (es > 1)
        sdict__byteswap(data, nbytes / es, es);
}

/*==================================================================================================
 MARK: Storage cache (key -> storage value), open addressing on an FNV-1a hash
==================================================================================================*/

typedef struct cache_ent {
    char *key;
    sdict_value *val;        /* storage value in the doc (holds the storage reference) */
    sdict_storage *storage;  /* borrowed from val */
    sdict_dtype dtype;
    int64_t numel;
    bool root;               /* legacy: a storage whose payload follows the key list */
    bool filled;             /* legacy: payload read */
} cache_ent;

typedef struct cache {
    cache_ent *ents;
    size_t n, cap;     /* ents used / allocated */
    uint32_t *slots;   /* index + 1 into ents, 0 = empty */
    size_t nslots;     /* power of two */
} cache;

static void cache_free(cache *c) {
    for (size_t i = 0; i < c->n; i++)
        sdict__free(c->ents[i].key);
    sdict__free(c->ents);
    sdict__free(c->slots);
    memset(c, 0, sizeof *c);
}

static cache_ent *cache_find(const cache *c, const char *key) {
    if (!c->nslots)
        return NULL;
    for (size_t i = (size_t)sdict__str_hash(key) & (c->nslots - 1);; i = (i + 1) & (c->nslots - 1)) {
        uint32_t s = c->slots[i];
        if (!s)
            return NULL;
        if (strcmp(c->ents[s - 1].key, key) == 0)
            return &c->ents[s - 1];
    }
}

static void cache_slot_insert(cache *c, uint32_t idx1) {
    size_t i = (size_t)sdict__str_hash(c->ents[idx1 - 1].key) & (c->nslots - 1);
    while (c->slots[i])
        i = (i + 1) & (c->nslots - 1);
    c->slots[i] = idx1;
}

/* Adds an entry (key copied); returns it or NULL on out-of-memory. */
static cache_ent *cache_add(cache *c, const char *key) {
    if (c->n >= UINT32_MAX - 1)
        return NULL;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        cache_ent *e = sdict__realloc(c->ents, cap * sizeof *e);
        if (!e)
            return NULL;
        c->ents = e;
        c->cap = cap;
    }
    if ((c->n + 1) * 2 > c->nslots) {
        size_t ns = c->nslots ? c->nslots * 2 : 32;
        uint32_t *slots = sdict__calloc(ns, sizeof *slots);
        if (!slots)
            return NULL;
        sdict__free(c->slots);
        c->slots = slots;
        c->nslots = ns;
        for (size_t i = 0; i < c->n; i++)
            cache_slot_insert(c, (uint32_t)(i + 1));
    }
    cache_ent *e = &c->ents[c->n];
    memset(e, 0, sizeof *e);
    e->key = sdict__strndup(key, strlen(key));
    if (!e->key)
        return NULL;
    c->n++;
    cache_slot_insert(c, (uint32_t)c->n);
    return e;
}

/*==================================================================================================
 MARK: Loader state
==================================================================================================*/

typedef struct scan_state {
    void (*fn)(void *ctx, const sdict_scan_item *item);
    void *ctx;
    const char *record;
    size_t unsafe;
    bool python_may_continue; /* the last pickle run failed where Python reads on */
} scan_state;

typedef struct loader {
    sdict_doc *doc;
    sdict__source *src;
    sdict_limits limits;
    uint32_t flags;
    bool scan;              /* sdict_scan: no payload bytes read, globals reported */
    bool map_any;           /* SDICT__READ_LOAD_BYTES: stored records mapped at any offset */
    bool verify_crc;
    bool script;            /* an inert load of a TorchScript archive */
    bool big_endian;        /* payloads in the file are big-endian */
    scan_state *ss;
    cache storages;
    cache tensors;          /* tar: tensors member, by key */
    /* zip */
    sdict__zip *zip;
    const char *data_dir;   /* "data/" (or "constants/" for TorchScript constants.pkl in scans) */
    bool crc_all_zero;      /* writer computed no CRCs (torch 2.6+ compute_crc32=False) */
    uint64_t no_crc;        /* verify_crc: records read that carry no CRC to check against */
    const sdict__zip_entry *no_crc_first;
    uint8_t *no_crc_seen;   /* per entry: counted already (records may be read twice) */
    uint64_t alignment;     /* storage payload alignment: 64, or a .storage_alignment record */
    bool alignment_record;  /* the archive declared it (torch >= 2.7) */
    /* legacy */
    const uint8_t *win;     /* bytes [0, win_size) of the file */
    uint64_t win_size;
    uint64_t alloc_budget;  /* legacy: payload bytes still possible after the pickles */
    bool verify_all;        /* sdict_verify: CRC-check every record, read or not */
    uint64_t inflated;      /* bytes inflated from deflated records so far */
    bool literals;          /* the next pickle is a header pickle: literals only */
    bool win_truncated;     /* legacy: a pickle ran past the window (read more, retry) */
    const char *pkl_rec;    /* zip: the pickle record being run, for messages */
    char rec[200];          /* scratch record name */
    bool defer;             /* legacy object pickle: sparse/nested index checks wait for the
                               payloads, which follow the pickle */
    struct sdict__deferred *deferred;
    size_t n_deferred;
} loader;

/* The unpickler passes its ctx, the loader, to both callbacks. */
static void on_global_cb(void *ctx, const char *module, const char *name, bool allowed,
                         int64_t offset) {
    scan_state *ss = ((loader *)ctx)->ss;
    if (!allowed)
        ss->unsafe++;
    if (ss->fn) {
        sdict_scan_item it = {module, name, allowed, ss->record, offset};
        ss->fn(ss->ctx, &it);
    }
}

/* Runs the pickle machine over data[0, size) for record `record`. */
static sdict_status run_pickle(loader *L, const uint8_t *data, size_t size, const char *record,
                               sdict_status (*pl)(void *, sdict_value *, int64_t, sdict_value **,
                                                  sdict_error *),
                               sdict_value **out, size_t *consumed, sdict_error *err) {
    sdict__unpickler u;
    memset(&u, 0, sizeof u);
    u.doc = L->doc;
    u.data = data;
    u.size = size;
    u.record = record;
    u.limits = &L->limits;
    u.persistent_load = pl;
    u.ctx = L;
    if (L->ss) {
        L->ss->record = record;
        u.on_global = on_global_cb;
        u.scan = true;
    }
    u.defer_checks = L->defer;
    u.literals_only = L->literals;
    u.inert = (L->flags & SDICT_LOAD_INERT) || L->scan; /* scans go on past objects */
    sdict_status st = sdict__unpickle(&u, out, err);
    if (L->ss)
        L->ss->python_may_continue = st != SDICT_OK && u.python_may_continue;
    if (consumed)
        *consumed = u.consumed;
    if (L->defer) { /* a restarted legacy parse drops the last attempt's list */
        sdict__free(L->deferred);
        L->deferred = u.deferred;
        L->n_deferred = u.n_deferred;
    }
    return st;
}

/* The index checks of sparse and nested tensors deferred while the pickle ran (their index
   tensors' bytes had not been read yet), reported at the opcode that built each. */
static sdict_status check_deferred(loader *L, const char *record, sdict_error *err) {
    for (size_t i = 0; i < L->n_deferred; i++) {
        sdict_status st = sdict__composite_check_values(L->deferred[i].v, err);
        if (st != SDICT_OK) {
            if (err) {
                snprintf(err->record, sizeof err->record, "%s", record);
                err->offset = L->deferred[i].offset;
            }
            return st;
        }
    }
    return SDICT_OK;
}

/*==================================================================================================
 MARK: Persistent ids
==================================================================================================*/

/* A parsed storage persistent id: ('storage', cls, key, location, numel[, view_metadata]). */
typedef struct pid_info {
    sdict_dtype dtype;
    char key[64];
    int64_t numel;
    const sdict_value *view; /* legacy view_metadata tuple, or NULL */
    const sdict_value *loc;  /* the location tag (str or bytes) */
} pid_info;

/* Decimal text of a key value (str, bytes or int), into buf. */
static bool key_text(const sdict_value *v, char *buf, size_t n) {
    size_t len = 0;
    const char *s = NULL;
    if (sdict_value_kind(v) == SDICT_KIND_STR)
        s = sdict_str_get(v, &len);
    else if (sdict_value_kind(v) == SDICT_KIND_BYTES)
        s = sdict_bytes_get(v, &len);
    else if (sdict_value_kind(v) == SDICT_KIND_INT) {
        size_t need = sdict_int_to_string(v, buf, n);
        return need > 0 && need < n;
    }
    if (!s || len == 0 || len >= n || memchr(s, '\0', len))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    return true;
}

/* The dtype a storage class value stands for. The pickle machine turns GLOBAL torch.FloatStorage
   into a dtype value; a str naming the class is accepted too; UntypedStorage is bytes. */
static bool storage_class_dtype(const sdict_value *v, sdict_dtype *out) {
    if (sdict_value_kind(v) == SDICT_KIND_DTYPE) {
        *out = sdict_dtype_value_get(v);
        return *out < SDICT_DTYPE_COUNT;
    }
    if (sdict_value_kind(v) == SDICT_KIND_STR) {
        const char *s = sdict_str_get(v, NULL);
        const char *dot = strrchr(s, '.');
        const char *name = dot ? dot + 1 : s;
        if (strcmp(name, "UntypedStorage") == 0) {
            *out = SDICT_UINT8;
            return true;
        }
        return sdict__dtype_from_storage_class(name, out);
    }
    return false;
}

static sdict_status parse_pid(const char *record, int64_t off, const sdict_value *pid, bool legacy,
                              pid_info *p, sdict_error *err) {
    memset(p, 0, sizeof *p);
    size_t n = sdict_seq_len(pid);
    sdict_kind k = sdict_value_kind(pid);
    if (k != SDICT_KIND_TUPLE && k != SDICT_KIND_LIST)
        return sdict__err(err, SDICT_E_PICKLE_TYPE, record, off,
                          "persistent id is a %s, expected a tuple", sdict_kind_name(k));
    const char *tn = n ? sdict_str_get(sdict_seq_item(pid, 0), NULL) : NULL;
    if (!tn || strcmp(tn, "storage") != 0)
        return sdict__err(err, SDICT_E_PICKLE_TYPE, record, off,
                          "persistent id type '%s' is not 'storage'", tn ? tn : "?");
    if (legacy ? (n != 6 && n != 5) : n != 5)
        return sdict__err(err, SDICT_E_PICKLE_TYPE, record, off,
                          "storage persistent id has %zu items, expected %d", n, legacy ? 6 : 5);
    if (!key_text(sdict_seq_item(pid, 2), p->key, sizeof p->key))
        return sdict__err(err, SDICT_E_PICKLE_TYPE, record, off,
                          "storage persistent id: key is not a short string");
    const sdict_value *cls = sdict_seq_item(pid, 1);
    if (!storage_class_dtype(cls, &p->dtype)) {
        /* The pickle machine hands over a storage class it cannot read (torch.FooStorage, or
           one of a newer torch) as its "module.name" text: a dtype statedict lacks, not an
           unsafe file (nothing was or will be called). */
        size_t cl = 0;
        const char *cn = sdict_str_get(cls, &cl);
        const char *bare = !cn ? NULL
                           : strncmp(cn, "torch.cuda.", 11) == 0 ? cn + 11
                           : strncmp(cn, "torch.", 6) == 0 ? cn + 6 : NULL;
        if (bare && cl > 7 && cl < 200 && !memchr(cn, '\0', cl) && !strchr(bare, '.') &&
            strcmp(cn + cl - 7, "Storage") == 0)
            return sdict__err(err, SDICT_E_DTYPE, record, off,
                              "unsupported dtype %s for storage key '%s'", cn, p->key);
        return sdict__err(err, SDICT_E_PICKLE_TYPE, record, off,
                          "storage '%s': persistent id item 1 is a %s, not a storage class",
                          p->key, sdict_kind_name(sdict_value_kind(cls)));
    }
    if (sdict_value_kind(sdict_seq_item(pid, 3)) != SDICT_KIND_STR &&
        sdict_value_kind(sdict_seq_item(pid, 3)) != SDICT_KIND_BYTES)
        return sdict__err(err, SDICT_E_PICKLE_TYPE, record, off,
                          "storage '%s': location is a %s, not a string", p->key,
                          sdict_kind_name(sdict_value_kind(sdict_seq_item(pid, 3))));
    p->loc = sdict_seq_item(pid, 3);
    const sdict_value *nv = sdict_seq_item(pid, 4);
    if (sdict_value_kind(nv) != SDICT_KIND_INT || sdict_int_get(nv, &p->numel) != SDICT_OK ||
        p->numel < 0)
        return sdict__err(err, SDICT_E_STORAGE, record, off,
                          "storage '%s': element count is not an int in 0..2^63-1", p->key);
    if (n == 6 && sdict_value_kind(sdict_seq_item(pid, 5)) != SDICT_KIND_NONE)
        p->view = sdict_seq_item(pid, 5);
    return SDICT_OK;
}

static sdict_status storage_nbytes(const char *record, int64_t off, const pid_info *p,
                                   uint64_t *out, sdict_error *err) {
    if (!sdict__mul_u64((uint64_t)p->numel, sdict_dtype_size(p->dtype), out) || *out > SIZE_MAX)
        return sdict__err(err, SDICT_E_STORAGE, record, off,
                          "storage '%s': %lld elements of %s overflow", p->key,
                          (long long)p->numel, sdict_dtype_name(p->dtype));
    return SDICT_OK;
}

/* Keeps the location tag a storage was saved with (sdict_storage_location). torch.load with
   map_location='cpu' never looks at the tag (_get_restore_location replaces it by 'cpu', torch
   1.13 and 2.x alike), so every str is accepted, as torch accepts it; a bytes tag (Python 2
   writers) is decoded as ASCII by _maybe_decode_ascii, which fails on other bytes, so those are
   refused as torch refuses them. Tags longer than 255 bytes or holding NUL are no device torch
   can name; refusing them bounds the copies one memoized tag could make per storage. */
#define SDICT_MAX_LOCATION 255
static sdict_status apply_location(const char *record, int64_t off, const char *key,
                                   const sdict_value *loc, sdict_storage *s, sdict_error *err) {
    if (!loc)
        return SDICT_OK;
    size_t len = 0;
    const char *t = NULL;
    bool bytes = sdict_value_kind(loc) == SDICT_KIND_BYTES;
    if (bytes)
        t = sdict_bytes_get(loc, &len);
    else if (sdict_value_kind(loc) == SDICT_KIND_STR)
        t = sdict_str_get(loc, &len);
    if (!t)
        return sdict__err(err, SDICT_E_PICKLE_TYPE, record, off,
                          "storage '%s': location is a %s, not a string", key,
                          sdict_kind_name(sdict_value_kind(loc)));
    if (len > SDICT_MAX_LOCATION)
        return sdict__err(err, SDICT_E_LIMIT, record, off,
                          "storage '%s': location tag of %zu bytes (at most %d)", key, len,
                          SDICT_MAX_LOCATION);
    char shown[4 * SDICT_MAX_LOCATION + 1];
    size_t n = 0;
    bool nul = false, ascii = true;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)t[i];
        nul |= c == 0;
        ascii &= c < 0x80;
        if (c >= 0x20 && c < 0x7f && c != '\\')
            shown[n++] = (char)c;
        else
            n += (size_t)snprintf(shown + n, sizeof shown - n, "\\x%02x", c);
    }
    shown[n] = '\0';
    if (bytes && !ascii)
        return sdict__err(err, SDICT_E_STORAGE, record, off,
                          "storage '%s': location tag b'%s' is not ASCII (torch.load cannot "
                          "decode it)", key, shown);
    if (nul)
        return sdict__err(err, SDICT_E_STORAGE, record, off,
                          "storage '%s': location tag '%s' holds a NUL byte", key, shown);
    return sdict__storage_set_location(s, t, len, err);
}

/* Caches a new storage (reference moved into a storage value of the doc). */
static sdict_status cache_storage(loader *L, const char *key, sdict_storage *s, sdict_dtype dtype,
                                  int64_t numel, cache_ent **out, sdict_error *err) {
    sdict_status st = sdict__storage_set_key(s, key, err);
    sdict_value *v = st == SDICT_OK ? sdict__storage_value_new(L->doc, s, dtype) : NULL;
    sdict_storage_release(s); /* the value holds its own reference */
    if (st != SDICT_OK)
        return st;
    cache_ent *e = v ? cache_add(&L->storages, key) : NULL;
    if (!e)
        return sdict__err(err, SDICT_E_NOMEM, NULL, -1, "out of memory caching storage '%s'", key);
    e->val = v;
    e->storage = s;
    e->dtype = dtype;
    e->numel = numel;
    *out = e;
    return SDICT_OK;
}

/* A second reference to a cached key must use the same dtype (torch's writer refuses to save
   one storage as two types; a file that does so is inconsistent). */
static sdict_status cached_value(const cache_ent *e, const char *record, int64_t off,
                                 sdict_dtype dtype, sdict_value **out, sdict_error *err) {
    if (e->dtype != dtype)
        return sdict__err(err, SDICT_E_STORAGE, record, off,
                          "storage '%s' referenced as %s and as %s", e->key,
                          sdict_dtype_name(e->dtype), sdict_dtype_name(dtype));
    *out = e->val;
    return SDICT_OK;
}

/*==================================================================================================
 MARK: Zip format
==================================================================================================*/

/* Checks the CRC-32 of a record's payload (n bytes at p) for verify_crc. A CRC field of 0 over
   a payload whose CRC is not 0 is a mismatch, unless every record of the archive has 0 (torch
   2.6+ set_crc32_options(False)): then the record has no CRC recorded and cannot be verified;
   it is counted, and the load fails at its end (no_crc_error), so verification never reports
   as checked what it could not check. A single 0 among real CRCs is a plain mismatch: a
   tampered record cannot opt out of verification. */
static sdict_status crc_check(loader *L, const sdict__zip_entry *e, const void *p, size_t n,
                              const char *rec, sdict_error *err) {
    uint32_t c = sdict__crc32(0, p, n);
    if (c == e->crc32)
        return SDICT_OK;
    if (e->crc32 == 0 && L->crc_all_zero) {
        size_t i = (size_t)(e - sdict__zip_entry_at(L->zip, 0));
        if (!L->no_crc_seen &&
            !(L->no_crc_seen = sdict__calloc(sdict__zip_count(L->zip), 1)))
            return sdict__err(err, SDICT_E_NOMEM, rec, -1, "out of memory");
        if (!L->no_crc_seen[i]) {
            L->no_crc_seen[i] = 1;
            if (L->no_crc++ == 0)
                L->no_crc_first = e;
        }
        return SDICT_OK;
    }
    return sdict__err(err, SDICT_E_CRC, rec, (int64_t)e->data_offset,
                      "CRC-32 of the payload is 0x%08x, central directory says 0x%08x", c,
                      e->crc32);
}

static sdict_status no_crc_error(loader *L, sdict_error *err) {
    if (!L->no_crc)
        return SDICT_OK;
    return sdict__err(err, SDICT_E_CRC, L->no_crc_first->name,
                      (int64_t)L->no_crc_first->data_offset,
                      "no CRC recorded: %llu record%s read carry CRC 0 (written with CRCs off, "
                      "torch.serialization.set_crc32_options(False)), so %s could not be "
                      "verified",
                      (unsigned long long)L->no_crc, L->no_crc == 1 ? "" : "s",
                      L->no_crc == 1 ? "it" : "they");
}

/* Deflated records inflate to at most max_inflate_total bytes in all (default 32 x the file's
   size + 32 MiB): each may be small and claim up to max_inflate, but a load, scan or verify
   must not turn a small file into gigabytes of memory (deflate reaches about 1032:1). Charged
   before the memory a record inflates into is allocated. */
static sdict_status charge_inflate(loader *L, const sdict__zip_entry *e, sdict_error *err) {
    if (e->method == 0)
        return SDICT_OK;
    uint64_t budget = L->limits.max_inflate_total;
    if (!budget)
        budget = (L->src->size > (UINT64_MAX >> 6) ? UINT64_MAX >> 1 : 32 * L->src->size) +
                 (UINT64_C(32) << 20);
    if (e->size > budget || L->inflated > budget - e->size)
        return sdict__err(err, SDICT_E_LIMIT, e->name, -1,
                          "deflated records would inflate to more than %llu bytes in all "
                          "(max_inflate_total: 32 x the %llu-byte file + 32 MiB by default); "
                          "%llu already, this one %llu",
                          (unsigned long long)budget, (unsigned long long)L->src->size,
                          (unsigned long long)L->inflated, (unsigned long long)e->size);
    L->inflated += e->size;
    return SDICT_OK;
}

static sdict_status zip_read_checked(loader *L, const sdict__zip_entry *e, void *dst, size_t n,
                                     sdict_error *err) {
    sdict_status st = sdict__zip_read(L->zip, e, dst, n, false, err);
    if (st == SDICT_OK && L->verify_crc)
        st = crc_check(L, e, dst, (size_t)e->size, e->name, err);
    return st;
}

static sdict_status zip_persistent_load(void *ctx, sdict_value *pid, int64_t off,
                                        sdict_value **out, sdict_error *err) {
    loader *L = ctx;
    const char *pkl_rec = L->pkl_rec;
    pid_info p;
    /* TorchScript archives of format version 1 write ('storage', cls, key, location, numel,
       None), as the legacy layout did (import.cpp reads both) */
    sdict_status st = parse_pid(pkl_rec, off, pid, L->script, &p, err);
    if (st != SDICT_OK)
        return st;
    if (p.view)
        return sdict__err(err, SDICT_E_PICKLE_TYPE, pkl_rec, off, "storage '%s': a view of "
                          "another storage (persistent id item 5), which an archive cannot hold",
                          p.key);
    cache_ent *ce = cache_find(&L->storages, p.key);
    if (ce)
        return cached_value(ce, pkl_rec, off, p.dtype, out, err);

    char rel[96];
    snprintf(rel, sizeof rel, "%s%s", L->data_dir, p.key);
    snprintf(L->rec, sizeof L->rec, "%s%s", sdict__zip_prefix(L->zip), rel);
    const sdict__zip_entry *e = sdict__zip_find(L->zip, rel);
    if (!e && strcmp(L->data_dir, "data/") != 0) {
        /* scans of TorchScript side pickles: older archives keep every tensor in data/ */
        snprintf(rel, sizeof rel, "data/%s", p.key);
        snprintf(L->rec, sizeof L->rec, "%s%s", sdict__zip_prefix(L->zip), rel);
        e = sdict__zip_find(L->zip, rel);
    }
    if (!e)
        return sdict__err(err, SDICT_E_STORAGE, pkl_rec, off, "storage record %s is missing",
                          L->rec);
    uint64_t nbytes;
    if ((st = storage_nbytes(pkl_rec, off, &p, &nbytes, err)) != SDICT_OK)
        return st;
    /* torch 1.13 does not compare these and exposes bytes past the record (CVE-2026-24747). */
    if (nbytes != e->size)
        return sdict__err(err, SDICT_E_STORAGE, pkl_rec, off,
                          "storage '%s' declares %lld x %s = %llu bytes but record %s has %llu",
                          p.key, (long long)p.numel, sdict_dtype_name(p.dtype),
                          (unsigned long long)nbytes, L->rec, (unsigned long long)e->size);

    bool swap = L->big_endian != host_big_endian() && sdict_dtype_size(p.dtype) > 1;
    sdict_storage *s = NULL;
    const sdict__mapping *m = L->src->mapping;
    /* A payload is mapped in place when it sits where its writer put it: at a multiple of the
       archive's storage alignment (64 bytes, or what .storage_alignment declares, at most 64
       counted), and of its elements' natural alignment; anything else is copied, so a mapped
       or copied storage is always aligned for its dtype. */
    uint64_t want = L->alignment < 64 ? L->alignment : 64, es = sdict_dtype_size(p.dtype);
    es = es > 8 ? 8 : es;
    /* the source may be a part of a mapped file (an item of a DCP .distcp file) */
    uint64_t at = m ? (uint64_t)(L->src->data - sdict__mapping_base(m)) + e->data_offset : 0;
    bool aligned = e->data_offset % want == 0 && at % es == 0;
    if (m && e->method == 0 && !swap && nbytes > 0 && (L->scan || L->map_any || aligned)) {
        /* Zero-copy: the record is the storage. Scans map any offset: nothing reads it; bytes
           loads too: their caller only copies its bytes. */
        if (L->verify_crc && !L->scan &&
            (st = crc_check(L, e, L->src->data + e->data_offset, (size_t)nbytes, L->rec, err)) !=
                SDICT_OK)
            return st;
        st = sdict__storage_new_mapped(L->src->mapping, at, (size_t)nbytes, &s, err);
        if (st != SDICT_OK)
            return st;
    } else {
        if ((st = charge_inflate(L, e, err)) != SDICT_OK)
            return st;
        if ((st = sdict_storage_new((size_t)nbytes, &s, err)) != SDICT_OK)
            return st;
        if (!L->scan && nbytes > 0) {
            st = zip_read_checked(L, e, sdict_storage_data(s), (size_t)nbytes, err);
            if (st != SDICT_OK) {
                sdict_storage_release(s);
                return st;
            }
            if (swap)
                swap_payload(sdict_storage_data(s), (size_t)nbytes, p.dtype);
        }
    }
    if ((st = apply_location(pkl_rec, off, p.key, p.loc, s, err)) != SDICT_OK) {
        sdict_storage_release(s);
        return st;
    }
    if ((st = cache_storage(L, p.key, s, p.dtype, p.numel, &ce, err)) != SDICT_OK)
        return st;
    *out = ce->val;
    return SDICT_OK;
}

/* Reads a small text record (version, byteorder) into buf; *found false when absent. */
static sdict_status read_small(loader *L, const char *rel, char *buf, size_t n, bool *found,
                               sdict_error *err) {
    const sdict__zip_entry *e = sdict__zip_find(L->zip, rel);
    *found = e != NULL;
    buf[0] = '\0';
    if (!e)
        return SDICT_OK;
    if (e->size >= n)
        return sdict__err(err, SDICT_E_FORMAT, e->name, -1,
                          "record is %llu bytes; expected at most %zu", (unsigned long long)e->size,
                          n - 1);
    sdict_status st = zip_read_checked(L, e, buf, n, err);
    if (st != SDICT_OK)
        return st;
    buf[e->size] = '\0';
    return SDICT_OK;
}

/* Reads a whole record into a new heap buffer (bounded by the file size or max_inflate). */
static sdict_status read_record(loader *L, const sdict__zip_entry *e, uint8_t **out,
                                sdict_error *err) {
    *out = NULL;
    uint64_t bound = e->method == 0 ? L->src->size : L->limits.max_inflate;
    if (e->size > bound || e->size > SIZE_MAX - 1)
        return sdict__err(err, e->method == 0 ? SDICT_E_ZIP_CORRUPT : SDICT_E_LIMIT, e->name, -1,
                          "record claims %llu bytes (limit %llu)", (unsigned long long)e->size,
                          (unsigned long long)bound);
    sdict_status cst = charge_inflate(L, e, err);
    if (cst != SDICT_OK)
        return cst;
    uint8_t *buf = sdict__malloc((size_t)e->size + 1);
    if (!buf)
        return sdict__err(err, SDICT_E_NOMEM, e->name, -1, "out of memory for %llu bytes",
                          (unsigned long long)e->size);
    sdict_status st = zip_read_checked(L, e, buf, (size_t)e->size, err);
    if (st != SDICT_OK) {
        sdict__free(buf);
        return st;
    }
    *out = buf;
    return SDICT_OK;
}

static bool is_ascii_digits(const char *s, size_t n) {
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

/* Parses "3\n" style decimal records; false for anything else. */
static bool parse_decimal_record(const char *s, long *out) {
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        n--;
    if (n == 0 || n > 9 || !is_ascii_digits(s, n))
        return false;
    *out = strtol(s, NULL, 10);
    return true;
}

static sdict_status zip_checks(loader *L, sdict_error *err) {
    /* torch 2.6+ writes CRC 0 when compute_crc32=False; only then is "no CRC" plausible. */
    L->crc_all_zero = true;
    for (size_t i = 0; i < sdict__zip_count(L->zip); i++) {
        const sdict__zip_entry *e = sdict__zip_entry_at(L->zip, i);
        if (e->size > 0 && e->crc32 != 0)
            L->crc_all_zero = false;
    }
    char buf[64];
    bool found;
    const char *which = ".data/version";
    sdict_status st = read_small(L, which, buf, sizeof buf, &found, err);
    if (st == SDICT_OK && !found) {
        which = "version";
        st = read_small(L, which, buf, sizeof buf, &found, err);
    }
    if (st != SDICT_OK)
        return st;
    if (!found)
        return sdict__err(err, SDICT_E_FORMAT, NULL, -1,
                          "zip archive has no %sversion record: not a torch.save file",
                          sdict__zip_prefix(L->zip));
    long ver;
    if (!parse_decimal_record(buf, &ver) || ver < 1 || ver > 10)
        return sdict__err(err, SDICT_E_VERSION, which, 0,
                          "archive version '%.16s' is not one statedict reads (1..10; torch.save "
                          "writes 3)", buf);

    if ((st = read_small(L, "byteorder", buf, sizeof buf, &found, err)) != SDICT_OK)
        return st;
    if (found) {
        if (strcmp(buf, "little") == 0)
            L->big_endian = false;
        else if (strcmp(buf, "big") == 0)
            L->big_endian = true;
        else
            return sdict__err(err, SDICT_E_FORMAT, "byteorder", 0,
                              "byteorder record is '%.16s', expected 'little' or 'big'", buf);
    } else {
        L->big_endian = (L->flags & SDICT_LOAD_ASSUME_BIG_ENDIAN) != 0;
    }
    /* 2.7+ records: .format_version (1: storages in numeric key order, 2: with the storage
       alignment record) is informational; .storage_alignment says where every payload starts
       (a positive decimal, 64 by default). Garbage in either is refused. */
    static const char *const info[] = {".format_version", ".storage_alignment"};
    L->alignment = 64;
    for (size_t i = 0; i < 2; i++) {
        if ((st = read_small(L, info[i], buf, sizeof buf, &found, err)) != SDICT_OK)
            return st;
        if (found && (!parse_decimal_record(buf, &ver) || (i == 1 && ver <= 0)))
            return sdict__err(err, SDICT_E_FORMAT, info[i], 0, "record is '%.16s', not a %s "
                              "number", buf, i == 1 ? "positive" : "decimal");
        if (found && i == 1) {
            L->alignment = (uint64_t)ver;
            L->alignment_record = true;
        }
    }
    return SDICT_OK;
}

/* sdict_verify: the CRC of every record the load did not already check (code, extra files,
   storages nobody references, records read before CRCs were known to exist). */
static sdict_status zip_verify_rest(loader *L, sdict_error *err) {
    size_t plen = strlen(sdict__zip_prefix(L->zip));
    /* torch 2.7+ may compute payload offsets from the declared alignment instead of reading
       local headers (config.load.calculate_storage_offsets): a payload elsewhere would be read
       from the wrong bytes */
    for (size_t i = 0; L->alignment_record && i < sdict__zip_count(L->zip); i++) {
        const sdict__zip_entry *e = sdict__zip_entry_at(L->zip, i);
        if (strncmp(e->name + plen, "data/", 5) == 0 && e->size > 0 &&
            e->data_offset % L->alignment != 0)
            return sdict__err(err, SDICT_E_ZIP_CORRUPT, e->name, -1, "payload starts at file "
                              "offset %llu, not at a multiple of the archive's "
                              ".storage_alignment %llu", (unsigned long long)e->data_offset,
                              (unsigned long long)L->alignment);
    }
    for (size_t i = 0; i < sdict__zip_count(L->zip); i++) {
        const sdict__zip_entry *e = sdict__zip_entry_at(L->zip, i);
        const char *rel = e->name + plen;
        if (strncmp(rel, "data/", 5) == 0 && cache_find(&L->storages, rel + 5))
            continue; /* checked when it was loaded */
        uint8_t *buf;
        sdict_status st = read_record(L, e, &buf, err);
        if (st != SDICT_OK)
            return st;
        sdict__free(buf);
    }
    return no_crc_error(L, err);
}

/* TorchScript under SDICT_LOAD_INERT (data.pkl is the root already): constants.pkl, whose
   tensors live under constants/ (data/ in older archives; a storage cache of their own, as
   their keys restart at 0), and the class declarations of every code/<path>.py record. */
static sdict_status load_script(loader *L, sdict_error *err) {
    sdict_value *info = sdict_dict_new(L->doc, false), *classes = sdict_dict_new(L->doc, false);
    sdict_value *consts = NULL;
    if (!info || !classes)
        return sdict__err(err, SDICT_E_NOMEM, NULL, -1, "out of memory");
    const sdict__zip_entry *e = sdict__zip_find(L->zip, "constants.pkl");
    uint8_t *buf;
    sdict_status st = read_record(L, e, &buf, err);
    if (st != SDICT_OK)
        return st;
    cache saved = L->storages;
    memset(&L->storages, 0, sizeof L->storages);
    L->data_dir = "constants/";
    L->pkl_rec = e->name;
    st = run_pickle(L, buf, (size_t)e->size, e->name, zip_persistent_load, &consts, NULL, err);
    sdict__free(buf);
    cache_free(&L->storages);
    L->storages = saved;
    L->data_dir = "data/";
    if (st != SDICT_OK)
        return st;
    size_t plen = strlen(sdict__zip_prefix(L->zip));
    for (size_t i = 0; i < sdict__zip_count(L->zip); i++) {
        e = sdict__zip_entry_at(L->zip, i);
        const char *rel = e->name + plen;
        size_t rl = strlen(rel);
        if (strncmp(rel, "code/", 5) != 0 || rl < 9 || !sdict__ends_with(rel, ".py"))
            continue;
        /* code/__torch__/a/b.py holds the classes of module __torch__.a.b */
        char *mod = sdict__strndup(rel + 5, rl - 8);
        if (!mod)
            return sdict__err(err, SDICT_E_NOMEM, e->name, -1, "out of memory");
        for (char *c = mod; *c; c++)
            if (*c == '/')
                *c = '.';
        if ((st = read_record(L, e, &buf, err)) == SDICT_OK) {
            st = sdict__script_code(L->doc, classes, mod, rl - 8, (const char *)buf,
                                    (size_t)e->size, e->name, err);
            sdict__free(buf);
        }
        sdict__free(mod);
        if (st != SDICT_OK)
            return st;
    }
    if ((st = sdict__script_finish(L->doc, classes, err)) != SDICT_OK)
        return st;
    if (sdict_dict_set_str(info, "constants", consts) ||
        sdict_dict_set_str(info, "classes", classes))
        return sdict__err(err, SDICT_E_NOMEM, NULL, -1, "out of memory");
    sdict__doc_set_script(L->doc, info);
    return SDICT_OK;
}

static sdict_status load_zip(loader *L, sdict_error *err) {
    sdict_status st = sdict__zip_open(L->src, &L->limits, &L->zip, err);
    if (st != SDICT_OK)
        return st;
    L->data_dir = "data/";
    bool script = sdict__zip_find(L->zip, "constants.pkl") != NULL;
    L->script = script && !L->scan;
    if (!L->scan && sdict__zip_find(L->zip, "model.json") && !sdict__zip_find(L->zip, "data.pkl"))
        return sdict__err(err, SDICT_E_UNSUPPORTED, NULL, -1,
                          "this is a TorchScript archive of torch 1.0-1.2's layout (it has "
                          "%smodel.json and no data.pkl), which statedict does not read; "
                          "re-save it with a newer torch.jit.save", sdict__zip_prefix(L->zip));
    if (!L->scan && script && !(L->flags & SDICT_LOAD_INERT))
        return sdict__err(err, SDICT_E_FORMAT, NULL, -1,
                          "this is a TorchScript archive (torch.jit.save; it has %sconstants.pkl), "
                          "not a torch.save file: `statedict extract IN OUT` writes its state_dict "
                          "without running its code (torch.jit.load(f).state_dict())",
                          sdict__zip_prefix(L->zip));
    if ((st = zip_checks(L, err)) != SDICT_OK)
        return st;

    if (L->scan) {
        /* Every pickle record, TorchScript archives included; keep going after errors and
           report the first one. Tensors of X.pkl live under X/ (constants/, traced_inputs/),
           data.pkl's under data/. */
        sdict_status first = SDICT_OK;
        sdict_error first_err;
        memset(&first_err, 0, sizeof first_err);
        for (size_t i = 0; i < sdict__zip_count(L->zip); i++) {
            const sdict__zip_entry *e = sdict__zip_entry_at(L->zip, i);
            if (!sdict__ends_with(e->name, ".pkl"))
                continue;
            const char *rel = e->name + strlen(sdict__zip_prefix(L->zip));
            char dir[64];
            size_t stem = strlen(rel) - 4;
            if (stem + 2 > sizeof dir || memchr(rel, '/', stem))
                stem = 4, rel = "data";
            memcpy(dir, rel, stem);
            memcpy(dir + stem, "/", 2);
            L->data_dir = dir;
            uint8_t *buf;
            sdict_value *root = NULL;
            L->pkl_rec = e->name;
            st = read_record(L, e, &buf, err);
            if (st == SDICT_OK) {
                st = run_pickle(L, buf, (size_t)e->size, e->name, zip_persistent_load, &root, NULL,
                                err);
                sdict__free(buf);
            }
            L->data_dir = "data/";
            if (st != SDICT_OK && first == SDICT_OK) {
                first = st;
                if (err)
                    first_err = *err;
            }
            if (st == SDICT_E_NOMEM || st == SDICT_E_IO)
                break;
        }
        if (first != SDICT_OK && err)
            *err = first_err;
        return first;
    }

    const sdict__zip_entry *e = sdict__zip_find(L->zip, "data.pkl");
    if (!e)
        return sdict__err(err, SDICT_E_FORMAT, NULL, -1, "zip archive has no %sdata.pkl record",
                          sdict__zip_prefix(L->zip));
    uint8_t *buf;
    if ((st = read_record(L, e, &buf, err)) != SDICT_OK)
        return st;
    sdict_value *root = NULL;
    L->pkl_rec = e->name;
    st = run_pickle(L, buf, (size_t)e->size, e->name, zip_persistent_load, &root, NULL, err);
    sdict__free(buf);
    if (st != SDICT_OK)
        return st;
    if (sdict_doc_set_root(L->doc, root) != SDICT_OK)
        return sdict__err(err, SDICT_E_INVALID_ARG, e->name, -1, "cannot set the document root");
    sdict__doc_set_format(L->doc, SDICT_FORMAT_ZIP, L->big_endian);
    if (script && !L->scan && (st = load_script(L, err)) != SDICT_OK)
        return st;
    if (L->verify_all)
        return zip_verify_rest(L, err);
    return no_crc_error(L, err);
}

/*==================================================================================================
 MARK: Legacy magic-number stream (FORMAT.md 2.1)
==================================================================================================*/

/* LONG1 0x1950a86a20f9469cfc6c, little-endian two's complement as pickle stores it. */
static const uint8_t legacy_magic_le[10] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9,
                                            0x20, 0x6a, 0xa8, 0x50, 0x19};

/* Header pickles (magic, protocol, sys_info, key list) carry no persistent ids. */
static sdict_status refuse_persistent(void *ctx, sdict_value *pid, int64_t off, sdict_value **out,
                                      sdict_error *err) {
    loader *L = ctx;
    if (L->scan) {
        *out = sdict_none_new(L->doc);
        return *out ? SDICT_OK : sdict__err(err, SDICT_E_NOMEM, L->rec, off, "out of memory");
    }
    return sdict__err(err, SDICT_E_PICKLE_TYPE, L->rec, off,
                      "unexpected persistent id in a legacy header pickle");
}

static void release_root(void *ctx, void *data) {
    (void)data;
    sdict_storage_release(ctx);
}

/* ('storage', cls, root_key, location, numel, view_metadata): storages are allocated here and
   filled after the key list. Their size is bounded by the bytes left in the file. */
static sdict_status legacy_persistent_load(void *ctx, sdict_value *pid, int64_t off,
                                           sdict_value **out, sdict_error *err) {
    loader *L = ctx;
    const char *rec = L->rec;
    const char *tn = sdict_str_get(sdict_seq_item(pid, 0), NULL);
    if (tn && strcmp(tn, "module") == 0) {
        /* Class-source ids of whole-module pickles ('module', cls, source_file, source):
           torch's persistent_load gives the class. Under SDICT_LOAD_INERT it is the class
           reference the machine made of cls (its source text is ignored); otherwise the
           class is refused by the allow-list, so this is only reached while scanning. */
        sdict_value *cls = sdict_seq_item(pid, 1);
        if ((L->flags & SDICT_LOAD_INERT) && sdict_value_kind(cls) == SDICT_KIND_OBJECT &&
            sdict_object_how(cls) == SDICT_OBJECT_CLASS) {
            *out = cls;
            return SDICT_OK;
        }
        if (!L->scan)
            return sdict__err(err, SDICT_E_UNSUPPORTED, rec, off,
                              "whole-module pickle (persistent id 'module')");
        *out = sdict_none_new(L->doc);
        return *out ? SDICT_OK : sdict__err(err, SDICT_E_NOMEM, rec, off, "out of memory");
    }
    pid_info p;
    sdict_status st = parse_pid(rec, off, pid, true, &p, err);
    if (st != SDICT_OK)
        return st;
    cache_ent *root = cache_find(&L->storages, p.key);
    if (root && root->dtype != p.dtype)
        return cached_value(root, rec, off, p.dtype, out, err);
    if (!root) {
        uint64_t nbytes;
        if ((st = storage_nbytes(rec, off, &p, &nbytes, err)) != SDICT_OK)
            return st;
        if (nbytes > L->alloc_budget)
            return sdict__err(err, SDICT_E_STORAGE, rec, off,
                              "storage '%s' declares %llu bytes but only %llu bytes of payload can "
                              "follow in the file", p.key, (unsigned long long)nbytes,
                              (unsigned long long)L->alloc_budget);
        /* Each payload also carries an 8-byte count. */
        L->alloc_budget -= nbytes;
        L->alloc_budget = L->alloc_budget >= 8 ? L->alloc_budget - 8 : 0;
        sdict_storage *s;
        if ((st = sdict_storage_new((size_t)nbytes, &s, err)) != SDICT_OK)
            return st;
        if ((st = apply_location(rec, off, p.key, p.loc, s, err)) != SDICT_OK) {
            sdict_storage_release(s);
            return st;
        }
        if ((st = cache_storage(L, p.key, s, p.dtype, p.numel, &root, err)) != SDICT_OK)
            return st;
        root->root = true;
    }
    if (!p.view) {
        *out = root->val;
        return SDICT_OK;
    }

    /* view_metadata (view_key, offset, size), in elements: a storage slice sharing memory. */
    const sdict_value *vm = p.view;
    char vkey[64];
    int64_t voff = -1, vsize = -1;
    if (sdict_value_kind(vm) != SDICT_KIND_TUPLE || sdict_seq_len(vm) != 3 ||
        !key_text(sdict_seq_item(vm, 0), vkey, sizeof vkey) ||
        sdict_int_get(sdict_seq_item(vm, 1), &voff) != SDICT_OK ||
        sdict_int_get(sdict_seq_item(vm, 2), &vsize) != SDICT_OK)
        return sdict__err(err, SDICT_E_UNSUPPORTED, rec, off,
                          "storage '%s': view metadata is not (key, offset, size)", p.key);
    cache_ent *ve = cache_find(&L->storages, vkey);
    if (ve)
        return cached_value(ve, rec, off, p.dtype, out, err);
    if (voff < 0 || vsize < 0 || voff > root->numel || vsize > root->numel - voff)
        return sdict__err(err, SDICT_E_STORAGE, rec, off,
                          "storage view '%s' [%lld, +%lld) lies outside storage '%s' of %lld "
                          "elements", vkey, (long long)voff, (long long)vsize, p.key,
                          (long long)root->numel);
    size_t es = sdict_dtype_size(p.dtype);
    uint8_t *base = sdict_storage_data(root->storage);
    sdict_storage *s;
    sdict_storage *held = sdict_storage_retain(root->storage);
    st = sdict_storage_wrap(base ? base + (size_t)voff * es : NULL, (size_t)vsize * es,
                            release_root, held, &s, err);
    if (st != SDICT_OK) {
        sdict_storage_release(held);
        return st;
    }
    if ((st = apply_location(rec, off, vkey, p.loc, s, err)) != SDICT_OK) {
        sdict_storage_release(s);
        return st;
    }
    if ((st = cache_storage(L, vkey, s, p.dtype, vsize, &ve, err)) != SDICT_OK)
        return st;
    *out = ve->val;
    return SDICT_OK;
}

/* Hex of the first bytes of the input, for "not a PyTorch checkpoint" messages. */
static void first_bytes(const loader *L, char *buf, size_t n) {
    uint8_t head[8];
    size_t k = L->src->size < sizeof head ? (size_t)L->src->size : sizeof head;
    buf[0] = '\0';
    if (sdict__source_read(L->src, 0, head, k, NULL, NULL) != SDICT_OK)
        return;
    size_t used = 0;
    for (size_t i = 0; i < k && used + 4 < n; i++)
        used += (size_t)snprintf(buf + used, n - used, "%s%02x", i ? " " : "", head[i]);
}

static sdict_status not_torch(loader *L, const char *why, sdict_error *err) {
    char hex[40];
    first_bytes(L, hex, sizeof hex);
    return sdict__err(err, SDICT_E_FORMAT, NULL, 0,
                      "not a PyTorch checkpoint (first bytes %s): %s", hex, why);
}

/* One pickle of the legacy stream at *pos, within the window. */
static sdict_status legacy_pickle(loader *L, uint64_t *pos, const char *rec,
                                  sdict_status (*pl)(void *, sdict_value *, int64_t,
                                                     sdict_value **, sdict_error *),
                                  sdict_value **out, sdict_error *err) {
    snprintf(L->rec, sizeof L->rec, "%s", rec);
    size_t used = 0;
    if (*pos >= L->win_size)
        return sdict__err(err, SDICT_E_TRUNCATED, rec, -1, "file ends before the %s pickle",
                          rec + 7);
    /* torch reads every pickle but the object's with a plain pickle.load */
    L->literals = pl == refuse_persistent;
    sdict_status st = run_pickle(L, L->win + *pos, (size_t)(L->win_size - *pos), rec, pl, out,
                                 &used, err);
    L->literals = false;
    if (st == SDICT_E_TRUNCATED && L->win_size < L->src->size)
        L->win_truncated = true;
    if (st == SDICT_OK)
        *pos += used;
    return st;
}

static sdict_status load_legacy(loader *L, sdict_error *err) {
    uint64_t pos = 0;
    sdict_value *v = NULL;
    sdict_status st = legacy_pickle(L, &pos, "legacy:magic", refuse_persistent, &v, err);
    if (st != SDICT_OK) {
        /* Refused globals, limits and memory keep their status, and so does any error in input
           that starts like a binary pickle (PROTO 0-5): it is a pickle, broken or hostile, and
           the pickle error says more. Anything else is simply not a checkpoint. */
        bool proto = L->win_size >= 2 && L->win[0] == 0x80 && L->win[1] <= 5;
        if (proto || st == SDICT_E_PICKLE_UNSAFE_GLOBAL || st == SDICT_E_NOMEM ||
            st == SDICT_E_LIMIT || st == SDICT_E_IO || L->win_truncated)
            return st;
        char why[sizeof err->message + 128];
        snprintf(why, sizeof why, "no zip, tar or legacy magic-number header (reading it as a "
                 "pickle stream fails at once: %s)", err ? err->message : "not a pickle");
        return not_torch(L, why, err);
    }
    uint8_t ib[16];
    size_t ilen = 0;
    const uint8_t *ip = sdict_value_kind(v) == SDICT_KIND_INT ? sdict__int_le_bytes(v, ib, &ilen)
                                                                : NULL;
    if ((!ip || ilen != sizeof legacy_magic_le || memcmp(ip, legacy_magic_le, ilen) != 0) &&
        L->scan) {
        /* not torch's, but a scan still lists the globals of the pickles that follow (what an
           unrestricted reader of the stream would meet), then says the file is no checkpoint */
        for (uint64_t before = 0; pos < L->win_size && pos != before;) {
            sdict_error e2;
            memset(&e2, 0, sizeof e2);
            before = pos;
            if (legacy_pickle(L, &pos, "legacy:pickle", refuse_persistent, &v, &e2) != SDICT_OK)
                break;
        }
    }
    if (!ip || ilen != sizeof legacy_magic_le || memcmp(ip, legacy_magic_le, ilen) != 0)
        return not_torch(L, "the first pickle is not the legacy magic number 0x1950a86a20f9469cfc6c",
                         err);
    int64_t proto = 0;
    if ((st = legacy_pickle(L, &pos, "legacy:protocol", refuse_persistent, &v, err)) != SDICT_OK)
        return st;
    if (sdict_int_get(v, &proto) != SDICT_OK || proto != 1001)
        return sdict__err(err, SDICT_E_VERSION, "legacy:protocol", 0,
                          "legacy protocol version is not 1001");
    if ((st = legacy_pickle(L, &pos, "legacy:sys_info", refuse_persistent, &v, err)) != SDICT_OK)
        return st;
    if (sdict_value_kind(v) != SDICT_KIND_DICT)
        return sdict__err(err, SDICT_E_FORMAT, "legacy:sys_info", 0,
                          "sys_info is a %s, expected a dict", sdict_kind_name(sdict_value_kind(v)));

    L->alloc_budget = L->src->size - pos;
    sdict_value *root = NULL;
    L->defer = true;
    st = legacy_pickle(L, &pos, "legacy:pickle", legacy_persistent_load, &root, err);
    L->defer = false;
    if (st != SDICT_OK)
        return st;
    sdict_value *keys = NULL;
    if ((st = legacy_pickle(L, &pos, "legacy:storage_keys", refuse_persistent, &keys, err)) !=
        SDICT_OK)
        return st;
    if (sdict_value_kind(keys) != SDICT_KIND_LIST && sdict_value_kind(keys) != SDICT_KIND_TUPLE)
        return sdict__err(err, SDICT_E_FORMAT, "legacy:storage_keys", 0,
                          "storage key list is a %s", sdict_kind_name(sdict_value_kind(keys)));

    /* Payloads in key-list order: int64 LE element count, then the raw little-endian bytes. */
    const char *rec = "legacy:storages";
    for (size_t i = 0; !L->scan && i < sdict_seq_len(keys); i++) {
        char key[64];
        if (!key_text(sdict_seq_item(keys, i), key, sizeof key))
            return sdict__err(err, SDICT_E_FORMAT, "legacy:storage_keys", -1,
                              "storage key %zu is not a short string", i);
        cache_ent *e = cache_find(&L->storages, key);
        if (!e || !e->root)
            return sdict__err(err, SDICT_E_STORAGE, rec, (int64_t)pos,
                              "payload for storage '%s', which no tensor uses", key);
        if (e->filled)
            return sdict__err(err, SDICT_E_STORAGE, rec, (int64_t)pos,
                              "storage '%s' appears twice in the key list", key);
        uint8_t cnt[8];
        if ((st = sdict__source_read(L->src, pos, cnt, 8, rec, err)) != SDICT_OK)
            return st;
        int64_t count = (int64_t)sdict__le64(cnt);
        if (count != e->numel)
            return sdict__err(err, SDICT_E_STORAGE, rec, (int64_t)pos,
                              "storage '%s' has %lld elements in the file but %lld in the pickle",
                              key, (long long)count, (long long)e->numel);
        size_t nbytes = sdict_storage_nbytes(e->storage);
        pos += 8;
        st = sdict__source_read(L->src, pos, sdict_storage_data(e->storage), nbytes, rec, err);
        if (st != SDICT_OK)
            return st;
        if (host_big_endian())
            swap_payload(sdict_storage_data(e->storage), nbytes, e->dtype);
        e->filled = true;
        pos += nbytes;
    }
    for (size_t i = 0; !L->scan && i < L->storages.n; i++)
        if (L->storages.ents[i].root && !L->storages.ents[i].filled)
            return sdict__err(err, SDICT_E_STORAGE, rec, (int64_t)pos,
                              "storage '%s' has no payload (missing from the key list)",
                              L->storages.ents[i].key);
    if (!L->scan && (st = check_deferred(L, "legacy:pickle", err)) != SDICT_OK)
        return st;
    if (sdict_doc_set_root(L->doc, root) != SDICT_OK)
        return sdict__err(err, SDICT_E_INVALID_ARG, "legacy:pickle", -1,
                          "cannot set the document root");
    sdict__doc_set_format(L->doc, SDICT_FORMAT_LEGACY, false);
    return SDICT_OK;
}

/* Runs load_legacy over a window of the file: the whole input when it is in memory, else a
   prefix read with pread that grows (and the parse restarts in a fresh doc) whenever a pickle
   runs past it. The pickles precede the payloads, so the window stays small. */
static sdict_status load_legacy_windowed(loader *L, sdict_error *err) {
    if (L->src->data) {
        L->win = L->src->data;
        L->win_size = L->src->size;
        return load_legacy(L, err);
    }
    uint64_t w = L->src->size < ((uint64_t)1 << 20) ? L->src->size : (uint64_t)1 << 20;
    for (;;) {
        uint8_t *buf = sdict__malloc((size_t)w);
        if (!buf)
            return sdict__err(err, SDICT_E_NOMEM, NULL, -1, "out of memory for %llu bytes",
                              (unsigned long long)w);
        sdict_status st = sdict__source_read(L->src, 0, buf, (size_t)w, "legacy", err);
        if (st == SDICT_OK) {
            L->win = buf;
            L->win_size = w;
            L->win_truncated = false;
            st = load_legacy(L, err);
        }
        sdict__free(buf);
        L->win = NULL;
        if (!(L->win_truncated && w < L->src->size))
            return st;
        /* Start over in a fresh doc with a larger window. */
        cache_free(&L->storages);
        sdict_doc_free(L->doc);
        L->doc = NULL;
        if ((st = sdict_doc_new(&L->doc, err)) != SDICT_OK)
            return st;
        w = L->src->size / 4 < w ? L->src->size : w * 4;
    }
}

/*==================================================================================================
 MARK: Legacy tar (FORMAT.md 2.2)
==================================================================================================*/

/* Python's tarfile (CPython 3.11, what torch's _legacy_load opens the file with) decides what is
   a tar: torch tries tarfile first and reads the file as a magic-number stream when tarfile
   raises. statedict reads a header exactly as tarfile's TarInfo.frombuf does, so both take the
   same branch and see the same members; the forms tarfile accepts but statedict does not
   interpret are refused as ambiguous by the caller. */

/* Python's str.isspace() over ASCII. */
static bool py_space(uint8_t c) {
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}

/* tarfile's nti(): a number field. Base-256 when the first byte is 0x80 or 0xff; otherwise the
   text up to the first NUL, ASCII only, stripped of whitespace, read as Python's int(text or
   "0", 8) (a sign, a 0o prefix and single underscores between digits are accepted). Returns
   false where tarfile raises InvalidHeaderError. *plain is false for every form but bare octal
   digits (and an empty field); *v saturates past int64. */
static bool tar_nti(const uint8_t *f, size_t len, int64_t *v, bool *plain) {
    *v = 0;
    *plain = true;
    if (f[0] == 0x80 || f[0] == 0xff) {
        *plain = false;
        uint64_t n = 0;
        bool big = false;
        for (size_t i = 1; i < len; i++) {
            big |= (n >> 55) != 0;
            n = (n << 8) | f[i];
        }
        if (f[0] == 0xff) /* -(256**(len-1) - n): only the sign matters once it is large */
            *v = big || len > 8 ? INT64_MIN : (int64_t)n - ((int64_t)1 << (8 * (len - 1)));
        else
            *v = big || n > INT64_MAX ? INT64_MAX : (int64_t)n;
        return true;
    }
    size_t n = 0;
    while (n < len && f[n] != 0)
        n++;
    for (size_t i = 0; i < n; i++)
        if (f[i] >= 0x80)
            return false; /* nts() decodes strictly as ASCII */
    size_t a = 0, b = n;
    while (a < b && py_space(f[a]))
        a++;
    while (b > a && py_space(f[b - 1]))
        b--;
    if (a == b)
        return true; /* int("0", 8) */
    bool neg = false;
    if (f[a] == '+' || f[a] == '-') {
        neg = f[a] == '-';
        *plain = false;
        a++;
    }
    bool prefix = b - a >= 2 && f[a] == '0' && (f[a + 1] == 'o' || f[a + 1] == 'O');
    if (prefix) {
        *plain = false;
        a += 2;
        if (a < b && f[a] == '_')
            a++; /* one underscore may follow the prefix */
    }
    if (a == b)
        return false;
    uint64_t val = 0;
    bool big = false;
    for (size_t i = a; i < b; i++) {
        if (f[i] == '_') {
            /* only between two digits */
            if (i + 1 >= b || f[i + 1] < '0' || f[i + 1] > '7' || i == a)
                return false;
            *plain = false;
            continue;
        }
        if (f[i] < '0' || f[i] > '7')
            return false;
        big |= (val >> 60) != 0;
        val = val * 8 + (uint64_t)(f[i] - '0');
    }
    if (big || val > INT64_MAX)
        *v = neg ? INT64_MIN : INT64_MAX;
    else
        *v = neg ? -(int64_t)val : (int64_t)val;
    return true;
}

/* A tar header as tarfile reads it. */
typedef struct tar_hdr {
    char name[100 + 155 + 2]; /* tarfile's name: prefix + "/" + name, a directory's '/' stripped */
    uint8_t type;             /* type flag; '5' for a v7 directory ('\0' with a trailing '/') */
    int64_t size;
    bool plain;               /* every number field is bare octal */
} tar_hdr;

/* TarInfo.frombuf: true when tarfile accepts the 512-byte block h as a member header (h is not
   all zeros); else false with *why saying what tarfile rejects. */
static bool tar_header(const uint8_t *h, tar_hdr *t, const char **why) {
    static const struct { uint16_t off, len; const char *name; } fields[] = {
        {100, 8, "mode"}, {108, 8, "uid"}, {116, 8, "gid"}, {124, 12, "size"},
        {136, 12, "mtime"}, {329, 8, "devmajor"}, {337, 8, "devminor"}};
    int64_t chk;
    bool plain;
    if (!tar_nti(h + 148, 8, &chk, &plain)) {
        *why = "its checksum field is not a number";
        return false;
    }
    /* calc_chksums: the checksum field counts as 8 spaces; bytes summed unsigned or signed */
    int64_t us = 8 * ' ', ss = 8 * ' ';
    for (size_t i = 0; i < 512; i++)
        if (i < 148 || i >= 156) {
            us += h[i];
            ss += (int8_t)h[i];
        }
    if (chk != us && chk != ss) {
        *why = "its header checksum is wrong";
        return false;
    }
    t->plain = plain;
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        int64_t v;
        bool p;
        if (!tar_nti(h + fields[i].off, fields[i].len, &v, &p)) {
            *why = fields[i].off == 124 ? "its size field is not a number"
                                        : "a number field (mode, ids, mtime, device) is invalid";
            return false;
        }
        t->plain &= p;
        if (fields[i].off == 124)
            t->size = v;
    }
    t->type = h[156];
    char name[101], prefix[156];
    memcpy(name, h, 100);
    name[100] = '\0';
    memcpy(prefix, h + 345, 155);
    prefix[155] = '\0';
    size_t nl = strlen(name);
    if (t->type == '\0' && nl && name[nl - 1] == '/')
        t->type = '5'; /* old V7 directory */
    if (t->type == '5')
        while (nl && name[nl - 1] == '/')
            name[--nl] = '\0';
    if (prefix[0] && t->type != 'L' && t->type != 'K' && t->type != 'S')
        snprintf(t->name, sizeof t->name, "%s/%s", prefix, name);
    else
        snprintf(t->name, sizeof t->name, "%s", name);
    return true;
}

/* A member name for messages: printable ASCII kept, other bytes as \xNN (a name may be any
   bytes, even a pickle). */
static const char *tar_printable(const char *name, char *buf, size_t n) {
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)name; *p && o + 5 < n; p++)
        o += (size_t)(*p >= 0x20 && *p < 0x7f && *p != '\\'
                          ? snprintf(buf + o, n - o, "%c", *p)
                          : snprintf(buf + o, n - o, "\\x%02x", *p));
    buf[o] = '\0';
    return buf;
}

/* What a member type is, for "ambiguous" messages. */
static const char *tar_type_name(uint8_t type) {
    switch (type) {
    case '1': return "hard link";
    case '2': return "symbolic link";
    case '3': case '4': return "device";
    case '5': return "directory";
    case '6': return "FIFO";
    case '7': return "contiguous file (tarfile extracts it as a regular file)";
    case 'x': case 'X': return "PAX extended header (it can rename or resize the next member)";
    case 'g': return "PAX global header (it can rename or resize every later member)";
    case 'L': return "GNU long name (it renames the next member)";
    case 'K': return "GNU long link name";
    case 'S': return "GNU sparse file";
    default: return "member of an unknown type (tarfile extracts it as a regular file)";
    }
}

/* A tar member: file offset and size of its data. */
typedef struct tar_member {
    uint64_t off, size;
    bool present;
} tar_member;

/* The member's bytes: a pointer into the input when it is in memory, else read into *owned. */
static sdict_status member_bytes(loader *L, const tar_member *m, const char *rec,
                                 const uint8_t **out, uint8_t **owned, sdict_error *err) {
    *owned = NULL;
    if (L->src->data) {
        *out = L->src->data + m->off;
        return SDICT_OK;
    }
    *owned = sdict__malloc((size_t)m->size + 1);
    if (!*owned)
        return sdict__err(err, SDICT_E_NOMEM, rec, -1, "out of memory for %llu bytes",
                          (unsigned long long)m->size);
    sdict_status st = sdict__source_read(L->src, m->off, *owned, (size_t)m->size, rec, err);
    if (st != SDICT_OK) {
        sdict__free(*owned);
        *owned = NULL;
        return st;
    }
    *out = *owned;
    return SDICT_OK;
}

static sdict_status tar_persistent_load(void *ctx, sdict_value *pid, int64_t off,
                                        sdict_value **out, sdict_error *err) {
    loader *L = ctx;
    char key[64];
    if (sdict_value_kind(pid) == SDICT_KIND_TUPLE) {
        /* (class, source_file, source): class-source records of whole-module pickles; the class
           itself is refused by the allow-list, so only scans get here. */
        if (!L->scan)
            return sdict__err(err, SDICT_E_UNSUPPORTED, "tar:pickle", off,
                              "whole-module pickle (class source persistent id)");
        *out = sdict_none_new(L->doc);
        return *out ? SDICT_OK : sdict__err(err, SDICT_E_NOMEM, "tar:pickle", off, "out of memory");
    }
    if (!key_text(pid, key, sizeof key))
        return sdict__err(err, SDICT_E_PICKLE_TYPE, "tar:pickle", off,
                          "persistent id is a %s, expected a decimal key",
                          sdict_kind_name(sdict_value_kind(pid)));
    cache_ent *e = cache_find(&L->tensors, key);
    if (!e)
        e = cache_find(&L->storages, key);
    if (!e)
        return sdict__err(err, SDICT_E_STORAGE, "tar:pickle", off,
                          "persistent id '%s' names no tensor or storage", key);
    *out = e->val;
    return SDICT_OK;
}

/* The pickled item count that starts the tar's storages and tensors members, bounded by the
   member's size. */
static sdict_status tar_count(loader *L, const uint8_t *d, size_t n, const char *rec,
                              const char *what, size_t max, int64_t *count, size_t *used,
                              sdict_error *err) {
    sdict_value *v;
    L->literals = true; /* torch: num = pickle_module.load(f) */
    sdict_status st = run_pickle(L, d, n, rec, refuse_persistent, &v, used, err);
    L->literals = false;
    if (st != SDICT_OK)
        return st;
    if (sdict_int_get(v, count) != SDICT_OK || *count < 0 || (uint64_t)*count > max)
        return sdict__err(err, SDICT_E_FORMAT, rec, 0, "%s count is not an int in 0..%zu", what,
                          max);
    return SDICT_OK;
}

/* storages member: pickled count; per storage a pickled (key, location, storage_type), an int64
   LE element count and the raw bytes; then a pickled list of views
   (view_key, root_key, offset, numel), in elements. */
static sdict_status tar_storages(loader *L, const uint8_t *d, size_t n, sdict_error *err) {
    const char *rec = "tar:storages";
    size_t pos = 0, used = 0;
    sdict_value *v;
    int64_t count;
    sdict_status st = tar_count(L, d, n, rec, "storage", n / 8, &count, &used, err);
    if (st != SDICT_OK)
        return st;
    pos += used;
    for (int64_t i = 0; i < count; i++) {
        if ((st = run_pickle(L, d + pos, n - pos, rec, refuse_persistent, &v, &used, err)))
            return st;
        char key[64];
        sdict_dtype dtype;
        if (sdict_value_kind(v) != SDICT_KIND_TUPLE || sdict_seq_len(v) != 3 ||
            !key_text(sdict_seq_item(v, 0), key, sizeof key) ||
            !storage_class_dtype(sdict_seq_item(v, 2), &dtype))
            return sdict__err(err, SDICT_E_FORMAT, rec, (int64_t)pos,
                              "storage record is not (key, location, storage class)");
        pos += used;
        if (n - pos < 8)
            return sdict__err(err, SDICT_E_TRUNCATED, rec, (int64_t)pos,
                              "storage '%s': element count past the end of the member", key);
        uint64_t numel = sdict__le64(d + pos), nbytes;
        pos += 8;
        if (!sdict__mul_u64(numel, sdict_dtype_size(dtype), &nbytes) || nbytes > n - pos)
            return sdict__err(err, SDICT_E_TRUNCATED, rec, (int64_t)pos,
                              "storage '%s': %llu elements run past the end of the member", key,
                              (unsigned long long)numel);
        if (cache_find(&L->storages, key))
            return sdict__err(err, SDICT_E_STORAGE, rec, (int64_t)pos,
                              "storage '%s' is defined twice", key);
        sdict_storage *s;
        if ((st = sdict_storage_new((size_t)nbytes, &s, err)) != SDICT_OK)
            return st;
        if (nbytes) {
            memcpy(sdict_storage_data(s), d + pos, (size_t)nbytes);
            if (host_big_endian())
                swap_payload(sdict_storage_data(s), (size_t)nbytes, dtype);
        }
        if ((st = apply_location(rec, (int64_t)pos, key, sdict_seq_item(v, 1), s, err))) {
            sdict_storage_release(s);
            return st;
        }
        cache_ent *e = NULL;
        if ((st = cache_storage(L, key, s, dtype, (int64_t)numel, &e, err)) != SDICT_OK)
            return st;
        e->root = e->filled = true;
        pos += (size_t)nbytes;
    }
    if (pos >= n)
        return sdict__err(err, SDICT_E_FORMAT, rec, (int64_t)pos,
                          "malformed legacy tar: the storages member ends before its list of "
                          "storage views");
    L->literals = true; /* storage_views = pickle_module.load(f) */
    st = run_pickle(L, d + pos, n - pos, rec, refuse_persistent, &v, &used, err);
    L->literals = false;
    if (st != SDICT_OK)
        return st;
    if (sdict_value_kind(v) != SDICT_KIND_LIST && sdict_value_kind(v) != SDICT_KIND_TUPLE)
        return sdict__err(err, SDICT_E_FORMAT, rec, (int64_t)pos, "storage views are not a list");
    for (size_t i = 0; i < sdict_seq_len(v); i++) {
        const sdict_value *t = sdict_seq_item(v, i);
        char vkey[64], rkey[64];
        int64_t voff, vnum;
        if (sdict_value_kind(t) != SDICT_KIND_TUPLE || sdict_seq_len(t) != 4 ||
            !key_text(sdict_seq_item(t, 0), vkey, sizeof vkey) ||
            !key_text(sdict_seq_item(t, 1), rkey, sizeof rkey) ||
            sdict_int_get(sdict_seq_item(t, 2), &voff) != SDICT_OK ||
            sdict_int_get(sdict_seq_item(t, 3), &vnum) != SDICT_OK)
            return sdict__err(err, SDICT_E_FORMAT, rec, (int64_t)pos,
                              "storage view %zu is not (key, root, offset, numel)", i);
        cache_ent *root = cache_find(&L->storages, rkey);
        if (!root || !root->root)
            return sdict__err(err, SDICT_E_STORAGE, rec, (int64_t)pos,
                              "storage view '%s' of unknown storage '%s'", vkey, rkey);
        if (cache_find(&L->storages, vkey))
            return sdict__err(err, SDICT_E_STORAGE, rec, (int64_t)pos,
                              "storage '%s' is defined twice", vkey);
        if (voff < 0 || vnum < 0 || voff > root->numel || vnum > root->numel - voff)
            return sdict__err(err, SDICT_E_STORAGE, rec, (int64_t)pos,
                              "storage view '%s' lies outside storage '%s'", vkey, rkey);
        size_t es = sdict_dtype_size(root->dtype);
        uint8_t *base = sdict_storage_data(root->storage);
        sdict_storage *held = sdict_storage_retain(root->storage), *s;
        st = sdict_storage_wrap(base ? base + (size_t)voff * es : NULL, (size_t)vnum * es,
                                release_root, held, &s, err);
        if (st != SDICT_OK) {
            sdict_storage_release(held);
            return st;
        }
        sdict_dtype dt = root->dtype;
        cache_ent *e;
        const char *rloc = sdict_storage_location(root->storage);
        if ((st = sdict__storage_set_location(s, rloc, strlen(rloc), err)) != SDICT_OK) {
            sdict_storage_release(s);
            return st;
        }
        if ((st = cache_storage(L, vkey, s, dt, vnum, &e, err)) != SDICT_OK)
            return st;
    }
    return SDICT_OK;
}

/* tensors member: pickled count; per tensor a pickled (key, storage_key, tensor_type), then
   int32 LE ndim, 4 padding bytes, ndim int64 sizes, ndim int64 strides, int64 storage offset.
   tensor_type (torch.FloatTensor ...) is an allow-listed type marker; torch ignores it. */
static sdict_status tar_tensors(loader *L, const uint8_t *d, size_t n, sdict_error *err) {
    const char *rec = "tar:tensors";
    size_t pos = 0, used = 0;
    sdict_value *v;
    int64_t count;
    sdict_status st = tar_count(L, d, n, rec, "tensor", n / 16, &count, &used, err);
    if (st != SDICT_OK)
        return st;
    pos += used;
    cache *tc = &L->tensors;
    for (int64_t i = 0; i < count; i++) {
        if ((st = run_pickle(L, d + pos, n - pos, rec, refuse_persistent, &v, &used, err)) !=
            SDICT_OK)
            return st;
        char key[64], skey[64];
        if (sdict_value_kind(v) != SDICT_KIND_TUPLE || sdict_seq_len(v) != 3 ||
            !key_text(sdict_seq_item(v, 0), key, sizeof key) ||
            !key_text(sdict_seq_item(v, 1), skey, sizeof skey))
            return sdict__err(err, SDICT_E_FORMAT, rec, (int64_t)pos,
                              "tensor record is not (key, storage key, tensor type)");
        pos += used;
        if (n - pos < 8)
            return sdict__err(err, SDICT_E_TRUNCATED, rec, (int64_t)pos, "tensor '%s' header", key);
        int32_t ndim = (int32_t)sdict__le32(d + pos);
        if (ndim < 0)
            return sdict__err(err, SDICT_E_SHAPE, rec, (int64_t)pos,
                              "tensor '%s' has %d dimensions", key, ndim);
        /* the sizes and strides must be in the member: memory stays proportional to it */
        size_t nd = (size_t)ndim;
        uint64_t need64 = 8 + (uint64_t)nd * 16 + 8;
        size_t need = (size_t)need64;
        if (n - pos < need64)
            return sdict__err(err, SDICT_E_TRUNCATED, rec, (int64_t)pos,
                              "tensor '%s': sizes and strides past the end of the member", key);
        cache_ent *se = cache_find(&L->storages, skey);
        if (!se)
            return sdict__err(err, SDICT_E_STORAGE, rec, (int64_t)pos,
                              "tensor '%s' uses unknown storage '%s'", key, skey);
        int64_t *dims = nd ? sdict__malloc(nd * 2 * sizeof *dims) : NULL; /* sizes, strides */
        if (nd && !dims)
            return sdict__err(err, SDICT_E_NOMEM, rec, -1, "out of memory");
        for (size_t k = 0; k < 2 * nd; k++)
            dims[k] = (int64_t)sdict__le64(d + pos + 8 + k * 8);
        sdict_tensor t;
        memset(&t, 0, sizeof t);
        t.dtype = se->dtype;
        t.ndim = ndim;
        t.shape = dims;
        t.stride = nd ? dims + nd : NULL;
        t.storage = se->storage;
        t.storage_offset = (int64_t)sdict__le64(d + pos + 8 + nd * 16);
        pos += need;
        sdict_value *tv;
        st = sdict_tensor_new(L->doc, &t, &tv, err); /* copies the dimensions into the doc */
        sdict__free(dims);
        if (st != SDICT_OK) {
            if (err) { /* keep the check's message, place it in the member */
                snprintf(err->record, sizeof err->record, "%s", rec);
                err->offset = (int64_t)pos;
            }
            return st;
        }
        if (cache_find(tc, key))
            return sdict__err(err, SDICT_E_STORAGE, rec, (int64_t)pos,
                              "tensor '%s' is defined twice", key);
        cache_ent *e = cache_add(tc, key);
        if (!e)
            return sdict__err(err, SDICT_E_NOMEM, rec, -1, "out of memory");
        e->val = tv;
    }
    return SDICT_OK;
}

static sdict_status load_tar(loader *L, sdict_error *err) {
    static const char *const want[4] = {"sys_info", "pickle", "tensors", "storages"};
    tar_member mem[4];
    memset(mem, 0, sizeof mem);
    uint64_t off = 0;
    for (uint64_t n = 0; off + 512 <= L->src->size; n++) {
        uint8_t h[512];
        sdict_status st = sdict__source_read(L->src, off, h, 512, "tar", err);
        if (st != SDICT_OK)
            return st;
        bool zero = true;
        for (size_t i = 0; i < 512 && zero; i++)
            zero = h[i] == 0;
        if (zero)
            break; /* end-of-archive marker, where tarfile stops too */
        if (n >= L->limits.max_records)
            return sdict__err(err, SDICT_E_LIMIT, "tar", (int64_t)off,
                              "more than %llu tar members (max_records)",
                              (unsigned long long)L->limits.max_records);
        tar_hdr th;
        const char *why = "";
        char pn[96];
        if (!tar_header(h, &th, &why))
            return sdict__err(err, SDICT_E_FORMAT, "tar", (int64_t)off,
                              "ambiguous legacy tar: Python's tarfile (torch's reader) rejects "
                              "this member header (%s) and silently ends the archive here, "
                              "ignoring what follows", why);
        if (th.type != '0' && th.type != '\0')
            return sdict__err(err, SDICT_E_FORMAT, "tar", (int64_t)off,
                              "ambiguous legacy tar: member '%s' is a %s; torch < 0.4 wrote only "
                              "regular files, and tarfile resolves such members in ways statedict "
                              "does not follow",
                              tar_printable(th.name, pn, sizeof pn), tar_type_name(th.type));
        if (!th.plain || th.size < 0)
            return sdict__err(err, SDICT_E_FORMAT, "tar", (int64_t)off,
                              "ambiguous legacy tar: member '%s' has a number field that is not "
                              "plain octal (signed, 0o prefix, underscores or base-256), which "
                              "only Python's tarfile interprets",
                              tar_printable(th.name, pn, sizeof pn));
        uint64_t size = (uint64_t)th.size;
        if (size > L->src->size - off - 512 || size > SIZE_MAX - 1)
            return sdict__err(err, SDICT_E_TRUNCATED, "tar", (int64_t)off,
                              "tar member '%s' of %llu bytes runs past the end of the file (a tar "
                              "torch's tarfile cannot finish: it would read the file as a "
                              "magic-number stream instead)",
                              tar_printable(th.name, pn, sizeof pn), (unsigned long long)size);
        for (size_t i = 0; i < 4; i++)
            if (strcmp(th.name, want[i]) == 0) {
                if (mem[i].present)
                    return sdict__err(err, SDICT_E_FORMAT, "tar", (int64_t)off,
                                      "ambiguous legacy tar: two '%s' members (tarfile's "
                                      "getmember takes the last one)", th.name);
                mem[i].present = true;
                mem[i].off = off + 512;
                mem[i].size = size;
            }
        off += 512 + (size + 511) / 512 * 512;
    }
    for (size_t i = 0; i < 4; i++)
        if (!mem[i].present)
            return sdict__err(err, SDICT_E_FORMAT, "tar", -1,
                              "malformed legacy tar checkpoint: no '%s' member (a torch < 0.4 tar "
                              "has sys_info, pickle, tensors and storages)", want[i]);
    /* torch reads storages, then tensors, then the main pickle. */
    const uint8_t *d = NULL;
    uint8_t *owned = NULL;
    sdict_status st = member_bytes(L, &mem[3], "tar:storages", &d, &owned, err);
    if (st != SDICT_OK)
        return st;
    st = tar_storages(L, d, (size_t)mem[3].size, err);
    sdict__free(owned);
    if (st != SDICT_OK)
        return st;
    if ((st = member_bytes(L, &mem[2], "tar:tensors", &d, &owned, err)) != SDICT_OK)
        return st;
    st = tar_tensors(L, d, (size_t)mem[2].size, err);
    sdict__free(owned);
    if (st != SDICT_OK)
        return st;
    if ((st = member_bytes(L, &mem[1], "tar:pickle", &d, &owned, err)) != SDICT_OK)
        return st;
    sdict_value *root = NULL;
    st = run_pickle(L, d, (size_t)mem[1].size, "tar:pickle", tar_persistent_load, &root, NULL, err);
    sdict__free(owned);
    if (st != SDICT_OK)
        return st;
    if (sdict_doc_set_root(L->doc, root) != SDICT_OK)
        return sdict__err(err, SDICT_E_INVALID_ARG, "tar:pickle", -1, "cannot set the root");
    sdict__doc_set_format(L->doc, SDICT_FORMAT_TAR, false);
    return SDICT_OK;
}

/*==================================================================================================
 MARK: Other file types (clearer answers)
==================================================================================================*/

/* A zip torch.save did not write: what its first member's name says it is, or NULL. */
static const char *sniff_foreign_zip(loader *L) {
    uint8_t lh[30 + 64];
    size_t k = L->src->size < sizeof lh ? (size_t)L->src->size : sizeof lh;
    if (k < 30 || sdict__source_read(L->src, 0, lh, k, NULL, NULL) != SDICT_OK)
        return NULL;
    size_t nl = lh[26] | (size_t)lh[27] << 8;
    if (nl > k - 30)
        nl = k - 30;
    const char *name = (const char *)lh + 30;
    if (nl >= 4 && memcmp(name + nl - 4, ".npy", 4) == 0)
        return "a NumPy .npz archive (numpy.savez), not a PyTorch checkpoint: read it with "
               "numpy.load";
    if ((nl == 11 && memcmp(name, "config.json", 11) == 0) ||
        (nl == 13 && memcmp(name, "metadata.json", 13) == 0) ||
        (nl == 16 && memcmp(name, "model.weights.h5", 16) == 0))
        return "a Keras .keras archive, not a PyTorch checkpoint: load it with keras";
    return NULL;
}

/* load_zip, with zips that are no torch archive named: NumPy and Keras archives by what they
   hold, any other zip that lacks torch's records as "a zip archive, not torch.save's". */
static sdict_status load_zip_named(loader *L, sdict_error *err) {
    sdict_status st = load_zip(L, err);
    if (st != SDICT_E_FORMAT && st != SDICT_E_ZIP_CORRUPT)
        return st;
    const char *what = sniff_foreign_zip(L);
    if (what)
        return sdict__err(err, SDICT_E_FORMAT, NULL, 0, "this is %s", what);
    if (err && ((st == SDICT_E_FORMAT && strstr(err->message, " record") &&
                 strncmp(err->message, "zip archive has no ", 19) == 0) ||
                (st == SDICT_E_ZIP_CORRUPT && strstr(err->message, "expected \"<folder>/...\"")))) {
        char msg[sizeof err->message];
        snprintf(msg, sizeof msg, "%s", err->message);
        return sdict__err(err, SDICT_E_FORMAT, err->record[0] ? err->record : NULL, err->offset,
                          "this is a zip archive but not one torch.save wrote: %s", msg);
    }
    return st;
}

/*==================================================================================================
 MARK: Entry point (format.c sniffs the input and calls it)
==================================================================================================*/

bool sdict__tar_header_ok(const uint8_t h[512], const char **why) {
    tar_hdr th;
    return tar_header(h, &th, why);
}

static sdict_status load_any(loader *L, sdict__input kind, sdict_error *err) {
    switch (kind) {
    case SDICT__IN_ZIP: return load_zip_named(L, err);
    case SDICT__IN_TAR: return load_tar(L, err);
    default: return load_legacy_windowed(L, err);
    }
}

sdict_status sdict__torch_read(sdict__source *src, sdict__input kind, const sdict_load_opts *opts,
                               const sdict__read_job *job, sdict_doc **out, sdict_error *err) {
    loader L;
    memset(&L, 0, sizeof L);
    L.src = src;
    fill_limits(&L.limits, opts);
    L.flags = opts ? opts->flags : 0;
    L.verify_crc = (L.flags & SDICT_LOAD_VERIFY_CRC) != 0;
    scan_state ss = {job->fn, job->ctx, "", 0, false};
    if (job->mode == SDICT__READ_SCAN) {
        L.scan = true;
        L.ss = &ss;
    } else if (job->mode == SDICT__READ_VERIFY) {
        L.verify_crc = true;
        L.verify_all = true;
    }
    L.map_any = job->mode == SDICT__READ_LOAD_BYTES;
    sdict_status st = sdict_doc_new(&L.doc, err);
    if (st == SDICT_OK)
        st = load_any(&L, kind, err);
    sdict__zip_close(L.zip);
    sdict__free(L.no_crc_seen);
    cache_free(&L.storages);
    cache_free(&L.tensors);
    sdict__free(L.deferred);
    if (job->unsafe_count)
        *job->unsafe_count = ss.unsafe;
    if (job->python_may_continue)
        *job->python_may_continue = st != SDICT_OK && ss.python_may_continue;
    if (st != SDICT_OK || !out)
        sdict_doc_free(L.doc);
    else
        *out = L.doc;
    return st;
}

void sdict__scan_relay_item(void *ctx, const sdict_scan_item *item) {
    const sdict__scan_relay *r = ctx;
    if (!r->fn)
        return;
    char rec[512];
    snprintf(rec, sizeof rec, "%s:%s", r->prefix, item->record ? item->record : "");
    sdict_scan_item it = *item;
    it.record = rec;
    r->fn(r->ctx, &it);
}
