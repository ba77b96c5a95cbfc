/* test_pickle.c - the pickle machine: CPython pickles of protocols 0-5 against the canonical
   text gen_pickles.py writes, hand-assembled hostile pickles (each with its status and opcode
   offset), and the torch rebuild functions through a stub persistent_load. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/*------------------------------------------------------------------------------------------------
 helpers
------------------------------------------------------------------------------------------------*/

typedef struct run {
    sdict_doc *doc;
    sdict_value *v;
    sdict_status st;
    sdict_error err;
    size_t consumed;
    int globals, refused;
} run;

/* ('storage', <dtype value>, key, location, numel) -> a zeroed storage of numel elements. */
static sdict_status stub_load(void *ctx, sdict_value *pid, int64_t offset, sdict_value **out,
                              sdict_error *err) {
    run *r = ctx;
    const sdict_value *cls = sdict_seq_item(pid, 1);
    int64_t numel = -1;
    if (sdict_seq_len(pid) != 5 || sdict_value_kind(cls) != SDICT_KIND_DTYPE ||
        sdict_int_get(sdict_seq_item(pid, 4), &numel) != SDICT_OK || numel < 0)
        return sdict__err(err, SDICT_E_PICKLE_TYPE, "stub", offset, "bad pid");
    sdict_dtype dt = sdict_dtype_value_get(cls);
    sdict_storage *s = NULL;
    sdict_status st = sdict_storage_new((size_t)numel * sdict_dtype_size(dt), &s, err);
    if (st != SDICT_OK)
        return st;
    *out = sdict__storage_value_new(r->doc, s, dt);
    sdict_storage_release(s);
    return *out ? SDICT_OK : SDICT_E_NOMEM;
}

static void count_global(void *ctx, const char *module, const char *name, bool allowed,
                         int64_t offset) {
    run *r = ctx;
    (void)module, (void)name, (void)offset;
    r->globals++;
    r->refused += !allowed;
}

static sdict_limits default_limits(void) {
    sdict_limits l = {.max_depth = 1000, .max_memo = 16u << 20, .max_stack = 16u << 20,
                      .max_str_bytes = 1u << 30, .max_values = 64u << 20};
    return l;
}

static bool g_inert; /* runs read with SDICT_LOAD_INERT's machine (test_inert_objects) */

static void unpickle_lim(run *r, const void *data, size_t n, bool scan, const sdict_limits *lim) {
    memset(r, 0, sizeof *r);
    assert_int_equal(sdict_doc_new(&r->doc, NULL), SDICT_OK);
    sdict__unpickler u = {.doc = r->doc, .data = data, .size = n, .record = "rec/data.pkl",
                          .limits = lim, .persistent_load = stub_load, .ctx = r,
                          .on_global = count_global, .scan = scan, .inert = g_inert};
    r->err.offset = -2;
    r->st = sdict__unpickle(&u, &r->v, &r->err);
    r->consumed = u.consumed;
}

static void unpickle(run *r, const void *data, size_t n, bool scan) {
    static sdict_limits lim;
    lim = default_limits();
    unpickle_lim(r, data, n, scan, &lim);
}

static void done(run *r) { sdict_doc_free(r->doc); }

/* Expects failure `st` at byte `off`, with the record name filled. */
static void expect_fail(const char *data, size_t n, bool scan, sdict_status st, int64_t off) {
    run r;
    unpickle(&r, data, n, scan);
    if (r.st != st || r.err.offset != off)
        fprintf(stderr, "case %.*s...: status %s offset %lld msg %s\n", (int)(n > 20 ? 20 : n),
                data, sdict_status_str(r.st), (long long)r.err.offset, r.err.message);
    assert_int_equal(r.st, st);
    assert_int_equal(r.err.offset, off);
    assert_string_equal(r.err.record, "rec/data.pkl");
    assert_null(r.v);
    done(&r);
}
#define FAIL(lit, scan, st, off) expect_fail(lit, sizeof(lit) - 1, scan, st, off)

/* Canonical text (see gen_pickles.py). */
typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;

static void put(sbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}
static void puts_(sbuf *b, const char *s) { put(b, s, strlen(s)); }
static void hex(sbuf *b, const void *p, size_t n) {
    char t[3];
    for (size_t i = 0; i < n; i++) {
        snprintf(t, sizeof t, "%02x", ((const uint8_t *)p)[i]);
        put(b, t, 2);
    }
}
static int cmpstr(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void canon(sbuf *b, const sdict_value *v) {
    size_t n;
    char tmp[2048];
    switch (sdict_value_kind(v)) {
    case SDICT_KIND_NONE: puts_(b, "N"); break;
    case SDICT_KIND_BOOL: puts_(b, sdict_bool_get(v) ? "T" : "F"); break;
    case SDICT_KIND_INT:
        assert_true(sdict_int_to_string(v, tmp, sizeof tmp) < sizeof tmp);
        puts_(b, "i");
        puts_(b, tmp);
        break;
    case SDICT_KIND_FLOAT: {
        double d = sdict_float_get(v);
        uint64_t bits;
        memcpy(&bits, &d, 8);
        snprintf(tmp, sizeof tmp, "f%016llx", (unsigned long long)bits);
        puts_(b, tmp);
        break;
    }
    case SDICT_KIND_STR: {
        const char *s = sdict_str_get(v, &n);
        puts_(b, "s");
        hex(b, s, n);
        break;
    }
    case SDICT_KIND_BYTES: {
        const void *s = sdict_bytes_get(v, &n);
        puts_(b, "b");
        hex(b, s, n);
        break;
    }
    case SDICT_KIND_LIST:
    case SDICT_KIND_TUPLE: {
        bool list = sdict_value_kind(v) == SDICT_KIND_LIST;
        puts_(b, list ? "L[" : "T(");
        for (size_t i = 0; i < sdict_seq_len(v); i++) {
            if (i)
                puts_(b, ",");
            canon(b, sdict_seq_item(v, i));
        }
        puts_(b, list ? "]" : ")");
        break;
    }
    case SDICT_KIND_SET: {
        size_t k = sdict_seq_len(v);
        char **items = calloc(k + 1, sizeof *items);
        for (size_t i = 0; i < k; i++) {
            sbuf t = {0};
            canon(&t, sdict_seq_item(v, i));
            items[i] = t.p;
        }
        qsort(items, k, sizeof *items, cmpstr);
        puts_(b, "S{");
        for (size_t i = 0; i < k; i++) {
            if (i)
                puts_(b, ",");
            puts_(b, items[i]);
            free(items[i]);
        }
        free(items);
        puts_(b, "}");
        break;
    }
    case SDICT_KIND_DICT:
        puts_(b, sdict_dict_is_ordered(v) ? "O{" : "D{");
        for (size_t i = 0; i < sdict_dict_len(v); i++) {
            if (i)
                puts_(b, ",");
            canon(b, sdict_dict_key(v, i));
            puts_(b, ":");
            canon(b, sdict_dict_val(v, i));
        }
        puts_(b, "}");
        if (sdict_dict_attrs(v)) {
            puts_(b, "@");
            canon(b, sdict_dict_attrs(v));
        }
        break;
    default: puts_(b, "?"); break;
    }
}

static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc((size_t)sz + 1);
    assert_int_equal(fread(p, 1, (size_t)sz, f), (size_t)sz);
    p[sz] = '\0';
    fclose(f);
    *n = (size_t)sz;
    return p;
}

/*------------------------------------------------------------------------------------------------
 CPython pickles
------------------------------------------------------------------------------------------------*/

static void test_cpython_corpus(void **state) {
    (void)state;
    const char *dir = getenv("SDICT_PICKLE_DATA");
    if (!dir) {
        printf("SKIP: SDICT_PICKLE_DATA not set (run through ctest)\n");
        return;
    }
    const char *names[] = {"nested", "memo", "big", "odict"};
    int checked = 0;
    for (size_t c = 0; c < sizeof names / sizeof names[0]; c++) {
        for (int proto = 0; proto <= 5; proto++) {
            char path[1024];
            size_t n, tn;
            snprintf(path, sizeof path, "%s/%s_p%d.pkl", dir, names[c], proto);
            char *data = slurp(path, &n);
            snprintf(path, sizeof path, "%s/%s_p%d.txt", dir, names[c], proto);
            char *want = slurp(path, &tn);
            assert_non_null(data);
            assert_non_null(want);
            run r;
            unpickle(&r, data, n, false);
            if (r.st != SDICT_OK)
                fprintf(stderr, "%s p%d: %s @ %lld: %s\n", names[c], proto,
                        sdict_status_str(r.st), (long long)r.err.offset, r.err.message);
            assert_int_equal(r.st, SDICT_OK);
            assert_int_equal(r.consumed, n);
            assert_int_equal(r.refused, 0);
            sbuf got = {0};
            canon(&got, r.v);
            if (strcmp(got.p, want) != 0) {
                size_t i = 0;
                while (got.p[i] && got.p[i] == want[i])
                    i++;
                fprintf(stderr, "%s p%d differs at %zu:\n got  %.80s\n want %.80s\n", names[c],
                        proto, i, got.p + i, want + i);
            }
            assert_string_equal(got.p, want);
            free(got.p);
            free(data);
            free(want);
            done(&r);
            checked++;
        }
    }
    assert_int_equal(checked, 24);
}

