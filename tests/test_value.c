/*
 test_value.c - documents and values: scalars, big ints, dicts (order, replacement, hashing of
 every key kind, 100,000 keys), sets, retagging, dotted paths, tensor and storage values
 (storage references dropped by sdict_doc_free), and out-of-memory at every allocation.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../src/internal.h"

static sdict_doc *new_doc(void) {
    sdict_doc *d = NULL;
    assert_int_equal(sdict_doc_new(&d, NULL), SDICT_OK);
    assert_non_null(d);
    return d;
}

/*==================================================================================================
 Scalars and docs
==================================================================================================*/

static void test_scalars(void **state) {
    (void)state;
    sdict_doc *d = new_doc();
    assert_int_equal(sdict_value_kind(sdict_doc_root(d)), SDICT_KIND_NONE);
    assert_int_equal(sdict_doc_format(d), SDICT_FORMAT_NONE);
    assert_false(sdict_doc_big_endian(d));
    sdict__doc_set_format(d, SDICT_FORMAT_LEGACY, true);
    assert_int_equal(sdict_doc_format(d), SDICT_FORMAT_LEGACY);
    assert_true(sdict_doc_big_endian(d));

    sdict_value *b = sdict_bool_new(d, true), *i = sdict_int_new(d, -12),
                *f = sdict_float_new(d, 2.5), *s = sdict_str_new(d, "a\0b", 3),
                *y = sdict_bytes_new(d, "\x01\x02", 2), *t = sdict_dtype_value_new(d, SDICT_BFLOAT16),
                *n = sdict_none_new(d);
    assert_int_equal(sdict_value_kind(b), SDICT_KIND_BOOL);
    assert_true(sdict_bool_get(b));
    assert_false(sdict_bool_get(i));
    int64_t iv;
    assert_int_equal(sdict_int_get(i, &iv), SDICT_OK);
    assert_int_equal(iv, -12);
    assert_int_equal(sdict_int_get(b, &iv), SDICT_OK);
    assert_int_equal(iv, 1);
    assert_int_equal(sdict_int_get(f, &iv), SDICT_E_INVALID_ARG);
    assert_true(sdict_float_get(f) == 2.5);
    assert_true(sdict_float_get(i) == -12.0);
    assert_true(sdict_float_get(b) == 1.0);
    assert_true(isnan(sdict_float_get(s)));
    size_t len;
    const char *sp = sdict_str_get(s, &len);
    assert_int_equal(len, 3);
    assert_memory_equal(sp, "a\0b", 4); /* NUL-terminated after the embedded NUL */
    assert_null(sdict_str_get(y, &len));
    assert_int_equal(len, 0);
    const uint8_t *yp = sdict_bytes_get(y, &len);
    assert_int_equal(len, 2);
    assert_int_equal(yp[1], 2);
    assert_int_equal(sdict_dtype_value_get(t), SDICT_BFLOAT16);
    assert_int_equal(sdict_dtype_value_get(i), SDICT_DTYPE_COUNT);
    assert_null(sdict_dtype_value_new(d, SDICT_DTYPE_COUNT));
    assert_int_equal(sdict_value_kind(n), SDICT_KIND_NONE);
    sdict_value *empty = sdict_str_new(d, NULL, 0);
    assert_string_equal(sdict_str_get(empty, NULL), "");
    assert_int_equal(sdict_value_kind(NULL), SDICT_KIND_NONE);

    assert_int_equal(sdict_doc_set_root(d, s), SDICT_OK);
    assert_ptr_equal(sdict_doc_root(d), s);
    sdict_doc *other = new_doc();
    assert_int_equal(sdict_doc_set_root(other, s), SDICT_E_INVALID_ARG);
    sdict_value *lst = sdict_list_new(other);
    assert_int_equal(sdict_seq_append(lst, s), SDICT_E_INVALID_ARG); /* foreign doc */
    sdict_doc_free(other);
    /* a doc counts what it made (including its root None) */
    assert_int_equal(sdict__doc_value_count(d), 9);

    const char *kinds[] = {"none",   "bool",   "int",    "float",   "str",     "bytes",
                           "list",   "tuple",  "set",    "dict",    "tensor",  "dtype",
                           "device", "complex", "qscheme", "layout", "sparse", "nested",
                           "storage", "object"};
    assert_int_equal(sizeof kinds / sizeof kinds[0], SDICT_KIND_COUNT);
    for (int k = 0; k < SDICT_KIND_COUNT; k++)
        assert_string_equal(sdict_kind_name((sdict_kind)k), kinds[k]);
    assert_string_equal(sdict_kind_name(SDICT__KIND_STORAGE), "storage");
    assert_string_equal(sdict_kind_name((sdict_kind)77), "?");
    assert_string_equal(sdict_format_name(SDICT_FORMAT_NONE), "none");
    assert_string_equal(sdict_format_name(SDICT_FORMAT_ZIP), "zip");
    assert_string_equal(sdict_format_name(SDICT_FORMAT_LEGACY), "legacy");
    assert_string_equal(sdict_format_name(SDICT_FORMAT_TAR), "tar");
    assert_string_equal(sdict_format_name(SDICT_FORMAT_COUNT), "?");
    sdict_doc_free(d);
    sdict_doc_free(NULL);
}

