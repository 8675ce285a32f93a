/*
 * forward_cpu.c - the llama forward pass on the CPU.
 *
 * Decode (one token) is bound by memory bandwidth: every weight is read once
 * per token, so matrix-vector products run straight off the mapped file in
 * the weights' own type (F32, F16, BF16, Q8_0), rows split over threads,
 * with AVX2/FMA/F16C kernels where the CPU has them.  Prefill (many tokens)
 * is bound by arithmetic: tiles of rows are widened to F32 and multiplied by
 * the whole batch with OpenBLAS sgemm, so each weight byte is read once per
 * batch.  Attention is tiled with an online softmax over FM_ATTN_TILE keys,
 * so its memory does not grow with the context.
 *
 * The work is split by our own small thread pool; OpenBLAS is set to one
 * thread so that its threads and ours do not compete for the same cores.
 */
#include "forward.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define HAVE_X86 1
#endif

/* Rows of weights widened per sgemm call in prefill: 128 rows of 8192 floats is 4 MiB. */
#define GEMM_ROWS 128
/* Below this many multiply-adds a parallel dispatch costs more than it saves. */
#define SERIAL_WORK 65536

/* ---- ops: the CPU twins of the CUDA kernels ---- */

void
fm_rmsnorm(float *out, const float *x, const float *w, uint32_t n, float eps)
{
	double ss = 0;
	float r;

	for (uint32_t i = 0; i < n; i++)
		ss += (double)x[i] * x[i];
	r = (float)(1.0 / sqrt(ss / n + eps));
	for (uint32_t i = 0; i < n; i++)
		out[i] = x[i] * r * w[i];
}

void
fm_rope(float *x, uint32_t n_head, uint32_t head_dim, uint32_t n_rot, const float *freq,
    uint32_t pos)
{
	float cs[2048], sn[2048];   /* n_rot / 2 <= head_dim / 2 <= 2048 (model.c) */

	for (uint32_t i = 0; i < n_rot / 2; i++) {
		double theta = (double)pos * freq[i];
		cs[i] = (float)cos(theta);
		sn[i] = (float)sin(theta);
	}
	for (uint32_t h = 0; h < n_head; h++) {
		float *p = x + (size_t)h * head_dim;
		for (uint32_t i = 0; i < n_rot / 2; i++) {
			float x0 = p[2 * i], x1 = p[2 * i + 1];
			p[2 * i] = x0 * cs[i] - x1 * sn[i];
			p[2 * i + 1] = x0 * sn[i] + x1 * cs[i];
		}
	}
}

void
fm_swiglu(float *out, const float *gate, const float *up, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		float g = gate[i];
		out[i] = g / (1.0f + expf(-g)) * up[i];
	}
}

/* ---- dot products of one weight row with x, per type ---- */

typedef float (*dot_fn)(const void *row, const float *x, uint32_t n);

static float
dot_f32(const void *row, const float *x, uint32_t n)
{
	const float *w = row;
	float s = 0;

	for (uint32_t i = 0; i < n; i++)
		s += w[i] * x[i];
	return s;
}

static float
dot_f16(const void *row, const float *x, uint32_t n)
{
	const uint16_t *w = row;
	float s = 0;

	for (uint32_t i = 0; i < n; i++)
		s += fm_f16_to_f32(w[i]) * x[i];
	return s;
}

static float
dot_bf16(const void *row, const float *x, uint32_t n)
{
	const uint16_t *w = row;
	float s = 0;

	for (uint32_t i = 0; i < n; i++)
		s += fm_bf16_to_f32(w[i]) * x[i];
	return s;
}

static float
dot_q8_0(const void *row, const float *x, uint32_t n)
{
	const struct fm_q8_0 *b = row;
	float s = 0;

	for (uint32_t k = 0; k < n / FM_Q8_0_BLOCK; k++, x += FM_Q8_0_BLOCK) {
		float t = 0;
		for (int i = 0; i < FM_Q8_0_BLOCK; i++)
			t += b[k].qs[i] * x[i];
		s += fm_f16_to_f32(b[k].d) * t;
	}
	return s;
}

