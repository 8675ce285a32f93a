/*
 * ring_stream.cu - would one persistent kernel per decode step beat a
 * kernel per product?  A measurement of the idea, not part of fm.
 *
 * The kernel streams the weight bytes of a 1B-class llama step (16 layers
 * of q|k|v, output, gate|up and down rows, then the classifier) as one
 * block per SM would in such a kernel: the block's last warp is a producer
 * that copies rows into a ring of shared-memory stages with the copy
 * engine (cp.async.bulk, an mbarrier per stage for full and one for empty),
 * claiming units of CL stages from a counter per product (so a faster
 * block takes more); NCW consumer warps multiply each stage's rows by x
 * (F16 weights, F32 x, up to 4 rows a stage loaded together).  A step's
 * products depend on each other, so before each one every block must have
 * finished the one before: a grid barrier (an atomic count, then x read
 * again from L2).  The modes separate what costs what:
 *
 *   stream     the producer only: the consumers release stages unread
 *   products   the products, no barriers: the HBM ceiling of this design
 *   consumers  the products with no copies: how fast the consumers are
 *   barriers   the products with a grid barrier before each
 *   attention  the same and 4 us of work after each attention barrier
 *   stall      a 2 us pause of each block instead of each grid barrier
 *   alone      the barriers with no weights: their own latency
 *
 * usage: ring_stream   (prints the median of 20 runs of each mode)
 * build: nvcc -O2 -std=c++17 -gencode arch=compute_90,code=sm_90 -o ring_stream bench/ring_stream.cu
 */
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cuda_fp16.h>
#include <vector>

#define NCW 6        /* consumer warps */
#define NST 12       /* stages; a multiple of NCW, so a stage is always read by the same warp */
#define STAGE 16384  /* bytes a stage holds: whole rows of at most this */
#define CL 8         /* stages a claim takes */
#define XS 32768     /* bytes of x */

static_assert(NST % NCW == 0, "a stage is always read by the same warp");

struct product { const uint8_t *w; uint32_t rows, row_bytes; int attention; };

enum { STREAM, PRODUCTS, CONSUMERS, BARRIERS, ATTENTION, STALL, ALONE, MODES };
static const char *mode_name[MODES] = { "stream", "products", "consumers", "barriers",
	"attention", "stall", "alone" };

struct args {
	const product *p;
	int n;
	int mode;
	const float *x;
	float *y;
	unsigned *arrived, *claimed;   /* the barrier's count; a claim counter per product */
};

static __device__ __forceinline__ unsigned
sa(const void *p)
{
	return (unsigned)__cvta_generic_to_shared(p);
}

static __device__ __forceinline__ void
mb_init(uint64_t *b)
{
	asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(sa(b)));
}

static __device__ __forceinline__ void
mb_arrive(uint64_t *b)
{
	asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(sa(b)) : "memory");
}

static __device__ __forceinline__ void
mb_expect(uint64_t *b, unsigned bytes)
{
	asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(sa(b)),
	    "r"(bytes) : "memory");
}

static __device__ __forceinline__ void
mb_wait(uint64_t *b, unsigned parity)
{
	asm volatile("{\n\t.reg .pred done;\nWAIT:\n\t"
	    "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n\t@!done bra WAIT;\n}"
	    ::"r"(sa(b)), "r"(parity) : "memory");
}

static __device__ __forceinline__ void
bulk(void *dst, const void *src, unsigned bytes, uint64_t *b)
{
	asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
	    ::"r"(sa(dst)), "l"(src), "r"(bytes), "r"(sa(b)) : "memory");
}

static __device__ __forceinline__ void
consumers_sync(void)
{
	asm volatile("bar.sync 1, %0;" ::"n"(32 * NCW) : "memory");
}

static __device__ __forceinline__ void
pause_ns(long ns)
{
	long t0, t;

	asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
	do
		asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
	while (t - t0 < ns);
}

