/*
 main.c - the `statedict` command-line tool: subcommand dispatch, --help and --version.

 Every subcommand is one row of the table below (name, handler, one-line help, usage, the
 options it takes); its code lives in cmd_<name>.c. Exit statuses are listed in cli.h.
*/
#include "cli.h"

#include <stdlib.h>
#include <string.h>

static const cli_cmd commands[] = {
    {"ls", cmd_ls, "list every tensor (key, dtype, shape, bytes) and non-tensor leaf with its value",
     "ls [--json [--pretty]] [LOAD OPTIONS] FILE...",
     "  FILE may be a torch checkpoint, a safetensors file, a model folder or an *.index.json.\n"
     "  Several files: each listing under a line \"==> FILE <==\" (--json: one document\n"
     "  {\"files\": [LISTING...]}); the exit status is the worst of the files'.\n"
     "  Keys are dotted paths (model_state_dict.conv1.weight, optimizer_state_dict.state.0.exp_avg);\n"
     "  list items appear by index. Marks: non-contiguous (with strides), shared=KEY[@OFFSET]\n"
     "  (the file's storage key, used by several tensors; @OFFSET: this tensor's storage_offset in\n"
     "  elements), meta (no data), param (nn.Parameter), grad (requires_grad), device=TAG (saved\n"
     "  on another device than the CPU, e.g. device=cuda:0; loaded to memory as with\n"
     "  map_location='cpu'). Storages saved bare show DTYPE storage(NUMEL) BYTES device=TAG.\n"
     "  The summary line sums tensors and bytes and names the format; after it, one line\n"
     "  \"metadata 'KEY': VALUE\" per entry of the file's metadata (safetensors __metadata__).\n"
     "  --json: the schema in the README (numbers exact: past 2^53 as strings).\n",
     CLI_OPT_LOAD | CLI_OPT_JSON, 1, -1},
    {"dump", cmd_dump, "print the whole tree as one canonical JSON document",
     "dump [--json] [--pretty] [LOAD OPTIONS] FILE",
     "  {\"format\":..., \"byteorder\":..., \"metadata\":..., \"root\": NODE} (JSON with or\n"
     "  without --json; the schema in the README); tensors carry dtype, shape, stride,\n"
     "  storage_offset, requires_grad, parameter, storage key and the SHA-256 of their elements\n"
     "  in C-contiguous order, little-endian.\n",
     CLI_OPT_LOAD | CLI_OPT_JSON, 1, 1},
    {"show", cmd_show, "print the values of one tensor or subtree",
     "show [LOAD OPTIONS] FILE KEY\n"
     "       statedict show --metadata [LOAD OPTIONS] FILE [KEY]",
     "  KEY is a dotted path as ls prints it; \"\" is the whole file. Large tensors are summarised\n"
     "  like torch's print (first and last 3 items per dimension around \"...\"). Exit 1 when the\n"
     "  file has no such key. --metadata prints the file's metadata (safetensors __metadata__)\n"
     "  instead, one \"KEY: str  'VALUE'\" line per entry, or only KEY's.\n",
     CLI_OPT_LOAD | CLI_OPT_META, 1, 2},
    {"convert", cmd_convert, "convert a checkpoint to a torch zip file, safetensors, a model folder or a DCP folder",
     "convert [--format pt|safetensors|dcp] [--key PATH] [--include GLOB] [--exclude GLOB]\n"
     "        [--strip-prefix P] [--add-prefix P] [--dtype bfloat16|float16|float32]\n"
     "        [--keep-name NAME] [--drop-non-tensors | --non-tensors-as-metadata]\n"
     "        [--copy-overlaps] [--max-shard-size SIZE] [--no-verify]\n"
     "        [--layout 1.13|2.x] [--not-weights-only] [LOAD OPTIONS] IN OUT",
     "  The input's CRC-32s are verified first (a corrupt record is never written out with a\n"
     "  fresh valid CRC); --no-verify skips that. OUT's format: --format, else safetensors for\n"
     "  a name ending in .safetensors, a Hugging Face model folder for an existing directory,\n"
     "  a name ending in '/' or --max-shard-size SIZE (huggingface_hub's sizes: 500MB, 2GB;\n"
     "  powers of 1000), else a torch zip file. --format dcp writes a torch.distributed.checkpoint\n"
     "  folder (one process's layout of torch 2.14: __0_0.distcp, then .metadata); --layout,\n"
     "  --not-weights-only, --max-shard-size and the safetensors options are refused with it.\n"
     "  --key PATH converts a sub-tree (model_state_dict). --include/--exclude GLOB (fnmatch,\n"
     "  repeatable) keep the dotted keys ls prints that match an --include (all without one) and\n"
     "  no --exclude; then --strip-prefix P removes P where a key starts with it and\n"
     "  --add-prefix P prepends P. Any of these makes the output one flat dict of those keys.\n"
     "  --dtype casts float64/float32/float16/bfloat16 tensors (nothing else); tensors sharing a\n"
     "  storage keep sharing it.\n"
     "  safetensors: nested dicts and lists become dotted names; tied weights (the same view\n"
     "  under several names) are written once under the name safetensors' save_model keeps\n"
     "  (--keep-name NAME prefers NAME), each dropped name reported on stderr; other overlapping\n"
     "  views are refused unless --copy-overlaps; values that are not tensors are refused, listed,\n"
     "  unless --drop-non-tensors or --non-tensors-as-metadata (their Python repr); a torch\n"
     "  input gets the metadata {\"format\": \"pt\"}, as transformers writes it.\n"
     "  torch zip: --layout 1.13 (the default) writes what torch 1.13's torch.save writes, byte\n"
     "  for byte; --layout 2.x what torch 2.7 and later write (2.14's bytes). Both load in every\n"
     "  torch since 1.6. Every value keeps its Python type. Values torch.load's default\n"
     "  weights_only=True refuses (numpy values, frozensets, ints past 255 bytes) are refused,\n"
     "  naming them; --not-weights-only writes them anyway, and the output then needs\n"
     "  torch.load(OUT, weights_only=False), as the input did.\n"
     "  Conversions of more than 1 GB of tensors show their progress when stderr is a terminal.\n",
     CLI_OPT_LOAD | CLI_OPT_SAVE | CLI_OPT_CONVERT, 2, 2},
    {"extract", cmd_extract, "write the state_dict of a pickled model or optimizer, or of a TorchScript archive",
     "extract [--key PATH] [convert's output options] [LOAD OPTIONS] IN OUT",
     "  Reads IN as inert data (--inert: nothing is imported or run) and writes, as convert\n"
     "  writes (same output formats and options), what model.state_dict() returns: keys,\n"
     "  order, dtypes, values, shared tensors and _metadata versions as torch computes them.\n"
     "  A checkpoint dict holding models ({'model': model, 'epoch': 3, ...}) is written whole,\n"
     "  each model replaced by its state_dict; --key PATH extracts only that sub-tree.\n"
     "  Objects that are not modules become their tensors by attribute path, class\n"
     "  references their name (each with a warning). One line per model on stderr.\n"
     "  A pickled optimizer becomes optimizer.state_dict(); a TorchScript archive\n"
     "  (torch.jit.save) torch.jit.load(f).state_dict(), its code read as text, never run.\n",
     CLI_OPT_LOAD | CLI_OPT_SAVE | CLI_OPT_CONVERT, 2, 2},
    {"diff", cmd_diff, "compare two checkpoints leaf by leaf",
     "diff [--rtol R] [--atol A] [LOAD OPTIONS] A B",
     "  Reports keys only in A or B, type, dtype and shape changes, differing non-tensor values,\n"
     "  and for tensors with elements outside |a-b| <= atol + rtol*|b| (torch.allclose; NaN equals\n"
     "  NaN here) the max absolute and relative difference. --rtol 0 --atol 0 asks for exact\n"
     "  equality. Defaults: rtol 1e-05, atol 1e-08. Exit 0 equal, 1 different, 3 unreadable.\n"
     "  A and B may be of different formats (a .pt against a safetensors file or a model\n"
     "  folder): the format is not a difference; metadata is compared when both have some.\n",
     CLI_OPT_LOAD | CLI_OPT_TOL, 2, 2},
    {"verify", cmd_verify, "check container, CRC-32 of every record, pickle and tensor extents",
     "verify FILE...",
     "  Exit 0 when everything checks, 1 when a file was read but fails a check (CRC, zip\n"
     "  structure, pickle, unsafe global, storage extent), 3 when one cannot be read at all;\n"
     "  with several files, the worst of theirs.\n",
     0, 1, -1},
    {"scan", cmd_scan, "list every global the pickles reference, ALLOWED or REFUSED",
     "scan [LOAD OPTIONS] FILE...",
     "  Runs the loader's pickle machine without reading tensor data. Prints\n"
     "  \"STATUS module.name RECORD@OFFSET\" per reference. Exit 1 when anything is refused,\n"
     "  3 when a file cannot be scanned, 0 otherwise.\n",
     CLI_OPT_LOAD, 1, -1},
};
static const size_t ncommands = sizeof commands / sizeof commands[0];

