/*
 * fm-chunk - documents to token chunks.  Parses options and calls
 * run_chunk(); everything else is in common/chunker.c.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chunker.h"
#include "cli.h"
#include "chunkfile.h"
#include "fm_error.h"
#include "io.h"

#define FM_VERSION "0.1"

static const char usage_text[] =
    "usage: fm-chunk -t model.gguf [-v] [-n tokens] [--overlap tokens]\n"
    "                [--page-chunks n] [-o file] [file ...]\n"
    "       fm-chunk -t model.gguf --print-tokens [file ...]\n"
    "       fm-chunk --list [chunkfile]\n";

static const char help_text[] =
    "\nCuts documents (files, standard input, tar/zip/cpio/ar archives, compressed\n"
    "or not) into chunks of tokens and writes a chunk file.\n"
    "\n"
    "  -t, --tokenizer model.gguf   take the tokenizer of this GGUF model\n"
    "  -n, --chunk-tokens tokens    tokens per chunk (default 64)\n"
    "      --overlap tokens         tokens shared by consecutive chunks (default 0)\n"
    "      --page-chunks n          chunks per page (default 16)\n"
    "  -o, --output file            write here instead of standard output\n"
    "      --print-tokens           print each document's token ids, one line each\n"
    "  -l, --list                   print a chunk file as JSON lines\n"
    "  -v, --verbose                print a summary on standard error\n"
    "  -h, --help                   print this help\n"
    "  -V, --version                print the version\n"
    "\n"
    "Exit status: 0 ok, 1 no chunks, 2 usage, 3 bad input data, 4 I/O error.\n"
    "See fm-chunk(1).\n";

static void __attribute__((noreturn))
usage(int status)
{
	FILE *f = status == 0 ? stdout : stderr;

	fputs(usage_text, f);
	if (status == 0)
		fputs(help_text, f);
	exit(status);
}

/* A whole number in [lo, hi], or a usage error naming the option. */
static uint32_t
parse_count(const char *opt, const char *s, uint32_t lo, uint32_t hi)
{
	uint64_t v;

	if (!fm_parse_u64(s, lo, hi, &v)) {
		fprintf(stderr, "fm-chunk: %s: expected a whole number from %u to %u, got '%s'\n",
		    opt, lo, hi, s);
		exit(FM_EUSAGE);
	}
	return (uint32_t)v;
}

int
main(int argc, char **argv)
{
	enum { OPT_OVERLAP = 256, OPT_PAGE_CHUNKS, OPT_PRINT_TOKENS };
	static const struct option longopts[] = {
		{ "chunk-tokens", required_argument, NULL, 'n' },
		{ "help",         no_argument,       NULL, 'h' },
		{ "list",         no_argument,       NULL, 'l' },
		{ "output",       required_argument, NULL, 'o' },
		{ "overlap",      required_argument, NULL, OPT_OVERLAP },
		{ "page-chunks",  required_argument, NULL, OPT_PAGE_CHUNKS },
		{ "print-tokens", no_argument,       NULL, OPT_PRINT_TOKENS },
		{ "tokenizer",    required_argument, NULL, 't' },
		{ "verbose",      no_argument,       NULL, 'v' },
		{ "version",      no_argument,       NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct fm_chunk_opts o = {
		.tool = "fm-chunk", .mode = FM_CHUNK_WRITE,
		.chunk_tokens = 64, .overlap = 0, .page_chunks = 16,
	};
	int ch;

	fm_io_init();
	while ((ch = getopt_long(argc, argv, "hln:o:t:vV", longopts, NULL)) != -1) {
		switch (ch) {
		case 'h':
			usage(0);
		case 'l':
			o.mode = FM_CHUNK_LIST;
			break;
		case 'n':
			o.chunk_tokens = parse_count("--chunk-tokens", optarg, 1, FM_CHUNK_MAX_TOKENS);
			break;
		case 'o':
			o.output = optarg;
			break;
		case 't':
			o.model = optarg;
			break;
		case 'v':
			o.verbose = true;
			break;
		case 'V':
			printf("fm-chunk %s\n", FM_VERSION);
			return 0;
		case OPT_OVERLAP:
			o.overlap = parse_count("--overlap", optarg, 0, FM_CHUNK_MAX_TOKENS - 1);
			break;
		case OPT_PAGE_CHUNKS:
			o.page_chunks = parse_count("--page-chunks", optarg, 1, UINT32_MAX);
			break;
		case OPT_PRINT_TOKENS:
			o.mode = FM_CHUNK_PRINT_TOKENS;
			break;
		default:
			usage(FM_EUSAGE);
		}
	}
	argc -= optind;
	argv += optind;
	o.inputs = argv;
	o.n_inputs = argc;

	if (o.mode != FM_CHUNK_LIST && o.model == NULL) {
		fputs("fm-chunk: -t model.gguf is required\n", stderr);
		usage(FM_EUSAGE);
	}
	if (o.mode == FM_CHUNK_LIST && argc > 1) {
		fputs("fm-chunk: --list takes one chunk file\n", stderr);
		usage(FM_EUSAGE);
	}
	if (o.overlap >= o.chunk_tokens) {
		fprintf(stderr, "fm-chunk: --overlap %u must be smaller than --chunk-tokens %u\n",
		    o.overlap, o.chunk_tokens);
		return FM_EUSAGE;
	}
	if (o.mode == FM_CHUNK_WRITE && (o.output == NULL || strcmp(o.output, "-") == 0) &&
	    isatty(STDOUT_FILENO)) {
		fputs("fm-chunk: refusing to write a binary chunk file to a terminal "
		    "(use -o file or a pipe)\n", stderr);
		return FM_EUSAGE;
	}
	int status = run_chunk(&o);
	struct fm_err err = {0};
	/* A failed stdout was reported by run_chunk already; this catches the last flush. */
	if (fm_stdout_close(&err) != FM_OK && status < FM_EIO) {
		fm_report("fm-chunk", "(stdout)", &err);
		status = FM_EIO;
	}
	return status;
}
