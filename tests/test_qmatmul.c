// test_qmatmul.c - compressed-weight kernels (src/kern/qmatmul.c):
//  [1] packed VQ: decode_rows is bit-identical to the quantizer's fake-quant
//      matrix; GEMV (scalar reference and AVX2) and prefill agree with a
//      double-precision product of that matrix within the stated tolerance,
//      for every configuration of test_vqcases.h (ragged tiles included);
//  [2] Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, F16 and a type without its own kernel (Q6_K): the same
//      against gq_dequantize, for ragged row counts.
// Tolerance: |y − y_ref| <= 1e-5 · Σ_j |w_j x_j| + 1e-30 per output (float
// accumulation of at most a few thousand terms in a different order). The
// int8-activation GEMVs (VQ with gq_vqrt.q8; Q8_0, Q4_0, Q4_1) add the
// rounding of x: per block (VQ column tile, 32 columns for the ggml types) at
// most half its step s = max|x| / 127 per element, so
// + Σ_blocks (s / 2) · Σ_{j in block} |w_j| (x 1.0001); for VQ the AVX2 result
// must also be within 1e-5 · Σ|w x| of the scalar reference (the same exact
// int32 sums, scaled and added in another order).
#include "kern/kern.h"
#include "kern/vmath.h"
#include "test.h"
#include "test_rand.h"
#include "test_vqcases.h"
#include "util/common.h"

static int n_q8 = 0, n_fast[GQ_VQF_COUNT], n_rp = 0, n_q8n = 0, n_nibn = 0; // n_q8n, n_nibn: with normalisation
static int n_k64 = 0, n_k64n = 0; // the AVX2 K64 kernel (d 2, k 64), with normalisation
static double worst = 0, worst_q8 = 0; // err / Σ|w x| (float kernels); err / bound (int8 x)

// y (n, rows) against W (rows, cols) f32 and x (n, cols).
static void check_product(const char *what, const float *W, int rows, int cols, const float *x, int n, const float *y,
                          const double *extra) {
    int bad = 0;
    for (int t = 0; t < n; t++)
        for (int r = 0; r < rows; r++) {
            double ref = 0, mag = 0;
            for (int j = 0; j < cols; j++) {
                double p = (double)W[(size_t)r * cols + j] * x[(size_t)t * cols + j];
                ref += p, mag += fabs(p);
            }
            double err = fabs(y[(size_t)t * rows + r] - ref), tol = 1e-5 * mag + 1e-30;
            if (extra) tol += extra[(size_t)t * rows + r];
            if (extra) worst_q8 = fmax(worst_q8, err / tol);
            else if (mag > 0 && err / mag > worst) worst = err / mag;
            if (!(err <= tol) && bad++ < 3)
                fprintf(stderr, "  %s: token %d row %d: %.9g vs %.9g (|.| %.3g)\n", what, t, r, y[(size_t)t * rows + r],
                        ref, mag);
        }
    CHECKF(bad == 0, "%s: %d outputs outside the tolerance", what, bad);
}

