/*
 * test_gguf.c - the GGUF reader against files built here byte by byte (every
 * value type, v2 and v3, alignments, tensors with hand-computed values),
 * against hostile files (each refused with a specific reason, every prefix
 * of a valid file refused, every single-byte corruption survived), the
 * fp16/bf16 conversions exhaustively, and the real model fixtures.
 *
 * The builder below writes GGUF independently of the reader, so a shared
 * misreading of the format cannot hide in both.  Hostile buffers are copied
 * into allocations of their exact size so that ASan sees any over-read.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "tap.h"

struct buf {
	uint8_t *p;
	size_t n, cap;
};

static void
put(struct buf *b, const void *src, size_t n)
{
	if (b->n + n > b->cap) {
		b->cap = (b->n + n) * 2 + 64;
		if ((b->p = realloc(b->p, b->cap)) == NULL)
			abort();
	}
	memcpy(b->p + b->n, src, n);
	b->n += n;
}

static void
put_u8(struct buf *b, uint8_t v)
{
	put(b, &v, 1);
}

static void
put_u16(struct buf *b, uint16_t v)
{
	uint8_t x[2] = { (uint8_t)v, (uint8_t)(v >> 8) };

	put(b, x, 2);
}

static void
put_u32(struct buf *b, uint32_t v)
{
	put_u16(b, (uint16_t)v);
	put_u16(b, (uint16_t)(v >> 16));
}

static void
put_u64(struct buf *b, uint64_t v)
{
	put_u32(b, (uint32_t)v);
	put_u32(b, (uint32_t)(v >> 32));
}

static void
put_f32(struct buf *b, float f)
{
	uint32_t u;

	memcpy(&u, &f, 4);
	put_u32(b, u);
}

static void
put_f64(struct buf *b, double f)
{
	uint64_t u;

	memcpy(&u, &f, 8);
	put_u64(b, u);
}

static void
put_str(struct buf *b, const char *s)
{
	put_u64(b, strlen(s));
	put(b, s, strlen(s));
}

static void
put_header(struct buf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
	put(b, "GGUF", 4);
	put_u32(b, version);
	put_u64(b, n_tensors);
	put_u64(b, n_kv);
}

/* Rewrites the key count at byte 16 once the keys are written. */
static void
patch_n_kv(struct buf *b, uint64_t n)
{
	for (int i = 0; i < 8; i++)
		b->p[16 + i] = (uint8_t)(n >> 8 * i);
}

static void
put_key(struct buf *b, const char *key, uint32_t type)
{
	put_str(b, key);
	put_u32(b, type);
}

static void
pad_to(struct buf *b, uint64_t align)
{
	while (b->n % align)
		put_u8(b, 0);
}

/* levels nested arrays around one uint8 element v (the array's type word is the caller's). */
static void
put_nested(struct buf *b, int levels, uint8_t v)
{
	if (levels == 1) {
		put_u32(b, FM_GGUF_UINT8);
		put_u64(b, 1);
		put_u8(b, v);
		return;
	}
	put_u32(b, FM_GGUF_ARRAY);
	put_u64(b, 1);
	put_nested(b, levels - 1, v);
}

struct tdesc {
	const char *name;
	uint32_t n_dims;
	uint64_t ne[5];   /* one more than allowed, for the n_dims 5 case */
	uint32_t type;
	const void *data;
	size_t len;
	bool fixed;       /* write offset as given instead of the real one */
	uint64_t offset;
};

/*
 * Tensor infos, padding to align, then each tensor's data at the next aligned
 * offset; the last tensor ends the file, so any shorter prefix cuts it.
 */
static void
put_tensors(struct buf *b, struct tdesc *t, int n, uint64_t align)
{
	uint64_t off[16], o = 0;
	size_t base;
	int i;

	for (i = 0; i < n; i++) {
		off[i] = o;
		o = (o + t[i].len + align - 1) / align * align;
	}
	for (i = 0; i < n; i++) {
		put_str(b, t[i].name);
		put_u32(b, t[i].n_dims);
		for (uint32_t d = 0; d < t[i].n_dims; d++)
			put_u64(b, t[i].ne[d]);
		put_u32(b, t[i].type);
		put_u64(b, t[i].fixed ? t[i].offset : off[i]);
	}
	pad_to(b, align);
	base = b->n;
	for (i = 0; i < n; i++) {
		while (b->n < base + off[i])
			put_u8(b, 0);
		put(b, t[i].data, t[i].len);
	}
}

/* Hand-made tensor contents and the values they must decode to. */
static const float f32_data[6] = { 1.5f, -2.25f, 0.0f, 1e30f, -1e-30f, 3.0f };
static const uint16_t f16_data[4] = { 0x3c00, 0xc000, 0x3800, 0x0001 };
static const float f16_want[4] = { 1.0f, -2.0f, 0.5f, 0x1p-24f };
static const uint16_t bf16_data[3] = { 0x3f80, 0xc040, 0x7f80 };
static const float bf16_want[3] = { 1.0f, -3.0f, INFINITY };
static uint8_t q8_data[4 * 34];  /* 2 rows of 64: 4 blocks */

static float
q8_want(int row, int i)
{
	static const float d[4] = { 0.5f, 2.0f, -1.0f, 0x1p-24f };
	int blk = row * 2 + i / 32, j = i % 32;

	return d[blk] * (float)(j * 8 - 128 + blk);
}

static void
make_q8(void)
{
	static const uint16_t d[4] = { 0x3800, 0x4000, 0xbc00, 0x0001 };

	for (int blk = 0; blk < 4; blk++) {
		q8_data[blk * 34] = (uint8_t)d[blk];
		q8_data[blk * 34 + 1] = (uint8_t)(d[blk] >> 8);
		for (int j = 0; j < 32; j++)
			q8_data[blk * 34 + 2 + j] = (uint8_t)(int8_t)(j * 8 - 128 + blk);
	}
}

static int
std_tensors(struct tdesc *t)
{
	struct tdesc v[] = {
		{ "t.f32", 2, { 3, 2 }, FM_GGML_F32, f32_data, sizeof f32_data, false, 0 },
		{ "t.f16", 1, { 4 }, FM_GGML_F16, f16_data, sizeof f16_data, false, 0 },
		{ "t.bf16", 3, { 3, 1, 1 }, FM_GGML_BF16, bf16_data, sizeof bf16_data, false, 0 },
		{ "t.q8_0", 4, { 64, 1, 2, 1 }, FM_GGML_Q8_0, q8_data, sizeof q8_data, false, 0 },
	};

	memcpy(t, v, sizeof v);
	return 4;
}

