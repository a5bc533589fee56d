// test_gptvq.c - the GPTVQ driver (src/quant/gptvq.c) against independent
// references on small problems:
//  [1] the OBS identity: with exact d×d feedback, the layer objective of the
//      pass under the damped Hessian equals the sum of the per-step
//      increments ‖e U_SS⁻¹‖² (any assignment rule, any option); the
//      reference code's diagonal feedback breaks it (shown, so the check can
//      fail);
//  [2] fake-quant output = decode of the compressed form, bit for bit, and
//      the stored bits = the count written out here;
//  [3] exact codebook update = dense least squares (LAPACK dgelsd on the
//      stacked system Lᵀ(y_r − A_r θ)), never above the pre-update objective;
//      the CG path agrees with the dense path; GD approaches the optimum;
//  [4] exact feedback beats diagonal feedback and the full sub-Hessian beats
//      the diagonal metric on average; GPTVQ 2D beats GPTQ at equal bits;
//  [5] bad input: non-finite weights, columns not a multiple of d;
//  [6] codebook SVD (d = 1): stored factors on their int8 / fp16 grids,
//      codebooks = U Vᵀ, decode and bits; full rank reproduces the pass;
//      ALS never increases the objective; its V refit = dense least squares
//      over V, and after many rounds U is near the dense optimum given V;
//  [7] slabs: a matrix quantized as two calls that each do half its slabs,
//      their tensors OR-ed bytewise (as the ranks merge them), is the one-call
//      tensor and decode bit for bit; the slabs' objectives add up to the
//      directly computed one; no slab keeps an update that raised its error.
//  [8] tiling: 2D row tiles of at least 16 rows where the budget allows.
#include "quant/group.h"
#include "quant/vq.h"
#include "test.h"
#include "test_rand.h"
#include "util/common.h"

#include <lapacke.h>

struct problem {
    int rows, cols;
    float *W, *H;
};

static struct problem make_problem(int rows, int cols, int dead_col) {
    struct problem p = {rows, cols, rand_matrix(rows, cols, 1.0), NULL};
    float *X = rand_activations(4 * cols, cols, dead_col);
    p.H = hessian_of(X, 4 * cols, cols);
    free(X);
    return p;
}
static void free_problem(struct problem *p) { free(p->W), free(p->H); }

static void default_vq(struct gq_gptvq_params *vp, struct gq_quant_params *qp, int d) {
    memset(vp, 0, sizeof *vp);
    vp->dim = d, vp->em_iters = 30, vp->em_init = GQ_VQ_INIT_MAHALANOBIS, vp->cb_update = GQ_CB_UPDATE_NONE;
    vp->gd_iters = 10, vp->cb_format = GQ_CB_INT8, vp->stages = 1;
    gq_quant_params_default(qp);
    qp->block_size = 8, qp->act_order = true;
}

// tr(ΔHΔᵀ) in double, H optionally + λI.
static double objective(const float *W, const float *Q, const float *H, int rows, int n, double lam) {
    double obj = 0;
    for (int r = 0; r < rows; r++)
        for (int a = 0; a < n; a++) {
            double ea = (double)W[(size_t)r * n + a] - Q[(size_t)r * n + a];
            if (ea == 0) continue;
            for (int b = 0; b < n; b++) {
                double eb = (double)W[(size_t)r * n + b] - Q[(size_t)r * n + b];
                obj += ea * eb * ((double)H[(size_t)a * n + b] + (a == b ? lam : 0));
            }
        }
    return obj;
}

static enum gq_status run(const struct problem *p, const struct gq_quant_params *qp, const struct gq_gptvq_params *vp,
                          int k, int64_t l, float *Q, struct gq_vq_tensor *t, struct gq_vq_result *res) {
    struct gq_vq_config cfg = {.d = vp->dim, .k = k, .l = l};
    memcpy(Q, p->W, sizeof(float) * (size_t)p->rows * p->cols);
    return gq_gptvq_quantize(Q, p->rows, p->cols, p->H, qp, vp, &cfg, 7, t, res);
}

static int ilog2i(int k) {
    int b = 0;
    while ((1 << b) < k) b++;
    return b;
}