/*==================================================================================================
 Big ints
==================================================================================================*/

/* Independent decimal rendering: magnitude bytes folded most significant first into a
   little-endian array of decimal digits (digits = digits * 256 + byte). */
static void decimal_of_le(const uint8_t *p, size_t n, char *out) {
    bool neg = n && (p[n - 1] & 0x80);
    uint8_t mag[256];
    int carry = 1;
    for (size_t k = 0; k < n; k++) {
        int v = neg ? (uint8_t)~p[k] + carry : p[k];
        if (neg)
            carry = v >> 8;
        mag[k] = (uint8_t)v;
    }
    int digits[1000] = {0}, nd = 1;
    for (size_t k = n; k-- > 0;) {
        int c = mag[k];
        for (int j = 0; j < nd; j++) {
            int v = digits[j] * 256 + c;
            digits[j] = v % 10;
            c = v / 10;
        }
        while (c) {
            digits[nd++] = c % 10;
            c /= 10;
        }
    }
    while (nd > 1 && digits[nd - 1] == 0)
        nd--;
    size_t o = 0;
    if (neg)
        out[o++] = '-';
    for (int j = nd - 1; j >= 0; j--)
        out[o++] = (char)('0' + digits[j]);
    out[o] = 0;
}

/* Value of little-endian two's complement bytes, for checking an encoding (n <= 8). */
static int64_t le_value(const uint8_t *p, size_t n) {
    if (n == 0)
        return 0;
    uint64_t u = 0;
    for (size_t k = 0; k < n; k++)
        u |= (uint64_t)p[k] << (8 * k);
    if (n < 8 && (p[n - 1] & 0x80))
        u |= ~(uint64_t)0 << (8 * n);
    return (int64_t)u;
}

