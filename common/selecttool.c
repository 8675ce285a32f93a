/*
 * selecttool.c - fm-select: queries in, resident sets out.  The index is
 * mapped, not read; queries are embedded one by one (they are short) and
 * scored in batches, so a batch of queries is one sgemm over the vectors
 * per block of queries instead of one pass each.  Output is text lines or
 * JSON lines per selected chunk, flushed per query so a pipeline sees each
 * query's answer as soon as it is known.
 */
#include "selecttool.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chunkfile.h"
#include "embedfile.h"
#include "fm_error.h"
#include "hashenc.h"
#include "indexfile.h"
#include "io.h"
#include "json.h"
#ifdef FM_CUDA
#include "gpu.h"
#include "select_gpu.h"
#endif

#define BATCH_MAX 64                      /* queries scored together */
#define BATCH_BYTES (256u << 20)          /* at most this much of scores per batch */

struct query {
	uint64_t number;   /* line number from 0, or the query file's row id */
	float *vec;        /* (dim) */
};

struct sel {
	const struct fm_select_opts *o;
	struct fm_index *ix;
	struct fm_err err;
	const char *subject;
	bool batch;                  /* queries from stdin or a file: a query column */
	/* --text: the chunk file's texts. */
	char *text;
	uint64_t *text_off;          /* (n_chunks + 1) */
	/* The collection as fm_select() sees it. */
	struct fm_collection coll;
	uint64_t *page_first;
	struct fm_selected *picked;  /* (n_chunks) */
	float *page_scores;          /* (n_pages) */
	uint64_t n_empty;            /* queries that selected nothing */
	double t_score;              /* seconds spent scoring */
	uint64_t n_queries;
	char device[300];            /* where scoring runs, for -v */
#ifdef FM_CUDA
	struct fm_gpu_sel *gpu;      /* NULL: the CPU scores */
	struct fm_hit *hits;         /* (k) the GPU's top k of one query */
#endif
};

/* Ends quietly on a closed pipe; other write errors are caught at exit. */
static void
out_check(void)
{
	if (ferror(stdout) && errno == EPIPE)
		fm_exit_pipe();
}

/* Reads every chunk's text from the chunk file, which must be the index's. */
static int
load_texts(struct sel *s)
{
	const char *path = s->o->chunkfile;
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
	struct fm_chunkr *r = NULL;
	struct fm_chunk_record rec;
	uint64_t n = 0, len = 0, cap = 0;
	int st;

	s->subject = strcmp(path, "-") == 0 ? "(stdin)" : path;
	if (f == NULL)
		return fm_err_errno(&s->err, FM_EIO, errno, "cannot open");
	if ((s->text_off = calloc(s->ix->n_chunks + 1, sizeof *s->text_off)) == NULL) {
		st = fm_err_errno(&s->err, FM_EIO, errno, "cannot allocate");
		goto out;
	}
	if ((r = fm_chunkr_open(f, &s->err)) == NULL) {
		st = s->err.status;
		goto out;
	}
	if (fm_chunkr_header(r)->tok_fingerprint != s->ix->info.tok_fingerprint) {
		st = fm_err_set(&s->err, FM_EDATA, "not the chunk file of %s (tokenizers differ)", s->o->index);
		goto out;
	}
	while ((st = fm_chunkr_next(r, &rec, &s->err)) == FM_OK && rec.kind != FM_REC_END) {
		if (rec.kind != FM_REC_CHUNK)
			continue;
		if (n >= s->ix->n_chunks) {
			st = fm_err_set(&s->err, FM_EDATA, "not the chunk file of %s (more chunks)", s->o->index);
			goto out;
		}
		if (len + rec.chunk.length > cap) {
			uint64_t c = cap ? cap : 65536;
			while (c < len + rec.chunk.length)
				c *= 2;
			char *t = realloc(s->text, c);
			if (t == NULL) {
				st = fm_err_errno(&s->err, FM_EIO, errno, "cannot allocate");
				goto out;
			}
			s->text = t;
			cap = c;
		}
		memcpy(s->text + len, rec.chunk.text, rec.chunk.length);
		len += rec.chunk.length;
		s->text_off[++n] = len;
	}
	if (st == FM_OK && (n != s->ix->n_chunks || rec.end.content_hash != s->ix->info.source_hash))
		st = fm_err_set(&s->err, FM_EDATA, "not the chunk file of %s (content differs)", s->o->index);
out:
	fm_chunkr_free(r);
	if (f != NULL && f != stdin)
		fclose(f);
	return st;
}