// [1] + [2] over a grid of options.
static void test_identity_and_decode(void) {
    struct problem p = make_problem(24, 48, 5);
    size_t nw = (size_t)p.rows * p.cols;
    float *Q = malloc(sizeof(float) * nw), *D = malloc(sizeof(float) * nw);
    float *Wz = malloc(sizeof(float) * nw), *Hd = malloc(sizeof(float) * p.cols * p.cols);
    memcpy(Wz, p.W, sizeof(float) * nw);
    memcpy(Hd, p.H, sizeof(float) * p.cols * p.cols);
    for (int c = 0; c < p.cols; c++)
        if (p.H[c * p.cols + c] == 0) {
            Hd[c * p.cols + c] = 1;
            for (int r = 0; r < p.rows; r++) Wz[r * p.cols + c] = 0;
        }
    const int dims[] = {1, 2, 4, 8};
    int n_cases = 0;
    double worst_exact = 0, best_diag = INFINITY;
    for (int di = 0; di < 4; di++)
        for (int opt = 0; opt < 6; opt++) {
            int d = dims[di];
            struct gq_gptvq_params vp;
            struct gq_quant_params qp;
            default_vq(&vp, &qp, d);
            int k = d == 1 ? 8 : d == 2 ? 16 : d == 4 ? 32 : 16;
            int64_t l = d == 8 ? 24 * 48 : 256;
            if (opt == 1) vp.norm_block = 2 * d < 16 ? 16 : 2 * d, qp.act_order = false;
            if (opt == 2) vp.stages = 2, vp.em_init = GQ_VQ_INIT_KMEANSPP;
            if (opt == 3) vp.outlier_frac = 0.1;
            if (opt == 4) vp.full_subhessian = true, vp.cb_format = GQ_CB_FP16;
            if (opt == 5) vp.feedback_diag = true;
            struct gq_vq_tensor t;
            struct gq_vq_result res;
            enum gq_status s = run(&p, &qp, &vp, k, l, Q, &t, &res);
            CHECK_OK(s);
            if (s != GQ_OK) break;
            n_cases++;
            // [1] objective under the H the pass used (dead input: H_ii = 1 and
            // its weights zero, as GPTQ) + λI equals the greedy sum
            double od = objective(Wz, Q, Hd, p.rows, p.cols, res.damp_abs);
            double rel = fabs(od - res.greedy) / od;
            if (!vp.feedback_diag) {
                CHECKF(rel < 1e-8, "d=%d opt=%d: objective %.10g vs greedy sum %.10g (rel %.3g)", d, opt, od,
                       res.greedy, rel);
                if (rel > worst_exact) worst_exact = rel;
            } else if (d > 1 && rel < best_diag) // d = 1: diag is exact
                best_diag = rel;
            // undamped objective = reported one (no update here)
            double o = objective(p.W, Q, p.H, p.rows, p.cols, 0);
            CHECKF(fabs(o - res.objective) <= 1e-9 * o, "d=%d opt=%d: objective %.10g vs reported %.10g", d, opt, o,
                   res.objective);
            // [2] decode == fake-quant, bit for bit
            gq_vq_decode(&t, D);
            CHECK(memcmp(D, Q, sizeof(float) * nw) == 0);
            // stored bits, counted from the definition
            int nv = (p.cols - t.n_out) / d;
            int64_t groups = (int64_t)t.n_rt * t.n_ct;
            int cbits = vp.cb_format == GQ_CB_INT8 ? 8 : vp.cb_format == GQ_CB_FP16 ? 16 : 32;
            int64_t bits = (int64_t)t.stages * p.rows * nv * ilog2i(k) +
                           t.stages * groups * ((int64_t)k * d * cbits + (vp.cb_format == GQ_CB_INT8 ? 16 : 0)) +
                           (int64_t)p.rows * t.n_out * 16;
            if (vp.norm_block) {
                int64_t nb = 0;
                for (int c = 0; c < t.n_ct; c++)
                    nb += (t.ct_start[c + 1] - t.ct_start[c] + vp.norm_block - 1) / vp.norm_block;
                bits += p.rows * nb * 4 + groups * 32;
            }
            bool ident = true;
            for (int i = 0; i < p.cols; i++) ident &= t.perm[i] == i;
            if (!ident) bits += (int64_t)p.cols * ilog2i(p.cols);
            CHECKF(gq_vq_tensor_bits(&t) == bits, "d=%d opt=%d: bits %lld vs %lld", d, opt,
                   (long long)gq_vq_tensor_bits(&t), (long long)bits);
            CHECK(fabs(res.bpv - (double)bits / nw) < 1e-12);
            // every index < k, tiles cover the matrix
            for (size_t i = 0; i < (size_t)t.stages * p.rows * nv; i++) CHECK(t.idx[i] < k);
            CHECK(t.ct_start[0] == t.n_out && t.ct_start[t.n_ct] == p.cols && t.rt_start[t.n_rt] == p.rows);
            gq_vq_tensor_free(&t);
        }
    CHECK(n_cases == 24);
    // the diagonal feedback does not satisfy the identity: the check above can fail
    CHECKF(best_diag > 1e-6, "diag feedback unexpectedly exact (rel %.3g)", best_diag);
    fprintf(stderr, "  [1] OBS identity, 20 exact-feedback cases: worst rel %.2e; diag feedback off by >= %.2e\n",
            worst_exact, best_diag);
    free(Q), free(D), free(Wz), free(Hd);
    free_problem(&p);
}

