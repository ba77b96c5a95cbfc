/*
 infer - run a model on weights and input written by PyTorch, save the output for PyTorch.

   infer --arch lenet|resnet18|mlp|lstm|gru --weights W.pt --input X.pt --output Y.pt
         [--mode eval|train] [--dropout P] [--save-state S.pt] [--non-strict]
         [--strip-prefix PREFIX] [--skip-size-mismatch] [--layout 1.13|2.x]
         [--num-classes N]                          (resnet18; 1000 by default)
         [--input-size N --hidden-size N [--num-layers N] [--bidirectional] [--batch-first]]
                                                    (lstm, gru: torch's constructor arguments)
   infer --arch transformer --weights W.pt --input X.pt --output Y.pt --d-model N --nhead N
         [--dim-feedforward N] [--num-layers N] [--norm-first] [--activation relu|gelu]
         [--batch-first] [--layer-norm-eps E] [--mode eval|train] [--dropout P] ...
   infer --arch gpt2 --model DIR --input IDS.pt --output LOGITS.pt [--layout 1.13|2.x]

 transformer is torch's nn.TransformerEncoder (keys layers.N.self_attn.in_proj_weight, ...,
 and norm.weight / norm.bias when it was built with a final norm) or a single
 nn.TransformerEncoderLayer (keys self_attn.in_proj_weight, ...; --num-layers 1), run without
 masks. The options are torch's constructor arguments (dim_feedforward 2048, num_layers 1,
 relu, eps 1e-5 and dropout 0.1 by default, as torch); d_model, dim_feedforward and num_layers
 are checked against the weights first, naming the key and its shape on a mismatch; bias is
 taken from the weights. The input is [L, N, d_model] ([N, L, d_model] with --batch-first, or
 unbatched [L, d_model]); Y.pt gets the output of the same shape.

 lstm and gru are torch's nn.LSTM / nn.GRU: the input is [L, N, input_size] ([N, L, input_size]
 with --batch-first, or unbatched [L, input_size]) and Y.pt receives `output` (h_n and c_n are
 not written). bias is taken from the weights (bias_ih_l0 present or not). Before loading, the
 shape options are checked against the weights, and a contradiction is named with the key, its
 shape and the option to change ("--hidden-size 6 does not match weight_ih_l0 of shape
 [20, 4]..."); proj_size checkpoints (weight_hr_l0) are refused, as statedict does not run them.

 With --arch gpt2, DIR is a Hugging Face folder (config.json plus model.safetensors, a sharded
 model.safetensors.index.json or pytorch_model.bin) loaded as GPT2LMHeadModel.from_pretrained
 does; IDS.pt holds int64 input_ids [batch, seq]; LOGITS.pt gets the eval logits
 [batch, seq, vocab_size] as float32.

 W.pt is a state_dict, or a checkpoint dict whose 'model_state_dict' is one. Keys are never
 renamed silently: --strip-prefix module. removes the prefix DataParallel/DDP files carry
 (torch's consume_prefix_in_state_dict_if_present); without it such a file fails, with a hint.
 It is loaded strictly: on missing, unexpected or mis-shaped keys, PyTorch's own error text is
 printed to stderr and the exit status is 1. --non-strict loads what matches and prints what
 torch's load_state_dict(strict=False) returns, `_IncompatibleKeys(missing_keys=[...],
 unexpected_keys=[...])`, to stderr when a list is not empty. --skip-size-mismatch leaves keys
 whose shape differs from the model's at the model's values and names each on stderr
 ("infer: skipped size mismatch for KEY: checkpoint torch.Size([...]), model torch.Size([...])").
 X.pt is a bare tensor or a dict with key 'input'. Y.pt receives the output as a bare tensor.
 Extras used by the tests: --dropout overrides mlp's Dropout p (0.5); --save-state writes the
 model's state_dict after the forward (updated BatchNorm statistics in train mode); --layout
 2.x writes Y.pt and S.pt as torch 2.7+ writes files (1.13's layout by default).
 Exit status: 0 ok, 1 load or run failure, 2 usage.
*/
#include "statedict_nn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int usage(void) {
    fprintf(stderr, "usage: infer --arch lenet|resnet18|mlp|lstm|gru --weights W.pt --input X.pt "
                    "--output Y.pt [--mode eval|train] [--dropout P] [--save-state S.pt] "
                    "[--non-strict] [--strip-prefix PREFIX] [--skip-size-mismatch] "
                    "[--layout 1.13|2.x] [--num-classes N] [--input-size N --hidden-size N "
                    "[--num-layers N] [--bidirectional] [--batch-first]]\n"
                    "       infer --arch transformer --weights W.pt --input X.pt --output Y.pt "
                    "--d-model N --nhead N [--dim-feedforward N] [--num-layers N] [--norm-first] "
                    "[--activation relu|gelu] [--batch-first] [--layer-norm-eps E] "
                    "[--mode eval|train] [--dropout P]\n"
                    "       infer --arch gpt2 --model DIR --input IDS.pt --output LOGITS.pt "
                    "[--layout 1.13|2.x]\n");
    return 2;
}

