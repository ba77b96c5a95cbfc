/*
 test_optim_grad.c - every backward pass against central finite differences of the forward.

 The scalar checked is L = sum_i y_i * w_i with fixed pseudo-random w (so dL/dy = w), summed in
 double. Each input element and each parameter element (a sample of them for large tensors) is
 moved by +-h; (L+ - L-) / 2h must match the analytic gradient. Single layers get inputs on a
 grid spaced well above 2h (h = 1e-2) so no ReLU or max-pool decision flips inside a
 difference; whole networks (mlp, Net), whose hidden activations can sit anywhere, use
 h = 1e-4 (a hidden ReLU input of 5e-4 made h = 1e-3 straddle the kink). Dropout modules are
 reseeded before every forward so the mask stays the same.
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

#include "statedict_nn.h"
#include "statedict_optim.h"

/* step of the differences; whole networks use a smaller one (more ReLU/pool kinks nearby) */
static double H = 1e-2;
#define TOL 1.5e-2

static uint32_t next(uint32_t *s) { return *s = *s * 1664525u + 1013904223u; }
static float unif(uint32_t *s) { return (float)((next(s) >> 8) & 0xFFFF) / 32768.0f - 1.0f; }

/* Distinct values (k + 0.5) * 0.06 - ..., shuffled: gaps of 0.06 > 2h, none near zero. */
static void grid_fill(float *p, int64_t n, uint32_t seed) {
    for (int64_t i = 0; i < n; i++) p[i] = (float)(((double)i + 0.5) * 0.06 - 0.03 * (double)n);
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(next(&seed) % (uint32_t)(i + 1));
        float t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
}

static void reseed_dropout(sdict_module *m) {
    if (m->type == SDICT_MOD_DROPOUT) sdict_dropout_seed(m, 1234);
    for (size_t i = 0; i < m->n_children; i++) reseed_dropout(m->children[i]);
}

static const float *g_w;   /* dL/dy weights of the current check */

static double loss_of(sdict_module *m, const sdict_act *x) {
    sdict_act y = {0};
    reseed_dropout(m);
    assert_int_equal(sdict_module_forward(m, x, &y, NULL), SDICT_OK);
    double L = 0.0;
    for (int64_t i = 0; i < sdict_act_numel(&y); i++) L += (double)sdict_act_f32(&y)[i] * g_w[i];
    sdict_act_free(&y);
    return L;
}

typedef struct plist {
    sdict_named_tensor *p[64];
    char names[64][64];
    size_t n;
} plist;

static void collect(void *ctx, const char *key, sdict_named_tensor *nt) {
    plist *l = ctx;
    if (l->n < 64) {
        snprintf(l->names[l->n], sizeof l->names[0], "%s", key);
        l->p[l->n++] = nt;
    }
}

static void expect_close(double num, double ana, const char *what, int64_t i) {
    if (fabs(num - ana) > TOL * (1.0 + fabs(ana)))
        fail_msg("%s[%lld]: finite difference %.6f, backward %.6f", what, (long long)i, num, ana);
}

/* Up to `limit` indices spread over [0, n). */
static int64_t pick(int64_t k, int64_t n, int64_t limit) {
    return n <= limit ? k : (k * 7919) % n;
}

