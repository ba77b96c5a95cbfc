/*
 layers.c - built-in layers: constructors (parameters, buffers, deterministic init) and
 float32 CPU forwards with PyTorch's semantics. Linear and Conv2d (im2col) use cblas_sgemm.
 In training mode each forward leaves in m->cache what a backward pass needs (see the
 sdict_module documentation in statedict_nn.h).
*/
#include "nn_private.h"
#include "statedict_nn.h"

#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>


/*==================================================================================================
 MARK: Helpers
==================================================================================================*/

static float *tensor_f32(const sdict_named_tensor *nt) {
    return (float *)sdict_storage_data(nt->value.storage);
}

uint64_t sdict_nn__rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

double sdict_nn__rng_uniform(uint64_t *s) {
    return (double)(sdict_nn__rng_next(s) >> 40) / 16777216.0;
}

static void fill_uniform(sdict_named_tensor *nt, double bound, uint64_t *s) {
    float *p = tensor_f32(nt);
    int64_t n = sdict_tensor_numel(&nt->value);
    for (int64_t i = 0; i < n; i++) p[i] = (float)((2.0 * sdict_nn__rng_uniform(s) - 1.0) * bound);
}

static void fill_const(sdict_named_tensor *nt, float v) {
    float *p = tensor_f32(nt);
    int64_t n = sdict_tensor_numel(&nt->value);
    for (int64_t i = 0; i < n; i++) p[i] = v;
}

/* Registers weight (wdims sizes ws) and, when bias, a bias of ws[0] elements, both drawn
   uniformly from [-1/sqrt(fan_in), 1/sqrt(fan_in)] (torch's bound; the generator is ours).
   Linear and Conv2d share it. */
static bool register_weight_bias(sdict_module *m, int32_t wdims, const int64_t *ws, int64_t fan_in,
                                 bool bias, uint64_t seed) {
    sdict_named_tensor *w = NULL, *b = NULL;
    if (sdict_module_register(m, "weight", false, SDICT_FLOAT32, wdims, ws, &w, NULL) != SDICT_OK)
        return false;
    double bound = 1.0 / sqrt((double)fan_in);
    fill_uniform(w, bound, &seed);
    if (bias) {
        if (sdict_module_register(m, "bias", false, SDICT_FLOAT32, 1, ws, &b, NULL) != SDICT_OK)
            return false;
        fill_uniform(b, bound, &seed);
    }
    return true;
}

/* Keeps a copy of the input for backward when training; drops stale caches otherwise. */
static sdict_status cache_input(sdict_module *m, const sdict_act *x, sdict_error *err) {
    for (int i = 0; i < SDICT_MODULE_CACHE; i++) sdict_act_free(&m->cache[i]);
    if (!m->training) return SDICT_OK;
    return sdict_act_copy(&m->cache[0], x, err);
}

static sdict_status need_f32(const sdict_module *m, const sdict_act *x, int32_t min_nd,
                             int32_t max_nd, sdict_error *err) {
    if (x->dtype != SDICT_FLOAT32 || x->ndim < min_nd || x->ndim > max_nd)
        return sdict_nn__err(err, SDICT_E_SHAPE, "%s: expected a float32 input of %d..%d dims, "
                             "got %s with %d dims", m->type_name, (int)min_nd, (int)max_nd,
                             sdict_dtype_name(x->dtype), (int)x->ndim);
    return SDICT_OK;
}

static sdict_module *new_layer(sdict_module_type type, const char *name, sdict_forward_fn fwd) {
    sdict_module *m = sdict_module_new(name, fwd, NULL);
    if (m) m->type = type;
    return m;
}

/*==================================================================================================
 MARK: Linear
==================================================================================================*/

