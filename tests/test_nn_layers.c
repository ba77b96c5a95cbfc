/*
 test_nn_layers.c - forwards of the built-in layers against naive reference loops written
 here, independent of the library's im2col/sgemm paths, and BatchNorm/Dropout semantics.
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

static float *param(sdict_module *m, const char *name) {
    sdict_named_tensor *nt = sdict_module_tensor(m, name);
    assert_non_null(nt);
    return sdict_storage_data(nt->value.storage);
}

/* Deterministic pseudo-random values in [-1, 1), independent of the library's generator. */
static float lcg(uint32_t *s) {
    *s = *s * 1664525u + 1013904223u;
    return (float)((*s >> 8) & 0xFFFF) / 32768.0f - 1.0f;
}

static void fill(float *p, int64_t n, uint32_t seed) {
    for (int64_t i = 0; i < n; i++) p[i] = lcg(&seed);
}

static void make_input(sdict_act *x, int32_t nd, const int64_t *shape, uint32_t seed) {
    assert_int_equal(sdict_act_init(x, SDICT_FLOAT32, nd, shape, NULL), SDICT_OK);
    fill(sdict_act_f32(x), sdict_act_numel(x), seed);
}

static void assert_close(const float *a, const double *b, int64_t n, double tol) {
    for (int64_t i = 0; i < n; i++) {
        if (fabs(a[i] - b[i]) > tol * (1.0 + fabs(b[i]))) {
            print_error("element %lld: %.8g vs %.8g\n", (long long)i, a[i], b[i]);
            fail();
        }
    }
}

/* Conv2d with stride, padding, dilation and groups against the textbook 7-deep loop. */
static void check_conv(int64_t N, int64_t C, int64_t H, int64_t W, int64_t O, int64_t k,
                       int64_t s, int64_t p, int64_t d, int64_t g, bool bias) {
    sdict_module *m = sdict_conv2d_new(C, O, k, k, s, p, d, g, bias);
    assert_non_null(m);
    float *w = param(m, "weight");
    fill(w, O * (C / g) * k * k, 7);
    float *b = bias ? param(m, "bias") : NULL;
    if (b) fill(b, O, 9);
    sdict_act x, y;
    int64_t xs[4] = {N, C, H, W};
    make_input(&x, 4, xs, 11);
    assert_int_equal(sdict_module_forward(m, &x, &y, NULL), SDICT_OK);
    int64_t OH = (H + 2 * p - d * (k - 1) - 1) / s + 1, OW = (W + 2 * p - d * (k - 1) - 1) / s + 1;
    assert_int_equal(y.ndim, 4);
    assert_int_equal(y.shape[0], N);
    assert_int_equal(y.shape[1], O);
    assert_int_equal(y.shape[2], OH);
    assert_int_equal(y.shape[3], OW);
    double *ref = calloc((size_t)(N * O * OH * OW), sizeof *ref);
    assert_non_null(ref);
    const float *X = x.data;
    int64_t Cg = C / g, Og = O / g;
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < O; o++)
            for (int64_t oh = 0; oh < OH; oh++)
                for (int64_t ow = 0; ow < OW; ow++) {
                    double acc = b ? b[o] : 0.0;
                    int64_t grp = o / Og;
                    for (int64_t c = 0; c < Cg; c++)
                        for (int64_t i = 0; i < k; i++)
                            for (int64_t j = 0; j < k; j++) {
                                int64_t ih = oh * s - p + i * d, iw = ow * s - p + j * d;
                                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                                acc += (double)w[((o * Cg + c) * k + i) * k + j] *
                                       X[((n * C + grp * Cg + c) * H + ih) * W + iw];
                            }
                    ref[((n * O + o) * OH + oh) * OW + ow] = acc;
                }
    assert_close(y.data, ref, sdict_act_numel(&y), 1e-5);
    free(ref);
    sdict_act_free(&x);
    sdict_act_free(&y);
    sdict_module_free(m);
}

