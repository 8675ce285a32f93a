/*
 * prefill_cuda.c - the prefill of fm's CUDA forward pass in a warm process:
 * one fm_gpu_fwd, RUNS prefills of the same N tokens (in batches of 2048,
 * as fm-decode runs them), each timed to the last batch's argmax on the
 * host.  The first run pays the one-time costs (kernels loaded, cuBLAS's
 * choices), which fm-decode -v counts in its single prefill; the median of
 * the others is the steady rate that PyTorch's warmed-up timing compares
 * with.  Prints one line per run, then the median, tokens/s and TFLOP/s
 * (2 x the matrices' weights per token, plus causal attention).
 *
 * usage: prefill_cuda MODEL.gguf [N (4096)] [RUNS (5)]
 */
#include <stdio.h>
#include <stdlib.h>

#include "gpu.h"
#include "io.h"
#include "model.h"

static int
cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

int
main(int argc, char **argv)
{
	struct fm_err err = { 0 };
	struct fm_model *m;
	struct fm_gpu_fwd *f;
	uint32_t n = argc > 2 ? (uint32_t)atoi(argv[2]) : 4096, runs = argc > 3 ? (uint32_t)atoi(argv[3]) : 5;
	uint32_t batch = n < 2048 ? n : 2048;
	int32_t *ids, next;
	double *t, flops = 0;

	if (argc < 2 || n == 0 || runs < 2) {
		fprintf(stderr, "usage: prefill_cuda MODEL.gguf [N] [RUNS >= 2]\n");
		return 2;
	}
	if ((m = fm_model_load(argv[1], &err)) == NULL ||
	    (f = fm_gpu_fwd_new(m, 0, batch, n, FM_KV_F16, false, &err)) == NULL) {
		fprintf(stderr, "prefill_cuda: %s\n", err.msg);
		return 1;
	}
	ids = malloc(n * sizeof *ids);
	t = malloc(runs * sizeof *t);
	for (uint32_t i = 0; i < n; i++)
		ids[i] = (int32_t)(1 + (i * 7919u) % (m->hp.n_vocab - 1));
	for (uint32_t r = 0; r < runs; r++) {
		double t0 = fm_now();
		for (uint32_t p0 = 0; p0 < n; p0 += batch) {
			uint32_t k = n - p0 < batch ? n - p0 : batch;
			if (fm_gpu_fwd_eval(f, ids + p0, k, p0, NULL, false, &next, &err) != FM_OK) {
				fprintf(stderr, "prefill_cuda: %s\n", err.msg);
				return 1;
			}
		}
		t[r] = fm_now() - t0;
		printf("run %u: %u tokens in %.4f s%s\n", r + 1, n, t[r], r == 0 ? " (first: one-time costs)" : "");
	}
	{
		const struct fm_hparams *hp = &m->hp;
		uint64_t qd = (uint64_t)hp->n_head * hp->head_dim, kvd = (uint64_t)hp->n_head_kv * hp->head_dim;
		uint64_t per_tok = (uint64_t)hp->n_layer * (hp->dim * qd * 2 + 2 * hp->dim * kvd +
		    3ull * hp->dim * hp->ffn_dim);
		double gemm = 2.0 * per_tok * n, attn = (double)hp->n_layer * hp->n_head * hp->head_dim *
		    4.0 * n * n / 2;
		double med;
		qsort(t + 1, runs - 1, sizeof *t, cmp_d);
		med = t[1 + (runs - 1) / 2];
		flops = gemm + attn;
		printf("median of runs 2..%u: %.4f s, %.0f tokens/s, %.1f TFLOP/s (matrices %.2f + attention "
		    "%.2f TFLOP), %.1f%% of 989.5 dense FP16; first run %.4f s\n", runs, med, n / med,
		    flops / med / 1e12, gemm / 1e12, attn / 1e12, 100 * flops / med / 1e12 / 989.5, t[0]);
	}
	fm_gpu_fwd_free(f);
	fm_model_free(m);
	free(ids);
	free(t);
	return 0;
}
