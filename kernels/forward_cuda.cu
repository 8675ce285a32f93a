/*
 * forward_cuda.cu - the llama forward pass on one GPU: the weights copied
 * once in their GGUF types (q|k|v and gate|up each end to end, so a prefill
 * multiplies them in one GEMM), a KV cache in device memory with the layout
 * of kvcache.h, prefill through cuBLAS (tensor-core GEMMs on F16/BF16
 * inputs, F32 sums), decode through the bandwidth-bound matrix-vector
 * kernels of matvec.cu.
 *
 * A decode step launches five kernels per layer; their launch cost would
 * be a large part of a step, so the first one is captured in a CUDA graph
 * and replayed.  That is why positions reach the kernels through device
 * memory (d_stage) rather than as arguments: the captured step is the same at
 * every position.  The graph also holds the copy of the step's inputs (the
 * token, its position) from pinned host memory and, for a greedy step, the
 * argmax and its copy back: a token costs one launch and one wait.
 *
 * That wait still leaves the GPU idle while the host takes the token, prints
 * it and launches the next step: on an H100, 28 µs passed from a step's
 * argmax to the next step's first kernel, 3 % of a 1B model's step.  So
 * greedy decoding can also run ahead of the host (fm_gpu_fwd_queue): a
 * step's argmax is fed to the next step and moves the position on in device
 * memory, and reaches the host through a small ring in mapped host memory,
 * so several steps are queued at once (1074 -> 1091 tokens/s on that model).
 */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_check.cuh"
#include "ops.cuh"

extern "C" {
#include "gpu.h"
}

/* Device allocations of one forward pass, freed together. */
#define MAX_ALLOCS 4096

struct fm_gpu_fwd {
	const struct fm_model *m;
	char name[256];
	cudaStream_t st;
	cublasHandle_t blas;
	struct fm_weight emb;       /* (n_vocab, dim), device */
	struct fm_weight out;       /* (n_vocab, dim), device; the same memory as emb when tied */
	struct fm_layer *layers;    /* (n_layer) host array of device weights */
	struct fm_weight *w_qkv;    /* (n_layer) wq|wk|wv as one matrix, for one GEMM; data NULL
	                               where their types or widths differ */
	struct fm_weight *w_gu;     /* (n_layer) w_gate|w_up, the same */
	float *out_norm;            /* (dim) device */
	float *freq;                /* (n_rot/2) device */
	void *kc, *vc;              /* (n_layer, n_pos, n_head_kv, head_dim) device, F16 or F32 */
	bool kv_f16;
	uint32_t n_pos;
	size_t kv_layer;            /* elements of one layer's K (or V) */
	uint32_t max_batch;
	bool all_logits;
	int32_t *d_stage;           /* (ST_IDS + max_batch) device: h_stage's copy */
	int32_t *d_rows;            /* (rows_cap) device: the slot table, or NULL before a store */
	uint32_t rows_cap;
	int32_t *h_stage;           /* (ST_IDS + max_batch) pinned host: a step's inputs and result */
	float *x;                   /* (max_batch, dim) residual stream */
	float *xb;                  /* (max_batch, max(dim, n_head*head_dim)) */
	float *q;                   /* (max_batch, n_head*head_dim) */
	float *qkv;                 /* (max_batch, (n_head + 2 n_head_kv) head_dim): q, k, v */
	float *gu;                  /* (max_batch, 2 ffn_dim): gate, up */
	float *gate;                /* (max_batch, ffn_dim), SwiGLU in F32: a decode step's, or a
	                               prefill's when a down matrix is F32 (else 1 row) */
	float *logits;              /* (max_batch or 1, n_vocab) */
	float *part;                /* split-K attention scratch of one decode step */
	void *xh;                   /* (max_batch, max cols) F16/BF16 GEMM input */
	void *wq8;                  /* (largest Q8_0 matrix) F16, or NULL */
	uint64_t bytes, kv_bytes;
	void *allocs[MAX_ALLOCS];
	int n_allocs;
	float *q_host;              /* (n_layer, n_head*head_dim) host: each layer's queries of a
	                               sparse step, for an audit; NULL: not wanted */
	/* [dense, sparse][enum step_kind][split-K, short attention] steps */
	cudaGraphExec_t graph[2][3][2];
	int graph_state[2][3][2];      /* 0 not tried, 1 captured, -1 capture failed: run eagerly */
	uint32_t short_max;         /* the most keys of fm_k_attention_short, 0: none */
	/* Steps run ahead (fm_gpu_fwd_queue): the ahead_n positions before ahead_next. */
	int32_t *h_ring, *d_ring;   /* (2 FM_GPU_AHEAD) mapped host memory: a step's argmax and
	                               count not finite at slot position % FM_GPU_AHEAD; the same
	                               memory as the device sees it */
	cudaEvent_t ahead_done[FM_GPU_AHEAD];   /* the step at slot position % FM_GPU_AHEAD ended */
	uint32_t ahead_n;
	uint32_t ahead_next;        /* the position d_stage is at after the last step run ahead,
	                               or UINT32_MAX when another step came since */
};

/*
 * What a decode step gives back: its logits stay on the device (the host
 * copies them); its argmax comes back to h_stage; or its argmax is the next
 * step's token (run ahead).
 */
enum step_kind { STEP_LOGITS, STEP_PICK, STEP_AHEAD };

/*
 * h_stage and d_stage: the position of the batch's first token, the sparse
 * step's store row for the new token and keys to attend to, the argmax and
 * the count of logits not finite, then the ids.
 */
enum { ST_POS, ST_WROW, ST_NKEYS, ST_NEXT, ST_BAD, ST_IDS };

static void *
dalloc(struct fm_gpu_fwd *f, size_t n, struct fm_err *err)
{
	void *p;

	if (f->n_allocs == MAX_ALLOCS) {
		fm_err_set(err, FM_EDEVICE, "too many device allocations");
		return NULL;
	}
	if ((p = fm_gpu_malloc(n, err)) == NULL)
		return NULL;
	f->allocs[f->n_allocs++] = p;
	f->bytes += n;
	return p;
}

static uint64_t
weight_bytes(const struct fm_weight *w)
{
	return (uint64_t)w->rows * w->row_bytes;
}

static int
upload_weight(struct fm_gpu_fwd *f, struct fm_weight *dst, const struct fm_weight *src,
    struct fm_err *err)
{
	size_t n = (size_t)src->rows * src->row_bytes;

	*dst = *src;
	if ((dst->data = dalloc(f, n, err)) == NULL)
		return err->status;
	FM_CU(cudaMemcpy((void *)dst->data, src->data, n, cudaMemcpyHostToDevice), err);
	return FM_OK;
}

