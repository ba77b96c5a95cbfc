/*
 gpt2.c - GPT-2 as Hugging Face transformers 5.12 defines it (models/gpt2/modeling_gpt2.py,
 GPT2LMHeadModel), built from its config.json, loaded from a model folder with transformers' key
 names, run in eval mode over int64 ids with an optional KV cache, and sampled from; and its
 training loss and backward (MARK: Training), which does walk the tree's LayerNorm and Conv1D
 modules so their own backward rules accumulate the gradients.

 The weights live in an ordinary module tree (statedict_nn.h) so state_dict, load_state_dict and
 the optimizers see torch's keys: transformer.wte / wpe (Embedding), transformer.h.N.ln_1,
 .attn.c_attn, .attn.c_proj, .ln_2, .mlp.c_fc, .mlp.c_proj (LayerNorm and Conv1D), transformer.ln_f
 and lm_head (Linear without bias, tied to wte unless the file says otherwise). The forward does
 not walk the tree: it runs the whole block with sgemm on pointers resolved once, so the same
 code serves the full-sequence forward (a cache of exactly T positions) and generation.
*/
#include "nn_private.h"
#include "statedict_nn.h"
#include "statedict_optim.h"

#include <cblas.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct layer_w {
    const float *ln1_w, *ln1_b, *attn_w, *attn_b, *proj_w, *proj_b;
    const float *ln2_w, *ln2_b, *fc_w, *fc_b, *fcproj_w, *fcproj_b;
} layer_w;

struct sdict_gpt2 {
    sdict_gpt2_config cfg;
    sdict_module *root;
    const float *wte, *wpe, *lnf_w, *lnf_b;
    float *lm_head;
    bool tied;
    layer_w *layers;
};

struct sdict_gpt2_cache {
    int64_t n_layer, batch, n_head, head_dim, max_len, len;
    float *k, *v; /* [n_layer, batch, n_head, max_len, head_dim] each */
};

/*==================================================================================================
 MARK: Config
==================================================================================================*/

void sdict_gpt2_config_default(sdict_gpt2_config *c) {
    memset(c, 0, sizeof *c);
    c->vocab_size = 50257;
    c->n_positions = 1024;
    c->n_embd = 768;
    c->n_layer = 12;
    c->n_head = 12;
    c->n_inner = 0;
    c->layer_norm_epsilon = 1e-5;
    c->activation = SDICT_GPT2_GELU_NEW;
    c->scale_attn_weights = true;
    c->tie_word_embeddings = true;
    c->eos_token_id = 50256;
    c->attn_pdrop = c->resid_pdrop = c->embd_pdrop = 0.1;
}

static sdict_status cfg_err(sdict_error *err, const char *path, const char *fmt, const char *a) {
    char msg[512];
    snprintf(msg, sizeof msg, fmt, a);
    return sdict_nn__err(err, SDICT_E_INVALID_ARG, "%s: %s", path, msg);
}

static sdict_status get_int(json_t *root, const char *key, int64_t *out, bool allow_null,
                            const char *path, sdict_error *err) {
    json_t *v = json_object_get(root, key);
    if (!v || (allow_null && json_is_null(v))) return SDICT_OK;
    if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) > INT32_MAX)
        return cfg_err(err, path, "\"%s\" must be an integer in 1..2^31-1", key);
    *out = (int64_t)json_integer_value(v);
    return SDICT_OK;
}

static sdict_status get_bool(json_t *root, const char *key, bool *out, const char *path,
                             sdict_error *err) {
    json_t *v = json_object_get(root, key);
    if (!v) return SDICT_OK;
    if (!json_is_boolean(v)) return cfg_err(err, path, "\"%s\" must be true or false", key);
    *out = json_is_true(v);
    return SDICT_OK;
}

sdict_status sdict_gpt2_config_from_json(const char *path, sdict_gpt2_config *cfg,
                                         sdict_error *err) {
    sdict_gpt2_config_default(cfg);
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
        return sdict_nn__err(err, SDICT_E_IO, "%s: is a directory, not a config.json file", path);
    if (stat(path, &sb) == 0 && sb.st_size > SDICT_GPT2_MAX_CONFIG_BYTES)
        return sdict_nn__err(err, SDICT_E_LIMIT, "%s: %lld bytes, more than a config.json's limit "
                             "of %d", path, (long long)sb.st_size, SDICT_GPT2_MAX_CONFIG_BYTES);
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root && je.line < 0) /* not parsed at all: cannot open or read it */
        return sdict_nn__err(err, SDICT_E_IO, "%s: %s", path, je.text);
    if (!root)
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "%s: line %d column %d (byte %d): %s",
                             path, je.line, je.column, je.position, je.text);
    sdict_status st = SDICT_OK;
    if (!json_is_object(root)) {
        st = cfg_err(err, path, "%s", "a config.json must hold a JSON object");
        goto done;
    }
    json_t *mt = json_object_get(root, "model_type");
    if (mt && (!json_is_string(mt) || strcmp(json_string_value(mt), "gpt2") != 0)) {
        st = cfg_err(err, path, "model_type is \"%s\", not \"gpt2\"",
                     json_is_string(mt) ? json_string_value(mt) : "(not a string)");
        goto done;
    }
    if ((st = get_int(root, "vocab_size", &cfg->vocab_size, false, path, err)) ||
        (st = get_int(root, "n_positions", &cfg->n_positions, false, path, err)) ||
        (st = get_int(root, "n_embd", &cfg->n_embd, false, path, err)) ||
        (st = get_int(root, "n_layer", &cfg->n_layer, false, path, err)) ||
        (st = get_int(root, "n_head", &cfg->n_head, false, path, err)) ||
        (st = get_int(root, "n_inner", &cfg->n_inner, true, path, err)) ||
        (st = get_bool(root, "scale_attn_weights", &cfg->scale_attn_weights, path, err)) ||
        (st = get_bool(root, "scale_attn_by_inverse_layer_idx",
                       &cfg->scale_attn_by_inverse_layer_idx, path, err)) ||
        (st = get_bool(root, "reorder_and_upcast_attn", &cfg->reorder_and_upcast_attn, path,
                       err)) ||
        (st = get_bool(root, "tie_word_embeddings", &cfg->tie_word_embeddings, path, err)))
        goto done;
    json_t *eps = json_object_get(root, "layer_norm_epsilon");
    if (eps) {
        if (!json_is_number(eps) || !(json_number_value(eps) >= 0.0)) {
            st = cfg_err(err, path, "%s", "\"layer_norm_epsilon\" must be a number >= 0");
            goto done;
        }
        cfg->layer_norm_epsilon = json_number_value(eps);
    }
    const char *pkeys[3] = {"attn_pdrop", "resid_pdrop", "embd_pdrop"};
    double *pvals[3] = {&cfg->attn_pdrop, &cfg->resid_pdrop, &cfg->embd_pdrop};
    for (int i = 0; i < 3; i++) {
        json_t *pv = json_object_get(root, pkeys[i]);
        if (!pv) continue;
        double pd = json_is_number(pv) ? json_number_value(pv) : -1.0;
        if (!(pd >= 0.0 && pd <= 1.0)) {
            st = cfg_err(err, path, "\"%s\" must be a number in [0, 1]", pkeys[i]);
            goto done;
        }
        *pvals[i] = json_number_value(pv);
    }
    json_t *eos = json_object_get(root, "eos_token_id");
    if (eos && json_is_integer(eos)) cfg->eos_token_id = json_integer_value(eos);
    else if (eos) cfg->eos_token_id = -1; /* null or a list: no single stop id */
    json_t *act = json_object_get(root, "activation_function");
    if (act) {
        const char *a = json_is_string(act) ? json_string_value(act) : "";
        if (strcmp(a, "gelu_new") == 0 || strcmp(a, "gelu_pytorch_tanh") == 0 ||
            strcmp(a, "gelu_fast") == 0)
            cfg->activation = SDICT_GPT2_GELU_NEW;
        else if (strcmp(a, "gelu") == 0) cfg->activation = SDICT_GPT2_GELU;
        else if (strcmp(a, "relu") == 0) cfg->activation = SDICT_GPT2_RELU;
        else {
            st = cfg_err(err, path, "activation_function \"%s\" is not supported (gelu_new, "
                         "gelu_pytorch_tanh, gelu_fast, gelu, relu are)", a);
            goto done;
        }
    }
    bool cross = false;
    if ((st = get_bool(root, "add_cross_attention", &cross, path, err))) goto done;
    if (cross) {
        st = cfg_err(err, path, "%s", "add_cross_attention=true is not supported");
        goto done;
    }
    if (cfg->n_embd % cfg->n_head != 0) {
        st = cfg_err(err, path, "%s", "n_embd must be divisible by n_head");
        goto done;
    }
