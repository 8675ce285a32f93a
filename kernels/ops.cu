/*
 * ops.cu - the CUDA kernels of the llama forward pass, each the GPU twin of
 * a CPU function in common/ (named at each kernel) that tests/unit/
 * test_gpu_ops.c checks it against: RMSNorm, RoPE with the KV store, SwiGLU,
 * attention with an online softmax, argmax, embedding rows and the
 * conversions feeding cuBLAS.  The matrix-vector products of a decode step
 * are in matvec.cu.
 *
 * Attention comes in these forms: for decoding, split-K over ranges of keys
 * merged by the last block, or, for a short context, a block per head with
 * all its keys in shared memory; a warp per key with the lanes across the
 * head (any head size up to 256, the general case)
 * and, for prefill with heads of 64 or 128, a flash-attention kernel on
 * tensor cores (WMMA) that keeps the softmax state per query row, used for
 * the F32 cache; the F16 cache has the faster one of attn_prefill.cu.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <mma.h>
#include <stdint.h>
#include <stdio.h>

#include "cuda_check.cuh"
#include "cuda_util.cuh"
#include "ops.cuh"

extern "C" {
#include "gpu.h"
}

/* ---- RMSNorm, RoPE with the KV store, SwiGLU ---- */

/* twin fm_rmsnorm: one block per row, written in the type of out */
template <typename OT>
static __global__ void
k_rmsnorm(OT *out, const float *x, const float *w, uint32_t n, float eps)
{
	const float *xr = x + (size_t)blockIdx.x * n;
	OT *o = out + (size_t)blockIdx.x * n;
	float ss = 0, r;

	for (uint32_t i = threadIdx.x; i < n; i += blockDim.x)
		ss += xr[i] * xr[i];
	ss = block_sum(ss);
	r = 1.0f / sqrtf(ss / n + eps);
	for (uint32_t i = threadIdx.x; i < n; i += blockDim.x)
		put(o + i, xr[i] * r * w[i]);
}

int
fm_k_rmsnorm(cudaStream_t st, void *out, enum fm_act ot, const float *x, const float *w,
    uint32_t rows, uint32_t n, float eps, struct fm_err *err)
{
	if (ot == FM_ACT_F16)
		k_rmsnorm<<<rows, 256, 0, st>>>((__half *)out, x, w, n, eps);
	else if (ot == FM_ACT_BF16)
		k_rmsnorm<<<rows, 256, 0, st>>>((__nv_bfloat16 *)out, x, w, n, eps);
	else
		k_rmsnorm<<<rows, 256, 0, st>>>((float *)out, x, w, n, eps);
	FM_LAUNCHED("k_rmsnorm", err);
	return FM_OK;
}

/*
 * twin fm_rope on q and k, then fm_kv_put: a thread per pair of dimensions
 * of one head (query or key) of one row.  The rows come packed as the QKV
 * product writes them, q then k then v; the rotated q goes to q_out
 * (rows, n_head * hd), k and v to the caches.  Angles in double as on the
 * CPU, and no fused multiply-add, so the rotation rounds as the CPU's does.
 */
template <typename KT>
static __global__ void
k_rope_kv(float *q_out, const float *qkv, KT *kc, KT *vc, uint32_t rows, uint32_t n_head,
    uint32_t n_head_kv, uint32_t hd, uint32_t half_rot, const float *freq, const int32_t *pos0,
    const int32_t *wrow0)
{
	const uint32_t half = (hd + 1) / 2, heads = n_head + n_head_kv;
	const size_t qd = (size_t)n_head * hd, kvd = (size_t)n_head_kv * hd, width = qd + 2 * kvd;
	size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	uint32_t i, h, row, pos, d;
	const float *x;
	float x0, x1 = 0;

	if (idx >= (size_t)rows * heads * half)
		return;
	i = (uint32_t)(idx % half);
	h = (uint32_t)(idx / half % heads);
	row = (uint32_t)(idx / half / heads);
	pos = (uint32_t)*pos0 + row;
	d = 2 * i;
	x = qkv + row * width + (size_t)h * hd;   /* the k heads follow the q heads */
	x0 = x[d];
	if (d + 1 < hd)
		x1 = x[d + 1];
	if (i < half_rot) {
		double sd, cd;
		float cs, sn, r0, r1;
		sincos((double)pos * (double)freq[i], &sd, &cd);
		cs = (float)cd;
		sn = (float)sd;
		r0 = __fsub_rn(__fmul_rn(x0, cs), __fmul_rn(x1, sn));
		r1 = __fadd_rn(__fmul_rn(x0, sn), __fmul_rn(x1, cs));
		x0 = r0;
		x1 = r1;
	}
	if (h < n_head) {
		float *o = q_out + row * qd + (size_t)h * hd + d;
		o[0] = x0;
		if (d + 1 < hd)
			o[1] = x1;
	} else {
		size_t off = (size_t)(h - n_head) * hd + d;
		size_t dst = ((size_t)(uint32_t)*wrow0 + row) * kvd + off;
		const float *v = qkv + row * width + qd + kvd + off;
		put(kc + dst, x0);
		put(vc + dst, v[0]);
		if (d + 1 < hd) {
			put(kc + dst + 1, x1);
			put(vc + dst + 1, v[1]);
		}
	}
}

int
fm_k_rope_kv(cudaStream_t st, float *q_out, const float *qkv, void *kc, void *vc, bool f16,
    uint32_t rows, uint32_t n_head, uint32_t n_head_kv, uint32_t head_dim, uint32_t n_rot,
    const float *freq, const int32_t *pos0, const int32_t *wrow0, struct fm_err *err)
{
	size_t n = (size_t)rows * (n_head + n_head_kv) * ((head_dim + 1) / 2);

	if (wrow0 == NULL)
		wrow0 = pos0;
	if (f16)
		k_rope_kv<<<blocks(n, 256), 256, 0, st>>>(q_out, qkv, (__half *)kc, (__half *)vc, rows,
		    n_head, n_head_kv, head_dim, n_rot / 2, freq, pos0, wrow0);
	else
		k_rope_kv<<<blocks(n, 256), 256, 0, st>>>(q_out, qkv, (float *)kc, (float *)vc, rows,
		    n_head, n_head_kv, head_dim, n_rot / 2, freq, pos0, wrow0);
	FM_LAUNCHED("k_rope_kv", err);
	return FM_OK;
}

/* twin fm_swiglu over rows: row r's gate and up at r * stride, its output at r * n */
template <typename OT>
static __global__ void
k_swiglu(OT *out, const float *gate, const float *up, uint32_t n, size_t stride, size_t total)
{
	size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x, at;

	if (i < total) {
		at = i / n * stride + i % n;
		float g = gate[at];
		put(out + i, g / (1.0f + expf(-g)) * up[at]);
	}
}

