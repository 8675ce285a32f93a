/*
 * model.c - loading a llama-architecture GGUF.  Everything a forward pass
 * relies on is checked here, once, so that the compute code can trust
 * shapes and types: a model that loads is a model that runs.
 */
#include "model.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool
fm_weight_type_supported(enum fm_ggml_type t)
{
	return t == FM_GGML_F32 || t == FM_GGML_F16 || t == FM_GGML_BF16 ||
	    t == FM_GGML_Q8_0;
}

void
fm_weight_row(const struct fm_weight *w, uint32_t r, float *out)
{
	const uint8_t *p = (const uint8_t *)w->data + (size_t)r * w->row_bytes;
	uint32_t i, b;
	uint16_t h;

	switch (w->type) {
	case FM_GGML_F32:
		memcpy(out, p, (size_t)w->cols * sizeof(float));
		break;
	case FM_GGML_F16:
		for (i = 0; i < w->cols; i++) {
			memcpy(&h, p + 2 * (size_t)i, 2);
			out[i] = fm_f16_to_f32(h);
		}
		break;
	case FM_GGML_BF16:
		for (i = 0; i < w->cols; i++) {
			memcpy(&h, p + 2 * (size_t)i, 2);
			out[i] = fm_bf16_to_f32(h);
		}
		break;
	case FM_GGML_Q8_0:
		for (b = 0; b < w->cols / FM_Q8_0_BLOCK; b++) {
			const struct fm_q8_0 *q = (const struct fm_q8_0 *)p + b;
			float d = fm_f16_to_f32(q->d);
			for (i = 0; i < FM_Q8_0_BLOCK; i++)
				out[b * FM_Q8_0_BLOCK + i] = d * q->qs[i];
		}
		break;
	default:
		/* fm_model_load() admits no other type. */
		memset(out, 0, (size_t)w->cols * sizeof(float));
		break;
	}
}

static const char *
type_name(enum fm_ggml_type t)
{
	const char *s = fm_ggml_type_name(t);

	return s != NULL ? s : "unknown";
}

static int
get_matrix(const struct fm_gguf *g, const char *name, uint32_t rows, uint32_t cols,
    struct fm_weight *w, struct fm_err *err)
{
	const struct fm_gguf_tensor *t = fm_gguf_tensor(g, name);

	if (t == NULL)
		return fm_err_set(err, FM_EDATA, "missing tensor %s", name);
	if (t->n_dims != 2 || t->ne[0] != cols || t->ne[1] != rows)
		return fm_err_set(err, FM_EDATA,
		    "tensor %s has shape [%llu, %llu, %llu, %llu] where [%u, %u] was expected",
		    name, (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
		    (unsigned long long)t->ne[2], (unsigned long long)t->ne[3], cols, rows);
	if (!fm_weight_type_supported(t->type))
		return fm_err_set(err, FM_EDATA,
		    "tensor %s has type %s; supported are f32, f16, bf16 and q8_0",
		    name, type_name(t->type));
	if (t->type == FM_GGML_Q8_0 && cols % FM_Q8_0_BLOCK != 0)
		return fm_err_set(err, FM_EDATA, "tensor %s: q8_0 rows of %u weights", name, cols);
	w->type = t->type;
	w->rows = rows;
	w->cols = cols;
	w->row_bytes = t->row_bytes;
	w->data = t->data;
	w->name = name;
	return FM_OK;
}

static int
get_vector(const struct fm_gguf *g, const char *name, uint32_t n, float **out,
    struct fm_err *err)
{
	const struct fm_gguf_tensor *t = fm_gguf_tensor(g, name);
	int rc;

