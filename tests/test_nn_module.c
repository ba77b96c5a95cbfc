/*
 test_nn_module.c - the module tree: state_dict key order and _metadata, load_state_dict
 (copy with dtype conversion, missing/unexpected/size-mismatch reporting with torch's text,
 BatchNorm's num_batches_tracked rule, non-strict), consume_prefix, save/load round trip.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "statedict_nn.h"

static sdict_status never_called(sdict_module *m, const sdict_act *x, sdict_act *y,
                                 sdict_error *err) {
    (void)m; (void)x; (void)y; (void)err;
    return SDICT_E_UNSUPPORTED;
}

/* Net(fc: Linear(3,2), block: Sequential(0: Conv2d(1,2,3), 1: BatchNorm2d(2)), head: Linear(2,1)) */
static sdict_module *small_net(void) {
    sdict_module *net = sdict_module_new("Net", never_called, NULL);
    sdict_module *block = sdict_sequential_new();
    assert_int_equal(sdict_module_add(block, "0", sdict_conv2d_new(1, 2, 3, 3, 1, 0, 1, 1, true), NULL), SDICT_OK);
    assert_int_equal(sdict_module_add(block, "1", sdict_batchnorm2d_new(2, 1e-5, 0.1, true, true), NULL), SDICT_OK);
    assert_int_equal(sdict_module_add(net, "fc", sdict_linear_new(3, 2, true), NULL), SDICT_OK);
    assert_int_equal(sdict_module_add(net, "block", block, NULL), SDICT_OK);
    assert_int_equal(sdict_module_add(net, "head", sdict_linear_new(2, 1, false), NULL), SDICT_OK);
    return net;
}

static const char *const KEYS[] = {
    "fc.weight", "fc.bias", "block.0.weight", "block.0.bias", "block.1.weight", "block.1.bias",
    "block.1.running_mean", "block.1.running_var", "block.1.num_batches_tracked", "head.weight"};
#define NKEYS (sizeof KEYS / sizeof KEYS[0])

static void test_state_dict_layout(void **state) {
    (void)state;
    sdict_module *net = small_net();
    sdict_doc *doc;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    sdict_value *sd;
    assert_int_equal(sdict_module_state_dict(net, doc, false, &sd, NULL), SDICT_OK);
    assert_true(sdict_dict_is_ordered(sd));
    assert_int_equal(sdict_dict_len(sd), NKEYS);
    for (size_t i = 0; i < NKEYS; i++) {
        assert_string_equal(sdict_str_get(sdict_dict_key(sd, i), NULL), KEYS[i]);
        const sdict_tensor *t = sdict_value_tensor(sdict_dict_val(sd, i));
        assert_non_null(t);
        assert_false(t->is_parameter);
        /* shares the module's memory (detach(), not clone()) */
        assert_ptr_equal(t->storage, sdict_module_tensor(net, KEYS[i])->value.storage);
    }
    const sdict_tensor *nbt = sdict_value_tensor(sdict_dict_get(sd, "block.1.num_batches_tracked"));
    assert_int_equal(nbt->dtype, SDICT_INT64);
    assert_int_equal(nbt->ndim, 0);
    /* _metadata: every module, pre-order, prefixes without trailing dot, BatchNorm version 2 */
    const sdict_value *meta = sdict_dict_get(sdict_dict_attrs(sd), "_metadata");
    assert_non_null(meta);
    assert_true(sdict_dict_is_ordered(meta));
    const char *prefixes[] = {"", "fc", "block", "block.0", "block.1", "head"};
    const int64_t versions[] = {1, 1, 1, 1, 2, 1};
    assert_int_equal(sdict_dict_len(meta), 6);
    for (size_t i = 0; i < 6; i++) {
        assert_string_equal(sdict_str_get(sdict_dict_key(meta, i), NULL), prefixes[i]);
        int64_t v;
        assert_int_equal(sdict_int_get(sdict_dict_get(sdict_dict_val(meta, i), "version"), &v), SDICT_OK);
        assert_int_equal(v, versions[i]);
    }
    /* keep_vars: parameters become nn.Parameter with requires_grad, buffers stay tensors */
    assert_int_equal(sdict_module_state_dict(net, doc, true, &sd, NULL), SDICT_OK);
    assert_true(sdict_value_tensor(sdict_dict_get(sd, "fc.weight"))->is_parameter);
    assert_true(sdict_value_tensor(sdict_dict_get(sd, "fc.weight"))->requires_grad);
    assert_false(sdict_value_tensor(sdict_dict_get(sd, "block.1.running_mean"))->is_parameter);
    sdict_doc_free(doc);
    sdict_module_free(net);
}

