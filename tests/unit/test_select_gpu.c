/*
 * test_select_gpu.c - the GPU scoring and top-k (kernels/select.cu)
 * against their CPU twins: scores against fm_score within abs + |ref| *
 * rel (every kernel: F16 and F32 16-byte paths, any dimension, GEMM
 * batches), and top-k against fm_topk run on the GPU's own scores, which
 * must agree exactly, ids and order, for every k from 1 to the whole
 * collection and data with many equal scores.  Skips without a CUDA build
 * or a GPU.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "select.h"
#include "tap.h"

#ifdef FM_CUDA
#include "gpu.h"
#include "select_gpu.h"

static uint64_t rng = 0x2545F4914F6CDD1Dull;

static float
unif(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (float)(rng >> 40) / (float)(1 << 24) * 2 - 1;
}

/* Compares n scores with the reference, printing the first mismatches. */
static int
close_enough(const float *got, const float *want, uint64_t n, double abs_tol, double rel, const char *what)
{
	int bad = 0;

	for (uint64_t i = 0; i < n; i++)
		if (!(fabs((double)got[i] - want[i]) <= abs_tol + fabs((double)want[i]) * rel)) {
			if (bad++ < 3)
				printf("# %s: score %llu: got %.7g, want %.7g\n", what,
				    (unsigned long long)i, got[i], want[i]);
		}
	return bad;
}

static void
run_case(uint64_t n, uint32_t dim, enum fm_vec_type type, int levels, uint32_t nq)
{
	size_t esz = type == FM_VEC_F16 ? 2 : 4;
	void *v = malloc(n * dim * esz);
	float *q = malloc((size_t)nq * dim * sizeof *q), *ref = malloc(n * nq * sizeof *ref);
	float *got = malloc(n * nq * sizeof *got);
	struct fm_hit *gk = malloc(n * nq * sizeof *gk), *ck = malloc(n * sizeof *ck);
	struct fm_err err;
	char what[128];
	struct fm_gpu_sel *g;

	snprintf(what, sizeof what, "%llu x %u %s, %u quer%s%s", (unsigned long long)n, dim,
	    type == FM_VEC_F16 ? "f16" : "f32", nq, nq == 1 ? "y" : "ies", levels ? ", few distinct values" : "");
	for (uint64_t i = 0; i < n * dim; i++) {
		/* Few distinct values give many equal scores: the tie rule is what is tested then. */
		float x = levels ? (float)((int)(unif() * 2.5f)) / 2 : unif();
		if (type == FM_VEC_F16)
			((uint16_t *)v)[i] = fm_f32_to_f16(x);
		else
			((float *)v)[i] = x;
	}
	/* cuBLAS multiplies F16 vectors by F16 queries: give both sides queries that are F16 already. */
	for (size_t j = 0; j < (size_t)nq * dim; j++) {
		q[j] = levels ? (float)((int)(unif() * 2.5f)) / 2 : unif();
		if (type == FM_VEC_F16 && nq > 1)
			q[j] = fm_f16_to_f32(fm_f32_to_f16(q[j]));
	}
	if (nq == 1)
		fm_score(ref, q, v, type, n, dim);
	else if (fm_score_batch(ref, q, nq, v, type, n, dim, &err) != FM_OK)
		printf("# %s\n", err.msg);

	if ((g = fm_gpu_sel_new(0, n, dim, type, nq, &err)) == NULL || fm_gpu_sel_load(g, v, &err) != FM_OK ||
	    fm_gpu_sel_score(g, q, nq, &err) != FM_OK || fm_gpu_sel_scores(g, nq, got, &err) != FM_OK) {
		ok(0, "%s: %s", what, err.msg);
		goto out;
	}
	ok(close_enough(got, ref, n * nq, 1e-4 * sqrt(dim), 1e-5, what) == 0, "%s: scores equal fm_score%s",
	    what, nq > 1 ? "_batch" : "");

	const uint64_t ks[] = { 1, 2, 7, 100, n / 2, n - 1, n };
	int bad = 0, cases = 0;
	for (size_t a = 0; a < sizeof ks / sizeof ks[0]; a++) {
		uint64_t k = ks[a];
		if (k == 0 || k > n || (k > 100 && k < n - 1 && nq > 1))
			continue;
		if (fm_gpu_sel_topk(g, nq, k, gk, &err) != FM_OK) {
			printf("# top-%llu: %s\n", (unsigned long long)k, err.msg);
			bad++;
			continue;
		}
		for (uint32_t t = 0; t < nq; t++) {
			uint64_t m = fm_topk(got + (size_t)t * n, n, k, NULL, ck);
			cases++;
			for (uint64_t i = 0; i < m; i++)
				if (gk[t * k + i].id != ck[i].id || gk[t * k + i].score != ck[i].score) {
					if (bad++ < 3)
						printf("# top-%llu query %u rank %llu: got %llu (%g), want %llu (%g)\n",
						    (unsigned long long)k, t, (unsigned long long)i,
						    (unsigned long long)gk[t * k + i].id, gk[t * k + i].score,
						    (unsigned long long)ck[i].id, ck[i].score);
					break;
				}
		}
	}
	ok(bad == 0, "%s: top-k equals fm_topk on the same scores, k from 1 to n (%d cases)", what, cases);
out:
	fm_gpu_sel_free(g);
	free(v), free(q), free(ref), free(got), free(gk), free(ck);
}

int
main(void)
{
	if (fm_gpu_count() == 0) {
		printf("ok 1 # skip no CUDA device\n1..1\n");
		return 0;
	}
	run_case(1000, 384, FM_VEC_F16, 0, 1);
	run_case(1000, 384, FM_VEC_F16, 1, 1);
	run_case(4097, 384, FM_VEC_F32, 0, 1);
	run_case(3001, 7, FM_VEC_F16, 1, 1);
	run_case(3001, 9, FM_VEC_F32, 0, 1);
	run_case(100003, 64, FM_VEC_F16, 1, 1);
	run_case(20011, 384, FM_VEC_F16, 0, 5);
	run_case(2000, 384, FM_VEC_F32, 1, 3);
	/* NaN and signed zeros rank as on the CPU. */
	{
		uint64_t n = 64;
		float q[8] = { 1 }, v[64 * 8] = { 0 }, s[64];
		struct fm_hit gk[64], ck[64];
		struct fm_err err;
		for (int i = 0; i < 64; i++)
			v[i * 8] = (float[]){ 0.0f, -0.0f, NAN, INFINITY, -INFINITY, 1, -1, 0.5f }[i % 8];
		struct fm_gpu_sel *g = fm_gpu_sel_new(0, n, 8, FM_VEC_F32, 1, &err);
		int good = g && fm_gpu_sel_load(g, v, &err) == FM_OK && fm_gpu_sel_score(g, q, 1, &err) == FM_OK &&
		    fm_gpu_sel_scores(g, 1, s, &err) == FM_OK && fm_gpu_sel_topk(g, 1, n, gk, &err) == FM_OK;
		fm_topk(s, n, n, NULL, ck);
		for (uint64_t i = 0; good && i < n; i++)
			good = gk[i].id == ck[i].id;
		ok(good, "NaN, infinities and signed zeros rank as fm_topk ranks them");
		fm_gpu_sel_free(g);
	}
	return done_testing();
}
#else
int
main(void)
{
	printf("ok 1 # skip built without CUDA\n1..1\n");
	return 0;
}
#endif
