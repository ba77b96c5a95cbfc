/*
 test_zip.c - the zip container layer: reader validation, writer layout, round trips.

 Expected values come from outside the code under test: FORMAT.md's hexdump-measured worked
 example, a bit-by-bit CRC-32 written here, archives hand-built by a small independent builder
 below, Python's zipfile verdicts on the shared fixtures, and (with a path argument, see
 tests/zip.cmake) a file written by real torch 1.13 that our writer must reproduce exactly.
*/
#define _GNU_SOURCE
#include "internal.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <libdeflate.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/*==================================================================================================
 MARK: Helpers
==================================================================================================*/

/* Reference CRC-32 (reflected 0xEDB88320), bit by bit: independent of libdeflate. */
static uint32_t ref_crc32(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return ~c;
}

static sdict_status buf_sink(void *ctx, const void *p, size_t n, sdict_error *err) {
    sdict__buf *b = ctx;
    sdict__buf_append(b, p, n);
    return sdict__buf_status(b, err);
}

static uint16_t rd16(const sdict__buf *b, size_t off) { return sdict__le16(b->data + off); }
static uint32_t rd32(const sdict__buf *b, size_t off) { return sdict__le32(b->data + off); }
static void wr16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static void wr32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static void wr64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Opens an archive held in memory; returns the status and leaves *z open on success. */
static sdict_status open_mem(const uint8_t *data, size_t n, sdict__source *src,
                             const sdict_limits *lim, sdict__zip **z, sdict_error *err) {
    sdict__source_init_mem(src, data, n, "mem");
    memset(err, 0, sizeof *err);
    return sdict__zip_open(src, lim, z, err);
}

/*
 Independent archive builder (not the code under test): plain local headers without padding,
 a central directory whose fields can be overridden per entry, ZIP64 end record + locator +
 classic end record like PyTorch's.
*/
typedef struct spec {
    const char *name;
    size_t name_len; /* 0: strlen(name) */
    const uint8_t *data;
    size_t n;
    uint16_t method;
    uint16_t flags;
    uint64_t cd_size;  /* if set, overrides both sizes in the central directory (via ZIP64) */
    uint32_t crc;      /* if set, overrides the CRC */
    int64_t hdr_delta; /* added to the header offset written in the central directory */
} spec;

typedef struct built {
    sdict__buf b;
    size_t cd_off, cd_size, z64_off, loc_off, eocd_off;
    size_t cd_entry[8]; /* offset of each central entry */
    size_t hdr[8];
} built;

static void build(built *o, const spec *s, size_t count, int64_t eocd_count_delta) {
    sdict__buf_init(&o->b);
    sdict__buf *b = &o->b;
    for (size_t i = 0; i < count; i++) {
        size_t nl = s[i].name_len ? s[i].name_len : strlen(s[i].name);
        /* the local header repeats the central fields (a ZIP64 extra when they are big) */
        bool big = s[i].cd_size != 0;
        o->hdr[i] = b->len;
        sdict__buf_le32(b, 0x04034b50u);
        sdict__buf_le16(b, 20);
        sdict__buf_le16(b, s[i].flags);
        sdict__buf_le16(b, s[i].method);
        sdict__buf_le32(b, 0);
        sdict__buf_le32(b, s[i].crc ? s[i].crc : ref_crc32(s[i].data, s[i].n));
        sdict__buf_le32(b, big ? 0xFFFFFFFFu : (uint32_t)s[i].n);
        sdict__buf_le32(b, big ? 0xFFFFFFFFu : (uint32_t)s[i].n);
        sdict__buf_le16(b, (uint16_t)nl);
        sdict__buf_le16(b, big ? 20 : 0);
        sdict__buf_append(b, s[i].name, nl);
        if (big) {
            sdict__buf_le16(b, 1);
            sdict__buf_le16(b, 16);
            sdict__buf_le64(b, s[i].cd_size);
            sdict__buf_le64(b, s[i].cd_size);
        }
        sdict__buf_append(b, s[i].data, s[i].n);
    }
    o->cd_off = b->len;
    for (size_t i = 0; i < count; i++) {
        size_t nl = s[i].name_len ? s[i].name_len : strlen(s[i].name);
        o->cd_entry[i] = b->len;
        bool big = s[i].cd_size != 0;
        uint32_t crc = s[i].crc ? s[i].crc : ref_crc32(s[i].data, s[i].n);
        sdict__buf_le32(b, 0x02014b50u);
        sdict__buf_le16(b, 20);
        sdict__buf_le16(b, 20);
        sdict__buf_le16(b, s[i].flags);
        sdict__buf_le16(b, s[i].method);
        sdict__buf_le32(b, 0);
        sdict__buf_le32(b, crc);
        sdict__buf_le32(b, big ? 0xFFFFFFFFu : (uint32_t)s[i].n);
        sdict__buf_le32(b, big ? 0xFFFFFFFFu : (uint32_t)s[i].n);
        sdict__buf_le16(b, (uint16_t)nl);
        sdict__buf_le16(b, big ? 20 : 0);
        sdict__buf_le16(b, 0);
        sdict__buf_le16(b, 0);
        sdict__buf_le16(b, 0);
        sdict__buf_le32(b, 0);
        sdict__buf_le32(b, (uint32_t)((int64_t)o->hdr[i] + s[i].hdr_delta));
        sdict__buf_append(b, s[i].name, nl);
        if (big) {
            sdict__buf_le16(b, 1);
            sdict__buf_le16(b, 16);
            sdict__buf_le64(b, s[i].cd_size);
            sdict__buf_le64(b, s[i].cd_size);
        }
    }
    o->cd_size = b->len - o->cd_off;
    uint64_t n = (uint64_t)((int64_t)count + eocd_count_delta);
    o->z64_off = b->len;
    sdict__buf_le32(b, 0x06064b50u);
    sdict__buf_le64(b, 44);
    sdict__buf_le16(b, 0x031E);
    sdict__buf_le16(b, 45);
    sdict__buf_le32(b, 0);
    sdict__buf_le32(b, 0);
    sdict__buf_le64(b, n);
    sdict__buf_le64(b, n);
    sdict__buf_le64(b, o->cd_size);
    sdict__buf_le64(b, o->cd_off);
    o->loc_off = b->len;
    sdict__buf_le32(b, 0x07064b50u);
    sdict__buf_le32(b, 0);
    sdict__buf_le64(b, o->z64_off);
    sdict__buf_le32(b, 1);
    o->eocd_off = b->len;
    sdict__buf_le32(b, 0x06054b50u);
    sdict__buf_le16(b, 0);
    sdict__buf_le16(b, 0);
    sdict__buf_le16(b, (uint16_t)n);
    sdict__buf_le16(b, (uint16_t)n);
    sdict__buf_le32(b, (uint32_t)o->cd_size);
    sdict__buf_le32(b, (uint32_t)o->cd_off);
    sdict__buf_le16(b, 0);
    assert_false(b->oom);
}

static const uint8_t P1[] = "hello, world";
static const uint8_t P2[] = "0123456789abcdef0123456789abcdef";

/* Builds, opens, and returns the status; fills err. */
static sdict_status try_spec(const spec *s, size_t count, int64_t delta, sdict_error *err) {
    built o;
    build(&o, s, count, delta);
    sdict__source src;
    sdict__zip *z = NULL;
    sdict_status st = open_mem(o.b.data, o.b.len, &src, NULL, &z, err);
    sdict__zip_close(z);
    sdict__buf_free(&o.b);
    return st;
}

/*==================================================================================================
 MARK: Writer layout
==================================================================================================*/

/* torch 2.x's .data/serialization_id. The name halves were computed with libstdc++ itself
   (std::unordered_set<std::string> filled in this order, std::hash, c10::hash_combine) for
   torch 2.x's record names with N storages: 0 to 6000 storages cross eight rehashes. */
