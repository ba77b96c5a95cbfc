/*
 internal.h - private interfaces between libstatedict's subsystems. Not API: nothing here is
 exported (the library builds with -fvisibility=hidden; only SDICT_API symbols are visible).

 Subsystems, one file each, each using only those listed before it:
   alloc.c       allocator hook, growable byte buffer
   error.c       status strings, error filling and formatting
   dtype.c       dtype table (names, sizes, storage classes)
   storage.c     reference-counted storages, file mappings, the read-at-offset input source
   tensor.c      tensor checks, contiguous copies and dtype conversion
   value.c       documents, values, dict hashing, big ints, dotted paths
   composite.c   quantized, sparse and nested tensors: checks of their parts
   module_state.c Module.state_dict() over inert objects; tensors of an object by attribute path;
                 Optimizer.state_dict() over a pickled optimizer
   script.c      TorchScript archives as data: code/ class declarations, ScriptModule state_dict
   zip_read.c    zip/ZIP64 central directory reader, record reads (stored, deflate via libdeflate)
   zip_write.c   zip writer reproducing PyTorch's miniz layout (FB padding, ZIP64 end records)
   pickle_read.c the pickle machine: protocols 0-5, allow-listed globals, torch rebuild functions
   pickle_write.c protocol-2 pickler with CPython's memo and batching rules
   load.c        the torch formats (zip/legacy/tar, TorchScript refused): storages, scan, verify
   safetensors_read.c  the safetensors reader: header rules of the Rust core, mapped tensors
   format.c      sdict_load/_buffer/scan/verify: format detection from the content, dispatch
   save.c        sdict_save: storage collection, record order, crash-safe file replacement
   dcp_read.c    torch.distributed.checkpoint folders (.metadata + .distcp items) read as one doc
   dcp_write.c   sdict_save_dcp: one process's DCP folder as torch 2.14 lays it out
*/
#ifndef SDICT_INTERNAL_H
#define SDICT_INTERNAL_H

#include "statedict.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*==================================================================================================
 alloc.c
==================================================================================================*/

/** Allocation through the current sdict_allocator. malloc/realloc of 0 bytes return a valid
    unique pointer (never NULL on success). */
void *sdict__malloc(size_t n);
void *sdict__calloc(size_t count, size_t size); /* overflow-checked */
void *sdict__realloc(void *p, size_t n);
void sdict__free(void *p);
char *sdict__strndup(const char *s, size_t n); /* NUL-terminated copy */
/** "dir/name" in new memory (no doubled '/'), NULL on out-of-memory. */
char *sdict__path_join(const char *dir, const char *name);
/** True when s ends with suffix. */
bool sdict__ends_with(const char *s, const char *suffix);
/** The process's random hash seed (never 0), drawn once from getrandom(): every hash table
    over file-chosen keys mixes it in, so a file cannot force collisions. */
uint64_t sdict__hash_seed(void);
/** Seeded FNV-1a of the NUL-terminated string s, its high bits folded into the low ones (hash
    tables index by the low bits): for tables keyed by names a file chooses. */
uint64_t sdict__str_hash(const char *s);
/** True while no custom allocator is installed (large storages may then use mmap directly). */
bool sdict__allocator_is_default(void);

/** Overflow-checked size arithmetic: return false on overflow. */
static inline bool sdict__add_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_add_overflow(a, b, out);
}
static inline bool sdict__mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
static inline bool sdict__add_i64(int64_t a, int64_t b, int64_t *out) {
    return !__builtin_add_overflow(a, b, out);
}
static inline bool sdict__mul_i64(int64_t a, int64_t b, int64_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}

/** Little-endian loads/stores (memcpy-based, alignment-free). */
static inline uint16_t sdict__le16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t sdict__le32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t sdict__le64(const uint8_t *p) {
    return (uint64_t)sdict__le32(p) | ((uint64_t)sdict__le32(p + 4) << 32);
}

/** Growable byte buffer. On allocation failure `oom` becomes true and further appends are
    ignored, so a writer checks once at the end (sdict__buf_status). */
