/*
 * fm_error.h - the suite's exit statuses and the error record that library
 * calls fill in.  Library code never prints or exits: it returns one of the
 * FM_E* statuses and, through fm_err_set(), a one-line reason that the tool
 * prints as "tool: subject: reason".
 */
#ifndef FM_ERROR_H
#define FM_ERROR_H

#include <stddef.h>

/* Exit statuses, shared by every tool and documented in fm(7). */
enum fm_status {
	FM_OK = 0,        /* success */
	FM_ENORESULT = 1, /* ran fine, produced nothing (e.g. empty input) */
	FM_EUSAGE = 2,    /* bad option or argument */
	FM_EDATA = 3,     /* bad input data: corrupt, truncated, unsupported */
	FM_EIO = 4,       /* I/O or system error: open, read, write, memory */
	FM_EDEVICE = 5,   /* GPU not usable or failing */
};

/* The reason for the last failure; the caller owns it (usually on its stack). */
struct fm_err {
	int status;      /* an enum fm_status, FM_OK when nothing failed */
	char msg[320];   /* lowercase, no final period, no subject prefix */
};

/* Records status and a printf-style reason; returns status for "return fm_err_set(...)". */
int fm_err_set(struct fm_err *err, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Like fm_err_set, with strerror(errnum) appended after ": ". */
int fm_err_errno(struct fm_err *err, int status, int errnum, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

#endif