static void test_serialization_id(void **state) {
    (void)state;
    static const struct {
        int n;
        uint64_t names;
    } cases[] = {
        {0, UINT64_C(2908468677762923104)},     {9, UINT64_C(1977860353369201443)},
        {100, UINT64_C(9159737005121336556)},   {1000, UINT64_C(2450224207034579348)},
        {3000, UINT64_C(7460312898770484889)},  {6000, UINT64_C(18078252886748964491)},
    };
    sdict_error err;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        sdict__buf out;
        sdict__buf_init(&out);
        sdict__zip_writer *w;
        assert_int_equal(sdict__zip_writer_new(buf_sink, &out, "a", &w, &err), SDICT_OK);
        static const char *const head[] = {"data.pkl", ".format_version", ".storage_alignment",
                                           "byteorder"};
        for (size_t i = 0; i < 4; i++)
            assert_int_equal(sdict__zip_writer_add(w, head[i], NULL, 0, &err), SDICT_OK);
        char name[32];
        for (int i = 0; i < cases[c].n; i++) {
            snprintf(name, sizeof name, "data/%d", i);
            assert_int_equal(sdict__zip_writer_add(w, name, NULL, 0, &err), SDICT_OK);
        }
        assert_int_equal(sdict__zip_writer_add(w, "version", NULL, 0, &err), SDICT_OK);
        char id[41], want[41];
        assert_int_equal(sdict__zip_writer_serialization_id(w, id, &err), SDICT_OK);
        /* empty records have no data descriptor: nothing in the CRC half */
        snprintf(want, sizeof want, "%020llu%020d", (unsigned long long)cases[c].names, 0);
        assert_string_equal(id, want);
        sdict__zip_writer_free(w);
        sdict__buf_free(&out);
    }

    /* the CRC half folds every data descriptor's CRC-32 and, as PyTorch's write callback does,
       the 4 bytes after a payload (of 8 bytes or more) that starts like a data descriptor */
    sdict__buf out;
    sdict__buf_init(&out);
    sdict__zip_writer *w;
    assert_int_equal(sdict__zip_writer_new(buf_sink, &out, "a", &w, &err), SDICT_OK);
    static const uint8_t pk[8] = {0x50, 0x4b, 0x07, 0x08, 1, 2, 3, 4};
    assert_int_equal(sdict__zip_writer_add(w, "x", pk, 8, &err), SDICT_OK);
    assert_int_equal(sdict__zip_writer_add(w, "y", pk, 4, &err), SDICT_OK);
    char id[41];
    assert_int_equal(sdict__zip_writer_serialization_id(w, id, &err), SDICT_OK);
    uint64_t fold = 0;
    const uint64_t parts[] = {0x04030201u, sdict__crc32(0, pk, 8), sdict__crc32(0, pk, 4)};
    for (size_t i = 0; i < 3; i++)
        fold ^= parts[i] + 0x9e3779b9u + (fold << 6) + (fold >> 2);
    char tail[21];
    snprintf(tail, sizeof tail, "%020llu", (unsigned long long)fold);
    assert_string_equal(id + 20, tail);
    sdict__zip_writer_free(w);
    sdict__buf_free(&out);
}

/* FORMAT.md 1.3's worked example, measured on a real 1.13 file "sd.pt": data.pkl of 680 bytes
   at payload offset 64, next header at 760, data/0 payload at 832. */
static void test_writer_worked_example(void **state) {
    (void)state;
    sdict__buf out;
    sdict__buf_init(&out);
    sdict__zip_writer *w;
    sdict_error err;
    uint8_t pkl[680], d0[40];
    for (size_t i = 0; i < sizeof pkl; i++)
        pkl[i] = (uint8_t)(i * 7);
    memset(d0, 0xAB, sizeof d0);
    assert_int_equal(sdict__zip_writer_new(buf_sink, &out, "sd", &w, &err), SDICT_OK);
    assert_int_equal(sdict__zip_writer_add(w, "data.pkl", pkl, sizeof pkl, &err), SDICT_OK);
    assert_int_equal(out.len, 760);
    assert_int_equal(sdict__zip_writer_add(w, "data/0", d0, sizeof d0, &err), SDICT_OK);
    assert_int_equal(sdict__zip_writer_add(w, "version", "3\n", 2, &err), SDICT_OK);
    assert_int_equal(sdict__zip_writer_finish(w, &err), SDICT_OK);
    sdict__zip_writer_free(w);

    /* local header 0 */
    assert_int_equal(rd32(&out, 0), 0x04034b50u);
    assert_int_equal(rd16(&out, 4), 0);      /* version needed */
    assert_int_equal(rd16(&out, 6), 0x0808); /* flags */
    assert_int_equal(rd16(&out, 8), 0);      /* stored */
    assert_int_equal(rd32(&out, 14), 0);     /* crc deferred */
    assert_int_equal(rd16(&out, 26), 11);
    assert_int_equal(rd16(&out, 28), 4 + 19); /* FB + 19 'Z' */
    assert_memory_equal(out.data + 41, "FB", 2);
    assert_int_equal(rd16(&out, 43), 19);
    for (size_t i = 45; i < 64; i++)
        assert_int_equal(out.data[i], 'Z');
    assert_memory_equal(out.data + 64, pkl, sizeof pkl);
    /* 16-byte descriptor with the reference CRC */
    assert_int_equal(rd32(&out, 744), 0x08074b50u);
    assert_int_equal(rd32(&out, 748), ref_crc32(pkl, sizeof pkl));
    assert_int_equal(rd32(&out, 752), 680);
    assert_int_equal(rd32(&out, 756), 680);
    /* second header: sd/data/0 -> p = 29, payload at 832 */
    assert_int_equal(rd16(&out, 760 + 28), 4 + 29);
    assert_memory_equal(out.data + 832, d0, sizeof d0);

    /* the reader agrees */
    sdict__source src;
    sdict__zip *z;
    assert_int_equal(open_mem(out.data, out.len, &src, NULL, &z, &err), SDICT_OK);
    assert_string_equal(sdict__zip_prefix(z), "sd/");
    assert_int_equal(sdict__zip_count(z), 3);
    const sdict__zip_entry *e = sdict__zip_find(z, "data/0");
    assert_non_null(e);
    assert_string_equal(e->name, "sd/data/0");
    assert_int_equal(e->header_offset, 760);
    assert_int_equal(e->data_offset, 832);
    assert_int_equal(e->size, 40);
    assert_int_equal(e->crc32, ref_crc32(d0, sizeof d0));
    assert_null(sdict__zip_find(z, "data/1"));
    assert_null(sdict__zip_find(z, "sd/data/0"));
    uint8_t back[40];
    assert_int_equal(sdict__zip_read(z, e, back, sizeof back, true, &err), SDICT_OK);
    assert_memory_equal(back, d0, sizeof d0);
    sdict__zip_close(z);

    /* end records: ZIP64 record (made-by 0x031E, needed 45), locator, classic EOCD */
    size_t eocd = out.len - 22, loc = eocd - 20, z64 = loc - 56;
    assert_int_equal(rd32(&out, z64), 0x06064b50u);
    assert_int_equal(rd16(&out, z64 + 12), 0x031E);
    assert_int_equal(rd16(&out, z64 + 14), 45);
    assert_int_equal(rd32(&out, loc), 0x07064b50u);
    assert_int_equal(rd32(&out, loc + 8), z64);
    assert_int_equal(rd32(&out, loc + 16), 1);
    assert_int_equal(rd32(&out, eocd), 0x06054b50u);
    assert_int_equal(rd16(&out, eocd + 10), 3);
    sdict__buf_free(&out);
}

