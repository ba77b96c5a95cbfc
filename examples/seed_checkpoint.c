/*
 seed_checkpoint - the recipe's "Saving & loading a general checkpoint for inference and/or
 resuming training", in C:

   torch.save({'epoch': epoch, 'model_state_dict': model.state_dict(),
               'optimizer_state_dict': optimizer.state_dict(), 'loss': loss}, PATH)
   model = TheModelClass(); optimizer = TheOptimizerClass(...)
   checkpoint = torch.load(PATH)
   model.load_state_dict(checkpoint['model_state_dict'])
   optimizer.load_state_dict(checkpoint['optimizer_state_dict'])
   epoch = checkpoint['epoch']; loss = checkpoint['loss']
   model.train()   # or model.eval()

   seed_checkpoint [--path PATH.tar]     (default checkpoint.tar)

 Trains the Net with SGD(lr=0.001, momentum=0.9) for 2 epochs on a made-up data set, saves the
 checkpoint, loads it into a fresh model and optimizer, and trains one more epoch. The same
 third epoch run without the save/load round trip gives the same loss (printed for comparison):
 the checkpoint carries everything training needs, momentum buffers included.
*/
#include "statedict_nn.h"
#include "statedict_optim.h"

#include <stdio.h>
#include <string.h>

enum { N = 32, BS = 8 };

static uint32_t lcg(uint32_t *s) { return *s = *s * 1664525u + 1013904223u; }

/* A made-up data set: noise images whose label is the brightest of 10 horizontal bands. */
static sdict_status make_data(sdict_act *x, sdict_act *y, sdict_error *err) {
    int64_t xs[4] = {N, 3, 32, 32}, ys[1] = {N};
    sdict_status st = sdict_act_init(x, SDICT_FLOAT32, 4, xs, err);
    if (st == SDICT_OK) st = sdict_act_init(y, SDICT_INT64, 1, ys, err);
    if (st != SDICT_OK) return st;
    uint32_t s = 7;
    float *X = x->data;
    for (int64_t n = 0; n < N; n++) {
        int64_t label = (int64_t)(lcg(&s) >> 8) % 10;
        ((int64_t *)y->data)[n] = label;
        for (int64_t i = 0; i < 3 * 32 * 32; i++) {
            int64_t row = (i / 32) % 32;
            X[n * 3072 + i] = (float)(lcg(&s) >> 8) / 16777216.0f + (row / 3 == label ? 1.0f : 0.0f);
        }
    }
    return SDICT_OK;
}

