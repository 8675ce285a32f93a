/*
 * lsa_decode.c - Lookahead Sparse Attention in fm-decode: the document as
 * context, the index and query encoder, the store of chunk slots filled
 * from the host mirror, a window every --interval tokens (a new query, a
 * new choice, only the arriving chunks copied), the sparse decode step, and
 * the audits that measure it against dense attention.  decode.c calls these
 * around its dense prefill and its decode loop; see decode_int.h.
 */
#include "decode_int.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "qenc.h"

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
	uint32_t *chunk_tokens;       /* (n_chunks) each chunk's own tokens, what the budget counts */
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
	float *q_host;                /* (n_layer, n_head * head_dim): a GPU step's queries */
	float *dense_logits;          /* --audit-dense */
	double kl_win, kl_sum;
	uint32_t top1_win, top1_sum;
};

void
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
	free(L->chunk_tokens);
	free(L->moves);
	free(L->query);
	free(L->gen);
	free(L->mass);
	free(L->probe_scores);
	free(L->q_host);
	free(L->dense_logits);
	free(L);
}

static FILE *
open_input(const char *path)
{
	return strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
}

/* A path as messages name it: "-" is standard input. */
static const char *
shown(const char *path)
{
	return strcmp(path, "-") == 0 ? "(stdin)" : path;
}

/*
 * The context of a document: [BOS] + its chunks' tokens + the question's.
 * Only the question is printed before the continuation.
 */
int
lsa_doc_context(struct state *s, const char **subject, struct fm_err *err)
{
	const struct fm_decode_opts *o = s->o;
	struct lsa *L;
	struct fm_tokens q = { 0 };
	FILE *f;
	int rc;

	if ((L = s->lsa = calloc(1, sizeof *s->lsa)) == NULL)
		return fm_err_errno(err, FM_EIO, errno, "cannot allocate");

	*subject = shown(o->chunks);
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
	free(L->doc.ids);   /* the context holds them now; the chunk boundaries are what stays */
	L->doc.ids = NULL;
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

	*subject = shown(o->select);
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
int
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
			    "chunk file)", shown(o->chunks));
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
	    (L->chunk_tokens = malloc((size_t)nc * sizeof *L->chunk_tokens)) == NULL ||
	    (L->moves = malloc((size_t)n_slots * sizeof *L->moves)) == NULL ||
	    (L->mass = calloc(nc, sizeof *L->mass)) == NULL ||
	    (L->ix != NULL && (L->qvec = malloc(L->ix->info.dim * sizeof *L->qvec)) == NULL))
		return fm_err_errno(err, FM_EIO, errno, "cannot allocate");
	for (uint32_t c = 0; c < nc; c++)
		L->chunk_tokens[c] = L->doc.start[c + 1] - L->doc.start[c];
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
	*subject = NULL;
	if ((rc = fm_lsa_choose(&L->policy, &L->doc, L->chunk_tokens, L->n_pages, L->page_first,
	    L->scores, L->slots.n_slots, L->sel, &L->n_sel, err)) != FM_OK)
		return rc;
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
int
lsa_new_window(struct state *s, uint32_t pos, const char **subject, struct fm_err *err)
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
int
lsa_start(struct state *s, const char **subject, struct fm_err *err)
{
	const struct fm_decode_opts *o = s->o;
	const struct fm_hparams *hp = &s->m->hp;
	struct lsa *L = s->lsa;
	uint32_t n_rows = L->fixed + L->head + L->n_tail;
	int rc;

#ifdef FM_CUDA
	if (s->gpu != NULL && o->audit_attention) {
		size_t qd = (size_t)hp->n_head * hp->head_dim;
		if ((L->q_host = malloc(hp->n_layer * qd * sizeof *L->q_host)) == NULL)
			return fm_err_errno(err, FM_EIO, errno, "cannot allocate");
		fm_gpu_fwd_probe(s->gpu, L->q_host);
	}
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
	return lsa_new_window(s, s->n_prompt, subject, err);
}