static void test_big_ints(void **state) {
    (void)state;
    sdict_doc *d = new_doc();
    /* 2**100: bit 100 set, i.e. byte 12 = 0x10 */
    uint8_t p100[13] = {0};
    p100[12] = 0x10;
    sdict_value *v = sdict__int_from_le_bytes(d, p100, 13);
    assert_int_equal(sdict_value_kind(v), SDICT_KIND_INT);
    char buf[400], want[400];
    size_t n = sdict_int_to_string(v, buf, sizeof buf);
    /* 2**100 by repeated doubling of a decimal string */
    int dig[40] = {1}, nd = 1;
    for (int k = 0; k < 100; k++) {
        int c = 0;
        for (int j = 0; j < nd; j++) {
            int x = dig[j] * 2 + c;
            dig[j] = x % 10;
            c = x / 10;
        }
        if (c)
            dig[nd++] = c;
    }
    for (int j = 0; j < nd; j++)
        want[j] = (char)('0' + dig[nd - 1 - j]);
    want[nd] = 0;
    assert_string_equal(buf, want);
    assert_int_equal(n, strlen(want));
    int64_t iv = 5;
    assert_int_equal(sdict_int_get(v, &iv), SDICT_E_LIMIT);
    assert_true(sdict_float_get(v) == ldexp(1.0, 100));
    /* snprintf semantics: the full length comes back even when truncated */
    char small[8];
    assert_int_equal(sdict_int_to_string(v, small, sizeof small), strlen(want));
    assert_int_equal(strlen(small), 7);
    assert_memory_equal(small, want, 7);
    assert_int_equal(sdict_int_to_string(v, NULL, 0), strlen(want));
    /* the bytes come back unchanged (already minimal) */
    uint8_t tmp[16];
    size_t bn;
    const uint8_t *bp = sdict__int_le_bytes(v, tmp, &bn);
    assert_int_equal(bn, 13);
    assert_memory_equal(bp, p100, 13);

    /* -(2**100): two's complement of the above */
    uint8_t m100[13];
    for (int k = 0; k < 13; k++)
        m100[k] = (uint8_t)~p100[k];
    for (int k = 0; k < 13 && ++m100[k] == 0; k++) {
    }
    v = sdict__int_from_le_bytes(d, m100, 13);
    sdict_int_to_string(v, buf, sizeof buf);
    assert_int_equal(buf[0], '-');
    assert_string_equal(buf + 1, want);
    assert_true(sdict_float_get(v) == -ldexp(1.0, 100));

    /* random lengths and contents against the independent renderer */
    uint64_t r = 88172645463325252u;
    for (int trial = 0; trial < 500; trial++) {
        uint8_t bytes[120];
        size_t len = 9 + (size_t)(trial % 100);
        for (size_t k = 0; k < len; k++) {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            bytes[k] = (uint8_t)r;
        }
        v = sdict__int_from_le_bytes(d, bytes, len);
        decimal_of_le(bytes, len, want);
        size_t got = sdict_int_to_string(v, buf, sizeof buf);
        assert_string_equal(buf, want);
        assert_int_equal(got, strlen(want));
    }
    /* a long LONG4 value goes through the heap path */
    uint8_t huge[1000];
    memset(huge, 0xAB, sizeof huge);
    huge[999] = 0x12;
    v = sdict__int_from_le_bytes(d, huge, sizeof huge);
    size_t need = sdict_int_to_string(v, NULL, 0);
    assert_true(need > 2400 && need < 2420); /* 8000 bits ~ 2408 digits */
    char *text = malloc(need + 1);
    assert_int_equal(sdict_int_to_string(v, text, need + 1), need);
    assert_int_equal(strlen(text), need);
    /* digit count and leading digit from log10 of the top bytes (value 0x12ABAB...AB) */
    double top = 0;
    for (int k = 999; k >= 992; k--)
        top = top * 256 + huge[k];
    double lg = log10(top) + 992 * 8 * log10(2.0);
    assert_int_equal((int)need, (int)floor(lg) + 1);
    assert_int_equal(text[0] - '0', (int)floor(pow(10.0, lg - floor(lg))));
    free(text);

    /* values that fit are normalised to int64, whatever their encoded length */
    uint8_t m1[12];
    memset(m1, 0xFF, sizeof m1);
    v = sdict__int_from_le_bytes(d, m1, sizeof m1);
    assert_int_equal(sdict_int_get(v, &iv), SDICT_OK);
    assert_int_equal(iv, -1);
    uint8_t padded[10] = {0x34, 0x12};
    v = sdict__int_from_le_bytes(d, padded, 10);
    assert_int_equal(sdict_int_get(v, &iv), SDICT_OK);
    assert_int_equal(iv, 0x1234);
    v = sdict__int_from_le_bytes(d, NULL, 0);
    assert_int_equal(sdict_int_get(v, &iv), SDICT_OK);
    assert_int_equal(iv, 0);
    uint8_t minv[8] = {0, 0, 0, 0, 0, 0, 0, 0x80};
    v = sdict__int_from_le_bytes(d, minv, 8);
    assert_int_equal(sdict_int_get(v, &iv), SDICT_OK);
    assert_true(iv == INT64_MIN);
    sdict_int_to_string(v, buf, sizeof buf);
    assert_string_equal(buf, "-9223372036854775808");
    /* 2**63 needs 9 bytes and does not fit */
    uint8_t p63[9] = {0, 0, 0, 0, 0, 0, 0, 0x80, 0};
    v = sdict__int_from_le_bytes(d, p63, 9);
    assert_int_equal(sdict_int_get(v, &iv), SDICT_E_LIMIT);
    sdict_int_to_string(v, buf, sizeof buf);
    assert_string_equal(buf, "9223372036854775808");
    /* a non-minimal big encoding compares equal to the minimal one */
    uint8_t p100pad[15] = {0};
    p100pad[12] = 0x10;
    sdict_value *a = sdict__int_from_le_bytes(d, p100, 13),
                *b = sdict__int_from_le_bytes(d, p100pad, 15);
    {
        sdict_value *dk = sdict_dict_new(d, false);
        assert_int_equal(sdict_dict_set(dk, a, sdict_none_new(d)), SDICT_OK);
        assert_non_null(sdict_dict_find(dk, b));
        /* 2**100 == 2.0**100 as a key, as in Python; 2**100 + 1 is no double */
        assert_non_null(sdict_dict_find(dk, sdict_float_new(d, ldexp(1.0, 100))));
    }

    /* int64 encodings are minimal two's complement (CPython's LONG1): decoding gives the
       value back and one byte fewer would not */
    int64_t samples[] = {0, 1, -1, 127, 128, 255, 256, -128, -129, -256, 32767, 32768,
                         -32768, -32769, INT64_MAX, INT64_MIN, 0x123456789A};
    for (size_t k = 0; k < sizeof samples / sizeof samples[0]; k++) {
        v = sdict_int_new(d, samples[k]);
        bp = sdict__int_le_bytes(v, tmp, &bn);
        assert_true(bn <= 8);
        assert_true(le_value(bp, bn) == samples[k]);
        if (bn > 0)
            assert_false(le_value(bp, bn - 1) == samples[k] && bn > 1);
        if (samples[k] == 0)
            assert_int_equal(bn, 0);
        sdict_int_to_string(v, buf, sizeof buf);
        snprintf(want, sizeof want, "%lld", (long long)samples[k]);
        assert_string_equal(buf, want);
    }
    assert_null(sdict__int_le_bytes(sdict_float_new(d, 1.0), tmp, &bn));
    assert_int_equal(sdict_int_to_string(sdict_str_new(d, "1", 1), buf, sizeof buf), 0);
    sdict_doc_free(d);
}

/*==================================================================================================
 Dicts
==================================================================================================*/

