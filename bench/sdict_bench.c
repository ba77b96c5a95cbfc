/*
 sdict_bench.c - timing driver for bench/run, on the public API only. Each mode does one thing
 and prints one line "MODE ms=<milliseconds> [extra]" (wall time of the measured part only):

   load-mmap FILE     sdict_load (mapped) and read every tensor's data pointer
   load-copy FILE     sdict_load with SDICT_LOAD_COPY (all bytes into owned memory)
   touch-mmap FILE    load mapped and read one byte per page of every tensor (pages faulted in)
   extract FILE       a whole pickled model (torch.save(model)): sdict_load with SDICT_LOAD_INERT
                      (mapped), sdict_object_state_dict of the root, and every tensor's pointer
   save IN OUT        load IN (mapped, untimed), then time sdict_save to OUT (fsync included)
   save2 IN OUT       the same with SDICT_SAVE_LAYOUT_TORCH2 (torch 2.x's records and id)
   write FILE BYTES   plain large write()s of BYTES bytes + fsync: the physical limit for save
   memcpy FILE        read FILE into memory (untimed), then time one memcpy of the same bytes
   read-fresh FILE    read FILE with large pread()s into newly mapped memory (pre-faulted with
                      MAP_POPULATE): the limit for any load that ends with the bytes in new memory
*/
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS, MAP_POPULATE */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "statedict.h"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void die(const char *what, const sdict_error *err) {
    char buf[1024];
    fprintf(stderr, "sdict_bench: %s: %s\n", what, err ? sdict_error_format(err, buf, sizeof buf) : "");
    exit(1);
}

/* Visits every tensor reachable from v; returns the count. touch: read one byte per 4 KiB page. */
static long visit(const sdict_value *v, int touch, volatile unsigned char *sink) {
    long n = 0;
    switch (sdict_value_kind(v)) {
    case SDICT_KIND_TENSOR: {
        const sdict_tensor *t = sdict_value_tensor(v);
        const unsigned char *p = sdict_tensor_data(t);
        if (touch && p)
            for (size_t i = 0; i < sdict_tensor_nbytes(t); i += 4096)
                *sink ^= p[i];
        else if (p)
            *sink ^= (unsigned char)(uintptr_t)p;
        return 1;
    }
    case SDICT_KIND_DICT:
        for (size_t i = 0; i < sdict_dict_len(v); i++)
            n += visit(sdict_dict_val(v, i), touch, sink);
        return n;
    case SDICT_KIND_LIST:
    case SDICT_KIND_TUPLE:
        for (size_t i = 0; i < sdict_seq_len(v); i++)
            n += visit(sdict_seq_item(v, i), touch, sink);
        return n;
    default:
        return 0;
    }
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: sdict_bench MODE FILE [ARG]\n");
        return 2;
    }
    const char *mode = argv[1], *file = argv[2];
    sdict_error err;
    volatile unsigned char sink = 0;
    if (!strcmp(mode, "load-mmap") || !strcmp(mode, "load-copy") || !strcmp(mode, "touch-mmap")) {
        sdict_load_opts o = {.flags = !strcmp(mode, "load-copy") ? SDICT_LOAD_COPY : 0};
        double t0 = now_ms();
        sdict_doc *doc = NULL;
        if (sdict_load(file, &o, &doc, &err) != SDICT_OK)
            die("load", &err);
        long n = visit(sdict_doc_root(doc), !strcmp(mode, "touch-mmap"), &sink);
        double t1 = now_ms();
        sdict_doc_free(doc);
        printf("%s ms=%.3f tensors=%ld\n", mode, t1 - t0, n);
    } else if (!strcmp(mode, "extract")) {
        sdict_load_opts o = {.flags = SDICT_LOAD_INERT};
        double t0 = now_ms();
        sdict_doc *doc = NULL;
        sdict_value *sd = NULL;
        if (sdict_load(file, &o, &doc, &err) != SDICT_OK)
            die("load", &err);
        if (sdict_object_state_dict(sdict_doc_root(doc), &sd, &err) != SDICT_OK)
            die("state_dict", &err);
        long n = visit(sd, 0, &sink);
        double t1 = now_ms();
        sdict_doc_free(doc);
        printf("%s ms=%.3f tensors=%ld\n", mode, t1 - t0, n);
    } else if ((!strcmp(mode, "save") || !strcmp(mode, "save2")) && argc >= 4) {
        sdict_doc *doc = NULL;
        if (sdict_load(file, NULL, &doc, &err) != SDICT_OK)
            die("load", &err);
        sdict_save_opts opts = {.archive_name = NULL, .flags = !strcmp(mode, "save2") ? (uint32_t)SDICT_SAVE_LAYOUT_TORCH2 : 0u};
        double t0 = now_ms();
        if (sdict_save(argv[3], sdict_doc_root(doc), &opts, &err) != SDICT_OK)
            die("save", &err);
        double t1 = now_ms();
        sdict_doc_free(doc);
        printf("%s ms=%.3f\n", mode, t1 - t0);
    } else if (!strcmp(mode, "write") && argc >= 4) {
        size_t total = strtoull(argv[3], NULL, 10), chunk = 8u << 20;
        char *buf = malloc(chunk);
        memset(buf, 1, chunk);
        double t0 = now_ms();
        int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0)
            die("open", NULL);
        for (size_t done = 0; done < total;) {
            size_t k = total - done < chunk ? total - done : chunk;
            ssize_t w = write(fd, buf, k);
            if (w <= 0)
                die("write", NULL);
            done += (size_t)w;
        }
        fsync(fd);
        close(fd);
        double t1 = now_ms();
        free(buf);
        printf("write ms=%.3f\n", t1 - t0);
    } else if (!strcmp(mode, "read-fresh")) {
        double t0 = now_ms();
        int fd = open(file, O_RDONLY);
        off_t n = fd < 0 ? -1 : lseek(fd, 0, SEEK_END);
        if (n <= 0)
            die("open", NULL);
        char *p = mmap(NULL, (size_t)n, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
        if (p == MAP_FAILED)
            die("mmap", NULL);
        for (size_t done = 0; done < (size_t)n;) {
            size_t k = (size_t)n - done < (1u << 30) ? (size_t)n - done : (1u << 30);
            ssize_t r = pread(fd, p + done, k, (off_t)done);
            if (r <= 0)
                die("pread", NULL);
            done += (size_t)r;
        }
        double t1 = now_ms();
        sink ^= (unsigned char)p[n / 2];
        munmap(p, (size_t)n);
        close(fd);
        printf("read-fresh ms=%.3f\n", t1 - t0);
    } else if (!strcmp(mode, "memcpy")) {
        FILE *f = fopen(file, "rb");
        if (!f)
            die("open", NULL);
        fseek(f, 0, SEEK_END);
        size_t n = (size_t)ftell(f);
        fseek(f, 0, SEEK_SET);
        char *a = malloc(n), *b = malloc(n);
        if (!a || !b || fread(a, 1, n, f) != n)
            die("read", NULL);
        fclose(f);
        memset(b, 0, n); /* fault the destination in first: measure the copy, not page faults */
        double t0 = now_ms();
        memcpy(b, a, n);
        double t1 = now_ms();
        sink ^= (unsigned char)b[n / 2];
        printf("memcpy ms=%.3f\n", t1 - t0);
        free(a);
        free(b);
    } else {
        fprintf(stderr, "sdict_bench: unknown mode %s\n", mode);
        return 2;
    }
    return sink == 255 ? 0 : 0;
}
