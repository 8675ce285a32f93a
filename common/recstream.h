/*
 * recstream.h - the record stream shared by the chunk file (.fmc) and the
 * embedding file (.fme): a checksummed header, then records framed as
 * u32 tag, u32 payload length, payload, u32 CRC-32C over tag, length and
 * payload, all little-endian, with an FNV-1a content hash over every byte
 * before the end record.  fm-formats(5) specifies both files.
 *
 * Only the framing lives here; what a header field or record means stays in
 * chunkfile.c and embedfile.c.  The structs are embedded in the callers' own
 * writer and reader, which own them; fm_recr_free releases the reader's buffer.
 */
#ifndef FM_RECSTREAM_H
#define FM_RECSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "fm_error.h"

#define FM_REC_TAG(a, b, c, d) \
	((uint32_t)(a) | (uint32_t)(b) << 8 | (uint32_t)(c) << 16 | (uint32_t)(d) << 24)

/* What tells one file kind from another, and names it in messages. */
struct fm_recfmt {
	const unsigned char *magic;     /* the header's first 8 bytes */
	uint32_t version;               /* the newest version read, the one written */
	uint32_t hdr_min, hdr_max;      /* header length bounds, CRC included */
	const char *name;               /* "chunk file" */
	const char *a_name;             /* "a chunk file" */
};

/* One piece of a record's payload; a record is framed around up to 3. */
struct fm_recpart {
	const void *p;
	size_t n;
};

/* Writer: the first write error sticks, and every later call fails. */
struct fm_recw {
	FILE *f;
	const struct fm_recfmt *fmt;
	uint64_t hash;          /* FNV-1a of every byte written so far */
	bool failed;            /* a write failed: the file is unusable */
	bool finished;
};

/* Reader: the first error sticks, and so does the end record. */
enum { FM_RECR_OPEN, FM_RECR_DONE, FM_RECR_FAILED };

struct fm_recr {
	FILE *f;
	const struct fm_recfmt *fmt;
	uint64_t hash;          /* FNV-1a of every byte read before END */
	uint64_t recno;         /* number of the next record */
	int state;
	unsigned char head[8];  /* the current record's tag and length */
	unsigned char tail[4];  /* its CRC */
	unsigned char *buf;     /* payload bytes, grown by fm_recr_read_var */
	size_t cap;
};

void     fm_put16(unsigned char *, uint16_t);
void     fm_put32(unsigned char *, uint32_t);
void     fm_put64(unsigned char *, uint64_t);
uint16_t fm_get16(const unsigned char *);
uint32_t fm_get32(const unsigned char *);
uint64_t fm_get64(const unsigned char *);

/*
 * Fills in the header's magic, version, length (bytes 0..15) and trailing
 * CRC around the fields the caller has put in hdr[16..n-4), and writes it.
 * On FM_EIO errno holds the cause.
 */
int fm_recw_open(struct fm_recw *, FILE *, const struct fm_recfmt *,
    unsigned char *hdr, size_t n, struct fm_err *);
/* FM_OK, or why no more records may be written. */
int fm_recw_usable(const struct fm_recw *, struct fm_err *);
/* Writes one record; the caller has checked that the payload fits a u32. */
int fm_recw_record(struct fm_recw *, uint32_t tag, const struct fm_recpart *, int nparts,
    struct fm_err *);
/* Writes the end record and flushes; the content hash must be taken before. */
int fm_recw_finish(struct fm_recw *, uint32_t tag, const struct fm_recpart *, int nparts,
    struct fm_err *);

/*
 * Reads the header into hdr (fmt->hdr_max bytes), checking magic, version,
 * length and CRC, and returns its length in *hlen; the hash starts as the
 * FNV-1a of its bytes.
 */
int fm_recr_open(struct fm_recr *, FILE *, const struct fm_recfmt *,
    unsigned char *hdr, uint32_t *hlen, struct fm_err *);
/* FM_OK, or why no more records may be read. */
int fm_recr_usable(struct fm_recr *, struct fm_err *);
/* Stops the reader with reason e and the record number appended. */
int fm_recr_fail(struct fm_recr *, const struct fm_err *e, struct fm_err *);
/* Reads exactly n bytes: "truncated at record N" at end of file. */
int fm_recr_read(struct fm_recr *, void *, size_t n, struct fm_err *);
/* Reads n bytes into buf, with room for a NUL after them. */
int fm_recr_read_var(struct fm_recr *, size_t n, struct fm_err *);
/* Reads a record's tag and length into head. */
int fm_recr_head(struct fm_recr *, uint32_t *tag, uint32_t *len, struct fm_err *);
/* Reads the CRC into tail and checks it over head and the payload parts. */
int fm_recr_check(struct fm_recr *, const struct fm_recpart *, int nparts, struct fm_err *);
/* Counts a good record other than the end record into recno and the hash. */
void fm_recr_accept(struct fm_recr *, const struct fm_recpart *, int nparts);
/* Counts the good end record and checks that nothing follows it. */
int fm_recr_finish(struct fm_recr *, struct fm_err *);
void fm_recr_free(struct fm_recr *);

#endif