static sdict_status linear_forward(sdict_module *m, const sdict_act *x, sdict_act *y,
                                   sdict_error *err) {
    sdict_status st = need_f32(m, x, 1, SDICT_NN_MAX_DIMS, err);
    if (st != SDICT_OK) return st;
    int64_t in = m->cfg.in_features, out = m->cfg.out_features;
    if (x->shape[x->ndim - 1] != in)
        return sdict_nn__err(err, SDICT_E_SHAPE, "Linear: input has %lld features, expected %lld",
                             (long long)x->shape[x->ndim - 1], (long long)in);
    int64_t shape[SDICT_NN_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = out;
    if ((st = sdict_act_init(y, SDICT_FLOAT32, x->ndim, shape, err)) != SDICT_OK) return st;
    int64_t rows = sdict_act_numel(x) / (in ? in : 1);
    float *Y = y->data;
    if (rows > 0 && out > 0 && in > 0)
        /* Y[rows, out] = X[rows, in] . W[out, in]^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)out, (int)in, 1.0f,
                    x->data, (int)in, tensor_f32(&m->params[0]), (int)in, 0.0f, Y, (int)out);
    if (m->cfg.has_bias) {
        const float *b = tensor_f32(&m->params[1]);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t o = 0; o < out; o++) Y[r * out + o] += b[o];
    }
    if ((st = cache_input(m, x, err)) != SDICT_OK) sdict_act_free(y);
    return st;
}

sdict_module *sdict_linear_new(int64_t in_features, int64_t out_features, bool bias) {
    if (in_features <= 0 || out_features <= 0 || in_features > INT32_MAX ||
        out_features > INT32_MAX)
        return NULL;
    sdict_module *m = new_layer(SDICT_MOD_LINEAR, "Linear", linear_forward);
    if (!m) return NULL;
    m->cfg.in_features = in_features;
    m->cfg.out_features = out_features;
    m->cfg.has_bias = bias;
    int64_t ws[2] = {out_features, in_features};
    uint64_t seed = 0x11ULL ^ ((uint64_t)in_features << 20) ^ (uint64_t)out_features;
    if (!register_weight_bias(m, 2, ws, in_features, bias, seed)) {
        sdict_module_free(m);
        return NULL;
    }
    return m;
}

/*==================================================================================================
 MARK: Conv2d
==================================================================================================*/

/* Unfolds one group of one image into col[Cg*kh*kw][OH*OW] (zero padding). */
static void im2col(const float *img, int64_t C, int64_t H, int64_t W, const sdict_module_config *c,
                   int64_t OH, int64_t OW, float *col) {
    int64_t kh = c->kernel[0], kw = c->kernel[1];
    for (int64_t ch = 0; ch < C; ch++)
        for (int64_t ki = 0; ki < kh; ki++)
            for (int64_t kj = 0; kj < kw; kj++) {
                float *row = col + ((ch * kh + ki) * kw + kj) * OH * OW;
                for (int64_t oh = 0; oh < OH; oh++) {
                    int64_t ih = oh * c->stride[0] - c->padding[0] + ki * c->dilation[0];
                    for (int64_t ow = 0; ow < OW; ow++) {
                        int64_t iw = ow * c->stride[1] - c->padding[1] + kj * c->dilation[1];
                        row[oh * OW + ow] = (ih >= 0 && ih < H && iw >= 0 && iw < W)
                                                ? img[(ch * H + ih) * W + iw]
                                                : 0.0f;
                    }
                }
            }
}

static sdict_status conv2d_forward(sdict_module *m, const sdict_act *x, sdict_act *y,
                                   sdict_error *err) {
    sdict_status st = need_f32(m, x, 4, 4, err);
    if (st != SDICT_OK) return st;
    const sdict_module_config *c = &m->cfg;
    int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    if (C != c->in_features)
        return sdict_nn__err(err, SDICT_E_SHAPE, "Conv2d: input has %lld channels, expected %lld",
                             (long long)C, (long long)c->in_features);
    int64_t OH = (H + 2 * c->padding[0] - c->dilation[0] * (c->kernel[0] - 1) - 1) / c->stride[0] + 1;
    int64_t OW = (W + 2 * c->padding[1] - c->dilation[1] * (c->kernel[1] - 1) - 1) / c->stride[1] + 1;
    if (H + 2 * c->padding[0] < c->dilation[0] * (c->kernel[0] - 1) + 1 ||
        W + 2 * c->padding[1] < c->dilation[1] * (c->kernel[1] - 1) + 1)
        return sdict_nn__err(err, SDICT_E_SHAPE, "Conv2d: kernel larger than padded input");
    int64_t O = c->out_features, G = c->groups, Cg = C / G, Og = O / G;
    int64_t K = Cg * c->kernel[0] * c->kernel[1], P = OH * OW;
    int64_t shape[4] = {N, O, OH, OW};
    if ((st = sdict_act_init(y, SDICT_FLOAT32, 4, shape, err)) != SDICT_OK) return st;
    float *col = malloc((size_t)(K * P > 0 ? K * P : 1) * sizeof(float));
    if (!col) {
        sdict_act_free(y);
        return sdict_nn__err(err, SDICT_E_NOMEM, "Conv2d: out of memory");
    }
    const float *Wt = tensor_f32(&m->params[0]);
    const float *X = x->data;
    float *Y = y->data;
    for (int64_t n = 0; n < N; n++)
        for (int64_t g = 0; g < G; g++) {
            im2col(X + (n * C + g * Cg) * H * W, Cg, H, W, c, OH, OW, col);
            /* out[Og, P] = Wg[Og, K] . col[K, P] */
            if (P > 0)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)Og, (int)P, (int)K,
                            1.0f, Wt + g * Og * K, (int)K, col, (int)P, 0.0f,
                            Y + (n * O + g * Og) * P, (int)P);
        }
    free(col);
    if (c->has_bias) {
        const float *b = tensor_f32(&m->params[1]);
        for (int64_t n = 0; n < N; n++)
            for (int64_t o = 0; o < O; o++)
                for (int64_t i = 0; i < P; i++) Y[(n * O + o) * P + i] += b[o];
    }
    if ((st = cache_input(m, x, err)) != SDICT_OK) sdict_act_free(y);
    return st;
}

