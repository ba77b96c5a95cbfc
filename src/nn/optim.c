/*
 optim.c - SGD, Adam and AdamW with torch 1.13's single-tensor update rules, and the optimizer
 state_dict / load_state_dict in PyTorch's layout (FORMAT.md 6.2).

 Arithmetic follows torch's order of operations on float32 tensors with Python-float scalars:
 the scalars (bias corrections, step sizes) are computed in double as Python does, element
 math is float32, so C and torch agree to rounding (tests use 1e-5 relative).
*/
#include "nn_private.h"
#include "statedict_optim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


/* Per-parameter state. `has` mirrors torch's "state[p] is not empty": it becomes true at the
   first step (SGD with momentum 0 then holds momentum_buffer=None, i.e. buf == NULL). */
typedef struct pstate {
    bool has;
    float step;                         /* Adam/AdamW: torch keeps it as a float32 tensor */
    float *buf;                         /* SGD momentum_buffer */
    float *exp_avg, *exp_avg_sq, *max_exp_avg_sq;
} pstate;

typedef struct group {
    sdict_optim_hparams hp;
    size_t first, count;                /* parameter indices [first, first + count) */
    sdict_value *kept;                  /* the loaded group dict (in kept_doc), or NULL */
} group;

struct sdict_optim {
    sdict_optim_kind kind;
    sdict_optim_layout layout;
    sdict_doc *kept_doc;                /* copies of loaded param_groups, see load_state_dict */
    size_t n_groups;
    group *groups;
    size_t n_params;
    sdict_optim_param *params;
    pstate *state;
};

static void pstate_free(pstate *s) {
    free(s->buf);
    free(s->exp_avg);
    free(s->exp_avg_sq);
    free(s->max_exp_avg_sq);
    memset(s, 0, sizeof *s);
}

sdict_optim_hparams sdict_optim_defaults(sdict_optim_kind kind) {
    sdict_optim_hparams h;
    memset(&h, 0, sizeof h);
    h.beta1 = 0.9;
    h.beta2 = 0.999;
    h.eps = 1e-8;
    if (kind == SDICT_OPTIM_SGD) h.lr = 0.01;
    else h.lr = 1e-3;
    if (kind == SDICT_OPTIM_ADAMW) {
        h.weight_decay = 1e-2;
        h.decoupled_weight_decay = true;
    }
    return h;
}

sdict_optim *sdict_optim_new(sdict_optim_kind kind) {
    if (kind != SDICT_OPTIM_SGD && kind != SDICT_OPTIM_ADAM && kind != SDICT_OPTIM_ADAMW)
        return NULL;
    sdict_optim *o = calloc(1, sizeof *o);
    if (o) o->kind = kind;
    return o;
}

void sdict_optim_free(sdict_optim *o) {
    if (!o) return;
    for (size_t i = 0; i < o->n_params; i++) pstate_free(&o->state[i]);
    free(o->state);
    free(o->params);
    free(o->groups);
    sdict_doc_free(o->kept_doc);
    free(o);
}

sdict_optim_kind sdict_optim_get_kind(const sdict_optim *o) { return o->kind; }
sdict_optim_layout sdict_optim_get_layout(const sdict_optim *o) { return o->layout; }
sdict_status sdict_optim_set_layout(sdict_optim *o, sdict_optim_layout layout, sdict_error *err) {
    if (!o || layout < SDICT_OPTIM_LAYOUT_TORCH_1_13 || layout > SDICT_OPTIM_LAYOUT_TORCH_2_14)
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "optim: invalid state_dict layout");
    o->layout = layout;
    return SDICT_OK;
}
size_t sdict_optim_n_groups(const sdict_optim *o) { return o ? o->n_groups : 0; }
sdict_optim_hparams *sdict_optim_group(sdict_optim *o, size_t i) {
    return o && i < o->n_groups ? &o->groups[i].hp : NULL;
}

sdict_status sdict_optim_layout_from_name(const char *name, sdict_optim_layout *out,
                                          sdict_error *err) {
    static const char *const names[] = {"1.13", "2.6", "2.14"};
    for (int i = 0; name && out && i < 3; i++)
        if (strcmp(name, names[i]) == 0) {
            *out = (sdict_optim_layout)i;
            return SDICT_OK;
        }
    return sdict_nn__err(err, SDICT_E_INVALID_ARG, "unknown torch layout '%s' (1.13, 2.6, 2.14)",
                         name ? name : "(null)");
}

/* Python's str() of a float: the shortest text that reads back, with ".0" when integral. */
typedef struct pyfloat { char s[40]; } pyfloat;
static pyfloat pyf(double d) {
    pyfloat r;
    int p = 1;
    for (; p < 17; p++) {
        snprintf(r.s, sizeof r.s, "%.*g", p, d);
        if (strtod(r.s, NULL) == d) break;
    }
    if (p == 17) snprintf(r.s, sizeof r.s, "%.17g", d);
    if (!strpbrk(r.s, ".eni")) strcat(r.s, ".0");
    return r;
}

/* torch's constructor checks, with its messages ("Invalid learning rate: -1.0"). */
static sdict_status check_hparams(sdict_optim_kind kind, const sdict_optim_hparams *h,
                                  sdict_error *err) {
    if (!(h->lr >= 0.0))
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "Invalid learning rate: %s", pyf(h->lr).s);
    if (kind == SDICT_OPTIM_SGD) {
        if (!(h->momentum >= 0.0))
            return sdict_nn__err(err, SDICT_E_INVALID_ARG, "Invalid momentum value: %s",
                                 pyf(h->momentum).s);
        if (!(h->weight_decay >= 0.0))
            return sdict_nn__err(err, SDICT_E_INVALID_ARG, "Invalid weight_decay value: %s",
                                 pyf(h->weight_decay).s);
        if (h->nesterov && (h->momentum <= 0.0 || h->dampening != 0.0))
            return sdict_nn__err(err, SDICT_E_INVALID_ARG,
                                 "Nesterov momentum requires a momentum and zero dampening");
        return SDICT_OK;
    }
    if (!(h->eps >= 0.0))
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "Invalid epsilon value: %s", pyf(h->eps).s);
    if (!(h->beta1 >= 0.0 && h->beta1 < 1.0))
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "Invalid beta parameter at index 0: %s",
                             pyf(h->beta1).s);
    if (!(h->beta2 >= 0.0 && h->beta2 < 1.0))
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "Invalid beta parameter at index 1: %s",
                             pyf(h->beta2).s);
    if (!(h->weight_decay >= 0.0))
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "Invalid weight_decay value: %s",
                             pyf(h->weight_decay).s);
    return SDICT_OK;
}

