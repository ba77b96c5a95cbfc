/*
 attention.c - torch's nn.MultiheadAttention, nn.TransformerEncoderLayer and
 nn.TransformerDecoderLayer: constructors with torch's state_dict keys and float32 eval forwards
 following torch's math path (F.multi_head_attention_forward). Linear, LayerNorm and Dropout are
 the built-in modules (children, run through sdict_module_forward); the softmax, LayerNorm and
 GELU kernels are transformer.c's (nn_private.h).
*/
#include "nn_private.h"
#include "statedict_optim.h"

#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static float *pf32(const sdict_tensor *t) { return (float *)sdict_storage_data(t->storage); }

static bool is_type(const sdict_module *m, const char *name) {
    return m && m->type == SDICT_MOD_CUSTOM && m->type_name && strcmp(m->type_name, name) == 0;
}

static sdict_status not_a(const char *fn, const char *what, sdict_error *err) {
    return sdict_nn__err(err, SDICT_E_INVALID_ARG, "%s: the module is not a %s", fn, what);
}

/*==================================================================================================
 MARK: MultiheadAttention
==================================================================================================*/

/* A sequence input viewed as [N, L, E]: its length, batch and whether it is unbatched. */
typedef struct seq_view {
    int64_t n, l;
    bool unbatched;
} seq_view;

static sdict_status seq_shape(const char *what, const sdict_act *x, int64_t e, bool batch_first,
                              seq_view *v, sdict_error *err) {
    if (x->dtype != SDICT_FLOAT32 || (x->ndim != 2 && x->ndim != 3) || x->shape[x->ndim - 1] != e)
        return sdict_nn__err(err, SDICT_E_SHAPE, "MultiheadAttention: %s must be float32 "
                             "[L, N, %lld], [N, L, %lld] (batch_first) or [L, %lld]", what,
                             (long long)e, (long long)e, (long long)e);
    v->unbatched = x->ndim == 2;
    if (v->unbatched) {
        v->n = 1;
        v->l = x->shape[0];
    } else {
        v->n = batch_first ? x->shape[0] : x->shape[1];
        v->l = batch_first ? x->shape[1] : x->shape[0];
    }
    return SDICT_OK;
}

/* [L, N, E] <-> [N, L, E] (to_batch_major false: the reverse); a plain copy when batch-major. */
static void relayout(const float *src, float *dst, int64_t n, int64_t l, int64_t e,
                     bool src_batch_major) {
    if (src_batch_major) {
        memcpy(dst, src, sizeof(float) * (size_t)(n * l * e));
        return;
    }
    for (int64_t i = 0; i < l; i++)
        for (int64_t b = 0; b < n; b++)
            memcpy(dst + (b * l + i) * e, src + (i * n + b) * e, sizeof(float) * (size_t)e);
}

static void to_seq_major(const float *src, float *dst, int64_t n, int64_t l, int64_t e) {
    for (int64_t b = 0; b < n; b++)
        for (int64_t i = 0; i < l; i++)
            memcpy(dst + (i * n + b) * e, src + (b * l + i) * e, sizeof(float) * (size_t)e);
}

/* Y[rows, e] = X[rows, e] W[e, e]^T + b (W a row block of in_proj_weight). */
static void project(const float *X, const float *W, const float *b, float *Y, int64_t rows,
                    int64_t e) {
    for (int64_t r = 0; r < rows; r++) {
        if (b) memcpy(Y + r * e, b, sizeof(float) * (size_t)e);
        else memset(Y + r * e, 0, sizeof(float) * (size_t)e);
    }
    if (rows > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)e, (int)e, 1.0f, X,
                    (int)e, W, (int)e, 1.0f, Y, (int)e);
}

static sdict_status check_masks(const sdict_mha_args *a, const seq_view *q, int64_t s, int64_t h,
                                sdict_error *err) {
    const sdict_act *am = a->attn_mask, *kp = a->key_padding_mask;
    if (am) {
        bool ok = am->dtype == SDICT_FLOAT32 &&
                  ((am->ndim == 2 && am->shape[0] == q->l && am->shape[1] == s) ||
                   (am->ndim == 3 && am->shape[0] == q->n * h && am->shape[1] == q->l &&
                    am->shape[2] == s));
        if (!ok)
            return sdict_nn__err(err, SDICT_E_SHAPE, "MultiheadAttention: attn_mask must be "
                                 "[%lld, %lld] or [%lld, %lld, %lld]", (long long)q->l,
                                 (long long)s, (long long)(q->n * h), (long long)q->l,
                                 (long long)s);
    }
    if (kp) {
        bool ok = kp->dtype == SDICT_FLOAT32 &&
                  (q->unbatched ? kp->ndim == 1 && kp->shape[0] == s
                                : kp->ndim == 2 && kp->shape[0] == q->n && kp->shape[1] == s);
        if (!ok)
            return sdict_nn__err(err, SDICT_E_SHAPE, "MultiheadAttention: key_padding_mask must "
                                 "be [%lld, %lld]%s", (long long)q->n, (long long)s,
                                 q->unbatched ? " ([S] unbatched)" : "");
    }
    return SDICT_OK;
}

