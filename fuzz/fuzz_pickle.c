/* fuzz_pickle.c - the pickle machine on arbitrary bytes, with a persistent_load that makes small
   storages, so the rebuild functions and their checks are reached. */
#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static sdict_status make_storage(void *ctx, sdict_value *pid, int64_t offset, sdict_value **out,
                                 sdict_error *err) {
    sdict_doc *doc = ctx;
    (void)pid;
    (void)offset;
    sdict_storage *s = NULL;
    sdict_status st = sdict_storage_new(64, &s, err);
    if (st != SDICT_OK)
        return st;
    *out = sdict__storage_value_new(doc, s, SDICT_FLOAT32);
    sdict_storage_release(s);
    return *out ? SDICT_OK : sdict__err(err, SDICT_E_NOMEM, NULL, offset, "out of memory");
}

static void ignore_global(void *ctx, const char *module, const char *name, bool allowed,
                          int64_t offset) {
    (void)ctx, (void)module, (void)name, (void)allowed, (void)offset;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sdict_limits limits = {.max_depth = 1000, .max_memo = 1u << 16, .max_stack = 1u << 16,
                           .max_str_bytes = 1u << 20, .max_values = 1u << 20};
    /* a load, a scan (inert, as sdict_scan runs it), an inert load (SDICT_LOAD_INERT) whose
       result then goes through the module state_dict and the tensor listing */
    for (int mode = 0; mode < 3; mode++) {
        sdict_doc *doc = NULL;
        if (sdict_doc_new(&doc, NULL) != SDICT_OK)
            return 0;
        sdict__unpickler u = {.doc = doc, .data = data, .size = size, .record = "fuzz",
                              .limits = &limits, .persistent_load = make_storage, .ctx = doc,
                              .on_global = mode == 1 ? ignore_global : NULL, .scan = mode == 1,
                              .inert = mode > 0};
        sdict_value *v = NULL, *out = NULL;
        sdict_error err;
        if (sdict__unpickle(&u, &v, &err) == SDICT_OK && mode == 2) {
            if (sdict_object_is_module(v))
                (void)sdict_object_state_dict(v, &out, &err);
            (void)sdict_object_tensors(v, &out, &err);
        }
        sdict_doc_free(doc);
    }
    return 0;
}
