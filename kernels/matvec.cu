/*
 * matvec.cu - the matrix-vector products of a decode step, in the weights'
 * own types (F32, F16, BF16, Q8_0), each the GPU twin of CPU code in common/
 * that tests/unit/test_gpu_ops.c checks it against.
 *
 * A decode step reads every weight once, so these kernels are written for
 * HBM bandwidth.  A warp takes two rows at a time, in steps of MV_U 16-byte
 * streaming loads per lane and row, software pipelined: the next step's
 * loads (of this pair or the warp's next one) are issued before this step's
 * products, so every warp keeps loads in flight all the time.  The grid is
 * no larger than the GPU holds at once and its warps stride over the rows,
 * so the input vector (or its RMSNorm) goes to shared memory once per
 * block, not once per row.  When there are too few pairs to give every
 * warp the grid holds one (the output and down projections of a 1B model
 * have 1024), a pair's steps are shared by 2 to 8 warps of a block, which
 * add their sums in a fixed order: more loads in flight, same results from
 * run to run.  And the first step's loads are issued before the kernel
 * waits for the one before it (programmatic dependent launch,
 * cuda_util.cuh): the weights start streaming while that kernel finishes;
 * attention lets the output projection start at once, so its weights
 * arrive while attention waits on memory.
 *
 * One kernel has three forms:
 *   MV_PLAIN   y = W x (or y += W x) for up to three matrices end to end;
 *   MV_SWIGLU  silu(Wg x) * (Wu x): a warp's two rows are a gate and an up row;
 *   MV_QKV     q, k, v = Wq x, Wk x, Wv x, where a warp's two rows are one
 *              RoPE pair: rotated and put into the KV cache here, as
 *              k_rope_kv does after a prefill's GEMMs.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>

#include "cuda_check.cuh"
#include "cuda_util.cuh"
#include "ops.cuh"

extern "C" {
#include "gpu.h"
}

#define MV_WARPS 8
#define MV_U 4   /* 16-byte loads per lane and row in a step */

enum { MV_PLAIN, MV_SWIGLU, MV_QKV };

struct mv_args {
	const uint8_t *w[3];
	float *y[3];
	uint32_t rows[3];
	int n;                   /* matrices */
	uint32_t pairs;          /* pairs of rows, a warp's unit of work */
	size_t row_bytes;
	uint32_t cols;
	const float *x, *nw;     /* nw: x is replaced by fm_rmsnorm(x) * nw; NULL: x as it is */
	float eps;
	bool accumulate;
	/* MV_QKV: the cache row *wrow of kc and vc, the rotation at position *pos */
	void *kc, *vc;
	const float *freq;
	const int32_t *pos, *wrow;
	uint32_t hd, half_rot;
	/* MV_PLAIN: warps a pair of rows, each taking a share of the steps (1, 2, 4 or 8) */
	uint32_t parts;
};

/* Whether rows of type T are read in 16-byte pieces (not Q8_0, not odd widths). */
template <typename T>
static __host__ __device__ __forceinline__ bool
mv_vec(size_t row_bytes)
{
	return sizeof(T) > 1 && row_bytes % 16 == 0;
}

/* The steps of MV_U 16-byte pieces a lane in which a warp reads a row. */
static __host__ __device__ __forceinline__ uint32_t
mv_steps(size_t row_bytes)
{
	return (uint32_t)((row_bytes / 16 + 32 * MV_U - 1) / (32 * MV_U));
}

/* Which matrix holds row g of the matrices laid end to end, and its row there. */
static __device__ __forceinline__ const uint8_t *
mv_row(const struct mv_args &a, uint32_t g, int *k, uint32_t *r)
{
#pragma unroll
	for (int i = 0; i < 3; i++) {
		if (i < a.n && g < a.rows[i]) {
			*k = i;
			*r = g;
			return a.w[i] + (size_t)g * a.row_bytes;
		}
		if (i < a.n)
			g -= a.rows[i];
	}
	return NULL;
}

