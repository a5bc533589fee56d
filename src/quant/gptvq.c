// gptvq.c - GPTVQ (seed paper 003, Algorithm 1) on one weight matrix:
// d columns at a time, one codebook per group, GPTQ error feedback.
//
// Error feedback for d columns at once. With U the upper Cholesky factor of
// the (damped, permuted) H⁻¹, the inverse Hessian of the columns not yet
// quantized, restricted to the d columns S about to be quantized and the
// columns R right of them, is
//     [H⁻¹]_SS = U_SSᵀ U_SS,   [H⁻¹]_SR = U_SSᵀ U_SR.
// The OBS update for quantizing S jointly with error e = w_S − q_S (a row) is
//     w_R −= e [H⁻¹]_SS⁻¹ [H⁻¹]_SR = (e U_SS⁻¹) U_SR,
// so err = e U_SS⁻¹ (a d×d triangular solve) replaces GPTQ's e / U_qq and the
// lazy batch update W[:, i2:] −= Err U[i1:i2, i2:] is unchanged. The increase
// of the objective is ‖e U_SS⁻¹‖² = eᵀ [H⁻¹]_SS⁻¹ e, which is why
// --full-subhessian assigns with the metric M = (U_SSᵀU_SS)⁻¹; the default
// metric is its diagonal approximation D = diag(1/[H⁻¹]_jj) (paper Eq. 4),
// with [H⁻¹]_jj = (U_SSᵀU_SS)_jj of the reduced inverse.
// --feedback diag reproduces the reference code: err_j = e_j / U_jj (the
// coupling inside the d×d block dropped) and D_j = 1/U_jj².
//
// Groups: see gq_vq_tensor in vq.h. A column tile's codebooks are fitted (EM)
// when the tile is reached, from the weights as updated by every earlier
// column; blocks never straddle a tile boundary, so every pending lazy update
// has been applied by then.
//
// Codebook update (paper §2.2, "codebook update"): with the assignments
// fixed, Q is linear in the codebook entries θ, so tr((W−Q)H(W−Q)ᵀ) is a
// convex quadratic Σ_r (y_r − A_r θ)ᵀ H (y_r − A_r θ). Rows of different row
// tiles share no entry, so the normal equations G θ = b are block diagonal by
// row tile: G = Σ_r A_rᵀ H A_r is built directly (entry (a_p, a_p') gets
// σ_p σ_p' H_pp' for the entries a the positions p of a row select) and
// solved by Cholesky (EXACT). GD (the paper's variant) is steepest descent
// with exact line search, matrix-free: one GEMM (rows × n × n) for the
// gradient and one for the step. Either result is rounded to the codebook
// format again and kept only when the objective drops: per slab (below),
// each slab deciding for its own rows.
#include "backend/backend.h"
#include "quant/vq.h"
#include "util/common.h"

#include <lapacke.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define TILE_MAX_COLS 256
// EXACT codebook update: dense normal equations (Cholesky) up to this many
// unknowns per row tile, conjugate gradients (at most GQ_VQ_CG_MAX_ITERS
// GEMMs) above, where the dense system would cost O(m³) time and m² memory.
int gq_vq_dense_max = 3072;
// G is only semi-definite when entries always occur together (a residual
// stage's centroid used only under one first-stage centroid: +δ on one, −δ
// on the other leaves Q unchanged). Both solvers minimise
// f(θ) + ε‖θ − θ_pass‖² with ε = GQ_VQ_RIDGE · max diag G, which is definite
// and keeps such directions at their pass values instead of letting them
// drift to large cancelling values that int8 rounding would destroy.
#define GQ_VQ_RIDGE 1e-10
#define GQ_VQ_CG_MAX_ITERS 200
// CG stops when rᵀM⁻¹r has fallen by this factor. The objective still to
// gain is then of order 1e-8 of the update's whole gain (rᵀM⁻¹r falls about
// 10x per iteration with the block-Jacobi preconditioner), far below what
// rounding the codebooks to int8 (or fp16, or even f32) costs: on a 1536 x
// 576 layer (4D 2.25 int8, 2.5 fp16 and f32) the final error agrees to 8
// digits with the 1e-14 stop used before, in half the iterations (36 -> 19).
#define GQ_VQ_CG_TOL 1e-8

// ---------------------------------------------------------------------------
// Tiling: n_ct column tiles × n_rt row tiles with about l weights each.
// First rule: the most groups within the budget, equal tiles of exactly l
// weights preferred. Where that cuts the vectors of a row into tiles that
// are not equal multiples of the decode kernels' unit (16 vectors, 32 for
// d <= 2 with k <= 16: qmatmul.h), and an aligned tiling exists within a
// quarter of the budget, the aligned one closest to the budget is taken
// (e.g. 4D k 256 on a 576-wide matrix: 3 tiles of 48 vectors instead of 13
// ragged ones of 11): the decode GEMVs run them at full speed.

static bool tiles_aligned(int n_vec, int d, int k, int ct) {
    const int unit = d <= 2 && k <= 16 ? 32 : 16;
    return n_vec % ct == 0 && (n_vec / ct) % unit == 0 && (n_vec / ct) * d <= TILE_MAX_COLS;
}

// The aligned tiling with ct >= ct0 column tiles and row tiles of at least
// min_rows rows whose group count is closest to target, within a quarter of
// it (ties: under it, then fewer column tiles); unchanged if there is none.
static void closest_aligned(int rows, int n_vec, int d, int k, int64_t target, int ct0, int min_rows, int *n_ct,
                            int *n_rt) {
    int64_t best_diff = -1;
    for (int ct = ct0; ct <= n_vec; ct++) {
        if (!tiles_aligned(n_vec, d, k, ct)) continue;
        for (int up = 0; up < 2; up++) {
            int64_t rt = target / ct + up;
            if (rt > rows) rt = rows;
            if (rt < 1) rt = 1;
            if (rows / rt < min_rows) continue;
            const int64_t diff = ct * rt > target ? ct * rt - target : target - ct * rt;
            if (4 * diff <= target && (best_diff < 0 || diff < best_diff)) best_diff = diff, *n_ct = ct, *n_rt = (int)rt;
        }
    }
}

static void budget_tiles(int rows, int n_vec, int d, int k, int64_t l, int *n_ct, int *n_rt) {
    const int64_t total = (int64_t)rows * n_vec * d;
    int64_t target = total / l;
    if (target < 1) target = 1;
    int min_ct = (n_vec * d + TILE_MAX_COLS - 1) / TILE_MAX_COLS;
    if (min_ct > target) min_ct = (int)target; // the budget forces tiles wider than 256
    if (min_ct < 1) min_ct = 1;
    int64_t best = -1;
    int best_ct = min_ct, best_rt = 1;
    bool best_exact = false;
    for (int ct = min_ct; ct <= n_vec && ct <= target; ct++) {
        int64_t rt = target / ct;
        if (rt > rows) rt = rows;
        if (rt < 1) rt = 1;
        int64_t prod = ct * rt;
        // exact: equal tiles of exactly l weights
        bool exact = n_vec % ct == 0 && rows % rt == 0 && (int64_t)(rows / rt) * (n_vec / ct) * d == l;
        if (prod > best || (prod == best && exact && !best_exact)) {
            best = prod, best_ct = ct, best_rt = (int)rt, best_exact = exact;
        }
    }
    *n_ct = best_ct, *n_rt = best_rt;
    if (!tiles_aligned(n_vec, d, k, best_ct)) closest_aligned(rows, n_vec, d, k, target, 1, 1, n_ct, n_rt);
}

// 2D: row tiles of at least TILE_MIN_ROWS rows where the matrix has them
// (the decode GEMVs build a row tile's tables once for its rows and share x
// loads among 4 rows: 2D k 16 at 2.25 bpv on SmolLM2 went from 256-column
// tiles of 5-6 rows to 64-column ones of 21-22, GEMVs 13 -> 19 GB/s, decode
// 358-365 -> 427-447 t/s, LC-512 81.18 -> 79.93; 1D k 16 at 4.125 got slower
// so, 391 -> 351, and keeps its tiles): the aligned tiling with narrower
// column tiles and row tiles that tall whose group count is closest to the
// budget (within a quarter) replaces budget_tiles' shorter one.
#define TILE_MIN_ROWS 16
static void tall_tiles(int rows, int n_vec, int d, int k, int64_t l, int *n_ct, int *n_rt) {
    if (d != 2 || rows / *n_rt >= TILE_MIN_ROWS || rows < TILE_MIN_ROWS) return;
    const int64_t total = (int64_t)rows * n_vec * d, target = total / l > 0 ? total / l : 1;
    closest_aligned(rows, n_vec, d, k, target, *n_ct + 1, TILE_MIN_ROWS, n_ct, n_rt);
}

static void pick_tiles(int rows, int n_vec, int d, int k, int64_t l, int *n_ct, int *n_rt) {
    budget_tiles(rows, n_vec, d, k, l, n_ct, n_rt), tall_tiles(rows, n_vec, d, k, l, n_ct, n_rt);
}

// ---------------------------------------------------------------------------

struct vq_work {
    double *Wd;     // (rows, n) working weights, position order
    double *Err;    // (rows, B)
    double *metric; // (n_vec, d, d) assignment metric per slot
    double *Uinv;   // (n_vec, d, d) U_SS⁻¹ per slot (exact feedback)
    float *Qp;      // (rows, n) quantized values, position order
    double *gsum;   // (rows) Σ ‖err‖² of each row: the greedy objective increments
};

static void work_free(struct vq_work *w) {
    free(w->Wd), free(w->Err), free(w->metric), free(w->Uinv), free(w->Qp), free(w->gsum);
}

// Inverse of an upper-triangular d×d matrix (row-major), in place.
static bool triu_inverse(double *A, int d) {
    for (int i = 0; i < d; i++)
        if (!(A[i * d + i] != 0) || !isfinite(A[i * d + i])) return false;
    return LAPACKE_dtrtri(LAPACK_ROW_MAJOR, 'U', 'N', d, A, d) == 0;
}

// Slot metrics and U_SS⁻¹ from U.
static enum gq_status slot_metrics(const double *U, int n, int n_out, int d, int n_vec, const struct gq_gptvq_params *vp,
                                   double *metric, double *Uinv) {
    for (int v = 0; v < n_vec; v++) {
        int i = n_out + v * d;
        double S[GQ_VQ_MAX_DIM * GQ_VQ_MAX_DIM] = {0}, Hs[GQ_VQ_MAX_DIM * GQ_VQ_MAX_DIM] = {0};
        for (int a = 0; a < d; a++)
            for (int b = a; b < d; b++) S[a * d + b] = U[(size_t)(i + a) * n + i + b];
        for (int a = 0; a < d; a++) // Hs = U_SSᵀ U_SS: reduced [H⁻¹]_SS
            for (int b = 0; b < d; b++) {
                double s = 0;
                for (int t = 0; t <= (a < b ? a : b); t++) s += S[t * d + a] * S[t * d + b];
                Hs[a * d + b] = s;
            }
        double *M = metric + (size_t)v * d * d, *Ui = Uinv + (size_t)v * d * d;
        memset(M, 0, sizeof(double) * d * d);
        memcpy(Ui, S, sizeof(double) * d * d);
        if (!triu_inverse(Ui, d))
            return gq_fail(GQ_ERR_NUMERIC, "gptvq: singular Cholesky block at column position %d", i);
        if (vp->feedback_diag) {
            for (int a = 0; a < d; a++) M[a * d + a] = 1.0 / (S[a * d + a] * S[a * d + a]);
        } else if (vp->full_subhessian) { // (U_SSᵀU_SS)⁻¹ = U_SS⁻¹ U_SS⁻ᵀ
            for (int a = 0; a < d; a++)
                for (int b = 0; b < d; b++) {
                    double s = 0;
                    for (int t = 0; t < d; t++) s += Ui[a * d + t] * Ui[b * d + t];
                    M[a * d + b] = s;
                }
        } else {
            for (int a = 0; a < d; a++) M[a * d + a] = 1.0 / Hs[a * d + a];
        }
    }
    return GQ_OK;
}

