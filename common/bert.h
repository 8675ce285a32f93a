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

#endif
