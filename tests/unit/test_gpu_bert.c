/*
 * test_gpu_bert.c - the GPU BERT encoder (kernels/bert.cu) against its CPU
 * twins in common/bert.c: each kernel over shapes its fast paths do not
 * divide evenly (widths that are not multiples of 32, sequences of 1 token
 * and of the whole context, head sizes the tensor-core kernel does not
 * take), the cuBLAS products, then the whole encoder on the random
 * MiniLM-shaped BERT of test_bert (written by `test_bert --write-gguf`
 * beside this program) against the CPU encoder and against the PyTorch
 * fixture, two batches in flight, and the errors.  Meant to run under
 * compute-sanitizer too.  Without CUDA in the build, or without a GPU, it
 * skips.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"

#ifndef FM_CUDA
int
main(void)
{
	printf("1..0 # SKIP built without CUDA\n");
	return 0;
}
#else

#include <unistd.h>

#include "bert.h"
#include "embedfile.h"
#include "gguf.h"
#include "gpu.h"
#include "gpu_util.h"

static void
fill(float *x, size_t n, float center, float scale)
{
	for (size_t i = 0; i < n; i++)
		x[i] = center + frand() * scale;
}

/* Random F16 values, and the same as F32. */
static void
fill16(uint16_t *h, float *f, size_t n, float scale)
{
	for (size_t i = 0; i < n; i++) {
		h[i] = fm_f32_to_f16(frand() * scale);
		if (f != NULL)
			f[i] = fm_f16_to_f32(h[i]);
	}
}

static void
down(void *dst, const void *src, size_t n)
{
	if (fm_gpu_sync(&err) != FM_OK || fm_gpu_get(dst, src, n, &err) != FM_OK) {
		printf("# %s\n", err.msg);
		exit(1);
	}
}

/* The largest |a - b| / (abs + rel |b|); b is the reference.  <= 1 passes. */
static double
worst(const float *a, const float *b, size_t n, double abs, double rel, size_t *at)
{
	double w = 0;

	for (size_t i = 0; i < n; i++) {
		double e = fabs((double)a[i] - b[i]) / (abs + rel * fabs((double)b[i]));
		if (!(e <= w)) {   /* NaN counts as the worst */
			w = isnan(e) ? INFINITY : e;
			if (at != NULL)
				*at = i;
		}
	}
	return w;
}

static void
widen(float *f, const uint16_t *h, size_t n)
{
	for (size_t i = 0; i < n; i++)
		f[i] = fm_f16_to_f32(h[i]);
}

static double
cosine(const float *a, const float *b, size_t n)
{
	double dot = 0, na = 0, nb = 0;

	for (size_t i = 0; i < n; i++) {
		dot += (double)a[i] * b[i];
		na += (double)a[i] * a[i];
		nb += (double)b[i] * b[i];
	}
	return dot / sqrt(na * nb);
}

/* start (n + 1) of sequences of lens, and order: the longest first. */
static size_t
layout(const uint32_t *lens, size_t n, int32_t *start, int32_t *order)
{
	size_t T = 0;

	for (size_t i = 0; i < n; i++) {
		start[i] = (int32_t)T;
		T += lens[i];
		order[i] = (int32_t)i;
	}
	start[n] = (int32_t)T;
	for (size_t i = 1; i < n; i++)
		for (size_t j = i; j > 0 && lens[order[j]] > lens[order[j - 1]]; j--) {
			int32_t t = order[j];
			order[j] = order[j - 1];
			order[j - 1] = t;
		}
	return T;
}

/* ---- kernels ---- */

