/*
 backward.c - backward passes for the built-in modules, Sequential and the recipe's Net.

 Each rule reads what the training-mode forward cached in the module (statedict_nn.h,
 sdict_module.cache), adds parameter gradients into the grad tensors (+=, as autograd
 accumulates into .grad) and optionally produces dL/dx. Linear and Conv2d use cblas_sgemm.
*/
#include "nn_private.h"
#include "statedict_optim.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>


static float *f32(const sdict_tensor *t) { return (float *)sdict_storage_data(t->storage); }

static sdict_named_tensor *param(sdict_module *m, const char *name) {
    for (size_t i = 0; i < m->n_params; i++)
        if (strcmp(m->params[i].name, name) == 0) return &m->params[i];
    return NULL;
}

static sdict_status no_cache(const sdict_module *m, sdict_error *err) {
    return sdict_nn__err(err, SDICT_E_INVALID_ARG, "%s: backward needs a training-mode forward "
                         "first (no cached input)", m->type_name);
}

static sdict_status check_dy(const sdict_module *m, const sdict_act *dy, int32_t ndim,
                             const int64_t *shape, sdict_error *err) {
    if (dy->dtype != SDICT_FLOAT32 || dy->ndim != ndim ||
        memcmp(dy->shape, shape, sizeof(int64_t) * (size_t)ndim) != 0)
        return sdict_nn__err(err, SDICT_E_SHAPE, "%s: output gradient does not match the "
                             "forward output's shape", m->type_name);
    return SDICT_OK;
}

/*==================================================================================================
 MARK: Linear
==================================================================================================*/

static sdict_status linear_backward(sdict_module *m, const sdict_act *dy, sdict_act *dx,
                                    sdict_error *err) {
    const sdict_act *x = &m->cache[0];
    if (!x->data && sdict_act_numel(x) != 0) return no_cache(m, err);
    if (x->ndim == 0) return no_cache(m, err);
    int64_t in = m->cfg.in_features, out = m->cfg.out_features;
    int64_t oshape[SDICT_NN_MAX_DIMS];
    memcpy(oshape, x->shape, sizeof oshape);
    oshape[x->ndim - 1] = out;
    sdict_status st = check_dy(m, dy, x->ndim, oshape, err);
    if (st != SDICT_OK) return st;
    int64_t rows = sdict_act_numel(x) / in;
    float *W = f32(&m->params[0].value), *dW = f32(&m->params[0].grad);
    if (rows > 0) {
        /* dW[out, in] += dy[rows, out]^T . x[rows, in] */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)out, (int)in, (int)rows, 1.0f,
                    dy->data, (int)out, x->data, (int)in, 1.0f, dW, (int)in);
        if (m->cfg.has_bias) {
            float *db = f32(&m->params[1].grad);
            const float *D = dy->data;
            for (int64_t r = 0; r < rows; r++)
                for (int64_t o = 0; o < out; o++) db[o] += D[r * out + o];
        }
    }
    if (!dx) return SDICT_OK;
    if ((st = sdict_act_init(dx, SDICT_FLOAT32, x->ndim, x->shape, err)) != SDICT_OK) return st;
    if (rows > 0) /* dx[rows, in] = dy[rows, out] . W[out, in] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)in, (int)out, 1.0f,
                    dy->data, (int)out, W, (int)in, 0.0f, dx->data, (int)in);
    return SDICT_OK;
}

/*==================================================================================================
 MARK: Conv2d
==================================================================================================*/

typedef struct conv_geom {
    int64_t N, C, H, W, O, OH, OW, G, Cg, Og, K, P;
} conv_geom;

