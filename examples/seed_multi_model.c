/*
 seed_multi_model - the recipe's "Saving multiple models in one file" in C: two networks and
 their optimizers (a GAN or an ensemble) in one torch.save dict.

   seed_multi_model --save OUT.tar                 train each model one step, then save
   seed_multi_model --load IN.tar [--save OUT.tar] load all four state_dicts (from C or torch),
                                                    print a summary, optionally save them again

 modelA is the recipe's Net with SGD(lr=0.01, momentum=0.9); modelB is the Embedding MLP
 (Dropout p=0) with Adam(lr=2e-4, betas=(0.5, 0.999)). The file is
   {'modelA_state_dict', 'modelB_state_dict', 'optimizerA_state_dict', 'optimizerB_state_dict'}
 and loads in PyTorch with modelA.load_state_dict(ckpt['modelA_state_dict']) etc.
*/
#include "statedict_nn.h"
#include "statedict_optim.h"

#include <stdio.h>
#include <string.h>

static int fail(const char *what, const sdict_error *err) {
    char buf[1024];
    fprintf(stderr, "seed_multi_model: %s: %s\n", what, sdict_error_format(err, buf, sizeof buf));
    return 1;
}

/* Small deterministic generator for the example's made-up batch. */
static uint32_t lcg(uint32_t *s) { return *s = *s * 1664525u + 1013904223u; }

/* One training step of net on a made-up batch: zero_grad, forward, loss, backward, step. */
static sdict_status one_step(sdict_module *net, sdict_optim *opt, bool images, sdict_error *err) {
    uint32_t seed = images ? 1u : 2u;
    int64_t N = 4, xs_img[4] = {N, 3, 32, 32}, xs_idx[2] = {N, 8}, ys[1] = {N};
    sdict_act x = {0}, y = {0}, out = {0}, dout = {0};
    float loss;
    sdict_status st = images ? sdict_act_init(&x, SDICT_FLOAT32, 4, xs_img, err)
                             : sdict_act_init(&x, SDICT_INT64, 2, xs_idx, err);
    if (st == SDICT_OK) st = sdict_act_init(&y, SDICT_INT64, 1, ys, err);
    if (st != SDICT_OK) goto done;
    for (int64_t i = 0; i < sdict_act_numel(&x); i++) {
        if (images) ((float *)x.data)[i] = (float)(lcg(&seed) >> 8) / 16777216.0f - 0.5f;
        else ((int64_t *)x.data)[i] = (int64_t)(lcg(&seed) >> 8) % 100;
    }
    for (int64_t i = 0; i < N; i++) ((int64_t *)y.data)[i] = (int64_t)(lcg(&seed) >> 8) % 10;
    sdict_optim_zero_grad(opt);
    st = sdict_module_forward(net, &x, &out, err);
    if (st == SDICT_OK) st = sdict_cross_entropy_loss(&out, &y, &loss, &dout, err);
    if (st == SDICT_OK) st = sdict_module_backward(net, &dout, NULL, err);
    if (st == SDICT_OK) st = sdict_optim_step(opt, err);
    if (st == SDICT_OK) printf("%s: one step, loss %.4f\n", images ? "modelA" : "modelB", loss);
done:
    sdict_act_free(&x);
    sdict_act_free(&y);
    sdict_act_free(&out);
    sdict_act_free(&dout);
    return st;
}

