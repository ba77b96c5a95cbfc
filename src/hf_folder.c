/*
 hf_folder.c - Hugging Face model folders and shard indexes (*.index.json): loaded as one doc,
 written as huggingface_hub writes them.

 A layer above the single-file formats: it reaches them only through sdict_load, sdict_save,
 sdict_scan, sdict_verify and the value API (plus sdict__save_bytes for the index text).
 - Reading: a folder is read as transformers' from_pretrained picks its weights
   (model.safetensors, model.safetensors.index.json, pytorch_model.bin,
   pytorch_model.bin.index.json, the first that is a file); an index is parsed with jansson
   (duplicate keys refused), every shard it names is checked to be a plain file name inside the
   index's folder and loaded with sdict_load, and the tensors are gathered into one doc in the
   weight_map's order, retaining the shards' storages (so a mapped shard stays mapped).
 - Writing: huggingface_hub 1.23's save_torch_state_dict: its tied-tensor handling
   (_remove_duplicate_names, safetensors only), its greedy split
   (split_state_dict_into_shards_factory), its file names and its index text
   (json.dump(index, f, indent=2)).
*/
#define _DEFAULT_SOURCE /* realpath */
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The weights files a folder is read from, in transformers 5.12's order (modeling_utils.py,
   _get_resolved_checkpoint_files with use_safetensors=None: safetensors, its index, then the
   pickle file and its index). */
static const char *const FOLDER_FILES[4] = {
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
    "pytorch_model.bin.index.json"};

/* An index larger than this is refused (the largest published ones, of models with 100,000
   tensors, are about 10 MB); jansson's tree of it takes memory proportional to it. */
#define HF_INDEX_MAX ((size_t)64 << 20)

static const char INDEX_SUFFIX[] = ".index.json";

/* strerror_r's text of an errno value (strerror is not thread-safe). */
typedef struct errbuf {
    char s[128];
} errbuf;

static errbuf errtext(int e) {
    errbuf b;
    if (strerror_r(e, b.s, sizeof b.s) != 0)
        snprintf(b.s, sizeof b.s, "errno %d", e);
    return b;
}

static sdict_status nomem(sdict_error *err) {
    return sdict__err(err, SDICT_E_NOMEM, NULL, -1, "out of memory");
}

/* The folder holding path ("." when path has no '/'), in new memory. */
static char *dir_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash)
        return sdict__strndup(".", 1);
    if (slash == path)
        return sdict__strndup("/", 1);
    return sdict__strndup(path, (size_t)(slash - path));
}

bool sdict__hf_claims(const char *path) {
    struct stat sb;
    if (!path || stat(path, &sb) != 0)
        return false;
    return S_ISDIR(sb.st_mode) || (S_ISREG(sb.st_mode) && sdict__ends_with(path, INDEX_SUFFIX));
}

/*==================================================================================================
 MARK: Shard names and files
==================================================================================================*/

/* Whether the file name stays inside dir: rdir is realpath(dir); the file's own realpath must
   lie under it (a symbolic link may point elsewhere inside the folder, not outside it). Sets
   *why to the reason when it does not, or when the file is missing or not a regular file. */
typedef enum { FILE_OK, FILE_MISSING, FILE_OUTSIDE, FILE_NOT_REGULAR } file_check;

static file_check check_file_inside(const char *rdir, const char *path, struct stat *out) {
    struct stat sb;
    if (lstat(path, &sb) != 0)
        return FILE_MISSING;
    char *real = realpath(path, NULL);
    if (!real)
        return errno == ENOENT ? FILE_MISSING : FILE_OUTSIDE; /* a dangling link: missing */
    size_t n = strlen(rdir);
    bool root = n == 1 && rdir[0] == '/';
    bool inside = root ? real[0] == '/' && real[1] != '\0'
                       : strncmp(real, rdir, n) == 0 && real[n] == '/';
    file_check r = FILE_OK;
    if (!inside)
        r = FILE_OUTSIDE;
    else if (stat(real, &sb) != 0)
        r = FILE_MISSING;
    else if (!S_ISREG(sb.st_mode))
        r = FILE_NOT_REGULAR;
    free(real);
    if (out)
        *out = sb;
    return r;
}

/* A shard's file identity, to find two shard names for one file. */
typedef struct {
    dev_t dev;
    ino_t ino;
    size_t shard;
} file_id;

static int file_id_cmp(const void *a, const void *b) {
    const file_id *x = a, *y = b;
    if (x->dev != y->dev)
        return x->dev < y->dev ? -1 : 1;
    if (x->ino != y->ino)
        return x->ino < y->ino ? -1 : 1;
    return x->shard < y->shard ? -1 : x->shard > y->shard;
}

/* A shard name must be a plain file name: not empty, no '/', not "." or "..", and not an
   index itself (an index naming an index could name itself). */
static const char *bad_shard_name(const char *name) {
    if (!name[0])
        return "is empty";
    if (strchr(name, '/'))
        return name[0] == '/' ? "is an absolute path" : "contains '/'";
    if (!strcmp(name, ".") || !strcmp(name, ".."))
        return "names a folder";
    if (sdict__ends_with(name, INDEX_SUFFIX))
        return "names an index, not a shard";
    if (strlen(name) > 255)
        return "is longer than 255 bytes";
    return NULL;
}

/*==================================================================================================
 MARK: Index parsing
==================================================================================================*/

typedef struct hf_index {
    char *path;        /* the index file, as given */
    char *dir;         /* its folder */
    char *rdir;        /* realpath of the folder (malloc'ed by libc) */
    char *text;        /* the file's bytes */
    size_t text_len;
    json_t *json;      /* root object */
    json_t *weight_map;
    json_t *metadata;  /* object or NULL */
    json_t *shard_ids; /* shard name -> index in shards[] */
    size_t n_keys;
    const char **keys; /* weight_map keys in file order (borrowed from json) */
    size_t *key_shard; /* shard of each key */
    size_t n_shards;
    const char **shards; /* distinct shard names in first-seen order (borrowed) */
    size_t *shard_key;   /* first key naming each shard */
} hf_index;

static void index_free(hf_index *ix) {
    sdict__free(ix->path);
    sdict__free(ix->dir);
    free(ix->rdir);
    sdict__free(ix->text);
    json_decref(ix->json);
    json_decref(ix->shard_ids);
    sdict__free(ix->keys);
    sdict__free(ix->key_shard);
    sdict__free(ix->shards);
    sdict__free(ix->shard_key);
    memset(ix, 0, sizeof *ix);
}

/* Byte offset of a weight_map key in the index text: where its JSON string (as it is spelled
   when written without \u escapes) first appears after "weight_map"; -1 when not found. */
static int64_t key_offset(const hf_index *ix, const char *key) {
    json_t *s = json_string(key);
    char *q = s ? json_dumps(s, JSON_ENCODE_ANY) : NULL;
    json_decref(s);
    int64_t found = -1;
    if (q) {
        size_t k = strlen(q), start = 0;
        static const char wm[] = "\"weight_map\"";
        for (size_t i = 0; i + sizeof wm - 1 <= ix->text_len; i++)
            if (!memcmp(ix->text + i, wm, sizeof wm - 1)) {
                start = i + sizeof wm - 1;
                break;
            }
        for (size_t i = start; i + k <= ix->text_len; i++)
            if (!memcmp(ix->text + i, q, k)) {
                found = (int64_t)i;
                break;
            }
        free(q);
    }
    return found;
}