static void im2col(const float *img, const conv_geom *g, const sdict_module_config *c,
                   float *col) {
    int64_t kh = c->kernel[0], kw = c->kernel[1];
    for (int64_t ch = 0; ch < g->Cg; ch++)
        for (int64_t ki = 0; ki < kh; ki++)
            for (int64_t kj = 0; kj < kw; kj++) {
                float *row = col + ((ch * kh + ki) * kw + kj) * g->P;
                for (int64_t oh = 0; oh < g->OH; oh++) {
                    int64_t ih = oh * c->stride[0] - c->padding[0] + ki * c->dilation[0];
                    for (int64_t ow = 0; ow < g->OW; ow++) {
                        int64_t iw = ow * c->stride[1] - c->padding[1] + kj * c->dilation[1];
                        row[oh * g->OW + ow] = (ih >= 0 && ih < g->H && iw >= 0 && iw < g->W)
                                                   ? img[(ch * g->H + ih) * g->W + iw] : 0.0f;
                    }
                }
            }
}

/* The adjoint of im2col: scatters col back into img (+=), dropping the padding. */
static void col2im_add(const float *col, const conv_geom *g, const sdict_module_config *c,
                       float *img) {
    int64_t kh = c->kernel[0], kw = c->kernel[1];
    for (int64_t ch = 0; ch < g->Cg; ch++)
        for (int64_t ki = 0; ki < kh; ki++)
            for (int64_t kj = 0; kj < kw; kj++) {
                const float *row = col + ((ch * kh + ki) * kw + kj) * g->P;
                for (int64_t oh = 0; oh < g->OH; oh++) {
                    int64_t ih = oh * c->stride[0] - c->padding[0] + ki * c->dilation[0];
                    if (ih < 0 || ih >= g->H) continue;
                    for (int64_t ow = 0; ow < g->OW; ow++) {
                        int64_t iw = ow * c->stride[1] - c->padding[1] + kj * c->dilation[1];
                        if (iw >= 0 && iw < g->W) img[(ch * g->H + ih) * g->W + iw] += row[oh * g->OW + ow];
                    }
                }
            }
}

static sdict_status conv2d_backward(sdict_module *m, const sdict_act *dy, sdict_act *dx,
                                    sdict_error *err) {
    const sdict_act *x = &m->cache[0];
    if (x->ndim != 4) return no_cache(m, err);
    const sdict_module_config *c = &m->cfg;
    conv_geom g;
    g.N = x->shape[0]; g.C = x->shape[1]; g.H = x->shape[2]; g.W = x->shape[3];
    g.O = c->out_features; g.G = c->groups; g.Cg = g.C / g.G; g.Og = g.O / g.G;
    g.OH = (g.H + 2 * c->padding[0] - c->dilation[0] * (c->kernel[0] - 1) - 1) / c->stride[0] + 1;
    g.OW = (g.W + 2 * c->padding[1] - c->dilation[1] * (c->kernel[1] - 1) - 1) / c->stride[1] + 1;
    g.K = g.Cg * c->kernel[0] * c->kernel[1];
    g.P = g.OH * g.OW;
    int64_t oshape[4] = {g.N, g.O, g.OH, g.OW};
    sdict_status st = check_dy(m, dy, 4, oshape, err);
    if (st != SDICT_OK) return st;
    if (dx && (st = sdict_act_init(dx, SDICT_FLOAT32, 4, x->shape, err)) != SDICT_OK) return st;
    size_t colsz = (size_t)(g.K * g.P > 0 ? g.K * g.P : 1);
    float *col = malloc(colsz * sizeof(float)), *dcol = dx ? malloc(colsz * sizeof(float)) : NULL;
    if (!col || (dx && !dcol)) {
        free(col);
        free(dcol);
        if (dx) sdict_act_free(dx);
        return sdict_nn__err(err, SDICT_E_NOMEM, "Conv2d: out of memory");
    }
    const float *Wt = f32(&m->params[0].value), *X = x->data, *D = dy->data;
    float *dW = f32(&m->params[0].grad);
    for (int64_t n = 0; n < g.N && g.P > 0; n++)
        for (int64_t gr = 0; gr < g.G; gr++) {
            const float *dyg = D + (n * g.O + gr * g.Og) * g.P;
            im2col(X + (n * g.C + gr * g.Cg) * g.H * g.W, &g, c, col);
            /* dW_g[Og, K] += dy_g[Og, P] . col[K, P]^T */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)g.Og, (int)g.K, (int)g.P,
                        1.0f, dyg, (int)g.P, col, (int)g.P, 1.0f, dW + gr * g.Og * g.K, (int)g.K);
            if (dx) {
                /* dcol[K, P] = W_g[Og, K]^T . dy_g[Og, P] */
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)g.K, (int)g.P,
                            (int)g.Og, 1.0f, Wt + gr * g.Og * g.K, (int)g.K, dyg, (int)g.P, 0.0f,
                            dcol, (int)g.P);
                col2im_add(dcol, &g, c, (float *)dx->data + (n * g.C + gr * g.Cg) * g.H * g.W);
            }
        }
    free(col);
    free(dcol);
    if (c->has_bias) {
        float *db = f32(&m->params[1].grad);
        for (int64_t n = 0; n < g.N; n++)
            for (int64_t o = 0; o < g.O; o++) {
                double s = 0.0;
                for (int64_t i = 0; i < g.P; i++) s += D[(n * g.O + o) * g.P + i];
                db[o] += (float)s;
            }
    }
    return SDICT_OK;
}

