/*
 test_nn_transformer.c - LayerNorm, GELU (exact and tanh), Softmax, LogSoftmax and Hugging
 Face's Conv1D: forward values against closed forms, and every backward against central finite
 differences of the forward (L = sum_i y_i * w_i with fixed pseudo-random w, summed in double;
 h = 1e-3 on inputs of order 1). GPT-2 construction and its refusals of bad arguments.
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

#define H 1e-3
#define TOL 1e-2

static uint32_t next(uint32_t *s) { return *s = *s * 1664525u + 1013904223u; }
static float unif(uint32_t *s) { return (float)((next(s) >> 8) & 0xFFFF) / 32768.0f - 1.0f; }

static const float *g_w;

static double loss_of(sdict_module *m, const sdict_act *x) {
    sdict_act y = {0};
    assert_int_equal(sdict_module_forward(m, x, &y, NULL), SDICT_OK);
    double L = 0.0;
    for (int64_t i = 0; i < sdict_act_numel(&y); i++) L += (double)sdict_act_f32(&y)[i] * g_w[i];
    sdict_act_free(&y);
    return L;
}

static void expect_close(double num, double ana, const char *what, int64_t i) {
    if (fabs(num - ana) > TOL * (1.0 + fabs(ana)))
        fail_msg("%s[%lld]: finite difference %.6f, backward %.6f", what, (long long)i, num, ana);
}

static void fd_check(sdict_module *m, float *P, const float *G, int64_t n, const sdict_act *x,
                     const char *what) {
    for (int64_t i = 0; i < n; i++) {
        float keep = P[i];
        P[i] = keep + (float)H;
        double lp = loss_of(m, x);
        P[i] = keep - (float)H;
        double lm = loss_of(m, x);
        P[i] = keep;
        expect_close((lp - lm) / (2 * H), G[i], what, i);
    }
}

/* dL/dx and dL/dparam of m at a random x of the given shape (training mode). */
static void check(sdict_module *m, int32_t nd, const int64_t *shape, uint32_t seed) {
    sdict_act x = {0}, y = {0}, dy = {0}, dx = {0};
    assert_int_equal(sdict_act_init(&x, SDICT_FLOAT32, nd, shape, NULL), SDICT_OK);
    for (int64_t i = 0; i < sdict_act_numel(&x); i++) sdict_act_f32(&x)[i] = 2.0f * unif(&seed);
    /* parameters away from their init so weight and bias matter */
    for (size_t j = 0; j < m->n_params; j++) {
        float *p = sdict_tensor_data(&m->params[j].value);
        for (int64_t i = 0; i < sdict_tensor_numel(&m->params[j].value); i++)
            p[i] = 1.0f * unif(&seed) + (j == 0 && m->type == SDICT_MOD_LAYERNORM ? 1.0f : 0.0f);
    }
    sdict_module_zero_grad(m);
    assert_int_equal(sdict_module_forward(m, &x, &y, NULL), SDICT_OK);
    assert_int_equal(sdict_act_init(&dy, SDICT_FLOAT32, y.ndim, y.shape, NULL), SDICT_OK);
    uint32_t s = 99;
    for (int64_t i = 0; i < sdict_act_numel(&dy); i++) sdict_act_f32(&dy)[i] = unif(&s);
    g_w = sdict_act_f32(&dy);
    sdict_error err;
    assert_int_equal(sdict_module_backward(m, &dy, &dx, &err), SDICT_OK);
    assert_int_equal(dx.ndim, x.ndim);
    assert_memory_equal(dx.shape, x.shape, sizeof(int64_t) * (size_t)x.ndim);
    fd_check(m, sdict_act_f32(&x), sdict_act_f32(&dx), sdict_act_numel(&x), &x, "dx");
    for (size_t j = 0; j < m->n_params; j++)
        fd_check(m, sdict_tensor_data(&m->params[j].value), sdict_tensor_data(&m->params[j].grad),
                 sdict_tensor_numel(&m->params[j].value), &x, m->params[j].name);
    sdict_act_free(&x);
    sdict_act_free(&y);
    sdict_act_free(&dy);
    sdict_act_free(&dx);
}

