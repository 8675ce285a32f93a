/*
 * indexfile.h - the index file (.fmi): every chunk vector of a chunk file,
 * in chunk id order, with the page table, each page's sum vector and each
 * chunk's token count, laid out to be memory-mapped and scanned.  Written
 * once by fm-index, mapped by fm-select and fm-decode.  The byte layout is
 * specified in fm-formats(5); in short (all integers little-endian):
 *
 *   header (512 bytes)  magic "\x89FMI\r\n\x1a\n", u32 version (1),
 *     u32 header_len (512), u32 dim, u16 dtype (0 f32, 1 f16), u16 pooling,
 *     u32 flags (0), u32 page_chunks, u64 n_chunks, u64 n_pages, u64 n_tokens,
 *     u32 n_docs, u32 n_shards, u64 encoder_fingerprint, u64 tok_fingerprint,
 *     u64 source_hash, u64 file_size, u16 name_len, encoder name (256 bytes,
 *     zero-padded), zeros to 384, table of contents (4 entries of tag, u32
 *     crc32c, u64 offset, u64 size), zeros, u32 crc32c of bytes 0..507
 *   sections, in this order, each at the next multiple of 64 bytes:
 *     "VECS" (n_chunks, dim) values, f32 or f16
 *     "PAGE" n_pages entries of u64 first_chunk, u32 n_chunks, u32 doc,
 *            u32 page, u32 zero, u64 n_tokens
 *     "PSUM" (n_pages, dim) f32: the sum of each page's chunk vectors
 *     "TOKS" (n_chunks) u32 tokens per chunk
 *
 * Opening checks the header, its CRC, the table of contents against the
 * file size and the page table against the counts: O(pages), so a corrupt
 * or truncated file is refused before any access could go out of bounds.
 * fm_index_verify() also checks every section's CRC and every value.
 *
 * Ownership: fm_index_open() returns a struct that owns the mapping; the
 * pointers in it are valid until fm_index_close().  The writer borrows its
 * FILE, which must be a seekable file open for writing from its start.
 */
#ifndef FM_INDEXFILE_H
#define FM_INDEXFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "fm_error.h"

#define FM_INDEX_VERSION 1
#define FM_INDEX_HEADER 512
#define FM_INDEX_ALIGN 64
#define FM_INDEX_MAX_DIM 65536
#define FM_INDEX_MAX_NAME 255

/* What the index says about where its vectors came from. */
struct fm_index_info {
	uint32_t dim;
	uint16_t dtype;                /* enum fm_vec_type: 0 f32, 1 f16 */
	uint16_t pooling;              /* the encoder's, as in the embedding file */
	uint32_t page_chunks;          /* the chunk file's chunks per page */
	uint32_t n_shards;             /* embedding files merged (for people) */
	uint64_t encoder_fingerprint;  /* the encoder's identity */
	uint64_t tok_fingerprint;      /* the chunk file's tokenizer */
	uint64_t source_hash;          /* the chunk file's content_hash */
	char encoder_name[FM_INDEX_MAX_NAME + 1];  /* NUL-terminated, may be "" */
};

/* One entry of the page table, as stored (32 bytes). */
struct fm_index_page {
	uint64_t first_chunk;   /* id of its first chunk */
	uint32_t n_chunks;      /* 1 .. page_chunks */
	uint32_t doc;           /* its document's index in the chunk file */
	uint32_t page;          /* its number within the document */
	uint32_t zero;
	uint64_t n_tokens;      /* tokens of its chunks */
};

struct fm_index {
	struct fm_index_info info;
	uint32_t version;
	uint64_t n_chunks, n_pages, n_tokens;
	uint32_t n_docs;
	uint64_t file_size;
	const void *vecs;                   /* (n_chunks, dim) of info.dtype */
	const struct fm_index_page *pages;  /* (n_pages) */
	const float *page_sums;             /* (n_pages, dim) */
	const uint32_t *tokens;             /* (n_chunks) */
};

/*
 * Maps path and checks it (not the section CRCs or the values: see
 * fm_index_verify).  FM_EDATA with a reason for a file that is not a valid
 * index ("unsupported index file version N", "truncated: ..."), FM_EIO when
 * it cannot be read.
 */
int fm_index_open(const char *path, struct fm_index **out, struct fm_err *err);
/*
 * The same over a caller's buffer (aligned to 8 bytes), which must outlive
 * the index; nothing is copied.
 */
int fm_index_open_mem(const void *buf, size_t len, struct fm_index **out, struct fm_err *err);
/*
 * The full check: every section's CRC-32C, every value finite, each page's
 * sum vector and token count equal to what its chunks give.  Reads the
 * whole file.  FM_EDATA with the section named.
 */
int fm_index_verify(const struct fm_index *ix, struct fm_err *err);
void fm_index_close(struct fm_index *ix);

/* The page holding chunk id (< n_chunks): a binary search of the page table. */
uint64_t fm_index_page_of(const struct fm_index *ix, uint64_t id);

/*
 * Writer: chunks are given in id order with their vector (dim floats,
 * converted to info->dtype), document, index in the document, page and
 * token count; the writer checks them against the rules of fm-formats(5)
 * (FM_EDATA, nothing written) and keeps the page table and sums in memory
 * (O(pages x dim)).  fm_indexw_finish() writes the other sections and then
 * the header, seeking back to offset 0.  A failed write is FM_EIO.
 */
struct fm_indexw;
struct fm_indexw *fm_indexw_open(FILE *f, const struct fm_index_info *info, struct fm_err *err);
int fm_indexw_chunk(struct fm_indexw *w, const float *vec, uint32_t doc, uint32_t chunk,
    uint32_t page, uint32_t n_tokens, struct fm_err *err);
/*
 * n_docs: the chunk file's documents (those without chunks count too);
 * source_hash: its content_hash, known only once its END is read, so it is
 * given here and info->source_hash is not used.
 */
int fm_indexw_finish(struct fm_indexw *w, uint32_t n_docs, uint64_t source_hash,
    struct fm_err *err);
void fm_indexw_free(struct fm_indexw *w);

#endif
