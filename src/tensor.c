/*
 tensor.c - tensor geometry (numel, contiguity, extent checks) and strided copies with dtype
 conversion.

 Geometry follows torch exactly: strides and storage_offset count elements, contiguous strides
 are computed with max(size, 1) so size-0 and size-1 dimensions are ignored by
 is_contiguous(). Conversions mirror Tensor.to(): ints wrap modulo 2^bits, floats truncate
 toward zero, bool is != 0. float16 and bfloat16 are rounded here from the exact source value
 (round to nearest, ties to even); from float32 this matches torch bit for bit (checked on
 200,000 values with torch 1.13). torch rounds float64 sources through float32 first, so about
 3 in 100,000 float64 values differ from torch by one unit in the last place, where the float32
 step lands exactly on a float16/bfloat16 tie; statedict gives the correctly rounded value.
*/
#include "internal.h"

#include <math.h>
#include <string.h>

/*==================================================================================================
 MARK: Geometry
==================================================================================================*/

/* True when t's dimension arrays can be read: ndim >= 0 and both arrays present when needed. */
static bool dims_readable(const sdict_tensor *t) {
    return t && t->ndim >= 0 && (t->ndim == 0 || (t->shape && t->stride));
}

int64_t sdict_tensor_numel(const sdict_tensor *t) {
    if (!dims_readable(t))
        return -1;
    int64_t n = 1;
    for (int32_t k = 0; k < t->ndim; k++) {
        if (t->shape[k] < 0 || !sdict__mul_i64(n, t->shape[k], &n))
            return -1;
    }
    return n;
}

/* Bytes holding n elements of dtype d: n * size, or ceil(n * bits / 8) for the packed
   quantized dtypes. False on overflow. */
static bool elems_to_bytes(sdict_dtype d, uint64_t n, uint64_t *out) {
    size_t bits = sdict_dtype_bits(d);
    if (bits % 8 == 0)
        return sdict__mul_u64(n, bits / 8, out);
    uint64_t b;
    if (!sdict__mul_u64(n, bits, &b) || !sdict__add_u64(b, 7, &b))
        return false;
    *out = b / 8;
    return true;
}

const char *sdict_tensor_device(const sdict_tensor *t) {
    if (!t)
        return NULL;
    return t->storage ? sdict_storage_location(t->storage) : "meta";
}

size_t sdict_tensor_nbytes(const sdict_tensor *t) {
    int64_t n = sdict_tensor_numel(t);
    uint64_t b;
    if (n < 0 || !elems_to_bytes(t->dtype, (uint64_t)n, &b) || b > SIZE_MAX)
        return 0;
    return (size_t)b;
}

bool sdict_tensor_is_contiguous(const sdict_tensor *t) {
    int64_t n = sdict_tensor_numel(t);
    if (n < 0)
        return false;
    if (n == 0)
        return true;
    int64_t expected = 1;
    for (int32_t k = t->ndim - 1; k >= 0; k--) {
        if (t->shape[k] == 1)
            continue;
        if (t->stride[k] != expected)
            return false;
        expected *= t->shape[k]; /* cannot overflow: bounded by numel */
    }
    return true;
}

void *sdict_tensor_data(const sdict_tensor *t) {
    if (!t || !t->storage)
        return NULL;
    uint8_t *base = sdict_storage_data(t->storage);
    if (!base)
        return NULL;
    return base + (size_t)t->storage_offset * sdict_dtype_bits(t->dtype) / 8;
}

