/*
 * test_select.c - scoring and selection policies against plain references:
 * scores against double-precision dot products (F32, F16, batches), top-k
 * and threshold against sorting everything, on random data with many equal
 * scores so that the tie rule (lower id first) is exercised; pages, sink,
 * recent and budget on cases built by hand.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "select.h"
#include "tap.h"

static uint64_t rng = 88172645463325252ull;

static uint64_t
next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static float
unif(void)
{
	return (float)(next() >> 40) / (float)(1 << 24) * 2 - 1;
}

static int
cmp_ref(const void *a, const void *b)
{
	const struct fm_hit *x = a, *y = b;
	float sx = isnan(x->score) ? -INFINITY : x->score;
	float sy = isnan(y->score) ? -INFINITY : y->score;

	if (sx != sy)
		return sx > sy ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

/* The reference: rank everything by sorting. */
static uint64_t
ref_topk(const float *s, uint64_t n, uint64_t k, const float *min, struct fm_hit *out)
{
	struct fm_hit *all = malloc((n ? n : 1) * sizeof *all);
	uint64_t m = 0;

	for (uint64_t i = 0; i < n; i++)
		if (min == NULL || s[i] >= *min)
			all[m++] = (struct fm_hit){ i, s[i] };
	qsort(all, m, sizeof *all, cmp_ref);
	if (k < m)
		m = k;
	memcpy(out, all, m * sizeof *out);
	free(all);
	return m;
}

static void
test_scores(void)
{
	const uint32_t dims[] = { 1, 7, 8, 16, 33, 384 };
	const uint64_t n = 257;

	for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++) {
		uint32_t dim = dims[d];
		float *v = malloc(n * dim * sizeof *v), *q = malloc(3 * dim * sizeof *q);
		uint16_t *h = malloc(n * dim * sizeof *h);
		float *s32 = malloc(n * sizeof *s32), *s16 = malloc(n * sizeof *s16);
		float *b32 = malloc(3 * n * sizeof *b32), *b16 = malloc(3 * n * sizeof *b16);
		struct fm_err err;
		double worst32 = 0, worst16 = 0, worstb = 0;

		for (uint64_t i = 0; i < n * dim; i++) {
			v[i] = unif();
			h[i] = fm_f32_to_f16(v[i]);
		}
		for (uint32_t j = 0; j < 3 * dim; j++)
			q[j] = unif();
		fm_score(s32, q, v, FM_VEC_F32, n, dim);
		fm_score(s16, q, h, FM_VEC_F16, n, dim);
		int st = fm_score_batch(b32, q, 3, v, FM_VEC_F32, n, dim, &err) |
		    fm_score_batch(b16, q, 3, h, FM_VEC_F16, n, dim, &err);
		for (uint64_t i = 0; i < n; i++) {
			for (uint32_t t = 0; t < 3; t++) {
				double r32 = 0, r16 = 0, mag = 0;
				for (uint32_t j = 0; j < dim; j++) {
					r32 += (double)q[t * dim + j] * v[i * dim + j];
					r16 += (double)q[t * dim + j] * fm_f16_to_f32(h[i * dim + j]);
					mag += fabs((double)q[t * dim + j] * v[i * dim + j]);
				}
				double tol = 1e-6 * (mag + 1);
				if (t == 0) {
					worst32 = fmax(worst32, fabs(s32[i] - r32) / tol);
					worst16 = fmax(worst16, fabs(s16[i] - r16) / tol);
				}
				worstb = fmax(worstb, fabs(b32[t * n + i] - r32) / tol);
				worstb = fmax(worstb, fabs(b16[t * n + i] - r16) / tol);
			}
		}
		ok(worst32 <= 1, "dim %u: F32 scores equal the double reference (worst %.3g of tolerance)", dim, worst32);
		ok(worst16 <= 1, "dim %u: F16 scores equal the double reference (worst %.3g of tolerance)", dim, worst16);
		ok(st == FM_OK && worstb <= 1, "dim %u: batch of 3 queries, F32 and F16 (worst %.3g)", dim, worstb);
		free(v), free(q), free(h), free(s32), free(s16), free(b32), free(b16);
	}
	/* More rows than one sgemm block, so the block edges are crossed. */
	{
		uint64_t nn = 9000;
		uint32_t dim = 5;
		uint16_t *h = malloc(nn * dim * sizeof *h);
		float q[2 * 5], *b = malloc(2 * nn * sizeof *b), *s = malloc(nn * sizeof *s);
		struct fm_err err;
		int bad = 0;
		for (uint64_t i = 0; i < nn * dim; i++)
			h[i] = fm_f32_to_f16(unif());
		for (int j = 0; j < 10; j++)
			q[j] = unif();
		fm_score_batch(b, q, 2, h, FM_VEC_F16, nn, dim, &err);
		for (int t = 0; t < 2; t++) {
			fm_score(s, q + t * dim, h, FM_VEC_F16, nn, dim);
			for (uint64_t i = 0; i < nn; i++)
				bad += fabsf(s[i] - b[t * nn + i]) > 1e-5f;
		}
		ok(bad == 0, "batch over 9000 F16 rows equals one query at a time (%d differ)", bad);
		free(h), free(b), free(s);
	}
}

