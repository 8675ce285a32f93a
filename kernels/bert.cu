/*
 * bert.cu - the BERT encoder of common/bert.c on a GPU, and its kernels,
 * each the twin of a CPU step in bert.c (named at each kernel) that
 * tests/unit/test_gpu_bert.c checks it against.
 *
 * The sequences of a batch are packed end to end as on the CPU, so the
 * dense layers (cuBLAS, F16 weights and inputs, F32 accumulation on tensor
 * cores) never compute padding; only attention looks at sequence
 * boundaries, through a table of starts.  Its blocks take the sequences
 * longest first, so that short ones fill the tail of the grid.
 *
 * Precision: the residual stream and LayerNorm are F32; what feeds a GEMM
 * (the normalised states, attention's output, the GELU's output) is rounded
 * to F16, and so are the q, k, v projections and the feed-forward layer's
 * first product (their biases are added in F32 by the kernel that reads
 * them).  Attention's softmax runs in F32 with its probabilities rounded to
 * F16 for the product with V.  Pooled vectors agree with the CPU's to a
 * cosine above 0.9999 (test_gpu_bert checks).
 *
 * Batches are asynchronous: fm_gpu_bert_submit() copies the ids to pinned
 * memory, queues the whole forward pass on the encoder's stream and
 * returns; fm_gpu_bert_wait() takes the oldest batch's vectors.  Two can be
 * in flight, so the host tokenizes the next batch while the GPU encodes.
 */
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <mma.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_check.cuh"
#include "cuda_util.cuh"

extern "C" {
#include "bert.h"
#include "embedfile.h"
#include "gguf.h"
#include "gpu.h"
}

/* ---- helpers ---- */

/*
 * LayerNorm of one row by one warp: val(c) gives element c of the row
 * before normalising; the result goes to x (F32) and xh (F16).  Three
 * passes over val (mean, variance about the mean, output), so that the
 * variance does not lose digits to cancellation.
 */
template <typename F>
static __device__ __forceinline__ void
warp_layernorm(F val, float *x, __half *xh, const float *w, const float *b, uint32_t d,
    float eps)
{
	const uint32_t lane = threadIdx.x & 31;
	float s = 0, q = 0, mean, inv;

	for (uint32_t c = lane; c < d; c += 32)
		s += val(c);
	mean = warp_sum(s) / (float)d;
	for (uint32_t c = lane; c < d; c += 32) {
		float t = val(c) - mean;
		q += t * t;
	}
	inv = 1.0f / sqrtf(warp_sum(q) / (float)d + eps);
	for (uint32_t c = lane; c < d; c += 32) {
		float o = (val(c) - mean) * inv * w[c] + b[c];
		x[c] = o;
		xh[c] = __float2half_rn(o);
	}
}

/* ---- embeddings, LayerNorm, GELU, pooling ---- */

/* twin fm_bert_embed: a warp per token */
static __global__ void
k_embed(float *x, __half *xh, const float *tok, const float *type0, const float *pos,
    const float *lw, const float *lb, const int32_t *ids, const int32_t *posi, uint32_t T,
    uint32_t d, float eps)
{
	const uint32_t t = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;

	if (t >= T)
		return;
	const float *te = tok + (size_t)ids[t] * d, *pe = pos + (size_t)posi[t] * d;
	warp_layernorm([&](uint32_t c) { return te[c] + (type0[c] + pe[c]); },
	    x + (size_t)t * d, xh + (size_t)t * d, lw, lb, d, eps);
}

/* twin fm_bert_add_norm with r = y + bias: a warp per row */
static __global__ void
k_add_norm(float *x, __half *xh, const float *y, const float *bias, const float *w,
    const float *b, uint32_t T, uint32_t d, float eps)
{
	const uint32_t t = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;

	if (t >= T)
		return;
	float *xr = x + (size_t)t * d;
	const float *yr = y + (size_t)t * d;
	warp_layernorm([&](uint32_t c) { return xr[c] + (yr[c] + bias[c]); }, xr,
	    xh + (size_t)t * d, w, b, d, eps);
}

/* twin fm_bert_gelu on y + bias: out and y (rows, n) F16, in place allowed */
static __global__ void
k_gelu(__half *out, const __half *y, const float *bias, size_t total, uint32_t n)
{
	for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
	    i += (size_t)gridDim.x * blockDim.x) {
		float v = __half2float(y[i]) + bias[i % n];

		out[i] = __float2half_rn(0.5f * v * (1.0f + erff(v * 0.70710678118654752f)));
	}
}

/* twin fm_bert_pool: a block per sequence, rows summed in order as on the CPU */
static __global__ void
k_pool(float *out, const float *x, const int32_t *start, uint32_t d, int cls)
{
	const int s = blockIdx.x, s0 = start[s], len = start[s + 1] - s0;

	for (uint32_t c = threadIdx.x; c < d; c += blockDim.x) {
		float v = x[(size_t)s0 * d + c];

		if (!cls) {
			for (int i = 1; i < len; i++)
				v += x[(size_t)(s0 + i) * d + c];
			v /= (float)len;
		}
		out[(size_t)s * d + c] = v;
	}
}

/* ---- attention ---- */

