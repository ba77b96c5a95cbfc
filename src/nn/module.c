/*
 module.c - the module tree: construction, parameters and buffers, train/eval, state_dict,
 load_state_dict (torch 1.13's Module._load_from_state_dict and load_state_dict, message text
 included) and consume_prefix_in_state_dict_if_present.
*/
#include "nn_private.h"
#include "statedict_nn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

/* A C-contiguous tensor over a new zero-filled storage of its own (one reference, released
   with the module). */
sdict_status sdict_nn__tensor_alloc(sdict_tensor *t, sdict_dtype dtype, int32_t ndim,
                                    const int64_t *shape, int64_t *dims, sdict_error *err) {
    memset(t, 0, sizeof *t);
    if (ndim < 0 || ndim > SDICT_NN_MAX_DIMS || (ndim > 0 && (!shape || !dims)))
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "tensor: bad ndim %d", (int)ndim);
    int64_t n = 1;
    for (int32_t i = ndim - 1; i >= 0; i--) {
        if (shape[i] < 0)
            return sdict_nn__err(err, SDICT_E_INVALID_ARG, "tensor: negative size");
        dims[i] = shape[i];
        dims[ndim + i] = n;
        n *= shape[i] > 1 ? shape[i] : 1;
    }
    for (int32_t i = 0; i < ndim; i++)
        if (shape[i] == 0) n = 0;
    t->dtype = dtype;
    t->ndim = ndim;
    t->shape = ndim ? dims : NULL;
    t->stride = ndim ? dims + ndim : NULL;
    return sdict_storage_new((size_t)n * sdict_dtype_size(dtype), &t->storage, err);
}

/*==================================================================================================
 MARK: Construction and tree
==================================================================================================*/

static sdict_status forward_sequential(sdict_module *m, const sdict_act *x, sdict_act *y,
                                       sdict_error *err) {
    sdict_act cur;
    sdict_status st = sdict_act_copy(&cur, x, err);
    for (size_t i = 0; st == SDICT_OK && i < m->n_children; i++) {
        sdict_act next;
        st = sdict_module_forward(m->children[i], &cur, &next, err);
        sdict_act_free(&cur);
        if (st == SDICT_OK) cur = next;
    }
    if (st != SDICT_OK) {
        memset(y, 0, sizeof *y);
        return st;
    }
    *y = cur;
    return SDICT_OK;
}

sdict_module *sdict_module_new(const char *type_name, sdict_forward_fn forward, void *user) {
    sdict_module *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->type_name = dup_str(type_name ? type_name : "Module");
    if (!m->type_name) {
        free(m);
        return NULL;
    }
    m->type = SDICT_MOD_CUSTOM;
    m->training = true;
    m->version = 1;
    m->forward = forward;
    m->user = user;
    m->rng = 0x5DEECE66DULL;
    return m;
}

sdict_module *sdict_sequential_new(void) {
    sdict_module *m = sdict_module_new("Sequential", forward_sequential, NULL);
    if (m) m->type = SDICT_MOD_SEQUENTIAL;
    return m;
}

static void free_named(sdict_named_tensor *nt, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(nt[i].name);
        free(nt[i].dims);
        sdict_storage_release(nt[i].value.storage);
        sdict_storage_release(nt[i].grad.storage);
    }
    free(nt);
}

void sdict_module_free(sdict_module *m) {
    if (!m) return;
    for (size_t i = 0; i < m->n_children; i++) {
        sdict_module_free(m->children[i]);
        free(m->child_names[i]);
    }
    free(m->children);
    free(m->child_names);
    free_named(m->params, m->n_params);
    free_named(m->buffers, m->n_buffers);
    for (int i = 0; i < SDICT_MODULE_CACHE; i++) sdict_act_free(&m->cache[i]);
    free(m->type_name);
    free(m);
}

static bool local_name_taken(const sdict_module *m, const char *name) {
    for (size_t i = 0; i < m->n_params; i++)
        if (strcmp(m->params[i].name, name) == 0) return true;
    for (size_t i = 0; i < m->n_buffers; i++)
        if (strcmp(m->buffers[i].name, name) == 0) return true;
    for (size_t i = 0; i < m->n_children; i++)
        if (strcmp(m->child_names[i], name) == 0) return true;
    return false;
}

