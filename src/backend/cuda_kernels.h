// cuda_kernels.h - the plain C interface of the CUDA plug-in libgptvq_cuda.so
// (cu_*.cu, built only when nvcc is found; cuda.c loads it). Row-major
// host doubles in and out; each returns 0, or -1 with a message in err.
// Contracts: backend.h.
#ifndef GQ_CUDA_KERNELS_H
#define GQ_CUDA_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// device: the ordinal to use, modulo the number of devices (a rank's number
// on its machine, 0 for one process).
int gqcu_init(int device, char *err, size_t cap, char *name, size_t name_cap);
int gqcu_dgemm(int ta, int tb, int m, int n, int k, double alpha, const double *A, int lda, const double *B, int ldb,
               double beta, double *C, int ldc, char *err, size_t cap);
int gqcu_dsymm_right(int m, int n, const double *S, const double *A, double *C, char *err, size_t cap);
int gqcu_dsyrk_acc(int n, int k, const double *X, double *H, char *err, size_t cap);
int gqcu_chol_inverse_upper(double *A, int n, int *info, char *err, size_t cap);
int gqcu_vq_assign(int d, int n_slots, int per_slot, const double *x, const double *s2, const double *metric, int diag,
                   const double *C, int k, int32_t *idx, double *dist, double *objective, char *err, size_t cap);
int gqcu_dposv(int n, double *A, double *b, int *info, char *err, size_t cap);
int gqcu_vq_gram(int rows, int nv, int d, int k, int stages, int n_ct, const int *vt_start, const uint16_t *idx,
                 size_t idx_stage, const double *sig, const double *H, int ldh, double *G, char *err, size_t cap);
// Device residency (backend.h: hold / release).
int gqcu_hold(const void *p, size_t bytes, int writable, char *err, size_t cap);
int gqcu_release(const void *p, char *err, size_t cap);
// EM rounds of n_jobs independent groups from their seeds (gq_vq_em_batch,
// vq.h), a thread block per group, k <= 256. Job j: n_slots[j] slots of
// per_slot[j] points starting at point x_off[j] of x (Σ n, d) and s2 (Σ n;
// NULL: all 1), its metrics at slot m_off[j] of metric (n_metric, d, d;
// groups of one column tile share theirs);
// C (n_jobs, k, d): seeds in, centroids out; idx (Σ n) the final
// assignment; per job the rounds run, centroids re-seeded, final objective.
int gqcu_vq_em(int n_jobs, int d, int k, int iters, int diag, const int *n_slots, const int *per_slot,
               const int64_t *x_off, const int64_t *m_off, int64_t n_metric, const double *x, const double *s2,
               const double *metric, double *C, int32_t *idx, int *iters_out, int *reseeded, double *objective,
               char *err, size_t cap);
int gqcu_vq_mstep(int d, int n_slots, int per_slot, const double *x, const double *s2, const double *metric, int diag,
                  const int32_t *idx, int k, double *C, int *empty, char *err, size_t cap);

// Inference on device-resident matrices: F32, F16, Q4_0, Q4_1, Q8_0 (GGML
// type numbers) and packed VQ without normalisation.
struct gqcu_mat;
// A packed VQ matrix in the form the kernel reads: the index bit stream as
// packed ((stages, rows, nv) × lk bits), codebooks decoded to f32 (stages,
// n_rt, n_ct, k, d), the column tile of each vector, the row tile of each
// row, position -> column (NULL: identity), outlier columns as f32 (rows,
// n_out; NULL when n_out is 0). bytes: the matrix's size in the file.
struct gqcu_vq_desc {
    int rows, cols, d, k, lk, stages, n_out, nv, n_ct, n_rt;
    const uint8_t *idx;
    size_t idx_bytes, bytes;
    const float *cb, *outl;
    const int32_t *vec_ct, *row_rt, *perm;
};
int gqcu_mat_vq(const struct gqcu_vq_desc *d, struct gqcu_mat **out, char *err, size_t cap);
// rows × GGML rows of `type` (block types: cols a multiple of 32); data NULL:
// allocated, to be filled on the device (the calibration's block weights).
int gqcu_mat_ggml(int type, int rows, int cols, const void *data, struct gqcu_mat **out, char *err, size_t cap);
void gqcu_mat_free(struct gqcu_mat *m);
// One token, y (rows) = W x (cols), host vectors: the decode GEMV.
int gqcu_mat_gemv(struct gqcu_mat *m, const float *x, float *y, char *err, size_t cap);
// Y (n, rows) = X (n, cols) · Wᵀ, host matrices, through the prefill path:
// row tiles of at most tile_floats values decoded to f32, TF32 GEMM (n = 1:
// the GEMV).
int gqcu_mat_gemm(struct gqcu_mat *m, int n, const float *X, float *Y, size_t tile_floats, char *err, size_t cap);
// GEMV kernel of a VQ matrix: 0 codebooks through L1, a warp per row (the
// default); 1 codebooks in shared memory, several rows per warp (the default
// when GPTVQ_CUDA_GEMV=smem). -1 when the matrix cannot take it.
int gqcu_mat_set_variant(struct gqcu_mat *m, int variant, char *err, size_t cap);
int gqcu_mat_bench(struct gqcu_mat *m, int iters, double *seconds, size_t *bytes, double *peak_gbs, char *err,
                   size_t cap);

