/*
 * tok_llama.c - SentencePiece (BPE mode) as llama.cpp's SPM tokenizer runs
 * it: spaces become U+2581 (plus one before the text unless it continues a
 * document), the text is cut into UTF-8 characters, and the adjacent pair
 * whose concatenation is the best-scoring vocabulary token is merged, again
 * and again, leftmost first on equal scores.  What is left is emitted as
 * tokens; a piece that is no token is emitted byte by byte as <0xNN> tokens.
 * (llama.cpp would first try to split such a piece back along the merge
 * that made it, but every merge makes a token, so only a single character
 * can fail to be one and that step never applies.)
 *
 * The pairs wait in a binary heap and the pieces form a linked list, so n
 * characters cost O(n log n).  When the vocabulary has U+2581 only at the
 * start of tokens (space_splits), no merge can join a word to the U+2581
 * that begins the next, so the text is merged one word at a time (and
 * where no token holds a newline, a newline ends a word too): the same
 * tokens, with heaps and buffers that stay in cache, and words that repeat
 * are looked up in a per-call cache of finished words instead of merged.
 *
 * Spans: each escaped byte remembers the position in the original text that
 * it starts at.  The U+2581 put before the text maps to position 0 on all
 * its three bytes, so it spans nothing; one that replaced a space maps its
 * first byte to the space and the other two past it, so a token holding it
 * spans the space, and the spans of all tokens tile the text exactly.
 */
#include "tok_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Segments must keep byte offsets and symbol indices within int32. */
#define SEG_MAX (INT32_MAX - 16)
/* Words up to this many escaped bytes go through the cache; longer ones are rare. */
#define CACHE_KEY_MAX 64
#define CACHE_SLOTS_MIN 1024
#define CACHE_SLOTS_MAX (1 << 16)

struct sym {
	uint32_t off, n;      /* bytes seg.buf[off .. off + n); n = 0 once merged away */
	int32_t prev, next;   /* neighbours still alive, -1 at the ends */
	int32_t id;           /* token of the merged text, -1 when not yet known */
};

struct bigram {
	float score;
	int32_t left, right;
	uint32_t size;        /* bytes of the pair when it was found: later merges make it stale */
	int32_t id;
};

/* A token of a cached word and the escaped bytes [a, b) of the word it covers. */
struct piece {
	int32_t id;
	uint8_t a, b;
};

struct centry {
	uint64_t hash;
	uint32_t key, nkey;   /* the word's escaped bytes in cache.keys */
	uint32_t tok, ntok;   /* its pieces in cache.toks */
};

/* Finished words of this call: text -> pieces, open addressing on entry index + 1. */
struct cache {
	uint32_t *slot;
	size_t nslot;
	struct centry *e;
	size_t ne, ce;
	char *keys;
	size_t nkeys, ckeys;
	struct piece *toks;
	size_t ntoks, ctoks;
	bool full;            /* at CACHE_SLOTS_MAX and half full: start afresh */
};

/*
 * The working memory, reused from segment to segment and, through
 * fm_tokens.scratch, from call to call.
 */
struct seg {
	char *buf;            /* the segment's escaped bytes */
	uint32_t *map;        /* (nbuf + 1) position in the source where each escaped byte starts */
	size_t nbuf, cbuf;
	struct sym *sym;
	size_t nsym, csym;
	struct bigram *heap;
	size_t nheap, cheap;
	struct cache c;
	uint64_t fingerprint; /* of the tokenizer whose words c holds */
	bool caching;         /* the current word's pieces go to c.toks */
};

static const unsigned char mark[3] = { 0xE2, 0x96, 0x81 };  /* U+2581 */

/* Bytes in a UTF-8 sequence by its first byte, as llama.cpp counts (invalid leads count 1). */
static inline uint32_t
utf8_len(unsigned char c)
{
	static const uint8_t lens[16] = { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4 };

	return lens[c >> 4];
}

