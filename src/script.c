/*
 script.c - TorchScript archives (torch.jit.save) read as data: the class declarations of the
 archive's code/ records, and the ScriptModule's state_dict() over the inert object tree of its
 data.pkl (SDICT_LOAD_INERT).

 An archive holds data.pkl (the module object tree: each object a NEWOBJ of its class
 `__torch__.<path>.<Class>`, possibly `___torch_mangle_N`, with BUILD of a dict of its
 attributes), constants.pkl (a tuple of the code's constants) and code/<path>.py, the source
 torch's python_print.cpp wrote for each class. That text is read line by line and never run;
 only a class's header and its 2-space-indented declaration lines matter:

   class Linear(Module):                       a module class (base `Module`)
     __parameters__ = ["weight", "bias", ]     parameters, in slot order
     __buffers__ = ["running_mean", ]          buffers (absent in older archives: none)
     weight : Tensor                           an attribute and its type, in slot order
     __annotations__["0"] = __torch__.X.Y      an attribute whose name is no identifier
     momentum : Final[float] = 0.1             a constant (skipped), as are def bodies

 As torch's lexer and parser read it: spaces around ':' and '=' are optional, comments may
 stand at any column or end a line, the body's indent is that of its first line (any width, no
 tabs), and lines that continue a string, a bracket or a backslash declare nothing. Declaration
 text not understood is refused, and the walk checks each module's data.pkl state against its
 class: a tensor or module object the declarations do not account for is refused.

 torch's importer (import_source.cpp) makes one slot per annotated attribute in that order,
 marks those named in __parameters__ / __buffers__, and the loaded module's state_dict()
 (nn.Module.state_dict over the C++ module: named_parameters, named_buffers and named_children,
 each non-recursive, in slot order) takes the parameters that hold a tensor, the buffers whose
 type is Tensor, then each attribute whose type is a module class, recursively. All buffers
 count: a scripted module keeps no _non_persistent_buffers_set, so torch.jit.load(f)
 .state_dict() includes the non-persistent ones.

 Cost: each code record is scanned once; per class the attributes of interest are listed once
 (script_finish), so the walk does at most one hash lookup per state entry of each object.
*/
#include "internal.h"

#include <stdio.h>
#include <string.h>

#define SC_MAX_DEPTH 1000 /* modules within modules */

/*==================================================================================================
 MARK: Code text
==================================================================================================*/

typedef struct sc_parse {
    sdict_doc *doc;
    sdict_value *classes; /* qualified name -> class dict */
    const char *record;
    const char *base;     /* start of the record's text, for offsets */
    sdict_error *err;
    sdict_value *rec;     /* the record's name, one str value shared by its classes */
    size_t used, budget;  /* bytes the classes took, and the most they may take */
} sc_parse;

static sdict_status sc_nomem(sdict_error *err, const char *record) {
    return sdict__err(err, SDICT_E_NOMEM, record, -1, "out of memory");
}

static bool is_ident_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

static sdict_status bad_line(sc_parse *p, const char *at, const char *what) {
    return sdict__err(p->err, SDICT_E_FORMAT, p->record, (int64_t)(at - p->base),
                      "TorchScript code: %s", what);
}

/* A quoted string literal at *s (either quote; escapes \\ \" \' only), into a new str value. */
static sdict_status quoted(sc_parse *p, const char **s, const char *end, sdict_value **out) {
    const char *q = *s;
    if (q >= end || (*q != '"' && *q != '\''))
        return bad_line(p, q, "expected a quoted name");
    char quote = *q++;
    char buf[256];
    size_t n = 0;
    for (; q < end && *q != quote; q++) {
        char c = *q;
        if (c == '\\') {
            if (q + 1 >= end || (q[1] != '\\' && q[1] != '"' && q[1] != '\''))
                return bad_line(p, q, "unsupported escape in a name");
            c = *++q;
        }
        if (n + 1 >= sizeof buf)
            return bad_line(p, *s, "name longer than 255 bytes");
        buf[n++] = c;
    }
    if (q >= end)
        return bad_line(p, *s, "unterminated string");
    *s = q + 1;
    *out = sdict_str_new(p->doc, buf, n);
    return *out ? SDICT_OK : sc_nomem(p->err, p->record);
}