/* parameters() order and gradient buffers */
static void collect(void *ctx, const char *key, sdict_named_tensor *nt) {
    size_t *n = ctx;
    assert_non_null(nt->grad.storage);
    assert_int_equal(nt->grad.ndim, nt->value.ndim);
    assert_memory_equal(nt->grad.shape, nt->value.shape, sizeof(int64_t) * (size_t)nt->value.ndim);
    /* parameters are the state_dict keys without buffers, in the same order */
    static const char *const params[] = {"fc.weight", "fc.bias", "block.0.weight", "block.0.bias",
                                         "block.1.weight", "block.1.bias", "head.weight"};
    assert_string_equal(key, params[*n]);
    (*n)++;
}

static void test_tree(void **state) {
    (void)state;
    sdict_module *net = small_net();
    size_t n = 0;
    sdict_module_each_param(net, collect, &n);
    assert_int_equal(n, 7);
    assert_ptr_equal(sdict_module_find(net, "block.1"), net->children[1]->children[1]);
    assert_null(sdict_module_find(net, "block.2"));
    assert_null(sdict_module_tensor(net, "block.1.nope"));
    sdict_error err;
    assert_int_equal(sdict_module_add(net, "fc", sdict_relu_new(), &err), SDICT_E_INVALID_ARG);
    assert_int_equal(sdict_module_add(net, "a.b", sdict_relu_new(), &err), SDICT_E_INVALID_ARG);
    assert_int_equal(sdict_module_add(net, "x", NULL, &err), SDICT_E_INVALID_ARG);
    /* train / eval reach every descendant */
    sdict_module_eval(net);
    assert_false(sdict_module_find(net, "block.1")->training);
    sdict_module_train(net, true);
    assert_true(sdict_module_find(net, "block.1")->training);
    /* zero_grad */
    float *g = sdict_storage_data(sdict_module_tensor(net, "head.weight")->grad.storage);
    g[0] = 3.0f;
    sdict_module_zero_grad(net);
    assert_true(g[0] == 0.0f);
    sdict_module_free(net);
}

/* Fills every float parameter/buffer with values derived from its index. */
static void set_values(sdict_module *net, float base) {
    for (size_t k = 0; k < NKEYS; k++) {
        sdict_named_tensor *nt = sdict_module_tensor(net, KEYS[k]);
        if (nt->value.dtype != SDICT_FLOAT32) {
            *(int64_t *)sdict_storage_data(nt->value.storage) = (int64_t)base;
            continue;
        }
        float *p = sdict_storage_data(nt->value.storage);
        for (int64_t i = 0; i < sdict_tensor_numel(&nt->value); i++)
            p[i] = base + (float)k + 0.01f * (float)i;
    }
}

static void test_round_trip_through_file_bytes(void **state) {
    (void)state;
    sdict_module *a = small_net(), *b = small_net();
    set_values(a, 7.0f);
    sdict_doc *doc;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    sdict_value *sd;
    assert_int_equal(sdict_module_state_dict(a, doc, false, &sd, NULL), SDICT_OK);
    void *buf;
    size_t size;
    sdict_error err;
    assert_int_equal(sdict_save_buffer(sd, NULL, &buf, &size, &err), SDICT_OK);
    sdict_doc *loaded;
    assert_int_equal(sdict_load_buffer(buf, size, "mem", NULL, &loaded, &err), SDICT_OK);
    sdict_free_buffer(buf);
    sdict_load_result res;
    assert_int_equal(sdict_module_load_state_dict(b, sdict_doc_root(loaded), true, &res, &err), SDICT_OK);
    assert_null(res.message);
    assert_int_equal(res.n_missing + res.n_unexpected, 0);
    for (size_t k = 0; k < NKEYS; k++) {
        const sdict_tensor *ta = &sdict_module_tensor(a, KEYS[k])->value;
        const sdict_tensor *tb = &sdict_module_tensor(b, KEYS[k])->value;
        assert_memory_equal(sdict_storage_data(ta->storage), sdict_storage_data(tb->storage),
                            sdict_tensor_nbytes(ta));
    }
    assert_int_equal(*(int64_t *)sdict_storage_data(sdict_module_tensor(b, KEYS[8])->value.storage), 7);
    sdict_load_result_free(&res);
    sdict_doc_free(loaded);
    sdict_doc_free(doc);
    sdict_module_free(a);
    sdict_module_free(b);
}

