/*
 save.c - sdict_save / sdict_save_buffer: torch.save's zip layout and crash-safe replacement.

 Layouts (SDICT_SAVE_LAYOUT_TORCH2):
 - torch 1.13: <archive>/data.pkl, then <archive>/data/<key> for every storage with the keys
   sorted AS STRINGS ("0", "1", "10", "11", "2", ...: torch iterates a std::set/sorted list of
   key strings), then <archive>/version = "3\n" written last by writeEndOfFile.
 - torch >= 2.7 (checked against 2.14's torch.save): data.pkl, .format_version = "1" (storages
   in numeric key order), .storage_alignment = "64", byteorder = sys.byteorder, data/0, data/1,
   ... in first-seen (numeric) order, then writeEndOfFile's version = "3\n" and
   .data/serialization_id (see zip_write.c). A path that is not ASCII makes torch write through
   a Python file object, whose archive folder is "archive".
 The pickle is the same in both. Payloads go from storage memory straight to the zip writer
 (which streams them with their CRC), so saving never stages a copy of the tensor data.

 Crash safety: the archive is written to a new file beside the target (same directory, hence
 same filesystem, so rename is atomic), fsynced and closed, renamed over the target, and the
 directory is fsynced so the rename itself is durable. Until the rename the target is
 untouched; after it the target is the complete new file. A failure unlinks the temporary.
*/
#define _POSIX_C_SOURCE 200809L
#define _XOPEN_SOURCE 700 /* readlink, faccessat */

#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Writes are gathered into a buffer of this size so the many small zip headers cost one
   system call; payloads larger than it bypass the buffer. */
#define SAVE_WBUF (256u * 1024u)

/*==================================================================================================
 MARK: Archive name and record order
==================================================================================================*/

/* torch's basename() in inline_container.cc: text after the last '/' or '\\', with the part
   from the last '.' on removed ("ckpt.pth.tar" -> "ckpt.pth", ".pt" -> ""). */
static char *archive_name_from_path(const char *path) {
    size_t start = 0, len = strlen(path);
    for (size_t i = 0; i < len; i++)
        if (path[i] == '/' || path[i] == '\\')
            start = i + 1;
    size_t end = len;
    for (size_t i = len; i > start; i--) {
        if (path[i - 1] == '.') {
            end = i - 1;
            break;
        }
    }
    return sdict__strndup(path + start, end - start);
}

/* Orders storage indices by their decimal key text, as torch 1.13 writes data/<key>. */
static int key_cmp(const void *a, const void *b) {
    char ka[24], kb[24];
    snprintf(ka, sizeof ka, "%zu", *(const size_t *)a);
    snprintf(kb, sizeof kb, "%zu", *(const size_t *)b);
    return strcmp(ka, kb);
}

/* Checks the options a caller passed; NULL is the defaults. An archive name with a '/' would
   put the records one folder deeper than torch's reader looks (it takes the text before the
   first '/' of the first record as the archive name, then reads NAME/data.pkl); a name past
   SDICT_ARCHIVE_NAME_MAX bytes would not fit a zip record name with its suffix. */
#define SDICT_ARCHIVE_NAME_MAX 4096
static bool is_safetensors(const sdict_save_opts *opts) {
    return opts && opts->format == SDICT_FORMAT_SAFETENSORS;
}

static sdict_status check_opts(const sdict_save_opts *opts, sdict_error *err) {
    if (opts && (opts->flags & ~(uint32_t)(SDICT_SAVE_LAYOUT_TORCH2 |
                                           SDICT_SAVE_ALLOW_NOT_WEIGHTS_ONLY)))
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "unknown save flags 0x%x",
                          (unsigned)opts->flags);
    if (opts && opts->format != SDICT_FORMAT_NONE && opts->format != SDICT_FORMAT_ZIP &&
        opts->format != SDICT_FORMAT_SAFETENSORS)
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1,
                          "cannot save in format '%s': zip (torch.save) or safetensors",
                          sdict_format_name(opts->format));
    if (opts && opts->archive_name) {
        size_t n = strlen(opts->archive_name);
        if (strchr(opts->archive_name, '/'))
            return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1,
                              "archive name '%s' contains '/': torch.load reads the archive "
                              "folder as the text before the first '/' and would not find "
                              "its data.pkl",
                              opts->archive_name);
        if (n > SDICT_ARCHIVE_NAME_MAX)
            return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1,
                              "archive name of %zu bytes is longer than %d bytes", n,
                              SDICT_ARCHIVE_NAME_MAX);
    }
    return SDICT_OK;
}

