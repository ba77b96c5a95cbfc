/*
 cmd_extract.c - `statedict extract IN OUT [--key PATH]`: the state_dict of a whole pickled
 model (torch.save(model)), read as inert objects and never run, written as convert writes.

 The file is loaded with SDICT_LOAD_INERT. Each pickled nn.Module found outside objects (the
 root, or any value of the root's dicts, lists and tuples: a YOLO-style {'model': model,
 'epoch': 3, ...}) is replaced by sdict_object_state_dict's result; the rest of the tree is kept
 as it is. An object that is not a module becomes the dict of its tensors by attribute path
 (sdict_object_tensors), a class reference its "module.name" text, each with a warning, so the
 output holds only data. --key PATH extracts from that sub-tree only. A module reached twice
 (model and ema being one object) becomes one state_dict value under both keys.
*/
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ex_ctx {
    sdict_doc *doc;
    const char *in;
    sdict_error err;
    sdict_status st;
    int models, others;
    /* objects already replaced: old value -> new value (a handful: linear search) */
    const sdict_value **from;
    sdict_value **to;
    size_t n, cap;
} ex_ctx;

static sdict_value *seen(const ex_ctx *x, const sdict_value *v) {
    for (size_t i = 0; i < x->n; i++)
        if (x->from[i] == v)
            return x->to[i];
    return NULL;
}

static bool remember(ex_ctx *x, const sdict_value *v, sdict_value *r) {
    if (x->n == x->cap) {
        size_t ncap = x->cap ? x->cap * 2 : 8;
        const sdict_value **f = realloc(x->from, ncap * sizeof *f);
        if (!f)
            return false;
        x->from = f;
        sdict_value **t = realloc(x->to, ncap * sizeof *t);
        if (!t)
            return false;
        x->to = t;
        x->cap = ncap;
    }
    x->from[x->n] = v;
    x->to[x->n++] = r;
    return true;
}

static sdict_value *nomem(ex_ctx *x) {
    x->st = SDICT_E_NOMEM;
    x->err.code = SDICT_E_NOMEM;
    snprintf(x->err.message, sizeof x->err.message, "out of memory");
    return NULL;
}

static const char *shown_path(const cli_buf *path) {
    return path->len ? path->s : "<root>";
}

/* Warns once per module class that is not torch's or torchvision's: its Python code
   (state_dict hooks, an overridden state_dict or _save_to_state_dict, get_extra_state, a
   _version of its own) was not run, so the result is what torch.nn.Module's own state_dict
   computes. warned: "module.name" -> None of the classes already named. */
static void warn_python(ex_ctx *x, const sdict_value *mod, sdict_value *warned, int depth) {
    if (depth > 1000 || sdict_value_kind(mod) != SDICT_KIND_OBJECT)
        return;
    const sdict_value *cls = mod, *a0 = sdict_seq_item(sdict_object_args(mod), 0);
    if (strcmp(sdict_object_module(mod), "copyreg") == 0 &&
        strcmp(sdict_object_name(mod), "_reconstructor") == 0 &&
        sdict_value_kind(a0) == SDICT_KIND_OBJECT)
        cls = a0;
    const char *m = sdict_object_module(cls), *n = sdict_object_name(cls);
    if (strncmp(m, "torch.", 6) != 0 && strncmp(m, "torchvision.", 12) != 0) {
        size_t ml = strlen(m), nl = strlen(n);
        char *text = malloc(ml + nl + 2);
        sdict_value *key = NULL;
        if (text) {
            snprintf(text, ml + nl + 2, "%s.%s", m, n);
            key = sdict_str_new(x->doc, text, ml + nl + 1);
        }
        if (key && warned && !sdict_dict_find(warned, key)) {
            sdict_dict_set(warned, key, sdict_none_new(x->doc));
            fprintf(stderr, "statedict: extract: warning: %s is not a torch class: its Python "
                            "code (state_dict hooks or overrides, get_extra_state, _version) was "
                            "not run; the result is what torch.nn.Module.state_dict computes\n",
                    text);
        }
        free(text);
    }
    const sdict_value *st = sdict_object_state(mod);
    if (sdict_value_kind(st) == SDICT_KIND_TUPLE && sdict_seq_len(st) == 2)
        st = sdict_seq_item(st, 0);
    const sdict_value *mods = sdict_dict_get(st, "_modules");
    for (size_t i = 0; i < sdict_dict_len(mods); i++)
        warn_python(x, sdict_dict_val(mods, i), warned, depth + 1);
}