// Codebooks of the groups (rt, ct) of one column tile from the current
// weights: per group its normalisation and points (group_prep), then per
// stage the seeds (per group), the EM rounds of all the tile's groups in one
// backend call (vq_em: the GPU runs them side by side) and the codebooks'
// rounding (group_stage_done; the next stage fits the residual).
struct group_em {
    double *x, *s2, *C;
    int32_t *idx;
    int64_t np;
};

static void group_free(struct group_em *g) {
    free(g->x), free(g->s2), free(g->C), free(g->idx);
    memset(g, 0, sizeof *g);
}

static enum gq_status group_prep(struct gq_vq_tensor *t, const struct gq_vq_maps *mp, const struct vq_work *w,
                                 const struct gq_gptvq_params *vp, int rt, int ct, struct group_em *g,
                                 struct gq_vq_em_job *job) {
    const int d = t->d, n = t->cols, k = t->k;
    const int r0 = t->rt_start[rt], r1 = t->rt_start[rt + 1], nr = r1 - r0;
    const int v0 = (t->ct_start[ct] - t->n_out) / d, v1 = (t->ct_start[ct + 1] - t->n_out) / d, nvs = v1 - v0;
    const int64_t np = (int64_t)nr * nvs;
    if (t->norm_block) {
        uint8_t *sint = malloc((size_t)nr * t->n_nblk);
        if (!sint) return gq_fail(GQ_ERR_NOMEM, "gptvq: normalisation codes");
        int width = t->ct_start[ct + 1] - t->ct_start[ct], blk0 = mp->vec_blk[v0];
        int nb = (width + t->norm_block - 1) / t->norm_block;
        struct gq_vq_norm nm = gq_vq_norm_fit(w->Wd + (size_t)r0 * n + t->ct_start[ct], nr, width, n, t->norm_block, sint);
        t->norm[(size_t)rt * t->n_ct + ct] = nm;
        for (int r = 0; r < nr; r++)
            memcpy(t->sint + (size_t)(r0 + r) * t->n_nblk + blk0, sint + (size_t)r * nb, nb);
        free(sint);
    }
    g->np = np;
    g->x = malloc(sizeof(double) * np * d), g->s2 = malloc(sizeof(double) * np);
    g->C = malloc(sizeof(double) * k * d);
    g->idx = malloc(sizeof(int32_t) * np);
    if (!g->x || !g->s2 || !g->C || !g->idx) {
        group_free(g);
        return gq_fail(GQ_ERR_NOMEM, "gptvq: EM buffers for %lld points", (long long)np);
    }
    // Points slot-major: slot v (columns of vector v0 + v), then rows.
    for (int v = 0; v < nvs; v++)
        for (int r = 0; r < nr; r++) {
            int64_t i = (int64_t)v * nr + r;
            double s = gq_vq_vec_scale(t, mp, r0 + r, v0 + v);
            const double *src = w->Wd + (size_t)(r0 + r) * n + t->n_out + (size_t)(v0 + v) * d;
            for (int j = 0; j < d; j++) g->x[i * d + j] = src[j] / s;
            g->s2[i] = s * s;
        }
    *job = (struct gq_vq_em_job){
        .D = {.d = d, .n_slots = nvs, .per_slot = nr, .x = g->x, .s2 = t->norm_block ? g->s2 : NULL,
              .metric = w->metric + (size_t)v0 * d * d, .diag = !vp->full_subhessian},
        .C = g->C,
        .idx = g->idx,
    };
    return GQ_OK;
}

static uint64_t group_seed(uint64_t seed, int rt, int ct, int stage) {
    uint64_t sd = seed ^ ((uint64_t)(rt + 1) * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)(ct + 1) << 32) ^ (uint64_t)stage;
    return gq_splitmix64(&sd);
}

static void group_stage_done(struct gq_vq_tensor *t, const struct group_em *g, int stage, int rt, int ct) {
    const int d = t->d, k = t->k;
    size_t gi = ((size_t)stage * t->n_rt + rt) * t->n_ct + ct;
    // codebook SVD: the pass keeps exact codebooks; svd_compress stores them
    gq_cb_round(g->C, k * d, t->svd_rank ? GQ_CB_F32 : t->cb_format, NULL, NULL, &t->cb_scale[gi]);
    float *cb = t->cb + gi * k * d;
    for (int i = 0; i < k * d; i++) cb[i] = (float)g->C[i];
    if (stage + 1 < t->stages) // the next stage fits the residual of this one
        for (int64_t i = 0; i < g->np; i++)
            for (int j = 0; j < d; j++) g->x[i * d + j] -= g->C[(size_t)g->idx[i] * d + j];
}

static enum gq_status init_tile(struct gq_vq_tensor *t, const struct gq_vq_maps *mp, const struct vq_work *w,
                                const struct gq_gptvq_params *vp, uint64_t seed, int rt_off, int ct, int64_t *em_iters,
                                int64_t *reseeded) {
    const int nrt = t->n_rt;
    struct group_em *g = calloc((size_t)nrt, sizeof *g);
    struct gq_vq_em_job *jobs = calloc((size_t)nrt, sizeof *jobs);
    if (!g || !jobs) {
        free(g), free(jobs);
        return gq_fail(GQ_ERR_NOMEM, "gptvq: EM jobs of %d groups", nrt);
    }
    enum gq_status st = GQ_OK;
#pragma omp parallel for schedule(dynamic, 1) if (nrt > 1)
    for (int rt = 0; rt < nrt; rt++) {
        enum gq_status s1 = group_prep(t, mp, w, vp, rt, ct, &g[rt], &jobs[rt]);
        if (s1 != GQ_OK) {
#pragma omp critical(gptvq_init_tile)
            st = s1;
        }
    }
    for (int stage = 0; stage < t->stages && st == GQ_OK; stage++) {
#pragma omp parallel for schedule(dynamic, 1) if (nrt > 1)
        for (int rt = 0; rt < nrt; rt++) {
            enum gq_status s1 = gq_vq_seed(&jobs[rt].D, t->k, vp->em_init, group_seed(seed, rt_off + rt, ct, stage), g[rt].C);
            if (s1 != GQ_OK) {
#pragma omp critical(gptvq_init_tile)
                st = s1;
            }
        }
        if (st == GQ_OK) st = gq_be()->vq_em(jobs, nrt, t->k, vp->em_iters);
        if (st != GQ_OK) break;
        for (int rt = 0; rt < nrt; rt++) *em_iters += jobs[rt].st.iters, *reseeded += jobs[rt].st.n_reseeded;
#pragma omp parallel for schedule(static) if (nrt > 1)
        for (int rt = 0; rt < nrt; rt++) group_stage_done(t, &g[rt], stage, rt, ct);
    }
    for (int rt = 0; rt < nrt; rt++) group_free(&g[rt]);
    free(g), free(jobs);
    return st;
}

// One block [i1, i2) of VQ positions inside one column tile: assignment, in-
// block feedback; the caller applies the lazy update right of i2.
static void quantize_block(struct gq_vq_tensor *t, const struct gq_vq_maps *mp, struct vq_work *w, const double *U,
                           const struct gq_gptvq_params *vp, int i1, int i2, int B, const double *P,
                           const double *nrm) {
    const int n = t->cols, d = t->d, k = t->k, nv = (n - t->n_out) / d;
    const int va = (i1 - t->n_out) / d, vb = (i2 - t->n_out) / d, nsl = vb - va;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < t->rows; r++) {
        double *wr = w->Wd + (size_t)r * n, *e = w->Err + (size_t)r * B;
        const int rt = mp->row_rt[r];
        for (int v = va; v < vb; v++) {
            const int i = t->n_out + v * d;
            double xn[GQ_VQ_MAX_DIM], res[GQ_VQ_MAX_DIM], ev[GQ_VQ_MAX_DIM], er[GQ_VQ_MAX_DIM];
            float q[GQ_VQ_MAX_DIM];
            double s = gq_vq_vec_scale(t, mp, r, v);
            for (int j = 0; j < d; j++) xn[j] = wr[i + j] / s;
            for (int stage = 0; stage < t->stages; stage++) {
                size_t o = ((size_t)(stage * t->n_rt + rt) * nsl + (v - va)) * k;
                int m = gq_vq_nearest(xn, d, P + o * d, nrm + o, k);
                t->idx[((size_t)stage * t->rows + r) * nv + v] = (uint16_t)m;
                if (stage + 1 < t->stages) {
                    const float *c = gq_vq_cb(t, stage, rt, mp->vec_ct[v]) + (size_t)m * d;
                    for (int j = 0; j < d; j++) res[j] = xn[j] - c[j], xn[j] = res[j];
                }
            }
            gq_vq_vec_decode(t, mp, r, v, q);
            for (int j = 0; j < d; j++) {
                w->Qp[(size_t)r * n + i + j] = q[j];
                ev[j] = wr[i + j] - q[j];
            }
            if (vp->feedback_diag) {
                for (int j = 0; j < d; j++) er[j] = ev[j] / U[(size_t)(i + j) * n + i + j];
            } else { // er = ev · U_SS⁻¹
                const double *Ui = w->Uinv + (size_t)v * d * d;
                for (int j = 0; j < d; j++) {
                    double acc = 0;
                    for (int a = 0; a <= j; a++) acc += ev[a] * Ui[a * d + j];
                    er[j] = acc;
                }
            }
            for (int j = 0; j < d; j++) {
                w->gsum[r] += er[j] * er[j];
                e[i - i1 + j] = er[j];
                const double *u = U + (size_t)(i + j) * n;
                for (int c = i + d; c < i2; c++) wr[c] -= er[j] * u[c];
            }
        }
    }
}

// Outlier positions [i1, i2) ⊂ [0, n_out): fp16 scalars with GPTQ feedback.
static void quantize_outliers(struct gq_vq_tensor *t, struct vq_work *w, const double *U, int i1, int i2, int B) {
    const int n = t->cols;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < t->rows; r++) {
        double *wr = w->Wd + (size_t)r * n, *e = w->Err + (size_t)r * B;
        for (int i = i1; i < i2; i++) {
            uint16_t h = gq_f32_to_f16((float)wr[i]);
            float q = gq_f16_to_f32(h);
            t->outl[(size_t)r * t->n_out + i] = h;
            w->Qp[(size_t)r * n + i] = q;
            double err = (wr[i] - q) / U[(size_t)i * n + i];
            w->gsum[r] += err * err;
            e[i - i1] = err;
            const double *u = U + (size_t)i * n;
            for (int c = i + 1; c < i2; c++) wr[c] -= err * u[c];
        }
    }
}

