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
 *
 * On a GPU (kernels/bert.cu) batches are larger and asynchronous: a full
 * batch is queued and the next one is tokenized while the GPU encodes it;
 * its rows are written when the batch after it is queued, or at the end.
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
#include "cli.h"
#include "embedfile.h"
#ifdef FM_CUDA
#include "gpu.h"
#endif
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
/*
 * On a GPU: large enough that the launches of a batch are a small part of
 * its time, small enough that one layer's activations stay mostly in L2.
 * FM_EMBED_BATCH_TOKENS overrides either.
 */
#define GPU_BATCH_TOKENS 16384
#define LIST_PREVIEW 8      /* values --list shows without --full */

struct item {
	uint64_t id;
	uint32_t first, n_seq;   /* its sequences in the batch; n_seq 0: nothing to encode */
};

/* A batch of texts and their sequences. */
struct batch {
	struct item *items;
	size_t n_items, cap_items;
	int32_t *tok;            /* every sequence's ids, end to end, (n_tok) */
	size_t n_tok, cap_tok;
	size_t *off;             /* sequence s starts at tok + off[s], (n_seq) */
	uint32_t *len;           /* (n_seq) */
	const int32_t **ptr;     /* (n_seq) */
	float *pooled;           /* (n_seq, dim) */
	size_t n_seq, cap_seq;
};

struct embedder {
	const struct fm_embed_opts *o;
	struct fm_hashenc *hash;
	struct fm_bert *bert;
#ifdef FM_CUDA
	struct fm_gpu_bert *gpu; /* NULL: the CPU encodes */
#endif
	char device[320];        /* where it encodes, for -v */
	size_t batch_tokens;
	uint32_t dim;
	int pooling;
	uint32_t max_text;       /* text tokens per sequence: n_ctx less [CLS] and [SEP] */
	struct fm_tokens tk;
	struct fm_embedw *w;
	struct fm_progress pr;
	struct fm_err err;

