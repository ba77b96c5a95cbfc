/*
 test_nn_gpt2_train.c - GPT-2's training backward (sdict_gpt2_forward_backward) against central
 finite differences of its own loss, for every parameter tensor (a spread of elements each):
 tied and untied lm_head, gelu_new / gelu / relu, scale_attn_by_inverse_layer_idx, labels with
 ignored (-100) positions, and training mode with all three dropouts (the masks are fixed by the
 seed, so the loss stays a function of the weights). Also: the eval loss equals the
 cross-entropy of sdict_gpt2_forward's logits, sdict_gpt2_optim_add's parameter count (lm_head
 left out when tied), tie_weights, and the refusals. Parity with transformers is tests/gpt2
 (gpt2_train).
*/
#define _POSIX_C_SOURCE 200809L /* mkstemp, ftruncate */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "statedict_nn.h"
#include "statedict_optim.h"

/* finite-difference step: 1e-2 keeps float32 rounding of the loss small; ReLU's kink needs a
   step that rarely crosses it */
static double H = 1e-2;

static uint32_t next(uint32_t *s) { return *s = *s * 1664525u + 1013904223u; }
static float unif(uint32_t *s) { return (float)((next(s) >> 8) & 0xFFFF) / 32768.0f - 1.0f; }

static void fill(void *ctx, const char *key, sdict_named_tensor *nt) {
    uint32_t *seed = ctx;
    float *p = sdict_tensor_data(&nt->value);
    bool ln_w = strstr(key, "ln_") && strstr(key, ".weight");
    for (int64_t i = 0; i < sdict_tensor_numel(&nt->value); i++)
        p[i] = ln_w ? 1.0f + 0.3f * unif(seed) : 0.5f * unif(seed);
}

typedef struct run_ctx {
    sdict_gpt2 *g;
    sdict_act *ids, *labels;
    uint64_t seed;
} run_ctx;

static double loss_of(const run_ctx *r) {
    float loss;
    sdict_module_zero_grad(sdict_gpt2_module(r->g));
    assert_int_equal(sdict_gpt2_forward_backward(r->g, r->ids, r->labels, r->seed, &loss, NULL),
                     SDICT_OK);
    return loss;
}

typedef struct grad_ctx {
    const run_ctx *r;
    sdict_gpt2 *g;
    int checked;
} grad_ctx;

/* Every parameter: the analytic gradient of up to 10 spread elements against (L(p+h) -
   L(p-h)) / 2h. Tied: wte's gradient includes lm_head's use; lm_head.weight is skipped (the
   forward re-copies it from wte). */
static void fd_param(void *ctx, const char *key, sdict_named_tensor *nt) {
    grad_ctx *c = ctx;
    if (sdict_gpt2_is_tied(c->g) && strcmp(key, "lm_head.weight") == 0) {
        const float *gr = sdict_tensor_data(&nt->grad);
        for (int64_t i = 0; i < sdict_tensor_numel(&nt->grad); i++) assert_true(gr[i] == 0.0f);
        return;
    }
    float *p = sdict_tensor_data(&nt->value);
    int64_t n = sdict_tensor_numel(&nt->value), stepn = n / 10 > 0 ? n / 10 : 1;
    float *ana = malloc(sizeof(float) * (size_t)n);
    assert_non_null(ana);
    memcpy(ana, sdict_tensor_data(&nt->grad), sizeof(float) * (size_t)n);
    double gmax = 0.0;
    for (int64_t i = 0; i < n; i++) gmax = fmax(gmax, fabs(ana[i]));
    for (int64_t i = 0; i < n; i += stepn) {
        float keep = p[i];
        p[i] = keep + (float)H;
        double lp = loss_of(c->r);
        p[i] = keep - (float)H;
        double lm = loss_of(c->r);
        p[i] = keep;
        double num = (lp - lm) / (2 * H);
        if (fabs(num - ana[i]) > 2e-3 + 3e-2 * fabs(ana[i]))
            fail_msg("%s[%lld]: finite difference %.6f, backward %.6f", key, (long long)i, num,
                     (double)ana[i]);
        c->checked++;
    }
    /* restore the analytic gradients for the next tensor */
    loss_of(c->r);
    free(ana);
    (void)gmax;
}