/* Two pickles back to back (the legacy format): consumed stops after the first STOP. */
static void test_consumed(void **state) {
    (void)state;
    static const char two[] = "\x80\x02K\x05.\x80\x02M\xe9\x03.";
    run r;
    unpickle(&r, two, sizeof two - 1, false);
    assert_int_equal(r.st, SDICT_OK);
    assert_int_equal(r.consumed, 5);
    int64_t i = 0;
    assert_int_equal(sdict_int_get(r.v, &i), SDICT_OK);
    assert_int_equal(i, 5);
    done(&r);
    unpickle(&r, two + 5, sizeof two - 6, false);
    assert_int_equal(sdict_int_get(r.v, &i), SDICT_OK);
    assert_int_equal(i, 1001);
    done(&r);
}

/* Records every global as "module.name;" (what the scan would list). */
static char g_names[512];
static void name_global(void *ctx, const char *module, const char *name, bool allowed,
                        int64_t offset) {
    (void)ctx, (void)allowed, (void)offset;
    size_t n = strlen(g_names);
    snprintf(g_names + n, sizeof g_names - n, "%s.%s;", module, name);
}

static sdict_status run_with(const void *data, size_t n, bool scan, bool literals, run *r) {
    static sdict_limits lim;
    lim = default_limits();
    memset(r, 0, sizeof *r);
    g_names[0] = '\0';
    assert_int_equal(sdict_doc_new(&r->doc, NULL), SDICT_OK);
    sdict__unpickler u = {.doc = r->doc, .data = data, .size = n, .record = "rec/data.pkl",
                          .limits = &lim, .persistent_load = stub_load, .ctx = r,
                          .on_global = name_global, .scan = scan, .literals_only = literals};
    r->st = sdict__unpickle(&u, &r->v, &r->err);
    r->consumed = u.consumed;
    return r->st;
}

/* Where CPython's _pickle.c (as torch.load runs it) could read another structure (issue 11):
   statedict matches it, or refuses the pickle as ambiguous. */
static void test_cpython_differentials(void **state) {
    (void)state;
    run r;
    int64_t i = 0;
    /* MEMOIZE stores at len(memo), the count of set slots: after PUT 1 that is slot 1 again, so
       GET 1 sees the 7 (CPython: {'a': 7}; a reader storing at max index + 1 would give []) */
    static const char memo[] = "\x80\x04]q\x01" "0" "K\x07\x94" "0" "}\x8c\x01" "ah\x01s.";
    assert_int_equal(run_with(memo, sizeof memo - 1, false, false, &r), SDICT_OK);
    assert_int_equal(sdict_int_get(sdict_dict_get(r.v, "a"), &i), SDICT_OK);
    assert_int_equal(i, 7);
    done(&r);
    /* a STOP before the end of its FRAME: the next pickle's start depends on buffering */
    static const char frame[] = "\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01.K\x02.";
    assert_int_equal(run_with(frame, sizeof frame - 1, false, false, &r), SDICT_E_FORMAT);
    assert_non_null(strstr(r.err.message, "ambiguous"));
    assert_int_equal(r.err.offset, 13);
    done(&r);
    /* a frame ending at its STOP is fine; so is one that ends before it */
    static const char frame_ok[] = "\x80\x04\x95\x03\x00\x00\x00\x00\x00\x00\x00K\x01.";
    assert_int_equal(run_with(frame_ok, sizeof frame_ok - 1, false, false, &r), SDICT_OK);
    assert_int_equal(r.consumed, sizeof frame_ok - 1);
    done(&r);
    /* fix_imports: protocols 0-2 rename __builtin__ (and copy_reg ...), 3+ do not */
    static const char b2[] = "\x80\x02" "c__builtin__\nset\n]\x85R.";
    assert_int_equal(run_with(b2, sizeof b2 - 1, false, false, &r), SDICT_OK);
    assert_int_equal(sdict_value_kind(r.v), SDICT_KIND_SET);
    assert_string_equal(g_names, "builtins.set;");
    done(&r);
    static const char b0[] = "c__builtin__\nset\n((lp0\ntR.";
    assert_int_equal(run_with(b0, sizeof b0 - 1, false, false, &r), SDICT_OK);
    assert_string_equal(g_names, "builtins.set;");
    done(&r);
    static const char b3[] = "\x80\x03" "c__builtin__\nset\n]\x85R.";
    assert_int_equal(run_with(b3, sizeof b3 - 1, false, false, &r), SDICT_E_PICKLE_UNSAFE_GLOBAL);
    assert_string_equal(g_names, "__builtin__.set;");
    done(&r);
    /* a PROTO later in the pickle switches the renaming, as CPython's self->proto */
    static const char late[] = "\x80\x02\x80\x03" "c__builtin__\nset\n]\x85R.";
    assert_int_equal(run_with(late, sizeof late - 1, false, false, &r),
                     SDICT_E_PICKLE_UNSAFE_GLOBAL);
    done(&r);
    static const char cr[] = "\x80\x02" "ccopy_reg\n_reconstructor\n.";
    assert_int_equal(run_with(cr, sizeof cr - 1, true, false, &r), SDICT_OK); /* scan */
    assert_string_equal(g_names, "copyreg._reconstructor;");
    done(&r);
    static const char xr[] = "\x80\x02" "c__builtin__\nxrange\n.";
    assert_int_equal(run_with(xr, sizeof xr - 1, true, false, &r), SDICT_OK);
    assert_string_equal(g_names, "builtins.range;");
    done(&r);
    /* GLOBAL keeps a '\r' before the newline in the name (CPython strips only the '\n') */
    static const char crlf[] = "\x80\x02" "ccollections\r\nOrderedDict\r\n)R.";
    assert_int_equal(run_with(crlf, sizeof crlf - 1, false, false, &r),
                     SDICT_E_PICKLE_UNSAFE_GLOBAL);
    assert_string_equal(g_names, "collections\r.OrderedDict\r;");
    done(&r);
    /* header pickles: literals only, allow-listed globals and scans included */
    static const char od[] = "\x80\x02" "ccollections\nOrderedDict\n)R.";
    assert_int_equal(run_with(od, sizeof od - 1, false, false, &r), SDICT_OK);
    done(&r);
    assert_int_equal(run_with(od, sizeof od - 1, false, true, &r), SDICT_E_PICKLE_UNSAFE_GLOBAL);
    assert_non_null(strstr(r.err.message, "only literals"));
    done(&r);
    assert_int_equal(run_with(od, sizeof od - 1, true, true, &r), SDICT_E_PICKLE_UNSAFE_GLOBAL);
    done(&r);
    static const char lit[] = "\x80\x02}X\x01\x00\x00\x00" "a](K\x01\x88Ne\x85s.";
    assert_int_equal(run_with(lit, sizeof lit - 1, false, true, &r), SDICT_OK);
    done(&r);
}

/* Python 2 pickles: STRING / BINSTRING / SHORT_BINSTRING are UTF-8 (torch.load's default
   encoding='utf-8'; other bytes are refused, as torch raises), INT 01 is True, LONG text keeps
   big values, UNICODE escapes. */
static void test_protocol0_text(void **state) {
    (void)state;
    static const char p[] = "(S'a\\xc3\\xa9\\n\\'q'\nU\x03\xc3\xa9zT\x01\x00\x00\x00xI01\nI-42\n"
                            "L-1267650600228229401496703205376L\nF-2.5\nVh\\u00e9\\U0001f600\n"
                            "g0\nl.";
    /* g0 is unset: first check the failure, then the same pickle with a PUT */
    run r;
    unpickle(&r, p, sizeof p - 1, false);
    assert_int_equal(r.st, SDICT_E_PICKLE_STACK);
    done(&r);
    static const char q[] = "(S'a\\xc3\\xa9\\n\\'q'\np0\nU\x03\xc3\xa9zT\x01\x00\x00\x00xI01\nI-42\n"
                            "L-1267650600228229401496703205376L\nF-2.5\nVh\\u00e9\\U0001f600\n"
                            "g0\nl.";
    unpickle(&r, q, sizeof q - 1, false);
    assert_int_equal(r.st, SDICT_OK);
    sbuf got = {0};
    canon(&got, r.v);
    /* derived by hand: 'a\xc3\xa9\n\'q' -> "aé\n'q"; b'\xc3\xa9z' -> "éz"; 2**100 negated */
    assert_string_equal(got.p, "L[s61c3a90a2771,sc3a97a,s78,T,i-42,"
                               "i-1267650600228229401496703205376,fc004000000000000,"
                               "s68c3a9f09f9880,s61c3a90a2771]");
    free(got.p);
    done(&r);
    /* latin-1 bytes and encoded surrogates are no UTF-8 for bytes.decode('utf-8') */
    FAIL("U\x01\xe9.", false, SDICT_E_PICKLE_TYPE, 0);
    FAIL("S'\\xed\\xa0\\x80'\n.", false, SDICT_E_PICKLE_TYPE, 0);
}

