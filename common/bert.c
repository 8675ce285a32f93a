/*
 * bert.c - the BERT encoder's loader and CPU forward pass.
 *
 * Weights are converted to F32 once at load (MiniLM-sized encoders are tens
 * of MB), except the token embedding table, whose rows are converted as
 * tokens need them.  A batch is a set of sequences packed end to end with no
 * padding: the projections and the feed-forward layer are one OpenBLAS sgemm
 * over every token of the batch, and only attention looks at sequence
 * boundaries.  An encoder's sequences are at most n_ctx (512) tokens, so the
 * attention scores of one head (n_ctx x n_ctx) are held whole.
 */
#include "bert.h"

#include <cblas.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checksum.h"
#include "embedfile.h"
#include "gguf.h"

#define MAX_DIM 8192
#define MAX_LAYERS 256
#define MAX_CTX 8192

struct fm_bert {
	struct fm_gguf *g;
	struct fm_tok *tok;
	char name[256];
	uint32_t n_vocab, dim, n_layer, n_head, n_ff, n_ctx;
	float eps;
	int pooling;
	uint64_t fingerprint;
	double flops;        /* of every forward pass so far */

	const struct fm_gguf_tensor *tok_embd;   /* (n_vocab, dim), rows converted on use */
	float *type0;        /* (dim) token type 0's embedding: every token is of type 0 */
	float *pos;          /* (n_ctx, dim) */
	float *embd_ln_w;    /* (dim) */
	float *embd_ln_b;    /* (dim) */
	struct fm_bert_layer *layers;   /* (n_layer) */
	float *arena;        /* every converted weight above */

	/* Scratch, grown to the largest batch seen. */
	size_t cap_tok;
	float *x;            /* (T, dim) hidden states */
	float *qkv;          /* (T, 3*dim) */
	float *att;          /* (T, dim) attention output before wo */
	float *tmp;          /* (T, dim) */
	float *ff;           /* (T, n_ff) */
	float *scores;       /* (n_ctx, n_ctx) one head's attention */
};

static const char *
bert_str(struct fm_str s, char *buf, size_t n)
{
	size_t k = s.len < n - 1 ? (size_t)s.len : n - 1;

	memcpy(buf, s.ptr, k);
	buf[k] = '\0';
	return buf;
}

static int
opt_u32(const struct fm_gguf *g, const char *key, uint32_t *v, struct fm_err *err)
{
	return fm_gguf_get(g, key) == NULL ? FM_OK : fm_gguf_get_u32(g, key, v, err);
}