sdict_status sdict_module_add(sdict_module *parent, const char *name, sdict_module *child,
                              sdict_error *err) {
    sdict_status st = SDICT_OK;
    if (!parent || !child || !name || !*name || strchr(name, '.') ||
        local_name_taken(parent, name)) {
        st = sdict_nn__err(err, SDICT_E_INVALID_ARG, "add_module: bad or duplicate name \"%s\"",
                           name ? name : "(null)");
        goto fail;
    }
    size_t n = parent->n_children + 1;
    sdict_module **c = realloc(parent->children, n * sizeof *c);
    if (c) parent->children = c;
    char **names = realloc(parent->child_names, n * sizeof *names);
    if (names) parent->child_names = names;
    char *nm = dup_str(name);
    if (!c || !names || !nm) {
        free(nm);
        st = sdict_nn__err(err, SDICT_E_NOMEM, "add_module: out of memory");
        goto fail;
    }
    parent->children[n - 1] = child;
    parent->child_names[n - 1] = nm;
    parent->n_children = n;
    return SDICT_OK;
fail:
    sdict_module_free(child);
    return st;
}

sdict_module *sdict_module_child(const sdict_module *m, const char *name) {
    for (size_t i = 0; m && i < m->n_children; i++)
        if (strcmp(m->child_names[i], name) == 0) return m->children[i];
    return NULL;
}

sdict_module *sdict_module_find(const sdict_module *m, const char *path) {
    while (m && *path) {
        const char *dot = strchr(path, '.');
        size_t len = dot ? (size_t)(dot - path) : strlen(path);
        const sdict_module *next = NULL;
        for (size_t i = 0; i < m->n_children; i++)
            if (strlen(m->child_names[i]) == len && memcmp(m->child_names[i], path, len) == 0)
                next = m->children[i];
        m = next;
        path += len + (dot ? 1 : 0);
    }
    return (sdict_module *)m;
}

sdict_named_tensor *sdict_module_tensor(const sdict_module *m, const char *key) {
    const char *dot = strrchr(key, '.');
    const sdict_module *owner = m;
    const char *leaf = key;
    if (dot) {
        char path[512];
        size_t len = (size_t)(dot - key);
        if (len >= sizeof path) return NULL;
        memcpy(path, key, len);
        path[len] = '\0';
        owner = sdict_module_find(m, path);
        leaf = dot + 1;
    }
    for (size_t i = 0; owner && i < owner->n_params; i++)
        if (strcmp(owner->params[i].name, leaf) == 0) return &owner->params[i];
    for (size_t i = 0; owner && i < owner->n_buffers; i++)
        if (strcmp(owner->buffers[i].name, leaf) == 0) return &owner->buffers[i];
    return NULL;
}

sdict_status sdict_module_register(sdict_module *m, const char *name, bool is_buffer,
                                   sdict_dtype dtype, int32_t ndim, const int64_t *shape,
                                   sdict_named_tensor **out, sdict_error *err) {
    if (out) *out = NULL;
    if (!m || !name || !*name || strchr(name, '.') || local_name_taken(m, name))
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "register: bad or duplicate name \"%s\"",
                             name ? name : "(null)");
    sdict_named_tensor nt;
    memset(&nt, 0, sizeof nt);
    nt.persistent = true;
    nt.name = dup_str(name);
    /* value and grad share one shape and stride block, owned by the entry */
    if (ndim > 0 && ndim <= SDICT_NN_MAX_DIMS)
        nt.dims = malloc(2 * (size_t)ndim * sizeof *nt.dims);
    if (!nt.name || (ndim > 0 && ndim <= SDICT_NN_MAX_DIMS && !nt.dims)) {
        free(nt.name);
        free(nt.dims);
        return sdict_nn__err(err, SDICT_E_NOMEM, "register: out of memory");
    }
    sdict_status st = sdict_nn__tensor_alloc(&nt.value, is_buffer ? dtype : SDICT_FLOAT32, ndim,
                                             shape, nt.dims, err);
    if (st == SDICT_OK && !is_buffer)
        st = sdict_nn__tensor_alloc(&nt.grad, SDICT_FLOAT32, ndim, shape, nt.dims, err);
    size_t *count = is_buffer ? &m->n_buffers : &m->n_params;
    sdict_named_tensor **arr = is_buffer ? &m->buffers : &m->params;
    sdict_named_tensor *grown = NULL;
    if (st == SDICT_OK) {
        grown = realloc(*arr, (*count + 1) * sizeof *grown);
        if (!grown) st = sdict_nn__err(err, SDICT_E_NOMEM, "register: out of memory");
    }
    if (st != SDICT_OK) {
        free(nt.name);
        free(nt.dims);
        sdict_storage_release(nt.value.storage);
        sdict_storage_release(nt.grad.storage);
        return st;
    }
    *arr = grown;
    grown[*count] = nt;
    if (out) *out = &grown[*count];
    (*count)++;
    return SDICT_OK;
}