/*------------------------------------------------------------------------------------------------
 hostile pickles
------------------------------------------------------------------------------------------------*/

static void test_refused_globals(void **state) {
    (void)state;
    FAIL("\x80\x02" "cos\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85q\x02Rq\x03.", false,
         SDICT_E_PICKLE_UNSAFE_GLOBAL, 2);
    FAIL("\x80\x04\x8c\x02os\x94\x8c\x06system\x94\x93\x94.", false,
         SDICT_E_PICKLE_UNSAFE_GLOBAL, 16);
    FAIL("(S'ls'\nios\nsystem\n.", false, SDICT_E_PICKLE_UNSAFE_GLOBAL, 7);
    FAIL("(S'ls'\nios\nsystem\n.", true, SDICT_E_PICKLE_UNSAFE_GLOBAL, 7); /* INST calls */
    FAIL("(cos\nsystem\nS'ls'\no.", false, SDICT_E_PICKLE_UNSAFE_GLOBAL, 1);
    FAIL("(cos\nsystem\nS'ls'\no.", true, SDICT_E_PICKLE_UNSAFE_GLOBAL, 18);
    FAIL("\x80\x02" "cos\nsystem\n)\x81.", false, SDICT_E_PICKLE_UNSAFE_GLOBAL, 2);
    FAIL("\x80\x02" "cos\nsystem\n)\x81.", true, SDICT_E_PICKLE_UNSAFE_GLOBAL, 14);
    FAIL("\x80\x04" "cos\nsystem\n)}\x92.", true, SDICT_E_PICKLE_UNSAFE_GLOBAL, 15);
    FAIL("\x80\x02" "cos\nsystem\nX\x02\x00\x00\x00id\x85R.", true,
         SDICT_E_PICKLE_UNSAFE_GLOBAL, 21);
    FAIL("\x80\x02" "cos\nsystem\n}b.", true, SDICT_E_PICKLE_UNSAFE_GLOBAL, 14);
    /* gadgets, including names inside torch and numpy and attempts at dotted lookup */
    static const char *const gadgets[][2] = {
        {"builtins", "eval"}, {"builtins", "exec"}, {"builtins", "getattr"},
        {"__builtin__", "eval"}, {"importlib", "import_module"}, {"subprocess", "Popen"},
        {"posix", "system"}, {"torch._utils", "_rebuild_xla_tensor"},
        {"torch", "load"}, {"torch", "_utils._rebuild_tensor_v2"},
        {"torch.serialization", "load"}, {"numpy.testing._private.utils", "runstring"},
        {"collections", "OrderedDict.fromkeys"}, {"torch", "FloatStorage.from_file"},
        {"torch.storage", "_load_from_bytes"}, {"torch", "TensorBase"}, {"torch", "float32x"},
        {"builtins", "setx"}, {"_codecs", "decode"}, {"numpy", "load"},
    };
    for (size_t i = 0; i < sizeof gadgets / sizeof gadgets[0]; i++) {
        char buf[256];
        int n = snprintf(buf, sizeof buf, "\x80\x02" "c%s\n%s\n)R.", gadgets[i][0], gadgets[i][1]);
        expect_fail(buf, (size_t)n, false, SDICT_E_PICKLE_UNSAFE_GLOBAL, 2);
        run r;
        unpickle(&r, buf, (size_t)n, false);
        char full[200];
        snprintf(full, sizeof full, "'%s.%s'", gadgets[i][0], gadgets[i][1]);
        assert_non_null(strstr(r.err.message, full));
        assert_non_null(strstr(r.err.message, "GLOBAL"));
        assert_int_equal(r.globals, 1);
        assert_int_equal(r.refused, 1);
        done(&r);
    }
    /* scan mode keeps going past refused globals that are never called */
    static const char scan[] = "\x80\x02(cos\nsystem\ncbuiltins\neval\nctorch._utils\n"
                               "_rebuild_tensor_v2\nt.";
    run r;
    unpickle(&r, scan, sizeof scan - 1, true);
    assert_int_equal(r.st, SDICT_OK);
    assert_int_equal(r.globals, 3);
    assert_int_equal(r.refused, 2);
    done(&r);
    /* NUL inside a name is not a way around exact matching */
    FAIL("\x80\x02" "ccollections\x00x\nOrderedDict\n)R.", false, SDICT_E_PICKLE_UNSAFE_GLOBAL, 2);
    FAIL("\x80\x02\x82\x01.", false, SDICT_E_PICKLE_UNSAFE_GLOBAL, 2); /* EXT1 */
}

/* BINUNICODE text must be UTF-8 as Python's unpickler decodes it ('utf-8', 'surrogatepass'). */
static void test_utf8(void **state) {
    (void)state;
    FAIL("\x80\x04\x8c\x02\xc3\xa9\x8c\x01\xff.", false, SDICT_E_PICKLE_OPCODE, 6); /* 0xff */
    FAIL("\x80\x04\x8c\x02\xc0\x80.", false, SDICT_E_PICKLE_OPCODE, 2);  /* overlong NUL */
    FAIL("\x80\x04\x8c\x02\xe2\x82.", false, SDICT_E_PICKLE_OPCODE, 2);  /* cut sequence */
    FAIL("\x80\x04\x8c\x04\xf4\x90\x80\x80.", false, SDICT_E_PICKLE_OPCODE, 2); /* > U+10FFFF */
    FAIL("X\x01\x00\x00\x00\x80.", false, SDICT_E_PICKLE_OPCODE, 0);      /* lone continuation */
    /* accepted: 2-, 3- and 4-byte forms, and an encoded surrogate (surrogatepass) */
    const char ok[] = "\x80\x04\x8c\x0c\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xed\xa0\x80.";
    run r;
    unpickle(&r, ok, sizeof ok - 1, false);
    assert_int_equal(r.st, SDICT_OK);
    size_t len = 0;
    assert_non_null(sdict_str_get(r.v, &len));
    assert_int_equal(len, 12);
    done(&r);
}

static void test_structure_errors(void **state) {
    (void)state;
    FAIL("\x80\x02]K\x01K\x02s.", false, SDICT_E_PICKLE_TYPE, 7);       /* SETITEM on a list */
    FAIL("\x80\x02](K\x01K\x02u.", false, SDICT_E_PICKLE_TYPE, 8);      /* SETITEMS on a list */
    FAIL("\x80\x02)(K\x01K\x02u.", false, SDICT_E_PICKLE_TYPE, 8);      /* SETITEMS on a tuple */
    FAIL("}K\x01" "a.", false, SDICT_E_PICKLE_TYPE, 3);                    /* APPEND on a dict */
    FAIL("\x80\x04\x8f(K\x01" "e.", false, SDICT_E_PICKLE_TYPE, 6);        /* APPENDS on a set */
    FAIL("](K\x01\x90.", false, SDICT_E_PICKLE_TYPE, 4);                /* ADDITEMS on a list */
    FAIL("}]K\x01s.", false, SDICT_E_PICKLE_TYPE, 4);                   /* list as a key */
    FAIL("}K\x01K\x02" "b.", false, SDICT_E_PICKLE_TYPE, 5);               /* BUILD on int */
    FAIL("}}b.", false, SDICT_E_PICKLE_TYPE, 2);                        /* BUILD on dict */
    FAIL("\x80\x02h\x05.", false, SDICT_E_PICKLE_STACK, 2);             /* unset memo */
    FAIL("\x80\x02j\x00\x00\x01\x00.", false, SDICT_E_PICKLE_STACK, 2); /* LONG_BINGET */
    FAIL("g7\n.", false, SDICT_E_PICKLE_STACK, 0);
    FAIL("\x80\x02R.", false, SDICT_E_PICKLE_STACK, 2);                 /* underflow */
    FAIL("0.", false, SDICT_E_PICKLE_STACK, 0);
    FAIL("t.", false, SDICT_E_PICKLE_STACK, 0);                         /* no MARK */
    FAIL("K\x01(\x85.", false, SDICT_E_PICKLE_STACK, 3);                /* items behind MARK */
    FAIL(".", false, SDICT_E_PICKLE_STACK, 0);
    FAIL("\x80\x02K", false, SDICT_E_TRUNCATED, 2);
    FAIL("\x80\x02N", false, SDICT_E_TRUNCATED, 3);                     /* no STOP */
    FAIL("\x80\x02X\xff\xff\xff\xff" "abc.", false, SDICT_E_TRUNCATED, 2);  /* 4 GB str */
    FAIL("\x80\x02\x8b\xff\xff\xff\x7f" "abc.", false, SDICT_E_TRUNCATED, 2); /* 2 GB LONG4 */
    FAIL("\x80\x02\x8b\x00\x00\x00\x80.", false, SDICT_E_PICKLE_OPCODE, 2); /* negative */
    FAIL("\x80\x04\x8d\x00\x00\x00\x00\x00\x00\x00\x80.", false, SDICT_E_TRUNCATED, 2);
    FAIL("\x80\x04\x95\xff\x00\x00\x00\x00\x00\x00\x00N.", false, SDICT_E_TRUNCATED, 2);
    FAIL("\x80\x06N.", false, SDICT_E_PICKLE_OPCODE, 0);
    FAIL("\x80\x02\xff.", false, SDICT_E_PICKLE_OPCODE, 2);
    FAIL("\x80\x05\x97.", false, SDICT_E_UNSUPPORTED, 2);               /* NEXT_BUFFER */
    FAIL("]q\x00h\x00" "a.", false, SDICT_E_UNSUPPORTED, 6);               /* list inside itself */
    FAIL("Iabc\n.", false, SDICT_E_PICKLE_OPCODE, 0);
    FAIL("S'abc\n.", false, SDICT_E_PICKLE_OPCODE, 0);
    /* OrderedDict([1]): Python 2 pickles pass a list of pairs; anything else is refused */
    FAIL("\x80\x02" "ccollections\nOrderedDict\n]K\x01" "a\x85R.", false, SDICT_E_PICKLE_TYPE, 32);
    /* the length limit, with the bytes present */
    sdict_limits lim = default_limits();
    lim.max_str_bytes = 2;
    run r;
    unpickle_lim(&r, "X\x03\x00\x00\x00" "abc.", 9, false, &lim);
    assert_int_equal(r.st, SDICT_E_LIMIT);
    assert_int_equal(r.err.offset, 0);
    done(&r);
    lim = default_limits();
    lim.max_memo = 2;
    unpickle_lim(&r, "Nq\x00q\x01q\x00q\x02.", 10, false, &lim);
    assert_int_equal(r.st, SDICT_E_LIMIT);
    assert_int_equal(r.err.offset, 7);
    done(&r);
    /* huge sparse memo indices cost one slot each */
    unpickle(&r, "Nr\xff\xff\xff\xffj\xff\xff\xff\xff.", 12, false);
    assert_int_equal(r.st, SDICT_OK);
    assert_int_equal(sdict_value_kind(r.v), SDICT_KIND_NONE);
    done(&r);
}

