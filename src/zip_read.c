/*
 zip_read.c - zip/ZIP64 central-directory reader for PyTorch archives.

 Layout read (all little-endian; PKWARE APPNOTE 4.3 / 4.4):
   [local header 30 B + name + extra][payload][data descriptor 16/24 B]   one per record
   [central directory: 46 B + name + extra + comment per entry]
   [ZIP64 end record 56 B][ZIP64 locator 20 B]                           PyTorch: always
   [classic end record 22 B + comment]

 Only the central directory is trusted for sizes and CRCs: PyTorch's miniz writes local headers
 with CRC = sizes = 0 (flag bit 3), and its FB padding extra exists in local headers only, so
 payload offsets come from each local header's own name/extra lengths.

 Ambiguity (issue 11): torch reads archives with miniz (inline_container.cc), which picks the
 last end-record signature, prefers the ZIP64 end record, looks names up case-insensitively,
 and takes only the name and extra lengths from local headers. Any archive in which miniz, or
 another common reader (Python's zipfile, unzip, streaming readers), could see other records
 than this reader is refused with "ambiguous zip: ..." (README, Safety): see find_eocd,
 read_end, build_table, check_prefix, check_local and check_locals.

 Everything is read through sdict__source_read so mapped, pread and memory sources behave alike,
 and every offset/size is checked against the file size with overflow-checked arithmetic before
 use: a hostile central directory can neither make us read outside the file nor allocate more
 than the file could describe.
*/
#include "internal.h"

#include <libdeflate.h>
#include <stdlib.h>
#include <string.h>

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_EOCD 0x06054b50u
#define SIG_EOCD64 0x06064b50u
#define SIG_LOC64 0x07064b50u

#define LOCAL_SIZE 30u
#define CENTRAL_SIZE 46u
#define EOCD_SIZE 22u
#define EOCD64_SIZE 56u
#define LOC64_SIZE 20u
#define MAX_COMMENT 0xFFFFu

#define DEFAULT_MAX_RECORDS ((uint64_t)1 << 20)
#define DEFAULT_MAX_INFLATE ((uint64_t)16 << 30)

struct sdict__zip {
    const sdict__source *src;
    uint64_t max_inflate;
    sdict__zip_entry *entries;
    size_t count;
    char *names;      /* all names, NUL-separated; entries[i].name points in here */
    char *prefix;     /* "archive/" */
    size_t prefix_len;
    uint32_t *table;  /* open addressing: entry index + 1, 0 = empty */
    size_t table_mask;
};

uint32_t sdict__crc32(uint32_t crc, const void *p, size_t n) {
    return (uint32_t)libdeflate_crc32(crc, p, n);
}

/* miniz's MZ_TOLOWER: ASCII only. */
static uint8_t ascii_lower(uint8_t c) { return c >= 'A' && c <= 'Z' ? (uint8_t)(c - 'A' + 'a') : c; }

/* FNV-1a over the ASCII-lowercased bytes (so names that miniz's case-insensitive lookup
   confuses land in one probe chain), continued across calls so prefix + relname hashes without
   concatenating. */
static uint64_t hash_bytes(uint64_t h, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        h ^= ascii_lower((uint8_t)s[i]);
        h *= 0x100000001b3ull;
    }
    return h;
}
/* FNV's offset basis, keyed with the process's random seed: record names come from the file */
#define HASH_SEED (0xcbf29ce484222325ull ^ sdict__hash_seed())

static int64_t off64(uint64_t off) { return off > INT64_MAX ? -1 : (int64_t)off; }

/*==================================================================================================
 MARK: End records
==================================================================================================*/

typedef struct end_info {
    uint64_t n_entries;
    uint64_t cd_size;
    uint64_t cd_off;
    uint64_t end_start; /* first byte of the end records (ZIP64 record, or classic EOCD) */
} end_info;

/*
 Finds the classic EOCD: the last "PK\5\6" whose record and comment end exactly at the end of
 the file, scanning back at most 64 KiB of comment. A signature whose comment length does not
 fit is remembered so the error can say what was found.
*/
static sdict_status find_eocd(const sdict__source *src, uint8_t *tail, uint64_t *eocd_off,
                              sdict_error *err) {
    uint64_t size = src->size;
    if (size < EOCD_SIZE)
        return sdict__err(err, SDICT_E_TRUNCATED, NULL, off64(size),
                          "expected a %u-byte end-of-central-directory record but the file has "
                          "only %llu bytes",
                          EOCD_SIZE, (unsigned long long)size);
    uint64_t span = size < EOCD_SIZE + MAX_COMMENT ? size : EOCD_SIZE + MAX_COMMENT;
    uint64_t base = size - span;
    sdict_status st = sdict__source_read(src, base, tail, (size_t)span, NULL, err);
    if (st != SDICT_OK)
        return st;
    /* Classifies the signature nearest the end when none fits exactly, for the message. */
    int kind = 0; /* 0 none, 1 cut short (truncated), 2 followed by stray bytes */
    uint64_t kind_off = 0;
    for (uint64_t i = span - 4 + 1; i-- > 0;) {
        if (sdict__le32(tail + i) != SIG_EOCD)
            continue;
        uint64_t end = i + EOCD_SIZE + (i + EOCD_SIZE <= span ? sdict__le16(tail + i + 20) : 0);
        if (i + EOCD_SIZE <= span && end == span) {
            /* miniz (torch's zip reader, mz_zip_reader_locate_header_sig) takes the last
               signature with at least 22 bytes after it, whatever its comment length says: a
               second one later in the file, inside this record's comment, is the end record
               torch reads. */
            for (uint64_t j = i + 1; j + EOCD_SIZE <= span; j++)
                if (sdict__le32(tail + j) == SIG_EOCD)
                    return sdict__err(err, SDICT_E_ZIP_CORRUPT, NULL, off64(base + j),
                                      "ambiguous zip: a second end-of-central-directory "
                                      "signature here, inside the archive comment of the end "
                                      "record at %llu, is the one torch (miniz) reads; "
                                      "statedict would read the other",
                                      (unsigned long long)(base + i));
            /* An earlier signature whose comment also ends exactly at the end of the file is
               a second complete end record: readers that search forwards take that one. */
            for (uint64_t j = i; j-- > 0;)
                if (sdict__le32(tail + j) == SIG_EOCD &&
                    j + EOCD_SIZE + sdict__le16(tail + j + 20) == span)
                    return sdict__err(err, SDICT_E_ZIP_CORRUPT, NULL, off64(base + j),
                                      "ambiguous zip: two end-of-central-directory records end "
                                      "the file, this one and (in its comment) the one at %llu, "
                                      "which torch (miniz) reads",
                                      (unsigned long long)(base + i));
            *eocd_off = base + i;
            return SDICT_OK;
        }
        if (kind == 0) {
            kind = (i + EOCD_SIZE > span || end > span) ? 1 : 2;
            kind_off = base + i;
        }
    }
    if (kind == 1)
        return sdict__err(err, SDICT_E_TRUNCATED, NULL, off64(kind_off),
                          "end-of-central-directory record (with its comment) runs past the end "
                          "of the %llu-byte file: file truncated",
                          (unsigned long long)size);
    if (kind == 2)
        return sdict__err(err, SDICT_E_ZIP_CORRUPT, NULL, off64(kind_off),
                          "expected the end-of-central-directory record and its comment to end "
                          "the file, found stray bytes after it");
    return sdict__err(err, SDICT_E_TRUNCATED, NULL, off64(size),
                      "expected an end-of-central-directory record (PK\\5\\6) in the last %llu "
                      "bytes, found none: file truncated or not a zip archive",
                      (unsigned long long)span);
}

