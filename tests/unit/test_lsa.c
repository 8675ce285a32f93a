/*
 * test_lsa.c - the bookkeeping of Lookahead Sparse Attention against plain
 * references: the slot table over a thousand random windows (every chunk in
 * at most one slot, the two maps each other's inverse, only arrivals
 * copied, stayers never moved), the row list of a resident set, the cap of
 * a choice to the reserve (sink and recent first), the reading of
 * fm-select's lines, and attention through a row list against attention
 * over the same keys laid out in order.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "lsa.h"
#include "tap.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint32_t
next(uint32_t n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng % n);
}

/* A document of n chunks: chunk c has 1 + c % 5 tokens. */
static void
make_doc(struct fm_lsa_doc *d, uint32_t n)
{
	memset(d, 0, sizeof *d);
	d->n_chunks = n;
	d->start = malloc((n + 1) * sizeof *d->start);
	for (uint32_t c = 0; c < n; c++) {
		d->start[c] = d->n_tokens;
		d->n_tokens += 1 + c % 5;
		if (1 + c % 5 > d->max_chunk)
			d->max_chunk = 1 + c % 5;
	}
	d->start[n] = d->n_tokens;
}

static void
test_slots(void)
{
	enum { NC = 200, NS = 37, WINDOWS = 1000 };
	struct fm_lsa_slots s;
	struct fm_lsa_move moves[NS];
	uint32_t set[NS], prev_slot[NC];
	int bad_inverse = 0, bad_copies = 0, bad_moved = 0, bad_count = 0;

	ok(fm_lsa_slots_init(&s, NS, 8, NC, NULL) == FM_OK, "slot table of %d slots for %d chunks", NS, NC);
	for (int w = 0; w < WINDOWS; w++) {
		bool in[NC] = { false };
		uint32_t n = 0, want = next(NS + 1), arrivals = 0, nm;

		/* A random set of want chunks, ascending; often overlapping the last one. */
		for (uint32_t c = 0; c < NC && n < want; c++)
			if (next(NC) < want * 2 || (s.chunk_slot[c] >= 0 && next(3) > 0))
				set[n++] = c;
		for (uint32_t i = 0; i < n; i++) {
			in[set[i]] = true;
			arrivals += s.chunk_slot[set[i]] < 0;
		}
		for (uint32_t c = 0; c < NC; c++)
			prev_slot[c] = (uint32_t)s.chunk_slot[c];
		nm = fm_lsa_slots_update(&s, set, n, moves);
		bad_copies += nm != arrivals;
		bad_count += s.n_resident != n;
		for (uint32_t i = 0; i < nm; i++)
			bad_copies += prev_slot[moves[i].chunk] != (uint32_t)-1 ||
			    s.chunk_slot[moves[i].chunk] != (int32_t)moves[i].slot;
		for (uint32_t c = 0; c < NC; c++) {
			int32_t sl = s.chunk_slot[c];
			if (in[c] != (sl >= 0) || (sl >= 0 && s.slot_chunk[sl] != (int32_t)c))
				bad_inverse++;
			if (in[c] && prev_slot[c] != (uint32_t)-1 && (uint32_t)sl != prev_slot[c])
				bad_moved++;
		}
		for (uint32_t sl = 0; sl < NS; sl++)
			if (s.slot_chunk[sl] >= 0 && s.chunk_slot[s.slot_chunk[sl]] != (int32_t)sl)
				bad_inverse++;
	}
	ok(bad_inverse == 0, "%d windows: every resident chunk in exactly one slot, no other chunk in any (%d faults)",
	    WINDOWS, bad_inverse);
	ok(bad_copies == 0, "only the arriving chunks are copied, each into the slot it gets (%d faults)", bad_copies);
	ok(bad_moved == 0, "a chunk that stays keeps its slot (%d faults)", bad_moved);
	ok(bad_count == 0, "the resident count is the set's size (%d faults)", bad_count);
	fm_lsa_slots_update(&s, set, 0, moves);
	ok(s.n_resident == 0, "an empty set frees every slot");
	fm_lsa_slots_free(&s);
}

static void
test_rows(void)
{
	struct fm_lsa_doc d;
	struct fm_lsa_slots s;
	struct fm_lsa_move moves[4];
	uint32_t set[] = { 2, 5, 7 };
	int32_t rows[64], want[64];
	uint32_t n, k = 0, fixed;

	make_doc(&d, 10);   /* chunk lengths 1 2 3 4 5 1 2 3 4 5 */
	fm_lsa_slots_init(&s, 4, d.max_chunk, d.n_chunks, NULL);
	fm_lsa_slots_update(&s, set, 3, moves);
	n = fm_lsa_rows(&s, &d, 1, 6, rows);
	fixed = 4 * 5;
	want[k++] = (int32_t)fixed;   /* BOS */
	for (uint32_t i = 0; i < 3; i++)
		for (uint32_t j = 0; j < d.start[set[i] + 1] - d.start[set[i]]; j++)
			want[k++] = (int32_t)(s.chunk_slot[set[i]] * 5 + j);
	for (uint32_t j = 0; j < 6; j++)
		want[k++] = (int32_t)(fixed + 1 + j);
	ok(n == k && memcmp(rows, want, k * sizeof *rows) == 0,
	    "rows: BOS, the resident chunks' rows in document order, then the tail (%u rows)", n);
	ok(fm_lsa_rows_cap(&s, 1, 6) == 4 * 5 + 7, "room for every slot and the fixed rows");
	fm_lsa_slots_free(&s);
	fm_lsa_doc_free(&d);
}