/*
 * twin fm_bert_attend, the general form: a warp per query row and head, the
 * lanes across the head (up to 256), an online softmax over the keys one by
 * one.  qkv (T, 3 d) F16 without biases; out (T, d) F16.  Grid: (sequence
 * in the order given, head, group of 4 queries).
 */
static __global__ void __launch_bounds__(128)
k_attn_plain(__half *out, const __half *qkv, const float *bqkv, const int32_t *start,
    const int32_t *order, uint32_t d, uint32_t hd, float scale)
{
	const int s = order[blockIdx.x], h = blockIdx.y;
	const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
	const int s0 = start[s], len = start[s + 1] - s0, q = blockIdx.z * 4 + w;
	const size_t ld = 3 * (size_t)d;
	float qv[8], acc[8], bk[8], bv[8], m = -INFINITY, l = 0;

	if (q >= len)
		return;
	for (int i = 0; i < 8; i++) {
		uint32_t c = lane + 32 * i;
		bool in = c < hd;

		qv[i] = in ? (__half2float(qkv[(size_t)(s0 + q) * ld + h * hd + c]) + bqkv[h * hd + c]) *
		    scale : 0.0f;
		bk[i] = in ? bqkv[d + h * hd + c] : 0.0f;
		bv[i] = in ? bqkv[2 * d + h * hd + c] : 0.0f;
		acc[i] = 0;
	}
	for (int j = 0; j < len; j++) {
		const __half *kr = qkv + (size_t)(s0 + j) * ld + d + h * hd, *vr = kr + d;
		float p = 0, mn, corr, e;

		for (int i = 0; i < 8; i++) {
			uint32_t c = lane + 32 * i;
			if (c < hd)
				p += qv[i] * (__half2float(kr[c]) + bk[i]);
		}
		p = warp_sum(p);
		mn = fmaxf(m, p);
		corr = expf(m - mn);
		e = expf(p - mn);
		l = l * corr + e;
		for (int i = 0; i < 8; i++) {
			uint32_t c = lane + 32 * i;
			if (c < hd)
				acc[i] = acc[i] * corr + e * (__half2float(vr[c]) + bv[i]);
		}
		m = mn;
	}
	for (int i = 0; i < 8; i++) {
		uint32_t c = lane + 32 * i;
		if (c < hd)
			out[(size_t)(s0 + q) * d + h * hd + c] = __float2half_rn(acc[i] / l);
	}
}

/*
 * twin fm_bert_attend on tensor cores (WMMA), for heads of HD = 32 or 64:
 * a block of 4 warps takes 64 queries of one head of one sequence, each
 * warp 16 of them; key tiles of BK go through shared memory as F16 with
 * their biases added.  Per tile a warp computes its scores S = Q K^T, then
 * two lanes per query row update the running maximum and sum and write
 * the probabilities P (F16, over the scores), rescale the row's output,
 * and the warp adds P V to it.  Grid: (sequence in the order given, head,
 * group of 64 queries).
 */
