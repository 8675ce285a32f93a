/*
 * test_decode_ref.c - the llama forward pass against an independent
 * reference: a plain-C transcription of llama2.c's run.c semantics (BOS = 1,
 * RMSNorm, adjacent-pair RoPE, GQA, SwiGLU, shared classifier) that reads
 * models/stories260K.bin, the llama2.c checkpoint, with its own loader and
 * double-precision sums.  The model code reads models/stories260K.gguf.
 *
 * About the weight layout: llama.cpp's HF converter permutes the rows of
 * attn_q/attn_k, because HF checkpoints rotate the two halves of a head
 * while llama.cpp's llama RoPE rotates adjacent pairs.  Its llama2.c
 * converter (examples/convert-llama2c-to-ggml, save_as_llama_model) copies
 * every tensor element by element with no permutation, since llama2.c
 * already rotates adjacent pairs.  So the reference needs no un-permuting;
 * the first test below checks that the GGUF's q/k bytes are the .bin's.
 *
 * Also: prefill in one batch against one token at a time, thread counts,
 * the F16 KV cache against F32, weights re-encoded as F16, BF16 and Q8_0,
 * the attention op over odd shapes against a naive softmax, and the sampler.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "gguf.h"
#include "kvcache.h"
#include "model.h"
#include "sample.h"
#include "tap.h"

#define REL_TOL 1e-4   /* logits: |got - ref| <= REL_TOL * max(|ref|, 1) */

/* ---- the reference: llama2.c's checkpoint and forward pass ---- */

struct ref {
	int dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len;
	float *data;       /* the whole file after the header */
	float *emb;        /* (vocab, dim) */
	float *rms_att;    /* (layer, dim) */
	float *wq;         /* (layer, dim, dim) */
	float *wk;         /* (layer, kv_dim, dim) */
	float *wv;         /* (layer, kv_dim, dim) */
	float *wo;         /* (layer, dim, dim) */
	float *rms_ffn;    /* (layer, dim) */
	float *w1;         /* (layer, hidden, dim) */
	float *w2;         /* (layer, dim, hidden) */
	float *w3;         /* (layer, hidden, dim) */
	float *rms_final;  /* (dim) */
	float *wcls;       /* (vocab, dim) */
	float *kc, *vc;    /* (layer, seq_len, kv_dim) */
};

static int
ref_load(struct ref *r, const char *path)
{
	FILE *f = fopen(path, "rb");
	int32_t h[7];
	long size;
	size_t n, kvd, L;
	float *p;
	int shared;

	if (f == NULL || fread(h, sizeof h, 1, f) != 1)
		return -1;
	r->dim = h[0];
	r->hidden = h[1];
	r->n_layers = h[2];
	r->n_heads = h[3];
	r->n_kv_heads = h[4];
	shared = h[5] > 0;
	r->vocab = abs(h[5]);
	r->seq_len = h[6];
	fseek(f, 0, SEEK_END);
	size = ftell(f) - (long)sizeof h;
	fseek(f, sizeof h, SEEK_SET);
	n = (size_t)size / sizeof(float);
	if ((r->data = malloc((size_t)size)) == NULL || fread(r->data, 1, (size_t)size, f) != (size_t)size)
		return -1;
	fclose(f);
	kvd = (size_t)r->dim * r->n_kv_heads / r->n_heads;
	L = r->n_layers;
	p = r->data;
	r->emb = p; p += (size_t)r->vocab * r->dim;
	r->rms_att = p; p += L * r->dim;
	r->wq = p; p += L * r->dim * r->dim;
	r->wk = p; p += L * kvd * r->dim;
	r->wv = p; p += L * kvd * r->dim;
	r->wo = p; p += L * r->dim * r->dim;
	r->rms_ffn = p; p += L * r->dim;
	r->w1 = p; p += L * r->hidden * r->dim;
	r->w2 = p; p += L * r->dim * r->hidden;
	r->w3 = p; p += L * r->hidden * r->dim;
	r->rms_final = p; p += r->dim;
	p += (size_t)r->seq_len * (r->dim / r->n_heads);   /* freq_cis_real and _imag, unused */
	r->wcls = shared ? r->emb : p;
	if (!shared)
		p += (size_t)r->vocab * r->dim;
	if ((size_t)(p - r->data) != n)
		return -1;
	r->kc = calloc(L * r->seq_len * kvd, sizeof(float));
	r->vc = calloc(L * r->seq_len * kvd, sizeof(float));
	return r->kc != NULL && r->vc != NULL ? 0 : -1;
}

