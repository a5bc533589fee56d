// gptq.c - GPTQ (Frantar et al. 2022, "fasterquant") on one weight matrix.
//
// The objective is ‖WX - QX‖² = tr(ΔHΔᵀ) (GPTVQ paper Eq. 2). Columns are
// quantized left to right; after column q the error is spread over the
// columns not yet quantized with the OBS update (Eq. 3)
//     δ = -(w_q - quant(w_q)) / [H⁻¹]_qq · [H⁻¹]_{q,:}
// taken from the inverse Hessian of the remaining columns. GPTQ's observation:
// row q of the upper Cholesky factor U of H⁻¹ (H⁻¹ = UᵀU), divided by U_qq,
// is exactly that row of the successively reduced inverse, so
//     err_q = (w_q - quant(w_q)) / U_qq,   w_j -= err_q · U_qj  (j > q).
// Lazy batches: inside a block of B columns the update is applied only to the
// block; the columns right of it get all B updates at once with one GEMM,
// W[:, i2:] -= Err · U[i1:i2, i2:].
//
// Group parameters.
//  - default (static_groups off): computed when the first column of a group
//    is reached, from the weights as updated by every earlier column. Columns
//    of the group that lie right of the current block have not had the
//    block's pending updates yet; we add them to a scratch copy first
//    (w_c - Σ_k err_k U_kc). Reference GPTQ reads the stale W there when a
//    group starts inside a block; our way gives the same result for every B
//    (the plain column-by-column recursion), which the tests check.
//  - act_order (or static_groups): all parameters are computed up front from
//    the original W, per ORIGINAL column group, as GPTQ's static_groups=True.
//    With act-order the columns of one group are visited at scattered
//    positions, so "first column of the group" has no useful meaning, and
//    static groups keep group membership = original column / group_size,
//    so the packed format needs no g_idx permutation.
//
// Numerics: H, its inverse and the Cholesky factor are in double (LAPACK),
// and so is the working copy of W; the outputs are float.
#include "backend/backend.h"
#include "quant/quant.h"
#include "util/common.h"
#include "util/dist.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#define GQ_GPTQ_MAX_TRIES 7

// Stable sort of column indices by descending key (ties: lower index first).
void gq_sort_desc(int32_t *perm, const double *key, int n) {
    for (int i = 0; i < n; i++) perm[i] = i;
    // Bottom-up merge sort (stable, O(n log n)).
    int32_t *tmp = malloc(sizeof(int32_t) * (size_t)n);
    if (!tmp) { // fall back to insertion sort
        for (int i = 1; i < n; i++) {
            int32_t v = perm[i];
            int j = i;
            while (j > 0 && key[perm[j - 1]] < key[v]) perm[j] = perm[j - 1], j--;
            perm[j] = v;
        }
        return;
    }
    for (int w = 1; w < n; w *= 2) {
        for (int lo = 0; lo < n; lo += 2 * w) {
            int mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            int a = lo, b = mid, k = lo;
            while (a < mid && b < hi) tmp[k++] = key[perm[b]] > key[perm[a]] ? perm[b++] : perm[a++];
            while (a < mid) tmp[k++] = perm[a++];
            while (b < hi) tmp[k++] = perm[b++];
        }
        memcpy(perm, tmp, sizeof(int32_t) * (size_t)n);
    }
    free(tmp);
}

