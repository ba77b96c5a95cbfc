/*
 loss.c - nn.CrossEntropyLoss (also over sequences, with ignore_index) and nn.MSELoss
 (reduction 'mean') with their input gradients.
*/
#include "nn_private.h"
#include "statedict_optim.h"

#include <math.h>
#include <string.h>


sdict_status sdict_cross_entropy_loss(const sdict_act *logits, const sdict_act *targets,
                                      float *loss, sdict_act *dlogits, sdict_error *err) {
    if (dlogits) memset(dlogits, 0, sizeof *dlogits);
    if (logits && targets && loss && logits->dtype == SDICT_FLOAT32 &&
        targets->dtype == SDICT_INT64 &&
        (logits->ndim != 2 || targets->ndim != 1 || targets->shape[0] != logits->shape[0]))
        return sdict_nn__err(err, SDICT_E_SHAPE, "cross_entropy: expected logits [N, C] and "
                             "targets [N]");
    /* no target equals INT64_MIN, so none is ignored: the mean over all N */
    return sdict_cross_entropy_loss_ex(logits, targets, INT64_MIN, loss, dlogits, err);
}

sdict_status sdict_cross_entropy_loss_ex(const sdict_act *logits, const sdict_act *targets,
                                         int64_t ignore_index, float *loss, sdict_act *dlogits,
                                         sdict_error *err) {
    if (dlogits) memset(dlogits, 0, sizeof *dlogits);
    if (!logits || !targets || !loss)
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "cross_entropy: NULL argument");
    if (logits->dtype != SDICT_FLOAT32 || targets->dtype != SDICT_INT64)
        return sdict_nn__err(err, SDICT_E_DTYPE, "cross_entropy: expected float32 logits and "
                             "int64 targets, got %s and %s", sdict_dtype_name(logits->dtype),
                             sdict_dtype_name(targets->dtype));
    /* torch: input [N, C] with target [N], or [N, C, d1, ...] with target [N, d1, ...] */
    bool ok = logits->ndim >= 2 && targets->ndim == logits->ndim - 1 &&
              targets->shape[0] == logits->shape[0];
    for (int32_t i = 2; ok && i < logits->ndim; i++)
        ok = targets->shape[i - 1] == logits->shape[i];
    if (!ok)
        return sdict_nn__err(err, SDICT_E_SHAPE, "cross_entropy: expected logits [N, C, d...] "
                             "and targets [N, d...]");
    int64_t N = logits->shape[0], C = logits->shape[1], S = 1;
    for (int32_t i = 2; i < logits->ndim; i++) S *= logits->shape[i];
    const float *X = logits->data;
    const int64_t *T = targets->data;
    int64_t count = 0;
    for (int64_t i = 0; i < N * S; i++) {
        if (T[i] == ignore_index) continue;
        if (T[i] < 0 || T[i] >= C)   /* torch's nll_loss wording */
            return sdict_nn__err(err, SDICT_E_INVALID_ARG, "Target %lld is out of bounds.",
                                 (long long)T[i]);
        count++;
    }
    if (dlogits) {
        sdict_status st = sdict_act_init(dlogits, SDICT_FLOAT32, logits->ndim, logits->shape,
                                         err);
        if (st != SDICT_OK) return st;
    }
    double total = 0.0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t s = 0; s < S; s++) {
            int64_t t = T[n * S + s];
            if (t == ignore_index) continue;   /* no loss, zero gradient */
            const float *x = X + n * C * S + s;
            double mx = -INFINITY;
            for (int64_t c = 0; c < C; c++) if (x[c * S] > mx) mx = x[c * S];
            double sum = 0.0;
            for (int64_t c = 0; c < C; c++) sum += exp((double)x[c * S] - mx);
            double lse = mx + log(sum);
            total += lse - x[t * S];
            if (dlogits) {
                float *d = (float *)dlogits->data + n * C * S + s;
                for (int64_t c = 0; c < C; c++)
                    d[c * S] = (float)((exp((double)x[c * S] - lse) - (c == t ? 1.0 : 0.0)) /
                                       (double)count);
            }
        }
    /* torch: the mean over no counted target is 0/0 = nan */
    *loss = (float)(count ? total / (double)count : NAN);
    return SDICT_OK;
}

sdict_status sdict_mse_loss(const sdict_act *pred, const sdict_act *target, float *loss,
                            sdict_act *dpred, sdict_error *err) {
    if (dpred) memset(dpred, 0, sizeof *dpred);
    if (!pred || !target || !loss)
        return sdict_nn__err(err, SDICT_E_INVALID_ARG, "mse_loss: NULL argument");
    if (pred->dtype != SDICT_FLOAT32 || target->dtype != SDICT_FLOAT32)
        return sdict_nn__err(err, SDICT_E_DTYPE, "mse_loss: expected float32 inputs");
    if (pred->ndim != target->ndim ||
        memcmp(pred->shape, target->shape, sizeof(int64_t) * (size_t)pred->ndim) != 0)
        return sdict_nn__err(err, SDICT_E_SHAPE, "mse_loss: input and target shapes differ");
    int64_t n = sdict_act_numel(pred);
    if (dpred) {
        sdict_status st = sdict_act_init(dpred, SDICT_FLOAT32, pred->ndim, pred->shape, err);
        if (st != SDICT_OK) return st;
    }
    const float *P = pred->data, *T = target->data;
    double total = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)P[i] - T[i];
        total += d * d;
        if (dpred) ((float *)dpred->data)[i] = (float)(2.0 * d / (double)n);
    }
    *loss = (float)(n ? total / (double)n : NAN);
    return SDICT_OK;
}
