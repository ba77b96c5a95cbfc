/*
 lenet - the PyTorch "saving and loading models" recipe in C, written as a user would.

 The recipe's model, in Python:

     class Net(nn.Module):
         def __init__(self):
             super().__init__()
             self.conv1 = nn.Conv2d(3, 6, 5)
             self.pool = nn.MaxPool2d(2, 2)
             self.conv2 = nn.Conv2d(6, 16, 5)
             self.fc1 = nn.Linear(16 * 5 * 5, 120)
             self.fc2 = nn.Linear(120, 84)
             self.fc3 = nn.Linear(84, 10)
         def forward(self, x):
             x = self.pool(F.relu(self.conv1(x)))
             x = self.pool(F.relu(self.conv2(x)))
             x = x.view(-1, 16 * 5 * 5)
             x = F.relu(self.fc1(x))
             x = F.relu(self.fc2(x))
             return self.fc3(x)

     model = Net()
     model.load_state_dict(torch.load(PATH))
     model.eval()
     print(model(x))

 Usage: lenet WEIGHTS.pt [INPUT.pt]
 WEIGHTS.pt is what torch.save(model.state_dict(), PATH) wrote. INPUT.pt is a [N, 3, 32, 32]
 tensor (or a dict with key 'input'); without it a fixed ramp image is used.
 Prints the 10 outputs of each sample and the index of the largest.
*/
#include "statedict_nn.h"

#include <stdio.h>
#include <string.h>

/* Runs one named child of the Net. */
static sdict_status layer(sdict_module *net, const char *name, const sdict_act *x, sdict_act *y,
                          sdict_error *err) {
    return sdict_module_forward(sdict_module_child(net, name), x, y, err);
}

/* Net.forward: each step consumes its input activation and produces the next. */
static sdict_status net_forward(sdict_module *net, const sdict_act *x, sdict_act *y,
                                sdict_error *err) {
    sdict_act a = {0}, b = {0};
    sdict_status st = layer(net, "conv1", x, &a, err);      /* [N, 6, 28, 28] */
    if (st == SDICT_OK) {
        sdict_act_relu_(&a);
        st = layer(net, "pool", &a, &b, err);               /* [N, 6, 14, 14] */
    }
    sdict_act_free(&a);
    if (st == SDICT_OK) st = layer(net, "conv2", &b, &a, err); /* [N, 16, 10, 10] */
    sdict_act_free(&b);
    if (st == SDICT_OK) {
        sdict_act_relu_(&a);
        st = layer(net, "pool", &a, &b, err);               /* [N, 16, 5, 5] */
    }
    sdict_act_free(&a);
    if (st == SDICT_OK) st = sdict_act_flatten_(&b, 1, -1, err); /* [N, 400] */
    if (st == SDICT_OK) st = layer(net, "fc1", &b, &a, err);
    sdict_act_free(&b);
    if (st == SDICT_OK) {
        sdict_act_relu_(&a);
        st = layer(net, "fc2", &a, &b, err);
    }
    sdict_act_free(&a);
    if (st == SDICT_OK) {
        sdict_act_relu_(&b);
        st = layer(net, "fc3", &b, y, err);                 /* [N, 10] */
    }
    sdict_act_free(&b);
    return st;
}

static sdict_module *net_new(void) {
    sdict_module *net = sdict_module_new("Net", net_forward, NULL);
    if (!net) return NULL;
    /* sdict_module_add takes ownership of the child even when it fails (and of NULL). */
    if (sdict_module_add(net, "conv1", sdict_conv2d_new(3, 6, 5, 5, 1, 0, 1, 1, true), NULL) ||
        sdict_module_add(net, "pool", sdict_maxpool2d_new(2, 2, 0), NULL) ||
        sdict_module_add(net, "conv2", sdict_conv2d_new(6, 16, 5, 5, 1, 0, 1, 1, true), NULL) ||
        sdict_module_add(net, "fc1", sdict_linear_new(16 * 5 * 5, 120, true), NULL) ||
        sdict_module_add(net, "fc2", sdict_linear_new(120, 84, true), NULL) ||
        sdict_module_add(net, "fc3", sdict_linear_new(84, 10, true), NULL)) {
        sdict_module_free(net);
        return NULL;
    }
    return net;
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: lenet WEIGHTS.pt [INPUT.pt]\n");
        return 2;
    }
    char buf[1024];
    sdict_error err;
    memset(&err, 0, sizeof err);
    int rc = 1;
    sdict_doc *wdoc = NULL, *xdoc = NULL;
    sdict_act x = {0}, y = {0};
    sdict_load_result res = {0};

    /* model = Net() */
    sdict_module *net = net_new();
    if (!net) {
        fprintf(stderr, "lenet: out of memory\n");
        return 1;
    }
    /* model.load_state_dict(torch.load(PATH)) */
    if (sdict_load(argv[1], NULL, &wdoc, &err) != SDICT_OK) {
        fprintf(stderr, "lenet: %s\n", sdict_error_format(&err, buf, sizeof buf));
        goto done;
    }
    if (sdict_module_load_state_dict(net, sdict_doc_root(wdoc), true, &res, &err) != SDICT_OK) {
        fprintf(stderr, "%s\n", res.message ? res.message : err.message);
        goto done;
    }
    /* model.eval() */
    sdict_module_eval(net);

    if (argc == 3) {
        if (sdict_load(argv[2], NULL, &xdoc, &err) != SDICT_OK) {
            fprintf(stderr, "lenet: %s\n", sdict_error_format(&err, buf, sizeof buf));
            goto done;
        }
        const sdict_value *v = sdict_doc_root(xdoc);
        if (sdict_value_kind(v) == SDICT_KIND_DICT) v = sdict_dict_get(v, "input");
        if (!sdict_value_tensor(v)) {
            fprintf(stderr, "lenet: %s: no input tensor\n", argv[2]);
            goto done;
        }
        if (sdict_act_from_tensor(sdict_value_tensor(v), &x, &err) != SDICT_OK) {
            fprintf(stderr, "lenet: %s: %s\n", argv[2], sdict_error_format(&err, buf, sizeof buf));
            goto done;
        }
    } else {
        int64_t shape[4] = {1, 3, 32, 32};
        if (sdict_act_init(&x, SDICT_FLOAT32, 4, shape, &err) != SDICT_OK) goto done;
        float *p = sdict_act_f32(&x);
        for (int64_t i = 0; i < sdict_act_numel(&x); i++) p[i] = (float)(i % 64) / 32.0f - 1.0f;
    }

    /* with torch.no_grad(): out = model(x) */
    if (sdict_module_forward(net, &x, &y, &err) != SDICT_OK) {
        fprintf(stderr, "lenet: forward: %s\n", err.message);
        goto done;
    }
    const float *out = sdict_act_f32(&y);
    for (int64_t n = 0; n < y.shape[0]; n++) {
        int best = 0;
        printf("sample %lld:", (long long)n);
        for (int k = 0; k < 10; k++) {
            printf(" %.6f", out[n * 10 + k]);
            if (out[n * 10 + k] > out[n * 10 + best]) best = k;
        }
        printf("  -> class %d\n", best);
    }
    rc = 0;
done:
    sdict_load_result_free(&res);
    sdict_act_free(&x);
    sdict_act_free(&y);
    sdict_doc_free(wdoc);
    sdict_doc_free(xdoc);
    sdict_module_free(net);
    return rc;
}
