// cuda_kernels.cu - the CUDA side of the CUDA backend: cuBLAS / cuSOLVER calls
// and the VQ kernels, behind a plain C interface (cuda_kernels.h) that
// cuda.c turns into the primitive table of backend.h.
//
// Correctness first: every call copies its operands to the device and the
// result back (row-major host doubles, as the CPU backend). Keeping a layer's
// matrices resident on the device is the next step; the contracts stay.
//
// Row-major through column-major libraries: a row-major (r, c) matrix is the
// column-major (c, r) matrix of its transpose, so C = op(A)·op(B) (row-major)
// is Cᵀ = op(B)ᵀ·op(A)ᵀ (column-major) with A and B swapped, and a row-major
// upper triangle is a column-major lower one.
#include "cuda_kernels.h"

#include "../util/bits.h"

#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <cstdio>
#include <cstring>
#include <vector>

#define VQ_MAX_DIM 8

static cublasHandle_t g_blas;
static cusolverDnHandle_t g_solver;

static int fail(char *err, size_t cap, const char *what, const char *detail) {
    snprintf(err, cap, "cuda: %s: %s", what, detail);
    return -1;
}
// The message of a failed runtime, cuBLAS or cuSOLVER call (overloads, so
// that one checking macro serves all three).
static const char *status_str(cudaError_t e) { return cudaGetErrorString(e); }
static const char *status_str(cublasStatus_t e) { return cublasGetStatusString(e); }
static const char *status_str(cusolverStatus_t e) {
    static char b[32]; // calls are serialised by cuda.c
    snprintf(b, sizeof b, "cusolver status %d", (int)e);
    return b;
}
static bool ok(cudaError_t e) { return e == cudaSuccess; }
static bool ok(cublasStatus_t e) { return e == CUBLAS_STATUS_SUCCESS; }
static bool ok(cusolverStatus_t e) { return e == CUSOLVER_STATUS_SUCCESS; }
// A device copy of n host values (one element allocated when n is 0).
template <typename T> static cudaError_t upload(T **dst, const T *src, size_t n) {
    cudaError_t e = cudaMalloc((void **)dst, sizeof(T) * (n ? n : 1));
    if (e == cudaSuccess && n) e = cudaMemcpy(*dst, src, sizeof(T) * n, cudaMemcpyHostToDevice);
    return e;
}

