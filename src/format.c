/*
 format.c - the format layer: sdict_load / sdict_load_buffer / sdict_scan / sdict_verify.

 Every input's format is decided here, from its content (never its name), in one order:
   empty input                  refused
   "PK\3\4"                     torch zip (load.c; other zips are named there: .npz, .keras)
   a 512-byte tar header that Python's tarfile accepts
                                torch < 0.4 tar (load.c); refused as ambiguous when the same
                                bytes are also a safetensors header
   a ustar header tarfile rejects
                                refused as ambiguous (torch would read a pickle stream)
   u64 length, then '{' or '['  safetensors (safetensors_read.c)
   a known foreign type         refused, saying what it is (Git LFS pointer, HTML, GGUF, ...)
   anything else                torch's magic-number pickle stream (load.c)
 Distributed checkpoint folders are claimed first by dcp_read.c (sdict__dcp_claims), then Hugging
 Face folders and index files by hf_folder.c (sdict__hf_claims).
*/
#include "internal.h"

#include <stdio.h>
#include <string.h>

/*==================================================================================================
 MARK: Other file types (clearer answers)
==================================================================================================*/

/* Python's str.isspace() over ASCII. */
static bool py_space(uint8_t c) {
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}

/* Files people mistake for checkpoints, told apart by their first bytes: the answer says what the
   file is and what to do instead of "not a PyTorch checkpoint". HTML entries match ignoring case
   after leading whitespace and a UTF-8 byte-order mark. */
static const struct {
    const char *magic;
    size_t len;
    bool html;
    const char *what;
} foreign_types[] = {
    {"version https://git-lfs.github.com/spec/", 40, false,
     "a Git LFS pointer file, not the checkpoint: run `git lfs pull` in its repository (or "
     "download the file itself)"},
    {"<!doctype html", 14, true, NULL},
    {"<html", 5, true, NULL},
    {"<head", 5, true, NULL},
    {"<body", 5, true, NULL},
    {"GGUF", 4, false, "a GGUF file (llama.cpp), not a PyTorch checkpoint"},
    {"\x93NUMPY", 6, false,
     "a NumPy .npy array (numpy.save), not a PyTorch checkpoint: read it with numpy.load"},
    {"\x89HDF\r\n\x1a\n", 8, false,
     "an HDF5 file (Keras .h5 weights?), not a PyTorch checkpoint: read it with h5py or Keras"},
    {"\x1f\x8b", 2, false, "gzip-compressed data, not a PyTorch checkpoint: decompress it first"},
};

static const char html_what[] = "an HTML page (a download error or login page?), not the "
                                "checkpoint: download the file itself";

/* What the input is when its first bytes h[0, n) show another known file
   type, else NULL. */
static const char *sniff_foreign(const uint8_t *h, size_t n) {
    size_t skip = n >= 3 && memcmp(h, "\xef\xbb\xbf", 3) == 0 ? 3 : 0;
    while (skip < n && py_space(h[skip]))
        skip++;
    for (size_t i = 0; i < sizeof foreign_types / sizeof foreign_types[0]; i++) {
        size_t at = foreign_types[i].html ? skip : 0, k = foreign_types[i].len;
        if (n - at < k || at > n)
            continue;
        bool same = true;
        for (size_t j = 0; j < k && same; j++) {
            uint8_t c = h[at + j];
            if (foreign_types[i].html && c >= 'A' && c <= 'Z')
                c = (uint8_t)(c - 'A' + 'a');
            same = c == (uint8_t)foreign_types[i].magic[j];
        }
        if (same)
            return foreign_types[i].html ? html_what : foreign_types[i].what;
    }
    return NULL;
}


/*==================================================================================================
 MARK: Detection
==================================================================================================*/

/* The largest header the safetensors Rust core reads (MAX_HEADER_SIZE in tensor.rs). */
#define ST_MAX_HEADER 100000000u

