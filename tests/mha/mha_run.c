/*
 mha_run - runs statedict_nn's MultiheadAttention or Transformer layer on tensors from a file,
 for the interop test (tests/mha/mha_interop.py). Test helper, public API only.

   mha_run SPEC SD.pt IN.pt OUT.pt [train]

 SPEC: mha:E:H:BIAS:BATCH_FIRST:NEED_WEIGHTS:AVERAGE:IS_CAUSAL
       enc:D:H:FF:GELU:EPS:BATCH_FIRST:NORM_FIRST:IS_CAUSAL   (dec: the same for the decoder)
 SD.pt is the module's state_dict, loaded strictly. IN.pt is a dict of tensors: query, key,
 value, attn_mask, key_padding_mask (mha); src, src_mask, src_key_padding_mask (enc); tgt,
 memory, tgt_mask, memory_mask, tgt_key_padding_mask, memory_key_padding_mask (dec); masks are
 optional, bool or float. OUT.pt gets {"out": output, "weights": attention weights (mha)}.
 With "train" (enc and dec only) the layer is built with dropout 0 and stays in training mode;
 IN.pt also holds "dy", the output gradient, and OUT.pt also gets "d_input" (src or tgt),
 "d_memory" (dec) and "grad.KEY" for every parameter KEY after one backward.
*/
#include "statedict_nn.h"
#include "statedict_optim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct grads {
    sdict_doc *od;
    sdict_value *root;
    sdict_error *err;
    bool ok;
} grads;

static void put_grad(void *ctx, const char *key, sdict_named_tensor *nt) {
    grads *g = ctx;
    char name[256];
    sdict_act a = {0};
    sdict_value *v = NULL;
    snprintf(name, sizeof name, "grad.%s", key);
    if (!g->ok || sdict_act_from_tensor(&nt->grad, &a, g->err) != SDICT_OK ||
        sdict_act_to_value(&a, g->od, &v, g->err) != SDICT_OK ||
        sdict_dict_set_str(g->root, name, v) != SDICT_OK)
        g->ok = false;
    sdict_act_free(&a);
}

static int fail(const char *what, const sdict_error *err) {
    char buf[1024];
    fprintf(stderr, "mha_run: %s: %s\n", what, sdict_error_format(err, buf, sizeof buf));
    return 1;
}

/* in[key] as an activation (zeroed if absent); *is_bool tells a bool tensor. */
static sdict_status get(const sdict_value *in, const char *key, sdict_act *a, bool *is_bool,
                        sdict_error *err) {
    memset(a, 0, sizeof *a);
    const sdict_value *v = sdict_dict_get(in, key);
    if (!v) return SDICT_OK;
    const sdict_tensor *t = sdict_value_tensor(v);
    if (!t) return SDICT_E_INVALID_ARG;
    if (is_bool) *is_bool = t->dtype == SDICT_BOOL;
    return sdict_act_from_tensor(t, a, err);
}

#define NA 8

