/*
 test_nn_tlayers.c - TransformerEncoderLayer and TransformerDecoderLayer in training mode: the
 backward of both layers (norm_first both ways, relu and gelu, float and bool masks, key padding,
 causal self-attention, cross-attention to memory, dropout with fixed masks) against central
 finite differences of the forward (L = sum_i y_i * w_i with fixed pseudo-random w, summed in
 double; h = 1e-3), for every parameter and the inputs; training with dropout p > 0 differs from
 eval, p = 0 equals it; unbatched [L, E] inputs; MultiheadAttention's dropped attention
 weights. Gradients are checked
 against torch's autograd in tests/mha (mha_interop).
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
#define TOL 2e-2

static uint32_t next(uint32_t *s) { return *s = *s * 1664525u + 1013904223u; }
static float unif(uint32_t *s) { return (float)((next(s) >> 8) & 0xFFFF) / 32768.0f - 1.0f; }

/* One case: the layer, its inputs and masks, the loss weights. */
typedef struct tcase {
    sdict_module *m;
    bool decoder;
    sdict_act x, mem;
    sdict_mha_args a, ma;
    const float *w;
} tcase;

static const char *const sites[] = {"self_attn", "multihead_attn", "dropout", "dropout1",
                                    "dropout2", "dropout3"};

/* the same dropout masks at every forward */
static void reseed(sdict_module *m) {
    for (size_t i = 0; i < sizeof sites / sizeof sites[0]; i++) {
        sdict_module *c = sdict_module_child(m, sites[i]);
        if (c) sdict_dropout_seed(c, 1000u + 17u * (uint64_t)i);
    }
}

static sdict_status fwd(tcase *t, sdict_act *y) {
    reseed(t->m);
    if (t->decoder)
        return sdict_transformer_decoder_layer_forward(t->m, &t->x, &t->mem, &t->a, &t->ma, y,
                                                       NULL);
    return sdict_transformer_encoder_layer_forward(t->m, &t->x, &t->a, y, NULL);
}

static double loss_of(tcase *t) {
    sdict_act y = {0};
    assert_int_equal(fwd(t, &y), SDICT_OK);
    double L = 0.0;
    for (int64_t i = 0; i < sdict_act_numel(&y); i++) L += (double)sdict_act_f32(&y)[i] * t->w[i];
    sdict_act_free(&y);
    return L;
}

static void fd_check(tcase *t, float *P, const float *G, int64_t n, const char *what) {
    for (int64_t i = 0; i < n; i++) {
        float keep = P[i];
        P[i] = keep + (float)H;
        double lp = loss_of(t);
        P[i] = keep - (float)H;
        double lm = loss_of(t);
        P[i] = keep;
        double num = (lp - lm) / (2 * H), ana = G[i];
        if (fabs(num - ana) > TOL * (1.0 + fabs(ana)))
            fail_msg("%s[%lld]: finite difference %.6f, backward %.6f", what, (long long)i, num,
                     ana);
    }
}

static void fill(void *ctx, const char *key, sdict_named_tensor *nt) {
    uint32_t *seed = ctx;
    float *p = sdict_tensor_data(&nt->value);
    bool norm = strstr(key, "norm") != NULL;
    for (int64_t i = 0; i < sdict_tensor_numel(&nt->value); i++)
        p[i] = norm && strstr(key, "weight") ? 1.0f + 0.3f * unif(seed) : unif(seed);
}

typedef struct grad_ctx {
    tcase *t;
    int checked;
} grad_ctx;

static void check_param(void *ctx, const char *key, sdict_named_tensor *nt) {
    grad_ctx *g = ctx;
    fd_check(g->t, sdict_tensor_data(&nt->value), sdict_tensor_data(&nt->grad),
             sdict_tensor_numel(&nt->value), key);
    g->checked++;
}

enum { MASK_NONE, MASK_CAUSAL, MASK_FLOAT, MASK_PADDING };

