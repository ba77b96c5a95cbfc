/*
 train - train a model in C and save a general checkpoint PyTorch can resume from (and resume
 from one PyTorch wrote), as in the recipe's "Saving & loading a general checkpoint".

   train --arch lenet|mlp --data D.pt --optimizer sgd|adam|adamw --lr LR [--momentum M]
         --epochs N --batch-size B [--resume CKPT] --checkpoint OUT.tar
         [--weight-decay WD] [--dampening D] [--nesterov] [--amsgrad] [--betas B1,B2]
         [--eps E] [--maximize] [--dropout P] [--digits] [--range A:B] [--eval A:B]
         [--torch 1.13|2.6|2.14]

 D.pt is {'x': tensor, 'y': int tensor}: x float [N, 3, 32, 32] for lenet (or, with --digits,
 uint8 [N, 64] 8x8 images with values 0..16, turned into [N, 3, 32, 32] by nearest upsampling,
 three equal channels and /16), int64 [N, 8] for mlp. Samples A..B-1 (--range, default all)
 are cut into batches of B in order (the last may be smaller), no shuffling. Each epoch runs
 forward in training mode, CrossEntropyLoss, backward and one optimizer step per batch, and
 prints the mean batch loss. OUT.tar receives {'epoch': epochs done in total,
 'model_state_dict', 'optimizer_state_dict', 'loss': last epoch's mean loss}.
 --resume first loads the model (strictly) and optimizer state from such a checkpoint,
 whoever wrote it; as in PyTorch the saved hyperparameters (lr, momentum, betas...) win over
 the command line. --eval A:B prints the accuracy on samples A..B-1 in eval mode after
 training (with --epochs 0 it only evaluates). --dropout sets mlp's Dropout p (default 0.5).
 --torch picks the torch whose optimizer state_dict layout a new optimizer writes (default
 1.13; a resumed optimizer keeps its checkpoint's layout).
 
   train --arch gpt2 --config config.json --text FILE --optimizer adam|adamw --lr LR
         --epochs N --batch-size B [--block-size T] [--seed S] [--resume CKPT]
         --checkpoint OUT.tar [--eval A:B] [--torch ...] (and the optimizer options above)

 GPT-2 (transformers' GPT2LMHeadModel, config.json a GPT2Config as save_pretrained writes it)
 trained as a character-level model on the bytes of FILE: the vocabulary is the distinct byte
 values of FILE in increasing order (id k is the k-th smallest; vocab_size must be at least
 their count). For gpt2 an "epoch" is one optimizer step, and 'epoch' in the checkpoint counts
 steps. Step k (0-based, counted from the very first step, so across resumes) takes batch row b
 (0..B-1) as the T ids starting at position splitmix64(S + (k * B + b + 1) * 0x9E3779B97F4A7C15)
 mod (len - T + 1), where splitmix64(z) is the finaliser z ^= z >> 30; z *= 0xBF58476D1CE4E5B9;
 z ^= z >> 27; z *= 0x94D049BB133111EB; z ^= z >> 31 (64-bit wrapping) and T the block size
 (default n_positions). labels = input_ids and the loss is transformers' (shifted inside the
 model), with dropout as config.json says (train mode). The checkpoint also holds 'seed' (an
 integer in 0..2^53, default 0): a resume without --seed takes it from there. --eval A:B prints the mean eval-mode loss over the
 windows of T bytes starting at A, A + T, ... that end by B.
 Exit status: 0 ok, 1 failure, 2 usage.
*/
#include "statedict_nn.h"
#include "statedict_optim.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int usage(void) {
    fprintf(stderr,
            "usage: train --arch lenet|mlp --data D.pt --optimizer sgd|adam|adamw --lr LR "
            "[--momentum M] --epochs N --batch-size B [--resume CKPT] --checkpoint OUT.tar\n"
            "             [--weight-decay WD] [--dampening D] [--nesterov] [--amsgrad] "
            "[--betas B1,B2] [--eps E] [--maximize] [--dropout P] [--digits] [--range A:B] "
            "[--eval A:B] [--torch 1.13|2.6|2.14]\n"
            "       train --arch gpt2 --config config.json --text FILE --optimizer adam|adamw "
            "--lr LR --epochs STEPS --batch-size B [--block-size T] [--seed S] [--resume CKPT] "
            "--checkpoint OUT.tar [--eval A:B] [optimizer options]\n");
    return 2;
}

