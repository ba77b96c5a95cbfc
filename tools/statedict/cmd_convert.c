/*
 cmd_convert.c - `statedict convert IN OUT`: load any checkpoint the reader accepts and write it
 as a torch zip file, a safetensors file or a Hugging Face model folder, with sdict_save /
 sdict_save_folder (atomic: a temporary file renamed over OUT, so a failure leaves any previous
 OUT untouched).

 The input's CRC-32s are verified by default (SDICT_LOAD_VERIFY_CRC): a corrupt record must not
 come out as a fresh file with valid CRCs; --no-verify skips that, and a file without CRCs
 (torch 2.6+ with CRCs off) is converted with a warning. Then, in this order: --key
 takes a sub-tree; --include/--exclude/--strip-prefix/--add-prefix work on a flat dict of the
 tree's leaves (the dotted keys `ls` prints); --dtype casts floating tensors. The output format
 is --format's, else safetensors for OUT ending in ".safetensors", a model folder for an
 existing directory, OUT ending in '/' or --max-shard-size, and a torch zip file otherwise.
*/
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <errno.h>
#include <fnmatch.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/*==================================================================================================
 MARK: Options
==================================================================================================*/

/* huggingface_hub's parse_size_to_int: a number (a fraction allowed) and a unit KB, MB, GB or TB
   (powers of 1000, any case), or a plain number of bytes. */
static bool parse_size(const char *s, uint64_t *out) {
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    while (n && (*s == ' ' || *s == '\t'))
        s++, n--;
    double mult = 1;
    char num[64];
    if (n >= 2) {
        char u0 = (char)(s[n - 2] | 0x20), u1 = (char)(s[n - 1] | 0x20);
        if (u1 == 'b' && (u0 == 'k' || u0 == 'm' || u0 == 'g' || u0 == 't')) {
            mult = u0 == 'k' ? 1e3 : u0 == 'm' ? 1e6 : u0 == 'g' ? 1e9 : 1e12;
            n -= 2;
        }
    }
    if (n == 0 || n >= sizeof num)
        return false;
    memcpy(num, s, n);
    num[n] = '\0';
    char *end;
    errno = 0;
    double v = strtod(num, &end);
    while (*end == ' ')
        end++;
    if (*end || errno || !(v > 0) || !isfinite(v) || v * mult >= 1.8e19)
        return false;
    *out = (uint64_t)(v * mult);
    return *out > 0;
}

int cli_convert_option(const cli_cmd *cmd, cli_convert_args *c, int argc, char **argv, int *i) {
    const char *a = argv[*i];
    static const char *const with_value[] = {
        "--format", "--key", "--strip-prefix", "--add-prefix", "--include", "--exclude",
        "--dtype", "--keep-name", "--max-shard-size",
    };
    bool takes = false;
    for (size_t k = 0; k < sizeof with_value / sizeof *with_value; k++)
        takes = takes || strcmp(a, with_value[k]) == 0;
    if (strcmp(a, "--drop-non-tensors") == 0) {
        c->st_flags |= SDICT_SAVE_ST_DROP_NON_TENSORS;
        return 1;
    }
    if (strcmp(a, "--non-tensors-as-metadata") == 0) {
        c->st_flags |= SDICT_SAVE_ST_NON_TENSORS_AS_METADATA;
        return 1;
    }
    if (strcmp(a, "--copy-overlaps") == 0) {
        c->st_flags |= SDICT_SAVE_ST_COPY_OVERLAPS;
        return 1;
    }
    if (strcmp(a, "--no-verify") == 0) {
        c->no_verify = true;
        return 1;
    }
    if (!takes)
        return 0;
    if (*i + 1 >= argc) {
        cli_usage_error(cmd, "%s needs a value", a);
        *i = -1;
        return 1;
    }
    const char *v = argv[++*i];
    if (strcmp(a, "--format") == 0) {
        if (strcmp(v, "pt") == 0 || strcmp(v, "zip") == 0)
            c->format = SDICT_FORMAT_ZIP;
        else if (strcmp(v, "safetensors") == 0)
            c->format = SDICT_FORMAT_SAFETENSORS;
        else if (strcmp(v, "dcp") == 0)
            c->format = SDICT_FORMAT_DCP;
        else
            goto bad;
    } else if (strcmp(a, "--key") == 0) {
        c->key = v;
    } else if (strcmp(a, "--strip-prefix") == 0) {
        c->strip_prefix = v;
    } else if (strcmp(a, "--add-prefix") == 0) {
        c->add_prefix = v;
    } else if (strcmp(a, "--include") == 0 || strcmp(a, "--exclude") == 0) {
        if (c->nglobs == CLI_CONVERT_MAX_LIST)
            goto many;
        c->exclude[c->nglobs] = a[2] == 'e';
        c->globs[c->nglobs++] = v;
    } else if (strcmp(a, "--keep-name") == 0) {
        if (c->nkeep == CLI_CONVERT_MAX_LIST)
            goto many;
        c->keep[c->nkeep++] = v;
    } else if (strcmp(a, "--dtype") == 0) {
        if (strcmp(v, "bfloat16") == 0)
            c->dtype = SDICT_BFLOAT16;
        else if (strcmp(v, "float16") == 0)
            c->dtype = SDICT_FLOAT16;
        else if (strcmp(v, "float32") == 0)
            c->dtype = SDICT_FLOAT32;
        else
            goto bad;
    } else if (strcmp(a, "--max-shard-size") == 0) {
        if (!parse_size(v, &c->max_shard_size))
            goto bad;
    }
    return 1;
bad:
    cli_usage_error(cmd, "%s: '%s' is not %s", a, v,
                    a[2] == 'f'   ? "pt, safetensors or dcp"
                    : a[2] == 'd' ? "bfloat16, float16 or float32"
                                  : "a size such as 500MB, 2GB or 1.5GB (or a number of bytes)");
    *i = -1;
    return 1;
many:
    cli_usage_error(cmd, "%s: more than %d given", a, CLI_CONVERT_MAX_LIST);
    *i = -1;
    return 1;
}

