/*
 test_nn_rnn.c - LSTM and GRU (several layers, bidirectional, batch_first, initial states,
 dropout between layers), Sigmoid, Tanh, SiLU, Conv1d and CrossEntropyLoss over sequences:
 every backward against central finite differences of the forward, Conv1d's forward against
 a naive loop, parameter names and shapes as torch's, and the errors for bad shapes. torch
 itself is the reference in tests/rnn/rnn_torch.py.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "statedict_nn.h"
#include "statedict_optim.h"

static float lcg(uint32_t *s) {
    *s = *s * 1664525u + 1013904223u;
    return (float)((*s >> 8) & 0xFFFF) / 32768.0f - 1.0f;
}

static void fill(float *p, int64_t n, uint32_t seed) {
    for (int64_t i = 0; i < n; i++) p[i] = lcg(&seed);
}

static void make(sdict_act *a, int32_t nd, const int64_t *shape, uint32_t seed) {
    assert_int_equal(sdict_act_init(a, SDICT_FLOAT32, nd, shape, NULL), SDICT_OK);
    fill(sdict_act_f32(a), sdict_act_numel(a), seed);
}

static double dot(const sdict_act *a, const sdict_act *w) {
    if (!a || !w || !w->data) return 0.0;
    assert_int_equal(sdict_act_numel(a), sdict_act_numel(w));
    double s = 0.0;
    const float *x = a->data, *y = w->data;
    for (int64_t i = 0; i < sdict_act_numel(a); i++) s += (double)x[i] * y[i];
    return s;
}

static void expect_close(const char *what, int64_t i, double analytic, double numeric) {
    if (fabs(analytic - numeric) > 5e-4 + 5e-3 * fabs(numeric)) {
        print_error("%s[%lld]: backward %.7g, finite difference %.7g\n", what, (long long)i,
                    analytic, numeric);
        fail();
    }
}

/*==================================================================================================
 LSTM / GRU
==================================================================================================*/

typedef struct rnn_case {
    bool lstm;
    int64_t I, H, L, T, B;
    bool bidir, batch_first, bias, with_h0, unbatched;
    double dropout;
} rnn_case;

/* Loss = <out, wo> + <h_n, wh> + <c_n, wc>; forward with the dropout generator reseeded so
   every evaluation uses the same masks. */
static double rnn_loss(sdict_module *m, const sdict_act *x, const sdict_act *h0,
                       const sdict_act *c0, const sdict_act *wo, const sdict_act *wh,
                       const sdict_act *wc) {
    sdict_act out, hn, cn;
    sdict_dropout_seed(m, 1234);
    assert_int_equal(sdict_rnn_forward(m, x, h0, c0, &out, &hn, wc ? &cn : NULL, NULL), SDICT_OK);
    double l = dot(&out, wo) + dot(&hn, wh) + (wc ? dot(&cn, wc) : 0.0);
    sdict_act_free(&out);
    sdict_act_free(&hn);
    if (wc) sdict_act_free(&cn);
    return l;
}

static void numeric_check(const char *what, float *p, const float *g, int64_t n,
                          double (*f)(void *), void *ctx, int64_t stride) {
    for (int64_t i = 0; i < n; i += stride) {
        float keep = p[i];
        const float eps = 1e-2f;
        p[i] = keep + eps;
        double up = f(ctx);
        p[i] = keep - eps;
        double dn = f(ctx);
        p[i] = keep;
        expect_close(what, i, g[i], (up - dn) / (2.0 * eps));
    }
}

typedef struct rnn_ctx {
    sdict_module *m;
    sdict_act *x, *h0, *c0, *wo, *wh, *wc;
} rnn_ctx;

static double rnn_ctx_loss(void *p) {
    rnn_ctx *c = p;
    return rnn_loss(c->m, c->x, c->h0, c->c0, c->wo, c->wh, c->wc);
}

