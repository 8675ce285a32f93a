/*
 * chunker.h - fm-chunk's job: documents in, token chunks out (a chunk file),
 * or each document's token ids (--print-tokens), or a chunk file shown as
 * JSON lines (--list).  The tool parses options into struct fm_chunk_opts
 * and calls run_chunk(), which reports problems on stderr itself because it
 * carries on past a bad input, like cat(1), and returns the exit status.
 */
#ifndef FM_CHUNKER_H
#define FM_CHUNKER_H

#include <stdbool.h>
#include <stdint.h>

enum fm_chunk_mode { FM_CHUNK_WRITE, FM_CHUNK_PRINT_TOKENS, FM_CHUNK_LIST };

struct fm_chunk_opts {
	const char *tool;         /* name in messages */
	enum fm_chunk_mode mode;
	const char *model;        /* GGUF whose tokenizer is used (WRITE, PRINT_TOKENS) */
	const char *output;       /* NULL or "-" = standard output */
	char **inputs;            /* none = standard input */
	int n_inputs;
	uint32_t chunk_tokens;
	uint32_t overlap;
	uint32_t page_chunks;
	bool verbose;             /* a summary on stderr at the end */
};

/* Returns an enum fm_status: the worst problem met, FM_OK if none. */
int run_chunk(const struct fm_chunk_opts *o);

#endif