/*
 Pickles root and streams the whole archive to write/ctx. The pickle is built in memory
 first (it is small: storages are persistent ids), then the records follow in torch's order.
*/
static sdict_status write_archive(const sdict_value *root, const char *archive_name,
                                  const sdict_save_opts *opts, sdict__write_fn write, void *ctx,
                                  sdict_error *err) {
    sdict__buf pkl;
    sdict__buf_init(&pkl);
    sdict__saved_storage *st = NULL;
    size_t n_st = 0;
    size_t *order = NULL;
    sdict__zip_writer *zw = NULL;
    bool torch2 = opts && (opts->flags & SDICT_SAVE_LAYOUT_TORCH2);

    sdict_status rc = sdict__pickle_write(root, opts ? opts->flags : 0, &pkl, &st, &n_st, err);
    if (rc)
        goto done;
    order = sdict__calloc(n_st ? n_st : 1, sizeof *order);
    if (!order) {
        rc = sdict__err(err, SDICT_E_NOMEM, NULL, -1, "out of memory ordering %zu storages", n_st);
        goto done;
    }
    for (size_t i = 0; i < n_st; i++)
        order[i] = i;
    if (!torch2)
        qsort(order, n_st, sizeof *order, key_cmp);

    if ((rc = sdict__zip_writer_new(write, ctx, archive_name, &zw, err)))
        goto done;
    if ((rc = sdict__zip_writer_add(zw, "data.pkl", pkl.data, pkl.len, err)))
        goto done;
    if (torch2) {
        const uint16_t one = 1;
        uint8_t first;
        memcpy(&first, &one, 1);
        const char *byteorder = first ? "little" : "big";
        if ((rc = sdict__zip_writer_add(zw, ".format_version", "1", 1, err)) ||
            (rc = sdict__zip_writer_add(zw, ".storage_alignment", "64", 2, err)) ||
            (rc = sdict__zip_writer_add(zw, "byteorder", byteorder, strlen(byteorder), err)))
            goto done;
    }
    for (size_t i = 0; i < n_st; i++) {
        const sdict__saved_storage *s = &st[order[i]];
        char rel[32];
        snprintf(rel, sizeof rel, "data/%zu", order[i]);
        const void *data = s->nbytes ? sdict_storage_data(s->storage) : NULL;
        if ((rc = sdict__zip_writer_add(zw, rel, data, s->nbytes, err)))
            goto done;
    }
    if ((rc = sdict__zip_writer_add(zw, "version", "3\n", 2, err)))
        goto done;
    if (torch2) {
        char id[41];
        if ((rc = sdict__zip_writer_serialization_id(zw, id, err)) ||
            (rc = sdict__zip_writer_add(zw, ".data/serialization_id", id, 40, err)))
            goto done;
    }
    rc = sdict__zip_writer_finish(zw, err);

done:
    sdict__zip_writer_free(zw);
    sdict__free(order);
    sdict__free(st);
    sdict__buf_free(&pkl);
    return rc;
}

/*==================================================================================================
 MARK: File sink
==================================================================================================*/

typedef struct file_sink {
    int fd;
    const char *name;  /* the temporary file, for messages */
    uint64_t offset;   /* bytes handed to write(2) so far */
    uint8_t *buf;
    size_t len;
} file_sink;

static sdict_status io_err(sdict_error *err, int64_t offset, const char *what, const char *name,
                           int e) {
    char text[128];
    if (strerror_r(e, text, sizeof text) != 0)
        snprintf(text, sizeof text, "errno %d", e);
    /* a long name is shortened in the middle so that the errno text always fits the message
       (err->file holds the path given) */
    size_t n = strlen(name);
    if (n > 150)
        return sdict__err(err, SDICT_E_IO, NULL, offset, "%s '%.80s...%s': %s", what, name,
                          name + n - 60, text);
    return sdict__err(err, SDICT_E_IO, NULL, offset, "%s '%s': %s", what, name, text);
}