/*==================================================================================================
 MARK: Element-wise, reshaping and pooling
==================================================================================================*/

/* dx = dy where ref > 0, else 0 (ReLU's backward; torch's threshold_backward). */
static sdict_status relu_mask(const sdict_act *ref, const sdict_act *dy, sdict_act *dx,
                              sdict_error *err) {
    sdict_status st = sdict_act_init(dx, SDICT_FLOAT32, dy->ndim, dy->shape, err);
    if (st != SDICT_OK) return st;
    const float *R = ref->data, *D = dy->data;
    float *O = dx->data;
    int64_t n = sdict_act_numel(dy);
    for (int64_t i = 0; i < n; i++) O[i] = R[i] > 0.0f ? D[i] : 0.0f;
    return SDICT_OK;
}

static sdict_status relu_backward(sdict_module *m, const sdict_act *dy, sdict_act *dx,
                                  sdict_error *err) {
    const sdict_act *x = &m->cache[0];
    if (x->dtype != SDICT_FLOAT32 || (!x->data && sdict_act_numel(x))) return no_cache(m, err);
    sdict_status st = check_dy(m, dy, x->ndim, x->shape, err);
    if (st != SDICT_OK || !dx) return st;
    return relu_mask(x, dy, dx, err);
}

static sdict_status flatten_backward(sdict_module *m, const sdict_act *dy, sdict_act *dx,
                                     sdict_error *err) {
    const sdict_act *x = &m->cache[0];
    if (x->ndim == 0 && !x->data) return no_cache(m, err);
    if (dy->dtype != SDICT_FLOAT32 || sdict_act_numel(dy) != sdict_act_numel(x))
        return sdict_nn__err(err, SDICT_E_SHAPE, "Flatten: output gradient does not match");
    if (!dx) return SDICT_OK;
    sdict_status st = sdict_act_copy(dx, dy, err);
    if (st != SDICT_OK) return st;
    dx->ndim = x->ndim;
    memcpy(dx->shape, x->shape, sizeof dx->shape);
    return SDICT_OK;
}

static sdict_status dropout_backward(sdict_module *m, const sdict_act *dy, sdict_act *dx,
                                     sdict_error *err) {
    if (!dx) return SDICT_OK;
    if (!m->training) return sdict_act_copy(dx, dy, err);   /* eval: identity */
    const sdict_act *mask = &m->cache[1];
    if (mask->ndim != dy->ndim || sdict_act_numel(mask) != sdict_act_numel(dy) ||
        (!mask->data && sdict_act_numel(dy)))
        return no_cache(m, err);
    sdict_status st = sdict_act_copy(dx, dy, err);
    if (st != SDICT_OK) return st;
    float *O = dx->data;
    const float *M = mask->data;
    int64_t n = sdict_act_numel(dy);
    for (int64_t i = 0; i < n; i++) O[i] *= M[i];   /* the mask already holds 1/(1-p) */
    return SDICT_OK;
}