static int
hparams(struct fm_bert *b, struct fm_err *err)
{
	const struct fm_gguf *g = b->g;
	struct fm_str s;
	char buf[80];
	bool causal = false;
	uint32_t pooling = FM_POOL_MEAN;
	int rc;

	if ((rc = fm_gguf_get_str(g, "general.architecture", &s, err)) != FM_OK)
		return rc;
	if (!fm_str_eq(s, "bert"))
		return fm_err_set(err, FM_EDATA, "architecture '%s' is not supported as an encoder",
		    bert_str(s, buf, 64));
	if (fm_gguf_get_str(g, "general.name", &s, err) == FM_OK)
		bert_str(s, b->name, sizeof b->name);
	if ((rc = fm_gguf_get_u32(g, "bert.embedding_length", &b->dim, err)) != FM_OK ||
	    (rc = fm_gguf_get_u32(g, "bert.block_count", &b->n_layer, err)) != FM_OK ||
	    (rc = fm_gguf_get_u32(g, "bert.feed_forward_length", &b->n_ff, err)) != FM_OK ||
	    (rc = fm_gguf_get_u32(g, "bert.attention.head_count", &b->n_head, err)) != FM_OK ||
	    (rc = fm_gguf_get_u32(g, "bert.context_length", &b->n_ctx, err)) != FM_OK ||
	    (rc = fm_gguf_get_f32(g, "bert.attention.layer_norm_epsilon", &b->eps, err)) != FM_OK ||
	    (rc = opt_u32(g, "bert.pooling_type", &pooling, err)) != FM_OK)
		return rc;
	if (fm_gguf_get(g, "bert.attention.causal") != NULL &&
	    (rc = fm_gguf_get_bool(g, "bert.attention.causal", &causal, err)) != FM_OK)
		return rc;
	if (causal)
		return fm_err_set(err, FM_EDATA, "a causal bert model is not an encoder");
	if (b->dim == 0 || b->dim > MAX_DIM || b->dim > FM_EMBED_MAX_DIM)
		return fm_err_set(err, FM_EDATA, "bert.embedding_length %" PRIu32 " out of range",
		    b->dim);
	if (b->n_head == 0 || b->dim % b->n_head != 0)
		return fm_err_set(err, FM_EDATA, "bert.attention.head_count %" PRIu32
		    " does not divide embedding_length %" PRIu32, b->n_head, b->dim);
	if (b->n_layer == 0 || b->n_layer > MAX_LAYERS)
		return fm_err_set(err, FM_EDATA, "bert.block_count %" PRIu32 " out of range",
		    b->n_layer);
	if (b->n_ff == 0 || b->n_ff > 16 * MAX_DIM)
		return fm_err_set(err, FM_EDATA, "bert.feed_forward_length %" PRIu32
		    " out of range", b->n_ff);
	if (b->n_ctx < 3 || b->n_ctx > MAX_CTX)
		return fm_err_set(err, FM_EDATA, "bert.context_length %" PRIu32 " out of range",
		    b->n_ctx);
	if (!(b->eps > 0 && b->eps < 1))
		return fm_err_set(err, FM_EDATA, "bert.attention.layer_norm_epsilon out of range");
	/* llama.cpp's numbering: 0 none, 1 mean, 2 cls, 3 last, 4 rank. */
	if (pooling != FM_POOL_MEAN && pooling != FM_POOL_CLS)
		return fm_err_set(err, FM_EDATA, "bert.pooling_type %" PRIu32
		    " not supported (1 mean or 2 cls)", pooling);
	b->pooling = (int)pooling;
	return FM_OK;
}

/* The tensor name with its shape checked: ne = { n0, n1 } (n1 = 1 for a vector). */
static int
tensor(struct fm_bert *b, const char *name, uint64_t n0, uint64_t n1,
    const struct fm_gguf_tensor **out, struct fm_err *err)
{
	const struct fm_gguf_tensor *t = fm_gguf_tensor(b->g, name);

	if (t == NULL)
		return fm_err_set(err, FM_EDATA, "tensor %s missing", name);
	if (t->ne[0] != n0 || t->n_rows != n1)
		return fm_err_set(err, FM_EDATA, "tensor %s has shape %" PRIu64 "x%" PRIu64
		    ", expected %" PRIu64 "x%" PRIu64, name, t->ne[0], t->n_rows, n0, n1);
	if (!fm_ggml_type_dequantizable(t->type))
		return fm_err_set(err, FM_EDATA, "tensor %s: type %s not supported", name,
		    fm_ggml_type_name(t->type) ? fm_ggml_type_name(t->type) : "unknown");
	*out = t;
	return FM_OK;
}

/* Converts rows [0, n_rows) of tensor name (checked n0 x n1) into dst. */
static int
load(struct fm_bert *b, const char *name, uint64_t n0, uint64_t n1, float *dst,
    struct fm_err *err)
{
	const struct fm_gguf_tensor *t;
	int rc;

	if ((rc = tensor(b, name, n0, n1, &t, err)) != FM_OK)
		return rc;
	for (uint64_t r = 0; r < n1; r++)
		if ((rc = fm_gguf_dequant_row(t, r, dst + r * n0, err)) != FM_OK)
			return rc;
	b->fingerprint = fm_fnv64(b->fingerprint, name, strlen(name));
	b->fingerprint = fm_fnv64(b->fingerprint, &t->type, sizeof t->type);
	b->fingerprint = fm_fnv64(b->fingerprint, t->ne, sizeof t->ne);
	b->fingerprint = fm_fnv64(b->fingerprint, t->data, t->nbytes);
	return FM_OK;
}