/* A file with one key of every type, arrays of every kind, and the std tensors. */
static struct buf
kitchen_sink(uint32_t version, uint64_t align)
{
	struct buf b = { 0 };
	struct tdesc t[4];
	uint64_t n = 0;
	int nt = std_tensors(t);

	put_header(&b, version, (uint64_t)nt, 0);
	put_key(&b, "general.architecture", FM_GGUF_STRING); put_str(&b, "llama"); n++;
	put_key(&b, "v.u8", FM_GGUF_UINT8); put_u8(&b, 200); n++;
	put_key(&b, "v.i8", FM_GGUF_INT8); put_u8(&b, (uint8_t)-5); n++;
	put_key(&b, "v.u16", FM_GGUF_UINT16); put_u16(&b, 60000); n++;
	put_key(&b, "v.i16", FM_GGUF_INT16); put_u16(&b, (uint16_t)-300); n++;
	put_key(&b, "v.u32", FM_GGUF_UINT32); put_u32(&b, 4000000000u); n++;
	put_key(&b, "v.i32", FM_GGUF_INT32); put_u32(&b, (uint32_t)-70000); n++;
	put_key(&b, "v.f32", FM_GGUF_FLOAT32); put_f32(&b, 0.25f); n++;
	put_key(&b, "v.bool", FM_GGUF_BOOL); put_u8(&b, 1); n++;
	put_key(&b, "v.u64", FM_GGUF_UINT64); put_u64(&b, UINT64_MAX); n++;
	put_key(&b, "v.i64", FM_GGUF_INT64); put_u64(&b, (uint64_t)INT64_MIN); n++;
	put_key(&b, "v.f64", FM_GGUF_FLOAT64); put_f64(&b, -1e300); n++;
	put_key(&b, "v.str", FM_GGUF_STRING); put_str(&b, "h\xc3\xa9llo"); n++;
	put_key(&b, "v.empty_str", FM_GGUF_STRING); put_str(&b, ""); n++;
	put_key(&b, "", FM_GGUF_UINT8); put_u8(&b, 9); n++;  /* an empty key is still a key */
	put_key(&b, "a.u8", FM_GGUF_ARRAY); put_u32(&b, FM_GGUF_UINT8); put_u64(&b, 3);
	put_u8(&b, 1); put_u8(&b, 2); put_u8(&b, 255); n++;
	put_key(&b, "a.i16", FM_GGUF_ARRAY); put_u32(&b, FM_GGUF_INT16); put_u64(&b, 2);
	put_u16(&b, (uint16_t)-2); put_u16(&b, 7); n++;
	put_key(&b, "a.u32", FM_GGUF_ARRAY); put_u32(&b, FM_GGUF_UINT32); put_u64(&b, 1);
	put_u32(&b, 123456); n++;
	put_key(&b, "a.i32", FM_GGUF_ARRAY); put_u32(&b, FM_GGUF_INT32); put_u64(&b, 1);
	put_u32(&b, (uint32_t)-9); n++;
	put_key(&b, "a.f32", FM_GGUF_ARRAY); put_u32(&b, FM_GGUF_FLOAT32); put_u64(&b, 2);
	put_f32(&b, -0.5f); put_f32(&b, 8.0f); n++;
	put_key(&b, "a.bool", FM_GGUF_ARRAY); put_u32(&b, FM_GGUF_BOOL); put_u64(&b, 3);
	put_u8(&b, 0); put_u8(&b, 1); put_u8(&b, 1); n++;
	put_key(&b, "a.u64", FM_GGUF_ARRAY); put_u32(&b, FM_GGUF_UINT64); put_u64(&b, 1);
	put_u64(&b, 1ull << 60); n++;
	put_key(&b, "a.i64", FM_GGUF_ARRAY); put_u32(&b, FM_GGUF_INT64); put_u64(&b, 2);
	put_u64(&b, (uint64_t)-1); put_u64(&b, 42); n++;
	put_key(&b, "a.f64", FM_GGUF_ARRAY); put_u32(&b, FM_GGUF_FLOAT64); put_u64(&b, 1);
	put_f64(&b, 2.5); n++;
	put_key(&b, "a.i8", FM_GGUF_ARRAY); put_u32(&b, FM_GGUF_INT8); put_u64(&b, 1);
	put_u8(&b, 0x80); n++;
	put_key(&b, "a.u16", FM_GGUF_ARRAY); put_u32(&b, FM_GGUF_UINT16); put_u64(&b, 1);
	put_u16(&b, 65535); n++;
	put_key(&b, "a.str", FM_GGUF_ARRAY); put_u32(&b, FM_GGUF_STRING); put_u64(&b, 3);
	put_str(&b, "a"); put_str(&b, ""); put_str(&b, "ccc"); n++;
	put_key(&b, "a.empty", FM_GGUF_ARRAY); put_u32(&b, FM_GGUF_UINT32); put_u64(&b, 0); n++;
	put_key(&b, "a.empty_str", FM_GGUF_ARRAY); put_u32(&b, FM_GGUF_STRING); put_u64(&b, 0); n++;
	/* An array of arrays of different element types. */
	put_key(&b, "a.nest", FM_GGUF_ARRAY); put_u32(&b, FM_GGUF_ARRAY); put_u64(&b, 3);
	put_u32(&b, FM_GGUF_UINT32); put_u64(&b, 2); put_u32(&b, 1); put_u32(&b, 2);
	put_u32(&b, FM_GGUF_STRING); put_u64(&b, 1); put_str(&b, "x");
	put_u32(&b, FM_GGUF_INT8); put_u64(&b, 0);
	n++;
	put_key(&b, "a.deep", FM_GGUF_ARRAY); put_nested(&b, FM_GGUF_MAX_DEPTH, 77); n++;
	if (align != 0) {
		put_key(&b, "general.alignment", FM_GGUF_UINT32); put_u32(&b, (uint32_t)align); n++;
	}
	patch_n_kv(&b, n);
	put_tensors(&b, t, nt, align ? align : 32);
	return b;
}

static const struct fm_gguf *
open_buf(const struct buf *b, struct fm_err *err)
{
	err->status = FM_OK;
	err->msg[0] = '\0';
	return fm_gguf_open_memory(b->p, b->n, err);
}

static bool
str_is(struct fm_str s, const char *want)
{
	return fm_str_eq(s, want);
}

static void
check_tensors(const struct fm_gguf *g, const char *what)
{
	const struct fm_gguf_tensor *t;
	struct fm_err err;
	float out[64];
	int bad;

	ok(g->n_tensors == 4, "%s: 4 tensors", what);
	t = fm_gguf_tensor(g, "t.f32");
	ok(t && t->type == FM_GGML_F32 && t->n_dims == 2 && t->ne[0] == 3 && t->ne[1] == 2 &&
	    t->ne[2] == 1 && t->ne[3] == 1 && t->n_rows == 2 && t->row_bytes == 12 &&
	    t->nbytes == 24, "%s: f32 tensor shape", what);
	if (t) {
		bad = 0;
		for (int r = 0; r < 2; r++) {
			bad |= fm_gguf_dequant_row(t, (uint64_t)r, out, &err) != FM_OK;
			for (int i = 0; i < 3; i++)
				bad |= out[i] != f32_data[r * 3 + i];
		}
		ok(!bad, "%s: f32 rows", what);
		ok(fm_gguf_dequant_row(t, 2, out, &err) == FM_EDATA && strstr(err.msg, "out of range"),
		    "%s: row past the end refused: %s", what, err.msg);
		ok((uint64_t)(t->data - g->map) % g->alignment == 0 &&
		    g->data_offset % g->alignment == 0, "%s: data aligned to %llu", what,
		    (unsigned long long)g->alignment);
	}
	t = fm_gguf_tensor(g, "t.f16");
	bad = !t || t->type != FM_GGML_F16 || t->n_rows != 1 || t->nbytes != 8 ||
	    fm_gguf_dequant_row(t, 0, out, &err) != FM_OK;
	for (int i = 0; !bad && i < 4; i++)
		bad |= out[i] != f16_want[i];
	ok(!bad, "%s: f16 tensor", what);
	t = fm_gguf_tensor(g, "t.bf16");
	bad = !t || t->type != FM_GGML_BF16 || t->n_dims != 3 || t->nbytes != 6 ||
	    fm_gguf_dequant_row(t, 0, out, &err) != FM_OK;
	for (int i = 0; !bad && i < 3; i++)
		bad |= out[i] != bf16_want[i];
	ok(!bad, "%s: bf16 tensor", what);
	t = fm_gguf_tensor(g, "t.q8_0");
	bad = !t || t->type != FM_GGML_Q8_0 || t->n_dims != 4 || t->row_bytes != 68 ||
	    t->n_rows != 2 || t->nbytes != 136;
	for (int r = 0; !bad && r < 2; r++) {
		bad |= fm_gguf_dequant_row(t, (uint64_t)r, out, &err) != FM_OK;
		for (int i = 0; !bad && i < 64; i++)
			bad |= out[i] != q8_want(r, i);
	}
	ok(!bad, "%s: q8_0 tensor (d * q per block)", what);
	ok(fm_gguf_tensor(g, "t.f3") == NULL && fm_gguf_tensor(g, "t.f32x") == NULL &&
	    fm_gguf_tensor(g, "") == NULL, "%s: absent tensors not found", what);
}