static void check(sdict_gpt2_config cfg, bool with_labels, bool train, uint32_t seed) {
    sdict_gpt2 *g = NULL;
    assert_int_equal(sdict_gpt2_new(&cfg, &g, NULL), SDICT_OK);
    sdict_module_each_param(sdict_gpt2_module(g), fill, &seed);
    sdict_gpt2_tie_weights(g);
    sdict_module_train(sdict_gpt2_module(g), train);
    int64_t B = 2, T = 5, shape[2] = {B, T};
    sdict_act ids = {0}, labels = {0};
    assert_int_equal(sdict_act_init(&ids, SDICT_INT64, 2, shape, NULL), SDICT_OK);
    assert_int_equal(sdict_act_init(&labels, SDICT_INT64, 2, shape, NULL), SDICT_OK);
    int64_t *I = ids.data, *L = labels.data;
    for (int64_t i = 0; i < B * T; i++) {
        I[i] = next(&seed) % (uint32_t)cfg.vocab_size;
        L[i] = i % 3 == 1 ? -100 : (int64_t)(next(&seed) % (uint32_t)cfg.vocab_size);
    }
    run_ctx r = {g, &ids, with_labels ? &labels : NULL, 1234};
    double l0 = loss_of(&r);
    assert_true(isfinite(l0) && l0 > 0.0);
    if (!train) { /* the eval loss is the cross-entropy of the eval forward's shifted logits */
        sdict_act logits = {0}, sl = {0}, tg = {0};
        assert_int_equal(sdict_gpt2_forward(g, &ids, &logits, NULL), SDICT_OK);
        int64_t V = cfg.vocab_size, ls[2] = {B * (T - 1), V}, ts[1] = {B * (T - 1)};
        assert_int_equal(sdict_act_init(&sl, SDICT_FLOAT32, 2, ls, NULL), SDICT_OK);
        assert_int_equal(sdict_act_init(&tg, SDICT_INT64, 1, ts, NULL), SDICT_OK);
        const int64_t *lab = with_labels ? L : I;
        for (int64_t b = 0; b < B; b++)
            for (int64_t t = 0; t + 1 < T; t++) {
                memcpy(sdict_act_f32(&sl) + (b * (T - 1) + t) * V,
                       sdict_act_f32(&logits) + (b * T + t) * V, sizeof(float) * (size_t)V);
                ((int64_t *)tg.data)[b * (T - 1) + t] = lab[b * T + t + 1];
            }
        float ref;
        assert_int_equal(sdict_cross_entropy_loss_ex(&sl, &tg, -100, &ref, NULL, NULL), SDICT_OK);
        assert_float_equal(l0, ref, 1e-5 * (1.0 + fabs(ref)));
        sdict_act_free(&logits);
        sdict_act_free(&sl);
        sdict_act_free(&tg);
    } else { /* dropout is on: another seed gives another loss, the same seed the same one */
        r.seed = 99;
        double l1 = loss_of(&r);
        assert_true(fabs(l1 - l0) > 1e-6);
        r.seed = 1234;
        assert_float_equal(loss_of(&r), l0, 0.0);
    }
    grad_ctx c = {&r, g, 0};
    sdict_module_each_param(sdict_gpt2_module(g), fd_param, &c);
    assert_true(c.checked > 100);
    assert_true(sdict_gpt2_module(g)->training == train);
    sdict_act_free(&ids);
    sdict_act_free(&labels);
    sdict_gpt2_free(g);
}

static sdict_gpt2_config small(void) {
    sdict_gpt2_config c;
    sdict_gpt2_config_default(&c);
    c.vocab_size = 7;
    c.n_positions = 6;
    c.n_embd = 8;
    c.n_layer = 2;
    c.n_head = 2;
    c.attn_pdrop = c.resid_pdrop = c.embd_pdrop = 0.0;
    return c;
}

static void test_backward_tied(void **state) {
    (void)state;
    check(small(), false, false, 1);
    check(small(), true, false, 2);
}

