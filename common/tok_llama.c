/*
 * tok_llama.c - SentencePiece (BPE mode) as llama.cpp's SPM tokenizer runs
 * it: spaces become U+2581 (plus one before the text unless it continues a
 * document), the text is cut into UTF-8 characters, and the adjacent pair
 * whose concatenation is the best-scoring vocabulary token is merged, again
 * and again, leftmost first on equal scores.  What is left is emitted as
 * tokens; a piece that is no token (only a single character can be one:
 * every merge makes a token) is emitted byte by byte as <0xNN> tokens.
 *
 * The pairs wait in a binary heap and the pieces form a linked list, so a
 * word of n characters costs O(n log n).  When the vocabulary has U+2581
 * only at the start of tokens (space_splits), no merge can join a word to
 * the U+2581 that begins the next, so the text is merged one word at a time:
 * the same tokens, with heaps and buffers that stay in cache.
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

/* One call's working memory, reused from segment to segment. */
struct seg {
	char *buf;            /* the segment's escaped bytes */
	uint32_t *map;        /* (nbuf + 1) position in the source where each escaped byte starts */
	size_t nbuf, cbuf;
	struct sym *sym;
	size_t nsym, csym;
	struct bigram *heap;
	size_t nheap, cheap;
};

static const unsigned char mark[3] = { 0xE2, 0x96, 0x81 };  /* U+2581 */

/* Bytes in a UTF-8 sequence by its first byte, as llama.cpp counts (invalid leads count 1). */
static inline uint32_t
utf8_len(unsigned char c)
{
	static const uint8_t lens[16] = { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4 };

	return lens[c >> 4];
}

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

/* Appends one symbol of k escaped bytes; the map keeps one extra entry for the segment's end. */
static int
seg_add(struct seg *s, const unsigned char *b, const uint32_t *m, uint32_t k, struct fm_err *err)
{
	if (s->nbuf + k + 1 > SEG_MAX)
		return fm_err_set(err, FM_EDATA, "a text run of over %d bytes without a word break is too long",
		    SEG_MAX);
	/* buf and map share one capacity, with room left for the end entry of map. */
	if (s->nbuf + k + 1 > s->cbuf) {
		size_t c = s->cbuf < 64 ? 64 : s->cbuf;
		void *q;
		while (c < s->nbuf + k + 1)
			c *= 2;
		if ((q = realloc(s->buf, c)) == NULL)
			return fm_err_errno(err, FM_EIO, errno, "cannot allocate tokenizer buffers");
		s->buf = q;
		if ((q = realloc(s->map, c * sizeof *s->map)) == NULL)
			return fm_err_errno(err, FM_EIO, errno, "cannot allocate tokenizer buffers");
		s->map = q;
		s->cbuf = c;
	}
	if (s->nsym == s->csym && grow((void **)&s->sym, &s->csym, s->nsym + 1, sizeof *s->sym, err) != FM_OK)
		return err->status;
	memcpy(s->buf + s->nbuf, b, k);
	memcpy(s->map + s->nbuf, m, k * sizeof *m);
	s->sym[s->nsym] = (struct sym){ (uint32_t)s->nbuf, k, (int32_t)s->nsym - 1,
	    (int32_t)s->nsym + 1, -1 };
	s->nsym++;
	s->nbuf += k;
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

/* Merges the segment's symbols and appends its tokens; end is the source position after it. */
static int
seg_flush(const struct fm_tok *t, struct seg *s, uint32_t end, struct fm_tokens *out, struct fm_err *err)
{
	if (s->nsym == 0)
		return FM_OK;
	s->map[s->nbuf] = end;
	s->sym[s->nsym - 1].next = -1;
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
			if (fm_tokens_push(out, id, s->map[y->off], s->map[y->off + y->n], err) != FM_OK)
				return err->status;
			continue;
		}
		for (uint32_t j = y->off; j < y->off + y->n; j++)
			if (byte_token(t, (unsigned char)s->buf[j], &id, err) != FM_OK ||
			    fm_tokens_push(out, id, s->map[j], s->map[j + 1], err) != FM_OK)
				return err->status;
	}
	s->nbuf = 0;
	s->nsym = 0;
	return FM_OK;
}

/*
 * The escaped text, one byte at a time, for the rare symbols that need it:
 * a multi-byte sequence, whose declared length may reach into a U+2581.
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

int
fm_tok_llama_encode(const struct fm_tok *t, const char *text, uint32_t len, bool space_prefix,
    struct fm_tokens *out, struct fm_err *err)
{
	struct seg s = { 0 };
	struct esc e = { (const unsigned char *)text, len, 0, 0, 0, 0 };
	unsigned char b[4];
	uint32_t m[4], k;
	bool prev_mark = false, is_mark;
	int rc = FM_OK;

	if (space_prefix)
		e.pend = 3;   /* m0 = m12 = 0: the added U+2581 spans nothing */
	for (;;) {
		/* Fast paths: an ASCII character, or a space with nothing pending. */
		if (e.pend == 0 && e.i < len && (unsigned char)text[e.i] < 0x80) {
			unsigned char c = (unsigned char)text[e.i];
			if (c == ' ') {
				memcpy(b, mark, 3);
				m[0] = e.i;
				m[1] = m[2] = e.i + 1;
				k = 3;
			} else {
				b[0] = c;
				m[0] = e.i;
				k = 1;
			}
			e.i++;
		} else {
			if (!esc_next(&e, &b[0], &m[0]))
				break;
			uint32_t want = utf8_len(b[0]);
			for (k = 1; k < want && esc_next(&e, &b[k], &m[k]); k++)
				;
		}
		is_mark = k == 3 && memcmp(b, mark, 3) == 0;
		if (t->space_splits && is_mark && !prev_mark && s.nsym > 0 &&
		    (rc = seg_flush(t, &s, m[0], out, err)) != FM_OK)
			break;
		if ((rc = seg_add(&s, b, m, k, err)) != FM_OK)
			break;
		prev_mark = is_mark;
	}
	if (rc == FM_OK)
		rc = seg_flush(t, &s, len, out, err);
	free(s.buf);
	free(s.map);
	free(s.sym);
	free(s.heap);
	return rc;
}
