/*
 sdict_resave - test driver for the save interop tests (the python scripts in tests/save).

   sdict_resave [OPTIONS] resave IN OUT    load IN with sdict_load and write it to OUT with
                                           sdict_save
   sdict_resave [OPTIONS] build OUT        write a tree built with the public API that covers
                                           every dtype, 0-dim, empty, views, tied weights,
                                           parameters, nested checkpoint values;
                                           tests/save/check_built.py knows its content
   sdict_resave [OPTIONS] build_wo OUT     the same tensors without floats/bytes/sets, so torch
                                           1.13's weights_only=True unpickler can load it
   sdict_resave [OPTIONS] build2 OUT       the "build" tree plus what only torch 2.x loads (the
                                           uint16/32/64 and float8 dtypes, dtype values of
                                           them) and the Python types sdict_pytype keeps
                                           (torch.Size, bytearray), without the int past 255
                                           bytes: everything torch 2.x's default
                                           torch.load(weights_only=True) accepts;
                                           tests/save2/check_built2.py knows its content
 OPTIONS: --torch2 (SDICT_SAVE_LAYOUT_TORCH2), --allow-not-weights-only
 (SDICT_SAVE_ALLOW_NOT_WEIGHTS_ONLY; "build" always sets it: its int of 264 bytes needs it).

 Exit status 0 on success, 1 with the formatted sdict_error on stderr otherwise.
*/
#include <statedict.h>

#include "internal.h" /* sdict__int_from_le_bytes: ints past int64 */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what, const sdict_error *err) {
    char buf[1024];
    fprintf(stderr, "sdict_resave: %s: %s\n", what, sdict_error_format(err, buf, sizeof buf));
    return 1;
}