sdict_status sdict_tensor_check(const sdict_tensor *t, sdict_error *err) {
    if (!t)
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "tensor is NULL");
    size_t esize = sdict_dtype_size(t->dtype);
    if (esize == 0)
        return sdict__err(err, SDICT_E_DTYPE, NULL, -1, "invalid dtype %d", (int)t->dtype);
    if (t->ndim < 0)
        return sdict__err(err, SDICT_E_SHAPE, NULL, -1, "negative rank %d", (int)t->ndim);
    if (!dims_readable(t))
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1,
                          "rank %d but the shape or stride array is NULL", (int)t->ndim);
    if (t->storage_offset < 0)
        return sdict__err(err, SDICT_E_SHAPE, NULL, -1, "negative storage_offset %lld",
                          (long long)t->storage_offset);
    int64_t numel = 1;
    for (int32_t k = 0; k < t->ndim; k++) {
        if (t->shape[k] < 0)
            return sdict__err(err, SDICT_E_SHAPE, NULL, -1, "negative size %lld in dimension %d",
                              (long long)t->shape[k], (int)k);
        if (t->stride[k] < 0)
            return sdict__err(err, SDICT_E_SHAPE, NULL, -1,
                              "negative stride %lld in dimension %d", (long long)t->stride[k],
                              (int)k);
        if (!sdict__mul_i64(numel, t->shape[k], &numel))
            return sdict__err(err, SDICT_E_SHAPE, NULL, -1, "element count overflows int64");
    }
    uint64_t nbytes;
    if (!elems_to_bytes(t->dtype, (uint64_t)numel, &nbytes) || nbytes > SIZE_MAX ||
        nbytes > INT64_MAX)
        return sdict__err(err, SDICT_E_SHAPE, NULL, -1,
                          "%lld elements of %zu bytes overflow the address space",
                          (long long)numel, esize);
    size_t bits = sdict_dtype_bits(t->dtype);
    if (bits % 8 && ((uint64_t)t->storage_offset * bits) % 8)
        return sdict__err(err, SDICT_E_SHAPE, NULL, -1,
                          "storage_offset %lld of a %s tensor does not start on a byte",
                          (long long)t->storage_offset, sdict_dtype_name(t->dtype));
    if (numel == 0 || !t->storage)
        return SDICT_OK; /* empty and meta tensors touch no bytes */
    /* last element index = offset + sum((size_k - 1) * stride_k); extent is one past it */
    int64_t last = t->storage_offset, term;
    for (int32_t k = 0; k < t->ndim; k++) {
        if (!sdict__mul_i64(t->shape[k] - 1, t->stride[k], &term) ||
            !sdict__add_i64(last, term, &last))
            return sdict__err(err, SDICT_E_SHAPE, NULL, -1,
                              "tensor extent overflows int64 (dimension %d)", (int)k);
    }
    uint64_t need;
    if (!elems_to_bytes(t->dtype, (uint64_t)last + 1, &need))
        return sdict__err(err, SDICT_E_SHAPE, NULL, -1, "tensor extent in bytes overflows");
    size_t have = sdict_storage_nbytes(t->storage);
    if (need > have)
        return sdict__err(err, SDICT_E_STORAGE, NULL, -1,
                          "storage holds %zu bytes but the tensor (%s, offset %lld) needs %llu",
                          have, sdict_dtype_name(t->dtype), (long long)t->storage_offset,
                          (unsigned long long)need);
    return SDICT_OK;
}

sdict_status sdict_tensor_init(sdict_tensor *t, sdict_dtype dtype, int32_t ndim,
                               const int64_t *shape, int64_t *stride, sdict_storage *storage,
                               sdict_error *err) {
    if (!t)
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "tensor is NULL");
    memset(t, 0, sizeof *t);
    if (sdict_dtype_size(dtype) == 0)
        return sdict__err(err, SDICT_E_DTYPE, NULL, -1, "invalid dtype %d", (int)dtype);
    if (ndim < 0)
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "negative rank %d", (int)ndim);
    if (ndim > 0 && (!shape || !stride))
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "shape or stride array is NULL");
    for (int32_t k = 0; k < ndim; k++) {
        if (shape[k] < 0)
            return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1,
                              "negative size %lld in dimension %d", (long long)shape[k], (int)k);
    }
    /* torch's contiguous strides: stride[k] = stride[k+1] * max(size[k+1], 1) */
    int64_t s = 1;
    for (int32_t k = ndim - 1; k >= 0; k--) {
        stride[k] = s;
        if (!sdict__mul_i64(s, shape[k] > 1 ? shape[k] : 1, &s))
            return sdict__err(err, SDICT_E_SHAPE, NULL, -1, "strides overflow int64");
    }
    t->dtype = dtype;
    t->ndim = ndim;
    t->shape = shape;
    t->stride = stride;
    t->storage = storage;
    return sdict_tensor_check(t, err);
}

