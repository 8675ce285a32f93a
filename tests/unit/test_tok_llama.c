/*
 * test_tok_llama.c - the SentencePiece tokenizer and the tokenizer front end
 * against llama.cpp's own test vectors (models/ggml-vocab-llama-spm.gguf.inp
 * and .out, split as llama.cpp's test-tokenizer-0 splits them), plus what
 * the vectors cannot show: byte spans that tile the input, decode round
 * trips on arbitrary bytes, newline cuts, fingerprints, and metadata that a
 * hostile file could hold, built here as small GGUFs in memory.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "tap.h"
#include "tok_internal.h"
#include "tokenizer.h"

#define SEP "\n__ggml_vocab_test__\n"

static const char *top = ".";

static char *
slurp(const char *rel, size_t *n)
{
	char path[4096];
	FILE *f;
	char *buf = NULL;
	long sz;

	snprintf(path, sizeof path, "%s/%s", top, rel);
	if ((f = fopen(path, "rb")) == NULL)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (sz = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
	    (buf = malloc((size_t)sz + 1)) != NULL) {
		if (fread(buf, 1, (size_t)sz, f) != (size_t)sz) {
			free(buf);
			buf = NULL;
		} else {
			buf[sz] = '\0';
			*n = (size_t)sz;
		}
	}
	fclose(f);
	return buf;
}

static struct fm_tok *
load(const char *rel, struct fm_gguf **gp)
{
	char path[4096];
	struct fm_err err = { 0 };
	struct fm_gguf *g;
	struct fm_tok *t;

	snprintf(path, sizeof path, "%s/%s", top, rel);
	if ((g = fm_gguf_open(path, &err)) == NULL) {
		printf("# %s: %s\n", path, err.msg);
		return NULL;
	}
	if ((t = fm_tok_from_gguf(g, &err)) == NULL)
		printf("# %s: %s\n", path, err.msg);
	if (gp != NULL)
		*gp = g;
	else
		fm_gguf_close(g);
	return t;
}

struct cases {
	const char **text;
	size_t *len;
	size_t n;
};

/* Splits as test-tokenizer-0: text before each separator; what follows the last is a case only if non-empty. */
static void
split_cases(char *raw, size_t n, struct cases *c)
{
	size_t pos = 0, cap = 64;
	const size_t seplen = strlen(SEP);

	c->text = malloc(cap * sizeof *c->text);
	c->len = malloc(cap * sizeof *c->len);
	c->n = 0;
	while (pos < n) {
		char *next = memmem(raw + pos, n - pos, SEP, seplen);
		size_t end = next ? (size_t)(next - raw) : n;
		if (c->n == cap) {
			cap *= 2;
			c->text = realloc(c->text, cap * sizeof *c->text);
			c->len = realloc(c->len, cap * sizeof *c->len);
		}
		c->text[c->n] = raw + pos;
		c->len[c->n] = end - pos;
		c->n++;
		if (next == NULL)
			break;
		pos = end + seplen;
	}
}

/* Whether the spans of toks[from..] tile text[0..len): each starts where the last ended. */
static int
spans_tile(const struct fm_tokens *toks, size_t from, size_t len)
{
	uint32_t at = 0;

	for (size_t i = from; i < toks->n; i++) {
		if (toks->start[i] != at || toks->end[i] < toks->start[i])
			return 0;
		at = toks->end[i];
	}
	return at == len;
}

static void
print_ids(const char *what, const int32_t *ids, size_t n)
{
	printf("# %s:", what);
	for (size_t i = 0; i < n; i++)
		printf(" %d", ids[i]);
	printf("\n");
}

/*
 * llama.cpp's SPM algorithm in its plainest form, for comparison: the whole
 * text at once, and at each step a scan for the best adjacent pair (highest
 * score, leftmost on ties), O(n^2).  The real encoder splits the text into
 * words, caches them and keeps the pairs in a heap; both must agree.
 */