template <int HD>
static __global__ void __launch_bounds__(128)
k_attn_tc(__half *out, const __half *qkv, const float *bqkv, const int32_t *start,
    const int32_t *order, uint32_t d, float scale)
{
	using namespace nvcuda;
	constexpr int BQ = 64, BK = HD <= 32 ? 64 : 32;
	constexpr int LQ = HD + 8;    /* halves per row of the Q, K and V tiles */
	constexpr int LS = BK + 4;    /* floats per row of a warp's scores */
	constexpr int LO = HD + 4;    /* floats per row of a warp's output */
	__shared__ __align__(32) __half qs[BQ * LQ];
	__shared__ __align__(32) __half ks[BK * LQ];
	__shared__ __align__(32) __half vs[BK * LQ];
	__shared__ __align__(32) float ss[4][16 * LS];
	__shared__ __align__(32) float os[4][16 * LO];
	const int s = order[blockIdx.x], h = blockIdx.y, q0 = blockIdx.z * BQ;
	const int s0 = start[s], len = start[s + 1] - s0;
	const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31, r = lane >> 1, hf = lane & 1;
	const size_t ld = 3 * (size_t)d;
	const float *bq = bqkv + h * HD, *bk = bqkv + d + h * HD, *bv = bqkv + 2 * d + h * HD;
	float *sw = ss[w], *ow = os[w], m = -INFINITY, l = 0;
	__half *pw = reinterpret_cast<__half *>(sw);   /* P over the scores: rows 2 LS halves apart */
	wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> qa[HD / 16];

	if (q0 >= len)
		return;
	for (int e = tid; e < BQ * HD; e += 128) {
		int rr = e / HD, c = e % HD, q = q0 + rr;
		float v = q < len ? (__half2float(qkv[(size_t)(s0 + q) * ld + h * HD + c]) + bq[c]) *
		    scale : 0.0f;

		qs[rr * LQ + c] = __float2half_rn(v);
	}
	for (int e = lane; e < 16 * HD; e += 32)
		ow[(e / HD) * LO + e % HD] = 0.0f;
	__syncthreads();
	for (int kk = 0; kk < HD / 16; kk++)
		wmma::load_matrix_sync(qa[kk], qs + w * 16 * LQ + kk * 16, LQ);

	for (int k0 = 0; k0 < len; k0 += BK) {
		float p[BK / 2], mx = -INFINITY, sum = 0, mn, alpha;

		__syncthreads();   /* every warp is done with the previous tile */
		for (int e = tid; e < BK * HD; e += 128) {
			int rr = e / HD, c = e % HD, key = k0 + rr;
			float kv = 0, vv = 0;

			if (key < len) {
				const __half *row = qkv + (size_t)(s0 + key) * ld + h * HD + c;
				kv = __half2float(row[d]) + bk[c];
				vv = __half2float(row[2 * d]) + bv[c];
			}
			ks[rr * LQ + c] = __float2half_rn(kv);
			vs[rr * LQ + c] = __float2half_rn(vv);
		}
		__syncthreads();
		for (int j = 0; j < BK / 16; j++) {
			wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;

			wmma::fill_fragment(acc, 0.0f);
			for (int kk = 0; kk < HD / 16; kk++) {
				wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> kb;

				wmma::load_matrix_sync(kb, ks + j * 16 * LQ + kk * 16, LQ);
				wmma::mma_sync(acc, qa[kk], kb, acc);
			}
			wmma::store_matrix_sync(sw + j * 16, acc, LS, wmma::mem_row_major);
		}
		__syncwarp();
		for (int i = 0; i < BK / 2; i++) {
			int c = hf * (BK / 2) + i;

			p[i] = k0 + c < len ? sw[r * LS + c] : -INFINITY;
			mx = fmaxf(mx, p[i]);
		}
		mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
		mn = fmaxf(m, mx);
		alpha = expf(m - mn);
		for (int i = 0; i < BK / 2; i++) {
			p[i] = expf(p[i] - mn);
			sum += p[i];
		}
		sum += __shfl_xor_sync(0xffffffffu, sum, 1);
		l = l * alpha + sum;
		m = mn;
		__syncwarp();   /* every lane has read its scores before P overwrites them */
		for (int i = 0; i < BK / 2; i++)
			pw[r * 2 * LS + hf * (BK / 2) + i] = __float2half_rn(p[i]);
		for (int c = hf * (HD / 2); c < (hf + 1) * (HD / 2); c++)
			ow[r * LO + c] *= alpha;
		__syncwarp();
		for (int j = 0; j < HD / 16; j++) {
			wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;

			wmma::load_matrix_sync(acc, ow + j * 16, LO, wmma::mem_row_major);
			for (int kk = 0; kk < BK / 16; kk++) {
				wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> pa;
				wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> vb;

				wmma::load_matrix_sync(pa, pw + kk * 16, 2 * LS);
				wmma::load_matrix_sync(vb, vs + kk * 16 * LQ + j * 16, LQ);
				wmma::mma_sync(acc, pa, vb, acc);
			}
			wmma::store_matrix_sync(ow + j * 16, acc, LO, wmma::mem_row_major);
		}
		__syncwarp();
	}
	{
		const int q = q0 + w * 16 + r;

		if (q < len) {
			__half *o = out + (size_t)(s0 + q) * d + h * HD;
			float inv = 1.0f / l;

			for (int c = hf * (HD / 2); c < (hf + 1) * (HD / 2); c++)
				o[c] = __float2half_rn(ow[r * LO + c] * inv);
		}
	}
}

/* ---- launchers on a stream ---- */

static int
l_embed(cudaStream_t st, float *x, __half *xh, const float *tok, const float *type0,
    const float *pos, const float *lw, const float *lb, const int32_t *ids, const int32_t *posi,
    uint32_t T, uint32_t d, float eps, struct fm_err *err)
{
	if (T == 0)
		return FM_OK;
	k_embed<<<blocks(T, 8), 256, 0, st>>>(x, xh, tok, type0, pos, lw, lb, ids, posi, T, d, eps);
	FM_LAUNCHED("k_embed", err);
	return FM_OK;
}

static int
l_add_norm(cudaStream_t st, float *x, __half *xh, const float *y, const float *bias,
    const float *w, const float *b, uint32_t T, uint32_t d, float eps, struct fm_err *err)
{
	if (T == 0)
		return FM_OK;
	k_add_norm<<<blocks(T, 8), 256, 0, st>>>(x, xh, y, bias, w, b, T, d, eps);
	FM_LAUNCHED("k_add_norm", err);
	return FM_OK;
}

static int
l_gelu(cudaStream_t st, __half *out, const __half *y, const float *bias, uint32_t T, uint32_t n,
    struct fm_err *err)
{
	size_t total = (size_t)T * n;

	if (total == 0)
		return FM_OK;
	k_gelu<<<blocks(total, 256), 256, 0, st>>>(out, y, bias, total, n);
	FM_LAUNCHED("k_gelu", err);
	return FM_OK;
}

static int
l_pool(cudaStream_t st, float *out, const float *x, const int32_t *start, uint32_t n_seq,
    uint32_t d, int pooling, struct fm_err *err)
{
	if (n_seq == 0)
		return FM_OK;
	k_pool<<<n_seq, 128, 0, st>>>(out, x, start, d, pooling == FM_POOL_CLS);
	FM_LAUNCHED("k_pool", err);
	return FM_OK;
}

