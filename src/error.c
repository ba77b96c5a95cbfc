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
    int flen = (int)bounded_len(err->file, sizeof err->file);
    int rlen = (int)bounded_len(err->record, sizeof err->record);
    int mlen = (int)bounded_len(err->message, sizeof err->message);
    const char *sep = "";
    if (flen) {
        APPEND("%.*s", flen, err->file);
        sep = ": ";
    }
    if (rlen) {
        APPEND("%s%.*s", sep, rlen, err->record);
        sep = ": ";
    }
    if (err->offset >= 0) {
        APPEND("%s@ %lld", rlen ? " " : sep, (long long)err->offset);
        sep = ": ";
    }
    if (mlen)
        APPEND("%s%.*s", sep, mlen, err->message);
    else
        APPEND("%s%s", sep, sdict_status_str(err->code));
#undef APPEND
    return buf;
}
