/*
 * gguf.c - the hardened GGUF reader declared in gguf.h.
 *
 * The file is untrusted.  Every read goes through a cursor that checks the
 * bytes left before it touches them; every count is compared with the bytes
 * its items must at least occupy before anything is allocated for it, so
 * memory stays within a small multiple of the file size; every sum and
 * product of numbers taken from the file is checked for uint64 overflow
 * before it is formed.  Array nesting is followed by recursion that stops at
 * FM_GGUF_MAX_DEPTH.  Decoded array elements live in an arena, so a file of
 * a million tiny arrays costs a few large allocations and close frees them
 * in one walk.
 */
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define NITEMS(a) (sizeof(a) / sizeof((a)[0]))

#define HEADER_BYTES 24       /* magic, version, tensor count, kv count */
#define DEFAULT_ALIGNMENT 32  /* when general.alignment is absent */

/*
 * The fewest bytes one item can occupy in a file.  A count larger than the
 * bytes left divided by these cannot be honest, and refusing it before
 * allocating keeps every allocation proportional to the file size.
 */
#define MIN_KV_BYTES 13      /* key length 8, value type 4, a 1-byte value */
#define MIN_STR_BYTES 8      /* the length alone */
#define MIN_ARR_BYTES 12     /* element type 4, count 8 */
#define MIN_TENSOR_BYTES 32  /* name length 8, n_dims 4, one dim 8, type 4, offset 8 */

#define ARENA_BLOCK (64 * 1024)
#define SHOW_MAX 64          /* bytes of a name quoted in a message */

struct ggml_traits {
	const char *name;
	uint32_t blck;   /* elements per block */
	uint32_t size;   /* bytes per block */
	bool dequant;    /* fm_gguf_dequant_row() converts it */
};

/* Block sizes as ggml's type traits give them; the gaps are types we refuse. */
static const struct ggml_traits ggml_types[] = {
	[FM_GGML_F32]  = { "f32", 1, 4, true },
	[FM_GGML_F16]  = { "f16", 1, 2, true },
	[FM_GGML_Q4_0] = { "q4_0", 32, 18, false },
	[FM_GGML_Q4_1] = { "q4_1", 32, 20, false },
	[FM_GGML_Q5_0] = { "q5_0", 32, 22, false },
	[FM_GGML_Q5_1] = { "q5_1", 32, 24, false },
	[FM_GGML_Q8_0] = { "q8_0", 32, 34, true },
	[FM_GGML_Q8_1] = { "q8_1", 32, 36, false },
	[FM_GGML_Q2_K] = { "q2_K", 256, 84, false },
	[FM_GGML_Q3_K] = { "q3_K", 256, 110, false },
	[FM_GGML_Q4_K] = { "q4_K", 256, 144, false },
	[FM_GGML_Q5_K] = { "q5_K", 256, 176, false },
	[FM_GGML_Q6_K] = { "q6_K", 256, 210, false },
	[FM_GGML_Q8_K] = { "q8_K", 256, 292, false },
	[FM_GGML_I8]   = { "i8", 1, 1, false },
	[FM_GGML_I16]  = { "i16", 1, 2, false },
	[FM_GGML_I32]  = { "i32", 1, 4, false },
	[FM_GGML_I64]  = { "i64", 1, 8, false },
	[FM_GGML_F64]  = { "f64", 1, 8, false },
	[FM_GGML_BF16] = { "bf16", 1, 2, true },
};

static const char *const gguf_type_names[] = {
	"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
	"bool", "string", "array", "uint64", "int64", "float64",
};

/* Bytes of one value of each metadata type; 0 for the variable-size ones. */
static const uint8_t gguf_type_size[] = {
	1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8,
};

struct arena_block {
	struct arena_block *next;
	size_t cap, used;
	max_align_t mem[];
};

/* The allocation behind a struct fm_gguf: the public part first. */
struct reader {
	struct fm_gguf g;
	void *map;           /* our own mapping, or NULL for a caller's buffer */
	size_t map_len;
	struct arena_block *arena;
	const struct fm_str **kv_sorted;      /* keys in byte order, for lookup */
	const struct fm_str **tensor_sorted;  /* tensor names likewise */
};

struct parser {
	struct reader *r;
	const uint8_t *buf;
	uint64_t size, pos;
	struct fm_err *err;
	char where[160];  /* "key 17 (tokenizer.ggml.tokens)": what is being read */
};

static uint16_t
le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t
le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	    (uint32_t)p[3] << 24;
}