/* What an object becomes; NULL on failure (x->st set). */
static sdict_value *replace_object(ex_ctx *x, sdict_value *v, const cli_buf *path) {
    sdict_value *r = seen(x, v);
    if (r)
        return r;
    cli_buf what;
    buf_init(&what);
    fmt_value(&what, v, 1);
    if (sdict_object_is_module(v)) {
        x->st = sdict_object_state_dict(v, &r, &x->err);
        if (x->st == SDICT_OK) {
            x->models++;
            fprintf(stderr, "statedict: extract: %s: %s -> state_dict (%zu entries)\n",
                    shown_path(path), what.s, sdict_dict_len(r));
            warn_python(x, v, sdict_dict_new(x->doc, false), 0);
        }
    } else if (sdict_object_is_optimizer(v)) {
        x->st = sdict_object_optimizer_state_dict(v, &r, &x->err);
        if (x->st == SDICT_OK) {
            x->models++;
            fprintf(stderr, "statedict: extract: %s: %s -> optimizer state_dict (%zu parameter "
                            "states)\n", shown_path(path), what.s,
                    sdict_dict_len(sdict_dict_get(r, "state")));
        }
    } else if (sdict_object_how(v) == SDICT_OBJECT_CLASS) {
        const char *m = sdict_object_module(v), *n = sdict_object_name(v);
        size_t ml = strlen(m), nl = strlen(n);
        char *text = malloc(ml + nl + 2);
        if (text) {
            snprintf(text, ml + nl + 2, "%s.%s", m, n);
            r = sdict_str_new(x->doc, text, ml + nl + 1);
            free(text);
        }
        if (!r)
            nomem(x);
        else {
            x->others++;
            fprintf(stderr, "statedict: extract: warning: %s: %s written as its name, a str\n",
                    shown_path(path), what.s);
        }
    } else {
        x->st = sdict_object_tensors(v, &r, &x->err);
        if (x->st == SDICT_OK) {
            x->others++;
            fprintf(stderr, "statedict: extract: warning: %s: %s is not an nn.Module: written as "
                            "its %zu tensors by attribute path\n",
                    shown_path(path), what.s, sdict_dict_len(r));
        }
    }
    buf_free(&what);
    if (r && !remember(x, v, r))
        return nomem(x);
    return x->st == SDICT_OK ? r : NULL;
}

/* v with every object outside objects replaced; v itself when nothing changes. */
static sdict_value *replace(ex_ctx *x, sdict_value *v, cli_buf *path, int depth) {
    if (depth > CLI_MAX_DEPTH) {
        x->st = SDICT_E_LIMIT;
        x->err.code = SDICT_E_LIMIT;
        snprintf(x->err.message, sizeof x->err.message, "tree nested deeper than %d",
                 CLI_MAX_DEPTH);
        return NULL;
    }
    sdict_kind k = sdict_value_kind(v);
    if (k == SDICT_KIND_OBJECT)
        return replace_object(x, v, path);
    size_t base = path->len;
    if (k == SDICT_KIND_DICT) {
        size_t n = sdict_dict_len(v);
        sdict_value *nd = NULL;
        for (size_t i = 0; i < n; i++) {
            sdict_value *val = sdict_dict_val(v, i);
            if (base)
                buf_putn(path, ".", 1);
            fmt_key(path, sdict_dict_key(v, i));
            sdict_value *r = replace(x, val, path, depth + 1);
            buf_truncate(path, base);
            if (!r)
                return NULL;
            if (r != val && !nd) {
                /* the first change: a copy of the items so far */
                nd = sdict_dict_new(x->doc, sdict_dict_is_ordered(v));
                if (!nd || (sdict_value_pytype(v) != SDICT_PYTYPE_PLAIN &&
                            sdict_value_set_pytype(nd, sdict_value_pytype(v)) != SDICT_OK) ||
                    (sdict_dict_attrs(v) && sdict_dict_set_attrs(nd, sdict_dict_attrs(v))))
                    return nomem(x);
                for (size_t j = 0; j < i; j++)
                    if (sdict_dict_set(nd, sdict_dict_key(v, j), sdict_dict_val(v, j)))
                        return nomem(x);
            }
            if (nd && sdict_dict_set(nd, sdict_dict_key(v, i), r))
                return nomem(x);
        }
        return nd ? nd : v;
    }
    if (k == SDICT_KIND_LIST || k == SDICT_KIND_TUPLE) {
        size_t n = sdict_seq_len(v);
        sdict_value *ns = NULL;
        for (size_t i = 0; i < n; i++) {
            sdict_value *item = sdict_seq_item(v, i);
            buf_printf(path, base ? ".%zu" : "%zu", i);
            sdict_value *r = replace(x, item, path, depth + 1);
            buf_truncate(path, base);
            if (!r)
                return NULL;
            if (r != item && !ns) {
                ns = k == SDICT_KIND_LIST ? sdict_list_new(x->doc) : sdict_tuple_new(x->doc);
                if (!ns)
                    return nomem(x);
                for (size_t j = 0; j < i; j++)
                    if (sdict_seq_append(ns, sdict_seq_item(v, j)))
                        return nomem(x);
            }
            if (ns && sdict_seq_append(ns, r))
                return nomem(x);
        }
        return ns ? ns : v;
    }
    return v;
}