/*==================================================================================================
 MARK: float16 / bfloat16
==================================================================================================*/

/* A small binary float format: exponent and mantissa widths; IEEE-style with infinities. */
typedef struct small_fmt {
    int exp_bits, man_bits;
    uint16_t nan; /* canonical quiet NaN (without sign) */
    bool nan_signed;
} small_fmt;

static const small_fmt FMT_F16 = {5, 10, 0x7E00, true};
/* c10's scalar bfloat16 rounding returns 0x7FC0 for every NaN, dropping the sign (torch
   1.13's vectorised float32 path writes 0xFFFF instead; both are NaN). float16 keeps the
   sign: 0x7E00 / 0xFE00, as torch does. */
static const small_fmt FMT_BF16 = {8, 7, 0x7FC0, false};

/*
 Rounds the value sign * m * 2^e2 (m any 64-bit magnitude) to the format, to nearest with
 ties to even, overflowing to infinity. Works for doubles and 64-bit integers alike, so no
 double rounding happens on the way.
*/
static uint16_t round_small(bool neg, uint64_t m, int e2, small_fmt f) {
    uint16_t sign = neg ? (uint16_t)(1u << (f.exp_bits + f.man_bits)) : 0;
    if (m == 0)
        return sign;
    int bias = (1 << (f.exp_bits - 1)) - 1;
    int emin = 1 - bias;
    int lsb_min = emin - f.man_bits;            /* exponent of the smallest subnormal */
    int top = e2 + 63 - __builtin_clzll(m);     /* floor(log2 |x|) */
    int lsb = top - f.man_bits;
    if (lsb < lsb_min)
        lsb = lsb_min;
    int shift = lsb - e2;
    uint64_t q;
    if (shift <= 0) {
        q = m << -shift; /* exact; q < 2^(man_bits+1) so no overflow */
    } else if (shift >= 64) {
        q = 0; /* m < 2^64 <= half an lsb: rounds to zero */
        if (shift == 64 && m > (UINT64_C(1) << 63))
            q = 1;
    } else {
        q = m >> shift;
        uint64_t rem = m & ((UINT64_C(1) << shift) - 1);
        uint64_t half = UINT64_C(1) << (shift - 1);
        if (rem > half || (rem == half && (q & 1)))
            q++;
    }
    /* Subnormals have lsb == lsb_min and q < 2^man_bits, encoding as q itself; a carry into
       2^man_bits becomes the smallest normal. Normals encode as (biased exponent, fraction),
       which is the same sum. */
    int64_t bits = ((int64_t)(lsb - lsb_min) << f.man_bits) + (int64_t)q;
    int64_t inf = (int64_t)((1 << f.exp_bits) - 1) << f.man_bits;
    if (bits >= inf)
        bits = inf;
    return (uint16_t)(sign | (uint16_t)bits);
}

static uint16_t small_from_double(double d, small_fmt f) {
    uint64_t u;
    memcpy(&u, &d, 8);
    bool neg = (u >> 63) != 0;
    int e = (int)((u >> 52) & 0x7FF);
    uint64_t frac = u & ((UINT64_C(1) << 52) - 1);
    uint16_t sign = neg ? (uint16_t)(1u << (f.exp_bits + f.man_bits)) : 0;
    if (e == 0x7FF) {
        if (frac)
            return (uint16_t)(f.nan | (f.nan_signed ? sign : 0));
        return (uint16_t)(sign | (((1u << f.exp_bits) - 1) << f.man_bits));
    }
    if (e == 0)
        return round_small(neg, frac, -1074, f);
    return round_small(neg, frac | (UINT64_C(1) << 52), e - 1075, f);
}

uint16_t sdict__half_from_double(double d) { return small_from_double(d, FMT_F16); }

