/*
 * test_chunkfile.c - the chunk file writer and reader: round trips through a
 * file and through a pipe (records arrive before the writer has finished),
 * the writer's refusals, and the reader's: every truncation and every
 * single-byte change of a small file must be refused, hostile lengths must
 * be refused without allocating what they claim, and files that break one
 * rule each (built by an encoder written here from fm-formats(5), with valid
 * checksums) must be refused with the record named.  The same encoder
 * rebuilds the writer's output byte for byte, which pins the layout.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checksum.h"
#include "chunkfile.h"
#include "tap.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#endif

/* The sample: four documents covering the cases a reader must get right. */
struct schunk {
	uint32_t n;
	int32_t ids[4];
	uint64_t off;
	uint32_t len;
	const char *text;
};

struct sdoc {
	const char *name;
	size_t name_len;
	uint64_t bytes;
	uint64_t n_tokens;
	uint32_t flags;
	uint32_t n_chunks;
	struct schunk c[3];
};

static const struct fm_chunk_header sample_h = {
	.tok_fingerprint = UINT64_C(0x0123456789abcdef),
	.n_vocab = 1000,
	.chunk_tokens = 4,
	.overlap = 1,
	.page_chunks = 2,
	.tok_kind = "llama",
	.model_name = "tiny-model",
};

static const struct sdoc sample[] = {
	/* Three overlapping chunks over two pages, the last one short. */
	{ "docs/a.txt", 10, 25, 9, 0, 3, {
		{ 4, { 10, 11, 12, 13 }, 0, 9, "The quick" },
		{ 4, { 13, 14, 15, 16 }, 6, 10, "ck brown f" },
		{ 3, { 16, 17, 18 }, 14, 11, "n fox jumps" } } },
	/* No chunks at all. */
	{ "empty", 5, 0, 0, 0, 0, { { 0 } } },
	/* Name and text with invalid UTF-8, text with NUL; the input failed. */
	{ "bin\xff" "ary", 7, 7, 2, FM_DOC_INCOMPLETE, 1, {
		{ 2, { 0, 999 }, 0, 7, "a\0b\xff\xfe\xc3(" } } },
	/* Empty name, a full chunk with no text (special tokens only). */
	{ "", 0, 0, 4, 0, 1, {
		{ 4, { 1, 2, 3, 4 }, 0, 0, "" } } },
};
#define NDOCS (sizeof sample / sizeof sample[0])

static struct fm_chunk
sample_chunk(size_t d, size_t k, uint64_t id)
{
	const struct schunk *s = &sample[d].c[k];
	struct fm_chunk c = {
		.id = id, .doc = (uint32_t)d, .chunk = (uint32_t)k,
		.page = (uint32_t)k / sample_h.page_chunks, .n_tokens = s->n, .ids = s->ids,
		.offset = s->off, .length = s->len, .text = s->text,
	};
	return c;
}

/* Writes the sample; pause (may be NULL) runs after the first chunk. */
static int
write_sample(FILE *f, struct fm_chunk_end *end, void (*pause)(void), struct fm_err *err)
{
	struct fm_chunkw *w;
	uint64_t id = 0;
	int st = FM_OK;

	if ((w = fm_chunkw_open(f, &sample_h, err)) == NULL)
		return err->status;
	for (size_t d = 0; d < NDOCS && st == FM_OK; d++) {
		const struct sdoc *sd = &sample[d];
		struct fm_doc_end e = { (uint32_t)d, sd->bytes, sd->n_tokens, sd->n_chunks, sd->flags };

		st = fm_chunkw_doc_begin(w, sd->name, sd->name_len, err);
		for (uint32_t k = 0; k < sd->n_chunks && st == FM_OK; k++) {
			struct fm_chunk c = sample_chunk(d, k, id++);
			st = fm_chunkw_chunk(w, &c, err);
			if (st == FM_OK && id == 1 && pause != NULL) {
				fflush(f);
				pause();
			}
		}
		if (st == FM_OK)
			st = fm_chunkw_doc_end(w, &e, err);
	}
	if (st == FM_OK)
		st = fm_chunkw_finish(w, end, err);
	fm_chunkw_free(w);
	return st;
}

/* Compares one record with what the sample says it must be. */
static int
record_matches(const struct fm_chunk_record *rec, size_t *d, uint32_t *k, uint64_t *id)
{
	const struct sdoc *sd = *d < NDOCS ? &sample[*d] : NULL;

	switch (rec->kind) {
	case FM_REC_DOC_BEGIN:
		if (sd == NULL || rec->doc.doc != *d || rec->doc.name_len != sd->name_len ||
		    memcmp(rec->doc.name, sd->name, sd->name_len) != 0 ||
		    rec->doc.name[sd->name_len] != '\0')
			return 0;
		*k = 0;
		return 1;
	case FM_REC_CHUNK: {
		const struct fm_chunk *c = &rec->chunk;
		struct fm_chunk want;

		if (sd == NULL || *k >= sd->n_chunks)
			return 0;
		want = sample_chunk(*d, *k, *id);
		(*k)++;
		(*id)++;
		return c->id == want.id && c->doc == want.doc && c->chunk == want.chunk &&
		    c->page == want.page && c->n_tokens == want.n_tokens &&
		    memcmp(c->ids, want.ids, 4 * (size_t)want.n_tokens) == 0 &&
		    c->offset == want.offset && c->length == want.length &&
		    memcmp(c->text, want.text, want.length) == 0;
	}
	case FM_REC_DOC_END:
		if (sd == NULL || rec->doc_end.doc != *d || rec->doc_end.bytes != sd->bytes ||
		    rec->doc_end.n_tokens != sd->n_tokens ||
		    rec->doc_end.n_chunks != sd->n_chunks || rec->doc_end.flags != sd->flags)
			return 0;
		(*d)++;
		return 1;
	case FM_REC_END:
		return *d == NDOCS && rec->end.n_docs == NDOCS && rec->end.n_chunks == *id;
	}
	return 0;
}