/* Grows *p (of *cap elements of elem bytes) to hold need elements. */
static int
grow(void **p, size_t *cap, size_t need, size_t elem, struct fm_err *err)
{
	size_t c = *cap < 64 ? 64 : *cap;
	void *q;

	while (c < need)
		c *= 2;
	if (c > SIZE_MAX / elem)
		return fm_err_set(err, FM_EIO, "tokenizer buffers are too large");
	if ((q = realloc(*p, c * elem)) == NULL)
		return fm_err_errno(err, FM_EIO, errno, "cannot allocate tokenizer buffers");
	*p = q;
	*cap = c;
	return FM_OK;
}

/* Room for k more escaped bytes; buf and map share one capacity, with space for map's end entry. */
static int
seg_reserve(struct seg *s, size_t k, struct fm_err *err)
{
	size_t c;
	void *q;

	if (s->nbuf + k + 1 <= s->cbuf)
		return FM_OK;
	if (s->nbuf + k + 1 > SEG_MAX)
		return fm_err_set(err, FM_EDATA, "a text run of over %d bytes without a word break is too long",
		    SEG_MAX);
	for (c = s->cbuf < 256 ? 256 : s->cbuf; c < s->nbuf + k + 1; c *= 2)
		;
	if ((q = realloc(s->buf, c)) == NULL)
		return fm_err_errno(err, FM_EIO, errno, "cannot allocate tokenizer buffers");
	s->buf = q;
	if ((q = realloc(s->map, c * sizeof *s->map)) == NULL)
		return fm_err_errno(err, FM_EIO, errno, "cannot allocate tokenizer buffers");
	s->map = q;
	s->cbuf = c;
	return FM_OK;
}

/* Heap order: higher score first, then the leftmost pair. */
static inline bool
before(const struct bigram *a, const struct bigram *b)
{
	return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static int
heap_push(struct seg *s, struct bigram b, struct fm_err *err)
{
	size_t i;

	if (s->nheap == s->cheap &&
	    grow((void **)&s->heap, &s->cheap, s->nheap + 1, sizeof *s->heap, err) != FM_OK)
		return err->status;
	for (i = s->nheap++; i > 0; ) {
		size_t p = (i - 1) / 2;
		if (!before(&b, &s->heap[p]))
			break;
		s->heap[i] = s->heap[p];
		i = p;
	}
	s->heap[i] = b;
	return FM_OK;
}

static struct bigram
heap_pop(struct seg *s)
{
	struct bigram top = s->heap[0], last = s->heap[--s->nheap];
	size_t i = 0, n = s->nheap;

	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= n)
			break;
		if (c + 1 < n && before(&s->heap[c + 1], &s->heap[c]))
			c++;
		if (!before(&s->heap[c], &last))
			break;
		s->heap[i] = s->heap[c];
		i = c;
	}
	if (n > 0)
		s->heap[i] = last;
	return top;
}

/* Queues the pair (l, r) if their text together is a token. */
static int
try_pair(const struct fm_tok *t, struct seg *s, int32_t l, int32_t r, struct fm_err *err)
{
	uint32_t n;
	int32_t id;

	if (l < 0 || r < 0)
		return FM_OK;
	n = s->sym[l].n + s->sym[r].n;
	if (n > t->max_token_len)
		return FM_OK;
	if ((id = fm_tok_lookup(t, s->buf + s->sym[l].off, n)) < 0)
		return FM_OK;
	return heap_push(s, (struct bigram){ t->score[id], l, r, n, id }, err);
}

/* The token for a lone byte: <0xNN>, else the byte itself as a token (as llama.cpp), else unk. */
static int
byte_token(const struct fm_tok *t, unsigned char b, int32_t *id, struct fm_err *err)
{
	char c = (char)b;

	if ((*id = t->byte_tok[b]) >= 0)
		return FM_OK;
	if ((*id = fm_tok_lookup(t, &c, 1)) >= 0)
		return FM_OK;
	if ((*id = t->unk) >= 0)
		return FM_OK;
	return fm_err_set(err, FM_EDATA, "the vocabulary has no token for byte 0x%02X", b);
}

