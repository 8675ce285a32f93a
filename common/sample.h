/*
 * sample.h - choosing the next token from logits: greedy argmax, or
 * temperature, top-k and top-p (nucleus) sampling driven by our own seeded
 * generator, so that a seed gives the same tokens on every machine.
 *
 * Ownership: struct fm_sampler is the caller's; fm_sampler_init() allocates
 * its candidate array, fm_sampler_free() releases it.
 */
#ifndef FM_SAMPLE_H
#define FM_SAMPLE_H

#include <stdint.h>

#include "fm_error.h"

/* xorshift64* seeded through splitmix64: small, fast, and the same everywhere. */
struct fm_rng {
	uint64_t s;
};
void fm_rng_seed(struct fm_rng *r, uint64_t seed);
uint64_t fm_rng_next(struct fm_rng *r);
float fm_rng_float(struct fm_rng *r);   /* uniform in [0, 1), 24 random bits */

/* The id of the largest logit, the lowest such id on ties (the CUDA argmax kernel's twin). */
int32_t fm_argmax(const float *logits, uint32_t n);

/* The k (<= n) largest logits in descending order, equal ones by ascending id. */
void fm_top_logits(const float *logits, uint32_t n, uint32_t k, int32_t *ids, float *vals);

struct fm_cand {
	float logit;
	float p;
	int32_t id;
};

struct fm_sampler {
	float temp;             /* 0: greedy */
	uint32_t top_k;         /* 0: no limit */
	float top_p;            /* 1: no limit */
	uint32_t n_vocab;
	struct fm_rng rng;
	struct fm_cand *cand;   /* (n_vocab) scratch */
};

/*
 * temp >= 0, 0 < top_p <= 1.  FM_EUSAGE for values out of range, FM_EIO
 * when memory runs out.
 */
int fm_sampler_init(struct fm_sampler *s, uint32_t n_vocab, float temp, uint32_t top_k,
                    float top_p, uint64_t seed, struct fm_err *err);
void fm_sampler_free(struct fm_sampler *s);

/*
 * The next token.  With temp 0, fm_argmax().  Otherwise the logits are
 * divided by temp and turned into probabilities; the top_k most likely are
 * kept, then the smallest most-likely prefix of those whose probability
 * reaches top_p, and one is drawn from what is left.  The logits must be
 * finite.
 */
int32_t fm_sample(struct fm_sampler *s, const float *logits);

#endif
