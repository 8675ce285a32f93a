/*
 * fuzz_chunkfile.c - libFuzzer harness for the chunk file reader.  Each input
 * is read twice: as it is, and with its checksums and content hash repaired,
 * because mutations almost never keep a CRC-32C right and the rules behind
 * the checksum (sequence, counts, overlap) would otherwise go unexplored.
 *
 * Beyond "no crash", it checks what the reader promises: every accepted
 * record obeys the rules of fm-formats(5), and a file accepted to its end is
 * written again, byte for byte, by the writer (one encoding per content).
 * A broken promise aborts, which libFuzzer reports like a crash.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checksum.h"
#include "chunkfile.h"
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
		if (memcmp(b + pos, "END ", 4) == 0 && len == 20)
			fm_put64(b + pos + 20, fm_fnv64(FM_FNV64_INIT, b, pos));
		fm_put32(b + pos + 8 + len, fm_crc32c(0, b + pos, 8 + len));
		pos += 12 + len;
	}
}

/* What an accepted record must satisfy, whatever the input was. */
static void
check_record(const struct fm_chunk_header *h, const struct fm_chunk_record *rec)
{
	const struct fm_chunk *c = &rec->chunk;
	volatile unsigned sum = 0;

	switch (rec->kind) {
	case FM_REC_DOC_BEGIN:
		if (rec->doc.name_len > FM_CHUNK_MAX_NAME || rec->doc.name[rec->doc.name_len] != '\0' ||
		    strlen(rec->doc.name) != rec->doc.name_len)
			abort();
		break;
	case FM_REC_CHUNK:
		if (c->n_tokens == 0 || c->n_tokens > h->chunk_tokens ||
		    c->page != c->chunk / h->page_chunks)
			abort();
		for (uint32_t i = 0; i < c->n_tokens; i++)
			if (c->ids[i] < 0 || (uint32_t)c->ids[i] >= h->n_vocab)
				abort();
		/* Touch every text byte, so the sanitizer sees any overrun. */
		for (uint32_t i = 0; i < c->length; i++)
			sum += (unsigned char)c->text[i];
		break;
	case FM_REC_DOC_END:
		if (rec->doc_end.flags & ~(uint32_t)FM_DOC_INCOMPLETE)
			abort();
		break;
	case FM_REC_END:
		break;
	}
	(void)sum;
}

/* Reads data to its end; an accepted file must be rewritten identically. */
static void
read_all(const uint8_t *data, size_t size)
{
	FILE *f, *out;
	struct fm_chunkr *r;
	struct fm_chunkw *w;
	struct fm_chunk_record rec;
	struct fm_err err;
	char *copy = NULL;
	size_t ncopy = 0;
	int st, wst = FM_OK;

	if (size == 0 || (f = fmemopen((void *)data, size, "r")) == NULL)
		return;
	if ((r = fm_chunkr_open(f, &err)) == NULL) {
		if (err.status != FM_EDATA)
			abort();
		fclose(f);
		return;
	}
	if ((out = open_memstream(&copy, &ncopy)) == NULL)
		abort();
	/* Whatever the reader accepted, the writer must accept too. */
	if ((w = fm_chunkw_open(out, fm_chunkr_header(r), &err)) == NULL)
		abort();
	while ((st = fm_chunkr_next(r, &rec, &err)) == FM_OK) {
		check_record(fm_chunkr_header(r), &rec);
		switch (rec.kind) {
		case FM_REC_DOC_BEGIN:
			wst = fm_chunkw_doc_begin(w, rec.doc.name, rec.doc.name_len, &err);
			break;
		case FM_REC_CHUNK:
			wst = fm_chunkw_chunk(w, &rec.chunk, &err);
			break;
		case FM_REC_DOC_END:
			wst = fm_chunkw_doc_end(w, &rec.doc_end, &err);
			break;
		case FM_REC_END:
			wst = fm_chunkw_finish(w, NULL, &err);
			break;
		}
		if (wst != FM_OK)
			abort();
		if (rec.kind == FM_REC_END)
			break;
	}
	if (st != FM_OK && st != FM_EDATA)
		abort();
	fm_chunkw_free(w);
	fclose(out);
	if (st == FM_OK && (ncopy != size || memcmp(copy, data, size) != 0))
		abort();
	free(copy);
	fm_chunkr_free(r);
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
