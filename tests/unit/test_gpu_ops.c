/*
 * test_gpu_ops.c - every CUDA kernel against its CPU twin, over shapes the
 * kernels' fast paths do not divide evenly (head sizes that are not powers
 * of two, rows that are not multiples of the vector width, query counts that
 * are not multiples of the tile), then the whole GPU forward pass against
 * the CPU one on stories260K, and the device errors.  Meant to run under
 * compute-sanitizer.  Without CUDA in the build, or without a GPU, it skips.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"

#ifndef FM_CUDA
int
main(void)
{
	printf("1..0 # SKIP built without CUDA\n");
	return 0;
}
#else

#include "forward.h"
#include "gguf.h"
#include "gpu.h"
#include "gpu_util.h"
#include "kvcache.h"
#include "model.h"
#include "sample.h"

static void
fill(float *x, size_t n, float scale)
{
	for (size_t i = 0; i < n; i++)
		x[i] = frand() * scale;
}

static void
down(void *dst, const void *src, size_t n)
{
	if (fm_gpu_get(dst, src, n, &err) != FM_OK) {
		printf("# %s\n", err.msg);
		exit(1);
	}
}

static double
worst_diff(const float *a, const float *b, size_t n, double *scale)
{
	double w = 0, s = 0;

	for (size_t i = 0; i < n; i++) {
		double d = fabs((double)a[i] - b[i]);
		if (!(d <= w))
			w = d;
		if (fabs(b[i]) > s)
			s = fabs(b[i]);
	}
	if (scale != NULL)
		*scale = s;
	return w;
}

static void
test_rmsnorm(uint32_t rows, uint32_t n)
{
	float *x = malloc(rows * n * 4), *w = malloc(n * 4), *ref = malloc(rows * n * 4), *got = malloc(rows * n * 4);
	float *dx, *dw, *dout;

	fill(x, rows * n, 3);
	fill(w, n, 1);
	for (uint32_t r = 0; r < rows; r++)
		fm_rmsnorm(ref + r * n, x + r * n, w, n, 1e-5f);
	dx = up(x, rows * n * 4);
	dw = up(w, n * 4);
	dout = fm_gpu_malloc(rows * n * 4, &err);
	ok(fm_gpu_rmsnorm(dout, dx, dw, rows, n, 1e-5f, &err) == FM_OK, "rmsnorm launch");
	down(got, dout, rows * n * 4);
	ok(worst_diff(got, ref, rows * n, NULL) < 1e-5, "rmsnorm %u x %u equals fm_rmsnorm (worst %.3g)",
	    rows, n, worst_diff(got, ref, rows * n, NULL));
	fm_gpu_free(dx);
	fm_gpu_free(dw);
	fm_gpu_free(dout);
	free(x);
	free(w);
	free(ref);
	free(got);
}

static void
test_swiglu(size_t n)
{
	float *g = malloc(n * 4), *u = malloc(n * 4), *ref = malloc(n * 4), *got = malloc(n * 4);
	float *dg, *du;

	fill(g, n, 6);
	fill(u, n, 2);
	fm_swiglu(ref, g, u, (uint32_t)n);
	dg = up(g, n * 4);
	du = up(u, n * 4);
	ok(fm_gpu_swiglu(dg, dg, du, n, &err) == FM_OK, "swiglu launch");
	down(got, dg, n * 4);
	ok(worst_diff(got, ref, n, NULL) < 1e-5, "swiglu of %zu (worst %.3g)", n, worst_diff(got, ref, n, NULL));
	fm_gpu_free(dg);
	fm_gpu_free(du);
	free(g);
	free(u);
	free(ref);
	free(got);
}

/* A one-layer CPU cache with random keys and values at positions [0, n_pos), and its GPU copy. */
static void
make_cache(struct fm_kvcache *kv, enum fm_kv_type t, uint32_t n_pos, uint32_t kvh, uint32_t hd,
    void **dk, void **dv)
{
	float *k = malloc((size_t)kvh * hd * 4), *v = malloc((size_t)kvh * hd * 4);

	fm_kv_init(kv, t, 1, n_pos, kvh, hd, &err);
	for (uint32_t p = 0; p < n_pos; p++) {
		fill(k, (size_t)kvh * hd, 2);
		fill(v, (size_t)kvh * hd, 1);
		fm_kv_put(kv, 0, p, k, v);
	}
	*dk = up(kv->k, (size_t)n_pos * kv->pos_bytes);
	*dv = up(kv->v, (size_t)n_pos * kv->pos_bytes);
	free(k);
	free(v);
}

/*
 * RoPE on q and k and the KV store in one kernel, from the packed rows of
 * the QKV product, against fm_rope and fm_kv_put: rotations within rounding,
 * V stored bit for bit (values beyond F16's range and below its normal range
 * included), other positions untouched.
 */