// The stacked system of all codebook entries θ of t: W ≈ A θ under H becomes
// min ‖y − M θ‖² with M (neq, m) and y (max(neq, m)), neq = rows · cols.
static void lstsq_system(const struct problem *p, const struct gq_vq_tensor *t, double **Mo, double **yo, size_t *neqo,
                         size_t *mo) {
    const int rows = p->rows, n = p->cols, d = t->d, k = t->k, nv = (n - t->n_out) / d;
    const size_t m = (size_t)t->stages * t->n_rt * t->n_ct * k * d;
    // H = L Lᵀ (original column order)
    double *L = malloc(sizeof(double) * n * n);
    for (int i = 0; i < n * n; i++) L[i] = p->H[i];
    for (int i = 0; i < n; i++) L[i * n + i] += 1e-12; // dead input: keep potrf happy
    CHECK(LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'L', n, L, n) == 0);
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) L[i * n + j] = 0;
    // rows r·n + i of the system: Σ_c L[c][i] (y_r[c] − (Aθ)_r[c])
    size_t neq = (size_t)rows * n;
    double *M = calloc(neq * m, sizeof(double)), *y = calloc(neq > m ? neq : m, sizeof(double));
    for (int r = 0; r < rows; r++) {
        int rt = 0;
        while (r >= t->rt_start[rt + 1]) rt++;
        for (int pos = t->n_out; pos < n; pos++) {
            int v = (pos - t->n_out) / d, j = (pos - t->n_out) % d, ct = 0;
            while (pos >= t->ct_start[ct + 1]) ct++;
            int c = t->perm[pos];
            for (int s = 0; s < t->stages; s++) {
                size_t a = ((((size_t)s * t->n_rt + rt) * t->n_ct + ct) * k + t->idx[((size_t)s * rows + r) * nv + v]) * d + j;
                for (int i = 0; i < n; i++) M[((size_t)r * n + i) * m + a] += L[(size_t)c * n + i];
            }
        }
        for (int i = 0; i < n; i++) {
            double acc = 0;
            for (int c = 0; c < n; c++) {
                // outlier columns are fixed: subtract their decoded values
                double wq = p->W[(size_t)r * n + c];
                for (int pos = 0; pos < t->n_out; pos++)
                    if (t->perm[pos] == c) wq -= gq_f16_to_f32(t->outl[(size_t)r * t->n_out + pos]);
                acc += L[(size_t)c * n + i] * wq;
            }
            y[(size_t)r * n + i] = acc;
        }
    }
    free(L);
    *Mo = M, *yo = y, *neqo = neq, *mo = m;
}

// Objective under H of the matrix t decodes to with codebook entries θ.
static double theta_objective(const struct problem *p, const struct gq_vq_tensor *t, const double *y) {
    const int rows = p->rows, n = p->cols, d = t->d, k = t->k, nv = (n - t->n_out) / d;
    size_t neq = (size_t)rows * n;
    float *Q = malloc(sizeof(float) * neq);
    for (int r = 0; r < rows; r++) {
        int rt = 0;
        while (r >= t->rt_start[rt + 1]) rt++;
        for (int pos = 0; pos < n; pos++) {
            int c = t->perm[pos];
            if (pos < t->n_out) {
                Q[(size_t)r * n + c] = gq_f16_to_f32(t->outl[(size_t)r * t->n_out + pos]);
                continue;
            }
            int v = (pos - t->n_out) / d, j = (pos - t->n_out) % d, ct = 0;
            while (pos >= t->ct_start[ct + 1]) ct++;
            double q = 0;
            for (int s = 0; s < t->stages; s++)
                q += y[((((size_t)s * t->n_rt + rt) * t->n_ct + ct) * k + t->idx[((size_t)s * rows + r) * nv + v]) * d + j];
            Q[(size_t)r * n + c] = (float)q;
        }
    }
    double obj = objective(p->W, Q, p->H, rows, n, 0);
    free(Q);
    return obj;
}

// min over x of ‖y − M x‖² (M: neq × m, y: max(neq, m), both destroyed);
// x = y[0..m) afterwards.
static void dense_lstsq(double *M, double *y, size_t neq, size_t m) {
    double *sv = malloc(sizeof(double) * m);
    lapack_int rank;
    CHECK(LAPACKE_dgelsd(LAPACK_ROW_MAJOR, (lapack_int)neq, (lapack_int)m, 1, M, (lapack_int)m, y, 1, sv, 1e-12,
                         &rank) == 0);
    free(sv);
}

// Dense least squares over all codebook entries of t for W ≈ A θ under H.
static double lstsq_objective(const struct problem *p, const struct gq_vq_tensor *t) {
    double *M, *y;
    size_t neq, m;
    lstsq_system(p, t, &M, &y, &neq, &m);
    dense_lstsq(M, y, neq, m);
    double obj = theta_objective(p, t, y);
    free(M), free(y);
    return obj;
}

