/* fuzz_load.c - the whole loader (format detection, zip, legacy, tar, pickle, storages), with
   and without CRC checks and with SDICT_LOAD_INERT. */
#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sdict_load_opts opts = {.flags = SDICT_LOAD_VERIFY_CRC,
                            .limits = {.max_str_bytes = 1u << 20, .max_values = 1u << 20,
                                       .max_records = 4096, .max_inflate = 1u << 24}};
    static const uint32_t passes[] = {SDICT_LOAD_VERIFY_CRC, 0, SDICT_LOAD_INERT};
    for (size_t i = 0; i < sizeof passes / sizeof passes[0]; i++) {
        sdict_doc *doc = NULL;
        sdict_error err;
        opts.flags = passes[i];
        if (sdict_load_buffer(data, size, "fuzz", &opts, &doc, &err) == SDICT_OK)
            sdict_doc_free(doc);
    }
    return 0;
}