sdict_status sdict_optim_add_group(sdict_optim *o, const sdict_optim_hparams *hp,
                                   const sdict_optim_param *params, size_t n, sdict_error *err) {
    if (!o || !hp || (n && !params))
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "optim: NULL argument");
    sdict_status st = check_hparams(o->kind, hp, err);
    if (st != SDICT_OK) return st;
    for (size_t i = 0; i < n; i++)
        if (params[i].numel < 0 || (params[i].numel > 0 && (!params[i].data || !params[i].grad)))
            return sdict_nn__err(err, SDICT_E_INVALID_ARG, "optim: parameter %zu has no data",
                                 i);
    group *g = realloc(o->groups, (o->n_groups + 1) * sizeof *g);
    if (!g) return sdict_nn__err(err, SDICT_E_NOMEM, "optim: out of memory");
    o->groups = g;
    sdict_optim_param *p = realloc(o->params, (o->n_params + n + 1) * sizeof *p);
    if (!p) return sdict_nn__err(err, SDICT_E_NOMEM, "optim: out of memory");
    o->params = p;
    pstate *s = realloc(o->state, (o->n_params + n + 1) * sizeof *s);
    if (!s) return sdict_nn__err(err, SDICT_E_NOMEM, "optim: out of memory");
    o->state = s;
    if (n) memcpy(o->params + o->n_params, params, n * sizeof *params);
    memset(o->state + o->n_params, 0, n * sizeof *s);
    g[o->n_groups].hp = *hp;
    g[o->n_groups].first = o->n_params;
    g[o->n_groups].count = n;
    g[o->n_groups].kept = NULL;
    o->n_groups++;
    o->n_params += n;
    return SDICT_OK;
}

typedef struct collect_ctx {
    sdict_optim_param *arr;
    size_t n, cap;
    bool bad, nomem;
} collect_ctx;

static void collect_param(void *ctx, const char *key, sdict_named_tensor *nt) {
    (void)key;
    collect_ctx *c = ctx;
    if (c->bad || c->nomem) return;
    if (nt->value.dtype != SDICT_FLOAT32 || nt->grad.dtype != SDICT_FLOAT32 ||
        nt->value.ndim > SDICT_NN_MAX_DIMS ||
        !sdict_tensor_is_contiguous(&nt->value) || !sdict_tensor_is_contiguous(&nt->grad) ||
        sdict_tensor_numel(&nt->value) != sdict_tensor_numel(&nt->grad)) {
        c->bad = true;
        return;
    }
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 16;
        sdict_optim_param *a = realloc(c->arr, cap * sizeof *a);
        if (!a) {
            c->nomem = true;
            return;
        }
        c->arr = a;
        c->cap = cap;
    }
    sdict_optim_param *p = &c->arr[c->n++];
    memset(p, 0, sizeof *p);
    p->numel = sdict_tensor_numel(&nt->value);
    p->data = p->numel ? sdict_tensor_data(&nt->value) : NULL;
    p->grad = p->numel ? sdict_tensor_data(&nt->grad) : NULL;
    p->ndim = nt->value.ndim;
    if (p->ndim)
        memcpy(p->shape, nt->value.shape, (size_t)p->ndim * sizeof *p->shape);
}

sdict_status sdict_optim_add_module(sdict_optim *o, const sdict_optim_hparams *hp,
                                    sdict_module *m, sdict_error *err) {
    if (!o || !m) return sdict_nn__err(err, SDICT_E_INVALID_ARG, "optim: NULL argument");
    collect_ctx c = {0};
    sdict_module_each_param(m, collect_param, &c);
    sdict_status st;
    if (c.nomem) st = sdict_nn__err(err, SDICT_E_NOMEM, "optim: out of memory");
    else if (c.bad)
        st = sdict_nn__err(err, SDICT_E_DTYPE, "optim: parameters must be contiguous float32 "
                           "with a gradient of the same size");
    else st = sdict_optim_add_group(o, hp, c.arr, c.n, err);
    free(c.arr);
    return st;
}

void sdict_optim_zero_grad(sdict_optim *o) {
    if (!o) return;
    for (size_t i = 0; i < o->n_params; i++)
        if (o->params[i].numel) memset(o->params[i].grad, 0, (size_t)o->params[i].numel * sizeof(float));
}

/*==================================================================================================
 MARK: Update rules
==================================================================================================*/

static float *zeros(int64_t n) { return calloc((size_t)(n > 0 ? n : 1), sizeof(float)); }

static sdict_status sgd_one(const sdict_optim_hparams *h, sdict_optim_param *p, pstate *s,
                            sdict_error *err) {
    int64_t n = p->numel;
    float *w = p->data;
    const float *gr = p->grad;
    float mom = (float)h->momentum, damp1 = (float)(1.0 - h->dampening);
    float wd = (float)h->weight_decay, lr = (float)h->lr;
    bool first = false;
    if (h->momentum != 0.0 && !s->buf) {
        if (!(s->buf = zeros(n))) return sdict_nn__err(err, SDICT_E_NOMEM, "SGD: out of memory");
        first = true;
    }
    s->has = true;
    for (int64_t i = 0; i < n; i++) {
        float d = h->maximize ? -gr[i] : gr[i];
        if (h->weight_decay != 0.0) d = d + wd * w[i];  /* d_p.add(param, alpha=wd) */
        if (h->momentum != 0.0) {
            /* first step: buf = clone(d_p); later buf.mul_(m).add_(d_p, alpha=1-dampening) */
            s->buf[i] = first ? d : s->buf[i] * mom + damp1 * d;
            d = h->nesterov ? d + mom * s->buf[i] : s->buf[i];
        }
        w[i] = w[i] + (-lr) * d;                         /* param.add_(d_p, alpha=-lr) */
    }
    return SDICT_OK;
}

