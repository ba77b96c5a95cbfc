/*
 zip_write.c - zip writer reproducing, byte for byte, what PyTorch 1.13 writes through miniz
 (caffe2/serialize/inline_container.cc driving mz_zip_writer_add_mem_ex_v2 with
 MZ_ZIP_FLAG_WRITE_ZIP64, stored records, and its own "FB" padding extra).

 Per record, streamed in one pass:
   local header   PK\3\4, version needed 0, flags 0x0808 (0x0800 when empty), method 0,
                  time/date 0, CRC and sizes 0 (they follow in the data descriptor)
   extra          [ZIP64 extra 0x0001: size, 0 (compressed slot) if size >= 0xFFFFFFFF;
                   header offset if it is >= 0xFFFFFFFF] then "FB" + u16 p + p x 'Z'
   payload        starts at a multiple of 64 in the file
   descriptor     PK\7\8, CRC, compressed and uncompressed size as 4-byte fields, or 8-byte
                  fields when the local header carried a ZIP64 extra; absent for empty records
 At finish: central directory (version made by/needed 0, real CRC/sizes, saturated fields plus
 a ZIP64 extra only when needed, no FB padding), ZIP64 end record (made-by 0x031E, needed 45),
 ZIP64 locator, classic end record with fields saturated only when they do not fit.

 miniz's "needs ZIP64" threshold is >= 0xFFFFFFFF (not > ), for sizes and offsets alike, and
 PyTorch's getPadding uses the same test; we mirror both exactly.

 torch >= 2.1 ends its archives with a `.data/serialization_id` record of 40 ASCII digits
 (PyTorchStreamWriter::writeSerializationId): a 20-digit, zero-padded fold of the hashes of
 the record names written so far (relative names, without the archive folder), visited in the
 iteration order of the std::unordered_set<std::string> holding them, then a 20-digit fold of
 the CRC-32s that went by in data descriptors. Both folds use c10::hash_combine; the name hash
 is libstdc++'s std::hash<std::string> (_Hash_bytes, a MurmurHash2 variant, seed 0xc70f6907).
 The writer keeps both inputs as it goes; serialization_id() below reproduces the set's order
 by replaying libstdc++'s hashtable (bucket growth, node placement) over the names' hashes.
*/
#include "internal.h"

#include <stdio.h>
#include <string.h>

#define U32_SAT 0xFFFFFFFFu
#define ALIGNMENT 64u            /* PyTorch < 2.7 kFieldAlignment */
#define CRC_CHUNK ((size_t)1 << 20) /* CRC a chunk, then write it, while it is in cache */

struct sdict__zip_writer {
    sdict__write_fn write;
    void *ctx;
    char *prefix;        /* archive_name + "/" */
    size_t prefix_len;
    uint64_t cursor;     /* bytes written so far = offset of the next record */
    uint64_t count;      /* records added */
    sdict__buf cd;       /* central directory, built as records are added */
    uint64_t crc_fold;   /* PyTorch's combined_uncomp_crc32_ (see observe()) */
    uint64_t *name_hash; /* std::hash of each relative record name, in the order written */
    size_t cap_names;
    bool failed;         /* a write failed: the output is unusable */
    bool finished;
};

sdict_status sdict__zip_writer_new(sdict__write_fn write, void *ctx, const char *archive_name,
                                   sdict__zip_writer **out, sdict_error *err) {
    if (!out)
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "out is NULL");
    *out = NULL;
    if (!write || !archive_name)
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "write function or name is NULL");
    size_t alen = strlen(archive_name);
    if (alen >= 0xFFFF)
        return sdict__err(err, SDICT_E_INVALID_ARG, archive_name, -1,
                          "archive name of %zu bytes: zip names hold at most 65535", alen);
    sdict__zip_writer *w = sdict__calloc(1, sizeof *w);
    char *prefix = sdict__malloc(alen + 2);
    if (!w || !prefix) {
        sdict__free(w);
        sdict__free(prefix);
        return sdict__err(err, SDICT_E_NOMEM, NULL, -1, "out of memory for a zip writer");
    }
    memcpy(prefix, archive_name, alen);
    prefix[alen] = '/';
    prefix[alen + 1] = '\0';
    w->write = write;
    w->ctx = ctx;
    w->prefix = prefix;
    w->prefix_len = alen + 1;
    sdict__buf_init(&w->cd);
    *out = w;
    return SDICT_OK;
}