/* Reads f to the end; FM_OK only if every record is the sample's. */
static int
read_sample(FILE *f, struct fm_chunk_end *end, struct fm_err *err)
{
	struct fm_chunkr *r;
	struct fm_chunk_record rec;
	size_t d = 0;
	uint32_t k = 0;
	uint64_t id = 0, n = 0;
	int st;

	if ((r = fm_chunkr_open(f, err)) == NULL)
		return err->status;
	{
		const struct fm_chunk_header *h = fm_chunkr_header(r);

		if (h->version != FM_CHUNK_VERSION || h->tok_fingerprint != sample_h.tok_fingerprint ||
		    h->n_vocab != sample_h.n_vocab || h->chunk_tokens != sample_h.chunk_tokens ||
		    h->overlap != sample_h.overlap || h->page_chunks != sample_h.page_chunks ||
		    strcmp(h->tok_kind, sample_h.tok_kind) != 0 ||
		    strcmp(h->model_name, sample_h.model_name) != 0) {
			fm_chunkr_free(r);
			return fm_err_set(err, -1, "header differs from the sample");
		}
	}
	do {
		if ((st = fm_chunkr_next(r, &rec, err)) != FM_OK)
			break;
		if (rec.index != n++ || !record_matches(&rec, &d, &k, &id)) {
			st = fm_err_set(err, -1, "record %" PRIu64 " differs from the sample",
			    rec.index);
			break;
		}
	} while (rec.kind != FM_REC_END);
	if (st == FM_OK && end != NULL)
		*end = rec.end;
	fm_chunkr_free(r);
	return st;
}

/* Reads a whole buffer as a chunk file; FM_OK only if it is valid to its end. */
static int
read_mem(const void *buf, size_t n, struct fm_err *err)
{
	FILE *f = n > 0 ? fmemopen((void *)buf, n, "r") : fopen("/dev/null", "r");
	struct fm_chunkr *r;
	struct fm_chunk_record rec;
	int st;

	if (f == NULL)
		return fm_err_errno(err, FM_EIO, errno, "fmemopen");
	err->status = FM_OK;
	err->msg[0] = '\0';
	if ((r = fm_chunkr_open(f, err)) == NULL) {
		fclose(f);
		return err->status;
	}
	while ((st = fm_chunkr_next(r, &rec, err)) == FM_OK && rec.kind != FM_REC_END)
		;
	fm_chunkr_free(r);
	fclose(f);
	return st;
}

/* The sample as bytes, written by the library. */
static unsigned char *
sample_bytes(size_t *n)
{
	char *buf = NULL;
	FILE *f = open_memstream(&buf, n);
	struct fm_err err;

	if (f == NULL || write_sample(f, NULL, NULL, &err) != FM_OK) {
		printf("# cannot build the sample: %s\n", err.msg);
		exit(1);
	}
	fclose(f);
	return (unsigned char *)buf;
}

/* An independent encoder, from the specification, for files that break one rule. */
struct raw {
	unsigned char b[8192];
	size_t n;
};

static void
raw_put(struct raw *r, const void *p, size_t n)
{
	if (r->n + n > sizeof r->b)
		abort();
	memcpy(r->b + r->n, p, n);
	r->n += n;
}

static void
raw_u16(struct raw *r, uint16_t v)
{
	unsigned char b[2] = { v & 0xff, v >> 8 };
	raw_put(r, b, 2);
}

static void
raw_u32(struct raw *r, uint32_t v)
{
	unsigned char b[4];
	for (int i = 0; i < 4; i++)
		b[i] = (v >> (8 * i)) & 0xff;
	raw_put(r, b, 4);
}

static void
raw_u64(struct raw *r, uint64_t v)
{
	raw_u32(r, (uint32_t)v);
	raw_u32(r, (uint32_t)(v >> 32));
}

static uint32_t
get_u32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	    (uint32_t)p[3] << 24;
}

static void
set_u32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (v >> (8 * i)) & 0xff;
}

static void
raw_header(struct raw *r, uint32_t version, const struct fm_chunk_header *h)
{
	size_t kl = strlen(h->tok_kind), ml = strlen(h->model_name), start = r->n;

	raw_put(r, "\x89" "FMC\r\n\x1a\n", 8);
	raw_u32(r, version);
	raw_u32(r, (uint32_t)(48 + kl + ml));
	raw_u64(r, h->tok_fingerprint);
	raw_u32(r, h->n_vocab);
	raw_u32(r, h->chunk_tokens);
	raw_u32(r, h->overlap);
	raw_u32(r, h->page_chunks);
	raw_u16(r, (uint16_t)kl);
	raw_put(r, h->tok_kind, kl);
	raw_u16(r, (uint16_t)ml);
	raw_put(r, h->model_name, ml);
	raw_u32(r, fm_crc32c(0, r->b + start, r->n - start));
}

/* Ends the record begun at start: fills in its length and appends the CRC. */
static void
raw_close(struct raw *r, size_t start)
{
	set_u32(r->b + start + 4, (uint32_t)(r->n - start - 8));
	raw_u32(r, fm_crc32c(0, r->b + start, r->n - start));
}

static size_t
raw_open(struct raw *r, const char *tag)
{
	size_t start = r->n;

	raw_put(r, tag, 4);
	raw_u32(r, 0);
	return start;
}

static void
raw_docb(struct raw *r, uint32_t doc, const char *name, uint32_t name_len)
{
	size_t s = raw_open(r, "DOCB");

	raw_u32(r, doc);
	raw_u32(r, name_len);
	raw_put(r, name, name_len);
	raw_close(r, s);
}

static void
raw_chnk(struct raw *r, uint64_t id, uint32_t doc, uint32_t chunk, uint32_t page,
    uint32_t n, const int32_t *ids, uint64_t off, uint32_t len, const char *text)
{
	size_t s = raw_open(r, "CHNK");

	raw_u64(r, id);
	raw_u32(r, doc);
	raw_u32(r, chunk);
	raw_u32(r, page);
	raw_u32(r, n);
	raw_u64(r, off);
	raw_u32(r, len);
	for (uint32_t i = 0; i < n; i++)
		raw_u32(r, (uint32_t)ids[i]);
	raw_put(r, text, len);
	raw_close(r, s);
}