/* write(2) until everything is out: retries short writes and EINTR. */
static sdict_status write_fully(file_sink *f, const uint8_t *p, size_t n, sdict_error *err) {
    while (n) {
        size_t chunk = n > (size_t)SSIZE_MAX ? (size_t)SSIZE_MAX : n;
        if (chunk > ((size_t)1 << 30))
            chunk = (size_t)1 << 30; /* Linux writes at most ~2 GiB per call anyway */
        ssize_t k = write(f->fd, p, chunk);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return io_err(err, (int64_t)f->offset, "write", f->name, errno);
        }
        if (k == 0)
            return io_err(err, (int64_t)f->offset, "write", f->name, EIO);
        p += k;
        n -= (size_t)k;
        f->offset += (uint64_t)k;
    }
    return SDICT_OK;
}

static sdict_status file_flush(file_sink *f, sdict_error *err) {
    sdict_status rc = write_fully(f, f->buf, f->len, err);
    f->len = 0;
    return rc;
}

static sdict_status file_write(void *ctx, const void *p, size_t n, sdict_error *err) {
    file_sink *f = ctx;
    if (n <= SAVE_WBUF - f->len) {
        if (n)
            memcpy(f->buf + f->len, p, n);
        f->len += n;
        return SDICT_OK;
    }
    sdict_status rc = file_flush(f, err);
    if (rc)
        return rc;
    if (n < SAVE_WBUF) {
        memcpy(f->buf, p, n);
        f->len = n;
        return SDICT_OK;
    }
    return write_fully(f, p, n, err);
}

/*==================================================================================================
 MARK: sdict_save
==================================================================================================*/

/*
 Creates "<dir>/.sdict-<pid>-<nanos>.sdtmp" with O_CREAT|O_EXCL, retrying with a new name when
 one exists. Time plus pid makes collisions unlikely; O_EXCL makes them harmless. The name is
 short and does not contain the target's, so any name the filesystem allows for the target
 (up to NAME_MAX bytes) can be saved.
*/
static sdict_status open_temp(const char *path, size_t dir_len, char **tmp_out, int *fd_out,
                              sdict_error *err) {
    size_t cap = dir_len + 64;
    char *tmp = sdict__malloc(cap);
    if (!tmp)
        return sdict__err(err, SDICT_E_NOMEM, NULL, -1, "out of memory");
    for (unsigned attempt = 0; attempt < 100; attempt++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        snprintf(tmp, cap, "%.*s.sdict-%ld-%09ld%02u.sdtmp", (int)dir_len, path, (long)getpid(),
                 (long)ts.tv_nsec, attempt);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0) {
            *tmp_out = tmp;
            *fd_out = fd;
            return SDICT_OK;
        }
        if (errno == EINTR || errno == EEXIST)
            continue;
        sdict_status rc = io_err(err, -1, "create a temporary file beside", path, errno);
        sdict__free(tmp);
        return rc;
    }
    sdict_status rc = sdict__err(err, SDICT_E_IO, NULL, -1,
                                 "could not create a unique temporary file beside '%s'", path);
    sdict__free(tmp);
    return rc;
}

/*
 The file a save to path writes: path itself, or, when path is a symbolic link, the file at
 the end of its chain of links (relative links resolved against their own folder), whether
 or not that file exists yet. open(path, 'wb') in torch.save follows links the same way,
 creating the target of a dangling link. More than 40 links (Linux's limit) is ELOOP.
*/
static sdict_status resolve_links(const char *path, char **out, sdict_error *err) {
    char *cur = sdict__strndup(path, strlen(path));
    char *link = sdict__malloc(PATH_MAX);
    sdict_status rc = SDICT_OK;
    if (!cur || !link) {
        rc = sdict__err(err, SDICT_E_NOMEM, NULL, -1, "out of memory");
        goto done;
    }
    for (int hops = 0;; hops++) {
        struct stat sb;
        if (lstat(cur, &sb) != 0 || !S_ISLNK(sb.st_mode))
            break; /* a file, or nothing yet: open() would create it here */
        if (hops == 40) {
            rc = io_err(err, -1, "follow the symbolic links of", path, ELOOP);
            goto done;
        }
        ssize_t n = readlink(cur, link, PATH_MAX);
        if (n < 0 || n >= PATH_MAX) {
            rc = io_err(err, -1, "read the symbolic link", cur, n < 0 ? errno : ENAMETOOLONG);
            goto done;
        }
        size_t dir_len = 0;
        if (link[0] != '/')
            for (const char *p = cur; *p; p++)
                if (*p == '/')
                    dir_len = (size_t)(p - cur) + 1;
        char *next = sdict__malloc(dir_len + (size_t)n + 1);
        if (!next) {
            rc = sdict__err(err, SDICT_E_NOMEM, NULL, -1, "out of memory");
            goto done;
        }
        memcpy(next, cur, dir_len);
        memcpy(next + dir_len, link, (size_t)n);
        next[dir_len + (size_t)n] = '\0';
        sdict__free(cur);
        cur = next;
    }
done:
    sdict__free(link);
    if (rc) {
        sdict__free(cur);
        cur = NULL;
    }
    *out = cur;
    return rc;
}