/* Writes text with backslash, tab, newline and carriage return escaped: one line. */
static void
put_escaped(const char *t, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++) {
		switch (t[i]) {
		case '\\': fputs("\\\\", stdout); break;
		case '\t': fputs("\\t", stdout); break;
		case '\n': fputs("\\n", stdout); break;
		case '\r': fputs("\\r", stdout); break;
		default: putchar(t[i]);
		}
	}
}

static void
print_selection(struct sel *s, uint64_t qnum, struct fm_selected *p, uint64_t n)
{
	const struct fm_select_opts *o = s->o;
	const struct fm_index *ix = s->ix;

	if (o->order_score)
		fm_selected_sort_rank(p, n);
	for (uint64_t j = 0; j < n; j++) {
		uint64_t id = p[j].id;
		if (o->json) {
			uint64_t g = fm_index_page_of(ix, id);
			const struct fm_index_page *pg = &ix->pages[g];
			putchar('{');
			if (s->batch)
				printf("\"query\":%" PRIu64 ",", qnum);
			printf("\"id\":%" PRIu64 ",\"doc\":%u,\"chunk\":%" PRIu64 ",\"page\":%u,"
			    "\"score\":%.6f,\"reason\":\"%s\"", id, pg->doc,
			    (uint64_t)pg->page * ix->info.page_chunks + (id - pg->first_chunk), pg->page,
			    p[j].score, fm_reason_name(p[j].reasons));
			if (o->text) {
				fputs(",\"text\":", stdout);
				fm_json_string(stdout, s->text + s->text_off[id],
				    s->text_off[id + 1] - s->text_off[id]);
			}
			fputs("}\n", stdout);
		} else {
			if (s->batch)
				printf("%" PRIu64 "\t", qnum);
			printf("%" PRIu64 "\t%.6f", id, p[j].score);
			if (o->text) {
				putchar('\t');
				put_escaped(s->text + s->text_off[id], s->text_off[id + 1] - s->text_off[id]);
			}
			putchar('\n');
		}
	}
	fflush(stdout);
	out_check();
}

#ifdef FM_CUDA
static int
cmp_id(const void *a, const void *b)
{
	const struct fm_selected *x = a, *y = b;

	return x->id < y->id ? -1 : x->id > y->id;
}

/*
 * The GPU scores; a plain top-k (with sink and recent) is also selected
 * there, so only k results cross the bus.  Any other policy takes the
 * scores back to fm_select().
 */
