/*
 statedict_nn.h - a small module layer on top of libstatedict (library statedict_nn).

 It lets C code do the PyTorch recipe "build Net(), load_state_dict(torch.load(PATH)), eval(),
 run inference" on weights from PyTorch, and hand weights back to PyTorch:
 - modules with PyTorch's names, parameters and semantics (Linear, Conv1d, Conv2d,
   BatchNorm1d/2d, Dropout, Embedding, ReLU, Sigmoid, Tanh, SiLU, MaxPool2d, AvgPool2d,
   AdaptiveAvgPool2d, Flatten, LayerNorm, GELU, Softmax, LogSoftmax, transformers' Conv1D, LSTM,
   GRU, Sequential and user containers with named children), torch's MultiheadAttention,
   TransformerEncoderLayer and TransformerDecoderLayer (train and eval) and GPT-2 as
   transformers defines it (sdict_gpt2_*);
 - state_dict() with torch's key order and `_metadata` versions, load_state_dict(strict) with
   torch's missing/unexpected/size-mismatch reporting (returned also when not strict, as
   torch's _IncompatibleKeys) and its exact message text;
 - forward passes in float32 on the CPU (OpenBLAS sgemm for Linear and Conv2d).

 Conventions (those of statedict.h, plus):
 - Activations are sdict_act: a plain, owned, C-contiguous buffer with a shape, outermost
   dimension first, images in NCHW. Float32 everywhere except Embedding's int64 indices.
 - Parameters and buffers are sdict_tensor views of storages the module owns (one reference
   each); every parameter also has a zero-filled float32 gradient buffer of the same shape,
   which the backward layer (statedict_optim) accumulates into.
 - A module owns its children; sdict_module_free() frees the whole tree.
 - Forward in training mode keeps what a backward pass needs in the module (its input, masks,
   normalised values, argmax indices: see sdict_module.cache), replaced on every call.
 - Nothing here prints or exits; failures return a status and fill the optional sdict_error.
 - Not thread-safe per module tree: forward mutates caches, running statistics and RNG state.
*/
#ifndef STATEDICT_NN_H
#define STATEDICT_NN_H

#include "statedict.h"

