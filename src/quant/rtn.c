// rtn.c - the uniform grid quantizer (GPTQ's Quantizer) and round to nearest.
#include "quant/quant.h"
#include "util/common.h"

#include <float.h>
#ifdef _OPENMP
#include <omp.h>
#endif

void gq_quant_params_default(struct gq_quant_params *p) {
    memset(p, 0, sizeof *p);
    p->wbits = 4;
    p->group_size = 0;
    p->damp = 0.01f;
    p->block_size = 128;
}

enum gq_status gq_quant_params_check(const struct gq_quant_params *p, int rows, int cols) {
    if (!p) return gq_fail(GQ_ERR_ARG, "quant: no parameters");
    if (rows <= 0 || cols <= 0)
        return gq_fail(GQ_ERR_ARG, "quant: matrix shape (%d, %d), expected both > 0", rows, cols);
    size_t n;
    if (!gq_mul_ok((size_t)rows, (size_t)cols, &n) || n > (size_t)1 << 40)
        return gq_fail(GQ_ERR_NOMEM, "quant: matrix shape (%d, %d) too large", rows, cols);
    if (p->wbits < 1 || p->wbits > 8)
        return gq_fail(GQ_ERR_ARG, "quant: wbits %d, expected 1..8", p->wbits);
    if (!(p->damp >= 0) || !isfinite(p->damp))
        return gq_fail(GQ_ERR_ARG, "quant: damp %g, expected a finite value >= 0", (double)p->damp);
    return GQ_OK;
}

int gq_quant_group_cols(const struct gq_quant_params *p, int cols) {
    return p->group_size <= 0 || p->group_size > cols ? cols : p->group_size;
}

int gq_quant_n_groups(const struct gq_quant_params *p, int cols) {
    int gs = gq_quant_group_cols(p, cols);
    return (cols + gs - 1) / gs;
}

// Scale rounded to float, kept positive and finite: a range below the float
// denormals or above FLT_MAX·maxq only occurs for absurd inputs.
static float scale_to_float(double s) {
    if (!(s > FLT_MIN)) return FLT_MIN;
    if (s > FLT_MAX) return FLT_MAX;
    return (float)s;
}

static void range_params(double xmin, double xmax, int maxq, bool sym, float *scale, float *zero) {
    *scale = scale_to_float((xmax - xmin) / maxq);
    *zero = sym ? (float)(maxq + 1) / 2 : (float)nearbyint(-xmin / *scale);
}

static double group_err(const double *x, int n, float scale, float zero, int maxq) {
    double e = 0;
    int c;
    for (int i = 0; i < n; i++) e += pow(fabs(x[i] - gq_quant_value(x[i], scale, zero, maxq, &c)), GQ_MSE_NORM);
    return e;
}

void gq_quant_find_params(const double *x, int n, const struct gq_quant_params *p, float *scale,
                          float *zero) {
    int maxq = (1 << p->wbits) - 1;
    double xmin = 0, xmax = 0;
    for (int i = 0; i < n; i++) {
        if (x[i] < xmin) xmin = x[i];
        if (x[i] > xmax) xmax = x[i];
    }
    if (p->sym) {
        xmax = fmax(-xmin, xmax);
        xmin = -xmax;
    }
    if (xmin == 0 && xmax == 0) xmin = -1, xmax = 1;
    range_params(xmin, xmax, maxq, p->sym, scale, zero);
    if (!p->mse_clip) return;
    double best = INFINITY;
    for (int i = 0; i < (int)(GQ_MSE_MAXSHRINK * GQ_MSE_GRID); i++) {
        double sh = 1.0 - (double)i / GQ_MSE_GRID;
        float s1, z1;
        range_params(sh * xmin, sh * xmax, maxq, p->sym, &s1, &z1);
        double e = group_err(x, n, s1, z1, maxq);
        if (e < best) best = e, *scale = s1, *zero = z1;
    }
}

enum gq_status gq_rtn_quantize(const float *W, int rows, int cols, const struct gq_quant_params *p,
                               float *Q_out, float *scales, float *zeros) {
    GQ_TRY(gq_quant_params_check(p, rows, cols));
    int gs = gq_quant_group_cols(p, cols), ng = gq_quant_n_groups(p, cols);
    int maxq = (1 << p->wbits) - 1;
    for (size_t i = 0; i < (size_t)rows * cols; i++)
        if (!isfinite(W[i]))
            return gq_fail(GQ_ERR_NUMERIC, "rtn: non-finite weight at row %zu col %zu",
                           i / (size_t)cols, i % (size_t)cols);
    int nt = 1;
#ifdef _OPENMP
    nt = omp_get_max_threads();
#endif
    double *buf = malloc(sizeof(double) * (size_t)gs * nt);
    if (!buf) return gq_fail(GQ_ERR_NOMEM, "rtn: %d x %d scratch", nt, gs);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
        double *x = buf + (size_t)t * gs;
        for (int g = 0; g < ng; g++) {
            int c0 = g * gs, n = cols - c0 < gs ? cols - c0 : gs;
            const float *w = W + (size_t)r * cols + c0;
            for (int j = 0; j < n; j++) x[j] = w[j];
            float s, z;
            gq_quant_find_params(x, n, p, &s, &z);
            if (scales) scales[(size_t)r * ng + g] = s;
            if (zeros) zeros[(size_t)r * ng + g] = z;
            int code;
            for (int j = 0; j < n; j++) Q_out[(size_t)r * cols + c0 + j] = gq_quant_value(x[j], s, z, maxq, &code);
        }
    }
    free(buf);
    return GQ_OK;
}