static uint64_t
le64(const uint8_t *p)
{
	return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static float
bits_to_f32(uint32_t u)
{
	float f;

	memcpy(&f, &u, sizeof f);
	return f;
}

static uint32_t
f32_to_bits(float f)
{
	uint32_t u;

	memcpy(&u, &f, sizeof u);
	return u;
}

static double
bits_to_f64(uint64_t u)
{
	double d;

	memcpy(&d, &u, sizeof d);
	return d;
}

/*
 * Copies an untrusted name into buf (at least SHOW_MAX + 4 bytes) for a
 * message: printable ASCII kept, anything else shown as '?', long names cut.
 */
static const char *
show(struct fm_str s, char *buf)
{
	uint64_t n = s.len < SHOW_MAX ? s.len : SHOW_MAX;
	uint64_t i;

	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s.ptr[i];
		buf[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
	}
	if (s.len > SHOW_MAX) {
		memcpy(buf + i, "...", 3);
		i += 3;
	}
	buf[i] = '\0';
	return buf;
}

static void *
arena_alloc(struct reader *r, size_t n)
{
	struct arena_block *b = r->arena;
	size_t cap;
	void *p;

	n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
	if (b == NULL || b->cap - b->used < n) {
		cap = n > ARENA_BLOCK ? n : ARENA_BLOCK;
		if (cap > SIZE_MAX - sizeof *b)
			return NULL;
		if ((b = malloc(sizeof *b + cap)) == NULL)
			return NULL;
		b->cap = cap;
		b->used = 0;
		b->next = r->arena;
		r->arena = b;
	}
	p = (char *)b->mem + b->used;
	b->used += n;
	return p;
}

static int
truncated(struct parser *ps)
{
	return fm_err_set(ps->err, FM_EDATA, "truncated in %s", ps->where);
}

static int
nomem(struct parser *ps)
{
	return fm_err_set(ps->err, FM_EIO, "out of memory reading %s", ps->where);
}

/* Takes the next n bytes, or fails with "truncated in ...". */
static int
take(struct parser *ps, uint64_t n, const uint8_t **p)
{
	*p = NULL;
	if (n > ps->size - ps->pos)
		return truncated(ps);
	*p = ps->buf + ps->pos;
	ps->pos += n;
	return FM_OK;
}

static int
read_u32(struct parser *ps, uint32_t *v)
{
	const uint8_t *p;

	if (take(ps, 4, &p) != FM_OK)
		return FM_EDATA;
	*v = le32(p);
	return FM_OK;
}

static int
read_u64(struct parser *ps, uint64_t *v)
{
	const uint8_t *p;

	if (take(ps, 8, &p) != FM_OK)
		return FM_EDATA;
	*v = le64(p);
	return FM_OK;
}

/*
 * Checks that n items of at least min bytes each fit in the bytes left.  A
 * count that would not fit even in the whole file is corrupt; one that only
 * runs past this file's end is reported as truncation.
 */
static int
check_count(struct parser *ps, uint64_t n, uint64_t min, const char *what)
{
	if (n <= (ps->size - ps->pos) / min)
		return FM_OK;
	if (n <= ps->size / min)
		return truncated(ps);
	return fm_err_set(ps->err, FM_EDATA,
	    "%s: %s %" PRIu64 " too large for a file of %" PRIu64 " bytes",
	    ps->where, what, n, ps->size);
}

static int
read_str(struct parser *ps, struct fm_str *s)
{
	const uint8_t *p;
	uint64_t len;

	if (read_u64(ps, &len) != FM_OK ||
	    check_count(ps, len, 1, "string length") != FM_OK ||
	    take(ps, len, &p) != FM_OK)
		return FM_EDATA;
	s->ptr = (const char *)p;
	s->len = len;
	return FM_OK;
}

/* Decodes one fixed-size value of type t (gguf_type_size[t] != 0) at p. */
static void
decode_scalar(enum fm_gguf_type t, const uint8_t *p, struct fm_gguf_value *out)
{
	out->type = t;
	switch (t) {
	case FM_GGUF_UINT8:
	case FM_GGUF_BOOL:
		out->v.u = p[0];
		break;
	case FM_GGUF_INT8:
		out->v.i = (int8_t)p[0];
		break;
	case FM_GGUF_UINT16:
		out->v.u = le16(p);
		break;
	case FM_GGUF_INT16:
		out->v.i = (int16_t)le16(p);
		break;
	case FM_GGUF_UINT32:
		out->v.u = le32(p);
		break;
	case FM_GGUF_INT32:
		out->v.i = (int32_t)le32(p);
		break;
	case FM_GGUF_UINT64:
		out->v.u = le64(p);
		break;
	case FM_GGUF_INT64:
		out->v.i = (int64_t)le64(p);
		break;
	case FM_GGUF_FLOAT32:
		out->v.f = bits_to_f32(le32(p));
		break;
	case FM_GGUF_FLOAT64:
		out->v.f = bits_to_f64(le64(p));
		break;
	default:
		out->v.u = 0;
		break;
	}
}

static bool
is_known_type(uint32_t t)
{
	return t < NITEMS(gguf_type_names);
}

static int parse_array(struct parser *, unsigned, struct fm_gguf_value *);

/* One value of type t, inside depth enclosing arrays. */
static int
parse_value(struct parser *ps, uint32_t t, unsigned depth, struct fm_gguf_value *out)
{
	const uint8_t *p;

	if (!is_known_type(t))
		return fm_err_set(ps->err, FM_EDATA, "%s: unknown value type %" PRIu32,
		    ps->where, t);
	out->type = (enum fm_gguf_type)t;
	if (t == FM_GGUF_STRING)
		return read_str(ps, &out->v.s);
	if (t == FM_GGUF_ARRAY)
		return parse_array(ps, depth, out);
	if (take(ps, gguf_type_size[t], &p) != FM_OK)
		return FM_EDATA;
	/* The specification calls any other bool byte invalid. */
	if (t == FM_GGUF_BOOL && p[0] > 1)
		return fm_err_set(ps->err, FM_EDATA, "%s: bool value %u is neither 0 nor 1",
		    ps->where, p[0]);
	decode_scalar((enum fm_gguf_type)t, p, out);
	return FM_OK;
}

/* An array (element type, count, elements) nested in depth enclosing arrays. */
static int
parse_array(struct parser *ps, unsigned depth, struct fm_gguf_value *out)
{
	uint32_t elem;
	uint64_t n, i, size;
	const uint8_t *p;
	struct fm_gguf_value *items;

	if (depth >= FM_GGUF_MAX_DEPTH)
		return fm_err_set(ps->err, FM_EDATA, "%s: arrays nested deeper than %d",
		    ps->where, FM_GGUF_MAX_DEPTH);
	if (read_u32(ps, &elem) != FM_OK || read_u64(ps, &n) != FM_OK)
		return FM_EDATA;
	if (!is_known_type(elem))
		return fm_err_set(ps->err, FM_EDATA,
		    "%s: unknown array element type %" PRIu32, ps->where, elem);
	out->v.arr.elem = (enum fm_gguf_type)elem;
	out->v.arr.n = n;
	out->v.arr.raw = NULL;
	out->v.arr.items = NULL;

	if ((size = gguf_type_size[elem]) != 0) {
		if (check_count(ps, n, size, "array count") != FM_OK ||
		    take(ps, n * size, &p) != FM_OK)
			return FM_EDATA;
		if (elem == FM_GGUF_BOOL) {
			for (i = 0; i < n; i++)
				if (p[i] > 1)
					return fm_err_set(ps->err, FM_EDATA,
					    "%s: element %" PRIu64 ": bool value %u is neither 0 nor 1",
					    ps->where, i, p[i]);
		}
		out->v.arr.raw = p;
		return FM_OK;
	}

	if (check_count(ps, n, elem == FM_GGUF_STRING ? MIN_STR_BYTES : MIN_ARR_BYTES,
	    "array count") != FM_OK)
		return FM_EDATA;
	if (n == 0)
		return FM_OK;
	if (n > SIZE_MAX / sizeof *items ||
	    (items = arena_alloc(ps->r, (size_t)n * sizeof *items)) == NULL)
		return nomem(ps);
	out->v.arr.items = items;
	for (i = 0; i < n; i++) {
		items[i].type = (enum fm_gguf_type)elem;
		if (elem == FM_GGUF_STRING) {
			if (read_str(ps, &items[i].v.s) != FM_OK)
				return FM_EDATA;
		} else if (parse_array(ps, depth + 1, &items[i]) != FM_OK)
			return FM_EDATA;
	}
	return FM_OK;
}

/* Byte order of names; shorter first when one is a prefix of the other. */
static int
str_cmp(const struct fm_str *a, const struct fm_str *b)
{
	uint64_t n = a->len < b->len ? a->len : b->len;
	int c = n ? memcmp(a->ptr, b->ptr, (size_t)n) : 0;

	if (c != 0)
		return c;
	return a->len < b->len ? -1 : a->len > b->len;
}

static int
str_ptr_cmp(const void *a, const void *b)
{
	return str_cmp(*(const struct fm_str *const *)a, *(const struct fm_str *const *)b);
}

/*
 * Sorts pointers to the n names found at base + i*stride and returns the
 * array, or NULL when out of memory; *dup is the first name seen twice.
 */
static const struct fm_str **
sort_names(const void *base, size_t stride, uint64_t n, const struct fm_str **dup)
{
	const struct fm_str **v;
	uint64_t i;

	*dup = NULL;
	if (n > SIZE_MAX / sizeof *v || (v = malloc((size_t)(n ? n : 1) * sizeof *v)) == NULL)
		return NULL;
	for (i = 0; i < n; i++)
		v[i] = (const struct fm_str *)((const char *)base + i * stride);
	qsort(v, (size_t)n, sizeof *v, str_ptr_cmp);
	for (i = 1; i < n && *dup == NULL; i++)
		if (str_cmp(v[i - 1], v[i]) == 0)
			*dup = v[i];
	return v;
}

static const struct fm_str *
find_name(const struct fm_str **sorted, uint64_t n, const char *name)
{
	struct fm_str key = { name, strlen(name) };
	const struct fm_str *kp = &key, **hit;

	if (sorted == NULL || n == 0)
		return NULL;
	hit = bsearch(&kp, sorted, (size_t)n, sizeof *sorted, str_ptr_cmp);
	return hit ? *hit : NULL;
}

static int
parse_header(struct parser *ps)
{
	struct fm_gguf *g = &ps->r->g;
	const uint8_t *p;
	uint32_t version, swapped;

	snprintf(ps->where, sizeof ps->where, "header");
	if (ps->size == 0)
		return fm_err_set(ps->err, FM_EDATA, "empty file");
	if (ps->size < 4) {
		if (memcmp(ps->buf, "GGUF", (size_t)ps->size) == 0)
			return truncated(ps);
		return fm_err_set(ps->err, FM_EDATA, "bad magic (not a GGUF file)");
	}
	/* gguf-py always writes the magic little-endian, but be helpful. */
	if (memcmp(ps->buf, "FUGG", 4) == 0)
		return fm_err_set(ps->err, FM_EDATA, "big-endian GGUF not supported");
	if (memcmp(ps->buf, "GGUF", 4) != 0)
		return fm_err_set(ps->err, FM_EDATA, "bad magic (not a GGUF file)");
	ps->pos = 4;
	if (read_u32(ps, &version) != FM_OK)
		return FM_EDATA;
	swapped = version >> 24 | (version >> 8 & 0xff00) | (version << 8 & 0xff0000) |
	    version << 24;
	if (version != 2 && version != 3 && swapped >= 1 && swapped <= 3)
		return fm_err_set(ps->err, FM_EDATA, "big-endian GGUF not supported");
	if (version != 2 && version != 3)
		return fm_err_set(ps->err, FM_EDATA, "unsupported GGUF version %" PRIu32,
		    version);
	g->version = version;
	if (take(ps, 16, &p) != FM_OK)
		return FM_EDATA;
	g->n_tensors = le64(p);
	g->n_kv = le64(p + 8);
	return FM_OK;
}

static int
parse_kvs(struct parser *ps)
{
	struct fm_gguf *g = &ps->r->g;
	const struct fm_str *dup;
	char name[SHOW_MAX + 4];
	uint64_t i;
	uint32_t t;

	snprintf(ps->where, sizeof ps->where, "metadata");
	if (check_count(ps, g->n_kv, MIN_KV_BYTES, "key count") != FM_OK)
		return FM_EDATA;
	if (g->n_kv > 0 && (g->n_kv > SIZE_MAX / sizeof *g->kv ||
	    (g->kv = calloc((size_t)g->n_kv, sizeof *g->kv)) == NULL))
		return nomem(ps);
	for (i = 0; i < g->n_kv; i++) {
		struct fm_gguf_kv *kv = &g->kv[i];

		snprintf(ps->where, sizeof ps->where, "key %" PRIu64, i);
		if (read_str(ps, &kv->key) != FM_OK)
			return FM_EDATA;
		snprintf(ps->where, sizeof ps->where, "key %" PRIu64 " (%s)", i,
		    show(kv->key, name));
		if (read_u32(ps, &t) != FM_OK || parse_value(ps, t, 0, &kv->val) != FM_OK)
			return FM_EDATA;
	}
	ps->r->kv_sorted = sort_names(g->kv, sizeof *g->kv, g->n_kv, &dup);
	if (ps->r->kv_sorted == NULL)
		return nomem(ps);
	if (dup != NULL)
		return fm_err_set(ps->err, FM_EDATA, "duplicate key %s", show(*dup, name));
	return FM_OK;
}

static int
parse_alignment(struct parser *ps)
{
	struct fm_gguf *g = &ps->r->g;
	const struct fm_gguf_value *v = fm_gguf_get(g, "general.alignment");
	uint64_t a;

	g->alignment = DEFAULT_ALIGNMENT;
	if (v == NULL)
		return FM_OK;
	switch (v->type) {
	case FM_GGUF_UINT8: case FM_GGUF_UINT16: case FM_GGUF_UINT32: case FM_GGUF_UINT64:
		a = v->v.u;
		break;
	case FM_GGUF_INT8: case FM_GGUF_INT16: case FM_GGUF_INT32: case FM_GGUF_INT64:
		if (v->v.i < 0)
			return fm_err_set(ps->err, FM_EDATA,
			    "general.alignment is %" PRId64 ", not a power of two", v->v.i);
		a = (uint64_t)v->v.i;
		break;
	default:
		return fm_err_set(ps->err, FM_EDATA,
		    "general.alignment has type %s, expected uint32", gguf_type_names[v->type]);
	}
	if (a == 0 || (a & (a - 1)) != 0)
		return fm_err_set(ps->err, FM_EDATA,
		    "general.alignment is %" PRIu64 ", not a power of two", a);
	/* The specification types it uint32; a larger one is no honest file. */
	if (a > UINT32_MAX)
		return fm_err_set(ps->err, FM_EDATA,
		    "general.alignment %" PRIu64 " is too large", a);
	g->alignment = a;
	return FM_OK;
}

/* Shape, type and size of one tensor, before its offset is known to be sound. */
static int
check_shape(struct parser *ps, struct fm_gguf_tensor *t, uint32_t type, const char *name)
{
	const struct ggml_traits *tr;
	uint64_t n, blocks;
	uint32_t d;

	if (type >= NITEMS(ggml_types) || ggml_types[type].name == NULL)
		return fm_err_set(ps->err, FM_EDATA, "tensor %s: unknown type %" PRIu32,
		    name, type);
	t->type = (enum fm_ggml_type)type;
	tr = &ggml_types[type];
	/*
	 * ggml counts in int64_t; and an empty dimension would let ne[0] or the
	 * row count be anything at all, which callers then allocate or loop on.
	 */
	n = 1;
	for (d = 0; d < FM_GGUF_MAX_DIMS; d++) {
		if (t->ne[d] == 0)
			return fm_err_set(ps->err, FM_EDATA, "tensor %s: dimension %" PRIu32
			    " is 0", name, d);
		if (t->ne[d] > INT64_MAX / n)
			return fm_err_set(ps->err, FM_EDATA,
			    "tensor %s: element count overflows", name);
		n *= t->ne[d];
	}
	if (t->ne[0] % tr->blck != 0)
		return fm_err_set(ps->err, FM_EDATA, "tensor %s: row length %" PRIu64
		    " is not a multiple of the %s block size %" PRIu32,
		    name, t->ne[0], tr->name, tr->blck);
	blocks = t->ne[0] / tr->blck;
	if (blocks > UINT64_MAX / tr->size)
		return fm_err_set(ps->err, FM_EDATA, "tensor %s: byte size overflows", name);
	t->row_bytes = blocks * tr->size;
	t->n_rows = t->ne[1] * t->ne[2] * t->ne[3];  /* bounded by n above */
	if (t->n_rows > UINT64_MAX / t->row_bytes)
		return fm_err_set(ps->err, FM_EDATA, "tensor %s: byte size overflows", name);
	t->nbytes = t->row_bytes * t->n_rows;
	return FM_OK;
}

static int
parse_tensor_infos(struct parser *ps)
{
	struct fm_gguf *g = &ps->r->g;
	char name[SHOW_MAX + 4];
	uint64_t i;
	uint32_t d, type;

	snprintf(ps->where, sizeof ps->where, "tensor infos");
	if (check_count(ps, g->n_tensors, MIN_TENSOR_BYTES, "tensor count") != FM_OK)
		return FM_EDATA;
	if (g->n_tensors > 0 && (g->n_tensors > SIZE_MAX / sizeof *g->tensors ||
	    (g->tensors = calloc((size_t)g->n_tensors, sizeof *g->tensors)) == NULL))
		return nomem(ps);
	for (i = 0; i < g->n_tensors; i++) {
		struct fm_gguf_tensor *t = &g->tensors[i];

		snprintf(ps->where, sizeof ps->where, "tensor info %" PRIu64, i);
		if (read_str(ps, &t->name) != FM_OK)
			return FM_EDATA;
		show(t->name, name);
		snprintf(ps->where, sizeof ps->where, "tensor info %" PRIu64 " (%s)", i, name);
		if (read_u32(ps, &t->n_dims) != FM_OK)
			return FM_EDATA;
		if (t->n_dims < 1 || t->n_dims > FM_GGUF_MAX_DIMS)
			return fm_err_set(ps->err, FM_EDATA, "tensor %s: n_dims %" PRIu32
			    " not in 1..%d", name, t->n_dims, FM_GGUF_MAX_DIMS);
		for (d = 0; d < FM_GGUF_MAX_DIMS; d++) {
			t->ne[d] = 1;
			if (d < t->n_dims && read_u64(ps, &t->ne[d]) != FM_OK)
				return FM_EDATA;
		}
		if (read_u32(ps, &type) != FM_OK || read_u64(ps, &t->offset) != FM_OK)
			return FM_EDATA;
		if (check_shape(ps, t, type, name) != FM_OK)
			return FM_EDATA;
	}
	return FM_OK;
}

/* The data section begins at the aligned end of the tensor infos. */
static int
place_tensors(struct parser *ps)
{
	struct fm_gguf *g = &ps->r->g;
	const struct fm_str *dup;
	char name[SHOW_MAX + 4];
	uint64_t pad, i, left;

	pad = (g->alignment - ps->pos % g->alignment) % g->alignment;
	if (pad > ps->size - ps->pos) {
		/* Files without tensors often end right after their metadata. */
		if (g->n_tensors == 0) {
			g->data_offset = ps->size;
			return FM_OK;
		}
		snprintf(ps->where, sizeof ps->where, "padding before the tensor data");
		return truncated(ps);
	}
	g->data_offset = ps->pos + pad;
	left = ps->size - g->data_offset;
	for (i = 0; i < g->n_tensors; i++) {
		struct fm_gguf_tensor *t = &g->tensors[i];

		show(t->name, name);
		if (t->offset % g->alignment != 0)
			return fm_err_set(ps->err, FM_EDATA, "tensor %s: offset %" PRIu64
			    " is not a multiple of the alignment %" PRIu64,
			    name, t->offset, g->alignment);
		if (t->offset > left || t->nbytes > left - t->offset)
			return fm_err_set(ps->err, FM_EDATA,
			    "tensor %s: data past end of file", name);
		t->data = ps->buf + g->data_offset + t->offset;
	}
	ps->r->tensor_sorted = sort_names(g->tensors, sizeof *g->tensors, g->n_tensors, &dup);
	if (ps->r->tensor_sorted == NULL)
		return nomem(ps);
	if (dup != NULL)
		return fm_err_set(ps->err, FM_EDATA, "duplicate tensor %s", show(*dup, name));
	return FM_OK;
}

static struct fm_gguf *
open_buffer(const uint8_t *buf, uint64_t size, void *map, struct fm_err *err)
{
	struct reader *r;
	struct parser ps;

	if ((r = calloc(1, sizeof *r)) == NULL) {
		fm_err_set(err, FM_EIO, "out of memory");
		return NULL;
	}
	r->g.map = buf;
	r->g.size = size;
	r->g.alignment = DEFAULT_ALIGNMENT;
	memset(&ps, 0, sizeof ps);
	ps.r = r;
	ps.buf = buf;
	ps.size = size;
	ps.err = err;
	if (parse_header(&ps) != FM_OK || parse_kvs(&ps) != FM_OK ||
	    parse_alignment(&ps) != FM_OK || parse_tensor_infos(&ps) != FM_OK ||
	    place_tensors(&ps) != FM_OK) {
		fm_gguf_close(&r->g);
		return NULL;
	}
	r->map = map;
	r->map_len = (size_t)size;
	return &r->g;
}

struct fm_gguf *
fm_gguf_open_memory(const void *buf, size_t size, struct fm_err *err)
{
	if (buf == NULL && size != 0) {
		fm_err_set(err, FM_EIO, "no buffer");
		return NULL;
	}
	return open_buffer(buf, size, NULL, err);
}

/*
 * Maps the file read-only.  Another process truncating the file while it is
 * mapped would still raise SIGBUS; no reader of a mapping can prevent that.
 */
struct fm_gguf *
fm_gguf_open(const char *path, struct fm_err *err)
{
	struct stat st;
	struct fm_gguf *g;
	void *map;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
		fm_err_errno(err, FM_EIO, errno, "cannot open");
		return NULL;
	}
	if (fstat(fd, &st) != 0) {
		fm_err_errno(err, FM_EIO, errno, "cannot stat");
		close(fd);
		return NULL;
	}
	if (S_ISDIR(st.st_mode) || !S_ISREG(st.st_mode)) {
		if (S_ISDIR(st.st_mode))
			fm_err_errno(err, FM_EIO, EISDIR, "cannot read");
		else
			fm_err_set(err, FM_EIO, "not a regular file");
		close(fd);
		return NULL;
	}
	if (st.st_size == 0) {
		fm_err_set(err, FM_EDATA, "empty file");
		close(fd);
		return NULL;
	}
	if ((uint64_t)st.st_size > SIZE_MAX) {
		fm_err_set(err, FM_EIO, "file too large to map");
		close(fd);
		return NULL;
	}
	map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (map == MAP_FAILED) {
		fm_err_errno(err, FM_EIO, errno, "cannot map");
		close(fd);
		return NULL;
	}
	close(fd);
	if ((g = open_buffer(map, (uint64_t)st.st_size, map, err)) == NULL)
		munmap(map, (size_t)st.st_size);
	return g;
}

