/*
 * embedfile.c - writer and streaming reader of the embedding file (.fme),
 * whose byte layout and validity rules are specified in fm-formats(5).
 *
 * As in chunkfile.c, both sides share one set of row rules (row_check), so
 * a file the writer accepts is one the reader accepts.  A row record's size
 * follows from the header alone, so the reader allocates its one row buffer
 * when it opens the file and never trusts a length it has not predicted.
 * The framing around the records is recstream.c's, shared with chunkfile.c.
 */
#include "embedfile.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "checksum.h"
#include "gguf.h"
#include "recstream.h"

static const unsigned char magic[8] = { 0x89, 'F', 'M', 'E', '\r', '\n', 0x1a, '\n' };

#define TAG_EROW FM_REC_TAG('E', 'R', 'O', 'W')
#define TAG_END  FM_REC_TAG('E', 'N', 'D', ' ')

/* Header: 52 fixed bytes, the encoder name, the CRC. */
#define HDR_FIXED 52
#define HDR_MIN (HDR_FIXED + 2 + 4)
#define HDR_MAX (HDR_FIXED + 2 + FM_EMBED_MAX_NAME + 4)
#define END_LEN 32

static const struct fm_recfmt fmt = {
	magic, FM_EMBED_VERSION, HDR_MIN, HDR_MAX, "embedding file", "an embedding file"
};

/* A row's sum of squares must be 0 or within this of 1 (f16 rounding is far inside). */
#define NORM_TOL (1.0 / 256)

struct fm_embedw {
	struct fm_recw rw;
	struct fm_embed_header h;
	uint64_t next_id;
	uint64_t n_rows;
	unsigned char *buf;     /* one row payload, (8 + dim * size) */
	float *check;           /* the row as the reader will see it, (dim) */
	size_t row_len;
};

