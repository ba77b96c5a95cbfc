/*
 rnn_run - test driver for tests/rnn/rnn_torch.py: runs an LSTM or GRU built from the command
 line on a torch-saved state_dict and inputs, and saves what torch's module and autograd give.

   rnn_run lstm|gru INPUT_SIZE HIDDEN_SIZE NUM_LAYERS BIDIRECTIONAL BATCH_FIRST BIAS IN.pt OUT.pt

 IN.pt: {'state_dict': ..., 'input': x, optional 'h0', 'c0', 'dout', 'dh_n', 'dc_n'}.
 OUT.pt: {'output', 'h_n', 'c_n' (LSTM): the eval-mode forward; 'grad.input', 'grad.h0',
 'grad.c0', 'grad.<param>': backward of the loss <output, dout> + <h_n, dh_n> + <c_n, dc_n>
 after a training-mode forward}.

   rnn_run loss IGNORE_INDEX 0 0 0 0 0 IN.pt OUT.pt

 IN.pt {'logits', 'target'} -> OUT.pt {'loss', 'grad.logits'} of sdict_cross_entropy_loss_ex.

   rnn_run conv1d|conv1d_g2 IN_CH OUT_CH K STRIDE PADDING DILATION IN.pt OUT.pt
   rnn_run sigmoid|tanh|silu 0 0 0 0 0 0 IN.pt OUT.pt

 IN.pt {'state_dict', 'input', 'dout'} -> OUT.pt {'output', 'grad.input', 'grad.<param>'}:
 Conv1d (groups 1 with bias; conv1d_g2: groups 2 without) or the activation module, one
 training-mode forward and sdict_module_backward of dout.
 Exit 0 ok, 1 failure, 2 usage.
*/
#include "statedict_nn.h"
#include "statedict_optim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what, const sdict_error *err) {
    char buf[1024];
    fprintf(stderr, "rnn_run: %s: %s\n", what, sdict_error_format(err, buf, sizeof buf));
    return 1;
}

/* Optional tensor `key` of dict d into *a; false when absent. */
static int get_act(const sdict_value *d, const char *key, sdict_act *a, sdict_error *err) {
    const sdict_value *v = sdict_dict_get(d, key);
    memset(a, 0, sizeof *a);
    if (!v || !sdict_value_tensor(v)) return 0;
    return sdict_act_from_tensor(sdict_value_tensor(v), a, err) == SDICT_OK ? 1 : -1;
}

static int put(sdict_value *dict, sdict_doc *doc, const char *key, const sdict_act *a,
               sdict_error *err) {
    sdict_value *v = NULL;
    if (!a->data) return 0;
    if (sdict_act_to_value(a, doc, &v, err) != SDICT_OK) return -1;
    return sdict_dict_set_str(dict, key, v) == SDICT_OK ? 0 : -1;
}

/* The loss mode (see the header): 'loss' is a 0-dim float32 tensor. */
static int loss_mode(char **argv) {
    sdict_error err;
    memset(&err, 0, sizeof err);
    sdict_doc *in = NULL, *out = NULL;
    sdict_act x = {0}, t = {0}, dx = {0}, l = {0};
    int rc = 1;
    float loss = 0.0f;
    sdict_value *d = NULL;
    if (sdict_load(argv[8], NULL, &in, &err) != SDICT_OK ||
        get_act(sdict_doc_root(in), "logits", &x, &err) != 1 ||
        get_act(sdict_doc_root(in), "target", &t, &err) != 1 ||
        sdict_cross_entropy_loss_ex(&x, &t, atoll(argv[2]), &loss, &dx, &err) != SDICT_OK ||
        sdict_act_init(&l, SDICT_FLOAT32, 0, NULL, &err) != SDICT_OK ||
        sdict_doc_new(&out, &err) != SDICT_OK || !(d = sdict_dict_new(out, false))) {
        rc = fail(argv[8], &err);
        goto done;
    }
    *(float *)l.data = loss;
    if (put(d, out, "loss", &l, &err) || put(d, out, "grad.logits", &dx, &err) ||
        sdict_doc_set_root(out, d) != SDICT_OK || sdict_save(argv[9], d, NULL, &err) != SDICT_OK) {
        rc = fail(argv[9], &err);
        goto done;
    }
    rc = 0;
done:
    sdict_act_free(&x); sdict_act_free(&t); sdict_act_free(&dx); sdict_act_free(&l);
    sdict_doc_free(in);
    sdict_doc_free(out);
    return rc;
}