/* A float64 tensor value of the given shape filled with 0.5, 1.5, ... */
static sdict_value *f64_tensor(sdict_doc *doc, int32_t nd, const int64_t *shape) {
    int64_t n = 1;
    for (int32_t i = 0; i < nd; i++) n *= shape[i];
    sdict_storage *s;
    assert_int_equal(sdict_storage_new((size_t)n * 8, &s, NULL), SDICT_OK);
    double *p = sdict_storage_data(s);
    for (int64_t i = 0; i < n; i++) p[i] = 0.5 + (double)i;
    sdict_tensor t;
    int64_t stride[SDICT_NN_MAX_DIMS];
    assert_true(nd <= SDICT_NN_MAX_DIMS);
    assert_int_equal(sdict_tensor_init(&t, SDICT_FLOAT64, nd, shape, stride, s, NULL), SDICT_OK);
    sdict_value *v;
    assert_int_equal(sdict_tensor_new(doc, &t, &v, NULL), SDICT_OK);
    sdict_storage_release(s);
    return v;
}

static void test_load_errors(void **state) {
    (void)state;
    sdict_module *lin = sdict_linear_new(3, 2, true);
    sdict_module *net = sdict_module_new("Net", never_called, NULL);
    assert_int_equal(sdict_module_add(net, "fc", lin, NULL), SDICT_OK);
    sdict_doc *doc;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    int64_t ws[2] = {2, 3}, bad[2] = {5, 3};

    /* dtype conversion: float64 weights are cast to float32 */
    sdict_value *sd = sdict_dict_new(doc, false);
    sdict_dict_set_str(sd, "fc.weight", f64_tensor(doc, 2, ws));
    sdict_dict_set_str(sd, "fc.bias", f64_tensor(doc, 1, ws));
    sdict_load_result res;
    sdict_error err;
    assert_int_equal(sdict_module_load_state_dict(net, sd, true, &res, &err), SDICT_OK);
    const float *w = sdict_storage_data(lin->params[0].value.storage);
    for (int i = 0; i < 6; i++) assert_true(w[i] == 0.5f + (float)i);

    /* missing + unexpected, torch's order and text */
    sd = sdict_dict_new(doc, false);
    sdict_dict_set_str(sd, "fc.weight", f64_tensor(doc, 2, ws));
    sdict_dict_set_str(sd, "fc.extra", f64_tensor(doc, 1, ws));
    sdict_dict_set_str(sd, "other", sdict_int_new(doc, 1));
    assert_int_equal(sdict_module_load_state_dict(net, sd, true, &res, &err), SDICT_E_NOT_FOUND);
    assert_string_equal(res.message,
                        "Error(s) in loading state_dict for Net:\n\t"
                        "Missing key(s) in state_dict: \"fc.bias\". \n\t"
                        "Unexpected key(s) in state_dict: \"other\", \"fc.extra\". ");
    assert_int_equal(res.n_missing, 1);
    assert_int_equal(res.n_unexpected, 2);
    assert_string_equal(err.message, res.message);
    sdict_load_result_free(&res);
    /* non-strict: no error, but both lists are returned as torch's _IncompatibleKeys */
    assert_int_equal(sdict_module_load_state_dict(net, sd, false, &res, NULL), SDICT_OK);
    assert_null(res.message);
    assert_int_equal(res.n_missing, 1);
    assert_string_equal(res.missing[0], "fc.bias");
    assert_int_equal(res.n_unexpected, 2);
    assert_string_equal(res.unexpected[0], "other");
    assert_string_equal(res.unexpected[1], "fc.extra");
    assert_int_equal(res.n_size_mismatch, 0);
    sdict_load_result_free(&res);
    assert_null(res.missing);
    assert_int_equal(res.n_unexpected, 0);

    /* size mismatch is reported even with strict=false; the other key is still copied */
    sd = sdict_dict_new(doc, true);
    sdict_dict_set_str(sd, "fc.weight", f64_tensor(doc, 2, bad));
    sdict_dict_set_str(sd, "fc.bias", f64_tensor(doc, 1, ws));
    assert_int_equal(sdict_module_load_state_dict(net, sd, false, &res, &err), SDICT_E_SHAPE);
    assert_string_equal(res.message,
                        "Error(s) in loading state_dict for Net:\n\t"
                        "size mismatch for fc.weight: copying a param with shape "
                        "torch.Size([5, 3]) from checkpoint, the shape in current model is "
                        "torch.Size([2, 3]).");
    assert_int_equal(res.n_size_mismatch, 1);
    assert_string_equal(res.size_mismatch[0].key, "fc.weight");
    sdict_load_result_free(&res);
    assert_int_equal(sdict_module_load_state_dict(net, sdict_int_new(doc, 3), true, &res, &err),
                     SDICT_E_INVALID_ARG);
    sdict_load_result_free(&res);
    sdict_doc_free(doc);
    sdict_module_free(net);
}

