/*
 storage.c - reference-counted storages, whole-file mappings, and the read-at-offset source
 the container readers sit on.

 A storage has one of three backings:
   owned    heap bytes from the allocator, freed on the last release (large blocks under the
            default allocator come straight from mmap, pre-faulted: see owned_bytes);
   mapped   a window into an sdict__mapping, which it keeps a reference to;
   wrapped  caller memory, handed back through the caller's release hook exactly once.
 Files are mapped PROT_READ|PROT_WRITE with MAP_PRIVATE as torch's mmap=True does: the file is
 never modified, and writes to a tensor copy the touched page.
*/
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS, MAP_POPULATE */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/*==================================================================================================
 MARK: Mappings
==================================================================================================*/

struct sdict__mapping {
    atomic_size_t refs;
    void *base;
    size_t size;
};

sdict__mapping *sdict__mapping_retain(sdict__mapping *m) {
    if (m)
        atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
    return m;
}

void sdict__mapping_release(sdict__mapping *m) {
    if (!m)
        return;
    if (atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) != 1)
        return;
    munmap(m->base, m->size);
    sdict__free(m);
}

const uint8_t *sdict__mapping_base(const sdict__mapping *m) {
    return m ? (const uint8_t *)m->base : NULL;
}

/*==================================================================================================
 MARK: Storages
==================================================================================================*/

typedef enum backing { BACKING_OWNED, BACKING_MAPPED, BACKING_WRAPPED } backing;

struct sdict_storage {
    atomic_size_t refs;
    backing kind;
    uint8_t *data;
    size_t nbytes;
    sdict__mapping *mapping;            /* BACKING_MAPPED */
    void (*release)(void *ctx, void *data); /* BACKING_WRAPPED, may be NULL */
    void *release_ctx;
    char *key;                          /* key in the file it came from, or NULL */
    char *location;                     /* location tag it was saved with, or NULL (cpu) */
    bool anon_mapped;                   /* BACKING_OWNED bytes from owned_bytes' mmap path */
};

static sdict_storage *storage_alloc(backing kind) {
    sdict_storage *s = sdict__malloc(sizeof *s);
    if (!s)
        return NULL;
    atomic_init(&s->refs, 1);
    s->kind = kind;
    s->data = NULL;
    s->nbytes = 0;
    s->mapping = NULL;
    s->release = NULL;
    s->release_ctx = NULL;
    s->key = NULL;
    s->location = NULL;
    s->anon_mapped = false;
    return s;
}

/* Zero-filled bytes for an owned storage. A storage is normally filled right after (a copy
   load reads the record into it), and for large blocks the cost is then the page faults, one
   per 4 KiB page: taking them in one MAP_POPULATE call, with transparent huge pages where the
   kernel offers them, roughly halves a copy load. Only with the default allocator: a custom
   one (the tests' failing allocator) sees every byte the library takes. */
#define SDICT_ANON_MMAP_MIN (4u << 20)
static void *owned_bytes(size_t nbytes, bool *anon_mapped) {
    *anon_mapped = false;
    if (nbytes >= SDICT_ANON_MMAP_MIN && sdict__allocator_is_default()) {
        int flags = MAP_PRIVATE | MAP_ANONYMOUS;
#ifdef MAP_POPULATE
        flags |= MAP_POPULATE;
#endif
        void *p = mmap(NULL, nbytes, PROT_READ | PROT_WRITE, flags, -1, 0);
        if (p != MAP_FAILED) {
            *anon_mapped = true;
            return p;
        }
    }
    return sdict__calloc(nbytes, 1);
}

sdict_status sdict_storage_new(size_t nbytes, sdict_storage **out, sdict_error *err) {
    if (!out)
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "out is NULL");
    *out = NULL;
    sdict_storage *s = storage_alloc(BACKING_OWNED);
    if (!s)
        return sdict__err(err, SDICT_E_NOMEM, NULL, -1, "out of memory for a storage");
    if (nbytes) {
        s->data = owned_bytes(nbytes, &s->anon_mapped);
        if (!s->data) {
            sdict__free(s);
            return sdict__err(err, SDICT_E_NOMEM, NULL, -1,
                              "out of memory for a storage of %zu bytes", nbytes);
        }
    }
    s->nbytes = nbytes;
    *out = s;
    return SDICT_OK;
}

