/*
 * fm-decode - dense decoding with a llama-architecture GGUF model: prints the
 * prompt, then the continuation as it is generated.  Options are parsed
 * here; the work is run_decode() in common/decode.c.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "decode.h"
#include "fm_error.h"
#include "io.h"

static const char *progname = "fm-decode";

enum {
	OPT_DEVICE = 256, OPT_KV_TYPE, OPT_SEED, OPT_TEMP, OPT_TOP_K, OPT_TOP_P, OPT_TRACE,
	OPT_CTX, OPT_DOC, OPT_ATTENTION, OPT_BUDGET, OPT_THRESHOLD, OPT_PAGES, OPT_PAGE_SCORE,
	OPT_SINK, OPT_RECENT, OPT_INTERVAL, OPT_SELECT, OPT_SELECT_BY, OPT_AUDIT,
	OPT_AUDIT_ATTENTION, OPT_AUDIT_DENSE, OPT_STATS_JSON,
};

static const struct option longopts[] = {
	{ "attention",       required_argument, NULL, OPT_ATTENTION },
	{ "audit",           required_argument, NULL, OPT_AUDIT },
	{ "audit-attention", no_argument,       NULL, OPT_AUDIT_ATTENTION },
	{ "audit-dense",     no_argument,       NULL, OPT_AUDIT_DENSE },
	{ "budget",          required_argument, NULL, OPT_BUDGET },
	{ "chunks",          required_argument, NULL, 'c' },
	{ "ctx",             required_argument, NULL, OPT_CTX },
	{ "doc",             required_argument, NULL, OPT_DOC },
	{ "encoder",         required_argument, NULL, 'e' },
	{ "index",           required_argument, NULL, 'i' },
	{ "interval",        required_argument, NULL, OPT_INTERVAL },
	{ "page-score",      required_argument, NULL, OPT_PAGE_SCORE },
	{ "pages",           required_argument, NULL, OPT_PAGES },
	{ "recent",          required_argument, NULL, OPT_RECENT },
	{ "select",          required_argument, NULL, OPT_SELECT },
	{ "select-by",       required_argument, NULL, OPT_SELECT_BY },
	{ "sink",            required_argument, NULL, OPT_SINK },
	{ "stats-json",      required_argument, NULL, OPT_STATS_JSON },
	{ "threshold",       required_argument, NULL, OPT_THRESHOLD },
	{ "device",  required_argument, NULL, OPT_DEVICE },
	{ "file",    required_argument, NULL, 'f' },
	{ "help",    no_argument,       NULL, 'h' },
	{ "kv-type", required_argument, NULL, OPT_KV_TYPE },
	{ "model",   required_argument, NULL, 'm' },
	{ "prompt",  required_argument, NULL, 'p' },
	{ "seed",    required_argument, NULL, OPT_SEED },
	{ "stats",   no_argument,       NULL, 'v' },
	{ "temp",    required_argument, NULL, OPT_TEMP },
	{ "tokens",  required_argument, NULL, 'n' },
	{ "top-k",   required_argument, NULL, OPT_TOP_K },
	{ "top-p",   required_argument, NULL, OPT_TOP_P },
	{ "trace",   required_argument, NULL, OPT_TRACE },
	{ NULL,      0,                 NULL, 0 },
};

static const char usage_text[] =
    "usage: fm-decode -m model.gguf [-v] [-n n] [-f file | -p text] [--ctx n]\n"
    "                 [--device dev] [--kv-type type] [--seed n] [--temp t]\n"
    "                 [--top-k k] [--top-p p] [--trace file] [--stats-json file]\n"
    "                 [-c chunks.fmc] [-i index.fmi] [-e encoder.gguf] [--doc name]\n"
    "                 [--attention lsa | dense] [--budget tokens | --budget percent%]\n"
    "                 [-k n] [--threshold score] [--pages n] [--page-score count | sum]\n"
    "                 [--sink n] [--recent n] [--interval n] [--select file]\n"
    "                 [--select-by index | recent | random] [--audit file]\n"
    "                 [--audit-attention] [--audit-dense]\n";

static const char help_text[] =
    "\n"
    "Runs a llama GGUF model on a prompt: prints the prompt, then the\n"
    "continuation as it is generated.\n"
    "\n"
    "  -m, --model model.gguf  the model (llama architecture)\n"
    "  -p, --prompt text       the prompt (default: standard input)\n"
    "  -f, --file file         read the prompt from file (- for standard input)\n"
    "  -n, --tokens n          new tokens at most, 0 to 16777216 (default 256)\n"
    "      --ctx n             context length (default: the model's trained length, or\n"
    "                          what a document and -n need)\n"
    "      --temp t            sampling temperature, 0 for greedy (default 0.8)\n"
    "      --top-k k           keep the k most likely tokens, 0 for all (default 40)\n"
    "      --top-p p           keep the most likely tokens up to probability p (default 0.95)\n"
    "      --seed n            seed of the sampler (default 0)\n"
    "      --trace file        one JSON line per position: token, next, top logits\n"
    "      --device dev        auto, cpu, cuda or cuda:N (default auto)\n"
    "      --kv-type type      KV cache element type, f16 or f32 (default f16)\n"
    "  -v, --stats             speeds and KV cache sizes on standard error\n"
    "      --stats-json file   the same statistics as one JSON object\n"
    "  -h, --help              print this help\n"
    "\n"
    "A document as context (the prompt is then the question):\n"
    "  -c, --chunks file       chunk file of the document (fm-chunk, this model's tokenizer)\n"
    "  -i, --index file        its index (fm-index), to choose the resident chunks\n"
    "  -e, --encoder file      the index's bert encoder (default: the built-in one)\n"
    "      --doc name          the document of that name (default: all, in order)\n"
    "      --attention mode    lsa: resident chunks only; dense: the whole cache (default lsa)\n"
    "      --budget n|p%       the resident reserve, in tokens or percent of the document\n"
    "                          (default 10%)\n"
    "  -k n                    the n best chunks (default: as many as the budget holds)\n"
    "      --threshold score   chunks scoring at least this\n"
    "      --pages n           the n densest pages\n"
    "      --page-score count|sum  page density: chunks above the threshold, or score sum\n"
    "      --sink n            always keep the first n chunks (default 1)\n"
    "      --recent n          always keep the last n chunks (default 1)\n"
    "      --interval n        re-select every n generated tokens (default 64)\n"
    "      --select file       the first resident set, as fm-select prints it (- for stdin)\n"
    "      --select-by how     index, or the baselines recent and random (default index)\n"
    "      --audit file        a JSON line per window: the resident chunks, scores, reasons\n"
    "      --audit-attention   add each chunk's dense attention mass and the recall\n"
    "      --audit-dense       run dense alongside: top-1 agreement and KL per window (CPU)\n"
    "\n"
    "Exit status: 0 ok, 2 usage, 3 bad input data, 4 I/O error, 5 device error.\n"
    "See fm-decode(1).\n";

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
bad_arg(const char *opt, const char *why)
{
	fprintf(stderr, "%s: %s: %s\n", progname, opt, why);
	exit(FM_EUSAGE);
}

static uint64_t
parse_uint(const char *opt, const char *s, uint64_t min, uint64_t max)
{
	uint64_t v;

	if (!fm_parse_u64(s, min, max, &v))
		bad_arg(opt, fm_parse_u64(s, 0, UINT64_MAX, &v) ? "out of range" : "not a number");
	return v;
}

static float
parse_float(const char *opt, const char *s, double min, double max)
{
	double v;

	if (!fm_parse_f64(s, min, max, &v))
		bad_arg(opt, fm_parse_f64(s, -HUGE_VAL, HUGE_VAL, &v) ? "out of range" : "not a number");
	return (float)v;
}

int
main(int argc, char *argv[])
{
	struct fm_decode_opts o = {
		.progname = progname, .n_new = 256, .temp = 0.8f, .top_k = 40, .top_p = 0.95f,
		.seed = 0, .device = "auto", .kv_type = FM_KV_F16,
		.budget_pct = 10, .interval = 64, .by = FM_LSA_BY_INDEX,
		.policy = { .sink = 1, .recent = 1, .page_score = FM_PAGE_COUNT },
	};
	const char *doc_only = NULL;   /* an option that needs -c */
	struct fm_err err = { 0 };
	const char *subject;
	int ch, rc;

	fm_io_init();
	while ((ch = getopt_long(argc, argv, "c:e:f:hi:k:m:n:p:v", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			o.chunks = optarg;
			break;
		case 'e':
			o.encoder = optarg;
			break;
		case 'i':
			o.index = optarg;
			break;
		case 'k':
			o.policy.k = parse_uint("-k", optarg, 1, UINT32_MAX);
			doc_only = "-k";
			break;
		case OPT_CTX:
			o.n_ctx = (uint32_t)parse_uint("--ctx", optarg, 1, FM_DECODE_MAX_CTX);
			break;
		case OPT_DOC:
			o.doc = optarg;
			doc_only = "--doc";
			break;
		case OPT_ATTENTION:
			if (strcmp(optarg, "dense") != 0 && strcmp(optarg, "lsa") != 0)
				bad_arg("--attention", "lsa or dense");
			o.dense = strcmp(optarg, "dense") == 0;
			break;
		case OPT_BUDGET: {
			size_t len = strlen(optarg);
			doc_only = "--budget";
			if (len > 1 && optarg[len - 1] == '%') {
				char pct[64];
				double v;
				if (len >= sizeof pct || (memcpy(pct, optarg, len - 1), pct[len - 1] = '\0',
				    !fm_parse_f64(pct, 0, 100, &v)) || !(v > 0))
					bad_arg("--budget", "a number of tokens or a percentage above 0 and at "
					    "most 100%");
				o.budget_pct = v;
				o.budget = 0;
			} else {
				o.budget = parse_uint("--budget", optarg, 1, FM_DECODE_MAX_CTX);
			}
			break;
		}
		case OPT_THRESHOLD:
			o.policy.threshold = parse_float("--threshold", optarg, -HUGE_VAL, HUGE_VAL);
			o.policy.has_threshold = true;
			doc_only = "--threshold";
			break;
		case OPT_PAGES:
			o.policy.pages = parse_uint("--pages", optarg, 1, UINT32_MAX);
			doc_only = "--pages";
			break;
		case OPT_PAGE_SCORE:
			if (strcmp(optarg, "count") != 0 && strcmp(optarg, "sum") != 0)
				bad_arg("--page-score", "count or sum");
			o.policy.page_score = strcmp(optarg, "sum") == 0 ? FM_PAGE_SUM : FM_PAGE_COUNT;
			doc_only = "--page-score";
			break;
		case OPT_SINK:
			o.policy.sink = parse_uint("--sink", optarg, 0, UINT32_MAX);
			doc_only = "--sink";
			break;
		case OPT_RECENT:
			o.policy.recent = parse_uint("--recent", optarg, 0, UINT32_MAX);
			doc_only = "--recent";
			break;
		case OPT_INTERVAL:
			o.interval = (uint32_t)parse_uint("--interval", optarg, 1, FM_DECODE_MAX_NEW);
			doc_only = "--interval";
			break;
		case OPT_SELECT:
			o.select = optarg;
			doc_only = "--select";
			break;
		case OPT_SELECT_BY:
			if (strcmp(optarg, "index") == 0)
				o.by = FM_LSA_BY_INDEX;
			else if (strcmp(optarg, "recent") == 0)
				o.by = FM_LSA_BY_RECENT;
			else if (strcmp(optarg, "random") == 0)
				o.by = FM_LSA_BY_RANDOM;
			else
				bad_arg("--select-by", "index, recent or random");
			doc_only = "--select-by";
			break;
		case OPT_AUDIT:
			o.audit = optarg;
			doc_only = "--audit";
			break;
		case OPT_AUDIT_ATTENTION:
			o.audit_attention = true;
			doc_only = "--audit-attention";
			break;
		case OPT_AUDIT_DENSE:
			o.audit_dense = true;
			doc_only = "--audit-dense";
			break;
		case OPT_STATS_JSON:
			o.stats_json = optarg;
			break;
		case 'f':
			o.prompt_file = optarg;
			break;
		case 'h':
			usage(0);
		case 'm':
			o.model = optarg;
			break;
		case 'n':
			o.n_new = (uint32_t)parse_uint("-n", optarg, 0, FM_DECODE_MAX_NEW);
			break;
		case 'p':
			o.prompt = optarg;
			break;
		case 'v':
			o.stats = true;
			break;
		case OPT_DEVICE:
			o.device = optarg;
			break;
		case OPT_KV_TYPE:
			if (fm_kv_type_parse(optarg, &o.kv_type) != 0)
				bad_arg("--kv-type", "unknown type (f16 or f32)");
			break;
		case OPT_SEED:
			o.seed = parse_uint("--seed", optarg, 0, UINT64_MAX);
			break;
		case OPT_TEMP:
			o.temp = parse_float("--temp", optarg, 0, 1e6);
			break;
		case OPT_TOP_K:
			o.top_k = (uint32_t)parse_uint("--top-k", optarg, 0, UINT32_MAX);
			break;
		case OPT_TOP_P:
			o.top_p = parse_float("--top-p", optarg, 0, 1);
			if (o.top_p <= 0)
				bad_arg("--top-p", "out of range");
			break;
		case OPT_TRACE:
			o.trace = optarg;
			break;
		default:
			usage(FM_EUSAGE);
		}
	}
	argc -= optind;
	argv += optind;
	if (o.model == NULL) {
		fprintf(stderr, "%s: -m model.gguf is required\n", progname);
		usage(FM_EUSAGE);
	}
	if (argc != 0)
		usage(FM_EUSAGE);
	if (o.prompt != NULL && o.prompt_file != NULL)
		bad_arg("-p", "cannot be given with -f");
	if (o.chunks == NULL && (o.index != NULL || o.encoder != NULL || doc_only != NULL))
		bad_arg(o.index != NULL ? "-i" : o.encoder != NULL ? "-e" : doc_only,
		    "needs a document (-c chunks.fmc)");
	if (o.chunks != NULL && o.dense && (o.index != NULL || doc_only != NULL) &&
	    !(doc_only != NULL && strcmp(doc_only, "--doc") == 0 && o.index == NULL))
		bad_arg("--attention", "dense uses the whole cache: no index, budget, policy or audit");
	if (o.policy.page_score == FM_PAGE_COUNT && o.policy.pages > 0 && !o.policy.has_threshold)
		bad_arg("--pages", "--page-score count needs --threshold");
	{
		int stdin_users = (o.chunks != NULL && strcmp(o.chunks, "-") == 0) +
		    (o.select != NULL && strcmp(o.select, "-") == 0) +
		    (o.prompt == NULL && (o.prompt_file == NULL || strcmp(o.prompt_file, "-") == 0));
		if (stdin_users > 1)
			bad_arg(o.select != NULL && strcmp(o.select, "-") == 0 ? "--select" : "-c",
			    "standard input is already the prompt or another input");
	}

	if ((rc = run_decode(&o, &subject, &err)) != FM_OK) {
		fm_report(progname, subject, &err);
		return rc;
	}
	if (fm_stdout_close(&err) != FM_OK) {
		fm_report(progname, "(stdout)", &err);
		return FM_EIO;
	}
	return 0;
}
