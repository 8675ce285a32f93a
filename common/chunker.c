/*
 * chunker.c - cutting documents into token chunks as they stream in.
 *
 * A document is read in blocks into a window of its bytes.  The window is
 * tokenized in segments ending right after a newline, which gives exactly
 * the tokens of the whole document when the vocabulary has no token that
 * spans a newline and no invalid UTF-8 before it swallows the newline
 * (fm_tok_newline_cut_ok); a line longer than
 * MAX_SEGMENT is cut at a space, or failing that at a character boundary,
 * the only place where tokens may differ from whole-document tokenization.
 * Tokens wait in a pending list until a chunk is full; the window keeps the
 * bytes from the first pending token on, so a chunk's text can be written
 * with it and memory stays bounded by a segment plus a chunk.
 */
#include "chunker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chunkfile.h"
#include "docsource.h"
#include "gguf.h"
#include "io.h"
#include "json.h"
#include "tokenizer.h"

#define BLOCK (64 * 1024)
#define MAX_SEGMENT (1024 * 1024)
#define BINARY_PROBE 8192   /* a NUL byte in this many first bytes: binary */

struct pending {
	int32_t *id;
	uint64_t *start, *end;   /* byte span in the document */
	size_t n, cap;
};

struct chunker {
	const struct fm_chunk_opts *o;
	const struct fm_tok *tok;
	struct fm_chunkw *w;      /* WRITE mode */
	FILE *out;                /* PRINT_TOKENS mode */
	struct fm_err err;
	/* The current document. */
	uint32_t doc;
	char *win;                /* document bytes [win_base, win_base + win_len) */
	size_t win_len, win_cap;
	uint64_t win_base;
	uint64_t seg;             /* document offset where the next segment starts */
	bool first_seg;
	uint32_t chunk;           /* chunks written for this document */
	uint64_t n_tokens;
	bool begun;               /* its DOCB record is written */
	struct pending p;
	struct fm_tokens toks;
	/* Totals. */
	uint64_t next_id, docs, bytes, tokens;
	int status;
	bool fatal;               /* the output failed: stop */
};

static int
pending_push(struct pending *p, int32_t id, uint64_t s, uint64_t e, struct fm_err *err)
{
	if (p->n == p->cap) {
		size_t cap = p->cap ? 2 * p->cap : 1024;
		int32_t *i = realloc(p->id, cap * sizeof *i);
		uint64_t *a, *b;
		if (i == NULL)
			return fm_err_errno(err, FM_EIO, errno, "cannot allocate");
		p->id = i;
		if ((a = realloc(p->start, cap * sizeof *a)) == NULL)
			return fm_err_errno(err, FM_EIO, errno, "cannot allocate");
		p->start = a;
		if ((b = realloc(p->end, cap * sizeof *b)) == NULL)
			return fm_err_errno(err, FM_EIO, errno, "cannot allocate");
		p->end = b;
		p->cap = cap;
	}
	p->id[p->n] = id;
	p->start[p->n] = s;
	p->end[p->n] = e;
	p->n++;
	return FM_OK;
}

static void
pending_drop(struct pending *p, size_t k)
{
	p->n -= k;
	memmove(p->id, p->id + k, p->n * sizeof *p->id);
	memmove(p->start, p->start + k, p->n * sizeof *p->start);
	memmove(p->end, p->end + k, p->n * sizeof *p->end);
}

/* Writes a chunk of the first n pending tokens, then keeps the overlap. */
static int
emit_chunk(struct chunker *c, size_t n)
{
	const struct fm_chunk_opts *o = c->o;
	struct fm_chunk ch;
	uint64_t lo = c->p.start[0], hi = c->p.end[0];
	size_t drop;

	for (size_t i = 1; i < n; i++) {
		if (c->p.start[i] < lo)
			lo = c->p.start[i];
		if (c->p.end[i] > hi)
			hi = c->p.end[i];
	}
	if (hi - lo > FM_CHUNK_MAX_RECORD / 2)
		return fm_err_set(&c->err, FM_EDATA, "chunk %u: text longer than %u bytes",
		    c->chunk, FM_CHUNK_MAX_RECORD / 2);
	ch.id = c->next_id;
	ch.doc = c->doc;
	ch.chunk = c->chunk;
	ch.page = c->chunk / o->page_chunks;
	ch.n_tokens = (uint32_t)n;
	ch.ids = c->p.id;
	ch.offset = lo;
	ch.length = (uint32_t)(hi - lo);
	ch.text = c->win + (lo - c->win_base);
	if (fm_chunkw_chunk(c->w, &ch, &c->err) != FM_OK) {
		c->fatal = true;
		return c->err.status;
	}
	c->next_id++;
	c->chunk++;
	drop = n > o->overlap ? n - o->overlap : n;
	pending_drop(&c->p, drop);
	return FM_OK;
}

