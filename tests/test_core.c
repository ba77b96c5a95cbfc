/*
 test_core.c - allocator hook, error strings and formatting, the dtype table, storages (owned,
 wrapped, mapped), file/memory sources, and the growable buffer.
*/
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../src/internal.h"

/*==================================================================================================
 Counting allocator: fails the Nth call (malloc or realloc) and tracks live blocks.
==================================================================================================*/

typedef struct counting {
    long calls;
    long fail_at; /* 1-based; 0 never fails */
    long live;
} counting;

static void *c_malloc(void *ctx, size_t n) {
    counting *c = ctx;
    if (++c->calls == c->fail_at)
        return NULL;
    void *p = malloc(n);
    if (p)
        c->live++;
    return p;
}
static void *c_realloc(void *ctx, void *p, size_t n) {
    counting *c = ctx;
    if (++c->calls == c->fail_at)
        return NULL;
    void *q = realloc(p, n);
    if (q && !p)
        c->live++;
    return q;
}
static void c_free(void *ctx, void *p) {
    counting *c = ctx;
    if (p)
        c->live--;
    free(p);
}

static void use_counting(counting *c, long fail_at) {
    memset(c, 0, sizeof *c);
    c->fail_at = fail_at;
    sdict_allocator a = {c_malloc, c_realloc, c_free, c};
    sdict_set_allocator(&a);
}

/*==================================================================================================
 alloc.c
==================================================================================================*/

static void test_alloc_basics(void **state) {
    (void)state;
    counting c;
    use_counting(&c, 0);
    void *p = sdict__malloc(0);
    assert_non_null(p); /* zero-byte requests still give a unique pointer */
    void *q = sdict__malloc(0);
    assert_ptr_not_equal(p, q);
    sdict__free(p);
    sdict__free(q);
    unsigned char *z = sdict__calloc(10, 3);
    assert_non_null(z);
    for (int i = 0; i < 30; i++)
        assert_int_equal(z[i], 0);
    z = sdict__realloc(z, 100);
    assert_non_null(z);
    assert_int_equal(z[29], 0);
    sdict__free(z);
    assert_null(sdict__calloc(SIZE_MAX / 2, 3)); /* overflow refused before allocating */
    char *s = sdict__strndup("hello world", 5);
    assert_string_equal(s, "hello");
    sdict__free(s);
    sdict__free(NULL);
    assert_int_equal(c.live, 0);
    assert_true(c.calls >= 5);
    sdict_set_allocator(NULL);
}

static void test_buf(void **state) {
    (void)state;
    sdict__buf b;
    sdict__buf_init(&b);
    sdict__buf_byte(&b, 0xAB);
    sdict__buf_le16(&b, 0x1234);
    sdict__buf_le32(&b, 0x89ABCDEFu);
    sdict__buf_le64(&b, UINT64_C(0x0102030405060708));
    static const uint8_t want[] = {0xAB, 0x34, 0x12, 0xEF, 0xCD, 0xAB, 0x89,
                                   8, 7, 6, 5, 4, 3, 2, 1};
    assert_int_equal(b.len, sizeof want);
    assert_memory_equal(b.data, want, sizeof want);
    assert_int_equal(sdict__le16(b.data + 1), 0x1234);
    assert_int_equal(sdict__le32(b.data + 3), 0x89ABCDEFu);
    assert_true(sdict__le64(b.data + 7) == UINT64_C(0x0102030405060708));
    /* grow across many reallocations and check content survives */
    for (int i = 0; i < 100000; i++)
        sdict__buf_byte(&b, (uint8_t)i);
    assert_int_equal(b.len, sizeof want + 100000);
    assert_int_equal(b.data[sizeof want + 99999], (uint8_t)99999);
    assert_int_equal(sdict__buf_status(&b, NULL), SDICT_OK);
    sdict__buf_free(&b);
    assert_null(b.data);

    /* a failed growth sets oom, later appends are ignored, status reports it once */
    counting c;
    for (long n = 1;; n++) {
        use_counting(&c, n);
        sdict__buf_init(&b);
        for (int i = 0; i < 1000; i++)
            sdict__buf_le32(&b, (uint32_t)i);
        sdict_error err;
        sdict_status st = sdict__buf_status(&b, &err);
        if (st == SDICT_OK) {
            assert_false(b.oom);
            assert_int_equal(b.len, 4000);
            sdict__buf_free(&b);
            assert_int_equal(c.live, 0);
            break;
        }
        assert_int_equal(st, SDICT_E_NOMEM);
        assert_int_equal(err.code, SDICT_E_NOMEM);
        assert_true(b.oom);
        sdict__buf_free(&b);
        assert_int_equal(c.live, 0);
        assert_true(n < 100);
    }
    sdict_set_allocator(NULL);
}