static void test_conv2d(void **state) {
    (void)state;
    check_conv(2, 3, 9, 8, 4, 3, 1, 0, 1, 1, true);   /* plain */
    check_conv(2, 4, 11, 10, 6, 3, 2, 1, 1, 2, true);  /* stride, padding, groups */
    check_conv(1, 6, 12, 12, 6, 3, 1, 2, 2, 3, false); /* dilation + groups, no bias */
    check_conv(1, 4, 7, 9, 8, 1, 2, 0, 1, 4, true);    /* 1x1 depthwise-like, stride 2 */
    check_conv(3, 2, 5, 5, 2, 5, 1, 2, 1, 1, true);    /* kernel = input size, padded */
    /* invalid: channels not divisible by groups, zero stride */
    assert_null(sdict_conv2d_new(3, 4, 3, 3, 1, 0, 1, 2, true));
    assert_null(sdict_conv2d_new(4, 4, 3, 3, 0, 0, 1, 1, true));
}

static void test_linear(void **state) {
    (void)state;
    sdict_module *m = sdict_linear_new(5, 3, true);
    assert_non_null(m);
    float *w = param(m, "weight"), *b = param(m, "bias");
    /* torch's bound 1/sqrt(in) for the deterministic init */
    for (int i = 0; i < 15; i++) assert_true(fabsf(w[i]) <= 1.0f / sqrtf(5.0f));
    fill(w, 15, 3);
    fill(b, 3, 4);
    sdict_act x, y;
    int64_t xs[3] = {2, 4, 5}; /* extra leading dims are batch dims */
    make_input(&x, 3, xs, 5);
    assert_int_equal(sdict_module_forward(m, &x, &y, NULL), SDICT_OK);
    assert_int_equal(y.ndim, 3);
    assert_int_equal(y.shape[2], 3);
    double ref[24];
    const float *X = x.data;
    for (int r = 0; r < 8; r++)
        for (int o = 0; o < 3; o++) {
            double acc = b[o];
            for (int i = 0; i < 5; i++) acc += (double)X[r * 5 + i] * w[o * 5 + i];
            ref[r * 3 + o] = acc;
        }
    assert_close(y.data, ref, 24, 1e-6);
    /* training mode caches the input for backward */
    assert_int_equal(m->cache[0].ndim, 3);
    assert_memory_equal(m->cache[0].data, x.data, 40 * sizeof(float));
    sdict_act_free(&y);
    /* wrong feature count */
    sdict_error err;
    int64_t bad[2] = {2, 4};
    sdict_act xb;
    make_input(&xb, 2, bad, 1);
    assert_int_equal(sdict_module_forward(m, &xb, &y, &err), SDICT_E_SHAPE);
    assert_null(y.data);
    sdict_act_free(&xb);
    sdict_act_free(&x);
    sdict_module_free(m);
}