static void
raw_doce(struct raw *r, uint32_t doc, uint64_t bytes, uint64_t n_tokens, uint32_t n_chunks,
    uint32_t flags)
{
	size_t s = raw_open(r, "DOCE");

	raw_u32(r, doc);
	raw_u64(r, bytes);
	raw_u64(r, n_tokens);
	raw_u32(r, n_chunks);
	raw_u32(r, flags);
	raw_close(r, s);
}

/* END with the true content hash of everything before it, unless hash is given. */
static void
raw_end(struct raw *r, uint32_t n_docs, uint64_t n_chunks, const uint64_t *hash)
{
	uint64_t h = hash != NULL ? *hash : fm_fnv64(FM_FNV64_INIT, r->b, r->n);
	size_t s = raw_open(r, "END ");

	raw_u32(r, n_docs);
	raw_u64(r, n_chunks);
	raw_u64(r, h);
	raw_close(r, s);
}

static void
raw_sample(struct raw *r)
{
	uint64_t id = 0;

	r->n = 0;
	raw_header(r, 1, &sample_h);
	for (size_t d = 0; d < NDOCS; d++) {
		const struct sdoc *sd = &sample[d];

		raw_docb(r, (uint32_t)d, sd->name, (uint32_t)sd->name_len);
		for (uint32_t k = 0; k < sd->n_chunks; k++) {
			const struct schunk *c = &sd->c[k];
			raw_chnk(r, id++, (uint32_t)d, k, k / sample_h.page_chunks, c->n, c->ids,
			    c->off, c->len, c->text);
		}
		raw_doce(r, (uint32_t)d, sd->bytes, sd->n_tokens, sd->n_chunks, sd->flags);
	}
	raw_end(r, NDOCS, id, NULL);
}

static void
test_round_trip(void)
{
	struct fm_chunk_end wend = { 0 }, rend = { 0 };
	struct fm_err err;
	FILE *f = tmpfile();
	unsigned char *buf;
	struct raw raw;
	size_t n;
	int st;

	if (!ok(f != NULL, "tmpfile"))
		return;
	st = write_sample(f, &wend, NULL, &err);
	ok(st == FM_OK, "write the sample to a file%s%s", st ? ": " : "", st ? err.msg : "");
	ok(wend.n_docs == NDOCS && wend.n_chunks == 5, "writer's end: %" PRIu32 " docs, %"
	    PRIu64 " chunks", wend.n_docs, wend.n_chunks);
	rewind(f);
	st = read_sample(f, &rend, &err);
	ok(st == FM_OK, "read it back record by record%s%s", st ? ": " : "", st ? err.msg : "");
	ok(rend.content_hash == wend.content_hash, "content hash %016" PRIx64 " read back",
	    rend.content_hash);
	fclose(f);

	buf = sample_bytes(&n);
	raw_sample(&raw);
	ok(raw.n == n && memcmp(raw.b, buf, n) == 0,
	    "writer output equals the specification's encoding byte for byte (%zu bytes)", n);
	ok(fm_fnv64(FM_FNV64_INIT, buf, n - 32) == wend.content_hash,
	    "content hash is FNV-1a of the bytes before END");
	ok(read_mem(buf, n, &err) == FM_OK, "memory copy reads");
	free(buf);
}

/* The pipe test: the writer stops after its first chunk until the reader has it. */
static int ack_fd = -1;

static void
wait_for_ack(void)
{
	char c;

	if (read(ack_fd, &c, 1) != 1)
		_exit(3);
}

static void
test_pipe(void)
{
	int data[2], ack[2], status;
	struct fm_chunkr *r;
	struct fm_chunk_record rec;
	struct fm_err err;
	pid_t pid;
	FILE *f;
	int st, n = 0, early;

	if (!ok(pipe(data) == 0 && pipe(ack) == 0, "pipes"))
		return;
	fflush(stdout);
	if ((pid = fork()) == 0) {
		FILE *w = fdopen(data[1], "w");

		close(data[0]);
		close(ack[1]);
		ack_fd = ack[0];
		alarm(20);
		st = write_sample(w, NULL, wait_for_ack, &err);
		_exit(st == FM_OK && fclose(w) == 0 ? 0 : 2);
	}
	close(data[1]);
	close(ack[0]);
	alarm(20);   /* a reader that waited for end of file would hang here */
	f = fdopen(data[0], "r");
	r = fm_chunkr_open(f, &err);
	if (!ok(r != NULL, "open the reader on a pipe%s%s", r ? "" : ": ", r ? "" : err.msg))
		return;
	st = fm_chunkr_next(r, &rec, &err);
	early = st == FM_OK && rec.kind == FM_REC_DOC_BEGIN;
	st = fm_chunkr_next(r, &rec, &err);
	early = early && st == FM_OK && rec.kind == FM_REC_CHUNK && rec.chunk.id == 0;
	ok(early, "first document's first chunk read while the writer waits");
	if (write(ack[1], "k", 1) != 1)
		ok(0, "ack");
	close(ack[1]);
	while ((st = fm_chunkr_next(r, &rec, &err)) == FM_OK && rec.kind != FM_REC_END)
		n++;
	ok(st == FM_OK && rec.kind == FM_REC_END && rec.end.n_chunks == 5,
	    "rest of the stream read to END (%d records)%s%s", n, st ? ": " : "",
	    st ? err.msg : "");
	fm_chunkr_free(r);
	fclose(f);
	waitpid(pid, &status, 0);
	alarm(0);
	ok(WIFEXITED(status) && WEXITSTATUS(status) == 0, "writer process succeeded");
}

