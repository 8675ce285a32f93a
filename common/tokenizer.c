/*
 * tokenizer.c - the tokenizer front end: building a tokenizer from a GGUF's
 * tokenizer.ggml.* metadata (with every value checked, since a model file is
 * untrusted input), the text -> id hash both algorithms look pieces up in,
 * special tokens around the algorithms' output, and decoding ids to text.
 *
 * Defaults follow llama.cpp's vocabulary loader, so that a model tokenizes
 * here as it does there: "llama" adds BOS and a leading space, "bert" adds
 * [CLS] ... [SEP]; a special id absent from the metadata takes llama.cpp's
 * default when the vocabulary is large enough to hold it.  As in llama.cpp,
 * user-defined tokens are cut out of the text before the algorithm runs.
 */
#include "tok_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checksum.h"

/* Ids are int32 and the hash stores id + 1 in 32 bits. */
#define MAX_VOCAB (INT32_MAX - 1)

static const char space_mark[3] = { '\xE2', '\x96', '\x81' };  /* U+2581 */

int32_t
fm_tok_lookup(const struct fm_tok *t, const char *s, size_t n)
{
	uint64_t h, i, v, tag;

	if (n > t->max_token_len)
		return -1;
	h = fm_tok_hash(s, n);
	tag = h >> 32 << 32;
	/* The tag in each slot spares a visit to the text of (almost) every id that is not it. */
	for (i = h & t->hash_mask; (v = t->hash_slot[i]) != 0; i = (i + 1) & t->hash_mask) {
		uint32_t id = (uint32_t)v - 1;
		if ((v & ~UINT64_C(0xFFFFFFFF)) == tag && t->text_len[id] == n &&
		    fm_tok_same(t->arena + t->text_off[id], s, n))
			return (int32_t)id;
	}
	return -1;
}

/*
 * Adds id under its text.  A text seen before now maps to the later id, as
 * llama.cpp's token_to_id map does when a vocabulary repeats a piece.
 */
static void
hash_insert(struct fm_tok *t, uint32_t id)
{
	const char *s = t->arena + t->text_off[id];
	uint32_t n = t->text_len[id];
	uint64_t h = fm_tok_hash(s, n), i, v;

	for (i = h & t->hash_mask; (v = t->hash_slot[i]) != 0; i = (i + 1) & t->hash_mask) {
		uint32_t old = (uint32_t)v - 1;
		if (t->text_len[old] == n && memcmp(t->arena + t->text_off[old], s, n) == 0)
			break;
	}
	t->hash_slot[i] = (h >> 32 << 32) | ((uint64_t)id + 1);
}

void
fm_tokens_free(struct fm_tokens *o)
{
	free(o->ids);
	free(o->start);
	free(o->end);
	fm_tok_llama_scratch_free(o->scratch);
	memset(o, 0, sizeof *o);
}

void
fm_tokens_clear(struct fm_tokens *o)
{
	o->n = 0;
}

static int
tokens_grow(struct fm_tokens *o, struct fm_err *err)
{
	size_t cap = o->cap < 64 ? 64 : o->cap * 2;
	void *p;

	if (cap > SIZE_MAX / sizeof(uint32_t) / 2)
		return fm_err_set(err, FM_EIO, "too many tokens");
	/* Each array keeps its new size as soon as it has it, so a failure leaves *o consistent. */
	if ((p = realloc(o->ids, cap * sizeof *o->ids)) == NULL)
		return fm_err_errno(err, FM_EIO, errno, "cannot allocate tokens");
	o->ids = p;
	if ((p = realloc(o->start, cap * sizeof *o->start)) == NULL)
		return fm_err_errno(err, FM_EIO, errno, "cannot allocate tokens");
	o->start = p;
	if ((p = realloc(o->end, cap * sizeof *o->end)) == NULL)
		return fm_err_errno(err, FM_EIO, errno, "cannot allocate tokens");
	o->end = p;
	o->cap = cap;
	return FM_OK;
}

int
fm_tokens_push(struct fm_tokens *o, int32_t id, uint32_t start, uint32_t end, struct fm_err *err)
{
	int rc;

	if (o->n == o->cap && (rc = tokens_grow(o, err)) != FM_OK)
		return rc;
	o->ids[o->n] = id;
	o->start[o->n] = start;
	o->end[o->n] = end;
	o->n++;
	return FM_OK;
}

