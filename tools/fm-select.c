/*
 * fm-select - a query's resident set: the chunks of an index that a
 * selection policy keeps.  Parses options and calls run_select();
 * everything else is in common/selecttool.c and common/select.c.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "fm_error.h"
#include "io.h"
#include "selecttool.h"

#define FM_VERSION "0.1"

static const char usage_text[] =
    "usage: fm-select [-v] [-k n] [--threshold score] [--budget tokens | --budget percent%]\n"
    "                 [--pages n] [--page-score count | sum] [--sink n] [--recent n]\n"
    "                 [--order doc | score] [--json] [--text -c chunkfile]\n"
    "                 [--device device] [-q text | --query-file file] index\n";

static const char help_text[] =
    "\nScores every chunk of an index against each query (-q, each line of standard\n"
    "input, or each vector of a query embedding file) and prints the chunks a\n"
    "selection policy keeps, one line each: ID<TAB>SCORE, with the query's number\n"
    "first for queries from standard input or a file.  Without a policy, -k 8.\n"
    "\n"
    "  -k n                        the n best chunks\n"
    "      --threshold score       chunks scoring at least this (with -k: the best of them)\n"
    "      --budget tokens|p%      keep ranked chunks while their tokens fit\n"
    "      --pages n               every chunk of the n densest pages\n"
    "      --page-score count|sum  page density: chunks above the threshold, or score sum\n"
    "      --sink n                always keep the first n chunks\n"
    "      --recent n              always keep the last n chunks\n"
    "      --order doc|score       output order (default doc: ascending id)\n"
    "      --json                  JSON lines: id, doc, chunk, page, score, reason\n"
    "      --text                  add each chunk's text (needs -c chunkfile)\n"
    "  -c, --chunks chunkfile      the index's chunk file\n"
    "      --device auto|cpu|cuda[:N]  where to score (default auto)\n"
    "  -q, --query text            one query\n"
    "      --query-file file       query vectors from fm-embed --queries\n"
    "  -v, --verbose               print what was done, and how fast, on standard error\n"
    "  -h, --help                  print this help\n"
    "  -V, --version               print the version\n"
    "\n"
    "Exit status: 0 ok, 1 a query selected nothing, 2 usage, 3 bad input data,\n"
    "4 I/O error, 5 device.  See fm-select(1).\n";

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
bad(const char *opt, const char *what, const char *s)
{
	fprintf(stderr, "fm-select: %s: expected %s, got '%s'\n", opt, what, s);
	exit(FM_EUSAGE);
}

/* A whole number in [lo, UINT64_MAX], or a usage error naming the option. */
static uint64_t
parse_count(const char *opt, const char *s, uint64_t lo)
{
	uint64_t v;

	if (!fm_parse_u64(s, lo, UINT64_MAX, &v))
		bad(opt, lo ? "a whole number of at least 1" : "a whole number", s);
	return v;
}

