/*
 * test_indexfile.c - the index file writer and reader: round trips in F32
 * and F16 over several documents and partial pages, the writer's refusals,
 * and the reader's: every truncation refused at open, every single-byte
 * change refused at open or by the full verify, and headers with valid
 * CRCs but hostile counts, sizes and page tables refused without touching
 * memory they describe.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "checksum.h"
#include "gguf.h"
#include "indexfile.h"
#include "tap.h"

#define DIM 6

/* Chunks: (doc, chunk) with page_chunks 3: doc 0 has 7 chunks, doc 1 none, doc 2 has 2. */
static const uint32_t docs[] = { 0, 0, 0, 0, 0, 0, 0, 2, 2 };
static const uint32_t idx[] = { 0, 1, 2, 3, 4, 5, 6, 0, 1 };
#define NCH 9

static float vec[NCH][DIM];

static void
make_vecs(void)
{
	for (int i = 0; i < NCH; i++) {
		double n = 0;
		for (int j = 0; j < DIM; j++) {
			vec[i][j] = (float)sin(i * 7 + j * 3 + 1);
			n += vec[i][j] * vec[i][j];
		}
		for (int j = 0; j < DIM; j++)
			vec[i][j] = (float)(vec[i][j] / sqrt(n));
	}
}

static struct fm_index_info
info(unsigned dtype)
{
	struct fm_index_info in = {
		.dim = DIM, .dtype = (uint16_t)dtype, .pooling = 1, .page_chunks = 3, .n_shards = 2,
		.encoder_fingerprint = 0x1122334455667788ull, .tok_fingerprint = 42,
	};
	strcpy(in.encoder_name, "test-enc");
	return in;
}

/* The bytes of a temporary file, 64-aligned (the writer seeks, so no memstream). */
static uint8_t *
slurp(FILE *f, size_t *len)
{
	long n;
	uint8_t *b;

	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	b = aligned_alloc(64, ((size_t)n + 64) / 64 * 64);
	if (fread(b, 1, (size_t)n, f) != (size_t)n)
		printf("# short read\n");
	fclose(f);
	*len = (size_t)n;
	return b;
}

/* Writes the sample index and returns its bytes. */
static uint8_t *
build(unsigned dtype, size_t *len)
{
	FILE *f = tmpfile();
	struct fm_err err;
	struct fm_index_info in = info(dtype);
	struct fm_indexw *w = fm_indexw_open(f, &in, &err);

	for (int i = 0; i < NCH; i++)
		if (fm_indexw_chunk(w, vec[i], docs[i], idx[i], idx[i] / 3, 10 + i, &err) != FM_OK)
			printf("# chunk %d: %s\n", i, err.msg);
	if (fm_indexw_finish(w, 3, 0xabcdef, &err) != FM_OK)
		printf("# finish: %s\n", err.msg);
	fm_indexw_free(w);
	return slurp(f, len);
}

static int
open_verify(const uint8_t *b, size_t n, struct fm_err *err, int *stage)
{
	struct fm_index *ix;
	int st;

	*stage = 0;
	if ((st = fm_index_open_mem(b, n, &ix, err)) != FM_OK)
		return st;
	*stage = 1;
	st = fm_index_verify(ix, err);
	fm_index_close(ix);
	return st;
}