static void test_backward_untied_variants(void **state) {
    (void)state;
    sdict_gpt2_config c = small();
    c.tie_word_embeddings = false;
    c.activation = SDICT_GPT2_GELU;
    c.scale_attn_by_inverse_layer_idx = true;
    check(c, true, false, 3);
}

static void test_backward_relu(void **state) {
    (void)state;
    sdict_gpt2_config c = small();
    c.activation = SDICT_GPT2_RELU;
    c.n_inner = 12;
    H = 1e-3;
    check(c, false, false, 4);
    H = 1e-2;
}

static void test_backward_dropout(void **state) {
    (void)state;
    sdict_gpt2_config c = small();
    c.attn_pdrop = 0.2;
    c.resid_pdrop = 0.15;
    c.embd_pdrop = 0.1;
    check(c, true, true, 5);
}

static void test_optim_params_and_errors(void **state) {
    (void)state;
    sdict_gpt2_config c = small();
    for (int tied = 0; tied < 2; tied++) {
        c.tie_word_embeddings = tied;
        sdict_gpt2 *g = NULL;
        assert_int_equal(sdict_gpt2_new(&c, &g, NULL), SDICT_OK);
        sdict_optim *o = sdict_optim_new(SDICT_OPTIM_ADAMW);
        sdict_optim_hparams hp = sdict_optim_defaults(SDICT_OPTIM_ADAMW);
        assert_int_equal(sdict_gpt2_optim_add(o, &hp, g, NULL), SDICT_OK);
        sdict_doc *doc = NULL;
        sdict_value *osd = NULL;
        assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
        assert_int_equal(sdict_optim_state_dict(o, doc, &osd, NULL), SDICT_OK);
        const sdict_value *params =
            sdict_dict_get(sdict_seq_item(sdict_dict_get(osd, "param_groups"), 0), "params");
        /* wte, wpe, 12 per layer, ln_f weight and bias, (+ lm_head untied) */
        assert_int_equal(sdict_seq_len(params), 2 + 12 * 2 + 2 + (tied ? 0 : 1));
        sdict_doc_free(doc);
        sdict_optim_free(o);
        /* tie_weights copies wte into lm_head only when tied */
        float *wte = sdict_tensor_data(&sdict_module_tensor(sdict_gpt2_module(g),
                                                            "transformer.wte.weight")->value);
        float *head = sdict_tensor_data(&sdict_module_tensor(sdict_gpt2_module(g),
                                                             "lm_head.weight")->value);
        wte[3] += 1.0f;
        sdict_gpt2_tie_weights(g);
        assert_true((wte[3] == head[3]) == (tied == 1));

        int64_t s2[2] = {1, 4}, s3[2] = {1, 3}, s7[2] = {1, 7};
        sdict_act ids = {0}, lab = {0}, big = {0};
        sdict_error err;
        float loss = 0.0f;
        assert_int_equal(sdict_act_init(&ids, SDICT_INT64, 2, s2, NULL), SDICT_OK);
        assert_int_equal(sdict_act_init(&lab, SDICT_INT64, 2, s3, NULL), SDICT_OK);
        assert_int_equal(sdict_gpt2_forward_backward(g, &ids, &lab, 0, &loss, &err),
                         SDICT_E_SHAPE);
        assert_true(isnan(loss));
        assert_non_null(strstr(err.message, "labels"));
        ((int64_t *)ids.data)[2] = 7;
        assert_int_equal(sdict_gpt2_forward_backward(g, &ids, NULL, 0, &loss, &err),
                         SDICT_E_INVALID_ARG);
        assert_non_null(strstr(err.message, "out of range"));
        ((int64_t *)ids.data)[2] = 0;
        sdict_act_free(&lab);
        assert_int_equal(sdict_act_init(&lab, SDICT_INT64, 2, s2, NULL), SDICT_OK);
        ((int64_t *)lab.data)[1] = 12;
        assert_int_equal(sdict_gpt2_forward_backward(g, &ids, &lab, 0, &loss, &err),
                         SDICT_E_INVALID_ARG);
        assert_non_null(strstr(err.message, "out of bounds"));
        assert_int_equal(sdict_act_init(&big, SDICT_INT64, 2, s7, NULL), SDICT_OK);
        assert_int_equal(sdict_gpt2_forward_backward(g, &big, NULL, 0, &loss, &err),
                         SDICT_E_LIMIT);
        sdict_act_free(&ids);
        sdict_act_free(&lab);
        sdict_act_free(&big);
        sdict_gpt2_free(g);
    }
}

