/*
 * embed.c - fm-embed: chunk texts (or query lines) to an embedding file.
 *
 * Rows stream: a chunk is encoded as soon as its batch is full and written
 * in id order, so memory is bounded by one batch whatever the input's size,
 * and the output goes through a temporary file that only a complete, valid
 * embedding file replaces the target with.  The bert path tokenizes each
 * chunk's text again with the encoder's own WordPiece (the chunk file's ids
 * may come from the backbone's tokenizer) and packs the sequences of a batch
 * end to end, so no padding is computed.
 */
#include "embed.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bert.h"
#include "checksum.h"
#include "chunkfile.h"
#include "embedfile.h"
#include "hashenc.h"
#include "io.h"
#include "json.h"
#include "tokenizer.h"
#include "unicode.h"

/*
 * Tokens per forward pass.  Activations take about 4 * (6 dim + n_ff) bytes a
 * token (35 MB for a MiniLM), and rows this tall already run the sgemms
 * near their best speed.
 */
#define BATCH_TOKENS 4096
#define LIST_PREVIEW 8      /* values --list shows without --full */

struct item {
	uint64_t id;
	uint32_t first, n_seq;   /* its sequences in the batch; n_seq 0: nothing to encode */
};

struct embedder {
	const struct fm_embed_opts *o;
	struct fm_hashenc *hash;
	struct fm_bert *bert;
	uint32_t dim;
	int pooling;
	uint32_t max_text;       /* text tokens per sequence: n_ctx less [CLS] and [SEP] */
	struct fm_tokens tk;
	struct fm_embedw *w;
	struct fm_progress pr;
	struct fm_err err;

	/* The batch being filled. */
	struct item *items;
	size_t n_items, cap_items;
	int32_t *tok;            /* every sequence's ids, end to end, (n_tok) */
	size_t n_tok, cap_tok;
	size_t *off;             /* sequence s starts at tok + off[s], (n_seq) */
	uint32_t *len;           /* (n_seq) */
	const int32_t **ptr;     /* (n_seq) */
	float *pooled;           /* (n_seq, dim) */
	size_t n_seq, cap_seq;
	float *vec;              /* (dim) */

	uint64_t rows, tokens, bytes, truncated, split, empty;
};

static int
grow(void **p, size_t *cap, size_t need, size_t elem, struct fm_err *err)
{
	size_t nc = *cap ? *cap : 64;
	void *np;

	if (need <= *cap)
		return FM_OK;
	while (nc < need)
		nc *= 2;
	if ((np = realloc(*p, nc * elem)) == NULL)
		return fm_err_errno(err, FM_EIO, ENOMEM, "batch");
	*p = np;
	*cap = nc;
	return FM_OK;
}

static int
write_row(struct embedder *e, uint64_t id, const float *v)
{
	if (fm_embedw_row(e->w, id, v, &e->err) != FM_OK)
		return e->err.status;
	e->rows++;
	fm_progress_update(&e->pr, "%" PRIu64 " vectors", e->rows);
	return FM_OK;
}

static void
normalise(float *v, uint32_t n)
{
	double ss = 0;

	for (uint32_t i = 0; i < n; i++)
		ss += (double)v[i] * v[i];
	if (ss > 0) {
		float inv = (float)(1 / sqrt(ss));
		for (uint32_t i = 0; i < n; i++)
			v[i] *= inv;
	}
}

