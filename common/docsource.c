/*
 * docsource.c - files, standard input and archives as a stream of documents.
 *
 * To tell an archive from plain text without seeking, the input is offered
 * to libarchive through a read callback that records every byte it hands
 * over.  If libarchive recognises no archive, the recording is replayed and
 * the input is read as one text document, so nothing read while probing is
 * lost, even from a pipe.  Only formats that can be read as a stream, and
 * filters known by their magic bytes, are enabled; "raw" is added only when a compression filter was recognised
 * (a lone notes.txt.gz), because raw would otherwise accept any text.
 */
#include "docsource.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BLOCK (64 * 1024)

enum mode { MODE_TEXT, MODE_ARCHIVE, MODE_COMPRESSED };

struct fm_docsrc {
	int fd;
	const char *path;
	enum mode mode;
	struct archive *ar;
	/* Bytes read from fd while probing, replayed to the next reader. */
	unsigned char *rec;
	size_t rec_len, rec_cap, rec_pos;
	bool recording;
	int read_errno;         /* errno of a failed read() inside the callback */
	unsigned char blk[BLOCK];
	int docs_started;       /* text and compressed modes hold one document */
	char *name;
};

/* Serves the recording first, then the descriptor; records while probing. */
static ssize_t
src_read(struct fm_docsrc *s, void *buf, size_t cap)
{
	ssize_t n;

	if (s->rec_pos < s->rec_len) {
		size_t k = s->rec_len - s->rec_pos;
		if (k > cap)
			k = cap;
		memcpy(buf, s->rec + s->rec_pos, k);
		s->rec_pos += k;
		return (ssize_t)k;
	}
	do
		n = read(s->fd, buf, cap);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		s->read_errno = errno;
		return -1;
	}
	if (s->recording && n > 0) {
		if (s->rec_len + (size_t)n > s->rec_cap) {
			size_t cap2 = (s->rec_len + (size_t)n) * 2;
			unsigned char *p = realloc(s->rec, cap2);
			if (p == NULL) {
				s->read_errno = ENOMEM;
				return -1;
			}
			s->rec = p;
			s->rec_cap = cap2;
		}
		memcpy(s->rec + s->rec_len, buf, (size_t)n);
		s->rec_len += (size_t)n;
		s->rec_pos = s->rec_len;
	}
	return n;
}

static la_ssize_t
ar_read_cb(struct archive *a, void *ud, const void **buf)
{
	struct fm_docsrc *s = ud;
	ssize_t n = src_read(s, s->blk, sizeof s->blk);

	if (n < 0) {
		archive_set_error(a, s->read_errno, "read error");
		return -1;
	}
	*buf = s->blk;
	return n;
}

/* Opens the archive reader over the replayed input; raw adds the "raw" format. */
static struct archive *
ar_open(struct fm_docsrc *s, bool raw, int *rc)
{
	struct archive *a = archive_read_new();

	if (a == NULL) {
		*rc = ARCHIVE_FATAL;
		return NULL;
	}
	/*
	 * Only filters that recognise their input from a few magic bytes: the
	 * uuencode bidder would read up to 128 KiB of plain text looking for a
	 * "begin" line, which holds up a pipe that is still being written.
	 */
	archive_read_support_filter_gzip(a);
	archive_read_support_filter_bzip2(a);
	archive_read_support_filter_xz(a);
	archive_read_support_filter_lzma(a);
	archive_read_support_filter_zstd(a);
	archive_read_support_filter_lz4(a);
	archive_read_support_filter_lzip(a);
	archive_read_support_filter_compress(a);
	if (raw) {
		archive_read_support_format_raw(a);
	} else {
		archive_read_support_format_tar(a);
		archive_read_support_format_cpio(a);
		archive_read_support_format_zip_streamable(a);
		archive_read_support_format_ar(a);
	}
	s->rec_pos = 0;
	*rc = archive_read_open(a, s, NULL, ar_read_cb, NULL);
	return a;
}

static bool
unrecognized(struct archive *a)
{
	const char *e = archive_error_string(a);

	return e != NULL && strstr(e, "Unrecognized archive format") != NULL;
}

