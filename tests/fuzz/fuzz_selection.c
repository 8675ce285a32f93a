/*
 * fuzz_selection.c - libFuzzer harness for the reader of resident sets
 * (fm-decode --select: fm-select's ID<TAB>SCORE lines).  The document has
 * chunks 1000 .. 1999 of its file.  Beyond "no crash", an accepted input
 * must give document-local ids, ascending, without repeats; a refused one
 * must say which line.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lsa.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	enum { N = 1000 };
	static uint32_t start[N + 1], ids[N];
	struct fm_lsa_doc d = { .first = 1000, .n_chunks = N, .start = start };
	struct fm_err err = { 0 };
	uint64_t line;
	uint32_t n = 0;
	FILE *f;
	int rc;

	if (size == 0 || (f = fmemopen((void *)data, size, "r")) == NULL)
		return 0;
	rc = fm_lsa_read_selection(f, &d, ids, &n, &line, &err);
	fclose(f);
	if (rc == FM_OK) {
		for (uint32_t i = 0; i < n; i++)
			if (ids[i] >= N || (i > 0 && ids[i] <= ids[i - 1]))
				abort();
	} else if (rc != FM_EDATA || strncmp(err.msg, "line ", 5) != 0) {
		abort();
	}
	return 0;
}