static void run_case_nd(bool decoder, bool norm_first, bool gelu, bool batch_first, double p,
                        int mask, uint32_t seed, int32_t nd) {
    sdict_transformer_layer_config c = {.d_model = 4, .nhead = 2, .dim_feedforward = 6,
                                        .dropout = p, .gelu = gelu, .layer_norm_eps = 1e-5,
                                        .batch_first = batch_first, .norm_first = norm_first,
                                        .bias = true};
    tcase t = {.decoder = decoder};
    t.m = decoder ? sdict_transformer_decoder_layer_new(&c)
                  : sdict_transformer_encoder_layer_new(&c);
    assert_non_null(t.m);
    sdict_module_each_param(t.m, fill, &seed);
    int64_t L = 3, S = 4, N = nd == 3 ? 2 : 1;
    int64_t xs[3] = {batch_first ? N : L, batch_first ? L : N, 4};
    int64_t ms[3] = {batch_first ? N : S, batch_first ? S : N, 4};
    if (nd == 2) { /* unbatched [L, E] */
        xs[0] = L;
        xs[1] = 4;
        ms[0] = S;
        ms[1] = 4;
    }
    assert_int_equal(sdict_act_init(&t.x, SDICT_FLOAT32, nd, xs, NULL), SDICT_OK);
    for (int64_t i = 0; i < sdict_act_numel(&t.x); i++) sdict_act_f32(&t.x)[i] = 1.5f * unif(&seed);
    if (decoder) {
        assert_int_equal(sdict_act_init(&t.mem, SDICT_FLOAT32, nd, ms, NULL), SDICT_OK);
        for (int64_t i = 0; i < sdict_act_numel(&t.mem); i++)
            sdict_act_f32(&t.mem)[i] = 1.5f * unif(&seed);
    }
    sdict_act fm = {0}, kp = {0}, mkp = {0};
    if (mask == MASK_CAUSAL) t.a.is_causal = true;
    if (mask == MASK_FLOAT) {
        int64_t fs[2] = {L, L};
        assert_int_equal(sdict_act_init(&fm, SDICT_FLOAT32, 2, fs, NULL), SDICT_OK);
        for (int64_t i = 0; i < L * L; i++) sdict_act_f32(&fm)[i] = 0.5f * unif(&seed);
        t.a.attn_mask = &fm;
    }
    if (mask == MASK_PADDING) {
        int64_t ks[2] = {N, L}, mks[2] = {N, S};
        if (nd == 2) {
            ks[0] = L;
            mks[0] = S;
        }
        assert_int_equal(sdict_act_init(&kp, SDICT_FLOAT32, nd - 1, ks, NULL), SDICT_OK);
        sdict_act_f32(&kp)[L - 1] = 1.0f; /* batch 0: last position padded */
        t.a.key_padding_mask = &kp;
        t.a.key_padding_mask_bool = true;
        assert_int_equal(sdict_act_init(&mkp, SDICT_FLOAT32, nd - 1, mks, NULL), SDICT_OK);
        sdict_act_f32(&mkp)[N * S - 1] = 1.0f; /* last batch: last memory position padded */
        t.ma.key_padding_mask = &mkp;
        t.ma.key_padding_mask_bool = true;
    }
    sdict_act y = {0}, dy = {0}, dx = {0}, dmem = {0};
    sdict_module_zero_grad(t.m);
    assert_int_equal(fwd(&t, &y), SDICT_OK);
    assert_int_equal(sdict_act_init(&dy, SDICT_FLOAT32, y.ndim, y.shape, NULL), SDICT_OK);
    for (int64_t i = 0; i < sdict_act_numel(&dy); i++) sdict_act_f32(&dy)[i] = unif(&seed);
    t.w = sdict_act_f32(&dy);
    sdict_error err;
    if (decoder)
        assert_int_equal(sdict_transformer_decoder_layer_backward(t.m, &dy, &dx, &dmem, &err),
                         SDICT_OK);
    else
        assert_int_equal(sdict_module_backward(t.m, &dy, &dx, &err), SDICT_OK);
    assert_int_equal(dx.ndim, nd);
    assert_memory_equal(dx.shape, xs, sizeof(int64_t) * (size_t)nd);
    fd_check(&t, sdict_act_f32(&t.x), sdict_act_f32(&dx), sdict_act_numel(&t.x), "dx");
    if (decoder) {
        assert_int_equal(dmem.ndim, nd);
        assert_memory_equal(dmem.shape, ms, sizeof(int64_t) * (size_t)nd);
        fd_check(&t, sdict_act_f32(&t.mem), sdict_act_f32(&dmem), sdict_act_numel(&t.mem),
                 "dmemory");
    }
    grad_ctx g = {&t, 0};
    sdict_module_each_param(t.m, check_param, &g);
    assert_int_equal(g.checked, decoder ? 18 : 12);
    /* sdict_module_backward gives the same tgt gradient for the decoder */
    if (decoder) {
        sdict_act y2 = {0}, dx2 = {0};
        assert_int_equal(fwd(&t, &y2), SDICT_OK);
        assert_int_equal(sdict_module_backward(t.m, &dy, &dx2, &err), SDICT_OK);
        assert_memory_equal(dx2.data, dx.data, sizeof(float) * (size_t)sdict_act_numel(&dx));
        sdict_act_free(&y2);
        sdict_act_free(&dx2);
    }
    /* a wrong output gradient shape is refused */
    sdict_act bad = {0}, dbad = {0};
    int64_t bs[3] = {L + 1, N, 4};
    assert_int_equal(sdict_act_init(&bad, SDICT_FLOAT32, 3, bs, NULL), SDICT_OK);
    assert_int_equal(sdict_module_backward(t.m, &bad, &dbad, &err), SDICT_E_SHAPE);
    assert_null(dbad.data);
    sdict_act_free(&bad);
    sdict_act_free(&fm);
    sdict_act_free(&kp);
    sdict_act_free(&mkp);
    sdict_act_free(&t.x);
    sdict_act_free(&t.mem);
    sdict_act_free(&y);
    sdict_act_free(&dy);
    sdict_act_free(&dx);
    sdict_act_free(&dmem);
    sdict_module_free(t.m);
}