done:
    json_decref(root);
    return st;
}

/*==================================================================================================
 MARK: Construction
==================================================================================================*/

static sdict_status no_forward(sdict_module *m, const sdict_act *x, sdict_act *y,
                               sdict_error *err) {
    (void)x;
    memset(y, 0, sizeof *y);
    return sdict_nn__err(err, SDICT_E_INVALID_ARG, "%s: run the GPT-2 model through its root "
                         "(sdict_gpt2_forward)", m->type_name);
}

static sdict_status root_forward(sdict_module *m, const sdict_act *x, sdict_act *y,
                                 sdict_error *err) {
    return sdict_gpt2_forward(m->user, x, y, err);
}

static bool add(sdict_module *parent, const char *name, sdict_module *child) {
    return child && sdict_module_add(parent, name, child, NULL) == SDICT_OK;
}

static float *wptr(sdict_module *root, const char *key) {
    sdict_named_tensor *nt = sdict_module_tensor(root, key);
    return nt ? (float *)sdict_storage_data(nt->value.storage) : NULL;
}

static bool resolve(sdict_gpt2 *g) {
    char key[128];
    g->wte = wptr(g->root, "transformer.wte.weight");
    g->wpe = wptr(g->root, "transformer.wpe.weight");
    g->lnf_w = wptr(g->root, "transformer.ln_f.weight");
    g->lnf_b = wptr(g->root, "transformer.ln_f.bias");
    g->lm_head = wptr(g->root, "lm_head.weight");
    for (int64_t l = 0; l < g->cfg.n_layer; l++) {
        layer_w *L = &g->layers[l];
#define W(field, name) \
    snprintf(key, sizeof key, "transformer.h.%lld." name, (long long)l); \
    if (!(L->field = wptr(g->root, key))) return false;
        W(ln1_w, "ln_1.weight") W(ln1_b, "ln_1.bias")
        W(attn_w, "attn.c_attn.weight") W(attn_b, "attn.c_attn.bias")
        W(proj_w, "attn.c_proj.weight") W(proj_b, "attn.c_proj.bias")
        W(ln2_w, "ln_2.weight") W(ln2_b, "ln_2.bias")
        W(fc_w, "mlp.c_fc.weight") W(fc_b, "mlp.c_fc.bias")
        W(fcproj_w, "mlp.c_proj.weight") W(fcproj_b, "mlp.c_proj.bias")
#undef W
    }
    return g->wte && g->wpe && g->lnf_w && g->lnf_b && g->lm_head;
}

static int64_t inner_dim(const sdict_gpt2_config *c) {
    return c->n_inner > 0 ? c->n_inner : 4 * c->n_embd;
}

/* Parameters of GPT2LMHeadModel(cfg) with lm_head counted apart (tied or not), in double so
   absurd sizes cannot overflow. */
static double n_params(const sdict_gpt2_config *c) {
    double E = (double)c->n_embd, NI = (double)inner_dim(c);
    return 2.0 * (double)c->vocab_size * E + (double)c->n_positions * E + 2.0 * E +
           (double)c->n_layer * (4.0 * E + 4.0 * E * E + 4.0 * E + 2.0 * E * NI + NI + E);
}

static sdict_status check_config(const sdict_gpt2_config *c, sdict_error *err) {
    const char *names[5] = {"vocab_size", "n_positions", "n_embd", "n_layer", "n_head"};
    int64_t vals[5] = {c->vocab_size, c->n_positions, c->n_embd, c->n_layer, c->n_head};
    int64_t maxs[5] = {INT32_MAX, INT32_MAX, INT32_MAX / 4, SDICT_GPT2_MAX_LAYERS, INT32_MAX};
    for (int i = 0; i < 5; i++)
        if (vals[i] <= 0 || vals[i] > maxs[i])
            return sdict_nn__err(err, SDICT_E_INVALID_ARG, "GPT-2: %s %lld is outside 1..%lld",
                                 names[i], (long long)vals[i], (long long)maxs[i]);
    if (c->n_embd % c->n_head != 0)
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "GPT-2: n_embd %lld is not divisible by "
                             "n_head %lld", (long long)c->n_embd, (long long)c->n_head);
    if (c->n_inner < 0 || inner_dim(c) > INT32_MAX)
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "GPT-2: n_inner %lld is outside 0..%d",
                             (long long)c->n_inner, INT32_MAX);
    if (!(c->layer_norm_epsilon >= 0.0) || (unsigned)c->activation > SDICT_GPT2_RELU)
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "GPT-2: layer_norm_epsilon must be >= 0 "
                             "and activation one of sdict_gpt2_act");
    if (n_params(c) > (double)SDICT_GPT2_MAX_PARAMS)
        return sdict_nn__err(err, SDICT_E_LIMIT, "GPT-2: the config describes %.0f parameters, "
                             "more than the limit of %lld", n_params(c),
                             (long long)SDICT_GPT2_MAX_PARAMS);
    return SDICT_OK;
}