static void
check_kitchen(const struct fm_gguf *g, const char *what)
{
	const struct fm_gguf_value *v, *a;
	struct fm_err err;
	struct fm_str s;
	uint32_t u32;
	uint64_t u64;
	int64_t i64;
	float f;
	bool bl;

	ok(fm_gguf_get_str(g, "general.architecture", &s, &err) == FM_OK && str_is(s, "llama"),
	    "%s: general.architecture", what);
	ok(fm_gguf_get_u32(g, "v.u8", &u32, &err) == FM_OK && u32 == 200, "%s: uint8", what);
	ok(fm_gguf_get_i64(g, "v.i8", &i64, &err) == FM_OK && i64 == -5, "%s: int8", what);
	ok(fm_gguf_get_u32(g, "v.u16", &u32, &err) == FM_OK && u32 == 60000, "%s: uint16", what);
	ok(fm_gguf_get_i64(g, "v.i16", &i64, &err) == FM_OK && i64 == -300, "%s: int16", what);
	ok(fm_gguf_get_u32(g, "v.u32", &u32, &err) == FM_OK && u32 == 4000000000u, "%s: uint32", what);
	ok(fm_gguf_get_i64(g, "v.i32", &i64, &err) == FM_OK && i64 == -70000, "%s: int32", what);
	ok(fm_gguf_get_f32(g, "v.f32", &f, &err) == FM_OK && f == 0.25f, "%s: float32", what);
	ok(fm_gguf_get_bool(g, "v.bool", &bl, &err) == FM_OK && bl, "%s: bool", what);
	ok(fm_gguf_get_u64(g, "v.u64", &u64, &err) == FM_OK && u64 == UINT64_MAX, "%s: uint64", what);
	ok(fm_gguf_get_i64(g, "v.i64", &i64, &err) == FM_OK && i64 == INT64_MIN, "%s: int64", what);
	v = fm_gguf_get(g, "v.f64");
	ok(v && v->type == FM_GGUF_FLOAT64 && v->v.f == -1e300, "%s: float64", what);
	ok(fm_gguf_get_str(g, "v.str", &s, &err) == FM_OK && s.len == 6 &&
	    memcmp(s.ptr, "h\xc3\xa9llo", 6) == 0, "%s: utf-8 string", what);
	ok(fm_gguf_get_str(g, "v.empty_str", &s, &err) == FM_OK && s.len == 0, "%s: empty string", what);
	ok(fm_gguf_get_u32(g, "", &u32, &err) == FM_OK && u32 == 9, "%s: empty key", what);

	/* Getter failures name the key and the problem. */
	ok(fm_gguf_get_u32(g, "v.i8", &u32, &err) == FM_EDATA && strstr(err.msg, "v.i8") &&
	    strstr(err.msg, "does not fit uint32"), "%s: negative into u32 refused: %s", what, err.msg);
	ok(fm_gguf_get_u32(g, "v.u64", &u32, &err) == FM_EDATA, "%s: uint64 max into u32 refused", what);
	ok(fm_gguf_get_i64(g, "v.u64", &i64, &err) == FM_EDATA, "%s: uint64 max into i64 refused", what);
	ok(fm_gguf_get_u64(g, "v.i64", &u64, &err) == FM_EDATA, "%s: int64 min into u64 refused", what);
	ok(fm_gguf_get_u64(g, "nope", &u64, &err) == FM_EDATA && strcmp(err.msg, "missing key nope") == 0,
	    "%s: missing key: %s", what, err.msg);
	ok(fm_gguf_get_u32(g, "v.str", &u32, &err) == FM_EDATA && strstr(err.msg, "has type string"),
	    "%s: string as integer refused: %s", what, err.msg);
	ok(fm_gguf_get_f32(g, "v.f64", &f, &err) == FM_OK && f == -INFINITY, "%s: float64 as f32", what);
	ok(fm_gguf_get_f32(g, "v.u8", &f, &err) == FM_EDATA, "%s: integer as float refused", what);
	ok(fm_gguf_get_bool(g, "v.u8", &bl, &err) == FM_EDATA, "%s: integer as bool refused", what);
	ok(fm_gguf_get_str(g, "v.bool", &s, &err) == FM_EDATA, "%s: bool as string refused", what);
	ok(fm_gguf_get_arr(g, "v.str", FM_GGUF_STRING, &a, &err) == FM_EDATA,
	    "%s: string as array refused: %s", what, err.msg);
	ok(fm_gguf_get_arr(g, "a.u8", FM_GGUF_INT8, &a, &err) == FM_EDATA &&
	    strstr(err.msg, "array of uint8"), "%s: wrong element type refused: %s", what, err.msg);

	ok(fm_gguf_get_arr(g, "a.u8", FM_GGUF_UINT8, &a, &err) == FM_OK && a->v.arr.n == 3 &&
	    fm_gguf_arr_u64(a, 0) == 1 && fm_gguf_arr_u64(a, 2) == 255, "%s: uint8 array", what);
	ok(fm_gguf_get_arr(g, "a.i16", FM_GGUF_INT16, &a, &err) == FM_OK && a->v.arr.n == 2 &&
	    fm_gguf_arr_i64(a, 0) == -2 && fm_gguf_arr_i64(a, 1) == 7 &&
	    fm_gguf_arr_f64(a, 0) == -2.0, "%s: int16 array", what);
	ok(fm_gguf_get_arr(g, "a.u32", FM_GGUF_UINT32, &a, &err) == FM_OK &&
	    fm_gguf_arr_u64(a, 0) == 123456, "%s: uint32 array", what);
	ok(fm_gguf_get_arr(g, "a.i32", FM_GGUF_INT32, &a, &err) == FM_OK &&
	    fm_gguf_arr_i64(a, 0) == -9, "%s: int32 array", what);
	ok(fm_gguf_get_arr(g, "a.f32", FM_GGUF_FLOAT32, &a, &err) == FM_OK &&
	    fm_gguf_arr_f64(a, 0) == -0.5 && fm_gguf_arr_f64(a, 1) == 8.0 &&
	    fm_gguf_arr_i64(a, 1) == 8, "%s: float32 array", what);
	ok(fm_gguf_get_arr(g, "a.bool", FM_GGUF_BOOL, &a, &err) == FM_OK && a->v.arr.n == 3 &&
	    fm_gguf_arr_u64(a, 0) == 0 && fm_gguf_arr_u64(a, 1) == 1, "%s: bool array", what);
	ok(fm_gguf_get_arr(g, "a.u64", FM_GGUF_UINT64, &a, &err) == FM_OK &&
	    fm_gguf_arr_u64(a, 0) == 1ull << 60, "%s: uint64 array", what);
	ok(fm_gguf_get_arr(g, "a.i64", FM_GGUF_INT64, &a, &err) == FM_OK &&
	    fm_gguf_arr_i64(a, 0) == -1 && fm_gguf_arr_i64(a, 1) == 42, "%s: int64 array", what);
	ok(fm_gguf_get_arr(g, "a.f64", FM_GGUF_FLOAT64, &a, &err) == FM_OK &&
	    fm_gguf_arr_f64(a, 0) == 2.5, "%s: float64 array", what);
	ok(fm_gguf_get_arr(g, "a.i8", FM_GGUF_INT8, &a, &err) == FM_OK &&
	    fm_gguf_arr_i64(a, 0) == -128, "%s: int8 array", what);
	ok(fm_gguf_get_arr(g, "a.u16", FM_GGUF_UINT16, &a, &err) == FM_OK &&
	    fm_gguf_arr_u64(a, 0) == 65535, "%s: uint16 array", what);
	ok(fm_gguf_get_arr(g, "a.str", FM_GGUF_STRING, &a, &err) == FM_OK && a->v.arr.n == 3 &&
	    a->v.arr.items && str_is(a->v.arr.items[0].v.s, "a") &&
	    a->v.arr.items[1].v.s.len == 0 && str_is(a->v.arr.items[2].v.s, "ccc") &&
	    a->v.arr.items[2].type == FM_GGUF_STRING, "%s: string array", what);
	ok(fm_gguf_get_arr(g, "a.empty", FM_GGUF_UINT32, &a, &err) == FM_OK && a->v.arr.n == 0,
	    "%s: empty array", what);
	ok(fm_gguf_get_arr(g, "a.empty_str", FM_GGUF_STRING, &a, &err) == FM_OK && a->v.arr.n == 0,
	    "%s: empty string array", what);
	if (ok(fm_gguf_get_arr(g, "a.nest", FM_GGUF_ARRAY, &a, &err) == FM_OK && a->v.arr.n == 3,
	    "%s: array of arrays", what)) {
		const struct fm_gguf_value *it = a->v.arr.items;

		ok(it[0].type == FM_GGUF_ARRAY && it[0].v.arr.elem == FM_GGUF_UINT32 &&
		    it[0].v.arr.n == 2 && fm_gguf_arr_u64(&it[0], 1) == 2 &&
		    it[1].v.arr.elem == FM_GGUF_STRING && it[1].v.arr.n == 1 &&
		    str_is(it[1].v.arr.items[0].v.s, "x") &&
		    it[2].v.arr.elem == FM_GGUF_INT8 && it[2].v.arr.n == 0,
		    "%s: nested elements of three types", what);
	}
	v = fm_gguf_get(g, "a.deep");
	for (int d = 1; v && d < FM_GGUF_MAX_DEPTH; d++)
		v = v->type == FM_GGUF_ARRAY && v->v.arr.elem == FM_GGUF_ARRAY && v->v.arr.n == 1 ?
		    &v->v.arr.items[0] : NULL;
	ok(v && v->v.arr.elem == FM_GGUF_UINT8 && fm_gguf_arr_u64(v, 0) == 77,
	    "%s: arrays nested %d deep", what, FM_GGUF_MAX_DEPTH);
	ok(fm_gguf_get(g, "v.u") == NULL && fm_gguf_get(g, "v.u88") == NULL &&
	    fm_gguf_get(g, "V.U8") == NULL, "%s: lookup is exact", what);
	check_tensors(g, what);
}

