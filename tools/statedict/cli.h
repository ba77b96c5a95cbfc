/*
 cli.h - shared pieces of the `statedict` command-line tool.

 The tool is built only on the public API (statedict.h). main.c holds the dispatch table; each
 subcommand lives in its own cmd_*.c file and exports one handler. Helpers shared by several
 subcommands (option parsing, loading with error reporting, key paths, Python-style value text,
 leaf walking) live in common.c.

 Exit statuses (every subcommand):
   0  success (no differences, nothing unsafe)
   1  differences found (diff), unsafe globals found (scan), verification failed (verify)
   2  usage error; usage text goes to stderr
   3  an input is unreadable, corrupt or unsafe (message on stderr says which), or the output
      of convert could not be written
*/
#ifndef STATEDICT_CLI_H
#define STATEDICT_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "statedict.h"

enum {
    CLI_EXIT_OK = 0,
    CLI_EXIT_DIFFERENT = 1,
    CLI_EXIT_USAGE = 2,
    CLI_EXIT_BAD_INPUT = 3,
};

/** Option bits a subcommand accepts (cli_cmd.options); parse_args refuses any other option. */
enum {
    CLI_OPT_LOAD = 1u << 0,    /* --copy, --verify-crc, --big-endian, --inert */
    CLI_OPT_JSON = 1u << 1,    /* --json, --pretty */
    CLI_OPT_TOL = 1u << 2,     /* --rtol R, --atol A */
    CLI_OPT_SAVE = 1u << 3,    /* --layout 1.13|2.x, --not-weights-only */
    CLI_OPT_META = 1u << 4,    /* --metadata (show) */
    CLI_OPT_CONVERT = 1u << 8, /* convert's own options: cli_convert_args (cmd_convert.c) */
};

/* ---- convert's options (parsed by cli_convert_option in cmd_convert.c) ---- */

struct cli_cmd;

/** Most --include/--exclude patterns and --keep-name names one command line takes. */
#define CLI_CONVERT_MAX_LIST 256

typedef struct cli_convert_args {
    int format;                /* 0: from OUT (.safetensors, a folder), else SDICT_FORMAT_* */
    const char *key;           /* --key PATH: the sub-tree to convert, or NULL */
    const char *strip_prefix;  /* --strip-prefix P */
    const char *add_prefix;    /* --add-prefix P */
    const char *globs[CLI_CONVERT_MAX_LIST]; /* --include / --exclude, in order */
    bool exclude[CLI_CONVERT_MAX_LIST];      /* true for an --exclude */
    int nglobs;
    const char *keep[CLI_CONVERT_MAX_LIST];  /* --keep-name NAME */
    int nkeep;
    int dtype;                 /* --dtype: an sdict_dtype, or -1 */
    uint32_t st_flags;         /* --drop-non-tensors, --non-tensors-as-metadata, --copy-overlaps */
    bool no_verify;            /* --no-verify: skip the CRC check of the input */
    uint64_t max_shard_size;   /* --max-shard-size SIZE in bytes, 0 when not given */
} cli_convert_args;

/** Parses convert's option argv[*i] (reading its value from argv[*i + 1], advancing *i).
    Returns 0 when argv[*i] is not one of convert's options; else 1, with *i set to -1 when the
    option was misused (the problem and the usage printed on stderr). */
int cli_convert_option(const struct cli_cmd *cmd, cli_convert_args *c, int argc, char **argv,
                       int *i);

/** convert's input and output halves, shared with extract (cmd_convert.c). cli_convert_load
    reads IN as convert does (CRCs verified unless --no-verify; a file without CRCs with a
    warning; what names the command in messages), adding extra_flags to the load flags; NULL
    when it cannot be read, the error printed. cli_convert_write writes root (a value of doc)
    to OUT as convert does (--include/--exclude/--strip-prefix/--add-prefix, --dtype, the
    output format from --format or OUT's name, every save option); returns the exit status. */
struct cli_args;
sdict_doc *cli_convert_load(const char *what, const char *in, const struct cli_args *args,
                            uint32_t extra_flags);
int cli_convert_write(sdict_doc *doc, sdict_value *root, const char *in, const char *out,
                      const struct cli_args *args);