// ---------------------------------------------------------------------------
// Codebook update.

// Objective tr((Y − Qp)H(Y − Qp)ᵀ) in position order; Y, H: double.
// tr(E H Eᵀ) for E (rows, n): one symmetric GEMM into EH, then a dot
// product in a fixed order.
static double quad_form(const double *E, const double *Hp, int rows, int n, double *EH) {
    if (gq_be()->dsymm_right(rows, n, Hp, E, EH) != GQ_OK) return NAN;
    double obj = 0;
    for (size_t i = 0; i < (size_t)rows * n; i++) obj += E[i] * EH[i];
    return obj;
}

// Objective tr((Y − Qp)H(Y − Qp)ᵀ) in position order; tmp, tmp2 (rows, n).
static double objective_pos(const double *Y, const float *Qp, const double *Hp, int rows, int n, double *tmp,
                            double *tmp2) {
    for (size_t i = 0; i < (size_t)rows * n; i++) tmp[i] = Y[i] - Qp[i];
    return quad_form(tmp, Hp, rows, n, tmp2);
}

// θ (stages, n_rt, n_ct, k, d) in the cb layout. Entry of row r, vector v,
// coordinate j, stage s and the coefficient σ (normalisation scale).
static inline size_t theta_index(const struct gq_vq_tensor *t, const struct gq_vq_maps *mp, int stage, int r, int v,
                                 int j) {
    const size_t nv = (size_t)(t->cols - t->n_out) / t->d;
    size_t g = ((size_t)stage * t->n_rt + mp->row_rt[r]) * t->n_ct + mp->vec_ct[v];
    return (g * t->k + t->idx[((size_t)stage * t->rows + r) * nv + v]) * t->d + j;
}

// Q(θ) over the VQ positions (outlier positions 0), double, position order.
static void lookup_theta(const struct gq_vq_tensor *t, const struct gq_vq_maps *mp, const double *theta, double *Q) {
    const int n = t->cols, d = t->d, nv = (n - t->n_out) / d;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < t->rows; r++) {
        double *q = Q + (size_t)r * n;
        for (int p = 0; p < t->n_out; p++) q[p] = 0;
        for (int v = 0; v < nv; v++) {
            double s = gq_vq_vec_scale(t, mp, r, v);
            for (int j = 0; j < d; j++) {
                double c = 0;
                for (int st = 0; st < t->stages; st++) c += theta[theta_index(t, mp, st, r, v, j)];
                q[t->n_out + v * d + j] = c * s;
            }
        }
    }
}

// g = Aᵀ R: g[a] = Σ over (r, p) selecting a of σ R[r, p]. Sequential (fixed order).
static void scatter_theta(const struct gq_vq_tensor *t, const struct gq_vq_maps *mp, const double *R, double *g,
                          size_t m) {
    const int n = t->cols, d = t->d, nv = (n - t->n_out) / d;
    memset(g, 0, sizeof(double) * m);
    for (int r = 0; r < t->rows; r++)
        for (int v = 0; v < nv; v++) {
            double s = gq_vq_vec_scale(t, mp, r, v);
            for (int j = 0; j < d; j++)
                for (int st = 0; st < t->stages; st++)
                    g[theta_index(t, mp, st, r, v, j)] += s * R[(size_t)r * n + t->n_out + v * d + j];
        }
}

// The normal equations of one row tile: G (gq_vq_gram, vq.h, through the
// backend) and b = Σ_r A_rᵀ (H y_r).
struct tile_sys {
    size_t m;
    double *G;   // (m, m)
    double *bv;  // (m)
    double *sig; // (rows of the largest row tile, nv) normalisation scales, or NULL
    int *vt_start; // (n_ct + 1) first vector of each column tile
    struct gq_vq_gram gram;
};

static void tile_sys_free(struct tile_sys *s) {
    free(s->G), free(s->bv), free(s->sig), free(s->vt_start);
    memset(s, 0, sizeof *s);
}

static enum gq_status tile_sys_init(const struct gq_vq_tensor *t, const double *Hp, struct tile_sys *s) {
    const int n = t->cols, nv = (n - t->n_out) / t->d;
    memset(s, 0, sizeof *s);
    int max_rows = 0;
    for (int rt = 0; rt < t->n_rt; rt++)
        if (t->rt_start[rt + 1] - t->rt_start[rt] > max_rows) max_rows = t->rt_start[rt + 1] - t->rt_start[rt];
    s->gram = (struct gq_vq_gram){.rows = max_rows, .nv = nv, .d = t->d, .k = t->k, .stages = t->stages,
                                  .n_ct = t->n_ct, .idx_stage = (size_t)t->rows * nv,
                                  .H = Hp + (size_t)t->n_out * n + t->n_out, .ldh = n};
    const size_t m = s->m = gq_vq_gram_m(&s->gram);
    size_t mm;
    if (!gq_mul_ok(m, m, &mm) || !gq_mul_ok(mm, sizeof(double), &mm))
        return gq_fail(GQ_ERR_NOMEM, "gptvq: codebook update system of %zu unknowns too large", m);
    s->G = malloc(mm), s->bv = malloc(sizeof(double) * m);
    s->vt_start = malloc(sizeof(int) * (size_t)(t->n_ct + 1));
    if (t->norm_block) s->sig = malloc(sizeof(double) * (size_t)max_rows * nv);
    if (!s->G || !s->bv || !s->vt_start || (t->norm_block && !s->sig)) {
        tile_sys_free(s);
        return gq_fail(GQ_ERR_NOMEM, "gptvq: codebook update system of %zu unknowns (%.1f MiB)", m,
                       (double)mm / 1048576.0);
    }
    for (int ct = 0; ct <= t->n_ct; ct++) s->vt_start[ct] = (t->ct_start[ct] - t->n_out) / t->d;
    s->gram.vt_start = s->vt_start;
    return GQ_OK;
}

static enum gq_status tile_sys_build(const struct gq_vq_tensor *t, const struct gq_vq_maps *mp, const double *HY, int rt,
                                     struct tile_sys *s) {
    const int n = t->cols, d = t->d, nv = (n - t->n_out) / d, S = t->stages;
    const size_t per_g = (size_t)t->k * d, m = s->m;
    const int r0 = t->rt_start[rt], r1 = t->rt_start[rt + 1];
    double *bv = s->bv;
    if (s->sig)
        for (int r = r0; r < r1; r++)
            for (int v = 0; v < nv; v++) s->sig[(size_t)(r - r0) * nv + v] = gq_vq_vec_scale(t, mp, r, v);
    s->gram.rows = r1 - r0, s->gram.idx = t->idx + (size_t)r0 * nv;
    s->gram.sig = s->sig;
    GQ_TRY(gq_be()->vq_gram(&s->gram, s->G));
    memset(bv, 0, sizeof(double) * m);
    for (int r = r0; r < r1; r++) // b = Σ_r A_rᵀ (H y_r)
        for (int v = 0; v < nv; v++) {
            double sc = gq_vq_vec_scale(t, mp, r, v);
            for (int j = 0; j < d; j++)
                for (int stg = 0; stg < S; stg++) {
                    size_t gi = theta_index(t, mp, stg, r, v, j);
                    size_t base = (((size_t)stg * t->n_rt + rt) * t->n_ct) * per_g;
                    bv[(size_t)stg * t->n_ct * per_g + (gi - base)] += sc * HY[(size_t)r * n + t->n_out + v * d + j];
                }
        }
    return GQ_OK;
}

// min xᵀGx − 2bᵀx + ε‖x − x0‖² (ε = GQ_VQ_RIDGE · max diag G); unknowns no
// weight touches (zero diagonal) keep x0. x (m) gets the solution; G and b are
// destroyed. *solved false (x untouched) when the Cholesky factorisation
// fails; an error only when the backend fails.
static enum gq_status ridge_solve(double *G, double *b, const double *x0, size_t m, double *x, bool *solved) {
    double dmax = 0;
    for (size_t a = 0; a < m; a++) dmax = fmax(dmax, G[a * m + a]);
    const double eps = GQ_VQ_RIDGE * dmax;
    for (size_t a = 0; a < m; a++)
        if (!(G[a * m + a] > 1e-14 * dmax)) {
            for (size_t c = 0; c < m; c++) G[a * m + c] = G[c * m + a] = 0;
            G[a * m + a] = 1, b[a] = x0[a];
        } else {
            G[a * m + a] += eps, b[a] += eps * x0[a];
        }
    int info = 0;
    *solved = false;
    GQ_TRY(gq_be()->dposv((int)m, G, b, &info));
    if (info) return GQ_OK;
    for (size_t a = 0; a < m; a++)
        if (!isfinite(b[a])) return GQ_OK;
    memcpy(x, b, sizeof(double) * m);
    *solved = true;
    return GQ_OK;
}

// Exact solve per row tile. theta in/out (current codebooks as double).
static enum gq_status update_exact(const struct gq_vq_tensor *t, const struct gq_vq_maps *mp, const double *Hp,
                                   const double *HY, double *theta) {
    const int S = t->stages;
    const size_t per_g = (size_t)t->k * t->d, tile = (size_t)t->n_ct * per_g;
    struct tile_sys sys;
    GQ_TRY(tile_sys_init(t, Hp, &sys));
    const size_t m = sys.m;
    const int nv = (t->cols - t->n_out) / t->d;
    double *cur = malloc(sizeof(double) * m), *x = malloc(sizeof(double) * m);
    if (!cur || !x) {
        free(cur), free(x), tile_sys_free(&sys);
        return gq_fail(GQ_ERR_NOMEM, "gptvq: codebook update");
    }
    enum gq_status st = GQ_OK;
    // H stays on the device for all row tiles (a no-op on the CPU)
    const double *Hv = sys.gram.H;
    const size_t h_len = (size_t)(nv * t->d - 1) * sys.gram.ldh + (size_t)nv * t->d;
    if (nv > 0) st = gq_be()->hold(Hv, sizeof(double) * h_len, false);
    for (int rt = 0; rt < t->n_rt && st == GQ_OK; rt++) {
        if ((st = tile_sys_build(t, mp, HY, rt, &sys)) != GQ_OK) break;
        for (int stg = 0; stg < S; stg++)
            memcpy(cur + stg * tile, theta + ((size_t)stg * t->n_rt + rt) * tile, sizeof(double) * tile);
        // failure: this row tile keeps its codebooks (semi-definite G from
        // entries that always co-occur); the objective check downstream holds.
        bool solved = false;
        if ((st = ridge_solve(sys.G, sys.bv, cur, m, x, &solved)) != GQ_OK) break;
        if (solved)
            for (int stg = 0; stg < S; stg++)
                memcpy(theta + ((size_t)stg * t->n_rt + rt) * tile, x + stg * tile, sizeof(double) * tile);
    }
    if (nv > 0) {
        enum gq_status rs = gq_be()->release(Hv);
        if (st == GQ_OK) st = rs;
    }
    free(cur), free(x), tile_sys_free(&sys);
    return st;
}