// In a function with `int rc`, `err`, `cap` and an `out:` label.
#define CHECK(call)                                                                                                    \
    do {                                                                                                               \
        auto e_ = (call);                                                                                              \
        if (!ok(e_)) {                                                                                                 \
            rc = fail(err, cap, #call, status_str(e_));                                                                \
            goto out;                                                                                                  \
        }                                                                                                              \
    } while (0)

extern "C" int gqcu_init(char *err, size_t cap, char *name, size_t name_cap) {
    int rc = 0, n = 0;
    cudaDeviceProp prop;
    CHECK(cudaGetDeviceCount(&n));
    if (n < 1) return fail(err, cap, "cudaGetDeviceCount", "no CUDA device");
    CHECK(cudaSetDevice(0));
    CHECK(cudaGetDeviceProperties(&prop, 0));
    snprintf(name, name_cap, "%s (%.0f GiB, sm_%d%d)", prop.name, prop.totalGlobalMem / 1073741824.0, prop.major,
             prop.minor);
    CHECK(cublasCreate(&g_blas));
    CHECK(cusolverDnCreate(&g_solver));
out:
    return rc;
}

// Bytes spanned by a row-major (rows, cols) matrix with leading dimension ld.
static size_t span(int rows, int cols, int ld) { return rows > 0 && cols > 0 ? ((size_t)(rows - 1) * ld + cols) * sizeof(double) : 0; }

extern "C" int gqcu_dgemm(int ta, int tb, int m, int n, int k, double alpha, const double *A, int lda,
                          const double *B, int ldb, double beta, double *C, int ldc, char *err, size_t cap) {
    int rc = 0;
    double *dA = NULL, *dB = NULL, *dC = NULL;
    size_t sA = ta ? span(k, m, lda) : span(m, k, lda), sB = tb ? span(n, k, ldb) : span(k, n, ldb), sC = span(m, n, ldc);
    if (!sC) return 0;
    CHECK(cudaMalloc(&dA, sA ? sA : 8));
    CHECK(cudaMalloc(&dB, sB ? sB : 8));
    CHECK(cudaMalloc(&dC, sC));
    if (sA) CHECK(cudaMemcpy(dA, A, sA, cudaMemcpyHostToDevice));
    if (sB) CHECK(cudaMemcpy(dB, B, sB, cudaMemcpyHostToDevice));
    // always: the copy back spans the elements between the rows (ldc > n) too
    CHECK(cudaMemcpy(dC, C, sC, cudaMemcpyHostToDevice));
    // Cᵀ (n, m) = op(B)ᵀ op(A)ᵀ in column-major
    CHECK(cublasDgemm(g_blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, dB, ldb, dA,
                   lda, &beta, dC, ldc));
    CHECK(cudaMemcpy(C, dC, sC, cudaMemcpyDeviceToHost));
out:
    cudaFree(dA), cudaFree(dB), cudaFree(dC);
    return rc;
}

extern "C" int gqcu_dsymm_right(int m, int n, const double *S, const double *A, double *C, char *err, size_t cap) {
    int rc = 0;
    double *dS = NULL, *dA = NULL, *dC = NULL, one = 1, zero = 0;
    size_t sS = (size_t)n * n * sizeof(double), sA = (size_t)m * n * sizeof(double);
    if (!sA) return 0;
    CHECK(cudaMalloc(&dS, sS));
    CHECK(cudaMalloc(&dA, sA));
    CHECK(cudaMalloc(&dC, sA));
    CHECK(cudaMemcpy(dS, S, sS, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(dA, A, sA, cudaMemcpyHostToDevice));
    // Cᵀ (n, m) = S Aᵀ; the row-major upper triangle of S is the column-major lower one
    CHECK(cublasDsymm(g_blas, CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_LOWER, n, m, &one, dS, n, dA, n, &zero, dC, n));
    CHECK(cudaMemcpy(C, dC, sA, cudaMemcpyDeviceToHost));
out:
    cudaFree(dS), cudaFree(dA), cudaFree(dC);
    return rc;
}

extern "C" int gqcu_dsyrk_acc(int n, int k, const double *X, double *H, char *err, size_t cap) {
    int rc = 0;
    double *dX = NULL, *dH = NULL, one = 1;
    size_t sX = (size_t)k * n * sizeof(double), sH = (size_t)n * n * sizeof(double);
    if (!sX) return 0;
    CHECK(cudaMalloc(&dX, sX));
    CHECK(cudaMalloc(&dH, sH));
    CHECK(cudaMemcpy(dX, X, sX, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(dH, H, sH, cudaMemcpyHostToDevice));
    // column-major: Xᵀ is (n, k); Hᵀ += Xᵀ X, lower (= row-major upper)
    CHECK(cublasDsyrk(g_blas, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, n, k, &one, dX, n, &one, dH, n));
    CHECK(cudaMemcpy(H, dH, sH, cudaMemcpyDeviceToHost));
out:
    cudaFree(dX), cudaFree(dH);
    return rc;
}

// Row-major upper triangle mirrored into the lower one (the column-major
// potri output, lower in column-major = upper in row-major).
__global__ void mirror_upper(double *A, int n) {
    int i = blockIdx.y * blockDim.y + threadIdx.y, j = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n && j < i) A[(size_t)i * n + j] = A[(size_t)j * n + i];
}
// Zero below the diagonal; bad[0] = first row (1-based) with a diagonal that
// is not a positive finite number.
__global__ void finish_upper(double *A, int n, int *bad) {
    int i = blockIdx.y * blockDim.y + threadIdx.y, j = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n || j > i) return;
    if (j < i) A[(size_t)i * n + j] = 0;
    else {
        double d = A[(size_t)i * n + i];
        if (!(d > 0) || !isfinite(d)) atomicMin(bad, i + 1);
    }
}

extern "C" int gqcu_chol_inverse_upper(double *A, int n, int *info, char *err, size_t cap) {
    int rc = 0, lw = 0, lw2 = 0, bad0 = n + 1, bad = 0;
    double *dA = NULL, *work = NULL;
    int *dinfo = NULL, *dbad = NULL;
    size_t sA = (size_t)n * n * sizeof(double);
    dim3 th(16, 16), bl((n + 15) / 16, (n + 15) / 16);
    *info = 0;
    CHECK(cudaMalloc(&dA, sA));
    CHECK(cudaMalloc(&dinfo, sizeof(int)));
    CHECK(cudaMalloc(&dbad, sizeof(int)));
    CHECK(cudaMemcpy(dA, A, sA, cudaMemcpyHostToDevice));
    CHECK(cusolverDnDpotrf_bufferSize(g_solver, CUBLAS_FILL_MODE_LOWER, n, dA, n, &lw));
    CHECK(cusolverDnDpotri_bufferSize(g_solver, CUBLAS_FILL_MODE_LOWER, n, dA, n, &lw2));
    if (lw2 > lw) lw = lw2;
    CHECK(cudaMalloc(&work, (size_t)(lw > 0 ? lw : 1) * sizeof(double)));
    CHECK(cusolverDnDpotrf(g_solver, CUBLAS_FILL_MODE_LOWER, n, dA, n, work, lw, dinfo));
    CHECK(cudaMemcpy(info, dinfo, sizeof(int), cudaMemcpyDeviceToHost));
    if (*info) goto out;
    CHECK(cusolverDnDpotri(g_solver, CUBLAS_FILL_MODE_LOWER, n, dA, n, work, lw, dinfo));
    CHECK(cudaMemcpy(info, dinfo, sizeof(int), cudaMemcpyDeviceToHost));
    if (*info) goto out;
    mirror_upper<<<bl, th>>>(dA, n);
    CHECK(cudaGetLastError());
    CHECK(cusolverDnDpotrf(g_solver, CUBLAS_FILL_MODE_LOWER, n, dA, n, work, lw, dinfo));
    CHECK(cudaMemcpy(info, dinfo, sizeof(int), cudaMemcpyDeviceToHost));
    if (*info) goto out;
    CHECK(cudaMemcpy(dbad, &bad0, sizeof(int), cudaMemcpyHostToDevice));
    finish_upper<<<bl, th>>>(dA, n, dbad);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(&bad, dbad, sizeof(int), cudaMemcpyDeviceToHost));
    if (bad <= n) *info = bad;
    CHECK(cudaMemcpy(A, dA, sA, cudaMemcpyDeviceToHost));
out:
    cudaFree(dA), cudaFree(work), cudaFree(dinfo), cudaFree(dbad);
    return rc;
}

