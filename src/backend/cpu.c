// cpu.c - the reference backend: OpenBLAS, LAPACKE and the VQ kernels of
// vq.c; device selection (gq_set_device).
#include "backend.h"

#include "../quant/vq.h"
#include "../util/common.h"

#include <cblas.h>
#include <lapacke.h>

static enum gq_status cpu_dgemm(bool ta, bool tb, int m, int n, int k, double alpha, const double *A, int lda,
                                const double *B, int ldb, double beta, double *C, int ldc) {
    cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, alpha, A, lda,
                B, ldb, beta, C, ldc);
    return GQ_OK;
}

static enum gq_status cpu_dsymm_right(int m, int n, const double *S, const double *A, double *C) {
    cblas_dsymm(CblasRowMajor, CblasRight, CblasUpper, m, n, 1.0, S, n, A, n, 0.0, C, n);
    return GQ_OK;
}

static enum gq_status cpu_dsyrk_acc(int n, int k, const double *X, double *H) {
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, n, k, 1.0, X, n, 1.0, H, n);
    return GQ_OK;
}

// Since the matrices are symmetric LAPACK runs in column-major on row-major
// memory: the column-major lower triangle is the row-major upper one, so the
// last potrf leaves exactly GPTQ's torch.linalg.cholesky(Hinv, upper=True).
static enum gq_status cpu_chol_inverse_upper(double *A, int n, int *info) {
    // potrf 'L' in column-major reads the row-major upper triangle
    *info = LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'L', n, A, n);
    if (!*info) *info = LAPACKE_dpotri(LAPACK_COL_MAJOR, 'L', n, A, n);
    if (*info) return GQ_OK;
    // potri left A⁻¹ in the row-major upper triangle; mirror it.
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) A[(size_t)j * n + i] = A[(size_t)i * n + j];
    *info = LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'L', n, A, n);
    for (int i = 0; !*info && i < n; i++) {
        double d = A[(size_t)i * n + i];
        if (!(d > 0) || !isfinite(d)) *info = i + 1;
        for (int j = 0; j < i; j++) A[(size_t)i * n + j] = 0;
    }
    return GQ_OK;
}

static enum gq_status cpu_vq_assign(const struct gq_vq_data *D, const double *C, int k, int32_t *idx, double *dist,
                                    double *objective) {
    // NaN (non-finite data, or out of memory) goes back as the objective: the
    // EM loop reports it, as before the backend table existed.
    *objective = gq_vq_assign(D, C, k, idx, dist);
    return GQ_OK;
}

static enum gq_status cpu_vq_mstep(const struct gq_vq_data *D, const int32_t *idx, int k, double *C, int *empty) {
    *empty = gq_vq_mstep(D, idx, k, C);
    return GQ_OK;
}

static enum gq_status cpu_vq_em(struct gq_vq_em_job *jobs, int n_jobs, int k, int iters) {
    return gq_vq_em_batch(jobs, n_jobs, k, iters);
}

static enum gq_status cpu_dposv(int n, double *A, double *b, int *info) {
    *info = LAPACKE_dposv(LAPACK_ROW_MAJOR, 'U', n, 1, A, n, b, 1);
    if (*info < 0) return gq_fail(GQ_ERR_ARG, "dposv: argument %d is invalid", -*info);
    return GQ_OK;
}
static enum gq_status cpu_vq_gram(const struct gq_vq_gram *g, double *G) { return gq_vq_gram(g, G); }
static enum gq_status cpu_hold(const void *p, size_t bytes, bool writable) { return GQ_OK; }
static enum gq_status cpu_release(const void *p) { return GQ_OK; }

static const struct gq_backend cpu = {
    .name = "cpu",
    .dgemm = cpu_dgemm,
    .dsymm_right = cpu_dsymm_right,
    .dsyrk_acc = cpu_dsyrk_acc,
    .chol_inverse_upper = cpu_chol_inverse_upper,
    .vq_assign = cpu_vq_assign,
    .vq_mstep = cpu_vq_mstep,
    .vq_em = cpu_vq_em,
    .dposv = cpu_dposv,
    .vq_gram = cpu_vq_gram,
    .hold = cpu_hold,
    .release = cpu_release,
};

const struct gq_backend *gq_backend_cpu(void) { return &cpu; }

static const struct gq_backend *current = &cpu;
const struct gq_backend *gq_be(void) { return current; }

enum gq_status gq_set_device(const char *name) {
    if (!strcmp(name, "cpu")) {
        current = &cpu;
        return GQ_OK;
    }
    if (!strcmp(name, "cuda")) {
        const char *why = NULL;
        const struct gq_backend *b = gq_backend_cuda(&why);
        if (!b) return gq_fail(GQ_ERR_UNSUPPORTED, "--device cuda: %s", why ? why : "unavailable");
        current = b;
        return GQ_OK;
    }
    return gq_fail(GQ_ERR_ARG, "--device: expected cpu or cuda, got '%s'", name);
}

const char *gq_device_name(void) {
    const char *cu = current == &cpu ? NULL : gq_cuda_device_name();
    return cu ? cu : current->name;
}