/* A positive integer option value, or -1. */
static long long parse_size(const char *v) {
    char *end = NULL;
    long long n = strtoll(v, &end, 10);
    return end && *end == '\0' && n > 0 && n <= (1LL << 31) ? n : -1;
}

/* The whole of v as a finite number; false for "abc", "1x", "", nan or inf. */
static bool parse_real(const char *v, double *out) {
    char *end = NULL;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !(x - x == 0.0)) return false;
    *out = x;
    return true;
}

static void shape_text(const sdict_tensor *t, char *buf, size_t n) {
    size_t off = 0;
    buf[0] = '\0';
    for (int32_t i = 0; i < t->ndim && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, "%s%lld", i ? ", " : "",
                                (long long)t->shape[i]);
}

static const sdict_tensor *sd_tensor(const sdict_value *sd, const char *key) {
    const sdict_value *v = sdict_dict_get(sd, key);
    return v ? sdict_value_tensor(v) : NULL;
}

/* The shape options of --arch lstm|gru against the weights, before anything is built: each
   contradiction is named with the key, its shape and the option to change. Returns 0 when they
   agree; *bias receives whether the weights have biases. */
static int check_rnn_shapes(const sdict_value *sd, const char *arch, long long I, long long H,
                            long long L, bool bidir, bool *bias) {
    long long G = strcmp(arch, "lstm") == 0 ? 4 : 3;
    const char *gates = G == 4 ? "LSTM's 4 gates i, f, g, o" : "GRU's 3 gates r, z, n";
    char key[64], shape[96];
    if (sd_tensor(sd, "weight_hr_l0")) {
        fprintf(stderr, "infer: the weights have weight_hr_l0: an LSTM with proj_size, which "
                        "statedict does not run\n");
        return 1;
    }
    *bias = sd_tensor(sd, "bias_ih_l0") != NULL;
    if (!bidir && sd_tensor(sd, "weight_ih_l0_reverse")) {
        fprintf(stderr, "infer: the weights have weight_ih_l0_reverse (a bidirectional %s): add "
                        "--bidirectional\n", arch);
        return 1;
    }
    for (long long l = 0; l < L; l++)
        for (int d = 0; d < (bidir ? 2 : 1); d++) {
            const char *sfx = d ? "_reverse" : "";
            snprintf(key, sizeof key, "weight_ih_l%lld%s", l, sfx);
            const sdict_tensor *w = sd_tensor(sd, key);
            if (!w) {
                fprintf(stderr, "infer: --num-layers %lld%s, but the weights have no %s\n", L,
                        bidir ? " --bidirectional" : "", key);
                return 1;
            }
            shape_text(w, shape, sizeof shape);
            long long in = l == 0 ? I : (bidir ? 2 : 1) * H;
            if (w->ndim != 2 || w->shape[0] % G) {
                fprintf(stderr, "infer: %s has shape [%s]; --arch %s expects [%lld * "
                                "hidden_size, input_size]\n", key, shape, arch, G);
                return 1;
            }
            if (w->shape[0] != G * H) {
                fprintf(stderr, "infer: --hidden-size %lld does not match %s of shape [%s] "
                                "(hidden_size %lld for %s)\n", H, key, shape,
                        (long long)(w->shape[0] / G), gates);
                return 1;
            }
            if (w->shape[1] != in) {
                if (l == 0)
                    fprintf(stderr, "infer: --input-size %lld does not match %s of shape [%s] "
                                    "(input_size %lld)\n", I, key, shape, (long long)w->shape[1]);
                else
                    fprintf(stderr, "infer: %s has shape [%s], but layer %lld's input is %lld "
                                    "wide (%s--hidden-size %lld): check --bidirectional\n", key,
                            shape, l, in, bidir ? "2 x " : "", H);
                return 1;
            }
        }
    snprintf(key, sizeof key, "weight_ih_l%lld", L);
    if (sd_tensor(sd, key)) {
        fprintf(stderr, "infer: --num-layers %lld, but the weights have %s (more layers)\n", L,
                key);
        return 1;
    }
    return 0;
}

