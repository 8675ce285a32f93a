/*
 * bert.h - a BERT encoder on the CPU, loaded from a `bert` GGUF as
 * llama.cpp's converter writes it: token, position and token-type
 * embeddings, embedding LayerNorm, post-norm blocks (self-attention, then a
 * GELU feed-forward layer, each added to its input and LayerNorm'd), then
 * mean or CLS pooling and L2 normalisation, as sentence-transformers does.
 *
 * Ownership: fm_bert_open() returns an encoder that owns its GGUF mapping,
 * tokenizer, weights (converted to F32) and scratch memory; everything is
 * released by fm_bert_close().  An encoder is not to be shared between
 * threads (the scratch memory is per encoder).
 */
#ifndef FM_BERT_H
#define FM_BERT_H

#include <stddef.h>
#include <stdint.h>

#include "fm_error.h"
#include "tokenizer.h"

struct fm_bert;

/*
 * Opens path.  FM_EIO when it cannot be read; FM_EDATA when it is not a
 * usable bert GGUF ("architecture 'llama' is not supported as an encoder",
 * a missing tensor or key, a shape that does not match the hyperparameters).
 */
struct fm_bert *fm_bert_open(const char *path, struct fm_err *err);
void fm_bert_close(struct fm_bert *b);

uint32_t fm_bert_dim(const struct fm_bert *b);
uint32_t fm_bert_n_ctx(const struct fm_bert *b);      /* positions, [CLS] and [SEP] included */
int fm_bert_pooling(const struct fm_bert *b);         /* the GGUF's: FM_POOL_MEAN or FM_POOL_CLS */
const char *fm_bert_name(const struct fm_bert *b);    /* general.name, or "" */
const struct fm_tok *fm_bert_tok(const struct fm_bert *b);
/*
 * FNV-1a 64 of the hyperparameters, the tokenizer's fingerprint and every
 * tensor's name, type, shape and data: equal fingerprints, equal vectors.
 */
uint64_t fm_bert_fingerprint(const struct fm_bert *b);

/*
 * Runs n_seq sequences through the encoder: ids[s] holds lens[s] token ids
 * (1..n_ctx, [CLS] and [SEP] included, every id in the vocabulary).  Writes
 * each sequence's pooled token states, NOT normalised, to out + s * dim, so
 * that a caller can average the parts of a split text before normalising.
 * pooling is FM_POOL_MEAN or FM_POOL_CLS.  The sequences are packed without
 * padding; the dense layers see all their tokens at once.  Uses the
 * OpenBLAS threads; not reentrant (the scratch is the encoder's).
 */
/*
 * Floating-point operations of every forward pass so far: 2 per multiply-add
 * of the projections and the feed-forward layer, and of attention's two
 * products (for the -v report and the benchmarks).
 */
double fm_bert_flops(const struct fm_bert *b);

int fm_bert_forward(struct fm_bert *b, const int32_t *const *ids, const uint32_t *lens,
    size_t n_seq, int pooling, float *out, struct fm_err *err);

/*
 * The weights as F32 arrays the encoder owns (the GPU encoder of
 * kernels/bert.cu copies them), and the steps of fm_bert_forward() that are
 * the CPU twins of its kernels and their test references.
 */
struct fm_bert_layer {
	float *wqkv;     /* (3*dim, dim): the q, k and v projections' rows stacked */
	float *bqkv;     /* (3*dim) */
	float *wo;       /* (dim, dim) */
	float *bo;       /* (dim) */
	float *ln1_w;    /* (dim) attn_output_norm */
	float *ln1_b;    /* (dim) */
	float *w_up;     /* (n_ff, dim) */
	float *b_up;     /* (n_ff) */
	float *w_down;   /* (dim, n_ff) */
	float *b_down;   /* (dim) */
	float *ln2_w;    /* (dim) layer_output_norm */
	float *ln2_b;    /* (dim) */
};

struct fm_bert_weights {
	uint32_t n_vocab, dim, n_layer, n_head, n_ff, n_ctx;
	float eps;
	const struct fm_gguf_tensor *tok_embd;   /* (n_vocab, dim) in its GGUF type */
	const float *type0;          /* (dim) token type 0's embedding */
	const float *pos;            /* (n_ctx, dim) */
	const float *embd_ln_w;      /* (dim) */
	const float *embd_ln_b;      /* (dim) */
	const struct fm_bert_layer *layers;   /* (n_layer) */
};

/* Pointers into b, valid until fm_bert_close(b). */
void fm_bert_weights(const struct fm_bert *b, struct fm_bert_weights *w);

/*
 * x (T, dim) = LayerNorm(token + token type 0 + position embeddings) of the
 * packed sequences (ids checked by the caller).  twin: fm_gpu_bert_embed
 */
int fm_bert_embed(const struct fm_bert *b, const int32_t *const *ids, const uint32_t *lens,
    size_t n_seq, float *x, struct fm_err *err);
/* x (T, d) = LayerNorm(x + r) row by row, r NULL for none.  twin: fm_gpu_bert_add_norm */
void fm_bert_add_norm(float *x, const float *r, size_t T, size_t d, const float *w,
    const float *bias, float eps);
/* x[i] = GELU(x[i]), the erf form.  twin: fm_gpu_bert_gelu */
void fm_bert_gelu(float *x, size_t n);
/*
 * Self-attention of one sequence of L tokens: qkv (L, 3 d), each token's q,
 * k and v side by side with their biases added; out (L, d) with rows ld_out
 * floats apart; scores (L, L) scratch.  twin: fm_gpu_bert_attention
 */
void fm_bert_attend(const float *qkv, size_t L, size_t d, size_t n_head, float *scores,
    float *out, size_t ld_out);
/* out (n_seq, d) = mean or CLS pooling of x (T, d).  twin: fm_gpu_bert_pool */
void fm_bert_pool(const float *x, const uint32_t *lens, size_t n_seq, size_t d, int pooling,
    float *out);

#endif