/** Parsed command line of one subcommand. */
typedef struct cli_args {
    int npos;                  /* positional arguments, in order */
    char **pos;
    bool json;
    bool pretty;
    bool help;
    bool metadata;             /* --metadata: show the doc's metadata instead of the tree */
    uint32_t load_flags;       /* SDICT_LOAD_* bits from --copy/--verify-crc/--big-endian/--inert */
    double rtol;               /* default 1e-5, as torch.allclose */
    double atol;               /* default 1e-8, as torch.allclose */
    uint32_t save_flags;       /* SDICT_SAVE_* bits from --layout/--not-weights-only */
    bool layout_given;         /* --layout was on the command line */
    cli_convert_args conv;     /* CLI_OPT_CONVERT */
} cli_args;

/** One subcommand: name, handler, one-line help, usage text (after "usage: statedict "). */
typedef struct cli_cmd {
    const char *name;
    int (*run)(const struct cli_cmd *cmd, const cli_args *args);
    const char *summary;
    const char *usage;         /* "ls [--json] [LOAD OPTIONS] FILE" */
    const char *details;       /* further lines of help, may be NULL */
    uint32_t options;          /* CLI_OPT_* */
    int min_pos, max_pos;      /* number of positional arguments allowed; max -1 = any */
} cli_cmd;

int cmd_ls(const cli_cmd *cmd, const cli_args *args);
int cmd_dump(const cli_cmd *cmd, const cli_args *args);
int cmd_show(const cli_cmd *cmd, const cli_args *args);
int cmd_convert(const cli_cmd *cmd, const cli_args *args);
int cmd_extract(const cli_cmd *cmd, const cli_args *args);
int cmd_diff(const cli_cmd *cmd, const cli_args *args);
int cmd_verify(const cli_cmd *cmd, const cli_args *args);
int cmd_scan(const cli_cmd *cmd, const cli_args *args);

/* ---- common.c ---- */

/** Parses argv (after the subcommand name) for cmd. Returns 0, or CLI_EXIT_USAGE after printing
    the problem and the usage to stderr. args->pos points into argv. */