static void test_dict_many_keys(void **state) {
    (void)state;
    sdict_doc *d = new_doc();
    sdict_value *dict = sdict_dict_new(d, true);
    assert_true(sdict_dict_is_ordered(dict));
    enum { N = 100000 };
    char key[64];
    clock_t t0 = clock();
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "layers.%d.attention.weight", i);
        assert_int_equal(sdict_dict_set_str(dict, key, sdict_int_new(d, i)), SDICT_OK);
    }
    assert_int_equal(sdict_dict_len(dict), N);
    /* replacing every seventh key keeps its position and the length */
    for (int i = 0; i < N; i += 7) {
        snprintf(key, sizeof key, "layers.%d.attention.weight", i);
        sdict_value *k = sdict_str_new(d, key, strlen(key));
        assert_int_equal(sdict_dict_set(dict, k, sdict_int_new(d, -i - 1)), SDICT_OK);
    }
    assert_int_equal(sdict_dict_len(dict), N);
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "layers.%d.attention.weight", i);
        int64_t want = i % 7 == 0 ? -i - 1 : i, got;
        assert_int_equal(sdict_int_get(sdict_dict_get(dict, key), &got), SDICT_OK);
        assert_int_equal(got, want);
        assert_string_equal(sdict_str_get(sdict_dict_key(dict, (size_t)i), NULL), key);
        assert_int_equal(sdict_int_get(sdict_dict_val(dict, (size_t)i), &got), SDICT_OK);
        assert_int_equal(got, want);
        /* value_at finds dotted keys whole */
        assert_ptr_equal(sdict_value_at(dict, key), sdict_dict_val(dict, (size_t)i));
    }
    assert_null(sdict_dict_get(dict, "layers.100000.attention.weight"));
    assert_null(sdict_dict_key(dict, N));
    double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
    /* generous bound (sanitizer builds are slow); a quadratic dict would take minutes */
    assert_true(secs < 10.0);
    print_message("100,000-key dict: build, replace, look up, value_at in %.3f s\n", secs);
    sdict_doc_free(d);
}

