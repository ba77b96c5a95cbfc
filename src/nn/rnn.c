/*
 rnn.c - nn.LSTM and nn.GRU: constructors with torch's parameter names and layout, the
 forward over a sequence (several layers, both directions, batch_first, initial states) and
 backpropagation through time.

 Internally every sequence is time-major, [T, B, features]. Per layer and direction the input
 projection of all T steps is one sgemm (X W_ih^T); each step adds h W_hh^T (one sgemm over
 the batch) and applies the gates. A training-mode forward keeps (see sdict_module.cache):
   cache[0]  the input x as given (its shape tells batched / batch_first);
   cache[1]  one float buffer, laid out by rnn_ws below: h0, c0 (LSTM), x time-major, then per
             layer its output Y [T, B, D*H], its input after dropout X [T, B, D*H] (layers
             above the first), and per direction the activated gates [T, B, G*H] and aux
             [T, B, H]: the cell state c_t (LSTM) or W_hn h + b_hn (GRU's n needs it);
   cache[2]  the dropout masks between layers [num_layers - 1, T, B, D*H], scaled by 1/(1-p).
*/
#include "nn_private.h"
#include "statedict_optim.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


/*==================================================================================================
 MARK: Shapes and workspace layout
==================================================================================================*/

typedef struct rnn_dims {
    int64_t T, B, In, H, L, D, G;
    bool batched, lstm;
} rnn_dims;

static float *pf32(const sdict_module *m, int64_t k) {
    return (float *)sdict_storage_data(m->params[k].value.storage);
}

static float *gf32(const sdict_module *m, int64_t k) {
    return (float *)sdict_storage_data(m->params[k].grad.storage);
}

/* Index of parameter j (0 w_ih, 1 w_hh, 2 b_ih, 3 b_hh) of layer l, direction d. */
static int64_t pidx(const sdict_module *m, const rnn_dims *r, int64_t l, int64_t d, int j) {
    return (l * r->D + d) * (m->cfg.has_bias ? 4 : 2) + j;
}

/* Element offsets into the workspace (cache[1]). */
static int64_t ws_x0(const rnn_dims *r) {
    return r->L * r->D * r->B * r->H * (r->lstm ? 2 : 1);
}
static int64_t ws_layer_size(const rnn_dims *r) {
    int64_t tb = r->T * r->B;
    return 2 * tb * r->D * r->H + r->D * (tb * r->G * r->H + tb * r->H);
}
static int64_t ws_layer(const rnn_dims *r, int64_t l) {
    return ws_x0(r) + r->T * r->B * r->In + l * ws_layer_size(r);
}
static int64_t ws_Y(const rnn_dims *r, int64_t l) { return ws_layer(r, l); }
static int64_t ws_X(const rnn_dims *r, int64_t l) {
    return ws_layer(r, l) + r->T * r->B * r->D * r->H;
}
static int64_t ws_gates(const rnn_dims *r, int64_t l, int64_t d) {
    int64_t tb = r->T * r->B;
    return ws_layer(r, l) + 2 * tb * r->D * r->H + d * (tb * r->G * r->H + tb * r->H);
}
static int64_t ws_aux(const rnn_dims *r, int64_t l, int64_t d) {
    return ws_gates(r, l, d) + r->T * r->B * r->G * r->H;
}

static bool is_rnn(const sdict_module *m) {
    return m && (m->type == SDICT_MOD_LSTM || m->type == SDICT_MOD_GRU);
}

/* Reads T, B, I from x's shape (as torch: [L, N, H_in], batch_first [N, L, H_in], unbatched
   [L, H_in]) and checks it against the module. */