static int
l_attention(cudaStream_t st, __half *out, const __half *qkv, const float *bqkv,
    const int32_t *start, const int32_t *order, uint32_t n_seq, uint32_t max_len, uint32_t d,
    uint32_t n_head, bool tc, struct fm_err *err)
{
	const uint32_t hd = d / n_head;
	const float scale = 1.0f / sqrtf((float)hd);

	if (n_seq == 0 || max_len == 0)
		return FM_OK;
	if (hd == 0 || hd > 256 || hd * n_head != d)
		return fm_err_set(err, FM_EDEVICE, "attention: head size %u not supported (1 to 256)",
		    hd);
	if (tc && hd == 32) {
		k_attn_tc<32><<<dim3(n_seq, n_head, blocks(max_len, 64)), 128, 0, st>>>(out, qkv,
		    bqkv, start, order, d, scale);
		FM_LAUNCHED("k_attn_tc<32>", err);
	} else if (tc && hd == 64) {
		k_attn_tc<64><<<dim3(n_seq, n_head, blocks(max_len, 64)), 128, 0, st>>>(out, qkv,
		    bqkv, start, order, d, scale);
		FM_LAUNCHED("k_attn_tc<64>", err);
	} else {
		k_attn_plain<<<dim3(n_seq, n_head, blocks(max_len, 4)), 128, 0, st>>>(out, qkv, bqkv,
		    start, order, d, hd, scale);
		FM_LAUNCHED("k_attn_plain", err);
	}
	return FM_OK;
}

/* y (T, n_out) = x (T, n_in) W^T, x and W (n_out, n_in) F16, y F32 or F16, F32 accumulation. */
static int
gemm(cublasHandle_t h, const __half *x, uint32_t T, uint32_t n_in, const __half *w,
    uint32_t n_out, void *y, bool y16, struct fm_err *err)
{
	const float one = 1.0f, zero = 0.0f;

	if (T == 0)
		return FM_OK;
	FM_CUBLAS(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)n_out, (int)T, (int)n_in, &one, w,
	    CUDA_R_16F, (int)n_in, x, CUDA_R_16F, (int)n_in, &zero, y,
	    y16 ? CUDA_R_16F : CUDA_R_32F, (int)n_out, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
	    err);
	return FM_OK;
}

/* ---- the kernels for C code and tests, on the default stream ---- */

extern "C" int
fm_gpu_bert_embed(float *x, uint16_t *xh, const float *tok, const float *type0, const float *pos,
    const float *ln_w, const float *ln_b, const int32_t *ids, const int32_t *pos_ids, uint32_t T,
    uint32_t dim, float eps, struct fm_err *err)
{
	return l_embed(0, x, (__half *)xh, tok, type0, pos, ln_w, ln_b, ids, pos_ids, T, dim, eps,
	    err);
}

extern "C" int
fm_gpu_bert_add_norm(float *x, uint16_t *xh, const float *y, const float *bias, const float *w,
    const float *b, uint32_t T, uint32_t dim, float eps, struct fm_err *err)
{
	return l_add_norm(0, x, (__half *)xh, y, bias, w, b, T, dim, eps, err);
}

extern "C" int
fm_gpu_bert_gelu(uint16_t *out, const uint16_t *y, const float *bias, uint32_t T, uint32_t n,
    struct fm_err *err)
{
	return l_gelu(0, (__half *)out, (const __half *)y, bias, T, n, err);
}

extern "C" int
fm_gpu_bert_attention(uint16_t *out, const uint16_t *qkv, const float *bqkv,
    const int32_t *start, const int32_t *order, uint32_t n_seq, uint32_t max_len, uint32_t dim,
    uint32_t n_head, bool tc, struct fm_err *err)
{
	return l_attention(0, (__half *)out, (const __half *)qkv, bqkv, start, order, n_seq, max_len,
	    dim, n_head, tc, err);
}

extern "C" int
fm_gpu_bert_pool(float *out, const float *x, const int32_t *start, uint32_t n_seq, uint32_t dim,
    int pooling, struct fm_err *err)
{
	return l_pool(0, out, x, start, n_seq, dim, pooling, err);
}

extern "C" int
fm_gpu_bert_linear(void *y, bool y16, const uint16_t *x, uint32_t T, uint32_t n_in,
    const uint16_t *w, uint32_t n_out, struct fm_err *err)
{
	cublasHandle_t h;
	int rc;

	FM_CUBLAS(cublasCreate(&h), err);
	rc = gemm(h, (const __half *)x, T, n_in, (const __half *)w, n_out, y, y16, err);
	cublasDestroy(h);
	if (rc == FM_OK)
		FM_CU(cudaDeviceSynchronize(), err);
	return rc;
}

/* ---- the encoder ---- */

struct glayer {
	__half *wqkv;    /* (3 dim, dim) */
	__half *wo;      /* (dim, dim) */
	__half *w_up;    /* (n_ff, dim) */
	__half *w_down;  /* (dim, n_ff) */
	float *bqkv;     /* (3 dim) */
	float *bo, *ln1_w, *ln1_b;     /* (dim) */
	float *b_up;     /* (n_ff) */
	float *b_down, *ln2_w, *ln2_b; /* (dim) */
};

/* A batch's host side: pinned, one per batch in flight. */
struct slot {
	int32_t *ints;   /* ids (T), positions (T), starts (n_seq + 1), order (n_seq) */
	float *out;      /* (n_seq, dim) pooled */
	size_t cap_ints, cap_out;
	size_t n_seq;
	cudaEvent_t done;
};