/* The model is built from the sizes of these weights: one whose storage holds fewer elements
   than its shape (an expanded, stride-0 view) would let a small file ask for any amount of
   memory, so it is refused. Returns 1 after printing why. */
static int not_stored(const sdict_tensor *w, const char *key) {
    size_t item = sdict_dtype_size(w->dtype);
    double have = w->storage && item ? (double)(sdict_storage_nbytes(w->storage) / item) : 0.0;
    if (have >= (double)sdict_tensor_numel(w)) return 0;
    fprintf(stderr, "infer: %s has %lld elements but its storage holds %.0f (an expanded view); "
                    "the model is sized by it, so it must hold its elements\n", key,
            (long long)sdict_tensor_numel(w), have);
    return 1;
}

/* The shape options of --arch transformer against the weights (nn.TransformerEncoder's
   layers.N. keys, or a single layer's when *single), before anything is built. Returns 0 when
   they agree; *bias receives whether the weights have biases, *final_norm whether the encoder
   has its final norm. */
static int check_transformer_shapes(const sdict_value *sd, long long D, long long H, long long FF,
                                    long long L, bool *single, bool *bias, bool *final_norm) {
    char key[96], shape[96];
    *single = sd_tensor(sd, "self_attn.in_proj_weight") != NULL;
    if (*single && L != 1) {
        fprintf(stderr, "infer: --num-layers %lld, but the weights are one "
                        "TransformerEncoderLayer (self_attn.in_proj_weight, no layers.0.*)\n", L);
        return 1;
    }
    if (D % H != 0) {
        fprintf(stderr, "infer: --d-model %lld is not divisible by --nhead %lld\n", D, H);
        return 1;
    }
    const char *pre = *single ? "" : "layers.";
    for (long long l = 0; l < L; l++) {
        char lp[40] = "";
        if (!*single) snprintf(lp, sizeof lp, "%s%lld.", pre, l);
        snprintf(key, sizeof key, "%sself_attn.in_proj_weight", lp);
        const sdict_tensor *w = sd_tensor(sd, key);
        if (!w && sdict_dict_get(sd, key)) {
            fprintf(stderr, "infer: %s in the weights is not a tensor\n", key);
            return 1;
        }
        if (!w) {
            fprintf(stderr, "infer: --num-layers %lld, but the weights have no %s\n", L, key);
            return 1;
        }
        shape_text(w, shape, sizeof shape);
        if (w->ndim != 2 || w->shape[0] != 3 * w->shape[1]) {
            fprintf(stderr, "infer: %s has shape [%s]; expected [3 * d_model, d_model]\n", key,
                    shape);
            return 1;
        }
        if (w->shape[1] != D) {
            fprintf(stderr, "infer: --d-model %lld does not match %s of shape [%s] (d_model "
                            "%lld)\n", D, key, shape, (long long)w->shape[1]);
            return 1;
        }
        if (not_stored(w, key)) return 1;
        snprintf(key, sizeof key, "%slinear1.weight", lp);
        if (!(w = sd_tensor(sd, key))) {
            fprintf(stderr, "infer: the weights have no %s\n", key);
            return 1;
        }
        shape_text(w, shape, sizeof shape);
        if (w->ndim != 2 || w->shape[0] != FF) {
            fprintf(stderr, "infer: --dim-feedforward %lld does not match %s of shape [%s] "
                            "(dim_feedforward %lld)\n", FF, key, shape,
                    (long long)(w->ndim == 2 ? w->shape[0] : -1));
            return 1;
        }
        if (not_stored(w, key)) return 1;
        if (l == 0) {
            snprintf(key, sizeof key, "%sself_attn.in_proj_bias", lp);
            *bias = sd_tensor(sd, key) != NULL;
        }
    }
    snprintf(key, sizeof key, "layers.%lld.self_attn.in_proj_weight", L);
    if (!*single && sd_tensor(sd, key)) {
        fprintf(stderr, "infer: --num-layers %lld, but the weights have %s (more layers)\n", L,
                key);
        return 1;
    }
    *final_norm = !*single && sd_tensor(sd, "norm.weight") != NULL;
    return 0;
}

