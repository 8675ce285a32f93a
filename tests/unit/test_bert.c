/*
 * test_bert.c - the BERT encoder against PyTorch.  The model is a
 * random-weight BERT shaped like all-MiniLM-L6-v2 (384 dims, 12 heads, 6
 * layers, FFN 1536, the 30522-token bge vocabulary), written to GGUF here,
 * deterministically from a seed, so CI regenerates it without Python.
 * bench/bert_reference.py ran the same file through transformers' BertModel
 * and wrote tests/fixtures/bert-random-ref.txt: for fixed texts the token ids
 * it was given and the pooled, normalised vectors (mean and CLS).  This test
 * encodes the same ids in one packed batch and wants cosine >= 0.9999 for
 * every vector, and checks that our WordPiece gives those ids for the texts.
 *
 *   test_bert                      run the test
 *   test_bert --write-gguf PATH    write the model, PATH.ids (the texts' ids) and
 *                                  PATH.txt (the texts, one per line)
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bert.h"
#include "embedfile.h"
#include "gguf.h"
#include "tap.h"
#include "tokenizer.h"

#define SEED UINT64_C(20261123)
#define DIM 384
#define HEADS 12
#define LAYERS 6
#define FF 1536
#define CTX 512

/* The texts of the fixture, in its order. */
static const char *const texts[] = {
	"The quick brown fox jumps over the lazy dog.",
	"hello",
	"Lookahead Sparse Attention keeps only the query-critical part of the KV cache resident.",
	"A memory indexer scores every chunk against the current query; chunk vectors are "
	    "computed once, offline, in batch, and the query vector at selection time.",
	"Caf\xc3\xa9 na\xc3\xafve r\xc3\xa9sum\xc3\xa9 \xe2\x80\x94 accents, punctuation!? and "
	    "numbers 3.14159, 2026-11-23.",
	"\xe4\xb8\xad\xe6\x96\x87\xe5\xad\x97\xe7\xac\xa6 and CJK characters split one by one",
	"",
	"the the the the the the the the the the the the the the the the",
};
#define NTEXTS (sizeof texts / sizeof texts[0])

/* --- the writer of the random model ----------------------------------------- */

static uint64_t rng;

