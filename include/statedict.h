/*
 statedict.h - read and write PyTorch checkpoints (torch.save / torch.load files) from C.

 libstatedict reads every file torch.save has written (zip format since 1.6, the legacy
 magic-number stream of 0.4-1.5, the oldest tar layout), hands the caller its object tree
 (dicts, lists, numbers, strings, tensors) and writes trees back as files that
 torch.load(path, weights_only=True) accepts. Its pickle machine never runs code: it interprets
 an allow-list of globals and refuses everything else with an error naming the global.

 Conventions used by every function in this header
 - Shapes are outermost dimension first, exactly as torch.Size; strides and storage_offset are
   in ELEMENTS, exactly as Tensor.stride() / Tensor.storage_offset(). Byte counts say "bytes".
 - Every fallible function returns sdict_status; results come back through out-parameters,
   which are set to NULL/0 on failure. Detail goes to an optional caller-owned sdict_error
   (last argument, may be NULL). The library never prints, exits or aborts on input.
 - Ownership: an sdict_doc owns every sdict_value created in it or loaded into it; values are
   borrowed and live until sdict_doc_free(). Storages are reference-counted and may outlive
   the doc that loaded them (retain them). Destructors accept NULL.
 - Thread safety: no global state except the allocator hook (sdict_set_allocator); distinct
   docs may be used from distinct threads; one doc is not safe to mutate from two threads.

 Layers (each depends only on those above it): container (zip) -> pickle -> tensor/value ->
 checkpoint (load/save). The nn and optim layers live in statedict_nn.h / statedict_optim.h.
*/
#ifndef STATEDICT_H
#define STATEDICT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define SDICT_API
#elif defined(__GNUC__) && __GNUC__ >= 4
#define SDICT_API __attribute__((visibility("default")))
#else
#define SDICT_API
#endif

#define SDICT_VERSION_MAJOR 0
#define SDICT_VERSION_MINOR 1
#define SDICT_VERSION_PATCH 0
/** Version as 0xMMmmpp, for comparing header and library (see sdict_version()). */
#define SDICT_VERSION_HEX ((SDICT_VERSION_MAJOR << 16) | (SDICT_VERSION_MINOR << 8) | SDICT_VERSION_PATCH)

/** Library version as SDICT_VERSION_HEX of the build that produced the library. */
SDICT_API uint32_t sdict_version(void);

/*==================================================================================================
 MARK: Status and errors
==================================================================================================*/

/** Result of every fallible call. SDICT_OK is 0; everything else is a failure. */
typedef enum sdict_status {
    SDICT_OK = 0,
    SDICT_E_NOMEM,               /**< an allocation failed */
    SDICT_E_IO,                  /**< open/read/write/fsync/rename failed (errno in message) */
    SDICT_E_INVALID_ARG,         /**< API misuse: NULL handle, wrong value kind, bad dimension */
    SDICT_E_NOT_FOUND,           /**< key, record or path not present */
    SDICT_E_TRUNCATED,           /**< input ends before a structure it declares */
    SDICT_E_FORMAT,              /**< not a PyTorch file (unknown magic; the message names known
                                      other types), a TorchScript archive, or ambiguous: torch
                                      would read another structure from the same bytes */
    SDICT_E_ZIP_CORRUPT,         /**< zip structures inconsistent (EOCD, ZIP64, headers, overlap) */
    SDICT_E_ZIP_UNSUPPORTED,     /**< valid zip feature we do not read (encryption, multi-disk) */
    SDICT_E_CRC,                 /**< CRC-32 of a record differs from the central directory */
    SDICT_E_PICKLE_OPCODE,       /**< unknown or malformed pickle opcode */
    SDICT_E_PICKLE_STACK,        /**< stack underflow, missing MARK, bad memo reference */
    SDICT_E_PICKLE_UNSAFE_GLOBAL,/**< GLOBAL/STACK_GLOBAL/INST names something not allow-listed */
    SDICT_E_PICKLE_TYPE,         /**< allowed callable got arguments of the wrong kind */
    SDICT_E_STORAGE,             /**< storage missing, wrong size, or tensor extent outside it */
    SDICT_E_LIMIT,               /**< a resource limit (depth, memo, length, count) was exceeded */
    SDICT_E_DTYPE,               /**< unknown dtype, or a dtype the operation cannot handle */
    SDICT_E_SHAPE,               /**< shape/stride invalid (negative, overflow) or mismatched */
    SDICT_E_VERSION,             /**< unsupported format version record */
    SDICT_E_UNSUPPORTED,         /**< valid PyTorch content statedict does not handle */
    SDICT_STATUS_COUNT
} sdict_status;

/** Static English name of a status ("SDICT_E_CRC: CRC mismatch"). Never NULL, never freed. */
SDICT_API const char *sdict_status_str(sdict_status status);

/**
 Caller-owned error detail, filled on failure by any function that takes one (yyjson's model).
 Nothing in it is allocated; it may live on the stack. On success it is left untouched.
 - code:    the status that was returned.
 - file:    the path given to the call ("" for memory input).
 - record:  the archive record being read ("lenet/data.pkl", "lenet/data/3"), or for legacy
            files a section name ("legacy:pickle"), "" when not within a record.
 - offset:  byte offset of the failure within that record (within the file when record is
            ""), or -1 when no position applies.
 - message: what was expected versus what was found, NUL-terminated, truncated to fit.
*/
typedef struct sdict_error {
    sdict_status code;
    int64_t offset;
    char file[256];
    char record[160];
    char message[320];
} sdict_error;

/**
 Renders an error as "FILE: RECORD @ OFFSET: MESSAGE" (parts that are empty or -1 omitted) into
 buf, which receives at most n bytes including the NUL. Returns buf. err may not be NULL.
 Each part is escaped with sdict_escape_text (flags 0): keys and names quoted from a file in a
 message cannot put control characters or terminal escape sequences on a terminal or in a log.
*/
SDICT_API char *sdict_error_format(const sdict_error *err, char *buf, size_t n);

/** Flags of sdict_escape_text. */
enum {
    /** Keep newline and tab bytes as they are (text made of lines, such as a whole report). */
    SDICT_ESCAPE_KEEP_LAYOUT = 1u << 0,
};

/**
 Escapes text that came from a file (a key, a str, a global's name) so that printing it cannot
 move the cursor, change colours, set a window title or otherwise drive a terminal. Valid UTF-8
 is kept, apart from: C0 control characters and DEL, written "\n", "\t", "\r" or "\xNN" as
 Python's repr writes them (newline and tab are kept as they are with SDICT_ESCAPE_KEEP_LAYOUT);
 C1 control characters (U+0080..U+009F, the UTF-8 bytes C2 80..C2 9F) written "\xNN" with the
 code point; lone surrogates in the three-byte form Python's 'surrogatepass' writes (ED A0 80
 .. ED BF BF) written "\udNNN" as repr writes them; the other code points Python 3.11's repr
 escapes as unprintable, apart from unassigned ones (Unicode 14's format characters such as
 zero-width and bidirectional controls, separators other than the space such as U+00A0 and
 U+2028, private-use characters), written "\xNN", "\uNNNN" or "\UNNNNNNNN" as repr writes
 them; every byte that does not start a valid sequence (stray continuation bytes, overlong
 forms, code points past U+10FFFF, a truncated sequence) written "\xNN". Backslashes are not
 doubled.
 s need not be NUL-terminated (n bytes; embedded NULs become "\x00"). out receives at most cap
 bytes including the NUL, cut only between escapes; out may be NULL when cap is 0. Returns the
 length the whole escaped text needs (without the NUL), at most 4 * n: compare with cap to
 detect truncation, as with snprintf. No errors; allocates nothing.
*/
SDICT_API size_t sdict_escape_text(const char *s, size_t n, uint32_t flags, char *out, size_t cap);

/*==================================================================================================
 MARK: Allocator
==================================================================================================*/

/**
 Memory hooks used for every allocation the library makes (values, storages, buffers).
 Semantics are those of malloc/realloc/free; ctx is passed through.
*/
typedef struct sdict_allocator {
    void *(*malloc)(void *ctx, size_t size);
    void *(*realloc)(void *ctx, void *ptr, size_t size);
    void (*free)(void *ctx, void *ptr);
    void *ctx;
} sdict_allocator;

/**
 Replaces the process-wide allocator (NULL restores libc). Call it before creating any object:
 objects free their memory through the allocator that was current when they were made, so
 switching while objects live is an error. Not thread-safe. Used by the tests to fail the Nth
 allocation and drive every out-of-memory path.
*/
SDICT_API void sdict_set_allocator(const sdict_allocator *alc);

/*==================================================================================================
 MARK: dtypes
==================================================================================================*/

/**
 Element types, named as torch spells them (torch.float32 -> SDICT_FLOAT32): every dtype torch
 2.14 has. Values are stable; new dtypes are appended.
 - float4_e2m1fn_x2 packs two 4-bit floats into each one-byte element (shapes count bytes, as
   in torch); bits8/16, bits1x8/2x4/4x2 are torch's untyped bit containers; uint1..uint7 and
   int1..int7 are torch's placeholder dtypes (one byte per element; torch 2.14 cannot save
   tensors of them, but dtype objects of them appear in files).
 - qint8, quint8, qint32, quint4x2, quint2x4 are the quantized dtypes: elements are the integer
   representation (torch's int_repr()); see sdict_quantizer for scale and zero point.
   quint4x2 and quint2x4 pack 2 and 4 elements into each byte (sdict_dtype_bits 4 and 2).
 - float4_e2m1fn, float6_e2m3fn and float6_e3m2fn are the sub-byte floats of safetensors
   (F4, F6_E2M3, F6_E3M2; named as ml_dtypes spells them), which torch has no dtype for:
   sdict_dtype_bits 4, 6 and 6, sdict_dtype_size 1, elements packed back to back from the
   first byte (a tensor of n elements holds ceil(n * bits / 8) bytes). Their elements are not
   converted to numbers (sdict_tensor_copy_to copies their bytes only), and sdict_save to a
   torch file refuses them with SDICT_E_DTYPE naming the tensor. A safetensors F4 tensor whose
   last dimension is even loads as float4_e2m1fn_x2 with that dimension halved (what
   safetensors' torch binding gives); only other F4 shapes load as float4_e2m1fn.
*/
typedef enum sdict_dtype {
    SDICT_FLOAT64 = 0,
    SDICT_FLOAT32,
    SDICT_FLOAT16,
    SDICT_BFLOAT16,
    SDICT_COMPLEX128,
    SDICT_COMPLEX64,
    SDICT_COMPLEX32,
    SDICT_INT64,
    SDICT_INT32,
    SDICT_INT16,
    SDICT_INT8,
    SDICT_UINT8,
    SDICT_UINT16,
    SDICT_UINT32,
    SDICT_UINT64,
    SDICT_BOOL,
    SDICT_FLOAT8_E4M3FN,
    SDICT_FLOAT8_E5M2,
    SDICT_FLOAT8_E4M3FNUZ,
    SDICT_FLOAT8_E5M2FNUZ,
    SDICT_FLOAT8_E8M0FNU,
    SDICT_FLOAT4_E2M1FN_X2,
    SDICT_BITS8,
    SDICT_BITS16,
    SDICT_BITS1X8,
    SDICT_BITS2X4,
    SDICT_BITS4X2,
    SDICT_BCOMPLEX32,        /**< complex of two bfloat16 (torch 2.14) */
    SDICT_QINT8,
    SDICT_QUINT8,
    SDICT_QINT32,
    SDICT_QUINT4X2,
    SDICT_QUINT2X4,
    SDICT_UINT1,
    SDICT_UINT2,
    SDICT_UINT3,
    SDICT_UINT4,
    SDICT_UINT5,
    SDICT_UINT6,
    SDICT_UINT7,
    SDICT_INT1,
    SDICT_INT2,
    SDICT_INT3,
    SDICT_INT4,
    SDICT_INT5,
    SDICT_INT6,
    SDICT_INT7,
    SDICT_FLOAT4_E2M1FN,     /**< 4-bit float, two per byte (safetensors F4; ml_dtypes) */
    SDICT_FLOAT6_E2M3FN,     /**< 6-bit float, packed (safetensors F6_E2M3; ml_dtypes) */
    SDICT_FLOAT6_E3M2FN,     /**< 6-bit float, packed (safetensors F6_E3M2; ml_dtypes) */
    SDICT_DTYPE_COUNT
} sdict_dtype;

/** torch's name without "torch." ("float32", "bfloat16", "float8_e4m3fn"); "?" if invalid. */
SDICT_API const char *sdict_dtype_name(sdict_dtype dtype);
/** Bytes per element as torch's element_size() (bool 1, complex64 8, quint4x2 1); 0 for an
    invalid dtype. */
SDICT_API size_t sdict_dtype_size(sdict_dtype dtype);
/** Bits per element: 8 * sdict_dtype_size, except the packed dtypes quint4x2 (4), quint2x4
    (2), float4_e2m1fn (4), float6_e2m3fn and float6_e3m2fn (6), whose storages hold
    ceil(numel * bits / 8) bytes; 0 for invalid. */
SDICT_API size_t sdict_dtype_bits(sdict_dtype dtype);
/** Parses a torch dtype name ("float32", also "torch.float32" and torch's aliases "float",
    "half", "double", "long", "int", "short", "cfloat", "cdouble", "chalf", "bit");
    SDICT_E_DTYPE if unknown. */
SDICT_API sdict_status sdict_dtype_from_name(const char *name, sdict_dtype *out);
/** Legacy storage class ("FloatStorage", "QInt8Storage"), or NULL for dtypes that only exist
    via UntypedStorage + _rebuild_tensor_v3 (torch.storage._new_dtypes(): uint16/32/64, the
    float8 and float4 types, bits types, complex32, bcomplex32; and uint1..7, int1..7). */
SDICT_API const char *sdict_dtype_storage_class(sdict_dtype dtype);

/*==================================================================================================
 MARK: Storage
==================================================================================================*/