	/* bt[cur] is being filled; with pending, bt[!cur] is on the GPU. */
	struct batch bt[2];
	int cur;
	bool pending;
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

static bool
on_gpu(const struct embedder *e)
{
#ifdef FM_CUDA
	return e->gpu != NULL;
#else
	(void)e;
	return false;
#endif
}

/* Encodes the batch's sequences into its pooled vectors, now. */
static int
encode(struct embedder *e, struct batch *b)
{
	for (size_t s = 0; s < b->n_seq; s++)
		b->ptr[s] = b->tok + b->off[s];
#ifdef FM_CUDA
	if (e->gpu != NULL)
		return fm_gpu_bert_forward(e->gpu, b->ptr, b->len, b->n_seq, e->pooling, b->pooled,
		    &e->err);
#endif
	return fm_bert_forward(e->bert, b->ptr, b->len, b->n_seq, e->pooling, b->pooled, &e->err);
}

/* Writes an encoded batch's rows and empties it; a split text's parts are averaged, weighted by length. */
static int
write_rows(struct embedder *e, struct batch *b)
{
	int rc;

	for (size_t i = 0; i < b->n_items; i++) {
		const struct item *it = &b->items[i];
		double total = 0;

		memset(e->vec, 0, e->dim * sizeof *e->vec);
		for (uint32_t s = it->first; s < it->first + it->n_seq; s++)
			total += b->len[s];
		for (uint32_t s = it->first; s < it->first + it->n_seq; s++) {
			float wgt = (float)(b->len[s] / total);
			for (uint32_t k = 0; k < e->dim; k++)
				e->vec[k] += wgt * b->pooled[(size_t)s * e->dim + k];
		}
		normalise(e->vec, e->dim);
		if ((rc = write_row(e, it->id, e->vec)) != FM_OK)
			return rc;
	}
	b->n_items = 0;
	b->n_seq = 0;
	b->n_tok = 0;
	return FM_OK;
}

/* The batch on the GPU, if any: waits for it and writes its rows. */
static int
drain(struct embedder *e)
{
	struct batch *b = &e->bt[!e->cur];

	if (!e->pending)
		return FM_OK;
	e->pending = false;
#ifdef FM_CUDA
	int rc;

	if ((rc = fm_gpu_bert_wait(e->gpu, b->pooled, &e->err)) != FM_OK)
		return rc;
#endif
	return write_rows(e, b);
}

/*
 * Encodes the batch being filled.  On the CPU its rows are written now; on
 * a GPU it is queued, the batch before it (queued earlier) is written, and
 * the filling goes on in the other batch.
 */
static int
flush(struct embedder *e)
{
	struct batch *b = &e->bt[e->cur];
	int rc;

	if (b->n_items == 0)
		return FM_OK;
	if (!on_gpu(e) || b->n_seq == 0) {
		if ((rc = drain(e)) != FM_OK || (b->n_seq > 0 && (rc = encode(e, b)) != FM_OK))
			return rc;
		return write_rows(e, b);
	}
#ifdef FM_CUDA
	for (size_t s = 0; s < b->n_seq; s++)
		b->ptr[s] = b->tok + b->off[s];
	if ((rc = fm_gpu_bert_submit(e->gpu, b->ptr, b->len, b->n_seq, e->pooling, &e->err)) != FM_OK)
		return rc;
#endif
	if ((rc = drain(e)) != FM_OK)
		return rc;
	e->pending = true;
	e->cur = !e->cur;
	return FM_OK;
}

/* Appends [CLS] ids[0..n) [SEP] as one sequence of the batch being filled. */
static int
push_seq(struct embedder *e, const int32_t *ids, size_t n)
{
	const struct fm_tok *t = fm_bert_tok(e->bert);
	struct batch *b = &e->bt[e->cur];
	int rc;

	if ((rc = grow((void **)&b->tok, &b->cap_tok, b->n_tok + n + 2, sizeof *b->tok,
	    &e->err)) != FM_OK)
		return rc;
	if (b->n_seq == b->cap_seq) {
		size_t nc = b->cap_seq ? 2 * b->cap_seq : 64, c;
		float *np;

		c = b->cap_seq;
		if ((rc = grow((void **)&b->off, &c, nc, sizeof *b->off, &e->err)) != FM_OK)
			return rc;
		c = b->cap_seq;
		if ((rc = grow((void **)&b->len, &c, nc, sizeof *b->len, &e->err)) != FM_OK)
			return rc;
		c = b->cap_seq;
		if ((rc = grow((void **)&b->ptr, &c, nc, sizeof *b->ptr, &e->err)) != FM_OK)
			return rc;
		if ((np = realloc(b->pooled, nc * e->dim * sizeof *np)) == NULL)
			return fm_err_errno(&e->err, FM_EIO, ENOMEM, "batch");
		b->pooled = np;
		b->cap_seq = nc;
	}
	b->off[b->n_seq] = b->n_tok;
	b->len[b->n_seq] = (uint32_t)n + 2;
	b->tok[b->n_tok++] = fm_tok_bos(t);
	memcpy(b->tok + b->n_tok, ids, n * sizeof *ids);
	b->n_tok += n;
	b->tok[b->n_tok++] = fm_tok_eos(t);
	b->n_seq++;
	e->tokens += n + 2;
	return FM_OK;
}

/*
 * A text longer than the context, in e->tk, cut into pieces of max_text
 * tokens.  The batches are emptied first and the pieces run in batches of
 * their own, their pooled vectors summed as they come, weighted by length,
 * so a chunk of any length costs one batch of memory.
 */
static int
add_split(struct embedder *e, uint64_t id)
{
	struct batch *b;
	size_t n = e->tk.n, total = 0;
	float *acc;
	int rc;

	if ((rc = flush(e)) != FM_OK || (rc = drain(e)) != FM_OK)
		return rc;
	b = &e->bt[e->cur];
	if ((acc = calloc(e->dim, sizeof *acc)) == NULL)
		return fm_err_errno(&e->err, FM_EIO, ENOMEM, "batch");
	for (size_t a = 0; a < n;) {
		for (; a < n && b->n_tok < e->batch_tokens; a += e->max_text)
			if ((rc = push_seq(e, e->tk.ids + a, n - a < e->max_text ? n - a :
			    e->max_text)) != FM_OK)
				goto out;
		if ((rc = encode(e, b)) != FM_OK)
			goto out;
		for (size_t s = 0; s < b->n_seq; s++) {
			for (uint32_t k = 0; k < e->dim; k++)
				acc[k] += (float)b->len[s] * b->pooled[s * e->dim + k];
			total += b->len[s];
		}
		b->n_seq = 0;
		b->n_tok = 0;
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
	struct batch *b = &e->bt[e->cur];
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
	if ((rc = grow((void **)&b->items, &b->cap_items, b->n_items + 1, sizeof *b->items,
	    &e->err)) != FM_OK)
		return rc;
	it = &b->items[b->n_items++];
	it->id = id;
	it->first = (uint32_t)b->n_seq;
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
		b->n_items--;
		e->split++;
		return add_split(e, id);
	}
	if (b->n_tok >= e->batch_tokens)
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

/* FM_EMBED_BATCH_TOKENS, when set, for *v. */
static void
batch_env(const struct embedder *e, const char *env, size_t *v)
{
	uint64_t n;

	if (env == NULL)
		return;
	if (fm_parse_u64(env, 256, UINT64_C(1) << 22, &n))
		*v = (size_t)n;
	else
		fm_warn(e->o->tool, "FM_EMBED_BATCH_TOKENS", "'%s' ignored (256 to 4194304 tokens)",
		    env);
}

/*
 * The device, as fm-select chooses it: auto takes a GPU when one works
 * (else the CPU, saying why with -v), cuda[:N] must work (status 5), and a
 * build without CUDA refuses it.  The built-in encoder runs on the CPU; a
 * GPU asked for by name is still checked.
 */
static int
choose_device(struct embedder *e)
{
	const struct fm_embed_opts *o = e->o;
	const char *env = getenv("FM_EMBED_BATCH_TOKENS");
	int dev = FM_DEVICE_AUTO;

	e->batch_tokens = BATCH_TOKENS;
	snprintf(e->device, sizeof e->device, "cpu");
	if (o->device != NULL && !fm_parse_device(o->device, &dev))
		return fm_err_set(&e->err, FM_EUSAGE, "expected auto, cpu, cuda or cuda:N");
#ifdef FM_CUDA
	struct fm_err gerr = { 0 };
	char name[256];

	if (dev == FM_DEVICE_CPU || (dev == FM_DEVICE_AUTO && fm_gpu_count() == 0))
		goto cpu;
	if (e->bert == NULL) {
		if (dev >= 0 && fm_gpu_open(dev, name, sizeof name, &gerr) != FM_OK) {
			e->err = gerr;
			return FM_EDEVICE;
		}
		snprintf(e->device, sizeof e->device, "cpu (the built-in encoder)");
		goto cpu;
	}
	e->batch_tokens = GPU_BATCH_TOKENS;
	if (env != NULL)
		batch_env(e, env, &e->batch_tokens);
	if ((e->gpu = fm_gpu_bert_new(e->bert, dev >= 0 ? dev : 0,
	    (uint32_t)e->batch_tokens + fm_bert_n_ctx(e->bert), &gerr)) == NULL) {
		if (dev >= 0) {
			e->err = gerr;
			return FM_EDEVICE;
		}
		e->batch_tokens = BATCH_TOKENS;
		snprintf(e->device, sizeof e->device, "cpu (no usable GPU: %.200s)", gerr.msg);
		goto cpu;
	}
	snprintf(e->device, sizeof e->device, "cuda:%d (%s)", dev >= 0 ? dev : 0,
	    fm_gpu_bert_device(e->gpu));
	return FM_OK;
cpu:
#else
	if (dev >= 0)
		return fm_err_set(&e->err, FM_EDEVICE, "this build has no CUDA (use --device cpu or auto)");
#endif
	if (env != NULL)
		batch_env(e, env, &e->batch_tokens);
	return FM_OK;
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
#ifdef FM_CUDA
	fm_gpu_bert_free(e->gpu);
#endif
	fm_hashenc_free(e->hash);
	fm_bert_close(e->bert);
	fm_tokens_free(&e->tk);
	fm_embedw_free(e->w);
	for (int i = 0; i < 2; i++) {
		struct batch *b = &e->bt[i];

		free(b->items);
		free(b->tok);
		free(b->off);
		free(b->len);
		free(b->ptr);
		free(b->pooled);
	}
	free(e->vec);
}

/* Where a failure came from, for the message's subject. */
enum { AT_INPUT, AT_OUTPUT, AT_MODEL, AT_DEVICE };

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
	if ((rc = flush(e)) != FM_OK || (rc = drain(e)) != FM_OK)
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
	if ((rc = flush(e)) != FM_OK || (rc = drain(e)) != FM_OK)
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

	double flops = e->bert != NULL ? fm_bert_flops(e->bert) : 0;

#ifdef FM_CUDA
	if (e->gpu != NULL)
		flops = fm_gpu_bert_flops(e->gpu);
#endif
	fprintf(stderr, "%s: encoder '%s' (%s, %" PRIu32 " dims, pooling %s, fingerprint %016"
	    PRIx64 "), device %s, loaded in %.3f s\n", o->tool, h->encoder_name,
	    e->bert ? "bert" : "built-in", h->dim, fm_embed_pooling_name(h->pooling),
	    h->encoder_fingerprint, e->device, load_secs);
	if (secs <= 0)
		secs = 1e-9;
	fprintf(stderr, "%s: %" PRIu64 " vectors (%s) of %" PRIu64 " text bytes in %.3f s: %.1f "
	    "vectors/s, %.2f MB/s\n", o->tool, e->rows, fm_embed_dtype_name(h->dtype), e->bytes,
	    secs, e->rows / secs, e->bytes / secs / 1e6);
	if (e->bert != NULL)
		fprintf(stderr, "%s: %" PRIu64 " encoder tokens ([CLS] and [SEP] included): %.0f "
		    "tokens/s, %.1f GFLOP/s, batches of %zu tokens\n", o->tool, e->tokens,
		    e->tokens / secs, flops / secs / 1e9, e->batch_tokens);
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
	if ((rc = open_encoder(&e, &h)) != FM_OK)
		goto fail;
	if ((rc = choose_device(&e)) != FM_OK) {
		at = AT_DEVICE;
		goto fail;
	}
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
	    at == AT_DEVICE ? o->device : at == AT_INPUT ? subject(o->input) :
	    (out.path[0] == '-' ? "(stdout)" : out.path), &e.err);
	fm_chunkr_free(r);
	close_input(f);
	free_embedder(&e);
	return rc;
}