static sdict_status rnn_dims_of(const sdict_module *m, const sdict_act *x, rnn_dims *r,
                                sdict_error *err) {
    memset(r, 0, sizeof *r);
    if (x->dtype != SDICT_FLOAT32 || (x->ndim != 2 && x->ndim != 3))
        return sdict_nn__err(err, SDICT_E_SHAPE, "%s: expected a float32 input of 2 (unbatched) "
                             "or 3 dims, got %s with %d dims", m->type_name,
                             sdict_dtype_name(x->dtype), (int)x->ndim);
    r->batched = x->ndim == 3;
    r->lstm = m->type == SDICT_MOD_LSTM;
    r->G = r->lstm ? 4 : 3;
    r->H = m->cfg.out_features;
    r->L = m->cfg.num_layers;
    r->D = m->cfg.bidirectional ? 2 : 1;
    if (r->batched) {
        r->T = x->shape[m->cfg.batch_first ? 1 : 0];
        r->B = x->shape[m->cfg.batch_first ? 0 : 1];
        r->In = x->shape[2];
    } else {
        r->T = x->shape[0];
        r->B = 1;
        r->In = x->shape[1];
    }
    if (r->In != m->cfg.in_features)
        return sdict_nn__err(err, SDICT_E_SHAPE, "%s: input.size(-1) must be equal to input_size. "
                             "Expected %lld, got %lld", m->type_name,
                             (long long)m->cfg.in_features, (long long)r->In);
    if (r->T < 1)
        return sdict_nn__err(err, SDICT_E_SHAPE, "%s: Expected sequence length to be larger "
                             "than 0 in RNN", m->type_name);
    if (r->B < 1)   /* torch runs an empty batch; statedict refuses it rather than guess */
        return sdict_nn__err(err, SDICT_E_SHAPE, "%s: a batch of size 0 is not supported",
                             m->type_name);
    if (r->B > INT32_MAX || r->T > INT32_MAX || r->T * r->B > INT32_MAX)
        return sdict_nn__err(err, SDICT_E_LIMIT, "%s: sequence of %lld x %lld steps is too long",
                             m->type_name, (long long)r->T, (long long)r->B);
    return SDICT_OK;
}

/* Shape of h0/h_n: [L*D, B, H], or [L*D, H] unbatched. */
static int32_t state_shape(const rnn_dims *r, int64_t *shape) {
    shape[0] = r->L * r->D;
    if (!r->batched) {
        shape[1] = r->H;
        return 2;
    }
    shape[1] = r->B;
    shape[2] = r->H;
    return 3;
}

static bool same_shape(const sdict_act *a, int32_t nd, const int64_t *shape) {
    return a->dtype == SDICT_FLOAT32 && a->ndim == nd &&
           memcmp(a->shape, shape, sizeof(int64_t) * (size_t)nd) == 0;
}

static void shape_str(const int64_t *s, int32_t nd, char *buf, size_t n) {
    size_t off = 0;
    buf[0] = '\0';
    for (int32_t i = 0; i < nd && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, "%s%lld", i ? ", " : "", (long long)s[i]);
}

static sdict_status check_state(const sdict_module *m, const char *what, const sdict_act *a,
                                int32_t nd, const int64_t *shape, sdict_error *err) {
    if (!a || same_shape(a, nd, shape)) return SDICT_OK;
    char want[96], got[96];
    shape_str(shape, nd, want, sizeof want);
    shape_str(a->shape, a->ndim, got, sizeof got);
    return sdict_nn__err(err, SDICT_E_SHAPE, "%s: Expected %s size (%s), got [%s] (%s)",
                         m->type_name, what, want, got, sdict_dtype_name(a->dtype));
}

/* Output shape: [T, B, D*H], batch-first [B, T, D*H], unbatched [T, D*H]. */
static int32_t output_shape(const sdict_module *m, const rnn_dims *r, int64_t *shape) {
    if (!r->batched) {
        shape[0] = r->T;
        shape[1] = r->D * r->H;
        return 2;
    }
    shape[0] = m->cfg.batch_first ? r->B : r->T;
    shape[1] = m->cfg.batch_first ? r->T : r->B;
    shape[2] = r->D * r->H;
    return 3;
}

/* Between the caller's layout and time-major [T, B, F]: dst = src reordered to time-major, or
   (to_user) back to the caller's layout. */
static void swap_tb(const sdict_module *m, const rnn_dims *r, int64_t F, const float *src,
                    float *dst, bool to_user) {
    if (!r->batched || !m->cfg.batch_first) {
        memcpy(dst, src, sizeof(float) * (size_t)(r->T * r->B * F));
        return;
    }
    for (int64_t a = 0; a < r->B; a++)
        for (int64_t t = 0; t < r->T; t++) {
            int64_t user = (a * r->T + t) * F, time = (t * r->B + a) * F;
            memcpy(dst + (to_user ? user : time), src + (to_user ? time : user),
                   sizeof(float) * (size_t)F);
        }
}

static float sigm(float v) { return 1.0f / (1.0f + expf(-v)); }


