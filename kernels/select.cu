/*
 * select.cu - scoring and exact top-k on the GPU (select_gpu.h), the twins
 * of fm_score, fm_score_batch and fm_topk in common/select.c.
 *
 * One query is a scan of every vector, so its kernel is written for memory
 * bandwidth: eight lanes per row, each reading 16 bytes at a time across
 * the row so that a row is one contiguous stream, the query in shared
 * memory, no other traffic.  Batches are one cuBLAS GEMM.
 *
 * Top-k works for any k: each score and its id form one 64-bit key whose
 * order is the rank (score, then the lower id), so keys are distinct and
 * the k-th largest is found exactly by a radix select, eight passes of an
 * 8-bit histogram over the scores with no sort of the collection; one more
 * pass gathers the k keys at or above it, and only those k are sorted.
 */
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cub/cub.cuh>

#include "cuda_check.cuh"

extern "C" {
#include "gpu.h"
#include "select_gpu.h"
}

#define THREADS 256
#define LANES 8          /* lanes per row in the scan kernels */

struct fm_gpu_sel {
	int device;
	char name[256];
	uint64_t n;
	uint32_t dim, max_q;
	enum fm_vec_type type;
	const void *vecs;          /* device (n, dim) */
	void *owned;               /* the vectors when loaded here */
	float *q;                  /* device (max_q, dim) */
	__half *qh;                /* device (max_q, dim), for the F16 GEMM */
	float *scores;             /* device (max_q, n) */
	unsigned int *hist;        /* device (max_q, 256) */
	unsigned long long *state; /* device (max_q, 3): prefix, rank left, gathered */
	unsigned long long *keys, *sorted;  /* device (cap_keys) */
	size_t cap_keys;
	int *offsets;              /* device (max_q + 1) */
	void *tmp;                 /* CUB's scratch */
	size_t cap_tmp;
	unsigned long long *host_keys;
	size_t cap_host;
	cublasHandle_t blas;
	int sms;
};

/* ---- scoring ---- */

/* twin fm_score, F16 rows of dim8 * 8 values: LANES lanes per row, 16-byte loads. */
static __global__ void
k_score_f16(float *out, const uint4 *v, const float *q, uint64_t n, uint32_t dim8)
{
	extern __shared__ float qs[];
	uint32_t lane = threadIdx.x % LANES;
	uint64_t groups = (uint64_t)gridDim.x * blockDim.x / LANES;
	unsigned mask = 0xffu << (threadIdx.x & 31 & ~(LANES - 1));

	for (uint32_t j = threadIdx.x; j < dim8 * 8; j += blockDim.x)
		qs[j] = q[j];
	__syncthreads();
	for (uint64_t r = ((uint64_t)blockIdx.x * blockDim.x + threadIdx.x) / LANES; r < n; r += groups) {
		const uint4 *row = v + r * dim8;
		float acc = 0;
#pragma unroll 4
		for (uint32_t c = lane; c < dim8; c += LANES) {
			uint4 x = __ldg(row + c);
			const __half2 *h = reinterpret_cast<const __half2 *>(&x);
			const float4 *qq = reinterpret_cast<const float4 *>(qs + c * 8);
			float4 a = qq[0], b = qq[1];
			float2 f0 = __half22float2(h[0]), f1 = __half22float2(h[1]);
			float2 f2 = __half22float2(h[2]), f3 = __half22float2(h[3]);
			acc += f0.x * a.x + f0.y * a.y + f1.x * a.z + f1.y * a.w +
			    f2.x * b.x + f2.y * b.y + f3.x * b.z + f3.y * b.w;
		}
		for (int o = LANES / 2; o > 0; o >>= 1)
			acc += __shfl_xor_sync(mask, acc, o, LANES);
		if (lane == 0)
			out[r] = acc;
	}
}

/*
 * The same for rows of exactly PER * LANES 16-byte pieces (384 dimensions:
 * PER 6): the query's share of each lane in registers, and two rows per
 * group at a time, all their loads issued before any is used, so that more
 * of the scan is in flight.  The sums run in the same order as
 * k_score_f16's, so the scores are the same to the bit.
 */
