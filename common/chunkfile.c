/*
 * chunkfile.c - writer and streaming reader of the chunk file (.fmc), whose
 * byte layout and validity rules are specified in fm-formats(5).
 *
 * Both sides share one sequence checker (struct seq), so a file the writer
 * accepts is by construction one the reader accepts, and a rule added to one
 * side cannot be forgotten on the other.  The reader never seeks (it reads
 * pipes) and never trusts a length before checking it against the limits and
 * against the fields of its record; its one buffer grows only as bytes
 * actually arrive, so a lying length in a short file costs at most 64 KiB.
 */
#include "chunkfile.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "checksum.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the chunk file code writes token ids in host order: little-endian hosts only"
#endif

static const unsigned char magic[8] = { 0x89, 'F', 'M', 'C', '\r', '\n', 0x1a, '\n' };

#define TAG(a, b, c, d) \
	((uint32_t)(a) | (uint32_t)(b) << 8 | (uint32_t)(c) << 16 | (uint32_t)(d) << 24)
#define TAG_DOCB TAG('D', 'O', 'C', 'B')
#define TAG_CHNK TAG('C', 'H', 'N', 'K')
#define TAG_DOCE TAG('D', 'O', 'C', 'E')
#define TAG_END  TAG('E', 'N', 'D', ' ')

/* Header: 40 fixed bytes, two counted strings, the CRC. */
#define HDR_FIXED 40
#define HDR_MIN (HDR_FIXED + 2 + 1 + 2 + 4)
#define HDR_MAX (HDR_FIXED + 2 + 15 + 2 + 255 + 4)

/* Fixed payload bytes of each record (DOCB and CHNK are followed by data). */
#define DOCB_FIXED 8
#define CHNK_FIXED 36
#define DOCE_LEN 28
#define END_LEN 20

/*
 * What the records so far imply about the next one.  A document's tokens are
 * its first chunk's plus, for every later chunk, those after the overlap.
 */
struct seq {
	const struct fm_chunk_header *h;
	uint64_t n_chunks;      /* chunks in the file so far: the next chunk id */
	uint32_t n_docs;        /* documents begun */
	bool in_doc;
	uint32_t doc_chunks;    /* chunks of the open document */
	uint64_t doc_tokens;    /* distinct tokens of the open document */
	uint64_t doc_span;      /* largest offset + length in the open document */
	uint32_t prev_n;        /* n_tokens of the document's previous chunk */
	int32_t *tail;          /* its last overlap ids, (overlap) */
};

struct fm_chunkw {
	FILE *f;
	struct fm_chunk_header h;
	struct seq s;
	uint64_t hash;          /* FNV-1a of every byte written so far */
	bool failed;            /* a write failed: the file is unusable */
	bool finished;
};

enum { R_OPEN, R_DONE, R_FAILED };

struct fm_chunkr {
	FILE *f;
	struct fm_chunk_header h;
	struct seq s;
	uint64_t hash;          /* FNV-1a of every byte read before END */
	uint64_t recno;         /* number of the next record */
	int state;
	unsigned char *buf;     /* the variable part of the current record */
	size_t cap;
};

static void
put16(unsigned char *p, uint16_t v)
{
	p[0] = v & 0xff;
	p[1] = v >> 8;
}

static void
put32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (v >> (8 * i)) & 0xff;
}

static void
put64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (v >> (8 * i)) & 0xff;
}

static uint16_t
get16(const unsigned char *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t
get32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	    (uint32_t)p[3] << 24;
}