/* The writer: each refusal leaves it usable, and the file stays valid. */
static void
test_writer_checks(void)
{
	static const int32_t ids4[4] = { 1, 2, 3, 4 }, ids_next[4] = { 4, 5, 6, 7 },
	    bad_overlap[4] = { 9, 5, 6, 7 }, ids_oov[2] = { 5, 1000 }, ids_neg[2] = { 5, -1 };
	struct fm_chunk_header h = sample_h;
	struct fm_chunkw *w;
	struct fm_err err;
	struct fm_chunk c;
	struct fm_doc_end e;
	char *buf = NULL, longname[FM_CHUNK_MAX_NAME + 1];
	size_t n;
	FILE *f;
	int st;

	h.overlap = 4;
	ok(fm_chunkw_open(stdout, &h, &err) == NULL && err.status == FM_EDATA,
	    "header refused: %s", err.msg);
	h = sample_h;
	h.page_chunks = 0;
	ok(fm_chunkw_open(stdout, &h, &err) == NULL, "header refused: %s", err.msg);
	h = sample_h;
	h.chunk_tokens = FM_CHUNK_MAX_TOKENS + 1;
	ok(fm_chunkw_open(stdout, &h, &err) == NULL, "header refused: %s", err.msg);
	h = sample_h;
	h.n_vocab = 0;
	ok(fm_chunkw_open(stdout, &h, &err) == NULL, "header refused: %s", err.msg);
	h = sample_h;
	strcpy(h.tok_kind, "");
	ok(fm_chunkw_open(stdout, &h, &err) == NULL, "header refused: %s", err.msg);
	h = sample_h;
	strcpy(h.tok_kind, "Llama");
	ok(fm_chunkw_open(stdout, &h, &err) == NULL, "header refused: %s", err.msg);
	h = sample_h;
	h.version = 2;
	ok(fm_chunkw_open(stdout, &h, &err) == NULL, "header refused: %s", err.msg);

	f = open_memstream(&buf, &n);
	w = fm_chunkw_open(f, &sample_h, &err);
	if (!ok(w != NULL, "writer opens"))
		return;
	c = (struct fm_chunk){ .id = 0, .n_tokens = 4, .ids = ids4, .length = 0, .text = "" };
	ok(fm_chunkw_chunk(w, &c, &err) == FM_EDATA, "chunk outside a document: %s", err.msg);
	e = (struct fm_doc_end){ 0 };
	ok(fm_chunkw_doc_end(w, &e, &err) == FM_EDATA, "end outside a document: %s", err.msg);
	memset(longname, 'x', sizeof longname);
	ok(fm_chunkw_doc_begin(w, longname, sizeof longname, &err) == FM_EDATA,
	    "name too long: %s", err.msg);
	ok(fm_chunkw_doc_begin(w, "a\0b", 3, &err) == FM_EDATA, "nul in name: %s", err.msg);
	ok(fm_chunkw_doc_begin(w, longname, FM_CHUNK_MAX_NAME, &err) == FM_OK,
	    "name of the maximum length accepted");
	ok(fm_chunkw_doc_begin(w, "x", 1, &err) == FM_EDATA, "nested document: %s", err.msg);

	c.id = 1;
	ok(fm_chunkw_chunk(w, &c, &err) == FM_EDATA, "%s", err.msg);
	c.id = 0;
	c.doc = 1;
	ok(fm_chunkw_chunk(w, &c, &err) == FM_EDATA, "%s", err.msg);
	c.doc = 0;
	c.chunk = 1;
	ok(fm_chunkw_chunk(w, &c, &err) == FM_EDATA, "%s", err.msg);
	c.chunk = 0;
	c.page = 1;
	ok(fm_chunkw_chunk(w, &c, &err) == FM_EDATA, "%s", err.msg);
	c.page = 0;
	c.n_tokens = 0;
	ok(fm_chunkw_chunk(w, &c, &err) == FM_EDATA, "%s", err.msg);
	c.n_tokens = 5;
	ok(fm_chunkw_chunk(w, &c, &err) == FM_EDATA, "%s", err.msg);
	c.n_tokens = 2;
	c.ids = ids_oov;
	ok(fm_chunkw_chunk(w, &c, &err) == FM_EDATA, "%s", err.msg);
	c.ids = ids_neg;
	ok(fm_chunkw_chunk(w, &c, &err) == FM_EDATA, "%s", err.msg);
	c.n_tokens = 1;
	c.offset = UINT64_MAX;
	c.length = 1;
	c.text = "x";
	ok(fm_chunkw_chunk(w, &c, &err) == FM_EDATA, "%s", err.msg);
	c.offset = 0;
	c.length = FM_CHUNK_MAX_RECORD;
	ok(fm_chunkw_chunk(w, &c, &err) == FM_EDATA, "%s", err.msg);

	c = (struct fm_chunk){ .id = 0, .n_tokens = 4, .ids = ids4, .offset = 0, .length = 2,
	    .text = "ab" };
	ok(fm_chunkw_chunk(w, &c, &err) == FM_OK, "full chunk 0 accepted");
	c = (struct fm_chunk){ .id = 1, .chunk = 1, .n_tokens = 4, .ids = bad_overlap,
	    .offset = 1, .length = 2, .text = "bc" };
	ok(fm_chunkw_chunk(w, &c, &err) == FM_EDATA, "%s", err.msg);
	c.ids = ids_next;
	c.n_tokens = 1;
	ok(fm_chunkw_chunk(w, &c, &err) == FM_EDATA, "%s", err.msg);
	c.n_tokens = 3;
	ok(fm_chunkw_chunk(w, &c, &err) == FM_OK, "short chunk 1 accepted");
	c = (struct fm_chunk){ .id = 2, .chunk = 2, .page = 1, .n_tokens = 2, .ids = ids_next + 2,
	    .offset = 2, .length = 1, .text = "c" };
	ok(fm_chunkw_chunk(w, &c, &err) == FM_EDATA, "%s", err.msg);
	ok(fm_chunkw_finish(w, NULL, &err) == FM_EDATA, "%s", err.msg);

	e = (struct fm_doc_end){ .doc = 0, .bytes = 3, .n_tokens = 6, .n_chunks = 2 };
	e.doc = 1;
	ok(fm_chunkw_doc_end(w, &e, &err) == FM_EDATA, "%s", err.msg);
	e.doc = 0;
	e.n_chunks = 3;
	ok(fm_chunkw_doc_end(w, &e, &err) == FM_EDATA, "%s", err.msg);
	e.n_chunks = 2;
	e.n_tokens = 7;
	ok(fm_chunkw_doc_end(w, &e, &err) == FM_EDATA, "%s", err.msg);
	e.n_tokens = 6;
	e.bytes = 2;
	ok(fm_chunkw_doc_end(w, &e, &err) == FM_EDATA, "%s", err.msg);
	e.bytes = 3;
	e.flags = 2;
	ok(fm_chunkw_doc_end(w, &e, &err) == FM_EDATA, "%s", err.msg);
	e.flags = FM_DOC_INCOMPLETE;
	ok(fm_chunkw_doc_end(w, &e, &err) == FM_OK, "document end accepted");
	ok(fm_chunkw_finish(w, NULL, &err) == FM_OK, "finish");
	ok(fm_chunkw_doc_begin(w, "x", 1, &err) == FM_EDATA, "nothing after finish: %s",
	    err.msg);
	fm_chunkw_free(w);
	fclose(f);
	st = read_mem(buf, n, &err);
	ok(st == FM_OK, "file written around the refusals reads%s%s", st ? ": " : "",
	    st ? err.msg : "");
	free(buf);
}

