/*
 seed_inference - the recipe's "Save/Load state_dict (recommended)" for inference, in C:

   torch.save(model.state_dict(), PATH)
   model = TheModelClass(); model.load_state_dict(torch.load(PATH)); model.eval()

   seed_inference [--weights W.pt] [--path PATH.pt]

 The model starts from W.pt when given (a state_dict PyTorch wrote, e.g. examples/data/lenet.pt),
 else from its own initial weights. It is saved to PATH (default model_state_dict.pt), loaded
 into a fresh Net, switched to eval mode and run on a made-up image; both models' outputs are
 printed and must be identical.
*/
#include "statedict_nn.h"

#include <stdio.h>
#include <string.h>

static int fail(const char *what, const sdict_error *err) {
    char buf[1024];
    fprintf(stderr, "seed_inference: %s: %s\n", what, sdict_error_format(err, buf, sizeof buf));
    return 1;
}

/* model.load_state_dict(torch.load(path)) */
static int load_into(sdict_module *m, const char *path) {
    sdict_doc *doc = NULL;
    sdict_error err = {0};
    sdict_load_result r = {0};
    if (sdict_load(path, NULL, &doc, &err) != SDICT_OK) return fail(path, &err);
    sdict_status st = sdict_module_load_state_dict(m, sdict_doc_root(doc), true, &r, &err);
    if (st != SDICT_OK) fprintf(stderr, "seed_inference: %s\n", r.message ? r.message : err.message);
    sdict_load_result_free(&r);
    sdict_doc_free(doc);
    return st == SDICT_OK ? 0 : 1;
}

int main(int argc, char **argv) {
    const char *weights = NULL, *path = "model_state_dict.pt";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--weights") == 0) weights = argv[i + 1];
        else if (strcmp(argv[i], "--path") == 0) path = argv[i + 1];
    }
    if (argc % 2 == 0) {
        fprintf(stderr, "usage: seed_inference [--weights W.pt] [--path PATH.pt]\n");
        return 2;
    }
    sdict_module *model = sdict_lenet_new(), *model2 = sdict_lenet_new();
    sdict_error err = {0};
    sdict_doc *doc = NULL;
    sdict_act x = {0}, y1 = {0}, y2 = {0};
    int rc = 1;
    if (!model || !model2) goto done;
    if (weights && load_into(model, weights) != 0) goto done;

    /* torch.save(model.state_dict(), PATH) */
    sdict_value *sd = NULL;
    if (sdict_doc_new(&doc, &err) != SDICT_OK ||
        sdict_module_state_dict(model, doc, false, &sd, &err) != SDICT_OK ||
        sdict_save(path, sd, NULL, &err) != SDICT_OK) {
        rc = fail(path, &err);
        goto done;
    }
    printf("saved %s (%zu tensors)\n", path, sdict_dict_len(sd));

    /* model = TheModelClass(); model.load_state_dict(torch.load(PATH)); model.eval() */
    if (load_into(model2, path) != 0) goto done;
    sdict_module_eval(model2);
    sdict_module_eval(model);

    /* a made-up input: a bright square on a dark background */
    int64_t shape[4] = {1, 3, 32, 32};
    if (sdict_act_init(&x, SDICT_FLOAT32, 4, shape, &err) != SDICT_OK) goto done;
    for (int c = 0; c < 3; c++)
        for (int i = 8; i < 24; i++)
            for (int j = 8; j < 24; j++) ((float *)x.data)[(c * 32 + i) * 32 + j] = 1.0f;
    if (sdict_module_forward(model, &x, &y1, &err) != SDICT_OK ||
        sdict_module_forward(model2, &x, &y2, &err) != SDICT_OK) {
        rc = fail("forward", &err);
        goto done;
    }
    printf("output of the loaded model (eval):");
    for (int64_t i = 0; i < sdict_act_numel(&y2); i++) printf(" %.6f", ((float *)y2.data)[i]);
    printf("\n");
    if (memcmp(y1.data, y2.data, sizeof(float) * (size_t)sdict_act_numel(&y1)) != 0) {
        fprintf(stderr, "seed_inference: the loaded model's output differs\n");
        goto done;
    }
    printf("identical to the original model's output\n");
    rc = 0;
done:
    sdict_act_free(&x);
    sdict_act_free(&y1);
    sdict_act_free(&y2);
    sdict_doc_free(doc);
    sdict_module_free(model);
    sdict_module_free(model2);
    return rc;
}