static void
test_rope_kv(uint32_t rows, uint32_t n_head, uint32_t kvh, uint32_t hd, uint32_t n_rot,
    int32_t pos0, bool f16)
{
	size_t qd = (size_t)n_head * hd, kd = (size_t)kvh * hd, width = qd + 2 * kd, bytes;
	float *qkv = malloc(rows * width * 4), *q = malloc(rows * qd * 4), *gq = malloc(rows * qd * 4);
	float freq[2048], *a, *b, *dqkv, *dq, *df;
	struct fm_kvcache kv, got;
	void *dkc, *dvc;
	int32_t *dp;
	double wq, wkc = 0;
	uint32_t n_pos = pos0 + rows + 2;

	for (uint32_t i = 0; i < n_rot / 2; i++)
		freq[i] = (float)pow(10000.0, -2.0 * i / n_rot);
	for (uint32_t r = 0; r < rows; r++) {
		float *row = qkv + r * width;
		fill(row, qd + kd, 2);
		fill(row + qd + kd, kd, 1);
		for (size_t i = 0; i < kd; i += 3)
			row[qd + kd + i] *= i % 2 ? 70000 : 0.001f;
	}
	make_cache(&kv, f16 ? FM_KV_F16 : FM_KV_F32, n_pos, kvh, hd, &dkc, &dvc);
	dqkv = up(qkv, rows * width * 4);
	dq = fm_gpu_malloc(rows * qd * 4, &err);
	df = up(freq, n_rot / 2 * 4 + 4);
	dp = up(&pos0, 4);
	for (uint32_t r = 0; r < rows; r++) {
		float *row = qkv + r * width;
		memcpy(q + r * qd, row, qd * 4);
		fm_rope(q + r * qd, n_head, hd, n_rot, freq, pos0 + r);
		fm_rope(row + qd, kvh, hd, n_rot, freq, pos0 + r);
		fm_kv_put(&kv, 0, pos0 + r, row + qd, row + qd + kd);
	}
	ok(fm_gpu_rope_kv(dq, dqkv, dkc, dvc, f16, rows, n_head, kvh, hd, n_rot, df, dp, &err) == FM_OK,
	    "rope_kv launch");
	down(gq, dq, rows * qd * 4);
	fm_kv_init(&got, kv.type, 1, n_pos, kvh, hd, &err);
	bytes = (size_t)n_pos * kv.pos_bytes;
	down(got.k, dkc, bytes);
	down(got.v, dvc, bytes);
	wq = worst_diff(gq, q, rows * qd, NULL);
	a = malloc((size_t)n_pos * hd * 4);
	b = malloc((size_t)n_pos * hd * 4);
	for (uint32_t h = 0; h < kvh; h++) {
		fm_kv_read(&got, 'k', 0, h, 0, n_pos, a);
		fm_kv_read(&kv, 'k', 0, h, 0, n_pos, b);
		wkc = fmax(wkc, worst_diff(a, b, (size_t)n_pos * hd, NULL));
	}
	ok(wq < 1e-5, "rope %u rows, %u/%u heads of %u, %u rotated, from position %d: q within 1e-5 "
	    "of fm_rope (worst %.3g)", rows, n_head, kvh, hd, n_rot, pos0, wq);
	ok(wkc < (f16 ? 2e-3 : 1e-5), "%s cache: keys within rounding of fm_rope and fm_kv_put (worst %.3g)",
	    f16 ? "f16" : "f32", wkc);
	ok(memcmp(got.v, kv.v, bytes) == 0, "%s cache: values the same bytes as fm_kv_put, other positions untouched",
	    f16 ? "f16" : "f32");
	fm_gpu_free(dqkv);
	fm_gpu_free(dq);
	fm_gpu_free(df);
	fm_gpu_free(dp);
	fm_gpu_free(dkc);
	fm_gpu_free(dvc);
	fm_kv_free(&kv);
	fm_kv_free(&got);
	free(qkv);
	free(q);
	free(gq);
	free(a);
	free(b);
}

/* rows = 0 .. n - 1 in an order shuffled by a fixed LCG (Fisher-Yates). */
static void
shuffle_rows(int32_t *rows, uint32_t n)
{
	uint64_t x = 12345;

	for (uint32_t i = 0; i < n; i++)
		rows[i] = (int32_t)i;
	for (uint32_t i = n - 1; i > 0; i--) {
		uint32_t j;
		int32_t t;
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		j = (uint32_t)((x >> 33) % (i + 1));
		t = rows[i];
		rows[i] = rows[j];
		rows[j] = t;
	}
}

/*
 * One query's attention on the GPU against the CPU: over n_keys of a
 * cache's n_pos rows shuffled, as a slot table gives them (sparse), or over
 * its first n_keys positions; in the short-context form or, sparse, the
 * split-K one.
 */