/* The module mode (see the header): one forward in training mode, one backward of dout. */
static int module_mode(char **argv) {
    sdict_module *m = NULL;
    if (strcmp(argv[1], "conv1d") == 0)
        m = sdict_conv1d_new(atoll(argv[2]), atoll(argv[3]), atoll(argv[4]), atoll(argv[5]),
                             atoll(argv[6]), atoll(argv[7]), 1, true);
    else if (strcmp(argv[1], "conv1d_g2") == 0)
        m = sdict_conv1d_new(atoll(argv[2]), atoll(argv[3]), atoll(argv[4]), atoll(argv[5]),
                             atoll(argv[6]), atoll(argv[7]), 2, false);
    else if (strcmp(argv[1], "sigmoid") == 0) m = sdict_sigmoid_new();
    else if (strcmp(argv[1], "tanh") == 0) m = sdict_tanh_new();
    else if (strcmp(argv[1], "silu") == 0) m = sdict_silu_new();
    if (!m) return 2;
    sdict_error err;
    memset(&err, 0, sizeof err);
    sdict_doc *in = NULL, *out = NULL;
    sdict_act x = {0}, dy = {0}, y = {0}, dx = {0};
    sdict_value *d = NULL;
    int rc = 1;
    if (sdict_load(argv[8], NULL, &in, &err) != SDICT_OK ||
        sdict_module_load_state_dict(m, sdict_dict_get(sdict_doc_root(in), "state_dict"), true,
                                     NULL, &err) != SDICT_OK ||
        get_act(sdict_doc_root(in), "input", &x, &err) != 1 ||
        get_act(sdict_doc_root(in), "dout", &dy, &err) != 1 ||
        sdict_module_forward(m, &x, &y, &err) != SDICT_OK ||
        sdict_module_backward(m, &dy, &dx, &err) != SDICT_OK ||
        sdict_doc_new(&out, &err) != SDICT_OK || !(d = sdict_dict_new(out, false)) ||
        put(d, out, "output", &y, &err) || put(d, out, "grad.input", &dx, &err)) {
        rc = fail(argv[1], &err);
        goto done;
    }
    for (size_t i = 0; i < m->n_params; i++) {
        char key[128];
        sdict_act g = {0};
        snprintf(key, sizeof key, "grad.%s", m->params[i].name);
        int bad = sdict_act_from_tensor(&m->params[i].grad, &g, &err) != SDICT_OK ||
                  put(d, out, key, &g, &err);
        sdict_act_free(&g);
        if (bad) {
            rc = fail("output", &err);
            goto done;
        }
    }
    if (sdict_doc_set_root(out, d) != SDICT_OK || sdict_save(argv[9], d, NULL, &err) != SDICT_OK) {
        rc = fail(argv[9], &err);
        goto done;
    }
    rc = 0;
done:
    sdict_act_free(&x); sdict_act_free(&dy); sdict_act_free(&y); sdict_act_free(&dx);
    sdict_doc_free(in);
    sdict_doc_free(out);
    sdict_module_free(m);
    return rc;
}

