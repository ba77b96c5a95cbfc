/*
 test_pytype.c - values keep their Python type through sdict_load and sdict_save, what torch's
 weights-only unpickler refuses is refused, and the torch 2.x layout.

 - torch.Size, frozenset, bytearray and numpy scalars/arrays read from pickles report their
   sdict_pytype and are pickled back as that type;
 - numpy: pickles torch.save wrote (torch 1.13 with numpy 1.24, torch 2.14 with numpy 2.4;
   bytes captured from real runs) are loaded and pickled again byte for byte;
 - refusals: numpy values, frozensets and ints past 255 bytes without
   SDICT_SAVE_ALLOW_NOT_WEIGHTS_ONLY, naming the value's path; unknown flags;
 - the torch 2.x layout: record order and contents, and the serialization id torch 2.14 wrote
   for the same tensors; a non-ASCII path names the archive folder "archive".
*/
#define _POSIX_C_SOURCE 200809L

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../src/internal.h"

/*==================================================================================================
 MARK: Helpers
==================================================================================================*/

static sdict_status buf_sink(void *ctx, const void *p, size_t n, sdict_error *err) {
    sdict__buf_append(ctx, p, n);
    return sdict__buf_status(ctx, err);
}

/* A torch 1.13-style archive "archive/" holding pkl as data.pkl, loaded into a doc. */
static sdict_doc *load_pickle(const void *pkl, size_t n) {
    sdict__buf zip;
    sdict__buf_init(&zip);
    sdict__zip_writer *w = NULL;
    sdict_error err;
    assert_int_equal(sdict__zip_writer_new(buf_sink, &zip, "archive", &w, &err), SDICT_OK);
    assert_int_equal(sdict__zip_writer_add(w, "data.pkl", pkl, n, &err), SDICT_OK);
    assert_int_equal(sdict__zip_writer_add(w, "version", "3\n", 2, &err), SDICT_OK);
    assert_int_equal(sdict__zip_writer_finish(w, &err), SDICT_OK);
    sdict__zip_writer_free(w);
    sdict_doc *doc = NULL;
    if (sdict_load_buffer(zip.data, zip.len, "test", NULL, &doc, &err) != SDICT_OK)
        fail_msg("load: %s", err.message);
    sdict__buf_free(&zip);
    return doc;
}

static bool contains(const uint8_t *p, size_t n, const char *needle) {
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(p + i, needle, k) == 0)
            return true;
    return false;
}

/* The pickle sdict_save writes for v with flags; status returned, bytes in *out. */
static sdict_status pickle(const sdict_value *v, uint32_t flags, sdict__buf *out, sdict_error *err) {
    sdict__buf_init(out);
    sdict__saved_storage *st = NULL;
    size_t nst = 0;
    sdict_status rc = sdict__pickle_write(v, flags, out, &st, &nst, err);
    sdict__free(st);
    return rc;
}

/*==================================================================================================
 MARK: numpy pickles written by torch.save
==================================================================================================*/