// ---------------------------------------------------------------------------
// VQ. Points x (n, d), slot s = i / per_slot with metric M_s (d, d), per-point
// weights s2 (or none), codebook C (k, d). Same formulas as vq.c.

// P (n_slots, k, d) = M_s c_m, nrm (n_slots, k) = c_mᵀ M_s c_m.
__global__ void vq_precompute(const double *metric, int diag, int d, const double *C, int k, int n_slots, double *P,
                              double *nrm) {
    int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= (int64_t)n_slots * k) return;
    int s = (int)(t / k), m = (int)(t % k);
    const double *M = metric + (size_t)s * d * d, *c = C + (size_t)m * d;
    double *p = P + (size_t)t * d, nn = 0;
    for (int a = 0; a < d; a++) {
        double r = 0;
        if (diag) r = M[a * d + a] * c[a];
        else
            for (int b = 0; b < d; b++) r += M[a * d + b] * c[b];
        p[a] = r;
        nn += c[a] * r;
    }
    nrm[t] = nn;
}

// One thread per point: argmin_m nrm[m] − 2 xᵀP_m (lowest m on ties), its
// weighted distance, and one partial sum of the objective per thread block.
__global__ void vq_assign_k(const double *x, const double *s2, const double *metric, int diag, int d, int per_slot,
                            int64_t n, const double *C, int k, const double *P, const double *nrm, int32_t *idx,
                            double *dist, double *part) {
    extern __shared__ double red[];
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    double v = 0;
    if (i < n) {
        int s = (int)(i / per_slot);
        const double *xi = x + (size_t)i * d, *Ps = P + (size_t)s * k * d, *ns = nrm + (size_t)s * k;
        double xr[VQ_MAX_DIM];
        for (int a = 0; a < d; a++) xr[a] = xi[a];
        double best = 0;
        int bm = 0;
        for (int m = 0; m < k; m++) {
            double dot = 0;
            for (int a = 0; a < d; a++) dot += xr[a] * Ps[(size_t)m * d + a];
            double e = ns[m] - 2 * dot;
            if (m == 0 || e < best) best = e, bm = m;
        }
        idx[i] = bm;
        const double *M = metric + (size_t)s * d * d, *c = C + (size_t)bm * d;
        double e[VQ_MAX_DIM], q = 0;
        for (int a = 0; a < d; a++) e[a] = xr[a] - c[a];
        for (int a = 0; a < d; a++) {
            if (diag) q += M[a * d + a] * e[a] * e[a];
            else {
                double r = 0;
                for (int b = 0; b < d; b++) r += M[a * d + b] * e[b];
                q += e[a] * r;
            }
        }
        v = q * (s2 ? s2[i] : 1.0);
        if (dist) dist[i] = v;
    }
    red[threadIdx.x] = v;
    __syncthreads();
    for (int h = blockDim.x / 2; h > 0; h >>= 1) {
        if ((int)threadIdx.x < h) red[threadIdx.x] += red[threadIdx.x + h];
        __syncthreads();
    }
    if (threadIdx.x == 0) part[blockIdx.x] = red[0];
}