static void
check_attention_one(uint32_t n_head, uint32_t kvh, uint32_t hd, uint32_t n_pos, uint32_t n_keys,
    bool sparse, bool short_form, bool f16)
{
	struct fm_kvcache kv;
	size_t qd = (size_t)n_head * hd;
	float *q = malloc(qd * 4), *ref = malloc(qd * 4), *got = malloc(qd * 4), *scratch, *dq, *dout;
	int32_t *rows = malloc(n_pos * 4), *drows = NULL, *dn, *dp;
	int32_t nk = (int32_t)n_keys, pos = (int32_t)n_keys - 1;
	void *dk, *dv;
	double w;
	int rc;

	make_cache(&kv, f16 ? FM_KV_F16 : FM_KV_F32, n_pos, kvh, hd, &dk, &dv);
	shuffle_rows(rows, n_pos);
	scratch = malloc(fm_attention_scratch(&kv, n_head) * 4);
	fill(q, qd, 5);
	if (sparse)
		fm_attention_rows(ref, q, n_head, &kv, 0, rows, n_keys, scratch);
	else
		fm_attention(ref, q, n_head, &kv, 0, n_keys, scratch);
	dq = up(q, qd * 4);
	if (sparse)
		drows = up(rows, (size_t)n_keys * 4);
	dn = up(&nk, 4);
	dp = up(&pos, 4);
	dout = fm_gpu_malloc(qd * 4, &err);
	if (short_form)
		rc = fm_gpu_attention_short(dout, dq, dk, dv, f16, n_head, kvh, hd, dp, drows, dn, &err);
	else
		rc = fm_gpu_attention_rows(dout, dq, dk, dv, f16, n_head, kvh, hd, drows, dn, &err);
	ok(rc == FM_OK, "%s attention launch%s%s", short_form ? "short" : "sparse",
	    err.status ? ": " : "", err.status ? err.msg : "");
	down(got, dout, qd * 4);
	w = worst_diff(got, ref, qd, NULL);
	if (short_form)
		ok(w < 1e-4, "short attention%s%s, %u heads / %u kv, head %u, %u keys (at most %u): "
		    "worst %.3g (< 1e-4)", f16 ? " f16" : " f32", sparse ? " sparse" : "", n_head, kvh,
		    hd, n_keys, fm_gpu_attention_short_max(hd, f16), w);
	else
		ok(w < 1e-4, "sparse attention%s, %u heads / %u kv, head %u, %u of %u rows shuffled: "
		    "worst %.3g (< 1e-4) against fm_attention_rows", f16 ? " f16" : " f32", n_head, kvh,
		    hd, n_keys, n_pos, w);
	fm_gpu_free(dk);
	fm_gpu_free(dv);
	fm_gpu_free(dq);
	fm_gpu_free(drows);
	fm_gpu_free(dn);
	fm_gpu_free(dp);
	fm_gpu_free(dout);
	fm_kv_free(&kv);
	free(scratch);
	free(q);
	free(ref);
	free(got);
	free(rows);
}

/* Sparse attention: a shuffled subset of a cache's rows, as a slot table gives them. */
static void
test_attention_rows(uint32_t n_head, uint32_t kvh, uint32_t hd, uint32_t n_pos, uint32_t n_keys,
    bool f16)
{
	check_attention_one(n_head, kvh, hd, n_pos, n_keys, true, false, f16);
}

/* The short-context decode form, over a cache's first n_keys positions or n_keys rows of it. */
static void
test_attention_short(uint32_t n_head, uint32_t kvh, uint32_t hd, uint32_t n_keys, bool sparse,
    bool f16)
{
	check_attention_one(n_head, kvh, hd, sparse ? n_keys + 37 : n_keys, n_keys, sparse, true, f16);
}

static void
test_attention(uint32_t n_head, uint32_t kvh, uint32_t hd, uint32_t n_q, int32_t pos0, bool f16)
{
	struct fm_kvcache kv;
	size_t qd = (size_t)n_head * hd;
	float *q = malloc(n_q * qd * 4), *ref = malloc(n_q * qd * 4), *got = malloc(n_q * qd * 4);
	float *scratch, *dq, *dout;
	void *dk, *dv;
	int32_t *dp;
	double w, tol;
	/* The tensor-core path rounds Q, K, P and V to F16. */
	bool flash = n_q >= 16 && (hd == 64 || hd == 128);

	make_cache(&kv, f16 ? FM_KV_F16 : FM_KV_F32, pos0 + n_q, kvh, hd, &dk, &dv);
	scratch = malloc(fm_attention_scratch(&kv, n_head) * 4);
	fill(q, n_q * qd, 2);
	for (uint32_t i = 0; i < n_q; i++)
		fm_attention(ref + i * qd, q + i * qd, n_head, &kv, 0, pos0 + i + 1, scratch);
	dq = up(q, n_q * qd * 4);
	dp = up(&pos0, 4);
	dout = fm_gpu_malloc(n_q * qd * 4, &err);
	ok(fm_gpu_attention(dout, dq, dk, dv, f16, n_q, n_head, kvh, hd, dp, &err) == FM_OK,
	    "attention launch%s%s", err.status ? ": " : "", err.status ? err.msg : "");
	down(got, dout, n_q * qd * 4);
	w = worst_diff(got, ref, n_q * qd, NULL);
	tol = flash ? 2e-2 : 1e-4;
	ok(w < tol, "attention %s%s, %u heads / %u kv, head %u, %u queries from position %d: worst %.3g (< %g)",
	    flash ? "tensor cores" : "warp per key", f16 ? " f16" : " f32", n_head, kvh, hd, n_q, pos0, w, tol);
	fm_gpu_free(dk);
	fm_gpu_free(dv);
	fm_gpu_free(dq);
	fm_gpu_free(dp);
	fm_gpu_free(dout);
	fm_kv_free(&kv);
	free(scratch);
	free(q);
	free(ref);
	free(got);
}