#ifdef HAVE_X86
#define X86_TARGET __attribute__((target("avx2,fma,f16c")))

X86_TARGET static inline float
hsum(__m256 v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

X86_TARGET static float
dot_f32_avx2(const void *row, const float *x, uint32_t n)
{
	const float *w = row;
	__m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
	uint32_t i = 0;
	float s;

	for (; i + 16 <= n; i += 16) {
		a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
		a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
	}
	for (; i + 8 <= n; i += 8)
		a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
	s = hsum(_mm256_add_ps(a0, a1));
	for (; i < n; i++)
		s += w[i] * x[i];
	return s;
}

X86_TARGET static float
dot_f16_avx2(const void *row, const float *x, uint32_t n)
{
	const uint16_t *w = row;
	__m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
	uint32_t i = 0;
	float s;

	for (; i + 16 <= n; i += 16) {
		__m256 w0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i)));
		__m256 w1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i + 8)));
		a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + i), a0);
		a1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + i + 8), a1);
	}
	for (; i + 8 <= n; i += 8)
		a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i))),
		    _mm256_loadu_ps(x + i), a0);
	s = hsum(_mm256_add_ps(a0, a1));
	for (; i < n; i++)
		s += fm_f16_to_f32(w[i]) * x[i];
	return s;
}

X86_TARGET static inline __m256
bf16x8(const uint16_t *p)
{
	__m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
	return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

X86_TARGET static float
dot_bf16_avx2(const void *row, const float *x, uint32_t n)
{
	const uint16_t *w = row;
	__m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
	uint32_t i = 0;
	float s;

	for (; i + 16 <= n; i += 16) {
		a0 = _mm256_fmadd_ps(bf16x8(w + i), _mm256_loadu_ps(x + i), a0);
		a1 = _mm256_fmadd_ps(bf16x8(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
	}
	for (; i + 8 <= n; i += 8)
		a0 = _mm256_fmadd_ps(bf16x8(w + i), _mm256_loadu_ps(x + i), a0);
	s = hsum(_mm256_add_ps(a0, a1));
	for (; i < n; i++)
		s += fm_bf16_to_f32(w[i]) * x[i];
	return s;
}

X86_TARGET static float
dot_q8_0_avx2(const void *row, const float *x, uint32_t n)
{
	const struct fm_q8_0 *b = row;
	__m256 acc = _mm256_setzero_ps();

	for (uint32_t k = 0; k < n / FM_Q8_0_BLOCK; k++, x += FM_Q8_0_BLOCK) {
		__m256 t = _mm256_setzero_ps();
		for (int j = 0; j < FM_Q8_0_BLOCK; j += 8) {
			__m128i q = _mm_loadl_epi64((const __m128i *)(b[k].qs + j));
			__m256 f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
			t = _mm256_fmadd_ps(f, _mm256_loadu_ps(x + j), t);
		}
		acc = _mm256_fmadd_ps(_mm256_set1_ps(fm_f16_to_f32(b[k].d)), t, acc);
	}
	return hsum(acc);
}

X86_TARGET static void
widen_f16_avx2(const uint16_t *w, float *out, uint32_t n)
{
	uint32_t i = 0;

	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i))));
	for (; i < n; i++)
		out[i] = fm_f16_to_f32(w[i]);
}

X86_TARGET static void
axpy_avx2(float *y, float a, const float *x, uint32_t n)
{
	__m256 va = _mm256_set1_ps(a);
	uint32_t i = 0;

	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i),
		    _mm256_loadu_ps(y + i)));
	for (; i < n; i++)
		y[i] += a * x[i];
}

static bool
have_avx2(void)
{
	return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
	    __builtin_cpu_supports("f16c");
}
#else
static bool
have_avx2(void)
{
	return false;
}
#endif

