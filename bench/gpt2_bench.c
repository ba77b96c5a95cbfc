/*
 gpt2_bench.c - GPT-2 timing driver for bench/run (statedict_nn's public API only). Prints one
 line "MODE ms=<milliseconds> [extra]"; the model load is not timed.

   forward DIR TOKENS RUNS      eval forward over [1, TOKENS] ids, median of RUNS (after one
                                warm-up run)
   generate DIR PROMPT NEW      greedy generation with the KV cache of NEW tokens after a PROMPT-
                                token prompt: ms of the whole generate call, and tok_s = NEW / s
 Threads: OpenBLAS's (OPENBLAS_NUM_THREADS), which bench/run sets to torch's thread count.
*/
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "statedict_nn.h"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void die(const char *what, const sdict_error *err) {
    char buf[1024];
    fprintf(stderr, "gpt2_bench: %s: %s\n", what, sdict_error_format(err, buf, sizeof buf));
    exit(1);
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: gpt2_bench forward DIR TOKENS RUNS | generate DIR PROMPT NEW\n");
        return 2;
    }
    sdict_error err;
    memset(&err, 0, sizeof err);
    sdict_gpt2 *g = NULL;
    if (sdict_gpt2_from_pretrained(argv[2], &g, &err) != SDICT_OK) die(argv[2], &err);
    int64_t V = sdict_gpt2_get_config(g)->vocab_size;
    long a = atol(argv[3]), b = atol(argv[4]);
    if (a <= 0 || b <= 0) return 2;
    int64_t *ids = malloc(sizeof(int64_t) * (size_t)(a + b));
    for (long i = 0; i < a + b; i++) ids[i] = (i * 7919 + 13) % V;
    if (strcmp(argv[1], "forward") == 0) {
        int64_t shape[2] = {1, a};
        sdict_act x = {0}, y = {0};
        if (sdict_act_init(&x, SDICT_INT64, 2, shape, &err) != SDICT_OK) die("ids", &err);
        memcpy(x.data, ids, sizeof(int64_t) * (size_t)a);
        double *t = malloc(sizeof(double) * (size_t)b);
        for (long r = -1; r < b; r++) {
            double t0 = now_ms();
            if (sdict_gpt2_forward(g, &x, &y, &err) != SDICT_OK) die("forward", &err);
            if (r >= 0) t[r] = now_ms() - t0;
            sdict_act_free(&y);
        }
        qsort(t, (size_t)b, sizeof *t, cmp_d);
        printf("forward ms=%.3f\n", t[b / 2]);
        free(t);
        sdict_act_free(&x);
    } else if (strcmp(argv[1], "generate") == 0) {
        int64_t *out = malloc(sizeof(int64_t) * (size_t)(a + b)), n = 0;
        double t0 = now_ms();
        if (sdict_gpt2_generate(g, ids, a, b, 0, 0, out, &n, &err) != SDICT_OK) die("generate", &err);
        double ms = now_ms() - t0;
        printf("generate ms=%.3f tok_s=%.2f new=%lld\n", ms, (double)(n - a) / (ms / 1e3),
               (long long)(n - a));
        free(out);
    } else {
        return 2;
    }
    free(ids);
    sdict_gpt2_free(g);
    return 0;
}
