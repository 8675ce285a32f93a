/*
 * indexfile.c - the index file writer and its hardened, memory-mapped
 * reader (indexfile.h, fm-formats(5)).  The file is untrusted: every field
 * the header gives is checked against the file size and against overflow
 * before a section is touched, and the page table is walked once at open
 * so that no page can point outside the vectors.  The sections are used in
 * place, so the host must be little-endian like the file.
 */
#include "indexfile.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checksum.h"
#include "gguf.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "index sections are used in place");
_Static_assert(sizeof(struct fm_index_page) == 32, "page entry as stored");

static const char magic[8] = { (char)0x89, 'F', 'M', 'I', '\r', '\n', 0x1a, '\n' };
static const char tags[4][5] = { "VECS", "PAGE", "PSUM", "TOKS" };

/* Header offsets (fm-formats(5)). */
enum {
	H_VERSION = 8, H_LEN = 12, H_DIM = 16, H_DTYPE = 20, H_POOLING = 22, H_FLAGS = 24,
	H_PAGE_CHUNKS = 28, H_N_CHUNKS = 32, H_N_PAGES = 40, H_N_TOKENS = 48, H_N_DOCS = 56,
	H_N_SHARDS = 60, H_ENC_FP = 64, H_TOK_FP = 72, H_SOURCE = 80, H_FILE_SIZE = 88,
	H_NAME_LEN = 96, H_NAME = 98, H_TOC = 384, TOC_ENTRY = 24, H_CRC = 508,
};

static uint16_t
get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t
get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t
get64(const uint8_t *p)
{
	return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static void
put16(uint8_t *p, uint16_t v)
{
	p[0] = v & 0xff;
	p[1] = v >> 8;
}

static void
put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (v >> (8 * i)) & 0xff;
}

static void
put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)v);
	put32(p + 4, (uint32_t)(v >> 32));
}

static uint64_t
align_up(uint64_t x)
{
	return (x + FM_INDEX_ALIGN - 1) / FM_INDEX_ALIGN * FM_INDEX_ALIGN;
}

static unsigned
esize(unsigned dtype)
{
	return dtype == 0 ? 4 : 2;
}

/* ---- writer -------------------------------------------------------------- */

struct fm_indexw {
	FILE *f;
	struct fm_index_info info;
	uint64_t pos;                 /* bytes written so far */
	uint32_t crc[4];
	uint64_t off[4], size[4];
	uint64_t n_chunks;
	/* Pages: the table, and one sum vector per page. */
	struct fm_index_page *pages;
	float *sums;                  /* (cap_sums, dim) */
	uint64_t n_pages, cap_pages, cap_sums;
	double *acc;                  /* (dim) the open page's sum */
	uint32_t *tokens;
	uint64_t cap_tokens;
	uint32_t last_chunk;
	void *row;                    /* one row in the file's dtype */
	bool failed;
};

static int
w_put(struct fm_indexw *w, int sec, const void *p, size_t n, struct fm_err *err)
{
	if (n == 0)
		return FM_OK;
	if (fwrite(p, 1, n, w->f) != n) {
		w->failed = true;
		return fm_err_errno(err, FM_EIO, errno ? errno : EIO, "write error");
	}
	if (sec >= 0)
		w->crc[sec] = fm_crc32c(w->crc[sec], p, n);
	w->pos += n;
	return FM_OK;
}

static int
w_pad(struct fm_indexw *w, struct fm_err *err)
{
	static const uint8_t zero[FM_INDEX_ALIGN];

	return w_put(w, -1, zero, align_up(w->pos) - w->pos, err);
}

struct fm_indexw *
fm_indexw_open(FILE *f, const struct fm_index_info *info, struct fm_err *err)
{
	struct fm_indexw *w;
	uint8_t zero[FM_INDEX_HEADER] = {0};

	if (info->dim == 0 || info->dim > FM_INDEX_MAX_DIM || info->dtype > 1 ||
	    info->pooling > 2 || info->page_chunks == 0 ||
	    strnlen(info->encoder_name, sizeof info->encoder_name) > FM_INDEX_MAX_NAME) {
		fm_err_set(err, FM_EDATA, "invalid index description (dimension %u, dtype %u)",
		    info->dim, info->dtype);
		return NULL;
	}
	if ((w = calloc(1, sizeof *w)) == NULL ||
	    (w->acc = calloc(info->dim, sizeof *w->acc)) == NULL ||
	    (w->row = malloc((size_t)info->dim * 4)) == NULL) {
		fm_err_errno(err, FM_EIO, errno, "cannot allocate");
		fm_indexw_free(w);
		return NULL;
	}
	w->f = f;
	w->info = *info;
	/* The header is written last; hold its place. */
	if (w_put(w, -1, zero, sizeof zero, err) != FM_OK) {
		fm_indexw_free(w);
		return NULL;
	}
	w->off[0] = w->pos;
	return w;
}

