/*
 * test_unicode.c - the UTF-8 decoder on every edge that arbitrary bytes
 * reach (overlong, surrogate, truncated, too large), exhaustively against the
 * encoder, and samples of the generated property tables.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "unicode.h"
#include "unicode_data.h"

/* Decodes s[0..n) once and compares code point and length. */
static void
dec(const char *s, size_t n, uint32_t want_cp, size_t want_len, const char *what)
{
	size_t len = 0;
	uint32_t cp = fm_utf8_next(s, n, &len);

	ok(cp == want_cp && len == want_len, "decode %s: U+%04X len %zu (want U+%04X len %zu)",
	   what, (unsigned)cp, len, (unsigned)want_cp, want_len);
}

static void
test_decode_edges(void)
{
	const uint32_t R = FM_UNI_REPLACEMENT;

	dec("A", 1, 'A', 1, "ascii");
	dec("", 1, 0, 1, "nul");
	dec("\x7F", 1, 0x7F, 1, "del");
	dec("\xC2\xA9", 2, 0xA9, 2, "2-byte");
	dec("\xDF\xBF", 2, 0x7FF, 2, "2-byte max");
	dec("\xE0\xA0\x80", 3, 0x800, 3, "3-byte min");
	dec("\xE2\x82\xAC", 3, 0x20AC, 3, "euro sign");
	dec("\xED\x9F\xBF", 3, 0xD7FF, 3, "just below the surrogates");
	dec("\xEE\x80\x80", 3, 0xE000, 3, "just above the surrogates");
	dec("\xEF\xBF\xBD", 3, 0xFFFD, 3, "a real U+FFFD");
	dec("\xEF\xBF\xBF", 3, 0xFFFF, 3, "U+FFFF");
	dec("\xF0\x90\x80\x80", 4, 0x10000, 4, "4-byte min");
	dec("\xF0\x9F\x98\x80", 4, 0x1F600, 4, "emoji");
	dec("\xF4\x8F\xBF\xBF", 4, 0x10FFFF, 4, "4-byte max U+10FFFF");

	dec("\xC0\x80", 2, R, 1, "overlong NUL C0 80");
	dec("\xC1\xBF", 2, R, 1, "overlong C1 BF");
	dec("\xE0\x80\xAF", 3, R, 1, "overlong 3-byte '/'");
	dec("\xE0\x9F\xBF", 3, R, 1, "overlong 3-byte U+07FF");
	dec("\xF0\x80\x80\xAF", 4, R, 1, "overlong 4-byte '/'");
	dec("\xF0\x8F\xBF\xBF", 4, R, 1, "overlong 4-byte U+FFFF");
	dec("\xED\xA0\x80", 3, R, 1, "surrogate D800");
	dec("\xED\xBF\xBF", 3, R, 1, "surrogate DFFF");
	dec("\xF4\x90\x80\x80", 4, R, 1, "U+110000");
	dec("\xF5\x80\x80\x80", 4, R, 1, "lead F5");
	dec("\xF7\xBF\xBF\xBF", 4, R, 1, "lead F7 (U+1FFFFF)");
	dec("\xF8\x88\x80\x80\x80", 5, R, 1, "5-byte form");
	dec("\xFC\x84\x80\x80\x80\x80", 6, R, 1, "6-byte form");
	dec("\xFE", 1, R, 1, "FE");
	dec("\xFF", 1, R, 1, "FF");
	dec("\x80", 1, R, 1, "lone continuation");
	dec("\xBF\x41", 2, R, 1, "continuation before ascii");
	dec("\xC2", 1, R, 1, "truncated 2-byte at the end");
	dec("\xC2\x41", 2, R, 1, "2-byte cut by ascii");
	dec("\xE2\x82", 2, R, 1, "truncated 3-byte at the end");
	dec("\xE2\x82\xAC", 2, R, 1, "3-byte cut by the length, not the NUL");
	dec("\xE2\x28\xA1", 3, R, 1, "3-byte with a bad second byte");
	dec("\xE2\x82\x28", 3, R, 1, "3-byte with a bad third byte");
	dec("\xF0\x9F\x98", 3, R, 1, "truncated 4-byte");
	dec("\xF0\x9F\x98\x80", 3, R, 1, "4-byte cut by the length");
	dec("\xF0\x9F\x28\x80", 4, R, 1, "4-byte with a bad third byte");
}