int
fm_k_swiglu(cudaStream_t st, void *out, enum fm_act ot, const float *gate, const float *up,
    uint32_t rows, uint32_t n, size_t stride, struct fm_err *err)
{
	size_t total = (size_t)rows * n;

	if (total == 0)
		return FM_OK;
	if (ot == FM_ACT_F16)
		k_swiglu<<<blocks(total, 256), 256, 0, st>>>((__half *)out, gate, up, n, stride, total);
	else if (ot == FM_ACT_BF16)
		k_swiglu<<<blocks(total, 256), 256, 0, st>>>((__nv_bfloat16 *)out, gate, up, n, stride,
		    total);
	else
		k_swiglu<<<blocks(total, 256), 256, 0, st>>>((float *)out, gate, up, n, stride, total);
	FM_LAUNCHED("k_swiglu", err);
	return FM_OK;
}

/* ---- attention ---- */

#define ATTN_WARPS 8
#define ATTN_KB 8   /* consecutive keys a warp loads at once, so their loads overlap */

/*
 * twin fm_attention, the general form: a block per (query head, query), each
 * warp taking ATTN_KB keys at a time with the lanes across the head, the
 * online softmax state kept per warp and merged at the end.  Head sizes up
 * to MAXD.
 */
template <int MAXD, typename KT>
static __global__ void __launch_bounds__(32 * ATTN_WARPS)
k_attn_warp(float *out, const float *q, const KT *kc, const KT *vc, uint32_t n_head,
    uint32_t group, uint32_t n_head_kv, uint32_t hd, const int32_t *pos0, const int32_t *rows,
    const int32_t *nkeys, float scale)
{
	constexpr int PER = MAXD / 32;
	__shared__ float sm[ATTN_WARPS], sl[ATTN_WARPS], sacc[ATTN_WARPS][MAXD];
	const uint32_t h = blockIdx.x, i = blockIdx.y, kvh = h / group;
	const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
	/* Sparse (one query): the keys are rows[0 .. *nkeys) of the store. */
	const uint32_t n_keys = rows != NULL ? (uint32_t)*nkeys : (uint32_t)*pos0 + i + 1;
	const size_t kvd = (size_t)n_head_kv * hd;
	const float *qh = q + ((size_t)i * n_head + h) * hd;
	float qr[PER], acc[PER], m = -INFINITY, l = 0, mx, big;

#pragma unroll
	for (int k = 0; k < PER; k++) {
		uint32_t d = lane + 32 * k;
		qr[k] = d < hd ? qh[d] * scale : 0.0f;
		acc[k] = 0.0f;
	}
	for (uint32_t j0 = w * ATTN_KB; j0 < n_keys; j0 += ATTN_WARPS * ATTN_KB) {
		float s[ATTN_KB], e[ATTN_KB][PER], bm = -INFINITY;
		size_t at[ATTN_KB];
#pragma unroll
		for (int b = 0; b < ATTN_KB; b++) {
			uint32_t j = j0 + b < n_keys ? j0 + b : j0;
			at[b] = (size_t)(rows != NULL ? (uint32_t)rows[j] : j) * kvd + (size_t)kvh * hd;
		}
#pragma unroll
		for (int b = 0; b < ATTN_KB; b++)
#pragma unroll
			for (int k = 0; k < PER; k++) {
				uint32_t d = lane + 32 * k;
				e[b][k] = j0 + b < n_keys && d < hd ? tof(kc[at[b] + d]) : 0.0f;
			}
#pragma unroll
		for (int b = 0; b < ATTN_KB; b++) {
			float t = 0;
#pragma unroll
			for (int k = 0; k < PER; k++)
				t += qr[k] * e[b][k];
			t = warp_sum(t);
			s[b] = j0 + b < n_keys ? t : -INFINITY;
			bm = fmaxf(bm, s[b]);
		}
		/* Key j0 exists, so bm is finite: rescale what was summed under the old maximum. */
		if (bm > m) {
			float c = __expf(m - bm);
			l *= c;
#pragma unroll
			for (int k = 0; k < PER; k++)
				acc[k] *= c;
			m = bm;
		}
#pragma unroll
		for (int b = 0; b < ATTN_KB; b++)
#pragma unroll
			for (int k = 0; k < PER; k++) {
				uint32_t d = lane + 32 * k;
				e[b][k] = j0 + b < n_keys && d < hd ? tof(vc[at[b] + d]) : 0.0f;
			}
#pragma unroll
		for (int b = 0; b < ATTN_KB; b++) {
			float p = __expf(s[b] - m);
			l += p;
#pragma unroll
			for (int k = 0; k < PER; k++)
				acc[k] += p * e[b][k];
		}
	}
	if (lane == 0) {
		sm[w] = m;
		sl[w] = l;
	}
#pragma unroll
	for (int k = 0; k < PER; k++)
		sacc[w][lane + 32 * k] = acc[k];
	__syncthreads();
	/* Merge the warps: rescale each to the largest maximum. */
	big = -INFINITY;
	for (int u = 0; u < ATTN_WARPS; u++)
		big = fmaxf(big, sm[u]);
	mx = 0;
	for (int u = 0; u < ATTN_WARPS; u++)
		if (sm[u] != -INFINITY)
			mx += sl[u] * __expf(sm[u] - big);
	for (uint32_t d = threadIdx.x; d < hd; d += blockDim.x) {
		float o = 0;
		for (int u = 0; u < ATTN_WARPS; u++)
			if (sm[u] != -INFINITY)
				o += sacc[u][d] * __expf(sm[u] - big);
		out[((size_t)i * n_head + h) * hd + d] = o / mx;
	}
}

/*
 * twin fm_attention, the prefill form for head size HD (64 or 128): a block
 * of 4 warps takes 64 queries of one head; each warp owns 16 of them.  For
 * each tile of 64 keys, S = Q K^T on tensor cores, then the online softmax
 * row by row in shared memory, then O += P V on tensor cores.  WMMA
 * fragments cannot be scaled by row, so O lives in shared memory between
 * tiles.  Q, K, V and P are F16, sums F32.
 */
#define FA_Q 64
#define FA_K 64

template <int HD>
struct fa_smem {
	__half q[FA_Q][HD + 8];
	__half k[FA_K][HD + 8];
	__half v[FA_K][HD + 8];
	float s[4][16][FA_K + 4];
	__half p[4][16][FA_K + 8];
	float o[4][16][HD + 4];
	float m[FA_Q], l[FA_Q], corr[FA_Q];
};

