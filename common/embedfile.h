/*
 * embedfile.h - the embedding file (.fme): one L2-normalised vector per
 * chunk of a chunk file (or per query line), streamable, versioned and
 * checksummed like the chunk file.  Written by fm-embed, read by fm-index and
 * fm-select.  The byte layout is specified in fm-formats(5); in short (all
 * integers little-endian):
 *
 *   header  magic "\x89FME\r\n\x1a\n", u32 version (1), u32 header_len,
 *           u32 dim, u16 dtype (0 f32, 1 f16), u16 pooling (0 none, 1 mean,
 *           2 cls), u32 source (0 chunk file, 1 query lines), u32 shard_index,
 *           u32 shard_count, u64 encoder_fingerprint, u64 tok_fingerprint,
 *           u16 len + encoder name, u32 crc32c of all preceding header bytes
 *   records u32 tag, u32 payload_len, payload, u32 crc32c(tag, len, payload)
 *     "EROW" u64 id, dim values (f32: 4 bytes, f16: 2 bytes, IEEE binary16)
 *     "END " u64 n_rows, u64 n_source, u64 source_hash, u64 content_hash
 *   content_hash is FNV-1a 64 over every byte before the END record.
 *
 * Rows come in id order, and a file of shard I of N holds exactly the ids
 * I, I+N, I+2N ... below n_source (the chunk file's chunk count), so the
 * shards of one chunk file merge by interleaving.  source_hash is the chunk
 * file's content_hash (FNV-1a of the query input for query lines): with
 * tok_fingerprint and the encoder fields it links the file to what it came
 * from.  Every value is finite and every row has unit length (or is all
 * zeros: nothing to encode).
 *
 * Ownership: the writer and reader borrow the FILE*, which the caller opens
 * and closes; a row returned by fm_embedr_next() is owned by the reader and
 * valid until the next call.  Memory is bounded by one row.
 */
#ifndef FM_EMBEDFILE_H
#define FM_EMBEDFILE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "fm_error.h"

#define FM_EMBED_VERSION 1
#define FM_EMBED_MAX_DIM 65536
#define FM_EMBED_MAX_NAME 255

enum fm_embed_dtype { FM_EMBED_F32 = 0, FM_EMBED_F16 = 1 };
/* Numbered as llama.cpp numbers its pooling types. */
enum fm_embed_pooling { FM_POOL_NONE = 0, FM_POOL_MEAN = 1, FM_POOL_CLS = 2 };
enum fm_embed_source { FM_SRC_CHUNKS = 0, FM_SRC_QUERIES = 1 };

struct fm_embed_header {
	uint32_t version;
	uint32_t dim;                  /* values per row, 1..FM_EMBED_MAX_DIM */
	uint16_t dtype;                /* enum fm_embed_dtype */
	uint16_t pooling;              /* enum fm_embed_pooling; NONE for an encoder without tokens */
	uint32_t source;               /* enum fm_embed_source */
	uint32_t shard_index;          /* this file holds the ids with id % shard_count == shard_index */
	uint32_t shard_count;          /* >= 1 */
	uint64_t encoder_fingerprint;  /* identity of the encoder's weights and tokenizer */
	uint64_t tok_fingerprint;      /* the chunk file's tokenizer; 0 for query lines */
	char encoder_name[FM_EMBED_MAX_NAME + 1];  /* NUL-terminated, may be "" */
};

struct fm_embed_end {
	uint64_t n_rows;        /* rows in this file */
	uint64_t n_source;      /* chunks in the chunk file (query lines), all shards together */
	uint64_t source_hash;   /* the chunk file's content_hash */
	uint64_t content_hash;  /* this file's identity */
};

/* "f32"/"f16", "none"/"mean"/"cls", "chunks"/"queries"; "?" for an unknown value. */
const char *fm_embed_dtype_name(unsigned dtype);
const char *fm_embed_pooling_name(unsigned pooling);
const char *fm_embed_source_name(unsigned source);

/* Bytes of one value of dtype (4 or 2), 0 for an unknown dtype. */
unsigned fm_embed_dtype_size(unsigned dtype);

/*
 * Checks a header's fields against the rules of fm-formats(5); the version is
 * not looked at.  FM_EDATA with the reason if one fails.
 */
int fm_embed_header_check(const struct fm_embed_header *h, struct fm_err *err);

/*
 * The number of rows a complete shard holds: the ids below n_source with
 * id % shard_count == shard_index.
 */
uint64_t fm_embed_shard_rows(uint64_t n_source, uint32_t shard_index, uint32_t shard_count);

/*
 * Writer.  A row is converted to the header's dtype first, then checked as
 * the reader will check it (id in sequence, values finite, unit length or
 * zero) and refused (FM_EDATA, nothing written) if it breaks a rule; the
 * writer stays usable after such a refusal.  A failed write is FM_EIO with
 * strerror appended and errno left as the write set it (EPIPE for a closed
 * pipe); after a write error every call fails.  h->version may be 0.
 */
struct fm_embedw;
struct fm_embedw *fm_embedw_open(FILE *f, const struct fm_embed_header *h, struct fm_err *err);
/* The id the writer expects next. */
uint64_t fm_embedw_next_id(const struct fm_embedw *w);
/* v: dim floats. */
int fm_embedw_row(struct fm_embedw *w, uint64_t id, const float *v, struct fm_err *err);
/*
 * Writes END and flushes; the FILE stays open.  The rows written must be
 * all the shard's rows of n_source.  end_out (may be NULL) receives END.
 */
int fm_embedw_finish(struct fm_embedw *w, uint64_t n_source, uint64_t source_hash,
    struct fm_embed_end *end_out, struct fm_err *err);
void fm_embedw_free(struct fm_embedw *w);

/* Reader. */
enum fm_embed_rec { FM_EREC_ROW, FM_EREC_END };

struct fm_embed_record {
	enum fm_embed_rec kind;
	uint64_t index;           /* record number, 0 = first after the header */
	uint64_t id;              /* FM_EREC_ROW: the chunk id (query line number) */
	const float *vec;         /* FM_EREC_ROW: (dim) values, converted from f16 if stored so */
	struct fm_embed_end end;  /* FM_EREC_END */
};

struct fm_embedr;
/*
 * Reads and checks the header.  Reads strictly forward, so f may be a pipe.
 * FM_EDATA for a file that is not a valid embedding file (including
 * "unsupported embedding file version N"), FM_EIO for a read error.
 */
struct fm_embedr *fm_embedr_open(FILE *f, struct fm_err *err);
const struct fm_embed_header *fm_embedr_header(const struct fm_embedr *r);
/*
 * Reads the next record into *rec.  FM_OK, or FM_EDATA with a reason such
 * as "truncated at record 812" / "checksum mismatch at record 3", or FM_EIO
 * for a read error.  After END it checks that the file ends there; calling
 * again after END is FM_EDATA.
 */
int fm_embedr_next(struct fm_embedr *r, struct fm_embed_record *rec, struct fm_err *err);
void fm_embedr_free(struct fm_embedr *r);

#endif