extern "C" int gqcu_vq_assign(int d, int n_slots, int per_slot, const double *x, const double *s2,
                              const double *metric, int diag, const double *C, int k, int32_t *idx, double *dist,
                              double *objective, char *err, size_t cap) {
    int rc = 0;
    const int64_t n = (int64_t)n_slots * per_slot;
    const int TB = 256;
    const int64_t nb = (n + TB - 1) / TB;
    double *dx = NULL, *ds2 = NULL, *dM = NULL, *dC = NULL, *dP = NULL, *dn = NULL, *ddist = NULL, *dpart = NULL;
    int32_t *didx = NULL;
    std::vector<double> part((size_t)(nb > 0 ? nb : 1));
    *objective = 0;
    if (n <= 0) return 0;
    CHECK(upload(&dx, x, (size_t)n * d));
    if (s2) CHECK(upload(&ds2, s2, (size_t)n));
    CHECK(upload(&dM, metric, (size_t)n_slots * d * d));
    CHECK(upload(&dC, C, (size_t)k * d));
    CHECK(cudaMalloc(&dP, sizeof(double) * n_slots * k * d));
    CHECK(cudaMalloc(&dn, sizeof(double) * n_slots * k));
    CHECK(cudaMalloc(&didx, sizeof(int32_t) * n));
    if (dist) CHECK(cudaMalloc(&ddist, sizeof(double) * n));
    CHECK(cudaMalloc(&dpart, sizeof(double) * nb));
    vq_precompute<<<(unsigned)(((int64_t)n_slots * k + TB - 1) / TB), TB>>>(dM, diag, d, dC, k, n_slots, dP, dn);
    CHECK(cudaGetLastError());
    vq_assign_k<<<(unsigned)nb, TB, TB * sizeof(double)>>>(dx, ds2, dM, diag, d, per_slot, n, dC, k, dP, dn, didx,
                                                            ddist, dpart);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(idx, didx, sizeof(int32_t) * n, cudaMemcpyDeviceToHost));
    if (dist) CHECK(cudaMemcpy(dist, ddist, sizeof(double) * n, cudaMemcpyDeviceToHost));
    CHECK(cudaMemcpy(part.data(), dpart, sizeof(double) * nb, cudaMemcpyDeviceToHost));
    for (int64_t b = 0; b < nb; b++) *objective += part[(size_t)b]; // fixed order: same sum on every run
out:
    cudaFree(dx), cudaFree(ds2), cudaFree(dM), cudaFree(dC), cudaFree(dP), cudaFree(dn), cudaFree(didx);
    cudaFree(ddist), cudaFree(dpart);
    return rc;
}