template <int HD, typename KT>
static __global__ void __launch_bounds__(128)
k_attn_flash(float *out, const float *q, const KT *kc, const KT *vc, uint32_t n_q,
    uint32_t n_head, uint32_t group, uint32_t n_head_kv, const int32_t *pos0, float scale)
{
	using namespace nvcuda;
	extern __shared__ __align__(128) unsigned char smem_raw[];
	fa_smem<HD> &S = *reinterpret_cast<fa_smem<HD> *>(smem_raw);
	const uint32_t h = blockIdx.y, kvh = h / group, q0 = blockIdx.x * FA_Q;
	const uint32_t nq = n_q - q0 < FA_Q ? n_q - q0 : FA_Q;
	const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5, r0 = 16 * w;
	const uint32_t p0 = (uint32_t)*pos0;
	const size_t kvd = (size_t)n_head_kv * HD;
	const uint32_t n_keys = p0 + q0 + nq;   /* the last query of the block sees this many */
	const bool warp_live = (uint32_t)r0 < nq;
	const uint32_t warp_last = p0 + q0 + (r0 + 15 < (int)nq ? r0 + 15 : nq - 1);

	for (int e = tid; e < FA_Q * HD; e += 128) {
		int r = e / HD, d = e % HD;
		S.q[r][d] = __float2half((uint32_t)r < nq ?
		    q[((size_t)(q0 + r) * n_head + h) * HD + d] * scale : 0.0f);
	}
	for (int e = tid; e < 4 * 16 * HD; e += 128)
		(&S.o[0][0][0])[(e / HD) * (HD + 4) + e % HD] = 0.0f;
	for (int e = tid; e < FA_Q; e += 128) {
		S.m[e] = -INFINITY;
		S.l[e] = 0.0f;
	}

	for (uint32_t t0 = 0; t0 < n_keys; t0 += FA_K) {
		__syncthreads();
		if constexpr (sizeof(KT) == 2) {
			/* 16 bytes, 8 halves, at a time: HD and the row strides are multiples of 8. */
			for (int e = tid; e < FA_K * HD / 8; e += 128) {
				int j = e / (HD / 8), d = e % (HD / 8) * 8;
				uint32_t key = t0 + j;
				uint4 kk = make_uint4(0, 0, 0, 0), vv = kk;
				if (key < n_keys) {
					size_t src = (size_t)key * kvd + (size_t)kvh * HD + d;
					kk = *(const uint4 *)(kc + src);
					vv = *(const uint4 *)(vc + src);
				}
				*(uint4 *)&S.k[j][d] = kk;
				*(uint4 *)&S.v[j][d] = vv;
			}
		} else {
			for (int e = tid; e < FA_K * HD / 4; e += 128) {
				int j = e / (HD / 4), d = e % (HD / 4) * 4;
				uint32_t key = t0 + j;
				float4 kk = make_float4(0, 0, 0, 0), vv = kk;
				if (key < n_keys) {
					size_t src = (size_t)key * kvd + (size_t)kvh * HD + d;
					kk = *(const float4 *)(kc + src);
					vv = *(const float4 *)(vc + src);
				}
				*(__half2 *)&S.k[j][d] = __floats2half2_rn(kk.x, kk.y);
				*(__half2 *)&S.k[j][d + 2] = __floats2half2_rn(kk.z, kk.w);
				*(__half2 *)&S.v[j][d] = __floats2half2_rn(vv.x, vv.y);
				*(__half2 *)&S.v[j][d + 2] = __floats2half2_rn(vv.z, vv.w);
			}
		}
		__syncthreads();
		/* Causal: a warp whose queries all precede this tile has nothing to add. */
		if (!warp_live || t0 > warp_last)
			continue;

		{
			wmma::fragment<wmma::accumulator, 16, 16, 16, float> sacc[FA_K / 16];
			wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
			wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> b;
#pragma unroll
			for (int n = 0; n < FA_K / 16; n++)
				wmma::fill_fragment(sacc[n], 0.0f);
#pragma unroll
			for (int kk = 0; kk < HD / 16; kk++) {
				wmma::load_matrix_sync(a, &S.q[r0][kk * 16], HD + 8);
#pragma unroll
				for (int n = 0; n < FA_K / 16; n++) {
					wmma::load_matrix_sync(b, &S.k[n * 16][kk * 16], HD + 8);
					wmma::mma_sync(sacc[n], a, b, sacc[n]);
				}
			}
#pragma unroll
			for (int n = 0; n < FA_K / 16; n++)
				wmma::store_matrix_sync(&S.s[w][0][n * 16], sacc[n], FA_K + 4,
				    wmma::mem_row_major);
		}
		__syncwarp();

		/* Online softmax: two lanes per row, 32 keys each. */
		{
			int r = lane >> 1, c0 = (lane & 1) * (FA_K / 2);
			uint32_t qi = r0 + r, qpos = p0 + q0 + qi;
			bool row_ok = qi < nq;
			float mx = -INFINITY, sum = 0, m_old, m_new, corr;

			for (int c = c0; c < c0 + FA_K / 2; c++)
				if (row_ok && t0 + c <= qpos)
					mx = fmaxf(mx, S.s[w][r][c]);
			mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
			m_old = S.m[r0 + r];
			m_new = fmaxf(m_old, mx);
			corr = m_new == -INFINITY ? 1.0f : __expf(m_old - m_new);
			for (int c = c0; c < c0 + FA_K / 2; c++) {
				float p = 0;
				if (row_ok && t0 + c <= qpos)
					p = __expf(S.s[w][r][c] - m_new);
				S.p[w][r][c] = __float2half(p);
				sum += p;
			}
			sum += __shfl_xor_sync(0xffffffffu, sum, 1);
			__syncwarp();
			if ((lane & 1) == 0) {
				S.l[r0 + r] = S.l[r0 + r] * corr + sum;
				S.m[r0 + r] = m_new;
				S.corr[r0 + r] = corr;
			}
		}
		__syncwarp();
		for (int e = lane; e < 16 * HD; e += 32)
			S.o[w][e / HD][e % HD] *= S.corr[r0 + e / HD];
		__syncwarp();

		{
			wmma::fragment<wmma::accumulator, 16, 16, 16, float> o;
			wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
			wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> b;
#pragma unroll
			for (int n = 0; n < HD / 16; n++) {
				wmma::load_matrix_sync(o, &S.o[w][0][n * 16], HD + 4, wmma::mem_row_major);
#pragma unroll
				for (int kk = 0; kk < FA_K / 16; kk++) {
					wmma::load_matrix_sync(a, &S.p[w][0][kk * 16], FA_K + 8);
					wmma::load_matrix_sync(b, &S.v[kk * 16][n * 16], HD + 8);
					wmma::mma_sync(o, a, b, o);
				}
				wmma::store_matrix_sync(&S.o[w][0][n * 16], o, HD + 4, wmma::mem_row_major);
			}
		}
		__syncwarp();
	}
	__syncthreads();
	for (int e = tid; e < FA_Q * HD; e += 128) {
		int r = e / HD, d = e % HD;
		if ((uint32_t)r < nq)
			out[((size_t)(q0 + r) * n_head + h) * HD + d] = S.o[r / 16][r % 16][d] / S.l[r];
	}
}

template <int HD, typename KT>
static int
launch_flash(cudaStream_t st, float *out, const float *q, const KT *kc, const KT *vc,
    uint32_t n_q, uint32_t n_head, uint32_t group, uint32_t n_head_kv, const int32_t *pos0,
    float scale, struct fm_err *err)
{
	size_t bytes = sizeof(fa_smem<HD>);
	dim3 grid(blocks(n_q, FA_Q), n_head);

	FM_CU(cudaFuncSetAttribute(k_attn_flash<HD, KT>,
	    cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes), err);
	k_attn_flash<HD, KT><<<grid, 128, bytes, st>>>(out, q, kc, vc, n_q, n_head, group,
	    n_head_kv, pos0, scale);
	FM_LAUNCHED("k_attn_flash", err);
	return FM_OK;
}