static void test_layernorm_forward(void **state) {
    (void)state;
    int64_t ns = 4;
    sdict_module *m = sdict_layernorm_new(1, &ns, 1e-5, true, true);
    assert_non_null(m);
    assert_int_equal(m->n_params, 2);
    assert_string_equal(m->params[0].name, "weight");
    assert_string_equal(m->params[1].name, "bias");
    float *w = sdict_tensor_data(&m->params[0].value), *b = sdict_tensor_data(&m->params[1].value);
    assert_true(w[0] == 1.0f && w[3] == 1.0f && b[0] == 0.0f);
    w[1] = 2.0f;
    b[2] = 0.5f;
    int64_t shape[2] = {1, 4};
    sdict_act x = {0}, y = {0};
    assert_int_equal(sdict_act_init(&x, SDICT_FLOAT32, 2, shape, NULL), SDICT_OK);
    float xs[4] = {1, 2, 3, 4};
    memcpy(x.data, xs, sizeof xs);
    sdict_module_eval(m);
    assert_int_equal(sdict_module_forward(m, &x, &y, NULL), SDICT_OK);
    /* mean 2.5, biased var 1.25 */
    double r = 1.0 / sqrt(1.25 + 1e-5);
    const float *Y = sdict_act_f32(&y);
    assert_true(fabs(Y[0] - (-1.5 * r)) < 1e-6);
    assert_true(fabs(Y[1] - 2.0 * (-0.5 * r)) < 1e-6);
    assert_true(fabs(Y[2] - (0.5 * r + 0.5)) < 1e-6);
    assert_true(fabs(Y[3] - 1.5 * r) < 1e-6);
    sdict_act_free(&y);
    int64_t bad[2] = {1, 5};
    sdict_act_free(&x);
    assert_int_equal(sdict_act_init(&x, SDICT_FLOAT32, 2, bad, NULL), SDICT_OK);
    sdict_error err;
    assert_int_equal(sdict_module_forward(m, &x, &y, &err), SDICT_E_SHAPE);
    sdict_act_free(&x);
    sdict_module_free(m);
    assert_null(sdict_layernorm_new(0, &ns, 1e-5, true, true));
    assert_null(sdict_layernorm_new(1, &ns, -1.0, true, true));
    m = sdict_layernorm_new(1, &ns, 1e-5, false, true);
    assert_int_equal(m->n_params, 0);
    sdict_module_free(m);
}

static void test_gelu_softmax_values(void **state) {
    (void)state;
    int64_t shape[1] = {3};
    sdict_act x = {0}, y = {0};
    assert_int_equal(sdict_act_init(&x, SDICT_FLOAT32, 1, shape, NULL), SDICT_OK);
    float xs[3] = {1.0f, -2.0f, 0.5f};
    memcpy(x.data, xs, sizeof xs);
    sdict_module *g = sdict_gelu_new(false), *gt = sdict_gelu_new(true);
    assert_int_equal(sdict_module_forward(g, &x, &y, NULL), SDICT_OK);
    assert_true(fabs(sdict_act_f32(&y)[0] - 0.8413447460685429) < 1e-6);  /* x Phi(x) */
    assert_true(fabs(sdict_act_f32(&y)[1] - -0.04550026389635842) < 1e-6);
    sdict_act_free(&y);
    assert_int_equal(sdict_module_forward(gt, &x, &y, NULL), SDICT_OK);
    assert_true(fabs(sdict_act_f32(&y)[0] - 0.8411919906082768) < 1e-6);  /* tanh form */
    assert_true(fabs(sdict_act_f32(&y)[1] - -0.04540230591222342) < 1e-6);
    sdict_act_free(&y);
    sdict_module *sm = sdict_softmax_new(-1), *lsm = sdict_log_softmax_new(0);
    assert_int_equal(sdict_module_forward(sm, &x, &y, NULL), SDICT_OK);
    double z = exp(1.0) + exp(-2.0) + exp(0.5);
    assert_true(fabs(sdict_act_f32(&y)[0] - exp(1.0) / z) < 1e-6);
    assert_true(fabs(sdict_act_f32(&y)[1] - exp(-2.0) / z) < 1e-6);
    sdict_act_free(&y);
    assert_int_equal(sdict_module_forward(lsm, &x, &y, NULL), SDICT_OK);
    assert_true(fabs(sdict_act_f32(&y)[2] - (0.5 - log(z))) < 1e-6);
    sdict_act_free(&y);
    sdict_module *bad = sdict_softmax_new(1);
    sdict_error err;
    assert_int_equal(sdict_module_forward(bad, &x, &y, &err), SDICT_E_SHAPE);
    sdict_act_free(&x);
    sdict_module_free(g);
    sdict_module_free(gt);
    sdict_module_free(sm);
    sdict_module_free(lsm);
    sdict_module_free(bad);
}