/**
 A storage is a reference-counted block of bytes, torch's UntypedStorage: a tensor views it
 through dtype, shape, stride and storage_offset. Its backing is owned heap memory, a read-only
 file mapping made writable copy-on-write (MAP_PRIVATE), or caller memory with a release hook.
 Storages loaded from one file and shared by several tensors (tied weights, a view and its
 base) are one sdict_storage, so sharing survives load and save as in torch.
*/
typedef struct sdict_storage sdict_storage;

/**
 Allocates an owned, zero-filled storage of nbytes bytes (nbytes may be 0), refcount 1.
 Errors: SDICT_E_NOMEM. Release with sdict_storage_release().
*/
SDICT_API sdict_status sdict_storage_new(size_t nbytes, sdict_storage **out, sdict_error *err);

/**
 Wraps caller memory of nbytes bytes without copying, refcount 1. When the last reference is
 released, release(ctx, data) is called if release is not NULL; the caller keeps data valid
 until then. Errors: SDICT_E_NOMEM, SDICT_E_INVALID_ARG (data NULL with nbytes > 0).
*/
SDICT_API sdict_status sdict_storage_wrap(void *data, size_t nbytes,
                                          void (*release)(void *ctx, void *data), void *ctx,
                                          sdict_storage **out, sdict_error *err);

/** Adds a reference; returns s (NULL-tolerant). Thread-safe (atomic count). */
SDICT_API sdict_storage *sdict_storage_retain(sdict_storage *s);
/** Drops a reference, freeing/unmapping on the last one. NULL-tolerant. Thread-safe. */
SDICT_API void sdict_storage_release(sdict_storage *s);
/** First byte of the storage (NULL when nbytes is 0). Writable: mappings are copy-on-write. */
SDICT_API void *sdict_storage_data(const sdict_storage *s);
/** Size in bytes. */
SDICT_API size_t sdict_storage_nbytes(const sdict_storage *s);
/** True when the bytes point into a file mapping (zero-copy load), false when owned/wrapped. */
SDICT_API bool sdict_storage_is_mapped(const sdict_storage *s);
/** The key the storage had in its file ("0", "94340341200128"), or NULL for new storages.
    Borrowed; lives as long as the storage. */
SDICT_API const char *sdict_storage_key(const sdict_storage *s);
/**
 The location tag the storage was saved with, exactly as the file has it: what torch's
 location_tag() wrote ("cpu", "cuda:0", "mps", "meta", "xpu:1", a privateuse1 backend's tag) and
 what torch.load passes to map_location. "cpu" for storages made in memory and for NULL.
 Borrowed; lives as long as the storage. The bytes are always in host memory: statedict loads
 as torch.load(map_location='cpu') does, which accepts every tag (torch without map_location
 refuses tags of devices it lacks). sdict_save writes every storage as "cpu", like torch.save
 of what torch.load(map_location='cpu') returned.
*/
SDICT_API const char *sdict_storage_location(const sdict_storage *s);

/*==================================================================================================
 MARK: Tensor
==================================================================================================*/

/**
 A strided view of a storage, exactly torch's model: element i of a tensor with shape
 (s0..sn-1) and stride (t0..tn-1) lives at element index storage_offset + sum(i_k * t_k) of
 the storage read as dtype. Plain data: fill it, pass it to sdict_tensor_new(), read it from
 sdict_value_tensor(). storage is NULL only for meta tensors (torch's device='meta', which
 carry shape without data). The struct does not own its storage reference by itself; the
 value that holds it does (see sdict_tensor_new()).

 Any rank torch has is represented (torch itself saves and loads thousands of dimensions):
 shape and stride point to ndim values each (either may be NULL when ndim is 0) and the struct
 does not own them. In a tensor read from a doc (sdict_value_tensor(), hence everything a load
 produces) they point into memory the doc owns, valid until sdict_doc_free(); in a tensor you
 fill yourself they point to your arrays, which sdict_tensor_new() copies into the doc, so they
 need to live only until that call. Rank is bounded only by the load limits: a loaded
 tensor's dimensions count against max_values, so what a load builds stays proportional to
 the file. Only sizes of 2 and more multiply the element count, so a tensor with elements has
 at most 62 of them and every other dimension has size 1: the functions below walk the
 dimensions once (copies then walk the elements), so their cost grows linearly with ndim.
*/
typedef struct sdict_tensor {
    sdict_dtype dtype;
    int32_t ndim;                     /**< 0 for a scalar (torch.Size([])); any rank >= 0 */
    const int64_t *shape;             /**< ndim sizes, outermost first, each >= 0 */
    const int64_t *stride;            /**< ndim strides in elements; may be 0 (expanded) */
    int64_t storage_offset;           /**< in elements */
    sdict_storage *storage;           /**< borrowed; NULL for meta tensors */
    bool requires_grad;
    bool is_parameter;                /**< saved as nn.Parameter (_rebuild_parameter) */
    /** torch's lazy conjugate and negative bits (Tensor.is_conj(), is_neg(); torch 2.x saves
        them as rebuild metadata): the elements are the conjugate / negation of what the
        storage holds. sdict_tensor_copy_to applies them; sdict_tensor_data does not. */
    bool is_conj;
    bool is_neg;
} sdict_tensor;

/**
 Fills t as a C-contiguous tensor (torch's default strides) of the given dtype and shape over
 storage at storage_offset 0, requires_grad false. Does not retain storage.

 @param t        out: the tensor. t->shape becomes shape and t->stride becomes stride: t
                 borrows both arrays, which must outlive every use of t (sdict_tensor_new()
                 copies them, so a tensor value does not depend on them).
 @param ndim     rank, >= 0; 0 makes a scalar.
 @param shape    in: ndim sizes, outermost first; may be NULL when ndim is 0.
 @param stride   out: caller memory for ndim int64 values, receiving torch's contiguous
                 strides in elements (stride[k] = stride[k+1] * max(shape[k+1], 1)); may be
                 NULL when ndim is 0. It may not overlap shape.
 @param storage  the storage viewed, or NULL for a meta tensor.
 @return SDICT_OK, or SDICT_E_INVALID_ARG (negative ndim, NULL shape or stride with ndim > 0,
         negative size), SDICT_E_SHAPE (element count or a stride overflows int64),
         SDICT_E_STORAGE (storage smaller than the tensor needs), SDICT_E_DTYPE.

 @code
 int64_t shape[3] = {2, 3, 4}, stride[3];
 sdict_tensor t;
 if (sdict_tensor_init(&t, SDICT_FLOAT32, 3, shape, stride, storage, &err) == SDICT_OK)
     st = sdict_tensor_new(doc, &t, &value, &err);
 @endcode
 after which stride holds {12, 4, 1} and the value holds its own copies of both arrays.
*/
SDICT_API sdict_status sdict_tensor_init(sdict_tensor *t, sdict_dtype dtype, int32_t ndim,
                                         const int64_t *shape, int64_t *stride,
                                         sdict_storage *storage, sdict_error *err);

/** Number of elements (product of shape; 1 for 0-dim, 0 if any size is 0), like numel();
    -1 when the shape is malformed (a negative size, or a product past int64). */
SDICT_API int64_t sdict_tensor_numel(const sdict_tensor *t);
/**
 The device a tensor was saved on: its storage's location tag (sdict_storage_location: "cpu",
 "cuda:0", "mps", ...), "meta" for meta tensors (no storage), NULL for NULL. Borrowed; lives
 as long as the storage. The data is on the CPU whatever the tag (map_location='cpu').
*/
SDICT_API const char *sdict_tensor_device(const sdict_tensor *t);

/** numel * element size, in bytes: the size of a contiguous copy (not of the storage); for
    quint4x2/quint2x4 ceil(numel * bits / 8); 0 for a malformed shape. */
SDICT_API size_t sdict_tensor_nbytes(const sdict_tensor *t);
/** True when strides are torch's default contiguous strides (sizes of 1 or 0 ignored, as
    torch's is_contiguous() does). */
SDICT_API bool sdict_tensor_is_contiguous(const sdict_tensor *t);
/** Pointer to element (0,...,0): storage data + storage_offset * element size (bits / 8 for
    the packed dtypes). NULL for meta tensors and empty storages. Only meaningful for
    contiguous reading when sdict_tensor_is_contiguous(); the raw stored bytes, without the
    is_conj / is_neg bits applied. */
SDICT_API void *sdict_tensor_data(const sdict_tensor *t);

/**
 Checks that the tensor is well formed: dtype valid, ndim >= 0 (shape and stride not NULL
 when ndim > 0), sizes >= 0, strides >= 0, storage_offset >= 0, and (when numel > 0) that
 (storage_offset + sum((size_k - 1) * stride_k) + 1) * element size fits in the storage,
 computed with overflow checks (for quint4x2/quint2x4: ceil(that count * bits / 8) bytes, and
 storage_offset must start on a byte). torch does not perform this check. Errors: SDICT_E_SHAPE,
 SDICT_E_STORAGE, SDICT_E_DTYPE, SDICT_E_INVALID_ARG (t NULL, or shape or stride NULL with
 ndim > 0).
*/
SDICT_API sdict_status sdict_tensor_check(const sdict_tensor *t, sdict_error *err);

/**
 Copies the tensor's elements in C-contiguous order into dst (dst_bytes must be at least
 sdict_tensor_nbytes(t)), following strides, converting to dtype `to` (the same as t->dtype
 for a plain copy). Conversions follow torch's Tensor.to(): floats to ints truncate toward zero
 (NaN and out-of-range values give INT64_MIN, then wrap for narrower types), to bool is != 0,
 complex to real keeps the real part (torch warns and discards the imaginary part), real to
 complex has imaginary part 0; float16 and bfloat16 (and the halves of complex32/bcomplex32)
 round to nearest even from the exact source value (torch 1.13 rounds float64 through float32
 first, so about 3 in 100,000 float64 values differ from torch's by one unit in the last
 place). Supported: every pair among float64/32/16, bfloat16, int8/16/32/64, uint8/16/32/64,
 bool, complex32/64/128 and bcomplex32; the float8 types to themselves and, decoded exactly, to
 any of those (torch converts float8 to wider types the same way); every other dtype
 (float4_e2m1fn_x2, bits*, quantized, uint1..7, int1..7) only to itself, a raw copy (quint4x2
 and quint2x4 only when contiguous). The is_conj / is_neg bits are applied (conjugate: the
 imaginary part negated; negative: the value negated, integers wrapping). Errors:
 SDICT_E_INVALID_ARG (dst too small), SDICT_E_DTYPE (unsupported pair, or a conj/neg bit on a
 dtype without arithmetic), SDICT_E_STORAGE (meta tensor).
*/
SDICT_API sdict_status sdict_tensor_copy_to(const sdict_tensor *t, sdict_dtype to, void *dst,
                                            size_t dst_bytes, sdict_error *err);

/*==================================================================================================
 MARK: Values and documents
==================================================================================================*/

/** A document: owns a tree of values (an arena) and the references to storages in it. */
typedef struct sdict_doc sdict_doc;
/** One value in a doc. Borrowed: valid until sdict_doc_free() of the doc that owns it. */
typedef struct sdict_value sdict_value;

/** What a value is; Python's types as they appear in checkpoints. */
typedef enum sdict_kind {
    SDICT_KIND_NONE = 0,
    SDICT_KIND_BOOL,
    SDICT_KIND_INT,      /**< Python int of any size (int64 fast path, arbitrary precision kept) */
    SDICT_KIND_FLOAT,    /**< Python float (IEEE double) */
    SDICT_KIND_STR,      /**< UTF-8 text (Python-2 byte strings are decoded as latin-1 -> UTF-8) */
    SDICT_KIND_BYTES,    /**< bytes / bytearray */
    SDICT_KIND_LIST,
    SDICT_KIND_TUPLE,    /**< tuple; torch.Size is a tuple too */
    SDICT_KIND_SET,      /**< set or frozenset */
    SDICT_KIND_DICT,     /**< dict or collections.OrderedDict (both keep insertion order) */
    SDICT_KIND_TENSOR,   /**< torch.Tensor or nn.Parameter */
    SDICT_KIND_DTYPE,    /**< a torch.dtype object stored as a value (torch.float16) */
    SDICT_KIND_DEVICE,   /**< torch.device ("cpu", "cuda:1"): sdict_device_new */
    SDICT_KIND_COMPLEX,  /**< Python complex (two doubles): sdict_complex_new */
    SDICT_KIND_QSCHEME,  /**< torch.qscheme object (torch.per_tensor_affine) */
    SDICT_KIND_LAYOUT,   /**< torch.layout object (torch.sparse_csr) */
    SDICT_KIND_SPARSE,   /**< torch.Tensor of a sparse layout (COO, CSR, CSC, BSR, BSC) */
    SDICT_KIND_NESTED,   /**< torch.Tensor nested (torch.nested.nested_tensor, strided layout) */
    SDICT_KIND_STORAGE,  /**< a bare storage saved as a value (torch.FloatStorage, TypedStorage,
                              UntypedStorage: torch.save({'s': t.storage()})):
                              sdict_value_storage */
    SDICT_KIND_OBJECT,   /**< an inert object or class reference from a pickle read with
                              SDICT_LOAD_INERT (a pickled nn.Module): sdict_object_module */
    SDICT_KIND_COUNT
} sdict_kind;

/** "none", "bool", "int", "float", "str", "bytes", "list", "tuple", "set", "dict",
    "tensor", "dtype", "device", "complex", "qscheme", "layout", "sparse", "nested", "storage",
    "object";
    "?" when invalid. */
SDICT_API const char *sdict_kind_name(sdict_kind kind);