static void test_deep_nesting(void **state) {
    (void)state;
    size_t n = 100000;
    char *p = malloc(2 * n + 1);
    /* 100,000 MARKs: the 1001st exceeds max_depth */
    memset(p, '(', n);
    p[n] = '.';
    expect_fail(p, n + 1, false, SDICT_E_LIMIT, 1000);
    /* 100,000 lists nested through APPEND: built without recursion, refused at STOP */
    memset(p, ']', n);
    memset(p + n, 'a', n - 1);
    p[2 * n - 1] = '.';
    expect_fail(p, 2 * n, false, SDICT_E_LIMIT, (int64_t)(2 * n - 1));
    /* 100,000 nestings through the memo with a flat stack */
    size_t m = 0;
    char *q = malloc(8 * n + 16);
    memcpy(q, "]q\x00" "0", 4);
    m = 4;
    for (size_t i = 0; i < n; i++) { /* x = [x]: new list, get x, append, put, pop */
        memcpy(q + m, "]h\x00" "aq\x00" "0", 7);
        m += 7;
    }
    memcpy(q + m, "h\x00.", 3);
    m += 3;
    expect_fail(q, m, false, SDICT_E_LIMIT, (int64_t)(m - 1));
    free(q);
    /* 100,000 EMPTY_LISTs left on the stack: fine, the top one is the result */
    memset(p, ']', n);
    p[n] = '.';
    run r;
    unpickle(&r, p, n + 1, false);
    assert_int_equal(r.st, SDICT_OK);
    assert_int_equal(sdict_value_kind(r.v), SDICT_KIND_LIST);
    done(&r);
    free(p);
}

/* x = [x, x] repeated: a DAG of 2^levels paths. Shared subtrees are walked once, but the tree
   they stand for counts in full against max_values, so later walks of the result are bounded. */
static size_t laughs(char *q, int levels) {
    size_t m = 0;
    q[m++] = 'N';
    for (int i = 0; i < levels; i++) {
        memcpy(q + m, "q\x00(h\x00h\x00l", 8);
        m += 8;
    }
    q[m++] = '.';
    return m;
}

static void test_shared_subtrees(void **state) {
    (void)state;
    char q[2048];
    /* 10 levels: 2^11 - 1 values when expanded, far below the default limit */
    size_t m = laughs(q, 10);
    run r;
    unpickle(&r, q, m, false);
    assert_int_equal(r.st, SDICT_OK);
    assert_int_equal(sdict_seq_len(r.v), 2);
    done(&r);
    /* the same with max_values 2046: one value short of the expanded size (2047) */
    sdict_limits lim = default_limits();
    lim.max_values = 2046;
    unpickle_lim(&r, q, m, false, &lim);
    assert_int_equal(r.st, SDICT_E_LIMIT);
    done(&r);
    lim.max_values = 2047;
    unpickle_lim(&r, q, m, false, &lim);
    assert_int_equal(r.st, SDICT_OK);
    done(&r);
    /* 60 levels: 2^61 values, refused at STOP in linear time */
    m = laughs(q, 60);
    expect_fail(q, m, false, SDICT_E_LIMIT, (int64_t)(m - 1));
}

/*------------------------------------------------------------------------------------------------
 tensors through persistent_load
------------------------------------------------------------------------------------------------*/

typedef struct pk {
    char b[4096];
    size_t n;
} pk;

static void raw(pk *p, const void *s, size_t n) {
    assert_true(p->n + n < sizeof p->b);
    memcpy(p->b + p->n, s, n);
    p->n += n;
}
static void op(pk *p, int c) {
    char ch = (char)c;
    raw(p, &ch, 1);
}
static void glob(pk *p, const char *mod, const char *name) {
    op(p, 'c');
    raw(p, mod, strlen(mod));
    op(p, '\n');
    raw(p, name, strlen(name));
    op(p, '\n');
}
static void str(pk *p, const char *s) {
    uint32_t n = (uint32_t)strlen(s);
    uint8_t le[4] = {(uint8_t)n, (uint8_t)(n >> 8), (uint8_t)(n >> 16), (uint8_t)(n >> 24)};
    op(p, 'X');
    raw(p, le, 4);
    raw(p, s, n);
}
static void i64(pk *p, int64_t v) { /* LONG1 of 8 bytes */
    op(p, 0x8a);
    op(p, 8);
    for (int i = 0; i < 8; i++)
        op(p, (int)(((uint64_t)v >> (8 * i)) & 0xff));
}
static void dims(pk *p, const int64_t *d, int n) {
    op(p, '(');
    for (int i = 0; i < n; i++)
        i64(p, d[i]);
    op(p, 't');
}
static void empty_odict(pk *p) {
    glob(p, "collections", "OrderedDict");
    op(p, ')');
    op(p, 'R');
}

typedef struct tspec {
    const char *fn;      /* rebuild function */
    const char *cls;     /* storage class name (module torch or torch.storage) */
    int64_t numel;
    int64_t offset;
    int64_t size[20], stride[20];
    int nd, nds;
    const char *v3_dtype;
    bool hooks_nonempty;
} tspec;

/* Emits rebuild(storage, offset, size, stride, False, OrderedDict()[, dtype]); returns the
   offset of the REDUCE. */
static size_t tensor_call(pk *p, const tspec *t) {
    glob(p, "torch._utils", t->fn);
    op(p, '(');
    op(p, '(');
    str(p, "storage");
    glob(p, strcmp(t->cls, "UntypedStorage") == 0 ? "torch.storage" : "torch", t->cls);
    str(p, "0");
    str(p, "cpu");
    i64(p, t->numel);
    op(p, 't');
    op(p, 'Q');
    i64(p, t->offset);
    dims(p, t->size, t->nd);
    dims(p, t->stride, t->nds);
    op(p, 0x89);
    if (t->hooks_nonempty) {
        empty_odict(p);
        str(p, "h");
        op(p, 'N');
        op(p, 's');
    } else {
        empty_odict(p);
    }
    if (t->v3_dtype)
        glob(p, "torch", t->v3_dtype);
    op(p, 't');
    size_t at = p->n;
    op(p, 'R');
    return at;
}

/* tensor_run's result outlives its doc: its dimensions are copied here */
static int64_t run_dims[2][20];