int main(int argc, char **argv) {
    const char *in = NULL, *out = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--load") == 0) in = argv[i + 1];
        else if (strcmp(argv[i], "--save") == 0) out = argv[i + 1];
        else in = out = NULL, i = argc;
    }
    if (argc % 2 == 0 || (!in && !out)) {
        fprintf(stderr, "usage: seed_multi_model [--load IN.tar] [--save OUT.tar]\n");
        return 2;
    }
    /* modelA = TheModelClass(); modelB = ...; optimizerA = optim.SGD(...); optimizerB = ... */
    sdict_module *a = sdict_lenet_new(), *b = sdict_mlp_new(0.0);
    sdict_optim *oa = sdict_optim_new(SDICT_OPTIM_SGD), *ob = sdict_optim_new(SDICT_OPTIM_ADAM);
    sdict_error err = {0};
    sdict_doc *doc = NULL;
    int rc = 1;
    if (!a || !b || !oa || !ob) {
        fprintf(stderr, "seed_multi_model: out of memory\n");
        goto done;
    }
    a->backward = sdict_lenet_backward;
    sdict_optim_hparams ha = sdict_optim_defaults(SDICT_OPTIM_SGD);
    ha.lr = 0.01;
    ha.momentum = 0.9;
    sdict_optim_hparams hb = sdict_optim_defaults(SDICT_OPTIM_ADAM);
    hb.lr = 2e-4;
    hb.beta1 = 0.5;
    if (sdict_optim_add_module(oa, &ha, a, &err) != SDICT_OK ||
        sdict_optim_add_module(ob, &hb, b, &err) != SDICT_OK) {
        rc = fail("optimizer", &err);
        goto done;
    }
    static const char *const keys[4] = {"modelA_state_dict", "modelB_state_dict",
                                        "optimizerA_state_dict", "optimizerB_state_dict"};
    if (in) {
        /* checkpoint = torch.load(PATH); modelA.load_state_dict(checkpoint['modelA_state_dict'])... */
        if (sdict_load(in, NULL, &doc, &err) != SDICT_OK) {
            rc = fail(in, &err);
            goto done;
        }
        const sdict_value *ck = sdict_doc_root(doc), *sd[4];
        for (int k = 0; k < 4; k++)
            if (!(sd[k] = sdict_checkpoint_dict(ck, keys[k], &err))) {
                rc = fail(in, &err);
                goto done;
            }
        sdict_load_result r = {0};
        sdict_module *mods[2] = {a, b};
        for (int k = 0; k < 2; k++) {
            if (sdict_module_load_state_dict(mods[k], sd[k], true, &r, &err) != SDICT_OK) {
                fprintf(stderr, "seed_multi_model: %s\n", r.message ? r.message : err.message);
                sdict_load_result_free(&r);
                goto done;
            }
            sdict_load_result_free(&r);
        }
        if (sdict_optim_load_state_dict(oa, sd[2], &err) != SDICT_OK ||
            sdict_optim_load_state_dict(ob, sd[3], &err) != SDICT_OK) {
            rc = fail(in, &err);
            goto done;
        }
        const sdict_optim_hparams *ga = sdict_optim_group(oa, 0), *gb = sdict_optim_group(ob, 0);
        printf("loaded %s: modelA %zu tensors, modelB %zu tensors\n", in, sdict_dict_len(sd[0]),
               sdict_dict_len(sd[1]));
        printf("optimizerA: SGD lr %g momentum %g, state for %zu parameters\n", ga->lr,
               ga->momentum, sdict_dict_len(sdict_dict_get(sd[2], "state")));
        printf("optimizerB: Adam lr %g betas (%g, %g) amsgrad %s, state for %zu parameters\n",
               gb->lr, gb->beta1, gb->beta2, gb->amsgrad ? "True" : "False",
               sdict_dict_len(sdict_dict_get(sd[3], "state")));
        /* modelA.eval(); modelB.eval()  - or .train() to resume training */
        sdict_module_eval(a);
        sdict_module_eval(b);
    } else if (one_step(a, oa, true, &err) != SDICT_OK || one_step(b, ob, false, &err) != SDICT_OK) {
        rc = fail("training step", &err);
        goto done;
    }
    if (out) {
        /* torch.save({'modelA_state_dict': modelA.state_dict(), ...}, PATH) */
        sdict_doc *od = NULL;
        sdict_value *root = NULL, *v[4] = {0};
        sdict_status st = sdict_doc_new(&od, &err);
        if (st == SDICT_OK && !(root = sdict_dict_new(od, false))) st = SDICT_E_NOMEM;
        if (st == SDICT_OK) st = sdict_module_state_dict(a, od, false, &v[0], &err);
        if (st == SDICT_OK) st = sdict_module_state_dict(b, od, false, &v[1], &err);
        if (st == SDICT_OK) st = sdict_optim_state_dict(oa, od, &v[2], &err);
        if (st == SDICT_OK) st = sdict_optim_state_dict(ob, od, &v[3], &err);
        for (int k = 0; k < 4 && st == SDICT_OK; k++) st = sdict_dict_set_str(root, keys[k], v[k]);
        if (st == SDICT_OK) st = sdict_doc_set_root(od, root);
        if (st == SDICT_OK) st = sdict_save(out, root, NULL, &err);
        sdict_doc_free(od);
        if (st != SDICT_OK) {
            rc = fail(out, &err);
            goto done;
        }
        printf("saved %s\n", out);
    }
    rc = 0;
done:
    sdict_doc_free(doc);
    sdict_optim_free(oa);
    sdict_optim_free(ob);
    sdict_module_free(a);
    sdict_module_free(b);
    return rc;
}