static void
test_valid(void)
{
	static const struct { uint32_t version; uint64_t align; } cases[] = {
		{ 3, 0 }, { 2, 0 }, { 3, 32 }, { 3, 64 }, { 2, 8 }, { 3, 1 },
	};
	struct fm_err err;

	for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
		struct buf b = kitchen_sink(cases[c].version, cases[c].align);
		const struct fm_gguf *g = open_buf(&b, &err);
		char what[64];

		snprintf(what, sizeof what, "v%u align %llu", cases[c].version,
		    (unsigned long long)cases[c].align);
		if (ok(g != NULL, "%s: opens (%s)", what, g ? "ok" : err.msg)) {
			ok(g->version == cases[c].version && g->alignment ==
			    (cases[c].align ? cases[c].align : 32), "%s: version and alignment", what);
			check_kitchen(g, what);
		}
		fm_gguf_close((struct fm_gguf *)g);
		free(b.p);
	}
}

/* Copies b into an allocation of its exact size and expects FM_EDATA with reason. */
static void
expect_fail(const struct buf *b, const char *reason, const char *what)
{
	struct fm_err err = { 0 };
	uint8_t *copy = malloc(b->n ? b->n : 1);
	struct fm_gguf *g;

	if (b->n > 0)
		memcpy(copy, b->p, b->n);
	g = fm_gguf_open_memory(copy, b->n, &err);
	ok(g == NULL && err.status == FM_EDATA && strstr(err.msg, reason) != NULL,
	    "%s refused: %s", what, g ? "(accepted)" : err.msg);
	fm_gguf_close(g);
	free(copy);
}

/* A v3 file with one key of type t whose value the caller writes next. */
static struct buf
one_key(const char *key, uint32_t t)
{
	struct buf b = { 0 };

	put_header(&b, 3, 0, 1);
	put_key(&b, key, t);
	return b;
}

/* A file with general.alignment of type t and value v, and one tensor. */
static struct buf
align_file(uint32_t t, uint64_t v)
{
	struct buf b = { 0 };
	struct tdesc td = { "w", 1, { 3 }, FM_GGML_F32, f32_data, 12, false, 0 };

	put_header(&b, 3, 1, 1);
	put_key(&b, "general.alignment", t);
	if (t == FM_GGUF_UINT64)
		put_u64(&b, v);
	else if (t == FM_GGUF_STRING)
		put_str(&b, "32");
	else
		put_u32(&b, (uint32_t)v);
	put_tensors(&b, &td, 1, 32);
	return b;
}

static struct buf
tensor_file(struct tdesc *t, int n)
{
	struct buf b = { 0 };

	put_header(&b, 3, (uint64_t)n, 0);
	put_tensors(&b, t, n, 32);
	return b;
}

