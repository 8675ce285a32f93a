/*
 * forward.h - the llama forward pass on the CPU, and its ops one by one.
 *
 * The ops (RMSNorm, RoPE, SwiGLU, attention over the KV cache, matrix-vector
 * product) are plain, single-threaded functions: they are the reference that
 * the CUDA kernels are tested against, and the blocks the threaded pass is
 * built from.
 *
 * Ownership: fm_cpu_new() returns a context that owns its scratch memory
 * and worker threads and borrows the model, which must outlive it; the KV
 * cache is the caller's and is passed to every evaluation.
 */
#ifndef FM_FORWARD_H
#define FM_FORWARD_H

#include <stdbool.h>
#include <stdint.h>

#include "fm_error.h"
#include "kvcache.h"
#include "model.h"

/* Keys per tile of the online-softmax attention: its memory is this, whatever the context. */
#define FM_ATTN_TILE 64

/* out = x / rms(x) * w over n elements (out may be x). */
void fm_rmsnorm(float *out, const float *x, const float *w, uint32_t n, float eps);

/*
 * Rotates adjacent pairs (x[2i], x[2i+1]), i < n_rot/2, of each of n_head
 * heads of head_dim values by the angle pos * freq[i]: llama.cpp's "normal"
 * RoPE, the one the llama architecture uses.
 */
void fm_rope(float *x, uint32_t n_head, uint32_t head_dim, uint32_t n_rot,
             const float *freq, uint32_t pos);

/* out[i] = silu(gate[i]) * up[i] (out may be gate). */
void fm_swiglu(float *out, const float *gate, const float *up, uint32_t n);

/*
 * Attention of one query position: q and out are (n_head, head_dim); the
 * keys and values are positions [0, n_keys) of layer in kv, query head h
 * reading KV head h / (n_head / n_head_kv).  Scores are scaled by
 * 1/sqrt(head_dim) and the softmax is taken online, FM_ATTN_TILE keys at a
 * time.  scratch holds fm_attention_scratch(kv) floats.
 */
void fm_attention(float *out, const float *q, uint32_t n_head, const struct fm_kvcache *kv,
                  uint32_t layer, uint32_t n_keys, float *scratch);
uint32_t fm_attention_scratch(const struct fm_kvcache *kv, uint32_t n_head);
/* The same over the keys in rows rows[0 .. n_keys) of kv, summed in that order. */
void fm_attention_rows(float *out, const float *q, uint32_t n_head, const struct fm_kvcache *kv,
                       uint32_t layer, const int32_t *rows, uint32_t n_keys, float *scratch);

/* y (w->rows) = W x, x (w->cols); with accumulate, y += W x. */
void fm_matvec(float *y, const struct fm_weight *w, const float *x, bool accumulate);

struct fm_cpu;

/*
 * A CPU forward pass for batches of up to max_batch tokens, with n_threads
 * threads (0: one per CPU the process may run on).  FM_EIO when memory or
 * threads run out.
 */
struct fm_cpu *fm_cpu_new(const struct fm_model *m, uint32_t max_batch, uint32_t n_threads,
                          struct fm_err *err);
void fm_cpu_free(struct fm_cpu *c);
uint32_t fm_cpu_threads(const struct fm_cpu *c);

/*
 * Runs ids[0..n) (1 <= n <= max_batch) at positions pos0 .. pos0+n-1, which
 * must fit in kv, after the positions below pos0 are already in kv.  Stores
 * the new keys and values in kv and writes the logits of every token
 * (n, n_vocab) when all_logits, else of the last one (n_vocab).  FM_EDATA
 * for a token id outside the vocabulary, FM_EUSAGE when kv is too small.
 */
int fm_cpu_eval(struct fm_cpu *c, struct fm_kvcache *kv, const int32_t *ids, uint32_t n,
                uint32_t pos0, float *logits, bool all_logits, struct fm_err *err);

/*
 * One token of a sparse cache: token id at position pos (RoPE angle) has
 * its K and V stored in row wrow of kv and attends to the keys in rows
 * rows[0 .. n_keys), which must include wrow; the order of the rows is the
 * order of the softmax sums.  The logits go to logits (n_vocab).  This is
 * Lookahead Sparse Attention's decode step: kv is the resident store and
 * rows its slot table's view of the context.
 */
int fm_cpu_eval_rows(struct fm_cpu *c, struct fm_kvcache *kv, int32_t id, uint32_t pos,
                     uint32_t wrow, const int32_t *rows, uint32_t n_keys, float *logits,
                     struct fm_err *err);

/*
 * A probe sees the queries of every layer after RoPE, before attention:
 * q is (n, n_head * head_dim) for the n tokens of the batch.  For
 * evaluation (fm-decode --audit-attention); NULL removes it.
 */
typedef void (*fm_probe_fn)(void *arg, uint32_t layer, const float *q, uint32_t n);
void fm_cpu_set_probe(struct fm_cpu *c, fm_probe_fn fn, void *arg);

#endif