static size_t
ref_encode(const struct fm_tok *t, const char *text, size_t len, int prefix, int32_t *ids, size_t cap)
{
	char *e = malloc(3 * len + 4);
	size_t *off = malloc((3 * len + 4) * sizeof *off), *n = malloc((3 * len + 4) * sizeof *n);
	size_t ne = 0, ns = 0, nid = 0;

	if (prefix)
		memcpy(e + ne, "\xE2\x96\x81", 3), ne += 3;
	for (size_t i = 0; i < len; i++)
		if (text[i] == ' ')
			memcpy(e + ne, "\xE2\x96\x81", 3), ne += 3;
		else
			e[ne++] = text[i];
	for (size_t i = 0; i < ne; ) {
		unsigned char c = (unsigned char)e[i];
		size_t k = c < 0xC0 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
		if (k > ne - i)
			k = ne - i;
		off[ns] = i;
		n[ns++] = k;
		i += k;
	}
	for (;;) {
		size_t best = SIZE_MAX;
		float score = 0;
		for (size_t i = 0; i + 1 < ns; i++) {
			int32_t id = fm_tok_lookup(t, e + off[i], n[i] + n[i + 1]);
			if (id >= 0 && (best == SIZE_MAX || t->score[id] > score)) {
				best = i;
				score = t->score[id];
			}
		}
		if (best == SIZE_MAX)
			break;
		n[best] += n[best + 1];
		memmove(off + best + 1, off + best + 2, (ns - best - 2) * sizeof *off);
		memmove(n + best + 1, n + best + 2, (ns - best - 2) * sizeof *n);
		ns--;
	}
	for (size_t i = 0; i < ns; i++) {
		int32_t id = fm_tok_lookup(t, e + off[i], n[i]);
		if (id >= 0) {
			if (nid < cap)
				ids[nid++] = id;
			continue;
		}
		for (size_t j = off[i]; j < off[i] + n[i]; j++) {
			unsigned char b = (unsigned char)e[j];
			id = t->byte_tok[b] >= 0 ? t->byte_tok[b] : fm_tok_lookup(t, e + j, 1);
			if (nid < cap)
				ids[nid++] = id >= 0 ? id : t->unk;
		}
	}
	free(e);
	free(off);
	free(n);
	return nid;
}

/* Whether the encoder and ref_encode agree on text (with or without the leading space). */
static int
same_as_ref(const struct fm_tok *t, const char *text, size_t len, int prefix, struct fm_tokens *toks)
{
	static int32_t want[4096];
	struct fm_err err = { 0 };
	size_t nw = ref_encode(t, text, len, prefix, want, 4096);

	fm_tokens_clear(toks);
	if (fm_tok_encode(t, text, len, prefix ? 0 : FM_TOK_CONTINUE, toks, &err) != FM_OK)
		return 0;
	return len == 0 ? toks->n == 0 : toks->n == nw && memcmp(toks->ids, want, nw * sizeof *want) == 0;
}