static sdict_status embedding_backward(sdict_module *m, const sdict_act *dy, sdict_act *dx,
                                       sdict_error *err) {
    const sdict_act *x = &m->cache[0];
    if (x->dtype != SDICT_INT64 || (!x->data && sdict_act_numel(x))) return no_cache(m, err);
    int64_t dim = m->cfg.embedding_dim, n = sdict_act_numel(x);
    if (dy->dtype != SDICT_FLOAT32 || sdict_act_numel(dy) != n * dim)
        return sdict_nn__err(err, SDICT_E_SHAPE, "Embedding: output gradient does not match");
    float *dW = f32(&m->params[0].grad);
    const int64_t *idx = x->data;
    const float *D = dy->data;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < dim; j++) dW[idx[i] * dim + j] += D[i * dim + j];
    if (dx) memset(dx, 0, sizeof *dx);   /* indices have no gradient */
    return SDICT_OK;
}

/* MaxPool2d backward: the gradient goes to the window's maximum, the first one on ties (as
   torch's CPU kernel and nn's forward: strictly greater replaces, NaN wins). The argmax is
   recomputed from the input x, so it also serves a pool module that ran more than once. */
static sdict_status maxpool_bwd(const sdict_module *m, const sdict_act *x, const sdict_act *dy,
                                sdict_act *dx, sdict_error *err) {
    const sdict_module_config *c = &m->cfg;
    if (x->ndim != 4 || x->dtype != SDICT_FLOAT32) return no_cache(m, err);
    int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    int64_t OH = (H + 2 * c->padding[0] - c->kernel[0]) / c->stride[0] + 1;
    int64_t OW = (W + 2 * c->padding[1] - c->kernel[1]) / c->stride[1] + 1;
    int64_t oshape[4] = {N, C, OH, OW};
    sdict_status st = check_dy(m, dy, 4, oshape, err);
    if (st != SDICT_OK || !dx) return st;
    if ((st = sdict_act_init(dx, SDICT_FLOAT32, 4, x->shape, err)) != SDICT_OK) return st;
    int64_t *A = malloc((size_t)(N * C * OH * OW) * sizeof *A + 1);
    if (!A) {
        sdict_act_free(dx);
        return sdict_nn__err(err, SDICT_E_NOMEM, "MaxPool2d backward: out of memory");
    }
    sdict_nn__maxpool2d_scan(c, x->data, N * C, H, W, OH, OW, NULL, A);
    const float *D = dy->data;
    float *O = dx->data;
    for (int64_t p = 0; p < N * C; p++)
        for (int64_t k = 0; k < OH * OW; k++)
            if (A[p * OH * OW + k] >= 0) O[p * H * W + A[p * OH * OW + k]] += D[p * OH * OW + k];
    free(A);
    return SDICT_OK;
}

static sdict_status maxpool_backward(sdict_module *m, const sdict_act *dy, sdict_act *dx,
                                     sdict_error *err) {
    return maxpool_bwd(m, &m->cache[0], dy, dx, err);
}

