/*
 * fault.c - an LD_PRELOAD library that makes system calls fail on demand, so
 * the tests can show what a tool does when a disk or a device misbehaves
 * (jq's tests/shtest does the same).  Controlled by the environment:
 *
 *   FM_FAULT_READ=N    read() on a descriptor above 2 fails with EIO once
 *                      N bytes have been read through such descriptors
 *   FM_FAULT_FSYNC=1   fsync() fails with EIO
 *
 * Writes are not interposed: stdio reaches the kernel through glibc's
 * internal entry points, which a preloaded write() never sees; /dev/full and
 * closed pipes cover the write side instead.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

static long long
limit(const char *name)
{
	const char *v = getenv(name);

	return v != NULL ? atoll(v) : -1;
}

ssize_t
read(int fd, void *buf, size_t n)
{
	static ssize_t (*real)(int, void *, size_t);
	static long long total;
	long long lim = limit("FM_FAULT_READ");
	ssize_t r;

	if (real == NULL)
		real = (ssize_t (*)(int, void *, size_t))dlsym(RTLD_NEXT, "read");
	if (fd > 2 && lim >= 0 && total >= lim) {
		errno = EIO;
		return -1;
	}
	r = real(fd, buf, n);
	if (fd > 2 && r > 0)
		total += r;
	return r;
}

int
fsync(int fd)
{
	static int (*real)(int);

	if (real == NULL)
		real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
	if (limit("FM_FAULT_FSYNC") > 0) {
		errno = EIO;
		return -1;
	}
	return real(fd);
}
