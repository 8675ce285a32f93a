/*
 * gguf.h - a hardened reader for GGUF files (versions 2 and 3) as llama.cpp
 * writes them: metadata of every type (nested arrays too), tensor infos,
 * general.alignment, and memory-mapped tensor data with row dequantisation.
 *
 * Ownership: fm_gguf_open() returns a reader that owns the mapping and every
 * value, string and tensor info reachable from it; all of them stay valid
 * until fm_gguf_close().  Strings point into the mapping and are NOT
 * NUL-terminated: use their length.
 *
 * Every count, length, offset, dimension product and alignment is checked
 * against the file size and against overflow before use, so a hostile file
 * yields FM_EDATA with a reason, never a crash or an allocation larger than a
 * small multiple of the file size.
 */
#ifndef FM_GGUF_H
#define FM_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fm_error.h"

/* Metadata value types, numbered as in the GGUF specification. */
enum fm_gguf_type {
	FM_GGUF_UINT8 = 0, FM_GGUF_INT8 = 1, FM_GGUF_UINT16 = 2, FM_GGUF_INT16 = 3,
	FM_GGUF_UINT32 = 4, FM_GGUF_INT32 = 5, FM_GGUF_FLOAT32 = 6, FM_GGUF_BOOL = 7,
	FM_GGUF_STRING = 8, FM_GGUF_ARRAY = 9, FM_GGUF_UINT64 = 10, FM_GGUF_INT64 = 11,
	FM_GGUF_FLOAT64 = 12,
};

/* Tensor element types, numbered as ggml numbers them (only some are known). */
enum fm_ggml_type {
	FM_GGML_F32 = 0, FM_GGML_F16 = 1, FM_GGML_Q4_0 = 2, FM_GGML_Q4_1 = 3,
	FM_GGML_Q5_0 = 6, FM_GGML_Q5_1 = 7, FM_GGML_Q8_0 = 8, FM_GGML_Q8_1 = 9,
	FM_GGML_Q2_K = 10, FM_GGML_Q3_K = 11, FM_GGML_Q4_K = 12, FM_GGML_Q5_K = 13,
	FM_GGML_Q6_K = 14, FM_GGML_Q8_K = 15, FM_GGML_I8 = 24, FM_GGML_I16 = 25,
	FM_GGML_I32 = 26, FM_GGML_I64 = 27, FM_GGML_F64 = 28, FM_GGML_BF16 = 30,
};

#define FM_GGUF_MAX_DIMS 4
#define FM_GGUF_MAX_DEPTH 8  /* deepest array nesting accepted */

struct fm_str {
	const char *ptr;  /* into the mapping, not NUL-terminated */
	uint64_t len;
};

/*
 * One metadata value.  Scalars are decoded; arrays of fixed-size elements
 * keep a pointer to their raw little-endian bytes (read them with the
 * fm_gguf_arr_* getters: they may be unaligned); arrays of strings or of
 * arrays have one decoded fm_gguf_value per element in items.
 */
struct fm_gguf_value {
	enum fm_gguf_type type;
	union {
		uint64_t u;      /* UINT8..UINT64, BOOL (0 or 1) */
		int64_t i;       /* INT8..INT64 */
		double f;        /* FLOAT32, FLOAT64 */
		struct fm_str s; /* STRING */
		struct {
			enum fm_gguf_type elem;
			uint64_t n;
			const uint8_t *raw;            /* fixed-size elements */
			struct fm_gguf_value *items;   /* STRING or ARRAY elements */
		} arr;                 /* ARRAY */
	} v;
};

struct fm_gguf_kv {
	struct fm_str key;
	struct fm_gguf_value val;
};

struct fm_gguf_tensor {
	struct fm_str name;
	uint32_t n_dims;
	uint64_t ne[FM_GGUF_MAX_DIMS];  /* ne[0] is the row length; unused dims are 1 */
	enum fm_ggml_type type;
	uint64_t offset;   /* from the start of the data section, aligned */
	uint64_t nbytes;   /* whole tensor */
	uint64_t row_bytes;/* bytes of one row of ne[0] elements */
	uint64_t n_rows;   /* ne[1]*ne[2]*ne[3] */
	const uint8_t *data; /* into the mapping */
};