static sdict_status avgpool_backward(sdict_module *m, const sdict_act *dy, sdict_act *dx,
                                     sdict_error *err) {
    const sdict_act *x = &m->cache[0];
    if (x->ndim != 4) return no_cache(m, err);
    const sdict_module_config *c = &m->cfg;
    int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    bool adaptive = m->type == SDICT_MOD_ADAPTIVE_AVGPOOL2D;
    int64_t OH = adaptive ? c->output_size[0] : (H + 2 * c->padding[0] - c->kernel[0]) / c->stride[0] + 1;
    int64_t OW = adaptive ? c->output_size[1] : (W + 2 * c->padding[1] - c->kernel[1]) / c->stride[1] + 1;
    int64_t oshape[4] = {N, C, OH, OW};
    sdict_status st = check_dy(m, dy, 4, oshape, err);
    if (st != SDICT_OK || !dx) return st;
    if ((st = sdict_act_init(dx, SDICT_FLOAT32, 4, x->shape, err)) != SDICT_OK) return st;
    const float *D = dy->data;
    float *O = dx->data;
    for (int64_t p = 0; p < N * C; p++)
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++) {
                int64_t h0, h1, w0, w1;
                double div;
                if (adaptive) {
                    h0 = oh * H / OH; h1 = ((oh + 1) * H + OH - 1) / OH;
                    w0 = ow * W / OW; w1 = ((ow + 1) * W + OW - 1) / OW;
                    div = (double)((h1 - h0) * (w1 - w0));
                } else {
                    /* count_include_pad=True: the divisor is always kh*kw */
                    h0 = oh * c->stride[0] - c->padding[0]; h1 = h0 + c->kernel[0];
                    w0 = ow * c->stride[1] - c->padding[1]; w1 = w0 + c->kernel[1];
                    div = (double)(c->kernel[0] * c->kernel[1]);
                }
                float g = (float)(D[(p * OH + oh) * OW + ow] / div);
                for (int64_t ih = h0 < 0 ? 0 : h0; ih < h1 && ih < H; ih++)
                    for (int64_t iw = w0 < 0 ? 0 : w0; iw < w1 && iw < W; iw++)
                        O[(p * H + ih) * W + iw] += g;
            }
    return SDICT_OK;
}

/*==================================================================================================
 MARK: BatchNorm
==================================================================================================*/

/* Training backward with batch statistics over M = N*S values per channel:
   dx = invstd/M * (M*dxh - sum(dxh) - xh*sum(dxh*xh)), dxh = dy*gamma;
   dgamma += sum(dy*xh), dbeta += sum(dy). */
static sdict_status batchnorm_backward(sdict_module *m, const sdict_act *dy, sdict_act *dx,
                                       sdict_error *err) {
    const sdict_act *x = &m->cache[0], *xh = &m->cache[1], *inv = &m->cache[2];
    if (!m->training || x->ndim < 2 || !xh->data || !inv->data)
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "%s: backward is implemented for "
                             "training-mode forwards (batch statistics) only", m->type_name);
    sdict_status st = check_dy(m, dy, x->ndim, x->shape, err);
    if (st != SDICT_OK) return st;
    int64_t N = x->shape[0], C = x->shape[1], S = 1;
    for (int32_t i = 2; i < x->ndim; i++) S *= x->shape[i];
    double M = (double)(N * S);
    sdict_named_tensor *w = param(m, "weight"), *b = param(m, "bias");
    if (dx && (st = sdict_act_init(dx, SDICT_FLOAT32, x->ndim, x->shape, err)) != SDICT_OK)
        return st;
    const float *D = dy->data, *XH = xh->data, *IS = inv->data;
    for (int64_t ch = 0; ch < C; ch++) {
        double sdy = 0.0, sdyxh = 0.0;
        for (int64_t n = 0; n < N; n++)
            for (int64_t s = 0; s < S; s++) {
                int64_t i = (n * C + ch) * S + s;
                sdy += D[i];
                sdyxh += (double)D[i] * XH[i];
            }
        if (w) f32(&w->grad)[ch] += (float)sdyxh;
        if (b) f32(&b->grad)[ch] += (float)sdy;
        if (!dx) continue;
        double gamma = w ? f32(&w->value)[ch] : 1.0;
        double k = gamma * IS[ch] / M;
        float *O = dx->data;
        for (int64_t n = 0; n < N; n++)
            for (int64_t s = 0; s < S; s++) {
                int64_t i = (n * C + ch) * S + s;
                O[i] = (float)(k * (M * D[i] - sdy - XH[i] * sdyxh));
            }
    }
    return SDICT_OK;
}