/* Decides what src holds (see the table at the top); refusals fill err (file left unset). */
static sdict_status sniff(const sdict__source *src, sdict__input *kind, sdict_error *err) {
    if (src->size == 0)
        return sdict__err(err, SDICT_E_FORMAT, NULL, 0,
                          "empty input (0 bytes): not a PyTorch checkpoint");
    uint8_t head[512];
    size_t hn = src->size < sizeof head ? (size_t)src->size : sizeof head;
    sdict_status st = sdict__source_read(src, 0, head, hn, NULL, err);
    if (st != SDICT_OK)
        return st;
    if (hn >= 4 && memcmp(head, "PK\x03\x04", 4) == 0) {
        *kind = SDICT__IN_ZIP;
        return SDICT_OK;
    }
    bool st_like = sdict__st_sniff(head, hn);
    if (hn == 512) {
        const char *why = "";
        bool zero = true;
        for (size_t i = 0; i < 512 && zero; i++)
            zero = head[i] == 0;
        if (!zero && sdict__tar_header_ok(head, &why)) {
            if (st_like)
                return sdict__err(err, SDICT_E_FORMAT, "tar", 0,
                                  "ambiguous file: it is both a tar archive Python's tarfile "
                                  "reads (torch < 0.4) and starts like a safetensors file");
            *kind = SDICT__IN_TAR;
            return SDICT_OK;
        }
        /* tarfile rejects it, so torch reads a magic-number stream from the same bytes */
        if (!zero && memcmp(head + 257, "ustar", 5) == 0)
            return sdict__err(err, SDICT_E_FORMAT, "tar", 0,
                              "ambiguous file: it starts with a ustar tar header, but %s, so "
                              "Python's tarfile rejects it and torch reads the file as a "
                              "magic-number pickle stream instead", why);
    }
    const char *what = sniff_foreign(head, hn);
    /* A foreign magic in the length bytes (gzip's 1f 8b is a plausible length) loses to a
       safetensors start whose length the Rust core would read. */
    if (st_like && (!what || sdict__le64(head) <= ST_MAX_HEADER)) {
        *kind = SDICT__IN_SAFETENSORS;
        return SDICT_OK;
    }
    if (what)
        return sdict__err(err, SDICT_E_FORMAT, NULL, 0, "this is %s", what);
    *kind = SDICT__IN_LEGACY;
    return SDICT_OK;
}

/* The first global a pickle probe met. */
typedef struct probe_hit {
    size_t count;
    char what[160];
    int64_t offset;
} probe_hit;

/* A dotted Python name ("os", "torch._utils"): only such a module and name can be imported
   and looked up; Python's find_class fails on anything else before any code runs. */
static bool dotted_name(const char *s) {
    bool start = true;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '.' && !start) {
            start = true;
            continue;
        }
        /* non-ASCII counts as a letter: Python identifiers may use it (erring toward refusal) */
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
        if (!alpha && (start || c < '0' || c > '9'))
            return false;
        start = false;
    }
    return !start;
}

static void probe_global(void *ctx, const sdict_scan_item *item) {
    probe_hit *h = ctx;
    if (!dotted_name(item->module) || !dotted_name(item->name))
        return;
    if (h->count++ == 0) {
        snprintf(h->what, sizeof h->what, "%s.%s", item->module, item->name);
        h->offset = item->offset;
    }
}

/* A safetensors file is also what torch.load reads as a magic-number pickle stream (torch
   before 2.14 always, 2.14 unless the name ends in ".safetensors"): Python's pickle runs from
   byte 0 of the length field on. It reads nothing there when its first opcodes fail (the usual
   case: a header length's low byte is no opcode, or starts one that the bytes after it
   break); when the same bytes make a pickle that references a global Python could import (a
   dotted name; find_class fails on other text before running anything), or a whole torch
   legacy file, the file has two readings and is refused as ambiguous. So is a file where the
   machine stops on a refusal of its own (a limit, text only Python's int() parses, SETITEM on
   a list...) rather than on an error Python's unpickler raises at the same opcode: Python
   would read on, and what follows is unknown. */
static sdict_status st_pickle_probe(sdict__source *src, const sdict_load_opts *opts,
                                    sdict_error *err) {
    probe_hit hit = {0, "", -1};
    size_t unsafe = 0;
    bool python_reads_on = false;
    sdict__read_job job = {SDICT__READ_SCAN, probe_global, &hit, &unsafe, &python_reads_on};
    sdict_error perr;
    memset(&perr, 0, sizeof perr);
    sdict_status st = sdict__torch_read(src, SDICT__IN_LEGACY, opts, &job, NULL, &perr);
    if (hit.count)
        return sdict__err(err, SDICT_E_FORMAT, "safetensors", 0,
                          "ambiguous file: it reads as safetensors, but torch.load reads it as "
                          "a pickle stream from byte 0 (torch < 2.14, or any name not ending in "
                          ".safetensors), and that pickle references the global '%s' (offset "
                          "%lld of the stream)",
                          hit.what, (long long)hit.offset);
    if (st == SDICT_OK)
        return sdict__err(err, SDICT_E_FORMAT, "safetensors", 0,
                          "ambiguous file: it reads both as safetensors and as a torch legacy "
                          "(magic-number) file");
    if (python_reads_on) {
        char why[400];
        sdict_error_format(&perr, why, sizeof why);
        return sdict__err(err, SDICT_E_FORMAT, "safetensors", 0,
                          "ambiguous file: it reads as safetensors, and torch.load reads it as a "
                          "pickle stream from byte 0 further than statedict's pickle machine, "
                          "which stops on a rule of its own where Python's does not (%s)", why);
    }
    return SDICT_OK;
}

