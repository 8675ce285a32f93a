/*
 * io.c - atomic outputs, SIGPIPE and signal clean-up, stdout checks and the
 * progress line.  Temporary files are registered in a small fixed table so
 * that a signal handler can unlink them (unlink is async-signal-safe).
 */
#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_PENDING 16
static char *volatile pending[MAX_PENDING];

static void
pending_add(char *tmp)
{
	for (int i = 0; i < MAX_PENDING; i++)
		if (pending[i] == NULL) {
			pending[i] = tmp;
			return;
		}
}

static void
pending_remove(const char *tmp)
{
	for (int i = 0; i < MAX_PENDING; i++)
		if (pending[i] == tmp)
			pending[i] = NULL;
}

static void
pending_unlink_all(void)
{
	for (int i = 0; i < MAX_PENDING; i++)
		if (pending[i] != NULL)
			unlink(pending[i]);
}

static void
on_fatal_signal(int sig)
{
	pending_unlink_all();
	signal(sig, SIG_DFL);
	raise(sig);
}

void
fm_io_init(void)
{
	struct sigaction sa;

	signal(SIGPIPE, SIG_IGN);
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_fatal_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
}

void
fm_exit_pipe(void)
{
	pending_unlink_all();
	signal(SIGPIPE, SIG_DFL);
	raise(SIGPIPE);
	_exit(128 + SIGPIPE);
}

int
fm_out_open(struct fm_out *o, const char *path, struct fm_err *err)
{
	struct stat st;
	size_t n;
	int fd;
	mode_t mask;

	memset(o, 0, sizeof *o);
	if (path == NULL || strcmp(path, "-") == 0) {
		o->path = "-";
		o->f = stdout;
		return FM_OK;
	}
	o->path = path;
	/*
	 * FIFOs, terminals and devices (/dev/null, /dev/full) are written in
	 * place, and so are symbolic links: renaming onto a link would replace
	 * the link, and /dev/stdout is one.
	 */
	if (lstat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
		if (S_ISLNK(st.st_mode) && stat(path, &st) == 0 && S_ISDIR(st.st_mode))
			return fm_err_set(err, FM_EIO, "is a directory");
		if (S_ISDIR(st.st_mode))
			return fm_err_set(err, FM_EIO, "is a directory");
		if ((o->f = fopen(path, "wb")) == NULL)
			return fm_err_errno(err, FM_EIO, errno, "cannot open for writing");
		return FM_OK;
	}
	n = strlen(path) + sizeof ".tmpXXXXXX";
	if ((o->tmp = malloc(n)) == NULL)
		return fm_err_errno(err, FM_EIO, errno, "cannot allocate");
	snprintf(o->tmp, n, "%s.tmpXXXXXX", path);
	if ((fd = mkstemp(o->tmp)) < 0) {
		int e = errno;
		free(o->tmp);
		o->tmp = NULL;
		return fm_err_errno(err, FM_EIO, e, "cannot create");
	}
	pending_add(o->tmp);
	/* mkstemp makes 0600; give the file the mode a plain open() would. */
	mask = umask(0);
	umask(mask);
	fchmod(fd, 0666 & ~mask);
	if ((o->f = fdopen(fd, "wb")) == NULL) {
		int e = errno;
		close(fd);
		fm_out_abort(o);
		return fm_err_errno(err, FM_EIO, e, "cannot open for writing");
	}
	return FM_OK;
}

int
fm_out_commit(struct fm_out *o, struct fm_err *err)
{
	int e = 0;

	if (o->f == stdout)
		return fflush(stdout) == 0 && !ferror(stdout) ? FM_OK :
		    fm_err_errno(err, FM_EIO, errno ? errno : EIO, "write error");
	if (fflush(o->f) != 0 || ferror(o->f))
		e = errno ? errno : EIO;
	else if (o->tmp != NULL && fsync(fileno(o->f)) != 0 && errno != EINVAL)
		e = errno;
	if (fclose(o->f) != 0 && e == 0)
		e = errno;
	o->f = NULL;
	if (e != 0) {
		fm_out_abort(o);
		return fm_err_errno(err, FM_EIO, e, "write error");
	}
	if (o->tmp != NULL) {
		if (rename(o->tmp, o->path) != 0) {
			e = errno;
			fm_out_abort(o);
			return fm_err_errno(err, FM_EIO, e, "cannot rename temporary file into place");
		}
		pending_remove(o->tmp);
		free(o->tmp);
		o->tmp = NULL;
	}
	return FM_OK;
}

void
fm_out_abort(struct fm_out *o)
{
	if (o->f != NULL && o->f != stdout)
		fclose(o->f);
	o->f = NULL;
	if (o->tmp != NULL) {
		unlink(o->tmp);
		pending_remove(o->tmp);
		free(o->tmp);
		o->tmp = NULL;
	}
}

int
fm_stdout_close(struct fm_err *err)
{
	int bad = fflush(stdout) != 0 || ferror(stdout);
	int e = errno;

	if (fclose(stdout) != 0 && !bad) {
		bad = 1;
		e = errno;
	}
	if (bad) {
		if (e == EPIPE)
			fm_exit_pipe();
		return fm_err_errno(err, FM_EIO, e ? e : EIO, "write error");
	}
	return FM_OK;
}

double
fm_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void
fm_progress_init(struct fm_progress *p, const char *tool)
{
	p->on = isatty(STDERR_FILENO);
	p->last = 0;
	p->tool = tool;
}

void
fm_progress_update(struct fm_progress *p, const char *fmt, ...)
{
	va_list ap;
	double now;

	if (!p->on)
		return;
	now = fm_now();
	if (now - p->last < 0.1)
		return;
	p->last = now;
	fprintf(stderr, "\r%s: ", p->tool);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\033[K", stderr);
}

void
fm_progress_done(struct fm_progress *p)
{
	if (p->on && p->last != 0)
		fputs("\r\033[K", stderr);
	p->last = 0;
}

void
fm_report(const char *tool, const char *subject, const struct fm_err *err)
{
	if (subject != NULL)
		fprintf(stderr, "%s: %s: %s\n", tool, subject, err->msg);
	else
		fprintf(stderr, "%s: %s\n", tool, err->msg);
}

void
fm_warn(const char *tool, const char *subject, const char *fmt, ...)
{
	va_list ap;

	if (subject != NULL)
		fprintf(stderr, "%s: %s: ", tool, subject);
	else
		fprintf(stderr, "%s: ", tool);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}
