/*
 * gpu.h - the CUDA side of fm as C code sees it, built only with FM_CUDA
 * (make CUDA=1): devices, device memory, the kernels of kernels/ops.cu, each
 * named with its CPU twin in forward.h or sample.h that is its test
 * reference, and the whole forward pass of kernels/forward_cuda.cu.
 *
 * Pointers marked "device" are GPU memory from fm_gpu_malloc().  Kernels are
 * launched on the default stream and return the launch status; errors of
 * the work itself show at the next call that waits (fm_gpu_get,
 * fm_gpu_sync).  Every failure is FM_EDEVICE with a message naming the CUDA
 * or cuBLAS call, its file:line and the device.
 *
 * Ownership: fm_gpu_fwd_new() copies the model's weights to the GPU and owns
 * them, its KV cache and its buffers; the host model must outlive it only
 * for its hyperparameters.
 */
#ifndef FM_GPU_H
#define FM_GPU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fm_error.h"
#include "kvcache.h"
#include "model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Usable CUDA devices: 0 without a driver or without a device. */
int fm_gpu_count(void);
/* Makes device current; its name goes to name (NUL-terminated). */
int fm_gpu_open(int device, char *name, size_t name_len, struct fm_err *err);

void *fm_gpu_malloc(size_t n, struct fm_err *err);
void fm_gpu_free(void *p);
int fm_gpu_put(void *dst_device, const void *src, size_t n, struct fm_err *err);
int fm_gpu_get(void *dst, const void *src_device, size_t n, struct fm_err *err);
int fm_gpu_sync(struct fm_err *err);

/* Kernels.  rows are independent vectors, back to back. */

/* twin fm_rmsnorm: out (rows, n) = rmsnorm(x (rows, n)) * w (n) */
int fm_gpu_rmsnorm(float *out, const float *x, const float *w, uint32_t rows, uint32_t n,
                   float eps, struct fm_err *err);
/*
 * twin fm_rope (on q and k) then fm_kv_put: qkv (rows, (n_head + 2
 * n_head_kv) head_dim) holds each row's q, k and v end to end, row i at
 * position *pos0 + i (pos0: device); the rotated q goes to q_out (rows,
 * n_head * head_dim), the rotated k and the v to those positions of one
 * layer's kc and vc ((n_pos, n_head_kv * head_dim), F16 or F32).
 */
int fm_gpu_rope_kv(float *q_out, const float *qkv, void *kc, void *vc, bool f16, uint32_t rows,
                   uint32_t n_head, uint32_t n_head_kv, uint32_t head_dim, uint32_t n_rot,
                   const float *freq, const int32_t *pos0, struct fm_err *err);
/* twin fm_swiglu over n elements */
int fm_gpu_swiglu(float *out, const float *gate, const float *up, size_t n, struct fm_err *err);
/*
 * twin fm_attention: out and q (n_q, n_head, head_dim); query i attends to
 * keys [0, *pos0 + i] of kc/vc ((n_pos, n_head_kv, head_dim), F16 or F32),
 * with an online softmax over tiles of keys.
 */
int fm_gpu_attention(float *out, const float *q, const void *kc, const void *vc, bool f16,
                     uint32_t n_q, uint32_t n_head, uint32_t n_head_kv, uint32_t head_dim,
                     const int32_t *pos0, struct fm_err *err);
/*
 * twin fm_attention over a sparse cache (fm_cpu_eval_rows): one query
 * attends to the keys in rows rows[0 .. *n_keys) of kc/vc, in that order
 * (rows and n_keys: device).
 */
int fm_gpu_attention_rows(float *out, const float *q, const void *kc, const void *vc, bool f16,
                          uint32_t n_head, uint32_t n_head_kv, uint32_t head_dim,
                          const int32_t *rows, const int32_t *n_keys, struct fm_err *err);
/*
 * The short-context decode form of attention: one query over keys 0 ..
 * *pos0 (rows NULL) or rows rows[0 .. *n_keys), at most
 * fm_gpu_attention_short_max() of them (0: no such form for head_dim).
 */
