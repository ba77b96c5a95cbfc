/*
 seed_print_state_dict - the recipe's "What is a state_dict?" in C: build the Net and an SGD
 optimizer, print the model's state_dict (key and size) and the optimizer's state_dict the way
 PyTorch prints them.

   seed_print_state_dict [--step] [--torch 1.13|2.6|2.14]
     --step first trains one step, so the optimizer has state; --torch picks the torch whose
     optimizer state_dict layout is printed (default 1.13)

 PyTorch:
   model = TheModelClass(); optimizer = optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
   for k in model.state_dict(): print(k, "\t", model.state_dict()[k].size())
   for k in optimizer.state_dict(): print(k, "\t", optimizer.state_dict()[k])
 Differences: hyperparameters print as floats (0.0 where PyTorch keeps the int default 0) and
 tensors inside the optimizer state print as tensor(<shape>) instead of their values.
*/
#include "statedict_nn.h"
#include "statedict_optim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Python's repr of a float: the shortest text that reads back to the same double. */
static void print_float(double d) {
    char buf[40];
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, d);
        if (strtod(buf, NULL) == d) break;
    }
    printf("%s%s", buf, strpbrk(buf, ".eni") ? "" : ".0");
}

static void print_size(const sdict_tensor *t) {
    printf("torch.Size([");
    for (int32_t i = 0; i < t->ndim; i++) printf("%s%lld", i ? ", " : "", (long long)t->shape[i]);
    printf("])");
}

/* A small repr() for the values an optimizer state_dict holds. */
static void print_value(const sdict_value *v) {
    switch (sdict_value_kind(v)) {
    case SDICT_KIND_NONE: printf("None"); break;
    case SDICT_KIND_BOOL: printf(sdict_bool_get(v) ? "True" : "False"); break;
    case SDICT_KIND_INT: {
        char buf[64];
        sdict_int_to_string(v, buf, sizeof buf);
        printf("%s", buf);
        break;
    }
    case SDICT_KIND_FLOAT: print_float(sdict_float_get(v)); break;
    case SDICT_KIND_STR: printf("'%s'", sdict_str_get(v, NULL)); break;
    case SDICT_KIND_TENSOR:
        printf("tensor(");
        print_size(sdict_value_tensor(v));
        printf(")");
        break;
    case SDICT_KIND_LIST:
    case SDICT_KIND_TUPLE: {
        bool tuple = sdict_value_kind(v) == SDICT_KIND_TUPLE;
        printf(tuple ? "(" : "[");
        for (size_t i = 0; i < sdict_seq_len(v); i++) {
            if (i) printf(", ");
            print_value(sdict_seq_item(v, i));
        }
        printf(tuple && sdict_seq_len(v) == 1 ? ",)" : tuple ? ")" : "]");
        break;
    }
    case SDICT_KIND_DICT:
        printf("{");
        for (size_t i = 0; i < sdict_dict_len(v); i++) {
            if (i) printf(", ");
            print_value(sdict_dict_key(v, i));
            printf(": ");
            print_value(sdict_dict_val(v, i));
        }
        printf("}");
        break;
    default: printf("<%s>", sdict_kind_name(sdict_value_kind(v)));
    }
}

int main(int argc, char **argv) {
    bool step = false;
    const char *gen = "1.13";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--step") == 0) step = true;
        else if (strcmp(argv[i], "--torch") == 0 && i + 1 < argc) gen = argv[++i];
        else {
            fprintf(stderr, "usage: seed_print_state_dict [--step] [--torch 1.13|2.6|2.14]\n");
            return 2;
        }
    }
    sdict_module *model = sdict_lenet_new();
    sdict_optim *opt = sdict_optim_new(SDICT_OPTIM_SGD);
    sdict_doc *doc = NULL;
    sdict_error err = {0};
    sdict_optim_layout layout;
    int rc = 1;
    if (!model || !opt || sdict_doc_new(&doc, &err) != SDICT_OK) goto done;
    if (sdict_optim_layout_from_name(gen, &layout, &err) != SDICT_OK ||
        sdict_optim_set_layout(opt, layout, &err) != SDICT_OK)
        goto done;
    model->backward = sdict_lenet_backward;
    sdict_optim_hparams hp = sdict_optim_defaults(SDICT_OPTIM_SGD);
    hp.lr = 0.001;
    hp.momentum = 0.9;
    if (sdict_optim_add_module(opt, &hp, model, &err) != SDICT_OK) goto done;
    if (step) {
        /* one step on an all-zero image with label 0, so that momentum buffers exist */
        int64_t xs[4] = {1, 3, 32, 32}, ys[1] = {1};
        sdict_act x = {0}, y = {0}, out = {0}, dout = {0};
        float loss;
        sdict_status st = sdict_act_init(&x, SDICT_FLOAT32, 4, xs, &err);
        if (st == SDICT_OK) st = sdict_act_init(&y, SDICT_INT64, 1, ys, &err);
        if (st == SDICT_OK) st = sdict_module_forward(model, &x, &out, &err);
        if (st == SDICT_OK) st = sdict_cross_entropy_loss(&out, &y, &loss, &dout, &err);
        if (st == SDICT_OK) st = sdict_module_backward(model, &dout, NULL, &err);
        if (st == SDICT_OK) st = sdict_optim_step(opt, &err);
        sdict_act_free(&x);
        sdict_act_free(&y);
        sdict_act_free(&out);
        sdict_act_free(&dout);
        if (st != SDICT_OK) goto done;
    }
    sdict_value *msd = NULL, *osd = NULL;
    if (sdict_module_state_dict(model, doc, false, &msd, &err) != SDICT_OK ||
        sdict_optim_state_dict(opt, doc, &osd, &err) != SDICT_OK)
        goto done;
    printf("Model's state_dict:\n");
    for (size_t i = 0; i < sdict_dict_len(msd); i++) {
        printf("%s \t ", sdict_str_get(sdict_dict_key(msd, i), NULL));
        print_size(sdict_value_tensor(sdict_dict_val(msd, i)));
        printf("\n");
    }
    printf("Optimizer's state_dict:\n");
    for (size_t i = 0; i < sdict_dict_len(osd); i++) {
        printf("%s \t ", sdict_str_get(sdict_dict_key(osd, i), NULL));
        print_value(sdict_dict_val(osd, i));
        printf("\n");
    }
    rc = 0;
done:
    if (rc) {
        char buf[1024];
        fprintf(stderr, "seed_print_state_dict: %s\n", sdict_error_format(&err, buf, sizeof buf));
    }
    sdict_doc_free(doc);
    sdict_optim_free(opt);
    sdict_module_free(model);
    return rc;
}