/*
 * twin fm_attention, the decode form (one query, any number of keys):
 * split-K, as flash-decoding does.  The keys are cut into ATTN_SPLITS
 * ranges; a block takes one range for one KV head and all the query heads
 * of its group (G), so each key and value is read once per group, not once
 * per head.  Each block writes its online-softmax state (max, sum and the
 * unnormalised output of each head) to part; the last block of a KV head to
 * finish (a counter per KV head after the states in part) merges the
 * ranges, which saves a launch.  The grid does not depend on the number of
 * keys, so a captured decode step stays valid as the context grows.
 */
#define ATTN_SPLITS 32
#define SPLIT_KB 4
#define SPLIT_MIN 32   /* keys a range takes at least, so a short context fills few ranges */

#define MERGE_AHEAD 16   /* ranges whose outputs a thread loads with the maxima */

/*
 * Merges the ranges of the G heads of one KV head (ph: their ATTN_SPLITS
 * states each, in part; ranges n_act and on have no keys) into out, with
 * the whole block: warp g turns head g's maxima into weights (a range
 * without keys weighs 0), then each thread sums its dimensions.  A
 * thread's first element's values from the first MERGE_AHEAD ranges are
 * loaded before the maxima are known, so the two loads overlap.  The
 * states are read through L2 (__ldcg): other blocks wrote them.
 */
template <int G>
static __device__ void
attn_merge(float *out, const float *ph, uint32_t hd, uint32_t n_act)
{
	__shared__ float wt[G][ATTN_SPLITS], inv[G];
	const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
	const size_t head = (size_t)ATTN_SPLITS * (hd + 2);
	float ahead[MERGE_AHEAD];

	if (threadIdx.x < G * hd) {
		const float *p = ph + threadIdx.x / hd * head + 2 + threadIdx.x % hd;
#pragma unroll
		for (int s = 0; s < MERGE_AHEAD; s++)
			ahead[s] = s < (int)n_act ? __ldcg(p + s * (hd + 2)) : 0.0f;
	}
	if (w < G) {
		const float *p = ph + w * head;
		float m = -INFINITY, big, wgt = 0, l = 0, sum;
		if (lane < ATTN_SPLITS) {
			m = __ldcg(p + lane * (hd + 2));
			l = __ldcg(p + lane * (hd + 2) + 1);
		}
		big = m;
		for (int o = 16; o > 0; o >>= 1)
			big = fmaxf(big, __shfl_xor_sync(0xffffffffu, big, o));
		if (m != -INFINITY)
			wgt = __expf(m - big);
		sum = warp_sum(l * wgt);
		if (lane < ATTN_SPLITS)
			wt[w][lane] = wgt;
		if (lane == 0)
			inv[w] = 1.0f / sum;
	}
	__syncthreads();
	for (uint32_t e = threadIdx.x; e < G * hd; e += blockDim.x) {
		uint32_t g = e / hd, d = e % hd, s0 = 0;
		const float *p = ph + g * head + 2 + d;
		float o = 0;
		if (e == threadIdx.x) {
			/* Past n_act both the value and the weight are 0: the same sum as below. */
#pragma unroll
			for (int s = 0; s < MERGE_AHEAD; s++)
				o += ahead[s] * wt[g][s];
			s0 = MERGE_AHEAD;
		}
#pragma unroll 8
		for (uint32_t s = s0; s < ATTN_SPLITS; s++)
			if (wt[g][s] != 0.0f)
				o += __ldcg(p + s * (hd + 2)) * wt[g][s];
		out[e] = o * inv[g];
	}
}

template <int MAXD, int G, typename KT>
static __global__ void __launch_bounds__(32 * ATTN_WARPS)
k_attn_split(float *out, float *part, const float *q, const KT *kc, const KT *vc, uint32_t n_head_kv,
    uint32_t hd, const int32_t *pos0, const int32_t *rows, const int32_t *nkeys, float scale)
{
	constexpr int PER = MAXD / 32;
	__shared__ float sm[ATTN_WARPS][G], sl[ATTN_WARPS][G], sacc[ATTN_WARPS][G][MAXD];
	const uint32_t kvh = blockIdx.x, split = blockIdx.y;
	const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
	const size_t kvd = (size_t)n_head_kv * hd;
	unsigned int *done = (unsigned int *)(part + (size_t)n_head_kv * G * ATTN_SPLITS * (hd + 2));
	__shared__ bool last;
	float qr[G][PER], acc[G][PER], m[G], l[G];

	/*
	 * The output projection may start now: it fetches its weights while
	 * this waits on memory.  The position and the number of keys come from
	 * the host before the step, not from a kernel: read before the wait.
	 */
	grid_release();
	const uint32_t n_keys = rows != NULL ? (uint32_t)*nkeys : (uint32_t)*pos0 + 1;
	grid_wait();
	const uint32_t per = max((n_keys + ATTN_SPLITS - 1) / ATTN_SPLITS, (uint32_t)SPLIT_MIN);
	const uint32_t j_lo = split * per, j_hi = min(n_keys, j_lo + per);

#pragma unroll
	for (int g = 0; g < G; g++) {
		const float *qh = q + ((size_t)kvh * G + g) * hd;
		m[g] = -INFINITY;
		l[g] = 0;
#pragma unroll
		for (int k = 0; k < PER; k++) {
			uint32_t d = lane + 32 * k;
			/* Unscaled (the scores are): no use of q before the keys are loaded. */
			qr[g][k] = d < hd ? qh[d] : 0.0f;
			acc[g][k] = 0.0f;
		}
	}
	/* SPLIT_KB consecutive keys per warp at a time, loaded together so their loads overlap. */
	for (uint32_t j0 = j_lo + w * SPLIT_KB; j0 < j_hi; j0 += ATTN_WARPS * SPLIT_KB) {
		float kk[SPLIT_KB][PER], vv[SPLIT_KB][PER];
#pragma unroll
		for (int b = 0; b < SPLIT_KB; b++) {
			uint32_t j = j0 + b < j_hi ? j0 + b : j0;
			size_t at = (size_t)(rows != NULL ? (uint32_t)rows[j] : j) * kvd + (size_t)kvh * hd;
#pragma unroll
			for (int k = 0; k < PER; k++) {
				uint32_t d = lane + 32 * k;
				kk[b][k] = d < hd ? tof(kc[at + d]) : 0.0f;
				vv[b][k] = d < hd ? tof(vc[at + d]) : 0.0f;
			}
		}
		/*
		 * All the scores first (their warp sums are independent, so they
		 * overlap), then per head one new maximum and one rescaling for
		 * the SPLIT_KB keys: a chain of G x SPLIT_KB dependent updates would
		 * be most of a short context's time.
		 */
		float t[SPLIT_KB][G];
#pragma unroll
		for (int b = 0; b < SPLIT_KB; b++)
#pragma unroll
			for (int g = 0; g < G; g++) {
				float d = 0;
#pragma unroll
				for (int k = 0; k < PER; k++)
					d += qr[g][k] * kk[b][k];
				d = warp_sum(d);
				t[b][g] = j0 + b < j_hi ? d * scale : -INFINITY;
			}
#pragma unroll
		for (int g = 0; g < G; g++) {
			float big = m[g], c;
#pragma unroll
			for (int b = 0; b < SPLIT_KB; b++)
				big = fmaxf(big, t[b][g]);
			/* big is a score (key j0 is in the range), never -inf: no -inf - -inf below. */
			c = __expf(m[g] - big);
			l[g] *= c;
#pragma unroll
			for (int k = 0; k < PER; k++)
				acc[g][k] *= c;
			m[g] = big;
#pragma unroll
			for (int b = 0; b < SPLIT_KB; b++) {
				float p = __expf(t[b][g] - big);
				l[g] += p;
#pragma unroll
				for (int k = 0; k < PER; k++)
					acc[g][k] += p * vv[b][k];
			}
		}
	}
#pragma unroll
	for (int g = 0; g < G; g++) {
		if (lane == 0) {
			sm[w][g] = m[g];
			sl[w][g] = l[g];
		}
#pragma unroll
		for (int k = 0; k < PER; k++)
			sacc[w][g][lane + 32 * k] = acc[g][k];
	}
	__syncthreads();
	/* Merge the warps; the block's state goes to part (head, split): max, sum, output. */
	for (uint32_t e = threadIdx.x; e < (uint32_t)G * (hd + 2); e += blockDim.x) {
		uint32_t g = e / (hd + 2), d = e % (hd + 2);
		float big = -INFINITY, v = 0;
		for (int u = 0; u < ATTN_WARPS; u++)
			big = fmaxf(big, sm[u][g]);
		if (d == 0)
			v = big;
		else if (big != -INFINITY)
			for (int u = 0; u < ATTN_WARPS; u++)
				if (sm[u][g] != -INFINITY)
					v += (d == 1 ? sl[u][g] : sacc[u][g][d - 2]) * __expf(sm[u][g] - big);
		part[(((size_t)kvh * G + g) * ATTN_SPLITS + split) * (hd + 2) + d] = v;
	}
	/* The last block of this KV head merges its heads' ranges; the counter is left at 0. */
	__threadfence();
	__syncthreads();
	if (threadIdx.x == 0) {
		last = atomicAdd(&done[kvh], 1u) == ATTN_SPLITS - 1;
		if (last)
			done[kvh] = 0;
	}
	__syncthreads();
	if (!last)
		return;
	__threadfence();
	attn_merge<G>(out + (size_t)kvh * G * hd, part + (size_t)kvh * G * ATTN_SPLITS * (hd + 2), hd,
	    (n_keys + per - 1) / per);
}

