/*
 * lsa.h - the parts of Lookahead Sparse Attention that fm-decode puts
 * together: the document as the decoder's context, the slot table of the
 * resident store, and the choice of the resident set from chunk scores.
 *
 * The context is [BOS] + the document's tokens + the question + what is
 * generated.  Its full KV cache waits in host memory (the mirror); the
 * store that attention reads holds a fixed reserve of chunk slots, each
 * slot_len rows, followed by the rows that always stay: BOS, the question
 * and the generated tokens.  A chunk's rows keep their original positions:
 * RoPE was applied when their K was computed, so a key may sit in any row.
 *
 *   store rows: [slot 0][slot 1]...[slot S-1][BOS][question ... generated]
 *
 * Ownership: every struct here owns its arrays; the _free functions
 * release them.  Nothing prints or exits.
 */
#ifndef FM_LSA_H
#define FM_LSA_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "fm_error.h"
#include "indexfile.h"
#include "select.h"

/* The document: the backbone tokens of a chunk file's chunks, in order. */
struct fm_lsa_doc {
	int32_t *ids;            /* (n_tokens), each chunk's overlap with the one before dropped */
	uint32_t n_tokens;
	uint64_t first;          /* id of its first chunk in the chunk file */
	uint32_t n_chunks;
	uint32_t *start;         /* (n_chunks + 1) each chunk's first token in ids, then n_tokens */
	uint32_t max_chunk;      /* tokens of the longest chunk */
	uint64_t tok_fingerprint;
	uint64_t content_hash;   /* the chunk file's, to match an index */
	uint64_t file_chunks;    /* chunks in the whole file */
};

/*
 * Reads a chunk file from f.  doc_name NULL takes every document, in order;
 * otherwise the one so named (FM_EUSAGE when there is none).  FM_EDATA for
 * a damaged file or a context over max_tokens; FM_EIO for a read error.
 */
int fm_lsa_doc_load(FILE *f, const char *doc_name, uint32_t max_tokens, struct fm_lsa_doc *d,
    struct fm_err *err);
void fm_lsa_doc_free(struct fm_lsa_doc *d);

/*
 * The slot table: which chunk each slot of the reserve holds.  A chunk is
 * in at most one slot; a slot holds at most one chunk.
 */
struct fm_lsa_slots {
	uint32_t n_slots, slot_len;
	uint32_t n_chunks;
	int32_t *slot_chunk;     /* (n_slots) chunk index in the document, or -1 */
	int32_t *chunk_slot;     /* (n_chunks) slot, or -1 */
	uint32_t n_resident;
};

/* A chunk copied into a slot. */
struct fm_lsa_move {
	uint32_t chunk, slot;
};

int fm_lsa_slots_init(struct fm_lsa_slots *s, uint32_t n_slots, uint32_t slot_len,
    uint32_t n_chunks, struct fm_err *err);
void fm_lsa_slots_free(struct fm_lsa_slots *s);

/*
 * Makes the chunks chunks[0..n) (ascending, distinct, n <= n_slots) the
 * resident set: chunks that stay keep their slot, chunks that leave free
 * theirs, and each arriving chunk takes a free slot.  The arrivals go to
 * moves (capacity n_slots), their number is returned: only these need
 * copying.
 */
uint32_t fm_lsa_slots_update(struct fm_lsa_slots *s, const uint32_t *chunks, uint32_t n,
    struct fm_lsa_move *moves);

/*
 * The keys of the resident set in position order, as store rows: the head
 * rows (BOS), each resident chunk's rows, then n_tail rows of the question
 * and generated tokens.  rows has room for fm_lsa_rows_cap().  Returns the
 * number written.
 */
uint32_t fm_lsa_rows(const struct fm_lsa_slots *s, const struct fm_lsa_doc *d, uint32_t head,
    uint32_t n_tail, int32_t *rows);
uint64_t fm_lsa_rows_cap(const struct fm_lsa_slots *s, uint32_t head, uint32_t n_tail);

/* How the resident set is chosen; the last two are the baselines of the fidelity benchmark. */
enum fm_lsa_by {
	FM_LSA_BY_INDEX,    /* the memory indexer's scores */
	FM_LSA_BY_RECENT,   /* the latest chunks first */
	FM_LSA_BY_RANDOM,   /* a fresh random order at every window */
};

/*
 * The choice: scores (n_chunks of the document) through policy p, then
 * capped to n_slots chunks: sink and recent chunks first, then the rest by
 * rank.  page_first (n_pages + 1, document-local) may be NULL when the
 * policy asks for no pages.  sel has room for n_chunks; *n_sel gets the
 * size, ascending by chunk.  Errors as fm_select().
 */
int fm_lsa_choose(const struct fm_policy *p, const struct fm_lsa_doc *d, const uint32_t *n_tokens,
    uint64_t n_pages, const uint64_t *page_first, const float *scores, uint32_t n_slots,
    struct fm_selected *sel, uint64_t *n_sel, struct fm_err *err);

/*
 * Scores that make the baselines go through the same policy: the chunk
 * index (recent) or a uniform random number from *rng (random).
 */
void fm_lsa_baseline_scores(enum fm_lsa_by by, uint32_t n, uint64_t *rng, float *scores);

/*
 * Reads a resident set as fm-select writes it (ID<TAB>SCORE lines; blank
 * lines and lines starting with '#' are skipped) for a document whose first
 * chunk is d->first.  FM_EDATA with the line number for a malformed line or
 * an id outside the document.  ids (capacity d->n_chunks) gets the
 * document-local ids, ascending, without repeats.
 */
int fm_lsa_read_selection(FILE *f, const struct fm_lsa_doc *d, uint32_t *ids, uint32_t *n,
    uint64_t *line_no, struct fm_err *err);

#endif