/*
 * Every code point encodes and decodes back; every sequence of up to three
 * bytes either decodes to a code point whose encoding is exactly those bytes
 * (so nothing overlong or surrogate is accepted) or is U+FFFD of length 1.
 */
static void
test_decode_exhaustive(void)
{
	uint32_t cp, i, bad = 0, first_bad = 0, wrong = 0, first_wrong = 0;
	char buf[4];

	for (cp = 0; cp <= FM_UNI_MAX; cp++) {
		size_t n, len;
		uint32_t back;

		if (cp >= 0xD800 && cp <= 0xDFFF)
			continue;
		n = fm_utf8_encode(cp, buf);
		back = fm_utf8_next(buf, n, &len);
		if (back != cp || len != n || n != (cp < 0x80 ? 1u : cp < 0x800 ? 2u : cp < 0x10000 ? 3u : 4u)) {
			if (bad++ == 0)
				first_bad = cp;
		}
	}
	ok(bad == 0, "every scalar value round-trips (%u bad, first U+%04X)", (unsigned)bad, (unsigned)first_bad);

	for (i = 0; i < (1u << 24); i++) {
		unsigned char b[3] = { (unsigned char)(i >> 16), (unsigned char)(i >> 8), (unsigned char)i };
		char enc[4];
		size_t len, m;
		uint32_t c = fm_utf8_next((const char *)b, 3, &len);

		/* A rejection is right as long as valid input never is one (above). */
		if (len == 1 && c == FM_UNI_REPLACEMENT && b[0] >= 0x80)
			continue;
		m = fm_utf8_encode(c, enc);
		if (m != len || memcmp(enc, b, len) != 0) {
			if (wrong++ == 0)
				first_wrong = i;
		}
	}
	ok(wrong == 0, "every accepted 1..3-byte sequence is canonical (%u wrong, first %06X)",
	   (unsigned)wrong, (unsigned)first_wrong);

	ok(fm_utf8_encode(0xD800, buf) == 3 && memcmp(buf, "\xEF\xBF\xBD", 3) == 0,
	   "a surrogate encodes as U+FFFD");
	ok(fm_utf8_encode(0x110000, buf) == 3 && memcmp(buf, "\xEF\xBF\xBD", 3) == 0,
	   "a value above U+10FFFF encodes as U+FFFD");
}

/* A walk over random bytes advances by 1..4 and lands exactly on the end. */
static void
test_decode_walk(void)
{
	enum { N = 1 << 16 };
	static char buf[N];
	size_t pos = 0, steps = 0;
	int good = 1;
	unsigned seed = 12345;

	for (size_t i = 0; i < N; i++) {
		seed = seed * 1103515245u + 12345u;
		/* Bias toward lead and continuation bytes, where the edges are. */
		buf[i] = (char)((seed >> 16) & 1 ? 0x80 | (seed >> 8 & 0x7F) : seed >> 8);
	}
	while (pos < N) {
		size_t len;

		fm_utf8_next(buf + pos, N - pos, &len);
		if (len < 1 || len > 4 || pos + len > N)
			good = 0;
		pos += len ? len : 1;
		steps++;
	}
	ok(good && pos == N, "random bytes: %zu steps, every byte accounted for", steps);
}

struct flag_case {
	uint32_t cp;
	unsigned flags;
	const char *what;
};