/* Reports a rule broken by weight_map entry `key`: file is the index, record the key. */
static sdict_status entry_err(sdict_error *err, const hf_index *ix, sdict_status code,
                              const char *key, const char *fmt, const char *a, const char *b) {
    char rec[160];
    snprintf(rec, sizeof rec, "weight_map[%s]", key);
    sdict__err(err, code, rec, key_offset(ix, key), fmt, a, b);
    sdict__err_file(err, ix->path);
    return code;
}

static sdict_status read_whole(const char *path, char **out, size_t *n, sdict_error *err) {
    *out = NULL;
    *n = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return sdict__err(err, SDICT_E_IO, NULL, -1, "open: %s", errtext(errno).s);
    struct stat sb;
    sdict_status st = SDICT_OK;
    if (fstat(fd, &sb) != 0) {
        st = sdict__err(err, SDICT_E_IO, NULL, -1, "fstat: %s", errtext(errno).s);
    } else if ((uint64_t)sb.st_size > HF_INDEX_MAX) {
        st = sdict__err(err, SDICT_E_LIMIT, NULL, -1,
                        "index of %lld bytes is larger than the limit of %zu bytes",
                        (long long)sb.st_size, HF_INDEX_MAX);
    } else {
        size_t cap = (size_t)sb.st_size, len = 0;
        char *buf = sdict__malloc(cap + 1);
        if (!buf)
            st = nomem(err);
        while (st == SDICT_OK && len < cap) {
            ssize_t k = read(fd, buf + len, cap - len);
            if (k < 0 && errno == EINTR)
                continue;
            if (k < 0) {
                st = sdict__err(err, SDICT_E_IO, NULL, (int64_t)len, "read: %s", errtext(errno).s);
                break;
            }
            if (k == 0)
                break;
            len += (size_t)k;
        }
        if (st == SDICT_OK) {
            buf[len] = '\0';
            *out = buf;
            *n = len;
        } else {
            sdict__free(buf);
        }
    }
    close(fd);
    return st;
}

/*
 Reads and checks an index: JSON object (UTF-8, no duplicate key anywhere), "weight_map" an
 object of str values, "metadata" absent, null or an object; every shard name plain and its
 file present inside the folder as a regular file. Fills ix (index_free it in every case).
*/
static sdict_status index_open(const char *path, hf_index *ix, sdict_error *err) {
    memset(ix, 0, sizeof *ix);
    sdict_status st;
    ix->path = sdict__strndup(path, strlen(path));
    ix->dir = dir_of(path);
    ix->shard_ids = json_object();
    if (!ix->path || !ix->dir || !ix->shard_ids) {
        st = nomem(err);
        goto fail;
    }
    if ((st = read_whole(path, &ix->text, &ix->text_len, err)))
        goto fail;
    size_t containers = sdict__json_containers((const uint8_t *)ix->text, ix->text_len);
    if (containers > SDICT_JSON_MAX_CONTAINERS(ix->text_len)) {
        st = sdict__err(err, SDICT_E_LIMIT, NULL, 0,
                        "the %zu-byte index holds %zu JSON objects and arrays, more than one per "
                        "8 bytes (an index has a few)", ix->text_len, containers);
        goto fail;
    }
    json_error_t je;
    ix->json = json_loadb(ix->text, ix->text_len, JSON_REJECT_DUPLICATES, &je);
    if (!ix->json) {
        st = sdict__err(err, SDICT_E_FORMAT, NULL, je.position,
                        "index is not valid JSON (line %d, column %d): %s", je.line, je.column,
                        je.text);
        goto fail;
    }
    if (!json_is_object(ix->json)) {
        st = sdict__err(err, SDICT_E_FORMAT, NULL, 0, "index is not a JSON object");
        goto fail;
    }
    ix->weight_map = json_object_get(ix->json, "weight_map");
    if (!json_is_object(ix->weight_map)) {
        st = sdict__err(err, SDICT_E_FORMAT, NULL, -1, "index has %s",
                        ix->weight_map ? "a \"weight_map\" that is not an object"
                                       : "no \"weight_map\"");
        goto fail;
    }
    ix->metadata = json_object_get(ix->json, "metadata");
    if (json_is_null(ix->metadata))
        ix->metadata = NULL;
    if (ix->metadata && !json_is_object(ix->metadata)) {
        st = sdict__err(err, SDICT_E_FORMAT, NULL, -1,
                        "index has a \"metadata\" that is not an object");
        goto fail;
    }
    ix->rdir = realpath(ix->dir, NULL);
    if (!ix->rdir) {
        st = sdict__err(err, SDICT_E_IO, NULL, -1, "realpath of the index's folder '%s': %s",
                        ix->dir, errtext(errno).s);
        goto fail;
    }
    size_t n = json_object_size(ix->weight_map);
    ix->keys = sdict__calloc(n ? n : 1, sizeof *ix->keys);
    ix->key_shard = sdict__calloc(n ? n : 1, sizeof *ix->key_shard);
    ix->shards = sdict__calloc(n ? n : 1, sizeof *ix->shards);
    ix->shard_key = sdict__calloc(n ? n : 1, sizeof *ix->shard_key);
    if (!ix->keys || !ix->key_shard || !ix->shards || !ix->shard_key) {
        st = nomem(err);
        goto fail;
    }
    const char *key;
    json_t *val;
    json_object_foreach(ix->weight_map, key, val) {
        if (!json_is_string(val))
            return entry_err(err, ix, SDICT_E_FORMAT, key,
                             "the shard of '%s' is not a JSON string%s", key, "");
        const char *name = json_string_value(val);
        if (strlen(name) != json_string_length(val))
            return entry_err(err, ix, SDICT_E_FORMAT, key,
                             "shard name of %s contains a NUL byte%s", key, "");
        json_t *id = json_object_get(ix->shard_ids, name);
        size_t s;
        if (id) {
            s = (size_t)json_integer_value(id);
        } else {
            const char *why = bad_shard_name(name);
            if (why)
                return entry_err(err, ix, SDICT_E_FORMAT, key,
                                 "shard name '%s' %s: a shard must be a plain file name inside "
                                 "the index's folder",
                                 name, why);
            s = ix->n_shards++;
            ix->shards[s] = name;
            ix->shard_key[s] = ix->n_keys;
            if (json_object_set_new(ix->shard_ids, name, json_integer((json_int_t)s))) {
                st = nomem(err);
                goto fail;
            }
        }
        ix->keys[ix->n_keys] = key;
        ix->key_shard[ix->n_keys++] = s;
    }
    file_id *ids = sdict__calloc(ix->n_shards ? ix->n_shards : 1, sizeof *ids);
    if (!ids) {
        st = nomem(err);
        goto fail;
    }
    for (size_t s = 0; s < ix->n_shards; s++) {
        char *p = sdict__path_join(ix->dir, ix->shards[s]);
        if (!p) {
            sdict__free(ids);
            st = nomem(err);
            goto fail;
        }
        struct stat sb;
        file_check fc = check_file_inside(ix->rdir, p, &sb);
        sdict__free(p);
        static const char *const why[] = {
            NULL, "shard '%s' is missing%s",
            "shard '%s' leaves the index's folder%s (a symbolic link pointing outside it)",
            "shard '%s' is not a regular file%s"};
        if (fc != FILE_OK) {
            sdict__free(ids);
            return entry_err(err, ix, fc == FILE_MISSING ? SDICT_E_NOT_FOUND : SDICT_E_FORMAT,
                             ix->keys[ix->shard_key[s]], why[fc], ix->shards[s], "");
        }
        ids[s] = (file_id){sb.st_dev, sb.st_ino, s};
    }
    /* Two shard names for one file (links) can never pass the shard rules (its tensors would
       be listed under one name only), and reading it once per name costs as much as the
       names: refused before any shard is read. */
    qsort(ids, ix->n_shards, sizeof *ids, file_id_cmp);
    for (size_t i = 1; i < ix->n_shards; i++) {
        if (ids[i].dev != ids[i - 1].dev || ids[i].ino != ids[i - 1].ino)
            continue;
        size_t a = ids[i - 1].shard < ids[i].shard ? ids[i - 1].shard : ids[i].shard;
        size_t b = ids[i - 1].shard ^ ids[i].shard ^ a;
        sdict__free(ids);
        return entry_err(err, ix, SDICT_E_FORMAT, ix->keys[ix->shard_key[b]],
                         "shard '%s' is the same file as shard '%s' (a symbolic or hard "
                         "link): an index names each file once",
                         ix->shards[b], ix->shards[a]);
    }
    sdict__free(ids);
    return SDICT_OK;
fail:
    sdict__err_file(err, path);
    return st;
}