static int
load_weights(struct fm_bert *b, struct fm_err *err)
{
	uint64_t d = b->dim, f = b->n_ff, per_layer = 4 * d * d + 2 * d * f + 10 * d + f;
	uint64_t total = 3 * d + b->n_ctx * d + b->n_layer * per_layer;
	const struct fm_gguf_tensor *types;
	float *p;
	char nm[96];
	int rc;

	if ((rc = tensor(b, "token_embd.weight", d, b->n_vocab, &b->tok_embd, err)) != FM_OK)
		return rc;
	if ((types = fm_gguf_tensor(b->g, "token_types.weight")) == NULL)
		return fm_err_set(err, FM_EDATA, "tensor token_types.weight missing");
	if (types->ne[0] != d || types->n_rows < 1 || !fm_ggml_type_dequantizable(types->type))
		return fm_err_set(err, FM_EDATA, "tensor token_types.weight has the wrong shape or type");
	if ((b->arena = malloc(total * sizeof(float))) == NULL ||
	    (b->layers = calloc(b->n_layer, sizeof *b->layers)) == NULL)
		return fm_err_errno(err, FM_EIO, ENOMEM, "encoder weights");
	b->fingerprint = fm_fnv64(b->fingerprint, "token_embd.weight", 17);
	b->fingerprint = fm_fnv64(b->fingerprint, b->tok_embd->data, b->tok_embd->nbytes);
	p = b->arena;
	b->type0 = p, p += d;
	if ((rc = fm_gguf_dequant_row(types, 0, b->type0, err)) != FM_OK)
		return rc;
	b->fingerprint = fm_fnv64(b->fingerprint, types->data, types->row_bytes);
	b->pos = p, p += b->n_ctx * d;
	b->embd_ln_w = p, p += d;
	b->embd_ln_b = p, p += d;
	{
		/* Some converters store more positions than context_length: take the first. */
		const struct fm_gguf_tensor *pt = fm_gguf_tensor(b->g, "position_embd.weight");

		if (pt == NULL)
			return fm_err_set(err, FM_EDATA, "tensor position_embd.weight missing");
		if (pt->ne[0] != d || pt->n_rows < b->n_ctx || !fm_ggml_type_dequantizable(pt->type))
			return fm_err_set(err, FM_EDATA, "tensor position_embd.weight has %" PRIu64
			    " positions of %" PRIu64 " (%s), expected %" PRIu32 " of %" PRIu64,
			    pt->n_rows, pt->ne[0], fm_ggml_type_name(pt->type) ?
			    fm_ggml_type_name(pt->type) : "unknown type", b->n_ctx, d);
		for (uint64_t r = 0; r < b->n_ctx; r++)
			if ((rc = fm_gguf_dequant_row(pt, r, b->pos + r * d, err)) != FM_OK)
				return rc;
		b->fingerprint = fm_fnv64(b->fingerprint, pt->data, pt->nbytes);
	}
	if ((rc = load(b, "token_embd_norm.weight", d, 1, b->embd_ln_w, err)) != FM_OK ||
	    (rc = load(b, "token_embd_norm.bias", d, 1, b->embd_ln_b, err)) != FM_OK)
		return rc;
	for (uint32_t i = 0; i < b->n_layer; i++) {
		struct fm_bert_layer *l = &b->layers[i];
		static const char *const qkv[3] = { "attn_q", "attn_k", "attn_v" };

		l->wqkv = p, p += 3 * d * d;
		l->bqkv = p, p += 3 * d;
		l->wo = p, p += d * d;
		l->bo = p, p += d;
		l->ln1_w = p, p += d;
		l->ln1_b = p, p += d;
		l->w_up = p, p += f * d;
		l->b_up = p, p += f;
		l->w_down = p, p += d * f;
		l->b_down = p, p += d;
		l->ln2_w = p, p += d;
		l->ln2_b = p, p += d;
		for (int k = 0; k < 3; k++) {
			snprintf(nm, sizeof nm, "blk.%u.%s.weight", i, qkv[k]);
			if ((rc = load(b, nm, d, d, l->wqkv + k * d * d, err)) != FM_OK)
				return rc;
			snprintf(nm, sizeof nm, "blk.%u.%s.bias", i, qkv[k]);
			if ((rc = load(b, nm, d, 1, l->bqkv + k * d, err)) != FM_OK)
				return rc;
		}
#define LOAD(suffix, n0, n1, dst) do { \
		snprintf(nm, sizeof nm, "blk.%u.%s", i, suffix); \
		if ((rc = load(b, nm, n0, n1, dst, err)) != FM_OK) \
			return rc; \
	} while (0)
		LOAD("attn_output.weight", d, d, l->wo);
		LOAD("attn_output.bias", d, 1, l->bo);
		LOAD("attn_output_norm.weight", d, 1, l->ln1_w);
		LOAD("attn_output_norm.bias", d, 1, l->ln1_b);
		LOAD("ffn_up.weight", d, f, l->w_up);
		LOAD("ffn_up.bias", f, 1, l->b_up);
		LOAD("ffn_down.weight", f, d, l->w_down);
		LOAD("ffn_down.bias", d, 1, l->b_down);
		LOAD("layer_output_norm.weight", d, 1, l->ln2_w);
		LOAD("layer_output_norm.bias", d, 1, l->ln2_b);
#undef LOAD
	}
	return FM_OK;
}