// M-step: anchor[m] = first point of centroid m; A_m = Σ w M, b_m = Σ w M (x − x_anchor).
__global__ void mstep_anchor(const int32_t *idx, int64_t n, unsigned long long *anchor) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) atomicMin(&anchor[idx[i]], (unsigned long long)i);
}
__global__ void mstep_accum(const double *x, const double *s2, const double *metric, int diag, int d, int per_slot,
                            int64_t n, const int32_t *idx, const unsigned long long *anchor, double *A, double *b) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const int m = idx[i], dd = d * d;
    const double *M = metric + (size_t)(i / per_slot) * dd, *xi = x + (size_t)i * d,
                 *xr = x + (size_t)anchor[m] * d;
    const double w = s2 ? s2[i] : 1.0;
    double e[VQ_MAX_DIM];
    for (int a = 0; a < d; a++) e[a] = xi[a] - xr[a];
    for (int a = 0; a < d; a++) {
        if (diag) {
            atomicAdd(&A[(size_t)m * dd + a * d + a], w * M[a * d + a]);
            atomicAdd(&b[(size_t)m * d + a], w * M[a * d + a] * e[a]);
        } else {
            double r = 0;
            for (int c = 0; c < d; c++) {
                atomicAdd(&A[(size_t)m * dd + a * d + c], w * M[a * d + c]);
                r += M[a * d + c] * e[c];
            }
            atomicAdd(&b[(size_t)m * d + a], w * r);
        }
    }
}
// Per centroid with points: c = x_anchor + A⁻¹ b (diag: per coordinate with
// A_aa > 0; full: Cholesky, the old centroid kept when A is not positive
// definite or the solution is not finite, as LAPACK's dposv path in vq.c).
__global__ void mstep_solve(const double *x, int d, int k, const unsigned long long *anchor, int diag, const double *A,
                            const double *b, double *C, int *empty, unsigned long long none) {
    int m = blockIdx.x * blockDim.x + threadIdx.x;
    if (m >= k) return;
    if (anchor[m] == none) {
        atomicAdd(empty, 1);
        return;
    }
    const int dd = d * d;
    const double *Am = A + (size_t)m * dd, *bm = b + (size_t)m * d, *xr = x + (size_t)anchor[m] * d;
    double *c = C + (size_t)m * d;
    if (diag) {
        for (int a = 0; a < d; a++)
            if (Am[a * d + a] > 0) c[a] = xr[a] + bm[a] / Am[a * d + a];
        return;
    }
    double L[VQ_MAX_DIM * VQ_MAX_DIM], y[VQ_MAX_DIM];
    for (int i = 0; i < d; i++)
        for (int j = 0; j <= i; j++) {
            double s = Am[j * d + i]; // upper triangle, as dposv 'U'
            for (int p = 0; p < j; p++) s -= L[i * d + p] * L[j * d + p];
            if (i == j) {
                if (!(s > 0)) return;
                L[i * d + i] = sqrt(s);
            } else
                L[i * d + j] = s / L[j * d + j];
        }
    for (int i = 0; i < d; i++) {
        double s = bm[i];
        for (int p = 0; p < i; p++) s -= L[i * d + p] * y[p];
        y[i] = s / L[i * d + i];
    }
    for (int i = d - 1; i >= 0; i--) {
        double s = y[i];
        for (int p = i + 1; p < d; p++) s -= L[p * d + i] * y[p];
        y[i] = s / L[i * d + i];
    }
    for (int a = 0; a < d; a++)
        if (!isfinite(y[a])) return;
    for (int a = 0; a < d; a++) c[a] = xr[a] + y[a];
}