/* Empty payloads: flags 0x0800 and no data descriptor (FORMAT.md, measured). */
static void test_writer_empty_record(void **state) {
    (void)state;
    sdict__buf out;
    sdict__buf_init(&out);
    sdict__zip_writer *w;
    sdict_error err;
    assert_int_equal(sdict__zip_writer_new(buf_sink, &out, "x", &w, &err), SDICT_OK);
    assert_int_equal(sdict__zip_writer_add(w, "data/0", NULL, 0, &err), SDICT_OK);
    size_t after = out.len;
    assert_int_equal(after % 64, 0); /* header + padding, nothing after the empty payload */
    assert_int_equal(rd16(&out, 6), 0x0800);
    assert_int_equal(sdict__zip_writer_add(w, "version", "3\n", 2, &err), SDICT_OK);
    assert_int_equal(rd32(&out, after), 0x04034b50u);
    assert_int_equal(sdict__zip_writer_finish(w, &err), SDICT_OK);
    assert_int_equal(sdict__zip_writer_add(w, "late", "x", 1, &err), SDICT_E_INVALID_ARG);
    sdict__zip_writer_free(w);

    sdict__source src;
    sdict__zip *z;
    assert_int_equal(open_mem(out.data, out.len, &src, NULL, &z, &err), SDICT_OK);
    const sdict__zip_entry *e = sdict__zip_find(z, "data/0");
    assert_non_null(e);
    assert_int_equal(e->size, 0);
    assert_int_equal(e->flags, 0x0800);
    assert_int_equal(e->crc32, 0);
    assert_int_equal(sdict__zip_read(z, e, NULL, 0, true, &err), SDICT_OK);
    sdict__zip_close(z);
    sdict__buf_free(&out);
}

/* Round trip through many shapes of record; every payload lands on a 64-byte boundary. */
static void test_roundtrip(void **state) {
    (void)state;
    sdict__buf out;
    sdict__buf_init(&out);
    sdict__zip_writer *w;
    sdict_error err;
    enum { N = 40 };
    uint8_t *payload[N];
    size_t len[N];
    char names[N][48];
    assert_int_equal(sdict__zip_writer_new(buf_sink, &out, "some.archive name", &w, &err),
                     SDICT_OK);
    for (int i = 0; i < N; i++) {
        len[i] = (size_t)(i * i * 37 % 5000);
        payload[i] = malloc(len[i] + 1);
        for (size_t k = 0; k < len[i]; k++)
            payload[i][k] = (uint8_t)(k * 31 + i);
        /* names of varied lengths exercise every padding value */
        snprintf(names[i], sizeof names[i], "data/%.*s%d", i % 17, "abcdefghijklmnopq", i);
        assert_int_equal(sdict__zip_writer_add(w, names[i], payload[i], len[i], &err), SDICT_OK);
    }
    assert_int_equal(sdict__zip_writer_finish(w, &err), SDICT_OK);
    sdict__zip_writer_free(w);

    sdict__source src;
    sdict__zip *z;
    assert_int_equal(open_mem(out.data, out.len, &src, NULL, &z, &err), SDICT_OK);
    assert_string_equal(sdict__zip_prefix(z), "some.archive name/");
    assert_int_equal(sdict__zip_count(z), N);
    for (int i = 0; i < N; i++) {
        const sdict__zip_entry *e = sdict__zip_find(z, names[i]);
        assert_non_null(e);
        assert_ptr_equal(e, sdict__zip_entry_at(z, (size_t)i));
        assert_int_equal(e->data_offset % 64, 0);
        assert_int_equal(e->size, len[i]);
        assert_int_equal(e->crc32, ref_crc32(payload[i], len[i]));
        uint8_t *back = malloc(len[i] + 1);
        assert_int_equal(sdict__zip_read(z, e, back, len[i], true, &err), SDICT_OK);
        assert_memory_equal(back, payload[i], len[i]);
        if (len[i]) {
            assert_int_equal(sdict__zip_read(z, e, back, len[i] - 1, true, &err),
                             SDICT_E_INVALID_ARG);
        }
        free(back);
        free(payload[i]);
    }
    sdict__zip_close(z);
    sdict__buf_free(&out);
}

/* Both input modes of the source: pread (copy) and mapped. */
static void test_file_sources(void **state) {
    (void)state;
    sdict__buf out;
    sdict__buf_init(&out);
    sdict__zip_writer *w;
    sdict_error err;
    assert_int_equal(sdict__zip_writer_new(buf_sink, &out, "f", &w, &err), SDICT_OK);
    assert_int_equal(sdict__zip_writer_add(w, "data.pkl", P2, sizeof P2, &err), SDICT_OK);
    assert_int_equal(sdict__zip_writer_add(w, "version", "3\n", 2, &err), SDICT_OK);
    assert_int_equal(sdict__zip_writer_finish(w, &err), SDICT_OK);
    sdict__zip_writer_free(w);
    char path[] = "/tmp/sdict_zip_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, out.data, out.len), (ssize_t)out.len);
    close(fd);
    for (int map = 0; map < 2; map++) {
        sdict__source src;
        assert_int_equal(sdict__source_open_file(&src, path, map != 0, &err), SDICT_OK);
        assert_true(map ? src.data != NULL : src.data == NULL);
        sdict__zip *z;
        assert_int_equal(sdict__zip_open(&src, NULL, &z, &err), SDICT_OK);
        const sdict__zip_entry *e = sdict__zip_find(z, "data.pkl");
        assert_non_null(e);
        uint8_t back[sizeof P2];
        assert_int_equal(sdict__zip_read(z, e, back, sizeof back, true, &err), SDICT_OK);
        assert_memory_equal(back, P2, sizeof P2);
        sdict__zip_close(z);
        sdict__source_close(&src);
    }
    unlink(path);
    sdict__buf_free(&out);
}

/*==================================================================================================
 MARK: Malformed input
==================================================================================================*/

/* Every truncation of a valid archive loses (part of) the end record: SDICT_E_TRUNCATED. */
static void test_truncated_everywhere(void **state) {
    (void)state;
    sdict__buf out;
    sdict__buf_init(&out);
    sdict__zip_writer *w;
    sdict_error err;
    assert_int_equal(sdict__zip_writer_new(buf_sink, &out, "t", &w, &err), SDICT_OK);
    assert_int_equal(sdict__zip_writer_add(w, "data.pkl", P1, sizeof P1, &err), SDICT_OK);
    assert_int_equal(sdict__zip_writer_add(w, "data/0", NULL, 0, &err), SDICT_OK);
    assert_int_equal(sdict__zip_writer_add(w, "version", "3\n", 2, &err), SDICT_OK);
    assert_int_equal(sdict__zip_writer_finish(w, &err), SDICT_OK);
    sdict__zip_writer_free(w);
    for (size_t cut = 0; cut < out.len; cut++) {
        sdict__source src;
        sdict__zip *z = (sdict__zip *)&src; /* must come back NULL */
        sdict_status st = open_mem(out.data, cut, &src, NULL, &z, &err);
        if (st != SDICT_E_TRUNCATED)
            fail_msg("cut at %zu: status %d (%s)", cut, st, err.message);
        assert_null(z);
        assert_true(err.message[0] != '\0');
    }
    sdict__buf_free(&out);
}

