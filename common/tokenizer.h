/*
 * tokenizer.h - tokenizers built from a GGUF's tokenizer.ggml.* metadata:
 *   "llama": SentencePiece with score-driven merges, byte fallback <0xNN>
 *            and the leading-space rule, as llama.cpp's SPM tokenizer;
 *   "bert":  WordPiece with lowercasing, accent stripping, punctuation and
 *            CJK splitting, [UNK] and a per-word length limit, as llama.cpp's
 *            WPM tokenizer (vocabulary in its "phantom space" form).
 * Both reproduce llama.cpp's test vectors exactly.
 *
 * Ownership: fm_tok_from_gguf() copies everything it needs, so the GGUF may
 * be closed afterwards; the tokenizer is freed with fm_tok_free().  Encoding
 * appends to a caller-owned struct fm_tokens, released with fm_tokens_free().
 * A tokenizer is read-only after creation and safe to share between threads.
 */
#ifndef FM_TOKENIZER_H
#define FM_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fm_error.h"
#include "gguf.h"

enum fm_tok_kind { FM_TOK_LLAMA, FM_TOK_BERT };

struct fm_tok;

/*
 * Token ids with the byte span [start, end) each came from in the encoded text.
 * Start from { 0 }.  scratch is the encoder's working memory (buffers and a
 * cache of words already split), kept from call to call so that encoding a
 * stream piece by piece into the same struct allocates nothing once warm.
 */
struct fm_tokens {
	int32_t *ids;
	uint32_t *start;
	uint32_t *end;
	size_t n, cap;
	void *scratch;
};

void fm_tokens_free(struct fm_tokens *t);   /* frees the arrays and scratch, zeroes *t */
void fm_tokens_clear(struct fm_tokens *t);  /* n = 0, keeps the memory */

/* Builds a tokenizer, or returns NULL with FM_EDATA when the metadata is missing, unsupported or inconsistent. */
struct fm_tok *fm_tok_from_gguf(const struct fm_gguf *g, struct fm_err *err);
void fm_tok_free(struct fm_tok *t);

enum fm_tok_kind fm_tok_kind(const struct fm_tok *t);
const char *fm_tok_kind_name(const struct fm_tok *t);   /* "llama" or "bert" */
uint32_t fm_tok_n_vocab(const struct fm_tok *t);
/* Special token ids, -1 when the vocabulary has none. BERT: bos = [CLS], eos = [SEP]. */
int32_t fm_tok_bos(const struct fm_tok *t);
int32_t fm_tok_eos(const struct fm_tok *t);
int32_t fm_tok_unk(const struct fm_tok *t);
/*
 * A 64-bit fingerprint of the kind, every token's text, score and type and the
 * special ids: two tokenizers with equal fingerprints split text the same way.
 */
uint64_t fm_tok_fingerprint(const struct fm_tok *t);

/* Flags for fm_tok_encode. */
enum {
	FM_TOK_ADD_SPECIAL = 1, /* llama: BOS first (if the model adds one); bert: [CLS] ... [SEP] */
	FM_TOK_CONTINUE = 2,    /* text continues a document: no leading-space prefix (llama) */
};

/*
 * Appends the tokens of text[0..len) (any bytes; invalid UTF-8 is tokenized,
 * never rejected) to out, with spans relative to text.  Special tokens get an
 * empty span at their position.  Returns FM_OK, FM_EDATA when len does not
 * fit in 32 bits, or FM_EIO when memory runs out.
 */
int fm_tok_encode(const struct fm_tok *t, const char *text, size_t len, unsigned flags,
                  struct fm_tokens *out, struct fm_err *err);

/*
 * Whether cutting a document right after this byte (a newline) and encoding the
 * two parts separately (the second with FM_TOK_CONTINUE) gives exactly the
 * tokens of encoding it whole: true when no merge or word crosses a newline.
 */
bool fm_tok_newline_is_boundary(const struct fm_tok *t);

/*
 * Whether s[0..n), which must end with a newline, may be cut there with the
 * guarantee above.  Besides fm_tok_newline_is_boundary() this checks the
 * bytes before the newline: in invalid UTF-8 (Latin-1 "caf\xE9\n") the
 * llama tokenizer takes a newline into the character of a lead byte before
 * it, and cutting there would change the tokens.
 */
bool fm_tok_newline_cut_ok(const struct fm_tok *t, const char *s, size_t n);

/*
 * The text of ids[0..n) appended to a caller-owned, growable buffer
 * (*buf, *len, *cap; realloc'd), not NUL-terminated.  With FM_TOK_ADD_SPECIAL
 * in flags special tokens are written as their text, otherwise they are
 * skipped; the leading space that encoding added is removed, unless
 * FM_TOK_CONTINUE says the ids continue a document.  Ids outside the
 * vocabulary are FM_EDATA.
 */
int fm_tok_decode(const struct fm_tok *t, const int32_t *ids, size_t n, unsigned flags,
                  char **buf, size_t *len, size_t *cap, struct fm_err *err);

/* The vocabulary entry of id, as stored (with U+2581 for spaces), or an empty string if out of range. */
struct fm_str fm_tok_text(const struct fm_tok *t, int32_t id);

#endif