/*
 * Matrices of one type and width uploaded end to end, so one GEMM can take
 * them all (*all: their rows together; data NULL when they differ, and each
 * goes on its own).
 */
static int
upload_joined(struct fm_gpu_fwd *f, struct fm_weight *all, struct fm_weight *const *dst,
    const struct fm_weight *const *src, int n, struct fm_err *err)
{
	size_t bytes = 0;
	uint8_t *p;
	bool same = true;
	int rc;

	*all = *src[0];
	all->data = NULL;
	all->rows = 0;
	for (int i = 0; i < n; i++) {
		same = same && src[i]->type == src[0]->type && src[i]->cols == src[0]->cols;
		bytes += weight_bytes(src[i]);
		all->rows += src[i]->rows;
	}
	if (!same) {
		for (int i = 0; i < n; i++)
			if ((rc = upload_weight(f, dst[i], src[i], err)) != FM_OK)
				return rc;
		return FM_OK;
	}
	if ((p = (uint8_t *)dalloc(f, bytes, err)) == NULL)
		return err->status;
	all->data = p;
	for (int i = 0; i < n; i++) {
		*dst[i] = *src[i];
		dst[i]->data = p;
		FM_CU(cudaMemcpy(p, src[i]->data, weight_bytes(src[i]), cudaMemcpyHostToDevice), err);
		p += weight_bytes(src[i]);
	}
	return FM_OK;
}

static float *
upload_floats(struct fm_gpu_fwd *f, const float *src, size_t n, struct fm_err *err)
{
	float *p = (float *)dalloc(f, n * sizeof(float), err);

	if (p != NULL && fm_gpu_put(p, src, n * sizeof(float), err) != FM_OK)
		return NULL;
	return p;
}

extern "C" void
fm_gpu_fwd_free(struct fm_gpu_fwd *f)
{
	if (f == NULL)
		return;
	if (f->st != NULL)
		cudaStreamSynchronize(f->st);   /* steps run ahead may still be queued */
	for (int sparse = 0; sparse < 2; sparse++)
		for (int kind = 0; kind < 3; kind++)
			for (int sh = 0; sh < 2; sh++)
				if (f->graph_state[sparse][kind][sh] == 1)
					cudaGraphExecDestroy(f->graph[sparse][kind][sh]);
	for (int i = 0; i < FM_GPU_AHEAD; i++)
		if (f->ahead_done[i] != NULL)
			cudaEventDestroy(f->ahead_done[i]);
	for (int i = 0; i < f->n_allocs; i++)
		cudaFree(f->allocs[i]);
	cudaFree(f->kc);
	cudaFree(f->vc);
	cudaFree(f->d_rows);
	if (f->h_stage != NULL)
		cudaFreeHost(f->h_stage);
	if (f->h_ring != NULL)
		cudaFreeHost(f->h_ring);
	if (f->blas != NULL)
		cublasDestroy(f->blas);
	if (f->st != NULL)
		cudaStreamDestroy(f->st);
	free(f->layers);
	free(f->w_qkv);
	free(f->w_gu);
	free(f);
}