/*
 torch.save({"f": np.float32(1.5), "i": np.int8(-5), "j": np.int8(-5), "u": np.uint8(98),
             "t": np.bool_(True), "t2": np.bool_(True), "h": np.float16(0.333),
             "q": np.uint64(2**64 - 1), "one": np.array([98], dtype=np.uint8),
             "be": np.arange(3, dtype='>i4'), "ft": np.asfortranarray(np.arange(6.).reshape(2, 3)),
             "s0": np.array(3.5), "e": np.zeros((0, 2), dtype=np.int16),
             "c": np.array([1+2j], dtype=np.complex64), "b": 1}, buf)
 data.pkl: one-byte bytes objects are shared (i/j, u/one and _reconstruct's b'b'), native
 dtypes are memoized, '>i4' is not, "ft" is Fortran-ordered. Under Python 3.14 the key 'b' is
 the same object as the text of b'b'.
*/
static const char NP_TORCH113[] =
    "\x80\x02\x7d\x71\x00\x28\x58\x01\x00\x00\x00\x66\x71\x01\x63\x6e\x75\x6d\x70\x79\x2e\x63"
    "\x6f\x72\x65\x2e\x6d\x75\x6c\x74\x69\x61\x72\x72\x61\x79\x0a\x73\x63\x61\x6c\x61\x72\x0a"
    "\x71\x02\x63\x6e\x75\x6d\x70\x79\x0a\x64\x74\x79\x70\x65\x0a\x71\x03\x58\x02\x00\x00\x00"
    "\x66\x34\x71\x04\x89\x88\x87\x71\x05\x52\x71\x06\x28\x4b\x03\x58\x01\x00\x00\x00\x3c\x71"
    "\x07\x4e\x4e\x4e\x4a\xff\xff\xff\xff\x4a\xff\xff\xff\xff\x4b\x00\x74\x71\x08\x62\x63\x5f"
    "\x63\x6f\x64\x65\x63\x73\x0a\x65\x6e\x63\x6f\x64\x65\x0a\x71\x09\x58\x05\x00\x00\x00\x00"
    "\x00\xc3\x80\x3f\x71\x0a\x58\x06\x00\x00\x00\x6c\x61\x74\x69\x6e\x31\x71\x0b\x86\x71\x0c"
    "\x52\x71\x0d\x86\x71\x0e\x52\x71\x0f\x58\x01\x00\x00\x00\x69\x71\x10\x68\x02\x68\x03\x58"
    "\x02\x00\x00\x00\x69\x31\x71\x11\x89\x88\x87\x71\x12\x52\x71\x13\x28\x4b\x03\x58\x01\x00"
    "\x00\x00\x7c\x71\x14\x4e\x4e\x4e\x4a\xff\xff\xff\xff\x4a\xff\xff\xff\xff\x4b\x00\x74\x71"
    "\x15\x62\x68\x09\x58\x02\x00\x00\x00\xc3\xbb\x71\x16\x68\x0b\x86\x71\x17\x52\x71\x18\x86"
    "\x71\x19\x52\x71\x1a\x58\x01\x00\x00\x00\x6a\x71\x1b\x68\x02\x68\x13\x68\x18\x86\x71\x1c"
    "\x52\x71\x1d\x58\x01\x00\x00\x00\x75\x71\x1e\x68\x02\x68\x03\x58\x02\x00\x00\x00\x75\x31"
    "\x71\x1f\x89\x88\x87\x71\x20\x52\x71\x21\x28\x4b\x03\x68\x14\x4e\x4e\x4e\x4a\xff\xff\xff"
    "\xff\x4a\xff\xff\xff\xff\x4b\x00\x74\x71\x22\x62\x68\x09\x58\x01\x00\x00\x00\x62\x71\x23"
    "\x68\x0b\x86\x71\x24\x52\x71\x25\x86\x71\x26\x52\x71\x27\x58\x01\x00\x00\x00\x74\x71\x28"
    "\x68\x02\x68\x03\x58\x02\x00\x00\x00\x62\x31\x71\x29\x89\x88\x87\x71\x2a\x52\x71\x2b\x28"
    "\x4b\x03\x68\x14\x4e\x4e\x4e\x4a\xff\xff\xff\xff\x4a\xff\xff\xff\xff\x4b\x00\x74\x71\x2c"
    "\x62\x68\x09\x58\x01\x00\x00\x00\x01\x71\x2d\x68\x0b\x86\x71\x2e\x52\x71\x2f\x86\x71\x30"
    "\x52\x71\x31\x58\x02\x00\x00\x00\x74\x32\x71\x32\x68\x31\x58\x01\x00\x00\x00\x68\x71\x33"
    "\x68\x02\x68\x03\x58\x02\x00\x00\x00\x66\x32\x71\x34\x89\x88\x87\x71\x35\x52\x71\x36\x28"
    "\x4b\x03\x68\x07\x4e\x4e\x4e\x4a\xff\xff\xff\xff\x4a\xff\xff\xff\xff\x4b\x00\x74\x71\x37"
    "\x62\x68\x09\x58\x02\x00\x00\x00\x54\x35\x71\x38\x68\x0b\x86\x71\x39\x52\x71\x3a\x86\x71"
    "\x3b\x52\x71\x3c\x58\x01\x00\x00\x00\x71\x71\x3d\x68\x02\x68\x03\x58\x02\x00\x00\x00\x75"
    "\x38\x71\x3e\x89\x88\x87\x71\x3f\x52\x71\x40\x28\x4b\x03\x68\x07\x4e\x4e\x4e\x4a\xff\xff"
    "\xff\xff\x4a\xff\xff\xff\xff\x4b\x00\x74\x71\x41\x62\x68\x09\x58\x10\x00\x00\x00\xc3\xbf"
    "\xc3\xbf\xc3\xbf\xc3\xbf\xc3\xbf\xc3\xbf\xc3\xbf\xc3\xbf\x71\x42\x68\x0b\x86\x71\x43\x52"
    "\x71\x44\x86\x71\x45\x52\x71\x46\x58\x03\x00\x00\x00\x6f\x6e\x65\x71\x47\x63\x6e\x75\x6d"
    "\x70\x79\x2e\x63\x6f\x72\x65\x2e\x6d\x75\x6c\x74\x69\x61\x72\x72\x61\x79\x0a\x5f\x72\x65"
    "\x63\x6f\x6e\x73\x74\x72\x75\x63\x74\x0a\x71\x48\x63\x6e\x75\x6d\x70\x79\x0a\x6e\x64\x61"
    "\x72\x72\x61\x79\x0a\x71\x49\x4b\x00\x85\x71\x4a\x68\x25\x87\x71\x4b\x52\x71\x4c\x28\x4b"
    "\x01\x4b\x01\x85\x71\x4d\x68\x21\x89\x68\x25\x74\x71\x4e\x62\x58\x02\x00\x00\x00\x62\x65"
    "\x71\x4f\x68\x48\x68\x49\x4b\x00\x85\x71\x50\x68\x25\x87\x71\x51\x52\x71\x52\x28\x4b\x01"
    "\x4b\x03\x85\x71\x53\x68\x03\x58\x02\x00\x00\x00\x69\x34\x71\x54\x89\x88\x87\x71\x55\x52"
    "\x71\x56\x28\x4b\x03\x58\x01\x00\x00\x00\x3e\x71\x57\x4e\x4e\x4e\x4a\xff\xff\xff\xff\x4a"
    "\xff\xff\xff\xff\x4b\x00\x74\x71\x58\x62\x89\x68\x09\x58\x0c\x00\x00\x00\x00\x00\x00\x00"
    "\x00\x00\x00\x01\x00\x00\x00\x02\x71\x59\x68\x0b\x86\x71\x5a\x52\x71\x5b\x74\x71\x5c\x62"
    "\x58\x02\x00\x00\x00\x66\x74\x71\x5d\x68\x48\x68\x49\x4b\x00\x85\x71\x5e\x68\x25\x87\x71"
    "\x5f\x52\x71\x60\x28\x4b\x01\x4b\x02\x4b\x03\x86\x71\x61\x68\x03\x58\x02\x00\x00\x00\x66"
    "\x38\x71\x62\x89\x88\x87\x71\x63\x52\x71\x64\x28\x4b\x03\x68\x07\x4e\x4e\x4e\x4a\xff\xff"
    "\xff\xff\x4a\xff\xff\xff\xff\x4b\x00\x74\x71\x65\x62\x88\x68\x09\x58\x31\x00\x00\x00\x00"
    "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x08\x40\x00\x00\x00\x00\x00\x00\xc3"
    "\xb0\x3f\x00\x00\x00\x00\x00\x00\x10\x40\x00\x00\x00\x00\x00\x00\x00\x40\x00\x00\x00\x00"
    "\x00\x00\x14\x40\x71\x66\x68\x0b\x86\x71\x67\x52\x71\x68\x74\x71\x69\x62\x58\x02\x00\x00"
    "\x00\x73\x30\x71\x6a\x68\x48\x68\x49\x4b\x00\x85\x71\x6b\x68\x25\x87\x71\x6c\x52\x71\x6d"
    "\x28\x4b\x01\x29\x68\x64\x89\x68\x09\x58\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00\x0c\x40"
    "\x71\x6e\x68\x0b\x86\x71\x6f\x52\x71\x70\x74\x71\x71\x62\x58\x01\x00\x00\x00\x65\x71\x72"
    "\x68\x48\x68\x49\x4b\x00\x85\x71\x73\x68\x25\x87\x71\x74\x52\x71\x75\x28\x4b\x01\x4b\x00"
    "\x4b\x02\x86\x71\x76\x68\x03\x58\x02\x00\x00\x00\x69\x32\x71\x77\x89\x88\x87\x71\x78\x52"
    "\x71\x79\x28\x4b\x03\x68\x07\x4e\x4e\x4e\x4a\xff\xff\xff\xff\x4a\xff\xff\xff\xff\x4b\x00"
    "\x74\x71\x7a\x62\x89\x63\x5f\x5f\x62\x75\x69\x6c\x74\x69\x6e\x5f\x5f\x0a\x62\x79\x74\x65"
    "\x73\x0a\x71\x7b\x29\x52\x71\x7c\x74\x71\x7d\x62\x58\x01\x00\x00\x00\x63\x71\x7e\x68\x48"
    "\x68\x49\x4b\x00\x85\x71\x7f\x68\x25\x87\x71\x80\x52\x71\x81\x28\x4b\x01\x4b\x01\x85\x71"
    "\x82\x68\x03\x58\x02\x00\x00\x00\x63\x38\x71\x83\x89\x88\x87\x71\x84\x52\x71\x85\x28\x4b"
    "\x03\x68\x07\x4e\x4e\x4e\x4a\xff\xff\xff\xff\x4a\xff\xff\xff\xff\x4b\x00\x74\x71\x86\x62"
    "\x89\x68\x09\x58\x09\x00\x00\x00\x00\x00\xc2\x80\x3f\x00\x00\x00\x40\x71\x87\x68\x0b\x86"
    "\x71\x88\x52\x71\x89\x74\x71\x8a\x62\x58\x01\x00\x00\x00\x62\x71\x8b\x4b\x01\x75\x2e"