template <int MAXD, int G, typename KT>
static int
launch_split(cudaStream_t st, float *out, float *part, const float *q, const KT *kc, const KT *vc,
    uint32_t n_head_kv, uint32_t hd, const int32_t *pos0, const int32_t *rows,
    const int32_t *nkeys, float scale, struct fm_err *err)
{
	FM_CU(launch_pdl(k_attn_split<MAXD, G, KT>, dim3(n_head_kv, ATTN_SPLITS), dim3(32 * ATTN_WARPS),
	    0, st, out, part, q, kc, vc, n_head_kv, hd, pos0, rows, nkeys, scale), err);
	return FM_OK;
}

/*
 * twin fm_attention, the decode form for a short context (at most
 * max_keys keys): a block per query head copies all its KV head's keys and
 * values into shared memory at once (cp.async), then computes the scores
 * (a thread per key), the softmax (one warp) and the output (each thread a
 * dimension over a quarter of the keys) there.  One round trip to memory
 * and no merge across blocks: the split-K form's ranges, their states,
 * fence, count and merge are a chain of round trips that a short context
 * does not need.  Rows of the cache are padded by 16 bytes in shared
 * memory so that the threads' reads of different keys hit different banks.
 */
#define SHORT_THREADS 256
#define SHORT_SMEM (128 * 1024)

static size_t
short_bytes(uint32_t hd, size_t elt, uint32_t max_keys)
{
	size_t row = hd * elt + 16;
	return 2 * (size_t)max_keys * row + 4 * ((size_t)hd + max_keys + 4 * (size_t)hd);
}

template <typename KT>
static __global__ void __launch_bounds__(SHORT_THREADS)
k_attn_short(float *out, const float *q, const KT *kc, const KT *vc, uint32_t n_head_kv,
    uint32_t group, uint32_t hd, uint32_t max_keys, const int32_t *pos0, const int32_t *rows,
    const int32_t *nkeys, float scale)
{
	extern __shared__ float4 sh4[];
	constexpr uint32_t E = 16 / sizeof(KT);
	const uint32_t h = blockIdx.x, kvh = h / group, tid = threadIdx.x;
	const uint32_t n16 = hd / E, row16 = n16 + 1;
	const size_t kvd = (size_t)n_head_kv * hd;
	uint4 *ks = (uint4 *)sh4, *vs = ks + (size_t)max_keys * row16;
	float *qs = (float *)(vs + (size_t)max_keys * row16), *ps = qs + hd, *part = ps + max_keys;
	__shared__ float inv;

	grid_release();   /* as the split form: the output projection loads its weights meanwhile */
	const uint32_t n_keys = min(rows != NULL ? (uint32_t)*nkeys : (uint32_t)*pos0 + 1, max_keys);
	grid_wait();
	for (uint32_t i = tid; i < n_keys * n16; i += blockDim.x) {
		uint32_t j = i / n16, c = i % n16;
		size_t at = (size_t)(rows != NULL ? (uint32_t)rows[j] : j) * kvd + (size_t)kvh * hd;
		asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::
		    "r"((unsigned)__cvta_generic_to_shared(ks + j * row16 + c)),
		    "l"((const uint4 *)(kc + at) + c) : "memory");
		asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::
		    "r"((unsigned)__cvta_generic_to_shared(vs + j * row16 + c)),
		    "l"((const uint4 *)(vc + at) + c) : "memory");
	}
	asm volatile("cp.async.commit_group;" ::: "memory");
	for (uint32_t d = tid; d < hd; d += blockDim.x)
		qs[d] = q[(size_t)h * hd + d];
	asm volatile("cp.async.wait_all;" ::: "memory");
	__syncthreads();

	for (uint32_t j = tid; j < n_keys; j += blockDim.x) {
		float s = 0;
		for (uint32_t c = 0; c < n16; c++) {
			uint4 k4 = ks[j * row16 + c];
			const KT *e = (const KT *)&k4;
#pragma unroll
			for (uint32_t x = 0; x < E; x++)
				s += tof(e[x]) * qs[c * E + x];
		}
		ps[j] = s * scale;
	}
	__syncthreads();
	if (tid < 32) {
		float big = -INFINITY, sum = 0;
		for (uint32_t j = tid; j < n_keys; j += 32)
			big = fmaxf(big, ps[j]);
		for (int o = 16; o > 0; o >>= 1)
			big = fmaxf(big, __shfl_xor_sync(0xffffffffu, big, o));
		for (uint32_t j = tid; j < n_keys; j += 32) {
			float p = __expf(ps[j] - big);
			ps[j] = p;
			sum += p;
		}
		sum = warp_sum(sum);
		if (tid == 0)
			inv = 1.0f / sum;
	}
	__syncthreads();
	/* Thread (quarter, d): dimension d over every fourth key from the quarter on. */
	for (uint32_t e = tid; e < 4 * hd; e += blockDim.x) {
		uint32_t quarter = e / hd, d = e % hd;
		float a0 = 0, a1 = 0;
		uint32_t j = quarter;
		for (; j + 4 < n_keys; j += 8) {
			a0 += ps[j] * tof(((const KT *)(vs + j * row16))[d]);
			a1 += ps[j + 4] * tof(((const KT *)(vs + (j + 4) * row16))[d]);
		}
		if (j < n_keys)
			a0 += ps[j] * tof(((const KT *)(vs + j * row16))[d]);
		part[e] = a0 + a1;
	}
	__syncthreads();
	for (uint32_t d = tid; d < hd; d += blockDim.x)
		out[(size_t)h * hd + d] = (part[d] + part[hd + d] + part[2 * hd + d] + part[3 * hd + d]) * inv;
}

