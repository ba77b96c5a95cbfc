/*
 transformer.c - the layers transformers are made of: LayerNorm, GELU (exact and tanh),
 Softmax / LogSoftmax over one dim, and Hugging Face's Conv1D (a Linear whose weight is stored
 [in, out]). Constructors, float32 forwards with PyTorch's semantics and their backward rules
 (sdict_nn__*_backward, dispatched by sdict_module_backward in backward.c). The row kernels
 are shared with gpt2.c through nn_private.h.
*/
#include "nn_private.h"
#include "statedict_optim.h"

#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static float *pf32(const sdict_tensor *t) { return (float *)sdict_storage_data(t->storage); }

static void drop_caches(sdict_module *m) {
    for (int i = 0; i < SDICT_MODULE_CACHE; i++) sdict_act_free(&m->cache[i]);
}

static sdict_status need_f32(const sdict_module *m, const sdict_act *x, int32_t min_nd,
                             sdict_error *err) {
    if (x->dtype != SDICT_FLOAT32 || x->ndim < min_nd)
        return sdict_nn__err(err, SDICT_E_SHAPE, "%s: expected a float32 input of at least %d "
                             "dims, got %s with %d dims", m->type_name, (int)min_nd,
                             sdict_dtype_name(x->dtype), (int)x->ndim);
    return SDICT_OK;
}

static sdict_status same_shape_dy(const sdict_module *m, const sdict_act *ref,
                                  const sdict_act *dy, sdict_error *err) {
    if (dy->dtype != SDICT_FLOAT32 || dy->ndim != ref->ndim ||
        memcmp(dy->shape, ref->shape, sizeof(int64_t) * (size_t)ref->ndim) != 0)
        return sdict_nn__err(err, SDICT_E_SHAPE, "%s: output gradient does not match the "
                             "forward output's shape", m->type_name);
    return SDICT_OK;
}

static sdict_status no_cache(const sdict_module *m, sdict_error *err) {
    return sdict_nn__err(err, SDICT_E_INVALID_ARG, "%s: backward needs a training-mode forward "
                         "first (no cached input)", m->type_name);
}

/*==================================================================================================
 MARK: Kernels (shared with gpt2.c)
==================================================================================================*/

void sdict_nn__layernorm_rows(const float *x, float *y, int64_t rows, int64_t n, const float *w,
                              const float *b, double eps, float *xhat, float *rstd) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        double mean = 0.0, var = 0.0;
        for (int64_t i = 0; i < n; i++) mean += xr[i];
        mean /= (double)n;
        for (int64_t i = 0; i < n; i++) {
            double d = xr[i] - mean;
            var += d * d;
        }
        var /= (double)n; /* biased, as torch's layer_norm */
        float rs = (float)(1.0 / sqrt(var + eps)), mu = (float)mean;
        if (rstd) rstd[r] = rs;
        for (int64_t i = 0; i < n; i++) {
            float h = (xr[i] - mu) * rs;
            if (xhat) xhat[r * n + i] = h;
            yr[i] = h * (w ? w[i] : 1.0f) + (b ? b[i] : 0.0f);
        }
    }
}

#define GELU_K 0.7978845608028654 /* sqrt(2 / pi) */

void sdict_nn__gelu(float *x, int64_t n, bool tanh_approx) {
    if (tanh_approx) {
        for (int64_t i = 0; i < n; i++) {
            float v = x[i];
            x[i] = 0.5f * v * (1.0f + tanhf((float)GELU_K * (v + 0.044715f * v * v * v)));
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            float v = x[i];
            x[i] = (float)(0.5 * v * (1.0 + erf(v * 0.7071067811865476)));
        }
    }
}

double sdict_nn__gelu_grad(double v, bool tanh_approx) {
    if (tanh_approx) {
        double u = GELU_K * (v + 0.044715 * v * v * v), t = tanh(u);
        return 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * GELU_K * (1.0 + 3.0 * 0.044715 * v * v);
    }
    return 0.5 * (1.0 + erf(v * 0.7071067811865476)) +
           v * exp(-0.5 * v * v) * 0.3989422804014327; /* Phi(x) + x phi(x) */
}

