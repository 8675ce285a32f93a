/*
 * embedfile.c - writer and streaming reader of the embedding file (.fme),
 * whose byte layout and validity rules are specified in fm-formats(5).
 *
 * As in chunkfile.c, both sides share one set of row rules (row_check), so
 * a file the writer accepts is one the reader accepts.  A row record's size
 * follows from the header alone, so the reader allocates its one row buffer
 * when it opens the file and never trusts a length it has not predicted.
 */
#include "embedfile.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "checksum.h"
#include "gguf.h"

static const unsigned char magic[8] = { 0x89, 'F', 'M', 'E', '\r', '\n', 0x1a, '\n' };

#define TAG(a, b, c, d) \
	((uint32_t)(a) | (uint32_t)(b) << 8 | (uint32_t)(c) << 16 | (uint32_t)(d) << 24)
#define TAG_EROW TAG('E', 'R', 'O', 'W')
#define TAG_END  TAG('E', 'N', 'D', ' ')

/* Header: 52 fixed bytes, the encoder name, the CRC. */
#define HDR_FIXED 52
#define HDR_MIN (HDR_FIXED + 2 + 4)
#define HDR_MAX (HDR_FIXED + 2 + FM_EMBED_MAX_NAME + 4)
#define END_LEN 32

/* A row's sum of squares must be 0 or within this of 1 (f16 rounding is far inside). */
#define NORM_TOL (1.0 / 256)

struct fm_embedw {
	FILE *f;
	struct fm_embed_header h;
	uint64_t next_id;
	uint64_t n_rows;
	uint64_t hash;          /* FNV-1a of every byte written so far */
	unsigned char *buf;     /* one row payload, (8 + dim * size) */
	float *check;           /* the row as the reader will see it, (dim) */
	size_t row_len;
	bool failed;
	bool finished;
};

enum { R_OPEN, R_DONE, R_FAILED };

struct fm_embedr {
	FILE *f;
	struct fm_embed_header h;
	uint64_t next_id;
	uint64_t n_rows;
	uint64_t hash;          /* FNV-1a of every byte read before END */
	uint64_t recno;
	int state;
	unsigned char *buf;     /* one row or END payload, (max(8 + dim * size, 32)) */
	size_t row_len;
	float *vec;             /* the row as floats, (dim) */
};

static void
put16(unsigned char *p, uint16_t v)
{
	p[0] = v & 0xff;
	p[1] = v >> 8;
}

static void
put32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (v >> (8 * i)) & 0xff;
}

static void
put64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (v >> (8 * i)) & 0xff;
}

static uint16_t
get16(const unsigned char *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t
get32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	    (uint32_t)p[3] << 24;
}