static void
test_argmax(uint32_t n)
{
	float *x = malloc(n * 4), *dx;
	int32_t got[2], *dout = fm_gpu_malloc(8, &err);

	fill(x, n, 10);
	x[n / 3] = 12;
	x[n - 1] = 12;   /* a tie: the lower id wins */
	dx = up(x, n * 4);
	fm_gpu_argmax(dx, n, dout, &err);
	down(got, dout, 8);
	ok(got[0] == fm_argmax(x, n) && got[0] == (int32_t)(n / 3) && got[1] == 0,
	    "argmax of %u with a tie: %d (fm_argmax %d)", n, got[0], fm_argmax(x, n));
	if (n > 9) {
		x[7] = NAN;
		x[9] = INFINITY;
		fm_gpu_put(dx, x, n * 4, &err);
		fm_gpu_argmax(dx, n, dout, &err);
		down(got, dout, 8);
		ok(got[1] == 2 && got[0] == (int32_t)(n / 3), "argmax counts 2 values that are not finite");
	}
	fm_gpu_free(dx);
	fm_gpu_free(dout);
	free(x);
}

/* A random weight matrix of a type, as the GGUF would hold it. */
static struct fm_weight
make_weight(enum fm_ggml_type t, uint32_t rows, uint32_t cols, void **host)
{
	struct fm_weight w = { t, rows, cols, 0, NULL, "test" };
	uint8_t *p;

	w.row_bytes = t == FM_GGML_F32 ? 4 * (size_t)cols : t == FM_GGML_Q8_0 ?
	    cols / 32 * sizeof(struct fm_q8_0) : 2 * (size_t)cols;
	p = malloc(w.row_bytes * rows);
	for (uint32_t r = 0; r < rows; r++)
		for (uint32_t i = 0; i < cols; i++) {
			uint8_t *row = p + r * w.row_bytes;
			float f = frand() * 0.05f;
			uint16_t h;
			if (t == FM_GGML_F32)
				memcpy(row + 4 * i, &f, 4);
			else if (t == FM_GGML_F16 || t == FM_GGML_BF16) {
				h = t == FM_GGML_F16 ? fm_f32_to_f16(f) : fm_f32_to_bf16(f);
				memcpy(row + 2 * i, &h, 2);
			} else {
				struct fm_q8_0 *b = (struct fm_q8_0 *)row + i / 32;
				if (i % 32 == 0)
					b->d = fm_f32_to_f16(0.05f / 127);
				b->qs[i % 32] = (int8_t)(frand() * 127);
			}
		}
	*host = p;
	w.data = p;
	return w;
}

static void
test_matvec(enum fm_ggml_type t, uint32_t rows, uint32_t cols)
{
	void *host;
	struct fm_weight w = make_weight(t, rows, cols, &host), dw = w;
	float *x = malloc(cols * 4), *ref = malloc(rows * 4), *got = malloc(rows * 4), *dx, *dy;
	double scale, e;

	fill(x, cols, 1);
	fm_matvec(ref, &w, x, false);
	fm_matvec(ref, &w, x, true);   /* twice: the accumulating form */
	dw.data = up(host, w.row_bytes * rows);
	dx = up(x, cols * 4);
	dy = fm_gpu_malloc(rows * 4, &err);
	fm_gpu_matvec(dy, &dw, dx, false, &err);
	ok(fm_gpu_matvec(dy, &dw, dx, true, &err) == FM_OK, "matvec launch");
	down(got, dy, rows * 4);
	e = worst_diff(got, ref, rows, &scale);
	ok(e <= 1e-5 * (scale + 1), "matvec %s %u x %u (+=) equals fm_matvec: worst %.3g of %.3g",
	    fm_ggml_type_name(t), rows, cols, e, scale);
	fm_gpu_free((void *)dw.data);
	fm_gpu_free(dx);
	fm_gpu_free(dy);
	free(host);
	free(x);
	free(ref);
	free(got);
}