/* A metadata string for an error message: at most 40 bytes, non-printing bytes as '?'. */
static const char *
printable(struct fm_str s, char *buf, size_t cap)
{
	size_t n = s.len < cap - 1 ? (size_t)s.len : cap - 1;

	if (n > 40)
		n = 40;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s.ptr[i];
		buf[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
	}
	buf[n] = '\0';
	return buf;
}

static bool
is_int_type(enum fm_gguf_type ty)
{
	switch (ty) {
	case FM_GGUF_UINT8: case FM_GGUF_INT8: case FM_GGUF_UINT16: case FM_GGUF_INT16:
	case FM_GGUF_UINT32: case FM_GGUF_INT32: case FM_GGUF_UINT64: case FM_GGUF_INT64:
		return true;
	default:
		return false;
	}
}

static bool
is_signed_type(enum fm_gguf_type ty)
{
	return ty == FM_GGUF_INT8 || ty == FM_GGUF_INT16 || ty == FM_GGUF_INT32 || ty == FM_GGUF_INT64;
}

/*
 * A special token id: *id keeps its default when the key is absent; -1
 * (signed) or 0xFFFFFFFF / all ones (unsigned), which converters write for
 * "none", give -1.  Any other value must be a valid id.
 */
static int
get_special(const struct fm_gguf *g, const char *key, uint32_t n_vocab, int32_t *id,
    struct fm_err *err)
{
	const struct fm_gguf_value *v = fm_gguf_get(g, key);

	if (v == NULL)
		return FM_OK;
	if (!is_int_type(v->type))
		return fm_err_set(err, FM_EDATA, "%s is a %s, not an integer", key,
		    fm_gguf_type_name(v->type) ? fm_gguf_type_name(v->type) : "value of unknown type");
	if (is_signed_type(v->type)) {
		if (v->v.i == -1) {
			*id = -1;
			return FM_OK;
		}
		if (v->v.i < 0 || v->v.i >= (int64_t)n_vocab)
			return fm_err_set(err, FM_EDATA, "%s %lld is out of range (vocabulary of %u)",
			    key, (long long)v->v.i, n_vocab);
		*id = (int32_t)v->v.i;
		return FM_OK;
	}
	if (v->v.u == UINT32_MAX || v->v.u == UINT64_MAX) {
		*id = -1;
		return FM_OK;
	}
	if (v->v.u >= n_vocab)
		return fm_err_set(err, FM_EDATA, "%s %llu is out of range (vocabulary of %u)",
		    key, (unsigned long long)v->v.u, n_vocab);
	*id = (int32_t)v->v.u;
	return FM_OK;
}

/* A boolean flag: *out keeps its default when the key is absent. */
static int
get_flag(const struct fm_gguf *g, const char *key, bool *out, struct fm_err *err)
{
	const struct fm_gguf_value *v = fm_gguf_get(g, key);

	if (v == NULL)
		return FM_OK;
	if (v->type != FM_GGUF_BOOL)
		return fm_err_set(err, FM_EDATA, "%s is a %s, not a bool", key,
		    fm_gguf_type_name(v->type) ? fm_gguf_type_name(v->type) : "value of unknown type");
	*out = v->v.u != 0;
	return FM_OK;
}

/* An optional per-token array: NULL when absent, else it must have n elements accepted by ok_elem. */
static int
get_token_array(const struct fm_gguf *g, const char *key, uint32_t n, bool (*ok_elem)(enum fm_gguf_type),
    const char *what, const struct fm_gguf_value **out, struct fm_err *err)
{
	const struct fm_gguf_value *v = fm_gguf_get(g, key);

	*out = NULL;
	if (v == NULL)
		return FM_OK;
	if (v->type != FM_GGUF_ARRAY || !ok_elem(v->v.arr.elem))
		return fm_err_set(err, FM_EDATA, "%s is not an array of %s", key, what);
	if (v->v.arr.n != n)
		return fm_err_set(err, FM_EDATA, "%s has %llu entries for %u tokens", key,
		    (unsigned long long)v->v.arr.n, n);
	if (v->v.arr.raw == NULL && n > 0)
		return fm_err_set(err, FM_EDATA, "%s has no data", key);
	*out = v;
	return FM_OK;
}

static bool
is_float_type(enum fm_gguf_type ty)
{
	return ty == FM_GGUF_FLOAT32 || ty == FM_GGUF_FLOAT64;
}

