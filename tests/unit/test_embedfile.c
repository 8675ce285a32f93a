/*
 * test_embedfile.c - the embedding file writer and reader: round trips in
 * f32 and f16, whole files and shards; the writer's refusals (ids out of
 * sequence, values not finite, rows not of unit length, an END that does not
 * complete the shard); and the reader's: every truncation and every
 * single-byte change of a small file must be refused, and a file encoded
 * here from fm-formats(5) must equal the writer's output byte for byte.
 */
#include <dirent.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "checksum.h"
#include "embedfile.h"
#include "tap.h"

#define DIM 5
#define NSRC 7

static const struct fm_embed_header base_h = {
	.dim = DIM,
	.dtype = FM_EMBED_F32,
	.pooling = FM_POOL_MEAN,
	.source = FM_SRC_CHUNKS,
	.shard_index = 0,
	.shard_count = 1,
	.encoder_fingerprint = UINT64_C(0x1122334455667788),
	.tok_fingerprint = UINT64_C(0x0123456789abcdef),
	.encoder_name = "tiny-bert",
};

/* Row id's vector: unit length, or zero for id 3 (an empty chunk). */
static void
row_of(uint64_t id, float *v)
{
	double ss = 0;

	for (int i = 0; i < DIM; i++) {
		v[i] = id == 3 ? 0.0f : (float)sin((double)(id * DIM + i) + 0.5);
		ss += (double)v[i] * v[i];
	}
	if (ss > 0)
		for (int i = 0; i < DIM; i++)
			v[i] = (float)(v[i] / sqrt(ss));
}

/* Writes shard I/N of NSRC rows into a memory buffer; returns its size. */
static size_t
write_file(const struct fm_embed_header *h, char **buf, struct fm_embed_end *end)
{
	size_t n = 0;
	FILE *f = open_memstream(buf, &n);
	struct fm_embedw *w;
	struct fm_err err;
	float v[DIM];
	int bad = 0;

	if ((w = fm_embedw_open(f, h, &err)) == NULL) {
		fclose(f);
		return 0;
	}
	for (uint64_t id = h->shard_index; id < NSRC; id += h->shard_count) {
		row_of(id, v);
		bad |= fm_embedw_row(w, id, v, &err) != FM_OK;
	}
	bad |= fm_embedw_finish(w, NSRC, UINT64_C(0xfeedface), end, &err) != FM_OK;
	fm_embedw_free(w);
	fclose(f);
	return bad ? 0 : n;
}

/* Reads a file to its end; returns the status, the error in err. */
static int
read_file(const char *buf, size_t n, const struct fm_embed_header *h, bool compare,
    uint64_t *rows, struct fm_err *err)
{
	FILE *f = fmemopen((void *)buf, n, "r");
	struct fm_embedr *r;
	struct fm_embed_record rec;
	float v[DIM];
	int st;

	*rows = 0;
	if ((r = fm_embedr_open(f, err)) == NULL) {
		fclose(f);
		return err->status;
	}
	while ((st = fm_embedr_next(r, &rec, err)) == FM_OK && rec.kind == FM_EREC_ROW) {
		(*rows)++;
		if (!compare)
			continue;
		row_of(rec.id, v);
		for (int i = 0; i < DIM; i++)
			if (fabsf(v[i] - rec.vec[i]) > (h->dtype == FM_EMBED_F16 ? 1e-3f : 0.0f)) {
				fm_err_set(err, FM_EDATA, "row %" PRIu64 " value %d differs", rec.id, i);
				st = FM_EDATA;
				goto out;
			}
	}
out:
	fm_embedr_free(r);
	fclose(f);
	return st;
}

