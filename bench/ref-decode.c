/*
 * ref-decode.c - the straightforward baseline for bench/decode-cpu.sh: the
 * forward pass of llama2.c's run.c (float weights in memory, one
 * matrix-vector loop per layer, parallel over rows with OpenMP as in its
 * "runomp" build, the prompt fed one token at a time) on any llama GGUF,
 * whose weights it widens to F32 at load as a llama2.c checkpoint holds them.
 *
 * usage: ref-decode model.gguf n_new token...
 * Feeds the tokens, then n_new greedy tokens (not stopping at EOS), and
 * prints the chosen ids and, on standard error, prefill and decode speeds in
 * the form fm-decode -v uses.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gguf.h"

struct layer {
	float *att_norm, *wq, *wk, *wv, *wo, *ffn_norm, *w1, *w2, *w3;
};

struct net {
	int dim, hidden, n_layers, n_heads, n_kv, head, vocab, n_rot, seq;
	float eps, base;
	float *emb, *final_norm, *cls;
	struct layer *l;
	float *kc, *vc;   /* (layer, seq, n_kv * head) */
};

static void
die(const char *what, const char *why)
{
	fprintf(stderr, "ref-decode: %s: %s\n", what, why);
	exit(3);
}

static float *
widen(const struct fm_gguf *g, const char *name)
{
	const struct fm_gguf_tensor *t = fm_gguf_tensor(g, name);
	struct fm_err err = { 0 };
	float *out;

	if (t == NULL)
		die(name, "missing tensor");
	if ((out = malloc(t->n_rows * t->ne[0] * sizeof(float))) == NULL)
		die(name, "out of memory");
	for (uint64_t r = 0; r < t->n_rows; r++)
		if (fm_gguf_dequant_row(t, r, out + r * t->ne[0], &err) != FM_OK)
			die(name, err.msg);
	return out;
}

static uint32_t
u32(const struct fm_gguf *g, const char *key, uint32_t dflt)
{
	struct fm_err err = { 0 };
	uint32_t v;

	if (fm_gguf_get(g, key) == NULL)
		return dflt;
	if (fm_gguf_get_u32(g, key, &v, &err) != FM_OK)
		die(key, err.msg);
	return v;
}

static float
f32(const struct fm_gguf *g, const char *key, float dflt)
{
	struct fm_err err = { 0 };
	float v;

	if (fm_gguf_get(g, key) == NULL)
		return dflt;
	if (fm_gguf_get_f32(g, key, &v, &err) != FM_OK)
		die(key, err.msg);
	return v;
}

static void
load(struct net *n, const char *path, int seq)
{
	struct fm_err err = { 0 };
	struct fm_gguf *g = fm_gguf_open(path, &err);
	char name[64];
	size_t kvd;

	if (g == NULL)
		die(path, err.msg);
	n->dim = (int)u32(g, "llama.embedding_length", 0);
	n->hidden = (int)u32(g, "llama.feed_forward_length", 0);
	n->n_layers = (int)u32(g, "llama.block_count", 0);
	n->n_heads = (int)u32(g, "llama.attention.head_count", 1);
	n->n_kv = (int)u32(g, "llama.attention.head_count_kv", (uint32_t)n->n_heads);
	n->head = n->dim / n->n_heads;
	n->n_rot = (int)u32(g, "llama.rope.dimension_count", (uint32_t)n->head);
	n->eps = f32(g, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
	n->base = f32(g, "llama.rope.freq_base", 10000.0f);
	n->vocab = (int)fm_gguf_tensor(g, "token_embd.weight")->ne[1];
	n->seq = seq;
	n->emb = widen(g, "token_embd.weight");
	n->final_norm = widen(g, "output_norm.weight");
	n->cls = fm_gguf_tensor(g, "output.weight") ? widen(g, "output.weight") : n->emb;
	n->l = calloc(n->n_layers, sizeof *n->l);
	for (int i = 0; i < n->n_layers; i++) {
#define W(field, suffix) (snprintf(name, sizeof name, "blk.%d." suffix ".weight", i), \
    n->l[i].field = widen(g, name))
		W(att_norm, "attn_norm"); W(wq, "attn_q"); W(wk, "attn_k"); W(wv, "attn_v");
		W(wo, "attn_output"); W(ffn_norm, "ffn_norm"); W(w1, "ffn_gate");
		W(w2, "ffn_down"); W(w3, "ffn_up");
#undef W
	}
	fm_gguf_close(g);
	kvd = (size_t)n->n_kv * n->head;
	n->kc = calloc((size_t)n->n_layers * seq * kvd, sizeof(float));
	n->vc = calloc((size_t)n->n_layers * seq * kvd, sizeof(float));
	if (n->kc == NULL || n->vc == NULL)
		die(path, "out of memory for the kv cache");
}

static void
rmsnorm(float *o, const float *x, const float *w, int size, float eps)
{
	float ss = 0;

	for (int j = 0; j < size; j++)
		ss += x[j] * x[j];
	ss = 1.0f / sqrtf(ss / size + eps);
	for (int j = 0; j < size; j++)
		o[j] = w[j] * (ss * x[j]);
}

/* xout (d) = W (d, n) x (n), as run.c writes it. */
static void
matmul(float *xout, const float *x, const float *w, int n, int d)
{
	int i;

#pragma omp parallel for private(i)
	for (i = 0; i < d; i++) {
		float val = 0.0f;
		for (int j = 0; j < n; j++)
			val += w[(size_t)i * n + j] * x[j];
		xout[i] = val;
	}
}

