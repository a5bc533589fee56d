// vq.c - VQ primitives of GPTVQ: weighted assignment, M-step, seeds, EM,
// codebook rounding, blockwise normalisation and the bpv configuration.
// Contract and formulas: vq.h.
#include "quant/vq.h"
#include "util/common.h"

#include <lapacke.h>

void gq_vq_precompute(const double *metric, bool diag, int d, const double *C, int k, double *P, double *nrm) {
    for (int m = 0; m < k; m++) {
        const double *c = C + (size_t)m * d;
        double *pm = P + (size_t)m * d, s = 0;
        for (int a = 0; a < d; a++) {
            double v = 0;
            if (diag)
                v = metric[a * d + a] * c[a];
            else
                for (int b = 0; b < d; b++) v += metric[a * d + b] * c[b];
            pm[a] = v;
            s += c[a] * v;
        }
        nrm[m] = s;
    }
}

int gq_vq_nearest(const double *x, int d, const double *P, const double *nrm, int k) {
    int best = 0;
    double bv = INFINITY;
    for (int m = 0; m < k; m++) {
        const double *pm = P + (size_t)m * d;
        double dot = 0;
        for (int a = 0; a < d; a++) dot += x[a] * pm[a];
        double v = nrm[m] - 2 * dot;
        if (v < bv) bv = v, best = m;
    }
    return best;
}

// (x − c)ᵀ M (x − c)
static double qform(const double *M, bool diag, int d, const double *x, const double *c) {
    double e[GQ_VQ_MAX_DIM], s = 0;
    for (int a = 0; a < d; a++) e[a] = x[a] - c[a];
    if (diag) {
        for (int a = 0; a < d; a++) s += M[a * d + a] * e[a] * e[a];
        return s;
    }
    for (int a = 0; a < d; a++) {
        double r = 0;
        for (int b = 0; b < d; b++) r += M[a * d + b] * e[b];
        s += e[a] * r;
    }
    return s;
}

double gq_vq_assign(const struct gq_vq_data *D, const double *C, int k, int32_t *idx, double *dist) {
    const int d = D->d, ns = D->n_slots, ps = D->per_slot;
    double *part = malloc(sizeof(double) * (ns ? ns : 1));
    if (!part) return NAN;
#pragma omp parallel
    {
        double *P = malloc(sizeof(double) * (size_t)k * d), *nrm = malloc(sizeof(double) * k);
#pragma omp for schedule(dynamic, 1)
        for (int s = 0; s < ns; s++) {
            const double *M = D->metric + (size_t)s * d * d;
            double acc = 0;
            if (P && nrm) gq_vq_precompute(M, D->diag, d, C, k, P, nrm);
            for (int i = 0; i < ps; i++) {
                size_t pi = (size_t)s * ps + i;
                const double *x = D->x + pi * d;
                int m = P && nrm ? gq_vq_nearest(x, d, P, nrm, k) : 0;
                idx[pi] = m;
                double v = qform(M, D->diag, d, x, C + (size_t)m * d) * (D->s2 ? D->s2[pi] : 1.0);
                if (dist) dist[pi] = v;
                acc += v;
            }
            part[s] = acc;
        }
        free(P), free(nrm);
    }
    double tot = 0;
    for (int s = 0; s < ns; s++) tot += part[s];
    free(part);
    return tot;
}