/* BatchNorm: num_batches_tracked is synthesised only when _metadata says version < 2 or has
   no entry; a 1-element 1-D tensor loads into the 0-dim buffer. */
static void test_batchnorm_version_rule(void **state) {
    (void)state;
    sdict_module *bn = sdict_batchnorm1d_new(2, 1e-5, 0.1, true, true);
    int64_t *nbt = sdict_storage_data(sdict_module_tensor(bn, "num_batches_tracked")->value.storage);
    *nbt = 9;
    sdict_doc *doc;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    int64_t two = 2;
    sdict_value *sd = sdict_dict_new(doc, false);
    const char *names[] = {"weight", "bias", "running_mean", "running_var"};
    for (int i = 0; i < 4; i++) sdict_dict_set_str(sd, names[i], f64_tensor(doc, 1, &two));
    sdict_load_result res;
    sdict_error err;
    assert_int_equal(sdict_module_load_state_dict(bn, sd, true, &res, &err), SDICT_OK);
    assert_int_equal(*nbt, 0);
    sdict_load_result_free(&res);

    /* the same dict claiming version 2: now the key is missing */
    sdict_value *meta = sdict_dict_new(doc, true), *v2 = sdict_dict_new(doc, false);
    sdict_dict_set_str(v2, "version", sdict_int_new(doc, 2));
    sdict_dict_set_str(meta, "", v2);
    sdict_value *attrs = sdict_dict_new(doc, false);
    sdict_dict_set_str(attrs, "_metadata", meta);
    assert_int_equal(sdict_dict_set_attrs(sd, attrs), SDICT_OK);
    assert_int_equal(sdict_module_load_state_dict(bn, sd, true, &res, &err), SDICT_E_NOT_FOUND);
    assert_string_equal(res.message, "Error(s) in loading state_dict for BatchNorm1d:\n\t"
                                     "Missing key(s) in state_dict: \"num_batches_tracked\". ");
    sdict_load_result_free(&res);

    /* 1-element 1-D int tensor for the 0-dim buffer */
    sdict_storage *s;
    assert_int_equal(sdict_storage_new(8, &s, NULL), SDICT_OK);
    *(int64_t *)sdict_storage_data(s) = 12;
    sdict_tensor t;
    int64_t one = 1, one_stride;
    assert_int_equal(sdict_tensor_init(&t, SDICT_INT64, 1, &one, &one_stride, s, NULL), SDICT_OK);
    sdict_value *tv;
    assert_int_equal(sdict_tensor_new(doc, &t, &tv, NULL), SDICT_OK);
    sdict_storage_release(s);
    sdict_dict_set_str(sd, "num_batches_tracked", tv);
    assert_int_equal(sdict_module_load_state_dict(bn, sd, true, &res, &err), SDICT_OK);
    assert_int_equal(*nbt, 12);
    sdict_load_result_free(&res);
    sdict_doc_free(doc);
    sdict_module_free(bn);
}