	if (t == NULL)
		return fm_err_set(err, FM_EDATA, "missing tensor %s", name);
	if (t->n_dims != 1 || t->ne[0] != n)
		return fm_err_set(err, FM_EDATA,
		    "tensor %s has shape [%llu, %llu] where [%u] was expected", name,
		    (unsigned long long)t->ne[0], (unsigned long long)t->ne[1], n);
	if (!fm_ggml_type_dequantizable(t->type))
		return fm_err_set(err, FM_EDATA, "tensor %s has unsupported type %s",
		    name, type_name(t->type));
	if ((*out = malloc((size_t)n * sizeof(float))) == NULL)
		return fm_err_errno(err, FM_EIO, errno, "cannot allocate %s", name);
	if ((rc = fm_gguf_dequant_row(t, 0, *out, err)) != FM_OK)
		return rc;
	for (uint32_t i = 0; i < n; i++)
		if (!isfinite((*out)[i]))
			return fm_err_set(err, FM_EDATA, "tensor %s holds a value that is not finite", name);
	return FM_OK;
}

/* An optional unsigned key: absent leaves *out as it was. */
static int
opt_u32(const struct fm_gguf *g, const char *key, uint32_t *out, struct fm_err *err)
{
	if (fm_gguf_get(g, key) == NULL)
		return FM_OK;
	return fm_gguf_get_u32(g, key, out, err);
}

static int
opt_f32(const struct fm_gguf *g, const char *key, float *out, struct fm_err *err)
{
	if (fm_gguf_get(g, key) == NULL)
		return FM_OK;
	return fm_gguf_get_f32(g, key, out, err);
}

static int
load_hparams(struct fm_model *m, struct fm_err *err)
{
	const struct fm_gguf *g = m->gguf;
	struct fm_hparams *hp = &m->hp;
	struct fm_str s;
	uint32_t key_len = 0, val_len = 0;
	float factor = 0;
	int rc;

	if ((rc = fm_gguf_get_str(g, "general.architecture", &s, err)) != FM_OK)
		return rc;
	if (!fm_str_eq(s, "llama"))
		return fm_err_set(err, FM_EDATA,
		    "architecture '%.*s' is not supported, only 'llama'",
		    (int)(s.len > 64 ? 64 : s.len), s.ptr);
	if ((rc = fm_gguf_get_u32(g, "llama.embedding_length", &hp->dim, err)) != FM_OK ||
	    (rc = fm_gguf_get_u32(g, "llama.block_count", &hp->n_layer, err)) != FM_OK ||
	    (rc = fm_gguf_get_u32(g, "llama.feed_forward_length", &hp->ffn_dim, err)) != FM_OK ||
	    (rc = fm_gguf_get_u32(g, "llama.attention.head_count", &hp->n_head, err)) != FM_OK ||
	    (rc = fm_gguf_get_u32(g, "llama.context_length", &hp->n_ctx_train, err)) != FM_OK ||
	    (rc = fm_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &hp->rms_eps, err)) != FM_OK)
		return rc;
	hp->n_head_kv = hp->n_head;
	hp->rope_base = 10000.0f;
	hp->rope_scale = 1.0f;
	if ((rc = opt_u32(g, "llama.attention.head_count_kv", &hp->n_head_kv, err)) != FM_OK ||
	    (rc = opt_u32(g, "llama.attention.key_length", &key_len, err)) != FM_OK ||
	    (rc = opt_u32(g, "llama.attention.value_length", &val_len, err)) != FM_OK ||
	    (rc = opt_f32(g, "llama.rope.freq_base", &hp->rope_base, err)) != FM_OK)
		return rc;

	if (hp->dim == 0 || hp->dim > FM_MODEL_MAX_DIM)
		return fm_err_set(err, FM_EDATA, "llama.embedding_length %u is out of range", hp->dim);
	if (hp->ffn_dim == 0 || hp->ffn_dim > 16 * FM_MODEL_MAX_DIM)
		return fm_err_set(err, FM_EDATA, "llama.feed_forward_length %u is out of range", hp->ffn_dim);
	if (hp->n_layer == 0 || hp->n_layer > FM_MODEL_MAX_LAYERS)
		return fm_err_set(err, FM_EDATA, "llama.block_count %u is out of range", hp->n_layer);
	if (hp->n_head == 0 || hp->n_head > FM_MODEL_MAX_HEADS)
		return fm_err_set(err, FM_EDATA, "llama.attention.head_count %u is out of range", hp->n_head);
	if (hp->n_head_kv == 0 || hp->n_head % hp->n_head_kv != 0)
		return fm_err_set(err, FM_EDATA,
		    "llama.attention.head_count_kv %u does not divide head_count %u",
		    hp->n_head_kv, hp->n_head);
	if (key_len == 0) {
		if (hp->dim % hp->n_head != 0)
			return fm_err_set(err, FM_EDATA,
			    "embedding_length %u is not a multiple of head_count %u", hp->dim, hp->n_head);
		key_len = hp->dim / hp->n_head;
	}
	if (val_len == 0)
		val_len = key_len;
	if (val_len != key_len)
		return fm_err_set(err, FM_EDATA,
		    "attention key_length %u and value_length %u differ", key_len, val_len);
	if (key_len > 4096)
		return fm_err_set(err, FM_EDATA, "attention key_length %u is out of range", key_len);
	hp->head_dim = key_len;
	hp->n_rot = hp->head_dim;
	if ((rc = opt_u32(g, "llama.rope.dimension_count", &hp->n_rot, err)) != FM_OK)
		return rc;
	if (hp->n_rot == 0 || hp->n_rot % 2 != 0 || hp->n_rot > hp->head_dim)
		return fm_err_set(err, FM_EDATA,
		    "llama.rope.dimension_count %u does not fit head size %u", hp->n_rot, hp->head_dim);
	if (!(hp->rms_eps > 0 && hp->rms_eps < 1))
		return fm_err_set(err, FM_EDATA,
		    "llama.attention.layer_norm_rms_epsilon %g is out of range", hp->rms_eps);
	if (!(hp->rope_base > 1 && isfinite(hp->rope_base)))
		return fm_err_set(err, FM_EDATA, "llama.rope.freq_base %g is out of range", hp->rope_base);