sdict_module *sdict_conv2d_new(int64_t in_channels, int64_t out_channels, int64_t kh, int64_t kw,
                               int64_t stride, int64_t padding, int64_t dilation, int64_t groups,
                               bool bias) {
    if (in_channels <= 0 || out_channels <= 0 || kh <= 0 || kw <= 0 || stride <= 0 ||
        padding < 0 || dilation <= 0 || groups <= 0 || in_channels % groups ||
        out_channels % groups || out_channels > INT32_MAX)
        return NULL;
    sdict_module *m = new_layer(SDICT_MOD_CONV2D, "Conv2d", conv2d_forward);
    if (!m) return NULL;
    sdict_module_config *c = &m->cfg;
    c->in_features = in_channels;
    c->out_features = out_channels;
    c->kernel[0] = kh;
    c->kernel[1] = kw;
    c->stride[0] = c->stride[1] = stride;
    c->padding[0] = c->padding[1] = padding;
    c->dilation[0] = c->dilation[1] = dilation;
    c->groups = groups;
    c->has_bias = bias;
    int64_t ws[4] = {out_channels, in_channels / groups, kh, kw};
    uint64_t seed = 0x22ULL ^ ((uint64_t)in_channels << 24) ^ ((uint64_t)out_channels << 8) ^
                    (uint64_t)(kh * 31 + kw);
    if (!register_weight_bias(m, 4, ws, ws[1] * kh * kw, bias, seed)) {
        sdict_module_free(m);
        return NULL;
    }
    return m;
}

/*==================================================================================================
 MARK: BatchNorm1d / BatchNorm2d
==================================================================================================*/

static sdict_named_tensor *find_named(sdict_named_tensor *arr, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(arr[i].name, name) == 0) return &arr[i];
    return NULL;
}

static sdict_status batchnorm_forward(sdict_module *m, const sdict_act *x, sdict_act *y,
                                      sdict_error *err) {
    bool is2d = m->type == SDICT_MOD_BATCHNORM2D;
    sdict_status st = need_f32(m, x, is2d ? 4 : 2, is2d ? 4 : 3, err);
    if (st != SDICT_OK) return st;
    const sdict_module_config *c = &m->cfg;
    int64_t N = x->shape[0], C = x->shape[1];
    if (C != c->num_features)
        return sdict_nn__err(err, SDICT_E_SHAPE, "%s: input has %lld channels, expected %lld",
                             m->type_name, (long long)C, (long long)c->num_features);
    int64_t S = 1;
    for (int32_t i = 2; i < x->ndim; i++) S *= x->shape[i];
    int64_t count = N * S;
    sdict_named_tensor *w = find_named(m->params, m->n_params, "weight");
    sdict_named_tensor *b = find_named(m->params, m->n_params, "bias");
    sdict_named_tensor *rm = find_named(m->buffers, m->n_buffers, "running_mean");
    sdict_named_tensor *rv = find_named(m->buffers, m->n_buffers, "running_var");
    sdict_named_tensor *nbt = find_named(m->buffers, m->n_buffers, "num_batches_tracked");
    /* torch: batch statistics in training, or whenever there are no running buffers. */
    bool use_batch = m->training || !rm;
    if (use_batch && count <= 1) {
        /* torch's own wording (F.batch_norm's _verify_batch_size). */
        char shape[128];
        size_t off = 0;
        for (int32_t i = 0; i < x->ndim && off < sizeof shape; i++)
            off += (size_t)snprintf(shape + off, sizeof shape - off, "%s%lld", i ? ", " : "",
                                    (long long)x->shape[i]);
        return sdict_nn__err(err, SDICT_E_SHAPE, "Expected more than 1 value per channel when "
                             "training, got input size torch.Size([%s])", shape);
    }
    if ((st = sdict_act_init(y, SDICT_FLOAT32, x->ndim, x->shape, err)) != SDICT_OK) return st;
    for (int i = 0; i < SDICT_MODULE_CACHE; i++) sdict_act_free(&m->cache[i]);
    bool keep = m->training;
    if (keep) {
        st = sdict_act_copy(&m->cache[0], x, err);
        if (st == SDICT_OK) st = sdict_act_init(&m->cache[1], SDICT_FLOAT32, x->ndim, x->shape, err);
        if (st == SDICT_OK) st = sdict_act_init(&m->cache[2], SDICT_FLOAT32, 1, &C, err);
        if (st != SDICT_OK) {
            sdict_act_free(y);
            return st;
        }
    }
    /* momentum=None: cumulative average with factor 1/num_batches_tracked, counted first. */
    double factor = c->momentum;
    if (m->training && nbt) {
        int64_t *cnt = sdict_storage_data(nbt->value.storage);
        /* torch's num_batches_tracked.add_(1) wraps in int64 two's complement; C's signed
           overflow is undefined, so the wrap is spelled out. */
        *cnt = *cnt == INT64_MAX ? INT64_MIN : *cnt + 1;
        if (c->momentum_none && *cnt == 0) {
            /* a loaded count of -1: torch's 1.0 / float(0) raises ZeroDivisionError */
            sdict_act_free(y);
            for (int i = 0; i < SDICT_MODULE_CACHE; i++) sdict_act_free(&m->cache[i]);
            return sdict_nn__err(err, SDICT_E_INVALID_ARG, "%s: float division by zero "
                                 "(momentum=None and num_batches_tracked is 0 after the "
                                 "increment)", m->type_name);
        }
        if (c->momentum_none) factor = 1.0 / (double)*cnt;
    }
    const float *X = x->data;
    float *Y = y->data;
    for (int64_t ch = 0; ch < C; ch++) {
        double mean, var;
        if (use_batch) {
            /* Two-pass in double: mean, then biased variance (used to normalise). */
            double sum = 0.0;
            for (int64_t n = 0; n < N; n++)
                for (int64_t s = 0; s < S; s++) sum += X[(n * C + ch) * S + s];
            mean = sum / (double)count;
            double sq = 0.0;
            for (int64_t n = 0; n < N; n++)
                for (int64_t s = 0; s < S; s++) {
                    double d = X[(n * C + ch) * S + s] - mean;
                    sq += d * d;
                }
            var = sq / (double)count;
            if (m->training && rm) {
                float *pm = tensor_f32(rm), *pv = tensor_f32(rv);
                double unbiased = sq / (double)(count - 1);
                pm[ch] = (float)((1.0 - factor) * pm[ch] + factor * mean);
                pv[ch] = (float)((1.0 - factor) * pv[ch] + factor * unbiased);
            }
        } else {
            mean = tensor_f32(rm)[ch];
            var = tensor_f32(rv)[ch];
        }
        double invstd = 1.0 / sqrt(var + c->eps);
        double gamma = w ? tensor_f32(w)[ch] : 1.0, beta = b ? tensor_f32(b)[ch] : 0.0;
        if (keep) ((float *)m->cache[2].data)[ch] = (float)invstd;
        for (int64_t n = 0; n < N; n++)
            for (int64_t s = 0; s < S; s++) {
                int64_t i = (n * C + ch) * S + s;
                double xh = (X[i] - mean) * invstd;
                if (keep) ((float *)m->cache[1].data)[i] = (float)xh;
                Y[i] = (float)(xh * gamma + beta);
            }
    }
    return SDICT_OK;
}