static void
test_vectors(const struct fm_tok *t)
{
	size_t ni, no;
	char *inp = slurp("models/ggml-vocab-llama-spm.gguf.inp", &ni);
	char *outs = slurp("models/ggml-vocab-llama-spm.gguf.out", &no);
	struct cases c;
	struct fm_tokens toks = { 0 };
	struct fm_err err = { 0 };
	char *line;
	size_t nlines = 0, pass = 0, tiled = 0, round = 0;
	char *dec = NULL;
	size_t dlen, dcap = 0;

	if (!ok(inp != NULL && outs != NULL, "read the llama-spm test vectors")) {
		free(inp);
		free(outs);
		return;
	}
	split_cases(inp, ni, &c);
	for (size_t i = 0; i < no; i++)
		if (outs[i] == '\n')
			nlines++;
	ok(c.n == nlines && c.n > 30, "%zu cases in .inp, %zu lines in .out", c.n, nlines);

	line = outs;
	for (size_t k = 0; k < c.n && line != NULL; k++) {
		char *nl = strchr(line, '\n');
		int32_t want[1024];
		size_t nw = 0;
		char *p = line, *end;
		int same;

		if (nl != NULL)
			*nl = '\0';
		while (*p != '\0') {
			long v = strtol(p, &end, 10);
			if (end == p)
				break;
			if (nw < 1024)
				want[nw++] = (int32_t)v;
			p = end;
		}
		fm_tokens_clear(&toks);
		if (fm_tok_encode(t, c.text[k], c.len[k], 0, &toks, &err) != FM_OK) {
			printf("# case %zu: %s\n", k, err.msg);
			continue;
		}
		same = toks.n == nw && memcmp(toks.ids, want, nw * sizeof *want) == 0;
		if (same)
			pass++;
		else {
			printf("# case %zu (%zu bytes) differs\n", k, c.len[k]);
			print_ids("want", want, nw);
			print_ids("got ", toks.ids, toks.n);
		}
		if (spans_tile(&toks, 0, c.len[k]))
			tiled++;
		else
			printf("# case %zu: spans do not tile the input\n", k);
		dlen = 0;
		if (fm_tok_decode(t, toks.ids, toks.n, 0, &dec, &dlen, &dcap, &err) == FM_OK &&
		    dlen == c.len[k] && memcmp(dec, c.text[k], dlen) == 0)
			round++;
		else
			printf("# case %zu: decode gives %zu bytes '%.*s'\n", k, dlen, (int)dlen, dec);
		line = nl ? nl + 1 : NULL;
	}
	ok(pass == c.n, "llama-spm vectors: %zu of %zu cases give llama.cpp's tokens", pass, c.n);
	{
		size_t agree = 0;
		for (size_t k = 0; k < c.n; k++)
			agree += same_as_ref(t, c.text[k], c.len[k], 1, &toks);
		ok(agree == c.n, "llama-spm vectors: the plain reference agrees on %zu of %zu cases", agree, c.n);
		ok(same_as_ref(t, inp, ni, 1, &toks) && same_as_ref(t, inp, ni, 0, &toks),
		    "the plain reference agrees on the whole .inp as one text");
	}
	ok(tiled == c.n, "llama-spm vectors: spans tile the input in %zu of %zu cases", tiled, c.n);
	ok(round == c.n, "llama-spm vectors: decode(encode(x)) == x in %zu of %zu cases", round, c.n);

	/* All cases as one document, cut after every newline: the same tokens. */
	{
		struct fm_tokens whole = { 0 }, parts = { 0 };
		size_t from = 0;
		int rc;

		rc = fm_tok_encode(t, inp, ni, 0, &whole, &err);
		for (size_t i = 0; i < ni && rc == FM_OK; i++)
			if (inp[i] == '\n' || i + 1 == ni) {
				size_t n0 = parts.n;
				rc = fm_tok_encode(t, inp + from, i + 1 - from, from ? FM_TOK_CONTINUE : 0,
				    &parts, &err);
				for (size_t j = n0; j < parts.n; j++) {
					parts.start[j] += (uint32_t)from;
					parts.end[j] += (uint32_t)from;
				}
				from = i + 1;
			}
		ok(rc == FM_OK && fm_tok_newline_is_boundary(t) && whole.n == parts.n &&
		    memcmp(whole.ids, parts.ids, whole.n * sizeof *whole.ids) == 0 &&
		    memcmp(whole.start, parts.start, whole.n * sizeof *whole.start) == 0 &&
		    memcmp(whole.end, parts.end, whole.n * sizeof *whole.end) == 0,
		    "cutting the whole .inp after each newline gives the same %zu tokens and spans", whole.n);
		ok(spans_tile(&whole, 0, ni), "spans tile the whole .inp");
		fm_tokens_free(&whole);
		fm_tokens_free(&parts);
	}
	free(dec);
	free(c.text);
	free(c.len);
	fm_tokens_free(&toks);
	free(inp);
	free(outs);
}

static uint64_t rng = 0x2545F4914F6CDD1DULL;

static uint32_t
rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng >> 11);
}