static sdict_status adam_one(sdict_optim_kind kind, const sdict_optim_hparams *h,
                             sdict_optim_param *p, pstate *s, sdict_error *err) {
    int64_t n = p->numel;
    if (!s->exp_avg) {
        s->exp_avg = zeros(n);
        s->exp_avg_sq = zeros(n);
        if (!s->exp_avg || !s->exp_avg_sq)
            return sdict_nn__err(err, SDICT_E_NOMEM, "Adam: out of memory");
        s->step = 0.0f;
    }
    if (h->amsgrad && !s->max_exp_avg_sq && !(s->max_exp_avg_sq = zeros(n)))
        return sdict_nn__err(err, SDICT_E_NOMEM, "Adam: out of memory");
    s->has = true;
    s->step += 1.0f;
    double step = s->step;   /* step_t.item() */
    double bc1 = 1.0 - pow(h->beta1, step), bc2 = 1.0 - pow(h->beta2, step);
    double step_size = h->lr / bc1;
    double bc2_sqrt = sqrt(bc2);
    float b1 = (float)h->beta1, b2 = (float)h->beta2;
    float omb1 = (float)(1.0 - h->beta1), omb2 = (float)(1.0 - h->beta2);
    float eps = (float)h->eps, wd = (float)h->weight_decay, nss = (float)-step_size;
    float bc2s = (float)bc2_sqrt;
    float decay = (float)(1.0 - h->lr * h->weight_decay);
    bool decoupled = kind == SDICT_OPTIM_ADAMW || h->decoupled_weight_decay;
    float *w = p->data, *m = s->exp_avg, *v = s->exp_avg_sq, *vm = s->max_exp_avg_sq;
    const float *gr = p->grad;
    for (int64_t i = 0; i < n; i++) {
        float g = h->maximize ? -gr[i] : gr[i];
        if (decoupled) w[i] = w[i] * decay;                      /* param.mul_(1 - lr*wd) */
        else if (h->weight_decay != 0.0) g = g + wd * w[i];      /* grad.add(param, alpha=wd) */
        m[i] = m[i] * b1 + omb1 * g;
        v[i] = v[i] * b2 + omb2 * (g * g);
        float vv = v[i];
        if (h->amsgrad) {
            if (vv > vm[i] || vv != vv) vm[i] = vv;              /* torch.maximum (NaN wins) */
            vv = vm[i];
        }
        float denom = sqrtf(vv) / bc2s + eps;
        w[i] = w[i] + nss * (m[i] / denom);                      /* addcdiv_(value=-step_size) */
    }
    return SDICT_OK;
}

sdict_status sdict_optim_step(sdict_optim *o, sdict_error *err) {
    if (!o) return sdict_nn__err(err, SDICT_E_INVALID_ARG, "optim: NULL optimizer");
    for (size_t gi = 0; gi < o->n_groups; gi++) {
        const group *g = &o->groups[gi];
        for (size_t k = 0; k < g->count; k++) {
            size_t i = g->first + k;
            sdict_status st = o->kind == SDICT_OPTIM_SGD
                                  ? sgd_one(&g->hp, &o->params[i], &o->state[i], err)
                                  : adam_one(o->kind, &g->hp, &o->params[i], &o->state[i], err);
            if (st != SDICT_OK) return st;
        }
    }
    return SDICT_OK;
}

/*==================================================================================================
 MARK: state_dict
==================================================================================================*/

/* A new float32 tensor value in doc holding a copy of n floats with the given shape. */
static sdict_status tensor_value(sdict_doc *doc, const float *src, int32_t ndim,
                                 const int64_t *shape, int64_t n, sdict_value **out,
                                 sdict_error *err) {
    if (ndim < 0 || ndim > SDICT_NN_MAX_DIMS)
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "optim: parameter of rank %d", (int)ndim);
    sdict_storage *s = NULL;
    sdict_status st = sdict_storage_new((size_t)n * sizeof(float), &s, err);
    if (st != SDICT_OK) return st;
    if (n) memcpy(sdict_storage_data(s), src, (size_t)n * sizeof(float));
    sdict_tensor t;
    int64_t stride[SDICT_NN_MAX_DIMS];
    st = sdict_tensor_init(&t, SDICT_FLOAT32, ndim, shape, stride, s, err);
    if (st == SDICT_OK) st = sdict_tensor_new(doc, &t, out, err);
    sdict_storage_release(s);   /* the value holds its own reference */
    return st;
}

#define NOMEM(v) if (!(v)) return sdict_nn__err(err, SDICT_E_NOMEM, "optim: out of memory")
#define TRY(x) do { sdict_status st_ = (x); if (st_ != SDICT_OK) return st_; } while (0)

static sdict_status put(sdict_value *d, const char *key, sdict_value *v, sdict_error *err) {
    NOMEM(v);
    if (sdict_dict_set_str(d, key, v) != SDICT_OK)
        return sdict_nn__err(err, SDICT_E_NOMEM, "optim: out of memory");
    return SDICT_OK;
}

/* torch's defaults for these are the int 0 (momentum=0, dampening=0, weight_decay=0), so a
   zero is written as the int a default-constructed torch optimizer holds. */
static sdict_value *num_value(sdict_doc *doc, double d) {
    return d == 0.0 && !signbit(d) ? sdict_int_new(doc, 0) : sdict_float_new(doc, d);
}

/* The hyperparameter keys of a param_groups entry, and each layout's order of them
   (FORMAT.md 6.2; measured with torch 1.13, 2.6 and 2.14). */
typedef enum hkey {
    K_LR, K_MOMENTUM, K_DAMPENING, K_WEIGHT_DECAY, K_NESTEROV, K_BETAS, K_EPS, K_AMSGRAD,
    K_MAXIMIZE, K_FOREACH, K_CAPTURABLE, K_DIFFERENTIABLE, K_FUSED, K_DECOUPLED, K_END
} hkey;
static const char *const hkey_name[K_END] = {
    "lr", "momentum", "dampening", "weight_decay", "nesterov", "betas", "eps", "amsgrad",
    "maximize", "foreach", "capturable", "differentiable", "fused", "decoupled_weight_decay"};

static const hkey *layout_keys(sdict_optim_kind kind, sdict_optim_layout layout) {
    static const hkey sgd_113[] = {K_LR, K_MOMENTUM, K_DAMPENING, K_WEIGHT_DECAY, K_NESTEROV,
                                   K_MAXIMIZE, K_FOREACH, K_DIFFERENTIABLE, K_END};
    static const hkey sgd_2[] = {K_LR, K_MOMENTUM, K_DAMPENING, K_WEIGHT_DECAY, K_NESTEROV,
                                 K_MAXIMIZE, K_FOREACH, K_DIFFERENTIABLE, K_FUSED, K_END};
    static const hkey adam_26[] = {K_LR, K_BETAS, K_EPS, K_WEIGHT_DECAY, K_AMSGRAD, K_MAXIMIZE,
                                   K_FOREACH, K_CAPTURABLE, K_DIFFERENTIABLE, K_FUSED, K_END};
    static const hkey adam_214[] = {K_LR, K_BETAS, K_EPS, K_WEIGHT_DECAY, K_AMSGRAD, K_MAXIMIZE,
                                    K_FOREACH, K_CAPTURABLE, K_DIFFERENTIABLE, K_FUSED,
                                    K_DECOUPLED, K_END};
    static const hkey adamw_113[] = {K_LR, K_BETAS, K_EPS, K_WEIGHT_DECAY, K_AMSGRAD, K_FOREACH,
                                     K_MAXIMIZE, K_CAPTURABLE, K_END};
    static const hkey adamw_26[] = {K_LR, K_BETAS, K_EPS, K_WEIGHT_DECAY, K_AMSGRAD, K_FOREACH,
                                    K_MAXIMIZE, K_CAPTURABLE, K_DIFFERENTIABLE, K_FUSED, K_END};
    if (kind == SDICT_OPTIM_SGD) return layout == SDICT_OPTIM_LAYOUT_TORCH_1_13 ? sgd_113 : sgd_2;
    if (layout == SDICT_OPTIM_LAYOUT_TORCH_2_14) return adam_214;   /* AdamW is an Adam there */
    if (kind == SDICT_OPTIM_ADAM) return adam_26;                    /* 1.13 and 2.6: same keys */
    return layout == SDICT_OPTIM_LAYOUT_TORCH_1_13 ? adamw_113 : adamw_26;
}