int fm_gpu_attention_short(float *out, const float *q, const void *kc, const void *vc, bool f16,
                           uint32_t n_head, uint32_t n_head_kv, uint32_t head_dim,
                           const int32_t *pos0, const int32_t *rows, const int32_t *n_keys,
                           struct fm_err *err);
uint32_t fm_gpu_attention_short_max(uint32_t head_dim, bool f16);
/* twin fm_argmax: out (device) = { id, count of values that are not finite } */
int fm_gpu_argmax(const float *x, uint32_t n, int32_t *out, struct fm_err *err);
/*
 * twin fm_matvec: y (w->rows) = W x, or += with accumulate; w->data is
 * device memory holding the weights in their GGUF type.
 */
int fm_gpu_matvec(float *y, const struct fm_weight *w, const float *x, bool accumulate,
                  struct fm_err *err);
/*
 * The decode step's fused forms.  fm_gpu_ffn_in: out (wg->rows) =
 * fm_swiglu(Wg x', Wu x') with x' = fm_rmsnorm(x) * nw.  fm_gpu_qkv: q, k, v =
 * Wq x', Wk x', Wv x', then fm_rope on q and k at position *pos and
 * fm_kv_put of k and v into row *pos of kc/vc (n_head_kv * head_dim wide,
 * F16 or F32); even head_dim and n_rot only.  pos: device.
 */
int fm_gpu_ffn_in(float *out, const struct fm_weight *wg, const struct fm_weight *wu,
                  const float *x, const float *nw, float eps, struct fm_err *err);
int fm_gpu_qkv(float *q, float *k, float *v, const struct fm_weight *wq,
               const struct fm_weight *wk, const struct fm_weight *wv, const float *x,
               const float *nw, float eps, void *kc, void *vc, bool f16, uint32_t head_dim,
               uint32_t n_rot, const float *freq, const int32_t *pos, struct fm_err *err);

/* The forward pass on a GPU, with its own KV cache of n_pos positions. */
struct fm_gpu_fwd;
struct fm_gpu_fwd *fm_gpu_fwd_new(const struct fm_model *m, int device, uint32_t max_batch,
                                  uint32_t n_pos, enum fm_kv_type kv_type, bool all_logits,
                                  struct fm_err *err);
void fm_gpu_fwd_free(struct fm_gpu_fwd *f);
/* Device name, and bytes of GPU memory held (weights, KV cache, buffers) and of the KV cache. */
const char *fm_gpu_fwd_device(const struct fm_gpu_fwd *f);
uint64_t fm_gpu_fwd_kv_bytes(const struct fm_gpu_fwd *f);
uint64_t fm_gpu_fwd_bytes(const struct fm_gpu_fwd *f);
/*
 * As fm_cpu_eval().  With logits NULL, the logits stay on the GPU and *next
 * gets the argmax of the last token's (or -1 when they are not finite); with
 * logits, next may be NULL.
 */
int fm_gpu_fwd_eval(struct fm_gpu_fwd *f, const int32_t *ids, uint32_t n, uint32_t pos0,
                    float *logits, bool all_logits, int32_t *next, struct fm_err *err);
/*
 * Greedy decoding run ahead of the host, so the GPU does not wait for it
 * between tokens: fm_gpu_fwd_queue() queues a decode step at position pos
 * without waiting for it, fed id, or with id -1 the argmax of the step queued
 * before it (at pos - 1); fm_gpu_fwd_take() waits for the oldest step queued
 * and gives its argmax as fm_gpu_fwd_eval() would (-1: not finite).  At most
 * FM_GPU_AHEAD steps are queued at once.  Queuing with an id, the other
 * evaluations, fm_gpu_fwd_set_store() and fm_gpu_fwd_free() first wait for
 * the steps queued and drop their argmax.
 */