/*
 * Random bytes, biased towards spaces, ASCII and UTF-8 leads so that spaces
 * meet truncated sequences often.  A literal U+2581 is left out: by design it
 * decodes as a space.
 */
static size_t
random_text(char *buf, size_t cap)
{
	static const char pool[] = " aeiou tnsr.\n\xC3\xE2\xF0\x80\xBF\xE2\x96\x81\xFF";
	size_t n = rnd() % cap;

	for (size_t i = 0; i < n; i++) {
		switch (rnd() % 3) {
		case 0:
			buf[i] = (char)(rnd() & 0xFF);
			break;
		default:
			buf[i] = pool[rnd() % (sizeof pool - 1)];
			break;
		}
		if (i >= 2 && memcmp(buf + i - 2, "\xE2\x96\x81", 3) == 0)
			buf[i] = 'x';
	}
	return n;
}

static void
test_random(const struct fm_tok *t, const char *name)
{
	char text[300];
	struct fm_tokens toks = { 0 };
	struct fm_err err = { 0 };
	char *dec = NULL;
	size_t dlen, dcap = 0;
	int bad_round = 0, bad_span = 0, bad_rc = 0, bad_cont = 0, bad_ref = 0;
	const int rounds = 3000;

	for (int r = 0; r < rounds; r++) {
		size_t n = random_text(text, sizeof text);
		unsigned flags = r % 2 ? FM_TOK_ADD_SPECIAL : 0;
		size_t skip;

		fm_tokens_clear(&toks);
		if (fm_tok_encode(t, text, n, flags, &toks, &err) != FM_OK) {
			bad_rc++;
			continue;
		}
		skip = (flags && n > 0) ? 1 : 0;
		if (flags && (toks.n == 0 || toks.ids[0] != fm_tok_bos(t)))
			bad_span++;
		else if (!spans_tile(&toks, skip, n))
			bad_span++;
		dlen = 0;
		if (fm_tok_decode(t, toks.ids, toks.n, 0, &dec, &dlen, &dcap, &err) != FM_OK ||
		    dlen != n || memcmp(dec, text, n) != 0) {
			if (bad_round++ < 3)
				printf("# %s: round trip fails on %zu bytes\n", name, n);
		}
		if (!same_as_ref(t, text, n, r % 3 != 0, &toks) && bad_ref++ < 3)
			printf("# %s: differs from the plain reference on %zu bytes\n", name, n);
		/* Without the leading space, decoding with FM_TOK_CONTINUE also round-trips. */
		fm_tokens_clear(&toks);
		dlen = 0;
		if (fm_tok_encode(t, text, n, FM_TOK_CONTINUE, &toks, &err) != FM_OK ||
		    fm_tok_decode(t, toks.ids, toks.n, FM_TOK_CONTINUE, &dec, &dlen, &dcap, &err) != FM_OK ||
		    dlen != n || memcmp(dec, text, n) != 0 || !spans_tile(&toks, 0, n))
			bad_cont++;
	}
	ok(bad_rc == 0, "%s: %d random byte strings encode", name, rounds);
	ok(bad_span == 0, "%s: spans tile random byte strings (%d bad)", name, bad_span);
	ok(bad_round == 0, "%s: decode(encode(x)) == x on random byte strings (%d bad)", name, bad_round);
	ok(bad_cont == 0, "%s: the same with FM_TOK_CONTINUE (%d bad)", name, bad_cont);
	ok(bad_ref == 0, "%s: the plain reference agrees on random byte strings (%d bad)", name, bad_ref);
	free(dec);
	fm_tokens_free(&toks);
}