sdict_status sdict_storage_wrap(void *data, size_t nbytes, void (*release)(void *ctx, void *data),
                                void *ctx, sdict_storage **out, sdict_error *err) {
    if (!out)
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "out is NULL");
    *out = NULL;
    if (!data && nbytes > 0)
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1,
                          "wrapping NULL data of %zu bytes", nbytes);
    sdict_storage *s = storage_alloc(BACKING_WRAPPED);
    if (!s)
        return sdict__err(err, SDICT_E_NOMEM, NULL, -1, "out of memory for a storage");
    s->data = data;
    s->nbytes = nbytes;
    s->release = release;
    s->release_ctx = ctx;
    *out = s;
    return SDICT_OK;
}

sdict_status sdict__storage_new_mapped(sdict__mapping *m, uint64_t off, size_t nbytes,
                                       sdict_storage **out, sdict_error *err) {
    if (!out)
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "out is NULL");
    *out = NULL;
    if (!m || off > m->size || nbytes > m->size - off)
        return sdict__err(err, SDICT_E_STORAGE, NULL, (int64_t)off,
                          "mapped storage of %zu bytes at offset %llu lies outside the "
                          "%zu-byte file", nbytes, (unsigned long long)off, m ? m->size : 0);
    sdict_storage *s = storage_alloc(BACKING_MAPPED);
    if (!s)
        return sdict__err(err, SDICT_E_NOMEM, NULL, -1, "out of memory for a storage");
    s->data = (uint8_t *)m->base + off;
    s->nbytes = nbytes;
    s->mapping = sdict__mapping_retain(m);
    *out = s;
    return SDICT_OK;
}

sdict_status sdict__storage_set_key(sdict_storage *s, const char *key, sdict_error *err) {
    if (!s)
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "storage is NULL");
    char *k = NULL;
    if (key) {
        k = sdict__strndup(key, strlen(key));
        if (!k)
            return sdict__err(err, SDICT_E_NOMEM, NULL, -1, "out of memory for a storage key");
    }
    sdict__free(s->key);
    s->key = k;
    return SDICT_OK;
}

sdict_storage *sdict_storage_retain(sdict_storage *s) {
    if (s)
        atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

void sdict_storage_release(sdict_storage *s) {
    if (!s)
        return;
    if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    switch (s->kind) {
    case BACKING_OWNED:
        if (s->anon_mapped)
            munmap(s->data, s->nbytes);
        else
            sdict__free(s->data);
        break;
    case BACKING_MAPPED:
        sdict__mapping_release(s->mapping);
        break;
    case BACKING_WRAPPED:
        if (s->release)
            s->release(s->release_ctx, s->data);
        break;
    }
    sdict__free(s->key);
    sdict__free(s->location);
    sdict__free(s);
}

void *sdict_storage_data(const sdict_storage *s) {
    return s && s->nbytes ? s->data : NULL;
}

size_t sdict_storage_nbytes(const sdict_storage *s) { return s ? s->nbytes : 0; }

bool sdict_storage_is_mapped(const sdict_storage *s) { return s && s->kind == BACKING_MAPPED; }

const char *sdict_storage_key(const sdict_storage *s) { return s ? s->key : NULL; }

sdict_status sdict__storage_set_location(sdict_storage *s, const char *tag, size_t len,
                                         sdict_error *err) {
    if (!s)
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "storage is NULL");
    char *t = NULL;
    if (tag && !(len == 3 && memcmp(tag, "cpu", 3) == 0)) { /* "cpu" is the default: no copy */
        t = sdict__strndup(tag, len);
        if (!t)
            return sdict__err(err, SDICT_E_NOMEM, NULL, -1, "out of memory for a location tag");
    }
    sdict__free(s->location);
    s->location = t;
    return SDICT_OK;
}

const char *sdict_storage_location(const sdict_storage *s) {
    return s && s->location ? s->location : "cpu";
}

/*==================================================================================================
 MARK: Sources
==================================================================================================*/

static sdict_status io_err(sdict_error *err, const char *what, const char *path, int e) {
    return sdict__err(err, SDICT_E_IO, NULL, -1, "%s %s: %s", what, path, strerror(e));
}