/* SDICT_LOAD_SD_SKIP_SIZE_MISMATCH: mis-shaped keys are skipped, listed with both shapes, and
   strict still checks the rest. */
static void test_skip_size_mismatch(void **state) {
    (void)state;
    sdict_module *net = small_net();
    set_values(net, 1.0f);
    sdict_doc *doc;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    sdict_value *sd;
    assert_int_equal(sdict_module_state_dict(net, doc, false, &sd, NULL), SDICT_OK);
    /* a fresh copy of the values in another module, then one key of the wrong shape */
    sdict_module *dst = small_net();
    set_values(dst, 50.0f);
    int64_t bad[3] = {2, 3, 1}, hs[2] = {1, 2};
    sdict_value *copy = sdict_dict_new(doc, true);
    for (size_t i = 0; i < NKEYS; i++)
        sdict_dict_set_str(copy, KEYS[i], strcmp(KEYS[i], "fc.weight") == 0
                                              ? f64_tensor(doc, 3, bad)
                                              : sdict_dict_get(sd, KEYS[i]));
    sdict_load_result res;
    sdict_error err;
    assert_int_equal(sdict_module_load_state_dict_ex(dst, copy, true, SDICT_LOAD_SD_SKIP_SIZE_MISMATCH,
                                                     &res, &err), SDICT_OK);
    assert_null(res.message);
    assert_int_equal(res.n_missing + res.n_unexpected, 0);
    assert_int_equal(res.n_size_mismatch, 1);
    const sdict_size_mismatch *mm = &res.size_mismatch[0];
    assert_string_equal(mm->key, "fc.weight");
    assert_int_equal(mm->checkpoint_ndim, 3);
    assert_int_equal(mm->checkpoint_shape[0], 2);
    assert_int_equal(mm->checkpoint_shape[1], 3);
    assert_int_equal(mm->checkpoint_shape[2], 1);
    assert_int_equal(mm->model_ndim, 2);
    assert_int_equal(mm->model_shape[0], 2);
    assert_int_equal(mm->model_shape[1], 3);
    sdict_load_result_free(&res);
    assert_int_equal(res.n_size_mismatch, 0);
    /* the skipped key kept dst's value; the others came from the file */
    const float *w = sdict_storage_data(sdict_module_tensor(dst, "fc.weight")->value.storage);
    assert_true(w[1] == 50.0f + 0.01f);
    const float *b = sdict_storage_data(sdict_module_tensor(dst, "fc.bias")->value.storage);
    assert_true(b[1] == 1.0f + 1.0f + 0.01f);
    assert_int_equal(*(int64_t *)sdict_storage_data(
                         sdict_module_tensor(dst, "block.1.num_batches_tracked")->value.storage), 1);

    /* a mis-shaped 0-dim buffer and a missing key: strict fails on the missing key only */
    sdict_dict_set_str(copy, "block.1.num_batches_tracked", f64_tensor(doc, 2, hs));
    sdict_value *less = sdict_dict_new(doc, true);
    for (size_t i = 0; i + 1 < NKEYS; i++)
        sdict_dict_set_str(less, KEYS[i], sdict_dict_get(copy, KEYS[i]));
    assert_int_equal(sdict_module_load_state_dict_ex(dst, less, true, SDICT_LOAD_SD_SKIP_SIZE_MISMATCH,
                                                     &res, &err), SDICT_E_NOT_FOUND);
    assert_string_equal(res.message, "Error(s) in loading state_dict for Net:\n\t"
                                     "Missing key(s) in state_dict: \"head.weight\". ");
    assert_int_equal(res.n_size_mismatch, 2);
    assert_string_equal(res.size_mismatch[0].key, "fc.weight");
    assert_string_equal(res.size_mismatch[1].key, "block.1.num_batches_tracked");
    assert_int_equal(res.size_mismatch[1].model_ndim, 0);
    assert_null(res.size_mismatch[1].model_shape);
    assert_int_equal(res.size_mismatch[1].checkpoint_shape[1], 2);
    sdict_load_result_free(&res);
    /* the same non-strict: OK, missing still reported */
    assert_int_equal(sdict_module_load_state_dict_ex(dst, less, false,
                                                     SDICT_LOAD_SD_SKIP_SIZE_MISMATCH, &res,
                                                     &err), SDICT_OK);
    assert_int_equal(res.n_missing, 1);
    assert_string_equal(res.missing[0], "head.weight");
    assert_int_equal(res.n_size_mismatch, 2);
    sdict_load_result_free(&res);
    /* without the flag the mismatches fail the load as torch does, listed as well */
    assert_int_equal(sdict_module_load_state_dict(dst, less, false, &res, &err), SDICT_E_SHAPE);
    assert_int_equal(res.n_size_mismatch, 2);
    assert_non_null(strstr(res.message, "size mismatch for block.1.num_batches_tracked: copying a "
                                        "param with shape torch.Size([1, 2]) from checkpoint"));
    sdict_load_result_free(&res);
    /* unknown flags are refused */
    assert_int_equal(sdict_module_load_state_dict_ex(dst, less, false, 0x10u, &res, &err),
                     SDICT_E_INVALID_ARG);
    assert_null(res.size_mismatch);
    sdict_doc_free(doc);
    sdict_module_free(dst);
    sdict_module_free(net);
}