struct fm_embedr {
	struct fm_recr rr;      /* its buf: one row or END payload, (max(8 + dim * size, 32)) */
	struct fm_embed_header h;
	uint64_t next_id;
	uint64_t n_rows;
	size_t row_len;
	float *vec;             /* the row as floats, (dim) */
};

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
			uint32_t u = fm_get32(p + 4 * (size_t)i);
			memcpy(&x, &u, 4);
		} else {
			x = fm_f16_to_f32(fm_get16(p + 2 * (size_t)i));
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
	w->h = *h;
	w->h.version = FM_EMBED_VERSION;
	w->next_id = h->shard_index;
	w->row_len = 8 + (size_t)h->dim * fm_embed_dtype_size(h->dtype);
	if ((w->buf = malloc(w->row_len)) == NULL ||
	    (w->check = malloc(h->dim * sizeof *w->check)) == NULL) {
		fm_embedw_free(w);
		fm_err_errno(err, FM_EIO, ENOMEM, "embedding file");
		return NULL;
	}

	nl = strlen(h->encoder_name);
	n = HDR_FIXED + 2 + nl + 4;
	fm_put32(hdr + 16, h->dim);
	fm_put16(hdr + 20, h->dtype);
	fm_put16(hdr + 22, h->pooling);
	fm_put32(hdr + 24, h->source);
	fm_put32(hdr + 28, h->shard_index);
	fm_put32(hdr + 32, h->shard_count);
	fm_put64(hdr + 36, h->encoder_fingerprint);
	fm_put64(hdr + 44, h->tok_fingerprint);
	fm_put16(hdr + 52, (uint16_t)nl);
	memcpy(hdr + 54, h->encoder_name, nl);
	if (fm_recw_open(&w->rw, f, &fmt, hdr, n, err) != FM_OK) {
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

	if ((st = fm_recw_usable(&w->rw, err)) != FM_OK)
		return st;
	if (w->next_id < w->h.shard_index) {
		/* next_id wrapped past 2^64: no id can follow. */
		return fm_err_set(err, FM_EDATA, "too many rows");
	}
	for (uint32_t i = 0; i < w->h.dim; i++) {
		if (w->h.dtype == FM_EMBED_F32) {
			uint32_t u;
			memcpy(&u, &v[i], 4);
			fm_put32(p + 4 * (size_t)i, u);
		} else {
			fm_put16(p + 2 * (size_t)i, fm_f32_to_f16(v[i]));
		}
	}
	if ((st = row_check(&w->h, w->next_id, id, p, w->check, err)) != FM_OK)
		return st;
	fm_put64(w->buf, id);
	if ((st = fm_recw_record(&w->rw, TAG_EROW, &(struct fm_recpart){ w->buf, w->row_len },
	    1, err)) != FM_OK)
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

	if ((st = fm_recw_usable(&w->rw, err)) != FM_OK)
		return st;
	e.n_rows = w->n_rows;
	e.n_source = n_source;
	e.source_hash = source_hash;
	e.content_hash = w->rw.hash;
	if ((st = end_check(&w->h, w->n_rows, &e, err)) != FM_OK)
		return st;
	fm_put64(p, e.n_rows);
	fm_put64(p + 8, e.n_source);
	fm_put64(p + 16, e.source_hash);
	fm_put64(p + 24, e.content_hash);
	if ((st = fm_recw_finish(&w->rw, TAG_END, &(struct fm_recpart){ p, sizeof p }, 1,
	    err)) != FM_OK)
		return st;
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
r_header(struct fm_embedr *r, FILE *f, unsigned char *hdr, struct fm_err *err)
{
	struct fm_embed_header *h = &r->h;
	struct fm_err e;
	uint32_t hlen, nl;
	int st;

	if ((st = fm_recr_open(&r->rr, f, &fmt, hdr, &hlen, err)) != FM_OK)
		return st;
	h->version = fm_get32(hdr + 8);
	h->dim = fm_get32(hdr + 16);
	h->dtype = fm_get16(hdr + 20);
	h->pooling = fm_get16(hdr + 22);
	h->source = fm_get32(hdr + 24);
	h->shard_index = fm_get32(hdr + 28);
	h->shard_count = fm_get32(hdr + 32);
	h->encoder_fingerprint = fm_get64(hdr + 36);
	h->tok_fingerprint = fm_get64(hdr + 44);
	nl = fm_get16(hdr + 52);
	if (HDR_FIXED + 2 + nl + 4 != hlen)
		return fm_err_set(err, FM_EDATA, "invalid header: length %" PRIu32
		    " does not match its encoder name", hlen);
	memcpy(h->encoder_name, hdr + 54, nl);
	h->encoder_name[nl] = '\0';
	if (memchr(h->encoder_name, '\0', nl) != NULL)
		return fm_err_set(err, FM_EDATA, "invalid header: the encoder name contains a nul byte");
	if (fm_embed_header_check(h, &e) != FM_OK)
		return fm_err_set(err, e.status, "invalid header: %s", e.msg);
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
	if (r_header(r, f, hdr, err) != FM_OK) {
		fm_embedr_free(r);
		return NULL;
	}
	r->next_id = r->h.shard_index;
	r->row_len = 8 + (size_t)r->h.dim * fm_embed_dtype_size(r->h.dtype);
	/* The buffer takes END's payload too, which is longer than a row of 1 to 11 values. */
	r->rr.cap = r->row_len > END_LEN ? r->row_len : END_LEN;
	if ((r->rr.buf = malloc(r->rr.cap)) == NULL ||
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
	unsigned char *buf = r->rr.buf;
	uint32_t tag, len;
	size_t want;
	struct fm_recpart part;
	struct fm_err e;
	int st;

	if ((st = fm_recr_usable(&r->rr, err)) != FM_OK)
		return st;
	memset(rec, 0, sizeof *rec);
	rec->index = r->rr.recno;
	if ((st = fm_recr_head(&r->rr, &tag, &len, err)) != FM_OK)
		return st;
	if (tag == TAG_EROW)
		want = r->row_len;
	else if (tag == TAG_END)
		want = END_LEN;
	else {
		fm_err_set(&e, FM_EDATA, "unknown record type 0x%08" PRIx32, tag);
		return fm_recr_fail(&r->rr, &e, err);
	}
	if (len != want) {
		fm_err_set(&e, FM_EDATA, "record length %" PRIu32 " wrong for its type (%zu)",
		    len, want);
		return fm_recr_fail(&r->rr, &e, err);
	}
	part = (struct fm_recpart){ buf, len };
	if ((st = fm_recr_read(&r->rr, buf, len, err)) != FM_OK ||
	    (st = fm_recr_check(&r->rr, &part, 1, err)) != FM_OK)
		return st;

	if (tag == TAG_EROW) {
		rec->kind = FM_EREC_ROW;
		rec->id = fm_get64(buf);
		rec->vec = r->vec;
		if (r->next_id < r->h.shard_index) {
			fm_err_set(&e, FM_EDATA, "too many rows");
			return fm_recr_fail(&r->rr, &e, err);
		}
		if (row_check(&r->h, r->next_id, rec->id, buf + 8, r->vec, &e) != FM_OK)
			return fm_recr_fail(&r->rr, &e, err);
		r->n_rows++;
		r->next_id += r->h.shard_count;
		fm_recr_accept(&r->rr, &part, 1);
		return FM_OK;
	}

	rec->kind = FM_EREC_END;
	rec->end.n_rows = fm_get64(buf);
	rec->end.n_source = fm_get64(buf + 8);
	rec->end.source_hash = fm_get64(buf + 16);
	rec->end.content_hash = fm_get64(buf + 24);
	if (end_check(&r->h, r->n_rows, &rec->end, &e) != FM_OK)
		return fm_recr_fail(&r->rr, &e, err);
	if (rec->end.content_hash != r->rr.hash) {
		fm_err_set(&e, FM_EDATA, "content hash mismatch");
		return fm_recr_fail(&r->rr, &e, err);
	}
	return fm_recr_finish(&r->rr, err);
}

void
fm_embedr_free(struct fm_embedr *r)
{
	if (r == NULL)
		return;
	fm_recr_free(&r->rr);
	free(r->vec);
	free(r);
}