struct fm_bert *
fm_bert_open(const char *path, struct fm_err *err)
{
	struct fm_bert *b = calloc(1, sizeof *b);
	uint64_t tf;
	uint32_t hp[6];

	if (b == NULL) {
		fm_err_errno(err, FM_EIO, ENOMEM, "encoder");
		return NULL;
	}
	if ((b->g = fm_gguf_open(path, err)) == NULL || hparams(b, err) != FM_OK)
		goto fail;
	if ((b->tok = fm_tok_from_gguf(b->g, err)) == NULL)
		goto fail;
	if (fm_tok_kind(b->tok) != FM_TOK_BERT) {
		fm_err_set(err, FM_EDATA, "tokenizer '%s' is not a bert (WordPiece) tokenizer",
		    fm_tok_kind_name(b->tok));
		goto fail;
	}
	if (fm_tok_bos(b->tok) < 0 || fm_tok_eos(b->tok) < 0) {
		fm_err_set(err, FM_EDATA, "vocabulary has no [CLS] or [SEP] token");
		goto fail;
	}
	b->n_vocab = fm_tok_n_vocab(b->tok);
	hp[0] = b->dim, hp[1] = b->n_layer, hp[2] = b->n_head, hp[3] = b->n_ff;
	hp[4] = b->n_ctx;
	memcpy(&hp[5], &b->eps, 4);
	tf = fm_tok_fingerprint(b->tok);
	b->fingerprint = fm_fnv64(FM_FNV64_INIT, "bert", 4);
	b->fingerprint = fm_fnv64(b->fingerprint, hp, sizeof hp);
	b->fingerprint = fm_fnv64(b->fingerprint, &tf, sizeof tf);
	if (load_weights(b, err) != FM_OK)
		goto fail;
	return b;
fail:
	fm_bert_close(b);
	return NULL;
}

void
fm_bert_close(struct fm_bert *b)
{
	if (b == NULL)
		return;
	fm_tok_free(b->tok);
	fm_gguf_close(b->g);
	free(b->arena);
	free(b->layers);
	free(b->x);
	free(b->qkv);
	free(b->att);
	free(b->tmp);
	free(b->ff);
	free(b->scores);
	free(b);
}