/* Absurd configs are refused by name before anything is allocated; a huge max_new_tokens or
   batch cannot overflow the size checks. */
static void test_hostile_sizes(void **state) {
    (void)state;
    sdict_error err;
    sdict_gpt2 *g = NULL;
    sdict_gpt2_config c = small();
    c.n_layer = SDICT_GPT2_MAX_LAYERS + 1;
    assert_int_equal(sdict_gpt2_new(&c, &g, &err), SDICT_E_INVALID_ARG);
    assert_null(g);
    assert_non_null(strstr(err.message, "n_layer 1025 is outside 1..1024"));
    c = small();
    c.n_embd = 9; /* n_head 2 */
    assert_int_equal(sdict_gpt2_new(&c, &g, &err), SDICT_E_INVALID_ARG);
    assert_non_null(strstr(err.message, "n_embd 9 is not divisible by n_head 2"));
    c = small();
    c.vocab_size = INT32_MAX; /* 2 x 2^31 x 8 parameters in wte and lm_head */
    assert_int_equal(sdict_gpt2_new(&c, &g, &err), SDICT_E_LIMIT);
    assert_non_null(strstr(err.message, "more than the limit of 4294967296"));
    c = small();
    c.n_embd = INT32_MAX / 4 - 1; /* n_head 2 divides it; E^2 parameters overflow nothing */
    assert_int_equal(sdict_gpt2_new(&c, &g, &err), SDICT_E_LIMIT);
    c = small();
    c.n_positions = 0;
    assert_int_equal(sdict_gpt2_new(&c, &g, &err), SDICT_E_INVALID_ARG);
    assert_non_null(strstr(err.message, "n_positions 0"));

    /* a config.json past SDICT_GPT2_MAX_CONFIG_BYTES is refused before it is read (sparse) */
    char path[] = "/tmp/sdict_gpt2_cfg_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)SDICT_GPT2_MAX_CONFIG_BYTES + 1), 0);
    close(fd);
    assert_int_equal(sdict_gpt2_config_from_json(path, &c, &err), SDICT_E_LIMIT);
    assert_non_null(strstr(err.message, "more than a config.json's limit"));
    unlink(path);
    char dir[] = "/tmp/sdict_gpt2_dir_XXXXXX";
    assert_non_null(mkdtemp(dir));
    assert_int_equal(sdict_gpt2_config_from_json(dir, &c, &err), SDICT_E_IO);
    assert_non_null(strstr(err.message, "is a directory"));
    rmdir(dir);

    c = small();
    assert_int_equal(sdict_gpt2_new(&c, &g, NULL), SDICT_OK);
    int64_t prompt[2] = {1, 2}, out[8] = {0}, n_out = -1;
    assert_int_equal(sdict_gpt2_generate(g, prompt, 2, INT64_MAX, 0, 0, out, &n_out, &err),
                     SDICT_E_LIMIT);
    assert_int_equal(n_out, 0);
    assert_non_null(strstr(err.message, "exceed n_positions 6"));
    assert_int_equal(sdict_gpt2_generate(g, prompt, 2, 4, 0, 0, out, &n_out, &err), SDICT_OK);
    assert_int_equal(n_out, 6);
    assert_int_equal(sdict_gpt2_generate(g, prompt, 2, 5, 0, 0, out, &n_out, &err),
                     SDICT_E_LIMIT);
    /* a KV cache of another model (3 layers) is refused, not overrun */
    sdict_gpt2_config c3 = small();
    c3.n_layer = 3;
    sdict_gpt2 *g3 = NULL;
    sdict_gpt2_cache *kv3 = NULL;
    assert_int_equal(sdict_gpt2_new(&c3, &g3, NULL), SDICT_OK);
    assert_int_equal(sdict_gpt2_cache_new(g, 1, 6, &kv3, NULL), SDICT_OK);
    int64_t two[2] = {1, 2};
    sdict_act pid = {.dtype = SDICT_INT64, .ndim = 2, .shape = {1, 2}, .data = two}, lg = {0};
    assert_int_equal(sdict_gpt2_forward_cached(g3, kv3, &pid, true, &lg, &err),
                     SDICT_E_INVALID_ARG);
    assert_non_null(strstr(err.message, "cache was made for 2 layers"));
    assert_null(lg.data);
    assert_int_equal(sdict_gpt2_cache_len(kv3), 0);
    assert_int_equal(sdict_gpt2_forward_cached(g, kv3, &pid, true, &lg, &err), SDICT_OK);
    assert_int_equal(sdict_gpt2_cache_len(kv3), 2);
    sdict_act_free(&lg);
    sdict_gpt2_cache_free(kv3);
    sdict_gpt2_free(g3);

    /* a tree grown after sdict_gpt2_new is refused by optim_add, not written past its array */
    sdict_gpt2_new(&c3, &g3, NULL);
    assert_int_equal(sdict_module_add(sdict_gpt2_module(g3), "extra", sdict_linear_new(2, 2, true),
                                      NULL), SDICT_OK);
    sdict_optim *o3 = sdict_optim_new(SDICT_OPTIM_ADAM);
    sdict_optim_hparams hp3 = sdict_optim_defaults(SDICT_OPTIM_ADAM);
    assert_int_equal(sdict_gpt2_optim_add(o3, &hp3, g3, &err), SDICT_E_INVALID_ARG);
    assert_non_null(strstr(err.message, "has 42 parameters, more than GPT2LMHeadModel's"));
    sdict_optim_free(o3);
    sdict_gpt2_free(g3);

    /* NaN weights: top-k still sorts with a total order (NaN first, as torch.topk) and draws
       ids inside the vocabulary */
    float *wte = sdict_tensor_data(&sdict_module_tensor(sdict_gpt2_module(g),
                                                        "transformer.wte.weight")->value);
    wte[8] = NAN;
    sdict_gpt2_tie_weights(g);
    assert_int_equal(sdict_gpt2_generate(g, prompt, 2, 4, 3, 7, out, &n_out, &err), SDICT_OK);
    assert_int_equal(n_out, 6);
    for (int i = 2; i < 6; i++) assert_true(out[i] >= 0 && out[i] < 7);
    /* a batch of 2^40 rows is refused from its shape before its ids are read */
    int64_t few[6] = {0};
    sdict_act ids = {.dtype = SDICT_INT64, .ndim = 2, .shape = {INT64_C(1) << 40, 6},
                     .data = few};
    float loss = 0.0f;
    assert_true(sdict_gpt2_train_bytes(g, INT64_C(1) << 40, 6) >
                (double)SDICT_GPT2_MAX_TRAIN_BYTES);
    assert_int_equal(sdict_gpt2_forward_backward(g, &ids, NULL, 0, &loss, &err), SDICT_E_LIMIT);
    assert_non_null(strstr(err.message, "bytes of activations"));
    assert_true(isnan(loss));
    sdict_act logits = {0};
    assert_int_equal(sdict_gpt2_forward(g, &ids, &logits, &err), SDICT_E_LIMIT);
    assert_non_null(strstr(err.message, "logits and activations"));
    assert_null(logits.data);
    sdict_gpt2_cache *kv = NULL;
    assert_int_equal(sdict_gpt2_cache_new(g, INT64_C(1) << 30, 6, &kv, &err), SDICT_E_LIMIT);
    assert_non_null(strstr(err.message, "bytes of keys and values"));
    assert_null(kv);
    /* 4 B T (n_layer (8 E + 2 NI + 2 H T) + 3 V) for the small model, B 3, T 5 */
    assert_true(sdict_gpt2_train_bytes(g, 3, 5) == 4.0 * 15 * (2 * (64 + 64 + 20) + 21));
    sdict_gpt2_free(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostile_sizes),
        cmocka_unit_test(test_backward_tied),
        cmocka_unit_test(test_backward_untied_variants),
        cmocka_unit_test(test_backward_relu),
        cmocka_unit_test(test_backward_dropout),
        cmocka_unit_test(test_optim_params_and_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