/* Encodes the batch and writes its rows; a split text's parts are averaged, weighted by length. */
static int
flush(struct embedder *e)
{
	int rc;

	if (e->n_items == 0)
		return FM_OK;
	if (e->n_seq > 0) {
		for (size_t s = 0; s < e->n_seq; s++)
			e->ptr[s] = e->tok + e->off[s];
		if ((rc = fm_bert_forward(e->bert, e->ptr, e->len, e->n_seq, e->pooling, e->pooled,
		    &e->err)) != FM_OK)
			return rc;
	}
	for (size_t i = 0; i < e->n_items; i++) {
		const struct item *it = &e->items[i];
		double total = 0;

		memset(e->vec, 0, e->dim * sizeof *e->vec);
		for (uint32_t s = it->first; s < it->first + it->n_seq; s++)
			total += e->len[s];
		for (uint32_t s = it->first; s < it->first + it->n_seq; s++) {
			float wgt = (float)(e->len[s] / total);
			for (uint32_t k = 0; k < e->dim; k++)
				e->vec[k] += wgt * e->pooled[(size_t)s * e->dim + k];
		}
		normalise(e->vec, e->dim);
		if ((rc = write_row(e, it->id, e->vec)) != FM_OK)
			return rc;
	}
	e->n_items = 0;
	e->n_seq = 0;
	e->n_tok = 0;
	return FM_OK;
}

/* Appends [CLS] ids[0..n) [SEP] as one sequence of the batch. */
static int
push_seq(struct embedder *e, const int32_t *ids, size_t n)
{
	const struct fm_tok *t = fm_bert_tok(e->bert);
	int rc;

	if ((rc = grow((void **)&e->tok, &e->cap_tok, e->n_tok + n + 2, sizeof *e->tok,
	    &e->err)) != FM_OK)
		return rc;
	if (e->n_seq == e->cap_seq) {
		size_t nc = e->cap_seq ? 2 * e->cap_seq : 64, c;
		float *np;

		c = e->cap_seq;
		if ((rc = grow((void **)&e->off, &c, nc, sizeof *e->off, &e->err)) != FM_OK)
			return rc;
		c = e->cap_seq;
		if ((rc = grow((void **)&e->len, &c, nc, sizeof *e->len, &e->err)) != FM_OK)
			return rc;
		c = e->cap_seq;
		if ((rc = grow((void **)&e->ptr, &c, nc, sizeof *e->ptr, &e->err)) != FM_OK)
			return rc;
		if ((np = realloc(e->pooled, nc * e->dim * sizeof *np)) == NULL)
			return fm_err_errno(&e->err, FM_EIO, ENOMEM, "batch");
		e->pooled = np;
		e->cap_seq = nc;
	}
	e->off[e->n_seq] = e->n_tok;
	e->len[e->n_seq] = (uint32_t)n + 2;
	e->tok[e->n_tok++] = fm_tok_bos(t);
	memcpy(e->tok + e->n_tok, ids, n * sizeof *ids);
	e->n_tok += n;
	e->tok[e->n_tok++] = fm_tok_eos(t);
	e->n_seq++;
	e->tokens += n + 2;
	return FM_OK;
}

/*
 * A text longer than the context, in e->tk, cut into pieces of max_text
 * tokens.  The batch is emptied first and the pieces run in batches of their
 * own, their pooled vectors summed as they come, weighted by length, so a
 * chunk of any length costs one batch of memory.
 */
static int
add_split(struct embedder *e, uint64_t id)
{
	size_t n = e->tk.n, total = 0;
	float *acc;
	int rc;

	if ((rc = flush(e)) != FM_OK)
		return rc;
	if ((acc = calloc(e->dim, sizeof *acc)) == NULL)
		return fm_err_errno(&e->err, FM_EIO, ENOMEM, "batch");
	for (size_t a = 0; a < n;) {
		for (; a < n && e->n_tok < BATCH_TOKENS; a += e->max_text)
			if ((rc = push_seq(e, e->tk.ids + a, n - a < e->max_text ? n - a :
			    e->max_text)) != FM_OK)
				goto out;
		for (size_t s = 0; s < e->n_seq; s++)
			e->ptr[s] = e->tok + e->off[s];
		if ((rc = fm_bert_forward(e->bert, e->ptr, e->len, e->n_seq, e->pooling, e->pooled,
		    &e->err)) != FM_OK)
			goto out;
		for (size_t s = 0; s < e->n_seq; s++) {
			for (uint32_t k = 0; k < e->dim; k++)
				acc[k] += (float)e->len[s] * e->pooled[s * e->dim + k];
			total += e->len[s];
		}
		e->n_seq = 0;
		e->n_tok = 0;
	}
	for (uint32_t k = 0; k < e->dim; k++)
		acc[k] /= (float)total;
	normalise(acc, e->dim);
	rc = write_row(e, id, acc);
out:
	free(acc);
	return rc;
}