	/* Linear position scaling, under its current and its older key. */
	if (fm_gguf_get(g, "llama.rope.scaling.type") != NULL) {
		if ((rc = fm_gguf_get_str(g, "llama.rope.scaling.type", &s, err)) != FM_OK)
			return rc;
		if (fm_str_eq(s, "linear")) {
			if ((rc = fm_gguf_get_f32(g, "llama.rope.scaling.factor", &factor, err)) != FM_OK)
				return rc;
		} else if (!fm_str_eq(s, "none"))
			return fm_err_set(err, FM_EDATA,
			    "rope scaling '%.*s' is not supported, only 'linear' and 'none'",
			    (int)(s.len > 64 ? 64 : s.len), s.ptr);
	} else if ((rc = opt_f32(g, "llama.rope.scale_linear", &factor, err)) != FM_OK)
		return rc;
	if (factor != 0) {
		if (!(factor >= 1 && factor <= 1024))
			return fm_err_set(err, FM_EDATA, "rope scaling factor %g is out of range", factor);
		hp->rope_scale = 1.0f / factor;
	}
	return FM_OK;
}

/*
 * The angle per position of each rotated pair i: scale * base^(-2i/n_rot),
 * divided by rope_freqs.weight[i] where the model has that tensor (llama 3).
 */
static int
load_rope(struct fm_model *m, struct fm_err *err)
{
	const struct fm_hparams *hp = &m->hp;
	uint32_t n = hp->n_rot / 2, i;
	float *ff = NULL;
	int rc;

	if (fm_gguf_tensor(m->gguf, "rope_freqs.weight") != NULL &&
	    (rc = get_vector(m->gguf, "rope_freqs.weight", n, &ff, err)) != FM_OK) {
		free(ff);
		return rc;
	}
	if ((m->rope_freq = malloc((size_t)n * sizeof(float))) == NULL) {
		free(ff);
		return fm_err_errno(err, FM_EIO, errno, "cannot allocate");
	}
	for (i = 0; i < n; i++) {
		double f = hp->rope_scale * pow(hp->rope_base, -2.0 * i / hp->n_rot);
		if (ff != NULL) {
			if (!(ff[i] > 0)) {
				free(ff);
				return fm_err_set(err, FM_EDATA,
				    "tensor rope_freqs.weight holds a factor that is not positive");
			}
			f /= ff[i];
		}
		m->rope_freq[i] = (float)f;
	}
	free(ff);
	return FM_OK;
}

static uint64_t
matrix_bytes(const struct fm_weight *w)
{
	return (uint64_t)w->rows * w->row_bytes;
}

/* Layer tensor names live in one allocation owned by the model (the layers array's tail). */
#define NAME_LEN 40
enum { N_LAYER_NAMES = 7 };

