/*
 * recstream.c - the record framing, sticky-failure writer and streaming
 * reader that the chunk file and the embedding file share (recstream.h), so
 * that a truncation, a flipped byte or a failed write reads the same in both.
 * The reader never seeks: it reads pipes.
 */
#include "recstream.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "checksum.h"

void
fm_put16(unsigned char *p, uint16_t v)
{
	p[0] = v & 0xff;
	p[1] = v >> 8;
}

void
fm_put32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (v >> (8 * i)) & 0xff;
}

void
fm_put64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (v >> (8 * i)) & 0xff;
}

uint16_t
fm_get16(const unsigned char *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

uint32_t
fm_get32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	    (uint32_t)p[3] << 24;
}

uint64_t
fm_get64(const unsigned char *p)
{
	return (uint64_t)fm_get32(p) | (uint64_t)fm_get32(p + 4) << 32;
}

/* Writer. */

/* Writes n bytes, hashing them; errno survives a failure for the caller to see. */
static int
w_put(struct fm_recw *w, const void *p, size_t n, uint32_t *crc, struct fm_err *err)
{
	if (n > 0 && fwrite(p, 1, n, w->f) != n) {
		int e = errno ? errno : EIO;

		w->failed = true;
		fm_err_errno(err, FM_EIO, e, "write error");
		errno = e;
		return FM_EIO;
	}
	w->hash = fm_fnv64(w->hash, p, n);
	if (crc != NULL)
		*crc = fm_crc32c(*crc, p, n);
	return FM_OK;
}

int
fm_recw_open(struct fm_recw *w, FILE *f, const struct fm_recfmt *fmt, unsigned char *hdr,
    size_t n, struct fm_err *err)
{
	memset(w, 0, sizeof *w);
	w->f = f;
	w->fmt = fmt;
	w->hash = FM_FNV64_INIT;
	memcpy(hdr, fmt->magic, 8);
	fm_put32(hdr + 8, fmt->version);
	fm_put32(hdr + 12, (uint32_t)n);
	fm_put32(hdr + n - 4, fm_crc32c(0, hdr, n - 4));
	errno = 0;
	return w_put(w, hdr, n, NULL, err);
}

int
fm_recw_usable(const struct fm_recw *w, struct fm_err *err)
{
	if (w->failed)
		return fm_err_set(err, FM_EIO, "%s unusable after a write error", w->fmt->name);
	if (w->finished)
		return fm_err_set(err, FM_EDATA, "%s already finished", w->fmt->name);
	return FM_OK;
}

int
fm_recw_record(struct fm_recw *w, uint32_t tag, const struct fm_recpart *parts, int nparts,
    struct fm_err *err)
{
	unsigned char head[8], tail[4];
	uint32_t crc = 0;
	size_t len = 0;

	for (int i = 0; i < nparts; i++)
		len += parts[i].n;
	fm_put32(head, tag);
	fm_put32(head + 4, (uint32_t)len);
	errno = 0;
	if (w_put(w, head, 8, &crc, err) != FM_OK)
		return FM_EIO;
	for (int i = 0; i < nparts; i++)
		if (w_put(w, parts[i].p, parts[i].n, &crc, err) != FM_OK)
			return FM_EIO;
	fm_put32(tail, crc);
	return w_put(w, tail, 4, NULL, err);
}

int
fm_recw_finish(struct fm_recw *w, uint32_t tag, const struct fm_recpart *parts, int nparts,
    struct fm_err *err)
{
	int st;

	if ((st = fm_recw_record(w, tag, parts, nparts, err)) != FM_OK)
		return st;
	errno = 0;
	if (fflush(w->f) != 0) {
		int en = errno ? errno : EIO;

		w->failed = true;
		fm_err_errno(err, FM_EIO, en, "write error");
		errno = en;
		return FM_EIO;
	}
	w->finished = true;
	return FM_OK;
}

/* Reader. */

int
fm_recr_open(struct fm_recr *r, FILE *f, const struct fm_recfmt *fmt, unsigned char *hdr,
    uint32_t *hlenp, struct fm_err *err)
{
	size_t got;
	uint32_t version, hlen;

	memset(r, 0, sizeof *r);
	r->f = f;
	r->fmt = fmt;
	errno = 0;
	got = fread(hdr, 1, 16, f);
	if (got < 16 && ferror(f))
		return fm_err_errno(err, FM_EIO, errno ? errno : EIO, "read error");
	if (got == 0)
		return fm_err_set(err, FM_EDATA, "empty input, not %s", fmt->a_name);
	if (memcmp(hdr, fmt->magic, got < 8 ? got : 8) != 0)
		return fm_err_set(err, FM_EDATA, "not %s (bad magic)", fmt->a_name);
	if (got < 16)
		return fm_err_set(err, FM_EDATA, "truncated header");
	/* The version comes before the checksum: a newer header may differ entirely. */
	version = fm_get32(hdr + 8);
	if (version > fmt->version)
		return fm_err_set(err, FM_EDATA, "unsupported %s version %" PRIu32, fmt->name,
		    version);
	if (version == 0)
		return fm_err_set(err, FM_EDATA, "invalid %s version 0", fmt->name);
	hlen = fm_get32(hdr + 12);
	if (hlen < fmt->hdr_min || hlen > fmt->hdr_max)
		return fm_err_set(err, FM_EDATA, "header length %" PRIu32 " out of range %"
		    PRIu32 "..%" PRIu32, hlen, fmt->hdr_min, fmt->hdr_max);
	errno = 0;
	got = fread(hdr + 16, 1, hlen - 16, f);
	if (got < hlen - 16 && ferror(f))
		return fm_err_errno(err, FM_EIO, errno ? errno : EIO, "read error");
	if (got < hlen - 16)
		return fm_err_set(err, FM_EDATA, "truncated header");
	if (fm_crc32c(0, hdr, hlen - 4) != fm_get32(hdr + hlen - 4))
		return fm_err_set(err, FM_EDATA, "header checksum mismatch");
	r->hash = fm_fnv64(FM_FNV64_INIT, hdr, hlen);
	*hlenp = hlen;
	return FM_OK;
}