#ifdef __cplusplus
extern "C" {
#endif

/*==================================================================================================
 MARK: Activations
==================================================================================================*/

/** Largest rank of an activation (sdict_act) and of a module parameter or buffer. The core
    library has no such limit; sdict_act_from_tensor refuses higher-rank tensors. */
#define SDICT_NN_MAX_DIMS 16

/**
 An activation tensor: contiguous, owned by whoever holds the struct, freed with sdict_act_free.
 dtype is SDICT_FLOAT32 (data is float *) or SDICT_INT64 (data is int64_t *, Embedding indices).
 A zeroed struct is a valid empty activation.
*/
typedef struct sdict_act {
    sdict_dtype dtype;
    int32_t ndim;
    int64_t shape[SDICT_NN_MAX_DIMS]; /**< outermost first; NCHW for images */
    void *data;                       /**< numel elements, malloc'd; NULL when numel is 0 */
} sdict_act;

/** Number of elements (product of shape; 1 for ndim 0). */
SDICT_API int64_t sdict_act_numel(const sdict_act *a);
/** data as float * (NULL if dtype is not float32). */
SDICT_API float *sdict_act_f32(const sdict_act *a);

/**
 Allocates a zero-filled activation of dtype (float32 or int64) and shape (ndim sizes,
 outermost first). a's previous content is NOT freed. Errors: SDICT_E_INVALID_ARG (bad dtype,
 ndim outside 0..SDICT_NN_MAX_DIMS, or bad size), SDICT_E_NOMEM. On failure *a is zeroed.
*/
SDICT_API sdict_status sdict_act_init(sdict_act *a, sdict_dtype dtype, int32_t ndim,
                                      const int64_t *shape, sdict_error *err);
/** Frees the data and zeroes the struct. NULL-tolerant. */
SDICT_API void sdict_act_free(sdict_act *a);
/** Deep copy of src into dst (dst's previous content is not freed). Errors: SDICT_E_NOMEM. */
SDICT_API sdict_status sdict_act_copy(sdict_act *dst, const sdict_act *src, sdict_error *err);

/**
 Converts any loaded tensor (any strides) into an activation: floating and bool dtypes become
 float32, integer dtypes become int64 (as torch's .float() / .long()). Errors: those of
 sdict_tensor_copy_to, SDICT_E_NOMEM, SDICT_E_LIMIT (rank above SDICT_NN_MAX_DIMS, or a stride-0
 expansion of more than 2^28 bytes of elements and 64x its storage: a tiny file must not make a
 dense activation of terabytes).
*/
SDICT_API sdict_status sdict_act_from_tensor(const sdict_tensor *t, sdict_act *out,
                                             sdict_error *err);
/**
 Creates a tensor value in doc holding a copy of a (new owned storage, contiguous), ready for
 sdict_save (the result of `infer`). Errors: SDICT_E_NOMEM, those of sdict_tensor_new.
*/
SDICT_API sdict_status sdict_act_to_value(const sdict_act *a, sdict_doc *doc, sdict_value **out,
                                          sdict_error *err);

/** In-place ReLU (F.relu(x, inplace=True)) on a float32 activation. */
SDICT_API void sdict_act_relu_(sdict_act *a);
/** In-place a += b (same shape, float32): the residual add of ResNet blocks.
    Errors: SDICT_E_SHAPE. */
SDICT_API sdict_status sdict_act_add_(sdict_act *a, const sdict_act *b, sdict_error *err);
/** In-place reshape that keeps numel: torch.flatten(x, start_dim, end_dim) with negative dims
    counting from the end. Errors: SDICT_E_INVALID_ARG. */
SDICT_API sdict_status sdict_act_flatten_(sdict_act *a, int32_t start_dim, int32_t end_dim,
                                          sdict_error *err);

/*==================================================================================================
 MARK: Modules
==================================================================================================*/

/** Which built-in a module is. SDICT_MOD_CUSTOM is a user container with its own forward. */
typedef enum sdict_module_type {
    SDICT_MOD_CUSTOM = 0,
    SDICT_MOD_SEQUENTIAL,
    SDICT_MOD_LINEAR,
    SDICT_MOD_CONV2D,
    SDICT_MOD_BATCHNORM1D,
    SDICT_MOD_BATCHNORM2D,
    SDICT_MOD_DROPOUT,
    SDICT_MOD_EMBEDDING,
    SDICT_MOD_RELU,
    SDICT_MOD_MAXPOOL2D,
    SDICT_MOD_AVGPOOL2D,
    SDICT_MOD_ADAPTIVE_AVGPOOL2D,
    SDICT_MOD_FLATTEN,
    SDICT_MOD_LAYERNORM,
    SDICT_MOD_GELU,
    SDICT_MOD_SOFTMAX,
    SDICT_MOD_LOG_SOFTMAX,
    SDICT_MOD_HF_CONV1D,
    SDICT_MOD_SIGMOID,
    SDICT_MOD_TANH,
    SDICT_MOD_SILU,
    SDICT_MOD_CONV1D,
    SDICT_MOD_LSTM,
    SDICT_MOD_GRU,
    SDICT_MOD_TYPE_COUNT
} sdict_module_type;

/**
 One named parameter or buffer. `value` is a contiguous tensor over a storage the module holds
 one reference to (float32; BatchNorm's num_batches_tracked is a 0-dim int64 buffer).
 `grad` (parameters only; zeroed storage NULL for buffers) is a float32 tensor of the same
 shape, zero-filled at creation: the backward layer accumulates into it, optimizers read it.
 A buffer with persistent=false would be skipped by state_dict (none of the built-ins has one).
*/
typedef struct sdict_named_tensor {
    char *name;              /**< "weight", "running_mean" (owned) */
    sdict_tensor value;
    sdict_tensor grad;
    bool persistent;
    int64_t *dims;           /**< owned: the shape then the contiguous strides (ndim each) that
                                  value and grad point to; NULL for rank 0 */
} sdict_named_tensor;

typedef struct sdict_module sdict_module;

/** Forward function: reads x, allocates and fills *y (caller frees with sdict_act_free).
    *y is zeroed on failure. */
typedef sdict_status (*sdict_forward_fn)(sdict_module *m, const sdict_act *x, sdict_act *y,
                                         sdict_error *err);
/** Backward hook for the optim layer: given dL/dy, accumulates parameter gradients into
    grad buffers and writes dL/dx into *dx (allocated). Built-ins leave it NULL here, except the
    transformer layers (LayerNorm, GELU, Softmax, LogSoftmax, Conv1D), which set their own. */
typedef sdict_status (*sdict_backward_fn)(sdict_module *m, const sdict_act *dy, sdict_act *dx,
                                          sdict_error *err);

/** Hyperparameters of built-in layers (fields unused by a type are 0). */
typedef struct sdict_module_config {
    int64_t in_features, out_features;        /**< Linear; Conv2d in/out channels */
    int64_t kernel[2], stride[2], padding[2], dilation[2]; /**< Conv2d and pooling (h, w) */
    int64_t groups;                           /**< Conv2d */
    int64_t output_size[2];                   /**< AdaptiveAvgPool2d (h, w) */
    int64_t num_features;                     /**< BatchNorm */
    double eps, momentum;                     /**< BatchNorm */
    bool momentum_none;                       /**< BatchNorm momentum=None: cumulative average */
    bool affine, track_running_stats;         /**< BatchNorm */
    bool has_bias;                            /**< Linear, Conv2d */
    bool ceil_mode, count_include_pad;        /**< pooling (ceil_mode false only) */
    double p;                                 /**< Dropout probability of zeroing */
    int64_t num_embeddings, embedding_dim;    /**< Embedding */
    int32_t start_dim, end_dim;               /**< Flatten */
    int32_t normalized_ndim;                  /**< LayerNorm: rank of normalized_shape */
    int64_t normalized_shape[SDICT_NN_MAX_DIMS]; /**< LayerNorm (eps above; has_bias) */
    bool elementwise_affine;                  /**< LayerNorm */
    bool gelu_tanh;                           /**< GELU approximate='tanh' */
    int32_t dim;                              /**< Softmax / LogSoftmax (negative from the end) */
    /** LSTM, GRU: in_features is input_size, out_features hidden_size, has_bias bias, p the
        dropout between layers */
    int64_t num_layers;
    bool bidirectional, batch_first;          /**< LSTM, GRU */
    /** MultiheadAttention (in_features is embed_dim, has_bias bias, p dropout) and the
        Transformer layers (num_heads is nhead; gelu picks GELU over ReLU) */
    struct {
        int64_t num_heads;
        bool batch_first, norm_first, gelu;
    } attn;
} sdict_module_config;

/** Number of cached activations a module keeps from forward for backward. */
#define SDICT_MODULE_CACHE 3

/**
 A module: torch.nn.Module's data, laid open so the optim layer can walk parameters and
 gradients. Use the functions below to build and change it rather than editing arrays.
*/
struct sdict_module {
    sdict_module_type type;
    char *type_name;          /**< class name for messages: "Linear", "Net", "ResNet" (owned) */
    bool training;            /**< true after construction, like torch */
    int64_t version;          /**< _version written to _metadata: 2 for BatchNorm, else 1 */
    sdict_module_config cfg;

    size_t n_params;          sdict_named_tensor *params;    /**< registration order */
    size_t n_buffers;         sdict_named_tensor *buffers;   /**< registration order */
    size_t n_children;        char **child_names;            sdict_module **children;

    sdict_forward_fn forward;   /**< built-in or user function; never NULL */
    sdict_backward_fn backward; /**< NULL until the optim layer provides one */
    void *user;                 /**< user data for SDICT_MOD_CUSTOM forwards */

    /**
     Training-mode forward caches, replaced on each call (all freed by sdict_module_free):
     Linear/Conv2d/Embedding/ReLU/Flatten/pools: cache[0] = input; MaxPool2d: cache[1] = argmax
     (int64, flat index into the input plane, shape of the output); BatchNorm: cache[0] = input,
     cache[1] = x_hat (normalised input), cache[2] = per-channel 1/sqrt(var + eps) [C];
     Dropout: cache[1] = mask already scaled by 1/(1-p) (float32, shape of the input).
    */
    sdict_act cache[SDICT_MODULE_CACHE];
    uint64_t rng;               /**< Dropout generator state (splitmix64), seeded at creation */
};

/**
 Creates an empty user container (torch: a subclass of nn.Module) whose forward is `forward`
 and class name is type_name (used in load_state_dict messages). user is passed through.
 Returns NULL on out-of-memory.
*/
SDICT_API sdict_module *sdict_module_new(const char *type_name, sdict_forward_fn forward,
                                         void *user);
/** nn.Sequential(): forward runs the children in insertion order. NULL on out-of-memory. */
SDICT_API sdict_module *sdict_sequential_new(void);

/**
 Adds child under name (parent.add_module(name, child)); the parent takes ownership, also on
 failure (the child is then freed). Names must be unique and contain no '.'.
 Errors: SDICT_E_INVALID_ARG, SDICT_E_NOMEM.
*/
SDICT_API sdict_status sdict_module_add(sdict_module *parent, const char *name,
                                        sdict_module *child, sdict_error *err);
/** Child named name (one component), or NULL. */
SDICT_API sdict_module *sdict_module_child(const sdict_module *m, const char *name);
/** Module at a dotted path ("layer1.0.conv1"; "" is m itself), or NULL. */
SDICT_API sdict_module *sdict_module_find(const sdict_module *m, const char *path);
/** Parameter or buffer tensor at a dotted state_dict key ("fc.weight"), or NULL. */
SDICT_API sdict_named_tensor *sdict_module_tensor(const sdict_module *m, const char *key);
/** Frees the module, its children, parameters, buffers and caches. NULL-tolerant. */
SDICT_API void sdict_module_free(sdict_module *m);

/** Sets training mode on m and every descendant (Module.train(mode)); eval is train(false). */
SDICT_API void sdict_module_train(sdict_module *m, bool mode);
/** Module.eval(). */
SDICT_API void sdict_module_eval(sdict_module *m);

/** Runs m->forward(m, x, y). *y is allocated (free with sdict_act_free). */
SDICT_API sdict_status sdict_module_forward(sdict_module *m, const sdict_act *x, sdict_act *y,
                                            sdict_error *err);

/**
 Registers a float32 parameter (or, with is_buffer, a persistent buffer of dtype) of the
 given shape (ndim <= SDICT_NN_MAX_DIMS sizes), zero-filled, on m; for use by custom modules.
 *out (may be NULL) receives it. Errors: SDICT_E_INVALID_ARG (duplicate name, bad ndim or size),
 SDICT_E_NOMEM.
*/
SDICT_API sdict_status sdict_module_register(sdict_module *m, const char *name, bool is_buffer,
                                             sdict_dtype dtype, int32_t ndim,
                                             const int64_t *shape, sdict_named_tensor **out,
                                             sdict_error *err);

/** Sets every parameter's gradient to zero (optimizer.zero_grad(set_to_none=False)). */
SDICT_API void sdict_module_zero_grad(sdict_module *m);

/**
 Visits parameters in torch's model.parameters() order (depth-first pre-order, own
 parameters before children's), calling fn(ctx, key, nt) with the dotted key.
*/
SDICT_API void sdict_module_each_param(sdict_module *m,
                                       void (*fn)(void *ctx, const char *key,
                                                  sdict_named_tensor *nt),
                                       void *ctx);

/*==================================================================================================
 MARK: Built-in layers
 Each returns a new module in training mode, or NULL on out-of-memory or invalid arguments
 (sizes <= 0, channels not divisible by groups, p outside [0, 1]). Weights are initialised
 deterministically from a fixed-seed generator with PyTorch's bounds (kaiming-uniform with
 a = sqrt(5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases; N(0,1) for
 Embedding; BatchNorm weight 1, bias 0, running_mean 0, running_var 1). The values are not
 torch's: load torch's weights when equality matters.
==================================================================================================*/

/** nn.Linear(in, out, bias): weight [out, in], bias [out]; y = x W^T + b over the last dim. */
SDICT_API sdict_module *sdict_linear_new(int64_t in_features, int64_t out_features, bool bias);
/**
 nn.Conv2d(in, out, (kh, kw), stride, padding, dilation, groups, bias) with square stride,
 padding and dilation (zero padding); weight [out, in/groups, kh, kw], bias [out].
 Input [N, C, H, W] -> [N, out, (H + 2p - d(kh-1) - 1)/s + 1, same for W].
*/
SDICT_API sdict_module *sdict_conv2d_new(int64_t in_channels, int64_t out_channels, int64_t kh,
                                         int64_t kw, int64_t stride, int64_t padding,
                                         int64_t dilation, int64_t groups, bool bias);
/**
 nn.BatchNorm1d / nn.BatchNorm2d(num_features, eps, momentum, affine, track_running_stats).
 momentum < 0 means momentum=None (cumulative moving average). Parameters weight, bias
 (affine); buffers running_mean, running_var, num_batches_tracked (int64 0-dim) when tracking.
 BatchNorm1d takes [N, C] or [N, C, L]; BatchNorm2d takes [N, C, H, W].
 Training: normalises with the batch mean and biased variance, then
 running = (1 - m) * running + m * batch (unbiased variance), num_batches_tracked += 1
 (int64 two's complement, as torch's num_batches_tracked.add_(1): INT64_MAX + 1 wraps to
 INT64_MIN, and momentum=None then uses the factor 1/INT64_MIN as torch does). With
 momentum=None the factor is 1/num_batches_tracked after the increment; a loaded count of -1
 makes it 1/0, which torch raises as ZeroDivisionError: forward then fails with
 SDICT_E_INVALID_ARG (the count stays incremented, as torch's does).
 Eval with tracking: normalises with the running statistics.
*/
SDICT_API sdict_module *sdict_batchnorm1d_new(int64_t num_features, double eps, double momentum,
                                              bool affine, bool track_running_stats);
SDICT_API sdict_module *sdict_batchnorm2d_new(int64_t num_features, double eps, double momentum,
                                              bool affine, bool track_running_stats);
/** nn.Dropout(p): training zeroes each element with probability p (seeded generator, see
    sdict_dropout_seed) and scales the rest by 1/(1-p); eval is the identity. */
SDICT_API sdict_module *sdict_dropout_new(double p);
/** Reseeds a Dropout module's generator (deterministic masks for tests); on a
    MultiheadAttention module, that of its attention-weight dropout. */
SDICT_API void sdict_dropout_seed(sdict_module *m, uint64_t seed);
/** nn.Embedding(num, dim): weight [num, dim]; int64 indices of any shape S -> [S..., dim].
    Indices outside [0, num) fail with SDICT_E_INVALID_ARG. */
SDICT_API sdict_module *sdict_embedding_new(int64_t num_embeddings, int64_t embedding_dim);
/** nn.ReLU(). */
SDICT_API sdict_module *sdict_relu_new(void);
/** nn.MaxPool2d(kernel, stride, padding) (stride 0 means kernel, padding is -inf). */
SDICT_API sdict_module *sdict_maxpool2d_new(int64_t kernel, int64_t stride, int64_t padding);
/** nn.AvgPool2d(kernel, stride, padding) with count_include_pad=True (torch's default). */
SDICT_API sdict_module *sdict_avgpool2d_new(int64_t kernel, int64_t stride, int64_t padding);
/** nn.AdaptiveAvgPool2d((oh, ow)): torch's bins start = floor(i*H/oh), end = ceil((i+1)*H/oh). */
SDICT_API sdict_module *sdict_adaptive_avgpool2d_new(int64_t oh, int64_t ow);
/** nn.Flatten(start_dim, end_dim) (torch's defaults are 1, -1). */
SDICT_API sdict_module *sdict_flatten_new(int32_t start_dim, int32_t end_dim);
/** nn.Sigmoid(): y = 1 / (1 + exp(-x)), element-wise on any float32 shape. */
SDICT_API sdict_module *sdict_sigmoid_new(void);
/** nn.Tanh(): y = tanh(x), element-wise on any float32 shape. */
SDICT_API sdict_module *sdict_tanh_new(void);
/** nn.SiLU(): y = x * sigmoid(x), element-wise on any float32 shape. */
SDICT_API sdict_module *sdict_silu_new(void);
/**
 nn.Conv1d(in, out, k, stride, padding, dilation, groups, bias) with zero padding;
 weight [out, in/groups, k], bias [out]. Input [N, C, L] (or unbatched [C, L], as torch) ->
 [N, out, (L + 2p - d(k-1) - 1)/s + 1]. Runs as Conv2d over a height of 1 (im2col, sgemm).
*/
SDICT_API sdict_module *sdict_conv1d_new(int64_t in_channels, int64_t out_channels,
                                         int64_t kernel_size, int64_t stride, int64_t padding,
                                         int64_t dilation, int64_t groups, bool bias);

/*==================================================================================================
 MARK: Recurrent layers (nn.LSTM, nn.GRU)
 Parameters as torch names and lays them out, registered in its order: for each layer k, for
 each direction ("" then "_reverse"): weight_ih_l{k}{sfx} [G*H, in_k], weight_hh_l{k}{sfx}
 [G*H, H], and with bias bias_ih_l{k}{sfx}, bias_hh_l{k}{sfx} [G*H]; G = 4 gate blocks for
 LSTM (i, f, g, o), 3 for GRU (r, z, n); H = hidden_size; in_0 = input_size, in_k =
 D*H above (D = 2 when bidirectional, else 1). Initialised U(-1/sqrt(H), 1/sqrt(H)) from a
 fixed-seed generator (torch's bound, not its values). proj_size is not supported: a
 state_dict with weight_hr_l{k} keys fails to load as unexpected keys.
 Equations (torch's documentation):
   LSTM: i,f,o = sigmoid(W_i* x + b_i* + W_h* h + b_h*), g = tanh(...), c' = f c + i g,
         h' = o tanh(c').
   GRU:  r,z = sigmoid(W_i* x + b_i* + W_h* h + b_h*), n = tanh(W_in x + b_in + r (W_hn h +
         b_hn)), h' = (1 - z) n + z h.
 Training mode applies Dropout(p) (module generator, see sdict_dropout_seed) to every layer's
 output except the last, as torch; eval mode has no dropout.
==================================================================================================*/

/**
 nn.LSTM(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional);
 class "LSTM". NULL on out-of-memory or invalid arguments (sizes <= 0, sizes above 2^31,
 dropout outside [0, 1]).
*/
SDICT_API sdict_module *sdict_lstm_new(int64_t input_size, int64_t hidden_size,
                                       int64_t num_layers, bool bias, bool batch_first,
                                       double dropout, bool bidirectional);
/** nn.GRU(...), same arguments and layout as sdict_lstm_new with 3 gate blocks; class "GRU". */
SDICT_API sdict_module *sdict_gru_new(int64_t input_size, int64_t hidden_size,
                                      int64_t num_layers, bool bias, bool batch_first,
                                      double dropout, bool bidirectional);

/**
 The forward of torch's LSTM/GRU: `output, h_n = gru(x, h0)`, `output, (h_n, c_n) =
 lstm(x, (h0, c0))`. sdict_module_forward on these modules is this with h0 = c0 = NULL,
 returning output only.
 @param x       float32 [L, N, H_in] ([N, L, H_in] with batch_first), or unbatched [L, H_in].
 @param h0      optional initial hidden state [D*num_layers, N, H] ([D*num_layers, H]
                unbatched; never batch-first, as torch); NULL means zeros.
 @param c0      optional initial cell state (LSTM only; same shape as h0); NULL means zeros.
                A GRU refuses a c0.
 @param output  receives [L, N, D*H] ([N, L, D*H] batch-first, [L, D*H] unbatched): the last
                layer's h at each step, forward direction first.
 @param h_n     optional; receives the final hidden state of each layer and direction, shaped
                as h0 (index 2k + d for layer k, direction d).
 @param c_n     optional (LSTM); receives the final cell state, shaped as h0. Must be NULL for
                a GRU.
 In training mode the module keeps what sdict_rnn_backward needs (inputs, gates, states,
 dropout masks), replacing the previous call's cache.
 All outputs are allocated (free with sdict_act_free) and zeroed on failure.
 Errors: SDICT_E_INVALID_ARG (not an LSTM/GRU module, c0/c_n given to a GRU),
 SDICT_E_SHAPE (x not float32 of rank 2 or 3, wrong feature count with torch's "input.size(-1)
 must be equal to input_size" wording, a sequence of length 0, a batch of size 0, h0/c0 of
 the wrong shape),
 SDICT_E_LIMIT (more than 2^31 - 1 steps times batch), SDICT_E_NOMEM.
*/
SDICT_API sdict_status sdict_rnn_forward(sdict_module *m, const sdict_act *x, const sdict_act *h0,
                                         const sdict_act *c0, sdict_act *output, sdict_act *h_n,
                                         sdict_act *c_n, sdict_error *err);

/*==================================================================================================
 MARK: Transformer layers
 Same conventions as the built-ins above (sdict_module_backward runs their backward).
==================================================================================================*/

/**
 nn.LayerNorm(normalized_shape, eps, elementwise_affine, bias): normalises over the last ndim
 dims of the input (which must equal normalized_shape), with the biased variance:
 y = (x - mean) / sqrt(var + eps) * weight + bias. Parameters weight (ones) and bias (zeros),
 each of shape normalized_shape, when elementwise_affine (bias only when bias is true; torch
 >= 2.1's bias=False). Training forward caches the normalised input (cache[1]) and 1/sqrt(var +
 eps) per row (cache[2]) for backward. NULL for ndim outside 1..SDICT_NN_MAX_DIMS, a size <= 0,
 eps < 0 or NaN, or out-of-memory.
*/
SDICT_API sdict_module *sdict_layernorm_new(int32_t ndim, const int64_t *normalized_shape,
                                            double eps, bool elementwise_affine, bool bias);
/** nn.GELU(approximate='none'|'tanh'): x * Phi(x) (erf), or with tanh_approximate
    0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), which is also transformers' "gelu_new"
    and "gelu_pytorch_tanh". Any shape. NULL on out-of-memory. */
SDICT_API sdict_module *sdict_gelu_new(bool tanh_approximate);
/** nn.Softmax(dim) (dim < 0 counts from the end): exp(x - logsumexp(x)) along dim, computed
    with the row maximum subtracted. Training forward caches the output. NULL on OOM. */
SDICT_API sdict_module *sdict_softmax_new(int32_t dim);
/** nn.LogSoftmax(dim): x - logsumexp(x) along dim. NULL on out-of-memory. */
SDICT_API sdict_module *sdict_log_softmax_new(int32_t dim);
/**
 transformers' Conv1D(nf, nx) (pytorch_utils.py), GPT-2's projection: a Linear whose weight is
 stored transposed, weight [nx, nf] (in, out), bias [nf]; y = x . weight + bias over the last
 dim ([..., nx] -> [..., nf]). Weight N(0, 0.02) from our generator, bias 0 (transformers'
 distribution, not its values). NULL for sizes <= 0 or above INT32_MAX, or out-of-memory.
*/
SDICT_API sdict_module *sdict_hf_conv1d_new(int64_t nf, int64_t nx);

/*==================================================================================================
 MARK: Ready-made models (torch equivalents named in each comment)
==================================================================================================*/

/** torchvision.models.resnet18(num_classes=n): class "ResNet", torchvision's key names
    (conv1, bn1, layer1.0.conv1, layer2.0.downsample.0, fc, ...). NULL on out-of-memory. */
SDICT_API sdict_module *sdict_resnet18_new(int64_t num_classes);
/** The PyTorch recipe's Net ("TheModelClass"): conv1 3->6 k5, relu, pool 2x2, conv2 6->16 k5,
    relu, pool, flatten, fc1 400->120, relu, fc2 120->84, relu, fc3 84->10; class "Net",
    children conv1, pool, conv2, fc1, fc2, fc3. Input [N, 3, 32, 32]. */
SDICT_API sdict_module *sdict_lenet_new(void);
/** nn.Sequential(Embedding(100,16), Flatten(), Linear(128,64), BatchNorm1d(64), ReLU(),
    Dropout(p), Linear(64,10)) on int64 input [N, 8]; keys "0.weight", "2.weight", ... */
SDICT_API sdict_module *sdict_mlp_new(double dropout_p);

/*==================================================================================================
 MARK: Attention and torch's Transformer layers
 nn.MultiheadAttention, nn.TransformerEncoderLayer and nn.TransformerDecoderLayer with torch's
 state_dict keys (src/nn/attention.c). Shapes: with batch_first the sequence inputs are
 [N, L, E], else [L, N, E]; a 2-D input [L, E] is one unbatched sequence (torch's unbatched
 form). Training mode applies dropout where torch does: MultiheadAttention drops the attention
 probabilities (after softmax, before the product with v; our seeded generator, see
 sdict_dropout_seed on the MultiheadAttention module), the Transformer layers run their
 Dropout children dropout, dropout1, dropout2 (and dropout3) at torch's positions; eval applies
 none. Backward (sdict_module_backward, sdict_multihead_attention_backward,
 sdict_transformer_decoder_layer_backward) follows a training-mode forward and accumulates
 every parameter's gradient under torch's names.
==================================================================================================*/

/**
 Optional masks and flags of an attention call (a zeroed struct: no masks, no weights).
 A bool mask (the *_bool flag set; load torch's bool tensors with sdict_act_from_tensor, which
 gives 1.0 / 0.0) marks with nonzero the positions that may NOT be attended (set to -inf); a
 float mask is added to the scores, as torch does. attn_mask is [L, S] or [N * num_heads, L, S]
 (index n * num_heads + h); key_padding_mask is [N, S] ([S] unbatched). A query row with every
 key masked gives NaN, as torch's.
*/
typedef struct sdict_mha_args {
    const sdict_act *attn_mask;         /**< or NULL */
    bool attn_mask_bool;
    const sdict_act *key_padding_mask;  /**< or NULL */
    bool key_padding_mask_bool;
    /** With no attn_mask, apply the causal mask (key s > query l is masked). With an attn_mask
        it is, as torch's is_causal, only a hint: attn_mask is used as given. */
    bool is_causal;
    bool need_weights;                  /**< fill attn_weights */
    bool average_attn_weights;          /**< average them over heads (torch's default true) */
} sdict_mha_args;

/**
 nn.MultiheadAttention(embed_dim, num_heads, dropout, bias, batch_first=batch_first) with
 kdim = vdim = embed_dim: parameters in_proj_weight [3E, E] and in_proj_bias [3E] (rows q, k,
 v), child out_proj (a Linear(E, E, bias)): state_dict keys in_proj_weight, in_proj_bias,
 out_proj.weight, out_proj.bias. add_bias_kv, add_zero_attn and separate kdim/vdim
 (q_proj_weight, k_proj_weight, v_proj_weight) are not supported: load_state_dict reports such
 keys as unexpected. sdict_module_forward on it is self-attention without masks returning
 attn_output. A training-mode forward whose key and value are one activation keeps the inputs,
 q, k, v, the attention probabilities and the dropout mask (cache[0], cache[1] the sizes), and
 sdict_module_backward then accumulates the gradients of in_proj_weight, in_proj_bias and
 out_proj and gives dx = dquery (+ dkey + dvalue when query is that activation too: self
 attention), masks and dropout of that forward included. Any other forward drops the cache.
 NULL if embed_dim <= 0, num_heads <= 0, embed_dim % num_heads != 0, dropout outside [0, 1],
 or out-of-memory.
*/
SDICT_API sdict_module *sdict_multihead_attention_new(int64_t embed_dim, int64_t num_heads,
                                                      double dropout, bool bias,
                                                      bool batch_first);

/**
 Eval forward of MultiheadAttention: `attn_output, attn_weights = mha(query, key, value,
 key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal)`, torch's math
 path (softmax(q k^T / sqrt(head_dim) + masks) v per head, then out_proj).
 @param query  float32 [L, N, E] ([N, L, E] with batch_first, [L, E] unbatched).
 @param key    float32, same layout, S positions; value the same shape as key.
 @param args   masks and flags, or NULL for none (see sdict_mha_args).
 @param attn_output  receives float32 in query's layout (allocated; free with sdict_act_free).
 @param attn_weights may be NULL; with args->need_weights receives [N, L, S] averaged over
                     heads, or [N, num_heads, L, S] (without N unbatched); zeroed otherwise.
 In training mode with dropout p > 0 the probabilities are dropped (kept ones scaled by
 1/(1-p)) and attn_weights are the dropped ones, as torch returns them.
 @return SDICT_OK; SDICT_E_SHAPE (a dtype other than float32, a rank other than 2 or 3,
         an embedding size other than E, key/value or mask shapes that do not fit);
         SDICT_E_INVALID_ARG (not a MultiheadAttention module); SDICT_E_NOMEM. Outputs are
         zeroed on failure.
*/
SDICT_API sdict_status sdict_multihead_attention_forward(sdict_module *m, const sdict_act *query,
                                                         const sdict_act *key,
                                                         const sdict_act *value,
                                                         const sdict_mha_args *args,
                                                         sdict_act *attn_output,
                                                         sdict_act *attn_weights,
                                                         sdict_error *err);

/**
 Backward of the last training-mode sdict_multihead_attention_forward whose key and value were
 one activation (torch's autograd through F.multi_head_attention_forward): accumulates the
 gradients of in_proj_weight, in_proj_bias, out_proj.weight and out_proj.bias.
 @param dy          float32 gradient of attn_output, attn_output's shape.
 @param dquery      may be NULL; receives the gradient of query (query's shape; allocated, free
                    with sdict_act_free). For self-attention (query, key and value one activation)
                    it is dquery + dkey + dvalue.
 @param dkey_value  may be NULL; receives dkey + dvalue (key's shape) for cross-attention; stays
                    zeroed for self-attention.
 @return SDICT_OK; SDICT_E_INVALID_ARG (not a MultiheadAttention module, or no cached
         training-mode forward with key == value); SDICT_E_SHAPE (dy not float32 of the output's
         shape); SDICT_E_NOMEM. Outputs are zeroed on failure.
*/
SDICT_API sdict_status sdict_multihead_attention_backward(sdict_module *m, const sdict_act *dy,
                                                          sdict_act *dquery,
                                                          sdict_act *dkey_value,
                                                          sdict_error *err);

/** Arguments of nn.TransformerEncoderLayer / nn.TransformerDecoderLayer (torch's names). */
typedef struct sdict_transformer_layer_config {
    int64_t d_model, nhead, dim_feedforward; /**< torch's default dim_feedforward is 2048 */
    double dropout;                          /**< torch's default 0.1 (eval ignores it) */
    bool gelu;                               /**< activation "gelu" (exact); false: "relu" */
    double layer_norm_eps;                   /**< torch's default 1e-5 */
    bool batch_first, norm_first;
    bool bias;                               /**< torch >= 2.1's bias (true in older ones) */
} sdict_transformer_layer_config;

/**
 nn.TransformerEncoderLayer(**cfg): children self_attn (MultiheadAttention), linear1
 (d_model -> dim_feedforward), dropout, linear2, norm1, norm2 (LayerNorm(d_model, eps)),
 dropout1, dropout2: the state_dict keys of torch. sdict_module_forward runs it without masks.
 After a training-mode forward, sdict_module_backward gives the gradient of src and accumulates
 every parameter's (self_attn.in_proj_weight, linear1.weight, norm1.weight, ...), through the
 dropout masks and masks of that forward. Each dropout site has its own generator (reseed with
 sdict_dropout_seed on the child: self_attn, dropout, dropout1, dropout2).
 NULL on invalid sizes (as sdict_multihead_attention_new; dim_feedforward <= 0) or out-of-memory.
*/
SDICT_API sdict_module *sdict_transformer_encoder_layer_new(
    const sdict_transformer_layer_config *cfg);
/**
 Forward of TransformerEncoderLayer(src, src_mask, src_key_padding_mask, is_causal):
 norm_first: x + sa(norm1(x)), then x + ff(norm2(x)); else norm1(x + sa(x)), then
 norm2(x + ff(x)); ff = linear2(activation(linear1(x))); training mode applies dropout1
 to sa's output, dropout to the activation's, dropout2 to ff's, as torch. src float32 in the
 layer's layout ([L, N, E], [N, L, E] with batch_first, or [L, E]); args (may be NULL)
 carries src_mask as attn_mask, src_key_padding_mask and is_causal (need_weights is ignored).
 *y gets src's shape.
 Masked padding positions are computed like the others (torch's math path; its nested-tensor
 fast path in TransformerEncoder may give zeros there instead). A training-mode forward keeps
 what backward needs (its children's caches, linear1's output, src's shape); any forward drops
 the previous one's.
 Errors: those of sdict_multihead_attention_forward; SDICT_E_INVALID_ARG for another module.
*/
SDICT_API sdict_status sdict_transformer_encoder_layer_forward(sdict_module *m,
                                                               const sdict_act *src,
                                                               const sdict_mha_args *args,
                                                               sdict_act *y, sdict_error *err);
/**
 nn.TransformerDecoderLayer(**cfg): children self_attn, multihead_attn (both
 MultiheadAttention), linear1, dropout, linear2, norm1, norm2, norm3, dropout1, dropout2,
 dropout3, as torch. NULL as sdict_transformer_encoder_layer_new. sdict_module_forward is
 refused (it needs memory); sdict_module_backward after a training-mode
 sdict_transformer_decoder_layer_forward gives the gradient of tgt (see
 sdict_transformer_decoder_layer_backward for memory's).
*/
SDICT_API sdict_module *sdict_transformer_decoder_layer_new(
    const sdict_transformer_layer_config *cfg);
/**
 Forward of TransformerDecoderLayer(tgt, memory, tgt_mask, memory_mask,
 tgt_key_padding_mask, memory_key_padding_mask, tgt_is_causal, memory_is_causal): with
 norm_first x + sa(norm1(x)), x + mha(norm2(x), memory), x + ff(norm3(x)); else the norms
 after each residual. tgt [T, N, E] and memory [S, N, E] in the layer's layout; tgt_args (self
 attention) and memory_args (cross attention) may be NULL. *y gets tgt's shape. Training mode
 applies dropout1, dropout2, dropout (in ff) and dropout3 at torch's positions and keeps what
 backward needs.
 Errors: those of sdict_multihead_attention_forward; SDICT_E_INVALID_ARG for another module.
*/
SDICT_API sdict_status sdict_transformer_decoder_layer_forward(sdict_module *m,
                                                               const sdict_act *tgt,
                                                               const sdict_act *memory,
                                                               const sdict_mha_args *tgt_args,
                                                               const sdict_mha_args *memory_args,
                                                               sdict_act *y, sdict_error *err);
/**
 Backward of the last training-mode sdict_transformer_decoder_layer_forward: accumulates every
 parameter's gradient (self_attn.*, multihead_attn.*, linear1.*, linear2.*, norm1..3.*).
 @param dy       float32 gradient of the output, tgt's shape.
 @param dtgt     may be NULL; receives the gradient of tgt (allocated; free with sdict_act_free).
 @param dmemory  may be NULL; receives the gradient of memory (memory's shape; allocated).
 @return SDICT_OK; SDICT_E_INVALID_ARG (not a TransformerDecoderLayer, or no training-mode
         forward cached); SDICT_E_SHAPE (dy's dtype or shape); SDICT_E_NOMEM. Outputs are
         zeroed on failure.
*/
SDICT_API sdict_status sdict_transformer_decoder_layer_backward(sdict_module *m,
                                                                const sdict_act *dy,
                                                                sdict_act *dtgt,
                                                                sdict_act *dmemory,
                                                                sdict_error *err);

/*==================================================================================================
 MARK: GPT-2 (Hugging Face transformers' GPT2LMHeadModel)
 modeling_gpt2.py of transformers 5.12, float32: token + position embeddings, n_layer
 pre-LayerNorm blocks (ln_1, causal self-attention through Conv1D c_attn / c_proj, ln_2, MLP
 c_fc -> activation -> c_proj, residual adds), ln_f, lm_head. The forwards (logits, KV cache,
 generation) are eval mode, where dropout is the identity; sdict_gpt2_forward_backward is the
 training step's loss and gradients, with dropout in training mode.
==================================================================================================*/

/** Largest config.json sdict_gpt2_config_from_json reads (16 MiB; transformers writes about 1
    KB for GPT-2), so a huge file is refused before it is parsed. */
#define SDICT_GPT2_MAX_CONFIG_BYTES (16 << 20)
/** Most blocks (n_layer) sdict_gpt2_new builds; GPT-2 XL has 48. */
#define SDICT_GPT2_MAX_LAYERS 1024
/** Most parameters sdict_gpt2_new allocates (lm_head counted even when tied): 2^32 float32, 16
    GiB; GPT-2 XL has 1.6e9 with its head. */
#define SDICT_GPT2_MAX_PARAMS (INT64_C(1) << 32)
/** Most bytes one call allocates for activations (16 GiB): sdict_gpt2_forward_backward as
    sdict_gpt2_train_bytes estimates them; sdict_gpt2_forward and sdict_gpt2_forward_cached for
    logits and activations, 4 batch seq (vocab_size (0 with last_only) + 6 n_embd + n_inner +
    n_positions) bytes; sdict_gpt2_cache_new for its keys and values. */
#define SDICT_GPT2_MAX_TRAIN_BYTES (INT64_C(1) << 34)

/** The MLP activation (config.json's activation_function). */
typedef enum sdict_gpt2_act {
    SDICT_GPT2_GELU_NEW = 0, /**< "gelu_new", "gelu_pytorch_tanh", "gelu_fast": tanh form */
    SDICT_GPT2_GELU,         /**< "gelu": exact (erf) */
    SDICT_GPT2_RELU          /**< "relu" */
} sdict_gpt2_act;

/** GPT2Config's fields that change the computation; names as config.json spells them. */
typedef struct sdict_gpt2_config {
    int64_t vocab_size, n_positions, n_embd, n_layer, n_head;
    int64_t n_inner;               /**< MLP width; 0 (config null) means 4 * n_embd */
    double layer_norm_epsilon;
    sdict_gpt2_act activation;
    bool scale_attn_weights;       /**< scores scaled by head_dim ** -0.5 */
    bool scale_attn_by_inverse_layer_idx; /**< and by 1 / (layer index + 1) */
    bool reorder_and_upcast_attn;  /**< accepted: in float32 it computes the same thing */
    bool tie_word_embeddings;      /**< lm_head.weight is transformer.wte.weight */
    int64_t eos_token_id;          /**< generation stops after it; -1 for none */
    double attn_pdrop;   /**< dropout on the attention weights in training mode (default 0.1) */
    double resid_pdrop;  /**< dropout on each block's attn and mlp output (default 0.1) */
    double embd_pdrop;   /**< dropout on wte + wpe (default 0.1) */
} sdict_gpt2_config;

/** A GPT-2 model: its module tree plus what the fast forward needs. */
typedef struct sdict_gpt2 sdict_gpt2;
/** Keys and values of past positions for incremental decoding (transformers' DynamicCache). */
typedef struct sdict_gpt2_cache sdict_gpt2_cache;

/** Fills c with GPT2Config()'s defaults (the 124M "gpt2": 50257 / 1024 / 768 / 12 / 12,
    eps 1e-5, gelu_new, scale_attn_weights, tied, eos 50256, the three dropouts 0.1). */
SDICT_API void sdict_gpt2_config_default(sdict_gpt2_config *c);

/**
 Reads a transformers config.json (UTF-8 JSON object; duplicate keys refused) over the
 defaults. Fields read: vocab_size, n_positions, n_embd, n_layer, n_head, n_inner (null allowed),
 layer_norm_epsilon, activation_function, scale_attn_weights, scale_attn_by_inverse_layer_idx,
 reorder_and_upcast_attn, tie_word_embeddings, eos_token_id, attn_pdrop, resid_pdrop, embd_pdrop
 (numbers in [0, 1]), model_type (must be "gpt2" when
 present), add_cross_attention (must be false); others are ignored.
 Errors: SDICT_E_IO (the file cannot be opened or read, or is a directory), SDICT_E_LIMIT
 (larger than SDICT_GPT2_MAX_CONFIG_BYTES; JSON nested deeper than 2048 levels is a parse
 error),
 SDICT_E_INVALID_ARG naming the file
 and the field (or the JSON error's line, column and byte offset): a malformed file, a size
 outside 1..2^31-1, an activation other than
 gelu_new / gelu_pytorch_tanh / gelu_fast / gelu / relu, cross-attention, n_embd not divisible
 by n_head.
*/
SDICT_API sdict_status sdict_gpt2_config_from_json(const char *path, sdict_gpt2_config *cfg,
                                                   sdict_error *err);

/**
 GPT2LMHeadModel(config) in eval mode: a module tree (class "GPT2LMHeadModel", see
 sdict_gpt2_module) with transformers' state_dict keys transformer.wte.weight [vocab, n_embd],
 transformer.wpe.weight [n_positions, n_embd], transformer.h.N.{ln_1,ln_2}.{weight,bias},
 transformer.h.N.attn.c_attn.{weight [n_embd, 3 n_embd], bias}, .attn.c_proj, .mlp.c_fc
 {weight [n_embd, n_inner]}, .mlp.c_proj, transformer.ln_f, lm_head.weight [vocab, n_embd].
 Weights are random from our generator with the distributions of transformers'
 _init_weights (wte, wpe, lm_head and Conv1D weights N(0, 0.02), attn.c_proj and mlp.c_proj
 weights N(0, 0.02 / sqrt(2 n_layer)), biases 0, LayerNorm weight 1 and bias 0; not torch's
 draws), lm_head a copy of wte when tied. *out owns everything;
 free with sdict_gpt2_free.
 Errors: SDICT_E_INVALID_ARG naming the field (a size <= 0, vocab_size, n_positions or n_head
 above 2^31-1, n_embd above 2^29-1, n_layer above SDICT_GPT2_MAX_LAYERS, n_inner outside
 0..2^31-1, n_embd % n_head != 0, a negative eps), SDICT_E_LIMIT (more parameters than
 SDICT_GPT2_MAX_PARAMS, refused before allocating), SDICT_E_NOMEM.
*/
SDICT_API sdict_status sdict_gpt2_new(const sdict_gpt2_config *cfg, sdict_gpt2 **out,
                                      sdict_error *err);
/** Frees the model and its module tree. NULL-tolerant. */
SDICT_API void sdict_gpt2_free(sdict_gpt2 *g);
/** The module tree (owned by g): for sdict_module_state_dict, each_param and the like. Loading
    weights into it directly bypasses the tying below: use sdict_gpt2_load_state_dict. */
SDICT_API sdict_module *sdict_gpt2_module(sdict_gpt2 *g);
/** The config g was built from (owned by g). */
SDICT_API const sdict_gpt2_config *sdict_gpt2_get_config(const sdict_gpt2 *g);
/** Whether lm_head currently is wte (see sdict_gpt2_load_state_dict). */
SDICT_API bool sdict_gpt2_is_tied(const sdict_gpt2 *g);

/**
 Loads a GPT2LMHeadModel state_dict (dict of tensors, any float dtype, converted to float32) as
 from_pretrained does in transformers 5.12:
 - keys as GPT2LMHeadModel names them; a GPT2Model file (keys without "transformer.", as the
   hub's own "gpt2") loads into the transformer part, as base_model_prefix makes transformers do;
 - the "attn.bias" / "attn.masked_bias" buffers older versions saved are ignored;
 - with tie_word_embeddings, a missing lm_head.weight (safetensors files omit it) is tied to wte;
   one present and equal to wte keeps them tied; one present and different is kept apart, as
   transformers does (it warns "... we will NOT tie them").
 Errors: SDICT_E_SHAPE (a size mismatch: torch's message), SDICT_E_NOT_FOUND (a missing key, or
 lm_head.weight absent with tie_word_embeddings false, or a key GPT-2 does not have),
 SDICT_E_INVALID_ARG (not a dict of tensors), SDICT_E_DTYPE, SDICT_E_NOMEM. Not atomic: keys
 copied before a failure stay copied.
*/
SDICT_API sdict_status sdict_gpt2_load_state_dict(sdict_gpt2 *g, const sdict_value *state_dict,
                                                  sdict_error *err);
/**
 GPT2LMHeadModel.from_pretrained(dir) for a local Hugging Face folder: dir/config.json
 (sdict_gpt2_config_from_json), then the weights through sdict_load on the folder
 (model.safetensors, a sharded model.safetensors.index.json, pytorch_model.bin or its index, in
 transformers' order) and sdict_gpt2_load_state_dict. *out is NULL on failure.
 Before the model is allocated, the parameter count config.json implies is checked against the
 elements the weights' storages hold (each storage once, whatever views of it the file has: an
 expanded or repeated view adds nothing): a config describing more than twice those elements
 plus 2^20 is refused (SDICT_E_SHAPE), so memory stays proportional to the files (a smaller
 mismatch is left to the load's messages, which name the key). Errors: those of the three,
 and that one.
*/
SDICT_API sdict_status sdict_gpt2_from_pretrained(const char *dir, sdict_gpt2 **out,
                                                  sdict_error *err);

/**
 Eval forward of GPT2LMHeadModel(input_ids).logits: ids int64 [batch, seq] (values in
 [0, vocab_size), seq <= n_positions) -> *logits float32 [batch, seq, vocab_size] (allocated;
 free with sdict_act_free; zeroed on failure). Causal attention, positions 0..seq-1.
 Errors: SDICT_E_SHAPE (not int64 [B, T]), SDICT_E_INVALID_ARG (an id out of range),
 SDICT_E_LIMIT (seq > n_positions, or logits and activations above SDICT_GPT2_MAX_TRAIN_BYTES,
 refused before allocating), SDICT_E_NOMEM.
*/
SDICT_API sdict_status sdict_gpt2_forward(sdict_gpt2 *g, const sdict_act *ids, sdict_act *logits,
                                          sdict_error *err);

/**
 A KV cache for batch rows and up to max_len positions (max_len <= n_positions): 2 * n_layer *
 batch * max_len * n_embd floats. Free with sdict_gpt2_cache_free.
 Errors: SDICT_E_INVALID_ARG (sizes), SDICT_E_LIMIT (more than SDICT_GPT2_MAX_TRAIN_BYTES),
 SDICT_E_NOMEM.
*/
SDICT_API sdict_status sdict_gpt2_cache_new(const sdict_gpt2 *g, int64_t batch, int64_t max_len,
                                            sdict_gpt2_cache **out, sdict_error *err);
/** NULL-tolerant. */
SDICT_API void sdict_gpt2_cache_free(sdict_gpt2_cache *c);
/** Number of positions the cache holds (past_key_values.get_seq_length()). */
SDICT_API int64_t sdict_gpt2_cache_len(const sdict_gpt2_cache *c);
/** Forgets every position (the buffers are kept). */
SDICT_API void sdict_gpt2_cache_reset(sdict_gpt2_cache *c);

/**
 Incremental forward (model(ids, past_key_values=cache, use_cache=True)): ids int64 [batch, T]
 are positions len..len+T-1 after those in the cache, which gains them. *logits is float32
 [batch, T, vocab] or, with last_only, [batch, 1, vocab] for the last position only.
 Errors: as sdict_gpt2_forward, plus SDICT_E_SHAPE (batch differs from the cache's),
 SDICT_E_INVALID_ARG (a cache made for a model of another n_layer, n_head or head size) and
 SDICT_E_LIMIT (len + T > the cache's max_len); the cache is unchanged on failure.
*/
SDICT_API sdict_status sdict_gpt2_forward_cached(sdict_gpt2 *g, sdict_gpt2_cache *cache,
                                                 const sdict_act *ids, bool last_only,
                                                 sdict_act *logits, sdict_error *err);

/**
 model.generate(prompt, max_new_tokens=N, do_sample=top_k > 0, top_k=K) for one sequence with
 a KV cache: top_k <= 0 is greedy (argmax, the first of equal maxima); top_k > 0 draws from the
 softmax of the k largest logits (temperature 1) with our seeded generator (seed gives the
 same ids every run; they are not torch's draws). Stops after max_new_tokens or after emitting
 config.eos_token_id. out (room for n_prompt + max_new_tokens ids) receives the prompt then the
 new ids; *n_out their count. On an error *n_out counts the ids of out that were written before
 it (0 for argument errors; the prompt, and any ids generated, for an id out of range or
 out of memory); the caller owns out throughout.
 Errors: SDICT_E_INVALID_ARG (empty prompt, negative N, an id out of range), SDICT_E_LIMIT
 (n_prompt + N > n_positions, checked without overflow for any N up to INT64_MAX),
 SDICT_E_NOMEM.
*/
SDICT_API sdict_status sdict_gpt2_generate(sdict_gpt2 *g, const int64_t *prompt, int64_t n_prompt,
                                           int64_t max_new_tokens, int64_t top_k, uint64_t seed,
                                           int64_t *out, int64_t *n_out, sdict_error *err);

/**
 Training forward and backward of GPT2LMHeadModel(input_ids, labels=labels).loss, then
 loss.backward(), as transformers 5.12 computes them (eager causal attention, float32):
 ids int64 [batch, seq] (values in [0, vocab_size), seq <= n_positions); labels int64 of the same
 shape, or NULL for labels = input_ids. The loss is ForCausalLMLoss: cross-entropy of the logits
 at positions 0..seq-2 against labels 1..seq-1, labels equal to -100 ignored, mean over the
 counted positions (nan when none counts), written to *loss.
 Gradients are accumulated (added) into the grad tensors of every parameter of
 sdict_gpt2_module(g), as loss.backward() does: zero them first (sdict_module_zero_grad). With
 a tied lm_head (sdict_gpt2_is_tied) lm_head's gradient is added to transformer.wte.weight's,
 which is the one Parameter torch has for both; lm_head.weight's own grad stays untouched. Before
 the forward, lm_head is refreshed from wte when tied (sdict_gpt2_tie_weights).
 Dropout follows the root module's training flag (sdict_module_train(sdict_gpt2_module(g), ...)):
 in training mode embd_pdrop after the embeddings, attn_pdrop on the attention weights and
 resid_pdrop on each block's attn and mlp outputs (scaled by 1 / (1 - p)), with masks drawn from
 our generator seeded by seed (not torch's draws); in eval mode none, and the gradients are still
 computed. The training flag is the same on return. Memory: about (8 n_embd + 2 n_inner +
 2 n_head seq) floats per position and layer, freed on return.
 Errors: SDICT_E_SHAPE (ids not int64 [B, T], labels of another shape), SDICT_E_INVALID_ARG (an
 id out of range, a label neither -100 nor in [0, vocab_size): "Target 12 is out of bounds."),
 SDICT_E_LIMIT (seq > n_positions, or sdict_gpt2_train_bytes(g, batch, seq) above
 SDICT_GPT2_MAX_TRAIN_BYTES: refused before allocating), SDICT_E_NOMEM. On failure *loss is nan
 and gradients may be partly accumulated.
*/
SDICT_API sdict_status sdict_gpt2_forward_backward(sdict_gpt2 *g, const sdict_act *ids,
                                                   const sdict_act *labels, uint64_t seed,
                                                   float *loss, sdict_error *err);
/** Bytes of activations sdict_gpt2_forward_backward allocates for ids [batch, seq], about:
    4 batch seq (n_layer (8 n_embd + 2 n_inner + 2 n_head seq) + 3 vocab_size), in double (no
    overflow for any sizes). A caller can check a batch size against SDICT_GPT2_MAX_TRAIN_BYTES
    before building the batch. */
SDICT_API double sdict_gpt2_train_bytes(const sdict_gpt2 *g, int64_t batch, int64_t seq);
/** model.tie_weights(): copies transformer.wte.weight into lm_head.weight when g is tied (call
    after an optimizer step, which updates wte only, before using or saving lm_head). No-op when
    untied or NULL. */
SDICT_API void sdict_gpt2_tie_weights(sdict_gpt2 *g);

/*==================================================================================================
 MARK: state_dict and load_state_dict
==================================================================================================*/

/**
 Module.state_dict(keep_vars): creates in doc an OrderedDict of every parameter, then every
 persistent buffer, of each module in depth-first pre-order, keys prefixed with the dotted
 child path ("conv1.weight", "bn1.num_batches_tracked"). Attributes carry
 {'_metadata': OrderedDict(prefix -> {'version': v})} with prefix "" for the root, as torch.
 Tensor values share the module's storages (no copy: saving writes the current weights;
 later training changes what the values show). keep_vars marks parameters is_parameter and
 requires_grad (saved as nn.Parameter), as torch's keep_vars=True.
 Errors: SDICT_E_NOMEM.
*/
SDICT_API sdict_status sdict_module_state_dict(const sdict_module *m, sdict_doc *doc,
                                               bool keep_vars, sdict_value **out,
                                               sdict_error *err);

/**
 One state_dict key whose tensor's shape differs from the module's (an entry of
 sdict_load_result.size_mismatch). All pointers are owned by the result.
*/
typedef struct sdict_size_mismatch {
    char *key;                  /**< dotted key ("fc.weight") */
    int32_t checkpoint_ndim;    /**< rank of the state_dict's tensor */
    int32_t model_ndim;         /**< rank of the module's parameter or buffer */
    int64_t *checkpoint_shape;  /**< checkpoint_ndim sizes, outermost first; NULL for rank 0 */
    int64_t *model_shape;       /**< model_ndim sizes, outermost first; NULL for rank 0 */
} sdict_size_mismatch;

/**
 Outcome of sdict_module_load_state_dict: torch's _IncompatibleKeys (missing_keys,
 unexpected_keys, in torch's order), the size-mismatched keys, and torch's RuntimeError text.
 Every array and string is owned by the result and freed by sdict_load_result_free; a zeroed
 struct is a valid empty result.
*/
typedef struct sdict_load_result {
    size_t n_missing;     char **missing;     /**< dotted keys of the module absent from the
                                                   state_dict, in state_dict() order */
    size_t n_unexpected;  char **unexpected;  /**< dotted keys of the state_dict that name no
                                                   parameter, buffer or child, module by module
                                                   in pre-order, each in the state_dict's order */
    /** torch's RuntimeError text ("Error(s) in loading state_dict for Net:\n\t..."), or NULL
        when loading succeeded. */
    char *message;
    /** Keys whose shape differs from the module's, in state_dict() order: skipped (not copied)
        under SDICT_LOAD_SD_SKIP_SIZE_MISMATCH, else each also has a "size mismatch" line in
        message. */
    size_t n_size_mismatch;
    sdict_size_mismatch *size_mismatch;
} sdict_load_result;

/** Frees the arrays and strings of r and zeroes it. NULL-tolerant. */
SDICT_API void sdict_load_result_free(sdict_load_result *r);

/**
 Flag of sdict_module_load_state_dict_ex: a key whose tensor's shape differs from the
 module's is skipped (the module keeps its current value) and listed in
 result->size_mismatch instead of failing the load. It mirrors the common recipe
 `sd = {k: v for k, v in sd.items() if v.shape == model_sd[k].shape};
 model.load_state_dict(sd, strict=False)`, except that a skipped key is reported in
 size_mismatch only, not as missing (the file has it), so strict still checks the other keys.
*/
#define SDICT_LOAD_SD_SKIP_SIZE_MISMATCH (1u << 0)

/**
 Module.load_state_dict(state_dict, strict), torch 1.13 and 2.14 semantics (where they differ,
 noted below):
 - state_dict is a dict value (OrderedDict or dict); its `_metadata` attribute, when present,
   gives per-module versions (BatchNorm synthesises num_batches_tracked = 0 when its version
   is missing or < 2, so old and plain-dict files load).
 - every parameter/buffer whose key is present is checked for shape (a 1-element 1-D tensor is
   accepted for a 0-dim one) and copied with dtype conversion (sdict_tensor_copy_to), even when
   other keys fail - as torch, the load is not atomic.
 - missing keys and unexpected keys are collected whatever strict says, as torch's
   _IncompatibleKeys return value; only strict turns them into an error. A key under a
   module's prefix is unexpected when its rest has one component that is no parameter or
   persistent buffer of that module, or more components whose first is no child of it, or is
   "_extra_state" (reported first for its module: no module here has extra state). That is
   torch 2.x's rule (2.6 and 2.14 checked); torch 1.13 accepted a parameter, buffer or child
   name for both, so it did not report keys such as "fc.weight.sub" or a bare "fc".
 On any problem returns an error and result->message holds torch's exact text: the header
 "Error(s) in loading state_dict for <type_name>:" then tab-indented lines
 'Missing key(s) in state_dict: "a", "b". ', 'Unexpected key(s) in state_dict: "c". ' (these
 two with strict only), 'size mismatch for k: copying a param with shape torch.Size([5, 3])
 from checkpoint, the shape in current model is torch.Size([2, 3]).' err->message gets the
 same, truncated.
 @param result  optional; filled in every case, errors included (free with
                sdict_load_result_free): missing, unexpected and size_mismatch as described
                above, message NULL on success. Left zeroed on SDICT_E_NOMEM, on a failed
                dtype conversion and for a state_dict that is not a dict.
 @return SDICT_OK (also for strict=false with missing or unexpected keys: read them from
         result); SDICT_E_SHAPE if any size mismatch; else SDICT_E_INVALID_ARG for a
         non-tensor value or state_dict not a dict; else SDICT_E_NOT_FOUND for missing or
         unexpected keys (strict only); SDICT_E_DTYPE / SDICT_E_STORAGE from conversion;
         SDICT_E_NOMEM.
*/
SDICT_API sdict_status sdict_module_load_state_dict(sdict_module *m, const sdict_value *state_dict,
                                                    bool strict, sdict_load_result *result,
                                                    sdict_error *err);

/**
 sdict_module_load_state_dict with flags (0 or SDICT_LOAD_SD_SKIP_SIZE_MISMATCH; other bits
 are refused with SDICT_E_INVALID_ARG). With SDICT_LOAD_SD_SKIP_SIZE_MISMATCH a shape
 difference is no error: the key is not copied and is listed in result->size_mismatch with
 both shapes. Errors and result otherwise as sdict_module_load_state_dict.
*/
SDICT_API sdict_status sdict_module_load_state_dict_ex(sdict_module *m,
                                                       const sdict_value *state_dict,
                                                       bool strict, unsigned flags,
                                                       sdict_load_result *result,
                                                       sdict_error *err);

/**
 torch.nn.modules.utils.consume_prefix_in_state_dict_if_present(state_dict, prefix), returning
 the result as a new dict in doc instead of editing in place. As torch: every str key that
 starts with prefix ("module." of DataParallel/DDP checkpoints) loses it; keys without it keep
 their order and come first, stripped keys follow in sorted order (torch pops and re-inserts
 them in sorted order); a stripped key equal to an existing one replaces its value in place.
 The `_metadata` attribute is copied with its non-empty prefixes stripped the same way
 ("module" -> "", "module.fc" -> "fc"), which is what torch's code intends (its check looks
 for a "_metadata" key and so never fires on real state_dicts).
 Errors: SDICT_E_INVALID_ARG (not a dict), SDICT_E_NOMEM.
*/
SDICT_API sdict_status sdict_state_dict_consume_prefix(sdict_doc *doc, const sdict_value *sd,
                                                       const char *prefix, sdict_value **out,
                                                       sdict_error *err);

#ifdef __cplusplus
}
#endif

#endif /* STATEDICT_NN_H */
