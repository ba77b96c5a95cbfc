/*
 module_state.c - torch.nn.Module.state_dict() over an inert object tree (SDICT_LOAD_INERT), and
 the tensors of any object by attribute path.

 state_dict() as torch 1.13 and 2.x compute it (torch/nn/modules/module.py, state_dict and
 _save_to_state_dict): the module's prefix goes into `_metadata` with {'version': _version},
 then its `_parameters` (None skipped) and persistent `_buffers` (None and the names in
 `_non_persistent_buffers_set` skipped) under prefix + name, each detached, then each child of
 `_modules` (None skipped) under prefix + name + '.', depth first in insertion order. Each key
 gets its own detached tensor, as each detach() in torch makes one: tied weights are two values
 of one storage, and sdict_save of the result writes what torch.save(model.state_dict()) writes,
 byte for byte. _version is a class
 attribute, not in the pickle: module_versions.h lists the classes whose version is not 1.
 Nothing here recurses deeper than the tree the unpickler accepted (max_depth), and a module
 reached twice is walked twice, as torch walks it; the unpickler's bound on the expanded tree
 keeps that linear in the file.

 Optimizer.state_dict() (torch/optim/optimizer.py) over a pickled optimizer: parameter indices
 by first appearance across param_groups, state re-keyed from Parameter tensors (the items of
 the inert defaultdict) to those indices.
*/
#include "internal.h"

#include <stdio.h>
#include <string.h>

#include "module_versions.h"

#define MS_MAX_DEPTH 1000 /* modules within modules; deeper trees are refused (SDICT_E_LIMIT) */

typedef struct ms {
    sdict_doc *doc;
    sdict_value *out, *meta;
    sdict_value *version; /* the key "version": one str value for every _metadata entry, as
                             Python's interned 'version' (the pickle then memoizes it) */
    sdict_error *err;
    char *path; /* the current prefix ("layer1.0."), NUL-terminated */
    size_t len, pcap;
} ms;

static sdict_status nomem(ms *m) {
    return sdict__err(m->err, SDICT_E_NOMEM, NULL, -1, "out of memory");
}

/* Appends text to the prefix; false on out of memory. */
static bool path_push(ms *m, const char *s, size_t n, bool dot) {
    size_t need = m->len + n + 2;
    if (need > m->pcap) {
        size_t ncap = m->pcap ? m->pcap * 2 : 256;
        while (ncap < need)
            ncap *= 2;
        char *p = sdict__realloc(m->path, ncap);
        if (!p)
            return false;
        m->path = p;
        m->pcap = ncap;
    }
    memcpy(m->path + m->len, s, n);
    m->len += n;
    if (dot)
        m->path[m->len++] = '.';
    m->path[m->len] = '\0';
    return true;
}

/* The attribute dict of an object's state: the state itself, or the dict of a (dict, slots)
   pair; NULL when there is none. */
static sdict_value *attrs_of(const sdict_value *obj) {
    sdict_value *st = sdict_object_state(obj);
    if (sdict_value_kind(st) == SDICT_KIND_TUPLE && sdict_seq_len(st) == 2)
        st = sdict_seq_item(st, 0);
    return sdict_value_kind(st) == SDICT_KIND_DICT ? st : NULL;
}

bool sdict_object_is_module(const sdict_value *v) {
    if (sdict_value_kind(v) != SDICT_KIND_OBJECT || sdict_object_how(v) == SDICT_OBJECT_CLASS)
        return false;
    const sdict_value *a = attrs_of(v);
    /* a dict subclass there (an object) still makes a module: state_dict refuses it clearly */
    static const char *const keys[] = {"_parameters", "_buffers", "_modules"};
    for (size_t i = 0; i < 3; i++) {
        sdict_kind k = sdict_value_kind(sdict_dict_get(a, keys[i]));
        if (k != SDICT_KIND_DICT && k != SDICT_KIND_OBJECT)
            return false;
    }
    return true;
}

/* The object's class: protocols 0 and 1 pickle a plain object as
   copyreg._reconstructor(cls, object, None) (Python 2's copy_reg, renamed), whose first
   argument is the class. */
static const sdict_value *class_of(const sdict_value *obj) {
    const sdict_value *cls = sdict_seq_item(sdict_object_args(obj), 0);
    if (strcmp(sdict_object_module(obj), "copyreg") == 0 &&
        strcmp(sdict_object_name(obj), "_reconstructor") == 0 && !sdict_object_callee(obj) &&
        sdict_value_kind(cls) == SDICT_KIND_OBJECT && sdict_object_how(cls) == SDICT_OBJECT_CLASS)
        return cls;
    return obj;
}