/* Prints pending tokens (PRINT_TOKENS) or writes every full chunk (WRITE). */
static int
flush_tokens(struct chunker *c, bool at_end)
{
	size_t n = c->o->chunk_tokens;

	if (c->o->mode == FM_CHUNK_PRINT_TOKENS) {
		for (size_t i = 0; i < c->p.n; i++)
			fprintf(c->out, " %d", c->p.id[i]);
		c->p.n = 0;
		if (ferror(c->out)) {
			c->fatal = true;
			return fm_err_errno(&c->err, FM_EIO, errno, "write error");
		}
		return FM_OK;
	}
	while (c->p.n >= n)
		if (emit_chunk(c, n) != FM_OK)
			return c->err.status;
	/* The tail of a document, unless it is all overlap already written. */
	if (at_end && c->p.n > 0 && (c->chunk == 0 || c->p.n > c->o->overlap))
		return emit_chunk(c, c->p.n);
	return FM_OK;
}

/* Tokenizes the window from c->seg to doc offset `to` and passes the tokens on. */
static int
tokenize_to(struct chunker *c, uint64_t to, bool at_end)
{
	size_t from = (size_t)(c->seg - c->win_base);
	size_t len = (size_t)(to - c->seg);
	unsigned flags = c->first_seg ? 0 : FM_TOK_CONTINUE;

	fm_tokens_clear(&c->toks);
	if (len > 0) {
		if (fm_tok_encode(c->tok, c->win + from, len, flags, &c->toks, &c->err) != FM_OK) {
			c->fatal = c->err.status == FM_EIO;
			return c->err.status;
		}
		c->first_seg = false;
	}
	for (size_t i = 0; i < c->toks.n; i++)
		if (pending_push(&c->p, c->toks.ids[i], c->seg + c->toks.start[i],
		    c->seg + c->toks.end[i], &c->err) != FM_OK) {
			c->fatal = true;
			return c->err.status;
		}
	c->n_tokens += c->toks.n;
	c->seg = to;
	if (flush_tokens(c, at_end) != FM_OK)
		return c->err.status;
	/* Bytes before the first pending token and the segment start are done with. */
	uint64_t keep = c->seg;
	if (c->p.n > 0 && c->p.start[0] < keep)
		keep = c->p.start[0];
	if (keep > c->win_base &&
	    (keep - c->win_base > c->win_len / 2 || keep - c->win_base == c->win_len)) {
		size_t k = (size_t)(keep - c->win_base);
		memmove(c->win, c->win + k, c->win_len - k);
		c->win_len -= k;
		c->win_base = keep;
	}
	return FM_OK;
}

/* Where the next segment may end: after the last newline, or a forced cut. */
static uint64_t
segment_end(const struct chunker *c)
{
	const char *s = c->win + (c->seg - c->win_base);
	size_t len = (size_t)(c->win_base + c->win_len - c->seg);
	size_t i;

	for (i = len; i > 0; i--)
		if (s[i - 1] == '\n' && fm_tok_newline_cut_ok(c->tok, s, i))
			return c->seg + i;
	if (len < MAX_SEGMENT)
		return c->seg;
	/* A space preceded by a non-space: the space starts the next word. */
	for (i = len - 1; i > len / 2; i--)
		if ((s[i] == ' ' || s[i] == '\t') && s[i - 1] != ' ' && s[i - 1] != '\t')
			return c->seg + i;
	/* Not inside a UTF-8 sequence. */
	for (i = len; i > len - 4 && ((unsigned char)s[i - 1] & 0xC0) == 0x80; i--)
		;
	if (i > len - 4 && (unsigned char)s[i - 1] >= 0xC0)
		i--;
	return c->seg + i;
}