template <int PER>
static __global__ void __launch_bounds__(THREADS)
k_score_f16_rows(float *out, const uint4 *v, const float *q, uint64_t n)
{
	const uint32_t dim8 = PER * LANES, lane = threadIdx.x % LANES;
	const uint64_t groups = (uint64_t)gridDim.x * blockDim.x / LANES;
	const unsigned mask = 0xffu << (threadIdx.x & 31 & ~(LANES - 1));
	float4 qa[PER], qb[PER];

#pragma unroll
	for (int p = 0; p < PER; p++) {
		const float4 *qq = reinterpret_cast<const float4 *>(q + (lane + p * LANES) * 8);
		qa[p] = qq[0];
		qb[p] = qq[1];
	}
	for (uint64_t r = ((uint64_t)blockIdx.x * blockDim.x + threadIdx.x) / LANES; r < n;
	    r += 2 * groups) {
		uint64_t r2 = r + groups < n ? r + groups : r;
		uint4 x[2][PER];
		float acc[2] = { 0, 0 };
#pragma unroll
		for (int p = 0; p < PER; p++) {
			x[0][p] = __ldcs(v + r * dim8 + lane + p * LANES);
			x[1][p] = __ldcs(v + r2 * dim8 + lane + p * LANES);
		}
#pragma unroll
		for (int t = 0; t < 2; t++)
#pragma unroll
			for (int p = 0; p < PER; p++) {
				const __half2 *h = reinterpret_cast<const __half2 *>(&x[t][p]);
				float4 a = qa[p], b = qb[p];
				float2 f0 = __half22float2(h[0]), f1 = __half22float2(h[1]);
				float2 f2 = __half22float2(h[2]), f3 = __half22float2(h[3]);
				acc[t] += f0.x * a.x + f0.y * a.y + f1.x * a.z + f1.y * a.w +
				    f2.x * b.x + f2.y * b.y + f3.x * b.z + f3.y * b.w;
			}
		for (int o = LANES / 2; o > 0; o >>= 1) {
			acc[0] += __shfl_xor_sync(mask, acc[0], o, LANES);
			acc[1] += __shfl_xor_sync(mask, acc[1], o, LANES);
		}
		if (lane == 0) {
			out[r] = acc[0];
			if (r2 != r)
				out[r2] = acc[1];
		}
	}
}

/* twin fm_score, F32 rows of dim4 * 4 values. */
static __global__ void
k_score_f32(float *out, const float4 *v, const float *q, uint64_t n, uint32_t dim4)
{
	extern __shared__ float qs[];
	uint32_t lane = threadIdx.x % LANES;
	uint64_t groups = (uint64_t)gridDim.x * blockDim.x / LANES;
	unsigned mask = 0xffu << (threadIdx.x & 31 & ~(LANES - 1));

	for (uint32_t j = threadIdx.x; j < dim4 * 4; j += blockDim.x)
		qs[j] = q[j];
	__syncthreads();
	for (uint64_t r = ((uint64_t)blockIdx.x * blockDim.x + threadIdx.x) / LANES; r < n; r += groups) {
		const float4 *row = v + r * dim4;
		float acc = 0;
#pragma unroll 4
		for (uint32_t c = lane; c < dim4; c += LANES) {
			float4 x = __ldg(row + c);
			float4 a = reinterpret_cast<const float4 *>(qs)[c];
			acc += x.x * a.x + x.y * a.y + x.z * a.z + x.w * a.w;
		}
		for (int o = LANES / 2; o > 0; o >>= 1)
			acc += __shfl_xor_sync(mask, acc, o, LANES);
		if (lane == 0)
			out[r] = acc;
	}
}