int main(int argc, char **argv) {
    if (argc == 10 && strcmp(argv[1], "loss") == 0) return loss_mode(argv);
    if (argc == 10 && strcmp(argv[1], "lstm") != 0 && strcmp(argv[1], "gru") != 0)
        return module_mode(argv);
    if (argc != 10) {
        fprintf(stderr, "usage: rnn_run lstm|gru I H L BIDIR BATCH_FIRST BIAS IN.pt OUT.pt\n");
        return 2;
    }
    bool lstm = strcmp(argv[1], "lstm") == 0;
    int64_t I = atoll(argv[2]), H = atoll(argv[3]), L = atoll(argv[4]);
    bool bidir = atoi(argv[5]), bf = atoi(argv[6]), bias = atoi(argv[7]);
    sdict_module *m = lstm ? sdict_lstm_new(I, H, L, bias, bf, 0.0, bidir)
                           : sdict_gru_new(I, H, L, bias, bf, 0.0, bidir);
    if (!m) return 2;
    sdict_error err;
    memset(&err, 0, sizeof err);
    sdict_doc *in = NULL, *out = NULL;
    sdict_act x = {0}, h0 = {0}, c0 = {0}, dout = {0}, dhn = {0}, dcn = {0};
    sdict_act y = {0}, hn = {0}, cn = {0}, dx = {0}, dh0 = {0}, dc0 = {0};
    int rc = 1;
    if (sdict_load(argv[8], NULL, &in, &err) != SDICT_OK) { rc = fail(argv[8], &err); goto done; }
    const sdict_value *root = sdict_doc_root(in);
    if (sdict_module_load_state_dict(m, sdict_dict_get(root, "state_dict"), true, NULL, &err) !=
        SDICT_OK) {
        rc = fail("load_state_dict", &err);
        goto done;
    }
    if (get_act(root, "input", &x, &err) != 1 || get_act(root, "h0", &h0, &err) < 0 ||
        get_act(root, "c0", &c0, &err) < 0 || get_act(root, "dout", &dout, &err) != 1 ||
        get_act(root, "dh_n", &dhn, &err) < 0 || get_act(root, "dc_n", &dcn, &err) < 0) {
        rc = fail(argv[8], &err);
        goto done;
    }
    const sdict_act *ph0 = h0.data ? &h0 : NULL, *pc0 = c0.data ? &c0 : NULL;
    sdict_module_eval(m);
    if (sdict_rnn_forward(m, &x, ph0, pc0, &y, &hn, lstm ? &cn : NULL, &err) != SDICT_OK) {
        rc = fail("forward", &err);
        goto done;
    }
    sdict_act y2 = {0};
    sdict_module_train(m, true);
    if (sdict_rnn_forward(m, &x, ph0, pc0, &y2, NULL, NULL, &err) != SDICT_OK ||
        sdict_rnn_backward(m, &dout, dhn.data ? &dhn : NULL, dcn.data ? &dcn : NULL, &dx,
                           ph0 ? &dh0 : NULL, pc0 ? &dc0 : NULL, &err) != SDICT_OK) {
        sdict_act_free(&y2);
        rc = fail("backward", &err);
        goto done;
    }
    sdict_act_free(&y2);
    if (sdict_doc_new(&out, &err) != SDICT_OK) { rc = fail("doc", &err); goto done; }
    sdict_value *d = sdict_dict_new(out, false);
    if (!d || put(d, out, "output", &y, &err) || put(d, out, "h_n", &hn, &err) ||
        put(d, out, "c_n", &cn, &err) || put(d, out, "grad.input", &dx, &err) ||
        put(d, out, "grad.h0", &dh0, &err) || put(d, out, "grad.c0", &dc0, &err)) {
        rc = fail("output", &err);
        goto done;
    }
    for (size_t i = 0; i < m->n_params; i++) {
        char key[128];
        sdict_act g = {0};
        snprintf(key, sizeof key, "grad.%s", m->params[i].name);
        if (sdict_act_from_tensor(&m->params[i].grad, &g, &err) != SDICT_OK ||
            put(d, out, key, &g, &err)) {
            sdict_act_free(&g);
            rc = fail("output", &err);
            goto done;
        }
        sdict_act_free(&g);
    }
    if (sdict_doc_set_root(out, d) != SDICT_OK || sdict_save(argv[9], d, NULL, &err) != SDICT_OK) {
        rc = fail(argv[9], &err);
        goto done;
    }
    rc = 0;
done:
    sdict_act_free(&x); sdict_act_free(&h0); sdict_act_free(&c0); sdict_act_free(&dout);
    sdict_act_free(&dhn); sdict_act_free(&dcn); sdict_act_free(&y); sdict_act_free(&hn);
    sdict_act_free(&cn); sdict_act_free(&dx); sdict_act_free(&dh0); sdict_act_free(&dc0);
    sdict_doc_free(in);
    sdict_doc_free(out);
    sdict_module_free(m);
    return rc;
}