void sdict_module_train(sdict_module *m, bool mode) {
    if (!m) return;
    m->training = mode;
    for (size_t i = 0; i < m->n_children; i++) sdict_module_train(m->children[i], mode);
}

void sdict_module_eval(sdict_module *m) { sdict_module_train(m, false); }

sdict_status sdict_module_forward(sdict_module *m, const sdict_act *x, sdict_act *y,
                                  sdict_error *err) {
    memset(y, 0, sizeof *y);
    if (!m || !m->forward || !x)
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "forward: no module or input");
    return m->forward(m, x, y, err);
}

void sdict_module_zero_grad(sdict_module *m) {
    if (!m) return;
    for (size_t i = 0; i < m->n_params; i++) {
        sdict_tensor *g = &m->params[i].grad;
        if (g->storage) memset(sdict_storage_data(g->storage), 0, sdict_storage_nbytes(g->storage));
    }
    for (size_t i = 0; i < m->n_children; i++) sdict_module_zero_grad(m->children[i]);
}

static void each_param(sdict_module *m, char *prefix, size_t plen, size_t cap,
                       void (*fn)(void *, const char *, sdict_named_tensor *), void *ctx) {
    for (size_t i = 0; i < m->n_params; i++) {
        snprintf(prefix + plen, cap - plen, "%s", m->params[i].name);
        fn(ctx, prefix, &m->params[i]);
    }
    for (size_t i = 0; i < m->n_children; i++) {
        int k = snprintf(prefix + plen, cap - plen, "%s.", m->child_names[i]);
        size_t nl = plen + (size_t)(k > 0 ? k : 0);
        if (nl >= cap) nl = cap - 1;
        each_param(m->children[i], prefix, nl, cap, fn, ctx);
    }
    prefix[plen] = '\0';
}

void sdict_module_each_param(sdict_module *m,
                             void (*fn)(void *ctx, const char *key, sdict_named_tensor *nt),
                             void *ctx) {
    char prefix[1024] = "";
    if (m && fn) each_param(m, prefix, 0, sizeof prefix, fn, ctx);
}

/*==================================================================================================
 MARK: state_dict
==================================================================================================*/

/* Growable text buffer for dotted prefixes and messages. */
typedef struct strbuf {
    char *p;
    size_t len, cap;
    bool oom;
} strbuf;

