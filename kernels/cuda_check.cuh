/*
 * cuda_check.cuh - turning a failed CUDA or cuBLAS call into an fm error:
 * FM_EDEVICE with the statement, its file:line and the device, so that
 * "out of memory" says which allocation on which GPU.  Library code never
 * prints: the caller reports the message.
 */
#ifndef FM_CUDA_CHECK_CUH
#define FM_CUDA_CHECK_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>

extern "C" {
#include "fm_error.h"
}

static inline int
fm_cuda_fail(struct fm_err *err, const char *stmt, const char *file, int line, const char *why)
{
	int dev = -1;

	cudaGetDevice(&dev);
	return fm_err_set(err, FM_EDEVICE, "%s: %s (%s:%d, device %d)", stmt, why, file, line, dev);
}

/* Runs a CUDA runtime call; on failure returns FM_EDEVICE from the enclosing function. */
#define FM_CU(stmt, err) do {                                                     \
	cudaError_t e_ = (stmt);                                                  \
	if (e_ != cudaSuccess)                                                    \
		return fm_cuda_fail((err), #stmt, __FILE__, __LINE__,             \
		    cudaGetErrorString(e_));                                      \
} while (0)

/* The same for cuBLAS. */
#define FM_CUBLAS(stmt, err) do {                                                 \
	cublasStatus_t s_ = (stmt);                                               \
	if (s_ != CUBLAS_STATUS_SUCCESS)                                          \
		return fm_cuda_fail((err), #stmt, __FILE__, __LINE__,             \
		    cublasGetStatusString(s_));                                   \
} while (0)

/* After a kernel launch: a bad configuration shows here, naming the kernel, not at the next wait. */
#define FM_LAUNCHED(name, err) do {                                               \
	cudaError_t e_ = cudaGetLastError();                                      \
	if (e_ != cudaSuccess)                                                    \
		return fm_cuda_fail((err), "launch of " name, __FILE__, __LINE__, \
		    cudaGetErrorString(e_));                                      \
} while (0)

#endif
