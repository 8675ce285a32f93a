/*
 * hashenc.h - the built-in encoder: a vector from text with no weights, so
 * that the pipeline works before any model is at hand.  Words (runs of ASCII
 * letters, digits and non-ASCII bytes, ASCII lowercased), word bigrams
 * and the character trigrams of each word are hashed with a sign into dim
 * buckets, each weighted 1 + log(tf) times a weight per kind, and the sum is
 * L2-normalised.  It matches texts that share words, names, numbers and rare
 * identifiers; it knows nothing of meaning (see fm-embed(1)).
 *
 * Ownership: the caller owns the encoder (fm_hashenc_new/free) and the
 * output buffer; an encoder keeps scratch memory and is not to be shared
 * between threads.
 */
#ifndef FM_HASHENC_H
#define FM_HASHENC_H

#include <stddef.h>
#include <stdint.h>

#include "fm_error.h"

#define FM_HASHENC_NAME "builtin-hash"

struct fm_hashenc;

/* dim: 1..FM_EMBED_MAX_DIM.  NULL with FM_EIO when memory runs out. */
struct fm_hashenc *fm_hashenc_new(uint32_t dim, struct fm_err *err);
void fm_hashenc_free(struct fm_hashenc *h);

/* The encoder's identity: its version, dimension and feature weights. */
uint64_t fm_hashenc_fingerprint(const struct fm_hashenc *h);

/*
 * Writes the unit vector of text[0..len) into out (dim floats), or zeros when
 * the text has no word.  Any bytes are accepted.  FM_EIO when memory runs out.
 */
int fm_hashenc_encode(struct fm_hashenc *h, const char *text, size_t len, float *out,
    struct fm_err *err);

#endif