static int
run_batch_gpu(struct sel *s, struct query *q, uint32_t nq, float *scores, float *qb)
{
	const struct fm_policy *p = &s->o->policy;
	const struct fm_index *ix = s->ix;
	uint32_t d = ix->info.dim;
	uint64_t n = ix->n_chunks, n_sel;
	bool plain = p->k > 0 && !p->has_threshold && p->pages == 0 && p->budget == 0;
	double t0 = fm_now();
	int st;

	for (uint32_t i = 0; i < nq; i++)
		memcpy(qb + (size_t)i * d, q[i].vec, d * sizeof *qb);
	if ((st = fm_gpu_sel_score(s->gpu, qb, nq, &s->err)) != FM_OK)
		return st;
	if (plain)
		st = fm_gpu_sel_topk(s->gpu, nq, p->k, s->hits, &s->err);
	else
		st = fm_gpu_sel_scores(s->gpu, nq, scores, &s->err);
	if (st != FM_OK)
		return st;
	s->t_score += fm_now() - t0;
	for (uint32_t i = 0; i < nq; i++) {
		if (!plain) {
			const float *ps = NULL;
			if (p->pages > 0 && p->page_score == FM_PAGE_SUM) {
				fm_score(s->page_scores, q[i].vec, ix->page_sums, FM_VEC_F32, ix->n_pages, d);
				ps = s->page_scores;
			}
			st = fm_select(p, &s->coll, scores + (size_t)i * n, ps, s->picked, &n_sel, &s->err);
			if (st != FM_OK)
				return st;
		} else {
			const struct fm_hit *h = s->hits + (size_t)i * p->k;
			n_sel = 0;
			for (uint64_t j = 0; j < p->k; j++)
				s->picked[n_sel++] = (struct fm_selected){ h[j].id, h[j].score, FM_WHY_TOPK };
			for (uint64_t j = 0; j < n; j++) {
				uint32_t why = (j < p->sink ? FM_WHY_SINK : 0) | (n - 1 - j < p->recent ? FM_WHY_RECENT : 0);
				if (why == 0) {
					/* Past the sink: jump to the recent tail. */
					if (n - j > p->recent + 1)
						j = n - p->recent - 1;
					continue;
				}
				float sc;
				fm_score(&sc, q[i].vec, (const char *)ix->vecs + j * d * (ix->info.dtype ? 2 : 4),
				    (enum fm_vec_type)ix->info.dtype, 1, d);
				s->picked[n_sel++] = (struct fm_selected){ j, sc, why };
			}
			/* Merge a chunk that is both topk and sink or recent into one line. */
			qsort(s->picked, n_sel, sizeof *s->picked, cmp_id);
			uint64_t w = 0;
			for (uint64_t j = 0; j < n_sel; j++) {
				if (w > 0 && s->picked[w - 1].id == s->picked[j].id) {
					if (s->picked[j].reasons & FM_WHY_TOPK)
						s->picked[w - 1].score = s->picked[j].score;
					s->picked[w - 1].reasons |= s->picked[j].reasons;
				} else {
					s->picked[w++] = s->picked[j];
				}
			}
			n_sel = w;
		}
		if (n_sel == 0)
			s->n_empty++;
		print_selection(s, q[i].number, s->picked, n_sel);
	}
	s->n_queries += nq;
	return FM_OK;
}
#endif

/* Scores a batch of queries, selects and prints each. */
static int
run_batch(struct sel *s, struct query *q, uint32_t nq, float *scores, float *qbuf)
{
	const struct fm_index *ix = s->ix;
	uint32_t d = ix->info.dim;
	uint64_t n = ix->n_chunks, n_sel;
	double t0 = fm_now();
	int st;

#ifdef FM_CUDA
	if (s->gpu != NULL)
		return run_batch_gpu(s, q, nq, scores, qbuf);
#endif
	if (nq == 1) {
		fm_score(scores, q[0].vec, ix->vecs, (enum fm_vec_type)ix->info.dtype, n, d);
	} else {
		for (uint32_t i = 0; i < nq; i++)
			memcpy(qbuf + (size_t)i * d, q[i].vec, d * sizeof *qbuf);
		if ((st = fm_score_batch(scores, qbuf, nq, ix->vecs, (enum fm_vec_type)ix->info.dtype, n, d,
		    &s->err)) != FM_OK)
			return st;
	}
	s->t_score += fm_now() - t0;
	for (uint32_t i = 0; i < nq; i++) {
		const float *sc = scores + (size_t)i * n;
		const float *ps = NULL;
		if (s->o->policy.pages > 0 && s->o->policy.page_score == FM_PAGE_SUM) {
			/* The page sums score a page in one inner product. */
			fm_score(s->page_scores, q[i].vec, ix->page_sums, FM_VEC_F32, ix->n_pages, d);
			ps = s->page_scores;
		}
		if ((st = fm_select(&s->o->policy, &s->coll, sc, ps, s->picked, &n_sel, &s->err)) != FM_OK)
			return st;
		if (n_sel == 0)
			s->n_empty++;
		print_selection(s, q[i].number, s->picked, n_sel);
	}
	s->n_queries += nq;
	return FM_OK;
}

