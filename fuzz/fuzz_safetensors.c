/* fuzz_safetensors.c - the safetensors reader (header rules, dtypes, offsets, metadata) through
   sdict_load_buffer, then every tensor read back: its bytes copied raw and, where the dtype has
   numbers, converted to float64. */
#include "internal.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sdict_load_opts opts = {.limits = {.max_values = 1u << 20}};
    sdict_doc *doc = NULL;
    sdict_error err;
    if (sdict_load_buffer(data, size, "fuzz", &opts, &doc, &err) != SDICT_OK)
        return 0;
    const sdict_value *root = sdict_doc_root(doc);
    for (size_t i = 0; i < sdict_dict_len(root); i++) {
        const sdict_tensor *t = sdict_value_tensor(sdict_dict_val(root, i));
        if (!t)
            continue;
        size_t nb = sdict_tensor_nbytes(t);
        int64_t numel = sdict_tensor_numel(t);
        if (nb > (1u << 24) || numel < 0 || numel > (1 << 21))
            continue;
        uint8_t *raw = malloc(nb ? nb : 1);
        double *d = malloc(numel ? (size_t)numel * 16 : 1);
        if (raw && d) {
            (void)sdict_tensor_copy_to(t, t->dtype, raw, nb, &err);
            (void)sdict_tensor_copy_to(t, SDICT_FLOAT64, d, (size_t)numel * 16, &err);
        }
        free(raw);
        free(d);
    }
    const sdict_value *md = sdict_doc_metadata(doc);
    for (size_t i = 0; i < sdict_dict_len(md); i++)
        (void)sdict_str_get(sdict_dict_val(md, i), NULL);
    sdict_doc_free(doc);
    return 0;
}