// ---------------------------------------------------------------------------
// Codebook SVD (paper App. H; d = 1, one stage). The pass leaves exact
// (unrounded) codebooks. Each codebook is sorted ascending (indices remapped),
// the (groups, k) stack C is factored by SVD and truncated to rank r:
// U = (UΣ)_r, V = V_r, C ≈ U Vᵀ. The paper then runs gradient descent on
// the factors; with the assignments fixed the objective is quadratic in U
// for fixed V and in V for fixed U, so we alternate EXACT least-squares
// solves instead (each one can only lower the objective): the U step is
// independent per row tile (n_ct·r unknowns from the tile's normal equations
// G, b of the full codebooks, projected through V), the V step (k·r unknowns)
// sums the projected systems of all row tiles. Then U is rounded per column
// (cb_format), V is refitted once to the rounded U, and rounded to fp16.

int gq_vq_svd_als_iters = 8;

// Full-codebook systems of all row tiles are cached when they fit in this
// many bytes, else rebuilt in every ALS round.
#define GQ_VQ_SVD_CACHE_BYTES ((size_t)512 << 20)

struct svd_als {
    const struct gq_vq_tensor *t;
    const struct gq_vq_maps *mp;
    const double *Hp, *HY;
    struct tile_sys sys;
    double *cache;     // (n_rt, m² + m) or NULL
    bool *cached;
    double *Gr, *br, *x0, *x, *GV; // scratch
    double *Gv, *bvv;  // (kr, kr), (kr): the V step's system
};

// G, b of row tile rt (from the cache when there is one).
static enum gq_status als_system(struct svd_als *a, int rt, const double **G, const double **b) {
    const size_t m = a->sys.m;
    if (a->cache && a->cached[rt]) {
        *G = a->cache + (size_t)rt * (m * m + m), *b = *G + m * m;
        return GQ_OK;
    }
    GQ_TRY(tile_sys_build(a->t, a->mp, a->HY, rt, &a->sys));
    *G = a->sys.G, *b = a->sys.bv;
    if (a->cache) {
        double *c = a->cache + (size_t)rt * (m * m + m);
        memcpy(c, a->sys.G, sizeof(double) * m * m), memcpy(c + m * m, a->sys.bv, sizeof(double) * m);
        a->cached[rt] = true;
    }
    return GQ_OK;
}

// One ALS round: the U step of every row tile (skipped when update_u is
// false), each followed by its contribution to the V step; then the V step.
static enum gq_status als_round(struct svd_als *a, double *u, double *v, bool update_u) {
    const struct gq_vq_tensor *t = a->t;
    const int k = t->k, r = t->svd_rank, nct = t->n_ct;
    const size_t m = a->sys.m, nr = (size_t)nct * r, kr = (size_t)k * r;
    memset(a->Gv, 0, sizeof(double) * kr * kr), memset(a->bvv, 0, sizeof(double) * kr);
    for (int rt = 0; rt < t->n_rt; rt++) {
        const double *G, *b;
        GQ_TRY(als_system(a, rt, &G, &b));
        double *ut = u + (size_t)rt * nct * r;
        if (update_u) {
            // θ[(ct, c)] = Σ_j v[c, j] u[ct, j]: Gr = Kᵀ G K, br = Kᵀ b
            for (size_t e = 0; e < m; e++) // GV = G K (m, nr)
                for (int bc = 0; bc < nct; bc++)
                    for (int j = 0; j < r; j++) {
                        double s2 = 0;
                        for (int c = 0; c < k; c++) s2 += G[e * m + (size_t)bc * k + c] * v[(size_t)c * r + j];
                        a->GV[e * nr + (size_t)bc * r + j] = s2;
                    }
            for (int ac = 0; ac < nct; ac++)
                for (int j = 0; j < r; j++) {
                    double *row = a->Gr + ((size_t)ac * r + j) * nr, bs = 0;
                    for (size_t f = 0; f < nr; f++) {
                        double s2 = 0;
                        for (int c = 0; c < k; c++) s2 += v[(size_t)c * r + j] * a->GV[((size_t)ac * k + c) * nr + f];
                        row[f] = s2;
                    }
                    for (int c = 0; c < k; c++) bs += v[(size_t)c * r + j] * b[(size_t)ac * k + c];
                    a->br[(size_t)ac * r + j] = bs;
                }
            memcpy(a->x0, ut, sizeof(double) * nr);
            bool solved = false;
            GQ_TRY(ridge_solve(a->Gr, a->br, a->x0, nr, a->x, &solved));
            if (solved) memcpy(ut, a->x, sizeof(double) * nr);
        }
        // V step: θ[(ct, c)] = Σ_j u[ct, j] v[c, j]
        for (size_t e = 0; e < m; e++) // GV = G J (m, kr): J[(bc, c'), (c', j')] = u[bc, j']
            for (int c2 = 0; c2 < k; c2++)
                for (int j2 = 0; j2 < r; j2++) {
                    double s2 = 0;
                    for (int bc = 0; bc < nct; bc++) s2 += G[e * m + (size_t)bc * k + c2] * ut[(size_t)bc * r + j2];
                    a->GV[e * kr + (size_t)c2 * r + j2] = s2;
                }
        for (int c = 0; c < k; c++)
            for (int j = 0; j < r; j++) {
                double *row = a->Gv + ((size_t)c * r + j) * kr, bs = 0;
                for (size_t f = 0; f < kr; f++) {
                    double s2 = 0;
                    for (int ac = 0; ac < nct; ac++) s2 += ut[(size_t)ac * r + j] * a->GV[((size_t)ac * k + c) * kr + f];
                    row[f] += s2;
                }
                for (int ac = 0; ac < nct; ac++) bs += ut[(size_t)ac * r + j] * b[(size_t)ac * k + c];
                a->bvv[(size_t)c * r + j] += bs;
            }
    }
    memcpy(a->x0, v, sizeof(double) * kr);
    bool solved = false;
    GQ_TRY(ridge_solve(a->Gv, a->bvv, a->x0, kr, a->x, &solved));
    if (solved) memcpy(v, a->x, sizeof(double) * kr);
    return GQ_OK;
}

static void als_free(struct svd_als *a) {
    tile_sys_free(&a->sys);
    free(a->cache), free(a->cached), free(a->Gr), free(a->br), free(a->x0), free(a->x), free(a->GV), free(a->Gv),
        free(a->bvv);
}

// Stores u, v (double) in the tensor's factor arrays and products; rounded
// per the format when `round` (U per column, V to fp16 / f32).
static void svd_store(struct gq_vq_tensor *t, double *u, double *v, bool round) {
    const int k = t->k, r = t->svd_rank;
    const size_t ng = (size_t)t->n_rt * t->n_ct;
    for (int j = 0; j < r; j++) t->svd_uscale[j] = 1;
    if (round) {
        double *col = malloc(sizeof(double) * (ng > (size_t)k ? ng : (size_t)k));
        for (int j = 0; j < r && col; j++) {
            for (size_t g = 0; g < ng; g++) col[g] = u[g * r + j];
            gq_cb_round(col, (int)ng, t->cb_format, NULL, NULL, &t->svd_uscale[j]);
            for (size_t g = 0; g < ng; g++) u[g * r + j] = col[g];
        }
        free(col);
        gq_cb_round(v, k * r, t->cb_format == GQ_CB_F32 ? GQ_CB_F32 : GQ_CB_FP16, NULL, NULL, NULL);
    }
    for (size_t i = 0; i < ng * r; i++) t->svd_u[i] = (float)u[i];
    for (size_t i = 0; i < (size_t)k * r; i++) t->svd_v[i] = (float)v[i];
    gq_vq_svd_codebooks(t);
}

// Y, Hp: the objective's data; Q, tmp, tmp2: scratch for the truncation's
// objective (res->objective_svd_trunc).
static enum gq_status svd_compress(struct gq_vq_tensor *t, const struct gq_vq_maps *mp, const double *Hp,
                                   const double *HY, bool als, const double *Y, float *Q, double *tmp, double *tmp2,
                                   struct gq_vq_result *res) {
    const int k = t->k, r = t->svd_rank, nv = t->cols - t->n_out;
    const size_t ng = (size_t)t->n_rt * t->n_ct, mn = ng < (size_t)k ? ng : (size_t)k;
    enum gq_status st = GQ_OK;
    t->svd_u = malloc(sizeof(float) * ng * r), t->svd_uscale = malloc(sizeof(float) * r);
    t->svd_v = malloc(sizeof(float) * k * r);
    double *C = malloc(sizeof(double) * ng * k), *S = malloc(sizeof(double) * mn);
    double *Us = malloc(sizeof(double) * ng * mn), *VT = malloc(sizeof(double) * mn * k);
    double *sup = malloc(sizeof(double) * (mn + 1)), *u = calloc(ng * r, sizeof(double));
    double *v = calloc((size_t)k * r, sizeof(double));
    int32_t *inv = malloc(sizeof(int32_t) * ng * k), *ord = malloc(sizeof(int32_t) * k);
    struct svd_als a = {0};
    if (!t->svd_u || !t->svd_uscale || !t->svd_v || !C || !S || !Us || !VT || !sup || !u || !v || !inv || !ord) {
        st = gq_fail(GQ_ERR_NOMEM, "gptvq: codebook SVD of %zu codebooks", ng);
        goto out;
    }
    // 1. sort every codebook ascending (stable), remap the indices
    for (size_t g = 0; g < ng; g++) {
        const float *cb = t->cb + g * k;
        for (int i = 0; i < k; i++) {
            int j = i;
            while (j > 0 && cb[ord[j - 1]] > cb[i]) ord[j] = ord[j - 1], j--;
            ord[j] = i;
        }
        for (int i = 0; i < k; i++) C[g * k + i] = cb[ord[i]], inv[g * k + ord[i]] = i;
    }
    for (int row = 0; row < t->rows; row++)
        for (int vi = 0; vi < nv; vi++) {
            size_t g = (size_t)mp->row_rt[row] * t->n_ct + mp->vec_ct[vi];
            uint16_t *ix = &t->idx[(size_t)row * nv + vi];
            *ix = (uint16_t)inv[g * k + *ix];
        }
    // 2. SVD, rank-r truncation
    if (LAPACKE_dgesvd(LAPACK_ROW_MAJOR, 'S', 'S', (lapack_int)ng, k, C, k, S, Us, (lapack_int)mn, VT, k, sup) != 0) {
        st = gq_fail(GQ_ERR_NUMERIC, "gptvq: codebook SVD did not converge");
        goto out;
    }
    for (int j = 0; j < r && (size_t)j < mn; j++) {
        for (size_t g = 0; g < ng; g++) u[g * r + j] = Us[g * mn + j] * S[j];
        for (int c = 0; c < k; c++) v[(size_t)c * r + j] = VT[(size_t)j * k + c];
    }
    svd_store(t, u, v, false);
    gq_vq_decode_positions(t, mp, Q);
    res->objective_svd_trunc = objective_pos(Y, Q, Hp, t->rows, t->cols, tmp, tmp2);
    // 3. alternating exact solves
    const size_t m = (size_t)t->n_ct * k, nr = (size_t)t->n_ct * r, kr = (size_t)k * r;
    if (als && m <= (size_t)gq_vq_dense_max) {
        a.t = t, a.mp = mp, a.Hp = Hp, a.HY = HY;
        if ((st = tile_sys_init(t, Hp, &a.sys)) != GQ_OK) goto out;
        a.Gr = malloc(sizeof(double) * nr * nr), a.br = malloc(sizeof(double) * nr);
        a.x0 = malloc(sizeof(double) * (nr > kr ? nr : kr)), a.x = malloc(sizeof(double) * (nr > kr ? nr : kr));
        a.GV = malloc(sizeof(double) * m * (nr > kr ? nr : kr)), a.Gv = malloc(sizeof(double) * kr * kr);
        a.bvv = malloc(sizeof(double) * kr);
        if (!a.Gr || !a.br || !a.x0 || !a.x || !a.GV || !a.Gv || !a.bvv) {
            st = gq_fail(GQ_ERR_NOMEM, "gptvq: codebook SVD least squares");
            goto out;
        }
        if ((double)t->n_rt * (m * m + m) * sizeof(double) <= (double)GQ_VQ_SVD_CACHE_BYTES) {
            a.cache = malloc(sizeof(double) * t->n_rt * (m * m + m)), a.cached = calloc(t->n_rt, sizeof(bool));
            if (!a.cache || !a.cached) free(a.cache), free(a.cached), a.cache = NULL, a.cached = NULL;
        }
        for (int it = 0; it < gq_vq_svd_als_iters && st == GQ_OK; it++) st = als_round(&a, u, v, true);
        if (st != GQ_OK) goto out;
        res->update_iters = gq_vq_svd_als_iters;
        // rank components scaled so that V's columns have unit norm (fp16 V)
        for (int j = 0; j < r; j++) {
            double nrm = 0;
            for (int c = 0; c < k; c++) nrm += v[(size_t)c * r + j] * v[(size_t)c * r + j];
            nrm = sqrt(nrm);
            if (!(nrm > 0)) continue;
            for (int c = 0; c < k; c++) v[(size_t)c * r + j] /= nrm;
            for (size_t g = 0; g < ng; g++) u[g * r + j] *= nrm;
        }
        svd_store(t, u, v, true); // rounds u (and v)
        if ((st = als_round(&a, u, v, false)) != GQ_OK) goto out; // V refitted to the rounded U
    }
    svd_store(t, u, v, true);
out:
    als_free(&a);
    free(C), free(S), free(Us), free(VT), free(sup), free(u), free(v), free(inv), free(ord);
    return st;
}