static sdict_status read_end(const sdict__source *src, end_info *out, sdict_error *err) {
    uint8_t *tail = sdict__malloc(EOCD_SIZE + MAX_COMMENT);
    if (!tail)
        return sdict__err(err, SDICT_E_NOMEM, NULL, -1, "out of memory reading the zip end");
    uint64_t eo = 0;
    sdict_status st = find_eocd(src, tail, &eo, err);
    if (st != SDICT_OK) {
        sdict__free(tail);
        return st;
    }
    uint8_t e[EOCD_SIZE];
    st = sdict__source_read(src, eo, e, EOCD_SIZE, NULL, err);
    sdict__free(tail);
    if (st != SDICT_OK)
        return st;
    uint16_t disk = sdict__le16(e + 4), cd_disk = sdict__le16(e + 6);
    uint16_t n_disk = sdict__le16(e + 8), n_total = sdict__le16(e + 10);
    uint32_t cd_size = sdict__le32(e + 12), cd_off = sdict__le32(e + 16);
    if (n_disk != n_total)
        return sdict__err(err, SDICT_E_ZIP_UNSUPPORTED, NULL, off64(eo + 8),
                          "multi-disk archive: end record counts %u entries on this disk but %u "
                          "in total",
                          n_disk, n_total);

    /* The ZIP64 locator, when present, sits right before the classic record. */
    uint8_t l[LOC64_SIZE];
    bool zip64 = false;
    if (eo >= LOC64_SIZE) {
        st = sdict__source_read(src, eo - LOC64_SIZE, l, LOC64_SIZE, NULL, err);
        if (st != SDICT_OK)
            return st;
        zip64 = sdict__le32(l) == SIG_LOC64;
    }
    if (!zip64) {
        if (disk != 0 || cd_disk != 0)
            return sdict__err(err, SDICT_E_ZIP_UNSUPPORTED, NULL, off64(eo + 4),
                              "multi-disk archive: expected disk numbers 0/0, found %u/%u", disk,
                              cd_disk);
        if (n_total == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_off == 0xFFFFFFFFu)
            return sdict__err(err, SDICT_E_ZIP_CORRUPT, NULL, off64(eo),
                              "end record defers to ZIP64 (a field is 0xFFFF..) but there is no "
                              "ZIP64 locator before it");
        out->n_entries = n_total;
        out->cd_size = cd_size;
        out->cd_off = cd_off;
        out->end_start = eo;
        return SDICT_OK;
    }

    uint64_t lo = eo - LOC64_SIZE;
    uint32_t l_disk = sdict__le32(l + 4), l_total = sdict__le32(l + 16);
    uint64_t z_off = sdict__le64(l + 8);
    if (l_disk != 0 || l_total > 1)
        return sdict__err(err, SDICT_E_ZIP_UNSUPPORTED, NULL, off64(lo),
                          "multi-disk archive: ZIP64 locator says record on disk %u of %u disks",
                          l_disk, l_total);
    uint64_t z_end;
    if (!sdict__add_u64(z_off, EOCD64_SIZE, &z_end) || z_end > lo)
        return sdict__err(err, SDICT_E_ZIP_CORRUPT, NULL, off64(lo + 8),
                          "ZIP64 locator points at offset %llu, expected a 56-byte ZIP64 end "
                          "record ending by the locator at %llu",
                          (unsigned long long)z_off, (unsigned long long)lo);
    uint8_t z[EOCD64_SIZE];
    st = sdict__source_read(src, z_off, z, EOCD64_SIZE, NULL, err);
    if (st != SDICT_OK)
        return st;
    if (sdict__le32(z) != SIG_EOCD64)
        return sdict__err(err, SDICT_E_ZIP_CORRUPT, NULL, off64(z_off),
                          "expected ZIP64 end record signature PK\\6\\6, found 0x%08x",
                          sdict__le32(z));
    uint64_t rec_size = sdict__le64(z + 4);
    uint64_t rec_end;
    if (rec_size < EOCD64_SIZE - 12 || !sdict__add_u64(z_off + 12, rec_size, &rec_end) ||
        rec_end > lo)
        return sdict__err(err, SDICT_E_ZIP_CORRUPT, NULL, off64(z_off + 4),
                          "ZIP64 end record size %llu: expected 44..%llu (up to the locator)",
                          (unsigned long long)rec_size, (unsigned long long)(lo - z_off - 12));
    uint32_t z_disk = sdict__le32(z + 16), z_cd_disk = sdict__le32(z + 20);
    uint64_t z_n_disk = sdict__le64(z + 24), z_n_total = sdict__le64(z + 32);
    uint64_t z_cd_size = sdict__le64(z + 40), z_cd_off = sdict__le64(z + 48);
    if (z_disk != 0 || z_cd_disk != 0 || z_n_disk != z_n_total)
        return sdict__err(err, SDICT_E_ZIP_UNSUPPORTED, NULL, off64(z_off + 16),
                          "multi-disk archive: ZIP64 end record disks %u/%u, entries %llu on "
                          "this disk of %llu",
                          z_disk, z_cd_disk, (unsigned long long)z_n_disk,
                          (unsigned long long)z_n_total);
    /* Classic fields that are not saturated must agree with the ZIP64 ones. */
    if ((n_total != 0xFFFF && n_total != z_n_total) ||
        (cd_size != 0xFFFFFFFFu && cd_size != z_cd_size) ||
        (cd_off != 0xFFFFFFFFu && cd_off != z_cd_off))
        return sdict__err(err, SDICT_E_ZIP_CORRUPT, NULL, off64(eo),
                          "ambiguous zip: end records disagree (torch's miniz reads the ZIP64 "
                          "one, classic readers the other): classic says %u entries, directory "
                          "%u bytes at %u; ZIP64 says %llu entries, %llu bytes at %llu",
                          n_total, cd_size, cd_off, (unsigned long long)z_n_total,
                          (unsigned long long)z_cd_size, (unsigned long long)z_cd_off);
    out->n_entries = z_n_total;
    out->cd_size = z_cd_size;
    out->cd_off = z_cd_off;
    out->end_start = z_off;
    return SDICT_OK;
}

