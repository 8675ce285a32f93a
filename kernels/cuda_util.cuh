/*
 * cuda_util.cuh - the small device helpers every kernel file uses: a warp's
 * sum and the number of blocks for a one-dimensional grid.
 */
#ifndef FM_CUDA_UTIL_CUH
#define FM_CUDA_UTIL_CUH

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

/* Blocks of per threads for n items. */
static inline unsigned
blocks(size_t n, unsigned per)
{
	return (unsigned)((n + per - 1) / per);
}

#endif