static double small_to_double(uint16_t h, small_fmt f) {
    int man_mask = (1 << f.man_bits) - 1;
    int e = (h >> f.man_bits) & ((1 << f.exp_bits) - 1);
    int m = h & man_mask;
    bool neg = (h >> (f.exp_bits + f.man_bits)) & 1;
    int bias = (1 << (f.exp_bits - 1)) - 1;
    double v;
    if (e == (1 << f.exp_bits) - 1)
        v = m ? NAN : INFINITY;
    else if (e == 0)
        v = ldexp((double)m, 1 - bias - f.man_bits);
    else
        v = ldexp((double)(m | (1 << f.man_bits)), e - bias - f.man_bits);
    return neg ? -v : v;
}

static uint16_t small_from_int(bool is_signed, uint64_t raw, small_fmt f) {
    if (is_signed && (int64_t)raw < 0)
        return round_small(true, (uint64_t)0 - raw, 0, f);
    return round_small(false, raw, 0, f);
}

/*==================================================================================================
 MARK: Element conversion
==================================================================================================*/

/* One element in transit: a double (and an imaginary part) for float and complex sources,
   raw two's complement bits otherwise. */
typedef struct elem {
    bool is_float;
    bool is_signed;
    double d;
    double im;
    uint64_t raw;
} elem;

static bool is_real_dtype(sdict_dtype d) {
    switch (d) {
    case SDICT_FLOAT64: case SDICT_FLOAT32: case SDICT_FLOAT16: case SDICT_BFLOAT16:
    case SDICT_INT64: case SDICT_INT32: case SDICT_INT16: case SDICT_INT8:
    case SDICT_UINT8: case SDICT_UINT16: case SDICT_UINT32: case SDICT_UINT64:
    case SDICT_BOOL:
        return true;
    default:
        return false;
    }
}

static bool is_complex_dtype(sdict_dtype d) {
    return d == SDICT_COMPLEX32 || d == SDICT_BCOMPLEX32 || d == SDICT_COMPLEX64 ||
           d == SDICT_COMPLEX128;
}

static bool is_float8_dtype(sdict_dtype d) {
    return d == SDICT_FLOAT8_E4M3FN || d == SDICT_FLOAT8_E5M2 || d == SDICT_FLOAT8_E4M3FNUZ ||
           d == SDICT_FLOAT8_E5M2FNUZ || d == SDICT_FLOAT8_E8M0FNU;
}

/* Sources copy_to can read as numbers, and targets it can write. */
static bool readable(sdict_dtype d) {
    return is_real_dtype(d) || is_complex_dtype(d) || is_float8_dtype(d);
}
static bool writable(sdict_dtype d) { return is_real_dtype(d) || is_complex_dtype(d); }

/* A float8 byte, exactly: e4m3fn and the fnuz formats have no infinities (e4m3fn's all-ones
   pattern is NaN; the fnuz formats have no -0, its pattern is NaN), e5m2 is IEEE-like,
   e8m0fnu is an unsigned power of two with 0xFF as NaN. */
static double float8_to_double(sdict_dtype d, uint8_t b) {
    int ebits = 4, mbits = 3, bias = 7;
    switch (d) {
    case SDICT_FLOAT8_E8M0FNU: return b == 0xFF ? NAN : ldexp(1.0, (int)b - 127);
    case SDICT_FLOAT8_E5M2: ebits = 5, mbits = 2, bias = 15; break;
    case SDICT_FLOAT8_E4M3FNUZ: bias = 8; break;
    case SDICT_FLOAT8_E5M2FNUZ: ebits = 5, mbits = 2, bias = 16; break;
    default: break;
    }
    bool fnuz = d == SDICT_FLOAT8_E4M3FNUZ || d == SDICT_FLOAT8_E5M2FNUZ;
    unsigned e = (b >> mbits) & ((1u << ebits) - 1), m = b & ((1u << mbits) - 1);
    bool neg = (b & 0x80) != 0;
    if (fnuz && b == 0x80)
        return NAN;
    if (d == SDICT_FLOAT8_E5M2 && e == 31)
        return m ? NAN : (neg ? -INFINITY : INFINITY);
    if (d == SDICT_FLOAT8_E4M3FN && (b & 0x7F) == 0x7F)
        return NAN;
    double v = e == 0 ? ldexp((double)m, 1 - bias - mbits)
                      : ldexp((double)(m | (1u << mbits)), (int)e - bias - mbits);
    return neg ? -v : v;
}