static void put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t sat32(uint64_t v) { return v >= U32_SAT ? U32_SAT : (uint32_t)v; }

/*==================================================================================================
 MARK: Serialization id (torch >= 2.1)
==================================================================================================*/

/* c10::hash_combine on a 64-bit size_t. */
static uint64_t hash_combine(uint64_t seed, uint64_t value) {
    return seed ^ (value + 0x9e3779b9u + (seed << 6) + (seed >> 2));
}

static uint64_t shift_mix(uint64_t v) { return v ^ (v >> 47); }

/* libstdc++'s _Hash_bytes for a 64-bit size_t, which std::hash<std::string> calls with seed
   0xc70f6907. Whole 8-byte words are loaded in host order, as the C++ library does. */
static uint64_t std_string_hash(const void *ptr, size_t len) {
    const uint64_t mul = ((uint64_t)0xc6a4a793u << 32) + 0x5bd1e995u;
    const uint8_t *p = ptr;
    size_t whole = len & ~(size_t)7;
    uint64_t h = 0xc70f6907u ^ ((uint64_t)len * mul);
    for (size_t i = 0; i < whole; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h ^= shift_mix(w * mul) * mul;
        h *= mul;
    }
    if (len & 7) {
        uint64_t tail = 0;
        for (size_t i = len & 7; i-- > 0;)
            tail = (tail << 8) + p[whole + i];
        h ^= tail;
        h *= mul;
    }
    return shift_mix(shift_mix(h) * mul);
}

/* Every buffer miniz hands PyTorch's write callback that is at least 8 bytes long and starts
   with the data-descriptor signature adds its next 4 bytes to the CRC fold: each descriptor,
   and (PyTorch does not tell them apart) a record name or payload that happens to start with
   those bytes. miniz writes the name and the payload of a stored record in one call each. */
static void observe(sdict__zip_writer *w, const uint8_t *p, uint64_t n) {
    if (n >= 8 && sdict__le32(p) == 0x08074b50u)
        w->crc_fold = hash_combine(w->crc_fold, sdict__le32(p + 4));
}

/* Bucket counts libstdc++'s unordered_set goes through while it grows one insertion at a time
   under the default max_load_factor 1.0: 13 at the first insertion, then, whenever the count
   would pass the bucket count, the first prime of its _Prime_rehash_policy table that is at
   least twice the current count. Enough for 2^40 records. */
static const uint64_t set_buckets[] = {
    13, 29, 59, 127, 257, 541, 1109, 2357, 5087, 10273, 20753, 42043, 85229, 172933, 351061,
    712697, 1447153, 2938679, 5967347, 12117689, 24607243, 49969847, 101473717, 206062531,
    418451333, 849749479, 1725587117, 3504151727, 8589934583, 25769803693, 68719476731,
    206158430123, 412316860387, 1099511627689, 2199023255531};

#define SET_END SIZE_MAX          /* end of the node list */
#define SET_BEFORE (SIZE_MAX - 1) /* libstdc++'s _M_before_begin node */
#define SET_EMPTY (SIZE_MAX - 2)  /* empty bucket */

/* The order in which std::unordered_set<std::string> iterates distinct names inserted in the
   order given, from their hashes alone: libstdc++ keeps one singly linked list whose buckets
   point at the node before their first node; a node entering an empty bucket goes to the
   front of the list, one entering a used bucket right after that bucket's head; a rehash
   walks the list and re-inserts the same way. order receives n node indices. */