/* `["a", "b", ]` into an ordered dict name -> None (a set that keeps the order). */
static sdict_status name_list(sc_parse *p, const char *s, const char *end, sdict_value **out) {
    sdict_value *d = sdict_dict_new(p->doc, true);
    if (!d)
        return sc_nomem(p->err, p->record);
    if (s >= end || *s != '[')
        return bad_line(p, s, "expected '[' after __parameters__ / __buffers__ =");
    s++;
    for (;;) {
        while (s < end && *s == ' ')
            s++;
        if (s < end && *s == ']')
            break;
        sdict_value *name;
        sdict_status st = quoted(p, &s, end, &name);
        if (st != SDICT_OK)
            return st;
        if (sdict_dict_find(d, name))
            return bad_line(p, s, "a name listed twice");
        sdict_value *none = sdict_none_new(p->doc);
        if (!none || sdict_dict_set(d, name, none) != SDICT_OK)
            return sc_nomem(p->err, p->record);
        while (s < end && *s == ' ')
            s++;
        if (s < end && *s == ',')
            s++;
        else if (s >= end || *s != ']')
            return bad_line(p, s, "expected ',' or ']' in a name list");
    }
    s++;
    while (s < end && (*s == ' ' || *s == '\r'))
        s++;
    if (s != end)
        return bad_line(p, s, "text after a name list");
    *out = d;
    return SDICT_OK;
}

/* `class Name(Base):` or `class Name:`; a new class dict under module.Name. */
static sdict_status class_line(sc_parse *p, const char *module, size_t mlen, const char *s,
                               const char *end, sdict_value **cur) {
    const char *line = s;
    s += 6;
    const char *name = s;
    while (s < end && is_ident_char(*s))
        s++;
    size_t nlen = (size_t)(s - name);
    const char *base = NULL;
    size_t blen = 0;
    if (s < end && *s == '(') {
        base = ++s;
        while (s < end && *s != ')')
            s++;
        blen = (size_t)(s - base);
        if (s < end)
            s++;
    }
    if (!nlen || s >= end || *s != ':')
        return bad_line(p, line, "malformed class line");
    if (mlen + 1 + nlen > 4096)
        return bad_line(p, line, "class name longer than 4096 bytes");
    char q[4200];
    memcpy(q, module, mlen);
    q[mlen] = '.';
    memcpy(q + mlen + 1, name, nlen);
    /* each class costs its key and dicts: counted against a budget linear in the record */
    p->used += mlen + nlen + 512;
    if (p->used > p->budget)
        return sdict__err(p->err, SDICT_E_LIMIT, p->record, (int64_t)(line - p->base),
                          "TorchScript code: its classes would take more than %zu bytes "
                          "(16 per byte of the record, plus 1 MiB)", p->budget);
    if (!p->rec && !(p->rec = sdict_str_new(p->doc, p->record, strlen(p->record))))
        return sc_nomem(p->err, p->record);
    sdict_value *key = sdict_str_new(p->doc, q, mlen + 1 + nlen);
    if (!key)
        return sc_nomem(p->err, p->record);
    if (sdict_dict_find(p->classes, key))
        return bad_line(p, line, "class defined twice");
    sdict_value *c = sdict_dict_new(p->doc, true), *attrs = sdict_dict_new(p->doc, true);
    sdict_value *b = base ? sdict_str_new(p->doc, base, blen) : sdict_none_new(p->doc);
    sdict_value *rec = p->rec;
    sdict_value *off = sdict_int_new(p->doc, (int64_t)(line - p->base));
    if (!c || !attrs || !b || !rec || !off || sdict_dict_set_str(c, "base", b) ||
        sdict_dict_set_str(c, "attributes", attrs) || sdict_dict_set_str(c, "record", rec) ||
        sdict_dict_set_str(c, "offset", off) || sdict_dict_set(p->classes, key, c))
        return sc_nomem(p->err, p->record);
    *cur = c;
    return SDICT_OK;
}