struct fm_gpu_bert {
	int device;
	char name[256];
	cudaStream_t st;
	cublasHandle_t blas;
	uint32_t dim, n_layer, n_head, n_ff, n_ctx, n_vocab;
	float eps;
	bool tc;         /* attention on tensor cores (head size 32 or 64) */
	double flops;
	uint64_t bytes;  /* of weights */

	char *wmem;      /* every weight below, one allocation */
	float *tok;      /* (n_vocab, dim) */
	float *type0;    /* (dim) */
	float *pos;      /* (n_ctx, dim) */
	float *eln_w, *eln_b;   /* (dim) */
	struct glayer *layers;  /* (n_layer), host array of device pointers */

	/* Activations, for up to cap_tok tokens and cap_seq sequences. */
	size_t cap_tok, cap_seq;
	float *x;        /* (T, dim) residual stream */
	__half *xh;      /* (T, dim) x rounded, the GEMMs' input */
	__half *qkv;     /* (T, 3 dim) */
	__half *att;     /* (T, dim) attention's output */
	float *y;        /* (T, dim) a projection back to dim */
	__half *ff;      /* (T, n_ff) */
	float *pooled;   /* (n_seq, dim) */
	int32_t *ints;   /* as struct slot's */

	struct slot slot[2];
	int head, n_busy;   /* the oldest batch in flight, and how many */
	/* Host scratch for the order of sequences by length. */
	uint32_t *count;    /* (n_ctx + 2) */
};

static void
free_acts(struct fm_gpu_bert *g)
{
	cudaFree(g->x);
	cudaFree(g->xh);
	cudaFree(g->qkv);
	cudaFree(g->att);
	cudaFree(g->y);
	cudaFree(g->ff);
	cudaFree(g->pooled);
	cudaFree(g->ints);
	g->x = g->y = g->pooled = NULL;
	g->xh = g->qkv = g->att = g->ff = NULL;
	g->ints = NULL;
	g->cap_tok = g->cap_seq = 0;
}

/* Activations for T tokens and n_seq sequences; waits for the batches in flight first. */
static int
reserve_acts(struct fm_gpu_bert *g, size_t T, size_t n_seq, struct fm_err *err)
{
	size_t d = g->dim;

	if (T <= g->cap_tok && n_seq <= g->cap_seq)
		return FM_OK;
	FM_CU(cudaStreamSynchronize(g->st), err);
	T = T > g->cap_tok ? T : g->cap_tok;
	n_seq = n_seq > g->cap_seq ? n_seq : g->cap_seq;
	free_acts(g);
	FM_CU(cudaMalloc((void **)&g->x, T * d * sizeof(float)), err);
	FM_CU(cudaMalloc((void **)&g->xh, T * d * sizeof(__half)), err);
	FM_CU(cudaMalloc((void **)&g->qkv, T * 3 * d * sizeof(__half)), err);
	FM_CU(cudaMalloc((void **)&g->att, T * d * sizeof(__half)), err);
	FM_CU(cudaMalloc((void **)&g->y, T * d * sizeof(float)), err);
	FM_CU(cudaMalloc((void **)&g->ff, T * g->n_ff * sizeof(__half)), err);
	FM_CU(cudaMalloc((void **)&g->pooled, n_seq * d * sizeof(float)), err);
	FM_CU(cudaMalloc((void **)&g->ints, (2 * T + 2 * n_seq + 1) * sizeof(int32_t)), err);
	g->cap_tok = T;
	g->cap_seq = n_seq;
	return FM_OK;
}

/* *p, pinned host memory of *cap elements of size bytes, grown to hold n. */
static int
grow_pinned(void **p, size_t *cap, size_t n, size_t size, struct fm_err *err)
{
	if (n <= *cap)
		return FM_OK;
	cudaFreeHost(*p);
	*p = NULL;
	*cap = 0;
	FM_CU(cudaMallocHost(p, n * size), err);
	*cap = n;
	return FM_OK;
}

static int
reserve_slot(struct slot *s, size_t n_ints, size_t n_out, struct fm_err *err)
{
	int rc = grow_pinned((void **)&s->ints, &s->cap_ints, n_ints, sizeof(int32_t), err);

	return rc == FM_OK ? grow_pinned((void **)&s->out, &s->cap_out, n_out, sizeof(float), err) : rc;
}

/* Rounds n F32 values to F16 into a host buffer and copies them to dst. */
static int
put_f16(__half *dst, const float *src, size_t n, uint16_t *tmp, struct fm_err *err)
{
	for (size_t i = 0; i < n; i++)
		tmp[i] = fm_f32_to_f16(src[i]);
	FM_CU(cudaMemcpy(dst, tmp, n * sizeof(uint16_t), cudaMemcpyHostToDevice), err);
	return FM_OK;
}

static int
put_f32(float *dst, const float *src, size_t n, struct fm_err *err)
{
	FM_CU(cudaMemcpy(dst, src, n * sizeof(float), cudaMemcpyHostToDevice), err);
	return FM_OK;
}

