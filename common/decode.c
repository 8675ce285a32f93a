/*
 * decode.c - run_decode(), the body of fm-decode: model, tokenizer, prompt,
 * prefill in batches, then one token at a time until -n tokens, the end of
 * sequence token or a full context.  The text of each new token is written
 * and flushed as soon as it is chosen, so a reader downstream sees the
 * continuation as it grows.
 */
#include "cli.h"
#include "decode.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "indexfile.h"
#include "io.h"
#include "json.h"
#include "lsa.h"
#include "model.h"
#include "qenc.h"
#include "sample.h"
#include "tokenizer.h"
#ifdef FM_CUDA
#include "gpu.h"
#endif

/*
 * Prompt tokens per prefill batch: bounds the activation memory, not the
 * prompt.  A GPU wants larger GEMMs to keep its tensor cores busy.
 */
#define CPU_BATCH 512
#define GPU_BATCH 2048

enum device_kind { DEV_CPU, DEV_CUDA };

struct device {
	enum device_kind kind;
	int index;          /* cuda:N */
	bool automatic;     /* --device auto */
};

static int
parse_device(const char *s, struct device *d, struct fm_err *err)
{
	int n;

	memset(d, 0, sizeof *d);
	if (!fm_parse_device(s, &n))
		return fm_err_set(err, FM_EUSAGE, "unknown device (auto, cpu, cuda or cuda:N)");
	d->automatic = n == FM_DEVICE_AUTO;
	if (n < 0)
		return FM_OK;
	d->kind = DEV_CUDA;
	d->index = n;
#ifndef FM_CUDA
	return fm_err_set(err, FM_EDEVICE, "this build has no CUDA support");
#else
	return FM_OK;
#endif
}

/* The whole prompt in memory: from o->prompt, o->prompt_file, or standard input. */
static int
read_prompt(const struct fm_decode_opts *o, char **text, size_t *len, const char **subject,
    struct fm_err *err)
{
	const char *path = o->prompt_file;
	size_t cap = 0, n;
	FILE *f;
	char *buf = NULL;

	*text = NULL;
	*len = 0;
	if (o->prompt != NULL) {
		*len = strlen(o->prompt);
		if ((*text = malloc(*len + 1)) == NULL)
			return fm_err_errno(err, FM_EIO, errno, "cannot allocate");
		memcpy(*text, o->prompt, *len + 1);
		return FM_OK;
	}
	if (path == NULL || strcmp(path, "-") == 0) {
		*subject = "(stdin)";
		f = stdin;
	} else {
		*subject = path;
		if ((f = fopen(path, "rb")) == NULL)
			return fm_err_errno(err, FM_EIO, errno, "cannot open");
	}
	for (;;) {
		if (cap - *len < 65536) {
			char *nb;
			cap = cap ? 2 * cap : 65536;
			if ((nb = realloc(buf, cap + 1)) == NULL) {
				free(buf);
				if (f != stdin)
					fclose(f);
				return fm_err_errno(err, FM_EIO, errno, "cannot allocate");
			}
			buf = nb;
		}
		n = fread(buf + *len, 1, cap - *len, f);
		*len += n;
		if (n == 0)
			break;
	}
	if (ferror(f)) {
		int e = errno;
		free(buf);
		if (f != stdin)
			fclose(f);
		return fm_err_errno(err, FM_EIO, e ? e : EIO, "read error");
	}
	if (f != stdin)
		fclose(f);
	buf[*len] = '\0';
	*text = buf;
	*subject = NULL;
	return FM_OK;
}

/* Writes to standard output; a closed pipe ends the tool quietly, any other error is returned. */
static int
out_write(const void *p, size_t n, const char **subject, struct fm_err *err)
{
	if ((n > 0 && fwrite(p, 1, n, stdout) != n) || fflush(stdout) != 0) {
		if (errno == EPIPE)
			fm_exit_pipe();
		*subject = "(stdout)";
		return fm_err_errno(err, FM_EIO, errno ? errno : EIO, "write error");
	}
	return FM_OK;
}

static bool
all_finite(const float *x, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		if (!isfinite(x[i]))
			return false;
	return true;
}

static int
trace_line(FILE *f, uint32_t pos, int32_t token, int32_t next, const float *logits,
    uint32_t n_vocab)
{
	int32_t ids[FM_DECODE_TRACE_TOP];
	float vals[FM_DECODE_TRACE_TOP];
	uint32_t k = n_vocab < FM_DECODE_TRACE_TOP ? n_vocab : FM_DECODE_TRACE_TOP;

	fm_top_logits(logits, n_vocab, k, ids, vals);
	fprintf(f, "{\"pos\":%u,\"token\":%d,\"next\":%d,\"top\":[", pos, token, next);
	for (uint32_t i = 0; i < k; i++)
		fprintf(f, "%s[%d,%.9g]", i ? "," : "", ids[i], vals[i]);
	return fputs("]}\n", f) == EOF ? -1 : 0;
}

struct lsa;

struct state {
	const struct fm_decode_opts *o;
	struct fm_model *m;
	struct fm_tok *tok;
	struct fm_cpu *cpu;          /* the CPU backend, or */
	struct fm_kvcache kv;        /* (its KV cache) */
#ifdef FM_CUDA
	struct fm_gpu_fwd *gpu;      /* the GPU backend, with its own KV cache */
#endif
	bool argmax_on_device;       /* greedy without a trace: the logits stay on the GPU */
	uint32_t batch;              /* prefill batch */
	uint32_t n_pos;              /* KV positions */
	char device[sizeof(((struct fm_err *)0)->msg) + 96];  /* what -v says about the device */
	struct fm_sampler smp;
	struct fm_tokens prompt;
	int32_t *ids;        /* (n_prompt) the prompt's tokens, BOS alone for an empty one */
	uint32_t n_prompt;
	struct fm_out trace;
	bool trace_open;
	struct fm_out stats_js;      /* --stats-json, opened before the work so a bad path fails first */
	bool stats_open;
	char *text;          /* prompt text */
	size_t text_len;
	float *logits;       /* (batch, n_vocab) */
	char *piece;         /* decoded text scratch */
	size_t piece_len, piece_cap;
	const char *shown;   /* what stdout starts with: the prompt (or, with a document, the question) */
	size_t shown_len;
	uint64_t prefill_kv; /* device KV bytes during prefill */
	bool kv_pinned;      /* s->kv is registered with the GPU as the mirror */
	bool layered;        /* LSA on a GPU: the prefill runs layer by layer into the mirror */
	struct lsa *lsa;     /* Lookahead Sparse Attention, or NULL: dense */
};

static void lsa_free(struct lsa *L);

static void
state_free(struct state *s)
{
	lsa_free(s->lsa);
	if (s->trace_open)
		fm_out_abort(&s->trace);
	if (s->stats_open)
		fm_out_abort(&s->stats_js);
	fm_cpu_free(s->cpu);
#ifdef FM_CUDA
	fm_gpu_fwd_free(s->gpu);
	if (s->kv_pinned) {
		fm_gpu_unpin(s->kv.k);
		fm_gpu_unpin(s->kv.v);
	}
#endif
	fm_kv_free(&s->kv);
	fm_sampler_free(&s->smp);
	fm_tokens_free(&s->prompt);
	free(s->ids);
	fm_tok_free(s->tok);
	fm_model_free(s->m);
	free(s->text);
	free(s->logits);
	free(s->piece);
}

/*
 * The text that token cur adds after token prev.  Decoding the pair and
 * dropping prev's text keeps the leading space of cur, which decoding cur
 * alone would strip (and strips, as it should, right after BOS).
 */
