/*
 * fuzz_embedfile.c - libFuzzer harness for the embedding file reader.  Each
 * input is read twice: as it is, and with its checksums and content hash
 * repaired, so that mutations reach the rules behind the checksums (id
 * sequence, shard counts, finite values, unit length).
 *
 * Beyond "no crash", it checks what the reader promises: every accepted row
 * is in sequence, finite and of unit length or zero, and a file accepted to
 * its end is written again, byte for byte, by the writer.  A broken promise
 * aborts, which libFuzzer reports like a crash.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checksum.h"
#include "embedfile.h"
#include "recstream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Rewrites the header CRC, every record CRC and END's content hash in place. */
static void
repair(uint8_t *b, size_t n)
{
	size_t hlen, pos;

	if (n < 16)
		return;
	hlen = fm_get32(b + 12);
	if (hlen < 16 || hlen > n)
		return;
	fm_put32(b + hlen - 4, fm_crc32c(0, b, hlen - 4));
	for (pos = hlen; pos + 8 <= n;) {
		size_t len = fm_get32(b + pos + 4);

		if (len > n - pos - 8 || n - pos - 8 - len < 4)
			break;
		if (memcmp(b + pos, "END ", 4) == 0 && len == 32)
			fm_put64(b + pos + 32, fm_fnv64(FM_FNV64_INIT, b, pos));
		fm_put32(b + pos + 8 + len, fm_crc32c(0, b + pos, 8 + len));
		pos += 12 + len;
	}
}

static void
check_row(const struct fm_embed_header *h, uint64_t expect, const struct fm_embed_record *rec)
{
	double ss = 0;

	if (rec->id != expect || rec->id % h->shard_count != h->shard_index)
		abort();
	for (uint32_t i = 0; i < h->dim; i++) {
		if (!isfinite(rec->vec[i]))
			abort();
		ss += (double)rec->vec[i] * rec->vec[i];
	}
	if (ss != 0 && fabs(ss - 1) > 1.0 / 256)
		abort();
}

static void
read_all(const uint8_t *data, size_t size)
{
	FILE *f, *out;
	struct fm_embedr *r;
	struct fm_embedw *w;
	struct fm_embed_record rec;
	const struct fm_embed_header *h;
	struct fm_err err;
	char *copy = NULL;
	size_t ncopy = 0;
	uint64_t expect;
	int st, wst = FM_OK;

	if (size == 0 || (f = fmemopen((void *)data, size, "r")) == NULL)
		return;
	if ((r = fm_embedr_open(f, &err)) == NULL) {
		if (err.status != FM_EDATA)
			abort();
		fclose(f);
		return;
	}
	h = fm_embedr_header(r);
	expect = h->shard_index;
	if ((out = open_memstream(&copy, &ncopy)) == NULL)
		abort();
	if ((w = fm_embedw_open(out, h, &err)) == NULL)
		abort();
	while ((st = fm_embedr_next(r, &rec, &err)) == FM_OK) {
		if (rec.kind == FM_EREC_END) {
			if (rec.end.n_rows != fm_embed_shard_rows(rec.end.n_source, h->shard_index,
			    h->shard_count))
				abort();
			wst = fm_embedw_finish(w, rec.end.n_source, rec.end.source_hash, NULL, &err);
			if (wst != FM_OK)
				abort();
			break;
		}
		check_row(h, expect, &rec);
		expect += h->shard_count;
		if (fm_embedw_row(w, rec.id, rec.vec, &err) != FM_OK)
			abort();
	}
	if (st != FM_OK && st != FM_EDATA)
		abort();
	fm_embedw_free(w);
	fclose(out);
	if (st == FM_OK && (ncopy != size || memcmp(copy, data, size) != 0))
		abort();
	free(copy);
	fm_embedr_free(r);
	fclose(f);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *fixed;

	read_all(data, size);
	if (size == 0 || size > (1u << 20) || (fixed = malloc(size)) == NULL)
		return 0;
	memcpy(fixed, data, size);
	repair(fixed, size);
	if (memcmp(fixed, data, size) != 0)
		read_all(fixed, size);
	free(fixed);
	return 0;
}