static sdict_module *batchnorm_new(sdict_module_type type, const char *name, int64_t features,
                                   double eps, double momentum, bool affine, bool track) {
    if (features <= 0 || !(eps >= 0)) return NULL;
    sdict_module *m = new_layer(type, name, batchnorm_forward);
    if (!m) return NULL;
    m->version = 2; /* BatchNorm's _version: 2 since num_batches_tracked was added */
    sdict_module_config *c = &m->cfg;
    c->num_features = features;
    c->eps = eps;
    c->momentum_none = momentum < 0;
    c->momentum = momentum < 0 ? 0.0 : momentum;
    c->affine = affine;
    c->track_running_stats = track;
    sdict_named_tensor *nt = NULL;
    if (affine) {
        if (sdict_module_register(m, "weight", false, SDICT_FLOAT32, 1, &features, &nt, NULL))
            goto fail;
        fill_const(nt, 1.0f);
        if (sdict_module_register(m, "bias", false, SDICT_FLOAT32, 1, &features, &nt, NULL))
            goto fail;
    }
    if (track) {
        if (sdict_module_register(m, "running_mean", true, SDICT_FLOAT32, 1, &features, &nt, NULL))
            goto fail;
        if (sdict_module_register(m, "running_var", true, SDICT_FLOAT32, 1, &features, &nt, NULL))
            goto fail;
        fill_const(nt, 1.0f);
        if (sdict_module_register(m, "num_batches_tracked", true, SDICT_INT64, 0, NULL, &nt, NULL))
            goto fail;
    }
    return m;
fail:
    sdict_module_free(m);
    return NULL;
}

sdict_module *sdict_batchnorm1d_new(int64_t num_features, double eps, double momentum,
                                    bool affine, bool track_running_stats) {
    return batchnorm_new(SDICT_MOD_BATCHNORM1D, "BatchNorm1d", num_features, eps, momentum,
                         affine, track_running_stats);
}

sdict_module *sdict_batchnorm2d_new(int64_t num_features, double eps, double momentum,
                                    bool affine, bool track_running_stats) {
    return batchnorm_new(SDICT_MOD_BATCHNORM2D, "BatchNorm2d", num_features, eps, momentum,
                         affine, track_running_stats);
}

/*==================================================================================================
 MARK: Dropout, ReLU, Flatten
==================================================================================================*/

