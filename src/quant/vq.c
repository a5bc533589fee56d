// vq.c - VQ in GPTVQ: seeds, EM (its rounds are the backend's: backend/
// vqprim.h), codebook rounding, blockwise normalisation and the bpv
// configuration. Contract and formulas: vq.h.
#include "backend/backend.h"
#include "quant/vq.h"
#include "util/common.h"

#include <lapacke.h>

#include <omp.h>

// Stable ascending sort of indices by key (merge sort).
static void argsort(const double *key, int64_t n, int64_t *ord, int64_t *tmp) {
    for (int64_t i = 0; i < n; i++) ord[i] = i;
    for (int64_t w = 1; w < n; w *= 2)
        for (int64_t lo = 0; lo < n; lo += 2 * w) {
            int64_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n, a = lo, b = mid, o = lo;
            while (a < mid && b < hi) tmp[o++] = key[ord[b]] < key[ord[a]] ? ord[b++] : ord[a++];
            while (a < mid) tmp[o++] = ord[a++];
            while (b < hi) tmp[o++] = ord[b++];
            memcpy(ord + lo, tmp + lo, sizeof(int64_t) * (size_t)(hi - lo));
        }
}

enum gq_status gq_vq_seed(const struct gq_vq_data *D, int k, enum gq_vq_init init, uint64_t seed, double *C) {
    const int d = D->d;
    const int64_t n = gq_vq_n_points(D);
    if (n < 1 || k < 1) return gq_fail(GQ_ERR_ARG, "vq: seeding %d centroids from %lld points", k, (long long)n);
    if (init == GQ_VQ_INIT_MAHALANOBIS) {
        double mu[GQ_VQ_MAX_DIM] = {0}, S[GQ_VQ_MAX_DIM * GQ_VQ_MAX_DIM] = {0}, ev[GQ_VQ_MAX_DIM];
        for (int64_t i = 0; i < n; i++)
            for (int a = 0; a < d; a++) mu[a] += D->x[(size_t)i * d + a] / n;
        if (k == 1) {
            memcpy(C, mu, sizeof(double) * d);
            return GQ_OK;
        }
        for (int64_t i = 0; i < n; i++)
            for (int a = 0; a < d; a++)
                for (int b = 0; b < d; b++)
                    S[a * d + b] += (D->x[(size_t)i * d + a] - mu[a]) * (D->x[(size_t)i * d + b] - mu[b]) / n;
        // pseudo-inverse through the eigendecomposition S = V Λ Vᵀ
        if (LAPACKE_dsyev(LAPACK_ROW_MAJOR, 'V', 'U', d, S, d, ev) != 0)
            return gq_fail(GQ_ERR_NUMERIC, "vq: covariance eigendecomposition failed");
        double emax = 0, Pi[GQ_VQ_MAX_DIM * GQ_VQ_MAX_DIM] = {0};
        for (int a = 0; a < d; a++) emax = fmax(emax, ev[a]);
        for (int e = 0; e < d; e++) {
            if (!(ev[e] > 1e-12 * emax)) continue;
            for (int a = 0; a < d; a++)
                for (int b = 0; b < d; b++) Pi[a * d + b] += S[a * d + e] * S[b * d + e] / ev[e];
        }
        double *key = malloc(sizeof(double) * n);
        int64_t *ord = malloc(sizeof(int64_t) * n), *tmp = malloc(sizeof(int64_t) * n);
        if (!key || !ord || !tmp) {
            free(key), free(ord), free(tmp);
            return gq_fail(GQ_ERR_NOMEM, "vq: Mahalanobis seeds for %lld points", (long long)n);
        }
        for (int64_t i = 0; i < n; i++) key[i] = gq_vq_qform(Pi, false, d, D->x + (size_t)i * d, mu);
        argsort(key, n, ord, tmp);
        int64_t step = n / (k - 1);
        for (int m = 0; m < k; m++) {
            int64_t pos = (int64_t)m * step;
            if (pos > n - 1) pos = n - 1;
            memcpy(C + (size_t)m * d, D->x + (size_t)ord[pos] * d, sizeof(double) * d);
        }
        free(key), free(ord), free(tmp);
        return GQ_OK;
    }
    // k-means++ under the slot metrics (dist_i including s2)
    uint64_t st = seed;
    double *best = malloc(sizeof(double) * n);
    if (!best) return gq_fail(GQ_ERR_NOMEM, "vq: k-means++ for %lld points", (long long)n);
    int64_t first = (int64_t)(gq_rng_uniform(&st) * n);
    if (first >= n) first = n - 1;
    memcpy(C, D->x + (size_t)first * d, sizeof(double) * d);
    for (int64_t i = 0; i < n; i++) best[i] = INFINITY;
    for (int m = 1; m < k; m++) {
        const double *cp = C + (size_t)(m - 1) * d;
#pragma omp parallel for schedule(static) if (n >= 4096)
        for (int64_t i = 0; i < n; i++) {
            const double *M = D->metric + (size_t)(i / D->per_slot) * d * d;
            double v = gq_vq_qform(M, D->diag, d, D->x + (size_t)i * d, cp) * (D->s2 ? D->s2[i] : 1.0);
            if (v < best[i]) best[i] = v;
        }
        double tot = 0; // sequential: the draw must not depend on the thread count
        int64_t last = -1;
        for (int64_t i = 0; i < n; i++) {
            tot += best[i];
            if (best[i] > 0) last = i;
        }
        int64_t pick;
        if (tot > 0 && isfinite(tot)) {
            const double u = gq_rng_uniform(&st) * tot;
            double acc = 0;
            pick = last; // if rounding leaves acc <= u to the end: the last point with mass
            for (int64_t i = 0; i < n; i++) {
                acc += best[i];
                if (acc > u && best[i] > 0) {
                    pick = i;
                    break;
                }
            }
        } else { // every point sits on a chosen centroid
            pick = (int64_t)(gq_rng_uniform(&st) * n);
            if (pick >= n) pick = n - 1;
        }
        memcpy(C + (size_t)m * d, D->x + (size_t)pick * d, sizeof(double) * d);
    }
    free(best);
    return GQ_OK;
}