void sdict_nn__softmax_row(float *x, int64_t n) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    if (mx == -INFINITY) { /* a fully masked row: torch gives NaN; keep it defined */
        for (int64_t i = 0; i < n; i++) x[i] = NAN;
        return;
    }
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        s += x[i];
    }
    float inv = (float)(1.0 / s);
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

/*==================================================================================================
 MARK: LayerNorm
==================================================================================================*/

static int64_t ln_size(const sdict_module *m) {
    int64_t n = 1;
    for (int32_t i = 0; i < m->cfg.normalized_ndim; i++) n *= m->cfg.normalized_shape[i];
    return n;
}

static sdict_status layernorm_forward(sdict_module *m, const sdict_act *x, sdict_act *y,
                                      sdict_error *err) {
    const sdict_module_config *c = &m->cfg;
    sdict_status st = need_f32(m, x, c->normalized_ndim, err);
    if (st != SDICT_OK) return st;
    for (int32_t i = 0; i < c->normalized_ndim; i++)
        if (x->shape[x->ndim - c->normalized_ndim + i] != c->normalized_shape[i])
            return sdict_nn__err(err, SDICT_E_SHAPE, "LayerNorm: the input's last %d dims do not "
                                 "match normalized_shape", (int)c->normalized_ndim);
    drop_caches(m);
    if ((st = sdict_act_init(y, SDICT_FLOAT32, x->ndim, x->shape, err)) != SDICT_OK) return st;
    int64_t n = ln_size(m), rows = sdict_act_numel(x) / n;
    const float *w = c->elementwise_affine ? pf32(&m->params[0].value) : NULL;
    const float *b = c->elementwise_affine && c->has_bias ? pf32(&m->params[1].value) : NULL;
    float *xhat = NULL, *rstd = NULL;
    if (m->training) {
        int64_t rs[1] = {rows};
        if ((st = sdict_act_init(&m->cache[1], SDICT_FLOAT32, x->ndim, x->shape, err)) != SDICT_OK ||
            (st = sdict_act_init(&m->cache[2], SDICT_FLOAT32, 1, rs, err)) != SDICT_OK) {
            drop_caches(m);
            sdict_act_free(y);
            return st;
        }
        xhat = m->cache[1].data;
        rstd = m->cache[2].data;
    }
    sdict_nn__layernorm_rows(x->data, y->data, rows, n, w, b, c->eps, xhat, rstd);
    return SDICT_OK;
}

sdict_status sdict_nn__layernorm_backward(sdict_module *m, const sdict_act *dy, sdict_act *dx,
                                       sdict_error *err) {
    const sdict_act *xh = &m->cache[1];
    if (!xh->data) return no_cache(m, err);
    sdict_status st = same_shape_dy(m, xh, dy, err);
    if (st != SDICT_OK) return st;
    const sdict_module_config *c = &m->cfg;
    int64_t n = ln_size(m), rows = sdict_act_numel(xh) / n;
    const float *X = xh->data, *R = m->cache[2].data, *DY = dy->data;
    const float *w = c->elementwise_affine ? pf32(&m->params[0].value) : NULL;
    if (c->elementwise_affine) {
        float *dw = pf32(&m->params[0].grad);
        float *db = c->has_bias ? pf32(&m->params[1].grad) : NULL;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t i = 0; i < n; i++) {
                dw[i] += DY[r * n + i] * X[r * n + i];
                if (db) db[i] += DY[r * n + i];
            }
    }
    if (!dx) return SDICT_OK;
    if ((st = sdict_act_init(dx, SDICT_FLOAT32, xh->ndim, xh->shape, err)) != SDICT_OK) return st;
    float *DX = dx->data;
    for (int64_t r = 0; r < rows; r++) {
        double s1 = 0.0, s2 = 0.0; /* mean(g), mean(g * xhat) with g = dy * w */
        for (int64_t i = 0; i < n; i++) {
            double g = (double)DY[r * n + i] * (w ? w[i] : 1.0f);
            s1 += g;
            s2 += g * X[r * n + i];
        }
        s1 /= (double)n;
        s2 /= (double)n;
        for (int64_t i = 0; i < n; i++) {
            double g = (double)DY[r * n + i] * (w ? w[i] : 1.0f);
            DX[r * n + i] = (float)(R[r] * (g - s1 - X[r * n + i] * s2));
        }
    }
    return SDICT_OK;
}