static void
test_add_norm(uint32_t T, uint32_t d)
{
	size_t n = (size_t)T * d;
	float *x = malloc(n * 4), *y = malloc(n * 4), *r = malloc(n * 4), *g = malloc(n * 4);
	float *bias = malloc(d * 4), *w = malloc(d * 4), *b = malloc(d * 4), *gh = malloc(n * 4);
	uint16_t *h = malloc(n * 2);
	float *dx, *dy, *db, *dw, *dbb;
	uint16_t *dh;
	double e;

	fill(x, n, 0.3f, 2);
	fill(y, n, 0, 1);
	fill(bias, d, 0, 0.5f);
	fill(w, d, 1, 0.2f);
	fill(b, d, 0, 0.1f);
	dx = up(x, n * 4);
	dy = up(y, n * 4);
	db = up(bias, d * 4);
	dw = up(w, d * 4);
	dbb = up(b, d * 4);
	dh = fm_gpu_malloc(n * 2, &err);
	for (size_t i = 0; i < n; i++)
		r[i] = y[i] + bias[i % d];
	fm_bert_add_norm(x, r, T, d, w, b, 1e-12f);
	ok(fm_gpu_bert_add_norm(dx, dh, dy, db, dw, dbb, T, d, 1e-12f, &err) == FM_OK,
	    "add_norm %ux%u launched", T, d);
	down(g, dx, n * 4);
	down(h, dh, n * 2);
	widen(gh, h, n);
	e = worst(g, x, n, 1e-5, 1e-5, NULL);
	ok(e <= 1, "add_norm %ux%u: F32 states as the CPU's (worst %.3g of tolerance)", T, d, e);
	e = worst(gh, x, n, 1e-6, 1.0 / 1024, NULL);
	ok(e <= 1, "add_norm %ux%u: F16 copy within one F16 step (worst %.3g)", T, d, e);
	fm_gpu_free(dx);
	fm_gpu_free(dy);
	fm_gpu_free(db);
	fm_gpu_free(dw);
	fm_gpu_free(dbb);
	fm_gpu_free(dh);
	free(x), free(y), free(r), free(g), free(bias), free(w), free(b), free(gh), free(h);
}

static void
test_gelu(uint32_t T, uint32_t n)
{
	size_t m = (size_t)T * n;
	uint16_t *h = malloc(m * 2), *dh;
	float *f = malloc(m * 4), *g = malloc(m * 4), *bias = malloc(n * 4), *db;
	double e;

	fill16(h, f, m, 4);
	fill(bias, n, 0, 0.5f);
	for (size_t i = 0; i < m; i++)
		f[i] += bias[i % n];
	fm_bert_gelu(f, m);
	dh = up(h, m * 2);
	db = up(bias, n * 4);
	ok(fm_gpu_bert_gelu(dh, dh, db, T, n, &err) == FM_OK, "gelu %ux%u launched", T, n);
	down(h, dh, m * 2);
	widen(g, h, m);
	e = worst(g, f, m, 1e-5, 1.0 / 1024, NULL);
	ok(e <= 1, "gelu %ux%u in place: as the CPU's erf form within F16 rounding (worst %.3g)",
	    T, n, e);
	fm_gpu_free(dh);
	fm_gpu_free(db);
	free(h), free(f), free(g), free(bias);
}

static void
test_pool(const uint32_t *lens, size_t n_seq, uint32_t d)
{
	int32_t start[64], order[64];
	size_t T = layout(lens, n_seq, start, order);
	float *x = malloc(T * d * 4), *c = malloc(n_seq * d * 4), *g = malloc(n_seq * d * 4);
	float *dx, *dout;
	int32_t *ds;

	fill(x, T * d, 0, 1);
	dx = up(x, T * d * 4);
	ds = up(start, (n_seq + 1) * 4);
	dout = fm_gpu_malloc(n_seq * d * 4, &err);
	for (int pool = FM_POOL_MEAN; pool <= FM_POOL_CLS; pool++) {
		double e;

		fm_bert_pool(x, lens, n_seq, d, pool, c);
		ok(fm_gpu_bert_pool(dout, dx, ds, (uint32_t)n_seq, d, pool, &err) == FM_OK,
		    "pool launched");
		down(g, dout, n_seq * d * 4);
		e = worst(g, c, n_seq * d, 1e-6, 1e-6, NULL);
		ok(e <= 1, "%s pooling of %zu sequences of width %u (worst %.3g)",
		    fm_embed_pooling_name((unsigned)pool), n_seq, d, e);
	}
	fm_gpu_free(dx);
	fm_gpu_free(ds);
	fm_gpu_free(dout);
	free(x), free(c), free(g);
}

