/*
 * embed.h - fm-embed's job: a chunk file (or query lines) in, an embedding
 * file out, through the built-in encoder or a bert GGUF; or an embedding
 * file shown as JSON lines (--list).  The tool parses options into struct
 * fm_embed_opts and calls run_embed(), which reports problems on stderr
 * itself and returns the exit status.
 */
#ifndef FM_EMBED_H
#define FM_EMBED_H

#include <stdbool.h>
#include <stdint.h>

enum fm_embed_mode { FM_EMBED_CHUNKS, FM_EMBED_QUERIES, FM_EMBED_LIST };
enum fm_embed_long { FM_LONG_TRUNCATE, FM_LONG_SPLIT };

struct fm_embed_opts {
	const char *tool;          /* name in messages */
	enum fm_embed_mode mode;
	const char *model;         /* bert GGUF, NULL for the built-in encoder */
	const char *input;         /* NULL or "-" = standard input */
	const char *output;        /* NULL or "-" = standard output */
	const char *device;        /* "auto", "cpu", "cuda" or "cuda:N" */
	uint32_t dim;              /* the built-in encoder's dimension */
	int dtype;                 /* enum fm_embed_dtype */
	int pooling;               /* enum fm_embed_pooling, or -1 for the model's own */
	enum fm_embed_long long_mode;
	uint32_t shard_index, shard_count;
	bool full;                 /* --list: every value, not the first few */
	bool verbose;              /* statistics on stderr at the end */
};

/* Returns an enum fm_status: 0 ok, 1 no chunks, or the error's status. */
int run_embed(const struct fm_embed_opts *o);

#endif
