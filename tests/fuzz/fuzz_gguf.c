/*
 * fuzz_gguf.c - libFuzzer harness for the GGUF reader.  Opens the input with
 * fm_gguf_open_memory(), then touches everything a caller could: every key
 * through each typed getter and every array element, every tensor's bytes,
 * and the first row of each tensor the reader can dequantise.  It aborts when
 * an accepted file breaks a promise of gguf.h (lookup finds another entry,
 * tensor data outside the buffer), so the fuzzer reports lies as well as
 * crashes.  Linked with replay.c it replays the corpus in `make check`.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint64_t sink;

static void
walk_value(const struct fm_gguf_value *v)
{
	uint64_t i;

	switch (v->type) {
	case FM_GGUF_STRING:
		if (v->v.s.len > 0)
			sink += (uint8_t)v->v.s.ptr[0] + (uint8_t)v->v.s.ptr[v->v.s.len - 1];
		break;
	case FM_GGUF_ARRAY:
		for (i = 0; i < v->v.arr.n; i++) {
			if (v->v.arr.elem == FM_GGUF_STRING || v->v.arr.elem == FM_GGUF_ARRAY)
				walk_value(&v->v.arr.items[i]);
			else
				sink += fm_gguf_arr_u64(v, i) + (uint64_t)fm_gguf_arr_i64(v, i) +
				    (fm_gguf_arr_f64(v, i) > 0);
		}
		break;
	default:
		sink += v->v.u;
		break;
	}
}

/* A NUL-terminated copy of s in buf, or false when s holds a NUL or is too long. */
static bool
cstr(struct fm_str s, char *buf, size_t cap)
{
	if (s.len >= cap || (s.len > 0 && memchr(s.ptr, '\0', s.len) != NULL))
		return false;
	if (s.len > 0)
		memcpy(buf, s.ptr, s.len);
	buf[s.len] = '\0';
	return true;
}

static void
walk_kv(const struct fm_gguf *g, const struct fm_gguf_kv *kv)
{
	const struct fm_gguf_value *a;
	struct fm_err err;
	struct fm_str s;
	char key[512];
	uint32_t u32;
	uint64_t u64;
	int64_t i64;
	float f;
	bool b;

	walk_value(&kv->val);
	if (!cstr(kv->key, key, sizeof key))
		return;
	/* Keys are unique, so lookup must find this very entry. */
	if (fm_gguf_get(g, key) != &kv->val)
		abort();
	sink += fm_gguf_get_u32(g, key, &u32, &err) + fm_gguf_get_u64(g, key, &u64, &err) +
	    fm_gguf_get_i64(g, key, &i64, &err) + fm_gguf_get_f32(g, key, &f, &err) +
	    fm_gguf_get_bool(g, key, &b, &err) + fm_gguf_get_str(g, key, &s, &err) +
	    fm_gguf_get_arr(g, key,
	    kv->val.type == FM_GGUF_ARRAY ? kv->val.v.arr.elem : FM_GGUF_STRING, &a, &err);
}

static void
walk_tensor(const struct fm_gguf *g, const struct fm_gguf_tensor *t)
{
	struct fm_err err;
	char name[512];
	float *row;

	if (t->data < g->map || t->nbytes > g->size ||
	    (uint64_t)(t->data - g->map) > g->size - t->nbytes ||
	    t->row_bytes * t->n_rows != t->nbytes || t->n_rows == 0)
		abort();
	if (t->nbytes > 0)
		sink += t->data[0] + t->data[t->nbytes - 1];
	if (cstr(t->name, name, sizeof name) && fm_gguf_tensor(g, name) != t)
		abort();
	if (!fm_ggml_type_dequantizable(t->type))
		return;
	if ((row = malloc(t->ne[0] * sizeof *row)) == NULL)
		return;
	if (fm_gguf_dequant_row(t, 0, row, &err) != FM_OK)
		abort();
	sink += row[t->ne[0] - 1] == row[t->ne[0] - 1];
	free(row);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fm_err err;
	struct fm_gguf *g;
	uint64_t i;

	if ((g = fm_gguf_open_memory(data, size, &err)) == NULL) {
		if (err.status != FM_EDATA || err.msg[0] == '\0')
			abort();
		return 0;
	}
	for (i = 0; i < g->n_kv; i++)
		walk_kv(g, &g->kv[i]);
	for (i = 0; i < g->n_tensors; i++)
		walk_tensor(g, &g->tensors[i]);
	fm_gguf_close(g);
	return 0;
}