/* An option value that is not what the option takes. */
static int bad(const char *opt, const char *v) {
    fprintf(stderr, "train: %s \"%s\": not a valid value (see usage)\n", opt, v);
    return usage();
}

static int fail(const char *what, const sdict_error *err) {
    char buf[1024];
    fprintf(stderr, "train: %s: %s\n", what, sdict_error_format(err, buf, sizeof buf));
    return 1;
}

/* The whole of v as an integer / a finite number; false for anything else ("abc", "1x", ""). */
static bool whole_long(const char *v, long *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end) return false;
    *out = x;
    return true;
}

static bool whole_num(const char *v, double *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !(x - x == 0.0)) return false;
    *out = x;
    return true;
}

/* Whether s is "A:B", "A:", ":B", ":" or "A" with A and B whole non-negative integers. */
static bool range_ok(const char *s) {
    const char *colon = strchr(s, ':');
    for (const char *p = s; *p; p++)
        if (p != colon && (*p < '0' || *p > '9')) return false;
    size_t la = colon ? (size_t)(colon - s) : strlen(s);
    return (la <= 18 && (colon || la > 0)) && (!colon || strlen(colon + 1) <= 18);
}

/* "A:B" -> [a, b); either side may be empty (0 / n). */
static void parse_range(const char *s, int64_t n, int64_t *a, int64_t *b) {
    *a = 0;
    *b = n;
    if (!s) return;
    const char *colon = strchr(s, ':');
    if (colon != s) *a = atoll(s);
    if (colon && colon[1]) *b = atoll(colon + 1);
    if (*a < 0) *a = 0;
    if (*b > n) *b = n;
    if (*a > *b) *a = *b;
}

/* Rows [a, b) of x (outermost dimension) as a new activation. */
static sdict_status slice(const sdict_act *x, int64_t a, int64_t b, sdict_act *out,
                          sdict_error *err) {
    int64_t shape[SDICT_NN_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[0] = b - a;
    sdict_status st = sdict_act_init(out, x->dtype, x->ndim, shape, err);
    if (st != SDICT_OK) return st;
    size_t row = (size_t)(sdict_act_numel(x) / (x->shape[0] ? x->shape[0] : 1)) *
                 sdict_dtype_size(x->dtype);
    if (b > a) memcpy(out->data, (char *)x->data + (size_t)a * row, (size_t)(b - a) * row);
    return SDICT_OK;
}

/* 8x8 digits (int64 [N, 64], 0..16) -> float32 [N, 3, 32, 32]: each pixel becomes a 4x4
   block (nearest upsampling), the three channels are equal, values scaled to 0..1. */
static sdict_status digits_to_images(const sdict_act *x, sdict_act *out, sdict_error *err) {
    if (x->ndim != 2 || x->shape[1] != 64 || x->dtype != SDICT_INT64) {
        fprintf(stderr, "train: --digits expects x as integers of shape [N, 64]\n");
        return SDICT_E_SHAPE;
    }
    int64_t N = x->shape[0], shape[4] = {N, 3, 32, 32};
    sdict_status st = sdict_act_init(out, SDICT_FLOAT32, 4, shape, err);
    if (st != SDICT_OK) return st;
    const int64_t *X = x->data;
    float *Y = out->data;
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < 3; c++)
            for (int64_t i = 0; i < 32; i++)
                for (int64_t j = 0; j < 32; j++)
                    Y[((n * 3 + c) * 32 + i) * 32 + j] = (float)X[n * 64 + (i / 4) * 8 + j / 4] / 16.0f;
    return SDICT_OK;
}

/* The optimizer part of a resume: optimizer_state_dict (refusing another family's, as the
   message says) and 'epoch'. Returns 0, or 1 after printing why not. */