static void
test_hostile(void)
{
	struct buf b = { 0 };
	struct tdesc t[2];

#define FAIL(reason, what) do { expect_fail(&b, reason, what); free(b.p); b = (struct buf){ 0 }; } while (0)

	FAIL("empty file", "empty buffer");
	put(&b, "GG", 2);
	FAIL("truncated in header", "2 bytes of magic");
	put(&b, "GGML\3\0\0\0", 8);
	FAIL("bad magic (not a GGUF file)", "bad magic");
	put(&b, "\x7f" "ELF", 4);
	FAIL("bad magic (not a GGUF file)", "3-byte non-GGUF file");
	put_header(&b, 1, 0, 0);
	FAIL("unsupported GGUF version 1", "version 1");
	put_header(&b, 0, 0, 0);
	FAIL("unsupported GGUF version 0", "version 0");
	put_header(&b, 4, 0, 0);
	FAIL("unsupported GGUF version 4", "version 4");
	put(&b, "GGUF\0\0\0\3", 8);
	put_u64(&b, 0); put_u64(&b, 0);
	FAIL("big-endian GGUF not supported", "big-endian v3");
	put(&b, "FUGG\0\0\0\3", 8);
	FAIL("big-endian GGUF not supported", "big-endian magic");
	put_header(&b, 3, 0, UINT64_MAX);
	FAIL("key count 18446744073709551615 too large", "n_kv 2^64-1");
	put_header(&b, 3, 0, 1ull << 60);
	FAIL("too large", "n_kv 2^60");
	put_header(&b, 3, UINT64_MAX, 0);
	FAIL("tensor count 18446744073709551615 too large", "n_tensors 2^64-1");
	put_header(&b, 3, 1ull << 59, 0);
	put_u64(&b, 0);
	FAIL("too large", "n_tensors 2^59");

	put_header(&b, 3, 0, 1);
	put_u64(&b, UINT64_MAX);
	put(&b, "0123456789abcdef", 16);
	FAIL("key 0: string length 18446744073709551615 too large", "key length 2^64-1");
	put_header(&b, 3, 0, 1);
	put_u64(&b, UINT64_MAX - 7);
	put(&b, "abcdefghijklmnop", 16);
	FAIL("too large", "key length that wraps the position");
	b = one_key("s", FM_GGUF_STRING);
	put_u64(&b, UINT64_MAX - 2);
	put(&b, "xx", 2);
	FAIL("key 0 (s): string length 18446744073709551613 too large", "string length near 2^64");
	b = one_key("s", FM_GGUF_STRING);
	put_u64(&b, 10);
	put(&b, "abc", 3);
	FAIL("truncated in key 0 (s)", "string cut short");
	b = one_key("a", FM_GGUF_ARRAY);
	put_u32(&b, FM_GGUF_UINT32); put_u64(&b, 1ull << 62);  /* n*4 wraps to 0 */
	FAIL("array count 4611686018427387904 too large", "array count whose byte size wraps");
	b = one_key("a", FM_GGUF_ARRAY);
	put_u32(&b, FM_GGUF_STRING); put_u64(&b, UINT64_MAX);
	FAIL("array count", "string array count 2^64-1");
	b = one_key("a", FM_GGUF_ARRAY);
	put_u32(&b, FM_GGUF_ARRAY); put_u64(&b, 1ull << 40);
	FAIL("array count", "array-of-arrays count 2^40");
	b = one_key("a", FM_GGUF_ARRAY);
	put_u32(&b, FM_GGUF_STRING); put_u64(&b, 4);
	put_str(&b, "x"); put_str(&b, "y");
	put_u64(&b, 0);
	FAIL("truncated in key 0 (a)", "string array cut short");
	b = one_key("deep", FM_GGUF_ARRAY);
	put_nested(&b, FM_GGUF_MAX_DEPTH + 1, 1);
	FAIL("key 0 (deep): arrays nested deeper than 8", "arrays nested 9 deep");
	b = one_key("deep", FM_GGUF_ARRAY);
	for (int i = 0; i < 1000; i++) {
		put_u32(&b, FM_GGUF_ARRAY); put_u64(&b, 1);
	}
	FAIL("nested deeper", "arrays nested 1000 deep");
	b = one_key("x", 13);
	put_u8(&b, 0);
	FAIL("key 0 (x): unknown value type 13", "value type 13");
	b = one_key("x", UINT32_MAX);
	put_u8(&b, 0);
	FAIL("unknown value type 4294967295", "value type 2^32-1");
	b = one_key("x", FM_GGUF_ARRAY);
	put_u32(&b, 77); put_u64(&b, 0);
	FAIL("unknown array element type 77", "array element type 77");
	b = one_key("x", FM_GGUF_BOOL);
	put_u8(&b, 2);
	FAIL("bool value 2 is neither 0 nor 1", "bool 2");
	b = one_key("x", FM_GGUF_ARRAY);
	put_u32(&b, FM_GGUF_BOOL); put_u64(&b, 2); put_u8(&b, 1); put_u8(&b, 0xff);
	FAIL("element 1: bool value 255", "bool array element 255");
	b = one_key("tokenizer\n\x01", FM_GGUF_UINT32);
	put_u16(&b, 0);
	FAIL("truncated in key 0 (tokenizer?\?)", "non-printable key shown safely");

	put_header(&b, 3, 0, 2);
	put_key(&b, "dup", FM_GGUF_UINT8); put_u8(&b, 1);
	put_key(&b, "dup", FM_GGUF_STRING); put_str(&b, "x");
	FAIL("duplicate key dup", "duplicate key");
	put_header(&b, 3, 0, 3);
	put_key(&b, "a", FM_GGUF_UINT8); put_u8(&b, 1);
	put_key(&b, "ab", FM_GGUF_UINT8); put_u8(&b, 1);
	put_key(&b, "b", FM_GGUF_UINT8); put_u8(&b, 1);
	put_u8(&b, 0);
	{
		struct fm_err err;
		const struct fm_gguf *g = open_buf(&b, &err);

		ok(g && fm_gguf_get(g, "a") && fm_gguf_get(g, "ab") && fm_gguf_get(g, "b"),
		    "keys that prefix each other are distinct, trailing bytes ignored");
		fm_gguf_close((struct fm_gguf *)g);
		free(b.p);
		b = (struct buf){ 0 };
	}

	b = align_file(FM_GGUF_UINT32, 0);
	FAIL("general.alignment is 0, not a power of two", "alignment 0");
	b = align_file(FM_GGUF_UINT32, 3);
	FAIL("general.alignment is 3, not a power of two", "alignment 3");
	b = align_file(FM_GGUF_UINT32, 96);
	FAIL("not a power of two", "alignment 96");
	b = align_file(FM_GGUF_UINT64, 1ull << 40);
	FAIL("too large", "alignment 2^40");
	b = align_file(FM_GGUF_STRING, 0);
	FAIL("general.alignment has type string, expected uint32", "alignment as a string");
	b = align_file(FM_GGUF_INT32, (uint32_t)-32);
	FAIL("general.alignment is -32", "alignment -32");
	b = align_file(FM_GGUF_UINT32, 1u << 31);
	FAIL("truncated in padding before the tensor data", "alignment 2^31 past the end");

	t[0] = (struct tdesc){ "w", 2, { 4, 2 }, FM_GGML_F32, f32_data, 24, false, 0 };
	t[1] = t[0];
	t[1].name = "v";
	b = tensor_file(t, 2);
	{
		struct fm_err err;
		const struct fm_gguf *g = open_buf(&b, &err);

		ok(g == NULL && strstr(err.msg, "data past end of file"),
		    "short data of the last tensor refused: %s", g ? "(accepted)" : err.msg);
		fm_gguf_close((struct fm_gguf *)g);
		free(b.p);
		b = (struct buf){ 0 };
	}
	t[0].ne[0] = 3;
	t[1] = t[0];
	b = tensor_file(t, 2);
	FAIL("duplicate tensor w", "duplicate tensor");
	t[0].type = 4;
	b = tensor_file(t, 1);
	FAIL("tensor w: unknown type 4", "removed type q4_2");
	t[0].type = 99;
	b = tensor_file(t, 1);
	FAIL("tensor w: unknown type 99", "tensor type 99");
	t[0].type = FM_GGML_F32;
	t[0].n_dims = 0;
	b = tensor_file(t, 1);
	FAIL("tensor w: n_dims 0 not in 1..4", "n_dims 0");
	t[0].n_dims = 5;
	t[0].ne[2] = t[0].ne[3] = t[0].ne[4] = 1;
	b = tensor_file(t, 1);
	FAIL("tensor w: n_dims 5 not in 1..4", "n_dims 5");
	t[0] = (struct tdesc){ "w", 2, { 1ull << 32, 1ull << 32 }, FM_GGML_F32, f32_data, 12, false, 0 };
	b = tensor_file(t, 1);
	FAIL("tensor w: element count overflows", "dims product 2^64");
	t[0] = (struct tdesc){ "w", 4, { 1ull << 20, 1ull << 20, 1ull << 20, 1ull << 4 },
	    FM_GGML_F32, f32_data, 12, false, 0 };
	b = tensor_file(t, 1);
	FAIL("tensor w: element count overflows", "dims product 2^64 over four dims");
	t[0] = (struct tdesc){ "w", 1, { UINT64_MAX }, FM_GGML_I8, f32_data, 12, false, 0 };
	b = tensor_file(t, 1);
	FAIL("overflows", "dimension 2^64-1");
	t[0] = (struct tdesc){ "w", 1, { 1ull << 61 }, FM_GGML_F32, f32_data, 12, false, 0 };
	b = tensor_file(t, 1);
	FAIL("tensor w: data past end of file", "2^61 floats, 2^63 bytes");
	t[0] = (struct tdesc){ "w", 1, { 1ull << 62 }, FM_GGML_F32, f32_data, 12, false, 0 };
	b = tensor_file(t, 1);
	FAIL("tensor w: byte size overflows", "2^62 floats, a row of 2^64 bytes");
	t[0] = (struct tdesc){ "w", 2, { 1ull << 31, 1ull << 31 }, FM_GGML_F64, f32_data, 12, false, 0 };
	b = tensor_file(t, 1);
	FAIL("tensor w: byte size overflows", "2^31 rows of 2^34 bytes");
	t[0] = (struct tdesc){ "w", 2, { 3, 0 }, FM_GGML_F32, f32_data, 12, false, 0 };
	b = tensor_file(t, 1);
	FAIL("tensor w: dimension 1 is 0", "empty dimension");
	t[0] = (struct tdesc){ "w", 1, { 33 }, FM_GGML_Q8_0, q8_data, 34, false, 0 };
	b = tensor_file(t, 1);
	FAIL("tensor w: row length 33 is not a multiple of the q8_0 block size 32", "q8_0 row of 33");
	t[0] = (struct tdesc){ "w", 1, { 128 }, FM_GGML_Q4_K, q8_data, 72, false, 0 };
	b = tensor_file(t, 1);
	FAIL("not a multiple of the q4_K block size 256", "q4_K row of 128");
	t[0] = (struct tdesc){ "w", 1, { 3 }, FM_GGML_F32, f32_data, 12, true, 4 };
	b = tensor_file(t, 1);
	FAIL("tensor w: offset 4 is not a multiple of the alignment 32", "misaligned offset");
	t[0].offset = 32;
	b = tensor_file(t, 1);
	FAIL("tensor w: data past end of file", "offset past the end");
	t[0].offset = UINT64_MAX - 31;
	b = tensor_file(t, 1);
	FAIL("tensor w: data past end of file", "offset near 2^64");
	t[0] = (struct tdesc){ "w", 1, { 4 }, FM_GGML_F32, f32_data, 12, false, 0 };
	b = tensor_file(t, 1);
	FAIL("tensor w: data past end of file", "data one element short");
	put_header(&b, 3, 1, 0);
	put_str(&b, "weight.name"); put_u32(&b, 1); put_u64(&b, 4); put_u32(&b, 0);
	FAIL("truncated in tensor info 0 (weight.name)", "tensor info cut short");
	put_header(&b, 3, 1, 0);
	put_str(&b, "w"); put_u32(&b, 1); put_u64(&b, 4); put_u32(&b, 0);
	FAIL("truncated in tensor infos", "tensor info shorter than the smallest possible");
#undef FAIL
}