static sdict_status dropout_forward(sdict_module *m, const sdict_act *x, sdict_act *y,
                                    sdict_error *err) {
    sdict_status st = need_f32(m, x, 0, SDICT_NN_MAX_DIMS, err);
    if (st == SDICT_OK) st = sdict_act_copy(y, x, err);
    if (st != SDICT_OK) return st;
    for (int i = 0; i < SDICT_MODULE_CACHE; i++) sdict_act_free(&m->cache[i]);
    if (!m->training) return SDICT_OK;
    if ((st = sdict_act_init(&m->cache[1], SDICT_FLOAT32, x->ndim, x->shape, err)) != SDICT_OK) {
        sdict_act_free(y);
        return st;
    }
    double p = m->cfg.p;
    /* torch: p == 1 zeroes everything; otherwise keep with probability 1-p, scale 1/(1-p). */
    float scale = p >= 1.0 ? 0.0f : (float)(1.0 / (1.0 - p));
    float *mask = m->cache[1].data, *Y = y->data;
    int64_t n = sdict_act_numel(x);
    for (int64_t i = 0; i < n; i++) {
        mask[i] = (p > 0.0 && sdict_nn__rng_uniform(&m->rng) < p) ? 0.0f : scale;
        Y[i] *= mask[i];
    }
    return SDICT_OK;
}

sdict_module *sdict_dropout_new(double p) {
    if (!(p >= 0.0 && p <= 1.0)) return NULL;
    sdict_module *m = new_layer(SDICT_MOD_DROPOUT, "Dropout", dropout_forward);
    if (m) {
        m->cfg.p = p;
        m->rng = 0xD80F0A7ULL;
    }
    return m;
}

void sdict_dropout_seed(sdict_module *m, uint64_t seed) {
    if (m) m->rng = seed;
}

static sdict_status relu_forward(sdict_module *m, const sdict_act *x, sdict_act *y,
                                 sdict_error *err) {
    sdict_status st = need_f32(m, x, 0, SDICT_NN_MAX_DIMS, err);
    if (st == SDICT_OK) st = sdict_act_copy(y, x, err);
    if (st != SDICT_OK) return st;
    sdict_act_relu_(y);
    if ((st = cache_input(m, x, err)) != SDICT_OK) sdict_act_free(y);
    return st;
}

sdict_module *sdict_relu_new(void) { return new_layer(SDICT_MOD_RELU, "ReLU", relu_forward); }

static sdict_status flatten_forward(sdict_module *m, const sdict_act *x, sdict_act *y,
                                    sdict_error *err) {
    sdict_status st = sdict_act_copy(y, x, err);
    if (st == SDICT_OK) st = sdict_act_flatten_(y, m->cfg.start_dim, m->cfg.end_dim, err);
    if (st == SDICT_OK) st = cache_input(m, x, err);
    if (st != SDICT_OK) sdict_act_free(y);
    return st;
}

sdict_module *sdict_flatten_new(int32_t start_dim, int32_t end_dim) {
    sdict_module *m = new_layer(SDICT_MOD_FLATTEN, "Flatten", flatten_forward);
    if (m) {
        m->cfg.start_dim = start_dim;
        m->cfg.end_dim = end_dim;
    }
    return m;
}

/*==================================================================================================
 MARK: Embedding
==================================================================================================*/