static int
fwd_init(struct fm_gpu_fwd *f, int device, struct fm_err *err)
{
	const struct fm_model *m = f->m;
	const struct fm_hparams *hp = &m->hp;
	size_t B = f->max_batch, qd = (size_t)hp->n_head * hp->head_dim;
	size_t kvd = (size_t)hp->n_head_kv * hp->head_dim, maxcols, q8 = 0, fl = sizeof(float);
	size_t gate_rows = 1;
	uint64_t need = 0, elt = f->kv_f16 ? 2 : 4;
	size_t free_b = 0, total_b = 0;
	int rc;

	if ((rc = fm_gpu_open(device, f->name, sizeof f->name, err)) != FM_OK)
		return rc;
	if (hp->head_dim > 256)
		return fm_err_set(err, FM_EDEVICE, "head size %u is not supported on CUDA (at most 256)",
		    hp->head_dim);
	maxcols = hp->dim > hp->ffn_dim ? hp->dim : hp->ffn_dim;
	if (qd > maxcols)
		maxcols = qd;

	/* Say how much is needed before allocating any of it. */
	need += weight_bytes(&m->tok_embd) + (m->tied ? 0 : weight_bytes(&m->output));
	for (uint32_t l = 0; l < hp->n_layer; l++) {
		const struct fm_layer *L = &m->layers[l];
		const struct fm_weight *ws[] = { &L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate,
		    &L->w_up, &L->w_down };
		bool any_q8 = false;
		for (const struct fm_weight *w : ws) {
			need += weight_bytes(w);
			any_q8 = any_q8 || w->type == FM_GGML_Q8_0;
		}
		/* The widened copy of a Q8_0 GEMM's matrix: q|k|v and gate|up go joined. */
		if (any_q8) {
			size_t big[4] = { (size_t)(L->wq.rows + L->wk.rows + L->wv.rows) * L->wq.cols,
			    (size_t)L->wo.rows * L->wo.cols,
			    (size_t)(L->w_gate.rows + L->w_up.rows) * L->w_gate.cols,
			    (size_t)L->w_down.rows * L->w_down.cols };
			for (size_t b : big)
				q8 = b > q8 ? b : q8;
		}
		if (L->w_down.type == FM_GGML_F32)
			gate_rows = B;
	}
	if (m->output.type == FM_GGML_Q8_0 && (size_t)m->output.rows * m->output.cols > q8)
		q8 = (size_t)m->output.rows * m->output.cols;
	f->kv_layer = (size_t)f->n_pos * kvd;
	f->kv_bytes = 2 * (uint64_t)hp->n_layer * f->kv_layer * elt;
	need += f->kv_bytes + fl * B * (hp->dim + (qd > hp->dim ? qd : hp->dim) + qd + qd + 2 * kvd +
	    2 * (size_t)hp->ffn_dim) + fl * gate_rows * hp->ffn_dim +
	    fl * (f->all_logits ? B : 1) * hp->n_vocab + 2 * B * maxcols + 2 * q8;
	FM_CU(cudaMemGetInfo(&free_b, &total_b), err);
	if (need > free_b)
		return fm_err_set(err, FM_EDEVICE,
		    "out of GPU memory: the model, a KV cache of %u positions and the buffers need "
		    "%llu MiB, %s has %llu MiB free", f->n_pos, (unsigned long long)(need >> 20),
		    f->name, (unsigned long long)(free_b >> 20));

	FM_CU(cudaStreamCreateWithFlags(&f->st, cudaStreamNonBlocking), err);
	FM_CUBLAS(cublasCreate(&f->blas), err);
	FM_CUBLAS(cublasSetStream(f->blas, f->st), err);

	if ((rc = upload_weight(f, &f->emb, &m->tok_embd, err)) != FM_OK)
		return rc;
	if (m->tied)
		f->out = f->emb;
	else if ((rc = upload_weight(f, &f->out, &m->output, err)) != FM_OK)
		return rc;
	if ((f->layers = (struct fm_layer *)calloc(hp->n_layer, sizeof *f->layers)) == NULL ||
	    (f->w_qkv = (struct fm_weight *)calloc(hp->n_layer, sizeof *f->w_qkv)) == NULL ||
	    (f->w_gu = (struct fm_weight *)calloc(hp->n_layer, sizeof *f->w_gu)) == NULL)
		return fm_err_set(err, FM_EIO, "cannot allocate");
	for (uint32_t l = 0; l < hp->n_layer; l++) {
		const struct fm_layer *L = &m->layers[l];
		struct fm_layer *D = &f->layers[l];
		const struct fm_weight *qkv[3] = { &L->wq, &L->wk, &L->wv }, *gu[2] = { &L->w_gate, &L->w_up };
		struct fm_weight *dqkv[3] = { &D->wq, &D->wk, &D->wv }, *dgu[2] = { &D->w_gate, &D->w_up };
		if ((rc = upload_joined(f, &f->w_qkv[l], dqkv, qkv, 3, err)) != FM_OK ||
		    (rc = upload_weight(f, &D->wo, &L->wo, err)) != FM_OK ||
		    (rc = upload_joined(f, &f->w_gu[l], dgu, gu, 2, err)) != FM_OK ||
		    (rc = upload_weight(f, &D->w_down, &L->w_down, err)) != FM_OK)
			return rc;
		if ((D->attn_norm = upload_floats(f, L->attn_norm, hp->dim, err)) == NULL ||
		    (D->ffn_norm = upload_floats(f, L->ffn_norm, hp->dim, err)) == NULL)
			return err->status;
	}
	if ((f->out_norm = upload_floats(f, m->output_norm, hp->dim, err)) == NULL ||
	    (f->freq = upload_floats(f, m->rope_freq, hp->n_rot / 2, err)) == NULL)
		return err->status;

	/* The cache is not in allocs: a sparse decoder replaces it by a store. */
	if ((f->kc = fm_gpu_malloc(f->kv_bytes / 2, err)) == NULL ||
	    (f->vc = fm_gpu_malloc(f->kv_bytes / 2, err)) == NULL)
		return err->status;
	f->bytes += f->kv_bytes;
	if ((f->d_stage = (int32_t *)dalloc(f, (ST_IDS + B) * 4, err)) == NULL ||
	    (f->x = (float *)dalloc(f, fl * B * hp->dim, err)) == NULL ||
	    (f->xb = (float *)dalloc(f, fl * B * (qd > hp->dim ? qd : hp->dim), err)) == NULL ||
	    (f->q = (float *)dalloc(f, fl * B * qd, err)) == NULL ||
	    (f->qkv = (float *)dalloc(f, fl * B * (qd + 2 * kvd), err)) == NULL ||
	    (f->gu = (float *)dalloc(f, fl * B * 2 * hp->ffn_dim, err)) == NULL ||
	    (f->gate = (float *)dalloc(f, fl * gate_rows * hp->ffn_dim, err)) == NULL ||
	    (f->logits = (float *)dalloc(f, fl * (f->all_logits ? B : 1) * hp->n_vocab, err)) == NULL ||
	    (f->xh = dalloc(f, 2 * B * maxcols, err)) == NULL ||
	    (f->part = (float *)dalloc(f, fm_k_attention_part(hp->n_head, hp->head_dim), err)) == NULL)
		return err->status;
	FM_CU(cudaMemset(f->part, 0, fm_k_attention_part(hp->n_head, hp->head_dim)), err);
	if (q8 > 0 && (f->wq8 = dalloc(f, 2 * q8, err)) == NULL)
		return err->status;
	FM_CU(cudaMallocHost((void **)&f->h_stage, (ST_IDS + B) * sizeof(int32_t)), err);
	FM_CU(cudaHostAlloc((void **)&f->h_ring, 2 * FM_GPU_AHEAD * sizeof(int32_t),
	    cudaHostAllocMapped), err);
	FM_CU(cudaHostGetDevicePointer((void **)&f->d_ring, f->h_ring, 0), err);
	for (int i = 0; i < FM_GPU_AHEAD; i++)
		FM_CU(cudaEventCreateWithFlags(&f->ahead_done[i], cudaEventDisableTiming), err);
	f->ahead_next = UINT32_MAX;
	f->short_max = fm_k_attention_short_max(hp->head_dim, f->kv_f16);
	return FM_OK;
}

extern "C" struct fm_gpu_fwd *
fm_gpu_fwd_new(const struct fm_model *m, int device, uint32_t max_batch, uint32_t n_pos,
    enum fm_kv_type kv_type, bool all_logits, struct fm_err *err)
{
	struct fm_gpu_fwd *f = (struct fm_gpu_fwd *)calloc(1, sizeof *f);

	if (f == NULL) {
		fm_err_set(err, FM_EIO, "cannot allocate");
		return NULL;
	}
	f->m = m;
	f->max_batch = max_batch;
	f->n_pos = n_pos;
	f->kv_f16 = kv_type == FM_KV_F16;
	f->all_logits = all_logits;
	if (fwd_init(f, device, err) != FM_OK) {
		cudaGetLastError();
		fm_gpu_fwd_free(f);
		return NULL;
	}
	return f;
}

extern "C" const char *
fm_gpu_fwd_device(const struct fm_gpu_fwd *f)
{
	return f->name;
}

extern "C" uint64_t
fm_gpu_fwd_kv_bytes(const struct fm_gpu_fwd *f)
{
	return f->kv_bytes;
}

extern "C" uint64_t
fm_gpu_fwd_bytes(const struct fm_gpu_fwd *f)
{
	return f->bytes;
}

/* The type a GEMM on w takes its input in: its own, F16 for Q8_0 (widened first). */
static enum fm_act
gemm_in(const struct fm_weight *w)
{
	return w->type == FM_GGML_F32 ? FM_ACT_F32 : w->type == FM_GGML_BF16 ? FM_ACT_BF16 : FM_ACT_F16;
}