static int version_of(const sdict_value *obj) {
    obj = class_of(obj);
    const char *mod = sdict_object_module(obj), *name = sdict_object_name(obj);
    for (size_t i = 0; i < sizeof module_versions / sizeof module_versions[0]; i++)
        if (strcmp(module_versions[i].module, mod) == 0 &&
            strcmp(module_versions[i].name, name) == 0)
            return module_versions[i].version;
    return 1;
}

static bool is_tensorish(const sdict_value *v) {
    sdict_kind k = sdict_value_kind(v);
    return k == SDICT_KIND_TENSOR || k == SDICT_KIND_SPARSE || k == SDICT_KIND_NESTED;
}

/* t.detach(): a new plain tensor (not a Parameter, requires_grad False, no Python attributes)
   viewing the same storage, as each call of torch's detach() makes one: a tensor reached under
   two names (tied weights, a module listed twice) gives two values of one storage, as
   torch.save(model.state_dict()) writes them. Sparse and nested tensors are kept as they are. */
static sdict_status detach(ms *m, const sdict_value *v, sdict_value **out) {
    if (sdict_value_kind(v) != SDICT_KIND_TENSOR) {
        *out = (sdict_value *)v;
        return SDICT_OK;
    }
    sdict_tensor t = *sdict_value_tensor(v);
    t.is_parameter = false;
    t.requires_grad = false;
    return sdict__tensor_value_new(m->doc, &t, sdict_value_quantizer(v), out, m->err);
}

static sdict_status bad(ms *m, sdict_status code, const char *what, const sdict_value *key) {
    const char *k = sdict_str_get(key, NULL);
    return sdict__err(m->err, code, NULL, -1, "module '%.200s'%s%.200s: %s", m->path,
                      k ? " entry " : "", k ? k : "", what);
}

static bool str_eq(const sdict_value *v, const char *s) {
    size_t n = 0;
    const char *t = sdict_str_get(v, &n);
    return t && n == strlen(s) && memcmp(t, s, n) == 0;
}

static bool in_set(const sdict_value *set, const sdict_value *name) {
    size_t n = 0, ln = 0;
    const char *s = sdict_str_get(name, &n);
    for (size_t i = 0; i < sdict_seq_len(set); i++) {
        const char *t = sdict_str_get(sdict_seq_item(set, i), &ln);
        if (t && ln == n && memcmp(s, t, n) == 0)
            return true;
    }
    return false;
}

/* Puts each non-None tensor of dict d (a module's _parameters or _buffers) under prefix + name,
   skipping the names in skip (may be NULL). */
static sdict_status save_tensors(ms *m, const sdict_value *d, const sdict_value *skip,
                                 const char *what) {
    size_t base = m->len;
    for (size_t i = 0; i < sdict_dict_len(d); i++) {
        const sdict_value *k = sdict_dict_key(d, i), *v = sdict_dict_val(d, i);
        size_t kl = 0;
        const char *ks = sdict_str_get(k, &kl);
        if (!ks)
            return bad(m, SDICT_E_UNSUPPORTED, "a name that is not a str", NULL);
        if (sdict_value_kind(v) == SDICT_KIND_NONE || (skip && in_set(skip, k)))
            continue;
        if (!is_tensorish(v))
            return bad(m, SDICT_E_UNSUPPORTED, what, k);
        sdict_value *dv = NULL, *key;
        sdict_status st = detach(m, v, &dv);
        if (st != SDICT_OK)
            return st;
        if (!path_push(m, ks, kl, false))
            return nomem(m);
        key = sdict_str_new(m->doc, m->path, m->len);
        m->len = base;
        m->path[base] = '\0';
        if (!key || sdict_dict_set(m->out, key, dv) != SDICT_OK)
            return nomem(m);
    }
    return SDICT_OK;
}

static bool empty_or_none(const sdict_value *v) {
    return !v || sdict_value_kind(v) == SDICT_KIND_NONE ||
           (sdict_value_kind(v) == SDICT_KIND_DICT && sdict_dict_len(v) == 0);
}

/* torch's quantized modules (torch.ao.nn.quantized..., torch.nn.quantized..., their intrinsic
   and dynamic variants) override _save_to_state_dict: their state_dict holds scale, zero_point
   and packed parameters computed by Python code, not their _parameters and _buffers. */
