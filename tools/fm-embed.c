/*
 * fm-embed - chunk texts or queries to vectors: the memory indexer's
 * encoder.  Parses options and calls run_embed(); everything else is in
 * common/embed.c.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "embed.h"
#include "embedfile.h"
#include "fm_error.h"
#include "io.h"

#define FM_VERSION "0.1"

static const char usage_text[] =
    "usage: fm-embed [-v] [-m encoder.gguf] [--dim n] [--dtype type] [--pooling type]\n"
    "                [--long mode] [--shard i/n] [--device dev] [-o file] [chunkfile]\n"
    "       fm-embed --queries [-v] [-m encoder.gguf] [--dim n] [--dtype type]\n"
    "                [--pooling type] [--long mode] [-o file] [file]\n"
    "       fm-embed --list [-v] [--full] [embedfile]\n";

static const char help_text[] =
    "\nComputes one L2-normalised vector per chunk of a chunk file (or per line of\n"
    "query text) and writes an embedding file.\n"
    "\n"
    "  -m, --model encoder.gguf  a bert GGUF; without it the built-in hashed encoder\n"
    "      --dim n               the built-in encoder's dimension (default 384)\n"
    "      --dtype type          f32 (default) or f16 values\n"
    "      --pooling type        mean or cls (default: the model's)\n"
    "      --long mode           truncate (default) or split texts longer than the\n"
    "                            encoder's context\n"
    "      --shard i/n           embed only the chunks whose id % n is i\n"
    "      --device dev          auto (default), cpu or cuda[:n]\n"
    "  -o, --output file         write here instead of standard output\n"
    "  -q, --queries             the input is text, one query per line\n"
    "  -l, --list                print an embedding file as JSON lines\n"
    "      --full                with --list, every value of each vector\n"
    "  -v, --verbose             print statistics on standard error\n"
    "  -h, --help                print this help\n"
    "  -V, --version             print the version\n"
    "\n"
    "Exit status: 0 ok, 1 no chunks, 2 usage, 3 bad input data, 4 I/O error,\n"
    "5 device error.  See fm-embed(1).\n";

static void __attribute__((noreturn))
usage(int status)
{
	FILE *f = status == 0 ? stdout : stderr;

	fputs(usage_text, f);
	if (status == 0)
		fputs(help_text, f);
	exit(status);
}

static void __attribute__((noreturn))
bad_arg(const char *opt, const char *want, const char *got)
{
	fprintf(stderr, "fm-embed: %s: expected %s, got '%s'\n", opt, want, got);
	exit(FM_EUSAGE);
}

static void
parse_shard(const char *s, struct fm_embed_opts *o)
{
	char buf[32];
	const char *slash = strchr(s, '/');
	uint64_t i, n;

	if (slash == NULL || (size_t)(slash - s) >= sizeof buf)
		bad_arg("--shard", "i/n with 0 <= i < n", s);
	memcpy(buf, s, (size_t)(slash - s));
	buf[slash - s] = '\0';
	if (!fm_parse_u64(buf, 0, UINT32_MAX - 1, &i) || !fm_parse_u64(slash + 1, 1, UINT32_MAX, &n) ||
	    i >= n)
		bad_arg("--shard", "i/n with 0 <= i < n", s);
	o->shard_index = (uint32_t)i;
	o->shard_count = (uint32_t)n;
}

int
main(int argc, char **argv)
{
	enum { OPT_DIM = 256, OPT_DTYPE, OPT_POOLING, OPT_LONG, OPT_SHARD, OPT_DEVICE, OPT_FULL };
	static const struct option longopts[] = {
		{ "device",  required_argument, NULL, OPT_DEVICE },
		{ "dim",     required_argument, NULL, OPT_DIM },
		{ "dtype",   required_argument, NULL, OPT_DTYPE },
		{ "full",    no_argument,       NULL, OPT_FULL },
		{ "help",    no_argument,       NULL, 'h' },
		{ "list",    no_argument,       NULL, 'l' },
		{ "long",    required_argument, NULL, OPT_LONG },
		{ "model",   required_argument, NULL, 'm' },
		{ "output",  required_argument, NULL, 'o' },
		{ "pooling", required_argument, NULL, OPT_POOLING },
		{ "queries", no_argument,       NULL, 'q' },
		{ "shard",   required_argument, NULL, OPT_SHARD },
		{ "verbose", no_argument,       NULL, 'v' },
		{ "version", no_argument,       NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct fm_embed_opts o = {
		.tool = "fm-embed", .mode = FM_EMBED_CHUNKS, .device = "auto", .dim = 384,
		.dtype = FM_EMBED_F32, .pooling = -1, .long_mode = FM_LONG_TRUNCATE,
		.shard_index = 0, .shard_count = 1,
	};
	bool dim_set = false, list = false, queries = false;
	int ch, device, status;
	uint64_t dim;
	struct fm_err err = { 0 };

	fm_io_init();
	while ((ch = getopt_long(argc, argv, "hlm:o:qvV", longopts, NULL)) != -1) {
		switch (ch) {
		case 'h':
			usage(0);
		case 'l':
			list = true;
			break;
		case 'm':
			o.model = optarg;
			break;
		case 'o':
			o.output = optarg;
			break;
		case 'q':
			queries = true;
			break;
		case 'v':
			o.verbose = true;
			break;
		case 'V':
			printf("fm-embed %s\n", FM_VERSION);
			return 0;
		case OPT_DEVICE:
			if (!fm_parse_device(optarg, &device))
				bad_arg("--device", "auto, cpu, cuda or cuda:N", optarg);
			o.device = optarg;
			break;
		case OPT_DIM:
			if (!fm_parse_u64(optarg, 1, FM_EMBED_MAX_DIM, &dim))
				bad_arg("--dim", "a whole number from 1 to 65536", optarg);
			o.dim = (uint32_t)dim;
			dim_set = true;
			break;
		case OPT_DTYPE:
			if (strcmp(optarg, "f32") == 0)
				o.dtype = FM_EMBED_F32;
			else if (strcmp(optarg, "f16") == 0)
				o.dtype = FM_EMBED_F16;
			else
				bad_arg("--dtype", "f32 or f16", optarg);
			break;
		case OPT_FULL:
			o.full = true;
			break;
		case OPT_LONG:
			if (strcmp(optarg, "truncate") == 0)
				o.long_mode = FM_LONG_TRUNCATE;
			else if (strcmp(optarg, "split") == 0)
				o.long_mode = FM_LONG_SPLIT;
			else
				bad_arg("--long", "truncate or split", optarg);
			break;
		case OPT_POOLING:
			if (strcmp(optarg, "mean") == 0)
				o.pooling = FM_POOL_MEAN;
			else if (strcmp(optarg, "cls") == 0)
				o.pooling = FM_POOL_CLS;
			else
				bad_arg("--pooling", "mean or cls", optarg);
			break;
		case OPT_SHARD:
			parse_shard(optarg, &o);
			break;
		default:
			usage(FM_EUSAGE);
		}
	}
	argc -= optind;
	argv += optind;

	if (list && queries) {
		fputs("fm-embed: --list and --queries exclude each other\n", stderr);
		usage(FM_EUSAGE);
	}
	if (argc > 1) {
		fputs("fm-embed: one input at most\n", stderr);
		usage(FM_EUSAGE);
	}
	o.input = argc == 1 ? argv[0] : NULL;
	o.mode = list ? FM_EMBED_LIST : queries ? FM_EMBED_QUERIES : FM_EMBED_CHUNKS;
	if (o.model != NULL && dim_set) {
		fputs("fm-embed: --dim is the built-in encoder's; a model has its own\n", stderr);
		usage(FM_EUSAGE);
	}
	if (o.model == NULL && o.pooling >= 0) {
		fputs("fm-embed: --pooling needs -m: the built-in encoder does not pool\n", stderr);
		usage(FM_EUSAGE);
	}
	if (o.mode != FM_EMBED_LIST && (o.output == NULL || strcmp(o.output, "-") == 0) &&
	    isatty(STDOUT_FILENO)) {
		fputs("fm-embed: refusing to write a binary embedding file to a terminal "
		    "(use -o file or a pipe)\n", stderr);
		return FM_EUSAGE;
	}
	status = run_embed(&o);
	if (fm_stdout_close(&err) != FM_OK && status < FM_EIO) {
		fm_report("fm-embed", "(stdout)", &err);
		status = FM_EIO;
	}
	return status;
}