/*
 * y (n rows ldy apart) = x (n, w->cols) W^T, plus y when accumulate: cuBLAS,
 * column-major view.  x is F32; for 16-bit weights it is narrowed into
 * f->xh first, unless x is NULL: then f->xh holds it already, in gemm_in(w).
 */
static int
gemm(struct fm_gpu_fwd *f, float *y, size_t ldy, const struct fm_weight *w, const float *x,
    uint32_t n, bool accumulate, struct fm_err *err)
{
	float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
	const void *a = w->data;
	cudaDataType_t t = gemm_in(w) == FM_ACT_BF16 ? CUDA_R_16BF : CUDA_R_16F;
	int rc;

	if (w->type == FM_GGML_F32) {
		FM_CUBLAS(cublasSgemm(f->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)w->rows, (int)n,
		    (int)w->cols, &alpha, (const float *)w->data, (int)w->cols, x, (int)w->cols,
		    &beta, y, (int)ldy), err);
		return FM_OK;
	}
	if (w->type == FM_GGML_Q8_0) {
		if ((rc = fm_k_q8_to_f16(f->st, f->wq8, w, err)) != FM_OK)
			return rc;
		a = f->wq8;
	}
	if (x != NULL && (rc = fm_k_narrow(f->st, f->xh, x, (size_t)n * w->cols, t == CUDA_R_16BF,
	    err)) != FM_OK)
		return rc;
	FM_CUBLAS(cublasGemmEx(f->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)w->rows, (int)n, (int)w->cols,
	    &alpha, a, t, (int)w->cols, f->xh, t, (int)w->cols, &beta, y, CUDA_R_32F, (int)ldy,
	    CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT), err);
	return FM_OK;
}

/* y (n, w->rows) = x W^T (or +=): a matrix-vector kernel for one token, else a GEMM. */
static int
matmul(struct fm_gpu_fwd *f, float *y, const struct fm_weight *w, const float *x, uint32_t n,
    bool accumulate, struct fm_err *err)
{
	if (n == 1)
		return fm_k_matvec(f->st, 1, &w, &y, x, accumulate, err);
	return gemm(f, y, w->rows, w, x, n, accumulate, err);
}

#define TRY(call) do { if ((rc = (call)) != FM_OK) return rc; } while (0)

/*
 * The n rows of x normalised by nw, times the joined matrix j, or its parts
 * w[0..k) when they could not be joined, into y (n, their rows together).
 * A joined matrix takes the norm written straight in its GEMM's input type.
 */
static int
norm_gemm(struct fm_gpu_fwd *f, float *y, const struct fm_weight *j,
    const struct fm_weight *const *w, int k, const float *x, const float *nw, uint32_t n,
    struct fm_err *err)
{
	const struct fm_hparams *hp = &f->m->hp;
	enum fm_act in = gemm_in(j);
	size_t at = 0;
	int rc;

	if (j->data != NULL && in != FM_ACT_F32) {
		TRY(fm_k_rmsnorm(f->st, f->xh, in, x, nw, n, hp->dim, hp->rms_eps, err));
		return gemm(f, y, j->rows, j, NULL, n, false, err);
	}
	TRY(fm_k_rmsnorm(f->st, f->xb, FM_ACT_F32, x, nw, n, hp->dim, hp->rms_eps, err));
	if (j->data != NULL)
		return gemm(f, y, j->rows, j, f->xb, n, false, err);
	for (int i = 0; i < k; i++) {
		TRY(gemm(f, y + at, j->rows, w[i], f->xb, n, false, err));
		at += w[i]->rows;
	}
	return FM_OK;
}

/*
 * One layer for the n tokens whose residual stream is x (n, dim): token i
 * at position *pos + i, its K and V to row *pos + i (or, sparse, to row
 * d_stage[ST_WROW]) of this layer's kc/vc, attending to the rows before it (or,
 * sparse, to the slot table's).  One token (decode) goes through the
 * matrix-vector kernels, which do the norms, RoPE, the cache store and
 * SwiGLU inside; more (prefill) through GEMMs on the joined matrices.
 * short_attn: the one token attends in fm_k_attention_short's form.
 */
static int
layer(struct fm_gpu_fwd *f, uint32_t l, float *x, uint32_t n, void *kc, void *vc,
    const int32_t *pos, bool sparse, bool short_attn, struct fm_err *err)
{
	const struct fm_hparams *hp = &f->m->hp;
	const struct fm_layer *L = &f->layers[l];
	const struct fm_weight *qkv[3] = { &L->wq, &L->wk, &L->wv }, *gu[2] = { &L->w_gate, &L->w_up };
	const size_t qd = (size_t)hp->n_head * hp->head_dim, kvd = (size_t)hp->n_head_kv * hp->head_dim;
	const int32_t *wrow = sparse ? f->d_stage + ST_WROW : NULL;
	cudaStream_t st = f->st;
	enum fm_act down_in = gemm_in(&L->w_down);
	int rc = 1;

	if (n == 1) {
		float *ys[3] = { f->q, f->qkv + qd, f->qkv + qd + kvd };
		rc = fm_k_matvec_qkv(st, qkv, ys, x, L->attn_norm, hp->rms_eps, kc, vc, f->kv_f16,
		    hp->head_dim, hp->n_rot, f->freq, pos, wrow, err);
		if (rc == 1) {   /* no fused form: the product packed as a prefill's, then RoPE */
			float *yp[3] = { f->qkv, f->qkv + qd, f->qkv + qd + kvd };
			rc = fm_k_matvec_norm(st, 3, qkv, yp, x, L->attn_norm, hp->rms_eps, false, err);
		}
	} else
		rc = norm_gemm(f, f->qkv, &f->w_qkv[l], qkv, 3, x, L->attn_norm, n, err);
	if (rc != FM_OK && rc != 1)
		return rc;
	if (n > 1 || rc == 1)
		TRY(fm_k_rope_kv(st, f->q, f->qkv, kc, vc, f->kv_f16, n, hp->n_head, hp->n_head_kv,
		    hp->head_dim, hp->n_rot, f->freq, pos, wrow, err));
	if (sparse && f->q_host != NULL)
		FM_CU(cudaMemcpyAsync(f->q_host + (size_t)l * qd, f->q, qd * sizeof(float),
		    cudaMemcpyDeviceToHost, st), err);
	if (short_attn)
		TRY(fm_k_attention_short(st, f->xb, f->q, kc, vc, f->kv_f16, hp->n_head,
		    hp->n_head_kv, hp->head_dim, pos, sparse ? f->d_rows : NULL,
		    sparse ? f->d_stage + ST_NKEYS : NULL, err));
	else
		TRY(fm_k_attention(st, f->xb, f->q, kc, vc, f->part, f->kv_f16, n, hp->n_head,
		    hp->n_head_kv, hp->head_dim, pos, sparse ? f->d_rows : NULL,
		    sparse ? f->d_stage + ST_NKEYS : NULL, err));
	TRY(matmul(f, x, &L->wo, f->xb, n, true, err));

	if (n == 1) {
		const struct fm_weight *wd = &L->w_down;
		if (L->w_gate.type == L->w_up.type) {
			TRY(fm_k_matvec_swiglu(st, f->gate, &L->w_gate, &L->w_up, x, L->ffn_norm,
			    hp->rms_eps, err));
		} else {
			float *yg[1] = { f->gu }, *yu[1] = { f->gu + hp->ffn_dim };
			TRY(fm_k_matvec_norm(st, 1, &gu[0], yg, x, L->ffn_norm, hp->rms_eps, false, err));
			TRY(fm_k_matvec_norm(st, 1, &gu[1], yu, x, L->ffn_norm, hp->rms_eps, false, err));
			TRY(fm_k_swiglu(st, f->gate, FM_ACT_F32, yg[0], yu[0], 1, hp->ffn_dim, 0, err));
		}
		return fm_k_matvec(st, 1, &wd, &x, f->gate, true, err);
	}
	TRY(norm_gemm(f, f->gu, &f->w_gu[l], gu, 2, x, L->ffn_norm, n, err));
	/* SwiGLU written straight in the down GEMM's input type. */
	TRY(fm_k_swiglu(st, down_in == FM_ACT_F32 ? (void *)f->gate : f->xh, down_in, f->gu,
	    f->gu + hp->ffn_dim, n, hp->ffn_dim, 2 * (size_t)hp->ffn_dim, err));
	return gemm(f, x, hp->dim, &L->w_down, down_in == FM_ACT_F32 ? f->gate : NULL, n, true, err);
}

