/*
 * index.c - fm-index: merging embedding files into an index file, and
 * showing or checking one.  The chunk file drives the build: its chunks
 * come in id order, and chunk i's vector is the next row of shard i mod N,
 * so the shards are merged as streams and memory stays at the page table.
 * Every identity is compared before a vector is trusted: the shards with
 * each other, and each with the chunk file (tokenizer at the start; chunk
 * count and content hash when the END records arrive).
 */
#include "index.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chunkfile.h"
#include "embedfile.h"
#include "fm_error.h"
#include "indexfile.h"
#include "io.h"
#include "json.h"

struct shard {
	const char *name;
	FILE *f;
	struct fm_embedr *r;
	const struct fm_embed_header *h;
};

struct build {
	const struct fm_index_opts *o;
	struct shard *sh;         /* inputs, then by shard index */
	struct shard **by_index;  /* (n_shards) */
	uint32_t n_shards;
	FILE *cf;
	struct fm_chunkr *cr;
	struct fm_out out;
	struct fm_indexw *w;
	struct fm_err err;
	const char *subject;      /* whom the error is about */
};

static const char *
shown(const char *path)
{
	return strcmp(path, "-") == 0 ? "(stdin)" : path;
}

static FILE *
open_in(const char *path, struct fm_err *err)
{
	FILE *f;

	if (strcmp(path, "-") == 0)
		return stdin;
	if ((f = fopen(path, "rb")) == NULL)
		fm_err_errno(err, FM_EIO, errno, "cannot open");
	return f;
}

/* Opens every embedding file and checks that they are the N shards of one source. */
static int
open_shards(struct build *b)
{
	const struct fm_index_opts *o = b->o;
	const struct fm_embed_header *h0 = NULL;

	if ((b->sh = calloc((size_t)o->n_inputs, sizeof *b->sh)) == NULL)
		return fm_err_errno(&b->err, FM_EIO, errno, "cannot allocate");
	for (int i = 0; i < o->n_inputs; i++) {
		struct shard *s = &b->sh[i];
		s->name = shown(o->inputs[i]);
		b->subject = s->name;
		if ((s->f = open_in(o->inputs[i], &b->err)) == NULL)
			return b->err.status;
		if ((s->r = fm_embedr_open(s->f, &b->err)) == NULL)
			return b->err.status;
		s->h = fm_embedr_header(s->r);
		if (s->h->source != FM_SRC_CHUNKS)
			return fm_err_set(&b->err, FM_EDATA, "holds query vectors, not a chunk file's");
		if (i == 0) {
			h0 = s->h;
			continue;
		}
		const char *first = b->sh[0].name;
		if (s->h->dim != h0->dim)
			return fm_err_set(&b->err, FM_EDATA, "dimension %u, but %s has %u", s->h->dim, first, h0->dim);
		if (s->h->encoder_fingerprint != h0->encoder_fingerprint || s->h->pooling != h0->pooling ||
		    strcmp(s->h->encoder_name, h0->encoder_name) != 0)
			return fm_err_set(&b->err, FM_EDATA, "made by another encoder (%s) than %s (%s)",
			    s->h->encoder_name, first, h0->encoder_name);
		if (s->h->dtype != h0->dtype)
			return fm_err_set(&b->err, FM_EDATA, "values are %s, but %s has %s",
			    fm_embed_dtype_name(s->h->dtype), first, fm_embed_dtype_name(h0->dtype));
		if (s->h->tok_fingerprint != h0->tok_fingerprint)
			return fm_err_set(&b->err, FM_EDATA, "made from another chunk file than %s", first);
		if (s->h->shard_count != h0->shard_count)
			return fm_err_set(&b->err, FM_EDATA, "shard %u/%u, but %s is one of %u",
			    s->h->shard_index, s->h->shard_count, first, h0->shard_count);
	}
	b->n_shards = h0->shard_count;
	if ((b->by_index = calloc(b->n_shards, sizeof *b->by_index)) == NULL)
		return fm_err_errno(&b->err, FM_EIO, errno, "cannot allocate");
	for (int i = 0; i < o->n_inputs; i++) {
		struct shard *s = &b->sh[i];
		b->subject = s->name;
		if (b->by_index[s->h->shard_index] != NULL)
			return fm_err_set(&b->err, FM_EDATA, "shard %u/%u given twice (also %s)",
			    s->h->shard_index, b->n_shards, b->by_index[s->h->shard_index]->name);
		b->by_index[s->h->shard_index] = s;
	}
	for (uint32_t j = 0; j < b->n_shards; j++)
		if (b->by_index[j] == NULL) {
			b->subject = b->sh[0].name;
			return fm_err_set(&b->err, FM_EDATA, "shard %u/%u is missing (%d of %u shards given)",
			    j, b->n_shards, o->n_inputs, b->n_shards);
		}
	return FM_OK;
}