/* twin fm_score for any dimension: a warp per row, one value per lane at a time. */
static __global__ void
k_score_any(float *out, const void *v, int f16, const float *q, uint64_t n, uint32_t dim)
{
	uint32_t lane = threadIdx.x & 31;
	uint64_t warps = (uint64_t)gridDim.x * blockDim.x / 32;

	for (uint64_t r = ((uint64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32; r < n; r += warps) {
		float acc = 0;
		for (uint32_t j = lane; j < dim; j += 32)
			acc += q[j] * (f16 ? __half2float(((const __half *)v)[r * dim + j]) :
			    ((const float *)v)[r * dim + j]);
		for (int o = 16; o > 0; o >>= 1)
			acc += __shfl_xor_sync(0xffffffffu, acc, o);
		if (lane == 0)
			out[r] = acc;
	}
}

static __global__ void
k_to_half(__half *out, const float *x, size_t n)
{
	size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;

	if (i < n)
		out[i] = __float2half_rn(x[i]);
}

/* ---- top-k: a radix select on (score, id) keys ---- */

/*
 * The rank key: the score's bits made order-preserving in the high half
 * (NaN as -infinity, -0 as +0, as fm_hit_before compares), the complement
 * of the id in the low half, so a larger key ranks before.
 */
static __device__ __forceinline__ unsigned long long
rank_key(float s, uint32_t id)
{
	if (isnan(s))
		s = -INFINITY;
	if (s == 0.0f)
		s = 0.0f;
	uint32_t u = __float_as_uint(s);
	u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
	return (unsigned long long)u << 32 | (0xffffffffu - id);
}

/*
 * One pass: the histogram of the 8 bits at shift among the keys whose
 * higher bits equal those chosen so far.  Lanes with the same digit add
 * once, so scores bunched in a few bins do not serialise on one counter.
 */
static __global__ void
k_hist(const float *scores, uint64_t n, int shift, const unsigned long long *state,
    unsigned int *hist)
{
	__shared__ unsigned int h[256];
	uint32_t q = blockIdx.y;
	const float *s = scores + (size_t)q * n;
	unsigned long long prefix = state[3 * q];
	uint32_t lane = threadIdx.x & 31;

	if (state[3 * q + 1] == 0)
		return;   /* decided already (k_pick) */

	for (int i = threadIdx.x; i < 256; i += blockDim.x)
		h[i] = 0;
	__syncthreads();
	for (uint64_t base = (uint64_t)blockIdx.x * blockDim.x; base < n; base += (uint64_t)gridDim.x * blockDim.x) {
		uint64_t i = base + threadIdx.x;
		bool in = i < n;
		unsigned long long key = in ? rank_key(s[i], (uint32_t)i) : 0;
		in = in && (shift == 56 || (key >> (shift + 8)) == (prefix >> (shift + 8)));
		unsigned d = (unsigned)(key >> shift) & 0xffu;
		unsigned act = __ballot_sync(0xffffffffu, in);
		if (in) {
			unsigned peers = __match_any_sync(act, d);
			if (lane == (unsigned)(__ffs(peers) - 1))
				atomicAdd(&h[d], (unsigned)__popc(peers));
		}
	}
	__syncthreads();
	for (int i = threadIdx.x; i < 256; i += blockDim.x)
		if (h[i] != 0)
			atomicAdd(&hist[q * 256 + i], h[i]);
}

/*
 * After a pass: the digit holding the wanted rank joins the prefix; the
 * histogram is cleared.  When every key of that digit is wanted, the keys
 * at or above the prefix (lower bits zero) are exactly the k best, so the
 * remaining passes are skipped: left 0 says so.  Without ties that happens
 * once the score's 32 bits are decided, halving the passes.
 */
static __global__ void
k_pick(unsigned int *hist, unsigned long long *state, int shift)
{
	uint32_t q = blockIdx.x;
	unsigned int *h = hist + q * 256;

	if (threadIdx.x == 0 && state[3 * q + 1] != 0) {
		unsigned long long left = state[3 * q + 1];
		for (int d = 255; d >= 0; d--) {
			if (left <= h[d]) {
				state[3 * q] |= (unsigned long long)d << shift;
				if (left == h[d])
					left = 0;
				break;
			}
			left -= h[d];
		}
		state[3 * q + 1] = left;
	}
	__syncthreads();
	for (int i = threadIdx.x; i < 256; i += blockDim.x)
		h[i] = 0;
}

/* The keys at or above the k-th: exactly k of them, in no order. */
static __global__ void
k_gather(const float *scores, uint64_t n, unsigned long long *state, unsigned long long *out,
    uint64_t k)
{
	uint32_t q = blockIdx.y;
	const float *s = scores + (size_t)q * n;
	unsigned long long t = state[3 * q];

	for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
	    i += (uint64_t)gridDim.x * blockDim.x) {
		unsigned long long key = rank_key(s[i], (uint32_t)i);
		if (key >= t) {
			unsigned long long at = atomicAdd(&state[3 * q + 2], 1ull);
			if (at < k)
				out[(size_t)q * k + at] = key;
		}
	}
}

static __global__ void
k_init(unsigned long long *state, uint32_t nq, uint64_t k, int *offsets)
{
	uint32_t q = blockIdx.x * blockDim.x + threadIdx.x;

	if (q < nq) {
		state[3 * q] = 0;
		state[3 * q + 1] = k;
		state[3 * q + 2] = 0;
	}
	if (q <= nq)
		offsets[q] = (int)(q * k);
}

/* ---- the workspace ---- */

static int
dmalloc(void **p, size_t n, struct fm_err *err)
{
	*p = NULL;
	FM_CU(cudaMalloc(p, n ? n : 1), err);
	return FM_OK;
}

extern "C" struct fm_gpu_sel *
fm_gpu_sel_new(int device, uint64_t n, uint32_t dim, enum fm_vec_type type, uint32_t max_queries,
    struct fm_err *err)
{
	struct fm_gpu_sel *g;
	cudaDeviceProp p;

	if (n == 0 || n >= (1ull << 32) || dim == 0 || max_queries == 0) {
		fm_err_set(err, FM_EDEVICE, "cannot score %llu vectors of dimension %u on the GPU",
		    (unsigned long long)n, dim);
		return NULL;
	}
	if ((g = (struct fm_gpu_sel *)calloc(1, sizeof *g)) == NULL) {
		fm_err_set(err, FM_EIO, "cannot allocate");
		return NULL;
	}
	g->device = device;
	g->n = n;
	g->dim = dim;
	g->type = type;
	g->max_q = max_queries;
	if (fm_gpu_open(device, g->name, sizeof g->name, err) != FM_OK)
		goto fail;
	if (cudaGetDeviceProperties(&p, device) != cudaSuccess) {
		fm_cuda_fail(err, "cudaGetDeviceProperties", __FILE__, __LINE__, "failed");
		goto fail;
	}
	g->sms = p.multiProcessorCount;
	if (dmalloc((void **)&g->q, (size_t)max_queries * dim * sizeof(float), err) != FM_OK ||
	    dmalloc((void **)&g->qh, (size_t)max_queries * dim * sizeof(__half), err) != FM_OK ||
	    dmalloc((void **)&g->scores, (size_t)max_queries * n * sizeof(float), err) != FM_OK ||
	    dmalloc((void **)&g->hist, (size_t)max_queries * 256 * sizeof(unsigned int), err) != FM_OK ||
	    dmalloc((void **)&g->state, (size_t)max_queries * 3 * sizeof(unsigned long long), err) != FM_OK ||
	    dmalloc((void **)&g->offsets, ((size_t)max_queries + 1) * sizeof(int), err) != FM_OK)
		goto fail;
	if (cudaMemset(g->hist, 0, (size_t)max_queries * 256 * sizeof(unsigned int)) != cudaSuccess) {
		fm_cuda_fail(err, "cudaMemset", __FILE__, __LINE__, "failed");
		goto fail;
	}
	if (cublasCreate(&g->blas) != CUBLAS_STATUS_SUCCESS) {
		fm_cuda_fail(err, "cublasCreate", __FILE__, __LINE__, "failed");
		goto fail;
	}
	return g;
fail:
	cudaGetLastError();
	fm_gpu_sel_free(g);
	return NULL;
}

extern "C" void
fm_gpu_sel_free(struct fm_gpu_sel *g)
{
	if (g == NULL)
		return;
	cudaFree(g->owned);
	cudaFree(g->q);
	cudaFree(g->qh);
	cudaFree(g->scores);
	cudaFree(g->hist);
	cudaFree(g->state);
	cudaFree(g->keys);
	cudaFree(g->sorted);
	cudaFree(g->offsets);
	cudaFree(g->tmp);
	if (g->blas != NULL)
		cublasDestroy(g->blas);
	free(g->host_keys);
	free(g);
}

extern "C" const char *
fm_gpu_sel_device(const struct fm_gpu_sel *g)
{
	return g->name;
}

extern "C" int
fm_gpu_sel_load(struct fm_gpu_sel *g, const void *vecs, struct fm_err *err)
{
	size_t bytes = (size_t)g->n * g->dim * (g->type == FM_VEC_F16 ? 2 : 4);

	FM_CU(cudaSetDevice(g->device), err);
	if (g->owned == NULL && dmalloc(&g->owned, bytes, err) != FM_OK)
		return err->status;
	FM_CU(cudaMemcpy(g->owned, vecs, bytes, cudaMemcpyHostToDevice), err);
	g->vecs = g->owned;
	return FM_OK;
}

extern "C" void
fm_gpu_sel_attach(struct fm_gpu_sel *g, const void *vecs_device)
{
	g->vecs = vecs_device;
}

static unsigned
grid_for(const struct fm_gpu_sel *g, uint64_t items, unsigned per_block)
{
	uint64_t b = (items + per_block - 1) / per_block, cap = (uint64_t)g->sms * 8;

	return (unsigned)(b < 1 ? 1 : b > cap ? cap : b);
}

extern "C" int
fm_gpu_sel_score(struct fm_gpu_sel *g, const float *q, uint32_t nq, struct fm_err *err)
{
	uint32_t d = g->dim;
	uint64_t n = g->n;
	bool f16 = g->type == FM_VEC_F16;

	if (nq == 0 || nq > g->max_q || g->vecs == NULL || (nq > 1 && n > INT32_MAX))
		return fm_err_set(err, FM_EDEVICE, "%u queries for a workspace of %u over %llu vectors",
		    nq, g->max_q, (unsigned long long)n);
	FM_CU(cudaSetDevice(g->device), err);
	FM_CU(cudaMemcpy(g->q, q, (size_t)nq * d * sizeof(float), cudaMemcpyHostToDevice), err);
	if (nq == 1) {
		size_t shm = (size_t)d * sizeof(float);
		unsigned grid = grid_for(g, n * LANES, THREADS);
		if (f16 && d % (8 * LANES) == 0 && d / (8 * LANES) <= 8) {
			const uint4 *v = (const uint4 *)g->vecs;
			switch (d / (8 * LANES)) {
			case 1: k_score_f16_rows<1><<<grid, THREADS>>>(g->scores, v, g->q, n); break;
			case 2: k_score_f16_rows<2><<<grid, THREADS>>>(g->scores, v, g->q, n); break;
			case 3: k_score_f16_rows<3><<<grid, THREADS>>>(g->scores, v, g->q, n); break;
			case 4: k_score_f16_rows<4><<<grid, THREADS>>>(g->scores, v, g->q, n); break;
			case 5: k_score_f16_rows<5><<<grid, THREADS>>>(g->scores, v, g->q, n); break;
			case 6: k_score_f16_rows<6><<<grid, THREADS>>>(g->scores, v, g->q, n); break;
			case 7: k_score_f16_rows<7><<<grid, THREADS>>>(g->scores, v, g->q, n); break;
			default: k_score_f16_rows<8><<<grid, THREADS>>>(g->scores, v, g->q, n); break;
			}
			FM_LAUNCHED("k_score_f16_rows", err);
		} else if (f16 && d % 8 == 0 && shm <= 48 * 1024) {
			k_score_f16<<<grid, THREADS, shm>>>(g->scores, (const uint4 *)g->vecs, g->q, n, d / 8);
			FM_LAUNCHED("k_score_f16", err);
		} else if (!f16 && d % 4 == 0 && shm <= 48 * 1024) {
			k_score_f32<<<grid, THREADS, shm>>>(g->scores, (const float4 *)g->vecs, g->q, n, d / 4);
			FM_LAUNCHED("k_score_f32", err);
		} else {
			k_score_any<<<grid_for(g, n * 32, THREADS), THREADS>>>(g->scores, g->vecs, f16, g->q, n, d);
			FM_LAUNCHED("k_score_any", err);
		}
	} else {
		/* scores (nq, n) row-major is (n, nq) column-major: V^T (n, d) times Q (d, nq). */
		const float one = 1.0f, zero = 0.0f;
		if (f16) {
			size_t m = (size_t)nq * d;
			k_to_half<<<(unsigned)((m + THREADS - 1) / THREADS), THREADS>>>(g->qh, g->q, m);
			FM_LAUNCHED("k_to_half", err);
		}
		FM_CUBLAS(cublasGemmEx(g->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)n, (int)nq, (int)d, &one,
		    g->vecs, f16 ? CUDA_R_16F : CUDA_R_32F, (int)d, f16 ? (const void *)g->qh : (const void *)g->q,
		    f16 ? CUDA_R_16F : CUDA_R_32F, (int)d, &zero, g->scores, CUDA_R_32F, (int)n,
		    CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT), err);
	}
	FM_CU(cudaDeviceSynchronize(), err);
	return FM_OK;
}