void
fm_gguf_close(struct fm_gguf *g)
{
	struct reader *r = (struct reader *)g;
	struct arena_block *b, *next;

	if (r == NULL)
		return;
	for (b = r->arena; b != NULL; b = next) {
		next = b->next;
		free(b);
	}
	free(r->kv_sorted);
	free(r->tensor_sorted);
	free(r->g.kv);
	free(r->g.tensors);
	if (r->map != NULL)
		munmap(r->map, r->map_len);
	free(r);
}

bool
fm_str_eq(struct fm_str s, const char *cstr)
{
	size_t n = strlen(cstr);

	return s.len == n && (n == 0 || memcmp(s.ptr, cstr, n) == 0);
}

const struct fm_gguf_value *
fm_gguf_get(const struct fm_gguf *g, const char *key)
{
	const struct reader *r = (const struct reader *)g;
	const struct fm_str *k = find_name(r->kv_sorted, g->n_kv, key);

	/* The key is the first member of struct fm_gguf_kv. */
	return k ? &((const struct fm_gguf_kv *)k)->val : NULL;
}

const struct fm_gguf_tensor *
fm_gguf_tensor(const struct fm_gguf *g, const char *name)
{
	const struct reader *r = (const struct reader *)g;

	/* The name is the first member of struct fm_gguf_tensor. */
	return (const struct fm_gguf_tensor *)find_name(r->tensor_sorted, g->n_tensors, name);
}