static void
test_round_trip(unsigned dtype)
{
	size_t n;
	uint8_t *b = build(dtype, &n);
	struct fm_index *ix;
	struct fm_err err;
	int st = fm_index_open_mem(b, n, &ix, &err);

	if (!ok(st == FM_OK, "%s: the written index opens", dtype ? "f16" : "f32")) {
		printf("# %s\n", err.msg);
		free(b);
		return;
	}
	ok(fm_index_verify(ix, &err) == FM_OK, "%s: and verifies", dtype ? "f16" : "f32");
	ok(ix->n_chunks == NCH && ix->n_pages == 4 && ix->n_docs == 3 && ix->info.dim == DIM &&
	    ix->n_tokens == 9 * 10 + 36 && ix->file_size == n && ix->info.n_shards == 2,
	    "counts: 9 chunks, 4 pages, 3 documents, 126 tokens");
	ok(strcmp(ix->info.encoder_name, "test-enc") == 0 && ix->info.encoder_fingerprint == 0x1122334455667788ull &&
	    ix->info.source_hash == 0xabcdef && ix->info.tok_fingerprint == 42 && ix->info.pooling == 1,
	    "identities kept");
	const struct fm_index_page *p = ix->pages;
	ok(p[0].first_chunk == 0 && p[0].n_chunks == 3 && p[1].first_chunk == 3 && p[2].first_chunk == 6 &&
	    p[2].n_chunks == 1 && p[2].page == 2 && p[3].doc == 2 && p[3].page == 0 && p[3].n_chunks == 2 &&
	    p[0].n_tokens == 33, "page table: runs of 3, a short last page per document");
	ok(fm_index_page_of(ix, 0) == 0 && fm_index_page_of(ix, 5) == 1 && fm_index_page_of(ix, 6) == 2 &&
	    fm_index_page_of(ix, 8) == 3, "page_of finds each chunk's page");
	int same = 1;
	for (int i = 0; i < NCH; i++)
		for (int j = 0; j < DIM; j++) {
			float x = dtype == 0 ? ((const float *)ix->vecs)[i * DIM + j] :
			    fm_f16_to_f32(((const uint16_t *)ix->vecs)[i * DIM + j]);
			same &= dtype == 0 ? x == vec[i][j] : fabsf(x - vec[i][j]) < 1e-3f;
		}
	ok(same, "vectors read back");
	ok(((uintptr_t)ix->vecs % 64) == 0 && ((uintptr_t)ix->page_sums % 64) == 0, "sections aligned to 64");
	fm_index_close(ix);

	/* Every truncation is refused at open. */
	int bad = 0;
	for (size_t k = 0; k < n; k++) {
		/* Exactly k bytes from malloc (16-aligned), so ASan sees any read past them. */
		uint8_t *c = malloc(k ? k : 1);
		memcpy(c, b, k);
		if (fm_index_open_mem(c, k, &ix, &err) != FM_EDATA)
			bad++;
		free(c);
	}
	ok(bad == 0, "every truncation refused at open (%d accepted)", bad);
	/* Every single-byte change is refused by open or verify. */
	bad = 0;
	int at_open = 0;
	uint8_t *c = malloc(n);
	for (size_t k = 0; k < n; k++) {
		int stage;
		memcpy(c, b, n);
		c[k] ^= 0x20;
		if (open_verify(c, n, &err, &stage) != FM_EDATA)
			bad++;
		at_open += stage == 0;
	}
	ok(bad == 0, "every single-byte change refused (%d accepted, %d at open)", bad, at_open);
	/* Trailing data is refused. */
	uint8_t *t = malloc(n + 1);
	memcpy(t, b, n);
	t[n] = 0;
	ok(fm_index_open_mem(t, n + 1, &ix, &err) == FM_EDATA && strstr(err.msg, "trailing") != NULL,
	    "a byte after the end refused: %s", err.msg);
	free(t);
	free(c);
	free(b);
}

/* Rewrites the header CRC after a change, so the rule behind it is what is tested. */
static void
fix_crc(uint8_t *b)
{
	uint32_t c = fm_crc32c(0, b, 508);
	memcpy(b + 508, &c, 4);
}

static void
set64(uint8_t *p, uint64_t v)
{
	memcpy(p, &v, 8);
}

static void
set32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