static void sb_putn(strbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(strbuf *b, const char *s) { sb_putn(b, s, strlen(s)); }

static void sb_printf_i64(strbuf *b, int64_t v) {
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%lld", (long long)v);
    sb_puts(b, tmp);
}

static sdict_status add_tensor_entry(sdict_doc *doc, sdict_value *dict, const char *key,
                                     const sdict_named_tensor *nt, bool param, bool keep_vars,
                                     sdict_error *err) {
    sdict_tensor t = nt->value;
    t.is_parameter = param && keep_vars;
    t.requires_grad = param && keep_vars;
    sdict_value *v = NULL;
    sdict_status st = sdict_tensor_new(doc, &t, &v, err);
    if (st != SDICT_OK) return st;
    st = sdict_dict_set_str(dict, key, v);
    if (st != SDICT_OK) return sdict_nn__err(err, st, "state_dict: cannot insert \"%s\"", key);
    return SDICT_OK;
}

/* version_key: the one "version" str of every _metadata entry (torch's entries share the
   keyword's interned str, which pickles as one object). */
static sdict_status state_dict_rec(const sdict_module *m, sdict_doc *doc, sdict_value *dict,
                                   sdict_value *meta, sdict_value *version_key, strbuf *prefix,
                                   bool keep_vars, sdict_error *err) {
    size_t plen = prefix->len;
    /* _metadata key: the prefix without its trailing dot ("" for the root). */
    char *mkey = dup_str(plen ? prefix->p : "");
    if (!mkey) return sdict_nn__err(err, SDICT_E_NOMEM, "state_dict: out of memory");
    if (plen) mkey[plen - 1] = '\0';
    sdict_value *ver = sdict_dict_new(doc, false);
    sdict_value *vv = sdict_int_new(doc, m->version);
    sdict_status st = (ver && vv) ? sdict_dict_set(ver, version_key, vv) : SDICT_E_NOMEM;
    if (st == SDICT_OK) st = sdict_dict_set_str(meta, mkey, ver);
    free(mkey);
    if (st != SDICT_OK) return sdict_nn__err(err, st, "state_dict: cannot build _metadata");

    for (int pass = 0; pass < 2; pass++) {
        const sdict_named_tensor *arr = pass == 0 ? m->params : m->buffers;
        size_t n = pass == 0 ? m->n_params : m->n_buffers;
        for (size_t i = 0; i < n; i++) {
            if (!arr[i].persistent) continue;
            sb_puts(prefix, arr[i].name);
            if (prefix->oom) return sdict_nn__err(err, SDICT_E_NOMEM, "state_dict: out of memory");
            st = add_tensor_entry(doc, dict, prefix->p, &arr[i], pass == 0, keep_vars, err);
            prefix->len = plen;
            prefix->p[plen] = '\0';
            if (st != SDICT_OK) return st;
        }
    }
    for (size_t i = 0; i < m->n_children; i++) {
        sb_puts(prefix, m->child_names[i]);
        sb_puts(prefix, ".");
        if (prefix->oom) return sdict_nn__err(err, SDICT_E_NOMEM, "state_dict: out of memory");
        st = state_dict_rec(m->children[i], doc, dict, meta, version_key, prefix, keep_vars, err);
        prefix->len = plen;
        prefix->p[plen] = '\0';
        if (st != SDICT_OK) return st;
    }
    return SDICT_OK;
}

sdict_status sdict_module_state_dict(const sdict_module *m, sdict_doc *doc, bool keep_vars,
                                     sdict_value **out, sdict_error *err) {
    *out = NULL;
    if (!m || !doc) return sdict_nn__err(err, SDICT_E_INVALID_ARG, "state_dict: NULL argument");
    sdict_value *dict = sdict_dict_new(doc, true);
    sdict_value *meta = sdict_dict_new(doc, true);
    sdict_value *attrs = sdict_dict_new(doc, false);
    sdict_value *version_key = sdict_str_new(doc, "version", 7);
    if (!dict || !meta || !attrs || !version_key)
        return sdict_nn__err(err, SDICT_E_NOMEM, "state_dict: out of memory");
    strbuf prefix = {0};
    sb_puts(&prefix, "");
    if (prefix.oom) return sdict_nn__err(err, SDICT_E_NOMEM, "state_dict: out of memory");
    sdict_status st = state_dict_rec(m, doc, dict, meta, version_key, &prefix, keep_vars, err);
    free(prefix.p);
    if (st != SDICT_OK) return st;
    st = sdict_dict_set_str(attrs, "_metadata", meta);
    if (st == SDICT_OK) st = sdict_dict_set_attrs(dict, attrs);
    if (st != SDICT_OK) return sdict_nn__err(err, st, "state_dict: cannot attach _metadata");
    *out = dict;
    return SDICT_OK;
}

/*==================================================================================================
 MARK: load_state_dict
==================================================================================================*/

typedef struct keylist {
    char **items;
    size_t n;
    bool oom;
} keylist;

static void kl_add(keylist *k, const char *s) {
    if (k->oom) return;
    char **p = realloc(k->items, (k->n + 1) * sizeof *p);
    char *d = dup_str(s);
    if (!p || !d) {
        if (p) k->items = p;
        free(d);
        k->oom = true;
        return;
    }
    k->items = p;
    k->items[k->n++] = d;
}

static void kl_free(keylist *k) {
    for (size_t i = 0; i < k->n; i++) free(k->items[i]);
    free(k->items);
    memset(k, 0, sizeof *k);
}

/* Growable array of size-mismatch records. */
typedef struct mismatchlist {
    sdict_size_mismatch *items;
    size_t n;
    bool oom;
} mismatchlist;

static int64_t *dup_shape(const int64_t *shape, int32_t ndim, bool *oom) {
    if (ndim <= 0) return NULL;
    int64_t *p = malloc((size_t)ndim * sizeof *p);
    if (!p) *oom = true;
    else memcpy(p, shape, (size_t)ndim * sizeof *p);
    return p;
}

static void ml_add(mismatchlist *l, const char *key, const sdict_tensor *in,
                   const sdict_tensor *cur) {
    if (l->oom) return;
    sdict_size_mismatch *p = realloc(l->items, (l->n + 1) * sizeof *p);
    if (!p) {
        l->oom = true;
        return;
    }
    l->items = p;
    sdict_size_mismatch e;
    memset(&e, 0, sizeof e);
    bool oom = false;
    e.key = dup_str(key);
    e.checkpoint_ndim = in->ndim;
    e.model_ndim = cur->ndim;
    e.checkpoint_shape = dup_shape(in->shape, in->ndim, &oom);
    e.model_shape = dup_shape(cur->shape, cur->ndim, &oom);
    if (!e.key || oom) {
        free(e.key);
        free(e.checkpoint_shape);
        free(e.model_shape);
        l->oom = true;
        return;
    }
    l->items[l->n++] = e;
}

static void mismatch_free(sdict_size_mismatch *items, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(items[i].key);
        free(items[i].checkpoint_shape);
        free(items[i].model_shape);
    }
    free(items);
}