uint32_t
fm_k_attention_short_max(uint32_t head_dim, bool f16)
{
	size_t elt = f16 ? 2 : 4;
	uint32_t n = 0;

	if (head_dim * elt % 16 != 0)
		return 0;
	while (short_bytes(head_dim, elt, n + 32) <= SHORT_SMEM)
		n += 32;
	return n;
}

int
fm_k_attention_short(cudaStream_t st, float *out, const float *q, const void *kc, const void *vc,
    bool f16, uint32_t n_head, uint32_t n_head_kv, uint32_t head_dim, const int32_t *pos0,
    const int32_t *rows, const int32_t *nkeys, struct fm_err *err)
{
	uint32_t max_keys = fm_k_attention_short_max(head_dim, f16);
	size_t smem = short_bytes(head_dim, f16 ? 2 : 4, max_keys);
	float scale = 1.0f / sqrtf((float)head_dim);

	if (max_keys == 0)
		return fm_err_set(err, FM_EDEVICE, "no short attention for head size %u", head_dim);
	if (f16) {
		FM_CU(cudaFuncSetAttribute(k_attn_short<__half>,
		    cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem), err);
		FM_CU(launch_pdl(k_attn_short<__half>, dim3(n_head), dim3(SHORT_THREADS), smem, st, out,
		    q, (const __half *)kc, (const __half *)vc, n_head_kv, n_head / n_head_kv, head_dim,
		    max_keys, pos0, rows, nkeys, scale), err);
	} else {
		FM_CU(cudaFuncSetAttribute(k_attn_short<float>,
		    cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem), err);
		FM_CU(launch_pdl(k_attn_short<float>, dim3(n_head), dim3(SHORT_THREADS), smem, st, out,
		    q, (const float *)kc, (const float *)vc, n_head_kv, n_head / n_head_kv, head_dim,
		    max_keys, pos0, rows, nkeys, scale), err);
	}
	return FM_OK;
}

/* The split-K form when it has an instance for the head size and group; 1 when it has none. */
template <typename KT>
static int
attention_split(cudaStream_t st, float *out, float *part, const float *q, const KT *kc,
    const KT *vc, uint32_t group, uint32_t n_head_kv, uint32_t hd, const int32_t *pos0,
    const int32_t *rows, const int32_t *nkeys, float scale, struct fm_err *err)
{
#define SPLIT(D, G) if (hd <= D && group == G) \
	return launch_split<D, G, KT>(st, out, part, q, kc, vc, n_head_kv, hd, pos0, rows, nkeys, \
	    scale, err)
	SPLIT(64, 1); SPLIT(64, 2); SPLIT(64, 4); SPLIT(64, 8);
	SPLIT(128, 1); SPLIT(128, 2); SPLIT(128, 4); SPLIT(128, 8);
#undef SPLIT
	return 1;
}

size_t
fm_k_attention_part(uint32_t n_head, uint32_t head_dim)
{
	/* The states, then a counter per KV head (at most one per head). */
	return (size_t)n_head * ATTN_SPLITS * (head_dim + 2) * sizeof(float) + n_head * sizeof(unsigned);
}

template <typename KT>
static int
attention_typed(cudaStream_t st, float *out, float *part, const float *q, const KT *kc,
    const KT *vc, uint32_t n_q, uint32_t n_head, uint32_t n_head_kv, uint32_t hd,
    const int32_t *pos0, const int32_t *rows, const int32_t *nkeys, struct fm_err *err)
{
	uint32_t group = n_head / n_head_kv;
	float scale = 1.0f / sqrtf((float)hd);
	dim3 grid(n_head, n_q);
	int rc;

	/* One query: split the keys over many blocks, or a long context leaves most SMs idle. */
	if (n_q == 1 && part != NULL && (rc = attention_split(st, out, part, q, kc, vc, group,
	    n_head_kv, hd, pos0, rows, nkeys, scale, err)) != 1)
		return rc;

	/* Tensor cores pay off once a block has queries to share its key tiles. */
	if (rows != NULL && n_q != 1)
		return fm_err_set(err, FM_EDEVICE, "sparse attention takes one query, not %u", n_q);
	if (n_q >= 16 && sizeof(KT) == 2 && (rc = fm_k_attention_prefill(st, out, q, kc, vc, n_q,
	    n_head, n_head_kv, hd, pos0, err)) != 1)
		return rc;
	if (n_q >= 16 && hd == 64)
		return launch_flash<64>(st, out, q, kc, vc, n_q, n_head, group, n_head_kv, pos0,
		    scale, err);
	if (n_q >= 16 && hd == 128)
		return launch_flash<128>(st, out, q, kc, vc, n_q, n_head, group, n_head_kv, pos0,
		    scale, err);
	if (hd <= 64)
		k_attn_warp<64, KT><<<grid, 32 * ATTN_WARPS, 0, st>>>(out, q, kc, vc, n_head, group,
		    n_head_kv, hd, pos0, rows, nkeys, scale);
	else if (hd <= 128)
		k_attn_warp<128, KT><<<grid, 32 * ATTN_WARPS, 0, st>>>(out, q, kc, vc, n_head, group,
		    n_head_kv, hd, pos0, rows, nkeys, scale);
	else if (hd <= 256)
		k_attn_warp<256, KT><<<grid, 32 * ATTN_WARPS, 0, st>>>(out, q, kc, vc, n_head, group,
		    n_head_kv, hd, pos0, rows, nkeys, scale);
	else
		return fm_err_set(err, FM_EDEVICE, "head size %u is not supported on CUDA (at most 256)", hd);
	FM_LAUNCHED("k_attn_warp", err);
	return FM_OK;
}