static void
test_choose(void)
{
	struct fm_lsa_doc d;
	struct fm_policy p = { .k = 8, .sink = 1, .recent = 2 };
	float scores[20];
	uint32_t ntok[20];
	struct fm_selected sel[20];
	uint64_t n = 0;
	int rc;

	make_doc(&d, 20);
	for (uint32_t c = 0; c < 20; c++) {
		scores[c] = (float)((c * 7) % 20) / 20;   /* a permutation of the scores */
		ntok[c] = d.start[c + 1] - d.start[c];
	}
	rc = fm_lsa_choose(&p, &d, ntok, 0, NULL, scores, 5, sel, &n, NULL);
	/* Sink 0, recent 18 and 19, then the two best of the rest: c*7%20 = 19 at 17, 18 at 14. */
	ok(rc == FM_OK && n == 5 && sel[0].id == 0 && sel[1].id == 14 && sel[2].id == 17 &&
	    sel[3].id == 18 && sel[4].id == 19,
	    "a choice over the reserve keeps the sink and recent chunks, then the best by score, in id order");
	p.k = 2;
	rc = fm_lsa_choose(&p, &d, ntok, 0, NULL, scores, 5, sel, &n, NULL);
	ok(rc == FM_OK && n == 5, "within the reserve, the policy's choice as it is (%llu chunks)",
	    (unsigned long long)n);
	fm_lsa_doc_free(&d);
}

static void
test_read_selection(void)
{
	struct fm_lsa_doc d;
	struct fm_err err;
	uint32_t ids[30], n = 0;
	uint64_t line;
	FILE *f;
	int rc;

	make_doc(&d, 30);
	d.first = 100;
	f = tmpfile();
	fputs("# fm-select\n117\t0.5\n\n101\t0.25\n117\t0.5\n129\n", f);
	rewind(f);
	rc = fm_lsa_read_selection(f, &d, ids, &n, &line, &err);
	ok(rc == FM_OK && n == 3 && ids[0] == 1 && ids[1] == 17 && ids[2] == 29,
	    "fm-select's lines: ids made document-local, sorted, repeats dropped, comments skipped");
	fclose(f);
	f = tmpfile();
	fputs("101\t0.1\n130\t0.2\n", f);
	rewind(f);
	rc = fm_lsa_read_selection(f, &d, ids, &n, &line, &err);
	ok(rc == FM_EDATA && strstr(err.msg, "line 2: chunk 130 is not in the document (chunks 100..129)"),
	    "an id past the document: %s", err.msg);
	fclose(f);
	f = tmpfile();
	fputs("-3\n", f);
	rewind(f);
	rc = fm_lsa_read_selection(f, &d, ids, &n, &line, &err);
	ok(rc == FM_EDATA && strstr(err.msg, "line 1: not a chunk id"), "a negative id: %s", err.msg);
	fclose(f);
	fm_lsa_doc_free(&d);
}

/* Attention over scattered rows equals attention over the same keys stored in order. */
static void
test_attention_rows(enum fm_kv_type t)
{
	enum { NP = 150, NK = 97, H = 6, KVH = 2, HD = 24 };
	struct fm_kvcache big, packed;
	int32_t rows[NK];
	float q[H * HD], a[H * HD], b[H * HD], kv[KVH * HD], vv[KVH * HD], *scratch;
	bool used[NP] = { false };

	fm_kv_init(&big, t, 1, NP, KVH, HD, NULL);
	fm_kv_init(&packed, t, 1, NK, KVH, HD, NULL);
	for (uint32_t p = 0; p < NP; p++) {
		for (uint32_t i = 0; i < KVH * HD; i++) {
			kv[i] = (float)next(2000) / 1000 - 1;
			vv[i] = (float)next(2000) / 1000 - 1;
		}
		fm_kv_put(&big, 0, p, kv, vv);
	}
	for (uint32_t j = 0; j < NK; j++) {
		uint32_t r;
		do
			r = next(NP);
		while (used[r]);
		used[r] = true;
		rows[j] = (int32_t)r;
		fm_kv_copy(&packed, j, &big, r, 1);
	}
	for (uint32_t i = 0; i < H * HD; i++)
		q[i] = (float)next(2000) / 500 - 2;
	scratch = malloc(fm_attention_scratch(&big, H) * sizeof *scratch);
	fm_attention_rows(a, q, H, &big, 0, rows, NK, scratch);
	fm_attention(b, q, H, &packed, 0, NK, scratch);
	ok(memcmp(a, b, sizeof a) == 0, "%s: attention through %d scattered rows is bit for bit attention over "
	    "them packed in order", fm_kv_type_name(t), NK);
	free(scratch);
	fm_kv_free(&big);
	fm_kv_free(&packed);
}

int
main(void)
{
	test_slots();
	test_rows();
	test_choose();
	test_read_selection();
	test_attention_rows(FM_KV_F16);
	test_attention_rows(FM_KV_F32);
	return done_testing();
}