/* One row's text: encoded now (built-in) or queued in the batch (bert). */
static int
add_text(struct embedder *e, uint64_t id, const char *text, size_t len)
{
	struct item *it;
	size_t n;
	int rc;

	e->bytes += len;
	if (e->hash != NULL) {
		bool zero = true;

		if ((rc = fm_hashenc_encode(e->hash, text, len, e->vec, &e->err)) != FM_OK)
			return rc;

		for (uint32_t k = 0; k < e->dim && zero; k++)
			zero = e->vec[k] == 0;
		e->empty += zero;
		return write_row(e, id, e->vec);
	}
	fm_tokens_clear(&e->tk);
	if ((rc = fm_tok_encode(fm_bert_tok(e->bert), text, len, 0, &e->tk, &e->err)) != FM_OK)
		return rc;
	if ((rc = grow((void **)&e->items, &e->cap_items, e->n_items + 1, sizeof *e->items,
	    &e->err)) != FM_OK)
		return rc;
	it = &e->items[e->n_items++];
	it->id = id;
	it->first = (uint32_t)e->n_seq;
	it->n_seq = 0;
	n = e->tk.n;
	if (n == 0) {
		e->empty++;
	} else if (n <= e->max_text) {
		if ((rc = push_seq(e, e->tk.ids, n)) != FM_OK)
			return rc;
		it->n_seq = 1;
	} else if (e->o->long_mode == FM_LONG_TRUNCATE) {
		if ((rc = push_seq(e, e->tk.ids, e->max_text)) != FM_OK)
			return rc;
		it->n_seq = 1;
		e->truncated++;
	} else {
		e->n_items--;
		e->split++;
		return add_split(e, id);
	}
	if (e->n_tok >= BATCH_TOKENS)
		return flush(e);
	return FM_OK;
}

static const char *
subject(const char *path)
{
	return path == NULL || strcmp(path, "-") == 0 ? "(stdin)" : path;
}

static int
open_input(const struct fm_embed_opts *o, FILE **f)
{
	struct fm_err err;

	if (o->input == NULL || strcmp(o->input, "-") == 0) {
		*f = stdin;
		return FM_OK;
	}
	if ((*f = fopen(o->input, "rb")) == NULL) {
		fm_err_errno(&err, FM_EIO, errno, "cannot open");
		fm_report(o->tool, o->input, &err);
		return FM_EIO;
	}
	return FM_OK;
}

static void
close_input(FILE *f)
{
	if (f != NULL && f != stdin)
		fclose(f);
}