static int
token_text(struct state *s, int32_t prev, int32_t cur, const char **p, size_t *n,
    struct fm_err *err)
{
	int32_t pair[2] = { prev, cur };
	size_t before;
	int rc;

	s->piece_len = 0;
	if ((rc = fm_tok_decode(s->tok, pair, 1, 0, &s->piece, &s->piece_len, &s->piece_cap,
	    err)) != FM_OK)
		return rc;
	before = s->piece_len;
	s->piece_len = 0;
	if ((rc = fm_tok_decode(s->tok, pair, 2, 0, &s->piece, &s->piece_len, &s->piece_cap,
	    err)) != FM_OK)
		return rc;
	*p = s->piece + (before <= s->piece_len ? before : s->piece_len);
	*n = s->piece_len - (before <= s->piece_len ? before : s->piece_len);
	return FM_OK;
}

/*
 * The GPU when one was asked for (failing is an error) or when --device auto
 * finds one that works (failing falls back to the CPU); the CPU otherwise.
 */
static int
open_backend(struct state *s, const struct device *dev, struct fm_err *err)
{
	const struct fm_decode_opts *o = s->o;
	char why[sizeof err->msg + 32] = "";
	int rc;

#ifdef FM_CUDA
	if (dev->kind == DEV_CUDA || (dev->automatic && fm_gpu_count() > 0)) {
		struct fm_err gerr = { 0 };
		bool audit_cpu = o->audit_attention || o->audit_dense;
		s->batch = s->n_prompt < GPU_BATCH ? s->n_prompt : GPU_BATCH;
		if (s->lsa != NULL && audit_cpu && !dev->automatic)
			return fm_err_set(err, FM_EUSAGE, "--audit-attention and --audit-dense run on the "
			    "CPU (--device cpu)");
		/*
		 * Sparse: the prefill goes layer by layer into the mirror in host
		 * memory, so the forward's own cache is only a placeholder until the
		 * store replaces it; with --trace (every position's logits) the
		 * prefill is the dense one, its cache holding the prompt.
		 */
		s->layered = s->lsa != NULL && o->trace == NULL;
		if (!(s->lsa != NULL && audit_cpu))
			s->gpu = fm_gpu_fwd_new(s->m, dev->index, s->batch, s->layered ? 1 :
			    s->lsa != NULL ? s->n_prompt : s->n_pos, o->kv_type, o->trace != NULL, &gerr);
		else
			snprintf(gerr.msg, sizeof gerr.msg, "the audit runs on the CPU");
		if (s->gpu != NULL && s->lsa != NULL &&
		    (rc = fm_kv_init(&s->kv, o->kv_type, s->m->hp.n_layer, s->n_prompt,
		    s->m->hp.n_head_kv, s->m->hp.head_dim, err)) != FM_OK)
			return rc;
		/* Pinned, the copies into the store can run asynchronously; unpinned they still work. */
		if (s->gpu != NULL && s->lsa != NULL)
			s->kv_pinned = fm_gpu_pin(s->kv.k, fm_kv_bytes(&s->kv) / 2) &&
			    fm_gpu_pin(s->kv.v, fm_kv_bytes(&s->kv) / 2);
		if (s->gpu != NULL) {
			snprintf(s->device, sizeof s->device, "cuda:%d, %s%s", dev->index,
			    fm_gpu_fwd_device(s->gpu), dev->automatic ? " (auto)" : "");
			s->argmax_on_device = o->temp == 0 && o->trace == NULL;
			return FM_OK;
		}
		if (!dev->automatic) {
			*err = gerr;
			return err->status;
		}
		snprintf(why, sizeof why, "; cuda:0 is not usable: %s", gerr.msg);
	}
#endif
	if ((rc = fm_kv_init(&s->kv, o->kv_type, s->m->hp.n_layer, s->n_pos, s->m->hp.n_head_kv,
	    s->m->hp.head_dim, err)) != FM_OK)
		return rc;
	s->batch = s->n_prompt < CPU_BATCH ? s->n_prompt : CPU_BATCH;
	if ((s->cpu = fm_cpu_new(s->m, s->batch, 0, err)) == NULL)
		return err->status;
	snprintf(s->device, sizeof s->device, "cpu, %u threads%s%s", fm_cpu_threads(s->cpu),
	    dev->automatic ? " (auto)" : "", why);
	return FM_OK;
}

/*
 * Runs a batch.  The logits go to s->logits (of every token with all, else
 * of the last), or, with next, only their argmax comes back from the GPU.
 */
static int
eval(struct state *s, const int32_t *ids, uint32_t n, uint32_t pos0, bool all, int32_t *next,
    struct fm_err *err)
{
#ifdef FM_CUDA
	if (s->gpu != NULL)
		return fm_gpu_fwd_eval(s->gpu, ids, n, pos0, next != NULL ? NULL : s->logits, all,
		    next, err);
#endif
	return fm_cpu_eval(s->cpu, &s->kv, ids, n, pos0, s->logits, all, err);
}

/* ---- Lookahead Sparse Attention ---- */

#define QUERY_RECENT_BYTES 512   /* generated text that joins the question in a query */
#define AUDIT_MASS_MIN 1e-3      /* chunks listed in an audit's attention mass */

struct lsa {
	struct fm_lsa_doc doc;
	struct fm_index *ix;          /* NULL: the set stays what --select gave */
	struct fm_qenc *qenc;
	struct fm_policy policy;
	uint32_t head;                /* positions before the document: BOS, or none */
	uint32_t doc_end;             /* head + document tokens: where the question starts */
	uint32_t n_tail;              /* rows for the question and every generated token */
	struct fm_lsa_slots slots;
	uint64_t budget;              /* tokens */
	uint32_t fixed;               /* first row after the slots */
	struct fm_kvcache store;      /* the resident store on the CPU (on a GPU it is the forward's) */
	int32_t *rows;                /* the keys as store rows: prefix, then the tail */
	uint32_t n_prefix;            /* BOS and resident chunks' rows */
	uint64_t *page_first;         /* (n_pages + 1) document-local */
	uint64_t n_pages;
	float *scores, *qvec;
	struct fm_selected *sel;      /* (n_chunks) the current resident set with scores */
	uint64_t n_sel;
	uint32_t *chosen;             /* (n_chunks) */
	struct fm_lsa_move *moves;    /* (n_slots) */
	uint64_t rng;
	char *query;                  /* question + recent generated text */
	size_t query_cap;
	char *gen;                    /* generated text */
	size_t gen_len, gen_cap;
	/* statistics */
	uint64_t pos_bytes;           /* one position, K and V, all layers */
	uint64_t copied;              /* bytes host -> store */
	uint64_t reselections, steps;
	double resident_sum;          /* sum over steps of keys / context */
	uint32_t window, win_start, win_steps, win_moves;
	/* audit */
	struct fm_out audit;
	bool audit_open;
	double *mass;                 /* (n_chunks) attention mass this window */
	double mass_total, recall_sum;
	uint32_t recall_windows;
	float *probe_scores;          /* (document tokens) */
	float *dense_logits;          /* --audit-dense */
	double kl_win, kl_sum;
	uint32_t top1_win, top1_sum;
};

static void
lsa_free(struct lsa *L)
{
	if (L == NULL)
		return;
	if (L->audit_open)
		fm_out_abort(&L->audit);
	fm_lsa_doc_free(&L->doc);
	fm_index_close(L->ix);
	fm_qenc_free(L->qenc);
	fm_lsa_slots_free(&L->slots);
	fm_kv_free(&L->store);
	free(L->rows);
	free(L->page_first);
	free(L->scores);
	free(L->qvec);
	free(L->sel);
	free(L->chosen);
	free(L->moves);
	free(L->query);
	free(L->gen);
	free(L->mass);
	free(L->probe_scores);
	free(L->dense_logits);
	free(L);
}