/* A scan large enough to be split over threads: every row scored, each as alone. */
static void
test_parallel_scan(void)
{
	uint64_t n = 11001;
	uint32_t dim = 384;
	uint16_t *h = malloc(n * dim * sizeof *h);
	float q[384], *s = malloc(n * sizeof *s), one;
	int bad = 0;

	for (uint64_t i = 0; i < n * dim; i++)
		h[i] = fm_f32_to_f16(unif());
	for (uint32_t j = 0; j < dim; j++)
		q[j] = unif();
	for (uint64_t i = 0; i < n; i++)
		s[i] = NAN;
	fm_score(s, q, h, FM_VEC_F16, n, dim);
	for (uint64_t i = 0; i < n; i += (i % 1000 == 0 || i > n - 5) ? 1 : 97) {
		fm_score(&one, q, h + i * dim, FM_VEC_F16, 1, dim);
		bad += !(s[i] == one);
	}
	ok(bad == 0, "a scan of %llu x %u (split over threads): every row as scored alone (%d differ)",
	    (unsigned long long)n, dim, bad);
	free(h), free(s);
}

static void
test_topk(void)
{
	const uint64_t ns[] = { 0, 1, 2, 5, 100, 1000, 4097 };
	int bad = 0, cases = 0;

	for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++) {
		uint64_t n = ns[a];
		float *s = malloc((n ? n : 1) * sizeof *s);
		struct fm_hit *got = malloc((n + 1) * sizeof *got), *want = malloc((n + 1) * sizeof *want);
		for (int levels = 0; levels < 3; levels++) {
			/* levels 0: few distinct values (ties everywhere), 1: many, 2: with NaN and inf */
			for (uint64_t i = 0; i < n; i++) {
				s[i] = levels == 0 ? (float)(next() % 5) / 4 : unif();
				if (levels == 2 && next() % 10 == 0)
					s[i] = (float[]){ NAN, INFINITY, -INFINITY }[next() % 3];
			}
			const uint64_t ks[] = { 1, 2, 3, 8, n / 2, n ? n - 1 : 0, n, n + 1 };
			for (size_t b = 0; b < sizeof ks / sizeof ks[0]; b++) {
				for (int th = 0; th < 2; th++) {
					float min = 0.25f;
					const float *mp = th ? &min : NULL;
					uint64_t k = ks[b];
					uint64_t g = fm_topk(s, n, k, mp, got), w = ref_topk(s, n, k, mp, want);
					cases++;
					if (g != w) {
						bad++;
						continue;
					}
					for (uint64_t i = 0; i < g; i++)
						if (got[i].id != want[i].id)
							bad++;
				}
			}
		}
		free(s), free(got), free(want);
	}
	ok(bad == 0, "top-k equals sorting everything, ties by lower id, NaN last, with and without a threshold (%d cases, %d differ)", cases, bad);
}

/* A selection as a string "id:reason id:reason ...", for readable checks. */
static const char *
show(const struct fm_selected *s, uint64_t n)
{
	static char buf[4096];
	size_t o = 0;

	buf[0] = '\0';
	for (uint64_t i = 0; i < n && o < sizeof buf - 64; i++)
		o += (size_t)snprintf(buf + o, sizeof buf - o, "%s%llu:%s", i ? " " : "",
		    (unsigned long long)s[i].id, fm_reason_name(s[i].reasons));
	return buf;
}