static void tensor_run(const tspec *t, sdict_status want, sdict_tensor *out) {
    pk p = {.n = 0};
    raw(&p, "\x80\x02", 2);
    size_t at = tensor_call(&p, t);
    op(&p, '.');
    run r;
    unpickle(&r, p.b, p.n, false);
    if (r.st != want)
        fprintf(stderr, "tensor case: %s @ %lld: %s\n", sdict_status_str(r.st),
                (long long)r.err.offset, r.err.message);
    assert_int_equal(r.st, want);
    if (want != SDICT_OK) {
        assert_int_equal(r.err.offset, (int64_t)at);
    } else if (out) {
        *out = *sdict_value_tensor(r.v);
        out->storage = NULL; /* freed with the doc, and so are the dimensions: copied */
        assert_true(out->ndim <= 20);
        for (int32_t k = 0; k < out->ndim; k++) {
            run_dims[0][k] = out->shape[k];
            run_dims[1][k] = out->stride[k];
        }
        out->shape = run_dims[0];
        out->stride = run_dims[1];
    }
    done(&r);
}

static void test_rebuild_tensor(void **state) {
    (void)state;
    sdict_tensor t;
    tspec s = {.fn = "_rebuild_tensor_v2", .cls = "FloatStorage", .numel = 6, .offset = 0,
               .size = {2, 3}, .stride = {3, 1}, .nd = 2, .nds = 2};
    tensor_run(&s, SDICT_OK, &t);
    assert_int_equal(t.dtype, SDICT_FLOAT32);
    assert_int_equal(t.ndim, 2);
    assert_int_equal(t.shape[0], 2);
    assert_int_equal(t.shape[1], 3);
    assert_int_equal(t.stride[0], 3);
    assert_false(t.is_parameter);
    /* view at offset 2 of a bigger storage, transposed */
    tspec v = {.fn = "_rebuild_tensor_v2", .cls = "DoubleStorage", .numel = 14, .offset = 2,
               .size = {4, 3}, .stride = {1, 4}, .nd = 2, .nds = 2};
    tensor_run(&v, SDICT_OK, &t);
    assert_int_equal(t.dtype, SDICT_FLOAT64);
    assert_int_equal(t.storage_offset, 2);
    assert_int_equal(t.stride[1], 4);
    v.numel = 13; /* extent 2 + 3 + 8 + 1 = 14 elements */
    tensor_run(&v, SDICT_E_STORAGE, NULL);
    tspec bad = s;
    bad.numel = 5;
    tensor_run(&bad, SDICT_E_STORAGE, NULL);
    bad = s;
    bad.stride[1] = -1;
    tensor_run(&bad, SDICT_E_SHAPE, NULL);
    bad = s;
    bad.size[0] = -2;
    tensor_run(&bad, SDICT_E_SHAPE, NULL);
    bad = s;
    bad.offset = -1;
    tensor_run(&bad, SDICT_E_SHAPE, NULL);
    bad = s;
    bad.nds = 1;
    tensor_run(&bad, SDICT_E_SHAPE, NULL);
    bad = s; /* extent overflows int64 */
    bad.size[0] = INT64_C(1) << 40;
    bad.size[1] = INT64_C(1) << 40;
    bad.stride[0] = INT64_C(1) << 40;
    tensor_run(&bad, SDICT_E_SHAPE, NULL);
    /* any rank: 20 dimensions, one of them of size 6 */
    tspec high = s;
    high.nd = high.nds = 20;
    for (int i = 0; i < 20; i++)
        high.size[i] = 1, high.stride[i] = 7;
    high.size[13] = 6;
    high.stride[13] = 1;
    tensor_run(&high, SDICT_OK, &t);
    assert_int_equal(t.ndim, 20);
    assert_int_equal(t.shape[13], 6);
    assert_int_equal(t.shape[19], 1);
    assert_int_equal(t.stride[0], 7);
    assert_int_equal(sdict_tensor_numel(&t), 6);
    high.nds = 19;
    tensor_run(&high, SDICT_E_SHAPE, NULL);
    bad = s;
    bad.hooks_nonempty = true;
    tensor_run(&bad, SDICT_E_PICKLE_TYPE, NULL);
    /* 0-dim scalar, like num_batches_tracked */
    tspec sc = {.fn = "_rebuild_tensor_v2", .cls = "LongStorage", .numel = 1, .nd = 0, .nds = 0};
    tensor_run(&sc, SDICT_OK, &t);
    assert_int_equal(t.ndim, 0);
    assert_int_equal(t.dtype, SDICT_INT64);
    /* v3: untyped storage counts bytes, dtype comes from the argument */
    tspec v3 = {.fn = "_rebuild_tensor_v3", .cls = "UntypedStorage", .numel = 12, .size = {6},
                .stride = {1}, .nd = 1, .nds = 1, .v3_dtype = "float16"};
    tensor_run(&v3, SDICT_OK, &t);
    assert_int_equal(t.dtype, SDICT_FLOAT16);
    v3.size[0] = 7;
    tensor_run(&v3, SDICT_E_STORAGE, NULL);
    v3.size[0] = 3;
    v3.v3_dtype = "float8_e4m3fn";
    tensor_run(&v3, SDICT_OK, &t);
    assert_int_equal(t.dtype, SDICT_FLOAT8_E4M3FN);
    /* v2 arity is checked */
    tspec v2as3 = v3;
    v2as3.fn = "_rebuild_tensor_v2";
    tensor_run(&v2as3, SDICT_E_PICKLE_TYPE, NULL); /* a dtype is not v2's metadata dict */
}

static void test_rebuild_parameter_and_meta(void **state) {
    (void)state;
    tspec s = {.fn = "_rebuild_tensor_v2", .cls = "HalfStorage", .numel = 4, .size = {4},
               .stride = {1}, .nd = 1, .nds = 1};
    pk p = {.n = 0};
    raw(&p, "\x80\x02", 2);
    glob(&p, "torch._utils", "_rebuild_parameter");
    op(&p, '(');
    tensor_call(&p, &s);
    op(&p, 0x88);
    empty_odict(&p);
    op(&p, 't');
    op(&p, 'R');
    op(&p, '.');
    run r;
    unpickle(&r, p.b, p.n, false);
    assert_int_equal(r.st, SDICT_OK);
    const sdict_tensor *t = sdict_value_tensor(r.v);
    assert_non_null(t);
    assert_true(t->is_parameter);
    assert_true(t->requires_grad);
    assert_int_equal(t->dtype, SDICT_FLOAT16);
    assert_int_equal(sdict_storage_nbytes(t->storage), 8);
    done(&r);
    /* the parameter's data must be a tensor */
    static const char notensor[] = "\x80\x02" "ctorch._utils\n_rebuild_parameter\n(K\x01\x88}t"
                                   "R.";
    FAIL(notensor, false, SDICT_E_PICKLE_TYPE, 41);
    /* meta tensors carry no storage */
    pk m = {.n = 0};
    raw(&m, "\x80\x02", 2);
    glob(&m, "torch._utils", "_rebuild_meta_tensor_no_storage");
    op(&m, '(');
    glob(&m, "torch", "bfloat16");
    int64_t sz[2] = {2, 3}, st[2] = {3, 1};
    dims(&m, sz, 2);
    dims(&m, st, 2);
    op(&m, 0x89);
    op(&m, 't');
    op(&m, 'R');
    op(&m, '.');
    unpickle(&r, m.b, m.n, false);
    assert_int_equal(r.st, SDICT_OK);
    t = sdict_value_tensor(r.v);
    assert_non_null(t);
    assert_null(t->storage);
    assert_int_equal(t->dtype, SDICT_BFLOAT16);
    assert_int_equal(t->shape[1], 3);
    done(&r);
}

/* numpy scalars (np.float64(0.5), np.int64(-3)) as protocol-2 pickles from numpy 1.x. */
static void test_numpy_scalar(void **state) {
    (void)state;
    static const char f8[] =
        "\x80\x02" "cnumpy.core.multiarray\nscalar\nq\x00" "cnumpy\ndtype\nq\x01"
        "X\x02\x00\x00\x00" "f8q\x02\x89\x88\x87q\x03Rq\x04(K\x03X\x01\x00\x00\x00<q\x05"
        "NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tq\x06" "bc_codecs\nencode\nq\x07"
        "X\x09\x00\x00\x00\x00\x00\x00\x00\x00\x00\xc3\xa0?q\x08X\x06\x00\x00\x00"
        "latin1q\x09\x86q\x0aRq\x0b\x86q\x0cRq\x0d.";
    run r;
    unpickle(&r, f8, sizeof f8 - 1, false);
    if (r.st)
        fprintf(stderr, "%s\n", r.err.message);
    assert_int_equal(r.st, SDICT_OK);
    assert_int_equal(sdict_value_kind(r.v), SDICT_KIND_FLOAT);
    assert_true(sdict_float_get(r.v) == 0.5);
    done(&r);
    /* big-endian int32 -3 via BINBYTES */
    static const char i4[] =
        "\x80\x03" "cnumpy.core.multiarray\nscalar\ncnumpy\ndtype\nX\x02\x00\x00\x00i4\x89\x88"
        "\x87R(K\x03X\x01\x00\x00\x00>NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tbC\x04\xff\xff"
        "\xff\xfd\x86R.";
    unpickle(&r, i4, sizeof i4 - 1, false);
    if (r.st)
        fprintf(stderr, "%s\n", r.err.message);
    assert_int_equal(r.st, SDICT_OK);
    int64_t iv = 0;
    assert_int_equal(sdict_int_get(r.v, &iv), SDICT_OK);
    assert_int_equal(iv, -3);
    done(&r);
}