/* Adds the masks of batch row b, head hd to the scores sc [l, s]. */
static void apply_masks(const sdict_mha_args *a, float *sc, int64_t b, int64_t hd, int64_t nh,
                        int64_t l, int64_t s) {
    const sdict_act *am = a->attn_mask, *kp = a->key_padding_mask;
    if (am) {
        const float *M = (const float *)am->data + (am->ndim == 3 ? (b * nh + hd) * l * s : 0);
        for (int64_t i = 0; i < l * s; i++)
            sc[i] = a->attn_mask_bool ? (M[i] != 0.0f ? -INFINITY : sc[i]) : sc[i] + M[i];
    } else if (a->is_causal) {
        for (int64_t i = 0; i < l; i++)
            for (int64_t j = i + 1; j < s; j++) sc[i * s + j] = -INFINITY;
    }
    if (kp) {
        const float *K = (const float *)kp->data + b * s;
        for (int64_t i = 0; i < l; i++)
            for (int64_t j = 0; j < s; j++)
                sc[i * s + j] = a->key_padding_mask_bool ? (K[j] != 0.0f ? -INFINITY : sc[i * s + j])
                                                         : sc[i * s + j] + K[j];
    }
}

sdict_status sdict_multihead_attention_forward(sdict_module *m, const sdict_act *query,
                                               const sdict_act *key, const sdict_act *value,
                                               const sdict_mha_args *args, sdict_act *attn_output,
                                               sdict_act *attn_weights, sdict_error *err) {
    if (attn_output) memset(attn_output, 0, sizeof *attn_output);
    if (attn_weights) memset(attn_weights, 0, sizeof *attn_weights);
    if (!is_type(m, "MultiheadAttention") || !query || !key || !value || !attn_output)
        return not_a("sdict_multihead_attention_forward", "MultiheadAttention", err);
    static const sdict_mha_args none = {0};
    const sdict_mha_args *a = args ? args : &none;
    int64_t e = m->cfg.in_features, nh = m->cfg.attn.num_heads, hd = e / nh;
    bool bf = m->cfg.attn.batch_first;
    seq_view q = {0}, k = {0}, v = {0};
    sdict_status st;
    if ((st = seq_shape("query", query, e, bf, &q, err)) != SDICT_OK ||
        (st = seq_shape("key", key, e, bf, &k, err)) != SDICT_OK ||
        (st = seq_shape("value", value, e, bf, &v, err)) != SDICT_OK)
        return st;
    if (k.unbatched != q.unbatched || v.unbatched != q.unbatched || k.n != q.n || v.n != q.n ||
        v.l != k.l)
        return sdict_nn__err(err, SDICT_E_SHAPE, "MultiheadAttention: query, key and value must "
                             "have one batch size and key and value one length");
    int64_t n = q.n, l = q.l, s = k.l;
    if ((st = check_masks(a, &q, s, nh, err)) != SDICT_OK) return st;

    size_t nq = (size_t)(n * l * e), nk = (size_t)(n * s * e);
    float *buf = malloc(sizeof(float) * (3 * nq + 4 * nk + (size_t)(l * s)));
    if (!buf) return sdict_nn__err(err, SDICT_E_NOMEM, "MultiheadAttention: out of memory");
    float *xq = buf, *Q = xq + nq, *O = Q + nq, *xk = O + nq, *K = xk + nk, *xv = K + nk,
          *V = xv + nk, *sc = V + nk;
    bool bm = bf || q.unbatched;
    relayout(query->data, xq, n, l, e, bm);
    relayout(key->data, xk, n, s, e, bm);
    relayout(value->data, xv, n, s, e, bm);
    const float *W = pf32(&m->params[0].value);
    const float *B = m->cfg.has_bias ? pf32(&m->params[1].value) : NULL;
    project(xq, W, B, Q, n * l, e);
    project(xk, W + e * e, B ? B + e : NULL, K, n * s, e);
    project(xv, W + 2 * e * e, B ? B + 2 * e : NULL, V, n * s, e);

    /* torch drops attention probabilities (after softmax, before the product with v) in
       training mode only */
    double p = m->training ? m->cfg.p : 0.0;
    float dscale = p >= 1.0 ? 0.0f : (float)(1.0 / (1.0 - p));
    /* a training-mode forward whose key and value are one activation keeps
       [xq | xkv (cross-attention only) | Q | K | V | P | dropout mask (p > 0)] (cache[0]) and
       the sizes n, l, s, unbatched, self-attention, dropped (cache[1]) for backward */
    bool keep = m->training && key == value, self = keep && query == key;
    for (int i = 0; i < SDICT_MODULE_CACHE; i++) sdict_act_free(&m->cache[i]);
    float *Pc = NULL, *Dc = NULL;
    if (keep) {
        int64_t np = n * nh * l * s;
        int64_t cn = 2 * (int64_t)nq + (self ? 2 : 3) * (int64_t)nk + np + (p > 0.0 ? np : 0);
        int64_t meta = 6;
        if ((st = sdict_act_init(&m->cache[0], SDICT_FLOAT32, 1, &cn, err)) != SDICT_OK ||
            (st = sdict_act_init(&m->cache[1], SDICT_INT64, 1, &meta, err)) != SDICT_OK) {
            sdict_act_free(&m->cache[0]);
            free(buf);
            return st;
        }
        float *c = m->cache[0].data;
        memcpy(c, xq, sizeof(float) * nq);
        c += nq;
        if (!self) {
            memcpy(c, xk, sizeof(float) * nk);
            c += nk;
        }
        memcpy(c, Q, sizeof(float) * nq);
        memcpy(c + nq, K, sizeof(float) * nk);
        memcpy(c + nq + nk, V, sizeof(float) * nk);
        Pc = c + nq + 2 * nk;
        if (p > 0.0) Dc = Pc + np;
        int64_t *mt = m->cache[1].data;
        mt[0] = n;
        mt[1] = l;
        mt[2] = s;
        mt[3] = q.unbatched;
        mt[4] = self;
        mt[5] = p > 0.0;
    }
    bool want_w = a->need_weights && attn_weights;
    if (want_w) {
        int64_t ws[4];
        int32_t wn = 0;
        if (!q.unbatched) ws[wn++] = n;
        if (!a->average_attn_weights) ws[wn++] = nh;
        ws[wn++] = l;
        ws[wn++] = s;
        if ((st = sdict_act_init(attn_weights, SDICT_FLOAT32, wn, ws, err)) != SDICT_OK) {
            free(buf);
            return st;
        }
    }
    float scale = (float)(1.0 / sqrt((double)hd));
    for (int64_t b = 0; b < n; b++)
        for (int64_t h = 0; h < nh; h++) {
            /* sc[l, s] = (q_h * scale) k_h^T + masks, as torch scales q before the product */
            if (l > 0 && s > 0)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)l, (int)s, (int)hd,
                            scale, Q + b * l * e + h * hd, (int)e, K + b * s * e + h * hd, (int)e,
                            0.0f, sc, (int)s);
            apply_masks(a, sc, b, h, nh, l, s);
            for (int64_t i = 0; i < l; i++) sdict_nn__softmax_row(sc + i * s, s);
            if (Pc) memcpy(Pc + (b * nh + h) * l * s, sc, sizeof(float) * (size_t)(l * s));
            if (p > 0.0) {
                float *D = Dc ? Dc + (b * nh + h) * l * s : NULL;
                for (int64_t i = 0; i < l * s; i++) {
                    float keep_k = sdict_nn__rng_uniform(&m->rng) < p ? 0.0f : dscale;
                    if (D) D[i] = keep_k;
                    sc[i] *= keep_k;
                }
            }
            if (want_w) {
                float *w = (float *)attn_weights->data;
                if (a->average_attn_weights) {
                    w += b * l * s;
                    for (int64_t i = 0; i < l * s; i++) w[i] += sc[i] / (float)nh;
                } else {
                    memcpy(w + (b * nh + h) * l * s, sc, sizeof(float) * (size_t)(l * s));
                }
            }
            if (l > 0 && s > 0) /* O[:, h] = P[l, s] . v_h[s, hd] */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)l, (int)hd, (int)s,
                            1.0f, sc, (int)s, V + b * s * e + h * hd, (int)e, 0.0f,
                            O + b * l * e + h * hd, (int)e);
            else
                for (int64_t i = 0; i < l; i++)
                    memset(O + b * l * e + i * e + h * hd, 0, sizeof(float) * (size_t)hd);
        }

    sdict_act cat = {.dtype = SDICT_FLOAT32, .ndim = 2, .shape = {n * l, e}, .data = O};
    sdict_act y = {0};
    st = sdict_module_forward(sdict_module_child(m, "out_proj"), &cat, &y, err);
    if (st == SDICT_OK) {
        int64_t os[3];
        int32_t on = q.unbatched ? 2 : 3;
        if (q.unbatched) {
            os[0] = l;
            os[1] = e;
        } else {
            os[0] = bf ? n : l;
            os[1] = bf ? l : n;
            os[2] = e;
        }
        if ((st = sdict_act_init(attn_output, SDICT_FLOAT32, on, os, err)) == SDICT_OK) {
            if (bm) memcpy(attn_output->data, y.data, sizeof(float) * nq);
            else to_seq_major(y.data, attn_output->data, n, l, e);
        }
    }
    sdict_act_free(&y);
    free(buf);
    if (st != SDICT_OK && attn_weights) sdict_act_free(attn_weights);
    if (st != SDICT_OK)
        for (int i = 0; i < SDICT_MODULE_CACHE; i++) sdict_act_free(&m->cache[i]);
    return st;
}