int main(int argc, char **argv) {
    bool train = argc == 6 && strcmp(argv[5], "train") == 0;
    if (argc != 5 && !train) {
        fprintf(stderr, "usage: mha_run SPEC SD.pt IN.pt OUT.pt [train]\n");
        return 2;
    }
    char kind[8] = "";
    long long e = 0, h = 0, ff = 0;
    int f[5] = {0};
    double eps = 1e-5;
    sdict_module *m = NULL;
    sscanf(argv[1], "%7[a-z]", kind);
    sdict_transformer_layer_config lc = {0};
    if (strcmp(kind, "mha") == 0 &&
        sscanf(argv[1], "mha:%lld:%lld:%d:%d:%d:%d:%d", &e, &h, &f[0], &f[1], &f[2], &f[3],
               &f[4]) == 7) {
        m = sdict_multihead_attention_new(e, h, 0.0, f[0] != 0, f[1] != 0);
    } else if ((strcmp(kind, "enc") == 0 || strcmp(kind, "dec") == 0) &&
               sscanf(argv[1] + 4, "%lld:%lld:%lld:%d:%lf:%d:%d:%d", &e, &h, &ff, &f[0], &eps,
                      &f[1], &f[2], &f[4]) == 8) {
        lc = (sdict_transformer_layer_config){.d_model = e, .nhead = h, .dim_feedforward = ff,
                                              .dropout = train ? 0.0 : 0.1, .gelu = f[0] != 0,
                                              .layer_norm_eps = eps, .batch_first = f[1] != 0,
                                              .norm_first = f[2] != 0, .bias = true};
        m = kind[0] == 'e' ? sdict_transformer_encoder_layer_new(&lc)
                           : sdict_transformer_decoder_layer_new(&lc);
    }
    if (!m) {
        fprintf(stderr, "mha_run: bad spec %s\n", argv[1]);
        return 2;
    }
    sdict_error err;
    memset(&err, 0, sizeof err);
    sdict_doc *sd = NULL, *ind = NULL, *od = NULL;
    sdict_act x[NA], y = {0}, w = {0}, dy = {0}, dx = {0}, dmem = {0};
    bool isb[NA] = {false};
    memset(x, 0, sizeof x);
    int rc = 1;
    if (sdict_load(argv[2], NULL, &sd, &err) != SDICT_OK ||
        sdict_module_load_state_dict(m, sdict_doc_root(sd), true, NULL, &err) != SDICT_OK) {
        rc = fail(argv[2], &err);
        goto done;
    }
    if (!train) sdict_module_eval(m);
    if (sdict_load(argv[3], NULL, &ind, &err) != SDICT_OK) {
        rc = fail(argv[3], &err);
        goto done;
    }
    static const char *const names[3][NA] = {
        {"query", "key", "value", "attn_mask", "key_padding_mask"},
        {"src", "src_mask", "src_key_padding_mask"},
        {"tgt", "memory", "tgt_mask", "memory_mask", "tgt_key_padding_mask",
         "memory_key_padding_mask"}};
    int which = kind[0] == 'm' ? 0 : kind[0] == 'e' ? 1 : 2;
    for (int i = 0; i < NA && names[which][i]; i++)
        if (get(sdict_doc_root(ind), names[which][i], &x[i], &isb[i], &err) != SDICT_OK) {
            rc = fail(names[which][i], &err);
            goto done;
        }
#define P(i) (x[i].data || x[i].ndim ? &x[i] : NULL)
    sdict_status st;
    if (which == 0) {
        sdict_mha_args a = {.attn_mask = P(3), .attn_mask_bool = isb[3],
                            .key_padding_mask = P(4), .key_padding_mask_bool = isb[4],
                            .need_weights = f[2] != 0, .average_attn_weights = f[3] != 0,
                            .is_causal = f[4] != 0};
        st = sdict_multihead_attention_forward(m, &x[0], &x[1], &x[2], &a, &y, &w, &err);
    } else if (which == 1) {
        sdict_mha_args a = {.attn_mask = P(1), .attn_mask_bool = isb[1],
                            .key_padding_mask = P(2), .key_padding_mask_bool = isb[2],
                            .is_causal = f[4] != 0};
        st = sdict_transformer_encoder_layer_forward(m, &x[0], &a, &y, &err);
    } else {
        sdict_mha_args t = {.attn_mask = P(2), .attn_mask_bool = isb[2],
                            .key_padding_mask = P(4), .key_padding_mask_bool = isb[4],
                            .is_causal = f[4] != 0};
        sdict_mha_args mm = {.attn_mask = P(3), .attn_mask_bool = isb[3],
                             .key_padding_mask = P(5), .key_padding_mask_bool = isb[5]};
        st = sdict_transformer_decoder_layer_forward(m, &x[0], &x[1], &t, &mm, &y, &err);
    }
    if (st != SDICT_OK) {
        rc = fail("forward", &err);
        goto done;
    }
    if (train) {
        if (which == 0 || get(sdict_doc_root(ind), "dy", &dy, NULL, &err) != SDICT_OK || !dy.data) {
            fprintf(stderr, "mha_run: train needs enc or dec and a dy tensor\n");
            goto done;
        }
        st = which == 1 ? sdict_module_backward(m, &dy, &dx, &err)
                        : sdict_transformer_decoder_layer_backward(m, &dy, &dx, &dmem, &err);
        if (st != SDICT_OK) {
            rc = fail("backward", &err);
            goto done;
        }
    }
    sdict_value *root = NULL, *vo = NULL, *vw = NULL, *vd = NULL, *vm = NULL;
    if (sdict_doc_new(&od, &err) != SDICT_OK || !(root = sdict_dict_new(od, false)) ||
        sdict_act_to_value(&y, od, &vo, &err) != SDICT_OK ||
        sdict_dict_set_str(root, "out", vo) != SDICT_OK ||
        (w.data && (sdict_act_to_value(&w, od, &vw, &err) != SDICT_OK ||
                    sdict_dict_set_str(root, "weights", vw) != SDICT_OK)) ||
        (dx.data && (sdict_act_to_value(&dx, od, &vd, &err) != SDICT_OK ||
                     sdict_dict_set_str(root, "d_input", vd) != SDICT_OK)) ||
        (dmem.data && (sdict_act_to_value(&dmem, od, &vm, &err) != SDICT_OK ||
                       sdict_dict_set_str(root, "d_memory", vm) != SDICT_OK))) {
        rc = fail(argv[4], &err);
        goto done;
    }
    if (train) {
        grads g = {od, root, &err, true};
        sdict_module_each_param(m, put_grad, &g);
        if (!g.ok) {
            rc = fail("gradients", &err);
            goto done;
        }
    }
    if (sdict_doc_set_root(od, root) != SDICT_OK ||
        sdict_save(argv[4], root, NULL, &err) != SDICT_OK) {
        rc = fail(argv[4], &err);
        goto done;
    }
    rc = 0;
done:
    for (int i = 0; i < NA; i++) sdict_act_free(&x[i]);
    sdict_act_free(&y);
    sdict_act_free(&w);
    sdict_act_free(&dy);
    sdict_act_free(&dx);
    sdict_act_free(&dmem);
    sdict_doc_free(sd);
    sdict_doc_free(ind);
    sdict_doc_free(od);
    sdict_module_free(m);
    return rc;
}
