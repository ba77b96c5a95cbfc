/*
 statedict_optim.h - training on top of statedict_nn (same library, statedict_nn): backward
 passes for the built-in modules, CrossEntropyLoss and MSELoss, the optimizers SGD, Adam and
 AdamW with torch 1.13's update rules, and optimizer state_dict / load_state_dict in PyTorch's
 layout, so that general checkpoints ({'epoch', 'model_state_dict', 'optimizer_state_dict',
 'loss'}) and multi-model files move freely between C and PyTorch.

 Conventions (those of statedict.h and statedict_nn.h, plus):
 - Everything is float32 on the CPU. Gradients accumulate (+=) into each parameter's `grad`
   tensor (sdict_named_tensor.grad), as torch's .backward() does; zero them before each step
   with sdict_module_zero_grad() or sdict_optim_zero_grad().
 - A backward pass reads the caches a training-mode forward left in the module (see
   sdict_module.cache); run forward in training mode first.
 - Nothing here prints or exits; failures return a status and fill the optional sdict_error.
*/
#ifndef STATEDICT_OPTIM_H
#define STATEDICT_OPTIM_H

#include "statedict.h"
#include "statedict_nn.h"

#ifdef __cplusplus
extern "C" {
#endif

/*==================================================================================================
 MARK: Backward
==================================================================================================*/

/**
 Backward of m for the output gradient dy (shape of m's last forward output): adds parameter
 gradients into the grad tensors of m and its descendants and, when dx is not NULL, allocates
 *dx with dL/dx (shape of the last input; free with sdict_act_free).
 Dispatch: m->backward when set (user containers provide theirs, see sdict_lenet_backward);
 else the built-in rule of m->type; Sequential runs its children's backwards in reverse;
 LSTM/GRU run sdict_rnn_backward with zero gradients for h_n and c_n.
 Embedding has no input gradient (*dx is left zeroed). BatchNorm uses the batch statistics of
 the training-mode forward (torch's training backward); in eval mode it is an affine map.
 Errors: SDICT_E_INVALID_ARG (no forward cache: forward was not run in training mode, or a
 custom module without backward), SDICT_E_SHAPE (dy does not match), SDICT_E_NOMEM.
*/
SDICT_API sdict_status sdict_module_backward(sdict_module *m, const sdict_act *dy, sdict_act *dx,
                                             sdict_error *err);

/**
 Backward of the recipe's Net (sdict_lenet_new): an sdict_backward_fn for `net->backward`.
 Net reuses one MaxPool2d twice and applies ReLU functionally, so this recomputes conv1's
 output from conv1's cached input to recover the first pooling's argmax.
*/
SDICT_API sdict_status sdict_lenet_backward(sdict_module *m, const sdict_act *dy, sdict_act *dx,
                                            sdict_error *err);

/**
 Backpropagation through time for sdict_rnn_forward (torch's autograd through nn.LSTM/nn.GRU):
 given the gradients of the loss with respect to the last training-mode forward's output, h_n
 and c_n, adds the gradient of every weight_ih/weight_hh/bias_ih/bias_hh into its grad tensor
 and returns the gradients of x, h0 and c0. Dropout between layers uses the forward's masks.
 @param doutput  dL/doutput, shaped as the forward's output; must not be NULL.
 @param dh_n     optional dL/dh_n (shape of h_n); NULL means zeros.
 @param dc_n     optional dL/dc_n (LSTM only); NULL means zeros.
 @param dx       optional; receives dL/dx, shaped as the forward's x.
 @param dh0      optional; receives dL/dh0, shaped as h0 (also when the forward had h0 NULL).
 @param dc0      optional (LSTM only); receives dL/dc0.
 Outputs are allocated (free with sdict_act_free) and zeroed on failure. Calling it twice for
 one forward accumulates the parameter gradients twice.
 Errors: SDICT_E_INVALID_ARG (not an LSTM/GRU, no training-mode forward cached, dc_n/dc0 for a
 GRU), SDICT_E_SHAPE (a gradient of the wrong shape), SDICT_E_NOMEM.
*/
SDICT_API sdict_status sdict_rnn_backward(sdict_module *m, const sdict_act *doutput,
                                          const sdict_act *dh_n, const sdict_act *dc_n,
                                          sdict_act *dx, sdict_act *dh0, sdict_act *dc0,
                                          sdict_error *err);

/*==================================================================================================
 MARK: Losses
==================================================================================================*/

/**
 nn.CrossEntropyLoss() (reduction 'mean', class-index targets, no weights, no label smoothing).
 logits: float32 [N, C]; targets: int64 [N] with values in [0, C).
 loss = mean_n(logsumexp(x_n) - x_n[t_n]), computed stably (max subtracted) in double and
 rounded to float as torch's float32 result. dlogits (optional) receives a new [N, C]
 activation (softmax(x) - onehot(t)) / N. Errors: SDICT_E_SHAPE, SDICT_E_DTYPE,
 SDICT_E_INVALID_ARG (target out of range, as torch's "Target 12 is out of bounds."),
 SDICT_E_NOMEM.
*/
SDICT_API sdict_status sdict_cross_entropy_loss(const sdict_act *logits, const sdict_act *targets,
                                                float *loss, sdict_act *dlogits,
                                                sdict_error *err);

/**
 nn.CrossEntropyLoss(ignore_index=ignore_index) (reduction 'mean', class-index targets, no
 weights, no label smoothing) over any number of positions, as torch takes them for sequences:
 logits float32 [N, C] with targets int64 [N], or logits [N, C, d1, ...] (a sequence model's
 [N, C, L]) with targets [N, d1, ...]. Targets equal to ignore_index (torch's default is -100)
 add no loss and get a zero gradient; the others must be in [0, C).
 loss = sum over counted positions of (logsumexp(x) - x[t]) / (number of counted positions),
 in double, rounded to float; nan when every target is ignored (torch's 0/0).
 dlogits (optional) receives a new activation of logits' shape: (softmax(x) - onehot(t)) /
 count at counted positions, 0 at ignored ones (also when all are ignored).
 Errors: SDICT_E_SHAPE, SDICT_E_DTYPE, SDICT_E_INVALID_ARG (a target out of range that is not
 ignore_index: "Target 12 is out of bounds."), SDICT_E_NOMEM.
*/
SDICT_API sdict_status sdict_cross_entropy_loss_ex(const sdict_act *logits,
                                                   const sdict_act *targets,
                                                   int64_t ignore_index, float *loss,
                                                   sdict_act *dlogits, sdict_error *err);

/**
 nn.MSELoss() (reduction 'mean'): loss = mean((pred - target)^2); dpred (optional) receives a
 new activation 2 (pred - target) / numel. pred and target: float32 of the same shape.
 Errors: SDICT_E_SHAPE, SDICT_E_DTYPE, SDICT_E_NOMEM.
*/
SDICT_API sdict_status sdict_mse_loss(const sdict_act *pred, const sdict_act *target, float *loss,
                                      sdict_act *dpred, sdict_error *err);

/*==================================================================================================
 MARK: Optimizers
==================================================================================================*/

typedef enum sdict_optim_kind {
    SDICT_OPTIM_SGD = 0, /**< torch.optim.SGD */
    SDICT_OPTIM_ADAM,    /**< torch.optim.Adam */
    SDICT_OPTIM_ADAMW,   /**< torch.optim.AdamW (decoupled weight decay) */
} sdict_optim_kind;

/** Hyperparameters of one parameter group (fields unused by a kind are ignored). */
typedef struct sdict_optim_hparams {
    double lr;
    double momentum, dampening;   /**< SGD */
    double weight_decay;          /**< SGD, Adam (L2 added to the gradient), AdamW (decoupled) */
    bool nesterov;                /**< SGD; needs momentum > 0 and dampening 0 */
    bool maximize;                /**< all */
    double beta1, beta2, eps;     /**< Adam, AdamW */
    bool amsgrad;                 /**< Adam, AdamW */
    bool decoupled_weight_decay;  /**< Adam: AdamW's decoupled decay (torch 2.14's flag of that
                                       name); AdamW always decouples */
} sdict_optim_hparams;

/**
 The param_groups layout of sdict_optim_state_dict, as each torch generation writes it (key
 order and defaults measured with torch 1.13, 2.6 and 2.14; FORMAT.md 6.2):
 - TORCH_1_13: SGD lr, momentum, dampening, weight_decay, nesterov, maximize, foreach (None),
   differentiable; Adam lr, betas, eps, weight_decay, amsgrad, maximize, foreach, capturable,
   differentiable, fused (False); AdamW lr, betas, eps, weight_decay, amsgrad, foreach,
   maximize, capturable. SGD with momentum 0 has state {'momentum_buffer': None} per stepped
   parameter.
 - TORCH_2_6: SGD adds fused (None); Adam's fused is None; AdamW adds differentiable and fused.
   SGD with momentum 0 keeps no state.
 - TORCH_2_14: as 2.6, and Adam and AdamW both have Adam's order plus decoupled_weight_decay
   (False for Adam, True for AdamW).
*/
typedef enum sdict_optim_layout {
    SDICT_OPTIM_LAYOUT_TORCH_1_13 = 0,
    SDICT_OPTIM_LAYOUT_TORCH_2_6,
    SDICT_OPTIM_LAYOUT_TORCH_2_14,
} sdict_optim_layout;

/** torch 1.13's constructor defaults for kind (SGD has no default lr in 1.13; 0.01 is put
    there as a placeholder to overwrite). AdamW's weight_decay default is 0.01 and its
    decoupled_weight_decay true. */
SDICT_API sdict_optim_hparams sdict_optim_defaults(sdict_optim_kind kind);

/** One parameter an optimizer updates: contiguous float32 data and gradient of numel elements
    (borrowed: they must outlive the optimizer), and the shape its state tensors get. */
typedef struct sdict_optim_param {
    float *data;
    float *grad;
    int64_t numel;
    int32_t ndim;
    int64_t shape[SDICT_NN_MAX_DIMS];
} sdict_optim_param;

/** An optimizer: parameter groups and per-parameter state (opaque). */
typedef struct sdict_optim sdict_optim;

/** New optimizer of kind with no groups. NULL on out-of-memory. */
SDICT_API sdict_optim *sdict_optim_new(sdict_optim_kind kind);
/** Frees the optimizer and its state (not the parameters). NULL-tolerant. */
SDICT_API void sdict_optim_free(sdict_optim *o);
/** Kind given at creation. */
SDICT_API sdict_optim_kind sdict_optim_get_kind(const sdict_optim *o);
/** The layout sdict_optim_state_dict writes: TORCH_1_13 for a new optimizer; after
    sdict_optim_load_state_dict, the layout of the loaded file (told by the keys only 2.x
    writes: decoupled_weight_decay for 2.14, fused in SGD/AdamW or Adam's fused=None for 2.6). */
SDICT_API sdict_optim_layout sdict_optim_get_layout(const sdict_optim *o);
/** Chooses the layout sdict_optim_state_dict writes, for the torch that will read it.
    Errors: SDICT_E_INVALID_ARG (NULL optimizer or unknown layout). */
SDICT_API sdict_status sdict_optim_set_layout(sdict_optim *o, sdict_optim_layout layout,
                                              sdict_error *err);
/** Parses a torch generation name ("1.13", "2.6", "2.14") into its layout, for command lines.
    Errors: SDICT_E_INVALID_ARG (another name; the message lists the valid ones). */
SDICT_API sdict_status sdict_optim_layout_from_name(const char *name, sdict_optim_layout *out,
                                                    sdict_error *err);

/**
 optimizer.add_param_group({'params': params, **hp}): parameters get the next indices
 (0, 1, ... across groups in order, as in the state_dict). Checks torch's constructor rules
 with its messages ("Invalid learning rate: -1.0", "Nesterov momentum requires a momentum and
 zero dampening", "Invalid beta parameter at index 0: 1.0", ...).
 Errors: SDICT_E_INVALID_ARG, SDICT_E_NOMEM.
*/
SDICT_API sdict_status sdict_optim_add_group(sdict_optim *o, const sdict_optim_hparams *hp,
                                             const sdict_optim_param *params, size_t n,
                                             sdict_error *err);
/** add_group with every parameter of m in model.parameters() order (torch's
    optim.X(model.parameters(), ...)). Parameters must be float32 and contiguous. */
SDICT_API sdict_status sdict_optim_add_module(sdict_optim *o, const sdict_optim_hparams *hp,
                                              sdict_module *m, sdict_error *err);

/** add_group with GPT2LMHeadModel's model.parameters(), in torch's order: every parameter of
    sdict_gpt2_module(g) except lm_head.weight when g is tied (torch yields a tied Parameter once,
    so the state_dict's indices match torch's AdamW(model.parameters())). Errors: those of
    add_group, SDICT_E_NOMEM, SDICT_E_INVALID_ARG (modules with parameters were added to the
    tree after sdict_gpt2_new). */
SDICT_API sdict_status sdict_gpt2_optim_add(sdict_optim *o, const sdict_optim_hparams *hp,
                                            sdict_gpt2 *g, sdict_error *err);

/** Number of groups; pointer to group i's hyperparameters (mutable, like
    optimizer.param_groups[i]['lr'] = ...), NULL when out of range. */
SDICT_API size_t sdict_optim_n_groups(const sdict_optim *o);
SDICT_API sdict_optim_hparams *sdict_optim_group(sdict_optim *o, size_t i);

/** Sets every gradient to zero (zero_grad(set_to_none=False)). */
SDICT_API void sdict_optim_zero_grad(sdict_optim *o);

/**
 optimizer.step() with torch 1.13's single-tensor (foreach=False) rules:
 SGD: g = ±grad (+ wd*p); with momentum, buf = g on the first step, else
 buf = momentum*buf + (1-dampening)*g; g = nesterov ? g + momentum*buf : buf; p -= lr*g.
 Adam: step += 1; g = ±grad (+ wd*p); m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 (amsgrad: vmax = max(vmax, v), used instead of v);
 p -= lr/(1-b1^step) * m / (sqrt(v)/sqrt(1-b2^step) + eps).
 AdamW (and Adam with decoupled_weight_decay): as Adam but p *= 1 - lr*wd first and no wd
 in g.
 Errors: none today (returns SDICT_OK); kept for future checks.
*/
SDICT_API sdict_status sdict_optim_step(sdict_optim *o, sdict_error *err);

/**
 optimizer.state_dict(), created in doc, in the layout of sdict_optim_get_layout():
 {'state': {index: {...}}, 'param_groups': [{hyperparameters..., 'params': [indices]}]}
 (plain dicts). State entries appear for parameters that have stepped, in index order:
 SGD {'momentum_buffer': tensor} (momentum 0: see sdict_optim_layout); Adam/AdamW {'step':
 0-dim float32 tensor, 'exp_avg', 'exp_avg_sq'[, 'max_exp_avg_sq' when amsgrad]}. A group
 loaded by sdict_optim_load_state_dict keeps the loaded dict's keys in its order, with the
 current hyperparameters and the file's values for keys this optimizer does not compute
 (foreach, fused, capturable, differentiable, a scheduler's initial_lr, param_names, ...), as
 torch's load_state_dict keeps the saved group dicts; layout keys the file lacked follow
 'params', where torch's setdefault puts them. Other groups have the layout's keys in its
 order. State tensors are copies (new storages owned by doc).
 Errors: SDICT_E_NOMEM.
*/
SDICT_API sdict_status sdict_optim_state_dict(const sdict_optim *o, sdict_doc *doc,
                                              sdict_value **out, sdict_error *err);

/**
 optimizer.load_state_dict(sd): accepts torch 1.13 and 2.x layouts (step as tensor, int or
 float; any extra group keys such as foreach, fused, differentiable, capturable, param_names;
 lr as a number or 0-dim tensor). As torch: the number of groups and each group's parameter
 count must match ("loaded state dict has a different number of parameter groups", "loaded
 state dict contains a parameter group that doesn't match the size of optimizer's group"),
 saved indices map to this optimizer's parameters in order, and the saved hyperparameters
 replace the current ones (keys absent from the file keep their current value); the groups
 are kept for sdict_optim_state_dict, and the layout becomes the file's. State tensors
 are converted to float32; unlike torch, a state tensor whose element count differs from its
 parameter's is refused here rather than at the next step. All-or-nothing: on failure the
 optimizer is unchanged.
 Another optimizer family's state_dict is refused, naming both: a group with SGD's keys
 (momentum, dampening, nesterov) or a parameter state with momentum_buffer loaded into Adam or
 AdamW, or a group with Adam's keys (betas, eps, amsgrad) or a state with step, exp_avg,
 exp_avg_sq or max_exp_avg_sq loaded into SGD ("cannot load an optimizer state_dict written by
 Adam into SGD: param_groups[0] has 'betas'"; the writer is told apart as Adam or AdamW by
 2.14's decoupled_weight_decay, else by the key order 1.13 and 2.6 write, else named "Adam or
 AdamW"). torch does not check this: torch 1.13 and 2.14 load Adam's state into SGD and fail
 only at step() with KeyError: 'momentum', and fail loading SGD's into Adam with KeyError:
 'step' (an SGD state_dict without per-parameter state loads, and step() fails). Adam and AdamW states load into each
 other, as in torch (AdamW keeps decoupled weight decay).
 Errors: SDICT_E_INVALID_ARG (another optimizer's state_dict, layout or group sizes, a group
 key that is not a str, a group value of a kind it cannot keep), SDICT_E_LIMIT (an int past
 int64 in a group), SDICT_E_SHAPE, SDICT_E_DTYPE, SDICT_E_NOMEM.
*/
SDICT_API sdict_status sdict_optim_load_state_dict(sdict_optim *o, const sdict_value *sd,
                                                   sdict_error *err);

/*==================================================================================================
 MARK: Checkpoint helpers
==================================================================================================*/

/**
 Item key of a checkpoint dict (general checkpoint or multi-model file) that must be a dict
 ("model_state_dict", "optimizerA_state_dict"). Returns it, or NULL with SDICT_E_NOT_FOUND
 ("checkpoint has no key 'model_state_dict'") or SDICT_E_INVALID_ARG (not a dict) in err.
*/
SDICT_API sdict_value *sdict_checkpoint_dict(const sdict_value *ckpt, const char *key,
                                             sdict_error *err);
/**
 Number stored under key of a checkpoint dict ('epoch', 'loss'): an int, float, bool or
 one-element tensor (torch users often save loss as a 0-dim tensor). Errors: SDICT_E_NOT_FOUND,
 SDICT_E_INVALID_ARG.
*/
SDICT_API sdict_status sdict_checkpoint_number(const sdict_value *ckpt, const char *key,
                                               double *out, sdict_error *err);

#ifdef __cplusplus
}
#endif

#endif /* STATEDICT_OPTIM_H */