/*==================================================================================================
 MARK: Loading
==================================================================================================*/

/* Copies a tensor value (and a quantizer's scale and zero-point tensors) into doc, retaining
   its storage. Tensors with Python attributes are refused: a model folder holds plain
   tensors. */
static sdict_status copy_tensor(sdict_doc *doc, const sdict_value *v, sdict_value **out,
                                sdict_error *err) {
    const sdict_tensor *t = sdict_value_tensor(v);
    if (sdict_tensor_attrs(v))
        return sdict__err(err, SDICT_E_UNSUPPORTED, NULL, -1,
                          "tensor carries Python attributes, which a model folder cannot hold");
    const sdict_quantizer *q = sdict_value_quantizer(v);
    if (!q)
        return sdict__tensor_value_new(doc, t, NULL, out, err);
    sdict_quantizer q2 = *q;
    sdict_status st = SDICT_OK;
    if (q->scales && (st = copy_tensor(doc, q->scales, &q2.scales, err)))
        return st;
    if (q->zero_points && (st = copy_tensor(doc, q->zero_points, &q2.zero_points, err)))
        return st;
    return sdict__tensor_value_new(doc, t, &q2, out, err);
}

/* Checks that a shard's root is a dict of str -> tensor; names the first offending key. */
static sdict_status check_shard_root(const sdict_value *root, const char *shard_path,
                                     sdict_error *err) {
    sdict_status st = SDICT_OK;
    if (sdict_value_kind(root) != SDICT_KIND_DICT) {
        st = sdict__err(err, SDICT_E_FORMAT, NULL, -1,
                        "shard is not a dict of tensors: its root is a %s",
                        sdict_kind_name(sdict_value_kind(root)));
    } else {
        for (size_t i = 0, n = sdict_dict_len(root); i < n && st == SDICT_OK; i++) {
            size_t klen;
            const char *k = sdict_str_get(sdict_dict_key(root, i), &klen);
            sdict_kind kind = sdict_value_kind(sdict_dict_val(root, i));
            if (!k || strlen(k) != klen)
                st = sdict__err(err, SDICT_E_FORMAT, NULL, -1,
                                "shard is not a dict of tensors: key %zu is not a str a "
                                "weight_map can name",
                                i);
            else if (kind != SDICT_KIND_TENSOR)
                st = sdict__err(err, SDICT_E_FORMAT, k, -1,
                                "shard is not a dict of tensors: '%s' is a %s", k,
                                sdict_kind_name(kind));
        }
    }
    if (st)
        sdict__err_file(err, shard_path);
    return st;
}

/* Loads shard s of ix into *out and checks it is a dict of tensors. */
static sdict_status load_shard(const hf_index *ix, size_t s, const sdict_load_opts *opts,
                               sdict_doc **out, sdict_error *err) {
    char *p = sdict__path_join(ix->dir, ix->shards[s]);
    if (!p) {
        sdict__err_file(err, ix->path);
        return nomem(err);
    }
    /* in a folder of many shards, those under 1 MiB are copied: one mapping per shard would
       let many tiny shards run into the process's limit on mappings (and cost a page each) */
    sdict_load_opts so;
    memset(&so, 0, sizeof so);
    if (opts)
        so = *opts;
    struct stat sb;
    if (ix->n_shards > 256 && stat(p, &sb) == 0 && sb.st_size < ((off_t)1 << 20))
        so.flags |= SDICT_LOAD_COPY;
    sdict_status st = sdict_load(p, &so, out, err);
    if (st == SDICT_OK)
        st = check_shard_root(sdict_doc_root(*out), p, err);
    sdict__free(p);
    return st;
}

/* The index rule for a tensor k found in shard s that the index maps elsewhere (or not at all):
   the error, told apart by whether the shard the index names holds k too (loaded, as
   shard t, into td, or NULL when not loaded yet). */
static sdict_status misplaced(const hf_index *ix, const char *k, size_t s, size_t t,
                              const sdict_doc *td, sdict_error *err) {
    if (t == SIZE_MAX) {
        sdict__err(err, SDICT_E_FORMAT, ix->shards[s], -1,
                   "tensor '%s' of shard '%s' is absent from the index's weight_map", k,
                   ix->shards[s]);
        sdict__err_file(err, ix->path);
        return SDICT_E_FORMAT;
    }
    if (td && sdict_dict_get(sdict_doc_root(td), k))
        return entry_err(err, ix, SDICT_E_FORMAT, k,
                         "tensor is in two shards: '%s' (as the index says) and '%s'",
                         ix->shards[t], ix->shards[s]);
    return entry_err(err, ix, SDICT_E_FORMAT, k,
                     "the index maps the tensor to shard '%s' but it is in shard '%s'",
                     ix->shards[t], ix->shards[s]);
}

/* The shard the index maps key k to, SIZE_MAX when k is not in the weight_map. */
static size_t shard_of(const hf_index *ix, const char *k) {
    json_t *id = json_object_get(ix->weight_map, k);
    if (!id)
        return SIZE_MAX;
    return (size_t)json_integer_value(json_object_get(ix->shard_ids, json_string_value(id)));
}

/* The index's metadata entries whose values are str, as a dict of doc (NULL when none). */
static sdict_status index_metadata(const hf_index *ix, sdict_doc *doc, sdict_value **out) {
    *out = NULL;
    if (!ix->metadata)
        return SDICT_OK;
    const char *key;
    json_t *val;
    sdict_value *md = NULL;
    json_object_foreach(ix->metadata, key, val) {
        if (!json_is_string(val))
            continue; /* total_size, total_parameters: numbers, not kept */
        if (!md && !(md = sdict_dict_new(doc, false)))
            return SDICT_E_NOMEM;
        sdict_value *k = sdict_str_new(doc, key, strlen(key));
        sdict_value *v = sdict_str_new(doc, json_string_value(val), json_string_length(val));
        if (!k || !v || sdict_dict_set(md, k, v))
            return SDICT_E_NOMEM;
    }
    *out = md;
    return SDICT_OK;
}

/* Loads the shards one at a time, each checked against the index (every tensor of a shard is
   listed, for that shard; every key the index maps to it is there) and freed once its tensors
   are copied into the result (they keep its storages), so memory holds one shard's document at
   a time, not one per shard. The result is in the index's key order. */