// [3]
static void test_codebook_update(void) {
    struct problem p = make_problem(16, 32, -1), wide = make_problem(8, 512, 3);
    float *Q = malloc(sizeof(float) * 8 * 512);
    for (int c = 0; c < 4; c++) {
        // case 3: two column tiles x two row tiles, so CG iterates across tiles
        const struct problem *pp = c == 3 ? &wide : &p;
        int64_t l = c == 3 ? 1024 : 128;
        int d = c == 0 ? 1 : 2;
        struct gq_gptvq_params vp;
        struct gq_quant_params qp;
        default_vq(&vp, &qp, d);
        vp.cb_format = GQ_CB_F32;
        if (c == 2) vp.stages = 2, vp.outlier_frac = 0.07;
        int k = d == 1 ? 4 : 8;
        struct gq_vq_tensor t;
        struct gq_vq_result r0, rx, rg5, rg50;
        CHECK_OK(run(pp, &qp, &vp, k, l, Q, &t, &r0)); // no update: the assignments
        gq_vq_tensor_free(&t);
        vp.cb_update = GQ_CB_UPDATE_EXACT;
        enum gq_status s = run(pp, &qp, &vp, k, l, Q, &t, &rx);
        CHECK_OK(s);
        if (s != GQ_OK) break;
        CHECK(rx.objective_pass == r0.objective); // same pass
        CHECK(rx.objective <= rx.objective_pass);
        CHECK(rx.update_kept);
        double ls = lstsq_objective(pp, &t);
        if (c == 3) CHECK(t.n_ct == 2 && t.n_rt == 2);
        CHECKF(fabs(rx.objective - ls) <= 1e-6 * ls, "case %d: exact update %.10g vs dense lstsq %.10g", c,
               rx.objective, ls);
        gq_vq_tensor_free(&t);
        // CG path (dense solve disabled) agrees
        int save = gq_vq_dense_max;
        gq_vq_dense_max = 0;
        struct gq_vq_result rc;
        CHECK_OK(run(pp, &qp, &vp, k, l, Q, NULL, &rc));
        gq_vq_dense_max = save;
        CHECKF(fabs(rc.objective - rx.objective) <= 1e-6 * rx.objective, "case %d: CG %.10g vs dense %.10g (%d iters)",
               c, rc.objective, rx.objective, rc.update_iters);
        // GD approaches it
        vp.cb_update = GQ_CB_UPDATE_GD;
        vp.gd_iters = 5;
        CHECK_OK(run(pp, &qp, &vp, k, l, Q, NULL, &rg5));
        vp.gd_iters = 50;
        CHECK_OK(run(pp, &qp, &vp, k, l, Q, NULL, &rg50));
        CHECK(rg5.objective >= rx.objective * (1 - 1e-9));
        CHECK(rg50.objective >= rx.objective * (1 - 1e-9));
        CHECK(rg50.objective <= rg5.objective);
        CHECKF(rg50.objective - rx.objective < 0.5 * (rg5.objective - rx.objective) + 1e-12 * rx.objective,
               "GD gap did not shrink: 5 steps %.6g, 50 steps %.6g, exact %.6g", rg5.objective, rg50.objective,
               rx.objective);
        fprintf(stderr,
                "  [3] case %d: pass %.5g -> exact %.5g (dense lstsq %.5g, CG %.5g in %d it), GD 5: %.5g, GD 50: %.5g\n",
                c, r0.objective, rx.objective, ls, rc.objective, rc.update_iters, rg5.objective, rg50.objective);
    }
    // int8 codebooks: the update is re-rounded and kept only if it helps
    struct gq_gptvq_params vp;
    struct gq_quant_params qp;
    default_vq(&vp, &qp, 2);
    vp.cb_update = GQ_CB_UPDATE_EXACT;
    struct gq_vq_result r;
    CHECK_OK(run(&p, &qp, &vp, 16, 256, Q, NULL, &r));
    CHECK(r.objective <= r.objective_pass);
    free(Q);
    free_problem(&p), free_problem(&wide);
}

// [6] codebook SVD (d = 1): stored form, decode, bits, truncation, ALS.
// Least squares over the factor U with V fixed (or V with U fixed): θ = K x,
// solved densely; returns the objective of the optimum.
static double lstsq_factor(const struct problem *p, const struct gq_vq_tensor *t, bool over_u) {
    double *M, *y;
    size_t neq, m;
    lstsq_system(p, t, &M, &y, &neq, &m);
    const int k = t->k, r = t->svd_rank;
    const size_t ng = (size_t)t->n_rt * t->n_ct, mx = over_u ? ng * r : (size_t)k * r;
    double *Mx = calloc(neq * mx, sizeof(double)), *th = calloc(m, sizeof(double));
    for (size_t e = 0; e < neq; e++)
        for (size_t g = 0; g < ng; g++)
            for (int c = 0; c < k; c++) {
                double a = M[e * m + g * k + c];
                if (a == 0) continue;
                for (int j = 0; j < r; j++)
                    if (over_u) Mx[e * mx + g * r + j] += a * t->svd_v[c * r + j];
                    else Mx[e * mx + (size_t)c * r + j] += a * t->svd_u[g * r + j];
            }
    dense_lstsq(Mx, y, neq, mx);
    for (size_t g = 0; g < ng; g++) // θ of the optimum
        for (int c = 0; c < k; c++)
            for (int j = 0; j < r; j++)
                th[g * k + c] += over_u ? y[g * r + j] * t->svd_v[c * r + j] : t->svd_u[g * r + j] * y[(size_t)c * r + j];
    double obj = theta_objective(p, t, th);
    free(M), free(y), free(Mx), free(th);
    return obj;
}