sdict_status sdict__source_open_file(sdict__source *src, const char *path, bool map,
                                     sdict_error *err) {
    src->name = path;
    src->fd = -1;
    src->data = NULL;
    src->size = 0;
    src->mapping = NULL;
    if (!path)
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "path is NULL");
    int fd;
    do {
        /* O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below) */
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return io_err(err, "cannot open", path, errno);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return io_err(err, "cannot stat", path, e);
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return io_err(err, "cannot read", path, EISDIR);
    }
    if (!S_ISREG(st.st_mode)) {
        /* FIFOs, sockets and devices: torch.load needs a seekable file too, and a device such
           as /dev/zero has no end to check sizes against */
        close(fd);
        return sdict__err(err, SDICT_E_IO, NULL, -1, "%s is not a regular file", path);
    }
    src->fd = fd;
    src->size = st.st_size > 0 ? (uint64_t)st.st_size : 0;
    if (!map || src->size == 0 || src->size > SIZE_MAX)
        return SDICT_OK;

    sdict__mapping *m = sdict__malloc(sizeof *m);
    if (!m) {
        sdict__source_close(src);
        return sdict__err(err, SDICT_E_NOMEM, NULL, -1, "out of memory for a file mapping");
    }
    void *base = mmap(NULL, (size_t)src->size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    /* A private writable mapping is charged against the commit limit; a file larger than
       memory and swap is refused that way under the kernel's heuristic overcommit, so it is
       mapped without a reservation (pages written to are then backed on demand). */
    if (base == MAP_FAILED)
        base = mmap(NULL, (size_t)src->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE,
                    fd, 0);
    if (base == MAP_FAILED) {
        /* Some filesystems cannot map; reading with pread still works. */
        sdict__free(m);
        return SDICT_OK;
    }
    atomic_init(&m->refs, 1);
    m->base = base;
    m->size = (size_t)src->size;
    src->mapping = m;
    src->data = base;
    /* The mapping stays valid after close; reads go through it, so the fd is not needed. */
    close(fd);
    src->fd = -1;
    return SDICT_OK;
}

void sdict__source_init_mem(sdict__source *src, const void *data, size_t size, const char *name) {
    src->name = name ? name : "";
    src->fd = -1;
    src->data = data;
    src->size = data ? size : 0;
    src->mapping = NULL;
}

void sdict__source_close(sdict__source *src) {
    if (!src)
        return;
    if (src->fd >= 0)
        close(src->fd);
    src->fd = -1;
    sdict__mapping_release(src->mapping);
    src->mapping = NULL;
    src->data = NULL;
    src->size = 0;
}

sdict_status sdict__source_read(const sdict__source *src, uint64_t off, void *dst, size_t n,
                                const char *record, sdict_error *err) {
    if (off > src->size || n > src->size - off)
        return sdict__err(err, SDICT_E_TRUNCATED, record, (int64_t)(off > INT64_MAX ? -1 : (int64_t)off),
                          "need %zu bytes at file offset %llu but the input has %llu bytes", n,
                          (unsigned long long)off, (unsigned long long)src->size);
    if (n == 0)
        return SDICT_OK;
    if (src->data) {
        memcpy(dst, src->data + off, n);
        return SDICT_OK;
    }
    if (src->fd < 0)
        return sdict__err(err, SDICT_E_IO, record, (int64_t)off, "source is closed");
    uint8_t *p = dst;
    size_t done = 0;
    while (done < n) {
        size_t chunk = n - done;
        if (chunk > (size_t)1 << 30)
            chunk = (size_t)1 << 30;
        ssize_t r = pread(src->fd, p + done, chunk, (off_t)(off + done));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return sdict__err(err, SDICT_E_IO, record, (int64_t)(off + done), "read %s: %s",
                              src->name ? src->name : "", strerror(errno));
        }
        if (r == 0) /* the file shrank after we sized it */
            return sdict__err(err, SDICT_E_TRUNCATED, record, (int64_t)(off + done),
                              "file ended after %llu of %zu bytes at offset %llu",
                              (unsigned long long)done, n, (unsigned long long)off);
        done += (size_t)r;
    }
    return SDICT_OK;
}