/**
 Python types that share a kind with a plainer one. A value read from a file remembers which
 it was, and sdict_save writes it back as that type, never as the plain one: reading and
 writing a checkpoint changes no value's Python type.
*/
typedef enum sdict_pytype {
    SDICT_PYTYPE_PLAIN = 0,      /**< the kind's own type (int, tuple, set, bytes, torch.Tensor...) */
    SDICT_PYTYPE_TORCH_SIZE,     /**< a tuple of ints that is a torch.Size */
    SDICT_PYTYPE_FROZENSET,      /**< a set that is a frozenset */
    SDICT_PYTYPE_BYTEARRAY,      /**< bytes that are a bytearray */
    SDICT_PYTYPE_NUMPY_SCALAR,   /**< a bool, int or float that is a numpy scalar
                                      (numpy.float32(1.5), numpy.int64(7), numpy.bool_(True)) */
    SDICT_PYTYPE_NUMPY_ARRAY,    /**< a tensor (C- or Fortran-contiguous, own storage) that is a
                                      numpy.ndarray */
    SDICT_PYTYPE_COUNTER,        /**< a dict (not an OrderedDict) that is a collections.Counter
                                      (an LR scheduler's `milestones`); values may be anything */
    SDICT_PYTYPE_COUNT
} sdict_pytype;

/** The Python type of v (SDICT_PYTYPE_PLAIN for NULL and for values built in memory). */
SDICT_API sdict_pytype sdict_value_pytype(const sdict_value *v);
/** numpy's dtype string of a numpy scalar or array ("<f4", "|b1", ">i8", "<c16") written into
    buf; NULL for other values. */
SDICT_API const char *sdict_value_numpy_dtype(const sdict_value *v, char buf[8]);
/**
 Marks v as a torch.Size (a tuple of ints), a frozenset (a set), a bytearray (bytes) or a
 Counter (a dict that is not ordered), or back as its plain type (which also turns a numpy
 value into a plain number or tensor).
 numpy types cannot be set: they come from files. Errors: SDICT_E_INVALID_ARG (NULL, numpy
 type, or a kind that does not match).
*/
SDICT_API sdict_status sdict_value_set_pytype(sdict_value *v, sdict_pytype t);

/** Creates an empty document whose root is None. Errors: SDICT_E_NOMEM. */
SDICT_API sdict_status sdict_doc_new(sdict_doc **out, sdict_error *err);
/** Frees the doc, every value in it, and its storage references. NULL-tolerant. */
SDICT_API void sdict_doc_free(sdict_doc *doc);
/** The root value (never NULL: None when unset). */
SDICT_API sdict_value *sdict_doc_root(const sdict_doc *doc);
/** Makes v (a value of this doc) the root. Errors: SDICT_E_INVALID_ARG. */
SDICT_API sdict_status sdict_doc_set_root(sdict_doc *doc, sdict_value *v);
/**
 The doc's file-level metadata: a safetensors file's `__metadata__` (str -> str, in the file's
 order), as a dict value of this doc; NULL when the doc has none (torch files, built docs).
 Borrowed, valid until sdict_doc_free. It is not part of the root: the root of a safetensors
 doc holds only the tensors, as safetensors.torch.load_file returns them, and the metadata is
 what safe_open(...).metadata() returns.
*/
SDICT_API sdict_value *sdict_doc_metadata(const sdict_doc *doc);
/**
 Sets (md a dict value of this doc) or clears (md NULL) the doc's metadata. sdict_save of a
 safetensors file writes it as `__metadata__` when sdict_save_opts.metadata is NULL; only
 str keys and str values can be written there. Errors: SDICT_E_INVALID_ARG (doc NULL, md not
 a dict or of another doc).
*/
SDICT_API sdict_status sdict_doc_set_metadata(sdict_doc *doc, sdict_value *md);

/** Kind of a value (SDICT_KIND_NONE for NULL). */
SDICT_API sdict_kind sdict_value_kind(const sdict_value *v);

/* ---- scalars ---- */

/** Creates values in doc. Return NULL only on out-of-memory (or NULL doc). */
SDICT_API sdict_value *sdict_none_new(sdict_doc *doc);
SDICT_API sdict_value *sdict_bool_new(sdict_doc *doc, bool b);
SDICT_API sdict_value *sdict_int_new(sdict_doc *doc, int64_t i);
SDICT_API sdict_value *sdict_float_new(sdict_doc *doc, double d);
/** Copies len bytes of UTF-8 text (not validated; embedded NULs allowed). */
SDICT_API sdict_value *sdict_str_new(sdict_doc *doc, const char *s, size_t len);
/** Copies len bytes. */
SDICT_API sdict_value *sdict_bytes_new(sdict_doc *doc, const void *p, size_t len);
/** A torch.dtype value. */
SDICT_API sdict_value *sdict_dtype_value_new(sdict_doc *doc, sdict_dtype dtype);
/**
 A torch.device value: type ("cpu", "cuda", "meta", a privateuse1 name; copied; letters,
 digits and '_' only) and index (>= 0), or index -1 for a device without one (torch.device('cpu')
 differs from torch.device('cpu', 0), and both save as they are). NULL on a bad type or index.
*/
SDICT_API sdict_value *sdict_device_new(sdict_doc *doc, const char *type, int64_t index);
/** A Python complex. */
SDICT_API sdict_value *sdict_complex_new(sdict_doc *doc, double re, double im);

/** The bool; false for non-bool. */
SDICT_API bool sdict_bool_get(const sdict_value *v);
/**
 Reads an int (a bool reads as 0/1, as in Python). Errors: SDICT_E_INVALID_ARG (not an int or
 bool), SDICT_E_LIMIT (the Python int does not fit in int64; use sdict_int_to_string).
*/
SDICT_API sdict_status sdict_int_get(const sdict_value *v, int64_t *out);
/**
 Writes the exact decimal value of an int of any size ("-12", "340282366920938463463374607431768211456")
 into buf (n bytes incl. NUL). Returns the length the full text needs (excluding NUL), like
 snprintf; 0 for non-ints.
*/
SDICT_API size_t sdict_int_to_string(const sdict_value *v, char *buf, size_t n);
/** The float; ints and bools convert; NaN for other kinds. */
SDICT_API double sdict_float_get(const sdict_value *v);
/** Text of a str (NUL-terminated, borrowed); *len gets its byte length. NULL for non-str. */
SDICT_API const char *sdict_str_get(const sdict_value *v, size_t *len);
/** Bytes of a bytes value (borrowed); *len gets the length. NULL for other kinds. */
SDICT_API const void *sdict_bytes_get(const sdict_value *v, size_t *len);
/** The dtype of a SDICT_KIND_DTYPE value; SDICT_DTYPE_COUNT for other kinds. */
SDICT_API sdict_dtype sdict_dtype_value_get(const sdict_value *v);
/** Type (NUL-terminated, borrowed) of a device value, NULL for other kinds; *index (may be
    NULL) gets its index or -1. */
SDICT_API const char *sdict_device_get(const sdict_value *v, int64_t *index);
/** Real and imaginary parts of a complex value (NaN for other kinds); either pointer may be
    NULL. Returns false for other kinds. */
SDICT_API bool sdict_complex_get(const sdict_value *v, double *re, double *im);

/* ---- sequences: list, tuple, set ---- */

/** Empty list / tuple / set (ordered as inserted). */
SDICT_API sdict_value *sdict_list_new(sdict_doc *doc);
SDICT_API sdict_value *sdict_tuple_new(sdict_doc *doc);
SDICT_API sdict_value *sdict_set_new(sdict_doc *doc);
/** Appends item (a value of the same doc) to a list, tuple or set. Sets skip duplicates.
    Errors: SDICT_E_INVALID_ARG, SDICT_E_NOMEM. */
SDICT_API sdict_status sdict_seq_append(sdict_value *seq, sdict_value *item);
/** Number of items of a list, tuple or set; 0 for other kinds. */
SDICT_API size_t sdict_seq_len(const sdict_value *seq);
/** Item i (borrowed), NULL when out of range or not a sequence. */
SDICT_API sdict_value *sdict_seq_item(const sdict_value *seq, size_t i);

/* ---- dicts ---- */

/**
 Empty dict. ordered=true makes a collections.OrderedDict (what Module.state_dict() returns);
 both kinds keep insertion order, the flag only decides what is saved.
*/
SDICT_API sdict_value *sdict_dict_new(sdict_doc *doc, bool ordered);
/** True for an OrderedDict. */
SDICT_API bool sdict_dict_is_ordered(const sdict_value *d);
/**
 Sets d[key] = val. Keys are hashable scalars: str, int, bool, float, complex, None, bytes,
 dtype, device, qscheme, layout, inert objects (by identity, as Python's object.__hash__), or
 tuples and frozensets (sets marked SDICT_PYTYPE_FROZENSET,
 equal whatever their order; do not change one while it is a key) of those; an existing equal
 key keeps its position and gets the new value (Python semantics, except that 1 and True are
 different keys).
 Errors: SDICT_E_INVALID_ARG (not a dict, unhashable key, foreign doc), SDICT_E_NOMEM.
*/
SDICT_API sdict_status sdict_dict_set(sdict_value *d, sdict_value *key, sdict_value *val);
/** sdict_dict_set with a str key made from the NUL-terminated text. */
SDICT_API sdict_status sdict_dict_set_str(sdict_value *d, const char *key, sdict_value *val);
/** Number of items; 0 for non-dicts. */
SDICT_API size_t sdict_dict_len(const sdict_value *d);
/** Key / value of item i in insertion order (borrowed), NULL when out of range. */
SDICT_API sdict_value *sdict_dict_key(const sdict_value *d, size_t i);
SDICT_API sdict_value *sdict_dict_val(const sdict_value *d, size_t i);
/** Value for a str key, NULL if absent. Average O(1). */
SDICT_API sdict_value *sdict_dict_get(const sdict_value *d, const char *key);
/** Value for an int key (optimizer `state` is keyed by parameter index), NULL if absent. */
SDICT_API sdict_value *sdict_dict_get_int(const sdict_value *d, int64_t key);
/** Value for any hashable key value, NULL if absent. */
SDICT_API sdict_value *sdict_dict_find(const sdict_value *d, const sdict_value *key);
/**
 The attributes an OrderedDict carried in its pickle (its __dict__, set by BUILD), as a dict
 of str -> value, or NULL when it had none. Module.state_dict() stores `_metadata` there:
 an OrderedDict mapping module prefix ("" for the root, "bn1", "layer1.0") to {"version": N}.
*/
SDICT_API sdict_value *sdict_dict_attrs(const sdict_value *d);
/** Sets the attribute dict (a str-keyed dict of the same doc, or NULL to drop it). */
SDICT_API sdict_status sdict_dict_set_attrs(sdict_value *d, sdict_value *attrs);

/* ---- tensors ---- */

/**
 Creates a tensor value from t (copied), taking a new reference on t->storage (which the doc
 releases when freed). The tensor is checked with sdict_tensor_check(). Returns the status;
 *out receives the value. Errors: those of sdict_tensor_check, SDICT_E_NOMEM.
*/
SDICT_API sdict_status sdict_tensor_new(sdict_doc *doc, const sdict_tensor *t, sdict_value **out,
                                        sdict_error *err);
/**
 The storage of a SDICT_KIND_STORAGE value (a storage saved bare, not inside a tensor), borrowed
 (lives with the doc; sdict_storage_retain to keep it longer); NULL for other kinds. *dtype (may
 be NULL) gets the element type of its storage class (float32 for torch.FloatStorage; uint8 for
 torch.UntypedStorage, whose numel counts bytes). torch.load returns such a value as a
 torch.storage.TypedStorage of that dtype (torch 1.13 and 2.x alike, UntypedStorage included);
 sdict_save writes it back as a storage of that class, numel sdict_storage_nbytes / element size.
 sdict_storage_location gives the device it was saved on.
*/
SDICT_API sdict_storage *sdict_value_storage(const sdict_value *v, sdict_dtype *dtype);
/** The tensor of a tensor value (borrowed, lives with the doc), NULL for other kinds. */
SDICT_API const sdict_tensor *sdict_value_tensor(const sdict_value *v);

/**
 Python attributes a tensor carried (torch 2.x pickles them as the `state` of
 torch._utils._rebuild_parameter_with_state for Parameters and of
 torch._tensor._rebuild_from_type_v2 for other tensors): a str-keyed dict, or NULL when none.
 Works for tensor, sparse and nested values. A (dict, slots) state pair is merged into one.
*/
SDICT_API sdict_value *sdict_tensor_attrs(const sdict_value *v);
/** Sets the attribute dict (a str-keyed dict of the same doc, or NULL to drop it) of a tensor,
    sparse or nested value; saved as torch 2.x saves a tensor with attributes (torch 1.13 cannot
    load those). Errors: SDICT_E_INVALID_ARG. */
SDICT_API sdict_status sdict_tensor_set_attrs(sdict_value *v, sdict_value *attrs);

/* ---- qschemes, layouts and quantized tensors ---- */

/** torch.qscheme objects, named as torch spells them. */
typedef enum sdict_qscheme {
    SDICT_PER_TENSOR_AFFINE = 0,
    SDICT_PER_CHANNEL_AFFINE,
    SDICT_PER_TENSOR_SYMMETRIC,
    SDICT_PER_CHANNEL_SYMMETRIC,
    SDICT_PER_CHANNEL_AFFINE_FLOAT_QPARAMS,
    SDICT_QSCHEME_COUNT
} sdict_qscheme;

/** torch.layout objects (torch.strided, torch.sparse_coo, ...; torch._mkldnn, torch.jagged). */
typedef enum sdict_layout {
    SDICT_LAYOUT_STRIDED = 0,
    SDICT_LAYOUT_SPARSE_COO,
    SDICT_LAYOUT_SPARSE_CSR,
    SDICT_LAYOUT_SPARSE_CSC,
    SDICT_LAYOUT_SPARSE_BSR,
    SDICT_LAYOUT_SPARSE_BSC,
    SDICT_LAYOUT_MKLDNN,
    SDICT_LAYOUT_JAGGED,
    SDICT_LAYOUT_COUNT
} sdict_layout;

/** "per_tensor_affine", ...; "?" if invalid. */
SDICT_API const char *sdict_qscheme_name(sdict_qscheme q);
/** "strided", "sparse_coo", "sparse_csr", "sparse_csc", "sparse_bsr", "sparse_bsc", "_mkldnn",
    "jagged"; "?" if invalid. */
