/*
 * select_gpu.h - scoring and top-k on a CUDA device, built only with
 * FM_CUDA (make CUDA=1); kernels/select.cu.  The CPU twins in select.h are
 * the test reference: fm_score for the one-query scan (a bandwidth-bound
 * kernel), fm_score_batch for batches (cuBLAS GEMM; F16 vectors take the
 * queries rounded to F16, with F32 sums), and fm_topk for the top k (an
 * exact radix select for any k up to the collection, the same order:
 * higher score first, lower id on equal scores, NaN as -infinity).
 *
 * Ownership: fm_gpu_sel_new() returns a workspace on one device that owns
 * its buffers, and the vectors when they are loaded with fm_gpu_sel_load();
 * fm_gpu_sel_attach() borrows device memory the caller keeps alive.
 * Every call waits for its work; failures are FM_EDEVICE naming the CUDA,
 * cuBLAS or CUB call, its file:line and the device.
 */
#ifndef FM_SELECT_GPU_H
#define FM_SELECT_GPU_H

#include <stddef.h>
#include <stdint.h>

#include "fm_error.h"
#include "select.h"

#ifdef __cplusplus
extern "C" {
#endif

struct fm_gpu_sel;

/*
 * A workspace for n vectors of dim values of type on device, scoring up to
 * max_queries queries at once (their scores, max_queries x n floats, stay
 * on the device).  n is below 2^32.
 */
struct fm_gpu_sel *fm_gpu_sel_new(int device, uint64_t n, uint32_t dim, enum fm_vec_type type,
    uint32_t max_queries, struct fm_err *err);
void fm_gpu_sel_free(struct fm_gpu_sel *g);
/* The device's name. */
const char *fm_gpu_sel_device(const struct fm_gpu_sel *g);

/* Copies the vectors (n, dim) from host memory to the device. */
int fm_gpu_sel_load(struct fm_gpu_sel *g, const void *vecs, struct fm_err *err);
/* Uses vectors already on the device (n, dim), as they are. */
void fm_gpu_sel_attach(struct fm_gpu_sel *g, const void *vecs_device);

/* Scores nq queries (nq, dim) from host memory against every vector; the scores stay on the device. */
int fm_gpu_sel_score(struct fm_gpu_sel *g, const float *q, uint32_t nq, struct fm_err *err);
/* Copies the scores of the last fm_gpu_sel_score() to out (nq, n). */
int fm_gpu_sel_scores(struct fm_gpu_sel *g, uint32_t nq, float *out, struct fm_err *err);
/*
 * The k best (1 <= k <= n) of each of the nq queries last scored into out
 * (nq, k), best first; nq * k is below 2^31.
 */
int fm_gpu_sel_topk(struct fm_gpu_sel *g, uint32_t nq, uint64_t k, struct fm_hit *out,
    struct fm_err *err);

#ifdef __cplusplus
}
#endif

#endif