/* Write errors: FM_EIO, errno kept for the caller (EPIPE, ENOSPC). */
static void
test_write_errors(void)
{
	struct fm_err err;
	struct fm_chunkw *w;
	int p[2], st = FM_OK, e = 0;
	FILE *f;

	signal(SIGPIPE, SIG_IGN);
	if (pipe(p) != 0)
		return;
	close(p[0]);
	f = fdopen(p[1], "w");
	w = fm_chunkw_open(f, &sample_h, &err);
	if (w == NULL) {
		st = err.status;
		e = errno;
	} else {
		st = fm_chunkw_finish(w, NULL, &err);
		e = errno;
	}
	ok(st == FM_EIO && e == EPIPE, "closed pipe: FM_EIO, errno EPIPE (%s)", err.msg);
	if (w != NULL)
		ok(fm_chunkw_doc_begin(w, "x", 1, &err) == FM_EIO,
		    "writer refuses after a write error: %s", err.msg);
	fm_chunkw_free(w);
	fclose(f);

	/* Unbuffered, the header's own write fails and open reports it. */
	if (pipe(p) != 0)
		return;
	close(p[0]);
	f = fdopen(p[1], "w");
	setvbuf(f, NULL, _IONBF, 0);
	w = fm_chunkw_open(f, &sample_h, &err);
	e = errno;
	ok(w == NULL && err.status == FM_EIO && e == EPIPE,
	    "unbuffered closed pipe: open fails, errno EPIPE (%s)", err.msg);
	fm_chunkw_free(w);
	fclose(f);
	signal(SIGPIPE, SIG_DFL);

	if ((f = fopen("/dev/full", "w")) != NULL) {
		w = fm_chunkw_open(f, &sample_h, &err);
		st = w == NULL ? err.status : fm_chunkw_finish(w, NULL, &err);
		e = errno;
		ok(st == FM_EIO && e == ENOSPC, "/dev/full: FM_EIO, errno ENOSPC (%s)", err.msg);
		fm_chunkw_free(w);
		fclose(f);
	}
}

/* Start offsets of the records of buf, header excluded; returns their number. */
static size_t
record_starts(const unsigned char *buf, size_t n, size_t *starts, size_t max)
{
	size_t pos = get_u32(buf + 12), k = 0;

	while (pos + 8 <= n && k < max) {
		starts[k++] = pos;
		pos += 12 + (size_t)get_u32(buf + pos + 4);
	}
	return k;
}

static void
test_truncation(void)
{
	size_t n, starts[64], nrec, hlen, bad = 0;
	unsigned char *buf = sample_bytes(&n);
	char want[64], first[512] = "";
	struct fm_err err;

	nrec = record_starts(buf, n, starts, 64);
	hlen = get_u32(buf + 12);
	for (size_t len = 0; len < n; len++) {
		int st = read_mem(buf, len, &err);
		size_t k = 0;

		if (len == 0)
			snprintf(want, sizeof want, "empty input, not a chunk file");
		else if (len < hlen)
			snprintf(want, sizeof want, "truncated header");
		else {
			while (k + 1 < nrec && starts[k + 1] <= len)
				k++;
			snprintf(want, sizeof want, "truncated at record %zu", k);
		}
		if (st != FM_EDATA || strcmp(err.msg, want) != 0) {
			if (bad++ == 0)
				snprintf(first, sizeof first, "first at %zu: status %d \"%s\", expected \"%s\"",
				    len, st, err.msg, want);
		}
	}
	ok(bad == 0, "every truncation (%zu lengths) is FM_EDATA naming the record%s%s", n,
	    bad ? ", " : "", first);
	free(buf);
}

static void
test_byte_changes(void)
{
	size_t n, bad = 0, tried = 0;
	unsigned char *buf = sample_bytes(&n);
	char first[400] = "";
	struct fm_err err;

	for (size_t p = 0; p < n; p++) {
		unsigned char orig = buf[p];

		for (int x = 1; x < 256; x++) {
			int st;

			buf[p] = orig ^ x;
			st = read_mem(buf, n, &err);
			tried++;
			if (st != FM_EDATA && bad++ == 0)
				snprintf(first, sizeof first, ": byte %zu ^ 0x%02x gives status %d %s",
				    p, x, st, err.msg);
		}
		buf[p] = orig;
	}
	ok(bad == 0, "every single-byte change (%zu files) is FM_EDATA%s", tried, first);
	ok(read_mem(buf, n, &err) == FM_OK, "the untouched sample still reads");

	/* Appended: one byte, then a second copy of the whole file. */
	{
		unsigned char *two = malloc(2 * n);

		memcpy(two, buf, n);
		memcpy(two + n, buf, n);
		ok(read_mem(two, n + 1, &err) == FM_EDATA &&
		    strcmp(err.msg, "trailing data after end record") == 0, "one byte after END: %s",
		    err.msg);
		ok(read_mem(two, 2 * n, &err) == FM_EDATA &&
		    strcmp(err.msg, "trailing data after end record") == 0,
		    "two files concatenated: %s", err.msg);
		free(two);
	}
	free(buf);
}

