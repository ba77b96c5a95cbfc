/*
 cmd_scan.c - `statedict scan FILE...`: every global the files' pickles reference, found by the
 loader's own pickle machine without reading tensor data, one line each:
   ALLOWED|REFUSED  module.name  FILE:RECORD@OFFSET
 then a line per file: "FILE: N globals, M refused".

 Exit 1 when any reference is refused (even if the scan then stopped on a pickle error: the
 refusal is the finding), 3 when a file could not be scanned and nothing was refused, 0 else.
*/
#include "cli.h"

#include <string.h>

typedef struct scan_ctx {
    const char *path;
    size_t total, refused;
} scan_ctx;

static void on_global(void *ctx, const sdict_scan_item *item) {
    scan_ctx *c = ctx;
    c->total++;
    if (!item->allowed)
        c->refused++;
    /* module, name and record come from the file: escaped, one line per global whatever
       they hold */
    const char *m = item->module ? item->module : "?", *n = item->name ? item->name : "?";
    const char *r = item->record ? item->record : "";
    cli_buf b;
    buf_init(&b);
    buf_puts(&b, item->allowed ? "ALLOWED  " : "REFUSED  ");
    fmt_escaped(&b, m, strlen(m));
    buf_putn(&b, ".", 1);
    fmt_escaped(&b, n, strlen(n));
    buf_printf(&b, "  %s:", c->path);
    fmt_escaped(&b, r, strlen(r));
    buf_printf(&b, "@%lld\n", (long long)item->offset);
    fputs(b.s, stdout);
    buf_free(&b);
}

int cmd_scan(const cli_cmd *cmd, const cli_args *args) {
    (void)cmd;
    sdict_load_opts opts;
    memset(&opts, 0, sizeof opts);
    opts.flags = args->load_flags;
    int worst = CLI_EXIT_OK;
    for (int i = 0; i < args->npos; i++) {
        scan_ctx c = {args->pos[i], 0, 0};
        sdict_error err;
        memset(&err, 0, sizeof err);
        size_t unsafe = 0;
        sdict_status st = sdict_scan(c.path, &opts, on_global, &c, &unsafe, &err);
        /* count refusals ourselves: out-parameters are zeroed when the scan fails */
        if (unsafe > c.refused)
            c.refused = unsafe;
        /* scans read objects as inert data (SDICT_LOAD_INERT) and go on past refused globals:
           any error, an unsafe one included, means the file was not read to its end */
        int rc = CLI_EXIT_OK;
        if (st != SDICT_OK) {
            if (err.code == SDICT_OK) {
                err.code = st;
                err.offset = -1;
                snprintf(err.file, sizeof err.file, "%s", c.path);
            }
            cli_report_error(st, &err);
            rc = CLI_EXIT_BAD_INPUT;
        }
        if (c.refused)
            rc = CLI_EXIT_DIFFERENT;
        printf("%s: %zu global%s, %zu refused%s\n", c.path, c.total, c.total == 1 ? "" : "s",
               c.refused,
               st != SDICT_OK ? ", scan incomplete" : "");
        /* a refusal anywhere (1) outranks a file that could not be scanned (3) */
        if (rc == CLI_EXIT_DIFFERENT || (rc == CLI_EXIT_BAD_INPUT && worst == CLI_EXIT_OK))
            worst = rc;
    }
    return worst;
}