static double
uniform(void)   /* splitmix64, to [-1, 1) */
{
	uint64_t z = (rng += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	z ^= z >> 31;
	return (double)(z >> 11) / 4503599627370496.0 - 1.0;
}

struct wt {
	char name[64];
	uint32_t n_dims;
	uint64_t ne[2];
	int type;          /* FM_GGML_F32 or FM_GGML_F16 */
	double center, spread;   /* values center + spread * U(-1, 1) */
};

static void
w_bytes(FILE *f, const void *p, size_t n)
{
	if (fwrite(p, 1, n, f) != n) {
		perror("write");
		exit(1);
	}
}

static void w_u32(FILE *f, uint32_t v) { w_bytes(f, &v, 4); }
static void w_u64(FILE *f, uint64_t v) { w_bytes(f, &v, 8); }

static void
w_str(FILE *f, const char *s, size_t n)
{
	w_u64(f, n);
	w_bytes(f, s, n);
}

static size_t
scalar_size(enum fm_gguf_type t)
{
	static const size_t sz[] = { 1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8 };

	return t <= FM_GGUF_FLOAT64 ? sz[t] : 0;
}

/* A metadata value copied from another GGUF (the vocabulary's tokenizer). */
static void
w_value(FILE *f, const struct fm_gguf_value *v)
{
	switch (v->type) {
	case FM_GGUF_STRING:
		w_str(f, v->v.s.ptr, v->v.s.len);
		break;
	case FM_GGUF_ARRAY:
		w_u32(f, v->v.arr.elem);
		w_u64(f, v->v.arr.n);
		if (v->v.arr.elem == FM_GGUF_STRING || v->v.arr.elem == FM_GGUF_ARRAY)
			for (uint64_t i = 0; i < v->v.arr.n; i++)
				w_value(f, &v->v.arr.items[i]);
		else
			w_bytes(f, v->v.arr.raw, v->v.arr.n * scalar_size(v->v.arr.elem));
		break;
	default: {
		unsigned char b[8];
		uint64_t u = v->v.u;
		size_t n = scalar_size(v->type);

		if (v->type == FM_GGUF_FLOAT32) {
			float x = (float)v->v.f;
			memcpy(b, &x, 4);
		} else if (v->type == FM_GGUF_FLOAT64) {
			memcpy(b, &v->v.f, 8);
		} else {
			if (v->type == FM_GGUF_INT8 || v->type == FM_GGUF_INT16 ||
			    v->type == FM_GGUF_INT32 || v->type == FM_GGUF_INT64)
				u = (uint64_t)v->v.i;
			memcpy(b, &u, 8);
		}
		w_bytes(f, b, n);
	}
	}
}

static void
w_kv_str(FILE *f, const char *k, const char *s)
{
	w_str(f, k, strlen(k));
	w_u32(f, FM_GGUF_STRING);
	w_str(f, s, strlen(s));
}

static void
w_kv_u32(FILE *f, const char *k, uint32_t v)
{
	w_str(f, k, strlen(k));
	w_u32(f, FM_GGUF_UINT32);
	w_u32(f, v);
}

static int
write_gguf(const char *path, const char *vocab_path)
{
	struct fm_err err;
	struct fm_gguf *voc = fm_gguf_open(vocab_path, &err);
	struct wt *t;
	size_t nt = 0, cap = 16 + 16 * LAYERS;
	uint64_t n_vocab, ntok_kv = 0, off = 0;
	const struct fm_gguf_value *toks;
	FILE *f;
	float eps = 1e-12f;

	if (voc == NULL) {
		fprintf(stderr, "%s: %s\n", vocab_path, err.msg);
		return 1;
	}
	if (fm_gguf_get_arr(voc, "tokenizer.ggml.tokens", FM_GGUF_STRING, &toks, &err) != FM_OK) {
		fprintf(stderr, "%s: %s\n", vocab_path, err.msg);
		return 1;
	}
	n_vocab = toks->v.arr.n;
	t = calloc(cap, sizeof *t);
#define T2(nm, n0, n1, ty, c, s) do { struct wt *w_ = &t[nt++]; \
	snprintf(w_->name, sizeof w_->name, "%s", nm); w_->n_dims = 2; \
	w_->ne[0] = n0; w_->ne[1] = n1; w_->type = ty; w_->center = c; w_->spread = s; } while (0)
#define T1(nm, n0, c, s) do { struct wt *w_ = &t[nt++]; \
	snprintf(w_->name, sizeof w_->name, "%s", nm); w_->n_dims = 1; \
	w_->ne[0] = n0; w_->ne[1] = 1; w_->type = FM_GGML_F32; w_->center = c; w_->spread = s; } while (0)
	/* Spreads keep activations near unit size: U(-a, a) has deviation a / sqrt(3). */
	T2("token_embd.weight", DIM, n_vocab, FM_GGML_F16, 0, 1.7);
	T2("token_types.weight", DIM, 2, FM_GGML_F32, 0, 0.5);
	T2("position_embd.weight", DIM, CTX, FM_GGML_F16, 0, 0.5);
	T1("token_embd_norm.weight", DIM, 1, 0.2);
	T1("token_embd_norm.bias", DIM, 0, 0.1);
	for (int l = 0; l < LAYERS; l++) {
		char nm[64];
		double a = sqrt(3.0 / DIM), af = sqrt(3.0 / FF);
		static const char *const sq[] = { "attn_q", "attn_k", "attn_v", "attn_output" };

		for (int k = 0; k < 4; k++) {
			snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, sq[k]);
			/* Larger q and k than 1/sqrt(dim) make attention far from uniform. */
			T2(nm, DIM, DIM, FM_GGML_F16, 0, k < 2 ? 2 * a : a);
			snprintf(nm, sizeof nm, "blk.%d.%s.bias", l, sq[k]);
			T1(nm, DIM, 0, 0.1);
		}
		snprintf(nm, sizeof nm, "blk.%d.attn_output_norm.weight", l);
		T1(nm, DIM, 1, 0.2);
		snprintf(nm, sizeof nm, "blk.%d.attn_output_norm.bias", l);
		T1(nm, DIM, 0, 0.1);
		snprintf(nm, sizeof nm, "blk.%d.ffn_up.weight", l);
		T2(nm, DIM, FF, FM_GGML_F16, 0, a);
		snprintf(nm, sizeof nm, "blk.%d.ffn_up.bias", l);
		T1(nm, FF, 0, 0.1);
		snprintf(nm, sizeof nm, "blk.%d.ffn_down.weight", l);
		T2(nm, FF, DIM, FM_GGML_F16, 0, af);
		snprintf(nm, sizeof nm, "blk.%d.ffn_down.bias", l);
		T1(nm, DIM, 0, 0.1);
		snprintf(nm, sizeof nm, "blk.%d.layer_output_norm.weight", l);
		T1(nm, DIM, 1, 0.2);
		snprintf(nm, sizeof nm, "blk.%d.layer_output_norm.bias", l);
		T1(nm, DIM, 0, 0.1);
	}

	for (uint64_t i = 0; i < voc->n_kv; i++)
		if (voc->kv[i].key.len > 10 && memcmp(voc->kv[i].key.ptr, "tokenizer.", 10) == 0)
			ntok_kv++;
	if ((f = fopen(path, "wb")) == NULL) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return 1;
	}
	w_bytes(f, "GGUF", 4);
	w_u32(f, 3);
	w_u64(f, nt);
	w_u64(f, 13 + ntok_kv);
	w_kv_str(f, "general.architecture", "bert");
	w_kv_str(f, "general.name", "fm-random-bert");
	w_kv_u32(f, "general.alignment", 32);
	w_kv_u32(f, "bert.context_length", CTX);
	w_kv_u32(f, "bert.embedding_length", DIM);
	w_kv_u32(f, "bert.feed_forward_length", FF);
	w_kv_u32(f, "bert.block_count", LAYERS);
	w_kv_u32(f, "bert.attention.head_count", HEADS);
	w_str(f, "bert.attention.layer_norm_epsilon", 33);
	w_u32(f, FM_GGUF_FLOAT32);
	w_bytes(f, &eps, 4);
	w_str(f, "bert.attention.causal", 21);
	w_u32(f, FM_GGUF_BOOL);
	w_bytes(f, "", 1);
	w_kv_u32(f, "bert.pooling_type", FM_POOL_MEAN);
	w_kv_u32(f, "general.file_type", 1);
	w_str(f, "general.seed", 12);
	w_u32(f, FM_GGUF_UINT64);
	w_u64(f, SEED);
	for (uint64_t i = 0; i < voc->n_kv; i++)
		if (voc->kv[i].key.len > 10 && memcmp(voc->kv[i].key.ptr, "tokenizer.", 10) == 0) {
			w_str(f, voc->kv[i].key.ptr, voc->kv[i].key.len);
			w_u32(f, voc->kv[i].val.type);
			w_value(f, &voc->kv[i].val);
		}
	for (size_t i = 0; i < nt; i++) {
		uint64_t nb = t[i].ne[0] * t[i].ne[1] * (t[i].type == FM_GGML_F16 ? 2 : 4);

		w_str(f, t[i].name, strlen(t[i].name));
		w_u32(f, t[i].n_dims);
		for (uint32_t k = 0; k < t[i].n_dims; k++)
			w_u64(f, t[i].ne[k]);
		w_u32(f, (uint32_t)t[i].type);
		w_u64(f, off);
		off += (nb + 31) / 32 * 32;
	}
	while (ftell(f) % 32 != 0)
		w_bytes(f, "", 1);
	rng = SEED;
	for (size_t i = 0; i < nt; i++) {
		uint64_t n = t[i].ne[0] * t[i].ne[1], nb = n * (t[i].type == FM_GGML_F16 ? 2 : 4);

		for (uint64_t k = 0; k < n; k++) {
			float x = (float)(t[i].center + t[i].spread * uniform());

			if (t[i].type == FM_GGML_F16) {
				uint16_t h = fm_f32_to_f16(x);
				w_bytes(f, &h, 2);
			} else {
				w_bytes(f, &x, 4);
			}
		}
		for (; nb % 32 != 0; nb++)
			w_bytes(f, "", 1);
	}
	if (fclose(f) != 0) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return 1;
	}
	free(t);
	fm_gguf_close(voc);
	return 0;
}