/* Reads a raw file and checks the refusal names what it must. */
static void
refused(const struct raw *r, const char *want, const char *what)
{
	struct fm_err err;
	int st = read_mem(r->b, r->n, &err);

	ok(st == FM_EDATA && strstr(err.msg, want) != NULL, "%s: \"%s\"%s%s", what, err.msg,
	    st == FM_EDATA && strstr(err.msg, want) ? "" : ", expected ", 
	    st == FM_EDATA && strstr(err.msg, want) ? "" : want);
}

static void
test_reader_rules(void)
{
	static const int32_t a[4] = { 1, 2, 3, 4 }, b[4] = { 4, 5, 6, 7 }, oov[1] = { 1000 },
	    neg[1] = { -5 };
	struct fm_chunk_header h = sample_h;
	struct raw r;
	uint64_t zero = 0;
	struct fm_err err;
	static char longname[FM_CHUNK_MAX_NAME + 1];

	/* The header. */
	r.n = 0;
	raw_header(&r, 2, &sample_h);
	refused(&r, "unsupported chunk file version 2", "newer version");
	r.n = 0;
	raw_header(&r, 0, &sample_h);
	refused(&r, "invalid chunk file version 0", "version 0");
	r.n = 0;
	raw_header(&r, 1, &sample_h);
	r.b[0] = 'F';
	refused(&r, "not a chunk file", "bad magic");
	r.n = 0;
	raw_header(&r, 1, &sample_h);
	r.b[r.n - 1] ^= 1;
	refused(&r, "header checksum mismatch", "header crc");
	r.n = 0;
	raw_header(&r, 1, &sample_h);
	set_u32(r.b + 12, 0xffffffffu);
	refused(&r, "header length 4294967295 out of range", "hostile header length");
	h.overlap = 4;
	r.n = 0;
	raw_header(&r, 1, &h);
	refused(&r, "invalid header: overlap 4 not below chunk_tokens 4", "header overlap");
	h = sample_h;
	h.page_chunks = 0;
	r.n = 0;
	raw_header(&r, 1, &h);
	refused(&r, "invalid header: page_chunks", "header page_chunks");
	h = sample_h;
	strcpy(h.tok_kind, "");
	r.n = 0;
	raw_header(&r, 1, &h);
	refused(&r, "invalid header: tokenizer kind must be 1 to 15 bytes", "empty tokenizer kind");
	h = sample_h;
	{
		/* A kind length that disagrees with header_len, with a valid CRC. */
		r.n = 0;
		raw_header(&r, 1, &h);
		r.b[40] = 6;
		r.n -= 4;
		raw_u32(&r, fm_crc32c(0, r.b, r.n));
		refused(&r, "does not match its strings", "string lengths against header_len");
	}
	h.model_name[0] = '\0';
	r.n = 0;
	raw_header(&r, 1, &h);
	raw_end(&r, 0, 0, NULL);
	ok(read_mem(r.b, r.n, &err) == FM_OK, "empty model name and no documents: valid");

	/* Records: each file breaks one rule, with every checksum right. */
#define BEGIN() (r.n = 0, raw_header(&r, 1, &sample_h))
	BEGIN();
	raw_chnk(&r, 0, 0, 0, 0, 4, a, 0, 0, "");
	refused(&r, "chunk 0 outside a document at record 0", "chunk before DOCB");
	BEGIN();
	raw_docb(&r, 1, "x", 1);
	refused(&r, "document 1 out of sequence (expected 0) at record 0", "DOCB index");
	BEGIN();
	raw_docb(&r, 0, "x", 1);
	raw_docb(&r, 1, "y", 1);
	refused(&r, "document 1 begins before document 0 ends at record 1", "nested DOCB");
	BEGIN();
	raw_docb(&r, 0, "a\0b", 3);
	refused(&r, "nul byte at record 0", "NUL in a name");
	BEGIN();
	memset(longname, 'n', sizeof longname);
	raw_docb(&r, 0, longname, FM_CHUNK_MAX_NAME + 1);
	refused(&r, "record length 4105 wrong for its type at record 0", "long name");
	BEGIN();
	raw_docb(&r, 0, "abc", 3);
	set_u32(r.b + r.n - 4 - 3 - 4, 2);
	refused(&r, "does not match its name length at record 0", "name length against record");
	BEGIN();
	raw_docb(&r, 0, "x", 1);
	raw_chnk(&r, 1, 0, 0, 0, 4, a, 0, 0, "");
	refused(&r, "chunk id 1 out of sequence (expected 0) at record 1", "chunk id");
	BEGIN();
	raw_docb(&r, 0, "x", 1);
	raw_chnk(&r, 0, 1, 0, 0, 4, a, 0, 0, "");
	refused(&r, "names document 1 inside document 0", "chunk's document");
	BEGIN();
	raw_docb(&r, 0, "x", 1);
	raw_chnk(&r, 0, 0, 1, 0, 4, a, 0, 0, "");
	refused(&r, "has index 1 (expected 0)", "chunk index");
	BEGIN();
	raw_docb(&r, 0, "x", 1);
	raw_chnk(&r, 0, 0, 0, 0, 4, a, 0, 0, "");
	raw_chnk(&r, 1, 0, 1, 0, 4, b, 0, 0, "");
	raw_chnk(&r, 2, 0, 2, 0, 1, b + 3, 0, 0, "");
	refused(&r, "chunk 2 is on page 0 (expected 1) at record 3", "page");
	BEGIN();
	raw_docb(&r, 0, "x", 1);
	raw_chnk(&r, 0, 0, 0, 0, 0, a, 0, 0, "");
	refused(&r, "has 0 tokens", "empty chunk");
	BEGIN();
	raw_docb(&r, 0, "x", 1);
	raw_chnk(&r, 0, 0, 0, 0, 1, oov, 0, 0, "");
	refused(&r, "id 1000 outside the vocabulary of 1000", "id = n_vocab");
	BEGIN();
	raw_docb(&r, 0, "x", 1);
	raw_chnk(&r, 0, 0, 0, 0, 1, neg, 0, 0, "");
	refused(&r, "id -5 outside the vocabulary", "negative id");
	BEGIN();
	raw_docb(&r, 0, "x", 1);
	raw_chnk(&r, 0, 0, 0, 0, 2, a, 0, 0, "");
	raw_chnk(&r, 1, 0, 1, 0, 2, a + 1, 0, 0, "");
	refused(&r, "follows a short chunk", "short chunk not last");
	BEGIN();
	raw_docb(&r, 0, "x", 1);
	raw_chnk(&r, 0, 0, 0, 0, 4, a, 0, 0, "");
	raw_chnk(&r, 1, 0, 1, 0, 4, a, 0, 0, "");
	refused(&r, "does not begin with the last 1 tokens", "overlap");
	BEGIN();
	raw_docb(&r, 0, "x", 1);
	raw_chnk(&r, 0, 0, 0, 0, 4, a, 0, 0, "");
	raw_chnk(&r, 1, 0, 1, 0, 1, b, 0, 0, "");
	refused(&r, "not more than the overlap", "chunk with nothing new");
	BEGIN();
	raw_docb(&r, 0, "x", 1);
	raw_chnk(&r, 0, 0, 0, 0, 1, a, UINT64_MAX, 1, "x");
	refused(&r, "text span overflows", "offset + length overflow");
	BEGIN();
	raw_docb(&r, 0, "x", 1);
	raw_chnk(&r, 0, 0, 0, 0, 1, a, 0, 1, "x");
	set_u32(r.b + r.n - 4 - 1 - 4 - 4, 2);   /* length 2, record length unchanged */
	refused(&r, "does not match its token and text lengths at record 1", "text length");
	BEGIN();
	raw_docb(&r, 0, "x", 1);
	raw_doce(&r, 0, 0, 0, 1, 0);
	refused(&r, "document 0 claims 1 chunks, has 0 at record 1", "DOCE chunk count");
	BEGIN();
	raw_docb(&r, 0, "x", 1);
	raw_chnk(&r, 0, 0, 0, 0, 4, a, 0, 0, "");
	raw_chnk(&r, 1, 0, 1, 0, 4, b, 0, 0, "");
	raw_doce(&r, 0, 0, 8, 2, 0);
	refused(&r, "claims 8 tokens, its chunks hold 7", "DOCE token count");
	BEGIN();
	raw_docb(&r, 0, "x", 1);
	raw_chnk(&r, 0, 0, 0, 0, 1, a, 3, 4, "abcd");
	raw_doce(&r, 0, 6, 1, 1, 0);
	refused(&r, "of 6 bytes has a chunk ending at byte 7", "DOCE bytes");
	BEGIN();
	raw_docb(&r, 0, "x", 1);
	raw_doce(&r, 0, 0, 0, 0, 4);
	refused(&r, "unknown flags 0x4", "DOCE flags");
	BEGIN();
	raw_docb(&r, 0, "x", 1);
	raw_doce(&r, 1, 0, 0, 0, 0);
	refused(&r, "end of document 1 inside document 0", "DOCE index");
	BEGIN();
	raw_doce(&r, 0, 0, 0, 0, 0);
	refused(&r, "outside a document at record 0", "DOCE without DOCB");
	BEGIN();
	raw_docb(&r, 0, "x", 1);
	raw_end(&r, 1, 0, NULL);
	refused(&r, "end of file inside document 0 at record 1", "END inside a document");
	BEGIN();
	raw_docb(&r, 0, "x", 1);
	raw_doce(&r, 0, 0, 0, 0, 0);
	raw_end(&r, 2, 0, NULL);
	refused(&r, "end record claims 2 documents, file has 1 at record 2", "END documents");
	BEGIN();
	raw_end(&r, 0, 1, NULL);
	refused(&r, "end record claims 1 chunks, file has 0", "END chunks");
	BEGIN();
	raw_end(&r, 0, 0, &zero);
	refused(&r, "content hash mismatch at record 0", "END hash");
	BEGIN();
	raw_docb(&r, 0, "x", 1);
	raw_doce(&r, 0, 0, 0, 0, 0);
	refused(&r, "truncated at record 2", "no END");
	BEGIN();
	{
		size_t s = raw_open(&r, "XTRA");
		raw_u32(&r, 0);
		raw_close(&r, s);
	}
	refused(&r, "unknown record type 0x41525458 at record 0", "unknown tag");
	BEGIN();
	{
		size_t s = raw_open(&r, "DOCE");
		raw_u32(&r, 0);
		raw_close(&r, s);
	}
	refused(&r, "record length 4 wrong for its type at record 0", "DOCE length");
	BEGIN();
	raw_docb(&r, 0, "x", 1);
	r.b[r.n - 1] ^= 0x10;
	refused(&r, "checksum mismatch at record 0", "record crc");
#undef BEGIN
}