static uint64_t
get64(const unsigned char *p)
{
	return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

const char *
fm_embed_dtype_name(unsigned dtype)
{
	return dtype == FM_EMBED_F32 ? "f32" : dtype == FM_EMBED_F16 ? "f16" : "?";
}

const char *
fm_embed_pooling_name(unsigned pooling)
{
	static const char *const names[] = { "none", "mean", "cls" };

	return pooling < 3 ? names[pooling] : "?";
}

const char *
fm_embed_source_name(unsigned source)
{
	return source == FM_SRC_CHUNKS ? "chunks" : source == FM_SRC_QUERIES ? "queries" : "?";
}

unsigned
fm_embed_dtype_size(unsigned dtype)
{
	return dtype == FM_EMBED_F32 ? 4 : dtype == FM_EMBED_F16 ? 2 : 0;
}

int
fm_embed_header_check(const struct fm_embed_header *h, struct fm_err *err)
{
	size_t nl = strnlen(h->encoder_name, sizeof h->encoder_name);

	if (h->dim == 0 || h->dim > FM_EMBED_MAX_DIM)
		return fm_err_set(err, FM_EDATA, "dimension %" PRIu32 " out of range 1..%d",
		    h->dim, FM_EMBED_MAX_DIM);
	if (fm_embed_dtype_size(h->dtype) == 0)
		return fm_err_set(err, FM_EDATA, "unknown value type %u", h->dtype);
	if (h->pooling > FM_POOL_CLS)
		return fm_err_set(err, FM_EDATA, "unknown pooling %u", h->pooling);
	if (h->source > FM_SRC_QUERIES)
		return fm_err_set(err, FM_EDATA, "unknown source %" PRIu32, h->source);
	if (h->shard_count == 0 || h->shard_index >= h->shard_count)
		return fm_err_set(err, FM_EDATA, "shard %" PRIu32 "/%" PRIu32 " invalid",
		    h->shard_index, h->shard_count);
	if (nl == sizeof h->encoder_name)
		return fm_err_set(err, FM_EDATA, "encoder name longer than %d bytes",
		    FM_EMBED_MAX_NAME);
	return FM_OK;
}

uint64_t
fm_embed_shard_rows(uint64_t n_source, uint32_t shard_index, uint32_t shard_count)
{
	if (shard_count == 0 || n_source <= shard_index)
		return 0;
	return (n_source - shard_index - 1) / shard_count + 1;
}

/*
 * The rules every row obeys, on its stored bytes p (dim values of the
 * header's dtype), which are also converted into vec.
 */
static int
row_check(const struct fm_embed_header *h, uint64_t expect, uint64_t id,
    const unsigned char *p, float *vec, struct fm_err *err)
{
	double ss = 0;

	if (id != expect)
		return fm_err_set(err, FM_EDATA, "row id %" PRIu64 " out of sequence (expected %"
		    PRIu64 ")", id, expect);
	for (uint32_t i = 0; i < h->dim; i++) {
		float x;

		if (h->dtype == FM_EMBED_F32) {
			uint32_t u = get32(p + 4 * (size_t)i);
			memcpy(&x, &u, 4);
		} else {
			x = fm_f16_to_f32(get16(p + 2 * (size_t)i));
		}
		if (!isfinite(x))
			return fm_err_set(err, FM_EDATA, "row %" PRIu64 " value %" PRIu32
			    " is not finite", id, i);
		vec[i] = x;
		ss += (double)x * x;
	}
	if (ss != 0 && fabs(ss - 1) > NORM_TOL)
		return fm_err_set(err, FM_EDATA, "row %" PRIu64 " has length %.6g, not 1",
		    id, sqrt(ss));
	return FM_OK;
}

static int
end_check(const struct fm_embed_header *h, uint64_t n_rows, const struct fm_embed_end *e,
    struct fm_err *err)
{
	uint64_t want = fm_embed_shard_rows(e->n_source, h->shard_index, h->shard_count);

	if (e->n_rows != n_rows)
		return fm_err_set(err, FM_EDATA, "end record counts %" PRIu64 " rows, file has %"
		    PRIu64, e->n_rows, n_rows);
	if (n_rows != want)
		return fm_err_set(err, FM_EDATA, "%" PRIu64 " rows, but shard %" PRIu32 "/%" PRIu32
		    " of %" PRIu64 " has %" PRIu64, n_rows, h->shard_index, h->shard_count,
		    e->n_source, want);
	return FM_OK;
}

/* Writer. */

static int
w_put(struct fm_embedw *w, const void *p, size_t n, uint32_t *crc, struct fm_err *err)
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

static int
w_record(struct fm_embedw *w, uint32_t tag, const unsigned char *payload, size_t n,
    struct fm_err *err)
{
	unsigned char head[8], tail[4];
	uint32_t crc = 0;

	put32(head, tag);
	put32(head + 4, (uint32_t)n);
	errno = 0;
	if (w_put(w, head, 8, &crc, err) != FM_OK || w_put(w, payload, n, &crc, err) != FM_OK)
		return FM_EIO;
	put32(tail, crc);
	return w_put(w, tail, 4, NULL, err);
}

static int
w_usable(const struct fm_embedw *w, struct fm_err *err)
{
	if (w->failed)
		return fm_err_set(err, FM_EIO, "embedding file unusable after a write error");
	if (w->finished)
		return fm_err_set(err, FM_EDATA, "embedding file already finished");
	return FM_OK;
}

struct fm_embedw *
fm_embedw_open(FILE *f, const struct fm_embed_header *h, struct fm_err *err)
{
	struct fm_embedw *w;
	unsigned char hdr[HDR_MAX];
	size_t nl, n;

	if (h->version != 0 && h->version != FM_EMBED_VERSION) {
		fm_err_set(err, FM_EDATA, "cannot write embedding file version %" PRIu32,
		    h->version);
		return NULL;
	}
	if (fm_embed_header_check(h, err) != FM_OK)
		return NULL;
	if ((w = calloc(1, sizeof *w)) == NULL) {
		fm_err_errno(err, FM_EIO, ENOMEM, "embedding file");
		return NULL;
	}
	w->f = f;
	w->h = *h;
	w->h.version = FM_EMBED_VERSION;
	w->next_id = h->shard_index;
	w->hash = FM_FNV64_INIT;
	w->row_len = 8 + (size_t)h->dim * fm_embed_dtype_size(h->dtype);
	if ((w->buf = malloc(w->row_len)) == NULL ||
	    (w->check = malloc(h->dim * sizeof *w->check)) == NULL) {
		fm_embedw_free(w);
		fm_err_errno(err, FM_EIO, ENOMEM, "embedding file");
		return NULL;
	}

	nl = strlen(h->encoder_name);
	n = HDR_FIXED + 2 + nl + 4;
	memcpy(hdr, magic, 8);
	put32(hdr + 8, FM_EMBED_VERSION);
	put32(hdr + 12, (uint32_t)n);
	put32(hdr + 16, h->dim);
	put16(hdr + 20, h->dtype);
	put16(hdr + 22, h->pooling);
	put32(hdr + 24, h->source);
	put32(hdr + 28, h->shard_index);
	put32(hdr + 32, h->shard_count);
	put64(hdr + 36, h->encoder_fingerprint);
	put64(hdr + 44, h->tok_fingerprint);
	put16(hdr + 52, (uint16_t)nl);
	memcpy(hdr + 54, h->encoder_name, nl);
	put32(hdr + n - 4, fm_crc32c(0, hdr, n - 4));
	errno = 0;
	if (w_put(w, hdr, n, NULL, err) != FM_OK) {
		int e = errno;

		fm_embedw_free(w);
		errno = e;
		return NULL;
	}
	return w;
}

uint64_t
fm_embedw_next_id(const struct fm_embedw *w)
{
	return w->next_id;
}

int
fm_embedw_row(struct fm_embedw *w, uint64_t id, const float *v, struct fm_err *err)
{
	unsigned char *p = w->buf + 8;
	int st;

	if ((st = w_usable(w, err)) != FM_OK)
		return st;
	if (w->next_id < w->h.shard_index) {
		/* next_id wrapped past 2^64: no id can follow. */
		return fm_err_set(err, FM_EDATA, "too many rows");
	}
	for (uint32_t i = 0; i < w->h.dim; i++) {
		if (w->h.dtype == FM_EMBED_F32) {
			uint32_t u;
			memcpy(&u, &v[i], 4);
			put32(p + 4 * (size_t)i, u);
		} else {
			put16(p + 2 * (size_t)i, fm_f32_to_f16(v[i]));
		}
	}
	if ((st = row_check(&w->h, w->next_id, id, p, w->check, err)) != FM_OK)
		return st;
	put64(w->buf, id);
	if ((st = w_record(w, TAG_EROW, w->buf, w->row_len, err)) != FM_OK)
		return st;
	w->n_rows++;
	w->next_id += w->h.shard_count;
	return FM_OK;
}

int
fm_embedw_finish(struct fm_embedw *w, uint64_t n_source, uint64_t source_hash,
    struct fm_embed_end *end_out, struct fm_err *err)
{
	struct fm_embed_end e;
	unsigned char p[END_LEN];
	int st;

	if ((st = w_usable(w, err)) != FM_OK)
		return st;
	e.n_rows = w->n_rows;
	e.n_source = n_source;
	e.source_hash = source_hash;
	e.content_hash = w->hash;
	if ((st = end_check(&w->h, w->n_rows, &e, err)) != FM_OK)
		return st;
	put64(p, e.n_rows);
	put64(p + 8, e.n_source);
	put64(p + 16, e.source_hash);
	put64(p + 24, e.content_hash);
	if ((st = w_record(w, TAG_END, p, sizeof p, err)) != FM_OK)
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
	if (end_out != NULL)
		*end_out = e;
	return FM_OK;
}

void
fm_embedw_free(struct fm_embedw *w)
{
	if (w == NULL)
		return;
	free(w->buf);
	free(w->check);
	free(w);
}

/* Reader. */

static int
r_fail(struct fm_embedr *r, const struct fm_err *e, struct fm_err *err)
{
	r->state = R_FAILED;
	return fm_err_set(err, e->status, "%s at record %" PRIu64, e->msg, r->recno);
}

static int
r_read(struct fm_embedr *r, void *p, size_t n, struct fm_err *err)
{
	size_t got;

	errno = 0;
	got = fread(p, 1, n, r->f);
	if (got == n)
		return FM_OK;
	r->state = R_FAILED;
	if (ferror(r->f))
		return fm_err_errno(err, FM_EIO, errno ? errno : EIO,
		    "read error at record %" PRIu64, r->recno);
	return fm_err_set(err, FM_EDATA, "truncated at record %" PRIu64, r->recno);
}

static int
r_header(struct fm_embedr *r, unsigned char *hdr, struct fm_err *err)
{
	struct fm_embed_header *h = &r->h;
	struct fm_err e;
	size_t got;
	uint32_t hlen, nl;

	errno = 0;
	got = fread(hdr, 1, 16, r->f);
	if (got < 16 && ferror(r->f))
		return fm_err_errno(err, FM_EIO, errno ? errno : EIO, "read error");
	if (got == 0)
		return fm_err_set(err, FM_EDATA, "empty input, not an embedding file");
	if (memcmp(hdr, magic, got < 8 ? got : 8) != 0)
		return fm_err_set(err, FM_EDATA, "not an embedding file (bad magic)");
	if (got < 16)
		return fm_err_set(err, FM_EDATA, "truncated header");
	h->version = get32(hdr + 8);
	if (h->version > FM_EMBED_VERSION)
		return fm_err_set(err, FM_EDATA, "unsupported embedding file version %" PRIu32,
		    h->version);
	if (h->version == 0)
		return fm_err_set(err, FM_EDATA, "invalid embedding file version 0");
	hlen = get32(hdr + 12);
	if (hlen < HDR_MIN || hlen > HDR_MAX)
		return fm_err_set(err, FM_EDATA, "header length %" PRIu32 " out of range %d..%d",
		    hlen, HDR_MIN, HDR_MAX);
	errno = 0;
	got = fread(hdr + 16, 1, hlen - 16, r->f);
	if (got < hlen - 16 && ferror(r->f))
		return fm_err_errno(err, FM_EIO, errno ? errno : EIO, "read error");
	if (got < hlen - 16)
		return fm_err_set(err, FM_EDATA, "truncated header");
	if (fm_crc32c(0, hdr, hlen - 4) != get32(hdr + hlen - 4))
		return fm_err_set(err, FM_EDATA, "header checksum mismatch");

	h->dim = get32(hdr + 16);
	h->dtype = get16(hdr + 20);
	h->pooling = get16(hdr + 22);
	h->source = get32(hdr + 24);
	h->shard_index = get32(hdr + 28);
	h->shard_count = get32(hdr + 32);
	h->encoder_fingerprint = get64(hdr + 36);
	h->tok_fingerprint = get64(hdr + 44);
	nl = get16(hdr + 52);
	if (HDR_FIXED + 2 + nl + 4 != hlen)
		return fm_err_set(err, FM_EDATA, "invalid header: length %" PRIu32
		    " does not match its encoder name", hlen);
	memcpy(h->encoder_name, hdr + 54, nl);
	h->encoder_name[nl] = '\0';
	if (memchr(h->encoder_name, '\0', nl) != NULL)
		return fm_err_set(err, FM_EDATA, "invalid header: the encoder name contains a nul byte");
	if (fm_embed_header_check(h, &e) != FM_OK)
		return fm_err_set(err, e.status, "invalid header: %s", e.msg);
	r->hash = fm_fnv64(FM_FNV64_INIT, hdr, hlen);
	return FM_OK;
}

struct fm_embedr *
fm_embedr_open(FILE *f, struct fm_err *err)
{
	struct fm_embedr *r;
	unsigned char hdr[HDR_MAX];

	if ((r = calloc(1, sizeof *r)) == NULL) {
		fm_err_errno(err, FM_EIO, ENOMEM, "embedding file");
		return NULL;
	}
	r->f = f;
	if (r_header(r, hdr, err) != FM_OK) {
		fm_embedr_free(r);
		return NULL;
	}
	r->next_id = r->h.shard_index;
	r->row_len = 8 + (size_t)r->h.dim * fm_embed_dtype_size(r->h.dtype);
	/* The buffer takes END's payload too, which is longer than a row of 1 to 11 values. */
	if ((r->buf = malloc(r->row_len > END_LEN ? r->row_len : END_LEN)) == NULL ||
	    (r->vec = malloc(r->h.dim * sizeof *r->vec)) == NULL) {
		fm_err_errno(err, FM_EIO, ENOMEM, "embedding file");
		fm_embedr_free(r);
		return NULL;
	}
	return r;
}

const struct fm_embed_header *
fm_embedr_header(const struct fm_embedr *r)
{
	return &r->h;
}

int
fm_embedr_next(struct fm_embedr *r, struct fm_embed_record *rec, struct fm_err *err)
{
	unsigned char head[8], tail[4];
	uint32_t tag, len, crc;
	size_t want;
	struct fm_err e;
	int st, ch;

	if (r->state == R_DONE) {
		r->state = R_FAILED;
		return fm_err_set(err, FM_EDATA, "read past the end record");
	}
	if (r->state == R_FAILED)
		return fm_err_set(err, FM_EDATA, "embedding file reader stopped at an earlier error");

	memset(rec, 0, sizeof *rec);
	rec->index = r->recno;
	if ((st = r_read(r, head, 8, err)) != FM_OK)
		return st;
	tag = get32(head);
	len = get32(head + 4);
	if (tag == TAG_EROW)
		want = r->row_len;
	else if (tag == TAG_END)
		want = END_LEN;
	else {
		fm_err_set(&e, FM_EDATA, "unknown record type 0x%08" PRIx32, tag);
		return r_fail(r, &e, err);
	}
	if (len != want) {
		fm_err_set(&e, FM_EDATA, "record length %" PRIu32 " wrong for its type (%zu)",
		    len, want);
		return r_fail(r, &e, err);
	}
	if ((st = r_read(r, r->buf, len, err)) != FM_OK ||
	    (st = r_read(r, tail, 4, err)) != FM_OK)
		return st;
	crc = fm_crc32c(0, head, 8);
	crc = fm_crc32c(crc, r->buf, len);
	if (crc != get32(tail)) {
		fm_err_set(&e, FM_EDATA, "checksum mismatch");
		return r_fail(r, &e, err);
	}

	if (tag == TAG_EROW) {
		rec->kind = FM_EREC_ROW;
		rec->id = get64(r->buf);
		rec->vec = r->vec;
		if (r->next_id < r->h.shard_index) {
			fm_err_set(&e, FM_EDATA, "too many rows");
			return r_fail(r, &e, err);
		}
		if (row_check(&r->h, r->next_id, rec->id, r->buf + 8, r->vec, &e) != FM_OK)
			return r_fail(r, &e, err);
		r->n_rows++;
		r->next_id += r->h.shard_count;
		r->recno++;
		r->hash = fm_fnv64(r->hash, head, 8);
		r->hash = fm_fnv64(r->hash, r->buf, len);
		r->hash = fm_fnv64(r->hash, tail, 4);
		return FM_OK;
	}

	rec->kind = FM_EREC_END;
	rec->end.n_rows = get64(r->buf);
	rec->end.n_source = get64(r->buf + 8);
	rec->end.source_hash = get64(r->buf + 16);
	rec->end.content_hash = get64(r->buf + 24);
	if (end_check(&r->h, r->n_rows, &rec->end, &e) != FM_OK)
		return r_fail(r, &e, err);
	if (rec->end.content_hash != r->hash) {
		fm_err_set(&e, FM_EDATA, "content hash mismatch");
		return r_fail(r, &e, err);
	}
	r->recno++;
	/* Nothing may follow END: a concatenation or a stray write is an error. */
	errno = 0;
	ch = fgetc(r->f);
	if (ch != EOF) {
		r->state = R_FAILED;
		return fm_err_set(err, FM_EDATA, "trailing data after end record");
	}
	if (ferror(r->f)) {
		r->state = R_FAILED;
		return fm_err_errno(err, FM_EIO, errno ? errno : EIO, "read error after end record");
	}
	r->state = R_DONE;
	return FM_OK;
}

void
fm_embedr_free(struct fm_embedr *r)
{
	if (r == NULL)
		return;
	free(r->buf);
	free(r->vec);
	free(r);
}
