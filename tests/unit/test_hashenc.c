/*
 * test_hashenc.c - the built-in encoder: unit vectors, zero for text with
 * no word, deterministic, blind to ASCII case and punctuation, and closer
 * for texts that share words than for texts that do not; its fingerprint
 * follows its dimension.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "hashenc.h"
#include "tap.h"

#define D 384

static double
cosine_of(struct fm_hashenc *h, const char *a, const char *b)
{
	float va[D], vb[D];
	struct fm_err err;
	double dot = 0;

	fm_hashenc_encode(h, a, strlen(a), va, &err);
	fm_hashenc_encode(h, b, strlen(b), vb, &err);
	for (int i = 0; i < D; i++)
		dot += (double)va[i] * vb[i];
	return dot;
}

int
main(void)
{
	struct fm_err err;
	struct fm_hashenc *h = fm_hashenc_new(D, &err), *h2 = fm_hashenc_new(256, &err);
	float v[D], w[D];
	double ss = 0, near, far;
	int zero = 1;
	static const char bin[] = "\xff\xfe\x00\x80 caf\xc3\xa9 \xc3(";

	ok(fm_hashenc_encode(h, "The quick brown fox", 19, v, &err) == FM_OK, "encodes");
	for (int i = 0; i < D; i++)
		ss += (double)v[i] * v[i];
	ok(fabs(ss - 1) < 1e-6, "unit length (%.9f)", ss);
	fm_hashenc_encode(h, "The quick brown fox", 19, w, &err);
	ok(memcmp(v, w, sizeof v) == 0, "deterministic");
	fm_hashenc_encode(h, "the QUICK, brown fox!", 21, w, &err);
	ok(memcmp(v, w, sizeof v) == 0, "ASCII case and punctuation do not count");
	fm_hashenc_encode(h, " \t\n.,;!? ", 9, w, &err);
	for (int i = 0; i < D; i++)
		zero &= w[i] == 0;
	ok(zero, "no word: the zero vector");
	fm_hashenc_encode(h, "", 0, w, &err);
	ok(w[0] == 0 && w[D - 1] == 0, "empty text: the zero vector");
	ok(fm_hashenc_encode(h, bin, sizeof bin - 1, w, &err) == FM_OK, "any bytes are accepted");

	near = cosine_of(h, "invoice number 88213 from Acme Corporation",
	    "Acme Corporation sent invoice 88213");
	far = cosine_of(h, "invoice number 88213 from Acme Corporation",
	    "the garden was full of tulips in spring");
	ok(near > 0.5 && far < 0.2, "shared words and numbers score high (%.3f), none low (%.3f)",
	    near, far);
	near = cosine_of(h, "tokenization", "tokenizer");
	ok(near > 0.2, "trigrams relate word forms (%.3f)", near);
	ok(fm_hashenc_fingerprint(h) != fm_hashenc_fingerprint(h2), "fingerprint follows dim");
	fm_hashenc_free(h);
	fm_hashenc_free(h2);
	return done_testing();
}
