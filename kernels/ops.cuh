/*
 * ops.cuh - the kernels of ops.cu as the CUDA forward pass launches them:
 * on a given stream, so that a decode step can be captured in a CUDA graph.
 * gpu.h wraps the same launchers on the default stream for C code and tests.
 */
#ifndef FM_OPS_CUH
#define FM_OPS_CUH

#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "fm_error.h"
#include "model.h"
}

/* The type an activation is written in: F32, or F16/BF16 as the input of a tensor-core GEMM. */
enum fm_act { FM_ACT_F32, FM_ACT_F16, FM_ACT_BF16 };

int fm_k_rmsnorm(cudaStream_t st, void *out, enum fm_act ot, const float *x, const float *w,
                 uint32_t rows, uint32_t n, float eps, struct fm_err *err);
/*
 * qkv (rows, (n_head + 2 n_head_kv) head_dim): each row's q, k and v end to
 * end.  RoPE at position *pos0 + row; q to q_out (rows, n_head head_dim), k
 * and v to row *wrow0 + row (NULL: *pos0 + row) of the caches.
 */
int fm_k_rope_kv(cudaStream_t st, float *q_out, const float *qkv, void *kc, void *vc, bool f16,
                 uint32_t rows, uint32_t n_head, uint32_t n_head_kv, uint32_t head_dim,
                 uint32_t n_rot, const float *freq, const int32_t *pos0, const int32_t *wrow0,
                 struct fm_err *err);
/* out (rows, n) = silu(gate) * up, where row r of gate and up starts at r * stride. */
int fm_k_swiglu(cudaStream_t st, void *out, enum fm_act ot, const float *gate, const float *up,
                uint32_t rows, uint32_t n, size_t stride, struct fm_err *err);
/*
 * part: device scratch of fm_k_attention_part() bytes for the split-K
 * decode form (one query), zero-filled once when allocated (its counters
 * are left at zero by every use), or NULL for the one-block-per-head form.
 * The split-K form reads *pos0 and *nkeys before it waits for the kernel
 * before it: they must come from the host (a copy), not from that kernel.
 */
size_t fm_k_attention_part(uint32_t n_head, uint32_t head_dim);
int fm_k_attention(cudaStream_t st, float *out, const float *q, const void *kc, const void *vc,
                   float *part, bool f16, uint32_t n_q, uint32_t n_head, uint32_t n_head_kv, uint32_t head_dim,
                   const int32_t *pos0, const int32_t *rows, const int32_t *nkeys,
                   struct fm_err *err);
/*
 * The decode form for a short context: the same result as fm_k_attention
 * for one query, attending to at most fm_k_attention_short_max() keys
 * (0: no such form for the head size).  The host picks it by the number of
 * keys; past the limit only the first keys would be seen.
 */
uint32_t fm_k_attention_short_max(uint32_t head_dim, bool f16);
int fm_k_attention_short(cudaStream_t st, float *out, const float *q, const void *kc, const void *vc,
                         bool f16, uint32_t n_head, uint32_t n_head_kv, uint32_t head_dim,
                         const int32_t *pos0, const int32_t *rows, const int32_t *nkeys,
                         struct fm_err *err);
/*
 * The prefill form of fm_k_attention over an F16 cache (attn_prefill.cu):
 * the same arguments; 1, with nothing launched, when it has no instance for
 * head_dim (it has 64 and 128).
 */
int fm_k_attention_prefill(cudaStream_t st, float *out, const float *q, const void *kc,
                           const void *vc, uint32_t n_q, uint32_t n_head, uint32_t n_head_kv,
                           uint32_t head_dim, const int32_t *pos0, struct fm_err *err);
int fm_k_argmax(cudaStream_t st, const float *x, uint32_t n, int32_t *out, struct fm_err *err);
/* The same, for a step run ahead: to slot *pos % n_slots of ring, fed on as *feed; *pos += 1. */
int fm_k_argmax_feed(cudaStream_t st, const float *x, uint32_t n, int32_t *ring, uint32_t n_slots,
                     int32_t *feed, int32_t *pos, struct fm_err *err);

/* matvec.cu: the products of one token, each launched for programmatic dependent launch. */
/* y = W x (or +=) for up to three matrices of one type and width, in one launch. */
int fm_k_matvec(cudaStream_t st, int n_mat, const struct fm_weight *const *w, float *const *y,
                const float *x, bool accumulate, struct fm_err *err);
/* The same after fm_rmsnorm(x) * nw, computed inside (nw NULL: x as it is). */
int fm_k_matvec_norm(cudaStream_t st, int n_mat, const struct fm_weight *const *w, float *const *y,
                     const float *x, const float *nw, float eps, bool accumulate, struct fm_err *err);
/* out = silu(Wg x') * (Wu x'), x' = fm_rmsnorm(x) * nw, or x when nw is NULL. */
int fm_k_matvec_swiglu(cudaStream_t st, float *out, const struct fm_weight *wg,
                       const struct fm_weight *wu, const float *x, const float *nw, float eps,
                       struct fm_err *err);
/*
 * y[0..3) = Wq x', Wk x', Wv x' with RoPE at position *pos on q and k, and k,
 * v put into row *wrow (NULL: *pos) of the caches kc, vc: what
 * fm_k_matvec_norm and fm_k_rope_kv do for one token, in one launch.
 * Returns 1, launching nothing, when the shapes have no fused form (odd head
 * or rotation sizes, types that differ).
 */
int fm_k_matvec_qkv(cudaStream_t st, const struct fm_weight *const *w, float *const *y,
                    const float *x, const float *nw, float eps, void *kc, void *vc, bool f16,
                    uint32_t head_dim, uint32_t n_rot, const float *freq, const int32_t *pos,
                    const int32_t *wrow, struct fm_err *err);
/* x (n, cols) = rows ids[0..n) (device) of the embedding, widened to F32. */
int fm_k_embed(cudaStream_t st, float *x, const struct fm_weight *emb, const int32_t *ids,
               uint32_t n, struct fm_err *err);
/* dst (n) = src rounded to F16 (bf16 false) or BF16, the input of a tensor-core GEMM. */
int fm_k_narrow(cudaStream_t st, void *dst, const float *src, size_t n, bool bf16,
                struct fm_err *err);
/* dst (rows, cols) F16 = a Q8_0 matrix widened, for the prefill GEMM. */
int fm_k_q8_to_f16(cudaStream_t st, void *dst, const struct fm_weight *w, struct fm_err *err);

#endif
