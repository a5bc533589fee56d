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

#include <cublas_v2.h>
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
#define CU(call)                                                                                                       \
    do {                                                                                                               \
        cudaError_t e_ = (call);                                                                                       \
        if (e_ != cudaSuccess) {                                                                                       \
            rc = fail(err, cap, #call, cudaGetErrorString(e_));                                                        \
            goto out;                                                                                                  \
        }                                                                                                              \
    } while (0)
#define CB(call)                                                                                                       \
    do {                                                                                                               \
        cublasStatus_t e_ = (call);                                                                                    \
        if (e_ != CUBLAS_STATUS_SUCCESS) {                                                                             \
            rc = fail(err, cap, #call, cublasGetStatusString(e_));                                                     \
            goto out;                                                                                                  \
        }                                                                                                              \
    } while (0)
#define CS(call)                                                                                                       \
    do {                                                                                                               \
        cusolverStatus_t e_ = (call);                                                                                  \
        if (e_ != CUSOLVER_STATUS_SUCCESS) {                                                                           \
            char b_[32];                                                                                               \
            snprintf(b_, sizeof b_, "status %d", (int)e_);                                                             \
            rc = fail(err, cap, #call, b_);                                                                            \
            goto out;                                                                                                  \
        }                                                                                                              \
    } while (0)

extern "C" int gqcu_init(char *err, size_t cap, char *name, size_t name_cap) {
    int rc = 0, n = 0;
    cudaDeviceProp prop;
    CU(cudaGetDeviceCount(&n));
    if (n < 1) return fail(err, cap, "cudaGetDeviceCount", "no CUDA device");
    CU(cudaSetDevice(0));
    CU(cudaGetDeviceProperties(&prop, 0));
    snprintf(name, name_cap, "%s (%.0f GiB, sm_%d%d)", prop.name, prop.totalGlobalMem / 1073741824.0, prop.major,
             prop.minor);
    CB(cublasCreate(&g_blas));
    CS(cusolverDnCreate(&g_solver));
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
    CU(cudaMalloc(&dA, sA ? sA : 8));
    CU(cudaMalloc(&dB, sB ? sB : 8));
    CU(cudaMalloc(&dC, sC));
    if (sA) CU(cudaMemcpy(dA, A, sA, cudaMemcpyHostToDevice));
    if (sB) CU(cudaMemcpy(dB, B, sB, cudaMemcpyHostToDevice));
    // always: the copy back spans the elements between the rows (ldc > n) too
    CU(cudaMemcpy(dC, C, sC, cudaMemcpyHostToDevice));
    // Cᵀ (n, m) = op(B)ᵀ op(A)ᵀ in column-major
    CB(cublasDgemm(g_blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, dB, ldb, dA,
                   lda, &beta, dC, ldc));
    CU(cudaMemcpy(C, dC, sC, cudaMemcpyDeviceToHost));
out:
    cudaFree(dA), cudaFree(dB), cudaFree(dC);
    return rc;
}

extern "C" int gqcu_dsymm_right(int m, int n, const double *S, const double *A, double *C, char *err, size_t cap) {
    int rc = 0;
    double *dS = NULL, *dA = NULL, *dC = NULL, one = 1, zero = 0;
    size_t sS = (size_t)n * n * sizeof(double), sA = (size_t)m * n * sizeof(double);
    if (!sA) return 0;
    CU(cudaMalloc(&dS, sS));
    CU(cudaMalloc(&dA, sA));
    CU(cudaMalloc(&dC, sA));
    CU(cudaMemcpy(dS, S, sS, cudaMemcpyHostToDevice));
    CU(cudaMemcpy(dA, A, sA, cudaMemcpyHostToDevice));
    // Cᵀ (n, m) = S Aᵀ; the row-major upper triangle of S is the column-major lower one
    CB(cublasDsymm(g_blas, CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_LOWER, n, m, &one, dS, n, dA, n, &zero, dC, n));
    CU(cudaMemcpy(C, dC, sA, cudaMemcpyDeviceToHost));
out:
    cudaFree(dS), cudaFree(dA), cudaFree(dC);
    return rc;
}

extern "C" int gqcu_dsyrk_acc(int n, int k, const double *X, double *H, char *err, size_t cap) {
    int rc = 0;
    double *dX = NULL, *dH = NULL, one = 1;
    size_t sX = (size_t)k * n * sizeof(double), sH = (size_t)n * n * sizeof(double);
    if (!sX) return 0;
    CU(cudaMalloc(&dX, sX));
    CU(cudaMalloc(&dH, sH));
    CU(cudaMemcpy(dX, X, sX, cudaMemcpyHostToDevice));
    CU(cudaMemcpy(dH, H, sH, cudaMemcpyHostToDevice));
    // column-major: Xᵀ is (n, k); Hᵀ += Xᵀ X, lower (= row-major upper)
    CB(cublasDsyrk(g_blas, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, n, k, &one, dX, n, &one, dH, n));
    CU(cudaMemcpy(H, dH, sH, cudaMemcpyDeviceToHost));
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
    CU(cudaMalloc(&dA, sA));
    CU(cudaMalloc(&dinfo, sizeof(int)));
    CU(cudaMalloc(&dbad, sizeof(int)));
    CU(cudaMemcpy(dA, A, sA, cudaMemcpyHostToDevice));
    CS(cusolverDnDpotrf_bufferSize(g_solver, CUBLAS_FILL_MODE_LOWER, n, dA, n, &lw));
    CS(cusolverDnDpotri_bufferSize(g_solver, CUBLAS_FILL_MODE_LOWER, n, dA, n, &lw2));
    if (lw2 > lw) lw = lw2;
    CU(cudaMalloc(&work, (size_t)(lw > 0 ? lw : 1) * sizeof(double)));
    CS(cusolverDnDpotrf(g_solver, CUBLAS_FILL_MODE_LOWER, n, dA, n, work, lw, dinfo));
    CU(cudaMemcpy(info, dinfo, sizeof(int), cudaMemcpyDeviceToHost));
    if (*info) goto out;
    CS(cusolverDnDpotri(g_solver, CUBLAS_FILL_MODE_LOWER, n, dA, n, work, lw, dinfo));
    CU(cudaMemcpy(info, dinfo, sizeof(int), cudaMemcpyDeviceToHost));
    if (*info) goto out;
    mirror_upper<<<bl, th>>>(dA, n);
    CU(cudaGetLastError());
    CS(cusolverDnDpotrf(g_solver, CUBLAS_FILL_MODE_LOWER, n, dA, n, work, lw, dinfo));
    CU(cudaMemcpy(info, dinfo, sizeof(int), cudaMemcpyDeviceToHost));
    if (*info) goto out;
    CU(cudaMemcpy(dbad, &bad0, sizeof(int), cudaMemcpyHostToDevice));
    finish_upper<<<bl, th>>>(dA, n, dbad);
    CU(cudaGetLastError());
    CU(cudaMemcpy(&bad, dbad, sizeof(int), cudaMemcpyDeviceToHost));
    if (bad <= n) *info = bad;
    CU(cudaMemcpy(A, dA, sA, cudaMemcpyDeviceToHost));
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
    CU(cudaMalloc(&dx, sizeof(double) * n * d));
    if (s2) CU(cudaMalloc(&ds2, sizeof(double) * n));
    CU(cudaMalloc(&dM, sizeof(double) * n_slots * d * d));
    CU(cudaMalloc(&dC, sizeof(double) * k * d));
    CU(cudaMalloc(&dP, sizeof(double) * n_slots * k * d));
    CU(cudaMalloc(&dn, sizeof(double) * n_slots * k));
    CU(cudaMalloc(&didx, sizeof(int32_t) * n));
    if (dist) CU(cudaMalloc(&ddist, sizeof(double) * n));
    CU(cudaMalloc(&dpart, sizeof(double) * nb));
    CU(cudaMemcpy(dx, x, sizeof(double) * n * d, cudaMemcpyHostToDevice));
    if (s2) CU(cudaMemcpy(ds2, s2, sizeof(double) * n, cudaMemcpyHostToDevice));
    CU(cudaMemcpy(dM, metric, sizeof(double) * n_slots * d * d, cudaMemcpyHostToDevice));
    CU(cudaMemcpy(dC, C, sizeof(double) * k * d, cudaMemcpyHostToDevice));
    vq_precompute<<<(unsigned)(((int64_t)n_slots * k + TB - 1) / TB), TB>>>(dM, diag, d, dC, k, n_slots, dP, dn);
    CU(cudaGetLastError());
    vq_assign_k<<<(unsigned)nb, TB, TB * sizeof(double)>>>(dx, ds2, dM, diag, d, per_slot, n, dC, k, dP, dn, didx,
                                                            ddist, dpart);
    CU(cudaGetLastError());
    CU(cudaMemcpy(idx, didx, sizeof(int32_t) * n, cudaMemcpyDeviceToHost));
    if (dist) CU(cudaMemcpy(dist, ddist, sizeof(double) * n, cudaMemcpyDeviceToHost));
    CU(cudaMemcpy(part.data(), dpart, sizeof(double) * nb, cudaMemcpyDeviceToHost));
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
    CU(cudaMalloc(&dx, sizeof(double) * n * d));
    if (s2) CU(cudaMalloc(&ds2, sizeof(double) * n));
    CU(cudaMalloc(&dM, sizeof(double) * n_slots * d * d));
    CU(cudaMalloc(&dC, sizeof(double) * k * d));
    CU(cudaMalloc(&dA, sizeof(double) * k * d * d));
    CU(cudaMalloc(&db, sizeof(double) * k * d));
    CU(cudaMalloc(&didx, sizeof(int32_t) * n));
    CU(cudaMalloc(&danchor, sizeof(unsigned long long) * k));
    CU(cudaMalloc(&dempty, sizeof(int)));
    CU(cudaMemcpy(dx, x, sizeof(double) * n * d, cudaMemcpyHostToDevice));
    if (s2) CU(cudaMemcpy(ds2, s2, sizeof(double) * n, cudaMemcpyHostToDevice));
    CU(cudaMemcpy(dM, metric, sizeof(double) * n_slots * d * d, cudaMemcpyHostToDevice));
    CU(cudaMemcpy(dC, C, sizeof(double) * k * d, cudaMemcpyHostToDevice));
    CU(cudaMemcpy(didx, idx, sizeof(int32_t) * n, cudaMemcpyHostToDevice));
    CU(cudaMemset(dA, 0, sizeof(double) * k * d * d));
    CU(cudaMemset(db, 0, sizeof(double) * k * d));
    CU(cudaMemset(danchor, 0xff, sizeof(unsigned long long) * k));
    CU(cudaMemset(dempty, 0, sizeof(int)));
    mstep_anchor<<<(unsigned)((n + TB - 1) / TB), TB>>>(didx, n, danchor);
    CU(cudaGetLastError());
    mstep_accum<<<(unsigned)((n + TB - 1) / TB), TB>>>(dx, ds2, dM, diag, d, per_slot, n, didx, danchor, dA, db);
    CU(cudaGetLastError());
    mstep_solve<<<(unsigned)((k + TB - 1) / TB), TB>>>(dx, d, k, danchor, diag, dA, db, dC, dempty, none);
    CU(cudaGetLastError());
    CU(cudaMemcpy(C, dC, sizeof(double) * k * d, cudaMemcpyDeviceToHost));
    CU(cudaMemcpy(empty, dempty, sizeof(int), cudaMemcpyDeviceToHost));
out:
    cudaFree(dx), cudaFree(ds2), cudaFree(dM), cudaFree(dC), cudaFree(dA), cudaFree(db), cudaFree(didx);
    cudaFree(danchor), cudaFree(dempty);
    return rc;
}