static void check_rnn(const rnn_case *k) {
    sdict_module *m = k->lstm ? sdict_lstm_new(k->I, k->H, k->L, k->bias, k->batch_first,
                                               k->dropout, k->bidir)
                              : sdict_gru_new(k->I, k->H, k->L, k->bias, k->batch_first,
                                              k->dropout, k->bidir);
    assert_non_null(m);
    int64_t D = k->bidir ? 2 : 1;
    assert_int_equal(m->n_params, (size_t)(k->L * D * (k->bias ? 4 : 2)));
    sdict_act x, h0 = {0}, c0 = {0}, wo, wh, wc = {0};
    int64_t xs[3], os[3], ss[3];
    int32_t nd = k->unbatched ? 2 : 3;
    if (k->unbatched) {
        xs[0] = k->T; xs[1] = k->I;
        os[0] = k->T; os[1] = D * k->H;
        ss[0] = k->L * D; ss[1] = k->H;
    } else {
        xs[0] = k->batch_first ? k->B : k->T; xs[1] = k->batch_first ? k->T : k->B; xs[2] = k->I;
        os[0] = xs[0]; os[1] = xs[1]; os[2] = D * k->H;
        ss[0] = k->L * D; ss[1] = k->B; ss[2] = k->H;
    }
    make(&x, nd, xs, 3);
    if (k->with_h0) {
        make(&h0, nd, ss, 5);
        if (k->lstm) make(&c0, nd, ss, 7);
    }
    make(&wo, nd, os, 11);
    make(&wh, nd, ss, 13);
    if (k->lstm) make(&wc, nd, ss, 17);
    rnn_ctx ctx = {m, &x, k->with_h0 ? &h0 : NULL, k->with_h0 && k->lstm ? &c0 : NULL, &wo, &wh,
                   k->lstm ? &wc : NULL};

    /* analytic gradients of the same loss */
    sdict_module_zero_grad(m);
    sdict_act out, hn, cn, dx, dh0, dc0;
    sdict_dropout_seed(m, 1234);
    assert_int_equal(sdict_rnn_forward(m, &x, ctx.h0, ctx.c0, &out, &hn, k->lstm ? &cn : NULL,
                                       NULL), SDICT_OK);
    assert_int_equal(out.ndim, nd);
    assert_memory_equal(out.shape, os, sizeof(int64_t) * (size_t)nd);
    assert_memory_equal(hn.shape, ss, sizeof(int64_t) * (size_t)nd);
    assert_int_equal(sdict_rnn_backward(m, &wo, &wh, k->lstm ? &wc : NULL, &dx, &dh0,
                                        k->lstm ? &dc0 : NULL, NULL), SDICT_OK);
    for (size_t i = 0; i < m->n_params; i++) {
        sdict_named_tensor *nt = &m->params[i];
        int64_t n = sdict_tensor_numel(&nt->value);
        numeric_check(nt->name, sdict_storage_data(nt->value.storage),
                      sdict_storage_data(nt->grad.storage), n, rnn_ctx_loss, &ctx, n > 40 ? 3 : 1);
    }
    numeric_check("input", x.data, dx.data, sdict_act_numel(&x), rnn_ctx_loss, &ctx, 1);
    if (k->with_h0) {
        numeric_check("h0", h0.data, dh0.data, sdict_act_numel(&h0), rnn_ctx_loss, &ctx, 1);
        if (k->lstm) numeric_check("c0", c0.data, dc0.data, sdict_act_numel(&c0), rnn_ctx_loss,
                                   &ctx, 1);
    }
    sdict_act_free(&out); sdict_act_free(&hn); sdict_act_free(&dx); sdict_act_free(&dh0);
    if (k->lstm) { sdict_act_free(&cn); sdict_act_free(&dc0); }
    sdict_act_free(&x); sdict_act_free(&h0); sdict_act_free(&c0);
    sdict_act_free(&wo); sdict_act_free(&wh); sdict_act_free(&wc);
    sdict_module_free(m);
}