typedef struct load_ctx {
    const sdict_value *sd;
    const sdict_value *meta;   /* the _metadata OrderedDict or NULL */
    bool strict;
    bool skip_mismatch;        /* SDICT_LOAD_SD_SKIP_SIZE_MISMATCH */
    keylist missing, unexpected;
    mismatchlist mismatch;
    strbuf msgs;               /* error_msgs joined by "\n\t", in torch's order */
    size_t n_msgs;
    sdict_status worst;        /* first-class status of the messages collected */
    sdict_status fatal;        /* NOMEM / conversion failure that stops the walk */
} load_ctx;

static void add_msg(load_ctx *c, sdict_status code, const char *text) {
    if (c->n_msgs++) sb_puts(&c->msgs, "\n\t");
    sb_puts(&c->msgs, text);
    /* SHAPE outranks INVALID_ARG (non-tensor values). */
    if (c->worst == SDICT_OK || code == SDICT_E_SHAPE) c->worst = code;
}

static void shape_text(strbuf *b, const int64_t *shape, int32_t ndim) {
    sb_puts(b, "torch.Size([");
    for (int32_t i = 0; i < ndim; i++) {
        if (i) sb_puts(b, ", ");
        sb_printf_i64(b, shape[i]);
    }
    sb_puts(b, "])");
}

/* Python's type(x) repr for the "expected torch.Tensor" message. */
static const char *py_type_repr(const sdict_value *v) {
    switch (sdict_value_kind(v)) {
    case SDICT_KIND_NONE: return "<class 'NoneType'>";
    case SDICT_KIND_BOOL: return "<class 'bool'>";
    case SDICT_KIND_INT: return "<class 'int'>";
    case SDICT_KIND_FLOAT: return "<class 'float'>";
    case SDICT_KIND_STR: return "<class 'str'>";
    case SDICT_KIND_BYTES: return "<class 'bytes'>";
    case SDICT_KIND_LIST: return "<class 'list'>";
    case SDICT_KIND_TUPLE: return "<class 'tuple'>";
    case SDICT_KIND_SET: return "<class 'set'>";
    case SDICT_KIND_DICT:
        return sdict_dict_is_ordered(v) ? "<class 'collections.OrderedDict'>" : "<class 'dict'>";
    case SDICT_KIND_DTYPE: return "<class 'torch.dtype'>";
    default: return "<class 'object'>";
    }
}

static void load_one(load_ctx *c, const char *key, sdict_named_tensor *nt, sdict_error *err) {
    const sdict_value *v = sdict_dict_get(c->sd, key);
    if (!v) {
        /* torch passes strict=True to every _load_from_state_dict and decides only at the
           end whether the lists are an error, so they are collected in both modes. */
        kl_add(&c->missing, key);
        return;
    }
    const sdict_tensor *in = sdict_value_tensor(v);
    if (!in) {
        strbuf b = {0};
        sb_puts(&b, "While copying the parameter named \"");
        sb_puts(&b, key);
        sb_puts(&b, "\", expected torch.Tensor or Tensor-like object from checkpoint but received ");
        sb_puts(&b, py_type_repr(v));
        if (!b.oom) add_msg(c, SDICT_E_INVALID_ARG, b.p);
        else c->fatal = SDICT_E_NOMEM;
        free(b.p);
        return;
    }
    const sdict_tensor *cur = &nt->value;
    /* torch accepts a 1-element 1-D tensor for a 0-dim one (0.3 compatibility): input[0]. */
    bool scalar_compat = cur->ndim == 0 && in->ndim == 1 && in->shape[0] >= 1;
    bool same = scalar_compat ||
                (in->ndim == cur->ndim &&
                 (in->ndim == 0 ||
                  memcmp(in->shape, cur->shape, sizeof(int64_t) * (size_t)in->ndim) == 0));
    if (!same) {
        ml_add(&c->mismatch, key, in, cur);
        if (c->skip_mismatch) return;
        strbuf b = {0};
        sb_puts(&b, "size mismatch for ");
        sb_puts(&b, key);
        sb_puts(&b, ": copying a param with shape ");
        shape_text(&b, in->shape, in->ndim);
        sb_puts(&b, " from checkpoint, the shape in current model is ");
        shape_text(&b, cur->shape, cur->ndim);
        sb_puts(&b, ".");
        if (!b.oom) add_msg(c, SDICT_E_SHAPE, b.p);
        else c->fatal = SDICT_E_NOMEM;
        free(b.p);
        return;
    }
    sdict_tensor src = *in;
    if (scalar_compat) src.ndim = 0; /* element 0 of the 1-D tensor */
    size_t nbytes = sdict_tensor_nbytes(cur);
    void *dst = sdict_storage_data(cur->storage);
    if (nbytes == 0) return;
    sdict_status st = sdict_tensor_copy_to(&src, cur->dtype, dst, nbytes, err);
    if (st != SDICT_OK && c->fatal == SDICT_OK) c->fatal = st;
}