static void
test_attention(uint32_t d, uint32_t n_head, const uint32_t *lens, size_t n_seq, bool tc)
{
	int32_t start[64], order[64];
	size_t T = layout(lens, n_seq, start, order), ld = 3 * (size_t)d;
	uint16_t *h = malloc(T * ld * 2), *oh = malloc(T * d * 2), *dq, *dout;
	float *f = malloc(T * ld * 4), *bias = malloc(ld * 4), *c = malloc(T * d * 4);
	float *g = malloc(T * d * 4), *scores = malloc(512 * 512 * 4), *db;
	uint32_t max_len = 0;
	int32_t *ds, *dord;
	size_t at = 0;
	double e;

	fill16(h, f, T * ld, 1.5f);
	fill(bias, ld, 0, 0.5f);
	for (size_t t = 0; t < T; t++)
		for (size_t k = 0; k < ld; k++)
			f[t * ld + k] += bias[k];
	for (size_t s = 0; s < n_seq; s++) {
		fm_bert_attend(f + (size_t)start[s] * ld, lens[s], d, n_head, scores,
		    c + (size_t)start[s] * d, d);
		max_len = lens[s] > max_len ? lens[s] : max_len;
	}
	dq = up(h, T * ld * 2);
	db = up(bias, ld * 4);
	ds = up(start, (n_seq + 1) * 4);
	dord = up(order, n_seq * 4);
	dout = fm_gpu_malloc(T * d * 2, &err);
	if (!ok(fm_gpu_bert_attention(dout, dq, db, ds, dord, (uint32_t)n_seq, max_len, d, n_head,
	    tc, &err) == FM_OK, "attention launched"))
		printf("# %s\n", err.msg);
	down(oh, dout, T * d * 2);
	widen(g, oh, T * d);
	/* The tensor-core kernel rounds q, k and v with their biases, and the probabilities, to F16. */
	e = tc && (d / n_head == 32 || d / n_head == 64) ? worst(g, c, T * d, 5e-3, 5e-3, &at) :
	    worst(g, c, T * d, 1e-4, 1.0 / 1024, &at);
	ok(e <= 1, "attention %s, %u heads of %u, %zu sequences up to %u tokens (%zu in all): "
	    "worst %.3g of tolerance (%g for %g)", tc ? "tc" : "plain", n_head, d / n_head, n_seq,
	    max_len, T, e, g[at], c[at]);
	fm_gpu_free(dq);
	fm_gpu_free(db);
	fm_gpu_free(ds);
	fm_gpu_free(dord);
	fm_gpu_free(dout);
	free(h), free(oh), free(f), free(bias), free(c), free(g), free(scores);
}

static void
test_linear(uint32_t T, uint32_t n_in, uint32_t n_out, bool y16)
{
	uint16_t *x = malloc((size_t)T * n_in * 2), *w = malloc((size_t)n_out * n_in * 2), *dx, *dw;
	float *xf = malloc((size_t)T * n_in * 4), *wf = malloc((size_t)n_out * n_in * 4);
	float *c = malloc((size_t)T * n_out * 4), *g = malloc((size_t)T * n_out * 4);
	void *dy, *hy = malloc((size_t)T * n_out * 4);
	double e;

	fill16(x, xf, (size_t)T * n_in, 1);
	fill16(w, wf, (size_t)n_out * n_in, 0.2f);
	for (uint32_t t = 0; t < T; t++)
		for (uint32_t o = 0; o < n_out; o++) {
			double s = 0;
			for (uint32_t k = 0; k < n_in; k++)
				s += (double)xf[(size_t)t * n_in + k] * wf[(size_t)o * n_in + k];
			c[(size_t)t * n_out + o] = (float)s;
		}
	dx = up(x, (size_t)T * n_in * 2);
	dw = up(w, (size_t)n_out * n_in * 2);
	dy = fm_gpu_malloc((size_t)T * n_out * 4, &err);
	if (!ok(fm_gpu_bert_linear(dy, y16, dx, T, n_in, dw, n_out, &err) == FM_OK, "linear"))
		printf("# %s\n", err.msg);
	down(hy, dy, (size_t)T * n_out * (y16 ? 2 : 4));
	if (y16)
		widen(g, hy, (size_t)T * n_out);
	else
		memcpy(g, hy, (size_t)T * n_out * 4);
	e = worst(g, c, (size_t)T * n_out, 1e-4, y16 ? 1.0 / 1024 : 1e-4, NULL);
	ok(e <= 1, "linear %ux%u -> %u, %s out: worst %.3g of tolerance", T, n_in, n_out,
	    y16 ? "F16" : "F32", e);
	fm_gpu_free(dx);
	fm_gpu_free(dw);
	fm_gpu_free(dy);
	free(x), free(w), free(xf), free(wf), free(c), free(g), free(hy);
}

/* ---- the encoder ---- */

