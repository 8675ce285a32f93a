/*
 * io.h - how every tool writes its output and ends: outputs go to a
 * temporary file beside the target and are renamed onto it only when
 * complete (never a half-written file), standard output is checked for write
 * errors at exit (a full disk is a failure, not silence), and a closed pipe
 * downstream ends the tool quietly with the conventional SIGPIPE status.
 * Also the progress line shown on stderr when it is a terminal.
 *
 * Ownership: struct fm_out is the caller's (usually on its stack); it owns
 * the FILE and the temporary file until fm_out_commit() or fm_out_abort().
 */
#ifndef FM_IO_H
#define FM_IO_H

#include <stdbool.h>
#include <stdio.h>

#include "fm_error.h"

struct fm_out {
	FILE *f;
	const char *path;   /* the target as given, "-" for standard output */
	char *tmp;          /* temporary file renamed onto path at commit, or NULL */
};

/*
 * Opens path for writing ("-" or NULL: standard output).  A regular file is
 * written through a temporary file in the same directory; a FIFO or device is
 * written directly.  FM_EIO on failure.
 */
int fm_out_open(struct fm_out *o, const char *path, struct fm_err *err);

/* Flushes, syncs and closes, then renames the temporary file onto path. */
int fm_out_commit(struct fm_out *o, struct fm_err *err);

/* Closes and removes the temporary file; the target is left as it was. */
void fm_out_abort(struct fm_out *o);

/*
 * Process set-up for a tool: SIGPIPE is ignored so that a write to a closed
 * pipe returns EPIPE (and fm_exit_pipe() can clean up first), and SIGINT,
 * SIGTERM and SIGHUP remove pending temporary files before the tool dies.
 */
void fm_io_init(void);

/* Removes pending temporary files and ends the process as SIGPIPE would. */
void fm_exit_pipe(void) __attribute__((noreturn));

/* Flushes and closes standard output; FM_EIO with the reason on failure. */
int fm_stdout_close(struct fm_err *err);

/* Progress on stderr, only when stderr is a terminal; at most ten updates a second. */
struct fm_progress {
	bool on;
	double last;
	const char *tool;
};
void fm_progress_init(struct fm_progress *p, const char *tool);
void fm_progress_update(struct fm_progress *p, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void fm_progress_done(struct fm_progress *p);

/* Seconds from a monotonic clock. */
double fm_now(void);

/* Prints "tool: subject: reason" (or "tool: reason" when subject is NULL) on stderr. */
void fm_report(const char *tool, const char *subject, const struct fm_err *err);
void fm_warn(const char *tool, const char *subject, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