/* Sniffs src and runs the reader of its format. */
static sdict_status read_source(sdict__source *src, const sdict_load_opts *opts,
                                const sdict__read_job *job, sdict_doc **out, sdict_error *err) {
    sdict__input kind;
    sdict_status st = sniff(src, &kind, err);
    if (st != SDICT_OK)
        return st;
    if (kind == SDICT__IN_SAFETENSORS) {
        if ((st = st_pickle_probe(src, opts, err)) != SDICT_OK)
            return st;
        return sdict__st_read(src, opts, job, out, err);
    }
    return sdict__torch_read(src, kind, opts, job, out, err);
}

/*==================================================================================================
 MARK: Entry points
==================================================================================================*/

/* A file of a DCP folder read on its own (.metadata is a pickle of DCP's classes, a .distcp
   file items back to back) fails with a message about pickles or zips: it says so. */
static void dcp_part_hint(const char *path, sdict_error *err) {
    const char *base = path ? strrchr(path, '/') : NULL;
    base = base ? base + 1 : path;
    if (!err || !base || (strcmp(base, ".metadata") != 0 && !sdict__ends_with(base, ".distcp")))
        return;
    size_t n = strlen(err->message);
    snprintf(err->message + n, sizeof err->message - n,
             " (%s is a file of a distributed checkpoint: read its folder)", base);
}

SDICT_API sdict_status sdict_load(const char *path, const sdict_load_opts *opts, sdict_doc **out,
                                  sdict_error *err) {
    if (out)
        *out = NULL;
    if (!path || !out) {
        sdict__err_file(err, path ? path : "");
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "sdict_load: %s is NULL",
                          path ? "out" : "path");
    }
    if (sdict__dcp_claims(path))
        return sdict__dcp_load(path, opts, out, err);
    if (sdict__hf_claims(path))
        return sdict__hf_load(path, opts, out, err);
    uint32_t flags = opts ? opts->flags : 0;
    sdict__source src;
    sdict_status st = sdict__source_open_file(&src, path, !(flags & SDICT_LOAD_COPY), err);
    if (st == SDICT_OK) {
        sdict__read_job job = {SDICT__READ_LOAD, NULL, NULL, NULL, NULL};
        st = read_source(&src, opts, &job, out, err);
        sdict__source_close(&src);
    }
    if (st != SDICT_OK) {
        sdict__err_file(err, path);
        dcp_part_hint(path, err);
    }
    return st;
}

SDICT_API sdict_status sdict_load_buffer(const void *data, size_t size, const char *name,
                                         const sdict_load_opts *opts, sdict_doc **out,
                                         sdict_error *err) {
    if (out)
        *out = NULL;
    sdict_status st;
    if (!out || (!data && size > 0)) {
        st = sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "sdict_load_buffer: %s is NULL",
                        out ? "data" : "out");
    } else {
        /* A memory source has no mapping, so every storage is copied out of data. */
        sdict__source src;
        sdict__source_init_mem(&src, data, size, name);
        sdict__read_job job = {SDICT__READ_LOAD, NULL, NULL, NULL, NULL};
        st = read_source(&src, opts, &job, out, err);
    }
    if (st != SDICT_OK)
        sdict__err_file(err, name ? name : "");
    return st;
}

SDICT_API sdict_status sdict_scan(const char *path, const sdict_load_opts *opts,
                                  void (*fn)(void *ctx, const sdict_scan_item *item), void *ctx,
                                  size_t *unsafe_count, sdict_error *err) {
    if (unsafe_count)
        *unsafe_count = 0;
    if (path && sdict__dcp_claims(path))
        return sdict__dcp_scan(path, opts, fn, ctx, unsafe_count, err);
    if (path && sdict__hf_claims(path))
        return sdict__hf_scan(path, opts, fn, ctx, unsafe_count, err);
    sdict__source src;
    /* Mapped: storages of stored records become views that are never touched. */
    sdict_status st = sdict__source_open_file(&src, path, true, err);
    if (st == SDICT_OK) {
        sdict__read_job job = {SDICT__READ_SCAN, fn, ctx, unsafe_count, NULL};
        st = read_source(&src, opts, &job, NULL, err);
        sdict__source_close(&src);
    }
    if (st != SDICT_OK)
        sdict__err_file(err, path ? path : "");
    return st;
}

SDICT_API sdict_status sdict_verify(const char *path, sdict_error *err) {
    if (path && sdict__dcp_claims(path))
        return sdict__dcp_verify(path, err);
    if (path && sdict__hf_claims(path))
        return sdict__hf_verify(path, err);
    sdict__source src;
    sdict_status st = sdict__source_open_file(&src, path, false, err);
    if (st == SDICT_OK) {
        sdict_load_opts opts;
        memset(&opts, 0, sizeof opts);
        opts.flags = SDICT_LOAD_COPY | SDICT_LOAD_VERIFY_CRC;
        sdict__read_job job = {SDICT__READ_VERIFY, NULL, NULL, NULL, NULL};
        st = read_source(&src, &opts, &job, NULL, err);
        sdict__source_close(&src);
    }
    if (st != SDICT_OK) {
        sdict__err_file(err, path ? path : "");
        dcp_part_hint(path, err);
    }
    return st;
}