static void run_case(bool decoder, bool norm_first, bool gelu, bool batch_first, double p,
                     int mask, uint32_t seed) {
    run_case_nd(decoder, norm_first, gelu, batch_first, p, mask, seed, 3);
}

static void test_encoder_backward(void **state) {
    (void)state;
    run_case(false, false, false, false, 0.0, MASK_NONE, 1);
    run_case(false, true, false, false, 0.0, MASK_CAUSAL, 2);
    run_case(false, false, true, true, 0.0, MASK_FLOAT, 3);
    run_case(false, true, true, true, 0.0, MASK_PADDING, 4);
    run_case(false, false, true, false, 0.3, MASK_PADDING, 5); /* every dropout site */
    run_case(false, true, false, true, 0.3, MASK_CAUSAL, 6);
    run_case_nd(false, false, true, false, 0.3, MASK_PADDING, 7, 2); /* unbatched [L, E] */
}

static void test_decoder_backward(void **state) {
    (void)state;
    run_case(true, false, false, false, 0.0, MASK_CAUSAL, 11);
    run_case(true, true, true, false, 0.0, MASK_PADDING, 12);
    run_case(true, false, true, true, 0.0, MASK_FLOAT, 13);
    run_case(true, true, false, true, 0.0, MASK_NONE, 14);
    run_case(true, false, false, false, 0.3, MASK_CAUSAL, 15);
    run_case(true, true, true, true, 0.3, MASK_PADDING, 16);
    run_case_nd(true, true, false, false, 0.3, MASK_PADDING, 17, 2); /* unbatched */
}

static bool same(const sdict_act *a, const sdict_act *b) {
    return sdict_act_numel(a) == sdict_act_numel(b) &&
           memcmp(a->data, b->data, sizeof(float) * (size_t)sdict_act_numel(a)) == 0;
}

/* training with dropout p > 0 differs from eval; with p = 0 it equals eval; eval backward is
   refused; reseeding gives the same training output */