// The x-rounding term of the tolerance for the int8-activation GEMVs (else
// NULL): x is rounded per block (VQ: column tile, in position order; Q8_0,
// Q4_0, Q4_1: 32 columns).
// levels: 127 (int8 GEMV), or 32767 (the int16 prefill: VQ int8 codebooks
// with one stage and no SVD, normalisation included).
static double *xq_bound(const struct gq_qweight *w, const float *W, const float *x, int n, double levels) {
    const struct gq_vqrt *v = w->vq;
    const bool vq = w->kind == GQ_QW_VQ;
    const bool intk = vq ? (levels < 1000 ? v->q8 != 0
                                          : v->p.h.cb_format == GQ_CB_INT8 && v->p.h.stages == 1 && !v->p.h.svd_rank)
                         : w->type == GQ_TYPE_Q8_0 || w->type == GQ_TYPE_Q4_0 || w->type == GQ_TYPE_Q4_1 ||
                               w->type == GQ_TYPE_Q5_0 || w->type == GQ_TYPE_Q5_1;
    if (!intk) return NULL;
    const int nblk = vq ? v->p.h.n_ct : w->cols / 32;
    double *b = calloc((size_t)n * w->rows, sizeof(double));
    for (int t = 0; t < n; t++)
        for (int k = 0; k < nblk; k++) {
            const int p0 = vq ? v->ct_start[k] : 32 * k, p1 = vq ? v->ct_start[k + 1] : 32 * k + 32;
            double mx = 0;
            for (int p = p0; p < p1; p++) mx = fmax(mx, fabs(x[(size_t)t * w->cols + (vq && v->perm ? v->perm[p] : p)]));
            for (int r = 0; r < w->rows; r++) {
                double aw = 0;
                for (int p = p0; p < p1; p++) aw += fabs(W[(size_t)r * w->cols + (vq && v->perm ? v->perm[p] : p)]);
                b[(size_t)t * w->rows + r] += 1.0001 * mx / levels / 2 * aw;
            }
        }
    return b;
}

static const char *isa_label[] = {"scalar", "avx2", "avx512"};

// y (n, rows) of the GEMV in three uneven pieces (gq_qgemv_rows), added to
// a preset y: must equal that preset + the whole GEMV's result.
static void check_pieces(const char *what, const struct gq_qweight *w, const float *x, int n, const float *yfull) {
    const int rows = w->rows, cols = w->cols;
    float *y = malloc(sizeof(float) * rows);
    int bad = 0;
    for (int t = 0; t < n; t++) {
        for (int r = 0; r < rows; r++) y[r] = (float)(r % 7) - 3;
        const int cut[4] = {0, rows / 3 + 1 < rows ? rows / 3 + 1 : rows, rows - rows / 4, rows};
        for (int i = 0; i < 3; i++)
            CHECK_OK(gq_qgemv_rows(y, x + (size_t)t * cols, w, cut[i], cut[i] > cut[i + 1] ? cut[i] : cut[i + 1], true));
        for (int r = 0; r < rows; r++) {
            const double want = (double)(r % 7) - 3 + yfull[(size_t)t * rows + r];
            bad += !(fabs(y[r] - want) <= 1e-5 * (fabs(want) + 1) + 1e-4 * fabs(yfull[(size_t)t * rows + r]));
        }
    }
    CHECKF(bad == 0, "%s: row pieces with accumulate differ from the whole GEMV in %d outputs", what, bad);
    free(y);
}

// A rotated matrix's kernels multiply W' = W Rᵀ by R x: the x-rounding bound
// in that basis (Wr, R x), plus 1e-5 Σ|w' x'| for the float arithmetic there.
static double *rot_bound(const struct gq_qweight *w, const float *W, const float *x, int n, double levels) {
    const struct gq_rot *R = gq_qweight_rot(w);
    const int rows = w->rows, cols = w->cols;
    float *Wr = malloc(sizeof(float) * (size_t)rows * cols), *xr = malloc(sizeof(float) * (size_t)n * cols);
    memcpy(Wr, W, sizeof(float) * (size_t)rows * cols), memcpy(xr, x, sizeof(float) * (size_t)n * cols);
    for (int r = 0; r < rows; r++) gq_rot_apply(R, Wr + (size_t)r * cols);
    for (int t = 0; t < n; t++) gq_rot_apply(R, xr + (size_t)t * cols);
    double *b = xq_bound(w, Wr, xr, n, levels);
    if (!b) b = calloc((size_t)n * rows, sizeof(double));
    for (int t = 0; t < n; t++)
        for (int r = 0; r < rows; r++) {
            double mag = 0;
            for (int j = 0; j < cols; j++) mag += fabs((double)Wr[(size_t)r * cols + j] * xr[(size_t)t * cols + j]);
            b[(size_t)t * rows + r] += 1e-5 * mag;
        }
    free(Wr), free(xr);
    return b;
}