int
main(int argc, char **argv)
{
	enum {
		OPT_BUDGET = 256, OPT_DEVICE, OPT_JSON, OPT_ORDER, OPT_PAGE_SCORE, OPT_PAGES,
		OPT_QUERY_FILE, OPT_RECENT, OPT_SINK, OPT_TEXT, OPT_THRESHOLD,
	};
	static const struct option longopts[] = {
		{ "budget",     required_argument, NULL, OPT_BUDGET },
		{ "chunks",     required_argument, NULL, 'c' },
		{ "device",     required_argument, NULL, OPT_DEVICE },
		{ "help",       no_argument,       NULL, 'h' },
		{ "json",       no_argument,       NULL, OPT_JSON },
		{ "order",      required_argument, NULL, OPT_ORDER },
		{ "page-score", required_argument, NULL, OPT_PAGE_SCORE },
		{ "pages",      required_argument, NULL, OPT_PAGES },
		{ "query",      required_argument, NULL, 'q' },
		{ "query-file", required_argument, NULL, OPT_QUERY_FILE },
		{ "recent",     required_argument, NULL, OPT_RECENT },
		{ "sink",       required_argument, NULL, OPT_SINK },
		{ "text",       no_argument,       NULL, OPT_TEXT },
		{ "threshold",  required_argument, NULL, OPT_THRESHOLD },
		{ "verbose",    no_argument,       NULL, 'v' },
		{ "version",    no_argument,       NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct fm_select_opts o = { .tool = "fm-select", .device = -1 };
	bool page_score_given = false;
	int ch;

	fm_io_init();
	while ((ch = getopt_long(argc, argv, "c:hk:q:vV", longopts, NULL)) != -1) {
		double threshold;
		size_t len;
		switch (ch) {
		case 'c':
			o.chunkfile = optarg;
			break;
		case 'h':
			usage(0);
		case 'k':
			o.policy.k = parse_count("-k", optarg, 1);
			break;
		case 'q':
			o.query = optarg;
			break;
		case 'v':
			o.verbose = true;
			break;
		case 'V':
			printf("fm-select %s\n", FM_VERSION);
			return 0;
		case OPT_BUDGET:
			len = strlen(optarg);
			if (len > 1 && len < 32 && optarg[len - 1] == '%') {
				char pct[32];
				memcpy(pct, optarg, len - 1);
				pct[len - 1] = '\0';
				if (!fm_parse_f64(pct, 0, 100, &o.budget_pct) || !(o.budget_pct > 0))
					bad("--budget", "a number of tokens or a percentage above 0 and at most 100%", optarg);
				o.policy.budget = 1;   /* set from the index once it is open */
			} else {
				o.policy.budget = parse_count("--budget", optarg, 1);
			}
			break;
		case OPT_DEVICE:
			if (!fm_parse_device(optarg, &o.device))
				bad("--device", "auto, cpu, cuda or cuda:N", optarg);
			break;
		case OPT_JSON:
			o.json = true;
			break;
		case OPT_ORDER:
			if (strcmp(optarg, "doc") == 0)
				o.order_score = false;
			else if (strcmp(optarg, "score") == 0)
				o.order_score = true;
			else
				bad("--order", "doc or score", optarg);
			break;
		case OPT_PAGE_SCORE:
			if (strcmp(optarg, "count") == 0)
				o.policy.page_score = FM_PAGE_COUNT;
			else if (strcmp(optarg, "sum") == 0)
				o.policy.page_score = FM_PAGE_SUM;
			else
				bad("--page-score", "count or sum", optarg);
			page_score_given = true;
			break;
		case OPT_PAGES:
			o.policy.pages = parse_count("--pages", optarg, 1);
			break;
		case OPT_QUERY_FILE:
			o.query_file = optarg;
			break;
		case OPT_RECENT:
			o.policy.recent = parse_count("--recent", optarg, 0);
			break;
		case OPT_SINK:
			o.policy.sink = parse_count("--sink", optarg, 0);
			break;
		case OPT_TEXT:
			o.text = true;
			break;
		case OPT_THRESHOLD:
			if (!fm_parse_f64(optarg, -HUGE_VAL, HUGE_VAL, &threshold))
				bad("--threshold", "a number", optarg);
			o.policy.threshold = (float)threshold;
			o.policy.has_threshold = true;
			break;
		default:
			usage(FM_EUSAGE);
		}
	}
	argc -= optind;
	argv += optind;
	if (argc != 1) {
		fputs(argc == 0 ? "fm-select: no index given\n" : "fm-select: one index only\n", stderr);
		usage(FM_EUSAGE);
	}
	o.index = argv[0];
	if (o.query != NULL && o.query_file != NULL) {
		fputs("fm-select: -q and --query-file exclude each other\n", stderr);
		usage(FM_EUSAGE);
	}
	if (o.text && o.chunkfile == NULL) {
		fputs("fm-select: --text needs -c chunkfile\n", stderr);
		usage(FM_EUSAGE);
	}
	if (o.chunkfile != NULL && !o.text) {
		fputs("fm-select: -c is for --text\n", stderr);
		usage(FM_EUSAGE);
	}
	/* Counting a page's chunks needs a threshold; without one, pages score by their sum. */
	if (o.policy.pages > 0 && !page_score_given)
		o.policy.page_score = o.policy.has_threshold ? FM_PAGE_COUNT : FM_PAGE_SUM;
	if (o.policy.pages > 0 && o.policy.page_score == FM_PAGE_COUNT && !o.policy.has_threshold) {
		fputs("fm-select: --page-score count needs --threshold\n", stderr);
		return FM_EUSAGE;
	}
	if (page_score_given && o.policy.pages == 0) {
		fputs("fm-select: --page-score is for --pages\n", stderr);
		return FM_EUSAGE;
	}
	if (o.policy.k == 0 && !o.policy.has_threshold && o.policy.pages == 0 && o.policy.budget == 0)
		o.policy.k = 8;
	int status = run_select(&o);
	struct fm_err err = {0};
	if (fm_stdout_close(&err) != FM_OK && status < FM_EIO) {
		fm_report("fm-select", "(stdout)", &err);
		status = FM_EIO;
	}
	return status;
}
