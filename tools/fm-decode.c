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

static void __attribute__((noreturn))
usage(int status)
{
	FILE *f = status == 0 ? stdout : stderr;

	fprintf(f,
	    "usage: fm-decode -m model [-v] [-c n] [-n n] [-f file | -p text] [--device dev]\n"
	    "                 [--kv-type type] [--seed n] [--temp t] [--top-k k] [--top-p p]\n"
	    "                 [--trace file]\n");
	if (status == 0)
		fprintf(f,
		    "  -m, --model FILE    llama GGUF model\n"
		    "  -p, --prompt TEXT   prompt text (default: standard input)\n"
		    "  -f, --file FILE     read the prompt from FILE (- for standard input)\n"
		    "  -n, --tokens N      new tokens at most (default 256)\n"
		    "  -c, --ctx N         context length (default: the model's trained length)\n"
		    "      --temp T        sampling temperature, 0 for greedy (default 0.8)\n"
		    "      --top-k K       keep the K most likely tokens, 0 for all (default 40)\n"
		    "      --top-p P       keep the most likely tokens up to probability P (default 0.95)\n"
		    "      --seed N        random seed (default 0)\n"
		    "      --trace FILE    JSON line per position: token, next token, top logits\n"
		    "      --device DEV    auto, cpu, cuda or cuda:N (default auto)\n"
		    "      --kv-type TYPE  KV cache type, f16 or f32 (default f16)\n"
		    "  -v, --stats         speeds and cache sizes on standard error\n"
		    "  -h, --help          this help\n");
	exit(status == 0 ? 0 : FM_EUSAGE);
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
	unsigned long long v;
	char *end;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (s[0] == '\0' || s[0] == '-' || s[0] == '+' || *end != '\0')
		bad_arg(opt, "not a number");
	if (errno == ERANGE || v < min || v > max)
		bad_arg(opt, "out of range");
	return v;
}

static float
parse_float(const char *opt, const char *s, double min, double max)
{
	double v;
	char *end;

	errno = 0;
	v = strtod(s, &end);
	if (s[0] == '\0' || *end != '\0' || !isfinite(v))
		bad_arg(opt, "not a number");
	if (errno == ERANGE || v < min || v > max)
		bad_arg(opt, "out of range");
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
	if (argc != 0 || o.model == NULL)
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