/*==================================================================================================
 MARK: Central directory
==================================================================================================*/

/*
 Applies the ZIP64 extra (id 1) of a central entry: it holds 8-byte values only for the fields
 whose 32-bit slot is saturated, in the fixed order uncompressed size, compressed size, local
 header offset, then a 4-byte disk number.
*/
static sdict_status apply_zip64_extra(const uint8_t *x, uint16_t xlen, uint64_t x_off,
                                      sdict__zip_entry *e, bool need_size, bool need_comp,
                                      bool need_ofs, bool need_disk, const char *name,
                                      sdict_error *err) {
    bool found = false;
    size_t i = 0;
    while (i + 4 <= xlen) {
        uint16_t id = sdict__le16(x + i), len = sdict__le16(x + i + 2);
        if (len > xlen - i - 4)
            return sdict__err(err, SDICT_E_ZIP_CORRUPT, name, off64(x_off + i),
                              "extra field 0x%04x claims %u bytes but only %zu remain in the "
                              "entry's extra area",
                              id, len, (size_t)(xlen - i - 4));
        if (id == 0x0001 && !found) {
            found = true;
            const uint8_t *p = x + i + 4;
            size_t need = (need_size ? 8u : 0u) + (need_comp ? 8u : 0u) + (need_ofs ? 8u : 0u) +
                          (need_disk ? 4u : 0u);
            if (len < need)
                return sdict__err(err, SDICT_E_ZIP_CORRUPT, name, off64(x_off + i),
                                  "ZIP64 extra has %u bytes, expected at least %zu for the "
                                  "saturated size/offset fields",
                                  len, need);
            if (need_size) {
                e->size = sdict__le64(p);
                p += 8;
            }
            if (need_comp) {
                e->comp_size = sdict__le64(p);
                p += 8;
            }
            if (need_ofs) {
                e->header_offset = sdict__le64(p);
                p += 8;
            }
            if (need_disk && sdict__le32(p) != 0)
                return sdict__err(err, SDICT_E_ZIP_UNSUPPORTED, name, off64(x_off + i),
                                  "multi-disk archive: entry starts on disk %u",
                                  sdict__le32(p));
        }
        i += 4u + len;
    }
    if (!found && (need_size || need_comp || need_ofs || need_disk))
        return sdict__err(err, SDICT_E_ZIP_CORRUPT, name, off64(x_off),
                          "entry has a saturated (0xFFFFFFFF) size or offset but no ZIP64 extra "
                          "field");
    return SDICT_OK;
}

static const sdict__zip_entry *lookup(const sdict__zip *z, const char *a, size_t alen,
                                      const char *b, size_t blen) {
    uint64_t h = hash_bytes(hash_bytes(HASH_SEED, a, alen), b, blen);
    for (size_t i = (size_t)h & z->table_mask;; i = (i + 1) & z->table_mask) {
        uint32_t slot = z->table[i];
        if (!slot)
            return NULL;
        const sdict__zip_entry *e = &z->entries[slot - 1];
        if (memcmp(e->name, a, alen) == 0 && strncmp(e->name + alen, b, blen) == 0 &&
            e->name[alen + blen] == '\0')
            return e;
    }
}

