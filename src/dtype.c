/*
 dtype.c - the dtype table: torch's names, element sizes and legacy storage classes
 (FORMAT.md 1.7). Dtypes torch added after typed storages were retired (torch 2.14's
 storage._new_dtypes(): uint16/32/64, complex32, bcomplex32, float8 and float4 types, bits
 types) have no storage class and travel as UntypedStorage plus _rebuild_tensor_v3's dtype
 argument; so do uint1..7 and int1..7, which torch lists as dtypes but cannot save tensors of.
 The quantized dtypes keep their legacy classes (QInt8Storage, ...); quint4x2 and quint2x4
 pack two and four elements per byte. float4_e2m1fn and float6_e2m3fn/e3m2fn are
 safetensors' sub-byte floats (F4, F6_E2M3, F6_E3M2), which no torch has: 4 and 6 bits each,
 packed from the first byte.
*/
#include "internal.h"

#include <string.h>

typedef struct dtype_info {
    const char *name;
    size_t size;
    const char *storage_class;
    size_t bits; /* 0: 8 * size */
} dtype_info;

static const dtype_info dtypes[SDICT_DTYPE_COUNT] = {
    [SDICT_FLOAT64] = {"float64", 8, "DoubleStorage"},
    [SDICT_FLOAT32] = {"float32", 4, "FloatStorage"},
    [SDICT_FLOAT16] = {"float16", 2, "HalfStorage"},
    [SDICT_BFLOAT16] = {"bfloat16", 2, "BFloat16Storage"},
    [SDICT_COMPLEX128] = {"complex128", 16, "ComplexDoubleStorage"},
    [SDICT_COMPLEX64] = {"complex64", 8, "ComplexFloatStorage"},
    [SDICT_COMPLEX32] = {"complex32", 4, NULL},
    [SDICT_INT64] = {"int64", 8, "LongStorage"},
    [SDICT_INT32] = {"int32", 4, "IntStorage"},
    [SDICT_INT16] = {"int16", 2, "ShortStorage"},
    [SDICT_INT8] = {"int8", 1, "CharStorage"},
    [SDICT_UINT8] = {"uint8", 1, "ByteStorage"},
    [SDICT_UINT16] = {"uint16", 2, NULL},
    [SDICT_UINT32] = {"uint32", 4, NULL},
    [SDICT_UINT64] = {"uint64", 8, NULL},
    [SDICT_BOOL] = {"bool", 1, "BoolStorage"},
    [SDICT_FLOAT8_E4M3FN] = {"float8_e4m3fn", 1, NULL},
    [SDICT_FLOAT8_E5M2] = {"float8_e5m2", 1, NULL},
    [SDICT_FLOAT8_E4M3FNUZ] = {"float8_e4m3fnuz", 1, NULL},
    [SDICT_FLOAT8_E5M2FNUZ] = {"float8_e5m2fnuz", 1, NULL},
    [SDICT_FLOAT8_E8M0FNU] = {"float8_e8m0fnu", 1, NULL},
    [SDICT_FLOAT4_E2M1FN_X2] = {"float4_e2m1fn_x2", 1, NULL},
    [SDICT_BITS8] = {"bits8", 1, NULL},
    [SDICT_BITS16] = {"bits16", 2, NULL},
    [SDICT_BITS1X8] = {"bits1x8", 1, NULL},
    [SDICT_BITS2X4] = {"bits2x4", 1, NULL},
    [SDICT_BITS4X2] = {"bits4x2", 1, NULL},
    [SDICT_BCOMPLEX32] = {"bcomplex32", 4, NULL},
    [SDICT_QINT8] = {"qint8", 1, "QInt8Storage"},
    [SDICT_QUINT8] = {"quint8", 1, "QUInt8Storage"},
    [SDICT_QINT32] = {"qint32", 4, "QInt32Storage"},
    [SDICT_QUINT4X2] = {"quint4x2", 1, "QUInt4x2Storage", 4},
    [SDICT_QUINT2X4] = {"quint2x4", 1, "QUInt2x4Storage", 2},
    [SDICT_UINT1] = {"uint1", 1, NULL},
    [SDICT_UINT2] = {"uint2", 1, NULL},
    [SDICT_UINT3] = {"uint3", 1, NULL},
    [SDICT_UINT4] = {"uint4", 1, NULL},
    [SDICT_UINT5] = {"uint5", 1, NULL},
    [SDICT_UINT6] = {"uint6", 1, NULL},
    [SDICT_UINT7] = {"uint7", 1, NULL},
    [SDICT_INT1] = {"int1", 1, NULL},
    [SDICT_INT2] = {"int2", 1, NULL},
    [SDICT_INT3] = {"int3", 1, NULL},
    [SDICT_INT4] = {"int4", 1, NULL},
    [SDICT_INT5] = {"int5", 1, NULL},
    [SDICT_INT6] = {"int6", 1, NULL},
    [SDICT_INT7] = {"int7", 1, NULL},
    /* safetensors' sub-byte floats (no torch dtype) */
    [SDICT_FLOAT4_E2M1FN] = {"float4_e2m1fn", 1, NULL, 4},
    [SDICT_FLOAT6_E2M3FN] = {"float6_e2m3fn", 1, NULL, 6},
    [SDICT_FLOAT6_E3M2FN] = {"float6_e3m2fn", 1, NULL, 6},
};