static uint64_t
fnv_u32(uint64_t h, uint32_t v)
{
	unsigned char b[4] = { (unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
	    (unsigned char)(v >> 24) };

	return fm_fnv64(h, b, sizeof b);
}

/* Over everything that decides how text splits and what the ids mean, in a fixed byte order. */
static uint64_t
fingerprint(const struct fm_tok *t)
{
	uint64_t h = FM_FNV64_INIT;
	uint32_t bits;

	h = fnv_u32(h, (uint32_t)t->kind);
	h = fnv_u32(h, t->n_vocab);
	for (uint32_t i = 0; i < t->n_vocab; i++) {
		h = fnv_u32(h, t->text_len[i]);
		h = fm_fnv64(h, t->arena + t->text_off[i], t->text_len[i]);
		memcpy(&bits, &t->score[i], sizeof bits);
		h = fnv_u32(h, bits);
		h = fnv_u32(h, (uint32_t)t->type[i]);
	}
	h = fnv_u32(h, (uint32_t)t->bos);
	h = fnv_u32(h, (uint32_t)t->eos);
	h = fnv_u32(h, (uint32_t)t->unk);
	h = fnv_u32(h, (uint32_t)t->sep);
	h = fnv_u32(h, (uint32_t)t->pad);
	h = fnv_u32(h, (uint32_t)t->add_bos | (uint32_t)t->add_eos << 1 |
	    (uint32_t)t->add_space_prefix << 2);
	return h;
}

/* Whether U+2581 occurs in text only as a leading run (see struct fm_tok's space_splits). */
static bool
marks_only_leading(const char *s, uint32_t n)
{
	uint32_t i = 0;

	while (n - i >= 3 && memcmp(s + i, space_mark, 3) == 0)
		i += 3;
	for (; n - i >= 3; i++)
		if (memcmp(s + i, space_mark, 3) == 0)
			return false;
	return true;
}

/* The model's tokenizer kind, or FM_EDATA. */
static int
get_kind(const struct fm_gguf *g, enum fm_tok_kind *kind, struct fm_err *err)
{
	const struct fm_gguf_value *v = fm_gguf_get(g, "tokenizer.ggml.model");
	char buf[48];

	if (v == NULL)
		return fm_err_set(err, FM_EDATA, "no tokenizer in this model");
	if (v->type != FM_GGUF_STRING)
		return fm_err_set(err, FM_EDATA, "tokenizer.ggml.model is not a string");
	if (fm_str_eq(v->v.s, "llama"))
		*kind = FM_TOK_LLAMA;
	else if (fm_str_eq(v->v.s, "bert"))
		*kind = FM_TOK_BERT;
	else
		return fm_err_set(err, FM_EDATA, "unsupported tokenizer model '%s'",
		    printable(v->v.s, buf, sizeof buf));
	return FM_OK;
}

/* Copies the token texts, scores and types; n_vocab is set and checked by the caller. */
static int
load_tokens(struct fm_tok *t, const struct fm_gguf_value *toks, const struct fm_gguf_value *scores,
    const struct fm_gguf_value *types, struct fm_err *err)
{
	uint32_t n = t->n_vocab;
	uint64_t total = 0, off = 0;

	for (uint32_t i = 0; i < n; i++) {
		const struct fm_gguf_value *e = &toks->v.arr.items[i];
		if (e->type != FM_GGUF_STRING)
			return fm_err_set(err, FM_EDATA, "tokenizer.ggml.tokens entry %u is not a string", i);
		if (e->v.s.len > UINT32_MAX - 1 || (e->v.s.len > 0 && e->v.s.ptr == NULL))
			return fm_err_set(err, FM_EDATA, "token %u has a bad length", i);
		total += e->v.s.len + 1;
		if (total > SIZE_MAX / 2)
			return fm_err_set(err, FM_EDATA, "token texts are too large");
	}
	t->arena = malloc((size_t)total);
	t->text_off = malloc((size_t)n * sizeof *t->text_off);
	t->text_len = malloc((size_t)n * sizeof *t->text_len);
	t->score = malloc((size_t)n * sizeof *t->score);
	t->type = malloc((size_t)n * sizeof *t->type);
	if (t->arena == NULL || t->text_off == NULL || t->text_len == NULL || t->score == NULL ||
	    t->type == NULL)
		return fm_err_errno(err, FM_EIO, errno, "cannot allocate the vocabulary");
	for (uint32_t i = 0; i < n; i++) {
		struct fm_str s = toks->v.arr.items[i].v.s;
		if (s.len > 0)
			memcpy(t->arena + off, s.ptr, (size_t)s.len);
		t->arena[off + s.len] = '\0';
		t->text_off[i] = off;
		t->text_len[i] = (uint32_t)s.len;
		off += s.len + 1;
		if (t->text_len[i] > t->max_token_len)
			t->max_token_len = t->text_len[i];

		t->score[i] = 0.0f;
		if (scores != NULL) {
			double d = fm_gguf_arr_f64(scores, i);
			if (isnan(d))
				return fm_err_set(err, FM_EDATA, "score of token %u is not a number", i);
			t->score[i] = (float)d;
		}
		t->type[i] = FM_TT_NORMAL;
		if (types != NULL) {
			int64_t ty = is_signed_type(types->v.arr.elem) ? fm_gguf_arr_i64(types, i) :
			    (int64_t)(fm_gguf_arr_u64(types, i) & INT64_MAX);
			if (ty < FM_TT_UNDEFINED || ty > FM_TT_BYTE)
				return fm_err_set(err, FM_EDATA, "type %lld of token %u is not a token type",
				    (long long)ty, i);
			t->type[i] = (int32_t)ty;
		}
	}
	return FM_OK;
}

/* qsort has no context argument; index_tokens runs on one thread per tokenizer being built. */
static _Thread_local const struct fm_tok *sort_user;

/* Longer texts first, then lower ids (llama.cpp's order for equal lengths is unspecified). */
static int
longer_first(const void *a, const void *b)
{
	int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
	uint32_t lx = sort_user->text_len[x], ly = sort_user->text_len[y];

	if (lx != ly)
		return lx > ly ? -1 : 1;
	return x < y ? -1 : x > y;
}

/* The text -> id hash, byte tokens and the properties derived from the whole vocabulary. */
static int
index_tokens(struct fm_tok *t, struct fm_err *err)
{
	uint64_t slots = 16;
	char name[8];

	while (slots < 2 * (uint64_t)t->n_vocab)
		slots *= 2;
	t->hash_mask = slots - 1;
	t->hash_slot = calloc((size_t)slots, sizeof *t->hash_slot);
	if (t->hash_slot == NULL)
		return fm_err_errno(err, FM_EIO, errno, "cannot allocate the vocabulary index");
	for (uint32_t i = 0; i < t->n_vocab; i++)
		hash_insert(t, i);
	/* Upper-case hex, the only spelling llama.cpp looks up. */
	for (int b = 0; b < 256; b++) {
		snprintf(name, sizeof name, "<0x%02X>", b);
		t->byte_tok[b] = fm_tok_lookup(t, name, 6);
	}
	for (uint32_t i = 0; i < t->n_vocab; i++)
		if (t->type[i] == FM_TT_USER_DEFINED && t->text_len[i] > 0)
			t->n_user++;
	if (t->n_user > 0) {
		uint32_t k = 0;
		if ((t->user = malloc((size_t)t->n_user * sizeof *t->user)) == NULL)
			return fm_err_errno(err, FM_EIO, errno, "cannot allocate the vocabulary index");
		for (uint32_t i = 0; i < t->n_vocab; i++)
			if (t->type[i] == FM_TT_USER_DEFINED && t->text_len[i] > 0)
				t->user[k++] = (int32_t)i;
		sort_user = t;
		qsort(t->user, t->n_user, sizeof *t->user, longer_first);
	}
	t->newline_boundary = true;
	t->space_splits = t->kind == FM_TOK_LLAMA;
	for (uint32_t i = 0; i < t->n_vocab; i++) {
		const char *s = t->arena + t->text_off[i];
		uint32_t n = t->text_len[i];
		/* A token "\n" itself merges nothing; one with more around a newline would. */
		if (memchr(s, '\n', n) != NULL && !(n == 1 && s[0] == '\n'))
			t->newline_boundary = false;
		if (t->space_splits && !marks_only_leading(s, n))
			t->space_splits = false;
	}
	return FM_OK;
}

/* The special ids and flags, with llama.cpp's defaults for each kind. */
static int
load_specials(struct fm_tok *t, const struct fm_gguf *g, struct fm_err *err)
{
	uint32_t n = t->n_vocab;
	int32_t cls;

	if (t->kind == FM_TOK_LLAMA) {
		t->bos = n > 1 ? 1 : -1;
		t->eos = n > 2 ? 2 : -1;
		t->unk = 0;
		t->sep = t->pad = -1;
		t->add_bos = true;
		t->add_eos = false;
		t->add_space_prefix = true;
	} else {
		t->bos = n > 101 ? 101 : -1;
		t->unk = n > 100 ? 100 : -1;
		t->sep = n > 102 ? 102 : -1;
		t->pad = 0;
		t->add_bos = true;
		t->add_eos = true;
		t->add_space_prefix = false;
	}
	if (get_special(g, "tokenizer.ggml.bos_token_id", n, &t->bos, err) != FM_OK ||
	    get_special(g, "tokenizer.ggml.eos_token_id", n, &t->eos, err) != FM_OK ||
	    get_special(g, "tokenizer.ggml.unknown_token_id", n, &t->unk, err) != FM_OK ||
	    get_special(g, "tokenizer.ggml.seperator_token_id", n, &t->sep, err) != FM_OK ||
	    get_special(g, "tokenizer.ggml.padding_token_id", n, &t->pad, err) != FM_OK ||
	    get_flag(g, "tokenizer.ggml.add_bos_token", &t->add_bos, err) != FM_OK ||
	    get_flag(g, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix, err) != FM_OK)
		return err->status;
	if (t->kind == FM_TOK_LLAMA) {
		if (get_flag(g, "tokenizer.ggml.add_eos_token", &t->add_eos, err) != FM_OK)
			return err->status;
	} else {
		/* BERT's BOS is [CLS] and what it appends is [SEP]. */
		cls = t->bos;
		if (get_special(g, "tokenizer.ggml.cls_token_id", n, &cls, err) != FM_OK ||
		    get_flag(g, "tokenizer.ggml.add_sep_token", &t->add_eos, err) != FM_OK)
			return err->status;
		t->bos = cls;
		t->eos = t->sep;
	}
	if (t->add_bos && t->bos < 0)
		return fm_err_set(err, FM_EDATA, "the tokenizer adds a %s token but has none",
		    t->kind == FM_TOK_LLAMA ? "bos" : "cls");
	if (t->add_eos && t->eos < 0)
		return fm_err_set(err, FM_EDATA, "the tokenizer adds a %s token but has none",
		    t->kind == FM_TOK_LLAMA ? "eos" : "sep");
	return FM_OK;
}

struct fm_tok *
fm_tok_from_gguf(const struct fm_gguf *g, struct fm_err *err)
{
	struct fm_tok *t;
	const struct fm_gguf_value *toks, *scores, *types;
	enum fm_tok_kind kind = FM_TOK_LLAMA;

	if (get_kind(g, &kind, err) != FM_OK)
		return NULL;
	toks = fm_gguf_get(g, "tokenizer.ggml.tokens");
	if (toks == NULL) {
		fm_err_set(err, FM_EDATA, "tokenizer.ggml.tokens is missing");
		return NULL;
	}
	if (toks->type != FM_GGUF_ARRAY || toks->v.arr.elem != FM_GGUF_STRING) {
		fm_err_set(err, FM_EDATA, "tokenizer.ggml.tokens is not an array of strings");
		return NULL;
	}
	if (toks->v.arr.n == 0 || toks->v.arr.n > MAX_VOCAB || toks->v.arr.items == NULL) {
		fm_err_set(err, FM_EDATA, "tokenizer.ggml.tokens has %llu entries",
		    (unsigned long long)toks->v.arr.n);
		return NULL;
	}
	if (get_token_array(g, "tokenizer.ggml.scores", (uint32_t)toks->v.arr.n, is_float_type,
	    "floats", &scores, err) != FM_OK ||
	    get_token_array(g, "tokenizer.ggml.token_type", (uint32_t)toks->v.arr.n, is_int_type,
	    "integers", &types, err) != FM_OK)
		return NULL;
	if (kind == FM_TOK_LLAMA && scores == NULL) {
		fm_err_set(err, FM_EDATA, "tokenizer.ggml.scores is missing");
		return NULL;
	}

	if ((t = calloc(1, sizeof *t)) == NULL) {
		fm_err_errno(err, FM_EIO, errno, "cannot allocate the tokenizer");
		return NULL;
	}
	t->kind = kind;
	t->n_vocab = (uint32_t)toks->v.arr.n;
	if (load_tokens(t, toks, scores, types, err) != FM_OK ||
	    index_tokens(t, err) != FM_OK ||
	    load_specials(t, g, err) != FM_OK) {
		fm_tok_free(t);
		return NULL;
	}
	t->fingerprint = fingerprint(t);
	return t;
}

void
fm_tok_free(struct fm_tok *t)
{
	if (t == NULL)
		return;
	free(t->arena);
	free(t->text_off);
	free(t->text_len);
	free(t->score);
	free(t->type);
	free(t->hash_slot);
	free(t->user);
	free(t);
}

enum fm_tok_kind
fm_tok_kind(const struct fm_tok *t)
{
	return t->kind;
}

const char *
fm_tok_kind_name(const struct fm_tok *t)
{
	return t->kind == FM_TOK_LLAMA ? "llama" : "bert";
}

uint32_t
fm_tok_n_vocab(const struct fm_tok *t)
{
	return t->n_vocab;
}

int32_t
fm_tok_bos(const struct fm_tok *t)
{
	return t->bos;
}

int32_t
fm_tok_eos(const struct fm_tok *t)
{
	return t->eos;
}

int32_t
fm_tok_unk(const struct fm_tok *t)
{
	return t->unk;
}

uint64_t
fm_tok_fingerprint(const struct fm_tok *t)
{
	return t->fingerprint;
}

bool
fm_tok_newline_is_boundary(const struct fm_tok *t)
{
	return t->newline_boundary;
}

bool
fm_tok_newline_cut_ok(const struct fm_tok *t, const char *s, size_t n)
{
	static const uint8_t lens[16] = { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4 };

	if (!t->newline_boundary || n == 0 || s[n - 1] != '\n')
		return false;
	/*
	 * SentencePiece cuts characters by the lead byte alone, so an invalid
	 * lead up to 3 bytes back (Latin-1 "\xE9\n", say) takes the newline into
	 * its character, and the character may go on past the cut.
	 */
	if (t->kind == FM_TOK_LLAMA)
		for (size_t j = 1; j <= 3 && j < n; j++)
			if (lens[(unsigned char)s[n - 1 - j] >> 4] > j)
				return false;
	return true;
}

struct fm_str
fm_tok_text(const struct fm_tok *t, int32_t id)
{
	struct fm_str s = { "", 0 };

	if (id >= 0 && (uint32_t)id < t->n_vocab) {
		s.ptr = t->arena + t->text_off[id];
		s.len = t->text_len[id];
	}
	return s;
}

/* Runs the algorithm on text[start, start + n) with spans relative to text. */
static int
encode_run(const struct fm_tok *t, const char *text, uint32_t start, uint32_t n, bool space_prefix,
    struct fm_tokens *out, struct fm_err *err)
{
	size_t n0 = out->n;
	int rc;

	if (t->kind == FM_TOK_LLAMA)
		rc = fm_tok_llama_encode(t, text + start, n, space_prefix, out, err);
	else
		rc = fm_tok_bert_encode(t, text + start, n, out, err);
	for (size_t i = n0; i < out->n && start > 0; i++) {
		out->start[i] += start;
		out->end[i] += start;
	}
	return rc;
}

/* A piece of the text: a user-defined token (id >= 0) or text for the algorithm (id = -1). */
struct frag {
	uint32_t start, len;
	int32_t id;
};

/* Appends a piece to a growable list. */
static int
frag_push(struct frag **f, size_t *n, size_t *cap, struct frag x, struct fm_err *err)
{
	struct frag *p;

	if (*n == *cap) {
		if ((p = realloc(*f, (*cap ? *cap * 2 : 16) * sizeof *p)) == NULL)
			return fm_err_errno(err, FM_EIO, errno, "cannot allocate");
		*f = p;
		*cap = *cap ? *cap * 2 : 16;
	}
	(*f)[(*n)++] = x;
	return FM_OK;
}

/*
 * Cuts every user-defined token out of the text, longest tokens first and
 * each at every occurrence from the left, as llama.cpp's
 * tokenizer_st_partition does, and encodes the runs between them.  As
 * there, a run after a user-defined token gets the leading space again.
 */
static int
encode_user(const struct fm_tok *t, const char *text, uint32_t len, bool space_prefix,
    struct fm_tokens *out, struct fm_err *err)
{
	struct frag *f = NULL, *g = NULL, *tmp;
	size_t nf = 0, fcap = 0, ng, gcap = 0, ncap;
	bool after_special = space_prefix;
	int rc;

	rc = frag_push(&f, &nf, &fcap, (struct frag){ 0, len, -1 }, err);
	for (uint32_t u = 0; u < t->n_user && rc == FM_OK; u++) {
		int32_t id = t->user[u];
		const char *s = t->arena + t->text_off[id];
		uint32_t sn = t->text_len[id];

		ng = 0;
		for (size_t i = 0; i < nf && rc == FM_OK; i++) {
			struct frag r = f[i];
			const char *hit;

			if (r.id >= 0 || r.len < sn) {
				rc = frag_push(&g, &ng, &gcap, r, err);
				continue;
			}
			while (rc == FM_OK && (hit = memmem(text + r.start, r.len, s, sn)) != NULL) {
				uint32_t at = (uint32_t)(hit - text);
				if (at > r.start)
					rc = frag_push(&g, &ng, &gcap, (struct frag){ r.start, at - r.start, -1 }, err);
				if (rc == FM_OK)
					rc = frag_push(&g, &ng, &gcap, (struct frag){ at, sn, id }, err);
				r.len -= at + sn - r.start;
				r.start = at + sn;
			}
			if (rc == FM_OK && r.len > 0)
				rc = frag_push(&g, &ng, &gcap, r, err);
		}
		/* This pass's pieces become the next pass's input. */
		tmp = f;
		f = g;
		g = tmp;
		ncap = fcap;
		fcap = gcap;
		gcap = ncap;
		nf = ng;
	}
	for (size_t i = 0; i < nf && rc == FM_OK; i++) {
		if (f[i].id >= 0) {
			rc = fm_tokens_push(out, f[i].id, f[i].start, f[i].start + f[i].len, err);
			after_special = t->add_space_prefix;
		} else {
			rc = encode_run(t, text, f[i].start, f[i].len, after_special, out, err);
			after_special = false;
		}
	}
	free(f);
	free(g);
	return rc;
}

int
fm_tok_encode(const struct fm_tok *t, const char *text, size_t len, unsigned flags,
    struct fm_tokens *out, struct fm_err *err)
{
	size_t n0 = out->n;
	bool special = (flags & FM_TOK_ADD_SPECIAL) != 0;
	bool space_prefix = t->add_space_prefix && !(flags & FM_TOK_CONTINUE);
	int rc = FM_OK;

	if (len > UINT32_MAX)
		return fm_err_set(err, FM_EDATA, "text of %zu bytes is too long to tokenize", len);
	if (special && t->add_bos)
		rc = fm_tokens_push(out, t->bos, 0, 0, err);
	/* As llama.cpp: empty text gives no tokens, not even the leading space. */
	if (rc == FM_OK && len > 0) {
		if (t->n_user > 0)
			rc = encode_user(t, text, (uint32_t)len, space_prefix, out, err);
		else
			rc = encode_run(t, text, 0, (uint32_t)len, space_prefix, out, err);
	}
	if (rc == FM_OK && special && t->add_eos)
		rc = fm_tokens_push(out, t->eos, (uint32_t)len, (uint32_t)len, err);
	if (rc != FM_OK)
		out->n = n0;
	return rc;
}

/* Makes room for n more bytes in the caller's growable buffer. */
static int
buf_reserve(char **buf, size_t *len, size_t *cap, size_t n, struct fm_err *err)
{
	size_t want, c;
	char *p;

	if (n > SIZE_MAX - *len)
		return fm_err_set(err, FM_EIO, "decoded text is too large");
	want = *len + n;
	if (want <= *cap && *buf != NULL)
		return FM_OK;
	c = *cap < 256 ? 256 : *cap;
	while (c < want)
		c = c > SIZE_MAX / 2 ? want : c * 2;
	if ((p = realloc(*buf, c)) == NULL)
		return fm_err_errno(err, FM_EIO, errno, "cannot allocate decoded text");
	*buf = p;
	*cap = c;
	return FM_OK;
}

/* Turns every U+2581 in p[0..n) back into a space, in place; returns the new length. */
static size_t
unescape(char *p, size_t n)
{
	size_t i = 0, o = 0;
	char *q;

	/* Most pieces have few marks: copy the stretches between them whole. */
	while ((q = memchr(p + i, space_mark[0], n - i)) != NULL) {
		size_t j = (size_t)(q - p);
		memmove(p + o, p + i, j - i);
		o += j - i;
		if (n - j >= 3 && memcmp(p + j, space_mark, 3) == 0) {
			p[o++] = ' ';
			i = j + 3;
		} else {
			p[o++] = p[j];
			i = j + 1;
		}
	}
	memmove(p + o, p + i, n - i);
	return o + n - i;
}

static int
put_raw(const char *s, size_t n, char **buf, size_t *len, size_t *cap, struct fm_err *err)
{
	if (buf_reserve(buf, len, cap, n, err) != FM_OK)
		return err->status;
	if (n > 0)
		memcpy(*buf + *len, s, n);
	*len += n;
	return FM_OK;
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* The byte a "<0xNN>" text stands for, or -1. */
static int
byte_of(const char *s, uint32_t n)
{
	int hi, lo;

	if (n != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>')
		return -1;
	if ((hi = hexval(s[3])) < 0 || (lo = hexval(s[4])) < 0)
		return -1;
	return hi << 4 | lo;
}

/*
 * As llama.cpp's detokenizer: control and unknown tokens are written as their
 * text only when asked for; unused and undefined ones never; user-defined
 * ones as stored; byte tokens as their byte; normal ones with U+2581 as a
 * space.  U+2581 is turned back over each run of normal and byte pieces as a
 * whole, not piece by piece, because a space next to an invalid UTF-8 lead
 * byte can be split across byte tokens (the lead swallows part of its
 * U+2581) and must still come back as a space.  llama removes the space that
 * encoding put before the first piece; bert joins word pieces, each word
 * starting with a space, and drops the space before the first word.
 */
int
fm_tok_decode(const struct fm_tok *t, const int32_t *ids, size_t n, unsigned flags,
    char **buf, size_t *len, size_t *cap, struct fm_err *err)
{
	size_t len0 = *len;
	size_t run = SIZE_MAX;     /* where the current run of normal and byte pieces began */
	size_t first = SIZE_MAX;   /* where the first piece that is not special began */
	bool special = (flags & FM_TOK_ADD_SPECIAL) != 0;
	int rc = FM_OK;

	for (size_t i = 0; i < n && rc == FM_OK; i++) {
		int32_t id = ids[i];
		const char *s;
		uint32_t sn;
		int b;
		char c;

		if (id < 0 || (uint32_t)id >= t->n_vocab) {
			rc = fm_err_set(err, FM_EDATA, "token id %d is outside the vocabulary of %u",
			    id, t->n_vocab);
			break;
		}
		s = t->arena + t->text_off[id];
		sn = t->text_len[id];
		switch (t->type[id]) {
		case FM_TT_UNDEFINED:
		case FM_TT_UNUSED:
			break;
		case FM_TT_CONTROL:
		case FM_TT_UNKNOWN:
		case FM_TT_USER_DEFINED:
			if (t->type[id] != FM_TT_USER_DEFINED && !special)
				break;
			if (run != SIZE_MAX) {
				*len = run + unescape(*buf + run, *len - run);
				run = SIZE_MAX;
			}
			if (t->type[id] == FM_TT_USER_DEFINED && first == SIZE_MAX)
				first = *len;
			rc = put_raw(s, sn, buf, len, cap, err);
			break;
		default:
			if (first == SIZE_MAX)
				first = *len;
			if (run == SIZE_MAX)
				run = *len;
			if (t->type[id] == FM_TT_BYTE && (b = byte_of(s, sn)) >= 0) {
				c = (char)b;
				rc = put_raw(&c, 1, buf, len, cap, err);
			} else {
				rc = put_raw(s, sn, buf, len, cap, err);
			}
			break;
		}
	}
	if (rc != FM_OK) {
		*len = len0;
		return rc;
	}
	if (run != SIZE_MAX)
		*len = run + unescape(*buf + run, *len - run);
	/* The first piece starts its run, so unescaping never moved it. */
	if (t->kind == FM_TOK_LLAMA)
		first = t->add_space_prefix ? first : SIZE_MAX;
	else
		first = len0;
	if (!(flags & FM_TOK_CONTINUE) && first < *len && (*buf)[first] == ' ') {
		memmove(*buf + first, *buf + first + 1, *len - first - 1);
		(*len)--;
	}
	return FM_OK;
}