/* numpy arrays become tensors owning a native-order copy; bytes from numpy 1.24's pickler
   (np.arange(6, dtype='>i4').reshape(2, 3), and a Fortran-ordered float32 arange). */
static void test_numpy_array(void **state) {
    (void)state;
    static const char be_i4[] =
        "\x80\x03\x63\x6e\x75\x6d\x70\x79\x2e\x63\x6f\x72\x65\x2e\x6d\x75\x6c\x74\x69\x61\x72\x72\x61\x79"
        "\x0a\x5f\x72\x65\x63\x6f\x6e\x73\x74\x72\x75\x63\x74\x0a\x71\x00\x63\x6e\x75\x6d\x70\x79\x0a\x6e"
        "\x64\x61\x72\x72\x61\x79\x0a\x71\x01\x4b\x00\x85\x71\x02\x43\x01\x62\x71\x03\x87\x71\x04\x52\x71"
        "\x05\x28\x4b\x01\x4b\x02\x4b\x03\x86\x71\x06\x63\x6e\x75\x6d\x70\x79\x0a\x64\x74\x79\x70\x65\x0a"
        "\x71\x07\x58\x02\x00\x00\x00\x69\x34\x71\x08\x89\x88\x87\x71\x09\x52\x71\x0a\x28\x4b\x03\x58\x01"
        "\x00\x00\x00\x3e\x71\x0b\x4e\x4e\x4e\x4a\xff\xff\xff\xff\x4a\xff\xff\xff\xff\x4b\x00\x74\x71\x0c"
        "\x62\x89\x43\x18\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00\x03\x00\x00\x00\x04"
        "\x00\x00\x00\x05\x71\x0d\x74\x71\x0e\x62\x2e";
    static const char f_f4[] =
        "\x80\x02\x63\x6e\x75\x6d\x70\x79\x2e\x63\x6f\x72\x65\x2e\x6d\x75\x6c\x74\x69\x61\x72\x72\x61\x79"
        "\x0a\x5f\x72\x65\x63\x6f\x6e\x73\x74\x72\x75\x63\x74\x0a\x71\x00\x63\x6e\x75\x6d\x70\x79\x0a\x6e"
        "\x64\x61\x72\x72\x61\x79\x0a\x71\x01\x4b\x00\x85\x71\x02\x63\x5f\x63\x6f\x64\x65\x63\x73\x0a\x65"
        "\x6e\x63\x6f\x64\x65\x0a\x71\x03\x58\x01\x00\x00\x00\x62\x71\x04\x58\x06\x00\x00\x00\x6c\x61\x74"
        "\x69\x6e\x31\x71\x05\x86\x71\x06\x52\x71\x07\x87\x71\x08\x52\x71\x09\x28\x4b\x01\x4b\x02\x4b\x03"
        "\x86\x71\x0a\x63\x6e\x75\x6d\x70\x79\x0a\x64\x74\x79\x70\x65\x0a\x71\x0b\x58\x02\x00\x00\x00\x66"
        "\x34\x71\x0c\x89\x88\x87\x71\x0d\x52\x71\x0e\x28\x4b\x03\x58\x01\x00\x00\x00\x3c\x71\x0f\x4e\x4e"
        "\x4e\x4a\xff\xff\xff\xff\x4a\xff\xff\xff\xff\x4b\x00\x74\x71\x10\x62\x88\x68\x03\x58\x1b\x00\x00"
        "\x00\x00\x00\x00\x00\x00\x00\x40\x40\x00\x00\xc2\x80\x3f\x00\x00\xc2\x80\x40\x00\x00\x00\x40\x00"
        "\x00\xc2\xa0\x40\x71\x11\x68\x05\x86\x71\x12\x52\x71\x13\x74\x71\x14\x62\x2e";
    run r;
    unpickle(&r, be_i4, sizeof be_i4 - 1, false);
    assert_int_equal(r.st, SDICT_OK);
    const sdict_tensor *t = sdict_value_tensor(r.v);
    assert_non_null(t);
    assert_int_equal(t->dtype, SDICT_INT32);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[1], 3);
    assert_int_equal(t->stride[0], 3);
    int32_t iv[6];
    assert_int_equal(sdict_tensor_copy_to(t, SDICT_INT32, iv, sizeof iv, NULL), SDICT_OK);
    for (int i = 0; i < 6; i++)
        assert_int_equal(iv[i], i);
    done(&r);
    unpickle(&r, f_f4, sizeof f_f4 - 1, false);
    assert_int_equal(r.st, SDICT_OK);
    t = sdict_value_tensor(r.v);
    assert_non_null(t);
    assert_int_equal(t->stride[0], 1);
    assert_int_equal(t->stride[1], 2);
    float fv[6];
    assert_int_equal(sdict_tensor_copy_to(t, SDICT_FLOAT32, fv, sizeof fv, NULL), SDICT_OK);
    for (int i = 0; i < 6; i++)
        assert_true(fv[i] == (float)i);
    done(&r);
}

/* 100,000 keys through SETITEMS batches, and 100,000 memo entries: must stay linear. */
static void test_large_dict(void **state) {
    (void)state;
    size_t n = 100000;
    char *p = malloc(n * 20 + 16);
    size_t m = 0;
    memcpy(p, "\x80\x02}(", 4);
    m = 4;
    for (size_t i = 0; i < n; i++) {
        p[m++] = 'J'; /* BININT key i, value: BINUNICODE "v" memoized with LONG_BINPUT i */
        for (int b = 0; b < 4; b++)
            p[m++] = (char)((i >> (8 * b)) & 0xff);
        memcpy(p + m, "X\x01\x00\x00\x00v", 6);
        m += 6;
        p[m++] = 'r';
        for (int b = 0; b < 4; b++)
            p[m++] = (char)((i >> (8 * b)) & 0xff);
        if (i % 1000 == 999) {
            memcpy(p + m, "u(", 2);
            m += 2;
        }
    }
    memcpy(p + m, "u.", 2);
    m += 2;
    run r;
    unpickle(&r, p, m, false);
    assert_int_equal(r.st, SDICT_OK);
    assert_int_equal(sdict_dict_len(r.v), n);
    assert_non_null(sdict_dict_get_int(r.v, 99999));
    assert_null(sdict_dict_get_int(r.v, 100000));
    done(&r);
    free(p);
}

/* Inert objects (SDICT_LOAD_INERT): refused globals become class references, calls and BUILD
   on them inert objects; nothing else changes, and every limit still holds. */