// Block-Jacobi preconditioner of the conjugate-gradient solve: for every
// group g = (rt, ct) the diagonal block G_gg (its codebooks of all stages;
// costs rows_rt · width² per group instead of rows · n² for all of G),
// Cholesky-factored once in double and kept as a packed lower triangle in
// float: mg(mg+1)/2 floats per group instead of mg² doubles (4D 2.125: 32
// instead of 128 bytes per weight). It only has to be close to G_gg: CG's
// iterates and their stop are computed in double against G itself.
typedef float pc_t;
struct precond {
    size_t mg;   // stages · k · d
    pc_t *F;     // (n_rt · n_ct) packed lower factors L (G_gg ≈ L Lᵀ), mg(mg+1)/2 each
    double eps;  // ridge added to G (GQ_VQ_RIDGE · max diag G)
};

static inline size_t group_base(const struct gq_vq_tensor *t, int stage, int rt, int ct) {
    return (((size_t)stage * t->n_rt + rt) * t->n_ct + ct) * (size_t)t->k * t->d;
}

static inline size_t packed_size(size_t mg) { return mg * (mg + 1) / 2; }

// Copies the strict upper triangle of the row-major n × n matrix F onto its
// lower one (F[i][j] = F[j][i], i > j), or the lower onto the upper; in
// 64 × 64 tiles so both sides stay in cache.
static void mirror_triangle(double *F, size_t n, bool to_lower) {
    enum { T = 64 };
    for (size_t i0 = 0; i0 < n; i0 += T)
        for (size_t j0 = 0; j0 <= i0; j0 += T)
            for (size_t i = i0; i < i0 + T && i < n; i++)
                for (size_t j = j0; j < j0 + T && j < i; j++) {
                    if (to_lower)
                        F[i * n + j] = F[j * n + i];
                    else
                        F[j * n + i] = F[i * n + j];
                }
}

// Cholesky of one block in place: the upper triangle is mirrored onto the
// lower one, which read column-major is that same upper triangle, and
// dpotrf('U') factors it there; the upper triangle and `diag` keep G for a
// retry with a larger ridge. On success the factor is mirrored back, so F
// read column-major holds L = Uᵀ in its lower triangle. Returns dpotrf's info
// (> 0 also for a factor that is not finite).
static lapack_int factor_block(double *F, size_t mg, const double *diag, double ridge) {
    mirror_triangle(F, mg, true);
    for (size_t a = 0; a < mg; a++) F[a * mg + a] = ridge > 0 ? diag[a] + ridge : diag[a];
    lapack_int info = LAPACKE_dpotrf_work(LAPACK_COL_MAJOR, 'U', (lapack_int)mg, F, (lapack_int)mg);
    for (size_t a = 0; a < mg && info == 0; a++) // OpenBLAS's potrf lets NaN through (LAPACKE's scan did not)
        if (!(isfinite(F[a * mg + a]) && F[a * mg + a] > 0)) info = (lapack_int)a + 1;
    if (info == 0) mirror_triangle(F, mg, false);
    return info;
}

// G_gg of group g (a row tile and a column tile) into the row-major (mg, mg)
// F: gq_vq_gram on that tile's indices and scales (copied to its layout).
// Without memory for those copies the block is left zero (identity below).
static void group_gram(const struct gq_vq_tensor *t, const struct gq_vq_maps *mp, const double *Hp, size_t g, double *F) {
    const int n = t->cols, d = t->d, S = t->stages, nv = (n - t->n_out) / d;
    const size_t mg = (size_t)S * t->k * d;
    const int rt = (int)(g / t->n_ct), ct = (int)(g % t->n_ct);
    const int v0 = (t->ct_start[ct] - t->n_out) / d, v1 = (t->ct_start[ct + 1] - t->n_out) / d, nvt = v1 - v0;
    const int r0 = t->rt_start[rt], rows = t->rt_start[rt + 1] - r0;
    uint16_t *idx = malloc(sizeof(uint16_t) * (size_t)S * rows * nvt);
    double *sig = t->norm_block ? malloc(sizeof(double) * (size_t)rows * nvt) : NULL;
    const int vt[2] = {0, nvt};
    const struct gq_vq_gram gr = {.rows = rows, .nv = nvt, .d = d, .k = t->k, .stages = S, .n_ct = 1,
                                  .vt_start = vt, .idx = idx, .idx_stage = (size_t)rows * nvt, .sig = sig,
                                  .H = Hp + (size_t)(t->n_out + v0 * d) * n + t->n_out + v0 * d, .ldh = n};
    if (!idx || (t->norm_block && !sig)) goto zero;
    for (int st = 0; st < S; st++)
        for (int r = 0; r < rows; r++)
            memcpy(idx + ((size_t)st * rows + r) * nvt, t->idx + ((size_t)st * t->rows + r0 + r) * nv + v0,
                   sizeof(uint16_t) * nvt);
    if (sig)
        for (int r = 0; r < rows; r++)
            for (int v = 0; v < nvt; v++) sig[(size_t)r * nvt + v] = gq_vq_vec_scale(t, mp, r0 + r, v0 + v);
    if (gq_vq_gram(&gr, F) == GQ_OK) goto out; // runs on this thread (inside the groups' parallel loop)
zero:
    memset(F, 0, sizeof(double) * mg * mg);
out:
    free(idx), free(sig);
}

// Factors G_gg + eps (F: its gram, row-major, overwritten) into the packed
// lower triangle P; a block that will not factor gets Jacobi (the diagonal).
static void factor_group(double *F, size_t mg, double dmax, double eps, double *diag, pc_t *P) {
    for (size_t a = 0; a < mg; a++) {
        if (!(F[a * mg + a] > 1e-14 * dmax)) { // unused entry: decoupled, unit
            for (size_t b = 0; b < mg; b++) F[a * mg + b] = F[b * mg + a] = 0;
            F[a * mg + a] = 1;
        } else
            F[a * mg + a] += eps;
    }
    for (size_t a = 0; a < mg; a++) diag[a] = F[a * mg + a];
    bool ok = false;
    double ridge = 0;
    for (int tries = 0; !ok && tries < 6; tries++) {
        ok = factor_block(F, mg, diag, ridge) == 0;
        ridge = ridge > 0 ? ridge * 100 : 1e-12 * (dmax > 0 ? dmax : 1);
    }
    // column j of L: F[j·mg + j ..] (read column-major), packed column by column
    pc_t *p = P;
    for (size_t j = 0; j < mg; j++)
        for (size_t i = j; i < mg; i++) *p++ = ok ? (pc_t)F[j * mg + i] : i == j ? (pc_t)sqrt(diag[j] > 0 ? diag[j] : 1) : 0;
}

static enum gq_status precond_build(const struct gq_vq_tensor *t, const struct gq_vq_maps *mp, const double *Hp,
                                    struct precond *pc) {
    const size_t mg = (size_t)t->stages * t->k * t->d, ngr = (size_t)t->n_rt * t->n_ct, ps = packed_size(mg);
    pc->mg = mg;
    pc->F = malloc(sizeof(pc_t) * ngr * ps);
    double *gdiag = malloc(sizeof(double) * ngr * mg);
    if (!pc->F || !gdiag) {
        free(gdiag), free(pc->F), pc->F = NULL;
        return gq_fail(GQ_ERR_NOMEM, "gptvq: preconditioner (%zu blocks of %zu^2 / 2)", ngr, mg);
    }
    // The ridge and the unused-entry threshold are relative to the largest
    // diagonal entry of all blocks: a first pass finds it (building a block's
    // gram costs a few percent of factoring it), the second builds and
    // factors each block in a per-thread (mg, mg) double buffer.
    bool nomem = false;
    double dmax = 0;
    for (int pass = 0; pass < 2 && !nomem; pass++) {
#pragma omp parallel
        {
            double *F = malloc(sizeof(double) * (mg * mg + mg));
            if (!F) {
#pragma omp atomic write
                nomem = true;
            }
#pragma omp for schedule(dynamic, 1)
            for (size_t g = 0; g < ngr; g++) {
                if (!F) continue;
                group_gram(t, mp, Hp, g, F);
                if (pass == 0)
                    for (size_t a = 0; a < mg; a++) gdiag[g * mg + a] = F[a * mg + a];
                else
                    factor_group(F, mg, dmax, pc->eps, F + mg * mg, pc->F + g * ps);
            }
            free(F);
        }
        if (pass == 0) {
            for (size_t a = 0; a < ngr * mg; a++) dmax = fmax(dmax, gdiag[a]);
            pc->eps = GQ_VQ_RIDGE * dmax;
        }
    }
    free(gdiag);
    if (nomem) {
        free(pc->F), pc->F = NULL;
        return gq_fail(GQ_ERR_NOMEM, "gptvq: preconditioner work (%zu^2 doubles per thread)", mg);
    }
    return GQ_OK;
}