static void test_end_record_corruption(void **state) {
    (void)state;
    spec s[2] = {{.name = "a/data.pkl", .data = P1, .n = sizeof P1},
                 {.name = "a/version", .data = (const uint8_t *)"3\n", .n = 2}};
    built o;
    build(&o, s, 2, 0);
    sdict__source src;
    sdict__zip *z;
    sdict_error err;
    uint8_t *c = malloc(o.b.len);

    /* sanity: the untouched archive opens */
    assert_int_equal(open_mem(o.b.data, o.b.len, &src, NULL, &z, &err), SDICT_OK);
    sdict__zip_close(z);

#define MUTATE(stmt, expect, at)                                                                \
    do {                                                                                        \
        memcpy(c, o.b.data, o.b.len);                                                           \
        stmt;                                                                                   \
        sdict_status st_ = open_mem(c, o.b.len, &src, NULL, &z, &err);                          \
        if (st_ != (expect))                                                                    \
            fail_msg("%s: got %d (%s)", #stmt, st_, err.message);                               \
        assert_int_equal(err.offset, (int64_t)(at));                                            \
    } while (0)

    /* classic count disagrees with ZIP64 count */
    MUTATE(wr16(c + o.eocd_off + 10, 3); wr16(c + o.eocd_off + 8, 3), SDICT_E_ZIP_CORRUPT,
           o.eocd_off);
    /* classic on-disk count differs from total: multi-disk */
    MUTATE(wr16(c + o.eocd_off + 8, 1), SDICT_E_ZIP_UNSUPPORTED, o.eocd_off + 8);
    /* ZIP64 record: central directory offset lies */
    MUTATE(wr64(c + o.z64_off + 48, o.cd_off - 1); wr32(c + o.eocd_off + 16, 0xFFFFFFFFu),
           SDICT_E_ZIP_CORRUPT, o.cd_off - 1);
    /* ZIP64 record: directory size larger than the space before the end records */
    MUTATE(wr64(c + o.z64_off + 40, (uint64_t)1 << 40); wr32(c + o.eocd_off + 12, 0xFFFFFFFFu),
           SDICT_E_ZIP_CORRUPT, o.z64_off);
    /* ZIP64 record on another disk */
    MUTATE(wr32(c + o.z64_off + 16, 2), SDICT_E_ZIP_UNSUPPORTED, o.z64_off + 16);
    /* locator points at garbage / past itself */
    MUTATE(wr64(c + o.loc_off + 8, 3), SDICT_E_ZIP_CORRUPT, 3);
    MUTATE(wr64(c + o.loc_off + 8, UINT64_MAX - 10), SDICT_E_ZIP_CORRUPT, o.loc_off + 8);
    /* ZIP64 record with an absurd record size */
    MUTATE(wr64(c + o.z64_off + 4, (uint64_t)1 << 62), SDICT_E_ZIP_CORRUPT, o.z64_off + 4);
    /* both counts say 3, the directory holds 2 */
    MUTATE(wr64(c + o.z64_off + 24, 3); wr64(c + o.z64_off + 32, 3); wr16(c + o.eocd_off + 8, 3);
           wr16(c + o.eocd_off + 10, 3),
           SDICT_E_ZIP_CORRUPT, o.cd_off);
    /* counts say 1: the directory has bytes left over */
    MUTATE(wr64(c + o.z64_off + 24, 1); wr64(c + o.z64_off + 32, 1); wr16(c + o.eocd_off + 8, 1);
           wr16(c + o.eocd_off + 10, 1),
           SDICT_E_ZIP_CORRUPT, o.cd_entry[1]);
    /* a count of 2^40 is refused from the size of the directory, before allocating */
    MUTATE(wr64(c + o.z64_off + 24, (uint64_t)1 << 40); wr64(c + o.z64_off + 32, (uint64_t)1 << 40);
           wr16(c + o.eocd_off + 8, 0xFFFF); wr16(c + o.eocd_off + 10, 0xFFFF),
           SDICT_E_ZIP_CORRUPT, o.cd_off);
    /* central entry signature broken */
    MUTATE(c[o.cd_entry[1]] = 'X', SDICT_E_ZIP_CORRUPT, o.cd_entry[1]);
    /* local header signature broken */
    MUTATE(c[o.hdr[1]] = 'X', SDICT_E_ZIP_CORRUPT, o.hdr[1]);
    /* encrypted entry */
    MUTATE(wr16(c + o.cd_entry[0] + 8, 1), SDICT_E_ZIP_UNSUPPORTED, o.cd_entry[0] + 8);
    /* entry on another disk */
    MUTATE(wr16(c + o.cd_entry[0] + 34, 1), SDICT_E_ZIP_UNSUPPORTED, o.cd_entry[0] + 34);
    /* size saturated without a ZIP64 extra */
    MUTATE(wr32(c + o.cd_entry[0] + 24, 0xFFFFFFFFu), SDICT_E_ZIP_CORRUPT,
           o.cd_entry[0] + 46 + strlen(s[0].name));
    /* name length running past the directory */
    MUTATE(wr16(c + o.cd_entry[1] + 28, 0x7000), SDICT_E_ZIP_CORRUPT, o.cd_entry[1]);

#undef MUTATE
    /* a comment that claims more bytes than remain: truncated */
    memcpy(c, o.b.data, o.b.len);
    wr16(c + o.eocd_off + 20, 5);
    assert_int_equal(open_mem(c, o.b.len, &src, NULL, &z, &err), SDICT_E_TRUNCATED);
    /* a real comment is fine; trailing junk after it is not */
    uint8_t *d = malloc(o.b.len + 8);
    memcpy(d, o.b.data, o.b.len);
    wr16(d + o.eocd_off + 20, 5);
    memcpy(d + o.b.len, "hello123", 8);
    assert_int_equal(open_mem(d, o.b.len + 5, &src, NULL, &z, &err), SDICT_OK);
    sdict__zip_close(z);
    assert_int_equal(open_mem(d, o.b.len + 8, &src, NULL, &z, &err), SDICT_E_ZIP_CORRUPT);
    assert_int_equal(err.offset, (int64_t)o.eocd_off);
    free(d);
    free(c);
    sdict__buf_free(&o.b);
}

static void test_entry_checks(void **state) {
    (void)state;
    sdict_error err;
    const uint8_t *v = (const uint8_t *)"3\n";

    /* a record claiming 1 TB */
    spec big[2] = {{.name = "a/data.pkl", .data = P1, .n = sizeof P1, .cd_size = (uint64_t)1 << 40},
                   {.name = "a/version", .data = v, .n = 2}};
    clock_t t0 = clock();
    assert_int_equal(try_spec(big, 2, 0, &err), SDICT_E_ZIP_CORRUPT);
    assert_true(clock() - t0 < CLOCKS_PER_SEC);
    assert_string_equal(err.record, "a/data.pkl");
    assert_int_equal(err.offset, 0);
    assert_non_null(strstr(err.message, "1099511627776"));

    /* a record claiming 10 bytes more than it has overlaps the next header */
    spec ov[2] = {{.name = "a/data.pkl", .data = P1, .n = sizeof P1, .cd_size = sizeof P1 + 10},
                  {.name = "a/version", .data = v, .n = 2}};
    assert_int_equal(try_spec(ov, 2, 0, &err), SDICT_E_ZIP_CORRUPT);
    assert_string_equal(err.record, "a/version");
    assert_non_null(strstr(err.message, "overlaps"));

    /* two central entries sharing one local header: the second's name does not match */
    spec same[2] = {{.name = "a/x", .data = P1, .n = 4},
                    {.name = "a/y", .data = P1, .n = 4, .hdr_delta = -(30 + 3 + 4)}};
    assert_int_equal(try_spec(same, 2, 0, &err), SDICT_E_ZIP_CORRUPT);
    assert_string_equal(err.record, "a/y");

    /* the last record runs into the central directory */
    spec into[1] = {{.name = "a/x", .data = P1, .n = 4, .cd_size = 5}};
    assert_int_equal(try_spec(into, 1, 0, &err), SDICT_E_ZIP_CORRUPT);

    /* entries outside the archive folder */
    spec out1[2] = {{.name = "a/data.pkl", .data = P1, .n = 3}, {.name = "b/version", .data = v, .n = 2}};
    assert_int_equal(try_spec(out1, 2, 0, &err), SDICT_E_ZIP_CORRUPT);
    assert_string_equal(err.record, "b/version");
    assert_non_null(strstr(err.message, "ambiguous zip: record outside the archive folder"));
    spec out2[1] = {{.name = "data.pkl", .data = P1, .n = 3}};
    assert_int_equal(try_spec(out2, 1, 0, &err), SDICT_E_ZIP_CORRUPT);
    assert_non_null(strstr(err.message, "not in a subdirectory"));
    spec out3[2] = {{.name = "ab/x", .data = P1, .n = 3}, {.name = "a/y", .data = v, .n = 2}};
    assert_int_equal(try_spec(out3, 2, 0, &err), SDICT_E_ZIP_CORRUPT);

    /* NUL inside a name */
    spec nul[1] = {{.name = "a/x\0y", .name_len = 5, .data = P1, .n = 3}};
    assert_int_equal(try_spec(nul, 1, 0, &err), SDICT_E_ZIP_CORRUPT);
    assert_non_null(strstr(err.message, "NUL"));

    /* duplicate names */
    spec dup[2] = {{.name = "a/x", .data = P1, .n = 3}, {.name = "a/x", .data = v, .n = 2}};
    assert_int_equal(try_spec(dup, 2, 0, &err), SDICT_E_ZIP_CORRUPT);
    assert_non_null(strstr(err.message, "duplicate"));

    /* no entries at all */
    assert_int_equal(try_spec(NULL, 0, 0, &err), SDICT_E_ZIP_CORRUPT);

    /* max_records */
    spec three[3] = {{.name = "a/1", .data = P1, .n = 1}, {.name = "a/2", .data = P1, .n = 2},
                     {.name = "a/3", .data = P1, .n = 3}};
    built o;
    build(&o, three, 3, 0);
    sdict__source src;
    sdict__zip *z;
    sdict_limits lim = {0};
    lim.max_records = 2;
    assert_int_equal(open_mem(o.b.data, o.b.len, &src, &lim, &z, &err), SDICT_E_LIMIT);
    lim.max_records = 3;
    assert_int_equal(open_mem(o.b.data, o.b.len, &src, &lim, &z, &err), SDICT_OK);
    sdict__zip_close(z);
    sdict__buf_free(&o.b);
}

/* Opens o's bytes and expects an ambiguity error at offset off (record rec, NULL for none). */
static void expect_ambiguous(const built *o, int64_t off, const char *rec, const char *words) {
    sdict__source src;
    sdict__zip *z = NULL;
    sdict_error err;
    assert_int_equal(open_mem(o->b.data, o->b.len, &src, NULL, &z, &err), SDICT_E_ZIP_CORRUPT);
    assert_null(z);
    if (!strstr(err.message, words))
        fprintf(stderr, "message: %s\n", err.message);
    assert_non_null(strstr(err.message, "ambiguous zip"));
    assert_non_null(strstr(err.message, words));
    assert_int_equal(err.offset, off);
    if (rec)
        assert_string_equal(err.record, rec);
    else
        assert_string_equal(err.record, "");
}

/* Archives torch's miniz would read differently (issue 11): each rule, with its offset. */
static void test_ambiguous(void **state) {
    (void)state;
    const uint8_t *v = (const uint8_t *)"3\n";
    spec two[2] = {{.name = "a/data.pkl", .data = P1, .n = sizeof P1},
                   {.name = "a/version", .data = v, .n = 2}};
    built o;
    sdict__source src;
    sdict__zip *z;
    sdict_error err;

    /* the clean archive opens */
    build(&o, two, 2, 0);
    assert_int_equal(open_mem(o.b.data, o.b.len, &src, NULL, &z, &err), SDICT_OK);
    sdict__zip_close(z);

    /* an end-record signature inside the comment, 22+ bytes from the end: miniz's pick */
    size_t eocd = o.eocd_off;
    uint8_t fake[23];
    memcpy(fake, o.b.data + eocd, 22);
    fake[22] = '!';
    wr16(o.b.data + eocd + 20, sizeof fake);
    sdict__buf_append(&o.b, fake, sizeof fake);
    expect_ambiguous(&o, (int64_t)(eocd + 22), NULL, "end-of-central-directory");
    /* fewer than 22 bytes after it: miniz skips it too, so the archive is fine */
    o.b.len -= 2;
    wr16(o.b.data + eocd + 20, sizeof fake - 2);
    assert_int_equal(open_mem(o.b.data, o.b.len, &src, NULL, &z, &err), SDICT_OK);
    sdict__zip_close(z);
    /* a comment that is itself a complete end record: two records end the file */
    o.b.len = eocd + 22;
    wr16(o.b.data + eocd + 20, 0);
    memcpy(fake, o.b.data + eocd, 22);
    wr16(o.b.data + eocd + 20, 22);
    sdict__buf_append(&o.b, fake, 22);
    expect_ambiguous(&o, (int64_t)eocd, NULL, "two end-of-central-directory records");
    sdict__buf_free(&o.b);

    /* classic end record and ZIP64 one pointing at different directories */
    build(&o, two, 2, 0);
    wr32(o.b.data + o.eocd_off + 16, (uint32_t)o.cd_off + 1);
    expect_ambiguous(&o, (int64_t)o.eocd_off, NULL, "end records disagree");
    sdict__buf_free(&o.b);

    /* names equal but for ASCII case, as miniz compares them; non-ASCII bytes are compared
       exactly (MZ_TOLOWER is ASCII only) */
    spec cs[3] = {{.name = "a/data.pkl", .data = P1, .n = 3}, {.name = "a/version", .data = v, .n = 2},
                  {.name = "a/Data.PKL", .data = P1, .n = 4}};
    build(&o, cs, 3, 0);
    expect_ambiguous(&o, (int64_t)o.hdr[2], "a/Data.PKL", "letter case");
    sdict__buf_free(&o.b);
    spec utf[3] = {{.name = "a/\xc3\xa9", .data = P1, .n = 3}, {.name = "a/version", .data = v, .n = 2},
                   {.name = "a/\xc3\x89", .data = P1, .n = 4}};
    build(&o, utf, 3, 0);
    assert_int_equal(open_mem(o.b.data, o.b.len, &src, NULL, &z, &err), SDICT_OK);
    assert_non_null(sdict__zip_find(z, "\xc3\x89"));
    assert_null(sdict__zip_find(z, "DATA.PKL"));
    sdict__zip_close(z);
    sdict__buf_free(&o.b);

    /* local header fields that disagree with the central directory */
    const struct {
        size_t at, width;
        uint32_t value;
        const char *words;
    } local[] = {{8, 2, 8, "compression method"}, {6, 2, 0x0800, "flags"},
                 {14, 4, 0x12345678, "local header says CRC"}, {18, 4, 99, "local header says CRC"},
                 {22, 4, 99, "local header says CRC"}};
    for (size_t i = 0; i < sizeof local / sizeof local[0]; i++) {
        build(&o, two, 2, 0);
        if (local[i].width == 2)
            wr16(o.b.data + local[i].at, (uint16_t)local[i].value);
        else
            wr32(o.b.data + local[i].at, local[i].value);
        /* CRC and sizes are reported together, at the CRC field */
        expect_ambiguous(&o, local[i].at > 14 ? 14 : (int64_t)local[i].at, "a/data.pkl",
                         local[i].words);
        sdict__buf_free(&o.b);
    }

    /* bytes no entry covers: before the first record, before the central directory */
    build(&o, two, 2, 0);
    wr32(o.b.data + o.cd_entry[0] + 42, 4);
    wr32(o.b.data + o.cd_entry[1] + 42, (uint32_t)o.hdr[1] + 4);
    {
        sdict__buf b2;
        sdict__buf_init(&b2);
        sdict__buf_append(&b2, "PK\x03\x04", 4);
        sdict__buf_append(&b2, o.b.data, o.b.len);
        /* the end records moved by 4 too */
        wr32(b2.data + 4 + o.eocd_off + 16, (uint32_t)o.cd_off + 4);
        wr64(b2.data + 4 + o.z64_off + 48, o.cd_off + 4);
        wr64(b2.data + 4 + o.loc_off + 8, o.z64_off + 4);
        sdict__buf_free(&o.b);
        o.b = b2;
    }
    expect_ambiguous(&o, 0, NULL, "belong to no central directory entry");
    sdict__buf_free(&o.b);

    /* a data descriptor (flag bit 3) whose CRC disagrees; then one that agrees */
    spec d1[1] = {{.name = "a/x", .data = P1, .n = 4, .flags = 8}};
    build(&o, d1, 1, 0);
    {
        sdict__buf b2;
        sdict__buf_init(&b2);
        size_t data_end = o.hdr[0] + 30 + 3 + 4;
        uint8_t desc[16];
        wr32(desc, 0x08074b50u);
        wr32(desc + 4, ref_crc32(P1, 4) ^ 1);
        wr32(desc + 8, 4);
        wr32(desc + 12, 4);
        sdict__buf_append(&b2, o.b.data, data_end);
        sdict__buf_append(&b2, desc, 16);
        sdict__buf_append(&b2, o.b.data + data_end, o.b.len - data_end);
        wr32(b2.data + 16 + o.eocd_off + 16, (uint32_t)o.cd_off + 16);
        wr64(b2.data + 16 + o.z64_off + 48, o.cd_off + 16);
        wr64(b2.data + 16 + o.loc_off + 8, o.z64_off + 16);
        expect_ambiguous(&(built){.b = b2}, (int64_t)data_end, "a/x", "data descriptor");
        wr32(b2.data + data_end + 4, ref_crc32(P1, 4));
        assert_int_equal(open_mem(b2.data, b2.len, &src, NULL, &z, &err), SDICT_OK);
        sdict__zip_close(z);
        sdict__buf_free(&b2);
    }
    sdict__buf_free(&o.b);
}

/* CRC check, deflate, other methods, inflate limits. */
static void test_reads(void **state) {
    (void)state;
    sdict_error err;
    uint8_t raw[3000];
    for (size_t i = 0; i < sizeof raw; i++)
        raw[i] = (uint8_t)("abcabcabd"[i % 9] + (i / 700));
    struct libdeflate_compressor *c = libdeflate_alloc_compressor(6);
    uint8_t comp[4000];
    size_t cn = libdeflate_deflate_compress(c, raw, sizeof raw, comp, sizeof comp);
    libdeflate_free_compressor(c);
    assert_true(cn > 0 && cn < sizeof raw);

    /* The builder records the compressed length as both sizes; patch the uncompressed size. */
    spec s[3] = {{.name = "a/z", .data = comp, .n = cn, .method = 8, .crc = ref_crc32(raw, sizeof raw)},
                 {.name = "a/bad", .data = P1, .n = sizeof P1, .crc = 0x12345678},
                 {.name = "a/m12", .data = P1, .n = 4, .method = 12}};
    built o;
    build(&o, s, 3, 0);
    wr32(o.b.data + o.cd_entry[0] + 24, sizeof raw);
    wr32(o.b.data + o.hdr[0] + 22, sizeof raw); /* the local copy too */
    sdict__source src;
    sdict__zip *z;
    assert_int_equal(open_mem(o.b.data, o.b.len, &src, NULL, &z, &err), SDICT_OK);
    const sdict__zip_entry *e = sdict__zip_find(z, "z");
    assert_non_null(e);
    assert_int_equal(e->size, sizeof raw);
    assert_int_equal(e->comp_size, cn);
    uint8_t out[3000];
    assert_int_equal(sdict__zip_read(z, e, out, sizeof out, true, &err), SDICT_OK);
    assert_memory_equal(out, raw, sizeof raw);

    const sdict__zip_entry *b = sdict__zip_find(z, "bad");
    assert_int_equal(sdict__zip_read(z, b, out, sizeof out, false, &err), SDICT_OK);
    assert_int_equal(sdict__zip_read(z, b, out, sizeof out, true, &err), SDICT_E_CRC);
    assert_string_equal(err.record, "a/bad");
    assert_int_equal(err.offset, (int64_t)b->data_offset);

    const sdict__zip_entry *m = sdict__zip_find(z, "m12");
    assert_int_equal(sdict__zip_read(z, m, out, sizeof out, false, &err), SDICT_E_ZIP_UNSUPPORTED);
    sdict__zip_close(z);

    /* declared size smaller than the stream inflates to */
    wr32(o.b.data + o.cd_entry[0] + 24, sizeof raw - 1);
    wr32(o.b.data + o.hdr[0] + 22, sizeof raw - 1); /* the local copy too */
    assert_int_equal(open_mem(o.b.data, o.b.len, &src, NULL, &z, &err), SDICT_OK);
    e = sdict__zip_find(z, "z");
    assert_int_equal(sdict__zip_read(z, e, out, sizeof out, false, &err), SDICT_E_ZIP_CORRUPT);
    sdict__zip_close(z);
    /* declared size larger */
    wr32(o.b.data + o.cd_entry[0] + 24, sizeof raw + 1);
    wr32(o.b.data + o.hdr[0] + 22, sizeof raw + 1); /* the local copy too */
    uint8_t out2[3001];
    assert_int_equal(open_mem(o.b.data, o.b.len, &src, NULL, &z, &err), SDICT_OK);
    e = sdict__zip_find(z, "z");
    assert_int_equal(sdict__zip_read(z, e, out2, sizeof out2, false, &err), SDICT_E_ZIP_CORRUPT);
    sdict__zip_close(z);
    /* inflate limit */
    wr32(o.b.data + o.cd_entry[0] + 24, sizeof raw);
    wr32(o.b.data + o.hdr[0] + 22, sizeof raw); /* the local copy too */
    sdict_limits lim = {0};
    lim.max_inflate = 100;
    assert_int_equal(open_mem(o.b.data, o.b.len, &src, &lim, &z, &err), SDICT_OK);
    e = sdict__zip_find(z, "z");
    assert_int_equal(sdict__zip_read(z, e, out, sizeof out, false, &err), SDICT_E_LIMIT);
    sdict__zip_close(z);
    /* corrupt deflate stream */
    o.b.data[o.hdr[0] + 30 + 3] ^= 0xFF;
    o.b.data[o.hdr[0] + 30 + 4] ^= 0xFF;
    assert_int_equal(open_mem(o.b.data, o.b.len, &src, NULL, &z, &err), SDICT_OK);
    e = sdict__zip_find(z, "z");
    sdict_status st = sdict__zip_read(z, e, out, sizeof out, true, &err);
    assert_true(st == SDICT_E_ZIP_CORRUPT || st == SDICT_E_CRC);
    sdict__zip_close(z);
    sdict__buf_free(&o.b);
}

/* Allocator that fails the Nth call: every allocation failure path returns SDICT_E_NOMEM and
   leaks nothing (AddressSanitizer checks the latter). */
static long alloc_budget;
static void *fail_malloc(void *ctx, size_t n) {
    (void)ctx;
    return alloc_budget-- > 0 ? malloc(n) : NULL;
}
static void *fail_realloc(void *ctx, void *p, size_t n) {
    (void)ctx;
    return alloc_budget-- > 0 ? realloc(p, n) : NULL;
}
static void fail_free(void *ctx, void *p) {
    (void)ctx;
    free(p);
}

static void test_out_of_memory(void **state) {
    (void)state;
    sdict_allocator alc = {fail_malloc, fail_realloc, fail_free, NULL};
    sdict_error err;
    sdict__buf out;
    sdict__buf_init(&out);
    int seen_fail = 0;
    for (long budget = 0;; budget++) {
        sdict__buf_free(&out);
        sdict__zip_writer *w = NULL;
        sdict_set_allocator(&alc);
        alloc_budget = budget;
        sdict_status st = sdict__zip_writer_new(buf_sink, &out, "oom", &w, &err);
        if (st == SDICT_OK)
            st = sdict__zip_writer_add(w, "data.pkl", P2, sizeof P2, &err);
        if (st == SDICT_OK)
            st = sdict__zip_writer_add(w, "version", "3\n", 2, &err);
        if (st == SDICT_OK)
            st = sdict__zip_writer_finish(w, &err);
        sdict__zip_writer_free(w);
        sdict_set_allocator(NULL);
        if (st == SDICT_OK)
            break;
        assert_int_equal(st, SDICT_E_NOMEM);
        seen_fail++;
    }
    assert_true(seen_fail > 0);
    seen_fail = 0;
    for (long budget = 0;; budget++) {
        sdict__source src;
        sdict__source_init_mem(&src, out.data, out.len, "oom");
        sdict__zip *z = NULL;
        sdict_set_allocator(&alc);
        alloc_budget = budget;
        sdict_status st = sdict__zip_open(&src, NULL, &z, &err);
        sdict_set_allocator(NULL);
        if (st == SDICT_OK) {
            assert_non_null(sdict__zip_find(z, "version"));
            sdict__zip_close(z);
            break;
        }
        assert_int_equal(st, SDICT_E_NOMEM);
        assert_null(z);
        seen_fail++;
    }
    assert_true(seen_fail > 0);
    sdict__buf_free(&out);
}

/*==================================================================================================
 MARK: Scale
==================================================================================================*/

static void test_many_entries(void **state) {
    (void)state;
    enum { N = 100000 };
    sdict__buf out;
    sdict__buf_init(&out);
    sdict__zip_writer *w;
    sdict_error err;
    char name[32];
    assert_int_equal(sdict__zip_writer_new(buf_sink, &out, "many", &w, &err), SDICT_OK);
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "data/%d", i);
        uint8_t b = (uint8_t)i;
        assert_int_equal(sdict__zip_writer_add(w, name, &b, (uint64_t)(i % 3 != 0), &err),
                         SDICT_OK);
    }
    assert_int_equal(sdict__zip_writer_finish(w, &err), SDICT_OK);
    sdict__zip_writer_free(w);
    /* classic EOCD counts saturate at 0xFFFF; the ZIP64 record carries the real count */
    assert_int_equal(rd16(&out, out.len - 22 + 10), 0xFFFF);

    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    sdict__source src;
    sdict__zip *z;
    assert_int_equal(open_mem(out.data, out.len, &src, NULL, &z, &err), SDICT_OK);
    assert_int_equal(sdict__zip_count(z), N);
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "data/%d", i);
        const sdict__zip_entry *e = sdict__zip_find(z, name);
        if (!e || e != sdict__zip_entry_at(z, (size_t)i))
            fail_msg("lookup of %s failed", name);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ms = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
    printf("# open + %d lookups of a %zu-byte archive: %.1f ms\n", N, out.len, ms);
    assert_true(ms < 5000);
    assert_null(sdict__zip_find(z, "data/100000"));
    sdict__zip_close(z);
    sdict__buf_free(&out);
}