sdict_status sdict_gpt2_new(const sdict_gpt2_config *cfg, sdict_gpt2 **out, sdict_error *err) {
    *out = NULL;
    if (!cfg) return sdict_nn__err(err, SDICT_E_INVALID_ARG, "GPT-2: no config");
    sdict_status cst = check_config(cfg, err);
    if (cst != SDICT_OK) return cst;
    sdict_gpt2 *g = calloc(1, sizeof *g);
    if (!g) return sdict_nn__err(err, SDICT_E_NOMEM, "GPT-2: out of memory");
    g->cfg = *cfg;
    g->tied = cfg->tie_word_embeddings;
    int64_t E = cfg->n_embd, NI = inner_dim(cfg);
    g->layers = calloc((size_t)cfg->n_layer, sizeof *g->layers);
    /* Each child is added to its parent as soon as it exists (the parent owns it from then on,
       and sdict_module_add frees it on failure), in torch's registration order, so a failure
       anywhere leaves one tree to free. */
    sdict_module *root = g->root = sdict_module_new("GPT2LMHeadModel", root_forward, g);
    sdict_module *tr = root ? sdict_module_new("GPT2Model", no_forward, NULL) : NULL;
    bool ok = g->layers && root && add(root, "transformer", tr);
    ok = ok && add(tr, "wte", sdict_embedding_new(cfg->vocab_size, E)) &&
         add(tr, "wpe", sdict_embedding_new(cfg->n_positions, E));
    sdict_module *h = ok ? sdict_module_new("ModuleList", no_forward, NULL) : NULL;
    ok = ok && add(tr, "h", h);
    for (int64_t l = 0; ok && l < cfg->n_layer; l++) {
        char name[24];
        snprintf(name, sizeof name, "%lld", (long long)l);
        sdict_module *blk = sdict_module_new("GPT2Block", no_forward, NULL);
        if (!(ok = add(h, name, blk))) break;
        sdict_module *attn = sdict_module_new("GPT2Attention", no_forward, NULL);
        ok = add(blk, "ln_1", sdict_layernorm_new(1, &E, cfg->layer_norm_epsilon, true, true)) &&
             add(blk, "attn", attn);
        ok = ok &&
             add(blk, "ln_2", sdict_layernorm_new(1, &E, cfg->layer_norm_epsilon, true, true));
        sdict_module *mlp = ok ? sdict_module_new("GPT2MLP", no_forward, NULL) : NULL;
        ok = ok && add(blk, "mlp", mlp) && add(attn, "c_attn", sdict_hf_conv1d_new(3 * E, E)) &&
             add(attn, "c_proj", sdict_hf_conv1d_new(E, E)) &&
             add(mlp, "c_fc", sdict_hf_conv1d_new(NI, E)) &&
             add(mlp, "c_proj", sdict_hf_conv1d_new(E, NI));
    }
    ok = ok && add(tr, "ln_f", sdict_layernorm_new(1, &E, cfg->layer_norm_epsilon, true, true)) &&
         add(root, "lm_head", sdict_linear_new(E, cfg->vocab_size, false)) && resolve(g);
    if (!ok) {
        sdict_gpt2_free(g);
        return sdict_nn__err(err, SDICT_E_NOMEM, "GPT-2: out of memory building the model");
    }
    /* transformers' _init_weights in distribution (our generator, not torch's draws): wte, wpe
       and lm_head N(0, 0.02) (Conv1D weights are already), each block's attn.c_proj and
       mlp.c_proj weights N(0, 0.02 / sqrt(2 n_layer)); biases 0, LayerNorm 1 and 0 */
    uint64_t rng = 0x6A7E2ULL;
    float *emb[3] = {(float *)g->wte, (float *)g->wpe, g->lm_head};
    int64_t rows[3] = {cfg->vocab_size, cfg->n_positions, cfg->vocab_size};
    for (int k = 0; k < 3; k++)
        for (int64_t i = 0; i < rows[k] * E; i++) {
            double u1 = sdict_nn__rng_uniform(&rng) + 1.0 / 33554432.0,
                   u2 = sdict_nn__rng_uniform(&rng);
            emb[k][i] = (float)(0.02 * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
        }
    float shrink = (float)(1.0 / sqrt(2.0 * (double)cfg->n_layer));
    for (int64_t l = 0; l < cfg->n_layer; l++) {
        float *pw = (float *)g->layers[l].proj_w, *fw = (float *)g->layers[l].fcproj_w;
        for (int64_t i = 0; i < E * E; i++) pw[i] *= shrink;
        for (int64_t i = 0; i < NI * E; i++) fw[i] *= shrink;
    }
    if (g->tied) /* lm_head.weight is wte.weight, as after transformers' tie_weights */
        memcpy(g->lm_head, g->wte, sizeof(float) * (size_t)(cfg->vocab_size * E));
    sdict_module_eval(root);
    *out = g;
    return SDICT_OK;
}

void sdict_gpt2_free(sdict_gpt2 *g) {
    if (!g) return;
    sdict_module_free(g->root);
    free(g->layers);
    free(g);
}

sdict_module *sdict_gpt2_module(sdict_gpt2 *g) { return g ? g->root : NULL; }
const sdict_gpt2_config *sdict_gpt2_get_config(const sdict_gpt2 *g) { return &g->cfg; }
bool sdict_gpt2_is_tied(const sdict_gpt2 *g) { return g->tied; }

/*==================================================================================================
 MARK: Loading
==================================================================================================*/

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* The buffers older transformers saved and 5.12 ignores (_keys_to_ignore_on_load_unexpected;
   masked_bias went the same way). */
static bool ignorable(const char *key) {
    return ends_with(key, ".attn.bias") || ends_with(key, ".attn.masked_bias");
}

sdict_status sdict_gpt2_load_state_dict(sdict_gpt2 *g, const sdict_value *sd, sdict_error *err) {
    if (!g || sdict_value_kind(sd) != SDICT_KIND_DICT)
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "GPT-2: the state_dict is not a dict");
    /* GPT2Model files (the hub's "gpt2" itself) have no "transformer." prefix: transformers
       loads them through base_model_prefix; so do we, into the transformer child. */
    bool bare = !sdict_dict_get(sd, "transformer.wte.weight") && sdict_dict_get(sd, "wte.weight");
    sdict_module *target = bare ? sdict_module_child(g->root, "transformer") : g->root;
    sdict_load_result res = {0};
    size_t V = (size_t)g->cfg.vocab_size, E = (size_t)g->cfg.n_embd;
    sdict_status st = sdict_module_load_state_dict(target, sd, false, &res, err);
    if (st != SDICT_OK) {
        if (res.message) sdict_nn__err(err, st, "%s", res.message);
        sdict_load_result_free(&res);
        return st;
    }
    bool head_in_file = !bare && sdict_dict_get(sd, "lm_head.weight") != NULL;
    for (size_t i = 0; i < res.n_missing; i++) {
        if (strcmp(res.missing[i], "lm_head.weight") == 0) continue;
        st = sdict_nn__err(err, SDICT_E_NOT_FOUND, "GPT-2: missing key %s%s (and %zu more "
                           "missing)", bare ? "transformer." : "", res.missing[i],
                           res.n_missing - i - 1);
        goto done;
    }
    for (size_t i = 0; i < res.n_unexpected; i++) {
        if (ignorable(res.unexpected[i])) continue;
        st = sdict_nn__err(err, SDICT_E_NOT_FOUND, "GPT-2: unexpected key %s in the state_dict "
                           "(not a GPT2LMHeadModel key)", res.unexpected[i]);
        goto done;
    }
    if (g->cfg.tie_word_embeddings) {
        /* transformers 5.12 ties lm_head to wte unless the file holds both with different
           values: then it warns and keeps them apart (checked against from_pretrained). */
        g->tied = !head_in_file || memcmp(g->lm_head, g->wte, sizeof(float) * V * E) == 0;
        if (g->tied) memcpy(g->lm_head, g->wte, sizeof(float) * V * E);
    } else if (!head_in_file) {
        st = sdict_nn__err(err, SDICT_E_NOT_FOUND, "GPT-2: missing key lm_head.weight "
                           "(tie_word_embeddings is false)");
    }
done:
    sdict_load_result_free(&res);
    return st;
}

typedef struct { const sdict_storage *s; size_t item; } storage_use;

static int by_storage(const void *a, const void *b) {
    const storage_use *x = a, *y = b;
    if (x->s != y->s) return (uintptr_t)x->s < (uintptr_t)y->s ? -1 : 1;
    return x->item < y->item ? -1 : x->item > y->item;
}

/* Elements the state_dict's storages really hold: each distinct storage once, in units of the
   smallest dtype viewing it. Not the views' numel, which expanded (stride 0) or repeated views
   of one small storage could inflate without bound. */