static int
window_append(struct chunker *c, const char *buf, size_t n)
{
	if (c->win_len + n > c->win_cap) {
		size_t cap = (c->win_len + n) * 2;
		char *p = realloc(c->win, cap);
		if (p == NULL)
			return fm_err_errno(&c->err, FM_EIO, errno, "cannot allocate");
		c->win = p;
		c->win_cap = cap;
	}
	memcpy(c->win + c->win_len, buf, n);
	c->win_len += n;
	return FM_OK;
}

/* Records the document's start in the output (WRITE mode), once. */
static int
begin_doc(struct chunker *c, const char *name)
{
	if (c->o->mode != FM_CHUNK_WRITE || c->begun)
		return FM_OK;
	c->begun = true;
	if (fm_chunkw_doc_begin(c->w, name, strlen(name), &c->err) != FM_OK) {
		c->fatal = true;
		return c->err.status;
	}
	return FM_OK;
}

/*
 * Chunks (or prints) one document.  Returns a status with c->err saying why;
 * c->fatal is set when the output failed, which ends the whole run.
 */
static int
do_document(struct chunker *c, struct fm_docsrc *src, const char *name)
{
	static char buf[BLOCK];
	ssize_t n;

	c->win_len = 0;
	c->win_base = 0;
	c->seg = 0;
	c->first_seg = true;
	c->begun = false;
	c->chunk = 0;
	c->n_tokens = 0;
	c->p.n = 0;
	while ((n = fm_docsrc_read(src, buf, sizeof buf, &c->err)) > 0) {
		if (!c->begun && c->o->mode == FM_CHUNK_WRITE) {
			size_t k = (size_t)n < BINARY_PROBE ? (size_t)n : BINARY_PROBE;
			if (memchr(buf, '\0', k) != NULL)
				return fm_err_set(&c->err, FM_EDATA, "binary data (a NUL byte), skipped");
			if (begin_doc(c, name) != FM_OK)
				return c->err.status;
		}
		c->bytes += (uint64_t)n;
		if (window_append(c, buf, (size_t)n) != FM_OK) {
			c->fatal = true;
			return c->err.status;
		}
		uint64_t to = segment_end(c);
		if (to > c->seg && tokenize_to(c, to, false) != FM_OK)
			return c->err.status;
	}
	if (n < 0) {
		/* Keep what was read: its tokens end the (incomplete) document. */
		struct fm_err read_err = c->err;
		if (c->begun && tokenize_to(c, c->win_base + c->win_len, true) != FM_OK)
			return c->err.status;
		c->err = read_err;
		return read_err.status;
	}
	if (begin_doc(c, name) != FM_OK)
		return c->err.status;
	return tokenize_to(c, c->win_base + c->win_len, true);
}

static void
note(struct chunker *c, int status)
{
	if (status > c->status)
		c->status = status;
}

/* Ends the document in the output: a newline, or its DOCE record. */
static int
end_doc(struct chunker *c, uint64_t bytes, uint32_t flags)
{
	if (c->o->mode == FM_CHUNK_PRINT_TOKENS) {
		if (fputc('\n', c->out) == EOF) {
			c->fatal = true;
			return fm_err_errno(&c->err, FM_EIO, errno, "write error");
		}
		return FM_OK;
	}
	if (!c->begun)
		return FM_OK;
	struct fm_doc_end e = {
		.doc = c->doc, .bytes = bytes, .n_tokens = c->n_tokens,
		.n_chunks = c->chunk, .flags = flags,
	};
	if (fm_chunkw_doc_end(c->w, &e, &c->err) != FM_OK) {
		c->fatal = true;
		return c->err.status;
	}
	c->doc++;
	return FM_OK;
}

/*
 * All documents of one input.  A bad input or document is reported here and
 * the run goes on with the next; only an output failure (c->fatal) stops it.
 */