// A Llama-family decoder on the device (the arithmetic of forward.c): the
// linears as gqcu_mat, norms, biases (NULL when absent) and RoPE frequencies
// as host f32 arrays (copied), a KV cache of n_ctx positions.
struct gqcu_lm;
struct gqcu_lm_layer {
    const float *attn_norm, *ffn_norm, *bq, *bk, *bv;
    struct gqcu_mat *wq, *wk, *wv, *wo, *w_gate, *w_up, *w_down;
};
struct gqcu_lm_desc {
    int n_vocab, dim, n_layers, n_heads, n_kv_heads, head_dim, hidden_dim, rope_dim, rope_interleaved, n_ctx;
    float rms_eps;
    const float *inv_freq, *output_norm; // (rope_dim / 2), (dim)
    struct gqcu_mat *output;
    const struct gqcu_lm_layer *layers;  // (n_layers)
};
// Takes the matrices over: they are freed with the lm, or here on failure.
int gqcu_lm_new(const struct gqcu_lm_desc *d, struct gqcu_lm **out, char *err, size_t cap);
// n tokens whose embeddings are x (n, dim, host) at positions pos0..; their
// K/V go to the cache. logits (host): NULL, (n, n_vocab) when all_logits,
// else the last token's (n_vocab).
int gqcu_lm_forward(struct gqcu_lm *lm, const float *x, int n, int pos0, float *logits, int all_logits, char *err,
                    size_t cap);
void gqcu_lm_free(struct gqcu_lm *lm);

// Calibration passes on the device (engine.c with --device cuda): the
// windows' activations X (nsamples, seqlen, dim) live on the device; a
// block's f32 weights are uploaded before each pass; a pass runs every window
// through the block from start_at to stop_after (enum gq_block_input, -1: to
// the end), in place or on a copy, and when want >= 0 returns that input
// group's Σ xᵀx (row-major upper triangle, double) in H, the tokens weighted
// as engine.c's on_capture (resid_w 1: through o, 2: through down; the first
// token by sink). A non-finite activation fails the pass with -2 (a
// non-finite block output also names its window in *bad_window).
struct gqcu_calib;
struct gqcu_calib_desc {
    int dim, n_heads, n_kv_heads, head_dim, hidden_dim, rope_dim, rope_interleaved, nsamples, seqlen;
    float rms_eps;
    const float *inv_freq; // (rope_dim / 2)
};
struct gqcu_calib_block {
    const float *attn_norm, *ffn_norm, *bq, *bk, *bv; // biases NULL when absent
    const float *wq, *wk, *wv, *wo, *w_gate, *w_up, *w_down;
};
int gqcu_calib_new(const struct gqcu_calib_desc *d, const float *X, struct gqcu_calib **out, char *err, size_t cap);
int gqcu_calib_block(struct gqcu_calib *c, const struct gqcu_calib_block *b, char *err, size_t cap);
int gqcu_calib_pass(struct gqcu_calib *c, int start_at, int stop_after, int in_place, int want, int resid_w, float sink,
                    double *H, int *bad_window, char *err, size_t cap);
void gqcu_calib_free(struct gqcu_calib *c);

// The ranks' collectives through NCCL (cu_nccl.cu; util/dist.h has their
// meaning): rank 0 makes the id, every rank joins with it, then each call is
// made by every rank in the same order, on host buffers.
int gqcu_nccl_id(unsigned char id[128], char *err, size_t cap);
int gqcu_nccl_init(const unsigned char id[128], int n_ranks, int rank, char *err, size_t cap);
int gqcu_nccl_sum_i64(int64_t *x, size_t n, char *err, size_t cap);
int gqcu_nccl_or(void *buf, size_t bytes, char *err, size_t cap);
int gqcu_nccl_bcast(void *buf, size_t bytes, int root, char *err, size_t cap);
void gqcu_nccl_free(void);

#ifdef __cplusplus
}
#endif

#endif