static elem load_elem(sdict_dtype dt, const uint8_t *p) {
    elem e = {false, true, 0.0, 0.0, 0};
    switch (dt) {
    case SDICT_FLOAT64: e.is_float = true; memcpy(&e.d, p, 8); break;
    case SDICT_FLOAT32: { float f; memcpy(&f, p, 4); e.is_float = true; e.d = f; break; }
    case SDICT_FLOAT16: { uint16_t h; memcpy(&h, p, 2); e.is_float = true;
        e.d = small_to_double(h, FMT_F16); break; }
    case SDICT_BFLOAT16: { uint16_t h; memcpy(&h, p, 2); e.is_float = true;
        e.d = small_to_double(h, FMT_BF16); break; }
    case SDICT_COMPLEX128: e.is_float = true; memcpy(&e.d, p, 8); memcpy(&e.im, p + 8, 8); break;
    case SDICT_COMPLEX64: { float f[2]; memcpy(f, p, 8); e.is_float = true; e.d = f[0];
        e.im = f[1]; break; }
    case SDICT_COMPLEX32: case SDICT_BCOMPLEX32: { uint16_t h[2]; memcpy(h, p, 4);
        small_fmt f = dt == SDICT_COMPLEX32 ? FMT_F16 : FMT_BF16;
        e.is_float = true; e.d = small_to_double(h[0], f); e.im = small_to_double(h[1], f);
        break; }
    case SDICT_INT64: { int64_t v; memcpy(&v, p, 8); e.raw = (uint64_t)v; break; }
    case SDICT_INT32: { int32_t v; memcpy(&v, p, 4); e.raw = (uint64_t)(int64_t)v; break; }
    case SDICT_INT16: { int16_t v; memcpy(&v, p, 2); e.raw = (uint64_t)(int64_t)v; break; }
    case SDICT_INT8: { int8_t v; memcpy(&v, p, 1); e.raw = (uint64_t)(int64_t)v; break; }
    case SDICT_UINT8: e.is_signed = false; e.raw = p[0]; break;
    case SDICT_UINT16: { uint16_t v; memcpy(&v, p, 2); e.is_signed = false; e.raw = v; break; }
    case SDICT_UINT32: { uint32_t v; memcpy(&v, p, 4); e.is_signed = false; e.raw = v; break; }
    case SDICT_UINT64: { uint64_t v; memcpy(&v, p, 8); e.is_signed = false; e.raw = v; break; }
    case SDICT_BOOL: e.is_signed = false; e.raw = p[0] != 0; break;
    default:
        if (is_float8_dtype(dt)) {
            e.is_float = true;
            e.d = float8_to_double(dt, p[0]);
        }
        break;
    }
    return e;
}

/* Float to integer bits: truncate toward zero, then keep the low bits as two's complement
   (narrower integers wrap, as torch's casts do). C leaves out-of-range conversions undefined;
   statedict gives NaN and values outside int64 the bits x86 torch produces for int64
   (INT64_MIN, the "integer indefinite"), except that a uint64 target takes [2^63, 2^64)
   exactly. */
static uint64_t float_to_raw(double d, bool to_u64) {
    if (isnan(d))
        return (uint64_t)INT64_MIN;
    d = trunc(d);
    if (to_u64 && d >= 9223372036854775808.0 && d < 18446744073709551616.0)
        return (uint64_t)d;
    if (d >= 9223372036854775808.0 || d < -9223372036854775808.0)
        return (uint64_t)INT64_MIN;
    return (uint64_t)(int64_t)d;
}

static double raw_to_double(const elem *e) {
    return e->is_signed ? (double)(int64_t)e->raw : (double)e->raw;
}