static int
upload(struct fm_gpu_bert *g, const struct fm_bert_weights *w, struct fm_err *err)
{
	const size_t d = w->dim, f = w->n_ff;
	/* Sizes in bytes, each rounded to 256 so that every array is aligned. */
	auto al = [](size_t n) { return (n + 255) / 256 * 256; };
	const size_t per_layer = al(3 * d * d * 2) + al(d * d * 2) + 2 * al(f * d * 2) +
	    al(3 * d * 4) + al(f * 4) + 6 * al(d * 4);
	size_t total = al((size_t)w->n_vocab * d * 4) + al(d * 4) + al((size_t)w->n_ctx * d * 4) +
	    2 * al(d * 4) + w->n_layer * per_layer, off = 0, big = d * (f > 3 * d ? f : 3 * d);
	uint16_t *tmp;
	float *row;
	int rc = FM_OK;

	FM_CU(cudaMalloc((void **)&g->wmem, total), err);
	g->bytes = total;
	auto take = [&](size_t n) { void *p = g->wmem + off; off += al(n); return p; };
	g->tok = (float *)take((size_t)w->n_vocab * d * 4);
	g->type0 = (float *)take(d * 4);
	g->pos = (float *)take((size_t)w->n_ctx * d * 4);
	g->eln_w = (float *)take(d * 4);
	g->eln_b = (float *)take(d * 4);
	if ((g->layers = (struct glayer *)calloc(w->n_layer, sizeof *g->layers)) == NULL)
		return fm_err_set(err, FM_EIO, "cannot allocate");
	for (uint32_t i = 0; i < w->n_layer; i++) {
		struct glayer *L = &g->layers[i];

		L->wqkv = (__half *)take(3 * d * d * 2);
		L->wo = (__half *)take(d * d * 2);
		L->w_up = (__half *)take(f * d * 2);
		L->w_down = (__half *)take(f * d * 2);
		L->bqkv = (float *)take(3 * d * 4);
		L->bo = (float *)take(d * 4);
		L->ln1_w = (float *)take(d * 4);
		L->ln1_b = (float *)take(d * 4);
		L->b_up = (float *)take(f * 4);
		L->b_down = (float *)take(d * 4);
		L->ln2_w = (float *)take(d * 4);
		L->ln2_b = (float *)take(d * 4);
	}

	/* The token embeddings, converted row by row as the CPU does on use. */
	tmp = (uint16_t *)malloc(big * sizeof *tmp);
	row = (float *)malloc(256 * d * sizeof *row);
	if (tmp == NULL || row == NULL) {
		free(tmp);
		free(row);
		return fm_err_set(err, FM_EIO, "cannot allocate");
	}
	for (uint32_t r0 = 0; r0 < w->n_vocab && rc == FM_OK; r0 += 256) {
		uint32_t n = w->n_vocab - r0 < 256 ? w->n_vocab - r0 : 256;

		for (uint32_t r = 0; r < n && rc == FM_OK; r++)
			rc = fm_gguf_dequant_row(w->tok_embd, r0 + r, row + (size_t)r * d, err);
		if (rc == FM_OK)
			rc = put_f32(g->tok + (size_t)r0 * d, row, (size_t)n * d, err);
	}
	if (rc == FM_OK && (rc = put_f32(g->type0, w->type0, d, err)) == FM_OK &&
	    (rc = put_f32(g->pos, w->pos, (size_t)w->n_ctx * d, err)) == FM_OK &&
	    (rc = put_f32(g->eln_w, w->embd_ln_w, d, err)) == FM_OK)
		rc = put_f32(g->eln_b, w->embd_ln_b, d, err);
	for (uint32_t i = 0; i < w->n_layer && rc == FM_OK; i++) {
		const struct fm_bert_layer *S = &w->layers[i];
		struct glayer *L = &g->layers[i];

		if ((rc = put_f16(L->wqkv, S->wqkv, 3 * d * d, tmp, err)) != FM_OK ||
		    (rc = put_f16(L->wo, S->wo, d * d, tmp, err)) != FM_OK ||
		    (rc = put_f16(L->w_up, S->w_up, f * d, tmp, err)) != FM_OK ||
		    (rc = put_f16(L->w_down, S->w_down, f * d, tmp, err)) != FM_OK ||
		    (rc = put_f32(L->bqkv, S->bqkv, 3 * d, err)) != FM_OK ||
		    (rc = put_f32(L->bo, S->bo, d, err)) != FM_OK ||
		    (rc = put_f32(L->ln1_w, S->ln1_w, d, err)) != FM_OK ||
		    (rc = put_f32(L->ln1_b, S->ln1_b, d, err)) != FM_OK ||
		    (rc = put_f32(L->b_up, S->b_up, f, err)) != FM_OK ||
		    (rc = put_f32(L->b_down, S->b_down, d, err)) != FM_OK ||
		    (rc = put_f32(L->ln2_w, S->ln2_w, d, err)) != FM_OK)
			break;
		rc = put_f32(L->ln2_b, S->ln2_b, d, err);
	}
	free(tmp);
	free(row);
	return rc;
}

static int
setup(struct fm_gpu_bert *g, const struct fm_bert *b, int device, uint32_t max_tokens,
    struct fm_err *err)
{
	struct fm_bert_weights w;
	uint32_t hd;
	int rc;

