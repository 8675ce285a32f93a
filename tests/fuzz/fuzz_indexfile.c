/*
 * fuzz_indexfile.c - libFuzzer harness for the index file reader.  Each
 * input is opened twice: as it is, and with its header CRC and section
 * CRCs repaired, because mutations almost never keep a CRC-32C right and
 * the rules behind it (table of contents, page table) would otherwise go
 * unexplored.
 *
 * Beyond "no crash", it checks what opening promises: every page lies
 * inside the vectors, and a scan through the page table (vectors, sums,
 * token counts) and the full verify touch only memory the index owns.  A
 * broken promise aborts, which libFuzzer reports like a crash.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "checksum.h"
#include "indexfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t
get64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return v;
}

/* Rewrites the section CRCs (where the table of contents is in bounds), then the header's. */
static void
repair(uint8_t *b, size_t n)
{
	if (n < FM_INDEX_HEADER)
		return;
	for (int s = 0; s < 4; s++) {
		uint8_t *e = b + 384 + 24 * s;
		uint64_t off = get64(e + 8), size = get64(e + 16);
		if (off <= n && size <= n - off) {
			uint32_t c = fm_crc32c(0, b + off, (size_t)size);
			memcpy(e + 4, &c, 4);
		}
	}
	uint32_t c = fm_crc32c(0, b, 508);
	memcpy(b + 508, &c, 4);
}

static void
use(const struct fm_index *ix)
{
	uint64_t n = ix->n_chunks, np = ix->n_pages;
	uint32_t d = ix->info.dim;
	const uint8_t *v = ix->vecs;
	volatile unsigned sum = 0;
	struct fm_err err;

	for (uint64_t g = 0; g < np; g++) {
		const struct fm_index_page *p = &ix->pages[g];
		if (p->n_chunks == 0 || p->first_chunk >= n || p->n_chunks > n - p->first_chunk)
			abort();
		if (fm_index_page_of(ix, p->first_chunk) != g)
			abort();
		/* Each page's vectors and sum, through the page table, as a scan does. */
		for (uint64_t i = p->first_chunk; i < p->first_chunk + p->n_chunks; i++)
			sum += v[(i + 1) * d * (ix->info.dtype ? 2 : 4) - 1] + ix->tokens[i];
		sum += (unsigned)ix->page_sums[(g + 1) * d - 1];
	}
	if (n > 0 && (fm_index_page_of(ix, n - 1) >= np))
		abort();
	fm_index_verify(ix, &err);
	(void)sum;
}

static void
open_all(const uint8_t *b, size_t n)
{
	struct fm_index *ix;
	struct fm_err err;

	if (fm_index_open_mem(b, n, &ix, &err) == FM_OK) {
		use(ix);
		fm_index_close(ix);
	} else if (err.status != FM_EDATA) {
		abort();
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* The reader wants 8-aligned memory; malloc gives at least that. */
	uint8_t *b = malloc(size ? size : 1);

	if (b == NULL)
		return 0;
	memcpy(b, data, size);
	open_all(b, size);
	repair(b, size);
	if (memcmp(b, data, size) != 0)
		open_all(b, size);
	free(b);
	return 0;
}