uint32_t fm_bert_dim(const struct fm_bert *b) { return b->dim; }
uint32_t fm_bert_n_ctx(const struct fm_bert *b) { return b->n_ctx; }
int fm_bert_pooling(const struct fm_bert *b) { return b->pooling; }
const char *fm_bert_name(const struct fm_bert *b) { return b->name; }
const struct fm_tok *fm_bert_tok(const struct fm_bert *b) { return b->tok; }
uint64_t fm_bert_fingerprint(const struct fm_bert *b) { return b->fingerprint; }
double fm_bert_flops(const struct fm_bert *b) { return b->flops; }

void
fm_bert_weights(const struct fm_bert *b, struct fm_bert_weights *w)
{
	w->n_vocab = b->n_vocab;
	w->dim = b->dim;
	w->n_layer = b->n_layer;
	w->n_head = b->n_head;
	w->n_ff = b->n_ff;
	w->n_ctx = b->n_ctx;
	w->eps = b->eps;
	w->tok_embd = b->tok_embd;
	w->type0 = b->type0;
	w->pos = b->pos;
	w->embd_ln_w = b->embd_ln_w;
	w->embd_ln_b = b->embd_ln_b;
	w->layers = b->layers;
}

static int
reserve(struct fm_bert *b, size_t T, struct fm_err *err)
{
	size_t d = b->dim;
	float *p[5];

	if (b->scores == NULL &&
	    (b->scores = malloc((size_t)b->n_ctx * b->n_ctx * sizeof(float))) == NULL)
		return fm_err_errno(err, FM_EIO, ENOMEM, "encoder scratch");
	if (T <= b->cap_tok)
		return FM_OK;
	p[0] = realloc(b->x, T * d * sizeof(float));
	if (p[0] != NULL)
		b->x = p[0];
	p[1] = realloc(b->qkv, T * 3 * d * sizeof(float));
	if (p[1] != NULL)
		b->qkv = p[1];
	p[2] = realloc(b->att, T * d * sizeof(float));
	if (p[2] != NULL)
		b->att = p[2];
	p[3] = realloc(b->tmp, T * d * sizeof(float));
	if (p[3] != NULL)
		b->tmp = p[3];
	p[4] = realloc(b->ff, T * b->n_ff * sizeof(float));
	if (p[4] != NULL)
		b->ff = p[4];
	for (int i = 0; i < 5; i++)
		if (p[i] == NULL)
			return fm_err_errno(err, FM_EIO, ENOMEM, "encoder scratch");
	b->cap_tok = T;
	return FM_OK;
}

/* y (T, n_out) = x (T, n_in) W^T + bias, W (n_out, n_in) row-major as GGUF stores it. */
static void
linear(const float *x, size_t T, size_t n_in, const float *w, const float *bias, size_t n_out,
    float *y)
{
	for (size_t t = 0; t < T; t++)
		memcpy(y + t * n_out, bias, n_out * sizeof *y);
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)n_out, (int)n_in,
	    1.0f, x, (int)n_in, w, (int)n_in, 1.0f, y, (int)n_out);
}

/* x = LayerNorm(x + r) row by row (r may be NULL), in double for the statistics. */
void
fm_bert_add_norm(float *x, const float *r, size_t T, size_t d, const float *w, const float *bias,
    float eps)
{
	for (size_t t = 0; t < T; t++) {
		float *row = x + t * d;
		double mean = 0, var = 0, inv;

		if (r != NULL)
			for (size_t i = 0; i < d; i++)
				row[i] += r[t * d + i];
		for (size_t i = 0; i < d; i++)
			mean += row[i];
		mean /= (double)d;
		for (size_t i = 0; i < d; i++)
			var += (row[i] - mean) * (row[i] - mean);
		inv = 1 / sqrt(var / (double)d + eps);
		for (size_t i = 0; i < d; i++)
			row[i] = (float)((row[i] - mean) * inv) * w[i] + bias[i];
	}
}

/*
 * exp(x) for x in [-87, 0] (Cephes' polynomial after range reduction, relative
 * error below 1e-7), written with no branch and no library call so that the
 * loops below vectorise at -O2: the GELU and the softmax would otherwise
 * spend more time in libm than the matrix products take.
 */