static uint64_t
get64(const unsigned char *p)
{
	return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

int
fm_chunk_header_check(const struct fm_chunk_header *h, struct fm_err *err)
{
	size_t kl = strnlen(h->tok_kind, sizeof h->tok_kind);
	size_t ml = strnlen(h->model_name, sizeof h->model_name);

	if (kl == 0 || kl == sizeof h->tok_kind)
		return fm_err_set(err, FM_EDATA, "tokenizer kind must be 1 to %zu bytes",
		    sizeof h->tok_kind - 1);
	for (size_t i = 0; i < kl; i++) {
		char c = h->tok_kind[i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
			return fm_err_set(err, FM_EDATA, "invalid tokenizer kind");
	}
	if (ml == sizeof h->model_name)
		return fm_err_set(err, FM_EDATA, "model name longer than %zu bytes",
		    sizeof h->model_name - 1);
	if (h->n_vocab == 0 || h->n_vocab > UINT32_C(1) << 31)
		return fm_err_set(err, FM_EDATA, "vocabulary size %" PRIu32 " out of range",
		    h->n_vocab);
	if (h->chunk_tokens == 0 || h->chunk_tokens > FM_CHUNK_MAX_TOKENS)
		return fm_err_set(err, FM_EDATA, "chunk_tokens %" PRIu32 " out of range 1..%u",
		    h->chunk_tokens, FM_CHUNK_MAX_TOKENS);
	if (h->overlap >= h->chunk_tokens)
		return fm_err_set(err, FM_EDATA, "overlap %" PRIu32 " not below chunk_tokens %" PRIu32,
		    h->overlap, h->chunk_tokens);
	if (h->page_chunks == 0)
		return fm_err_set(err, FM_EDATA, "page_chunks must be at least 1");
	return FM_OK;
}

/* The sequence checker: the rules of fm-formats(5), shared by both sides. */

static int
seq_init(struct seq *s, const struct fm_chunk_header *h, struct fm_err *err)
{
	memset(s, 0, sizeof *s);
	s->h = h;
	if (h->overlap > 0 && (s->tail = malloc(h->overlap * sizeof *s->tail)) == NULL)
		return fm_err_errno(err, FM_EIO, ENOMEM, "chunk file");
	return FM_OK;
}

static int
seq_doc_begin(struct seq *s, uint32_t doc, const char *name, size_t name_len,
    struct fm_err *err)
{
	if (s->in_doc)
		return fm_err_set(err, FM_EDATA, "document %" PRIu32 " begins before document %"
		    PRIu32 " ends", doc, s->n_docs - 1);
	if (doc != s->n_docs)
		return fm_err_set(err, FM_EDATA, "document %" PRIu32 " out of sequence (expected %"
		    PRIu32 ")", doc, s->n_docs);
	if (s->n_docs == UINT32_MAX)
		return fm_err_set(err, FM_EDATA, "too many documents");
	if (name_len > FM_CHUNK_MAX_NAME)
		return fm_err_set(err, FM_EDATA, "document name of %zu bytes exceeds %d",
		    name_len, FM_CHUNK_MAX_NAME);
	if (memchr(name, '\0', name_len) != NULL)
		return fm_err_set(err, FM_EDATA, "document name contains a nul byte");
	s->n_docs++;
	s->in_doc = true;
	s->doc_chunks = 0;
	s->doc_tokens = 0;
	s->doc_span = 0;
	s->prev_n = 0;
	return FM_OK;
}

static int
seq_chunk(struct seq *s, const struct fm_chunk *c, struct fm_err *err)
{
	const struct fm_chunk_header *h = s->h;
	uint32_t k = s->doc_chunks;

	if (!s->in_doc)
		return fm_err_set(err, FM_EDATA, "chunk %" PRIu64 " outside a document", c->id);
	if (c->id != s->n_chunks)
		return fm_err_set(err, FM_EDATA, "chunk id %" PRIu64 " out of sequence (expected %"
		    PRIu64 ")", c->id, s->n_chunks);
	if (c->doc != s->n_docs - 1)
		return fm_err_set(err, FM_EDATA, "chunk %" PRIu64 " names document %" PRIu32
		    " inside document %" PRIu32, c->id, c->doc, s->n_docs - 1);
	if (c->chunk != k)
		return fm_err_set(err, FM_EDATA, "chunk %" PRIu64 " has index %" PRIu32
		    " (expected %" PRIu32 ")", c->id, c->chunk, k);
	if (k == UINT32_MAX)
		return fm_err_set(err, FM_EDATA, "too many chunks in document %" PRIu32, c->doc);
	if (c->page != k / h->page_chunks)
		return fm_err_set(err, FM_EDATA, "chunk %" PRIu64 " is on page %" PRIu32
		    " (expected %" PRIu32 ")", c->id, c->page, k / h->page_chunks);
	if (c->n_tokens == 0 || c->n_tokens > h->chunk_tokens)
		return fm_err_set(err, FM_EDATA, "chunk %" PRIu64 " has %" PRIu32
		    " tokens (expected 1..%" PRIu32 ")", c->id, c->n_tokens, h->chunk_tokens);
	if (k > 0 && s->prev_n != h->chunk_tokens)
		return fm_err_set(err, FM_EDATA, "chunk %" PRIu64 " follows a short chunk "
		    "(only a document's last chunk may have fewer than %" PRIu32 " tokens)",
		    c->id, h->chunk_tokens);
	if (k > 0 && c->n_tokens <= h->overlap)
		return fm_err_set(err, FM_EDATA, "chunk %" PRIu64 " has %" PRIu32
		    " tokens, not more than the overlap", c->id, c->n_tokens);
	if (k > 0 && h->overlap > 0 &&
	    memcmp(c->ids, s->tail, h->overlap * sizeof *s->tail) != 0)
		return fm_err_set(err, FM_EDATA, "chunk %" PRIu64 " does not begin with the last %"
		    PRIu32 " tokens of the chunk before", c->id, h->overlap);
	for (uint32_t i = 0; i < c->n_tokens; i++)
		if (c->ids[i] < 0 || (uint32_t)c->ids[i] >= h->n_vocab)
			return fm_err_set(err, FM_EDATA, "chunk %" PRIu64 " token %" PRIu32
			    " has id %" PRId32 " outside the vocabulary of %" PRIu32,
			    c->id, i, c->ids[i], h->n_vocab);
	if (c->offset > UINT64_MAX - c->length)
		return fm_err_set(err, FM_EDATA, "chunk %" PRIu64 " text span overflows", c->id);

	s->n_chunks++;
	s->doc_chunks++;
	s->doc_tokens += k == 0 ? c->n_tokens : c->n_tokens - h->overlap;
	if (c->offset + c->length > s->doc_span)
		s->doc_span = c->offset + c->length;
	s->prev_n = c->n_tokens;
	/* Only a full chunk can be followed, and a full chunk holds more than overlap ids. */
	if (c->n_tokens == h->chunk_tokens && h->overlap > 0)
		memcpy(s->tail, c->ids + (c->n_tokens - h->overlap), h->overlap * sizeof *s->tail);
	return FM_OK;
}

static int
seq_doc_end(struct seq *s, const struct fm_doc_end *e, struct fm_err *err)
{
	if (!s->in_doc)
		return fm_err_set(err, FM_EDATA, "end of document %" PRIu32 " outside a document",
		    e->doc);
	if (e->doc != s->n_docs - 1)
		return fm_err_set(err, FM_EDATA, "end of document %" PRIu32 " inside document %"
		    PRIu32, e->doc, s->n_docs - 1);
	if (e->n_chunks != s->doc_chunks)
		return fm_err_set(err, FM_EDATA, "document %" PRIu32 " claims %" PRIu32
		    " chunks, has %" PRIu32, e->doc, e->n_chunks, s->doc_chunks);
	if (e->n_tokens != s->doc_tokens)
		return fm_err_set(err, FM_EDATA, "document %" PRIu32 " claims %" PRIu64
		    " tokens, its chunks hold %" PRIu64, e->doc, e->n_tokens, s->doc_tokens);
	if (e->bytes < s->doc_span)
		return fm_err_set(err, FM_EDATA, "document %" PRIu32 " of %" PRIu64
		    " bytes has a chunk ending at byte %" PRIu64, e->doc, e->bytes, s->doc_span);
	if (e->flags & ~(uint32_t)FM_DOC_INCOMPLETE)
		return fm_err_set(err, FM_EDATA, "document %" PRIu32 " has unknown flags 0x%"
		    PRIx32, e->doc, e->flags);
	s->in_doc = false;
	return FM_OK;
}

static int
seq_end(struct seq *s, const struct fm_chunk_end *e, struct fm_err *err)
{
	if (s->in_doc)
		return fm_err_set(err, FM_EDATA, "end of file inside document %" PRIu32,
		    s->n_docs - 1);
	if (e->n_docs != s->n_docs)
		return fm_err_set(err, FM_EDATA, "end record claims %" PRIu32
		    " documents, file has %" PRIu32, e->n_docs, s->n_docs);
	if (e->n_chunks != s->n_chunks)
		return fm_err_set(err, FM_EDATA, "end record claims %" PRIu64
		    " chunks, file has %" PRIu64, e->n_chunks, s->n_chunks);
	return FM_OK;
}

/* Writer. */

/* Writes n bytes, hashing them; errno survives a failure for the caller to see. */
static int
w_put(struct fm_chunkw *w, const void *p, size_t n, uint32_t *crc, struct fm_err *err)
{
	if (n > 0 && fwrite(p, 1, n, w->f) != n) {
		int e = errno ? errno : EIO;

		w->failed = true;
		fm_err_errno(err, FM_EIO, e, "write error");
		errno = e;
		return FM_EIO;
	}
	w->hash = fm_fnv64(w->hash, p, n);
	if (crc != NULL)
		*crc = fm_crc32c(*crc, p, n);
	return FM_OK;
}

/* One record: tag, length, the fixed part, up to two data parts, the CRC. */
static int
w_record(struct fm_chunkw *w, uint32_t tag, const unsigned char *fixed, size_t nfixed,
    const void *d1, size_t n1, const void *d2, size_t n2, struct fm_err *err)
{
	unsigned char head[8], tail[4];
	uint32_t crc = 0;
	/* Callers have checked the size against FM_CHUNK_MAX_RECORD. */
	uint32_t len = (uint32_t)(nfixed + n1 + n2);

	put32(head, tag);
	put32(head + 4, len);
	errno = 0;
	if (w_put(w, head, 8, &crc, err) != FM_OK ||
	    w_put(w, fixed, nfixed, &crc, err) != FM_OK ||
	    w_put(w, d1, n1, &crc, err) != FM_OK ||
	    w_put(w, d2, n2, &crc, err) != FM_OK)
		return FM_EIO;
	put32(tail, crc);
	return w_put(w, tail, 4, NULL, err);
}

static int
w_usable(struct fm_chunkw *w, struct fm_err *err)
{
	if (w->failed)
		return fm_err_set(err, FM_EIO, "chunk file unusable after a write error");
	if (w->finished)
		return fm_err_set(err, FM_EDATA, "chunk file already finished");
	return FM_OK;
}

struct fm_chunkw *
fm_chunkw_open(FILE *f, const struct fm_chunk_header *h, struct fm_err *err)
{
	struct fm_chunkw *w;
	unsigned char hdr[HDR_MAX];
	size_t kl, ml, n;

	if (h->version != 0 && h->version != FM_CHUNK_VERSION) {
		fm_err_set(err, FM_EDATA, "cannot write chunk file version %" PRIu32, h->version);
		return NULL;
	}
	if (fm_chunk_header_check(h, err) != FM_OK)
		return NULL;
	if ((w = calloc(1, sizeof *w)) == NULL) {
		fm_err_errno(err, FM_EIO, ENOMEM, "chunk file");
		return NULL;
	}
	w->f = f;
	w->h = *h;
	w->h.version = FM_CHUNK_VERSION;
	if (seq_init(&w->s, &w->h, err) != FM_OK) {
		free(w);
		return NULL;
	}
	w->hash = FM_FNV64_INIT;

	kl = strlen(h->tok_kind);
	ml = strlen(h->model_name);
	n = HDR_FIXED + 2 + kl + 2 + ml + 4;
	memcpy(hdr, magic, 8);
	put32(hdr + 8, FM_CHUNK_VERSION);
	put32(hdr + 12, (uint32_t)n);
	put64(hdr + 16, h->tok_fingerprint);
	put32(hdr + 24, h->n_vocab);
	put32(hdr + 28, h->chunk_tokens);
	put32(hdr + 32, h->overlap);
	put32(hdr + 36, h->page_chunks);
	put16(hdr + 40, (uint16_t)kl);
	memcpy(hdr + 42, h->tok_kind, kl);
	put16(hdr + 42 + kl, (uint16_t)ml);
	memcpy(hdr + 44 + kl, h->model_name, ml);
	put32(hdr + n - 4, fm_crc32c(0, hdr, n - 4));
	errno = 0;
	if (w_put(w, hdr, n, NULL, err) != FM_OK) {
		int e = errno;

		fm_chunkw_free(w);
		errno = e;
		return NULL;
	}
	return w;
}

int
fm_chunkw_doc_begin(struct fm_chunkw *w, const char *name, size_t name_len, struct fm_err *err)
{
	unsigned char fixed[DOCB_FIXED];
	int st;

	if ((st = w_usable(w, err)) != FM_OK)
		return st;
	if ((st = seq_doc_begin(&w->s, w->s.n_docs, name, name_len, err)) != FM_OK)
		return st;
	put32(fixed, w->s.n_docs - 1);
	put32(fixed + 4, (uint32_t)name_len);
	return w_record(w, TAG_DOCB, fixed, sizeof fixed, name, name_len, NULL, 0, err);
}

int
fm_chunkw_chunk(struct fm_chunkw *w, const struct fm_chunk *c, struct fm_err *err)
{
	unsigned char fixed[CHNK_FIXED];
	uint64_t len = CHNK_FIXED + 4 * (uint64_t)c->n_tokens + c->length;
	int st;

	if ((st = w_usable(w, err)) != FM_OK)
		return st;
	/* Refused before the sequence moves on, so the caller may go on after it. */
	if (len > FM_CHUNK_MAX_RECORD)
		return fm_err_set(err, FM_EDATA, "chunk %" PRIu64 " of %" PRIu64
		    " bytes exceeds the record limit of %u", c->id, len, FM_CHUNK_MAX_RECORD);
	if ((st = seq_chunk(&w->s, c, err)) != FM_OK)
		return st;
	put64(fixed, c->id);
	put32(fixed + 8, c->doc);
	put32(fixed + 12, c->chunk);
	put32(fixed + 16, c->page);
	put32(fixed + 20, c->n_tokens);
	put64(fixed + 24, c->offset);
	put32(fixed + 32, c->length);
	return w_record(w, TAG_CHNK, fixed, sizeof fixed, c->ids, 4 * (size_t)c->n_tokens,
	    c->text, c->length, err);
}

int
fm_chunkw_doc_end(struct fm_chunkw *w, const struct fm_doc_end *e, struct fm_err *err)
{
	unsigned char p[DOCE_LEN];
	int st;

	if ((st = w_usable(w, err)) != FM_OK)
		return st;
	if ((st = seq_doc_end(&w->s, e, err)) != FM_OK)
		return st;
	put32(p, e->doc);
	put64(p + 4, e->bytes);
	put64(p + 12, e->n_tokens);
	put32(p + 20, e->n_chunks);
	put32(p + 24, e->flags);
	return w_record(w, TAG_DOCE, p, sizeof p, NULL, 0, NULL, 0, err);
}

int
fm_chunkw_finish(struct fm_chunkw *w, struct fm_chunk_end *end_out, struct fm_err *err)
{
	struct fm_chunk_end e;
	unsigned char p[END_LEN];
	int st;

	if ((st = w_usable(w, err)) != FM_OK)
		return st;
	e.n_docs = w->s.n_docs;
	e.n_chunks = w->s.n_chunks;
	e.content_hash = w->hash;
	if ((st = seq_end(&w->s, &e, err)) != FM_OK)
		return st;
	put32(p, e.n_docs);
	put64(p + 4, e.n_chunks);
	put64(p + 12, e.content_hash);
	if ((st = w_record(w, TAG_END, p, sizeof p, NULL, 0, NULL, 0, err)) != FM_OK)
		return st;
	errno = 0;
	if (fflush(w->f) != 0) {
		int en = errno ? errno : EIO;

		w->failed = true;
		fm_err_errno(err, FM_EIO, en, "write error");
		errno = en;
		return FM_EIO;
	}
	w->finished = true;
	if (end_out != NULL)
		*end_out = e;
	return FM_OK;
}

void
fm_chunkw_free(struct fm_chunkw *w)
{
	if (w == NULL)
		return;
	free(w->s.tail);
	free(w);
}

/* Reader. */

/* Reports the checker's reason e with the record number appended. */
static int
r_fail(struct fm_chunkr *r, const struct fm_err *e, struct fm_err *err)
{
	r->state = R_FAILED;
	return fm_err_set(err, e->status, "%s at record %" PRIu64, e->msg, r->recno);
}

/*
 * Reads exactly n bytes into p.  Short: FM_EIO for a read error, FM_EDATA
 * "truncated at record N" for end of file.
 */
static int
r_read(struct fm_chunkr *r, void *p, size_t n, struct fm_err *err)
{
	size_t got;

	errno = 0;
	got = fread(p, 1, n, r->f);
	if (got == n)
		return FM_OK;
	r->state = R_FAILED;
	if (ferror(r->f))
		return fm_err_errno(err, FM_EIO, errno ? errno : EIO,
		    "read error at record %" PRIu64, r->recno);
	return fm_err_set(err, FM_EDATA, "truncated at record %" PRIu64, r->recno);
}

/*
 * Reads n bytes into the record buffer, with room for a NUL after them.  The
 * buffer grows only as data arrives, so a truncated file claiming a huge
 * record allocates about what it holds, not what it claims.
 */
static int
r_read_var(struct fm_chunkr *r, size_t n, struct fm_err *err)
{
	size_t got = 0;
	int st;

	for (;;) {
		size_t lim = r->cap < n ? r->cap : n;
		size_t ncap;
		unsigned char *nb;

		if (got < lim) {
			if ((st = r_read(r, r->buf + got, lim - got, err)) != FM_OK)
				return st;
			got = lim;
			continue;
		}
		if (got == n && r->cap > n)
			return FM_OK;
		ncap = r->cap < 65536 ? 65536 : 2 * r->cap;
		if (ncap > n + 1)
			ncap = n + 1;
		if ((nb = realloc(r->buf, ncap)) == NULL) {
			r->state = R_FAILED;
			return fm_err_errno(err, FM_EIO, ENOMEM, "record %" PRIu64, r->recno);
		}
		r->buf = nb;
		r->cap = ncap;
	}
}

/* Reads and checks the header; r->hash starts as the FNV-1a of its bytes. */
static int
r_header(struct fm_chunkr *r, unsigned char *hdr, struct fm_err *err)
{
	struct fm_chunk_header *h = &r->h;
	struct fm_err e;
	size_t got;
	uint32_t hlen, kl, ml;

	errno = 0;
	got = fread(hdr, 1, 16, r->f);
	if (got < 16 && ferror(r->f))
		return fm_err_errno(err, FM_EIO, errno ? errno : EIO, "read error");
	if (got == 0)
		return fm_err_set(err, FM_EDATA, "empty input, not a chunk file");
	if (memcmp(hdr, magic, got < 8 ? got : 8) != 0)
		return fm_err_set(err, FM_EDATA, "not a chunk file (bad magic)");
	if (got < 16)
		return fm_err_set(err, FM_EDATA, "truncated header");
	/* The version comes before the checksum: a newer header may differ entirely. */
	h->version = get32(hdr + 8);
	if (h->version > FM_CHUNK_VERSION)
		return fm_err_set(err, FM_EDATA, "unsupported chunk file version %" PRIu32,
		    h->version);
	if (h->version == 0)
		return fm_err_set(err, FM_EDATA, "invalid chunk file version 0");
	hlen = get32(hdr + 12);
	if (hlen < HDR_MIN || hlen > HDR_MAX)
		return fm_err_set(err, FM_EDATA, "header length %" PRIu32 " out of range %d..%d",
		    hlen, HDR_MIN, HDR_MAX);
	errno = 0;
	got = fread(hdr + 16, 1, hlen - 16, r->f);
	if (got < hlen - 16 && ferror(r->f))
		return fm_err_errno(err, FM_EIO, errno ? errno : EIO, "read error");
	if (got < hlen - 16)
		return fm_err_set(err, FM_EDATA, "truncated header");
	if (fm_crc32c(0, hdr, hlen - 4) != get32(hdr + hlen - 4))
		return fm_err_set(err, FM_EDATA, "header checksum mismatch");

	h->tok_fingerprint = get64(hdr + 16);
	h->n_vocab = get32(hdr + 24);
	h->chunk_tokens = get32(hdr + 28);
	h->overlap = get32(hdr + 32);
	h->page_chunks = get32(hdr + 36);
	kl = get16(hdr + 40);
	if (kl >= sizeof h->tok_kind || HDR_FIXED + 2 + kl + 2 + 4 > hlen)
		return fm_err_set(err, FM_EDATA, "invalid header: tokenizer kind length %" PRIu32,
		    kl);
	ml = get16(hdr + 42 + kl);
	if (ml >= sizeof h->model_name || HDR_FIXED + 2 + kl + 2 + ml + 4 != hlen)
		return fm_err_set(err, FM_EDATA, "invalid header: length %" PRIu32
		    " does not match its strings", hlen);
	memcpy(h->tok_kind, hdr + 42, kl);
	h->tok_kind[kl] = '\0';
	memcpy(h->model_name, hdr + 44 + kl, ml);
	h->model_name[ml] = '\0';
	if (memchr(h->tok_kind, '\0', kl) != NULL || memchr(h->model_name, '\0', ml) != NULL)
		return fm_err_set(err, FM_EDATA, "invalid header: a string contains a nul byte");
	if (fm_chunk_header_check(h, &e) != FM_OK)
		return fm_err_set(err, e.status, "invalid header: %s", e.msg);
	r->hash = fm_fnv64(FM_FNV64_INIT, hdr, hlen);
	return FM_OK;
}

struct fm_chunkr *
fm_chunkr_open(FILE *f, struct fm_err *err)
{
	struct fm_chunkr *r;
	unsigned char hdr[HDR_MAX];

	if ((r = calloc(1, sizeof *r)) == NULL) {
		fm_err_errno(err, FM_EIO, ENOMEM, "chunk file");
		return NULL;
	}
	r->f = f;
	if (r_header(r, hdr, err) != FM_OK || seq_init(&r->s, &r->h, err) != FM_OK) {
		fm_chunkr_free(r);
		return NULL;
	}
	return r;
}

const struct fm_chunk_header *
fm_chunkr_header(const struct fm_chunkr *r)
{
	return &r->h;
}

/*
 * The payload size a record's type allows, checked before anything is read:
 * DOCE and END are fixed, DOCB and CHNK have a fixed part and data.
 */
static int
r_fixed_len(uint32_t tag, uint32_t len, uint32_t *nfixed, struct fm_err *e)
{
	bool fits;

	switch (tag) {
	case TAG_DOCB:
		*nfixed = DOCB_FIXED;
		fits = len >= DOCB_FIXED && len <= DOCB_FIXED + FM_CHUNK_MAX_NAME;
		break;
	case TAG_CHNK:
		*nfixed = CHNK_FIXED;
		fits = len >= CHNK_FIXED;
		break;
	case TAG_DOCE:
		*nfixed = DOCE_LEN;
		fits = len == DOCE_LEN;
		break;
	case TAG_END:
		*nfixed = END_LEN;
		fits = len == END_LEN;
		break;
	default:
		return fm_err_set(e, FM_EDATA, "unknown record type 0x%08" PRIx32, tag);
	}
	if (!fits)
		return fm_err_set(e, FM_EDATA, "record length %" PRIu32 " wrong for its type", len);
	return FM_OK;
}

/* The data bytes that the fixed part announces, checked against the record length. */
static int
r_var_len(const struct fm_chunkr *r, uint32_t tag, uint32_t len, const unsigned char *fixed,
    size_t *nvar, struct fm_err *e)
{
	*nvar = 0;
	if (tag == TAG_DOCB) {
		uint32_t nl = get32(fixed + 4);

		if (nl > FM_CHUNK_MAX_NAME)
			return fm_err_set(e, FM_EDATA, "document name of %" PRIu32 " bytes exceeds %d",
			    nl, FM_CHUNK_MAX_NAME);
		if ((uint64_t)DOCB_FIXED + nl != len)
			return fm_err_set(e, FM_EDATA, "record length %" PRIu32
			    " does not match its name length", len);
		*nvar = nl;
	} else if (tag == TAG_CHNK) {
		uint32_t nt = get32(fixed + 20), tl = get32(fixed + 32);

		if (nt > r->h.chunk_tokens)
			return fm_err_set(e, FM_EDATA, "chunk of %" PRIu32
			    " tokens exceeds chunk_tokens %" PRIu32, nt, r->h.chunk_tokens);
		if ((uint64_t)CHNK_FIXED + 4 * (uint64_t)nt + tl != len)
			return fm_err_set(e, FM_EDATA, "record length %" PRIu32
			    " does not match its token and text lengths", len);
		*nvar = len - CHNK_FIXED;
	}
	return FM_OK;
}

/* Decodes a checksummed record and runs it through the sequence checker. */
static int
r_decode(struct fm_chunkr *r, uint32_t tag, const unsigned char *fixed, size_t nvar,
    struct fm_chunk_record *rec, struct fm_err *e)
{
	switch (tag) {
	case TAG_DOCB:
		rec->kind = FM_REC_DOC_BEGIN;
		rec->doc.doc = get32(fixed);
		rec->doc.name_len = (uint32_t)nvar;
		r->buf[nvar] = '\0';
		rec->doc.name = (const char *)r->buf;
		return seq_doc_begin(&r->s, rec->doc.doc, rec->doc.name, nvar, e);
	case TAG_CHNK:
		rec->kind = FM_REC_CHUNK;
		rec->chunk.id = get64(fixed);
		rec->chunk.doc = get32(fixed + 8);
		rec->chunk.chunk = get32(fixed + 12);
		rec->chunk.page = get32(fixed + 16);
		rec->chunk.n_tokens = get32(fixed + 20);
		rec->chunk.offset = get64(fixed + 24);
		rec->chunk.length = get32(fixed + 32);
		/* At the start of a malloc'd buffer: aligned, and in host order (little-endian). */
		rec->chunk.ids = (const int32_t *)(void *)r->buf;
		rec->chunk.text = (const char *)r->buf + 4 * (size_t)rec->chunk.n_tokens;
		return seq_chunk(&r->s, &rec->chunk, e);
	case TAG_DOCE:
		rec->kind = FM_REC_DOC_END;
		rec->doc_end.doc = get32(fixed);
		rec->doc_end.bytes = get64(fixed + 4);
		rec->doc_end.n_tokens = get64(fixed + 12);
		rec->doc_end.n_chunks = get32(fixed + 20);
		rec->doc_end.flags = get32(fixed + 24);
		return seq_doc_end(&r->s, &rec->doc_end, e);
	default:
		rec->kind = FM_REC_END;
		rec->end.n_docs = get32(fixed);
		rec->end.n_chunks = get64(fixed + 4);
		rec->end.content_hash = get64(fixed + 12);
		if (seq_end(&r->s, &rec->end, e) != FM_OK)
			return e->status;
		if (rec->end.content_hash != r->hash)
			return fm_err_set(e, FM_EDATA, "content hash mismatch");
		return FM_OK;
	}
}

int
fm_chunkr_next(struct fm_chunkr *r, struct fm_chunk_record *rec, struct fm_err *err)
{
	unsigned char head[8], fixed[CHNK_FIXED], tail[4];
	uint32_t tag, len, nfixed = 0, crc;
	size_t nvar;
	struct fm_err e;
	int st, ch;

	if (r->state == R_DONE) {
		r->state = R_FAILED;
		return fm_err_set(err, FM_EDATA, "read past the end record");
	}
	if (r->state == R_FAILED)
		return fm_err_set(err, FM_EDATA, "chunk file reader stopped at an earlier error");

	memset(rec, 0, sizeof *rec);
	rec->index = r->recno;
	if ((st = r_read(r, head, 8, err)) != FM_OK)
		return st;
	tag = get32(head);
	len = get32(head + 4);
	if (len > FM_CHUNK_MAX_RECORD) {
		fm_err_set(&e, FM_EDATA, "record length %" PRIu32 " exceeds the limit of %u",
		    len, FM_CHUNK_MAX_RECORD);
		return r_fail(r, &e, err);
	}
	if (r_fixed_len(tag, len, &nfixed, &e) != FM_OK)
		return r_fail(r, &e, err);
	if ((st = r_read(r, fixed, nfixed, err)) != FM_OK)
		return st;
	if (r_var_len(r, tag, len, fixed, &nvar, &e) != FM_OK)
		return r_fail(r, &e, err);
	/* Always through the buffer, even for 0 bytes: a DOCB name needs its NUL. */
	if ((tag == TAG_DOCB || tag == TAG_CHNK) && (st = r_read_var(r, nvar, err)) != FM_OK)
		return st;
	if ((st = r_read(r, tail, 4, err)) != FM_OK)
		return st;
	crc = fm_crc32c(0, head, 8);
	crc = fm_crc32c(crc, fixed, nfixed);
	crc = fm_crc32c(crc, r->buf, nvar);
	if (crc != get32(tail)) {
		fm_err_set(&e, FM_EDATA, "checksum mismatch");
		return r_fail(r, &e, err);
	}
	if (r_decode(r, tag, fixed, nvar, rec, &e) != FM_OK)
		return r_fail(r, &e, err);

	r->recno++;
	if (tag != TAG_END) {
		r->hash = fm_fnv64(r->hash, head, 8);
		r->hash = fm_fnv64(r->hash, fixed, nfixed);
		r->hash = fm_fnv64(r->hash, r->buf, nvar);
		r->hash = fm_fnv64(r->hash, tail, 4);
		return FM_OK;
	}
	/* Nothing may follow END: a concatenation or a stray write is an error. */
	errno = 0;
	ch = fgetc(r->f);
	if (ch != EOF) {
		r->state = R_FAILED;
		return fm_err_set(err, FM_EDATA, "trailing data after end record");
	}
	if (ferror(r->f)) {
		r->state = R_FAILED;
		return fm_err_errno(err, FM_EIO, errno ? errno : EIO, "read error after end record");
	}
	r->state = R_DONE;
	return FM_OK;
}

void
fm_chunkr_free(struct fm_chunkr *r)
{
	if (r == NULL)
		return;
	free(r->s.tail);
	free(r->buf);
	free(r);
}