static void test_conv1d_forward(void **state) {
    (void)state;
    sdict_module *m = sdict_hf_conv1d_new(3, 2); /* nf = 3 outputs, nx = 2 inputs */
    assert_non_null(m);
    assert_int_equal(m->params[0].value.ndim, 2);
    assert_int_equal(m->params[0].value.shape[0], 2); /* stored [in, out] */
    assert_int_equal(m->params[0].value.shape[1], 3);
    float *w = sdict_tensor_data(&m->params[0].value), *b = sdict_tensor_data(&m->params[1].value);
    for (int i = 0; i < 6; i++) w[i] = (float)(i + 1); /* [[1,2,3],[4,5,6]] */
    b[0] = 0.5f; b[1] = 0.0f; b[2] = -1.0f;
    int64_t shape[2] = {1, 2};
    sdict_act x = {0}, y = {0};
    assert_int_equal(sdict_act_init(&x, SDICT_FLOAT32, 2, shape, NULL), SDICT_OK);
    sdict_act_f32(&x)[0] = 1.0f;
    sdict_act_f32(&x)[1] = -1.0f;
    assert_int_equal(sdict_module_forward(m, &x, &y, NULL), SDICT_OK);
    assert_int_equal(y.shape[1], 3);
    assert_true(sdict_act_f32(&y)[0] == -2.5f && sdict_act_f32(&y)[1] == -3.0f &&
                sdict_act_f32(&y)[2] == -4.0f);
    sdict_act_free(&x);
    sdict_act_free(&y);
    sdict_module_free(m);
}

static void test_backward(void **state) {
    (void)state;
    int64_t s3[3] = {2, 3, 5}, s2[2] = {3, 4}, ln2[2] = {3, 5}, five = 5;
    sdict_module *m = sdict_layernorm_new(1, &five, 1e-5, true, true);
    check(m, 3, s3, 1);
    sdict_module_free(m);
    m = sdict_layernorm_new(2, ln2, 1e-3, true, false); /* two normalised dims, no bias */
    check(m, 3, s3, 2);
    sdict_module_free(m);
    m = sdict_layernorm_new(1, &five, 1e-5, false, false);
    check(m, 3, s3, 3);
    sdict_module_free(m);
    m = sdict_gelu_new(false);
    check(m, 2, s2, 4);
    sdict_module_free(m);
    m = sdict_gelu_new(true);
    check(m, 2, s2, 5);
    sdict_module_free(m);
    m = sdict_softmax_new(-1);
    check(m, 3, s3, 6);
    sdict_module_free(m);
    m = sdict_softmax_new(1); /* a middle dim: strided rows */
    check(m, 3, s3, 7);
    sdict_module_free(m);
    m = sdict_log_softmax_new(-1);
    check(m, 2, s2, 8);
    sdict_module_free(m);
    m = sdict_hf_conv1d_new(6, 5);
    check(m, 3, s3, 9);
    sdict_module_free(m);
}

static void test_backward_needs_training_forward(void **state) {
    (void)state;
    int64_t five = 5, s2[2] = {2, 5};
    sdict_module *m = sdict_layernorm_new(1, &five, 1e-5, true, true);
    sdict_act x = {0}, y = {0}, dx = {0};
    assert_int_equal(sdict_act_init(&x, SDICT_FLOAT32, 2, s2, NULL), SDICT_OK);
    sdict_module_eval(m);
    assert_int_equal(sdict_module_forward(m, &x, &y, NULL), SDICT_OK);
    sdict_error err;
    assert_int_equal(sdict_module_backward(m, &y, &dx, &err), SDICT_E_INVALID_ARG);
    assert_non_null(strstr(err.message, "training-mode forward"));
    sdict_act_free(&x);
    sdict_act_free(&y);
    sdict_module_free(m);
}