/*==================================================================================================
 MARK: Selecting, renaming and casting
==================================================================================================*/

typedef struct flat_ctx {
    const cli_convert_args *c;
    sdict_doc *doc;
    sdict_value *out;
    cli_buf key;
    const char *failed; /* what went wrong, or NULL */
    char clash[512];
    size_t kept, skipped;
} flat_ctx;

static bool key_selected(const cli_convert_args *c, const char *key) {
    bool any_include = false, included = false;
    for (int i = 0; i < c->nglobs; i++) {
        bool m = fnmatch(c->globs[i], key, 0) == 0;
        if (c->exclude[i] && m)
            return false;
        if (!c->exclude[i]) {
            any_include = true;
            included = included || m;
        }
    }
    return !any_include || included;
}

static void flat_leaf(void *vctx, const char *path, const sdict_value *v) {
    flat_ctx *f = vctx;
    if (f->failed)
        return;
    if (!key_selected(f->c, path)) {
        f->skipped++;
        return;
    }
    buf_truncate(&f->key, 0);
    const char *rest = path;
    size_t sl = f->c->strip_prefix ? strlen(f->c->strip_prefix) : 0;
    if (sl && strncmp(path, f->c->strip_prefix, sl) == 0)
        rest = path + sl;
    if (f->c->add_prefix)
        buf_puts(&f->key, f->c->add_prefix);
    buf_puts(&f->key, rest);
    const char *key = f->key.s ? f->key.s : "";
    if (sdict_dict_get(f->out, key)) {
        snprintf(f->clash, sizeof f->clash, "two keys become '%s' (the second from '%s')", key,
                 path);
        f->failed = f->clash;
        return;
    }
    if (sdict_dict_set_str(f->out, key, (sdict_value *)v) != SDICT_OK)
        f->failed = "out of memory";
    f->kept++;
}

/* A cast storage per source storage, so that tensors sharing one keep sharing after --dtype. */
typedef struct cast_map {
    const sdict_storage **from;
    sdict_storage **to;
    size_t n, cap;
} cast_map;

static void cast_map_free(cast_map *m) {
    for (size_t i = 0; i < m->n; i++)
        sdict_storage_release(m->to[i]);
    free(m->from);
    free(m->to);
}

static bool castable(sdict_dtype d) {
    return d == SDICT_FLOAT64 || d == SDICT_FLOAT32 || d == SDICT_FLOAT16 || d == SDICT_BFLOAT16;
}