enum gq_status gq_vq_em(const struct gq_vq_data *D, int k, int iters, enum gq_vq_init init, uint64_t seed, double *C,
                        int32_t *idx, struct gq_vq_em_stats *st) {
    GQ_TRY(gq_vq_seed(D, k, init, seed, C));
    return gq_vq_em_run(D, k, iters, C, idx, st);
}

enum gq_status gq_vq_em_run(const struct gq_vq_data *D, int k, int iters, double *C, int32_t *idx,
                            struct gq_vq_em_stats *st) {
    return gq_vq_em_rounds(gq_be(), D, k, iters, C, idx, st);
}

void gq_cb_round(double *C, int n, enum gq_cb_format f, int8_t *q8, uint16_t *h16, float *scale) {
    if (scale) *scale = 1.0f;
    if (f == GQ_CB_F32) {
        for (int i = 0; i < n; i++) C[i] = (float)C[i];
        return;
    }
    if (f == GQ_CB_FP16) {
        for (int i = 0; i < n; i++) {
            uint16_t h = gq_f32_to_f16((float)C[i]);
            if (h16) h16[i] = h;
            C[i] = gq_f16_to_f32(h);
        }
        return;
    }
    double mx = 0;
    for (int i = 0; i < n; i++) mx = fmax(mx, fabs(C[i]));
    float s = gq_f16_to_f32(gq_f32_to_f16((float)(mx / 127)));
    // Outside fp16's range (never for real weights): the nearest finite
    // scale, codes clamped.
    if (mx > 0 && !(s > 0)) s = gq_f16_to_f32(1);
    if (isinf(s)) s = gq_f16_to_f32(0x7bff);
    // fp16 rounding can make s slightly smaller than max/127: clamp at ±127
    for (int i = 0; i < n; i++) {
        int q = 0;
        if (s > 0) {
            double r = nearbyint(C[i] / s);
            q = r > 127 ? 127 : r < -127 ? -127 : (int)r;
        }
        if (q8) q8[i] = (int8_t)q;
        C[i] = (float)q * s;
    }
    if (scale) *scale = s;
}

// ---------------------------------------------------------------------------

static float f16r(float x) { return gq_f16_to_f32(gq_f32_to_f16(x)); }

// Smallest fp16 value >= x (x finite, >= 0, below fp16's max).
static float f16_up(float x) {
    uint16_t h = gq_f32_to_f16(x);
    if (gq_f16_to_f32(h) < x) h++; // positive fp16 bit patterns are ordered
    return gq_f16_to_f32(h);
}

static double block_max(const double *w, int ld, int r, int c0, int c1) {
    double s = 0;
    for (int c = c0; c < c1; c++) s = fmax(s, fabs(w[(size_t)r * ld + c]));
    return s;
}