static bool is_space(char c) { return c == ' ' || c == '\r'; }

static const char *skip_sp(const char *s, const char *end) {
    while (s < end && is_space(*s))
        s++;
    return s;
}

/* The type text of a declaration: a dotted name with [ ] , and spaces only; anything else
   (`;`, a second statement, an operator) is text this reader does not understand. */
static bool type_text_ok(const char *s, const char *end) {
    if (s >= end)
        return false;
    for (; s < end; s++)
        if (!is_ident_char(*s) && *s != '.' && *s != '[' && *s != ']' && *s != ',' && *s != ' ')
            return false;
    return true;
}

/* One logical declaration line of a class body (indent stripped, comment and trailing spaces
   cut). As torch's parser reads them, spaces around ':' and '=' are optional. */
static sdict_status body_line(sc_parse *p, sdict_value *cls, const char *s, const char *end) {
    static const char *const lists[] = {"__parameters__", "__buffers__"};
    for (size_t i = 0; i < 2; i++) {
        size_t l = strlen(lists[i]);
        if ((size_t)(end - s) >= l && memcmp(s, lists[i], l) == 0 &&
            (s + l == end || !is_ident_char(s[l]))) {
            const char *q = skip_sp(s + l, end);
            if (q >= end || *q != '=')
                return bad_line(p, s, "a __parameters__ / __buffers__ line that is no "
                                "`NAME = [...]` assignment");
            if (sdict_dict_get(cls, lists[i] + 2))
                return bad_line(p, s, "__parameters__ or __buffers__ declared twice");
            sdict_value *d = NULL;
            sdict_status st = name_list(p, skip_sp(q + 1, end), end, &d);
            if (st != SDICT_OK)
                return st;
            /* stored without the underscores: "parameters__", "buffers__" */
            return sdict_dict_set_str(cls, lists[i] + 2, d) ? sc_nomem(p->err, p->record)
                                                            : SDICT_OK;
        }
    }
    sdict_value *name = NULL;
    const char *type;
    if ((size_t)(end - s) >= 15 && memcmp(s, "__annotations__", 15) == 0) {
        const char *q = skip_sp(s + 15, end);
        if (q >= end || *q != '[')
            return bad_line(p, s, "an __annotations__ line that is no `__annotations__[NAME] = "
                            "TYPE`");
        q = skip_sp(q + 1, end);
        sdict_status st = quoted(p, &q, end, &name);
        if (st != SDICT_OK)
            return st;
        q = skip_sp(q, end);
        if (q >= end || *q != ']' || (q = skip_sp(q + 1, end)) >= end || *q != '=')
            return bad_line(p, q, "expected '] =' after __annotations__[name");
        type = skip_sp(q + 1, end);
    } else {
        const char *q = s;
        while (q < end && is_ident_char(*q))
            q++;
        if (q == s)
            return SDICT_OK; /* decorators and other non-declarations */
        const char *c = skip_sp(q, end);
        if (c >= end || *c != ':')
            return SDICT_OK; /* def, other statements */
        type = skip_sp(c + 1, end);
        if (memchr(type, '=', (size_t)(end - type)))
            return SDICT_OK; /* `name : Final[T] = value`: a constant, no slot */
        name = sdict_str_new(p->doc, s, (size_t)(q - s));
        if (!name)
            return sc_nomem(p->err, p->record);
    }
    if (!type_text_ok(type, end))
        return bad_line(p, type, "a declaration whose type this reader does not understand");
    while (end > type && is_space(end[-1]))
        end--;
    sdict_value *attrs = sdict_dict_get(cls, "attributes");
    if (sdict_dict_find(attrs, name))
        return bad_line(p, s, "attribute declared twice");
    sdict_value *tv = sdict_str_new(p->doc, type, (size_t)(end - type));
    if (!tv || sdict_dict_set(attrs, name, tv))
        return sc_nomem(p->err, p->record);
    return SDICT_OK;
}

/* Lexer state carried from line to line: inside a triple-quoted string (its quote char), the
   depth of open brackets, a backslash continuation. A physical line that starts inside any of
   them continues a logical line and declares nothing. */