static const cli_cmd *find_command(const char *name) {
    for (size_t i = 0; i < ncommands; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

static void print_help(FILE *f) {
    fprintf(f, "usage: statedict COMMAND [OPTIONS] ARGS...\n"
               "Reads and writes PyTorch checkpoints without Python; never runs code from a file.\n\n"
               "commands:\n");
    for (size_t i = 0; i < ncommands; i++)
        fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "  %-8s %s\n", "help", "help COMMAND: options and details of one command");
    fprintf(f, "\nexit status: 0 ok, 1 differences / unsafe / verification failed, 2 usage error,\n"
               "3 input unreadable, corrupt or unsafe (the message says which).\n");
}

static int run(int argc, char **argv) {
    if (argc < 2) {
        print_help(stderr);
        return CLI_EXIT_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
        print_help(stdout);
        return CLI_EXIT_OK;
    }
    if (strcmp(name, "--version") == 0) {
        uint32_t v = sdict_version();
        printf("statedict %u.%u.%u (library %u.%u.%u)\n", SDICT_VERSION_MAJOR, SDICT_VERSION_MINOR,
               SDICT_VERSION_PATCH, (unsigned)(v >> 16) & 0xff, (unsigned)(v >> 8) & 0xff,
               (unsigned)v & 0xff);
        return CLI_EXIT_OK;
    }
    if (strcmp(name, "help") == 0) {
        if (argc == 2) {
            print_help(stdout);
            return CLI_EXIT_OK;
        }
        const cli_cmd *c = find_command(argv[2]);
        if (!c || argc > 3) {
            fprintf(stderr, "statedict: help: unknown command '%s'\n", argv[2]);
            print_help(stderr);
            return CLI_EXIT_USAGE;
        }
        cli_print_usage(c, stdout);
        return CLI_EXIT_OK;
    }
    const cli_cmd *cmd = find_command(name);
    if (!cmd) {
        fprintf(stderr, "statedict: unknown command '%s'\n", name);
        print_help(stderr);
        return CLI_EXIT_USAGE;
    }
    cli_args args;
    int rc = cli_parse_args(cmd, argc - 2, argv + 2, &args);
    if (rc != 0)
        return rc;
    if (args.help) {
        cli_print_usage(cmd, stdout);
        rc = CLI_EXIT_OK;
    } else {
        cli_install_sigbus_handler();
        rc = cmd->run(cmd, &args);
    }
    free(args.pos);
    return rc;
}

/* Everything printed goes through the escaping streams (cli_escape_streams_begin): names and
   keys from a file cannot drive the terminal, whichever command prints them. */
int main(int argc, char **argv) {
    cli_escape_streams_begin();
    int rc = run(argc, argv);
    bool failed = fflush(stdout) != 0 || ferror(stdout);
    failed = cli_escape_streams_end() != 0 || failed;
    if (fflush(stdout) != 0 || ferror(stdout) || failed) {
        fputs("statedict: error writing standard output\n", stderr);
        if (rc == CLI_EXIT_OK)
            rc = CLI_EXIT_BAD_INPUT;
    }
    return rc;
}