static void store_elem(sdict_dtype dt, uint8_t *p, const elem *e) {
    switch (dt) {
    case SDICT_FLOAT64: { double v = e->is_float ? e->d : raw_to_double(e); memcpy(p, &v, 8);
        break; }
    case SDICT_FLOAT32: {
        /* int64 -> float32 directly (not via double) to round once */
        float v = e->is_float ? (float)e->d
                              : (e->is_signed ? (float)(int64_t)e->raw : (float)e->raw);
        memcpy(p, &v, 4);
        break;
    }
    case SDICT_FLOAT16: case SDICT_BFLOAT16: {
        small_fmt f = dt == SDICT_FLOAT16 ? FMT_F16 : FMT_BF16;
        uint16_t h = e->is_float ? small_from_double(e->d, f)
                                 : small_from_int(e->is_signed, e->raw, f);
        memcpy(p, &h, 2);
        break;
    }
    case SDICT_COMPLEX128: case SDICT_COMPLEX64: case SDICT_COMPLEX32: case SDICT_BCOMPLEX32: {
        /* each part as the real dtype of half the width; a real source has imaginary 0 */
        sdict_dtype part = dt == SDICT_COMPLEX128  ? SDICT_FLOAT64
                           : dt == SDICT_COMPLEX64 ? SDICT_FLOAT32
                           : dt == SDICT_COMPLEX32 ? SDICT_FLOAT16
                                                   : SDICT_BFLOAT16;
        size_t half = sdict_dtype_size(dt) / 2;
        elem im = {true, true, e->is_float ? e->im : 0.0, 0.0, 0};
        store_elem(part, p, e);
        store_elem(part, p + half, &im);
        break;
    }
    case SDICT_BOOL:
        p[0] = e->is_float ? (e->d != 0.0 || e->im != 0.0) : (e->raw != 0);
        break;
    default: {
        /* integers: the low bytes of the two's complement value (wrapping as torch does) */
        uint64_t raw = e->is_float ? float_to_raw(e->d, dt == SDICT_UINT64) : e->raw;
        switch (sdict_dtype_size(dt)) {
        case 1: { uint8_t v = (uint8_t)raw; memcpy(p, &v, 1); break; }
        case 2: { uint16_t v = (uint16_t)raw; memcpy(p, &v, 2); break; }
        case 4: { uint32_t v = (uint32_t)raw; memcpy(p, &v, 4); break; }
        default: memcpy(p, &raw, 8); break;
        }
        break;
    }
    }
}

/* Applies the lazy bits to a loaded element: conj negates the imaginary part, neg the value
   (integers wrap, as torch's neg does). */
static void apply_bits(elem *e, bool conj, bool neg) {
    if (conj)
        e->im = -e->im;
    if (neg) {
        e->d = -e->d;
        e->im = -e->im;
        e->raw = 0 - e->raw;
    }
}

/*==================================================================================================
 MARK: Strided copy
==================================================================================================*/

/* Each dimension of size >= 2 at least doubles the element count, which a checked tensor keeps
   below 2^63: a tensor with elements has at most 62 of them, whatever its rank. */
#define SQUEEZED_MAX 64

/* The sizes and strides of t's dimensions of size > 1, in order, into size/stride (room for
   SQUEEZED_MAX); returns their count. t must be checked and have elements (no size 0). */
static int32_t squeeze(const sdict_tensor *t, int64_t *size, int64_t *stride) {
    int32_t n = 0;
    for (int32_t k = 0; k < t->ndim; k++) {
        if (t->shape[k] > 1 && n < SQUEEZED_MAX) {
            size[n] = t->shape[k];
            stride[n++] = t->stride[k];
        }
    }
    return n;
}

