/*
 * lsa.c - the document context, the slot table and the choice of the
 * resident set for Lookahead Sparse Attention; see lsa.h.
 */
#include "lsa.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "chunkfile.h"

static int
grow(void **p, uint64_t *cap, uint64_t need, size_t elem, struct fm_err *err)
{
	uint64_t c = *cap ? *cap : 1024;
	void *np;

	if (need <= *cap)
		return FM_OK;
	while (c < need)
		c *= 2;
	if ((np = realloc(*p, c * elem)) == NULL)
		return fm_err_errno(err, FM_EIO, errno, "cannot allocate");
	*p = np;
	*cap = c;
	return FM_OK;
}

int
fm_lsa_doc_load(FILE *f, const char *doc_name, uint32_t max_tokens, struct fm_lsa_doc *d,
    struct fm_err *err)
{
	struct fm_chunkr *r;
	struct fm_chunk_record rec;
	const struct fm_chunk_header *h;
	uint64_t cap_ids = 0, cap_start = 0;
	bool want = doc_name == NULL, found = false, have_first = false;
	int rc;

	memset(d, 0, sizeof *d);
	if ((r = fm_chunkr_open(f, err)) == NULL)
		return err->status;
	h = fm_chunkr_header(r);
	d->tok_fingerprint = h->tok_fingerprint;
	while ((rc = fm_chunkr_next(r, &rec, err)) == FM_OK && rec.kind != FM_REC_END) {
		const struct fm_chunk *c = &rec.chunk;
		uint32_t skip, own;

		if (rec.kind == FM_REC_DOC_BEGIN && doc_name != NULL) {
			want = !found && strcmp(rec.doc.name, doc_name) == 0;
			found |= want;
		}
		if (rec.kind != FM_REC_CHUNK || !want)
			continue;
		if (!have_first) {
			d->first = c->id;
			have_first = true;
		}
		/* A chunk repeats the overlap of the one before it in its document. */
		skip = c->chunk > 0 ? h->overlap : 0;
		own = c->n_tokens > skip ? c->n_tokens - skip : 0;
		if ((uint64_t)d->n_tokens + own > max_tokens) {
			rc = fm_err_set(err, FM_EDATA, "the document has more than %u tokens", max_tokens);
			goto out;
		}
		if ((rc = grow((void **)&d->ids, &cap_ids, (uint64_t)d->n_tokens + own, sizeof *d->ids,
		    err)) != FM_OK || (rc = grow((void **)&d->start, &cap_start,
		    (uint64_t)d->n_chunks + 2, sizeof *d->start, err)) != FM_OK)
			goto out;
		memcpy(d->ids + d->n_tokens, c->ids + skip, (size_t)own * sizeof *d->ids);
		d->start[d->n_chunks++] = d->n_tokens;
		d->n_tokens += own;
		if (own > d->max_chunk)
			d->max_chunk = own;
	}
	if (rc != FM_OK)
		goto out;
	d->content_hash = rec.end.content_hash;
	d->file_chunks = rec.end.n_chunks;
	if (doc_name != NULL && !found) {
		rc = fm_err_set(err, FM_EUSAGE, "no document named '%s'", doc_name);
		goto out;
	}
	if (d->n_chunks == 0) {
		rc = fm_err_set(err, FM_EDATA, "the document has no chunks");
		goto out;
	}
	d->start[d->n_chunks] = d->n_tokens;
	rc = FM_OK;
out:
	fm_chunkr_free(r);
	if (rc != FM_OK)
		fm_lsa_doc_free(d);
	return rc;
}

void
fm_lsa_doc_free(struct fm_lsa_doc *d)
{
	free(d->ids);
	free(d->start);
	memset(d, 0, sizeof *d);
}