int cmd_extract(const cli_cmd *cmd, const cli_args *args) {
    (void)cmd;
    const char *in = args->pos[0], *out = args->pos[1];
    sdict_doc *doc = cli_convert_load("extract", in, args, SDICT_LOAD_INERT);
    if (!doc)
        return CLI_EXIT_BAD_INPUT;
    int rc = CLI_EXIT_OK;
    ex_ctx x;
    memset(&x, 0, sizeof x);
    x.doc = doc;
    x.in = in;
    cli_buf path;
    buf_init(&path);
    sdict_value *root = sdict_doc_root(doc);
    if (sdict_doc_is_script(doc)) {
        /* a TorchScript archive: the ScriptModule's state_dict, its code never run */
        sdict_value *sd = NULL;
        if (args->conv.key) {
            fprintf(stderr, "statedict: %s: a TorchScript archive: --key does not apply (the "
                            "whole module's state_dict is written)\n", in);
            rc = CLI_EXIT_USAGE;
        } else if ((x.st = sdict_script_state_dict(doc, &sd, &x.err)) != SDICT_OK) {
            if (!x.err.file[0])
                snprintf(x.err.file, sizeof x.err.file, "%s", in);
            cli_report_error(x.st, &x.err);
            rc = CLI_EXIT_BAD_INPUT;
        } else {
            fprintf(stderr, "statedict: extract: TorchScript archive (torch.jit.save) -> "
                            "state_dict (%zu entr%s, %zu constant%s not included)\n",
                    sdict_dict_len(sd), sdict_dict_len(sd) == 1 ? "y" : "ies",
                    sdict_seq_len(sdict_doc_script_constants(doc)),
                    sdict_seq_len(sdict_doc_script_constants(doc)) == 1 ? "" : "s");
            rc = cli_convert_write(doc, sd, in, out, args);
        }
        buf_free(&path);
        cli_forget_ints();
        sdict_doc_free(doc);
        return rc;
    }
    if (args->conv.key) {
        root = sdict_value_at(root, args->conv.key);
        buf_puts(&path, args->conv.key);
    }
    if (!root) {
        fprintf(stderr, "statedict: %s: no key '%s'\n", in, args->conv.key);
        rc = CLI_EXIT_BAD_INPUT;
    } else if (!(root = replace(&x, root, &path, 0))) {
        if (!x.err.file[0])
            snprintf(x.err.file, sizeof x.err.file, "%s", in);
        cli_report_error(x.st, &x.err);
        rc = CLI_EXIT_BAD_INPUT;
    } else {
        if (x.models == 0 && args->conv.key)
            fprintf(stderr, "statedict: extract: warning: key '%s' of %s holds no pickled "
                            "nn.Module or optimizer; written as read\n", args->conv.key, in);
        else if (x.models == 0)
            fprintf(stderr, "statedict: extract: warning: %s holds no pickled nn.Module or "
                            "optimizer; written as read\n", in);
        rc = cli_convert_write(doc, root, in, out, args);
    }
    buf_free(&path);
    free(x.from);
    free(x.to);
    cli_forget_ints();
    sdict_doc_free(doc);
    return rc;
}
