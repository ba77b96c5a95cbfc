/* st_read_meta FILE: prints the doc's metadata (sdict_doc_metadata) as a JSON array of
   [key, value] pairs in its order, or null when the doc has none; exit 3 when the load fails.
   For tests/safetensors/read_interop.py (a program rather than ctypes, so that sanitizer builds
   of the library run too). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#include "statedict.h"

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: st_read_meta FILE\n");
        return 2;
    }
    sdict_doc *doc = NULL;
    sdict_error err;
    char msg[1024];
    if (sdict_load(argv[1], NULL, &doc, &err) != SDICT_OK) {
        fprintf(stderr, "%s\n", sdict_error_format(&err, msg, sizeof msg));
        return 3;
    }
    const sdict_value *md = sdict_doc_metadata(doc);
    json_t *out = md ? json_array() : json_null();
    for (size_t i = 0; md && i < sdict_dict_len(md); i++) {
        size_t kn, vn;
        const char *k = sdict_str_get(sdict_dict_key(md, i), &kn);
        const char *v = sdict_str_get(sdict_dict_val(md, i), &vn);
        json_array_append_new(out, json_pack("[s#s#]", k, (int)kn, v, (int)vn));
    }
    char *text = json_dumps(out, JSON_ENCODE_ANY | JSON_ENSURE_ASCII);
    puts(text ? text : "?");
    free(text);
    json_decref(out);
    sdict_doc_free(doc);
    return 0;
}