static sdict_status stored_elements(const sdict_value *sd, double *have, sdict_error *err) {
    size_t n = sdict_dict_len(sd), k = 0;
    *have = 0.0;
    storage_use *u = malloc(sizeof *u * (n ? n : 1));
    if (!u) return sdict_nn__err(err, SDICT_E_NOMEM, "GPT-2: out of memory");
    for (size_t i = 0; i < n; i++) {
        const sdict_tensor *t = sdict_value_tensor(sdict_dict_val(sd, i));
        if (t && t->storage && sdict_dtype_size(t->dtype) > 0)
            u[k++] = (storage_use){t->storage, sdict_dtype_size(t->dtype)};
    }
    qsort(u, k, sizeof *u, by_storage);
    for (size_t i = 0; i < k; i++)
        if (i == 0 || u[i].s != u[i - 1].s) /* sorted: the first is the smallest item */
            *have += (double)(sdict_storage_nbytes(u[i].s) / u[i].item);
    free(u);
    return SDICT_OK;
}

sdict_status sdict_gpt2_from_pretrained(const char *dir, sdict_gpt2 **out, sdict_error *err) {
    *out = NULL;
    size_t n = strlen(dir);
    char *path = malloc(n + 16);
    if (!path) return sdict_nn__err(err, SDICT_E_NOMEM, "GPT-2: out of memory");
    snprintf(path, n + 16, "%s/config.json", dir);
    sdict_gpt2_config cfg;
    sdict_status st = sdict_gpt2_config_from_json(path, &cfg, err);
    free(path);
    if (st != SDICT_OK) return st;
    sdict_doc *doc = NULL;
    sdict_gpt2 *g = NULL;
    if ((st = sdict_load(dir, NULL, &doc, err)) != SDICT_OK) return st;
    /* The model is sized by config.json: refuse one that describes more parameters than the
       weights hold before allocating it, so a small folder cannot ask for terabytes. */
    const sdict_value *sd = sdict_doc_root(doc);
    double have = 0.0, E = (double)cfg.n_embd;
    if ((st = stored_elements(sd, &have, err)) != SDICT_OK) {
        sdict_doc_free(doc);
        return st;
    }
    /* lm_head may be absent (tied): count it once. The slack (twice the stored elements plus
       2^20) leaves a near miss, such as one missing or mis-shaped key, to the load's own more
       precise message, and still bounds the model by the files. */
    double need = n_params(&cfg) - (double)cfg.vocab_size * E;
    if (need > 2.0 * have + 1048576.0) {
        sdict_doc_free(doc);
        return sdict_nn__err(err, SDICT_E_SHAPE, "%s: config.json describes a model of %.0f "
                             "parameters but the weights hold %.0f elements", dir, need, have);
    }
    if ((st = sdict_gpt2_new(&cfg, &g, err)) != SDICT_OK ||
        (st = sdict_gpt2_load_state_dict(g, sdict_doc_root(doc), err)) != SDICT_OK) {
        sdict_gpt2_free(g);
        sdict_doc_free(doc);
        return st;
    }
    sdict_doc_free(doc);
    *out = g;
    return SDICT_OK;
}

/*==================================================================================================
 MARK: KV cache
==================================================================================================*/

sdict_status sdict_gpt2_cache_new(const sdict_gpt2 *g, int64_t batch, int64_t max_len,
                                  sdict_gpt2_cache **out, sdict_error *err) {
    *out = NULL;
    const sdict_gpt2_config *c = &g->cfg;
    if (batch <= 0 || max_len <= 0 || max_len > c->n_positions || batch > INT32_MAX)
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "GPT-2 cache: batch %lld and max_len "
                             "%lld must be positive, max_len at most n_positions (%lld)",
                             (long long)batch, (long long)max_len, (long long)c->n_positions);
    double n = (double)c->n_layer * (double)batch * (double)max_len * (double)c->n_embd;
    if (n * 2 * sizeof(float) > (double)SDICT_GPT2_MAX_TRAIN_BYTES)
        return sdict_nn__err(err, SDICT_E_LIMIT, "GPT-2 cache: batch %lld x %lld positions need "
                             "%.0f bytes of keys and values, more than the limit of %lld",
                             (long long)batch, (long long)max_len, n * 2 * sizeof(float),
                             (long long)SDICT_GPT2_MAX_TRAIN_BYTES);
    sdict_gpt2_cache *kv = calloc(1, sizeof *kv);
    if (kv) {
        kv->k = malloc(sizeof(float) * (size_t)n);
        kv->v = malloc(sizeof(float) * (size_t)n);
    }
    if (!kv || !kv->k || !kv->v) {
        sdict_gpt2_cache_free(kv);
        return sdict_nn__err(err, SDICT_E_NOMEM, "GPT-2 cache: out of memory");
    }
    kv->n_layer = c->n_layer;
    kv->batch = batch;
    kv->n_head = c->n_head;
    kv->head_dim = c->n_embd / c->n_head;
    kv->max_len = max_len;
    *out = kv;
    return SDICT_OK;
}

void sdict_gpt2_cache_free(sdict_gpt2_cache *c) {
    if (!c) return;
    free(c->k);
    free(c->v);
    free(c);
}

int64_t sdict_gpt2_cache_len(const sdict_gpt2_cache *c) { return c->len; }
void sdict_gpt2_cache_reset(sdict_gpt2_cache *c) { c->len = 0; }

/*==================================================================================================
 MARK: Forward
==================================================================================================*/

static void mm(const float *A, const float *B, float *C, int64_t M, int64_t N, int64_t K,
               float beta) { /* C[M, N] = A[M, K] . B[K, N] + beta C */
    if (M == 1) { /* one position (generation): a matrix-vector product, C = B^T . A */
        cblas_sgemv(CblasRowMajor, CblasTrans, (int)K, (int)N, 1.0f, B, (int)N, A, 1, beta, C, 1);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, (int)N, (int)K, 1.0f, A,
                (int)K, B, (int)N, beta, C, (int)N);
}

static void add_bias_rows(float *Y, const float *b, int64_t rows, int64_t n) {
    for (int64_t r = 0; r < rows; r++) memcpy(Y + r * n, b, sizeof(float) * (size_t)n);
}

/* Runs T new positions of every batch row through the model, appending their keys and values to
   kv, and writes logits [B, T, V] (or [B, 1, V] for the last position when last_only). */