static int
load_layer(struct fm_model *m, uint32_t l, char (*names)[NAME_LEN], struct fm_err *err)
{
	const struct fm_hparams *hp = &m->hp;
	struct fm_layer *L = &m->layers[l];
	uint32_t qd = hp->n_head * hp->head_dim, kvd = hp->n_head_kv * hp->head_dim;
	char nm[NAME_LEN];
	int rc;
	struct {
		const char *suffix;
		struct fm_weight *w;
		uint32_t rows, cols;
	} mats[N_LAYER_NAMES] = {
		{ "attn_q", &L->wq, qd, hp->dim },
		{ "attn_k", &L->wk, kvd, hp->dim },
		{ "attn_v", &L->wv, kvd, hp->dim },
		{ "attn_output", &L->wo, hp->dim, qd },
		{ "ffn_gate", &L->w_gate, hp->ffn_dim, hp->dim },
		{ "ffn_up", &L->w_up, hp->ffn_dim, hp->dim },
		{ "ffn_down", &L->w_down, hp->dim, hp->ffn_dim },
	};

	snprintf(nm, sizeof nm, "blk.%u.attn_norm.weight", l);
	if ((rc = get_vector(m->gguf, nm, hp->dim, &L->attn_norm, err)) != FM_OK)
		return rc;
	snprintf(nm, sizeof nm, "blk.%u.ffn_norm.weight", l);
	if ((rc = get_vector(m->gguf, nm, hp->dim, &L->ffn_norm, err)) != FM_OK)
		return rc;
	for (int i = 0; i < N_LAYER_NAMES; i++) {
		snprintf(names[i], NAME_LEN, "blk.%u.%s.weight", l, mats[i].suffix);
		if ((rc = get_matrix(m->gguf, names[i], mats[i].rows, mats[i].cols,
		    mats[i].w, err)) != FM_OK)
			return rc;
		m->weight_bytes += matrix_bytes(mats[i].w);
	}
	return FM_OK;
}

struct fm_model *
fm_model_load(const char *path, struct fm_err *err)
{
	const struct fm_gguf_tensor *te;
	struct fm_model *m;
	char (*names)[NAME_LEN];
	size_t layers_bytes;
	int rc;

	if ((m = calloc(1, sizeof *m)) == NULL) {
		fm_err_errno(err, FM_EIO, errno, "cannot allocate");
		return NULL;
	}
	if ((m->gguf = fm_gguf_open(path, err)) == NULL)
		goto fail;
	if ((rc = load_hparams(m, err)) != FM_OK)
		goto fail;

	if ((te = fm_gguf_tensor(m->gguf, "token_embd.weight")) == NULL) {
		fm_err_set(err, FM_EDATA, "missing tensor token_embd.weight");
		goto fail;
	}
	if (te->n_dims != 2 || te->ne[1] == 0 || te->ne[1] > FM_MODEL_MAX_VOCAB) {
		fm_err_set(err, FM_EDATA, "tensor token_embd.weight has an unusable shape");
		goto fail;
	}
	m->hp.n_vocab = (uint32_t)te->ne[1];
	if (get_matrix(m->gguf, "token_embd.weight", m->hp.n_vocab, m->hp.dim,
	    &m->tok_embd, err) != FM_OK)
		goto fail;

	layers_bytes = (size_t)m->hp.n_layer * sizeof *m->layers;
	m->layers = calloc(1, layers_bytes +
	    (size_t)m->hp.n_layer * N_LAYER_NAMES * NAME_LEN);
	if (m->layers == NULL) {
		fm_err_errno(err, FM_EIO, errno, "cannot allocate");
		goto fail;
	}
	names = (char (*)[NAME_LEN])((char *)m->layers + layers_bytes);
	for (uint32_t l = 0; l < m->hp.n_layer; l++)
		if (load_layer(m, l, names + (size_t)l * N_LAYER_NAMES, err) != FM_OK)
			goto fail;

	if (get_vector(m->gguf, "output_norm.weight", m->hp.dim, &m->output_norm, err) != FM_OK)
		goto fail;
	if (fm_gguf_tensor(m->gguf, "output.weight") != NULL) {
		if (get_matrix(m->gguf, "output.weight", m->hp.n_vocab, m->hp.dim,
		    &m->output, err) != FM_OK)
			goto fail;
	} else {
		m->output = m->tok_embd;
		m->tied = true;
	}
	m->weight_bytes += matrix_bytes(&m->output);
	m->wtype = m->layers[0].wq.type;
	if (load_rope(m, err) != FM_OK)
		goto fail;
	return m;
fail:
	fm_model_free(m);
	return NULL;
}

void
fm_model_free(struct fm_model *m)
{
	if (m == NULL)
		return;
	if (m->layers != NULL)
		for (uint32_t l = 0; l < m->hp.n_layer; l++) {
			free(m->layers[l].attn_norm);
			free(m->layers[l].ffn_norm);
		}
	free(m->layers);
	free(m->output_norm);
	free(m->rope_freq);
	if (m->gguf != NULL)
		fm_gguf_close(m->gguf);
	free(m);
}
