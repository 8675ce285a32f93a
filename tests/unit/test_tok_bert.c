/*
 * test_tok_bert.c - the BERT WordPiece tokenizer against llama.cpp's test
 * vectors for bge-small (models/ggml-vocab-bert-bge.gguf.inp/.out, split
 * exactly as llama.cpp's test-tokenizer-0 splits them), plus what the vectors
 * do not show: spans, [CLS]/[SEP], the word length limit, invalid UTF-8,
 * random bytes, and decoding then encoding again.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "tap.h"
#include "tokenizer.h"

/* The whole file, NUL-terminated, its length in *n. */
static char *
slurp(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t cap = 0, len = 0, got;

	if (f == NULL)
		return NULL;
	do {
		if (cap - len < 2) {
			char *p = realloc(buf, cap = cap ? cap * 2 : 65536);

			if (p == NULL) {
				free(buf);
				fclose(f);
				return NULL;
			}
			buf = p;
		}
		got = fread(buf + len, 1, cap - len - 1, f);
		len += got;
	} while (got > 0);
	fclose(f);
	buf[len] = '\0';
	*n = len;
	return buf;
}

/* The ids as .out writes them: each preceded by a space. */
static void
ids_string(const struct fm_tokens *tk, size_t from, char *s, size_t cap)
{
	size_t used = 0;

	s[0] = '\0';
	for (size_t i = from; i < tk->n && used < cap; i++)
		used += (size_t)snprintf(s + used, cap - used, " %d", tk->ids[i]);
}

/* Spans inside [0, len), each starting where or after the previous one ended. */
static int
spans_ok(const struct fm_tokens *tk, size_t from, size_t len)
{
	uint32_t prev_end = 0;

	for (size_t i = from; i < tk->n; i++) {
		if (tk->start[i] > tk->end[i] || tk->end[i] > len || tk->start[i] < prev_end)
			return 0;
		prev_end = tk->end[i];
	}
	return 1;
}

static int
has_id(const struct fm_tokens *tk, int32_t id)
{
	for (size_t i = 0; i < tk->n; i++)
		if (tk->ids[i] == id)
			return 1;
	return 0;
}

static int
encode(const struct fm_tok *t, const char *s, size_t n, unsigned flags, struct fm_tokens *tk)
{
	struct fm_err err = { 0 };
	int rc;

	fm_tokens_clear(tk);
	rc = fm_tok_encode(t, s, n, flags, tk, &err);
	if (rc != FM_OK)
		printf("# encode: %s\n", err.msg);
	return rc;
}

/*
 * Every case of .inp against the same line of .out.  The cases are split as
 * test-tokenizer-0 splits them: at each separator, with the text after the
 * last one dropped when the file ends there.
 */
static void
test_vectors(const struct fm_tok *t, const char *top)
{
	static const char sep[] = "\n__ggml_vocab_test__\n";
	char path[4096], got[8192];
	size_t ni, no, pos = 0, ncase = 0, npass = 0, nround = 0, nlines = 0;
	char *inp, *outp, *line;
	struct fm_tokens tk = { 0 }, again = { 0 };

	snprintf(path, sizeof path, "%s/models/ggml-vocab-bert-bge.gguf.inp", top);
	inp = slurp(path, &ni);
	snprintf(path, sizeof path, "%s/models/ggml-vocab-bert-bge.gguf.out", top);
	outp = slurp(path, &no);
	if (!ok(inp != NULL && outp != NULL, "read the .inp and .out files")) {
		free(inp);
		free(outp);
		return;
	}
	for (size_t i = 0; i < no; i++)
		nlines += outp[i] == '\n';
	if (no > 0 && outp[no - 1] != '\n')
		nlines++;

	line = outp;
	while (pos < ni) {
		const char *next = memmem(inp + pos, ni - pos, sep, sizeof sep - 1);
		size_t n = next ? (size_t)(next - inp) - pos : ni - pos;
		char *eol = line ? strchr(line, '\n') : NULL;
		const char *text = inp + pos;

		ncase++;
		if (eol != NULL)
			*eol = '\0';
		if (encode(t, text, n, 0, &tk) == FM_OK) {
			ids_string(&tk, 0, got, sizeof got);
			if (line != NULL && strcmp(got, line) == 0)
				npass++;
			else
				ok(0, "case %zu '%.*s'\n#   want:%s\n#   got: %s", ncase, (int)n, text,
				   line ? line : "(no line)", got);
			if (!spans_ok(&tk, 0, n))
				ok(0, "case %zu: spans out of order or outside the text", ncase);
			/* Decode, encode again: the same ids, unless [UNK] lost the text. */
			if (!has_id(&tk, fm_tok_unk(t))) {
				char *dec = NULL;
				size_t dlen = 0, dcap = 0;
				struct fm_err err = { 0 };

				if (fm_tok_decode(t, tk.ids, tk.n, 0, &dec, &dlen, &dcap, &err) == FM_OK &&
				    encode(t, dec ? dec : "", dlen, 0, &again) == FM_OK) {
					char got2[8192];

					ids_string(&again, 0, got2, sizeof got2);
					if (strcmp(got, got2) == 0)
						nround++;
					else
						ok(0, "case %zu: decoded to '%.*s', which encodes to%s", ncase,
						   (int)dlen, dec, got2);
				} else {
					ok(0, "case %zu: decode failed: %s", ncase, err.msg);
				}
				free(dec);
			} else {
				nround++;
			}
		}
		line = eol ? eol + 1 : NULL;
		if (next == NULL)
			break;
		pos = (size_t)(next - inp) + sizeof sep - 1;
	}
	ok(ncase == nlines && ncase > 0, "%zu cases for %zu lines of .out", ncase, nlines);
	ok(npass == ncase, "%zu of %zu test vectors match exactly", npass, ncase);
	ok(nround == ncase, "%zu of %zu cases decode and encode back to the same ids", nround, ncase);
	fm_tokens_free(&tk);
	fm_tokens_free(&again);
	free(inp);
	free(outp);
}