/* Parses the central directory bytes cd (cd_size long, at file offset cd_off). */
static sdict_status parse_cd(sdict__zip *z, const uint8_t *cd, const end_info *end,
                             uint64_t max_records, sdict_error *err) {
    uint64_t n = end->n_entries;
    if (n == 0)
        return sdict__err(err, SDICT_E_ZIP_CORRUPT, NULL, off64(end->cd_off),
                          "archive does not contain any files");
    if (n > end->cd_size / CENTRAL_SIZE)
        return sdict__err(err, SDICT_E_ZIP_CORRUPT, NULL, off64(end->cd_off),
                          "end record claims %llu entries but a %llu-byte central directory "
                          "holds at most %llu",
                          (unsigned long long)n, (unsigned long long)end->cd_size,
                          (unsigned long long)(end->cd_size / CENTRAL_SIZE));
    if (n >= UINT32_MAX)
        return sdict__err(err, SDICT_E_LIMIT, NULL, off64(end->cd_off),
                          "archive has %llu entries; at most 2^32-2 are supported",
                          (unsigned long long)n);
    if (n > max_records)
        return sdict__err(err, SDICT_E_LIMIT, NULL, off64(end->cd_off),
                          "archive has %llu entries, more than the max_records limit %llu",
                          (unsigned long long)n, (unsigned long long)max_records);
    /* n <= cd_size / 46 <= file size, so these fit size_t wherever the cd was read. */
    z->entries = sdict__calloc((size_t)n, sizeof *z->entries);
    z->names = sdict__malloc((size_t)end->cd_size);
    if (!z->entries || !z->names)
        return sdict__err(err, SDICT_E_NOMEM, NULL, -1, "out of memory for %llu zip entries",
                          (unsigned long long)n);
    size_t pos = 0, name_pos = 0;
    for (size_t k = 0; k < n; k++) {
        uint64_t at = end->cd_off + pos;
        if (end->cd_size - pos < CENTRAL_SIZE)
            return sdict__err(err, SDICT_E_ZIP_CORRUPT, NULL, off64(at),
                              "central directory ends after %zu of %llu entries", k,
                              (unsigned long long)n);
        const uint8_t *h = cd + pos;
        if (sdict__le32(h) != SIG_CENTRAL)
            return sdict__err(err, SDICT_E_ZIP_CORRUPT, NULL, off64(at),
                              "expected central directory entry %zu signature PK\\1\\2, found "
                              "0x%08x",
                              k, sdict__le32(h));
        uint16_t nlen = sdict__le16(h + 28), xlen = sdict__le16(h + 30), clen = sdict__le16(h + 32);
        size_t total = (size_t)CENTRAL_SIZE + nlen + xlen + clen;
        if (total > end->cd_size - pos)
            return sdict__err(err, SDICT_E_ZIP_CORRUPT, NULL, off64(at),
                              "central directory entry %zu needs %zu bytes but only %llu remain "
                              "in the directory",
                              k, total, (unsigned long long)(end->cd_size - pos));
        const char *raw = (const char *)h + CENTRAL_SIZE;
        if (memchr(raw, '\0', nlen))
            return sdict__err(err, SDICT_E_ZIP_CORRUPT, NULL, off64(at + CENTRAL_SIZE),
                              "entry %zu name contains a NUL byte", k);
        char *name = z->names + name_pos;
        memcpy(name, raw, nlen);
        name[nlen] = '\0';
        name_pos += (size_t)nlen + 1; /* fits: each entry is >= 46 bytes of cd */
        sdict__zip_entry *e = &z->entries[k];
        e->name = name;
        e->flags = sdict__le16(h + 8);
        e->method = sdict__le16(h + 10);
        e->crc32 = sdict__le32(h + 16);
        e->comp_size = sdict__le32(h + 20);
        e->size = sdict__le32(h + 24);
        e->header_offset = sdict__le32(h + 42);
        uint16_t disk = sdict__le16(h + 34);
        if (e->flags & 0x0041) /* bit 0 encrypted, bit 6 strong encryption */
            return sdict__err(err, SDICT_E_ZIP_UNSUPPORTED, name, off64(at + 8),
                              "entry is encrypted (flags 0x%04x); encrypted archives are not "
                              "supported",
                              e->flags);
        sdict_status st = apply_zip64_extra(
            h + CENTRAL_SIZE + nlen, xlen, at + CENTRAL_SIZE + nlen, e, e->size == 0xFFFFFFFFu,
            e->comp_size == 0xFFFFFFFFu, e->header_offset == 0xFFFFFFFFu, disk == 0xFFFF, name, err);
        if (st != SDICT_OK)
            return st;
        if (disk != 0 && disk != 0xFFFF)
            return sdict__err(err, SDICT_E_ZIP_UNSUPPORTED, name, off64(at + 34),
                              "multi-disk archive: entry starts on disk %u", disk);
        pos += total;
        z->count = k + 1;
    }
    if (pos != end->cd_size)
        return sdict__err(err, SDICT_E_ZIP_CORRUPT, NULL, off64(end->cd_off + pos),
                          "end record says %llu entries in %llu bytes, but those entries end "
                          "after %zu bytes",
                          (unsigned long long)n, (unsigned long long)end->cd_size, pos);
    return SDICT_OK;
}

/* Archive folder from the first entry, as torch's PyTorchStreamReader does; all entries in it. */
static sdict_status check_prefix(sdict__zip *z, uint64_t cd_off, sdict_error *err) {
    const char *first = z->entries[0].name;
    const char *slash = strchr(first, '/');
    if (!slash)
        return sdict__err(err, SDICT_E_ZIP_CORRUPT, first, off64(cd_off),
                          "file in archive is not in a subdirectory: expected \"<folder>/...\", "
                          "found \"%s\"",
                          first);
    z->prefix_len = (size_t)(slash - first) + 1;
    z->prefix = sdict__strndup(first, z->prefix_len);
    if (!z->prefix)
        return sdict__err(err, SDICT_E_NOMEM, NULL, -1, "out of memory");
    for (size_t i = 1; i < z->count; i++)
        if (strncmp(z->entries[i].name, z->prefix, z->prefix_len) != 0)
            return sdict__err(err, SDICT_E_ZIP_CORRUPT, z->entries[i].name,
                              off64(z->entries[i].header_offset),
                              "ambiguous zip: record outside the archive folder: expected a "
                              "name starting with \"%s\" (torch's record lookups ignore letter "
                              "case, its record listing does not)",
                              z->prefix);
    return SDICT_OK;
}

