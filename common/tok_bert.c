/*
 * tok_bert.c - BERT WordPiece, as llama.cpp's WPM tokenizer splits text.
 *
 * One pass over the bytes: each code point is decoded, replaced by its NFD
 * base (the accent-stripping step), and then
 *   - whitespace ends the current word;
 *   - NUL, U+FFFD (which undecodable bytes also become) and controls
 *     (Cc Cf Co Cs) are dropped without ending the word;
 *   - punctuation, ASCII symbols and CJK ideographs become one-character
 *     words of their own;
 *   - anything else is lowercased and appended to the word.
 * Each finished word, prefixed with U+2581 (the vocabulary's "phantom space"
 * form: word-initial pieces carry the prefix, continuations carry nothing),
 * is cut by greedy longest match; a word with any unmatched rest becomes a
 * single unknown token.
 *
 * Undecodable bytes are where this can differ from llama.cpp, whose decoder
 * accepts overlong forms (C1 81 is 'A' there, dropped here), surrogates
 * (dropped there too, as controls) and F5..F7 leads (above U+10FFFF, which
 * makes llama.cpp throw).  Well-formed UTF-8 tokenizes identically.
 *
 * Every code point keeps the byte span it came from, so each token's span
 * covers exactly the input bytes it was made of.  A word lives in a fixed
 * buffer on the stack: nothing is allocated per code point or per word.
 */
#include "tok_internal.h"

#include <string.h>

#include "unicode.h"
#include "unicode_data.h"  /* fm_uni_flags_low, for the ASCII fast path */

/*
 * Words longer than this many code points become one unknown token without
 * being matched: max_input_chars_per_word of the original BERT
 * WordpieceTokenizer and of Hugging Face's, whose output llama.cpp's test
 * vectors were made with.  llama.cpp itself has no limit; the two agree on
 * every word up to this length, and the limit keeps the matching (tries of
 * up to max_token_len bytes at each position) and the word buffer bounded.
 */
#define WORD_MAX_CPS 100

/* U+2581 LOWER ONE EIGHTH BLOCK, the phantom space. */
static const char phantom[3] = { '\xE2', '\x96', '\x81' };

struct word {
	uint32_t n;          /* code points seen, may exceed WORD_MAX_CPS */
	uint32_t src_start;  /* input span of the whole word */
	uint32_t src_end;
	/*
	 * Unit k is the phantom prefix for k = 0, code point k - 1 of the word
	 * otherwise: its bytes are buf[off[k] .. off[k + 1]), its input span
	 * [start[k], end[k]).  The prefix has an empty span at the word start.
	 */
	uint16_t off[WORD_MAX_CPS + 2];
	uint32_t start[WORD_MAX_CPS + 1];
	uint32_t end[WORD_MAX_CPS + 1];
	char buf[sizeof phantom + 4 * WORD_MAX_CPS];
};

/* CJK ideographs, as llama.cpp's WPM (and Hugging Face's Rust BERT pre-tokenizer) list them. */
static int
is_cjk(uint32_t c)
{
	return (c >= 0x4E00 && c <= 0x9FFF) ||
	    (c >= 0x3400 && c <= 0x4DBF) ||
	    (c >= 0x20000 && c <= 0x2A6DF) ||
	    (c >= 0x2A700 && c <= 0x2B73F) ||
	    (c >= 0x2B740 && c <= 0x2B81F) ||
	    /* Not 0x2B820 (Extension E starts there): llama.cpp follows the Rust code. */
	    (c >= 0x2B920 && c <= 0x2CEAF) ||
	    (c >= 0xF900 && c <= 0xFAFF) ||
	    (c >= 0x2F800 && c <= 0x2FA1F);
}

static inline void
word_add(struct word *w, uint32_t c, uint32_t start, uint32_t end)
{
	if (w->n == 0) {
		memcpy(w->buf, phantom, sizeof phantom);
		w->off[0] = 0;
		w->off[1] = sizeof phantom;
		w->start[0] = w->end[0] = start;
		w->src_start = start;
	}
	w->src_end = end;
	if (++w->n <= WORD_MAX_CPS) {
		uint32_t k = w->n;
		size_t nb = 1;

		if (c < 0x80)
			w->buf[w->off[k]] = (char)c;
		else
			nb = fm_utf8_encode(c, w->buf + w->off[k]);
		w->off[k + 1] = (uint16_t)(w->off[k] + nb);
		w->start[k] = start;
		w->end[k] = end;
	}
}