/* Y[rows, n] (ldy) = X[rows, k] (ldx) . W[n, k]^T, plus b when not NULL (beta 0 or 1). */
static void gemm_xwt(int64_t rows, int64_t n, int64_t k, const float *X, int64_t ldx,
                     const float *W, const float *b, float *Y, float beta) {
    if (rows <= 0 || n <= 0) return;
    if (k > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)n, (int)k, 1.0f, X,
                    (int)ldx, W, (int)k, beta, Y, (int)n);
    else if (beta == 0.0f)
        memset(Y, 0, sizeof(float) * (size_t)(rows * n));
    if (b)
        for (int64_t i = 0; i < rows; i++)
            for (int64_t j = 0; j < n; j++) Y[i * n + j] += b[j];
}

/*==================================================================================================
 MARK: Forward
==================================================================================================*/

static sdict_status nomem(const sdict_module *m, sdict_error *err) {
    return sdict_nn__err(err, SDICT_E_NOMEM, "%s: out of memory", m->type_name);
}

sdict_status sdict_rnn_forward(sdict_module *m, const sdict_act *x, const sdict_act *h0,
                               const sdict_act *c0, sdict_act *output, sdict_act *h_n,
                               sdict_act *c_n, sdict_error *err) {
    if (output) memset(output, 0, sizeof *output);
    if (h_n) memset(h_n, 0, sizeof *h_n);
    if (c_n) memset(c_n, 0, sizeof *c_n);
    if (!is_rnn(m) || !x || !output)
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "rnn forward: not an LSTM/GRU module, "
                             "or NULL input or output");
    if (m->type == SDICT_MOD_GRU && (c0 || c_n))
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "GRU: has no cell state (c0 / c_n)");
    rnn_dims r;
    sdict_status st = rnn_dims_of(m, x, &r, err);
    if (st != SDICT_OK) return st;
    int64_t sshape[3], oshape[3];
    int32_t snd = state_shape(&r, sshape), ond = output_shape(m, &r, oshape);
    if ((st = check_state(m, "hidden", h0, snd, sshape, err)) != SDICT_OK) return st;
    if ((st = check_state(m, "cell", c0, snd, sshape, err)) != SDICT_OK) return st;

    for (int i = 0; i < SDICT_MODULE_CACHE; i++) sdict_act_free(&m->cache[i]);
    int64_t T = r.T, B = r.B, H = r.H, D = r.D, G = r.G, L = r.L, DH = D * H, GH = G * H;
    double total = (double)ws_layer(&r, L) + (double)ws_layer_size(&r);
    if (total * 4.0 > 1e15) return nomem(m, err);
    sdict_act ws = {0};
    int64_t wsn = ws_layer(&r, L);
    if ((st = sdict_act_init(&ws, SDICT_FLOAT32, 1, &wsn, err)) != SDICT_OK) return st;
    float *W = ws.data;
    bool drop = m->training && m->cfg.p > 0.0 && L > 1;
    sdict_act masks = {0};
    float *hw = NULL;
    if (drop) {
        int64_t ms[4] = {L - 1, T, B, DH};
        if ((st = sdict_act_init(&masks, SDICT_FLOAT32, 4, ms, err)) != SDICT_OK) goto fail;
    }
    hw = malloc(sizeof(float) * (size_t)(B * GH > 0 ? B * GH : 1));
    if (!hw) {
        st = nomem(m, err);
        goto fail;
    }
    float *H0 = W, *C0 = r.lstm ? W + L * D * B * H : NULL;
    if (h0) memcpy(H0, h0->data, sizeof(float) * (size_t)(L * D * B * H));
    if (c0) memcpy(C0, c0->data, sizeof(float) * (size_t)(L * D * B * H));
    swap_tb(m, &r, r.In, x->data, W + ws_x0(&r), false);

    for (int64_t l = 0; l < L; l++) {
        int64_t in = l == 0 ? r.In : DH;
        const float *X = l == 0 ? W + ws_x0(&r) : W + ws_X(&r, l);
        float *Y = W + ws_Y(&r, l);
        for (int64_t d = 0; d < D; d++) {
            const float *Wih = pf32(m, pidx(m, &r, l, d, 0)), *Whh = pf32(m, pidx(m, &r, l, d, 1));
            const float *bih = m->cfg.has_bias ? pf32(m, pidx(m, &r, l, d, 2)) : NULL;
            const float *bhh = m->cfg.has_bias ? pf32(m, pidx(m, &r, l, d, 3)) : NULL;
            float *gates = W + ws_gates(&r, l, d), *aux = W + ws_aux(&r, l, d);
            gemm_xwt(T * B, GH, in, X, in, Wih, bih, gates, 0.0f);
            const float *hp = H0 + (l * D + d) * B * H;
            const float *cp = r.lstm ? C0 + (l * D + d) * B * H : NULL;
            int64_t ldh = H;
            for (int64_t s = 0; s < T; s++) {
                int64_t t = d == 0 ? s : T - 1 - s;
                gemm_xwt(B, GH, H, hp, ldh, Whh, bhh, hw, 0.0f);
                float *g = gates + t * B * GH, *a = aux + t * B * H, *y = Y + t * B * DH + d * H;
                for (int64_t b = 0; b < B; b++) {
                    float *gb = g + b * GH, *hb = hw + b * GH, *ab = a + b * H, *yb = y + b * DH;
                    for (int64_t j = 0; j < H; j++) {
                        if (r.lstm) {
                            float i_ = sigm(gb[j] + hb[j]), f_ = sigm(gb[H + j] + hb[H + j]);
                            float g_ = tanhf(gb[2 * H + j] + hb[2 * H + j]);
                            float o_ = sigm(gb[3 * H + j] + hb[3 * H + j]);
                            float c = f_ * cp[b * H + j] + i_ * g_;
                            gb[j] = i_; gb[H + j] = f_; gb[2 * H + j] = g_; gb[3 * H + j] = o_;
                            ab[j] = c;
                            yb[j] = o_ * tanhf(c);
                        } else {
                            float r_ = sigm(gb[j] + hb[j]), z_ = sigm(gb[H + j] + hb[H + j]);
                            float hn = hb[2 * H + j];
                            float n_ = tanhf(gb[2 * H + j] + r_ * hn);
                            gb[j] = r_; gb[H + j] = z_; gb[2 * H + j] = n_;
                            ab[j] = hn;
                            yb[j] = (1.0f - z_) * n_ + z_ * hp[b * ldh + j];
                        }
                    }
                }
                hp = y;
                ldh = DH;
                if (r.lstm) cp = a;
            }
            if (h_n && !h_n->data) {
                if ((st = sdict_act_init(h_n, SDICT_FLOAT32, snd, sshape, err)) != SDICT_OK)
                    goto fail;
            }
            if (c_n && !c_n->data) {
                if ((st = sdict_act_init(c_n, SDICT_FLOAT32, snd, sshape, err)) != SDICT_OK)
                    goto fail;
            }
            for (int64_t b = 0; h_n && b < B; b++)
                memcpy((float *)h_n->data + ((l * D + d) * B + b) * H, hp + b * ldh,
                       sizeof(float) * (size_t)H);
            if (c_n)
                memcpy((float *)c_n->data + (l * D + d) * B * H, cp,
                       sizeof(float) * (size_t)(B * H));
        }
        if (l + 1 < L) {
            float *Xn = W + ws_X(&r, l + 1);
            int64_t n = T * B * DH;
            if (drop) {
                /* torch: dropout on each layer's output but the last, in training mode */
                float *mk = (float *)masks.data + l * n;
                double p = m->cfg.p;
                float scale = p >= 1.0 ? 0.0f : (float)(1.0 / (1.0 - p));
                for (int64_t i = 0; i < n; i++) {
                    mk[i] = sdict_nn__rng_uniform(&m->rng) < p ? 0.0f : scale;
                    Xn[i] = Y[i] * mk[i];
                }
            } else {
                memcpy(Xn, Y, sizeof(float) * (size_t)n);
            }
        }
    }
    if ((st = sdict_act_init(output, SDICT_FLOAT32, ond, oshape, err)) != SDICT_OK) goto fail;
    swap_tb(m, &r, DH, W + ws_Y(&r, L - 1), output->data, true);
    free(hw);
    if (m->training) {
        if ((st = sdict_act_copy(&m->cache[0], x, err)) != SDICT_OK) {
            hw = NULL;
            goto fail;
        }
        m->cache[1] = ws;
        m->cache[2] = masks;
    } else {
        sdict_act_free(&ws);
        sdict_act_free(&masks);
    }
    return SDICT_OK;