static void test_pools(void **state) {
    (void)state;
    int64_t xs[4] = {2, 3, 7, 9};
    sdict_act x, y;
    make_input(&x, 4, xs, 21);
    const float *X = x.data;
    /* MaxPool2d(3, 2, 1): padding never wins */
    sdict_module *mp = sdict_maxpool2d_new(3, 2, 1);
    assert_int_equal(sdict_module_forward(mp, &x, &y, NULL), SDICT_OK);
    assert_int_equal(y.shape[2], 4);
    assert_int_equal(y.shape[3], 5);
    double ref[2 * 3 * 4 * 5];
    for (int64_t pl = 0; pl < 6; pl++)
        for (int64_t oh = 0; oh < 4; oh++)
            for (int64_t ow = 0; ow < 5; ow++) {
                double best = -INFINITY;
                for (int64_t i = 0; i < 3; i++)
                    for (int64_t j = 0; j < 3; j++) {
                        int64_t ih = oh * 2 - 1 + i, iw = ow * 2 - 1 + j;
                        if (ih >= 0 && ih < 7 && iw >= 0 && iw < 9 && X[(pl * 7 + ih) * 9 + iw] > best)
                            best = X[(pl * 7 + ih) * 9 + iw];
                    }
                ref[(pl * 4 + oh) * 5 + ow] = best;
            }
    assert_close(y.data, ref, 120, 0);
    /* argmax cache points at the maximum */
    const int64_t *am = mp->cache[1].data;
    for (int64_t i = 0; i < 120; i++) assert_true(X[(i / 20) * 63 + am[i]] == ((float *)y.data)[i]);
    sdict_act_free(&y);
    sdict_module_free(mp);

    /* AvgPool2d(3, 2, 1) with count_include_pad: divisor 9 even at borders */
    sdict_module *ap = sdict_avgpool2d_new(3, 2, 1);
    assert_int_equal(sdict_module_forward(ap, &x, &y, NULL), SDICT_OK);
    for (int64_t pl = 0; pl < 6; pl++)
        for (int64_t oh = 0; oh < 4; oh++)
            for (int64_t ow = 0; ow < 5; ow++) {
                double sum = 0;
                for (int64_t i = 0; i < 3; i++)
                    for (int64_t j = 0; j < 3; j++) {
                        int64_t ih = oh * 2 - 1 + i, iw = ow * 2 - 1 + j;
                        if (ih >= 0 && ih < 7 && iw >= 0 && iw < 9) sum += X[(pl * 7 + ih) * 9 + iw];
                    }
                ref[(pl * 4 + oh) * 5 + ow] = sum / 9.0;
            }
    assert_close(y.data, ref, 120, 1e-6);
    sdict_act_free(&y);
    sdict_module_free(ap);

    /* AdaptiveAvgPool2d((3, 4)) on 7x9: overlapping bins floor(i*H/o) .. ceil((i+1)*H/o) */
    sdict_module *aap = sdict_adaptive_avgpool2d_new(3, 4);
    assert_int_equal(sdict_module_forward(aap, &x, &y, NULL), SDICT_OK);
    double aref[6 * 12];
    for (int64_t pl = 0; pl < 6; pl++)
        for (int64_t oh = 0; oh < 3; oh++)
            for (int64_t ow = 0; ow < 4; ow++) {
                int64_t h0 = (int64_t)floor(oh * 7.0 / 3), h1 = (int64_t)ceil((oh + 1) * 7.0 / 3);
                int64_t w0 = (int64_t)floor(ow * 9.0 / 4), w1 = (int64_t)ceil((ow + 1) * 9.0 / 4);
                double sum = 0;
                for (int64_t i = h0; i < h1; i++)
                    for (int64_t j = w0; j < w1; j++) sum += X[(pl * 7 + i) * 9 + j];
                aref[(pl * 3 + oh) * 4 + ow] = sum / (double)((h1 - h0) * (w1 - w0));
            }
    assert_close(y.data, aref, 72, 1e-6);
    sdict_act_free(&y);
    sdict_module_free(aap);
    sdict_act_free(&x);
}