void sdict_nn__sdpa_causal_forward(const float *Q, int64_t ldq, const float *K, const float *V,
                                   int64_t ldkv, int64_t l, int64_t s, int64_t past, int64_t hd,
                                   float scale, const float *M, float *P, float *O, int64_t ldo,
                                   float *scratch) {
    /* P[l, s] = scale * Q K^T, then row t's softmax over keys 0..past + t, 0 after */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)l, (int)s, (int)hd, scale, Q,
                (int)ldq, K, (int)ldkv, 0.0f, P, (int)s);
    for (int64_t t = 0; t < l; t++) {
        sdict_nn__softmax_row(P + t * s, past + t + 1);
        for (int64_t j = past + t + 1; j < s; j++) P[t * s + j] = 0.0f;
    }
    const float *Pv = P;
    if (M) {
        for (int64_t i = 0; i < l * s; i++) scratch[i] = P[i] * M[i];
        Pv = scratch;
    }
    /* O[l, hd] = Pv[l, s] . V[s, hd] */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)l, (int)hd, (int)s, 1.0f, Pv,
                (int)s, V, (int)ldkv, 0.0f, O, (int)ldo);
}

void sdict_nn__sdpa_backward(const float *P, const float *M, const float *Q, const float *K,
                             const float *V, int64_t ld, const float *dO, int64_t ldo, int64_t l,
                             int64_t s, int64_t hd, float scale, float *dQ, float *dK, float *dV,
                             float *scratch) {
    float *dP = scratch, *PM = scratch + l * s;
    const float *Pv = P; /* the weights that multiplied V: P, or P * M under dropout */
    if (M) {
        for (int64_t i = 0; i < l * s; i++) PM[i] = P[i] * M[i];
        Pv = PM;
    }
    /* dV = Pv^T dO; dPv = dO V^T */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)s, (int)hd, (int)l, 1.0f, Pv,
                (int)s, dO, (int)ldo, 0.0f, dV, (int)ld);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)l, (int)s, (int)hd, 1.0f, dO,
                (int)ldo, V, (int)ld, 0.0f, dP, (int)s);
    if (M)
        for (int64_t i = 0; i < l * s; i++) dP[i] *= M[i];
    for (int64_t i = 0; i < l; i++) { /* softmax backward: P (dP - sum(dP P)) */
        double dot = 0.0;
        for (int64_t j = 0; j < s; j++) dot += (double)dP[i * s + j] * P[i * s + j];
        for (int64_t j = 0; j < s; j++)
            dP[i * s + j] = (float)(P[i * s + j] * (dP[i * s + j] - dot));
    }
    /* scores = scale Q K^T: dQ = scale dS K, dK = scale dS^T Q */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)l, (int)hd, (int)s, scale, dP,
                (int)s, K, (int)ld, 0.0f, dQ, (int)ld);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)s, (int)hd, (int)l, scale, dP,
                (int)s, Q, (int)ld, 0.0f, dK, (int)ld);
}