static void run_all(const char *what, const struct gq_qweight *w, const float *W) {
    const int rows = w->rows, cols = w->cols, n = 3;
    const struct gq_rot *R = gq_qweight_rot(w);
    float *x = rand_matrix(n, cols, 1.0), *y = malloc(sizeof(float) * n * rows), *y0 = malloc(sizeof(float) * n * rows);
    float *xr = malloc(sizeof(float) * n * cols); // the pieces' x: R x for a rotated matrix
    memcpy(xr, x, sizeof(float) * n * cols);
    for (int t = 0; R && t < n; t++) gq_rot_apply(R, xr + (size_t)t * cols);
    double *extra = R ? rot_bound(w, W, x, n, 127) : xq_bound(w, W, x, n, 127);
    char name[128];
    for (int isa = 0; isa < GQ_ISA_COUNT; isa++) {
        if (gq_qmatmul_set_isa((enum gq_isa)isa) != (enum gq_isa)isa) {
            fprintf(stderr, "  (this CPU has no %s: %s %s kernel not run)\n", isa_label[isa], what, isa_label[isa]);
            continue;
        }
        for (int t = 0; t < n; t++) CHECK_OK(gq_qmatmul(y + (size_t)t * rows, x + (size_t)t * cols, w, 1));
        snprintf(name, sizeof name, "%s gemv %s%s", what, isa_label[isa], extra ? " (int8 x)" : "");
        check_product(name, W, rows, cols, x, n, y, extra);
        check_pieces(name, w, xr, n, y);
        // the int8 kernels round x the same way in every ISA: the SIMD sums
        // equal the scalar reference's up to float rounding
        if (extra && isa == 0) memcpy(y0, y, sizeof(float) * n * rows);
        // d 4 (d 2) k 256 on AVX-512 without normalisation: the same exact int32
        // sums, scaled and added in the scalar reference's order, from the same
        // rounded x: bit-identical
        if (extra && isa == GQ_ISA_AVX512 && w->kind == GQ_QW_VQ &&
            (w->vq->fast == GQ_VQF_D4K256 || w->vq->fast == GQ_VQF_D2K256) && !w->vq->bv)
            CHECKF(memcmp(y, y0, sizeof(float) * n * rows) == 0, "%s: not bit-identical to the scalar reference", name);
        if (extra && isa > 0) {
            double diff = 0;
            for (int t = 0; t < n; t++)
                for (int r = 0; r < rows; r++) {
                    double mag = 0;
                    for (int j = 0; j < cols; j++) mag += fabs((double)W[(size_t)r * cols + j] * x[(size_t)t * cols + j]);
                    diff = fmax(diff, fabs(y[(size_t)t * rows + r] - y0[(size_t)t * rows + r]) / (mag + 1e-30));
                }
            CHECKF(diff <= 1e-5, "%s: differs from the scalar reference by %.3g of sum|w x|", name, diff);
        }
    }
    // a few tokens at once are that many decode GEMVs (compressed formats):
    // the same floats as one call per token
    if (gq_qmatmul_gemv_max_n(w) >= n) {
        gq_qmatmul_set_isa(gq_qmatmul_isa_best());
        for (int t = 0; t < n; t++) CHECK_OK(gq_qmatmul(y0 + (size_t)t * rows, x + (size_t)t * cols, w, 1));
        CHECK_OK(gq_qmatmul(y, x, w, n));
        CHECKF(memcmp(y, y0, sizeof(float) * n * rows) == 0, "%s: %d tokens at once differ from %d decode GEMVs", what, n, n);
    }
    // prefill of 19 tokens (past the GEMV range; AVX-512 a block of 16 and
    // a rest, AVX2 two blocks of 8 and a rest): int16 x on the SIMD ISAs
    // where the weight is integer codes, else f32
    const int n2 = 19;
    CHECK(n2 > gq_qmatmul_gemv_max_n(w));
    float *x2 = rand_matrix(n2, cols, 1.0), *y2 = malloc(sizeof(float) * n2 * rows);
    double *extra16 = R ? rot_bound(w, W, x2, n2, 32767) : xq_bound(w, W, x2, n2, 32767);
    for (int isa = 0; isa < GQ_ISA_COUNT; isa++) {
        if (gq_qmatmul_set_isa((enum gq_isa)isa) != (enum gq_isa)isa) continue;
        CHECK_OK(gq_qmatmul(y2, x2, w, n2));
        snprintf(name, sizeof name, "%s prefill %s%s", what, isa_label[isa], isa && extra16 ? " (int16 x)" : "");
        check_product(name, W, rows, cols, x2, n2, y2, isa || R ? extra16 : NULL);
    }
    gq_qmatmul_set_isa(gq_qmatmul_isa_best());
    free(x), free(xr), free(y), free(y0), free(extra), free(extra16), free(x2), free(y2);
}