/*==================================================================================================
 error.c
==================================================================================================*/

static void test_status_str(void **state) {
    (void)state;
    for (int s = 0; s < SDICT_STATUS_COUNT; s++) {
        const char *t = sdict_status_str((sdict_status)s);
        assert_non_null(t);
        assert_true(strncmp(t, "SDICT_", 6) == 0);
        /* every status has its own text */
        for (int o = 0; o < s; o++)
            assert_string_not_equal(t, sdict_status_str((sdict_status)o));
    }
    assert_string_equal(sdict_status_str(SDICT_E_CRC), "SDICT_E_CRC: CRC mismatch");
    assert_non_null(sdict_status_str(SDICT_STATUS_COUNT));
    assert_non_null(sdict_status_str((sdict_status)-1));
    assert_int_equal(sdict_version(), SDICT_VERSION_HEX);
}

static void test_error_fill_format(void **state) {
    (void)state;
    sdict_error e;
    memset(&e, 0, sizeof e);
    sdict__err_file(&e, "model.pt");
    sdict_status st = sdict__err(&e, SDICT_E_TRUNCATED, "lenet/data.pkl", 42,
                                 "BINUNICODE length %u past end", 99u);
    assert_int_equal(st, SDICT_E_TRUNCATED);
    assert_int_equal(e.code, SDICT_E_TRUNCATED);
    assert_int_equal(e.offset, 42);
    assert_string_equal(e.file, "model.pt");
    assert_string_equal(e.record, "lenet/data.pkl");
    assert_string_equal(e.message, "BINUNICODE length 99 past end");
    char buf[256];
    assert_ptr_equal(sdict_error_format(&e, buf, sizeof buf), buf);
    assert_string_equal(buf, "model.pt: lenet/data.pkl @ 42: BINUNICODE length 99 past end");

    /* empty parts are omitted */
    sdict__err(&e, SDICT_E_IO, NULL, -1, "cannot open");
    assert_string_equal(e.record, "");
    sdict_error_format(&e, buf, sizeof buf);
    assert_string_equal(buf, "model.pt: cannot open");
    sdict__err_file(&e, "");
    sdict__err(&e, SDICT_E_ZIP_CORRUPT, NULL, 7, "bad EOCD");
    sdict_error_format(&e, buf, sizeof buf);
    assert_string_equal(buf, "@ 7: bad EOCD");

    /* truncation to the buffer, always NUL-terminated */
    sdict__err_file(&e, "model.pt");
    sdict__err(&e, SDICT_E_CRC, "a/data/0", 0, "crc");
    char small[10];
    sdict_error_format(&e, small, sizeof small);
    assert_int_equal(strlen(small), 9);
    assert_memory_equal(small, "model.pt:", 9);

    /* long inputs are truncated to the fixed arrays */
    char longname[1000];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    sdict__err_file(&e, longname);
    assert_int_equal(strlen(e.file), sizeof e.file - 1);
    sdict__err(&e, SDICT_E_CRC, longname, 1, "%s", longname);
    assert_int_equal(strlen(e.record), sizeof e.record - 1);
    assert_int_equal(strlen(e.message), sizeof e.message - 1);

    /* re-raising with the error's own fields as arguments */
    sdict__err(&e, SDICT_E_CRC, "arch/data/3", 5, "crc differs");
    sdict__err(&e, SDICT_E_STORAGE, e.record, e.offset + 1, "storage: %s", e.message);
    assert_int_equal(e.code, SDICT_E_STORAGE);
    assert_string_equal(e.record, "arch/data/3");
    assert_int_equal(e.offset, 6);
    assert_string_equal(e.message, "storage: crc differs");

    /* NULL err is allowed and still returns the code */
    assert_int_equal(sdict__err(NULL, SDICT_E_LIMIT, "r", 1, "x"), SDICT_E_LIMIT);
    sdict__err_file(NULL, "x");
}

/*==================================================================================================
 dtype.c
==================================================================================================*/

