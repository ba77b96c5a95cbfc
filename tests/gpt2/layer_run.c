/*
 layer_run - runs one transformer layer of statedict_nn on a tensor file, for the interop test
 (tests/gpt2/gpt2_interop.py, case "layers"). Test helper, public API only.

   layer_run SPEC X.pt Y.pt [W.pt]

 SPEC: layernorm:D1xD2..:EPS:AFFINE:BIAS | gelu:none|tanh | softmax:DIM | logsoftmax:DIM |
 conv1d:NF:NX. W.pt (a state_dict) is loaded strictly when given. Y.pt gets the eval output.
*/
#include "statedict_nn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what, const sdict_error *err) {
    char buf[1024];
    fprintf(stderr, "layer_run: %s: %s\n", what, sdict_error_format(err, buf, sizeof buf));
    return 1;
}

static sdict_module *build(const char *spec) {
    char kind[32];
    if (sscanf(spec, "%31[a-z0-9]", kind) != 1) return NULL;
    const char *rest = strchr(spec, ':');
    if (!rest) return NULL;
    rest++;
    if (strcmp(kind, "gelu") == 0) return sdict_gelu_new(strcmp(rest, "tanh") == 0);
    if (strcmp(kind, "softmax") == 0) return sdict_softmax_new(atoi(rest));
    if (strcmp(kind, "logsoftmax") == 0) return sdict_log_softmax_new(atoi(rest));
    if (strcmp(kind, "conv1d") == 0) {
        long long nf, nx;
        if (sscanf(rest, "%lld:%lld", &nf, &nx) != 2) return NULL;
        return sdict_hf_conv1d_new(nf, nx);
    }
    if (strcmp(kind, "layernorm") == 0) {
        int64_t shape[SDICT_NN_MAX_DIMS];
        int32_t nd = 0;
        char *end;
        const char *p = rest;
        while (nd < SDICT_NN_MAX_DIMS) {
            shape[nd++] = strtoll(p, &end, 10);
            if (*end != 'x') break;
            p = end + 1;
        }
        double eps;
        int affine, bias;
        if (sscanf(end, ":%lf:%d:%d", &eps, &affine, &bias) != 3) return NULL;
        return sdict_layernorm_new(nd, shape, eps, affine != 0, bias != 0);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: layer_run SPEC X.pt Y.pt [W.pt]\n");
        return 2;
    }
    sdict_module *m = build(argv[1]);
    if (!m) {
        fprintf(stderr, "layer_run: bad spec %s\n", argv[1]);
        return 2;
    }
    sdict_error err;
    memset(&err, 0, sizeof err);
    sdict_doc *xd = NULL, *wd = NULL, *od = NULL;
    sdict_act x = {0}, y = {0};
    sdict_value *out = NULL;
    int rc = 1;
    if (argc == 5) {
        if (sdict_load(argv[4], NULL, &wd, &err) != SDICT_OK) { rc = fail(argv[4], &err); goto done; }
        if (sdict_module_load_state_dict(m, sdict_doc_root(wd), true, NULL, &err) != SDICT_OK) {
            rc = fail(argv[4], &err);
            goto done;
        }
    }
    sdict_module_eval(m);
    if (sdict_load(argv[2], NULL, &xd, &err) != SDICT_OK ||
        sdict_act_from_tensor(sdict_value_tensor(sdict_doc_root(xd)), &x, &err) != SDICT_OK) {
        rc = fail(argv[2], &err);
        goto done;
    }
    if (sdict_module_forward(m, &x, &y, &err) != SDICT_OK) { rc = fail("forward", &err); goto done; }
    if (sdict_doc_new(&od, &err) != SDICT_OK || sdict_act_to_value(&y, od, &out, &err) != SDICT_OK ||
        sdict_doc_set_root(od, out) != SDICT_OK || sdict_save(argv[3], out, NULL, &err) != SDICT_OK) {
        rc = fail(argv[3], &err);
        goto done;
    }
    rc = 0;
done:
    sdict_act_free(&x);
    sdict_act_free(&y);
    sdict_doc_free(xd);
    sdict_doc_free(wd);
    sdict_doc_free(od);
    sdict_module_free(m);
    return rc;
}
