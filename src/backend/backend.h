// backend.h - the small table of numerical primitives the quantizers run on.
//
// One algorithm (gptq.c, gptvq.c, hessian.c, vq.c) calls these through the
// current backend, gq_be() (select.c): the CPU backend (cpu.c: OpenBLAS,
// LAPACKE and the OpenMP VQ primitives of vqprim.h) is the reference, the
// CUDA backend (cuda.c and its plug-in, cuda_kernels.h:
// cuBLAS, cuSOLVER and VQ kernels) implements the same contracts and is
// checked against it primitive by primitive (tests/test_backend.c).
// gq_set_device (gptvq.h) selects the backend for the whole process.
//
// All matrices are row-major doubles in host memory. Every primitive returns
// GQ_OK or an error with a message (device errors included).
#ifndef GQ_BACKEND_H
#define GQ_BACKEND_H

#include "gptvq.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gq_vq_data;
struct gq_vq_em_job;
struct gq_vq_gram;

struct gq_backend {
    const char *name;
    // C (m, n) = alpha · op(A) · op(B) + beta · C, op(X) = X or Xᵀ (ta, tb);
    // A is (m, k) or (k, m) with leading dimension lda, likewise B and C.
    // GPTQ's and GPTVQ's lazy block error feedback, the Hessian trace.
    enum gq_status (*dgemm)(bool ta, bool tb, int m, int n, int k, double alpha, const double *A, int lda,
                            const double *B, int ldb, double beta, double *C, int ldc);
    // C (m, n) = A (m, n) · S, S (n, n) symmetric, its upper triangle read.
    // GPTVQ's objective tr(E H Eᵀ) and codebook update.
    enum gq_status (*dsymm_right)(int m, int n, const double *S, const double *A, double *C);
    // H (n, n) += Xᵀ X, X (k, n): the upper triangle of H is updated (the
    // lower one is left as it is). Hessian accumulation (SYRK).
    enum gq_status (*dsyrk_acc)(int n, int k, const double *X, double *H);
    // A (n, n) symmetric positive definite (upper triangle read) is replaced
    // by the upper Cholesky factor U of A⁻¹ (A⁻¹ = Uᵀ U), the lower triangle
    // zeroed: GPTQ's "Hinv". *info > 0 when A is not positive definite (A
    // is then undefined), 0 on success.
    enum gq_status (*chol_inverse_upper)(double *A, int n, int *info);
    // Hessian-weighted nearest centroid of every point (contract of
    // gq_vq_assign, vqprim.h: argmin, lowest index on ties; dist optional);
    // *objective = Σ_i dist_i (NaN for non-finite points: not an error here,
    // the EM loop reports it).
    enum gq_status (*vq_assign)(const struct gq_vq_data *D, const double *C, int k, int32_t *idx, double *dist,
                                double *objective);
    // EM M-step (contract of gq_vq_mstep, vqprim.h); *empty = centroids without points.
    enum gq_status (*vq_mstep)(const struct gq_vq_data *D, const int32_t *idx, int k, double *C, int *empty);
    // The EM rounds of independent groups from their seeds (contract of
    // gq_vq_em_batch, vqprim.h): GPTVQ's codebook initialisation of one column
    // tile's groups in one call.
    enum gq_status (*vq_em)(struct gq_vq_em_job *jobs, int n_jobs, int k, int iters);
    // Solves A x = b, A (n, n) symmetric positive definite (upper triangle
    // read, A overwritten by its factor), b (n) replaced by x; *info > 0
    // when A is not positive definite (b is then undefined). The exact
    // codebook update's solves.
    enum gq_status (*dposv)(int n, double *A, double *b, int *info);
    // G (m, m) of the exact codebook update's normal equations for one row
    // tile (contract of gq_vq_gram, vqprim.h).
    enum gq_status (*vq_gram)(const struct gq_vq_gram *g, double *G);
    // Device residency (no-ops on the CPU). After hold(p, bytes, writable)
    // the backend keeps [p, p + bytes) on its device and the primitives given
    // operands inside it use that copy instead of copying them. Read-only
    // (writable false): the caller may read the host buffer, no one writes
    // it or (through a primitive) the copy. Writable: primitives update the
    // copy only and the caller neither reads nor writes the host buffer until
    // release(p) copies the copy back. release(p), p as given to hold, ends
    // the hold. Holds do not nest or overlap.
    enum gq_status (*hold)(const void *p, size_t bytes, bool writable);
    enum gq_status (*release)(const void *p);
};