/* Lengths that claim far more than the file holds. */
static int
hostile_reads(void)
{
	struct raw r;
	struct fm_err err;
	int bad = 0;
	size_t s;

	/* u32 max payload: refused from the length alone. */
	r.n = 0;
	raw_header(&r, 1, &sample_h);
	raw_docb(&r, 0, "x", 1);
	raw_put(&r, "CHNK", 4);
	raw_u32(&r, UINT32_MAX);
	bad += read_mem(r.b, r.n, &err) != FM_EDATA ||
	    strcmp(err.msg, "record length 4294967295 exceeds the limit of 268435456 at record 1");
	/* A DOCB claiming a name of u32 max. */
	r.n = 0;
	raw_header(&r, 1, &sample_h);
	raw_put(&r, "DOCB", 4);
	raw_u32(&r, 8 + FM_CHUNK_MAX_NAME);
	raw_u32(&r, 0);
	raw_u32(&r, UINT32_MAX);
	bad += read_mem(r.b, r.n, &err) != FM_EDATA || strstr(err.msg, "exceeds 4096") == NULL;
	/* A chunk claiming u32 max tokens. */
	r.n = 0;
	raw_header(&r, 1, &sample_h);
	raw_docb(&r, 0, "x", 1);
	s = raw_open(&r, "CHNK");
	raw_u64(&r, 0);
	raw_u32(&r, 0);
	raw_u32(&r, 0);
	raw_u32(&r, 0);
	raw_u32(&r, UINT32_MAX);
	raw_u64(&r, 0);
	raw_u32(&r, 0);
	set_u32(r.b + s + 4, FM_CHUNK_MAX_RECORD);
	bad += read_mem(r.b, r.n, &err) != FM_EDATA ||
	    strstr(err.msg, "exceeds chunk_tokens") == NULL;
	/* The largest legal record, claimed by a file of a few hundred bytes. */
	r.n = 0;
	raw_header(&r, 1, &sample_h);
	raw_docb(&r, 0, "x", 1);
	s = raw_open(&r, "CHNK");
	raw_u64(&r, 0);
	raw_u32(&r, 0);
	raw_u32(&r, 0);
	raw_u32(&r, 0);
	raw_u32(&r, 1);
	raw_u64(&r, 0);
	raw_u32(&r, FM_CHUNK_MAX_RECORD - 40);
	raw_u32(&r, 1);
	raw_put(&r, "some text", 9);
	set_u32(r.b + s + 4, FM_CHUNK_MAX_RECORD);
	bad += read_mem(r.b, r.n, &err) != FM_EDATA ||
	    strcmp(err.msg, "truncated at record 1") != 0;
	if (bad)
		printf("# last message: %s\n", err.msg);
	return bad;
}