static void
test_stories(const struct fm_tok *t)
{
	static const int32_t want[] = { 1, 403, 407, 261, 378 };
	const char *s = "Once upon a time";
	struct fm_tokens toks = { 0 };
	struct fm_err err = { 0 };
	char *dec = NULL;
	size_t dlen = 0, dcap = 0;

	ok(fm_tok_encode(t, s, strlen(s), FM_TOK_ADD_SPECIAL, &toks, &err) == FM_OK &&
	    toks.n == 5 && memcmp(toks.ids, want, sizeof want) == 0,
	    "stories260K: \"Once upon a time\" with BOS is 1 403 407 261 378");
	if (toks.n > 0)
		print_ids("got", toks.ids, toks.n);
	ok(toks.n == 5 && toks.start[0] == 0 && toks.end[0] == 0 && spans_tile(&toks, 1, strlen(s)),
	    "stories260K: BOS has an empty span, the rest tile the text");
	ok(fm_tok_decode(t, toks.ids, toks.n, 0, &dec, &dlen, &dcap, &err) == FM_OK &&
	    dlen == strlen(s) && memcmp(dec, s, dlen) == 0, "stories260K: decodes back without BOS");
	dlen = 0;
	ok(fm_tok_decode(t, toks.ids, toks.n, FM_TOK_ADD_SPECIAL, &dec, &dlen, &dcap, &err) == FM_OK &&
	    dlen == 3 + strlen(s) && memcmp(dec, "<s>Once", 7) == 0, "stories260K: decodes with <s>");
	fm_tokens_clear(&toks);
	ok(fm_tok_encode(t, "", 0, FM_TOK_ADD_SPECIAL, &toks, &err) == FM_OK && toks.n == 1 &&
	    toks.ids[0] == 1, "empty text with specials is just BOS");
	fm_tokens_clear(&toks);
	ok(fm_tok_encode(t, "", 0, 0, &toks, &err) == FM_OK && toks.n == 0, "empty text is no tokens");
	{
		int32_t bad = 512;
		dlen = 0;
		ok(fm_tok_decode(t, &bad, 1, 0, &dec, &dlen, &dcap, &err) == FM_EDATA && dlen == 0,
		    "decoding an id outside the vocabulary is FM_EDATA (%s)", err.msg);
	}
	free(dec);
	fm_tokens_free(&toks);
}

/* A GGUF v3 with no tensors, built key by key. */
struct gb {
	unsigned char *b;
	size_t n, cap;
	uint64_t nkv;
};

static void
gb_put(struct gb *g, const void *p, size_t n)
{
	if (g->n + n > g->cap) {
		g->cap = (g->n + n) * 2 + 256;
		g->b = realloc(g->b, g->cap);
	}
	memcpy(g->b + g->n, p, n);
	g->n += n;
}

static void gb_u32(struct gb *g, uint32_t v) { unsigned char b[4]; for (int i = 0; i < 4; i++) b[i] = (unsigned char)(v >> 8 * i); gb_put(g, b, 4); }
static void gb_u64(struct gb *g, uint64_t v) { unsigned char b[8]; for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> 8 * i); gb_put(g, b, 8); }
static void gb_str(struct gb *g, const char *s) { gb_u64(g, strlen(s)); gb_put(g, s, strlen(s)); }

static void
gb_key(struct gb *g, const char *key, uint32_t type)
{
	gb_str(g, key);
	gb_u32(g, type);
	g->nkv++;
}

static void
gb_kv_str(struct gb *g, const char *key, const char *v)
{
	gb_key(g, key, FM_GGUF_STRING);
	gb_str(g, v);
}

static void
gb_kv_u32(struct gb *g, const char *key, uint32_t v)
{
	gb_key(g, key, FM_GGUF_UINT32);
	gb_u32(g, v);
}

/* The tiny vocabulary: <unk> <s> </s>, bytes, and a few merges. */
static const char *const tiny[] = {
	"<unk>", "<s>", "</s>", "\xE2\x96\x81", "a", "b", "\xE2\x96\x81" "a", "ab", "\xE2\x96\x81" "ab",
	"<u>", "<u><u>",
};
#define NTINY (sizeof tiny / sizeof tiny[0])

enum { NO_TOKENS = 1, TOKENS_INTS = 2, SCORES_SHORT = 4, BOS_RANGE = 8, NO_MODEL = 16,
	MODEL_GPT2 = 32, TYPE_RANGE = 64, FLAG_TYPE = 128, TOKENS_STRING = 256 };