// Shared with GPTVQ: dead inputs, the column order and the damped Cholesky
// factor of H⁻¹ with the retry ladder.
enum gq_status gq_hinv_prepare(const float *H, int n, float damp, bool act_order, const int32_t *perm_in,
                               struct gq_hinv *o) {
    memset(o, 0, sizeof *o);
    if (n < 1) return gq_fail(GQ_ERR_ARG, "gptq: empty Hessian (n = %d)", n);
    size_t nn;
    if (!gq_mul_ok((size_t)n, (size_t)n, &nn)) return gq_fail(GQ_ERR_NOMEM, "gptq: Hessian %d x %d too large", n, n);
    for (size_t i = 0; i < nn; i++)
        if (!isfinite(H[i]))
            return gq_fail(GQ_ERR_NUMERIC, "gptq: non-finite Hessian entry (%zu, %zu)", i / (size_t)n,
                           i % (size_t)n);
    o->n = n;
    o->U = malloc(sizeof(double) * nn);
    o->perm = malloc(sizeof(int32_t) * n);
    o->diag = malloc(sizeof(double) * n);
    if (!o->U || !o->perm || !o->diag) {
        gq_hinv_free(o);
        return gq_fail(GQ_ERR_NOMEM, "gptq: Hessian buffers (%d x %d)", n, n);
    }
    // Dead inputs (never active in the calibration data): H_ii = 1 keeps H
    // invertible and W[:, i] = 0 is the natural quantized value (GPTQ).
    for (int i = 0; i < n; i++) {
        o->diag[i] = H[(size_t)i * n + i];
        if (o->diag[i] == 0) o->diag[i] = 1, o->n_dead++;
    }
    if (perm_in)
        memcpy(o->perm, perm_in, sizeof(int32_t) * n);
    else if (act_order)
        gq_sort_desc(o->perm, o->diag, n);
    else
        for (int i = 0; i < n; i++) o->perm[i] = i;

    // Damping λ = damp · mean(diag H) (after the dead-input fix, as GPTQ).
    // If a Cholesky step fails (H indefinite from a bad accumulation, or too
    // ill-conditioned for H⁻¹ to factor), retry with 10× the damping and a
    // floor on the diagonal.
    double mean = 0;
    for (int i = 0; i < n; i++) mean += o->diag[i];
    mean /= n;
    if (!(mean > 0)) mean = 1.0;
    double damp_rel = damp;
    int tries = 0, info = 0;
    for (;;) {
        tries++;
        double lam = damp_rel * mean, floor = tries > 1 ? 1e-8 * mean : -INFINITY;
        for (int i = 0; i < n; i++) {
            int pi = o->perm[i];
            for (int j = 0; j < n; j++) o->U[(size_t)i * n + j] = H[(size_t)pi * n + o->perm[j]];
            double d = o->diag[pi];
            o->U[(size_t)i * n + i] = (d > floor ? d : floor) + lam;
        }
        enum gq_status bs = gq_be()->chol_inverse_upper(o->U, n, &info);
        if (bs != GQ_OK) {
            gq_hinv_free(o);
            return bs;
        }
        if (!info) {
            o->damp_abs = lam;
            break;
        }
        if (tries >= GQ_GPTQ_MAX_TRIES) {
            gq_hinv_free(o);
            return gq_fail(GQ_ERR_NUMERIC,
                           "gptq: Hessian (%d x %d) not positive definite even with damping %g x "
                           "mean(diag H) (LAPACK info %d after %d tries)",
                           n, n, damp_rel, info, tries);
        }
        damp_rel = damp_rel > 0 ? damp_rel * 10 : 0.01;
    }
    if (tries > 1)
        fprintf(stderr, "gptvq: warning: gptq: Hessian (%d x %d) needed damping %g x mean(diag H) "
                        "(asked %g, %d Cholesky tries)\n",
                n, n, damp_rel, (double)damp, tries);
    o->damp_rel = damp_rel;
    o->n_tries = tries;
    return GQ_OK;
}

void gq_hinv_free(struct gq_hinv *h) {
    free(h->U), free(h->perm), free(h->diag);
    h->U = NULL, h->perm = NULL, h->diag = NULL;
}

enum gq_status gq_permuted_weights(const float *W, int rows, int n, const float *H, const int32_t *perm,
                                   double *Wd) {
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < n; i++) {
            int c = perm[i];
            Wd[(size_t)r * n + i] = H[(size_t)c * n + c] == 0 ? 0.0 : (double)W[(size_t)r * n + c];
        }
    return GQ_OK;
}

int gq_gptq_n_slabs(int rows, int slab_rows) {
    if (slab_rows <= 0 || rows < 1) return 1;
    int ns = (rows + slab_rows - 1) / slab_rows;
    return ns > GQ_GPTQ_MAX_SLABS ? GQ_GPTQ_MAX_SLABS : ns;
}