static void test_codebook_svd(void) {
    struct problem p = make_problem(32, 96, 4);
    size_t nw = (size_t)p.rows * p.cols;
    float *Q = malloc(sizeof(float) * nw), *D = malloc(sizeof(float) * nw);
    struct gq_gptvq_params vp;
    struct gq_quant_params qp;
    struct gq_vq_tensor t;
    struct gq_vq_result r;
    // (a) int8 U, fp16 V, with normalisation and outliers: stored form,
    // decode = fake-quant output bit for bit, bits as written out here.
    default_vq(&vp, &qp, 1);
    vp.cb_svd_rank = 2, vp.cb_update = GQ_CB_UPDATE_EXACT, vp.norm_block = 16, vp.outlier_frac = 0.05;
    CHECK_OK(run(&p, &qp, &vp, 8, 96, Q, &t, &r));
    const size_t ng = (size_t)t.n_rt * t.n_ct;
    int bad_u = 0, bad_v = 0, bad_cb = 0;
    for (size_t g = 0; g < ng; g++)
        for (int j = 0; j < 2; j++) {
            float q = t.svd_u[g * 2 + j] / t.svd_uscale[j];
            bad_u += !(q == nearbyintf(q) && fabsf(q) <= 127);
        }
    for (int i = 0; i < 8 * 2; i++) bad_v += gq_f16_to_f32(gq_f32_to_f16(t.svd_v[i])) != t.svd_v[i];
    for (size_t g = 0; g < ng; g++)
        for (int c = 0; c < 8; c++) {
            float s = t.svd_u[g * 2] * t.svd_v[c * 2];
            s += t.svd_u[g * 2 + 1] * t.svd_v[c * 2 + 1];
            bad_cb += t.cb[g * 8 + c] != s;
        }
    CHECKF(!bad_u && !bad_v && !bad_cb, "svd storage: %d U values off the int8 grid, %d V not fp16, %d codebooks != UVt",
           bad_u, bad_v, bad_cb);
    gq_vq_decode(&t, D);
    CHECK(memcmp(D, Q, sizeof(float) * nw) == 0);
    int64_t nvv = t.cols - t.n_out, bits = (int64_t)t.rows * nvv * 3 + 2 * ((int64_t)ng * 8 + 16 + 8 * 16) +
                                          (int64_t)t.rows * t.n_nblk * 4 + (int64_t)ng * 32 + (int64_t)t.rows * t.n_out * 16 +
                                          (int64_t)t.cols * ilog2i(t.cols);
    CHECKF(gq_vq_tensor_bits(&t) == bits, "svd bits %lld, expected %lld", (long long)gq_vq_tensor_bits(&t),
           (long long)bits);
    gq_vq_tensor_free(&t);
    // (b) full rank, f32, no refinement: sorting + SVD reproduce the pass
    default_vq(&vp, &qp, 1);
    vp.cb_format = GQ_CB_F32, vp.cb_svd_rank = 4;
    CHECK_OK(run(&p, &qp, &vp, 4, 96, Q, NULL, &r));
    CHECKF(fabs(r.objective - r.objective_pass) <= 1e-5 * r.objective_pass &&
               fabs(r.objective_svd_trunc - r.objective_pass) <= 1e-5 * r.objective_pass,
           "full-rank SVD: pass %.9g, truncation %.9g, final %.9g", r.objective_pass, r.objective_svd_trunc, r.objective);
    // (c) rank 2 of 8, f32: the ALS objective never increases with more
    // rounds; the last V refit equals a dense least-squares solve over V
    // given U, and after many rounds U is (nearly) optimal given V too.
    vp.cb_svd_rank = 2, vp.cb_update = GQ_CB_UPDATE_EXACT;
    const int its[] = {0, 1, 4, 200};
    double prev = INFINITY, trunc = 0;
    int save = gq_vq_svd_als_iters;
    for (int i = 0; i < 4; i++) {
        gq_vq_svd_als_iters = its[i];
        CHECK_OK(run(&p, &qp, &vp, 8, 96, Q, &t, &r));
        trunc = r.objective_svd_trunc;
        CHECKF(r.objective <= prev * (1 + 1e-7) && r.objective <= trunc * (1 + 1e-7),
               "ALS %d rounds: %.9g (previous %.9g, truncation %.9g)", its[i], r.objective, prev, trunc);
        prev = r.objective;
        double lv = lstsq_factor(&p, &t, false);
        CHECKF(fabs(lv - r.objective) <= 1e-5 * r.objective, "ALS %d: V refit %.9g vs dense lstsq over V %.9g", its[i],
               r.objective, lv);
        if (its[i] == 200) {
            double lu = lstsq_factor(&p, &t, true);
            CHECKF(lu <= r.objective * (1 + 1e-6) && r.objective - lu <= 1e-3 * r.objective,
                   "ALS converged: %.9g vs dense lstsq over U given V %.9g", r.objective, lu);
            fprintf(stderr, "  [6] codebook SVD rank 2 of 8: pass %.6g, truncation %.6g, ALS 200 %.6g (U lstsq %.6g)\n",
                    r.objective_pass, trunc, r.objective, lu);
        }
        gq_vq_tensor_free(&t);
    }
    gq_vq_svd_als_iters = save;
    // (d) bad options
    default_vq(&vp, &qp, 2);
    vp.cb_svd_rank = 2;
    CHECK(run(&p, &qp, &vp, 4, 96, Q, NULL, &r) == GQ_ERR_ARG && strstr(gq_last_error(), "--cb-svd"));
    default_vq(&vp, &qp, 1);
    vp.cb_svd_rank = 2, vp.cb_update = GQ_CB_UPDATE_GD;
    CHECK(run(&p, &qp, &vp, 4, 96, Q, NULL, &r) == GQ_ERR_ARG && strstr(gq_last_error(), "--cb-svd"));
    free(Q), free(D);
    free_problem(&p);
}