/* Sink for the > 4 GiB test: writes small pieces into a file and leaves large ones (the zero
   payload) as holes, so the sparse file reads back exactly as written. */
typedef struct sparse_sink {
    int fd;
    uint64_t pos;
} sparse_sink;

static sdict_status sparse_write(void *ctx, const void *p, size_t n, sdict_error *err) {
    sparse_sink *s = ctx;
    if (n < 65536) {
        if (pwrite(s->fd, p, n, (off_t)s->pos) != (ssize_t)n)
            return sdict__err(err, SDICT_E_IO, NULL, (int64_t)s->pos, "pwrite failed");
    }
    s->pos += n;
    return SDICT_OK;
}

static void test_zip64_big(void **state) {
    (void)state;
    const uint64_t big = ((uint64_t)1 << 32) + 4096 + 3; /* > 4 GiB */
    int zfd = open("/dev/zero", O_RDONLY);
    void *zeros = zfd >= 0 ? mmap(NULL, (size_t)big, PROT_READ, MAP_PRIVATE, zfd, 0) : MAP_FAILED;
    if (zfd >= 0)
        close(zfd);
    if (zeros == MAP_FAILED) {
        printf("# skipped: cannot map %llu bytes of /dev/zero\n", (unsigned long long)big);
        skip();
    }
    char path[] = "/tmp/sdict_zip64_XXXXXX";
    sparse_sink sink = {mkstemp(path), 0};
    assert_true(sink.fd >= 0);
    sdict__zip_writer *w;
    sdict_error err;
    assert_int_equal(sdict__zip_writer_new(sparse_write, &sink, "big", &w, &err), SDICT_OK);
    assert_int_equal(sdict__zip_writer_add(w, "data.pkl", P1, sizeof P1, &err), SDICT_OK);
    uint64_t big_hdr = sink.pos;
    assert_int_equal(sdict__zip_writer_add(w, "data/0", zeros, big, &err), SDICT_OK);
    uint64_t after_big = sink.pos;
    assert_int_equal(sdict__zip_writer_add(w, "version", "3\n", 2, &err), SDICT_OK);
    assert_int_equal(sdict__zip_writer_finish(w, &err), SDICT_OK);
    sdict__zip_writer_free(w);
    munmap(zeros, (size_t)big);
    assert_int_equal(ftruncate(sink.fd, (off_t)sink.pos), 0);

    /* Expected layout by getPadding: "big/data/0" header at big_hdr, start = hdr + 30 + 10 + 4 +
       4 + 16 (ZIP64 extra with size + compressed slot), padded to 64; 24-byte descriptor. */
    uint64_t start = big_hdr + 30 + 10 + 4 + 4 + 16;
    uint64_t data_off = (start + 63) / 64 * 64;
    assert_int_equal(after_big, data_off + big + 24);
    uint8_t h[64];
    assert_int_equal(pread(sink.fd, h, sizeof h, (off_t)big_hdr), (ssize_t)sizeof h);
    assert_int_equal(sdict__le16(h + 28), 4 + 16 + 4 + (data_off - start)); /* extra length */
    assert_int_equal(sdict__le16(h + 40), 1);
    assert_int_equal(sdict__le16(h + 42), 16);
    assert_true(sdict__le64(h + 44) == big);
    assert_true(sdict__le64(h + 52) == 0);
    assert_memory_equal(h + 60, "FB", 2);
    uint8_t dd[24];
    assert_int_equal(pread(sink.fd, dd, 24, (off_t)(data_off + big)), 24);
    assert_int_equal(sdict__le32(dd), 0x08074b50u);
    assert_true(sdict__le64(dd + 8) == big && sdict__le64(dd + 16) == big);
    /* the record after it starts past 4 GiB: its local extra carries the 8-byte offset */
    assert_int_equal(pread(sink.fd, h, sizeof h, (off_t)after_big), (ssize_t)sizeof h);
    assert_int_equal(sdict__le16(h + 30 + 11), 1);
    assert_int_equal(sdict__le16(h + 30 + 11 + 2), 8);
    assert_true(sdict__le64(h + 30 + 11 + 4) == after_big);

    sdict__source src;
    assert_int_equal(sdict__source_open_file(&src, path, false, &err), SDICT_OK);
    sdict__zip *z;
    assert_int_equal(sdict__zip_open(&src, NULL, &z, &err), SDICT_OK);
    const sdict__zip_entry *e = sdict__zip_find(z, "data/0");
    assert_non_null(e);
    assert_true(e->size == big && e->comp_size == big);
    assert_true(e->data_offset == data_off);
    /* CRC of the zeros, computed here in pieces with the reference function */
    static uint8_t zchunk[1 << 20];
    uint32_t c = libdeflate_crc32(0, NULL, 0);
    for (uint64_t done = 0; done < big;) {
        size_t k = big - done < sizeof zchunk ? (size_t)(big - done) : sizeof zchunk;
        c = libdeflate_crc32(c, zchunk, k);
        done += k;
    }
    assert_int_equal(e->crc32, c);
    const sdict__zip_entry *v = sdict__zip_find(z, "version");
    assert_true(v->header_offset == after_big);
    assert_int_equal(v->data_offset % 64, 0);
    char ver[2];
    assert_int_equal(sdict__zip_read(z, v, ver, 2, true, &err), SDICT_OK);
    assert_memory_equal(ver, "3\n", 2);
    sdict__zip_close(z);
    sdict__source_close(&src);

    /* Python's zipfile, when present, agrees on names, sizes and the small payloads. */
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c \"import zipfile,sys; z=zipfile.ZipFile('%s'); "
             "i=z.getinfo('big/data/0'); assert i.file_size==%llu, i.file_size; "
             "assert z.read('big/version')==b'3\\\\n'; "
             "assert z.read('big/data.pkl')==b'hello, world\\\\0'\" 2>&1",
             path, (unsigned long long)big);
    if (access("/usr/bin/python3", X_OK) == 0)
        assert_int_equal(system(cmd), 0);
    close(sink.fd);
    unlink(path);
}