static void test_vq(void) {
    for (int ci = 0; ci < N_CASES; ci++) {
        const struct cfg *c = &vq_cases[ci];
        size_t nw = (size_t)c->rows * c->cols;
        float *D = malloc(sizeof(float) * nw);
        struct vq_built b;
        vq_build(c, &b);
        const float *Q = b.Q;
        const struct gq_qweight w = b.w;
        n_q8 += b.v.q8 != 0;
        n_k64 += b.v.q8 == GQ_VQ_Q8_K64, n_k64n += b.v.q8 == GQ_VQ_Q8_K64 && b.v.bv;
        n_fast[b.v.fast]++;
        n_q8n += b.v.q8 && b.v.bv, n_nibn += (b.v.fast == GQ_VQF_NIB || b.v.fast == GQ_VQF_D2K64H || b.v.fast == GQ_VQF_D2K256 || b.v.fast == GQ_VQF_D4K256) && b.v.bv;
        if (c->norm)
            fprintf(stderr, "  case %d (d %d k %d, %d x %d, normalisation %d): int8 kernel %d, AVX-512 kernel %d, column tiles %d\n", ci,
                    c->d, c->k, c->rows, c->cols, c->norm, b.v.q8, b.v.fast, b.v.p.h.n_ct);
        // decode in two uneven pieces (a row-tile boundary inside)
        int cut = c->rows / 3 + 1;
        gq_qweight_decode_rows(&w, 0, cut, D);
        gq_qweight_decode_rows(&w, cut, c->rows, D + (size_t)cut * c->cols);
        CHECKF(memcmp(D, Q, sizeof(float) * nw) == 0, "case %d: decode_rows differs from the fake-quant matrix", ci);
        char what[64];
        snprintf(what, sizeof what, "vq case %d (d %d k %d)", ci, c->d, c->k);
        run_all(what, &w, Q);
        vq_built_free(&b);
        free(D);
    }
}

// Rotated matrices (--rotate): the same pack with a rotation flag decodes to
// W' R (gq_vq_decode and decode_rows bit for bit); every kernel, as a GEMV
// (gq_qmatmul rotating x itself, the pieces given R x) and as prefill,
// against the double product with W' R. Cases: AVX-512 NIB with
// normalisation, D2K64H, D4K256, fp16 codebooks with outliers, residual,
// a width of two rotation blocks (172 = 168 + 4).
static void test_vq_rot(void) {
    const int cases[] = {27, 31, 30, 1, 4, 13};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const struct cfg *c = &vq_cases[cases[i]];
        const size_t nw = (size_t)c->rows * c->cols;
        struct vq_built b;
        b.Q = malloc(sizeof(float) * nw);
        quantize(c, &b.t, b.Q);
        b.t.rot = true, b.t.rot_seed = 1000 + i;
        CHECK_OK(gq_vqpack_pack(&b.t, &b.p, &b.buf));
        CHECK(b.p.h.version == 2 && b.p.h.rot == 1);
        CHECK_OK(gq_vqrt_init(&b.v, &b.p, "rotated case"));
        b.w = (struct gq_qweight){.kind = GQ_QW_VQ, .rows = c->rows, .cols = c->cols, .vq = &b.v};
        CHECK(b.v.rot && b.v.rot->n == c->cols);
        float *W = malloc(sizeof(float) * nw), *D = malloc(sizeof(float) * nw);
        gq_vq_decode(&b.t, W);
        gq_qweight_decode_rows(&b.w, 0, c->rows, D);
        CHECKF(memcmp(D, W, sizeof(float) * nw) == 0, "rotated case %d: decode_rows differs from gq_vq_decode", cases[i]);
        double moved = 0; // W' R is not W'
        for (size_t j = 0; j < nw; j++) moved = fmax(moved, fabs(W[j] - b.Q[j]));
        CHECKF(moved > 1e-3, "rotated case %d: the rotation changed nothing", cases[i]);
        char what[64];
        snprintf(what, sizeof what, "rotated vq case %d (d %d k %d)", cases[i], c->d, c->k);
        run_all(what, &b.w, W);
        vq_built_free(&b);
        free(W), free(D);
    }
}