static void test_dict_key_kinds(void **state) {
    (void)state;
    sdict_doc *d = new_doc();
    for (int indexed = 0; indexed < 2; indexed++) {
        sdict_value *dict = sdict_dict_new(d, false);
        assert_false(sdict_dict_is_ordered(dict));
        if (indexed) /* push past the linear-scan size so the hash index is used */
            for (int i = 0; i < 40; i++)
                assert_int_equal(sdict_dict_set(dict, sdict_int_new(d, 1000 + i),
                                                sdict_none_new(d)), SDICT_OK);
        size_t base = sdict_dict_len(dict);
        sdict_value *v1 = sdict_str_new(d, "v1", 2);
        sdict_value *keys[] = {
            sdict_int_new(d, 1), sdict_bool_new(d, true), sdict_float_new(d, 1.0),
            sdict_none_new(d),   sdict_str_new(d, "1", 1), sdict_bytes_new(d, "1", 1),
            sdict_float_new(d, 0.0), sdict_dtype_value_new(d, SDICT_FLOAT32),
        };
        size_t nk = sizeof keys / sizeof keys[0];
        /* as in Python, 1 == True == 1.0 are one key (the first key object stays, the last
           value wins: torch.load gives {1: 2}), while "1" and b"1" are others */
        for (size_t k = 0; k < nk; k++)
            assert_int_equal(sdict_dict_set(dict, keys[k], sdict_int_new(d, (int64_t)k)), SDICT_OK);
        assert_int_equal(sdict_dict_len(dict), base + nk - 2);
        assert_ptr_equal(sdict_dict_key(dict, base), keys[0]);
        /* equal but distinct key objects find the same items */
        sdict_value *probe[] = {
            sdict_int_new(d, 1), sdict_bool_new(d, true), sdict_float_new(d, 1.0),
            sdict_none_new(d),   sdict_str_new(d, "1", 1), sdict_bytes_new(d, "1", 1),
            sdict_float_new(d, -0.0), sdict_dtype_value_new(d, SDICT_FLOAT32),
        };
        for (size_t k = 0; k < nk; k++) {
            int64_t got;
            assert_int_equal(sdict_int_get(sdict_dict_find(dict, probe[k]), &got), SDICT_OK);
            assert_int_equal(got, k < 3 ? 2 : (int64_t)k);
        }
        int64_t got;
        assert_int_equal(sdict_int_get(sdict_dict_get_int(dict, 1), &got), SDICT_OK);
        assert_int_equal(got, 2);
        assert_int_equal(sdict_int_get(sdict_dict_find(dict, sdict_complex_new(d, 1.0, 0.0)), &got),
                         SDICT_OK);
        assert_int_equal(got, 2);
        assert_null(sdict_dict_find(dict, sdict_complex_new(d, 1.0, 1.0)));
        assert_null(sdict_dict_find(dict, sdict_float_new(d, 1.5)));
        assert_int_equal(sdict_int_get(sdict_dict_get(dict, "1"), &got), SDICT_OK);
        assert_int_equal(got, 4);
        assert_null(sdict_dict_get_int(dict, 2));
        /* NaN never equals itself: two NaN keys are two items */
        assert_int_equal(sdict_dict_set(dict, sdict_float_new(d, NAN), v1), SDICT_OK);
        assert_int_equal(sdict_dict_set(dict, sdict_float_new(d, NAN), v1), SDICT_OK);
        assert_int_equal(sdict_dict_len(dict), base + nk);
        /* tuple keys, nested, and big-int keys */
        sdict_value *tk = sdict_tuple_new(d), *inner = sdict_tuple_new(d);
        sdict_seq_append(inner, sdict_str_new(d, "x", 1));
        sdict_seq_append(tk, sdict_int_new(d, 3));
        sdict_seq_append(tk, inner);
        assert_int_equal(sdict_dict_set(dict, tk, sdict_int_new(d, 77)), SDICT_OK);
        sdict_value *tk2 = sdict_tuple_new(d), *inner2 = sdict_tuple_new(d);
        sdict_seq_append(inner2, sdict_str_new(d, "x", 1));
        sdict_seq_append(tk2, sdict_int_new(d, 3));
        sdict_seq_append(tk2, inner2);
        assert_int_equal(sdict_int_get(sdict_dict_find(dict, tk2), &got), SDICT_OK);
        assert_int_equal(got, 77);
        sdict_seq_append(inner2, sdict_none_new(d));
        assert_null(sdict_dict_find(dict, tk2));
        uint8_t big[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
        assert_int_equal(sdict_dict_set(dict, sdict__int_from_le_bytes(d, big, 10), v1), SDICT_OK);
        assert_ptr_equal(sdict_dict_find(dict, sdict__int_from_le_bytes(d, big, 10)), v1);
        /* unhashable keys */
        sdict_value *lst = sdict_list_new(d);
        assert_int_equal(sdict_dict_set(dict, lst, v1), SDICT_E_INVALID_ARG);
        sdict_value *tl = sdict_tuple_new(d);
        sdict_seq_append(tl, lst);
        assert_int_equal(sdict_dict_set(dict, tl, v1), SDICT_E_INVALID_ARG);
        assert_int_equal(sdict_dict_set(dict, sdict_dict_new(d, false), v1), SDICT_E_INVALID_ARG);
        assert_null(sdict_dict_find(dict, lst));
        /* the first key object is kept on replacement, as in Python */
        sdict_value *k1 = sdict_dict_key(dict, base);
        assert_int_equal(sdict_dict_set(dict, probe[0], v1), SDICT_OK);
        assert_ptr_equal(sdict_dict_key(dict, base), k1);
        assert_ptr_equal(sdict_dict_val(dict, base), v1);
    }
    /* attrs */
    sdict_value *od = sdict_dict_new(d, true), *meta = sdict_dict_new(d, true);
    assert_null(sdict_dict_attrs(od));
    assert_int_equal(sdict_dict_set_attrs(od, meta), SDICT_OK);
    assert_ptr_equal(sdict_dict_attrs(od), meta);
    assert_int_equal(sdict_dict_set_attrs(od, sdict_list_new(d)), SDICT_E_INVALID_ARG);
    assert_int_equal(sdict_dict_set_attrs(od, NULL), SDICT_OK);
    assert_null(sdict_dict_attrs(od));
    /* misuse */
    sdict_value *lst = sdict_list_new(d);
    assert_int_equal(sdict_dict_set_str(lst, "a", lst), SDICT_E_INVALID_ARG);
    assert_int_equal(sdict_dict_len(lst), 0);
    assert_null(sdict_dict_get(lst, "a"));
    assert_null(sdict_dict_get(od, NULL));
    sdict_doc_free(d);
}

/*==================================================================================================
 Sequences and sets
==================================================================================================*/

static void test_sequences_sets(void **state) {
    (void)state;
    sdict_doc *d = new_doc();
    sdict_value *l = sdict_list_new(d);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(sdict_seq_append(l, sdict_int_new(d, i % 300)), SDICT_OK);
    assert_int_equal(sdict_seq_len(l), 1000);
    int64_t got;
    assert_int_equal(sdict_int_get(sdict_seq_item(l, 999), &got), SDICT_OK);
    assert_int_equal(got, 999 % 300);
    assert_null(sdict_seq_item(l, 1000));
    /* a list may contain itself (the memo can build that); it is still a list */
    assert_int_equal(sdict_seq_append(l, l), SDICT_OK);

    sdict_value *s = sdict_set_new(d);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(sdict_seq_append(s, sdict_int_new(d, i % 300)), SDICT_OK);
    assert_int_equal(sdict_seq_len(s), 300);
    for (int i = 0; i < 300; i++) { /* first occurrences, in order */
        assert_int_equal(sdict_int_get(sdict_seq_item(s, (size_t)i), &got), SDICT_OK);
        assert_int_equal(got, i);
    }
    assert_int_equal(sdict_seq_append(s, sdict_list_new(d)), SDICT_E_INVALID_ARG);
    assert_int_equal(sdict_seq_append(s, sdict_str_new(d, "a", 1)), SDICT_OK);
    assert_int_equal(sdict_seq_append(s, sdict_str_new(d, "a", 1)), SDICT_OK);
    assert_int_equal(sdict_seq_len(s), 301);

    /* the unpickler's retagging: list -> tuple keeps items; list -> set drops duplicates */
    sdict_value *t = sdict_list_new(d);
    for (int i = 0; i < 20; i++)
        sdict_seq_append(t, sdict_int_new(d, i / 2));
    sdict__value_retag(t, SDICT_KIND_TUPLE);
    assert_int_equal(sdict_value_kind(t), SDICT_KIND_TUPLE);
    assert_int_equal(sdict_seq_len(t), 20);
    sdict__value_retag(t, SDICT_KIND_SET);
    assert_int_equal(sdict_value_kind(t), SDICT_KIND_SET);
    assert_int_equal(sdict_seq_len(t), 10);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(sdict_int_get(sdict_seq_item(t, (size_t)i), &got), SDICT_OK);
        assert_int_equal(got, i);
    }
    assert_int_equal(sdict_seq_append(t, sdict_int_new(d, 4)), SDICT_OK);
    assert_int_equal(sdict_seq_len(t), 10);
    sdict__value_retag(t, SDICT_KIND_LIST);
    assert_int_equal(sdict_value_kind(t), SDICT_KIND_LIST);
    assert_int_equal(sdict_seq_append(t, sdict_int_new(d, 4)), SDICT_OK);
    assert_int_equal(sdict_seq_len(t), 11);
    sdict__value_retag(sdict_int_new(d, 1), SDICT_KIND_TUPLE); /* ignored */
    assert_int_equal(sdict_seq_len(sdict_int_new(d, 1)), 0);
    assert_int_equal(sdict_seq_append(sdict_int_new(d, 1), t), SDICT_E_INVALID_ARG);
    sdict_doc_free(d);
}