int
fm_lsa_slots_init(struct fm_lsa_slots *s, uint32_t n_slots, uint32_t slot_len, uint32_t n_chunks,
    struct fm_err *err)
{
	memset(s, 0, sizeof *s);
	s->n_slots = n_slots;
	s->slot_len = slot_len;
	s->n_chunks = n_chunks;
	if ((s->slot_chunk = malloc((n_slots ? n_slots : 1) * sizeof *s->slot_chunk)) == NULL ||
	    (s->chunk_slot = malloc((n_chunks ? n_chunks : 1) * sizeof *s->chunk_slot)) == NULL) {
		fm_lsa_slots_free(s);
		return fm_err_errno(err, FM_EIO, errno, "cannot allocate the slot table");
	}
	for (uint32_t i = 0; i < n_slots; i++)
		s->slot_chunk[i] = -1;
	for (uint32_t i = 0; i < n_chunks; i++)
		s->chunk_slot[i] = -1;
	return FM_OK;
}

void
fm_lsa_slots_free(struct fm_lsa_slots *s)
{
	free(s->slot_chunk);
	free(s->chunk_slot);
	s->slot_chunk = s->chunk_slot = NULL;
}

uint32_t
fm_lsa_slots_update(struct fm_lsa_slots *s, const uint32_t *chunks, uint32_t n,
    struct fm_lsa_move *moves)
{
	uint32_t n_moves = 0, free_at = 0, i = 0;

	/* Evict: walk the slots, keep those whose chunk is in the new (sorted) set. */
	for (uint32_t sl = 0; sl < s->n_slots; sl++) {
		int32_t c = s->slot_chunk[sl];
		uint32_t lo = 0, hi = n;
		if (c < 0)
			continue;
		while (lo < hi) {
			uint32_t mid = lo + (hi - lo) / 2;
			if (chunks[mid] < (uint32_t)c)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo < n && chunks[lo] == (uint32_t)c)
			continue;
		s->chunk_slot[c] = -1;
		s->slot_chunk[sl] = -1;
		s->n_resident--;
	}
	/* Admit: each new chunk takes the lowest free slot. */
	for (i = 0; i < n && i < s->n_slots; i++) {
		uint32_t c = chunks[i];
		if (s->chunk_slot[c] >= 0)
			continue;
		while (s->slot_chunk[free_at] >= 0)
			free_at++;
		s->slot_chunk[free_at] = (int32_t)c;
		s->chunk_slot[c] = (int32_t)free_at;
		s->n_resident++;
		moves[n_moves++] = (struct fm_lsa_move){ c, free_at };
	}
	return n_moves;
}

uint64_t
fm_lsa_rows_cap(const struct fm_lsa_slots *s, uint32_t head, uint32_t n_tail)
{
	return (uint64_t)s->n_slots * s->slot_len + head + n_tail;
}

uint32_t
fm_lsa_rows(const struct fm_lsa_slots *s, const struct fm_lsa_doc *d, uint32_t head,
    uint32_t n_tail, int32_t *rows)
{
	int32_t fixed = (int32_t)(s->n_slots * s->slot_len);
	uint32_t n = 0;

	for (uint32_t p = 0; p < head; p++)
		rows[n++] = fixed + (int32_t)p;
	/* Chunks in document order, so that a full reserve sums exactly as dense does. */
	for (uint32_t c = 0; c < s->n_chunks; c++) {
		int32_t sl = s->chunk_slot[c];
		uint32_t len = d->start[c + 1] - d->start[c];
		if (sl < 0)
			continue;
		for (uint32_t j = 0; j < len; j++)
			rows[n++] = sl * (int32_t)s->slot_len + (int32_t)j;
	}
	for (uint32_t j = 0; j < n_tail; j++)
		rows[n++] = fixed + (int32_t)(head + j);
	return n;
}

static int
cmp_rank(const void *a, const void *b)
{
	const struct fm_selected *x = a, *y = b;
	uint32_t px = (x->reasons & (FM_WHY_SINK | FM_WHY_RECENT)) != 0;
	uint32_t py = (y->reasons & (FM_WHY_SINK | FM_WHY_RECENT)) != 0;

	if (px != py)
		return px ? -1 : 1;
	if (fm_hit_before((struct fm_hit){ x->id, x->score }, (struct fm_hit){ y->id, y->score }))
		return -1;
	return x->id == y->id ? 0 : 1;
}