/* The whole storage of t converted to `to`, element by element as t's dtype reads it. */
static sdict_status cast_storage(cast_map *m, const sdict_tensor *t, sdict_dtype to,
                                 sdict_storage **out, sdict_error *err) {
    for (size_t i = 0; i < m->n; i++)
        if (m->from[i] == t->storage) {
            *out = m->to[i];
            return SDICT_OK;
        }
    size_t es = sdict_dtype_size(t->dtype), nb = sdict_storage_nbytes(t->storage);
    int64_t numel = (int64_t)(nb / es), shape[1] = {numel}, stride[1];
    sdict_tensor whole;
    sdict_status st = sdict_tensor_init(&whole, t->dtype, 1, shape, stride, t->storage, err);
    sdict_storage *s = NULL;
    if (!st)
        st = sdict_storage_new((size_t)numel * sdict_dtype_size(to), &s, err);
    if (!st)
        st = sdict_tensor_copy_to(&whole, to, sdict_storage_data(s), sdict_storage_nbytes(s), err);
    if (!st && m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 64;
        const sdict_storage **f = realloc(m->from, cap * sizeof *f);
        if (f)
            m->from = f;
        sdict_storage **o = f ? realloc(m->to, cap * sizeof *o) : NULL;
        if (o)
            m->to = o, m->cap = cap;
        else
            st = SDICT_E_NOMEM;
    }
    if (st) {
        sdict_storage_release(s);
        return st;
    }
    m->from[m->n] = t->storage;
    m->to[m->n++] = s;
    *out = s;
    return SDICT_OK;
}

/* Returns v with its floating tensors cast (v itself when nothing changed; dicts are changed in
   place, lists and tuples holding a cast tensor rebuilt), or NULL with err filled. */
static sdict_value *cast_tree(sdict_doc *doc, sdict_value *v, sdict_dtype to, cast_map *m,
                              sdict_error *err, int depth) {
    sdict_kind k = sdict_value_kind(v);
    if (depth > CLI_MAX_DEPTH)
        return v;
    if (k == SDICT_KIND_TENSOR) {
        const sdict_tensor *t = sdict_value_tensor(v);
        if (!t || !t->storage || !castable(t->dtype) || t->dtype == to ||
            sdict_value_quantizer(v) || sdict_value_pytype(v) == SDICT_PYTYPE_NUMPY_ARRAY ||
            sdict_storage_nbytes(t->storage) % sdict_dtype_size(t->dtype))
            return v;
        sdict_tensor nt = *t;
        sdict_value *out = NULL;
        if (cast_storage(m, t, to, &nt.storage, err))
            return NULL;
        nt.dtype = to;
        if (sdict_tensor_new(doc, &nt, &out, err))
            return NULL;
        if (sdict_tensor_attrs(v))
            sdict_tensor_set_attrs(out, sdict_tensor_attrs(v));
        return out;
    }
    if (k == SDICT_KIND_DICT) {
        for (size_t i = 0; i < sdict_dict_len(v); i++) {
            sdict_value *c = sdict_dict_val(v, i);
            sdict_value *n = cast_tree(doc, c, to, m, err, depth + 1);
            if (!n)
                return NULL;
            if (n != c && sdict_dict_set(v, sdict_dict_key(v, i), n))
                return NULL;
        }
        return v;
    }
    if (k == SDICT_KIND_LIST || k == SDICT_KIND_TUPLE) {
        size_t n = sdict_seq_len(v);
        sdict_value *copy = NULL;
        for (size_t i = 0; i < n; i++) {
            sdict_value *c = sdict_seq_item(v, i);
            sdict_value *nv = cast_tree(doc, c, to, m, err, depth + 1);
            if (!nv)
                return NULL;
            if (nv != c && !copy) {
                copy = k == SDICT_KIND_LIST ? sdict_list_new(doc) : sdict_tuple_new(doc);
                for (size_t j = 0; copy && j < i; j++)
                    if (sdict_seq_append(copy, sdict_seq_item(v, j)))
                        copy = NULL;
                if (!copy)
                    return NULL;
            }
            if (copy && sdict_seq_append(copy, nv))
                return NULL;
        }
        return copy ? copy : v;
    }
    return v;
}

/*==================================================================================================
 MARK: Writing
==================================================================================================*/

static void report_dropped(void *ctx, const char *dropped, const char *kept) {
    (void)ctx;
    fprintf(stderr, "statedict: %s not written: the same tensor as %s (tied weights)\n", dropped,
            kept);
}

/* Progress on a terminal: one line rewritten in place (a carriage return, which the escaping
   stderr stream would show as "\\r": written to the descriptor itself, after flushing the
   stream, and made only of our own text), at most once per percent. */