SDICT_API const char *sdict_layout_name(sdict_layout l);
/** A torch.qscheme / torch.layout value; NULL when invalid or out of memory. */
SDICT_API sdict_value *sdict_qscheme_value_new(sdict_doc *doc, sdict_qscheme q);
SDICT_API sdict_value *sdict_layout_value_new(sdict_doc *doc, sdict_layout l);
/** The qscheme / layout of such a value; SDICT_QSCHEME_COUNT / SDICT_LAYOUT_COUNT otherwise. */
SDICT_API sdict_qscheme sdict_qscheme_value_get(const sdict_value *v);
SDICT_API sdict_layout sdict_layout_value_get(const sdict_value *v);

/**
 The quantizer of a quantized tensor (torch._utils._rebuild_qtensor): the tensor itself holds
 the integer representation (dtype qint8, quint8, qint32, quint4x2 or quint2x4); the real value
 of element x is (x - zero_point) * scale, per tensor or per channel along `axis`.
 - qscheme: SDICT_PER_TENSOR_AFFINE (scale, zero_point), or SDICT_PER_CHANNEL_AFFINE /
   SDICT_PER_CHANNEL_AFFINE_FLOAT_QPARAMS (scales, zero_points, axis). torch saves both
   per-channel schemes as per_channel_affine and tells them apart on load by the zero points'
   dtype (floating: float_qparams); statedict reports the scheme torch has after loading and
   saves it as torch does.
 - scales, zero_points: 1-D tensor values of the same doc with shape[axis] elements (torch
   writes float64 scales and int64 zero points, float32 both for float_qparams).
*/
typedef struct sdict_quantizer {
    sdict_qscheme qscheme;
    double scale;              /**< per tensor */
    int64_t zero_point;        /**< per tensor */
    sdict_value *scales;       /**< per channel */
    sdict_value *zero_points;  /**< per channel */
    int64_t axis;              /**< per channel: 0 <= axis < ndim */
} sdict_quantizer;

/**
 Creates a quantized tensor value: t as for sdict_tensor_new (dtype must be quantized) plus a
 copy of q. Errors: those of sdict_tensor_new; SDICT_E_DTYPE (dtype not quantized);
 SDICT_E_INVALID_ARG (scheme not affine, axis out of range, scales/zero_points not 1-D tensors
 of this doc with shape[axis] elements, float_qparams with integer zero points).
*/
SDICT_API sdict_status sdict_qtensor_new(sdict_doc *doc, const sdict_tensor *t,
                                         const sdict_quantizer *q, sdict_value **out,
                                         sdict_error *err);
/** The quantizer of a quantized tensor value (borrowed), NULL for other values (a tensor of a
    quantized dtype without a quantizer is torch's plain tensor of that dtype). */
SDICT_API const sdict_quantizer *sdict_value_quantizer(const sdict_value *v);

/* ---- sparse and nested tensors ---- */

/**
 A sparse tensor (torch._utils._rebuild_sparse_tensor; torch 1.13's _rebuild_sparse_csr_tensor),
 made of component tensor values of the same doc:
 - SDICT_LAYOUT_SPARSE_COO: indices (int64 [sparse_dim, nnz]) and values ([nnz, dense dims...]);
 - CSR/BSR: indices = crow_indices, plain_indices = col_indices; CSC/BSC: indices =
   ccol_indices, plain_indices = row_indices (int32 or int64, with leading batch dimensions);
   values [batch..., nnz, (block rows, block cols for BSR/BSC,) dense dims...].
 size is the sparse tensor's torch.Size (a tuple of ints). is_coalesced is COO's flag as torch
 2.x saves it (1 or 0), -1 when the file did not record it (torch 1.13 writes 3-item COO data;
 torch then takes a tensor of fewer than two entries as coalesced; saved back the same way,
 which both torch generations load). legacy_csr marks a CSR tensor
 saved through torch 1.13's _rebuild_sparse_csr_tensor; sdict_save writes it back that way in
 torch 1.13's layout (torch 2.x has no such function and cannot load those files; 1.13 cannot
 load CSR the 2.x way) and the 2.x way with SDICT_SAVE_LAYOUT_TORCH2.
 requires_grad and is_parameter come only through nn.Parameter (torch saves a sparse tensor's
 requires_grad nowhere else).
*/
typedef struct sdict_sparse {
    sdict_layout layout;
    sdict_value *size;
    sdict_value *indices;
    sdict_value *plain_indices;  /**< NULL for COO */
    sdict_value *values;
    int8_t is_coalesced;
    bool legacy_csr;
    bool requires_grad;
    bool is_parameter;
} sdict_sparse;

/**
 Creates a sparse tensor value from a copy of s, after checking it as torch's weights_only
 loader does (torch._validate_sparse_coo_tensor_args / _validate_sparse_compressed_tensor_args):
 component kinds, dtypes and shapes against size, every index inside its dimension, compressed
 indices starting at 0, non-decreasing and ending at nnz. Index tensors may not expand their
 storage (stride 0), so checking costs at most one pass over the file's bytes.
 Errors: SDICT_E_INVALID_ARG (a component is not a tensor of this doc, bad layout),
 SDICT_E_SHAPE, SDICT_E_DTYPE, SDICT_E_STORAGE (meta components, an index outside its range).
*/
SDICT_API sdict_status sdict_sparse_new(sdict_doc *doc, const sdict_sparse *s, sdict_value **out,
                                        sdict_error *err);
/** The description of a sparse value (borrowed), NULL for other kinds. */
SDICT_API const sdict_sparse *sdict_value_sparse(const sdict_value *v);

/**
 A nested tensor (torch.nested.nested_tensor; torch._utils._rebuild_nested_tensor): n
 component tensors that are strided views of one 1-D buffer. sizes and strides are int64
 [n, ndim] tensors, storage_offsets int64 [n] (elements of buffer), as torch's
 _nested_tensor_size(), _nested_tensor_strides(), _nested_tensor_storage_offsets().
*/
typedef struct sdict_nested {
    sdict_value *buffer;
    sdict_value *sizes;
    sdict_value *strides;
    sdict_value *storage_offsets;
    bool requires_grad;
    bool is_parameter;
} sdict_nested;

/**
 Creates a nested tensor value from a copy of n after checking that buffer is a 1-D tensor,
 sizes/strides/storage_offsets int64 tensors of matching shapes with values >= 0, and every
 component inside the buffer. Errors: SDICT_E_INVALID_ARG, SDICT_E_SHAPE, SDICT_E_DTYPE,
 SDICT_E_STORAGE.
*/
SDICT_API sdict_status sdict_nested_new(sdict_doc *doc, const sdict_nested *n, sdict_value **out,
                                        sdict_error *err);
/** The description of a nested value (borrowed), NULL for other kinds. */
SDICT_API const sdict_nested *sdict_value_nested(const sdict_value *v);

/* ---- inert objects (SDICT_LOAD_INERT) ---- */

/**
 How an inert object was made. A class reference is a global that was never called (an
 attribute holding a class, `self.norm_layer = nn.BatchNorm2d`, or the class itself).
*/
typedef enum sdict_object_call {
    SDICT_OBJECT_CLASS = 0,  /**< a class (or function) reference: GLOBAL/STACK_GLOBAL only */
    SDICT_OBJECT_REDUCE,     /**< REDUCE, INST or OBJ: what Python runs as callable(*args) */
    SDICT_OBJECT_NEWOBJ,     /**< NEWOBJ or NEWOBJ_EX: cls.__new__(cls, *args, **kwargs), as
                                  protocol 2+ pickles every plain object (nn.Module included) */
} sdict_object_call;

/**
 The class of a SDICT_KIND_OBJECT value: module ("torch.nn.modules.conv", "__main__") and name
 ("Conv2d"), as the pickle's GLOBAL named them after protocol 0-2's fix_imports renaming
 (Python 2 names mapped as CPython's find_class maps them). For an object made by calling
 another inert object (REDUCE of a REDUCE: `getattr(obj, 'f')(x)`), the class of the innermost
 reference, and sdict_object_callee gives the object called. NUL-terminated, borrowed: valid
 until sdict_doc_free. NULL for other kinds.
*/
SDICT_API const char *sdict_object_module(const sdict_value *v);
SDICT_API const char *sdict_object_name(const sdict_value *v);
/** How v was made (SDICT_OBJECT_CLASS for a class reference and for values of other kinds). */
SDICT_API sdict_object_call sdict_object_how(const sdict_value *v);
/** The positional arguments of the call: a tuple (empty for NEWOBJ of a plain object, as
    torch.save(model) writes every module); NULL for a class reference or another kind. */
SDICT_API sdict_value *sdict_object_args(const sdict_value *v);
/** NEWOBJ_EX's keyword arguments (a dict), or NULL. */
SDICT_API sdict_value *sdict_object_kwargs(const sdict_value *v);
/**
 The state BUILD gave the object, as the pickle holds it: for an nn.Module its __dict__ (a
 str-keyed dict with `_parameters`, `_buffers`, `_modules`, `training`, ...), for a class with
 __slots__ a (dict-or-None, slots dict) tuple, for anything else whatever its __reduce__
 returned (what Python would pass to __setstate__). NULL when no BUILD came. Values inside
 are shared as the pickle shares them (the memo): a Parameter tied between two modules is one
 value in both states.
*/
SDICT_API sdict_value *sdict_object_state(const sdict_value *v);
/**
 The items SETITEM / SETITEMS stored into v, an object of a dict subclass (a
 collections.defaultdict, an OrderedDict subclass: what Python's __setitem__ would store after
 the call): a list of (key, value) tuples in pickle order, keys of any kind (an optimizer's
 state is a defaultdict keyed by Parameter tensors, which no sdict dict can key). NULL when
 none came or v is no object.
*/
SDICT_API sdict_value *sdict_object_items(const sdict_value *v);
/** The inert object that was called to make v (REDUCE on an object, not on a class), NULL
    otherwise. Its own args, state and callee describe it in turn. */
SDICT_API sdict_value *sdict_object_callee(const sdict_value *v);

/* ---- module state from inert objects ---- */

/** True when v is an inert object whose state (a dict, or the dict of a (dict, slots) pair) has
    dicts `_parameters`, `_buffers` and `_modules`: a pickled torch.nn.Module. */
SDICT_API bool sdict_object_is_module(const sdict_value *v);

/**
 What `module.state_dict()` returns, computed from the inert object of a pickled nn.Module
 (named for the object it reads: sdict_module_state_dict in statedict_nn.h is the same
 computation over statedict's own C modules)
 loaded with SDICT_LOAD_INERT, as torch 1.13 and 2.x compute it (torch/nn/modules/module.py:
 state_dict, _save_to_state_dict): an OrderedDict of the module's `_parameters` (None values
 skipped) and `_buffers` (None values and the names in `_non_persistent_buffers_set` skipped),
 in that order, under the module's prefix, then each child of `_modules` (None skipped)
 under prefix + name + ".", depth first in insertion order. Wrappers keep their own prefix,
 as torch keeps it: a DataParallel / DistributedDataParallel's keys start with "module.".
 Each tensor is `t.detach()`: a new plain tensor value (not a Parameter, requires_grad false,
 no Python attributes) viewing the same storage, one per key as each detach() in torch makes
 one, so tied weights (or a module listed under two names) are two values sharing one storage,
 and sdict_save of the result writes what torch.save(model.state_dict()) writes, byte for byte
 (the "version" keys of `_metadata` are one str value, as Python's interned str, so they are
 pickled once too). Sparse and nested tensors are kept as they are.
 The result carries `_metadata` as torch's does (sdict_dict_attrs: {"_metadata": OrderedDict
 prefix -> {"version": N}}, prefixes "" for the root, "layer1", "layer1.0", ... in visiting
 order), so sdict_save of it writes what torch.save(model.state_dict()) writes. N is the
 class's `_version`, a class attribute the pickle does not carry: statedict's table of the
 torch and torchvision classes whose version is not 1 (batch and instance norms 2, quantized
 Linear 3, ...; scripts/module_versions.py lists them from torch 1.13 and 2.14) gives it, 1 for
 every other class. The class is the object's own, or for protocol 0 and 1 pickles (which
 make each object as copyreg._reconstructor(cls, object, None)) that call's first argument. A
 user class inheriting a non-1 version from a torch class gets 1: the pickle does not say what
 it inherits.
 Not mirrored, because they run Python code: `get_extra_state` overrides (torch adds an
 `_extra_state` key; statedict cannot know the class overrides it) and state_dict hooks (a
 module with a non-empty `_state_dict_hooks` or `_state_dict_pre_hooks` is refused).
 The values live in module's doc, valid until sdict_doc_free.

 @param module  an inert object for which sdict_object_is_module is true.
 @param out     receives the OrderedDict value.
 @param err     optional detail, naming the module's prefix.
 @return SDICT_OK; SDICT_E_INVALID_ARG (NULL, or not a module object); SDICT_E_UNSUPPORTED (a
         submodule that is not a module object, a parameter or buffer that is not a tensor, a
         name that is not a str, state_dict hooks); SDICT_E_LIMIT (modules nested over 1000
         deep); SDICT_E_NOMEM.
*/
SDICT_API sdict_status sdict_object_state_dict(sdict_value *module, sdict_value **out,
                                               sdict_error *err);

/**
 The tensors reachable from v — any value, typically an inert object that is not a module (a
 custom class holding tensors, an EMA helper, a tokenizer with embeddings) — by attribute
 path: an OrderedDict of dotted path -> tensor in walking order, where an object contributes
 its state (a dict's keys are attribute names; a (dict, slots) pair gives both) or, without
 state, its arguments by index, dicts their str and int keys, lists and tuples their indices.
 Tensors are the values themselves (not detached; a tensor reached twice is under both paths,
 one value); keys of other kinds are skipped. v itself a tensor gives {"": v}.
 Errors: SDICT_E_INVALID_ARG (NULL), SDICT_E_LIMIT (nesting over 1000), SDICT_E_NOMEM.
*/
SDICT_API sdict_status sdict_object_tensors(sdict_value *v, sdict_value **out, sdict_error *err);