/* Closes the open page: its sum, rounded once to float, joins the table. */
static void
close_page(struct fm_indexw *w)
{
	uint32_t d = w->info.dim;

	if (w->n_pages == 0)
		return;
	float *s = w->sums + (w->n_pages - 1) * d;
	for (uint32_t j = 0; j < d; j++) {
		s[j] = (float)w->acc[j];
		w->acc[j] = 0;
	}
}

static int
grow(void **p, uint64_t *cap, uint64_t need, size_t elem, struct fm_err *err)
{
	uint64_t c = *cap ? *cap : 64;
	void *q;

	if (need <= *cap)
		return FM_OK;
	while (c < need)
		c *= 2;
	if (c > SIZE_MAX / elem || (q = realloc(*p, c * elem)) == NULL)
		return fm_err_errno(err, FM_EIO, ENOMEM, "cannot allocate");
	*p = q;
	*cap = c;
	return FM_OK;
}

int
fm_indexw_chunk(struct fm_indexw *w, const float *vec, uint32_t doc, uint32_t chunk,
    uint32_t page, uint32_t n_tokens, struct fm_err *err)
{
	const struct fm_index_info *in = &w->info;
	struct fm_index_page *cur = w->n_pages ? &w->pages[w->n_pages - 1] : NULL;
	bool new_doc = cur == NULL || doc != cur->doc;
	uint64_t id = w->n_chunks;

	if (w->failed)
		return fm_err_set(err, FM_EIO, "write error");
	if (new_doc && cur != NULL && doc < cur->doc)
		return fm_err_set(err, FM_EDATA, "chunk %llu: document %u after document %u",
		    (unsigned long long)id, doc, cur->doc);
	if (new_doc ? chunk != 0 : chunk != w->last_chunk + 1)
		return fm_err_set(err, FM_EDATA, "chunk %llu: index %u in its document out of sequence",
		    (unsigned long long)id, chunk);
	if (page != chunk / in->page_chunks)
		return fm_err_set(err, FM_EDATA, "chunk %llu: page %u, expected %u",
		    (unsigned long long)id, page, chunk / in->page_chunks);
	for (uint32_t j = 0; j < in->dim; j++)
		if (!isfinite(vec[j]))
			return fm_err_set(err, FM_EDATA, "chunk %llu: value %u is not finite",
			    (unsigned long long)id, j);
	if (new_doc || page != cur->page) {
		close_page(w);
		if (grow((void **)&w->pages, &w->cap_pages, w->n_pages + 1, sizeof *w->pages, err) != FM_OK ||
		    grow((void **)&w->sums, &w->cap_sums, w->n_pages + 1, (size_t)in->dim * sizeof *w->sums,
		    err) != FM_OK)
			return err->status;
		cur = &w->pages[w->n_pages++];
		*cur = (struct fm_index_page){ id, 0, doc, page, 0, 0 };
	}
	if (grow((void **)&w->tokens, &w->cap_tokens, id + 1, sizeof *w->tokens, err) != FM_OK)
		return err->status;
	/* The sum is of the values as stored, so a reader can recompute it exactly. */
	if (in->dtype == 0) {
		memcpy(w->row, vec, (size_t)in->dim * 4);
		for (uint32_t j = 0; j < in->dim; j++)
			w->acc[j] += vec[j];
	} else {
		uint16_t *h = w->row;
		for (uint32_t j = 0; j < in->dim; j++) {
			h[j] = fm_f32_to_f16(vec[j]);
			w->acc[j] += fm_f16_to_f32(h[j]);
		}
	}
	if (w_put(w, 0, w->row, (size_t)in->dim * esize(in->dtype), err) != FM_OK)
		return err->status;
	w->tokens[id] = n_tokens;
	cur->n_chunks++;
	cur->n_tokens += n_tokens;
	w->last_chunk = chunk;
	w->n_chunks++;
	return FM_OK;
}