static void test_gpt2_build(void **state) {
    (void)state;
    sdict_gpt2_config c;
    sdict_gpt2_config_default(&c);
    assert_int_equal(c.n_embd, 768);
    c.n_layer = 2; c.n_embd = 16; c.n_head = 4; c.n_positions = 8; c.vocab_size = 11;
    sdict_gpt2 *g = NULL;
    sdict_error err;
    assert_int_equal(sdict_gpt2_new(&c, &g, &err), SDICT_OK);
    sdict_module *root = sdict_gpt2_module(g);
    assert_string_equal(root->type_name, "GPT2LMHeadModel");
    sdict_named_tensor *w = sdict_module_tensor(root, "transformer.h.1.attn.c_attn.weight");
    assert_non_null(w);
    assert_int_equal(w->value.shape[0], 16);
    assert_int_equal(w->value.shape[1], 48);
    assert_non_null(sdict_module_tensor(root, "transformer.h.1.mlp.c_fc.bias"));
    assert_int_equal(sdict_module_tensor(root, "transformer.h.1.mlp.c_fc.bias")->value.shape[0], 64);
    assert_non_null(sdict_module_tensor(root, "lm_head.weight"));
    assert_true(sdict_gpt2_is_tied(g));
    /* forward: ids out of range, wrong dtype, too long; a cache's positions add up */
    int64_t shape[2] = {1, 3};
    sdict_act ids = {0}, lg = {0}, lg2 = {0};
    assert_int_equal(sdict_act_init(&ids, SDICT_INT64, 2, shape, NULL), SDICT_OK);
    int64_t *I = ids.data;
    I[0] = 1; I[1] = 10; I[2] = 3;
    assert_int_equal(sdict_gpt2_forward(g, &ids, &lg, &err), SDICT_OK);
    assert_int_equal(lg.shape[2], 11);
    sdict_gpt2_cache *kv = NULL;
    assert_int_equal(sdict_gpt2_cache_new(g, 1, 8, &kv, &err), SDICT_OK);
    sdict_act one = {0};
    int64_t s1[2] = {1, 1};
    for (int t = 0; t < 3; t++) { /* token by token equals the full forward's rows */
        assert_int_equal(sdict_act_init(&one, SDICT_INT64, 2, s1, NULL), SDICT_OK);
        ((int64_t *)one.data)[0] = I[t];
        assert_int_equal(sdict_gpt2_forward_cached(g, kv, &one, true, &lg2, &err), SDICT_OK);
        for (int v = 0; v < 11; v++)
            assert_true(fabsf(sdict_act_f32(&lg2)[v] - sdict_act_f32(&lg)[t * 11 + v]) <
                        1e-4f * (1.0f + fabsf(sdict_act_f32(&lg)[t * 11 + v])));
        sdict_act_free(&one);
        sdict_act_free(&lg2);
    }
    assert_int_equal(sdict_gpt2_cache_len(kv), 3);
    I[1] = 11;
    assert_int_equal(sdict_gpt2_forward_cached(g, kv, &ids, false, &lg2, &err), SDICT_E_INVALID_ARG);
    assert_int_equal(sdict_gpt2_cache_len(kv), 3);
    I[1] = 2;
    assert_int_equal(sdict_gpt2_forward_cached(g, kv, &ids, false, &lg2, &err), SDICT_OK);
    sdict_act_free(&lg2);
    assert_int_equal(sdict_gpt2_forward_cached(g, kv, &ids, false, &lg2, &err), SDICT_E_LIMIT);
    assert_null(lg2.data);
    sdict_gpt2_cache_free(kv);
    int64_t out[8], n_out = 0;
    assert_int_equal(sdict_gpt2_generate(g, I, 3, 6, 0, 0, out, &n_out, &err), SDICT_E_LIMIT);
    assert_int_equal(sdict_gpt2_generate(g, I, 3, 5, 3, 42, out, &n_out, &err), SDICT_OK);
    assert_int_equal(n_out, 8);
    assert_memory_equal(out, I, 3 * sizeof(int64_t));
    for (int i = 3; i < 8; i++) assert_true(out[i] >= 0 && out[i] < 11);
    sdict_act_free(&ids);
    sdict_act_free(&lg);
    sdict_gpt2_free(g);
    c.n_head = 5; /* 16 is not divisible by 5 */
    assert_int_equal(sdict_gpt2_new(&c, &g, &err), SDICT_E_INVALID_ARG);
    assert_null(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layernorm_forward),
        cmocka_unit_test(test_gelu_softmax_values),
        cmocka_unit_test(test_conv1d_forward),
        cmocka_unit_test(test_backward),
        cmocka_unit_test(test_backward_needs_training_forward),
        cmocka_unit_test(test_gpt2_build),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
