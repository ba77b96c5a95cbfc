/*
 safetensors_write.c - writes safetensors files (sdict_save with SDICT_FORMAT_SAFETENSORS).
*/
#include "internal.h"

sdict_status sdict__st_write(const sdict_value *root, const sdict_save_opts *opts,
                             sdict__write_fn write, void *ctx, sdict_error *err) {
    (void)root, (void)opts, (void)write, (void)ctx;
    return sdict__err(err, SDICT_E_UNSUPPORTED, NULL, -1, "safetensors output: not yet built");
}