static bool saves_itself(const sdict_value *obj) {
    const char *mod = sdict_object_module(class_of(obj));
    return mod && strncmp(mod, "torch.", 6) == 0 && strstr(mod, ".quantized") != NULL;
}

/* Module.state_dict(destination, prefix) for one module (m->path is the prefix). */
static sdict_status walk(ms *m, const sdict_value *mod, int depth) {
    if (depth > MS_MAX_DEPTH)
        return sdict__err(m->err, SDICT_E_LIMIT, NULL, -1,
                          "modules nest deeper than %d at '%.200s'", MS_MAX_DEPTH, m->path);
    const sdict_value *a = attrs_of(mod);
    if (saves_itself(mod))
        return sdict__err(m->err, SDICT_E_UNSUPPORTED, NULL, -1, "module '%.200s': unsupported: "
                          "%.200s.%.200s computes its own state_dict (_save_to_state_dict)",
                          m->path, sdict_object_module(class_of(mod)),
                          sdict_object_name(class_of(mod)));
    /* _metadata[prefix[:-1]] = {'version': cls._version} */
    sdict_value *md = sdict_dict_new(m->doc, false), *ver = sdict_int_new(m->doc, version_of(mod));
    sdict_value *mk = sdict_str_new(m->doc, m->path, m->len ? m->len - 1 : 0);
    if (!md || !ver || !mk || sdict_dict_set(md, m->version, ver) != SDICT_OK ||
        sdict_dict_set(m->meta, mk, md) != SDICT_OK)
        return nomem(m);
    /* hooks would run Python code that changes the result: refused, not guessed */
    if (!empty_or_none(sdict_dict_get(a, "_state_dict_hooks")) ||
        !empty_or_none(sdict_dict_get(a, "_state_dict_pre_hooks")))
        return bad(m, SDICT_E_UNSUPPORTED, "has state_dict hooks (Python code that would change "
                   "the result)", NULL);
    static const char *const keys[] = {"_parameters", "_buffers", "_modules"};
    for (size_t i = 0; i < 3; i++) {
        const sdict_value *d = sdict_dict_get(a, keys[i]);
        if (sdict_value_kind(d) != SDICT_KIND_DICT)
            return sdict__err(m->err, SDICT_E_UNSUPPORTED, NULL, -1, "module '%.200s': "
                              "unsupported: its %s is a %.200s.%.200s (a dict subclass), not a "
                              "dict", m->path, keys[i], sdict_object_module(class_of(d)),
                              sdict_object_name(class_of(d)));
    }
    /* _non_persistent_buffers_set: a set (or frozenset); a list or tuple is honoured as torch's
       `name in ...` would; anything else (a set subclass) is refused, never ignored */
    const sdict_value *skip = sdict_dict_get(a, "_non_persistent_buffers_set");
    sdict_kind sk = sdict_value_kind(skip);
    if (skip && sk != SDICT_KIND_NONE && sk != SDICT_KIND_SET && sk != SDICT_KIND_LIST &&
        sk != SDICT_KIND_TUPLE)
        return bad(m, SDICT_E_UNSUPPORTED, "unsupported: _non_persistent_buffers_set is no set, "
                   "list or tuple (a subclass?)", NULL);
    sdict_status st = save_tensors(m, sdict_dict_get(a, "_parameters"), NULL,
                                   "a parameter that is not a tensor");
    if (st == SDICT_OK)
        st = save_tensors(m, sdict_dict_get(a, "_buffers"),
                          sk == SDICT_KIND_NONE ? NULL : skip,
                          "a buffer that is not a tensor");
    const sdict_value *mods = sdict_dict_get(a, "_modules");
    size_t base = m->len;
    for (size_t i = 0; st == SDICT_OK && i < sdict_dict_len(mods); i++) {
        const sdict_value *k = sdict_dict_key(mods, i), *sub = sdict_dict_val(mods, i);
        size_t kl = 0;
        const char *ks = sdict_str_get(k, &kl);
        if (!ks)
            return bad(m, SDICT_E_UNSUPPORTED, "a submodule name that is not a str", NULL);
        if (sdict_value_kind(sub) == SDICT_KIND_NONE)
            continue;
        if (!sdict_object_is_module(sub))
            return bad(m, SDICT_E_UNSUPPORTED, "submodule is not an nn.Module object (no "
                       "_parameters, _buffers and _modules state)", k);
        if (!path_push(m, ks, kl, true))
            return nomem(m);
        st = walk(m, sub, depth + 1);
        m->len = base;
        m->path[base] = '\0';
    }
    return st;
}