typedef struct sc_lex {
    char triple;
    size_t depth;
    bool cont;
} sc_lex;

/* Scans the line [s, end) from its start state; returns where a comment starts (or end). */
static const char *lex_line(sc_lex *x, const char *s, const char *end) {
    const char *comment = end;
    x->cont = false;
    for (const char *q = s; q < end; q++) {
        char c = *q;
        if (x->triple) {
            if (c == '\\')
                q++;
            else if (c == x->triple && end - q >= 3 && q[1] == c && q[2] == c) {
                x->triple = 0;
                q += 2;
            }
            continue;
        }
        if (c == '#') {
            comment = q;
            break;
        }
        if (c == '"' || c == '\'') {
            if (end - q >= 3 && q[1] == c && q[2] == c) {
                x->triple = c;
                q += 2;
                continue;
            }
            for (q++; q < end && *q != c; q++)
                if (*q == '\\')
                    q++;
            continue; /* an unterminated one ends at the line's end, as in a bad line */
        }
        if (c == '(' || c == '[' || c == '{')
            x->depth++;
        else if ((c == ')' || c == ']' || c == '}') && x->depth)
            x->depth--;
        else if (c == '\\' && skip_sp(q + 1, end) == end)
            x->cont = true;
    }
    return comment;
}

/* Per record, the memory the class table may take: linear in the record's size. */
#define SC_BUDGET(n) (16 * (size_t)(n) + ((size_t)1 << 20))

sdict_status sdict__script_code(sdict_doc *doc, sdict_value *classes, const char *module,
                                size_t mlen, const char *text, size_t n, const char *record,
                                sdict_error *err) {
    sc_parse p = {doc, classes, record, text, err, NULL, 0, SC_BUDGET(n)};
    sdict_value *cur = NULL;
    size_t indent = 0; /* the class body's indent; 0 until its first line */
    sc_lex x = {0, 0, false};
    const char *s = text, *end = text + n;
    while (s < end) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        const char *le = nl ? nl : end;
        bool continued = x.triple || x.depth || x.cont;
        const char *cm = lex_line(&x, s, le);
        sdict_status st = SDICT_OK;
        const char *t = s;
        while (t < cm && *t == ' ')
            t++;
        const char *e = cm;
        while (e > t && is_space(e[-1]))
            e--;
        size_t ind = (size_t)(t - s);
        if (continued || t == e) {
            /* a continuation, a blank or comment-only line (at any column) */
        } else if (t < e && *t == '\t') {
            st = bad_line(&p, t, "a tab in an indent (torch.jit.load refuses it)");
        } else if (ind == 0) {
            if ((size_t)(e - t) >= 6 && memcmp(t, "class ", 6) == 0) {
                st = class_line(&p, module, mlen, t, e, &cur);
                indent = 0;
            } else {
                cur = NULL; /* a top-level def or statement ends the class */
            }
        } else if (cur) {
            if (!indent)
                indent = ind;
            if (ind == indent)
                st = body_line(&p, cur, t, e);
            else if (ind < indent)
                st = bad_line(&p, t, "an indent that matches no enclosing block");
            /* deeper: a def's body */
        }
        if (st != SDICT_OK)
            return st;
        s = nl ? nl + 1 : end;
    }
    return SDICT_OK;
}

static bool str_is(const sdict_value *v, const char *s) {
    size_t n = 0;
    const char *t = sdict_str_get(v, &n);
    return t && n == strlen(s) && memcmp(t, s, n) == 0;
}

static bool class_is_module(const sdict_value *c) {
    return c && str_is(sdict_dict_get(c, "base"), "Module");
}

static sdict_status class_err(const sdict_value *cls, const sdict_value *qual, sdict_error *err,
                              const char *what, const sdict_value *name) {
    int64_t off = -1;
    sdict_int_get(sdict_dict_get(cls, "offset"), &off);
    return sdict__err(err, SDICT_E_FORMAT, sdict_str_get(sdict_dict_get(cls, "record"), NULL), off,
                      "TorchScript class %.300s: %s '%.200s'", sdict_str_get(qual, NULL), what,
                      sdict_str_get(name, NULL));
}