/* The key whose value this optimizer computes (a hyperparameter of its update rule, in any
   layout of its kind), or K_END. The implementation flags (foreach, capturable,
   differentiable, fused) are not computed: a loaded group keeps the file's values. */
static hkey tracked_key(sdict_optim_kind kind, const char *name) {
    for (int l = SDICT_OPTIM_LAYOUT_TORCH_1_13; l <= SDICT_OPTIM_LAYOUT_TORCH_2_14; l++)
        for (const hkey *k = layout_keys(kind, (sdict_optim_layout)l); *k != K_END; k++)
            if (*k != K_FOREACH && *k != K_CAPTURABLE && *k != K_DIFFERENTIABLE &&
                *k != K_FUSED && strcmp(hkey_name[*k], name) == 0)
                return *k;
    return K_END;
}

static sdict_value *hkey_value(const sdict_optim *o, const sdict_optim_hparams *h, hkey k,
                               sdict_doc *doc) {
    switch (k) {
    case K_LR: return sdict_float_new(doc, h->lr);
    case K_MOMENTUM: return num_value(doc, h->momentum);
    case K_DAMPENING: return num_value(doc, h->dampening);
    case K_WEIGHT_DECAY:
        return o->kind == SDICT_OPTIM_ADAMW ? sdict_float_new(doc, h->weight_decay)
                                            : num_value(doc, h->weight_decay);
    case K_NESTEROV: return sdict_bool_new(doc, h->nesterov);
    case K_BETAS: {
        sdict_value *betas = sdict_tuple_new(doc);
        sdict_value *b1 = sdict_float_new(doc, h->beta1), *b2 = sdict_float_new(doc, h->beta2);
        if (!betas || !b1 || !b2 || sdict_seq_append(betas, b1) != SDICT_OK ||
            sdict_seq_append(betas, b2) != SDICT_OK)
            return NULL;
        return betas;
    }
    case K_EPS: return sdict_float_new(doc, h->eps);
    case K_AMSGRAD: return sdict_bool_new(doc, h->amsgrad);
    case K_MAXIMIZE: return sdict_bool_new(doc, h->maximize);
    case K_FOREACH: return sdict_none_new(doc);
    case K_CAPTURABLE: case K_DIFFERENTIABLE: return sdict_bool_new(doc, false);
    case K_FUSED:   /* 1.13's Adam defaults it to False, 2.x to None */
        return o->layout == SDICT_OPTIM_LAYOUT_TORCH_1_13 ? sdict_bool_new(doc, false)
                                                         : sdict_none_new(doc);
    case K_DECOUPLED:
        return sdict_bool_new(doc, o->kind == SDICT_OPTIM_ADAMW || h->decoupled_weight_decay);
    case K_END: break;
    }
    return NULL;
}

/* Containers already copied (source -> copy), so a subtree shared in the file is copied once
   and stays shared: without it a pickle of lists holding the same list twice, 24 deep, would
   copy 2^24 times its size. Open addressing on the pointer, grown at half full. */
typedef struct copy_memo {
    const sdict_value **src;
    sdict_value **dst;
    size_t n, cap;
} copy_memo;

static size_t memo_slot(const copy_memo *cm, const sdict_value *v) {
    size_t h = (size_t)((uintptr_t)v >> 4) * (size_t)0x9E3779B97F4A7C15u;
    for (size_t i = h & (cm->cap - 1);; i = (i + 1) & (cm->cap - 1))
        if (!cm->src[i] || cm->src[i] == v) return i;
}

static bool memo_put(copy_memo *cm, const sdict_value *v, sdict_value *copy) {
    if (2 * (cm->n + 1) > cm->cap) {
        copy_memo bigger = {calloc(cm->cap ? 2 * cm->cap : 64, sizeof *bigger.src),
                            calloc(cm->cap ? 2 * cm->cap : 64, sizeof *bigger.dst), 0,
                            cm->cap ? 2 * cm->cap : 64};
        if (!bigger.src || !bigger.dst) {
            free(bigger.src);
            free(bigger.dst);
            return false;
        }
        for (size_t i = 0; i < cm->cap; i++)
            if (cm->src[i]) {
                size_t j = memo_slot(&bigger, cm->src[i]);
                bigger.src[j] = cm->src[i];
                bigger.dst[j] = cm->dst[i];
                bigger.n++;
            }
        free(cm->src);
        free(cm->dst);
        *cm = bigger;
    }
    size_t i = memo_slot(cm, v);
    cm->src[i] = v;
    cm->dst[i] = copy;
    cm->n++;
    return true;
}

/* Deep copy of a value kept from a loaded param group (scalars, text, sequences, dicts,
   dtypes, tensors sharing their storage) into doc, keeping shared containers shared. Other
   kinds are refused by name. */