static void test_dtype_table(void **state) {
    (void)state;
    /* sizes derived from what each type is, not copied from the table */
    const struct {
        sdict_dtype d;
        const char *name;
        size_t size;
        const char *cls;
        size_t bits; /* 0: 8 * size */
    } want[] = {
        {SDICT_FLOAT64, "float64", sizeof(double), "DoubleStorage", 0},
        {SDICT_FLOAT32, "float32", sizeof(float), "FloatStorage", 0},
        {SDICT_FLOAT16, "float16", 2, "HalfStorage", 0},
        {SDICT_BFLOAT16, "bfloat16", 2, "BFloat16Storage", 0},
        {SDICT_COMPLEX128, "complex128", 2 * sizeof(double), "ComplexDoubleStorage", 0},
        {SDICT_COMPLEX64, "complex64", 2 * sizeof(float), "ComplexFloatStorage", 0},
        {SDICT_COMPLEX32, "complex32", 4, NULL, 0},
        {SDICT_INT64, "int64", sizeof(int64_t), "LongStorage", 0},
        {SDICT_INT32, "int32", sizeof(int32_t), "IntStorage", 0},
        {SDICT_INT16, "int16", sizeof(int16_t), "ShortStorage", 0},
        {SDICT_INT8, "int8", 1, "CharStorage", 0},
        {SDICT_UINT8, "uint8", 1, "ByteStorage", 0},
        {SDICT_UINT16, "uint16", 2, NULL, 0},
        {SDICT_UINT32, "uint32", 4, NULL, 0},
        {SDICT_UINT64, "uint64", 8, NULL, 0},
        {SDICT_BOOL, "bool", 1, "BoolStorage", 0},
        {SDICT_FLOAT8_E4M3FN, "float8_e4m3fn", 1, NULL, 0},
        {SDICT_FLOAT8_E5M2, "float8_e5m2", 1, NULL, 0},
        {SDICT_FLOAT8_E4M3FNUZ, "float8_e4m3fnuz", 1, NULL, 0},
        {SDICT_FLOAT8_E5M2FNUZ, "float8_e5m2fnuz", 1, NULL, 0},
        {SDICT_FLOAT8_E8M0FNU, "float8_e8m0fnu", 1, NULL, 0},
        {SDICT_FLOAT4_E2M1FN_X2, "float4_e2m1fn_x2", 1, NULL, 0},
        {SDICT_BITS8, "bits8", 1, NULL, 0},
        {SDICT_BITS16, "bits16", 2, NULL, 0},
        {SDICT_BITS1X8, "bits1x8", 1, NULL, 0},
        {SDICT_BITS2X4, "bits2x4", 1, NULL, 0},
        {SDICT_BITS4X2, "bits4x2", 1, NULL, 0},
        {SDICT_BCOMPLEX32, "bcomplex32", 4, NULL, 0},
        {SDICT_QINT8, "qint8", 1, "QInt8Storage", 0},
        {SDICT_QUINT8, "quint8", 1, "QUInt8Storage", 0},
        {SDICT_QINT32, "qint32", 4, "QInt32Storage", 0},
        {SDICT_QUINT4X2, "quint4x2", 1, "QUInt4x2Storage", 4},
        {SDICT_QUINT2X4, "quint2x4", 1, "QUInt2x4Storage", 2},
        {SDICT_UINT1, "uint1", 1, NULL, 0},
        {SDICT_UINT2, "uint2", 1, NULL, 0},
        {SDICT_UINT3, "uint3", 1, NULL, 0},
        {SDICT_UINT4, "uint4", 1, NULL, 0},
        {SDICT_UINT5, "uint5", 1, NULL, 0},
        {SDICT_UINT6, "uint6", 1, NULL, 0},
        {SDICT_UINT7, "uint7", 1, NULL, 0},
        {SDICT_INT1, "int1", 1, NULL, 0},
        {SDICT_INT2, "int2", 1, NULL, 0},
        {SDICT_INT3, "int3", 1, NULL, 0},
        {SDICT_INT4, "int4", 1, NULL, 0},
        {SDICT_INT5, "int5", 1, NULL, 0},
        {SDICT_INT6, "int6", 1, NULL, 0},
        {SDICT_INT7, "int7", 1, NULL, 0},
        {SDICT_FLOAT4_E2M1FN, "float4_e2m1fn", 1, NULL, 4},
        {SDICT_FLOAT6_E2M3FN, "float6_e2m3fn", 1, NULL, 6},
        {SDICT_FLOAT6_E3M2FN, "float6_e3m2fn", 1, NULL, 6},
    };
    assert_int_equal(sizeof want / sizeof want[0], SDICT_DTYPE_COUNT);
    for (size_t i = 0; i < SDICT_DTYPE_COUNT; i++) {
        sdict_dtype d = want[i].d;
        assert_string_equal(sdict_dtype_name(d), want[i].name);
        assert_int_equal(sdict_dtype_size(d), want[i].size);
        assert_int_equal(sdict_dtype_bits(d), want[i].bits ? want[i].bits : 8 * want[i].size);
        const char *cls = sdict_dtype_storage_class(d);
        if (want[i].cls) {
            assert_non_null(cls);
            assert_string_equal(cls, want[i].cls);
            sdict_dtype back = SDICT_DTYPE_COUNT;
            assert_true(sdict__dtype_from_storage_class(cls, &back));
            assert_int_equal(back, d);
            char dotted[96];
            snprintf(dotted, sizeof dotted, "torch.cuda.%s", cls);
            back = SDICT_DTYPE_COUNT;
            assert_true(sdict__dtype_from_storage_class(dotted, &back));
            assert_int_equal(back, d);
        } else {
            assert_null(cls);
        }
        /* name round trip, bare and with the torch. prefix */
        sdict_dtype back = SDICT_DTYPE_COUNT;
        assert_int_equal(sdict_dtype_from_name(want[i].name, &back), SDICT_OK);
        assert_int_equal(back, d);
        char full[64];
        snprintf(full, sizeof full, "torch.%s", want[i].name);
        assert_int_equal(sdict_dtype_from_name(full, &back), SDICT_OK);
        assert_int_equal(back, d);
    }
    sdict_dtype d;
    assert_int_equal(sdict_dtype_from_name("float", &d), SDICT_OK);
    assert_int_equal(d, SDICT_FLOAT32);
    assert_int_equal(sdict_dtype_from_name("torch.half", &d), SDICT_OK);
    assert_int_equal(d, SDICT_FLOAT16);
    assert_int_equal(sdict_dtype_from_name("long", &d), SDICT_OK);
    assert_int_equal(d, SDICT_INT64);
    assert_int_equal(sdict_dtype_from_name("torch.bit", &d), SDICT_OK);
    assert_int_equal(d, SDICT_UINT1);
    assert_int_equal(sdict_dtype_from_name("float33", &d), SDICT_E_DTYPE);
    assert_int_equal(d, SDICT_DTYPE_COUNT);
    assert_int_equal(sdict_dtype_from_name("", &d), SDICT_E_DTYPE);
    assert_int_not_equal(sdict_dtype_from_name(NULL, &d), SDICT_OK);
    assert_false(sdict__dtype_from_storage_class("UntypedStorage", &d));
    assert_false(sdict__dtype_from_storage_class("QInt16Storage", &d));
    assert_false(sdict__dtype_from_storage_class("Float", &d));
    assert_false(sdict__dtype_from_storage_class(NULL, &d));
    assert_string_equal(sdict_dtype_name(SDICT_DTYPE_COUNT), "?");
    assert_string_equal(sdict_dtype_name((sdict_dtype)-3), "?");
    assert_int_equal(sdict_dtype_size(SDICT_DTYPE_COUNT), 0);
    assert_int_equal(sdict_dtype_bits(SDICT_DTYPE_COUNT), 0);
    assert_null(sdict_dtype_storage_class(SDICT_DTYPE_COUNT));
}