#define CHECK(expr)                                                                               \
    do {                                                                                          \
        if ((expr) != SDICT_OK)                                                                   \
            return fail(#expr, &err);                                                             \
    } while (0)
#define CHECKV(v)                                                                                 \
    do {                                                                                          \
        if (!(v)) {                                                                               \
            fprintf(stderr, "sdict_resave: out of memory creating %s\n", #v);                    \
            return 1;                                                                             \
        }                                                                                         \
    } while (0)

/* Value of element i for the test pattern of a dtype: small integers that every dtype
   represents exactly ((i * 7 + 3) % 11 - 5, bool: odd). check_built.py computes the same. */
static double pattern(size_t i) { return (double)((long)((i * 7 + 3) % 11) - 5); }

/* The float8 bits of a small integer v (exact in every float8 format): sign, biased exponent,
   mbits bits of fraction; 0 is +0 (the fnuz formats have no -0). */
static uint8_t float8(double v, int mbits, int bias) {
    if (v == 0)
        return 0;
    unsigned sign = v < 0 ? 0x80u : 0u;
    double a = fabs(v);
    int e = 0;
    while (a >= 2) {
        a /= 2;
        e++;
    }
    unsigned frac = (unsigned)((a - 1) * (1 << mbits));
    return (uint8_t)(sign | ((unsigned)(e + bias) << mbits) | frac);
}

/* Fills a storage of n elements of dtype with the pattern. Only byte-level encodings are
   needed: float types via their bit layouts for the few values -5..5. */
static void fill(sdict_dtype dt, void *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        double v = pattern(i);
        switch (dt) {
        case SDICT_FLOAT64: ((double *)p)[i] = v; break;
        case SDICT_FLOAT32: ((float *)p)[i] = (float)v; break;
        case SDICT_COMPLEX128: ((double *)p)[2 * i] = v; ((double *)p)[2 * i + 1] = -v; break;
        case SDICT_COMPLEX64: ((float *)p)[2 * i] = (float)v; ((float *)p)[2 * i + 1] = (float)-v; break;
        case SDICT_INT64: ((int64_t *)p)[i] = (int64_t)v; break;
        case SDICT_INT32: ((int32_t *)p)[i] = (int32_t)v; break;
        case SDICT_INT16: ((int16_t *)p)[i] = (int16_t)v; break;
        case SDICT_INT8: ((int8_t *)p)[i] = (int8_t)v; break;
        case SDICT_UINT8: ((uint8_t *)p)[i] = (uint8_t)(v + 5); break;
        case SDICT_UINT16: ((uint16_t *)p)[i] = (uint16_t)(v + 5); break;
        case SDICT_UINT32: ((uint32_t *)p)[i] = (uint32_t)(v + 5); break;
        case SDICT_UINT64: ((uint64_t *)p)[i] = (uint64_t)(v + 5); break;
        case SDICT_FLOAT8_E4M3FN: ((uint8_t *)p)[i] = float8(v, 3, 7); break;
        case SDICT_FLOAT8_E5M2: ((uint8_t *)p)[i] = float8(v, 2, 15); break;
        case SDICT_FLOAT8_E4M3FNUZ: ((uint8_t *)p)[i] = float8(v, 3, 8); break;
        case SDICT_FLOAT8_E5M2FNUZ: ((uint8_t *)p)[i] = float8(v, 2, 16); break;
        case SDICT_BOOL: ((uint8_t *)p)[i] = (uint8_t)(i & 1); break;
        case SDICT_FLOAT16: case SDICT_BFLOAT16: {
            /* half / bfloat16 from the float32 bits (exact for small integers) */
            float f = (float)v;
            uint32_t b;
            memcpy(&b, &f, 4);
            uint16_t h;
            if (dt == SDICT_BFLOAT16) {
                h = (uint16_t)(b >> 16);
            } else if (v == 0) {
                h = 0;
            } else {
                uint32_t sign = b >> 31, exp = ((b >> 23) & 0xff) - 127 + 15, man = (b >> 13) & 0x3ff;
                h = (uint16_t)((sign << 15) | (exp << 10) | man);
            }
            ((uint16_t *)p)[i] = h;
            break;
        }
        default: break;
        }
    }
}

/* A fresh contiguous tensor value of dtype and shape filled with the pattern. */
static sdict_status add_tensor(sdict_doc *doc, sdict_value *dict, const char *key, sdict_dtype dt,
                               int32_t ndim, const int64_t *shape, sdict_error *err) {
    size_t n = 1;
    for (int32_t i = 0; i < ndim; i++)
        n *= (size_t)shape[i];
    sdict_storage *s = NULL;
    sdict_status st = sdict_storage_new(n * sdict_dtype_size(dt), &s, err);
    if (st)
        return st;
    fill(dt, sdict_storage_data(s), n);
    sdict_tensor t;
    sdict_value *v = NULL;
    int64_t *stride = calloc(ndim ? (size_t)ndim : 1, sizeof *stride);
    st = stride ? sdict_tensor_init(&t, dt, ndim, shape, stride, s, err) : SDICT_E_NOMEM;
    if (!st)
        st = sdict_tensor_new(doc, &t, &v, err); /* copies shape and stride */
    free(stride);
    sdict_storage_release(s);
    if (!st)
        st = sdict_dict_set_str(dict, key, v);
    return st;
}

static uint32_t save_flags; /* from the options */

static int build(const char *out, bool weights_only, bool torch2_tree) {
    sdict_error err;
    memset(&err, 0, sizeof err);
    sdict_doc *doc = NULL;
    CHECK(sdict_doc_new(&doc, &err));
    sdict_value *root = sdict_dict_new(doc, false);
    sdict_value *tensors = sdict_dict_new(doc, true);
    CHECKV(root && tensors);
    CHECK(sdict_dict_set_str(root, "tensors", tensors));

    /* every dtype torch 1.13 can load, shape (2, 3) */
    static const sdict_dtype dts[] = {SDICT_FLOAT64, SDICT_FLOAT32, SDICT_FLOAT16, SDICT_BFLOAT16,
                                      SDICT_COMPLEX128, SDICT_COMPLEX64, SDICT_INT64, SDICT_INT32,
                                      SDICT_INT16, SDICT_INT8, SDICT_UINT8, SDICT_BOOL};
    const int64_t shape23[2] = {2, 3};
    for (size_t i = 0; i < sizeof dts / sizeof dts[0]; i++)
        CHECK(add_tensor(doc, tensors, sdict_dtype_name(dts[i]), dts[i], 2, shape23, &err));
    /* 0-dim, empty, 4-d */
    CHECK(add_tensor(doc, tensors, "scalar", SDICT_INT64, 0, NULL, &err));
    const int64_t empty[2] = {0, 4};
    CHECK(add_tensor(doc, tensors, "empty", SDICT_FLOAT32, 2, empty, &err));
    const int64_t shape4[4] = {2, 1, 3, 2};
    CHECK(add_tensor(doc, tensors, "four_d", SDICT_FLOAT32, 4, shape4, &err));

    /* views on one storage of 24 float32: base (24), slice base[2:8].view(2,3),
       transpose of base.view(4,6), and an expanded (stride 0) row */
    sdict_storage *s = NULL;
    CHECK(sdict_storage_new(24 * 4, &s, &err));
    fill(SDICT_FLOAT32, sdict_storage_data(s), 24);
    sdict_tensor t;
    sdict_value *v;
    const int64_t n24 = 24;
    int64_t shape[2], stride[2];
    CHECK(sdict_tensor_init(&t, SDICT_FLOAT32, 1, &n24, stride, s, &err));
    CHECK(sdict_tensor_new(doc, &t, &v, &err));
    CHECK(sdict_dict_set_str(tensors, "view_base", v));
    t.ndim = 2; t.shape = shape; t.stride = stride;
    shape[0] = 2; shape[1] = 3; stride[0] = 3; stride[1] = 1; t.storage_offset = 2;
    CHECK(sdict_tensor_new(doc, &t, &v, &err));
    CHECK(sdict_dict_set_str(tensors, "view_slice", v));
    shape[0] = 6; shape[1] = 4; stride[0] = 1; stride[1] = 6; t.storage_offset = 0;
    CHECK(sdict_tensor_new(doc, &t, &v, &err));
    CHECK(sdict_dict_set_str(tensors, "view_t", v));
    shape[0] = 3; shape[1] = 5; stride[0] = 0; stride[1] = 1; t.storage_offset = 7;
    CHECK(sdict_tensor_new(doc, &t, &v, &err));
    CHECK(sdict_dict_set_str(tensors, "view_expand", v));
    sdict_storage_release(s);

    /* tied weights: two Parameters over one storage, plus the same value object twice */
    CHECK(sdict_storage_new(10 * 3 * 4, &s, &err));
    fill(SDICT_FLOAT32, sdict_storage_data(s), 30);
    const int64_t emb[2] = {10, 3};
    CHECK(sdict_tensor_init(&t, SDICT_FLOAT32, 2, emb, stride, s, &err));
    t.is_parameter = true;
    t.requires_grad = true;
    CHECK(sdict_tensor_new(doc, &t, &v, &err));
    CHECK(sdict_dict_set_str(tensors, "tied_a", v));
    CHECK(sdict_dict_set_str(tensors, "same_object", v));
    t.requires_grad = false;
    CHECK(sdict_tensor_new(doc, &t, &v, &err));
    CHECK(sdict_dict_set_str(tensors, "tied_b", v));
    sdict_storage_release(s);

    /* _metadata on the OrderedDict, as Module.state_dict() has */
    sdict_value *meta = sdict_dict_new(doc, true);
    sdict_value *ver = sdict_dict_new(doc, false);
    sdict_value *attrs = sdict_dict_new(doc, false);
    CHECKV(meta && ver && attrs);
    CHECK(sdict_dict_set_str(ver, "version", sdict_int_new(doc, 2)));
    CHECK(sdict_dict_set_str(meta, "", ver));
    CHECK(sdict_dict_set_str(attrs, "_metadata", meta));
    CHECK(sdict_dict_set_attrs(tensors, attrs));

    /* checkpoint-style values */
    CHECK(sdict_dict_set_str(root, "epoch", sdict_int_new(doc, 7)));
    sdict_value *ints = sdict_list_new(doc);
    CHECKV(ints);
    static const int64_t iv[] = {0, 1, 255, 256, 65535, 65536, -1, -129, INT32_MAX, INT32_MIN,
                                 (int64_t)INT32_MAX + 1, (int64_t)INT32_MIN - 1, INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < sizeof iv / sizeof iv[0]; i++)
        CHECK(sdict_seq_append(ints, sdict_int_new(doc, iv[i])));
    CHECK(sdict_dict_set_str(root, "ints", ints));
    CHECK(sdict_dict_set_str(root, "none", sdict_none_new(doc)));
    CHECK(sdict_dict_set_str(root, "yes", sdict_bool_new(doc, true)));
    CHECK(sdict_dict_set_str(root, "no", sdict_bool_new(doc, false)));
    CHECK(sdict_dict_set_str(root, "text", sdict_str_new(doc, "h\xc3\xa9llo\0x", 8)));
    sdict_value *tup = sdict_tuple_new(doc);
    CHECKV(tup);
    for (int i = 0; i < 5; i++)
        CHECK(sdict_seq_append(tup, sdict_int_new(doc, i)));
    CHECK(sdict_dict_set_str(root, "tuple5", tup));
    sdict_value *nested = sdict_list_new(doc);
    sdict_value *inner = sdict_tuple_new(doc);
    CHECKV(nested && inner);
    CHECK(sdict_seq_append(inner, sdict_str_new(doc, "a", 1)));
    CHECK(sdict_seq_append(inner, sdict_tuple_new(doc)));
    CHECK(sdict_seq_append(nested, inner));
    CHECK(sdict_seq_append(nested, inner)); /* same tuple twice: BINGET */
    CHECK(sdict_dict_set_str(root, "nested", nested));

    /* optimizer-style state with int keys */
    sdict_value *opt = sdict_dict_new(doc, false);
    sdict_value *state = sdict_dict_new(doc, false);
    sdict_value *groups = sdict_list_new(doc);
    sdict_value *group = sdict_dict_new(doc, false);
    sdict_value *params = sdict_list_new(doc);
    CHECKV(opt && state && groups && group && params);
    sdict_value *step_key = sdict_str_new(doc, "step", 4);
    for (int64_t p = 0; p < 3; p++) {
        sdict_value *ps = sdict_dict_new(doc, false);
        CHECKV(ps);
        CHECK(sdict_dict_set(ps, step_key, sdict_int_new(doc, 10 + p)));
        CHECK(add_tensor(doc, ps, "momentum_buffer", SDICT_FLOAT32, 1, &emb[1], &err));
        CHECK(sdict_dict_set(state, sdict_int_new(doc, p), ps));
        CHECK(sdict_seq_append(params, sdict_int_new(doc, p)));
    }
    CHECK(sdict_dict_set_str(group, "params", params));
    CHECK(sdict_dict_set_str(group, "nesterov", sdict_bool_new(doc, false)));
    CHECK(sdict_dict_set_str(group, "foreach", sdict_none_new(doc)));
    CHECK(sdict_seq_append(groups, group));
    CHECK(sdict_dict_set_str(opt, "state", state));
    CHECK(sdict_dict_set_str(opt, "param_groups", groups));
    CHECK(sdict_dict_set_str(root, "optimizer", opt));

    if (!weights_only) {
        /* floats, bytes, a set, a big int, a dtype value: not loadable by 1.13 weights_only */
        sdict_value *floats = sdict_list_new(doc);
        CHECKV(floats);
        static const double fv[] = {0.0, -0.0, 1.5, -2.25e-300, 1e300, 0.1};
        for (size_t i = 0; i < sizeof fv / sizeof fv[0]; i++)
            CHECK(sdict_seq_append(floats, sdict_float_new(doc, fv[i])));
        CHECK(sdict_seq_append(floats, sdict_float_new(doc, INFINITY)));
        CHECK(sdict_dict_set_str(root, "floats", floats));
        CHECK(sdict_dict_set_str(group, "lr", sdict_float_new(doc, 0.01)));
        CHECK(sdict_dict_set_str(root, "bytes", sdict_bytes_new(doc, "a\0\xff\x80z", 5)));
        CHECK(sdict_dict_set_str(root, "empty_bytes", sdict_bytes_new(doc, "", 0)));
        sdict_value *set = sdict_set_new(doc);
        CHECKV(set);
        CHECK(sdict_seq_append(set, sdict_int_new(doc, 3)));
        CHECK(sdict_seq_append(set, sdict_str_new(doc, "x", 1)));
        CHECK(sdict_dict_set_str(root, "set", set));
        /* Python ints past int64 (LONG1, and LONG4 past 255 bytes): 2**100, -(2**70), 2**2100.
           The public API has no constructor for them; the internal one the loader uses does. */
        uint8_t big[264];
        memset(big, 0, sizeof big);
        big[12] = 0x10; /* 2**100 = 0x10 << 96 */
        CHECK(sdict_dict_set_str(root, "big_pos", sdict__int_from_le_bytes(doc, big, 13)));
        memset(big, 0, sizeof big);
        big[8] = 0xc0; /* -(2**70): ...ffc0 00*8 */
        CHECK(sdict_dict_set_str(root, "big_neg", sdict__int_from_le_bytes(doc, big, 9)));
        memset(big, 0, sizeof big);
        if (!torch2_tree) {
            big[262] = 0x10; /* 2**2100 = 0x10 << (262*8) */
            CHECK(sdict_dict_set_str(root, "big_huge", sdict__int_from_le_bytes(doc, big, 264)));
        } else {
            big[254] = 0x40; /* 2**2038 = 0x40 << (254*8): 255 bytes, the most LONG1 holds */
            CHECK(sdict_dict_set_str(root, "big_255", sdict__int_from_le_bytes(doc, big, 255)));
        }
        CHECK(sdict_dict_set_str(root, "dtype", sdict_dtype_value_new(doc, SDICT_BFLOAT16)));
        /* a meta tensor: shape and strides without data */
        sdict_tensor mt;
        int64_t mstride[2];
        CHECK(sdict_tensor_init(&mt, SDICT_FLOAT16, 2, shape23, mstride, NULL, &err));
        mstride[0] = 1;
        mstride[1] = 2;
        CHECK(sdict_tensor_new(doc, &mt, &v, &err));
        CHECK(sdict_dict_set_str(root, "meta", v));
    }

    if (torch2_tree) {
        /* dtypes only torch 2.x has (UntypedStorage + _rebuild_tensor_v3), and their dtype
           values */
        static const sdict_dtype v3[] = {SDICT_UINT16, SDICT_UINT32, SDICT_UINT64,
                                         SDICT_FLOAT8_E4M3FN, SDICT_FLOAT8_E5M2,
                                         SDICT_FLOAT8_E4M3FNUZ, SDICT_FLOAT8_E5M2FNUZ};
        sdict_value *v3d = sdict_dict_new(doc, false), *v3t = sdict_list_new(doc);
        CHECKV(v3d && v3t);
        for (size_t i = 0; i < sizeof v3 / sizeof v3[0]; i++) {
            CHECK(add_tensor(doc, v3d, sdict_dtype_name(v3[i]), v3[i], 2, shape23, &err));
            CHECK(sdict_seq_append(v3t, sdict_dtype_value_new(doc, v3[i])));
        }
        /* a uint16 view sharing its storage with another uint16 tensor */
        sdict_tensor u = *sdict_value_tensor(sdict_dict_get(v3d, "uint16"));
        static const int64_t ushape[1] = {4}, ustride[1] = {1};
        u.ndim = 1; u.shape = ushape; u.stride = ustride; u.storage_offset = 2;
        CHECK(sdict_tensor_new(doc, &u, &v, &err));
        CHECK(sdict_dict_set_str(v3d, "uint16_view", v));
        CHECK(sdict_dict_set_str(root, "v3", v3d));
        CHECK(sdict_dict_set_str(root, "v3_dtypes", v3t));
        /* Python types kept by sdict_pytype */
        sdict_value *size = sdict_tuple_new(doc), *size0 = sdict_tuple_new(doc);
        CHECKV(size && size0);
        CHECK(sdict_seq_append(size, sdict_int_new(doc, 2)));
        CHECK(sdict_seq_append(size, sdict_int_new(doc, 3)));
        CHECK(sdict_value_set_pytype(size, SDICT_PYTYPE_TORCH_SIZE));
        CHECK(sdict_value_set_pytype(size0, SDICT_PYTYPE_TORCH_SIZE));
        CHECK(sdict_dict_set_str(root, "size", size));
        CHECK(sdict_dict_set_str(root, "size0", size0));
        sdict_value *ba = sdict_bytes_new(doc, "x\0\xff", 3), *ba0 = sdict_bytes_new(doc, "", 0);
        CHECKV(ba && ba0);
        CHECK(sdict_value_set_pytype(ba, SDICT_PYTYPE_BYTEARRAY));
        CHECK(sdict_value_set_pytype(ba0, SDICT_PYTYPE_BYTEARRAY));
        CHECK(sdict_dict_set_str(root, "bytearray", ba));
        CHECK(sdict_dict_set_str(root, "bytearray0", ba0));
        CHECK(sdict_dict_set_str(root, "one_byte", sdict_bytes_new(doc, "\xe9", 1)));
        CHECK(sdict_dict_set_str(root, "one_char", sdict_str_new(doc, "\xc3\xa9", 2)));
        CHECK(sdict_dict_set_str(root, "empty_str", sdict_str_new(doc, "", 0)));
    }

    CHECK(sdict_doc_set_root(doc, root));
    sdict_save_opts o = {.archive_name = NULL, .flags = save_flags | (weights_only || torch2_tree ? 0u
                                             : (uint32_t)SDICT_SAVE_ALLOW_NOT_WEIGHTS_ONLY)};
    CHECK(sdict_save(out, root, &o, &err));
    sdict_doc_free(doc);
    return 0;
}

static int resave(const char *in, const char *out) {
    sdict_error err;
    memset(&err, 0, sizeof err);
    sdict_doc *doc = NULL;
    CHECK(sdict_load(in, NULL, &doc, &err));
    sdict_save_opts o = {.archive_name = NULL, .flags = save_flags};
    sdict_status st = sdict_save(out, sdict_doc_root(doc), &o, &err);
    sdict_doc_free(doc);
    if (st)
        return fail("sdict_save", &err);
    return 0;
}

int main(int argc, char **argv) {
    while (argc > 1 && strncmp(argv[1], "--", 2) == 0) {
        if (strcmp(argv[1], "--torch2") == 0)
            save_flags |= SDICT_SAVE_LAYOUT_TORCH2;
        else if (strcmp(argv[1], "--allow-not-weights-only") == 0)
            save_flags |= SDICT_SAVE_ALLOW_NOT_WEIGHTS_ONLY;
        else
            break;
        argv++;
        argc--;
    }
    if (argc == 4 && strcmp(argv[1], "resave") == 0)
        return resave(argv[2], argv[3]);
    if (argc == 3 && strcmp(argv[1], "build") == 0)
        return build(argv[2], false, false);
    if (argc == 3 && strcmp(argv[1], "build_wo") == 0)
        return build(argv[2], true, false);
    if (argc == 3 && strcmp(argv[1], "build2") == 0)
        return build(argv[2], false, true);
    fprintf(stderr, "usage: sdict_resave [--torch2] [--allow-not-weights-only] "
                    "resave IN OUT | build OUT | build_wo OUT | build2 OUT\n");
    return 2;
}
