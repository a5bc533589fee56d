// rtn.c - the uniform grid quantizer (GPTQ's Quantizer) and round to nearest.
#include "quant/quant.h"
#include "util/common.h"
#include "io/gguf.h"

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

// A positive scale as f16: between its smallest subnormal and its largest
// finite value.
static float scale_to_f16(float s) {
    float h = gq_f16_to_f32(gq_f32_to_f16(s));
    if (!(h > 0)) return 0x1p-24f;
    return h > 65504.0f ? 65504.0f : h;
}

static void range_params(double xmin, double xmax, int maxq, const struct gq_quant_params *p, float *scale,
                         float *zero) {
    *scale = scale_to_float((xmax - xmin) / maxq);
    if (p->f16_grid) *scale = scale_to_f16(*scale);
    *zero = p->sym ? (float)(maxq + 1) / 2 : (float)nearbyint(-xmin / *scale);
    if (gq_quant_minform(p)) *zero = gq_f16_to_f32(gq_f32_to_f16(-*scale * *zero));
}

static double group_err(const double *x, int n, float scale, float zero, int maxq, bool minform) {
    double e = 0;
    int c;
    for (int i = 0; i < n; i++)
        e += pow(fabs(x[i] - gq_quant_value(x[i], scale, zero, maxq, minform, &c)), GQ_MSE_NORM);
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
    range_params(xmin, xmax, maxq, p, scale, zero);
    if (!p->mse_clip) return;
    double best = INFINITY;
    for (int i = 0; i < (int)(GQ_MSE_MAXSHRINK * GQ_MSE_GRID); i++) {
        double sh = 1.0 - (double)i / GQ_MSE_GRID;
        float s1, z1;
        range_params(sh * xmin, sh * xmax, maxq, p, &s1, &z1);
        double e = group_err(x, n, s1, z1, maxq, gq_quant_minform(p));
        if (e < best) best = e, *scale = s1, *zero = z1;
    }
}

enum gq_status gq_rtn_quantize(const float *W, int rows, int cols, const struct gq_quant_params *p,
                               float *Q_out, float *scales, float *zeros) {
    GQ_TRY(gq_quant_params_check(p, rows, cols));
    int gs = gq_quant_group_cols(p, cols), ng = gq_quant_n_groups(p, cols);
    int maxq = (1 << p->wbits) - 1;
    const bool mf = gq_quant_minform(p);
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
            for (int j = 0; j < n; j++) Q_out[(size_t)r * cols + c0 + j] = gq_quant_value(x[j], s, z, maxq, mf, &code);
        }
    }
    free(buf);
    return GQ_OK;
}

// ---------------------------------------------------------------------------
// Grids that are GGUF blocks (f16_grid, groups of 32).

int gq_quant_gguf_type(const struct gq_quant_params *p) {
    if (p->group_size != 32) return -1;
    switch (p->wbits) {
    case 4: return p->sym ? GQ_TYPE_Q4_0 : GQ_TYPE_Q4_1;
    case 5: return p->sym ? GQ_TYPE_Q5_0 : GQ_TYPE_Q5_1;
    case 8: return p->sym ? GQ_TYPE_Q8_0 : -1; // Q8_1 is llama.cpp's activation type, not a weight type
    default: return -1;
    }
}

static void put_f16(uint8_t *p, float f) {
    uint16_t h = gq_f32_to_f16(f);
    memcpy(p, &h, 2);
}

enum gq_status gq_quant_gguf_encode(const struct gq_quant_params *p, const float *Q, int rows, int cols,
                                    const float *scales, const float *zeros, void *out) {
    const int type = gq_quant_gguf_type(p);
    if (type < 0 || !p->f16_grid || cols % 32)
        return gq_fail(GQ_ERR_ARG, "gguf encode: W%d g%d%s (%d columns) is no GGUF block grid", p->wbits,
                       p->group_size, p->sym ? " sym" : "", cols);
    const int nb = cols / 32, maxq = (1 << p->wbits) - 1;
    const bool mf = gq_quant_minform(p);
    const size_t bb = gq_ggml_row_size((enum gq_ggml_type)type, 32); // bytes per block
    int bad_row = -1, bad_col = 0;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        for (int b = 0; b < nb; b++) {
            const float s = scales[(size_t)r * nb + b], z = zeros[(size_t)r * nb + b];
            const float *x = Q + (size_t)r * cols + b * 32;
            uint8_t *o = (uint8_t *)out + ((size_t)r * nb + b) * bb, q[32];
            for (int j = 0; j < 32; j++) {
                int code;
                float v = gq_quant_value(x[j], s, z, maxq, mf, &code);
                if (memcmp(&v, &x[j], sizeof v) != 0) { // not on the grid: a bug upstream
#pragma omp critical
                    if (bad_row < 0) bad_row = r, bad_col = b * 32 + j;
                }
                q[j] = (uint8_t)code;
            }
            put_f16(o, s);
            uint8_t *qs = o + 2;
            if (mf) put_f16(o + 2, z), qs += 2;
            if (type == GQ_TYPE_Q8_0) {
                for (int j = 0; j < 32; j++) qs[j] = (uint8_t)(int8_t)(q[j] - 128);
                continue;
            }
            if (p->wbits == 5) { // qh: bit j = bit 4 of value j
                uint32_t qh = 0;
                for (int j = 0; j < 32; j++) qh |= (uint32_t)(q[j] >> 4 & 1) << j;
                for (int k = 0; k < 4; k++) qs[k] = (uint8_t)(qh >> 8 * k); // little-endian
                qs += 4;
            }
            for (int j = 0; j < 16; j++) qs[j] = (uint8_t)((q[j] & 15) | (q[j + 16] & 15) << 4);
        }
    }
    if (bad_row >= 0)
        return gq_fail(GQ_ERR_NUMERIC, "gguf encode: value at row %d col %d is not on its group's grid", bad_row,
                       bad_col);
    return GQ_OK;
}