sdict_status sdict_object_state_dict(sdict_value *module, sdict_value **out, sdict_error *err) {
    if (out)
        *out = NULL;
    if (!module || !out)
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "module_state_dict: NULL argument");
    if (!sdict_object_is_module(module))
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "module_state_dict: %s is not an "
                          "nn.Module object (an inert object whose state has _parameters, "
                          "_buffers and _modules)", sdict_kind_name(sdict_value_kind(module)));
    ms m;
    memset(&m, 0, sizeof m);
    m.doc = sdict__value_doc(module);
    m.err = err;
    m.out = sdict_dict_new(m.doc, true);
    m.meta = sdict_dict_new(m.doc, true);
    m.version = sdict_str_new(m.doc, "version", 7);
    sdict_value *attrs = sdict_dict_new(m.doc, false);
    sdict_status st = !m.out || !m.meta || !m.version || !attrs || !path_push(&m, "", 0, false) ||
                              sdict_dict_set_str(attrs, "_metadata", m.meta) != SDICT_OK ||
                              sdict_dict_set_attrs(m.out, attrs) != SDICT_OK
                          ? nomem(&m)
                          : walk(&m, module, 0);
    sdict__free(m.path);
    if (st == SDICT_OK)
        *out = m.out;
    return st;
}

/*==================================================================================================
 MARK: Tensors of any object, by attribute path
==================================================================================================*/

static sdict_status tensors_rec(ms *m, const sdict_value *v, int depth) {
    if (depth > MS_MAX_DEPTH)
        return sdict__err(m->err, SDICT_E_LIMIT, NULL, -1, "values nest deeper than %d at '%.200s'",
                          MS_MAX_DEPTH, m->path);
    sdict_kind k = sdict_value_kind(v);
    size_t base = m->len;
    sdict_status st = SDICT_OK;
    if (is_tensorish(v)) {
        /* the path without its trailing dot */
        sdict_value *key = sdict_str_new(m->doc, m->path, m->len ? m->len - 1 : 0);
        return key && sdict_dict_set(m->out, key, (sdict_value *)v) == SDICT_OK ? SDICT_OK
                                                                                : nomem(m);
    }
    if (k == SDICT_KIND_OBJECT) {
        const sdict_value *st_v = sdict_object_state(v), *items = sdict_object_items(v);
        st = tensors_rec(m, st_v ? st_v : sdict_object_args(v), depth + 1);
        /* a dict subclass's items: by str or int key, else by position */
        for (size_t i = 0; st == SDICT_OK && i < sdict_seq_len(items); i++) {
            const sdict_value *pair = sdict_seq_item(items, i), *key = sdict_seq_item(pair, 0);
            char num[32];
            size_t kl = 0;
            const char *ks = sdict_str_get(key, &kl);
            int64_t iv;
            if (!ks) {
                kl = (size_t)snprintf(num, sizeof num, "%lld",
                                      sdict_int_get(key, &iv) == SDICT_OK ? (long long)iv
                                                                          : (long long)i);
                ks = num;
            }
            if (!path_push(m, ks, kl, true))
                return nomem(m);
            st = tensors_rec(m, sdict_seq_item(pair, 1), depth + 1);
            m->len = base;
            m->path[base] = '\0';
        }
        return st;
    }
    if (k == SDICT_KIND_TUPLE && sdict_seq_len(v) == 2 &&
        sdict_value_kind(sdict_seq_item(v, 1)) == SDICT_KIND_DICT && depth > 0 &&
        (sdict_value_kind(sdict_seq_item(v, 0)) == SDICT_KIND_DICT ||
         sdict_value_kind(sdict_seq_item(v, 0)) == SDICT_KIND_NONE)) {
        /* a (dict, slots) state: both are attributes */
        st = tensors_rec(m, sdict_seq_item(v, 0), depth + 1);
        return st == SDICT_OK ? tensors_rec(m, sdict_seq_item(v, 1), depth + 1) : st;
    }
    if (k == SDICT_KIND_DICT) {
        for (size_t i = 0; st == SDICT_OK && i < sdict_dict_len(v); i++) {
            const sdict_value *key = sdict_dict_key(v, i);
            char num[32];
            size_t kl = 0;
            const char *ks = sdict_str_get(key, &kl);
            int64_t iv;
            if (!ks && sdict_int_get(key, &iv) == SDICT_OK) {
                kl = (size_t)snprintf(num, sizeof num, "%lld", (long long)iv);
                ks = num;
            }
            if (!ks)
                continue; /* keys that have no dotted spelling hold no attribute path */
            if (!path_push(m, ks, kl, true))
                return nomem(m);
            st = tensors_rec(m, sdict_dict_val(v, i), depth + 1);
            m->len = base;
            m->path[base] = '\0';
        }
        return st;
    }
    if (k == SDICT_KIND_LIST || k == SDICT_KIND_TUPLE) {
        for (size_t i = 0; st == SDICT_OK && i < sdict_seq_len(v); i++) {
            char num[32];
            size_t kl = (size_t)snprintf(num, sizeof num, "%zu", i);
            if (!path_push(m, num, kl, true))
                return nomem(m);
            st = tensors_rec(m, sdict_seq_item(v, i), depth + 1);
            m->len = base;
            m->path[base] = '\0';
        }
    }
    return st;
}