// [4] averages over several problems
static void test_quality(void) {
    double s_exact = 0, s_diag = 0, s_full = 0, s_vq = 0, s_gptq = 0;
    const int trials = 6;
    for (int tr = 0; tr < trials; tr++) {
        struct problem p = make_problem(32, 64, -1);
        size_t nw = (size_t)p.rows * p.cols;
        float *Q = malloc(sizeof(float) * nw);
        struct gq_gptvq_params vp;
        struct gq_quant_params qp;
        default_vq(&vp, &qp, 2);
        qp.block_size = 16;
        struct gq_vq_result r;
        // 2D, k = 16 (2 bits per value), l = 1024 (2 codebooks of 16x2 int8: 0.125 + scale)
        CHECK_OK(run(&p, &qp, &vp, 16, 1024, Q, NULL, &r));
        s_exact += r.rel_error;
        vp.feedback_diag = true;
        CHECK_OK(run(&p, &qp, &vp, 16, 1024, Q, NULL, &r));
        s_diag += r.rel_error;
        vp.feedback_diag = false, vp.full_subhessian = true;
        CHECK_OK(run(&p, &qp, &vp, 16, 1024, Q, NULL, &r));
        s_full += r.rel_error;
        vp.full_subhessian = false, vp.cb_update = GQ_CB_UPDATE_EXACT;
        CHECK_OK(run(&p, &qp, &vp, 16, 1024, Q, NULL, &r));
        s_vq += r.rel_error;
        // GPTQ W2 with one scale+zero (2 × 16 bits) per 64-column row = 2.5 bpv > GPTVQ's
        struct gq_quant_params g;
        gq_quant_params_default(&g);
        g.wbits = 2, g.group_size = 64, g.act_order = true;
        struct gq_gptq_result gr = {0};
        memcpy(Q, p.W, sizeof(float) * nw);
        CHECK_OK(gq_gptq_quantize(Q, p.rows, p.cols, p.H, &g, &gr));
        s_gptq += gr.rel_error;
        free(Q);
        free_problem(&p);
    }
    fprintf(stderr,
            "  [4] mean rel. error over %d problems: 2D exact feedback %.4f, diag feedback %.4f, full sub-Hessian "
            "%.4f, + exact update %.4f; GPTQ W2 (2.5 bpv) %.4f\n",
            trials, s_exact / trials, s_diag / trials, s_full / trials, s_vq / trials, s_gptq / trials);
    CHECK(s_exact < s_diag);
    CHECK(s_vq < s_exact);
    CHECK(s_vq < s_gptq);
}

// [5]
static void test_bad_input(void) {
    struct problem p = make_problem(8, 12, -1);
    float *Q = malloc(sizeof(float) * 96);
    struct gq_gptvq_params vp;
    struct gq_quant_params qp;
    default_vq(&vp, &qp, 8);
    struct gq_vq_result r;
    CHECK(run(&p, &qp, &vp, 4, 96, Q, NULL, &r) == GQ_ERR_ARG); // 12 columns, d = 8
    CHECK(strstr(gq_last_error(), "multiple of 8") != NULL);
    default_vq(&vp, &qp, 2);
    p.W[13] = NAN;
    struct gq_vq_config cfg = {.d = 2, .k = 4, .l = 96};
    memcpy(Q, p.W, sizeof(float) * 96);
    CHECK(gq_gptvq_quantize(Q, 8, 12, p.H, &qp, &vp, &cfg, 1, NULL, &r) == GQ_ERR_NUMERIC);
    CHECK(memcmp(Q, p.W, 13 * sizeof(float)) == 0); // untouched
    free(Q);
    free_problem(&p);
}

static void or_bytes(void *dst, const void *src, size_t n) {
    for (size_t i = 0; i < n; i++) ((uint8_t *)dst)[i] |= ((const uint8_t *)src)[i];
}