	fm_bert_weights(b, &w);
	g->device = device;
	g->dim = w.dim;
	g->n_layer = w.n_layer;
	g->n_head = w.n_head;
	g->n_ff = w.n_ff;
	g->n_ctx = w.n_ctx;
	g->n_vocab = w.n_vocab;
	g->eps = w.eps;
	hd = w.dim / w.n_head;
	if (hd > 256)
		return fm_err_set(err, FM_EDEVICE, "head size %u: the GPU encoder takes up to 256", hd);
	g->tc = hd == 32 || hd == 64;
	if ((rc = fm_gpu_open(device, g->name, sizeof g->name, err)) != FM_OK)
		return rc;
	if ((g->count = (uint32_t *)calloc(g->n_ctx + 2, sizeof *g->count)) == NULL)
		return fm_err_set(err, FM_EIO, "cannot allocate");
	FM_CU(cudaStreamCreateWithFlags(&g->st, cudaStreamNonBlocking), err);
	FM_CUBLAS(cublasCreate(&g->blas), err);
	FM_CUBLAS(cublasSetStream(g->blas, g->st), err);
	for (int i = 0; i < 2; i++)
		FM_CU(cudaEventCreateWithFlags(&g->slot[i].done, cudaEventDisableTiming), err);
	if ((rc = upload(g, &w, err)) != FM_OK)
		return rc;
	return reserve_acts(g, max_tokens ? max_tokens : 1, max_tokens / 2 + 1, err);
}

extern "C" struct fm_gpu_bert *
fm_gpu_bert_new(const struct fm_bert *b, int device, uint32_t max_tokens, struct fm_err *err)
{
	struct fm_gpu_bert *g = (struct fm_gpu_bert *)calloc(1, sizeof *g);

	if (g == NULL) {
		fm_err_set(err, FM_EIO, "cannot allocate");
		return NULL;
	}
	if (setup(g, b, device, max_tokens, err) != FM_OK) {
		/* Not sticky errors (out of memory) must not reach the next call. */
		cudaGetLastError();
		fm_gpu_bert_free(g);
		return NULL;
	}
	return g;
}

extern "C" void
fm_gpu_bert_free(struct fm_gpu_bert *g)
{
	if (g == NULL)
		return;
	if (g->st != NULL)
		cudaStreamSynchronize(g->st);
	free_acts(g);
	for (int i = 0; i < 2; i++) {
		cudaFreeHost(g->slot[i].ints);
		cudaFreeHost(g->slot[i].out);
		if (g->slot[i].done != NULL)
			cudaEventDestroy(g->slot[i].done);
	}
	cudaFree(g->wmem);
	free(g->layers);
	free(g->count);
	if (g->blas != NULL)
		cublasDestroy(g->blas);
	if (g->st != NULL)
		cudaStreamDestroy(g->st);
	free(g);
}

extern "C" const char *
fm_gpu_bert_device(const struct fm_gpu_bert *g)
{
	return g->name;
}

extern "C" double
fm_gpu_bert_flops(const struct fm_gpu_bert *g)
{
	return g->flops;
}

extern "C" uint64_t
fm_gpu_bert_bytes(const struct fm_gpu_bert *g)
{
	size_t T = g->cap_tok, d = g->dim;

	return g->bytes + T * d * (4 + 2 + 6 + 2 + 4) + T * g->n_ff * 2 + g->cap_seq * d * 4 +
	    (2 * T + 2 * g->cap_seq + 1) * 4;
}

extern "C" int
fm_gpu_bert_pending(const struct fm_gpu_bert *g)
{
	return g->n_busy;
}

/* The whole forward pass of T tokens in n_seq sequences, queued on the stream. */
static int
forward(struct fm_gpu_bert *g, uint32_t T, uint32_t n_seq, uint32_t max_len, int pooling,
    struct fm_err *err)
{
	const uint32_t d = g->dim, f = g->n_ff;
	const int32_t *ids = g->ints, *posi = ids + T, *start = posi + T, *order = start + n_seq + 1;
	cudaStream_t st = g->st;
	int rc;

	if ((rc = l_embed(st, g->x, g->xh, g->tok, g->type0, g->pos, g->eln_w, g->eln_b, ids, posi,
	    T, d, g->eps, err)) != FM_OK)
		return rc;
	for (uint32_t i = 0; i < g->n_layer; i++) {
		const struct glayer *L = &g->layers[i];

		if ((rc = gemm(g->blas, g->xh, T, d, L->wqkv, 3 * d, g->qkv, true, err)) != FM_OK ||
		    (rc = l_attention(st, g->att, g->qkv, L->bqkv, start, order, n_seq, max_len, d,
		    g->n_head, g->tc, err)) != FM_OK ||
		    (rc = gemm(g->blas, g->att, T, d, L->wo, d, g->y, false, err)) != FM_OK ||
		    (rc = l_add_norm(st, g->x, g->xh, g->y, L->bo, L->ln1_w, L->ln1_b, T, d, g->eps,
		    err)) != FM_OK ||
		    (rc = gemm(g->blas, g->xh, T, d, L->w_up, f, g->ff, true, err)) != FM_OK ||
		    (rc = l_gelu(st, g->ff, g->ff, L->b_up, T, f, err)) != FM_OK ||
		    (rc = gemm(g->blas, g->ff, T, f, L->w_down, d, g->y, false, err)) != FM_OK ||
		    (rc = l_add_norm(st, g->x, g->xh, g->y, L->b_down, L->ln2_w, L->ln2_b, T, d, g->eps,
		    err)) != FM_OK)
			return rc;
	}
	return l_pool(st, g->pooled, g->x, start, n_seq, d, pooling, err);
}