/* The logits of the last n_out of the n rows of x, to f->logits. */
static int
head(struct fm_gpu_fwd *f, const float *x, uint32_t n, uint32_t n_out, struct fm_err *err)
{
	const struct fm_hparams *hp = &f->m->hp;
	int rc;

	if (n_out == 1) {
		const struct fm_weight *w = &f->out;
		return fm_k_matvec_norm(f->st, 1, &w, &f->logits, x + (size_t)(n - 1) * hp->dim,
		    f->out_norm, hp->rms_eps, false, err);
	}
	TRY(fm_k_rmsnorm(f->st, f->xb, FM_ACT_F32, x + (size_t)(n - n_out) * hp->dim, f->out_norm,
	    n_out, hp->dim, hp->rms_eps, err));
	return matmul(f, f->logits, &f->out, f->xb, n_out, false, err);
}

/* Everything from the embedding to the logits, on f->st, reading ids and the position from device memory. */
static int
forward(struct fm_gpu_fwd *f, uint32_t n, uint32_t n_out, bool sparse, bool short_attn,
    struct fm_err *err)
{
	size_t elt = f->kv_f16 ? 2 : 4;
	int rc;

	TRY(fm_k_embed(f->st, f->x, &f->emb, f->d_stage + ST_IDS, n, err));
	for (uint32_t l = 0; l < f->m->hp.n_layer; l++)
		TRY(layer(f, l, f->x, n, (uint8_t *)f->kc + l * f->kv_layer * elt,
		    (uint8_t *)f->vc + l * f->kv_layer * elt, f->d_stage + ST_POS, sparse, short_attn,
		    err));
	return head(f, f->x, n, n_out, err);
}

/* The step's inputs (h_stage's header and n ids) to the device, in one copy. */
static int
upload(struct fm_gpu_fwd *f, uint32_t n, struct fm_err *err)
{
	FM_CU(cudaMemcpyAsync(f->d_stage, f->h_stage, (ST_IDS + n) * sizeof(int32_t),
	    cudaMemcpyHostToDevice, f->st), err);
	return FM_OK;
}

/* The argmax of the last of n_out rows of logits, and its copy to h_stage. */
static int
pick(struct fm_gpu_fwd *f, uint32_t n_out, struct fm_err *err)
{
	const struct fm_hparams *hp = &f->m->hp;
	int rc;

	if ((rc = fm_k_argmax(f->st, f->logits + (size_t)(n_out - 1) * hp->n_vocab, hp->n_vocab,
	    f->d_stage + ST_NEXT, err)) != FM_OK)
		return rc;
	FM_CU(cudaMemcpyAsync(f->h_stage + ST_NEXT, f->d_stage + ST_NEXT, 2 * sizeof(int32_t),
	    cudaMemcpyDeviceToHost, f->st), err);
	return FM_OK;
}

/*
 * A decode step of one token: from h_stage, and for STEP_PICK its argmax
 * back to h_stage; or, run ahead, from d_stage as the step before left it.
 */
static int
one_step(struct fm_gpu_fwd *f, int sparse, int kind, bool short_attn, struct fm_err *err)
{
	const struct fm_hparams *hp = &f->m->hp;
	int rc;

	if (kind != STEP_AHEAD && (rc = upload(f, 1, err)) != FM_OK)
		return rc;
	if ((rc = forward(f, 1, 1, sparse, short_attn, err)) != FM_OK)
		return rc;
	if (kind == STEP_AHEAD)
		return fm_k_argmax_feed(f->st, f->logits, hp->n_vocab, f->d_ring, FM_GPU_AHEAD,
		    f->d_stage + ST_IDS, f->d_stage + ST_POS, err);
	return kind == STEP_PICK ? pick(f, 1, err) : FM_OK;
}