static sdict_status run(sdict_gpt2 *g, sdict_gpt2_cache *kv, const int64_t *ids, int64_t B,
                        int64_t T, bool last_only, float *logits, sdict_error *err) {
    const sdict_gpt2_config *c = &g->cfg;
    int64_t E = c->n_embd, H = c->n_head, D = E / H, NI = inner_dim(c), V = c->vocab_size;
    int64_t P = kv->len, S = P + T, R = B * T, L = kv->max_len;
    if (kv->n_layer != c->n_layer || kv->n_head != H || kv->head_dim != D)
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "GPT-2: the cache was made for %lld layers "
                             "of %lld x %lld heads, not this model's %lld of %lld x %lld",
                             (long long)kv->n_layer, (long long)kv->n_head,
                             (long long)kv->head_dim, (long long)c->n_layer, (long long)H,
                             (long long)D);
    if (B != kv->batch)
        return sdict_nn__err(err, SDICT_E_SHAPE, "GPT-2: batch %lld does not match the cache's "
                             "%lld", (long long)B, (long long)kv->batch);
    if (S > kv->max_len)
        return sdict_nn__err(err, SDICT_E_LIMIT, "GPT-2: %lld positions exceed the cache's %lld "
                             "(n_positions %lld)", (long long)S, (long long)kv->max_len,
                             (long long)c->n_positions);
    for (int64_t i = 0; i < R; i++)
        if (ids[i] < 0 || ids[i] >= V)
            return sdict_nn__err(err, SDICT_E_INVALID_ARG, "GPT-2: token id %lld out of range "
                                 "[0, %lld)", (long long)ids[i], (long long)V);
    size_t rE = (size_t)(R * E);
    float *x = malloc(sizeof(float) * rE), *ln = malloc(sizeof(float) * rE);
    float *att = malloc(sizeof(float) * rE), *qkv = malloc(sizeof(float) * rE * 3);
    float *fc = malloc(sizeof(float) * (size_t)(R * NI)), *sc = malloc(sizeof(float) * (size_t)(T * S));
    if (!x || !ln || !att || !qkv || !fc || !sc) {
        free(x); free(ln); free(att); free(qkv); free(fc); free(sc);
        return sdict_nn__err(err, SDICT_E_NOMEM, "GPT-2: out of memory for activations");
    }
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            float *xr = x + (b * T + t) * E;
            const float *te = g->wte + ids[b * T + t] * E, *pe = g->wpe + (P + t) * E;
            for (int64_t i = 0; i < E; i++) xr[i] = te[i] + pe[i];
        }
    for (int64_t l = 0; l < c->n_layer; l++) {
        const layer_w *W = &g->layers[l];
        double scale = c->scale_attn_weights ? 1.0 / sqrt((double)D) : 1.0;
        if (c->scale_attn_by_inverse_layer_idx) scale /= (double)(l + 1);
        sdict_nn__layernorm_rows(x, ln, R, E, W->ln1_w, W->ln1_b, c->layer_norm_epsilon, NULL, NULL);
        add_bias_rows(qkv, W->attn_b, R, 3 * E);
        mm(ln, W->attn_w, qkv, R, 3 * E, E, 1.0f);
        for (int64_t b = 0; b < B; b++)
            for (int64_t h = 0; h < H; h++) {
                size_t base = (size_t)((((l * B) + b) * H + h) * L) * (size_t)D;
                float *K = kv->k + base, *Vc = kv->v + base;
                for (int64_t t = 0; t < T; t++) {
                    const float *row = qkv + (b * T + t) * 3 * E;
                    memcpy(K + (P + t) * D, row + E + h * D, sizeof(float) * (size_t)D);
                    memcpy(Vc + (P + t) * D, row + 2 * E + h * D, sizeof(float) * (size_t)D);
                }
                /* Q rows are strided 3E in qkv; position P + t sees 0..P + t */
                sdict_nn__sdpa_causal_forward(qkv + b * T * 3 * E + h * D, 3 * E, K, Vc, D, T, S,
                                              P, D, (float)scale, NULL, sc,
                                              att + b * T * E + h * D, E, NULL);
            }
        add_bias_rows(ln, W->proj_b, R, E);
        mm(att, W->proj_w, ln, R, E, E, 1.0f);
        for (size_t i = 0; i < rE; i++) x[i] += ln[i];
        sdict_nn__layernorm_rows(x, ln, R, E, W->ln2_w, W->ln2_b, c->layer_norm_epsilon, NULL, NULL);
        add_bias_rows(fc, W->fc_b, R, NI);
        mm(ln, W->fc_w, fc, R, NI, E, 1.0f);
        if (c->activation == SDICT_GPT2_RELU) {
            for (int64_t i = 0; i < R * NI; i++) fc[i] = fc[i] > 0.0f ? fc[i] : 0.0f;
        } else {
            sdict_nn__gelu(fc, R * NI, c->activation == SDICT_GPT2_GELU_NEW);
        }
        add_bias_rows(ln, W->fcproj_b, R, E);
        mm(fc, W->fcproj_w, ln, R, E, NI, 1.0f);
        for (size_t i = 0; i < rE; i++) x[i] += ln[i];
    }
    sdict_nn__layernorm_rows(x, ln, R, E, g->lnf_w, g->lnf_b, c->layer_norm_epsilon, NULL, NULL);
    /* logits = ln_f(x) . lm_head^T */
    if (last_only) {
        for (int64_t b = 0; b < B; b++)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)V, (int)E, 1.0f, g->lm_head, (int)E,
                        ln + (b * T + T - 1) * E, 1, 0.0f, logits + b * V, 1);
    } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)R, (int)V, (int)E, 1.0f, ln,
                    (int)E, g->lm_head, (int)E, 0.0f, logits, (int)V);
    }
    kv->len = S;
    free(x); free(ln); free(att); free(qkv); free(fc); free(sc);
    return SDICT_OK;
}

static sdict_status check_ids(const sdict_act *ids, sdict_error *err) {
    if (ids->dtype != SDICT_INT64 || ids->ndim != 2 || ids->shape[0] <= 0 || ids->shape[1] <= 0)
        return sdict_nn__err(err, SDICT_E_SHAPE, "GPT-2: input_ids must be int64 of rank 2, [batch, seq], "
                             "with batch and seq > 0 (a single sequence is [1, seq])");
    return SDICT_OK;
}

/* Logits plus the activations run() allocates, refused before any of them. */
static sdict_status check_forward_bytes(const sdict_gpt2 *g, int64_t B, int64_t T, bool last_only,
                                        sdict_error *err) {
    const sdict_gpt2_config *c = &g->cfg;
    /* logits plus the activations run() allocates, refused before any of them */
    double bytes = 4.0 * (double)B * (double)T *
                   ((last_only ? 0.0 : (double)c->vocab_size) + 6.0 * (double)c->n_embd +
                    (double)inner_dim(c) + (double)c->n_positions);
    if (bytes > (double)SDICT_GPT2_MAX_TRAIN_BYTES)
        return sdict_nn__err(err, SDICT_E_LIMIT, "GPT-2: a forward over batch %lld x %lld tokens "
                             "needs about %.0f bytes of logits and activations, more than the "
                             "limit of %lld", (long long)B, (long long)T, bytes,
                             (long long)SDICT_GPT2_MAX_TRAIN_BYTES);
    return SDICT_OK;
}

sdict_status sdict_gpt2_forward_cached(sdict_gpt2 *g, sdict_gpt2_cache *kv, const sdict_act *ids,
                                       bool last_only, sdict_act *logits, sdict_error *err) {
    memset(logits, 0, sizeof *logits);
    sdict_status st = check_ids(ids, err);
    if (st != SDICT_OK) return st;
    int64_t B = ids->shape[0], T = ids->shape[1];
    if ((st = check_forward_bytes(g, B, T, last_only, err)) != SDICT_OK) return st;
    int64_t shape[3] = {B, last_only ? 1 : T, g->cfg.vocab_size};
    if ((st = sdict_act_init(logits, SDICT_FLOAT32, 3, shape, err)) != SDICT_OK) return st;
    if ((st = run(g, kv, ids->data, B, T, last_only, logits->data, err)) != SDICT_OK)
        sdict_act_free(logits);
    return st;
}

sdict_status sdict_gpt2_forward(sdict_gpt2 *g, const sdict_act *ids, sdict_act *logits,
                                sdict_error *err) {
    memset(logits, 0, sizeof *logits);
    sdict_status st = check_ids(ids, err);
    if (st != SDICT_OK) return st;
    if (ids->shape[1] > g->cfg.n_positions)
        return sdict_nn__err(err, SDICT_E_LIMIT, "GPT-2: %lld tokens exceed n_positions %lld",
                             (long long)ids->shape[1], (long long)g->cfg.n_positions);
    if ((st = check_forward_bytes(g, ids->shape[0], ids->shape[1], false, err)) != SDICT_OK)
        return st;
    sdict_gpt2_cache *kv = NULL;
    if ((st = sdict_gpt2_cache_new(g, ids->shape[0], ids->shape[1], &kv, err)) != SDICT_OK)
        return st;
    st = sdict_gpt2_forward_cached(g, kv, ids, false, logits, err);
    sdict_gpt2_cache_free(kv);
    return st;
}