static sdict_status embedding_forward(sdict_module *m, const sdict_act *x, sdict_act *y,
                                      sdict_error *err) {
    if (x->dtype != SDICT_INT64 || x->ndim >= SDICT_NN_MAX_DIMS)
        return sdict_nn__err(err, SDICT_E_DTYPE, "Embedding: expected int64 indices, got %s",
                             sdict_dtype_name(x->dtype));
    int64_t num = m->cfg.num_embeddings, dim = m->cfg.embedding_dim;
    const int64_t *idx = x->data;
    int64_t n = sdict_act_numel(x);
    for (int64_t i = 0; i < n; i++)
        if (idx[i] < 0 || idx[i] >= num)
            return sdict_nn__err(err, SDICT_E_INVALID_ARG, "Embedding: index %lld out of range "
                                 "[0, %lld)", (long long)idx[i], (long long)num);
    int64_t shape[SDICT_NN_MAX_DIMS];
    memcpy(shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
    shape[x->ndim] = dim;
    sdict_status st = sdict_act_init(y, SDICT_FLOAT32, x->ndim + 1, shape, err);
    if (st != SDICT_OK) return st;
    const float *Wt = tensor_f32(&m->params[0]);
    float *Y = y->data;
    for (int64_t i = 0; i < n; i++) memcpy(Y + i * dim, Wt + idx[i] * dim, sizeof(float) * (size_t)dim);
    if ((st = cache_input(m, x, err)) != SDICT_OK) sdict_act_free(y);
    return st;
}

sdict_module *sdict_embedding_new(int64_t num_embeddings, int64_t embedding_dim) {
    if (num_embeddings <= 0 || embedding_dim <= 0) return NULL;
    sdict_module *m = new_layer(SDICT_MOD_EMBEDDING, "Embedding", embedding_forward);
    if (!m) return NULL;
    m->cfg.num_embeddings = num_embeddings;
    m->cfg.embedding_dim = embedding_dim;
    int64_t ws[2] = {num_embeddings, embedding_dim};
    sdict_named_tensor *w = NULL;
    if (sdict_module_register(m, "weight", false, SDICT_FLOAT32, 2, ws, &w, NULL) != SDICT_OK) {
        sdict_module_free(m);
        return NULL;
    }
    /* N(0, 1) by Box-Muller, as torch's normal_ init in distribution (not in values). */
    uint64_t seed = 0x33ULL ^ ((uint64_t)num_embeddings << 16) ^ (uint64_t)embedding_dim;
    float *p = tensor_f32(w);
    for (int64_t i = 0; i < num_embeddings * embedding_dim; i++) {
        double u1 = sdict_nn__rng_uniform(&seed), u2 = sdict_nn__rng_uniform(&seed);
        p[i] = (float)(sqrt(-2.0 * log(1.0 - u1)) * cos(6.283185307179586 * u2));
    }
    return m;
}

/*==================================================================================================
 MARK: Pooling
==================================================================================================*/

static sdict_status pool_output(sdict_module *m, const sdict_act *x, int64_t *OH, int64_t *OW,
                                sdict_error *err) {
    sdict_status st = need_f32(m, x, 4, 4, err);
    if (st != SDICT_OK) return st;
    const sdict_module_config *c = &m->cfg;
    int64_t H = x->shape[2], W = x->shape[3];
    if (H + 2 * c->padding[0] < c->kernel[0] || W + 2 * c->padding[1] < c->kernel[1])
        return sdict_nn__err(err, SDICT_E_SHAPE, "%s: kernel larger than padded input",
                             m->type_name);
    *OH = (H + 2 * c->padding[0] - c->kernel[0]) / c->stride[0] + 1;
    *OW = (W + 2 * c->padding[1] - c->kernel[1]) / c->stride[1] + 1;
    return SDICT_OK;
}

/* Max over every pooling window of X ([NC, H, W] float32 planes) into Y ([NC, OH, OW]), and,
   when A is not NULL, the flat in-plane index ih * W + iw of each window's maximum (the first
   one on ties; NaN wins, as in torch's max pooling; -1 for a window entirely in the padding).
   MaxPool2d's forward and backward (src/nn/backward.c) share it. */
void sdict_nn__maxpool2d_scan(const sdict_module_config *c, const float *X, int64_t NC,
                              int64_t H, int64_t W, int64_t OH, int64_t OW, float *Y, int64_t *A) {
    for (int64_t p = 0; p < NC; p++)
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++) {
                float best = -INFINITY;
                int64_t bi = -1;
                for (int64_t i = 0; i < c->kernel[0]; i++) {
                    int64_t ih = oh * c->stride[0] - c->padding[0] + i;
                    if (ih < 0 || ih >= H) continue;
                    for (int64_t j = 0; j < c->kernel[1]; j++) {
                        int64_t iw = ow * c->stride[1] - c->padding[1] + j;
                        if (iw < 0 || iw >= W) continue;
                        float v = X[(p * H + ih) * W + iw];
                        if (v > best || v != v || bi < 0) {
                            best = v;
                            bi = ih * W + iw;
                            if (v != v) goto done;
                        }
                    }
                }
            done:
                if (Y) Y[(p * OH + oh) * OW + ow] = best;
                if (A) A[(p * OH + oh) * OW + ow] = bi;
            }
}

static sdict_status maxpool_forward(sdict_module *m, const sdict_act *x, sdict_act *y,
                                    sdict_error *err) {
    int64_t OH = 0, OW = 0;
    sdict_status st = pool_output(m, x, &OH, &OW, err);
    if (st != SDICT_OK) return st;
    int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    int64_t shape[4] = {N, C, OH, OW};
    if ((st = sdict_act_init(y, SDICT_FLOAT32, 4, shape, err)) != SDICT_OK) return st;
    for (int i = 0; i < SDICT_MODULE_CACHE; i++) sdict_act_free(&m->cache[i]);
    /* training: cache[0] = input, cache[1] = argmax (see sdict_module.cache); backward
       recomputes the argmax from the input, so a pool used twice (the recipe's Net) still gets
       each use right */
    if (m->training) {
        st = sdict_act_copy(&m->cache[0], x, err);
        if (st == SDICT_OK) st = sdict_act_init(&m->cache[1], SDICT_INT64, 4, shape, err);
        if (st != SDICT_OK) {
            sdict_act_free(y);
            return st;
        }
    }
    sdict_nn__maxpool2d_scan(&m->cfg, x->data, N * C, H, W, OH, OW, y->data, m->cache[1].data);
    return SDICT_OK;
}