/* Per module class, the slots state_dict() visits, in slot order: "p" parameters, "b" buffers
   (declared and typed Tensor), "m" attributes typed as a module class. Every name in
   __parameters__ / __buffers__ must be an attribute. */
sdict_status sdict__script_finish(sdict_doc *doc, sdict_value *classes, sdict_error *err) {
    for (size_t i = 0; i < sdict_dict_len(classes); i++) {
        sdict_value *qual = sdict_dict_key(classes, i), *c = sdict_dict_val(classes, i);
        if (!class_is_module(c)) {
            /* import_source.cpp asserts "Parameters only exist on modules" (and buffers) */
            if (sdict_dict_get(c, "parameters__") || sdict_dict_get(c, "buffers__"))
                return class_err(c, qual, err, "declares __parameters__ or __buffers__ but is "
                                 "no Module class: base", sdict_dict_get(c, "base"));
            continue;
        }
        sdict_value *attrs = sdict_dict_get(c, "attributes");
        sdict_value *params = sdict_dict_get(c, "parameters__");
        sdict_value *bufs = sdict_dict_get(c, "buffers__");
        for (size_t k = 0; k < 2; k++) {
            sdict_value *d = k ? bufs : params;
            for (size_t j = 0; j < sdict_dict_len(d); j++)
                if (!sdict_dict_find(attrs, sdict_dict_key(d, j)))
                    return class_err(c, qual, err, k ? "__buffers__ names a missing attribute"
                                                     : "__parameters__ names a missing attribute",
                                     sdict_dict_key(d, j));
        }
        sdict_value *lp = sdict_list_new(doc), *lb = sdict_list_new(doc), *lm = sdict_list_new(doc);
        if (!lp || !lb || !lm || sdict_dict_set_str(c, "p", lp) || sdict_dict_set_str(c, "b", lb) ||
            sdict_dict_set_str(c, "m", lm))
            return sc_nomem(err, NULL);
        for (size_t j = 0; j < sdict_dict_len(attrs); j++) {
            sdict_value *name = sdict_dict_key(attrs, j), *type = sdict_dict_val(attrs, j);
            sdict_value *to = NULL;
            if (params && sdict_dict_find(params, name))
                to = lp;
            else if (bufs && sdict_dict_find(bufs, name)) {
                size_t tl = 0;
                const char *ts = sdict_str_get(type, &tl);
                if (ts && tl >= 9 && memcmp(ts, "Optional[", 9) == 0)
                    return class_err(c, qual, err, "declares a buffer typed Optional "
                                     "(torch.jit.load refuses it):", name);
                to = str_is(type, "Tensor") ? lb : NULL;
            }
            else if (class_is_module(sdict_dict_find(classes, type)) ||
                     str_is(sdict_dict_get(sdict_dict_find(classes, type), "base"),
                            "ModuleInterface"))
                to = lm; /* a module, or a module interface (its value's class is checked) */
            if (to && sdict_seq_append(to, name))
                return sc_nomem(err, NULL);
        }
    }
    return SDICT_OK;
}

/*==================================================================================================
 MARK: state_dict
==================================================================================================*/

typedef struct sc_walk {
    sdict_doc *doc;
    const sdict_value *classes;
    sdict_value *out, *meta, *version;
    sdict_error *err;
    sdict__buf path;
} sc_walk;

static sdict_status w_nomem(sc_walk *w) { return sc_nomem(w->err, NULL); }

/* Appends to the NUL-terminated prefix; false on out of memory. */
static bool path_add(sdict__buf *b, const char *s, size_t n) {
    sdict__buf_append(b, s, n);
    sdict__buf_byte(b, 0);
    if (b->oom)
        return false;
    b->len--;
    return true;
}

static void path_cut(sdict__buf *b, size_t len) {
    b->len = len;
    if (b->data)
        b->data[len] = 0;
}

static const char *w_path(const sc_walk *w) {
    return w->path.len ? (const char *)w->path.data : "<root>";
}