static void
ref_free(struct ref *r)
{
	free(r->data);
	free(r->kc);
	free(r->vc);
}

static void
ref_rmsnorm(float *o, const float *x, const float *w, int n)
{
	double ss = 0;

	for (int i = 0; i < n; i++)
		ss += (double)x[i] * x[i];
	ss = 1.0 / sqrt(ss / n + 1e-5);
	for (int i = 0; i < n; i++)
		o[i] = (float)(w[i] * (ss * x[i]));
}

/* o (d) = W (d, n) x (n) */
static void
ref_matmul(float *o, const float *x, const float *w, int n, int d)
{
	for (int i = 0; i < d; i++) {
		double s = 0;
		for (int j = 0; j < n; j++)
			s += (double)w[(size_t)i * n + j] * x[j];
		o[i] = (float)s;
	}
}

/* run.c's forward(): the logits (vocab) of token at pos. */
static void
ref_forward(struct ref *r, int token, int pos, float *logits)
{
	int dim = r->dim, hs = dim / r->n_heads, kvd = hs * r->n_kv_heads;
	int kv_mul = r->n_heads / r->n_kv_heads, hid = r->hidden;
	float *x = malloc(dim * sizeof(float)), *xb = malloc(dim * sizeof(float));
	float *xb2 = malloc(dim * sizeof(float)), *q = malloc(dim * sizeof(float));
	float *hb = malloc(hid * sizeof(float)), *hb2 = malloc(hid * sizeof(float));
	double *att = malloc(r->seq_len * sizeof(double));

	memcpy(x, r->emb + (size_t)token * dim, dim * sizeof(float));
	for (int l = 0; l < r->n_layers; l++) {
		float *k = r->kc + ((size_t)l * r->seq_len + pos) * kvd;
		float *v = r->vc + ((size_t)l * r->seq_len + pos) * kvd;

		ref_rmsnorm(xb, x, r->rms_att + (size_t)l * dim, dim);
		ref_matmul(q, xb, r->wq + (size_t)l * dim * dim, dim, dim);
		ref_matmul(k, xb, r->wk + (size_t)l * kvd * dim, dim, kvd);
		ref_matmul(v, xb, r->wv + (size_t)l * kvd * dim, dim, kvd);
		/* RoPE: pairs (i, i+1), frequency from i modulo the head size. */
		for (int i = 0; i < dim; i += 2) {
			int hd = i % hs;
			double freq = 1.0 / pow(10000.0, hd / (double)hs), val = pos * freq;
			double fcr = cos(val), fci = sin(val);
			for (int t = 0; t < (i < kvd ? 2 : 1); t++) {
				float *vec = t == 0 ? q : k;
				double v0 = vec[i], v1 = vec[i + 1];
				vec[i] = (float)(v0 * fcr - v1 * fci);
				vec[i + 1] = (float)(v0 * fci + v1 * fcr);
			}
		}
		for (int h = 0; h < r->n_heads; h++) {
			const float *qh = q + h * hs;
			double mx = -INFINITY, sum = 0;
			for (int t = 0; t <= pos; t++) {
				const float *kt = r->kc + ((size_t)l * r->seq_len + t) * kvd + (h / kv_mul) * hs;
				double s = 0;
				for (int i = 0; i < hs; i++)
					s += (double)qh[i] * kt[i];
				att[t] = s / sqrt((double)hs);
				if (att[t] > mx)
					mx = att[t];
			}
			for (int t = 0; t <= pos; t++) {
				att[t] = exp(att[t] - mx);
				sum += att[t];
			}
			for (int i = 0; i < hs; i++) {
				double a = 0;
				for (int t = 0; t <= pos; t++)
					a += att[t] / sum * r->vc[((size_t)l * r->seq_len + t) * kvd + (h / kv_mul) * hs + i];
				xb[h * hs + i] = (float)a;
			}
		}
		ref_matmul(xb2, xb, r->wo + (size_t)l * dim * dim, dim, dim);
		for (int i = 0; i < dim; i++)
			x[i] += xb2[i];
		ref_rmsnorm(xb, x, r->rms_ffn + (size_t)l * dim, dim);
		ref_matmul(hb, xb, r->w1 + (size_t)l * hid * dim, dim, hid);
		ref_matmul(hb2, xb, r->w3 + (size_t)l * hid * dim, dim, hid);
		for (int i = 0; i < hid; i++) {
			double g = hb[i];
			hb[i] = (float)(g / (1.0 + exp(-g)) * hb2[i]);
		}
		ref_matmul(xb, hb, r->w2 + (size_t)l * dim * hid, hid, dim);
		for (int i = 0; i < dim; i++)
			x[i] += xb[i];
	}
	ref_rmsnorm(x, x, r->rms_final, dim);
	ref_matmul(logits, x, r->wcls, dim, r->vocab);
	free(x);
	free(xb);
	free(xb2);
	free(q);
	free(hb);
	free(hb2);
	free(att);
}