static void
do_input(struct chunker *c, const char *path, struct fm_progress *pr)
{
	struct fm_docsrc *src;
	const char *name;
	int rc;

	if ((src = fm_docsrc_open(path, &c->err)) == NULL) {
		fm_report(c->o->tool, path, &c->err);
		note(c, c->err.status);
		return;
	}
	while ((rc = fm_docsrc_next(src, &name, &c->err)) == FM_OK) {
		uint64_t bytes0 = c->bytes;
		uint32_t flags = 0;

		if (do_document(c, src, name) != FM_OK) {
			if (c->fatal)
				break;
			fm_report(c->o->tool, name, &c->err);
			note(c, c->err.status);
			flags = FM_DOC_INCOMPLETE;
		} else if (c->n_tokens == 0) {
			fm_warn(c->o->tool, name, "empty document, no tokens");
		}
		if (end_doc(c, c->bytes - bytes0, flags) != FM_OK)
			break;
		c->docs++;
		c->tokens += c->n_tokens;
		fm_progress_update(pr, "%.1f MB, %llu documents, %llu chunks", c->bytes / 1e6,
		    (unsigned long long)c->docs, (unsigned long long)c->next_id);
	}
	if (rc != FM_OK && rc != FM_ENORESULT && !c->fatal) {
		/* An archive that broke between members. */
		fm_report(c->o->tool, path, &c->err);
		note(c, rc);
	}
	fm_docsrc_close(src);
}

static int
load_tokenizer(const struct fm_chunk_opts *o, struct fm_tok **tok, char *model_name, size_t cap)
{
	struct fm_err err = {0};
	struct fm_gguf *g;
	struct fm_str name;

	if ((g = fm_gguf_open(o->model, &err)) == NULL) {
		fm_report(o->tool, o->model, &err);
		return err.status;
	}
	*tok = fm_tok_from_gguf(g, &err);
	model_name[0] = '\0';
	if (fm_gguf_get_str(g, "general.name", &name, NULL) == FM_OK)
		snprintf(model_name, cap, "%.*s", (int)(name.len < cap ? name.len : cap - 1), name.ptr);
	fm_gguf_close(g);
	if (*tok == NULL) {
		fm_report(o->tool, o->model, &err);
		return err.status;
	}
	return FM_OK;
}

static void
chunker_free(struct chunker *c)
{
	free(c->win);
	free(c->p.id);
	free(c->p.start);
	free(c->p.end);
	fm_tokens_free(&c->toks);
}

/* --list: every chunk of a chunk file as one JSON object per line. */
static int
list_chunks(const struct fm_chunk_opts *o)
{
	const char *path = o->n_inputs > 0 ? o->inputs[0] : "-";
	struct fm_err err = {0};
	struct fm_chunk_record rec;
	struct fm_chunkr *r;
	char *doc_name = NULL;
	FILE *f;
	int rc;

	if (strcmp(path, "-") == 0)
		f = stdin;
	else if ((f = fopen(path, "rb")) == NULL) {
		fm_err_errno(&err, FM_EIO, errno, "cannot open");
		fm_report(o->tool, path, &err);
		return FM_EIO;
	}
	if ((r = fm_chunkr_open(f, &err)) == NULL)
		goto fail;
	while ((rc = fm_chunkr_next(r, &rec, &err)) == FM_OK && rec.kind != FM_REC_END) {
		const struct fm_chunk *ch = &rec.chunk;
		if (rec.kind == FM_REC_DOC_BEGIN) {
			free(doc_name);
			if ((doc_name = strdup(rec.doc.name)) == NULL) {
				fm_err_errno(&err, FM_EIO, errno, "cannot allocate");
				goto fail;
			}
			continue;
		}
		if (rec.kind != FM_REC_CHUNK)
			continue;
		printf("{\"id\":%llu,\"doc\":", (unsigned long long)ch->id);
		fm_json_string(stdout, doc_name, strlen(doc_name));
		printf(",\"doc_index\":%u,\"chunk\":%u,\"page\":%u,\"n_tokens\":%u,"
		    "\"offset\":%llu,\"length\":%u,\"tokens\":[", ch->doc, ch->chunk, ch->page,
		    ch->n_tokens, (unsigned long long)ch->offset, ch->length);
		for (uint32_t i = 0; i < ch->n_tokens; i++)
			printf(i ? ",%d" : "%d", ch->ids[i]);
		fputs("],\"text\":", stdout);
		fm_json_string(stdout, ch->text, ch->length);
		if (fputs("}\n", stdout) == EOF && errno == EPIPE)
			fm_exit_pipe();
	}
	if (rc != FM_OK)
		goto fail;
	fm_chunkr_free(r);
	free(doc_name);
	if (f != stdin)
		fclose(f);
	return FM_OK;
fail:
	fm_report(o->tool, strcmp(path, "-") == 0 ? "(stdin)" : path, &err);
	fm_chunkr_free(r);
	free(doc_name);
	if (f != stdin)
		fclose(f);
	return err.status;
}