#define FM_GPU_AHEAD 4
int fm_gpu_fwd_queue(struct fm_gpu_fwd *f, int32_t id, uint32_t pos, struct fm_err *err);
int fm_gpu_fwd_take(struct fm_gpu_fwd *f, int32_t *next, struct fm_err *err);

/*
 * Lookahead Sparse Attention.  After a dense prefill, the cache is copied
 * to the host mirror (fm_gpu_fwd_kv_get) and replaced by a resident store
 * of n_rows rows (fm_gpu_fwd_set_store); chunks are copied into it from the
 * mirror (fm_gpu_fwd_kv_put, asynchronous on the forward's stream when the
 * mirror is pinned), the keys to attend to are given as store rows
 * (fm_gpu_fwd_set_rows), and each step runs with fm_gpu_fwd_eval_rows(),
 * the twin of fm_cpu_eval_rows().
 */
/*
 * The dense prefill of ids[0..n) layer by layer, straight into the mirror:
 * the device holds one layer's keys and values at a time (*kv_peak gets
 * their bytes), the same results as fm_gpu_fwd_eval() in batches of
 * max_batch.  The forward's own cache is not used.  logits and next of the
 * last token as in fm_gpu_fwd_eval().
 */
int fm_gpu_fwd_prefill_layers(struct fm_gpu_fwd *f, const int32_t *ids, uint32_t n,
                              struct fm_kvcache *mirror, float *logits, int32_t *next,
                              uint64_t *kv_peak, struct fm_err *err);
/* Positions [pos, pos + n) of every layer to the same positions of mirror. */
int fm_gpu_fwd_kv_get(struct fm_gpu_fwd *f, struct fm_kvcache *mirror, uint32_t pos, uint32_t n,
                      struct fm_err *err);
/* Frees the cache and allocates a store of n_rows rows and a slot table of max_keys rows. */
int fm_gpu_fwd_set_store(struct fm_gpu_fwd *f, uint32_t n_rows, uint32_t max_keys,
                         struct fm_err *err);
/* Positions [pos, pos + n) of every layer of mirror to store rows [row, row + n). */
int fm_gpu_fwd_kv_put(struct fm_gpu_fwd *f, uint32_t row, const struct fm_kvcache *mirror,
                      uint32_t pos, uint32_t n, struct fm_err *err);
/* The slot table: rows[0 .. n), n <= max_keys. */
int fm_gpu_fwd_set_rows(struct fm_gpu_fwd *f, const int32_t *rows, uint32_t n, struct fm_err *err);
/*
 * One token id at position pos, its K and V to store row wrow, attending to
 * the first n_keys rows of the slot table; logits and next as in
 * fm_gpu_fwd_eval().
 */
int fm_gpu_fwd_eval_rows(struct fm_gpu_fwd *f, int32_t id, uint32_t pos, uint32_t wrow,
                         uint32_t n_keys, float *logits, int32_t *next, struct fm_err *err);
/*
 * With q_host (n_layer, n_head * head_dim floats, host), each sparse step
 * also copies every layer's rotated queries there, for an audit of the
 * attention (fm-decode --audit-attention); such steps run without the CUDA
 * graph.  NULL turns it off.
 */
void fm_gpu_fwd_probe(struct fm_gpu_fwd *f, float *q_host);
/*
 * Page-locks host memory so that copies from it can be asynchronous; false
 * when it cannot be (copies then still work, synchronously).
 */
bool fm_gpu_pin(void *p, size_t n);
void fm_gpu_unpin(void *p);


/*
 * ---- The BERT encoder on a GPU (kernels/bert.cu) ----
 * Each kernel names its CPU twin in bert.h.  F16 arrays are uint16_t here
 * (IEEE half bits).  T tokens of n_seq sequences are packed end to end;
 * start (n_seq + 1, device) holds where each begins, and the end.
 */
struct fm_bert;

/* twin fm_bert_embed: x (T, dim) F32 and xh F16 = LayerNorm(tok[ids] + type0 + pos[pos_ids]) */
int fm_gpu_bert_embed(float *x, uint16_t *xh, const float *tok, const float *type0,
                      const float *pos, const float *ln_w, const float *ln_b, const int32_t *ids,
                      const int32_t *pos_ids, uint32_t T, uint32_t dim, float eps,
                      struct fm_err *err);
