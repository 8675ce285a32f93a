/*
 * selecttool.h - fm-select's job: embed each query (with the built-in
 * encoder when the index was built with it, or take the vectors of a query
 * embedding file), score it against every chunk of a memory-mapped index,
 * apply the selection policy and print the resident set.  The tool parses
 * options into struct fm_select_opts and calls run_select(), which reports
 * problems on stderr as "tool: subject: reason" and returns the exit status.
 */
#ifndef FM_SELECTTOOL_H
#define FM_SELECTTOOL_H

#include <stdbool.h>

#include "select.h"

struct fm_select_opts {
	const char *tool;            /* name in messages */
	const char *index;           /* the index file */
	const char *query;           /* -q: one query; NULL: see query_file, else stdin lines */
	const char *query_file;      /* --query-file: an embedding file of query vectors */
	const char *chunkfile;       /* -c: the chunk file, for --text */
	struct fm_policy policy;     /* budget in tokens unless budget_pct */
	double budget_pct;           /* > 0: the budget is this percent of the index's tokens */
	bool order_score;            /* --order score */
	bool json, text;
	int device;                  /* -1 auto, -2 cpu, N >= 0 cuda:N */
	bool verbose;
};

/* Returns an enum fm_status: 1 when a query selected nothing. */
int run_select(const struct fm_select_opts *o);

#endif