int
fm_k_attention(cudaStream_t st, float *out, const float *q, const void *kc, const void *vc,
    float *part, bool f16, uint32_t n_q, uint32_t n_head, uint32_t n_head_kv, uint32_t head_dim,
    const int32_t *pos0, const int32_t *rows, const int32_t *nkeys, struct fm_err *err)
{
	if (f16)
		return attention_typed(st, out, part, q, (const __half *)kc, (const __half *)vc, n_q,
		    n_head, n_head_kv, head_dim, pos0, rows, nkeys, err);
	return attention_typed(st, out, part, q, (const float *)kc, (const float *)vc, n_q, n_head,
	    n_head_kv, head_dim, pos0, rows, nkeys, err);
}

/* ---- argmax ---- */

/*
 * twin fm_argmax: the lowest id among equal maxima; out[1] counts values
 * that are not finite.  With feed, a step run ahead of the host
 * (forward_cuda.cu) hands on to the next: the argmax becomes its token
 * (*feed), the position *pos moves on by one, and out is slot *pos % n_slots
 * of a ring of such pairs.
 */
#define AU 16   /* loads a thread of argmax or embed issues before using any */

static __global__ void
k_argmax(const float *x, uint32_t n, int32_t *out, int32_t *feed, int32_t *pos, uint32_t n_slots)
{
	__shared__ float bv[32];
	__shared__ int32_t bi[32], bn[32];
	int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
	float v = -INFINITY;
	int32_t id = -1, bad = 0;

	/* AU loads ahead of their use, not a memory latency per value; ids rise within a thread. */
	for (uint32_t i0 = threadIdx.x; i0 < n; i0 += blockDim.x * AU) {
		float f[AU];
#pragma unroll
		for (int k = 0; k < AU; k++)
			f[k] = i0 + k * blockDim.x < n ? x[i0 + k * blockDim.x] : 0.0f;
#pragma unroll
		for (int k = 0; k < AU; k++) {
			uint32_t i = i0 + k * blockDim.x;
			if (i >= n)
				break;
			if (!isfinite(f[k]))
				bad++;
			else if (id < 0 || f[k] > v) {
				v = f[k];
				id = (int32_t)i;
			}
		}
	}
	for (int o = 16; o > 0; o >>= 1) {
		float ov = __shfl_xor_sync(0xffffffffu, v, o);
		int32_t oi = __shfl_xor_sync(0xffffffffu, id, o);
		bad += __shfl_xor_sync(0xffffffffu, bad, o);
		if (oi >= 0 && (id < 0 || ov > v || (ov == v && oi < id))) {
			v = ov;
			id = oi;
		}
	}
	if (lane == 0) {
		bv[w] = v;
		bi[w] = id;
		bn[w] = bad;
	}
	__syncthreads();
	if (threadIdx.x == 0) {
		for (int u = 1; u < nw; u++) {
			bad += bn[u];
			if (bi[u] >= 0 && (id < 0 || bv[u] > v || (bv[u] == v && bi[u] < id))) {
				v = bv[u];
				id = bi[u];
			}
		}
		if (id < 0)
			id = 0;
		if (feed != NULL) {
			int32_t p = *pos;
			out += 2 * (size_t)((uint32_t)p % n_slots);
			*feed = id;
			*pos = p + 1;
		}
		out[0] = id;
		out[1] = bad;
	}
}

int
fm_k_argmax(cudaStream_t st, const float *x, uint32_t n, int32_t *out, struct fm_err *err)
{
	return fm_k_argmax_feed(st, x, n, out, 1, NULL, NULL, err);
}

int
fm_k_argmax_feed(cudaStream_t st, const float *x, uint32_t n, int32_t *ring, uint32_t n_slots,
    int32_t *feed, int32_t *pos, struct fm_err *err)
{
	k_argmax<<<1, 1024, 0, st>>>(x, n, ring, feed, pos, n_slots);
	FM_LAUNCHED("k_argmax", err);
	return FM_OK;
}

/* ---- embedding and conversions ---- */

/* Element i of an embedding row in its GGUF type. */
static __device__ __forceinline__ float
emb_elem(const uint8_t *row, int type, uint32_t i)
{
	switch (type) {
	case FM_GGML_F32:
		return ((const float *)row)[i];
	case FM_GGML_F16:
		return __half2float(((const __half *)row)[i]);
	case FM_GGML_BF16:
		return __bfloat162float(((const __nv_bfloat16 *)row)[i]);
	default: {
		const uint8_t *blk = row + 34 * (size_t)(i / 32);
		return __half2float(*(const __half *)blk) * (float)((const int8_t *)blk)[2 + i % 32];
	}
	}
}

/* twin fm_weight_row: one block per token, AU loads ahead of their stores */
static __global__ void
k_embed(float *x, const uint8_t *w, int type, size_t row_bytes, uint32_t cols, const int32_t *ids)
{
	const uint8_t *row = w + (size_t)ids[blockIdx.x] * row_bytes;
	float *o = x + (size_t)blockIdx.x * cols;

	for (uint32_t i0 = threadIdx.x; i0 < cols; i0 += blockDim.x * AU) {
		float e[AU];
#pragma unroll
		for (int k = 0; k < AU; k++)
			e[k] = i0 + k * blockDim.x < cols ? emb_elem(row, type, i0 + k * blockDim.x) : 0.0f;
#pragma unroll
		for (int k = 0; k < AU; k++)
			if (i0 + k * blockDim.x < cols)
				o[i0 + k * blockDim.x] = e[k];
	}
}

int
fm_k_embed(cudaStream_t st, float *x, const struct fm_weight *emb, const int32_t *ids, uint32_t n,
    struct fm_err *err)
{
	k_embed<<<n, 256, 0, st>>>(x, (const uint8_t *)emb->data, emb->type, emb->row_bytes,
	    emb->cols, ids);
	FM_LAUNCHED("k_embed", err);
	return FM_OK;
}

static __global__ void
k_narrow(void *dst, const float *src, size_t n, int bf16)
{
	size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;

	if (i >= n)
		return;
	if (bf16)
		((__nv_bfloat16 *)dst)[i] = __float2bfloat16_rn(src[i]);
	else
		((__half *)dst)[i] = __float2half_rn(src[i]);
}

int
fm_k_narrow(cudaStream_t st, void *dst, const float *src, size_t n, bool bf16, struct fm_err *err)
{
	k_narrow<<<blocks(n, 256), 256, 0, st>>>(dst, src, n, bf16);
	FM_LAUNCHED("k_narrow", err);
	return FM_OK;
}

static __global__ void
k_q8_to_f16(__half *dst, const uint8_t *w, size_t row_bytes, uint32_t rows, uint32_t cols)
{
	size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	uint32_t r, c;
	const uint8_t *blk;

	if (i >= (size_t)rows * cols)
		return;
	r = (uint32_t)(i / cols);
	c = (uint32_t)(i % cols);
	blk = w + (size_t)r * row_bytes + 34 * (size_t)(c / 32);
	dst[i] = __float2half_rn(__half2float(*(const __half *)blk) *
	    (float)((const int8_t *)blk)[2 + c % 32]);
}