/* fsync of the directory (its name made before the rename: nothing after the rename may fail
   for want of memory) holding the renamed file, so the new name survives a power loss.
   Filesystems that cannot fsync a directory (EINVAL) are accepted. */
static sdict_status sync_dir(const char *dir, sdict_error *err) {
    sdict_status rc = SDICT_OK;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        rc = io_err(err, -1, "open directory", dir, errno);
    } else {
        if (fsync(fd) != 0 && errno != EINVAL)
            rc = io_err(err, -1, "fsync directory", dir, errno);
        close(fd);
    }
    return rc;
}

/* sdict_save, or with raw != NULL (root NULL) the raw_n bytes at raw written as the file. */
static sdict_status save_file(const char *path, const sdict_value *root,
                              const sdict_save_opts *opts, const void *raw, size_t raw_n,
                              sdict__produce_fn produce, void *pctx, sdict_error *err) {
    if (!path || (!root && !raw && !produce)) {
        sdict__err_file(err, path ? path : "");
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "NULL %s", path ? "root" : "path");
    }
    if (!path[0] || path[strlen(path) - 1] == '/') {
        sdict__err_file(err, path);
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "path names a directory, not a file");
    }

    /* The archive folder comes from the name given, as in torch; the file replaced is the one
       a symbolic link points to (torch writes through links), and anything that exists but
       is not a regular file (a device such as /dev/null, a FIFO, a directory) is refused:
       renaming over it would replace the device node itself. */
    sdict_status rc = check_opts(opts, err);
    if (rc) {
        sdict__err_file(err, path);
        return rc;
    }
    bool ascii = true;
    for (const char *p = path; *p; p++)
        ascii = ascii && (unsigned char)*p < 0x80;
    char *archive = opts && opts->archive_name
                        ? sdict__strndup(opts->archive_name, strlen(opts->archive_name))
                    : opts && (opts->flags & SDICT_SAVE_LAYOUT_TORCH2) && !ascii
                        ? sdict__strndup("archive", 7)
                        : archive_name_from_path(path);
    file_sink f = {-1, NULL, 0, sdict__malloc(SAVE_WBUF), 0};
    char *tmp = NULL, *target = NULL, *dir = NULL;
    struct stat sb;
    bool exists = false;
    if (!archive || !f.buf) {
        rc = sdict__err(err, SDICT_E_NOMEM, NULL, -1, "out of memory");
        goto fail;
    }
    if ((rc = resolve_links(path, &target, err)))
        goto fail;
    if (stat(target, &sb) == 0) {
        if (!S_ISREG(sb.st_mode)) {
            rc = sdict__err(err, SDICT_E_IO, NULL, -1,
                            "'%s' exists and is not a regular file; refusing to replace it",
                            target);
            goto fail;
        }
        /* torch.save's open(path, 'wb') fails on a file the caller may not write; renaming
           over it would replace it anyway (the folder's permission is what rename needs) */
        if (faccessat(AT_FDCWD, target, W_OK, AT_EACCESS) != 0) {
            rc = io_err(err, -1, "open for writing (the file is left as it was)", target, errno);
            goto fail;
        }
        exists = true;
    }
    size_t dir_len = 0;
    for (const char *p = target; *p; p++)
        if (*p == '/')
            dir_len = (size_t)(p - target) + 1;
    dir = dir_len ? sdict__strndup(target, dir_len) : sdict__strndup(".", 1);
    if (!dir) {
        rc = sdict__err(err, SDICT_E_NOMEM, NULL, -1, "out of memory");
        goto fail;
    }
    if ((rc = open_temp(target, dir_len, &tmp, &f.fd, err)))
        goto fail;
    f.name = tmp;

    /* Keep the permissions and owner of the file being replaced (torch overwrites in place,
       so they survive); a new file gets 0666 minus the umask, as open() in torch would. The
       owner can only be kept by root; otherwise it is the caller, as for any new file. */
    if (exists) {
        (void)fchmod(f.fd, sb.st_mode & 07777);
        if (sb.st_uid != geteuid() || sb.st_gid != getegid())
            (void)!fchown(f.fd, sb.st_uid, sb.st_gid);
    }

    if ((rc = produce               ? produce(pctx, file_write, &f, err)
              : raw                 ? file_write(&f, raw, raw_n, err)
              : is_safetensors(opts) ? sdict__st_write(root, opts, file_write, &f, err)
                                     : write_archive(root, archive, opts, file_write, &f, err)))
        goto fail;
    if ((rc = file_flush(&f, err)))
        goto fail;
    while (fsync(f.fd) != 0) {
        if (errno != EINTR) {
            rc = io_err(err, -1, "fsync", tmp, errno);
            goto fail;
        }
    }
    int fd = f.fd;
    f.fd = -1;
    if (close(fd) != 0 && errno != EINTR) {
        rc = io_err(err, -1, "close", tmp, errno);
        goto fail;
    }
    if (rename(tmp, target) != 0) {
        rc = io_err(err, -1, "rename temporary file over", target, errno);
        goto fail;
    }
    sdict__free(tmp);
    tmp = NULL;
    rc = sync_dir(dir, err);
    if (rc)
        goto fail;
    sdict__free(dir);
    sdict__free(target);
    sdict__free(f.buf);
    sdict__free(archive);
    return SDICT_OK;

