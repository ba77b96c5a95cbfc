/* fuzz_load.c - the whole loader (format detection, zip, legacy, tar, pickle, storages). */
#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sdict_load_opts opts = {.flags = SDICT_LOAD_VERIFY_CRC,
                            .limits = {.max_str_bytes = 1u << 20, .max_values = 1u << 20,
                                       .max_records = 4096, .max_inflate = 1u << 24}};
    for (int crc = 0; crc < 2; crc++) {
        sdict_doc *doc = NULL;
        sdict_error err;
        if (sdict_load_buffer(data, size, "fuzz", &opts, &doc, &err) == SDICT_OK)
            sdict_doc_free(doc);
        opts.flags = 0;
    }
    return 0;
}
