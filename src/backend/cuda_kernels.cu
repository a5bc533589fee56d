// cuda_kernels.cu - the CUDA side of the CUDA backend: cuBLAS / cuSOLVER calls
// and the VQ kernels, behind a plain C interface (cuda_kernels.h) that
// cuda.c turns into the primitive table of backend.h.
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
#include "cuda_kernels.h"

#include "../quant/vqform.h"
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
static unsigned blocks_for(int64_t n, int tb) { return (unsigned)((n + tb - 1) / tb); }

template <typename T> static cudaError_t upload(T **dst, const T *src, size_t n) {
    cudaError_t e = cudaMalloc((void **)dst, sizeof(T) * (n ? n : 1));
    if (e == cudaSuccess && n) e = cudaMemcpy(*dst, src, sizeof(T) * n, cudaMemcpyHostToDevice);
    return e;
}

// ---------------------------------------------------------------------------
// Held buffers (backend.h: hold / release). Few at a time: a linear search.

struct held {
    const char *h;
    size_t bytes;
    char *d;
    bool writable;
};
static std::vector<held> g_held;

static const held *find_held(const void *p, size_t bytes) {
    const char *c = (const char *)p;
    for (const held &e : g_held)
        if (c >= e.h && c + bytes <= e.h + e.bytes) return &e;
    return NULL;
}