static void test_lstm_grad(void **state) {
    (void)state;
    rnn_case cases[] = {
        {true, 3, 4, 1, 5, 2, false, false, true, false, false, 0.0},
        {true, 3, 4, 2, 4, 2, true, true, true, true, false, 0.0},
        {true, 2, 3, 2, 3, 3, false, false, false, true, false, 0.0},
        {true, 3, 3, 2, 4, 1, true, false, true, true, true, 0.0},
        {true, 3, 3, 3, 3, 2, true, false, true, true, false, 0.4},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_rnn(&cases[i]);
}

static void test_gru_grad(void **state) {
    (void)state;
    rnn_case cases[] = {
        {false, 3, 4, 1, 5, 2, false, false, true, false, false, 0.0},
        {false, 3, 4, 2, 4, 2, true, true, true, true, false, 0.0},
        {false, 2, 3, 2, 3, 3, false, false, false, true, false, 0.0},
        {false, 3, 3, 2, 4, 1, true, true, true, true, true, 0.0},
        {false, 3, 3, 3, 3, 2, true, false, true, true, false, 0.4},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_rnn(&cases[i]);
}

/* torch's names, order and shapes (nn.LSTM(3, 5, num_layers=2, bidirectional=True)). */
static void test_rnn_params(void **state) {
    (void)state;
    sdict_module *m = sdict_lstm_new(3, 5, 2, true, false, 0.0, true);
    assert_non_null(m);
    const char *names[] = {"weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
                           "weight_ih_l0_reverse", "weight_hh_l0_reverse", "bias_ih_l0_reverse",
                           "bias_hh_l0_reverse", "weight_ih_l1", "weight_hh_l1", "bias_ih_l1",
                           "bias_hh_l1", "weight_ih_l1_reverse", "weight_hh_l1_reverse",
                           "bias_ih_l1_reverse", "bias_hh_l1_reverse"};
    assert_int_equal(m->n_params, 16);
    for (size_t i = 0; i < 16; i++) assert_string_equal(m->params[i].name, names[i]);
    assert_int_equal(m->params[0].value.shape[0], 20);
    assert_int_equal(m->params[0].value.shape[1], 3);
    assert_int_equal(m->params[8].value.shape[1], 10);
    assert_int_equal(m->params[9].value.shape[1], 5);
    assert_string_equal(m->type_name, "LSTM");
    sdict_module_free(m);
    m = sdict_gru_new(3, 5, 1, false, false, 0.0, false);
    assert_int_equal(m->n_params, 2);
    assert_int_equal(m->params[0].value.shape[0], 15);
    sdict_module_free(m);
    assert_null(sdict_lstm_new(0, 5, 1, true, false, 0.0, false));
    assert_null(sdict_gru_new(3, 5, 1, true, false, 1.5, false));
}

static void test_rnn_errors(void **state) {
    (void)state;
    sdict_module *m = sdict_gru_new(3, 4, 2, true, false, 0.0, false);
    sdict_act x, bad, out, hn, cn;
    sdict_error err;
    int64_t xs[3] = {5, 2, 3}, wrong[3] = {5, 2, 4}, hs[3] = {1, 2, 4};
    make(&x, 3, xs, 1);
    make(&bad, 3, wrong, 1);
    assert_int_equal(sdict_rnn_forward(m, &bad, NULL, NULL, &out, NULL, NULL, &err),
                     SDICT_E_SHAPE);
    assert_non_null(strstr(err.message, "input_size"));
    int64_t empty[3] = {5, 0, 3};
    sdict_act e;
    assert_int_equal(sdict_act_init(&e, SDICT_FLOAT32, 3, empty, NULL), SDICT_OK);
    assert_int_equal(sdict_rnn_forward(m, &e, NULL, NULL, &out, NULL, NULL, &err), SDICT_E_SHAPE);
    assert_non_null(strstr(err.message, "batch of size 0"));
    sdict_act h0;
    make(&h0, 3, hs, 2);   /* needs [2, 2, 4] */
    assert_int_equal(sdict_rnn_forward(m, &x, &h0, NULL, &out, &hn, NULL, &err), SDICT_E_SHAPE);
    assert_non_null(strstr(err.message, "Expected hidden size (2, 2, 4)"));
    assert_int_equal(sdict_rnn_forward(m, &x, NULL, NULL, &out, &hn, &cn, &err),
                     SDICT_E_INVALID_ARG);
    /* backward without a training-mode forward */
    sdict_module_eval(m);
    assert_int_equal(sdict_module_forward(m, &x, &out, &err), SDICT_OK);
    assert_int_equal(sdict_module_backward(m, &out, NULL, &err), SDICT_E_INVALID_ARG);
    sdict_act_free(&out);
    /* the generic module entry points: forward returns output, backward takes its gradient */
    sdict_module_train(m, true);
    assert_int_equal(sdict_module_forward(m, &x, &out, &err), SDICT_OK);
    assert_int_equal(out.shape[2], 4);
    sdict_act dx;
    assert_int_equal(sdict_module_backward(m, &out, &dx, &err), SDICT_OK);
    assert_memory_equal(dx.shape, xs, sizeof xs);
    sdict_act_free(&dx);
    assert_int_equal(sdict_module_backward(m, &x, &dx, &err), SDICT_E_SHAPE);
    sdict_act_free(&out);
    sdict_act_free(&x);
    sdict_act_free(&bad);
    sdict_act_free(&h0);
    sdict_module_free(m);
}

/*==================================================================================================
 Sigmoid, Tanh, SiLU, Conv1d
==================================================================================================*/

typedef struct mod_ctx {
    sdict_module *m;
    sdict_act *x, *w;
} mod_ctx;

static double mod_loss(void *p) {
    mod_ctx *c = p;
    sdict_act y;
    assert_int_equal(sdict_module_forward(c->m, c->x, &y, NULL), SDICT_OK);
    double l = dot(&y, c->w);
    sdict_act_free(&y);
    return l;
}

static void check_module_grad(sdict_module *m, int32_t nd, const int64_t *xs) {
    sdict_act x, y, w, dx;
    make(&x, nd, xs, 21);
    for (int64_t i = 0; i < sdict_act_numel(&x); i++) sdict_act_f32(&x)[i] *= 3.0f;
    sdict_module_zero_grad(m);
    assert_int_equal(sdict_module_forward(m, &x, &y, NULL), SDICT_OK);
    make(&w, y.ndim, y.shape, 23);
    assert_int_equal(sdict_module_backward(m, &w, &dx, NULL), SDICT_OK);
    assert_int_equal(dx.ndim, nd);
    assert_memory_equal(dx.shape, xs, sizeof(int64_t) * (size_t)nd);
    mod_ctx ctx = {m, &x, &w};
    for (size_t i = 0; i < m->n_params; i++)
        numeric_check(m->params[i].name, sdict_storage_data(m->params[i].value.storage),
                      sdict_storage_data(m->params[i].grad.storage),
                      sdict_tensor_numel(&m->params[i].value), mod_loss, &ctx, 1);
    numeric_check(m->type_name, x.data, dx.data, sdict_act_numel(&x), mod_loss, &ctx, 1);
    sdict_act_free(&x); sdict_act_free(&y); sdict_act_free(&w); sdict_act_free(&dx);
    sdict_module_free(m);
}

static void test_pointwise(void **state) {
    (void)state;
    int64_t xs[3] = {2, 3, 4};
    sdict_module *m = sdict_sigmoid_new();
    sdict_act x, y;
    make(&x, 3, xs, 5);
    assert_int_equal(sdict_module_forward(m, &x, &y, NULL), SDICT_OK);
    for (int64_t i = 0; i < 24; i++)
        assert_true(fabs(sdict_act_f32(&y)[i] - 1.0 / (1.0 + exp(-sdict_act_f32(&x)[i]))) < 1e-6);
    sdict_act_free(&y);
    sdict_act_free(&x);
    check_module_grad(m, 3, xs);
    check_module_grad(sdict_tanh_new(), 3, xs);
    check_module_grad(sdict_silu_new(), 3, xs);
}

static void conv1d_naive(sdict_module *m, const sdict_act *x, int64_t k, int64_t s, int64_t p,
                         int64_t d, int64_t g) {
    sdict_act y;
    assert_int_equal(sdict_module_forward(m, x, &y, NULL), SDICT_OK);
    int64_t N = x->shape[0], C = x->shape[1], L = x->shape[2], O = m->cfg.out_features;
    int64_t OL = (L + 2 * p - d * (k - 1) - 1) / s + 1;
    assert_int_equal(y.ndim, 3);
    assert_int_equal(y.shape[2], OL);
    const float *W = sdict_storage_data(m->params[0].value.storage);
    const float *b = m->cfg.has_bias ? sdict_storage_data(m->params[1].value.storage) : NULL;
    int64_t Cg = C / g, Og = O / g;
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < O; o++)
            for (int64_t ol = 0; ol < OL; ol++) {
                double acc = b ? b[o] : 0.0;
                for (int64_t c = 0; c < Cg; c++)
                    for (int64_t j = 0; j < k; j++) {
                        int64_t il = ol * s - p + j * d;
                        if (il < 0 || il >= L) continue;
                        acc += (double)W[(o * Cg + c) * k + j] *
                               sdict_act_f32(x)[(n * C + (o / Og) * Cg + c) * L + il];
                    }
                float got = sdict_act_f32(&y)[(n * O + o) * OL + ol];
                assert_true(fabs(got - acc) < 1e-4 * (1.0 + fabs(acc)));
            }
    sdict_act_free(&y);
}

static void test_conv1d(void **state) {
    (void)state;
    int64_t xs[3] = {2, 4, 9};
    sdict_act x;
    make(&x, 3, xs, 9);
    sdict_module *m = sdict_conv1d_new(4, 6, 3, 2, 1, 2, 2, true);
    assert_non_null(m);
    assert_int_equal(m->params[0].value.ndim, 3);
    assert_int_equal(m->params[0].value.shape[1], 2);
    conv1d_naive(m, &x, 3, 2, 1, 2, 2);
    check_module_grad(m, 3, xs);
    m = sdict_conv1d_new(4, 3, 2, 1, 0, 1, 1, false);
    conv1d_naive(m, &x, 2, 1, 0, 1, 1);
    sdict_module_free(m);
    int64_t us[2] = {4, 7};   /* unbatched [C, L] */
    check_module_grad(sdict_conv1d_new(4, 5, 3, 1, 1, 1, 1, true), 2, us);
    sdict_act_free(&x);
    assert_null(sdict_conv1d_new(4, 6, 3, 1, 0, 1, 3, true));
}

/*==================================================================================================
 CrossEntropyLoss over sequences
==================================================================================================*/

typedef struct ce_ctx {
    sdict_act *x, *t;
} ce_ctx;

static double ce_loss(void *p) {
    ce_ctx *c = p;
    float l = 0.0f;
    assert_int_equal(sdict_cross_entropy_loss_ex(c->x, c->t, -100, &l, NULL, NULL), SDICT_OK);
    return l;
}

static void test_seq_cross_entropy(void **state) {
    (void)state;
    int64_t xs[3] = {2, 4, 3}, ts[2] = {2, 3};
    sdict_act x, t, dx;
    make(&x, 3, xs, 31);
    assert_int_equal(sdict_act_init(&t, SDICT_INT64, 2, ts, NULL), SDICT_OK);
    int64_t *T = t.data;
    int64_t tv[6] = {1, -100, 3, 0, 2, -100};
    memcpy(T, tv, sizeof tv);
    float l = 0.0f;
    assert_int_equal(sdict_cross_entropy_loss_ex(&x, &t, -100, &l, &dx, NULL), SDICT_OK);
    /* ignored positions: zero gradient over every class */
    for (int64_t c = 0; c < 4; c++) {
        assert_true(sdict_act_f32(&dx)[c * 3 + 1] == 0.0f);
        assert_true(sdict_act_f32(&dx)[(4 + c) * 3 + 2] == 0.0f);
    }
    /* the mean is over the 4 counted positions: a hand sum of log-softmax terms */
    double want = 0.0;
    for (int64_t n = 0; n < 2; n++)
        for (int64_t s = 0; s < 3; s++) {
            int64_t tt = T[n * 3 + s];
            if (tt == -100) continue;
            double se = 0.0;
            for (int64_t c = 0; c < 4; c++) se += exp(sdict_act_f32(&x)[(n * 4 + c) * 3 + s]);
            want += log(se) - sdict_act_f32(&x)[(n * 4 + tt) * 3 + s];
        }
    assert_true(fabs(l - want / 4.0) < 1e-6);
    ce_ctx ctx = {&x, &t};
    numeric_check("logits", x.data, dx.data, sdict_act_numel(&x), ce_loss, &ctx, 1);
    sdict_act_free(&dx);
    T[0] = 7;   /* out of range and not ignore_index */
    sdict_error err;
    assert_int_equal(sdict_cross_entropy_loss_ex(&x, &t, -100, &l, &dx, &err),
                     SDICT_E_INVALID_ARG);
    assert_string_equal(err.message, "Target 7 is out of bounds.");
    for (int i = 0; i < 6; i++) T[i] = 7;   /* all ignored: nan, as torch */
    assert_int_equal(sdict_cross_entropy_loss_ex(&x, &t, 7, &l, NULL, NULL), SDICT_OK);
    assert_true(isnan(l));
    int64_t bad[2] = {2, 4};
    sdict_act tb;
    assert_int_equal(sdict_act_init(&tb, SDICT_INT64, 2, bad, NULL), SDICT_OK);
    assert_int_equal(sdict_cross_entropy_loss_ex(&x, &tb, -100, &l, NULL, NULL), SDICT_E_SHAPE);
    sdict_act_free(&tb);
    sdict_act_free(&x);
    sdict_act_free(&t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rnn_params),
        cmocka_unit_test(test_lstm_grad),
        cmocka_unit_test(test_gru_grad),
        cmocka_unit_test(test_rnn_errors),
        cmocka_unit_test(test_pointwise),
        cmocka_unit_test(test_conv1d),
        cmocka_unit_test(test_seq_cross_entropy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