static void
test_round_trip(void)
{
	static const struct { uint16_t dtype; uint32_t si, sn; } cases[] = {
		{ FM_EMBED_F32, 0, 1 }, { FM_EMBED_F16, 0, 1 },
		{ FM_EMBED_F32, 1, 3 }, { FM_EMBED_F16, 2, 3 }, { FM_EMBED_F32, 0, 9 },
		{ FM_EMBED_F32, 8, 9 },
	};

	for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
		struct fm_embed_header h = base_h;
		struct fm_embed_end end;
		struct fm_err err;
		char *buf = NULL;
		size_t n;
		uint64_t rows;
		int st;

		h.dtype = cases[c].dtype;
		h.shard_index = cases[c].si;
		h.shard_count = cases[c].sn;
		n = write_file(&h, &buf, &end);
		ok(n > 0, "%s shard %u/%u written", fm_embed_dtype_name(h.dtype), h.shard_index,
		    h.shard_count);
		st = read_file(buf, n, &h, true, &rows, &err);
		ok(st == FM_OK && rows == fm_embed_shard_rows(NSRC, h.shard_index, h.shard_count) &&
		    end.n_rows == rows && end.n_source == NSRC && end.source_hash == 0xfeedface,
		    "%s shard %u/%u read back: %" PRIu64 " rows (%s)", fm_embed_dtype_name(h.dtype),
		    h.shard_index, h.shard_count, rows, st == FM_OK ? "ok" : err.msg);
		free(buf);
	}
}

static void
test_header_fields(void)
{
	struct fm_embed_header h = base_h;
	struct fm_embed_end end;
	struct fm_embedr *r;
	struct fm_err err;
	char *buf = NULL;
	size_t n;
	FILE *f;
	const struct fm_embed_header *g;

	h.dtype = FM_EMBED_F16;
	h.pooling = FM_POOL_CLS;
	h.source = FM_SRC_QUERIES;
	h.shard_index = 1;
	h.shard_count = 2;
	n = write_file(&h, &buf, &end);
	f = fmemopen(buf, n, "r");
	r = fm_embedr_open(f, &err);
	ok(r != NULL, "header read");
	if (r != NULL) {
		g = fm_embedr_header(r);
		ok(g->version == FM_EMBED_VERSION && g->dim == DIM && g->dtype == FM_EMBED_F16 &&
		    g->pooling == FM_POOL_CLS && g->source == FM_SRC_QUERIES &&
		    g->shard_index == 1 && g->shard_count == 2 &&
		    g->encoder_fingerprint == h.encoder_fingerprint &&
		    g->tok_fingerprint == h.tok_fingerprint &&
		    strcmp(g->encoder_name, "tiny-bert") == 0, "header fields survive");
	}
	fm_embedr_free(r);
	fclose(f);
	free(buf);
	ok(fm_embed_shard_rows(7, 0, 1) == 7 && fm_embed_shard_rows(7, 2, 3) == 2 &&
	    fm_embed_shard_rows(7, 0, 3) == 3 && fm_embed_shard_rows(2, 5, 9) == 0 &&
	    fm_embed_shard_rows(0, 0, 1) == 0, "shard row counts");
}

/* The layout of fm-formats(5), encoded here independently of the writer. */
static size_t
encode_spec(unsigned char *b)
{
	static const char name[] = "tiny-bert";
	size_t p = 0, hl = 52 + 2 + sizeof name - 1 + 4, rs;
	uint64_t hash;
	float v[DIM];

#define P16(x) do { uint16_t _v = (x); memcpy(b + p, &_v, 2); p += 2; } while (0)
#define P32(x) do { uint32_t _v = (x); memcpy(b + p, &_v, 4); p += 4; } while (0)
#define P64(x) do { uint64_t _v = (x); memcpy(b + p, &_v, 8); p += 8; } while (0)
	memcpy(b, "\x89" "FME\r\n\x1a\n", 8);
	p = 8;
	P32(1); P32((uint32_t)hl); P32(DIM); P16(0); P16(1); P32(0); P32(0); P32(1);
	P64(base_h.encoder_fingerprint); P64(base_h.tok_fingerprint);
	P16(sizeof name - 1);
	memcpy(b + p, name, sizeof name - 1);
	p += sizeof name - 1;
	P32(fm_crc32c(0, b, p));
	for (uint64_t id = 0; id < NSRC; id++) {
		rs = p;
		memcpy(b + p, "EROW", 4);
		p += 4;
		P32(8 + 4 * DIM);
		P64(id);
		row_of(id, v);
		memcpy(b + p, v, sizeof v);
		p += sizeof v;
		P32(fm_crc32c(0, b + rs, p - rs));
	}
	hash = fm_fnv64(FM_FNV64_INIT, b, p);
	rs = p;
	memcpy(b + p, "END ", 4);
	p += 4;
	P32(32); P64(NSRC); P64(NSRC); P64(0xfeedface); P64(hash);
	P32(fm_crc32c(0, b + rs, p - rs));
#undef P16
#undef P32
#undef P64
	return p;
}