/** True when v is an inert object whose state is a dict with `defaults` (a dict), `state` (a
    dict, or a defaultdict object) and `param_groups` (a list of dicts each with a `params`
    list): a pickled torch.optim.Optimizer (torch.save(optimizer)). */
SDICT_API bool sdict_object_is_optimizer(const sdict_value *v);

/**
 What `optimizer.state_dict()` returns, computed from the inert object of a pickled optimizer
 (torch/optim/optimizer.py state_dict, torch 1.13 and 2.x): a dict {"state": {index: per-param
 state}, "param_groups": [group, ...]}, where each group has its items but `params` in order,
 then `params` as a list of ints; a parameter's index is its position counted over every
 group's list, the first appearance winning; state keys that are tensors become their
 parameter's index (the defaultdict's items, sdict_object_items, in order), other keys stay.
 Values are the pickle's own (not copied). State_dict hooks (torch 2.x) are not run.
 @return SDICT_OK; SDICT_E_INVALID_ARG (NULL, or sdict_object_is_optimizer false);
         SDICT_E_UNSUPPORTED (a param that is not a tensor, a state key no dict can hold);
         SDICT_E_FORMAT (a state key tensor in no param group); SDICT_E_NOMEM. Values live in
         v's doc. Cost linear in the number of parameters and state entries.
*/
SDICT_API sdict_status sdict_object_optimizer_state_dict(sdict_value *opt, sdict_value **out,
                                                         sdict_error *err);

/* ---- TorchScript archives (torch.jit.save) read with SDICT_LOAD_INERT ---- */

/** True when doc is a TorchScript archive (a zip with a constants.pkl record) loaded with
    SDICT_LOAD_INERT: its root is data.pkl's module object (inert objects of the
    `__torch__.*` classes, mangled names such as `___torch_mangle_4` kept), and the archive's
    code/ declarations were read as text (never run). False for every other doc and for NULL. */
SDICT_API bool sdict_doc_is_script(const sdict_doc *doc);

/** A TorchScript archive's constants: the value of its constants.pkl (a tuple; tensors read from
    constants/<key>, or data/<key> in archives that keep every tensor there), as
    torch.jit.load's importer reads them for the code's `CONSTANTS.cN`. They are not part of
    the state_dict. Borrowed, valid until sdict_doc_free; NULL when sdict_doc_is_script is
    false. */
SDICT_API sdict_value *sdict_doc_script_constants(const sdict_doc *doc);

/**
 What `torch.jit.load(f).state_dict()` returns, computed from a TorchScript archive loaded with
 SDICT_LOAD_INERT, without running any of its code. The archive's code/<path>.py records
 (python_print.cpp's output) are read as declarations only: per class its base (`Module` for a
 module), its attributes in slot order (`name : Type` lines and `__annotations__["name"] =
 Type`), `__parameters__ = [...]` and `__buffers__ = [...]` (older archives have no
 `__buffers__`: no buffers, as torch then marks none). As torch's C++ module walks its slots
 (named_parameters, named_buffers, named_children; import_source.cpp): for the root object
 and then each submodule, the parameters that hold a tensor (None skipped), then the buffers of
 type Tensor (None skipped; non-persistent buffers included: a scripted module keeps every
 buffer, so torch returns them too), then each attribute whose type is a module class, under
 prefix + name + ".", depth first in slot order. Each value is a new detached tensor (not a
 Parameter, requires_grad false) viewing the loaded storage, one per key, as torch's
 detach(). `_metadata` (sdict_dict_attrs) holds {"version": 1} per module prefix, as
 RecursiveScriptModule's _version is 1. Constants and plain tensor attributes are not in it
 (sdict_doc_script_constants, sdict_object_state of the objects).
 Not mirrored: modules restored by their own `__setstate__` code (their state is not a dict of
 attributes) are refused.

 @param doc  a doc for which sdict_doc_is_script is true.
 @param out  receives the OrderedDict (in doc, valid until sdict_doc_free).
 @param err  optional detail, naming the module's prefix and class.
 @return SDICT_OK; SDICT_E_INVALID_ARG (NULL, or not such a doc); SDICT_E_FORMAT (an object
         that is not of a module class of the code, a declared attribute the object lacks, a
         parameter or buffer that is not a tensor); SDICT_E_UNSUPPORTED (__setstate__
         modules); SDICT_E_LIMIT (modules nested over 1000 deep); SDICT_E_NOMEM.
*/
SDICT_API sdict_status sdict_script_state_dict(const sdict_doc *doc, sdict_value **out,
                                               sdict_error *err);

/* ---- paths ---- */

/**
 Finds the value at a dotted path such as "model_state_dict.conv1.weight" or
 "optimizer_state_dict.state.0.momentum_buffer". State-dict keys contain dots themselves, so at
 each dict the longest key that matches a prefix of the remaining path wins; list and tuple
 items are addressed by decimal index, int dict keys by their decimal text. "" is the root.
 Returns NULL when nothing matches.
*/
SDICT_API sdict_value *sdict_value_at(const sdict_value *root, const char *path);

/*==================================================================================================
 MARK: Loading (torch.load)
==================================================================================================*/

/** Bits for sdict_load_opts.flags. */
enum {
    /** Read all storages into owned memory instead of mapping the file. Use it for files
        that another process may truncate or rewrite while the doc is open (see sdict_load:
        a mapped file that shrinks raises SIGBUS on the next read of its data). */
    SDICT_LOAD_COPY = 1u << 0,
    /** Verify the CRC-32 of every record read against the central directory (torch never
        does: 1.13 and 2.x alike load a payload with a flipped byte); a mismatch fails with
        SDICT_E_CRC. Never claims what it could not check: a file written with CRCs off
        (torch 2.6+ `torch.serialization.set_crc32_options(False)`, every record's CRC 0) has
        nothing to check against, so a load with this flag reads it fully and then fails with
        SDICT_E_CRC "no CRC recorded", naming the first such record and counting them. (One
        CRC of 0 among real ones is compared like any other: a mismatch.) Without the flag
        such files load normally. */
    SDICT_LOAD_VERIFY_CRC = 1u << 1,
    /** Treat payloads of files without a byteorder record as big-endian (old s390x files). */
    SDICT_LOAD_ASSUME_BIG_ENDIAN = 1u << 2,
    /**
     Read pickled objects as inert data (whole-model pickles: torch.save(model), YOLO-style
     {'model': model, ...} checkpoints). A global that is not on the allow-list becomes a class
     reference (a SDICT_KIND_OBJECT value) instead of an error, and REDUCE, NEWOBJ, NEWOBJ_EX,
     INST and OBJ on it make an inert object holding the class, the arguments and (after
     BUILD) the state; see sdict_object_module. Nothing is ever imported, resolved or called:
     the class is a pair of names. The allow-listed functions still run as in a normal load
     (the torch._utils rebuild functions build real tensors and Parameters, OrderedDict, set,
     ...), so the tree holds the model's real tensors. Every limit of sdict_limits applies.
     A BUILD on a class reference, a second BUILD on one object, extension codes (EXT1/2/4)
     and allow-listed callables used as data are refused (SDICT_E_PICKLE_TYPE,
     _PICKLE_UNSAFE_GLOBAL). Legacy files (torch < 1.6 layout) that carry a class's source as
     a persistent id ('module', cls, file, source) give the class; the source is ignored.
     sdict_object_state_dict() computes Module.state_dict() from such a tree. TorchScript
     archives (torch.jit.save) are read too: the root is data.pkl's module object, and
     sdict_doc_is_script, sdict_doc_script_constants and sdict_script_state_dict give the rest
     (code/ records are read as text, never run). Off by default:
     a normal load refuses the first global off the allow-list (naming it, and pointing at
     `statedict extract` when it names a class). sdict_scan always reads this way, so a scan
     goes on past objects and reports every global.
    */
    SDICT_LOAD_INERT = 1u << 3,
    /**
     Listing only (what `statedict ls` needs): for a DCP folder (SDICT_FORMAT_DCP) only
     `.metadata` is read for tensors. Every tensor entry becomes a meta tensor (storage NULL,
     sdict_tensor_device "meta", as torch's device="meta": dtype and shape, strides contiguous,
     no data) after the same checks of its chunks as a full load (inside the size, tiling it
     by element count, each backed by a storage_data entry whose relative_path is a file
     inside the folder and whose bytes lie inside that file). What only the items' bytes show
     is not checked: that each item is a torch.save archive holding a tensor of the chunk's
     dtype and shape, and overlaps that the element count does not reveal (use a full load or
     `statedict verify` for those). Non-tensor (bytes) items are
     still read, decoded and checked, so the tree has the same structure and values as a full
     load. Cost: `.metadata` plus the bytes items, whatever the tensors' size. Other formats
     ignore the flag (their mapped load reads no tensor data anyway).
    */
    SDICT_LOAD_METADATA_ONLY = 1u << 4,
};

/**
 Resource limits for untrusted input. A field left 0 takes the default shown. Exceeding one
 fails with SDICT_E_LIMIT naming the limit.
*/
typedef struct sdict_limits {
    uint32_t max_depth;        /**< nesting of containers in the pickle; default 1000 */
    uint64_t max_memo;         /**< memo slots; default 16M */
    uint64_t max_stack;        /**< pickle stack entries; default 16M */
    uint64_t max_str_bytes;    /**< one str/bytes; default 1 GiB */
    uint64_t max_values;       /**< values created by one load, and values in the tree when
                                    shared subtrees are counted each time they are reachable
                                    (bounds every later walk of the tree); a tensor counts
                                    with its dimensions, a str, bytes or int with one more per
                                    16 of its bytes. That expanded count is also bounded by
                                    the pickle's size in bytes + 64K, so walking the tree
                                    (ls, dump, diff, save) costs time linear in the file. Container entries and tensor
                                    dimensions made by one pickle are also bounded by 2 per
                                    byte of it; default 64M */
    uint64_t max_records;      /**< zip entries; default 1M */
    uint64_t max_inflate;      /**< bytes a deflated record may inflate to; default 16 GiB */
    uint64_t max_inflate_total; /**< bytes all deflated records read by one load, scan or
                                     verify may inflate to together; default 32 x the file's
                                     size + 32 MiB (a zip bomb of many small records stays
                                     proportional to the file); raise it for re-zipped files
                                     of highly compressible tensors */
} sdict_limits;

/** Options for loading; a zeroed struct (or NULL) means defaults: mmap, no CRC check. */
typedef struct sdict_load_opts {
    uint32_t flags;
    sdict_limits limits;
} sdict_load_opts;

/** Container format a doc was loaded from. */
typedef enum sdict_format {
    SDICT_FORMAT_NONE = 0,   /**< built in memory */
    SDICT_FORMAT_ZIP,        /**< torch >= 1.6 zip archive */
    SDICT_FORMAT_LEGACY,     /**< magic-number pickle stream, torch 0.4 - 1.5 */
    SDICT_FORMAT_TAR,        /**< tar of sys_info/pickle/tensors/storages, torch < 0.4 */
    SDICT_FORMAT_SAFETENSORS,/**< huggingface safetensors: u64 header length, JSON, data */
    SDICT_FORMAT_SHARDED,    /**< a Hugging Face `*.index.json` and the shards it names (a
                                  model folder); each shard is safetensors or torch zip */
    SDICT_FORMAT_DCP,        /**< a torch.distributed.checkpoint folder (.metadata and
                                  __<rank>_<n>.distcp files) */
    SDICT_FORMAT_COUNT
} sdict_format;

/** "none", "zip", "legacy", "tar", "safetensors", "sharded", "dcp". */
SDICT_API const char *sdict_format_name(sdict_format f);