/*==================================================================================================
 storage.c
==================================================================================================*/

static int release_calls;
static void *release_seen_data, *release_seen_ctx;
static void count_release(void *ctx, void *data) {
    release_calls++;
    release_seen_ctx = ctx;
    release_seen_data = data;
}

static void test_storage_owned_wrapped(void **state) {
    (void)state;
    sdict_storage *s = NULL;
    sdict_error err;
    assert_int_equal(sdict_storage_new(64, &s, &err), SDICT_OK);
    assert_int_equal(sdict_storage_nbytes(s), 64);
    unsigned char *p = sdict_storage_data(s);
    for (int i = 0; i < 64; i++)
        assert_int_equal(p[i], 0);
    assert_false(sdict_storage_is_mapped(s));
    assert_null(sdict_storage_key(s));
    assert_int_equal(sdict__storage_set_key(s, "17", &err), SDICT_OK);
    assert_string_equal(sdict_storage_key(s), "17");
    assert_int_equal(sdict__storage_set_key(s, "94340341200128", &err), SDICT_OK);
    assert_string_equal(sdict_storage_key(s), "94340341200128");
    assert_ptr_equal(sdict_storage_retain(s), s);
    sdict_storage_release(s);
    assert_int_equal(sdict_storage_nbytes(s), 64); /* still alive: one reference left */
    sdict_storage_release(s);
    sdict_storage_release(NULL);
    assert_null(sdict_storage_retain(NULL));

    assert_int_equal(sdict_storage_new(0, &s, &err), SDICT_OK);
    assert_null(sdict_storage_data(s));
    assert_int_equal(sdict_storage_nbytes(s), 0);
    sdict_storage_release(s);

    /* wrapped memory: the hook runs exactly once, on the last release */
    static char mem[32] = "caller bytes";
    int ctx_marker;
    release_calls = 0;
    assert_int_equal(sdict_storage_wrap(mem, sizeof mem, count_release, &ctx_marker, &s, &err),
                     SDICT_OK);
    assert_ptr_equal(sdict_storage_data(s), mem);
    assert_int_equal(sdict_storage_nbytes(s), sizeof mem);
    for (int i = 0; i < 5; i++)
        sdict_storage_retain(s);
    for (int i = 0; i < 5; i++) {
        sdict_storage_release(s);
        assert_int_equal(release_calls, 0);
    }
    sdict_storage_release(s);
    assert_int_equal(release_calls, 1);
    assert_ptr_equal(release_seen_data, mem);
    assert_ptr_equal(release_seen_ctx, &ctx_marker);

    /* wrap without hook, and argument errors */
    assert_int_equal(sdict_storage_wrap(mem, 4, NULL, NULL, &s, NULL), SDICT_OK);
    sdict_storage_release(s);
    s = (sdict_storage *)&ctx_marker;
    assert_int_equal(sdict_storage_wrap(NULL, 4, NULL, NULL, &s, &err), SDICT_E_INVALID_ARG);
    assert_null(s);
    assert_int_equal(err.code, SDICT_E_INVALID_ARG);
    assert_int_equal(sdict_storage_wrap(NULL, 0, NULL, NULL, &s, &err), SDICT_OK);
    sdict_storage_release(s);
}