static dot_fn
dot_for(enum fm_ggml_type t)
{
	bool v = have_avx2();

	switch (t) {
#ifdef HAVE_X86
	case FM_GGML_F16:
		return v ? dot_f16_avx2 : dot_f16;
	case FM_GGML_BF16:
		return v ? dot_bf16_avx2 : dot_bf16;
	case FM_GGML_Q8_0:
		return v ? dot_q8_0_avx2 : dot_q8_0;
	default:
		return v ? dot_f32_avx2 : dot_f32;
#else
	case FM_GGML_F16:
		return dot_f16;
	case FM_GGML_BF16:
		return dot_bf16;
	case FM_GGML_Q8_0:
		return dot_q8_0;
	default:
		return dot_f32;
#endif
	}
}

static float
dot_plain(const float *a, const float *b, uint32_t n)
{
#ifdef HAVE_X86
	if (have_avx2())
		return dot_f32_avx2(a, b, n);
#endif
	return dot_f32(a, b, n);
}

/* y += a x */
static void
axpy(float *y, float a, const float *x, uint32_t n)
{
#ifdef HAVE_X86
	if (have_avx2()) {
		axpy_avx2(y, a, x, n);
		return;
	}
#endif
	for (uint32_t i = 0; i < n; i++)
		y[i] += a * x[i];
}

/* Row r of w as floats, the fast way for the types that have one. */
static void
widen_row(const struct fm_weight *w, uint32_t r, float *out)
{
#ifdef HAVE_X86
	if (w->type == FM_GGML_F16 && have_avx2()) {
		widen_f16_avx2((const uint16_t *)((const uint8_t *)w->data +
		    (size_t)r * w->row_bytes), out, w->cols);
		return;
	}
#endif
	fm_weight_row(w, r, out);
}

static void
matvec_rows(float *y, const struct fm_weight *w, const float *x, bool accumulate,
    uint32_t r0, uint32_t r1)
{
	dot_fn dot = dot_for(w->type);
	const uint8_t *p = w->data;

	for (uint32_t r = r0; r < r1; r++) {
		float s = dot(p + (size_t)r * w->row_bytes, x, w->cols);
		y[r] = accumulate ? y[r] + s : s;
	}
}

void
fm_matvec(float *y, const struct fm_weight *w, const float *x, bool accumulate)
{
	matvec_rows(y, w, x, accumulate, 0, w->rows);
}

/* ---- attention ---- */

uint32_t
fm_attention_scratch(const struct fm_kvcache *kv, uint32_t n_head)
{
	uint32_t g = n_head / kv->n_head_kv, hd = kv->head_dim;

	return 2 * FM_ATTN_TILE * hd + g * FM_ATTN_TILE + 2 * g + g * hd;
}

/*
 * The g query heads that share KV head kvh: each K/V tile is widened once
 * and used by all of them.  q and out point at the first of the g heads.
 */
static void
attn_group(float *out, const float *q, uint32_t g, const struct fm_kvcache *kv,
    uint32_t layer, uint32_t kvh, const int32_t *rows, uint32_t n_keys, float *scratch)
{
	uint32_t hd = kv->head_dim;
	float *kt = scratch, *vt = kt + FM_ATTN_TILE * hd, *s = vt + FM_ATTN_TILE * hd;
	float *mx = s + g * FM_ATTN_TILE, *sum = mx + g, *acc = sum + g;
	float scale = 1.0f / sqrtf((float)hd);

	for (uint32_t h = 0; h < g; h++) {
		mx[h] = -INFINITY;
		sum[h] = 0;
	}
	memset(acc, 0, (size_t)g * hd * sizeof(float));
	for (uint32_t t0 = 0; t0 < n_keys; t0 += FM_ATTN_TILE) {
		uint32_t nt = n_keys - t0 < FM_ATTN_TILE ? n_keys - t0 : FM_ATTN_TILE;
		fm_kv_read_rows(kv, 'k', layer, kvh, rows, t0, nt, kt);
		fm_kv_read_rows(kv, 'v', layer, kvh, rows, t0, nt, vt);
		for (uint32_t h = 0; h < g; h++) {
			const float *qh = q + (size_t)h * hd;
			float *sh = s + (size_t)h * FM_ATTN_TILE, *ah = acc + (size_t)h * hd;
			float m = mx[h], corr, l = 0;
			for (uint32_t j = 0; j < nt; j++) {
				sh[j] = dot_plain(qh, kt + (size_t)j * hd, hd) * scale;
				if (sh[j] > m)
					m = sh[j];
			}
			/* Rescale what was summed under the old maximum. */
			corr = expf(mx[h] - m);
			if (corr != 1.0f)
				for (uint32_t i = 0; i < hd; i++)
					ah[i] *= corr;
			for (uint32_t j = 0; j < nt; j++) {
				float p = expf(sh[j] - m);
				l += p;
				axpy(ah, p, vt + (size_t)j * hd, hd);
			}
			sum[h] = sum[h] * corr + l;
			mx[h] = m;
		}
	}
	for (uint32_t h = 0; h < g; h++)
		for (uint32_t i = 0; i < hd; i++)
			out[(size_t)h * hd + i] = acc[(size_t)h * hd + i] / sum[h];
}