static void
softmax(float *x, int size)
{
	float mx = x[0], sum = 0;

	for (int i = 1; i < size; i++)
		if (x[i] > mx)
			mx = x[i];
	for (int i = 0; i < size; i++) {
		x[i] = expf(x[i] - mx);
		sum += x[i];
	}
	for (int i = 0; i < size; i++)
		x[i] /= sum;
}

static void
forward(struct net *n, int token, int pos, float *logits)
{
	static float *x, *xb, *xb2, *q, *hb, *hb2, *att;
	int dim = n->dim, hs = n->head, kvd = n->n_kv * hs, kv_mul = n->n_heads / n->n_kv;

	if (x == NULL) {
		x = malloc(dim * 4); xb = malloc(dim * 4); xb2 = malloc(dim * 4); q = malloc(dim * 4);
		hb = malloc(n->hidden * 4); hb2 = malloc(n->hidden * 4);
		att = malloc((size_t)n->n_heads * n->seq * 4);
	}
	memcpy(x, n->emb + (size_t)token * dim, dim * sizeof(float));
	for (int l = 0; l < n->n_layers; l++) {
		struct layer *L = &n->l[l];
		float *k = n->kc + ((size_t)l * n->seq + pos) * kvd;
		float *v = n->vc + ((size_t)l * n->seq + pos) * kvd;
		int h;

		rmsnorm(xb, x, L->att_norm, dim, n->eps);
		matmul(q, xb, L->wq, dim, dim);
		matmul(k, xb, L->wk, dim, kvd);
		matmul(v, xb, L->wv, dim, kvd);
		for (int i = 0; i < dim; i += 2) {
			int hd = i % hs;
			float freq, val, fcr, fci;
			if (hd >= n->n_rot)
				continue;
			freq = 1.0f / powf(n->base, hd / (float)n->n_rot);
			val = pos * freq;
			fcr = cosf(val);
			fci = sinf(val);
			for (int t = 0; t < (i < kvd ? 2 : 1); t++) {
				float *vec = t == 0 ? q : k, v0 = vec[i], v1 = vec[i + 1];
				vec[i] = v0 * fcr - v1 * fci;
				vec[i + 1] = v0 * fci + v1 * fcr;
			}
		}
#pragma omp parallel for private(h)
		for (h = 0; h < n->n_heads; h++) {
			float *qh = q + h * hs, *a = att + (size_t)h * n->seq, *o = xb + h * hs;
			for (int t = 0; t <= pos; t++) {
				const float *kt = n->kc + ((size_t)l * n->seq + t) * kvd + (h / kv_mul) * hs;
				float s = 0;
				for (int i = 0; i < hs; i++)
					s += qh[i] * kt[i];
				a[t] = s / sqrtf((float)hs);
			}
			softmax(a, pos + 1);
			memset(o, 0, hs * sizeof(float));
			for (int t = 0; t <= pos; t++) {
				const float *vt = n->vc + ((size_t)l * n->seq + t) * kvd + (h / kv_mul) * hs;
				for (int i = 0; i < hs; i++)
					o[i] += a[t] * vt[i];
			}
		}
		matmul(xb2, xb, L->wo, dim, dim);
		for (int i = 0; i < dim; i++)
			x[i] += xb2[i];
		rmsnorm(xb, x, L->ffn_norm, dim, n->eps);
		matmul(hb, xb, L->w1, dim, n->hidden);
		matmul(hb2, xb, L->w3, dim, n->hidden);
		for (int i = 0; i < n->hidden; i++)
			hb[i] = hb[i] * (1.0f / (1.0f + expf(-hb[i]))) * hb2[i];
		matmul(xb, hb, L->w2, n->hidden, dim);
		for (int i = 0; i < dim; i++)
			x[i] += xb[i];
	}
	rmsnorm(x, x, n->final_norm, dim, n->eps);
	matmul(logits, x, n->cls, dim, n->vocab);
}

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int
main(int argc, char *argv[])
{
	struct net n;
	float *logits;
	int n_new, n_prompt, tok = 0;
	double t0, t1, t2;

	if (argc < 4) {
		fprintf(stderr, "usage: ref-decode model.gguf n_new token...\n");
		return 2;
	}
	n_new = atoi(argv[2]);
	n_prompt = argc - 3;
	memset(&n, 0, sizeof n);
	load(&n, argv[1], n_prompt + n_new);
	logits = malloc((size_t)n.vocab * sizeof(float));
	t0 = now();
	for (int p = 0; p < n_prompt; p++)
		forward(&n, atoi(argv[3 + p]), p, logits);
	t1 = now();
	for (int i = 0; i < n_new; i++) {
		tok = 0;
		for (int j = 1; j < n.vocab; j++)
			if (logits[j] > logits[tok])
				tok = j;
		printf("%s%d", i ? " " : "", tok);
		if (i + 1 < n_new)
			forward(&n, tok, n_prompt + i, logits);
	}
	t2 = now();
	printf("\n");
	fprintf(stderr, "ref-decode: prefill: %d tokens in %.3f s, %.1f tokens/s\n", n_prompt,
	    t1 - t0, n_prompt / (t1 - t0));
	fprintf(stderr, "ref-decode: decode: %d tokens in %.3f s, %.1f tokens/s\n", n_new - 1,
	    t2 - t1, (n_new - 1) / (t2 - t1));
	return 0;
}