static void test_ggml(void) {
    const struct {
        enum gq_ggml_type type;
        int rows, cols;
    } cases[] = {{GQ_TYPE_Q8_0, 37, 96},  {GQ_TYPE_Q8_0, 5, 1536}, {GQ_TYPE_Q4_0, 37, 96}, {GQ_TYPE_Q4_0, 9, 576},
                 {GQ_TYPE_F16, 13, 200},  {GQ_TYPE_F16, 3, 1536}, {GQ_TYPE_Q4_1, 11, 64},
                 {GQ_TYPE_Q4_1, 23, 576}, {GQ_TYPE_Q5_0, 6, 64},  {GQ_TYPE_Q5_0, 21, 576},
                 {GQ_TYPE_Q5_1, 5, 64},   {GQ_TYPE_Q5_1, 19, 1536}, {GQ_TYPE_Q6_K, 3, 256}};
    // (every repacked type has a full 16-row group and a ragged rest)
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const int rows = cases[i].rows, cols = cases[i].cols;
        size_t rs = gq_ggml_row_size(cases[i].type, cols);
        uint8_t *data = malloc(rs * rows);
        for (size_t b = 0; b < rs * rows; b++) data[b] = (uint8_t)rng_u64();
        // sane fp16 scales / values (random bytes would include NaN and Inf)
        if (cases[i].type == GQ_TYPE_F16) {
            for (size_t e = 0; e < (size_t)rows * cols; e++) {
                uint16_t h = gq_f32_to_f16((float)rng_normal());
                memcpy(data + 2 * e, &h, 2);
            }
        } else {
            const enum gq_ggml_type ty = cases[i].type;
            const int bs = (int)gq_ggml_type_size(ty), scales = ty == GQ_TYPE_Q4_1 || ty == GQ_TYPE_Q5_1 ? 2 : 1;
            // fp16 fields at the block's start (Q5: then 4 bytes of high bits, random is fine);
            // Q6_K: its one fp16 scale is the block's last 2 bytes
            const int at = ty == GQ_TYPE_Q6_K ? bs - 2 : 0;
            for (size_t b = 0; b < rs * rows; b += bs)
                for (int s = 0; s < scales; s++) {
                    uint16_t h = gq_f32_to_f16((float)(0.01 + 0.02 * rng_unif()));
                    memcpy(data + b + at + 2 * s, &h, 2);
                }
        }
        float *W = malloc(sizeof(float) * rows * cols);
        CHECK_OK(gq_dequantize(cases[i].type, data, W, (int64_t)rows * cols));
        struct gq_qweight w = {.kind = GQ_QW_GGML, .rows = rows, .cols = cols, .type = cases[i].type, .data = data,
                               .row_size = rs};
        float *D = malloc(sizeof(float) * rows * cols);
        gq_qweight_decode_rows(&w, 0, rows, D);
        CHECK(memcmp(D, W, sizeof(float) * rows * cols) == 0);
        char what[64];
        snprintf(what, sizeof what, "%s %dx%d", gq_ggml_type_name(cases[i].type), rows, cols);
        run_all(what, &w, W);
        // the 16-row groups of the SIMD kernels (the scalar reference keeps reading the rows)
        void *rp = NULL;
        CHECK_OK(gq_qweight_prepare(&w, &rp));
        CHECKF((rp != NULL) == (gq_qmatmul_isa_best() >= GQ_ISA_AVX2 && cases[i].type != GQ_TYPE_F16 &&
                                cases[i].type != GQ_TYPE_Q6_K),
               "%s: repacked %s", what, rp ? "unexpectedly" : "not");
        if (rp) {
            snprintf(what, sizeof what, "%s %dx%d 16-row groups", gq_ggml_type_name(cases[i].type), rows, cols);
            run_all(what, &w, W);
            n_rp++;
        }
        free(rp);
        free(data), free(W), free(D);
    }
}