void
fm_attention(float *out, const float *q, uint32_t n_head, const struct fm_kvcache *kv,
    uint32_t layer, uint32_t n_keys, float *scratch)
{
	uint32_t g = n_head / kv->n_head_kv;
	size_t stride = (size_t)g * kv->head_dim;

	for (uint32_t kvh = 0; kvh < kv->n_head_kv; kvh++)
		attn_group(out + kvh * stride, q + kvh * stride, g, kv, layer, kvh, NULL, n_keys,
		    scratch);
}

void
fm_attention_rows(float *out, const float *q, uint32_t n_head, const struct fm_kvcache *kv,
    uint32_t layer, const int32_t *rows, uint32_t n_keys, float *scratch)
{
	uint32_t g = n_head / kv->n_head_kv;
	size_t stride = (size_t)g * kv->head_dim;

	for (uint32_t kvh = 0; kvh < kv->n_head_kv; kvh++)
		attn_group(out + kvh * stride, q + kvh * stride, g, kv, layer, kvh, rows, n_keys,
		    scratch);
}

/* ---- the thread pool ---- */

typedef void (*task_fn)(void *arg, uint32_t task, uint32_t thread);

struct pool {
	pthread_mutex_t mu;
	pthread_cond_t go, done;
	pthread_t *th;
	uint32_t n_th;        /* worker threads; the caller is thread 0 */
	uint32_t n_started;
	task_fn fn;
	void *arg;
	uint32_t n_tasks;
	atomic_uint next;     /* next task to take */
	uint32_t busy;        /* workers still in the current job */
	uint64_t gen;         /* job number, so a worker never runs one job twice */
	bool quit;
	bool init;            /* mutex and conditions initialised */
};

struct worker {
	struct pool *p;
	uint32_t id;
};

static void
pool_drain(struct pool *p, uint32_t thread)
{
	unsigned t;

	while ((t = atomic_fetch_add(&p->next, 1)) < p->n_tasks)
		p->fn(p->arg, t, thread);
}

static void *
pool_main(void *arg)
{
	struct worker *w = arg;
	struct pool *p = w->p;
	uint64_t seen = 0;

	for (;;) {
		pthread_mutex_lock(&p->mu);
		while (p->gen == seen && !p->quit)
			pthread_cond_wait(&p->go, &p->mu);
		if (p->quit) {
			pthread_mutex_unlock(&p->mu);
			return NULL;
		}
		seen = p->gen;
		pthread_mutex_unlock(&p->mu);
		pool_drain(p, w->id);
		pthread_mutex_lock(&p->mu);
		if (--p->busy == 0)
			pthread_cond_signal(&p->done);
		pthread_mutex_unlock(&p->mu);
	}
}

