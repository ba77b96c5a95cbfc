/*
 models.c - ready-made models with PyTorch's module trees and key names: torchvision's
 resnet18, the PyTorch recipe's Net (LeNet-style) and the small Embedding MLP used by `infer`.
*/
#include "nn_private.h"
#include "statedict_nn.h"

#include <stdio.h>
#include <string.h>


/* Runs child `name` of m on x into y. */
static sdict_status run(sdict_module *m, const char *name, const sdict_act *x, sdict_act *y,
                        sdict_error *err) {
    sdict_module *c = sdict_module_child(m, name);
    if (!c) {
        memset(y, 0, sizeof *y);
        return sdict_nn__err(err, SDICT_E_NOT_FOUND, "%s: no child \"%s\"", m->type_name, name);
    }
    return sdict_module_forward(c, x, y, err);
}

/* Runs the named children in order, starting from x; *y gets the last output. */
static sdict_status chain(sdict_module *m, const char *const *names, size_t n, const sdict_act *x,
                          sdict_act *y, sdict_error *err) {
    sdict_act cur;
    sdict_status st = sdict_act_copy(&cur, x, err);
    for (size_t i = 0; st == SDICT_OK && i < n; i++) {
        sdict_act next;
        st = run(m, names[i], &cur, &next, err);
        sdict_act_free(&cur);
        cur = next;
    }
    if (st != SDICT_OK) {
        sdict_act_free(&cur);
        memset(y, 0, sizeof *y);
        return st;
    }
    *y = cur;
    return SDICT_OK;
}

/* Adds children in order; frees the rest on failure (sdict_module_add frees the one passed). */
static bool add_all(sdict_module *m, const char *const *names, sdict_module **mods, size_t n) {
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        if (!ok || !mods[i]) {
            sdict_module_free(mods[i]);
            ok = false;
            continue;
        }
        ok = sdict_module_add(m, names[i], mods[i], NULL) == SDICT_OK;
    }
    return ok;
}

/*==================================================================================================
 MARK: resnet18 (torchvision.models.resnet.ResNet with BasicBlock, layers [2, 2, 2, 2])
==================================================================================================*/

static sdict_status basic_block_forward(sdict_module *m, const sdict_act *x, sdict_act *y,
                                        sdict_error *err) {
    static const char *const main_path[] = {"conv1", "bn1", "relu", "conv2", "bn2"};
    sdict_status st = chain(m, main_path, 5, x, y, err);
    if (st != SDICT_OK) return st;
    sdict_act identity;
    if (sdict_module_child(m, "downsample")) st = run(m, "downsample", x, &identity, err);
    else st = sdict_act_copy(&identity, x, err);
    if (st == SDICT_OK) st = sdict_act_add_(y, &identity, err);
    sdict_act_free(&identity);
    if (st != SDICT_OK) {
        sdict_act_free(y);
        return st;
    }
    /* torchvision reuses self.relu after the add; run it as a module so caches stay right. */
    sdict_act out;
    st = run(m, "relu", y, &out, err);
    sdict_act_free(y);
    *y = out;
    return st;
}

static sdict_module *basic_block(int64_t inplanes, int64_t planes, int64_t stride) {
    sdict_module *m = sdict_module_new("BasicBlock", basic_block_forward, NULL);
    if (!m) return NULL;
    const char *names[] = {"conv1", "bn1", "relu", "conv2", "bn2", "downsample"};
    sdict_module *mods[6] = {
        sdict_conv2d_new(inplanes, planes, 3, 3, stride, 1, 1, 1, false),
        sdict_batchnorm2d_new(planes, 1e-5, 0.1, true, true),
        sdict_relu_new(),
        sdict_conv2d_new(planes, planes, 3, 3, 1, 1, 1, 1, false),
        sdict_batchnorm2d_new(planes, 1e-5, 0.1, true, true),
        NULL,
    };
    size_t n = 5;
    if (stride != 1 || inplanes != planes) {
        sdict_module *ds = sdict_sequential_new();
        const char *dn[] = {"0", "1"};
        sdict_module *dm[2] = {sdict_conv2d_new(inplanes, planes, 1, 1, stride, 0, 1, 1, false),
                               sdict_batchnorm2d_new(planes, 1e-5, 0.1, true, true)};
        if (ds && !add_all(ds, dn, dm, 2)) {
            sdict_module_free(ds);
            ds = NULL;
        } else if (!ds) {
            sdict_module_free(dm[0]);
            sdict_module_free(dm[1]);
        }
        mods[5] = ds;
        n = 6;
        if (!ds) {
            add_all(m, names, mods, 5); /* frees them */
            sdict_module_free(m);
            return NULL;
        }
    }
    if (!add_all(m, names, mods, n)) {
        sdict_module_free(m);
        return NULL;
    }
    return m;
}