/*==================================================================================================
 Paths
==================================================================================================*/

static void test_paths(void **state) {
    (void)state;
    sdict_doc *d = new_doc();
    sdict_value *root = sdict_dict_new(d, false), *model = sdict_dict_new(d, true),
                *conv1 = sdict_dict_new(d, true), *opt = sdict_dict_new(d, false),
                *st = sdict_dict_new(d, false), *s0 = sdict_dict_new(d, false),
                *lst = sdict_list_new(d), *inner = sdict_tuple_new(d);
    sdict_value *w = sdict_str_new(d, "W", 1), *b = sdict_str_new(d, "B", 1),
                *mom = sdict_str_new(d, "M", 1), *x = sdict_str_new(d, "X", 1),
                *y = sdict_str_new(d, "Y", 1), *dotted = sdict_str_new(d, "D", 1);
    sdict_doc_set_root(d, root);
    sdict_dict_set_str(root, "model", model);
    sdict_dict_set_str(model, "conv1.weight", w);
    sdict_dict_set_str(model, "conv1", conv1);
    sdict_dict_set_str(conv1, "bias", b);
    sdict_dict_set_str(root, "opt", opt);
    sdict_dict_set_str(opt, "state", st);
    sdict_dict_set(st, sdict_int_new(d, 0), s0);
    sdict_dict_set(st, sdict_int_new(d, -3), y);
    sdict_dict_set_str(s0, "momentum_buffer", mom);
    sdict_dict_set_str(root, "list", lst);
    sdict_seq_append(lst, x);
    sdict_seq_append(lst, inner);
    sdict_seq_append(inner, y);
    sdict_dict_set_str(root, "a.b", dotted);

    assert_ptr_equal(sdict_value_at(root, ""), root);
    assert_ptr_equal(sdict_value_at(root, "model.conv1.weight"), w); /* longest key wins */
    assert_ptr_equal(sdict_value_at(root, "model.conv1.bias"), b);
    assert_ptr_equal(sdict_value_at(root, "model.conv1"), conv1);
    assert_ptr_equal(sdict_value_at(root, "opt.state.0.momentum_buffer"), mom);
    assert_ptr_equal(sdict_value_at(root, "opt.state.-3"), y);
    assert_ptr_equal(sdict_value_at(root, "list.0"), x);
    assert_ptr_equal(sdict_value_at(root, "list.1.0"), y);
    assert_ptr_equal(sdict_value_at(root, "a.b"), dotted);
    assert_null(sdict_value_at(root, "a"));
    assert_null(sdict_value_at(root, "list.2"));
    assert_null(sdict_value_at(root, "list.01"));
    assert_null(sdict_value_at(root, "list.-1"));
    assert_null(sdict_value_at(root, "list.0.x"));
    assert_null(sdict_value_at(root, "opt.state.00"));
    assert_null(sdict_value_at(root, "model.conv1.weight.x"));
    assert_null(sdict_value_at(root, "model."));
    sdict_value *under_empty = sdict_str_new(d, "E", 1);
    sdict_dict_set_str(conv1, "", under_empty); /* _metadata uses "" for the root module */
    assert_ptr_equal(sdict_value_at(root, "model.conv1."), under_empty);
    assert_null(sdict_value_at(root, "list."));
    assert_null(sdict_value_at(root, ".model"));
    assert_null(sdict_value_at(root, "nope"));
    assert_null(sdict_value_at(NULL, ""));
    assert_null(sdict_value_at(root, NULL));
    sdict_doc_free(d);
}