/**
 Loads the file at path, as torch.load(path, map_location='cpu', weights_only=True) would,
 with statedict's allow-list: what torch 2.14's default weights_only loader allows
 (collections.OrderedDict and Counter, torch.Size, torch.device, torch.Tensor,
 torch.nn.parameter.Parameter, every dtype, qscheme and storage class, the legacy tensor
 types, torch.serialization._get_layout, builtins set/bytearray/complex, _codecs.encode, the
 torch._utils rebuild functions and torch._tensor._rebuild_from_type_v2), plus
 builtins.frozenset/bytes, torch 1.13's _rebuild_sparse_csr_tensor and numpy's array and
 scalar reconstructors; and checks torch lacks (storage sizes, tensor extents, resource
 limits). What each becomes: see sdict_kind, sdict_quantizer, sdict_sparse, sdict_nested and
 sdict_tensor_attrs; _rebuild_device_tensor_from_cpu_tensor / _from_numpy give the CPU tensor
 converted to the saved dtype (map_location='cpu'); _rebuild_wrapper_subclass is refused
 (SDICT_E_UNSUPPORTED) because torch cannot rebuild any allowed class with it either.
 Zip, legacy, tar and safetensors formats are detected from the content, not the name.
 TorchScript archives (those with a constants.pkl record) are refused with SDICT_E_FORMAT,
 pointing at `statedict extract`, unless SDICT_LOAD_INERT is set (see sdict_script_state_dict);
 archives of torch 1.0-1.2's layout (model.json) are refused then with SDICT_E_UNSUPPORTED.

 Distributed checkpoint folders (torch.distributed.checkpoint.save, torch 2.2 - 2.14: a folder
 holding `.metadata` and `__<rank>_<n>.distcp` files) load as one doc of format
 SDICT_FORMAT_DCP, equal to what torch's format_utils.dcp_to_torch_save writes: a plain dict
 nested by the metadata's planner_data (str keys make dicts, int keys lists), keys in
 state_dict_metadata order, every tensor whole and contiguous (requires_grad false),
 reassembled from its chunks (shards of any dimension, uneven or empty), non-tensor values as
 saved. `.metadata` is read with an allow-list of DCP's own dataclasses and enums (plus
 torch.Size, the dtypes, _get_layout, builtins.getattr for the enum and pathlib's path
 classes), each object checked field by field and never constructed; every item is read as the
 torch.save archive at its (offset, length) of its .distcp file, with the allow-list above.
 Refused: a folder with .distcp files but no .metadata (an unfinished save; SDICT_E_FORMAT),
 another global (_PICKLE_UNSAFE_GLOBAL, naming it and its offset), fields of wrong types
 (_PICKLE_TYPE), a relative_path that is not a file inside the folder (_FORMAT), an item past
 its file's end (_TRUNCATED), chunks outside the global shape, overlapping or leaving holes
 (_SHAPE), an item whose tensor has another shape or dtype than its chunk (_SHAPE, _DTYPE),
 stream transforms such as zstd (_UNSUPPORTED), a `.metadata` that is a symbolic link leaving
 the folder, two storage_data entries whose items share bytes of a file (or name one file
 through two names, a link), a planner_data path
 that does not join with '.' to its entry's fqn (torch's load fails on it, or fills another
 entry's place) (_FORMAT), tensors claiming more bytes than 32 times their items' bytes plus
 32 MiB over the folder (_STORAGE), planner_data paths deeper than limits.max_depth, list
 indices padding the lists past (entries + 65536) slots in all, non-tensor items expanding
 through shared references to more values than their bytes plus 64K in all (_LIMIT).
 err->file names `.metadata` or the .distcp file; err->record for an item's faults is
 "item@OFFSET:RECORD" (OFFSET its byte offset in that file). Storages are copied out of the
 items (items start at arbitrary offsets); a tensor saved as one whole chunk keeps its item's
 storage when that holds exactly the tensor, contiguous (else it is copied contiguous). A load
 reads every item (files read with pread, under SDICT_LOAD_COPY, are opened one at a time);
 with SDICT_LOAD_METADATA_ONLY (a listing) only `.metadata` and the non-tensor items are read,
 and tensors become meta tensors (see that flag).

 safetensors files (as safetensors.torch.load_file(path) reads them, with the Rust core's
 header checks): the root is a dict (not ordered) of str -> tensor in data-offset order, each
 tensor with its own storage (sdict_storage_key is the tensor's name), and sdict_doc_metadata
 is `__metadata__`. A tensor is mapped when its file offset is a multiple of its element size,
 else copied. Every refusal names the rule and the Rust error (README "safetensors
 (reading)"): SDICT_E_LIMIT (header length over 100,000,000), _TRUNCATED (header or data
 past the end), _FORMAT (not UTF-8, not JSON, duplicate keys, wrong field types, trailing
 bytes), _DTYPE (unknown dtype), _SHAPE (negative or fractional numbers, sizes that do not
 match, overflow, sub-byte sizes off a byte boundary), _STORAGE (offsets that do not tile the
 data section).
 By default stored, native-order records are mapped, not copied, when they start where torch's
 writer puts them: at a multiple of the archive's storage alignment (64 bytes, or the
 .storage_alignment record of torch >= 2.7, counting at most 64) and of the dtype's natural
 alignment; other records are copied, so storage data is always aligned for its dtype.

 Mapped files: the doc's mapped storages read the file's pages directly (MAP_PRIVATE,
 read-only) for as long as the doc, or any storage retained from it, lives. The file must not
 shrink meanwhile: if another process truncates it (or rewrites it by truncating first, as
 `open(path, 'wb')` does), reading tensor data that lay past the new end raises SIGBUS in the
 reading thread, as for any mapped file; the library installs no signal handler. Data rewritten
 in place without truncation shows through as the new bytes (metadata, already parsed, does
 not change). torch.save and sdict_save replace files by renaming a new file over the old one,
 which leaves an open doc on the old contents and is safe. Pass SDICT_LOAD_COPY for files that
 may change while open; the statedict command turns SIGBUS into exit 3 with a message naming
 the file ("changed while mapped").

 Cost: whatever the file holds, a load takes time and memory proportional to its size within
 the limits of sdict_limits (memo slots, shared subtrees counted in full against the pickle's
 size, total inflated bytes, per-process random hash seeds for every table keyed by the file).

 @param path  file to read; must not be NULL.
 @param opts  NULL for defaults.
 @param out   receives a new doc (free with sdict_doc_free), NULL on failure.
 @param err   optional detail: file, record, byte offset and message.
 @return SDICT_OK, or SDICT_E_IO, _TRUNCATED, _FORMAT, _ZIP_*, _CRC, _PICKLE_*, _STORAGE,
         _LIMIT, _DTYPE, _SHAPE, _VERSION, _UNSUPPORTED, _NOMEM.
*/
SDICT_API sdict_status sdict_load(const char *path, const sdict_load_opts *opts, sdict_doc **out,
                                  sdict_error *err);

/**
 Loads from memory. Storages are always copied out of data, so data may be freed after the
 call. name is used in error messages only (may be NULL). Same errors as sdict_load.
*/
SDICT_API sdict_status sdict_load_buffer(const void *data, size_t size, const char *name,
                                         const sdict_load_opts *opts, sdict_doc **out,
                                         sdict_error *err);

/** Format the doc was loaded from (SDICT_FORMAT_NONE for built docs). */
SDICT_API sdict_format sdict_doc_format(const sdict_doc *doc);
/** True when the payloads were stored big-endian (a `byteorder` record of "big", or
    SDICT_LOAD_ASSUME_BIG_ENDIAN). Loaded tensors are always in native order. */
SDICT_API bool sdict_doc_big_endian(const sdict_doc *doc);

/*==================================================================================================
 MARK: Saving (torch.save)
==================================================================================================*/

/** Bits for sdict_save_opts.flags. */
enum {
    /**
     Write the layout of torch 2.7 and later, byte for byte as torch 2.14's torch.save writes
     it, instead of torch 1.13's (the default: records data.pkl, data/<key> with the keys
     sorted as strings, "0", "1", "10", "2", then version). The records are data.pkl,
     .format_version ("1"), .storage_alignment ("64"), byteorder (the host's), data/0,
     data/1, ... in numeric order, version, and .data/serialization_id (torch's hash of the
     record names and CRC-32s); the archive folder is "archive" when the path is not ASCII,
     as torch names it then. The pickle is the same. Both layouts load in every torch >= 1.6.
    */
    SDICT_SAVE_LAYOUT_TORCH2 = 1u << 0,
    /**
     Also write values that torch.load's default weights-only unpickler (torch >= 2.6) refuses:
     numpy scalars and arrays, frozensets, ints longer than 255 bytes. Such files, like the
     files they were read from, need torch.load(path, weights_only=False). Without this flag
     sdict_save refuses them with SDICT_E_UNSUPPORTED naming the value's path.
    */
    SDICT_SAVE_ALLOW_NOT_WEIGHTS_ONLY = 1u << 1,
};

/** Bits for sdict_save_opts.st_flags (safetensors output; see sdict_save). */
enum {
    /** Tensors of one storage whose byte ranges intersect without being the same view (a
        tensor and a slice of it, t and t.view(-1)) are each written whole, as contiguous
        copies (the shared bytes twice), instead of being refused. */
    SDICT_SAVE_ST_COPY_OVERLAPS = 1u << 0,
    /** Leaves that are not tensors (an epoch, an lr, a list of ints) are left out instead of
        refused. */
    SDICT_SAVE_ST_DROP_NON_TENSORS = 1u << 1,
    /** Leaves that are not tensors are written as `__metadata__` strings, key the leaf's
        dotted name, value its Python repr() ("7", "0.001", "'adam'", "[0, 1]", "None",
        "torch.float16", "torch.Size([2, 3])", "(1+2j)"), after the metadata's own keys;
        a name the metadata already has is refused (SDICT_E_INVALID_ARG). Exclusive with
        SDICT_SAVE_ST_DROP_NON_TENSORS. */
    SDICT_SAVE_ST_NON_TENSORS_AS_METADATA = 1u << 2,
};

/** Options for saving; zeroed or NULL means defaults. */
typedef struct sdict_save_opts {
    /** Archive folder name inside the zip; NULL derives it from the path like torch
        (directory stripped, text after the last dot removed: "sd.pt" -> "sd"). A name with
        a '/' or longer than 4096 bytes is refused (SDICT_E_INVALID_ARG). */
    const char *archive_name;
    uint32_t flags; /**< SDICT_SAVE_* bits; 0 for torch 1.13's layout */
    /** SDICT_FORMAT_ZIP (or 0: torch.save's zip) or SDICT_FORMAT_SAFETENSORS; other formats
        are refused with SDICT_E_INVALID_ARG. */
    sdict_format format;
    /** safetensors: the `__metadata__` to write, a dict of str -> str of any doc, written in
        its insertion order; NULL for the root's doc's metadata (sdict_doc_metadata), and no
        `__metadata__` at all when that is NULL too. An empty dict writes
        "__metadata__":{} as safetensors does for metadata={}. Keys and values must be UTF-8
        text without lone surrogates (Rust strings), else SDICT_E_INVALID_ARG. */
    const sdict_value *metadata;
    uint32_t st_flags; /**< SDICT_SAVE_ST_* bits; unknown bits: SDICT_E_INVALID_ARG */
    /** safetensors: names preferred when tensors alias (tied weights): in a group of exact
        aliases the name listed first here is kept; names of no group are ignored. NULL (or a
        group none of whose names is listed) keeps the name safetensors' save_model keeps:
        the least name as bytes (Python's sorted()). Each string NUL-terminated, borrowed
        for the call. */
    const char *const *keep_names;
    size_t keep_names_count;
    /** safetensors: called once for each name dropped as an exact alias of `kept`, in name
        order, after every check passed and before any byte is written (NULL: not reported).
        Both strings are borrowed for the call. */
    void (*on_dropped)(void *ctx, const char *dropped, const char *kept);
    void *ctx; /**< passed to on_dropped */
    /** sdict_save_folder: largest shard in bytes of tensor data (0: one file). */
    uint64_t max_shard_size;
    /** safetensors: called as the tensor data is written, after each piece of at most 64 MiB,
        with the bytes of tensor data written so far and their total (done == total on the last
        call), for a progress display; ctx is opts->ctx. NULL: not called. The torch zip writer
        does not call it. */
    void (*progress)(void *ctx, uint64_t done, uint64_t total);
} sdict_save_opts;

