/*
 * attn_prefill.cu - causal attention for prefill over an F16 KV cache, the
 * way FlashAttention-2 does it: the GPU twin of fm_attention (common/) for
 * many queries at once, heads of 64 or 128.
 *
 * A block takes BQ = 16 * MT * W queries of one head: W warps, each owning
 * MT slices of 16 query rows.  It walks the keys in tiles of 64 that
 * cp.async brings into shared memory while the previous tile is in use (two
 * buffers).  The scores S = Q K^T and the update O += P V are mma.sync
 * m16n8k16 (F16 in, F32 sums), the operands read by ldmatrix; Q, the
 * output O and the online softmax's maximum and sum stay in registers from
 * start to end, so shared memory holds only K and V.  This is what ops.cu's
 * WMMA kernel could not do: WMMA fragments cannot be scaled by row, so it
 * kept O in shared memory and ran the softmax there.
 *
 * Why the layout and order:
 * - a tile row is HD + 8 halves, so the 8 rows an ldmatrix reads start in
 *   8 different groups of 4 banks (no conflicts, no swizzle to get wrong);
 * - Q is scaled by 1/sqrt(HD) * log2(e) before its rounding to F16, so the
 *   softmax is one subtraction and one ex2 per score;
 * - only tiles that reach past a warp's first query are masked, and a warp
 *   skips tiles wholly after its last query;
 * - the query tiles run last first: the longest rows of the causal
 *   triangle start first and the short ones fill the tail.
 * The grid depends on n_q and the heads only; p0 is read on the device, so
 * a captured launch stays valid as the context grows.
 */
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include "cuda_check.cuh"
#include "cuda_util.cuh"
#include "ops.cuh"

#define PF_K 64    /* keys per tile */
#define PF_PAD 8   /* halves after each tile row, against bank conflicts */

/*
 * Warps per block and 16-row slices per warp for each head size, as
 * measured on the H100 (bench/attn_prefill_speed.cu, 4096 queries, 32/8
 * heads).  Head 64: two slices a warp read each K and V fragment for two
 * MMAs, halving the ldmatrix traffic: 4x2 gave 299 TFLOP/s, 4x1 248, 8x1
 * 270.  Head 128: 4x1 and 8x1 within 2% (273, 271); two slices would need
 * more than 255 registers.
 */
#ifndef PF_W64
#define PF_W64 4
#endif
#ifndef PF_MT64
#define PF_MT64 2
#endif
#ifndef PF_W128
#define PF_W128 4
#endif
#ifndef PF_MT128
#define PF_MT128 1
#endif

static __device__ __forceinline__ uint32_t
pack_half2(float a, float b)
{
	__half2 t = __floats2half2_rn(a, b);   /* a in the low half: the lower index */

	return *reinterpret_cast<uint32_t *>(&t);
}

static __device__ __forceinline__ float
ex2(float x)
{
	float y;

	asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
	return y;
}

/* 16 bytes from global to shared memory, or 16 zero bytes when !in (src must still be valid). */
static __device__ __forceinline__ void
cp_async16(uint32_t dst, const void *src, bool in)
{
	asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;"
	    :: "r"(dst), "l"(src), "r"(in ? 16 : 0));
}

static __device__ __forceinline__ void
ldsm_x4(uint32_t r[4], uint32_t addr)
{
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
	    : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}

static __device__ __forceinline__ void
ldsm_x4_trans(uint32_t r[4], uint32_t addr)
{
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
	    : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}