/* BatchNorm2d in training: batch statistics, running updates with unbiased variance. */
static void test_batchnorm_train_eval(void **state) {
    (void)state;
    sdict_module *bn = sdict_batchnorm2d_new(3, 1e-5, 0.1, true, true);
    assert_non_null(bn);
    assert_int_equal(bn->version, 2);
    float *w = param(bn, "weight"), *b = param(bn, "bias");
    float *rm = param(bn, "running_mean"), *rv = param(bn, "running_var");
    int64_t *nbt = (int64_t *)param(bn, "num_batches_tracked");
    assert_int_equal(sdict_module_tensor(bn, "num_batches_tracked")->value.ndim, 0);
    assert_int_equal(sdict_module_tensor(bn, "num_batches_tracked")->value.dtype, SDICT_INT64);
    for (int c = 0; c < 3; c++) {
        assert_true(w[c] == 1.0f && b[c] == 0.0f && rm[c] == 0.0f && rv[c] == 1.0f);
        w[c] = 0.5f + (float)c;
        b[c] = -0.25f * (float)c;
        rm[c] = 0.1f * (float)c;
        rv[c] = 1.0f + 0.2f * (float)c;
    }
    *nbt = 5;
    int64_t xs[4] = {4, 3, 3, 2};
    sdict_act x, y;
    make_input(&x, 4, xs, 33);
    const float *X = x.data;
    float rm0[3], rv0[3];
    memcpy(rm0, rm, sizeof rm0);
    memcpy(rv0, rv, sizeof rv0);
    assert_int_equal(sdict_module_forward(bn, &x, &y, NULL), SDICT_OK);
    assert_int_equal(*nbt, 6);
    double ref[72];
    for (int c = 0; c < 3; c++) {
        double sum = 0, sq = 0;
        for (int n = 0; n < 4; n++)
            for (int s = 0; s < 6; s++) sum += X[(n * 3 + c) * 6 + s];
        double mean = sum / 24;
        for (int n = 0; n < 4; n++)
            for (int s = 0; s < 6; s++) sq += pow(X[(n * 3 + c) * 6 + s] - mean, 2);
        for (int n = 0; n < 4; n++)
            for (int s = 0; s < 6; s++)
                ref[(n * 3 + c) * 6 + s] =
                    (X[(n * 3 + c) * 6 + s] - mean) / sqrt(sq / 24 + 1e-5) * w[c] + b[c];
        assert_true(fabs(rm[c] - (0.9 * rm0[c] + 0.1 * mean)) < 1e-6);
        assert_true(fabs(rv[c] - (0.9 * rv0[c] + 0.1 * sq / 23)) < 1e-6);
    }
    assert_close(y.data, ref, 72, 1e-5);
    sdict_act_free(&y);

    /* eval: running statistics, no update */
    sdict_module_eval(bn);
    assert_int_equal(sdict_module_forward(bn, &x, &y, NULL), SDICT_OK);
    assert_int_equal(*nbt, 6);
    for (int i = 0; i < 72; i++) {
        int c = (i / 6) % 3;
        ref[i] = (X[i] - rm[c]) / sqrt(rv[c] + 1e-5) * w[c] + b[c];
    }
    assert_close(y.data, ref, 72, 1e-5);
    assert_null(bn->cache[0].data); /* no backward caches in eval */
    sdict_act_free(&y);
    sdict_act_free(&x);
    sdict_module_free(bn);
}

/* BatchNorm1d: momentum=None (cumulative average), no affine, [N, C, L] and [N, C] input,
   the one-value-per-channel error, and track_running_stats=False. */
static void test_batchnorm1d(void **state) {
    (void)state;
    sdict_module *bn = sdict_batchnorm1d_new(2, 1e-3, -1.0, false, true);
    assert_non_null(bn);
    assert_int_equal(bn->n_params, 0);
    float *rm = param(bn, "running_mean");
    int64_t xs[3] = {3, 2, 2};
    sdict_act x, y;
    double means[2][2];
    for (int it = 0; it < 2; it++) {
        make_input(&x, 3, xs, 40 + (uint32_t)it);
        const float *X = x.data;
        for (int c = 0; c < 2; c++) {
            double s = 0;
            for (int n = 0; n < 3; n++) s += X[(n * 2 + c) * 2] + X[(n * 2 + c) * 2 + 1];
            means[it][c] = s / 6;
        }
        assert_int_equal(sdict_module_forward(bn, &x, &y, NULL), SDICT_OK);
        sdict_act_free(&y);
        sdict_act_free(&x);
    }
    /* cumulative: after two batches, running_mean = (m1 + m2) / 2 (starting from 0: factor 1) */
    for (int c = 0; c < 2; c++) assert_true(fabs(rm[c] - (means[0][c] + means[1][c]) / 2) < 1e-6);

    sdict_error err;
    int64_t one[2] = {1, 2};
    make_input(&x, 2, one, 3);
    assert_int_equal(sdict_module_forward(bn, &x, &y, &err), SDICT_E_SHAPE);
    assert_string_equal(err.message, "Expected more than 1 value per channel when training, "
                                     "got input size torch.Size([1, 2])");
    sdict_module_eval(bn);
    assert_int_equal(sdict_module_forward(bn, &x, &y, NULL), SDICT_OK); /* fine in eval */
    sdict_act_free(&y);
    sdict_act_free(&x);
    sdict_module_free(bn);

    /* no running stats: no buffers, batch statistics even in eval */
    bn = sdict_batchnorm1d_new(2, 1e-5, 0.1, true, false);
    assert_int_equal(bn->n_buffers, 0);
    sdict_module_eval(bn);
    int64_t two[2] = {4, 2};
    make_input(&x, 2, two, 8);
    assert_int_equal(sdict_module_forward(bn, &x, &y, NULL), SDICT_OK);
    for (int c = 0; c < 2; c++) {
        double s = 0;
        for (int n = 0; n < 4; n++) s += ((float *)y.data)[n * 2 + c];
        assert_true(fabs(s) < 1e-5); /* normalised with its own mean */
    }
    sdict_act_free(&y);
    sdict_act_free(&x);
    sdict_module_free(bn);
}