const char *
fm_ggml_type_name(enum fm_ggml_type t)
{
	return (unsigned)t < NITEMS(ggml_types) ? ggml_types[t].name : NULL;
}

const char *
fm_gguf_type_name(enum fm_gguf_type t)
{
	return (unsigned)t < NITEMS(gguf_type_names) ? gguf_type_names[t] : NULL;
}

bool
fm_ggml_type_dequantizable(enum fm_ggml_type t)
{
	return (unsigned)t < NITEMS(ggml_types) && ggml_types[t].dequant;
}

static const char *
type_name_or(enum fm_gguf_type t)
{
	const char *s = fm_gguf_type_name(t);

	return s ? s : "unknown";
}

static int
lookup(const struct fm_gguf *g, const char *key, const struct fm_gguf_value **v,
    struct fm_err *err)
{
	if ((*v = fm_gguf_get(g, key)) == NULL)
		return fm_err_set(err, FM_EDATA, "missing key %s", key);
	return FM_OK;
}

/* An integer value as sign and magnitude; false for other types. */
static bool
int_value(const struct fm_gguf_value *v, bool *neg, uint64_t *mag)
{
	switch (v->type) {
	case FM_GGUF_UINT8: case FM_GGUF_UINT16: case FM_GGUF_UINT32: case FM_GGUF_UINT64:
		*neg = false;
		*mag = v->v.u;
		return true;
	case FM_GGUF_INT8: case FM_GGUF_INT16: case FM_GGUF_INT32: case FM_GGUF_INT64:
		*neg = v->v.i < 0;
		*mag = *neg ? 0 - (uint64_t)v->v.i : (uint64_t)v->v.i;
		return true;
	default:
		return false;
	}
}