int
fm_k_q8_to_f16(cudaStream_t st, void *dst, const struct fm_weight *w, struct fm_err *err)
{
	size_t n = (size_t)w->rows * w->cols;

	k_q8_to_f16<<<blocks(n, 256), 256, 0, st>>>((__half *)dst, (const uint8_t *)w->data,
	    w->row_bytes, w->rows, w->cols);
	FM_LAUNCHED("k_q8_to_f16", err);
	return FM_OK;
}

/* ---- the C interface of gpu.h: devices, memory, kernels on the default stream ---- */

extern "C" int
fm_gpu_count(void)
{
	int n = 0;

	if (cudaGetDeviceCount(&n) != cudaSuccess) {
		cudaGetLastError();   /* no driver or no device: not sticky, clear it */
		return 0;
	}
	return n;
}

extern "C" int
fm_gpu_open(int device, char *name, size_t name_len, struct fm_err *err)
{
	cudaDeviceProp p;
	int n = fm_gpu_count();

	if (device >= n)
		return n == 0 ? fm_err_set(err, FM_EDEVICE, "no CUDA device found") :
		    fm_err_set(err, FM_EDEVICE, "no CUDA device %d (this machine has %d)", device, n);
	FM_CU(cudaSetDevice(device), err);
	FM_CU(cudaGetDeviceProperties(&p, device), err);
	if (p.major < 7)
		return fm_err_set(err, FM_EDEVICE, "%s: compute capability %d.%d, at least 7.0 is needed",
		    p.name, p.major, p.minor);
	if (name != NULL && name_len > 0)
		snprintf(name, name_len, "%s", p.name);
	return FM_OK;
}

static int
gpu_malloc(void **p, size_t n, struct fm_err *err)
{
	FM_CU(cudaMalloc(p, n), err);
	return FM_OK;
}

extern "C" void *
fm_gpu_malloc(size_t n, struct fm_err *err)
{
	void *p = NULL;

	if (gpu_malloc(&p, n > 0 ? n : 1, err) != FM_OK) {
		/* A failed allocation is not sticky: clear it for the next call. */
		cudaGetLastError();
		return NULL;
	}
	return p;
}

extern "C" void
fm_gpu_free(void *p)
{
	if (p != NULL)
		cudaFree(p);
}

extern "C" int
fm_gpu_put(void *dst, const void *src, size_t n, struct fm_err *err)
{
	FM_CU(cudaMemcpy(dst, src, n, cudaMemcpyHostToDevice), err);
	return FM_OK;
}

extern "C" int
fm_gpu_get(void *dst, const void *src, size_t n, struct fm_err *err)
{
	FM_CU(cudaMemcpy(dst, src, n, cudaMemcpyDeviceToHost), err);
	return FM_OK;
}

extern "C" int
fm_gpu_sync(struct fm_err *err)
{
	FM_CU(cudaDeviceSynchronize(), err);
	return FM_OK;
}

extern "C" int
fm_gpu_rmsnorm(float *out, const float *x, const float *w, uint32_t rows, uint32_t n, float eps,
    struct fm_err *err)
{
	return fm_k_rmsnorm(0, out, FM_ACT_F32, x, w, rows, n, eps, err);
}

extern "C" int
fm_gpu_rope_kv(float *q_out, const float *qkv, void *kc, void *vc, bool f16, uint32_t rows,
    uint32_t n_head, uint32_t n_head_kv, uint32_t head_dim, uint32_t n_rot, const float *freq,
    const int32_t *pos0, struct fm_err *err)
{
	return fm_k_rope_kv(0, q_out, qkv, kc, vc, f16, rows, n_head, n_head_kv, head_dim, n_rot, freq,
	    pos0, NULL, err);
}

extern "C" int
fm_gpu_swiglu(float *out, const float *gate, const float *up, size_t n, struct fm_err *err)
{
	return fm_k_swiglu(0, out, FM_ACT_F32, gate, up, 1, (uint32_t)n, 0, err);
}

/* The tests' entry: the split form's scratch is allocated for the call. */
static int
twin_attention(float *out, const float *q, const void *kc, const void *vc, bool f16, uint32_t n_q,
    uint32_t n_head, uint32_t n_head_kv, uint32_t head_dim, const int32_t *pos0,
    const int32_t *rows, const int32_t *n_keys, struct fm_err *err)
{
	float *part = (float *)fm_gpu_malloc(fm_k_attention_part(n_head, head_dim), err);
	int rc;

	if (part == NULL)
		return err->status;
	if (cudaMemset(part, 0, fm_k_attention_part(n_head, head_dim)) != cudaSuccess) {
		fm_gpu_free(part);
		return fm_err_set(err, FM_EDEVICE, "cudaMemset failed");
	}
	rc = fm_k_attention(0, out, q, kc, vc, part, f16, n_q, n_head, n_head_kv, head_dim, pos0,
	    rows, n_keys, err);
	if (rc == FM_OK)
		rc = fm_gpu_sync(err);
	fm_gpu_free(part);
	return rc;
}

extern "C" int
fm_gpu_attention(float *out, const float *q, const void *kc, const void *vc, bool f16,
    uint32_t n_q, uint32_t n_head, uint32_t n_head_kv, uint32_t head_dim, const int32_t *pos0,
    struct fm_err *err)
{
	return twin_attention(out, q, kc, vc, f16, n_q, n_head, n_head_kv, head_dim, pos0, NULL,
	    NULL, err);
}

extern "C" int
fm_gpu_attention_rows(float *out, const float *q, const void *kc, const void *vc, bool f16,
    uint32_t n_head, uint32_t n_head_kv, uint32_t head_dim, const int32_t *rows,
    const int32_t *n_keys, struct fm_err *err)
{
	return twin_attention(out, q, kc, vc, f16, 1, n_head, n_head_kv, head_dim, NULL, rows, n_keys,
	    err);
}

extern "C" bool
fm_gpu_pin(void *p, size_t n)
{
	if (cudaHostRegister(p, n, cudaHostRegisterDefault) == cudaSuccess)
		return true;
	cudaGetLastError();
	return false;
}

extern "C" void
fm_gpu_unpin(void *p)
{
	cudaHostUnregister(p);
}

extern "C" int
fm_gpu_argmax(const float *x, uint32_t n, int32_t *out, struct fm_err *err)
{
	return fm_k_argmax(0, x, n, out, err);
}

extern "C" int
fm_gpu_attention_short(float *out, const float *q, const void *kc, const void *vc, bool f16,
    uint32_t n_head, uint32_t n_head_kv, uint32_t head_dim, const int32_t *pos0,
    const int32_t *rows, const int32_t *n_keys, struct fm_err *err)
{
	int rc = fm_k_attention_short(0, out, q, kc, vc, f16, n_head, n_head_kv, head_dim, pos0, rows,
	    n_keys, err);

	if (rc == FM_OK && cudaDeviceSynchronize() != cudaSuccess)
		return fm_err_set(err, FM_EDEVICE, "%s", cudaGetErrorString(cudaGetLastError()));
	return rc;
}

extern "C" uint32_t
fm_gpu_attention_short_max(uint32_t head_dim, bool f16)
{
	return fm_k_attention_short_max(head_dim, f16);
}