/* a float32 act of shape [n, l, e] in the module's layout ([l, e] unbatched) from batch-major
   rows src [n * l, e] */
static sdict_status seq_out(sdict_act *out, const float *src, int64_t n, int64_t l, int64_t e,
                            bool bf, bool unb, sdict_error *err) {
    int64_t os[3] = {bf ? n : l, bf ? l : n, e};
    if (unb) {
        os[0] = l;
        os[1] = e;
    }
    sdict_status st = sdict_act_init(out, SDICT_FLOAT32, unb ? 2 : 3, os, err);
    if (st != SDICT_OK) return st;
    if (bf || unb) memcpy(out->data, src, sizeof(float) * (size_t)(n * l * e));
    else to_seq_major(src, out->data, n, l, e);
    return SDICT_OK;
}

sdict_status sdict_multihead_attention_backward(sdict_module *m, const sdict_act *dy,
                                                sdict_act *dquery, sdict_act *dkey_value,
                                                sdict_error *err) {
    if (dquery) memset(dquery, 0, sizeof *dquery);
    if (dkey_value) memset(dkey_value, 0, sizeof *dkey_value);
    if (!is_type(m, "MultiheadAttention") || !dy)
        return not_a("sdict_multihead_attention_backward", "MultiheadAttention", err);
    if (!m->cache[0].data || !m->cache[1].data || m->cache[1].shape[0] != 6)
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "MultiheadAttention: backward needs a "
                             "training-mode forward whose key and value are one activation "
                             "first (no cached input)");
    const int64_t *mt = m->cache[1].data;
    int64_t n = mt[0], l = mt[1], s = mt[2], e = m->cfg.in_features, nh = m->cfg.attn.num_heads;
    int64_t hd = e / nh;
    bool unb = mt[3] != 0, self = mt[4] != 0, dropped = mt[5] != 0;
    bool bf = m->cfg.attn.batch_first, bm = bf || unb;
    int64_t os[3] = {bf ? n : l, bf ? l : n, e};
    if (unb) {
        os[0] = l;
        os[1] = e;
    }
    int32_t ond = unb ? 2 : 3;
    if (dy->dtype != SDICT_FLOAT32 || dy->ndim != ond ||
        memcmp(dy->shape, os, sizeof(int64_t) * (size_t)ond) != 0)
        return sdict_nn__err(err, SDICT_E_SHAPE, "MultiheadAttention: output gradient does not "
                             "match the forward output's shape");
    size_t nq = (size_t)(n * l * e), nk = (size_t)(n * s * e), np = (size_t)(n * nh * l * s);
    const float *c = m->cache[0].data, *Xq = c, *Xkv = self ? c : c + nq;
    const float *Q = Xq + nq + (self ? 0 : nk), *K = Q + nq, *V = K + nk, *P = V + nk;
    const float *D = dropped ? P + np : NULL;
    float *buf = calloc(3 * nq + 4 * nk + 2 * (size_t)(l * s), sizeof(float));
    if (!buf) return sdict_nn__err(err, SDICT_E_NOMEM, "MultiheadAttention: out of memory");
    float *dYb = buf, *dQ = dYb + nq, *dXq = dQ + nq, *dK = dXq + nq, *dV = dK + nk,
          *dXkv = dV + nk, *dP = dXkv + nk;
    relayout(dy->data, dYb, n, l, e, bm);
    sdict_act dya = {.dtype = SDICT_FLOAT32, .ndim = 2, .shape = {n * l, e}, .data = dYb};
    sdict_act dO = {0};
    sdict_status st = sdict_module_backward(sdict_module_child(m, "out_proj"), &dya, &dO, err);
    if (st != SDICT_OK) {
        free(buf);
        return st;
    }
    const float *DO = dO.data;
    float scale = (float)(1.0 / sqrt((double)hd));
    for (int64_t b = 0; b < n && l > 0 && s > 0; b++)
        for (int64_t h = 0; h < nh; h++) {
            int64_t qo = b * l * e + h * hd, ko = b * s * e + h * hd, po = (b * nh + h) * l * s;
            sdict_nn__sdpa_backward(P + po, D ? D + po : NULL, Q + qo, K + ko, V + ko, e, DO + qo,
                                    e, l, s, hd, scale, dQ + qo, dK + ko, dV + ko, dP);
        }
    sdict_act_free(&dO);
    const float *W = pf32(&m->params[0].value);
    float *dW = pf32(&m->params[0].grad);
    float *dB = m->cfg.has_bias ? pf32(&m->params[1].grad) : NULL;
    const float *dZ[3] = {dQ, dK, dV}, *Xin[3] = {Xq, Xkv, Xkv};
    int64_t rows[3] = {n * l, n * s, n * s};
    float *dXo[3] = {dXq, dXkv, dXkv};
    for (int j = 0; j < 3; j++) {
        if (rows[j] == 0) continue;
        /* Z = X W_j^T + b_j: dW_j += dZ^T X, db_j += sum of dZ's rows, dX += dZ W_j */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)e, (int)e, (int)rows[j], 1.0f,
                    dZ[j], (int)e, Xin[j], (int)e, 1.0f, dW + j * e * e, (int)e);
        if (dB)
            for (int64_t r = 0; r < rows[j]; r++)
                for (int64_t o = 0; o < e; o++) dB[j * e + o] += dZ[j][r * e + o];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows[j], (int)e, (int)e,
                    1.0f, dZ[j], (int)e, W + j * e * e, (int)e, 1.0f, dXo[j], (int)e);
    }
    if (self)
        for (size_t i = 0; i < nq; i++) dXq[i] += dXkv[i];
    if (dquery) st = seq_out(dquery, dXq, n, l, e, bf, unb, err);
    if (st == SDICT_OK && dkey_value && !self)
        st = seq_out(dkey_value, dXkv, n, s, e, bf, unb, err);
    if (st != SDICT_OK) {
        if (dquery) sdict_act_free(dquery);
        if (dkey_value) sdict_act_free(dkey_value);
    }
    free(buf);
    return st;
}