static sdict_status load_index(const char *path, const sdict_load_opts *opts, sdict_doc **out,
                               sdict_error *err) {
    hf_index ix;
    sdict_doc *doc = NULL, *sd = NULL;
    sdict_value **slot = NULL;
    size_t *order = NULL, *first = NULL;
    sdict_status st = index_open(path, &ix, err);
    if (st)
        goto done;
    slot = sdict__calloc(ix.n_keys ? ix.n_keys : 1, sizeof *slot);
    order = sdict__calloc(ix.n_keys ? ix.n_keys : 1, sizeof *order);
    first = sdict__calloc(ix.n_shards + 1, sizeof *first);
    if (!slot || !order || !first || (st = sdict_doc_new(&doc, err)))
        goto oom;
    /* the keys of each shard, in index order: order[first[s] .. first[s + 1]) */
    for (size_t i = 0; i < ix.n_keys; i++)
        first[ix.key_shard[i] + 1]++;
    for (size_t s = 0; s < ix.n_shards; s++)
        first[s + 1] += first[s];
    for (size_t i = 0, *fill = first; i < ix.n_keys; i++)
        order[fill[ix.key_shard[i]]++] = i;
    for (size_t s = ix.n_shards; s > 0; s--) /* fill moved each first[s] to first[s + 1] */
        first[s] = first[s - 1];
    first[0] = 0;
    bool big = false;
    for (size_t s = 0; s < ix.n_shards; s++) {
        if ((st = load_shard(&ix, s, opts, &sd, err)))
            goto done;
        big = big || sdict_doc_big_endian(sd);
        const sdict_value *sroot = sdict_doc_root(sd);
        size_t want = first[s + 1] - first[s];
        if (sdict_dict_len(sroot) != want || want == 0) {
            /* a tensor of the shard the index does not map to it: name the first */
            for (size_t i = 0, n = sdict_dict_len(sroot); i < n; i++) {
                const char *k = sdict_str_get(sdict_dict_key(sroot, i), NULL);
                size_t t = shard_of(&ix, k);
                if (t == s)
                    continue;
                sdict_doc *td = NULL; /* the shard named: loaded again to tell the cases apart */
                if (t != SIZE_MAX && load_shard(&ix, t, opts, &td, err) != SDICT_OK)
                    td = NULL;
                st = misplaced(&ix, k, s, t, td, err);
                sdict_doc_free(td);
                goto done;
            }
        }
        for (size_t j = first[s]; j < first[s + 1]; j++) {
            size_t i = order[j];
            const sdict_value *v = sdict_dict_get(sroot, ix.keys[i]);
            if (!v) {
                st = entry_err(err, &ix, SDICT_E_NOT_FOUND, ix.keys[i],
                               "tensor is missing from its shard '%s'%s", ix.shards[s], "");
                goto done;
            }
            if ((st = copy_tensor(doc, v, &slot[i], err))) {
                sdict__err_file(err, path);
                goto done;
            }
        }
        sdict_doc_free(sd);
        sd = NULL;
    }
    sdict_value *root = sdict_dict_new(doc, false), *md = NULL;
    if (!root || sdict_doc_set_root(doc, root) || index_metadata(&ix, doc, &md) ||
        (md && sdict_doc_set_metadata(doc, md)))
        goto oom;
    for (size_t i = 0; i < ix.n_keys; i++) {
        sdict_value *kv = sdict_str_new(doc, ix.keys[i], strlen(ix.keys[i]));
        if (!kv || sdict_dict_set(root, kv, slot[i]))
            goto oom;
    }
    sdict__doc_set_format(doc, SDICT_FORMAT_SHARDED, big);
    *out = doc;
    doc = NULL;
    goto done;
oom:
    st = nomem(err);
    sdict__err_file(err, path);
done:
    sdict_doc_free(sd);
    sdict__free(slot);
    sdict__free(order);
    sdict__free(first);
    sdict_doc_free(doc);
    index_free(&ix);
    return st;
}

/* The weights file of a folder, as transformers picks it (new memory in *out). */
static sdict_status folder_pick(const char *dir, char **out, sdict_error *err) {
    *out = NULL;
    char *rdir = realpath(dir, NULL);
    if (!rdir) {
        sdict__err_file(err, dir);
        return sdict__err(err, SDICT_E_IO, NULL, -1, "realpath: %s", errtext(errno).s);
    }
    sdict_status st = SDICT_OK;
    for (size_t i = 0; i < 4 && !*out && st == SDICT_OK; i++) {
        char *p = sdict__path_join(dir, FOLDER_FILES[i]);
        if (!p) {
            st = nomem(err);
            break;
        }
        file_check fc = check_file_inside(rdir, p, NULL);
        if (fc == FILE_OK) {
            *out = p;
        } else {
            if (fc == FILE_OUTSIDE)
                st = sdict__err(err, SDICT_E_FORMAT, FOLDER_FILES[i], -1,
                                "'%s' is a symbolic link leaving the folder", FOLDER_FILES[i]);
            sdict__free(p);
        }
    }
    free(rdir);
    if (st == SDICT_OK && !*out)
        st = sdict__err(err, SDICT_E_NOT_FOUND, NULL, -1,
                        "not a model folder (none of %s, %s, %s, %s is a file in it) and "
                        "not a distributed checkpoint (no .metadata or .distcp files)",
                        FOLDER_FILES[0], FOLDER_FILES[1], FOLDER_FILES[2], FOLDER_FILES[3]);
    if (st)
        sdict__err_file(err, dir);
    return st;
}

/* The file a claimed path stands for: a folder's weights file or index (folder_pick), else the
   index path itself; *file is freed by the caller. */
static sdict_status claimed_file(const char *path, char **file, sdict_error *err) {
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
        return folder_pick(path, file, err);
    if (!(*file = sdict__strndup(path, strlen(path)))) {
        sdict__err_file(err, path);
        return nomem(err);
    }
    return SDICT_OK;
}

sdict_status sdict__hf_load(const char *path, const sdict_load_opts *opts, sdict_doc **out,
                            sdict_error *err) {
    *out = NULL;
    char *file;
    sdict_status st = claimed_file(path, &file, err);
    if (st)
        return st;
    st = sdict__ends_with(file, INDEX_SUFFIX) ? load_index(file, opts, out, err)
                                       : sdict_load(file, opts, out, err);
    sdict__free(file);
    return st;
}

/*==================================================================================================
 MARK: Scan and verify
==================================================================================================*/

/* scan (fn != NULL or verify false) or verify every shard of the index at path, then the
   index's rules through a mapped load (only when no shard refers to a refused global: such a
   shard cannot be loaded, and the scan's report is what was asked for). */
static sdict_status check_index(const char *path, bool verify, const sdict_load_opts *opts,
                                void (*fn)(void *ctx, const sdict_scan_item *item), void *ctx,
                                size_t *unsafe_count, sdict_error *err) {
    hf_index ix;
    sdict_status st = index_open(path, &ix, err);
    size_t unsafe = 0;
    for (size_t s = 0; st == SDICT_OK && s < ix.n_shards; s++) {
        char *p = sdict__path_join(ix.dir, ix.shards[s]);
        if (!p) {
            st = nomem(err);
            sdict__err_file(err, path);
            break;
        }
        size_t u = 0;
        sdict__scan_relay relay = {fn, ctx, ix.shards[s]};
        st = verify ? sdict_verify(p, err) : sdict_scan(p, opts, sdict__scan_relay_item, &relay, &u, err);
        unsafe += u;
        sdict__free(p);
    }
    index_free(&ix);
    if (unsafe_count)
        *unsafe_count = unsafe;
    if (st == SDICT_OK && unsafe == 0) {
        sdict_doc *doc = NULL;
        st = load_index(path, opts, &doc, err);
        sdict_doc_free(doc);
    }
    return st;
}

