/*
 * select.c - scoring and selection policies (select.h).  One query is a
 * scan of the vectors, bound by memory bandwidth: F32 rows go through
 * OpenBLAS sgemv, F16 rows are widened in registers (F16C where the CPU has
 * it, chosen at run time so one binary runs anywhere) by one thread per CPU.
 * Batches are sgemm.
 */
#include "select.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>

#include "gguf.h"

#define BLOCK_ROWS 4096          /* F16 rows widened per sgemm in a batch */
#define MAX_THREADS 16           /* threads of one F16 scan */
#define PARALLEL_MIN (1u << 22)  /* values below which one thread scans alone */

/* fm_select() runs its top-k heap in the caller's selection array. */
_Static_assert(sizeof(struct fm_hit) <= sizeof(struct fm_selected), "heap fits in sel");

bool
fm_hit_before(struct fm_hit a, struct fm_hit b)
{
	float x = isnan(a.score) ? -INFINITY : a.score;
	float y = isnan(b.score) ? -INFINITY : b.score;

	if (x != y)
		return x > y;
	return a.id < b.id;
}

static float
dot_f16_plain(const float *q, const uint16_t *v, uint32_t dim)
{
	float s = 0;

	for (uint32_t j = 0; j < dim; j++)
		s += q[j] * fm_f16_to_f32(v[j]);
	return s;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>

__attribute__((target("avx2,fma,f16c")))
static void
score_f16_x86(float *out, const float *q, const uint16_t *v, uint64_t n, uint32_t dim)
{
	uint32_t d8 = dim & ~7u;

	for (uint64_t i = 0; i < n; i++, v += dim) {
		__m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
		uint32_t j = 0;
		for (; j + 16 <= d8; j += 16) {
			__m256 x0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v + j)));
			__m256 x1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v + j + 8)));
			a0 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(q + j), a0);
			a1 = _mm256_fmadd_ps(x1, _mm256_loadu_ps(q + j + 8), a1);
		}
		for (; j < d8; j += 8) {
			__m256 x0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v + j)));
			a0 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(q + j), a0);
		}
		a0 = _mm256_add_ps(a0, a1);
		__m128 h = _mm_add_ps(_mm256_castps256_ps128(a0), _mm256_extractf128_ps(a0, 1));
		h = _mm_add_ps(h, _mm_movehl_ps(h, h));
		h = _mm_add_ss(h, _mm_movehdup_ps(h));
		float s = _mm_cvtss_f32(h);
		for (; j < dim; j++)
			s += q[j] * fm_f16_to_f32(v[j]);
		out[i] = s;
	}
}

__attribute__((target("avx2,f16c")))
static void
widen_f16_x86(float *out, const uint16_t *h, uint64_t n)
{
	uint64_t i = 0;

	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))));
	for (; i < n; i++)
		out[i] = fm_f16_to_f32(h[i]);
}

static bool
have_f16c(void)
{
	unsigned a, b, c, d;

	/* F16C from CPUID itself: clang before 16 does not know it as a feature string. */
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
	    __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
}
#endif

static void
widen_f16(float *out, const uint16_t *h, uint64_t n)
{
#if defined(__x86_64__) && defined(__GNUC__)
	if (have_f16c()) {
		widen_f16_x86(out, h, n);
		return;
	}
#endif
	for (uint64_t i = 0; i < n; i++)
		out[i] = fm_f16_to_f32(h[i]);
}

struct f16_part {
	float *out;
	const float *q;
	const uint16_t *v;
	uint64_t n;
	uint32_t dim;
};

static void *
score_f16_part(void *arg)
{
	struct f16_part *p = arg;

#if defined(__x86_64__) && defined(__GNUC__)
	if (have_f16c()) {
		score_f16_x86(p->out, p->q, p->v, p->n, p->dim);
		return NULL;
	}
#endif
	for (uint64_t i = 0; i < p->n; i++)
		p->out[i] = dot_f16_plain(p->q, p->v + i * p->dim, p->dim);
	return NULL;
}