/* The chunk file drives: each chunk takes the next row of its shard. */
static int
merge(struct build *b)
{
	struct fm_chunk_record rec;
	struct fm_embed_record er;
	uint32_t n_docs = 0;
	int st;

	for (;;) {
		b->subject = shown(b->o->chunkfile);
		if ((st = fm_chunkr_next(b->cr, &rec, &b->err)) != FM_OK)
			return st;
		if (rec.kind == FM_REC_END)
			break;
		if (rec.kind == FM_REC_DOC_BEGIN)
			n_docs = rec.doc.doc + 1;
		if (rec.kind != FM_REC_CHUNK)
			continue;
		const struct fm_chunk *c = &rec.chunk;
		struct shard *s = b->by_index[c->id % b->n_shards];
		b->subject = s->name;
		if ((st = fm_embedr_next(s->r, &er, &b->err)) != FM_OK)
			return st;
		if (er.kind != FM_EREC_ROW)
			return fm_err_set(&b->err, FM_EDATA, "made from another chunk file than %s "
			    "(no row for its chunk %" PRIu64 ")", shown(b->o->chunkfile), c->id);
		if (er.id != c->id)
			return fm_err_set(&b->err, FM_EDATA, "row %" PRIu64 " where chunk %" PRIu64 " was due",
			    er.id, c->id);
		if (fm_indexw_chunk(b->w, er.vec, c->doc, c->chunk, c->page, c->n_tokens, &b->err) != FM_OK) {
			b->subject = b->err.status == FM_EIO ? b->o->output : s->name;
			return b->err.status;
		}
	}
	for (uint32_t j = 0; j < b->n_shards; j++) {
		struct shard *s = b->by_index[j];
		b->subject = s->name;
		if ((st = fm_embedr_next(s->r, &er, &b->err)) != FM_OK)
			return st;
		if (er.kind != FM_EREC_END)
			return fm_err_set(&b->err, FM_EDATA, "made from another chunk file than %s "
			    "(more rows than its %" PRIu64 " chunks)", shown(b->o->chunkfile), rec.end.n_chunks);
		if (er.end.n_source != rec.end.n_chunks || er.end.source_hash != rec.end.content_hash)
			return fm_err_set(&b->err, FM_EDATA, "made from another chunk file than %s",
			    shown(b->o->chunkfile));
	}
	b->subject = b->o->output;
	return fm_indexw_finish(b->w, rec.end.n_docs > n_docs ? rec.end.n_docs : n_docs,
	    rec.end.content_hash, &b->err);
}

/*
 * The whole-file check at build: the written file, read back through the
 * page cache as a reader will see it, before it is put in place.
 */
static int
check_written(struct build *b, struct fm_index **ix)
{
	const char *path = b->out.tmp != NULL ? b->out.tmp : b->o->output;

	if (fflush(b->out.f) != 0)
		return fm_err_errno(&b->err, FM_EIO, errno, "write error");
	if (fm_index_open(path, ix, &b->err) != FM_OK || fm_index_verify(*ix, &b->err) != FM_OK) {
		/* What was just written does not read back: the disk or the writer failed. */
		char msg[sizeof b->err.msg];
		snprintf(msg, sizeof msg, "%s", b->err.msg);
		return fm_err_set(&b->err, FM_EIO, "reading back the written index: %s", msg);
	}
	return FM_OK;
}

static int
build_index(const struct fm_index_opts *o)
{
	struct build b = { .o = o };
	struct fm_index_info in = {0};
	const struct fm_embed_header *h0;
	const struct fm_chunk_header *ch;
	struct fm_index *ix = NULL;
	bool out_open = false;
	double t0 = fm_now();
	int st;

	if ((st = open_shards(&b)) != FM_OK)
		goto fail;
	h0 = b.sh[0].h;
	b.subject = shown(o->chunkfile);
	if ((b.cf = open_in(o->chunkfile, &b.err)) == NULL || (b.cr = fm_chunkr_open(b.cf, &b.err)) == NULL) {
		st = b.err.status;
		goto fail;
	}
	ch = fm_chunkr_header(b.cr);
	if (ch->tok_fingerprint != h0->tok_fingerprint) {
		st = fm_err_set(&b.err, FM_EDATA, "not the chunk file %s was made from (tokenizers differ)",
		    b.sh[0].name);
		goto fail;
	}
	in.dim = h0->dim;
	in.dtype = (uint16_t)(o->dtype >= 0 ? o->dtype : h0->dtype);
	in.pooling = h0->pooling;
	in.page_chunks = ch->page_chunks;
	in.n_shards = b.n_shards;
	in.encoder_fingerprint = h0->encoder_fingerprint;
	in.tok_fingerprint = h0->tok_fingerprint;
	snprintf(in.encoder_name, sizeof in.encoder_name, "%s", h0->encoder_name);
	b.subject = o->output;
	if ((st = fm_out_open(&b.out, o->output, &b.err)) != FM_OK)
		goto fail;
	out_open = true;
	if ((b.w = fm_indexw_open(b.out.f, &in, &b.err)) == NULL) {
		st = b.err.status;
		goto fail;
	}
	if ((st = merge(&b)) != FM_OK)
		goto fail;
	b.subject = o->output;
	if ((st = check_written(&b, &ix)) != FM_OK)
		goto fail;
	if ((st = fm_out_commit(&b.out, &b.err)) != FM_OK) {
		out_open = false;
		goto fail;
	}
	out_open = false;
	if (o->verbose) {
		double dt = fm_now() - t0;
		fprintf(stderr, "%s: %s: %" PRIu64 " chunks, %" PRIu64 " pages, %u documents, "
		    "%" PRIu64 " tokens, dim %u %s, %u shard%s, %.1f MB in %.2f s\n", o->tool, o->output,
		    ix->n_chunks, ix->n_pages, ix->n_docs, ix->n_tokens, ix->info.dim,
		    ix->info.dtype ? "f16" : "f32", ix->info.n_shards, ix->info.n_shards == 1 ? "" : "s",
		    (double)ix->file_size / 1e6, dt);
	}
	goto cleanup;
fail:
	if (out_open)
		fm_out_abort(&b.out);
	fm_report(o->tool, b.subject, &b.err);
cleanup:
	fm_index_close(ix);
	fm_indexw_free(b.w);
	fm_chunkr_free(b.cr);
	if (b.cf != NULL && b.cf != stdin)
		fclose(b.cf);
	for (int i = 0; b.sh != NULL && i < o->n_inputs; i++) {
		fm_embedr_free(b.sh[i].r);
		if (b.sh[i].f != NULL && b.sh[i].f != stdin)
			fclose(b.sh[i].f);
	}
	free(b.sh);
	free(b.by_index);
	return st;
}