/* The queries' source: one text, stdin lines, or a query embedding file. */
struct source {
	struct fm_hashenc *enc;
	FILE *f;
	struct fm_embedr *er;
	char *line;
	size_t line_cap;
	uint64_t line_no;
	bool done;
};

/* The next query into q (vec has dim floats); FM_ENORESULT at the end. */
static int
next_query(struct sel *s, struct source *src, struct query *q)
{
	const struct fm_select_opts *o = s->o;
	uint32_t d = s->ix->info.dim;

	if (src->done)
		return FM_ENORESULT;
	if (o->query != NULL) {
		src->done = true;
		q->number = 0;
		s->subject = "-q";
		return fm_hashenc_encode(src->enc, o->query, strlen(o->query), q->vec, &s->err);
	}
	if (src->er != NULL) {
		struct fm_embed_record rec;
		int st;
		s->subject = o->query_file;
		if ((st = fm_embedr_next(src->er, &rec, &s->err)) != FM_OK)
			return st;
		if (rec.kind == FM_EREC_END) {
			src->done = true;
			return FM_ENORESULT;
		}
		q->number = rec.id;
		memcpy(q->vec, rec.vec, d * sizeof *q->vec);
		return FM_OK;
	}
	for (;;) {
		ssize_t n;
		errno = 0;
		if ((n = getline(&src->line, &src->line_cap, stdin)) < 0) {
			src->done = true;
			s->subject = "(stdin)";
			return ferror(stdin) ? fm_err_errno(&s->err, FM_EIO, errno ? errno : EIO, "read error") :
			    FM_ENORESULT;
		}
		q->number = src->line_no++;
		while (n > 0 && (src->line[n - 1] == '\n' || src->line[n - 1] == '\r'))
			n--;
		if (n == 0)
			continue;   /* a blank line is no query, but keeps its number */
		s->subject = "(stdin)";
		return fm_hashenc_encode(src->enc, src->line, (size_t)n, q->vec, &s->err);
	}
}

/* Sets up the query source and checks that its vectors are comparable with the index's. */
static int
open_source(struct sel *s, struct source *src)
{
	const struct fm_select_opts *o = s->o;
	const struct fm_index_info *in = &s->ix->info;

	if (o->query_file != NULL) {
		const struct fm_embed_header *h;
		s->subject = o->query_file;
		src->f = strcmp(o->query_file, "-") == 0 ? stdin : fopen(o->query_file, "rb");
		if (src->f == NULL)
			return fm_err_errno(&s->err, FM_EIO, errno, "cannot open");
		if ((src->er = fm_embedr_open(src->f, &s->err)) == NULL)
			return s->err.status;
		h = fm_embedr_header(src->er);
		if (h->dim != in->dim)
			return fm_err_set(&s->err, FM_EDATA, "dimension %u, but %s has %u", h->dim, o->index, in->dim);
		if (h->encoder_fingerprint != in->encoder_fingerprint)
			return fm_err_set(&s->err, FM_EDATA, "made by another encoder (%s) than %s (%s)",
			    h->encoder_name, o->index, in->encoder_name);
		return FM_OK;
	}
	s->subject = o->index;
	if ((src->enc = fm_hashenc_new(in->dim, &s->err)) == NULL)
		return s->err.status;
	if (fm_hashenc_fingerprint(src->enc) != in->encoder_fingerprint)
		return fm_err_set(&s->err, FM_EDATA, "built with encoder '%s', not the built-in one: "
		    "embed the queries with it (fm-embed --queries) and give them with --query-file",
		    in->encoder_name);
	return FM_OK;
}