struct span_case {
	const char *text;
	const char *ids;     /* as in .out */
	const char *spans;   /* "start-end start-end ..." */
};

static void
test_spans(const struct fm_tok *t)
{
	static const struct span_case cases[] = {
		{ "Hello world", " 7592 2088", "0-5 6-11" },
		/* ▁fu covers "Fü" (3 bytes), hrer the rest. */
		{ "F\xC3\xBChrer", " 11865 17875", "0-3 3-7" },
		{ "ied 4 \xC2\xBD months", " 29464 2094 1018 1092 2706", "0-2 2-3 4-5 6-8 9-15" },
		/* Dropped bytes (invalid UTF-8, a zero width space) stay inside the word. */
		{ "hel\xFFlo", " 7592", "0-6" },
		{ "hel\xE2\x80\x8Blo", " 7592", "0-8" },
		{ "\x01hello\x7F", " 7592", "1-6" },
		/* Punctuation and ideographs are words of their own (想 is not in the vocabulary). */
		{ "a,b", " 1037 1010 1038", "0-1 1-2 2-3" },
		{ "\xE6\x88\x91\xE6\x83\xB3", " 1855 100", "0-3 3-6" },
		/* Ideographic space and NBSP are whitespace. */
		{ "hello\xE3\x80\x80world\xC2\xA0!", " 7592 2088 999", "0-5 8-13 15-16" },
		/* Accents go, case goes. */
		{ "H\xC3\x89LLO", " 7592", "0-6" },
	};
	struct fm_tokens tk = { 0 };
	char got[1024], sp[1024];

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const char *s = cases[i].text;
		size_t used = 0;

		if (encode(t, s, strlen(s), 0, &tk) != FM_OK) {
			ok(0, "span case %zu encodes", i);
			continue;
		}
		ids_string(&tk, 0, got, sizeof got);
		sp[0] = '\0';
		for (size_t k = 0; k < tk.n; k++)
			used += (size_t)snprintf(sp + used, sizeof sp - used, "%s%u-%u", k ? " " : "",
			    tk.start[k], tk.end[k]);
		ok(strcmp(got, cases[i].ids) == 0 && strcmp(sp, cases[i].spans) == 0,
		   "span case %zu: ids%s spans %s (want%s, %s)", i, got, sp, cases[i].ids, cases[i].spans);
	}
	fm_tokens_free(&tk);
}

static void
test_special(const struct fm_tok *t)
{
	struct fm_tokens tk = { 0 };
	const char *s = "Hello world";
	size_t n = strlen(s);

	ok(encode(t, s, n, FM_TOK_ADD_SPECIAL, &tk) == FM_OK && tk.n == 4 &&
	   tk.ids[0] == fm_tok_bos(t) && tk.ids[1] == 7592 && tk.ids[2] == 2088 &&
	   tk.ids[3] == fm_tok_eos(t), "FM_TOK_ADD_SPECIAL: [CLS] hello world [SEP]");
	ok(tk.n == 4 && tk.start[0] == 0 && tk.end[0] == 0 && tk.start[3] == n && tk.end[3] == n,
	   "[CLS] and [SEP] have empty spans at the ends");
	ok(encode(t, "", 0, FM_TOK_ADD_SPECIAL, &tk) == FM_OK && tk.n == 2 &&
	   tk.ids[0] == 101 && tk.ids[1] == 102, "empty text with specials: [CLS] [SEP]");
	ok(encode(t, " \t\n", 3, 0, &tk) == FM_OK && tk.n == 0, "whitespace only: no tokens");
	fm_tokens_free(&tk);
}