struct gq_vq_norm gq_vq_norm_fit(const double *w, int rows, int width, int ld, int nb, uint8_t *sint) {
    const int nblk = (width + nb - 1) / nb;
    double lo = INFINITY, hi = -INFINITY, smax = 0;
    for (int r = 0; r < rows; r++)
        for (int b = 0; b < nblk; b++) {
            double s = block_max(w, ld, r, b * nb, (b + 1) * nb < width ? (b + 1) * nb : width);
            if (s > 0) {
                double L = log2(s);
                lo = fmin(lo, L), hi = fmax(hi, L), smax = fmax(smax, s);
            }
        }
    struct gq_vq_norm nm = {.a = 1.0f, .z = 0.0f};
    if (lo <= hi) {
        nm.z = f16r((float)lo);
        if (hi > lo) {
            // a rounded up (not to nearest), so that the top code still covers
            // the largest block after z's rounding: exp2f(15a + z) >= max s.
            // Rounding to nearest could leave it short by 2^(ulp(z)/2 + 15·ulp(a)/2),
            // ~0.3% for weights.
            float t = (float)((hi - nm.z) / 15);
            nm.a = t > 0 ? f16_up(t) : 1.0f; // t <= 0: z alone covers every block
            while (gq_vq_norm_scale(nm, 15) < smax && nm.a < 65504.0f) nm.a = f16_up(nextafterf(nm.a, INFINITY));
        }
    }
    for (int r = 0; r < rows; r++)
        for (int b = 0; b < nblk; b++) {
            double s = block_max(w, ld, r, b * nb, (b + 1) * nb < width ? (b + 1) * nb : width);
            int q = 0;
            if (s > 0) {
                double e = ceil((log2(s) - nm.z) / nm.a);
                q = e < 0 ? 0 : e > 15 ? 15 : (int)e;
                while (q < 15 && gq_vq_norm_scale(nm, q) < s) q++; // float rounding of the scale
            }
            sint[(size_t)r * nblk + b] = (uint8_t)q;
        }
    return nm;
}

// ---------------------------------------------------------------------------

enum gq_status gq_vq_config_from_bpv(double bpv, int d, int k, int64_t l, enum gq_cb_format f, int norm_block,
                                     int svd_rank, struct gq_vq_config *out) {
    memset(out, 0, sizeof *out);
    if (d != 1 && d != 2 && d != 4 && d != 8) return gq_fail(GQ_ERR_ARG, "--vq-dim must be 1, 2, 4 or 8 (got %d)", d);
    if (!(bpv > 0 && isfinite(bpv))) return gq_fail(GQ_ERR_ARG, "--bpv must be positive (got %g)", bpv);
    if (norm_block < 0 || (norm_block && norm_block % d))
        return gq_fail(GQ_ERR_ARG, "--norm-block must be 0 or a positive multiple of --vq-dim %d (got %d)", d, norm_block);
    if (k < 0) return gq_fail(GQ_ERR_ARG, "--k must be a power of two >= 2 or 0 (from --bpv) (got %d)", k);
    if (l < 0) return gq_fail(GQ_ERR_ARG, "--group must be positive or 0 (from --bpv) (got %lld)", (long long)l);
    int log2k;
    if (k > 0) {
        if (k & (k - 1)) return gq_fail(GQ_ERR_ARG, "--k must be a power of two (got %d)", k);
        log2k = 0;
        while ((1 << log2k) < k) log2k++;
    } else {
        double b = ceil(bpv) - 1; // largest integer strictly below bpv
        if (b < 1) return gq_fail(GQ_ERR_ARG, "--bpv %g leaves less than 1 index bit per value (need > 1)", bpv);
        log2k = b * d > 30 ? 31 : (int)b * d;
    }
    if (log2k < 1 || log2k > 20 || (int64_t)d << log2k > (1 << 20))
        return gq_fail(GQ_ERR_ARG, "gptvq: k = 2^%d centroids of dimension %d is out of range (k*d <= 2^20)", log2k, d);
    out->d = d, out->log2k = log2k, out->k = 1 << log2k;
    if (svd_rank < 0 || (svd_rank && (d != 1 || svd_rank > out->k || svd_rank > 256)))
        return gq_fail(GQ_ERR_ARG, "--cb-svd %d: codebook SVD needs --vq-dim 1 and a rank in [1, min(k = %d, 256)]", svd_rank,
                       out->k);
    out->index_bpv = (double)log2k / d;
    double nrm = norm_block ? 4.0 / norm_block : 0;
    double o = bpv - out->index_bpv - nrm;
    double cb = (double)(svd_rank ? svd_rank : out->k * d) * gq_cb_bits(f);
    if (l > 0) {
        out->l = l;
    } else {
        if (!(o > 1e-12))
            return gq_fail(GQ_ERR_ARG,
                           "--bpv %g: the indices take %g bpv%s, leaving no room for codebooks", bpv, out->index_bpv,
                           norm_block ? " and the normalisation codes the rest" : "");
        out->l = (int64_t)ceil(cb / o - 1e-9);
    }
    out->overhead_bpv = cb / (double)out->l + nrm;
    return GQ_OK;
}