/* ---- helpers ---- */

static double
max_rel_err(const float *got, const float *ref, uint32_t n)
{
	double worst = 0;

	for (uint32_t i = 0; i < n; i++) {
		double d = fabs((double)got[i] - ref[i]) / fmax(fabs(ref[i]), 1.0);
		if (!(d <= worst))
			worst = d;
	}
	return worst;
}

static double
max_abs_diff(const float *a, const float *b, size_t n)
{
	double worst = 0;

	for (size_t i = 0; i < n; i++) {
		double d = fabs((double)a[i] - b[i]);
		if (!(d <= worst))
			worst = d;
	}
	return worst;
}

static char *
model_path(const char *name)
{
	const char *top = getenv("FM_TOP");
	static char buf[2][4096];
	static int k;

	k ^= 1;
	snprintf(buf[k], sizeof buf[k], "%s/models/%s", top != NULL ? top : ".", name);
	return buf[k];
}

/* Greedy decoding from BOS for n steps with the model; tokens and every step's logits out. */
static int
model_greedy(const struct fm_model *m, enum fm_kv_type kvt, uint32_t threads, uint32_t n,
    int32_t *toks, float *logits)
{
	struct fm_err err = { 0 };
	struct fm_kvcache kv;
	struct fm_cpu *c;
	int32_t tok = 1;

	if (fm_kv_init(&kv, kvt, m->hp.n_layer, n, m->hp.n_head_kv, m->hp.head_dim, &err) != FM_OK)
		return -1;
	if ((c = fm_cpu_new(m, 1, threads, &err)) == NULL)
		return -1;
	for (uint32_t pos = 0; pos < n; pos++) {
		float *lg = logits + (size_t)pos * m->hp.n_vocab;
		if (fm_cpu_eval(c, &kv, &tok, 1, pos, lg, false, &err) != FM_OK) {
			printf("# eval: %s\n", err.msg);
			return -1;
		}
		toks[pos] = tok;
		tok = fm_argmax(lg, m->hp.n_vocab);
	}
	fm_cpu_free(c);
	fm_kv_free(&kv);
	return 0;
}

/* ---- re-encoding weights in other types, for the type kernels ---- */

struct requant {
	struct fm_model m;        /* shallow copy with its own layers */
	struct fm_layer *layers;
	void **bufs;
	size_t n_bufs;
};

static void
encode_weight(struct requant *q, struct fm_weight *w, enum fm_ggml_type t)
{
	float *row;
	size_t rb;
	uint8_t *buf;

	/* Q8_0 needs whole blocks of 32 (ffn_down of stories260K has 172 columns: it stays F32). */
	if (t == FM_GGML_Q8_0 && w->cols % FM_Q8_0_BLOCK != 0)
		return;
	row = malloc(w->cols * sizeof(float));
	rb = t == FM_GGML_F32 ? 4 * (size_t)w->cols : t == FM_GGML_Q8_0 ?
	    w->cols / FM_Q8_0_BLOCK * sizeof(struct fm_q8_0) : 2 * (size_t)w->cols;
	buf = malloc(rb * w->rows);

	for (uint32_t r = 0; r < w->rows; r++) {
		uint8_t *dst = buf + rb * r;
		fm_weight_row(w, r, row);
		for (uint32_t i = 0; i < w->cols; i++) {
			uint16_t h;
			if (t == FM_GGML_F16) {
				h = fm_f32_to_f16(row[i]);
				memcpy(dst + 2 * i, &h, 2);
			} else if (t == FM_GGML_BF16) {
				h = fm_f32_to_bf16(row[i]);
				memcpy(dst + 2 * i, &h, 2);
			}
		}
		if (t == FM_GGML_Q8_0)
			for (uint32_t b = 0; b < w->cols / FM_Q8_0_BLOCK; b++) {
				struct fm_q8_0 blk;
				float amax = 0, d;
				for (int i = 0; i < FM_Q8_0_BLOCK; i++)
					amax = fmaxf(amax, fabsf(row[b * FM_Q8_0_BLOCK + i]));
				d = amax / 127;
				blk.d = fm_f32_to_f16(d);
				for (int i = 0; i < FM_Q8_0_BLOCK; i++)
					blk.qs[i] = (int8_t)lrintf(d != 0 ? row[b * FM_Q8_0_BLOCK + i] / d : 0);
				memcpy(dst + b * sizeof blk, &blk, sizeof blk);
			}
	}
	free(row);
	q->bufs = realloc(q->bufs, (q->n_bufs + 1) * sizeof *q->bufs);
	q->bufs[q->n_bufs++] = buf;
	w->type = t;
	w->row_bytes = rb;
	w->data = buf;
}