void
fm_score(float *out, const float *q, const void *vecs, enum fm_vec_type type,
    uint64_t n, uint32_t dim)
{
	if (n == 0)
		return;
	if (type == FM_VEC_F32) {
		/* sgemv takes an int row count: go in slices for huge collections. */
		const float *v = vecs;
		for (uint64_t i = 0; i < n;) {
			uint64_t m = n - i < (1u << 30) / dim ? n - i : (1u << 30) / dim;
			cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)m, (int)dim, 1.0f,
			    v + i * dim, (int)dim, q, 1, 0.0f, out + i, 1);
			i += m;
		}
		return;
	}
	/*
	 * One core cannot draw the memory bandwidth of the machine: a large
	 * scan is split over the CPUs (OpenBLAS does the same for F32).
	 */
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned nt = ncpu < 1 ? 1 : ncpu > MAX_THREADS ? MAX_THREADS : (unsigned)ncpu;
	if ((uint64_t)n * dim < PARALLEL_MIN)
		nt = 1;
	struct f16_part parts[MAX_THREADS];
	pthread_t tid[MAX_THREADS];
	bool started[MAX_THREADS] = { false };
	uint64_t per = (n + nt - 1) / nt;
	for (unsigned t = 0; t < nt; t++) {
		uint64_t lo = t * per < n ? t * per : n, hi = lo + per < n ? lo + per : n;
		parts[t] = (struct f16_part){ out + lo, q, (const uint16_t *)vecs + lo * dim, hi - lo, dim };
		if (t > 0)
			started[t] = pthread_create(&tid[t], NULL, score_f16_part, &parts[t]) == 0;
	}
	score_f16_part(&parts[0]);
	for (unsigned t = 1; t < nt; t++) {
		if (started[t])
			pthread_join(tid[t], NULL);
		else
			score_f16_part(&parts[t]);
	}
}

int
fm_score_batch(float *out, const float *q, uint32_t nq, const void *vecs,
    enum fm_vec_type type, uint64_t n, uint32_t dim, struct fm_err *err)
{
	float *buf = NULL;

	if (nq == 0 || n == 0)
		return FM_OK;
	if (type == FM_VEC_F16 && (buf = malloc((size_t)BLOCK_ROWS * dim * sizeof *buf)) == NULL)
		return fm_err_errno(err, FM_EIO, errno, "cannot allocate");
	for (uint64_t i = 0; i < n; i += BLOCK_ROWS) {
		uint64_t m = n - i < BLOCK_ROWS ? n - i : BLOCK_ROWS;
		const float *v;
		if (type == FM_VEC_F32) {
			v = (const float *)vecs + i * dim;
		} else {
			widen_f16(buf, (const uint16_t *)vecs + i * dim, m * dim);
			v = buf;
		}
		/* out[:, i:i+m] = Q (nq, dim) . V_block^T; ldc is the whole row n. */
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nq, (int)m, (int)dim,
		    1.0f, q, (int)dim, v, (int)dim, 0.0f, out + i, (int)n);
	}
	free(buf);
	return FM_OK;
}

/*
 * The heap keeps the k best seen so far with the worst at the root, so a
 * new score is compared once with the root and most are turned away there.
 */
static void
sift_down(struct fm_hit *h, uint64_t n, uint64_t i)
{
	for (;;) {
		uint64_t l = 2 * i + 1, r = l + 1, w = i;
		if (l < n && fm_hit_before(h[w], h[l]))
			w = l;
		if (r < n && fm_hit_before(h[w], h[r]))
			w = r;
		if (w == i)
			return;
		struct fm_hit t = h[i];
		h[i] = h[w];
		h[w] = t;
		i = w;
	}
}

static void
sift_up(struct fm_hit *h, uint64_t i)
{
	while (i > 0) {
		uint64_t p = (i - 1) / 2;
		if (!fm_hit_before(h[p], h[i]))
			return;
		struct fm_hit t = h[i];
		h[i] = h[p];
		h[p] = t;
		i = p;
	}
}

uint64_t
fm_topk(const float *scores, uint64_t n, uint64_t k, const float *min, struct fm_hit *out)
{
	uint64_t m = 0;

	if (k == 0)
		return 0;
	for (uint64_t i = 0; i < n; i++) {
		struct fm_hit x = { i, scores[i] };
		if (min != NULL && !(scores[i] >= *min))
			continue;
		if (m < k) {
			out[m] = x;
			sift_up(out, m++);
		} else if (fm_hit_before(x, out[0])) {
			out[0] = x;
			sift_down(out, m, 0);
		}
	}
	/* Pop the worst to the back, one at a time: best first. */
	for (uint64_t e = m; e > 1; e--) {
		struct fm_hit t = out[0];
		out[0] = out[e - 1];
		out[e - 1] = t;
		sift_down(out, e - 1, 0);
	}
	return m;
}

const char *
fm_reason_name(uint32_t reasons)
{
	static const char *const names[] = { "topk", "threshold", "page", "sink", "recent" };

	for (unsigned i = 0; i < 5; i++)
		if (reasons & 1u << i)
			return names[i];
	return "none";
}

static int
cmp_rank(const void *a, const void *b)
{
	const struct fm_selected *x = a, *y = b;
	struct fm_hit hx = { x->id, x->score }, hy = { y->id, y->score };

	if (fm_hit_before(hx, hy))
		return -1;
	return fm_hit_before(hy, hx) ? 1 : 0;
}

void
fm_selected_sort_rank(struct fm_selected *sel, uint64_t n)
{
	qsort(sel, n, sizeof *sel, cmp_rank);
}