static const char *
run(const struct fm_policy *p, const struct fm_collection *c, const float *s, const float *ps)
{
	struct fm_selected sel[64];
	uint64_t n;
	static struct fm_err err;

	if (fm_select(p, c, s, ps, sel, &n, &err) != FM_OK)
		return err.msg;
	return show(sel, n);
}

#define CHECK(p, want, desc) do { \
	const char *got_ = run(&(p), &c, s, NULL); \
	if (!ok(strcmp(got_, want) == 0, desc)) \
		printf("#   got  '%s'\n#   want '%s'\n", got_, want); \
} while (0)

static void
test_policies(void)
{
	/* 12 chunks on 4 pages of 3: pages 0-2, 3-5, 6-8, 9-11. */
	const float s[12] = { 0.125f, 0.875f, 0.25f,  0.5f, 0.5f, 0.5f,  0.9375f, 0, 0,  0.25f, 0.25f, 0.75f };
	const uint32_t tok[12] = { 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 4 };
	const uint64_t pf[5] = { 0, 3, 6, 9, 12 };
	struct fm_collection c = { 12, tok, 4, pf };
	struct fm_policy p;

	p = (struct fm_policy){ .k = 3 };
	CHECK(p, "1:topk 6:topk 11:topk", "top-3, document order");
	p = (struct fm_policy){ .k = 5 };
	CHECK(p, "1:topk 3:topk 4:topk 6:topk 11:topk", "top-5: of three equal scores the lower ids win");
	p = (struct fm_policy){ .has_threshold = true, .threshold = 0.5f };
	CHECK(p, "1:threshold 3:threshold 4:threshold 5:threshold 6:threshold 11:threshold", "threshold 0.5 keeps scores >= 0.5");
	p = (struct fm_policy){ .k = 2, .has_threshold = true, .threshold = 0.9f };
	CHECK(p, "6:topk", "top-2 above 0.9: only one");
	p = (struct fm_policy){ .has_threshold = true, .threshold = 0.99f };
	CHECK(p, "", "threshold above every score: nothing");
	p = (struct fm_policy){ .pages = 1, .page_score = FM_PAGE_COUNT, .has_threshold = true, .threshold = 0.5f };
	CHECK(p, "3:page 4:page 5:page", "densest page by count above 0.5: page 1 (three chunks)");
	p = (struct fm_policy){ .pages = 1, .page_score = FM_PAGE_SUM };
	CHECK(p, "3:page 4:page 5:page", "densest page by sum: page 1 (1.5 beats 1.25, 0.9375, 1.25)");
	p = (struct fm_policy){ .pages = 2, .page_score = FM_PAGE_SUM };
	CHECK(p, "0:page 1:page 2:page 3:page 4:page 5:page", "two pages by sum: pages 0 and 3 tie at 1.25, the earlier wins");
	p = (struct fm_policy){ .pages = 2, .page_score = FM_PAGE_COUNT, .has_threshold = true, .threshold = 0.9f };
	CHECK(p, "0:page 1:page 2:page 6:page 7:page 8:page", "two pages by count above 0.9: pages 0 and 2");
	p = (struct fm_policy){ .pages = 9, .page_score = FM_PAGE_SUM, .k = 1 };
	CHECK(p, "0:page 1:page 2:page 3:page 4:page 5:page 6:topk 7:page 8:page 9:page 10:page 11:page",
	    "more pages than there are: all, with the top-1 named topk");
	p = (struct fm_policy){ .pages = 1, .page_score = FM_PAGE_COUNT };
	CHECK(p, "counting a page's chunks needs a threshold", "page counts without a threshold refused");
	p = (struct fm_policy){ .k = 1, .sink = 2, .recent = 1 };
	CHECK(p, "0:sink 1:sink 6:topk 11:recent", "sink 2 and recent 1 join the top-1");
	p = (struct fm_policy){ .k = 1, .sink = 7 };
	CHECK(p, "0:sink 1:sink 2:sink 3:sink 4:sink 5:sink 6:topk", "a chunk both topk and sink is named topk");
	p = (struct fm_policy){ .sink = 20, .recent = 20 };
	CHECK(p, "0:sink 1:sink 2:sink 3:sink 4:sink 5:sink 6:sink 7:sink 8:sink 9:sink 10:sink 11:sink",
	    "sink and recent longer than the collection: all chunks, once");
	p = (struct fm_policy){ .budget = 23 };
	CHECK(p, "1:topk 6:topk", "budget 23 tokens alone: the best chunks while they fit");
	p = (struct fm_policy){ .budget = 30 };
	CHECK(p, "1:topk 6:topk 11:topk", "budget 30: the 4-token chunk fits too");
	p = (struct fm_policy){ .budget = 33 };
	CHECK(p, "1:topk 6:topk 11:topk", "budget 33: the next 10-token chunk does not fit, nothing after it is tried");
	p = (struct fm_policy){ .budget = 15, .sink = 1, .recent = 1, .k = 4 };
	CHECK(p, "0:sink 11:topk", "sink and recent count first: 14 tokens leave 1, no topk chunk fits");
	p = (struct fm_policy){ .budget = 5, .sink = 1, .recent = 1, .k = 4 };
	CHECK(p, "0:sink 11:topk", "sink and recent are kept over budget (11 is also top-ranked)");
	p = (struct fm_policy){ .budget = 24, .sink = 1, .k = 4 };
	CHECK(p, "0:sink 6:topk", "budget 24 with a sink: one topk chunk, the best");
	p = (struct fm_policy){ .budget = 1000, .k = 2, .pages = 1, .page_score = FM_PAGE_SUM };
	CHECK(p, "1:topk 3:page 4:page 5:page 6:topk", "a large budget keeps topk and page chunks");

	/* Page sums given by the caller (the index's page vectors) are used as given. */
	{
		const float ps[4] = { 0, 0, 0, 1 };
		struct fm_policy q = { .pages = 1, .page_score = FM_PAGE_SUM };
		const char *got = run(&q, &c, s, ps);
		ok(strcmp(got, "9:page 10:page 11:page") == 0, "page scores from the caller: page 3 (%s)", got);
	}
	/* What the collection lacks. */
	{
		struct fm_collection bare = { 12, NULL, 0, NULL };
		struct fm_policy q = { .budget = 10 };
		const char *got = run(&q, &bare, s, NULL);
		ok(strstr(got, "token counts") != NULL, "a budget without token counts refused");
		q = (struct fm_policy){ .pages = 1, .page_score = FM_PAGE_SUM };
		got = run(&q, &bare, s, NULL);
		ok(strstr(got, "pages") != NULL, "pages without a page table refused");
		struct fm_collection empty = { 0, NULL, 0, NULL };
		q = (struct fm_policy){ .k = 3, .sink = 2 };
		got = run(&q, &empty, s, NULL);
		ok(strcmp(got, "") == 0, "an empty collection selects nothing");
	}
	/* Order by score. */
	{
		struct fm_selected sel[12];
		uint64_t n;
		struct fm_err err;
		struct fm_policy q = { .k = 5 };
		fm_select(&q, &c, s, NULL, sel, &n, &err);
		fm_selected_sort_rank(sel, n);
		ok(strcmp(show(sel, n), "6:topk 1:topk 11:topk 3:topk 4:topk") == 0, "sorted by score, ties by id");
	}
}