static sdict_status hf_check(const char *path, bool verify, const sdict_load_opts *opts,
                             void (*fn)(void *ctx, const sdict_scan_item *item), void *ctx,
                             size_t *unsafe_count, sdict_error *err) {
    char *file;
    sdict_status st = claimed_file(path, &file, err);
    if (st)
        return st;
    if (sdict__ends_with(file, INDEX_SUFFIX))
        st = check_index(file, verify, opts, fn, ctx, unsafe_count, err);
    else
        st = verify ? sdict_verify(file, err) : sdict_scan(file, opts, fn, ctx, unsafe_count, err);
    sdict__free(file);
    return st;
}

sdict_status sdict__hf_scan(const char *path, const sdict_load_opts *opts,
                            void (*fn)(void *ctx, const sdict_scan_item *item), void *ctx,
                            size_t *unsafe_count, sdict_error *err) {
    if (unsafe_count)
        *unsafe_count = 0;
    return hf_check(path, false, opts, fn, ctx, unsafe_count, err);
}

sdict_status sdict__hf_verify(const char *path, sdict_error *err) {
    return hf_check(path, true, NULL, NULL, NULL, NULL, err);
}

/*==================================================================================================
 MARK: Writing
==================================================================================================*/

typedef struct entry {
    const char *key;
    const sdict_value *val;
    const sdict_tensor *t;
    size_t first;    /* first entry viewing the same storage (itself when none before) */
    size_t next;     /* index + 1 of the next entry of that storage (ascending), 0 for none */
    size_t shard;    /* shard index once assigned */
    bool dropped;    /* safetensors: an alias of a kept name */
} entry;

/* Byte range [start, stop) of a tensor in its storage, as safetensors' _end_ptr measures it:
   the start, and one element past the last element. */
static void tensor_area(const sdict_tensor *t, uint64_t *start, uint64_t *stop) {
    uint64_t es = sdict_dtype_size(t->dtype);
    uint64_t last = (uint64_t)t->storage_offset;
    bool empty = sdict_tensor_numel(t) == 0;
    for (int32_t d = 0; d < t->ndim && !empty; d++)
        last += (uint64_t)(t->shape[d] - 1) * (uint64_t)t->stride[d];
    *start = (uint64_t)t->storage_offset * es;
    *stop = empty ? *start : (last + 1) * es;
}