/* Unexpected keys in nested modules: module by module in pre-order, prefix + "_extra_state"
   first in its module (torch's _load_from_state_dict), the rest in the state_dict's order. */
static void test_unexpected_order(void **state) {
    (void)state;
    sdict_module *net = small_net();
    sdict_doc *doc;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    sdict_value *sd;
    assert_int_equal(sdict_module_state_dict(net, doc, false, &sd, NULL), SDICT_OK);
    int64_t one = 1;
    sdict_value *x = f64_tensor(doc, 1, &one);
    sdict_value *d = sdict_dict_new(doc, true);
    const char *extra[] = {"block.1.zz", "head.weight.sub", "block.2.weight", "block.1._extra_state",
                           "zz", "_extra_state", "block", "fc.a.b"};
    for (size_t i = 0; i < 8; i++) sdict_dict_set_str(d, extra[i], x);
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(KEYS[i], "block.0.bias") != 0 && strcmp(KEYS[i], "head.weight") != 0)
            sdict_dict_set_str(d, KEYS[i], sdict_dict_get(sd, KEYS[i]));
    sdict_load_result res;
    assert_int_equal(sdict_module_load_state_dict(net, d, false, &res, NULL), SDICT_OK);
    /* "head.weight.sub": below head, "weight" is a parameter, not a child: torch 2.x reports
       it (1.13 did not); "block" alone names a child, no tensor: reported as well */
    const char *want_unexpected[] = {"_extra_state", "zz", "block", "fc.a.b", "block.2.weight",
                                     "block.1._extra_state", "block.1.zz", "head.weight.sub"};
    assert_int_equal(res.n_unexpected, 8);
    for (size_t i = 0; i < 8; i++) assert_string_equal(res.unexpected[i], want_unexpected[i]);
    assert_int_equal(res.n_missing, 2);
    assert_string_equal(res.missing[0], "block.0.bias");
    assert_string_equal(res.missing[1], "head.weight");
    sdict_load_result_free(&res);
    sdict_doc_free(doc);
    sdict_module_free(net);
}

/* num_batches_tracked at INT64_MAX wraps to INT64_MIN as torch's add_(1) (no signed overflow:
   this runs under UBSan); momentum=None then divides by it, and by 0 after -1 it fails as
   torch's ZeroDivisionError. */
