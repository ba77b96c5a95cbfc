/*
 test_optim_math.c - optimizer update rules, state_dict layout and load_state_dict.

 Update rules are checked two ways: single steps worked out by hand from torch's documented
 formulas (values in the comments), and many steps against a double-precision reference
 written here from the same formulas. state_dict tests check PyTorch's layout (int keys,
 group key order of torch 1.13, step as a 0-dim float32 tensor, None momentum buffers) and
 load_state_dict checks torch's error messages, 2.x layouts and that a failed load changes
 nothing.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "statedict_optim.h"

/* Two parameters: a [2] vector and a [2, 3] matrix, with their gradients. */
typedef struct fixture {
    float p0[2], g0[2], p1[6], g1[6];
    sdict_optim_param params[2];
} fixture;

static void fixture_init(fixture *f) {
    memset(f, 0, sizeof *f);
    f->p0[0] = 1.0f;
    f->p0[1] = -2.0f;
    for (int i = 0; i < 6; i++) f->p1[i] = 0.25f * (float)(i - 2);
    f->params[0] = (sdict_optim_param){.data = f->p0, .grad = f->g0, .numel = 2, .ndim = 1,
                                       .shape = {2}};
    f->params[1] = (sdict_optim_param){.data = f->p1, .grad = f->g1, .numel = 6, .ndim = 2,
                                       .shape = {2, 3}};
}

static sdict_optim *make(sdict_optim_kind kind, const sdict_optim_hparams *hp, fixture *f) {
    fixture_init(f);
    sdict_optim *o = sdict_optim_new(kind);
    assert_non_null(o);
    assert_int_equal(sdict_optim_add_group(o, hp, f->params, 2, NULL), SDICT_OK);
    return o;
}

static void set_grads(fixture *f, float a, float b) {
    f->g0[0] = a;
    f->g0[1] = b;
    for (int i = 0; i < 6; i++) f->g1[i] = 0.1f * (float)(i + 1) * (i % 2 ? -a : b);
}

static void test_sgd_by_hand(void **state) {
    (void)state;
    fixture f;
    sdict_optim_hparams h = sdict_optim_defaults(SDICT_OPTIM_SGD);
    h.lr = 0.1;
    sdict_optim *o = make(SDICT_OPTIM_SGD, &h, &f);
    set_grads(&f, 0.5f, 0.25f);
    assert_int_equal(sdict_optim_step(o, NULL), SDICT_OK);
    assert_float_equal(f.p0[0], 0.95f, 1e-7);     /* 1 - 0.1 * 0.5 */
    assert_float_equal(f.p0[1], -2.025f, 1e-7);   /* -2 - 0.1 * 0.25 */
    sdict_optim_free(o);

    h.momentum = 0.9;                             /* buf = g, then 0.9 buf + g */
    o = make(SDICT_OPTIM_SGD, &h, &f);
    set_grads(&f, 0.5f, 0.25f);
    sdict_optim_step(o, NULL);
    sdict_optim_step(o, NULL);
    assert_float_equal(f.p0[0], 0.95f - 0.095f, 1e-6);   /* buf 0.95 */
    sdict_optim_free(o);

    h.dampening = 0.5;                            /* first buf = g (no dampening), then 0.9*0.5+0.5*0.5 */
    o = make(SDICT_OPTIM_SGD, &h, &f);
    set_grads(&f, 0.5f, 0.25f);
    sdict_optim_step(o, NULL);
    sdict_optim_step(o, NULL);
    assert_float_equal(f.p0[0], 0.95f - 0.07f, 1e-6);
    sdict_optim_free(o);

    h.dampening = 0.0;
    h.nesterov = true;                            /* d = g + 0.9 g */
    o = make(SDICT_OPTIM_SGD, &h, &f);
    set_grads(&f, 0.5f, 0.25f);
    sdict_optim_step(o, NULL);
    assert_float_equal(f.p0[0], 1.0f - 0.1f * 0.95f, 1e-6);
    sdict_optim_free(o);

    h = sdict_optim_defaults(SDICT_OPTIM_SGD);
    h.lr = 0.1;
    h.weight_decay = 0.1;                         /* d = 0.5 + 0.1 * 1 */
    h.maximize = true;                            /* ... with the gradient negated first */
    o = make(SDICT_OPTIM_SGD, &h, &f);
    set_grads(&f, 0.5f, 0.25f);
    sdict_optim_step(o, NULL);
    assert_float_equal(f.p0[0], 1.0f - 0.1f * (-0.5f + 0.1f), 1e-6);
    sdict_optim_free(o);
}

static void test_adam_by_hand(void **state) {
    (void)state;
    fixture f;
    sdict_optim_hparams h = sdict_optim_defaults(SDICT_OPTIM_ADAM);
    h.lr = 0.1;
    /* step 1: m = 0.1 g, v = 0.001 g^2; bias-corrected the update is lr * g / (|g| + eps) */
    sdict_optim *o = make(SDICT_OPTIM_ADAM, &h, &f);
    set_grads(&f, 0.5f, -0.25f);
    sdict_optim_step(o, NULL);
    assert_float_equal(f.p0[0], 0.9f, 1e-6);
    assert_float_equal(f.p0[1], -1.9f, 1e-6);
    sdict_optim_free(o);
    /* AdamW: p *= 1 - lr*wd first (0.99), then the same update */
    h = sdict_optim_defaults(SDICT_OPTIM_ADAMW);
    h.lr = 0.1;
    h.weight_decay = 0.1;
    o = make(SDICT_OPTIM_ADAMW, &h, &f);
    set_grads(&f, 0.5f, -0.25f);
    sdict_optim_step(o, NULL);
    assert_float_equal(f.p0[0], 0.99f - 0.1f, 1e-6);
    assert_float_equal(f.p0[1], -1.98f + 0.1f, 1e-6);
    sdict_optim_free(o);
}