/* --list: an embedding file as JSON lines, checked as it is read. */
static int
list_embed(const struct fm_embed_opts *o)
{
	struct fm_embed_record rec;
	const struct fm_embed_header *h;
	struct fm_embedr *r;
	struct fm_err err;
	FILE *f;
	int rc;

	if ((rc = open_input(o, &f)) != FM_OK)
		return rc;
	if ((r = fm_embedr_open(f, &err)) == NULL) {
		fm_report(o->tool, subject(o->input), &err);
		close_input(f);
		return err.status;
	}
	h = fm_embedr_header(r);
	if (o->verbose)
		fprintf(stderr, "%s: %s: %" PRIu32 " dims, %s, pooling %s, %s, shard %" PRIu32
		    "/%" PRIu32 ", encoder '%s' %016" PRIx64 ", tokenizer %016" PRIx64 "\n",
		    o->tool, subject(o->input), h->dim, fm_embed_dtype_name(h->dtype),
		    fm_embed_pooling_name(h->pooling), fm_embed_source_name(h->source),
		    h->shard_index, h->shard_count, h->encoder_name, h->encoder_fingerprint,
		    h->tok_fingerprint);
	while ((rc = fm_embedr_next(r, &rec, &err)) == FM_OK) {
		uint32_t n = o->full || h->dim < LIST_PREVIEW ? h->dim : LIST_PREVIEW;

		if (rec.kind == FM_EREC_END) {
			if (o->verbose)
				fprintf(stderr, "%s: %" PRIu64 " rows of %" PRIu64 ", source %016" PRIx64
				    ", content %016" PRIx64 "\n", o->tool, rec.end.n_rows,
				    rec.end.n_source, rec.end.source_hash, rec.end.content_hash);
			break;
		}
		printf("{\"id\":%" PRIu64 ",\"dim\":%" PRIu32 ",\"vec\":[", rec.id, h->dim);
		for (uint32_t i = 0; i < n; i++)
			printf(i ? ",%.9g" : "%.9g", rec.vec[i]);
		if (fputs("]}\n", stdout) == EOF && errno == EPIPE)
			fm_exit_pipe();
	}
	if (rc != FM_OK)
		fm_report(o->tool, subject(o->input), &err);
	fm_embedr_free(r);
	close_input(f);
	return rc;
}

/* The device: this version encodes on the CPU; a CUDA request is refused. */
static int
check_device(const struct fm_embed_opts *o)
{
	struct fm_err err;

	if (o->device == NULL || strcmp(o->device, "auto") == 0 || strcmp(o->device, "cpu") == 0)
		return FM_OK;
	fm_err_set(&err, FM_EDEVICE, "this version of %s encodes on the CPU only (use "
	    "--device cpu or auto)", o->tool);
	fm_report(o->tool, o->device, &err);
	return FM_EDEVICE;
}

static int
open_encoder(struct embedder *e, struct fm_embed_header *h)
{
	const struct fm_embed_opts *o = e->o;

	if (o->model == NULL) {
		if ((e->hash = fm_hashenc_new(o->dim, &e->err)) == NULL)
			return e->err.status;
		e->dim = o->dim;
		e->pooling = FM_POOL_NONE;
		h->encoder_fingerprint = fm_hashenc_fingerprint(e->hash);
		snprintf(h->encoder_name, sizeof h->encoder_name, "%s", FM_HASHENC_NAME);
	} else {
		if ((e->bert = fm_bert_open(o->model, &e->err)) == NULL)
			return e->err.status;
		e->dim = fm_bert_dim(e->bert);
		e->pooling = o->pooling >= 0 ? o->pooling : fm_bert_pooling(e->bert);
		e->max_text = fm_bert_n_ctx(e->bert) - 2;
		h->encoder_fingerprint = fm_bert_fingerprint(e->bert);
		snprintf(h->encoder_name, sizeof h->encoder_name, "%s", fm_bert_name(e->bert));
	}
	if ((e->vec = malloc(e->dim * sizeof *e->vec)) == NULL)
		return fm_err_errno(&e->err, FM_EIO, ENOMEM, "encoder");
	h->dim = e->dim;
	h->pooling = (uint16_t)e->pooling;
	return FM_OK;
}

static void
free_embedder(struct embedder *e)
{
	fm_hashenc_free(e->hash);
	fm_bert_close(e->bert);
	fm_tokens_free(&e->tk);
	fm_embedw_free(e->w);
	free(e->items);
	free(e->tok);
	free(e->off);
	free(e->len);
	free(e->ptr);
	free(e->pooled);
	free(e->vec);
}

/* Where a failure came from, for the message's subject. */
enum { AT_INPUT, AT_OUTPUT, AT_MODEL };