/**
 Writes root as a torch zip checkpoint exactly as torch 1.13's torch.save does (or, with
 SDICT_SAVE_LAYOUT_TORCH2, as torch 2.14's does): pickle protocol 2, records data.pkl,
 data/<key> (stored, 64-byte aligned via the FB extra field), version; ZIP64 end records;
 CRC-32 on every record. Each distinct storage is written once and keyed "0", "1", ... in
 first-seen order; tensors referencing it keep their storage_offset and stride. Tensors with
 is_parameter are saved through _rebuild_parameter. Values are pickled as the Python type
 they were read as (sdict_value_pytype). The file loads with torch.load(path) of every torch
 since 1.6 under its defaults, weights_only=True from 2.6 on: values that unpickler refuses
 (numpy values, frozensets, ints past 255 bytes) are refused with SDICT_E_UNSUPPORTED unless
 SDICT_SAVE_ALLOW_NOT_WEIGHTS_ONLY, and b'' is written as _codecs.encode('', 'latin1') where
 torch writes builtins.bytes(), which its own weights-only unpickler refuses. (torch 1.13's
 weights_only=True, off by default there, also refuses floats and bytes.)
 What torch 2.x added is written the way torch 2.x writes it, so it loads in torch 2.x (and,
 for what torch 1.13 knows, in 1.13): dtypes without a storage class through
 _rebuild_tensor_v3, the conj/neg bits as rebuild metadata, quantized tensors through
 _rebuild_qtensor, sparse tensors through _rebuild_sparse_tensor (COO without is_coalesced
 when its file had none), nested tensors through _rebuild_nested_tensor, tensor attributes
 through _rebuild_parameter_with_state / _rebuild_from_type_v2, Counter, device, complex,
 qscheme and layout values as their own reduce functions (torch 1.13 loads none of those but
 quantized tensors, COO tensors without is_coalesced, Counters, devices, complex, qschemes and
 layouts). One exception to the weights-only rule: a CSR tensor read from a torch 1.13 file
 (sdict_sparse.legacy_csr) is written, in torch 1.13's layout, through 1.13's
 _rebuild_sparse_csr_tensor, which 1.13 loads (also with weights_only=True) and torch 2.x
 cannot load at all, as it cannot load the file it came from; SDICT_SAVE_LAYOUT_TORCH2 writes
 it the 2.x way.
 The file is written beside path under a short temporary name (".sdict-PID-NNN.sdtmp", so
 any file name the filesystem allows, up to 255 bytes, can be saved), fsynced, renamed over
 path, and the directory fsynced: a failure at any point leaves any previous file untouched (a
 process killed mid-save may leave its temporary behind). Saving never destroys what torch.save
 could not overwrite: an existing file the caller may not write (torch's open(path, 'wb') fails
 on it) is refused with SDICT_E_IO and left as it was, although the folder would allow the
 rename. A symbolic link is written through as torch.save writes through it: the file at the
 end of the chain of links is replaced (the links stay as they were), or created when the link
 is dangling, as open(path, 'wb') creates it; the replaced file's mode (and, for root, owner)
 is kept; a path that exists but is not a regular file (a device, a FIFO, a directory) is
 refused with SDICT_E_IO. Nothing is written that torch could not load back: a str (value or
 key) that Python's unpickler cannot decode (not UTF-8; Python decodes with 'surrogatepass',
 so the three-byte forms of lone surrogates, ED A0 80..ED BF BF, are written and load back as
 the lone surrogates they are) is refused with SDICT_E_INVALID_ARG quoting it and naming its
 path, and so is an opts->archive_name containing '/' (torch.load would look for data.pkl
 under the text before the first '/') or longer than 4096 bytes.
 With opts->format SDICT_FORMAT_SAFETENSORS the file is a safetensors file instead, byte for
 byte what safetensors 0.8's serialize_to_file (safetensors.torch.save_file) writes for the
 same tensors and metadata (0.4.5 writes the same bytes for the dtypes it has):
 - Layout: u64 little-endian header length N, N bytes of JSON as serde_json writes it (no
   spaces; escapes \" \\ \b \f \n \r \t and \u00xx below 0x20, everything else as is), padded
   with spaces to a multiple of 8, then the tensors' bytes back to back (no alignment), each
   as its contiguous row-major little-endian elements. `__metadata__` (see opts->metadata)
   comes first; then one entry {"dtype":D,"shape":[...],"data_offsets":[BEGIN,END]} per
   tensor, sorted by safetensors' dtype order from the largest (U64, I64, F64, C64, F32, U32,
   I32, BF16, F16, U16, I16, F8_E5M2FNUZ, F8_E4M3FNUZ, F8_E8M0, F8_E4M3, F8_E5M2, I8, U8, F4,
   BOOL), then by name as bytes. safetensors 0.8 orders several metadata keys by a Rust
   HashMap, differently in each process; statedict keeps the dict's insertion order.
 - Root: a dict. Nested dicts, lists and tuples are flattened into '.'-joined names
   ({"model": {"fc.weight": t}} -> "model.fc.weight", list items by index, int dict keys in
   decimal; other key types are refused); a list or tuple made only of scalars, a set, an
   empty container and every scalar is one leaf, which is not a tensor. Two leaves that
   flatten to one name ({"a.b": t, "a": {"b": u}}) are refused naming both paths; so is a
   name "__metadata__" and a name that is not UTF-8. A dict's attributes (a state_dict's
   `_metadata`) are not written: safetensors has no place for them.
 - Dtypes: bool, uint8/16/32/64, int8/16/32/64, float16, bfloat16, float32, float64,
   complex64, the five float8 types and float4_e2m1fn_x2 (written F4 with the last dimension
   doubled, as safetensors counts 4-bit elements; a 0-dim one is refused). Any other dtype,
   quantized, sparse and nested tensors, bare storages, meta tensors (no data) and big-endian
   numpy arrays are refused naming the key (SDICT_E_UNSUPPORTED).
 - Views: a tensor that is not contiguous, carries the conj/neg bit or is part of a larger
   storage is written as a contiguous copy of its elements (copied in pieces of ~16 MiB). An
   expanded view of more than 256 MiB and more than 64 times its storage is refused
   (SDICT_E_LIMIT) rather than multiplying its input.
 - Sharing: tensors with elements that are exact aliases (same storage, storage_offset, dtype,
   shape and stride: tied weights) are written once, under the name safetensors' save_model
   keeps (the least; opts->keep_names to choose), each other name reported through
   opts->on_dropped (save_model also records dropped names in `__metadata__`; statedict does
   not). Other tensors of one storage whose byte ranges intersect are refused with
   SDICT_E_INVALID_ARG naming both, unless SDICT_SAVE_ST_COPY_OVERLAPS; disjoint views of one
   storage (a split fused weight) are each written.
 - Leaves that are not tensors are refused with SDICT_E_INVALID_ARG, the message counting and
   listing them (as many as fit), unless SDICT_SAVE_ST_DROP_NON_TENSORS or
   SDICT_SAVE_ST_NON_TENSORS_AS_METADATA.
 - A header above 100,000,000 bytes (safetensors' limit on read and write) is SDICT_E_LIMIT.
 Errors name the tensor's dotted name as the record. The file is replaced crash-safely as above.
 Errors: SDICT_E_IO (with errno text), SDICT_E_INVALID_ARG (a value torch cannot load, such as
 a tensor of one storage seen with two dtypes, a cycle or a str that is not UTF-8; unknown
 opts->flags bits; an unusable archive name; for safetensors the cases listed above),
 SDICT_E_UNSUPPORTED (a value torch's weights-only unpickler refuses, or a numpy value that
 cannot be written back as numpy; the message names its dotted path; for safetensors a tensor
 it cannot hold), SDICT_E_LIMIT (nesting deeper than 1000; for safetensors the header or an
 expanded view), SDICT_E_NOMEM.
*/
SDICT_API sdict_status sdict_save(const char *path, const sdict_value *root,
                                  const sdict_save_opts *opts, sdict_error *err);

/**
 As sdict_save, into a new heap buffer (*out_data, *out_size) freed with sdict_free_buffer.
 The archive name is opts->archive_name, or "archive" (torch's name for file objects); the
 values and archive names sdict_save refuses are refused the same way.
*/
SDICT_API sdict_status sdict_save_buffer(const sdict_value *root, const sdict_save_opts *opts,
                                         void **out_data, size_t *out_size, sdict_error *err);
/** Frees a buffer returned by sdict_save_buffer. NULL-tolerant. */
SDICT_API void sdict_free_buffer(void *data);

/**
 Writes root (a dict of str -> tensor) as a Hugging Face model folder dir, as huggingface_hub
 1.23's save_torch_state_dict lays it out (and transformers' from_pretrained reads it).
 - opts->format SDICT_FORMAT_SAFETENSORS writes model.safetensors, or shards
   model-00001-of-0000N.safetensors; SDICT_FORMAT_ZIP (or 0) writes pytorch_model.bin, or
   pytorch_model-00001-of-0000N.bin (torch zip files, opts->flags applying to each).
 - Split: huggingface_hub's greedy rule over opts->max_shard_size bytes (0: no limit), in the
   dict's order; a tensor counts its storage's bytes, once per storage (tensors of one storage
   go to the shard of its first tensor); a tensor above the limit gets a shard of its own. When
   there is more than one shard, the index (model.safetensors.index.json /
   pytorch_model.bin.index.json: metadata.total_size, then the metadata, then weight_map) is
   written byte for byte as huggingface_hub's json.dump(index, f, indent=2).
 - safetensors only, as huggingface_hub's _remove_duplicate_names: of tensors overlapping in
   one storage, the first name in sorted order among those covering the whole storage is kept
   (the first of them in opts->keep_names, if any is listed); the others are left out, passed
   to opts->on_dropped and recorded in the metadata as DROPPED: KEPT. Overlapping tensors none
   of which covers its storage are refused unless SDICT_SAVE_ST_COPY_OVERLAPS.
 - Metadata: opts->metadata, else the root doc's (sdict_doc_metadata), str -> str: in each
   safetensors file's __metadata__ after {"format": "pt"} when there is one file, in the index
   otherwise.
 - Files: every target is checked first (a symbolic link among them is refused before
   anything is written); each file is written crash-safely as sdict_save writes one, under a
   hidden staging name (.NAME.sdict-new), and renamed into place only once all are written;
   then files of the same pattern (PREFIX.EXT, PREFIX-NNNNN-of-NNNNN.EXT,
   PREFIX.EXT.index.json) this save did not write are removed, as huggingface_hub removes
   them; the index is renamed into place last. dir is created when missing (one level). An
   empty dict writes one file without tensors.
 Non-tensor leaves are refused (SDICT_E_UNSUPPORTED, naming the key) unless
 SDICT_SAVE_ST_DROP_NON_TENSORS leaves them out; tensors with Python attributes are refused.
 Errors: those of sdict_save (err->file naming the file being written); SDICT_E_INVALID_ARG
 (NULL or empty dir, root not a dict, a key that is not a str, a format other than zip or
 safetensors, metadata that is not str -> str, overlapping tensors without a complete one);
 SDICT_E_UNSUPPORTED; SDICT_E_IO (dir cannot be created, listed, or a stale file removed);
 SDICT_E_NOMEM. A failure while writing (a full disk, an I/O error) removes the staged files
 and leaves the folder's earlier files as they were; only a failing rename, after every file is
 written, can leave some files new and some old (each complete; the previous index, if any, is
 untouched).
*/
SDICT_API sdict_status sdict_save_folder(const char *dir, const sdict_value *root,
                                         const sdict_save_opts *opts, sdict_error *err);

/**
 Writes root as a torch.distributed.checkpoint folder, as torch 2.14's
 `dcp.save(root, checkpoint_id=dir)` writes it from one process (no process group): the state
 dict flattened as DCP flattens it (every dict descended with str() keys, an empty dict
 dropped; a list descended only when it holds a tensor or a dict, else one item; a tuple
 always one item; fqn = the path joined with '.'), one file `__0_0.distcp` holding each
 non-tensor item and then each tensor item (a torch.save archive of torch 2.7+'s records,
 archive folder "archive"; tensors as contiguous copies, storage offset 0), and `.metadata`
 (Metadata version "1.0.0", planner_data, StorageMeta with a fresh UUID4 save_id and dir as
 checkpoint_id). torch 2.6 and 2.14 `dcp.load` it into a state dict of the same structure, on any
 number of ranks, and `dcp_to_torch_save` converts it. Crash-safe: the data file is written
 and fsynced as `__0_0.distcp.partial` first (a failure there, such as a full disk, leaves a
 previous checkpoint in dir as it was), then an existing `.metadata` is removed (durably), the
 data file renamed into place, and `.metadata` written last through a temporary file, so an
 interrupted save leaves a folder without `.metadata` (refused by every reader as
 unfinished), never an old `.metadata` over new data.
 Other files in dir are left alone. Items are streamed to the data file one by one (a
 contiguous tensor's bytes are written from where they are, others through a contiguous copy).
 It is the one-rank case of sdict_dcp_plan_local ... sdict_dcp_commit below.

 @param dir   folder to write (created if missing; its parent must exist).
 @param root  a dict (any doc); must not be NULL.
 @param err   optional detail.
 @return SDICT_OK, or SDICT_E_INVALID_ARG (root not a dict, duplicated flatten keys such as 1
         and '1' in one dict), SDICT_E_UNSUPPORTED (quantized or meta tensors, dict keys other
         than str/int/bool, values sdict_save refuses), SDICT_E_LIMIT (nesting over 1024),
         SDICT_E_IO, SDICT_E_NOMEM.
*/
SDICT_API sdict_status sdict_save_dcp(const char *dir, const sdict_value *root, sdict_error *err);

/*==================================================================================================
 MARK: Reading a distributed checkpoint lazily (DCP's load planner: only overlapping chunks)
==================================================================================================*/

/** An open DCP folder: its `.metadata`, checked, and its `.distcp` files opened on first use. */
typedef struct sdict_dcp sdict_dcp;

/** One entry of a DCP folder's state_dict_metadata (a flattened fqn). All pointers are borrowed
    from the handle and valid until sdict_dcp_close. */
typedef struct sdict_dcp_entry {
    const char *fqn;              /**< flattened key (the path joined with '.') */
    bool is_tensor;               /**< false: a non-tensor ("bytes") item, read with
                                       sdict_dcp_read_value; the fields below are 0 / NULL */
    sdict_dtype dtype;            /**< TensorProperties.dtype */
    int32_t ndim;                 /**< rank of the global tensor */
    const int64_t *shape;         /**< ndim global sizes, outermost first */
    size_t n_chunks;              /**< saved chunks (one per shard the ranks wrote) */
    const int64_t *chunk_offsets; /**< n_chunks * ndim element offsets, chunk-major */
    const int64_t *chunk_sizes;   /**< n_chunks * ndim sizes, chunk-major */
} sdict_dcp_entry;

/**
 Opens a torch.distributed.checkpoint folder reading only `.metadata` (torch's
 FileSystemReader.read_metadata) with the allow-list and every check sdict_load applies to it,
 plus each tensor entry's chunk geometry: dtype byte-sized, every chunk inside the global shape
 with a storage_data entry, chunk volumes adding up to the element count. Every `.distcp` file
 is opened (mapped unless SDICT_LOAD_COPY; with it, one descriptor at a time) and every item
 checked to lie inside its file, but no `.distcp` byte is read here. Reads come from the files
 of this `.metadata`: a mapping keeps the file it was made of when a later save renames new
 files over it; a file read with SDICT_LOAD_COPY that has to be reopened must be the same file
 of the same size, else the read fails (SDICT_E_IO). Mapped files must not shrink while d is
 open (SIGBUS, as for sdict_load's mapped files); SDICT_LOAD_COPY is for files rewritten in
 place.

 @param dir   the folder; must not be NULL.
 @param opts  NULL, or load options: limits, SDICT_LOAD_COPY (pread instead of mapping the
              `.distcp` files), SDICT_LOAD_VERIFY_CRC (items' zip CRCs checked when read).
 @param out   out: the handle, close with sdict_dcp_close; NULL on failure.
 @return SDICT_OK, or what sdict_load returns for a DCP folder's `.metadata` (SDICT_E_FORMAT
         for a folder without it — an unfinished save —, _PICKLE_*, _SHAPE, _LIMIT, _IO), with
         err naming the file; SDICT_E_FORMAT / _IO (an item file missing, not a regular file or
         leaving the folder), SDICT_E_TRUNCATED (an item past its file's end), naming the
         file; SDICT_E_INVALID_ARG; SDICT_E_NOMEM.
*/
SDICT_API sdict_status sdict_dcp_open(const char *dir, const sdict_load_opts *opts,
                                      sdict_dcp **out, sdict_error *err);
/** Closes d (NULL is allowed). Tensors and values read from it stay valid. */
SDICT_API void sdict_dcp_close(sdict_dcp *d);
/** Number of entries (fqns) of d; 0 for NULL. */
SDICT_API size_t sdict_dcp_entry_count(const sdict_dcp *d);
/** Entry i in state_dict_metadata order (the order dcp_to_torch_save keeps), or NULL. */
SDICT_API const sdict_dcp_entry *sdict_dcp_entry_at(const sdict_dcp *d, size_t i);
/** The entry named fqn, or NULL. */
SDICT_API const sdict_dcp_entry *sdict_dcp_find(const sdict_dcp *d, const char *fqn);
/** How many items (torch.save archives inside the `.distcp` files) d has read so far. */
SDICT_API uint64_t sdict_dcp_items_read(const sdict_dcp *d);

