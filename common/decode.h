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
};

/*
 * Runs the job.  Returns FM_OK, or a status with err filled and *subject
 * set to what the message is about (a path, "stdin", an option) or NULL.
 */
int run_decode(const struct fm_decode_opts *o, const char **subject, struct fm_err *err);

#endif