static bool set_order(const uint64_t *hash, size_t n, size_t *order) {
    size_t *next = sdict__calloc(n ? n : 1, sizeof *next);
    size_t *bkt = NULL;
    uint64_t nb = 1;
    size_t level = 0, head = SET_END; /* head: _M_before_begin._M_nxt */
    bool ok = next != NULL;
#define NEXT_OF(x) ((x) == SET_BEFORE ? head : next[x])
#define SET_NEXT(x, v) ((x) == SET_BEFORE ? (void)(head = (v)) : (void)(next[x] = (v)))
    for (size_t i = 0; ok && i < n; i++) {
        if (i == 0 || i + 1 > nb) { /* _M_need_rehash: grow before inserting */
            if (i > 0 && ++level >= sizeof set_buckets / sizeof set_buckets[0]) {
                ok = false;
                break;
            }
            uint64_t nnb = set_buckets[level];
            size_t *nbkt = nnb <= SIZE_MAX / sizeof *nbkt ? sdict__malloc((size_t)nnb * sizeof *nbkt)
                                                           : NULL;
            if (!nbkt) {
                ok = false;
                break;
            }
            for (uint64_t b = 0; b < nnb; b++)
                nbkt[b] = SET_EMPTY;
            size_t p = head, prev_bkt = 0;
            head = SET_END;
            while (p != SET_END) { /* _M_rehash_aux for unique keys */
                size_t after = next[p];
                size_t b = (size_t)(hash[p] % nnb);
                if (nbkt[b] == SET_EMPTY) {
                    next[p] = head;
                    head = p;
                    nbkt[b] = SET_BEFORE;
                    if (next[p] != SET_END)
                        nbkt[prev_bkt] = p;
                    prev_bkt = b;
                } else {
                    next[p] = NEXT_OF(nbkt[b]);
                    SET_NEXT(nbkt[b], p);
                }
                p = after;
            }
            sdict__free(bkt);
            bkt = nbkt;
            nb = nnb;
        }
        size_t b = (size_t)(hash[i] % nb); /* _M_insert_bucket_begin */
        if (bkt[b] != SET_EMPTY) {
            next[i] = NEXT_OF(bkt[b]);
            SET_NEXT(bkt[b], i);
        } else {
            next[i] = head;
            head = i;
            if (next[i] != SET_END)
                bkt[hash[next[i]] % nb] = i;
            bkt[b] = SET_BEFORE;
        }
    }
#undef NEXT_OF
#undef SET_NEXT
    if (ok) {
        size_t k = 0;
        for (size_t p = head; p != SET_END; p = next[p])
            order[k++] = p;
    }
    sdict__free(bkt);
    sdict__free(next);
    return ok;
}

sdict_status sdict__zip_writer_serialization_id(const sdict__zip_writer *w, char out[41],
                                                sdict_error *err) {
    size_t n = (size_t)w->count;
    size_t *order = sdict__calloc(n ? n : 1, sizeof *order);
    if (!order || !set_order(w->name_hash, n, order)) {
        sdict__free(order);
        return sdict__err(err, SDICT_E_NOMEM, NULL, -1,
                          "out of memory computing the serialization id of %zu records", n);
    }
    uint64_t names = 0;
    for (size_t i = 0; i < n; i++)
        names = hash_combine(names, w->name_hash[order[i]]);
    sdict__free(order);
    snprintf(out, 41, "%020llu%020llu", (unsigned long long)names,
             (unsigned long long)w->crc_fold);
    return SDICT_OK;
}

/* Writes through the sink, tracking the cursor; any failure poisons the writer. */
static sdict_status emit(sdict__zip_writer *w, const void *p, size_t n, const char *rec,
                         sdict_error *err) {
    uint64_t next;
    if (!sdict__add_u64(w->cursor, n, &next)) {
        w->failed = true;
        return sdict__err(err, SDICT_E_LIMIT, rec, -1, "archive larger than 2^64 bytes");
    }
    if (n) {
        sdict_status st = w->write(w->ctx, p, n, err);
        if (st != SDICT_OK) {
            w->failed = true;
            return st;
        }
    }
    w->cursor = next;
    return SDICT_OK;
}