// A device view of the host operand [p, p + bytes): inside a held buffer its
// copy (*own NULL), else a new device buffer (*own, the caller frees it)
// filled from the host when `in`. An output (`out`) inside a read-only held
// buffer is an error (cudaErrorInvalidValue).
static cudaError_t view(void **d, void **own, const void *p, size_t bytes, bool in, bool out) {
    *own = NULL;
    if (const held *e = find_held(p, bytes)) {
        if (out && !e->writable) return cudaErrorInvalidValue;
        *d = e->d + ((const char *)p - e->h);
        return cudaSuccess;
    }
    cudaError_t r = cudaMalloc(own, bytes ? bytes : 8);
    if (r == cudaSuccess && in && bytes) r = cudaMemcpy(*own, p, bytes, cudaMemcpyHostToDevice);
    *d = *own;
    return r;
}
template <typename T> static cudaError_t view_in(const T **d, void **own, const T *p, size_t bytes) {
    return view((void **)d, own, p, bytes, true, false);
}
// An output's result back to the host (nothing when it is held).
static cudaError_t unview(void *own, void *p, size_t bytes) {
    return own && bytes ? cudaMemcpy(p, own, bytes, cudaMemcpyDeviceToHost) : cudaSuccess;
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

extern "C" int gqcu_hold(const void *p, size_t bytes, int writable, char *err, size_t cap) {
    int rc = 0;
    held e = {(const char *)p, bytes, NULL, writable != 0};
    for (const held &o : g_held)
        if (e.h < o.h + o.bytes && o.h < e.h + bytes) return fail(err, cap, "gqcu_hold", "overlaps a held buffer");
    CHECK(cudaMalloc((void **)&e.d, bytes ? bytes : 8));
    if (bytes) CHECK(cudaMemcpy(e.d, p, bytes, cudaMemcpyHostToDevice));
    g_held.push_back(e);
    return 0;
out:
    cudaFree(e.d);
    return rc;
}

extern "C" int gqcu_release(const void *p, char *err, size_t cap) {
    int rc = 0;
    for (size_t i = 0; i < g_held.size(); i++) {
        held e = g_held[i];
        if (e.h != (const char *)p) continue;
        g_held.erase(g_held.begin() + i);
        if (e.writable && e.bytes) CHECK(cudaMemcpy((void *)e.h, e.d, e.bytes, cudaMemcpyDeviceToHost));
    out:
        cudaFree(e.d);
        return rc;
    }
    return fail(err, cap, "gqcu_release", "buffer not held");
}

// Bytes spanned by a row-major (rows, cols) matrix with leading dimension ld.
static size_t span(int rows, int cols, int ld) { return rows > 0 && cols > 0 ? ((size_t)(rows - 1) * ld + cols) * sizeof(double) : 0; }

extern "C" int gqcu_dgemm(int ta, int tb, int m, int n, int k, double alpha, const double *A, int lda,
                          const double *B, int ldb, double beta, double *C, int ldc, char *err, size_t cap) {
    int rc = 0;
    const double *dA = NULL, *dB = NULL;
    double *dC = NULL;
    void *oA = NULL, *oB = NULL, *oC = NULL;
    size_t sA = ta ? span(k, m, lda) : span(m, k, lda), sB = tb ? span(n, k, ldb) : span(k, n, ldb), sC = span(m, n, ldc);
    if (!sC) return 0;
    CHECK(view_in(&dA, &oA, A, sA));
    CHECK(view_in(&dB, &oB, B, sB));
    // in: the copy back spans the elements between the rows (ldc > n) too
    CHECK(view((void **)&dC, &oC, C, sC, true, true));
    // Cᵀ (n, m) = op(B)ᵀ op(A)ᵀ in column-major
    CHECK(cublasDgemm(g_blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, dB, ldb, dA,
                   lda, &beta, dC, ldc));
    CHECK(unview(oC, C, sC));
out:
    cudaFree(oA), cudaFree(oB), cudaFree(oC);
    return rc;
}

extern "C" int gqcu_dsymm_right(int m, int n, const double *S, const double *A, double *C, char *err, size_t cap) {
    int rc = 0;
    const double *dS = NULL, *dA = NULL, one = 1, zero = 0;
    double *dC = NULL;
    void *oS = NULL, *oA = NULL, *oC = NULL;
    size_t sS = (size_t)n * n * sizeof(double), sA = (size_t)m * n * sizeof(double);
    if (!sA) return 0;
    CHECK(view_in(&dS, &oS, S, sS));
    CHECK(view_in(&dA, &oA, A, sA));
    CHECK(view((void **)&dC, &oC, C, sA, false, true));
    // Cᵀ (n, m) = S Aᵀ; the row-major upper triangle of S is the column-major lower one
    CHECK(cublasDsymm(g_blas, CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_LOWER, n, m, &one, dS, n, dA, n, &zero, dC, n));
    CHECK(unview(oC, C, sA));
out:
    cudaFree(oS), cudaFree(oA), cudaFree(oC);
    return rc;
}

extern "C" int gqcu_dsyrk_acc(int n, int k, const double *X, double *H, char *err, size_t cap) {
    int rc = 0;
    const double *dX = NULL, one = 1;
    double *dH = NULL;
    void *oX = NULL, *oH = NULL;
    size_t sX = (size_t)k * n * sizeof(double), sH = (size_t)n * n * sizeof(double);
    if (!sX) return 0;
    CHECK(view_in(&dX, &oX, X, sX));
    CHECK(view((void **)&dH, &oH, H, sH, true, true));
    // column-major: Xᵀ is (n, k); Hᵀ += Xᵀ X, lower (= row-major upper)
    CHECK(cublasDsyrk(g_blas, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, n, k, &one, dX, n, &one, dH, n));
    CHECK(unview(oH, H, sH));
out:
    cudaFree(oX), cudaFree(oH);
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
    if (n <= 0) return 0;
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

// Cholesky solve: the row-major upper triangle is the column-major lower one.
extern "C" int gqcu_dposv(int n, double *A, double *b, int *info, char *err, size_t cap) {
    int rc = 0, lw = 0;
    double *dA = NULL, *db = NULL, *work = NULL;
    int *dinfo = NULL;
    *info = 0;
    if (n <= 0) return 0;
    CHECK(upload(&dA, A, (size_t)n * n));
    CHECK(upload(&db, b, (size_t)n));
    CHECK(cudaMalloc(&dinfo, sizeof(int)));
    CHECK(cusolverDnDpotrf_bufferSize(g_solver, CUBLAS_FILL_MODE_LOWER, n, dA, n, &lw));
    CHECK(cudaMalloc(&work, (size_t)(lw > 0 ? lw : 1) * sizeof(double)));
    CHECK(cusolverDnDpotrf(g_solver, CUBLAS_FILL_MODE_LOWER, n, dA, n, work, lw, dinfo));
    CHECK(cudaMemcpy(info, dinfo, sizeof(int), cudaMemcpyDeviceToHost));
    if (*info) goto out;
    CHECK(cusolverDnDpotrs(g_solver, CUBLAS_FILL_MODE_LOWER, n, 1, dA, n, db, n, dinfo));
    CHECK(cudaMemcpy(info, dinfo, sizeof(int), cudaMemcpyDeviceToHost));
    CHECK(cudaMemcpy(b, db, sizeof(double) * n, cudaMemcpyDeviceToHost));
out:
    cudaFree(dA), cudaFree(db), cudaFree(work), cudaFree(dinfo);
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
    nrm[t] = gq_vq_project(metric + (size_t)s * d * d, diag, d, C + (size_t)m * d, P + (size_t)t * d);
}

// argmin_m nrm[m] − 2 xᵀP_m, lowest m on ties, NaN never wins (all NaN: 0),
// as vq.c's nearest_impl.
__device__ static int nearest(const double *x, int d, const double *P, const double *nrm, int k) {
    double best = INFINITY;
    int bm = 0;
    for (int m = 0; m < k; m++) {
        double dot = 0;
        for (int a = 0; a < d; a++) dot += x[a] * P[(size_t)m * d + a];
        const double e = nrm[m] - 2 * dot;
        if (e < best) best = e, bm = m;
    }
    return bm;
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
        const int bm = nearest(xr, d, Ps, ns, k);
        idx[i] = bm;
        v = gq_vq_qform(metric + (size_t)s * d * d, diag, d, xr, C + (size_t)bm * d) * (s2 ? s2[i] : 1.0);
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

// M-step, deterministic (no floating-point atomics: the same centroids on
// every run, so a resumed run can match an uninterrupted one): the points are
// sorted by centroid with a stable radix sort, so each centroid's points are in
// index order and its anchor (vq.c: the first point) leads its list; then one
// warp per centroid sums A_m = Σ w M and b_m = Σ w M (x − x_anchor) over its
// list, lanes striding it and a shuffle tree at the end (a fixed order).
__global__ void mstep_iota(int32_t *v, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) v[i] = i;
}
__global__ void mstep_bounds(const uint32_t *key, int n, int *beg, int *end) {
    int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= n) return;
    if (p == 0 || key[p] != key[p - 1]) beg[key[p]] = p;
    if (p == n - 1 || key[p] != key[p + 1]) end[key[p]] = p + 1;
}
// One point's share of its centroid's normal equations: A += w M, b += w M
// (x − x_anchor) (diag: the diagonal of M only; A's other entries untouched).
__device__ static void mstep_add(double *A, double *b, const double *M, double w, const double *xi, const double *xr,
                                 int d, int diag) {
    double e[VQ_MAX_DIM];
    for (int a = 0; a < d; a++) e[a] = xi[a] - xr[a];
    for (int a = 0; a < d; a++) {
        if (diag) {
            A[a * d + a] += w * M[a * d + a];
            b[a] += w * M[a * d + a] * e[a];
        } else
            for (int c = 0; c < d; c++) {
                A[a * d + c] += w * M[a * d + c];
                b[a] += w * M[a * d + c] * e[c];
            }
    }
}
// A (d × d; diag: its diagonal) and b summed over the warp's lanes by a
// shuffle tree (a fixed order); every lane gets the sums.
__device__ static void warp_sum_ab(double *A, double *b, int d, int diag) {
    const int dd = d * d;
    for (int q = 0; q < dd + d; q++) {
        if (diag && q < dd && q / d != q % d) continue;
        double v = q < dd ? A[q] : b[q - dd];
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (q < dd) A[q] = v;
        else b[q - dd] = v;
    }
}
__global__ void mstep_sum(const double *x, const double *s2, const double *metric, int diag, int d, int per_slot,
                          int k, const int *beg, const int *end, const int32_t *pts, double *A, double *b,
                          int *anchor) {
    const int m = (int)(((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32), lane = threadIdx.x % 32;
    if (m >= k) return; // whole warps: blockDim is a multiple of 32
    const int p0 = beg[m], p1 = end[m], dd = d * d;
    if (p0 >= p1) {
        if (lane == 0) anchor[m] = -1;
        return;
    }
    const double *xr = x + (size_t)pts[p0] * d;
    double Aa[VQ_MAX_DIM * VQ_MAX_DIM], ba[VQ_MAX_DIM];
    for (int q = 0; q < dd; q++) Aa[q] = 0;
    for (int a = 0; a < d; a++) ba[a] = 0;
    for (int p = p0 + lane; p < p1; p += 32) {
        const int64_t i = pts[p];
        mstep_add(Aa, ba, metric + (size_t)(i / per_slot) * dd, s2 ? s2[i] : 1.0, x + (size_t)i * d, xr, d, diag);
    }
    warp_sum_ab(Aa, ba, d, diag);
    if (lane == 0) {
        for (int q = 0; q < dd; q++) A[(size_t)m * dd + q] = Aa[q];
        for (int a = 0; a < d; a++) b[(size_t)m * d + a] = ba[a];
        anchor[m] = pts[p0];
    }
}
// c = x_anchor + A⁻¹ b for a centroid with points (diag: per coordinate with
// A_aa > 0; full: Cholesky of the triangle LAPACKE_dposv(COL_MAJOR, 'U')
// reads in vq.c, i.e. the row-major lower one; the old centroid kept when A is
// not positive definite or the solution is not finite, as there).
__device__ static void solve_centroid(const double *Am, const double *bm, const double *xr, int d, int diag,
                                      double *c) {
    if (diag) {
        for (int a = 0; a < d; a++)
            if (Am[a * d + a] > 0) c[a] = xr[a] + bm[a] / Am[a * d + a];
        return;
    }
    double L[VQ_MAX_DIM * VQ_MAX_DIM], y[VQ_MAX_DIM];
    for (int i = 0; i < d; i++)
        for (int j = 0; j <= i; j++) {
            double s = Am[i * d + j];
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

__global__ void mstep_solve(const double *x, int d, int k, const int *anchor, int diag, const double *A,
                            const double *b, double *C, int *empty) {
    int m = blockIdx.x * blockDim.x + threadIdx.x;
    if (m >= k) return;
    if (anchor[m] < 0) {
        atomicAdd(empty, 1);
        return;
    }
    solve_centroid(A + (size_t)m * d * d, b + (size_t)m * d, x + (size_t)anchor[m] * d, d, diag, C + (size_t)m * d);
}

extern "C" int gqcu_vq_mstep(int d, int n_slots, int per_slot, const double *x, const double *s2,
                             const double *metric, int diag, const int32_t *idx, int k, double *C, int *empty,
                             char *err, size_t cap) {
    int rc = 0;
    const int64_t n = (int64_t)n_slots * per_slot;
    const int TB = 256;
    double *dx = NULL, *ds2 = NULL, *dM = NULL, *dC = NULL, *dA = NULL, *db = NULL;
    int32_t *didx = NULL, *dpts = NULL, *dpts_s = NULL;
    uint32_t *dkey_s = NULL;
    int *dbeg = NULL, *dend = NULL, *danchor = NULL, *dempty = NULL;
    void *tmp = NULL;
    size_t tmp_bytes = 0;
    int bits = 1;
    while ((1 << bits) < k) bits++;
    *empty = 0;
    if (n <= 0) {
        *empty = k;
        return 0;
    }
    if (n > 0x7fffffff) return fail(err, cap, "gqcu_vq_mstep", "more than 2^31 points");
    CHECK(upload(&dx, x, (size_t)n * d));
    if (s2) CHECK(upload(&ds2, s2, (size_t)n));
    CHECK(upload(&dM, metric, (size_t)n_slots * d * d));
    CHECK(upload(&dC, C, (size_t)k * d));
    CHECK(upload(&didx, idx, (size_t)n));
    CHECK(cudaMalloc(&dpts, sizeof(int32_t) * n));
    CHECK(cudaMalloc(&dpts_s, sizeof(int32_t) * n));
    CHECK(cudaMalloc(&dkey_s, sizeof(uint32_t) * n));
    CHECK(cudaMalloc(&dA, sizeof(double) * k * d * d));
    CHECK(cudaMalloc(&db, sizeof(double) * k * d));
    CHECK(cudaMalloc(&dbeg, sizeof(int) * k));
    CHECK(cudaMalloc(&dend, sizeof(int) * k));
    CHECK(cudaMalloc(&danchor, sizeof(int) * k));
    CHECK(cudaMalloc(&dempty, sizeof(int)));
    CHECK(cudaMemset(dbeg, 0, sizeof(int) * k));
    CHECK(cudaMemset(dend, 0, sizeof(int) * k));
    CHECK(cudaMemset(dempty, 0, sizeof(int)));
    mstep_iota<<<blocks_for(n, TB), TB>>>(dpts, (int)n);
    CHECK(cudaGetLastError());
    // indices are in [0, k): the low `bits` bits order them, unsigned
    CHECK(cub::DeviceRadixSort::SortPairs(NULL, tmp_bytes, (const uint32_t *)didx, dkey_s, dpts, dpts_s, (int)n, 0,
                                          bits));
    CHECK(cudaMalloc(&tmp, tmp_bytes ? tmp_bytes : 1));
    CHECK(cub::DeviceRadixSort::SortPairs(tmp, tmp_bytes, (const uint32_t *)didx, dkey_s, dpts, dpts_s, (int)n, 0,
                                          bits));
    mstep_bounds<<<blocks_for(n, TB), TB>>>(dkey_s, (int)n, dbeg, dend);
    CHECK(cudaGetLastError());
    mstep_sum<<<blocks_for((int64_t)k * 32, 128), 128>>>(dx, ds2, dM, diag, d, per_slot, k, dbeg, dend, dpts_s, dA, db,
                                                        danchor);
    CHECK(cudaGetLastError());
    mstep_solve<<<blocks_for(k, TB), TB>>>(dx, d, k, danchor, diag, dA, db, dC, dempty);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(C, dC, sizeof(double) * k * d, cudaMemcpyDeviceToHost));
    CHECK(cudaMemcpy(empty, dempty, sizeof(int), cudaMemcpyDeviceToHost));
out:
    cudaFree(dx), cudaFree(ds2), cudaFree(dM), cudaFree(dC), cudaFree(dA), cudaFree(db), cudaFree(didx);
    cudaFree(dpts), cudaFree(dpts_s), cudaFree(dkey_s), cudaFree(dbeg), cudaFree(dend), cudaFree(danchor);
    cudaFree(dempty), cudaFree(tmp);
    return rc;
}

// ---------------------------------------------------------------------------
// EM rounds of many small groups at once (gq_vq_em_batch's contract, vq.c's
// gq_vq_em_run step for step): one thread block per group runs every round
// with its codebook in shared memory. Assignment: P and nrm per (slot,
// centroid), then argmin_m nrm − 2 xᵀP (lowest m on ties, NaN never wins),
// the objective summed in a fixed order; M-step: a warp per centroid finds
// its first point (the anchor) and sums A, b over its points (lanes stride,
// shuffle tree), lane 0 solves; empty centroids move, in increasing order,
// onto the worst-served point (lowest index on ties). No floating-point
// atomics: the same result on every run.
#define EM_T 256
#define GRAM_MAX 256 // centroids per codebook (EM, normal equations) and vectors per column tile

struct em_group {
    int d, k, diag, ns, ps;
    int64_t n;
    const double *x, *s2, *M;
    double *P, *nrm, *dist, *C, *red;
    int32_t *idx, *prev;
    int *ired;
};

// Assignment of every point to C; returns the objective (all threads).
__device__ static double em_assign(const em_group &g) {
    const int d = g.d, k = g.k, tid = threadIdx.x;
    for (int t = tid; t < g.ns * k; t += EM_T)
        g.nrm[t] = gq_vq_project(g.M + (size_t)(t / k) * d * d, g.diag, d, g.C + (size_t)(t % k) * d, g.P + (size_t)t * d);
    __syncthreads();
    double part = 0;
    for (int64_t i = tid; i < g.n; i += EM_T) {
        const int s = (int)(i / g.ps);
        const double *xi = g.x + (size_t)i * d;
        const int bm = nearest(xi, d, g.P + (size_t)s * k * d, g.nrm + (size_t)s * k, k);
        g.idx[i] = bm;
        const double v = gq_vq_qform(g.M + (size_t)s * d * d, g.diag, d, xi, g.C + (size_t)bm * d) * (g.s2 ? g.s2[i] : 1.0);
        g.dist[i] = v;
        part += v;
    }
    g.red[tid] = part;
    __syncthreads();
    for (int h = EM_T / 2; h > 0; h >>= 1) {
        if (tid < h) g.red[tid] += g.red[tid + h];
        __syncthreads();
    }
    const double obj = g.red[0];
    __syncthreads();
    return obj;
}

// M-step in place on C; returns the number of empty centroids (all threads).
__device__ static int em_mstep(const em_group &g, int *s_empty) {
    const int d = g.d, dd = d * d, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (threadIdx.x == 0) *s_empty = 0;
    __syncthreads();
    for (int m = warp; m < g.k; m += EM_T / 32) {
        int first = 0x7fffffff;
        for (int64_t i = lane; i < g.n; i += 32)
            if (g.idx[i] == m) {
                first = (int)i;
                break;
            }
        for (int o = 16; o > 0; o >>= 1) first = min(first, __shfl_xor_sync(0xffffffffu, first, o));
        if (first == 0x7fffffff) {
            if (lane == 0) atomicAdd(s_empty, 1);
            continue;
        }
        const double *xr = g.x + (size_t)first * d;
        double A[VQ_MAX_DIM * VQ_MAX_DIM], b[VQ_MAX_DIM];
        for (int q = 0; q < dd; q++) A[q] = 0;
        for (int a = 0; a < d; a++) b[a] = 0;
        for (int64_t i = lane; i < g.n; i += 32)
            if (g.idx[i] == m)
                mstep_add(A, b, g.M + (size_t)(i / g.ps) * dd, g.s2 ? g.s2[i] : 1.0, g.x + (size_t)i * d, xr, d, g.diag);
        warp_sum_ab(A, b, d, g.diag);
        if (lane == 0) solve_centroid(A, b, xr, d, g.diag, g.C + (size_t)m * d);
    }
    __syncthreads();
    return *s_empty;
}

// Empty centroids onto the worst-served points (vq.c); returns how many moved.
__device__ static int em_reseed(const em_group &g, unsigned char *used) {
    const int d = g.d, tid = threadIdx.x;
    for (int64_t i = tid; i < g.n; i += EM_T)
        g.dist[i] = gq_vq_qform(g.M + (size_t)(i / g.ps) * d * d, g.diag, d, g.x + (size_t)i * d,
                             g.C + (size_t)g.idx[i] * d) *
                    (g.s2 ? g.s2[i] : 1.0);
    for (int m = tid; m < g.k; m += EM_T) used[m] = 0;
    __syncthreads();
    for (int64_t i = tid; i < g.n; i += EM_T) used[g.idx[i]] = 1;
    __syncthreads();
    int moved = 0;
    for (int m = 0; m < g.k; m++) {
        if (used[m]) continue;
        // argmax of dist, lowest index on ties (vq.c: w = 0, then strict >, so
        // a NaN wins only at index 0)
        double bv = 0;
        int bw = -1;
        for (int64_t i = tid; i < g.n; i += EM_T) {
            const double v = g.dist[i];
            if (bw < 0 ? i == 0 || !isnan(v) : v > bv) bv = v, bw = (int)i;
        }
        g.red[tid] = bv, g.ired[tid] = bw;
        __syncthreads();
        for (int h = EM_T / 2; h > 0; h >>= 1) {
            if (tid < h) {
                const double v = g.red[tid + h];
                const int w = g.ired[tid + h];
                if (w >= 0 && (g.ired[tid] < 0 || v > g.red[tid] || (v == g.red[tid] && w < g.ired[tid])))
                    g.red[tid] = v, g.ired[tid] = w;
            }
            __syncthreads();
        }
        const double v = g.red[0];
        const int w = g.ired[0];
        __syncthreads();
        if (!(v > 0)) break; // every point sits on a centroid
        if (tid == 0) {
            for (int a = 0; a < d; a++) g.C[(size_t)m * d + a] = g.x[(size_t)w * d + a];
            g.idx[w] = m, g.dist[w] = 0, used[m] = 1;
        }
        moved++;
        __syncthreads();
    }
    return moved;
}

__global__ void vq_em_k(int d, int k, int iters, int diag, const int *n_slots, const int *per_slot,
                        const int64_t *x_off, const int64_t *m_off, const int64_t *s_off, const double *X,
                        const double *S2, const double *MT, double *CG, int32_t *IDX, int32_t *PREV, double *DIST, double *P,
                        double *NRM, int *iters_out, int *reseeded_out, double *obj_out) {
    extern __shared__ double em_sh[];
    __shared__ int s_empty, s_changed;
    __shared__ unsigned char used[GRAM_MAX];
    const int j = blockIdx.x, tid = threadIdx.x;
    em_group g;
    g.d = d, g.k = k, g.diag = diag, g.ns = n_slots[j], g.ps = per_slot[j];
    g.n = (int64_t)g.ns * g.ps;
    g.x = X + (size_t)x_off[j] * d, g.s2 = S2 ? S2 + x_off[j] : NULL, g.M = MT + (size_t)m_off[j] * d * d;
    g.P = P + (size_t)s_off[j] * k * d, g.nrm = NRM + (size_t)s_off[j] * k, g.dist = DIST + x_off[j];
    g.idx = IDX + x_off[j], g.prev = PREV + x_off[j];
    g.C = em_sh, g.red = em_sh + (size_t)k * d, g.ired = (int *)(g.red + EM_T);
    double *Cg = CG + (size_t)j * k * d;
    for (int t = tid; t < k * d; t += EM_T) g.C[t] = Cg[t];
    __syncthreads();
    double obj = em_assign(g);
    int it = 0, moved = 0;
    while (it < iters && !isnan(obj)) {
        for (int64_t i = tid; i < g.n; i += EM_T) g.prev[i] = g.idx[i];
        if (em_mstep(g, &s_empty)) moved += em_reseed(g, used);
        obj = em_assign(g);
        it++;
        if (tid == 0) s_changed = 0;
        __syncthreads();
        for (int64_t i = tid; i < g.n; i += EM_T)
            if (g.prev[i] != g.idx[i]) s_changed = 1;
        __syncthreads();
        const int changed = s_changed;
        __syncthreads();
        if (!changed) break;
    }
    for (int t = tid; t < k * d; t += EM_T) Cg[t] = g.C[t];
    if (tid == 0) iters_out[j] = it, reseeded_out[j] = moved, obj_out[j] = obj;
}

extern "C" int gqcu_vq_em(int n_jobs, int d, int k, int iters, int diag, const int *n_slots, const int *per_slot,
                          const int64_t *x_off, const int64_t *m_off, int64_t n_metric, const double *x,
                          const double *s2, const double *metric, double *C, int32_t *idx, int *iters_out,
                          int *reseeded, double *objective, char *err, size_t cap) {
    int rc = 0;
    if (n_jobs <= 0) return 0;
    if (k > GRAM_MAX || d > VQ_MAX_DIM) return fail(err, cap, "gqcu_vq_em", "more than 256 centroids or dimension 8");
    const int64_t n = x_off[n_jobs - 1] + (int64_t)n_slots[n_jobs - 1] * per_slot[n_jobs - 1];
    std::vector<int64_t> s_off((size_t)n_jobs); // each block's own P / nrm scratch
    int64_t nsl = 0;
    for (int j = 0; j < n_jobs; j++) s_off[(size_t)j] = nsl, nsl += n_slots[j];
    const size_t smem = sizeof(double) * ((size_t)k * d + EM_T) + sizeof(int) * EM_T;
    int *dns = NULL, *dps = NULL, *dit = NULL, *drs = NULL;
    int64_t *dxo = NULL, *dmo = NULL, *dso = NULL;
    double *dx = NULL, *ds2 = NULL, *dM = NULL, *dC = NULL, *ddist = NULL, *dP = NULL, *dnrm = NULL, *dobj = NULL;
    int32_t *didx = NULL, *dprev = NULL;
    CHECK(upload(&dns, n_slots, (size_t)n_jobs));
    CHECK(upload(&dps, per_slot, (size_t)n_jobs));
    CHECK(upload(&dxo, x_off, (size_t)n_jobs));
    CHECK(upload(&dmo, m_off, (size_t)n_jobs));
    CHECK(upload(&dso, s_off.data(), (size_t)n_jobs));
    CHECK(upload(&dx, x, (size_t)n * d));
    if (s2) CHECK(upload(&ds2, s2, (size_t)n));
    CHECK(upload(&dM, metric, (size_t)n_metric * d * d));
    CHECK(upload(&dC, C, (size_t)n_jobs * k * d));
    CHECK(cudaMalloc(&didx, sizeof(int32_t) * n));
    CHECK(cudaMalloc(&dprev, sizeof(int32_t) * n));
    CHECK(cudaMalloc(&ddist, sizeof(double) * n));
    CHECK(cudaMalloc(&dP, sizeof(double) * nsl * k * d));
    CHECK(cudaMalloc(&dnrm, sizeof(double) * nsl * k));
    CHECK(cudaMalloc(&dit, sizeof(int) * n_jobs));
    CHECK(cudaMalloc(&drs, sizeof(int) * n_jobs));
    CHECK(cudaMalloc(&dobj, sizeof(double) * n_jobs));
    vq_em_k<<<(unsigned)n_jobs, EM_T, smem>>>(d, k, iters, diag, dns, dps, dxo, dmo, dso, dx, ds2, dM, dC, didx,
                                              dprev, ddist, dP, dnrm, dit, drs, dobj);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(C, dC, sizeof(double) * n_jobs * k * d, cudaMemcpyDeviceToHost));
    CHECK(cudaMemcpy(idx, didx, sizeof(int32_t) * n, cudaMemcpyDeviceToHost));
    CHECK(cudaMemcpy(iters_out, dit, sizeof(int) * n_jobs, cudaMemcpyDeviceToHost));
    CHECK(cudaMemcpy(reseeded, drs, sizeof(int) * n_jobs, cudaMemcpyDeviceToHost));
    CHECK(cudaMemcpy(objective, dobj, sizeof(double) * n_jobs, cudaMemcpyDeviceToHost));
out:
    cudaFree(dns), cudaFree(dps), cudaFree(dxo), cudaFree(dmo), cudaFree(dso), cudaFree(dx), cudaFree(ds2), cudaFree(dM);
    cudaFree(dC), cudaFree(didx), cudaFree(dprev), cudaFree(ddist), cudaFree(dP), cudaFree(dnrm), cudaFree(dit);
    cudaFree(drs), cudaFree(dobj);
    return rc;
}

// ---------------------------------------------------------------------------
// Codebook-update normal equations (contract: gq_vq_gram, vq.h). G is made of
// (k·d)² blocks, one per pair of (stage, column tile) B1, B2:
//   G[(B1, c1, j1), (B2, c2, j2)] = Σ_r Σ_{v1 ∈ ct1: idx_s1 = c1} Σ_{v2 ∈ ct2: idx_s2 = c2}
//                                   σ_{r,v1} σ_{r,v2} H[v1·d + j1, v2·d + j2].
// First, per (stage, row, column tile), the tile's vectors sorted by centroid
// (gram_lists: thread c scans for centroid c, so each list is in vector
// order) go to global memory once. Then one thread block per block pair
// B1 <= B2 and 16 × 16 chunk of it (the lower blocks are mirrored after, as
// on the CPU); each thread owns one entry (no atomics) and sums, row by row,
// over its two centroids' lists: vq.c's gram_block order and products.

#define GRAM_T 16

// grid (rows, stages·n_ct), GRAM_MAX threads. start: (stage, row, tile, k + 1)
// offsets into the tile's part of list / w, which are laid out as idx
// ((stage, row, vector)) and hold vector numbers and their σ.
__global__ void gram_lists(int rows, int nv, int k, int n_ct, const int *vt_start, const uint16_t *idx,
                           const double *sig, int *start, int *list, double *w) {
    __shared__ int cnt[GRAM_MAX], st[GRAM_MAX + 1];
    const int r = blockIdx.x, s = blockIdx.y / n_ct, ct = blockIdx.y % n_ct, tid = threadIdx.x;
    const int v0 = vt_start[ct], n = vt_start[ct + 1] - v0;
    const size_t row = (size_t)s * rows + r;
    const uint16_t *ir = idx + row * nv + v0;
    const double *sr = sig ? sig + (size_t)r * nv + v0 : NULL;
    int *lst = list + row * nv + v0;
    double *wl = w + row * nv + v0;
    for (int c = tid; c < k; c += blockDim.x) {
        int nc = 0;
        for (int v = 0; v < n; v++) nc += ir[v] == c;
        cnt[c] = nc;
    }
    __syncthreads();
    if (tid == 0) {
        st[0] = 0;
        for (int c = 0; c < k; c++) st[c + 1] = st[c] + cnt[c];
    }
    __syncthreads();
    int *gst = start + (row * n_ct + ct) * (size_t)(k + 1);
    for (int c = tid; c <= k; c += blockDim.x) gst[c] = st[c];
    for (int c = tid; c < k; c += blockDim.x) {
        int o = st[c];
        for (int v = 0; v < n; v++)
            if (ir[v] == c) lst[o] = v0 + v, wl[o++] = sr ? sr[v] : 1.0;
    }
}

__global__ void vq_gram_k(int rows, int nv, int d, int k, int S, int n_ct, const int *vt_start, const int *start,
                          const int *list, const double *w, const double *H, int ldh, double *G) {
    const int kd = k * d, nb = S * n_ct, cps = (kd + GRAM_T - 1) / GRAM_T;
    const size_t m = (size_t)nb * kd;
    const int chunk = blockIdx.x % (cps * cps);
    int B1 = 0, rest = blockIdx.x / (cps * cps); // pairs (0,0) (0,1) .. (0,nb−1) (1,1) ..
    while (rest >= nb - B1) rest -= nb - B1, B1++;
    const int B2 = B1 + rest;
    const int s1 = B1 / n_ct, ct1 = B1 % n_ct, s2 = B2 / n_ct, ct2 = B2 % n_ct;
    const int a = (chunk / cps) * GRAM_T + threadIdx.y, b = (chunk % cps) * GRAM_T + threadIdx.x;
    if (a >= kd || b >= kd) return;
    const int c1 = a / d, j1 = a % d, c2 = b / d, j2 = b % d;
    const int v1a = vt_start[ct1], v2a = vt_start[ct2];
    double acc = 0;
    for (int r = 0; r < rows; r++) {
        const size_t row1 = (size_t)s1 * rows + r, row2 = (size_t)s2 * rows + r;
        const int *st1 = start + (row1 * n_ct + ct1) * (size_t)(k + 1), *st2 = start + (row2 * n_ct + ct2) * (size_t)(k + 1);
        const int *l1 = list + row1 * nv + v1a, *l2 = list + row2 * nv + v2a;
        const double *w1 = w + row1 * nv + v1a, *w2 = w + row2 * nv + v2a;
        const int e1 = st1[c1 + 1], b2 = st2[c2], e2 = st2[c2 + 1];
        for (int i1 = st1[c1]; i1 < e1; i1++) { // vq.c's order and products: the same sum
            const double *h = H + (size_t)(l1[i1] * d + j1) * ldh + j2, wa = w1[i1];
            for (int i2 = b2; i2 < e2; i2++) acc += wa * w2[i2] * h[(size_t)l2[i2] * d];
        }
    }
    G[((size_t)B1 * kd + a) * m + (size_t)B2 * kd + b] = acc;
}

// Entries below the diagonal blocks (block row > block column) from their mirrors.
__global__ void vq_gram_mirror(double *G, size_t m, int kd) {
    const size_t i = (size_t)blockIdx.y * blockDim.y + threadIdx.y, j = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < m && j < m && i / kd > j / kd) G[i * m + j] = G[j * m + i];
}

extern "C" int gqcu_vq_gram(int rows, int nv, int d, int k, int stages, int n_ct, const int *vt_start,
                            const uint16_t *idx, size_t idx_stage, const double *sig, const double *H, int ldh,
                            double *G, char *err, size_t cap) {
    int rc = 0;
    const int kd = k * d, nb = stages * n_ct, cps = (kd + GRAM_T - 1) / GRAM_T, nvp = nv * d;
    const size_t m = (size_t)nb * kd, sH = nvp ? ((size_t)(nvp - 1) * ldh + nvp) * sizeof(double) : 0;
    int *dvt = NULL, *dstart = NULL, *dlist = NULL;
    uint16_t *didx = NULL;
    double *dsig = NULL, *dG = NULL, *dw = NULL;
    const double *dH = NULL;
    void *oH = NULL;
    if (!m) return 0;
    if (rows <= 0) {
        memset(G, 0, sizeof(double) * m * m);
        return 0;
    }
    if (k > GRAM_MAX) return fail(err, cap, "gqcu_vq_gram", "more than 256 centroids");
    for (int c = 0; c < n_ct; c++)
        if (vt_start[c + 1] - vt_start[c] > GRAM_MAX) return fail(err, cap, "gqcu_vq_gram", "column tile over 256 vectors");
    CHECK(upload(&dvt, vt_start, (size_t)n_ct + 1));
    CHECK(cudaMalloc(&didx, sizeof(uint16_t) * ((size_t)stages * rows * nv + 1)));
    for (int s = 0; s < stages; s++) // stages packed at a stride of rows·nv
        CHECK(cudaMemcpy(didx + (size_t)s * rows * nv, idx + (size_t)s * idx_stage, sizeof(uint16_t) * rows * nv,
                         cudaMemcpyHostToDevice));
    if (sig) CHECK(upload(&dsig, sig, (size_t)rows * nv));
    CHECK(view_in(&dH, &oH, H, sH));
    CHECK(cudaMalloc(&dG, sizeof(double) * m * m));
    {
        const dim3 th(GRAM_T, GRAM_T), mg((unsigned)((m + GRAM_T - 1) / GRAM_T), (unsigned)((m + GRAM_T - 1) / GRAM_T));
        const size_t grid = (size_t)nb * (nb + 1) / 2 * cps * cps;
        if (grid > 0x7fffffff || m > 65535u * GRAM_T || nb > 65535) { // grid x; the mirror's and the lists' grid y
            rc = fail(err, cap, "gqcu_vq_gram", "system too large");
            goto out;
        }
        CHECK(cudaMalloc(&dstart, sizeof(int) * (size_t)stages * rows * n_ct * (k + 1)));
        CHECK(cudaMalloc(&dlist, sizeof(int) * ((size_t)stages * rows * nv + 1)));
        CHECK(cudaMalloc(&dw, sizeof(double) * ((size_t)stages * rows * nv + 1)));
        gram_lists<<<dim3((unsigned)rows, (unsigned)nb), GRAM_MAX>>>(rows, nv, k, n_ct, dvt, didx, dsig, dstart, dlist,
                                                                      dw);
        CHECK(cudaGetLastError());
        vq_gram_k<<<(unsigned)grid, th>>>(rows, nv, d, k, stages, n_ct, dvt, dstart, dlist, dw, dH, ldh, dG);
        vq_gram_mirror<<<mg, th>>>(dG, m, kd);
    }
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(G, dG, sizeof(double) * m * m, cudaMemcpyDeviceToHost));
out:
    cudaFree(dvt), cudaFree(didx), cudaFree(dsig), cudaFree(dG), cudaFree(oH), cudaFree(dstart), cudaFree(dlist);
    cudaFree(dw);
    return rc;
}

// ---------------------------------------------------------------------------
// Inference: compressed matrices kept on the device (gqcu_mat_*) and the
// decoder forward (gqcu_lm_*). One token (decode) runs GEMV kernels: one warp
// per row, lanes over consecutive vectors / blocks (coalesced index and block
// loads), a warp-shuffle sum. Several tokens (prefill) decode row tiles of W
// to f32 and multiply with a TF32 tensor-core GEMM (cuBLAS).

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

__device__ __forceinline__ float warp_sum(float a) {
    for (int o = 16; o > 0; o >>= 1) a += __shfl_down_sync(0xffffffffu, a, o);
    return a;
}

// GGML blocks of 32 values, an fp16 scale d first. dot: Σ_j w_j x_j of one
// block; get: w_j.
struct BlkQ4_0 { // d, 16 bytes: w_j = d·(q_j − 8), q_j the low nibble of byte j (j < 16), else the high one of j − 16
    static constexpr int bytes = 18;
    __device__ static float dot(const uint8_t *b, const float *x) {
        float s = 0;
        for (int j = 0; j < 16; j++) s += (float)((b[2 + j] & 15) - 8) * x[j] + (float)((b[2 + j] >> 4) - 8) * x[j + 16];
        return __half2float(*(const __half *)b) * s;
    }
    __device__ static float get(const uint8_t *b, int j) {
        const int q = j < 16 ? (b[2 + j] & 15) : (b[2 + j - 16] >> 4);
        return __half2float(*(const __half *)b) * (float)(q - 8);
    }
};
struct BlkQ4_1 { // d, m, 16 bytes: w_j = d·q_j + m
    static constexpr int bytes = 20;
    __device__ static float dot(const uint8_t *b, const float *x) {
        float s = 0, sx = 0;
        for (int j = 0; j < 16; j++) {
            s += (float)(b[4 + j] & 15) * x[j] + (float)(b[4 + j] >> 4) * x[j + 16];
            sx += x[j] + x[j + 16];
        }
        return __half2float(*(const __half *)b) * s + __half2float(*(const __half *)(b + 2)) * sx;
    }
    __device__ static float get(const uint8_t *b, int j) {
        const int q = j < 16 ? (b[4 + j] & 15) : (b[4 + j - 16] >> 4);
        return (float)q * __half2float(*(const __half *)b) + __half2float(*(const __half *)(b + 2));
    }
};
struct BlkQ8_0 { // d, 32 int8: w_j = d·q_j
    static constexpr int bytes = 34;
    __device__ static float dot(const uint8_t *b, const float *x) {
        float s = 0;
        for (int j = 0; j < 32; j++) s += (float)(int8_t)b[2 + j] * x[j];
        return __half2float(*(const __half *)b) * s;
    }
    __device__ static float get(const uint8_t *b, int j) {
        return __half2float(*(const __half *)b) * (float)(int8_t)b[2 + j];
    }
};

// The row of this warp (8 warps per block), or -1 past the end.
__device__ __forceinline__ int warp_row(int rows) {
    const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    return row < rows ? row : -1;
}

template <typename B> __global__ void blk_gemv(const gqcu_mat m, const float *x, float *y) {
    const int lane = threadIdx.x & 31, row = warp_row(m.rows);
    if (row < 0) return;
    const int nb = m.cols / 32;
    const uint8_t *r = m.raw + (size_t)row * nb * B::bytes;
    float acc = 0;
    for (int b = lane; b < nb; b += 32) acc += B::dot(r + (size_t)b * B::bytes, x + (size_t)b * 32);
    acc = warp_sum(acc);
    if (!lane) y[row] = acc;
}

__global__ void f16_gemv(const gqcu_mat m, const float *x, float *y) {
    const int lane = threadIdx.x & 31, row = warp_row(m.rows);
    if (row < 0) return;
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

__global__ void f32_gemv(const gqcu_mat m, const float *x, float *y) {
    const int lane = threadIdx.x & 31, row = warp_row(m.rows);
    if (row < 0) return;
    const float *r = (const float *)m.raw + (size_t)row * m.cols;
    float acc = 0;
    for (int c = lane; c < m.cols; c += 32) acc += r[c] * x[c];
    acc = warp_sum(acc);
    if (!lane) y[row] = acc;
}

__global__ void permute_x(const float *x, const int32_t *perm, int n, float *xp) {
    int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p < n) xp[p] = x[perm ? perm[p] : p];
}

// Codebook entry c of vector v's group in stage s for a row of tile rt.
__device__ __forceinline__ const float *vq_centroid(const gqcu_mat &m, int s, int rt, int v, uint32_t c, int d) {
    return m.cb + (((size_t)s * m.n_rt + rt) * m.n_ct + m.vec_ct[v]) * m.k * d + (size_t)c * d;
}

template <int D> __global__ void vq_gemv(const gqcu_mat m, const float *xp, float *y) {
    const int lane = threadIdx.x & 31, row = warp_row(m.rows);
    if (row < 0) return;
    const int d = D > 0 ? D : m.d, rt = m.row_rt[row];
    float acc = 0;
    for (int s = 0; s < m.stages; s++) {
        const int64_t base = ((int64_t)s * m.rows + row) * m.nv;
        for (int v = lane; v < m.nv; v += 32) {
            const float *cv = vq_centroid(m, s, rt, v, gq_bits_get(m.idx, base + v, m.lk), d);
            const float *xv = xp + m.n_out + (size_t)v * d;
            for (int j = 0; j < d; j++) acc += cv[j] * xv[j];
        }
    }
    for (int p = lane; p < m.n_out; p += 32) acc += m.outl[(size_t)row * m.n_out + p] * xp[p];
    acc = warp_sum(acc);
    if (!lane) y[row] = acc;
}

// Variant 1 ("several rows per warp, codebooks in shared memory"): a block
// takes a chunk of up to 16 rows of one row tile, loads that tile's
// codebooks (every column tile and stage) into shared memory, and each of its
// 8 warps handles every 8th row of the chunk.
#define GEMV_WARPS 8
#define GEMV_CHUNK 16

template <int D> __global__ void vq_gemv_smem(const gqcu_mat m, const float *xp, float *y) {
    extern __shared__ float scb[];
    const int4 ch = m.chunks[blockIdx.x];
    const int d = D > 0 ? D : m.d, per_rt = m.n_ct * m.k * d;
    for (int s = 0; s < m.stages; s++)
        for (int i = threadIdx.x; i < per_rt; i += blockDim.x)
            scb[s * per_rt + i] = m.cb[((size_t)s * m.n_rt + ch.z) * per_rt + i];
    __syncthreads();
    const int lane = threadIdx.x & 31;
    for (int j = threadIdx.x >> 5; j < ch.y; j += GEMV_WARPS) {
        const int row = ch.x + j;
        float acc = 0;
        for (int s = 0; s < m.stages; s++) {
            const int64_t base = ((int64_t)s * m.rows + row) * m.nv;
            const float *cbs = scb + s * per_rt;
            for (int v = lane; v < m.nv; v += 32) {
                const float *cv = cbs + ((size_t)m.vec_ct[v] * m.k + gq_bits_get(m.idx, base + v, m.lk)) * d;
                const float *xv = xp + m.n_out + (size_t)v * d;
                for (int q = 0; q < d; q++) acc += cv[q] * xv[q];
            }
        }
        for (int p = lane; p < m.n_out; p += 32) acc += m.outl[(size_t)row * m.n_out + p] * xp[p];
        acc = warp_sum(acc);
        if (!lane) y[row] = acc;
    }
}

// Decode to f32: rows r0..r0+nr-1 of W into out (nr, cols), original column order.
template <typename B> __global__ void blk_decode(const gqcu_mat m, int r0, int nr, float *out) {
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= (int64_t)nr * m.cols) return;
    const int r = (int)(t / m.cols), c = (int)(t % m.cols);
    out[t] = B::get(m.raw + ((size_t)(r0 + r) * (m.cols / 32) + c / 32) * B::bytes, c % 32);
}
__global__ void f16_decode(const gqcu_mat m, int r0, int nr, float *out) {
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t < (int64_t)nr * m.cols) out[t] = __half2float(((const __half *)m.raw)[(size_t)r0 * m.cols + t]);
}
// One thread per (row, vector or outlier column): c0 (+ c1), as the CPU decode.
__global__ void vq_decode(const gqcu_mat m, int r0, int nr, float *out) {
    const int per_row = m.n_out + m.nv;
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= (int64_t)nr * per_row) return;
    const int r = (int)(t / per_row), e = (int)(t % per_row), row = r0 + r, d = m.d;
    float *o = out + (size_t)r * m.cols;
    if (e < m.n_out) {
        o[m.perm ? m.perm[e] : e] = m.outl[(size_t)row * m.n_out + e];
        return;
    }
    const int v = e - m.n_out, rt = m.row_rt[row];
    float q[VQ_MAX_DIM];
    for (int s = 0; s < m.stages; s++) {
        const float *cv = vq_centroid(m, s, rt, v, gq_bits_get(m.idx, ((int64_t)s * m.rows + row) * m.nv + v, m.lk), d);
        for (int j = 0; j < d; j++) q[j] = s ? q[j] + cv[j] : cv[j];
    }
    for (int j = 0; j < d; j++) {
        const int p = m.n_out + v * d + j;
        o[m.perm ? m.perm[p] : p] = q[j];
    }
}