static void
requant_model(struct requant *q, const struct fm_model *m, enum fm_ggml_type t)
{
	memset(q, 0, sizeof *q);
	q->m = *m;
	q->layers = malloc(m->hp.n_layer * sizeof *q->layers);
	memcpy(q->layers, m->layers, m->hp.n_layer * sizeof *q->layers);
	q->m.layers = q->layers;
	for (uint32_t l = 0; l < m->hp.n_layer; l++) {
		struct fm_layer *L = &q->layers[l];
		struct fm_weight *ws[] = { &L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up,
		    &L->w_down };
		for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++)
			encode_weight(q, ws[i], t);
	}
	encode_weight(q, &q->m.tok_embd, t);
	encode_weight(q, &q->m.output, t);
}

static void
requant_free(struct requant *q)
{
	for (size_t i = 0; i < q->n_bufs; i++)
		free(q->bufs[i]);
	free(q->bufs);
	free(q->layers);
}

/* ---- the tests ---- */

static void
test_layout(const struct fm_model *m, const struct ref *r)
{
	int kvd = r->dim * r->n_kv_heads / r->n_heads;
	int same = 1;

	ok(m->hp.dim == (uint32_t)r->dim && m->hp.ffn_dim == (uint32_t)r->hidden &&
	    m->hp.n_layer == (uint32_t)r->n_layers && m->hp.n_head == (uint32_t)r->n_heads &&
	    m->hp.n_head_kv == (uint32_t)r->n_kv_heads && m->hp.n_vocab == (uint32_t)r->vocab,
	    "GGUF hyperparameters equal the .bin header (dim %u, %u layers, %u/%u heads)",
	    m->hp.dim, m->hp.n_layer, m->hp.n_head, m->hp.n_head_kv);
	ok(m->hp.n_rot == m->hp.head_dim && fabsf(m->hp.rope_base - 10000) < 1e-3f &&
	    fabsf(m->hp.rms_eps - 1e-5f) < 1e-9f, "rope over the whole head, base 10000, rms eps 1e-5");
	for (int l = 0; l < r->n_layers; l++) {
		same &= memcmp(m->layers[l].wq.data, r->wq + (size_t)l * r->dim * r->dim,
		    (size_t)r->dim * r->dim * 4) == 0;
		same &= memcmp(m->layers[l].wk.data, r->wk + (size_t)l * kvd * r->dim,
		    (size_t)kvd * r->dim * 4) == 0;
	}
	ok(same, "attn_q/attn_k of the GGUF are the .bin's wq/wk byte for byte: not permuted");
	ok(m->output.type == FM_GGML_F32 && memcmp(m->output.data, r->wcls,
	    (size_t)r->vocab * r->dim * 4) == 0, "output.weight is the shared classifier");
}

static void
test_reference(const struct fm_model *m, struct ref *r, uint32_t steps)
{
	uint32_t V = m->hp.n_vocab;
	float *lg = malloc((size_t)steps * V * sizeof(float)), *rl = malloc(V * sizeof(float));
	int32_t *toks = malloc(steps * sizeof(int32_t));
	double worst = 0;
	uint32_t same_tok = 0;
	int32_t tok = 1;

	ok(model_greedy(m, FM_KV_F32, 1, steps, toks, lg) == 0, "greedy decoding of %u steps", steps);
	for (uint32_t pos = 0; pos < steps; pos++) {
		double e;
		ref_forward(r, tok, pos, rl);
		e = max_rel_err(lg + (size_t)pos * V, rl, V);
		if (e > worst)
			worst = e;
		if (toks[pos] == tok)
			same_tok++;
		tok = fm_argmax(rl, V);
	}
	ok(same_tok == steps, "greedy tokens equal the reference's at all %u positions (%u equal)",
	    steps, same_tok);
	ok(worst <= REL_TOL, "logits within %g relative of the reference (worst %.3g)", REL_TOL, worst);
	printf("# first tokens:");
	for (uint32_t i = 0; i < 16 && i < steps; i++)
		printf(" %d", toks[i]);
	printf("\n");
	free(lg);
	free(rl);
	free(toks);
}