static void
test_flags(void)
{
	static const struct flag_case cases[] = {
		{ 'A', FM_UNI_LETTER, "A" },
		{ 'z', FM_UNI_LETTER, "z" },
		{ '7', FM_UNI_NUMBER, "7" },
		{ ' ', FM_UNI_SEPARATOR | FM_UNI_WHITESPACE, "space" },
		{ '\t', FM_UNI_CONTROL | FM_UNI_WHITESPACE, "tab" },
		{ '\n', FM_UNI_CONTROL | FM_UNI_WHITESPACE, "newline" },
		{ 0x1F, FM_UNI_CONTROL, "U+001F (not White_Space, unlike isspace())" },
		{ 0, FM_UNI_CONTROL, "NUL" },
		{ '!', FM_UNI_PUNCT, "!" },
		{ '_', FM_UNI_PUNCT, "_" },
		{ '$', FM_UNI_SYMBOL, "$" },
		{ '^', FM_UNI_SYMBOL, "^" },
		{ 0x85, FM_UNI_CONTROL | FM_UNI_WHITESPACE, "NEL" },
		{ 0xA0, FM_UNI_SEPARATOR | FM_UNI_WHITESPACE, "NBSP" },
		{ 0xAD, FM_UNI_CONTROL, "soft hyphen (Cf)" },
		{ 0xBD, FM_UNI_NUMBER, "one half" },
		{ 0xDC, FM_UNI_LETTER, "U with diaeresis" },
		{ 0x301, FM_UNI_MARK, "combining acute" },
		{ 0x378, FM_UNI_UNDEFINED, "unassigned U+0378" },
		{ 0x1680, FM_UNI_SEPARATOR | FM_UNI_WHITESPACE, "ogham space mark" },
		{ 0x200B, FM_UNI_CONTROL, "zero width space (Cf, not White_Space)" },
		{ 0x2028, FM_UNI_SEPARATOR | FM_UNI_WHITESPACE, "line separator" },
		{ 0x2014, FM_UNI_PUNCT, "em dash" },
		{ 0x20AC, FM_UNI_SYMBOL, "euro sign" },
		{ 0x3000, FM_UNI_SEPARATOR | FM_UNI_WHITESPACE, "ideographic space" },
		{ 0x3002, FM_UNI_PUNCT, "ideographic full stop" },
		{ 0x4E2D, FM_UNI_LETTER, "CJK ideograph" },
		{ 0xAC00, FM_UNI_LETTER, "Hangul syllable" },
		{ 0xD800, FM_UNI_CONTROL, "surrogate (Cs)" },
		{ 0xE000, FM_UNI_CONTROL, "private use (Co)" },
		{ 0xFEFF, FM_UNI_CONTROL, "BOM (Cf)" },
		{ 0xFFFD, FM_UNI_SYMBOL, "replacement character" },
		{ 0xFFFF, FM_UNI_UNDEFINED, "noncharacter U+FFFF" },
		{ 0x1F600, FM_UNI_SYMBOL, "emoji" },
		{ 0x1D7CE, FM_UNI_NUMBER, "mathematical bold digit zero" },
		{ 0xE0001, FM_UNI_CONTROL, "language tag (Cf)" },
		{ 0x10FFFD, FM_UNI_CONTROL, "plane 16 private use" },
		{ 0x10FFFF, FM_UNI_UNDEFINED, "U+10FFFF" },
		{ 0x110000, FM_UNI_UNDEFINED, "beyond Unicode" },
		{ 0xFFFFFFFF, FM_UNI_UNDEFINED, "0xFFFFFFFF" },
	};
	size_t i;
	uint32_t cp;
	int same = 1;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		unsigned f = fm_uni_flags(cases[i].cp);

		ok(f == cases[i].flags, "flags of U+%04X %s: %#x (want %#x)", (unsigned)cases[i].cp,
		   cases[i].what, f, cases[i].flags);
	}

	/* The direct table for U+0000..U+00FF agrees with the ranges. */
	ok(fm_uni_flag_ranges[0] >> FM_UNI_FLAG_BITS == 0, "flag ranges start at U+0000");
	for (cp = 0; cp < 256; cp++) {
		size_t k = 0;

		while (k + 1 < fm_uni_n_flag_ranges && fm_uni_flag_ranges[k + 1] >> FM_UNI_FLAG_BITS <= cp)
			k++;
		if ((fm_uni_flag_ranges[k] & ((1u << FM_UNI_FLAG_BITS) - 1)) != fm_uni_flags_low[cp])
			same = 0;
	}
	ok(same, "the U+0000..U+00FF table matches the ranges");
	for (i = 1; i < fm_uni_n_flag_ranges; i++)
		if (fm_uni_flag_ranges[i] >> FM_UNI_FLAG_BITS <= fm_uni_flag_ranges[i - 1] >> FM_UNI_FLAG_BITS)
			break;
	ok(i == fm_uni_n_flag_ranges, "flag ranges are sorted");
	ok(strcmp(fm_uni_version_string(), "") != 0, "Unicode version %s", fm_uni_version_string());
}

