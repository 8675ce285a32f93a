/*
 * decode.c - run_decode(), the body of fm-decode: model, tokenizer, prompt,
 * prefill in batches, then one token at a time until -n tokens, the end of
 * sequence token or a full context.  With a document, the sparse parts
 * (context, store, windows, audits) are in lsa_decode.c.  The text of each new token is written
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

#include "decode_int.h"
#include "json.h"

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
		bool audit_cpu = o->audit_dense;
		s->batch = s->n_prompt < GPU_BATCH ? s->n_prompt : GPU_BATCH;
		if (s->lsa != NULL && audit_cpu && !dev->automatic)
			return fm_err_set(err, FM_EUSAGE, "--audit-dense runs on the CPU (--device cpu)");
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
			snprintf(gerr.msg, sizeof gerr.msg, "--audit-dense runs on the CPU");
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

/*
 * A dense greedy step; on the GPU, run ahead: the steps of the next
 * positions, each fed the argmax of the one before, are queued up to
 * FM_GPU_AHEAD ahead of the one whose token is wanted now, so the GPU goes
 * on while the host prints.  *queued: the next position to queue.  Steps
 * queued past an end of sequence are wasted, never printed.
 */
static int
eval_ahead(struct state *s, int32_t id, uint32_t pos, uint32_t *queued, int32_t *next,
    struct fm_err *err)
{
#ifdef FM_CUDA
	if (s->gpu != NULL) {
		/* The positions a token is fed at: the last new token is not fed back. */
		uint64_t end = (uint64_t)s->n_prompt + s->o->n_new - 1;
		int rc;

		if (end > s->n_pos)
			end = s->n_pos;
		if (*queued == pos) {
			if ((rc = fm_gpu_fwd_queue(s->gpu, id, pos, err)) != FM_OK)
				return rc;
			++*queued;
		}
		while (*queued < end && *queued - pos < FM_GPU_AHEAD) {
			if ((rc = fm_gpu_fwd_queue(s->gpu, -1, *queued, err)) != FM_OK)
				return rc;
			++*queued;
		}
		return fm_gpu_fwd_take(s->gpu, next, err);
	}
#endif
	(void)queued;
	return eval(s, &id, 1, pos, false, next, err);
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
		if ((rc = lsa_doc_context(s, subject, err)) != FM_OK)
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
	uint32_t n_dec = pos - s->n_prompt;   /* tokens fed back */
	uint64_t pb = 2ull * hp->n_layer * hp->n_head_kv * hp->head_dim * (o->kv_type == FM_KV_F16 ? 2 : 4);
	struct fm_kv_peaks k = { .full = (uint64_t)s->n_pos * pb };   /* as allocated, like the store */
	double pre_tps = s->n_prompt / (t_prefill > 0 ? t_prefill : 1e-9);
	double dec_tps = n_dec / (t_decode > 0 ? t_decode : 1e-9);
	FILE *js;
	int rc;

	k.prefill = s->lsa != NULL ? s->prefill_kv : k.full;
	k.decode = s->lsa != NULL ? lsa_store_rows(s) * pb : k.full;
	if (o->stats) {
		fprintf(stderr, "%s: prefill: %u tokens in %.3f s, %.1f tokens/s\n", o->progname,
		    s->n_prompt, t_prefill, pre_tps);
		fprintf(stderr, "%s: decode: %u tokens in %.3f s, %.1f tokens/s\n", o->progname,
		    n_dec, t_decode, dec_tps);
		fprintf(stderr, "%s: kv cache: %s, %llu bytes resident, %llu bytes full cache, "
		    "%u positions\n", o->progname, fm_kv_type_name(o->kv_type),
		    (unsigned long long)k.decode, (unsigned long long)k.full, s->n_pos);
		if (s->lsa != NULL)
			lsa_report(s, &k, stderr, false);
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
	fprintf(js, "{\"attention\":\"%s\",\"device\":", s->lsa != NULL ? "lsa" : "dense");
	fm_json_string(js, s->device, strlen(s->device));
	fprintf(js, ",\"prefill_tokens\":%u,\"prefill_seconds\":%.6f,\"prefill_tokens_per_s\":%.3f,"
	    "\"decode_tokens\":%u,\"decode_seconds\":%.6f,\"decode_tokens_per_s\":%.3f,"
	    "\"kv_type\":\"%s\",\"full_cache_bytes\":%llu,\"prefill_kv_bytes\":%llu,"
	    "\"decode_kv_bytes\":%llu,\"prefill_kv_ratio\":%.6f,\"decode_kv_ratio\":%.6f",
	    s->n_prompt, t_prefill, pre_tps, n_dec, t_decode, dec_tps, fm_kv_type_name(o->kv_type),
	    (unsigned long long)k.full, (unsigned long long)k.prefill, (unsigned long long)k.decode,
	    fm_ratio(k.prefill, k.full), fm_ratio(k.decode, k.full));
	if (s->lsa != NULL)
		lsa_report(s, &k, js, true);
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
	uint32_t n_prompt, n_vocab, pos, n_gen = 0, queued;
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
		if (o->audit_attention && s.cpu != NULL)
			fm_cpu_set_probe(s.cpu, lsa_probe, &s);
	}
	t1 = fm_now();

	/* Decode: emit cur, feed it back, choose the next, until a limit. */
	prev = s.ids[n_prompt - 1];
	pos = queued = n_prompt;
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
		    (rc = lsa_new_window(&s, pos, subject, err)) != FM_OK)
			goto done;
		if (s.argmax_on_device) {
			rc = s.lsa != NULL ? lsa_eval(&s, prev, pos, &cur, err) :
			    eval_ahead(&s, prev, pos, &queued, &cur, err);
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