static sdict_status avgpool_forward(sdict_module *m, const sdict_act *x, sdict_act *y,
                                    sdict_error *err) {
    int64_t OH = 0, OW = 0;
    sdict_status st = pool_output(m, x, &OH, &OW, err);
    if (st != SDICT_OK) return st;
    const sdict_module_config *c = &m->cfg;
    int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    int64_t shape[4] = {N, C, OH, OW};
    if ((st = sdict_act_init(y, SDICT_FLOAT32, 4, shape, err)) != SDICT_OK) return st;
    const float *X = x->data;
    float *Y = y->data;
    /* count_include_pad=True, ceil_mode=False: the divisor is always kh*kw. */
    double div = (double)(c->kernel[0] * c->kernel[1]);
    for (int64_t p = 0; p < N * C; p++)
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++) {
                double sum = 0.0;
                for (int64_t i = 0; i < c->kernel[0]; i++) {
                    int64_t ih = oh * c->stride[0] - c->padding[0] + i;
                    if (ih < 0 || ih >= H) continue;
                    for (int64_t j = 0; j < c->kernel[1]; j++) {
                        int64_t iw = ow * c->stride[1] - c->padding[1] + j;
                        if (iw >= 0 && iw < W) sum += X[(p * H + ih) * W + iw];
                    }
                }
                Y[(p * OH + oh) * OW + ow] = (float)(sum / div);
            }
    if ((st = cache_input(m, x, err)) != SDICT_OK) sdict_act_free(y);
    return st;
}

static sdict_module *pool_new(sdict_module_type type, const char *name, sdict_forward_fn fwd,
                              int64_t kernel, int64_t stride, int64_t padding) {
    if (stride == 0) stride = kernel;
    /* torch: "pad should be at most half of effective kernel size" */
    if (kernel <= 0 || stride <= 0 || padding < 0 || 2 * padding > kernel) return NULL;
    sdict_module *m = new_layer(type, name, fwd);
    if (!m) return NULL;
    m->cfg.kernel[0] = m->cfg.kernel[1] = kernel;
    m->cfg.stride[0] = m->cfg.stride[1] = stride;
    m->cfg.padding[0] = m->cfg.padding[1] = padding;
    m->cfg.dilation[0] = m->cfg.dilation[1] = 1;
    m->cfg.count_include_pad = true;
    return m;
}

sdict_module *sdict_maxpool2d_new(int64_t kernel, int64_t stride, int64_t padding) {
    return pool_new(SDICT_MOD_MAXPOOL2D, "MaxPool2d", maxpool_forward, kernel, stride, padding);
}

sdict_module *sdict_avgpool2d_new(int64_t kernel, int64_t stride, int64_t padding) {
    return pool_new(SDICT_MOD_AVGPOOL2D, "AvgPool2d", avgpool_forward, kernel, stride, padding);
}

static sdict_status adaptive_avgpool_forward(sdict_module *m, const sdict_act *x, sdict_act *y,
                                             sdict_error *err) {
    sdict_status st = need_f32(m, x, 4, 4, err);
    if (st != SDICT_OK) return st;
    int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    int64_t OH = m->cfg.output_size[0], OW = m->cfg.output_size[1];
    int64_t shape[4] = {N, C, OH, OW};
    if ((st = sdict_act_init(y, SDICT_FLOAT32, 4, shape, err)) != SDICT_OK) return st;
    const float *X = x->data;
    float *Y = y->data;
    for (int64_t p = 0; p < N * C; p++)
        for (int64_t oh = 0; oh < OH; oh++) {
            int64_t h0 = oh * H / OH, h1 = ((oh + 1) * H + OH - 1) / OH;
            for (int64_t ow = 0; ow < OW; ow++) {
                int64_t w0 = ow * W / OW, w1 = ((ow + 1) * W + OW - 1) / OW;
                double sum = 0.0;
                for (int64_t ih = h0; ih < h1; ih++)
                    for (int64_t iw = w0; iw < w1; iw++) sum += X[(p * H + ih) * W + iw];
                int64_t cnt = (h1 - h0) * (w1 - w0);
                Y[(p * OH + oh) * OW + ow] = cnt ? (float)(sum / (double)cnt) : NAN;
            }
        }
    if ((st = cache_input(m, x, err)) != SDICT_OK) sdict_act_free(y);
    return st;
}

sdict_module *sdict_adaptive_avgpool2d_new(int64_t oh, int64_t ow) {
    if (oh <= 0 || ow <= 0) return NULL;
    sdict_module *m = new_layer(SDICT_MOD_ADAPTIVE_AVGPOOL2D, "AdaptiveAvgPool2d",
                                adaptive_avgpool_forward);
    if (m) {
        m->cfg.output_size[0] = oh;
        m->cfg.output_size[1] = ow;
    }
    return m;
}