static void
out_check(void)
{
	if (ferror(stdout) && errno == EPIPE)
		fm_exit_pipe();
}

/* --list: one JSON line per chunk, from the page table. */
static void
list_index(const struct fm_index *ix)
{
	for (uint64_t g = 0; g < ix->n_pages; g++) {
		const struct fm_index_page *p = &ix->pages[g];
		for (uint32_t i = 0; i < p->n_chunks; i++) {
			uint64_t id = p->first_chunk + i;
			printf("{\"id\":%" PRIu64 ",\"doc\":%u,\"chunk\":%" PRIu64 ",\"page\":%u,"
			    "\"n_tokens\":%u}\n", id, p->doc, (uint64_t)p->page * ix->info.page_chunks + i,
			    p->page, ix->tokens[id]);
		}
		out_check();
	}
}

/* --stats: one JSON object. */
static void
stats_index(const char *name, const struct fm_index *ix)
{
	const struct fm_index_info *in = &ix->info;

	printf("{\"file\":");
	fm_json_string(stdout, name, strlen(name));
	printf(",\"version\":%u,\"chunks\":%" PRIu64 ",\"pages\":%" PRIu64 ",\"documents\":%u,"
	    "\"tokens\":%" PRIu64 ",\"dim\":%u,\"dtype\":\"%s\",\"pooling\":\"%s\","
	    "\"page_chunks\":%u,\"shards\":%u,\"encoder\":", ix->version, ix->n_chunks,
	    ix->n_pages, ix->n_docs, ix->n_tokens, in->dim, in->dtype ? "f16" : "f32",
	    fm_embed_pooling_name(in->pooling), in->page_chunks, in->n_shards);
	fm_json_string(stdout, in->encoder_name, strlen(in->encoder_name));
	printf(",\"encoder_fingerprint\":\"%016" PRIx64 "\",\"tok_fingerprint\":\"%016" PRIx64 "\","
	    "\"chunk_file\":\"%016" PRIx64 "\",\"bytes\":%" PRIu64 ",\"vector_bytes\":%" PRIu64 "}\n",
	    in->encoder_fingerprint, in->tok_fingerprint, in->source_hash, ix->file_size,
	    ix->n_chunks * in->dim * (in->dtype ? 2u : 4u));
	out_check();
}

int
run_index(const struct fm_index_opts *o)
{
	struct fm_err err = {0};
	int worst = FM_OK;

	if (o->mode == FM_INDEX_BUILD)
		return build_index(o);
	for (int i = 0; i < o->n_inputs; i++) {
		struct fm_index *ix;
		const char *name = o->inputs[i];
		double t0 = fm_now();
		int st = fm_index_open(name, &ix, &err);

		if (st == FM_OK && o->mode == FM_INDEX_VERIFY)
			st = fm_index_verify(ix, &err);
		if (st != FM_OK) {
			fm_report(o->tool, name, &err);
			if (st > worst)
				worst = st;
			fm_index_close(ix);
			continue;
		}
		if (o->mode == FM_INDEX_LIST)
			list_index(ix);
		else if (o->mode == FM_INDEX_STATS)
			stats_index(name, ix);
		else if (o->verbose)
			fprintf(stderr, "%s: %s: ok, %" PRIu64 " chunks, %.1f MB checked in %.2f s\n", o->tool,
			    name, ix->n_chunks, (double)ix->file_size / 1e6, fm_now() - t0);
		fm_index_close(ix);
	}
	return worst;
}