sdict_status sdict__zip_writer_add(sdict__zip_writer *w, const char *relname, const void *data,
                                   uint64_t n, sdict_error *err) {
    if (!w || !relname || (!data && n))
        return sdict__err(err, SDICT_E_INVALID_ARG, relname, -1, "writer, name or data is NULL");
    if (w->failed || w->finished)
        return sdict__err(err, SDICT_E_INVALID_ARG, relname, -1,
                          "zip writer is %s", w->failed ? "in a failed state" : "finished");
    size_t rlen = strlen(relname);
    if (rlen > 0xFFFF - w->prefix_len)
        return sdict__err(err, SDICT_E_INVALID_ARG, relname, -1,
                          "record name of %zu bytes: zip names hold at most 65535",
                          w->prefix_len + rlen);
    if (n > SIZE_MAX)
        return sdict__err(err, SDICT_E_INVALID_ARG, relname, -1,
                          "record of %llu bytes larger than this platform's address space",
                          (unsigned long long)n);
    size_t nlen = w->prefix_len + rlen;
    if (w->count == w->cap_names) {
        size_t ncap = w->cap_names ? w->cap_names * 2 : 16;
        uint64_t *nh = sdict__realloc(w->name_hash, ncap * sizeof *nh);
        if (!nh)
            return sdict__err(err, SDICT_E_NOMEM, relname, -1, "out of memory for record names");
        w->name_hash = nh;
        w->cap_names = ncap;
    }
    uint64_t hdr = w->cursor;
    bool big_size = n >= U32_SAT, big_ofs = hdr >= U32_SAT;
    bool zip64 = big_size || big_ofs;

    /* Local ZIP64 extra as miniz writes it before the payload is known: the compressed-size
       slot holds 0. */
    uint8_t x64[4 + 24];
    size_t x64_len = 0;
    if (zip64) {
        size_t body = (big_size ? 16u : 0u) + (big_ofs ? 8u : 0u);
        put16(x64, 0x0001);
        put16(x64 + 2, (uint16_t)body);
        x64_len = 4;
        if (big_size) {
            put64(x64 + x64_len, n);
            put64(x64 + x64_len + 8, 0);
            x64_len += 16;
        }
        if (big_ofs) {
            put64(x64 + x64_len, hdr);
            x64_len += 8;
        }
    }
    /* PyTorch's getPadding: the payload would start after header, name, FB id/len and the
       ZIP64 extra; pad with 'Z' to the next multiple of 64. */
    uint64_t start = hdr + 30 + nlen + 4 + x64_len;
    size_t pad = (size_t)((ALIGNMENT - start % ALIGNMENT) % ALIGNMENT);
    size_t xlen = x64_len + 4 + pad;
    uint16_t flags = n ? 0x0808 : 0x0800;

    size_t hlen = 30 + nlen + xlen;
    uint8_t *h = sdict__malloc(hlen);
    if (!h)
        return sdict__err(err, SDICT_E_NOMEM, relname, -1, "out of memory for a local header");
    memset(h, 0, 30);
    put32(h, 0x04034b50u);
    put16(h + 6, flags);
    put16(h + 26, (uint16_t)nlen);
    put16(h + 28, (uint16_t)xlen);
    memcpy(h + 30, w->prefix, w->prefix_len);
    memcpy(h + 30 + w->prefix_len, relname, rlen);
    uint8_t *x = h + 30 + nlen;
    memcpy(x, x64, x64_len);
    x[x64_len] = 'F';
    x[x64_len + 1] = 'B';
    put16(x + x64_len + 2, (uint16_t)pad);
    memset(x + x64_len + 4, 'Z', pad);
    observe(w, h + 30, nlen);
    sdict_status st = emit(w, h, hlen, relname, err);
    sdict__free(h);
    if (st != SDICT_OK)
        return st;
    observe(w, data, n);

    uint32_t crc = 0;
    const uint8_t *p = data;
    for (uint64_t done = 0; done < n;) {
        size_t chunk = n - done < CRC_CHUNK ? (size_t)(n - done) : CRC_CHUNK;
        crc = sdict__crc32(crc, p + done, chunk);
        st = emit(w, p + done, chunk, relname, err);
        if (st != SDICT_OK)
            return st;
        done += chunk;
    }
    if (n) {
        uint8_t dd[24];
        put32(dd, 0x08074b50u);
        put32(dd + 4, crc);
        size_t ddlen = 16;
        if (zip64) {
            put64(dd + 8, n);
            put64(dd + 16, n);
            ddlen = 24;
        } else {
            put32(dd + 8, (uint32_t)n);
            put32(dd + 12, (uint32_t)n);
        }
        observe(w, dd, ddlen);
        st = emit(w, dd, ddlen, relname, err);
        if (st != SDICT_OK)
            return st;
    }

    /* Central entry: real CRC/sizes; ZIP64 extra with (size, compressed size) and/or offset. */
    uint8_t c[46];
    memset(c, 0, sizeof c);
    put32(c, 0x02014b50u);
    put16(c + 8, flags);
    put32(c + 16, crc);
    put32(c + 20, sat32(n));
    put32(c + 24, sat32(n));
    put16(c + 28, (uint16_t)nlen);
    put16(c + 30, (uint16_t)x64_len);
    put32(c + 42, sat32(hdr));
    sdict__buf_append(&w->cd, c, sizeof c);
    sdict__buf_append(&w->cd, w->prefix, w->prefix_len);
    sdict__buf_append(&w->cd, relname, rlen);
    if (zip64) {
        sdict__buf_le16(&w->cd, 0x0001);
        sdict__buf_le16(&w->cd, (uint16_t)(x64_len - 4));
        if (big_size) {
            sdict__buf_le64(&w->cd, n);
            sdict__buf_le64(&w->cd, n);
        }
        if (big_ofs)
            sdict__buf_le64(&w->cd, hdr);
    }
    st = sdict__buf_status(&w->cd, err);
    if (st != SDICT_OK) {
        w->failed = true;
        return st;
    }
    w->name_hash[w->count++] = std_string_hash(relname, rlen);
    return SDICT_OK;
}