;
static const char NP_TORCH214[] =
    "\x80\x02\x7d\x71\x00\x28\x58\x01\x00\x00\x00\x66\x71\x01\x63\x6e\x75\x6d\x70\x79\x2e\x5f"
    "\x63\x6f\x72\x65\x2e\x6d\x75\x6c\x74\x69\x61\x72\x72\x61\x79\x0a\x73\x63\x61\x6c\x61\x72"
    "\x0a\x71\x02\x63\x6e\x75\x6d\x70\x79\x0a\x64\x74\x79\x70\x65\x0a\x71\x03\x58\x02\x00\x00"
    "\x00\x66\x34\x71\x04\x89\x88\x87\x71\x05\x52\x71\x06\x28\x4b\x03\x58\x01\x00\x00\x00\x3c"
    "\x71\x07\x4e\x4e\x4e\x4a\xff\xff\xff\xff\x4a\xff\xff\xff\xff\x4b\x00\x74\x71\x08\x62\x63"
    "\x5f\x63\x6f\x64\x65\x63\x73\x0a\x65\x6e\x63\x6f\x64\x65\x0a\x71\x09\x58\x05\x00\x00\x00"
    "\x00\x00\xc3\x80\x3f\x71\x0a\x58\x06\x00\x00\x00\x6c\x61\x74\x69\x6e\x31\x71\x0b\x86\x71"
    "\x0c\x52\x71\x0d\x86\x71\x0e\x52\x71\x0f\x58\x01\x00\x00\x00\x69\x71\x10\x68\x02\x68\x03"
    "\x58\x02\x00\x00\x00\x69\x31\x71\x11\x89\x88\x87\x71\x12\x52\x71\x13\x28\x4b\x03\x58\x01"
    "\x00\x00\x00\x7c\x71\x14\x4e\x4e\x4e\x4a\xff\xff\xff\xff\x4a\xff\xff\xff\xff\x4b\x00\x74"
    "\x71\x15\x62\x68\x09\x58\x02\x00\x00\x00\xc3\xbb\x71\x16\x68\x0b\x86\x71\x17\x52\x71\x18"
    "\x86\x71\x19\x52\x71\x1a\x58\x01\x00\x00\x00\x6a\x71\x1b\x68\x02\x68\x13\x68\x18\x86\x71"
    "\x1c\x52\x71\x1d\x58\x01\x00\x00\x00\x75\x71\x1e\x68\x02\x68\x03\x58\x02\x00\x00\x00\x75"
    "\x31\x71\x1f\x89\x88\x87\x71\x20\x52\x71\x21\x28\x4b\x03\x68\x14\x4e\x4e\x4e\x4a\xff\xff"
    "\xff\xff\x4a\xff\xff\xff\xff\x4b\x00\x74\x71\x22\x62\x68\x09\x58\x01\x00\x00\x00\x62\x71"
    "\x23\x68\x0b\x86\x71\x24\x52\x71\x25\x86\x71\x26\x52\x71\x27\x58\x01\x00\x00\x00\x74\x71"
    "\x28\x68\x02\x68\x03\x58\x02\x00\x00\x00\x62\x31\x71\x29\x89\x88\x87\x71\x2a\x52\x71\x2b"
    "\x28\x4b\x03\x68\x14\x4e\x4e\x4e\x4a\xff\xff\xff\xff\x4a\xff\xff\xff\xff\x4b\x00\x74\x71"
    "\x2c\x62\x68\x09\x58\x01\x00\x00\x00\x01\x71\x2d\x68\x0b\x86\x71\x2e\x52\x71\x2f\x86\x71"
    "\x30\x52\x71\x31\x58\x02\x00\x00\x00\x74\x32\x71\x32\x68\x31\x58\x01\x00\x00\x00\x68\x71"
    "\x33\x68\x02\x68\x03\x58\x02\x00\x00\x00\x66\x32\x71\x34\x89\x88\x87\x71\x35\x52\x71\x36"
    "\x28\x4b\x03\x68\x07\x4e\x4e\x4e\x4a\xff\xff\xff\xff\x4a\xff\xff\xff\xff\x4b\x00\x74\x71"
    "\x37\x62\x68\x09\x58\x02\x00\x00\x00\x54\x35\x71\x38\x68\x0b\x86\x71\x39\x52\x71\x3a\x86"
    "\x71\x3b\x52\x71\x3c\x58\x01\x00\x00\x00\x71\x71\x3d\x68\x02\x68\x03\x58\x02\x00\x00\x00"
    "\x75\x38\x71\x3e\x89\x88\x87\x71\x3f\x52\x71\x40\x28\x4b\x03\x68\x07\x4e\x4e\x4e\x4a\xff"
    "\xff\xff\xff\x4a\xff\xff\xff\xff\x4b\x00\x74\x71\x41\x62\x68\x09\x58\x10\x00\x00\x00\xc3"
    "\xbf\xc3\xbf\xc3\xbf\xc3\xbf\xc3\xbf\xc3\xbf\xc3\xbf\xc3\xbf\x71\x42\x68\x0b\x86\x71\x43"
    "\x52\x71\x44\x86\x71\x45\x52\x71\x46\x58\x03\x00\x00\x00\x6f\x6e\x65\x71\x47\x63\x6e\x75"
    "\x6d\x70\x79\x2e\x5f\x63\x6f\x72\x65\x2e\x6d\x75\x6c\x74\x69\x61\x72\x72\x61\x79\x0a\x5f"
    "\x72\x65\x63\x6f\x6e\x73\x74\x72\x75\x63\x74\x0a\x71\x48\x63\x6e\x75\x6d\x70\x79\x0a\x6e"
    "\x64\x61\x72\x72\x61\x79\x0a\x71\x49\x4b\x00\x85\x71\x4a\x68\x25\x87\x71\x4b\x52\x71\x4c"
    "\x28\x4b\x01\x4b\x01\x85\x71\x4d\x68\x21\x89\x68\x25\x74\x71\x4e\x62\x58\x02\x00\x00\x00"
    "\x62\x65\x71\x4f\x68\x48\x68\x49\x4b\x00\x85\x71\x50\x68\x25\x87\x71\x51\x52\x71\x52\x28"
    "\x4b\x01\x4b\x03\x85\x71\x53\x68\x03\x58\x02\x00\x00\x00\x69\x34\x71\x54\x89\x88\x87\x71"
    "\x55\x52\x71\x56\x28\x4b\x03\x58\x01\x00\x00\x00\x3e\x71\x57\x4e\x4e\x4e\x4a\xff\xff\xff"
    "\xff\x4a\xff\xff\xff\xff\x4b\x00\x74\x71\x58\x62\x89\x68\x09\x58\x0c\x00\x00\x00\x00\x00"
    "\x00\x00\x00\x00\x00\x01\x00\x00\x00\x02\x71\x59\x68\x0b\x86\x71\x5a\x52\x71\x5b\x74\x71"
    "\x5c\x62\x58\x02\x00\x00\x00\x66\x74\x71\x5d\x68\x48\x68\x49\x4b\x00\x85\x71\x5e\x68\x25"
    "\x87\x71\x5f\x52\x71\x60\x28\x4b\x01\x4b\x02\x4b\x03\x86\x71\x61\x68\x03\x58\x02\x00\x00"
    "\x00\x66\x38\x71\x62\x89\x88\x87\x71\x63\x52\x71\x64\x28\x4b\x03\x68\x07\x4e\x4e\x4e\x4a"
    "\xff\xff\xff\xff\x4a\xff\xff\xff\xff\x4b\x00\x74\x71\x65\x62\x88\x68\x09\x58\x31\x00\x00"
    "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x08\x40\x00\x00\x00\x00\x00"
    "\x00\xc3\xb0\x3f\x00\x00\x00\x00\x00\x00\x10\x40\x00\x00\x00\x00\x00\x00\x00\x40\x00\x00"
    "\x00\x00\x00\x00\x14\x40\x71\x66\x68\x0b\x86\x71\x67\x52\x71\x68\x74\x71\x69\x62\x58\x02"
    "\x00\x00\x00\x73\x30\x71\x6a\x68\x48\x68\x49\x4b\x00\x85\x71\x6b\x68\x25\x87\x71\x6c\x52"
    "\x71\x6d\x28\x4b\x01\x29\x68\x64\x89\x68\x09\x58\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    "\x0c\x40\x71\x6e\x68\x0b\x86\x71\x6f\x52\x71\x70\x74\x71\x71\x62\x58\x01\x00\x00\x00\x65"
    "\x71\x72\x68\x48\x68\x49\x4b\x00\x85\x71\x73\x68\x25\x87\x71\x74\x52\x71\x75\x28\x4b\x01"
    "\x4b\x00\x4b\x02\x86\x71\x76\x68\x03\x58\x02\x00\x00\x00\x69\x32\x71\x77\x89\x88\x87\x71"
    "\x78\x52\x71\x79\x28\x4b\x03\x68\x07\x4e\x4e\x4e\x4a\xff\xff\xff\xff\x4a\xff\xff\xff\xff"
    "\x4b\x00\x74\x71\x7a\x62\x89\x63\x5f\x5f\x62\x75\x69\x6c\x74\x69\x6e\x5f\x5f\x0a\x62\x79"
    "\x74\x65\x73\x0a\x71\x7b\x29\x52\x71\x7c\x74\x71\x7d\x62\x58\x01\x00\x00\x00\x63\x71\x7e"
    "\x68\x48\x68\x49\x4b\x00\x85\x71\x7f\x68\x25\x87\x71\x80\x52\x71\x81\x28\x4b\x01\x4b\x01"
    "\x85\x71\x82\x68\x03\x58\x02\x00\x00\x00\x63\x38\x71\x83\x89\x88\x87\x71\x84\x52\x71\x85"
    "\x28\x4b\x03\x68\x07\x4e\x4e\x4e\x4a\xff\xff\xff\xff\x4a\xff\xff\xff\xff\x4b\x00\x74\x71"
    "\x86\x62\x89\x68\x09\x58\x09\x00\x00\x00\x00\x00\xc2\x80\x3f\x00\x00\x00\x40\x71\x87\x68"
    "\x0b\x86\x71\x88\x52\x71\x89\x74\x71\x8a\x62\x68\x23\x4b\x01\x75\x2e"