static bool tensor_complete(const sdict_tensor *t) {
    return t->storage && t->storage_offset == 0 &&
           sdict_tensor_nbytes(t) == sdict_storage_nbytes(t->storage);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

typedef struct area {
    uint64_t start, stop;
    const char *name;
    size_t idx;
} area;

static int cmp_area(const void *pa, const void *pb) {
    const area *a = pa, *b = pb;
    if (a->start != b->start)
        return a->start < b->start ? -1 : 1;
    if (a->stop != b->stop)
        return a->stop < b->stop ? -1 : 1;
    return strcmp(a->name, b->name);
}

typedef struct md_pair {
    const char *key, *val;
} md_pair;

typedef struct save_plan {
    entry *e;
    size_t n;
    md_pair *md; /* user metadata, then dropped -> kept */
    size_t n_md;
    size_t **shards; /* entry indices per shard, in huggingface_hub's order */
    size_t *shard_len;
    size_t n_shards;
    uint64_t total_size;
} save_plan;

static void plan_free(save_plan *p) {
    for (size_t s = 0; s < p->n_shards; s++)
        sdict__free(p->shards[s]);
    sdict__free(p->shards);
    sdict__free(p->shard_len);
    sdict__free(p->e);
    sdict__free(p->md);
    memset(p, 0, sizeof *p);
}

static bool md_has(const save_plan *p, const char *key) {
    for (size_t i = 0; i < p->n_md; i++)
        if (!strcmp(p->md[i].key, key))
            return true;
    return false;
}

static bool is_kept_name(const sdict_save_opts *opts, const char *name) {
    for (size_t i = 0; opts && opts->keep_names && i < opts->keep_names_count; i++)
        if (opts->keep_names[i] && !strcmp(opts->keep_names[i], name))
            return true;
    return false;
}

/*
 huggingface_hub's _remove_duplicate_names for safetensors output: tensors of one storage whose
 byte ranges overlap (sorted by start, as _filter_shared_not_shared walks them) form a group;
 the kept name is the first in sorted order among those covering their whole storage (among
 opts->keep_names first, as its preferred_names), the others are dropped and recorded as
 metadata dropped -> kept (unless the metadata already has that key). A group of two or more
 where no tensor covers the whole storage is refused, as huggingface_hub refuses it, unless
 SDICT_SAVE_ST_COPY_OVERLAPS (then every tensor is written as its own copy).
*/
static sdict_status drop_aliases(save_plan *p, const sdict_save_opts *opts, sdict_error *err) {
    area *a = sdict__calloc(p->n ? p->n : 1, sizeof *a);
    const char **names = sdict__calloc(p->n ? p->n : 1, sizeof *names);
    sdict_status st = SDICT_OK;
    if (!a || !names) {
        st = nomem(err);
        goto done;
    }
    for (size_t g = 0; g < p->n && st == SDICT_OK; g++) {
        if (p->e[g].first != g || !p->e[g].t->storage ||
            sdict_storage_nbytes(p->e[g].t->storage) == 0)
            continue;
        size_t na = 0;
        for (size_t i = g; ; i = p->e[i].next - 1) {
            tensor_area(p->e[i].t, &a[na].start, &a[na].stop);
            a[na].name = p->e[i].key;
            a[na++].idx = i;
            if (!p->e[i].next)
                break;
        }
        if (na < 2)
            continue;
        qsort(a, na, sizeof *a, cmp_area);
        for (size_t lo = 0; lo < na && st == SDICT_OK;) {
            size_t hi = lo + 1;
            uint64_t last_stop = a[lo].stop;
            while (hi < na && a[hi].start < last_stop)
                last_stop = a[hi++].stop;
            if (hi - lo >= 2) {
                const char *keep = NULL, *keep_pref = NULL;
                for (size_t i = lo; i < hi; i++)
                    if (tensor_complete(p->e[a[i].idx].t)) {
                        if (!keep || strcmp(a[i].name, keep) < 0)
                            keep = a[i].name;
                        if (is_kept_name(opts, a[i].name) &&
                            (!keep_pref || strcmp(a[i].name, keep_pref) < 0))
                            keep_pref = a[i].name;
                    }
                if (keep_pref)
                    keep = keep_pref;
                if (!keep && !(opts && (opts->st_flags & SDICT_SAVE_ST_COPY_OVERLAPS))) {
                    st = sdict__err(err, SDICT_E_INVALID_ARG, a[lo].name, -1,
                                    "tensors '%s' and '%s' share memory and none covers its "
                                    "whole storage (huggingface_hub refuses to save them; "
                                    "SDICT_SAVE_ST_COPY_OVERLAPS writes copies)",
                                    a[lo].name, a[lo + 1].name);
                    break;
                }
                size_t nn = 0;
                for (size_t i = lo; i < hi && keep; i++)
                    if (strcmp(a[i].name, keep))
                        names[nn++] = a[i].name;
                qsort(names, nn, sizeof *names, cmp_str);
                for (size_t i = 0; i < nn; i++) {
                    for (size_t j = lo; j < hi; j++)
                        if (a[j].name == names[i])
                            p->e[a[j].idx].dropped = true;
                    if (!md_has(p, names[i])) {
                        p->md[p->n_md].key = names[i];
                        p->md[p->n_md++].val = keep;
                    }
                    if (opts && opts->on_dropped)
                        opts->on_dropped(opts->ctx, names[i], keep);
                }
            }
            lo = hi;
        }
    }
done:
    sdict__free(a);
    sdict__free(names);
    return st;
}

static int cmp_storage_idx(const void *pa, const void *pb) {
    const entry *const *a = pa, *const *b = pb;
    uintptr_t x = (uintptr_t)(*a)->t->storage, y = (uintptr_t)(*b)->t->storage;
    if (x != y)
        return x < y ? -1 : 1;
    return *a < *b ? -1 : *a > *b;
}

/* Sets e[i].first: the first entry (in state_dict order) viewing the same storage, among the
   entries not dropped (called again after drop_aliases: a kept name may follow a dropped
   one). */
static sdict_status group_storages(save_plan *p, sdict_error *err) {
    entry **order = sdict__calloc(p->n ? p->n : 1, sizeof *order);
    if (!order)
        return nomem(err);
    size_t n = 0;
    for (size_t i = 0; i < p->n; i++) {
        p->e[i].first = i;
        p->e[i].next = 0;
        if (!p->e[i].dropped)
            order[n++] = &p->e[i];
    }
    qsort(order, n, sizeof *order, cmp_storage_idx);
    for (size_t i = 1; i < n; i++)
        if (order[i]->t->storage && order[i]->t->storage == order[i - 1]->t->storage) {
            order[i]->first = order[i - 1]->first;
            order[i - 1]->next = (size_t)(order[i] - p->e) + 1;
        }
    sdict__free(order);
    return SDICT_OK;
}

static sdict_status shard_push(save_plan *p, size_t *idx, size_t len, sdict_error *err) {
    size_t **s = sdict__realloc(p->shards, (p->n_shards + 1) * sizeof *s);
    if (!s)
        return nomem(err);
    p->shards = s;
    size_t *l = sdict__realloc(p->shard_len, (p->n_shards + 1) * sizeof *l);
    if (!l)
        return nomem(err);
    p->shard_len = l;
    p->shards[p->n_shards] = idx;
    p->shard_len[p->n_shards++] = len;
    for (size_t i = 0; i < len; i++)
        p->e[idx[i]].shard = p->n_shards - 1;
    return SDICT_OK;
}

/*
 huggingface_hub's split_state_dict_into_shards_factory: walks the tensors in order; a tensor
 sharing a storage with an earlier one is set aside (it joins that one's shard at the end, its
 storage counted once); a tensor's size is its storage's size in bytes (untyped_storage().nbytes());
 one larger than max gets a shard of its own, appended at once; one that would tip the current
 shard over max closes it first. total_size sums the sizes counted.
*/
static sdict_status split(save_plan *p, uint64_t max, sdict_error *err) {
    size_t *cur = sdict__calloc(p->n ? p->n : 1, sizeof *cur), ncur = 0;
    uint64_t cur_size = 0;
    sdict_status st = SDICT_OK;
    if (!cur)
        return nomem(err);
    for (size_t i = 0; i < p->n && st == SDICT_OK; i++) {
        const entry *e = &p->e[i];
        if (e->dropped || e->first != i)
            continue;
        uint64_t size = e->t->storage ? sdict_storage_nbytes(e->t->storage)
                                      : sdict_tensor_nbytes(e->t);
        if (size > max) {
            p->total_size += size;
            size_t *one = sdict__calloc(1 + p->n, sizeof *one);
            if (!one) {
                st = nomem(err);
                break;
            }
            one[0] = i;
            if ((st = shard_push(p, one, 1, err)))
                sdict__free(one);
            continue;
        }
        if (cur_size + size > max) {
            if ((st = shard_push(p, cur, ncur, err)))
                break;
            cur = sdict__calloc(p->n, sizeof *cur);
            ncur = 0;
            cur_size = 0;
            if (!cur) {
                st = nomem(err);
                break;
            }
        }
        cur[ncur++] = i;
        cur_size += size;
        p->total_size += size;
    }
    if (st == SDICT_OK && ncur > 0) {
        st = shard_push(p, cur, ncur, err);
        cur = st ? cur : NULL;
    }
    sdict__free(cur);
    if (st)
        return st;
    /* tensors of a storage already placed join their first tensor's shard, group by group in
       order of first appearance; every shard array has room for all entries */
    for (size_t g = 0; g < p->n; g++) {
        if (p->e[g].dropped || p->e[g].first != g)
            continue;
        size_t s = p->e[g].shard;
        for (size_t i = p->e[g].next; i; i = p->e[i - 1].next) {
            p->shards[s][p->shard_len[s]++] = i - 1;
            p->e[i - 1].shard = s;
        }
    }
    return SDICT_OK;
}

/* Python's json.dumps(s) with ensure_ascii (the default): ASCII only. */
static void json_py_string(sdict__buf *b, const char *s) {
    sdict__buf_byte(b, '"');
    const uint8_t *p = (const uint8_t *)s;
    while (*p) {
        uint32_t c = *p, len = 1;
        if (c >= 0xF0 && p[1] && p[2] && p[3]) {
            c = ((c & 7u) << 18) | ((p[1] & 63u) << 12) | ((p[2] & 63u) << 6) | (p[3] & 63u);
            len = 4;
        } else if (c >= 0xE0 && p[1] && p[2]) {
            c = ((c & 15u) << 12) | ((p[1] & 63u) << 6) | (p[2] & 63u);
            len = 3;
        } else if (c >= 0xC0 && p[1]) {
            c = ((c & 31u) << 6) | (p[1] & 63u);
            len = 2;
        }
        char tmp[16];
        if (c == '"' || c == '\\') {
            sdict__buf_byte(b, '\\');
            sdict__buf_byte(b, (uint8_t)c);
        } else if (c == '\n' || c == '\r' || c == '\t' || c == '\b' || c == '\f') {
            sdict__buf_byte(b, '\\');
            sdict__buf_byte(b, c == '\n' ? 'n' : c == '\r' ? 'r' : c == '\t' ? 't'
                                                : c == '\b' ? 'b' : 'f');
        } else if (c < 0x20 || c > 0x7F) {
            if (c >= 0x10000) {
                uint32_t v = c - 0x10000;
                snprintf(tmp, sizeof tmp, "\\u%04x\\u%04x", 0xD800 + (v >> 10),
                         0xDC00 + (v & 0x3FF));
            } else {
                snprintf(tmp, sizeof tmp, "\\u%04x", c);
            }
            sdict__buf_append(b, tmp, strlen(tmp));
        } else {
            sdict__buf_byte(b, (uint8_t)c);
        }
        p += len;
    }
    sdict__buf_byte(b, '"');
}

/* The index text exactly as huggingface_hub's save_torch_state_dict writes it:
   json.dump({"metadata": {"total_size": N, **metadata}, "weight_map": ...}, f, indent=2),
   no newline at the end. */
static void index_text(const save_plan *p, char *const *names, sdict__buf *b) {
    char num[32];
    static const char head[] = "{\n  \"metadata\": {\n    \"total_size\": ";
    sdict__buf_append(b, head, sizeof head - 1);
    snprintf(num, sizeof num, "%llu", (unsigned long long)p->total_size);
    sdict__buf_append(b, num, strlen(num));
    for (size_t i = 0; i < p->n_md; i++) {
        sdict__buf_append(b, ",\n    ", 6);
        json_py_string(b, p->md[i].key);
        sdict__buf_append(b, ": ", 2);
        json_py_string(b, p->md[i].val);
    }
    static const char mid[] = "\n  },\n  \"weight_map\": {";
    sdict__buf_append(b, mid, sizeof mid - 1);
    bool first = true;
    for (size_t s = 0; s < p->n_shards; s++)
        for (size_t i = 0; i < p->shard_len[s]; i++) {
            sdict__buf_append(b, first ? "\n    " : ",\n    ", first ? 5 : 6);
            first = false;
            json_py_string(b, p->e[p->shards[s][i]].key);
            sdict__buf_append(b, ": ", 2);
            json_py_string(b, names[s]);
        }
    sdict__buf_append(b, first ? "}\n}" : "\n  }\n}", first ? 3 : 6);
}

/* A folder's files are replaced, never written through a symbolic link: in a Hugging Face
   cache a snapshot's files are links into blobs/ that other snapshots share (sdict_save alone
   writes through links, as torch.save does). */
static sdict_status refuse_link(const char *path, sdict_error *err) {
    struct stat sb;
    if (lstat(path, &sb) != 0 || !S_ISLNK(sb.st_mode))
        return SDICT_OK;
    sdict__err_file(err, path);
    return sdict__err(err, SDICT_E_IO, NULL, -1,
                      "is a symbolic link: a model folder's files are replaced, not written "
                      "through links (which may point into files other folders share); remove "
                      "the link or write elsewhere");
}

/* The hidden name dir/.NAME.sdict-new a folder's file is written under until the save's other
   files are written too (no loader looks at it; sdict_save_folder removes an old one). */
static char *staging_path(const char *dir, const char *name) {
    size_t n = strlen(name);
    char *hidden = sdict__malloc(n + 13);
    if (!hidden)
        return NULL;
    snprintf(hidden, n + 13, ".%s.sdict-new", name);
    char *p = sdict__path_join(dir, hidden);
    sdict__free(hidden);
    return p;
}

/* Writes one file of the folder at path (its staging name; sdict_save_folder checked the
   targets for links first): the entries idx[0..len) as a dict, through sdict_save. */
static sdict_status write_shard(const char *path, const save_plan *p, const size_t *idx,
                                size_t len, bool st_format, bool single,
                                const sdict_save_opts *opts, sdict_error *err) {
    sdict_doc *doc = NULL;
    sdict_status st = sdict_doc_new(&doc, err);
    if (st)
        return st;
    sdict_value *root = sdict_dict_new(doc, false);
    if (!root || sdict_doc_set_root(doc, root))
        goto oom;
    for (size_t i = 0; i < len; i++) {
        const entry *e = &p->e[idx[i]];
        sdict_value *k = sdict_str_new(doc, e->key, strlen(e->key)), *v;
        if (!k)
            goto oom;
        if ((st = copy_tensor(doc, e->val, &v, err)))
            goto done;
        if (sdict_dict_set(root, k, v))
            goto oom;
    }
    sdict_save_opts so;
    memset(&so, 0, sizeof so);
    if (opts)
        so.flags = opts->flags;
    if (st_format) {
        /* per-file metadata: {"format": "pt"}, updated with the metadata when not sharded */
        sdict_value *md = sdict_dict_new(doc, false);
        sdict_value *f = sdict_str_new(doc, "pt", 2);
        if (!md || !f || sdict_dict_set_str(md, "format", f))
            goto oom;
        for (size_t i = 0; single && i < p->n_md; i++) {
            sdict_value *v = sdict_str_new(doc, p->md[i].val, strlen(p->md[i].val));
            if (!v || sdict_dict_set_str(md, p->md[i].key, v))
                goto oom;
        }
        so.format = SDICT_FORMAT_SAFETENSORS;
        so.metadata = md;
        so.st_flags = opts ? opts->st_flags & SDICT_SAVE_ST_COPY_OVERLAPS : 0;
    }
    st = sdict_save(path, root, &so, err);
    goto done;
oom:
    st = nomem(err);
done:
    sdict_doc_free(doc);
    return st;
}

/* Whether name is one of the file names a save with this prefix and extension writes:
   PREFIX.EXT, PREFIX-ddddd-of-ddddd.EXT or PREFIX.EXT.index.json (huggingface_hub's pattern
   "PREFIX{suffix}.EXT" with suffix (-\d{5}-of-\d{5})? and an optional ".index.json"). */
static bool our_pattern(const char *name, const char *prefix, const char *ext) {
    size_t np = strlen(prefix), ne = strlen(ext);
    if (strncmp(name, prefix, np))
        return false;
    const char *r = name + np;
    if (r[0] == '-') {
        for (int i = 1; i <= 14; i++) {
            bool digit = i != 6 && i != 7 && i != 8 && i != 9;
            if (digit ? (r[i] < '0' || r[i] > '9') : r[i] != "-of-"[i - 6])
                return false;
        }
        r += 15;
    }
    if (strncmp(r, ext, ne))
        return false;
    r += ne;
    return !*r || !strcmp(r, INDEX_SUFFIX);
}

/* Removes files of the pattern left by an earlier save that this one did not write (keep:
   the names written, or about to be). Errors other than a vanished file are reported. */
static sdict_status remove_stale(const char *dir, const char *prefix, const char *ext,
                                 char *const *keep, size_t n_keep, sdict_error *err) {
    DIR *d = opendir(dir);
    if (!d)
        return sdict__err(err, SDICT_E_IO, NULL, -1, "opendir: %s", errtext(errno).s);
    sdict_status st = SDICT_OK;
    struct dirent *de;
    while (st == SDICT_OK && (de = readdir(d))) {
        if (!our_pattern(de->d_name, prefix, ext))
            continue;
        bool kept = false;
        for (size_t i = 0; i < n_keep && !kept; i++)
            kept = !strcmp(keep[i], de->d_name);
        if (kept)
            continue;
        char *p = sdict__path_join(dir, de->d_name);
        struct stat sb;
        if (!p)
            st = nomem(err);
        else if (lstat(p, &sb) == 0 && (S_ISREG(sb.st_mode) || S_ISLNK(sb.st_mode)) &&
                 unlink(p) != 0 && errno != ENOENT)
            st = sdict__err(err, SDICT_E_IO, de->d_name, -1, "remove stale '%s': %s",
                            de->d_name, errtext(errno).s);
        sdict__free(p);
    }
    closedir(d);
    return st;
}

/* Collects the entries and the metadata pairs of a save (user metadata first). */
static sdict_status plan_entries(save_plan *p, const sdict_value *root,
                                 const sdict_save_opts *opts, sdict_error *err) {
    size_t n = sdict_dict_len(root);
    const sdict_value *md = opts && opts->metadata ? opts->metadata
                                                  : sdict_doc_metadata(sdict__value_doc(root));
    size_t n_md = sdict_dict_len(md);
    p->e = sdict__calloc(n ? n : 1, sizeof *p->e);
    p->md = sdict__calloc(n + n_md + 1, sizeof *p->md);
    if (!p->e || !p->md)
        return nomem(err);
    for (size_t i = 0; i < n_md; i++) {
        size_t kl, vl;
        const char *k = sdict_str_get(sdict_dict_key(md, i), &kl);
        const char *v = sdict_str_get(sdict_dict_val(md, i), &vl);
        if (!k || !v || strlen(k) != kl || strlen(v) != vl)
            return sdict__err(err, SDICT_E_INVALID_ARG, k ? k : "", -1,
                              "metadata entry %zu is not str -> str (without NUL bytes)", i);
        p->md[p->n_md].key = k;
        p->md[p->n_md++].val = v;
    }
    for (size_t i = 0; i < n; i++) {
        size_t kl;
        const char *k = sdict_str_get(sdict_dict_key(root, i), &kl);
        const sdict_value *v = sdict_dict_val(root, i);
        if (!k || strlen(k) != kl)
            return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1,
                              "key %zu is not a str a weight_map can name", i);
        if (sdict_value_kind(v) != SDICT_KIND_TENSOR) {
            if (opts && (opts->st_flags & SDICT_SAVE_ST_DROP_NON_TENSORS))
                continue;
            return sdict__err(err, SDICT_E_UNSUPPORTED, k, -1,
                              "'%s' is a %s: a model folder holds tensors only", k,
                              sdict_kind_name(sdict_value_kind(v)));
        }
        if (sdict_tensor_attrs(v))
            return sdict__err(err, SDICT_E_UNSUPPORTED, k, -1,
                              "'%s' carries Python attributes, which a model folder cannot hold",
                              k);
        p->e[p->n].key = k;
        p->e[p->n].val = v;
        p->e[p->n++].t = sdict_value_tensor(v);
    }
    return SDICT_OK;
}