static sdict_status mha_backward(sdict_module *m, const sdict_act *dy, sdict_act *dx,
                                 sdict_error *err) {
    return sdict_multihead_attention_backward(m, dy, dx, NULL, err);
}

static sdict_status mha_module_forward(sdict_module *m, const sdict_act *x, sdict_act *y,
                                       sdict_error *err) {
    return sdict_multihead_attention_forward(m, x, x, x, NULL, y, NULL, err);
}

sdict_module *sdict_multihead_attention_new(int64_t embed_dim, int64_t num_heads, double dropout,
                                            bool bias, bool batch_first) {
    if (embed_dim <= 0 || num_heads <= 0 || embed_dim > INT32_MAX / 3 ||
        embed_dim % num_heads != 0 || !(dropout >= 0.0 && dropout <= 1.0))
        return NULL;
    sdict_module *m = sdict_module_new("MultiheadAttention", mha_module_forward, NULL);
    if (!m) return NULL;
    m->backward = mha_backward;
    m->rng = 0xA77D80ULL; /* attention-weight dropout generator (sdict_dropout_seed reseeds) */
    m->cfg.in_features = embed_dim;
    m->cfg.out_features = embed_dim;
    m->cfg.has_bias = bias;
    m->cfg.p = dropout;
    m->cfg.attn.num_heads = num_heads;
    m->cfg.attn.batch_first = batch_first;
    int64_t ws[2] = {3 * embed_dim, embed_dim};
    sdict_module *out = NULL;
    if (sdict_module_register(m, "in_proj_weight", false, SDICT_FLOAT32, 2, ws, NULL, NULL) !=
            SDICT_OK ||
        (bias && sdict_module_register(m, "in_proj_bias", false, SDICT_FLOAT32, 1, ws, NULL,
                                       NULL) != SDICT_OK) ||
        !(out = sdict_linear_new(embed_dim, embed_dim, bias)) ||
        sdict_module_add(m, "out_proj", out, NULL) != SDICT_OK) {
        sdict_module_free(m);
        return NULL;
    }
    /* xavier_uniform_ bound as torch's _reset_parameters (values are ours); biases zero */
    float *w = pf32(&m->params[0].value);
    double bound = sqrt(6.0 / (double)(4 * embed_dim));
    uint64_t st = 0xA77E57ULL ^ (uint64_t)embed_dim;
    for (int64_t i = 0; i < 3 * embed_dim * embed_dim; i++) {
        st += 0x9E3779B97F4A7C15ULL;
        uint64_t z = st;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        z ^= z >> 31;
        w[i] = (float)(bound * (2.0 * (double)(z >> 11) / 9007199254740992.0 - 1.0));
    }
    if (bias) {
        sdict_named_tensor *ob = sdict_module_tensor(out, "bias");
        if (ob) memset(pf32(&ob->value), 0, sizeof(float) * (size_t)embed_dim);
    }
    return m;
}

/*==================================================================================================
 MARK: TransformerEncoderLayer, TransformerDecoderLayer
==================================================================================================*/

static sdict_status encoder_backward(sdict_module *m, const sdict_act *dy, sdict_act *dx,
                                     sdict_error *err);
static sdict_status decoder_backward(sdict_module *m, const sdict_act *dy, sdict_act *dx,
                                     sdict_error *err);

static bool layer_cfg_ok(const sdict_transformer_layer_config *c) {
    return c && c->d_model > 0 && c->nhead > 0 && c->d_model % c->nhead == 0 &&
           c->dim_feedforward > 0 && c->dim_feedforward <= INT32_MAX &&
           c->dropout >= 0.0 && c->dropout <= 1.0 && c->layer_norm_eps >= 0.0;
}

static sdict_status add_child(sdict_module *m, const char *name, sdict_module *child) {
    if (!child) return SDICT_E_NOMEM;
    return sdict_module_add(m, name, child, NULL);
}