int cli_parse_args(const cli_cmd *cmd, int argc, char **argv, cli_args *args);
/** Prints "usage: statedict USAGE" plus details to f. */
void cli_print_usage(const cli_cmd *cmd, FILE *f);
/** Reports a usage problem (printf-style) and the usage on stderr; returns CLI_EXIT_USAGE. */
int cli_usage_error(const cli_cmd *cmd, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/** Prints "statedict: WHAT: <formatted error> [STATUS]" on stderr, where WHAT classifies the
    status (cli_status_class). */
void cli_report_error(sdict_status st, const sdict_error *err);
/** Word classifying a load failure: "unreadable", "corrupt", "unsafe", "unsupported", "not a
    checkpoint", "over a limit", or "unverified" (records written without CRCs; err may be
    NULL). */
const char *cli_status_class(sdict_status st, const sdict_error *err);

/** The process's random hash seed (never 0), for tables keyed by strings from a file. */
uint64_t cli_hash_seed(void);
/** Installs the SIGBUS handler (guard.c): a mapped file that shrinks under a running command
    ends it with exit 3 and a message naming the file, "changed while mapped". */
void cli_install_sigbus_handler(void);
/** Records that path is mapped, for the SIGBUS handler's message. */
void cli_note_mapped(const char *path);

/** Loads path with the flags from args; on failure reports on stderr and returns NULL. */
sdict_doc *cli_load(const char *path, const cli_args *args);
/** cli_load that also gives the status and the error it reported (err zeroed on success). */
sdict_doc *cli_load_ex(const char *path, const cli_args *args, sdict_status *st,
                       sdict_error *err);

/** A growable NUL-terminated string. */
typedef struct cli_buf {
    char *s;
    size_t len, cap;
} cli_buf;
void buf_init(cli_buf *b);
void buf_free(cli_buf *b);
void buf_putn(cli_buf *b, const char *s, size_t n);
void buf_puts(cli_buf *b, const char *s);
void buf_printf(cli_buf *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
void buf_truncate(cli_buf *b, size_t len);

/** Python repr() of a double: shortest text that reads back exactly ("0.1", "1e-05", "100.0",
    "nan", "inf"). buf needs 32 bytes. */
void fmt_float_repr(double d, char *buf, size_t n);
/** Exact decimal text of an int value of any size, appended to b. */
void fmt_int(cli_buf *b, const sdict_value *v);
/** Drops the decimal texts fmt_int remembers by value address; call before freeing a doc. */
void cli_forget_ints(void);
/** Python-like repr of a scalar or a container of scalars, appended to b. Containers longer than
    max_items show their first and last items around "...". Tensors show as
    "tensor(float32 [2, 3])". */
void fmt_value(cli_buf *b, const sdict_value *v, size_t max_items);
/* A storage location tag ("cuda:0") with spaces, quotes, backslashes, commas, ')' and control
   characters as \xNN. */
void fmt_device_tag(cli_buf *b, const char *tag);
/** Python's repr of a complex value ("(1.5-2j)", "1j", "(nan+infj)"), appended to b. */
void fmt_complex_repr(cli_buf *b, const sdict_value *v);
/** Appends n bytes of text from a file escaped by sdict_escape_text (flags 0): newlines, tabs
    and every other control character, C1 controls, lone surrogates and invalid bytes as
    escapes. */
void fmt_escaped(cli_buf *b, const char *s, size_t n);
/** Appends the path component for a dict key: str as is, int decimal, other scalars repr. */
void fmt_key(cli_buf *b, const sdict_value *key);
/** Results computed over one or two tensors' elements (dump's sha256, diff's comparison),
    keyed by their geometry (storage, storage_offset, dtype, conj/neg bits, shape, stride; b
    may be NULL) and a tag: a tensor reached many times through the memo, or many tensors
    viewing one storage the same way, cost one computation. Results of val_size bytes are
    copied in; the tensors are borrowed (the docs outlive the cache). Out of memory only
    forgets. */
typedef struct cli_view_key {
    uint64_t hash;
    const sdict_tensor *a, *b;
    int tag;
} cli_view_key;
typedef struct cli_view_cache {
    cli_view_key *keys;
    unsigned char *vals;
    size_t n, cap, val_size;
    size_t *index; /* entry + 1; 0 = empty */
    size_t index_cap;
} cli_view_cache;
void cli_view_cache_init(cli_view_cache *c, size_t val_size);
const void *cli_view_cache_find(const cli_view_cache *c, const sdict_tensor *a,
                                const sdict_tensor *b, int tag);
void cli_view_cache_put(cli_view_cache *c, const sdict_tensor *a, const sdict_tensor *b, int tag,
                        const void *val);
void cli_view_cache_free(cli_view_cache *c);

/** Bytes of tensor elements a command may read in all (hashing, comparing): 64 x the size of
    the n input files + 256 MiB, so that many distinct views of one shared storage cannot make
    the work grow faster than the input. A directory (model folder) counts the regular files
    directly in it, an `*.index.json` the files beside it. cli_charge_data adds bytes to
    *used, or fills err (SDICT_E_LIMIT, no file: the caller names it) and returns false when
    that passes budget. */
uint64_t cli_data_budget(char *const *paths, int n);
bool cli_charge_data(uint64_t *used, uint64_t budget, uint64_t bytes, sdict_error *err);
/** A bare storage value as the 1-D tensor of its class's dtype over all of it (what
    torch.tensor(storage) holds), for hashing, comparing and printing: fills t, pointing its
    shape and stride at the caller's shape (numel) and stride (1). */
void cli_storage_tensor(const sdict_value *v, sdict_tensor *t, int64_t shape[1],
                        int64_t stride[1]);
/** The Python type a non-tensor value had, for listings: the kind's name ("int", "tuple"), or
    "torch.Size", "frozenset", "bytearray", "Counter", "numpy.float64"... (buf holds the last). */
const char *cli_type_name(const sdict_value *v, char buf[32]);
/** "[6, 3, 5, 5]" from a shape/stride array. */
void fmt_dims(cli_buf *b, const int64_t *d, int32_t n);

/** A JSON string of len bytes of text (a Python str as the loader keeps it): lone surrogates
    (Python's 'surrogatepass' form, ED A0 80..ED BF BF) are kept, for cli_json_dump to write
    as \udXXX; bytes Python could not have decoded become U+FFFD. Embedded NULs are kept. */
json_t *json_text(const char *s, size_t len);
/** Writes j to f as Python's json.dumps(ensure_ascii=True) would: only printable ASCII and
    newlines, non-ASCII text as \uXXXX escapes, lone surrogates as themselves ("\ud800"),
    which jansson's own dump cannot write. indent > 0 puts each member on its own line indented
    by that many spaces per level; 0 writes one line with ", " and ": " separators. Objects
    keep their insertion order. Returns 0, or -1 when the write failed. */
int cli_json_dump(const json_t *j, FILE *f, int indent);

/** A JSON writer that streams to a FILE as cli_json_dump formats (same separators, indent and
    string escaping), so a command's memory is bounded by its largest single value rather than
    by the whole document. Calls: cli_jw_open('{' or '['), then per member cli_jw_key (object)
    or cli_jw_item (array) followed by exactly one value (cli_jw_str/raw/int/json or a nested
    open...close), then cli_jw_close('}' or ']'). cli_jw_finish flushes and frees: 0, or -1
    when a write failed. */
typedef struct cli_jw {
    cli_buf b;
    FILE *f;
    int indent, depth;
    bool first, failed;
} cli_jw;
void cli_jw_init(cli_jw *w, FILE *f, int indent);
void cli_jw_open(cli_jw *w, char ch);
void cli_jw_close(cli_jw *w, char ch);
void cli_jw_item(cli_jw *w);
void cli_jw_key(cli_jw *w, const char *key);
void cli_jw_str(cli_jw *w, const char *s, size_t n);  /* a str as json_text keeps it */
void cli_jw_raw(cli_jw *w, const char *text);          /* true, false, null, a number */
void cli_jw_int(cli_jw *w, long long v);
void cli_jw_json(cli_jw *w, const json_t *j);
int cli_jw_finish(cli_jw *w);

/*
 Numbers in the CLI's JSON (the schema README documents): a value is a JSON number where the
 number is exact for every reader (integers within +-2^53, which a double holds exactly, and
 finite floats, written as Python's repr, the shortest text that reads back as the same
 double), and a JSON string holding its exact decimal text otherwise: an int past 2^53 is
 "9007199254740993", a float NaN or infinity "nan", "inf", "-inf". So `.value|tostring` in jq
 (or int()/float() in Python) always gives the exact value.
*/
#define CLI_JSON_MAX_EXACT 9007199254740992LL /* 2^53 */
/** True when v is within +-2^53 (written as a JSON number). */
bool cli_int_exact(long long v);
void cli_jw_num(cli_jw *w, long long v);             /* number, or "text" past 2^53 */
void cli_jw_unum(cli_jw *w, unsigned long long v);   /* the same for an unsigned value */
void cli_jw_float(cli_jw *w, double d);              /* repr number, or "nan" "inf" "-inf" */
void cli_jw_pyint(cli_jw *w, const sdict_value *v);  /* a Python int of any size */
json_t *cli_json_num(long long v);
json_t *cli_json_unum(unsigned long long v);
json_t *cli_json_float(double d);
/** None, bool, int, float and str values as JSON by the rule above (str as json_text); NULL
    for every other kind. */
json_t *cli_json_scalar(const sdict_value *v);
/** The doc's metadata (sdict_doc_metadata) as a JSON object KEY -> value in the file's order,
    values by cli_json_scalar (other kinds as their fmt_value text), non-str keys as fmt_key
    writes them; JSON null when the doc has none. */
json_t *cli_json_metadata(const sdict_doc *doc);

/** Makes stdout and stderr escape what is written to them (sdict_escape_text with
    SDICT_ESCAPE_KEEP_LAYOUT): whatever a command prints, control characters, C1 controls and
    bytes that are not UTF-8 from a file reach the terminal as escapes, while newlines and
    tabs stay the structure of the output. UTF-8 sequences cut between two writes are joined.
    glibc only (fopencookie); elsewhere a no-op. */
void cli_escape_streams_begin(void);
/** Flushes and removes the escaping streams, restoring the real stdout and stderr. Returns 0,
    or -1 when writing standard output failed. */
int cli_escape_streams_end(void);

/** strdup (not in C11); NULL on out-of-memory. */
char *cli_strdup(const char *s);

/** True for kinds without children (everything except list/tuple/set/dict). */
bool is_scalar_kind(sdict_kind k);
/** True for a list/tuple/set whose items are all scalars (shown inline as one leaf). */
bool is_scalar_seq(const sdict_value *v);

/**
 Walks the tree under v in order, calling fn for every leaf with its dotted path: tensors,
 scalars, empty containers, and (when inline_seqs) sequences made only of scalars. Dict
 children get fmt_key(key), sequence items their decimal index. Returns false (after printing
 an error) when the nesting is deeper than the walk allows, which only a cyclic tree reaches.
*/
typedef void (*leaf_fn)(void *ctx, const char *path, const sdict_value *v);
bool walk_leaves(const sdict_value *v, cli_buf *path, bool inline_seqs, leaf_fn fn, void *ctx);
/** walk_leaves that also keeps in exact, when fn is called, the leaf's path with every key's
    kind and length ("str1:a" "int1:1" "#0:" per component), which tells apart paths that print
    alike ({'a.b': 1} and {'a': {'b': 1}}, {1: x} and {'1': x}). */
bool walk_leaves_exact(const sdict_value *v, cli_buf *path, cli_buf *exact, bool inline_seqs,
                       leaf_fn fn, void *ctx);

/** Most dimensions of size > 1 a tensor with elements has: each one at least doubles the
    element count, which stays below 2^63. Size-1 dimensions, of which there may be any number,
    change neither the elements nor their order, so the chunker leaves them out. */
#define CLI_MAX_SQUEEZED 64

/** One piece of a chunked walk: a view of the tensor's storage whose shape and strides (the
    tensor's dimensions of size > 1, the first one possibly cut short) live in the struct. */
typedef struct cli_piece {
    sdict_tensor t;
    int64_t shape[CLI_MAX_SQUEEZED], stride[CLI_MAX_SQUEEZED];
} cli_piece;

/** Walks a tensor's elements in C order in pieces of at most max_elems elements, each piece a
    view of the same storage (no copy): the outer dimensions advance like an odometer, each step
    covering the innermost dimensions that fit, or a run of the innermost one. dump and diff
    use it so that memory stays bounded whatever the shape (a huge single row, stride 0), and
    time stays linear in the rank (only dimensions of size > 1 take part). */
typedef struct cli_chunker {
    int32_t nd;                          /* dimensions of size > 1 */
    int32_t dim[CLI_MAX_SQUEEZED];       /* their positions in the tensor */
    int32_t split;                       /* entry of dim[] cut into runs; -1: all fits */
    int64_t run;                         /* elements of dimension dim[split] per piece */
    int64_t idx[CLI_MAX_SQUEEZED];       /* position in dimensions dim[0..split] */
    bool done;
} cli_chunker;
void cli_chunker_init(cli_chunker *c, const sdict_tensor *t, int64_t max_elems);
/** The current piece of t (or of any tensor with t's shape) as a view; false when done. */
bool cli_chunk_view(const cli_chunker *c, const sdict_tensor *t, cli_piece *piece);
void cli_chunker_next(cli_chunker *c, const sdict_tensor *t);
/** Refuses (SDICT_E_LIMIT, filling err) a tensor whose elements span far more bytes than its
    storage holds (stride-0 expansion: a 500-byte file can describe 2^58 elements), so that
    hashing or comparing element by element stays proportional to the input. */
sdict_status cli_check_expansion(const sdict_tensor *t, sdict_error *err);

/** Deepest nesting the walkers follow (the loader allows 1000). */
#define CLI_MAX_DEPTH 4096

/** After a listing of v, a value of an inert load (--inert): says on stderr when doc is a
    TorchScript archive, or when v is or directly holds a pickled object and ntensors (the
    tensors listed) is 0, that `statedict extract` writes the state_dict (the tensors inside
    objects are not listed). */
void cli_inert_hint(const char *cmd, const sdict_doc *doc, const sdict_value *v,
                    size_t ntensors);

#endif /* STATEDICT_CLI_H */