/* Double-precision reference of torch's formulas for one scalar parameter. */
typedef struct ref {
    double p, m, v, vmax, buf;
    int step;
    bool has_buf;
} ref;

static void ref_step(sdict_optim_kind kind, const sdict_optim_hparams *h, ref *r, double g) {
    if (h->maximize) g = -g;
    if (kind == SDICT_OPTIM_SGD) {
        if (h->weight_decay != 0) g += h->weight_decay * r->p;
        if (h->momentum != 0) {
            r->buf = r->has_buf ? h->momentum * r->buf + (1 - h->dampening) * g : g;
            r->has_buf = true;
            g = h->nesterov ? g + h->momentum * r->buf : r->buf;
        }
        r->p -= h->lr * g;
        return;
    }
    r->step++;
    if (kind == SDICT_OPTIM_ADAMW) r->p *= 1 - h->lr * h->weight_decay;
    else if (h->weight_decay != 0) g += h->weight_decay * r->p;
    r->m = h->beta1 * r->m + (1 - h->beta1) * g;
    r->v = h->beta2 * r->v + (1 - h->beta2) * g * g;
    double v = r->v;
    if (h->amsgrad) {
        r->vmax = fmax(r->vmax, r->v);
        v = r->vmax;
    }
    double bc1 = 1 - pow(h->beta1, r->step), bc2 = 1 - pow(h->beta2, r->step);
    r->p -= h->lr / bc1 * r->m / (sqrt(v) / sqrt(bc2) + h->eps);
}

static void run_against_ref(sdict_optim_kind kind, const sdict_optim_hparams *h) {
    fixture f;
    sdict_optim *o = make(kind, h, &f);
    ref r[8];
    memset(r, 0, sizeof r);
    float *ps[8] = {&f.p0[0], &f.p0[1], &f.p1[0], &f.p1[1], &f.p1[2], &f.p1[3], &f.p1[4], &f.p1[5]};
    float *gs[8] = {&f.g0[0], &f.g0[1], &f.g1[0], &f.g1[1], &f.g1[2], &f.g1[3], &f.g1[4], &f.g1[5]};
    for (int i = 0; i < 8; i++) r[i].p = *ps[i];
    uint32_t s = 17;
    for (int step = 0; step < 25; step++) {
        for (int i = 0; i < 8; i++) {
            s = s * 1664525u + 1013904223u;
            /* shrinking gradients, so amsgrad's max differs from v */
            float g = ((float)((s >> 8) & 0xFFFF) / 32768.0f - 1.0f) * (float)(25 - step) / 25.0f;
            *gs[i] = g;
            ref_step(kind, h, &r[i], g);
        }
        assert_int_equal(sdict_optim_step(o, NULL), SDICT_OK);
    }
    for (int i = 0; i < 8; i++)
        if (fabs(*ps[i] - r[i].p) > 1e-5 * (1 + fabs(r[i].p)))
            fail_msg("param %d: %.8f vs reference %.8f", i, *ps[i], r[i].p);
    sdict_optim_free(o);
}

static void test_against_reference(void **state) {
    (void)state;
    sdict_optim_hparams h = sdict_optim_defaults(SDICT_OPTIM_SGD);
    h.lr = 0.05;
    run_against_ref(SDICT_OPTIM_SGD, &h);
    h.momentum = 0.9;
    run_against_ref(SDICT_OPTIM_SGD, &h);
    h.nesterov = true;
    h.weight_decay = 0.01;
    run_against_ref(SDICT_OPTIM_SGD, &h);
    h.nesterov = false;
    h.dampening = 0.3;
    h.maximize = true;
    run_against_ref(SDICT_OPTIM_SGD, &h);
    for (int k = SDICT_OPTIM_ADAM; k <= SDICT_OPTIM_ADAMW; k++) {
        h = sdict_optim_defaults((sdict_optim_kind)k);
        h.lr = 0.01;
        run_against_ref((sdict_optim_kind)k, &h);
        h.amsgrad = true;
        run_against_ref((sdict_optim_kind)k, &h);
        h.weight_decay = 0.05;
        h.beta1 = 0.5;
        h.beta2 = 0.9;
        h.eps = 1e-6;
        run_against_ref((sdict_optim_kind)k, &h);
        h.maximize = true;
        run_against_ref((sdict_optim_kind)k, &h);
    }
}

static void test_constructor_checks(void **state) {
    (void)state;
    fixture f;
    fixture_init(&f);
    sdict_optim *o = sdict_optim_new(SDICT_OPTIM_SGD);
    sdict_optim_hparams h = sdict_optim_defaults(SDICT_OPTIM_SGD);
    sdict_error err;
    h.nesterov = true;
    assert_int_equal(sdict_optim_add_group(o, &h, f.params, 2, &err), SDICT_E_INVALID_ARG);
    assert_string_equal(err.message, "Nesterov momentum requires a momentum and zero dampening");
    h.nesterov = false;
    h.lr = -1.0;
    assert_int_equal(sdict_optim_add_group(o, &h, f.params, 2, &err), SDICT_E_INVALID_ARG);
    assert_string_equal(err.message, "Invalid learning rate: -1.0");
    assert_int_equal(sdict_optim_n_groups(o), 0);
    sdict_optim_free(o);
    o = sdict_optim_new(SDICT_OPTIM_ADAM);
    h = sdict_optim_defaults(SDICT_OPTIM_ADAM);
    h.beta1 = 1.0;
    assert_int_equal(sdict_optim_add_group(o, &h, f.params, 2, &err), SDICT_E_INVALID_ARG);
    assert_string_equal(err.message, "Invalid beta parameter at index 0: 1.0");
    sdict_optim_free(o);
}