/*==================================================================================================
 MARK: Generation
==================================================================================================*/

typedef struct { float v; int64_t i; } scored;

static int by_score_desc(const void *a, const void *b) {
    const scored *x = a, *y = b;
    bool xn = isnan(x->v), yn = isnan(y->v); /* NaN first, as torch.topk: a total order */
    if (xn != yn) return xn ? -1 : 1;
    if (!xn && x->v != y->v) return x->v > y->v ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

/* argmax (first of equal maxima, as torch.argmax) or a top-k draw from softmax(logits). */
static int64_t pick(const float *lg, int64_t V, int64_t top_k, uint64_t *rng, scored *tmp) {
    if (top_k <= 0) {
        int64_t best = 0;
        for (int64_t i = 1; i < V; i++)
            if (lg[i] > lg[best]) best = i;
        return best;
    }
    int64_t k = top_k < V ? top_k : V;
    for (int64_t i = 0; i < V; i++) tmp[i] = (scored){lg[i], i};
    qsort(tmp, (size_t)V, sizeof *tmp, by_score_desc);
    double sum = 0.0;
    for (int64_t i = 0; i < k; i++) sum += exp((double)tmp[i].v - tmp[0].v);
    double u = (double)(sdict_nn__rng_next(rng) >> 11) / 9007199254740992.0 * sum, acc = 0.0;
    for (int64_t i = 0; i < k; i++) {
        acc += exp((double)tmp[i].v - tmp[0].v);
        if (u < acc) return tmp[i].i;
    }
    return tmp[k - 1].i;
}

sdict_status sdict_gpt2_generate(sdict_gpt2 *g, const int64_t *prompt, int64_t n_prompt,
                                 int64_t max_new_tokens, int64_t top_k, uint64_t seed,
                                 int64_t *out, int64_t *n_out, sdict_error *err) {
    *n_out = 0;
    if (!prompt || n_prompt <= 0 || max_new_tokens < 0 || !out)
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "GPT-2 generate: an empty prompt or a "
                             "negative max_new_tokens");
    if (n_prompt > g->cfg.n_positions || max_new_tokens > g->cfg.n_positions - n_prompt)
        return sdict_nn__err(err, SDICT_E_LIMIT, "GPT-2 generate: %lld prompt + %lld new tokens "
                             "exceed n_positions %lld", (long long)n_prompt,
                             (long long)max_new_tokens, (long long)g->cfg.n_positions);
    int64_t total = n_prompt + max_new_tokens;
    memcpy(out, prompt, sizeof(int64_t) * (size_t)n_prompt);
    *n_out = n_prompt;
    if (max_new_tokens == 0) return SDICT_OK;
    int64_t V = g->cfg.vocab_size;
    sdict_gpt2_cache *kv = NULL;
    sdict_status st = sdict_gpt2_cache_new(g, 1, total, &kv, err);
    if (st != SDICT_OK) return st;
    float *lg = malloc(sizeof(float) * (size_t)V);
    scored *tmp = top_k > 0 ? malloc(sizeof(scored) * (size_t)V) : NULL;
    if (!lg || (top_k > 0 && !tmp)) {
        st = sdict_nn__err(err, SDICT_E_NOMEM, "GPT-2 generate: out of memory");
        goto done;
    }
    uint64_t rng = seed;
    int64_t pos = 0, step = n_prompt;
    while (*n_out < total) {
        if ((st = run(g, kv, out + pos, 1, step, true, lg, err)) != SDICT_OK) goto done;
        int64_t next = pick(lg, V, top_k, &rng, tmp);
        out[(*n_out)++] = next;
        if (next == g->cfg.eos_token_id) break; /* generate()'s stop on eos_token_id */
        pos = *n_out - 1;
        step = 1;
    }
done:
    free(lg);
    free(tmp);
    sdict_gpt2_cache_free(kv);
    return st;
}

/*==================================================================================================
 MARK: Training
 GPT2LMHeadModel(input_ids, labels=labels).loss followed by loss.backward(). The LayerNorm and
 Conv1D modules of the tree run their own forward (caching what their backward needs) and
 backward (accumulating into their parameters' grad); the attention is the causal eager path
 with sdict_nn__sdpa_backward, and the tied lm_head's gradient goes to wte, as autograd sums
 both uses of the one Parameter.
==================================================================================================*/

void sdict_gpt2_tie_weights(sdict_gpt2 *g) {
    if (g && g->tied)
        memcpy(g->lm_head, g->wte, sizeof(float) * (size_t)(g->cfg.vocab_size * g->cfg.n_embd));
}

typedef struct train_layer {
    sdict_module *ln1, *c_attn, *c_proj, *ln2, *c_fc, *mlp_proj;
    sdict_act qkv, fpre;             /* c_attn's output; c_fc's output before the activation */
    float *P, *M;                    /* softmax [B, H, T, T]; attn dropout multipliers or NULL */
    float *Mr1, *Mr2;                /* resid dropout multipliers after attn / mlp, or NULL */
} train_layer;

/* Dropout multipliers (0 with probability p, else 1 / (1 - p)), or NULL when p is 0 or not
   training; *fail set when the allocation fails. */
static float *dropout_mask(double p, int64_t n, uint64_t *rng, bool *fail) {
    if (!(p > 0.0)) return NULL;
    float *m = malloc(sizeof(float) * (size_t)n);
    if (!m) {
        *fail = true;
        return NULL;
    }
    float keep = p >= 1.0 ? 0.0f : (float)(1.0 / (1.0 - p));
    for (int64_t i = 0; i < n; i++) m[i] = sdict_nn__rng_uniform(rng) < p ? 0.0f : keep;
    return m;
}

static void mul_mask(float *x, const float *m, int64_t n) {
    if (m)
        for (int64_t i = 0; i < n; i++) x[i] *= m[i];
}

static sdict_module *sub(sdict_module *root, int64_t l, const char *name) {
    char path[96];
    snprintf(path, sizeof path, "transformer.h.%lld.%s", (long long)l, name);
    return sdict_module_find(root, path);
}

static void clear_caches(sdict_module *m) {
    if (m)
        for (int i = 0; i < SDICT_MODULE_CACHE; i++) sdict_act_free(&m->cache[i]);
}

double sdict_gpt2_train_bytes(const sdict_gpt2 *g, int64_t batch, int64_t seq) {
    const sdict_gpt2_config *c = &g->cfg;
    double per_layer = 8.0 * (double)c->n_embd + 2.0 * (double)inner_dim(c) +
                       2.0 * (double)c->n_head * (double)seq;
    return 4.0 * (double)batch * (double)seq *
           ((double)c->n_layer * per_layer + 3.0 * (double)c->vocab_size);
}