/* The FFN's input in one kernel: norm, gate and up rows, SwiGLU. */
static void
test_ffn_in(enum fm_ggml_type t, uint32_t rows, uint32_t cols)
{
	void *hg, *hu;
	struct fm_weight wg = make_weight(t, rows, cols, &hg), wu = make_weight(t, rows, cols, &hu);
	struct fm_weight dwg = wg, dwu = wu;
	float *x = malloc(cols * 4), *nw = malloc(cols * 4), *xn = malloc(cols * 4);
	float *g = malloc(rows * 4), *u = malloc(rows * 4), *got = malloc(rows * 4);
	float *dx, *dnw, *dy;
	double scale, e;

	fill(x, cols, 3);
	fill(nw, cols, 1);
	fm_rmsnorm(xn, x, nw, cols, 1e-5f);
	fm_matvec(g, &wg, xn, false);
	fm_matvec(u, &wu, xn, false);
	fm_swiglu(g, g, u, rows);
	dwg.data = up(hg, wg.row_bytes * rows);
	dwu.data = up(hu, wu.row_bytes * rows);
	dx = up(x, cols * 4);
	dnw = up(nw, cols * 4);
	dy = fm_gpu_malloc(rows * 4, &err);
	ok(fm_gpu_ffn_in(dy, &dwg, &dwu, dx, dnw, 1e-5f, &err) == FM_OK, "ffn_in launch");
	down(got, dy, rows * 4);
	e = worst_diff(got, g, rows, &scale);
	ok(e <= 1e-5 * (scale + 1), "norm, gate and up %s %u x %u, swiglu: worst %.3g of %.3g",
	    fm_ggml_type_name(t), rows, cols, e, scale);
	fm_gpu_free((void *)dwg.data);
	fm_gpu_free((void *)dwu.data);
	fm_gpu_free(dx);
	fm_gpu_free(dnw);
	fm_gpu_free(dy);
	free(hg);
	free(hu);
	free(x);
	free(nw);
	free(xn);
	free(g);
	free(u);
	free(got);
}

/*
 * The attention's input in one kernel: norm, q, k and v rows, RoPE on q and
 * k, k and v into the cache at pos, other positions untouched.
 */
static void
test_qkv(enum fm_ggml_type t, uint32_t n_head, uint32_t kvh, uint32_t hd, uint32_t n_rot,
    uint32_t cols, int32_t pos, bool f16)
{
	uint32_t qd = n_head * hd, kd = kvh * hd, n_pos = pos + 3;
	void *hq, *hk, *hv, *dkc, *dvc;
	struct fm_weight wq = make_weight(t, qd, cols, &hq), wk = make_weight(t, kd, cols, &hk);
	struct fm_weight wv = make_weight(t, kd, cols, &hv), dwq = wq, dwk = wk, dwv = wv;
	float *x = malloc(cols * 4), *nw = malloc(cols * 4), *xn = malloc(cols * 4), freq[256];
	float *q = malloc(qd * 4), *k = malloc(kd * 4), *v = malloc(kd * 4), *got = malloc(qd * 4);
	float *a = malloc((size_t)n_pos * hd * 4), *b = malloc((size_t)n_pos * hd * 4);
	float *dx, *dnw, *df, *dq, *dk, *dv;
	struct fm_kvcache kv, gotkv;
	int32_t *dp;
	double scale, eq, ek, ev, wkc = 0, wvc = 0;
	size_t bytes;

	for (uint32_t i = 0; i < n_rot / 2; i++)
		freq[i] = (float)pow(10000.0, -2.0 * i / n_rot);
	fill(x, cols, 3);
	fill(nw, cols, 1);
	fm_rmsnorm(xn, x, nw, cols, 1e-5f);
	fm_matvec(q, &wq, xn, false);
	fm_matvec(k, &wk, xn, false);
	fm_matvec(v, &wv, xn, false);
	fm_rope(q, n_head, hd, n_rot, freq, pos);
	fm_rope(k, kvh, hd, n_rot, freq, pos);
	make_cache(&kv, f16 ? FM_KV_F16 : FM_KV_F32, n_pos, kvh, hd, &dkc, &dvc);
	fm_kv_put(&kv, 0, pos, k, v);
	dwq.data = up(hq, wq.row_bytes * qd);
	dwk.data = up(hk, wk.row_bytes * kd);
	dwv.data = up(hv, wv.row_bytes * kd);
	dx = up(x, cols * 4);
	dnw = up(nw, cols * 4);
	df = up(freq, n_rot / 2 * 4 + 4);
	dp = up(&pos, 4);
	dq = fm_gpu_malloc(qd * 4, &err);
	dk = fm_gpu_malloc(kd * 4, &err);
	dv = fm_gpu_malloc(kd * 4, &err);
	ok(fm_gpu_qkv(dq, dk, dv, &dwq, &dwk, &dwv, dx, dnw, 1e-5f, dkc, dvc, f16, hd, n_rot, df, dp,
	    &err) == FM_OK, "qkv launch%s%s", err.status ? ": " : "", err.status ? err.msg : "");
	down(got, dq, qd * 4);
	eq = worst_diff(got, q, qd, &scale);
	down(got, dk, kd * 4);
	ek = worst_diff(got, k, kd, NULL);
	down(got, dv, kd * 4);
	ev = worst_diff(got, v, kd, NULL);
	fm_kv_init(&gotkv, kv.type, 1, n_pos, kvh, hd, &err);
	bytes = (size_t)n_pos * kv.pos_bytes;
	down(gotkv.k, dkc, bytes);
	down(gotkv.v, dvc, bytes);
	for (uint32_t h = 0; h < kvh; h++) {
		fm_kv_read(&gotkv, 'k', 0, h, 0, n_pos, a);
		fm_kv_read(&kv, 'k', 0, h, 0, n_pos, b);
		wkc = fmax(wkc, worst_diff(a, b, (size_t)n_pos * hd, NULL));
		fm_kv_read(&gotkv, 'v', 0, h, 0, n_pos, a);
		fm_kv_read(&kv, 'v', 0, h, 0, n_pos, b);
		wvc = fmax(wvc, worst_diff(a, b, (size_t)n_pos * hd, NULL));
	}
	ok(fmax(eq, fmax(ek, ev)) <= 1e-5 * (scale + 1), "norm, q, k, v %s (%u/%u heads of %u, %u "
	    "rotated, %u wide), rope at %d: worst %.3g, %.3g, %.3g of %.3g", fm_ggml_type_name(t),
	    n_head, kvh, hd, n_rot, cols, pos, eq, ek, ev, scale);
	ok(wkc <= (f16 ? 2e-3 : 1e-5) * (scale + 1) && wvc <= (f16 ? 2e-3 : 1e-5) * (scale + 1),
	    "%s cache: k and v at %d within rounding, other positions untouched (worst %.3g, %.3g)",
	    f16 ? "f16" : "f32", pos, wkc, wvc);
	fm_gpu_free((void *)dwq.data);
	fm_gpu_free((void *)dwk.data);
	fm_gpu_free((void *)dwv.data);
	fm_gpu_free(dx);
	fm_gpu_free(dnw);
	fm_gpu_free(df);
	fm_gpu_free(dp);
	fm_gpu_free(dq);
	fm_gpu_free(dk);
	fm_gpu_free(dv);
	fm_gpu_free(dkc);
	fm_gpu_free(dvc);
	fm_kv_free(&kv);
	fm_kv_free(&gotkv);
	free(hq);
	free(hk);
	free(hv);
	free(x);
	free(nw);
	free(xn);
	free(q);
	free(k);
	free(v);
	free(got);
	free(a);
	free(b);
}

