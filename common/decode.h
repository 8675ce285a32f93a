/*
 * decode.h - the job of fm-decode: load a llama GGUF, tokenize the prompt,
 * run it through the model and stream the continuation to standard output,
 * with an optional per-position trace and statistics.
 *
 * Ownership: run_decode() borrows the options and owns everything it opens.
 * A write to a closed standard output ends the process quietly through
 * fm_exit_pipe(), as in every fm tool; every other failure is returned.
 */
#ifndef FM_DECODE_H
#define FM_DECODE_H

#include <stdbool.h>
#include <stdint.h>

#include "fm_error.h"
#include "kvcache.h"
#include "lsa.h"
#include "select.h"

#define FM_DECODE_MAX_NEW  (1u << 24)   /* -n */
#define FM_DECODE_MAX_CTX  (1u << 24)   /* -c */
#define FM_DECODE_TRACE_TOP 5           /* logits listed per trace line */

struct fm_decode_opts {
	const char *progname;     /* for messages on stderr */
	const char *model;        /* GGUF path */
	const char *prompt;       /* prompt text, or NULL */
	const char *prompt_file;  /* prompt file ("-": standard input), or NULL */
	uint32_t n_new;           /* tokens to generate at most */
	uint32_t n_ctx;           /* context length; 0: the model's trained length */
	float temp;               /* 0: greedy */
	uint32_t top_k;           /* 0: off */
	float top_p;              /* 1: off */
	uint64_t seed;
	const char *trace;        /* JSON lines file, or NULL */
	bool stats;               /* -v: speeds and sizes on stderr */
	const char *device;       /* "auto", "cpu", "cuda" or "cuda:N" */
	enum fm_kv_type kv_type;
	const char *stats_json;   /* the statistics as one JSON object, or NULL */

	/* A document as context: Lookahead Sparse Attention unless dense. */
	const char *chunks;       /* chunk file, or NULL: the prompt alone, dense */
	const char *doc;          /* the document of that name, or NULL: all of them */
	const char *index;        /* index file of the chunk file, or NULL */
	const char *encoder;      /* bert GGUF of the index, or NULL: the built-in encoder */
	bool dense;               /* --attention dense: the whole cache, no selection */
	uint64_t budget;          /* reserve in tokens, or 0 with budget_pct */
	double budget_pct;        /* reserve in percent of the document */
	struct fm_policy policy;  /* -k, --threshold, --pages, --sink, --recent */
	uint32_t interval;        /* tokens per window (tau) */
	const char *select;       /* first resident set, fm-select's lines ("-": stdin), or NULL */
	enum fm_lsa_by by;        /* what chooses the resident set */
	const char *audit;        /* JSON line per window, or NULL */
	bool audit_attention;     /* and the dense attention mass of each chunk */
	bool audit_dense;         /* run dense alongside: top-1 agreement and KL per window */
};

/*
 * Runs the job.  Returns FM_OK, or a status with err filled and *subject
 * set to what the message is about (a path, "stdin", an option) or NULL.
 */
int run_decode(const struct fm_decode_opts *o, const char **subject, struct fm_err *err);

#endif