static void
test_layout(void)
{
	unsigned char spec[4096];
	struct fm_embed_end end;
	char *buf = NULL;
	size_t n, ns = encode_spec(spec);

	n = write_file(&base_h, &buf, &end);
	ok(n == ns && memcmp(buf, spec, n) == 0, "writer output equals the specified layout "
	    "(%zu and %zu bytes)", n, ns);
	ok(end.content_hash == fm_fnv64(FM_FNV64_INIT, spec, ns - 44),
	    "content hash covers every byte before END");
	free(buf);
}

static void
test_damage(void)
{
	struct fm_embed_end end;
	struct fm_err err;
	char *buf = NULL, *copy;
	size_t n;
	uint64_t rows;
	int missed = 0, wrong_status = 0;

	n = write_file(&base_h, &buf, &end);
	copy = malloc(n + 1);
	for (size_t k = 0; k < n; k++) {
		memcpy(copy, buf, k);
		if (read_file(copy, k, &base_h, false, &rows, &err) != FM_EDATA) {
			if (missed++ < 3)
				printf("# truncation to %zu bytes accepted\n", k);
		}
	}
	ok(missed == 0, "every truncation of a %zu-byte file refused", n);

	missed = 0;
	for (size_t k = 0; k < n; k++) {
		for (int bit = 0; bit < 8; bit++) {
			int st;

			memcpy(copy, buf, n);
			copy[k] ^= (char)(1 << bit);
			st = read_file(copy, n, &base_h, false, &rows, &err);
			if (st == FM_OK && missed++ < 3)
				printf("# flip of bit %d at byte %zu accepted\n", bit, k);
			if (st != FM_OK && st != FM_EDATA)
				wrong_status++;
		}
	}
	ok(missed == 0 && wrong_status == 0, "every single-bit flip refused as bad data");

	memcpy(copy, buf, n);
	copy[n] = 0;
	ok(read_file(copy, n + 1, &base_h, false, &rows, &err) == FM_EDATA &&
	    strstr(err.msg, "trailing data") != NULL, "trailing byte refused: %s", err.msg);

	/* A CRC-valid byte change in a row's id names the record. */
	memcpy(copy, buf, n);
	{
		size_t hl = 52 + 2 + 9 + 4, rl = 12 + 8 + 4 * DIM, at = hl + 2 * rl;
		uint32_t crc;

		copy[at + 8] ^= 1;
		crc = fm_crc32c(0, copy + at, rl - 4);
		memcpy(copy + at + rl - 4, &crc, 4);
		ok(read_file(copy, n, &base_h, false, &rows, &err) == FM_EDATA &&
		    strstr(err.msg, "out of sequence (expected 2) at record 2") != NULL,
		    "id out of sequence named by record: %s", err.msg);
	}
	free(copy);
	free(buf);
}