/* Threads split rows and heads, never a sum: any count must give the same bits. */
static void
test_threads(const struct fm_model *m, uint32_t steps)
{
	uint32_t V = m->hp.n_vocab;
	float *a = malloc((size_t)steps * V * sizeof(float)), *b = malloc((size_t)steps * V * sizeof(float));
	int32_t *ta = malloc(steps * 4), *tb = malloc(steps * 4);

	model_greedy(m, FM_KV_F16, 1, steps, ta, a);
	model_greedy(m, FM_KV_F16, 3, steps, tb, b);
	ok(memcmp(a, b, (size_t)steps * V * sizeof(float)) == 0 &&
	    memcmp(ta, tb, steps * 4) == 0, "1 and 3 threads give identical logits");
	free(a);
	free(b);
	free(ta);
	free(tb);
}

/* Batched prefill (sgemm, all logits) against one token at a time (GEMV). */
static void
test_prefill(const struct fm_model *m, uint32_t n)
{
	struct fm_err err = { 0 };
	uint32_t V = m->hp.n_vocab;
	float *all = malloc((size_t)n * V * sizeof(float)), *one = malloc((size_t)n * V * sizeof(float));
	float *last = malloc(V * sizeof(float));
	int32_t *toks = malloc(n * 4);
	struct fm_kvcache kv1, kv2;
	struct fm_cpu *c;
	uint32_t split = n / 3 + 1;
	int rc;

	model_greedy(m, FM_KV_F32, 2, n, toks, one);
	fm_kv_init(&kv1, FM_KV_F32, m->hp.n_layer, n, m->hp.n_head_kv, m->hp.head_dim, &err);
	c = fm_cpu_new(m, n, 2, &err);
	rc = fm_cpu_eval(c, &kv1, toks, n, 0, all, true, &err);
	ok(rc == FM_OK, "prefill of %u tokens in one batch", n);
	ok(max_rel_err(all, one, n * V) <= REL_TOL,
	    "batched logits equal incremental ones within %g relative (worst %.3g)", REL_TOL,
	    max_rel_err(all, one, n * V));
	/* Two batches, the second continuing the first, logits of the last token only. */
	fm_kv_init(&kv2, FM_KV_F32, m->hp.n_layer, n, m->hp.n_head_kv, m->hp.head_dim, &err);
	rc = fm_cpu_eval(c, &kv2, toks, split, 0, last, false, &err);
	rc |= fm_cpu_eval(c, &kv2, toks + split, n - split, split, last, false, &err);
	ok(rc == FM_OK && max_rel_err(last, one + (size_t)(n - 1) * V, V) <= REL_TOL,
	    "prefill in two batches (%u + %u) ends at the same logits", split, n - split);
	ok(max_abs_diff((float *)kv1.k, (float *)kv2.k, (size_t)m->hp.n_layer * n * kv1.pos_bytes / 4) <= 1e-5,
	    "and leaves the same keys in the cache");
	rc = fm_cpu_eval(c, &kv2, toks, 2, n - 1, last, false, &err);
	ok(rc == FM_EUSAGE, "a batch past the end of the cache is refused: %s", err.msg);
	toks[0] = (int32_t)V;
	rc = fm_cpu_eval(c, &kv2, toks, 1, 0, last, false, &err);
	ok(rc == FM_EDATA, "a token outside the vocabulary is refused: %s", err.msg);
	fm_cpu_free(c);
	fm_kv_free(&kv1);
	fm_kv_free(&kv2);
	free(all);
	free(one);
	free(last);
	free(toks);
}

static void
test_kv_f16(const struct fm_model *m, uint32_t steps)
{
	uint32_t V = m->hp.n_vocab, agree = 0;
	float *a = malloc((size_t)steps * V * sizeof(float)), *b = malloc((size_t)steps * V * sizeof(float));
	int32_t *ta = malloc(steps * 4), *tb = malloc(steps * 4);
	double d;

	model_greedy(m, FM_KV_F32, 2, steps, ta, a);
	model_greedy(m, FM_KV_F16, 2, steps, tb, b);
	for (uint32_t i = 0; i < steps && ta[i] == tb[i]; i++)
		agree++;
	d = max_abs_diff(a, b, (size_t)agree * V);
	ok(agree == steps, "F16 and F32 KV caches: same greedy tokens for all %u steps (%u)", steps, agree);
	ok(d < 0.05, "F16 KV logits within 0.05 of F32 (worst %.3g)", d);
	free(a);
	free(b);
	free(ta);
	free(tb);
}