/* ---- state_dict layout ---- */

static void expect_keys(const sdict_value *d, const char *const *keys, size_t n) {
    assert_int_equal(sdict_dict_len(d), n);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(sdict_str_get(sdict_dict_key(d, i), NULL), keys[i]);
}

static void test_state_dict_layout(void **state) {
    (void)state;
    static const char *const sgd_keys[] = {"lr", "momentum", "dampening", "weight_decay",
                                           "nesterov", "maximize", "foreach", "differentiable",
                                           "params"};
    static const char *const adam_keys[] = {"lr", "betas", "eps", "weight_decay", "amsgrad",
                                            "maximize", "foreach", "capturable",
                                            "differentiable", "fused", "params"};
    static const char *const adamw_keys[] = {"lr", "betas", "eps", "weight_decay", "amsgrad",
                                             "foreach", "maximize", "capturable", "params"};
    fixture f;
    sdict_doc *doc;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    sdict_value *sd;

    /* SGD without momentum: empty state before a step, then momentum_buffer None */
    sdict_optim_hparams h = sdict_optim_defaults(SDICT_OPTIM_SGD);
    sdict_optim *o = make(SDICT_OPTIM_SGD, &h, &f);
    assert_int_equal(sdict_optim_state_dict(o, doc, &sd, NULL), SDICT_OK);
    static const char *const top[] = {"state", "param_groups"};
    expect_keys(sd, top, 2);
    assert_int_equal(sdict_dict_len(sdict_dict_get(sd, "state")), 0);
    const sdict_value *g = sdict_seq_item(sdict_dict_get(sd, "param_groups"), 0);
    expect_keys(g, sgd_keys, 9);
    assert_int_equal(sdict_value_kind(sdict_dict_get(g, "momentum")), SDICT_KIND_INT);
    assert_int_equal(sdict_value_kind(sdict_dict_get(g, "foreach")), SDICT_KIND_NONE);
    const sdict_value *pl = sdict_dict_get(g, "params");
    assert_int_equal(sdict_seq_len(pl), 2);
    int64_t i1;
    assert_int_equal(sdict_int_get(sdict_seq_item(pl, 1), &i1), SDICT_OK);
    assert_int_equal(i1, 1);
    set_grads(&f, 1, 1);
    sdict_optim_step(o, NULL);
    assert_int_equal(sdict_optim_state_dict(o, doc, &sd, NULL), SDICT_OK);
    const sdict_value *st = sdict_dict_get(sd, "state");
    assert_int_equal(sdict_dict_len(st), 2);
    assert_int_equal(sdict_value_kind(sdict_dict_key(st, 0)), SDICT_KIND_INT);
    assert_int_equal(sdict_value_kind(sdict_dict_get(sdict_dict_get_int(st, 1), "momentum_buffer")),
                     SDICT_KIND_NONE);
    sdict_optim_free(o);

    /* Adam with amsgrad: step is a 0-dim float32 tensor, moments have the parameter's shape */
    h = sdict_optim_defaults(SDICT_OPTIM_ADAM);
    h.amsgrad = true;
    o = make(SDICT_OPTIM_ADAM, &h, &f);
    set_grads(&f, 1, 2);
    sdict_optim_step(o, NULL);
    sdict_optim_step(o, NULL);
    assert_int_equal(sdict_optim_state_dict(o, doc, &sd, NULL), SDICT_OK);
    expect_keys(sdict_seq_item(sdict_dict_get(sd, "param_groups"), 0), adam_keys, 11);
    const sdict_value *s1 = sdict_dict_get_int(sdict_dict_get(sd, "state"), 1);
    static const char *const adam_state[] = {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
    expect_keys(s1, adam_state, 4);
    const sdict_tensor *step = sdict_value_tensor(sdict_dict_get(s1, "step"));
    assert_non_null(step);
    assert_int_equal(step->dtype, SDICT_FLOAT32);
    assert_int_equal(step->ndim, 0);
    assert_float_equal(*(float *)sdict_tensor_data(step), 2.0f, 0);
    const sdict_tensor *ea = sdict_value_tensor(sdict_dict_get(s1, "exp_avg"));
    assert_int_equal(ea->ndim, 2);
    assert_int_equal(ea->shape[0], 2);
    assert_int_equal(ea->shape[1], 3);
    const sdict_value *betas = sdict_dict_get(sdict_seq_item(sdict_dict_get(sd, "param_groups"), 0), "betas");
    assert_int_equal(sdict_value_kind(betas), SDICT_KIND_TUPLE);
    sdict_optim_free(o);

    h = sdict_optim_defaults(SDICT_OPTIM_ADAMW);
    o = make(SDICT_OPTIM_ADAMW, &h, &f);
    assert_int_equal(sdict_optim_state_dict(o, doc, &sd, NULL), SDICT_OK);
    expect_keys(sdict_seq_item(sdict_dict_get(sd, "param_groups"), 0), adamw_keys, 9);
    sdict_optim_free(o);
    sdict_doc_free(doc);
}

/* ---- load_state_dict ---- */

/* Saves o's state_dict to a torch zip in memory and loads it back (what a file round trip does). */
static sdict_doc *round_trip(const sdict_optim *o) {
    sdict_doc *doc, *back;
    sdict_value *sd;
    void *buf;
    size_t n;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    assert_int_equal(sdict_optim_state_dict(o, doc, &sd, NULL), SDICT_OK);
    assert_int_equal(sdict_save_buffer(sd, NULL, &buf, &n, NULL), SDICT_OK);
    assert_int_equal(sdict_load_buffer(buf, n, "opt", NULL, &back, NULL), SDICT_OK);
    sdict_free_buffer(buf);
    sdict_doc_free(doc);
    return back;
}

static void test_resume_exact(void **state) {
    (void)state;
    for (int k = SDICT_OPTIM_SGD; k <= SDICT_OPTIM_ADAMW; k++) {
        sdict_optim_hparams h = sdict_optim_defaults((sdict_optim_kind)k);
        h.momentum = 0.9;
        h.amsgrad = true;
        fixture a, b;
        sdict_optim *oa = make((sdict_optim_kind)k, &h, &a);
        for (int s = 0; s < 3; s++) {
            set_grads(&a, 0.3f * (float)(s + 1), -0.2f);
            sdict_optim_step(oa, NULL);
        }
        /* b: same weights, a fresh optimizer with other hyperparameters, then load */
        sdict_optim_hparams other = sdict_optim_defaults((sdict_optim_kind)k);
        other.lr = 0.5;
        sdict_optim *ob = make((sdict_optim_kind)k, &other, &b);
        memcpy(b.p0, a.p0, sizeof a.p0);
        memcpy(b.p1, a.p1, sizeof a.p1);
        sdict_doc *doc = round_trip(oa);
        assert_int_equal(sdict_optim_load_state_dict(ob, sdict_doc_root(doc), NULL), SDICT_OK);
        sdict_doc_free(doc);
        assert_float_equal(sdict_optim_group(ob, 0)->lr, h.lr, 0);   /* saved hyperparameters win */
        for (int s = 0; s < 3; s++) {
            set_grads(&a, -0.1f, 0.4f * (float)s);
            set_grads(&b, -0.1f, 0.4f * (float)s);
            sdict_optim_step(oa, NULL);
            sdict_optim_step(ob, NULL);
        }
        assert_memory_equal(a.p0, b.p0, sizeof a.p0);
        assert_memory_equal(a.p1, b.p1, sizeof a.p1);
        sdict_optim_free(oa);
        sdict_optim_free(ob);
    }
}

static sdict_value *adam_like_dict(sdict_doc *doc, size_t n_params, bool int_step) {
    /* a torch 2.x-style Adam state_dict: int or tensor step, extra group keys, lr as tensor */
    sdict_value *sd = sdict_dict_new(doc, false), *st = sdict_dict_new(doc, false);
    sdict_value *groups = sdict_list_new(doc), *g = sdict_dict_new(doc, false);
    sdict_storage *s;
    assert_int_equal(sdict_storage_new(sizeof(float), &s, NULL), SDICT_OK);
    *(float *)sdict_storage_data(s) = 0.25f;
    sdict_tensor t;
    sdict_value *lr;
    assert_int_equal(sdict_tensor_init(&t, SDICT_FLOAT32, 0, NULL, NULL, s, NULL), SDICT_OK);
    assert_int_equal(sdict_tensor_new(doc, &t, &lr, NULL), SDICT_OK);
    sdict_storage_release(s);
    sdict_dict_set_str(g, "lr", lr);
    sdict_value *betas = sdict_tuple_new(doc);
    sdict_seq_append(betas, sdict_float_new(doc, 0.5));
    sdict_seq_append(betas, sdict_float_new(doc, 0.99));
    sdict_dict_set_str(g, "betas", betas);
    sdict_dict_set_str(g, "eps", sdict_float_new(doc, 1e-6));
    sdict_dict_set_str(g, "weight_decay", sdict_int_new(doc, 0));
    sdict_dict_set_str(g, "amsgrad", sdict_bool_new(doc, false));
    sdict_dict_set_str(g, "foreach", sdict_none_new(doc));
    sdict_dict_set_str(g, "maximize", sdict_bool_new(doc, false));
    sdict_dict_set_str(g, "capturable", sdict_bool_new(doc, false));
    sdict_dict_set_str(g, "differentiable", sdict_bool_new(doc, false));
    sdict_dict_set_str(g, "fused", sdict_none_new(doc));
    sdict_dict_set_str(g, "decoupled_weight_decay", sdict_bool_new(doc, false));
    sdict_value *params = sdict_list_new(doc);
    for (size_t i = 0; i < n_params; i++) sdict_seq_append(params, sdict_int_new(doc, (int64_t)i));
    sdict_dict_set_str(g, "params", params);
    sdict_value *names = sdict_list_new(doc);
    sdict_seq_append(names, sdict_str_new(doc, "w", 1));
    sdict_dict_set_str(g, "param_names", names);
    sdict_seq_append(groups, g);
    /* state for parameter 0 only: step 7, exp_avg 1.0, exp_avg_sq 4.0 as float64 tensors */
    sdict_value *s0 = sdict_dict_new(doc, false);
    sdict_value *stepv = NULL;
    if (int_step) stepv = sdict_int_new(doc, 7);
    else {
        assert_int_equal(sdict_storage_new(sizeof(float), &s, NULL), SDICT_OK);
        *(float *)sdict_storage_data(s) = 7.0f;
        assert_int_equal(sdict_tensor_init(&t, SDICT_FLOAT32, 0, NULL, NULL, s, NULL), SDICT_OK);
        assert_int_equal(sdict_tensor_new(doc, &t, &stepv, NULL), SDICT_OK);
        sdict_storage_release(s);
    }
    sdict_dict_set_str(s0, "step", stepv);
    const char *names2[2] = {"exp_avg", "exp_avg_sq"};
    double vals[2] = {1.0, 4.0};
    for (int k = 0; k < 2; k++) {
        assert_int_equal(sdict_storage_new(2 * sizeof(double), &s, NULL), SDICT_OK);
        double *d = sdict_storage_data(s);
        d[0] = d[1] = vals[k];
        int64_t shape[1] = {2}, stride[1];
        sdict_value *v;
        assert_int_equal(sdict_tensor_init(&t, SDICT_FLOAT64, 1, shape, stride, s, NULL), SDICT_OK);
        assert_int_equal(sdict_tensor_new(doc, &t, &v, NULL), SDICT_OK);
        sdict_storage_release(s);
        sdict_dict_set_str(s0, names2[k], v);
    }
    sdict_dict_set(st, sdict_int_new(doc, 0), s0);
    sdict_dict_set_str(sd, "state", st);
    sdict_dict_set_str(sd, "param_groups", groups);
    return sd;
}

static void test_load_2x_layout(void **state) {
    (void)state;
    for (int int_step = 0; int_step < 2; int_step++) {
        sdict_doc *doc;
        assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
        sdict_value *sd = adam_like_dict(doc, 2, int_step);
        fixture f;
        sdict_optim_hparams h = sdict_optim_defaults(SDICT_OPTIM_ADAM);
        sdict_optim *o = make(SDICT_OPTIM_ADAM, &h, &f);
        sdict_error err;
        assert_int_equal(sdict_optim_load_state_dict(o, sd, &err), SDICT_OK);
        const sdict_optim_hparams *g = sdict_optim_group(o, 0);
        assert_float_equal(g->lr, 0.25, 0);
        assert_float_equal(g->beta1, 0.5, 0);
        assert_float_equal(g->beta2, 0.99, 0);
        assert_float_equal(g->eps, 1e-6, 0);
        /* the next step is step 8 of parameter 0 (and step 1 of parameter 1) */
        f.g0[0] = f.g0[1] = 0.0f;
        float before = f.p0[0];
        sdict_optim_step(o, NULL);
        double m = 0.5 * 1.0, v = 0.99 * 4.0;
        double expect = before - 0.25 / (1 - pow(0.5, 8)) * m / (sqrt(v) / sqrt(1 - pow(0.99, 8)) + 1e-6);
        assert_float_equal(f.p0[0], expect, 1e-5);
        sdict_doc *out;
        sdict_value *back;
        assert_int_equal(sdict_doc_new(&out, NULL), SDICT_OK);
        assert_int_equal(sdict_optim_state_dict(o, out, &back, NULL), SDICT_OK);
        const sdict_tensor *st = sdict_value_tensor(
            sdict_dict_get(sdict_dict_get_int(sdict_dict_get(back, "state"), 0), "step"));
        assert_float_equal(*(float *)sdict_tensor_data(st), 8.0f, 0);
        sdict_doc_free(out);
        sdict_optim_free(o);
        sdict_doc_free(doc);
    }
}

/* Fresh optimizers write each torch generation's group keys; a loaded group keeps the file's
   keys, order and the values the optimizer does not compute; Adam honours 2.14's
   decoupled_weight_decay. */
static void test_layouts_and_kept_keys(void **state) {
    (void)state;
    static const char *const sgd2[] = {"lr", "momentum", "dampening", "weight_decay", "nesterov",
                                       "maximize", "foreach", "differentiable", "fused", "params"};
    static const char *const adamw26[] = {"lr", "betas", "eps", "weight_decay", "amsgrad",
                                          "foreach", "maximize", "capturable", "differentiable",
                                          "fused", "params"};
    static const char *const adam214[] = {"lr", "betas", "eps", "weight_decay", "amsgrad",
                                          "maximize", "foreach", "capturable", "differentiable",
                                          "fused", "decoupled_weight_decay", "params"};
    sdict_error err;
    sdict_optim_layout lay;
    assert_int_equal(sdict_optim_layout_from_name("2.9", &lay, &err), SDICT_E_INVALID_ARG);
    assert_non_null(strstr(err.message, "2.14"));
    fixture f;
    sdict_doc *doc;
    sdict_value *sd;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);

    /* SGD, momentum 0, 2.6 layout: fused None, and no state after a step */
    sdict_optim_hparams h = sdict_optim_defaults(SDICT_OPTIM_SGD);
    sdict_optim *o = make(SDICT_OPTIM_SGD, &h, &f);
    assert_int_equal(sdict_optim_layout_from_name("2.6", &lay, NULL), SDICT_OK);
    assert_int_equal(sdict_optim_set_layout(o, lay, NULL), SDICT_OK);
    set_grads(&f, 1.0f, 1.0f);
    sdict_optim_step(o, NULL);
    assert_int_equal(sdict_optim_state_dict(o, doc, &sd, NULL), SDICT_OK);
    assert_int_equal(sdict_dict_len(sdict_dict_get(sd, "state")), 0);
    const sdict_value *g = sdict_seq_item(sdict_dict_get(sd, "param_groups"), 0);
    expect_keys(g, sgd2, sizeof sgd2 / sizeof *sgd2);
    assert_int_equal(sdict_value_kind(sdict_dict_get(g, "fused")), SDICT_KIND_NONE);
    sdict_optim_free(o);

    /* AdamW in 2.6 and 2.14 */
    h = sdict_optim_defaults(SDICT_OPTIM_ADAMW);
    o = make(SDICT_OPTIM_ADAMW, &h, &f);
    assert_int_equal(sdict_optim_set_layout(o, SDICT_OPTIM_LAYOUT_TORCH_2_6, NULL), SDICT_OK);
    assert_int_equal(sdict_optim_state_dict(o, doc, &sd, NULL), SDICT_OK);
    expect_keys(sdict_seq_item(sdict_dict_get(sd, "param_groups"), 0), adamw26,
                sizeof adamw26 / sizeof *adamw26);
    assert_int_equal(sdict_optim_set_layout(o, SDICT_OPTIM_LAYOUT_TORCH_2_14, NULL), SDICT_OK);
    assert_int_equal(sdict_optim_state_dict(o, doc, &sd, NULL), SDICT_OK);
    g = sdict_seq_item(sdict_dict_get(sd, "param_groups"), 0);
    expect_keys(g, adam214, sizeof adam214 / sizeof *adam214);
    assert_true(sdict_bool_get(sdict_dict_get(g, "decoupled_weight_decay")));
    assert_int_equal(sdict_optim_set_layout(o, (sdict_optim_layout)7, NULL), SDICT_E_INVALID_ARG);

    /* an Adam group from 2.14 with decoupled_weight_decay=True, a scheduler's initial_lr and
       foreach=True: loaded, it steps as AdamW and writes the file's keys back */
    sdict_optim_free(o);
    h = sdict_optim_defaults(SDICT_OPTIM_ADAM);
    o = make(SDICT_OPTIM_ADAM, &h, &f);
    sdict_value *gv = sdict_dict_new(doc, false), *params = sdict_list_new(doc);
    sdict_seq_append(params, sdict_int_new(doc, 0));
    sdict_seq_append(params, sdict_int_new(doc, 1));
    sdict_dict_set_str(gv, "lr", sdict_float_new(doc, 0.5));
    sdict_dict_set_str(gv, "weight_decay", sdict_float_new(doc, 0.1));
    sdict_dict_set_str(gv, "foreach", sdict_bool_new(doc, true));
    sdict_dict_set_str(gv, "decoupled_weight_decay", sdict_bool_new(doc, true));
    sdict_dict_set_str(gv, "params", params);
    sdict_dict_set_str(gv, "initial_lr", sdict_float_new(doc, 0.75));
    /* lists holding the same list twice, 24 deep: kept and written back shared, not 2^24 copies */
    sdict_value *dag = sdict_list_new(doc);
    for (int d = 0; d < 24; d++) {
        sdict_value *up = sdict_list_new(doc);
        sdict_seq_append(up, dag);
        sdict_seq_append(up, dag);
        dag = up;
    }
    sdict_dict_set_str(gv, "dag", dag);
    sdict_value *groups = sdict_list_new(doc), *in = sdict_dict_new(doc, false);
    sdict_seq_append(groups, gv);
    sdict_dict_set_str(in, "state", sdict_dict_new(doc, false));
    sdict_dict_set_str(in, "param_groups", groups);
    assert_int_equal(sdict_optim_load_state_dict(o, in, &err), SDICT_OK);
    assert_int_equal(sdict_optim_get_layout(o), SDICT_OPTIM_LAYOUT_TORCH_2_14);
    assert_true(sdict_optim_group(o, 0)->decoupled_weight_decay);
    set_grads(&f, 0.0f, 0.0f);
    float before = f.p0[0];
    sdict_optim_step(o, NULL);   /* zero gradient: only the decoupled decay moves p */
    assert_float_equal(f.p0[0], before * (float)(1.0 - 0.5 * 0.1), 1e-7);
    sdict_optim_group(o, 0)->lr = 0.25;
    assert_int_equal(sdict_optim_state_dict(o, doc, &sd, NULL), SDICT_OK);
    g = sdict_seq_item(sdict_dict_get(sd, "param_groups"), 0);
    static const char *const kept[] = {"lr", "weight_decay", "foreach", "decoupled_weight_decay",
                                       "params", "initial_lr", "dag", "betas", "eps", "amsgrad",
                                       "maximize", "capturable", "differentiable", "fused"};
    expect_keys(g, kept, sizeof kept / sizeof *kept);
    assert_float_equal(sdict_float_get(sdict_dict_get(g, "lr")), 0.25, 0);
    assert_float_equal(sdict_float_get(sdict_dict_get(g, "initial_lr")), 0.75, 0);
    assert_true(sdict_bool_get(sdict_dict_get(g, "foreach")));
    const sdict_value *dag_out = sdict_dict_get(g, "dag");
    for (int d = 0; d < 24; d++) {
        assert_int_equal(sdict_seq_len(dag_out), 2);
        assert_ptr_equal(sdict_seq_item(dag_out, 0), sdict_seq_item(dag_out, 1));
        dag_out = sdict_seq_item(dag_out, 0);
    }
    assert_int_equal(sdict_seq_len(dag_out), 0);
    sdict_optim_free(o);
    sdict_doc_free(doc);
}