/**
 Reads a region of tensor fqn into a new contiguous tensor of doc, as DCP's load planner does
 for a destination shard (create_read_items_for_chunk_list, then torch.load of each saved chunk
 that overlaps and a narrow + copy_): only the items of chunks overlapping the region are read.
 Each item read must be a tensor of the recorded dtype and of its chunk's sizes; the chunks
 must cover the region exactly once.

 @param offsets  ndim element offsets of the region, or NULL for zeros.
 @param lengths  ndim lengths, or NULL for the global shape (the whole tensor with offsets
                 NULL). offsets[k] + lengths[k] <= shape[k]; a length may be 0.
 @param out      out: the tensor value (shape = lengths, contiguous strides, storage offset 0,
                 its own storage); NULL on failure.
 @return SDICT_OK, or SDICT_E_NOT_FOUND (no such fqn), SDICT_E_INVALID_ARG (NULL, a
         non-tensor entry, a region outside the tensor), SDICT_E_FORMAT / _DTYPE / _SHAPE /
         _STORAGE (an item that is no tensor of its chunk, chunks overlapping or leaving a hole
         in the region; err names the `.distcp` file and the item's bytes), SDICT_E_IO (also a
         file reopened that changed since sdict_dcp_open), SDICT_E_TRUNCATED, SDICT_E_NOMEM.
*/
SDICT_API sdict_status sdict_dcp_read_region(sdict_dcp *d, const char *fqn,
                                             const int64_t *offsets, const int64_t *lengths,
                                             sdict_doc *doc, sdict_value **out,
                                             sdict_error *err);

/**
 Reads the non-tensor (bytes) item fqn into doc with sdict_load's allow-list (DCP's
 DefaultLoadPlanner.load_bytes reads it with torch.load).

 @param out  out: the value (ints, floats, str, lists, dicts, tuples, tensors inside tuples);
             NULL on failure.
 @return SDICT_OK, or SDICT_E_NOT_FOUND, SDICT_E_INVALID_ARG (NULL, a tensor entry), the
         pickle and zip errors of the item (naming file and bytes), SDICT_E_IO, SDICT_E_NOMEM.
*/
SDICT_API sdict_status sdict_dcp_read_value(sdict_dcp *d, const char *fqn, sdict_doc *doc,
                                            sdict_value **out, sdict_error *err);

/*==================================================================================================
 MARK: Distributed checkpoints from many processes (DCP's local plan -> global plan -> write)

 A multi-rank `dcp.save` as torch 2.14 runs it with the default planner and FileSystemWriter,
 split into steps the caller connects with any transport (MPI: statedict_mpi.h):
   1. every rank: sdict_dcp_plan_local(its state dict, its shards) -> local plan bytes;
   2. one rank (the coordinator): sdict_dcp_plan_global(all local plans) -> the global plan
      (deduplicated as DefaultSavePlanner does: each item replicated on several ranks is written
      by one of them, decided before anything is written), and sdict_dcp_begin(dir);
   3. every rank: sdict_dcp_write_rank(the global plan) writes `__<rank>_0.distcp.partial`
      durably and returns its written plan (items, chunk geometry, dtype, file offset and
      length);
   4. the coordinator, once every rank succeeded: sdict_dcp_commit(every written plan) removes
      an old `.metadata`, renames the staged files to `__<rank>_0.distcp` and writes the new
      `.metadata`. A save that failed before step 4 leaves a previous checkpoint in dir as it
      was (each rank removes its staged file with sdict_dcp_discard); a crash during step 4
      leaves no `.metadata` (an unfinished save that every reader refuses).
 sdict_save_dcp is exactly these steps with one rank. Plan buffers are plain bytes (no
 pointers), freed with sdict_free_buffer, and valid on any process of the same byte order.
==================================================================================================*/

/** One tensor of a rank's state dict that is a shard (a chunk) of a larger global tensor, as
    a DTensor or ShardedTensor local shard is for DCP. Tensors of the state dict that no shard
    names are saved whole (offsets 0, global shape = their shape) and deduplicated across the
    ranks that hold them (replicated). */
typedef struct sdict_dcp_shard {
    const char *fqn;             /**< the tensor's flattened key (path joined with '.') */
    const int64_t *global_shape; /**< ndim sizes of the global tensor, outermost first */
    const int64_t *offsets;      /**< ndim element offsets of the local tensor inside it */
} sdict_dcp_shard;

/** sdict_dcp_plan_global flag: keep a replicated item on the lowest rank holding it
    (`DefaultSavePlanner(dedup_save_to_lowest_rank=True)`, torch <= 2.2's behaviour) instead of
    the rank with the fewest planned bytes. */
#define SDICT_DCP_DEDUP_LOWEST_RANK 1u

/**
 A rank's local save plan (DCP's `create_local_plan`): root flattened as sdict_save_dcp
 flattens it, one item per leaf: a tensor (its dtype, global shape, chunk offsets and sizes,
 taken from the shard naming it, else the whole tensor) or a non-tensor value (a bytes item).

 @param root      the rank's state dict (a dict); must not be NULL.
 @param shards    n_shards shard descriptions (each fqn must be a tensor leaf of root, its
                  arrays as long as that tensor's ndim); NULL when n_shards is 0.
 @param plan      out: new buffer, free with sdict_free_buffer; NULL on failure.
 @param plan_len  out: its length in bytes.
 @return SDICT_OK, or as sdict_save_dcp's flattening (SDICT_E_INVALID_ARG also for a shard
         naming no tensor leaf or NULL arrays), SDICT_E_SHAPE (a shard outside its global
         shape), SDICT_E_LIMIT (over 64 dimensions),
         SDICT_E_NOMEM.
*/
SDICT_API sdict_status sdict_dcp_plan_local(const sdict_value *root,
                                            const sdict_dcp_shard *shards, size_t n_shards,
                                            void **plan, size_t *plan_len, sdict_error *err);

/**
 The global plan of world local plans (plans[r] from rank r): DCP's `dedup_save_plans` (torch
 2.3+: each unique (fqn, chunk offsets), in order of first appearance, is kept by the rank
 holding it with the fewest bytes planned so far, ties to the lowest rank, adding the global
 tensor's numel * element size, or 1 for a non-tensor item) and `_validate_global_plan` (per fqn
 one kind, dtype and global shape on every rank; kept chunks inside it, not overlapping, and
 covering it).

 @param flags       0 or SDICT_DCP_DEDUP_LOWEST_RANK.
 @param global      out: new buffer (every rank's plan with its rank and keep marks), free with
                    sdict_free_buffer; NULL on failure.
 @return SDICT_OK, or SDICT_E_INVALID_ARG (NULL, world 0, a fqn that is a tensor on one rank
         and not on another), SDICT_E_FORMAT (a buffer that is no local plan, with the byte
         offset), SDICT_E_DTYPE / SDICT_E_SHAPE (ranks disagree on a tensor's dtype or global
         shape; chunks overlap or leave a hole, naming fqn and rank), SDICT_E_NOMEM.
*/
SDICT_API sdict_status sdict_dcp_plan_global(const void *const *plans, const size_t *plan_lens,
                                             size_t world, uint32_t flags, void **global,
                                             size_t *global_len, sdict_error *err);

/**
 Starts a save into dir: creates the folder if missing. Nothing in it changes until
 sdict_dcp_commit, so a checkpoint already there stays readable while the ranks write. Call
 once, on the coordinator, before any rank writes.

 @return SDICT_OK, or SDICT_E_INVALID_ARG, SDICT_E_IO (dir exists and is no folder, mkdir
         failed), SDICT_E_NOMEM.
*/
SDICT_API sdict_status sdict_dcp_begin(const char *dir, sdict_error *err);

/**
 Removes rank's staged file `dir/__<rank>_0.distcp.partial` after a save that will not be
 committed (another rank failed); a missing file is no error. The previous checkpoint in dir,
 if any, is untouched.

 @return SDICT_OK, or SDICT_E_INVALID_ARG (dir NULL), SDICT_E_IO (unlink failed, naming the
         file), SDICT_E_NOMEM.
*/
SDICT_API sdict_status sdict_dcp_discard(const char *dir, size_t rank, sdict_error *err);

/**
 Writes rank's file, staged as `dir/__<rank>_0.distcp.partial` until sdict_dcp_commit renames
 it to `__<rank>_0.distcp` (DCP's `write_data`): the items the global plan
 keeps on this rank, non-tensor items first and then tensors, in plan order, each a torch.save
 archive as sdict_save_dcp writes them (a shard saved as a contiguous tensor with storage
 offset 0, its bytes streamed from the local tensor); through a temporary file, fsync and
 rename. A leftover staged file (a crashed save's) is replaced, and a link planted under that
 name removed first, never written through. An empty file when the rank keeps nothing (torch does
 the same).

 @param root, shards, n_shards  exactly what this rank passed to sdict_dcp_plan_local.
 @param written      out: the rank's written plan (the save's number of ranks, the staged
                     file's inode and modification time, and the rank's plan with file
                     offsets and lengths in bytes), free with
                     sdict_free_buffer; NULL on failure.
 @return SDICT_OK, or SDICT_E_INVALID_ARG (rank >= world; root or shards differ from the
         rank's plan), SDICT_E_FORMAT (not a global plan), the errors of sdict_save_buffer for
         an item, SDICT_E_IO (naming the file), SDICT_E_NOMEM.
*/
SDICT_API sdict_status sdict_dcp_write_rank(const char *dir, size_t rank, const sdict_value *root,
                                            const sdict_dcp_shard *shards, size_t n_shards,
                                            const void *global, size_t global_len,
                                            void **written, size_t *written_len,
                                            sdict_error *err);

/**
 Finishes a save (FileSystemWriter.finish): from every rank's written plan (written[r] from
 rank r) writes `dir/.metadata` as torch 2.14 does for that multi-rank save — state_dict_metadata
 in order of first appearance with each sharded tensor's chunks in rank order, planner_data of
 every fqn, storage_data of each rank's items (non-tensor first) naming `__<r>_0.distcp`,
 StorageMeta (dir as checkpoint_id, a fresh UUID4 save_id), version "1.0.0". Each rank's
 staged file must exist and end exactly where its last item does. Then an old `.metadata` is
 removed durably (unlink, folder fsync), the staged files renamed to `__<r>_0.distcp`, and
 `.metadata` written through a temporary file, fsync, rename and a folder fsync: a crash in
 between leaves a folder without `.metadata`, never an old one over new data. Call only after
 every rank's sdict_dcp_write_rank succeeded.

 Before anything in dir changes, the written plans must make one save, as
 sdict_dcp_plan_global checked it: world plans of a save by world ranks, each item where
 sdict_dcp_write_rank put it, and, over all ranks, per fqn one kind, dtype and global shape,
 tensor chunks neither overlapping nor leaving a hole, each non-tensor value written once
 (plans of two saves staged into one folder, or edited plans, are refused); and each staged
 file must still be the one its rank wrote (same inode and modification time: another save
 into the folder replaces it).

 @return SDICT_OK, or SDICT_E_INVALID_ARG (NULL, world 0, plans out of rank order, a local or
         global plan, a written plan of a save by another number of ranks, a kept item not
         written or not where sdict_dcp_write_rank puts it, a value written by no rank or by
         several), SDICT_E_FORMAT (a buffer that is no plan), SDICT_E_DTYPE / SDICT_E_SHAPE
         (the plans disagree on a tensor's dtype or global shape, chunks overlap or leave a
         hole), SDICT_E_IO (a rank's staged file missing, not a regular file, of another size
         or replaced since the rank wrote it, naming it; writing .metadata), SDICT_E_NOMEM.
*/
SDICT_API sdict_status sdict_dcp_commit(const char *dir, const void *const *written,
                                        const size_t *written_lens, size_t world,
                                        sdict_error *err);

/*==================================================================================================
 MARK: Inspection without loading
==================================================================================================*/

/** One global referenced by a file's pickles, reported by sdict_scan. */
typedef struct sdict_scan_item {
    const char *module;   /**< "torch._utils", "os" */
    const char *name;     /**< "_rebuild_tensor_v2", "system" */
    bool allowed;         /**< statedict's loader would accept it */
    const char *record;   /**< the pickle record ("lenet/data.pkl") */
    int64_t offset;       /**< byte offset of the opcode in that record */
} sdict_scan_item;

/**
 Runs the loader's pickle machine over every pickle of the file without reading tensor data,
 calling fn once per global reference (GLOBAL, STACK_GLOBAL, INST) in file order. Refused
 globals do not stop the scan: pickles are read as with SDICT_LOAD_INERT (calls and BUILDs on
 refused globals make inert objects; a BUILD a load would refuse is skipped), the globals of
 legacy header pickles are reported as refused, and after a first pickle that is not torch's
 magic number the pickles that follow it are scanned too. Pointers in the item are valid
 during the call only. *unsafe_count receives the number of refused references.
 A safetensors file has no pickle: its header is checked (every rule sdict_load applies) and
 it reports no globals (*unsafe_count 0).
 Errors: those of sdict_load for the container, or the pickle error that stopped the scan
 (SDICT_E_PICKLE_UNSAFE_GLOBAL included: an extension code, for one); any error means the file
 was not read to its end, and the items reported before it stand.
*/
SDICT_API sdict_status sdict_scan(const char *path, const sdict_load_opts *opts,
                                  void (*fn)(void *ctx, const sdict_scan_item *item), void *ctx,
                                  size_t *unsafe_count, sdict_error *err);

/**
 Verifies a file end to end: the container structure (including every rule that refuses an
 ambiguous zip archive, SDICT_E_ZIP_CORRUPT "ambiguous zip: ..."), the CRC-32 of every record,
 the pickle (allow-list), and every storage size and tensor extent. Returns SDICT_OK only when
 everything was checked and holds, else the first failure with its detail. A zip written with
 CRCs off (torch 2.6+ set_crc32_options(False)) is not OK: its records carry no CRC to verify
 them against, so after every other check passes this returns SDICT_E_CRC "no CRC recorded"
 naming the first such record and the count (see SDICT_LOAD_VERIFY_CRC).
 A safetensors file (which has no checksums) is OK when its header passes every rule of
 sdict_load; no tensor bytes are read.
*/
SDICT_API sdict_status sdict_verify(const char *path, sdict_error *err);

#ifdef __cplusplus
}
#endif

#endif /* STATEDICT_H */
