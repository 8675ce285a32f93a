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
 * The framing around the records is recstream.c's, shared with embedfile.c;
 * what a header field or record means is decided here.
 */
#include "chunkfile.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "checksum.h"
#include "recstream.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the chunk file code writes token ids in host order: little-endian hosts only"
#endif

static const unsigned char magic[8] = { 0x89, 'F', 'M', 'C', '\r', '\n', 0x1a, '\n' };

#define TAG_DOCB FM_REC_TAG('D', 'O', 'C', 'B')
#define TAG_CHNK FM_REC_TAG('C', 'H', 'N', 'K')
#define TAG_DOCE FM_REC_TAG('D', 'O', 'C', 'E')
#define TAG_END  FM_REC_TAG('E', 'N', 'D', ' ')

/* Header: 40 fixed bytes, two counted strings, the CRC. */
#define HDR_FIXED 40
#define HDR_MIN (HDR_FIXED + 2 + 1 + 2 + 4)
#define HDR_MAX (HDR_FIXED + 2 + 15 + 2 + 255 + 4)

static const struct fm_recfmt fmt = {
	magic, FM_CHUNK_VERSION, HDR_MIN, HDR_MAX, "chunk file", "a chunk file"
};

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
	struct fm_recw rw;
	struct fm_chunk_header h;
	struct seq s;
};

struct fm_chunkr {
	struct fm_recr rr;      /* its buf holds the variable part of the current record */
	struct fm_chunk_header h;
	struct seq s;
};

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
	w->h = *h;
	w->h.version = FM_CHUNK_VERSION;
	if (seq_init(&w->s, &w->h, err) != FM_OK) {
		free(w);
		return NULL;
	}

	kl = strlen(h->tok_kind);
	ml = strlen(h->model_name);
	n = HDR_FIXED + 2 + kl + 2 + ml + 4;
	fm_put64(hdr + 16, h->tok_fingerprint);
	fm_put32(hdr + 24, h->n_vocab);
	fm_put32(hdr + 28, h->chunk_tokens);
	fm_put32(hdr + 32, h->overlap);
	fm_put32(hdr + 36, h->page_chunks);
	fm_put16(hdr + 40, (uint16_t)kl);
	memcpy(hdr + 42, h->tok_kind, kl);
	fm_put16(hdr + 42 + kl, (uint16_t)ml);
	memcpy(hdr + 44 + kl, h->model_name, ml);
	if (fm_recw_open(&w->rw, f, &fmt, hdr, n, err) != FM_OK) {
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

	if ((st = fm_recw_usable(&w->rw, err)) != FM_OK)
		return st;
	if ((st = seq_doc_begin(&w->s, w->s.n_docs, name, name_len, err)) != FM_OK)
		return st;
	fm_put32(fixed, w->s.n_docs - 1);
	fm_put32(fixed + 4, (uint32_t)name_len);
	return fm_recw_record(&w->rw, TAG_DOCB, (struct fm_recpart[]){
	    { fixed, sizeof fixed }, { name, name_len } }, 2, err);
}

int
fm_chunkw_chunk(struct fm_chunkw *w, const struct fm_chunk *c, struct fm_err *err)
{
	unsigned char fixed[CHNK_FIXED];
	uint64_t len = CHNK_FIXED + 4 * (uint64_t)c->n_tokens + c->length;
	int st;

	if ((st = fm_recw_usable(&w->rw, err)) != FM_OK)
		return st;
	/* Refused before the sequence moves on, so the caller may go on after it. */
	if (len > FM_CHUNK_MAX_RECORD)
		return fm_err_set(err, FM_EDATA, "chunk %" PRIu64 " of %" PRIu64
		    " bytes exceeds the record limit of %u", c->id, len, FM_CHUNK_MAX_RECORD);
	if ((st = seq_chunk(&w->s, c, err)) != FM_OK)
		return st;
	fm_put64(fixed, c->id);
	fm_put32(fixed + 8, c->doc);
	fm_put32(fixed + 12, c->chunk);
	fm_put32(fixed + 16, c->page);
	fm_put32(fixed + 20, c->n_tokens);
	fm_put64(fixed + 24, c->offset);
	fm_put32(fixed + 32, c->length);
	/* The limit above keeps the record's length within a u32. */
	return fm_recw_record(&w->rw, TAG_CHNK, (struct fm_recpart[]){ { fixed, sizeof fixed },
	    { c->ids, 4 * (size_t)c->n_tokens }, { c->text, c->length } }, 3, err);
}