static int
probe(struct fm_docsrc *s, struct fm_err *err)
{
	int rc;
	struct archive *a;
	bool compressed;

	s->recording = true;
	a = ar_open(s, false, &rc);
	if (a == NULL)
		return fm_err_set(err, FM_EIO, "cannot allocate archive reader");
	if (rc == ARCHIVE_OK) {
		s->ar = a;
		s->mode = MODE_ARCHIVE;
		goto done;
	}
	if (s->read_errno != 0) {
		archive_read_free(a);
		return fm_err_errno(err, FM_EIO, s->read_errno, "read error");
	}
	if (!unrecognized(a)) {
		fm_err_set(err, FM_EDATA, "damaged archive: %s", archive_error_string(a));
		archive_read_free(a);
		return FM_EDATA;
	}
	compressed = archive_filter_count(a) > 1;
	archive_read_free(a);
	if (compressed) {
		a = ar_open(s, true, &rc);
		if (a == NULL)
			return fm_err_set(err, FM_EIO, "cannot allocate archive reader");
		if (rc != ARCHIVE_OK) {
			fm_err_set(err, FM_EDATA, "damaged compressed file: %s", archive_error_string(a));
			archive_read_free(a);
			return FM_EDATA;
		}
		s->ar = a;
		s->mode = MODE_COMPRESSED;
		goto done;
	}
	s->mode = MODE_TEXT;
	s->rec_pos = 0;
done:
	/* From here on the recording is only replayed, never extended. */
	s->recording = false;
	return FM_OK;
}

struct fm_docsrc *
fm_docsrc_open(const char *path, struct fm_err *err)
{
	struct fm_docsrc *s;
	struct stat st;

	if ((s = calloc(1, sizeof *s)) == NULL) {
		fm_err_errno(err, FM_EIO, errno, "cannot allocate");
		return NULL;
	}
	s->path = path;
	if (strcmp(path, "-") == 0) {
		s->fd = STDIN_FILENO;
	} else if ((s->fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
		fm_err_errno(err, FM_EIO, errno, "cannot open");
		free(s);
		return NULL;
	}
	if (fstat(s->fd, &st) == 0 && S_ISDIR(st.st_mode)) {
		fm_err_set(err, FM_EIO, "is a directory");
		fm_docsrc_close(s);
		return NULL;
	}
	if (probe(s, err) != FM_OK) {
		fm_docsrc_close(s);
		return NULL;
	}
	return s;
}

bool
fm_docsrc_is_archive(const struct fm_docsrc *s)
{
	return s->mode == MODE_ARCHIVE;
}

int
fm_docsrc_next(struct fm_docsrc *s, const char **name, struct fm_err *err)
{
	struct archive_entry *e;
	int rc;

	if (s->mode != MODE_ARCHIVE) {
		if (s->docs_started++)
			return FM_ENORESULT;
		if (s->mode == MODE_COMPRESSED) {
			/* The raw format needs its header read before data. */
			if (archive_read_next_header(s->ar, &e) != ARCHIVE_OK)
				return fm_err_set(err, FM_EDATA, "damaged compressed file: %s",
				    archive_error_string(s->ar));
		}
		*name = s->path;
		return FM_OK;
	}
	for (;;) {
		rc = archive_read_next_header(s->ar, &e);
		if (rc == ARCHIVE_EOF)
			return FM_ENORESULT;
		if (rc < ARCHIVE_WARN) {
			if (s->read_errno)
				return fm_err_errno(err, FM_EIO, s->read_errno, "read error");
			return fm_err_set(err, FM_EDATA, "damaged archive: %s", archive_error_string(s->ar));
		}
		if (archive_entry_filetype(e) != AE_IFREG)
			continue;
		free(s->name);
		if ((s->name = strdup(archive_entry_pathname(e) ? archive_entry_pathname(e) : "?")) == NULL)
			return fm_err_errno(err, FM_EIO, errno, "cannot allocate");
		*name = s->name;
		return FM_OK;
	}
}

ssize_t
fm_docsrc_read(struct fm_docsrc *s, void *buf, size_t cap, struct fm_err *err)
{
	la_ssize_t n;

	if (s->mode == MODE_TEXT) {
		ssize_t r = src_read(s, buf, cap);
		if (r < 0)
			fm_err_errno(err, FM_EIO, s->read_errno, "read error");
		return r;
	}
	n = archive_read_data(s->ar, buf, cap);
	if (n < 0) {
		if (s->read_errno)
			fm_err_errno(err, FM_EIO, s->read_errno, "read error");
		else
			fm_err_set(err, FM_EDATA, "damaged archive: %s", archive_error_string(s->ar));
		return -1;
	}
	return n;
}

void
fm_docsrc_close(struct fm_docsrc *s)
{
	if (s == NULL)
		return;
	if (s->ar != NULL)
		archive_read_free(s->ar);
	if (s->fd > STDIN_FILENO)
		close(s->fd);
	free(s->rec);
	free(s->name);
	free(s);
}