static void test_dropout(void **state) {
    (void)state;
    sdict_module *d = sdict_dropout_new(0.25);
    int64_t xs[1] = {4000};
    sdict_act x, y, y2;
    assert_int_equal(sdict_act_init(&x, SDICT_FLOAT32, 1, xs, NULL), SDICT_OK);
    for (int i = 0; i < 4000; i++) ((float *)x.data)[i] = 1.0f + (float)(i % 7);
    sdict_dropout_seed(d, 42);
    assert_int_equal(sdict_module_forward(d, &x, &y, NULL), SDICT_OK);
    int zeros = 0;
    for (int i = 0; i < 4000; i++) {
        float v = ((float *)y.data)[i], in = ((float *)x.data)[i];
        if (v == 0.0f) zeros++;
        else assert_true(fabsf(v - in / 0.75f) < 1e-5f);
    }
    assert_in_range(zeros, 850, 1150); /* ~1000 expected, 5+ sigma band */
    /* same seed, same mask */
    sdict_dropout_seed(d, 42);
    assert_int_equal(sdict_module_forward(d, &x, &y2, NULL), SDICT_OK);
    assert_memory_equal(y.data, y2.data, 4000 * sizeof(float));
    sdict_act_free(&y2);
    sdict_act_free(&y);
    /* eval: identity */
    sdict_module_eval(d);
    assert_int_equal(sdict_module_forward(d, &x, &y, NULL), SDICT_OK);
    assert_memory_equal(y.data, x.data, 4000 * sizeof(float));
    sdict_act_free(&y);
    sdict_module_free(d);
    /* p = 1 zeroes everything in training */
    d = sdict_dropout_new(1.0);
    assert_int_equal(sdict_module_forward(d, &x, &y, NULL), SDICT_OK);
    for (int i = 0; i < 4000; i++) assert_true(((float *)y.data)[i] == 0.0f);
    sdict_act_free(&y);
    sdict_module_free(d);
    assert_null(sdict_dropout_new(1.5));
    sdict_act_free(&x);
}