fail:
    free(hw);
    sdict_act_free(&ws);
    sdict_act_free(&masks);
    sdict_act_free(output);
    if (h_n) sdict_act_free(h_n);
    if (c_n) sdict_act_free(c_n);
    return st;
}

static sdict_status rnn_module_forward(sdict_module *m, const sdict_act *x, sdict_act *y,
                                       sdict_error *err) {
    return sdict_rnn_forward(m, x, NULL, NULL, y, NULL, NULL, err);
}

/*==================================================================================================
 MARK: Backward (through time)
==================================================================================================*/

/* db[n] += column sums of A[rows, n]. */
static void colsum_add(const float *A, int64_t rows, int64_t n, float *db) {
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < n; j++) db[j] += A[i * n + j];
}

sdict_status sdict_rnn_backward(sdict_module *m, const sdict_act *doutput, const sdict_act *dh_n,
                                const sdict_act *dc_n, sdict_act *dx, sdict_act *dh0,
                                sdict_act *dc0, sdict_error *err) {
    if (dx) memset(dx, 0, sizeof *dx);
    if (dh0) memset(dh0, 0, sizeof *dh0);
    if (dc0) memset(dc0, 0, sizeof *dc0);
    if (!is_rnn(m) || !doutput)
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "rnn backward: not an LSTM/GRU module, "
                             "or NULL output gradient");
    if (m->type == SDICT_MOD_GRU && (dc_n || dc0))
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "GRU: has no cell state (dc_n / dc0)");
    const sdict_act *x = &m->cache[0];
    rnn_dims r;
    if (!m->cache[1].data || (x->ndim != 2 && x->ndim != 3) ||
        rnn_dims_of(m, x, &r, NULL) != SDICT_OK ||
        sdict_act_numel(&m->cache[1]) != ws_layer(&r, r.L))
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "%s: backward needs a training-mode "
                             "forward first (no cached input)", m->type_name);
    int64_t T = r.T, B = r.B, H = r.H, D = r.D, G = r.G, L = r.L, DH = D * H, GH = G * H;
    int64_t sshape[3], oshape[3];
    int32_t snd = state_shape(&r, sshape), ond = output_shape(m, &r, oshape);
    if (!same_shape(doutput, ond, oshape))
        return sdict_nn__err(err, SDICT_E_SHAPE, "%s: output gradient does not match the "
                             "forward output's shape", m->type_name);
    sdict_status st = check_state(m, "hidden gradient", dh_n, snd, sshape, err);
    if (st == SDICT_OK) st = check_state(m, "cell gradient", dc_n, snd, sshape, err);
    if (st != SDICT_OK) return st;

    const float *W = m->cache[1].data;
    const float *masks = m->cache[2].data;
    int64_t maxin = r.In > DH ? r.In : DH;
    float *dY = malloc(sizeof(float) * (size_t)(T * B * DH));
    float *dX = malloc(sizeof(float) * (size_t)(T * B * maxin));
    float *dA = malloc(sizeof(float) * (size_t)(T * B * GH));
    size_t bh = sizeof(float) * (size_t)(B * H);
    float *dh = malloc(bh), *dhn = malloc(bh), *dc = malloc(bh);
    float *dhw = malloc(sizeof(float) * (size_t)(B * GH));
    if (!dY || !dX || !dA || !dh || !dhn || !dc || !dhw) {
        st = nomem(m, err);
        goto done;
    }
    if (dh0 && (st = sdict_act_init(dh0, SDICT_FLOAT32, snd, sshape, err)) != SDICT_OK) goto done;
    if (dc0 && (st = sdict_act_init(dc0, SDICT_FLOAT32, snd, sshape, err)) != SDICT_OK) goto done;
    swap_tb(m, &r, DH, doutput->data, dY, false);
    const float *H0 = W, *C0 = r.lstm ? W + L * D * B * H : NULL;

    for (int64_t l = L - 1; l >= 0; l--) {
        int64_t in = l == 0 ? r.In : DH;
        const float *X = l == 0 ? W + ws_x0(&r) : W + ws_X(&r, l);
        const float *Y = W + ws_Y(&r, l);
        memset(dX, 0, sizeof(float) * (size_t)(T * B * in));
        for (int64_t d = 0; d < D; d++) {
            int64_t k = l * D + d;
            const float *Wih = pf32(m, pidx(m, &r, l, d, 0)), *Whh = pf32(m, pidx(m, &r, l, d, 1));
            float *gWih = gf32(m, pidx(m, &r, l, d, 0)), *gWhh = gf32(m, pidx(m, &r, l, d, 1));
            float *gbih = m->cfg.has_bias ? gf32(m, pidx(m, &r, l, d, 2)) : NULL;
            float *gbhh = m->cfg.has_bias ? gf32(m, pidx(m, &r, l, d, 3)) : NULL;
            const float *gates = W + ws_gates(&r, l, d), *aux = W + ws_aux(&r, l, d);
            if (dh_n) memcpy(dh, (const float *)dh_n->data + k * B * H, bh);
            else memset(dh, 0, bh);
            if (dc_n) memcpy(dc, (const float *)dc_n->data + k * B * H, bh);
            else memset(dc, 0, bh);
            for (int64_t s = T - 1; s >= 0; s--) {
                int64_t t = d == 0 ? s : T - 1 - s;
                int64_t tp = d == 0 ? t - 1 : t + 1;   /* the step processed before t */
                const float *hp = s == 0 ? H0 + k * B * H : Y + tp * B * DH + d * H;
                int64_t ldh = s == 0 ? H : DH;
                const float *cp = !r.lstm ? NULL : s == 0 ? C0 + k * B * H : aux + tp * B * H;
                const float *g = gates + t * B * GH, *a = aux + t * B * H;
                const float *dy = dY + t * B * DH + d * H;
                float *da = dA + t * B * GH;
                float *dhh = r.lstm ? da : dhw;   /* gradient of h W_hh^T + b_hh */
                for (int64_t b = 0; b < B; b++)
                    for (int64_t j = 0; j < H; j++) {
                        float dhv = dh[b * H + j] + dy[b * DH + j];
                        const float *gb = g + b * GH;
                        float *db_ = da + b * GH, *dhb = dhh + b * GH;
                        if (r.lstm) {
                            float i_ = gb[j], f_ = gb[H + j];
                            float g_ = gb[2 * H + j], o_ = gb[3 * H + j];
                            float tc = tanhf(a[b * H + j]);
                            float dcv = dc[b * H + j] + dhv * o_ * (1.0f - tc * tc);
                            db_[j] = dcv * g_ * i_ * (1.0f - i_);
                            db_[H + j] = dcv * cp[b * H + j] * f_ * (1.0f - f_);
                            db_[2 * H + j] = dcv * i_ * (1.0f - g_ * g_);
                            db_[3 * H + j] = dhv * tc * o_ * (1.0f - o_);
                            dc[b * H + j] = dcv * f_;
                        } else {
                            float r_ = gb[j], z_ = gb[H + j], n_ = gb[2 * H + j];
                            float hn = a[b * H + j], hpv = hp[b * ldh + j];
                            float dan = dhv * (1.0f - z_) * (1.0f - n_ * n_);
                            float dar = dan * hn * r_ * (1.0f - r_);
                            float daz = dhv * (hpv - n_) * z_ * (1.0f - z_);
                            db_[j] = dhb[j] = dar;
                            db_[H + j] = dhb[H + j] = daz;
                            db_[2 * H + j] = dan;
                            dhb[2 * H + j] = dan * r_;
                            dh[b * H + j] = dhv * z_;   /* the direct path z h */
                        }
                    }
                /* dh_prev = dhh[B, GH] . W_hh[GH, H] (+ z dh for GRU, kept in dh) */
                if (B > 0)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)B, (int)H, (int)GH,
                                1.0f, dhh, (int)GH, Whh, (int)H, 0.0f, dhn, (int)H);
                if (!r.lstm)
                    for (int64_t i = 0; i < B * H; i++) dhn[i] += dh[i];
                float *tmp = dh;
                dh = dhn;
                dhn = tmp;
                /* dW_hh[GH, H] += dhh^T . h_prev[B, H] */
                if (B > 0)
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)GH, (int)H, (int)B,
                                1.0f, dhh, (int)GH, hp, (int)ldh, 1.0f, gWhh, (int)H);
                if (gbhh) colsum_add(dhh, B, GH, gbhh);
            }
            if (dh0) memcpy((float *)dh0->data + k * B * H, dh, bh);
            if (dc0) memcpy((float *)dc0->data + k * B * H, dc, bh);
            /* dW_ih[GH, in] += dA^T . X[TB, in]; dX[TB, in] += dA . W_ih */
            if (T * B > 0) {
                if (in > 0) {
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)GH, (int)in,
                                (int)(T * B), 1.0f, dA, (int)GH, X, (int)in, 1.0f, gWih, (int)in);
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(T * B), (int)in,
                                (int)GH, 1.0f, dA, (int)GH, Wih, (int)in, 1.0f, dX, (int)in);
                }
                if (gbih) colsum_add(dA, T * B, GH, gbih);
            }
        }
        if (l > 0) {
            /* back through the dropout between layer l-1 and l */
            int64_t n = T * B * DH;
            const float *mk = masks ? masks + (l - 1) * n : NULL;
            for (int64_t i = 0; i < n; i++) dY[i] = mk ? dX[i] * mk[i] : dX[i];
        }
    }
    if (dx) {
        if ((st = sdict_act_init(dx, SDICT_FLOAT32, x->ndim, x->shape, err)) != SDICT_OK) goto done;
        swap_tb(m, &r, r.In, dX, dx->data, true);
    }
    st = SDICT_OK;