/* nn.TransformerEncoder(layer, num_layers, norm) as containers: a Sequential of "layers" (a
   Sequential of "0".."L-1") then "norm", which is its forward without masks. */
static sdict_module *build_transformer(const sdict_transformer_layer_config *c, long long L,
                                       bool single, bool final_norm) {
    if (single) return sdict_transformer_encoder_layer_new(c);
    sdict_module *top = sdict_sequential_new(), *layers = sdict_sequential_new();
    bool ok = top && layers && sdict_module_add(top, "layers", layers, NULL) == SDICT_OK;
    if (!ok) {
        sdict_module_free(layers);
        sdict_module_free(top);
        return NULL;
    }
    for (long long l = 0; l < L && ok; l++) {
        char name[24];
        snprintf(name, sizeof name, "%lld", l);
        sdict_module *layer = sdict_transformer_encoder_layer_new(c);
        ok = layer && sdict_module_add(layers, name, layer, NULL) == SDICT_OK;
        if (!ok) sdict_module_free(layer);
    }
    if (ok && final_norm) {
        int64_t d = c->d_model;
        sdict_module *norm = sdict_layernorm_new(1, &d, c->layer_norm_eps, true, c->bias);
        ok = norm && sdict_module_add(top, "norm", norm, NULL) == SDICT_OK;
        if (!ok) sdict_module_free(norm);
    }
    if (!ok) {
        sdict_module_free(top);
        return NULL;
    }
    return top;
}

/* Prints the error, prefixed by what failed unless the library's text already names it. */
static int fail(const char *what, const sdict_error *err) {
    char buf[1024];
    sdict_error_format(err, buf, sizeof buf);
    if (strstr(buf, what))
        fprintf(stderr, "infer: %s\n", buf);
    else
        fprintf(stderr, "infer: %s: %s\n", what, buf);
    return 1;
}

/* A Python str repr of s (ASCII escapes as Python writes them; other bytes as they are). */
static void print_pyrepr(const char *s) {
    char q = strchr(s, '\'') && !strchr(s, '"') ? '"' : '\'';
    fputc(q, stderr);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '\\' || *p == (unsigned char)q) fprintf(stderr, "\\%c", *p);
        else if (*p == '\n') fputs("\\n", stderr);
        else if (*p == '\t') fputs("\\t", stderr);
        else if (*p == '\r') fputs("\\r", stderr);
        else if (*p < 0x20 || *p == 0x7f) fprintf(stderr, "\\x%02x", *p);
        else fputc(*p, stderr);
    }
    fputc(q, stderr);
}

static void print_keys(const char *name, char **keys, size_t n) {
    fprintf(stderr, "%s=[", name);
    for (size_t i = 0; i < n; i++) {
        if (i) fputs(", ", stderr);
        print_pyrepr(keys[i]);
    }
    fputc(']', stderr);
}

static void print_shape(const int64_t *shape, int32_t ndim) {
    fputs("torch.Size([", stderr);
    for (int32_t i = 0; i < ndim; i++) fprintf(stderr, "%s%lld", i ? ", " : "", (long long)shape[i]);
    fputs("])", stderr);
}

/* Keys the file has under "module." that the model does not: a DataParallel/DDP file. */
static void hint_prefix(const sdict_load_result *res, const char *strip_prefix) {
    if (strip_prefix) return;
    for (size_t i = 0; i < res->n_unexpected; i++)
        if (strncmp(res->unexpected[i], "module.", 7) == 0) {
            fprintf(stderr, "infer: the state_dict's keys start with \"module.\" (saved from "
                            "DataParallel or DistributedDataParallel); rerun with "
                            "--strip-prefix module. to load them\n");
            return;
        }
}