static void
test_hostile(void)
{
#ifndef UNDER_ASAN
	pid_t pid;
	int status;

	/*
	 * In a child whose address space cannot grow by more than 32 MiB: a
	 * reader that allocated what a length claims would fail with ENOMEM.
	 */
	fflush(stdout);
	if ((pid = fork()) == 0) {
		FILE *f = fopen("/proc/self/statm", "r");
		unsigned long pages = 0;
		struct rlimit rl;

		if (f == NULL || fscanf(f, "%lu", &pages) != 1)
			_exit(2);
		fclose(f);
		rl.rlim_cur = rl.rlim_max = pages * (unsigned long)sysconf(_SC_PAGESIZE) + (32ul << 20);
		if (setrlimit(RLIMIT_AS, &rl) != 0)
			_exit(2);
		_exit(hostile_reads() ? 1 : 0);
	}
	waitpid(pid, &status, 0);
	ok(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	    "hostile lengths refused within 32 MiB of address space (status %d)", status);
#else
	ok(hostile_reads() == 0, "hostile lengths refused (address-space limit skipped under ASan)");
#endif
}

/* After END, and after an error, the reader answers FM_EDATA. */
static void
test_reader_states(void)
{
	size_t n;
	unsigned char *buf = sample_bytes(&n);
	FILE *f = fmemopen(buf, n, "r");
	struct fm_chunkr *r = fm_chunkr_open(f, NULL);
	struct fm_chunk_record rec;
	struct fm_err err;
	int st;

	while ((st = fm_chunkr_next(r, &rec, NULL)) == FM_OK && rec.kind != FM_REC_END)
		;
	ok(st == FM_OK, "reads with a NULL error record");
	ok(fm_chunkr_next(r, &rec, &err) == FM_EDATA, "next after END: %s", err.msg);
	ok(fm_chunkr_next(r, &rec, &err) == FM_EDATA, "and again: %s", err.msg);
	fm_chunkr_free(r);
	fclose(f);
	free(buf);

	/* A read error is FM_EIO, not a damaged file. */
	if ((f = fopen("/", "r")) != NULL) {
		r = fm_chunkr_open(f, &err);
		ok(r == NULL && err.status == FM_EIO, "reading a directory: FM_EIO (%s)", err.msg);
		fm_chunkr_free(r);
		fclose(f);
	}
}

/*
 * The committed corpus, written by tests/fuzz/gen_chunkfile_corpus.py (an
 * implementation of its own): valid-* files must read, bad-* be refused.
 */
static void
test_corpus(void)
{
	const char *top = getenv("FM_TOP");
	char dir[4096], path[8192];
	struct dirent *de;
	DIR *d;
	int nvalid = 0, nbad = 0;

	snprintf(dir, sizeof dir, "%s/tests/fuzz/corpus/chunkfile", top ? top : ".");
	if ((d = opendir(dir)) == NULL) {
		ok(1, "# SKIP %s not found (run from the top directory or set FM_TOP)", dir);
		return;
	}
	while ((de = readdir(d)) != NULL) {
		int valid = strncmp(de->d_name, "valid-", 6) == 0;
		struct fm_chunkr *r;
		struct fm_chunk_record rec;
		struct fm_err err = { 0 };
		FILE *f;
		int st;

		if (!valid && strncmp(de->d_name, "bad-", 4) != 0)
			continue;
		snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
		if ((f = fopen(path, "rb")) == NULL) {
			ok(0, "open %s", path);
			continue;
		}
		if ((r = fm_chunkr_open(f, &err)) == NULL)
			st = err.status;
		else
			while ((st = fm_chunkr_next(r, &rec, &err)) == FM_OK && rec.kind != FM_REC_END)
				;
		ok(valid ? st == FM_OK : st == FM_EDATA, "corpus %s: %s", de->d_name,
		    st == FM_OK ? "valid" : err.msg);
		fm_chunkr_free(r);
		fclose(f);
		valid ? nvalid++ : nbad++;
	}
	closedir(d);
	ok(nvalid >= 3 && nbad >= 3, "corpus has %d valid and %d damaged files", nvalid, nbad);
}

int
main(void)
{
	test_round_trip();
	test_pipe();
	test_writer_checks();
	test_write_errors();
	test_truncation();
	test_byte_changes();
	test_reader_rules();
	test_hostile();
	test_reader_states();
	test_corpus();
	return done_testing();
}