static void
test_writer_refusals(void)
{
	struct fm_embed_header h = base_h;
	struct fm_embedw *w;
	struct fm_err err;
	char *buf = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&buf, &n);
	float v[DIM];

	h.dim = 0;
	ok(fm_embedw_open(f, &h, &err) == NULL && err.status == FM_EDATA, "dim 0 refused: %s",
	    err.msg);
	h = base_h;
	h.shard_index = 3;
	h.shard_count = 3;
	ok(fm_embedw_open(f, &h, &err) == NULL && err.status == FM_EDATA, "shard 3/3 refused: %s",
	    err.msg);
	h = base_h;
	h.dtype = 7;
	ok(fm_embedw_open(f, &h, &err) == NULL, "dtype 7 refused: %s", err.msg);

	w = fm_embedw_open(f, &base_h, &err);
	row_of(0, v);
	ok(fm_embedw_row(w, 1, v, &err) == FM_EDATA, "row 1 before row 0 refused: %s", err.msg);
	v[0] *= 2;
	ok(fm_embedw_row(w, 0, v, &err) == FM_EDATA, "row not of unit length refused: %s",
	    err.msg);
	v[0] = NAN;
	ok(fm_embedw_row(w, 0, v, &err) == FM_EDATA, "NaN refused: %s", err.msg);
	row_of(0, v);
	ok(fm_embedw_row(w, 0, v, &err) == FM_OK, "the writer goes on after a refusal");
	ok(fm_embedw_next_id(w) == 1, "next id 1");
	ok(fm_embedw_finish(w, 2, 0, NULL, &err) == FM_EDATA, "END missing a row refused: %s",
	    err.msg);
	ok(fm_embedw_finish(w, 1, 0, NULL, &err) == FM_OK, "END after all rows");
	ok(fm_embedw_row(w, 1, v, &err) == FM_EDATA, "row after END refused");
	fm_embedw_free(w);
	fclose(f);
	free(buf);
}

static void
test_bad_headers(void)
{
	struct fm_err err;
	uint64_t rows;
	char *buf = NULL;
	struct fm_embed_end end;
	size_t n = write_file(&base_h, &buf, &end);

	ok(read_file("", 0, &base_h, false, &rows, &err) == FM_EDATA &&
	    strstr(err.msg, "empty input") != NULL, "empty input: %s", err.msg);
	ok(read_file("\x89" "FMC\r\n\x1a\n", 8, &base_h, false, &rows, &err) == FM_EDATA &&
	    strstr(err.msg, "bad magic") != NULL, "a chunk file's magic: %s", err.msg);
	buf[8] = 2;
	ok(read_file(buf, n, &base_h, false, &rows, &err) == FM_EDATA &&
	    strstr(err.msg, "unsupported embedding file version 2") != NULL, "version 2: %s",
	    err.msg);
	free(buf);
}

/*
 * The committed corpus, written by tests/fuzz/gen_embedfile_corpus.py (an
 * implementation of its own): valid-* files must read, bad-* be refused.
 */
static void
test_corpus(void)
{
	const char *top = getenv("FM_TOP");
	char dir[4096], path[8192];
	struct dirent *de;
	DIR *d;
	int nvalid = 0, nbad = 0;

	snprintf(dir, sizeof dir, "%s/tests/fuzz/corpus/embedfile", top ? top : ".");
	if ((d = opendir(dir)) == NULL) {
		ok(1, "# SKIP %s not found (run from the top directory or set FM_TOP)", dir);
		return;
	}
	while ((de = readdir(d)) != NULL) {
		int valid = strncmp(de->d_name, "valid-", 6) == 0;
		struct fm_embedr *r;
		struct fm_embed_record rec;
		struct fm_err err = { 0 };
		FILE *f;
		int st;

		if (!valid && strncmp(de->d_name, "bad-", 4) != 0)
			continue;
		snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
		if ((f = fopen(path, "rb")) == NULL) {
			ok(0, "open %s", path);
			continue;
		}
		if ((r = fm_embedr_open(f, &err)) == NULL)
			st = err.status;
		else
			while ((st = fm_embedr_next(r, &rec, &err)) == FM_OK &&
			    rec.kind != FM_EREC_END)
				;
		ok(valid ? st == FM_OK : st == FM_EDATA, "corpus %s: %s", de->d_name,
		    st == FM_OK ? "valid" : err.msg);
		fm_embedr_free(r);
		fclose(f);
		valid ? nvalid++ : nbad++;
	}
	closedir(d);
	ok(nvalid >= 3 && nbad >= 3, "corpus has %d valid and %d damaged files", nvalid, nbad);
}

int
main(void)
{
	test_round_trip();
	test_header_fields();
	test_layout();
	test_damage();
	test_writer_refusals();
	test_bad_headers();
	test_corpus();
	return done_testing();
}