static int
get_int(const struct fm_gguf *g, const char *key, bool *neg, uint64_t *mag,
    struct fm_err *err)
{
	const struct fm_gguf_value *v;

	if (lookup(g, key, &v, err) != FM_OK)
		return FM_EDATA;
	if (!int_value(v, neg, mag))
		return fm_err_set(err, FM_EDATA, "key %s has type %s, expected an integer",
		    key, type_name_or(v->type));
	return FM_OK;
}

static int
no_fit(const char *key, bool neg, uint64_t mag, const char *dest, struct fm_err *err)
{
	return fm_err_set(err, FM_EDATA, "key %s: value %s%" PRIu64 " does not fit %s",
	    key, neg ? "-" : "", mag, dest);
}

int
fm_gguf_get_u32(const struct fm_gguf *g, const char *key, uint32_t *out, struct fm_err *err)
{
	bool neg;
	uint64_t mag;

	if (get_int(g, key, &neg, &mag, err) != FM_OK)
		return FM_EDATA;
	if (neg || mag > UINT32_MAX)
		return no_fit(key, neg, mag, "uint32", err);
	*out = (uint32_t)mag;
	return FM_OK;
}

int
fm_gguf_get_u64(const struct fm_gguf *g, const char *key, uint64_t *out, struct fm_err *err)
{
	bool neg;
	uint64_t mag;

	if (get_int(g, key, &neg, &mag, err) != FM_OK)
		return FM_EDATA;
	if (neg)
		return no_fit(key, neg, mag, "uint64", err);
	*out = mag;
	return FM_OK;
}