// y = W x, x and y on the device.
static cudaError_t gemv(const gqcu_mat *m, const float *x, float *y) {
    const int WARPS = 8, tb = 32 * WARPS;
    const unsigned grid = blocks_for(m->rows, WARPS);
    switch (m->kind) {
    case MAT_F32: f32_gemv<<<grid, tb>>>(*m, x, y); break;
    case MAT_F16: f16_gemv<<<grid, tb>>>(*m, x, y); break;
    case MAT_Q4_0: blk_gemv<BlkQ4_0><<<grid, tb>>>(*m, x, y); break;
    case MAT_Q4_1: blk_gemv<BlkQ4_1><<<grid, tb>>>(*m, x, y); break;
    case MAT_Q8_0: blk_gemv<BlkQ8_0><<<grid, tb>>>(*m, x, y); break;
    default: {
        const float *xp = x;
        if (m->perm) {
            permute_x<<<blocks_for(m->cols, 256), 256>>>(x, m->perm, m->cols, m->xp);
            xp = m->xp;
        }
        if (m->variant == 1) {
            const unsigned g1 = (unsigned)m->n_chunks, t1 = 32 * GEMV_WARPS;
            switch (m->d) {
            case 1: vq_gemv_smem<1><<<g1, t1, m->smem>>>(*m, xp, y); break;
            case 2: vq_gemv_smem<2><<<g1, t1, m->smem>>>(*m, xp, y); break;
            case 4: vq_gemv_smem<4><<<g1, t1, m->smem>>>(*m, xp, y); break;
            default: vq_gemv_smem<0><<<g1, t1, m->smem>>>(*m, xp, y); break;
            }
        } else
            switch (m->d) {
            case 1: vq_gemv<1><<<grid, tb>>>(*m, xp, y); break;
            case 2: vq_gemv<2><<<grid, tb>>>(*m, xp, y); break;
            case 4: vq_gemv<4><<<grid, tb>>>(*m, xp, y); break;
            default: vq_gemv<0><<<grid, tb>>>(*m, xp, y); break;
            }
    }
    }
    return cudaGetLastError();
}

