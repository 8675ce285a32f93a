/*
 * kvcache.c - the per-layer, per-position key/value store.  The F16 rounding
 * happens once, on the way in; reads widen back to F32 for the attention
 * arithmetic, with F16C instructions where the CPU has them.
 */
#include "kvcache.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define HAVE_X86 1
#endif

int
fm_kv_init(struct fm_kvcache *kv, enum fm_kv_type type, uint32_t n_layer, uint32_t n_pos,
    uint32_t n_head_kv, uint32_t head_dim, struct fm_err *err)
{
	uint64_t bytes;

	memset(kv, 0, sizeof *kv);
	kv->type = type;
	kv->n_layer = n_layer;
	kv->n_pos = n_pos;
	kv->n_head_kv = n_head_kv;
	kv->head_dim = head_dim;
	kv->elt_bytes = type == FM_KV_F16 ? 2 : 4;
	kv->pos_bytes = (size_t)n_head_kv * head_dim * kv->elt_bytes;
	bytes = (uint64_t)n_layer * n_pos * kv->pos_bytes;
	if (n_layer == 0 || n_pos == 0 || kv->pos_bytes == 0)
		return fm_err_set(err, FM_EUSAGE, "empty kv cache");
	if (bytes / n_layer / n_pos != kv->pos_bytes || bytes > SIZE_MAX / 2)
		return fm_err_set(err, FM_EIO, "kv cache of %u positions is too large", n_pos);
	kv->k = malloc(bytes);
	kv->v = malloc(bytes);
	if (kv->k == NULL || kv->v == NULL) {
		int e = errno;
		fm_kv_free(kv);
		return fm_err_errno(err, FM_EIO, e, "cannot allocate %llu bytes for the kv cache",
		    (unsigned long long)(2 * bytes));
	}
	return FM_OK;
}

void
fm_kv_free(struct fm_kvcache *kv)
{
	free(kv->k);
	free(kv->v);
	kv->k = kv->v = NULL;
}

uint64_t
fm_kv_bytes(const struct fm_kvcache *kv)
{
	return 2 * (uint64_t)kv->n_layer * kv->n_pos * kv->pos_bytes;
}

void *
fm_kv_k(const struct fm_kvcache *kv, uint32_t layer, uint32_t pos)
{
	return kv->k + ((size_t)layer * kv->n_pos + pos) * kv->pos_bytes;
}

void *
fm_kv_v(const struct fm_kvcache *kv, uint32_t layer, uint32_t pos)
{
	return kv->v + ((size_t)layer * kv->n_pos + pos) * kv->pos_bytes;
}

static void
put_one(const struct fm_kvcache *kv, void *dst, const float *src)
{
	size_t n = (size_t)kv->n_head_kv * kv->head_dim;
	uint16_t *h = dst;

	if (kv->type == FM_KV_F32) {
		memcpy(dst, src, n * sizeof(float));
		return;
	}
	for (size_t i = 0; i < n; i++)
		h[i] = fm_f32_to_f16(src[i]);
}

void
fm_kv_put(struct fm_kvcache *kv, uint32_t layer, uint32_t pos, const float *k, const float *v)
{
	put_one(kv, fm_kv_k(kv, layer, pos), k);
	put_one(kv, fm_kv_v(kv, layer, pos), v);
}

#ifdef HAVE_X86
__attribute__((target("avx,f16c")))
static void
widen_f16c(const uint16_t *src, float *dst, uint32_t n)
{
	uint32_t i = 0;

	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(dst + i,
		    _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
	for (; i < n; i++)
		dst[i] = fm_f16_to_f32(src[i]);
}
#endif

static void
widen(const uint16_t *src, float *dst, uint32_t n)
{
#ifdef HAVE_X86
	if (__builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx")) {
		widen_f16c(src, dst, n);
		return;
	}
#endif
	for (uint32_t i = 0; i < n; i++)
		dst[i] = fm_f16_to_f32(src[i]);
}

void
fm_kv_read(const struct fm_kvcache *kv, char which, uint32_t layer, uint32_t h,
    uint32_t pos, uint32_t n, float *out)
{
	fm_kv_read_rows(kv, which, layer, h, NULL, pos, n, out);
}

void
fm_kv_read_rows(const struct fm_kvcache *kv, char which, uint32_t layer, uint32_t h,
    const int32_t *rows, uint32_t pos, uint32_t n, float *out)
{
	const uint8_t *base = which == 'k' ? fm_kv_k(kv, layer, 0) : fm_kv_v(kv, layer, 0);
	size_t off = (size_t)h * kv->head_dim * kv->elt_bytes;
	uint32_t hd = kv->head_dim;

	for (uint32_t j = 0; j < n; j++) {
		size_t row = rows != NULL ? (size_t)rows[pos + j] : (size_t)pos + j;
		const uint8_t *src = base + row * kv->pos_bytes + off;
		if (kv->type == FM_KV_F32)
			memcpy(out + (size_t)j * hd, src, hd * sizeof(float));
		else
			widen((const uint16_t *)src, out + (size_t)j * hd, hd);
	}
}

void
fm_kv_copy(struct fm_kvcache *dst, uint32_t dst_row, const struct fm_kvcache *src,
    uint32_t src_row, uint32_t n)
{
	for (uint32_t l = 0; l < dst->n_layer; l++) {
		memcpy(fm_kv_k(dst, l, dst_row), fm_kv_k(src, l, src_row), n * dst->pos_bytes);
		memcpy(fm_kv_v(dst, l, dst_row), fm_kv_v(src, l, src_row), n * dst->pos_bytes);
	}
}

const char *
fm_kv_type_name(enum fm_kv_type t)
{
	return t == FM_KV_F16 ? "f16" : "f32";
}

int
fm_kv_type_parse(const char *s, enum fm_kv_type *t)
{
	if (strcmp(s, "f16") == 0)
		*t = FM_KV_F16;
	else if (strcmp(s, "f32") == 0)
		*t = FM_KV_F32;
	else
		return -1;
	return 0;
}
