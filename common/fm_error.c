/* fm_error.c - filling in struct fm_err. */
#include "fm_error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int
fm_err_set(struct fm_err *err, int status, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL)
		return status;
	err->status = status;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof err->msg, fmt, ap);
	va_end(ap);
	return status;
}

int
fm_err_errno(struct fm_err *err, int status, int errnum, const char *fmt, ...)
{
	va_list ap;
	size_t n;

	if (err == NULL)
		return status;
	err->status = status;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof err->msg, fmt, ap);
	va_end(ap);
	n = strlen(err->msg);
	snprintf(err->msg + n, sizeof err->msg - n, ": %s", strerror(errnum));
	return status;
}
