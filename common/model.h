/*
 * model.h - a llama-architecture model loaded from a GGUF file as llama.cpp
 * writes it: hyperparameters from the llama.* keys, the weights of every
 * block checked for presence, type and shape, and the RoPE frequencies
 * worked out once from the rope metadata.
 *
 * Ownership: fm_model_load() returns a model that owns the GGUF mapping (the
 * matrices point into it, never copied) and the few small arrays it converts
 * (norm weights, RoPE frequencies); fm_model_free() releases all of them.
 * A loaded model is read-only and may be shared between threads.
 */
#ifndef FM_MODEL_H
#define FM_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fm_error.h"
#include "gguf.h"

/* Limits that keep every size product far from overflow. */
#define FM_MODEL_MAX_DIM     65536u
#define FM_MODEL_MAX_LAYERS  1024u
#define FM_MODEL_MAX_HEADS   1024u
#define FM_MODEL_MAX_VOCAB   (1u << 22)

/* Q8_0 as ggml stores it: 32 weights share one F16 scale. */
#define FM_Q8_0_BLOCK 32
struct fm_q8_0 {
	uint16_t d;               /* scale, F16 */
	int8_t qs[FM_Q8_0_BLOCK];
} __attribute__((packed));

/*
 * A weight matrix of rows x cols in the GGUF's own type: row r holds the
 * cols input weights of output r (GGUF ne[0] = cols, ne[1] = rows), so
 * y = W x is one dot product per row.
 */
struct fm_weight {
	enum fm_ggml_type type;   /* F32, F16, BF16 or Q8_0 */
	uint32_t rows, cols;
	size_t row_bytes;
	const void *data;         /* (rows, row_bytes), into the mapping */
	const char *name;         /* tensor name, for messages */
};

struct fm_hparams {
	uint32_t n_vocab;
	uint32_t dim;             /* embedding width */
	uint32_t n_layer;
	uint32_t n_head;          /* query heads */
	uint32_t n_head_kv;       /* key/value heads; n_head is a multiple (GQA) */
	uint32_t head_dim;
	uint32_t ffn_dim;         /* SwiGLU hidden width */
	uint32_t n_rot;           /* leading dimensions of each head that RoPE rotates */
	uint32_t n_ctx_train;     /* trained context length */
	float rope_base;          /* llama.rope.freq_base, 10000 when absent */
	float rope_scale;         /* linear position scale (1 / scaling factor), 1 when absent */
	float rms_eps;
};

struct fm_layer {
	float *attn_norm;         /* (dim) */
	struct fm_weight wq;      /* (n_head*head_dim, dim) */
	struct fm_weight wk;      /* (n_head_kv*head_dim, dim) */
	struct fm_weight wv;      /* (n_head_kv*head_dim, dim) */
	struct fm_weight wo;      /* (dim, n_head*head_dim) */
	float *ffn_norm;          /* (dim) */
	struct fm_weight w_gate;  /* (ffn_dim, dim) */
	struct fm_weight w_up;    /* (ffn_dim, dim) */
	struct fm_weight w_down;  /* (dim, ffn_dim) */
};

struct fm_model {
	struct fm_hparams hp;
	struct fm_gguf *gguf;       /* owned: the weights point into its mapping */
	struct fm_weight tok_embd;  /* (n_vocab, dim) */
	struct fm_layer *layers;    /* (n_layer) */
	float *output_norm;         /* (dim) */
	struct fm_weight output;    /* (n_vocab, dim); a copy of tok_embd when tied */
	bool tied;                  /* no output.weight: the embedding is the classifier */
	float *rope_freq;           /* (n_rot/2) angle per position of pair i, scale and rope_freqs.weight applied */
	enum fm_ggml_type wtype;    /* type of most matrix weights, for messages */
	uint64_t weight_bytes;      /* bytes of every matrix read per token (embedding row excluded) */
};

/*
 * Loads and checks path.  Returns NULL with FM_EIO (cannot read) or FM_EDATA
 * (not GGUF, not llama, a tensor missing, of an unsupported type or of the
 * wrong shape; the message names what was found).
 */
struct fm_model *fm_model_load(const char *path, struct fm_err *err);
void fm_model_free(struct fm_model *m);

/* Whether matrices of this type can be computed with. */
bool fm_weight_type_supported(enum fm_ggml_type t);

/* Converts row r of w to w->cols floats. */
void fm_weight_row(const struct fm_weight *w, uint32_t r, float *out);

#endif