fail:
    if (f.fd >= 0)
        close(f.fd);
    if (tmp) {
        unlink(tmp);
        sdict__free(tmp);
    }
    sdict__free(dir);
    sdict__free(target);
    sdict__free(f.buf);
    sdict__free(archive);
    sdict__err_file(err, path);
    return rc;
}

sdict_status sdict_save(const char *path, const sdict_value *root, const sdict_save_opts *opts,
                        sdict_error *err) {
    return save_file(path, root, opts, NULL, 0, NULL, NULL, err);
}

sdict_status sdict__save_bytes(const char *path, const void *data, size_t n, sdict_error *err) {
    static const uint8_t empty[1] = {0};
    return save_file(path, NULL, NULL, data ? data : empty, n, NULL, NULL, err);
}

sdict_status sdict__save_stream(const char *path, sdict__produce_fn produce, void *pctx,
                                sdict_error *err) {
    return save_file(path, NULL, NULL, NULL, 0, produce, pctx, err);
}

sdict_status sdict__write_archive(const sdict_value *root, const char *archive_name,
                                  const sdict_save_opts *opts, sdict__write_fn write, void *ctx,
                                  sdict_error *err) {
    sdict_status rc = check_opts(opts, err);
    return rc ? rc : write_archive(root, archive_name, opts, write, ctx, err);
}

/*==================================================================================================
 MARK: sdict_save_buffer
==================================================================================================*/

static sdict_status buf_write(void *ctx, const void *p, size_t n, sdict_error *err) {
    sdict__buf *b = ctx;
    sdict__buf_append(b, p, n);
    return sdict__buf_status(b, err);
}

sdict_status sdict_save_buffer(const sdict_value *root, const sdict_save_opts *opts,
                               void **out_data, size_t *out_size, sdict_error *err) {
    if (out_data)
        *out_data = NULL;
    if (out_size)
        *out_size = 0;
    if (!root || !out_data || !out_size) {
        sdict__err_file(err, "");
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "NULL argument");
    }
    sdict_status rc = check_opts(opts, err);
    if (rc) {
        sdict__err_file(err, "");
        return rc;
    }
    const char *archive = opts && opts->archive_name ? opts->archive_name : "archive";
    sdict__buf b;
    sdict__buf_init(&b);
    rc = is_safetensors(opts) ? sdict__st_write(root, opts, buf_write, &b, err)
                              : write_archive(root, archive, opts, buf_write, &b, err);
    if (rc) {
        sdict__buf_free(&b);
        sdict__err_file(err, "");
        return rc;
    }
    *out_data = b.data;
    *out_size = b.len;
    return SDICT_OK;
}

void sdict_free_buffer(void *data) { sdict__free(data); }