sdict_module *sdict_layernorm_new(int32_t ndim, const int64_t *normalized_shape, double eps,
                                  bool elementwise_affine, bool bias) {
    if (ndim < 1 || ndim > SDICT_NN_MAX_DIMS || !normalized_shape || !(eps >= 0.0)) return NULL;
    for (int32_t i = 0; i < ndim; i++)
        if (normalized_shape[i] <= 0) return NULL;
    sdict_module *m = sdict_module_new("LayerNorm", layernorm_forward, NULL);
    if (!m) return NULL;
    m->type = SDICT_MOD_LAYERNORM;
    m->cfg.normalized_ndim = ndim;
    memcpy(m->cfg.normalized_shape, normalized_shape, sizeof(int64_t) * (size_t)ndim);
    m->cfg.eps = eps;
    m->cfg.elementwise_affine = elementwise_affine;
    m->cfg.has_bias = elementwise_affine && bias;
    if (elementwise_affine) {
        sdict_named_tensor *w = NULL, *b = NULL;
        if (sdict_module_register(m, "weight", false, SDICT_FLOAT32, ndim, normalized_shape, &w,
                                  NULL) != SDICT_OK ||
            (bias && sdict_module_register(m, "bias", false, SDICT_FLOAT32, ndim,
                                           normalized_shape, &b, NULL) != SDICT_OK)) {
            sdict_module_free(m);
            return NULL;
        }
        (void)w; /* registering bias may move the params array: use m->params */
        float *p = pf32(&m->params[0].value);
        for (int64_t i = 0, n = sdict_tensor_numel(&m->params[0].value); i < n; i++) p[i] = 1.0f;
    }
    return m;
}

/*==================================================================================================
 MARK: GELU
==================================================================================================*/

static sdict_status gelu_forward(sdict_module *m, const sdict_act *x, sdict_act *y,
                                 sdict_error *err) {
    sdict_status st = need_f32(m, x, 0, err);
    if (st != SDICT_OK) return st;
    drop_caches(m);
    if ((st = sdict_act_copy(y, x, err)) != SDICT_OK) return st;
    sdict_nn__gelu(y->data, sdict_act_numel(y), m->cfg.gelu_tanh);
    if (m->training && (st = sdict_act_copy(&m->cache[0], x, err)) != SDICT_OK) sdict_act_free(y);
    return st;
}

sdict_status sdict_nn__gelu_backward(sdict_module *m, const sdict_act *dy, sdict_act *dx,
                                  sdict_error *err) {
    const sdict_act *x = &m->cache[0];
    if (!x->data) return no_cache(m, err);
    sdict_status st = same_shape_dy(m, x, dy, err);
    if (st != SDICT_OK || !dx) return st;
    if ((st = sdict_act_init(dx, SDICT_FLOAT32, x->ndim, x->shape, err)) != SDICT_OK) return st;
    const float *X = x->data, *DY = dy->data;
    float *DX = dx->data;
    for (int64_t i = 0, n = sdict_act_numel(x); i < n; i++)
        DX[i] = (float)(DY[i] * sdict_nn__gelu_grad(X[i], m->cfg.gelu_tanh));
    return SDICT_OK;
}

sdict_module *sdict_gelu_new(bool tanh_approximate) {
    sdict_module *m = sdict_module_new("GELU", gelu_forward, NULL);
    if (!m) return NULL;
    m->type = SDICT_MOD_GELU;
    m->cfg.gelu_tanh = tanh_approximate;
    return m;
}

/*==================================================================================================
 MARK: Softmax, LogSoftmax
==================================================================================================*/

/* x viewed as [outer, size, inner] around dim. */
static sdict_status split_dim(const sdict_module *m, const sdict_act *x, int64_t *outer,
                              int64_t *size, int64_t *inner, sdict_error *err) {
    int32_t nd = x->ndim ? x->ndim : 1, d = m->cfg.dim < 0 ? m->cfg.dim + nd : m->cfg.dim;
    if (d < 0 || d >= nd)
        return sdict_nn__err(err, SDICT_E_SHAPE, "%s: dim %d out of range for %d dims",
                             m->type_name, (int)m->cfg.dim, (int)x->ndim);
    *outer = 1;
    *inner = 1;
    *size = x->ndim ? x->shape[d] : 1;
    for (int32_t i = 0; i < d; i++) *outer *= x->shape[i];
    for (int32_t i = d + 1; i < x->ndim; i++) *inner *= x->shape[i];
    return SDICT_OK;
}