/* d += a b: a 16x16 row-major, b 16x8 column-major, F16; d 16x8 F32. */
static __device__ __forceinline__ void
mma16816(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
{
	asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
	    "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
	    : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
	    : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Keys t0 .. t0+PF_K of KV head kvh into a tile buffer of K and one of V; rows past n_keys are zero. */
template <int HD, int NT>
static __device__ __forceinline__ void
load_tile(uint32_t ks, uint32_t vs, const __half *kc, const __half *vc, uint32_t t0,
    uint32_t n_keys, size_t kvd, uint32_t kvh)
{
	constexpr int CH = HD / 8, LD = HD + PF_PAD;   /* 16-byte chunks per row; row stride */
	static_assert(PF_K * CH % NT == 0, "every thread copies as many chunks");

#pragma unroll
	for (int i = 0; i < PF_K * CH / NT; i++) {
		int e = threadIdx.x + i * NT, j = e / CH, d = e % CH * 8;
		bool in = t0 + j < n_keys;
		size_t src = (size_t)(in ? t0 + j : 0) * kvd + (size_t)kvh * HD + d;
		uint32_t dst = (uint32_t)((j * LD + d) * sizeof(__half));

		cp_async16(ks + dst, kc + src, in);
		cp_async16(vs + dst, vc + src, in);
	}
}

template <int HD, int W, int MT>
static __global__ void __launch_bounds__(32 * W)
k_attn_prefill(float *out, const float *q, const __half *kc, const __half *vc, uint32_t n_q,
    uint32_t n_head, uint32_t group, uint32_t n_head_kv, const int32_t *pos0, float qscale)
{
	constexpr int LD = HD + PF_PAD, TILE = PF_K * LD * (int)sizeof(__half), BQ = 16 * MT * W;
	extern __shared__ __align__(16) unsigned char pf_smem[];   /* K[2][PF_K][LD], V[2][PF_K][LD] */
	const uint32_t sbase = (uint32_t)__cvta_generic_to_shared(pf_smem);
	const uint32_t h = blockIdx.x, kvh = h / group;
	const uint32_t q0 = (gridDim.y - 1 - blockIdx.y) * BQ;
	const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, g = lane >> 2, c = lane & 3;
	const int r0 = 16 * MT * w;   /* the warp's first row in the block */
	const uint32_t p0 = (uint32_t)*pos0;
	const uint32_t nq = n_q - q0 < (uint32_t)BQ ? n_q - q0 : BQ;
	const uint32_t n_keys = p0 + q0 + nq, nt = (n_keys + PF_K - 1) / PF_K;
	const size_t qd = (size_t)n_head * HD, kvd = (size_t)n_head_kv * HD;
	const bool live = r0 < (int)nq;
	const uint32_t first = p0 + q0 + r0;   /* positions of the warp's first and last queries */
	const uint32_t last = p0 + q0 + (r0 + 16 * MT <= (int)nq ? r0 + 16 * MT - 1 : nq - 1);
	/* This lane's row addresses for ldmatrix: K as the B of S = Q K^T, V transposed for P V. */
	const uint32_t koff = (uint32_t)((((lane & 7) + (lane >> 4) * 8) * LD +
	    ((lane >> 3) & 1) * 8) * sizeof(__half));
	const uint32_t voff = (uint32_t)((((lane & 7) + ((lane >> 3) & 1) * 8) * LD +
	    (lane >> 4) * 8) * sizeof(__half));
	uint32_t qf[MT][HD / 16][4];
	float o[MT][HD / 8][4], m[MT][2], l[MT][2];

	/* Q as A fragments: registers 0..3 hold rows g, g+8, g, g+8 and columns 2c, 2c, 2c+8, 2c+8. */
#pragma unroll
	for (int t = 0; t < MT; t++) {
#pragma unroll
		for (int kk = 0; kk < HD / 16; kk++)
#pragma unroll
			for (int i = 0; i < 4; i++) {
				uint32_t row = r0 + 16 * t + g + (i & 1) * 8;
				int col = kk * 16 + 2 * c + (i >> 1) * 8;
				float2 v = make_float2(0.0f, 0.0f);
				if (row < nq)
					v = *(const float2 *)(q + (size_t)(q0 + row) * qd + (size_t)h * HD + col);
				qf[t][kk][i] = pack_half2(v.x * qscale, v.y * qscale);
			}
#pragma unroll
		for (int d = 0; d < HD / 8; d++)
			o[t][d][0] = o[t][d][1] = o[t][d][2] = o[t][d][3] = 0.0f;
		m[t][0] = m[t][1] = -INFINITY;
		l[t][0] = l[t][1] = 0.0f;
	}

	load_tile<HD, 32 * W>(sbase, sbase + 2 * TILE, kc, vc, 0, n_keys, kvd, kvh);
	asm volatile("cp.async.commit_group;");
	for (uint32_t j = 0; j < nt; j++) {
		const uint32_t t0 = j * PF_K;
		const uint32_t kt = sbase + (j & 1) * TILE, vt = sbase + (2 + (j & 1)) * TILE;

		if (j + 1 < nt)
			load_tile<HD, 32 * W>(sbase + ((j + 1) & 1) * TILE,
			    sbase + (2 + ((j + 1) & 1)) * TILE, kc, vc, t0 + PF_K, n_keys, kvd, kvh);
		/* Always a group, empty at the end, so that "all but one" means tile j is in. */
		asm volatile("cp.async.commit_group;");
		asm volatile("cp.async.wait_group 1;" ::: "memory");
		__syncthreads();
		if (live && t0 <= last) {
			float s[MT][PF_K / 8][4];

#pragma unroll
			for (int t = 0; t < MT; t++)
#pragma unroll
				for (int n = 0; n < PF_K / 8; n++)
					s[t][n][0] = s[t][n][1] = s[t][n][2] = s[t][n][3] = 0.0f;
			/* One ldmatrix gives the B fragments of 16 keys for 16 dimensions. */
#pragma unroll
			for (int kk = 0; kk < HD / 16; kk++)
#pragma unroll
				for (int np = 0; np < PF_K / 16; np++) {
					uint32_t b[4];
					ldsm_x4(b, kt + koff + (uint32_t)((np * 16 * LD + kk * 16) *
					    sizeof(__half)));
#pragma unroll
					for (int t = 0; t < MT; t++) {
						mma16816(s[t][2 * np], qf[t][kk], b[0], b[1]);
						mma16816(s[t][2 * np + 1], qf[t][kk], b[2], b[3]);
					}
				}
			if (t0 + PF_K - 1 > first) {
				/* Register i of slice n holds key t0 + 8n + 2c + (i & 1) for row g + 8 (i >> 1). */
#pragma unroll
				for (int t = 0; t < MT; t++)
#pragma unroll
					for (int n = 0; n < PF_K / 8; n++)
#pragma unroll
						for (int i = 0; i < 4; i++) {
							uint32_t key = t0 + 8 * n + 2 * c + (i & 1);
							uint32_t pos = first + 16 * t + g + (i >> 1) * 8;
							if (key > pos)
								s[t][n][i] = -INFINITY;
						}
			}
			/*
			 * The online softmax, per row: the four lanes of a quad share
			 * a row.  Tile 0 holds key 0, which every row sees, so the
			 * maximum is finite from the first tile on.
			 */
#pragma unroll
			for (int t = 0; t < MT; t++) {
#pragma unroll
				for (int r = 0; r < 2; r++) {
					float mx = m[t][r], corr;
#pragma unroll
					for (int n = 0; n < PF_K / 8; n++)
						mx = fmaxf(mx, fmaxf(s[t][n][2 * r], s[t][n][2 * r + 1]));
					mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
					mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
					corr = ex2(m[t][r] - mx);
					m[t][r] = mx;
					l[t][r] *= corr;
#pragma unroll
					for (int d = 0; d < HD / 8; d++) {
						o[t][d][2 * r] *= corr;
						o[t][d][2 * r + 1] *= corr;
					}
#pragma unroll
					for (int n = 0; n < PF_K / 8; n++) {
						s[t][n][2 * r] = ex2(s[t][n][2 * r] - mx);
						s[t][n][2 * r + 1] = ex2(s[t][n][2 * r + 1] - mx);
						l[t][r] += s[t][n][2 * r] + s[t][n][2 * r + 1];
					}
				}
			}
			/* P from the S accumulators to A fragments as they lie; V's B fragments by ldmatrix.trans. */
#pragma unroll
			for (int kk = 0; kk < PF_K / 16; kk++) {
				uint32_t a[MT][4];
#pragma unroll
				for (int t = 0; t < MT; t++) {
					a[t][0] = pack_half2(s[t][2 * kk][0], s[t][2 * kk][1]);
					a[t][1] = pack_half2(s[t][2 * kk][2], s[t][2 * kk][3]);
					a[t][2] = pack_half2(s[t][2 * kk + 1][0], s[t][2 * kk + 1][1]);
					a[t][3] = pack_half2(s[t][2 * kk + 1][2], s[t][2 * kk + 1][3]);
				}
#pragma unroll
				for (int dp = 0; dp < HD / 16; dp++) {
					uint32_t b[4];
					ldsm_x4_trans(b, vt + voff + (uint32_t)((kk * 16 * LD + dp * 16) *
					    sizeof(__half)));
#pragma unroll
					for (int t = 0; t < MT; t++) {
						mma16816(o[t][2 * dp], a[t], b[0], b[1]);
						mma16816(o[t][2 * dp + 1], a[t], b[2], b[3]);
					}
				}
			}
		}
		/* Everyone is done with buffer j & 1 before the next round refills it. */
		__syncthreads();
	}

#pragma unroll
	for (int t = 0; t < MT; t++)
#pragma unroll
		for (int r = 0; r < 2; r++) {
			uint32_t row = r0 + 16 * t + g + 8 * r;
			float sum = l[t][r], inv;

			sum += __shfl_xor_sync(0xffffffffu, sum, 1);
			sum += __shfl_xor_sync(0xffffffffu, sum, 2);
			inv = 1.0f / sum;
			if (row >= nq)
				continue;
#pragma unroll
			for (int d = 0; d < HD / 8; d++)
				*(float2 *)(out + (size_t)(q0 + row) * qd + (size_t)h * HD + d * 8 + 2 * c) =
				    make_float2(o[t][d][2 * r] * inv, o[t][d][2 * r + 1] * inv);
		}
}

template <int HD, int W, int MT>
static int
launch_prefill(cudaStream_t st, float *out, const float *q, const __half *kc, const __half *vc,
    uint32_t n_q, uint32_t n_head, uint32_t n_head_kv, const int32_t *pos0, struct fm_err *err)
{
	constexpr int BQ = 16 * MT * W;
	const size_t bytes = 4 * PF_K * (HD + PF_PAD) * sizeof(__half);
	/* log2(e) / sqrt(HD): the softmax runs on ex2. */
	const float qscale = 1.44269504f / sqrtf((float)HD);
	dim3 grid(n_head, blocks(n_q, BQ));

	FM_CU(cudaFuncSetAttribute(k_attn_prefill<HD, W, MT>,
	    cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes), err);
	k_attn_prefill<HD, W, MT><<<grid, 32 * W, bytes, st>>>(out, q, kc, vc, n_q, n_head,
	    n_head / n_head_kv, n_head_kv, pos0, qscale);
	FM_LAUNCHED("k_attn_prefill", err);
	return FM_OK;
}

int
fm_k_attention_prefill(cudaStream_t st, float *out, const float *q, const void *kc,
    const void *vc, uint32_t n_q, uint32_t n_head, uint32_t n_head_kv, uint32_t head_dim,
    const int32_t *pos0, struct fm_err *err)
{
	const __half *k = (const __half *)kc, *v = (const __half *)vc;

	if (n_q == 0)
		return FM_OK;
	if (head_dim == 64)
		return launch_prefill<64, PF_W64, PF_MT64>(st, out, q, k, v, n_q, n_head, n_head_kv,
		    pos0, err);
	if (head_dim == 128)
		return launch_prefill<128, PF_W128, PF_MT128>(st, out, q, k, v, n_q, n_head,
		    n_head_kv, pos0, err);
	return 1;
}