int
fm_gguf_get_i64(const struct fm_gguf *g, const char *key, int64_t *out, struct fm_err *err)
{
	bool neg;
	uint64_t mag;

	if (get_int(g, key, &neg, &mag, err) != FM_OK)
		return FM_EDATA;
	if (neg ? mag > (uint64_t)INT64_MAX + 1 : mag > INT64_MAX)
		return no_fit(key, neg, mag, "int64", err);
	*out = neg ? (int64_t)(0 - mag) : (int64_t)mag;
	return FM_OK;
}

int
fm_gguf_get_f32(const struct fm_gguf *g, const char *key, float *out, struct fm_err *err)
{
	const struct fm_gguf_value *v;

	if (lookup(g, key, &v, err) != FM_OK)
		return FM_EDATA;
	if (v->type != FM_GGUF_FLOAT32 && v->type != FM_GGUF_FLOAT64)
		return fm_err_set(err, FM_EDATA, "key %s has type %s, expected a float",
		    key, type_name_or(v->type));
	*out = (float)v->v.f;
	return FM_OK;
}

int
fm_gguf_get_bool(const struct fm_gguf *g, const char *key, bool *out, struct fm_err *err)
{
	const struct fm_gguf_value *v;

	if (lookup(g, key, &v, err) != FM_OK)
		return FM_EDATA;
	if (v->type != FM_GGUF_BOOL)
		return fm_err_set(err, FM_EDATA, "key %s has type %s, expected bool",
		    key, type_name_or(v->type));
	*out = v->v.u != 0;
	return FM_OK;
}