sdict_status sdict_gpt2_forward_backward(sdict_gpt2 *g, const sdict_act *ids,
                                         const sdict_act *labels, uint64_t seed, float *loss,
                                         sdict_error *err) {
    *loss = NAN;
    sdict_status st = check_ids(ids, err);
    if (st != SDICT_OK) return st;
    const sdict_gpt2_config *c = &g->cfg;
    int64_t B = ids->shape[0], T = ids->shape[1], E = c->n_embd, H = c->n_head, D = E / H;
    int64_t NI = inner_dim(c), V = c->vocab_size, R = B * T, NL = c->n_layer;
    if (T > c->n_positions)
        return sdict_nn__err(err, SDICT_E_LIMIT, "GPT-2: %lld tokens exceed n_positions %lld",
                             (long long)T, (long long)c->n_positions);
    if (sdict_gpt2_train_bytes(g, B, T) > (double)SDICT_GPT2_MAX_TRAIN_BYTES)
        return sdict_nn__err(err, SDICT_E_LIMIT, "GPT-2: a training step on batch %lld x %lld "
                             "tokens needs about %.0f bytes of activations, more than the limit "
                             "of %lld", (long long)B, (long long)T, sdict_gpt2_train_bytes(g, B, T),
                             (long long)SDICT_GPT2_MAX_TRAIN_BYTES);
    if (labels && (labels->dtype != SDICT_INT64 || labels->ndim != 2 ||
                   labels->shape[0] != B || labels->shape[1] != T))
        return sdict_nn__err(err, SDICT_E_SHAPE, "GPT-2: labels must be int64 [%lld, %lld] like "
                             "input_ids", (long long)B, (long long)T);
    const int64_t *ID = ids->data, *Lb = labels ? labels->data : ids->data;
    for (int64_t i = 0; i < R; i++)
        if (ID[i] < 0 || ID[i] >= V)
            return sdict_nn__err(err, SDICT_E_INVALID_ARG, "GPT-2: token id %lld out of range "
                                 "[0, %lld)", (long long)ID[i], (long long)V);
    bool training = g->root->training, oom = false;
    uint64_t rng = seed;
    sdict_gpt2_tie_weights(g);
    /* the tree's modules cache their inputs only in training mode: backward needs them even
       after eval() (as autograd does), so run them in training mode and restore the flag */
    sdict_module_train(g->root, true);
    train_layer *TL = calloc((size_t)NL, sizeof *TL);
    int64_t sh3[3] = {B, T, E}, rs[1] = {R};
    sdict_act x = {0}, hf = {0}, logits = {0}, tgt = {0}, dlogits = {0}, dx = {0};
    float *Me = NULL, *scratch = malloc(sizeof(float) * (size_t)(2 * T * T));
    sdict_module *lnf = sdict_module_find(g->root, "transformer.ln_f");
    if (!TL || !scratch) {
        st = sdict_nn__err(err, SDICT_E_NOMEM, "GPT-2: out of memory for training");
        goto done;
    }
    if ((st = sdict_act_init(&x, SDICT_FLOAT32, 3, sh3, err)) != SDICT_OK) goto done;
    float *X = x.data;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            const float *te = g->wte + ID[b * T + t] * E, *pe = g->wpe + t * E;
            for (int64_t i = 0; i < E; i++) X[(b * T + t) * E + i] = te[i] + pe[i];
        }
    if (training) Me = dropout_mask(c->embd_pdrop, R * E, &rng, &oom);
    mul_mask(X, Me, R * E);

    /* ---- forward, keeping what backward needs */
    for (int64_t l = 0; l < NL && st == SDICT_OK && !oom; l++) {
        train_layer *L = &TL[l];
        L->ln1 = sub(g->root, l, "ln_1");
        L->c_attn = sub(g->root, l, "attn.c_attn");
        L->c_proj = sub(g->root, l, "attn.c_proj");
        L->ln2 = sub(g->root, l, "ln_2");
        L->c_fc = sub(g->root, l, "mlp.c_fc");
        L->mlp_proj = sub(g->root, l, "mlp.c_proj");
        double scale = c->scale_attn_weights ? 1.0 / sqrt((double)D) : 1.0;
        if (c->scale_attn_by_inverse_layer_idx) scale /= (double)(l + 1);
        sdict_act a = {0}, att = {0}, y = {0};
        if ((st = sdict_module_forward(L->ln1, &x, &a, err)) != SDICT_OK) break;
        st = sdict_module_forward(L->c_attn, &a, &L->qkv, err);
        sdict_act_free(&a);
        if (st != SDICT_OK) break;
        L->P = malloc(sizeof(float) * (size_t)(B * H * T * T));
        if (!L->P || (st = sdict_act_init(&att, SDICT_FLOAT32, 3, sh3, err)) != SDICT_OK) {
            oom = !L->P;
            break;
        }
        if (training) L->M = dropout_mask(c->attn_pdrop, B * H * T * T, &rng, &oom);
        const float *QKV = L->qkv.data;
        for (int64_t b = 0; b < B && !oom; b++)
            for (int64_t h = 0; h < H; h++) {
                const float *Q = QKV + b * T * 3 * E + h * D;
                sdict_nn__sdpa_causal_forward(Q, 3 * E, Q + E, Q + 2 * E, 3 * E, T, T, 0, D,
                                              (float)scale,
                                              L->M ? L->M + (b * H + h) * T * T : NULL,
                                              L->P + (b * H + h) * T * T,
                                              (float *)att.data + b * T * E + h * D, E, scratch);
            }
        if (!oom) st = sdict_module_forward(L->c_proj, &att, &y, err);
        sdict_act_free(&att);
        if (oom || st != SDICT_OK) break;
        if (training) L->Mr1 = dropout_mask(c->resid_pdrop, R * E, &rng, &oom);
        mul_mask(y.data, L->Mr1, R * E);
        for (int64_t i = 0; i < R * E; i++) X[i] += ((float *)y.data)[i];
        sdict_act_free(&y);
        if ((st = sdict_module_forward(L->ln2, &x, &a, err)) != SDICT_OK) break;
        st = sdict_module_forward(L->c_fc, &a, &L->fpre, err);
        sdict_act_free(&a);
        if (st != SDICT_OK || (st = sdict_act_copy(&a, &L->fpre, err)) != SDICT_OK) break;
        float *F = a.data;
        if (c->activation == SDICT_GPT2_RELU) {
            for (int64_t i = 0; i < R * NI; i++) F[i] = F[i] > 0.0f ? F[i] : 0.0f;
        } else {
            sdict_nn__gelu(F, R * NI, c->activation == SDICT_GPT2_GELU_NEW);
        }
        st = sdict_module_forward(L->mlp_proj, &a, &y, err);
        sdict_act_free(&a);
        if (st != SDICT_OK) break;
        if (training) L->Mr2 = dropout_mask(c->resid_pdrop, R * E, &rng, &oom);
        mul_mask(y.data, L->Mr2, R * E);
        for (int64_t i = 0; i < R * E; i++) X[i] += ((float *)y.data)[i];
        sdict_act_free(&y);
    }
    if (oom) st = sdict_nn__err(err, SDICT_E_NOMEM, "GPT-2: out of memory for training");
    if (st != SDICT_OK) goto done;
    if ((st = sdict_module_forward(lnf, &x, &hf, err)) != SDICT_OK) goto done;
    int64_t ls[2] = {R, V};
    if ((st = sdict_act_init(&logits, SDICT_FLOAT32, 2, ls, err)) != SDICT_OK ||
        (st = sdict_act_init(&tgt, SDICT_INT64, 1, rs, err)) != SDICT_OK)
        goto done;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)R, (int)V, (int)E, 1.0f, hf.data,
                (int)E, g->lm_head, (int)E, 0.0f, logits.data, (int)V);
    /* transformers' ForCausalLMLoss: position t predicts labels[t + 1]; the last predicts
       nothing (labels padded with -100 before the shift) */
    int64_t *TG = tgt.data;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) TG[b * T + t] = t + 1 < T ? Lb[b * T + t + 1] : -100;
    if ((st = sdict_cross_entropy_loss_ex(&logits, &tgt, -100, loss, &dlogits, err)) != SDICT_OK)
        goto done;
    sdict_act_free(&logits);

    /* ---- backward */
    {
        sdict_act dh = {0};
        if ((st = sdict_act_init(&dh, SDICT_FLOAT32, 3, sh3, err)) != SDICT_OK) goto done;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)R, (int)E, (int)V, 1.0f,
                    dlogits.data, (int)V, g->lm_head, (int)E, 0.0f, dh.data, (int)E);
        sdict_named_tensor *head = sdict_module_tensor(g->root, g->tied ? "transformer.wte.weight"
                                                                        : "lm_head.weight");
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)V, (int)E, (int)R, 1.0f,
                    dlogits.data, (int)V, hf.data, (int)E, 1.0f,
                    sdict_storage_data(head->grad.storage), (int)E);
        st = sdict_module_backward(lnf, &dh, &dx, err);
        sdict_act_free(&dh);
        if (st != SDICT_OK) goto done;
    }
    float *DX = dx.data;
    for (int64_t l = NL - 1; l >= 0; l--) {
        train_layer *L = &TL[l];
        double scale = c->scale_attn_weights ? 1.0 / sqrt((double)D) : 1.0;
        if (c->scale_attn_by_inverse_layer_idx) scale /= (double)(l + 1);
        sdict_act dy = {0}, d1 = {0}, d2 = {0};
        /* MLP branch: x += drop(c_proj(act(c_fc(ln_2(x))))) */
        if ((st = sdict_act_copy(&dy, &dx, err)) != SDICT_OK) break;
        mul_mask(dy.data, L->Mr2, R * E);
        st = sdict_module_backward(L->mlp_proj, &dy, &d1, err);
        sdict_act_free(&dy);
        if (st != SDICT_OK) break;
        float *G = d1.data;
        const float *FP = L->fpre.data;
        bool tanh_form = c->activation == SDICT_GPT2_GELU_NEW;
        for (int64_t i = 0; i < R * NI; i++)
            G[i] = c->activation == SDICT_GPT2_RELU
                       ? (FP[i] > 0.0f ? G[i] : 0.0f)
                       : (float)(G[i] * sdict_nn__gelu_grad(FP[i], tanh_form));
        st = sdict_module_backward(L->c_fc, &d1, &d2, err);
        sdict_act_free(&d1);
        if (st == SDICT_OK) st = sdict_module_backward(L->ln2, &d2, &d1, err);
        sdict_act_free(&d2);
        if (st != SDICT_OK) break;
        for (int64_t i = 0; i < R * E; i++) DX[i] += ((float *)d1.data)[i];
        sdict_act_free(&d1);
        /* attention branch: x += drop(c_proj(attn(c_attn(ln_1(x))))) */
        if ((st = sdict_act_copy(&dy, &dx, err)) != SDICT_OK) break;
        mul_mask(dy.data, L->Mr1, R * E);
        st = sdict_module_backward(L->c_proj, &dy, &d1, err);
        sdict_act_free(&dy);
        if (st == SDICT_OK) st = sdict_act_init(&d2, SDICT_FLOAT32, 3, L->qkv.shape, err);
        if (st != SDICT_OK) {
            sdict_act_free(&d1);
            break;
        }
        const float *QKV = L->qkv.data;
        for (int64_t b = 0; b < B; b++)
            for (int64_t h = 0; h < H; h++) {
                int64_t off = b * T * 3 * E + h * D;
                float *dq = (float *)d2.data + off;
                sdict_nn__sdpa_backward(L->P + (b * H + h) * T * T,
                                        L->M ? L->M + (b * H + h) * T * T : NULL, QKV + off,
                                        QKV + off + E, QKV + off + 2 * E, 3 * E,
                                        (const float *)d1.data + b * T * E + h * D, E, T, T, D,
                                        (float)scale, dq, dq + E, dq + 2 * E, scratch);
            }
        sdict_act_free(&d1);
        st = sdict_module_backward(L->c_attn, &d2, &d1, err);
        sdict_act_free(&d2);
        if (st == SDICT_OK) st = sdict_module_backward(L->ln1, &d1, &d2, err);
        sdict_act_free(&d1);
        if (st != SDICT_OK) break;
        for (int64_t i = 0; i < R * E; i++) DX[i] += ((float *)d2.data)[i];
        sdict_act_free(&d2);
    }
    if (st != SDICT_OK) goto done;
    mul_mask(DX, Me, R * E);
    {
        sdict_named_tensor *te = sdict_module_tensor(g->root, "transformer.wte.weight");
        sdict_named_tensor *pe = sdict_module_tensor(g->root, "transformer.wpe.weight");
        float *dwte = sdict_storage_data(te->grad.storage);
        float *dwpe = sdict_storage_data(pe->grad.storage);
        for (int64_t b = 0; b < B; b++)
            for (int64_t t = 0; t < T; t++) {
                const float *d = DX + (b * T + t) * E;
                float *a = dwte + ID[b * T + t] * E, *p = dwpe + t * E;
                for (int64_t i = 0; i < E; i++) {
                    a[i] += d[i];
                    p[i] += d[i];
                }
            }
    }