int
fm_indexw_finish(struct fm_indexw *w, uint32_t n_docs, uint64_t source_hash, struct fm_err *err)
{
	const struct fm_index_info *in = &w->info;
	uint8_t h[FM_INDEX_HEADER] = {0};
	uint64_t n_tokens = 0;
	size_t name_len = strlen(in->encoder_name);

	if (w->failed)
		return fm_err_set(err, FM_EIO, "write error");
	if (w->n_pages > 0 && w->pages[w->n_pages - 1].doc >= n_docs)
		return fm_err_set(err, FM_EDATA, "%u documents, but a chunk of document %u",
		    n_docs, w->pages[w->n_pages - 1].doc);
	close_page(w);
	for (uint64_t g = 0; g < w->n_pages; g++)
		n_tokens += w->pages[g].n_tokens;
	w->size[0] = w->pos - w->off[0];
	if (w_pad(w, err) != FM_OK)
		return err->status;
	w->off[1] = w->pos;
	if (w_put(w, 1, w->pages, w->n_pages * sizeof *w->pages, err) != FM_OK)
		return err->status;
	w->size[1] = w->pos - w->off[1];
	if (w_pad(w, err) != FM_OK)
		return err->status;
	w->off[2] = w->pos;
	if (w_put(w, 2, w->sums, w->n_pages * in->dim * sizeof *w->sums, err) != FM_OK)
		return err->status;
	w->size[2] = w->pos - w->off[2];
	if (w_pad(w, err) != FM_OK)
		return err->status;
	w->off[3] = w->pos;
	if (w_put(w, 3, w->tokens, w->n_chunks * sizeof *w->tokens, err) != FM_OK)
		return err->status;
	w->size[3] = w->pos - w->off[3];

	memcpy(h, magic, sizeof magic);
	put32(h + H_VERSION, FM_INDEX_VERSION);
	put32(h + H_LEN, FM_INDEX_HEADER);
	put32(h + H_DIM, in->dim);
	put16(h + H_DTYPE, in->dtype);
	put16(h + H_POOLING, in->pooling);
	put32(h + H_PAGE_CHUNKS, in->page_chunks);
	put64(h + H_N_CHUNKS, w->n_chunks);
	put64(h + H_N_PAGES, w->n_pages);
	put64(h + H_N_TOKENS, n_tokens);
	put32(h + H_N_DOCS, n_docs);
	put32(h + H_N_SHARDS, in->n_shards);
	put64(h + H_ENC_FP, in->encoder_fingerprint);
	put64(h + H_TOK_FP, in->tok_fingerprint);
	put64(h + H_SOURCE, source_hash);
	put64(h + H_FILE_SIZE, w->pos);
	put16(h + H_NAME_LEN, (uint16_t)name_len);
	memcpy(h + H_NAME, in->encoder_name, name_len);
	for (int s = 0; s < 4; s++) {
		uint8_t *e = h + H_TOC + s * TOC_ENTRY;
		memcpy(e, tags[s], 4);
		put32(e + 4, w->crc[s]);
		put64(e + 8, w->off[s]);
		put64(e + 16, w->size[s]);
	}
	put32(h + H_CRC, fm_crc32c(0, h, H_CRC));
	if (fseeko(w->f, 0, SEEK_SET) != 0)
		return fm_err_errno(err, FM_EIO, errno, "cannot seek (the index must be a regular file)");
	if (fwrite(h, 1, sizeof h, w->f) != sizeof h || fflush(w->f) != 0) {
		w->failed = true;
		return fm_err_errno(err, FM_EIO, errno ? errno : EIO, "write error");
	}
	return FM_OK;
}

void
fm_indexw_free(struct fm_indexw *w)
{
	if (w == NULL)
		return;
	free(w->pages);
	free(w->sums);
	free(w->acc);
	free(w->tokens);
	free(w->row);
	free(w);
}

/* ---- reader -------------------------------------------------------------- */

struct index_impl {
	struct fm_index ix;   /* first: the public part */
	void *map;
	size_t map_len;
	const uint8_t *base;
	uint32_t crc[4];
	uint64_t off[4], size[4];
};