static sdict_module *layer_new(const sdict_transformer_layer_config *c, bool decoder,
                               sdict_forward_fn fwd) {
    if (!layer_cfg_ok(c)) return NULL;
    sdict_module *m = sdict_module_new(decoder ? "TransformerDecoderLayer"
                                               : "TransformerEncoderLayer", fwd, NULL);
    if (!m) return NULL;
    m->cfg.in_features = c->d_model;
    m->cfg.out_features = c->dim_feedforward;
    m->cfg.has_bias = c->bias;
    m->cfg.p = c->dropout;
    m->cfg.eps = c->layer_norm_eps;
    m->cfg.attn.num_heads = c->nhead;
    m->cfg.attn.batch_first = c->batch_first;
    m->cfg.attn.norm_first = c->norm_first;
    m->cfg.attn.gelu = c->gelu;
    int64_t d = c->d_model;
    /* torch's registration order, which is the state_dict order */
    bool ok =
        add_child(m, "self_attn", sdict_multihead_attention_new(d, c->nhead, c->dropout, c->bias,
                                                                c->batch_first)) == SDICT_OK &&
        (!decoder ||
         add_child(m, "multihead_attn", sdict_multihead_attention_new(
                                            d, c->nhead, c->dropout, c->bias, c->batch_first)) ==
             SDICT_OK) &&
        add_child(m, "linear1", sdict_linear_new(d, c->dim_feedforward, c->bias)) == SDICT_OK &&
        add_child(m, "dropout", sdict_dropout_new(c->dropout)) == SDICT_OK &&
        add_child(m, "linear2", sdict_linear_new(c->dim_feedforward, d, c->bias)) == SDICT_OK &&
        add_child(m, "norm1", sdict_layernorm_new(1, &d, c->layer_norm_eps, true, c->bias)) ==
            SDICT_OK &&
        add_child(m, "norm2", sdict_layernorm_new(1, &d, c->layer_norm_eps, true, c->bias)) ==
            SDICT_OK &&
        (!decoder ||
         add_child(m, "norm3", sdict_layernorm_new(1, &d, c->layer_norm_eps, true, c->bias)) ==
             SDICT_OK) &&
        add_child(m, "dropout1", sdict_dropout_new(c->dropout)) == SDICT_OK &&
        add_child(m, "dropout2", sdict_dropout_new(c->dropout)) == SDICT_OK &&
        (!decoder || add_child(m, "dropout3", sdict_dropout_new(c->dropout)) == SDICT_OK);
    if (!ok) {
        sdict_module_free(m);
        return NULL;
    }
    m->backward = decoder ? decoder_backward : encoder_backward;
    /* one generator per dropout site, so that same-shaped sites draw different masks */
    static const char *const sites[] = {"self_attn", "multihead_attn", "dropout", "dropout1",
                                        "dropout2", "dropout3"};
    for (size_t i = 0; i < sizeof sites / sizeof sites[0]; i++) {
        sdict_module *ch = sdict_module_child(m, sites[i]);
        if (ch) sdict_dropout_seed(ch, 0xD80F0A7ULL + 0x9E3779B97F4A7C15ULL * (uint64_t)(i + 1));
    }
    return m;
}

static sdict_status run(sdict_module *m, const char *child, const sdict_act *x, sdict_act *y,
                        sdict_error *err) {
    return sdict_module_forward(sdict_module_child(m, child), x, y, err);
}

/* *x = child(*x) (a Dropout child) in training mode; eval leaves *x as it is. */
static sdict_status drop(sdict_module *m, const char *child, sdict_act *x, sdict_error *err) {
    if (!m->training) return SDICT_OK;
    sdict_act y = {0};
    sdict_status st = run(m, child, x, &y, err);
    sdict_act_free(x);
    *x = y;
    return st;
}

/* x += dropK(attention(norm(x), mem)) (norm_first) or x = norm(x + dropK(attention(x, mem)));
   mem NULL: self-attention. */
static sdict_status attn_block(sdict_module *m, sdict_act *x, const char *attn, const char *norm,
                               const char *dropout, const sdict_act *mem,
                               const sdict_mha_args *args, sdict_error *err) {
    sdict_mha_args a = args ? *args : (sdict_mha_args){0};
    a.need_weights = false;
    sdict_act h = {0}, o = {0};
    sdict_status st;
    sdict_module *mha = sdict_module_child(m, attn);
    if (m->cfg.attn.norm_first) {
        if ((st = run(m, norm, x, &h, err)) == SDICT_OK &&
            (st = sdict_multihead_attention_forward(mha, &h, mem ? mem : &h, mem ? mem : &h, &a,
                                                    &o, NULL, err)) == SDICT_OK &&
            (st = drop(m, dropout, &o, err)) == SDICT_OK)
            st = sdict_act_add_(x, &o, err);
    } else {
        if ((st = sdict_multihead_attention_forward(mha, x, mem ? mem : x, mem ? mem : x, &a, &o,
                                                    NULL, err)) == SDICT_OK &&
            (st = drop(m, dropout, &o, err)) == SDICT_OK &&
            (st = sdict_act_add_(&o, x, err)) == SDICT_OK &&
            (st = run(m, norm, &o, &h, err)) == SDICT_OK) {
            sdict_act_free(x);
            *x = h;
            memset(&h, 0, sizeof h);
        }
    }
    sdict_act_free(&h);
    sdict_act_free(&o);
    return st;
}

/* x += dropK(linear2(dropout(act(linear1(norm(x)))))) or the post-norm form. Training mode
   keeps linear1's output (the activation's input) in the layer's cache[0]. */