static int resume_optimizer(const sdict_value *ck, const char *resume, sdict_optim *opt,
                            sdict_optim_kind kind, const char *optname, long *start_epoch) {
    sdict_error err = {0};
    const sdict_value *osd = sdict_checkpoint_dict(ck, "optimizer_state_dict", &err);
    if (!osd) return fail(resume, &err);
    const sdict_value *g0 = sdict_seq_item(sdict_dict_get(osd, "param_groups"), 0);
    if (g0 && (kind == SDICT_OPTIM_SGD) != (sdict_dict_get(g0, "betas") == NULL)) {
        fprintf(stderr, "train: %s holds %s state, but --optimizer is %s\n", resume,
                kind == SDICT_OPTIM_SGD ? "Adam-style" : "SGD", optname);
        return 1;
    }
    if (sdict_optim_load_state_dict(opt, osd, &err) != SDICT_OK)
        return fail("optimizer_state_dict", &err);
    double e = 0.0;
    if (sdict_checkpoint_number(ck, "epoch", &e, &err) != SDICT_OK) return fail(resume, &err);
    if (!(e >= 0 && e <= 9007199254740992.0 && e == (double)(long)e)) { /* 2^53 */
        fprintf(stderr, "train: %s: 'epoch' is %g, not a count of epochs\n", resume, e);
        return 1;
    }
    *start_epoch = (long)e;
    return 0;
}

/* torch.save({'epoch', 'model_state_dict', 'optimizer_state_dict', 'loss'[, 'seed']}, PATH) */
static int save_checkpoint(const char *out, const sdict_module *net, const sdict_optim *opt,
                           long epoch, double loss, const uint64_t *seed) {
    sdict_error err = {0};
    sdict_doc *odoc = NULL;
    sdict_value *root = NULL, *msd = NULL, *osd = NULL;
    sdict_status st = sdict_doc_new(&odoc, &err);
    if (st == SDICT_OK && !(root = sdict_dict_new(odoc, false))) st = SDICT_E_NOMEM;
    if (st == SDICT_OK) st = sdict_dict_set_str(root, "epoch", sdict_int_new(odoc, epoch));
    if (st == SDICT_OK) st = sdict_module_state_dict(net, odoc, false, &msd, &err);
    if (st == SDICT_OK) st = sdict_dict_set_str(root, "model_state_dict", msd);
    if (st == SDICT_OK) st = sdict_optim_state_dict(opt, odoc, &osd, &err);
    if (st == SDICT_OK) st = sdict_dict_set_str(root, "optimizer_state_dict", osd);
    if (st == SDICT_OK) st = sdict_dict_set_str(root, "loss", sdict_float_new(odoc, loss));
    if (st == SDICT_OK && seed)
        st = sdict_dict_set_str(root, "seed", sdict_int_new(odoc, (int64_t)(*seed & INT64_MAX)));
    if (st == SDICT_OK) st = sdict_doc_set_root(odoc, root);
    if (st == SDICT_OK) st = sdict_save(out, root, NULL, &err);
    sdict_doc_free(odoc);
    if (st != SDICT_OK) return fail(out, &err);
    printf("saved %s (epoch %ld)\n", out, epoch);
    return 0;
}

static double accuracy(sdict_module *net, const sdict_act *x, const sdict_act *y, int64_t a,
                       int64_t b, int64_t bs, sdict_error *err, bool *ok) {
    int64_t correct = 0;
    *ok = true;
    sdict_module_eval(net);
    for (int64_t s = a; s < b; s += bs) {
        int64_t e = s + bs < b ? s + bs : b;
        sdict_act xb = {0}, out = {0};
        if (slice(x, s, e, &xb, err) != SDICT_OK ||
            sdict_module_forward(net, &xb, &out, err) != SDICT_OK) {
            sdict_act_free(&xb);
            *ok = false;
            return 0.0;
        }
        const float *o = out.data;
        int64_t C = out.shape[1];
        for (int64_t r = 0; r < e - s; r++) {
            int64_t best = 0;
            for (int64_t c = 1; c < C; c++) if (o[r * C + c] > o[r * C + best]) best = c;
            if (best == ((const int64_t *)y->data)[s + r]) correct++;
        }
        sdict_act_free(&xb);
        sdict_act_free(&out);
    }
    sdict_module_train(net, true);
    return b > a ? (double)correct / (double)(b - a) : 0.0;
}

/*==================================================================================================
 GPT-2 on the bytes of a text
==================================================================================================*/

typedef struct gpt2_opts {
    const char *config, *text, *resume, *out, *eval_range, *gen, *optname;
    sdict_optim_kind kind;
    sdict_optim_hparams hp;
    long steps, bs, block;
    int64_t seed;
    bool has_seed;
} gpt2_opts;