static void test_num_batches_tracked_wrap(void **state) {
    (void)state;
    for (int none = 0; none < 2; none++) {
        sdict_module *bn = sdict_batchnorm1d_new(2, 1e-5, none ? -1.0 : 0.1, true, true);
        int64_t *nbt = sdict_storage_data(sdict_module_tensor(bn, "num_batches_tracked")->value.storage);
        float *rm = sdict_storage_data(sdict_module_tensor(bn, "running_mean")->value.storage);
        *nbt = INT64_MAX;
        sdict_act x, y;
        int64_t shape[2] = {2, 2};
        assert_int_equal(sdict_act_init(&x, SDICT_FLOAT32, 2, shape, NULL), SDICT_OK);
        float *xd = sdict_act_f32(&x);
        xd[0] = 1.0f; xd[1] = 2.0f; xd[2] = 3.0f; xd[3] = 6.0f;   /* batch means 2 and 4 */
        assert_int_equal(sdict_module_forward(bn, &x, &y, NULL), SDICT_OK);
        assert_true(*nbt == INT64_MIN);
        if (none) {
            /* factor 1/INT64_MIN: running_mean = (1 - f) * 0 + f * mean, about -2.2e-19 */
            assert_float_equal(rm[0], 2.0 / (double)INT64_MIN, 1e-25);
            assert_true(rm[1] < 0.0f && rm[1] > -1e-18f);
        } else {
            assert_float_equal(rm[0], 0.2, 1e-6);
            assert_float_equal(rm[1], 0.4, 1e-6);
        }
        sdict_act_free(&y);
        assert_int_equal(sdict_module_forward(bn, &x, &y, NULL), SDICT_OK);
        assert_true(*nbt == INT64_MIN + 1);
        sdict_act_free(&y);
        *nbt = -1;
        sdict_error err;
        sdict_status st = sdict_module_forward(bn, &x, &y, &err);
        assert_int_equal(*nbt, 0);
        if (none) {
            assert_int_equal(st, SDICT_E_INVALID_ARG);
            assert_non_null(strstr(err.message, "float division by zero"));
            assert_null(y.data);
        } else {
            assert_int_equal(st, SDICT_OK);
            sdict_act_free(&y);
        }
        /* eval mode never counts */
        sdict_module_eval(bn);
        assert_int_equal(sdict_module_forward(bn, &x, &y, NULL), SDICT_OK);
        assert_int_equal(*nbt, 0);
        sdict_act_free(&y);
        sdict_act_free(&x);
        sdict_module_free(bn);
    }
}

static void test_consume_prefix(void **state) {
    (void)state;
    sdict_doc *doc;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    sdict_value *sd = sdict_dict_new(doc, true);
    sdict_dict_set_str(sd, "module.z", sdict_int_new(doc, 1));
    sdict_dict_set_str(sd, "keep", sdict_int_new(doc, 2));
    sdict_dict_set_str(sd, "module.a", sdict_int_new(doc, 3));
    sdict_value *meta = sdict_dict_new(doc, true);
    sdict_dict_set_str(meta, "", sdict_int_new(doc, 10));
    sdict_dict_set_str(meta, "module", sdict_int_new(doc, 11));
    sdict_dict_set_str(meta, "module.bn", sdict_int_new(doc, 12));
    sdict_value *attrs = sdict_dict_new(doc, false);
    sdict_dict_set_str(attrs, "_metadata", meta);
    sdict_dict_set_attrs(sd, attrs);
    sdict_value *out;
    assert_int_equal(sdict_state_dict_consume_prefix(doc, sd, "module.", &out, NULL), SDICT_OK);
    assert_true(sdict_dict_is_ordered(out));
    /* torch: unprefixed keys keep their place, stripped ones follow in sorted order */
    const char *order[] = {"keep", "a", "z"};
    const int64_t vals[] = {2, 3, 1};
    assert_int_equal(sdict_dict_len(out), 3);
    for (int i = 0; i < 3; i++) {
        int64_t v;
        assert_string_equal(sdict_str_get(sdict_dict_key(out, (size_t)i), NULL), order[i]);
        assert_int_equal(sdict_int_get(sdict_dict_val(out, (size_t)i), &v), SDICT_OK);
        assert_int_equal(v, vals[i]);
    }
    const sdict_value *m2 = sdict_dict_get(sdict_dict_attrs(out), "_metadata");
    assert_int_equal(sdict_dict_len(m2), 2);
    int64_t v;
    assert_int_equal(sdict_int_get(sdict_dict_get(m2, ""), &v), SDICT_OK);
    assert_int_equal(v, 11); /* the wrapper's entry is replaced by the model's */
    assert_int_equal(sdict_int_get(sdict_dict_get(m2, "bn"), &v), SDICT_OK);
    assert_int_equal(v, 12);
    assert_int_equal(sdict_state_dict_consume_prefix(doc, sdict_int_new(doc, 1), "m.", &out, NULL),
                     SDICT_E_INVALID_ARG);
    sdict_doc_free(doc);
}