/* Marks every chunk of the p->pages best pages. */
static int
select_pages(const struct fm_policy *p, const struct fm_collection *c, const float *scores,
    const float *page_scores, uint8_t *why, struct fm_err *err)
{
	uint64_t np = c->n_pages, k = p->pages < np ? p->pages : np;
	float *ps = malloc((np ? np : 1) * sizeof *ps);
	struct fm_hit *best = malloc((k ? k : 1) * sizeof *best);
	int st = FM_OK;

	if (ps == NULL || best == NULL) {
		st = fm_err_errno(err, FM_EIO, errno, "cannot allocate");
		goto out;
	}
	for (uint64_t g = 0; g < np; g++) {
		if (p->page_score == FM_PAGE_SUM && page_scores != NULL) {
			ps[g] = page_scores[g];
			continue;
		}
		double s = 0;
		for (uint64_t i = c->page_first[g]; i < c->page_first[g + 1]; i++)
			s += p->page_score == FM_PAGE_SUM ? scores[i] : scores[i] >= p->threshold;
		ps[g] = (float)s;
	}
	k = fm_topk(ps, np, k, NULL, best);
	for (uint64_t j = 0; j < k; j++)
		for (uint64_t i = c->page_first[best[j].id]; i < c->page_first[best[j].id + 1]; i++)
			why[i] |= FM_WHY_PAGE;
out:
	free(ps);
	free(best);
	return st;
}

/* Keeps the ranked candidates while their tokens fit what sink and recent left. */
static int
apply_budget(const struct fm_policy *p, const struct fm_collection *c, const float *scores,
    uint8_t *why, struct fm_selected *tmp, struct fm_err *err)
{
	const uint8_t keep = FM_WHY_SINK | FM_WHY_RECENT;
	uint64_t used = 0, m = 0;

	for (uint64_t i = 0; i < c->n; i++) {
		if (why[i] & keep)
			used += c->n_tokens[i];
		else if (why[i])
			tmp[m++] = (struct fm_selected){ i, scores[i], why[i] };
	}
	fm_selected_sort_rank(tmp, m);
	uint64_t j = 0;
	for (; j < m; j++) {
		uint64_t t = c->n_tokens[tmp[j].id];
		if (used > p->budget || t > p->budget - used)
			break;
		used += t;
	}
	for (; j < m; j++)
		why[tmp[j].id] = 0;
	return FM_OK;
}

int
fm_select(const struct fm_policy *p, const struct fm_collection *c, const float *scores,
    const float *page_scores, struct fm_selected *sel, uint64_t *n_sel, struct fm_err *err)
{
	uint64_t n = c->n, k;
	uint8_t *why;
	int st = FM_OK;

	*n_sel = 0;
	if (p->budget > 0 && c->n_tokens == NULL)
		return fm_err_set(err, FM_EUSAGE, "a token budget needs the chunks' token counts");
	if (p->pages > 0 && c->page_first == NULL)
		return fm_err_set(err, FM_EUSAGE, "page selection needs the collection's pages");
	if (p->pages > 0 && p->page_score == FM_PAGE_COUNT && !p->has_threshold)
		return fm_err_set(err, FM_EUSAGE, "counting a page's chunks needs a threshold");
	if (n == 0)
		return FM_OK;
	if ((why = calloc(n, 1)) == NULL)
		return fm_err_errno(err, FM_EIO, errno, "cannot allocate");

	if (p->k > 0) {
		/* sel doubles as the heap: an fm_hit fits in an fm_selected. */
		struct fm_hit *h = (struct fm_hit *)(void *)sel;
		k = fm_topk(scores, n, p->k < n ? p->k : n, p->has_threshold ? &p->threshold : NULL, h);
		for (uint64_t j = 0; j < k; j++)
			why[h[j].id] |= FM_WHY_TOPK;
	} else if (p->has_threshold && p->pages == 0) {
		for (uint64_t i = 0; i < n; i++)
			if (scores[i] >= p->threshold)
				why[i] |= FM_WHY_THRESHOLD;
	}
	if (p->pages > 0 && (st = select_pages(p, c, scores, page_scores, why, err)) != FM_OK)
		goto out;
	if (p->k == 0 && !p->has_threshold && p->pages == 0 && p->budget > 0)
		memset(why, FM_WHY_TOPK, n);
	for (uint64_t i = 0; i < p->sink && i < n; i++)
		why[i] |= FM_WHY_SINK;
	for (uint64_t i = 0; i < p->recent && i < n; i++)
		why[n - 1 - i] |= FM_WHY_RECENT;
	if (p->budget > 0 && (st = apply_budget(p, c, scores, why, sel, err)) != FM_OK)
		goto out;
	for (uint64_t i = 0; i < n; i++)
		if (why[i])
			sel[(*n_sel)++] = (struct fm_selected){ i, scores[i], why[i] };
out:
	free(why);
	return st;
}
