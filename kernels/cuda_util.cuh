/*
 * cuda_util.cuh - the small helpers the kernel files share: sums over a warp
 * and a block, widening and narrowing of the 16-bit types, the number of
 * blocks for a one-dimensional grid, and programmatic dependent launch.
 */
#ifndef FM_CUDA_UTIL_CUH
#define FM_CUDA_UTIL_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stddef.h>

/* The sum over the 32 lanes of a warp, returned to every lane. */
static __device__ __forceinline__ float
warp_sum(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

/* The sum over the block (blockDim.x a multiple of 32), returned to every thread. */
static __device__ __forceinline__ float
block_sum(float v)
{
	__shared__ float part[32];
	int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;

	v = warp_sum(v);
	__syncthreads();
	if (lane == 0)
		part[w] = v;
	__syncthreads();
	if (w == 0) {
		v = lane < nw ? part[lane] : 0.0f;
		v = warp_sum(v);
		if (lane == 0)
			part[0] = v;
	}
	__syncthreads();
	return part[0];
}

static __device__ __forceinline__ float tof(float x) { return x; }
static __device__ __forceinline__ float tof(__half x) { return __half2float(x); }
static __device__ __forceinline__ float tof(__nv_bfloat16 x) { return __bfloat162float(x); }

/* A KV cache element or a GEMM's input: 16 bits rounded to nearest even, as fm_f32_to_f16 rounds. */
static __device__ __forceinline__ void put(float *p, float f) { *p = f; }
static __device__ __forceinline__ void put(__half *p, float f) { *p = __float2half_rn(f); }
static __device__ __forceinline__ void put(__nv_bfloat16 *p, float f) { *p = __float2bfloat16_rn(f); }

/*
 * Programmatic dependent launch (sm_90): a kernel started by launch_pdl may
 * begin while the kernel before it in the stream is still finishing.  Before
 * grid_wait() it may only read what no earlier kernel writes (the weights)
 * and write nothing; grid_wait() returns once the kernel before has finished
 * and its writes are visible.  Every block of such a kernel calls grid_wait,
 * so kernels finish in stream order.  grid_release() lets the next kernel
 * start once every block of this one has called it (or ended).
 */
static __device__ __forceinline__ void
grid_wait(void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
	asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

static __device__ __forceinline__ void
grid_release(void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
	asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

template <typename... P, typename... A>
static inline cudaError_t
launch_pdl(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t st, A... args)
{
	cudaLaunchConfig_t c = {};
	cudaLaunchAttribute at[1];

	at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
	at[0].val.programmaticStreamSerializationAllowed = 1;
	c.gridDim = grid;
	c.blockDim = block;
	c.dynamicSmemBytes = smem;
	c.stream = st;
	c.attrs = at;
	c.numAttrs = 1;
	return cudaLaunchKernelEx(&c, kernel, (P)args...);
}

/* Blocks of per threads for n items. */
static inline unsigned
blocks(size_t n, unsigned per)
{
	return (unsigned)((n + per - 1) / per);
}

#endif