static void
test_embed(const struct fm_bert *b)
{
	static const uint32_t lens[] = { 1, 7, 130, 512, 3 };
	const size_t n_seq = sizeof lens / sizeof lens[0];
	struct fm_bert_weights w;
	int32_t *ids[5], *flat, *pos;
	size_t T = 0, d;
	float *x, *g, *gh, *tok, *dx, *dtok, *dt0, *dpos, *dlw, *dlb;
	uint16_t *h, *dh;
	int32_t *dids, *dpi;
	double e;

	fm_bert_weights(b, &w);
	d = w.dim;
	for (size_t s = 0; s < n_seq; s++)
		T += lens[s];
	flat = malloc(T * 4);
	pos = malloc(T * 4);
	for (size_t s = 0, t = 0; s < n_seq; s++) {
		ids[s] = flat + t;
		for (uint32_t i = 0; i < lens[s]; i++, t++) {
			flat[t] = (int32_t)((frand() + 1) / 2 * w.n_vocab) % (int32_t)w.n_vocab;
			pos[t] = (int32_t)i;
		}
	}
	x = malloc(T * d * 4);
	g = malloc(T * d * 4);
	gh = malloc(T * d * 4);
	h = malloc(T * d * 2);
	tok = malloc((size_t)w.n_vocab * d * 4);
	for (uint32_t r = 0; r < w.n_vocab; r++)
		fm_gguf_dequant_row(w.tok_embd, r, tok + (size_t)r * d, &err);
	ok(fm_bert_embed(b, (const int32_t *const *)ids, lens, n_seq, x, &err) == FM_OK,
	    "CPU embeddings");
	dtok = up(tok, (size_t)w.n_vocab * d * 4);
	dt0 = up(w.type0, d * 4);
	dpos = up(w.pos, (size_t)w.n_ctx * d * 4);
	dlw = up(w.embd_ln_w, d * 4);
	dlb = up(w.embd_ln_b, d * 4);
	dids = up(flat, T * 4);
	dpi = up(pos, T * 4);
	dx = fm_gpu_malloc(T * d * 4, &err);
	dh = fm_gpu_malloc(T * d * 2, &err);
	ok(fm_gpu_bert_embed(dx, dh, dtok, dt0, dpos, dlw, dlb, dids, dpi, (uint32_t)T, (uint32_t)d,
	    w.eps, &err) == FM_OK, "embed launched");
	down(g, dx, T * d * 4);
	down(h, dh, T * d * 2);
	widen(gh, h, T * d);
	e = worst(g, x, T * d, 1e-5, 1e-5, NULL);
	ok(e <= 1, "embeddings of %zu tokens (sequences of 1 to 512): as the CPU's (worst %.3g)",
	    T, e);
	e = worst(gh, x, T * d, 1e-6, 1.0 / 1024, NULL);
	ok(e <= 1, "embeddings' F16 copy (worst %.3g)", e);
	fm_gpu_free(dtok), fm_gpu_free(dt0), fm_gpu_free(dpos), fm_gpu_free(dlw), fm_gpu_free(dlb);
	fm_gpu_free(dids), fm_gpu_free(dpi), fm_gpu_free(dx), fm_gpu_free(dh);
	free(flat), free(pos), free(x), free(g), free(gh), free(h), free(tok);
}

#define NSEQ 40