/* Words of up to 100 code points are split; longer ones are one [UNK]. */
static void
test_word_limit(const struct fm_tok *t)
{
	char buf[512];
	struct fm_tokens tk = { 0 };

	memset(buf, 'a', sizeof buf);
	buf[0] = ' ';
	ok(encode(t, buf, 101, 0, &tk) == FM_OK && tk.n > 1 && !has_id(&tk, fm_tok_unk(t)) &&
	   tk.start[0] == 1 && tk.end[tk.n - 1] == 101, "a word of 100 letters is split into pieces");
	ok(encode(t, buf, 102, 0, &tk) == FM_OK && tk.n == 1 && tk.ids[0] == fm_tok_unk(t) &&
	   tk.start[0] == 1 && tk.end[0] == 102, "a word of 101 letters is one [UNK] over the whole word");
	memcpy(buf + 300, " x.", 3);
	ok(encode(t, buf, 303, 0, &tk) == FM_OK && tk.n == 3 && tk.ids[0] == fm_tok_unk(t) &&
	   tk.ids[1] == 1060 && tk.ids[2] == 1012 && tk.start[1] == 301,
	   "a 299-letter word, then more words");
	/* 100 two-byte letters: the longest word buffer. */
	for (int i = 0; i < 100; i++)
		memcpy(buf + 2 * i, "\xC3\xA9", 2);
	ok(encode(t, buf, 200, 0, &tk) == FM_OK && tk.n > 1 && !has_id(&tk, fm_tok_unk(t)),
	   "100 accented letters are split into pieces");
	fm_tokens_free(&tk);
}

/* Random bytes, with invalid UTF-8 aplenty, never crash and keep spans in order. */
static void
test_random(const struct fm_tok *t)
{
	enum { ROUNDS = 3000, MAXLEN = 700 };
	static const char *const pieces[] = {
		" ", "\t", "\n", ".", ",", "a", "e", "the", "ing", "\xC3\xA9", "\xC3", "\xA9",
		"\xE4\xB8\xAD", "\xE4\xB8", "\xF0\x9F\x98\x80", "\xF0\x9F", "\xED\xA0\x80", "\xC0\x80",
		"\xEF\xBF\xBD", "\xE2\x80\x8B", "\xE3\x80\x80", "\xFF", "\x00", "\xF4\x90\x80\x80",
		"[UNK]", "[CLS]", "\xE2\x96\x81", "##",
	};
	char buf[MAXLEN + 8];
	struct fm_tokens tk = { 0 };
	unsigned seed = 7;
	size_t bad_rc = 0, bad_span = 0, bad_id = 0, total = 0;

	for (int r = 0; r < ROUNDS; r++) {
		size_t n = 0, want;

		seed = seed * 1103515245u + 12345u;
		want = (seed >> 8) % MAXLEN;
		while (n < want) {
			seed = seed * 1103515245u + 12345u;
			if ((seed >> 16) & 1) {
				buf[n++] = (char)(seed >> 24);
			} else {
				const char *p = pieces[(seed >> 20) % (sizeof pieces / sizeof pieces[0])];
				size_t pl = p[0] ? strlen(p) : 1;

				if (n + pl > MAXLEN)
					break;
				memcpy(buf + n, p, pl);
				n += pl;
			}
		}
		if (encode(t, buf, n, r & 1 ? FM_TOK_ADD_SPECIAL : 0, &tk) != FM_OK) {
			bad_rc++;
			continue;
		}
		total += tk.n;
		if (!spans_ok(&tk, 0, n))
			bad_span++;
		for (size_t k = 0; k < tk.n; k++)
			if (tk.ids[k] < 0 || (uint32_t)tk.ids[k] >= fm_tok_n_vocab(t))
				bad_id++;
	}
	ok(bad_rc == 0 && bad_span == 0 && bad_id == 0,
	   "%d random texts: %zu tokens, %zu failures, %zu bad spans, %zu bad ids",
	   ROUNDS, total, bad_rc, bad_span, bad_id);
	fm_tokens_free(&tk);
}

int
main(void)
{
	const char *top = getenv("FM_TOP");
	char path[4096];
	struct fm_err err = { 0 };
	struct fm_gguf *g;
	struct fm_tok *t;

	if (top == NULL || *top == '\0')
		top = ".";
	snprintf(path, sizeof path, "%s/models/ggml-vocab-bert-bge.gguf", top);
	g = fm_gguf_open(path, &err);
	if (!ok(g != NULL, "open %s", path)) {
		printf("# %s\n", err.msg);
		return done_testing();
	}
	t = fm_tok_from_gguf(g, &err);
	fm_gguf_close(g);  /* the tokenizer keeps its own copy */
	if (!ok(t != NULL, "tokenizer from the GGUF")) {
		printf("# %s\n", err.msg);
		return done_testing();
	}
	ok(fm_tok_kind(t) == FM_TOK_BERT && strcmp(fm_tok_kind_name(t), "bert") == 0, "kind bert");
	ok(fm_tok_n_vocab(t) == 30522, "30522 tokens");
	ok(fm_tok_bos(t) == 101 && fm_tok_eos(t) == 102 && fm_tok_unk(t) == 100,
	   "[CLS] 101, [SEP] 102, [UNK] 100");

	test_vectors(t, top);
	test_spans(t);
	test_special(t);
	test_word_limit(t);
	test_random(t);
	fm_tok_free(t);
	return done_testing();
}