/* Visits every value, so that the sanitizers see each pointer the reader hands out. */
static uint64_t
walk_value(const struct fm_gguf_value *v)
{
	uint64_t h = (uint64_t)v->type;

	if (v->type == FM_GGUF_STRING)
		return h + v->v.s.len + (v->v.s.len ? (uint8_t)v->v.s.ptr[v->v.s.len - 1] : 0);
	if (v->type != FM_GGUF_ARRAY)
		return h + v->v.u;
	for (uint64_t i = 0; i < v->v.arr.n; i++) {
		if (v->v.arr.items)
			h += walk_value(&v->v.arr.items[i]);
		else
			h += fm_gguf_arr_u64(v, i) + (uint64_t)fm_gguf_arr_f64(v, i);
	}
	return h;
}

/* Walks everything and dequantises every row; returns whether all was well. */
static bool
walk(const struct fm_gguf *g)
{
	struct fm_err err;
	volatile uint64_t h = 0;
	bool good = true;

	good &= g->alignment != 0 && (g->alignment & (g->alignment - 1)) == 0;
	good &= g->data_offset <= g->size;
	for (uint64_t i = 0; i < g->n_kv; i++)
		h += walk_value(&g->kv[i].val) + g->kv[i].key.len;
	for (uint64_t i = 0; i < g->n_tensors; i++) {
		const struct fm_gguf_tensor *t = &g->tensors[i];
		float *row;

		good &= t->data >= g->map && t->data + t->nbytes <= g->map + g->size;
		if (!fm_ggml_type_dequantizable(t->type))
			continue;
		if ((row = malloc(t->ne[0] * sizeof *row)) == NULL)
			return false;
		for (uint64_t r = 0; r < t->n_rows; r++) {
			good &= fm_gguf_dequant_row(t, r, row, &err) == FM_OK;
			h += (uint64_t)(row[0] == row[0]);
		}
		free(row);
	}
	return good;
}

static struct buf
small_file(void)
{
	struct buf b = { 0 };
	struct tdesc t[2] = {
		{ "a", 1, { 2 }, FM_GGML_F16, f16_data, 4, false, 0 },
		{ "q", 1, { 32 }, FM_GGML_Q8_0, q8_data, 34, false, 0 },
	};

	put_header(&b, 3, 2, 4);
	put_key(&b, "general.alignment", FM_GGUF_UINT32); put_u32(&b, 8);
	put_key(&b, "s", FM_GGUF_ARRAY); put_u32(&b, FM_GGUF_STRING); put_u64(&b, 2);
	put_str(&b, "ab"); put_str(&b, "c");
	put_key(&b, "n", FM_GGUF_ARRAY); put_u32(&b, FM_GGUF_ARRAY); put_u64(&b, 2);
	put_u32(&b, FM_GGUF_UINT16); put_u64(&b, 1); put_u16(&b, 5);
	put_u32(&b, FM_GGUF_ARRAY); put_u64(&b, 1);
	put_u32(&b, FM_GGUF_FLOAT32); put_u64(&b, 1); put_f32(&b, 1.0f);
	put_key(&b, "f", FM_GGUF_FLOAT64); put_f64(&b, 0.5);
	put_tensors(&b, t, 2, 8);
	return b;
}