static sdict_status resnet_forward(sdict_module *m, const sdict_act *x, sdict_act *y,
                                   sdict_error *err) {
    static const char *const order[] = {"conv1",  "bn1",    "relu",   "maxpool", "layer1",
                                        "layer2", "layer3", "layer4", "avgpool"};
    sdict_act feat;
    sdict_status st = chain(m, order, 9, x, &feat, err);
    if (st == SDICT_OK) st = sdict_act_flatten_(&feat, 1, -1, err); /* torch.flatten(x, 1) */
    if (st == SDICT_OK) st = run(m, "fc", &feat, y, err);
    sdict_act_free(&feat);
    return st;
}

sdict_module *sdict_resnet18_new(int64_t num_classes) {
    sdict_module *m = sdict_module_new("ResNet", resnet_forward, NULL);
    if (!m) return NULL;
    const char *names[] = {"conv1",  "bn1",    "relu",   "maxpool", "layer1", "layer2",
                           "layer3", "layer4", "avgpool", "fc"};
    sdict_module *mods[10] = {
        sdict_conv2d_new(3, 64, 7, 7, 2, 3, 1, 1, false),
        sdict_batchnorm2d_new(64, 1e-5, 0.1, true, true),
        sdict_relu_new(),
        sdict_maxpool2d_new(3, 2, 1),
        NULL, NULL, NULL, NULL,
        sdict_adaptive_avgpool2d_new(1, 1),
        sdict_linear_new(512, num_classes, true),
    };
    int64_t planes[4] = {64, 128, 256, 512};
    int64_t inplanes = 64;
    for (int l = 0; l < 4; l++) {
        sdict_module *layer = sdict_sequential_new();
        const char *bn[] = {"0", "1"};
        sdict_module *blocks[2] = {basic_block(inplanes, planes[l], l == 0 ? 1 : 2),
                                   basic_block(planes[l], planes[l], 1)};
        if (layer && !add_all(layer, bn, blocks, 2)) {
            sdict_module_free(layer);
            layer = NULL;
        } else if (!layer) {
            sdict_module_free(blocks[0]);
            sdict_module_free(blocks[1]);
        }
        mods[4 + l] = layer;
        inplanes = planes[l];
    }
    if (!add_all(m, names, mods, 10)) {
        sdict_module_free(m);
        return NULL;
    }
    return m;
}

/*==================================================================================================
 MARK: The recipe's Net and the Embedding MLP
==================================================================================================*/

static sdict_status lenet_forward(sdict_module *m, const sdict_act *x, sdict_act *y,
                                  sdict_error *err) {
    /* x = pool(relu(conv1(x))); x = pool(relu(conv2(x))); flatten; relu(fc1); relu(fc2); fc3 */
    sdict_act a = {0}, b = {0};
    sdict_status st = run(m, "conv1", x, &a, err);
    if (st == SDICT_OK) sdict_act_relu_(&a), st = run(m, "pool", &a, &b, err);
    sdict_act_free(&a);
    if (st == SDICT_OK) st = run(m, "conv2", &b, &a, err);
    sdict_act_free(&b);
    if (st == SDICT_OK) sdict_act_relu_(&a), st = run(m, "pool", &a, &b, err);
    sdict_act_free(&a);
    if (st == SDICT_OK) st = sdict_act_flatten_(&b, 1, -1, err);
    if (st == SDICT_OK) st = run(m, "fc1", &b, &a, err);
    sdict_act_free(&b);
    if (st == SDICT_OK) sdict_act_relu_(&a), st = run(m, "fc2", &a, &b, err);
    sdict_act_free(&a);
    if (st == SDICT_OK) sdict_act_relu_(&b), st = run(m, "fc3", &b, y, err);
    sdict_act_free(&b);
    return st;
}

sdict_module *sdict_lenet_new(void) {
    sdict_module *m = sdict_module_new("Net", lenet_forward, NULL);
    if (!m) return NULL;
    const char *names[] = {"conv1", "pool", "conv2", "fc1", "fc2", "fc3"};
    sdict_module *mods[6] = {
        sdict_conv2d_new(3, 6, 5, 5, 1, 0, 1, 1, true), sdict_maxpool2d_new(2, 2, 0),
        sdict_conv2d_new(6, 16, 5, 5, 1, 0, 1, 1, true), sdict_linear_new(16 * 5 * 5, 120, true),
        sdict_linear_new(120, 84, true), sdict_linear_new(84, 10, true),
    };
    if (!add_all(m, names, mods, 6)) {
        sdict_module_free(m);
        return NULL;
    }
    return m;
}

sdict_module *sdict_mlp_new(double dropout_p) {
    sdict_module *m = sdict_sequential_new();
    if (!m) return NULL;
    const char *names[] = {"0", "1", "2", "3", "4", "5", "6"};
    sdict_module *mods[7] = {
        sdict_embedding_new(100, 16), sdict_flatten_new(1, -1),
        sdict_linear_new(16 * 8, 64, true), sdict_batchnorm1d_new(64, 1e-5, 0.1, true, true),
        sdict_relu_new(), sdict_dropout_new(dropout_p), sdict_linear_new(64, 10, true),
    };
    if (!add_all(m, names, mods, 7)) {
        sdict_module_free(m);
        return NULL;
    }
    return m;
}