/* A parameter or persistent buffer of m itself (torch's local_state) named name[0..len). */
static bool local_tensor_has(const sdict_module *m, const char *name, size_t len) {
    for (size_t i = 0; i < m->n_params; i++)
        if (strlen(m->params[i].name) == len && memcmp(m->params[i].name, name, len) == 0)
            return true;
    for (size_t i = 0; i < m->n_buffers; i++)
        if (m->buffers[i].persistent && strlen(m->buffers[i].name) == len &&
            memcmp(m->buffers[i].name, name, len) == 0)
            return true;
    return false;
}

/* A child of m named name[0..len). */
static bool local_child_has(const sdict_module *m, const char *name, size_t len) {
    for (size_t i = 0; i < m->n_children; i++)
        if (strlen(m->child_names[i]) == len && memcmp(m->child_names[i], name, len) == 0)
            return true;
    return false;
}

static bool is_batchnorm(const sdict_module *m) {
    return m->type == SDICT_MOD_BATCHNORM1D || m->type == SDICT_MOD_BATCHNORM2D;
}

static void load_rec(load_ctx *c, sdict_module *m, strbuf *prefix, sdict_error *err) {
    size_t plen = prefix->len;
    /* BatchNorm's _load_from_state_dict: files from before _version 2 lack
       num_batches_tracked; it is taken as 0 when the metadata version is missing or < 2. */
    bool synth_nbt = false;
    if (is_batchnorm(m) && m->cfg.track_running_stats) {
        int64_t version = -1;
        if (c->meta) {
            char *mkey = dup_str(prefix->p);
            if (!mkey) {
                c->fatal = SDICT_E_NOMEM;
                return;
            }
            if (plen) mkey[plen - 1] = '\0';
            const sdict_value *lm = sdict_dict_get(c->meta, mkey);
            free(mkey);
            const sdict_value *vv = lm ? sdict_dict_get(lm, "version") : NULL;
            if (vv && sdict_int_get(vv, &version) != SDICT_OK) version = -1;
        }
        synth_nbt = version < 2;
    }
    for (int pass = 0; pass < 2 && c->fatal == SDICT_OK; pass++) {
        sdict_named_tensor *arr = pass == 0 ? m->params : m->buffers;
        size_t n = pass == 0 ? m->n_params : m->n_buffers;
        for (size_t i = 0; i < n && c->fatal == SDICT_OK; i++) {
            if (!arr[i].persistent) continue;
            sb_puts(prefix, arr[i].name);
            if (prefix->oom) {
                c->fatal = SDICT_E_NOMEM;
                return;
            }
            if (synth_nbt && pass == 1 && strcmp(arr[i].name, "num_batches_tracked") == 0 &&
                !sdict_dict_get(c->sd, prefix->p)) {
                *(int64_t *)sdict_storage_data(arr[i].value.storage) = 0;
            } else {
                load_one(c, prefix->p, &arr[i], err);
            }
            prefix->len = plen;
            prefix->p[plen] = '\0';
        }
    }
    {
        /* torch: no module here has extra state, so prefix + "_extra_state" is reported
           first, then every other key under the prefix that names nothing local. */
        size_t n = sdict_dict_len(c->sd);
        sb_puts(prefix, "_extra_state");
        if (prefix->oom) {
            c->fatal = SDICT_E_NOMEM;
            return;
        }
        if (sdict_dict_get(c->sd, prefix->p)) kl_add(&c->unexpected, prefix->p);
        prefix->len = plen;
        prefix->p[plen] = '\0';
        for (size_t i = 0; i < n; i++) {
            size_t klen = 0;
            const char *k = sdict_str_get(sdict_dict_key(c->sd, i), &klen);
            if (!k || klen < plen || memcmp(k, prefix->p, plen) != 0) continue;
            const char *rest = k + plen;
            if (strcmp(rest, "_extra_state") == 0) continue;
            /* torch 2.x's rule ("must be Module if it has attributes"): a key with more
               components needs a child for its first one, a one-component key a parameter
               or buffer. torch 1.13 accepted either for both, missing "fc.weight.sub". */
            const char *dot = strchr(rest, '.');
            if (dot ? !local_child_has(m, rest, (size_t)(dot - rest))
                    : !local_tensor_has(m, rest, strlen(rest)))
                kl_add(&c->unexpected, k);
        }
    }
    for (size_t i = 0; i < m->n_children && c->fatal == SDICT_OK; i++) {
        sb_puts(prefix, m->child_names[i]);
        sb_puts(prefix, ".");
        if (prefix->oom) {
            c->fatal = SDICT_E_NOMEM;
            return;
        }
        load_rec(c, m->children[i], prefix, err);
        prefix->len = plen;
        prefix->p[plen] = '\0';
    }
}