/* What a non-strict or size-skipping load did not copy, so nothing passes silently. */
static void report_load(const sdict_load_result *res, bool strict, const char *strip_prefix) {
    for (size_t i = 0; i < res->n_size_mismatch; i++) {
        const sdict_size_mismatch *s = &res->size_mismatch[i];
        fprintf(stderr, "infer: skipped size mismatch for %s: checkpoint ", s->key);
        print_shape(s->checkpoint_shape, s->checkpoint_ndim);
        fputs(", model ", stderr);
        print_shape(s->model_shape, s->model_ndim);
        fputc('\n', stderr);
    }
    if (!strict && (res->n_missing || res->n_unexpected)) {
        fputs("_IncompatibleKeys(", stderr);
        print_keys("missing_keys", res->missing, res->n_missing);
        fputs(", ", stderr);
        print_keys("unexpected_keys", res->unexpected, res->n_unexpected);
        fputs(")\n", stderr);
        hint_prefix(res, strip_prefix);
    }
}

/* The first tensor of a file (a bare tensor or a dict's 'input'), as an activation. */
static int load_input(const char *path, sdict_act *x) {
    sdict_error err;
    memset(&err, 0, sizeof err);
    sdict_doc *doc = NULL;
    int rc = 1;
    if (sdict_load(path, NULL, &doc, &err) != SDICT_OK) return fail(path, &err);
    const sdict_value *v = sdict_doc_root(doc);
    if (sdict_value_kind(v) == SDICT_KIND_DICT) v = sdict_dict_get(v, "input");
    if (!sdict_value_tensor(v))
        fprintf(stderr, "infer: %s: expected a tensor or a dict with key 'input'\n", path);
    else if (sdict_act_from_tensor(sdict_value_tensor(v), x, &err) != SDICT_OK)
        rc = fail(path, &err);
    else
        rc = 0;
    sdict_doc_free(doc);
    return rc;
}

static int run_gpt2(const char *model, const char *input, const char *output,
                    const sdict_save_opts *save_opts) {
    sdict_error err;
    memset(&err, 0, sizeof err);
    sdict_gpt2 *g = NULL;
    sdict_act x = {0}, y = {0};
    sdict_doc *odoc = NULL;
    sdict_value *out = NULL;
    int rc = 1;
    if (sdict_gpt2_from_pretrained(model, &g, &err) != SDICT_OK) { rc = fail(model, &err); goto done; }
    if (load_input(input, &x) != 0) goto done;
    if (x.dtype != SDICT_INT64) {
        fprintf(stderr, "infer: %s: input_ids must be an integer tensor\n", input);
        goto done;
    }
    if (sdict_gpt2_forward(g, &x, &y, &err) != SDICT_OK) { rc = fail("forward", &err); goto done; }
    if (sdict_doc_new(&odoc, &err) != SDICT_OK ||
        sdict_act_to_value(&y, odoc, &out, &err) != SDICT_OK ||
        sdict_doc_set_root(odoc, out) != SDICT_OK ||
        sdict_save(output, out, save_opts, &err) != SDICT_OK) {
        rc = fail(output, &err);
        goto done;
    }
    rc = 0;
done:
    sdict_act_free(&x);
    sdict_act_free(&y);
    sdict_doc_free(odoc);
    sdict_gpt2_free(g);
    return rc;
}