// Rows r0..r0+nr-1 of W as f32 (nr, cols) in out (not for F32 matrices).
static cudaError_t decode(const gqcu_mat *m, int r0, int nr, float *out) {
    const int tb = 256;
    const int64_t n = (int64_t)nr * (m->kind == MAT_VQ ? m->n_out + m->nv : m->cols);
    switch (m->kind) {
    case MAT_F16: f16_decode<<<blocks_for(n, tb), tb>>>(*m, r0, nr, out); break;
    case MAT_Q4_0: blk_decode<BlkQ4_0><<<blocks_for(n, tb), tb>>>(*m, r0, nr, out); break;
    case MAT_Q4_1: blk_decode<BlkQ4_1><<<blocks_for(n, tb), tb>>>(*m, r0, nr, out); break;
    case MAT_Q8_0: blk_decode<BlkQ8_0><<<blocks_for(n, tb), tb>>>(*m, r0, nr, out); break;
    default: vq_decode<<<blocks_for(n, tb), tb>>>(*m, r0, nr, out); break;
    }
    return cudaGetLastError();
}

// Y (n, rows) = X (n, cols) · Wᵀ on the device: the GEMV for one token, else
// W in row tiles of at most tile_floats values decoded to f32 (F32 matrices
// are used as they are, without a tile) and a GEMM per tile, on tensor cores
// in TF32 or in FP32: column-major, the tile is Wᵀ (cols, nr) and X is Xᵀ
// (cols, n), so Y's rows r0.. are op(tile)ᵀ·Xᵀ.
static int matmul(const gqcu_mat *m, const float *X, float *Y, int n, float *tile, size_t tile_floats, bool tf32,
                  char *err, size_t cap) {
    int rc = 0;
    const float one = 1, zero = 0;
    if (n == 1) {
        CHECK(gemv(m, X, Y));
        return 0;
    }
    {
        const size_t per = tile_floats / (size_t)m->cols;
        const int R = m->kind == MAT_F32 ? m->rows : (int)(per < (size_t)m->rows ? (per ? per : 1) : m->rows);
        for (int r0 = 0; r0 < m->rows; r0 += R) {
            const int nr = m->rows - r0 < R ? m->rows - r0 : R;
            const float *A = tile;
            if (m->kind == MAT_F32) A = (const float *)m->raw + (size_t)r0 * m->cols;
            else CHECK(decode(m, r0, nr, tile));
            CHECK(cublasGemmEx(g_blas, CUBLAS_OP_T, CUBLAS_OP_N, nr, n, m->cols, &one, A, CUDA_R_32F, m->cols, X,
                               CUDA_R_32F, m->cols, &zero, Y + r0, CUDA_R_32F, m->rows,
                               tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        }
    }
out:
    return rc;
}

extern "C" void gqcu_mat_free(struct gqcu_mat *m) {
    if (!m) return;
    cudaFree(m->idx), cudaFree(m->cb), cudaFree(m->outl), cudaFree(m->vec_ct), cudaFree(m->row_rt), cudaFree(m->perm);
    cudaFree(m->raw), cudaFree(m->x), cudaFree(m->xp), cudaFree(m->y), cudaFree(m->chunks);
    free(m);
}

// Variant 1 needs one row tile's codebooks in shared memory (up to the
// device's opt-in limit per block).
// The limit is the kernels', not a matrix's: it only ever grows, so a
// matrix that needed more keeps working after a smaller one is made.
static size_t g_smem_granted = 48 * 1024;
static cudaError_t smem_allow(size_t bytes, bool *fits) {
    int optin = 0;
    cudaError_t e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0);
    *fits = e == cudaSuccess && bytes <= (size_t)optin;
    if (!*fits || bytes <= g_smem_granted) return e;
    const int b = (int)bytes;
    if ((e = cudaFuncSetAttribute(vq_gemv_smem<1>, cudaFuncAttributeMaxDynamicSharedMemorySize, b)) != cudaSuccess ||
        (e = cudaFuncSetAttribute(vq_gemv_smem<2>, cudaFuncAttributeMaxDynamicSharedMemorySize, b)) != cudaSuccess ||
        (e = cudaFuncSetAttribute(vq_gemv_smem<4>, cudaFuncAttributeMaxDynamicSharedMemorySize, b)) != cudaSuccess ||
        (e = cudaFuncSetAttribute(vq_gemv_smem<0>, cudaFuncAttributeMaxDynamicSharedMemorySize, b)) != cudaSuccess)
        return e;
    g_smem_granted = bytes; // all four granted
    return cudaSuccess;
}

// 0: the kernel with codebooks read through L1 (a warp per row), 1: shared
// memory (several rows per warp); -1 when the matrix cannot take variant 1.
extern "C" int gqcu_mat_set_variant(struct gqcu_mat *m, int variant, char *err, size_t cap) {
    int rc = 0;
    bool fits = false;
    if (variant == 0 || m->kind != MAT_VQ) {
        m->variant = 0;
        return variant == 0 ? 0 : fail(err, cap, "gqcu_mat_set_variant", "not a VQ matrix");
    }
    CHECK(smem_allow(m->smem, &fits));
    if (!fits || !m->chunks) return fail(err, cap, "gqcu_mat_set_variant", "codebooks too large for shared memory");
    m->variant = variant;
out:
    return rc;
}

extern "C" int gqcu_mat_vq(const struct gqcu_vq_desc *D, struct gqcu_mat **out, char *err, size_t cap) {
    int rc = 0;
    gqcu_mat *m = (gqcu_mat *)calloc(1, sizeof *m);
    *out = NULL;
    if (!m) return fail(err, cap, "gqcu_mat_vq", "out of memory");
    if (D->d < 1 || D->d > VQ_MAX_DIM) {
        free(m);
        return fail(err, cap, "gqcu_mat_vq", "vector dimension out of range");
    }
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
    {
        // chunks of up to GEMV_CHUNK consecutive rows of one row tile
        std::vector<int4> ch;
        for (int r = 0; r < D->rows; r++)
            if (!ch.size() || ch.back().z != D->row_rt[r] || ch.back().y == GEMV_CHUNK) ch.push_back(make_int4(r, 1, D->row_rt[r], 0));
            else ch.back().y++;
        m->n_chunks = (int)ch.size();
        m->smem = sizeof(float) * (size_t)D->stages * D->n_ct * D->k * D->d;
        CHECK(upload(&m->chunks, ch.data(), ch.size()));
        const char *v = getenv("GPTVQ_CUDA_GEMV"); // "smem": variant 1 where it fits
        bool fits = false;
        if (v && !strcmp(v, "smem") && smem_allow(m->smem, &fits) == cudaSuccess && fits) m->variant = 1;
    }
    *out = m;
    return 0;
out:
    gqcu_mat_free(m);
    return rc;
}

extern "C" int gqcu_mat_ggml(int type, int rows, int cols, const void *data, struct gqcu_mat **out, char *err,
                             size_t cap) {
    int rc = 0, blk = 0;
    switch (type) {
    case MAT_Q4_0: blk = BlkQ4_0::bytes; break;
    case MAT_Q4_1: blk = BlkQ4_1::bytes; break;
    case MAT_Q8_0: blk = BlkQ8_0::bytes; break;
    case MAT_F32: case MAT_F16: break;
    default: return fail(err, cap, "gqcu_mat_ggml", "GGML type without a CUDA kernel");
    }
    *out = NULL;
    if (blk && cols % 32) return fail(err, cap, "gqcu_mat_ggml", "block type with rows that are not whole blocks");
    gqcu_mat *m = (gqcu_mat *)calloc(1, sizeof *m);
    if (!m) return fail(err, cap, "gqcu_mat_ggml", "out of memory");
    m->kind = type, m->rows = rows, m->cols = cols;
    m->bytes = (size_t)rows * (blk ? (size_t)(cols / 32) * blk : (size_t)cols * (type == MAT_F32 ? 4 : 2));
    if (data) CHECK(upload(&m->raw, (const uint8_t *)data, m->bytes));
    else CHECK(cudaMalloc(&m->raw, m->bytes)); // filled later (the calibration's block weights)
    CHECK(cudaMalloc(&m->x, sizeof(float) * cols));
    CHECK(cudaMalloc(&m->y, sizeof(float) * rows));
    *out = m;
    return 0;
out:
    gqcu_mat_free(m);
    return rc;
}

extern "C" int gqcu_mat_gemv(struct gqcu_mat *m, const float *x, float *y, char *err, size_t cap) {
    int rc = 0;
    CHECK(cudaMemcpy(m->x, x, sizeof(float) * m->cols, cudaMemcpyHostToDevice));
    CHECK(gemv(m, m->x, m->y));
    CHECK(cudaMemcpy(y, m->y, sizeof(float) * m->rows, cudaMemcpyDeviceToHost));
out:
    return rc;
}

// Y (n, rows) = X (n, cols) · Wᵀ through the prefill path (decode to tiles of
// at most tile_floats values + TF32 GEMM), host X and Y: for the tests.
extern "C" int gqcu_mat_gemm(struct gqcu_mat *m, int n, const float *X, float *Y, size_t tile_floats, char *err,
                             size_t cap) {
    int rc = 0;
    float *dX = NULL, *dY = NULL, *tile = NULL;
    CHECK(upload(&dX, X, (size_t)n * m->cols));
    CHECK(cudaMalloc(&dY, sizeof(float) * n * m->rows));
    CHECK(cudaMalloc(&tile, sizeof(float) * (tile_floats > (size_t)m->cols ? tile_floats : (size_t)m->cols)));
    rc = matmul(m, dX, dY, n, tile, tile_floats, true, err, cap);
    if (rc) goto out;
    CHECK(cudaMemcpy(Y, dY, sizeof(float) * n * m->rows, cudaMemcpyDeviceToHost));
out:
    cudaFree(dX), cudaFree(dY), cudaFree(tile);
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
    for (int i = 0; i < 3; i++) CHECK(gemv(m, m->x, m->y));
    CHECK(cudaEventCreate(&a));
    CHECK(cudaEventCreate(&b));
    CHECK(cudaEventRecord(a));
    for (int i = 0; i < iters; i++) CHECK(gemv(m, m->x, m->y));
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

// ---------------------------------------------------------------------------
// Llama-family decoder blocks on the device: the arithmetic of
// src/model/forward.c (RMSNorm with a double sum of squares, RoPE angles in
// double, SwiGLU). One block function serves the forward (gqcu_lm_*: KV cache
// on the device, compressed weights, TF32 prefill GEMMs) and the calibration
// passes (gqcu_calib_*: f32 weights, FP32 GEMMs, hooks as block_forward's).
// Attention: one warp per (query, head), online softmax over the keys
// 0..pos, lanes over the head dimension.

#define ATT_MAX_HD 256 // head_dim <= 32 lanes × 8

enum { IN_ATTN = 0, IN_ATTN_OUT, IN_FFN, IN_FFN_DOWN }; // enum gq_block_input

struct blk_shape {
    int dim, n_heads, n_kv_heads, head_dim, hidden_dim, rope_dim, rope_interleaved;
    float rms_eps;
    float *inv_freq; // (rope_dim / 2), on the device
};
struct blk_w { // one block's weights on the device (biases NULL when absent)
    float *attn_norm, *ffn_norm, *bq, *bk, *bv;
    gqcu_mat *w[7]; // q, k, v, o, gate, up, down
};
struct blk_buf { // scratch for a number of tokens
    float *xb, *q, *k, *v, *att, *hb, *hb2;
};
// Calibration: after capturing input group `which` (buf, n_in wide; resid the
// residual stream) the pass returns when it is stop_after (-1: whole block).
struct blk_hooks {
    int start_at, stop_after; // start_at IN_ATTN or IN_FFN (x holds the post-attention residual)
    int (*capture)(void *user, int which, const float *buf, int n_in, const float *resid, char *err, size_t cap);
    void *user;
};

static int shape_check(const blk_shape *s, const char *what, char *err, size_t cap) {
    if (s->n_kv_heads <= 0 || s->head_dim > ATT_MAX_HD || s->n_heads % s->n_kv_heads || s->rope_dim > s->head_dim ||
        s->rope_dim % 2)
        return fail(err, cap, what, "head_dim above 256, heads not a multiple of the KV heads or a RoPE width "
                                    "that is odd or above head_dim");
    return 0;
}

static void blk_buf_free(blk_buf *b) {
    cudaFree(b->xb), cudaFree(b->q), cudaFree(b->k), cudaFree(b->v), cudaFree(b->att), cudaFree(b->hb), cudaFree(b->hb2);
    memset(b, 0, sizeof *b);
}
static cudaError_t blk_buf_alloc(blk_buf *b, const blk_shape *s, size_t n) {
    const size_t q_dim = (size_t)s->n_heads * s->head_dim, kv = (size_t)s->n_kv_heads * s->head_dim;
    const size_t wide = q_dim > (size_t)s->dim ? q_dim : s->dim;
    cudaError_t e;
    if ((e = cudaMalloc(&b->xb, sizeof(float) * n * wide)) != cudaSuccess ||
        (e = cudaMalloc(&b->q, sizeof(float) * n * q_dim)) != cudaSuccess ||
        (e = cudaMalloc(&b->k, sizeof(float) * n * kv)) != cudaSuccess ||
        (e = cudaMalloc(&b->v, sizeof(float) * n * kv)) != cudaSuccess ||
        (e = cudaMalloc(&b->att, sizeof(float) * n * q_dim)) != cudaSuccess ||
        (e = cudaMalloc(&b->hb, sizeof(float) * n * s->hidden_dim)) != cudaSuccess)
        return e;
    return cudaMalloc(&b->hb2, sizeof(float) * n * s->hidden_dim);
}
static void blk_w_free(blk_w *w) {
    cudaFree(w->attn_norm), cudaFree(w->ffn_norm), cudaFree(w->bq), cudaFree(w->bk), cudaFree(w->bv);
    for (int j = 0; j < 7; j++) gqcu_mat_free(w->w[j]);
    memset(w, 0, sizeof *w);
}

__global__ void rmsnorm_k(const float *x, const float *w, float *out, int dim, float eps) {
    __shared__ double red[256];
    const float *xi = x + (size_t)blockIdx.x * dim;
    float *oi = out + (size_t)blockIdx.x * dim;
    double ss = 0;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) ss += (double)xi[j] * xi[j];
    red[threadIdx.x] = ss;
    __syncthreads();
    for (int h = blockDim.x / 2; h > 0; h >>= 1) {
        if ((int)threadIdx.x < h) red[threadIdx.x] += red[threadIdx.x + h];
        __syncthreads();
    }
    const float scale = (float)(1.0 / sqrt(red[0] / dim + eps));
    for (int j = threadIdx.x; j < dim; j += blockDim.x) oi[j] = xi[j] * scale * w[j];
}

// Heads of x (n, n_heads·hd) at positions pos0..: one thread per (token, head, pair).
__global__ void rope_k(float *x, int n, int n_heads, int hd, int half, int interleaved, const float *inv_freq,
                       int pos0) {
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= (int64_t)n * n_heads * half) return;
    const int j = (int)(t % half), h = (int)(t / half % n_heads), i = (int)(t / ((int64_t)half * n_heads));
    const double a = (double)(pos0 + i) * inv_freq[j];
    const float c = (float)cos(a), s = (float)sin(a);
    float *xh = x + ((size_t)i * n_heads + h) * hd;
    const int a0 = interleaved ? 2 * j : j, a1 = interleaved ? 2 * j + 1 : j + half;
    const float x0 = xh[a0], x1 = xh[a1];
    xh[a0] = x0 * c - x1 * s;
    xh[a1] = x0 * s + x1 * c;
}