static sdict_status softmax_forward(sdict_module *m, const sdict_act *x, sdict_act *y,
                                    sdict_error *err) {
    sdict_status st = need_f32(m, x, 0, err);
    int64_t outer, size, inner;
    if (st != SDICT_OK || (st = split_dim(m, x, &outer, &size, &inner, err)) != SDICT_OK)
        return st;
    drop_caches(m);
    if ((st = sdict_act_copy(y, x, err)) != SDICT_OK) return st;
    bool logsm = m->type == SDICT_MOD_LOG_SOFTMAX;
    float *Y = y->data;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t in = 0; in < inner; in++) {
            float *p = Y + o * size * inner + in;
            float mx = -INFINITY;
            for (int64_t i = 0; i < size; i++) mx = p[i * inner] > mx ? p[i * inner] : mx;
            double s = 0.0;
            for (int64_t i = 0; i < size; i++) s += exp((double)p[i * inner] - mx);
            double lse = mx + log(s);
            for (int64_t i = 0; i < size; i++)
                p[i * inner] = logsm ? (float)(p[i * inner] - lse)
                                     : (float)exp((double)p[i * inner] - lse);
        }
    if (m->training && (st = sdict_act_copy(&m->cache[0], y, err)) != SDICT_OK) sdict_act_free(y);
    return st;
}

sdict_status sdict_nn__softmax_backward(sdict_module *m, const sdict_act *dy, sdict_act *dx,
                                     sdict_error *err) {
    const sdict_act *y = &m->cache[0];
    if (!y->data) return no_cache(m, err);
    sdict_status st = same_shape_dy(m, y, dy, err);
    int64_t outer, size, inner;
    if (st != SDICT_OK || !dx || (st = split_dim(m, y, &outer, &size, &inner, err)) != SDICT_OK)
        return st;
    if ((st = sdict_act_init(dx, SDICT_FLOAT32, y->ndim, y->shape, err)) != SDICT_OK) return st;
    bool logsm = m->type == SDICT_MOD_LOG_SOFTMAX;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t in = 0; in < inner; in++) {
            int64_t base = o * size * inner + in;
            const float *Y = (const float *)y->data + base, *G = (const float *)dy->data + base;
            float *D = (float *)dx->data + base;
            double s = 0.0;
            for (int64_t i = 0; i < size; i++)
                s += logsm ? G[i * inner] : (double)G[i * inner] * Y[i * inner];
            for (int64_t i = 0; i < size; i++)
                D[i * inner] = logsm ? (float)(G[i * inner] - exp(Y[i * inner]) * s)
                                     : (float)(Y[i * inner] * (G[i * inner] - s));
        }
    return SDICT_OK;
}

static sdict_module *softmax_new(sdict_module_type type, const char *name, int32_t dim) {
    sdict_module *m = sdict_module_new(name, softmax_forward, NULL);
    if (!m) return NULL;
    m->type = type;
    m->cfg.dim = dim;
    return m;
}

sdict_module *sdict_softmax_new(int32_t dim) {
    return softmax_new(SDICT_MOD_SOFTMAX, "Softmax", dim);
}

sdict_module *sdict_log_softmax_new(int32_t dim) {
    return softmax_new(SDICT_MOD_LOG_SOFTMAX, "LogSoftmax", dim);
}

/*==================================================================================================
 MARK: Hugging Face Conv1D
==================================================================================================*/