extern "C" int
fm_gpu_sel_scores(struct fm_gpu_sel *g, uint32_t nq, float *out, struct fm_err *err)
{
	FM_CU(cudaSetDevice(g->device), err);
	FM_CU(cudaMemcpy(out, g->scores, (size_t)nq * g->n * sizeof(float), cudaMemcpyDeviceToHost), err);
	return FM_OK;
}

static int
grow_keys(struct fm_gpu_sel *g, size_t need, struct fm_err *err)
{
	if (need <= g->cap_keys)
		return FM_OK;
	cudaFree(g->keys);
	cudaFree(g->sorted);
	g->keys = g->sorted = NULL;
	g->cap_keys = 0;
	if (dmalloc((void **)&g->keys, need * sizeof(unsigned long long), err) != FM_OK ||
	    dmalloc((void **)&g->sorted, need * sizeof(unsigned long long), err) != FM_OK)
		return err->status;
	g->cap_keys = need;
	return FM_OK;
}

extern "C" int
fm_gpu_sel_topk(struct fm_gpu_sel *g, uint32_t nq, uint64_t k, struct fm_hit *out, struct fm_err *err)
{
	uint64_t n = g->n;
	size_t total = (size_t)nq * k, tmp = 0;
	unsigned grid = grid_for(g, n, THREADS);

	if (k == 0 || k > n || nq == 0 || nq > g->max_q || total >= (1u << 31))
		return fm_err_set(err, FM_EDEVICE, "top-%llu of %u queries over %llu vectors is out of range",
		    (unsigned long long)k, nq, (unsigned long long)n);
	FM_CU(cudaSetDevice(g->device), err);
	if (grow_keys(g, total, err) != FM_OK)
		return err->status;
	k_init<<<(nq + 1 + THREADS - 1) / THREADS, THREADS>>>(g->state, nq, k, g->offsets);
	FM_LAUNCHED("k_init", err);
	for (int shift = 56; shift >= 0; shift -= 8) {
		k_hist<<<dim3(grid, nq), THREADS>>>(g->scores, n, shift, g->state, g->hist);
		FM_LAUNCHED("k_hist", err);
		k_pick<<<nq, THREADS>>>(g->hist, g->state, shift);
		FM_LAUNCHED("k_pick", err);
	}
	k_gather<<<dim3(grid, nq), THREADS>>>(g->scores, n, g->state, g->keys, k);
	FM_LAUNCHED("k_gather", err);

	/* Sort the k keys of each query, largest first. */
	if (nq == 1)
		FM_CU(cub::DeviceRadixSort::SortKeysDescending(NULL, tmp, g->keys, g->sorted, (int)total), err);
	else
		FM_CU(cub::DeviceSegmentedRadixSort::SortKeysDescending(NULL, tmp, g->keys, g->sorted,
		    (int)total, (int)nq, g->offsets, g->offsets + 1), err);
	if (tmp > g->cap_tmp) {
		cudaFree(g->tmp);
		g->tmp = NULL;
		g->cap_tmp = 0;
		if (dmalloc(&g->tmp, tmp, err) != FM_OK)
			return err->status;
		g->cap_tmp = tmp;
	}
	if (nq == 1)
		FM_CU(cub::DeviceRadixSort::SortKeysDescending(g->tmp, tmp, g->keys, g->sorted, (int)total), err);
	else
		FM_CU(cub::DeviceSegmentedRadixSort::SortKeysDescending(g->tmp, tmp, g->keys, g->sorted,
		    (int)total, (int)nq, g->offsets, g->offsets + 1), err);
	if (total > g->cap_host) {
		unsigned long long *h = (unsigned long long *)realloc(g->host_keys, total * sizeof *h);
		if (h == NULL)
			return fm_err_set(err, FM_EIO, "cannot allocate");
		g->host_keys = h;
		g->cap_host = total;
	}
	FM_CU(cudaMemcpy(g->host_keys, g->sorted, total * sizeof(unsigned long long), cudaMemcpyDeviceToHost), err);
	for (size_t i = 0; i < total; i++) {
		unsigned long long key = g->host_keys[i];
		uint32_t u = (uint32_t)(key >> 32);
		u = (u & 0x80000000u) ? (u & 0x7fffffffu) : ~u;
		float s;
		memcpy(&s, &u, sizeof s);
		out[i].id = 0xffffffffu - (uint32_t)key;
		out[i].score = s;
	}
	return FM_OK;
}