/* Appends the token covering escaped bytes [a, b) of the segment, and notes it for the cache. */
static int
emit(struct seg *s, int32_t id, uint32_t a, uint32_t b, struct fm_tokens *out, struct fm_err *err)
{
	if (fm_tokens_push(out, id, s->map[a], s->map[b], err) != FM_OK)
		return err->status;
	if (s->caching) {
		if (s->c.ntoks == s->c.ctoks &&
		    grow((void **)&s->c.toks, &s->c.ctoks, s->c.ntoks + 1, sizeof *s->c.toks, err) != FM_OK)
			return err->status;
		s->c.toks[s->c.ntoks++] = (struct piece){ id, (uint8_t)a, (uint8_t)b };
	}
	return FM_OK;
}

/* The cache entry for the segment's bytes (hash h), or NULL; *slot is where it is or would go. */
static struct centry *
cache_find(const struct seg *s, uint64_t h, size_t *slot)
{
	const struct cache *c = &s->c;
	size_t i;
	uint32_t v;

	for (i = h & (c->nslot - 1); (v = c->slot[i]) != 0; i = (i + 1) & (c->nslot - 1)) {
		struct centry *e = &c->e[v - 1];
		if (e->hash == h && e->nkey == s->nbuf && memcmp(c->keys + e->key, s->buf, s->nbuf) == 0)
			return e;
	}
	*slot = i;
	return NULL;
}

/* Doubles the slot table (or makes the first), placing every entry again. */
static int
cache_rehash(struct cache *c, struct fm_err *err)
{
	size_t n = c->nslot ? c->nslot * 2 : CACHE_SLOTS_MIN;
	uint32_t *slot = calloc(n, sizeof *slot);

	if (slot == NULL)
		return fm_err_errno(err, FM_EIO, errno, "cannot allocate tokenizer buffers");
	for (size_t k = 0; k < c->ne; k++) {
		size_t i = c->e[k].hash & (n - 1);
		while (slot[i] != 0)
			i = (i + 1) & (n - 1);
		slot[i] = (uint32_t)k + 1;
	}
	free(c->slot);
	c->slot = slot;
	c->nslot = n;
	return FM_OK;
}

static void
cache_reset(struct cache *c)
{
	if (c->nslot > 0)
		memset(c->slot, 0, c->nslot * sizeof *c->slot);
	c->ne = c->nkeys = c->ntoks = 0;
	c->full = false;
}

/* Records the segment's bytes with the pieces emitted since tok0. */
static int
cache_add(struct seg *s, uint64_t h, size_t slot, size_t tok0, struct fm_err *err)
{
	struct cache *c = &s->c;
	struct centry *e;

	if (c->nkeys + s->nbuf > c->ckeys &&
	    grow((void **)&c->keys, &c->ckeys, c->nkeys + s->nbuf, 1, err) != FM_OK)
		return err->status;
	if (c->ne == c->ce && grow((void **)&c->e, &c->ce, c->ne + 1, sizeof *c->e, err) != FM_OK)
		return err->status;
	memcpy(c->keys + c->nkeys, s->buf, s->nbuf);
	e = &c->e[c->ne];
	*e = (struct centry){ h, (uint32_t)c->nkeys, (uint32_t)s->nbuf, (uint32_t)tok0,
	    (uint32_t)(c->ntoks - tok0) };
	c->nkeys += s->nbuf;
	c->slot[slot] = (uint32_t)++c->ne;
	if (2 * c->ne >= c->nslot) {
		if (c->nslot >= CACHE_SLOTS_MAX)
			c->full = true;
		else if (cache_rehash(c, err) != FM_OK)
			return err->status;
	}
	return FM_OK;
}

