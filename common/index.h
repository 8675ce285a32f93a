/*
 * index.h - fm-index's job: build an index file from a chunk file and the
 * embedding files of its chunks (one whole file, or the shards of
 * fm-embed --shard in any order), or show (--list, --stats) or fully check
 * (--verify) an index.  The tool parses options into struct fm_index_opts
 * and calls run_index(), which reports problems on stderr as
 * "tool: file: reason" and returns the exit status.
 */
#ifndef FM_INDEX_H
#define FM_INDEX_H

#include <stdbool.h>

enum fm_index_mode { FM_INDEX_BUILD, FM_INDEX_LIST, FM_INDEX_STATS, FM_INDEX_VERIFY };

struct fm_index_opts {
	const char *tool;          /* name in messages */
	enum fm_index_mode mode;
	const char *chunkfile;     /* BUILD: the chunk file the embeddings came from */
	const char *output;        /* BUILD: the index to write (a regular file) */
	int dtype;                 /* BUILD: 0 f32, 1 f16, -1 as the embedding files */
	char **inputs;             /* BUILD: embedding files ("-": standard input); else indexes */
	int n_inputs;
	bool verbose;              /* a summary on stderr */
};

/* Returns an enum fm_status. */
int run_index(const struct fm_index_opts *o);

#endif
