/*
 hf_save - writes a checkpoint as a Hugging Face model folder with sdict_save_folder, for the
 folder tests (until `statedict convert --max-shard-size` exists, this is how they reach it).

   hf_save IN OUTDIR safetensors|bin MAX_SHARD_BYTES [KEEP_NAME...]

 IN is anything sdict_load reads (a file, an index, a folder); its root must be a dict of
 tensors. Prints one line "dropped NAME kept KEPT" per alias left out of safetensors output.
 Exit 0 on success, 3 with the error on stderr otherwise, 2 on a usage error.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <statedict.h>

static void on_dropped(void *ctx, const char *dropped, const char *kept) {
    (void)ctx;
    printf("dropped %s kept %s\n", dropped, kept);
}

int main(int argc, char **argv) {
    if (argc < 5 || (strcmp(argv[3], "safetensors") && strcmp(argv[3], "bin"))) {
        fprintf(stderr, "usage: hf_save IN OUTDIR safetensors|bin MAX_SHARD_BYTES [KEEP...]\n");
        return 2;
    }
    sdict_error err;
    char msg[1024];
    sdict_doc *doc = NULL;
    if (sdict_load(argv[1], NULL, &doc, &err) != SDICT_OK) {
        fprintf(stderr, "%s\n", sdict_error_format(&err, msg, sizeof msg));
        return 3;
    }
    sdict_save_opts opts;
    memset(&opts, 0, sizeof opts);
    opts.format = strcmp(argv[3], "bin") ? SDICT_FORMAT_SAFETENSORS : SDICT_FORMAT_ZIP;
    opts.max_shard_size = strtoull(argv[4], NULL, 10);
    opts.on_dropped = on_dropped;
    opts.keep_names = (const char *const *)(argv + 5);
    opts.keep_names_count = (size_t)(argc - 5);
    int rc = 0;
    if (sdict_save_folder(argv[2], sdict_doc_root(doc), &opts, &err) != SDICT_OK) {
        fprintf(stderr, "%s\n", sdict_error_format(&err, msg, sizeof msg));
        rc = 3;
    }
    sdict_doc_free(doc);
    return rc;
}