/* The ids of every text as fm-embed makes them: WordPiece with [CLS] and [SEP]. */
static int
write_ids(const char *path, const struct fm_tok *tok)
{
	FILE *f = fopen(path, "w");
	struct fm_tokens tk = { 0 };
	struct fm_err err;

	if (f == NULL)
		return 1;
	for (size_t i = 0; i < NTEXTS; i++) {
		fm_tokens_clear(&tk);
		if (fm_tok_encode(tok, texts[i], strlen(texts[i]), FM_TOK_ADD_SPECIAL, &tk, &err) != FM_OK)
			return 1;
		for (size_t k = 0; k < tk.n; k++)
			fprintf(f, "%s%" PRId32, k ? " " : "", tk.ids[k]);
		fputc('\n', f);
	}
	fm_tokens_free(&tk);
	return fclose(f) != 0;
}

/* --- the test ------------------------------------------------------------------- */

struct ref {
	int pooling;
	uint32_t n;
	int32_t ids[CTX];
	float v[DIM];
};

/* Fixture lines: "mean|cls <TAB> id id ... <TAB> v0 v1 ... v383". */
static size_t
read_fixture(const char *path, struct ref *r, size_t max)
{
	FILE *f = fopen(path, "r");
	char *line = NULL, *p, *e;
	size_t cap = 0, n = 0;

	if (f == NULL)
		return 0;
	while (n < max && getline(&line, &cap, f) > 0) {
		if (line[0] == '#')
			continue;
		r[n].pooling = strncmp(line, "cls\t", 4) == 0 ? FM_POOL_CLS : FM_POOL_MEAN;
		p = strchr(line, '\t') + 1;
		r[n].n = 0;
		while (*p != '\t' && r[n].n < CTX) {
			r[n].ids[r[n].n++] = (int32_t)strtol(p, &e, 10);
			p = e;
			while (*p == ' ')
				p++;
		}
		for (int k = 0; k < DIM; k++) {
			r[n].v[k] = strtof(p, &e);
			p = e;
		}
		n++;
	}
	free(line);
	fclose(f);
	return n;
}