static sdict_status ff_block(sdict_module *m, sdict_act *x, const char *norm, const char *dropout,
                             sdict_error *err) {
    sdict_act h = {0}, u = {0}, o = {0};
    sdict_status st = SDICT_OK;
    bool nf = m->cfg.attn.norm_first;
    if (nf) st = run(m, norm, x, &h, err);
    if (st == SDICT_OK && (st = run(m, "linear1", nf ? &h : x, &u, err)) == SDICT_OK &&
        (!m->training || (st = sdict_act_copy(&m->cache[0], &u, err)) == SDICT_OK)) {
        float *U = u.data;
        int64_t cnt = sdict_act_numel(&u);
        if (m->cfg.attn.gelu) sdict_nn__gelu(U, cnt, false);
        else
            for (int64_t i = 0; i < cnt; i++) U[i] = U[i] > 0.0f ? U[i] : 0.0f;
        if ((st = drop(m, "dropout", &u, err)) == SDICT_OK &&
            (st = run(m, "linear2", &u, &o, err)) == SDICT_OK)
            st = drop(m, dropout, &o, err);
    }
    if (st == SDICT_OK) {
        if (nf) {
            st = sdict_act_add_(x, &o, err);
        } else if ((st = sdict_act_add_(&o, x, err)) == SDICT_OK) {
            sdict_act_free(&h);
            if ((st = run(m, norm, &o, &h, err)) == SDICT_OK) {
                sdict_act_free(x);
                *x = h;
                memset(&h, 0, sizeof h);
            }
        }
    }
    sdict_act_free(&h);
    sdict_act_free(&u);
    sdict_act_free(&o);
    return st;
}

/* Drops the layer's own cache; a training-mode forward then keeps the input's shape in
   cache[1] (a successful forward's mark for backward) and linear1's output in cache[0]. */
static void layer_uncache(sdict_module *m) {
    for (int i = 0; i < SDICT_MODULE_CACHE; i++) sdict_act_free(&m->cache[i]);
}

static sdict_status layer_mark(sdict_module *m, const sdict_act *x, sdict_error *err) {
    if (!m->training) return SDICT_OK;
    int64_t ns = x->ndim;
    sdict_status st = sdict_act_init(&m->cache[1], SDICT_INT64, 1, &ns, err);
    if (st == SDICT_OK) memcpy(m->cache[1].data, x->shape, sizeof(int64_t) * (size_t)ns);
    return st;
}

sdict_status sdict_transformer_encoder_layer_forward(sdict_module *m, const sdict_act *src,
                                                     const sdict_mha_args *args, sdict_act *y,
                                                     sdict_error *err) {
    if (y) memset(y, 0, sizeof *y);
    if (!is_type(m, "TransformerEncoderLayer") || !src || !y)
        return not_a("sdict_transformer_encoder_layer_forward", "TransformerEncoderLayer", err);
    layer_uncache(m);
    if (src->dtype != SDICT_FLOAT32)
        return sdict_nn__err(err, SDICT_E_SHAPE, "TransformerEncoderLayer: src must be float32");
    sdict_status st = sdict_act_copy(y, src, err);
    if (st == SDICT_OK &&
        (st = attn_block(m, y, "self_attn", "norm1", "dropout1", NULL, args, err)) == SDICT_OK &&
        (st = ff_block(m, y, "norm2", "dropout2", err)) == SDICT_OK)
        st = layer_mark(m, src, err);
    if (st != SDICT_OK) {
        sdict_act_free(y);
        layer_uncache(m);
    }
    return st;
}

sdict_status sdict_transformer_decoder_layer_forward(sdict_module *m, const sdict_act *tgt,
                                                     const sdict_act *memory,
                                                     const sdict_mha_args *tgt_args,
                                                     const sdict_mha_args *memory_args,
                                                     sdict_act *y, sdict_error *err) {
    if (y) memset(y, 0, sizeof *y);
    if (!is_type(m, "TransformerDecoderLayer") || !tgt || !memory || !y)
        return not_a("sdict_transformer_decoder_layer_forward", "TransformerDecoderLayer", err);
    layer_uncache(m);
    if (tgt->dtype != SDICT_FLOAT32)
        return sdict_nn__err(err, SDICT_E_SHAPE, "TransformerDecoderLayer: tgt must be float32");
    sdict_status st = sdict_act_copy(y, tgt, err);
    if (st == SDICT_OK &&
        (st = attn_block(m, y, "self_attn", "norm1", "dropout1", NULL, tgt_args, err)) ==
            SDICT_OK &&
        (st = attn_block(m, y, "multihead_attn", "norm2", "dropout2", memory, memory_args,
                         err)) == SDICT_OK &&
        (st = ff_block(m, y, "norm3", "dropout3", err)) == SDICT_OK)
        st = layer_mark(m, tgt, err);
    if (st != SDICT_OK) {
        sdict_act_free(y);
        layer_uncache(m);
    }
    return st;
}

/* *g = child's backward of *g (NULL child name: *g unchanged). */
static sdict_status back(sdict_module *m, const char *child, sdict_act *g, sdict_error *err) {
    sdict_act d = {0};
    sdict_status st = sdict_module_backward(sdict_module_child(m, child), g, &d, err);
    sdict_act_free(g);
    *g = d;
    return st;
}

/* Backward of one residual block: *g holds the gradient of the block's output and receives
   that of its input. attn NULL: the feed-forward block (dropout_out after linear2); else the
   attention block, whose key/value gradient is added to *dmem (cross-attention) when mem. */