SDICT_API sdict_status sdict_save_folder(const char *dir, const sdict_value *root,
                                         const sdict_save_opts *opts, sdict_error *err) {
    if (!dir || !root || !dir[0]) {
        sdict__err_file(err, dir ? dir : "");
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "NULL or empty %s",
                          root ? "dir" : "root");
    }
    sdict_format fmt = opts ? opts->format : SDICT_FORMAT_NONE;
    if (fmt != SDICT_FORMAT_NONE && fmt != SDICT_FORMAT_ZIP && fmt != SDICT_FORMAT_SAFETENSORS) {
        sdict__err_file(err, dir);
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1,
                          "a model folder holds safetensors or torch zip files, not '%s'",
                          sdict_format_name(fmt));
    }
    if (sdict_value_kind(root) != SDICT_KIND_DICT) {
        sdict__err_file(err, dir);
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1,
                          "a model folder is written from a dict of tensors, not a %s",
                          sdict_kind_name(sdict_value_kind(root)));
    }
    bool st_format = fmt == SDICT_FORMAT_SAFETENSORS;
    const char *prefix = st_format ? "model" : "pytorch_model";
    const char *ext = st_format ? ".safetensors" : ".bin";
    uint64_t max = opts && opts->max_shard_size ? opts->max_shard_size : UINT64_MAX;

    save_plan p;
    memset(&p, 0, sizeof p);
    char **names = NULL, *path = NULL;
    size_t n_names = 0;
    sdict__buf text;
    sdict__buf_init(&text);
    sdict_status st = plan_entries(&p, root, opts, err);
    if (st == SDICT_OK)
        st = group_storages(&p, err);
    if (st == SDICT_OK && st_format && (st = drop_aliases(&p, opts, err)) == SDICT_OK)
        st = group_storages(&p, err);
    if (st == SDICT_OK)
        st = split(&p, max, err);
    if (st)
        goto done;

    struct stat sb;
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        st = sdict__err(err, SDICT_E_IO, NULL, -1, "mkdir: %s", errtext(errno).s);
        goto done;
    }
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        st = sdict__err(err, SDICT_E_IO, NULL, -1, "exists and is not a folder");
        goto done;
    }
    bool single = p.n_shards <= 1;
    size_t n_files = single ? 1 : p.n_shards;
    names = sdict__calloc(n_files + 1, sizeof *names);
    if (!names) {
        st = nomem(err);
        goto done;
    }
    for (size_t s = 0; s < n_files; s++) {
        char name[64];
        if (single)
            snprintf(name, sizeof name, "%s%s", prefix, ext);
        else
            snprintf(name, sizeof name, "%s-%05zu-of-%05zu%s", prefix, s + 1, p.n_shards, ext);
        if (!(names[s] = sdict__strndup(name, strlen(name)))) {
            st = nomem(err);
            goto done;
        }
        n_names++;
    }
    if (!single) {
        char index_name[64];
        snprintf(index_name, sizeof index_name, "%s%s%s", prefix, ext, INDEX_SUFFIX);
        if (!(names[n_names] = sdict__strndup(index_name, strlen(index_name)))) {
            st = nomem(err);
            goto done;
        }
        n_names++;
    }
    /* every target is checked before anything is written */
    for (size_t s = 0; s < n_names; s++) {
        if (!(path = sdict__path_join(dir, names[s]))) {
            st = nomem(err);
            goto done;
        }
        if ((st = refuse_link(path, err)))
            goto done_named;
        sdict__free(path);
        path = NULL;
    }
    /* the files are written under staging names and renamed into place only when all are
       there: a save that fails part-way (a full disk, an I/O error) leaves the folder's old
       files as they were */
    size_t staged = 0;
    for (; staged < n_files; staged++) {
        char *sp = staging_path(dir, names[staged]);
        if (!sp || !(path = sdict__path_join(dir, names[staged]))) {
            sdict__free(sp);
            st = nomem(err);
            break;
        }
        static const size_t none[1] = {0};
        if (unlink(sp) != 0 && errno != ENOENT)
            st = sdict__err(err, SDICT_E_IO, NULL, -1, "remove an old staging file: %s",
                            errtext(errno).s);
        else
            st = write_shard(sp, &p, p.n_shards ? p.shards[staged] : none,
                             p.n_shards ? p.shard_len[staged] : 0, st_format, single, opts, err);
        sdict__free(sp);
        if (st) {
            sdict__err_file(err, path);
            break;
        }
        sdict__free(path);
        path = NULL;
    }
    for (size_t s = 0; s < n_files && (st == SDICT_OK || s < staged); s++) {
        char *sp = staging_path(dir, names[s]), *fp = sp ? sdict__path_join(dir, names[s]) : NULL;
        if (!fp) {
            st = st ? st : nomem(err);
        } else if (st) {
            unlink(sp); /* a failed save: its staged files go */
        } else if (rename(sp, fp) != 0) {
            st = sdict__err(err, SDICT_E_IO, NULL, -1, "rename into place: %s", errtext(errno).s);
            sdict__err_file(err, fp);
            staged = n_files; /* the files not yet renamed are removed */
        }
        sdict__free(sp);
        sdict__free(fp);
    }
    if (st) {
        if (!err || !err->file[0])
            sdict__err_file(err, dir);
        goto out;
    }
    /* stale files first (an old single file would be read before the new index), the index
       last: until it is renamed into place, the folder's old index (if any) stays whole */
    if ((st = remove_stale(dir, prefix, ext, names, n_names, err)))
        goto done;
    if (!single) {
        index_text(&p, names, &text);
        if ((st = sdict__buf_status(&text, err)))
            goto done;
        if (!(path = sdict__path_join(dir, names[n_names - 1]))) {
            st = nomem(err);
            goto done;
        }
        if ((st = sdict__save_bytes(path, text.data, text.len, err)))
            goto done_named;
    }
    goto done;
done_named:
    sdict__err_file(err, path);
    goto out;
done:
    if (st)
        sdict__err_file(err, dir);
out:
    sdict__free(path);
    for (size_t i = 0; i < n_names; i++)
        sdict__free(names[i]);
    sdict__free(names);
    sdict__buf_free(&text);
    plan_free(&p);
    return st;
}
