/*
 * fm-index - embedding files to an index file, and the index's inspection.
 * Parses options and calls run_index(); everything else is in
 * common/index.c.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_error.h"
#include "index.h"
#include "io.h"

#define FM_VERSION "0.1"

static const char usage_text[] =
    "usage: fm-index -c chunkfile -o index [-v] [--dtype type] embedfile ...\n"
    "       fm-index --list index\n"
    "       fm-index --stats index ...\n"
    "       fm-index --verify [-v] index ...\n";

static const char help_text[] =
    "\nBuilds an index file from the embedding files of a chunk file's chunks (one\n"
    "whole file, or every shard of fm-embed --shard, in any order), or shows or\n"
    "checks an index.\n"
    "\n"
    "  -c, --chunks chunkfile   the chunk file the embeddings were made from\n"
    "  -o, --output index       the index file to write\n"
    "      --dtype f16|f32      store the vectors so (default: as the embedding files)\n"
    "      --list               print the index's chunks as JSON lines\n"
    "      --stats              print the index's description as one JSON line\n"
    "      --verify             check every checksum and value of each index\n"
    "  -v, --verbose            print a summary on standard error\n"
    "  -h, --help               print this help\n"
    "  -V, --version            print the version\n"
    "\n"
    "Exit status: 0 ok, 2 usage, 3 bad input data, 4 I/O error.\n"
    "See fm-index(1).\n";

static void __attribute__((noreturn))
usage(int status)
{
	FILE *f = status == 0 ? stdout : stderr;

	fputs(usage_text, f);
	if (status == 0)
		fputs(help_text, f);
	exit(status);
}

int
main(int argc, char **argv)
{
	enum { OPT_DTYPE = 256, OPT_LIST, OPT_STATS, OPT_VERIFY };
	static const struct option longopts[] = {
		{ "chunks",  required_argument, NULL, 'c' },
		{ "dtype",   required_argument, NULL, OPT_DTYPE },
		{ "help",    no_argument,       NULL, 'h' },
		{ "list",    no_argument,       NULL, OPT_LIST },
		{ "output",  required_argument, NULL, 'o' },
		{ "stats",   no_argument,       NULL, OPT_STATS },
		{ "verbose", no_argument,       NULL, 'v' },
		{ "verify",  no_argument,       NULL, OPT_VERIFY },
		{ "version", no_argument,       NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct fm_index_opts o = { .tool = "fm-index", .mode = FM_INDEX_BUILD, .dtype = -1 };
	int ch, modes = 0;

	fm_io_init();
	while ((ch = getopt_long(argc, argv, "c:ho:vV", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			o.chunkfile = optarg;
			break;
		case 'h':
			usage(0);
		case 'o':
			o.output = optarg;
			break;
		case 'v':
			o.verbose = true;
			break;
		case 'V':
			printf("fm-index %s\n", FM_VERSION);
			return 0;
		case OPT_DTYPE:
			if (strcmp(optarg, "f32") == 0)
				o.dtype = 0;
			else if (strcmp(optarg, "f16") == 0)
				o.dtype = 1;
			else {
				fprintf(stderr, "fm-index: --dtype: expected f16 or f32, got '%s'\n", optarg);
				return FM_EUSAGE;
			}
			break;
		case OPT_LIST:
			o.mode = FM_INDEX_LIST;
			modes++;
			break;
		case OPT_STATS:
			o.mode = FM_INDEX_STATS;
			modes++;
			break;
		case OPT_VERIFY:
			o.mode = FM_INDEX_VERIFY;
			modes++;
			break;
		default:
			usage(FM_EUSAGE);
		}
	}
	argc -= optind;
	argv += optind;
	o.inputs = argv;
	o.n_inputs = argc;

	if (modes > 1) {
		fputs("fm-index: --list, --stats and --verify exclude each other\n", stderr);
		usage(FM_EUSAGE);
	}
	if (o.mode == FM_INDEX_BUILD) {
		if (o.chunkfile == NULL || o.output == NULL) {
			fputs("fm-index: -c chunkfile and -o index are required\n", stderr);
			usage(FM_EUSAGE);
		}
		if (argc == 0) {
			fputs("fm-index: no embedding file given\n", stderr);
			usage(FM_EUSAGE);
		}
		if (strcmp(o.output, "-") == 0) {
			fputs("fm-index: an index is written to a file, not standard output\n", stderr);
			return FM_EUSAGE;
		}
		int stdins = strcmp(o.chunkfile, "-") == 0;
		for (int i = 0; i < argc; i++)
			stdins += strcmp(argv[i], "-") == 0;
		if (stdins > 1) {
			fputs("fm-index: standard input can be only one of the inputs\n", stderr);
			return FM_EUSAGE;
		}
	} else {
		if (o.chunkfile != NULL || o.output != NULL || o.dtype >= 0) {
			fputs("fm-index: -c, -o and --dtype are for building an index\n", stderr);
			usage(FM_EUSAGE);
		}
		if (argc == 0 || (o.mode == FM_INDEX_LIST && argc > 1)) {
			fputs(o.mode == FM_INDEX_LIST ? "fm-index: --list takes one index\n" :
			    "fm-index: no index given\n", stderr);
			usage(FM_EUSAGE);
		}
	}
	int status = run_index(&o);
	struct fm_err err = {0};
	if (fm_stdout_close(&err) != FM_OK && status < FM_EIO) {
		fm_report("fm-index", "(stdout)", &err);
		status = FM_EIO;
	}
	return status;
}