static struct fm_tok *
tiny_tok(unsigned how, struct fm_err *err, int *gguf_ok)
{
	struct gb g = { 0 };
	struct gb kv = { 0 };
	struct fm_gguf *gg;
	struct fm_tok *t = NULL;
	uint32_t n = NTINY;

	if (!(how & NO_MODEL))
		gb_kv_str(&kv, "tokenizer.ggml.model", how & MODEL_GPT2 ? "gpt2" : "llama");
	if (how & TOKENS_STRING) {
		gb_kv_str(&kv, "tokenizer.ggml.tokens", "a");
	} else if (how & TOKENS_INTS) {
		gb_key(&kv, "tokenizer.ggml.tokens", FM_GGUF_ARRAY);
		gb_u32(&kv, FM_GGUF_INT32);
		gb_u64(&kv, n);
		for (uint32_t i = 0; i < n; i++)
			gb_u32(&kv, i);
	} else if (!(how & NO_TOKENS)) {
		gb_key(&kv, "tokenizer.ggml.tokens", FM_GGUF_ARRAY);
		gb_u32(&kv, FM_GGUF_STRING);
		gb_u64(&kv, n);
		for (uint32_t i = 0; i < n; i++)
			gb_str(&kv, tiny[i]);
	}
	gb_key(&kv, "tokenizer.ggml.scores", FM_GGUF_ARRAY);
	gb_u32(&kv, FM_GGUF_FLOAT32);
	gb_u64(&kv, how & SCORES_SHORT ? n - 1 : n);
	for (uint32_t i = 0; i < (how & SCORES_SHORT ? n - 1 : n); i++) {
		float f = -(float)i;
		uint32_t bits;
		memcpy(&bits, &f, 4);
		gb_u32(&kv, bits);
	}
	gb_key(&kv, "tokenizer.ggml.token_type", FM_GGUF_ARRAY);
	gb_u32(&kv, FM_GGUF_INT32);
	gb_u64(&kv, n);
	for (uint32_t i = 0; i < n; i++)
		gb_u32(&kv, i == 0 ? FM_TT_UNKNOWN : i < 3 ? FM_TT_CONTROL : i >= 9 ? FM_TT_USER_DEFINED :
		    (how & TYPE_RANGE) && i == 5 ? 9 : FM_TT_NORMAL);
	gb_kv_u32(&kv, "tokenizer.ggml.bos_token_id", how & BOS_RANGE ? n : 1);
	gb_kv_u32(&kv, "tokenizer.ggml.seperator_token_id", UINT32_MAX);
	if (how & FLAG_TYPE)
		gb_kv_u32(&kv, "tokenizer.ggml.add_bos_token", 1);

	gb_put(&g, "GGUF", 4);
	gb_u32(&g, 3);
	gb_u64(&g, 0);
	gb_u64(&g, kv.nkv);
	gb_put(&g, kv.b, kv.n);
	while (g.n % 32 != 0)
		gb_put(&g, "", 1);
	gg = fm_gguf_open_memory(g.b, g.n, err);
	*gguf_ok = gg != NULL;
	if (gg != NULL) {
		t = fm_tok_from_gguf(gg, err);
		fm_gguf_close(gg);
	}
	free(g.b);
	free(kv.b);
	return t;
}

