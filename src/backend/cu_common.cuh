// cu_common.cuh - what the CUDA plug-in's files share (cu_linalg.cu, cu_vq.cu,
// cu_mat.cu, cu_block.cu; the C interface is cuda_kernels.h, which cuda.c
// turns into the primitive table of backend.h): error reporting, uploads,
// device views of host operands, the device matrix of inference.
//
// Operands are row-major host doubles, as for the CPU backend. A call copies
// them to the device and its result back, except operands inside a buffer
// the caller holds on the device (gqcu_hold: GPTQ's inverse Cholesky factor
// during a pass, GPTVQ's Hessian during the codebook update, a Hessian while
// a batch of tokens is accumulated), which are used in place.
//
// Row-major through column-major libraries: a row-major (r, c) matrix is the
// column-major (c, r) matrix of its transpose, so C = op(A)·op(B) (row-major)
// is Cᵀ = op(B)ᵀ·op(A)ᵀ (column-major) with A and B swapped, and a row-major
// upper triangle is a column-major lower one.
#ifndef GQ_CU_COMMON_CUH
#define GQ_CU_COMMON_CUH

#include "cuda_kernels.h"

#include "vqform.h"
#include "../util/bits.h"

#include <cub/device/device_radix_sort.cuh>
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <cstdio>
#include <cstring>
#include <vector>

#define VQ_MAX_DIM 8

extern cublasHandle_t g_blas;     // cu_linalg.cu (gqcu_init)
extern cusolverDnHandle_t g_solver;

static inline int fail(char *err, size_t cap, const char *what, const char *detail) {
    snprintf(err, cap, "cuda: %s: %s", what, detail);
    return -1;
}
// The message of a failed runtime, cuBLAS or cuSOLVER call (overloads, so
// that one checking macro serves all three).
static inline const char *status_str(cudaError_t e) { return cudaGetErrorString(e); }
static inline const char *status_str(cublasStatus_t e) { return cublasGetStatusString(e); }
static inline const char *status_str(cusolverStatus_t e) {
    static thread_local char b[32];
    snprintf(b, sizeof b, "cusolver status %d", (int)e);
    return b;
}
static inline bool ok(cudaError_t e) { return e == cudaSuccess; }
static inline bool ok(cublasStatus_t e) { return e == CUBLAS_STATUS_SUCCESS; }
static inline bool ok(cusolverStatus_t e) { return e == CUSOLVER_STATUS_SUCCESS; }
// A device copy of n host values (one element allocated when n is 0).
static inline unsigned blocks_for(int64_t n, int tb) { return (unsigned)((n + tb - 1) / tb); }

template <typename T> static cudaError_t upload(T **dst, const T *src, size_t n) {
    cudaError_t e = cudaMalloc((void **)dst, sizeof(T) * (n ? n : 1));
    if (e == cudaSuccess && n) e = cudaMemcpy(*dst, src, sizeof(T) * n, cudaMemcpyHostToDevice);
    return e;
}

// Bytes spanned by a row-major (rows, cols) matrix with leading dimension ld.
static inline size_t span(int rows, int cols, int ld) {
    return rows > 0 && cols > 0 ? ((size_t)(rows - 1) * ld + cols) * sizeof(double) : 0;
}

// A device view of the host operand [p, p + bytes) (cu_linalg.cu): inside a
// held buffer (gqcu_hold) its copy (*own NULL), else a new device buffer
// (*own, the caller frees it) filled from the host when `in`. An output
// (`out`) inside a read-only held buffer is an error (cudaErrorInvalidValue).
cudaError_t cu_view(void **d, void **own, const void *p, size_t bytes, bool in, bool out);
template <typename T> static inline cudaError_t view_in(const T **d, void **own, const T *p, size_t bytes) {
    return cu_view((void **)d, own, p, bytes, true, false);
}
// An output's result back to the host (nothing when it is held).
cudaError_t cu_unview(void *own, void *p, size_t bytes);

// In a function with `int rc`, `err`, `cap` and an `out:` label.
#define CHECK(call)                                                                                                    \
    do {                                                                                                               \
        auto e_ = (call);                                                                                              \
        if (!ok(e_)) {                                                                                                 \
            rc = fail(err, cap, #call, status_str(e_));                                                                \
            goto out;                                                                                                  \
        }                                                                                                              \
    } while (0)

// Kinds are GGML type numbers, plus packed VQ.
enum { MAT_F32 = 0, MAT_F16 = 1, MAT_Q4_0 = 2, MAT_Q4_1 = 3, MAT_Q8_0 = 8, MAT_VQ = 100 };
struct gqcu_mat {
    int kind, rows, cols;
    // VQ
    int d, k, lk, stages, n_out, nv, n_ct, n_rt;
    uint8_t *idx;
    float *cb, *outl;
    int32_t *vec_ct, *row_rt, *perm;
    // the shared-memory kernel (variant 1): chunks of rows within one row tile
    int4 *chunks; // (r0, count, rt, 0)
    int n_chunks, variant;
    size_t smem; // bytes of one row tile's codebooks (all stages)
    // GGML: raw rows
    uint8_t *raw;
    size_t bytes; // the compressed matrix as stored in the file (what a GEMV must read)
    float *x, *xp, *y; // x, y: gqcu_mat_gemv / bench; xp: x in position order (VQ)
};
// Y (n, rows) = X (n, cols) · Wᵀ on the device (cu_mat.cu).
int cu_matmul(const gqcu_mat *m, const float *X, float *Y, int n, float *tile, size_t tile_floats, bool tf32,
              char *err, size_t cap);

#endif