/* The class dict of an inert object of a TorchScript class, or NULL. */
static const sdict_value *class_of(const sc_walk *w, const sdict_value *obj, sdict_value **qual) {
    *qual = NULL;
    if (sdict_value_kind(obj) != SDICT_KIND_OBJECT || sdict_object_how(obj) == SDICT_OBJECT_CLASS ||
        sdict_object_callee(obj))
        return NULL;
    const char *m = sdict_object_module(obj), *n = sdict_object_name(obj);
    size_t ml = strlen(m), nl = strlen(n);
    char q[4200];
    if (ml + nl + 2 > sizeof q)
        return NULL;
    memcpy(q, m, ml);
    q[ml] = '.';
    memcpy(q + ml + 1, n, nl);
    *qual = sdict_str_new(w->doc, q, ml + 1 + nl);
    return *qual ? sdict_dict_find(w->classes, *qual) : NULL;
}

static sdict_status w_put(sc_walk *w, const sdict_value *name, const sdict_value *v) {
    size_t base = w->path.len, nl = 0;
    const char *ns = sdict_str_get(name, &nl);
    sdict_tensor t = *sdict_value_tensor(v);
    t.is_parameter = false;
    t.requires_grad = false;
    sdict_value *dv = NULL, *key;
    sdict_status st = sdict__tensor_value_new(w->doc, &t, sdict_value_quantizer(v), &dv, w->err);
    if (st != SDICT_OK)
        return st;
    if (!path_add(&w->path, ns, nl))
        return w_nomem(w);
    key = sdict_str_new(w->doc, (const char *)w->path.data, w->path.len);
    path_cut(&w->path, base);
    return key && sdict_dict_set(w->out, key, dv) == SDICT_OK ? SDICT_OK : w_nomem(w);
}

