/*
 * qenc.h - the query tower of the memory indexer as selection needs it: a
 * text in, a unit vector out, from the encoder an index was built with
 * (the built-in hashed encoder, or a bert GGUF), refused when it is not
 * that encoder.
 *
 * Ownership: fm_qenc_open() returns an encoder that owns what it opened;
 * fm_qenc_free() releases it.
 */
#ifndef FM_QENC_H
#define FM_QENC_H

#include <stddef.h>

#include "fm_error.h"
#include "indexfile.h"

struct fm_qenc;

/*
 * encoder NULL: the built-in encoder.  FM_EDATA when the encoder is not the
 * one the index names (its fingerprint differs), or as fm_bert_open().
 */
struct fm_qenc *fm_qenc_open(const char *encoder, const struct fm_index_info *ix,
    struct fm_err *err);
void fm_qenc_free(struct fm_qenc *q);

/*
 * Writes the unit vector of text[0..len) to out (the index's dim floats).
 * A text longer than a bert encoder's context keeps its last tokens: in a
 * query that grows with generated text, the newest words say the most
 * about what comes next.
 */
int fm_qenc_encode(struct fm_qenc *q, const char *text, size_t len, float *out,
    struct fm_err *err);

#endif