/* Chunk file in: every chunk of the shard, then END. */
static int
embed_chunks(struct embedder *e, struct fm_chunkr *r, int *at, uint64_t *n_source)
{
	const struct fm_embed_opts *o = e->o;
	struct fm_chunk_record rec;
	int rc;

	for (;;) {
		if ((rc = fm_chunkr_next(r, &rec, &e->err)) != FM_OK) {
			*at = AT_INPUT;
			return rc;
		}
		if (rec.kind == FM_REC_END)
			break;
		if (rec.kind != FM_REC_CHUNK || rec.chunk.id % o->shard_count != o->shard_index)
			continue;
		if ((rc = add_text(e, rec.chunk.id, rec.chunk.text, rec.chunk.length)) != FM_OK) {
			/* A write error or memory is the output's problem, anything else the model's. */
			*at = rc == FM_EIO ? AT_OUTPUT : AT_MODEL;
			return rc;
		}
	}
	*at = AT_OUTPUT;
	if ((rc = flush(e)) != FM_OK)
		return rc;
	*n_source = rec.end.n_chunks;
	return fm_embedw_finish(e->w, rec.end.n_chunks, rec.end.content_hash, NULL, &e->err);
}

/* Query lines in: each line (without its newline) is a query, numbered from 0. */
static int
embed_queries(struct embedder *e, FILE *f, int *at, uint64_t *n_source)
{
	const struct fm_embed_opts *o = e->o;
	uint64_t hash = FM_FNV64_INIT, line_no = 0;
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int rc = FM_OK;

	errno = 0;
	while ((n = getline(&line, &cap, f)) > 0) {
		size_t len = (size_t)n;

		hash = fm_fnv64(hash, line, len);
		if (line[len - 1] == '\n')
			len--;
		if (len > 0 && line[len - 1] == '\r')
			len--;
		for (size_t i = 0, k; i < len; i += k)
			if (fm_utf8_next(line + i, len - i, &k) == FM_UNI_REPLACEMENT && k == 1) {
				*at = AT_INPUT;
				rc = fm_err_set(&e->err, FM_EDATA, "line %" PRIu64
				    ": invalid UTF-8 at byte %zu", line_no + 1, i + 1);
				goto out;
			}
		if (line_no % o->shard_count == o->shard_index &&
		    (rc = add_text(e, line_no, line, len)) != FM_OK) {
			*at = rc == FM_EIO ? AT_OUTPUT : AT_MODEL;
			goto out;
		}
		line_no++;
		errno = 0;
	}
	if (ferror(f)) {
		*at = AT_INPUT;
		rc = fm_err_errno(&e->err, FM_EIO, errno ? errno : EIO, "read error");
		goto out;
	}
	*at = AT_OUTPUT;
	if ((rc = flush(e)) != FM_OK)
		goto out;
	*n_source = line_no;
	rc = fm_embedw_finish(e->w, line_no, hash, NULL, &e->err);
out:
	free(line);
	return rc;
}

static void
report_stats(const struct embedder *e, const struct fm_embed_header *h, double load_secs,
    double secs)
{
	const struct fm_embed_opts *o = e->o;

	fprintf(stderr, "%s: encoder '%s' (%s, %" PRIu32 " dims, pooling %s, fingerprint %016"
	    PRIx64 "), device cpu, loaded in %.3f s\n", o->tool, h->encoder_name,
	    e->bert ? "bert" : "built-in", h->dim, fm_embed_pooling_name(h->pooling),
	    h->encoder_fingerprint, load_secs);
	if (secs <= 0)
		secs = 1e-9;
	fprintf(stderr, "%s: %" PRIu64 " vectors (%s) of %" PRIu64 " text bytes in %.3f s: %.1f "
	    "vectors/s, %.2f MB/s\n", o->tool, e->rows, fm_embed_dtype_name(h->dtype), e->bytes,
	    secs, e->rows / secs, e->bytes / secs / 1e6);
	if (e->bert != NULL)
		fprintf(stderr, "%s: %" PRIu64 " encoder tokens ([CLS] and [SEP] included): %.0f "
		    "tokens/s, %.1f GFLOP/s\n", o->tool, e->tokens, e->tokens / secs,
		    fm_bert_flops(e->bert) / secs / 1e9);
	fprintf(stderr, "%s: %" PRIu64 " truncated, %" PRIu64 " split, %" PRIu64
	    " with nothing to encode (zero vectors)\n", o->tool, e->truncated, e->split, e->empty);
}