// [3] vector math of the forward (kern/vmath.h), every ISA against libm and
// double-precision references.
static void test_vmath(void) {
    enum { N = 1000, HD = 64, T = 37 };
    float *x = malloc(sizeof(float) * N), *e = malloc(sizeof(float) * N);
    for (int isa = 0; isa < GQ_ISA_COUNT; isa++) {
        if (gq_qmatmul_set_isa((enum gq_isa)isa) != (enum gq_isa)isa) continue;
        // exp of x - max over a wide range (softmax inputs), sums in double
        for (int i = 0; i < N; i++) x[i] = (float)(-95.0 + 100.0 * rng_unif()), e[i] = x[i];
        const float mx = gq_vmax(x, N);
        const double sum = gq_vexp_shift(e, N, mx);
        double worst_e = 0, ref_sum = 0;
        for (int i = 0; i < N; i++) {
            const float dx = x[i] - mx; // the argument as the kernels form it (in float)
            const double r = exp((double)dx);
            ref_sum += r;
            if (r > 1e-37) worst_e = fmax(worst_e, fabs(e[i] - r) / r);
            else CHECKF(e[i] >= 0 && e[i] < 1e-36, "exp(%g) = %g", dx, e[i]);
        }
        CHECKF(worst_e < 4e-7, "%s: exp relative error %.3g", isa_label[isa], worst_e);
        CHECKF(fabs(sum - ref_sum) <= 1e-6 * ref_sum, "%s: exp sum %.9g vs %.9g", isa_label[isa], sum, ref_sum);
        // the max and −log softmax(row)[target] of a row of logits (n = N − 3: a ragged SIMD tail)
        for (int i = 0; i < N; i++) x[i] = (float)(40 * rng_unif() - 20);
        x[N - 4] = 21; // the largest in the tail
        float mref = -INFINITY;
        for (int i = 0; i < N - 3; i++) mref = fmaxf(mref, x[i]);
        CHECKF(gq_vmax(x, N - 3) == mref, "%s: max %g vs %g", isa_label[isa], gq_vmax(x, N - 3), mref);
        double zr = 0;
        for (int i = 0; i < N - 3; i++) zr += exp((double)x[i] - mref);
        const double nll_ref = log(zr) + mref - x[17], nll = gq_row_nll(x, N - 3, 17);
        CHECKF(fabs(nll - nll_ref) <= 1e-6 * fabs(nll_ref), "%s: row nll %.9g vs %.9g", isa_label[isa], nll, nll_ref);
        // SwiGLU
        float g[N], u[N];
        for (int i = 0; i < N; i++) g[i] = (float)(20 * rng_unif() - 10), u[i] = (float)rng_normal();
        memcpy(e, g, sizeof g);
        gq_vswiglu(e, u, N);
        double worst_s = 0;
        for (int i = 0; i < N; i++) {
            const double r = g[i] / (1 + exp(-(double)g[i])) * u[i];
            worst_s = fmax(worst_s, fabs(e[i] - r) / (fabs(r) + 1e-30));
        }
        CHECKF(worst_s < 1e-6, "%s: swiglu relative error %.3g", isa_label[isa], worst_s);
        { // RMSNorm of a row of N − 3 (a ragged tail), against double
            const int n = N - 3;
            float o[N];
            gq_vrmsnorm(o, g, u, n, 1e-5f);
            double ss = 0, worst_r = 0;
            for (int i = 0; i < n; i++) ss += (double)g[i] * g[i];
            const double sr = 1 / sqrt(ss / n + 1e-5f);
            for (int i = 0; i < n; i++) {
                const double r = g[i] * sr * u[i];
                worst_r = fmax(worst_r, fabs(o[i] - r) / (fabs(r) + 1e-30));
            }
            CHECKF(worst_r < 3e-7, "%s: rmsnorm relative error %.3g", isa_label[isa], worst_r);
        }
        // one head's decode attention over T positions (rows 3 · HD apart): one partial
        float q[HD], out[HD], sc[T], *k = rand_matrix(T, 3 * HD, 1.0), *v = rand_matrix(T, 3 * HD, 1.0);
        for (int j = 0; j < HD; j++) q[j] = (float)rng_normal();
        { // the whole range as one partial
            float m1;
            double z1;
            gq_attn_partial(q, 1, k + HD, v + HD, 0, T, HD, 3 * HD, 0.125f, sc, &m1, &z1, out);
            gq_attn_combine(1, &m1, &z1, out, HD, HD, out);
        }
        double p[T], z = 0, m = -1e300, worst_a = 0;
        for (int t = 0; t < T; t++) {
            p[t] = 0;
            for (int j = 0; j < HD; j++) p[t] += (double)q[j] * k[(size_t)t * 3 * HD + HD + j];
            p[t] *= 0.125, m = fmax(m, p[t]);
        }
        for (int t = 0; t < T; t++) p[t] = exp(p[t] - m), z += p[t];
        for (int j = 0; j < HD; j++) {
            double r = 0, mag = 0;
            for (int t = 0; t < T; t++) r += p[t] / z * v[(size_t)t * 3 * HD + HD + j], mag += p[t] / z * fabs(v[(size_t)t * 3 * HD + HD + j]);
            worst_a = fmax(worst_a, fabs(out[j] - r) / mag);
        }
        CHECKF(worst_a < 1e-5, "%s: attention error %.3g of sum p|v|", isa_label[isa], worst_a);
        // the same split over 3 position ranges (one empty) for 2 query heads (q twice), combined
        float q2[2 * HD], o3[3][2 * HD], m3[3][2], S2[2 * T], out2[HD];
        double z3[3][2];
        memcpy(q2, q, sizeof q), memcpy(q2 + HD, q, sizeof q);
        const int cut[4] = {0, 11, 11, T};
        for (int pp = 0; pp < 3; pp++)
            gq_attn_partial(q2, 2, k + HD, v + HD, cut[pp], cut[pp + 1], HD, 3 * HD, 0.125f, S2, m3[pp], z3[pp], o3[pp]);
        for (int hh = 0; hh < 2; hh++) {
            const float mh[3] = {m3[0][hh], m3[1][hh], m3[2][hh]};
            const double zh[3] = {z3[0][hh], z3[1][hh], z3[2][hh]};
            gq_attn_combine(3, mh, zh, &o3[0][hh * HD], 2 * HD, HD, out2);
            double wa = 0;
            for (int j = 0; j < HD; j++) {
                double mag = 0;
                for (int t = 0; t < T; t++) mag += p[t] / z * fabs(v[(size_t)t * 3 * HD + HD + j]);
                wa = fmax(wa, fabs(out2[j] - out[j]) / mag);
            }
            CHECKF(wa < 1e-5, "%s: split attention head %d differs from the whole by %.3g", isa_label[isa], hh, wa);
        }
        free(k), free(v);
        // several query heads of one KV head (3: AVX-512's head groups of 1..4; 6: a group of 4 and
        // one of 2; head size 128: two 64-float slices; 72: not a multiple of 64, the AVX2 code),
        // against the double-precision softmax(q k / 8) v of each head
        static const int cfg[3][2] = {{3, 64}, {6, 128}, {5, 72}};
        for (int c = 0; c < 3; c++) {
            const int nq = cfg[c][0], hd = cfg[c][1], ld = hd + 8, TT = 45;
            float *kk = rand_matrix(TT, ld, 1.0), *vv = rand_matrix(TT, ld, 1.0), *qq = rand_matrix(nq, hd, 1.0);
            float *S = malloc(sizeof(float) * nq * TT), *oo = malloc(sizeof(float) * nq * hd), mm[8], ob[128];
            double zz[8], worst = 0;
            gq_attn_partial(qq, nq, kk, vv, 0, TT, hd, ld, 0.125f, S, mm, zz, oo);
            for (int h = 0; h < nq; h++) {
                gq_attn_combine(1, &mm[h], &zz[h], oo + (size_t)h * hd, hd, hd, ob);
                double pp[45], zs = 0, mx2 = -1e300;
                for (int t = 0; t < TT; t++) {
                    pp[t] = 0;
                    for (int j = 0; j < hd; j++) pp[t] += (double)qq[(size_t)h * hd + j] * kk[(size_t)t * ld + j];
                    pp[t] *= 0.125, mx2 = fmax(mx2, pp[t]);
                }
                for (int t = 0; t < TT; t++) pp[t] = exp(pp[t] - mx2), zs += pp[t];
                for (int j = 0; j < hd; j++) {
                    double r = 0, mag = 0;
                    for (int t = 0; t < TT; t++) r += pp[t] / zs * vv[(size_t)t * ld + j], mag += pp[t] / zs * fabs(vv[(size_t)t * ld + j]);
                    worst = fmax(worst, fabs(ob[j] - r) / mag);
                }
            }
            CHECKF(worst < 1e-5, "%s: attention of %d heads of size %d: error %.3g of sum p|v|", isa_label[isa], nq, hd, worst);
            free(kk), free(vv), free(qq), free(S), free(oo);
        }
    }
    gq_qmatmul_set_isa(gq_qmatmul_isa_best());
    free(x), free(e);
}

