/*
 * select_gpu_speed.c - fm-select's GPU scoring and top-k
 * (kernels/select.cu) on n x dim F16 vectors: one query (the
 * bandwidth-bound scan, then the radix-select top-k) and a batch of queries
 * (cuBLAS GEMM, then a top-k per query).  The data is a hash of each
 * value's index, so bench/select_torch.py rebuilds the same vectors and
 * queries for PyTorch in the same run; the top ids of the first query go
 * to a file for it to compare.  Prints medians.
 *
 * usage: select_gpu_speed n dim k batch sub runs idsfile
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "io.h"
#include "select.h"
#include "select_gpu.h"

/* The value of index i: lowbias32 of i mod 2^32, as a float in [-1, 1) scaled to unit rows on average. */
static float
value(uint64_t i, uint32_t dim)
{
	uint32_t x = (uint32_t)i;
	x ^= x >> 16;
	x *= 0x7feb352du;
	x ^= x >> 15;
	x *= 0x846ca68bu;
	x ^= x >> 16;
	return ((float)x / 4294967296.0f * 2.0f - 1.0f) * sqrtf(3.0f / (float)dim);
}

struct part {
	uint16_t *v;
	uint64_t lo, hi;
	uint32_t dim;
};

static void *
fill(void *arg)
{
	struct part *p = arg;

	for (uint64_t i = p->lo; i < p->hi; i++)
		p->v[i] = fm_f32_to_f16(value(i, p->dim));
	return NULL;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double
median(double *t, int n)
{
	qsort(t, (size_t)n, sizeof *t, cmp_double);
	return t[n / 2];
}

int
main(int argc, char **argv)
{
	if (argc != 8) {
		fprintf(stderr, "usage: select_gpu_speed n dim k batch sub runs idsfile\n");
		return 2;
	}
	uint64_t n = strtoull(argv[1], NULL, 10), k = strtoull(argv[3], NULL, 10);
	uint32_t dim = (uint32_t)atoi(argv[2]), batch = (uint32_t)atoi(argv[4]), sub = (uint32_t)atoi(argv[5]);
	int runs = atoi(argv[6]);
	uint16_t *v = malloc(n * dim * sizeof *v);
	float *q = malloc((size_t)batch * dim * sizeof *q);
	struct fm_hit *hits = malloc((size_t)sub * k * sizeof *hits);
	double ts[64], tk[64], tb[64], tbk[64], t0;
	struct fm_err err = {0};
	struct fm_gpu_sel *g;
	pthread_t tid[64];
	struct part parts[64];
	int nt = 16;

	if (!v || !q || !hits || runs < 1 || runs > 64 || sub == 0 || batch % sub != 0) {
		fprintf(stderr, "select_gpu_speed: bad arguments or out of memory\n");
		return 2;
	}
	t0 = fm_now();
	for (int t = 0; t < nt; t++) {
		uint64_t per = (n * dim + nt - 1) / nt;
		parts[t] = (struct part){ v, t * per, (t + 1) * per < n * dim ? (t + 1) * per : n * dim, dim };
		pthread_create(&tid[t], NULL, fill, &parts[t]);
	}
	for (int t = 0; t < nt; t++)
		pthread_join(tid[t], NULL);
	/* Queries follow the vectors in the same index sequence. */
	for (uint64_t j = 0; j < (uint64_t)batch * dim; j++)
		q[j] = fm_f16_to_f32(fm_f32_to_f16(value(n * dim + j, dim)));
	fprintf(stderr, "data: %.1f s\n", fm_now() - t0);

	if ((g = fm_gpu_sel_new(0, n, dim, FM_VEC_F16, sub, &err)) == NULL || fm_gpu_sel_load(g, v, &err) != FM_OK) {
		fprintf(stderr, "select_gpu_speed: %s\n", err.msg);
		return 5;
	}
	for (int r = -1; r < runs; r++) {   /* run -1 warms up */
		double a = fm_now();
		if (fm_gpu_sel_score(g, q, 1, &err) != FM_OK)
			break;
		double b = fm_now();
		if (fm_gpu_sel_topk(g, 1, k, hits, &err) != FM_OK)
			break;
		double c = fm_now();
		if (r >= 0) {
			ts[r] = b - a;
			tk[r] = c - b;
		}
	}
	FILE *f = fopen(argv[7], "w");
	for (uint64_t i = 0; f != NULL && i < k; i++)
		fprintf(f, "%llu %.6f\n", (unsigned long long)hits[i].id, hits[i].score);
	if (f != NULL)
		fclose(f);
	for (int r = -1; r < runs; r++) {
		double gemm = 0, top = 0;
		for (uint32_t s = 0; s < batch; s += sub) {
			double a = fm_now();
			if (fm_gpu_sel_score(g, q + (size_t)s * dim, sub, &err) != FM_OK)
				break;
			double b = fm_now();
			if (fm_gpu_sel_topk(g, sub, k, hits, &err) != FM_OK)
				break;
			gemm += b - a;
			top += fm_now() - b;
		}
		if (r >= 0) {
			tb[r] = gemm;
			tbk[r] = top;
		}
	}
	if (err.status != FM_OK && err.msg[0]) {
		fprintf(stderr, "select_gpu_speed: %s\n", err.msg);
		return 5;
	}
	double s1 = median(ts, runs), k1 = median(tk, runs), sb = median(tb, runs), kb = median(tbk, runs);
	double bytes = (double)n * dim * 2;
	printf("device: %s\n", fm_gpu_sel_device(g));
	printf("fm one query: scan %.3f ms (%.0f GB/s), top-%llu %.3f ms, total %.3f ms\n", s1 * 1e3,
	    bytes / s1 / 1e9, (unsigned long long)k, k1 * 1e3, (s1 + k1) * 1e3);
	printf("fm batch of %u (GEMMs of %u): GEMM %.2f ms (%.0f TFLOP/s), top-%llu %.2f ms, total %.2f ms "
	    "(%.0f queries/s)\n", batch, sub, sb * 1e3, 2.0 * n * dim * batch / sb / 1e12,
	    (unsigned long long)k, kb * 1e3, (sb + kb) * 1e3, batch / (sb + kb));
	fm_gpu_sel_free(g);
	return 0;
}