struct map_case {
	uint32_t from, to;
	const char *what;
};

static void
test_maps(void)
{
	static const struct map_case lower[] = {
		{ 'A', 'a', "A" }, { 'Z', 'z', "Z" }, { 'a', 'a', "a" }, { '@', '@', "@" },
		{ 0xC4, 0xE4, "A with diaeresis" }, { 0xDC, 0xFC, "U with diaeresis" },
		{ 0xD7, 0xD7, "multiplication sign" }, { 0xDF, 0xDF, "sharp s" },
		{ 0x100, 0x101, "A with macron" }, { 0x101, 0x101, "a with macron" },
		{ 0x130, 'i', "I with dot above (simple mapping)" },
		{ 0x178, 0xFF, "Y with diaeresis" },
		{ 0x391, 0x3B1, "Alpha" }, { 0x3A3, 0x3C3, "Sigma" },
		{ 0x410, 0x430, "Cyrillic A" }, { 0x1E9E, 0xDF, "capital sharp s" },
		{ 0x1EEC, 0x1EED, "U with horn and hook" },
		{ 0x2160, 0x2170, "roman numeral one" }, { 0x24B6, 0x24D0, "circled A" },
		{ 0xFF21, 0xFF41, "fullwidth A" }, { 0x10400, 0x10428, "Deseret long I" },
		{ 0x4E2D, 0x4E2D, "CJK" }, { 0x110000, 0x110000, "beyond Unicode" },
	};
	static const struct map_case nfd[] = {
		{ 'U', 'U', "U" }, { 0xA0, 0xA0, "NBSP (compatibility only)" },
		{ 0xBD, 0xBD, "one half (compatibility only)" },
		{ 0xC5, 'A', "A with ring" }, { 0xDC, 'U', "U with diaeresis" },
		{ 0xE9, 'e', "e with acute" }, { 0xFC, 'u', "u with diaeresis" },
		{ 0x1EED, 'u', "u with horn and hook above (two marks)" },
		{ 0x1EEC, 'U', "U with horn and hook above" },
		{ 0x1E9B, 0x17F, "long s with dot above" },
		{ 0x212B, 'A', "angstrom sign (via U+00C5)" },
		{ 0x2000, 0x2002, "en quad" },
		{ 0x0958, 0x0915, "Devanagari qa" },
		{ 0xAC00, 0x1100, "Hangul GA" }, { 0xD7A3, 0x1112, "Hangul HIH" },
		{ 0xF900, 0x8C48, "CJK compatibility ideograph" },
		{ 0xFB01, 0xFB01, "fi ligature (compatibility only)" },
		{ 0x110000, 0x110000, "beyond Unicode" },
	};
	size_t i;

	for (i = 0; i < sizeof lower / sizeof lower[0]; i++) {
		uint32_t got = fm_uni_tolower(lower[i].from);

		ok(got == lower[i].to, "tolower U+%04X %s: U+%04X (want U+%04X)", (unsigned)lower[i].from,
		   lower[i].what, (unsigned)got, (unsigned)lower[i].to);
	}
	for (i = 0; i < sizeof nfd / sizeof nfd[0]; i++) {
		uint32_t got = fm_uni_nfd_base(nfd[i].from);

		ok(got == nfd[i].to, "nfd base U+%04X %s: U+%04X (want U+%04X)", (unsigned)nfd[i].from,
		   nfd[i].what, (unsigned)got, (unsigned)nfd[i].to);
	}
}

int
main(void)
{
	test_decode_edges();
	test_decode_exhaustive();
	test_decode_walk();
	test_flags();
	test_maps();
	return done_testing();
}