/* The R rows of a stage (n real) times xs; lane q stores row q's sum. */
template <int R>
static __device__ __forceinline__ void
rows_dot(const uint8_t *stage, const float *xs, unsigned n16, unsigned n, int lane, float *y)
{
	const uint4 *p = (const uint4 *)stage;
	const float4 *x4 = (const float4 *)xs;
	float acc[R][2] = {}, v[R];

	for (unsigned i0 = lane; i0 < n16; i0 += 64) {
		uint4 u[2][R];
		float4 xa[2][2];
#pragma unroll
		for (int t = 0; t < 2; t++) {
			unsigned i = i0 + 32 * t;
			bool in = i < n16;
			xa[t][0] = in ? x4[2 * i] : make_float4(0, 0, 0, 0);
			xa[t][1] = in ? x4[2 * i + 1] : make_float4(0, 0, 0, 0);
#pragma unroll
			for (int q = 0; q < R; q++)
				u[t][q] = in ? p[q * n16 + i] : make_uint4(0, 0, 0, 0);
		}
#pragma unroll
		for (int t = 0; t < 2; t++)
#pragma unroll
			for (int q = 0; q < R; q++) {
				const __half2 *h = (const __half2 *)&u[t][q];
				float2 f0 = __half22float2(h[0]), f1 = __half22float2(h[1]);
				float2 f2 = __half22float2(h[2]), f3 = __half22float2(h[3]);
				float4 b0 = xa[t][0], b1 = xa[t][1];
				acc[q][t] += f0.x * b0.x + f0.y * b0.y + f1.x * b0.z + f1.y * b0.w +
				    f2.x * b1.x + f2.y * b1.y + f3.x * b1.z + f3.y * b1.w;
			}
	}
#pragma unroll
	for (int q = 0; q < R; q++) {
		v[q] = acc[q][0] + acc[q][1];
		for (int o = 16; o > 0; o >>= 1)
			v[q] += __shfl_xor_sync(0xffffffffu, v[q], o);
	}
#pragma unroll
	for (int q = 0; q < R; q++)
		if (lane == q && q < (int)n)
			y[q] = v[q];
}

static __global__ void __launch_bounds__(32 * (NCW + 1), 1)
k_step(args a)
{
	extern __shared__ __align__(128) uint8_t sm[];
	__shared__ __align__(8) uint64_t full[NST], empty[NST];
	__shared__ int unit[NST];   /* the stage's index within its product, or -1: the product is done */
	float *xs = (float *)sm;
	uint8_t *ring = sm + XS;
	const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
	const bool barriers = a.mode == BARRIERS || a.mode == ATTENTION || a.mode == ALONE;

	if (threadIdx.x == 0) {
		for (int s = 0; s < NST; s++) {
			mb_init(&full[s]);
			mb_init(&empty[s]);
		}
		asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
	}
	__syncthreads();
	if (w == NCW) {
		/* The producer: claims CL stages at a time, the next claim in flight while it copies. */
		unsigned c = 0;
		if (lane != 0)
			return;
		for (int i = 0; i < a.n; i++) {
			const product p = a.p[i];
			const unsigned rps = STAGE / p.row_bytes, stages = (p.rows + rps - 1) / rps;
			unsigned g = atomicAdd(&a.claimed[i], 1u), next = atomicAdd(&a.claimed[i], 1u), k = 0;
			for (;; c++) {
				unsigned st = c % NST, s = g * CL + k, n;
				if (s >= stages)
					break;
				if (++k == CL) {
					k = 0;
					g = next;
					next = atomicAdd(&a.claimed[i], 1u);
				}
				n = min(rps, p.rows - s * rps);
				if (c >= NST)
					mb_wait(&empty[st], (c / NST - 1) & 1);
				unit[st] = (int)s;
				if (a.mode == CONSUMERS) {
					mb_arrive(&full[st]);
				} else {
					mb_expect(&full[st], n * p.row_bytes);
					bulk(ring + st * STAGE, p.w + (size_t)s * rps * p.row_bytes,
					    n * p.row_bytes, &full[st]);
				}
			}
			/* One end mark per consumer warp: the product is done. */
			for (int e = 0; e < NCW; e++, c++) {
				unsigned st = c % NST;
				if (c >= NST)
					mb_wait(&empty[st], (c / NST - 1) & 1);
				unit[st] = -1;
				mb_arrive(&full[st]);
			}
		}
		return;
	}
	unsigned c = w, passed = 0;
	for (int i = 0; i < a.n; i++) {
		const product p = a.p[i];
		const unsigned rps = STAGE / p.row_bytes, n16 = p.row_bytes / 16, cols = p.row_bytes / 2;
		if (barriers || a.mode == STALL) {
			consumers_sync();
			if (threadIdx.x == 0 && a.mode == STALL)
				pause_ns(2000);
			if (threadIdx.x == 0 && barriers) {
				__threadfence();
				atomicAdd(a.arrived, 1u);
				passed += gridDim.x;
				while (*(volatile unsigned *)a.arrived < passed)
					;
				__threadfence();
			}
			consumers_sync();
			if (a.mode == ATTENTION && p.attention)
				pause_ns(4000);
			/* x again, from L2, loads first: one latency, not one per element */
			for (unsigned b = 0; b < cols / 4; b += 8 * 32 * NCW) {
				float4 t[8];
#pragma unroll
				for (int k = 0; k < 8; k++) {
					unsigned j = b + threadIdx.x + k * 32 * NCW;
					t[k] = j < cols / 4 ? __ldcg((const float4 *)a.x + j) : make_float4(0, 0, 0, 0);
				}
#pragma unroll
				for (int k = 0; k < 8; k++) {
					unsigned j = b + threadIdx.x + k * 32 * NCW;
					if (j < cols / 4)
						((float4 *)xs)[j] = t[k];
				}
			}
			consumers_sync();
		}
		for (;; c += NCW) {
			unsigned st = c % NST;
			int s;
			mb_wait(&full[st], (c / NST) & 1);
			s = unit[st];
			if (s >= 0 && a.mode != STREAM) {
				unsigned r = s * rps, n = min(rps, p.rows - r);
				if (rps >= 4)
					rows_dot<4>(ring + st * STAGE, xs, n16, n, lane, a.y + r);
				else
					rows_dot<1>(ring + st * STAGE, xs, n16, n, lane, a.y + r);
			}
			__syncwarp();
			if (lane == 0)
				mb_arrive(&empty[st]);
			if (s < 0) {
				c += NCW;
				break;
			}
		}
	}
}