int
fm_chunkw_doc_end(struct fm_chunkw *w, const struct fm_doc_end *e, struct fm_err *err)
{
	unsigned char p[DOCE_LEN];
	int st;

	if ((st = fm_recw_usable(&w->rw, err)) != FM_OK)
		return st;
	if ((st = seq_doc_end(&w->s, e, err)) != FM_OK)
		return st;
	fm_put32(p, e->doc);
	fm_put64(p + 4, e->bytes);
	fm_put64(p + 12, e->n_tokens);
	fm_put32(p + 20, e->n_chunks);
	fm_put32(p + 24, e->flags);
	return fm_recw_record(&w->rw, TAG_DOCE, &(struct fm_recpart){ p, sizeof p }, 1, err);
}

int
fm_chunkw_finish(struct fm_chunkw *w, struct fm_chunk_end *end_out, struct fm_err *err)
{
	struct fm_chunk_end e;
	unsigned char p[END_LEN];
	int st;

	if ((st = fm_recw_usable(&w->rw, err)) != FM_OK)
		return st;
	e.n_docs = w->s.n_docs;
	e.n_chunks = w->s.n_chunks;
	e.content_hash = w->rw.hash;
	if ((st = seq_end(&w->s, &e, err)) != FM_OK)
		return st;
	fm_put32(p, e.n_docs);
	fm_put64(p + 4, e.n_chunks);
	fm_put64(p + 12, e.content_hash);
	if ((st = fm_recw_finish(&w->rw, TAG_END, &(struct fm_recpart){ p, sizeof p }, 1,
	    err)) != FM_OK)
		return st;
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

/* Reads and checks the header; the framing's part is fm_recr_open's. */
static int
r_header(struct fm_chunkr *r, FILE *f, unsigned char *hdr, struct fm_err *err)
{
	struct fm_chunk_header *h = &r->h;
	struct fm_err e;
	uint32_t hlen, kl, ml;
	int st;

	if ((st = fm_recr_open(&r->rr, f, &fmt, hdr, &hlen, err)) != FM_OK)
		return st;
	h->version = fm_get32(hdr + 8);
	h->tok_fingerprint = fm_get64(hdr + 16);
	h->n_vocab = fm_get32(hdr + 24);
	h->chunk_tokens = fm_get32(hdr + 28);
	h->overlap = fm_get32(hdr + 32);
	h->page_chunks = fm_get32(hdr + 36);
	kl = fm_get16(hdr + 40);
	if (kl >= sizeof h->tok_kind || HDR_FIXED + 2 + kl + 2 + 4 > hlen)
		return fm_err_set(err, FM_EDATA, "invalid header: tokenizer kind length %" PRIu32,
		    kl);
	ml = fm_get16(hdr + 42 + kl);
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
	if (r_header(r, f, hdr, err) != FM_OK || seq_init(&r->s, &r->h, err) != FM_OK) {
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
		uint32_t nl = fm_get32(fixed + 4);

		if (nl > FM_CHUNK_MAX_NAME)
			return fm_err_set(e, FM_EDATA, "document name of %" PRIu32 " bytes exceeds %d",
			    nl, FM_CHUNK_MAX_NAME);
		if ((uint64_t)DOCB_FIXED + nl != len)
			return fm_err_set(e, FM_EDATA, "record length %" PRIu32
			    " does not match its name length", len);
		*nvar = nl;
	} else if (tag == TAG_CHNK) {
		uint32_t nt = fm_get32(fixed + 20), tl = fm_get32(fixed + 32);

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
		rec->doc.doc = fm_get32(fixed);
		rec->doc.name_len = (uint32_t)nvar;
		r->rr.buf[nvar] = '\0';
		rec->doc.name = (const char *)r->rr.buf;
		return seq_doc_begin(&r->s, rec->doc.doc, rec->doc.name, nvar, e);
	case TAG_CHNK:
		rec->kind = FM_REC_CHUNK;
		rec->chunk.id = fm_get64(fixed);
		rec->chunk.doc = fm_get32(fixed + 8);
		rec->chunk.chunk = fm_get32(fixed + 12);
		rec->chunk.page = fm_get32(fixed + 16);
		rec->chunk.n_tokens = fm_get32(fixed + 20);
		rec->chunk.offset = fm_get64(fixed + 24);
		rec->chunk.length = fm_get32(fixed + 32);
		/* At the start of a malloc'd buffer: aligned, and in host order (little-endian). */
		rec->chunk.ids = (const int32_t *)(void *)r->rr.buf;
		rec->chunk.text = (const char *)r->rr.buf + 4 * (size_t)rec->chunk.n_tokens;
		return seq_chunk(&r->s, &rec->chunk, e);
	case TAG_DOCE:
		rec->kind = FM_REC_DOC_END;
		rec->doc_end.doc = fm_get32(fixed);
		rec->doc_end.bytes = fm_get64(fixed + 4);
		rec->doc_end.n_tokens = fm_get64(fixed + 12);
		rec->doc_end.n_chunks = fm_get32(fixed + 20);
		rec->doc_end.flags = fm_get32(fixed + 24);
		return seq_doc_end(&r->s, &rec->doc_end, e);
	default:
		rec->kind = FM_REC_END;
		rec->end.n_docs = fm_get32(fixed);
		rec->end.n_chunks = fm_get64(fixed + 4);
		rec->end.content_hash = fm_get64(fixed + 12);
		if (seq_end(&r->s, &rec->end, e) != FM_OK)
			return e->status;
		if (rec->end.content_hash != r->rr.hash)
			return fm_err_set(e, FM_EDATA, "content hash mismatch");
		return FM_OK;
	}
}

int
fm_chunkr_next(struct fm_chunkr *r, struct fm_chunk_record *rec, struct fm_err *err)
{
	unsigned char fixed[CHNK_FIXED];
	uint32_t tag, len, nfixed = 0;
	size_t nvar;
	struct fm_recpart parts[2];
	struct fm_err e;
	int st;

	if ((st = fm_recr_usable(&r->rr, err)) != FM_OK)
		return st;
	memset(rec, 0, sizeof *rec);
	rec->index = r->rr.recno;
	if ((st = fm_recr_head(&r->rr, &tag, &len, err)) != FM_OK)
		return st;
	if (len > FM_CHUNK_MAX_RECORD) {
		fm_err_set(&e, FM_EDATA, "record length %" PRIu32 " exceeds the limit of %u",
		    len, FM_CHUNK_MAX_RECORD);
		return fm_recr_fail(&r->rr, &e, err);
	}
	if (r_fixed_len(tag, len, &nfixed, &e) != FM_OK)
		return fm_recr_fail(&r->rr, &e, err);
	if ((st = fm_recr_read(&r->rr, fixed, nfixed, err)) != FM_OK)
		return st;
	if (r_var_len(r, tag, len, fixed, &nvar, &e) != FM_OK)
		return fm_recr_fail(&r->rr, &e, err);
	/* Always through the buffer, even for 0 bytes: a DOCB name needs its NUL. */
	if ((tag == TAG_DOCB || tag == TAG_CHNK) &&
	    (st = fm_recr_read_var(&r->rr, nvar, err)) != FM_OK)
		return st;
	parts[0] = (struct fm_recpart){ fixed, nfixed };
	parts[1] = (struct fm_recpart){ r->rr.buf, nvar };
	if ((st = fm_recr_check(&r->rr, parts, 2, err)) != FM_OK)
		return st;
	if (r_decode(r, tag, fixed, nvar, rec, &e) != FM_OK)
		return fm_recr_fail(&r->rr, &e, err);
	if (tag != TAG_END) {
		fm_recr_accept(&r->rr, parts, 2);
		return FM_OK;
	}
	return fm_recr_finish(&r->rr, err);
}

void
fm_chunkr_free(struct fm_chunkr *r)
{
	if (r == NULL)
		return;
	free(r->s.tail);
	fm_recr_free(&r->rr);
	free(r);
}