/* The two rows of pair p; NULL for a row past the end. */
template <int FORM>
static __device__ __forceinline__ void
mv_pair(const struct mv_args &a, uint32_t p, const uint8_t **r0, const uint8_t **r1)
{
	int k;
	uint32_t r;

	if constexpr (FORM == MV_SWIGLU) {
		*r0 = a.w[0] + (size_t)p * a.row_bytes;
		*r1 = a.w[1] + (size_t)p * a.row_bytes;
	} else {
		*r0 = mv_row(a, 2 * p, &k, &r);
		*r1 = mv_row(a, 2 * p + 1, &k, &r);
	}
}

/* MV_U 16-byte pieces i0, i0 + 32, ... of a row of n16 pieces; zeros past its end. */
static __device__ __forceinline__ void
mv_load(uint4 *u, const uint8_t *row, uint32_t n16, uint32_t i0)
{
	const uint4 *p = (const uint4 *)row;

#pragma unroll
	for (int k = 0; k < MV_U; k++) {
		uint32_t i = i0 + 32 * k;
		u[k] = row != NULL && i < n16 ? __ldcs(p + i) : make_uint4(0, 0, 0, 0);
	}
}

/* Those pieces times the matching values of x. */
template <typename T>
static __device__ __forceinline__ float
mv_dot(const uint4 *u, const float *xs, uint32_t n16, uint32_t i0)
{
	constexpr int E = 16 / sizeof(T);
	float s = 0;

#pragma unroll
	for (int k = 0; k < MV_U; k++) {
		uint32_t i = i0 + 32 * k;
		if (i < n16) {
			const T *e = (const T *)&u[k];
			const float4 *x4 = (const float4 *)(xs + (size_t)i * E);
#pragma unroll
			for (int j = 0; j < E / 4; j++) {
				float4 b = x4[j];
				s += tof(e[4 * j]) * b.x + tof(e[4 * j + 1]) * b.y + tof(e[4 * j + 2]) * b.z +
				    tof(e[4 * j + 3]) * b.w;
			}
		}
	}
	return s;
}

/* This lane's share of row . x when the row is not in 16-byte pieces (Q8_0, odd widths). */
template <typename T>
static __device__ __forceinline__ float
mv_dot_any(const uint8_t *row, const float *xs, uint32_t cols, int lane)
{
	float s = 0;

	if (row == NULL)
		return 0;
	if constexpr (sizeof(T) == 1) {
		/* Q8_0: a lane per block of 32 weights (34 bytes: F16 scale, 32 int8). */
		for (uint32_t b = lane; b < cols / 32; b += 32) {
			const uint8_t *blk = row + 34 * (size_t)b;
			const int8_t *qs = (const int8_t *)(blk + 2);
			const float *xb = xs + 32 * (size_t)b;
			float t = 0;
#pragma unroll
			for (int k = 0; k < 32; k++)
				t += (float)qs[k] * xb[k];
			s += __half2float(*(const __half *)blk) * t;
		}
	} else {
		const T *w = (const T *)row;
		for (uint32_t i = lane; i < cols; i += 32)
			s += tof(w[i]) * xs[i];
	}
	return s;
}

#define XU 4   /* 16-byte loads of x a thread issues before using any */

/*
 * xs = x and this thread's share of the sum of squares of x.  The loads go
 * XU at a time ahead of their use: x could point anywhere, so the compiler
 * may not move a load past the store to shared memory before it, and one
 * load at a time would cost a memory latency per element.
 */
static __device__ __forceinline__ float
mv_copy_x(float *xs, const float *x, uint32_t cols)
{
	float ss = 0;

	if (cols % 4 != 0 || (uintptr_t)x % 16 != 0) {
		for (uint32_t i = threadIdx.x; i < cols; i += blockDim.x) {
			xs[i] = x[i];
			ss += x[i] * x[i];
		}
		return ss;
	}
	for (uint32_t i0 = threadIdx.x; i0 < cols / 4; i0 += blockDim.x * XU) {
		float4 a[XU];
#pragma unroll
		for (int k = 0; k < XU; k++) {
			uint32_t i = i0 + k * blockDim.x;
			a[k] = i < cols / 4 ? ((const float4 *)x)[i] : make_float4(0, 0, 0, 0);
		}
#pragma unroll
		for (int k = 0; k < XU; k++) {
			uint32_t i = i0 + k * blockDim.x;
			ss += a[k].x * a[k].x + a[k].y * a[k].y + a[k].z * a[k].z + a[k].w * a[k].w;
			if (i < cols / 4)
				((float4 *)xs)[i] = a[k];
		}
	}
	return ss;
}