// [7]
static void test_slabs(void) {
    struct problem p = make_problem(96, 48, 7);
    const size_t nw = (size_t)p.rows * p.cols;
    float *Q = malloc(sizeof(float) * nw), *Qa = malloc(sizeof(float) * nw), *Qb = malloc(sizeof(float) * nw);
    const int dense_max = gq_vq_dense_max;
    for (int opt = 0; opt < 5; opt++) {
        struct gq_gptvq_params vp;
        struct gq_quant_params qp;
        default_vq(&vp, &qp, 2);
        vp.cb_update = GQ_CB_UPDATE_EXACT, vp.slab_rows = 16;
        if (opt == 1) vp.norm_block = 16, gq_vq_dense_max = 0; // conjugate gradients per slab
        if (opt == 2) vp.stages = 2, vp.outlier_frac = 0.1;
        if (opt == 3) vp.cb_update = GQ_CB_UPDATE_GD;
        if (opt == 4) vp.cb_update = GQ_CB_UPDATE_NONE;
        struct gq_vq_config cfg = {.d = 2, .k = 16, .l = 128};
        const int ns = gq_gptvq_n_slabs(p.rows, p.cols, &vp, &cfg);
        CHECKF(ns >= 4, "opt %d: %d slabs", opt, ns);
        uint8_t even[GQ_VQ_MAX_SLABS] = {0}, odd[GQ_VQ_MAX_SLABS] = {0};
        for (int s = 0; s < ns; s++) (s % 2 ? odd : even)[s] = 1;
        struct gq_vq_tensor t, ta, tb;
        struct gq_vq_result *r = malloc(sizeof *r), *ra = malloc(sizeof *ra), *rb = malloc(sizeof *rb);
        memcpy(Q, p.W, sizeof(float) * nw), memcpy(Qa, p.W, sizeof(float) * nw), memcpy(Qb, p.W, sizeof(float) * nw);
        CHECK_OK(gq_gptvq_quantize(Q, p.rows, p.cols, p.H, &qp, &vp, &cfg, 7, &t, r));
        cfg.slab_own = even;
        CHECK_OK(gq_gptvq_quantize(Qa, p.rows, p.cols, p.H, &qp, &vp, &cfg, 7, &ta, ra));
        cfg.slab_own = odd;
        CHECK_OK(gq_gptvq_quantize(Qb, p.rows, p.cols, p.H, &qp, &vp, &cfg, 7, &tb, rb));
        CHECK(r->n_slab == ns && ra->n_slab == ns);
        CHECK(!memcmp(Qa, p.W, sizeof(float) * nw)); // a part: W untouched
        const size_t nv = (size_t)(t.cols - t.n_out) / t.d, ng = (size_t)t.stages * t.n_rt * t.n_ct;
        or_bytes(ta.cb, tb.cb, sizeof(float) * ng * t.k * t.d);
        or_bytes(ta.cb_scale, tb.cb_scale, sizeof(float) * ng);
        or_bytes(ta.idx, tb.idx, sizeof(uint16_t) * t.stages * t.rows * nv);
        or_bytes(ta.outl, tb.outl, sizeof(uint16_t) * t.rows * t.n_out);
        if (t.norm_block) {
            or_bytes(ta.sint, tb.sint, (size_t)t.rows * t.n_nblk);
            or_bytes(ta.norm, tb.norm, sizeof *t.norm * t.n_rt * t.n_ct);
        }
        or_bytes(ra->slab, rb->slab, sizeof ra->slab[0] * ns);
        CHECK_OK(gq_gptvq_finish(&ta, Qa, ra));
        CHECKF(!memcmp(Q, Qa, sizeof(float) * nw), "opt %d: merged halves decode differently", opt);
        CHECK(!memcmp(t.cb, ta.cb, sizeof(float) * ng * t.k * t.d) && !memcmp(t.idx, ta.idx, sizeof(uint16_t) * t.stages * t.rows * nv));
        CHECKF(ra->objective == r->objective && ra->objective_pass == r->objective_pass,
               "opt %d: merged objective %.17g vs %.17g", opt, ra->objective, r->objective);
        // the slabs' objectives add up to the matrix's (rows are independent)
        float *Wz = malloc(sizeof(float) * nw);
        memcpy(Wz, p.W, sizeof(float) * nw);
        for (int c = 0; c < p.cols; c++)
            if (p.H[c * p.cols + c] == 0)
                for (int rr = 0; rr < p.rows; rr++) Wz[rr * p.cols + c] = 0;
        double direct = objective(Wz, Q, p.H, p.rows, p.cols, 0);
        CHECKF(fabs(direct - r->objective) <= 1e-9 * direct, "opt %d: objective %.12g, slabs' sum %.12g", opt, direct,
               r->objective);
        if (opt == 4) { // [1] through the slabs: the pass's greedy sum is the stored tensor's error
            float *Hd = malloc(sizeof(float) * p.cols * p.cols);
            memcpy(Hd, p.H, sizeof(float) * p.cols * p.cols);
            for (int c = 0; c < p.cols; c++)
                if (Hd[c * p.cols + c] == 0) Hd[c * p.cols + c] = 1;
            double od = objective(Wz, Q, Hd, p.rows, p.cols, r->damp_abs);
            CHECKF(fabs(od - r->greedy) <= 1e-8 * od, "slabs: objective %.12g vs greedy sum %.12g", od, r->greedy);
            free(Hd);
        }
        int kept = 0;
        for (int s = 0; opt < 4 && s < ns; s++) {
            CHECK(r->slab[s].objective <= r->slab[s].objective_pass);
            kept += r->slab[s].update_kept;
        }
        CHECKF(kept >= 1 || opt == 4, "opt %d: no slab kept its update", opt);
        free(Wz), free(r), free(ra), free(rb);
        gq_vq_tensor_free(&t), gq_vq_tensor_free(&ta), gq_vq_tensor_free(&tb);
        gq_vq_dense_max = dense_max;
    }
    struct gq_gptvq_params vp;
    struct gq_quant_params qp;
    default_vq(&vp, &qp, 2);
    struct gq_vq_config cfg = {.d = 2, .k = 16, .l = 128};
    CHECK(gq_gptvq_n_slabs(p.rows, p.cols, &vp, &cfg) == 1); // slab_rows 0: the whole matrix
    free(Q), free(Qa), free(Qb);
    free_problem(&p);
}