/* The nn layer keeps its own rank bound (SDICT_NN_MAX_DIMS) while loaded tensors have any rank:
   registration and activations stop at the bound, with LIMIT for a tensor beyond it. */
static void test_rank_bounds(void **state) {
    (void)state;
    sdict_module *m = sdict_module_new("Custom", never_called, NULL);
    int64_t shape[SDICT_NN_MAX_DIMS + 1];
    for (int i = 0; i <= SDICT_NN_MAX_DIMS; i++) shape[i] = 1;
    shape[0] = 2;
    shape[SDICT_NN_MAX_DIMS - 1] = 3;
    sdict_named_tensor *nt = NULL;
    sdict_error err;
    assert_int_equal(sdict_module_register(m, "w", false, SDICT_FLOAT32, SDICT_NN_MAX_DIMS, shape,
                                           &nt, &err), SDICT_OK);
    assert_int_equal(nt->value.ndim, SDICT_NN_MAX_DIMS);
    assert_int_equal(nt->value.stride[0], 3);
    assert_int_equal(nt->value.shape[SDICT_NN_MAX_DIMS - 1], 3);
    assert_int_equal(sdict_tensor_numel(&nt->grad), 6);
    assert_int_equal(sdict_module_register(m, "v", false, SDICT_FLOAT32, SDICT_NN_MAX_DIMS + 1,
                                           shape, NULL, &err), SDICT_E_INVALID_ARG);
    /* more registrations move the entries: their dimensions must stay valid */
    char name[8];
    for (int i = 0; i < 20; i++) {
        snprintf(name, sizeof name, "p%d", i);
        assert_int_equal(sdict_module_register(m, name, true, SDICT_INT64, 2, shape, NULL, &err),
                         SDICT_OK);
    }
    nt = sdict_module_tensor(m, "w");
    assert_int_equal(nt->value.shape[0], 2);
    assert_int_equal(nt->grad.stride[SDICT_NN_MAX_DIMS - 1], 1);

    /* activations: a tensor of SDICT_NN_MAX_DIMS dimensions converts, one more is refused */
    sdict_doc *doc = NULL;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    sdict_storage *s = NULL;
    assert_int_equal(sdict_storage_new(6 * sizeof(float), &s, NULL), SDICT_OK);
    int64_t stride[SDICT_NN_MAX_DIMS + 1];
    sdict_tensor t;
    sdict_act a;
    assert_int_equal(sdict_tensor_init(&t, SDICT_FLOAT32, SDICT_NN_MAX_DIMS, shape, stride, s, NULL),
                     SDICT_OK);
    assert_int_equal(sdict_act_from_tensor(&t, &a, &err), SDICT_OK);
    assert_int_equal(a.ndim, SDICT_NN_MAX_DIMS);
    assert_int_equal(sdict_act_numel(&a), 6);
    sdict_value *v = NULL;
    assert_int_equal(sdict_act_to_value(&a, doc, &v, &err), SDICT_OK);
    assert_int_equal(sdict_value_tensor(v)->stride[0], 3);
    sdict_act_free(&a);
    assert_int_equal(sdict_tensor_init(&t, SDICT_FLOAT32, SDICT_NN_MAX_DIMS + 1, shape, stride, s,
                                       NULL), SDICT_OK);
    assert_int_equal(sdict_act_from_tensor(&t, &a, &err), SDICT_E_LIMIT);
    assert_int_equal(a.ndim, 0);
    assert_null(a.data);
    sdict_storage_release(s);
    sdict_doc_free(doc);
    sdict_module_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_dict_layout),
        cmocka_unit_test(test_tree),
        cmocka_unit_test(test_round_trip_through_file_bytes),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_batchnorm_version_rule),
        cmocka_unit_test(test_consume_prefix),
        cmocka_unit_test(test_skip_size_mismatch),
        cmocka_unit_test(test_unexpected_order),
        cmocka_unit_test(test_num_batches_tracked_wrap),
        cmocka_unit_test(test_rank_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