/*
 * The norm's weights for this thread's elements of the first XU float4s:
 * they depend on nothing before, so they are loaded before the wait.
 */
static __device__ __forceinline__ void
mv_norm_weights(const struct mv_args &a, float4 *nw4)
{
#pragma unroll
	for (int k = 0; k < XU; k++) {
		uint32_t i = threadIdx.x + k * blockDim.x;
		nw4[k] = a.nw != NULL && a.cols % 4 == 0 && i < a.cols / 4 ?
		    ((const float4 *)a.nw)[i] : make_float4(0, 0, 0, 0);
	}
}

/* x, or fm_rmsnorm(x) * nw (nw4: from mv_norm_weights), into shared memory. */
static __device__ __forceinline__ void
mv_stage_x(const struct mv_args &a, float *xs, const float4 *nw4)
{
	float ss = mv_copy_x(xs, a.x, a.cols), r;

	if (a.nw != NULL) {
		ss = block_sum(ss);   /* its barriers also make xs whole */
		r = 1.0f / sqrtf(ss / a.cols + a.eps);
		if (a.cols % 4 == 0) {
#pragma unroll
			for (int k = 0; k < XU; k++) {
				uint32_t i = threadIdx.x + k * blockDim.x;
				if (i < a.cols / 4) {
					float4 e = ((float4 *)xs)[i];
					((float4 *)xs)[i] = make_float4(e.x * r * nw4[k].x, e.y * r * nw4[k].y,
					    e.z * r * nw4[k].z, e.w * r * nw4[k].w);
				}
			}
		}
		for (uint32_t i = threadIdx.x + (a.cols % 4 == 0 ? XU * blockDim.x * 4 : 0); i < a.cols;
		    i += blockDim.x)
			xs[i] = xs[i] * r * a.nw[i];
	}
	__syncthreads();
}

/* Lane 0's part: pair p's two sums to where its form puts them. */
template <int FORM, typename KT>
static __device__ __forceinline__ void
mv_store(const struct mv_args &a, uint32_t p, float s0, float s1)
{
	int k;
	uint32_t r;

	if constexpr (FORM == MV_SWIGLU) {
		a.y[0][p] = s0 / (1.0f + expf(-s0)) * s1;
	} else if constexpr (FORM == MV_QKV) {
		/* Rows are whole heads of an even size: the pair is dimensions d, d + 1 of one head. */
		uint32_t i;
		mv_row(a, 2 * p, &k, &r);
		i = r % a.hd / 2;
		if (k < 2 && i < a.half_rot) {
			/* As k_rope_kv: the angle in double, no fused multiply-add. */
			double sd, cd;
			float cs, sn, x0 = s0, x1 = s1;
			sincos((double)(uint32_t)*a.pos * (double)a.freq[i], &sd, &cd);
			cs = (float)cd;
			sn = (float)sd;
			s0 = __fsub_rn(__fmul_rn(x0, cs), __fmul_rn(x1, sn));
			s1 = __fadd_rn(__fmul_rn(x0, sn), __fmul_rn(x1, cs));
		}
		a.y[k][r] = s0;
		a.y[k][r + 1] = s1;
		if (k > 0) {
			KT *c = (KT *)(k == 1 ? a.kc : a.vc) + (size_t)(uint32_t)*a.wrow * a.rows[1] + r;
			put(c, s0);
			put(c + 1, s1);
		}
	} else {
		if (mv_row(a, 2 * p, &k, &r) != NULL)
			a.y[k][r] = a.accumulate ? a.y[k][r] + s0 : s0;
		if (mv_row(a, 2 * p + 1, &k, &r) != NULL)
			a.y[k][r] = a.accumulate ? a.y[k][r] + s1 : s1;
	}
}