/*==================================================================================================
 MARK: Sigmoid, Tanh, SiLU, Conv1d
==================================================================================================*/

/* dx from the cached input x: sigmoid' = s(1-s), tanh' = 1-t^2, silu' = s(1 + x(1-s)). */
static sdict_status pointwise_backward(sdict_module *m, const sdict_act *dy, sdict_act *dx,
                                       sdict_error *err) {
    const sdict_act *x = &m->cache[0];
    if (x->dtype != SDICT_FLOAT32 || (!x->data && sdict_act_numel(x))) return no_cache(m, err);
    sdict_status st = check_dy(m, dy, x->ndim, x->shape, err);
    if (st != SDICT_OK || !dx) return st;
    if ((st = sdict_act_init(dx, SDICT_FLOAT32, x->ndim, x->shape, err)) != SDICT_OK) return st;
    const float *X = x->data, *D = dy->data;
    float *O = dx->data;
    int64_t n = sdict_act_numel(x);
    for (int64_t i = 0; i < n; i++) {
        float v = X[i];
        if (m->type == SDICT_MOD_TANH) {
            float t = tanhf(v);
            O[i] = D[i] * (1.0f - t * t);
        } else {
            float s = 1.0f / (1.0f + expf(-v));
            O[i] = m->type == SDICT_MOD_SIGMOID ? D[i] * s * (1.0f - s)
                                                : D[i] * s * (1.0f + v * (1.0f - s));
        }
    }
    return SDICT_OK;
}

/* Conv1d ran as Conv2d over [N, C, 1, L] and cached that 4-D input (layers.c). */
static sdict_status conv1d_backward(sdict_module *m, const sdict_act *dy, sdict_act *dx,
                                    sdict_error *err) {
    const sdict_act *x = &m->cache[0];
    if (x->ndim != 4) return no_cache(m, err);
    bool batched = dy->ndim == 3;
    if (dy->ndim != 2 && dy->ndim != 3)
        return sdict_nn__err(err, SDICT_E_SHAPE, "Conv1d: output gradient does not match the "
                             "forward output's shape");
    sdict_act dy4 = *dy;
    dy4.ndim = 4;
    dy4.shape[0] = batched ? dy->shape[0] : 1;
    dy4.shape[1] = dy->shape[batched ? 1 : 0];
    dy4.shape[2] = 1;
    dy4.shape[3] = dy->shape[batched ? 2 : 1];
    sdict_status st = conv2d_backward(m, &dy4, dx, err);
    if (st != SDICT_OK || !dx) return st;
    int64_t N = dx->shape[0], C = dx->shape[1], L = dx->shape[3];
    if (batched) {
        dx->ndim = 3;
        dx->shape[2] = L;
    } else {
        dx->ndim = 2;
        dx->shape[0] = C;
        dx->shape[1] = L;
        (void)N;
    }
    dx->shape[3] = 0;
    return SDICT_OK;
}

/*==================================================================================================
 MARK: Containers and dispatch
==================================================================================================*/

static sdict_status sequential_backward(sdict_module *m, const sdict_act *dy, sdict_act *dx,
                                        sdict_error *err) {
    if (dx) memset(dx, 0, sizeof *dx);
    if (m->n_children == 0) return dx ? sdict_act_copy(dx, dy, err) : SDICT_OK;
    sdict_act cur;
    sdict_status st = sdict_act_copy(&cur, dy, err);
    for (size_t k = m->n_children; st == SDICT_OK && k-- > 0;) {
        sdict_act next = {0};
        bool want = k > 0 || dx;
        st = sdict_module_backward(m->children[k], &cur, want ? &next : NULL, err);
        sdict_act_free(&cur);
        cur = next;
    }
    if (st == SDICT_OK && dx) *dx = cur;
    else sdict_act_free(&cur);
    return st;
}