static void
test_hostile(void)
{
	size_t n;
	uint8_t *b = build(0, &n), *c = malloc(n);
	struct fm_index *ix;
	struct fm_err err;
	struct {
		const char *what, *want;
		int off, width;
		uint64_t val;
	} cases[] = {
		{ "version 2", "unsupported index file version 2", 8, 4, 2 },
		{ "version 0", "version 0", 8, 4, 0 },
		{ "header length", "header length", 12, 4, 1024 },
		{ "dimension 0", "dimension 0", 16, 4, 0 },
		{ "dimension 2^31", "dimension", 16, 4, 1u << 31 },
		{ "dtype 7", "vector type 7", 20, 2, 7 },
		{ "flags", "flags", 24, 4, 1 },
		{ "page_chunks 0", "page_chunks", 28, 4, 0 },
		{ "2^60 chunks", "cannot fit", 32, 8, 1ull << 60 },
		{ "more pages than chunks", "cannot fit", 40, 8, 10 },
		{ "10 chunks (sizes disagree)", "section VECS", 32, 8, 10 },
		{ "tokens", "tokens", 48, 8, 5 },
		{ "no documents", "page 0", 56, 4, 0 },
		{ "file size", "truncated", 88, 8, (uint64_t)n + 64 },
		{ "name length 300", "encoder name", 96, 2, 300 },
		{ "padding", "padding", 300, 1, 1 },
		{ "TOC tag", "table of contents", 384, 4, 0x58585858 },
		{ "TOC offset", "section VECS", 384 + 8, 8, 576 },
		{ "TOC size huge", "section PAGE", 384 + 24 + 16, 8, ~0ull },
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		memcpy(c, b, n);
		if (cases[i].width == 8)
			set64(c + cases[i].off, cases[i].val);
		else if (cases[i].width == 4)
			set32(c + cases[i].off, (uint32_t)cases[i].val);
		else if (cases[i].width == 2) {
			uint16_t v = (uint16_t)cases[i].val;
			memcpy(c + cases[i].off, &v, 2);
		} else
			c[cases[i].off] = (uint8_t)cases[i].val;
		fix_crc(c);
		int st = fm_index_open_mem(c, n, &ix, &err);
		if (!ok(st == FM_EDATA && strstr(err.msg, cases[i].want) != NULL, "hostile %s refused: %s",
		    cases[i].what, st == FM_OK ? "(accepted)" : err.msg) && st == FM_OK)
			fm_index_close(ix);
	}
	/* Page table entries, with the PAGE section CRC left wrong: open must not need it. */
	size_t page_off;
	memcpy(&page_off, b + 384 + 24 + 8, 8);
	struct {
		const char *what, *want;
		int field;   /* byte offset in the entry */
		int width;
		uint64_t val;
	} pcases[] = {
		{ "first chunk beyond the end", "page 1: bad entry", 32 + 0, 8, 1ull << 40 },
		{ "page of 0 chunks", "page 0: bad entry", 4 + 4, 4, 0 },
		{ "page longer than page_chunks", "page 0: bad entry", 8, 4, 4 },
		{ "document beyond n_docs", "page 3: bad entry", 96 + 12, 4, 3 },
		{ "page number skipped", "page 1: out of sequence", 32 + 16, 4, 5 },
		{ "documents out of order", "out of sequence", 96 + 12, 4, 0 },
		{ "nonzero reserved", "page 2: bad entry", 64 + 20, 4, 1 },
	};
	for (size_t i = 0; i < sizeof pcases / sizeof pcases[0]; i++) {
		memcpy(c, b, n);
		uint8_t *e = c + page_off + pcases[i].field;
		if (pcases[i].width == 8)
			set64(e, pcases[i].val);
		else
			set32(e, (uint32_t)pcases[i].val);
		int st = fm_index_open_mem(c, n, &ix, &err);
		if (!ok(st == FM_EDATA && strstr(err.msg, pcases[i].want) != NULL, "hostile page table, %s: %s",
		    pcases[i].what, st == FM_OK ? "(accepted)" : err.msg) && st == FM_OK)
			fm_index_close(ix);
	}
	/* Values that are not finite pass open and fail verify (with good CRCs). */
	{
		uint64_t voff;
		memcpy(c, b, n);
		memcpy(&voff, c + 384 + 8, 8);
		float inf = INFINITY;
		memcpy(c + voff + 4, &inf, 4);
		uint32_t crc = fm_crc32c(0, c + voff, NCH * DIM * 4);
		memcpy(c + 384 + 4, &crc, 4);
		fix_crc(c);
		int st = fm_index_open_mem(c, n, &ix, &err), stage = st == FM_OK;
		if (st == FM_OK) {
			st = fm_index_verify(ix, &err);
			fm_index_close(ix);
		}
		ok(stage && st == FM_EDATA && strstr(err.msg, "not finite"), "an infinite value: open, then refused by verify: %s", err.msg);
	}
	ok(fm_index_open_mem(b + 4, n - 4, &ix, &err) != FM_OK, "an unaligned buffer refused");
	ok(fm_index_open_mem(b, 0, &ix, &err) == FM_EDATA && strcmp(err.msg, "not an index file") == 0, "empty input: not an index file");
	free(b);
	free(c);
}

static void
test_writer_refusals(void)
{
	char *mem = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&mem, &n);
	struct fm_err err;
	struct fm_index_info in = info(0);
	struct fm_indexw *w = fm_indexw_open(f, &in, &err);
	float nanv[DIM] = { 0, NAN };

	ok(fm_indexw_chunk(w, vec[0], 0, 1, 0, 5, &err) == FM_EDATA, "a document starting at chunk 1 refused");
	ok(fm_indexw_chunk(w, nanv, 0, 0, 0, 5, &err) == FM_EDATA, "a NaN refused");
	ok(fm_indexw_chunk(w, vec[0], 0, 0, 1, 5, &err) == FM_EDATA, "a wrong page refused");
	ok(fm_indexw_chunk(w, vec[0], 1, 0, 0, 5, &err) == FM_OK, "then a good chunk accepted");
	ok(fm_indexw_chunk(w, vec[0], 0, 0, 0, 5, &err) == FM_EDATA, "a document going back refused");
	ok(fm_indexw_chunk(w, vec[0], 1, 2, 0, 5, &err) == FM_EDATA, "a chunk skipped refused");
	ok(fm_indexw_finish(w, 1, 0, &err) == FM_EDATA, "fewer documents than seen refused");
	fm_indexw_free(w);
	fclose(f);
	free(mem);

	in.dim = 0;
	ok(fm_indexw_open(stdout, &in, &err) == NULL && err.status == FM_EDATA, "dimension 0 refused by the writer");

	/* An empty index is valid. */
	f = tmpfile();
	in = info(1);
	w = fm_indexw_open(f, &in, &err);
	fm_indexw_finish(w, 0, 0, &err);
	fm_indexw_free(w);
	uint8_t *b = slurp(f, &n);
	struct fm_index *ix;
	int stage;
	ok(open_verify(b, n, &err, &stage) == FM_OK && n == 512, "an index of no chunks: 512 bytes, valid");
	fm_index_open_mem(b, n, &ix, &err);
	ok(ix != NULL && ix->n_chunks == 0 && ix->n_pages == 0, "and holds nothing");
	fm_index_close(ix);
	free(b);
}

int
main(void)
{
	make_vecs();
	test_round_trip(0);
	test_round_trip(1);
	test_hostile();
	test_writer_refusals();
	return done_testing();
}
