/*
 * unicode_data.h - the tables that scripts/gen-unicode-data.py writes into
 * unicode_data.c.  Only unicode.c (and tok_bert.c, for ASCII flags without a
 * call) reads them; everything else goes through
 * the functions of unicode.h.
 */
#ifndef FM_UNICODE_DATA_H
#define FM_UNICODE_DATA_H

#include <stddef.h>
#include <stdint.h>

#define FM_UNI_FLAG_BITS 9  /* low bits of a fm_uni_flag_ranges entry */

/* Code points first, first + stride, ... up to last map to cp + delta. */
struct fm_uni_delta_range {
	uint32_t first, last;
	int32_t delta;
	uint32_t stride;   /* 1, or 2 for alternating upper/lower pairs */
};

/* Every code point in [first, last] maps to `to`. */
struct fm_uni_const_range {
	uint32_t first, last, to;
};

extern const char fm_uni_version[];           /* "14.0.0" */
extern const uint16_t fm_uni_flags_low[256];  /* flags of U+0000..U+00FF */
extern const uint32_t fm_uni_flag_ranges[];   /* sorted, first entry starts at 0 */
extern const size_t fm_uni_n_flag_ranges;
extern const struct fm_uni_delta_range fm_uni_lower[];  /* sorted by first */
extern const size_t fm_uni_n_lower;
extern const struct fm_uni_const_range fm_uni_nfd[];    /* sorted by first */
extern const size_t fm_uni_n_nfd;

#endif