/* The whole encoder on sequences of 1 to 512 tokens, against the CPU's, both poolings. */
static void
test_encoder(struct fm_bert *b, struct fm_gpu_bert *g)
{
	uint32_t d = fm_bert_dim(b), n_vocab, lens[NSEQ];
	int32_t *ids[NSEQ];
	float *c = malloc((size_t)NSEQ * d * 4), *v = malloc((size_t)NSEQ * d * 4);
	float *a1 = malloc((size_t)NSEQ * d * 4), *a2 = malloc((size_t)NSEQ * d * 4);
	struct fm_bert_weights w;
	size_t half = NSEQ / 2;

	fm_bert_weights(b, &w);
	n_vocab = w.n_vocab;
	for (int i = 0; i < NSEQ; i++) {
		lens[i] = i == 0 ? 512 : i == 1 ? 1 : i == 2 ? 2 : 3 + (uint32_t)(i * 97) % 300;
		ids[i] = malloc(lens[i] * 4);
		for (uint32_t k = 0; k < lens[i]; k++)
			ids[i][k] = (int32_t)((frand() + 1) / 2 * n_vocab) % (int32_t)n_vocab;
	}
	for (int pool = FM_POOL_MEAN; pool <= FM_POOL_CLS; pool++) {
		double wc = 1;

		ok(fm_bert_forward(b, (const int32_t *const *)ids, lens, NSEQ, pool, c, &err) == FM_OK,
		    "CPU encoder");
		if (!ok(fm_gpu_bert_forward(g, (const int32_t *const *)ids, lens, NSEQ, pool, v,
		    &err) == FM_OK, "GPU encoder, %d sequences in one batch, %s pooling", NSEQ,
		    fm_embed_pooling_name((unsigned)pool)))
			printf("# %s\n", err.msg);
		for (int i = 0; i < NSEQ; i++) {
			double cs = cosine(v + (size_t)i * d, c + (size_t)i * d, d);
			wc = cs < wc || isnan(cs) ? cs : wc;
		}
		ok(wc >= 0.9999, "%s pooling: every GPU vector within cosine 0.9999 of the CPU's "
		    "(worst 1 - %.3g)", fm_embed_pooling_name((unsigned)pool), 1 - wc);
	}

	/* Two batches in flight give what each gives alone. */
	ok(fm_gpu_bert_forward(g, (const int32_t *const *)ids, lens, half, FM_POOL_MEAN, a1,
	    &err) == FM_OK && fm_gpu_bert_forward(g, (const int32_t *const *)ids + half, lens + half,
	    NSEQ - half, FM_POOL_MEAN, a2, &err) == FM_OK, "two batches one after the other");
	ok(fm_gpu_bert_submit(g, (const int32_t *const *)ids, lens, half, FM_POOL_MEAN, &err) ==
	    FM_OK && fm_gpu_bert_submit(g, (const int32_t *const *)ids + half, lens + half,
	    NSEQ - half, FM_POOL_MEAN, &err) == FM_OK && fm_gpu_bert_pending(g) == 2,
	    "two batches in flight");
	ok(fm_gpu_bert_submit(g, (const int32_t *const *)ids, lens, 1, FM_POOL_MEAN, &err) ==
	    FM_EDEVICE, "a third is refused: %s", err.msg);
	ok(fm_gpu_bert_wait(g, c, &err) == FM_OK && fm_gpu_bert_wait(g, v, &err) == FM_OK &&
	    fm_gpu_bert_pending(g) == 0, "both waited for");
	ok(memcmp(c, a1, half * d * 4) == 0 && memcmp(v, a2, (NSEQ - half) * d * 4) == 0,
	    "their vectors are those of the batches run one at a time, bit for bit");

	/* Bad input, refused before anything is queued. */
	lens[3] = 0;
	ok(fm_gpu_bert_forward(g, (const int32_t *const *)ids, lens, 5, FM_POOL_MEAN, v, &err) ==
	    FM_EDATA, "an empty sequence is refused: %s", err.msg);
	lens[3] = 4;
	ids[3][1] = (int32_t)n_vocab;
	ok(fm_gpu_bert_forward(g, (const int32_t *const *)ids, lens, 5, FM_POOL_MEAN, v, &err) ==
	    FM_EDATA, "a token outside the vocabulary is refused: %s", err.msg);
	ok(fm_gpu_bert_forward(g, (const int32_t *const *)ids, lens, 0, FM_POOL_MEAN, v, &err) ==
	    FM_OK, "an empty batch is nothing to do");
	for (int i = 0; i < NSEQ; i++)
		free(ids[i]);
	free(c), free(v), free(a1), free(a2);
}