void sdict_load_result_free(sdict_load_result *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n_missing; i++) free(r->missing[i]);
    for (size_t i = 0; i < r->n_unexpected; i++) free(r->unexpected[i]);
    free(r->missing);
    free(r->unexpected);
    free(r->message);
    mismatch_free(r->size_mismatch, r->n_size_mismatch);
    memset(r, 0, sizeof *r);
}

static void quoted_list(strbuf *b, const char *head, const keylist *k) {
    sb_puts(b, head);
    for (size_t i = 0; i < k->n; i++) {
        if (i) sb_puts(b, ", ");
        sb_puts(b, "\"");
        sb_puts(b, k->items[i]);
        sb_puts(b, "\"");
    }
    sb_puts(b, ". ");
}

sdict_status sdict_module_load_state_dict(sdict_module *m, const sdict_value *state_dict,
                                          bool strict, sdict_load_result *result,
                                          sdict_error *err) {
    return sdict_module_load_state_dict_ex(m, state_dict, strict, 0, result, err);
}

sdict_status sdict_module_load_state_dict_ex(sdict_module *m, const sdict_value *state_dict,
                                             bool strict, unsigned flags,
                                             sdict_load_result *result, sdict_error *err) {
    if (result) memset(result, 0, sizeof *result);
    if (flags & ~SDICT_LOAD_SD_SKIP_SIZE_MISMATCH)
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "load_state_dict: unknown flags 0x%x",
                             flags & ~SDICT_LOAD_SD_SKIP_SIZE_MISMATCH);
    if (!m || sdict_value_kind(state_dict) != SDICT_KIND_DICT)
        return sdict_nn__err(err, SDICT_E_INVALID_ARG,
                             "load_state_dict: expected a dict, got %s",
                             sdict_kind_name(sdict_value_kind(state_dict)));
    load_ctx c;
    memset(&c, 0, sizeof c);
    c.sd = state_dict;
    c.strict = strict;
    c.skip_mismatch = (flags & SDICT_LOAD_SD_SKIP_SIZE_MISMATCH) != 0;
    const sdict_value *attrs = sdict_dict_attrs(state_dict);
    c.meta = attrs ? sdict_dict_get(attrs, "_metadata") : NULL;
    if (c.meta && sdict_value_kind(c.meta) != SDICT_KIND_DICT) c.meta = NULL;

    strbuf prefix = {0};
    sb_puts(&prefix, "");
    if (prefix.oom) c.fatal = SDICT_E_NOMEM;
    else load_rec(&c, m, &prefix, err);
    free(prefix.p);
    if (c.missing.oom || c.unexpected.oom || c.msgs.oom || c.mismatch.oom)
        c.fatal = SDICT_E_NOMEM;

    sdict_status st = c.fatal;
    strbuf full = {0};
    bool key_errors = strict && (c.missing.n || c.unexpected.n);
    if (st == SDICT_OK && (c.n_msgs || key_errors)) {
        /* torch inserts "Unexpected" then "Missing" at index 0, so Missing comes first. */
        sb_puts(&full, "Error(s) in loading state_dict for ");
        sb_puts(&full, m->type_name);
        sb_puts(&full, ":\n\t");
        bool first = true;
        if (strict && c.missing.n) {
            quoted_list(&full, "Missing key(s) in state_dict: ", &c.missing);
            first = false;
        }
        if (strict && c.unexpected.n) {
            if (!first) sb_puts(&full, "\n\t");
            quoted_list(&full, "Unexpected key(s) in state_dict: ", &c.unexpected);
            first = false;
        }
        if (c.n_msgs) {
            if (!first) sb_puts(&full, "\n\t");
            sb_puts(&full, c.msgs.p);
        }
        st = c.worst != SDICT_OK ? c.worst : SDICT_E_NOT_FOUND;
        if (full.oom) {
            st = sdict_nn__err(err, SDICT_E_NOMEM, "load_state_dict: out of memory");
        } else {
            sdict_nn__err(err, st, "%s", full.p);
        }
    } else if (st == SDICT_E_NOMEM) {
        sdict_nn__err(err, st, "load_state_dict: out of memory");
    }
    if (result && !full.oom && c.fatal == SDICT_OK) {
        result->missing = c.missing.items;
        result->n_missing = c.missing.n;
        result->unexpected = c.unexpected.items;
        result->n_unexpected = c.unexpected.n;
        result->message = full.p;
        result->size_mismatch = c.mismatch.items;
        result->n_size_mismatch = c.mismatch.n;
        memset(&c.missing, 0, sizeof c.missing);
        memset(&c.unexpected, 0, sizeof c.unexpected);
        memset(&c.mismatch, 0, sizeof c.mismatch);
        full.p = NULL;
    }
    free(full.p);
    mismatch_free(c.mismatch.items, c.mismatch.n);
    free(c.msgs.p);
    kl_free(&c.missing);
    kl_free(&c.unexpected);
    return st;
}