static sdict_status copy_value(sdict_doc *doc, const sdict_value *v, copy_memo *cm,
                               sdict_value **out, const char *key, sdict_error *err) {
    sdict_value *r = NULL;
    int64_t i;
    size_t len;
    const char *p;
    sdict_kind kind = sdict_value_kind(v);
    if (kind == SDICT_KIND_LIST || kind == SDICT_KIND_TUPLE || kind == SDICT_KIND_SET ||
        kind == SDICT_KIND_DICT) {
        if (cm->cap) {
            size_t slot = memo_slot(cm, v);
            if (cm->src[slot]) {
                *out = cm->dst[slot];
                return SDICT_OK;
            }
        }
        r = kind == SDICT_KIND_LIST ? sdict_list_new(doc)
            : kind == SDICT_KIND_TUPLE ? sdict_tuple_new(doc)
            : kind == SDICT_KIND_SET ? sdict_set_new(doc)
            : sdict_dict_new(doc, sdict_dict_is_ordered(v));
        NOMEM(r && memo_put(cm, v, r));
    }
    switch (kind) {
    case SDICT_KIND_NONE: r = sdict_none_new(doc); break;
    case SDICT_KIND_BOOL: r = sdict_bool_new(doc, sdict_bool_get(v)); break;
    case SDICT_KIND_INT:
        if (sdict_int_get(v, &i) != SDICT_OK)
            return sdict_nn__err(err, SDICT_E_LIMIT, "param group key '%s' holds an int beyond "
                                 "int64, which the optimizer cannot keep", key);
        r = sdict_int_new(doc, i);
        break;
    case SDICT_KIND_FLOAT: r = sdict_float_new(doc, sdict_float_get(v)); break;
    case SDICT_KIND_STR: p = sdict_str_get(v, &len); r = sdict_str_new(doc, p, len); break;
    case SDICT_KIND_BYTES: p = sdict_bytes_get(v, &len); r = sdict_bytes_new(doc, p, len); break;
    case SDICT_KIND_DTYPE: r = sdict_dtype_value_new(doc, sdict_dtype_value_get(v)); break;
    case SDICT_KIND_TENSOR: TRY(sdict_tensor_new(doc, sdict_value_tensor(v), &r, err)); break;
    case SDICT_KIND_LIST: case SDICT_KIND_TUPLE: case SDICT_KIND_SET:
        for (size_t j = 0; j < sdict_seq_len(v); j++) {
            sdict_value *item;
            TRY(copy_value(doc, sdict_seq_item(v, j), cm, &item, key, err));
            NOMEM(sdict_seq_append(r, item) == SDICT_OK);
        }
        break;
    case SDICT_KIND_DICT:
        for (size_t j = 0; j < sdict_dict_len(v); j++) {
            sdict_value *dk, *dv;
            TRY(copy_value(doc, sdict_dict_key(v, j), cm, &dk, key, err));
            TRY(copy_value(doc, sdict_dict_val(v, j), cm, &dv, key, err));
            NOMEM(sdict_dict_set(r, dk, dv) == SDICT_OK);
        }
        break;
    default:
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "param group key '%s' holds a %s, which "
                             "the optimizer cannot keep", key, sdict_kind_name(kind));
    }
    NOMEM(r);
    *out = r;
    return SDICT_OK;
}

/* copy_value of one value with a memo of its own. */
static sdict_status copy_tree(sdict_doc *doc, const sdict_value *v, sdict_value **out,
                              const char *key, sdict_error *err) {
    copy_memo cm = {0};
    sdict_status st = copy_value(doc, v, &cm, out, key, err);
    free(cm.src);
    free(cm.dst);
    return st;
}

/* One param_groups entry. A group loaded from a file keeps that file's keys, order and the
   values of keys this optimizer does not compute (a scheduler's initial_lr, param_names, a
   newer torch's flags), as torch's load_state_dict keeps the saved group dicts; keys of the
   layout the file lacked follow 'params', where torch's __setstate__ setdefault puts them. */
static sdict_status group_value(const sdict_optim *o, const group *g, sdict_doc *doc,
                                sdict_value **out, sdict_error *err) {
    sdict_value *d = sdict_dict_new(doc, false), *params = sdict_list_new(doc);
    NOMEM(d && params);
    for (size_t k = 0; k < g->count; k++) {
        sdict_value *iv = sdict_int_new(doc, (int64_t)(g->first + k));
        NOMEM(iv && sdict_seq_append(params, iv) == SDICT_OK);
    }
    for (size_t j = 0; g->kept && j < sdict_dict_len(g->kept); j++) {
        const char *name = sdict_str_get(sdict_dict_key(g->kept, j), NULL);
        hkey k = tracked_key(o->kind, name);
        sdict_value *v;
        if (strcmp(name, "params") == 0) v = params;
        else if (k != K_END) v = hkey_value(o, &g->hp, k, doc);
        else TRY(copy_tree(doc, sdict_dict_val(g->kept, j), &v, name, err));
        TRY(put(d, name, v, err));
    }
    for (const hkey *k = layout_keys(o->kind, o->layout); *k != K_END; k++)
        if (!sdict_dict_get(d, hkey_name[*k])) TRY(put(d, hkey_name[*k], hkey_value(o, &g->hp, *k, doc), err));
    if (!g->kept) TRY(put(d, "params", params, err));
    *out = d;
    return SDICT_OK;
}

static sdict_status state_value(const sdict_optim *o, size_t i, sdict_doc *doc, sdict_value **out,
                                sdict_error *err) {
    const pstate *s = &o->state[i];
    const sdict_optim_param *p = &o->params[i];
    sdict_value *d = sdict_dict_new(doc, false), *t = NULL;
    NOMEM(d);
    if (o->kind == SDICT_OPTIM_SGD) {
        if (s->buf) {
            TRY(tensor_value(doc, s->buf, p->ndim, p->shape, p->numel, &t, err));
            TRY(put(d, "momentum_buffer", t, err));
        } else {
            TRY(put(d, "momentum_buffer", sdict_none_new(doc), err));
        }
    } else {
        TRY(tensor_value(doc, &s->step, 0, NULL, 1, &t, err));
        TRY(put(d, "step", t, err));
        TRY(tensor_value(doc, s->exp_avg, p->ndim, p->shape, p->numel, &t, err));
        TRY(put(d, "exp_avg", t, err));
        TRY(tensor_value(doc, s->exp_avg_sq, p->ndim, p->shape, p->numel, &t, err));
        TRY(put(d, "exp_avg_sq", t, err));
        if (s->max_exp_avg_sq) {
            TRY(tensor_value(doc, s->max_exp_avg_sq, p->ndim, p->shape, p->numel, &t, err));
            TRY(put(d, "max_exp_avg_sq", t, err));
        }
    }
    *out = d;
    return SDICT_OK;
}