int main(int argc, char **argv) {
    const char *model = NULL;
    const char *arch = NULL, *weights = NULL, *input = NULL, *output = NULL, *mode = "eval";
    const char *save_state = NULL;
    double dropout = -1.0, layer_norm_eps = 1e-5;
    long long d_model = -1, nhead = -1, dim_feedforward = 2048;
    bool norm_first = false, gelu = false;
    bool strict = true;
    unsigned load_flags = 0;
    const char *strip_prefix = NULL;
    long long num_classes = 1000, input_size = -1, hidden_size = -1, num_layers = 1;
    bool bidirectional = false, batch_first = false;
    sdict_save_opts save_opts = {.archive_name = NULL, .flags = 0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--non-strict") == 0) { strict = false; continue; }
        if (strcmp(a, "--bidirectional") == 0) { bidirectional = true; continue; }
        if (strcmp(a, "--batch-first") == 0) { batch_first = true; continue; }
        if (strcmp(a, "--norm-first") == 0) { norm_first = true; continue; }
        if (strcmp(a, "--skip-size-mismatch") == 0) {
            load_flags |= SDICT_LOAD_SD_SKIP_SIZE_MISMATCH;
            continue;
        }
        if (!v) return usage();
        if (strcmp(a, "--arch") == 0) arch = v;
        else if (strcmp(a, "--weights") == 0) weights = v;
        else if (strcmp(a, "--model") == 0) model = v;
        else if (strcmp(a, "--input") == 0) input = v;
        else if (strcmp(a, "--output") == 0) output = v;
        else if (strcmp(a, "--mode") == 0) mode = v;
        else if (strcmp(a, "--dropout") == 0) {
            if (!parse_real(v, &dropout) || dropout < 0.0 || dropout > 1.0) {
                fprintf(stderr, "infer: --dropout \"%s\": expected a number in [0, 1]\n", v);
                return 2;
            }
        }
        else if (strcmp(a, "--save-state") == 0) save_state = v;
        else if (strcmp(a, "--strip-prefix") == 0 && *v) strip_prefix = v;
        else if (strcmp(a, "--num-classes") == 0 && (num_classes = parse_size(v)) > 0) {}
        else if (strcmp(a, "--input-size") == 0 && (input_size = parse_size(v)) > 0) {}
        else if (strcmp(a, "--hidden-size") == 0 && (hidden_size = parse_size(v)) > 0) {}
        else if (strcmp(a, "--num-layers") == 0 && (num_layers = parse_size(v)) > 0) {}
        else if (strcmp(a, "--d-model") == 0 && (d_model = parse_size(v)) > 0) {}
        else if (strcmp(a, "--nhead") == 0 && (nhead = parse_size(v)) > 0) {}
        else if (strcmp(a, "--dim-feedforward") == 0 && (dim_feedforward = parse_size(v)) > 0) {}
        else if (strcmp(a, "--activation") == 0 && strcmp(v, "relu") == 0) gelu = false;
        else if (strcmp(a, "--activation") == 0 && strcmp(v, "gelu") == 0) gelu = true;
        else if (strcmp(a, "--layer-norm-eps") == 0) {
            if (!parse_real(v, &layer_norm_eps) || layer_norm_eps < 0.0) {
                fprintf(stderr, "infer: --layer-norm-eps \"%s\": expected a number >= 0\n", v);
                return 2;
            }
        }
        else if (strcmp(a, "--layout") == 0 && strcmp(v, "2.x") == 0)
            save_opts.flags = SDICT_SAVE_LAYOUT_TORCH2;
        else if (strcmp(a, "--layout") == 0 && strcmp(v, "1.13") == 0)
            save_opts.flags = 0;
        else return usage();
        i++;
    }
    if (arch && strcmp(arch, "gpt2") == 0) {
        if (!model || weights || !input || !output) return usage();
        return run_gpt2(model, input, output, &save_opts);
    }
    if (!arch || !weights || !input || !output || model) return usage();
    if (strcmp(mode, "eval") != 0 && strcmp(mode, "train") != 0) return usage();

    bool rnn = strcmp(arch, "lstm") == 0 || strcmp(arch, "gru") == 0;
    bool tfm = strcmp(arch, "transformer") == 0;
    if (tfm && (d_model < 0 || nhead < 0)) {
        fprintf(stderr, "infer: --arch transformer needs --d-model and --nhead (and "
                        "--dim-feedforward, --num-layers, --norm-first, --activation, "
                        "--batch-first as the model was built)\n");
        return 2;
    }
    if (rnn && (input_size < 0 || hidden_size < 0)) {
        fprintf(stderr, "infer: --arch %s needs --input-size and --hidden-size (and "
                        "--num-layers, --bidirectional, --batch-first as the model was built)\n",
                arch);
        return 2;
    }
    sdict_module *net = NULL;
    if (strcmp(arch, "lenet") == 0) net = sdict_lenet_new();
    else if (strcmp(arch, "resnet18") == 0) net = sdict_resnet18_new(num_classes);
    else if (strcmp(arch, "mlp") == 0) net = sdict_mlp_new(dropout < 0.0 ? 0.5 : dropout);
    else if (!rnn && !tfm) return usage();
    if (!net && !rnn && !tfm) {
        fprintf(stderr, "infer: cannot build %s\n", arch);
        return 1;
    }

    int rc = 1;
    sdict_error err;
    memset(&err, 0, sizeof err);
    sdict_doc *wdoc = NULL, *xdoc = NULL, *odoc = NULL;
    sdict_act x = {0}, y = {0};
    sdict_load_result res = {0};

    if (sdict_load(weights, NULL, &wdoc, &err) != SDICT_OK) { rc = fail(weights, &err); goto done; }
    const sdict_value *sd = sdict_doc_root(wdoc);
    const sdict_value *inner = sdict_dict_get(sd, "model_state_dict");
    if (inner) sd = inner;
    if (strip_prefix) {
        sdict_value *stripped = NULL;
        if (sdict_state_dict_consume_prefix(wdoc, sd, strip_prefix, &stripped, &err) != SDICT_OK) {
            rc = fail(weights, &err);
            goto done;
        }
        sd = stripped;
    }
    if (tfm) {
        bool single = false, bias = true, final_norm = false;
        if (sdict_value_kind(sd) != SDICT_KIND_DICT) {
            fprintf(stderr, "infer: %s: expected a state_dict (a dict)\n", weights);
            goto done;
        }
        if (check_transformer_shapes(sd, d_model, nhead, dim_feedforward, num_layers, &single,
                                     &bias, &final_norm) != 0)
            goto done;
        sdict_transformer_layer_config c = {
            .d_model = d_model, .nhead = nhead, .dim_feedforward = dim_feedforward,
            .dropout = dropout < 0.0 ? 0.1 : dropout, .gelu = gelu,
            .layer_norm_eps = layer_norm_eps, .batch_first = batch_first,
            .norm_first = norm_first, .bias = bias};
        if (!(net = build_transformer(&c, num_layers, single, final_norm))) {
            fprintf(stderr, "infer: cannot build %s\n", arch);
            goto done;
        }
    }
    if (rnn) {
        bool bias = true;
        if (sdict_value_kind(sd) != SDICT_KIND_DICT) {
            fprintf(stderr, "infer: %s: expected a state_dict (a dict)\n", weights);
            goto done;
        }
        if (check_rnn_shapes(sd, arch, input_size, hidden_size, num_layers, bidirectional,
                             &bias) != 0)
            goto done;
        net = strcmp(arch, "lstm") == 0
                  ? sdict_lstm_new(input_size, hidden_size, num_layers, bias, batch_first, 0.0,
                                   bidirectional)
                  : sdict_gru_new(input_size, hidden_size, num_layers, bias, batch_first, 0.0,
                                  bidirectional);
        if (!net) {
            fprintf(stderr, "infer: cannot build %s\n", arch);
            goto done;
        }
    }
    sdict_status lst = sdict_module_load_state_dict_ex(net, sd, strict, load_flags, &res, &err);
    if (lst != SDICT_OK) {
        /* PyTorch's RuntimeError text, verbatim, so users recognise it. */
        fprintf(stderr, "%s\n", res.message ? res.message : err.message);
        hint_prefix(&res, strip_prefix);
        goto done;
    }
    report_load(&res, strict, strip_prefix);
    sdict_module_train(net, strcmp(mode, "train") == 0);

    if (sdict_load(input, NULL, &xdoc, &err) != SDICT_OK) { rc = fail(input, &err); goto done; }
    const sdict_value *xv = sdict_doc_root(xdoc);
    if (sdict_value_kind(xv) == SDICT_KIND_DICT) xv = sdict_dict_get(xv, "input");
    if (!sdict_value_tensor(xv)) {
        fprintf(stderr, "infer: %s: expected a tensor or a dict with key 'input'\n", input);
        goto done;
    }
    if (sdict_act_from_tensor(sdict_value_tensor(xv), &x, &err) != SDICT_OK) {
        rc = fail(input, &err);
        goto done;
    }
    if (sdict_module_forward(net, &x, &y, &err) != SDICT_OK) { rc = fail("forward", &err); goto done; }

    sdict_value *out = NULL;
    if (sdict_doc_new(&odoc, &err) != SDICT_OK ||
        sdict_act_to_value(&y, odoc, &out, &err) != SDICT_OK ||
        sdict_doc_set_root(odoc, out) != SDICT_OK ||
        sdict_save(output, out, &save_opts, &err) != SDICT_OK) {
        rc = fail(output, &err);
        goto done;
    }
    if (save_state) {
        sdict_value *state = NULL;
        if (sdict_module_state_dict(net, odoc, false, &state, &err) != SDICT_OK ||
            sdict_save(save_state, state, &save_opts, &err) != SDICT_OK) {
            rc = fail(save_state, &err);
            goto done;
        }
    }
    rc = 0;
done:
    sdict_load_result_free(&res);
    sdict_act_free(&x);
    sdict_act_free(&y);
    sdict_doc_free(wdoc);
    sdict_doc_free(xdoc);
    sdict_doc_free(odoc);
    sdict_module_free(net);
    return rc;
}
