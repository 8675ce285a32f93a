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
#include "io.h"
#include "model.h"
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
	char *text;          /* prompt text */
	size_t text_len;
	float *logits;       /* (batch, n_vocab) */
	char *piece;         /* decoded text scratch */
	size_t piece_len, piece_cap;
};

static void
state_free(struct state *s)
{
	if (s->trace_open)
		fm_out_abort(&s->trace);
	fm_cpu_free(s->cpu);
#ifdef FM_CUDA
	fm_gpu_fwd_free(s->gpu);
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
		s->batch = s->n_prompt < GPU_BATCH ? s->n_prompt : GPU_BATCH;
		s->gpu = fm_gpu_fwd_new(s->m, dev->index, s->batch, s->n_pos, o->kv_type,
		    o->trace != NULL, &gerr);
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

	n_ctx = o->n_ctx != 0 ? o->n_ctx : s->m->hp.n_ctx_train;
	if (n_prompt > n_ctx) {
		*subject = o->n_ctx != 0 ? "-c" : o->model;
		return fm_err_set(err, FM_EUSAGE,
		    "the prompt has %u tokens, more than the context of %u", n_prompt, n_ctx);
	}
	if (n_ctx > s->m->hp.n_ctx_train)
		fm_warn(o->progname, NULL,
		    "warning: context of %u tokens exceeds the model's trained length of %u",
		    n_ctx, s->m->hp.n_ctx_train);
	/* The last new token is never fed back, so it needs no position. */
	n_pos = n_prompt + (o->n_new > 0 ? o->n_new - 1 : 0);
	if (n_pos > n_ctx || n_pos < n_prompt)
		n_pos = n_ctx;

	s->n_pos = n_pos;
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

	if ((rc = out_write(s.text, s.text_len, subject, err)) != FM_OK)
		goto done;

	/* Prefill: all prompt tokens, in batches; logits of every position only for the trace. */
	t0 = fm_now();
	for (uint32_t p0 = 0; p0 < n_prompt; p0 += s.batch) {
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
		if (++n_gen >= o->n_new)
			break;
		if (pos >= s.n_pos) {
			fm_warn(o->progname, NULL, "warning: the context of %u tokens is full after %u new tokens",
			    s.n_pos, n_gen);
			break;
		}
		prev = cur;
		if (s.argmax_on_device) {
			if ((rc = eval(&s, &prev, 1, pos, false, &cur, err)) != FM_OK)
				goto done;
			if (cur < 0 && (rc = not_finite(&s, pos, subject, err)) != FM_OK)
				goto done;
			pos++;
			continue;
		}
		if ((rc = eval(&s, &prev, 1, pos, false, NULL, err)) != FM_OK)
			goto done;
		if ((rc = finite_or_fail(&s, s.logits, pos, subject, err)) != FM_OK)
			goto done;
		cur = fm_sample(&s.smp, s.logits);
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
	if (o->stats) {
		uint32_t n_dec = pos - n_prompt;   /* tokens fed back */
		const struct fm_hparams *hp = &s.m->hp;
		uint64_t used = 2 * (uint64_t)hp->n_layer * pos * hp->n_head_kv * hp->head_dim *
		    (o->kv_type == FM_KV_F16 ? 2 : 4);
		fprintf(stderr, "%s: prefill: %u tokens in %.3f s, %.1f tokens/s\n", o->progname,
		    n_prompt, t1 - t0, n_prompt / (t1 - t0 > 0 ? t1 - t0 : 1e-9));
		fprintf(stderr, "%s: decode: %u tokens in %.3f s, %.1f tokens/s\n", o->progname,
		    n_dec, t2 - t1, n_dec / (t2 - t1 > 0 ? t2 - t1 : 1e-9));
		fprintf(stderr, "%s: kv cache: %s, %llu bytes resident, %llu bytes full cache, "
		    "%u positions\n", o->progname, fm_kv_type_name(o->kv_type),
		    (unsigned long long)used, (unsigned long long)used, pos);
#ifdef FM_CUDA
		if (s.gpu != NULL)
			fprintf(stderr, "%s: gpu memory: %llu bytes (kv cache %llu)\n", o->progname,
			    (unsigned long long)fm_gpu_fwd_bytes(s.gpu),
			    (unsigned long long)fm_gpu_fwd_kv_bytes(s.gpu));
#endif
	}
	rc = FM_OK;
done:
	state_free(&s);
	return rc;
}
