// qmatmul.c - compressed-weight matrix products (contract: qmatmul.h):
// repacking at load, the decode GEMV's split into pieces, and the prefill
// dispatch. The kernels themselves are in gemv_ggml.c, gemv_vq.c and gemm.c;
// ISA selection and per-thread scratch in isa.c, decoding rows in decode.c.
#include "kern/kern.h"

#include <omp.h>
#include <sys/mman.h>
#include <unistd.h>

// ---------------------------------------------------------------------------
// Weights.

enum gq_status gq_qweight_prepare(struct gq_qweight *w, void **owned) {
    *owned = NULL;
    if (w->kind != GQ_QW_GGML || w->rp || !gq_ggml_sb16_bytes(w->type) || w->cols % 32) return GQ_OK;
    if (gq_qmatmul_isa_best() < GQ_ISA_AVX2) return GQ_OK; // only the SIMD kernels read it
    enum gq_status st;
    uint8_t *rp = gq_ggml_repack16(w, &st);
    if (!rp) return st;
    w->rp = rp;
    *owned = rp;
    return GQ_OK;
}

void gq_qweight_release_source(const struct gq_qweight *w) {
    // the original rows of a repacked weight in a file mapping: their pages
    // leave the process (a later read, the scalar kernels' or an embedding
    // lookup's, maps them again from the file)
    if (w->kind != GQ_QW_GGML || !w->rp) return;
    const long pg = sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)w->data + (uintptr_t)pg - 1) & ~((uintptr_t)pg - 1);
    uintptr_t e = ((uintptr_t)w->data + (size_t)w->rows * w->row_size) & ~((uintptr_t)pg - 1);
    if (e > a) madvise((void *)a, e - a, MADV_DONTNEED);
}

// ---------------------------------------------------------------------------
// Decode GEMV.

void gq_qgemv_share(const struct gq_qweight *w, int ith, int nth, int *r0, int *r1) {
    // whole 16-row groups for the repacked types, row pairs for VQ
    const int unit = w->kind == GQ_QW_GGML ? (w->rp ? 16 : 4) : 2;
    const int nu = (w->rows + unit - 1) / unit;
    const int a = (int)((int64_t)nu * ith / nth), b = (int)((int64_t)nu * (ith + 1) / nth);
    *r0 = gq_min_i(a * unit, w->rows), *r1 = gq_min_i(b * unit, w->rows);
}

enum gq_status gq_qgemv_rows(float *y, const float *x, const struct gq_qweight *w, int r0, int r1, bool accumulate) {
    if (r0 >= r1) return GQ_OK;
    return w->kind == GQ_QW_VQ ? gq_gemv_vq(y, x, w, r0, r1, accumulate) : gq_gemv_ggml(y, x, w, r0, r1, accumulate);
}

// n tokens, each by the decode GEMV: every thread runs its share of the
// rows for one token after the other (the share stays in its cache).
static enum gq_status gemv(float *y, const float *x, const struct gq_qweight *w, int n) {
    enum gq_status err = GQ_OK;
    char msg[512] = "";
#pragma omp parallel
    {
        int r0, r1;
        gq_qgemv_share(w, omp_get_thread_num(), omp_get_num_threads(), &r0, &r1);
        for (int t = 0; t < n; t++) {
            const enum gq_status s = gq_qgemv_rows(y + (size_t)t * w->rows, x + (size_t)t * w->cols, w, r0, r1, false);
            if (s != GQ_OK) {
#pragma omp critical(gq_qmatmul_err)
                if (err == GQ_OK) err = s, snprintf(msg, sizeof msg, "%s", gq_last_error());
                break;
            }
        }
    }
    return err == GQ_OK ? GQ_OK : gq_fail(err, "%s", msg);
}

// ---------------------------------------------------------------------------
// Prefill.

void gq_rot_rows(const struct gq_rot *R, const float *x, float *out, int n) {
    memcpy(out, x, sizeof(float) * (size_t)n * R->n);
    gq_rot_rows_inplace(R, out, n, false);
}

// Up to a few tokens every format runs as that many decode GEMVs (each
// thread's share of the rows stays in its cache from one token to the
// next): a prefill pass decodes or converts every row of the matrix
// whatever n is, which below this costs more. Measured with `gptvq bench
// -p N` on SmolLM2 (2 threads, AVX-512): the GEMVs are faster up to about
// 16 tokens for F16, Q4_1 and VQ k 16 / k 64, up to 6-8 for VQ k 256, whose
// table lookups make its GEMV the slowest.
int gq_qmatmul_gemv_max_n(const struct gq_qweight *w) {
    return w->kind == GQ_QW_VQ && w->vq->p.h.k >= 256 ? 6 : GQ_GEMV_MAX_N;
}

enum gq_status gq_qmatmul_rotated(float *y, const float *xr, const struct gq_qweight *w, int n) {
    return n <= gq_qmatmul_gemv_max_n(w) ? gemv(y, xr, w, n) : gq_gemm(y, xr, w, n);
}

enum gq_status gq_qmatmul(float *y, const float *x, const struct gq_qweight *w, int n) {
    const struct gq_rot *R = gq_qweight_rot(w);
    if (!R) return gq_qmatmul_rotated(y, x, w, n);
    float *xr = malloc(sizeof(float) * (size_t)n * w->cols); // the kernels multiply W' by R x
    if (!xr) return gq_fail(GQ_ERR_NOMEM, "qmatmul: rotated input of %d tokens", n);
    gq_rot_rows(R, x, xr, n);
    enum gq_status s = gq_qmatmul_rotated(y, xr, w, n);
    free(xr);
    return s;
}
