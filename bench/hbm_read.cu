/*
 * hbm_read.cu - the read bandwidth this GPU reaches in practice, the ceiling
 * a decode step's weight streaming can approach: a kernel that reads a
 * buffer far larger than L2 once (16-byte streaming loads, a sum per block
 * so nothing is optimised away), and cudaMemcpy device to device (which
 * reads and writes).  Median of 20 runs each.
 *
 * usage: hbm_read [MiB (2048)]
 */
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

__global__ void
k_read(const uint4 *p, size_t n, unsigned *out)
{
	unsigned s = 0;

	for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
		uint4 v = __ldcs(p + i);
		s ^= v.x ^ v.y ^ v.z ^ v.w;
	}
	if (s == 0x12345678u)
		out[blockIdx.x] = s;
}

static int
cmp(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;

	return x < y ? -1 : x > y;
}

/* Each warp reads whole chunks of U x 512 bytes, all loads in flight; in order or scattered. */
template <int U>
__global__ void
k_chunks(const uint4 *p, size_t n_chunks, int scatter, unsigned *out)
{
	size_t w = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) / 32, nw = (size_t)gridDim.x * blockDim.x / 32;
	unsigned s = 0, lane = threadIdx.x & 31;

	for (size_t c = w; c < n_chunks; c += nw) {
		size_t at = (scatter ? c * 7919 % n_chunks : c) * U * 32 + lane;
		uint4 v[U];
#pragma unroll
		for (int k = 0; k < U; k++)
			v[k] = __ldcs(p + at + 32 * k);
#pragma unroll
		for (int k = 0; k < U; k++)
			s ^= v[k].x ^ v[k].w;
	}
	if (s == 0x12345678u)
		out[blockIdx.x] = s;
}

template <int U>
static void
chunks(const void *a, size_t bytes, int sms, unsigned *out)
{
	cudaEvent_t e0, e1;
	float t[20];

	cudaEventCreate(&e0);
	cudaEventCreate(&e1);
	for (int scatter = 0; scatter < 2; scatter++)
		for (int per = 2; per <= 8; per *= 2) {
			for (int r = 0; r < 20; r++) {
				cudaEventRecord(e0);
				k_chunks<U><<<sms * per, 256>>>((const uint4 *)a, bytes / (512 * U), scatter, out);
				cudaEventRecord(e1);
				cudaEventSynchronize(e1);
				cudaEventElapsedTime(&t[r], e0, e1);
			}
			qsort(t, 20, sizeof *t, cmp);
			printf("chunks of %5d bytes per warp, %s, %d blocks of 256 per SM: %.2f TB/s\n", 512 * U,
			    scatter ? "scattered" : "in order ", per, bytes / (t[10] * 1e-3) / 1e12);
		}
}


int
main(int argc, char **argv)
{
	size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 2048, bytes = mib << 20;
	int sms = 0;
	void *a, *b;
	unsigned *out;
	cudaEvent_t e0, e1;
	float t[20];

	cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
	if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess ||
	    cudaMalloc((void **)&out, 1 << 20) != cudaSuccess) {
		fprintf(stderr, "hbm_read: cannot allocate 2 x %zu MiB\n", mib);
		return 1;
	}
	cudaMemset(a, 1, bytes);
	cudaEventCreate(&e0);
	cudaEventCreate(&e1);
	for (int per = 4; per <= 16; per *= 2) {
		for (int r = 0; r < 20; r++) {
			cudaEventRecord(e0);
			k_read<<<sms * per, 256>>>((const uint4 *)a, bytes / 16, out);
			cudaEventRecord(e1);
			cudaEventSynchronize(e1);
			cudaEventElapsedTime(&t[r], e0, e1);
		}
		qsort(t, 20, sizeof *t, cmp);
		printf("read kernel, %d blocks of 256 per SM: %.2f TB/s\n", per, bytes / (t[10] * 1e-3) / 1e12);
	}
	chunks<1>(a, bytes, sms, out);
	chunks<4>(a, bytes, sms, out);
	chunks<8>(a, bytes, sms, out);
	chunks<16>(a, bytes, sms, out);
	for (int r = 0; r < 20; r++) {
		cudaEventRecord(e0);
		cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
		cudaEventRecord(e1);
		cudaEventSynchronize(e1);
		cudaEventElapsedTime(&t[r], e0, e1);
	}
	qsort(t, 20, sizeof *t, cmp);
	printf("cudaMemcpy device to device: %.2f TB/s read + written\n", 2.0 * bytes / (t[10] * 1e-3) / 1e12);
	return 0;
}