static inline float
exp_neg(float x)
{
	float n, r, p, sc;
	int32_t e;

	n = (x * 1.44269504f + 12582912.0f) - 12582912.0f;   /* round to nearest */
	r = x - n * 0.693359375f + n * 2.12194440e-4f;
	p = 1.9875691500e-4f;
	p = p * r + 1.3981999507e-3f;
	p = p * r + 8.3334519073e-3f;
	p = p * r + 4.1665795894e-2f;
	p = p * r + 1.6666665459e-1f;
	p = p * r + 5.0000001201e-1f;
	p = p * r * r + r + 1.0f;
	e = ((int32_t)n + 127) * (1 << 23);
	memcpy(&sc, &e, 4);
	return p * sc;
}

/*
 * GELU with erf by Abramowitz and Stegun 7.1.26 (|error| < 1.5e-7 in erf,
 * < 5e-7 in the result here); z is clamped to 9, where erf is 1 in floats,
 * by min(z, 9) = (z + 9 - |z - 9|) / 2, which needs no branch.
 */
static inline float
gelu(float v)
{
	float a = v * 0.70710678118654752f, z = fabsf(a);
	float zc = (z + 9.0f - fabsf(z - 9.0f)) * 0.5f;
	float t = 1.0f / (1.0f + 0.3275911f * zc);
	float y = 1.0f - ((((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t -
	    0.284496736f) * t + 0.254829592f) * t * exp_neg(-zc * zc);

	return 0.5f * v * (1.0f + copysignf(y, a));
}

/* x[i] = GELU(x[i]); blocks of 8 with a constant trip count are what -O2 vectorises. */
void
fm_bert_gelu(float *x, size_t n)
{
	size_t i = 0;

	for (; i + 8 <= n; i += 8)
		for (int k = 0; k < 8; k++)
			x[i + k] = gelu(x[i + k]);
	for (; i < n; i++)
		x[i] = gelu(x[i]);
}

/* x[i] = exp(x[i] - mx) for x[i] <= mx, clamped at exp(-87); returns the sum. */
static float
exp_row(float *x, size_t n, float mx)
{
	float sum = 0;
	size_t i = 0;

	for (; i + 8 <= n; i += 8)
		for (int k = 0; k < 8; k++) {
			float v = x[i + k] - mx;

			x[i + k] = exp_neg((v - 87.0f + fabsf(v + 87.0f)) * 0.5f);
		}
	for (; i < n; i++) {
		float v = x[i] - mx;

		x[i] = exp_neg((v - 87.0f + fabsf(v + 87.0f)) * 0.5f);
	}
	for (i = 0; i < n; i++)
		sum += x[i];
	return sum;
}

/*
 * Self-attention of one sequence of L tokens: qkv (L, 3 d), out rows ld_out
 * apart, scores (L, L) scratch.
 */
void
fm_bert_attend(const float *qkv, size_t L, size_t d, size_t n_head, float *scores, float *out,
    size_t ld_out)
{
	size_t hd = d / n_head, ld = 3 * d;
	const float *q = qkv, *k = q + d, *v = q + 2 * d;
	float scale = 1.0f / sqrtf((float)hd), *s = scores;

	for (size_t h = 0; h < n_head; h++) {
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)L, (int)L, (int)hd,
		    scale, q + h * hd, (int)ld, k + h * hd, (int)ld, 0.0f, s, (int)L);
		for (size_t i = 0; i < L; i++) {
			float *row = s + i * L, mx = row[0], inv;

			for (size_t j = 1; j < L; j++)
				mx = row[j] > mx ? row[j] : mx;
			inv = 1.0f / exp_row(row, L, mx);
			for (size_t j = 0; j < L; j++)
				row[j] *= inv;
		}
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)L, (int)hd, (int)L,
		    1.0f, s, (int)L, v + h * hd, (int)ld, 0.0f, out + h * hd, (int)ld_out);
	}
}