static void
test_hostile(void)
{
	static const struct {
		unsigned how;
		const char *what;
		const char *msg;   /* part of the reason */
	} bad[] = {
		{ NO_MODEL, "no tokenizer.ggml.model", "no tokenizer" },
		{ MODEL_GPT2, "model gpt2", "unsupported tokenizer model 'gpt2'" },
		{ NO_TOKENS, "tokens missing", "tokenizer.ggml.tokens" },
		{ TOKENS_INTS, "tokens an array of integers", "tokenizer.ggml.tokens" },
		{ TOKENS_STRING, "tokens a string", "tokenizer.ggml.tokens" },
		{ SCORES_SHORT, "one score short", "tokenizer.ggml.scores" },
		{ BOS_RANGE, "bos id out of range", "bos_token_id" },
		{ TYPE_RANGE, "token type 9", "type" },
		{ FLAG_TYPE, "add_bos_token an integer", "add_bos_token" },
	};
	struct fm_err err = { 0 };
	struct fm_tok *t;
	struct fm_tokens toks = { 0 };
	int gok;
	static const int32_t want[] = { 1, 8, 6, 0 };

	t = tiny_tok(0, &err, &gok);
	ok(gok && t != NULL, "a tiny in-memory vocabulary loads%s%s", t ? "" : ": ", t ? "" : err.msg);
	if (t != NULL) {
		/* "ab a" plus a byte with no token: unk. */
		ok(fm_tok_encode(t, "ab a\xFF", 5, FM_TOK_ADD_SPECIAL, &toks, &err) == FM_OK &&
		    toks.n == 4 && memcmp(toks.ids, want, sizeof want) == 0 && spans_tile(&toks, 1, 5),
		    "tiny vocabulary: merges by score, unk for a byte with no token");
		ok(fm_tok_n_vocab(t) == NTINY && t->sep == -1 && fm_tok_unk(t) == 0 && fm_tok_eos(t) == 2,
		    "tiny vocabulary: 0xFFFFFFFF means no separator; llama.cpp's default unk and eos");
		{
			/* Longest user-defined token first; the run after one gets the leading space. */
			static const int32_t wu[] = { 8, 10, 9, 6, 9 };
			static const uint32_t ws[] = { 0, 2, 8, 11, 12 }, we[] = { 2, 8, 11, 12, 15 };
			const char *txt = "ab<u><u><u>a<u>";
			char *dec = NULL;
			size_t dlen = 0, dcap = 0;

			fm_tokens_clear(&toks);
			ok(fm_tok_encode(t, txt, strlen(txt), 0, &toks, &err) == FM_OK && toks.n == 5 &&
			    memcmp(toks.ids, wu, sizeof wu) == 0 && memcmp(toks.start, ws, sizeof ws) == 0 &&
			    memcmp(toks.end, we, sizeof we) == 0,
			    "tiny vocabulary: user-defined tokens are cut out first, as llama.cpp does");
			ok(fm_tok_decode(t, toks.ids, toks.n, 0, &dec, &dlen, &dcap, &err) == FM_OK &&
			    dlen == 16 && memcmp(dec, "ab<u><u><u> a<u>", 16) == 0,
			    "tiny vocabulary: user-defined tokens decode as stored");
			free(dec);
		}
		fm_tok_free(t);
	}
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		memset(&err, 0, sizeof err);
		t = tiny_tok(bad[i].how, &err, &gok);
		ok(gok && t == NULL && err.status == FM_EDATA && strstr(err.msg, bad[i].msg) != NULL,
		    "%s: FM_EDATA (%s)", bad[i].what, err.msg);
		fm_tok_free(t);
	}
	fm_tokens_free(&toks);
}

