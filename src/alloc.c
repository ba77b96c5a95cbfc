/*
 alloc.c - the process-wide allocator hook, a growable byte buffer, the hash seed and small
 string helpers (copies, paths, suffixes).

 Every allocation the library makes goes through sdict__malloc/realloc/free so a test can
 install a counting allocator that fails the Nth call and drive each out-of-memory path.
 Zero-byte requests are rounded up to one byte: callers treat NULL as failure only.
*/
#define _DEFAULT_SOURCE /* getrandom */
#include "internal.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static void *libc_malloc(void *ctx, size_t n) {
    (void)ctx;
    return malloc(n);
}
static void *libc_realloc(void *ctx, void *p, size_t n) {
    (void)ctx;
    return realloc(p, n);
}
static void libc_free(void *ctx, void *p) {
    (void)ctx;
    free(p);
}

static sdict_allocator g_alloc = {libc_malloc, libc_realloc, libc_free, NULL};

void sdict_set_allocator(const sdict_allocator *alc) {
    if (alc && alc->malloc && alc->realloc && alc->free) {
        g_alloc = *alc;
    } else {
        g_alloc.malloc = libc_malloc;
        g_alloc.realloc = libc_realloc;
        g_alloc.free = libc_free;
        g_alloc.ctx = NULL;
    }
}

bool sdict__allocator_is_default(void) { return g_alloc.malloc == libc_malloc; }

void *sdict__malloc(size_t n) { return g_alloc.malloc(g_alloc.ctx, n ? n : 1); }

void *sdict__calloc(size_t count, size_t size) {
    uint64_t total;
    if (!sdict__mul_u64(count, size, &total) || total > SIZE_MAX)
        return NULL;
    /* With the default allocator use calloc: large blocks come zeroed from the kernel, so a
       storage that is about to be overwritten is not touched twice. */
    if (g_alloc.malloc == libc_malloc)
        return calloc(total ? (size_t)total : 1, 1);
    void *p = sdict__malloc((size_t)total);
    if (p)
        memset(p, 0, (size_t)total);
    return p;
}

void *sdict__realloc(void *p, size_t n) {
    if (!p)
        return sdict__malloc(n);
    return g_alloc.realloc(g_alloc.ctx, p, n ? n : 1);
}

void sdict__free(void *p) {
    if (p)
        g_alloc.free(g_alloc.ctx, p);
}

char *sdict__strndup(const char *s, size_t n) {
    if (n == SIZE_MAX)
        return NULL;
    char *d = sdict__malloc(n + 1);
    if (!d)
        return NULL;
    if (n)
        memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *sdict__path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    bool slash = a > 0 && dir[a - 1] != '/';
    char *p = sdict__malloc(a + slash + b + 1);
    if (!p)
        return NULL;
    memcpy(p, dir, a);
    if (slash)
        p[a] = '/';
    memcpy(p + a + slash, name, b + 1);
    return p;
}

bool sdict__ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

/*==================================================================================================
 MARK: Growable buffer
==================================================================================================*/

void sdict__buf_init(sdict__buf *b) {
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->oom = false;
}

void sdict__buf_free(sdict__buf *b) {
    sdict__free(b->data);
    sdict__buf_init(b);
}

/* Grows capacity to hold `extra` more bytes; doubles so appends are amortised O(1). */
static bool buf_reserve(sdict__buf *b, size_t extra) {
    if (b->oom)
        return false;
    if (extra <= b->cap - b->len)
        return true;
    if (extra > SIZE_MAX - b->len) {
        b->oom = true;
        return false;
    }
    size_t need = b->len + extra;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    uint8_t *p = sdict__realloc(b->data, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->data = p;
    b->cap = cap;
    return true;
}

void sdict__buf_append(sdict__buf *b, const void *p, size_t n) {
    if (n == 0 || !buf_reserve(b, n))
        return;
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

void sdict__buf_byte(sdict__buf *b, uint8_t c) { sdict__buf_append(b, &c, 1); }

void sdict__buf_le16(sdict__buf *b, uint16_t v) {
    uint8_t t[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    sdict__buf_append(b, t, 2);
}

void sdict__buf_le32(sdict__buf *b, uint32_t v) {
    uint8_t t[4];
    for (int i = 0; i < 4; i++)
        t[i] = (uint8_t)(v >> (8 * i));
    sdict__buf_append(b, t, 4);
}

void sdict__buf_le64(sdict__buf *b, uint64_t v) {
    uint8_t t[8];
    for (int i = 0; i < 8; i++)
        t[i] = (uint8_t)(v >> (8 * i));
    sdict__buf_append(b, t, 8);
}

sdict_status sdict__buf_status(const sdict__buf *b, sdict_error *err) {
    if (b->oom)
        return sdict__err(err, SDICT_E_NOMEM, NULL, -1, "out of memory growing a %zu-byte buffer",
                          b->len);
    return SDICT_OK;
}

/*==================================================================================================
 MARK: Hash seed
==================================================================================================*/

/* One random seed per process for every hash table the library keeps (dict and set indexes,
   the pickle memo's far slots, zip names, storage keys), so a file cannot choose keys that
   collide and make insertion quadratic. Drawn once from getrandom() (falling back to the
   clock, the process id and an address); set by compare-and-swap, so concurrent first calls
   agree. */
static _Atomic uint64_t g_hash_seed;

static uint64_t seed_mix(uint64_t x) {
    x ^= x >> 30;
    x *= UINT64_C(0xbf58476d1ce4e5b9);
    x ^= x >> 27;
    x *= UINT64_C(0x94d049bb133111eb);
    return x ^ (x >> 31);
}

uint64_t sdict__hash_seed(void) {
    uint64_t s = atomic_load_explicit(&g_hash_seed, memory_order_acquire);
    if (s)
        return s;
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        r = seed_mix((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30)) ^
            seed_mix((uint64_t)getpid()) ^ seed_mix((uint64_t)(uintptr_t)&r);
    }
    r |= 1; /* never 0, which means "not drawn yet" */
    uint64_t expected = 0;
    if (!atomic_compare_exchange_strong_explicit(&g_hash_seed, &expected, r,
                                                 memory_order_acq_rel, memory_order_acquire))
        return expected;
    return r;
}

uint64_t sdict__str_hash(const char *s) {
    uint64_t h = UINT64_C(1469598103934665603) ^ sdict__hash_seed();
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * UINT64_C(1099511628211);
    return h ^ (h >> 29);
}
