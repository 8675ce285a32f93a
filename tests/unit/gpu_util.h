/*
 * gpu_util.h - what the GPU tests share: the error slot, a fixed random
 * sequence, and copies to and from the device that end the test on failure
 * (a test that cannot move its data has nothing to check).  Included once,
 * after gpu.h, by each test_gpu_*.c built with CUDA.
 */
#ifndef FM_GPU_UTIL_H
#define FM_GPU_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "gpu.h"

static struct fm_err err;
static uint64_t rng = 88172645463325252ull;

static float __attribute__((unused))
frand(void)   /* uniform in [-1, 1) */
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (float)((rng >> 40) / 8388608.0 - 1.0);
}

static void * __attribute__((unused))
up(const void *src, size_t n)
{
	void *d = fm_gpu_malloc(n, &err);

	if (d == NULL || fm_gpu_put(d, src, n, &err) != FM_OK) {
		printf("# %s\n", err.msg);
		exit(1);
	}
	return d;
}

#endif