/* Checks dL/dx (float inputs) and dL/dparam of m at x. */
static void check(sdict_module *m, sdict_act *x) {
    sdict_act y = {0}, dy = {0}, dx = {0};
    reseed_dropout(m);
    sdict_module_zero_grad(m);
    assert_int_equal(sdict_module_forward(m, x, &y, NULL), SDICT_OK);
    assert_int_equal(sdict_act_init(&dy, SDICT_FLOAT32, y.ndim, y.shape, NULL), SDICT_OK);
    uint32_t s = 99;
    float *w = sdict_act_f32(&dy);
    for (int64_t i = 0; i < sdict_act_numel(&dy); i++) w[i] = unif(&s);
    g_w = w;
    bool float_in = x->dtype == SDICT_FLOAT32;
    sdict_error err;
    assert_int_equal(sdict_module_backward(m, &dy, float_in ? &dx : NULL, &err), SDICT_OK);
    if (float_in) {
        assert_int_equal(dx.ndim, x->ndim);
        assert_memory_equal(dx.shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
        float *X = sdict_act_f32(x);
        int64_t n = sdict_act_numel(x), lim = n < 60 ? n : 60;
        for (int64_t k = 0; k < lim; k++) {
            int64_t i = pick(k, n, 60);
            float keep = X[i];
            X[i] = keep + (float)H;
            double lp = loss_of(m, x);
            X[i] = keep - (float)H;
            double lm = loss_of(m, x);
            X[i] = keep;
            expect_close((lp - lm) / (2 * H), sdict_act_f32(&dx)[i], "dx", i);
        }
    }
    plist pl = {0};
    sdict_module_each_param(m, collect, &pl);
    for (size_t j = 0; j < pl.n; j++) {
        float *P = sdict_tensor_data(&pl.p[j]->value);
        const float *G = sdict_tensor_data(&pl.p[j]->grad);
        int64_t n = sdict_tensor_numel(&pl.p[j]->value), lim = n < 40 ? n : 40;
        for (int64_t k = 0; k < lim; k++) {
            int64_t i = pick(k, n, 40);
            float keep = P[i];
            P[i] = keep + (float)H;
            double lp = loss_of(m, x);
            P[i] = keep - (float)H;
            double lm = loss_of(m, x);
            P[i] = keep;
            expect_close((lp - lm) / (2 * H), G[i], pl.names[j], i);
        }
    }
    sdict_act_free(&y);
    sdict_act_free(&dy);
    sdict_act_free(&dx);
}

static void grid_input(sdict_act *x, int32_t nd, const int64_t *shape, uint32_t seed) {
    assert_int_equal(sdict_act_init(x, SDICT_FLOAT32, nd, shape, NULL), SDICT_OK);
    grid_fill(sdict_act_f32(x), sdict_act_numel(x), seed);
}

/* Scales a module's parameters onto a grid too (relu/pool margins after a layer). */
static void run_one(sdict_module *m, int32_t nd, const int64_t *shape) {
    assert_non_null(m);
    sdict_act x;
    grid_input(&x, nd, shape, 5);
    check(m, &x);
    sdict_act_free(&x);
    sdict_module_free(m);
}

static void test_linear(void **state) {
    (void)state;
    int64_t s[3] = {2, 3, 5};
    run_one(sdict_linear_new(5, 4, true), 3, s);
    int64_t s2[2] = {3, 6};
    run_one(sdict_linear_new(6, 2, false), 2, s2);
}

static void test_conv2d(void **state) {
    (void)state;
    int64_t s[4] = {2, 4, 7, 6};
    run_one(sdict_conv2d_new(4, 6, 3, 3, 1, 0, 1, 1, true), 4, s);
    run_one(sdict_conv2d_new(4, 6, 3, 2, 2, 1, 1, 2, true), 4, s);   /* stride, padding, groups */
    run_one(sdict_conv2d_new(4, 4, 2, 2, 1, 2, 2, 4, false), 4, s);  /* dilation, depthwise */
}

static void test_relu_flatten(void **state) {
    (void)state;
    int64_t s[3] = {2, 3, 4};
    run_one(sdict_relu_new(), 3, s);
    int64_t s4[4] = {2, 3, 2, 2};
    run_one(sdict_flatten_new(1, -1), 4, s4);
}

static void test_pools(void **state) {
    (void)state;
    int64_t s[4] = {2, 2, 6, 7};
    run_one(sdict_maxpool2d_new(2, 2, 0), 4, s);
    run_one(sdict_maxpool2d_new(3, 2, 1), 4, s);
    run_one(sdict_avgpool2d_new(3, 2, 1), 4, s);
    run_one(sdict_adaptive_avgpool2d_new(4, 3), 4, s);   /* overlapping uneven bins */
}

static void test_batchnorm(void **state) {
    (void)state;
    int64_t s2[4] = {3, 2, 3, 2}, s1[2] = {5, 3}, s13[3] = {2, 3, 4};
    run_one(sdict_batchnorm2d_new(2, 1e-5, 0.1, true, true), 4, s2);
    run_one(sdict_batchnorm1d_new(3, 1e-5, 0.1, true, true), 2, s1);
    run_one(sdict_batchnorm1d_new(3, 1e-5, 0.1, false, false), 3, s13);
}

static void test_dropout(void **state) {
    (void)state;
    int64_t s[2] = {4, 10};
    sdict_module *m = sdict_dropout_new(0.4);
    run_one(m, 2, s);
    /* eval: identity gradient */
    sdict_module *e = sdict_dropout_new(0.4);
    sdict_module_eval(e);
    sdict_act x, y = {0}, dx = {0};
    grid_input(&x, 2, s, 3);
    assert_int_equal(sdict_module_forward(e, &x, &y, NULL), SDICT_OK);
    assert_int_equal(sdict_module_backward(e, &x, &dx, NULL), SDICT_OK);
    assert_memory_equal(dx.data, x.data, sizeof(float) * 40);
    sdict_act_free(&x);
    sdict_act_free(&y);
    sdict_act_free(&dx);
    sdict_module_free(e);
}

static void test_embedding_mlp(void **state) {
    (void)state;
    /* Embedding alone: parameter gradient, repeated indices accumulate */
    int64_t s[2] = {3, 8};
    sdict_act x;
    assert_int_equal(sdict_act_init(&x, SDICT_INT64, 2, s, NULL), SDICT_OK);
    uint32_t seed = 4;
    for (int i = 0; i < 24; i++) ((int64_t *)x.data)[i] = (int64_t)(next(&seed) % 7);
    sdict_module *e = sdict_embedding_new(100, 16);
    check(e, &x);
    sdict_module_free(e);
    /* the whole mlp: Sequential backward through Embedding/Flatten/Linear/BN/ReLU/Dropout */
    sdict_module *m = sdict_mlp_new(0.3);
    assert_non_null(m);
    H = 1e-4;
    check(m, &x);
    H = 1e-2;
    sdict_module_free(m);
    sdict_act_free(&x);
}

static void test_lenet(void **state) {
    (void)state;
    sdict_module *m = sdict_lenet_new();
    assert_non_null(m);
    m->backward = sdict_lenet_backward;
    int64_t s[4] = {2, 3, 32, 32};
    sdict_act x;
    assert_int_equal(sdict_act_init(&x, SDICT_FLOAT32, 4, s, NULL), SDICT_OK);
    uint32_t seed = 8;
    for (int64_t i = 0; i < sdict_act_numel(&x); i++) sdict_act_f32(&x)[i] = unif(&seed);
    H = 1e-4;
    check(m, &x);
    H = 1e-2;
    sdict_act_free(&x);
    sdict_module_free(m);
}

static sdict_status copy_forward(sdict_module *m, const sdict_act *x, sdict_act *y,
                                 sdict_error *err) {
    (void)m;
    return sdict_act_copy(y, x, err);
}

static void test_errors(void **state) {
    (void)state;
    sdict_module *l = sdict_linear_new(3, 2, true);
    int64_t s[2] = {1, 2};
    sdict_act dy, dx = {0};
    assert_int_equal(sdict_act_init(&dy, SDICT_FLOAT32, 2, s, NULL), SDICT_OK);
    sdict_error err;
    /* no training-mode forward yet */
    assert_int_equal(sdict_module_backward(l, &dy, &dx, &err), SDICT_E_INVALID_ARG);
    assert_non_null(strstr(err.message, "training-mode forward"));
    /* custom container without backward */
    sdict_module *c = sdict_module_new("MyNet", copy_forward, NULL);
    assert_non_null(c);
    assert_int_equal(sdict_module_backward(c, &dy, &dx, &err), SDICT_E_INVALID_ARG);
    assert_non_null(strstr(err.message, "MyNet"));
    sdict_module_free(c);
    /* wrong dy shape */
    int64_t xs[2] = {1, 3}, bad[2] = {1, 5};
    sdict_act x, y = {0}, dyb;
    assert_int_equal(sdict_act_init(&x, SDICT_FLOAT32, 2, xs, NULL), SDICT_OK);
    assert_int_equal(sdict_module_forward(l, &x, &y, NULL), SDICT_OK);
    assert_int_equal(sdict_act_init(&dyb, SDICT_FLOAT32, 2, bad, NULL), SDICT_OK);
    assert_int_equal(sdict_module_backward(l, &dyb, &dx, &err), SDICT_E_SHAPE);
    sdict_act_free(&x);
    sdict_act_free(&y);
    sdict_act_free(&dy);
    sdict_act_free(&dyb);
    sdict_module_free(l);
}

/* Losses: gradients by finite differences, values by their definitions. */
static void test_losses(void **state) {
    (void)state;
    int64_t ls[2] = {3, 4}, ts[1] = {3};
    sdict_act x, t, d = {0};
    assert_int_equal(sdict_act_init(&x, SDICT_FLOAT32, 2, ls, NULL), SDICT_OK);
    assert_int_equal(sdict_act_init(&t, SDICT_INT64, 1, ts, NULL), SDICT_OK);
    uint32_t s = 3;
    for (int i = 0; i < 12; i++) sdict_act_f32(&x)[i] = 3.0f * unif(&s);
    int64_t tv[3] = {2, 0, 3};
    memcpy(t.data, tv, sizeof tv);
    float L;
    assert_int_equal(sdict_cross_entropy_loss(&x, &t, &L, &d, NULL), SDICT_OK);
    double ref = 0.0;
    for (int n = 0; n < 3; n++) {
        double se = 0.0;
        for (int c = 0; c < 4; c++) se += exp(sdict_act_f32(&x)[n * 4 + c]);
        ref += log(se) - sdict_act_f32(&x)[n * 4 + tv[n]];
    }
    assert_true(fabs(L - ref / 3.0) < 1e-6);
    for (int i = 0; i < 12; i++) {
        float keep = sdict_act_f32(&x)[i];
        float lp, lm;
        sdict_act_f32(&x)[i] = keep + 1e-2f;
        sdict_cross_entropy_loss(&x, &t, &lp, NULL, NULL);
        sdict_act_f32(&x)[i] = keep - 1e-2f;
        sdict_cross_entropy_loss(&x, &t, &lm, NULL, NULL);
        sdict_act_f32(&x)[i] = keep;
        expect_close((lp - lm) / 2e-2, sdict_act_f32(&d)[i], "dlogits", i);
    }
    /* huge logits stay finite (max subtracted) */
    sdict_act_f32(&x)[0] = 1e30f;
    assert_int_equal(sdict_cross_entropy_loss(&x, &t, &L, NULL, NULL), SDICT_OK);
    assert_true(isfinite(L));
    sdict_error err;
    ((int64_t *)t.data)[1] = 4;
    assert_int_equal(sdict_cross_entropy_loss(&x, &t, &L, NULL, &err), SDICT_E_INVALID_ARG);
    assert_string_equal(err.message, "Target 4 is out of bounds.");
    sdict_act_free(&d);
    /* MSE */
    sdict_act p, q;
    assert_int_equal(sdict_act_init(&p, SDICT_FLOAT32, 2, ls, NULL), SDICT_OK);
    assert_int_equal(sdict_act_init(&q, SDICT_FLOAT32, 2, ls, NULL), SDICT_OK);
    double r2 = 0.0;
    for (int i = 0; i < 12; i++) {
        sdict_act_f32(&p)[i] = unif(&s);
        sdict_act_f32(&q)[i] = unif(&s);
        double dd = (double)sdict_act_f32(&p)[i] - sdict_act_f32(&q)[i];
        r2 += dd * dd;
    }
    assert_int_equal(sdict_mse_loss(&p, &q, &L, &d, NULL), SDICT_OK);
    assert_true(fabs(L - r2 / 12.0) < 1e-6);
    for (int i = 0; i < 12; i++) {
        double dd = (double)sdict_act_f32(&p)[i] - sdict_act_f32(&q)[i];
        assert_true(fabs(sdict_act_f32(&d)[i] - 2.0 * dd / 12.0) < 1e-6);
    }
    sdict_act_free(&d);
    sdict_act_free(&p);
    sdict_act_free(&q);
    sdict_act_free(&x);
    sdict_act_free(&t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear),     cmocka_unit_test(test_conv2d),
        cmocka_unit_test(test_relu_flatten), cmocka_unit_test(test_pools),
        cmocka_unit_test(test_batchnorm),  cmocka_unit_test(test_dropout),
        cmocka_unit_test(test_embedding_mlp), cmocka_unit_test(test_lenet),
        cmocka_unit_test(test_errors),     cmocka_unit_test(test_losses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