static FILE *
open_input(const char *path)
{
	return strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
}

/*
 * The context of a document: [BOS] + its chunks' tokens + the question's.
 * Only the question is printed before the continuation.
 */
static int
doc_context(struct state *s, const char **subject, struct fm_err *err)
{
	const struct fm_decode_opts *o = s->o;
	struct lsa *L = s->lsa;
	struct fm_tokens q = { 0 };
	FILE *f;
	int rc;

	*subject = o->chunks;
	if ((f = open_input(o->chunks)) == NULL)
		return fm_err_errno(err, FM_EIO, errno, "cannot open");
	rc = fm_lsa_doc_load(f, o->doc, FM_DECODE_MAX_CTX, &L->doc, err);
	if (f != stdin)
		fclose(f);
	if (rc != FM_OK) {
		if (rc == FM_EUSAGE)
			*subject = "--doc";
		return rc;
	}
	if (L->doc.tok_fingerprint != fm_tok_fingerprint(s->tok))
		return fm_err_set(err, FM_EDATA, "made with another tokenizer than %s's", o->model);
	*subject = o->prompt != NULL ? "-p" : o->prompt_file != NULL ? o->prompt_file : "(stdin)";
	if ((rc = fm_tok_encode(s->tok, s->text, s->text_len, 0, &q, err)) != FM_OK)
		return rc;
	L->head = fm_tok_bos(s->tok) >= 0 ? 1 : 0;
	L->doc_end = L->head + L->doc.n_tokens;
	if ((uint64_t)L->doc_end + q.n > FM_DECODE_MAX_CTX) {
		fm_tokens_free(&q);
		return fm_err_set(err, FM_EUSAGE, "the document and the question have %llu tokens, "
		    "more than %u", (unsigned long long)(L->doc_end + q.n), FM_DECODE_MAX_CTX);
	}
	s->n_prompt = L->doc_end + (uint32_t)q.n;
	if ((s->ids = malloc((size_t)s->n_prompt * sizeof *s->ids)) == NULL) {
		fm_tokens_free(&q);
		return fm_err_errno(err, FM_EIO, errno, "cannot allocate");
	}
	if (L->head)
		s->ids[0] = fm_tok_bos(s->tok);
	memcpy(s->ids + L->head, L->doc.ids, (size_t)L->doc.n_tokens * sizeof *s->ids);
	if (q.n > 0)
		memcpy(s->ids + L->doc_end, q.ids, q.n * sizeof *s->ids);
	fm_tokens_free(&q);
	*subject = NULL;
	return FM_OK;
}

/*
 * Slots for a budget: whole slots of the longest chunk's length, so the
 * reserve never exceeds the budget, except that a budget of the whole
 * document holds every chunk (the short last chunks' slack then shows in
 * the bytes -v reports).
 */
static uint32_t
slots_for(const struct fm_lsa_doc *d, uint64_t budget)
{
	if (budget >= d->n_tokens)
		return d->n_chunks;
	return budget / d->max_chunk > d->n_chunks ? d->n_chunks : (uint32_t)(budget / d->max_chunk);
}

/* The first resident set, from --select. */
static int
read_select(struct state *s, const char **subject, struct fm_err *err)
{
	const struct fm_decode_opts *o = s->o;
	struct lsa *L = s->lsa;
	uint64_t line;
	uint32_t n;
	FILE *f;
	int rc;

	*subject = strcmp(o->select, "-") == 0 ? "(stdin)" : o->select;
	if ((f = open_input(o->select)) == NULL)
		return fm_err_errno(err, FM_EIO, errno, "cannot open");
	rc = fm_lsa_read_selection(f, &L->doc, L->chosen, &n, &line, err);
	if (f != stdin)
		fclose(f);
	if (rc != FM_OK)
		return rc;
	if (n == 0)
		return fm_err_set(err, FM_EDATA, "no chunk selected");
	if (n > L->slots.n_slots)
		return fm_err_set(err, FM_EUSAGE, "%u chunks do not fit the reserve of %u slots "
		    "(raise --budget)", n, L->slots.n_slots);
	for (uint32_t i = 0; i < n; i++)
		L->sel[i] = (struct fm_selected){ L->chosen[i], NAN, 0 };
	L->n_sel = n;
	*subject = NULL;
	return FM_OK;
}

/*
 * The index (it must be the chunk file's), the query encoder, the reserve
 * and the tables: everything that can fail on bad input, before any work.
 */
static int
lsa_open(struct state *s, uint32_t n_pos, const char **subject, struct fm_err *err)
{
	const struct fm_decode_opts *o = s->o;
	const struct fm_hparams *hp = &s->m->hp;
	struct lsa *L = s->lsa;
	uint32_t nc = L->doc.n_chunks, slot_len = L->doc.max_chunk, n_slots;
	uint64_t budget;
	int rc;

	L->policy = o->policy;
	if (o->index != NULL) {
		const struct fm_index *ix;
		*subject = o->index;
		if ((rc = fm_index_open(o->index, &L->ix, err)) != FM_OK)
			return rc;
		ix = L->ix;
		if (ix->info.source_hash != L->doc.content_hash || ix->n_chunks != L->doc.file_chunks)
			return fm_err_set(err, FM_EDATA, "not the index of %s (built from another "
			    "chunk file)", o->chunks);
		if (o->by == FM_LSA_BY_INDEX) {
			*subject = o->encoder != NULL ? o->encoder : o->index;
			if ((L->qenc = fm_qenc_open(o->encoder, &ix->info, err)) == NULL)
				return err->status;
		}
		/* The document's pages, numbered from its first chunk. */
		*subject = NULL;
		if ((L->page_first = malloc((ix->n_pages + 1) * sizeof *L->page_first)) == NULL)
			return fm_err_errno(err, FM_EIO, errno, "cannot allocate");
		for (uint64_t g = 0; g < ix->n_pages; g++) {
			uint64_t fc = ix->pages[g].first_chunk;
			if (fc >= L->doc.first && fc < L->doc.first + nc)
				L->page_first[L->n_pages++] = fc - L->doc.first;
		}
		L->page_first[L->n_pages] = nc;
	} else if (o->select == NULL && o->by == FM_LSA_BY_INDEX) {
		*subject = o->chunks;
		return fm_err_set(err, FM_EUSAGE, "sparse attention needs an index (-i) or a resident "
		    "set (--select); --attention dense uses the whole cache");
	}
	if (L->policy.pages > 0 && L->ix == NULL) {
		*subject = "--pages";
		return fm_err_set(err, FM_EUSAGE, "needs an index (-i)");
	}
	if (L->policy.k > nc) {
		*subject = "-k";
		return fm_err_set(err, FM_EUSAGE, "%llu is more than the document's %u chunks",
		    (unsigned long long)L->policy.k, nc);
	}

	/* The reserve: whole slots of the longest chunk's length, as many as the budget pays for. */
	*subject = "--budget";
	budget = o->budget;
	if (budget == 0) {
		double t = floor(L->doc.n_tokens * o->budget_pct / 100);
		budget = t < 1 ? 1 : (uint64_t)t;
	}
	n_slots = slots_for(&L->doc, budget);
	if (n_slots == 0 || n_slots < L->policy.sink + L->policy.recent)
		return fm_err_set(err, FM_EUSAGE, "%llu tokens hold %u chunk%s (slots of %u tokens, the "
		    "longest chunk), fewer than %s", (unsigned long long)budget, n_slots,
		    n_slots == 1 ? "" : "s", slot_len, n_slots == 0 ? "one" : "the --sink and --recent chunks");
	L->budget = budget;
	L->policy.budget = budget;
	if ((rc = fm_lsa_slots_init(&L->slots, n_slots, slot_len, nc, err)) != FM_OK)
		return rc;
	*subject = NULL;
	L->fixed = n_slots * slot_len;
	L->n_tail = n_pos - L->doc_end;
	L->pos_bytes = 2ull * hp->n_layer * hp->n_head_kv * hp->head_dim * (o->kv_type == FM_KV_F16 ? 2 : 4);
	L->rng = o->seed ^ 0x6c73615f72616e64ull;
	if ((L->rows = malloc(fm_lsa_rows_cap(&L->slots, L->head, L->n_tail) * sizeof *L->rows)) == NULL ||
	    (L->scores = malloc((size_t)nc * sizeof *L->scores)) == NULL ||
	    (L->sel = malloc((size_t)nc * sizeof *L->sel)) == NULL ||
	    (L->chosen = malloc((size_t)nc * sizeof *L->chosen)) == NULL ||
	    (L->moves = malloc((size_t)n_slots * sizeof *L->moves)) == NULL ||
	    (L->mass = calloc(nc, sizeof *L->mass)) == NULL ||
	    (L->ix != NULL && (L->qvec = malloc(L->ix->info.dim * sizeof *L->qvec)) == NULL))
		return fm_err_errno(err, FM_EIO, errno, "cannot allocate");
	if (o->audit_attention &&
	    (L->probe_scores = malloc(((size_t)L->doc.n_tokens + 1) * sizeof *L->probe_scores)) == NULL)
		return fm_err_errno(err, FM_EIO, errno, "cannot allocate");
	if (o->audit_dense &&
	    (L->dense_logits = malloc((size_t)hp->n_vocab * sizeof *L->dense_logits)) == NULL)
		return fm_err_errno(err, FM_EIO, errno, "cannot allocate");
	if (o->audit != NULL) {
		*subject = o->audit;
		if ((rc = fm_out_open(&L->audit, o->audit, err)) != FM_OK)
			return rc;
		L->audit_open = true;
		*subject = NULL;
	}
	if (o->select != NULL && (rc = read_select(s, subject, err)) != FM_OK)
		return rc;
	return FM_OK;
}