sdict_status sdict_optim_state_dict(const sdict_optim *o, sdict_doc *doc, sdict_value **out,
                                    sdict_error *err) {
    if (!o || !doc || !out) return sdict_nn__err(err, SDICT_E_INVALID_ARG, "optim: NULL argument");
    *out = NULL;
    sdict_value *root = sdict_dict_new(doc, false), *state = sdict_dict_new(doc, false);
    sdict_value *groups = sdict_list_new(doc);
    NOMEM(root && state && groups);
    for (size_t i = 0; i < o->n_params; i++) {
        if (!o->state[i].has) continue;
        /* SGD with momentum 0 keeps momentum_buffer=None in 1.13 and no state at all in 2.x */
        if (o->kind == SDICT_OPTIM_SGD && !o->state[i].buf &&
            o->layout != SDICT_OPTIM_LAYOUT_TORCH_1_13)
            continue;
        sdict_value *sv = NULL, *key = sdict_int_new(doc, (int64_t)i);
        NOMEM(key);
        TRY(state_value(o, i, doc, &sv, err));
        NOMEM(sdict_dict_set(state, key, sv) == SDICT_OK);
    }
    for (size_t g = 0; g < o->n_groups; g++) {
        sdict_value *gv = NULL;
        TRY(group_value(o, &o->groups[g], doc, &gv, err));
        NOMEM(sdict_seq_append(groups, gv) == SDICT_OK);
    }
    TRY(put(root, "state", state, err));
    TRY(put(root, "param_groups", groups, err));
    *out = root;
    return SDICT_OK;
}

/*==================================================================================================
 MARK: load_state_dict
==================================================================================================*/

/* A Python number: int, float, bool, or a one-element tensor (2.x may store lr as a tensor). */
static bool number_of(const sdict_value *v, double *out) {
    switch (sdict_value_kind(v)) {
    case SDICT_KIND_BOOL: *out = sdict_bool_get(v) ? 1.0 : 0.0; return true;
    case SDICT_KIND_FLOAT: *out = sdict_float_get(v); return true;
    case SDICT_KIND_INT: {
        int64_t i;
        if (sdict_int_get(v, &i) != SDICT_OK) return false;
        *out = (double)i;
        return true;
    }
    case SDICT_KIND_TENSOR: {
        const sdict_tensor *t = sdict_value_tensor(v);
        double d;
        if (sdict_tensor_numel(t) != 1 ||
            sdict_tensor_copy_to(t, SDICT_FLOAT64, &d, sizeof d, NULL) != SDICT_OK)
            return false;
        *out = d;
        return true;
    }
    default: return false;
    }
}

static sdict_status get_num(const sdict_value *g, const char *key, double *out, size_t gi,
                            sdict_error *err) {
    const sdict_value *v = sdict_dict_get(g, key);
    if (!v) return SDICT_OK;   /* absent: keep the current value (torch's setdefault) */
    if (!number_of(v, out))
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "param_groups[%zu]['%s'] is a %s, "
                             "expected a number", gi, key, sdict_kind_name(sdict_value_kind(v)));
    return SDICT_OK;
}

static sdict_status get_bool(const sdict_value *g, const char *key, bool *out, size_t gi,
                             sdict_error *err) {
    double d = *out ? 1.0 : 0.0;
    sdict_status st = get_num(g, key, &d, gi, err);
    *out = d != 0.0;
    return st;
}

static sdict_status read_group(const sdict_optim *o, const sdict_value *g, size_t gi,
                               sdict_optim_hparams *h, sdict_error *err) {
    TRY(get_num(g, "lr", &h->lr, gi, err));
    TRY(get_num(g, "weight_decay", &h->weight_decay, gi, err));
    TRY(get_bool(g, "maximize", &h->maximize, gi, err));
    if (o->kind == SDICT_OPTIM_SGD) {
        TRY(get_num(g, "momentum", &h->momentum, gi, err));
        TRY(get_num(g, "dampening", &h->dampening, gi, err));
        TRY(get_bool(g, "nesterov", &h->nesterov, gi, err));
    } else {
        TRY(get_num(g, "eps", &h->eps, gi, err));
        TRY(get_bool(g, "amsgrad", &h->amsgrad, gi, err));
        TRY(get_bool(g, "decoupled_weight_decay", &h->decoupled_weight_decay, gi, err));
        const sdict_value *b = sdict_dict_get(g, "betas");
        if (b) {
            sdict_kind k = sdict_value_kind(b);
            if ((k != SDICT_KIND_TUPLE && k != SDICT_KIND_LIST) || sdict_seq_len(b) != 2 ||
                !number_of(sdict_seq_item(b, 0), &h->beta1) ||
                !number_of(sdict_seq_item(b, 1), &h->beta2))
                return sdict_nn__err(err, SDICT_E_INVALID_ARG,
                                     "param_groups[%zu]['betas'] is not a pair of numbers", gi);
        }
    }
    return SDICT_OK;
}

/* Copies a state tensor of numel n (any dtype torch can cast) into a new float32 array. */
static sdict_status read_tensor(const sdict_value *v, const char *name, int64_t key, int64_t n,
                                float **out, sdict_error *err) {
    const sdict_tensor *t = sdict_value_tensor(v);
    if (!t)
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "state[%lld]['%s'] is a %s, expected a "
                             "tensor", (long long)key, name, sdict_kind_name(sdict_value_kind(v)));
    if (sdict_tensor_numel(t) != n)
        return sdict_nn__err(err, SDICT_E_SHAPE, "state[%lld]['%s'] has %lld elements, its "
                             "parameter has %lld", (long long)key, name,
                             (long long)sdict_tensor_numel(t), (long long)n);
    float *a = zeros(n);
    if (!a) return sdict_nn__err(err, SDICT_E_NOMEM, "optim: out of memory");
    sdict_status st = sdict_tensor_copy_to(t, SDICT_FLOAT32, a, (size_t)(n > 0 ? n : 1) * sizeof(float), err);
    if (st != SDICT_OK) {
        free(a);
        return st;
    }
    *out = a;
    return SDICT_OK;
}

static sdict_status read_state(const sdict_optim *o, const sdict_value *sv, int64_t key,
                               size_t i, pstate *s, sdict_error *err) {
    if (sdict_value_kind(sv) != SDICT_KIND_DICT)
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "state[%lld] is not a dict",
                             (long long)key);
    int64_t n = o->params[i].numel;
    s->has = true;
    const sdict_value *v;
    if ((v = sdict_dict_get(sv, "momentum_buffer")) && sdict_value_kind(v) != SDICT_KIND_NONE)
        TRY(read_tensor(v, "momentum_buffer", key, n, &s->buf, err));
    if ((v = sdict_dict_get(sv, "step"))) {
        double d;
        if (!number_of(v, &d))
            return sdict_nn__err(err, SDICT_E_INVALID_ARG, "state[%lld]['step'] is not a number "
                                 "or one-element tensor", (long long)key);
        /* a step count: also keeps the float conversion defined (1e300 has no float) */
        if (!(d >= 0 && d <= 1e15))
            return sdict_nn__err(err, SDICT_E_INVALID_ARG, "state[%lld]['step'] is %g, not a "
                                 "step count", (long long)key, d);
        s->step = (float)d;
    }
    if ((v = sdict_dict_get(sv, "exp_avg"))) TRY(read_tensor(v, "exp_avg", key, n, &s->exp_avg, err));
    if ((v = sdict_dict_get(sv, "exp_avg_sq")))
        TRY(read_tensor(v, "exp_avg_sq", key, n, &s->exp_avg_sq, err));
    if ((v = sdict_dict_get(sv, "max_exp_avg_sq")))
        TRY(read_tensor(v, "max_exp_avg_sq", key, n, &s->max_exp_avg_sq, err));
    if (o->kind != SDICT_OPTIM_SGD && (!s->exp_avg) != (!s->exp_avg_sq))
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "state[%lld] has only one of exp_avg "
                             "and exp_avg_sq", (long long)key);
    return SDICT_OK;
}

