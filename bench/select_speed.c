/*
 * select_speed.c - the CPU speed of scoring and top-k (common/select.c)
 * against a straightforward reference in the same run, on the same random
 * unit vectors: a scalar loop for the inner products and a sort of every
 * score for the top k.  One query at a time (F16 and F32 vectors) and a
 * batch of queries (sgemm).  The results must agree; prints a markdown
 * table of medians.
 *
 * usage: select_speed [n [dim [k [batch [runs]]]]]   (1000000 384 1000 64 5)
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "io.h"
#include "select.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static float
gauss(void)
{
	/* Irwin-Hall: close enough to normal for random directions. */
	float s = 0;
	for (int i = 0; i < 4; i++) {
		rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
		s += (float)(rng >> 40) / (float)(1 << 24);
	}
	return s - 2;
}

static void
unit(float *v, uint32_t d)
{
	double n = 0;
	for (uint32_t j = 0; j < d; j++) {
		v[j] = gauss();
		n += (double)v[j] * v[j];
	}
	for (uint32_t j = 0; j < d; j++)
		v[j] = (float)(v[j] / sqrt(n));
}

static int
cmp_hit(const void *a, const void *b)
{
	const struct fm_hit *x = a, *y = b;
	if (x->score != y->score)
		return x->score > y->score ? -1 : 1;
	return x->id < y->id ? -1 : 1;
}

/* The reference: a scalar loop, then sort everything. */
static void
reference(struct fm_hit *all, const float *q, const void *v, int f16, uint64_t n, uint32_t d)
{
	for (uint64_t i = 0; i < n; i++) {
		float s = 0;
		for (uint32_t j = 0; j < d; j++)
			s += q[j] * (f16 ? fm_f16_to_f32(((const uint16_t *)v)[i * d + j]) :
			    ((const float *)v)[i * d + j]);
		all[i] = (struct fm_hit){ i, s };
	}
	qsort(all, n, sizeof *all, cmp_hit);
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
	uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000;
	uint32_t d = argc > 2 ? (uint32_t)atoi(argv[2]) : 384;
	uint64_t k = argc > 3 ? strtoull(argv[3], NULL, 10) : 1000;
	uint32_t nb = argc > 4 ? (uint32_t)atoi(argv[4]) : 64;
	int runs = argc > 5 ? atoi(argv[5]) : 5;
	float *v32 = malloc(n * d * sizeof *v32), *q = malloc((size_t)nb * d * sizeof *q);
	uint16_t *v16 = malloc(n * d * sizeof *v16);
	float *s = malloc(n * nb * sizeof *s);
	struct fm_hit *top = malloc(k * sizeof *top), *all = malloc(n * sizeof *all);
	double t[64], tf[2], tr[2], tb;
	struct fm_err err;
	int agree = 1;

	if (!v32 || !q || !v16 || !s || !top || !all || runs < 1 || runs > 64 || k > n) {
		fprintf(stderr, "select_speed: bad arguments or out of memory\n");
		return 2;
	}
	for (uint64_t i = 0; i < n; i++) {
		unit(v32 + i * d, d);
		for (uint32_t j = 0; j < d; j++)
			v16[i * d + j] = fm_f32_to_f16(v32[i * d + j]);
	}
	for (uint32_t i = 0; i < nb; i++)
		unit(q + (size_t)i * d, d);

	for (int f16 = 0; f16 < 2; f16++) {
		const void *v = f16 ? (const void *)v16 : (const void *)v32;
		for (int r = 0; r < runs; r++) {
			double t0 = fm_now();
			fm_score(s, q, v, f16 ? FM_VEC_F16 : FM_VEC_F32, n, d);
			fm_topk(s, n, k, NULL, top);
			t[r] = fm_now() - t0;
		}
		tf[f16] = median(t, runs);
		for (int r = 0; r < (runs < 3 ? runs : 3); r++) {
			double t0 = fm_now();
			reference(all, q, v, f16, n, d);
			t[r] = fm_now() - t0;
		}
		tr[f16] = median(t, runs < 3 ? runs : 3);
		/* Sums in another order may swap near-equal scores: compare as sets, allowing the edge. */
		uint64_t same = 0;
		for (uint64_t i = 0; i < k; i++)
			for (uint64_t j = (i > 2 ? i - 2 : 0); j < k && j < i + 3; j++)
				if (top[i].id == all[j].id) {
					same++;
					break;
				}
		if (same < k - (k > 100 ? k / 100 : 1))
			agree = 0;
	}
	for (int r = 0; r < runs; r++) {
		double t0 = fm_now();
		if (fm_score_batch(s, q, nb, v16, FM_VEC_F16, n, d, &err) != FM_OK) {
			fprintf(stderr, "select_speed: %s\n", err.msg);
			return 4;
		}
		for (uint32_t i = 0; i < nb; i++)
			fm_topk(s + (size_t)i * n, n, k, NULL, top);
		t[r] = fm_now() - t0;
	}
	tb = median(t, runs);

	double gb16 = (double)n * d * 2 / 1e9, gb32 = gb16 * 2;
	printf("| %llu x %u, top-%llu | fm-select library | reference | speed-up |\n",
	    (unsigned long long)n, d, (unsigned long long)k);
	printf("| --- | ---: | ---: | ---: |\n");
	printf("| one query, f32 | %.1f ms (%.1f GB/s, %.1f q/s) | %.1f ms | %.1fx |\n", tf[0] * 1e3,
	    gb32 / tf[0], 1 / tf[0], tr[0] * 1e3, tr[0] / tf[0]);
	printf("| one query, f16 | %.1f ms (%.1f GB/s, %.1f q/s) | %.1f ms | %.1fx |\n", tf[1] * 1e3,
	    gb16 / tf[1], 1 / tf[1], tr[1] * 1e3, tr[1] / tf[1]);
	printf("| batch of %u, f16 | %.1f ms (%.1f q/s, %.0f GFLOP/s) | | %.1fx per query over one f16 query |\n",
	    nb, tb * 1e3, nb / tb, 2.0 * n * d * nb / tb / 1e9, tf[1] * nb / tb);
	printf("\ntop-%llu of the library and the reference agree: %s\n", (unsigned long long)k,
	    agree ? "yes" : "NO");
	return agree ? 0 : 1;
}