/* Copies n positions from pos of the mirror (s->kv) to the store's rows from row. */
static int
to_store(struct state *s, uint32_t row, uint32_t pos, uint32_t n, struct fm_err *err)
{
	struct lsa *L = s->lsa;

	L->copied += n * L->pos_bytes;
#ifdef FM_CUDA
	if (s->gpu != NULL)
		return fm_gpu_fwd_kv_put(s->gpu, row, &s->kv, pos, n, err);
#endif
	fm_kv_copy(&L->store, row, &s->kv, pos, n);
	return FM_OK;
}

/* The query: the question, then the tail of what was generated, at a character boundary. */
static int
build_query(struct state *s, size_t *len, struct fm_err *err)
{
	struct lsa *L = s->lsa;
	size_t from = L->gen_len > QUERY_RECENT_BYTES ? L->gen_len - QUERY_RECENT_BYTES : 0;
	size_t need;

	while (from < L->gen_len && (((unsigned char)L->gen[from] & 0xc0) == 0x80 || L->gen[from] == ' '))
		from++;
	need = s->text_len + 1 + (L->gen_len - from) + 1;
	if (need > L->query_cap) {
		char *q = realloc(L->query, need);
		if (q == NULL)
			return fm_err_errno(err, FM_EIO, errno, "cannot allocate");
		L->query = q;
		L->query_cap = need;
	}
	memcpy(L->query, s->text, s->text_len);
	*len = s->text_len;
	if (L->gen_len > from) {
		L->query[(*len)++] = ' ';
		memcpy(L->query + *len, L->gen + from, L->gen_len - from);
		*len += L->gen_len - from;
	}
	L->query[*len] = '\0';
	return FM_OK;
}

/* Chooses the resident set for the next window into L->sel / L->chosen. */
static int
choose(struct state *s, const char **subject, struct fm_err *err)
{
	const struct fm_decode_opts *o = s->o;
	struct lsa *L = s->lsa;
	uint32_t nc = L->doc.n_chunks;
	size_t qlen = 0;
	int rc;

	if (o->by == FM_LSA_BY_INDEX) {
		const struct fm_index *ix = L->ix;
		size_t elt = ix->info.dtype == FM_VEC_F16 ? 2 : 4;
		if ((rc = build_query(s, &qlen, err)) != FM_OK)
			return rc;
		*subject = o->encoder != NULL ? o->encoder : o->index;
		if ((rc = fm_qenc_encode(L->qenc, L->query, qlen, L->qvec, err)) != FM_OK)
			return rc;
		fm_score(L->scores, L->qvec, (const uint8_t *)ix->vecs + L->doc.first * ix->info.dim * elt,
		    (enum fm_vec_type)ix->info.dtype, nc, ix->info.dim);
	} else
		fm_lsa_baseline_scores(o->by, nc, &L->rng, L->scores);
	{
		uint32_t *ntok = L->chosen;   /* borrowed as the token counts, rewritten below */
		for (uint32_t c = 0; c < nc; c++)
			ntok[c] = L->doc.start[c + 1] - L->doc.start[c];
		*subject = NULL;
		rc = fm_lsa_choose(&L->policy, &L->doc, ntok, L->n_pages,
		    L->page_first != NULL ? L->page_first : NULL, L->scores, L->slots.n_slots, L->sel,
		    &L->n_sel, err);
		if (rc != FM_OK)
			return rc;
	}
	for (uint64_t i = 0; i < L->n_sel; i++)
		L->chosen[i] = (uint32_t)L->sel[i].id;
	return FM_OK;
}

/* Pages the chosen set in: only the chunks that arrive are copied. */
static int
install(struct state *s, struct fm_err *err)
{
	struct lsa *L = s->lsa;
	uint32_t n_moves = fm_lsa_slots_update(&L->slots, L->chosen, (uint32_t)L->n_sel, L->moves);
	int rc;

	for (uint32_t i = 0; i < n_moves; i++) {
		uint32_t c = L->moves[i].chunk, len = L->doc.start[c + 1] - L->doc.start[c];
		if ((rc = to_store(s, L->moves[i].slot * L->slots.slot_len,
		    L->head + L->doc.start[c], len, err)) != FM_OK)
			return rc;
	}
	L->win_moves = n_moves;
	L->n_prefix = fm_lsa_rows(&L->slots, &L->doc, L->head, L->n_tail, L->rows) - L->n_tail;
#ifdef FM_CUDA
	if (s->gpu != NULL)
		return fm_gpu_fwd_set_rows(s->gpu, L->rows, L->n_prefix + L->n_tail, err);
#endif
	return FM_OK;
}

/* Why a chunk is resident, for the audit: the rule that keeps it whatever the scores say first. */
static const char *
reason(uint32_t reasons)
{
	if (reasons == 0)
		return "select";
	if (reasons & FM_WHY_SINK)
		return "sink";
	if (reasons & FM_WHY_RECENT)
		return "recent";
	return fm_reason_name(reasons);
}