extern "C" int gqcu_vq_mstep(int d, int n_slots, int per_slot, const double *x, const double *s2,
                             const double *metric, int diag, const int32_t *idx, int k, double *C, int *empty,
                             char *err, size_t cap) {
    int rc = 0;
    const int64_t n = (int64_t)n_slots * per_slot;
    const int TB = 256;
    const unsigned long long none = ~0ull;
    double *dx = NULL, *ds2 = NULL, *dM = NULL, *dC = NULL, *dA = NULL, *db = NULL;
    int32_t *didx = NULL;
    unsigned long long *danchor = NULL;
    int *dempty = NULL;
    *empty = 0;
    if (n <= 0) {
        *empty = k;
        return 0;
    }
    CHECK(upload(&dx, x, (size_t)n * d));
    if (s2) CHECK(upload(&ds2, s2, (size_t)n));
    CHECK(upload(&dM, metric, (size_t)n_slots * d * d));
    CHECK(upload(&dC, C, (size_t)k * d));
    CHECK(upload(&didx, idx, (size_t)n));
    CHECK(cudaMalloc(&dA, sizeof(double) * k * d * d));
    CHECK(cudaMalloc(&db, sizeof(double) * k * d));
    CHECK(cudaMalloc(&danchor, sizeof(unsigned long long) * k));
    CHECK(cudaMalloc(&dempty, sizeof(int)));
    CHECK(cudaMemset(dA, 0, sizeof(double) * k * d * d));
    CHECK(cudaMemset(db, 0, sizeof(double) * k * d));
    CHECK(cudaMemset(danchor, 0xff, sizeof(unsigned long long) * k));
    CHECK(cudaMemset(dempty, 0, sizeof(int)));
    mstep_anchor<<<(unsigned)((n + TB - 1) / TB), TB>>>(didx, n, danchor);
    CHECK(cudaGetLastError());
    mstep_accum<<<(unsigned)((n + TB - 1) / TB), TB>>>(dx, ds2, dM, diag, d, per_slot, n, didx, danchor, dA, db);
    CHECK(cudaGetLastError());
    mstep_solve<<<(unsigned)((k + TB - 1) / TB), TB>>>(dx, d, k, danchor, diag, dA, db, dC, dempty, none);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(C, dC, sizeof(double) * k * d, cudaMemcpyDeviceToHost));
    CHECK(cudaMemcpy(empty, dempty, sizeof(int), cudaMemcpyDeviceToHost));
out:
    cudaFree(dx), cudaFree(ds2), cudaFree(dM), cudaFree(dC), cudaFree(dA), cudaFree(db), cudaFree(didx);
    cudaFree(danchor), cudaFree(dempty);
    return rc;
}

// ---------------------------------------------------------------------------
// Inference GEMVs y = W x for one token: packed VQ, Q4_0 and F16 matrices kept
// on the device (gqcu_mat_*). One warp per row, lanes over consecutive
// vectors / blocks (coalesced index and block loads), a warp-shuffle sum.

enum { MAT_VQ = 1, MAT_Q4_0, MAT_F16 };
struct gqcu_mat {
    int kind, rows, cols;
    // VQ
    int d, k, lk, stages, n_out, nv, n_ct, n_rt;
    uint8_t *idx;
    float *cb, *outl;
    int32_t *vec_ct, *row_rt, *perm;
    // Q4_0 / F16: raw GGML rows
    uint8_t *raw;
    size_t bytes; // the compressed matrix as stored in the file (what a GEMV must read)
    float *x, *xp, *y;
};

__device__ __forceinline__ float warp_sum(float a) {
    for (int o = 16; o > 0; o >>= 1) a += __shfl_down_sync(0xffffffffu, a, o);
    return a;
}

__global__ void permute_x(const float *x, const int32_t *perm, int n, float *xp) {
    int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p < n) xp[p] = x[perm ? perm[p] : p];
}

template <int D>
__global__ void vq_gemv(const gqcu_mat m, const float *xp, float *y) {
    const int lane = threadIdx.x & 31, row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= m.rows) return;
    const int d = D > 0 ? D : m.d, rt = m.row_rt[row];
    float acc = 0;
    for (int s = 0; s < m.stages; s++) {
        const int64_t base = ((int64_t)s * m.rows + row) * m.nv;
        const float *cbs = m.cb + ((size_t)s * m.n_rt + rt) * m.n_ct * m.k * d;
        for (int v = lane; v < m.nv; v += 32) {
            const uint32_t c = gq_bits_get(m.idx, base + v, m.lk);
            const float *cv = cbs + ((size_t)m.vec_ct[v] * m.k + c) * d, *xv = xp + m.n_out + (size_t)v * d;
            for (int j = 0; j < d; j++) acc += cv[j] * xv[j];
        }
    }
    for (int p = lane; p < m.n_out; p += 32) acc += m.outl[(size_t)row * m.n_out + p] * xp[p];
    acc = warp_sum(acc);
    if (!lane) y[row] = acc;
}