// Causal attention of queries q (n, n_heads·hd) at positions pos0.. over the
// layer's cache kc, vc (positions, kv_dim); out (n, n_heads·hd). A block of
// ATT_SPLIT warps per (query, head): warp w takes keys w, w + ATT_SPLIT, ...
// with its own online softmax (so one decoded token still spreads over
// n_heads · ATT_SPLIT warps), then warp 0 combines the partial maxima, sums
// and outputs in a fixed order.
#define ATT_SPLIT 8
__global__ void attention_k(const float *q, const float *kc, const float *vc, float *out, int n, int pos0,
                            int n_heads, int group, int hd, int kv_dim, float scale) {
    __shared__ float s_mx[ATT_SPLIT], s_l[ATT_SPLIT], s_acc[ATT_SPLIT][ATT_MAX_HD];
    const int lane = threadIdx.x & 31, wi = threadIdx.x >> 5;
    const int i = (int)(blockIdx.x / n_heads), h = (int)(blockIdx.x % n_heads), g = h / group, q_dim = n_heads * hd;
    const float *qi = q + (size_t)i * q_dim + (size_t)h * hd;
    float qr[ATT_MAX_HD / 32], acc[ATT_MAX_HD / 32];
#pragma unroll
    for (int e = 0; e < ATT_MAX_HD / 32; e++) {
        const int j = lane + 32 * e;
        qr[e] = j < hd ? qi[j] : 0.0f;
        acc[e] = 0;
    }
    float mx = -INFINITY, l = 0;
    for (int t = wi; t <= pos0 + i; t += ATT_SPLIT) {
        const float *kt = kc + (size_t)t * kv_dim + (size_t)g * hd, *vt = vc + (size_t)t * kv_dim + (size_t)g * hd;
        float dot = 0;
#pragma unroll
        for (int e = 0; e < ATT_MAX_HD / 32; e++)
            if (lane + 32 * e < hd) dot += qr[e] * kt[lane + 32 * e];
        for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
        const float s = dot * scale, nm = fmaxf(mx, s), corr = expf(mx - nm), p = expf(s - nm);
        l = l * corr + p;
#pragma unroll
        for (int e = 0; e < ATT_MAX_HD / 32; e++)
            if (lane + 32 * e < hd) acc[e] = acc[e] * corr + p * vt[lane + 32 * e];
        mx = nm;
    }
    if (lane == 0) s_mx[wi] = mx, s_l[wi] = l;
#pragma unroll
    for (int e = 0; e < ATT_MAX_HD / 32; e++)
        if (lane + 32 * e < hd) s_acc[wi][lane + 32 * e] = acc[e];
    __syncthreads();
    if (wi) return;
    float M = -INFINITY, L = 0, f[ATT_SPLIT];
    for (int w = 0; w < ATT_SPLIT; w++) M = fmaxf(M, s_mx[w]); // warp 0 always has key 0: M is finite
    for (int w = 0; w < ATT_SPLIT; w++) // a warp without keys adds nothing; a NaN still reaches the output
        f[w] = s_l[w] != 0 ? expf(s_mx[w] - M) : 0.0f, L += s_l[w] * f[w];
    float *oi = out + (size_t)i * q_dim + (size_t)h * hd;
    for (int j = lane; j < hd; j += 32) {
        float o = 0;
        for (int w = 0; w < ATT_SPLIT; w++) o += s_acc[w][j] * f[w];
        oi[j] = o / L;
    }
}