int
fm_bert_embed(const struct fm_bert *b, const int32_t *const *ids, const uint32_t *lens,
    size_t n_seq, float *x, struct fm_err *err)
{
	size_t d = b->dim, t = 0;
	int rc;

	for (size_t s = 0; s < n_seq; s++)
		for (uint32_t i = 0; i < lens[s]; i++, t++) {
			float *row = x + t * d;

			if ((rc = fm_gguf_dequant_row(b->tok_embd, (uint64_t)ids[s][i], row, err)) != FM_OK)
				return rc;
			for (size_t j = 0; j < d; j++)
				row[j] += b->type0[j] + b->pos[i * d + j];
		}
	fm_bert_add_norm(x, NULL, t, d, b->embd_ln_w, b->embd_ln_b, b->eps);
	return FM_OK;
}

void
fm_bert_pool(const float *x, const uint32_t *lens, size_t n_seq, size_t d, int pooling,
    float *out)
{
	size_t t = 0;

	for (size_t s = 0; s < n_seq; t += lens[s], s++) {
		float *o = out + s * d;

		if (pooling == FM_POOL_CLS) {
			memcpy(o, x + t * d, d * sizeof *o);
			continue;
		}
		/* Row by row, in the order the states lie in memory. */
		memset(o, 0, d * sizeof *o);
		for (uint32_t i = 0; i < lens[s]; i++)
			for (size_t j = 0; j < d; j++)
				o[j] += x[(t + i) * d + j];
		for (size_t j = 0; j < d; j++)
			o[j] /= (float)lens[s];
	}
}

int
fm_bert_forward(struct fm_bert *b, const int32_t *const *ids, const uint32_t *lens,
    size_t n_seq, int pooling, float *out, struct fm_err *err)
{
	size_t d = b->dim, T = 0, t;
	int rc;

	for (size_t s = 0; s < n_seq; s++) {
		if (lens[s] == 0 || lens[s] > b->n_ctx)
			return fm_err_set(err, FM_EDATA, "sequence of %" PRIu32
			    " tokens outside 1..%" PRIu32, lens[s], b->n_ctx);
		for (uint32_t i = 0; i < lens[s]; i++)
			if (ids[s][i] < 0 || (uint32_t)ids[s][i] >= b->n_vocab)
				return fm_err_set(err, FM_EDATA, "token id %" PRId32
				    " outside the vocabulary", ids[s][i]);
		T += lens[s];
	}
	if ((rc = reserve(b, T, err)) != FM_OK)
		return rc;
	for (size_t s = 0; s < n_seq; s++)
		b->flops += 2.0 * b->n_layer * ((double)lens[s] * (4.0 * d * d + 2.0 * d * b->n_ff) +
		    2.0 * lens[s] * lens[s] * d);

	if ((rc = fm_bert_embed(b, ids, lens, n_seq, b->x, err)) != FM_OK)
		return rc;
	for (uint32_t li = 0; li < b->n_layer; li++) {
		const struct fm_bert_layer *l = &b->layers[li];

		linear(b->x, T, d, l->wqkv, l->bqkv, 3 * d, b->qkv);
		t = 0;
		for (size_t s = 0; s < n_seq; t += lens[s], s++)
			fm_bert_attend(b->qkv + t * 3 * d, lens[s], d, b->n_head, b->scores,
			    b->att + t * d, d);
		linear(b->att, T, d, l->wo, l->bo, d, b->tmp);
		fm_bert_add_norm(b->x, b->tmp, T, d, l->ln1_w, l->ln1_b, b->eps);
		linear(b->x, T, d, l->w_up, l->b_up, b->n_ff, b->ff);
		fm_bert_gelu(b->ff, T * b->n_ff);
		linear(b->ff, T, b->n_ff, l->w_down, l->b_down, d, b->tmp);
		fm_bert_add_norm(b->x, b->tmp, T, d, l->ln2_w, l->ln2_b, b->eps);
	}
	fm_bert_pool(b->x, lens, n_seq, d, pooling, out);
	return FM_OK;
}