/* Random policies against a reference built from the rules, written plainly. */
static void
test_random_policies(void)
{
	int bad = 0, cases = 0;

	for (int round = 0; round < 300; round++) {
		uint64_t n = 1 + next() % 200, np = 0;
		float *s = malloc(n * sizeof *s);
		uint32_t *tok = malloc(n * sizeof *tok);
		uint64_t *pf = malloc((n + 1) * sizeof *pf);
		struct fm_selected *sel = malloc(n * sizeof *sel);
		struct fm_hit *h = malloc(n * sizeof *h);
		uint8_t *why = calloc(n, 1);
		struct fm_err err;
		uint64_t m;

		for (uint64_t i = 0; i < n; i++) {
			s[i] = (float)(next() % 9) / 8;
			tok[i] = 1 + next() % 20;
			if (i == 0 || next() % 4 == 0)
				pf[np++] = i;
		}
		pf[np] = n;
		struct fm_collection c = { n, tok, np, pf };
		struct fm_policy p = {
			.k = next() % 3 ? next() % (n + 1) : 0,
			.has_threshold = next() % 2,
			.threshold = (float)(next() % 9) / 8,
			.sink = next() % 3 ? 0 : next() % 5,
			.recent = next() % 3 ? 0 : next() % 5,
		};
		if (next() % 3 == 0) {
			p.pages = 1 + next() % 4;
			p.page_score = p.has_threshold && next() % 2 ? FM_PAGE_COUNT : FM_PAGE_SUM;
		}
		if (next() % 3 == 0)
			p.budget = 1 + next() % 400;
		int st = fm_select(&p, &c, s, NULL, sel, &m, &err);

		/* Reference. */
		if (p.k) {
			uint64_t g = ref_topk(s, n, p.k, p.has_threshold ? &p.threshold : NULL, h);
			for (uint64_t j = 0; j < g; j++)
				why[h[j].id] |= FM_WHY_TOPK;
		} else if (p.has_threshold && !p.pages) {
			for (uint64_t i = 0; i < n; i++)
				if (s[i] >= p.threshold)
					why[i] |= FM_WHY_THRESHOLD;
		}
		if (p.pages) {
			float *ps = malloc(np * sizeof *ps);
			for (uint64_t g = 0; g < np; g++) {
				double t = 0;
				for (uint64_t i = pf[g]; i < pf[g + 1]; i++)
					t += p.page_score == FM_PAGE_SUM ? s[i] : s[i] >= p.threshold;
				ps[g] = (float)t;
			}
			uint64_t g = ref_topk(ps, np, p.pages, NULL, h);
			for (uint64_t j = 0; j < g; j++)
				for (uint64_t i = pf[h[j].id]; i < pf[h[j].id + 1]; i++)
					why[i] |= FM_WHY_PAGE;
			free(ps);
		}
		if (!p.k && !p.has_threshold && !p.pages && p.budget)
			memset(why, FM_WHY_TOPK, n);
		for (uint64_t i = 0; i < n; i++) {
			if (i < p.sink)
				why[i] |= FM_WHY_SINK;
			if (n - 1 - i < p.recent)
				why[i] |= FM_WHY_RECENT;
		}
		if (p.budget) {
			long long left = (long long)p.budget;
			uint64_t g = 0;
			for (uint64_t i = 0; i < n; i++) {
				if (why[i] & (FM_WHY_SINK | FM_WHY_RECENT))
					left -= tok[i];
				else if (why[i])
					h[g++] = (struct fm_hit){ i, s[i] };
			}
			qsort(h, g, sizeof *h, cmp_ref);
			uint64_t j = 0;
			for (; j < g && left >= (long long)tok[h[j].id]; j++)
				left -= tok[h[j].id];
			for (; j < g; j++)
				why[h[j].id] = 0;
		}
		uint64_t w = 0;
		int same = st == FM_OK;
		for (uint64_t i = 0; i < n && same; i++) {
			if (!why[i])
				continue;
			same = w < m && sel[w].id == i && sel[w].reasons == why[i] && sel[w].score == s[i];
			w++;
		}
		same = same && w == m;
		cases++;
		if (!same) {
			bad++;
			if (bad < 4)
				printf("# round %d: n %llu k %llu th %d %.3f pages %llu/%d sink %llu recent %llu budget %llu: status %d\n",
				    round, (unsigned long long)n, (unsigned long long)p.k, p.has_threshold, p.threshold,
				    (unsigned long long)p.pages, p.page_score, (unsigned long long)p.sink,
				    (unsigned long long)p.recent, (unsigned long long)p.budget, st);
		}
		free(s), free(tok), free(pf), free(sel), free(h), free(why);
	}
	ok(bad == 0, "random combined policies equal the reference built from the rules (%d cases, %d differ)", cases, bad);
}

int
main(void)
{
	test_scores();
	test_parallel_scan();
	test_topk();
	test_policies();
	test_random_policies();
	return done_testing();
}