;

static void test_numpy_identity(void **state) {
    (void)state;
    static const struct {
        const char *pkl;
        size_t n;
        uint32_t flags;
        const char *module;
    } cases[] = {
        {NP_TORCH113, sizeof NP_TORCH113 - 1, 0, "numpy.core.multiarray"},
        {NP_TORCH214, sizeof NP_TORCH214 - 1, SDICT_SAVE_LAYOUT_TORCH2, "numpy._core.multiarray"},
    };
    for (size_t c = 0; c < 2; c++) {
        sdict_doc *doc = load_pickle(cases[c].pkl, cases[c].n);
        const sdict_value *root = sdict_doc_root(doc);
        char dt[8];
        const sdict_value *f = sdict_dict_get(root, "f");
        assert_int_equal(sdict_value_kind(f), SDICT_KIND_FLOAT);
        assert_true(sdict_float_get(f) == 1.5);
        assert_int_equal(sdict_value_pytype(f), SDICT_PYTYPE_NUMPY_SCALAR);
        assert_string_equal(sdict_value_numpy_dtype(f, dt), "<f4");
        assert_string_equal(sdict_value_numpy_dtype(sdict_dict_get(root, "t"), dt), "|b1");
        char big[32];
        sdict_int_to_string(sdict_dict_get(root, "q"), big, sizeof big);
        assert_string_equal(big, "18446744073709551615");
        const sdict_value *be = sdict_dict_get(root, "be");
        assert_int_equal(sdict_value_pytype(be), SDICT_PYTYPE_NUMPY_ARRAY);
        assert_string_equal(sdict_value_numpy_dtype(be, dt), ">i4");
        const sdict_tensor *bt = sdict_value_tensor(be);
        assert_int_equal(bt->dtype, SDICT_INT32);
        assert_int_equal(((const int32_t *)sdict_tensor_data(bt))[2], 2); /* native order */
        const sdict_tensor *ft = sdict_value_tensor(sdict_dict_get(root, "ft"));
        assert_int_equal(ft->stride[0], 1);
        assert_int_equal(ft->stride[1], 2);
        assert_int_equal(sdict_value_pytype(sdict_dict_get(root, "b")), SDICT_PYTYPE_PLAIN);
        assert_null(sdict_value_numpy_dtype(sdict_dict_get(root, "b"), dt));

        /* pickled again: the same bytes, through the module it was read from */
        sdict__buf out;
        sdict_error err;
        assert_int_equal(pickle(root, cases[c].flags | SDICT_SAVE_ALLOW_NOT_WEIGHTS_ONLY, &out, &err),
                         SDICT_OK);
        assert_int_equal(out.len, cases[c].n);
        assert_memory_equal(out.data, cases[c].pkl, out.len);
        assert_true(contains(out.data, out.len, cases[c].module));
        sdict__buf_free(&out);

        /* without the flag: refused, naming the first numpy value */
        assert_int_equal(pickle(root, cases[c].flags, &out, &err), SDICT_E_UNSUPPORTED);
        assert_non_null(strstr(err.message, "'f' is a numpy.float32 scalar"));
        sdict__buf_free(&out);
        /* a value turned plain is written plain */
        assert_int_equal(sdict_value_set_pytype((sdict_value *)f, SDICT_PYTYPE_NUMPY_SCALAR),
                         SDICT_E_INVALID_ARG);
        assert_int_equal(sdict_value_set_pytype((sdict_value *)f, SDICT_PYTYPE_PLAIN), SDICT_OK);
        assert_int_equal(pickle(root, cases[c].flags, &out, &err), SDICT_E_UNSUPPORTED);
        assert_non_null(strstr(err.message, "'i' is a numpy.int8 scalar"));
        sdict__buf_free(&out);
        sdict_doc_free(doc);
    }
}