template <typename T, int FORM, typename KT>
static __global__ void __launch_bounds__(32 * MV_WARPS)
k_mv(const struct mv_args a)
{
	extern __shared__ float4 xs4[];
	float *xs = (float *)xs4;
	const int lane = threadIdx.x & 31;
	__shared__ float part_sum[2][MV_WARPS][2];
	const uint32_t w = threadIdx.x >> 5, n16 = (uint32_t)(a.row_bytes / 16);
	const uint32_t steps = mv_steps(a.row_bytes);
	const bool vec = mv_vec<T>(a.row_bytes);
	/* This warp's share of each of its pairs: steps b0 to b1 (a whole row when parts is 1). */
	const uint32_t part = w % a.parts, b0 = part * steps / a.parts, b1 = (part + 1) * steps / a.parts;
	const uint32_t stride = gridDim.x * MV_WARPS / a.parts;
	uint32_t p = (blockIdx.x * MV_WARPS + w) / a.parts, b = b0, unit = 0;
	const uint8_t *r0 = NULL, *r1 = NULL;
	uint4 u0[MV_U], u1[MV_U];
	float4 nw4[XU];
	float s0 = 0, s1 = 0;

	/* The first pair's first loads and the norm's weights depend on nothing before. */
	mv_norm_weights(a, nw4);
	if (p < a.pairs) {
		mv_pair<FORM>(a, p, &r0, &r1);
		if (vec) {
			mv_load(u0, r0, n16, b0 * 32 * MV_U + lane);
			mv_load(u1, r1, n16, b0 * 32 * MV_U + lane);
		}
	}
	grid_wait();
	mv_stage_x(a, xs, nw4);
	grid_release();

	if (!vec) {
		for (; p < a.pairs; p += stride) {
			mv_pair<FORM>(a, p, &r0, &r1);
			s0 = warp_sum(mv_dot_any<T>(r0, xs, a.cols, lane));
			s1 = warp_sum(mv_dot_any<T>(r1, xs, a.cols, lane));
			if (lane == 0)
				mv_store<FORM, KT>(a, p, s0, s1);
		}
		return;
	}
	/* Q8_0 rows are never read in 16-byte pieces: no such loop for them. */
	if constexpr (sizeof(T) > 1) {
		/*
		 * Software pipelined over the warp's steps (step b of pair p): the next
		 * step's loads go out before this step's products, so the warp always
		 * has loads in flight, also from one pair to its next.
		 */
		while (p < a.pairs) {
			uint32_t nb = b + 1, np = p;
			const uint8_t *n0 = r0, *n1 = r1;
			uint4 v0[MV_U], v1[MV_U];
			if (nb == b1) {
				nb = b0;
				np = p + stride;
				n0 = n1 = NULL;
				if (np < a.pairs)
					mv_pair<FORM>(a, np, &n0, &n1);
			}
			mv_load(v0, n0, n16, nb * 32 * MV_U + lane);
			mv_load(v1, n1, n16, nb * 32 * MV_U + lane);
			s0 += mv_dot<T>(u0, xs, n16, b * 32 * MV_U + lane);
			s1 += mv_dot<T>(u1, xs, n16, b * 32 * MV_U + lane);
			if (nb == b0) {
				s0 = warp_sum(s0);
				s1 = warp_sum(s1);
				if (a.parts > 1) {
					/*
					 * The pair's warps meet (a barrier of their own); its first
					 * adds their sums in a fixed order.  Two sets of sums, so a
					 * warp ahead by a pair does not overwrite what is still read.
					 */
					float (*ps)[2] = part_sum[unit & 1];
					if (lane == 0) {
						ps[w][0] = s0;
						ps[w][1] = s1;
					}
					asm volatile("bar.sync %0, %1;" ::"r"(1 + w / a.parts), "r"(32 * a.parts)
					    : "memory");
					if (part == 0 && lane == 0) {
						for (uint32_t i = 1; i < a.parts; i++) {
							s0 += ps[w + i][0];
							s1 += ps[w + i][1];
						}
						mv_store<FORM, KT>(a, p, s0, s1);
					}
					unit++;
				} else if (lane == 0) {
					mv_store<FORM, KT>(a, p, s0, s1);
				}
				s0 = s1 = 0;
			}
#pragma unroll
			for (int k = 0; k < MV_U; k++) {
				u0[k] = v0[k];
				u1[k] = v1[k];
			}
			b = nb;
			p = np;
			r0 = n0;
			r1 = n1;
		}
	}
}