static uint64_t splitmix64(uint64_t z) {
    z ^= z >> 30;
    z *= 0xBF58476D1CE4E5B9ULL;
    z ^= z >> 27;
    z *= 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Mean eval-mode loss over the windows of T ids starting at a, a + T, ... that end by b. */
static int gpt2_eval(sdict_gpt2 *g, const int64_t *ids, int64_t n, const char *range, int64_t T) {
    int64_t a, b;
    parse_range(range, n, &a, &b);
    sdict_module_eval(sdict_gpt2_module(g));
    sdict_error err = {0};
    double sum = 0.0;
    long windows = 0;
    int64_t shape[2] = {1, T}, V = sdict_gpt2_get_config(g)->vocab_size;
    for (int64_t s = a; s + T <= b; s += T) {
        sdict_act x = {0}, logits = {0}, tg = {0};
        int64_t ts[1] = {T - 1};
        float loss = 0.0f;
        sdict_status st = sdict_act_init(&x, SDICT_INT64, 2, shape, &err);
        if (st == SDICT_OK) st = sdict_act_init(&tg, SDICT_INT64, 1, ts, &err);
        if (st == SDICT_OK) {
            memcpy(x.data, ids + s, sizeof(int64_t) * (size_t)T);
            memcpy(tg.data, ids + s + 1, sizeof(int64_t) * (size_t)(T - 1));
            st = sdict_gpt2_forward(g, &x, &logits, &err);
        }
        if (st == SDICT_OK) { /* positions 0..T-2 predict ids 1..T-1 */
            sdict_act head = {.dtype = SDICT_FLOAT32, .ndim = 2, .shape = {T - 1, V},
                              .data = logits.data};
            st = sdict_cross_entropy_loss(&head, &tg, &loss, NULL, &err);
        }
        sdict_act_free(&x);
        sdict_act_free(&tg);
        sdict_act_free(&logits);
        if (st != SDICT_OK) return fail("evaluation", &err);
        sum += loss;
        windows++;
    }
    if (!windows) {
        fprintf(stderr, "train: --eval %s holds no window of %lld bytes\n", range, (long long)T);
        return 1;
    }
    printf("eval loss %.6f (mean over %ld windows of %lld bytes from %lld, in eval mode)\n",
           sum / (double)windows, windows, (long long)T, (long long)a);
    return 0;
}

static int train_gpt2(gpt2_opts *o) {
    sdict_error err = {0};
    sdict_gpt2_config cfg;
    sdict_gpt2 *g = NULL;
    sdict_optim *opt = NULL;
    sdict_doc *cdoc = NULL;
    unsigned char *text = NULL;
    int64_t *ids = NULL;
    int rc = 1;
    if (sdict_gpt2_config_from_json(o->config, &cfg, &err) != SDICT_OK)
        return fail("--config", &err);
    /* ---- the text and its byte vocabulary */
    FILE *f = fopen(o->text, "rb");
    if (!f) {
        fprintf(stderr, "train: %s: %s\n", o->text, strerror(errno));
        return 1;
    }
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    if (n < 2 || n > (64L << 20) || fseek(f, 0, SEEK_SET) != 0 || !(text = malloc((size_t)n)) ||
        fread(text, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "train: %s: cannot read it, or its size (%ld bytes) is not in 2..64 MiB\n",
                o->text, n);
        fclose(f);
        free(text);
        return 1;
    }
    fclose(f);
    int64_t rank[256], nv = 0;
    bool seen[256] = {false};
    for (long i = 0; i < n; i++) seen[text[i]] = true;
    for (int c = 0; c < 256; c++) rank[c] = seen[c] ? nv++ : -1;
    if (cfg.vocab_size < nv) {
        fprintf(stderr,
                "train: %s: vocab_size %lld is smaller than the %lld distinct bytes of %s\n",
                o->config, (long long)cfg.vocab_size, (long long)nv, o->text);
        free(text);
        return 1;
    }
    int64_t T = o->block > 0 ? o->block : cfg.n_positions;
    if (T < 2 || T > cfg.n_positions || T > n) {
        fprintf(stderr, "train: --block-size %lld%s must be in 2..n_positions (%lld) and at most "
                "the text's %ld bytes\n", (long long)T, o->block > 0 ? "" : " (n_positions)",
                (long long)cfg.n_positions, n);
        free(text);
        return 2;
    }
    if (!(ids = malloc(sizeof(int64_t) * (size_t)n))) {
        free(text);
        fprintf(stderr, "train: out of memory\n");
        return 1;
    }
    for (long i = 0; i < n; i++) ids[i] = rank[text[i]];
    free(text);
    printf("text %s: %ld bytes, %lld distinct (vocab_size %lld), block %lld\n", o->text, n,
           (long long)nv, (long long)cfg.vocab_size, (long long)T);

    /* ---- model = GPT2LMHeadModel(config); optimizer = AdamW(model.parameters(), ...) */
    if (sdict_gpt2_new(&cfg, &g, &err) != SDICT_OK) {
        rc = fail(o->config, &err);
        goto done;
    }
    if (sdict_gpt2_train_bytes(g, o->bs, T) > (double)SDICT_GPT2_MAX_TRAIN_BYTES) {
        fprintf(stderr, "train: --batch-size %ld with block %lld needs about %.3g GiB of "
                "activations per step, more than the limit of %lld GiB\n", o->bs, (long long)T,
                sdict_gpt2_train_bytes(g, o->bs, T) / 1073741824.0,
                (long long)(SDICT_GPT2_MAX_TRAIN_BYTES >> 30));
        rc = 2;
        goto done;
    }
    if (!(opt = sdict_optim_new(o->kind))) {
        fprintf(stderr, "train: out of memory\n");
        goto done;
    }
    if (sdict_gpt2_optim_add(opt, &o->hp, g, &err) != SDICT_OK) {
        rc = fail("optimizer", &err);
        goto done;
    }
    sdict_optim_layout layout;
    if (o->gen && (sdict_optim_layout_from_name(o->gen, &layout, &err) != SDICT_OK ||
                   sdict_optim_set_layout(opt, layout, &err) != SDICT_OK)) {
        rc = fail("--torch", &err);
        goto done;
    }
    long start = 0;
    uint64_t seed = (uint64_t)o->seed;
    if (o->resume) {
        if (sdict_load(o->resume, NULL, &cdoc, &err) != SDICT_OK) {
            rc = fail(o->resume, &err);
            goto done;
        }
        const sdict_value *ck = sdict_doc_root(cdoc);
        const sdict_value *msd = sdict_checkpoint_dict(ck, "model_state_dict", &err);
        if (!msd || sdict_gpt2_load_state_dict(g, msd, &err) != SDICT_OK) {
            rc = fail(o->resume, &err);
            goto done;
        }
        if (cfg.tie_word_embeddings && !sdict_gpt2_is_tied(g)) { /* the optimizer has no lm_head */
            fprintf(stderr, "train: %s: lm_head.weight differs from transformer.wte.weight, but "
                    "%s ties them (tie_word_embeddings)\n", o->resume, o->config);
            goto done;
        }
        if (resume_optimizer(ck, o->resume, opt, o->kind, o->optname, &start) != 0) goto done;
        double sd = 0.0;
        if (!o->has_seed && sdict_dict_get(ck, "seed")) {
            if (sdict_checkpoint_number(ck, "seed", &sd, &err) != SDICT_OK ||
                !(sd >= 0.0 && sd <= 9007199254740992.0 && sd == (double)(int64_t)sd)) {
                fprintf(stderr, "train: %s: 'seed' is not an integer in 0..2^53\n", o->resume);
                goto done;
            }
            seed = (uint64_t)sd;
        }
        sdict_doc_free(cdoc);
        cdoc = NULL;
        printf("resumed from %s at step %ld (lr %g, seed %llu)\n", o->resume, start,
               sdict_optim_group(opt, 0)->lr, (unsigned long long)seed);
    }

    /* ---- for step: zero_grad, loss = model(x, labels=x).loss, backward, step */
    sdict_module_train(sdict_gpt2_module(g), true);
    double last = 0.0;
    int64_t B = o->bs, shape[2] = {B, T}, nstart = n - T + 1;
    for (long k = start; k < start + o->steps; k++) {
        sdict_act x = {0};
        float loss = 0.0f;
        sdict_optim_zero_grad(opt);
        sdict_status st = sdict_act_init(&x, SDICT_INT64, 2, shape, &err);
        for (int64_t b = 0; st == SDICT_OK && b < B; b++) {
            uint64_t z = seed + ((uint64_t)k * (uint64_t)B + (uint64_t)b + 1) *
                                    0x9E3779B97F4A7C15ULL;
            int64_t p = (int64_t)(splitmix64(z) % (uint64_t)nstart);
            memcpy((int64_t *)x.data + b * T, ids + p, sizeof(int64_t) * (size_t)T);
        }
        /* dropout masks: a different stream per step, from the same seed */
        if (st == SDICT_OK)
            st = sdict_gpt2_forward_backward(g, &x, NULL, splitmix64(seed ^ (uint64_t)(k + 1)),
                                             &loss, &err);
        if (st == SDICT_OK) st = sdict_optim_step(opt, &err);
        sdict_gpt2_tie_weights(g); /* lm_head follows the updated wte */
        sdict_act_free(&x);
        if (st != SDICT_OK) {
            rc = fail("training step", &err);
            goto done;
        }
        last = loss;
        printf("step %ld loss %.6f\n", k + 1, last);
        fflush(stdout);
    }
    if (o->steps > 0 &&
        save_checkpoint(o->out, sdict_gpt2_module(g), opt, start + o->steps, last, &seed) != 0)
        goto done;
    if (o->eval_range && gpt2_eval(g, ids, n, o->eval_range, T) != 0) goto done;
    rc = 0;
done:
    sdict_doc_free(cdoc);
    sdict_optim_free(opt);
    sdict_gpt2_free(g);
    free(ids);
    return rc;
}

int main(int argc, char **argv) {
    const char *arch = NULL, *data = NULL, *optname = NULL, *resume = NULL, *out = NULL;
    const char *range = NULL, *eval_range = NULL, *gen = NULL, *config = NULL, *text = NULL;
    long block = 0;
    long long seed = -1;
    double lr = -1.0, momentum = 0.0, wd = -1.0, dampening = 0.0, dropout = 0.5;
    double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
    bool nesterov = false, amsgrad = false, maximize = false, digits = false;
    long epochs = -1, bs = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--nesterov") == 0) { nesterov = true; continue; }
        if (strcmp(a, "--amsgrad") == 0) { amsgrad = true; continue; }
        if (strcmp(a, "--maximize") == 0) { maximize = true; continue; }
        if (strcmp(a, "--digits") == 0) { digits = true; continue; }
        if (!v) return usage();
        if (strcmp(a, "--arch") == 0) arch = v;
        else if (strcmp(a, "--data") == 0) data = v;
        else if (strcmp(a, "--optimizer") == 0) optname = v;
        else if (strcmp(a, "--lr") == 0) { if (!whole_num(v, &lr)) return bad(a, v); }
        else if (strcmp(a, "--momentum") == 0) { if (!whole_num(v, &momentum)) return bad(a, v); }
        else if (strcmp(a, "--weight-decay") == 0) { if (!whole_num(v, &wd)) return bad(a, v); }
        else if (strcmp(a, "--dampening") == 0) { if (!whole_num(v, &dampening)) return bad(a, v); }
        else if (strcmp(a, "--eps") == 0) { if (!whole_num(v, &eps)) return bad(a, v); }
        else if (strcmp(a, "--betas") == 0) {
            if (sscanf(v, "%lf,%lf", &beta1, &beta2) != 2) return usage();
        } else if (strcmp(a, "--dropout") == 0) { if (!whole_num(v, &dropout)) return bad(a, v); }
        else if (strcmp(a, "--epochs") == 0) { /* counts stay exact in a checkpoint: 2^53 */
            if (!whole_long(v, &epochs) || epochs < 0 || epochs > (1L << 53)) return bad(a, v);
        }
        else if (strcmp(a, "--batch-size") == 0) {
            if (!whole_long(v, &bs) || bs <= 0) return bad(a, v);
        }
        else if (strcmp(a, "--resume") == 0) resume = v;
        else if (strcmp(a, "--checkpoint") == 0) out = v;
        else if (strcmp(a, "--range") == 0) { if (!range_ok(v)) return bad(a, v); range = v; }
        else if (strcmp(a, "--eval") == 0) { if (!range_ok(v)) return bad(a, v); eval_range = v; }
        else if (strcmp(a, "--torch") == 0) gen = v;
        else if (strcmp(a, "--config") == 0) config = v;
        else if (strcmp(a, "--text") == 0) text = v;
        else if (strcmp(a, "--block-size") == 0) {
            if (!whole_long(v, &block) || block < 2) return bad(a, v);
        }
        else if (strcmp(a, "--seed") == 0) {
            long sv = -1;
            seed = whole_long(v, &sv) ? sv : -1;
            if (seed < 0 || seed > (1LL << 53)) { /* kept exactly as a checkpoint number */
                fprintf(stderr, "train: --seed must be in 0..2^53\n");
                return 2;
            }
        }
        else return usage();
        i++;
    }
    bool gpt2 = arch && strcmp(arch, "gpt2") == 0;
    if (!arch || !(gpt2 ? config && text : data != NULL) || !optname || epochs < 0 || bs <= 0 ||
        (epochs > 0 && !out))
        return usage();
    sdict_optim_kind kind;
    if (strcmp(optname, "sgd") == 0) kind = SDICT_OPTIM_SGD;
    else if (strcmp(optname, "adam") == 0) kind = SDICT_OPTIM_ADAM;
    else if (strcmp(optname, "adamw") == 0) kind = SDICT_OPTIM_ADAMW;
    else return usage();
    if (gpt2 && kind == SDICT_OPTIM_SGD) {
        fprintf(stderr, "train: --arch gpt2 trains with adam or adamw\n");
        return 2;
    }
    if (lr < 0.0 && !resume) {
        fprintf(stderr, "train: --lr is required (torch 1.13's SGD has no default either)\n");
        return 2;
    }

    /* ---- model and optimizer, as model = Net(); optimizer = optim.SGD(model.parameters(), ...) */
    sdict_module *net = NULL;
    if (strcmp(arch, "lenet") == 0) {
        net = sdict_lenet_new();
        if (net) net->backward = sdict_lenet_backward;  /* Net's forward is hand-written too */
    } else if (strcmp(arch, "mlp") == 0) net = sdict_mlp_new(dropout);
    else if (!gpt2) return usage();
    sdict_optim *opt = sdict_optim_new(kind);
    if ((!net && !gpt2) || !opt) {
        fprintf(stderr, "train: out of memory\n");
        return 1;
    }
    sdict_optim_hparams hp = sdict_optim_defaults(kind);
    if (lr >= 0.0) hp.lr = lr;
    if (wd >= 0.0) hp.weight_decay = wd;
    hp.momentum = momentum;
    hp.dampening = dampening;
    hp.nesterov = nesterov;
    hp.amsgrad = amsgrad;
    hp.maximize = maximize;
    hp.beta1 = beta1;
    hp.beta2 = beta2;
    hp.eps = eps;
    if (gpt2) {
        sdict_optim_free(opt);
        sdict_module_free(net);
        gpt2_opts go = {config, text, resume, out, eval_range, gen, optname, kind, hp,
                        epochs, bs, block, seed < 0 ? 0 : seed, seed >= 0};
        return train_gpt2(&go);
    }
    sdict_error err = {0};
    int rc = 1;
    sdict_doc *ddoc = NULL, *cdoc = NULL;
    sdict_act x = {0}, y = {0};
    sdict_load_result lres = {0};
    if (sdict_optim_add_module(opt, &hp, net, &err) != SDICT_OK) {
        rc = fail("optimizer", &err);
        goto done;
    }
    sdict_optim_layout layout;
    if (gen && (sdict_optim_layout_from_name(gen, &layout, &err) != SDICT_OK ||
                sdict_optim_set_layout(opt, layout, &err) != SDICT_OK)) {
        rc = fail("--torch", &err);
        goto done;
    }

    /* ---- resume: checkpoint = torch.load(PATH); model.load_state_dict(...); ... */
    long start_epoch = 0;
    if (resume) {
        if (sdict_load(resume, NULL, &cdoc, &err) != SDICT_OK) {
            rc = fail(resume, &err);
            goto done;
        }
        const sdict_value *ck = sdict_doc_root(cdoc);
        const sdict_value *msd = sdict_checkpoint_dict(ck, "model_state_dict", &err);
        if (!msd) { rc = fail(resume, &err); goto done; }
        if (sdict_module_load_state_dict(net, msd, true, &lres, &err) != SDICT_OK) {
            fprintf(stderr, "train: %s\n", lres.message ? lres.message : err.message);
            goto done;
        }
        if (resume_optimizer(ck, resume, opt, kind, optname, &start_epoch) != 0) goto done;
        sdict_doc_free(cdoc);
        cdoc = NULL;
        printf("resumed from %s at epoch %ld (lr %g)\n", resume, start_epoch,
               sdict_optim_group(opt, 0)->lr);
    }

    /* ---- data */
    if (sdict_load(data, NULL, &ddoc, &err) != SDICT_OK) {
        rc = fail(data, &err);
        goto done;
    }
    {
        const sdict_value *root = sdict_doc_root(ddoc);
        const sdict_tensor *tx = sdict_value_tensor(sdict_dict_get(root, "x"));
        const sdict_tensor *ty = sdict_value_tensor(sdict_dict_get(root, "y"));
        if (!tx || !ty) {
            fprintf(stderr, "train: %s must be a dict with tensors 'x' and 'y'\n", data);
            goto done;
        }
        if (sdict_act_from_tensor(tx, &x, &err) != SDICT_OK ||
            sdict_act_from_tensor(ty, &y, &err) != SDICT_OK) {
            rc = fail(data, &err);
            goto done;
        }
        if (digits) {
            sdict_act img;
            if (digits_to_images(&x, &img, &err) != SDICT_OK) goto done;
            sdict_act_free(&x);
            x = img;
        }
        if (y.dtype != SDICT_INT64 || y.ndim != 1 || x.ndim < 1 || x.shape[0] != y.shape[0]) {
            fprintf(stderr, "train: y must be integer class indices [N] with N = len(x)\n");
            goto done;
        }
    }
    int64_t a, b;
    parse_range(range, x.shape[0], &a, &b);

    /* ---- the loop: for epoch ...: for batch: zero_grad, forward, loss, backward, step */
    sdict_module_train(net, true);
    double epoch_loss = 0.0;
    for (long ep = 0; ep < epochs; ep++) {
        double sum = 0.0;
        long batches = 0;
        for (int64_t s = a; s < b; s += bs) {
            int64_t e = s + bs < b ? s + bs : b;
            sdict_act xb = {0}, yb = {0}, logits = {0}, dlogits = {0}, dx = {0};
            float loss = 0.0f;
            sdict_optim_zero_grad(opt);
            sdict_status st = slice(&x, s, e, &xb, &err);
            if (st == SDICT_OK) st = slice(&y, s, e, &yb, &err);
            if (st == SDICT_OK) st = sdict_module_forward(net, &xb, &logits, &err);
            if (st == SDICT_OK) st = sdict_cross_entropy_loss(&logits, &yb, &loss, &dlogits, &err);
            if (st == SDICT_OK) st = sdict_module_backward(net, &dlogits, NULL, &err);
            if (st == SDICT_OK) st = sdict_optim_step(opt, &err);
            sdict_act_free(&xb);
            sdict_act_free(&yb);
            sdict_act_free(&logits);
            sdict_act_free(&dlogits);
            sdict_act_free(&dx);
            if (st != SDICT_OK) {
                rc = fail("training step", &err);
                goto done;
            }
            sum += loss;
            batches++;
        }
        epoch_loss = batches ? sum / (double)batches : 0.0;
        printf("epoch %ld loss %.6f\n", start_epoch + ep + 1, epoch_loss);
        fflush(stdout);
    }

    if (epochs > 0 && save_checkpoint(out, net, opt, start_epoch + epochs, epoch_loss, NULL) != 0)
        goto done;
    if (eval_range) {
        int64_t ea, eb;
        bool ok;
        parse_range(eval_range, x.shape[0], &ea, &eb);
        double acc = accuracy(net, &x, &y, ea, eb, bs, &err, &ok);
        if (!ok) {
            rc = fail("evaluation", &err);
            goto done;
        }
        printf("eval accuracy %.4f (%lld of %lld samples %lld..%lld right, in eval mode)\n", acc,
               (long long)(acc * (double)(eb - ea) + 0.5), (long long)(eb - ea), (long long)ea,
               (long long)eb - 1);
    }
    rc = 0;
done:
    sdict_load_result_free(&lres);
    sdict_act_free(&x);
    sdict_act_free(&y);
    sdict_doc_free(ddoc);
    sdict_doc_free(cdoc);
    sdict_optim_free(opt);
    sdict_module_free(net);
    return rc;
}
