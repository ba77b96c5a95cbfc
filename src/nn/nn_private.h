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

/* MaxPool2d's window scan (layers.c), shared by its forward and backward. */
void sdict_nn__maxpool2d_scan(const sdict_module_config *c, const float *X, int64_t NC,
                              int64_t H, int64_t W, int64_t OH, int64_t OW, float *Y, int64_t *A);

#endif