static sdict_status hf_conv1d_forward(sdict_module *m, const sdict_act *x, sdict_act *y,
                                      sdict_error *err) {
    sdict_status st = need_f32(m, x, 1, err);
    if (st != SDICT_OK) return st;
    int64_t nx = m->cfg.in_features, nf = m->cfg.out_features;
    if (x->shape[x->ndim - 1] != nx)
        return sdict_nn__err(err, SDICT_E_SHAPE, "Conv1D: input has %lld features, expected %lld",
                             (long long)x->shape[x->ndim - 1], (long long)nx);
    drop_caches(m);
    int64_t shape[SDICT_NN_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = nf;
    if ((st = sdict_act_init(y, SDICT_FLOAT32, x->ndim, shape, err)) != SDICT_OK) return st;
    int64_t rows = sdict_act_numel(x) / nx;
    float *Y = y->data;
    const float *b = pf32(&m->params[1].value);
    for (int64_t r = 0; r < rows; r++) memcpy(Y + r * nf, b, sizeof(float) * (size_t)nf);
    if (rows > 0) /* Y[rows, nf] = b + X[rows, nx] . W[nx, nf] (torch.addmm) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)nf, (int)nx, 1.0f,
                    x->data, (int)nx, pf32(&m->params[0].value), (int)nf, 1.0f, Y, (int)nf);
    if (m->training && (st = sdict_act_copy(&m->cache[0], x, err)) != SDICT_OK) sdict_act_free(y);
    return st;
}

sdict_status sdict_nn__hf_conv1d_backward(sdict_module *m, const sdict_act *dy, sdict_act *dx,
                                       sdict_error *err) {
    const sdict_act *x = &m->cache[0];
    if (!x->data) return no_cache(m, err);
    int64_t nx = m->cfg.in_features, nf = m->cfg.out_features;
    int64_t shape[SDICT_NN_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = nf;
    sdict_act ref = {.dtype = SDICT_FLOAT32, .ndim = x->ndim};
    memcpy(ref.shape, shape, sizeof shape);
    sdict_status st = same_shape_dy(m, &ref, dy, err);
    if (st != SDICT_OK) return st;
    int64_t rows = sdict_act_numel(x) / nx;
    const float *DY = dy->data;
    float *dW = pf32(&m->params[0].grad), *db = pf32(&m->params[1].grad);
    if (rows > 0) /* dW[nx, nf] += X^T[nx, rows] . dY[rows, nf] */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)nx, (int)nf, (int)rows, 1.0f,
                    x->data, (int)nx, DY, (int)nf, 1.0f, dW, (int)nf);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t o = 0; o < nf; o++) db[o] += DY[r * nf + o];
    if (!dx) return SDICT_OK;
    if ((st = sdict_act_init(dx, SDICT_FLOAT32, x->ndim, x->shape, err)) != SDICT_OK) return st;
    if (rows > 0) /* dX[rows, nx] = dY[rows, nf] . W^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)nx, (int)nf, 1.0f,
                    DY, (int)nf, pf32(&m->params[0].value), (int)nf, 0.0f, dx->data, (int)nx);
    return SDICT_OK;
}

sdict_module *sdict_hf_conv1d_new(int64_t nf, int64_t nx) {
    if (nf <= 0 || nx <= 0 || nf > INT32_MAX || nx > INT32_MAX) return NULL;
    sdict_module *m = sdict_module_new("Conv1D", hf_conv1d_forward, NULL);
    if (!m) return NULL;
    m->type = SDICT_MOD_HF_CONV1D;
    m->cfg.in_features = nx;
    m->cfg.out_features = nf;
    m->cfg.has_bias = true;
    int64_t ws[2] = {nx, nf};
    sdict_named_tensor *w = NULL;
    if (sdict_module_register(m, "weight", false, SDICT_FLOAT32, 2, ws, &w, NULL) != SDICT_OK ||
        sdict_module_register(m, "bias", false, SDICT_FLOAT32, 1, &nf, NULL, NULL) != SDICT_OK) {
        sdict_module_free(m);
        return NULL;
    }
    /* N(0, 0.02) as transformers' _init_weights in distribution (Box-Muller, our generator) */
    uint64_t s = 0xC0DEULL ^ ((uint64_t)nx << 20) ^ (uint64_t)nf;
    (void)w; /* registering bias moved the params array: use m->params */
    float *p = pf32(&m->params[0].value);
    for (int64_t i = 0; i < nx * nf; i++) {
        s += 0x9E3779B97F4A7C15ULL;
        uint64_t z = s;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        z ^= z >> 31;
        double u1 = ((double)(z >> 40) + 0.5) / 16777216.0;
        double u2 = (double)((z >> 8) & 0xFFFFFF) / 16777216.0;
        p[i] = (float)(0.02 * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
    }
    return m;
}