/*==================================================================================================
 MARK: consume_prefix_in_state_dict_if_present
==================================================================================================*/

static int cmp_cstr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

sdict_status sdict_state_dict_consume_prefix(sdict_doc *doc, const sdict_value *sd,
                                             const char *prefix, sdict_value **out,
                                             sdict_error *err) {
    *out = NULL;
    if (!doc || !prefix || sdict_value_kind(sd) != SDICT_KIND_DICT)
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "consume_prefix: not a dict");
    size_t plen = strlen(prefix);
    size_t n = sdict_dict_len(sd);
    sdict_value *res = sdict_dict_new(doc, sdict_dict_is_ordered(sd));
    const char **pref = calloc(n ? n : 1, sizeof *pref);
    if (!res || !pref) {
        free(pref);
        return sdict_nn__err(err, SDICT_E_NOMEM, "consume_prefix: out of memory");
    }
    sdict_status st = SDICT_OK;
    size_t np = 0;
    /* Keys without the prefix keep their places; prefixed ones are popped and re-inserted
       in sorted order, as torch's loop over sorted(keys) does. */
    for (size_t i = 0; i < n && st == SDICT_OK; i++) {
        sdict_value *k = sdict_dict_key(sd, i);
        const char *ks = sdict_str_get(k, NULL);
        if (ks && strncmp(ks, prefix, plen) == 0) pref[np++] = ks;
        else st = sdict_dict_set(res, k, sdict_dict_val(sd, i));
    }
    qsort(pref, np, sizeof *pref, cmp_cstr);
    for (size_t i = 0; i < np && st == SDICT_OK; i++)
        st = sdict_dict_set_str(res, pref[i] + plen, sdict_dict_get(sd, pref[i]));
    free(pref);

    const sdict_value *attrs = sdict_dict_attrs(sd);
    const sdict_value *meta = attrs ? sdict_dict_get(attrs, "_metadata") : NULL;
    if (st == SDICT_OK && attrs) {
        sdict_value *nattrs = sdict_dict_new(doc, sdict_dict_is_ordered(attrs));
        if (!nattrs) st = SDICT_E_NOMEM;
        for (size_t i = 0; st == SDICT_OK && i < sdict_dict_len(attrs); i++) {
            sdict_value *k = sdict_dict_key(attrs, i);
            sdict_value *v = sdict_dict_val(attrs, i);
            if (v == meta && sdict_value_kind(meta) == SDICT_KIND_DICT) {
                sdict_value *nm = sdict_dict_new(doc, sdict_dict_is_ordered(meta));
                if (!nm) st = SDICT_E_NOMEM;
                /* metadata prefixes have no trailing dot: "module" and "module.fc" */
                for (size_t j = 0; st == SDICT_OK && j < sdict_dict_len(meta); j++) {
                    sdict_value *mk = sdict_dict_key(meta, j);
                    const char *ms = sdict_str_get(mk, NULL);
                    size_t mlen = ms ? strlen(ms) : 0;
                    if (ms && mlen > 0 && plen > 0 && mlen >= plen - 1 &&
                        strncmp(ms, prefix, plen - 1) == 0 &&
                        (mlen == plen - 1 || ms[plen - 1] == prefix[plen - 1]))
                        st = sdict_dict_set_str(nm, mlen == plen - 1 ? "" : ms + plen,
                                                sdict_dict_val(meta, j));
                    else
                        st = sdict_dict_set(nm, mk, sdict_dict_val(meta, j));
                }
                v = nm;
            }
            if (st == SDICT_OK) st = sdict_dict_set(nattrs, k, v);
        }
        if (st == SDICT_OK) st = sdict_dict_set_attrs(res, nattrs);
    }
    if (st != SDICT_OK) return sdict_nn__err(err, st, "consume_prefix: cannot build result");
    *out = res;
    return SDICT_OK;
}
