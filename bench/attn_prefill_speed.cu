/*
 * attn_prefill_speed.cu - prefill attention alone, as the CUDA forward pass
 * calls it (fm_k_attention over an F16 cache, part NULL), on random data:
 * the llama-1B shape (32 heads, 8 KV heads, head 64) for 4096 queries from
 * position 0 and for 2048 queries from position 2048 (fm-decode's second
 * batch), and the same with heads of 128.  Timed with CUDA events, median
 * of RUNS; TFLOP/s counts the causal work only, 4 x head x (keys seen,
 * summed over queries) per head.  Built against a library, it times
 * whichever kernel that library dispatches to, so the old and new kernels
 * are compared by linking it twice; LABEL names the build in the output.
 *
 * usage: attn_prefill_speed LABEL [RUNS (20)]
 */
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "ops.cuh"

static int
cmp_f(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;

	return x < y ? -1 : x > y;
}

/* Uniform in [-1, 1): xorshift, so each build sees the same data. */
static float
frand(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return (float)((*s >> 40) / 8388608.0 - 1.0);
}

static int
bench(const char *label, uint32_t n_q, int32_t p0, uint32_t n_head, uint32_t n_kv, uint32_t hd,
    int runs)
{
	struct fm_err err = { 0 };
	size_t nqv = (size_t)n_q * n_head * hd, nkv = (size_t)(p0 + n_q) * n_kv * hd;
	float *hq = (float *)malloc(nqv * 4), *q, *out, *ms = (float *)malloc(runs * sizeof *ms);
	__half *hk = (__half *)malloc(nkv * 2), *kc, *vc;
	int32_t *dp;
	uint64_t s = 88172645463325252ull;
	double work = 0;
	cudaEvent_t e0, e1;

	for (size_t i = 0; i < nqv; i++)
		hq[i] = frand(&s);
	for (size_t i = 0; i < nkv; i++)
		hk[i] = __float2half(frand(&s));
	if (cudaMalloc(&q, nqv * 4) || cudaMalloc(&out, nqv * 4) || cudaMalloc(&kc, nkv * 2) ||
	    cudaMalloc(&vc, nkv * 2) || cudaMalloc(&dp, 4)) {
		fprintf(stderr, "attn_prefill_speed: out of device memory\n");
		return 1;
	}
	cudaMemcpy(q, hq, nqv * 4, cudaMemcpyHostToDevice);
	cudaMemcpy(kc, hk, nkv * 2, cudaMemcpyHostToDevice);
	for (size_t i = 0; i < nkv; i++)
		hk[i] = __float2half(frand(&s));
	cudaMemcpy(vc, hk, nkv * 2, cudaMemcpyHostToDevice);
	cudaMemcpy(dp, &p0, 4, cudaMemcpyHostToDevice);
	cudaEventCreate(&e0);
	cudaEventCreate(&e1);
	for (int r = -3; r < runs; r++) {
		cudaEventRecord(e0, 0);
		if (fm_k_attention(0, out, q, kc, vc, NULL, true, n_q, n_head, n_kv, hd, dp, NULL, NULL,
		    &err) != FM_OK) {
			fprintf(stderr, "attn_prefill_speed: %s\n", err.msg);
			return 1;
		}
		cudaEventRecord(e1, 0);
		cudaEventSynchronize(e1);
		if (r >= 0)
			cudaEventElapsedTime(&ms[r], e0, e1);
	}
	if (cudaDeviceSynchronize() != cudaSuccess) {
		fprintf(stderr, "attn_prefill_speed: %s\n", cudaGetErrorString(cudaGetLastError()));
		return 1;
	}
	qsort(ms, runs, sizeof *ms, cmp_f);
	for (uint32_t i = 0; i < n_q; i++)
		work += p0 + i + 1;
	work *= 4.0 * hd * n_head;
	printf("%s: %u queries from %d, %u heads / %u kv, head %u: %.3f ms, %.1f TFLOP/s\n", label,
	    n_q, p0, n_head, n_kv, hd, ms[runs / 2], work / (ms[runs / 2] * 1e-3) / 1e12);
	cudaFree(q);
	cudaFree(out);
	cudaFree(kc);
	cudaFree(vc);
	cudaFree(dp);
	free(hq);
	free(hk);
	free(ms);
	return 0;
}

int
main(int argc, char **argv)
{
	char *end;
	long runs = 20;

	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: attn_prefill_speed LABEL [RUNS]\n");
		return 2;
	}
	if (argc == 3 && ((runs = strtol(argv[2], &end, 10)) < 1 || runs > 10000 || *end != '\0')) {
		fprintf(stderr, "attn_prefill_speed: bad run count: %s\n", argv[2]);
		return 2;
	}
	return bench(argv[1], 4096, 0, 32, 8, 64, (int)runs) ||
	    bench(argv[1], 2048, 2048, 32, 8, 64, (int)runs) ||
	    bench(argv[1], 4096, 0, 32, 8, 128, (int)runs) ||
	    bench(argv[1], 2048, 2048, 32, 8, 128, (int)runs);
}