done:
    if (st != SDICT_OK) {
        if (dx) sdict_act_free(dx);
        if (dh0) sdict_act_free(dh0);
        if (dc0) sdict_act_free(dc0);
    }
    free(dY);
    free(dX);
    free(dA);
    free(dh);
    free(dhn);
    free(dc);
    free(dhw);
    return st;
}

/*==================================================================================================
 MARK: Constructors
==================================================================================================*/

static sdict_module *rnn_new(sdict_module_type type, const char *name, int64_t input_size,
                             int64_t hidden_size, int64_t num_layers, bool bias, bool batch_first,
                             double dropout, bool bidirectional) {
    int64_t G = type == SDICT_MOD_LSTM ? 4 : 3;
    if (input_size <= 0 || hidden_size <= 0 || num_layers <= 0 || input_size > INT32_MAX ||
        hidden_size > INT32_MAX / G || num_layers > 1000000 || !(dropout >= 0.0 && dropout <= 1.0))
        return NULL;
    sdict_module *m = sdict_module_new(name, rnn_module_forward, NULL);
    if (!m) return NULL;
    m->type = type;
    sdict_module_config *c = &m->cfg;
    c->in_features = input_size;
    c->out_features = hidden_size;
    c->num_layers = num_layers;
    c->has_bias = bias;
    c->batch_first = batch_first;
    c->p = dropout;
    c->bidirectional = bidirectional;
    m->rng = 0x5EEDF00DULL;
    int64_t D = bidirectional ? 2 : 1;
    uint64_t seed = (type == SDICT_MOD_LSTM ? 0x55ULL : 0x66ULL) ^ ((uint64_t)input_size << 24) ^
                    ((uint64_t)hidden_size << 8) ^ (uint64_t)num_layers;
    double bound = 1.0 / sqrt((double)hidden_size);
    for (int64_t l = 0; l < num_layers; l++)
        for (int64_t d = 0; d < D; d++) {
            const char *names[4] = {"weight_ih", "weight_hh", "bias_ih", "bias_hh"};
            for (int j = 0; j < (bias ? 4 : 2); j++) {
                char key[64];
                snprintf(key, sizeof key, "%s_l%lld%s", names[j], (long long)l,
                         d ? "_reverse" : "");
                int64_t shape[2] = {G * hidden_size, j == 0 ? (l == 0 ? input_size
                                                                      : D * hidden_size)
                                                            : hidden_size};
                sdict_named_tensor *nt = NULL;
                if (sdict_module_register(m, key, false, SDICT_FLOAT32, j < 2 ? 2 : 1, shape, &nt,
                                          NULL) != SDICT_OK) {
                    sdict_module_free(m);
                    return NULL;
                }
                float *p = sdict_storage_data(nt->value.storage);
                int64_t n = sdict_tensor_numel(&nt->value);
                for (int64_t i = 0; i < n; i++)
                    p[i] = (float)((2.0 * sdict_nn__rng_uniform(&seed) - 1.0) * bound);
            }
        }
    return m;
}

sdict_module *sdict_lstm_new(int64_t input_size, int64_t hidden_size, int64_t num_layers,
                             bool bias, bool batch_first, double dropout, bool bidirectional) {
    return rnn_new(SDICT_MOD_LSTM, "LSTM", input_size, hidden_size, num_layers, bias, batch_first,
                   dropout, bidirectional);
}

sdict_module *sdict_gru_new(int64_t input_size, int64_t hidden_size, int64_t num_layers,
                            bool bias, bool batch_first, double dropout, bool bidirectional) {
    return rnn_new(SDICT_MOD_GRU, "GRU", input_size, hidden_size, num_layers, bias, batch_first,
                   dropout, bidirectional);
}