static int
parse(struct index_impl *m, const uint8_t *b, uint64_t len, struct fm_err *err)
{
	struct fm_index *ix = &m->ix;
	struct fm_index_info *in = &ix->info;
	uint64_t want[4], end = FM_INDEX_HEADER, tokens = 0, chunks = 0, rowbytes;
	uint32_t v, name_len, page_chunks;

	if (len < 16 || memcmp(b, magic, sizeof magic) != 0)
		return fm_err_set(err, FM_EDATA, "not an index file");
	v = get32(b + H_VERSION);
	if (v == 0)
		return fm_err_set(err, FM_EDATA, "invalid index file version 0");
	if (v > FM_INDEX_VERSION)
		return fm_err_set(err, FM_EDATA, "unsupported index file version %u", v);
	if (len < FM_INDEX_HEADER)
		return fm_err_set(err, FM_EDATA, "truncated header");
	if (get32(b + H_CRC) != fm_crc32c(0, b, H_CRC))
		return fm_err_set(err, FM_EDATA, "checksum mismatch in the header");
	if (get32(b + H_LEN) != FM_INDEX_HEADER)
		return fm_err_set(err, FM_EDATA, "header length %u, expected %u", get32(b + H_LEN),
		    FM_INDEX_HEADER);
	ix->version = v;
	in->dim = get32(b + H_DIM);
	in->dtype = get16(b + H_DTYPE);
	in->pooling = get16(b + H_POOLING);
	page_chunks = in->page_chunks = get32(b + H_PAGE_CHUNKS);
	ix->n_chunks = get64(b + H_N_CHUNKS);
	ix->n_pages = get64(b + H_N_PAGES);
	ix->n_tokens = get64(b + H_N_TOKENS);
	ix->n_docs = get32(b + H_N_DOCS);
	in->n_shards = get32(b + H_N_SHARDS);
	in->encoder_fingerprint = get64(b + H_ENC_FP);
	in->tok_fingerprint = get64(b + H_TOK_FP);
	in->source_hash = get64(b + H_SOURCE);
	ix->file_size = get64(b + H_FILE_SIZE);
	name_len = get16(b + H_NAME_LEN);
	if (in->dim == 0 || in->dim > FM_INDEX_MAX_DIM)
		return fm_err_set(err, FM_EDATA, "dimension %u out of range 1..%u", in->dim,
		    FM_INDEX_MAX_DIM);
	if (in->dtype > 1)
		return fm_err_set(err, FM_EDATA, "unknown vector type %u", in->dtype);
	if (in->pooling > 2)
		return fm_err_set(err, FM_EDATA, "unknown pooling %u", in->pooling);
	if (get32(b + H_FLAGS) != 0)
		return fm_err_set(err, FM_EDATA, "unknown flags 0x%x", get32(b + H_FLAGS));
	if (page_chunks == 0)
		return fm_err_set(err, FM_EDATA, "page_chunks is 0");
	if (name_len > FM_INDEX_MAX_NAME || memchr(b + H_NAME, 0, name_len) != NULL)
		return fm_err_set(err, FM_EDATA, "invalid encoder name");
	for (uint32_t i = H_NAME + name_len; i < H_TOC; i++)
		if (b[i] != 0)
			return fm_err_set(err, FM_EDATA, "nonzero padding at header byte %u", i);
	for (uint32_t i = H_TOC + 4 * TOC_ENTRY; i < H_CRC; i++)
		if (b[i] != 0)
			return fm_err_set(err, FM_EDATA, "nonzero padding at header byte %u", i);
	memcpy(in->encoder_name, b + H_NAME, name_len);
	in->encoder_name[name_len] = '\0';
	if (ix->file_size != len)
		return fm_err_set(err, FM_EDATA, "%s: %llu bytes, the header says %llu",
		    len < ix->file_size ? "truncated" : "trailing data",
		    (unsigned long long)len, (unsigned long long)ix->file_size);
	/* Every size is bounded by the file before it is multiplied further. */
	rowbytes = (uint64_t)in->dim * esize(in->dtype);
	if (ix->n_chunks > len / rowbytes || ix->n_pages > ix->n_chunks ||
	    (ix->n_chunks > 0) != (ix->n_pages > 0))
		return fm_err_set(err, FM_EDATA, "%llu chunks and %llu pages cannot fit the file",
		    (unsigned long long)ix->n_chunks, (unsigned long long)ix->n_pages);
	want[0] = ix->n_chunks * rowbytes;
	want[1] = ix->n_pages * sizeof(struct fm_index_page);
	want[2] = ix->n_pages * in->dim * 4;
	want[3] = ix->n_chunks * 4;
	for (int s = 0; s < 4; s++) {
		const uint8_t *e = b + H_TOC + s * TOC_ENTRY;
		if (memcmp(e, tags[s], 4) != 0)
			return fm_err_set(err, FM_EDATA, "table of contents entry %d is not %s", s, tags[s]);
		m->crc[s] = get32(e + 4);
		m->off[s] = get64(e + 8);
		m->size[s] = get64(e + 16);
		if (m->off[s] != align_up(end) || m->size[s] != want[s] ||
		    m->off[s] > len || m->size[s] > len - m->off[s])
			return fm_err_set(err, FM_EDATA, "section %s: offset %llu size %llu, expected %llu and %llu",
			    tags[s], (unsigned long long)m->off[s], (unsigned long long)m->size[s],
			    (unsigned long long)align_up(end), (unsigned long long)want[s]);
		/* The padding before a section is in no CRC: it must be zeros. */
		for (uint64_t i = end; i < m->off[s]; i++)
			if (b[i] != 0)
				return fm_err_set(err, FM_EDATA, "nonzero padding before section %s", tags[s]);
		end = m->off[s] + m->size[s];
	}
	if (end != len)
		return fm_err_set(err, FM_EDATA, "trailing data after section TOKS");
	m->base = b;
	ix->vecs = b + m->off[0];
	ix->pages = (const struct fm_index_page *)(const void *)(b + m->off[1]);
	ix->page_sums = (const float *)(const void *)(b + m->off[2]);
	ix->tokens = (const uint32_t *)(const void *)(b + m->off[3]);

	/* The page table: consecutive runs covering every chunk exactly once. */
	for (uint64_t g = 0; g < ix->n_pages; g++) {
		const struct fm_index_page *p = &ix->pages[g], *q = g ? p - 1 : NULL;
		bool new_doc = q == NULL || p->doc != q->doc;
		if (p->first_chunk != chunks || p->n_chunks == 0 || p->n_chunks > page_chunks ||
		    p->zero != 0 || p->doc >= ix->n_docs)
			return fm_err_set(err, FM_EDATA, "page %llu: bad entry", (unsigned long long)g);
		if (new_doc ? (q != NULL && p->doc < q->doc) || p->page != 0 :
		    (uint64_t)p->page != (uint64_t)q->page + 1 || q->n_chunks != page_chunks)
			return fm_err_set(err, FM_EDATA, "page %llu: out of sequence", (unsigned long long)g);
		if ((uint64_t)p->page * page_chunks + p->n_chunks > UINT32_MAX)
			return fm_err_set(err, FM_EDATA, "page %llu: too many chunks in its document",
			    (unsigned long long)g);
		if (p->n_tokens > UINT64_MAX - tokens)
			return fm_err_set(err, FM_EDATA, "page %llu: token count overflows", (unsigned long long)g);
		tokens += p->n_tokens;
		chunks += p->n_chunks;
	}
	if (chunks != ix->n_chunks)
		return fm_err_set(err, FM_EDATA, "the pages hold %llu chunks, the header says %llu",
		    (unsigned long long)chunks, (unsigned long long)ix->n_chunks);
	if (tokens != ix->n_tokens)
		return fm_err_set(err, FM_EDATA, "the pages hold %llu tokens, the header says %llu",
		    (unsigned long long)tokens, (unsigned long long)ix->n_tokens);
	return FM_OK;
}