int main(void) {
    fprintf(stderr, "  best kernels of this CPU: %s\n", gq_isa_name(gq_qmatmul_isa_best()));
    test_vq();
    test_vq_rot();
    test_ggml();
    test_vmath();
    // every AVX-512 VQ kernel and the repacked block types were exercised
    for (int f = 1; f < GQ_VQF_COUNT; f++) CHECKF(n_fast[f] >= 1, "only %d VQ cases take AVX-512 kernel %d", n_fast[f], f);
    CHECKF(n_k64 >= 2 && n_k64n >= 1, "AVX2 K64 cases: %d, %d with normalisation", n_k64, n_k64n);
    CHECKF(n_q8n >= 7 && n_nibn >= 5, "normalised cases: %d through the int8 kernels, %d through AVX-512 NIB, D2K64H or D4K256", n_q8n, n_nibn);
    if (gq_qmatmul_isa_best() >= GQ_ISA_AVX2) CHECKF(n_rp == 5 * 2, "%d repacked block-type cases", n_rp);
    fprintf(stderr, "  VQ cases per AVX-512 kernel (none, nib, d2k64, d4k256, d2k64 halves, d2k256): %d %d %d %d %d %d\n",
            n_fast[0], n_fast[1], n_fast[2], n_fast[3], n_fast[4], n_fast[5]);
    fprintf(stderr, "  worst |y - y_ref| / sum|w x| = %.3g (tolerance 1e-5)\n", worst);
    fprintf(stderr, "  int8-activation GEMVs: %d VQ configurations + Q8_0/Q4_0/Q4_1/Q5_0/Q5_1, worst error / bound = %.3g\n", n_q8, worst_q8);
    return test_done("test_qmatmul");
}
