/*
 * unicode.c - strict UTF-8 decoding and encoding, and lookups in the
 * generated tables of unicode_data.c (binary searches over ranges, with a
 * direct table for U+0000..U+00FF because most text is mostly ASCII).
 */
#include "unicode.h"

#include "unicode_data.h"

/* Whether b is a continuation byte 10xxxxxx within [lo, hi]. */
static int
cont(unsigned char b, unsigned char lo, unsigned char hi)
{
	return b >= lo && b <= hi;
}

uint32_t
fm_utf8_next(const char *s, size_t n, size_t *len)
{
	const unsigned char *p = (const unsigned char *)s;
	unsigned char b = p[0];

	*len = 1;
	if (b < 0x80)
		return b;
	/*
	 * The ranges of the second byte below are those of the Unicode
	 * well-formed table (Table 3-7): they exclude overlong forms (C0, C1,
	 * E0 80..9F, F0 80..8F), surrogates (ED A0..BF) and values above
	 * U+10FFFF (F4 90..BF, F5..FF) in one comparison each.
	 */
	if (b >= 0xC2 && b <= 0xDF) {
		if (n < 2 || !cont(p[1], 0x80, 0xBF))
			return FM_UNI_REPLACEMENT;
		*len = 2;
		return (uint32_t)(b & 0x1F) << 6 | (p[1] & 0x3F);
	}
	if (b >= 0xE0 && b <= 0xEF) {
		unsigned char lo = b == 0xE0 ? 0xA0 : 0x80;
		unsigned char hi = b == 0xED ? 0x9F : 0xBF;

		if (n < 3 || !cont(p[1], lo, hi) || !cont(p[2], 0x80, 0xBF))
			return FM_UNI_REPLACEMENT;
		*len = 3;
		return (uint32_t)(b & 0x0F) << 12 | (uint32_t)(p[1] & 0x3F) << 6 | (p[2] & 0x3F);
	}
	if (b >= 0xF0 && b <= 0xF4) {
		unsigned char lo = b == 0xF0 ? 0x90 : 0x80;
		unsigned char hi = b == 0xF4 ? 0x8F : 0xBF;

		if (n < 4 || !cont(p[1], lo, hi) || !cont(p[2], 0x80, 0xBF) ||
		    !cont(p[3], 0x80, 0xBF))
			return FM_UNI_REPLACEMENT;
		*len = 4;
		return (uint32_t)(b & 0x07) << 18 | (uint32_t)(p[1] & 0x3F) << 12 |
		    (uint32_t)(p[2] & 0x3F) << 6 | (p[3] & 0x3F);
	}
	return FM_UNI_REPLACEMENT;
}

size_t
fm_utf8_encode(uint32_t cp, char out[4])
{
	if (cp > FM_UNI_MAX || (cp >= 0xD800 && cp <= 0xDFFF))
		cp = FM_UNI_REPLACEMENT;
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xC0 | cp >> 6);
		out[1] = (char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xE0 | cp >> 12);
		out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
		out[2] = (char)(0x80 | (cp & 0x3F));
		return 3;
	}
	out[0] = (char)(0xF0 | cp >> 18);
	out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
	out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
	out[3] = (char)(0x80 | (cp & 0x3F));
	return 4;
}

unsigned
fm_uni_flags(uint32_t cp)
{
	const uint32_t key = cp << FM_UNI_FLAG_BITS | ((1u << FM_UNI_FLAG_BITS) - 1);
	size_t lo = 0, hi = fm_uni_n_flag_ranges;

	if (cp < 256)
		return fm_uni_flags_low[cp];
	if (cp > FM_UNI_MAX)
		return FM_UNI_UNDEFINED;
	/* The last entry whose first is <= cp: entry <= key compares first only. */
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;

		if (fm_uni_flag_ranges[mid] <= key)
			lo = mid;
		else
			hi = mid;
	}
	return fm_uni_flag_ranges[lo] & ((1u << FM_UNI_FLAG_BITS) - 1);
}

uint32_t
fm_uni_tolower(uint32_t cp)
{
	size_t lo = 0, hi = fm_uni_n_lower;
	const struct fm_uni_delta_range *r;

	if (cp < 0x80)
		return cp >= 'A' && cp <= 'Z' ? cp + ('a' - 'A') : cp;
	if (cp < fm_uni_lower[0].first)
		return cp;
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;

		if (fm_uni_lower[mid].first <= cp)
			lo = mid;
		else
			hi = mid;
	}
	r = &fm_uni_lower[lo];
	if (cp > r->last || (cp - r->first) % r->stride != 0)
		return cp;
	return (uint32_t)((int32_t)cp + r->delta);
}

uint32_t
fm_uni_nfd_base(uint32_t cp)
{
	size_t lo = 0, hi = fm_uni_n_nfd;

	/* Nothing below U+00C0 decomposes canonically. */
	if (cp < fm_uni_nfd[0].first)
		return cp;
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;

		if (fm_uni_nfd[mid].first <= cp)
			lo = mid;
		else
			hi = mid;
	}
	return cp <= fm_uni_nfd[lo].last ? fm_uni_nfd[lo].to : cp;
}

const char *
fm_uni_version_string(void)
{
	return fm_uni_version;
}
