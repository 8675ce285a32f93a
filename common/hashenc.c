/*
 * hashenc.c - the built-in hashed n-gram encoder.  Each feature becomes a
 * 64-bit hash (FNV-1a of a kind byte and the feature's bytes); the hashes of
 * one text are sorted so that equal features are counted in one pass, which
 * gives the term frequency without a dictionary.  Bucket and sign come from
 * different bits of a final mix of the hash, so that features colliding in
 * one bucket cancel on average instead of piling up (signed feature hashing).
 */
#include "hashenc.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checksum.h"

/* Kind bytes and weights; changing any of them changes the fingerprint. */
enum { K_WORD = 'w', K_BIGRAM = 'b', K_TRIGRAM = 't' };
#define W_WORD 1.0
#define W_BIGRAM 0.5
#define W_TRIGRAM 0.25
#define MAX_WORD 64   /* longer runs (hashes, base64) count as one word of their first 64 bytes */
#define VERSION 1

struct fm_hashenc {
	uint32_t dim;
	uint64_t *feat;   /* feature hashes of the current text, with the kind in the low byte */
	size_t n, cap;
};

struct fm_hashenc *
fm_hashenc_new(uint32_t dim, struct fm_err *err)
{
	struct fm_hashenc *h = calloc(1, sizeof *h);

	if (h == NULL) {
		fm_err_errno(err, FM_EIO, ENOMEM, "built-in encoder");
		return NULL;
	}
	h->dim = dim;
	return h;
}

void
fm_hashenc_free(struct fm_hashenc *h)
{
	if (h == NULL)
		return;
	free(h->feat);
	free(h);
}

uint64_t
fm_hashenc_fingerprint(const struct fm_hashenc *h)
{
	char desc[160];
	int n = snprintf(desc, sizeof desc, "%s v%d dim %u word %g bigram %g trigram %g max %d",
	    FM_HASHENC_NAME, VERSION, h->dim, W_WORD, W_BIGRAM, W_TRIGRAM, MAX_WORD);

	return fm_fnv64(FM_FNV64_INIT, desc, (size_t)n);
}

static int
push(struct fm_hashenc *h, uint64_t f, struct fm_err *err)
{
	if (h->n == h->cap) {
		size_t nc = h->cap ? 2 * h->cap : 1024;
		uint64_t *nf = realloc(h->feat, nc * sizeof *nf);

		if (nf == NULL)
			return fm_err_errno(err, FM_EIO, ENOMEM, "built-in encoder");
		h->feat = nf;
		h->cap = nc;
	}
	h->feat[h->n++] = f;
	return FM_OK;
}

/* The hash of kind + bytes, with the kind kept in the low byte for the weight. */
static uint64_t
feature(int kind, const unsigned char *a, size_t na, const unsigned char *b, size_t nb)
{
	unsigned char k = (unsigned char)kind, sep = ' ';
	uint64_t x = fm_fnv64(FM_FNV64_INIT, &k, 1);

	x = fm_fnv64(x, a, na);
	if (b != NULL) {
		x = fm_fnv64(x, &sep, 1);
		x = fm_fnv64(x, b, nb);
	}
	return (x & ~(uint64_t)0xff) | k;
}

static int
is_word_byte(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	    c >= 0x80;
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* splitmix64's finaliser: spreads the FNV hash's bits before bucket and sign are taken. */
static uint64_t
mix(uint64_t z)
{
	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

int
fm_hashenc_encode(struct fm_hashenc *h, const char *text, size_t len, float *out,
    struct fm_err *err)
{
	const unsigned char *s = (const unsigned char *)text;
	unsigned char word[MAX_WORD + 2], prev[MAX_WORD];
	size_t i = 0, np = 0;
	double ss = 0;
	int st;

	h->n = 0;
	memset(out, 0, h->dim * sizeof *out);
	while (i < len) {
		size_t nw = 0;

		while (i < len && !is_word_byte(s[i]))
			i++;
		if (i == len)
			break;
		/* word[0] and word[nw+1] are boundary marks for the trigrams. */
		word[0] = '<';
		for (; i < len && is_word_byte(s[i]); i++)
			if (nw < MAX_WORD) {
				unsigned char c = s[i];
				word[1 + nw++] = (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
			}
		word[nw + 1] = '>';
		if ((st = push(h, feature(K_WORD, word + 1, nw, NULL, 0), err)) != FM_OK)
			return st;
		if (np > 0 && (st = push(h, feature(K_BIGRAM, prev, np, word + 1, nw), err)) != FM_OK)
			return st;
		for (size_t k = 0; nw >= 2 && k + 3 <= nw + 2; k++)
			if ((st = push(h, feature(K_TRIGRAM, word + k, 3, NULL, 0), err)) != FM_OK)
				return st;
		memcpy(prev, word + 1, nw);
		np = nw;
	}
	if (h->n == 0)
		return FM_OK;
	qsort(h->feat, h->n, sizeof *h->feat, cmp_u64);
	for (size_t a = 0, b; a < h->n; a = b) {
		uint64_t m = mix(h->feat[a]);
		int kind = (int)(h->feat[a] & 0xff);
		double w = kind == K_WORD ? W_WORD : kind == K_BIGRAM ? W_BIGRAM : W_TRIGRAM;

		for (b = a + 1; b < h->n && h->feat[b] == h->feat[a]; b++)
			;
		w *= 1 + log((double)(b - a));
		out[(m >> 1) % h->dim] += (float)((m & 1) ? -w : w);
	}
	for (uint32_t d = 0; d < h->dim; d++)
		ss += (double)out[d] * out[d];
	if (ss > 0) {
		float inv = (float)(1 / sqrt(ss));
		for (uint32_t d = 0; d < h->dim; d++)
			out[d] *= inv;
	}
	return FM_OK;
}