static sdict_status walk(sc_walk *w, const sdict_value *obj, int depth) {
    if (depth > SC_MAX_DEPTH)
        return sdict__err(w->err, SDICT_E_LIMIT, NULL, -1, "modules nest deeper than %d at "
                          "'%.200s'", SC_MAX_DEPTH, w_path(w));
    sdict_value *qual;
    const sdict_value *cls = class_of(w, obj, &qual);
    if (!class_is_module(cls))
        return sdict__err(w->err, SDICT_E_FORMAT, "data.pkl", -1, "module '%.200s': %s%.300s is "
                          "not a TorchScript module class of the archive's code", w_path(w),
                          qual ? "class " : "a ", qual ? sdict_str_get(qual, NULL)
                                                    : sdict_kind_name(sdict_value_kind(obj)));
    const sdict_value *state = sdict_object_state(obj);
    if (sdict_value_kind(state) != SDICT_KIND_DICT)
        return sdict__err(w->err, SDICT_E_UNSUPPORTED, "data.pkl", -1, "module '%.200s' (%.300s) "
                          "is restored by its __setstate__ code, which statedict does not run",
                          w_path(w), sdict_str_get(qual, NULL));
    /* _metadata[prefix[:-1]] = {'version': 1}: RecursiveScriptModule's _version */
    sdict_value *md = sdict_dict_new(w->doc, false), *one = sdict_int_new(w->doc, 1);
    sdict_value *mk = sdict_str_new(w->doc, (const char *)w->path.data,
                                    w->path.len ? w->path.len - 1 : 0);
    if (!md || !one || !mk || sdict_dict_set(md, w->version, one) ||
        sdict_dict_set(w->meta, mk, md))
        return w_nomem(w);
    static const char *const lists[] = {"p", "b", "m"};
    for (size_t k = 0; k < 3; k++) {
        const sdict_value *names = sdict_dict_get(cls, lists[k]);
        for (size_t i = 0; i < sdict_seq_len(names); i++) {
            const sdict_value *name = sdict_seq_item(names, i);
            const sdict_value *v = sdict_dict_find(state, name);
            if (!v)
                return sdict__err(w->err, SDICT_E_FORMAT, "data.pkl", -1, "module '%.200s' "
                                  "(%.300s): the code declares attribute '%.200s', the object "
                                  "has none", w_path(w), sdict_str_get(qual, NULL),
                                  sdict_str_get(name, NULL));
            sdict_kind vk = sdict_value_kind(v);
            if (vk == SDICT_KIND_NONE)
                continue;
            sdict_status st;
            if (k < 2) {
                if (vk != SDICT_KIND_TENSOR)
                    return sdict__err(w->err, SDICT_E_FORMAT, "data.pkl", -1, "module '%.200s' "
                                      "(%.300s): %s '%.200s' is a %s, not a tensor", w_path(w),
                                      sdict_str_get(qual, NULL), k ? "buffer" : "parameter",
                                      sdict_str_get(name, NULL), sdict_kind_name(vk));
                st = w_put(w, name, v);
            } else {
                size_t base = w->path.len, nl = 0;
                const char *ns = sdict_str_get(name, &nl);
                if (!path_add(&w->path, ns, nl) || !path_add(&w->path, ".", 1))
                    return w_nomem(w);
                st = walk(w, v, depth + 1);
                path_cut(&w->path, base);
            }
            if (st != SDICT_OK)
                return st;
        }
    }
    /* cross-check against data.pkl: every tensor the object holds is a declared attribute, every
       module it holds one the walk visited, so text this reader misread cannot silently drop
       or add entries */
    const sdict_value *attrs = sdict_dict_get(cls, "attributes");
    for (size_t i = 0; i < sdict_dict_len(state); i++) {
        const sdict_value *name = sdict_dict_key(state, i), *v = sdict_dict_val(state, i);
        sdict_kind vk = sdict_value_kind(v);
        if (vk != SDICT_KIND_TENSOR && vk != SDICT_KIND_OBJECT)
            continue;
        const sdict_value *type = sdict_dict_find(attrs, name);
        bool ok = type != NULL;
        if (ok && vk == SDICT_KIND_OBJECT) {
            sdict_value *vq;
            const sdict_value *vc = class_of(w, v, &vq);
            const sdict_value *tc = sdict_dict_find(w->classes, type);
            if (class_is_module(vc))
                ok = class_is_module(tc) || str_is(sdict_dict_get(tc, "base"), "ModuleInterface");
        }
        if (!ok)
            return sdict__err(w->err, SDICT_E_FORMAT, "data.pkl", -1, "module '%.200s' (%.300s): "
                              "attribute '%.200s' holds a %s the class's code does not declare "
                              "as such; the code text is not understood", w_path(w),
                              sdict_str_get(qual, NULL), sdict_str_get(name, NULL),
                              vk == SDICT_KIND_TENSOR ? "tensor" : "module object");
    }
    return SDICT_OK;
}

bool sdict_doc_is_script(const sdict_doc *doc) { return sdict__doc_script(doc) != NULL; }

sdict_value *sdict_doc_script_constants(const sdict_doc *doc) {
    return sdict_dict_get(sdict__doc_script(doc), "constants");
}

sdict_status sdict_script_state_dict(const sdict_doc *doc, sdict_value **out, sdict_error *err) {
    if (out)
        *out = NULL;
    if (!doc || !out)
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "script_state_dict: NULL argument");
    sdict_value *info = sdict__doc_script(doc);
    if (!info)
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "script_state_dict: the doc is not "
                          "a TorchScript archive loaded with SDICT_LOAD_INERT");
    sc_walk w;
    memset(&w, 0, sizeof w);
    w.doc = sdict__value_doc(info);
    w.classes = sdict_dict_get(info, "classes");
    w.err = err;
    w.out = sdict_dict_new(w.doc, true);
    w.meta = sdict_dict_new(w.doc, true);
    w.version = sdict_str_new(w.doc, "version", 7);
    sdict_value *attrs = sdict_dict_new(w.doc, false);
    sdict_status st = !w.out || !w.meta || !w.version || !attrs ||
                              !path_add(&w.path, "", 0) ||
                              sdict_dict_set_str(attrs, "_metadata", w.meta) != SDICT_OK ||
                              sdict_dict_set_attrs(w.out, attrs) != SDICT_OK
                          ? w_nomem(&w)
                          : walk(&w, sdict_doc_root(doc), 0);
    sdict__buf_free(&w.path);
    if (st == SDICT_OK)
        *out = w.out;
    return st;
}
