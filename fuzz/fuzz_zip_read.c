/* fuzz_zip_read.c - the zip/ZIP64 central directory reader and record reads on arbitrary bytes. */
#include "internal.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sdict__source src;
    sdict__source_init_mem(&src, data, size, "fuzz");
    sdict_limits limits = {.max_records = 4096, .max_inflate = 1u << 24};
    sdict__zip *z = NULL;
    sdict_error err;
    if (sdict__zip_open(&src, &limits, &z, &err) == SDICT_OK) {
        for (size_t i = 0; i < sdict__zip_count(z); i++) {
            const sdict__zip_entry *e = sdict__zip_entry_at(z, i);
            if (e->size > (1u << 24))
                continue;
            void *buf = malloc(e->size ? e->size : 1);
            if (buf)
                (void)sdict__zip_read(z, e, buf, e->size, true, &err);
            free(buf);
        }
        (void)sdict__zip_find(z, "data.pkl");
        sdict__zip_close(z);
    }
    sdict__source_close(&src);
    return 0;
}