// z = M⁻¹ r
static void precond_apply(const struct gq_vq_tensor *t, const struct precond *pc, const double *r, double *z) {
    const size_t mg = pc->mg, kd = mg / t->stages, ngr = (size_t)t->n_rt * t->n_ct, ps = packed_size(mg);
#pragma omp parallel for schedule(static)
    for (size_t g = 0; g < ngr; g++) {
        const int rt = (int)(g / t->n_ct), ct = (int)(g % t->n_ct);
        pc_t buf[4096], *x = mg <= 4096 ? buf : malloc(sizeof(pc_t) * mg);
        if (!x) continue;
        for (int st = 0; st < t->stages; st++)
            for (size_t a = 0; a < kd; a++) x[st * kd + a] = (pc_t)r[group_base(t, st, rt, ct) + a];
        LAPACKE_spptrs_work(LAPACK_COL_MAJOR, 'L', (lapack_int)mg, 1, pc->F + g * ps, x, (lapack_int)mg);
        for (int st = 0; st < t->stages; st++)
            for (size_t a = 0; a < kd; a++) z[group_base(t, st, rt, ct) + a] = x[st * kd + a];
        if (x != buf) free(x);
    }
}

// z = M⁻¹ r (PCG) or z = r (steepest descent)
static void precondition(const struct gq_vq_tensor *t, const struct precond *pc, bool cg, const double *r, double *z,
                         size_t m) {
    if (cg)
        precond_apply(t, pc, r, z);
    else
        memcpy(z, r, sizeof(double) * m);
}

// Matrix-free: G x = Aᵀ H A x with one symmetric GEMM (rows × n × n).
// cg = false: steepest descent with exact line search (the paper's GD, one
// GEMM per step); cg = true: conjugate gradients on G θ = b with the
// block-Jacobi preconditioner above, stopped when rᵀM⁻¹r <= GQ_VQ_CG_TOL of its
// start or after `iters` (the EXACT update when the dense system would be
// too large). Both decrease the objective monotonically. Entries no weight
// selects have zero gradient and keep their value.
static enum gq_status update_iterative(const struct gq_vq_tensor *t, const struct gq_vq_maps *mp, const double *Hp,
                                       const double *Y, int iters, bool cg, double *theta, size_t m, int *iters_done) {
    const int rows = t->rows, n = t->cols;
    size_t nw = (size_t)rows * n;
    struct precond pc = {0};
    double *Q = malloc(sizeof(double) * nw), *R = malloc(sizeof(double) * nw), *g = malloc(sizeof(double) * m),
           *Gp = malloc(sizeof(double) * m), *pd = malloc(sizeof(double) * m), *z = malloc(sizeof(double) * m);
    if (!Q || !R || !g || !Gp || !pd || !z) {
        free(Q), free(R), free(g), free(Gp), free(pd), free(z);
        return gq_fail(GQ_ERR_NOMEM, "gptvq: codebook update buffers (%zu entries)", m);
    }
    enum gq_status st = cg ? precond_build(t, mp, Hp, &pc) : GQ_OK;
    if (st != GQ_OK) {
        free(Q), free(R), free(g), free(Gp), free(pd), free(z);
        return st;
    }
    // r = Aᵀ H (Y − Aθ)
    lookup_theta(t, mp, theta, Q);
    for (size_t i = 0; i < nw; i++) Q[i] = Y[i] - Q[i];
    enum gq_status bs = gq_be()->dsymm_right(rows, n, Hp, Q, R);
    scatter_theta(t, mp, R, g, m);
    precondition(t, &pc, cg, g, z, m);
    double rz = 0;
    for (size_t a = 0; a < m; a++) rz += g[a] * z[a];
    const double rz0 = rz;
    memcpy(pd, z, sizeof(double) * m);
    int it = 0;
    for (; bs == GQ_OK && it < iters && rz > GQ_VQ_CG_TOL * rz0 && rz > 0; it++) {
        lookup_theta(t, mp, pd, Q);
        if ((bs = gq_be()->dsymm_right(rows, n, Hp, Q, R)) != GQ_OK) break;
        scatter_theta(t, mp, R, Gp, m);
        for (size_t a = 0; a < m; a++) Gp[a] += pc.eps * pd[a]; // ridge around θ_pass (r starts at b − Gθ_pass)
        double pGp = 0;
        for (size_t a = 0; a < m; a++) pGp += pd[a] * Gp[a];
        if (!(pGp > 0)) break;
        double alpha = rz / pGp; // rᵀp = rᵀz for PCG and for steepest descent (p = z = r)
        for (size_t a = 0; a < m; a++) theta[a] += alpha * pd[a], g[a] -= alpha * Gp[a];
        precondition(t, &pc, cg, g, z, m);
        double rn = 0;
        for (size_t a = 0; a < m; a++) rn += g[a] * z[a];
        if (cg) {
            double beta = rn / rz;
            for (size_t a = 0; a < m; a++) pd[a] = z[a] + beta * pd[a];
        } else {
            memcpy(pd, z, sizeof(double) * m);
        }
        rz = rn;
    }
    if (iters_done) *iters_done = it;
    free(Q), free(R), free(g), free(Gp), free(pd), free(z), free(pc.F);
    return bs;
}

// ---------------------------------------------------------------------------

static enum gq_status check_args(int rows, int cols, const struct gq_gptvq_params *vp, const struct gq_vq_config *cfg) {
    const int d = cfg->d;
    if (rows < 1 || cols < 1) return gq_fail(GQ_ERR_ARG, "gptvq: empty matrix (%d, %d)", rows, cols);
    if (cols % d)
        return gq_fail(GQ_ERR_ARG, "--vq-dim %d needs the input dimension to be a multiple of %d (matrix has %d columns)",
                       d, d, cols);
    if (cfg->k < 1 || cfg->k > 65536) return gq_fail(GQ_ERR_ARG, "gptvq: k = %d out of range [1, 65536]", cfg->k);
    if (vp->stages < 1 || vp->stages > 2) return gq_fail(GQ_ERR_ARG, "--residual must be 1 or 2 (got %d)", vp->stages);
    if (vp->norm_block < 0 || (vp->norm_block && vp->norm_block % d))
        return gq_fail(GQ_ERR_ARG, "--norm-block must be 0 or a positive multiple of --vq-dim %d (got %d)", d,
                       vp->norm_block);
    if (!(vp->outlier_frac >= 0 && vp->outlier_frac < 1))
        return gq_fail(GQ_ERR_ARG, "--outlier-frac must be in [0, 1) (got %g)", vp->outlier_frac);
    if (vp->em_iters < 0) return gq_fail(GQ_ERR_ARG, "--em-iters must be >= 0 (got %d)", vp->em_iters);
    if (vp->cb_svd_rank && (d != 1 || vp->stages != 1 || vp->cb_update == GQ_CB_UPDATE_GD || vp->cb_svd_rank > cfg->k))
        return gq_fail(GQ_ERR_ARG, "--cb-svd %d needs --vq-dim 1, one stage, --cb-update exact|none and a rank <= k = %d",
                       vp->cb_svd_rank, cfg->k);
    if (vp->feedback_diag && vp->full_subhessian)
        return gq_fail(GQ_ERR_ARG, "--full-subhessian needs the exact d x d feedback (not --feedback diag)");
    return GQ_OK;
}

// Column order: outliers (by saliency ‖W_c‖² H_cc, descending) first, then
// the rest by descending diag H (act_order) or in natural order.
static enum gq_status column_order(const float *W, int rows, int cols, const float *H, int n_out, bool act_order,
                                   int32_t *perm) {
    double *key = calloc((size_t)cols, sizeof(double));
    char *taken = calloc((size_t)cols, 1);
    int32_t *ord = malloc(sizeof(int32_t) * cols);
    if (!key || !taken || !ord) {
        free(key), free(taken), free(ord);
        return gq_fail(GQ_ERR_NOMEM, "gptvq: column order");
    }
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) key[c] += (double)W[(size_t)r * cols + c] * W[(size_t)r * cols + c];
    for (int c = 0; c < cols; c++) key[c] *= H[(size_t)c * cols + c];
    gq_sort_desc(ord, key, cols);
    for (int i = 0; i < n_out; i++) perm[i] = ord[i], taken[ord[i]] = 1;
    int p = n_out;
    if (act_order) { // the rest by descending diag H, as GPTQ's act-order
        for (int c = 0; c < cols; c++) key[c] = H[(size_t)c * cols + c];
        gq_sort_desc(ord, key, cols);
        for (int i = 0; i < cols; i++)
            if (!taken[ord[i]]) perm[p++] = ord[i];
    } else {
        for (int c = 0; c < cols; c++)
            if (!taken[c]) perm[p++] = c;
    }
    free(key), free(taken), free(ord);
    return GQ_OK;
}

// ---------------------------------------------------------------------------
// Slabs: the units of work. A slab is a run of whole row tiles; rows never
// interact in the pass (the error feedback runs along a row) and the
// codebook update is block diagonal by row tile, so each slab is quantized
// on its own: its pass (with its own lazy-update GEMMs), its codebook update,
// its keep-or-not decision and its objective. The slabs depend only on the
// shape and the options, never on who computes them, so ranks that split a
// linear's slabs (quant/group.c) produce the bits of one process.

static int slab_count(int rows, int n_rt, int slab_rows, int svd_rank) {
    if (slab_rows <= 0 || svd_rank) return 1; // the codebook SVD factors all groups together
    int ns = (rows + slab_rows - 1) / slab_rows;
    if (ns > n_rt) ns = n_rt;
    if (ns > GQ_VQ_MAX_SLABS) ns = GQ_VQ_MAX_SLABS;
    return ns < 1 ? 1 : ns;
}

static int outlier_cols(int cols, int d, double frac) {
    if (!(frac > 0)) return 0;
    int n_out = (int)ceil(frac * cols / d) * d;
    return n_out > cols - d ? cols - d : n_out;
}

int gq_gptvq_n_slabs(int rows, int cols, const struct gq_gptvq_params *vp, const struct gq_vq_config *cfg) {
    if (rows < 1 || cfg->d < 1 || cols % cfg->d) return 1;
    int n_ct, n_rt;
    pick_tiles(rows, (cols - outlier_cols(cols, cfg->d, vp->outlier_frac)) / cfg->d, cfg->d, cfg->k, cfg->l, &n_ct, &n_rt);
    return slab_count(rows, n_rt, vp->slab_rows, vp->cb_svd_rank);
}

// A slab's codebooks, scales and indices (stage by stage: stage-major in T)
// from T into S (in) or back.
static void slab_copy(struct gq_vq_tensor *T, int rt0, struct gq_vq_tensor *S, bool in) {
    const int r0 = T->rt_start[rt0], nv = (T->cols - T->n_out) / T->d;
    const size_t kd = (size_t)T->k * T->d, gs = (size_t)S->n_rt * T->n_ct, is = (size_t)S->rows * nv;
    for (int s = 0; s < T->stages; s++) {
        const size_t g0 = ((size_t)s * T->n_rt + rt0) * T->n_ct;
        float *tc = T->cb + g0 * kd, *sc = S->cb + s * gs * kd, *tsc = T->cb_scale + g0, *ssc = S->cb_scale + s * gs;
        uint16_t *ti = T->idx + ((size_t)s * T->rows + r0) * nv, *si = S->idx + s * is;
        memcpy(in ? sc : tc, in ? tc : sc, sizeof(float) * gs * kd);
        memcpy(in ? ssc : tsc, in ? tsc : ssc, sizeof(float) * gs);
        memcpy(in ? si : ti, in ? ti : si, sizeof(uint16_t) * is);
    }
}