// GGML Q4_0: blocks of 32 values, fp16 scale d + 16 bytes: value j = d·((q_j) − 8),
// q_j the low nibble of byte j (j < 16) or the high nibble of byte j − 16.
__global__ void q4_0_gemv(const gqcu_mat m, const float *x, float *y) {
    const int lane = threadIdx.x & 31, row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= m.rows) return;
    const int nb = m.cols / 32;
    const uint8_t *r = m.raw + (size_t)row * nb * 18;
    float acc = 0;
    for (int b = lane; b < nb; b += 32) {
        const uint8_t *blk = r + (size_t)b * 18;
        const float dd = __half2float(*(const __half *)blk);
        const float *xb = x + (size_t)b * 32;
        float s = 0;
        for (int j = 0; j < 16; j++) s += (float)((blk[2 + j] & 15) - 8) * xb[j] + (float)((blk[2 + j] >> 4) - 8) * xb[j + 16];
        acc += dd * s;
    }
    acc = warp_sum(acc);
    if (!lane) y[row] = acc;
}

__global__ void f16_gemv(const gqcu_mat m, const float *x, float *y) {
    const int lane = threadIdx.x & 31, row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= m.rows) return;
    const __half *r = (const __half *)(m.raw + (size_t)row * m.cols * 2);
    float acc = 0;
    if (m.cols % 2 == 0) { // rows 4-byte aligned: pairs
        const __half2 *r2 = (const __half2 *)r;
        for (int c = lane; c < m.cols / 2; c += 32) {
            float2 w = __half22float2(r2[c]);
            acc += w.x * x[2 * c] + w.y * x[2 * c + 1];
        }
    } else
        for (int c = lane; c < m.cols; c += 32) acc += __half2float(r[c]) * x[c];
    acc = warp_sum(acc);
    if (!lane) y[row] = acc;
}

extern "C" void gqcu_mat_free(struct gqcu_mat *m) {
    if (!m) return;
    cudaFree(m->idx), cudaFree(m->cb), cudaFree(m->outl), cudaFree(m->vec_ct), cudaFree(m->row_rt), cudaFree(m->perm);
    cudaFree(m->raw), cudaFree(m->x), cudaFree(m->xp), cudaFree(m->y);
    free(m);
}

extern "C" int gqcu_mat_vq(const struct gqcu_vq_desc *D, struct gqcu_mat **out, char *err, size_t cap) {
    int rc = 0;
    gqcu_mat *m = (gqcu_mat *)calloc(1, sizeof *m);
    *out = NULL;
    if (!m) return fail(err, cap, "gqcu_mat_vq", "out of memory");
    m->kind = MAT_VQ, m->rows = D->rows, m->cols = D->cols, m->d = D->d, m->k = D->k, m->lk = D->lk;
    m->stages = D->stages, m->n_out = D->n_out, m->nv = D->nv, m->n_ct = D->n_ct, m->n_rt = D->n_rt;
    m->bytes = D->bytes;
    // + 8 zero bytes: the bit reader may touch bytes past the last index
    CHECK(cudaMalloc(&m->idx, D->idx_bytes + 8));
    CHECK(cudaMemset(m->idx, 0, D->idx_bytes + 8));
    CHECK(cudaMemcpy(m->idx, D->idx, D->idx_bytes, cudaMemcpyHostToDevice));
    CHECK(upload(&m->cb, D->cb, (size_t)D->stages * D->n_rt * D->n_ct * D->k * D->d));
    CHECK(upload(&m->outl, D->outl, D->outl ? (size_t)D->rows * D->n_out : 0));
    CHECK(upload(&m->vec_ct, D->vec_ct, (size_t)D->nv));
    CHECK(upload(&m->row_rt, D->row_rt, (size_t)D->rows));
    if (D->perm) CHECK(upload(&m->perm, D->perm, (size_t)D->cols));
    CHECK(cudaMalloc(&m->x, sizeof(float) * D->cols));
    CHECK(cudaMalloc(&m->xp, sizeof(float) * D->cols));
    CHECK(cudaMalloc(&m->y, sizeof(float) * D->rows));
    *out = m;
    return 0;
out:
    gqcu_mat_free(m);
    return rc;
}