/* Runs fn(arg, t, thread) for t < n_tasks on all threads; returns when all are done. */
static void
pool_run(struct pool *p, task_fn fn, void *arg, uint32_t n_tasks)
{
	if (p->n_started == 0 || n_tasks <= 1) {
		for (uint32_t t = 0; t < n_tasks; t++)
			fn(arg, t, 0);
		return;
	}
	pthread_mutex_lock(&p->mu);
	p->fn = fn;
	p->arg = arg;
	p->n_tasks = n_tasks;
	atomic_store(&p->next, 0);
	p->busy = p->n_started;
	p->gen++;
	pthread_cond_broadcast(&p->go);
	pthread_mutex_unlock(&p->mu);
	pool_drain(p, 0);
	pthread_mutex_lock(&p->mu);
	while (p->busy > 0)
		pthread_cond_wait(&p->done, &p->mu);
	pthread_mutex_unlock(&p->mu);
}

/* ---- the forward pass ---- */

struct fm_cpu {
	const struct fm_model *m;
	uint32_t max_batch;
	uint32_t n_threads;
	struct pool pool;
	struct worker *workers;
	float *x;        /* (max_batch, dim) residual stream */
	float *xb;       /* (max_batch, max(dim, n_head*head_dim)) normed input, attention output */
	float *q;        /* (max_batch, n_head*head_dim) */
	float *k;        /* (max_batch, n_head_kv*head_dim) */
	float *v;        /* (max_batch, n_head_kv*head_dim) */
	float *gate;     /* (max_batch, ffn_dim), SwiGLU output in place */
	float *up;       /* (max_batch, ffn_dim) */
	float *wtile;    /* (n_threads, GEMM_ROWS, max cols) widened weight rows */
	float *ascratch; /* (n_threads, fm_attention_scratch) */
	uint32_t ascratch_n;
	size_t wtile_n;
	fm_probe_fn probe;   /* called with each layer's rotated queries, or NULL */
	void *probe_arg;
};

static uint32_t
cpu_count(void)
{
	cpu_set_t set;
	long n;

	if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
		return (uint32_t)CPU_COUNT(&set);
	n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (uint32_t)n : 1;
}

static float *
falloc(size_t n, int *bad)
{
	float *p = malloc(n * sizeof(float));

	if (p == NULL)
		*bad = 1;
	return p;
}

struct fm_cpu *
fm_cpu_new(const struct fm_model *m, uint32_t max_batch, uint32_t n_threads, struct fm_err *err)
{
	const struct fm_hparams *hp = &m->hp;
	size_t B = max_batch, qd = (size_t)hp->n_head * hp->head_dim;
	size_t kvd = (size_t)hp->n_head_kv * hp->head_dim, maxcols;
	struct fm_kvcache shape;
	struct fm_cpu *c;
	int bad = 0;

	if ((c = calloc(1, sizeof *c)) == NULL) {
		fm_err_errno(err, FM_EIO, errno, "cannot allocate");
		return NULL;
	}
	c->m = m;
	c->max_batch = max_batch;
	c->n_threads = n_threads > 0 ? n_threads : cpu_count();
	if (c->n_threads > 256)
		c->n_threads = 256;
	maxcols = hp->dim > hp->ffn_dim ? hp->dim : hp->ffn_dim;
	if (qd > maxcols)
		maxcols = qd;
	c->wtile_n = GEMM_ROWS * maxcols;
	shape.n_head_kv = hp->n_head_kv;
	shape.head_dim = hp->head_dim;
	c->ascratch_n = fm_attention_scratch(&shape, hp->n_head);

	c->x = falloc(B * hp->dim, &bad);
	c->xb = falloc(B * (qd > hp->dim ? qd : hp->dim), &bad);
	c->q = falloc(B * qd, &bad);
	c->k = falloc(B * kvd, &bad);
	c->v = falloc(B * kvd, &bad);
	c->gate = falloc(B * hp->ffn_dim, &bad);
	c->up = falloc(B * hp->ffn_dim, &bad);
	c->wtile = max_batch > 1 ? falloc(c->n_threads * c->wtile_n, &bad) : NULL;
	c->ascratch = falloc((size_t)c->n_threads * c->ascratch_n, &bad);
	c->workers = calloc(c->n_threads, sizeof *c->workers);
	c->pool.th = calloc(c->n_threads, sizeof *c->pool.th);
	if (bad || c->workers == NULL || c->pool.th == NULL) {
		fm_err_errno(err, FM_EIO, ENOMEM, "cannot allocate the forward pass buffers");
		fm_cpu_free(c);
		return NULL;
	}

	pthread_mutex_init(&c->pool.mu, NULL);
	pthread_cond_init(&c->pool.go, NULL);
	pthread_cond_init(&c->pool.done, NULL);
	c->pool.init = true;
	for (uint32_t i = 1; i < c->n_threads; i++) {
		c->workers[i].p = &c->pool;
		c->workers[i].id = i;
		if (pthread_create(&c->pool.th[i], NULL, pool_main, &c->workers[i]) != 0) {
			fm_err_set(err, FM_EIO, "cannot start worker threads");
			fm_cpu_free(c);
			return NULL;
		}
		c->pool.n_started++;
	}
	/* Each sgemm call gets one of our threads; see the top of this file. */
	if (c->n_threads > 1)
		openblas_set_num_threads(1);
	return c;
}