/*==================================================================================================
 Tensors and storage values
==================================================================================================*/

static int released;
static void on_release(void *ctx, void *data) {
    (void)data;
    (*(int *)ctx)++;
}

static void test_tensor_values(void **state) {
    (void)state;
    static float mem[6] = {1, 2, 3, 4, 5, 6};
    released = 0;
    sdict_storage *s;
    assert_int_equal(sdict_storage_wrap(mem, sizeof mem, on_release, &released, &s, NULL),
                     SDICT_OK);
    sdict_doc *d = new_doc();
    sdict_tensor t;
    int64_t shape[2] = {2, 3}, stride[2];
    assert_int_equal(sdict_tensor_init(&t, SDICT_FLOAT32, 2, shape, stride, s, NULL), SDICT_OK);
    t.requires_grad = true;
    sdict_value *a, *b;
    assert_int_equal(sdict_tensor_new(d, &t, &a, NULL), SDICT_OK);
    shape[0] = 3; /* transposed view of the same storage; the value keeps its own copies */
    shape[1] = 2;
    stride[0] = 1;
    stride[1] = 3;
    t.is_parameter = true;
    assert_int_equal(sdict_tensor_new(d, &t, &b, NULL), SDICT_OK);
    sdict_value *sv = sdict__storage_value_new(d, s, SDICT_FLOAT32);
    assert_int_equal(sdict_value_kind(sv), SDICT__KIND_STORAGE);
    sdict_dtype dt;
    assert_ptr_equal(sdict__storage_value_get(sv, &dt), s);
    assert_int_equal(dt, SDICT_FLOAT32);
    assert_null(sdict__storage_value_get(a, &dt));
    const sdict_tensor *ta = sdict_value_tensor(a), *tb = sdict_value_tensor(b);
    assert_int_equal(sdict_value_kind(a), SDICT_KIND_TENSOR);
    assert_int_equal(ta->shape[0], 2);
    assert_int_equal(ta->shape[1], 3);
    assert_int_equal(ta->stride[0], 3);
    assert_int_equal(ta->stride[1], 1);
    assert_true(ta->shape != shape && ta->stride != stride);
    assert_int_equal(tb->shape[0], 3);
    assert_int_equal(tb->stride[1], 3);
    assert_true(ta->requires_grad);
    assert_false(ta->is_parameter);
    assert_true(tb->is_parameter);
    assert_ptr_equal(ta->storage, s);
    assert_null(sdict_value_tensor(sv));
    /* a bad tensor is refused with the check's status */
    stride[0] = 5;
    sdict_value *c = (sdict_value *)&t;
    sdict_error err;
    assert_int_equal(sdict_tensor_new(d, &t, &c, &err), SDICT_E_STORAGE);
    assert_null(c);
    /* the caller's reference goes; the doc still holds three */
    sdict_storage_release(s);
    assert_int_equal(released, 0);
    assert_true(sdict_float_get(sdict_float_new(d, 0)) == 0);
    float out[6];
    assert_int_equal(sdict_tensor_copy_to(tb, SDICT_FLOAT32, out, sizeof out, NULL), SDICT_OK);
    assert_true(out[1] == 4.0f); /* element (0,1) of the transpose is mem[3] */
    sdict_doc_free(d);
    assert_int_equal(released, 1);
}

/* A 100,000-tensor state dict (what a large model's load builds) is made and freed quickly,
   and every storage reference the doc took is dropped. */
static void test_many_tensor_values(void **state) {
    (void)state;
    enum { N = 100000 };
    sdict_storage *s;
    float *mem = calloc(N, 4);
    int hook_calls = 0;
    assert_int_equal(sdict_storage_wrap(mem, N * 4, on_release, &hook_calls, &s, NULL), SDICT_OK);
    clock_t t0 = clock();
    sdict_doc *d = new_doc();
    sdict_value *root = sdict_dict_new(d, true);
    sdict_doc_set_root(d, root);
    char key[64];
    for (int i = 0; i < N; i++) {
        sdict_tensor t;
        int64_t shape[1] = {1}, stride[1];
        assert_int_equal(sdict_tensor_init(&t, SDICT_FLOAT32, 1, shape, stride, s, NULL), SDICT_OK);
        t.storage_offset = i;
        sdict_value *tv;
        assert_int_equal(sdict_tensor_new(d, &t, &tv, NULL), SDICT_OK);
        snprintf(key, sizeof key, "blocks.%d.mlp.fc1.weight", i);
        assert_int_equal(sdict_dict_set_str(root, key, tv), SDICT_OK);
    }
    assert_int_equal(sdict_value_at(root, "blocks.99999.mlp.fc1.weight") != NULL, 1);
    assert_int_equal(sdict_value_tensor(sdict_dict_val(root, 777))->storage_offset, 777);
    sdict_doc_free(d);
    double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
    print_message("100,000 tensor values: build and free in %.3f s\n", secs);
    assert_true(secs < 10.0); /* generous for sanitizer builds; ~0.05 s optimised */
    /* only the test's own reference is left: the storage must still be usable */
    assert_int_equal(hook_calls, 0);
    assert_int_equal(sdict_storage_nbytes(s), N * 4);
    sdict_storage_release(s);
    assert_int_equal(hook_calls, 1);
    free(mem);
}