int
fm_recr_usable(struct fm_recr *r, struct fm_err *err)
{
	if (r->state == FM_RECR_DONE) {
		r->state = FM_RECR_FAILED;
		return fm_err_set(err, FM_EDATA, "read past the end record");
	}
	if (r->state == FM_RECR_FAILED)
		return fm_err_set(err, FM_EDATA, "%s reader stopped at an earlier error",
		    r->fmt->name);
	return FM_OK;
}

int
fm_recr_fail(struct fm_recr *r, const struct fm_err *e, struct fm_err *err)
{
	r->state = FM_RECR_FAILED;
	return fm_err_set(err, e->status, "%s at record %" PRIu64, e->msg, r->recno);
}

int
fm_recr_read(struct fm_recr *r, void *p, size_t n, struct fm_err *err)
{
	size_t got;

	errno = 0;
	got = fread(p, 1, n, r->f);
	if (got == n)
		return FM_OK;
	r->state = FM_RECR_FAILED;
	if (ferror(r->f))
		return fm_err_errno(err, FM_EIO, errno ? errno : EIO,
		    "read error at record %" PRIu64, r->recno);
	return fm_err_set(err, FM_EDATA, "truncated at record %" PRIu64, r->recno);
}

/*
 * The buffer grows only as data arrives, so a truncated file claiming a huge
 * record allocates about what it holds (at most 64 KiB more), not what it claims.
 */
int
fm_recr_read_var(struct fm_recr *r, size_t n, struct fm_err *err)
{
	size_t got = 0;
	int st;

	for (;;) {
		size_t lim = r->cap < n ? r->cap : n;
		size_t ncap;
		unsigned char *nb;

		if (got < lim) {
			if ((st = fm_recr_read(r, r->buf + got, lim - got, err)) != FM_OK)
				return st;
			got = lim;
			continue;
		}
		if (got == n && r->cap > n)
			return FM_OK;
		ncap = r->cap < 65536 ? 65536 : 2 * r->cap;
		if (ncap > n + 1)
			ncap = n + 1;
		if ((nb = realloc(r->buf, ncap)) == NULL) {
			r->state = FM_RECR_FAILED;
			return fm_err_errno(err, FM_EIO, ENOMEM, "record %" PRIu64, r->recno);
		}
		r->buf = nb;
		r->cap = ncap;
	}
}

int
fm_recr_head(struct fm_recr *r, uint32_t *tag, uint32_t *len, struct fm_err *err)
{
	int st;

	if ((st = fm_recr_read(r, r->head, 8, err)) != FM_OK)
		return st;
	*tag = fm_get32(r->head);
	*len = fm_get32(r->head + 4);
	return FM_OK;
}

int
fm_recr_check(struct fm_recr *r, const struct fm_recpart *parts, int nparts,
    struct fm_err *err)
{
	struct fm_err e;
	uint32_t crc;
	int st;

	if ((st = fm_recr_read(r, r->tail, 4, err)) != FM_OK)
		return st;
	crc = fm_crc32c(0, r->head, 8);
	for (int i = 0; i < nparts; i++)
		crc = fm_crc32c(crc, parts[i].p, parts[i].n);
	if (crc != fm_get32(r->tail)) {
		fm_err_set(&e, FM_EDATA, "checksum mismatch");
		return fm_recr_fail(r, &e, err);
	}
	return FM_OK;
}

void
fm_recr_accept(struct fm_recr *r, const struct fm_recpart *parts, int nparts)
{
	r->recno++;
	r->hash = fm_fnv64(r->hash, r->head, 8);
	for (int i = 0; i < nparts; i++)
		r->hash = fm_fnv64(r->hash, parts[i].p, parts[i].n);
	r->hash = fm_fnv64(r->hash, r->tail, 4);
}

/* Nothing may follow END: a concatenation or a stray write is an error. */
int
fm_recr_finish(struct fm_recr *r, struct fm_err *err)
{
	int ch;

	r->recno++;
	errno = 0;
	ch = fgetc(r->f);
	if (ch != EOF) {
		r->state = FM_RECR_FAILED;
		return fm_err_set(err, FM_EDATA, "trailing data after end record");
	}
	if (ferror(r->f)) {
		r->state = FM_RECR_FAILED;
		return fm_err_errno(err, FM_EIO, errno ? errno : EIO, "read error after end record");
	}
	r->state = FM_RECR_DONE;
	return FM_OK;
}

void
fm_recr_free(struct fm_recr *r)
{
	free(r->buf);
	r->buf = NULL;
	r->cap = 0;
}
