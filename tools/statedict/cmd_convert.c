/*
 cmd_convert.c - `statedict convert IN OUT`: load any checkpoint the reader accepts (zip, legacy,
 tar) and write it as a torch zip file with sdict_save (atomic: a temporary file renamed over
 OUT, so a failure leaves any previous OUT untouched). The archive folder is named after OUT's
 stem, as torch.save does. --layout picks torch 1.13's or torch 2.x's layout; values torch's
 weights-only unpickler refuses are refused unless --not-weights-only.
*/
#include "cli.h"

#include <string.h>

int cmd_convert(const cli_cmd *cmd, const cli_args *args) {
    (void)cmd;
    sdict_doc *doc = cli_load(args->pos[0], args);
    if (!doc)
        return CLI_EXIT_BAD_INPUT;
    sdict_error err;
    memset(&err, 0, sizeof err);
    sdict_save_opts opts = {.archive_name = NULL, .flags = args->save_flags};
    sdict_status st = sdict_save(args->pos[1], sdict_doc_root(doc), &opts, &err);
    cli_forget_ints();
    sdict_doc_free(doc);
    if (st != SDICT_OK) {
        char text[1024];
        if (err.code == SDICT_OK) {
            err.code = st;
            err.offset = -1;
            snprintf(err.file, sizeof err.file, "%s", args->pos[1]);
        }
        sdict_error_format(&err, text, sizeof text);
        fprintf(stderr, "statedict: cannot write: %s [%s]\n", text, sdict_status_str(st));
        if (st == SDICT_E_UNSUPPORTED && !(args->save_flags & SDICT_SAVE_ALLOW_NOT_WEIGHTS_ONLY))
            fprintf(stderr, "statedict: convert --not-weights-only writes it anyway; the output "
                            "then loads with torch.load(OUT, weights_only=False) only\n");
        return CLI_EXIT_BAD_INPUT;
    }
    return CLI_EXIT_OK;
}
