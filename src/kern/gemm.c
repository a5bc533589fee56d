// gemm.c - prefill products y (n, rows) = x (n, cols) · Wᵀ for n > 1 tokens
// (contract: qmatmul.h, gq_qmatmul).
#include "kern/kern.h"

#include <cblas.h>
#include <omp.h>

// Chunks of rows decoded to f32 (in parallel), then one sgemm each.
enum gq_status gq_gemm(float *y, const float *x, const struct gq_qweight *w, int n) {
    const int CH = 256, nt = omp_get_max_threads();
    const int nch = (w->rows + CH - 1) / CH, per = nch < nt ? nch : nt;
    float *buf = malloc(sizeof(float) * (size_t)CH * w->cols * per);
    if (!buf) return gq_fail(GQ_ERR_NOMEM, "qmatmul: decode buffer of %d x %d", CH, w->cols);
    for (int c0 = 0; c0 < nch; c0 += per) {
        const int c1 = c0 + per < nch ? c0 + per : nch;
#pragma omp parallel for schedule(static, 1)
        for (int c = c0; c < c1; c++) {
            const int r0 = c * CH, r1 = r0 + CH < w->rows ? r0 + CH : w->rows;
            gq_qweight_decode_rows(w, r0, r1, buf + (size_t)(c - c0) * CH * w->cols);
        }
        const int r0 = c0 * CH, r1 = c1 * CH < w->rows ? c1 * CH : w->rows;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, r1 - r0, w->cols, 1.0f, x, w->cols, buf, w->cols, 0.0f,
                    y + r0, w->rows);
    }
    free(buf);
    return GQ_OK;
}