static void test_embedding_flatten_relu(void **state) {
    (void)state;
    sdict_module *e = sdict_embedding_new(10, 3);
    float *w = param(e, "weight");
    int64_t xs[2] = {2, 2};
    sdict_act x, y;
    assert_int_equal(sdict_act_init(&x, SDICT_INT64, 2, xs, NULL), SDICT_OK);
    int64_t idx[4] = {9, 0, 3, 3};
    memcpy(x.data, idx, sizeof idx);
    assert_int_equal(sdict_module_forward(e, &x, &y, NULL), SDICT_OK);
    assert_int_equal(y.ndim, 3);
    assert_int_equal(y.shape[2], 3);
    for (int i = 0; i < 4; i++) assert_memory_equal((float *)y.data + i * 3, w + idx[i] * 3, 12);
    sdict_act_free(&y);
    ((int64_t *)x.data)[1] = 10;
    sdict_error err;
    assert_int_equal(sdict_module_forward(e, &x, &y, &err), SDICT_E_INVALID_ARG);
    sdict_act_free(&x);
    sdict_module_free(e);

    /* Flatten(1, -1) and Flatten(0, 1) */
    int64_t s4[4] = {2, 3, 4, 5};
    make_input(&x, 4, s4, 1);
    sdict_module *f = sdict_flatten_new(1, -1);
    assert_int_equal(sdict_module_forward(f, &x, &y, NULL), SDICT_OK);
    assert_int_equal(y.ndim, 2);
    assert_int_equal(y.shape[1], 60);
    assert_memory_equal(y.data, x.data, 120 * sizeof(float));
    sdict_act_free(&y);
    sdict_module_free(f);
    f = sdict_flatten_new(0, 1);
    assert_int_equal(sdict_module_forward(f, &x, &y, NULL), SDICT_OK);
    assert_int_equal(y.ndim, 3);
    assert_int_equal(y.shape[0], 6);
    assert_int_equal(y.shape[2], 5);
    sdict_act_free(&y);
    sdict_module_free(f);

    /* ReLU */
    sdict_module *r = sdict_relu_new();
    assert_int_equal(sdict_module_forward(r, &x, &y, NULL), SDICT_OK);
    for (int i = 0; i < 120; i++) {
        float in = ((float *)x.data)[i];
        assert_true(((float *)y.data)[i] == (in > 0 ? in : 0.0f));
    }
    sdict_act_free(&y);
    sdict_module_free(r);
    sdict_act_free(&x);
}

/* Sequential chains children; resnet18 runs end to end on a small image. */
static void test_sequential_resnet(void **state) {
    (void)state;
    sdict_module *seq = sdict_sequential_new();
    assert_int_equal(sdict_module_add(seq, "0", sdict_linear_new(4, 6, true), NULL), SDICT_OK);
    assert_int_equal(sdict_module_add(seq, "1", sdict_relu_new(), NULL), SDICT_OK);
    assert_int_equal(sdict_module_add(seq, "2", sdict_linear_new(6, 2, false), NULL), SDICT_OK);
    int64_t xs[2] = {3, 4};
    sdict_act x, y, h, h2, ref;
    make_input(&x, 2, xs, 5);
    assert_int_equal(sdict_module_forward(seq, &x, &y, NULL), SDICT_OK);
    assert_int_equal(sdict_module_forward(seq->children[0], &x, &h, NULL), SDICT_OK);
    assert_int_equal(sdict_module_forward(seq->children[1], &h, &h2, NULL), SDICT_OK);
    assert_int_equal(sdict_module_forward(seq->children[2], &h2, &ref, NULL), SDICT_OK);
    assert_memory_equal(y.data, ref.data, 6 * sizeof(float));
    sdict_act_free(&h);
    sdict_act_free(&h2);
    sdict_act_free(&ref);
    sdict_act_free(&y);
    sdict_act_free(&x);
    sdict_module_free(seq);

    sdict_module *net = sdict_resnet18_new(7);
    assert_non_null(net);
    sdict_module_eval(net);
    int64_t is[4] = {1, 3, 32, 32};
    make_input(&x, 4, is, 77);
    assert_int_equal(sdict_module_forward(net, &x, &y, NULL), SDICT_OK);
    assert_int_equal(y.ndim, 2);
    assert_int_equal(y.shape[1], 7);
    for (int i = 0; i < 7; i++) assert_true(isfinite(((float *)y.data)[i]));
    sdict_act_free(&y);
    sdict_act_free(&x);
    sdict_module_free(net);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv2d),
        cmocka_unit_test(test_linear),
        cmocka_unit_test(test_pools),
        cmocka_unit_test(test_batchnorm_train_eval),
        cmocka_unit_test(test_batchnorm1d),
        cmocka_unit_test(test_dropout),
        cmocka_unit_test(test_embedding_flatten_relu),
        cmocka_unit_test(test_sequential_resnet),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