static sdict_status rows(const sdict_act *a, int64_t s, int64_t e, sdict_act *out, sdict_error *err) {
    int64_t shape[SDICT_NN_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[0] = e - s;
    sdict_status st = sdict_act_init(out, a->dtype, a->ndim, shape, err);
    size_t row = (size_t)(sdict_act_numel(a) / a->shape[0]) * sdict_dtype_size(a->dtype);
    if (st == SDICT_OK) memcpy(out->data, (char *)a->data + (size_t)s * row, (size_t)(e - s) * row);
    return st;
}

/* One epoch of: optimizer.zero_grad(); loss = criterion(model(x), y); loss.backward(); step */
static sdict_status epoch(sdict_module *m, sdict_optim *o, const sdict_act *x, const sdict_act *y,
                          float *mean, sdict_error *err) {
    double sum = 0.0;
    for (int64_t s = 0; s < N; s += BS) {
        sdict_act xb = {0}, yb = {0}, out = {0}, dout = {0};
        float loss = 0.0f;
        sdict_optim_zero_grad(o);
        sdict_status st = rows(x, s, s + BS, &xb, err);
        if (st == SDICT_OK) st = rows(y, s, s + BS, &yb, err);
        if (st == SDICT_OK) st = sdict_module_forward(m, &xb, &out, err);
        if (st == SDICT_OK) st = sdict_cross_entropy_loss(&out, &yb, &loss, &dout, err);
        if (st == SDICT_OK) st = sdict_module_backward(m, &dout, NULL, err);
        if (st == SDICT_OK) st = sdict_optim_step(o, err);
        sdict_act_free(&xb);
        sdict_act_free(&yb);
        sdict_act_free(&out);
        sdict_act_free(&dout);
        if (st != SDICT_OK) return st;
        sum += loss;
    }
    *mean = (float)(sum / (N / BS));
    return SDICT_OK;
}

/* model = TheModelClass(); optimizer = optim.SGD(model.parameters(), lr=0.001, momentum=0.9) */
static bool build(sdict_module **m, sdict_optim **o, sdict_error *err) {
    *m = sdict_lenet_new();
    *o = sdict_optim_new(SDICT_OPTIM_SGD);
    if (!*m || !*o) return false;
    (*m)->backward = sdict_lenet_backward;
    sdict_optim_hparams hp = sdict_optim_defaults(SDICT_OPTIM_SGD);
    hp.lr = 0.001;
    hp.momentum = 0.9;
    return sdict_optim_add_module(*o, &hp, *m, err) == SDICT_OK;
}

int main(int argc, char **argv) {
    const char *path = argc == 3 && strcmp(argv[1], "--path") == 0 ? argv[2] : "checkpoint.tar";
    if (argc != 1 && argc != 3) {
        fprintf(stderr, "usage: seed_checkpoint [--path PATH.tar]\n");
        return 2;
    }
    sdict_module *model = NULL, *model2 = NULL;
    sdict_optim *opt = NULL, *opt2 = NULL;
    sdict_act x = {0}, y = {0};
    sdict_doc *doc = NULL;
    sdict_error err = {0};
    sdict_load_result r = {0};
    int rc = 1;
    float loss = 0.0f;
    if (!build(&model, &opt, &err) || make_data(&x, &y, &err) != SDICT_OK) goto done;
    int ep = 0;
    for (; ep < 2; ep++) {
        if (epoch(model, opt, &x, &y, &loss, &err) != SDICT_OK) goto done;
        printf("epoch %d loss %.6f\n", ep + 1, loss);
    }
    {   /* torch.save({...}, PATH) */
        sdict_value *root = NULL, *msd = NULL, *osd = NULL;
        sdict_status st = sdict_doc_new(&doc, &err);
        if (st == SDICT_OK && !(root = sdict_dict_new(doc, false))) st = SDICT_E_NOMEM;
        if (st == SDICT_OK) st = sdict_dict_set_str(root, "epoch", sdict_int_new(doc, ep));
        if (st == SDICT_OK) st = sdict_module_state_dict(model, doc, false, &msd, &err);
        if (st == SDICT_OK) st = sdict_dict_set_str(root, "model_state_dict", msd);
        if (st == SDICT_OK) st = sdict_optim_state_dict(opt, doc, &osd, &err);
        if (st == SDICT_OK) st = sdict_dict_set_str(root, "optimizer_state_dict", osd);
        if (st == SDICT_OK) st = sdict_dict_set_str(root, "loss", sdict_float_new(doc, loss));
        if (st == SDICT_OK) st = sdict_save(path, root, NULL, &err);
        sdict_doc_free(doc);
        doc = NULL;
        if (st != SDICT_OK) goto done;
        printf("saved %s\n", path);
    }
    /* a fresh model and optimizer, then checkpoint = torch.load(PATH) and the four loads */
    if (!build(&model2, &opt2, &err) || sdict_load(path, NULL, &doc, &err) != SDICT_OK) goto done;
    const sdict_value *ck = sdict_doc_root(doc), *msd, *osd;
    double e, l;
    if (!(msd = sdict_checkpoint_dict(ck, "model_state_dict", &err)) ||
        !(osd = sdict_checkpoint_dict(ck, "optimizer_state_dict", &err)) ||
        sdict_checkpoint_number(ck, "epoch", &e, &err) != SDICT_OK ||
        sdict_checkpoint_number(ck, "loss", &l, &err) != SDICT_OK)
        goto done;
    if (sdict_module_load_state_dict(model2, msd, true, &r, &err) != SDICT_OK ||
        sdict_optim_load_state_dict(opt2, osd, &err) != SDICT_OK)
        goto done;
    printf("loaded %s: epoch %d, loss %.6f\n", path, (int)e, l);
    sdict_module_train(model2, true);   /* model.train() to resume; model.eval() for inference */
    float resumed, direct;
    if (epoch(model2, opt2, &x, &y, &resumed, &err) != SDICT_OK ||
        epoch(model, opt, &x, &y, &direct, &err) != SDICT_OK)
        goto done;
    printf("epoch %d loss %.6f (resumed from the file)\n", (int)e + 1, resumed);
    printf("epoch %d loss %.6f (same model, never saved)\n", ep + 1, direct);
    rc = resumed == direct ? 0 : 1;
    if (rc) fprintf(stderr, "seed_checkpoint: resumed training differs\n");
done:
    if (rc && err.message[0]) {
        char buf[1024];
        fprintf(stderr, "seed_checkpoint: %s\n", r.message ? r.message
                                                           : sdict_error_format(&err, buf, sizeof buf));
    }
    sdict_load_result_free(&r);
    sdict_doc_free(doc);
    sdict_act_free(&x);
    sdict_act_free(&y);
    sdict_optim_free(opt);
    sdict_optim_free(opt2);
    sdict_module_free(model);
    sdict_module_free(model2);
    return rc;
}