sdict_status sdict_object_tensors(sdict_value *v, sdict_value **out, sdict_error *err) {
    if (out)
        *out = NULL;
    if (!v || !out)
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "object_tensors: NULL argument");
    ms m;
    memset(&m, 0, sizeof m);
    m.doc = sdict__value_doc(v);
    m.err = err;
    m.out = sdict_dict_new(m.doc, true);
    sdict_status st = !m.out || !path_push(&m, "", 0, false) ? nomem(&m) : tensors_rec(&m, v, 0);
    sdict__free(m.path);
    if (st == SDICT_OK)
        *out = m.out;
    return st;
}

/*==================================================================================================
 MARK: Optimizer state_dict
==================================================================================================*/

/* tensor value -> parameter index, open addressing on the value's address */
typedef struct pmap {
    const sdict_value **keys;
    int64_t *idx;
    size_t cap; /* power of two */
} pmap;

static size_t pmap_slot(const pmap *p, const sdict_value *k) {
    uint64_t h = (uint64_t)(uintptr_t)k * 0x9e3779b97f4a7c15ull;
    size_t i = (size_t)(h >> 20) & (p->cap - 1);
    while (p->keys[i] && p->keys[i] != k)
        i = (i + 1) & (p->cap - 1);
    return i;
}

bool sdict_object_is_optimizer(const sdict_value *v) {
    if (sdict_value_kind(v) != SDICT_KIND_OBJECT || sdict_object_how(v) == SDICT_OBJECT_CLASS)
        return false;
    const sdict_value *a = attrs_of(v), *groups = sdict_dict_get(a, "param_groups");
    sdict_kind sk = sdict_value_kind(sdict_dict_get(a, "state"));
    if (sdict_value_kind(sdict_dict_get(a, "defaults")) != SDICT_KIND_DICT ||
        sdict_value_kind(groups) != SDICT_KIND_LIST ||
        (sk != SDICT_KIND_DICT && sk != SDICT_KIND_OBJECT))
        return false;
    for (size_t i = 0; i < sdict_seq_len(groups); i++) {
        const sdict_value *g = sdict_seq_item(groups, i);
        if (sdict_value_kind(g) != SDICT_KIND_DICT ||
            sdict_value_kind(sdict_dict_get(g, "params")) != SDICT_KIND_LIST)
            return false;
    }
    return true;
}