/* twin fm_bert_add_norm: x (T, dim) = LayerNorm(x + (y + bias)), xh = x rounded to F16 */
int fm_gpu_bert_add_norm(float *x, uint16_t *xh, const float *y, const float *bias,
                         const float *w, const float *b, uint32_t T, uint32_t dim, float eps,
                         struct fm_err *err);
/* twin fm_bert_gelu: out (T, n) F16 = GELU(y + bias), y F16 (out == y allowed) */
int fm_gpu_bert_gelu(uint16_t *out, const uint16_t *y, const float *bias, uint32_t T, uint32_t n,
                     struct fm_err *err);
/*
 * twin fm_bert_attend per sequence: out (T, dim) F16 from qkv (T, 3 dim) F16
 * without biases, bqkv (3 dim) F32; sequences launched in order[0 .. n_seq)
 * (device), max_len the longest.  tc: the tensor-core kernel where the head
 * size is 32 or 64, else (and with tc false) the plain one (heads up to 256).
 */
int fm_gpu_bert_attention(uint16_t *out, const uint16_t *qkv, const float *bqkv,
                          const int32_t *start, const int32_t *order, uint32_t n_seq,
                          uint32_t max_len, uint32_t dim, uint32_t n_head, bool tc,
                          struct fm_err *err);
/* twin fm_bert_pool: out (n_seq, dim) = mean or CLS (pooling) of x (T, dim) */
int fm_gpu_bert_pool(float *out, const float *x, const int32_t *start, uint32_t n_seq,
                     uint32_t dim, int pooling, struct fm_err *err);
/* y (T, n_out) F32 or F16 (y16) = x (T, n_in) W^T, x and W (n_out, n_in) F16 (cuBLAS) */
int fm_gpu_bert_linear(void *y, bool y16, const uint16_t *x, uint32_t T, uint32_t n_in,
                       const uint16_t *w, uint32_t n_out, struct fm_err *err);

/*
 * The whole encoder: fm_gpu_bert_new() copies b's weights to GPU device
 * (matrices as F16), with room for max_tokens tokens a batch (it grows when
 * a batch needs more); b must outlive it only until it returns.  A batch
 * (ids, lens, n_seq, pooling as fm_bert_forward) is queued by
 * fm_gpu_bert_submit(), which copies the ids and returns at once; at most
 * two are in flight, and fm_gpu_bert_wait() writes the oldest one's pooled,
 * unnormalised vectors to out (n_seq, dim).  fm_gpu_bert_forward() is the
 * two in one, with nothing in flight.  Not to be shared between threads.
 */
struct fm_gpu_bert;
struct fm_gpu_bert *fm_gpu_bert_new(const struct fm_bert *b, int device, uint32_t max_tokens,
                                    struct fm_err *err);
void fm_gpu_bert_free(struct fm_gpu_bert *g);
const char *fm_gpu_bert_device(const struct fm_gpu_bert *g);
double fm_gpu_bert_flops(const struct fm_gpu_bert *g);     /* as fm_bert_flops() */
uint64_t fm_gpu_bert_bytes(const struct fm_gpu_bert *g);   /* GPU memory held */
int fm_gpu_bert_pending(const struct fm_gpu_bert *g);      /* batches in flight */
int fm_gpu_bert_submit(struct fm_gpu_bert *g, const int32_t *const *ids, const uint32_t *lens,
                       size_t n_seq, int pooling, struct fm_err *err);
int fm_gpu_bert_wait(struct fm_gpu_bert *g, float *out, struct fm_err *err);
int fm_gpu_bert_forward(struct fm_gpu_bert *g, const int32_t *const *ids, const uint32_t *lens,
                        size_t n_seq, int pooling, float *out, struct fm_err *err);

#ifdef __cplusplus
}
#endif

#endif