int
run_embed(const struct fm_embed_opts *o)
{
	struct embedder e = { .o = o };
	struct fm_embed_header h = {
		.dtype = (uint16_t)o->dtype,
		.source = o->mode == FM_EMBED_QUERIES ? FM_SRC_QUERIES : FM_SRC_CHUNKS,
		.shard_index = o->shard_index, .shard_count = o->shard_count,
	};
	struct fm_chunkr *r = NULL;
	struct fm_out out = { .path = "-" };
	uint64_t n_source = 0;
	double t0 = fm_now(), t1;
	FILE *f = NULL;
	int rc, at = AT_MODEL;
	bool opened = false;

	if (o->mode == FM_EMBED_LIST)
		return list_embed(o);
	if ((rc = check_device(o)) != FM_OK)
		return rc;
	if ((rc = open_encoder(&e, &h)) != FM_OK)
		goto fail;
	t1 = fm_now();
	at = AT_INPUT;
	if ((rc = open_input(o, &f)) != FM_OK) {
		free_embedder(&e);
		return rc;
	}
	if (o->mode == FM_EMBED_CHUNKS) {
		/* The header first: a bad input is refused before any output exists. */
		if ((r = fm_chunkr_open(f, &e.err)) == NULL) {
			rc = e.err.status;
			goto fail;
		}
		h.tok_fingerprint = fm_chunkr_header(r)->tok_fingerprint;
	}
	at = AT_OUTPUT;
	if ((rc = fm_out_open(&out, o->output, &e.err)) != FM_OK)
		goto fail;
	opened = true;
	if ((e.w = fm_embedw_open(out.f, &h, &e.err)) == NULL) {
		rc = e.err.status;
		goto fail;
	}
	fm_progress_init(&e.pr, o->tool);
	rc = o->mode == FM_EMBED_CHUNKS ? embed_chunks(&e, r, &at, &n_source) :
	    embed_queries(&e, f, &at, &n_source);
	fm_progress_done(&e.pr);
	if (rc != FM_OK)
		goto fail;
	if ((rc = fm_out_commit(&out, &e.err)) != FM_OK)
		goto fail;
	if (e.truncated > 0)
		fm_warn(o->tool, subject(o->input), "%" PRIu64 " chunk%s longer than %" PRIu32
		    " tokens truncated (--long split keeps them whole)", e.truncated,
		    e.truncated == 1 ? "" : "s", e.max_text);
	if (o->verbose)
		report_stats(&e, &h, t1 - t0, fm_now() - t1);
	if (n_source == 0) {
		fm_warn(o->tool, subject(o->input), o->mode == FM_EMBED_CHUNKS ? "no chunks" :
		    "no queries");
		rc = FM_ENORESULT;
	}
	fm_chunkr_free(r);
	close_input(f);
	free_embedder(&e);
	return rc;
fail:
	if (at == AT_OUTPUT && e.err.status == FM_EIO && errno == EPIPE)
		fm_exit_pipe();
	if (opened)
		fm_out_abort(&out);
	fm_report(o->tool, at == AT_MODEL ? (o->model ? o->model : FM_HASHENC_NAME) :
	    at == AT_INPUT ? subject(o->input) : (out.path[0] == '-' ? "(stdout)" : out.path),
	    &e.err);
	fm_chunkr_free(r);
	close_input(f);
	free_embedder(&e);
	return rc;
}