static sdict_status build_table(sdict__zip *z, sdict_error *err) {
    size_t cap = 16;
    while (cap < z->count * 2)
        cap *= 2;
    z->table = sdict__calloc(cap, sizeof *z->table);
    if (!z->table)
        return sdict__err(err, SDICT_E_NOMEM, NULL, -1, "out of memory for the entry index");
    z->table_mask = cap - 1;
    /* torch finds records with mz_zip_reader_locate_file(..., flags 0): a binary search over
       the names sorted case-insensitively (mz_zip_filename_compare), so of two names equal but
       for ASCII case, or exactly equal, which one torch reads depends on the sort; statedict's
       exact lookup could read the other. */
    for (size_t k = 0; k < z->count; k++) {
        const char *name = z->entries[k].name;
        size_t len = strlen(name);
        size_t i = (size_t)hash_bytes(HASH_SEED, name, len) & z->table_mask;
        for (; z->table[i]; i = (i + 1) & z->table_mask) {
            const sdict__zip_entry *o = &z->entries[z->table[i] - 1];
            size_t j = 0;
            while (j < len && o->name[j] &&
                   ascii_lower((uint8_t)o->name[j]) == ascii_lower((uint8_t)name[j]))
                j++;
            if (j < len || o->name[j])
                continue;
            if (strcmp(o->name, name) == 0)
                return sdict__err(err, SDICT_E_ZIP_CORRUPT, name,
                                  off64(z->entries[k].header_offset),
                                  "ambiguous zip: duplicate entry name (also the record at "
                                  "offset %llu); torch (miniz) reads whichever its sorted "
                                  "lookup finds",
                                  (unsigned long long)o->header_offset);
            return sdict__err(err, SDICT_E_ZIP_CORRUPT, name, off64(z->entries[k].header_offset),
                              "ambiguous zip: name differs only in letter case from \"%s\" (at "
                              "offset %llu); torch (miniz) looks names up case-insensitively and "
                              "may read either",
                              o->name, (unsigned long long)o->header_offset);
        }
        z->table[i] = (uint32_t)(k + 1);
    }
    return SDICT_OK;
}

/* Finds the ZIP64 extra (id 1) in a local header's extra area; NULL when absent or malformed. */
static const uint8_t *local_zip64_extra(const uint8_t *x, uint16_t xlen, uint16_t *len) {
    size_t i = 0;
    while (i + 4 <= xlen) {
        uint16_t id = sdict__le16(x + i), n = sdict__le16(x + i + 2);
        if (n > xlen - i - 4)
            return NULL;
        if (id == 0x0001) {
            *len = n;
            return x + i + 4;
        }
        i += 4u + n;
    }
    return NULL;
}

#define SIG_DESCRIPTOR 0x08074b50u
/* Flag bits whose disagreement changes how a reader takes the record: encryption, data
   descriptor, strong encryption, UTF-8 names. */
#define FLAGS_COMPARED 0x0849u