void gq_gptq_result_total(struct gq_gptq_result *res) {
    double obj = 0, ref = 0, rtn = 0;
    bool fb = false;
    for (int s = 0; s < res->n_slab; s++) // slab order: the same sums however the slabs were computed
        obj += res->slab[s].objective, ref += res->slab[s].ref, rtn += res->slab[s].rtn_objective,
            fb |= res->slab[s].rtn_fallback != 0;
    res->objective = obj, res->rtn_objective = rtn, res->rtn_fallback = fb;
    res->rel_error = ref > 0 ? obj / ref : 0.0;
    res->rtn_rel_error = ref > 0 ? rtn / ref : 0.0;
}

struct gptq_buf {
    double *Wd, *Err, *scratch;
    float *Q, *ssc, *szr, *cur_s, *cur_z;
    uint8_t *codes;
    struct gq_hinv hv;
};

static void buf_free(struct gptq_buf *b) {
    free(b->Wd), free(b->Err), free(b->scratch);
    free(b->Q), free(b->ssc), free(b->szr), free(b->cur_s), free(b->cur_z);
    free(b->codes);
    gq_hinv_free(&b->hv);
}

enum gq_status gq_gptq_quantize(float *W, int rows, int cols, const float *H,
                                const struct gq_quant_params *p, struct gq_gptq_result *res) {
    GQ_TRY(gq_quant_params_check(p, rows, cols));
    if (!W || !H || !res) return gq_fail(GQ_ERR_ARG, "gptq: NULL W, H or result");
    const int n = cols, maxq = (1 << p->wbits) - 1;
    const int gs = gq_quant_group_cols(p, cols), ng = gq_quant_n_groups(p, cols);
    const int ns = res->n_slab = gq_gptq_n_slabs(rows, res->slab_rows);
    memset(res->slab, 0, sizeof res->slab[0] * ns);
    const int B = p->block_size > 0 ? p->block_size : 128;
    const bool stat = p->act_order || p->static_groups, mf = gq_quant_minform(p);
    size_t nn, nw;
    if (!gq_mul_ok((size_t)n, (size_t)n, &nn) || !gq_mul_ok((size_t)rows, (size_t)n, &nw))
        return gq_fail(GQ_ERR_NOMEM, "gptq: shape (%d, %d) too large", rows, cols);
    for (size_t i = 0; i < nw; i++)
        if (!isfinite(W[i]))
            return gq_fail(GQ_ERR_NUMERIC, "gptq: non-finite weight at row %zu col %zu", i / (size_t)n,
                           i % (size_t)n);
    int nt = 1;
#ifdef _OPENMP
    nt = omp_get_max_threads();
#endif

    struct gptq_buf b = {0};
    GQ_TRY(gq_hinv_prepare(H, n, p->damp, p->act_order, NULL, &b.hv));
    b.Wd = malloc(sizeof(double) * nw);
    b.Err = malloc(sizeof(double) * (size_t)rows * B);
    b.scratch = malloc(sizeof(double) * (size_t)gs * nt);
    b.Q = malloc(sizeof(float) * nw);
    b.codes = malloc(nw);
    b.cur_s = malloc(sizeof(float) * rows);
    b.cur_z = malloc(sizeof(float) * rows);
    if (stat) {
        b.ssc = malloc(sizeof(float) * (size_t)rows * ng);
        b.szr = malloc(sizeof(float) * (size_t)rows * ng);
    }
    if (!b.Wd || !b.Err || !b.scratch || !b.Q || !b.codes || !b.cur_s || !b.cur_z ||
        (stat && (!b.ssc || !b.szr))) {
        buf_free(&b);
        return gq_fail(GQ_ERR_NOMEM, "gptq: buffers for a (%d, %d) layer", rows, cols);
    }
    const int32_t *perm = b.hv.perm;
    if (stat) { // static group parameters from the original W (dead inputs zeroed)
        double *x = b.scratch;
        for (int r = 0; r < rows; r++)
            for (int g = 0; g < ng; g++) {
                int c0 = g * gs, len = n - c0 < gs ? n - c0 : gs;
                for (int c = 0; c < len; c++)
                    x[c] = H[(size_t)(c0 + c) * n + c0 + c] == 0 ? 0.0 : (double)W[(size_t)r * n + c0 + c];
                gq_quant_find_params(x, len, p, &b.ssc[(size_t)r * ng + g], &b.szr[(size_t)r * ng + g]);
            }
    }
    gq_permuted_weights(W, rows, n, H, perm, b.Wd);
    const double damp_rel = b.hv.damp_rel;
    res->damp_abs = b.hv.damp_abs;

    const double *U = b.hv.U;
    // U stays on the device for the lazy feedback GEMMs (a no-op on the CPU)
    enum gq_status hs = gq_be()->hold(U, sizeof(double) * (size_t)n * n, false);
    if (hs != GQ_OK) {
        buf_free(&b);
        return hs;
    }
    // Slab by slab (each with its own lazy-update GEMMs: its bits do not
    // depend on which others are done in the same call).
    for (int sl = 0; sl < ns; sl++) {
        if (res->slab_own && !res->slab_own[sl]) continue;
        int64_t r0, r1;
        gq_dist_span(rows, sl, ns, &r0, &r1);
        for (int i1 = 0; i1 < n; i1 += B) {
            const int i2 = i1 + B < n ? i1 + B : n, count = i2 - i1;
#pragma omp parallel for schedule(static)
            for (int r = r0; r < r1; r++) {
                int t = 0;
#ifdef _OPENMP
                t = omp_get_thread_num();
#endif
                double *w = b.Wd + (size_t)r * n, *e = b.Err + (size_t)r * B;
                for (int i = i1; i < i2; i++) {
                    float s, z;
                    if (stat) {
                        size_t gi = (size_t)r * ng + perm[i] / gs;
                        s = b.ssc[gi], z = b.szr[gi];
                    } else {
                        if (i % gs == 0) {
                            int gend = i + gs < n ? i + gs : n;
                            double *x = b.scratch + (size_t)t * gs;
                            for (int c = i; c < gend; c++) {
                                double v = w[c];
                                if (c >= i2) // pending updates of this block's columns i1..i-1
                                    for (int k = 0; k < i - i1; k++) v -= e[k] * U[(size_t)(i1 + k) * n + c];
                                x[c - i] = v;
                            }
                            gq_quant_find_params(x, gend - i, p, &b.cur_s[r], &b.cur_z[r]);
                            if (res->scales) res->scales[(size_t)r * ng + i / gs] = b.cur_s[r];
                            if (res->zeros) res->zeros[(size_t)r * ng + i / gs] = b.cur_z[r];
                        }
                        s = b.cur_s[r], z = b.cur_z[r];
                    }
                    int code;
                    float q = gq_quant_value(w[i], s, z, maxq, mf, &code);
                    size_t o = (size_t)r * n + perm[i];
                    b.Q[o] = q;
                    b.codes[o] = (uint8_t)code;
                    double err = (w[i] - q) / U[(size_t)i * n + i];
                    e[i - i1] = err;
                    const double *u = U + (size_t)i * n;
                    for (int j = i + 1; j < i2; j++) w[j] -= err * u[j];
                }
            }
            if (i2 < n) {
                enum gq_status bs = gq_be()->dgemm(false, false, r1 - r0, n - i2, count, -1.0, b.Err + (size_t)r0 * B, B,
                                                   U + (size_t)i1 * n + i2, n, 1.0, b.Wd + (size_t)r0 * n + i2, n);
                if (bs != GQ_OK) {
                    gq_be()->release(U);
                    buf_free(&b);
                    return bs;
                }
            }
        }
    }
    if ((hs = gq_be()->release(U)) != GQ_OK) {
        buf_free(&b);
        return hs;
    }

    free(b.hv.U), b.hv.U = NULL; // the objectives need their own n² doubles
    // Per slab: the objective, RTN's on the same grid (reusing Wd, no longer
    // needed, as its output), and the fallback when RTN's is lower.
    float *rs = malloc(sizeof(float) * (size_t)rows * ng), *rz = malloc(sizeof(float) * (size_t)rows * ng);
    enum gq_status st = rs && rz ? GQ_OK : gq_fail(GQ_ERR_NOMEM, "gptq: RTN scales of a (%d, %d) layer", rows, cols);
    float *Qr = (float *)b.Wd;
    for (int sl = 0; sl < ns && st == GQ_OK; sl++) {
        if (res->slab_own && !res->slab_own[sl]) continue;
        int64_t r0, r1;
        gq_dist_span(rows, sl, ns, &r0, &r1);
        const int nr = (int)(r1 - r0);
        const size_t o = (size_t)r0 * n, og = (size_t)r0 * ng;
        for (size_t i = o; i < o + (size_t)nr * n; i++)
            if (!isfinite(b.Q[i])) {
                st = gq_fail(GQ_ERR_NUMERIC, "gptq: non-finite quantized weight at row %zu col %zu (damping %g)",
                             i / (size_t)n, i % (size_t)n, damp_rel);
                break;
            }
        struct gq_gptq_slab *ss = &res->slab[sl];
        memset(ss, 0, sizeof *ss);
        if (st == GQ_OK) st = gq_layer_objective(W + o, b.Q + o, nr, cols, H, &ss->objective, &ss->ref);
        if (st == GQ_OK) st = gq_rtn_quantize(W + o, nr, cols, p, Qr + o, rs + og, rz + og);
        if (st == GQ_OK) st = gq_layer_objective(W + o, Qr + o, nr, cols, H, &ss->rtn_objective, NULL);
        if (st != GQ_OK) break;
        ss->rtn_fallback = ss->rtn_objective < ss->objective;
        if (ss->rtn_fallback) {
            for (int r = r0; r < r1; r++)
                for (int c = 0; c < n; c++) {
                    size_t gi = (size_t)r * ng + c / gs;
                    int code;
                    (void)gq_quant_value(W[(size_t)r * n + c], rs[gi], rz[gi], maxq, mf, &code);
                    b.codes[(size_t)r * n + c] = (uint8_t)code;
                }
            if (res->scales) memcpy(res->scales + og, rs + og, sizeof(float) * (size_t)nr * ng);
            if (res->zeros) memcpy(res->zeros + og, rz + og, sizeof(float) * (size_t)nr * ng);
            memcpy(b.Q + o, Qr + o, sizeof(float) * (size_t)nr * n);
            ss->objective = ss->rtn_objective;
        } else if (stat && (res->scales || res->zeros)) {
            if (res->scales) memcpy(res->scales + og, b.ssc + og, sizeof(float) * (size_t)nr * ng);
            if (res->zeros) memcpy(res->zeros + og, b.szr + og, sizeof(float) * (size_t)nr * ng);
        }
        if (res->codes) memcpy(res->codes + o, b.codes + o, (size_t)nr * n);
    }
    free(rs), free(rz);
    if (st != GQ_OK) {
        buf_free(&b);
        return st;
    }
    for (int sl = 0; sl < ns; sl++) // W last: untouched on failure
        if (!res->slab_own || res->slab_own[sl]) {
            int64_t r0, r1;
            gq_dist_span(rows, sl, ns, &r0, &r1);
            memcpy(W + r0 * n, b.Q + r0 * n, sizeof(float) * (size_t)(r1 - r0) * n);
        }
    if (res->perm) { // GPTQ's order; identity where RTN was kept throughout
        bool any_gptq = false;
        for (int sl = 0; sl < ns; sl++) any_gptq |= !res->slab[sl].rtn_fallback && (!res->slab_own || res->slab_own[sl]);
        for (int i = 0; i < n; i++) res->perm[i] = any_gptq ? b.hv.perm[i] : i;
    }
    res->damp_rel = damp_rel;
    res->n_tries = b.hv.n_tries;
    res->n_dead = b.hv.n_dead;
    gq_gptq_result_total(res);
    buf_free(&b);
    return GQ_OK;
}