int
fm_index_open_mem(const void *buf, size_t len, struct fm_index **out, struct fm_err *err)
{
	struct index_impl *m;

	*out = NULL;
	if ((uintptr_t)buf % 8 != 0)
		return fm_err_set(err, FM_EUSAGE, "index buffer not aligned to 8 bytes");
	if ((m = calloc(1, sizeof *m)) == NULL)
		return fm_err_errno(err, FM_EIO, errno, "cannot allocate");
	if (parse(m, buf, len, err) != FM_OK) {
		free(m);
		return err->status;
	}
	*out = &m->ix;
	return FM_OK;
}

int
fm_index_open(const char *path, struct fm_index **out, struct fm_err *err)
{
	struct index_impl *m;
	struct stat st;
	void *map = NULL;
	int fd;

	*out = NULL;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return fm_err_errno(err, FM_EIO, errno, "cannot open");
	if (fstat(fd, &st) != 0) {
		int e = errno;
		close(fd);
		return fm_err_errno(err, FM_EIO, e, "cannot stat");
	}
	if (S_ISDIR(st.st_mode)) {
		close(fd);
		return fm_err_set(err, FM_EIO, "is a directory");
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return fm_err_set(err, FM_EIO, "not a regular file (an index is memory-mapped)");
	}
	if (st.st_size > 0 && (map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0)) == MAP_FAILED) {
		int e = errno;
		close(fd);
		return fm_err_errno(err, FM_EIO, e, "cannot map");
	}
	close(fd);
	if ((m = calloc(1, sizeof *m)) == NULL) {
		int e = errno;
		if (map)
			munmap(map, (size_t)st.st_size);
		return fm_err_errno(err, FM_EIO, e, "cannot allocate");
	}
	m->map = map;
	m->map_len = (size_t)st.st_size;
	if (parse(m, map ? map : (const void *)"", (uint64_t)st.st_size, err) != FM_OK) {
		fm_index_close(&m->ix);
		return err->status;
	}
	*out = &m->ix;
	return FM_OK;
}