int
main(void)
{
	const char *e = getenv("FM_TOP");
	struct fm_tok *spm, *stories, *again;
	uint64_t fp;

	if (e != NULL && *e != '\0')
		top = e;
	spm = load("models/ggml-vocab-llama-spm.gguf", NULL);
	stories = load("models/stories260K.gguf", NULL);
	ok(spm != NULL && stories != NULL, "load both llama vocabularies");
	if (spm == NULL || stories == NULL)
		return done_testing();
	ok(fm_tok_kind(spm) == FM_TOK_LLAMA && strcmp(fm_tok_kind_name(spm), "llama") == 0 &&
	    fm_tok_n_vocab(spm) == 32000 && fm_tok_bos(spm) == 1 && fm_tok_eos(spm) == 2 &&
	    fm_tok_unk(spm) == 0, "llama-spm: kind, size and special ids");
	ok(fm_tok_newline_is_boundary(spm) && fm_tok_newline_is_boundary(stories),
	    "a newline is a token boundary in both vocabularies");
	ok(fm_tok_text(spm, 1).len == 3 && memcmp(fm_tok_text(spm, 1).ptr, "<s>", 3) == 0 &&
	    fm_tok_text(spm, 32000).len == 0 && fm_tok_text(spm, -1).len == 0,
	    "fm_tok_text in and out of range");
	ok(fm_tok_lookup(spm, "\xE2\x96\x81the", 6) == 278 && fm_tok_lookup(spm, "<0x0A>", 6) == 13 &&
	    fm_tok_lookup(spm, "no such piece", 13) == -1, "fm_tok_lookup");

	test_vectors(spm);
	test_random(spm, "llama-spm");
	test_random(stories, "stories260K");
	test_stories(stories);

	fp = fm_tok_fingerprint(spm);
	again = load("models/ggml-vocab-llama-spm.gguf", NULL);
	ok(again != NULL && fm_tok_fingerprint(again) == fp, "the fingerprint is the same on a second load");
	ok(fp != fm_tok_fingerprint(stories), "the two vocabularies have different fingerprints");
	/* Chunk files record the fingerprint: it must not change from one build to the next. */
	ok(fp == UINT64_C(0xb83314d652a551df) && fm_tok_fingerprint(stories) == UINT64_C(0x06c7cfe53143dd78),
	    "the fingerprints have their recorded values");
	printf("# fingerprints: llama-spm %016" PRIx64 ", stories260K %016" PRIx64 "\n", fp,
	    fm_tok_fingerprint(stories));
	fm_tok_free(again);

	/* One fm_tokens, and so one scratch and word cache, used with both vocabularies in turn. */
	{
		const char *txt = "The cat sat on the mat.\nOnce upon a time, the cat sat.";
		struct fm_tokens shared = { 0 }, a = { 0 }, b = { 0 };
		struct fm_err err = { 0 };
		int same = 1;

		for (int r = 0; r < 4; r++) {
			const struct fm_tok *t = r % 2 ? stories : spm;
			struct fm_tokens *fresh = r % 2 ? &b : &a;
			fm_tokens_clear(&shared);
			fm_tokens_free(fresh);
			if (fm_tok_encode(t, txt, strlen(txt), 0, &shared, &err) != FM_OK ||
			    fm_tok_encode(t, txt, strlen(txt), 0, fresh, &err) != FM_OK || shared.n != fresh->n ||
			    memcmp(shared.ids, fresh->ids, shared.n * sizeof *shared.ids) != 0)
				same = 0;
		}
		ok(same, "one fm_tokens used with two vocabularies in turn gives each its own tokens");
		fm_tokens_free(&shared);
		fm_tokens_free(&a);
		fm_tokens_free(&b);
	}
	/* Latin-1 before a newline: the lead byte takes the newline into its character. */
	{
		const char *txt = "caf\xE9\nAB";
		struct fm_tokens whole = { 0 }, parts = { 0 };
		struct fm_err err = { 0 };

		fm_tok_encode(spm, txt, 7, 0, &whole, &err);
		fm_tok_encode(spm, txt, 5, 0, &parts, &err);
		fm_tok_encode(spm, txt + 5, 2, FM_TOK_CONTINUE, &parts, &err);
		ok(!fm_tok_newline_cut_ok(spm, txt, 5) && fm_tok_newline_cut_ok(spm, "cafe\n", 5) &&
		    fm_tok_newline_cut_ok(spm, "\n", 1) && fm_tok_newline_cut_ok(spm, "\xC3\xA9\n", 3) &&
		    !fm_tok_newline_cut_ok(spm, "cafe", 4) &&
		    (whole.n != parts.n || memcmp(whole.ids, parts.ids, whole.n * sizeof *whole.ids) != 0),
		    "fm_tok_newline_cut_ok refuses a newline that an invalid lead byte takes in");
		fm_tokens_free(&whole);
		fm_tokens_free(&parts);
	}

	test_hostile();
	fm_tok_free(spm);
	fm_tok_free(stories);
	return done_testing();
}