static int
audit_write_window(struct state *s, const char **subject, struct fm_err *err)
{
	const struct fm_decode_opts *o = s->o;
	struct lsa *L = s->lsa;
	FILE *f = L->audit.f;
	double recall = 0;

	if (L->win_steps == 0)
		return FM_OK;
	if (o->audit_attention && L->mass_total > 0) {
		for (uint64_t i = 0; i < L->n_sel; i++)
			recall += L->mass[L->sel[i].id];
		recall /= L->mass_total;
		L->recall_sum += recall;
		L->recall_windows++;
	}
	if (L->audit_open) {
		fprintf(f, "{\"window\":%u,\"pos\":%u,\"steps\":%u,\"copied_chunks\":%u,\"query\":",
		    L->window, L->win_start, L->win_steps, L->win_moves);
		if (L->query != NULL)
			fm_json_string(f, L->query, strlen(L->query));
		else
			fputs("null", f);
		fputs(",\"resident\":[", f);
		for (uint64_t i = 0; i < L->n_sel; i++) {
			const struct fm_selected *e = &L->sel[i];
			fprintf(f, "%s[%llu,", i ? "," : "", (unsigned long long)(e->id + L->doc.first));
			if (isfinite(e->score))
				fprintf(f, "%.6g", e->score);
			else
				fputs("null", f);
			fprintf(f, ",\"%s\"]", reason(e->reasons));
		}
		fputc(']', f);
		if (o->audit_attention && L->mass_total > 0) {
			bool first = true;
			fprintf(f, ",\"recall\":%.6f,\"attention\":[", recall);
			for (uint32_t c = 0; c < L->doc.n_chunks; c++) {
				double m = L->mass[c] / L->mass_total;
				if (m < AUDIT_MASS_MIN)
					continue;
				fprintf(f, "%s[%llu,%.6f,%s]", first ? "" : ",",
				    (unsigned long long)(c + L->doc.first), m,
				    L->slots.chunk_slot[c] >= 0 ? "true" : "false");
				first = false;
			}
			fputc(']', f);
		}
		if (o->audit_dense)
			fprintf(f, ",\"top1\":%.6f,\"kl\":%.6g", (double)L->top1_win / L->win_steps,
			    L->kl_win / L->win_steps);
		if (fputs("}\n", f) == EOF) {
			*subject = o->audit;
			return fm_err_errno(err, FM_EIO, errno ? errno : EIO, "write error");
		}
	}
	memset(L->mass, 0, L->doc.n_chunks * sizeof *L->mass);
	L->mass_total = 0;
	L->kl_win = 0;
	L->top1_win = 0;
	return FM_OK;
}

/* A new window: the audit of the last one, a fresh choice, the copies. */
static int
new_window(struct state *s, uint32_t pos, const char **subject, struct fm_err *err)
{
	struct lsa *L = s->lsa;
	int rc;
	bool first = L->win_steps == 0 && L->window == 0;

	if ((rc = audit_write_window(s, subject, err)) != FM_OK)
		return rc;
	if (!first)
		L->window++;
	L->win_start = pos;
	L->win_steps = 0;
	L->win_moves = 0;
	if (L->ix == NULL && s->o->by == FM_LSA_BY_INDEX)
		return FM_OK;   /* --select without an index: the set stays */
	L->reselections += !first;
	if ((rc = choose(s, subject, err)) != FM_OK)
		return rc;
	return install(s, err);
}

/*
 * After the dense prefill: the mirror holds every position.  The store is
 * set up (on a GPU the prefill's cache is given back first), BOS and the
 * question are copied to their rows, and the first resident set comes
 * from the question or from --select.
 */
static int
lsa_start(struct state *s, const char **subject, struct fm_err *err)
{
	const struct fm_decode_opts *o = s->o;
	const struct fm_hparams *hp = &s->m->hp;
	struct lsa *L = s->lsa;
	uint32_t n_rows = L->fixed + L->head + L->n_tail;
	int rc;

#ifdef FM_CUDA
	if (s->gpu != NULL) {
		if ((!s->layered && (rc = fm_gpu_fwd_kv_get(s->gpu, &s->kv, 0, s->n_prompt, err)) != FM_OK) ||
		    (rc = fm_gpu_fwd_set_store(s->gpu, n_rows, n_rows, err)) != FM_OK)
			return rc;
	} else
#endif
	if ((rc = fm_kv_init(&L->store, o->kv_type, hp->n_layer, n_rows, hp->n_head_kv, hp->head_dim,
	    err)) != FM_OK)
		return rc;
	if (L->head && (rc = to_store(s, L->fixed, 0, L->head, err)) != FM_OK)
		return rc;
	if ((rc = to_store(s, L->fixed + L->head, L->doc_end, s->n_prompt - L->doc_end, err)) != FM_OK)
		return rc;
	if (o->select != NULL) {   /* read by lsa_open() */
		L->win_start = s->n_prompt;
		return install(s, err);
	}
	return new_window(s, s->n_prompt, subject, err);
}

/*
 * --audit-attention: the probe sees each layer's query and measures, over
 * the mirror's document keys, the softmax mass each chunk would get from
 * dense attention, summed over heads and layers.  Only shares within the
 * document are kept, so the keys outside it need not be read.
 */
static void
probe(void *arg, uint32_t layer, const float *q, uint32_t n)
{
	struct state *s = arg;
	struct lsa *L = s->lsa;
	const struct fm_hparams *hp = &s->m->hp;
	uint32_t hd = hp->head_dim, g = hp->n_head / hp->n_head_kv, D = L->doc.n_tokens;
	float key[4096], scale = 1.0f / sqrtf((float)hd);   /* head_dim <= 4096 (model.c) */

	if (n != 1 || D == 0 || hd > 4096)
		return;
	for (uint32_t h = 0; h < hp->n_head; h++) {
		const float *qh = q + (size_t)h * hd;
		float mx = -INFINITY;
		double sum = 0;
		for (uint32_t t = 0; t < D; t++) {
			float d = 0;
			fm_kv_read(&s->kv, 'k', layer, h / g, L->head + t, 1, key);
			for (uint32_t i = 0; i < hd; i++)
				d += qh[i] * key[i];
			L->probe_scores[t] = d * scale;
			if (L->probe_scores[t] > mx)
				mx = L->probe_scores[t];
		}
		for (uint32_t t = 0; t < D; t++)
			sum += (L->probe_scores[t] = expf(L->probe_scores[t] - mx));
		for (uint32_t c = 0; c < L->doc.n_chunks; c++) {
			double m = 0;
			for (uint32_t t = L->doc.start[c]; t < L->doc.start[c + 1]; t++)
				m += L->probe_scores[t];
			L->mass[c] += m / sum;
		}
		L->mass_total += 1;
	}
}

static double
kl_divergence(const float *p_logits, const float *q_logits, uint32_t n)
{
	double mp = -INFINITY, mq = -INFINITY, zp = 0, zq = 0, kl = 0;

	for (uint32_t i = 0; i < n; i++) {
		if (p_logits[i] > mp)
			mp = p_logits[i];
		if (q_logits[i] > mq)
			mq = q_logits[i];
	}
	for (uint32_t i = 0; i < n; i++) {
		zp += exp(p_logits[i] - mp);
		zq += exp(q_logits[i] - mq);
	}
	for (uint32_t i = 0; i < n; i++) {
		double lp = p_logits[i] - mp - log(zp), lq = q_logits[i] - mq - log(zq);
		kl += exp(lp) * (lp - lq);
	}
	return kl > 0 ? kl : 0;
}

/*
 * One decode step of the sparse model: token id at pos, its K and V in its
 * tail row, attention over the resident rows.  With next and no logits
 * wanted, only the argmax comes back from a GPU.
 */