#define INERT(lit, rr) unpickle(&(rr), lit, sizeof(lit) - 1, false)
static void test_inert_objects(void **state) {
    (void)state;
    run r;
    g_inert = true;
    /* protocol 2 object, as torch.save(model) writes every module: NEWOBJ (cls, ()), BUILD */
    INERT("\x80\x02" "c__main__\nNet\n)\x81}X\x01\x00\x00\x00" "aK\x01sb.", r);
    assert_int_equal(r.st, SDICT_OK);
    assert_int_equal(sdict_value_kind(r.v), SDICT_KIND_OBJECT);
    assert_string_equal(sdict_kind_name(SDICT_KIND_OBJECT), "object");
    assert_string_equal(sdict_object_module(r.v), "__main__");
    assert_string_equal(sdict_object_name(r.v), "Net");
    assert_int_equal(sdict_object_how(r.v), SDICT_OBJECT_NEWOBJ);
    assert_int_equal(sdict_value_kind(sdict_object_args(r.v)), SDICT_KIND_TUPLE);
    assert_int_equal(sdict_seq_len(sdict_object_args(r.v)), 0);
    assert_null(sdict_object_kwargs(r.v));
    assert_null(sdict_object_callee(r.v));
    int64_t a = 0;
    assert_int_equal(sdict_int_get(sdict_dict_get(sdict_object_state(r.v), "a"), &a), SDICT_OK);
    assert_int_equal(a, 1);
    assert_int_equal(r.globals, 1);
    assert_int_equal(r.refused, 1);
    /* accessors on other kinds */
    assert_null(sdict_object_module(sdict_object_args(r.v)));
    assert_null(sdict_object_state(NULL));
    assert_int_equal(sdict_object_how(NULL), SDICT_OBJECT_CLASS);
    done(&r);
    /* the memo shares objects: one value under both items */
    INERT("\x80\x02](c__main__\nNet\n)\x81q\x00h\x00" "e.", r);
    assert_int_equal(r.st, SDICT_OK);
    assert_int_equal(sdict_seq_len(r.v), 2);
    assert_ptr_equal(sdict_seq_item(r.v, 0), sdict_seq_item(r.v, 1));
    assert_null(sdict_object_state(sdict_seq_item(r.v, 0)));
    done(&r);
    /* a class reference is data: a list may hold it; it is never called */
    INERT("\x80\x02]c__main__\nNet\na.", r);
    assert_int_equal(r.st, SDICT_OK);
    assert_int_equal(sdict_object_how(sdict_seq_item(r.v, 0)), SDICT_OBJECT_CLASS);
    assert_null(sdict_object_args(sdict_seq_item(r.v, 0)));
    done(&r);
    /* the pickle's result may be a class reference too */
    INERT("\x80\x02" "cos\nsystem\n.", r);
    assert_int_equal(r.st, SDICT_OK);
    assert_string_equal(sdict_object_name(r.v), "system");
    done(&r);
    /* INST and OBJ (protocol 0/1): REDUCE-like objects with their arguments */
    INERT("(S'ls'\nios\nsystem\n.", r);
    assert_int_equal(r.st, SDICT_OK);
    assert_int_equal(sdict_object_how(r.v), SDICT_OBJECT_REDUCE);
    assert_string_equal(sdict_object_module(r.v), "os");
    assert_string_equal(sdict_str_get(sdict_seq_item(sdict_object_args(r.v), 0), NULL), "ls");
    done(&r);
    INERT("(cos\nsystem\nS'ls'\no.", r);
    assert_int_equal(r.st, SDICT_OK);
    assert_string_equal(sdict_object_name(r.v), "system");
    assert_int_equal(sdict_seq_len(sdict_object_args(r.v)), 1);
    done(&r);
    /* REDUCE of a REDUCE: getattr(Net(), 'f')(2) keeps the object called */
    INERT("\x80\x02" "cbuiltins\ngetattr\nc__main__\nNet\n)\x81X\x01\x00\x00\x00"
          "f\x86RK\x02\x85R.", r);
    assert_int_equal(r.st, SDICT_OK);
    const sdict_value *callee = sdict_object_callee(r.v);
    assert_non_null(callee);
    assert_string_equal(sdict_object_name(r.v), "getattr");
    assert_int_equal(sdict_object_how(callee), SDICT_OBJECT_REDUCE);
    assert_null(sdict_object_callee(callee));
    assert_string_equal(sdict_object_name(sdict_seq_item(sdict_object_args(callee), 0)), "Net");
    assert_int_equal(r.globals, 2);
    done(&r);
    /* NEWOBJ_EX keeps its keyword arguments */
    INERT("\x80\x04" "c__main__\nNet\n)}X\x01\x00\x00\x00kK\x01s\x92.", r);
    assert_int_equal(r.st, SDICT_OK);
    assert_int_equal(sdict_object_how(r.v), SDICT_OBJECT_NEWOBJ);
    assert_non_null(sdict_dict_get(sdict_object_kwargs(r.v), "k"));
    done(&r);
    /* an object in a set and as a dict key: hashed by identity, as Python's object */
    INERT("\x80\x02" "c__main__\nNet\n)\x81q\x00}h\x00K\x01s\x8f(h\x00h\x00\x90\x86.", r);
    assert_int_equal(r.st, SDICT_OK);
    assert_int_equal(sdict_dict_len(sdict_seq_item(r.v, 0)), 1);
    assert_int_equal(sdict_seq_len(sdict_seq_item(r.v, 1)), 1);
    done(&r);
    /* a dict subclass's object (collections.defaultdict) keeps what SETITEMS gives it, in
       order, as (key, value) pairs; an object among its own items is a cycle, refused */
    INERT("\x80\x02" "c__main__\nD\n)R(K\x01K\x02X\x01\x00\x00\x00kK\x03u.", r);
    assert_int_equal(r.st, SDICT_OK);
    assert_int_equal(sdict_object_how(r.v), SDICT_OBJECT_REDUCE);
    assert_int_equal(sdict_seq_len(sdict_object_items(r.v)), 2);
    assert_int_equal(sdict_int_get(sdict_seq_item(sdict_seq_item(sdict_object_items(r.v), 0), 1),
                                   &a), SDICT_OK);
    assert_int_equal(a, 2);
    assert_string_equal(sdict_str_get(sdict_seq_item(sdict_seq_item(sdict_object_items(r.v), 1),
                                                     0), NULL), "k");
    done(&r);
    FAIL("\x80\x02" "c__main__\nD\n)Rq\x00(K\x01h\x00u.", false, SDICT_E_UNSUPPORTED, 24);
    FAIL("\x80\x02" "c__main__\nD\n)R(K\x01u.", false, SDICT_E_PICKLE_STACK, 19);
    g_inert = true;
    /* refusals: a second BUILD, BUILD on a class reference, arguments that are no tuple,
       allow-listed callables as data, extension codes, an object inside itself */
    FAIL("\x80\x02" "c__main__\nNet\n)\x81}b}b.", false, SDICT_E_PICKLE_TYPE, 21);
    FAIL("\x80\x02" "c__main__\nNet\n}b.", false, SDICT_E_PICKLE_UNSAFE_GLOBAL, 17);
    FAIL("\x80\x02" "c__main__\nNet\nK\x01R.", false, SDICT_E_PICKLE_TYPE, 18);
    FAIL("\x80\x04" "c__main__\nNet\n)K\x01\x92.", false, SDICT_E_PICKLE_TYPE, 19);
    FAIL("\x80\x02]ctorch._utils\n_rebuild_tensor_v2\na.", false, SDICT_E_PICKLE_TYPE, 36);
    FAIL("\x80\x02\x82\x01.", false, SDICT_E_PICKLE_UNSAFE_GLOBAL, 2);
    FAIL("\x80\x02" "c__main__\nNet\n)\x81q\x00}X\x01\x00\x00\x00sh\x00sb.", false,
         SDICT_E_UNSUPPORTED, 31);
    /* a torch rebuild function refuses an object where it wants a storage */
    FAIL("\x80\x02" "ctorch._utils\n_rebuild_tensor\n(c__main__\nS\n)\x81K\x00))tR.", false,
         SDICT_E_PICKLE_TYPE, 52);
    /* limits hold through objects: nesting, and shared objects counted each time reachable */
    {
        static char p[8192];
        size_t n = 0;
        memcpy(p, "\x80\x02", 2);
        n = 2;
        for (int i = 0; i < 300; i++) { /* Net(Net(Net(...))) 300 deep */
            memcpy(p + n, "c__main__\nNet\n", 14);
            n += 14;
        }
        memcpy(p + n, ")", 1);
        n += 1;
        for (int i = 0; i < 300; i++) {
            memcpy(p + n, "\x85R", 2);
            n += 2;
        }
        p[n++] = '.';
        sdict_limits lim = default_limits();
        lim.max_depth = 100;
        unpickle_lim(&r, p, n, false, &lim);
        assert_int_equal(r.st, SDICT_E_LIMIT);
        assert_non_null(strstr(r.err.message, "max_depth"));
        done(&r);
        lim.max_depth = 1000;
        unpickle_lim(&r, p, n, false, &lim);
        assert_int_equal(r.st, SDICT_OK);
        done(&r);
        /* billion laughs: each object's args hold the previous object twice */
        n = 2;
        memcpy(p + n, ")q\x00", 3);
        n += 3;
        for (int i = 0; i < 60; i++) {
            memcpy(p + n, "c__main__\nL\nh\x00h\x00\x86\x85Rq\x00", 21);
            n += 21;
        }
        p[n++] = '.';
        unpickle_lim(&r, p, n, false, &lim);
        assert_int_equal(r.st, SDICT_E_LIMIT);
        assert_non_null(strstr(r.err.message, "shared references"));
        done(&r);
    }
    /* a scan (inert) goes on past what a load refuses: BUILD on a class reference, a second
       BUILD; every global is reported */
    unpickle(&r, "\x80\x02" "cos\nsystem\n}b)\x81}b}b0cbuiltins\neval\n.", 38, true);
    assert_int_equal(r.st, SDICT_OK);
    assert_int_equal(r.globals, 2);
    assert_int_equal(r.refused, 2);
    done(&r);
    /* without the option the same object pickle is refused, naming the class and extract */
    g_inert = false;
    unpickle(&r, "\x80\x02" "c__main__\nNet\n)\x81}b.", 20, false);
    assert_int_equal(r.st, SDICT_E_PICKLE_UNSAFE_GLOBAL);
    assert_non_null(strstr(r.err.message, "'__main__.Net'"));
    assert_non_null(strstr(r.err.message, "statedict extract"));
    done(&r);
    unpickle(&r, "\x80\x02" "cos\nsystem\n.", 13, false); /* not a class: no hint */
    assert_int_equal(r.st, SDICT_E_PICKLE_UNSAFE_GLOBAL);
    assert_null(strstr(r.err.message, "extract"));
    done(&r);
}

/* A pickled module tree, as Python's pickle writes one (protocol 2: NEWOBJ + BUILD of each
   module's __dict__): Net(w: Parameter; buffer nothing=None; bn: BatchNorm2d(weight, bias=None,
   running_mean, tmp non-persistent); lin: Linear(weight tied to w); gone=None). Made with fake
   classes of these names and Python's pickle, storages as persistent ids. */