/*==================================================================================================
 MARK: torch.Size, frozenset, bytearray
==================================================================================================*/

/* torch.save({"size": torch.Size([2, 3]), "size0": torch.Size([]), "fs": frozenset({1, 2}),
               "ba": bytearray(b"xy\xff"), "ba0": bytearray(), "n": [torch.Size([1])]}) as
   torch 1.13 pickles it (the same opcodes under 2.14). */
static const char TYPES_PKL[] =
    "\x80\x02\x7d\x71\x00\x28\x58\x04\x00\x00\x00\x73\x69\x7a\x65\x71\x01\x63\x74\x6f\x72\x63"
    "\x68\x0a\x53\x69\x7a\x65\x0a\x71\x02\x4b\x02\x4b\x03\x86\x71\x03\x85\x71\x04\x52\x71\x05"
    "\x58\x05\x00\x00\x00\x73\x69\x7a\x65\x30\x71\x06\x68\x02\x29\x85\x71\x07\x52\x71\x08\x58"
    "\x02\x00\x00\x00\x66\x73\x71\x09\x63\x5f\x5f\x62\x75\x69\x6c\x74\x69\x6e\x5f\x5f\x0a\x66"
    "\x72\x6f\x7a\x65\x6e\x73\x65\x74\x0a\x71\x0a\x5d\x71\x0b\x28\x4b\x01\x4b\x02\x65\x85\x71"
    "\x0c\x52\x71\x0d\x58\x02\x00\x00\x00\x62\x61\x71\x0e\x63\x5f\x5f\x62\x75\x69\x6c\x74\x69"
    "\x6e\x5f\x5f\x0a\x62\x79\x74\x65\x61\x72\x72\x61\x79\x0a\x71\x0f\x63\x5f\x63\x6f\x64\x65"
    "\x63\x73\x0a\x65\x6e\x63\x6f\x64\x65\x0a\x71\x10\x58\x04\x00\x00\x00\x78\x79\xc3\xbf\x71"
    "\x11\x58\x06\x00\x00\x00\x6c\x61\x74\x69\x6e\x31\x71\x12\x86\x71\x13\x52\x71\x14\x85\x71"
    "\x15\x52\x71\x16\x58\x03\x00\x00\x00\x62\x61\x30\x71\x17\x68\x0f\x29\x52\x71\x18\x58\x01"
    "\x00\x00\x00\x6e\x71\x19\x5d\x71\x1a\x68\x02\x4b\x01\x85\x71\x1b\x85\x71\x1c\x52\x71\x1d"
    "\x61\x75\x2e";