#define CHECK(e) do { cudaError_t r_ = (e); if (r_ != cudaSuccess) { \
	fprintf(stderr, "ring_stream: %s: %s\n", #e, cudaGetErrorString(r_)); return 1; } } while (0)

int
main(void)
{
	const uint32_t layers = 16, dim = 2048, ffn = 8192, vocab = 32000;
	std::vector<product> h;
	size_t total = 0, at = 0;
	uint8_t *w;
	product *dp, *dz;
	float *x, *y;
	unsigned *arrived, *claimed;
	cudaEvent_t e0, e1;
	int sms;
	const size_t smem = XS + (size_t)NST * STAGE;

	for (uint32_t l = 0; l < layers; l++) {
		h.push_back({ NULL, dim + 2 * dim / 4, dim * 2, 0 });   /* q|k|v, 8 of 32 heads for K, V */
		h.push_back({ NULL, dim, dim * 2, 1 });                 /* output, after attention */
		h.push_back({ NULL, 2 * ffn, dim * 2, 0 });             /* gate|up */
		h.push_back({ NULL, dim, ffn * 2, 0 });                 /* down */
	}
	h.push_back({ NULL, vocab, dim * 2, 0 });
	for (auto &p : h)
		total += (size_t)p.rows * p.row_bytes;
	CHECK(cudaMalloc(&w, total));
	CHECK(cudaMemset(w, 0, total));
	for (auto &p : h) {
		p.w = w + at;
		at += (size_t)p.rows * p.row_bytes;
	}
	std::vector<product> none = h;
	for (auto &p : none)
		p.rows = 0;
	CHECK(cudaMalloc(&dp, h.size() * sizeof(product)));
	CHECK(cudaMalloc(&dz, h.size() * sizeof(product)));
	CHECK(cudaMemcpy(dp, h.data(), h.size() * sizeof(product), cudaMemcpyHostToDevice));
	CHECK(cudaMemcpy(dz, none.data(), h.size() * sizeof(product), cudaMemcpyHostToDevice));
	CHECK(cudaMalloc(&x, XS));
	CHECK(cudaMemset(x, 0, XS));
	CHECK(cudaMalloc(&y, (size_t)vocab * 2 * sizeof(float)));
	CHECK(cudaMalloc(&arrived, sizeof(unsigned)));
	CHECK(cudaMalloc(&claimed, h.size() * sizeof(unsigned)));
	CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
	CHECK(cudaFuncSetAttribute(k_step, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
	CHECK(cudaEventCreate(&e0));
	CHECK(cudaEventCreate(&e1));
	printf("%zu weight bytes a step, %zu products; %d blocks of %d consumer warps, %d stages of %d bytes\n",
	    total, h.size(), sms, NCW, NST, STAGE);
	for (int mode = 0; mode < MODES; mode++) {
		std::vector<float> ms;
		for (int rep = 0; rep < 20; rep++) {
			args a = { mode == ALONE ? dz : dp, (int)h.size(), mode, x, y, arrived, claimed };
			float t;
			CHECK(cudaMemset(arrived, 0, sizeof(unsigned)));
			CHECK(cudaMemset(claimed, 0, h.size() * sizeof(unsigned)));
			CHECK(cudaEventRecord(e0));
			k_step<<<sms, 32 * (NCW + 1), smem>>>(a);
			CHECK(cudaEventRecord(e1));
			CHECK(cudaEventSynchronize(e1));
			CHECK(cudaGetLastError());
			CHECK(cudaEventElapsedTime(&t, e0, e1));
			ms.push_back(t);
		}
		std::sort(ms.begin(), ms.end());
		printf("%-10s %8.1f us a step", mode_name[mode], ms[10] * 1e3);
		if (mode != ALONE)
			printf(", %.2f TB/s", total / (ms[10] * 1e-3) / 1e12);
		printf("\n");
	}
	return 0;
}