/* Fixture lines: "mean|cls <TAB> id id ... <TAB> v0 v1 ... v(dim-1)". */
static void
test_fixture(struct fm_gpu_bert *g, uint32_t d, const char *path)
{
	FILE *f = fopen(path, "r");
	char *line = NULL, *p, *e;
	size_t cap = 0;
	int n = 0, good = 0;
	double wc = 1;

	if (!ok(f != NULL, "fixture %s", path))
		return;
	while (getline(&line, &cap, f) > 0) {
		int32_t ids[512];
		uint32_t len = 0;
		const int32_t *pi = ids;
		float ref[1024], v[1024];
		int pool;

		if (line[0] == '#')
			continue;
		pool = strncmp(line, "cls\t", 4) == 0 ? FM_POOL_CLS : FM_POOL_MEAN;
		p = strchr(line, '\t') + 1;
		while (*p != '\t' && len < 512) {
			ids[len++] = (int32_t)strtol(p, &e, 10);
			p = e;
			while (*p == ' ')
				p++;
		}
		for (uint32_t k = 0; k < d && k < 1024; k++) {
			ref[k] = strtof(p, &e);
			p = e;
		}
		if (fm_gpu_bert_forward(g, &pi, &len, 1, pool, v, &err) == FM_OK) {
			double cs = cosine(v, ref, d);
			good += cs >= 0.9999;
			wc = cs < wc || isnan(cs) ? cs : wc;
		}
		n++;
	}
	free(line);
	fclose(f);
	ok(n == 16 && good == n, "PyTorch fixture: %d of %d GPU vectors within cosine 0.9999 "
	    "(worst 1 - %.3g)", good, n, 1 - wc);
}

int
main(int argc, char **argv)
{
	static const uint32_t odd[] = { 1, 5, 64, 65, 130, 200, 17 };
	static const uint32_t big[] = { 512, 3, 129, 258 };
	const char *top = getenv("FM_TOP");
	char name[256], gguf[4096], cmd[8400], fixture[4096], dir[4096];
	struct fm_gpu_bert *g;
	struct fm_bert *b;
	const char *slash;
	int fd;

	if (fm_gpu_count() == 0) {
		printf("1..0 # SKIP no CUDA device\n");
		return 0;
	}
	if (!ok(fm_gpu_open(0, name, sizeof name, &err) == FM_OK, "open cuda:0: %s", name))
		return done_testing();

	test_add_norm(37, 384);
	test_add_norm(5, 100);
	test_add_norm(3, 1000);
	test_gelu(13, 101);
	test_gelu(64, 1536);
	test_pool(odd, 7, 384);
	test_pool(odd, 7, 45);
	test_attention(384, 12, odd, 7, true);
	test_attention(384, 12, odd, 7, false);
	test_attention(384, 12, big, 4, true);
	test_attention(256, 4, odd, 7, true);
	test_attention(256, 4, big, 4, false);
	test_attention(72, 3, odd, 7, true);     /* head of 24: the plain kernel either way */
	test_attention(200, 1, odd, 7, false);
	test_linear(33, 100, 72, false);
	test_linear(130, 384, 1152, true);
	test_linear(7, 1536, 384, false);

	/* The random BERT of test_bert, written by it beside this program. */
	slash = strrchr(argv[0], '/');
	snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - argv[0]) : 1, slash ? argv[0] : ".");
	snprintf(gguf, sizeof gguf, "/tmp/fm-gpu-bert-XXXXXX");
	if ((fd = mkstemp(gguf)) < 0)
		return 1;
	close(fd);
	snprintf(cmd, sizeof cmd, "'%s/test_bert' --write-gguf '%s'", dir, gguf);
	(void)argc;
	if (!ok(system(cmd) == 0, "random BERT written by %s/test_bert", dir)) {
		unlink(gguf);
		return done_testing();
	}
	b = fm_bert_open(gguf, &err);
	if (!ok(b != NULL, "it loads: %s", b ? "ok" : err.msg)) {
		unlink(gguf);
		return done_testing();
	}
	test_embed(b);
	g = fm_gpu_bert_new(b, 99, 1024, &err);
	ok(g == NULL && err.status == FM_EDEVICE, "device 99 refused: %s", err.msg);
	g = fm_gpu_bert_new(b, 0, 1024, &err);
	if (ok(g != NULL, "GPU encoder on %s: %s", name, g ? "ok" : err.msg)) {
		printf("# %llu MiB of GPU memory\n",
		    (unsigned long long)(fm_gpu_bert_bytes(g) >> 20));
		test_encoder(b, g);
		snprintf(fixture, sizeof fixture, "%s/tests/fixtures/bert-random-ref.txt",
		    top ? top : ".");
		test_fixture(g, fm_bert_dim(b), fixture);
		fm_gpu_bert_free(g);
	}
	fm_bert_close(b);
	unlink(gguf);
	snprintf(cmd, sizeof cmd, "%s.ids", gguf);
	unlink(cmd);
	snprintf(cmd, sizeof cmd, "%s.txt", gguf);
	unlink(cmd);
	return done_testing();
}
#endif