extern "C" int
fm_gpu_bert_submit(struct fm_gpu_bert *g, const int32_t *const *ids, const uint32_t *lens,
    size_t n_seq, int pooling, struct fm_err *err)
{
	size_t T = 0, n_ints;
	uint32_t max_len = 0, at;
	struct slot *s;
	int32_t *p, *posi, *start, *order;
	int rc;

	if (g->n_busy == 2)
		return fm_err_set(err, FM_EDEVICE, "two batches in flight already");
	if (n_seq > INT32_MAX / 2)
		return fm_err_set(err, FM_EDATA, "too many sequences in one batch");
	for (size_t i = 0; i < n_seq; i++) {
		if (lens[i] == 0 || lens[i] > g->n_ctx)
			return fm_err_set(err, FM_EDATA, "sequence of %u tokens outside 1..%u", lens[i],
			    g->n_ctx);
		for (uint32_t k = 0; k < lens[i]; k++)
			if (ids[i][k] < 0 || (uint32_t)ids[i][k] >= g->n_vocab)
				return fm_err_set(err, FM_EDATA, "token id %d outside the vocabulary",
				    ids[i][k]);
		T += lens[i];
		max_len = lens[i] > max_len ? lens[i] : max_len;
	}
	if (T > INT32_MAX / 4)
		return fm_err_set(err, FM_EDATA, "too many tokens in one batch");
	if ((rc = reserve_acts(g, T, n_seq, err)) != FM_OK)
		return rc;
	s = &g->slot[(g->head + g->n_busy) % 2];
	n_ints = 2 * T + 2 * n_seq + 1;
	if ((rc = reserve_slot(s, n_ints, n_seq * g->dim, err)) != FM_OK)
		return rc;
	p = s->ints;
	posi = p + T;
	start = posi + T;
	order = start + n_seq + 1;
	at = 0;
	for (size_t i = 0; i < n_seq; i++) {
		start[i] = (int32_t)at;
		memcpy(p + at, ids[i], lens[i] * sizeof *p);
		for (uint32_t k = 0; k < lens[i]; k++)
			posi[at + k] = (int32_t)k;
		at += lens[i];
	}
	start[n_seq] = (int32_t)at;
	/* The longest sequences first (a counting sort by length, stable). */
	memset(g->count, 0, (g->n_ctx + 2) * sizeof *g->count);
	for (size_t i = 0; i < n_seq; i++)
		g->count[g->n_ctx - lens[i]]++;
	for (uint32_t k = 0, sum = 0; k <= g->n_ctx; k++) {
		uint32_t c = g->count[k];
		g->count[k] = sum;
		sum += c;
	}
	for (size_t i = 0; i < n_seq; i++)
		order[g->count[g->n_ctx - lens[i]]++] = (int32_t)i;
	s->n_seq = n_seq;

	FM_CU(cudaMemcpyAsync(g->ints, s->ints, n_ints * sizeof(int32_t), cudaMemcpyHostToDevice,
	    g->st), err);
	if ((rc = forward(g, (uint32_t)T, (uint32_t)n_seq, max_len, pooling, err)) != FM_OK)
		return rc;
	if (n_seq > 0)
		FM_CU(cudaMemcpyAsync(s->out, g->pooled, n_seq * g->dim * sizeof(float),
		    cudaMemcpyDeviceToHost, g->st), err);
	FM_CU(cudaEventRecord(s->done, g->st), err);
	g->n_busy++;
	for (size_t i = 0; i < n_seq; i++)
		g->flops += 2.0 * g->n_layer * ((double)lens[i] * (4.0 * g->dim * g->dim + 2.0 *
		    g->dim * g->n_ff) + 2.0 * lens[i] * lens[i] * g->dim);
	return FM_OK;
}

extern "C" int
fm_gpu_bert_wait(struct fm_gpu_bert *g, float *out, struct fm_err *err)
{
	struct slot *s = &g->slot[g->head];

	if (g->n_busy == 0)
		return fm_err_set(err, FM_EDEVICE, "no batch in flight");
	g->n_busy--;
	g->head ^= 1;
	FM_CU(cudaEventSynchronize(s->done), err);
	FM_CU(cudaGetLastError(), err);
	if (s->n_seq > 0)
		memcpy(out, s->out, s->n_seq * g->dim * sizeof(float));
	return FM_OK;
}

extern "C" int
fm_gpu_bert_forward(struct fm_gpu_bert *g, const int32_t *const *ids, const uint32_t *lens,
    size_t n_seq, int pooling, float *out, struct fm_err *err)
{
	int rc;

	if (g->n_busy > 0)
		return fm_err_set(err, FM_EDEVICE, "batches in flight: wait for them first");
	if ((rc = fm_gpu_bert_submit(g, ids, lens, n_seq, pooling, err)) != FM_OK)
		return rc;
	return fm_gpu_bert_wait(g, out, err);
}