static void
test_truncation_and_corruption(void)
{
	struct buf full = kitchen_sink(3, 0), small = small_file();
	struct fm_err err;
	const struct fm_gguf *g;
	size_t bad = 0, opened = 0, tried = 0, first_bad = 0;

	g = open_buf(&full, &err);
	ok(g != NULL && walk(g), "full kitchen-sink file opens and walks");
	fm_gguf_close((struct fm_gguf *)g);
	for (size_t len = 0; len < full.n; len++) {
		uint8_t *copy = malloc(len ? len : 1);
		struct fm_gguf *tg;

		if (len > 0)
			memcpy(copy, full.p, len);
		err.status = FM_OK;
		tg = fm_gguf_open_memory(copy, len, &err);
		if (tg != NULL || err.status != FM_EDATA || err.msg[0] == '\0') {
			if (!bad++)
				first_bad = len;
		}
		fm_gguf_close(tg);
		free(copy);
	}
	ok(bad == 0, "every prefix (lengths 0..%zu) refused with FM_EDATA and a reason"
	    " (%zu wrong, the first at length %zu)", full.n - 1, bad, first_bad);

	g = open_buf(&small, &err);
	ok(g != NULL && walk(g), "small file opens (%zu bytes): %s", small.n, g ? "ok" : err.msg);
	fm_gguf_close((struct fm_gguf *)g);
	bad = 0;
	for (size_t pos = 0; pos < small.n; pos++) {
		for (int v = 0; v < 256; v++) {
			uint8_t *copy;
			struct fm_gguf *cg;

			if (v == small.p[pos])
				continue;
			copy = malloc(small.n);
			memcpy(copy, small.p, small.n);
			copy[pos] = (uint8_t)v;
			err.status = FM_OK;
			err.msg[0] = '\0';
			cg = fm_gguf_open_memory(copy, small.n, &err);
			tried++;
			if (cg != NULL) {
				opened++;
				bad += !walk(cg);
			} else {
				bad += err.status != FM_EDATA || err.msg[0] == '\0';
			}
			fm_gguf_close(cg);
			free(copy);
		}
	}
	ok(bad == 0, "%zu single-byte corruptions: none crashed, %zu opened, %zu refused with a reason",
	    tried, opened, tried - opened);
	free(full.p);
	free(small.p);
}