static const char *
model_path(const char *name)
{
	static char buf[4096];
	const char *top = getenv("FM_TOP");

	snprintf(buf, sizeof buf, "%s/models/%s", top != NULL ? top : ".", name);
	return buf;
}

/* The GPU forward against the CPU one: greedy tokens, logits, prefill, the argmax path. */
static void
test_forward(void)
{
	struct fm_model *m = fm_model_load(model_path("stories260K.gguf"), &err);
	uint32_t V, steps = 120, same = 0;
	struct fm_kvcache kv;
	struct fm_cpu *cpu;
	struct fm_gpu_fwd *g, *g2;
	float *lc, *lg, *all;
	int32_t tc = 1, tg = 1, next = -2, ids[40], want[64], first;
	uint32_t queued;
	double worst = 0;
	bool argmax_ok = true, ahead_ok = true;

	if (!ok(m != NULL, "load stories260K"))
		return;
	V = m->hp.n_vocab;
	lc = malloc(V * 4);
	lg = malloc(V * 4);
	all = malloc(40 * V * 4);
	fm_kv_init(&kv, FM_KV_F32, m->hp.n_layer, steps, m->hp.n_head_kv, m->hp.head_dim, &err);
	cpu = fm_cpu_new(m, 40, 1, &err);
	g = fm_gpu_fwd_new(m, 0, 40, steps, FM_KV_F32, true, &err);
	if (!ok(g != NULL, "GPU forward pass on %s%s", g ? fm_gpu_fwd_device(g) : "cuda:0: ",
	    g ? "" : err.msg))
		return;
	for (uint32_t p = 0; p < steps; p++) {
		fm_cpu_eval(cpu, &kv, &tc, 1, p, lc, false, &err);
		if (fm_gpu_fwd_eval(g, &tg, 1, p, lg, false, NULL, &err) != FM_OK) {
			printf("# %s\n", err.msg);
			break;
		}
		worst = fmax(worst, worst_diff(lg, lc, V, NULL));
		same += tc == tg;
		if (p < 40)
			ids[p] = tc;
		tc = fm_argmax(lc, V);
		tg = fm_argmax(lg, V);
	}
	ok(same == steps, "greedy tokens: GPU equals CPU at %u of %u positions", same, steps);
	ok(worst < 1e-3, "F32 weights and KV: logits within 1e-3 of the CPU's (worst %.3g)", worst);

	/* Prefill of 40 with every position's logits, against the CPU's incremental ones. */
	g2 = fm_gpu_fwd_new(m, 0, 40, 64, FM_KV_F16, true, &err);
	ok(g2 != NULL && fm_gpu_fwd_eval(g2, ids, 40, 0, all, true, NULL, &err) == FM_OK,
	    "GPU prefill of 40 tokens, F16 KV cache");
	fm_kv_free(&kv);
	fm_kv_init(&kv, FM_KV_F16, m->hp.n_layer, 64, m->hp.n_head_kv, m->hp.head_dim, &err);
	worst = 0;
	for (uint32_t p = 0; p < 40; p++) {
		fm_cpu_eval(cpu, &kv, &ids[p], 1, p, lc, false, &err);
		worst = fmax(worst, worst_diff(all + (size_t)p * V, lc, V, NULL));
	}
	ok(worst < 5e-3, "its logits equal the CPU's within 5e-3 (worst %.3g)", worst);
	/* Decode on with the argmax kept on the GPU (the CUDA graph path), to the cache's end. */
	tc = first = fm_argmax(lc, V);
	for (uint32_t p = 40; p < 64; p++) {
		fm_cpu_eval(cpu, &kv, &tc, 1, p, lc, false, &err);
		want[p] = fm_argmax(lc, V);
		if (fm_gpu_fwd_eval(g2, &tc, 1, p, NULL, false, &next, &err) != FM_OK || next != want[p])
			argmax_ok = false;
		tc = want[p];
	}
	ok(argmax_ok, "24 decode steps with the argmax on the GPU pick the CPU's tokens");
	ok(fm_gpu_fwd_eval(g2, &tc, 1, 64, NULL, false, &next, &err) == FM_EUSAGE,
	    "a position past the cache is refused: %s", err.msg);

	/* The same steps run ahead of the host, FM_GPU_AHEAD queued at a time, each fed the last. */
	queued = 40;
	err.status = 0;
	for (uint32_t p = 40; p < 64 && ahead_ok; p++) {
		for (; ahead_ok && queued < 64 && queued - p < FM_GPU_AHEAD; queued++)
			ahead_ok = fm_gpu_fwd_queue(g2, queued == 40 ? first : -1, queued, &err) == FM_OK;
		ahead_ok = ahead_ok && fm_gpu_fwd_take(g2, &next, &err) == FM_OK && next == want[p];
	}
	ok(ahead_ok, "the same 24 steps run ahead, %d queued at a time, pick the same tokens%s%s",
	    FM_GPU_AHEAD, err.status ? ": " : "", err.status ? err.msg : "");
	ok(fm_gpu_fwd_take(g2, &next, &err) == FM_EUSAGE, "taking with nothing queued is refused: %s",
	    err.msg);
	ok(fm_gpu_fwd_queue(g2, -1, 64, &err) == FM_EUSAGE, "queuing past the cache is refused: %s",
	    err.msg);
	ok(fm_gpu_fwd_queue(g2, -1, 50, &err) == FM_EUSAGE,
	    "queuing after a position not queued last is refused: %s", err.msg);
	for (uint32_t p = 40; p < 40 + FM_GPU_AHEAD; p++)
		fm_gpu_fwd_queue(g2, p == 40 ? first : -1, p, &err);
	ok(fm_gpu_fwd_queue(g2, -1, 40 + FM_GPU_AHEAD, &err) == FM_EUSAGE,
	    "a step more than FM_GPU_AHEAD ahead is refused: %s", err.msg);
	ok(fm_gpu_fwd_queue(g2, first, 40, &err) == FM_OK && fm_gpu_fwd_queue(g2, -1, 41, &err) ==
	    FM_OK && fm_gpu_fwd_take(g2, &next, &err) == FM_OK && next == want[40],
	    "queuing with an id drops the steps queued and starts anew");
	ok(fm_gpu_fwd_eval(g2, &want[62], 1, 63, NULL, false, &next, &err) == FM_OK &&
	    next == want[63] &&
	    fm_gpu_fwd_take(g2, &next, &err) == FM_EUSAGE,
	    "an evaluation drops the steps queued and is right");
	fm_gpu_fwd_free(g2);
	fm_gpu_fwd_free(g);

	ok(fm_gpu_fwd_new(m, 99, 1, 16, FM_KV_F16, false, &err) == NULL && err.status == FM_EDEVICE &&
	    strstr(err.msg, "no CUDA device 99") != NULL, "device 99 is refused: %s", err.msg);
	ok(fm_gpu_fwd_new(m, 0, 1, 1u << 30, FM_KV_F32, false, &err) == NULL &&
	    err.status == FM_EDEVICE && strstr(err.msg, "out of GPU memory") != NULL,
	    "a KV cache larger than the GPU is refused: %s", err.msg);
	fm_cpu_free(cpu);
	fm_kv_free(&kv);
	fm_model_free(m);
	free(lc);
	free(lg);
	free(all);
}

