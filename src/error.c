/*
 error.c - status names, filling the caller's sdict_error, and rendering it for people.
 Nothing here allocates: sdict_error is a fixed-size caller-owned struct.
*/
#include "internal.h"

#include <stdio.h>
#include <string.h>

uint32_t sdict_version(void) { return SDICT_VERSION_HEX; }

static const char *const status_text[SDICT_STATUS_COUNT] = {
    [SDICT_OK] = "SDICT_OK: success",
    [SDICT_E_NOMEM] = "SDICT_E_NOMEM: out of memory",
    [SDICT_E_IO] = "SDICT_E_IO: I/O error",
    [SDICT_E_INVALID_ARG] = "SDICT_E_INVALID_ARG: invalid argument",
    [SDICT_E_NOT_FOUND] = "SDICT_E_NOT_FOUND: not found",
    [SDICT_E_TRUNCATED] = "SDICT_E_TRUNCATED: input truncated",
    [SDICT_E_FORMAT] = "SDICT_E_FORMAT: not a PyTorch checkpoint",
    [SDICT_E_ZIP_CORRUPT] = "SDICT_E_ZIP_CORRUPT: corrupt zip archive",
    [SDICT_E_ZIP_UNSUPPORTED] = "SDICT_E_ZIP_UNSUPPORTED: unsupported zip feature",
    [SDICT_E_CRC] = "SDICT_E_CRC: CRC mismatch",
    [SDICT_E_PICKLE_OPCODE] = "SDICT_E_PICKLE_OPCODE: bad pickle opcode",
    [SDICT_E_PICKLE_STACK] = "SDICT_E_PICKLE_STACK: pickle stack or memo error",
    [SDICT_E_PICKLE_UNSAFE_GLOBAL] = "SDICT_E_PICKLE_UNSAFE_GLOBAL: global not allowed",
    [SDICT_E_PICKLE_TYPE] = "SDICT_E_PICKLE_TYPE: wrong argument types in pickle",
    [SDICT_E_STORAGE] = "SDICT_E_STORAGE: storage missing or too small",
    [SDICT_E_LIMIT] = "SDICT_E_LIMIT: resource limit exceeded",
    [SDICT_E_DTYPE] = "SDICT_E_DTYPE: unknown or unsupported dtype",
    [SDICT_E_SHAPE] = "SDICT_E_SHAPE: invalid or mismatched shape",
    [SDICT_E_VERSION] = "SDICT_E_VERSION: unsupported format version",
    [SDICT_E_UNSUPPORTED] = "SDICT_E_UNSUPPORTED: unsupported content",
};

const char *sdict_status_str(sdict_status status) {
    if ((unsigned)status >= SDICT_STATUS_COUNT)
        return "SDICT_E_?: unknown status";
    return status_text[status];
}

/* Copies a string into a fixed array, truncating and always NUL-terminating. */
static void copy_trunc(char *dst, size_t cap, const char *src) {
    size_t n = src ? strlen(src) : 0;
    if (n >= cap)
        n = cap - 1;
    if (n)
        memmove(dst, src, n); /* src may be the same field (re-raising an error) */
    dst[n] = '\0';
}

sdict_status sdict__err(sdict_error *err, sdict_status code, const char *record, int64_t offset,
                        const char *fmt, ...) {
    if (!err)
        return code;
    err->code = code;
    err->offset = offset;
    copy_trunc(err->record, sizeof err->record, record);
    /* format into a temporary first: the arguments may point into err itself, as when a
       caller re-raises an error with "%s", err->message */
    char msg[sizeof err->message];
    msg[0] = '\0';
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
    }
    memcpy(err->message, msg, sizeof msg);
    return code;
}

void sdict__err_file(sdict_error *err, const char *file) {
    if (err)
        copy_trunc(err->file, sizeof err->file, file);
}

/*
 Length of the UTF-8 sequence at s (n > 0 bytes available) and its code point, with
 surrogates accepted (the 'surrogatepass' form); 0 when the byte at s starts no such sequence.
*/
static size_t utf8_seq(const uint8_t *s, size_t n, uint32_t *cp_out) {
    uint8_t c = s[0];
    size_t k;
    uint32_t cp;
    if (c < 0x80) {
        *cp_out = c;
        return 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
        k = 1, cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        k = 2, cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        k = 3, cp = c & 0x07;
    } else {
        return 0;
    }
    if (n <= k)
        return 0;
    for (size_t i = 1; i <= k; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
        return 0;
    *cp_out = cp;
    return k + 1;
}

size_t sdict__utf8_invalid_at(const uint8_t *s, size_t len) {
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t k = utf8_seq(s + i, len - i, &cp);
        if (!k)
            return i;
        i += k;
    }
    return len;
}

/* Code points past U+009F that Python 3.11's str.isprintable() calls unprintable and repr()
   escapes, apart from unassigned ones: Unicode 14's format characters (Cf: soft hyphen,
   zero-width and bidirectional controls, the BOM...), separators other than the space (Zs, Zl,
   Zp: no-break and other spaces, U+2028, U+2029) and private-use characters (Co). */