static int
push_unk(const struct fm_tok *t, uint32_t start, uint32_t end, struct fm_tokens *out,
         struct fm_err *err)
{
	if (t->unk < 0)
		return fm_err_set(err, FM_EDATA, "bert vocabulary has no unknown token for an unmatched word");
	return fm_tokens_push(out, t->unk, start, end, err);
}

/* Emits the tokens of the word and empties it. */
static int
word_flush(const struct fm_tok *t, struct word *w, struct fm_tokens *out, struct fm_err *err)
{
	uint32_t n = w->n, i, e;
	size_t mark;
	int rc;

	if (n == 0)
		return FM_OK;
	w->n = 0;
	if (n > WORD_MAX_CPS)
		return push_unk(t, w->src_start, w->src_end, out, err);

	/*
	 * Greedy longest match over units 0..n.  llama.cpp tries every byte
	 * length; trying only whole code points is the same thing, because a
	 * well-formed token that starts on a code point boundary also ends on
	 * one (a vocabulary entry that is not valid UTF-8 can never match).
	 */
	mark = out->n;
	for (i = 0; i <= n; i = e) {
		int32_t id = -1;

		for (e = n + 1; e > i && (uint32_t)(w->off[e] - w->off[i]) > t->max_token_len; e--)
			;
		for (; e > i; e--) {
			id = fm_tok_lookup(t, w->buf + w->off[i], (size_t)(w->off[e] - w->off[i]));
			if (id >= 0)
				break;
		}
		if (e == i) {
			/* Part of the word matches nothing: the whole word is unknown. */
			out->n = mark;
			return push_unk(t, w->src_start, w->src_end, out, err);
		}
		if ((rc = fm_tokens_push(out, id, w->start[i], w->end[e - 1], err)) != FM_OK)
			return rc;
	}
	return FM_OK;
}

int
fm_tok_bert_encode(const struct fm_tok *t, const char *text, uint32_t len,
                   struct fm_tokens *out, struct fm_err *err)
{
	struct word w;
	uint32_t pos = 0;
	int rc;

	w.n = 0;
	while (pos < len) {
		uint32_t cp, c, lc, start = pos;
		size_t n;
		unsigned f;

		if ((unsigned char)text[pos] < 0x80) {
			/* ASCII: its own NFD base, flags from the direct table. */
			c = (unsigned char)text[pos++];
			f = fm_uni_flags_low[c];
			if (f & (FM_UNI_LETTER | FM_UNI_NUMBER)) {
				/* The bulk of English text: straight into the word. */
				word_add(&w, c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c, start, pos);
				continue;
			}
		} else {
			cp = fm_utf8_next(text + pos, len - pos, &n);
			pos += (uint32_t)n;
			c = fm_uni_nfd_base(cp);
			f = fm_uni_flags(c);
		}
		if (f & FM_UNI_WHITESPACE) {
			if ((rc = word_flush(t, &w, out, err)) != FM_OK)
				return rc;
			continue;
		}
		if (c == 0 || c == FM_UNI_REPLACEMENT || (f & FM_UNI_CONTROL))
			continue;
		lc = c < 0x80 ? (c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c) : fm_uni_tolower(c);
		if ((f & FM_UNI_PUNCT) || (c < 0x7F && (f & FM_UNI_SYMBOL)) ||
		    (c >= 0x3400 && is_cjk(c))) {
			if ((rc = word_flush(t, &w, out, err)) != FM_OK)
				return rc;
			word_add(&w, lc, start, pos);
			if ((rc = word_flush(t, &w, out, err)) != FM_OK)
				return rc;
			continue;
		}
		word_add(&w, lc, start, pos);
	}
	return word_flush(t, &w, out, err);
}