extern "C" int gqcu_mat_ggml(int type, int rows, int cols, const void *data, struct gqcu_mat **out, char *err,
                             size_t cap) {
    int rc = 0;
    gqcu_mat *m = (gqcu_mat *)calloc(1, sizeof *m);
    *out = NULL;
    if (!m) return fail(err, cap, "gqcu_mat_ggml", "out of memory");
    if ((type != GQCU_Q4_0 && type != GQCU_F16) || (type == GQCU_Q4_0 && cols % 32)) {
        free(m);
        return fail(err, cap, "gqcu_mat_ggml", "only Q4_0 (rows of whole 32-blocks) and F16 rows");
    }
    m->kind = type == GQCU_Q4_0 ? MAT_Q4_0 : MAT_F16, m->rows = rows, m->cols = cols;
    m->bytes = type == GQCU_Q4_0 ? (size_t)rows * (cols / 32) * 18 : (size_t)rows * cols * 2;
    CHECK(upload(&m->raw, (const uint8_t *)data, m->bytes));
    CHECK(cudaMalloc(&m->x, sizeof(float) * cols));
    CHECK(cudaMalloc(&m->y, sizeof(float) * rows));
    *out = m;
    return 0;
out:
    gqcu_mat_free(m);
    return rc;
}

static cudaError_t launch(const gqcu_mat *m) {
    const int WARPS = 8, grid = (m->rows + WARPS - 1) / WARPS;
    if (m->kind == MAT_Q4_0) q4_0_gemv<<<grid, 32 * WARPS>>>(*m, m->x, m->y);
    else if (m->kind == MAT_F16) f16_gemv<<<grid, 32 * WARPS>>>(*m, m->x, m->y);
    else {
        const float *xp = m->x;
        if (m->perm) {
            permute_x<<<(m->cols + 255) / 256, 256>>>(m->x, m->perm, m->cols, m->xp);
            xp = m->xp;
        }
        switch (m->d) {
        case 1: vq_gemv<1><<<grid, 32 * WARPS>>>(*m, xp, m->y); break;
        case 2: vq_gemv<2><<<grid, 32 * WARPS>>>(*m, xp, m->y); break;
        case 4: vq_gemv<4><<<grid, 32 * WARPS>>>(*m, xp, m->y); break;
        default: vq_gemv<0><<<grid, 32 * WARPS>>>(*m, xp, m->y); break;
        }
    }
    return cudaGetLastError();
}

extern "C" int gqcu_mat_gemv(struct gqcu_mat *m, const float *x, float *y, char *err, size_t cap) {
    int rc = 0;
    CHECK(cudaMemcpy(m->x, x, sizeof(float) * m->cols, cudaMemcpyHostToDevice));
    CHECK(launch(m));
    CHECK(cudaMemcpy(y, m->y, sizeof(float) * m->rows, cudaMemcpyDeviceToHost));
out:
    return rc;
}

// Seconds per GEMV (device-resident x and y, `iters` back-to-back launches
// after a warm-up, CUDA events), the matrix's stored bytes, and the device's
// peak memory bandwidth from its clock and bus width (GB/s, 0 if unknown).
extern "C" int gqcu_mat_bench(struct gqcu_mat *m, int iters, double *seconds, size_t *bytes, double *peak_gbs,
                              char *err, size_t cap) {
    int rc = 0, clk = 0, bus = 0;
    cudaEvent_t a = NULL, b = NULL;
    float ms = 0;
    CHECK(cudaMemset(m->x, 0, sizeof(float) * m->cols));
    for (int i = 0; i < 3; i++) CHECK(launch(m));
    CHECK(cudaEventCreate(&a));
    CHECK(cudaEventCreate(&b));
    CHECK(cudaEventRecord(a));
    for (int i = 0; i < iters; i++) CHECK(launch(m));
    CHECK(cudaEventRecord(b));
    CHECK(cudaEventSynchronize(b));
    CHECK(cudaEventElapsedTime(&ms, a, b));
    *seconds = ms / 1e3 / iters;
    *bytes = m->bytes;
    *peak_gbs = 0;
    if (cudaDeviceGetAttribute(&clk, cudaDevAttrMemoryClockRate, 0) == cudaSuccess &&
        cudaDeviceGetAttribute(&bus, cudaDevAttrGlobalMemoryBusWidth, 0) == cudaSuccess)
        *peak_gbs = 2.0 * clk * 1e3 * (bus / 8.0) / 1e9; // DDR: two transfers per clock
out:
    if (a) cudaEventDestroy(a);
    if (b) cudaEventDestroy(b);
    return rc;
}