void
fm_index_close(struct fm_index *ix)
{
	struct index_impl *m = (struct index_impl *)ix;

	if (m == NULL)
		return;
	if (m->map != NULL)
		munmap(m->map, m->map_len);
	free(m);
}

int
fm_index_verify(const struct fm_index *ix, struct fm_err *err)
{
	const struct index_impl *m = (const struct index_impl *)ix;
	uint32_t d = ix->info.dim;
	double *acc;
	int st = FM_OK;

	for (int s = 0; s < 4; s++) {
		/* In slices, so a huge section is not one call with a size_t count. */
		uint32_t c = 0;
		for (uint64_t o = 0; o < m->size[s]; o += 1u << 30) {
			uint64_t n = m->size[s] - o < (1u << 30) ? m->size[s] - o : (1u << 30);
			c = fm_crc32c(c, m->base + m->off[s] + o, (size_t)n);
		}
		if (c != m->crc[s])
			return fm_err_set(err, FM_EDATA, "checksum mismatch in section %s", tags[s]);
	}
	if ((acc = malloc((d ? d : 1) * sizeof *acc)) == NULL)
		return fm_err_errno(err, FM_EIO, errno, "cannot allocate");
	for (uint64_t g = 0; g < ix->n_pages && st == FM_OK; g++) {
		const struct fm_index_page *p = &ix->pages[g];
		uint64_t t = 0;
		memset(acc, 0, d * sizeof *acc);
		for (uint64_t i = p->first_chunk; i < p->first_chunk + p->n_chunks; i++) {
			for (uint32_t j = 0; j < d; j++) {
				float x = ix->info.dtype == 0 ? ((const float *)ix->vecs)[i * d + j] :
				    fm_f16_to_f32(((const uint16_t *)ix->vecs)[i * d + j]);
				if (!isfinite(x)) {
					st = fm_err_set(err, FM_EDATA, "chunk %llu: value %u is not finite",
					    (unsigned long long)i, j);
					goto out;
				}
				acc[j] += x;
			}
			t += ix->tokens[i];
		}
		for (uint32_t j = 0; j < d; j++) {
			float s = (float)acc[j], z = ix->page_sums[g * d + j];
			if (memcmp(&s, &z, sizeof s) != 0) {
				st = fm_err_set(err, FM_EDATA, "page %llu: sum vector differs from its chunks",
				    (unsigned long long)g);
				goto out;
			}
		}
		if (t != p->n_tokens)
			st = fm_err_set(err, FM_EDATA, "page %llu: %llu tokens, its chunks hold %llu",
			    (unsigned long long)g, (unsigned long long)p->n_tokens, (unsigned long long)t);
	}
out:
	free(acc);
	return st;
}

uint64_t
fm_index_page_of(const struct fm_index *ix, uint64_t id)
{
	uint64_t lo = 0, hi = ix->n_pages;

	/* The last page whose first chunk is at most id. */
	while (hi - lo > 1) {
		uint64_t mid = lo + (hi - lo) / 2;
		if (ix->pages[mid].first_chunk <= id)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}