__global__ void add_k(float *x, const float *y, int64_t n) {
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t < n) x[t] += y[t];
}
__global__ void bias_k(float *x, const float *b, int64_t n, int dim) {
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t < n) x[t] += b[t % dim];
}
__global__ void swiglu_k(float *g, const float *u, int64_t n) { // silu(gate) · up
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t < n) {
        const float a = g[t];
        g[t] = a / (1.0f + expf(-a)) * u[t];
    }
}

static cudaError_t launch_add(float *x, const float *y, int64_t n) {
    add_k<<<blocks_for(n, 256), 256>>>(x, y, n);
    return cudaGetLastError();
}

// One block on x (n, dim), in place, for tokens at positions pos0..: the
// layer's cache kc, vc (positions, kv_dim) receives their K/V and the
// attention reads it; kc NULL: the n tokens are their own cache (pos0 0).
// tf32: the prefill GEMMs on tensor cores (the forward), else FP32.
static int block_run(const blk_shape *s, const blk_w *W, float *x, int n, int pos0, float *kc, float *vc,
                     const blk_buf *b, float *tile, size_t tile_floats, bool tf32, const blk_hooks *hk, char *err,
                     size_t cap) {
    int rc = 0;
    const int dim = s->dim, hd = s->head_dim, q_dim = s->n_heads * hd, kv = s->n_kv_heads * hd, ffn = s->hidden_dim;
    const int half = s->rope_dim / 2;
#define MATMUL(j, X, Y)                                                                                                \
    if ((rc = matmul(W->w[j], X, Y, n, tile, tile_floats, tf32, err, cap))) goto out;
#define HOOK(which, buf, width)                                                                                        \
    if (hk && (rc = hk->capture(hk->user, which, buf, width, x, err, cap))) goto out;                                  \
    if (hk && hk->stop_after == (which)) goto out;
    if (!hk || hk->start_at != IN_FFN) {
        rmsnorm_k<<<n, 256>>>(x, W->attn_norm, b->xb, dim, s->rms_eps);
        CHECK(cudaGetLastError());
        HOOK(IN_ATTN, b->xb, dim);
        MATMUL(0, b->xb, b->q);
        MATMUL(1, b->xb, b->k);
        MATMUL(2, b->xb, b->v);
        if (W->bq) bias_k<<<blocks_for((int64_t)n * q_dim, 256), 256>>>(b->q, W->bq, (int64_t)n * q_dim, q_dim);
        if (W->bk) bias_k<<<blocks_for((int64_t)n * kv, 256), 256>>>(b->k, W->bk, (int64_t)n * kv, kv);
        if (W->bv) bias_k<<<blocks_for((int64_t)n * kv, 256), 256>>>(b->v, W->bv, (int64_t)n * kv, kv);
        if (half > 0) {
            rope_k<<<blocks_for((int64_t)n * s->n_heads * half, 256), 256>>>(b->q, n, s->n_heads, hd, half,
                                                                              s->rope_interleaved, s->inv_freq, pos0);
            rope_k<<<blocks_for((int64_t)n * s->n_kv_heads * half, 256), 256>>>(b->k, n, s->n_kv_heads, hd, half,
                                                                                 s->rope_interleaved, s->inv_freq, pos0);
        }
        CHECK(cudaGetLastError());
        if (kc) {
            CHECK(cudaMemcpy(kc + (size_t)pos0 * kv, b->k, sizeof(float) * n * kv, cudaMemcpyDeviceToDevice));
            CHECK(cudaMemcpy(vc + (size_t)pos0 * kv, b->v, sizeof(float) * n * kv, cudaMemcpyDeviceToDevice));
        } else
            kc = b->k, vc = b->v;
        attention_k<<<(unsigned)((int64_t)n * s->n_heads), 32 * ATT_SPLIT>>>(b->q, kc, vc, b->att, n, pos0, s->n_heads,
                                                                              s->n_heads / s->n_kv_heads, hd, kv,
                                                                              1.0f / sqrtf((float)hd));
        CHECK(cudaGetLastError());
        HOOK(IN_ATTN_OUT, b->att, q_dim);
        MATMUL(3, b->att, b->xb);
        CHECK(launch_add(x, b->xb, (int64_t)n * dim));
    }
    rmsnorm_k<<<n, 256>>>(x, W->ffn_norm, b->xb, dim, s->rms_eps);
    CHECK(cudaGetLastError());
    HOOK(IN_FFN, b->xb, dim);
    MATMUL(4, b->xb, b->hb);
    MATMUL(5, b->xb, b->hb2);
    swiglu_k<<<blocks_for((int64_t)n * ffn, 256), 256>>>(b->hb, b->hb2, (int64_t)n * ffn);
    CHECK(cudaGetLastError());
    HOOK(IN_FFN_DOWN, b->hb, ffn);
    MATMUL(6, b->hb, b->xb);
    CHECK(launch_add(x, b->xb, (int64_t)n * dim));
#undef HOOK
#undef MATMUL
out:
    return rc;
}