/* Cuts the segment into UTF-8 characters (its first byte always starts one). */
static int
seg_split(struct seg *s, struct fm_err *err)
{
	size_t i, k;

	s->nsym = 0;
	for (i = 0; i < s->nbuf; i += k) {
		k = utf8_len((unsigned char)s->buf[i]);
		if (k > s->nbuf - i)
			k = s->nbuf - i;
		if (s->nsym == s->csym &&
		    grow((void **)&s->sym, &s->csym, s->nsym + 1, sizeof *s->sym, err) != FM_OK)
			return err->status;
		s->sym[s->nsym] = (struct sym){ (uint32_t)i, (uint32_t)k, (int32_t)s->nsym - 1,
		    (int32_t)s->nsym + 1, -1 };
		s->nsym++;
	}
	s->sym[s->nsym - 1].next = -1;
	return FM_OK;
}

/* Merges the segment's characters and emits the tokens left. */
static int
seg_merge(const struct fm_tok *t, struct seg *s, struct fm_tokens *out, struct fm_err *err)
{
	if (seg_split(s, err) != FM_OK)
		return err->status;
	s->nheap = 0;
	for (size_t i = 1; i < s->nsym; i++)
		if (try_pair(t, s, (int32_t)i - 1, (int32_t)i, err) != FM_OK)
			return err->status;
	while (s->nheap > 0) {
		struct bigram b = heap_pop(s);
		struct sym *l = &s->sym[b.left], *r = &s->sym[b.right];

		/* Stale: one side was merged away, or has grown since the pair was queued. */
		if (l->n == 0 || r->n == 0 || l->n + r->n != b.size)
			continue;
		l->n += r->n;
		l->id = b.id;
		r->n = 0;
		l->next = r->next;
		if (r->next >= 0)
			s->sym[r->next].prev = b.left;
		if (try_pair(t, s, l->prev, b.left, err) != FM_OK ||
		    try_pair(t, s, b.left, l->next, err) != FM_OK)
			return err->status;
	}
	for (int32_t i = 0; i >= 0; i = s->sym[i].next) {
		const struct sym *y = &s->sym[i];
		int32_t id = y->id;

		if (id < 0)
			id = fm_tok_lookup(t, s->buf + y->off, y->n);
		if (id >= 0) {
			if (emit(s, id, y->off, y->off + y->n, out, err) != FM_OK)
				return err->status;
			continue;
		}
		for (uint32_t j = y->off; j < y->off + y->n; j++)
			if (byte_token(t, (unsigned char)s->buf[j], &id, err) != FM_OK ||
			    emit(s, id, j, j + 1, out, err) != FM_OK)
				return err->status;
	}
	return FM_OK;
}

/* Emits the segment's tokens, from the cache when the word was seen; end is the source position after it. */
static int
seg_flush(const struct fm_tok *t, struct seg *s, uint32_t end, struct fm_tokens *out, struct fm_err *err)
{
	struct centry *e;
	uint64_t h = 0;
	size_t slot = 0, tok0;
	bool cacheable;

	if (s->nbuf == 0)
		return FM_OK;
	s->map[s->nbuf] = end;
	cacheable = t->space_splits && s->nbuf <= CACHE_KEY_MAX;
	if (cacheable && s->c.nslot == 0 && cache_rehash(&s->c, err) != FM_OK)
		return err->status;
	/* A full cache starts again, so that it follows the words of the text as it changes. */
	if (s->c.full)
		cache_reset(&s->c);
	if (cacheable) {
		h = fm_tok_hash(s->buf, s->nbuf);
		if ((e = cache_find(s, h, &slot)) != NULL) {
			for (uint32_t k = 0; k < e->ntok; k++) {
				const struct piece *p = &s->c.toks[e->tok + k];
				if (fm_tokens_push(out, p->id, s->map[p->a], s->map[p->b], err) != FM_OK)
					return err->status;
			}
			s->nbuf = 0;
			return FM_OK;
		}
	}
	s->caching = cacheable && !s->c.full;
	tok0 = s->c.ntoks;
	if (seg_merge(t, s, out, err) != FM_OK)
		return err->status;
	if (s->caching && cache_add(s, h, slot, tok0, err) != FM_OK)
		return err->status;
	s->nbuf = 0;
	return FM_OK;
}

/*
 * The escaped text, one byte at a time, for the rare characters that need
 * it: a multi-byte sequence, whose declared length may reach into a U+2581.
 */