/* The layout a loaded group was written in, from the keys only torch 2.x writes; `current`
   when there is no group to tell. */
static sdict_optim_layout detect_layout(sdict_optim_kind kind, const sdict_value *g,
                                        sdict_optim_layout current) {
    if (!g) return current;
    if (sdict_dict_get(g, "decoupled_weight_decay")) return SDICT_OPTIM_LAYOUT_TORCH_2_14;
    const sdict_value *fused = sdict_dict_get(g, "fused");
    if ((kind != SDICT_OPTIM_ADAM && fused) ||
        (kind == SDICT_OPTIM_ADAM && fused && sdict_value_kind(fused) == SDICT_KIND_NONE))
        return SDICT_OPTIM_LAYOUT_TORCH_2_6;
    return SDICT_OPTIM_LAYOUT_TORCH_1_13;
}

static const char *kind_name(sdict_optim_kind kind) {
    return kind == SDICT_OPTIM_SGD ? "SGD" : kind == SDICT_OPTIM_ADAM ? "Adam" : "AdamW";
}

/* Index of key among g's keys, or -1. */
static long key_index(const sdict_value *g, const char *key) {
    for (size_t j = 0; j < sdict_dict_len(g); j++) {
        const char *k = sdict_str_get(sdict_dict_key(g, j), NULL);
        if (k && strcmp(k, key) == 0) return (long)j;
    }
    return -1;
}

/* The first key of names that d has, or NULL. */
static const char *first_key_of(const sdict_value *d, const char *const *names) {
    if (sdict_value_kind(d) != SDICT_KIND_DICT) return NULL;
    for (const char *const *n = names; *n; n++)
        if (sdict_dict_get(d, *n)) return *n;
    return NULL;
}

/* Which Adam-family optimizer wrote group g: 2.14's decoupled_weight_decay tells it; before
   2.14 the key order does (Adam writes maximize before foreach, AdamW foreach first). */
static const char *adam_family_name(const sdict_value *g) {
    const sdict_value *d = sdict_value_kind(g) == SDICT_KIND_DICT
                               ? sdict_dict_get(g, "decoupled_weight_decay") : NULL;
    if (d && sdict_value_kind(d) == SDICT_KIND_BOOL) return sdict_bool_get(d) ? "AdamW" : "Adam";
    long mi = sdict_value_kind(g) == SDICT_KIND_DICT ? key_index(g, "maximize") : -1;
    long fi = sdict_value_kind(g) == SDICT_KIND_DICT ? key_index(g, "foreach") : -1;
    if (mi >= 0 && fi >= 0) return mi < fi ? "Adam" : "AdamW";
    return "Adam or AdamW";
}

/* Refuses the state_dict of the other optimizer family: SGD's groups hold momentum,
   dampening and nesterov and its per-parameter state momentum_buffer; Adam's and AdamW's
   groups hold betas, eps and amsgrad and their state step, exp_avg, exp_avg_sq and
   max_exp_avg_sq. Any key of the other family is enough. */
static sdict_status check_kind(const sdict_optim *o, const sdict_value *groups,
                               const sdict_value *state, sdict_error *err) {
    static const char *const sgd_group[] = {"momentum", "dampening", "nesterov", NULL};
    static const char *const adam_group[] = {"betas", "eps", "amsgrad", NULL};
    static const char *const sgd_state[] = {"momentum_buffer", NULL};
    static const char *const adam_state[] = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step",
                                             NULL};
    bool into_sgd = o->kind == SDICT_OPTIM_SGD;
    const char *const *fg = into_sgd ? adam_group : sgd_group;
    const char *const *fs = into_sgd ? adam_state : sgd_state;
    const sdict_value *g0 = sdict_seq_len(groups) ? sdict_seq_item(groups, 0) : NULL;
    const char *from = into_sgd ? adam_family_name(g0) : "SGD";
    for (size_t g = 0; g < sdict_seq_len(groups); g++) {
        const char *k = first_key_of(sdict_seq_item(groups, g), fg);
        if (k)
            return sdict_nn__err(err, SDICT_E_INVALID_ARG, "cannot load an optimizer state_dict "
                                 "written by %s into %s: param_groups[%zu] has '%s'", from,
                                 kind_name(o->kind), g, k);
    }
    for (size_t j = 0; j < sdict_dict_len(state); j++) {
        const char *k = first_key_of(sdict_dict_val(state, j), fs);
        if (!k) continue;
        int64_t key = 0;
        const sdict_value *kv = sdict_dict_key(state, j);
        if (sdict_value_kind(kv) == SDICT_KIND_INT && sdict_int_get(kv, &key) == SDICT_OK)
            return sdict_nn__err(err, SDICT_E_INVALID_ARG, "cannot load an optimizer state_dict "
                                 "written by %s into %s: state[%lld] has '%s'", from,
                                 kind_name(o->kind), (long long)key, k);
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "cannot load an optimizer state_dict "
                             "written by %s into %s: its state has '%s'", from, kind_name(o->kind),
                             k);
    }
    return SDICT_OK;
}