int
fm_gguf_get_str(const struct fm_gguf *g, const char *key, struct fm_str *out, struct fm_err *err)
{
	const struct fm_gguf_value *v;

	if (lookup(g, key, &v, err) != FM_OK)
		return FM_EDATA;
	if (v->type != FM_GGUF_STRING)
		return fm_err_set(err, FM_EDATA, "key %s has type %s, expected string",
		    key, type_name_or(v->type));
	*out = v->v.s;
	return FM_OK;
}

int
fm_gguf_get_arr(const struct fm_gguf *g, const char *key, enum fm_gguf_type elem,
    const struct fm_gguf_value **out, struct fm_err *err)
{
	const struct fm_gguf_value *v;

	if (lookup(g, key, &v, err) != FM_OK)
		return FM_EDATA;
	if (v->type != FM_GGUF_ARRAY)
		return fm_err_set(err, FM_EDATA, "key %s has type %s, expected an array of %s",
		    key, type_name_or(v->type), type_name_or(elem));
	if (v->v.arr.elem != elem)
		return fm_err_set(err, FM_EDATA, "key %s is an array of %s, expected an array of %s",
		    key, type_name_or(v->v.arr.elem), type_name_or(elem));
	*out = v;
	return FM_OK;
}

/* Element i of a fixed-size array, decoded; a zero value for other arrays. */
static struct fm_gguf_value
arr_elem(const struct fm_gguf_value *arr, uint64_t i)
{
	struct fm_gguf_value v;
	enum fm_gguf_type t = arr->v.arr.elem;

	memset(&v, 0, sizeof v);
	v.type = FM_GGUF_UINT8;
	if (arr->type != FM_GGUF_ARRAY || !is_known_type(t) || gguf_type_size[t] == 0 ||
	    arr->v.arr.raw == NULL || i >= arr->v.arr.n)
		return v;
	decode_scalar(t, arr->v.arr.raw + i * gguf_type_size[t], &v);
	return v;
}

/* Float to integer without the undefined behaviour of an out-of-range cast. */
static int64_t
clamp_i64(double d)
{
	if (!(d == d))
		return 0;
	if (d >= 9223372036854775807.0)
		return INT64_MAX;
	if (d <= -9223372036854775808.0)
		return INT64_MIN;
	return (int64_t)d;
}