static void test_load_errors(void **state) {
    (void)state;
    sdict_doc *doc;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    fixture f;
    sdict_optim_hparams h = sdict_optim_defaults(SDICT_OPTIM_ADAM);
    sdict_optim *o = make(SDICT_OPTIM_ADAM, &h, &f);
    sdict_error err;
    /* group size differs */
    sdict_value *sd = adam_like_dict(doc, 3, false);
    assert_int_equal(sdict_optim_load_state_dict(o, sd, &err), SDICT_E_INVALID_ARG);
    assert_string_equal(err.message, "loaded state dict contains a parameter group that doesn't "
                                     "match the size of optimizer's group");
    /* number of groups differs */
    sdict_optim_param extra = f.params[0];
    assert_int_equal(sdict_optim_add_group(o, &h, &extra, 1, NULL), SDICT_OK);
    sd = adam_like_dict(doc, 2, false);
    assert_int_equal(sdict_optim_load_state_dict(o, sd, &err), SDICT_E_INVALID_ARG);
    assert_string_equal(err.message, "loaded state dict has a different number of parameter groups");
    sdict_optim_free(o);
    /* a state tensor of the wrong size fails and leaves the optimizer as it was */
    o = make(SDICT_OPTIM_ADAM, &h, &f);
    sd = adam_like_dict(doc, 2, false);
    sdict_value *s0 = sdict_dict_get_int(sdict_dict_get(sd, "state"), 0);
    sdict_dict_set(sdict_dict_get(sd, "state"), sdict_int_new(doc, 1), s0);  /* [2] for a [2,3] */
    assert_int_equal(sdict_optim_load_state_dict(o, sd, &err), SDICT_E_SHAPE);
    assert_non_null(strstr(err.message, "state[1]['exp_avg'] has 2 elements"));
    assert_float_equal(sdict_optim_group(o, 0)->lr, 1e-3, 0);
    sdict_doc *cur = round_trip(o);
    assert_int_equal(sdict_dict_len(sdict_dict_get(sdict_doc_root(cur), "state")), 0);
    sdict_doc_free(cur);
    /* not a state_dict at all */
    assert_int_equal(sdict_optim_load_state_dict(o, sdict_int_new(doc, 3), &err), SDICT_E_INVALID_ARG);
    sdict_optim_free(o);
    sdict_doc_free(doc);
}

