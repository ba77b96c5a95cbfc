/*
 generate - text generation with GPT-2 from a Hugging Face model folder, in C.

   generate --model DIR --prompt IDS --max-new-tokens N [--top-k K --seed S]

 DIR is a Hugging Face folder (config.json plus model.safetensors, sharded safetensors or
 pytorch_model.bin). IDS is the prompt's token ids, comma-separated ("464,3290,318") or a .pt /
 safetensors file holding an integer tensor (the first row of a [1, seq] tensor). Greedy
 decoding by default (model.generate(do_sample=False)); --top-k K samples from the K most likely
 tokens with the seeded generator of the library (--seed, default 0). Prints the prompt and the
 new ids, space-separated, on one line. Exit status: 0 ok, 1 load or run failure, 2 usage.
*/
#include "statedict_nn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int usage(void) {
    fprintf(stderr, "usage: generate --model DIR --prompt IDS --max-new-tokens N "
                    "[--top-k K] [--seed S]\n");
    return 2;
}

/* Prints the error, prefixed by what failed unless the library's text already names it. */
static int fail(const char *what, const sdict_error *err) {
    char buf[1024];
    sdict_error_format(err, buf, sizeof buf);
    if (strstr(buf, what))
        fprintf(stderr, "generate: %s\n", buf);
    else
        fprintf(stderr, "generate: %s: %s\n", what, buf);
    return 1;
}

static bool parse_i64(const char *s, long long *out) {
    char *end;
    errno = 0;
    *out = strtoll(s, &end, 10);
    return errno == 0 && end != s && *end == '\0';
}

/* Comma-separated ids, or else a file holding an integer tensor. An argument made only of
   digits, signs, spaces and commas is a list, and each of its fields must be an integer. */
static int read_prompt(const char *arg, int64_t **ids, int64_t *n) {
    size_t cap = 1;
    for (const char *p = arg; *p; p++) cap += *p == ',';
    *ids = malloc(sizeof(int64_t) * cap);
    if (!*ids) return 1;
    *n = 0;
    size_t len = strlen(arg);
    bool listy = len > 0 && strspn(arg, "0123456789+-, ") == len && strpbrk(arg, "0123456789");
    char *copy = malloc(len + 1);
    if (copy) memcpy(copy, arg, len + 1);
    bool numeric = copy != NULL;
    for (char *tok = copy, *next; tok && numeric; tok = next) {
        next = strchr(tok, ',');
        if (next) *next++ = '\0';
        long long v;
        if (!parse_i64(tok, &v)) numeric = false;
        else (*ids)[(*n)++] = v;
    }
    if (listy && !numeric) {
        fprintf(stderr, "generate: --prompt \"%s\": field %lld is not an integer (expected ids "
                        "such as 464,3290,318)\n", arg, (long long)*n + 1);
        free(copy);
        free(*ids);
        *ids = NULL;
        return 2;
    }
    free(copy);
    if (numeric && *n > 0) return 0;
    free(*ids);
    *ids = NULL;
    sdict_error err;
    memset(&err, 0, sizeof err);
    sdict_doc *doc = NULL;
    sdict_act a = {0};
    if (sdict_load(arg, NULL, &doc, &err) != SDICT_OK) return fail(arg, &err);
    const sdict_tensor *t = sdict_value_tensor(sdict_doc_root(doc));
    int rc = 1;
    if (!t) fprintf(stderr, "generate: %s: expected a tensor of token ids\n", arg);
    else if (sdict_act_from_tensor(t, &a, &err) != SDICT_OK) rc = fail(arg, &err);
    else if (a.dtype != SDICT_INT64 || a.ndim < 1 || a.ndim > 2 || (a.ndim == 2 && a.shape[0] != 1))
        fprintf(stderr, "generate: %s: expected integer ids [seq] or [1, seq]\n", arg);
    else {
        *n = a.shape[a.ndim - 1];
        *ids = malloc(sizeof(int64_t) * (size_t)(*n ? *n : 1));
        if (*ids) {
            memcpy(*ids, a.data, sizeof(int64_t) * (size_t)*n);
            rc = 0;
        }
    }
    sdict_act_free(&a);
    sdict_doc_free(doc);
    return rc;
}

int main(int argc, char **argv) {
    const char *model = NULL, *prompt = NULL;
    long long max_new = -1, top_k = 0, seed = 0;
    bool seeded = false;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (strcmp(a, "--model") == 0) model = v;
        else if (strcmp(a, "--prompt") == 0) prompt = v;
        else if (strcmp(a, "--max-new-tokens") == 0) { if (!parse_i64(v, &max_new)) return usage(); }
        else if (strcmp(a, "--top-k") == 0) { if (!parse_i64(v, &top_k)) return usage(); }
        else if (strcmp(a, "--seed") == 0) { if (!parse_i64(v, &seed)) return usage(); seeded = true; }
        else return usage();
    }
    if (argc % 2 == 0 || !model || !prompt || max_new < 0 || top_k < 0) return usage();
    if (seeded && top_k == 0) {
        fprintf(stderr, "generate: --seed applies to top-k sampling only (--top-k K): greedy "
                        "generation draws nothing\n");
        return 2;
    }
    int64_t *ids = NULL, n = 0;
    int prc = read_prompt(prompt, &ids, &n);
    if (prc != 0) return prc;
    sdict_error err;
    memset(&err, 0, sizeof err);
    sdict_gpt2 *g = NULL;
    int64_t *out = NULL, n_out = 0, npos = 0;
    int rc = 1;
    /* the model first: n_positions bounds the output before anything is sized by the options */
    if (sdict_gpt2_from_pretrained(model, &g, &err) != SDICT_OK) rc = fail(model, &err);
    else if (npos = sdict_gpt2_get_config(g)->n_positions, n > npos || max_new > npos - n)
        fprintf(stderr, "generate: --prompt's %lld ids + --max-new-tokens %lld exceed n_positions "
                        "%lld of %s/config.json\n", (long long)n, max_new, (long long)npos, model);
    else if (!(out = malloc(sizeof(int64_t) * (size_t)(n + max_new))))
        fprintf(stderr, "generate: out of memory\n");
    else if (sdict_gpt2_generate(g, ids, n, max_new, top_k, (uint64_t)seed, out, &n_out, &err) !=
             SDICT_OK)
        rc = fail("GPT-2", &err);
    else {
        for (int64_t i = 0; i < n_out; i++) printf("%s%lld", i ? " " : "", (long long)out[i]);
        printf("\n");
        rc = 0;
    }
    sdict_gpt2_free(g);
    free(out);
    free(ids);
    return rc;
}