// Tiling: 2D row tiles get at least 16 rows where the budget allows it
// (quant/gptvq.c tall_tiles), other dimensions keep the widest column tiles.
// 64 x 512, k 16, l 1024: 32 groups; the widest tiles (2 x 256 columns)
// would have 4 rows, 8 x 64 columns have 16 (2D); 1D keeps 2 x 16.
static void test_tiling(void) {
    struct problem p = make_problem(64, 512, -1);
    float *Q = malloc(sizeof(float) * 64 * 512);
    for (int d = 1; d <= 2; d++) {
        struct gq_gptvq_params vp;
        struct gq_quant_params qp;
        default_vq(&vp, &qp, d);
        vp.em_iters = 3;
        struct gq_vq_tensor t;
        struct gq_vq_result res;
        CHECK_OK(run(&p, &qp, &vp, 16, 1024, Q, &t, &res));
        const int want_ct = d == 2 ? 8 : 2, want_rt = d == 2 ? 4 : 16;
        CHECKF(t.n_ct == want_ct && t.n_rt == want_rt, "d %d: %d x %d tiles, expected %d x %d", d, t.n_ct, t.n_rt, want_ct,
               want_rt);
        gq_vq_tensor_free(&t);
    }
    free(Q), free_problem(&p);
}

// --vq-dim's default (gq_vq_auto_dim): 4 exactly where the budget leaves 2
// index bits per value and the smallest matrix holds at least half a 4-D
// group (l = 256·4·8 / overhead weights), with every width a multiple of 4;
// else 2 (SmolLM2: k and v hold 110592 weights, l is 131072).
static void test_auto_dim(void) {
    struct gq_gptvq_params v = {.cb_format = GQ_CB_INT8, .norm_block = 64};
    struct gq_vq_config c;
    CHECK_OK(gq_vq_config_from_bpv(2.125, 4, 0, 0, v.cb_format, v.norm_block, 0, &c));
    const int64_t l = c.l; // 2.125 with normalisation: 0.0625 bpv left for codebooks
    CHECKF(l == 131072, "4D 2.125 norm 64: l %lld", (long long)l);
    CHECK(gq_vq_auto_dim(&v, 2.125, l / 2, true) == 4);
    CHECK(gq_vq_auto_dim(&v, 2.125, 110592, true) == 4);     // SmolLM2's k and v
    CHECK(gq_vq_auto_dim(&v, 2.125, l / 2 - 1, true) == 2);  // less than half a group
    CHECK(gq_vq_auto_dim(&v, 2.125, 4096, true) == 2);       // stories260K's 64 x 64
    CHECK(gq_vq_auto_dim(&v, 2.125, l, false) == 2);         // a width not a multiple of 4
    CHECK(gq_vq_auto_dim(&v, 3.0, 1 << 30, true) == 4);  // 3.0: still 2 index bits
    CHECK(gq_vq_auto_dim(&v, 3.125, 1 << 30, true) == 2); // 3 index bits: 4D would be k 4096
    CHECK(gq_vq_auto_dim(&v, 2.0, 1 << 30, true) == 2);  // 1 index bit
    CHECK(gq_vq_auto_dim(&v, 4.125, 1 << 30, true) == 2);
    v.norm_block = 0;
    CHECK(gq_vq_auto_dim(&v, 2.125, 32768, true) == 4); // without normalisation l = 65536
    CHECK(gq_vq_auto_dim(&v, 2.125, 32767, true) == 2);
    v.norm_block = 2; // not a multiple of 4: no 4-D configuration
    CHECK(gq_vq_auto_dim(&v, 2.125, 1 << 30, true) == 2);
}

int main(void) {
    double t0 = gq_time_s();
    test_auto_dim();
    test_slabs();
    test_identity_and_decode();
    test_codebook_update();
    test_quality();
    test_bad_input();
    test_codebook_svd();
    test_tiling(); // (last: its random problem would change the others')
    fprintf(stderr, "%.2f s\n", gq_time_s() - t0);
    return test_done("test_gptvq");
}
