// cu_linalg.cu - the CUDA plug-in's start and the dense linear algebra of the quantizers
// (cuBLAS / cuSOLVER): held buffers, GEMM, SYMM, SYRK, the inverse Cholesky
// factor, the SPD solve.
#include "cu_common.cuh"

cublasHandle_t g_blas;
cusolverDnHandle_t g_solver;

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
cudaError_t cu_view(void **d, void **own, const void *p, size_t bytes, bool in, bool out) {
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
// An output's result back to the host (nothing when it is held).
cudaError_t cu_unview(void *own, void *p, size_t bytes) {
    return own && bytes ? cudaMemcpy(p, own, bytes, cudaMemcpyDeviceToHost) : cudaSuccess;
}

extern "C" int gqcu_init(int device, char *err, size_t cap, char *name, size_t name_cap) {
    int rc = 0, n = 0;
    cudaDeviceProp prop;
    CHECK(cudaGetDeviceCount(&n));
    if (n < 1) return fail(err, cap, "cudaGetDeviceCount", "no CUDA device");
    device = (device < 0 ? 0 : device) % n;
    CHECK(cudaSetDevice(device));
    CHECK(cudaGetDeviceProperties(&prop, device));
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
    CHECK(cu_view((void **)&dC, &oC, C, sC, true, true));
    // Cᵀ (n, m) = op(B)ᵀ op(A)ᵀ in column-major
    CHECK(cublasDgemm(g_blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, dB, ldb, dA,
                   lda, &beta, dC, ldc));
    CHECK(cu_unview(oC, C, sC));
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
    CHECK(cu_view((void **)&dC, &oC, C, sA, false, true));
    // Cᵀ (n, m) = S Aᵀ; the row-major upper triangle of S is the column-major lower one
    CHECK(cublasDsymm(g_blas, CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_LOWER, n, m, &one, dS, n, dA, n, &zero, dC, n));
    CHECK(cu_unview(oC, C, sA));
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
    CHECK(cu_view((void **)&dH, &oH, H, sH, true, true));
    // column-major: Xᵀ is (n, k); Hᵀ += Xᵀ X, lower (= row-major upper)
    CHECK(cublasDsyrk(g_blas, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, n, k, &one, dX, n, &one, dH, n));
    CHECK(cu_unview(oH, H, sH));
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