static void test_python_types(void **state) {
    (void)state;
    sdict_doc *doc = load_pickle(TYPES_PKL, sizeof TYPES_PKL - 1);
    const sdict_value *root = sdict_doc_root(doc);
    const sdict_value *size = sdict_dict_get(root, "size");
    assert_int_equal(sdict_value_kind(size), SDICT_KIND_TUPLE);
    assert_int_equal(sdict_value_pytype(size), SDICT_PYTYPE_TORCH_SIZE);
    assert_int_equal(sdict_seq_len(size), 2);
    assert_int_equal(sdict_value_pytype(sdict_dict_get(root, "size0")), SDICT_PYTYPE_TORCH_SIZE);
    assert_int_equal(sdict_value_pytype(sdict_dict_get(root, "fs")), SDICT_PYTYPE_FROZENSET);
    const sdict_value *ba = sdict_dict_get(root, "ba");
    assert_int_equal(sdict_value_pytype(ba), SDICT_PYTYPE_BYTEARRAY);
    size_t n = 0;
    assert_memory_equal(sdict_bytes_get(ba, &n), "xy\xff", 3);
    assert_int_equal(sdict_value_pytype(sdict_dict_get(root, "ba0")), SDICT_PYTYPE_BYTEARRAY);

    /* the same bytes back, with the flag the frozenset needs; refused without it */
    sdict__buf out;
    sdict_error err;
    assert_int_equal(pickle(root, SDICT_SAVE_ALLOW_NOT_WEIGHTS_ONLY, &out, &err), SDICT_OK);
    assert_int_equal(out.len, sizeof TYPES_PKL - 1);
    assert_memory_equal(out.data, TYPES_PKL, out.len);
    sdict__buf_free(&out);
    assert_int_equal(pickle(root, 0, &out, &err), SDICT_E_UNSUPPORTED);
    assert_non_null(strstr(err.message, "'fs' is a frozenset"));
    sdict__buf_free(&out);

    /* built in memory: the setter checks kinds; a Size of non-ints is refused when written */
    sdict_value *t = sdict_tuple_new(doc), *s = sdict_set_new(doc);
    assert_int_equal(sdict_seq_append(t, sdict_int_new(doc, 4)), SDICT_OK);
    assert_int_equal(sdict_value_set_pytype(t, SDICT_PYTYPE_TORCH_SIZE), SDICT_OK);
    assert_int_equal(sdict_value_set_pytype(t, SDICT_PYTYPE_FROZENSET), SDICT_E_INVALID_ARG);
    assert_int_equal(sdict_value_set_pytype(s, SDICT_PYTYPE_BYTEARRAY), SDICT_E_INVALID_ARG);
    assert_int_equal(sdict_value_set_pytype(NULL, SDICT_PYTYPE_PLAIN), SDICT_E_INVALID_ARG);
    assert_int_equal(sdict_value_set_pytype(s, SDICT_PYTYPE_COUNT), SDICT_E_INVALID_ARG);
    assert_int_equal(sdict_seq_append(t, sdict_str_new(doc, "x", 1)), SDICT_OK);
    sdict_value *l = sdict_list_new(doc);
    assert_int_equal(sdict_seq_append(l, t), SDICT_OK);
    assert_int_equal(pickle(l, 0, &out, &err), SDICT_E_INVALID_ARG);
    assert_non_null(strstr(err.message, "torch.Size item 1 is str"));
    sdict__buf_free(&out);
    assert_int_equal(sdict_value_pytype(NULL), SDICT_PYTYPE_PLAIN);
    sdict_doc_free(doc);
}

