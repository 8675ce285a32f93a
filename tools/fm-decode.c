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
};

static const struct option longopts[] = {
	{ "ctx",     required_argument, NULL, 'c' },
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
    "usage: fm-decode -m model.gguf [-v] [-c n] [-n n] [-f file | -p text]\n"
    "                 [--device dev] [--kv-type type] [--seed n] [--temp t]\n"
    "                 [--top-k k] [--top-p p] [--trace file]\n";

static const char help_text[] =
    "\n"
    "Runs a llama GGUF model on a prompt: prints the prompt, then the\n"
    "continuation as it is generated.\n"
    "\n"
    "  -m, --model model.gguf  the model (llama architecture)\n"
    "  -p, --prompt text       the prompt (default: standard input)\n"
    "  -f, --file file         read the prompt from file (- for standard input)\n"
    "  -n, --tokens n          new tokens at most, 0 to 16777216 (default 256)\n"
    "  -c, --ctx n             context length (default: the model's trained length)\n"
    "      --temp t            sampling temperature, 0 for greedy (default 0.8)\n"
    "      --top-k k           keep the k most likely tokens, 0 for all (default 40)\n"
    "      --top-p p           keep the most likely tokens up to probability p (default 0.95)\n"
    "      --seed n            seed of the sampler (default 0)\n"
    "      --trace file        one JSON line per position: token, next, top logits\n"
    "      --device dev        auto, cpu, cuda or cuda:N (default auto)\n"
    "      --kv-type type      KV cache element type, f16 or f32 (default f16)\n"
    "  -v, --stats             speeds and KV cache sizes on standard error\n"
    "  -h, --help              print this help\n"
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
	};
	struct fm_err err = { 0 };
	const char *subject;
	int ch, rc;

	fm_io_init();
	while ((ch = getopt_long(argc, argv, "c:f:hm:n:p:v", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			o.n_ctx = (uint32_t)parse_uint("-c", optarg, 1, FM_DECODE_MAX_CTX);
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