// ---------------------------------------------------------------------------
// The forward (gqcu_lm_*).

struct gqcu_lm {
    blk_shape sh;
    int n_vocab, n_layers, n_ctx;
    blk_w *L;
    gqcu_mat *output;
    float *output_norm;
    float *kc, *vc; // (n_layers, n_ctx, kv_dim)
    float *tile;
    size_t tile_floats;
    int n_cap;      // scratch sized for n_cap tokens
    int logits_cap; // logits sized for logits_cap rows (only the last token's unless all are asked for)
    blk_buf b;
    float *x, *logits;
    bool tf32; // prefill GEMMs on TF32 tensor cores (GPTVQ_CUDA_TF32=0: FP32)
};

static void free_scratch(gqcu_lm *lm) {
    blk_buf_free(&lm->b);
    cudaFree(lm->x), cudaFree(lm->logits);
    lm->x = lm->logits = NULL;
    lm->n_cap = lm->logits_cap = 0;
}

extern "C" void gqcu_lm_free(struct gqcu_lm *lm) {
    if (!lm) return;
    free_scratch(lm);
    for (int l = 0; lm->L && l < lm->n_layers; l++) blk_w_free(&lm->L[l]);
    free(lm->L);
    gqcu_mat_free(lm->output);
    cudaFree(lm->output_norm), cudaFree(lm->sh.inv_freq), cudaFree(lm->kc), cudaFree(lm->vc), cudaFree(lm->tile);
    free(lm);
}

static int grow_scratch(gqcu_lm *lm, int n, char *err, size_t cap) {
    int rc = 0;
    free_scratch(lm);
    CHECK(blk_buf_alloc(&lm->b, &lm->sh, (size_t)n));
    CHECK(cudaMalloc(&lm->x, sizeof(float) * n * lm->sh.dim));
    lm->n_cap = n;
out:
    if (rc) free_scratch(lm);
    return rc;
}

extern "C" int gqcu_lm_new(const struct gqcu_lm_desc *D, struct gqcu_lm **out, char *err, size_t cap) {
    int rc = 0;
    const size_t kv_dim = (size_t)D->n_kv_heads * D->head_dim, cache = (size_t)D->n_layers * D->n_ctx * kv_dim;
    size_t tile = 0, widest = 0;
    gqcu_lm *lm = (gqcu_lm *)calloc(1, sizeof *lm);
    *out = NULL;
    if (!lm || !(lm->L = (blk_w *)calloc((size_t)D->n_layers, sizeof *lm->L))) {
        for (int l = 0; l < D->n_layers; l++) {
            const gqcu_lm_layer *S = &D->layers[l];
            gqcu_mat_free(S->wq), gqcu_mat_free(S->wk), gqcu_mat_free(S->wv), gqcu_mat_free(S->wo);
            gqcu_mat_free(S->w_gate), gqcu_mat_free(S->w_up), gqcu_mat_free(S->w_down);
        }
        gqcu_mat_free(D->output);
        rc = fail(err, cap, "gqcu_lm_new", "out of memory");
        goto out;
    }
    lm->sh = {D->dim, D->n_heads, D->n_kv_heads, D->head_dim, D->hidden_dim, D->rope_dim, D->rope_interleaved,
              D->rms_eps, NULL};
    lm->n_vocab = D->n_vocab, lm->n_layers = D->n_layers, lm->n_ctx = D->n_ctx;
    lm->tf32 = !(getenv("GPTVQ_CUDA_TF32") && !strcmp(getenv("GPTVQ_CUDA_TF32"), "0"));
    // the lm owns the matrices from here on, also when this call fails
    for (int l = 0; l < D->n_layers; l++) {
        const gqcu_lm_layer *S = &D->layers[l];
        gqcu_mat *const w[7] = {S->wq, S->wk, S->wv, S->wo, S->w_gate, S->w_up, S->w_down};
        memcpy(lm->L[l].w, w, sizeof w);
    }
    lm->output = D->output;
    if ((rc = shape_check(&lm->sh, "gqcu_lm_new", err, cap))) goto out;
    for (int l = 0; l < D->n_layers; l++) {
        const gqcu_lm_layer *S = &D->layers[l];
        blk_w *L = &lm->L[l];
        const size_t q_dim = (size_t)D->n_heads * D->head_dim;
        CHECK(upload(&L->attn_norm, S->attn_norm, (size_t)D->dim));
        CHECK(upload(&L->ffn_norm, S->ffn_norm, (size_t)D->dim));
        if (S->bq) CHECK(upload(&L->bq, S->bq, q_dim));
        if (S->bk) CHECK(upload(&L->bk, S->bk, kv_dim));
        if (S->bv) CHECK(upload(&L->bv, S->bv, kv_dim));
        for (int j = 0; j < 7; j++) {
            const gqcu_mat *m = L->w[j];
            if (m->kind != MAT_F32 && (size_t)m->rows * m->cols > tile) tile = (size_t)m->rows * m->cols;
            if ((size_t)m->cols > widest) widest = m->cols;
        }
    }
    if (lm->output->kind != MAT_F32 && (size_t)lm->output->rows * lm->output->cols > tile)
        tile = (size_t)lm->output->rows * lm->output->cols;
    if ((size_t)lm->output->cols > widest) widest = lm->output->cols;
    CHECK(upload(&lm->output_norm, D->output_norm, (size_t)D->dim));
    CHECK(upload(&lm->sh.inv_freq, D->inv_freq, (size_t)(D->rope_dim / 2)));
    CHECK(cudaMalloc(&lm->kc, sizeof(float) * (cache ? cache : 1)));
    CHECK(cudaMalloc(&lm->vc, sizeof(float) * (cache ? cache : 1)));
    // prefill tiles: whole matrices up to 32 Mi values (128 MiB), at least one row
    lm->tile_floats = tile < ((size_t)1 << 25) ? tile : (size_t)1 << 25;
    if (lm->tile_floats < widest) lm->tile_floats = widest;
    CHECK(cudaMalloc(&lm->tile, sizeof(float) * lm->tile_floats));
    *out = lm;
    return 0;
out:
    gqcu_lm_free(lm);
    return rc;
}

extern "C" int gqcu_lm_forward(struct gqcu_lm *lm, const float *x, int n, int pos0, float *logits, int all_logits,
                               char *err, size_t cap) {
    int rc = 0;
    const int dim = lm->sh.dim, kv_dim = lm->sh.n_kv_heads * lm->sh.head_dim;
    if (n <= 0 || pos0 < 0 || pos0 + n > lm->n_ctx) return fail(err, cap, "gqcu_lm_forward", "tokens outside the context");
    if (n > lm->n_cap && (rc = grow_scratch(lm, n, err, cap))) return rc;
    CHECK(cudaMemcpy(lm->x, x, sizeof(float) * n * dim, cudaMemcpyHostToDevice));
    for (int l = 0; l < lm->n_layers; l++) {
        float *kc = lm->kc + (size_t)l * lm->n_ctx * kv_dim, *vc = lm->vc + (size_t)l * lm->n_ctx * kv_dim;
        if ((rc = block_run(&lm->sh, &lm->L[l], lm->x, n, pos0, kc, vc, &lm->b, lm->tile, lm->tile_floats, lm->tf32, NULL,
                            err, cap)))
            goto out;
    }
    if (logits) {
        const int rows = all_logits ? n : 1;
        if (rows > lm->logits_cap) {
            cudaFree(lm->logits);
            lm->logits = NULL, lm->logits_cap = 0;
            CHECK(cudaMalloc(&lm->logits, sizeof(float) * rows * lm->n_vocab));
            lm->logits_cap = rows;
        }
        rmsnorm_k<<<rows, 256>>>(lm->x + (size_t)(n - rows) * dim, lm->output_norm, lm->b.xb, dim, lm->sh.rms_eps);
        CHECK(cudaGetLastError());
        if ((rc = matmul(lm->output, lm->b.xb, lm->logits, rows, lm->tile, lm->tile_floats, lm->tf32, err, cap)))
            goto out;
        CHECK(cudaMemcpy(logits, lm->logits, sizeof(float) * rows * lm->n_vocab, cudaMemcpyDeviceToHost));
    } else
        CHECK(cudaDeviceSynchronize());
out:
    return rc;
}