/* Another optimizer family's state_dict is refused naming both, and changes nothing. */
static void test_refuse_other_kind(void **state) {
    (void)state;
    fixture fa, fs, fw;
    sdict_optim_hparams ha = sdict_optim_defaults(SDICT_OPTIM_ADAM);
    sdict_optim_hparams hs = sdict_optim_defaults(SDICT_OPTIM_SGD);
    sdict_optim_hparams hw = sdict_optim_defaults(SDICT_OPTIM_ADAMW);
    hs.momentum = 0.9;
    sdict_optim *adam = make(SDICT_OPTIM_ADAM, &ha, &fa);
    sdict_optim *sgd = make(SDICT_OPTIM_SGD, &hs, &fs);
    sdict_optim *adamw = make(SDICT_OPTIM_ADAMW, &hw, &fw);
    sdict_error err;
    /* before any step: the groups alone tell (1.13 layout: Adam writes maximize first) */
    sdict_doc *a0 = round_trip(adam), *s0 = round_trip(sgd), *w0 = round_trip(adamw);
    assert_int_equal(sdict_optim_load_state_dict(sgd, sdict_doc_root(a0), &err), SDICT_E_INVALID_ARG);
    assert_string_equal(err.message, "cannot load an optimizer state_dict written by Adam into "
                                     "SGD: param_groups[0] has 'betas'");
    assert_int_equal(sdict_optim_load_state_dict(sgd, sdict_doc_root(w0), &err), SDICT_E_INVALID_ARG);
    assert_string_equal(err.message, "cannot load an optimizer state_dict written by AdamW into "
                                     "SGD: param_groups[0] has 'betas'");
    assert_int_equal(sdict_optim_load_state_dict(adam, sdict_doc_root(s0), &err), SDICT_E_INVALID_ARG);
    assert_string_equal(err.message, "cannot load an optimizer state_dict written by SGD into "
                                     "Adam: param_groups[0] has 'momentum'");
    assert_int_equal(sdict_optim_load_state_dict(adamw, sdict_doc_root(s0), &err), SDICT_E_INVALID_ARG);
    assert_string_equal(err.message, "cannot load an optimizer state_dict written by SGD into "
                                     "AdamW: param_groups[0] has 'momentum'");
    /* Adam and AdamW take each other's, as torch */
    assert_int_equal(sdict_optim_load_state_dict(adamw, sdict_doc_root(a0), &err), SDICT_OK);
    assert_int_equal(sdict_optim_load_state_dict(adam, sdict_doc_root(w0), &err), SDICT_OK);
    sdict_doc_free(a0);
    sdict_doc_free(s0);
    sdict_doc_free(w0);

    /* after a step, with the hyperparameter keys removed: the per-parameter state tells
       (a fresh Adam: the one above now keeps AdamW's loaded group, key order included) */
    sdict_optim_free(adam);
    adam = make(SDICT_OPTIM_ADAM, &ha, &fa);
    set_grads(&fa, 0.5f, -0.5f);
    set_grads(&fs, 0.5f, -0.5f);
    sdict_optim_step(adam, NULL);
    sdict_optim_step(sgd, NULL);
    a0 = round_trip(adam);
    s0 = round_trip(sgd);
    const char *adam_keys[] = {"betas", "eps", "amsgrad"};
    const char *sgd_keys[] = {"momentum", "dampening", "nesterov"};
    sdict_value *ga = sdict_seq_item(sdict_dict_get(sdict_doc_root(a0), "param_groups"), 0);
    sdict_value *gs = sdict_seq_item(sdict_dict_get(sdict_doc_root(s0), "param_groups"), 0);
    sdict_value *ga2 = sdict_dict_new(a0, false), *gs2 = sdict_dict_new(s0, false);
    for (size_t j = 0; j < sdict_dict_len(ga); j++) {
        const char *k = sdict_str_get(sdict_dict_key(ga, j), NULL);
        bool drop = false;
        for (int i = 0; i < 3; i++) drop |= strcmp(k, adam_keys[i]) == 0;
        if (!drop) sdict_dict_set(ga2, sdict_dict_key(ga, j), sdict_dict_val(ga, j));
    }
    for (size_t j = 0; j < sdict_dict_len(gs); j++) {
        const char *k = sdict_str_get(sdict_dict_key(gs, j), NULL);
        bool drop = false;
        for (int i = 0; i < 3; i++) drop |= strcmp(k, sgd_keys[i]) == 0;
        if (!drop) sdict_dict_set(gs2, sdict_dict_key(gs, j), sdict_dict_val(gs, j));
    }
    sdict_value *la = sdict_list_new(a0), *ls = sdict_list_new(s0);
    assert_int_equal(sdict_seq_append(la, ga2), SDICT_OK);
    assert_int_equal(sdict_seq_append(ls, gs2), SDICT_OK);
    assert_int_equal(sdict_dict_set_str(sdict_doc_root(a0), "param_groups", la), SDICT_OK);
    assert_int_equal(sdict_dict_set_str(sdict_doc_root(s0), "param_groups", ls), SDICT_OK);
    float before[2] = {fs.p0[0], fs.p0[1]};
    assert_int_equal(sdict_optim_load_state_dict(sgd, sdict_doc_root(a0), &err), SDICT_E_INVALID_ARG);
    assert_string_equal(err.message, "cannot load an optimizer state_dict written by Adam into "
                                     "SGD: state[0] has 'exp_avg'");
    assert_int_equal(sdict_optim_load_state_dict(adam, sdict_doc_root(s0), &err), SDICT_E_INVALID_ARG);
    assert_string_equal(err.message, "cannot load an optimizer state_dict written by SGD into "
                                     "Adam: state[0] has 'momentum_buffer'");
    /* nothing changed: the refused optimizer still has its own hyperparameters and state */
    assert_float_equal(sdict_optim_group(sgd, 0)->momentum, 0.9, 0);
    sdict_doc *cur = round_trip(sgd);
    assert_non_null(sdict_dict_get(sdict_dict_get_int(sdict_dict_get(sdict_doc_root(cur), "state"), 0),
                                   "momentum_buffer"));
    sdict_doc_free(cur);
    set_grads(&fs, 0.0f, 0.0f);
    sdict_optim_step(sgd, NULL);   /* momentum keeps moving the weights */
    assert_true(fs.p0[0] != before[0] && fs.p0[1] != before[1]);
    sdict_doc_free(a0);
    sdict_doc_free(s0);
    sdict_optim_free(adam);
    sdict_optim_free(sgd);
    sdict_optim_free(adamw);
}