static void
close_source(struct source *src)
{
	fm_hashenc_free(src->enc);
	fm_embedr_free(src->er);
	if (src->f != NULL && src->f != stdin)
		fclose(src->f);
	free(src->line);
}

/*
 * --device: auto takes the first GPU when one works and the CPU otherwise;
 * cuda[:N] takes that GPU or fails with FM_EDEVICE.
 */
static int
choose_device(struct sel *s, uint32_t *bmax)
{
	const struct fm_select_opts *o = s->o;

	snprintf(s->device, sizeof s->device, "cpu");
#ifdef FM_CUDA
	const struct fm_index *ix = s->ix;
	const struct fm_policy *p = &o->policy;
	struct fm_err gerr = {0};
	int dev = o->device >= 0 ? o->device : 0;

	if (o->device == -2 || (o->device == -1 && fm_gpu_count() == 0))
		return FM_OK;
	/* The GPU's top-k holds at most 2^31 results per call. */
	if (p->k > 0 && (uint64_t)*bmax * p->k >= (1u << 31))
		*bmax = (uint32_t)(((1u << 31) - 1) / p->k);
	if ((s->hits = malloc((size_t)*bmax * (p->k ? p->k : 1) * sizeof *s->hits)) == NULL)
		return fm_err_errno(&s->err, FM_EIO, errno, "cannot allocate");
	if ((s->gpu = fm_gpu_sel_new(dev, ix->n_chunks, ix->info.dim, (enum fm_vec_type)ix->info.dtype,
	    *bmax, &gerr)) == NULL || fm_gpu_sel_load(s->gpu, ix->vecs, &gerr) != FM_OK) {
		fm_gpu_sel_free(s->gpu);
		s->gpu = NULL;
		if (o->device >= 0) {
			s->subject = "--device";
			s->err = gerr;
			return FM_EDEVICE;
		}
		snprintf(s->device, sizeof s->device, "cpu (no usable GPU: %.200s)", gerr.msg);
		return FM_OK;
	}
	snprintf(s->device, sizeof s->device, "cuda:%d (%s)", dev, fm_gpu_sel_device(s->gpu));
	return FM_OK;
#else
	if (o->device >= 0) {
		s->subject = "--device";
		return fm_err_set(&s->err, FM_EDEVICE, "this build has no CUDA (use --device cpu or auto)");
	}
	return FM_OK;
#endif
}

/* The checks that need the index: -k and --pages against its size. */
static int
check_policy(struct sel *s, struct fm_policy *p)
{
	const struct fm_select_opts *o = s->o;
	const struct fm_index *ix = s->ix;

	s->subject = o->index;
	if (ix->n_chunks == 0)
		return fm_err_set(&s->err, FM_ENORESULT, "the index holds no chunks");
	if (p->k > ix->n_chunks)
		return fm_err_set(&s->err, FM_EUSAGE, "-k %" PRIu64 " is more than its %" PRIu64 " chunks",
		    p->k, ix->n_chunks);
	if (o->budget_pct > 0) {
		double t = floor((double)ix->n_tokens * o->budget_pct / 100);
		p->budget = t < 1 ? 1 : (uint64_t)t;
	}
	return FM_OK;
}

