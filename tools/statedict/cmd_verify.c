/*
 cmd_verify.c - `statedict verify FILE...`: sdict_verify checks the container, the CRC-32 of every
 record, the pickle against the allow-list, and every storage size and tensor extent.

 Exit 0 when everything checks; 1 when the file could be read but fails a check (a flipped
 payload byte is a CRC mismatch, so it gives 1; so does a file written with CRCs off, whose
 records have "no CRC recorded": nothing is reported OK that was not checked); 3 when the file cannot be read at all (missing,
 permission denied, a folder holding no checkpoint, out of memory). With several files, each gets its line and the exit status
 is the worst of theirs.
*/
#include "cli.h"

#include <string.h>

static int verify_one(const char *path) {
    sdict_error err;
    memset(&err, 0, sizeof err);
    sdict_status st = sdict_verify(path, &err);
    if (st == SDICT_OK) {
        printf("%s: OK\n", path);
        return CLI_EXIT_OK;
    }
    if (err.code == SDICT_OK) {
        err.code = st;
        err.offset = -1;
        snprintf(err.file, sizeof err.file, "%s", path);
    }
    cli_report_error(st, &err);
    /* the classes cli_report_error calls "unreadable" (a folder holding no checkpoint is
       SDICT_E_NOT_FOUND: nothing was there to check) */
    bool unreadable = st == SDICT_E_IO || st == SDICT_E_NOMEM || st == SDICT_E_INVALID_ARG ||
                      st == SDICT_E_NOT_FOUND;
    if (!unreadable)
        printf("%s: FAILED\n", path);
    return unreadable ? CLI_EXIT_BAD_INPUT : CLI_EXIT_DIFFERENT;
}

int cmd_verify(const cli_cmd *cmd, const cli_args *args) {
    (void)cmd;
    int worst = CLI_EXIT_OK;
    for (int i = 0; i < args->npos; i++) {
        int rc = verify_one(args->pos[i]);
        if (rc > worst)
            worst = rc;
    }
    return worst;
}