/* torch's aliases (torch.float is float32, torch.half float16, ...), which also name dtypes
   when a file pickles the dtype object itself. */
static const struct {
    const char *alias;
    sdict_dtype dtype;
} aliases[] = {
    {"double", SDICT_FLOAT64}, {"float", SDICT_FLOAT32},       {"half", SDICT_FLOAT16},
    {"cdouble", SDICT_COMPLEX128}, {"cfloat", SDICT_COMPLEX64}, {"chalf", SDICT_COMPLEX32},
    {"long", SDICT_INT64},     {"int", SDICT_INT32},           {"short", SDICT_INT16},
    {"bit", SDICT_UINT1},
};

const char *sdict_dtype_name(sdict_dtype dtype) {
    if ((unsigned)dtype >= SDICT_DTYPE_COUNT)
        return "?";
    return dtypes[dtype].name;
}

size_t sdict_dtype_size(sdict_dtype dtype) {
    if ((unsigned)dtype >= SDICT_DTYPE_COUNT)
        return 0;
    return dtypes[dtype].size;
}

size_t sdict_dtype_bits(sdict_dtype dtype) {
    if ((unsigned)dtype >= SDICT_DTYPE_COUNT)
        return 0;
    return dtypes[dtype].bits ? dtypes[dtype].bits : 8 * dtypes[dtype].size;
}

const char *sdict_dtype_storage_class(sdict_dtype dtype) {
    if ((unsigned)dtype >= SDICT_DTYPE_COUNT)
        return NULL;
    return dtypes[dtype].storage_class;
}

sdict_status sdict_dtype_from_name(const char *name, sdict_dtype *out) {
    if (out)
        *out = SDICT_DTYPE_COUNT;
    if (!name || !out)
        return SDICT_E_INVALID_ARG;
    if (strncmp(name, "torch.", 6) == 0)
        name += 6;
    for (int i = 0; i < SDICT_DTYPE_COUNT; i++) {
        if (strcmp(name, dtypes[i].name) == 0) {
            *out = (sdict_dtype)i;
            return SDICT_OK;
        }
    }
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++) {
        if (strcmp(name, aliases[i].alias) == 0) {
            *out = aliases[i].dtype;
            return SDICT_OK;
        }
    }
    return SDICT_E_DTYPE;
}

bool sdict__dtype_from_storage_class(const char *name, sdict_dtype *out) {
    if (!name)
        return false;
    /* torch ignores the module ("torch.cuda.FloatStorage" loads as FloatStorage); do the same
       in case a caller passes a dotted name. */
    const char *dot = strrchr(name, '.');
    if (dot)
        name = dot + 1;
    for (int i = 0; i < SDICT_DTYPE_COUNT; i++) {
        if (dtypes[i].storage_class && strcmp(name, dtypes[i].storage_class) == 0) {
            if (out)
                *out = (sdict_dtype)i;
            return true;
        }
    }
    return false;
}