/*==================================================================================================
 MARK: Shared fixtures
==================================================================================================*/

static int n_fixture_zips;

/* Expected results from Python's zipfile (see SOURCES.md and the fixture survey): every zip
   fixture opens and reads with CRCs verified, except an encrypted archive and a bare
   "data.pkl" archive outside any folder (torch refuses it too). */
static void check_fixture(const char *path, const char *rel) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return;
    char magic[4] = {0};
    size_t got = fread(magic, 1, 4, f);
    fclose(f);
    if (got != 4 || memcmp(magic, "PK\3\4", 4) != 0)
        return;
    n_fixture_zips++;
    sdict_status want = SDICT_OK;
    if (strstr(rel, "password_protected.zip"))
        want = SDICT_E_ZIP_UNSUPPORTED;
    if (strstr(rel, "malicious1_crc.zip"))
        want = SDICT_E_ZIP_CORRUPT;
    sdict__source src;
    sdict_error err;
    assert_int_equal(sdict__source_open_file(&src, path, false, &err), SDICT_OK);
    sdict__zip *z;
    sdict_status st = sdict__zip_open(&src, NULL, &z, &err);
    if (st != want)
        fail_msg("%s: expected status %d, got %d: %s", rel, want, st, err.message);
    if (st == SDICT_OK) {
        for (size_t i = 0; i < sdict__zip_count(z); i++) {
            const sdict__zip_entry *e = sdict__zip_entry_at(z, i);
            void *buf = malloc(e->size + 1);
            st = sdict__zip_read(z, e, buf, e->size, true, &err);
            if (st != SDICT_OK)
                fail_msg("%s: %s: %s", rel, e->name, err.message);
            assert_ptr_equal(sdict__zip_find(z, e->name + strlen(sdict__zip_prefix(z))), e);
            free(buf);
        }
        sdict__zip_close(z);
    }
    sdict__source_close(&src);
}