sdict_status sdict_optim_load_state_dict(sdict_optim *o, const sdict_value *sd, sdict_error *err) {
    if (!o || !sd) return sdict_nn__err(err, SDICT_E_INVALID_ARG, "optim: NULL argument");
    if (sdict_value_kind(sd) != SDICT_KIND_DICT)
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "optimizer state_dict is a %s, expected "
                             "a dict", sdict_kind_name(sdict_value_kind(sd)));
    const sdict_value *groups = sdict_dict_get(sd, "param_groups");
    const sdict_value *state = sdict_dict_get(sd, "state");
    if (!groups || sdict_value_kind(groups) != SDICT_KIND_LIST)
        return sdict_nn__err(err, SDICT_E_INVALID_ARG,
                             "optimizer state_dict has no 'param_groups' list");
    if (!state || sdict_value_kind(state) != SDICT_KIND_DICT)
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "optimizer state_dict has no 'state' dict");
    TRY(check_kind(o, groups, state, err));
    if (sdict_seq_len(groups) != o->n_groups)
        return sdict_nn__err(err, SDICT_E_INVALID_ARG,
                             "loaded state dict has a different number of parameter groups");
    for (size_t g = 0; g < o->n_groups; g++) {
        const sdict_value *gv = sdict_seq_item(groups, g);
        const sdict_value *pl = sdict_value_kind(gv) == SDICT_KIND_DICT
                                    ? sdict_dict_get(gv, "params") : NULL;
        if (!pl || (sdict_value_kind(pl) != SDICT_KIND_LIST &&
                    sdict_value_kind(pl) != SDICT_KIND_TUPLE))
            return sdict_nn__err(err, SDICT_E_INVALID_ARG,
                                 "param_groups[%zu] is not a dict with a 'params' list", g);
        if (sdict_seq_len(pl) != o->groups[g].count)
            return sdict_nn__err(err, SDICT_E_INVALID_ARG, "loaded state dict contains a "
                                 "parameter group that doesn't match the size of optimizer's "
                                 "group");
    }
    sdict_optim_hparams *hps = calloc(o->n_groups + 1, sizeof *hps);
    pstate *ns = calloc(o->n_params + 1, sizeof *ns);
    int64_t *ids = calloc(o->n_params + 1, sizeof *ids);
    sdict_status st = SDICT_OK;
    if (!hps || !ns || !ids) st = sdict_nn__err(err, SDICT_E_NOMEM, "optim: out of memory");
    /* id_map: the saved groups' indices, chained, map onto ours in order. */
    for (size_t g = 0; st == SDICT_OK && g < o->n_groups; g++) {
        const sdict_value *gv = sdict_seq_item(groups, g);
        const sdict_value *pl = sdict_dict_get(gv, "params");
        hps[g] = o->groups[g].hp;
        st = read_group(o, gv, g, &hps[g], err);
        for (size_t k = 0; st == SDICT_OK && k < o->groups[g].count; k++) {
            const sdict_value *iv = sdict_seq_item(pl, k);
            if (sdict_value_kind(iv) != SDICT_KIND_INT ||
                sdict_int_get(iv, &ids[o->groups[g].first + k]) != SDICT_OK)
                st = sdict_nn__err(err, SDICT_E_INVALID_ARG,
                                   "param_groups[%zu]['params'][%zu] is not an int", g, k);
        }
        if (st == SDICT_OK) st = check_hparams(o->kind, &hps[g], err);
    }
    for (size_t j = 0; st == SDICT_OK && j < sdict_dict_len(state); j++) {
        const sdict_value *kv = sdict_dict_key(state, j);
        int64_t key;
        if (sdict_value_kind(kv) != SDICT_KIND_INT || sdict_int_get(kv, &key) != SDICT_OK)
            continue;   /* torch keeps state not keyed by a parameter as is; nothing to use */
        size_t i = 0;
        while (i < o->n_params && ids[i] != key) i++;
        if (i == o->n_params) continue;
        st = read_state(o, sdict_dict_val(state, j), key, i, &ns[i], err);
    }
    /* the loaded groups are kept (keys, order, values this optimizer does not compute) */
    sdict_doc *kept = NULL;
    sdict_value **kv = calloc(o->n_groups + 1, sizeof *kv);
    if (st == SDICT_OK && (!kv || sdict_doc_new(&kept, err) != SDICT_OK))
        st = sdict_nn__err(err, SDICT_E_NOMEM, "optim: out of memory");
    for (size_t g = 0; st == SDICT_OK && g < o->n_groups; g++) {
        const sdict_value *gv = sdict_seq_item(groups, g);
        for (size_t j = 0; st == SDICT_OK && j < sdict_dict_len(gv); j++)
            if (sdict_value_kind(sdict_dict_key(gv, j)) != SDICT_KIND_STR)
                st = sdict_nn__err(err, SDICT_E_INVALID_ARG, "param_groups[%zu] has a key that "
                                   "is not a str", g);
        if (st == SDICT_OK) st = copy_tree(kept, gv, &kv[g], "param_groups", err);
    }
    if (st == SDICT_OK) {
        for (size_t i = 0; i < o->n_params; i++) {
            pstate_free(&o->state[i]);
            o->state[i] = ns[i];
        }
        for (size_t g = 0; g < o->n_groups; g++) {
            o->groups[g].hp = hps[g];
            o->groups[g].kept = kv[g];
        }
        sdict_doc_free(o->kept_doc);
        o->kept_doc = kept;
        kept = NULL;
        o->layout = detect_layout(o->kind, sdict_seq_item(groups, 0), o->layout);
    } else if (ns) {
        for (size_t i = 0; i < o->n_params; i++) pstate_free(&ns[i]);
    }
    sdict_doc_free(kept);
    free(kv);
    free(hps);
    free(ns);
    free(ids);
    return st;
}

/*==================================================================================================
 MARK: Checkpoint helpers
==================================================================================================*/

sdict_value *sdict_checkpoint_dict(const sdict_value *ckpt, const char *key, sdict_error *err) {
    if (!ckpt || sdict_value_kind(ckpt) != SDICT_KIND_DICT) {
        sdict_nn__err(err, SDICT_E_INVALID_ARG, "checkpoint is not a dict");
        return NULL;
    }
    sdict_value *v = sdict_dict_get(ckpt, key);
    if (!v) {
        sdict_nn__err(err, SDICT_E_NOT_FOUND, "checkpoint has no key '%s'", key);
        return NULL;
    }
    if (sdict_value_kind(v) != SDICT_KIND_DICT) {
        sdict_nn__err(err, SDICT_E_INVALID_ARG, "checkpoint['%s'] is a %s, expected a dict", key,
                      sdict_kind_name(sdict_value_kind(v)));
        return NULL;
    }
    return v;
}

sdict_status sdict_checkpoint_number(const sdict_value *ckpt, const char *key, double *out,
                                     sdict_error *err) {
    if (!ckpt || sdict_value_kind(ckpt) != SDICT_KIND_DICT)
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "checkpoint is not a dict");
    const sdict_value *v = sdict_dict_get(ckpt, key);
    if (!v) return sdict_nn__err(err, SDICT_E_NOT_FOUND, "checkpoint has no key '%s'", key);
    if (!number_of(v, out))
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "checkpoint['%s'] is a %s, expected a "
                             "number", key, sdict_kind_name(sdict_value_kind(v)));
    return SDICT_OK;
}