void
fm_cpu_free(struct fm_cpu *c)
{
	if (c == NULL)
		return;
	if (c->pool.n_started > 0) {
		pthread_mutex_lock(&c->pool.mu);
		c->pool.quit = true;
		pthread_cond_broadcast(&c->pool.go);
		pthread_mutex_unlock(&c->pool.mu);
		for (uint32_t i = 1; i <= c->pool.n_started; i++)
			pthread_join(c->pool.th[i], NULL);
	}
	if (c->pool.init) {
		pthread_mutex_destroy(&c->pool.mu);
		pthread_cond_destroy(&c->pool.go);
		pthread_cond_destroy(&c->pool.done);
	}
	free(c->pool.th);
	free(c->workers);
	free(c->x);
	free(c->xb);
	free(c->q);
	free(c->k);
	free(c->v);
	free(c->gate);
	free(c->up);
	free(c->wtile);
	free(c->ascratch);
	free(c);
}

uint32_t
fm_cpu_threads(const struct fm_cpu *c)
{
	return c->n_threads;
}

/* out (n, w->rows) = x (n, w->cols) W^T, or += with accumulate; split by rows of W. */
struct mm_job {
	struct fm_cpu *c;
	const struct fm_weight *w;
	const float *x;
	float *out;
	uint32_t n;
	uint32_t rows_per_task;
	bool accumulate;
};

static void
mm_task(void *arg, uint32_t t, uint32_t thread)
{
	struct mm_job *j = arg;
	const struct fm_weight *w = j->w;
	uint32_t r0 = t * j->rows_per_task, r1 = r0 + j->rows_per_task;
	float *tile;

	if (r1 > w->rows)
		r1 = w->rows;
	if (j->n == 1) {
		matvec_rows(j->out, w, j->x, j->accumulate, r0, r1);
		return;
	}
	/* Widen GEMM_ROWS rows at a time, then one sgemm for the whole batch. */
	tile = j->c->wtile + (size_t)thread * j->c->wtile_n;
	for (uint32_t r = r0; r < r1; r += GEMM_ROWS) {
		uint32_t nr = r1 - r < GEMM_ROWS ? r1 - r : GEMM_ROWS;
		const float *a = tile;
		if (w->type == FM_GGML_F32)
			a = (const float *)((const uint8_t *)w->data + (size_t)r * w->row_bytes);
		else
			for (uint32_t i = 0; i < nr; i++)
				widen_row(w, r + i, tile + (size_t)i * w->cols);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)j->n, (int)nr,
		    (int)w->cols, 1.0f, j->x, (int)w->cols, a, (int)w->cols,
		    j->accumulate ? 1.0f : 0.0f, j->out + r, (int)w->rows);
	}
}