/* A grid the GPU holds at once (or smaller, when there are fewer pairs), then the launch. */
template <typename T, int FORM, typename KT>
static int
mv_launch(cudaStream_t st, struct mv_args a, struct fm_err *err)
{
	void (*kernel)(const struct mv_args) = k_mv<T, FORM, KT>;
	size_t smem = (size_t)a.cols * sizeof(float);
	int dev = 0, sms = 0, per_sm = 0;
	unsigned grid;

	if (a.pairs == 0)
		return FM_OK;
	FM_CU(cudaGetDevice(&dev), err);
	FM_CU(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), err);
	if (smem > 48 * 1024 && cudaFuncSetAttribute(kernel,
	    cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) != cudaSuccess) {
		cudaGetLastError();
		return fm_err_set(err, FM_EDEVICE, "rows of %u values are too wide for the GPU's "
		    "matrix-vector kernel", a.cols);
	}
	FM_CU(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, 32 * MV_WARPS, smem),
	    err);
	/*
	 * Too few pairs to give every warp the GPU holds one (the output and down
	 * projections): each pair's steps are shared by more warps, so more
	 * loads are in flight.
	 */
	a.parts = 1;
	if (FORM == MV_PLAIN && mv_vec<T>(a.row_bytes)) {
		size_t warps = (size_t)sms * (per_sm > 0 ? per_sm : 1) * MV_WARPS;
		size_t steps = mv_steps(a.row_bytes);
		while (a.parts < MV_WARPS && (size_t)a.pairs * a.parts * 2 <= warps &&
		    steps >= a.parts * 2)
			a.parts *= 2;
	}
	grid = blocks((size_t)a.pairs * a.parts, MV_WARPS);
	if (per_sm > 0 && grid > (unsigned)(sms * per_sm))
		grid = (unsigned)(sms * per_sm);
	FM_CU(launch_pdl(kernel, dim3(grid), dim3(32 * MV_WARPS), smem, st, a), err);
	return FM_OK;
}

template <int FORM, typename KT>
static int
mv_typed(cudaStream_t st, int type, const char *name, const struct mv_args &a, struct fm_err *err)
{
	switch (type) {
	case FM_GGML_F32:
		return mv_launch<float, FORM, KT>(st, a, err);
	case FM_GGML_F16:
		return mv_launch<__half, FORM, KT>(st, a, err);
	case FM_GGML_BF16:
		return mv_launch<__nv_bfloat16, FORM, KT>(st, a, err);
	case FM_GGML_Q8_0:
		return mv_launch<int8_t, FORM, KT>(st, a, err);
	}
	return fm_err_set(err, FM_EDEVICE, "%s: no CUDA kernel for its type", name);
}

/* The matrices' pointers and sizes into a; they must share a type and width. */
static int
mv_matrices(struct mv_args *a, int n, const struct fm_weight *const *w, float *const *y,
    const float *x, const float *nw, float eps, struct fm_err *err)
{
	uint32_t total = 0;

	for (int i = 0; i < n; i++) {
		if (w[i]->type != w[0]->type || w[i]->cols != w[0]->cols)
			return fm_err_set(err, FM_EDEVICE, "%s and %s differ in type or width", w[0]->name,
			    w[i]->name);
		a->w[i] = (const uint8_t *)w[i]->data;
		a->y[i] = y[i];
		a->rows[i] = w[i]->rows;
		total += w[i]->rows;
	}
	a->n = n;
	a->pairs = (total + 1) / 2;
	a->row_bytes = w[0]->row_bytes;
	a->cols = w[0]->cols;
	a->x = x;
	a->nw = nw;
	a->eps = eps;
	return FM_OK;
}