struct esc {
	const unsigned char *s;
	uint32_t len, i;
	int pend;            /* bytes of a U+2581 still to give */
	uint32_t m0, m12;    /* source positions of its first and later bytes */
};

static inline bool
esc_next(struct esc *e, unsigned char *b, uint32_t *m)
{
	if (e->pend > 0) {
		int k = 3 - e->pend--;
		*b = mark[k];
		*m = k == 0 ? e->m0 : e->m12;
		return true;
	}
	if (e->i >= e->len)
		return false;
	if (e->s[e->i] == ' ') {
		e->pend = 2;
		e->m0 = e->i;
		e->m12 = e->i + 1;
		*b = mark[0];
		*m = e->i++;
		return true;
	}
	*b = e->s[e->i];
	*m = e->i++;
	return true;
}

void
fm_tok_llama_scratch_free(void *scratch)
{
	struct seg *s = scratch;

	if (s == NULL)
		return;
	free(s->buf);
	free(s->map);
	free(s->sym);
	free(s->heap);
	free(s->c.slot);
	free(s->c.e);
	free(s->c.keys);
	free(s->c.toks);
	free(s);
}

int
fm_tok_llama_encode(const struct fm_tok *t, const char *text, uint32_t len, bool space_prefix,
    struct fm_tokens *out, struct fm_err *err)
{
	struct seg *s = out->scratch;
	struct esc e = { (const unsigned char *)text, len, 0, 0, 0, 0 };
	unsigned char b[4];
	uint32_t m[4], k;
	bool prev_mark = false, is_mark;
	int rc = FM_OK;

	if (s == NULL) {
		if ((s = calloc(1, sizeof *s)) == NULL)
			return fm_err_errno(err, FM_EIO, errno, "cannot allocate tokenizer buffers");
		out->scratch = s;
	}
	if (s->fingerprint != t->fingerprint) {
		cache_reset(&s->c);
		s->fingerprint = t->fingerprint;
	}
	s->nbuf = 0;
	if (space_prefix)
		e.pend = 3;   /* m0 = m12 = 0: the added U+2581 spans nothing */
	for (;;) {
		/* Fast paths: an ASCII character, or a space with nothing pending. */
		if (e.pend == 0 && e.i < len && (unsigned char)text[e.i] < 0x80) {
			unsigned char c = (unsigned char)text[e.i];
			if (c != ' ') {
				/* A lone newline merges with nothing: the text on each side is merged alone. */
				if (c == '\n' && t->newline_boundary && s->nbuf > 0 &&
				    (rc = seg_flush(t, s, e.i, out, err)) != FM_OK)
					break;
				if (s->nbuf + 2 > s->cbuf && (rc = seg_reserve(s, 1, err)) != FM_OK)
					break;
				s->buf[s->nbuf] = (char)c;
				s->map[s->nbuf++] = e.i++;
				prev_mark = false;
				if (c == '\n' && t->newline_boundary &&
				    (rc = seg_flush(t, s, e.i, out, err)) != FM_OK)
					break;
				continue;
			}
			memcpy(b, mark, 3);
			m[0] = e.i;
			m[1] = m[2] = e.i + 1;
			k = 3;
			e.i++;
		} else {
			if (!esc_next(&e, &b[0], &m[0]))
				break;
			uint32_t want = utf8_len(b[0]);
			for (k = 1; k < want && esc_next(&e, &b[k], &m[k]); k++)
				;
		}
		is_mark = k == 3 && memcmp(b, mark, 3) == 0;
		if (t->space_splits && is_mark && !prev_mark && s->nbuf > 0 &&
		    (rc = seg_flush(t, s, m[0], out, err)) != FM_OK)
			break;
		if ((rc = seg_reserve(s, k, err)) != FM_OK)
			break;
		memcpy(s->buf + s->nbuf, b, k);
		memcpy(s->map + s->nbuf, m, k * sizeof *m);
		s->nbuf += k;
		prev_mark = is_mark;
	}
	if (rc == FM_OK)
		rc = seg_flush(t, s, len, out, err);
	return rc;
}
