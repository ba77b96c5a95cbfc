/*
 test_nn_attention.c - nn.MultiheadAttention's backward (self-attention, both batch_first
 values, with and without bias, unbatched) against central finite differences of its forward
 (L = sum_i y_i * w_i with fixed pseudo-random w, summed in double; h = 1e-3 on inputs of order
 1); the constructors' refusals. Forward values are
 checked against torch in tests/mha (mha_interop).
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

static void fd_check(sdict_module *m, float *P, const float *G, int64_t n, const sdict_act *x,
                     const char *what) {
    for (int64_t i = 0; i < n; i++) {
        float keep = P[i];
        P[i] = keep + (float)H;
        double lp = loss_of(m, x);
        P[i] = keep - (float)H;
        double lm = loss_of(m, x);
        P[i] = keep;
        double num = (lp - lm) / (2 * H), ana = G[i];
        if (fabs(num - ana) > TOL * (1.0 + fabs(ana)))
            fail_msg("%s[%lld]: finite difference %.6f, backward %.6f", what, (long long)i, num,
                     ana);
    }
}

static void each(void *ctx, const char *key, sdict_named_tensor *nt) {
    uint32_t *seed = ctx;
    (void)key;
    float *p = sdict_tensor_data(&nt->value);
    for (int64_t i = 0; i < sdict_tensor_numel(&nt->value); i++) p[i] = unif(seed);
}

static void check(bool bias, bool batch_first, int32_t nd, const int64_t *shape, uint32_t seed) {
    sdict_module *m = sdict_multihead_attention_new(4, 2, 0.0, bias, batch_first);
    assert_non_null(m);
    sdict_module_each_param(m, each, &seed);
    sdict_act x = {0}, y = {0}, dy = {0}, dx = {0};
    assert_int_equal(sdict_act_init(&x, SDICT_FLOAT32, nd, shape, NULL), SDICT_OK);
    for (int64_t i = 0; i < sdict_act_numel(&x); i++) sdict_act_f32(&x)[i] = 1.5f * unif(&seed);
    sdict_module_zero_grad(m);
    assert_int_equal(sdict_module_forward(m, &x, &y, NULL), SDICT_OK);
    assert_int_equal(sdict_act_init(&dy, SDICT_FLOAT32, y.ndim, y.shape, NULL), SDICT_OK);
    for (int64_t i = 0; i < sdict_act_numel(&dy); i++) sdict_act_f32(&dy)[i] = unif(&seed);
    g_w = sdict_act_f32(&dy);
    sdict_error err;
    assert_int_equal(sdict_module_backward(m, &dy, &dx, &err), SDICT_OK);
    assert_int_equal(dx.ndim, x.ndim);
    assert_memory_equal(dx.shape, x.shape, sizeof(int64_t) * (size_t)x.ndim);
    fd_check(m, sdict_act_f32(&x), sdict_act_f32(&dx), sdict_act_numel(&x), &x, "dx");
    const char *keys[] = {"in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"};
    for (int k = 0; k < 4; k++) {
        sdict_named_tensor *nt = sdict_module_tensor(m, keys[k]);
        if (!bias && (k == 1 || k == 3)) {
            assert_null(nt);
            continue;
        }
        assert_non_null(nt);
        fd_check(m, sdict_tensor_data(&nt->value), sdict_tensor_data(&nt->grad),
                 sdict_tensor_numel(&nt->value), &x, keys[k]);
    }
    /* a wrong output gradient shape is refused */
    sdict_act bad = {0};
    int64_t bs[2] = {2, 4};
    assert_int_equal(sdict_act_init(&bad, SDICT_FLOAT32, 2, bs, NULL), SDICT_OK);
    sdict_act dx2 = {0};
    if (nd == 3) assert_int_equal(sdict_module_backward(m, &bad, &dx2, &err), SDICT_E_SHAPE);
    sdict_act_free(&bad);
    sdict_act_free(&x);
    sdict_act_free(&y);
    sdict_act_free(&dy);
    sdict_act_free(&dx);
    sdict_module_free(m);
}

static void test_mha_backward(void **state) {
    (void)state;
    int64_t s3[3] = {3, 2, 4}, s2[2] = {3, 4};
    check(true, false, 3, s3, 1);  /* [L, N, E] */
    check(true, true, 3, s3, 2);   /* [N, L, E] */
    check(false, false, 3, s3, 3); /* no bias */
    check(true, false, 2, s2, 4);  /* unbatched */
}

static void test_mha_refusals(void **state) {
    (void)state;
    assert_null(sdict_multihead_attention_new(6, 4, 0.0, true, false)); /* 6 % 4 */
    assert_null(sdict_multihead_attention_new(0, 1, 0.0, true, false));
    assert_null(sdict_multihead_attention_new(4, 2, 1.5, true, false));
    sdict_module *m = sdict_multihead_attention_new(4, 2, 0.1, true, false);
    assert_non_null(m);
    int64_t s3[3] = {3, 2, 4};
    sdict_act x = {0}, y = {0}, dx = {0};
    assert_int_equal(sdict_act_init(&x, SDICT_FLOAT32, 3, s3, NULL), SDICT_OK);
    sdict_error err;
    /* training with dropout runs (tests/test_nn_tlayers.c checks its values) */
    assert_int_equal(sdict_module_forward(m, &x, &y, &err), SDICT_OK);
    sdict_act_free(&y);
    sdict_module_eval(m);
    assert_int_equal(sdict_module_forward(m, &x, &y, &err), SDICT_OK);
    assert_int_equal(y.ndim, 3);
    assert_memory_equal(y.shape, s3, sizeof s3);
    /* eval forward keeps nothing: backward is refused */
    assert_int_equal(sdict_module_backward(m, &y, &dx, &err), SDICT_E_INVALID_ARG);
    sdict_act_free(&y);
    int64_t s5[3] = {3, 2, 5};
    sdict_act w = {0};
    assert_int_equal(sdict_act_init(&w, SDICT_FLOAT32, 3, s5, NULL), SDICT_OK);
    assert_int_equal(sdict_module_forward(m, &w, &y, &err), SDICT_E_SHAPE);
    assert_null(y.data);
    sdict_act_free(&w);
    sdict_act_free(&x);
    sdict_module_free(m);
    sdict_transformer_layer_config c = {.d_model = 4, .nhead = 3, .dim_feedforward = 8,
                                        .layer_norm_eps = 1e-5, .bias = true};
    assert_null(sdict_transformer_encoder_layer_new(&c));
    c.nhead = 2;
    m = sdict_transformer_decoder_layer_new(&c);
    assert_non_null(m);
    assert_non_null(sdict_module_tensor(m, "multihead_attn.in_proj_weight"));
    assert_non_null(sdict_module_tensor(m, "norm3.bias"));
    sdict_module_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mha_backward),
        cmocka_unit_test(test_mha_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