// Row tiles [rt0, rt1) of T as a tensor of their own: copies of their
// codebooks, scales and indices; normalisation codes, tile parameters and
// outliers are T's own rows (contiguous).
static enum gq_status slab_open(struct gq_vq_tensor *T, int rt0, int rt1, struct gq_vq_tensor *S) {
    const int r0 = T->rt_start[rt0], nv = (T->cols - T->n_out) / T->d;
    const size_t kd = (size_t)T->k * T->d;
    *S = *T;
    S->rows = T->rt_start[rt1] - r0, S->n_rt = rt1 - rt0;
    const size_t gs = (size_t)S->n_rt * T->n_ct, is = (size_t)S->rows * nv; // groups / indices per stage
    S->rt_start = malloc(sizeof(int) * (S->n_rt + 1));
    S->cb = malloc(sizeof(float) * T->stages * gs * kd);
    S->cb_scale = malloc(sizeof(float) * T->stages * gs);
    S->idx = malloc(sizeof(uint16_t) * T->stages * (is ? is : 1));
    if (!S->rt_start || !S->cb || !S->cb_scale || !S->idx) {
        free(S->rt_start), free(S->cb), free(S->cb_scale), free(S->idx);
        return gq_fail(GQ_ERR_NOMEM, "gptvq: slab of %d rows", S->rows);
    }
    for (int r = 0; r <= S->n_rt; r++) S->rt_start[r] = T->rt_start[rt0 + r] - r0;
    slab_copy(T, rt0, S, true);
    if (T->sint) S->sint = T->sint + (size_t)r0 * T->n_nblk;
    if (T->norm) S->norm = T->norm + (size_t)rt0 * T->n_ct;
    S->outl = T->outl + (size_t)r0 * T->n_out;
    S->svd_u = S->svd_uscale = S->svd_v = NULL;
    return GQ_OK;
}

// S's codebooks, scales and indices back into T; frees S's copies.
static void slab_close(struct gq_vq_tensor *T, int rt0, struct gq_vq_tensor *S) {
    slab_copy(T, rt0, S, false);
    free(S->rt_start), free(S->cb), free(S->cb_scale), free(S->idx);
}

// The GPTVQ pass over one slab S (w: its rows): per column tile the EM
// initialisation of its codebooks, then blocks of B positions with the lazy
// feedback. rt_off: S's first row tile in the whole tensor (the EM seeds).
static enum gq_status slab_pass(struct gq_vq_tensor *S, struct vq_work *w, const double *U,
                                const struct gq_gptvq_params *vp, uint64_t seed, int rt_off, int B,
                                struct gq_vq_slab *ss) {
    const int n = S->cols, d = S->d, k = S->k, n_out = S->n_out, rows = S->rows;
    struct gq_vq_maps mp = {0};
    enum gq_status st = gq_vq_maps_build(S, &mp);
    // Segments: the outlier columns, then each column tile; blocks of B
    // columns never cross a segment boundary.
    for (int seg = -1; seg < S->n_ct && st == GQ_OK; seg++) {
        int c0 = seg < 0 ? 0 : S->ct_start[seg], c1 = seg < 0 ? n_out : S->ct_start[seg + 1];
        if (c1 <= c0) continue;
        if (seg >= 0) {
            double te = gq_time_s();
            int64_t emi = 0, rs = 0;
            st = init_tile(S, &mp, w, vp, seed, rt_off, seg, &emi, &rs);
            ss->em_iters += emi, ss->n_reseeded += rs;
            ss->t_em += gq_time_s() - te;
            if (st != GQ_OK) break;
        }
        for (int i1 = c0; i1 < c1; i1 += B) {
            const int i2 = i1 + B < c1 ? i1 + B : c1, count = i2 - i1;
            double ta = gq_time_s();
            if (seg < 0) {
                quantize_outliers(S, w, U, i1, i2, B);
            } else {
                const int nsl = count / d, va = (i1 - n_out) / d;
                size_t np = (size_t)S->stages * S->n_rt * nsl * k;
                double *P = malloc(sizeof(double) * np * d), *nrm = malloc(sizeof(double) * np);
                if (!P || !nrm) {
                    free(P), free(nrm);
                    st = gq_fail(GQ_ERR_NOMEM, "gptvq: %zu centroid projections", np);
                    break;
                }
#pragma omp parallel for collapse(2) schedule(static)
                for (int sr = 0; sr < S->stages * S->n_rt; sr++)
                    for (int sl = 0; sl < nsl; sl++) {
                        int stage = sr / S->n_rt, rt = sr % S->n_rt;
                        const float *cb = gq_vq_cb(S, stage, rt, seg);
                        double C[256 * GQ_VQ_MAX_DIM], *Cd = k * d <= 256 * GQ_VQ_MAX_DIM ? C : malloc(sizeof(double) * k * d);
                        for (int i = 0; i < k * d; i++) Cd[i] = cb[i];
                        size_t o = ((size_t)sr * nsl + sl) * k;
                        gq_vq_precompute(w->metric + (size_t)(va + sl) * d * d, !vp->full_subhessian, d, Cd, k,
                                         P + o * d, nrm + o);
                        if (Cd != C) free(Cd);
                    }
                quantize_block(S, &mp, w, U, vp, i1, i2, B, P, nrm);
                free(P), free(nrm);
            }
            double tf = gq_time_s();
            ss->t_assign += tf - ta;
            if (i2 < n && st == GQ_OK)
                st = gq_be()->dgemm(false, false, rows, n - i2, count, -1.0, w->Err, B, U + (size_t)i1 * n + i2, n, 1.0,
                                    w->Wd + i2, n);
            ss->t_feedback += gq_time_s() - tf;
        }
    }
    for (int r = 0; r < rows; r++) ss->greedy += w->gsum[r];
    gq_vq_maps_free(&mp);
    return st;
}

// The codebook update of one slab S, kept when it lowers the slab's
// objective. Y (rows, n): the slab's original weights in position order (dead
// inputs zeroed); Q0 (rows, n) scratch; Hp: H in position order; tmp, tmp2
// (rows, n) scratch.
static enum gq_status slab_update(struct gq_vq_tensor *S, const double *Y, float *Q0, const double *Hp, double *tmp,
                                  double *tmp2, const struct gq_gptvq_params *vp, struct gq_vq_slab *ss) {
    const int rows = S->rows, n = S->cols, n_out = S->n_out, k = S->k, d = S->d, nv = (n - n_out) / d;
    const size_t nw = (size_t)rows * n, ng = (size_t)S->stages * S->n_rt * S->n_ct;
    struct gq_vq_maps mp = {0};
    GQ_TRY(gq_vq_maps_build(S, &mp));
    enum gq_status st = GQ_OK;
    gq_vq_decode_positions(S, &mp, Q0); // identical to the pass's values (same rule)
    ss->objective_pass = objective_pos(Y, Q0, Hp, rows, n, tmp, tmp2);
    ss->ref = quad_form(Y, Hp, rows, n, tmp2);
    ss->objective = ss->objective_pass;
    if (S->svd_rank && nv > 0) {
        double *HY = malloc(sizeof(double) * nw);
        struct gq_vq_result sr = {0};
        if (!HY) st = gq_fail(GQ_ERR_NOMEM, "gptvq: codebook SVD buffers");
        for (int r = 0; st == GQ_OK && r < rows; r++) // Y minus the (fixed) outlier part
            for (int p = 0; p < n; p++) tmp[(size_t)r * n + p] = Y[(size_t)r * n + p] - (p < n_out ? Q0[(size_t)r * n + p] : 0);
        if (st == GQ_OK) st = gq_be()->dsymm_right(rows, n, Hp, tmp, HY);
        if (st == GQ_OK) st = svd_compress(S, &mp, Hp, HY, vp->cb_update == GQ_CB_UPDATE_EXACT, Y, Q0, tmp, tmp2, &sr);
        free(HY);
        if (st == GQ_OK) {
            gq_vq_decode_positions(S, &mp, Q0);
            ss->objective = objective_pos(Y, Q0, Hp, rows, n, tmp, tmp2);
            ss->update_kept = 1; // the factors replace the pass's codebooks
            ss->update_iters = sr.update_iters, ss->objective_svd_trunc = sr.objective_svd_trunc;
        }
    } else if (vp->cb_update != GQ_CB_UPDATE_NONE && nv > 0) {
        size_t m = ng * k * d;
        double *theta = malloc(sizeof(double) * m), *HY = malloc(sizeof(double) * nw);
        float *cb_old = malloc(sizeof(float) * m), *sc_old = malloc(sizeof(float) * ng);
        if (!theta || !HY || !cb_old || !sc_old) st = gq_fail(GQ_ERR_NOMEM, "gptvq: codebook update buffers");
        if (st == GQ_OK) {
            for (size_t a = 0; a < m; a++) theta[a] = S->cb[a];
            memcpy(cb_old, S->cb, sizeof(float) * m);
            memcpy(sc_old, S->cb_scale, sizeof(float) * ng);
            // Y minus the (fixed) outlier part is what the VQ part must match.
            for (int r = 0; r < rows; r++)
                for (int p = 0; p < n; p++) tmp[(size_t)r * n + p] = Y[(size_t)r * n + p] - (p < n_out ? Q0[(size_t)r * n + p] : 0);
            int iters = 1;
            size_t m_tile = (size_t)S->stages * S->n_ct * k * d; // unknowns of one row tile
            if (vp->cb_update == GQ_CB_UPDATE_EXACT && m_tile <= (size_t)gq_vq_dense_max) {
                st = gq_be()->dsymm_right(rows, n, Hp, tmp, HY);
                if (st == GQ_OK) st = update_exact(S, &mp, Hp, HY, theta);
            } else if (vp->cb_update == GQ_CB_UPDATE_EXACT) {
                st = update_iterative(S, &mp, Hp, tmp, GQ_VQ_CG_MAX_ITERS, true, theta, m, &iters);
            } else {
                st = update_iterative(S, &mp, Hp, tmp, vp->gd_iters, false, theta, m, &iters);
            }
            ss->update_iters = iters;
        }
        if (st == GQ_OK) {
            for (size_t g = 0; g < ng; g++) {
                double *c = theta + g * k * d;
                gq_cb_round(c, k * d, S->cb_format, NULL, NULL, &S->cb_scale[g]);
                for (int i = 0; i < k * d; i++) S->cb[g * k * d + i] = (float)c[i];
            }
            gq_vq_decode_positions(S, &mp, Q0);
            double obj = objective_pos(Y, Q0, Hp, rows, n, tmp, tmp2);
            if (obj < ss->objective_pass) {
                ss->objective = obj, ss->update_kept = 1;
            } else {
                memcpy(S->cb, cb_old, sizeof(float) * m);
                memcpy(S->cb_scale, sc_old, sizeof(float) * ng);
            }
        }
        free(theta), free(HY), free(cb_old), free(sc_old);
    }
    gq_vq_maps_free(&mp);
    return st;
}