/*
 Checks what a reader that trusts local headers would see against the central directory, so
 that every zip reader finds the same records (torch's miniz takes only the name and extra
 lengths from the local header, as statedict does; Python's zipfile, unzip and streaming
 readers take more): signature, name, method, the flags above, and the CRC and sizes, which
 must equal the central ones unless flag bit 3 defers them to a data descriptor (then 0 or
 equal). Sets e->data_offset and *rec_end (the end of the payload and its descriptor, whose
 CRC and sizes must also equal the central ones).
*/
static sdict_status check_local(const sdict__zip *z, sdict__zip_entry *e, uint64_t cd_off,
                                uint8_t *buf, uint64_t *rec_end, sdict_error *err) {
    const sdict__source *src = z->src;
    size_t nlen = strlen(e->name);
    uint64_t lend;
    if (!sdict__add_u64(e->header_offset, LOCAL_SIZE + nlen, &lend) || lend > cd_off)
        return sdict__err(err, SDICT_E_ZIP_CORRUPT, e->name, off64(e->header_offset),
                          "local header offset %llu: expected a %zu-byte header before the "
                          "central directory at %llu",
                          (unsigned long long)e->header_offset, LOCAL_SIZE + nlen,
                          (unsigned long long)cd_off);
    sdict_status st = sdict__source_read(src, e->header_offset, buf, LOCAL_SIZE + nlen, e->name,
                                         err);
    if (st != SDICT_OK)
        return st;
    if (sdict__le32(buf) != SIG_LOCAL)
        return sdict__err(err, SDICT_E_ZIP_CORRUPT, e->name, off64(e->header_offset),
                          "expected local header signature PK\\3\\4, found 0x%08x",
                          sdict__le32(buf));
    uint16_t lnlen = sdict__le16(buf + 26), lxlen = sdict__le16(buf + 28);
    if (lnlen != nlen || memcmp(buf + LOCAL_SIZE, e->name, nlen) != 0)
        return sdict__err(err, SDICT_E_ZIP_CORRUPT, e->name, off64(e->header_offset + 26),
                          "ambiguous zip: local header name (%u bytes) differs from the central "
                          "directory name (%zu bytes)",
                          lnlen, nlen);
    uint64_t x_end;
    if (!sdict__add_u64(lend, lxlen, &x_end) || x_end > cd_off)
        return sdict__err(err, SDICT_E_ZIP_CORRUPT, e->name, off64(e->header_offset + 28),
                          "local extra field of %u bytes runs past the central directory at "
                          "%llu",
                          lxlen, (unsigned long long)cd_off);
    if (lxlen && (st = sdict__source_read(src, lend, buf + LOCAL_SIZE + nlen, lxlen, e->name,
                                          err)) != SDICT_OK)
        return st;
    const uint8_t *lx = buf + LOCAL_SIZE + nlen;
    uint16_t lflags = sdict__le16(buf + 6), lmethod = sdict__le16(buf + 8);
    uint32_t lcrc = sdict__le32(buf + 14);
    uint64_t lcomp = sdict__le32(buf + 18), lsize = sdict__le32(buf + 22);
    if (lmethod != e->method)
        return sdict__err(err, SDICT_E_ZIP_CORRUPT, e->name, off64(e->header_offset + 8),
                          "ambiguous zip: local header says compression method %u, the central "
                          "directory %u (torch reads the central one, other readers the local)",
                          lmethod, e->method);
    if ((lflags ^ e->flags) & FLAGS_COMPARED)
        return sdict__err(err, SDICT_E_ZIP_CORRUPT, e->name, off64(e->header_offset + 6),
                          "ambiguous zip: local header flags 0x%04x disagree with the central "
                          "directory's 0x%04x",
                          lflags, e->flags);
    uint16_t z64len = 0;
    const uint8_t *z64 = local_zip64_extra(lx, lxlen, &z64len);
    bool descriptor = (e->flags & 0x0008) != 0;
    if (!descriptor) {
        /* The local fields are the record's: saturated ones continue in the local ZIP64
           extra (uncompressed size first, then compressed). */
        const uint8_t *p = z64;
        uint16_t left = z64 ? z64len : 0;
        if (lsize == 0xFFFFFFFFu && p && left >= 8) {
            lsize = sdict__le64(p);
            p += 8;
            left = (uint16_t)(left - 8);
        }
        if (lcomp == 0xFFFFFFFFu && p && left >= 8)
            lcomp = sdict__le64(p);
    }
    bool zero = lcrc == 0 && lcomp == 0 && lsize == 0;
    if ((!descriptor || !zero) &&
        (lcrc != e->crc32 || lcomp != e->comp_size || lsize != e->size))
        return sdict__err(err, SDICT_E_ZIP_CORRUPT, e->name, off64(e->header_offset + 14),
                          "ambiguous zip: local header says CRC 0x%08x, %llu bytes compressed, "
                          "%llu uncompressed; the central directory 0x%08x, %llu, %llu",
                          lcrc, (unsigned long long)lcomp, (unsigned long long)lsize, e->crc32,
                          (unsigned long long)e->comp_size, (unsigned long long)e->size);
    /* A stored record's two sizes must agree (else a mapped storage of `size` bytes would
       run into the records that follow), and a deflated one cannot inflate beyond
       deflate's maximum ratio (about 1032:1): storages are sized from `size` before any
       inflating, so a lie there must not be able to reserve gigabytes. */
    if (e->method == 0 && e->comp_size != e->size)
        return sdict__err(err, SDICT_E_ZIP_CORRUPT, e->name, off64(e->header_offset),
                          "stored record has compressed size %llu but size %llu",
                          (unsigned long long)e->comp_size, (unsigned long long)e->size);
    if (e->method == 8 && e->size / 1032 > e->comp_size + 64)
        return sdict__err(err, SDICT_E_ZIP_CORRUPT, e->name, off64(e->header_offset),
                          "deflated record of %llu bytes claims to inflate to %llu bytes, "
                          "beyond deflate's maximum ratio",
                          (unsigned long long)e->comp_size, (unsigned long long)e->size);
    uint64_t data_end;
    e->data_offset = x_end;
    if (!sdict__add_u64(e->data_offset, e->comp_size, &data_end) || data_end > cd_off)
        return sdict__err(err, SDICT_E_ZIP_CORRUPT, e->name, off64(e->header_offset),
                          "record claims %llu bytes at offset %llu, past the central "
                          "directory at %llu (file size %llu)",
                          (unsigned long long)e->comp_size, (unsigned long long)e->data_offset,
                          (unsigned long long)cd_off, (unsigned long long)src->size);
    *rec_end = data_end;
    if (!descriptor)
        return SDICT_OK;
    /* Data descriptor: optional signature, CRC, then both sizes, 8 bytes each when the local
       header carries a ZIP64 extra (as miniz writes it), else 4. */
    uint8_t d[24];
    size_t w = z64 ? 8 : 4, dlen = 4 + 2 * w;
    if (cd_off - data_end >= 4) {
        if ((st = sdict__source_read(src, data_end, d, 4, e->name, err)) != SDICT_OK)
            return st;
        if (sdict__le32(d) == SIG_DESCRIPTOR)
            dlen += 4;
    }
    if (cd_off - data_end < dlen)
        return sdict__err(err, SDICT_E_ZIP_CORRUPT, e->name, off64(data_end),
                          "expected a %zu-byte data descriptor after the payload (flag bit 3), "
                          "found the central directory",
                          dlen);
    if ((st = sdict__source_read(src, data_end, d, dlen, e->name, err)) != SDICT_OK)
        return st;
    const uint8_t *q = d + (dlen - (4 + 2 * w));
    uint32_t dcrc = sdict__le32(q);
    uint64_t dcomp = w == 8 ? sdict__le64(q + 4) : sdict__le32(q + 4);
    uint64_t dsize = w == 8 ? sdict__le64(q + 4 + w) : sdict__le32(q + 4 + w);
    if (dcrc != e->crc32 || dcomp != e->comp_size || dsize != e->size)
        return sdict__err(err, SDICT_E_ZIP_CORRUPT, e->name, off64(data_end),
                          "ambiguous zip: data descriptor says CRC 0x%08x, %llu bytes "
                          "compressed, %llu uncompressed; the central directory 0x%08x, %llu, "
                          "%llu",
                          dcrc, (unsigned long long)dcomp, (unsigned long long)dsize, e->crc32,
                          (unsigned long long)e->comp_size, (unsigned long long)e->size);
    *rec_end = data_end + dlen;
    return SDICT_OK;
}