/*
 * --audit-attention: the probe sees each layer's query and measures, over
 * the mirror's document keys, the softmax mass each chunk would get from
 * dense attention, summed over heads and layers.  Only shares within the
 * document are kept, so the keys outside it need not be read.
 */
void
lsa_probe(void *arg, uint32_t layer, const float *q, uint32_t n)
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
int
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
	if (s->gpu != NULL) {
		const struct fm_hparams *hp = &s->m->hp;
		if ((rc = fm_gpu_fwd_eval_rows(s->gpu, id, pos, wrow, n_keys, next != NULL ? NULL :
		    s->logits, next, err)) != FM_OK)
			return rc;
		/* --audit-attention: the step's queries came back; the CPU measures them. */
		for (uint32_t l = 0; L->q_host != NULL && l < hp->n_layer; l++)
			lsa_probe(s, l, L->q_host + (size_t)l * hp->n_head * hp->head_dim, 1);
		return FM_OK;
	}
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
			fm_cpu_set_probe(s->cpu, lsa_probe, s);
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
int
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

const float *
lsa_dense_logits(struct state *s)
{
	return s->lsa->dense_logits;
}

/* The last window's audit line, then the audit file is committed. */
int
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

uint64_t
lsa_store_rows(const struct state *s)
{
	const struct lsa *L = s->lsa;

	return (uint64_t)L->fixed + L->head + L->n_tail;
}

void
lsa_report(struct state *s, const struct fm_kv_peaks *k, FILE *f, bool json)
{
	const struct fm_decode_opts *o = s->o;
	struct lsa *L = s->lsa;
	double resident = L->steps > 0 ? L->resident_sum / L->steps : 1;

	if (json) {
		fprintf(f, ",\"document_tokens\":%u,\"chunks\":%u,\"budget_tokens\":%llu,"
		    "\"slots\":%u,\"slot_tokens\":%u,\"interval\":%u,\"reselections\":%llu,"
		    "\"copied_bytes\":%llu,\"resident_fraction\":%.6f", L->doc.n_tokens,
		    L->doc.n_chunks, (unsigned long long)L->budget, L->slots.n_slots,
		    L->slots.slot_len, o->interval, (unsigned long long)L->reselections,
		    (unsigned long long)L->copied, resident);
		if (L->recall_windows > 0)
			fprintf(f, ",\"attention_recall\":%.6f", L->recall_sum / L->recall_windows);
		if (o->audit_dense && L->steps > 0)
			fprintf(f, ",\"top1_agreement\":%.6f,\"mean_kl\":%.8g",
			    (double)L->top1_sum / L->steps, L->kl_sum / L->steps);
		return;
	}
	fprintf(f, "%s: lsa: budget %llu tokens in %u slots of %u, %u of %u chunks "
	    "resident, interval %u, %llu re-selections, %llu bytes copied to the store\n",
	    o->progname, (unsigned long long)L->budget, L->slots.n_slots,
	    L->slots.slot_len, L->slots.n_resident, L->doc.n_chunks, o->interval,
	    (unsigned long long)L->reselections, (unsigned long long)L->copied);
	fprintf(f, "%s: kv peak on %s: prefill %llu bytes (%.1f%% of the full cache), "
	    "decode %llu bytes (%.1f%%); mean resident fraction %.3f\n", o->progname,
	    s->device, (unsigned long long)k->prefill, 100 * fm_ratio(k->prefill, k->full),
	    (unsigned long long)k->decode, 100 * fm_ratio(k->decode, k->full), resident);
	if (L->recall_windows > 0)
		fprintf(f, "%s: audit: attention-mass recall %.4f (mean of %u windows)\n",
		    o->progname, L->recall_sum / L->recall_windows, L->recall_windows);
	if (o->audit_dense && L->steps > 0)
		fprintf(f, "%s: audit: top-1 agreement with dense %.4f, mean KL %.6g "
		    "over %llu steps\n", o->progname, (double)L->top1_sum / L->steps,
		    L->kl_sum / L->steps, (unsigned long long)L->steps);
}