struct fm_gguf {
	uint32_t version;
	uint64_t alignment;
	uint64_t n_kv;
	struct fm_gguf_kv *kv;
	uint64_t n_tensors;
	struct fm_gguf_tensor *tensors;
	uint64_t data_offset;  /* file offset of the tensor data section */
	const uint8_t *map;    /* the whole file */
	uint64_t size;
};

/* Opens and validates path.  On failure returns NULL and fills err (FM_EIO or FM_EDATA). */
struct fm_gguf *fm_gguf_open(const char *path, struct fm_err *err);

/* Parses a file already in memory (not copied: buf must outlive the reader); for tests and fuzzing. */
struct fm_gguf *fm_gguf_open_memory(const void *buf, size_t size, struct fm_err *err);

void fm_gguf_close(struct fm_gguf *g);

/* Metadata lookup: NULL when key is absent. */
const struct fm_gguf_value *fm_gguf_get(const struct fm_gguf *g, const char *key);

/*
 * Typed getters.  Return FM_OK and store the value, or FM_EDATA with a reason
 * naming the key when it is absent or of another type.  Integer getters accept
 * any integer type whose value fits the destination.
 */
int fm_gguf_get_u32(const struct fm_gguf *g, const char *key, uint32_t *out, struct fm_err *err);
int fm_gguf_get_u64(const struct fm_gguf *g, const char *key, uint64_t *out, struct fm_err *err);
int fm_gguf_get_i64(const struct fm_gguf *g, const char *key, int64_t *out, struct fm_err *err);
int fm_gguf_get_f32(const struct fm_gguf *g, const char *key, float *out, struct fm_err *err);
int fm_gguf_get_bool(const struct fm_gguf *g, const char *key, bool *out, struct fm_err *err);
int fm_gguf_get_str(const struct fm_gguf *g, const char *key, struct fm_str *out, struct fm_err *err);
/* An array whose elements have type elem (FM_GGUF_ARRAY matches any nested array). */
int fm_gguf_get_arr(const struct fm_gguf *g, const char *key, enum fm_gguf_type elem,
                    const struct fm_gguf_value **out, struct fm_err *err);

/* Element i (< arr.n, checked by the caller) of an array of fixed-size elements. */
uint64_t fm_gguf_arr_u64(const struct fm_gguf_value *arr, uint64_t i);  /* unsigned ints, bool */
int64_t fm_gguf_arr_i64(const struct fm_gguf_value *arr, uint64_t i);   /* signed ints */
double fm_gguf_arr_f64(const struct fm_gguf_value *arr, uint64_t i);    /* floats */

/* Key matching is exact and case-sensitive; a C string compared with an fm_str. */
bool fm_str_eq(struct fm_str s, const char *cstr);

/* Tensor lookup by name: NULL when absent. */
const struct fm_gguf_tensor *fm_gguf_tensor(const struct fm_gguf *g, const char *name);

/* Name of a type ("f32", "q8_0", ...) or NULL when unknown. */
const char *fm_ggml_type_name(enum fm_ggml_type t);
const char *fm_gguf_type_name(enum fm_gguf_type t);

/* Whether fm_gguf_dequant_row() can convert this type. */
bool fm_ggml_type_dequantizable(enum fm_ggml_type t);

/*
 * Converts row `row` (< t->n_rows) of t to t->ne[0] floats in out.
 * Returns FM_OK, or FM_EDATA for a type it cannot convert.
 */
int fm_gguf_dequant_row(const struct fm_gguf_tensor *t, uint64_t row, float *out, struct fm_err *err);

/* Element conversions shared with the model code. */
float fm_f16_to_f32(uint16_t h);
float fm_bf16_to_f32(uint16_t h);
uint16_t fm_f32_to_f16(float f);   /* round to nearest even */
uint16_t fm_f32_to_bf16(float f);  /* round to nearest even */

#endif