static void
matmul(struct fm_cpu *c, float *out, const struct fm_weight *w, const float *x, uint32_t n,
    bool accumulate)
{
	struct mm_job j = { c, w, x, out, n, w->rows, accumulate };
	uint64_t work = (uint64_t)w->rows * w->cols * n;
	uint32_t n_tasks = 1;

	if (work >= SERIAL_WORK && c->n_threads > 1) {
		/* A few tasks per thread evens out uneven progress; rows stay in whole GEMM tiles. */
		uint32_t unit = n == 1 ? 16 : GEMM_ROWS;
		uint32_t want = c->n_threads * 4;
		uint32_t per = (w->rows + want - 1) / want;
		per = (per + unit - 1) / unit * unit;
		j.rows_per_task = per;
		n_tasks = (w->rows + per - 1) / per;
	}
	pool_run(&c->pool, mm_task, &j, n_tasks);
}

struct attn_job {
	struct fm_cpu *c;
	const struct fm_kvcache *kv;
	uint32_t layer, pos0;
	const int32_t *rows;   /* a sparse cache's keys (one query), or NULL */
	uint32_t n_keys;       /* with rows */
};

/* Task t: token t / n_head_kv, KV head t % n_head_kv. */
static void
attn_task(void *arg, uint32_t t, uint32_t thread)
{
	struct attn_job *j = arg;
	const struct fm_hparams *hp = &j->c->m->hp;
	uint32_t i = t / hp->n_head_kv, kvh = t % hp->n_head_kv;
	uint32_t g = hp->n_head / hp->n_head_kv;
	size_t qd = (size_t)hp->n_head * hp->head_dim, off = (size_t)kvh * g * hp->head_dim;

	attn_group(j->c->xb + i * qd + off, j->c->q + i * qd + off, g, j->kv, j->layer, kvh,
	    j->rows, j->rows != NULL ? j->n_keys : j->pos0 + i + 1,
	    j->c->ascratch + (size_t)thread * j->c->ascratch_n);
}

static void
attention(struct fm_cpu *c, const struct fm_kvcache *kv, uint32_t layer, uint32_t pos0,
    uint32_t n, const int32_t *rows, uint32_t n_keys)
{
	const struct fm_hparams *hp = &c->m->hp;
	struct attn_job j = { c, kv, layer, pos0, rows, n_keys };
	uint64_t work = (uint64_t)n * (rows != NULL ? n_keys : pos0 + n) * hp->n_head * hp->head_dim;
	uint32_t n_tasks = n * hp->n_head_kv;

	if (work < SERIAL_WORK || c->n_threads == 1) {
		for (uint32_t t = 0; t < n_tasks; t++)
			attn_task(&j, t, 0);
		return;
	}
	pool_run(&c->pool, attn_task, &j, n_tasks);
}

/*
 * The pass shared by both entry points: token i is at position pos0 + i,
 * its K and V go to row wrow0 + i of kv, and it attends to rows 0 .. its own
 * (dense), or to the keys rows[0 .. n_keys) (sparse, one token).
 */
static int
eval(struct fm_cpu *c, struct fm_kvcache *kv, const int32_t *ids, uint32_t n, uint32_t pos0,
    uint32_t wrow0, const int32_t *rows, uint32_t n_keys, float *logits, bool all_logits,
    struct fm_err *err)
{
	const struct fm_model *m = c->m;
	const struct fm_hparams *hp = &m->hp;
	uint32_t dim = hp->dim, qd = hp->n_head * hp->head_dim;
	uint32_t kvd = hp->n_head_kv * hp->head_dim, ffn = hp->ffn_dim;
	uint32_t n_out;
	const float *xo;

	for (uint32_t i = 0; i < n; i++) {
		if (ids[i] < 0 || (uint32_t)ids[i] >= hp->n_vocab)
			return fm_err_set(err, FM_EDATA, "token id %d is outside the vocabulary of %u",
			    ids[i], hp->n_vocab);
		fm_weight_row(&m->tok_embd, (uint32_t)ids[i], c->x + (size_t)i * dim);
	}

