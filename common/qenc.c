/*
 * qenc.c - query vectors from the index's encoder; see qenc.h.
 */
#include "qenc.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bert.h"
#include "embedfile.h"
#include "hashenc.h"
#include "tokenizer.h"

struct fm_qenc {
	struct fm_hashenc *hash;
	struct fm_bert *bert;
	int pooling;
	uint32_t dim;
	struct fm_tokens tk;
	int32_t *seq;        /* [CLS] ids [SEP] */
};

void
fm_qenc_free(struct fm_qenc *q)
{
	if (q == NULL)
		return;
	fm_hashenc_free(q->hash);
	fm_bert_close(q->bert);
	fm_tokens_free(&q->tk);
	free(q->seq);
	free(q);
}

struct fm_qenc *
fm_qenc_open(const char *encoder, const struct fm_index_info *ix, struct fm_err *err)
{
	struct fm_qenc *q = calloc(1, sizeof *q);
	uint64_t fp;

	if (q == NULL) {
		fm_err_errno(err, FM_EIO, errno, "cannot allocate");
		return NULL;
	}
	q->dim = ix->dim;
	if (encoder == NULL) {
		if ((q->hash = fm_hashenc_new(ix->dim, err)) == NULL)
			goto fail;
		fp = fm_hashenc_fingerprint(q->hash);
		if (fp != ix->encoder_fingerprint) {
			fm_err_set(err, FM_EDATA, "the index was built with encoder '%s', not the "
			    "built-in one: give it with -e", ix->encoder_name);
			goto fail;
		}
		return q;
	}
	if ((q->bert = fm_bert_open(encoder, err)) == NULL)
		goto fail;
	if (fm_bert_fingerprint(q->bert) != ix->encoder_fingerprint || fm_bert_dim(q->bert) != ix->dim) {
		fm_err_set(err, FM_EDATA, "not the encoder the index was built with ('%s')",
		    ix->encoder_name);
		goto fail;
	}
	q->pooling = ix->pooling == FM_POOL_CLS || ix->pooling == FM_POOL_MEAN ? ix->pooling :
	    fm_bert_pooling(q->bert);
	if ((q->seq = malloc(fm_bert_n_ctx(q->bert) * sizeof *q->seq)) == NULL) {
		fm_err_errno(err, FM_EIO, errno, "cannot allocate");
		goto fail;
	}
	return q;
fail:
	fm_qenc_free(q);
	return NULL;
}

int
fm_qenc_encode(struct fm_qenc *q, const char *text, size_t len, float *out, struct fm_err *err)
{
	const struct fm_tok *t;
	const int32_t *seqs[1];
	uint32_t max, n, lens[1];
	double ss = 0;
	int rc;

	if (q->hash != NULL)
		return fm_hashenc_encode(q->hash, text, len, out, err);
	t = fm_bert_tok(q->bert);
	fm_tokens_clear(&q->tk);
	if ((rc = fm_tok_encode(t, text, len, 0, &q->tk, err)) != FM_OK)
		return rc;
	max = fm_bert_n_ctx(q->bert) - 2;
	n = q->tk.n < max ? (uint32_t)q->tk.n : max;
	q->seq[0] = fm_tok_bos(t);
	memcpy(q->seq + 1, q->tk.ids + (q->tk.n - n), n * sizeof *q->seq);
	q->seq[n + 1] = fm_tok_eos(t);
	seqs[0] = q->seq;
	lens[0] = n + 2;
	if ((rc = fm_bert_forward(q->bert, seqs, lens, 1, q->pooling, out, err)) != FM_OK)
		return rc;
	for (uint32_t i = 0; i < q->dim; i++)
		ss += (double)out[i] * out[i];
	if (ss > 0)
		for (uint32_t i = 0; i < q->dim; i++)
			out[i] = (float)(out[i] / sqrt(ss));
	return FM_OK;
}