/*==================================================================================================
 MARK: Refusals name the path
==================================================================================================*/

static void test_refusal_paths(void **state) {
    (void)state;
    sdict_doc *doc = NULL;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    sdict_value *root = sdict_dict_new(doc, false), *state_ = sdict_dict_new(doc, false),
                *l = sdict_list_new(doc), *fs = sdict_set_new(doc);
    assert_int_equal(sdict_value_set_pytype(fs, SDICT_PYTYPE_FROZENSET), SDICT_OK);
    assert_int_equal(sdict_seq_append(l, sdict_int_new(doc, 1)), SDICT_OK);
    assert_int_equal(sdict_seq_append(l, fs), SDICT_OK);
    assert_int_equal(sdict_dict_set(state_, sdict_int_new(doc, 3), l), SDICT_OK);
    assert_int_equal(sdict_dict_set_str(root, "opt.state", state_), SDICT_OK);
    sdict__buf out;
    sdict_error err;
    assert_int_equal(pickle(root, 0, &out, &err), SDICT_E_UNSUPPORTED);
    assert_non_null(strstr(err.message, "'opt.state.3.1' is a frozenset"));
    sdict__buf_free(&out);
    assert_int_equal(pickle(fs, 0, &out, &err), SDICT_E_UNSUPPORTED);
    assert_non_null(strstr(err.message, "the root value is a frozenset"));
    sdict__buf_free(&out);

    /* through sdict_save: nothing is written, and unknown flags are refused */
    char path[] = "/tmp/sdict_test_pytype.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    unlink(path);
    assert_int_equal(sdict_save(path, root, NULL, &err), SDICT_E_UNSUPPORTED);
    assert_int_equal(access(path, F_OK), -1);
    sdict_save_opts o = {.archive_name = NULL, .flags = 1u << 7};
    assert_int_equal(sdict_save(path, root, &o, &err), SDICT_E_INVALID_ARG);
    void *buf = NULL;
    size_t n = 0;
    assert_int_equal(sdict_save_buffer(root, &o, &buf, &n, &err), SDICT_E_INVALID_ARG);
    assert_null(buf);
    o.flags = SDICT_SAVE_ALLOW_NOT_WEIGHTS_ONLY;
    assert_int_equal(sdict_save_buffer(root, &o, &buf, &n, &err), SDICT_OK);
    sdict_doc *back = NULL;
    assert_int_equal(sdict_load_buffer(buf, n, "b", NULL, &back, &err), SDICT_OK);
    const sdict_value *fs2 = sdict_value_at(sdict_doc_root(back), "opt.state.3.1");
    assert_int_equal(sdict_value_pytype(fs2), SDICT_PYTYPE_FROZENSET);
    sdict_free_buffer(buf);
    sdict_doc_free(back);
    sdict_doc_free(doc);
}

