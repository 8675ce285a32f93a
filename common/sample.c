/*
 * sample.c - greedy, temperature, top-k and top-p sampling.  Every choice
 * that could depend on the platform is pinned down: our own generator, a
 * total order on candidates (probability, then id), and a fixed walk order,
 * so a seed reproduces its tokens exactly.
 */
#include "sample.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

void
fm_rng_seed(struct fm_rng *r, uint64_t seed)
{
	/* splitmix64 spreads any seed (0 included) over the state. */
	uint64_t z = seed + UINT64_C(0x9e3779b97f4a7c15);

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	z ^= z >> 31;
	r->s = z != 0 ? z : 1;   /* xorshift must never hold 0 */
}

uint64_t
fm_rng_next(struct fm_rng *r)
{
	r->s ^= r->s >> 12;
	r->s ^= r->s << 25;
	r->s ^= r->s >> 27;
	return r->s * UINT64_C(0x2545f4914f6cdd1d);
}

float
fm_rng_float(struct fm_rng *r)
{
	return (float)(fm_rng_next(r) >> 40) / 16777216.0f;
}

int32_t
fm_argmax(const float *logits, uint32_t n)
{
	uint32_t best = 0;

	for (uint32_t i = 1; i < n; i++)
		if (logits[i] > logits[best])
			best = i;
	return (int32_t)best;
}

/* Whether a ranks before b: larger logit first, lower id on ties. */
static int
before(float la, int32_t ia, float lb, int32_t ib)
{
	return la > lb || (la == lb && ia < ib);
}

static int
cand_cmp(const void *pa, const void *pb)
{
	const struct fm_cand *a = pa, *b = pb;

	if (before(a->logit, a->id, b->logit, b->id))
		return -1;
	return before(b->logit, b->id, a->logit, a->id) ? 1 : 0;
}

/*
 * Keeps in c[0..k) the k best of the n candidates, sorted: a heap whose root
 * is the worst kept one, then a sort of the k survivors.
 */
static void
select_top(struct fm_cand *c, uint32_t n, uint32_t k)
{
	for (uint32_t i = 0; i < n; i++) {
		struct fm_cand x = c[i];
		uint32_t j;

		if (i >= k) {
			if (!before(x.logit, x.id, c[0].logit, c[0].id))
				continue;
			/* Replace the root and sift it down. */
			j = 0;
			for (;;) {
				uint32_t l = 2 * j + 1, r = l + 1, w = j;
				struct fm_cand *cw = &x;
				if (l < k && before(cw->logit, cw->id, c[l].logit, c[l].id))
					w = l, cw = &c[l];
				if (r < k && before(cw->logit, cw->id, c[r].logit, c[r].id))
					w = r, cw = &c[r];
				if (w == j)
					break;
				c[j] = c[w];
				j = w;
			}
			c[j] = x;
			continue;
		}
		/* Sift up: the parent must rank after (be worse than) the child. */
		j = i;
		while (j > 0 && before(c[(j - 1) / 2].logit, c[(j - 1) / 2].id, x.logit, x.id)) {
			c[j] = c[(j - 1) / 2];
			j = (j - 1) / 2;
		}
		c[j] = x;
	}
	qsort(c, k, sizeof *c, cand_cmp);
}

void
fm_top_logits(const float *logits, uint32_t n, uint32_t k, int32_t *ids, float *vals)
{
	struct fm_cand c[64];   /* k is small: a trace shows a handful */

	if (k > 64)
		k = 64;
	if (k > n)
		k = n;
	for (uint32_t i = 0; i < n; i++) {
		struct fm_cand x = { logits[i], 0, (int32_t)i };
		uint32_t j;

		if (i < k) {
			/* Insertion into the sorted prefix. */
			for (j = i; j > 0 && before(x.logit, x.id, c[j - 1].logit, c[j - 1].id); j--)
				c[j] = c[j - 1];
			c[j] = x;
		} else if (k > 0 && before(x.logit, x.id, c[k - 1].logit, c[k - 1].id)) {
			for (j = k - 1; j > 0 && before(x.logit, x.id, c[j - 1].logit, c[j - 1].id); j--)
				c[j] = c[j - 1];
			c[j] = x;
		}
	}
	for (uint32_t i = 0; i < k; i++) {
		ids[i] = c[i].id;
		vals[i] = c[i].logit;
	}
}

int
fm_sampler_init(struct fm_sampler *s, uint32_t n_vocab, float temp, uint32_t top_k,
    float top_p, uint64_t seed, struct fm_err *err)
{
	s->cand = NULL;
	if (!(temp >= 0 && isfinite(temp)))
		return fm_err_set(err, FM_EUSAGE, "temperature %g is out of range", temp);
	if (!(top_p > 0 && top_p <= 1))
		return fm_err_set(err, FM_EUSAGE, "top-p %g is out of range (0, 1]", top_p);
	if (n_vocab == 0)
		return fm_err_set(err, FM_EUSAGE, "empty vocabulary");
	s->temp = temp;
	s->top_k = top_k;
	s->top_p = top_p;
	s->n_vocab = n_vocab;
	fm_rng_seed(&s->rng, seed);
	if ((s->cand = malloc((size_t)n_vocab * sizeof *s->cand)) == NULL)
		return fm_err_errno(err, FM_EIO, errno, "cannot allocate");
	return FM_OK;
}

void
fm_sampler_free(struct fm_sampler *s)
{
	free(s->cand);
	s->cand = NULL;
}

int32_t
fm_sample(struct fm_sampler *s, const float *logits)
{
	struct fm_cand *c = s->cand;
	uint32_t n = s->n_vocab, nc = n, i;
	float mx, r;
	double total = 0, cum;

	if (s->temp == 0)
		return fm_argmax(logits, n);
	mx = logits[fm_argmax(logits, n)];
	for (i = 0; i < n; i++) {
		c[i].logit = logits[i];
		c[i].id = (int32_t)i;
	}
	if (s->top_k > 0 && s->top_k < n) {
		select_top(c, n, s->top_k);
		nc = s->top_k;
	}
	for (i = 0; i < nc; i++) {
		c[i].p = expf((c[i].logit - mx) / s->temp);
		total += c[i].p;
	}
	if (s->top_p < 1 && nc > 1) {
		/*
		 * A candidate with at most (1 - top_p) / nc of the total cannot be
		 * in the nucleus: it and the at most nc - 1 less likely ones hold at
		 * most 1 - top_p, so the more likely ones reach top_p without it.
		 * Dropping those first keeps the sort short; the most likely
		 * candidate, at least 1 / nc of the total, always stays.
		 */
		double cut = (1.0 - s->top_p) / nc * total, want = s->top_p * total;
		uint32_t kept = 0;
		for (i = 0; i < nc; i++)
			if (c[i].p > cut)
				c[kept++] = c[i];
		if (!(s->top_k > 0 && s->top_k < n))
			qsort(c, kept, sizeof *c, cand_cmp);
		cum = 0;
		for (i = 0; i < kept; i++) {
			cum += c[i].p;
			if (cum >= want) {
				i++;
				break;
			}
		}
		nc = i;
		total = cum;
	}
	r = fm_rng_float(&s->rng);
	cum = 0;
	for (i = 0; i < nc; i++) {
		cum += c[i].p;
		if (r * total < cum)
			return c[i].id;
	}
	return c[nc - 1].id;
}