// The backend gq_set_device selected (the CPU one by default).
const struct gq_backend *gq_be(void);
const struct gq_backend *gq_backend_cpu(void);
// The CUDA backend, or NULL with *why set (built without nvcc, no device,
// driver error).
const struct gq_backend *gq_backend_cuda(const char **why);
// Inference on the CUDA device: a compressed weight (packed VQ without
// normalisation, F32, F16, Q8_0, Q4_0, Q4_1) copied to the device once;
// GQ_ERR_UNSUPPORTED for other matrices. The GEMV (one token: y = W x) and
// the prefill product (Y (n, rows) = X (n, cols) · Wᵀ: row tiles of at most
// tile_floats values decoded to f32, TF32 tensor-core GEMM), host vectors.
struct gqcu_mat;
struct gq_qweight;
enum gq_status gq_cuda_mat_new(const struct gq_qweight *q, struct gqcu_mat **out);
enum gq_status gq_cuda_mat_gemv(struct gqcu_mat *m, const float *x, float *y);
enum gq_status gq_cuda_mat_gemm(struct gqcu_mat *m, int n, const float *X, float *Y, size_t tile_floats);
// GEMV kernel of a VQ matrix: 0 codebooks read through L1, a warp per row
// (the default); 1 codebooks in shared memory, several rows per warp (the
// default when GPTVQ_CUDA_GEMV=smem). An error when the matrix cannot take it.
enum gq_status gq_cuda_mat_set_variant(struct gqcu_mat *m, int variant);
// Seconds per GEMV on device-resident vectors (iters launches, CUDA events),
// the bytes the matrix holds in the file, the device's peak bandwidth (GB/s).
enum gq_status gq_cuda_mat_bench(struct gqcu_mat *m, int iters, double *seconds, size_t *bytes, double *peak_gbs);
void gq_cuda_mat_free(struct gqcu_mat *m);

// GQ_OK when the CUDA backend is usable, else GQ_ERR_UNSUPPORTED "cuda: why".
enum gq_status gq_cuda_need_device(void);
// f32 weights (rows, cols) on the device (a matrix for the decoder below).
enum gq_status gq_cuda_mat_f32(int rows, int cols, const float *w, struct gqcu_mat **out);

// The plug-in's decoder forward and calibration passes (cuda_kernels.h:
// gqcu_lm_*, gqcu_calib_*; model/forward_cuda.h builds them from a model).
// dev_lm_new takes the matrices over (freed with the lm, or here on failure).
// calib_pass: every window through the block from start_at to stop_after
// (-1: the end), in place or on a copy, returning input group want's Σ xᵀx
// (row-major upper triangle, double) in H when want >= 0; resid_w 1 / 2: the
// residual token weights through o / down; sink: the first token's weight.
// GQ_ERR_NUMERIC on a non-finite activation (*bad_window: the window whose
// block output it was, else -1).
struct gqcu_lm;
struct gqcu_lm_desc;
struct gqcu_calib;
struct gqcu_calib_desc;
struct gqcu_calib_block;
enum gq_status gq_cuda_dev_lm_new(const struct gqcu_lm_desc *D, struct gqcu_lm **out);
enum gq_status gq_cuda_dev_lm_forward(struct gqcu_lm *lm, const float *x, int n, int pos0, float *logits,
                                      bool all_logits);
void gq_cuda_dev_lm_free(struct gqcu_lm *lm);
enum gq_status gq_cuda_dev_calib_new(const struct gqcu_calib_desc *D, const float *X, struct gqcu_calib **out);
enum gq_status gq_cuda_dev_calib_block(struct gqcu_calib *c, const struct gqcu_calib_block *B);
enum gq_status gq_cuda_calib_pass(struct gqcu_calib *c, int start_at, int stop_after, bool in_place, int want,
                                  int resid_w, float sink, double *H, int *bad_window);
void gq_cuda_calib_free(struct gqcu_calib *c);

// "NVIDIA H200 (139 GiB, sm_90)" once the CUDA backend is initialised, else NULL.
const char *gq_cuda_device_name(void);

// Several ranks with --device cuda (each on GPU local rank % devices): NCCL
// takes util/dist.h's collectives over (rank 0's NCCL id goes to the others
// through MPI), until gq_cuda_dist_stop. Every rank calls both. One rank: no-op.
enum gq_status gq_cuda_dist_start(void);
void gq_cuda_dist_stop(void);

#endif