sdict_status sdict_tensor_copy_to(const sdict_tensor *t, sdict_dtype to, void *dst,
                                  size_t dst_bytes, sdict_error *err) {
    sdict_status st = sdict_tensor_check(t, err);
    if (st != SDICT_OK)
        return st;
    if (!t->storage)
        return sdict__err(err, SDICT_E_STORAGE, NULL, -1, "meta tensor has no data to copy");
    size_t to_size = sdict_dtype_size(to);
    if (to_size == 0)
        return sdict__err(err, SDICT_E_DTYPE, NULL, -1, "invalid target dtype %d", (int)to);
    /* conj only means something for complex elements (torch sets it on nothing else) */
    bool conj = t->is_conj && is_complex_dtype(t->dtype);
    bool raw = to == t->dtype && !conj && !t->is_neg;
    if (!raw && (!readable(t->dtype) || !writable(to)))
        return sdict__err(err, SDICT_E_DTYPE, NULL, -1, "cannot convert %s%s to %s",
                          t->is_neg ? "the negative-bit view of " : "",
                          sdict_dtype_name(t->dtype), sdict_dtype_name(to));
    if (sdict_dtype_bits(t->dtype) % 8 && !sdict_tensor_is_contiguous(t))
        return sdict__err(err, SDICT_E_DTYPE, NULL, -1,
                          "a %s tensor packs several elements per byte: only contiguous ones "
                          "can be copied", sdict_dtype_name(t->dtype));
    int64_t numel = sdict_tensor_numel(t);
    /* checked: numel * 16 fits once check passed */
    uint64_t need = raw ? sdict_tensor_nbytes(t) : (uint64_t)numel * to_size;
    if (dst_bytes < need || (!dst && need))
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1,
                          "destination holds %zu bytes but the copy needs %llu", dst_bytes,
                          (unsigned long long)need);
    if (numel == 0)
        return SDICT_OK;
    const size_t esize = sdict_dtype_size(t->dtype);
    const uint8_t *src = sdict_tensor_data(t);
    uint8_t *out = dst;
    if (raw && sdict_tensor_is_contiguous(t)) {
        memcpy(out, src, (size_t)need);
        return SDICT_OK;
    }
    /* Walk the index space in C order: an odometer over the outer dimensions, a tight loop
       over the innermost. Only dimensions of size > 1 take part (size-1 ones move nothing), so
       the work is the same for any rank; with none left the tensor is one element. */
    int64_t shape[SQUEEZED_MAX], stride[SQUEEZED_MAX];
    int32_t nd = squeeze(t, shape, stride);
    int64_t inner_n = nd ? shape[nd - 1] : 1;
    int64_t inner_step = nd ? stride[nd - 1] * (int64_t)esize : 0;
    int64_t idx[SQUEEZED_MAX] = {0};
    int64_t off = 0; /* byte offset of the current row start from src */
    for (;;) {
        const uint8_t *p = src + off;
        if (raw) {
            for (int64_t i = 0; i < inner_n; i++, p += inner_step, out += esize)
                memcpy(out, p, esize);
        } else {
            for (int64_t i = 0; i < inner_n; i++, p += inner_step, out += to_size) {
                elem e = load_elem(t->dtype, p);
                apply_bits(&e, conj, t->is_neg);
                store_elem(to, out, &e);
            }
        }
        int32_t k = nd - 2;
        for (; k >= 0; k--) {
            if (idx[k] + 1 < shape[k]) {
                idx[k]++;
                off += stride[k] * (int64_t)esize;
                break;
            }
            /* (size - 1) * stride bytes is within the checked extent: no overflow */
            off -= (shape[k] - 1) * stride[k] * (int64_t)esize;
            idx[k] = 0;
        }
        if (k < 0)
            break;
    }
    return SDICT_OK;
}

/*==================================================================================================
 MARK: Byte order
==================================================================================================*/

void sdict__byteswap(void *data, size_t n_elems, size_t elem_size) {
    uint8_t *p = data;
    if (!p || elem_size < 2)
        return;
    for (size_t i = 0; i < n_elems; i++, p += elem_size) {
        switch (elem_size) {
        case 2: { uint16_t v; memcpy(&v, p, 2); v = __builtin_bswap16(v); memcpy(p, &v, 2);
            break; }
        case 4: { uint32_t v; memcpy(&v, p, 4); v = __builtin_bswap32(v); memcpy(p, &v, 4);
            break; }
        case 8: { uint64_t v; memcpy(&v, p, 8); v = __builtin_bswap64(v); memcpy(p, &v, 8);
            break; }
        default:
            for (size_t a = 0, b = elem_size - 1; a < b; a++, b--) {
                uint8_t c = p[a];
                p[a] = p[b];
                p[b] = c;
            }
        }
    }
}