/*==================================================================================================
 MARK: Sigmoid, Tanh, SiLU
==================================================================================================*/

/* The forward caches the input (sdict_module.cache[0]); backward recomputes from it. */
static sdict_status pointwise_forward(sdict_module *m, const sdict_act *x, sdict_act *y,
                                      sdict_error *err) {
    sdict_status st = need_f32(m, x, 0, SDICT_NN_MAX_DIMS, err);
    if (st == SDICT_OK) st = sdict_act_copy(y, x, err);
    if (st != SDICT_OK) return st;
    float *Y = y->data;
    int64_t n = sdict_act_numel(x);
    for (int64_t i = 0; i < n; i++) {
        float v = Y[i];
        if (m->type == SDICT_MOD_TANH) Y[i] = tanhf(v);
        else if (m->type == SDICT_MOD_SIGMOID) Y[i] = 1.0f / (1.0f + expf(-v));
        else Y[i] = v / (1.0f + expf(-v));   /* SiLU */
    }
    if ((st = cache_input(m, x, err)) != SDICT_OK) sdict_act_free(y);
    return st;
}

sdict_module *sdict_sigmoid_new(void) {
    return new_layer(SDICT_MOD_SIGMOID, "Sigmoid", pointwise_forward);
}

sdict_module *sdict_tanh_new(void) { return new_layer(SDICT_MOD_TANH, "Tanh", pointwise_forward); }

sdict_module *sdict_silu_new(void) { return new_layer(SDICT_MOD_SILU, "SiLU", pointwise_forward); }

/*==================================================================================================
 MARK: Conv1d
==================================================================================================*/

/* Conv1d is Conv2d with a kernel of height 1 over [N, C, 1, L]: the weight [out, in/g, k] has
   the same memory as [out, in/g, 1, k]. The cache keeps the 4-D input Conv2d's backward reads. */
static sdict_status conv1d_forward(sdict_module *m, const sdict_act *x, sdict_act *y,
                                   sdict_error *err) {
    sdict_status st = need_f32(m, x, 2, 3, err);
    if (st != SDICT_OK) return st;
    bool batched = x->ndim == 3;
    sdict_act x4 = *x;
    x4.ndim = 4;
    x4.shape[0] = batched ? x->shape[0] : 1;
    x4.shape[1] = x->shape[batched ? 1 : 0];
    x4.shape[2] = 1;
    x4.shape[3] = x->shape[batched ? 2 : 1];
    if (x4.shape[1] != m->cfg.in_features)
        return sdict_nn__err(err, SDICT_E_SHAPE, "Conv1d: input has %lld channels, expected %lld",
                             (long long)x4.shape[1], (long long)m->cfg.in_features);
    if (x4.shape[3] + 2 * m->cfg.padding[1] < m->cfg.dilation[1] * (m->cfg.kernel[1] - 1) + 1)
        return sdict_nn__err(err, SDICT_E_SHAPE, "Conv1d: kernel larger than padded input");
    if ((st = conv2d_forward(m, &x4, y, err)) != SDICT_OK) return st;
    int64_t O = y->shape[1], OL = y->shape[3];
    if (batched) {
        y->ndim = 3;
        y->shape[2] = OL;
    } else {
        y->ndim = 2;
        y->shape[0] = O;
        y->shape[1] = OL;
    }
    y->shape[3] = 0;
    return SDICT_OK;
}

sdict_module *sdict_conv1d_new(int64_t in_channels, int64_t out_channels, int64_t kernel_size,
                               int64_t stride, int64_t padding, int64_t dilation, int64_t groups,
                               bool bias) {
    if (in_channels <= 0 || out_channels <= 0 || kernel_size <= 0 || stride <= 0 ||
        padding < 0 || dilation <= 0 || groups <= 0 || in_channels % groups ||
        out_channels % groups || out_channels > INT32_MAX)
        return NULL;
    sdict_module *m = new_layer(SDICT_MOD_CONV1D, "Conv1d", conv2d_forward);
    if (!m) return NULL;
    m->forward = conv1d_forward;
    sdict_module_config *c = &m->cfg;
    c->in_features = in_channels;
    c->out_features = out_channels;
    c->kernel[0] = 1;
    c->kernel[1] = kernel_size;
    c->stride[0] = 1;
    c->stride[1] = stride;
    c->padding[0] = 0;
    c->padding[1] = padding;
    c->dilation[0] = 1;
    c->dilation[1] = dilation;
    c->groups = groups;
    c->has_bias = bias;
    int64_t ws[3] = {out_channels, in_channels / groups, kernel_size};
    uint64_t seed = 0x44ULL ^ ((uint64_t)in_channels << 24) ^ ((uint64_t)out_channels << 8) ^
                    (uint64_t)kernel_size;
    if (!register_weight_bias(m, 3, ws, ws[1] * kernel_size, bias, seed)) {
        sdict_module_free(m);
        return NULL;
    }
    return m;
}