uint64_t
fm_gguf_arr_u64(const struct fm_gguf_value *arr, uint64_t i)
{
	struct fm_gguf_value v = arr_elem(arr, i);

	if (v.type == FM_GGUF_FLOAT32 || v.type == FM_GGUF_FLOAT64) {
		if (!(v.v.f > 0))
			return 0;
		return v.v.f >= 18446744073709551615.0 ? UINT64_MAX : (uint64_t)v.v.f;
	}
	return v.v.u;  /* a signed element is returned as its two's complement */
}

int64_t
fm_gguf_arr_i64(const struct fm_gguf_value *arr, uint64_t i)
{
	struct fm_gguf_value v = arr_elem(arr, i);

	if (v.type == FM_GGUF_FLOAT32 || v.type == FM_GGUF_FLOAT64)
		return clamp_i64(v.v.f);
	return v.v.i;
}

double
fm_gguf_arr_f64(const struct fm_gguf_value *arr, uint64_t i)
{
	struct fm_gguf_value v = arr_elem(arr, i);

	switch (v.type) {
	case FM_GGUF_FLOAT32: case FM_GGUF_FLOAT64:
		return v.v.f;
	case FM_GGUF_INT8: case FM_GGUF_INT16: case FM_GGUF_INT32: case FM_GGUF_INT64:
		return (double)v.v.i;
	default:
		return (double)v.v.u;
	}
}

int
fm_gguf_dequant_row(const struct fm_gguf_tensor *t, uint64_t row, float *out, struct fm_err *err)
{
	const uint8_t *p;
	uint64_t n = t->ne[0], i, b;
	float d;

	if (row >= t->n_rows)
		return fm_err_set(err, FM_EDATA, "row %" PRIu64 " out of range (%" PRIu64
		    " rows)", row, t->n_rows);
	p = t->data + row * t->row_bytes;
	switch (t->type) {
	case FM_GGML_F32:
		for (i = 0; i < n; i++)
			out[i] = bits_to_f32(le32(p + 4 * i));
		return FM_OK;
	case FM_GGML_F16:
		for (i = 0; i < n; i++)
			out[i] = fm_f16_to_f32(le16(p + 2 * i));
		return FM_OK;
	case FM_GGML_BF16:
		for (i = 0; i < n; i++)
			out[i] = fm_bf16_to_f32(le16(p + 2 * i));
		return FM_OK;
	case FM_GGML_Q8_0:
		for (b = 0; b < n / 32; b++, p += 34) {
			d = fm_f16_to_f32(le16(p));
			for (i = 0; i < 32; i++)
				out[32 * b + i] = d * (float)(int8_t)p[2 + i];
		}
		return FM_OK;
	default:
		return fm_err_set(err, FM_EDATA, "cannot dequantise tensors of type %s",
		    fm_ggml_type_name(t->type) ? fm_ggml_type_name(t->type) : "unknown");
	}
}

float
fm_f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16;
	uint32_t e = h >> 10 & 0x1f, m = h & 0x3ff;
	float f;

	if (e == 0) {
		/* Zero or subnormal: m units of 2^-24, exact in a float. */
		f = (float)m * 0x1p-24f;
		return sign ? -f : f;
	}
	if (e == 31)
		return bits_to_f32(sign | 0x7f800000 | m << 13);
	return bits_to_f32(sign | (e + 112) << 23 | m << 13);
}

float
fm_bf16_to_f32(uint16_t h)
{
	return bits_to_f32((uint32_t)h << 16);
}

/* Rounds q + rem/2^shift to nearest, ties to an even q. */
static uint32_t
round_even(uint32_t q, uint32_t rem, unsigned shift)
{
	uint32_t half = 1u << (shift - 1);

	if (rem > half || (rem == half && (q & 1)))
		q++;
	return q;
}

uint16_t
fm_f32_to_f16(float f)
{
	uint32_t x = f32_to_bits(f);
	uint32_t sign = x >> 16 & 0x8000;
	uint32_t e, m;
	unsigned shift;

	x &= 0x7fffffff;
	if (x > 0x7f800000)  /* NaN: keep the top payload bits, stay quiet */
		return (uint16_t)(sign | 0x7e00 | (x >> 13 & 0x3ff));
	/* 65520 is halfway between 65504 (odd) and 2^16, so it rounds to inf. */
	if (x >= 0x477ff000)
		return (uint16_t)(sign | 0x7c00);
	e = x >> 23;
	m = x & 0x7fffff;
	if (x < 0x38800000) {
		/* Below 2^-14: a subnormal half, in units of 2^-24. */
		if (e == 0)
			return (uint16_t)sign;
		m |= 0x800000;
		shift = 126 - e;  /* value = m * 2^(e-150), unit 2^-24 */
		if (shift > 24)
			return (uint16_t)sign;
		return (uint16_t)(sign | round_even(m >> shift, m & ((1u << shift) - 1), shift));
	}
	/* A carry out of the mantissa correctly bumps the exponent. */
	return (uint16_t)(sign | round_even((e - 112) << 10 | m >> 13, m & 0x1fff, 13));
}

uint16_t
fm_f32_to_bf16(float f)
{
	uint32_t x = f32_to_bits(f);

	if ((x & 0x7fffffff) > 0x7f800000)
		return (uint16_t)(x >> 16 | 0x40);
	return (uint16_t)((x + 0x7fff + (x >> 16 & 1)) >> 16);
}