typedef struct progress_line {
    int last;
} progress_line;

static void report_progress(void *ctx, uint64_t done, uint64_t total) {
    progress_line *p = ctx;
    int pct = total ? (int)(done * 100 / total) : 100;
    if (pct == p->last)
        return;
    p->last = pct;
    char line[96];
    int n = snprintf(line, sizeof line, "\rstatedict: writing tensors: %3d%% (%.2f of %.2f GB)%s",
                     pct, (double)done / 1e9, (double)total / 1e9, done == total ? "\n" : "");
    fflush(stderr);
    if (n > 0)
        (void)!write(STDERR_FILENO, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

/* After writing a folder in format fmt: warns when a file of the other layout, left there by an
   earlier save, is what readers (transformers' from_pretrained, sdict_load) pick first. */
static void warn_shadowed(const char *dir, sdict_format fmt) {
    static const char *const order[] = {"model.safetensors", "model.safetensors.index.json",
                                        "pytorch_model.bin", "pytorch_model.bin.index.json"};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        bool ours = (i < 2) == (fmt == SDICT_FORMAT_SAFETENSORS);
        char path[4096];
        struct stat sb;
        if (snprintf(path, sizeof path, "%s/%s", dir, order[i]) >= (int)sizeof path ||
            stat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
            continue;
        if (!ours) /* stderr escapes what it is given (cli_escape_streams_begin) */
            fprintf(stderr,
                    "statedict: warning: %s also holds %s from an earlier save, which readers "
                    "pick before what was just written; remove it to read the new files\n",
                    dir, order[i]);
        return;
    }
}

static bool is_dir(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* What the output will hold: bytes of tensor data, and the first dtype torch 1.13 has no
   storage class for (float8, uint16..64, ...: such files load in torch 2.x only). */
typedef struct tree_stats {
    uint64_t bytes;
    bool new_dtype;
    sdict_dtype dtype;
} tree_stats;

static void tree_walk(const sdict_value *v, int depth, tree_stats *ts) {
    sdict_kind k = sdict_value_kind(v);
    if (depth > CLI_MAX_DEPTH)
        return;
    if (k == SDICT_KIND_TENSOR) {
        const sdict_tensor *t = sdict_value_tensor(v);
        ts->bytes += sdict_tensor_nbytes(t);
        if (!ts->new_dtype && !sdict_dtype_storage_class(t->dtype)) {
            ts->new_dtype = true;
            ts->dtype = t->dtype;
        }
    } else if (k == SDICT_KIND_DICT) {
        for (size_t i = 0; i < sdict_dict_len(v); i++)
            tree_walk(sdict_dict_val(v, i), depth + 1, ts);
    } else if (k == SDICT_KIND_LIST || k == SDICT_KIND_TUPLE) {
        for (size_t i = 0; i < sdict_seq_len(v); i++)
            tree_walk(sdict_seq_item(v, i), depth + 1, ts);
    }
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int fail(const char *what, const char *file, sdict_status st, sdict_error *err) {
    char text[1024];
    if (err->code == SDICT_OK) {
        err->code = st;
        err->offset = -1;
    }
    if (!err->file[0])
        snprintf(err->file, sizeof err->file, "%s", file);
    sdict_error_format(err, text, sizeof text);
    fprintf(stderr, "statedict: %s: %s [%s]\n", what, text, sdict_status_str(st));
    return CLI_EXIT_BAD_INPUT;
}

/* Loads IN for the command `what` (convert, extract; extra_flags added to the load options):
   CRC-checked unless --no-verify, a file without CRCs with a warning. NULL when it cannot be
   read (the error already printed). */
sdict_doc *cli_convert_load(const char *what, const char *in, const cli_args *args,
                            uint32_t extra_flags) {
    const cli_convert_args *c = &args->conv;
    cli_args a = *args;
    a.load_flags |= extra_flags;
    if (c->no_verify)
        return cli_load(in, &a);
    sdict_error err;
    memset(&err, 0, sizeof err);
    sdict_doc *doc = NULL;
    sdict_load_opts lo;
    memset(&lo, 0, sizeof lo);
    lo.flags = a.load_flags | SDICT_LOAD_VERIFY_CRC;
    sdict_status st = sdict_load(in, &lo, &doc, &err);
    if (st == SDICT_E_CRC && strstr(err.message, "no CRC recorded")) {
        /* nothing to verify against: converted as read, and said so */
        fprintf(stderr, "statedict: warning: %s: %s; converted unverified\n", in, err.message);
        return cli_load(in, &a);
    }
    if (st != SDICT_OK) {
        cli_report_error(st, &err);
        if (st == SDICT_E_CRC)
            fprintf(stderr, "statedict: %s verifies the input's CRC-32s; --no-verify "
                            "converts a file with a bad one anyway\n", what);
        return NULL;
    }
    if (!(lo.flags & SDICT_LOAD_COPY))
        cli_note_mapped(in);
    return doc;
}

/* Writes root (a value of doc, read from in) to out as convert does: --include/--exclude and
   the prefix options flatten it, --dtype casts, the format follows --format or out's name. */
int cli_convert_write(sdict_doc *doc, sdict_value *root, const char *in, const char *out,
                      const cli_args *args) {
    const cli_convert_args *c = &args->conv;
    sdict_error err;
    memset(&err, 0, sizeof err);
    int rc = CLI_EXIT_OK;
    cast_map m;
    memset(&m, 0, sizeof m);
    if (c->nglobs || c->strip_prefix || c->add_prefix) {
        flat_ctx f;
        memset(&f, 0, sizeof f);
        f.c = c;
        f.doc = doc;
        f.out = sdict_dict_new(doc, sdict_value_kind(root) == SDICT_KIND_DICT
                                        ? sdict_dict_is_ordered(root)
                                        : true);
        buf_init(&f.key);
        cli_buf path;
        buf_init(&path);
        bool ok = f.out && walk_leaves(root, &path, true, flat_leaf, &f);
        buf_free(&path);
        buf_free(&f.key);
        if (!ok || f.failed) {
            fprintf(stderr, "statedict: %s: %s\n", in, f.failed ? f.failed : "out of memory");
            rc = CLI_EXIT_BAD_INPUT;
            goto done;
        }
        root = f.out;
    }
    if (c->dtype >= 0) {
        root = cast_tree(doc, root, (sdict_dtype)c->dtype, &m, &err, 0);
        if (!root) {
            rc = fail("cannot cast", in, err.code ? err.code : SDICT_E_NOMEM, &err);
            goto done;
        }
    }

    bool folder = c->max_shard_size > 0 || ends_with(out, "/") || is_dir(out);
    sdict_format fmt = c->format ? (sdict_format)c->format
                       : ends_with(out, ".safetensors") || folder ? SDICT_FORMAT_SAFETENSORS
                                                                  : SDICT_FORMAT_ZIP;
    if (fmt == SDICT_FORMAT_DCP) {
        /* sdict_save_dcp has one layout (torch 2.14's dcp.save) and no options: refused rather
           than silently ignored */
        const char *opt = args->layout_given                                       ? "--layout"
                          : args->save_flags & SDICT_SAVE_ALLOW_NOT_WEIGHTS_ONLY ? "--not-weights-only"
                          : c->max_shard_size                                      ? "--max-shard-size"
                          : c->nkeep                                               ? "--keep-name"
                          : c->st_flags & SDICT_SAVE_ST_DROP_NON_TENSORS           ? "--drop-non-tensors"
                          : c->st_flags & SDICT_SAVE_ST_NON_TENSORS_AS_METADATA
                              ? "--non-tensors-as-metadata"
                          : c->st_flags & SDICT_SAVE_ST_COPY_OVERLAPS ? "--copy-overlaps"
                                                                      : NULL;
        if (opt) {
            fprintf(stderr, "statedict: convert: %s does not apply to --format dcp (a DCP folder "
                            "is written as torch 2.14's dcp.save writes it: its items in torch "
                            "2.7+'s layout, non-tensor values as items)\n", opt);
            rc = CLI_EXIT_USAGE;
            goto done;
        }
    }
    sdict_save_opts opts;
    memset(&opts, 0, sizeof opts);
    opts.flags = args->save_flags;
    opts.format = fmt;
    opts.st_flags = c->st_flags;
    opts.keep_names = c->keep;
    opts.keep_names_count = (size_t)c->nkeep;
    opts.on_dropped = report_dropped;
    opts.max_shard_size = c->max_shard_size;
    sdict_format infmt = sdict_doc_format(doc);
    bool torch_in = infmt == SDICT_FORMAT_ZIP || infmt == SDICT_FORMAT_LEGACY ||
                    infmt == SDICT_FORMAT_TAR;
    if (fmt == SDICT_FORMAT_SAFETENSORS && !folder && torch_in && !sdict_doc_metadata(doc)) {
        /* what transformers writes into every safetensors file it converts from torch (a
           folder's writer puts it in each of its files itself, and not in the index) */
        sdict_value *md = sdict_dict_new(doc, false);
        if (!md || sdict_dict_set_str(md, "format", sdict_str_new(doc, "pt", 2)) ||
            sdict_doc_set_metadata(doc, md)) {
            rc = fail("cannot write", out, SDICT_E_NOMEM, &err);
            goto done;
        }
    }
    if (fmt == SDICT_FORMAT_SAFETENSORS)
        opts.metadata = sdict_doc_metadata(doc);
    else if (sdict_dict_len(sdict_doc_metadata(doc)) > 0)
        fprintf(stderr, "statedict: warning: %s's metadata (%zu entr%s) is not kept: a torch file "
                        "has no place for it (ls or show --metadata prints it)\n",
                in, sdict_dict_len(sdict_doc_metadata(doc)),
                sdict_dict_len(sdict_doc_metadata(doc)) == 1 ? "y" : "ies");

    tree_stats ts = {0, false, 0};
    tree_walk(root, 0, &ts);
    uint64_t total = ts.bytes;
    if (ts.new_dtype && fmt == SDICT_FORMAT_ZIP)
        fprintf(stderr, "statedict: warning: %s holds %s tensors, a dtype torch 1.13 does not "
                        "have: the file loads in torch 2.x only\n",
                out, sdict_dtype_name(ts.dtype));
    bool show = total > 1000000000ull && isatty(STDERR_FILENO);
    progress_line pl = {-1};
    double t0 = now_s();
    if (show && fmt == SDICT_FORMAT_SAFETENSORS && !folder) {
        /* on_dropped's ctx is unused: both callbacks share opts.ctx */
        opts.progress = report_progress;
        opts.ctx = &pl;
    } else if (show) {
        fprintf(stderr, "statedict: writing %.2f GB of tensors to %s...\n", (double)total / 1e9,
                out);
    }
    sdict_status st = fmt == SDICT_FORMAT_DCP ? sdict_save_dcp(out, root, &err)
                      : folder                ? sdict_save_folder(out, root, &opts, &err)
                                              : sdict_save(out, root, &opts, &err);
    if (st != SDICT_OK) {
        rc = fail("cannot write", out, st, &err);
        if (st == SDICT_E_UNSUPPORTED && fmt == SDICT_FORMAT_ZIP &&
            !(args->save_flags & SDICT_SAVE_ALLOW_NOT_WEIGHTS_ONLY))
            fprintf(stderr, "statedict: convert --not-weights-only writes it anyway; the output "
                            "then loads with torch.load(OUT, weights_only=False) only\n");
        if (st == SDICT_E_INVALID_ARG && fmt == SDICT_FORMAT_SAFETENSORS)
            fprintf(stderr, "statedict: for safetensors output, --drop-non-tensors or "
                            "--non-tensors-as-metadata handle values that are not tensors, "
                            "--copy-overlaps views that overlap, --key PATH takes a sub-tree\n");
    } else if (folder && fmt != SDICT_FORMAT_DCP) {
        warn_shadowed(out, fmt);
    }
    if (st == SDICT_OK && show) {
        double dt = now_s() - t0;
        fprintf(stderr, "statedict: wrote %s in %.1f s (%.0f MB/s)\n", out, dt,
                dt > 0 ? (double)total / 1e6 / dt : 0.0);
    }
done:
    cast_map_free(&m);
    return rc;
}

int cmd_convert(const cli_cmd *cmd, const cli_args *args) {
    (void)cmd;
    const char *in = args->pos[0], *out = args->pos[1];
    sdict_doc *doc = cli_convert_load("convert", in, args, 0);
    if (!doc)
        return CLI_EXIT_BAD_INPUT;
    int rc;
    sdict_value *root = sdict_doc_root(doc);
    if (args->conv.key && !(root = sdict_value_at(root, args->conv.key))) {
        fprintf(stderr, "statedict: %s: no key '%s'\n", in, args->conv.key);
        rc = CLI_EXIT_BAD_INPUT;
    } else {
        rc = cli_convert_write(doc, root, in, out, args);
    }
    cli_forget_ints();
    sdict_doc_free(doc);
    return rc;
}