sdict_status sdict_object_optimizer_state_dict(sdict_value *opt, sdict_value **out,
                                               sdict_error *err) {
    if (out)
        *out = NULL;
    if (!opt || !out || !sdict_object_is_optimizer(opt))
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "optimizer_state_dict: not a "
                          "pickled torch.optim.Optimizer object");
    sdict_doc *doc = sdict__value_doc(opt);
    const sdict_value *a = attrs_of(opt), *groups = sdict_dict_get(a, "param_groups");
    const sdict_value *state = sdict_dict_get(a, "state");
    size_t np = 0;
    for (size_t i = 0; i < sdict_seq_len(groups); i++)
        np += sdict_seq_len(sdict_dict_get(sdict_seq_item(groups, i), "params"));
    pmap pm = {NULL, NULL, 16};
    while (pm.cap < 2 * np + 2)
        pm.cap *= 2;
    pm.keys = sdict__calloc(pm.cap, sizeof *pm.keys);
    pm.idx = sdict__calloc(pm.cap, sizeof *pm.idx);
    sdict_value *res = sdict_dict_new(doc, false), *pg = sdict_list_new(doc);
    sdict_value *ps = sdict_dict_new(doc, false);
    sdict_status st = SDICT_OK;
    if (!pm.keys || !pm.idx || !res || !pg || !ps) {
        st = sdict__err(err, SDICT_E_NOMEM, NULL, -1, "out of memory");
        goto done;
    }
    /* param_groups: each group's items but 'params', then 'params' as indices; a parameter
       keeps the index of its first appearance, positions count on over every group's list
       (torch/optim/optimizer.py state_dict, 1.13 and 2.x) */
    int64_t start = 0;
    for (size_t i = 0; st == SDICT_OK && i < sdict_seq_len(groups); i++) {
        const sdict_value *g = sdict_seq_item(groups, i), *params = sdict_dict_get(g, "params");
        sdict_value *packed = sdict_dict_new(doc, false), *idx = sdict_list_new(doc);
        if (!packed || !idx) {
            st = sdict__err(err, SDICT_E_NOMEM, NULL, -1, "out of memory");
            break;
        }
        for (size_t j = 0; j < sdict_dict_len(g); j++)
            if (!str_eq(sdict_dict_key(g, j), "params") &&
                sdict_dict_set(packed, sdict_dict_key(g, j), sdict_dict_val(g, j)))
                st = SDICT_E_NOMEM;
        for (size_t j = 0; st == SDICT_OK && j < sdict_seq_len(params); j++) {
            const sdict_value *p = sdict_seq_item(params, j);
            if (sdict_value_kind(p) != SDICT_KIND_TENSOR) {
                st = sdict__err(err, SDICT_E_UNSUPPORTED, NULL, -1, "optimizer: param_groups[%zu]"
                                "['params'][%zu] is a %s, not a tensor", i, j,
                                sdict_kind_name(sdict_value_kind(p)));
                break;
            }
            size_t s = pmap_slot(&pm, p);
            if (!pm.keys[s]) {
                pm.keys[s] = p;
                pm.idx[s] = start + (int64_t)j;
            }
            sdict_value *iv = sdict_int_new(doc, pm.idx[s]);
            if (!iv || sdict_seq_append(idx, iv))
                st = SDICT_E_NOMEM;
        }
        start += (int64_t)sdict_seq_len(params);
        if (st == SDICT_OK && (sdict_dict_set_str(packed, "params", idx) ||
                               sdict_seq_append(pg, packed)))
            st = SDICT_E_NOMEM;
    }
    /* state: {index of the parameter key (a tensor) or the key itself: value} */
    const sdict_value *items = sdict_value_kind(state) == SDICT_KIND_OBJECT
                                   ? sdict_object_items(state) : NULL;
    size_t n = items ? sdict_seq_len(items) : sdict_dict_len(state);
    for (size_t i = 0; st == SDICT_OK && i < n; i++) {
        sdict_value *k = items ? sdict_seq_item(sdict_seq_item(items, i), 0)
                               : sdict_dict_key(state, i);
        sdict_value *v = items ? sdict_seq_item(sdict_seq_item(items, i), 1)
                               : sdict_dict_val(state, i);
        if (sdict_value_kind(k) == SDICT_KIND_TENSOR) {
            size_t s = pmap_slot(&pm, k);
            if (!pm.keys[s]) {
                st = sdict__err(err, SDICT_E_FORMAT, NULL, -1, "optimizer: state entry %zu is "
                                "keyed by a tensor that is in no param group", i);
                break;
            }
            k = sdict_int_new(doc, pm.idx[s]);
        }
        if (!k || sdict_dict_set(ps, k, v))
            st = k ? sdict__err(err, SDICT_E_UNSUPPORTED, NULL, -1, "optimizer: state entry %zu "
                                "has a key no dict can hold (or repeats one)", i)
                   : SDICT_E_NOMEM;
    }
    if (st == SDICT_OK && (sdict_dict_set_str(res, "state", ps) ||
                           sdict_dict_set_str(res, "param_groups", pg)))
        st = SDICT_E_NOMEM;
    if (st == SDICT_E_NOMEM)
        sdict__err(err, SDICT_E_NOMEM, NULL, -1, "out of memory");
done:
    sdict__free(pm.keys);
    sdict__free(pm.idx);
    if (st == SDICT_OK)
        *out = res;
    return st;
}