sdict_status sdict__zip_writer_finish(sdict__zip_writer *w, sdict_error *err) {
    if (!w)
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "writer is NULL");
    if (w->failed || w->finished)
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "zip writer is %s",
                          w->failed ? "in a failed state" : "finished");
    /* miniz records a central directory offset of 0 for an archive without entries. */
    uint64_t cd_off = w->count ? w->cursor : 0;
    uint64_t cd_size = w->cd.len;
    sdict_status st = emit(w, w->cd.data, w->cd.len, NULL, err);
    if (st != SDICT_OK)
        return st;

    uint64_t z_off = w->cursor;
    uint8_t e[56 + 20 + 22];
    memset(e, 0, sizeof e);
    uint8_t *z = e;
    put32(z, 0x06064b50u);
    put64(z + 4, 56 - 12); /* record size excludes the signature and this field */
    put16(z + 12, 0x031E); /* made by: UNIX, spec 3.0 (miniz's constant) */
    put16(z + 14, 45);     /* needed: 4.5, ZIP64 */
    put64(z + 24, w->count);
    put64(z + 32, w->count);
    put64(z + 40, cd_size);
    put64(z + 48, cd_off);
    uint8_t *l = e + 56;
    put32(l, 0x07064b50u);
    put64(l + 8, z_off);
    put32(l + 16, 1);
    uint8_t *c = e + 76;
    put32(c, 0x06054b50u);
    uint16_t n16 = w->count >= 0xFFFF ? 0xFFFF : (uint16_t)w->count;
    put16(c + 8, n16);
    put16(c + 10, n16);
    put32(c + 12, sat32(cd_size));
    put32(c + 16, sat32(cd_off));
    st = emit(w, e, sizeof e, NULL, err);
    if (st != SDICT_OK)
        return st;
    w->finished = true;
    return SDICT_OK;
}

void sdict__zip_writer_free(sdict__zip_writer *w) {
    if (!w)
        return;
    sdict__buf_free(&w->cd);
    sdict__free(w->name_hash);
    sdict__free(w->prefix);
    sdict__free(w);
}
