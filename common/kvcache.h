/*
 * kvcache.h - the keys and values of every past position, per layer, in F16
 * (the default: half the bytes, within rounding of F32) or F32.
 *
 * Layout: K and V are each one array (n_layer, n_pos, n_head_kv, head_dim),
 * so the positions [p0, p1) of one layer are one contiguous span of
 * (p1 - p0) * pos_bytes bytes in K and one in V.  That is what a pager
 * moves when it keeps only some chunks of a long context resident: it finds
 * a chunk with fm_kv_k()/fm_kv_v() and copies the span.
 *
 * Ownership: the caller owns the struct (usually inside a larger one);
 * fm_kv_init() allocates the two arrays, fm_kv_free() releases them.
 */
#ifndef FM_KVCACHE_H
#define FM_KVCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "fm_error.h"

enum fm_kv_type { FM_KV_F16, FM_KV_F32 };

struct fm_kvcache {
	enum fm_kv_type type;
	uint32_t n_layer;
	uint32_t n_pos;       /* capacity in positions */
	uint32_t n_head_kv;
	uint32_t head_dim;
	size_t elt_bytes;     /* 2 (F16) or 4 (F32) */
	size_t pos_bytes;     /* one position of one layer: n_head_kv * head_dim * elt_bytes */
	uint8_t *k;           /* (n_layer, n_pos, n_head_kv, head_dim) */
	uint8_t *v;           /* (n_layer, n_pos, n_head_kv, head_dim) */
};

/* Allocates room for n_pos positions.  FM_EIO when memory runs out. */
int fm_kv_init(struct fm_kvcache *kv, enum fm_kv_type type, uint32_t n_layer, uint32_t n_pos,
               uint32_t n_head_kv, uint32_t head_dim, struct fm_err *err);
void fm_kv_free(struct fm_kvcache *kv);

/* Bytes of K and V together for all layers and positions. */
uint64_t fm_kv_bytes(const struct fm_kvcache *kv);

/* Where position pos (< n_pos) of layer starts, in K and in V. */
void *fm_kv_k(const struct fm_kvcache *kv, uint32_t layer, uint32_t pos);
void *fm_kv_v(const struct fm_kvcache *kv, uint32_t layer, uint32_t pos);

/* Stores one position: k and v are (n_head_kv, head_dim) floats, rounded to the cache type. */
void fm_kv_put(struct fm_kvcache *kv, uint32_t layer, uint32_t pos, const float *k, const float *v);

/*
 * Reads head h of positions [pos, pos + n) of K (which 'k') or V ('v') as
 * floats into out (n, head_dim).
 */
void fm_kv_read(const struct fm_kvcache *kv, char which, uint32_t layer, uint32_t h,
                uint32_t pos, uint32_t n, float *out);

/*
 * The same for the keys rows[pos .. pos + n): the attention of a sparse
 * cache, whose keys are wherever its slot table put them.  rows NULL reads
 * rows pos .. pos + n - 1, as fm_kv_read().
 */
void fm_kv_read_rows(const struct fm_kvcache *kv, char which, uint32_t layer, uint32_t h,
                     const int32_t *rows, uint32_t pos, uint32_t n, float *out);

/*
 * Copies rows [src_row, src_row + n) of every layer of src to rows
 * [dst_row, ...) of dst: a chunk paged in or out.  The two caches must have
 * the same type and shape apart from n_pos.
 */
void fm_kv_copy(struct fm_kvcache *dst, uint32_t dst_row, const struct fm_kvcache *src,
                uint32_t src_row, uint32_t n);

/* "f16" / "f32"; parsing returns -1 for anything else. */
const char *fm_kv_type_name(enum fm_kv_type t);
int fm_kv_type_parse(const char *s, enum fm_kv_type *t);

#endif