typedef struct rec_span {
    const sdict__zip_entry *e;
    uint64_t end; /* past the payload and its data descriptor */
} rec_span;

static int cmp_span(const void *a, const void *b) {
    const rec_span *x = a, *y = b;
    return x->e->header_offset < y->e->header_offset ? -1
                                                     : x->e->header_offset > y->e->header_offset;
}

/*
 Checks every local header (check_local), then that the records, taken in file order, tile the
 bytes before the central directory exactly: the first at offset 0, each beginning where the
 previous one's descriptor ends, the last ending at the central directory. Overlaps would let
 one payload be read as two; gaps and prefix data hold bytes no central entry describes, which
 streaming readers (local header scanners) and readers that correct offsets for prefix data
 (Python's zipfile) would take as records while torch skips them.
*/
static sdict_status check_locals(sdict__zip *z, uint64_t cd_off, sdict_error *err) {
    uint8_t *buf = sdict__malloc(LOCAL_SIZE + 2u * 0xFFFFu);
    rec_span *order = sdict__calloc(z->count, sizeof *order);
    if (!buf || !order) {
        sdict__free(buf);
        sdict__free(order);
        return sdict__err(err, SDICT_E_NOMEM, NULL, -1, "out of memory");
    }
    sdict_status st = SDICT_OK;
    for (size_t k = 0; k < z->count && st == SDICT_OK; k++) {
        order[k].e = &z->entries[k];
        st = check_local(z, &z->entries[k], cd_off, buf, &order[k].end, err);
    }
    sdict__free(buf);
    if (st == SDICT_OK)
        qsort(order, z->count, sizeof *order, cmp_span);
    uint64_t at = 0;
    for (size_t k = 0; k < z->count && st == SDICT_OK; k++) {
        const sdict__zip_entry *b = order[k].e;
        if (at > b->header_offset)
            st = sdict__err(err, SDICT_E_ZIP_CORRUPT, b->name, off64(b->header_offset),
                            "ambiguous zip: record overlaps \"%s\", which spans bytes "
                            "%llu..%llu (one stretch of bytes read as two records)",
                            order[k - 1].e->name, (unsigned long long)order[k - 1].e->header_offset,
                            (unsigned long long)at);
        else if (at < b->header_offset)
            st = sdict__err(err, SDICT_E_ZIP_CORRUPT, NULL, off64(at),
                            "ambiguous zip: %llu bytes here, before the local header of \"%s\", "
                            "belong to no central directory entry (prefix data or a hidden "
                            "record: readers that scan local headers or correct offsets for "
                            "prefix data would see other records than torch)",
                            (unsigned long long)(b->header_offset - at), b->name);
        else
            at = order[k].end;
    }
    if (st == SDICT_OK && at != cd_off)
        st = sdict__err(err, SDICT_E_ZIP_CORRUPT, NULL, off64(at),
                        "ambiguous zip: %llu bytes here, after the last record and before the "
                        "central directory at %llu, belong to no central directory entry",
                        (unsigned long long)(cd_off - at), (unsigned long long)cd_off);
    sdict__free(order);
    return st;
}

sdict_status sdict__zip_open(const sdict__source *src, const sdict_limits *limits,
                             sdict__zip **out, sdict_error *err) {
    if (!out)
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "out is NULL");
    *out = NULL;
    if (!src)
        return sdict__err(err, SDICT_E_INVALID_ARG, NULL, -1, "source is NULL");
    uint64_t max_records = limits && limits->max_records ? limits->max_records
                                                         : DEFAULT_MAX_RECORDS;
    end_info end = {0, 0, 0, 0};
    sdict_status st = read_end(src, &end, err);
    if (st != SDICT_OK)
        return st;
    uint64_t cd_end;
    if (!sdict__add_u64(end.cd_off, end.cd_size, &cd_end) || cd_end > end.end_start)
        return sdict__err(err, SDICT_E_ZIP_CORRUPT, NULL, off64(end.end_start),
                          "central directory of %llu bytes at offset %llu: expected it to end "
                          "by the end records at %llu",
                          (unsigned long long)end.cd_size, (unsigned long long)end.cd_off,
                          (unsigned long long)end.end_start);
    if (end.cd_size > SIZE_MAX - 1)
        return sdict__err(err, SDICT_E_LIMIT, NULL, off64(end.cd_off),
                          "central directory too large for this platform");

    sdict__zip *z = sdict__calloc(1, sizeof *z);
    if (!z)
        return sdict__err(err, SDICT_E_NOMEM, NULL, -1, "out of memory");
    z->src = src;
    z->max_inflate = limits && limits->max_inflate ? limits->max_inflate : DEFAULT_MAX_INFLATE;

    /* A mapped or in-memory source is parsed in place; a pread source gets one copy. */
    const uint8_t *cd = NULL;
    uint8_t *cd_copy = NULL;
    if (src->data) {
        cd = src->data + end.cd_off;
    } else {
        cd_copy = sdict__malloc((size_t)end.cd_size);
        if (!cd_copy) {
            sdict__zip_close(z);
            return sdict__err(err, SDICT_E_NOMEM, NULL, off64(end.cd_off),
                              "out of memory for a %llu-byte central directory",
                              (unsigned long long)end.cd_size);
        }
        st = sdict__source_read(src, end.cd_off, cd_copy, (size_t)end.cd_size, NULL, err);
        cd = cd_copy;
    }
    if (st == SDICT_OK)
        st = parse_cd(z, cd, &end, max_records, err);
    sdict__free(cd_copy);
    if (st == SDICT_OK)
        st = check_prefix(z, end.cd_off, err);
    if (st == SDICT_OK)
        st = build_table(z, err);
    if (st == SDICT_OK)
        st = check_locals(z, end.cd_off, err);
    if (st != SDICT_OK) {
        sdict__zip_close(z);
        return st;
    }
    *out = z;
    return SDICT_OK;
}