sdict_status sdict_module_backward(sdict_module *m, const sdict_act *dy, sdict_act *dx,
                                   sdict_error *err) {
    if (dx) memset(dx, 0, sizeof *dx);
    if (!m || !dy) return sdict_nn__err(err, SDICT_E_INVALID_ARG, "backward: NULL argument");
    if (m->backward) return m->backward(m, dy, dx, err);
    switch (m->type) {
    case SDICT_MOD_SEQUENTIAL: return sequential_backward(m, dy, dx, err);
    case SDICT_MOD_LINEAR: return linear_backward(m, dy, dx, err);
    case SDICT_MOD_CONV2D: return conv2d_backward(m, dy, dx, err);
    case SDICT_MOD_BATCHNORM1D:
    case SDICT_MOD_BATCHNORM2D: return batchnorm_backward(m, dy, dx, err);
    case SDICT_MOD_DROPOUT: return dropout_backward(m, dy, dx, err);
    case SDICT_MOD_EMBEDDING: return embedding_backward(m, dy, dx, err);
    case SDICT_MOD_RELU: return relu_backward(m, dy, dx, err);
    case SDICT_MOD_MAXPOOL2D: return maxpool_backward(m, dy, dx, err);
    case SDICT_MOD_AVGPOOL2D:
    case SDICT_MOD_ADAPTIVE_AVGPOOL2D: return avgpool_backward(m, dy, dx, err);
    case SDICT_MOD_FLATTEN: return flatten_backward(m, dy, dx, err);
    case SDICT_MOD_SIGMOID:
    case SDICT_MOD_TANH:
    case SDICT_MOD_SILU: return pointwise_backward(m, dy, dx, err);
    case SDICT_MOD_CONV1D: return conv1d_backward(m, dy, dx, err);
    case SDICT_MOD_LSTM:
    case SDICT_MOD_GRU: return sdict_rnn_backward(m, dy, NULL, NULL, dx, NULL, NULL, err);
    case SDICT_MOD_LAYERNORM: return sdict_nn__layernorm_backward(m, dy, dx, err);
    case SDICT_MOD_GELU: return sdict_nn__gelu_backward(m, dy, dx, err);
    case SDICT_MOD_SOFTMAX:
    case SDICT_MOD_LOG_SOFTMAX: return sdict_nn__softmax_backward(m, dy, dx, err);
    case SDICT_MOD_HF_CONV1D: return sdict_nn__hf_conv1d_backward(m, dy, dx, err);
    default:
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "%s: no backward (set module->backward "
                             "for a custom container)", m->type_name);
    }
}

/*==================================================================================================
 MARK: The recipe's Net
==================================================================================================*/

/* Runs child backward, replacing *cur with its input gradient. */
static sdict_status back(sdict_module *m, const char *name, sdict_act *cur, bool want,
                         sdict_error *err) {
    sdict_module *c = sdict_module_child(m, name);
    if (!c) return sdict_nn__err(err, SDICT_E_NOT_FOUND, "%s: no child \"%s\"", m->type_name, name);
    sdict_act next = {0};
    sdict_status st = sdict_module_backward(c, cur, want ? &next : NULL, err);
    sdict_act_free(cur);
    *cur = next;
    return st;
}

/* *cur = *cur masked by ref > 0 (the functional ReLU between layers). */
static sdict_status back_relu(const sdict_act *ref, sdict_act *cur, sdict_error *err) {
    if (ref->dtype != SDICT_FLOAT32 || sdict_act_numel(ref) != sdict_act_numel(cur))
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "Net: backward needs a training-mode "
                             "forward first");
    sdict_act next;
    sdict_status st = relu_mask(ref, cur, &next, err);
    sdict_act_free(cur);
    *cur = next;
    return st;
}