static int
cmp_id(const void *a, const void *b)
{
	const struct fm_selected *x = a, *y = b;

	return x->id < y->id ? -1 : x->id > y->id;
}

int
fm_lsa_choose(const struct fm_policy *p, const struct fm_lsa_doc *d, const uint32_t *n_tokens,
    uint64_t n_pages, const uint64_t *page_first, const float *scores, uint32_t n_slots,
    struct fm_selected *sel, uint64_t *n_sel, struct fm_err *err)
{
	struct fm_collection coll = { d->n_chunks, n_tokens, page_first ? n_pages : 0, page_first };
	int rc;

	if ((rc = fm_select(p, &coll, scores, NULL, sel, n_sel, err)) != FM_OK)
		return rc;
	if (*n_sel <= n_slots)
		return FM_OK;
	/* More than the reserve holds: the always-kept chunks, then the best. */
	qsort(sel, *n_sel, sizeof *sel, cmp_rank);
	*n_sel = n_slots;
	qsort(sel, *n_sel, sizeof *sel, cmp_id);
	return FM_OK;
}

void
fm_lsa_baseline_scores(enum fm_lsa_by by, uint32_t n, uint64_t *rng, float *scores)
{
	for (uint32_t i = 0; i < n; i++) {
		if (by == FM_LSA_BY_RECENT) {
			scores[i] = (float)i / (float)n;
			continue;
		}
		/* splitmix64: a fixed sequence for a given seed */
		uint64_t z = (*rng += 0x9e3779b97f4a7c15ull);
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
		z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
		z ^= z >> 31;
		scores[i] = (float)(z >> 40) / (float)(1u << 24);
	}
}

static int
cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

int
fm_lsa_read_selection(FILE *f, const struct fm_lsa_doc *d, uint32_t *ids, uint32_t *n,
    uint64_t *line_no, struct fm_err *err)
{
	char *line = NULL, *end;
	size_t cap = 0;
	ssize_t len;
	uint32_t k = 0;
	int rc = FM_OK;

	*line_no = 0;
	while ((len = getline(&line, &cap, f)) >= 0) {
		unsigned long long id;
		(*line_no)++;
		if (len == 0 || line[0] == '\n' || line[0] == '#')
			continue;
		errno = 0;
		if (line[0] < '0' || line[0] > '9' ||
		    (id = strtoull(line, &end, 10), errno != 0) ||
		    (*end != '\t' && *end != '\n' && *end != '\r' && *end != '\0')) {
			rc = fm_err_set(err, FM_EDATA, "line %" PRIu64 ": not a chunk id", *line_no);
			goto out;
		}
		if (id < d->first || id - d->first >= d->n_chunks) {
			rc = fm_err_set(err, FM_EDATA, "line %" PRIu64 ": chunk %llu is not in the "
			    "document (chunks %" PRIu64 "..%" PRIu64 ")", *line_no, id, d->first,
			    d->first + d->n_chunks - 1);
			goto out;
		}
		if (k == d->n_chunks) {
			rc = fm_err_set(err, FM_EDATA, "line %" PRIu64 ": more ids than the document "
			    "has chunks", *line_no);
			goto out;
		}
		ids[k++] = (uint32_t)(id - d->first);
	}
	if (ferror(f)) {
		rc = fm_err_errno(err, FM_EIO, errno ? errno : EIO, "read error");
		goto out;
	}
	qsort(ids, k, sizeof *ids, cmp_u32);
	*n = 0;
	for (uint32_t i = 0; i < k; i++)
		if (*n == 0 || ids[*n - 1] != ids[i])
			ids[(*n)++] = ids[i];
out:
	free(line);
	return rc;
}