static void test_checkpoint_helpers(void **state) {
    (void)state;
    sdict_doc *doc;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    sdict_value *ck = sdict_dict_new(doc, false);
    sdict_dict_set_str(ck, "epoch", sdict_int_new(doc, 5));
    sdict_dict_set_str(ck, "loss", sdict_float_new(doc, 0.5));
    sdict_dict_set_str(ck, "model_state_dict", sdict_dict_new(doc, true));
    double d;
    sdict_error err;
    assert_int_equal(sdict_checkpoint_number(ck, "epoch", &d, NULL), SDICT_OK);
    assert_float_equal(d, 5.0, 0);
    assert_int_equal(sdict_checkpoint_number(ck, "loss", &d, NULL), SDICT_OK);
    assert_float_equal(d, 0.5, 0);
    assert_non_null(sdict_checkpoint_dict(ck, "model_state_dict", NULL));
    assert_null(sdict_checkpoint_dict(ck, "optimizer_state_dict", &err));
    assert_int_equal(err.code, SDICT_E_NOT_FOUND);
    assert_string_equal(err.message, "checkpoint has no key 'optimizer_state_dict'");
    assert_null(sdict_checkpoint_dict(ck, "epoch", &err));
    assert_int_equal(err.code, SDICT_E_INVALID_ARG);
    sdict_doc_free(doc);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sgd_by_hand),       cmocka_unit_test(test_adam_by_hand),
        cmocka_unit_test(test_against_reference), cmocka_unit_test(test_constructor_checks),
        cmocka_unit_test(test_state_dict_layout), cmocka_unit_test(test_resume_exact),
        cmocka_unit_test(test_load_2x_layout),    cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_checkpoint_helpers), cmocka_unit_test(test_layouts_and_kept_keys),
        cmocka_unit_test(test_refuse_other_kind),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