static int
lsa_eval(struct state *s, int32_t id, uint32_t pos, int32_t *next, struct fm_err *err)
{
	struct lsa *L = s->lsa;
	uint32_t tail = pos - L->doc_end, wrow = L->fixed + L->head + tail;
	uint32_t n_keys = L->n_prefix + tail + 1;
	int rc;

	L->steps++;
	L->win_steps++;
	L->resident_sum += (double)n_keys / (pos + 1);
#ifdef FM_CUDA
	if (s->gpu != NULL)
		return fm_gpu_fwd_eval_rows(s->gpu, id, pos, wrow, n_keys, next != NULL ? NULL : s->logits,
		    next, err);
#endif
	(void)next;
	if ((rc = fm_cpu_eval_rows(s->cpu, &L->store, id, pos, wrow, L->rows, n_keys, s->logits,
	    err)) != FM_OK)
		return rc;
	if (s->o->audit_dense) {
		/* The dense model on the same token, its cache the mirror. */
		fm_cpu_set_probe(s->cpu, NULL, NULL);
		if ((rc = fm_cpu_eval(s->cpu, &s->kv, &id, 1, pos, L->dense_logits, false, err)) != FM_OK)
			return rc;
		if (s->o->audit_attention)
			fm_cpu_set_probe(s->cpu, probe, s);
		double kl = kl_divergence(L->dense_logits, s->logits, s->m->hp.n_vocab);
		bool same = fm_argmax(L->dense_logits, s->m->hp.n_vocab) ==
		    fm_argmax(s->logits, s->m->hp.n_vocab);
		L->kl_win += kl;
		L->kl_sum += kl;
		L->top1_win += same;
		L->top1_sum += same;
	}
	return FM_OK;
}

/* Keeps the generated text for the next query. */
static int
lsa_emitted(struct state *s, const char *p, size_t n, struct fm_err *err)
{
	struct lsa *L = s->lsa;

	if (L->gen_len + n + 1 > L->gen_cap) {
		size_t c = L->gen_cap ? L->gen_cap : 4096;
		char *g;
		while (c < L->gen_len + n + 1)
			c *= 2;
		if ((g = realloc(L->gen, c)) == NULL)
			return fm_err_errno(err, FM_EIO, errno, "cannot allocate");
		L->gen = g;
		L->gen_cap = c;
	}
	memcpy(L->gen + L->gen_len, p, n);
	L->gen_len += n;
	L->gen[L->gen_len] = '\0';
	return FM_OK;
}

static int
setup(struct state *s, const char **subject, struct fm_err *err)
{
	const struct fm_decode_opts *o = s->o;
	struct device dev;
	uint32_t n_ctx, n_pos, n_prompt;
	int rc;

	*subject = o->device;
	if ((rc = parse_device(o->device, &dev, err)) != FM_OK)
		return rc;

	*subject = o->model;
	if ((s->m = fm_model_load(o->model, err)) == NULL)
		return err->status;
	if ((s->tok = fm_tok_from_gguf(s->m->gguf, err)) == NULL)
		return err->status;
	if (fm_tok_kind(s->tok) != FM_TOK_LLAMA)
		return fm_err_set(err, FM_EDATA, "tokenizer '%s' is not supported, only 'llama'",
		    fm_tok_kind_name(s->tok));
	if (fm_tok_n_vocab(s->tok) != s->m->hp.n_vocab)
		return fm_err_set(err, FM_EDATA,
		    "tokenizer has %u tokens but token_embd.weight has %u rows",
		    fm_tok_n_vocab(s->tok), s->m->hp.n_vocab);

	if ((rc = read_prompt(o, &s->text, &s->text_len, subject, err)) != FM_OK)
		return rc;
	s->shown = s->text;
	s->shown_len = s->text_len;
	if (o->chunks != NULL) {
		if ((s->lsa = calloc(1, sizeof *s->lsa)) == NULL)
			return fm_err_errno(err, FM_EIO, errno, "cannot allocate");
		if ((rc = doc_context(s, subject, err)) != FM_OK)
			return rc;
		n_prompt = s->n_prompt;
		goto context;
	}
	*subject = o->prompt_file != NULL ? o->prompt_file : o->prompt != NULL ? "-p" : "(stdin)";
	if ((rc = fm_tok_encode(s->tok, s->text, s->text_len, FM_TOK_ADD_SPECIAL, &s->prompt,
	    err)) != FM_OK)
		return rc;
	if (s->prompt.n > FM_DECODE_MAX_CTX)
		return fm_err_set(err, FM_EUSAGE, "the prompt has %zu tokens, more than %u",
		    s->prompt.n, FM_DECODE_MAX_CTX);
	n_prompt = s->prompt.n > 0 ? (uint32_t)s->prompt.n : 1;
	if ((s->ids = malloc((size_t)n_prompt * sizeof *s->ids)) == NULL)
		return fm_err_errno(err, FM_EIO, errno, "cannot allocate");
	/* An empty prompt is not an error: generation starts from BOS alone. */
	if (s->prompt.n == 0) {
		if (fm_tok_bos(s->tok) < 0)
			return fm_err_set(err, FM_EDATA,
			    "the prompt is empty and the model has no BOS token to start from");
		s->ids[0] = fm_tok_bos(s->tok);
	} else
		memcpy(s->ids, s->prompt.ids, (size_t)n_prompt * sizeof *s->ids);
	s->n_prompt = n_prompt;
context:
	n_ctx = o->n_ctx != 0 ? o->n_ctx : s->m->hp.n_ctx_train;
	/* A document sets the context unless -c says otherwise. */
	if (o->chunks != NULL && o->n_ctx == 0 && n_prompt + (uint64_t)o->n_new > n_ctx)
		n_ctx = n_prompt + o->n_new > FM_DECODE_MAX_CTX ? FM_DECODE_MAX_CTX :
		    n_prompt + o->n_new;
	if (n_prompt > n_ctx) {
		*subject = o->n_ctx != 0 ? "--ctx" : o->model;
		return fm_err_set(err, FM_EUSAGE,
		    "the prompt has %u tokens, more than the context of %u", n_prompt, n_ctx);
	}
	/* The last new token is never fed back, so it needs no position. */
	n_pos = n_prompt + (o->n_new > 0 ? o->n_new - 1 : 0);
	if (n_pos > n_ctx || n_pos < n_prompt)
		n_pos = n_ctx;

	s->n_pos = n_pos;
	if (s->lsa != NULL && o->dense) {
		lsa_free(s->lsa);   /* the gate off: the document was only the context */
		s->lsa = NULL;
	}
	if (s->lsa != NULL && (rc = lsa_open(s, n_pos, subject, err)) != FM_OK)
		return rc;
	*subject = o->device;
	if ((rc = open_backend(s, &dev, err)) != FM_OK)
		return rc;
	*subject = NULL;
	if ((s->logits = malloc((size_t)(o->trace != NULL ? s->batch : 1) * s->m->hp.n_vocab *
	    sizeof(float))) == NULL)
		return fm_err_errno(err, FM_EIO, errno, "cannot allocate");
	if ((rc = fm_sampler_init(&s->smp, s->m->hp.n_vocab, o->temp, o->top_k, o->top_p,
	    o->seed, err)) != FM_OK)
		return rc;
	if (o->trace != NULL) {
		*subject = o->trace;
		if ((rc = fm_out_open(&s->trace, o->trace, err)) != FM_OK)
			return rc;
		s->trace_open = true;
	}
	if (o->stats_json != NULL) {
		*subject = o->stats_json;
		if ((rc = fm_out_open(&s->stats_js, o->stats_json, err)) != FM_OK)
			return rc;
		s->stats_open = true;
	}
	/* Only once every input has been accepted: a refused run says one thing. */
	if (n_ctx > s->m->hp.n_ctx_train)
		fm_warn(o->progname, NULL,
		    "warning: context of %u tokens exceeds the model's trained length of %u",
		    n_ctx, s->m->hp.n_ctx_train);
	if (o->stats) {
		const struct fm_hparams *hp = &s->m->hp;
		const char *wt = fm_ggml_type_name(s->m->wtype);
		fprintf(stderr, "%s: device: %s\n", o->progname, s->device);
		fprintf(stderr, "%s: model: llama, %u layers, dim %u, %u heads, %u kv heads, "
		    "ffn %u, vocab %u, %s weights, %llu weight bytes per token\n", o->progname,
		    hp->n_layer, hp->dim, hp->n_head, hp->n_head_kv, hp->ffn_dim, hp->n_vocab,
		    wt != NULL ? wt : "?", (unsigned long long)s->m->weight_bytes);
	}
	*subject = NULL;
	return FM_OK;
}

