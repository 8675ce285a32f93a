/*
 * decode_int.h - what decode.c and lsa_decode.c share: the state of one
 * fm-decode run and the entry points of its sparse (LSA) half.  Private to
 * those two files.
 */
#ifndef FM_DECODE_INT_H
#define FM_DECODE_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "decode.h"
#include "forward.h"
#include "indexfile.h"
#include "io.h"
#include "lsa.h"
#include "model.h"
#include "sample.h"
#include "tokenizer.h"
#ifdef FM_CUDA
#include "gpu.h"
#endif

struct lsa;

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
	struct fm_out stats_js;      /* --stats-json, opened before the work so a bad path fails first */
	bool stats_open;
	char *text;          /* prompt text */
	size_t text_len;
	float *logits;       /* (batch, n_vocab) */
	char *piece;         /* decoded text scratch */
	size_t piece_len, piece_cap;
	const char *shown;   /* what stdout starts with: the prompt (or, with a document, the question) */
	size_t shown_len;
	uint64_t prefill_kv; /* device KV bytes during prefill */
	bool kv_pinned;      /* s->kv is registered with the GPU as the mirror */
	bool layered;        /* LSA on a GPU: the prefill runs layer by layer into the mirror */
	struct lsa *lsa;     /* Lookahead Sparse Attention, or NULL: dense */
};

/* The KV bytes a dense decoder would hold, and those held in prefill and decode. */
struct fm_kv_peaks {
	uint64_t full, prefill, decode;
};

static inline double
fm_ratio(double a, double b)
{
	return b > 0 ? a / b : 0;
}

/*
 * The sparse half, in the order decode.c calls it.  Each returns FM_OK or a
 * status with err filled and *subject set, as run_decode() does.
 */
/* Allocates s->lsa; [BOS] + the chunk file's document + the question into s->ids. */
int lsa_doc_context(struct state *s, const char **subject, struct fm_err *err);
/* Index, encoder, reserve, tables, audit file and --select: every input check before the work. */
int lsa_open(struct state *s, uint32_t n_pos, const char **subject, struct fm_err *err);
/* After the prefill: the store, its fixed rows, the first resident set. */
int lsa_start(struct state *s, const char **subject, struct fm_err *err);
/* A new window before the token at pos: the last one's audit, a new choice, the copies. */
int lsa_new_window(struct state *s, uint32_t pos, const char **subject, struct fm_err *err);
/* A sparse decode step (and, with --audit-dense, the dense one beside it). */
int lsa_eval(struct state *s, int32_t id, uint32_t pos, int32_t *next, struct fm_err *err);
/* The text of an emitted token, kept for the next query. */
int lsa_emitted(struct state *s, const char *p, size_t n, struct fm_err *err);
/* The dense model's logits of the last step (--audit-dense). */
const float *lsa_dense_logits(struct state *s);
/* The forward pass's probe for --audit-attention (arg: the state). */
void lsa_probe(void *arg, uint32_t layer, const float *q, uint32_t n);
/* The last window's audit; the audit file committed. */
int lsa_finish(struct state *s, const char **subject, struct fm_err *err);
/* Rows of the store (slots, BOS, question and generated tokens). */
uint64_t lsa_store_rows(const struct state *s);
/* The sparse lines of -v (json false) or fields of --stats-json (json true). */
void lsa_report(struct state *s, const struct fm_kv_peaks *k, FILE *f, bool json);
void lsa_free(struct lsa *L);

#endif