int
run_chunk(const struct fm_chunk_opts *o)
{
	static char *stdin_only[] = { "-" };
	struct chunker c = { .o = o };
	struct fm_chunk_header h = { .version = FM_CHUNK_VERSION };
	struct fm_out out;
	struct fm_progress pr;
	struct fm_tok *tok = NULL;
	char **inputs = o->n_inputs > 0 ? o->inputs : stdin_only;
	int n_inputs = o->n_inputs > 0 ? o->n_inputs : 1;
	double t0 = fm_now();
	int rc;

	if (o->mode == FM_CHUNK_LIST)
		return list_chunks(o);
	if ((rc = load_tokenizer(o, &tok, h.model_name, sizeof h.model_name)) != FM_OK)
		return rc;
	c.tok = tok;
	if (fm_out_open(&out, o->output, &c.err) != FM_OK) {
		fm_report(o->tool, o->output, &c.err);
		fm_tok_free(tok);
		return c.err.status;
	}
	if (o->mode == FM_CHUNK_WRITE) {
		h.tok_fingerprint = fm_tok_fingerprint(tok);
		h.n_vocab = fm_tok_n_vocab(tok);
		h.chunk_tokens = o->chunk_tokens;
		h.overlap = o->overlap;
		h.page_chunks = o->page_chunks;
		snprintf(h.tok_kind, sizeof h.tok_kind, "%s", fm_tok_kind_name(tok));
		if ((c.w = fm_chunkw_open(out.f, &h, &c.err)) == NULL)
			c.fatal = true;
	} else {
		c.out = out.f;
	}
	fm_progress_init(&pr, o->tool);
	for (int i = 0; i < n_inputs && !c.fatal; i++)
		do_input(&c, inputs[i], &pr);
	fm_progress_done(&pr);
	if (!c.fatal && c.w != NULL && fm_chunkw_finish(c.w, NULL, &c.err) != FM_OK)
		c.fatal = true;
	if (!c.fatal && fm_out_commit(&out, &c.err) != FM_OK)
		c.fatal = true;
	if (c.fatal) {
		if (c.err.status == FM_EIO && errno == EPIPE)
			fm_exit_pipe();
		fm_out_abort(&out);
		fm_report(o->tool, out.path[0] == '-' ? "(stdout)" : out.path, &c.err);
		note(&c, c.err.status);
	} else if (c.next_id == 0 && o->mode == FM_CHUNK_WRITE && c.status == FM_OK) {
		/* Empty documents were named already; say something if there were none. */
		if (c.docs == 0)
			fm_warn(o->tool, NULL, "no documents in the input");
		note(&c, FM_ENORESULT);
	}
	if (o->verbose) {
		double dt = fm_now() - t0;
		fprintf(stderr, "%s: %llu documents, %llu bytes, %llu tokens, %llu chunks, "
		    "%.3f s, %.2f MB/s\n", o->tool, (unsigned long long)c.docs,
		    (unsigned long long)c.bytes, (unsigned long long)c.tokens,
		    (unsigned long long)c.next_id, dt, dt > 0 ? c.bytes / dt / 1e6 : 0.0);
	}
	fm_chunkw_free(c.w);
	chunker_free(&c);
	fm_tok_free(tok);
	return c.status;
}
