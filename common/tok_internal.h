/*
 * tok_internal.h - what the tokenizer front end (tokenizer.c) shares with the
 * two algorithms (tok_llama.c: SentencePiece, tok_bert.c: WordPiece).  Not
 * for tools: they use tokenizer.h.
 */
#ifndef FM_TOK_INTERNAL_H
#define FM_TOK_INTERNAL_H

#include <string.h>

#include "tokenizer.h"

/* Token types, numbered as llama.cpp's tokenizer.ggml.token_type. */
enum {
	FM_TT_UNDEFINED = 0, FM_TT_NORMAL = 1, FM_TT_UNKNOWN = 2, FM_TT_CONTROL = 3,
	FM_TT_USER_DEFINED = 4, FM_TT_UNUSED = 5, FM_TT_BYTE = 6,
};

struct fm_tok {
	enum fm_tok_kind kind;
	uint32_t n_vocab;
	char *arena;          /* every token's text, back to back, each NUL-terminated */
	uint64_t *text_off;   /* (n_vocab) offset of token i's text in arena */
	uint32_t *text_len;   /* (n_vocab) bytes of token i's text */
	float *score;         /* (n_vocab) merge priority (llama); 0 when absent */
	int32_t *type;        /* (n_vocab) FM_TT_* */
	uint64_t *hash_slot;  /* open addressing, text -> hash >> 32 << 32 | id + 1 (0 = empty) */
	uint64_t hash_mask;   /* slots - 1, a power of two */
	int32_t bos, eos, unk, sep, pad;  /* -1 when absent (bert: bos = cls) */
	bool add_bos, add_eos, add_space_prefix;
	int32_t byte_tok[256];  /* llama: id of <0xNN>, -1 when absent */
	uint32_t max_token_len; /* longest token text, bytes */
	/*
	 * See fm_tok_newline_is_boundary(): no token holds a newline, except a
	 * token that is just "\n".  llama also merges the text between newlines
	 * on its own.
	 */
	bool newline_boundary;
	/*
	 * llama: U+2581 occurs in tokens only as a leading run, so no merge joins
	 * a word to the U+2581 that starts the next one and each such word can
	 * be merged on its own (same tokens, far smaller heaps).
	 */
	bool space_splits;
	/*
	 * (n_user) the user-defined tokens, longest first (then by id): as in
	 * llama.cpp, each is cut out of the text wherever it occurs before the
	 * algorithm sees the rest.
	 */
	int32_t *user;
	uint32_t n_user;
	uint64_t fingerprint;
};

/*
 * The hash of the vocabulary index, also for the algorithms' own tables:
 * 8 bytes at a time with a multiply-xorshift mix, because piece lookups are
 * the inner loop of SentencePiece merging.  Short tails are read as two
 * overlapping loads instead of byte by byte (with the length mixed in, every
 * byte still counts).
 */
static inline uint64_t
fm_tok_load64(const char *s)
{
	uint64_t w;

	memcpy(&w, s, 8);
	return w;
}

static inline uint64_t
fm_tok_load32(const char *s)
{
	uint32_t w;

	memcpy(&w, s, 4);
	return w;
}

static inline uint64_t
fm_tok_hash(const char *s, size_t n)
{
	uint64_t h = UINT64_C(0x9E3779B97F4A7C15) ^ (n * UINT64_C(0xC2B2AE3D27D4EB4F));
	uint64_t w;
	size_t i = 0;

	if (n >= 8) {
		for (; i + 8 <= n; i += 8) {
			h = (h ^ fm_tok_load64(s + i)) * UINT64_C(0xFF51AFD7ED558CCD);
			h ^= h >> 32;
		}
		w = i < n ? fm_tok_load64(s + n - 8) : 0;
	} else if (n >= 4) {
		w = fm_tok_load32(s) | fm_tok_load32(s + n - 4) << 32;
	} else if (n > 0) {
		w = (uint64_t)(unsigned char)s[0] | (uint64_t)(unsigned char)s[n / 2] << 8 |
		    (uint64_t)(unsigned char)s[n - 1] << 16;
	} else {
		w = 0;
	}
	h = (h ^ w) * UINT64_C(0xC4CEB9FE1A85EC53);
	h ^= h >> 29;
	h *= UINT64_C(0xBF58476D1CE4E5B9);
	h ^= h >> 32;
	return h;
}

/* Whether a[0..n) and b[0..n) are equal: memcmp for the short strings of a vocabulary, inline. */
static inline bool
fm_tok_same(const char *a, const char *b, size_t n)
{
	size_t i;

	if (n >= 8) {
		for (i = 0; i + 8 <= n; i += 8)
			if (fm_tok_load64(a + i) != fm_tok_load64(b + i))
				return false;
		return i == n || fm_tok_load64(a + n - 8) == fm_tok_load64(b + n - 8);
	}
	if (n >= 4)
		return fm_tok_load32(a) == fm_tok_load32(b) &&
		    fm_tok_load32(a + n - 4) == fm_tok_load32(b + n - 4);
	for (i = 0; i < n; i++)
		if (a[i] != b[i])
			return false;
	return true;
}

/* The id whose text is exactly s[0..n), or -1. */
int32_t fm_tok_lookup(const struct fm_tok *t, const char *s, size_t n);

/* Appends one token with its span; FM_OK or FM_EIO (out of memory). */
int fm_tokens_push(struct fm_tokens *o, int32_t id, uint32_t start, uint32_t end, struct fm_err *err);

/* Releases what fm_tok_llama_encode() left in fm_tokens.scratch. */
void fm_tok_llama_scratch_free(void *scratch);

/* The algorithms: append the tokens of text (no special tokens). */
int fm_tok_llama_encode(const struct fm_tok *t, const char *text, uint32_t len, bool space_prefix,
                        struct fm_tokens *out, struct fm_err *err);
int fm_tok_bert_encode(const struct fm_tok *t, const char *text, uint32_t len,
                       struct fm_tokens *out, struct fm_err *err);

#endif