done:
    for (int64_t l = 0; TL && l < NL; l++) {
        train_layer *L = &TL[l];
        sdict_act_free(&L->qkv);
        sdict_act_free(&L->fpre);
        free(L->P);
        free(L->M);
        free(L->Mr1);
        free(L->Mr2);
        clear_caches(L->ln1);
        clear_caches(L->c_attn);
        clear_caches(L->c_proj);
        clear_caches(L->ln2);
        clear_caches(L->c_fc);
        clear_caches(L->mlp_proj);
    }
    clear_caches(lnf);
    free(TL);
    free(Me);
    free(scratch);
    sdict_act_free(&x);
    sdict_act_free(&hf);
    sdict_act_free(&logits);
    sdict_act_free(&tgt);
    sdict_act_free(&dlogits);
    sdict_act_free(&dx);
    sdict_module_train(g->root, training);
    if (st != SDICT_OK) *loss = NAN;
    return st;
}

static void add_param(void *ctx, const char *key, sdict_named_tensor *nt) {
    void **c = ctx;
    sdict_optim_param *ps = c[0];
    size_t *n = c[1];
    const bool *tied = c[2];
    const size_t *cap = c[3];
    if (*tied && strcmp(key, "lm_head.weight") == 0) return; /* the same Parameter as wte */
    if (*n >= *cap) { /* the tree gained parameters after sdict_gpt2_new: counted, not stored */
        (*n)++;
        return;
    }
    sdict_optim_param *p = &ps[(*n)++];
    memset(p, 0, sizeof *p);
    p->data = sdict_storage_data(nt->value.storage);
    p->grad = sdict_storage_data(nt->grad.storage);
    p->numel = sdict_tensor_numel(&nt->value);
    p->ndim = nt->value.ndim;
    for (int32_t i = 0; i < p->ndim; i++) p->shape[i] = nt->value.shape[i];
}

sdict_status sdict_gpt2_optim_add(sdict_optim *o, const sdict_optim_hparams *hp, sdict_gpt2 *g,
                                  sdict_error *err) {
    size_t n = 0, cap = (size_t)(4 + 12 * g->cfg.n_layer + 1);
    sdict_optim_param *ps = calloc(cap, sizeof *ps);
    if (!ps) return sdict_nn__err(err, SDICT_E_NOMEM, "GPT-2: out of memory");
    void *ctx[4] = {ps, &n, &g->tied, &cap};
    sdict_module_each_param(g->root, add_param, ctx);
    if (n > cap) {
        free(ps);
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "GPT-2: the module tree has %zu "
                             "parameters, more than GPT2LMHeadModel's (modules added after "
                             "sdict_gpt2_new)", n);
    }
    sdict_status st = sdict_optim_add_group(o, hp, ps, n, err);
    free(ps);
    return st;
}