static const char net_pickle[] =
    "\x80\x02" "c__main__\x0aNet\x0aq\x00)\x81q\x01}q\x02(X\x08\x00\x00\x00trainingq\x03\x88X"
    "\x0b\x00\x00\x00_parametersq\x04" "ccollections\x0aOrderedDict\x0aq\x05)Rq\x06X\x01\x00\x00"
    "\x00wq\x07" "ctorch._utils\x0a_rebuild_parameter\x0aq\x08" "ctorch._utils\x0a_rebuild_tenso"
    "r_v2\x0aq\x09((X\x07\x00\x00\x00storageq\x0a" "ctorch\x0a" "FloatStorage\x0aq\x0bX\x01\x00"
    "\x00\x00" "0q\x0cX\x03\x00\x00\x00" "cpuq\x0dK\x04tq\x0eQK\x00K\x04\x85q\x0fK\x01\x85q\x10"
    "\x89h\x05)Rq\x11tq\x12Rq\x13\x88h\x05)Rq\x14\x87q\x15Rq\x16sX\x08\x00\x00\x00_buffersq\x17h"
    "\x05)Rq\x18X\x07\x00\x00\x00nothingq\x19NsX\x1b\x00\x00\x00_non_persistent_buffers_setq\x1a"
    "c__builtin__\x0aset\x0aq\x1b]q\x1c\x85q\x1dRq\x1eX\x11\x00\x00\x00_state_dict_hooksq\x1fh"
    "\x05)Rq X\x08\x00\x00\x00_modulesq!h\x05)Rq\x22(X\x02\x00\x00\x00" "bnq#ctorch.nn.modules.b"
    "atchnorm\x0a" "BatchNorm2d\x0aq$)\x81q%}q&(h\x03\x88h\x04h\x05)Rq'(X\x06\x00\x00\x00weightq"
    "(h\x08h\x09((h\x0ah\x0bX\x01\x00\x00\x00" "1q)h\x0dK\x02tq*QK\x00K\x02\x85q+h\x10\x89h\x05)"
    "Rq,tq-Rq.\x88h\x05)Rq/\x87q0Rq1X\x04\x00\x00\x00" "biasq2Nuh\x17h\x05)Rq3(X\x0c\x00\x00\x00"
    "running_meanq4h\x09((h\x0ah\x0bX\x01\x00\x00\x00" "2q5h\x0dK\x02tq6QK\x00K\x02\x85q7h\x10"
    "\x89h\x05)Rq8tq9Rq:X\x03\x00\x00\x00tmpq;h\x09((h\x0ah\x0bX\x01\x00\x00\x00" "3q<h\x0dK\x01"
    "tq=QK\x00K\x01\x85q>h\x10\x89h\x05)Rq?tq@RqAuh\x1ah\x1b]qBh;a\x85qCRqDh\x1fh\x05)RqEh!h\x05"
    ")RqFubX\x03\x00\x00\x00linqGctorch.nn.modules.linear\x0aLinear\x0aqH)\x81qI}qJ(h\x03\x88h"
    "\x04h\x05)RqKh(h\x16sh\x17h\x05)RqLh\x1ah\x1b]qM\x85qNRqOh\x1fh\x05)RqPh!h\x05)RqQubX\x04"
    "\x00\x00\x00goneqRNuub.";

static void test_object_state_dict(void **state) {
    (void)state;
    run r;
    g_inert = true;
    unpickle(&r, net_pickle, sizeof net_pickle - 1, false);
    g_inert = false;
    assert_int_equal(r.st, SDICT_OK);
    assert_true(sdict_object_is_module(r.v));
    assert_string_equal(sdict_object_name(r.v), "Net");
    sdict_value *sd = NULL;
    sdict_error err;
    assert_int_equal(sdict_object_state_dict(r.v, &sd, &err), SDICT_OK);
    static const char *const keys[] = {"w", "bn.weight", "bn.running_mean", "lin.weight"};
    assert_int_equal(sdict_dict_len(sd), 4);
    assert_true(sdict_dict_is_ordered(sd));
    for (size_t i = 0; i < 4; i++) {
        assert_string_equal(sdict_str_get(sdict_dict_key(sd, i), NULL), keys[i]);
        const sdict_tensor *t = sdict_value_tensor(sdict_dict_val(sd, i));
        assert_non_null(t);
        assert_false(t->is_parameter); /* detached */
        assert_false(t->requires_grad);
    }
    /* tied: a detached value per key (as each torch detach() makes one), one storage */
    assert_ptr_not_equal(sdict_dict_get(sd, "w"), sdict_dict_get(sd, "lin.weight"));
    assert_ptr_equal(sdict_value_tensor(sdict_dict_get(sd, "w"))->storage,
                     sdict_value_tensor(sdict_dict_get(sd, "lin.weight"))->storage);
    const sdict_value *param =
        sdict_dict_get(sdict_dict_get(sdict_object_state(r.v), "_parameters"), "w");
    assert_true(sdict_value_tensor(param)->is_parameter);
    assert_ptr_equal(sdict_value_tensor(param)->storage,
                     sdict_value_tensor(sdict_dict_get(sd, "w"))->storage);
    /* _metadata: prefixes in visiting order, BatchNorm2d's class version 2 */
    const sdict_value *md = sdict_dict_get(sdict_dict_attrs(sd), "_metadata");
    assert_int_equal(sdict_dict_len(md), 3);
    static const char *const prefixes[] = {"", "bn", "lin"};
    static const int64_t versions[] = {1, 2, 1};
    for (size_t i = 0; i < 3; i++) {
        int64_t v = 0;
        /* one "version" key value for all, as Python's interned str (pickled once) */
        assert_ptr_equal(sdict_dict_key(sdict_dict_val(md, i), 0),
                         sdict_dict_key(sdict_dict_val(md, 0), 0));
        assert_string_equal(sdict_str_get(sdict_dict_key(md, i), NULL), prefixes[i]);
        assert_int_equal(sdict_int_get(sdict_dict_get(sdict_dict_val(md, i), "version"), &v),
                         SDICT_OK);
        assert_int_equal(v, versions[i]);
    }
    /* every tensor by attribute path, the Parameters themselves, the tied one twice */
    sdict_value *ts = NULL;
    assert_int_equal(sdict_object_tensors(r.v, &ts, &err), SDICT_OK);
    static const char *const paths[] = {
        "_parameters.w", "_modules.bn._parameters.weight", "_modules.bn._buffers.running_mean",
        "_modules.bn._buffers.tmp", "_modules.lin._parameters.weight"};
    assert_int_equal(sdict_dict_len(ts), 5);
    for (size_t i = 0; i < 5; i++)
        assert_string_equal(sdict_str_get(sdict_dict_key(ts, i), NULL), paths[i]);
    assert_ptr_equal(sdict_dict_val(ts, 0), param);
    assert_ptr_equal(sdict_dict_val(ts, 4), param);
    /* refusals: not a module; a submodule that is not one; state_dict hooks */
    assert_int_equal(sdict_object_state_dict(sdict_object_state(r.v), &sd, &err),
                     SDICT_E_INVALID_ARG);
    assert_null(sd);
    assert_int_equal(sdict_object_state_dict(NULL, &sd, &err), SDICT_E_INVALID_ARG);
    sdict_value *mods = sdict_dict_get(sdict_object_state(r.v), "_modules");
    sdict_value *lin = sdict_dict_get(mods, "lin");
    assert_int_equal(sdict_dict_set_str(mods, "lin", sdict_int_new(r.doc, 3)), SDICT_OK);
    assert_int_equal(sdict_object_state_dict(r.v, &sd, &err), SDICT_E_UNSUPPORTED);
    assert_non_null(strstr(err.message, "lin"));
    assert_int_equal(sdict_dict_set_str(mods, "lin", lin), SDICT_OK);
    sdict_value *hooks = sdict_dict_new(r.doc, true);
    assert_int_equal(sdict_dict_set_str(hooks, "0", sdict_none_new(r.doc)), SDICT_OK);
    assert_int_equal(sdict_dict_set_str(sdict_object_state(lin), "_state_dict_hooks", hooks),
                     SDICT_OK);
    assert_int_equal(sdict_object_state_dict(r.v, &sd, &err), SDICT_E_UNSUPPORTED);
    assert_non_null(strstr(err.message, "hooks"));
    done(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cpython_corpus),
        cmocka_unit_test(test_consumed),
        cmocka_unit_test(test_cpython_differentials),
        cmocka_unit_test(test_protocol0_text),
        cmocka_unit_test(test_refused_globals),
        cmocka_unit_test(test_structure_errors),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_shared_subtrees),
        cmocka_unit_test(test_rebuild_tensor),
        cmocka_unit_test(test_rebuild_parameter_and_meta),
        cmocka_unit_test(test_numpy_scalar),
        cmocka_unit_test(test_numpy_array),
        cmocka_unit_test(test_large_dict),
        cmocka_unit_test(test_inert_objects),
        cmocka_unit_test(test_object_state_dict),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