static void test_storage_oom(void **state) {
    (void)state;
    counting c;
    for (long n = 1;; n++) {
        use_counting(&c, n);
        sdict_storage *s = NULL;
        sdict_error err;
        sdict_status st = sdict_storage_new(100, &s, &err);
        if (st == SDICT_OK)
            st = sdict__storage_set_key(s, "0", &err);
        sdict_storage_release(s);
        assert_int_equal(c.live, 0);
        if (st == SDICT_OK)
            break;
        assert_int_equal(st, SDICT_E_NOMEM);
        assert_int_equal(err.code, SDICT_E_NOMEM);
    }
    sdict_set_allocator(NULL);
}

static char *write_temp(const void *data, size_t n) {
    char *path = malloc(64);
    snprintf(path, 64, "/tmp/sdict_test_core_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, n), (ssize_t)n);
    close(fd);
    return path;
}

static void test_source_and_mapping(void **state) {
    (void)state;
    uint8_t content[5000];
    for (size_t i = 0; i < sizeof content; i++)
        content[i] = (uint8_t)(i * 7 + 3);
    char *path = write_temp(content, sizeof content);
    sdict_error err;
    for (int map = 0; map < 2; map++) {
        sdict__source src;
        assert_int_equal(sdict__source_open_file(&src, path, map, &err), SDICT_OK);
        assert_int_equal(src.size, sizeof content);
        if (map) {
            assert_non_null(src.data);
            assert_non_null(src.mapping);
            assert_ptr_equal(sdict__mapping_base(src.mapping), src.data);
        } else {
            assert_null(src.data);
            assert_true(src.fd >= 0);
        }
        uint8_t buf[600];
        assert_int_equal(sdict__source_read(&src, 1000, buf, 600, "r", &err), SDICT_OK);
        assert_memory_equal(buf, content + 1000, 600);
        assert_int_equal(sdict__source_read(&src, 4400, buf, 600, "r", &err), SDICT_OK);
        assert_int_equal(sdict__source_read(&src, 5000, buf, 0, "r", &err), SDICT_OK);
        assert_int_equal(sdict__source_read(&src, 4401, buf, 600, "x/data/1", &err),
                         SDICT_E_TRUNCATED);
        assert_string_equal(err.record, "x/data/1");
        assert_int_equal(err.offset, 4401);
        assert_int_equal(sdict__source_read(&src, UINT64_MAX, buf, 1, NULL, &err),
                         SDICT_E_TRUNCATED);
        assert_int_equal(sdict__source_read(&src, 5001, buf, 0, NULL, &err), SDICT_E_TRUNCATED);
        if (map) {
            /* storages keep the mapping alive after the source closes; writes are private */
            sdict_storage *a, *b;
            assert_int_equal(sdict__storage_new_mapped(src.mapping, 64, 128, &a, &err), SDICT_OK);
            assert_int_equal(sdict__storage_new_mapped(src.mapping, 0, 5000, &b, &err), SDICT_OK);
            sdict_storage *bad = NULL;
            assert_int_equal(sdict__storage_new_mapped(src.mapping, 4999, 2, &bad, &err),
                             SDICT_E_STORAGE);
            assert_null(bad);
            sdict__source_close(&src);
            assert_true(sdict_storage_is_mapped(a));
            assert_int_equal(sdict_storage_nbytes(a), 128);
            assert_memory_equal(sdict_storage_data(a), content + 64, 128);
            ((uint8_t *)sdict_storage_data(a))[0] ^= 0xFF; /* copy-on-write */
            sdict_storage_release(a);
            assert_int_equal(((uint8_t *)sdict_storage_data(b))[64], content[64] ^ 0xFF);
            assert_memory_equal((uint8_t *)sdict_storage_data(b) + 65, content + 65, 4935);
            sdict_storage_release(b);
        } else {
            sdict__source_close(&src);
        }
    }
    /* the file itself was never modified */
    FILE *f = fopen(path, "rb");
    uint8_t back[5000];
    assert_int_equal(fread(back, 1, sizeof back, f), sizeof back);
    fclose(f);
    assert_memory_equal(back, content, sizeof content);
    unlink(path);
    free(path);

    /* empty file: not mapped, reads past 0 truncate */
    path = write_temp("", 0);
    sdict__source src;
    assert_int_equal(sdict__source_open_file(&src, path, true, &err), SDICT_OK);
    assert_int_equal(src.size, 0);
    assert_null(src.mapping);
    uint8_t one;
    assert_int_equal(sdict__source_read(&src, 0, &one, 1, NULL, &err), SDICT_E_TRUNCATED);
    sdict__source_close(&src);
    unlink(path);
    free(path);

    assert_int_equal(sdict__source_open_file(&src, "/nonexistent/sdict/file.pt", true, &err),
                     SDICT_E_IO);
    assert_int_equal(err.code, SDICT_E_IO);
    assert_non_null(strstr(err.message, "/nonexistent/sdict/file.pt"));
    sdict__source_close(&src);
    assert_int_equal(sdict__source_open_file(&src, "/tmp", true, &err), SDICT_E_IO);
    sdict__source_close(&src);

    /* memory source */
    sdict__source_init_mem(&src, content, sizeof content, NULL);
    uint8_t buf[10];
    assert_int_equal(sdict__source_read(&src, 4990, buf, 10, NULL, &err), SDICT_OK);
    assert_memory_equal(buf, content + 4990, 10);
    assert_int_equal(sdict__source_read(&src, 4991, buf, 10, NULL, &err), SDICT_E_TRUNCATED);
    sdict__source_close(&src);
}

/* Text from a file is escaped for terminals: C0, DEL and C1 controls, lone surrogates, the
   format, separator and private-use characters Python's repr escapes, and bytes that are not
   UTF-8, while other UTF-8 is kept; every error part goes through it. */
static void test_escape_text(void **state) {
    (void)state;
    char out[256];
    static const struct { const char *in; size_t n; uint32_t flags; const char *want; } cases[] = {
        {"plain.key", 9, 0, "plain.key"},
        {"\x1b[31mred\x07", 9, 0, "\\x1b[31mred\\x07"},
        {"a\nb\tc\rd", 7, 0, "a\\nb\\tc\\rd"},
        {"a\nb\tc\rd", 7, SDICT_ESCAPE_KEEP_LAYOUT, "a\nb\tc\\rd"},
        {"n\0ul\x7f", 5, 0, "n\\x00ul\\x7f"},
        {"csi\xc2\x9b" "2J", 7, 0, "csi\\x9b2J"},       /* C1 as UTF-8 */
        {"nel\xc2\x85", 5, 0, "nel\\x85"},
        {"r\xc3\xa9s \xe2\x82\xac \xf0\x9f\x98\x80", 13, 0, "r\xc3\xa9s \xe2\x82\xac \xf0\x9f\x98\x80"},
        {"\xc2\xa0nbsp", 6, 0, "\\xa0nbsp"},               /* U+00A0: repr escapes it */
        {"w\xe2\x80\x8b", 4, 0, "w\\u200b"},                /* zero-width space */
        {"\xe2\x80\xae" "evil", 7, 0, "\\u202eevil"},          /* right-to-left override */
        {"a\xe2\x80\xa8" "b\xe2\x81\xa6", 8, 0, "a\\u2028b\\u2066"}, /* line sep., isolate */
        {"\xef\xbb\xbf\xee\x80\x80", 6, 0, "\\ufeff\\ue000"},  /* BOM, private use */
        {"soft\xc2\xad", 6, 0, "soft\\xad"},
        {"tag\xf3\xa0\x81\x81", 7, 0, "tag\\U000e0041"},
        {"\xe2\x80\x90\xe3\x80\x81", 6, 0, "\xe2\x80\x90\xe3\x80\x81"}, /* printable */
        {"s\xed\xa0\x80\xed\xbf\xbf", 7, 0, "s\\ud800\\udfff"},
        {"bad\xff\xfe", 5, 0, "bad\\xff\\xfe"},
        {"\xc0\x80", 2, 0, "\\xc0\\x80"},                  /* overlong */
        {"\xf4\x90\x80\x80", 4, 0, "\\xf4\\x90\\x80\\x80"}, /* past U+10FFFF */
        {"cut\xe2\x82", 5, 0, "cut\\xe2\\x82"},
        {"\x9b", 1, 0, "\\x9b"},                           /* raw C1 byte: not UTF-8 */
        {"back\\slash", 10, 0, "back\\slash"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t need = sdict_escape_text(cases[i].in, cases[i].n, cases[i].flags, out, sizeof out);
        assert_string_equal(out, cases[i].want);
        assert_int_equal(need, strlen(cases[i].want));
        assert_true(need <= 4 * cases[i].n);
        assert_int_equal(sdict_escape_text(cases[i].in, cases[i].n, cases[i].flags, NULL, 0), need);
    }
    /* truncation never cuts an escape, and reports the full length */
    char small[6];
    assert_int_equal(sdict_escape_text("ab\x1b" "cd", 5, 0, small, sizeof small), 8);
    assert_string_equal(small, "ab");
    assert_int_equal(sdict_escape_text("abcdefgh", 8, 0, small, sizeof small), 8);
    assert_string_equal(small, "abcde");

    /* every part of a formatted error is escaped */
    sdict_error e;
    memset(&e, 0, sizeof e);
    sdict__err_file(&e, "m\x1b]0;t\x07.pt");
    sdict__err(&e, SDICT_E_PICKLE_UNSAFE_GLOBAL, "a\x1b[2J/data.pkl", 3, "global 'os\xc2\x9b.sys\xff'");
    char buf[256];
    sdict_error_format(&e, buf, sizeof buf);
    assert_string_equal(buf, "m\\x1b]0;t\\x07.pt: a\\x1b[2J/data.pkl @ 3: global 'os\\x9b.sys\\xff'");
    for (const char *p = buf; *p; p++)
        assert_true((unsigned char)*p >= 0x20 && (unsigned char)*p < 0x7f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc_basics),
        cmocka_unit_test(test_buf),
        cmocka_unit_test(test_status_str),
        cmocka_unit_test(test_error_fill_format),
        cmocka_unit_test(test_escape_text),
        cmocka_unit_test(test_dtype_table),
        cmocka_unit_test(test_storage_owned_wrapped),
        cmocka_unit_test(test_storage_oom),
        cmocka_unit_test(test_source_and_mapping),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