	for (uint32_t l = 0; l < hp->n_layer; l++) {
		const struct fm_layer *L = &m->layers[l];

		for (uint32_t i = 0; i < n; i++)
			fm_rmsnorm(c->xb + (size_t)i * dim, c->x + (size_t)i * dim, L->attn_norm,
			    dim, hp->rms_eps);
		matmul(c, c->q, &L->wq, c->xb, n, false);
		matmul(c, c->k, &L->wk, c->xb, n, false);
		matmul(c, c->v, &L->wv, c->xb, n, false);
		for (uint32_t i = 0; i < n; i++) {
			fm_rope(c->q + (size_t)i * qd, hp->n_head, hp->head_dim, hp->n_rot,
			    m->rope_freq, pos0 + i);
			fm_rope(c->k + (size_t)i * kvd, hp->n_head_kv, hp->head_dim, hp->n_rot,
			    m->rope_freq, pos0 + i);
			fm_kv_put(kv, l, wrow0 + i, c->k + (size_t)i * kvd, c->v + (size_t)i * kvd);
		}
		if (c->probe != NULL)
			c->probe(c->probe_arg, l, c->q, n);
		attention(c, kv, l, pos0, n, rows, n_keys);
		matmul(c, c->x, &L->wo, c->xb, n, true);

		for (uint32_t i = 0; i < n; i++)
			fm_rmsnorm(c->xb + (size_t)i * dim, c->x + (size_t)i * dim, L->ffn_norm,
			    dim, hp->rms_eps);
		matmul(c, c->gate, &L->w_gate, c->xb, n, false);
		matmul(c, c->up, &L->w_up, c->xb, n, false);
		for (uint32_t i = 0; i < n; i++)
			fm_swiglu(c->gate + (size_t)i * ffn, c->gate + (size_t)i * ffn,
			    c->up + (size_t)i * ffn, ffn);
		matmul(c, c->x, &L->w_down, c->gate, n, true);
	}

	n_out = all_logits ? n : 1;
	xo = c->x + (size_t)(n - n_out) * dim;
	for (uint32_t i = 0; i < n_out; i++)
		fm_rmsnorm(c->xb + (size_t)i * dim, xo + (size_t)i * dim, m->output_norm, dim,
		    hp->rms_eps);
	matmul(c, logits, &m->output, c->xb, n_out, false);
	return FM_OK;
}

int
fm_cpu_eval(struct fm_cpu *c, struct fm_kvcache *kv, const int32_t *ids, uint32_t n,
    uint32_t pos0, float *logits, bool all_logits, struct fm_err *err)
{
	if (n == 0 || n > c->max_batch)
		return fm_err_set(err, FM_EUSAGE, "batch of %u tokens, at most %u", n, c->max_batch);
	if ((uint64_t)pos0 + n > kv->n_pos)
		return fm_err_set(err, FM_EUSAGE, "position %u is beyond the context of %u",
		    pos0 + n - 1, kv->n_pos);
	return eval(c, kv, ids, n, pos0, pos0, NULL, 0, logits, all_logits, err);
}

int
fm_cpu_eval_rows(struct fm_cpu *c, struct fm_kvcache *kv, int32_t id, uint32_t pos,
    uint32_t wrow, const int32_t *rows, uint32_t n_keys, float *logits, struct fm_err *err)
{
	if (wrow >= kv->n_pos || n_keys == 0)
		return fm_err_set(err, FM_EUSAGE, "row %u of a cache of %u, %u keys", wrow, kv->n_pos,
		    n_keys);
	for (uint32_t j = 0; j < n_keys; j++)
		if (rows[j] < 0 || (uint32_t)rows[j] >= kv->n_pos)
			return fm_err_set(err, FM_EUSAGE, "key row %d is outside the cache of %u",
			    rows[j], kv->n_pos);
	return eval(c, kv, &id, 1, pos, wrow, rows, n_keys, logits, false, err);
}

void
fm_cpu_set_probe(struct fm_cpu *c, fm_probe_fn fn, void *arg)
{
	c->probe = fn;
	c->probe_arg = arg;
}