/* Each weight type: its matvec against the same weights widened to F32, then the whole model. */
static void
test_types(const struct fm_model *m, struct ref *r, uint32_t steps)
{
	static const struct { enum fm_ggml_type t; const char *name; double tol; } types[] = {
		{ FM_GGML_F16, "f16", 0.02 }, { FM_GGML_BF16, "bf16", 0.15 }, { FM_GGML_Q8_0, "q8_0", 0.5 },
	};
	uint32_t V = m->hp.n_vocab;

	for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
		struct requant q;
		const struct fm_weight *w;
		float *x, *y, *y2, *row, *lg, *rl;
		int32_t *toks;
		double e = 0, worst = 0;
		uint32_t top1 = 0;

		requant_model(&q, m, types[k].t);
		w = &q.layers[1].w_down;   /* 172 columns: not a multiple of 16, exercises the tails */
		if (types[k].t == FM_GGML_Q8_0)
			w = &q.layers[1].w_gate;
		x = malloc(w->cols * sizeof(float));
		y = malloc(w->rows * sizeof(float));
		y2 = malloc(w->rows * sizeof(float));
		row = malloc(w->cols * sizeof(float));
		for (uint32_t i = 0; i < w->cols; i++)
			x[i] = sinf(0.37f * i) + 0.1f;
		fm_matvec(y, w, x, false);
		for (uint32_t rr = 0; rr < w->rows; rr++) {
			double s = 0;
			fm_weight_row(w, rr, row);
			for (uint32_t i = 0; i < w->cols; i++)
				s += (double)row[i] * x[i];
			y2[rr] = (float)s;
		}
		e = max_abs_diff(y, y2, w->rows);
		ok(e < 1e-4, "%s matvec of %s equals its widened weights (worst %.3g)", types[k].name,
		    w->name, e);

		lg = malloc((size_t)steps * V * sizeof(float));
		rl = malloc(V * sizeof(float));
		toks = malloc(steps * 4);
		model_greedy(&q.m, FM_KV_F32, 2, steps, toks, lg);
		for (uint32_t pos = 0; pos < steps; pos++) {
			const float *l = lg + (size_t)pos * V;
			ref_forward(r, toks[pos], pos, rl);
			if (pos + 1 < steps && fm_argmax(l, V) == fm_argmax(rl, V))
				top1++;
			e = max_abs_diff(l, rl, V);
			if (e > worst)
				worst = e;
		}
		ok(top1 >= (steps - 1) * 9 / 10, "%s weights: top-1 agrees with the F32 reference at %u of %u positions",
		    types[k].name, top1, steps - 1);
		ok(worst < types[k].tol, "%s weights: logits within %g of the reference (worst %.3g)",
		    types[k].name, types[k].tol, worst);
		free(x);
		free(y);
		free(y2);
		free(row);
		free(lg);
		free(rl);
		free(toks);
		requant_free(&q);
	}
}

/* The attention op over shapes the model does not have, against a naive softmax in double. */
static void
test_attention(void)
{
	static const uint32_t shapes[][4] = {   /* n_head, n_head_kv, head_dim, n_keys */
		{ 1, 1, 1, 1 }, { 4, 2, 72, 200 }, { 6, 3, 40, 64 }, { 8, 1, 96, 129 }, { 5, 5, 13, 65 },
	};
	struct fm_err err = { 0 };

	for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
		uint32_t H = shapes[s][0], KH = shapes[s][1], hd = shapes[s][2], n = shapes[s][3];
		struct fm_kvcache kv;
		float *q = malloc((size_t)H * hd * 4), *out = malloc((size_t)H * hd * 4);
		float *kr = malloc((size_t)n * KH * hd * 4), *vr = malloc((size_t)n * KH * hd * 4);
		float *scratch;
		double worst = 0;

		fm_kv_init(&kv, FM_KV_F32, 2, n, KH, hd, &err);
		scratch = malloc(fm_attention_scratch(&kv, H) * 4);
		for (uint32_t i = 0; i < H * hd; i++)
			q[i] = sinf(1.3f * i + s) * 2;
		for (uint32_t i = 0; i < n * KH * hd; i++) {
			kr[i] = cosf(0.7f * i + 0.2f * s);
			vr[i] = sinf(0.11f * i) + 0.01f * (i % 7);
		}
		for (uint32_t p = 0; p < n; p++)
			fm_kv_put(&kv, 1, p, kr + (size_t)p * KH * hd, vr + (size_t)p * KH * hd);
		fm_attention(out, q, H, &kv, 1, n, scratch);
		for (uint32_t h = 0; h < H; h++) {
			uint32_t g = h / (H / KH);
			double *sc = malloc(n * sizeof(double)), mx = -INFINITY, sum = 0;
			for (uint32_t p = 0; p < n; p++) {
				double d = 0;
				for (uint32_t i = 0; i < hd; i++)
					d += (double)q[h * hd + i] * kr[((size_t)p * KH + g) * hd + i];
				sc[p] = d / sqrt(hd);
				mx = fmax(mx, sc[p]);
			}
			for (uint32_t p = 0; p < n; p++)
				sum += sc[p] = exp(sc[p] - mx);
			for (uint32_t i = 0; i < hd; i++) {
				double a = 0;
				for (uint32_t p = 0; p < n; p++)
					a += sc[p] / sum * vr[((size_t)p * KH + g) * hd + i];
				worst = fmax(worst, fabs(a - out[h * hd + i]));
			}
			free(sc);
		}
		ok(worst < 1e-5, "attention %u heads / %u kv heads, head size %u, %u keys: worst error %.3g",
		    H, KH, hd, n, worst);
		fm_kv_free(&kv);
		free(q);
		free(out);
		free(kr);
		free(vr);
		free(scratch);
	}
}