/*==================================================================================================
 MARK: torch 2.x layout
==================================================================================================*/

static sdict_value *tensor_of(sdict_doc *doc, sdict_dtype dt, int32_t ndim, const int64_t *shape,
                              const void *data, size_t nbytes) {
    sdict_storage *s = NULL;
    assert_int_equal(sdict_storage_new(nbytes, &s, NULL), SDICT_OK);
    memcpy(sdict_storage_data(s), data, nbytes);
    sdict_tensor t;
    sdict_value *v = NULL;
    int64_t stride[8];
    assert_true(ndim <= 8);
    assert_int_equal(sdict_tensor_init(&t, dt, ndim, shape, stride, s, NULL), SDICT_OK);
    assert_int_equal(sdict_tensor_new(doc, &t, &v, NULL), SDICT_OK);
    sdict_storage_release(s);
    return v;
}

static void test_torch2_layout(void **state) {
    (void)state;
    /* torch 2.14: torch.save({"a": torch.arange(6, dtype=torch.float32).reshape(2, 3),
                               "b": torch.ones(3, dtype=torch.int64)}, "t214.pt") */
    sdict_doc *doc = NULL;
    assert_int_equal(sdict_doc_new(&doc, NULL), SDICT_OK);
    sdict_value *root = sdict_dict_new(doc, false);
    const float a[6] = {0, 1, 2, 3, 4, 5};
    const int64_t b[3] = {1, 1, 1}, s23[2] = {2, 3}, s3 = 3;
    assert_int_equal(sdict_dict_set_str(root, "a", tensor_of(doc, SDICT_FLOAT32, 2, s23, a, sizeof a)),
                     SDICT_OK);
    assert_int_equal(sdict_dict_set_str(root, "b", tensor_of(doc, SDICT_INT64, 1, &s3, b, sizeof b)),
                     SDICT_OK);
    sdict_save_opts o = {.archive_name = "t214", .flags = SDICT_SAVE_LAYOUT_TORCH2};
    void *buf = NULL;
    size_t n = 0;
    sdict_error err;
    assert_int_equal(sdict_save_buffer(root, &o, &buf, &n, &err), SDICT_OK);
    assert_int_equal(n, 1805); /* as torch's file */

    sdict__source src;
    sdict__source_init_mem(&src, buf, n, "t214");
    sdict__zip *z = NULL;
    assert_int_equal(sdict__zip_open(&src, &(sdict_limits){0, 0, 0, 0, 0, 1000, 1 << 20, 0}, &z, &err),
                     SDICT_OK);
    static const char *const names[] = {
        "t214/data.pkl", "t214/.format_version", "t214/.storage_alignment", "t214/byteorder",
        "t214/data/0",   "t214/data/1",          "t214/version",            "t214/.data/serialization_id"};
    assert_int_equal(sdict__zip_count(z), 8);
    for (size_t i = 0; i < 8; i++) {
        const sdict__zip_entry *e = sdict__zip_entry_at(z, i);
        assert_string_equal(e->name, names[i]);
        assert_int_equal(e->data_offset % 64, 0);
    }
    static const struct {
        const char *rel, *text;
    } want[] = {{".format_version", "1"},
                {".storage_alignment", "64"},
                {"version", "3\n"},
                {".data/serialization_id", "0561108523619670529406889418461591227498"}};
    for (size_t i = 0; i < 4; i++) {
        const sdict__zip_entry *e = sdict__zip_find(z, want[i].rel);
        char text[64] = {0};
        assert_non_null(e);
        assert_int_equal(e->size, strlen(want[i].text));
        assert_int_equal(sdict__zip_read(z, e, text, sizeof text, true, &err), SDICT_OK);
        assert_string_equal(text, want[i].text);
    }
    sdict__zip_close(z);
    sdict_free_buffer(buf);

    /* a path that is not ASCII: torch names the folder "archive"; 1.13 uses the stem */
    char dir[] = "/tmp/sdict_test_pytype.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/caf\xc3\xa9.pt", dir);
    sdict_doc *back = NULL;
    for (int torch2 = 0; torch2 < 2; torch2++) {
        sdict_save_opts po = {.archive_name = NULL, .flags = torch2 ? (uint32_t)SDICT_SAVE_LAYOUT_TORCH2 : 0u};
        assert_int_equal(sdict_save(path, root, &po, &err), SDICT_OK);
        size_t fn = 0;
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        uint8_t head[64];
        fn = fread(head, 1, sizeof head, f);
        fclose(f);
        assert_true(fn > 30);
        const char *want_name = torch2 ? "archive/data.pkl" : "caf\xc3\xa9/data.pkl";
        assert_memory_equal(head + 30, want_name, strlen(want_name));
        assert_int_equal(sdict_load(path, NULL, &back, &err), SDICT_OK);
        sdict_doc_free(back);
    }
    unlink(path);
    rmdir(dir);
    sdict_doc_free(doc);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_numpy_identity),
        cmocka_unit_test(test_python_types),
        cmocka_unit_test(test_refusal_paths),
        cmocka_unit_test(test_torch2_layout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