static void test_train_vs_eval(void **state) {
    (void)state;
    for (int dec = 0; dec < 2; dec++)
        for (int k = 0; k < 2; k++) {
            double p = k ? 0.2 : 0.0;
            sdict_transformer_layer_config c = {.d_model = 8, .nhead = 2, .dim_feedforward = 16,
                                                .dropout = p, .layer_norm_eps = 1e-5,
                                                .bias = true};
            sdict_module *m = dec ? sdict_transformer_decoder_layer_new(&c)
                                  : sdict_transformer_encoder_layer_new(&c);
            assert_non_null(m);
            uint32_t seed = 7u + (uint32_t)k;
            sdict_module_each_param(m, fill, &seed);
            int64_t xs[3] = {5, 2, 8};
            sdict_act x = {0}, ytr = {0}, ytr2 = {0}, yev = {0}, dx = {0};
            assert_int_equal(sdict_act_init(&x, SDICT_FLOAT32, 3, xs, NULL), SDICT_OK);
            for (int64_t i = 0; i < sdict_act_numel(&x); i++) sdict_act_f32(&x)[i] = unif(&seed);
            tcase t = {.m = m, .decoder = dec, .x = x, .mem = x};
            assert_int_equal(fwd(&t, &ytr), SDICT_OK);
            assert_int_equal(fwd(&t, &ytr2), SDICT_OK);
            assert_true(same(&ytr, &ytr2));
            sdict_module_eval(m);
            assert_int_equal(fwd(&t, &yev), SDICT_OK);
            if (p > 0.0) {
                assert_false(same(&ytr, &yev));
                /* not merely rescaled: most outputs still close, some far */
                int64_t far = 0;
                for (int64_t i = 0; i < sdict_act_numel(&yev); i++)
                    far += fabsf(sdict_act_f32(&ytr)[i] - sdict_act_f32(&yev)[i]) > 1e-3f;
                assert_true(far > 0);
            } else {
                assert_true(same(&ytr, &yev));
            }
            sdict_error err;
            assert_int_equal(sdict_module_backward(m, &yev, &dx, &err), SDICT_E_INVALID_ARG);
            assert_non_null(strstr(err.message, "training-mode"));
            sdict_act_free(&x);
            sdict_act_free(&ytr);
            sdict_act_free(&ytr2);
            sdict_act_free(&yev);
            sdict_module_free(m);
        }
}

/* MultiheadAttention with dropout: the attention weights returned in training are the dropped
   ones (some exact zeros, rows no longer summing to 1), eval ones sum to 1 */
static void test_mha_dropout_weights(void **state) {
    (void)state;
    sdict_module *m = sdict_multihead_attention_new(4, 1, 0.5, true, false);
    assert_non_null(m);
    int64_t xs[3] = {6, 1, 4};
    sdict_act x = {0}, y = {0}, w = {0};
    uint32_t seed = 3;
    assert_int_equal(sdict_act_init(&x, SDICT_FLOAT32, 3, xs, NULL), SDICT_OK);
    for (int64_t i = 0; i < sdict_act_numel(&x); i++) sdict_act_f32(&x)[i] = unif(&seed);
    sdict_mha_args a = {.need_weights = true, .average_attn_weights = true};
    assert_int_equal(sdict_multihead_attention_forward(m, &x, &x, &x, &a, &y, &w, NULL), SDICT_OK);
    int zeros = 0;
    for (int64_t i = 0; i < 36; i++) zeros += sdict_act_f32(&w)[i] == 0.0f;
    assert_true(zeros > 5 && zeros < 31);
    sdict_act_free(&y);
    sdict_act_free(&w);
    sdict_module_eval(m);
    assert_int_equal(sdict_multihead_attention_forward(m, &x, &x, &x, &a, &y, &w, NULL), SDICT_OK);
    for (int64_t r = 0; r < 6; r++) {
        double sum = 0.0;
        for (int64_t j = 0; j < 6; j++) sum += sdict_act_f32(&w)[r * 6 + j];
        assert_true(fabs(sum - 1.0) < 1e-5);
    }
    sdict_act_free(&x);
    sdict_act_free(&y);
    sdict_act_free(&w);
    sdict_module_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encoder_backward),
        cmocka_unit_test(test_decoder_backward),
        cmocka_unit_test(test_train_vs_eval),
        cmocka_unit_test(test_mha_dropout_weights),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