typedef struct sdict__buf {
    uint8_t *data;
    size_t len;
    size_t cap;
    bool oom;
} sdict__buf;

void sdict__buf_init(sdict__buf *b);
void sdict__buf_free(sdict__buf *b);
void sdict__buf_append(sdict__buf *b, const void *p, size_t n);
void sdict__buf_byte(sdict__buf *b, uint8_t c);
void sdict__buf_le16(sdict__buf *b, uint16_t v);
void sdict__buf_le32(sdict__buf *b, uint32_t v);
void sdict__buf_le64(sdict__buf *b, uint64_t v);
/** SDICT_OK, or SDICT_E_NOMEM (filling err) if any append failed. */
sdict_status sdict__buf_status(const sdict__buf *b, sdict_error *err);

/*==================================================================================================
 error.c
==================================================================================================*/

/**
 Fills err (if not NULL) with code, record (NULL -> ""), offset and a printf-style message,
 and returns code, so failure sites are one line:
     return sdict__err(err, SDICT_E_TRUNCATED, rec, off, "BINUNICODE length %u past end", n);
 err->file is left as it was; the public entry points set it (sdict__err_file).
*/
sdict_status sdict__err(sdict_error *err, sdict_status code, const char *record, int64_t offset,
                        const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/** Sets err->file (truncating) if err is not NULL. */
void sdict__err_file(sdict_error *err, const char *file);

/* Python's pickle decodes BINUNICODE with 'utf-8' and 'surrogatepass': well-formed UTF-8
   (no overlong forms, nothing past U+10FFFF, no truncated sequence), where the three-byte
   forms of surrogates (ED A0..BF 80..BF) are allowed too. Returns the offset of the first byte
   that breaks it, or len when Python reads the text back. */
size_t sdict__utf8_invalid_at(const uint8_t *s, size_t len);

/*==================================================================================================
 dtype.c
==================================================================================================*/

/** Maps a legacy storage class name ("FloatStorage", any module) to its dtype.
    Returns false when the name is not a known typed storage class. */
bool sdict__dtype_from_storage_class(const char *name, sdict_dtype *out);

/*==================================================================================================
 storage.c : storages, mappings, input sources
==================================================================================================*/

/** A read-only-file mapping shared by the storages that point into it; unmapped when the last
    reference goes. Mapped PROT_READ|PROT_WRITE, MAP_PRIVATE (copy-on-write, like torch). */
typedef struct sdict__mapping sdict__mapping;
sdict__mapping *sdict__mapping_retain(sdict__mapping *m);
void sdict__mapping_release(sdict__mapping *m);

/**
 Where a load reads from: a mapped file (data != NULL, mapping != NULL), a file read with
 pread (fd >= 0, data NULL: copy mode), or caller memory (data != NULL, mapping NULL, fd -1).
*/
typedef struct sdict__source {
    const char *name;        /* for messages; borrowed */
    int fd;
    const uint8_t *data;
    uint64_t size;
    /* the file mapping data lies in, or NULL; data may start inside it (a source over one item
       of a mapped DCP file, which then maps its storages in place); not owned by such a
       sub-source */
    sdict__mapping *mapping;
} sdict__source;

/** Opens path; map=true maps the whole file (empty files are not mapped). SDICT_E_IO. */
sdict_status sdict__source_open_file(sdict__source *src, const char *path, bool map,
                                     sdict_error *err);
void sdict__source_init_mem(sdict__source *src, const void *data, size_t size, const char *name);
/** Closes the fd and drops the source's mapping reference (storages keep theirs). */
void sdict__source_close(sdict__source *src);
/** Reads n bytes at off into dst; SDICT_E_TRUNCATED (naming record/offset) past the end,
    SDICT_E_IO on read errors. record is used for the message only. */
sdict_status sdict__source_read(const sdict__source *src, uint64_t off, void *dst, size_t n,
                                const char *record, sdict_error *err);

/** A storage viewing nbytes at byte offset off of the mapping (retains it). SDICT_E_NOMEM. */
sdict_status sdict__storage_new_mapped(sdict__mapping *m, uint64_t off, size_t nbytes,
                                       sdict_storage **out, sdict_error *err);
/** Sets the location tag reported by sdict_storage_location (len bytes of tag, copied; NULL
    or "cpu" clears it). SDICT_E_NOMEM. */
sdict_status sdict__storage_set_location(sdict_storage *s, const char *tag, size_t len,
                                         sdict_error *err);
/** Sets the key reported by sdict_storage_key (copied). SDICT_E_NOMEM. */
sdict_status sdict__storage_set_key(sdict_storage *s, const char *key, sdict_error *err);
/** Base address of a mapping (for computing offsets of mapped storages). */
const uint8_t *sdict__mapping_base(const sdict__mapping *m);

/*==================================================================================================
 tensor.c
==================================================================================================*/

/** Reverses the byte order of every element of n elements of elem_size bytes (2, 4, 8; complex
    types swap each half: pass the component size and twice the count). */
void sdict__byteswap(void *data, size_t n_elems, size_t elem_size);
/** The float16 bits nearest to d (ties to even; NaN keeps its sign, as torch rounds). */
uint16_t sdict__half_from_double(double d);

/*==================================================================================================
 value.c : documents and values
==================================================================================================*/

/** Value kind of a storage inside a pickle (the persistent_load result): consumed by the
    rebuild functions, or left in the tree as a bare storage (SDICT_KIND_STORAGE). */
#define SDICT__KIND_STORAGE SDICT_KIND_STORAGE

/** A storage value: holds a reference to s (released with the doc) and the dtype it was
    declared with (the storage class of the persistent id; SDICT_UINT8 for UntypedStorage). */
sdict_value *sdict__storage_value_new(sdict_doc *doc, sdict_storage *s, sdict_dtype dtype);
/** Storage and dtype of a storage value; NULL for other kinds. */
sdict_storage *sdict__storage_value_get(const sdict_value *v, sdict_dtype *dtype);

/** An int from little-endian two's complement bytes (pickle LONG1/LONG4), any length. */
sdict_value *sdict__int_from_le_bytes(sdict_doc *doc, const uint8_t *p, size_t n);
/** Two's complement little-endian bytes of an int value, minimal length as CPython's
    LONG1 encoding (0 -> 0 bytes). Pointer borrowed or written into buf (16 bytes) for int64. */
const uint8_t *sdict__int_le_bytes(const sdict_value *v, uint8_t buf[16], size_t *n);

/** A tensor value (t checked as by sdict_tensor_new) carrying a copy of quantizer q (NULL for
    a plain tensor); q is trusted (sdict_qtensor_new checks it). */
sdict_status sdict__tensor_value_new(sdict_doc *doc, const sdict_tensor *t,
                                     const sdict_quantizer *q, sdict_value **out,
                                     sdict_error *err);
/** Sparse / nested values holding a copy of a description already checked (composite.c);
    NULL on out-of-memory. */
sdict_value *sdict__sparse_value_new(sdict_doc *doc, const sdict_sparse *s);
sdict_value *sdict__nested_value_new(sdict_doc *doc, const sdict_nested *n);
/** sdict_sparse_new / sdict_nested_new, checking the index values (which need the storages'
    bytes) only when check_values; sdict__composite_check_values checks them later (OK for
    other values). composite.c. */
sdict_status sdict__sparse_new(sdict_doc *doc, const sdict_sparse *s, bool check_values,
                               sdict_value **out, sdict_error *err);
sdict_status sdict__nested_new(sdict_doc *doc, const sdict_nested *n, bool check_values,
                               sdict_value **out, sdict_error *err);
sdict_status sdict__composite_check_values(const sdict_value *v, sdict_error *err);
/** The doc that owns v, NULL for NULL. */
sdict_doc *sdict__value_doc(const sdict_value *v);

/** Load bookkeeping kept on the doc. */
void sdict__doc_set_format(sdict_doc *doc, sdict_format f, bool big_endian);
/** A TorchScript archive's side data (a dict: "constants" -> constants.pkl's value, "classes"
    -> script.c's class table), or NULL for every other doc. */
sdict_value *sdict__doc_script(const sdict_doc *doc);
void sdict__doc_set_script(sdict_doc *doc, sdict_value *info);

/*==================================================================================================
 script.c
==================================================================================================*/

/** Reads the class declarations of one code record (text[0, n), the source of TorchScript module
    `module`, mlen bytes: "__torch__.torch.nn.modules.linear") into classes, a dict qualified
    class name -> class dict. SDICT_E_FORMAT (malformed declaration, a class or attribute
    defined twice; naming record and byte offset), SDICT_E_NOMEM. Linear in n. */
sdict_status sdict__script_code(sdict_doc *doc, sdict_value *classes, const char *module,
                                size_t mlen, const char *text, size_t n, const char *record,
                                sdict_error *err);
/** After every code record: lists, per module class, the slots state_dict() visits.
    SDICT_E_FORMAT when __parameters__ or __buffers__ names no attribute of the class. */
sdict_status sdict__script_finish(sdict_doc *doc, sdict_value *classes, sdict_error *err);

/** Number of values created in the doc so far (for the max_values limit). */
uint64_t sdict__doc_value_count(const sdict_doc *doc);

/** The numpy dtype of a numpy scalar or array value (byte order '<' '>' '|', kind 'f' 'i' 'u'
    'b' 'c', element size) and whether it was pickled through numpy._core (numpy >= 2) rather
    than numpy.core; false for other values. */
bool sdict__value_numpy(const sdict_value *v, char *order, char *kind, uint8_t *size,
                        bool *underscore_core);
/** Marks v as a numpy scalar or array (t) of the given numpy dtype. */
void sdict__value_set_numpy(sdict_value *v, sdict_pytype t, char order, char kind, uint8_t size,
                            bool underscore_core);

/** Marks v as possibly referenced from more than one place (the unpickler does it for every
    value it stores in or fetches from the memo, and on DUP); values never marked are reachable
    exactly once, so a walk needs to remember only marked ones. */
void sdict__value_mark_shared(sdict_value *v);
bool sdict__value_maybe_shared(const sdict_value *v);
/** The unpickler's mark on values it keeps a tag for (pickle_read.c's side table): a value
    without it has no tag, so most values are told apart without a hash lookup. */
void sdict__value_mark_tagged(sdict_value *v);
bool sdict__value_maybe_tagged(const sdict_value *v);

/** Freezes a list/tuple/set value being built by the unpickler into a tuple (TUPLE opcodes
    build a list then retag it). Only for values not yet shared. */
void sdict__value_retag(sdict_value *v, sdict_kind kind);

/*==================================================================================================
 zip_read.c
==================================================================================================*/

typedef struct sdict__zip_entry {
    const char *name;        /* full name including the archive folder, NUL-terminated */
    uint64_t header_offset;  /* local header */
    uint64_t data_offset;    /* first payload byte, from the local header's name/extra lengths */
    uint64_t comp_size;      /* from the central directory (ZIP64-aware) */
    uint64_t size;
    uint32_t crc32;
    uint16_t method;         /* 0 stored, 8 deflate; others refused when read */
    uint16_t flags;
} sdict__zip_entry;

typedef struct sdict__zip sdict__zip;

/**
 Parses the end records (classic EOCD, ZIP64 locator and record) and the whole central
 directory, then each local header to find data offsets. Checks: every structure inside the
 file, counts consistent, payloads inside the file and not overlapping each other or the
 central directory, no encryption, single disk, entries <= limits->max_records, names without
 NUL. The archive folder is what precedes the first '/' of the first entry; entries outside
 it are refused (SDICT_E_ZIP_CORRUPT), as torch 2.x does. Ambiguous archives, which torch's
 miniz or another zip reader could read as other records, are refused with SDICT_E_ZIP_CORRUPT
 "ambiguous zip: ...": a second end-record candidate, classic and ZIP64 end records that
 disagree, names equal but for ASCII case (or exactly), local headers or data descriptors that
 disagree with the central directory, and bytes before, between or after the records that no
 central entry covers (the records must tile [0, central directory)). Errors name the structure and its
 byte offset in the file: SDICT_E_ZIP_CORRUPT, _ZIP_UNSUPPORTED, _TRUNCATED, _LIMIT, _NOMEM, _IO.
*/
sdict_status sdict__zip_open(const sdict__source *src, const sdict_limits *limits,
                             sdict__zip **out, sdict_error *err);
void sdict__zip_close(sdict__zip *z);
/** Archive folder including its trailing '/' ("lenet/"). */
const char *sdict__zip_prefix(const sdict__zip *z);
size_t sdict__zip_count(const sdict__zip *z);
const sdict__zip_entry *sdict__zip_entry_at(const sdict__zip *z, size_t i);
/** Entry named prefix + relname ("data.pkl", "data/0"), NULL if absent. O(1) average. */
const sdict__zip_entry *sdict__zip_find(const sdict__zip *z, const char *relname);
/**
 Reads the uncompressed payload of e into dst (dst_size must be >= e->size), inflating
 method 8 with libdeflate (bounded by e->size and limits->max_inflate), verifying the CRC-32
 when verify_crc and the CRC field is not 0 (the loader, which knows whether the archive was
 written without CRCs, passes false and checks them itself). Errors: SDICT_E_CRC, _ZIP_CORRUPT (inflate failed or size differs),
 _ZIP_UNSUPPORTED (other methods), _TRUNCATED, _IO, _INVALID_ARG.
*/
sdict_status sdict__zip_read(const sdict__zip *z, const sdict__zip_entry *e, void *dst,
                             size_t dst_size, bool verify_crc, sdict_error *err);
/** CRC-32 (zlib polynomial) continuing from crc (0 to start), via libdeflate. */
uint32_t sdict__crc32(uint32_t crc, const void *p, size_t n);

/*==================================================================================================
 zip_write.c
==================================================================================================*/

/** Sequential sink for the writer: writes all n bytes or fails (filling err). */
typedef sdict_status (*sdict__write_fn)(void *ctx, const void *p, size_t n, sdict_error *err);

typedef struct sdict__zip_writer sdict__zip_writer;

/** Starts an archive whose records live under archive_name + "/". SDICT_E_NOMEM. */
sdict_status sdict__zip_writer_new(sdict__write_fn write, void *ctx, const char *archive_name,
                                   sdict__zip_writer **out, sdict_error *err);
/**
 Appends record archive_name/relname with n bytes from data, stored, exactly as PyTorch's
 miniz writer does: local header (flags 0x0808, or 0x0800 with no data descriptor when n is
 0), ZIP64 extra when needed, the FB extra padding the payload to a 64-byte file offset, the
 payload (CRC-32 computed in the same pass), then a 16- or 24-byte data descriptor.
*/
sdict_status sdict__zip_writer_add(sdict__zip_writer *w, const char *relname, const void *data,
                                   uint64_t n, sdict_error *err);
/**
 The 40 digits torch >= 2.1 writes as `.data/serialization_id` for the records added so far
 (PyTorchStreamWriter::writeSerializationId): the fold of libstdc++'s std::hash of each
 relative record name in std::unordered_set iteration order, then the fold of the CRC-32s of
 the data descriptors written, each as 20 zero-padded decimal digits, NUL-terminated.
 Record names must be distinct. SDICT_E_NOMEM.
*/
sdict_status sdict__zip_writer_serialization_id(const sdict__zip_writer *w, char out[41],
                                                sdict_error *err);
/** Writes the central directory, ZIP64 end record, ZIP64 locator and classic EOCD. */
sdict_status sdict__zip_writer_finish(sdict__zip_writer *w, sdict_error *err);
void sdict__zip_writer_free(sdict__zip_writer *w);

/** Inert objects (value.c). A class reference module.name (copied into the doc), how
    SDICT_OBJECT_CLASS; NULL on out of memory. */
sdict_value *sdict__object_new(sdict_doc *doc, const char *module, size_t ml, const char *name,
                               size_t nl, sdict_object_call how);
/** An object made by calling callee (a class reference or an object of doc) with args (a
    tuple) and kwargs (dict or NULL); NULL on out of memory or a callee of another kind. */
sdict_value *sdict__object_call(sdict_doc *doc, sdict_value *callee, sdict_object_call how,
                                sdict_value *args, sdict_value *kwargs);
/** Sets the BUILD state of an object; false when v is a class reference or has one already. */
bool sdict__object_set_state(sdict_value *v, sdict_value *state);
/** Sets the item list of an object made by a call (once); false otherwise. */
bool sdict__object_set_items(sdict_value *v, sdict_value *items);

/*==================================================================================================
 pickle_read.c
==================================================================================================*/

/** What the machine reports for each global it meets (for sdict_scan). */
typedef void (*sdict__global_fn)(void *ctx, const char *module, const char *name, bool allowed,
                                 int64_t offset);

typedef struct sdict__unpickler {
    sdict_doc *doc;               /* values are created here */
    const uint8_t *data;          /* the pickle bytes (may contain more after STOP) */
    size_t size;
    const char *record;           /* for errors: "lenet/data.pkl" */
    const sdict_limits *limits;   /* defaults filled in by the caller */
    /* Resolves a BINPERSID/PERSID id (a tuple or str value) into a value, normally a storage
       value (sdict__storage_value_new). offset is the opcode's position. */
    sdict_status (*persistent_load)(void *ctx, sdict_value *pid, int64_t offset, sdict_value **out,
                                    sdict_error *err);
    void *ctx;
    /* Optional: called for every GLOBAL/STACK_GLOBAL/INST. With scan=true refused globals become
       inert placeholders and the machine keeps going; calling one is still an error. */
    sdict__global_fn on_global;
    bool scan;
    /* Sparse and nested tensors whose index values cannot be checked yet (legacy files: the
       storage bytes follow the pickle) are appended here, for the caller to check with
       sdict__composite_check_values and free (sdict__free). NULL when not deferring (with
       defer false the checks run at once; in scan mode they never run: no bytes are read). */
    bool defer_checks;
    struct sdict__deferred {
        sdict_value *v;
        int64_t offset;           /* the opcode that made it, for messages */
    } *deferred;
    size_t n_deferred, cap_deferred;
    size_t consumed;              /* out: bytes used, through STOP */
    /* out: set when the machine stopped on a refusal of its own (a limit, a stricter rule)
       where CPython's unpickler would not stop, so Python may read on past that opcode */
    bool python_may_continue;
    /* Header pickles torch reads with a plain pickle.load (the legacy stream's magic number,
       protocol, sys_info and key list; a tar's item counts): every global is refused, even
       allow-listed ones and in scan mode. */
    bool literals_only;
    /* SDICT_LOAD_INERT: refused globals are class references (objects), calls and BUILDs on
       them make inert objects. */
    bool inert;
} sdict__unpickler;

/**
 Runs the pickle machine over u->data until STOP and returns the result in *out (owned by
 u->doc). Never imports or calls anything outside the allow-list. Errors give the opcode's
 byte offset in the record: SDICT_E_TRUNCATED, _PICKLE_OPCODE, _PICKLE_STACK,
 _PICKLE_UNSAFE_GLOBAL ("module.name"), _PICKLE_TYPE, _STORAGE, _SHAPE, _DTYPE, _LIMIT, _NOMEM.
*/
sdict_status sdict__unpickle(sdict__unpickler *u, sdict_value **out, sdict_error *err);

/*==================================================================================================
 pickle_write.c
==================================================================================================*/

/** A distinct storage met while pickling, in first-seen order; key is its index. */
typedef struct sdict__saved_storage {
    sdict_storage *storage;  /* borrowed from the tree */
    sdict_dtype dtype;       /* dtype it is saved as */
    uint64_t nbytes;
} sdict__saved_storage;

/**
 Pickles root with protocol 2 as torch.save does (persistent ids for storages), appending to
 out. flags are sdict_save_opts.flags. *storages receives a new array (free with sdict__free)
 of the distinct storages in key order and *n_storages its length. Errors: SDICT_E_INVALID_ARG
 (storage seen with two dtypes, unpicklable value, cycle), SDICT_E_UNSUPPORTED (a value
 torch's weights-only unpickler refuses, without SDICT_SAVE_ALLOW_NOT_WEIGHTS_ONLY),
 SDICT_E_LIMIT (depth), SDICT_E_NOMEM.
*/
sdict_status sdict__pickle_write(const sdict_value *root, uint32_t flags, sdict__buf *out,
                                 sdict__saved_storage **storages, size_t *n_storages,
                                 sdict_error *err);

/*==================================================================================================
 format layer: format.c (detection, public entry points), load.c (torch), safetensors_read.c
==================================================================================================*/

/** What format.c's sniffing found the input to be (torch kinds go to load.c). */
typedef enum sdict__input {
    SDICT__IN_ZIP,         /* "PK\3\4": torch >= 1.6 zip (or another zip, named by load.c) */
    SDICT__IN_TAR,         /* a header Python's tarfile accepts: torch < 0.4 */
    SDICT__IN_LEGACY,      /* anything else: the magic-number pickle stream (or not torch) */
    SDICT__IN_SAFETENSORS  /* u64 header length, then '{' */
} sdict__input;

/** What a read is for: a load (doc out), a scan (globals reported, no payload read) or a
    verify (every check, CRCs of every record, no doc kept). A bytes load is a load of a zip
    archive whose stored records are mapped in place at any offset, aligned for their dtype or
    not: for a caller that only copies the tensors' bytes (a DCP chunk into its tensor). */
typedef enum sdict__read_mode {
    SDICT__READ_LOAD,
    SDICT__READ_SCAN,
    SDICT__READ_VERIFY,
    SDICT__READ_LOAD_BYTES
} sdict__read_mode;

/* Passes scan items on to fn with the record prefixed: "PREFIX:RECORD" (a folder's readers
   name the shard or the DCP item a record came from). load.c. */
typedef struct sdict__scan_relay {
    void (*fn)(void *ctx, const sdict_scan_item *item);
    void *ctx;
    const char *prefix;
} sdict__scan_relay;
void sdict__scan_relay_item(void *ctx, const sdict_scan_item *item);

typedef struct sdict__read_job {
    sdict__read_mode mode;
    void (*fn)(void *ctx, const sdict_scan_item *item); /* scan: each global met */
    void *ctx;
    size_t *unsafe_count;                                /* scan: refused globals (may be NULL) */
    /* scan, optional: set when the last pickle run failed where Python's unpickler would read
       on (sdict__unpickler.python_may_continue) */
    bool *python_may_continue;
} sdict__read_job;

/** TarInfo.frombuf's verdict on the 512-byte block h (not all zeros): true when Python's
    tarfile takes it as a member header, else false with *why saying why not. load.c. */
bool sdict__tar_header_ok(const uint8_t h[512], const char **why);

/** Reads a torch file of the given kind from src (load.c). out NULL for scan/verify; err->file
    is left to the caller. Errors: those of sdict_load. */
sdict_status sdict__torch_read(sdict__source *src, sdict__input kind, const sdict_load_opts *opts,
                               const sdict__read_job *job, sdict_doc **out, sdict_error *err);

/** True when the first bytes h[0, n) of the input look like a safetensors file: byte 8 (after
    JSON whitespace) is '{' (or '[', a header the rules then refuse as not an object). The header length is not checked here, so that a file with a bad
    length is refused by the safetensors rules, naming them. safetensors_read.c. */
bool sdict__st_sniff(const uint8_t *h, size_t n);

/** Number of JSON objects and arrays ('{', '[' outside strings) in p[0, n): the readers that
    parse JSON with jansson refuse text holding more than SDICT_JSON_MAX_CONTAINERS(n), which
    bounds jansson's memory (~200 bytes per container) to a small multiple of the text.
    safetensors_read.c. */
size_t sdict__json_containers(const uint8_t *p, size_t n);
#define SDICT_JSON_MAX_CONTAINERS(n) ((n) / 8 + 64)

/** Reads a safetensors file from src (safetensors_read.c): every rule of the Rust core's
    read_metadata/validate; on LOAD a doc whose root is a dict str -> tensor in data-offset
    order and whose metadata is `__metadata__`; tensors mapped from src's mapping when aligned
    for their dtype and SDICT_LOAD_COPY is not set, else copied. SCAN and VERIFY check the
    header only (no payload bytes are read; the file's size is what the rules need). */
sdict_status sdict__st_read(sdict__source *src, const sdict_load_opts *opts,
                            const sdict__read_job *job, sdict_doc **out, sdict_error *err);

/*==================================================================================================
 safetensors_write.c / hf_folder.c
==================================================================================================*/

/** Serializes root (see sdict_save, SDICT_FORMAT_SAFETENSORS) as a safetensors file, streamed
    to write/ctx. safetensors_write.c. */
sdict_status sdict__st_write(const sdict_value *root, const sdict_save_opts *opts,
                             sdict__write_fn write, void *ctx, sdict_error *err);

/** True when path is a folder or a `*.index.json` file that sdict__hf_load reads (a Hugging
    Face model folder or shard index). hf_folder.c. */
bool sdict__hf_claims(const char *path);
/** Loads the folder or index at path as one doc (SDICT_FORMAT_SHARDED, or the format of a
    folder's single weights file). hf_folder.c. */
sdict_status sdict__hf_load(const char *path, const sdict_load_opts *opts, sdict_doc **out,
                            sdict_error *err);
/** sdict_scan and sdict_verify of a folder or index: every shard, then the index's own rules. */
sdict_status sdict__hf_scan(const char *path, const sdict_load_opts *opts,
                            void (*fn)(void *ctx, const sdict_scan_item *item), void *ctx,
                            size_t *unsafe_count, sdict_error *err);
sdict_status sdict__hf_verify(const char *path, sdict_error *err);

/** True when path is a folder holding `.metadata`, or `.distcp` files without it (an unfinished
    save, which sdict__dcp_load refuses): a torch.distributed.checkpoint folder. dcp_read.c. */
bool sdict__dcp_claims(const char *path);
/** Loads a DCP folder as one doc (SDICT_FORMAT_DCP): the state dict dcp_to_torch_save writes.
    Errors name the file (.metadata or the .distcp file) in err->file. dcp_read.c. */
sdict_status sdict__dcp_load(const char *path, const sdict_load_opts *opts, sdict_doc **out,
                             sdict_error *err);
/** sdict_scan of a DCP folder: the globals of .metadata, then of every item. */
sdict_status sdict__dcp_scan(const char *path, const sdict_load_opts *opts,
                             void (*fn)(void *ctx, const sdict_scan_item *item), void *ctx,
                             size_t *unsafe_count, sdict_error *err);
/** sdict_verify of a DCP folder: a copying load with every item's CRCs checked (and the chunk
    tiling, which every load checks). */
sdict_status sdict__dcp_verify(const char *path, sdict_error *err);
/** Parses and checks .metadata bytes as a load does (allow-list, every field, chunk geometry,
    planner_data nesting), reading no item: the fuzz target's entry. dcp_read.c. */
sdict_status sdict__dcp_metadata_check(const uint8_t *data, size_t size, sdict_error *err);

/** Writes n bytes at data as the file at path, crash-safely and through symbolic links exactly
    as sdict_save writes a checkpoint (temporary file, fsync, rename, directory fsync). The
    index of a model folder is written with it. save.c. */
sdict_status sdict__save_bytes(const char *path, const void *data, size_t n, sdict_error *err);
/** Produces a file's bytes through write(wctx, ...) (buffered; large writes go straight out). */
typedef sdict_status (*sdict__produce_fn)(void *pctx, sdict__write_fn write, void *wctx,
                                          sdict_error *err);
/** As sdict__save_bytes, with the bytes streamed by produce instead of held in memory (a DCP
    rank's file). save.c. */
sdict_status sdict__save_stream(const char *path, sdict__produce_fn produce, void *pctx,
                                sdict_error *err);
/** The torch.save zip archive of root (as sdict_save_buffer makes it) written through write.
    save.c. */
sdict_status sdict__write_archive(const sdict_value *root, const char *archive_name,
                                  const sdict_save_opts *opts, sdict__write_fn write, void *ctx,
                                  sdict_error *err);

#endif /* SDICT_INTERNAL_H */