int
main(int argc, char **argv)
{
	const char *top = getenv("FM_TOP");
	char vocab[4096], fixture[4096], gguf[4096], ids_path[4200];
	static struct ref ref[2 * NTEXTS];
	struct fm_bert *b;
	struct fm_err err;
	size_t nref;
	FILE *f;
	int fd;

	snprintf(vocab, sizeof vocab, "%s/models/ggml-vocab-bert-bge.gguf", top ? top : ".");
	snprintf(fixture, sizeof fixture, "%s/tests/fixtures/bert-random-ref.txt", top ? top : ".");
	if (argc == 3 && strcmp(argv[1], "--write-gguf") == 0) {
		if (write_gguf(argv[2], vocab) != 0 || (b = fm_bert_open(argv[2], &err)) == NULL)
			return 1;
		snprintf(ids_path, sizeof ids_path, "%s.ids", argv[2]);
		if (write_ids(ids_path, fm_bert_tok(b)) != 0)
			return 1;
		snprintf(ids_path, sizeof ids_path, "%s.txt", argv[2]);
		if ((f = fopen(ids_path, "w")) == NULL)
			return 1;
		for (size_t i = 0; i < NTEXTS; i++)
			fprintf(f, "%s\n", texts[i]);
		if (fclose(f) != 0)
			return 1;
		fm_bert_close(b);
		return 0;
	}

	snprintf(gguf, sizeof gguf, "/tmp/fm-test-bert-XXXXXX");
	if ((fd = mkstemp(gguf)) < 0)
		return 1;
	close(fd);
	ok(write_gguf(gguf, vocab) == 0, "random BERT written from seed %" PRIu64, SEED);
	b = fm_bert_open(gguf, &err);
	ok(b != NULL, "it loads: %s", b ? "ok" : err.msg);
	if (b == NULL) {
		unlink(gguf);
		return done_testing();
	}
	ok(fm_bert_dim(b) == DIM && fm_bert_n_ctx(b) == CTX && fm_bert_pooling(b) == FM_POOL_MEAN,
	    "hyperparameters");
	printf("# encoder fingerprint %016" PRIx64 "\n", fm_bert_fingerprint(b));

	nref = read_fixture(fixture, ref, 2 * NTEXTS);
	ok(nref == 2 * NTEXTS, "fixture has %zu vectors", nref);
	if (nref == 2 * NTEXTS) {
		const int32_t *ids[2 * NTEXTS];
		uint32_t lens[2 * NTEXTS];
		static float out[2 * NTEXTS][DIM];
		struct fm_tokens tk = { 0 };
		double worst = 1, most_alike = -1;

		/* Our WordPiece must give the ids the reference was run on. */
		for (size_t i = 0; i < NTEXTS; i++) {
			fm_tokens_clear(&tk);
			fm_tok_encode(fm_bert_tok(b), texts[i], strlen(texts[i]), FM_TOK_ADD_SPECIAL,
			    &tk, &err);
			ok(tk.n == ref[i].n && memcmp(tk.ids, ref[i].ids, tk.n * 4) == 0,
			    "text %zu: %zu tokens as in the fixture", i, tk.n);
		}
		fm_tokens_free(&tk);
		for (int pool = FM_POOL_MEAN; pool <= FM_POOL_CLS; pool++) {
			size_t base = pool == FM_POOL_MEAN ? 0 : NTEXTS;

			for (size_t i = 0; i < NTEXTS; i++) {
				ids[i] = ref[base + i].ids;
				lens[i] = ref[base + i].n;
			}
			if (!ok(fm_bert_forward(b, ids, lens, NTEXTS, pool, out[base], &err) == FM_OK,
			    "forward pass, %zu sequences packed, %s pooling", NTEXTS,
			    fm_embed_pooling_name((unsigned)pool)))
				printf("# %s\n", err.msg);
		}
		for (size_t i = 0; i < 2 * NTEXTS; i++) {
			double dot = 0, nn = 0, nr = 0, c;

			for (int k = 0; k < DIM; k++) {
				dot += (double)out[i][k] * ref[i].v[k];
				nn += (double)out[i][k] * out[i][k];
				nr += (double)ref[i].v[k] * ref[i].v[k];
			}
			c = dot / sqrt(nn * nr);
			worst = c < worst ? c : worst;
			ok(c >= 0.9999, "%s vector %zu: cosine %.7f with PyTorch",
			    ref[i].pooling == FM_POOL_CLS ? "cls" : "mean", i % NTEXTS, c);
		}
		/* The check means something only if different texts give different vectors. */
		for (size_t i = 0; i < NTEXTS; i++)
			for (size_t j = i + 1; j < NTEXTS; j++) {
				double dot = 0;

				for (int k = 0; k < DIM; k++)
					dot += (double)ref[i].v[k] * ref[j].v[k];
				most_alike = dot > most_alike ? dot : most_alike;
			}
		ok(most_alike < 0.99, "distinct texts differ: largest reference cosine %.4f",
		    most_alike);
		printf("# worst cosine 1 - %.3g\n", 1 - worst);
	}
	fm_bert_close(b);
	unlink(gguf);
	return done_testing();
}