void sdict__zip_close(sdict__zip *z) {
    if (!z)
        return;
    sdict__free(z->entries);
    sdict__free(z->names);
    sdict__free(z->prefix);
    sdict__free(z->table);
    sdict__free(z);
}

const char *sdict__zip_prefix(const sdict__zip *z) { return z ? z->prefix : ""; }

size_t sdict__zip_count(const sdict__zip *z) { return z ? z->count : 0; }

const sdict__zip_entry *sdict__zip_entry_at(const sdict__zip *z, size_t i) {
    return z && i < z->count ? &z->entries[i] : NULL;
}

const sdict__zip_entry *sdict__zip_find(const sdict__zip *z, const char *relname) {
    if (!z || !relname)
        return NULL;
    return lookup(z, z->prefix, z->prefix_len, relname, strlen(relname));
}

/*==================================================================================================
 MARK: Record reads
==================================================================================================*/

static sdict_status inflate_into(const sdict__zip *z, const sdict__zip_entry *e, uint8_t *dst,
                                 sdict_error *err) {
    if (e->size > z->max_inflate)
        return sdict__err(err, SDICT_E_LIMIT, e->name, off64(e->data_offset),
                          "deflated record inflates to %llu bytes, more than the max_inflate "
                          "limit %llu",
                          (unsigned long long)e->size, (unsigned long long)z->max_inflate);
    if (e->comp_size > SIZE_MAX)
        return sdict__err(err, SDICT_E_LIMIT, e->name, off64(e->data_offset),
                          "compressed record too large for this platform");
    const uint8_t *in = NULL;
    uint8_t *copy = NULL;
    if (z->src->data) {
        in = z->src->data + e->data_offset;
    } else {
        copy = sdict__malloc((size_t)e->comp_size);
        if (!copy)
            return sdict__err(err, SDICT_E_NOMEM, e->name, off64(e->data_offset),
                              "out of memory for %llu compressed bytes",
                              (unsigned long long)e->comp_size);
        sdict_status st = sdict__source_read(z->src, e->data_offset, copy, (size_t)e->comp_size,
                                             e->name, err);
        if (st != SDICT_OK) {
            sdict__free(copy);
            return st;
        }
        in = copy;
    }
    struct libdeflate_decompressor *d = libdeflate_alloc_decompressor();
    if (!d) {
        sdict__free(copy);
        return sdict__err(err, SDICT_E_NOMEM, e->name, -1, "out of memory for a decompressor");
    }
    size_t got = 0;
    /* Output bounded by the declared size: a stream that would produce more fails with
       INSUFFICIENT_SPACE instead of writing past dst. */
    enum libdeflate_result r =
        libdeflate_deflate_decompress(d, in, (size_t)e->comp_size, dst, (size_t)e->size, &got);
    libdeflate_free_decompressor(d);
    sdict__free(copy);
    if (r == LIBDEFLATE_INSUFFICIENT_SPACE)
        return sdict__err(err, SDICT_E_ZIP_CORRUPT, e->name, off64(e->data_offset),
                          "deflate stream inflates to more than the declared %llu bytes",
                          (unsigned long long)e->size);
    if (r != LIBDEFLATE_SUCCESS)
        return sdict__err(err, SDICT_E_ZIP_CORRUPT, e->name, off64(e->data_offset),
                          "invalid deflate stream (libdeflate result %d)", (int)r);
    if (got != e->size)
        return sdict__err(err, SDICT_E_ZIP_CORRUPT, e->name, off64(e->data_offset),
                          "deflate stream inflates to %zu bytes, expected %llu", got,
                          (unsigned long long)e->size);
    return SDICT_OK;
}

sdict_status sdict__zip_read(const sdict__zip *z, const sdict__zip_entry *e, void *dst,
                             size_t dst_size, bool verify_crc, sdict_error *err) {
    if (!z || !e || (!dst && e->size))
        return sdict__err(err, SDICT_E_INVALID_ARG, e ? e->name : NULL, -1,
                          "zip, entry or destination is NULL");
    if (e < z->entries || e >= z->entries + z->count)
        return sdict__err(err, SDICT_E_INVALID_ARG, e->name, -1, "entry is not from this archive");
    if (e->size > dst_size)
        return sdict__err(err, SDICT_E_INVALID_ARG, e->name, -1,
                          "destination holds %zu bytes, record needs %llu", dst_size,
                          (unsigned long long)e->size);
    sdict_status st;
    if (e->method == 0) {
        if (e->comp_size != e->size)
            return sdict__err(err, SDICT_E_ZIP_CORRUPT, e->name, off64(e->header_offset),
                              "stored record has compressed size %llu but size %llu; expected "
                              "them equal",
                              (unsigned long long)e->comp_size, (unsigned long long)e->size);
        st = sdict__source_read(z->src, e->data_offset, dst, (size_t)e->size, e->name, err);
    } else if (e->method == 8) {
        st = inflate_into(z, e, dst, err);
    } else {
        return sdict__err(err, SDICT_E_ZIP_UNSUPPORTED, e->name, off64(e->header_offset + 8),
                          "compression method %u: only 0 (stored) and 8 (deflate) are supported",
                          e->method);
    }
    if (st != SDICT_OK)
        return st;
    /* A CRC field of 0 means "not computed" (torch 2.6+ compute_crc32=False): nothing to check. */
    if (verify_crc && e->crc32 != 0) {
        uint32_t crc = sdict__crc32(0, dst, (size_t)e->size);
        if (crc != e->crc32)
            return sdict__err(err, SDICT_E_CRC, e->name, off64(e->data_offset),
                              "CRC-32 of the payload is 0x%08x, central directory says 0x%08x",
                              crc, e->crc32);
    }
    return SDICT_OK;
}