int gq_vq_mstep(const struct gq_vq_data *D, const int32_t *idx, int k, double *C) {
    const int d = D->d, dd = d * d;
    const int64_t n = gq_vq_n_points(D);
    double *A = calloc((size_t)k * dd, sizeof(double)), *b = calloc((size_t)k * d, sizeof(double));
    int64_t *cnt = calloc((size_t)k, sizeof(int64_t));
    if (!A || !b || !cnt) {
        free(A), free(b), free(cnt);
        return k; // out of memory: nothing updated
    }
    for (int64_t i = 0; i < n; i++) {
        const int m = idx[i];
        const double *M = D->metric + (size_t)(i / D->per_slot) * dd, *x = D->x + (size_t)i * d;
        const double w = D->s2 ? D->s2[i] : 1.0;
        double *Am = A + (size_t)m * dd, *bm = b + (size_t)m * d;
        cnt[m]++;
        if (D->diag) {
            for (int a = 0; a < d; a++) {
                Am[a * d + a] += w * M[a * d + a];
                bm[a] += w * M[a * d + a] * x[a];
            }
        } else {
            for (int a = 0; a < d; a++)
                for (int c = 0; c < d; c++) {
                    Am[a * d + c] += w * M[a * d + c];
                    bm[a] += w * M[a * d + c] * x[c];
                }
        }
    }
    int empty = 0;
    for (int m = 0; m < k; m++) {
        if (!cnt[m]) {
            empty++;
            continue;
        }
        double *Am = A + (size_t)m * dd, *bm = b + (size_t)m * d, *c = C + (size_t)m * d;
        if (D->diag) {
            for (int a = 0; a < d; a++)
                if (Am[a * d + a] > 0) c[a] = bm[a] / Am[a * d + a];
        } else {
            double Af[GQ_VQ_MAX_DIM * GQ_VQ_MAX_DIM], bf[GQ_VQ_MAX_DIM];
            memcpy(Af, Am, sizeof(double) * dd);
            memcpy(bf, bm, sizeof(double) * d);
            if (LAPACKE_dposv(LAPACK_ROW_MAJOR, 'U', d, 1, Af, d, bf, 1) == 0) {
                bool ok = true;
                for (int a = 0; a < d; a++) ok &= isfinite(bf[a]);
                if (ok) memcpy(c, bf, sizeof(double) * d);
            }
        }
    }
    free(A), free(b), free(cnt);
    return empty;
}

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
        for (int64_t i = 0; i < n; i++) key[i] = qform(Pi, false, d, D->x + (size_t)i * d, mu);
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
    // k-means++ under the slot metrics
    uint64_t st = seed;
    double *best = malloc(sizeof(double) * n);
    if (!best) return gq_fail(GQ_ERR_NOMEM, "vq: k-means++ for %lld points", (long long)n);
    int64_t first = (int64_t)(gq_rng_uniform(&st) * n);
    if (first >= n) first = n - 1;
    memcpy(C, D->x + (size_t)first * d, sizeof(double) * d);
    for (int64_t i = 0; i < n; i++) best[i] = INFINITY;
    for (int m = 1; m < k; m++) {
        const double *cp = C + (size_t)(m - 1) * d;
        double tot = 0;
        for (int64_t i = 0; i < n; i++) {
            const double *M = D->metric + (size_t)(i / D->per_slot) * d * d;
            double v = qform(M, D->diag, d, D->x + (size_t)i * d, cp) * (D->s2 ? D->s2[i] : 1.0);
            if (v < best[i]) best[i] = v;
            tot += best[i];
        }
        int64_t pick = n - 1;
        if (tot > 0) {
            double u = gq_rng_uniform(&st) * tot, acc = 0;
            for (int64_t i = 0; i < n; i++) {
                acc += best[i];
                if (acc > u && best[i] > 0) {
                    pick = i;
                    break;
                }
            }
        } else {
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
    const int d = D->d;
    const int64_t n = gq_vq_n_points(D);
    GQ_TRY(gq_vq_seed(D, k, init, seed, C));
    double *dist = malloc(sizeof(double) * n);
    int32_t *prev = malloc(sizeof(int32_t) * n);
    if (!dist || !prev) {
        free(dist), free(prev);
        return gq_fail(GQ_ERR_NOMEM, "vq: EM buffers for %lld points", (long long)n);
    }
    double obj = gq_vq_assign(D, C, k, idx, dist);
    if (st && st->trace) st->trace[0] = obj;
    int it = 0, reseeded = 0;
    char *used = malloc((size_t)k);
    for (; it < iters && used; it++) {
        int empty = gq_vq_mstep(D, idx, k, C);
        if (empty) { // move each empty centroid onto the worst-served point
            memset(used, 0, (size_t)k);
            for (int64_t i = 0; i < n; i++) used[idx[i]] = 1;
            for (int m = 0; m < k; m++) {
                if (used[m]) continue;
                int64_t w = -1;
                for (int64_t i = 0; i < n; i++)
                    if (w < 0 || dist[i] > dist[w]) w = i;
                if (w < 0 || !(dist[w] > 0)) break; // every point sits on a centroid
                memcpy(C + (size_t)m * d, D->x + (size_t)w * d, sizeof(double) * d);
                idx[w] = m, dist[w] = 0, used[m] = 1;
                reseeded++;
            }
        }
        memcpy(prev, idx, sizeof(int32_t) * n);
        obj = gq_vq_assign(D, C, k, idx, dist);
        if (st && st->trace) st->trace[it + 1] = obj;
        if (!memcmp(prev, idx, sizeof(int32_t) * n) && !empty) {
            it++;
            break;
        }
    }
    free(used), free(dist), free(prev);
    if (st) st->iters = it, st->n_reseeded = reseeded, st->objective = obj;
    return GQ_OK;
}

// ---------------------------------------------------------------------------

int gq_cb_bits(enum gq_cb_format f) { return f == GQ_CB_INT8 ? 8 : f == GQ_CB_FP16 ? 16 : 32; }
int gq_cb_scale_bits(enum gq_cb_format f) { return f == GQ_CB_INT8 ? 16 : 0; }

uint16_t gq_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000, mant = x & 0x7fffff;
    int exp = (int)((x >> 23) & 0xff);
    if (exp == 0xff) return (uint16_t)(sign | 0x7c00 | (mant ? 0x200 | (mant >> 13) : 0));
    int e = exp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7c00);
    if (e <= 0) { // subnormal or zero: shift the full mantissa, round to nearest even
        if (e < -10) return (uint16_t)sign;
        uint32_t m = mant | 0x800000;
        int shift = 14 - e;
        uint32_t h = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((uint32_t)e << 10) | (mant >> 13), rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++; // may carry into the exponent: still correct
    return (uint16_t)(sign | h);
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
    if (mx > 0 && !(s > 0)) s = gq_f16_to_f32(1); // below fp16's smallest subnormal: cannot happen for real weights
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

struct gq_vq_norm gq_vq_norm_fit(const double *w, int rows, int width, int ld, int nb, uint8_t *sint) {
    const int nblk = (width + nb - 1) / nb;
    double lo = INFINITY, hi = -INFINITY;
    for (int r = 0; r < rows; r++)
        for (int b = 0; b < nblk; b++) {
            double s = 0;
            for (int c = b * nb; c < width && c < (b + 1) * nb; c++) s = fmax(s, fabs(w[(size_t)r * ld + c]));
            if (s > 0) {
                double L = log2(s);
                lo = fmin(lo, L), hi = fmax(hi, L);
            }
        }
    struct gq_vq_norm nm = {.a = 1.0f, .z = 0.0f};
    if (lo <= hi) {
        nm.z = f16r((float)lo);
        nm.a = hi > lo ? f16r((float)((hi - lo) / 15)) : 1.0f;
        if (!(nm.a > 0)) nm.a = 1.0f;
    }
    for (int r = 0; r < rows; r++)
        for (int b = 0; b < nblk; b++) {
            double s = 0;
            for (int c = b * nb; c < width && c < (b + 1) * nb; c++) s = fmax(s, fabs(w[(size_t)r * ld + c]));
            int q = 0;
            if (s > 0) {
                q = (int)ceil((log2(s) - nm.z) / nm.a);
                if (q < 0) q = 0;
                while (q < 15 && gq_vq_norm_scale(nm, q) < s) q++; // fp16 rounding of a, z
                if (q > 15) q = 15;
            }
            sint[(size_t)r * nblk + b] = (uint8_t)q;
        }
    return nm;
}

// ---------------------------------------------------------------------------

enum gq_status gq_vq_config_from_bpv(double bpv, int d, int k, int64_t l, enum gq_cb_format f, int norm_block,
                                     struct gq_vq_config *out) {
    memset(out, 0, sizeof *out);
    if (d != 1 && d != 2 && d != 4 && d != 8) return gq_fail(GQ_ERR_ARG, "--vq-dim must be 1, 2, 4 or 8 (got %d)", d);
    if (!(bpv > 0 && isfinite(bpv))) return gq_fail(GQ_ERR_ARG, "--bpv must be positive (got %g)", bpv);
    if (norm_block < 0 || (norm_block && norm_block % d))
        return gq_fail(GQ_ERR_ARG, "--norm-block must be 0 or a positive multiple of --vq-dim %d (got %d)", d, norm_block);
    int log2k;
    if (k > 0) {
        if (k & (k - 1)) return gq_fail(GQ_ERR_ARG, "--k must be a power of two (got %d)", k);
        log2k = 0;
        while ((1 << log2k) < k) log2k++;
    } else {
        int b = (int)ceil(bpv) - 1; // largest integer strictly below bpv
        if (b < 1) return gq_fail(GQ_ERR_ARG, "--bpv %g leaves less than 1 index bit per value (need > 1)", bpv);
        log2k = b * d;
    }
    if (log2k < 1 || (int64_t)d << log2k > (1 << 20))
        return gq_fail(GQ_ERR_ARG, "gptvq: k = 2^%d centroids of dimension %d is out of range (k*d <= 2^20)", log2k, d);
    out->d = d, out->log2k = log2k, out->k = 1 << log2k;
    out->index_bpv = (double)log2k / d;
    double nrm = norm_block ? 4.0 / norm_block : 0;
    double o = bpv - out->index_bpv - nrm;
    double cb = (double)out->k * d * gq_cb_bits(f);
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