void gq_vq_result_total(struct gq_vq_result *res) {
    double obj = 0, pass = 0, ref = 0, greedy = 0, trunc = 0, te = 0, ta = 0, tf = 0, tu = 0;
    int64_t emi = 0, rs = 0;
    int it = 0, kept = 0;
    for (int s = 0; s < res->n_slab; s++) { // slab order: the same sums however the slabs were computed
        const struct gq_vq_slab *ss = &res->slab[s];
        obj += ss->objective, pass += ss->objective_pass, ref += ss->ref, greedy += ss->greedy;
        trunc += ss->objective_svd_trunc;
        te += ss->t_em, ta += ss->t_assign, tf += ss->t_feedback, tu += ss->t_update;
        emi += ss->em_iters, rs += ss->n_reseeded;
        if (ss->update_iters > it) it = ss->update_iters;
        kept += ss->update_kept;
    }
    res->objective = obj, res->objective_pass = pass, res->ref = ref, res->greedy = greedy;
    res->objective_svd_trunc = trunc;
    res->t_em = te, res->t_assign = ta, res->t_feedback = tf, res->t_update = tu;
    res->em_iters_total = emi, res->n_reseeded = rs, res->update_iters = it;
    res->n_kept = kept, res->update_kept = kept > 0;
    res->rel_error = ref > 0 ? obj / ref : 0;
}

enum gq_status gq_gptvq_finish(const struct gq_vq_tensor *t, float *W, struct gq_vq_result *res) {
    gq_vq_result_total(res);
    if (!isfinite(res->objective))
        return gq_fail(GQ_ERR_NUMERIC, "gptvq: objective not finite (%s)", *gq_last_error() ? gq_last_error() : "?");
    gq_vq_decode(t, W);
    const size_t nw = (size_t)t->rows * t->cols;
    for (size_t i = 0; i < nw; i++)
        if (!isfinite(W[i]))
            return gq_fail(GQ_ERR_NUMERIC, "gptvq: non-finite quantized weight at row %zu col %zu", i / (size_t)t->cols,
                           i % (size_t)t->cols);
    res->bpv = (double)gq_vq_tensor_bits(t) / ((double)t->rows * t->cols);
    return GQ_OK;
}

enum gq_status gq_gptvq_quantize(float *W, int rows, int cols, const float *H, const struct gq_quant_params *qp,
                                 const struct gq_gptvq_params *vp, const struct gq_vq_config *cfg, uint64_t seed,
                                 struct gq_vq_tensor *tout, struct gq_vq_result *res) {
    GQ_TRY(check_args(rows, cols, vp, cfg));
    const int n = cols, d = cfg->d, k = cfg->k;
    size_t nw;
    if (!gq_mul_ok((size_t)rows, (size_t)n, &nw)) return gq_fail(GQ_ERR_NOMEM, "gptvq: shape too large");
    for (size_t i = 0; i < nw; i++)
        if (!isfinite(W[i]))
            return gq_fail(GQ_ERR_NUMERIC, "gptvq: non-finite weight at row %zu col %zu", i / (size_t)n, i % (size_t)n);
    memset(res, 0, sizeof *res);
    double t0 = gq_time_s();
    int B = qp->block_size > 0 ? qp->block_size : 128;
    B = (B + d - 1) / d * d;

    const int n_out = outlier_cols(cols, d, vp->outlier_frac);
    struct gq_vq_tensor T = {0};
    struct vq_work w = {0};
    struct gq_hinv hv = {0};
    enum gq_status st = GQ_OK;
    bool u_held = false; // hv.U held on the device for the lazy feedback GEMMs
    double *Hp = NULL, *tmp = NULL, *tmp2 = NULL;
    T.rows = rows, T.cols = n, T.d = d, T.k = k, T.stages = vp->stages, T.n_out = n_out;
    T.cb_format = vp->cb_format, T.norm_block = vp->norm_block, T.svd_rank = vp->cb_svd_rank;
    T.perm = malloc(sizeof(int32_t) * n);
    if (!T.perm) return gq_fail(GQ_ERR_NOMEM, "gptvq: permutation");
    if ((st = column_order(W, rows, n, H, n_out, qp->act_order, T.perm)) != GQ_OK) goto done;

    const int nv = (n - n_out) / d;
    pick_tiles(rows, nv, d, k, cfg->l, &T.n_ct, &T.n_rt);
    T.ct_start = malloc(sizeof(int) * (T.n_ct + 1));
    T.rt_start = malloc(sizeof(int) * (T.n_rt + 1));
    size_t ng = (size_t)T.stages * T.n_rt * T.n_ct;
    // zeroed: what this call does not quantize (slabs of other ranks) stays 0
    T.cb = calloc(ng * k * d, sizeof(float));
    T.cb_scale = calloc(ng, sizeof(float));
    T.idx = calloc((size_t)T.stages * rows * (nv ? nv : 1), sizeof(uint16_t));
    T.outl = calloc((size_t)rows * (n_out ? n_out : 1), sizeof(uint16_t));
    if (!T.ct_start || !T.rt_start || !T.cb || !T.cb_scale || !T.idx || !T.outl) {
        st = gq_fail(GQ_ERR_NOMEM, "gptvq: codebooks (%zu groups of %d x %d)", ng, k, d);
        goto done;
    }
    for (int c = 0; c <= T.n_ct; c++) T.ct_start[c] = n_out + (int)((int64_t)nv * c / T.n_ct) * d;
    for (int r = 0; r <= T.n_rt; r++) T.rt_start[r] = (int)((int64_t)rows * r / T.n_rt);
    if (T.norm_block) {
        T.n_nblk = 0;
        for (int c = 0; c < T.n_ct; c++)
            T.n_nblk += (T.ct_start[c + 1] - T.ct_start[c] + T.norm_block - 1) / T.norm_block;
        T.sint = calloc((size_t)rows * T.n_nblk, 1);
        T.norm = calloc((size_t)T.n_rt * T.n_ct, sizeof *T.norm);
        if (!T.sint || !T.norm) {
            st = gq_fail(GQ_ERR_NOMEM, "gptvq: normalisation codes");
            goto done;
        }
    }
    for (int rt = 0; rt < T.n_rt; rt++)
        for (int ct = 0; ct < T.n_ct; ct++) {
            int64_t g = (int64_t)(T.rt_start[rt + 1] - T.rt_start[rt]) * (T.ct_start[ct + 1] - T.ct_start[ct]);
            if (g > res->l) res->l = g;
        }
    const int ns = res->n_slab = slab_count(rows, T.n_rt, vp->slab_rows, T.svd_rank);
    int srt[GQ_VQ_MAX_SLABS + 1], max_rows = 0; // first row tile of each slab
    bool any = false, all = true;
    for (int s = 0; s <= ns; s++) srt[s] = (int)((int64_t)T.n_rt * s / ns);
    for (int s = 0; s < ns; s++) {
        bool mine = !cfg->slab_own || cfg->slab_own[s];
        any |= mine, all &= mine;
        if (T.rt_start[srt[s + 1]] - T.rt_start[srt[s]] > max_rows) max_rows = T.rt_start[srt[s + 1]] - T.rt_start[srt[s]];
    }
    if (!any) goto done; // the layout only: this caller's share of the linear is empty

    if ((st = gq_hinv_prepare(H, n, qp->damp, false, T.perm, &hv)) != GQ_OK) goto done;
    res->damp_rel = hv.damp_rel, res->damp_abs = hv.damp_abs, res->n_dead = hv.n_dead, res->n_tries = hv.n_tries;
    w.Wd = malloc(sizeof(double) * nw);
    w.Err = malloc(sizeof(double) * (size_t)max_rows * B);
    w.metric = malloc(sizeof(double) * (size_t)(nv ? nv : 1) * d * d);
    w.Uinv = malloc(sizeof(double) * (size_t)(nv ? nv : 1) * d * d);
    w.Qp = malloc(sizeof(float) * nw);
    w.gsum = calloc((size_t)rows, sizeof(double));
    if (!w.Wd || !w.Err || !w.metric || !w.Uinv || !w.Qp || !w.gsum) {
        st = gq_fail(GQ_ERR_NOMEM, "gptvq: buffers for a (%d, %d) layer", rows, n);
        goto done;
    }
    gq_permuted_weights(W, rows, n, H, T.perm, w.Wd);
    const double *U = hv.U;
    if ((st = slot_metrics(U, n, n_out, d, nv, vp, w.metric, w.Uinv)) != GQ_OK) goto done;
    if ((st = gq_be()->hold(U, sizeof(double) * (size_t)n * n, false)) != GQ_OK) goto done;
    u_held = true;
    res->t_prep = gq_time_s() - t0;

    // Every slab's pass while U is held, then every slab's update (which
    // needs H in position order: n² doubles, after U is freed).
    for (int phase = 0; phase < 2 && st == GQ_OK; phase++) {
        if (phase == 1) {
            u_held = false;
            if ((st = gq_be()->release(hv.U)) != GQ_OK) break;
            gq_hinv_free(&hv);
            Hp = malloc(sizeof(double) * (size_t)n * n);
            tmp = malloc(sizeof(double) * (size_t)max_rows * n), tmp2 = malloc(sizeof(double) * (size_t)max_rows * n);
            if (!Hp || !tmp || !tmp2) {
                st = gq_fail(GQ_ERR_NOMEM, "gptvq: objective buffers");
                break;
            }
            for (int a = 0; a < n; a++)
                for (int b = 0; b < n; b++) Hp[(size_t)a * n + b] = H[(size_t)T.perm[a] * n + T.perm[b]];
            // Wd (no longer needed) takes the original weights in position order: Y
            gq_permuted_weights(W, rows, n, H, T.perm, w.Wd);
        }
        for (int s = 0; s < ns && st == GQ_OK; s++) {
            if (cfg->slab_own && !cfg->slab_own[s]) continue;
            const int r0 = T.rt_start[srt[s]];
            struct gq_vq_tensor Sv, *S = &T; // one slab: the tensor itself (the codebook SVD needs it so)
            if (ns > 1 && (st = slab_open(&T, srt[s], srt[s + 1], &Sv)) != GQ_OK) break;
            if (ns > 1) S = &Sv;
            struct vq_work ws = {w.Wd + (size_t)r0 * n, w.Err, w.metric, w.Uinv, w.Qp + (size_t)r0 * n, w.gsum + r0};
            double ts = gq_time_s();
            if (phase == 0) st = slab_pass(S, &ws, hv.U, vp, seed, srt[s], B, &res->slab[s]);
            else st = slab_update(S, ws.Wd, ws.Qp, Hp, tmp, tmp2, vp, &res->slab[s]);
            if (phase == 1) res->slab[s].t_update = gq_time_s() - ts;
            if (ns > 1) slab_close(&T, srt[s], &Sv);
        }
    }
    if (st == GQ_OK && all) st = gq_gptvq_finish(&T, W, res);
    else if (st == GQ_OK) gq_vq_result_total(res);
done:
    if (u_held) gq_be()->release(hv.U);
    gq_hinv_free(&hv);
    work_free(&w);
    free(Hp), free(tmp), free(tmp2);
    if (st == GQ_OK && tout)
        *tout = T;
    else
        gq_vq_tensor_free(&T);
    return st;
}

void gq_vq_report_fill(const struct gq_vq_result *res, const struct gq_vq_tensor *t, struct gq_quant_layer_report *r) {
    r->rel_error = res->rel_error;
    r->rel_error_pass = res->ref > 0 ? res->objective_pass / res->ref : 0;
    r->update_kept = res->update_kept;
    r->n_slab = res->n_slab, r->n_kept = res->n_kept;
    r->damp = res->damp_rel;
    r->n_dead = res->n_dead;
    r->bits = gq_vq_tensor_bits(t);
    r->bpv = res->bpv;
    r->k = t->k;
    r->group = res->l;
    r->t_em = res->t_em, r->t_assign = res->t_assign, r->t_feedback = res->t_feedback, r->t_update = res->t_update;
}
