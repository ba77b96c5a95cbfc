/*
 hf_folder.c - Hugging Face model folders and shard indexes (*.index.json): loaded as one doc,
 written as huggingface_hub writes them.
*/
#include "internal.h"

bool sdict__hf_claims(const char *path) {
    (void)path;
    return false;
}

sdict_status sdict__hf_load(const char *path, const sdict_load_opts *opts, sdict_doc **out,
                            sdict_error *err) {
    (void)opts;
    *out = NULL;
    sdict__err_file(err, path);
    return sdict__err(err, SDICT_E_UNSUPPORTED, NULL, -1, "model folders: not yet built");
}

sdict_status sdict__hf_scan(const char *path, const sdict_load_opts *opts,
                            void (*fn)(void *ctx, const sdict_scan_item *item), void *ctx,
                            size_t *unsafe_count, sdict_error *err) {
    (void)opts, (void)fn, (void)ctx;
    if (unsafe_count)
        *unsafe_count = 0;
    sdict__err_file(err, path);
    return sdict__err(err, SDICT_E_UNSUPPORTED, NULL, -1, "model folders: not yet built");
}

sdict_status sdict__hf_verify(const char *path, sdict_error *err) {
    sdict__err_file(err, path);
    return sdict__err(err, SDICT_E_UNSUPPORTED, NULL, -1, "model folders: not yet built");
}

SDICT_API sdict_status sdict_save_folder(const char *dir, const sdict_value *root,
                                         const sdict_save_opts *opts, sdict_error *err) {
    (void)root, (void)opts;
    sdict__err_file(err, dir ? dir : "");
    return sdict__err(err, SDICT_E_UNSUPPORTED, NULL, -1, "model folders: not yet built");
}