static bool python_unprintable(uint32_t cp) {
    static const uint32_t ranges[][2] = {
        {0xA0, 0xA0},       {0xAD, 0xAD},       {0x600, 0x605},     {0x61C, 0x61C},
        {0x6DD, 0x6DD},     {0x70F, 0x70F},     {0x890, 0x891},     {0x8E2, 0x8E2},
        {0x1680, 0x1680},   {0x180E, 0x180E},   {0x2000, 0x200F},   {0x2028, 0x202F},
        {0x205F, 0x2064},   {0x2066, 0x206F},   {0x3000, 0x3000},   {0xE000, 0xF8FF},
        {0xFEFF, 0xFEFF},   {0xFFF9, 0xFFFB},   {0x110BD, 0x110BD}, {0x110CD, 0x110CD},
        {0x13430, 0x13438}, {0x1BCA0, 0x1BCA3}, {0x1D173, 0x1D17A}, {0xE0001, 0xE0001},
        {0xE0020, 0xE007F}, {0xF0000, 0xFFFFD}, {0x100000, 0x10FFFD}};
    for (size_t i = 0; i < sizeof ranges / sizeof ranges[0] && cp >= ranges[i][0]; i++)
        if (cp <= ranges[i][1])
            return true;
    return false;
}

size_t sdict_escape_text(const char *s, size_t n, uint32_t flags, char *out, size_t cap) {
    const uint8_t *p = (const uint8_t *)s;
    size_t need = 0; /* length of the whole escaped text */
    size_t used = 0; /* bytes stored in out; stops growing at the first piece that misses */
    bool full = cap == 0;
    for (size_t i = 0; i < n;) {
        char esc[12];
        const char *piece = esc;
        size_t plen;
        uint32_t cp = 0;
        size_t k = utf8_seq(p + i, n - i, &cp);
        if (k == 0) { /* a byte that starts no valid sequence */
            plen = (size_t)snprintf(esc, sizeof esc, "\\x%02x", p[i]);
            k = 1;
        } else if (cp == '\n' && !(flags & SDICT_ESCAPE_KEEP_LAYOUT)) {
            piece = "\\n", plen = 2;
        } else if (cp == '\t' && !(flags & SDICT_ESCAPE_KEEP_LAYOUT)) {
            piece = "\\t", plen = 2;
        } else if (cp == '\r') {
            piece = "\\r", plen = 2;
        } else if ((cp < 0x20 && cp != '\n' && cp != '\t') || (cp >= 0x7F && cp <= 0x9F)) {
            plen = (size_t)snprintf(esc, sizeof esc, "\\x%02x", (unsigned)cp);
        } else if ((cp >= 0xD800 && cp <= 0xDFFF) || (cp >= 0xA0 && python_unprintable(cp))) {
            plen = (size_t)snprintf(esc, sizeof esc,
                                    cp <= 0xFF ? "\\x%02x" : cp <= 0xFFFF ? "\\u%04x" : "\\U%08x",
                                    (unsigned)cp);
        } else {
            piece = s + i, plen = k;
        }
        if (!full && plen < cap - used) {
            memcpy(out + used, piece, plen);
            used += plen;
        } else {
            full = true;
        }
        need += plen;
        i += k;
    }
    if (cap)
        out[used] = '\0';
    return need;
}

/* strnlen is POSIX, not C11 */
static size_t bounded_len(const char *s, size_t cap) {
    size_t n = 0;
    while (n < cap && s[n])
        n++;
    return n;
}

char *sdict_error_format(const sdict_error *err, char *buf, size_t n) {
    if (!buf || n == 0)
        return buf;
    buf[0] = '\0';
    if (!err)
        return buf;
    size_t used = 0;
    /* Appends with snprintf semantics, clamping `used` so later parts stay in bounds. */
#define APPEND(...)                                                                              \
    do {                                                                                         \
        if (used < n) {                                                                          \
            int w_ = snprintf(buf + used, n - used, __VA_ARGS__);                                \
            if (w_ > 0)                                                                          \
                used = (size_t)w_ >= n - used ? n : used + (size_t)w_;                           \
        }                                                                                        \
    } while (0)
    /* fixed arrays may lack a NUL if a caller filled them by hand: bound the reads */
    size_t flen = bounded_len(err->file, sizeof err->file);
    size_t rlen = bounded_len(err->record, sizeof err->record);
    size_t mlen = bounded_len(err->message, sizeof err->message);
    /* each part escaped: names and keys from a file reach the caller's terminal through here */
    char text[4 * sizeof err->message + 1];
    const char *sep = "";
    if (flen) {
        sdict_escape_text(err->file, flen, 0, text, sizeof text);
        APPEND("%s", text);
        sep = ": ";
    }
    if (rlen) {
        sdict_escape_text(err->record, rlen, 0, text, sizeof text);
        APPEND("%s%s", sep, text);
        sep = ": ";
    }
    if (err->offset >= 0) {
        APPEND("%s@ %lld", rlen ? " " : sep, (long long)err->offset);
        sep = ": ";
    }
    if (mlen) {
        sdict_escape_text(err->message, mlen, 0, text, sizeof text);
        APPEND("%s%s", sep, text);
    } else
        APPEND("%s%s", sep, sdict_status_str(err->code));
#undef APPEND
    return buf;
}