static int
not_finite(struct state *s, uint32_t pos, const char **subject, struct fm_err *err)
{
	*subject = s->o->model;
	return fm_err_set(err, FM_EDATA, "logits at position %u are not finite", pos);
}

static int
finite_or_fail(struct state *s, const float *logits, uint32_t pos, const char **subject,
    struct fm_err *err)
{
	if (all_finite(logits, s->m->hp.n_vocab))
		return FM_OK;
	return not_finite(s, pos, subject, err);
}

static int
trace_or_fail(struct state *s, uint32_t pos, int32_t token, int32_t next, const float *logits,
    const char **subject, struct fm_err *err)
{
	if (!s->trace_open)
		return FM_OK;
	if (trace_line(s->trace.f, pos, token, next, logits, s->m->hp.n_vocab) != 0) {
		*subject = s->o->trace;
		return fm_err_errno(err, FM_EIO, errno ? errno : EIO, "write error");
	}
	return FM_OK;
}

static const float *
lsa_dense_logits(struct state *s)
{
	return s->lsa->dense_logits;
}

/* The last window's audit line, then the audit file is committed. */
static int
lsa_finish(struct state *s, const char **subject, struct fm_err *err)
{
	struct lsa *L = s->lsa;
	int rc;

	if ((rc = audit_write_window(s, subject, err)) != FM_OK)
		return rc;
	if (L->audit_open) {
		L->audit_open = false;
		*subject = s->o->audit;
		if ((rc = fm_out_commit(&L->audit, err)) != FM_OK)
			return rc;
		*subject = NULL;
	}
	return FM_OK;
}

static double
ratio(double a, double b)
{
	return b > 0 ? a / b : 0;
}

/*
 * -v and --stats-json: speeds, and the KV cache a dense decoder would hold
 * against what was held on the device in prefill and in decode.
 */
static int
report(struct state *s, uint32_t pos, double t_prefill, double t_decode, const char **subject,
    struct fm_err *err)
{
	const struct fm_decode_opts *o = s->o;
	const struct fm_hparams *hp = &s->m->hp;
	struct lsa *L = s->lsa;
	uint32_t n_dec = pos - s->n_prompt;   /* tokens fed back */
	uint64_t pb = 2ull * hp->n_layer * hp->n_head_kv * hp->head_dim * (o->kv_type == FM_KV_F16 ? 2 : 4);
	uint64_t full = (uint64_t)s->n_pos * pb, peak_pre, peak_dec;   /* as allocated, like the store */
	double pre_tps = s->n_prompt / (t_prefill > 0 ? t_prefill : 1e-9);
	double dec_tps = n_dec / (t_decode > 0 ? t_decode : 1e-9);
	double resident = L != NULL && L->steps > 0 ? L->resident_sum / L->steps : 1;
	FILE *js;
	int rc;

	peak_pre = L != NULL ? s->prefill_kv : full;
	peak_dec = L != NULL ? (uint64_t)(L->fixed + L->head + L->n_tail) * pb : full;
	if (o->stats) {
		fprintf(stderr, "%s: prefill: %u tokens in %.3f s, %.1f tokens/s\n", o->progname,
		    s->n_prompt, t_prefill, pre_tps);
		fprintf(stderr, "%s: decode: %u tokens in %.3f s, %.1f tokens/s\n", o->progname,
		    n_dec, t_decode, dec_tps);
		fprintf(stderr, "%s: kv cache: %s, %llu bytes resident, %llu bytes full cache, "
		    "%u positions\n", o->progname, fm_kv_type_name(o->kv_type),
		    (unsigned long long)peak_dec, (unsigned long long)full, s->n_pos);
		if (L != NULL) {
			fprintf(stderr, "%s: lsa: budget %llu tokens in %u slots of %u, %u of %u chunks "
			    "resident, interval %u, %llu re-selections, %llu bytes copied to the store\n",
			    o->progname, (unsigned long long)L->budget, L->slots.n_slots,
			    L->slots.slot_len, L->slots.n_resident, L->doc.n_chunks, o->interval,
			    (unsigned long long)L->reselections, (unsigned long long)L->copied);
			fprintf(stderr, "%s: kv peak on %s: prefill %llu bytes (%.1f%% of the full cache), "
			    "decode %llu bytes (%.1f%%); mean resident fraction %.3f\n", o->progname,
			    s->device, (unsigned long long)peak_pre, 100 * ratio(peak_pre, full),
			    (unsigned long long)peak_dec, 100 * ratio(peak_dec, full), resident);
			if (L->recall_windows > 0)
				fprintf(stderr, "%s: audit: attention-mass recall %.4f (mean of %u windows)\n",
				    o->progname, L->recall_sum / L->recall_windows, L->recall_windows);
			if (o->audit_dense && L->steps > 0)
				fprintf(stderr, "%s: audit: top-1 agreement with dense %.4f, mean KL %.6g "
				    "over %llu steps\n", o->progname, (double)L->top1_sum / L->steps,
				    L->kl_sum / L->steps, (unsigned long long)L->steps);
		}
#ifdef FM_CUDA
		if (s->gpu != NULL)
			fprintf(stderr, "%s: gpu memory: %llu bytes (kv cache %llu)\n", o->progname,
			    (unsigned long long)fm_gpu_fwd_bytes(s->gpu),
			    (unsigned long long)fm_gpu_fwd_kv_bytes(s->gpu));
#endif
	}
	if (!s->stats_open)
		return FM_OK;
	js = s->stats_js.f;
	fprintf(js, "{\"attention\":\"%s\",\"device\":", L != NULL ? "lsa" : "dense");
	fm_json_string(js, s->device, strlen(s->device));
	fprintf(js, ",\"prefill_tokens\":%u,\"prefill_seconds\":%.6f,\"prefill_tokens_per_s\":%.3f,"
	    "\"decode_tokens\":%u,\"decode_seconds\":%.6f,\"decode_tokens_per_s\":%.3f,"
	    "\"kv_type\":\"%s\",\"full_cache_bytes\":%llu,\"prefill_kv_bytes\":%llu,"
	    "\"decode_kv_bytes\":%llu,\"prefill_kv_ratio\":%.6f,\"decode_kv_ratio\":%.6f",
	    s->n_prompt, t_prefill, pre_tps, n_dec, t_decode, dec_tps, fm_kv_type_name(o->kv_type),
	    (unsigned long long)full, (unsigned long long)peak_pre, (unsigned long long)peak_dec,
	    ratio(peak_pre, full), ratio(peak_dec, full));
	if (L != NULL) {
		fprintf(js, ",\"document_tokens\":%u,\"chunks\":%u,\"budget_tokens\":%llu,"
		    "\"slots\":%u,\"slot_tokens\":%u,\"interval\":%u,\"reselections\":%llu,"
		    "\"copied_bytes\":%llu,\"resident_fraction\":%.6f", L->doc.n_tokens,
		    L->doc.n_chunks, (unsigned long long)L->budget, L->slots.n_slots,
		    L->slots.slot_len, o->interval, (unsigned long long)L->reselections,
		    (unsigned long long)L->copied, resident);
		if (L->recall_windows > 0)
			fprintf(js, ",\"attention_recall\":%.6f", L->recall_sum / L->recall_windows);
		if (o->audit_dense && L->steps > 0)
			fprintf(js, ",\"top1_agreement\":%.6f,\"mean_kl\":%.8g",
			    (double)L->top1_sum / L->steps, L->kl_sum / L->steps);
	}
	fputs("}\n", js);
	s->stats_open = false;
	*subject = o->stats_json;
	if ((rc = fm_out_commit(&s->stats_js, err)) != FM_OK)
		return rc;
	*subject = NULL;
	return FM_OK;
}