static sdict_status block_backward(sdict_module *m, sdict_act *g, const char *norm,
                                   const char *attn, bool mem, const char *dropout_out,
                                   sdict_act *dmem, sdict_error *err) {
    bool nf = m->cfg.attn.norm_first;
    sdict_act t = {0};
    sdict_status st = SDICT_OK;
    if (!nf && (st = back(m, norm, g, err)) != SDICT_OK) return st;
    if ((st = sdict_act_copy(&t, g, err)) != SDICT_OK) return st;
    if ((st = back(m, dropout_out, &t, err)) != SDICT_OK) goto done;
    if (attn) {
        sdict_act dq = {0}, dkv = {0};
        st = sdict_multihead_attention_backward(sdict_module_child(m, attn), &t, &dq,
                                                mem ? &dkv : NULL, err);
        sdict_act_free(&t);
        t = dq;
        if (st == SDICT_OK && mem)
            st = dmem->data ? sdict_act_add_(dmem, &dkv, err) : sdict_act_copy(dmem, &dkv, err);
        sdict_act_free(&dkv);
        if (st != SDICT_OK) goto done;
    } else {
        if ((st = back(m, "linear2", &t, err)) != SDICT_OK ||
            (st = back(m, "dropout", &t, err)) != SDICT_OK)
            goto done;
        const sdict_act *u = &m->cache[0];
        if (sdict_act_numel(u) != sdict_act_numel(&t)) {
            st = sdict_nn__err(err, SDICT_E_INVALID_ARG, "%s: backward needs a training-mode "
                               "forward first (no cached input)", m->type_name);
            goto done;
        }
        float *T = t.data;
        const float *U = u->data;
        for (int64_t i = 0; i < sdict_act_numel(&t); i++)
            T[i] = m->cfg.attn.gelu ? (float)(T[i] * sdict_nn__gelu_grad(U[i], false))
                                    : (U[i] > 0.0f ? T[i] : 0.0f);
        if ((st = back(m, "linear1", &t, err)) != SDICT_OK) goto done;
    }
    if (nf && (st = back(m, norm, &t, err)) != SDICT_OK) goto done;
    st = sdict_act_add_(g, &t, err);
done:
    sdict_act_free(&t);
    return st;
}

static sdict_status layer_backward(sdict_module *m, const sdict_act *dy, sdict_act *dx,
                                   sdict_act *dmem, sdict_error *err) {
    bool dec = is_type(m, "TransformerDecoderLayer");
    const sdict_act *mark = &m->cache[1];
    if (!m->training || !mark->data || !m->cache[0].data)
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "%s: backward needs a training-mode "
                             "forward first (no cached input)", m->type_name);
    if (dy->dtype != SDICT_FLOAT32 || dy->ndim != mark->shape[0] ||
        memcmp(dy->shape, mark->data, sizeof(int64_t) * (size_t)dy->ndim) != 0)
        return sdict_nn__err(err, SDICT_E_SHAPE, "%s: output gradient does not match the "
                             "forward output's shape", m->type_name);
    sdict_act g = {0};
    sdict_status st = sdict_act_copy(&g, dy, err);
    if (st == SDICT_OK)
        st = block_backward(m, &g, dec ? "norm3" : "norm2", NULL, false,
                            dec ? "dropout3" : "dropout2", NULL, err);
    if (st == SDICT_OK && dec)
        st = block_backward(m, &g, "norm2", "multihead_attn", true, "dropout2", dmem, err);
    if (st == SDICT_OK)
        st = block_backward(m, &g, "norm1", "self_attn", false, "dropout1", NULL, err);
    if (st == SDICT_OK && dx) *dx = g;
    else sdict_act_free(&g);
    return st;
}

static sdict_status encoder_backward(sdict_module *m, const sdict_act *dy, sdict_act *dx,
                                     sdict_error *err) {
    return layer_backward(m, dy, dx, NULL, err);
}

static sdict_status decoder_backward(sdict_module *m, const sdict_act *dy, sdict_act *dx,
                                     sdict_error *err) {
    sdict_act dmem = {0};
    sdict_status st = layer_backward(m, dy, dx, &dmem, err);
    sdict_act_free(&dmem);
    return st;
}

sdict_status sdict_transformer_decoder_layer_backward(sdict_module *m, const sdict_act *dy,
                                                      sdict_act *dtgt, sdict_act *dmemory,
                                                      sdict_error *err) {
    if (dtgt) memset(dtgt, 0, sizeof *dtgt);
    if (dmemory) memset(dmemory, 0, sizeof *dmemory);
    if (!is_type(m, "TransformerDecoderLayer") || !dy)
        return not_a("sdict_transformer_decoder_layer_backward", "TransformerDecoderLayer", err);
    sdict_act dmem = {0};
    sdict_status st = layer_backward(m, dy, dtgt, &dmem, err);
    if (st == SDICT_OK && dmemory) *dmemory = dmem;
    else sdict_act_free(&dmem);
    return st;
}

static sdict_status encoder_module_forward(sdict_module *m, const sdict_act *x, sdict_act *y,
                                           sdict_error *err) {
    return sdict_transformer_encoder_layer_forward(m, x, NULL, y, err);
}

static sdict_status decoder_module_forward(sdict_module *m, const sdict_act *x, sdict_act *y,
                                           sdict_error *err) {
    (void)x;
    if (y) memset(y, 0, sizeof *y);
    return sdict_nn__err(err, SDICT_E_INVALID_ARG, "%s: forward needs memory: use "
                         "sdict_transformer_decoder_layer_forward", m->type_name);
}

sdict_module *sdict_transformer_encoder_layer_new(const sdict_transformer_layer_config *cfg) {
    return layer_new(cfg, false, encoder_module_forward);
}

sdict_module *sdict_transformer_decoder_layer_new(const sdict_transformer_layer_config *cfg) {
    return layer_new(cfg, true, decoder_module_forward);
}
