/*
 * chunkfile.h - the chunk file (.fmc): a streamable, versioned, checksummed
 * sequence of documents cut into token chunks.  Written by fm-chunk, read by
 * fm-embed, fm-select and fm-decode.  The byte layout is specified in
 * fm-formats(5); in short (all integers little-endian):
 *
 *   header  magic "\x89FMC\r\n\x1a\n", u32 version (1), u32 header_len,
 *           u64 tok_fingerprint, u32 n_vocab, u32 chunk_tokens, u32 overlap,
 *           u32 page_chunks, u16 len + tokenizer kind ("llama"|"bert"),
 *           u16 len + model name, u32 crc32c of all preceding header bytes
 *   records u32 tag, u32 payload_len, payload, u32 crc32c(tag, len, payload)
 *     "DOCB" u32 doc, u32 name_len, name
 *     "CHNK" u64 id, u32 doc, u32 chunk, u32 page, u32 n_tokens, u64 offset,
 *            u32 length, i32 ids[n_tokens], text[length]
 *     "DOCE" u32 doc, u64 bytes, u64 n_tokens, u32 n_chunks, u32 flags
 *     "END " u32 n_docs, u64 n_chunks, u64 content_hash
 *   content_hash is FNV-1a 64 over every byte before the END record.
 *
 * The reader checks every length against its limits before allocating,
 * every checksum, and the order of records (ids, documents, chunk indices
 * and pages in sequence, ids below n_vocab, counts matching), so a truncated
 * or corrupted file is reported with the record number where it goes wrong.
 *
 * Ownership: the writer and reader borrow the FILE*, which the caller opens
 * and closes; a record returned by fm_chunkr_next() is owned by the reader
 * and valid until the next call.  Memory is bounded by one record.
 */
#ifndef FM_CHUNKFILE_H
#define FM_CHUNKFILE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "fm_error.h"

#define FM_CHUNK_VERSION 1
#define FM_CHUNK_MAX_TOKENS (1u << 20)      /* per chunk */
#define FM_CHUNK_MAX_RECORD (256u << 20)    /* payload bytes of one record */
#define FM_CHUNK_MAX_NAME 4096              /* document name bytes */

enum { FM_DOC_INCOMPLETE = 1 };   /* DOCE flag: the input failed mid-document */

struct fm_chunk_header {
	uint32_t version;
	uint64_t tok_fingerprint;  /* fm_tok_fingerprint() of the tokenizer used */
	uint32_t n_vocab;
	uint32_t chunk_tokens;     /* tokens per chunk (the last of a document may have fewer) */
	uint32_t overlap;          /* tokens shared by consecutive chunks, < chunk_tokens */
	uint32_t page_chunks;      /* chunks per page, >= 1 */
	char tok_kind[16];         /* "llama" or "bert", NUL-terminated */
	char model_name[256];      /* general.name of the tokenizer's GGUF, NUL-terminated, may be "" */
};

struct fm_chunk {
	uint64_t id;        /* 0, 1, 2 ... over the whole file */
	uint32_t doc;       /* document index, 0, 1, 2 ... */
	uint32_t chunk;     /* chunk index within the document */
	uint32_t page;      /* chunk / page_chunks */
	uint32_t n_tokens;
	const int32_t *ids;
	uint64_t offset;    /* byte span of the chunk's text in the document */
	uint32_t length;
	const char *text;   /* the length bytes of the document at offset (not NUL-terminated) */
};

struct fm_doc_end {
	uint32_t doc;
	uint64_t bytes;     /* document size */
	uint64_t n_tokens;  /* tokens of the whole document */
	uint32_t n_chunks;
	uint32_t flags;     /* FM_DOC_INCOMPLETE */
};

struct fm_chunk_end {
	uint32_t n_docs;
	uint64_t n_chunks;
	uint64_t content_hash;   /* the file's identity, recorded by later stages */
};

/*
 * Checks a header's fields against the rules of fm-formats(5) (tokenizer kind
 * 1..15 bytes of [a-z0-9_-], vocabulary 1..2^31, chunk_tokens
 * 1..FM_CHUNK_MAX_TOKENS, overlap < chunk_tokens, page_chunks >= 1); the
 * version is not looked at.  FM_EDATA with the reason if one fails.
 */
int fm_chunk_header_check(const struct fm_chunk_header *h, struct fm_err *err);

/*
 * Writer.  Every call checks its record against the same rules as the
 * reader and refuses it (FM_EDATA, nothing written) if it breaks one; the
 * writer stays usable after such a refusal.  A failed write is FM_EIO with
 * strerror appended, and errno is left as the failed write set it (EPIPE
 * for a closed pipe), so the tool can end quietly; after a write error
 * every call fails.  h->version may be 0: the writer always writes
 * FM_CHUNK_VERSION.
 */
struct fm_chunkw;
struct fm_chunkw *fm_chunkw_open(FILE *f, const struct fm_chunk_header *h, struct fm_err *err);
/* Starts the next document (index 0, 1, 2 ...); name need not be NUL-terminated. */
int fm_chunkw_doc_begin(struct fm_chunkw *w, const char *name, size_t name_len, struct fm_err *err);
/*
 * c->id, c->doc, c->chunk and c->page are checked against the writer's own
 * counts, the ids against n_vocab and the overlap with the chunk before.
 */
int fm_chunkw_chunk(struct fm_chunkw *w, const struct fm_chunk *c, struct fm_err *err);
/* e must repeat the counts the writer has seen (n_chunks, n_tokens, doc). */
int fm_chunkw_doc_end(struct fm_chunkw *w, const struct fm_doc_end *e, struct fm_err *err);
/*
 * Writes END with the content hash and flushes; the FILE stays open.
 * end_out (may be NULL) receives what END holds.
 */
int fm_chunkw_finish(struct fm_chunkw *w, struct fm_chunk_end *end_out, struct fm_err *err);
void fm_chunkw_free(struct fm_chunkw *w);

/* Reader. */
enum fm_chunk_rec { FM_REC_DOC_BEGIN, FM_REC_CHUNK, FM_REC_DOC_END, FM_REC_END };

struct fm_chunk_record {
	enum fm_chunk_rec kind;
	uint64_t index;            /* record number, 0 = first after the header */
	struct {                   /* FM_REC_DOC_BEGIN */
		uint32_t doc;
		const char *name;      /* NUL-terminated copy */
		uint32_t name_len;
	} doc;
	struct fm_chunk chunk;     /* FM_REC_CHUNK */
	struct fm_doc_end doc_end; /* FM_REC_DOC_END */
	struct fm_chunk_end end;   /* FM_REC_END */
};

struct fm_chunkr;
/*
 * Reads and checks the header.  Reads strictly forward, so f may be a pipe.
 * FM_EDATA for a file that is not a valid chunk file (including "unsupported
 * chunk file version N" for a newer one), FM_EIO for a read error.
 */
struct fm_chunkr *fm_chunkr_open(FILE *f, struct fm_err *err);
const struct fm_chunk_header *fm_chunkr_header(const struct fm_chunkr *r);
/*
 * Reads the next record into *rec.  Returns FM_OK, or FM_EDATA with a reason
 * such as "truncated at record 812" / "checksum mismatch at record 3", or
 * FM_EIO for a read error.  After END it checks that the file ends there;
 * calling again after END is FM_EDATA.
 */
int fm_chunkr_next(struct fm_chunkr *r, struct fm_chunk_record *rec, struct fm_err *err);
void fm_chunkr_free(struct fm_chunkr *r);

#endif