int
fm_k_matvec(cudaStream_t st, int n_mat, const struct fm_weight *const *w, float *const *y,
    const float *x, bool accumulate, struct fm_err *err)
{
	return fm_k_matvec_norm(st, n_mat, w, y, x, NULL, 0, accumulate, err);
}

int
fm_k_matvec_norm(cudaStream_t st, int n_mat, const struct fm_weight *const *w, float *const *y,
    const float *x, const float *nw, float eps, bool accumulate, struct fm_err *err)
{
	struct mv_args a = {};
	int rc;

	if ((rc = mv_matrices(&a, n_mat, w, y, x, nw, eps, err)) != FM_OK)
		return rc;
	a.accumulate = accumulate;
	return mv_typed<MV_PLAIN, float>(st, w[0]->type, w[0]->name, a, err);
}

int
fm_k_matvec_swiglu(cudaStream_t st, float *out, const struct fm_weight *wg,
    const struct fm_weight *wu, const float *x, const float *nw, float eps, struct fm_err *err)
{
	const struct fm_weight *w[2] = { wg, wu };
	float *y[2] = { out, NULL };
	struct mv_args a = {};
	int rc;

	if ((rc = mv_matrices(&a, 2, w, y, x, nw, eps, err)) != FM_OK)
		return rc;
	if (wg->rows != wu->rows)
		return fm_err_set(err, FM_EDEVICE, "%s and %s differ in rows", wg->name, wu->name);
	a.pairs = wg->rows;
	return mv_typed<MV_SWIGLU, float>(st, wg->type, wg->name, a, err);
}

int
fm_k_matvec_qkv(cudaStream_t st, const struct fm_weight *const *w, float *const *y, const float *x,
    const float *nw, float eps, void *kc, void *vc, bool f16, uint32_t head_dim, uint32_t n_rot,
    const float *freq, const int32_t *pos, const int32_t *wrow, struct fm_err *err)
{
	struct mv_args a = {};
	int rc;

	/* A pair of rows is a pair of RoPE dimensions only for even head and rotation sizes. */
	if (head_dim % 2 != 0 || n_rot % 2 != 0 || w[0]->type != w[1]->type ||
	    w[0]->type != w[2]->type || w[1]->rows != w[2]->rows)
		return 1;
	if ((rc = mv_matrices(&a, 3, w, y, x, nw, eps, err)) != FM_OK)
		return rc;
	a.kc = kc;
	a.vc = vc;
	a.freq = freq;
	a.pos = pos;
	a.wrow = wrow != NULL ? wrow : pos;
	a.hd = head_dim;
	a.half_rot = n_rot / 2;
	if (f16)
		return mv_typed<MV_QKV, __half>(st, w[0]->type, w[0]->name, a, err);
	return mv_typed<MV_QKV, float>(st, w[0]->type, w[0]->name, a, err);
}

/* ---- the tests' entries (gpu.h) ---- */

extern "C" int
fm_gpu_matvec(float *y, const struct fm_weight *w, const float *x, bool accumulate,
    struct fm_err *err)
{
	return fm_k_matvec(0, 1, &w, &y, x, accumulate, err);
}

extern "C" int
fm_gpu_ffn_in(float *out, const struct fm_weight *wg, const struct fm_weight *wu, const float *x,
    const float *nw, float eps, struct fm_err *err)
{
	return fm_k_matvec_swiglu(0, out, wg, wu, x, nw, eps, err);
}

extern "C" int
fm_gpu_qkv(float *q, float *k, float *v, const struct fm_weight *wq, const struct fm_weight *wk,
    const struct fm_weight *wv, const float *x, const float *nw, float eps, void *kc, void *vc,
    bool f16, uint32_t head_dim, uint32_t n_rot, const float *freq, const int32_t *pos,
    struct fm_err *err)
{
	const struct fm_weight *w[3] = { wq, wk, wv };
	float *y[3] = { q, k, v };
	int rc = fm_k_matvec_qkv(0, w, y, x, nw, eps, kc, vc, f16, head_dim, n_rot, freq, pos, NULL,
	    err);

	if (rc == 1)
		return fm_err_set(err, FM_EDEVICE, "no fused form for head size %u, rotation %u",
		    head_dim, n_rot);
	return rc;
}