/*==================================================================================================
 Out of memory at every allocation
==================================================================================================*/

typedef struct counting {
    long calls, fail_at, live;
} counting;
static void *c_malloc(void *ctx, size_t n) {
    counting *c = ctx;
    if (++c->calls == c->fail_at)
        return NULL;
    void *p = malloc(n);
    c->live += p != NULL;
    return p;
}
static void *c_realloc(void *ctx, void *p, size_t n) {
    counting *c = ctx;
    if (++c->calls == c->fail_at)
        return NULL;
    void *q = realloc(p, n);
    c->live += q && !p;
    return q;
}
static void c_free(void *ctx, void *p) {
    counting *c = ctx;
    c->live -= p != NULL;
    free(p);
}

/* Builds a small state-dict-like tree; returns the first failing status. */
static sdict_status build(sdict_doc **out, sdict_storage *s) {
    *out = NULL;
    sdict_status st = sdict_doc_new(out, NULL);
    if (st)
        return st;
    sdict_doc *d = *out;
    sdict_value *root = sdict_dict_new(d, true);
    if (!root)
        return SDICT_E_NOMEM;
    if ((st = sdict_doc_set_root(d, root)))
        return st;
    char key[32];
    for (int i = 0; i < 40; i++) {
        sdict_tensor t;
        int64_t shape[1] = {4}, stride[1];
        sdict_value *tv;
        if ((st = sdict_tensor_init(&t, SDICT_FLOAT32, 1, shape, stride, s, NULL)))
            return st;
        if ((st = sdict_tensor_new(d, &t, &tv, NULL)))
            return st;
        snprintf(key, sizeof key, "layer%d.weight", i);
        if ((st = sdict_dict_set_str(root, key, tv)))
            return st;
    }
    sdict_value *lst = sdict_list_new(d), *set = sdict_set_new(d), *tup = sdict_tuple_new(d);
    if (!lst || !set || !tup)
        return SDICT_E_NOMEM;
    for (int i = 0; i < 30; i++) {
        sdict_value *v = sdict_int_new(d, i);
        if (!v)
            return SDICT_E_NOMEM;
        if ((st = sdict_seq_append(lst, v)) || (st = sdict_seq_append(set, v)))
            return st;
    }
    uint8_t big[20];
    memset(big, 0x5A, sizeof big);
    sdict_value *bi = sdict__int_from_le_bytes(d, big, sizeof big);
    sdict_value *sv = sdict__storage_value_new(d, s, SDICT_UINT8);
    sdict_value *str = sdict_str_new(d, "param_groups", 12);
    if (!bi || !sv || !str)
        return SDICT_E_NOMEM;
    if ((st = sdict_seq_append(tup, bi)) || (st = sdict_seq_append(tup, str)))
        return st;
    if ((st = sdict_dict_set(root, tup, lst)) || (st = sdict_dict_set(root, str, set)) ||
        (st = sdict_dict_set_str(root, "storage", sv)))
        return st;
    char text[64];
    if (sdict_int_to_string(bi, text, sizeof text) == 0)
        return SDICT_E_NOMEM;
    return SDICT_OK;
}

static void test_oom_every_allocation(void **state) {
    (void)state;
    int released_count = 0;
    static uint8_t mem[16];
    for (long n = 1;; n++) {
        counting c = {0, n, 0};
        sdict_allocator a = {c_malloc, c_realloc, c_free, &c};
        sdict_set_allocator(&a);
        released_count = 0;
        sdict_storage *s = NULL;
        sdict_status st = sdict_storage_wrap(mem, sizeof mem, on_release, &released_count, &s,
                                             NULL);
        sdict_doc *d = NULL;
        if (st == SDICT_OK)
            st = build(&d, s);
        if (st == SDICT_OK) {
            assert_int_equal(sdict_dict_len(sdict_doc_root(d)), 43);
            assert_int_equal(sdict_seq_len(sdict_dict_get(sdict_doc_root(d), "param_groups")), 30);
        }
        sdict_doc_free(d);
        sdict_storage_release(s);
        assert_int_equal(c.live, 0);
        if (s)
            assert_int_equal(released_count, 1);
        sdict_set_allocator(NULL);
        if (st == SDICT_OK) {
            print_message("OOM sweep: succeeded once %ld allocations were allowed\n", n);
            break;
        }
        assert_int_equal(st, SDICT_E_NOMEM);
        assert_true(n < 10000);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scalars),
        cmocka_unit_test(test_big_ints),
        cmocka_unit_test(test_dict_many_keys),
        cmocka_unit_test(test_dict_key_kinds),
        cmocka_unit_test(test_sequences_sets),
        cmocka_unit_test(test_paths),
        cmocka_unit_test(test_tensor_values),
        cmocka_unit_test(test_many_tensor_values),
        cmocka_unit_test(test_oom_every_allocation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