static void
test_kvcache(void)
{
	struct fm_err err = { 0 };
	struct fm_kvcache kv;
	float k[2 * 5], v[2 * 5], back[3 * 5];
	int good = 1;

	ok(fm_kv_init(&kv, FM_KV_F16, 3, 7, 2, 5, &err) == FM_OK && fm_kv_bytes(&kv) == 2 * 3 * 7 * 2 * 5 * 2,
	    "F16 cache of 3 layers, 7 positions, 2 heads of 5: %llu bytes", (unsigned long long)fm_kv_bytes(&kv));
	for (uint32_t p = 0; p < 7; p++) {
		for (int i = 0; i < 10; i++) {
			k[i] = (float)(p * 100 + i);
			v[i] = -(float)(p * 100 + i) / 4;
		}
		fm_kv_put(&kv, 2, p, k, v);
	}
	fm_kv_read(&kv, 'k', 2, 1, 4, 3, back);
	for (int j = 0; j < 3; j++)
		for (int i = 0; i < 5; i++)
			good &= back[j * 5 + i] == (float)((4 + j) * 100 + 5 + i);
	fm_kv_read(&kv, 'v', 2, 0, 6, 1, back);
	for (int i = 0; i < 5; i++)
		good &= back[i] == -(float)(600 + i) / 4;
	ok(good, "read back head 1 of positions 4..6 and head 0 of position 6");
	ok((uint8_t *)fm_kv_k(&kv, 2, 3) - (uint8_t *)fm_kv_k(&kv, 2, 0) == 3 * (ptrdiff_t)kv.pos_bytes &&
	    (uint8_t *)fm_kv_k(&kv, 1, 0) - kv.k == 7 * (ptrdiff_t)kv.pos_bytes,
	    "positions of a layer are one contiguous span");
	fm_kv_free(&kv);
}