static bool
is_nan16(uint16_t h)
{
	return (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0;
}

static void
test_half(void)
{
	unsigned bad = 0, badmid = 0;

	for (uint32_t h = 0; h < 65536; h++) {
		float f = fm_f16_to_f32((uint16_t)h);
		uint16_t back = fm_f32_to_f16(f);

		if (is_nan16((uint16_t)h))
			bad += !(isnan(f) && is_nan16(back) && (back & 0x8000) == (h & 0x8000));
		else
			bad += back != h;
	}
	ok(bad == 0, "f16 -> f32 -> f16 round trip of all 65536 patterns (%u bad)", bad);

	/*
	 * Every rounding boundary between adjacent finite halves: the midpoint
	 * goes to the even one, a float either side of it to the nearer one.
	 * The midpoint needs 12 significant bits, exact in a float.
	 */
	for (uint32_t h = 0; h < 0x7bff; h++) {
		float a = fm_f16_to_f32((uint16_t)h), b = fm_f16_to_f32((uint16_t)(h + 1));
		float mid = (a + b) / 2;
		uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;

		badmid += fm_f32_to_f16(mid) != even;
		badmid += fm_f32_to_f16(nextafterf(mid, 0)) != h;
		badmid += fm_f32_to_f16(nextafterf(mid, INFINITY)) != h + 1;
		badmid += fm_f32_to_f16(-mid) != (even | 0x8000);
	}
	ok(badmid == 0, "f32 -> f16 rounds to nearest, ties to even, at every boundary (%u bad)", badmid);

	ok(fm_f16_to_f32(0x3c00) == 1.0f && fm_f16_to_f32(0x7bff) == 65504.0f &&
	    fm_f16_to_f32(0x0001) == 0x1p-24f && fm_f16_to_f32(0x03ff) == 0x3ffp-24f &&
	    fm_f16_to_f32(0x0400) == 0x1p-14f && fm_f16_to_f32(0xc000) == -2.0f,
	    "f16 -> f32 normals and subnormals");
	ok(isinf(fm_f16_to_f32(0x7c00)) && fm_f16_to_f32(0xfc00) < 0 && isnan(fm_f16_to_f32(0x7e00)) &&
	    signbit(fm_f16_to_f32(0x8000)) && fm_f16_to_f32(0x8000) == 0, "f16 -> f32 inf, nan, -0");
	ok(fm_f32_to_f16(1.0f + 0x1p-11f) == 0x3c00 && fm_f32_to_f16(1.0f + 0x3p-11f) == 0x3c02,
	    "f16 ties to even at 1");
	ok(fm_f32_to_f16(65504.0f) == 0x7bff && fm_f32_to_f16(65519.996f) == 0x7bff &&
	    fm_f32_to_f16(65520.0f) == 0x7c00 && fm_f32_to_f16(1e10f) == 0x7c00 &&
	    fm_f32_to_f16(-1e38f) == 0xfc00, "f16 overflow rounds to inf from 65520");
	ok(fm_f32_to_f16(0x1p-25f) == 0 && fm_f32_to_f16(nextafterf(0x1p-25f, 1)) == 1 &&
	    fm_f32_to_f16(0x3p-25f) == 2 && fm_f32_to_f16(0x1p-14f - 0x1p-25f) == 0x0400 &&
	    fm_f32_to_f16(1e-10f) == 0 && fm_f32_to_f16(-1e-10f) == 0x8000 &&
	    fm_f32_to_f16(0x1p-149f) == 0, "f16 subnormal rounding and underflow");
	ok(fm_f32_to_f16(INFINITY) == 0x7c00 && fm_f32_to_f16(-INFINITY) == 0xfc00 &&
	    is_nan16(fm_f32_to_f16(NAN)) && fm_f32_to_f16(-0.0f) == 0x8000,
	    "f32 -> f16 inf, nan, -0");
}

static bool
is_nanb(uint16_t h)
{
	return (h & 0x7f80) == 0x7f80 && (h & 0x7f) != 0;
}

static void
test_bf16(void)
{
	unsigned bad = 0, badmid = 0;

	for (uint32_t h = 0; h < 65536; h++) {
		float f = fm_bf16_to_f32((uint16_t)h);
		uint16_t back = fm_f32_to_bf16(f);

		if (is_nanb((uint16_t)h))
			bad += !(isnan(f) && is_nanb(back) && (back & 0x8000) == (h & 0x8000));
		else
			bad += back != h;
	}
	ok(bad == 0, "bf16 -> f32 -> bf16 round trip of all 65536 patterns (%u bad)", bad);
	for (uint32_t h = 0; h < 0x7f7f; h++) {
		float a = fm_bf16_to_f32((uint16_t)h), b = fm_bf16_to_f32((uint16_t)(h + 1));
		float mid = a + (b - a) / 2;  /* a + b would overflow near the top */
		uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;

		badmid += fm_f32_to_bf16(mid) != even;
		badmid += fm_f32_to_bf16(nextafterf(mid, 0)) != h;
		badmid += fm_f32_to_bf16(nextafterf(mid, INFINITY)) != h + 1;
	}
	ok(badmid == 0, "f32 -> bf16 rounds to nearest, ties to even, at every boundary (%u bad)", badmid);
	ok(fm_f32_to_bf16(1.0f + 0x1p-8f) == 0x3f80 && fm_f32_to_bf16(1.0f + 0x3p-8f) == 0x3f82 &&
	    fm_f32_to_bf16(3.4028235e38f) == 0x7f80 && fm_f32_to_bf16(-INFINITY) == 0xff80 &&
	    is_nanb(fm_f32_to_bf16(NAN)) && fm_f32_to_bf16(0x1p-133f) == 0x0001,
	    "bf16 ties, overflow, inf, nan, subnormal");
}

static void
test_names(void)
{
	struct fm_gguf_tensor t;
	struct fm_err err;
	float out[32];

	ok(strcmp(fm_ggml_type_name(FM_GGML_Q8_0), "q8_0") == 0 &&
	    strcmp(fm_ggml_type_name(FM_GGML_BF16), "bf16") == 0 &&
	    strcmp(fm_ggml_type_name(FM_GGML_Q6_K), "q6_K") == 0 &&
	    fm_ggml_type_name((enum fm_ggml_type)4) == NULL &&
	    fm_ggml_type_name((enum fm_ggml_type)31) == NULL &&
	    fm_ggml_type_name((enum fm_ggml_type)-1) == NULL, "ggml type names");
	ok(strcmp(fm_gguf_type_name(FM_GGUF_FLOAT64), "float64") == 0 &&
	    strcmp(fm_gguf_type_name(FM_GGUF_BOOL), "bool") == 0 &&
	    fm_gguf_type_name((enum fm_gguf_type)13) == NULL, "gguf type names");
	ok(fm_ggml_type_dequantizable(FM_GGML_F32) && fm_ggml_type_dequantizable(FM_GGML_F16) &&
	    fm_ggml_type_dequantizable(FM_GGML_BF16) && fm_ggml_type_dequantizable(FM_GGML_Q8_0) &&
	    !fm_ggml_type_dequantizable(FM_GGML_Q4_0) &&
	    !fm_ggml_type_dequantizable((enum fm_ggml_type)5), "dequantizable types");
	memset(&t, 0, sizeof t);
	t.type = FM_GGML_Q4_0;
	t.ne[0] = 32;
	t.n_rows = 1;
	t.data = q8_data;
	ok(fm_gguf_dequant_row(&t, 0, out, &err) == FM_EDATA && strstr(err.msg, "q4_0"),
	    "q4_0 not dequantised: %s", err.msg);
	ok(fm_str_eq((struct fm_str){ "abc", 3 }, "abc") && !fm_str_eq((struct fm_str){ "abc", 2 }, "abc") &&
	    !fm_str_eq((struct fm_str){ "abc", 3 }, "ab") && fm_str_eq((struct fm_str){ NULL, 0 }, ""),
	    "fm_str_eq");
}

static char *
path_in_top(const char *rel)
{
	const char *top = getenv("FM_TOP");
	static char path[4096];

	snprintf(path, sizeof path, "%s/%s", top && *top ? top : ".", rel);
	return path;
}

static void
test_open_errors(void)
{
	struct fm_err err = { 0 };
	char tmpl[] = "/tmp/test_gguf.XXXXXX";
	struct fm_gguf *g;
	int fd;

	g = fm_gguf_open("/nonexistent/x.gguf", &err);
	ok(!g && err.status == FM_EIO && strstr(err.msg, strerror(ENOENT)),
	    "missing file is FM_EIO: %s", err.msg);
	g = fm_gguf_open(path_in_top("models"), &err);
	ok(!g && err.status == FM_EIO && strstr(err.msg, strerror(EISDIR)),
	    "directory is FM_EIO: %s", err.msg);
	if ((fd = mkstemp(tmpl)) < 0) {
		ok(0, "mkstemp: %s", strerror(errno));
		return;
	}
	g = fm_gguf_open(tmpl, &err);
	ok(!g && err.status == FM_EDATA && strcmp(err.msg, "empty file") == 0,
	    "empty file is FM_EDATA: %s", err.msg);
	if (write(fd, "hello, this is not a model\n", 27) != 27)
		ok(0, "write");
	g = fm_gguf_open(tmpl, &err);
	ok(!g && err.status == FM_EDATA && strstr(err.msg, "bad magic"),
	    "garbage file is FM_EDATA: %s", err.msg);
	close(fd);
	unlink(tmpl);
}

static void
test_stories(void)
{
	struct fm_err err;
	struct fm_gguf *g = fm_gguf_open(path_in_top("models/stories260K.gguf"), &err);
	const struct fm_gguf_tensor *t;
	struct fm_str s;
	uint32_t dim;
	FILE *f;
	float *bin, row[64];
	size_t nbin = 28 / 4 + 512 * 64 + 5 * 64;
	int bad = 0;

	if (!ok(g != NULL, "stories260K.gguf opens: %s", g ? "ok" : err.msg))
		return;
	ok(g->version == 3 && g->n_tensors == 48 && walk(g), "stories260K.gguf: v3, 48 tensors, walks");
	ok(fm_gguf_get_str(g, "general.architecture", &s, &err) == FM_OK && fm_str_eq(s, "llama"),
	    "stories260K.gguf: general.architecture is llama");
	ok(fm_gguf_get_u32(g, "llama.embedding_length", &dim, &err) == FM_OK && dim == 64,
	    "stories260K.gguf: llama.embedding_length is 64");
	t = fm_gguf_tensor(g, "token_embd.weight");
	ok(t && t->n_dims == 2 && t->ne[0] == 64 && t->ne[1] == 512 && t->type == FM_GGML_F32,
	    "stories260K.gguf: token_embd.weight is f32 64x512");
	f = fopen(path_in_top("models/stories260K.bin"), "rb");
	bin = malloc(nbin * sizeof *bin);
	if (!ok(f && bin && fread(bin, sizeof *bin, nbin, f) == nbin, "stories260K.bin reads"))
		goto out;
	ok(t && fm_gguf_dequant_row(t, 0, row, &err) == FM_OK && row[0] == bin[7],
	    "token_embd.weight[0] equals the llama2.c token_embedding_table[0] (%g)", (double)bin[7]);
	for (uint64_t r = 0; t && r < 512; r++) {
		bad |= fm_gguf_dequant_row(t, r, row, &err) != FM_OK;
		bad |= memcmp(row, bin + 7 + r * 64, sizeof row) != 0;
	}
	ok(t && !bad, "token_embd.weight equals the whole llama2.c embedding table");
	t = fm_gguf_tensor(g, "blk.0.attn_norm.weight");
	ok(t && t->ne[0] == 64 && fm_gguf_dequant_row(t, 0, row, &err) == FM_OK &&
	    memcmp(row, bin + 7 + 512 * 64, sizeof row) == 0,
	    "blk.0.attn_norm.weight equals the llama2.c rms_att_weight[0]");
out:
	if (f)
		fclose(f);
	free(bin);
	fm_gguf_close(g);
}

static void
test_vocab(const char *file, const char *model, uint64_t n_tokens)
{
	struct fm_err err;
	struct fm_gguf *g = fm_gguf_open(path_in_top(file), &err);
	const struct fm_gguf_value *a;
	struct fm_str s;

	if (!ok(g != NULL, "%s opens: %s", file, g ? "ok" : err.msg))
		return;
	ok(g->n_tensors == 0 && walk(g), "%s: no tensors, walks", file);
	ok(fm_gguf_get_str(g, "tokenizer.ggml.model", &s, &err) == FM_OK && fm_str_eq(s, model),
	    "%s: tokenizer.ggml.model is %s", file, model);
	ok(fm_gguf_get_arr(g, "tokenizer.ggml.tokens", FM_GGUF_STRING, &a, &err) == FM_OK &&
	    a->v.arr.n == n_tokens, "%s: %llu tokens", file, (unsigned long long)n_tokens);
	fm_gguf_close(g);
}

int
main(void)
{
	make_q8();
	test_valid();
	test_hostile();
	test_truncation_and_corruption();
	test_half();
	test_bf16();
	test_names();
	test_open_errors();
	test_stories();
	test_vocab("models/ggml-vocab-llama-spm.gguf", "llama", 32000);
	test_vocab("models/ggml-vocab-bert-bge.gguf", "bert", 30522);
	return done_testing();
}