static void walk(const char *dir, const char *rel) {
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char p[4096], r[4096];
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        snprintf(r, sizeof r, "%s%s%s", rel, *rel ? "/" : "", de->d_name);
        struct stat st;
        if (stat(p, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode))
            walk(p, r);
        else if (S_ISREG(st.st_mode))
            check_fixture(p, r);
    }
    closedir(d);
}

static void test_shared_fixtures(void **state) {
    (void)state;
    struct stat st;
    if (stat(SDICT_SHARED_FIXTURES, &st) != 0) {
        printf("# skipped: shared fixtures folder %s is absent\n", SDICT_SHARED_FIXTURES);
        skip();
    }
    walk(SDICT_SHARED_FIXTURES, "");
    printf("# %d zip fixtures checked\n", n_fixture_zips);
    assert_true(n_fixture_zips > 0);
}

/*==================================================================================================
 MARK: Byte identity with torch (path given on the command line by tests/zip.cmake)
==================================================================================================*/

static int identity(const char *path, const char *archive) {
    sdict__source src;
    sdict_error err;
    if (sdict__source_open_file(&src, path, true, &err) != SDICT_OK) {
        fprintf(stderr, "%s: %s\n", path, err.message);
        return 1;
    }
    sdict__zip *z;
    if (sdict__zip_open(&src, NULL, &z, &err) != SDICT_OK) {
        fprintf(stderr, "%s: open: %s\n", path, err.message);
        return 1;
    }
    sdict__buf out;
    sdict__buf_init(&out);
    sdict__zip_writer *w;
    sdict__zip_writer_new(buf_sink, &out, archive, &w, &err);
    size_t plen = strlen(sdict__zip_prefix(z));
    for (size_t i = 0; i < sdict__zip_count(z); i++) {
        const sdict__zip_entry *e = sdict__zip_entry_at(z, i);
        void *buf = malloc(e->size + 1);
        if (sdict__zip_read(z, e, buf, e->size, true, &err) != SDICT_OK ||
            sdict__zip_writer_add(w, e->name + plen, buf, e->size, &err) != SDICT_OK) {
            fprintf(stderr, "%s: %s: %s\n", path, e->name, err.message);
            return 1;
        }
        free(buf);
    }
    if (sdict__zip_writer_finish(w, &err) != SDICT_OK) {
        fprintf(stderr, "finish: %s\n", err.message);
        return 1;
    }
    sdict__zip_writer_free(w);
    int rc = 0;
    if (out.len != src.size) {
        fprintf(stderr, "%s: re-emitted %zu bytes, torch wrote %llu\n", path, out.len,
                (unsigned long long)src.size);
        rc = 1;
    }
    for (size_t i = 0; i < out.len && i < src.size; i++)
        if (out.data[i] != src.data[i]) {
            fprintf(stderr, "%s: first difference at byte %zu: ours 0x%02x, torch 0x%02x\n", path,
                    i, out.data[i], src.data[i]);
            rc = 1;
            break;
        }
    if (rc == 0)
        printf("%s: %zu bytes, %zu records: byte-identical\n", path, out.len, sdict__zip_count(z));
    sdict__buf_free(&out);
    sdict__zip_close(z);
    sdict__source_close(&src);
    return rc;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--identity") == 0) {
        /* archive name = file stem, as torch derives it */
        const char *base = strrchr(argv[2], '/') ? strrchr(argv[2], '/') + 1 : argv[2];
        char archive[256];
        snprintf(archive, sizeof archive, "%s", base);
        char *dot = strrchr(archive, '.');
        if (dot)
            *dot = '\0';
        return identity(argv[2], archive);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_writer_worked_example),
        cmocka_unit_test(test_writer_empty_record),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_file_sources),
        cmocka_unit_test(test_truncated_everywhere),
        cmocka_unit_test(test_end_record_corruption),
        cmocka_unit_test(test_entry_checks),
        cmocka_unit_test(test_ambiguous),
        cmocka_unit_test(test_reads),
        cmocka_unit_test(test_out_of_memory),
        cmocka_unit_test(test_many_entries),
        cmocka_unit_test(test_serialization_id),
        cmocka_unit_test(test_zip64_big),
        cmocka_unit_test(test_shared_fixtures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
