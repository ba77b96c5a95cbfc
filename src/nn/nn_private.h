/*
 nn_private.h - helpers shared by the nn layer's sources (the .c files of src/nn). Not API: the nn layer is
 built on the public headers only, and so are these.
*/
#ifndef SDICT_NN_PRIVATE_H
#define SDICT_NN_PRIVATE_H

#include "statedict_nn.h"

/* Fills the public error struct (record "", offset -1: nn errors concern modules, not file
   records) and returns code. */
sdict_status sdict_nn__err(sdict_error *err, sdict_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* An owned, zero-filled, C-contiguous tensor of the given dtype and shape (module.c): dims
   (room for 2 * ndim values) receives a copy of the shape then the strides, and t points
   into it. */
sdict_status sdict_nn__tensor_alloc(sdict_tensor *t, sdict_dtype dtype, int32_t ndim,
                                    const int64_t *shape, int64_t *dims, sdict_error *err);

/* splitmix64 (layers.c): tiny, seedable, good enough for init values and dropout masks.
   rng_uniform: in [0, 1) with 24 random bits (exactly representable as float). */
uint64_t sdict_nn__rng_next(uint64_t *s);
double sdict_nn__rng_uniform(uint64_t *s);

/* MaxPool2d's window scan (layers.c), shared by its forward and backward. */
void sdict_nn__maxpool2d_scan(const sdict_module_config *c, const float *X, int64_t NC,
                              int64_t H, int64_t W, int64_t OH, int64_t OW, float *Y, int64_t *A);

/* transformer.c's row kernels, shared with gpt2.c. layernorm_rows: y[r] = LayerNorm(x[r]) for
   rows of n floats (w, b may be NULL; xhat [rows * n] and rstd [rows] may be NULL, else they
   receive the normalised rows and 1/sqrt(var + eps)); gelu: in place, exact (erf) or tanh;
   softmax_row: in place over n floats, -inf entries give 0. */
void sdict_nn__layernorm_rows(const float *x, float *y, int64_t rows, int64_t n, const float *w,
                              const float *b, double eps, float *xhat, float *rstd);
void sdict_nn__gelu(float *x, int64_t n, bool tanh_approx);
void sdict_nn__softmax_row(float *x, int64_t n);
/* d gelu(v) / dv, exact (erf) or tanh, as the GELU module's backward uses it. */
double sdict_nn__gelu_grad(double v, bool tanh_approx);

/* transformer.c's backward rules, dispatched by sdict_module_backward (backward.c): LayerNorm,
   GELU, Softmax and LogSoftmax (one rule, by m->type), and Hugging Face's Conv1D. */
sdict_status sdict_nn__layernorm_backward(sdict_module *m, const sdict_act *dy, sdict_act *dx,
                                          sdict_error *err);
sdict_status sdict_nn__gelu_backward(sdict_module *m, const sdict_act *dy, sdict_act *dx,
                                     sdict_error *err);
sdict_status sdict_nn__softmax_backward(sdict_module *m, const sdict_act *dy, sdict_act *dx,
                                        sdict_error *err);
sdict_status sdict_nn__hf_conv1d_backward(sdict_module *m, const sdict_act *dy, sdict_act *dx,
                                          sdict_error *err);

/* GELU's derivative at v (transformer.c): exact (erf) or tanh form. */
double sdict_nn__gelu_grad(double v, bool tanh_approx);

/* Causal scaled dot-product attention forward for one head (attention.c), GPT-2's: scores
   S = scale Q K^T; query row t sees keys 0..past + t (past: positions before the queries, as in
   a KV cache; the others get weight 0); P = softmax(S) by rows, written to P [l, s]
   (contiguous); O = (P * M) V with M [l, s] dropout multipliers (NULL: none; then scratch may be
   NULL, else it has room for l * s floats). Q [l, hd] has row stride ldq, K and V [s, hd] row
   stride ldkv, O [l, hd] row stride ldo. Requires past + l <= s. */
void sdict_nn__sdpa_causal_forward(const float *Q, int64_t ldq, const float *K, const float *V,
                                   int64_t ldkv, int64_t l, int64_t s, int64_t past, int64_t hd,
                                   float scale, const float *M, float *P, float *O, int64_t ldo,
                                   float *scratch);

/* Scaled dot-product attention backward for one head (attention.c), shared by
   MultiheadAttention and GPT-2. The forward was S = scale Q K^T (+ masks), P = softmax(S) by
   rows, O = (P * M) V with M the dropout multipliers (0 or 1/(1-p); NULL: no dropout).
   P and M: [l, s] contiguous; Q [l, hd], K and V [s, hd] with row stride ld; dO [l, hd] with
   row stride ldo. Writes (not accumulates) dQ [l, hd], dK and dV [s, hd], row stride ld.
   scratch: room for 2 * l * s floats. Masked-out scores have P = 0 and get no gradient. */
void sdict_nn__sdpa_backward(const float *P, const float *M, const float *Q, const float *K,
                             const float *V, int64_t ld, const float *dO, int64_t ldo, int64_t l,
                             int64_t s, int64_t hd, float scale, float *dQ, float *dK, float *dV,
                             float *scratch);

#endif