sdict_status sdict_lenet_backward(sdict_module *m, const sdict_act *dy, sdict_act *dx,
                                  sdict_error *err) {
    /* forward: pool(relu(conv1 x)) -> pool(relu(conv2 .)) -> flatten -> relu(fc1) -> relu(fc2)
       -> fc3. The fc and conv2 inputs cached by the children are the post-ReLU activations. */
    if (dx) memset(dx, 0, sizeof *dx);
    sdict_module *conv1 = sdict_module_child(m, "conv1"), *pool = sdict_module_child(m, "pool");
    sdict_module *conv2 = sdict_module_child(m, "conv2"), *fc1 = sdict_module_child(m, "fc1");
    sdict_module *fc2 = sdict_module_child(m, "fc2"), *fc3 = sdict_module_child(m, "fc3");
    if (!conv1 || !pool || !conv2 || !fc1 || !fc2 || !fc3)
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "%s: not the recipe's Net", m->type_name);
    if (!m->training || pool->cache[0].ndim != 4 || conv1->cache[0].ndim != 4)
        return no_cache(m, err);
    sdict_act cur, a1 = {0}, xin = {0};
    sdict_status st = sdict_act_copy(&cur, dy, err);
    if (st == SDICT_OK) st = back(m, "fc3", &cur, true, err);
    if (st == SDICT_OK) st = back_relu(&fc3->cache[0], &cur, err);
    if (st == SDICT_OK) st = back(m, "fc2", &cur, true, err);
    if (st == SDICT_OK) st = back_relu(&fc2->cache[0], &cur, err);
    if (st == SDICT_OK) st = back(m, "fc1", &cur, true, err);
    if (st == SDICT_OK) {
        /* undo the flatten: back to the second pooling's output shape */
        const sdict_act *p2in = &pool->cache[0];
        int64_t N = p2in->shape[0], C = p2in->shape[1];
        int64_t OH = (p2in->shape[2] - pool->cfg.kernel[0]) / pool->cfg.stride[0] + 1;
        int64_t OW = (p2in->shape[3] - pool->cfg.kernel[1]) / pool->cfg.stride[1] + 1;
        if (sdict_act_numel(&cur) != N * C * OH * OW) st = no_cache(m, err);
        cur.ndim = 4;
        cur.shape[0] = N; cur.shape[1] = C; cur.shape[2] = OH; cur.shape[3] = OW;
    }
    if (st == SDICT_OK) { /* the pool's cache holds its second call: relu(conv2 out) */
        sdict_act next = {0};
        st = maxpool_bwd(pool, &pool->cache[0], &cur, &next, err);
        sdict_act_free(&cur);
        cur = next;
    }
    if (st == SDICT_OK) st = back_relu(&pool->cache[0], &cur, err);
    if (st == SDICT_OK) st = back(m, "conv2", &cur, true, err);
    /* the first pooling's input relu(conv1 x) was overwritten; recompute it (same input, same
       caches). The copy matters: conv1's forward replaces its cache before reading x. */
    if (st == SDICT_OK) st = sdict_act_copy(&xin, &conv1->cache[0], err);
    if (st == SDICT_OK) st = sdict_module_forward(conv1, &xin, &a1, err);
    if (st == SDICT_OK) {
        sdict_act_relu_(&a1);
        sdict_act next = {0};
        st = maxpool_bwd(pool, &a1, &cur, &next, err);
        sdict_act_free(&cur);
        cur = next;
    }
    if (st == SDICT_OK) st = back_relu(&a1, &cur, err);
    if (st == SDICT_OK) st = back(m, "conv1", &cur, dx != NULL, err);
    sdict_act_free(&a1);
    sdict_act_free(&xin);
    if (st == SDICT_OK && dx) *dx = cur;
    else sdict_act_free(&cur);
    return st;
}
