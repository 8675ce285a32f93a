/*
 * select.h - the selection half of the memory indexer: scores of a query
 * against every chunk vector, and the policies that turn those scores into
 * a resident set (top-k, threshold, token budget, densest pages, attention
 * sink, recency tail).  fm-select calls it once per query; fm-decode (LSA)
 * calls it at every re-selection.  CPU code; it is also the test reference
 * of any GPU scoring.
 *
 * Ownership: every array is the caller's.  Nothing here keeps a pointer
 * past the call, prints, or exits; the only allocations are temporary and
 * their failure is FM_EIO.
 */
#ifndef FM_SELECT_H
#define FM_SELECT_H

#include <stdbool.h>
#include <stdint.h>

#include "fm_error.h"

/* How vectors are stored; the numbers of the embedding and index files. */
enum fm_vec_type { FM_VEC_F32 = 0, FM_VEC_F16 = 1 };

/*
 * out (n) = V q: the inner product of the query q (dim floats) with each of
 * the n rows of vecs (n, dim), stored as type (F16: IEEE binary16 bits,
 * little-endian uint16_t).  Sums in float; rows are independent.
 */
void fm_score(float *out, const float *q, const void *vecs, enum fm_vec_type type,
    uint64_t n, uint32_t dim);

/*
 * out (nq, n) = Q V^T for a batch of nq queries (nq, dim), through one
 * sgemm per block of rows (F16 rows are widened a block at a time).
 * FM_EIO when the block buffer cannot be allocated.
 */
int fm_score_batch(float *out, const float *q, uint32_t nq, const void *vecs,
    enum fm_vec_type type, uint64_t n, uint32_t dim, struct fm_err *err);

/* A chunk and its score. */
struct fm_hit {
	uint64_t id;
	float score;
};

/*
 * "a ranks before b": the higher score first, the lower id on equal
 * scores; a NaN ranks as -infinity, so the order is total.
 */
bool fm_hit_before(struct fm_hit a, struct fm_hit b);

/*
 * The k best of scores[0..n) (ranked by fm_hit_before), only among those
 * at least *min when min is not NULL, into out (capacity k), best first.
 * Returns how many were found: min(k, n) without min.  A bounded heap:
 * O(n log k) time, no memory beyond out.
 */
uint64_t fm_topk(const float *scores, uint64_t n, uint64_t k, const float *min,
    struct fm_hit *out);

/* Why a chunk is in the resident set (a chunk may have several reasons). */
enum fm_reason {
	FM_WHY_TOPK = 1,       /* among the k best (or ranked into the budget) */
	FM_WHY_THRESHOLD = 2,  /* scored at least the threshold */
	FM_WHY_PAGE = 4,       /* on one of the densest pages */
	FM_WHY_SINK = 8,       /* one of the first chunks */
	FM_WHY_RECENT = 16,    /* one of the last chunks */
};

/* The first reason of the set, in the order above: "topk" ... "recent". */
const char *fm_reason_name(uint32_t reasons);

enum fm_page_score {
	FM_PAGE_COUNT,  /* a page scores by its chunks at or above the threshold */
	FM_PAGE_SUM,    /* a page scores by the sum of its chunks' scores */
};

/*
 * A selection policy.  The rules, applied in this order:
 *   1. k > 0: the k best chunks (only among those scoring at least the
 *      threshold, when there is one), reason topk.
 *      k == 0, with a threshold and no pages: every chunk scoring at least
 *      the threshold, reason threshold.
 *   2. pages > 0: every chunk of the pages best by page_score (ties: the
 *      earlier page), reason page.  FM_PAGE_COUNT needs a threshold.
 *      Fewer pages than asked for: all of them.
 *   3. Nothing from 1 and 2 asked for but a budget: every chunk is a
 *      candidate, ranked by score, reason topk.
 *   4. sink and recent: the first and the last chunks of the collection,
 *      always kept, budget or not.
 *   5. budget > 0: the sink and recent chunks' tokens are counted first,
 *      then the chunks of 1-3 in rank order are kept while their tokens
 *      fit, stopping at the first that does not, so a larger budget only
 *      ever adds chunks.
 */
struct fm_policy {
	uint64_t k;
	bool has_threshold;
	float threshold;
	uint64_t pages;
	enum fm_page_score page_score;
	uint64_t sink, recent;
	uint64_t budget;            /* tokens; 0: none */
};

/* What a policy needs to know of the collection besides the scores. */
struct fm_collection {
	uint64_t n;                 /* chunks, ids 0 .. n-1 in document order */
	const uint32_t *n_tokens;   /* (n) tokens per chunk; NULL: unknown (no budget) */
	uint64_t n_pages;
	const uint64_t *page_first; /* (n_pages + 1) first chunk id of each page, then n;
	                               pages are consecutive runs; NULL: no pages */
};

struct fm_selected {
	uint64_t id;
	float score;
	uint32_t reasons;           /* enum fm_reason bits */
};

/*
 * Applies policy p to scores (c->n) and writes the resident set to sel
 * (capacity c->n) in ascending id, its size to *n_sel (0 is not an error).
 * page_scores (c->n_pages) may give the FM_PAGE_SUM scores directly (from
 * the index's page sums); NULL computes them from scores.  FM_EUSAGE when
 * the policy asks for what the collection lacks (a budget without token
 * counts, pages without a page table, page counts without a threshold),
 * FM_EIO when memory runs out.
 */
int fm_select(const struct fm_policy *p, const struct fm_collection *c, const float *scores,
    const float *page_scores, struct fm_selected *sel, uint64_t *n_sel, struct fm_err *err);

/* Sorts a selection by rank (fm_hit_before), for output by score. */
void fm_selected_sort_rank(struct fm_selected *sel, uint64_t n);

#endif