int
run_decode(const struct fm_decode_opts *o, const char **subject, struct fm_err *err)
{
	struct state s;
	uint32_t n_prompt, n_vocab, pos, n_gen = 0;
	int32_t prev, cur = -1;
	double t0, t1, t2;
	const char *piece;
	size_t plen;
	int rc;

	memset(&s, 0, sizeof s);
	s.o = o;
	*subject = NULL;
	if ((rc = setup(&s, subject, err)) != FM_OK)
		goto done;
	n_prompt = s.n_prompt;
	n_vocab = s.m->hp.n_vocab;

	if ((rc = out_write(s.shown, s.shown_len, subject, err)) != FM_OK)
		goto done;

	/* Prefill: all prompt tokens, in batches; logits of every position only for the trace. */
	t0 = fm_now();
#ifdef FM_CUDA
	if (s.layered) {
		int32_t nx = -1;
		if ((rc = fm_gpu_fwd_prefill_layers(s.gpu, s.ids, n_prompt, &s.kv, s.argmax_on_device ?
		    NULL : s.logits, s.argmax_on_device ? &nx : NULL, &s.prefill_kv, err)) != FM_OK)
			goto done;
		if (s.argmax_on_device) {
			if (nx < 0 && (rc = not_finite(&s, n_prompt - 1, subject, err)) != FM_OK)
				goto done;
			cur = o->n_new > 0 ? nx : -1;
		} else {
			if ((rc = finite_or_fail(&s, s.logits, n_prompt - 1, subject, err)) != FM_OK)
				goto done;
			cur = o->n_new > 0 ? fm_sample(&s.smp, s.logits) : -1;
		}
	}
#endif
	for (uint32_t p0 = 0; p0 < n_prompt && !s.layered; p0 += s.batch) {
		uint32_t n = n_prompt - p0 < s.batch ? n_prompt - p0 : s.batch;
		bool all = s.trace_open, last = p0 + n == n_prompt;
		if (s.argmax_on_device && last) {
			if ((rc = eval(&s, s.ids + p0, n, p0, false, &cur, err)) != FM_OK)
				goto done;
			if (cur < 0 && (rc = not_finite(&s, n_prompt - 1, subject, err)) != FM_OK)
				goto done;
			if (o->n_new == 0)
				cur = -1;
			continue;
		}
		if ((rc = eval(&s, s.ids + p0, n, p0, all, NULL, err)) != FM_OK)
			goto done;
		for (uint32_t i = all ? 0 : n - 1; i < n; i++) {
			const float *lg = s.logits + (size_t)(all ? i : 0) * n_vocab;
			uint32_t p = p0 + i;
			if ((rc = finite_or_fail(&s, lg, p, subject, err)) != FM_OK)
				goto done;
			if (p + 1 < n_prompt)
				rc = trace_or_fail(&s, p, s.ids[p], s.ids[p + 1], lg,
				    subject, err);
			else {
				cur = o->n_new > 0 ? fm_sample(&s.smp, lg) : -1;
				rc = trace_or_fail(&s, p, s.ids[p], cur, lg, subject, err);
			}
			if (rc != FM_OK)
				goto done;
		}
	}
#ifdef FM_CUDA
	if (!s.layered)
		s.prefill_kv = s.gpu != NULL ? fm_gpu_fwd_kv_bytes(s.gpu) : fm_kv_bytes(&s.kv);
#else
	s.prefill_kv = fm_kv_bytes(&s.kv);
#endif
	if (s.lsa != NULL) {
		if ((rc = lsa_start(&s, subject, err)) != FM_OK)
			goto done;
		if (o->audit_attention)
			fm_cpu_set_probe(s.cpu, probe, &s);
	}
	t1 = fm_now();

	/* Decode: emit cur, feed it back, choose the next, until a limit. */
	prev = s.ids[n_prompt - 1];
	pos = n_prompt;
	while (cur >= 0) {
		if (cur == fm_tok_eos(s.tok))
			break;
		if ((rc = token_text(&s, prev, cur, &piece, &plen, err)) != FM_OK)
			goto done;
		if ((rc = out_write(piece, plen, subject, err)) != FM_OK)
			goto done;
		if (s.lsa != NULL && (rc = lsa_emitted(&s, piece, plen, err)) != FM_OK)
			goto done;
		if (++n_gen >= o->n_new)
			break;
		if (pos >= s.n_pos) {
			fm_warn(o->progname, NULL, "warning: the context of %u tokens is full after %u new tokens",
			    s.n_pos, n_gen);
			break;
		}
		prev = cur;
		/* A new window every --interval tokens: re-select, copy what changed. */
		if (s.lsa != NULL && pos > n_prompt && (pos - n_prompt) % o->interval == 0 &&
		    (rc = new_window(&s, pos, subject, err)) != FM_OK)
			goto done;
		if (s.argmax_on_device) {
			rc = s.lsa != NULL ? lsa_eval(&s, prev, pos, &cur, err) :
			    eval(&s, &prev, 1, pos, false, &cur, err);
			if (rc != FM_OK)
				goto done;
			if (cur < 0 && (rc = not_finite(&s, pos, subject, err)) != FM_OK)
				goto done;
			pos++;
			continue;
		}
		rc = s.lsa != NULL ? lsa_eval(&s, prev, pos, NULL, err) :
		    eval(&s, &prev, 1, pos, false, NULL, err);
		if (rc != FM_OK)
			goto done;
		if ((rc = finite_or_fail(&s, s.logits, pos, subject, err)) != FM_OK)
			goto done;
		/* --audit-dense: the dense model's choice drives, so both see the same tokens. */
		cur = fm_sample(&s.smp, o->audit_dense && s.lsa != NULL ? lsa_dense_logits(&s) :
		    s.logits);
		if ((rc = trace_or_fail(&s, pos, prev, cur, s.logits, subject, err)) != FM_OK)
			goto done;
		pos++;
	}
	t2 = fm_now();
	if ((rc = out_write("\n", 1, subject, err)) != FM_OK)
		goto done;
	if (s.trace_open) {
		s.trace_open = false;
		*subject = o->trace;
		if ((rc = fm_out_commit(&s.trace, err)) != FM_OK)
			goto done;
		*subject = NULL;
	}
	if (s.lsa != NULL && (rc = lsa_finish(&s, subject, err)) != FM_OK)
		goto done;
	if (o->stats || o->stats_json != NULL) {
		if ((rc = report(&s, pos, t1 - t0, t2 - t1, subject, err)) != FM_OK)
			goto done;
	}
	rc = FM_OK;
done:
	state_free(&s);
	return rc;
}
