/*
 * unicode.h - the Unicode the tokenizers need: UTF-8 decoding that never
 * fails, encoding, and code point properties (category groups, whitespace,
 * simple lowercase, NFD base) as llama.cpp's tokenizers see them.  The tables
 * come from scripts/gen-unicode-data.py (see fm_uni_version for the Unicode
 * version).  No state, no allocation: safe from any thread.
 */
#ifndef FM_UNICODE_H
#define FM_UNICODE_H

#include <stddef.h>
#include <stdint.h>

#define FM_UNI_MAX 0x10FFFFu
#define FM_UNI_REPLACEMENT 0xFFFDu  /* what undecodable bytes become */

/* Property flags of a code point: one category group, plus whitespace. */
enum {
	FM_UNI_UNDEFINED = 1 << 0,   /* Cn: unassigned, and anything above U+10FFFF */
	FM_UNI_NUMBER = 1 << 1,      /* Nd Nl No */
	FM_UNI_LETTER = 1 << 2,      /* Lu Ll Lt Lm Lo */
	FM_UNI_SEPARATOR = 1 << 3,   /* Zs Zl Zp */
	FM_UNI_MARK = 1 << 4,        /* Mn Mc Me */
	FM_UNI_PUNCT = 1 << 5,       /* Pc Pd Ps Pe Pi Pf Po */
	FM_UNI_SYMBOL = 1 << 6,      /* Sm Sc Sk So */
	FM_UNI_CONTROL = 1 << 7,     /* Cc Cf Co Cs */
	FM_UNI_WHITESPACE = 1 << 8,  /* the White_Space property (tab, newline, NBSP, ...) */
};

/*
 * Decodes the code point at s[0..n) (n >= 1) and stores its length in bytes
 * in *len.  Anything that is not well-formed UTF-8 (a stray continuation
 * byte, a truncated sequence, an overlong form, a surrogate, a value above
 * U+10FFFF, bytes F5..FF) decodes as FM_UNI_REPLACEMENT of length 1, so a
 * loop over arbitrary bytes advances by at least one and visits every byte.
 */
uint32_t fm_utf8_next(const char *s, size_t n, size_t *len);

/* Writes cp as 1 to 4 bytes to out and returns the count; surrogates and values above U+10FFFF are written as U+FFFD. */
size_t fm_utf8_encode(uint32_t cp, char out[4]);

unsigned fm_uni_flags(uint32_t cp);     /* FM_UNI_* */
uint32_t fm_uni_tolower(uint32_t cp);   /* simple lowercase mapping, or cp */
/*
 * The first code point of cp's full canonical decomposition (NFD), or cp:
 * 'U' for 'Ü', 'u' for 'ử', the leading jamo for a Hangul syllable.  Mapping
 * every code point this way is llama.cpp's simplified NFD, which drops the
 * accents that precomposed characters carry.
 */
uint32_t fm_uni_nfd_base(uint32_t cp);

/* The Unicode version of the tables, e.g. "14.0.0". */
const char *fm_uni_version_string(void);

#endif