// ---------------------------------------------------------------------------
// Calibration passes on the device (engine.c with --device cuda). The
// windows' activations X stay on the device, the current block's f32 weights
// are uploaded before each pass, and a linear group's Σ xᵀx accumulates there
// in double (DSYRK per window). A pass is block_run with block_forward's
// hooks and FP32 GEMMs (no TF32, as the CPU's sgemm); the capture weights
// tokens as engine.c's on_capture does (residual weighting, the first
// token's weight).

struct gqcu_calib {
    blk_shape sh;
    int ns, seqlen;
    float *X, *tmp; // X (ns, seqlen, dim), tmp one window
    blk_w W;        // the current block: F32 matrices
    blk_buf b;      // one window's scratch
    float *y;       // (seqlen, dim): the residual weighting's o / down output
    double *xd, *H; // capture: (seqlen, n_in), (n_in, n_in)
    int *bad;       // non-finite flag
    int want, resid_w; // the pass's capture: input group (-1: none), residual weighting through o (1) / down (2)
    float sink;
};

extern "C" void gqcu_calib_free(struct gqcu_calib *c) {
    if (!c) return;
    cudaFree(c->sh.inv_freq), cudaFree(c->X), cudaFree(c->tmp);
    blk_w_free(&c->W);
    blk_buf_free(&c->b);
    cudaFree(c->y), cudaFree(c->xd), cudaFree(c->H), cudaFree(c->bad);
    free(c);
}

extern "C" int gqcu_calib_new(const struct gqcu_calib_desc *D, const float *X, struct gqcu_calib **out, char *err,
                              size_t cap) {
    int rc = 0;
    gqcu_calib *c = (gqcu_calib *)calloc(1, sizeof *c);
    *out = NULL;
    if (!c) return fail(err, cap, "gqcu_calib_new", "out of memory");
    c->sh = {D->dim, D->n_heads, D->n_kv_heads, D->head_dim, D->hidden_dim, D->rope_dim, D->rope_interleaved,
             D->rms_eps, NULL};
    c->ns = D->nsamples, c->seqlen = D->seqlen;
    {
        const size_t S = (size_t)c->seqlen, q_dim = (size_t)D->n_heads * D->head_dim,
                     kv = (size_t)D->n_kv_heads * D->head_dim, dim = (size_t)D->dim, ffn = (size_t)D->hidden_dim;
        const size_t wide = q_dim > dim ? q_dim : dim, n_in = ffn > wide ? ffn : wide;
        // (rows, cols) of q, k, v, o, gate, up, down
        const size_t shape[7][2] = {{q_dim, dim}, {kv, dim}, {kv, dim}, {dim, q_dim}, {ffn, dim}, {ffn, dim}, {dim, ffn}};
        if ((rc = shape_check(&c->sh, "gqcu_calib_new", err, cap))) goto out;
        CHECK(upload(&c->sh.inv_freq, D->inv_freq, (size_t)(D->rope_dim / 2)));
        CHECK(upload(&c->X, X, (size_t)c->ns * S * dim));
        CHECK(cudaMalloc(&c->tmp, sizeof(float) * S * dim));
        CHECK(cudaMalloc(&c->W.attn_norm, sizeof(float) * dim));
        CHECK(cudaMalloc(&c->W.ffn_norm, sizeof(float) * dim));
        for (int j = 0; j < 7; j++)
            if ((rc = gqcu_mat_ggml(MAT_F32, (int)shape[j][0], (int)shape[j][1], NULL, &c->W.w[j], err, cap))) goto out;
        CHECK(blk_buf_alloc(&c->b, &c->sh, S));
        CHECK(cudaMalloc(&c->y, sizeof(float) * S * dim));
        CHECK(cudaMalloc(&c->xd, sizeof(double) * S * n_in));
        CHECK(cudaMalloc(&c->H, sizeof(double) * n_in * n_in));
        CHECK(cudaMalloc(&c->bad, sizeof(int)));
    }
    *out = c;
    return 0;
out:
    gqcu_calib_free(c);
    return rc;
}

// Biases: allocated on first use (a model has all three or none).
static cudaError_t set_bias(float **d, const float *h, size_t n) {
    if (!h) {
        cudaFree(*d);
        *d = NULL;
        return cudaSuccess;
    }
    cudaError_t e = *d ? cudaSuccess : cudaMalloc((void **)d, sizeof(float) * n);
    return e == cudaSuccess ? cudaMemcpy(*d, h, sizeof(float) * n, cudaMemcpyHostToDevice) : e;
}

extern "C" int gqcu_calib_block(struct gqcu_calib *c, const struct gqcu_calib_block *B, char *err, size_t cap) {
    int rc = 0;
    const size_t q_dim = (size_t)c->sh.n_heads * c->sh.head_dim, kv = (size_t)c->sh.n_kv_heads * c->sh.head_dim;
    const float *w[7] = {B->wq, B->wk, B->wv, B->wo, B->w_gate, B->w_up, B->w_down};
    CHECK(cudaMemcpy(c->W.attn_norm, B->attn_norm, sizeof(float) * c->sh.dim, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(c->W.ffn_norm, B->ffn_norm, sizeof(float) * c->sh.dim, cudaMemcpyHostToDevice));
    CHECK(set_bias(&c->W.bq, B->bq, q_dim));
    CHECK(set_bias(&c->W.bk, B->bk, kv));
    CHECK(set_bias(&c->W.bv, B->bv, kv));
    for (int j = 0; j < 7; j++) CHECK(cudaMemcpy(c->W.w[j]->raw, w[j], c->W.w[j]->bytes, cudaMemcpyHostToDevice));
out:
    return rc;
}

__global__ void flag_nonfinite(const float *x, int64_t n, int *bad) {
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t < n && !isfinite(x[t])) atomicOr(bad, 1);
}

// xd (n, n_in) = x as double, each token t scaled as on_capture does: by
// sqrt(dim / ‖resid_t + y_t‖²) (float, when y is given), then token 0 by
// sqrt(sink) (float, when sink != 1). One block per token.
__global__ void capture_rows(const float *x, int n_in, const float *resid, const float *y, int dim, float sink,
                             double *xd) {
    __shared__ double red[256];
    const int t = blockIdx.x;
    float w = 1.0f;
    if (y) {
        double ss = 0;
        for (int j = threadIdx.x; j < dim; j += blockDim.x) {
            const double h = (double)resid[(size_t)t * dim + j] + y[(size_t)t * dim + j];
            ss += h * h;
        }
        red[threadIdx.x] = ss;
        __syncthreads();
        for (int h = blockDim.x / 2; h > 0; h >>= 1) {
            if ((int)threadIdx.x < h) red[threadIdx.x] += red[threadIdx.x + h];
            __syncthreads();
        }
        w = red[0] > 0 ? (float)sqrt(dim / red[0]) : 1.0f;
    }
    for (int j = threadIdx.x; j < n_in; j += blockDim.x) {
        float v = x[(size_t)t * n_in + j];
        if (y) v = v * w;
        if (t == 0 && sink != 1.0f) v *= sqrtf(sink);
        xd[(size_t)t * n_in + j] = v;
    }
}

// The pass's capture (a blk_hooks callback): at the wanted input group, the
// non-finite check, token weights and H += xdᵀ xd.
static int calib_capture(void *u, int which, const float *buf, int n_in, const float *resid, char *err, size_t cap) {
    gqcu_calib *c = (gqcu_calib *)u;
    int rc = 0;
    const int S = c->seqlen;
    const double one = 1;
    const float *y = NULL;
    if (which != c->want) return 0;
    flag_nonfinite<<<blocks_for((int64_t)S * n_in, 256), 256>>>(buf, (int64_t)S * n_in, c->bad);
    CHECK(cudaGetLastError());
    if (c->resid_w) { // through o or down: (dim, n_in), FP32 as the CPU's sgemm
        if ((rc = matmul(c->W.w[c->resid_w == 1 ? 3 : 6], buf, c->y, S, NULL, 0, false, err, cap))) goto out;
        y = c->y;
    }
    capture_rows<<<S, 256>>>(buf, n_in, resid, y, c->sh.dim, c->sink, c->xd);
    CHECK(cudaGetLastError());
    // column-major: xdᵀ is (n_in, S); Hᵀ += xdᵀ xd, lower (= row-major upper, as the CPU's H)
    CHECK(cublasDsyrk(g_blas, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, n_in, S, &one, c->xd, n_in, &one, c->H, n_in));
out:
    return rc;
}

extern "C" int gqcu_calib_pass(struct gqcu_calib *c, int start_at, int stop_after, int in_place, int want,
                               int resid_w, float sink, double *H, int *bad_window, char *err, size_t cap) {
    int rc = 0, bad = 0;
    const size_t per = (size_t)c->seqlen * c->sh.dim;
    const int n_in = want == IN_ATTN_OUT ? c->sh.n_heads * c->sh.head_dim : want == IN_FFN_DOWN ? c->sh.hidden_dim : c->sh.dim;
    const blk_hooks hk = {start_at, stop_after, calib_capture, c};
    c->want = want, c->resid_w = resid_w, c->sink = sink;
    *bad_window = -1;
    // the device keeps no activations between passes: a pass starts at the block or the FFN input
    if (start_at != IN_ATTN && start_at != IN_FFN)
        return fail(err, cap, "gqcu_calib_pass", "a pass starts at the block or the FFN input");
    if (want >= 0) CHECK(cudaMemset(c->H, 0, sizeof(double) * n_in * n_in));
    CHECK(cudaMemset(c->bad, 0, sizeof(int)));
    for (int i = 0; i < c->ns; i++) {
        float *x = c->X + i * per;
        if (!in_place) {
            CHECK(cudaMemcpy(c->tmp, x, sizeof(float) * per, cudaMemcpyDeviceToDevice));
            x = c->tmp;
        }
        if ((rc = block_run(&c->sh, &c->W, x, c->seqlen, 0, NULL, NULL, &c->b, NULL, 0, false, &hk, err, cap))) goto out;
        if (stop_after < 0) { // the block's output: checked per window, as finish_block
            flag_nonfinite<<<blocks_for((int64_t)per, 256), 256>>>(x, (int64_t)per, c->bad);
            CHECK(cudaGetLastError());
            CHECK(cudaMemcpy(&bad, c->bad, sizeof(int), cudaMemcpyDeviceToHost));
            if (bad) {
                *bad_window = i;
                fail(err, cap, "gqcu_calib_pass", "non-finite block output");
                return -2;
            }
        }
    }
    CHECK(cudaMemcpy(&bad, c->bad, sizeof(int), cudaMemcpyDeviceToHost));
    if (bad) {
        fail(err, cap, "gqcu_calib_pass", "non-finite calibration activation");
        return -2;
    }
    if (want >= 0 && H) CHECK(cudaMemcpy(H, c->H, sizeof(double) * n_in * n_in, cudaMemcpyDeviceToHost));
out:
    return rc;
}