/* Captures one decode step in a graph; on any failure the steps run eagerly instead. */
static void
capture(struct fm_gpu_fwd *f, int sparse, int kind, bool short_attn)
{
	struct fm_err ignored = { 0 };
	cudaGraph_t g = NULL;
	int *state = &f->graph_state[sparse][kind][short_attn];
	int rc;

	*state = -1;
	if (cudaStreamBeginCapture(f->st, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
		cudaGetLastError();
		return;
	}
	rc = one_step(f, sparse, kind, short_attn, &ignored);
	if (cudaStreamEndCapture(f->st, &g) != cudaSuccess || rc != FM_OK || g == NULL) {
		if (g != NULL)
			cudaGraphDestroy(g);
		cudaGetLastError();
		return;
	}
	if (cudaGraphInstantiate(&f->graph[sparse][kind][short_attn], g, 0) == cudaSuccess)
		*state = 1;
	else
		cudaGetLastError();
	cudaGraphDestroy(g);
}

/*
 * One step attending to n_keys keys: the captured graph when there is one,
 * else the copies and kernels one by one.  A short context has a graph of
 * its own, with the short form of attention.
 */
static int
step(struct fm_gpu_fwd *f, int sparse, int kind, uint32_t n_keys, struct fm_err *err)
{
	const bool sh = n_keys <= f->short_max;
	int *state = &f->graph_state[sparse][kind][sh];

	if (sparse && f->q_host != NULL)   /* the audit's copies are not in the graph */
		return one_step(f, sparse, kind, sh, err);
	if (*state == 0)
		capture(f, sparse, kind, sh);
	if (*state == 1) {
		FM_CU(cudaGraphLaunch(f->graph[sparse][kind][sh], f->st), err);
		return FM_OK;
	}
	return one_step(f, sparse, kind, sh, err);
}

/*
 * Waits for the steps run ahead and drops their choices: before h_stage is
 * written again (the first of them may still have to copy it) and before
 * any other step.
 */
static int
ahead_drop(struct fm_gpu_fwd *f, struct fm_err *err)
{
	f->ahead_next = UINT32_MAX;
	if (f->ahead_n == 0)
		return FM_OK;
	f->ahead_n = 0;
	FM_CU(cudaStreamSynchronize(f->st), err);
	return FM_OK;
}

extern "C" int
fm_gpu_fwd_queue(struct fm_gpu_fwd *f, int32_t id, uint32_t pos, struct fm_err *err)
{
	const struct fm_hparams *hp = &f->m->hp;
	int rc;

	if (f->d_rows != NULL)
		return fm_err_set(err, FM_EUSAGE, "the cache is a sparse store now");
	if (pos >= f->n_pos)
		return fm_err_set(err, FM_EUSAGE, "position %u is beyond the context of %u", pos,
		    f->n_pos);
	if (id < 0 && pos != f->ahead_next)
		return fm_err_set(err, FM_EUSAGE, "position %u does not follow the last step queued",
		    pos);
	if (id < 0 && f->ahead_n == FM_GPU_AHEAD)
		return fm_err_set(err, FM_EUSAGE, "%d steps are queued already", FM_GPU_AHEAD);
	if (id >= 0 && (uint32_t)id >= hp->n_vocab)
		return fm_err_set(err, FM_EDATA, "token id %d is outside the vocabulary of %u", id,
		    hp->n_vocab);
	if (id >= 0) {
		if ((rc = ahead_drop(f, err)) != FM_OK)
			return rc;
		f->h_stage[ST_IDS] = id;
		f->h_stage[ST_POS] = (int32_t)pos;
		if ((rc = upload(f, 1, err)) != FM_OK)
			return rc;
	}
	if ((rc = step(f, 0, STEP_AHEAD, pos + 1, err)) != FM_OK)
		return rc;
	FM_CU(cudaEventRecord(f->ahead_done[pos % FM_GPU_AHEAD], f->st), err);
	f->ahead_n++;
	f->ahead_next = pos + 1;
	return FM_OK;
}

extern "C" int
fm_gpu_fwd_take(struct fm_gpu_fwd *f, int32_t *next, struct fm_err *err)
{
	uint32_t slot = (f->ahead_next - f->ahead_n) % FM_GPU_AHEAD;   /* the oldest */
	const volatile int32_t *r = f->h_ring + 2 * slot;

	if (f->ahead_n == 0)
		return fm_err_set(err, FM_EUSAGE, "no step is queued");
	FM_CU(cudaEventSynchronize(f->ahead_done[slot]), err);
	*next = r[1] > 0 ? -1 : r[0];
	f->ahead_n--;
	return FM_OK;
}

/*
 * The logits to the host, or their argmax (picked: already on its way to
 * h_stage); then waits for the stream.
 */
static int
finish(struct fm_gpu_fwd *f, uint32_t n_out, float *logits, int32_t *next, bool picked,
    struct fm_err *err)
{
	const struct fm_hparams *hp = &f->m->hp;
	int rc;

	if (logits != NULL)
		FM_CU(cudaMemcpyAsync(logits, f->logits, (size_t)n_out * hp->n_vocab * sizeof(float),
		    cudaMemcpyDeviceToHost, f->st), err);
	if (next != NULL && !picked && (rc = pick(f, n_out, err)) != FM_OK)
		return rc;
	FM_CU(cudaStreamSynchronize(f->st), err);
	if (next != NULL)
		*next = f->h_stage[ST_BAD] > 0 ? -1 : f->h_stage[ST_NEXT];
	return FM_OK;
}

extern "C" int
fm_gpu_fwd_eval(struct fm_gpu_fwd *f, const int32_t *ids, uint32_t n, uint32_t pos0,
    float *logits, bool all_logits, int32_t *next, struct fm_err *err)
{
	const struct fm_hparams *hp = &f->m->hp;
	uint32_t n_out = all_logits ? n : 1;
	int greedy = next != NULL && logits == NULL;
	int rc;

	if ((rc = ahead_drop(f, err)) != FM_OK)
		return rc;
	if (n == 0 || n > f->max_batch)
		return fm_err_set(err, FM_EUSAGE, "batch of %u tokens, at most %u", n, f->max_batch);
	if (all_logits && !f->all_logits)
		return fm_err_set(err, FM_EUSAGE, "logits of every token were not asked for");
	if ((uint64_t)pos0 + n > f->n_pos)
		return fm_err_set(err, FM_EUSAGE, "position %u is beyond the context of %u",
		    pos0 + n - 1, f->n_pos);
	for (uint32_t i = 0; i < n; i++) {
		if (ids[i] < 0 || (uint32_t)ids[i] >= hp->n_vocab)
			return fm_err_set(err, FM_EDATA, "token id %d is outside the vocabulary of %u",
			    ids[i], hp->n_vocab);
		f->h_stage[ST_IDS + i] = ids[i];
	}
	f->h_stage[ST_POS] = (int32_t)pos0;
	if (f->d_rows != NULL)
		return fm_err_set(err, FM_EUSAGE, "the cache is a sparse store now");
	/* One token (n_out is then 1 too) is a decode step, whose graph picks a greedy argmax. */
	if (n == 1)
		rc = step(f, 0, greedy ? STEP_PICK : STEP_LOGITS, pos0 + 1, err);
	else if ((rc = upload(f, n, err)) == FM_OK)
		rc = forward(f, n, n_out, false, false, err);
	if (rc != FM_OK)
		return rc;
	return finish(f, n_out, logits, next, n == 1 && greedy, err);
}

/* Layer l's K (or V) span of positions [pos, pos + n), on the device. */
static uint8_t *
kv_at(const struct fm_gpu_fwd *f, void *base, uint32_t l, uint32_t pos)
{
	size_t elt = f->kv_f16 ? 2 : 4;
	size_t kvd = (size_t)f->m->hp.n_head_kv * f->m->hp.head_dim;

	return (uint8_t *)base + ((size_t)l * f->n_pos + pos) * kvd * elt;
}

extern "C" int
fm_gpu_fwd_kv_get(struct fm_gpu_fwd *f, struct fm_kvcache *mirror, uint32_t pos, uint32_t n,
    struct fm_err *err)
{
	size_t bytes = (size_t)n * mirror->pos_bytes;

	if ((uint64_t)pos + n > f->n_pos || (uint64_t)pos + n > mirror->n_pos ||
	    mirror->elt_bytes != (f->kv_f16 ? 2u : 4u))
		return fm_err_set(err, FM_EUSAGE, "positions %u..%u do not fit the caches", pos, pos + n);
	for (uint32_t l = 0; l < f->m->hp.n_layer; l++) {
		FM_CU(cudaMemcpyAsync(fm_kv_k(mirror, l, pos), kv_at(f, f->kc, l, pos), bytes,
		    cudaMemcpyDeviceToHost, f->st), err);
		FM_CU(cudaMemcpyAsync(fm_kv_v(mirror, l, pos), kv_at(f, f->vc, l, pos), bytes,
		    cudaMemcpyDeviceToHost, f->st), err);
	}
	FM_CU(cudaStreamSynchronize(f->st), err);
	return FM_OK;
}

extern "C" int
fm_gpu_fwd_set_store(struct fm_gpu_fwd *f, uint32_t n_rows, uint32_t max_keys, struct fm_err *err)
{
	const struct fm_hparams *hp = &f->m->hp;
	uint64_t elt = f->kv_f16 ? 2 : 4;
	uint64_t bytes = 2 * (uint64_t)hp->n_layer * n_rows * hp->n_head_kv * hp->head_dim * elt;
	size_t free_b = 0, total_b = 0;
	int rc;

	if ((rc = ahead_drop(f, err)) != FM_OK)
		return rc;
	FM_CU(cudaStreamSynchronize(f->st), err);
	/*
	 * Every graph points at the old cache or store: the dense steps have
	 * none from now on, the sparse ones are captured again.
	 */
	for (int sparse = 0; sparse < 2; sparse++)
		for (int kind = 0; kind < 3; kind++)
			for (int sh = 0; sh < 2; sh++) {
				if (f->graph_state[sparse][kind][sh] == 1)
					cudaGraphExecDestroy(f->graph[sparse][kind][sh]);
				f->graph_state[sparse][kind][sh] = sparse ? 0 : -1;
			}
	cudaFree(f->kc);
	cudaFree(f->vc);
	cudaFree(f->d_rows);
	f->kc = f->vc = NULL;
	f->d_rows = NULL;
	f->bytes -= f->kv_bytes;
	f->kv_bytes = 0;
	FM_CU(cudaMemGetInfo(&free_b, &total_b), err);
	if (bytes + 4ull * max_keys > free_b)
		return fm_err_set(err, FM_EDEVICE, "out of GPU memory: a resident store of %u positions "
		    "needs %llu MiB, %s has %llu MiB free", n_rows, (unsigned long long)(bytes >> 20),
		    f->name, (unsigned long long)(free_b >> 20));
	if ((f->kc = fm_gpu_malloc(bytes / 2, err)) == NULL ||
	    (f->vc = fm_gpu_malloc(bytes / 2, err)) == NULL ||
	    (f->d_rows = (int32_t *)fm_gpu_malloc(4ull * (max_keys ? max_keys : 1), err)) == NULL)
		return err->status;
	f->n_pos = n_rows;
	f->kv_layer = (size_t)n_rows * hp->n_head_kv * hp->head_dim;
	f->kv_bytes = bytes;
	f->bytes += bytes;
	f->rows_cap = max_keys;
	return FM_OK;
}

extern "C" int
fm_gpu_fwd_kv_put(struct fm_gpu_fwd *f, uint32_t row, const struct fm_kvcache *mirror,
    uint32_t pos, uint32_t n, struct fm_err *err)
{
	size_t bytes = (size_t)n * mirror->pos_bytes;

	if ((uint64_t)row + n > f->n_pos || (uint64_t)pos + n > mirror->n_pos)
		return fm_err_set(err, FM_EUSAGE, "rows %u..%u do not fit the store", row, row + n);
	for (uint32_t l = 0; l < f->m->hp.n_layer; l++) {
		FM_CU(cudaMemcpyAsync(kv_at(f, f->kc, l, row), fm_kv_k(mirror, l, pos), bytes,
		    cudaMemcpyHostToDevice, f->st), err);
		FM_CU(cudaMemcpyAsync(kv_at(f, f->vc, l, row), fm_kv_v(mirror, l, pos), bytes,
		    cudaMemcpyHostToDevice, f->st), err);
	}
	return FM_OK;
}

extern "C" int
fm_gpu_fwd_set_rows(struct fm_gpu_fwd *f, const int32_t *rows, uint32_t n, struct fm_err *err)
{
	if (f->d_rows == NULL || n > f->rows_cap)
		return fm_err_set(err, FM_EUSAGE, "a slot table of %u rows, room for %u", n, f->rows_cap);
	for (uint32_t i = 0; i < n; i++)
		if (rows[i] < 0 || (uint32_t)rows[i] >= f->n_pos)
			return fm_err_set(err, FM_EUSAGE, "row %d is outside the store of %u", rows[i],
			    f->n_pos);
	/* Synchronous: the caller may rewrite rows as soon as this returns. */
	FM_CU(cudaMemcpyAsync(f->d_rows, rows, (size_t)n * sizeof *rows, cudaMemcpyHostToDevice, f->st),
	    err);
	FM_CU(cudaStreamSynchronize(f->st), err);
	return FM_OK;
}

extern "C" void
fm_gpu_fwd_probe(struct fm_gpu_fwd *f, float *q_host)
{
	f->q_host = q_host;
}

extern "C" int
fm_gpu_fwd_eval_rows(struct fm_gpu_fwd *f, int32_t id, uint32_t pos, uint32_t wrow,
    uint32_t n_keys, float *logits, int32_t *next, struct fm_err *err)
{
	const struct fm_hparams *hp = &f->m->hp;
	int32_t *h = f->h_stage;
	int greedy = next != NULL && logits == NULL;
	int rc;

	if ((rc = ahead_drop(f, err)) != FM_OK)
		return rc;
	if (f->d_rows == NULL)
		return fm_err_set(err, FM_EUSAGE, "no resident store");
	if (wrow >= f->n_pos || n_keys == 0 || n_keys > f->rows_cap)
		return fm_err_set(err, FM_EUSAGE, "row %u of a store of %u, %u keys", wrow, f->n_pos,
		    n_keys);
	if (id < 0 || (uint32_t)id >= hp->n_vocab)
		return fm_err_set(err, FM_EDATA, "token id %d is outside the vocabulary of %u", id,
		    hp->n_vocab);
	h[ST_IDS] = id;
	h[ST_POS] = (int32_t)pos;
	h[ST_WROW] = (int32_t)wrow;
	h[ST_NKEYS] = (int32_t)n_keys;
	if ((rc = step(f, 1, greedy ? STEP_PICK : STEP_LOGITS, n_keys, err)) != FM_OK)
		return rc;
	return finish(f, 1, logits, next, greedy, err);
}

/*
 * The prefill of LSA, layer by layer: the prompt's residual stream stays on
 * the device (n rows) and one layer's keys and values at a time (n
 * positions).  Each layer runs over the prompt in batches of max_batch, the
 * same kernels on the same batches as fm_gpu_fwd_eval(), so its keys,
 * values and logits are those of the dense prefill; when a layer is done its
 * cache goes to the mirror and the next layer reuses the memory.
 */
extern "C" int
fm_gpu_fwd_prefill_layers(struct fm_gpu_fwd *f, const int32_t *ids, uint32_t n,
    struct fm_kvcache *mirror, float *logits, int32_t *next, uint64_t *kv_peak, struct fm_err *err)
{
	const struct fm_hparams *hp = &f->m->hp;
	size_t elt = f->kv_f16 ? 2 : 4, kvd = (size_t)hp->n_head_kv * hp->head_dim;
	size_t layer_bytes = (size_t)n * kvd * elt, x_bytes = (size_t)n * hp->dim * sizeof(float);
	uint32_t B = f->max_batch, n_blocks = (n + B - 1) / B;
	size_t free_b = 0, total_b = 0;
	void *kc = NULL, *vc = NULL;
	float *x = NULL;
	int32_t *d_ids = NULL, *d_pos = NULL, *h_pos = NULL;
	int rc = FM_OK;

	if ((rc = ahead_drop(f, err)) != FM_OK)
		return rc;
	if (n == 0 || mirror->n_pos < n || mirror->elt_bytes != elt)
		return fm_err_set(err, FM_EUSAGE, "a prefill of %u tokens into a mirror of %u", n,
		    mirror->n_pos);
	for (uint32_t i = 0; i < n; i++)
		if (ids[i] < 0 || (uint32_t)ids[i] >= hp->n_vocab)
			return fm_err_set(err, FM_EDATA, "token id %d is outside the vocabulary of %u",
			    ids[i], hp->n_vocab);
	FM_CU(cudaMemGetInfo(&free_b, &total_b), err);
	if (2 * layer_bytes + x_bytes + 8ull * n > free_b)
		return fm_err_set(err, FM_EDEVICE, "out of GPU memory: a prefill of %u tokens layer by "
		    "layer needs %llu MiB, %s has %llu MiB free", n,
		    (unsigned long long)((2 * layer_bytes + x_bytes + 8ull * n) >> 20), f->name,
		    (unsigned long long)(free_b >> 20));
	if ((kc = fm_gpu_malloc(layer_bytes, err)) == NULL || (vc = fm_gpu_malloc(layer_bytes, err)) == NULL ||
	    (x = (float *)fm_gpu_malloc(x_bytes, err)) == NULL ||
	    (d_ids = (int32_t *)fm_gpu_malloc((size_t)n * 4, err)) == NULL ||
	    (d_pos = (int32_t *)fm_gpu_malloc((size_t)n_blocks * 4, err)) == NULL) {
		rc = err->status;
		goto out;
	}
	if ((h_pos = (int32_t *)malloc((size_t)n_blocks * 4)) == NULL) {
		rc = fm_err_set(err, FM_EIO, "cannot allocate");
		goto out;
	}
	/* Each batch's first position, in device memory as the kernels read it. */
	for (uint32_t b = 0; b < n_blocks; b++)
		h_pos[b] = (int32_t)(b * B);
	if (cudaMemcpy(d_ids, ids, (size_t)n * 4, cudaMemcpyHostToDevice) != cudaSuccess ||
	    cudaMemcpy(d_pos, h_pos, (size_t)n_blocks * 4, cudaMemcpyHostToDevice) != cudaSuccess) {
		rc = fm_err_set(err, FM_EDEVICE, "cudaMemcpy: %s", cudaGetErrorString(cudaGetLastError()));
		goto out;
	}
	for (uint32_t b = 0; b < n_blocks && rc == FM_OK; b++)
		rc = fm_k_embed(f->st, x + (size_t)b * B * hp->dim, &f->emb, d_ids + (size_t)b * B,
		    b + 1 < n_blocks ? B : n - b * B, err);
	for (uint32_t l = 0; l < hp->n_layer && rc == FM_OK; l++) {
		for (uint32_t b = 0; b < n_blocks && rc == FM_OK; b++)
			rc = layer(f, l, x + (size_t)b * B * hp->dim, b + 1 < n_blocks ? B : n - b * B,
			    kc, vc, d_pos + b, false, false, err);
		if (rc != FM_OK)
			break;
		if (cudaMemcpyAsync(fm_kv_k(mirror, l, 0), kc, layer_bytes, cudaMemcpyDeviceToHost,
		    f->st) != cudaSuccess || cudaMemcpyAsync(fm_kv_v(mirror, l, 0), vc, layer_bytes,
		    cudaMemcpyDeviceToHost, f->st) != cudaSuccess) {
			rc = fm_err_set(err, FM_EDEVICE, "cudaMemcpyAsync: %s",
			    cudaGetErrorString(cudaGetLastError()));
			break;
		}
	}
	if (rc == FM_OK)
		rc = head(f, x, n, 1, err);
	if (rc == FM_OK)
		rc = finish(f, 1, logits, next, false, err);
	if (kv_peak != NULL)
		*kv_peak = 2 * (uint64_t)layer_bytes;
out:
	cudaStreamSynchronize(f->st);
	cudaFree(kc);
	cudaFree(vc);
	cudaFree(x);
	cudaFree(d_ids);
	cudaFree(d_pos);
	free(h_pos);
	return rc;
}
#undef TRY