static void
test_sampler(void)
{
	struct fm_err err = { 0 };
	struct fm_sampler s, s2;
	float lg[8] = { 0, logf(2), logf(3), logf(4), -1e9f, 1.0f, 0.5f, logf(4) };
	uint32_t count[8] = { 0 }, N = 200000;
	int32_t a[64], b[64], ids[5];
	float vals[5];
	int same = 1, differ = 0, in = 1;
	double p[8], z = 0, worst = 0;

	ok(fm_argmax(lg, 8) == 3, "argmax takes the lowest id among equal maxima");
	fm_top_logits(lg, 8, 5, ids, vals);
	ok(ids[0] == 3 && ids[1] == 7 && ids[2] == 2 && ids[3] == 5 && ids[4] == 1,
	    "top 5 logits in order, ties by id: %d %d %d %d %d", ids[0], ids[1], ids[2], ids[3], ids[4]);

	fm_sampler_init(&s, 8, 0.7f, 0, 1, 42, &err);
	fm_sampler_init(&s2, 8, 0.7f, 0, 1, 42, &err);
	for (int i = 0; i < 64; i++) {
		a[i] = fm_sample(&s, lg);
		b[i] = fm_sample(&s2, lg);
		same &= a[i] == b[i];
	}
	fm_sampler_free(&s2);
	fm_sampler_init(&s2, 8, 0.7f, 0, 1, 43, &err);
	for (int i = 0; i < 64; i++)
		differ |= fm_sample(&s2, lg) != a[i];
	ok(same, "the same seed draws the same 64 tokens");
	ok(differ, "another seed draws others");
	fm_sampler_free(&s);
	fm_sampler_free(&s2);

	/* Frequencies at temperature 1 follow the softmax. */
	fm_sampler_init(&s, 8, 1.0f, 0, 1, 7, &err);
	for (uint32_t i = 0; i < N; i++)
		count[fm_sample(&s, lg)]++;
	for (int i = 0; i < 8; i++)
		z += p[i] = exp(lg[i]);
	for (int i = 0; i < 8; i++)
		worst = fmax(worst, fabs(count[i] / (double)N - p[i] / z));
	ok(worst < 0.005 && count[4] == 0, "temperature 1: frequencies within 0.005 of the softmax (worst %.4f)", worst);
	fm_sampler_free(&s);

	fm_sampler_init(&s, 8, 1.0f, 2, 1, 7, &err);
	for (int i = 0; i < 2000; i++) {
		int32_t t = fm_sample(&s, lg);
		in &= t == 3 || t == 7;
	}
	ok(in, "top-k 2 draws only the two most likely");
	fm_sampler_free(&s);

	/* p: 4/(1+2+3+4+4+e+e^.5) each for ids 3 and 7 is about 0.2; top-p 0.3 keeps 3 and 7. */
	fm_sampler_init(&s, 8, 1.0f, 0, 0.3f, 9, &err);
	memset(count, 0, sizeof count);
	for (int i = 0; i < 4000; i++)
		count[fm_sample(&s, lg)]++;
	ok(count[3] + count[7] == 4000 && count[3] > 1700 && count[7] > 1700,
	    "top-p 0.3 keeps exactly the two most likely (%u, %u)", count[3], count[7]);
	fm_sampler_free(&s);

	fm_sampler_init(&s, 8, 0, 40, 0.9f, 1, &err);
	ok(fm_sample(&s, lg) == 3, "temperature 0 is argmax");
	fm_sampler_free(&s);
	fm_sampler_init(&s, 8, 1.0f, 1, 1, 1, &err);
	ok(fm_sample(&s, lg) == 3, "top-k 1 is argmax");
	fm_sampler_free(&s);
	fm_sampler_init(&s, 8, 5.0f, 0, 1e-6f, 1, &err);
	ok(fm_sample(&s, lg) == 3, "a tiny top-p is argmax");
	fm_sampler_free(&s);
	ok(fm_sampler_init(&s, 8, -1, 0, 1, 1, &err) == FM_EUSAGE, "negative temperature refused");
	ok(fm_sampler_init(&s, 8, 1, 0, 0, 1, &err) == FM_EUSAGE, "top-p 0 refused");
}

static void
test_load_errors(void)
{
	struct fm_err err = { 0 };
	struct fm_model *m;

	m = fm_model_load(model_path("ggml-vocab-bert-bge.gguf"), &err);
	ok(m == NULL && err.status == FM_EDATA && strstr(err.msg, "'bert'") != NULL,
	    "a bert GGUF is refused: %s", err.msg);
	m = fm_model_load(model_path("ggml-vocab-llama-spm.gguf"), &err);
	ok(m == NULL && err.status == FM_EDATA && strstr(err.msg, "missing tensor") != NULL,
	    "a llama GGUF without weights is refused: %s", err.msg);
	m = fm_model_load(model_path("no-such-model.gguf"), &err);
	ok(m == NULL && err.status == FM_EIO, "a missing file is an I/O error: %s", err.msg);
}

int
main(void)
{
	struct fm_err err = { 0 };
	struct fm_model *m;
	struct ref r;

	m = fm_model_load(model_path("stories260K.gguf"), &err);
	if (!ok(m != NULL, "load stories260K.gguf%s%s", m ? "" : ": ", m ? "" : err.msg))
		return done_testing();
	if (!ok(ref_load(&r, model_path("stories260K.bin")) == 0, "load stories260K.bin"))
		return done_testing();
	test_layout(m, &r);
	test_reference(m, &r, 256);
	test_threads(m, 100);
	test_prefill(m, 70);
	test_kv_f16(m, 200);
	test_types(m, &r, 64);
	test_attention();
	test_kvcache();
	test_sampler();
	test_load_errors();
	ref_free(&r);
	fm_model_free(m);
	return done_testing();
}