int
main(void)
{
	char name[256];

	if (fm_gpu_count() == 0) {
		printf("1..0 # SKIP no CUDA device\n");
		return 0;
	}
	if (!ok(fm_gpu_open(0, name, sizeof name, &err) == FM_OK, "open cuda:0: %s", name))
		return done_testing();
	test_rmsnorm(3, 1000);
	test_rmsnorm(2, 1);
	test_rmsnorm(1, 4099);
	test_rope_kv(5, 6, 3, 72, 40, 1000, true);
	test_rope_kv(2, 8, 8, 128, 128, 123456, false);
	test_rope_kv(3, 4, 2, 13, 8, 7, true);
	test_swiglu(1001);
	test_attention_rows(4, 2, 72, 300, 137, true);
	test_attention_rows(3, 3, 13, 70, 70, false);
	test_attention_rows(8, 2, 64, 1000, 1, true);
	test_attention_rows(8, 8, 128, 513, 299, false);
	test_attention(4, 2, 72, 1, 150, true);
	test_attention(3, 3, 13, 3, 0, false);
	test_attention(8, 1, 200, 2, 70, true);
	test_attention(4, 2, 64, 100, 37, true);
	test_attention(2, 1, 128, 70, 0, false);
	test_attention(4, 4, 64, 16, 200, false);
	test_attention(6, 2, 128, 129, 5, true);
	test_attention(2, 2, 40, 33, 9, true);
	/* attn_prefill.cu: partial query and key tiles, groups of 1, 2 and 4, a later start. */
	test_attention(4, 4, 64, 16, 0, true);
	test_attention(4, 2, 64, 17, 5, true);
	test_attention(8, 2, 64, 63, 0, true);
	test_attention(4, 1, 64, 64, 200, true);
	test_attention(2, 2, 64, 65, 0, true);
	test_attention(4, 2, 64, 129, 200, true);
	test_attention(4, 1, 64, 300, 0, true);
	test_attention(4, 2, 64, 100, 2048, true);
	test_attention(4, 4, 128, 16, 5, true);
	test_attention(4, 2, 128, 17, 0, true);
	test_attention(8, 2, 128, 63, 200, true);
	test_attention(2, 2, 128, 65, 5, true);
	test_attention(4, 1, 128, 300, 0, true);
	test_attention(2, 1, 128, 100, 2048, true);
	test_attention(4, 1, 64, 1024, 1024, true);
	/* Short contexts: one key, a partial last round of threads, the most keys; sparse rows. */
	test_attention_short(32, 8, 64, 1, false, true);
	test_attention_short(32, 8, 64, 283, false, true);
	test_attention_short(32, 8, 64, fm_gpu_attention_short_max(64, true), false, true);
	test_attention_short(6, 2, 72, 100, false, true);
	test_attention_short(4, 4, 128, fm_gpu_attention_short_max(128, false), false, false);
	test_attention_short(8, 1, 128, fm_gpu_attention_short_max(128, true), true, true);
	test_attention_short(2, 2, 64, 150, true, false);
	test_argmax(32000);
	test_argmax(5);
	test_matvec(FM_GGML_F32, 37, 1000);
	test_matvec(FM_GGML_F32, 5, 1001);
	test_matvec(FM_GGML_F16, 129, 2048);
	test_matvec(FM_GGML_F16, 3, 100);
	test_matvec(FM_GGML_BF16, 64, 520);
	test_matvec(FM_GGML_BF16, 9, 33);
	test_matvec(FM_GGML_Q8_0, 77, 64);
	test_matvec(FM_GGML_Q8_0, 8, 2048);
	/* matvec.cu: many more rows than the grid's warps, widths of several batches and a partial one. */
	test_matvec(FM_GGML_F16, 5001, 256);
	test_matvec(FM_GGML_F16, 300, 8192);
	test_matvec(FM_GGML_F16, 64, 2568);
	test_matvec(FM_GGML_BF16, 1000, 4104);
	test_matvec(FM_GGML_F32, 77, 2052);
	/* Few rows of many steps: a pair's steps shared by 2, 4, 8 warps, in unequal shares. */
	test_matvec(FM_GGML_F16, 37, 8200);
	test_matvec(FM_GGML_F32, 6, 4100);
	test_matvec(FM_GGML_BF16, 2, 1544);
	test_ffn_in(FM_GGML_F16, 1001, 2048);
	test_ffn_in(FM_GGML_BF16, 64, 520);
	test_ffn_in(FM_GGML_F32, 33, 1000);
	test_ffn_in(FM_GGML_Q8_0, 300, 256);
	test_ffn_in(FM_GGML_F16, 3, 100);
	test_qkv(FM_GGML_F16, 32, 8, 64, 64, 2048, 300, true);
	test_qkv(FM_GGML_F16, 6, 2, 72, 40, 520, 0, true);
	test_qkv(FM_GGML_F32, 4, 4, 128, 128, 1000, 12345, false);
	test_qkv(FM_GGML_BF16, 8, 1, 64, 32, 264, 7, true);
	test_qkv(FM_GGML_Q8_0, 4, 2, 64, 64, 512, 70, false);
	test_qkv(FM_GGML_F16, 3, 3, 10, 10, 100, 2, false);
	test_forward();
	return done_testing();
}
#endif