int
run_select(const struct fm_select_opts *o)
{
	struct sel s = { .o = o, .batch = o->query == NULL };
	struct fm_select_opts oo = *o;
	struct source src = {0};
	struct query *q = NULL;
	float *scores = NULL, *qbuf = NULL;
	uint32_t bmax, nq = 0;
	int st;

	s.o = &oo;
	s.subject = o->index;
	if ((st = fm_index_open(o->index, &s.ix, &s.err)) != FM_OK)
		goto fail;
	if ((st = check_policy(&s, &oo.policy)) != FM_OK)
		goto fail;
	if (o->text && (st = load_texts(&s)) != FM_OK)
		goto fail;
	if ((st = open_source(&s, &src)) != FM_OK)
		goto fail;

	const struct fm_index *ix = s.ix;
	uint32_t d = ix->info.dim;
	uint64_t n = ix->n_chunks;
	bmax = o->query != NULL ? 1 : BATCH_MAX;
	if ((uint64_t)bmax * n * sizeof(float) > BATCH_BYTES)
		bmax = (uint32_t)(BATCH_BYTES / (n * sizeof(float)));
	if (bmax == 0)
		bmax = 1;
	s.subject = o->index;
	if ((q = calloc(bmax, sizeof *q)) == NULL || (qbuf = malloc((size_t)bmax * d * sizeof *qbuf)) == NULL ||
	    (scores = malloc((size_t)bmax * n * sizeof *scores)) == NULL ||
	    (s.picked = malloc(n * sizeof *s.picked)) == NULL ||
	    (s.page_scores = malloc(ix->n_pages * sizeof *s.page_scores)) == NULL ||
	    (s.page_first = malloc((ix->n_pages + 1) * sizeof *s.page_first)) == NULL) {
		st = fm_err_errno(&s.err, FM_EIO, errno, "cannot allocate");
		goto fail;
	}
	for (uint32_t i = 0; i < bmax; i++)
		if ((q[i].vec = malloc(d * sizeof *q[i].vec)) == NULL) {
			st = fm_err_errno(&s.err, FM_EIO, errno, "cannot allocate");
			goto fail;
		}
	if ((st = choose_device(&s, &bmax)) != FM_OK)
		goto fail;
	for (uint64_t g = 0; g < ix->n_pages; g++)
		s.page_first[g] = ix->pages[g].first_chunk;
	s.page_first[ix->n_pages] = n;
	s.coll = (struct fm_collection){ n, ix->tokens, ix->n_pages, s.page_first };

	for (;;) {
		st = next_query(&s, &src, &q[nq]);
		if (st == FM_OK && ++nq < bmax)
			continue;
		if (st != FM_OK && st != FM_ENORESULT)
			goto fail;
		if (nq > 0) {
			int bst = run_batch(&s, q, nq, scores, qbuf);
			if (bst != FM_OK) {
				st = bst;
				s.subject = o->index;
				goto fail;
			}
			nq = 0;
		}
		if (st == FM_ENORESULT)
			break;
	}
	if (s.n_queries == 0) {
		st = fm_err_set(&s.err, FM_ENORESULT, "no query");
		s.subject = o->query_file != NULL ? o->query_file : "(stdin)";
		goto fail;
	}
	if (o->verbose) {
		double bytes = (double)n * d * (ix->info.dtype ? 2 : 4) * (double)s.n_queries;
		fprintf(stderr, "%s: %s: %" PRIu64 " chunks of dim %u %s on %s; %" PRIu64
		    " quer%s scored in %.3f s (%.1f GB/s of vectors per query)%s\n", o->tool, o->index, n, d,
		    ix->info.dtype ? "f16" : "f32", s.device, s.n_queries, s.n_queries == 1 ? "y" : "ies", s.t_score,
		    s.t_score > 0 ? bytes / s.t_score / 1e9 : 0.0, s.n_empty ? ", some selected nothing" : "");
	}
	st = s.n_empty > 0 ? FM_ENORESULT : FM_OK;
	goto out;
fail:
	fm_report(o->tool, s.subject, &s.err);
out:
	for (uint32_t i = 0; q != NULL && i < bmax; i++)
		free(q[i].vec);
	free(q);
	free(qbuf);
	free(scores);
	free(s.picked);
	free(s.page_scores);
	free(s.page_first);
	free(s.text);
	free(s.text_off);
	close_source(&src);
#ifdef FM_CUDA
	fm_gpu_sel_free(s.gpu);
	free(s.hits);
#endif
	fm_index_close(s.ix);
	return st;
}
