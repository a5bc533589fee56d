// test_vq.c - VQ primitives (vq.h) against references written here: an
// exhaustive nearest-centroid search straight from the definition of
// dist_i(c), weighted means / a small Gaussian elimination for the M-step,
// a 2-D Mahalanobis ordering with the explicit inverse covariance, fp16
// rounding by nearest-neighbour search (and the compiler's _Float16 where it
// has one), the normalisation formulas of App. I and the configurations of
// the paper's table (§2.2: 2D 2.125 bpv -> k = 16, l = 2048, ...).
#include "quant/vq.h"
#include "backend/vqform.h"
#include "test.h"
#include "util/common.h"

#include <omp.h>
#include <stdint.h>

// splitmix64 normals (test_rand.h's generator, without its unused matrix helpers)
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng_u64(void) { return gq_splitmix64(&rng_state); }
static double rng_unif(void) { return gq_rng_uniform(&rng_state); }
static double rng_normal(void) {
    double u = rng_unif(), v = rng_unif();
    if (u < 1e-300) u = 1e-300;
    return sqrt(-2 * log(u)) * cos(2 * M_PI * v);
}

// ---------------------------------------------------------------------------
// Data sets and the distance from its definition.

struct dataset {
    struct gq_vq_data D;
    double *x, *s2, *metric;
};

// Random symmetric PSD d×d: AᵀA with A (r, d); r < d gives a singular metric.
static void rand_psd(int d, int r, double *M) {
    double A[GQ_VQ_MAX_DIM * GQ_VQ_MAX_DIM];
    for (int i = 0; i < r * d; i++) A[i] = rng_normal();
    for (int a = 0; a < d; a++)
        for (int b = 0; b < d; b++) {
            double s = 0;
            for (int t = 0; t < r; t++) s += A[t * d + a] * A[t * d + b];
            M[a * d + b] = s;
        }
}

// ns slots of ps points; diag metrics still get (ignored) off-diagonals.
static struct dataset make_data(int d, int ns, int ps, bool diag, bool with_s2) {
    struct dataset s;
    const int64_t n = (int64_t)ns * ps;
    s.x = malloc(sizeof(double) * n * d);
    s.s2 = malloc(sizeof(double) * n);
    s.metric = malloc(sizeof(double) * ns * d * d);
    for (int64_t i = 0; i < n * d; i++) s.x[i] = rng_normal();
    for (int64_t i = 0; i < n; i++) s.s2[i] = exp(rng_normal());
    for (int sl = 0; sl < ns; sl++) {
        double *M = s.metric + (size_t)sl * d * d;
        rand_psd(d, sl % 3 == 2 && d > 1 ? d - 1 : d, M);
        if (diag)
            for (int a = 0; a < d; a++) M[a * d + a] = fabs(M[a * d + a]) + 0.1 * rng_unif();
    }
    s.D = (struct gq_vq_data){.d = d, .n_slots = ns, .per_slot = ps, .x = s.x, .s2 = with_s2 ? s.s2 : NULL,
                              .metric = s.metric, .diag = diag};
    return s;
}
static void free_data(struct dataset *s) { free(s->x), free(s->s2), free(s->metric); }

// dist_i(c) = s2_i · (x_i − c)ᵀ M (x_i − c), the diagonal of M only when diag.
static double ref_dist(const struct gq_vq_data *D, int64_t i, const double *c) {
    const int d = D->d;
    const double *M = D->metric + (size_t)(i / D->per_slot) * d * d, *x = D->x + (size_t)i * d;
    double s = 0;
    for (int a = 0; a < d; a++)
        for (int b = 0; b < d; b++)
            if (!D->diag || a == b) s += (x[a] - c[a]) * M[a * d + b] * (x[b] - c[b]);
    return (D->s2 ? D->s2[i] : 1.0) * s;
}

// ---------------------------------------------------------------------------
// 1. Assignment == exhaustive search.

// Checks idx/dist/objective of one assignment against brute force. Near-ties
// (the GEMM form and the direct form round differently) may pick either
// centroid; exact duplicates must pick the lowest index.
static void check_assign(const struct gq_vq_data *D, const double *C, int k, const char *what) {
    const int64_t n = gq_vq_n_points(D);
    const int d = D->d;
    int32_t *idx = malloc(sizeof(int32_t) * n);
    double *dist = malloc(sizeof(double) * n);
    double obj = gq_vq_assign(D, C, k, idx, dist);
    double ref_obj = 0, scale = 0;
    int64_t bad_idx = 0, bad_dist = 0, mism = 0, bad_dup = 0, bad_nearest = 0;
    double *P = malloc(sizeof(double) * k * d), *nrm = malloc(sizeof(double) * k);
    int64_t cur_slot = -1;
    for (int64_t i = 0; i < n; i++) {
        double best = INFINITY;
        int bi = 0;
        for (int m = 0; m < k; m++) {
            double v = ref_dist(D, i, C + (size_t)m * d);
            if (v < best) best = v, bi = m;
        }
        double mine = ref_dist(D, i, C + (size_t)idx[i] * d);
        // size of the terms the GEMM form cancels: s2·(|x|² + max|c|²)·|M|
        double xx = 0, cc = 0, mm = 0;
        const double *M = D->metric + (size_t)(i / D->per_slot) * d * d;
        for (int a = 0; a < d; a++) xx += D->x[i * d + a] * D->x[i * d + a];
        for (int m = 0; m < k * d; m++) cc = fmax(cc, C[m] * C[m] * d);
        for (int a = 0; a < d * d; a++) mm = fmax(mm, fabs(M[a]));
        double tol = 1e-12 * (D->s2 ? D->s2[i] : 1.0) * (xx + cc) * mm * d;
        if (idx[i] < 0 || idx[i] >= k || !(mine <= best + tol)) bad_idx++;
        if (idx[i] != bi) mism++;
        for (int m = 0; m < idx[i]; m++)
            if (!memcmp(C + (size_t)m * d, C + (size_t)idx[i] * d, sizeof(double) * d)) bad_dup++;
        // rounding scale of the quadratic form: s2·Σ|e_a M_ab e_b| (singular M cancels)
        double mag = 0;
        const double *xi = D->x + i * d, *ci = C + (size_t)idx[i] * d;
        for (int a = 0; a < d; a++)
            for (int b = 0; b < d; b++) mag += fabs((xi[a] - ci[a]) * M[a * d + b] * (xi[b] - ci[b]));
        mag *= D->s2 ? D->s2[i] : 1.0;
        if (!(fabs(dist[i] - mine) <= 1e-12 * mag + 1e-300)) bad_dist++;
        ref_obj += mine;
        scale += fabs(mine);
        // gq_vq_nearest on the (k, d) layout picks the same centroid
        if (i / D->per_slot != cur_slot) {
            cur_slot = i / D->per_slot;
            gq_vq_precompute(M, D->diag, d, C, k, P, nrm);
        }
        if (gq_vq_nearest(D->x + i * d, d, P, nrm, k) != idx[i]) bad_nearest++;
    }
    CHECKF(bad_idx == 0, "%s: %lld points not at a nearest centroid", what, (long long)bad_idx);
    CHECKF(bad_dup == 0, "%s: %lld points on a later duplicate centroid", what, (long long)bad_dup);
    CHECKF(bad_dist == 0, "%s: %lld dist values differ from the definition", what, (long long)bad_dist);
    CHECKF(bad_nearest == 0, "%s: gq_vq_nearest differs on %lld points", what, (long long)bad_nearest);
    CHECKF(mism * 1000 <= n, "%s: %lld of %lld argmins differ (only near-ties may)", what, (long long)mism,
           (long long)n);
    CHECKF(fabs(obj - ref_obj) <= 1e-9 * scale, "%s: objective %.17g vs direct %.17g", what, obj, ref_obj);
    // the same with no dist output, and independent of the thread count
    int32_t *idx2 = malloc(sizeof(int32_t) * n);
    int nt = omp_get_max_threads();
    omp_set_num_threads(1);
    double obj1 = gq_vq_assign(D, C, k, idx2, NULL);
    omp_set_num_threads(nt > 1 ? nt : 3);
    double obj3 = gq_vq_assign(D, C, k, idx2, NULL);
    omp_set_num_threads(nt);
    CHECKF(obj1 == obj && obj3 == obj, "%s: objective depends on threads: %.17g %.17g %.17g", what, obj, obj1, obj3);
    CHECKF(!memcmp(idx, idx2, sizeof(int32_t) * n), "%s: idx depends on threads", what);
    free(idx), free(idx2), free(dist), free(P), free(nrm);
}

static void test_assign(void) {
    const int dims[] = {1, 2, 4, 8}, ks[] = {1, 3, 16, 256};
    char what[128];
    for (int di = 0; di < 4; di++)
        for (int ki = 0; ki < 4; ki++)
            for (int diag = 0; diag < 2; diag++)
                for (int ws = 0; ws < 2; ws++) {
                    const int d = dims[di], k = ks[ki];
                    // per_slot > the assignment chunk for some cases: chunks inside a slot
                    const int ns = 3, ps = k >= 256 ? 150 : (di == 1 ? 2500 : 400);
                    struct dataset s = make_data(d, ns, ps, diag, ws);
                    double *C = malloc(sizeof(double) * k * d);
                    for (int i = 0; i < k * d; i++) C[i] = rng_normal();
                    if (k >= 3) // exact duplicates: the lowest index must win
                        memcpy(C + (size_t)(k - 1) * d, C + (size_t)(k / 2) * d, sizeof(double) * d);
                    snprintf(what, sizeof what, "assign d=%d k=%d %s%s", d, k, diag ? "diag" : "full",
                             ws ? " s2" : "");
                    check_assign(&s.D, C, k, what);
                    free(C), free_data(&s);
                }
    // Exact ties between distinct centroids: x = 0 midway between −1 and +1.
    {
        double x[3] = {0, 2, -2}, M[1] = {2}, C[3] = {1, -1, 3};
        struct gq_vq_data D = {.d = 1, .n_slots = 1, .per_slot = 3, .x = x, .metric = M, .diag = true};
        int32_t idx[3];
        double obj = gq_vq_assign(&D, C, 3, idx, NULL);
        CHECKF(idx[0] == 0 && idx[1] == 0 && idx[2] == 1, "midpoint ties: %d %d %d", idx[0], idx[1], idx[2]);
        CHECKF(obj == 2 * (1 + 1 + 1), "midpoint objective %g", obj);
        check_assign(&D, C, 3, "midpoint ties");
    }
}

// ---------------------------------------------------------------------------
// 2. M-step == weighted means / normal equations.

static bool gauss_solve(double *A, double *b, int n) { // partial pivoting, in place
    for (int c = 0; c < n; c++) {
        int p = c;
        for (int r = c + 1; r < n; r++)
            if (fabs(A[r * n + c]) > fabs(A[p * n + c])) p = r;
        if (!(fabs(A[p * n + c]) > 1e-300)) return false;
        for (int j = 0; j < n; j++) {
            double t = A[c * n + j];
            A[c * n + j] = A[p * n + j], A[p * n + j] = t;
        }
        double t = b[c];
        b[c] = b[p], b[p] = t;
        for (int r = c + 1; r < n; r++) {
            double f = A[r * n + c] / A[c * n + c];
            for (int j = c; j < n; j++) A[r * n + j] -= f * A[c * n + j];
            b[r] -= f * b[c];
        }
    }
    for (int r = n - 1; r >= 0; r--) {
        for (int j = r + 1; j < n; j++) b[r] -= A[r * n + j] * b[j];
        b[r] /= A[r * n + r];
    }
    return true;
}

static double cluster_obj(const struct gq_vq_data *D, const int32_t *idx, int m, const double *c) {
    double s = 0;
    for (int64_t i = 0; i < gq_vq_n_points(D); i++)
        if (idx[i] == m) s += ref_dist(D, i, c);
    return s;
}

static void test_mstep(void) {
    const int dims[] = {1, 2, 4, 8};
    for (int di = 0; di < 4; di++)
        for (int diag = 0; diag < 2; diag++)
            for (int ws = 0; ws < 2; ws++) {
                const int d = dims[di], k = 12, ns = 4, ps = 60;
                struct dataset s = make_data(d, ns, ps, diag, ws);
                const int64_t n = gq_vq_n_points(&s.D);
                int32_t *idx = malloc(sizeof(int32_t) * n);
                for (int64_t i = 0; i < n; i++) idx[i] = (int32_t)(rng_u64() % (k - 3)); // k-3.. k-1 empty
                idx[5] = k - 3;                                                      // one single-point cluster
                double *C = malloc(sizeof(double) * k * d), *C0 = malloc(sizeof(double) * k * d);
                for (int i = 0; i < k * d; i++) C[i] = C0[i] = rng_normal();
                int empty = gq_vq_mstep(&s.D, idx, k, C);
                CHECKF(empty == 2, "mstep d=%d: %d empty (expected 2)", d, empty);
                double maxrel = 0;
                int worse = 0;
                for (int m = 0; m < k; m++) {
                    double ref[GQ_VQ_MAX_DIM], A[GQ_VQ_MAX_DIM * GQ_VQ_MAX_DIM] = {0};
                    double num[GQ_VQ_MAX_DIM] = {0};
                    int cnt = 0;
                    for (int64_t i = 0; i < n; i++) {
                        if (idx[i] != m) continue;
                        cnt++;
                        const double *M = s.metric + (size_t)(i / ps) * d * d, *x = s.x + i * d;
                        double w = s.D.s2 ? s.D.s2[i] : 1.0;
                        for (int a = 0; a < d; a++)
                            for (int b = 0; b < d; b++) {
                                if (diag && a != b) continue;
                                A[a * d + b] += w * M[a * d + b];
                                num[a] += w * M[a * d + b] * x[b];
                            }
                    }
                    if (!cnt) {
                        CHECKF(!memcmp(C + m * d, C0 + m * d, sizeof(double) * d), "empty centroid %d moved", m);
                        continue;
                    }
                    if (diag) {
                        for (int a = 0; a < d; a++) ref[a] = num[a] / A[a * d + a]; // Σ s2 M x / Σ s2 M
                    } else {
                        memcpy(ref, num, sizeof ref);
                        if (!gauss_solve(A, ref, d)) memcpy(ref, C0 + m * d, sizeof(double) * d);
                    }
                    for (int a = 0; a < d; a++)
                        maxrel = fmax(maxrel, fabs(C[m * d + a] - ref[a]) / (fabs(ref[a]) + 1e-3));
                    // no coordinate perturbation lowers the cluster's objective
                    double J = cluster_obj(&s.D, idx, m, C + m * d), c[GQ_VQ_MAX_DIM];
                    for (int a = 0; a < d; a++)
                        for (int sg = -1; sg <= 1; sg += 2) {
                            memcpy(c, C + m * d, sizeof(double) * d);
                            c[a] += sg * 1e-4;
                            if (cluster_obj(&s.D, idx, m, c) < J - 1e-12 * J) worse++;
                        }
                }
                CHECKF(maxrel < 1e-9, "mstep d=%d %s s2=%d: centroid rel diff %.3g", d, diag ? "diag" : "full", ws,
                       maxrel);
                CHECKF(worse == 0, "mstep d=%d %s: %d perturbations lower the objective", d, diag ? "diag" : "full",
                       worse);
                free(idx), free(C), free(C0), free_data(&s);
            }
    // Zero metric: diag coordinates with zero weight and the singular full
    // system keep the old centroid.
    for (int diag = 0; diag < 2; diag++) {
        double x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, M[4] = {0, 0, 0, diag ? 2 : 0}, C[4] = {9, 9, 9, 9};
        struct gq_vq_data D = {.d = 2, .n_slots = 1, .per_slot = 4, .x = x, .metric = M, .diag = diag};
        int32_t idx[4] = {0, 0, 1, 1};
        gq_vq_mstep(&D, idx, 2, C);
        if (diag)
            CHECKF(C[0] == 9 && C[1] == 3 && C[2] == 9 && C[3] == 7, "zero-weight coordinate: %g %g %g %g", C[0],
                   C[1], C[2], C[3]);
        else
            CHECKF(C[0] == 9 && C[1] == 9 && C[2] == 9 && C[3] == 9, "singular full system moved a centroid");
    }
}

// ---------------------------------------------------------------------------
// 3. EM: non-increasing objective, empty clusters, convergence.

static void em_case(const struct gq_vq_data *D, int k, enum gq_vq_init init, uint64_t seed, const char *what,
                    bool expect_converge, bool expect_zero) {
    const int iters = 60, d = D->d;
    const int64_t n = gq_vq_n_points(D);
    double *C = malloc(sizeof(double) * k * d), *C2 = malloc(sizeof(double) * k * d), trace[61];
    int32_t *idx = malloc(sizeof(int32_t) * n), *idx2 = malloc(sizeof(int32_t) * n);
    struct gq_vq_em_stats st = {.trace = trace};
    CHECK_OK(gq_vq_em(D, k, iters, init, seed, C, idx, &st));
    int up = 0;
    for (int t = 0; t < st.iters; t++)
        if (trace[t + 1] > trace[t] * (1 + 1e-12)) {
            up++;
            fprintf(stderr, "%s: trace[%d] = %.17g > trace[%d] = %.17g\n", what, t + 1, trace[t + 1], t, trace[t]);
        }
    CHECKF(up == 0, "%s: objective increased %d times", what, up);
    CHECKF(st.iters >= 0 && st.iters <= iters, "%s: iters %d", what, st.iters);
    CHECKF(st.objective == trace[st.iters], "%s: final objective %.17g vs trace %.17g", what, st.objective,
           trace[st.iters]);
    // idx is the assignment of the final C, with that objective
    double obj = gq_vq_assign(D, C, k, idx2, NULL);
    CHECKF(!memcmp(idx, idx2, sizeof(int32_t) * n) && obj == st.objective, "%s: idx/objective not those of C", what);
    if (expect_converge) CHECKF(st.iters < iters, "%s: did not converge in %d iterations", what, iters);
    if (st.iters < iters) { // stopped: one more M-step changes nothing
        memcpy(C2, C, sizeof(double) * k * d);
        gq_vq_mstep(D, idx, k, C2);
        CHECKF(!memcmp(C, C2, sizeof(double) * k * d), "%s: stopped but the M-step still moves centroids", what);
    }
    if (expect_zero) CHECKF(st.objective == 0, "%s: objective %g with N <= k distinct points", what, st.objective);
    // iters = 0: the seed's assignment
    struct gq_vq_em_stats s0 = {.trace = trace};
    CHECK_OK(gq_vq_em(D, k, 0, init, seed, C, idx, &s0));
    CHECK_OK(gq_vq_seed(D, k, init, seed, C2));
    obj = gq_vq_assign(D, C2, k, idx2, NULL);
    CHECKF(s0.iters == 0 && !memcmp(C, C2, sizeof(double) * k * d) && !memcmp(idx, idx2, sizeof(int32_t) * n) &&
               s0.objective == obj && trace[0] == obj,
           "%s: iters=0 is not seed + one assignment", what);
    free(C), free(C2), free(idx), free(idx2);
}

static void test_em(void) {
    char what[160];
    for (int init = 0; init < 2; init++)
        for (uint64_t seed = 1; seed <= 3; seed++) {
            const int dims[] = {1, 2, 4};
            for (int di = 0; di < 3; di++) {
                const int d = dims[di];
                // random data, both metrics, s2
                for (int diag = 0; diag < 2; diag++) {
                    struct dataset s = make_data(d, 3, 300, diag, seed & 1);
                    snprintf(what, sizeof what, "em init=%d seed=%d d=%d %s", init, (int)seed, d,
                             diag ? "diag" : "full");
                    em_case(&s.D, 16, init, seed, what, false, false);
                    free_data(&s);
                }
                // many duplicates: 6 distinct points repeated, k = 16 (empty clusters)
                {
                    struct dataset s = make_data(d, 2, 120, true, false);
                    for (int64_t i = 0; i < 240; i++) memcpy(s.x + i * d, s.x + (i % 6) * d, sizeof(double) * d);
                    snprintf(what, sizeof what, "em dups init=%d seed=%d d=%d", init, (int)seed, d);
                    em_case(&s.D, 16, init, seed, what, true, true);
                    free_data(&s);
                }
                // N < k
                {
                    struct dataset s = make_data(d, 1, 5, false, true);
                    snprintf(what, sizeof what, "em N<k init=%d seed=%d d=%d", init, (int)seed, d);
                    em_case(&s.D, 8, init, seed, what, true, true);
                    free_data(&s);
                }
                // four well separated clusters: converges quickly
                {
                    struct dataset s = make_data(d, 2, 200, true, false);
                    for (int64_t i = 0; i < 400; i++)
                        for (int a = 0; a < d; a++) s.x[i * d + a] = 0.05 * s.x[i * d + a] + 10.0 * ((i % 4) == a % 4);
                    snprintf(what, sizeof what, "em clusters init=%d seed=%d d=%d", init, (int)seed, d);
                    em_case(&s.D, 4, init, seed, what, true, false);
                    free_data(&s);
                }
            }
        }
}

// EM with k >= 128 skips most points of its later assignments by bounds
// (vq.c). Reference: the same rounds written out here with a full
// gq_vq_assign scan every time; C, idx, iterations, re-seeds and the
// objective trace must be bit-identical.
static void em_ref(const struct gq_vq_data *D, int k, int iters, double *C, int32_t *idx, double *trace, int *n_it,
                   int *n_reseeded) {
    const int d = D->d;
    const int64_t n = gq_vq_n_points(D);
    double *dist = malloc(sizeof(double) * n);
    int32_t *prev = malloc(sizeof(int32_t) * n);
    char *used = malloc((size_t)k);
    double obj = gq_vq_assign(D, C, k, idx, dist);
    trace[0] = obj;
    int it = 0, re = 0;
    while (it < iters && !isnan(obj)) {
        memcpy(prev, idx, sizeof(int32_t) * n);
        if (gq_vq_mstep(D, idx, k, C)) {
            for (int64_t i = 0; i < n; i++)
                dist[i] = gq_vq_qform(D->metric + (size_t)(i / D->per_slot) * d * d, D->diag, d, D->x + (size_t)i * d,
                                      C + (size_t)idx[i] * d) *
                          (D->s2 ? D->s2[i] : 1.0);
            memset(used, 0, (size_t)k);
            for (int64_t i = 0; i < n; i++) used[idx[i]] = 1;
            for (int m = 0; m < k; m++) {
                if (used[m]) continue;
                int64_t w = 0;
                for (int64_t i = 1; i < n; i++)
                    if (dist[i] > dist[w]) w = i;
                if (!(dist[w] > 0)) break;
                memcpy(C + (size_t)m * d, D->x + (size_t)w * d, sizeof(double) * d);
                idx[w] = m, dist[w] = 0, used[m] = 1, re++;
            }
        }
        obj = gq_vq_assign(D, C, k, idx, dist);
        trace[++it] = obj;
        if (!memcmp(prev, idx, sizeof(int32_t) * n)) break;
    }
    *n_it = it, *n_reseeded = re;
    free(dist), free(prev), free(used);
}

static void em_bounds_case(struct dataset *s, int k, enum gq_vq_init init, const char *what) {
    const int d = s->D.d, iters = 40;
    const int64_t n = gq_vq_n_points(&s->D);
    double *C = malloc(sizeof(double) * k * d), *C2 = malloc(sizeof(double) * k * d);
    double trace[41], trace2[41];
    int32_t *idx = malloc(sizeof(int32_t) * n), *idx2 = malloc(sizeof(int32_t) * n);
    struct gq_vq_em_stats st = {.trace = trace};
    CHECK_OK(gq_vq_em(&s->D, k, iters, init, 7, C, idx, &st));
    CHECK_OK(gq_vq_seed(&s->D, k, init, 7, C2));
    int it2 = 0, re2 = 0;
    em_ref(&s->D, k, iters, C2, idx2, trace2, &it2, &re2);
    CHECKF(st.iters == it2 && st.n_reseeded == re2, "%s: %d iterations, %d re-seeds; full scans: %d, %d", what,
           st.iters, st.n_reseeded, it2, re2);
    CHECKF(!memcmp(C, C2, sizeof(double) * k * d) && !memcmp(idx, idx2, sizeof(int32_t) * n) &&
               !memcmp(trace, trace2, sizeof(double) * (size_t)(it2 + 1)),
           "%s: centroids, assignment or objectives differ from full scans", what);
    if (getenv("TEST_VERBOSE")) printf("%s: %d iterations, %d re-seeds\n", what, st.iters, st.n_reseeded);
    free(C), free(C2), free(idx), free(idx2);
}

static void test_em_bounds(void) {
    char what[160];
    const int dims[] = {1, 2, 4, 8}, ks[] = {256, 256, 256, 128};
    for (int far = 0; far < 2; far++)
        for (int di = 0; di < 4; di++)
            for (int diag = 0; diag < 2; diag++) {
                const int d = dims[di], k = ks[di], ns = 4, ps = 1500;
                struct dataset s = make_data(d, ns, ps, diag, true);
                // clustered, heavy-tailed points; slot metrics over 9 orders of
                // magnitude; slot 3 holds 50 copies of 30 points (empty
                // clusters, re-seeds, exact ties). far: every point 1e4 from
                // the origin and the clusters 1e-4 wide, so the scores'
                // rounding is as large as the distances between points (the
                // bounds' margin must keep such points scanned)
                const double off = far ? 1e4 : 0, sc = far ? 1e-4 : 1;
                for (int64_t i = 0; i < (int64_t)ns * ps; i++) {
                    const double t = rng_normal();
                    for (int a = 0; a < d; a++)
                        s.x[i * d + a] = off + sc * ((double)(i % 37) * 0.3 + 0.1 * s.x[i * d + a] * (1 + t * t));
                }
                for (int64_t i = 3 * ps; i < 4 * ps; i++)
                    memcpy(s.x + i * d, s.x + (3 * ps + i % 30) * d, sizeof(double) * d);
                for (int sl = 0; sl < ns; sl++) {
                    double *M = s.metric + sl * d * d;
                    if (!diag) rand_psd(d, d, M); // full rank: the bounds need a norm
                    for (int a = 0; a < d * d; a++) M[a] *= pow(10.0, 3.0 * (sl - 2));
                }
                for (int init = 0; init < 2; init++) {
                    snprintf(what, sizeof what, "em bounds d=%d k=%d %s init=%d%s", d, k, diag ? "diag" : "full",
                             init, far ? " far" : "");
                    em_bounds_case(&s, k, init, what);
                }
                free_data(&s);
            }
}

// ---------------------------------------------------------------------------
// 4. Mahalanobis seeds; 5. k-means++ determinism.

// Stable insertion sort of order by key.
static void ref_argsort(const double *key, int n, int *ord) {
    for (int i = 0; i < n; i++) ord[i] = i;
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && key[ord[j]] < key[ord[j - 1]]; j--) {
            int t = ord[j];
            ord[j] = ord[j - 1], ord[j - 1] = t;
        }
}

static void test_seeds(void) {
    // 2-D full-rank set: distances with the explicit inverse of the 2×2 covariance.
    for (int rank = 1; rank <= 2; rank++)
        for (int k = 1; k <= 6; k++) {
            enum { N = 10 };
            double x[2 * N], key[N], M[4] = {1, 0, 0, 1}, mu[2] = {0, 0}, S[3] = {0, 0, 0}, C[12];
            int ord[N];
            for (int i = 0; i < N; i++) {
                double t = rng_normal();
                x[2 * i] = 1 + t;
                x[2 * i + 1] = rank == 2 ? -2 + 0.5 * t + 0.7 * rng_normal() : -2 + 2 * t; // rank 1: a line
            }
            for (int i = 0; i < N; i++) mu[0] += x[2 * i] / N, mu[1] += x[2 * i + 1] / N;
            for (int i = 0; i < N; i++) {
                double u = x[2 * i] - mu[0], v = x[2 * i + 1] - mu[1];
                S[0] += u * u / N, S[1] += u * v / N, S[2] += v * v / N;
            }
            for (int i = 0; i < N; i++) {
                double u = x[2 * i] - mu[0], v = x[2 * i + 1] - mu[1];
                if (rank == 2) { // [a b; b c]⁻¹ = [c −b; −b a] / (ac − b²)
                    double det = S[0] * S[2] - S[1] * S[1];
                    key[i] = (S[2] * u * u - 2 * S[1] * u * v + S[0] * v * v) / det;
                } else { // pseudo-inverse on the line's direction (1, 2)/√5
                    double p = (u + 2 * v) / sqrt(5), var = (S[0] + 4 * S[1] + 4 * S[2]) / 5;
                    key[i] = p * p / var;
                }
            }
            ref_argsort(key, N, ord);
            struct gq_vq_data D = {.d = 2, .n_slots = 1, .per_slot = N, .x = x, .metric = M, .diag = true};
            CHECK_OK(gq_vq_seed(&D, k, GQ_VQ_INIT_MAHALANOBIS, 0, C));
            int bad = 0;
            for (int j = 0; j < k; j++) {
                double ref[2];
                if (k == 1) {
                    ref[0] = mu[0], ref[1] = mu[1];
                } else {
                    int pos = j * (N / (k - 1));
                    pos = pos > N - 1 ? N - 1 : pos;
                    ref[0] = x[2 * ord[pos]], ref[1] = x[2 * ord[pos] + 1];
                }
                if (fabs(C[2 * j] - ref[0]) > 1e-12 || fabs(C[2 * j + 1] - ref[1]) > 1e-12) bad++;
            }
            CHECKF(bad == 0, "Mahalanobis seed rank=%d k=%d: %d centroids differ from the direct ordering", rank, k,
                   bad);
        }
    // N < k is allowed
    {
        struct dataset s = make_data(4, 1, 3, false, false);
        double C[4 * 8];
        CHECK_OK(gq_vq_seed(&s.D, 8, GQ_VQ_INIT_MAHALANOBIS, 0, C));
        CHECK_OK(gq_vq_seed(&s.D, 8, GQ_VQ_INIT_KMEANSPP, 7, C));
        free_data(&s);
    }
    // k-means++: same seed -> same centroids, other seed -> others; centroids
    // are distinct data points (never a point at distance 0).
    {
        const int d = 2, k = 16;
        struct dataset s = make_data(d, 4, 100, false, true);
        double A[2 * 16], B[2 * 16], E[2 * 16];
        CHECK_OK(gq_vq_seed(&s.D, k, GQ_VQ_INIT_KMEANSPP, 42, A));
        CHECK_OK(gq_vq_seed(&s.D, k, GQ_VQ_INIT_KMEANSPP, 42, B));
        CHECK_OK(gq_vq_seed(&s.D, k, GQ_VQ_INIT_KMEANSPP, 43, E));
        CHECK(!memcmp(A, B, sizeof A));
        CHECK(memcmp(A, E, sizeof A) != 0);
        int notpoint = 0, dup = 0;
        for (int m = 0; m < k; m++) {
            bool found = false;
            for (int i = 0; i < 400 && !found; i++) found = !memcmp(A + m * d, s.x + i * d, sizeof(double) * d);
            notpoint += !found;
            for (int j = 0; j < m; j++) dup += !memcmp(A + m * d, A + j * d, sizeof(double) * d);
        }
        CHECKF(notpoint == 0 && dup == 0, "k-means++: %d centroids not data points, %d duplicates", notpoint, dup);
        free_data(&s);
    }
}

// ---------------------------------------------------------------------------
// 6. Codebook storage and fp16 rounding.

static double f16v(uint16_t h) { return (double)gq_f16_to_f32(h); }

// fp16 rounding by definition: the nearest finite fp16 value (ties: even
// mantissa), ±inf from 65520 up.
static bool f16_ok(float f, uint16_t h) {
    if (isnan(f)) return (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
    double a = fabs((double)f);
    uint16_t sign = signbit(f) ? 0x8000 : 0;
    if (a >= 65520) return h == (sign | 0x7c00);
    if ((h & 0x8000) != sign && !(a == 0)) return false;
    uint16_t m = h & 0x7fff;
    if (m >= 0x7c00) return false;
    double v = f16v(m), e = fabs(a - v);
    if (m > 0 && fabs(a - f16v(m - 1)) < e) return false;
    if (m < 0x7bff && fabs(a - f16v(m + 1)) < e) return false;
    if (m > 0 && fabs(a - f16v(m - 1)) == e && (m & 1)) return false;
    if (m < 0x7bff && fabs(a - f16v(m + 1)) == e && (m & 1)) return false;
    return (h & 0x8000) == sign;
}

static void test_f16(void) {
    int bad_rt = 0, bad_def = 0, bad_hw = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7c00) == 0x7c00) continue;
        if (gq_f32_to_f16(gq_f16_to_f32((uint16_t)h)) != h) bad_rt++;
    }
    CHECKF(bad_rt == 0, "fp16 round trip fails on %d finite bit patterns", bad_rt);
    // Midpoints between neighbours (ties to even) and their float neighbours.
    for (uint32_t h = 0; h < 0x7bff; h++) {
        float mid = (float)((f16v(h) + f16v(h + 1)) / 2); // exact: 12 significant bits
        float probes[3] = {mid, nextafterf(mid, 0), nextafterf(mid, INFINITY)};
        for (int p = 0; p < 3; p++)
            for (int sg = 0; sg < 2; sg++) {
                float f = sg ? -probes[p] : probes[p];
                if (!f16_ok(f, gq_f32_to_f16(f))) bad_def++;
            }
    }
    float specials[] = {65504.0f, 65519.99f, 65520.0f, 1e10f, INFINITY, -INFINITY, NAN, 0x1p-25f, 0x1.000002p-25f,
                        0x1p-26f, 1e-40f, -0.0f};
    for (size_t i = 0; i < sizeof specials / sizeof *specials; i++)
        if (!f16_ok(specials[i], gq_f32_to_f16(specials[i]))) bad_def++;
    for (int i = 0; i < 1 << 20; i++) { // random bit patterns over the whole float range
        uint32_t u = (uint32_t)rng_u64();
        float f;
        memcpy(&f, &u, 4);
        uint16_t h = gq_f32_to_f16(f);
        if (!f16_ok(f, h)) bad_def++;
#ifdef __FLT16_MAX__
        _Float16 g = (_Float16)f;
        uint16_t hg;
        memcpy(&hg, &g, 2);
        if (!isnan(f) && hg != h) bad_hw++;
#endif
    }
    CHECKF(bad_def == 0, "f32 -> fp16 not the nearest-even fp16 on %d values", bad_def);
    CHECKF(bad_hw == 0, "f32 -> fp16 differs from the compiler's _Float16 on %d values", bad_hw);
}

static void test_codebook(void) {
    CHECK(gq_cb_bits(GQ_CB_INT8) == 8 && gq_cb_bits(GQ_CB_FP16) == 16 && gq_cb_bits(GQ_CB_F32) == 32);
    CHECK(gq_cb_scale_bits(GQ_CB_INT8) == 16 && gq_cb_scale_bits(GQ_CB_FP16) == 0);
    for (int rep = 0; rep < 50; rep++) {
        const int n = 64;
        double C[64], C0[64], mx = 0;
        int8_t q8[64];
        float sc;
        double amp = exp(4 * rng_normal());
        for (int i = 0; i < n; i++) C[i] = C0[i] = amp * rng_normal(), mx = fmax(mx, fabs(C[i]));
        gq_cb_round(C, n, GQ_CB_INT8, q8, NULL, &sc);
        float sref = gq_f16_to_f32(gq_f32_to_f16((float)(mx / 127)));
        CHECKF(sc == sref, "int8 scale %.9g vs fp16(max/127) %.9g", sc, sref);
        int bad = 0;
        for (int i = 0; i < n; i++) {
            double r = nearbyint(C0[i] / sref);
            int q = r > 127 ? 127 : r < -127 ? -127 : (int)r;
            if (q8[i] != q || C[i] != (double)((float)q8[i] * sref)) bad++;
            if (!(fabs(C[i] - C0[i]) <= sref / 2 + 1e-7 * fabs(C0[i]) + fmax(0, fabs(C0[i]) - 127.0 * sref))) bad++;
        }
        CHECKF(bad == 0, "int8 codebook: %d values off the definition", bad);
    }
    { // exact halves round to even; all-zero codebook
        const float s0 = 0x1p-7f;
        double C[5] = {127 * s0, 2.5 * s0, 3.5 * s0, -2.5 * s0, -0.5 * s0};
        int8_t q8[5];
        float sc;
        gq_cb_round(C, 5, GQ_CB_INT8, q8, NULL, &sc);
        CHECKF(sc == s0 && q8[0] == 127 && q8[1] == 2 && q8[2] == 4 && q8[3] == -2 && q8[4] == 0,
               "int8 ties: scale %g q %d %d %d %d %d", sc, q8[0], q8[1], q8[2], q8[3], q8[4]);
        double Z[4] = {0, 0, 0, 0};
        gq_cb_round(Z, 4, GQ_CB_INT8, q8, NULL, &sc);
        CHECK(sc == 0 && Z[0] == 0 && Z[3] == 0 && q8[0] == 0);
    }
    {
        double C[32], C0[32];
        uint16_t h[32];
        float sc = 0;
        for (int i = 0; i < 32; i++) C[i] = C0[i] = rng_normal() * exp(3 * rng_normal());
        gq_cb_round(C, 32, GQ_CB_FP16, NULL, h, &sc);
        int bad = 0;
        for (int i = 0; i < 32; i++)
            bad += !f16_ok((float)C0[i], h[i]) || C[i] != (double)gq_f16_to_f32(h[i]);
        CHECKF(bad == 0 && sc == 1, "fp16 codebook: %d values off", bad);
        for (int i = 0; i < 32; i++) C[i] = C0[i];
        gq_cb_round(C, 32, GQ_CB_F32, NULL, NULL, &sc);
        for (int i = 0; i < 32; i++) bad += C[i] != (double)(float)C0[i];
        CHECKF(bad == 0, "f32 codebook: %d values off", bad);
    }
}

// ---------------------------------------------------------------------------
// 7. Blockwise normalisation.

static void norm_case(const double *w, int rows, int width, int ld, int nb, const char *what) {
    const int nblk = (width + nb - 1) / nb;
    uint8_t *sint = malloc((size_t)rows * nblk);
    struct gq_vq_norm nm = gq_vq_norm_fit(w, rows, width, ld, nb, sint);
    double lo = INFINITY, hi = -INFINITY;
    for (int r = 0; r < rows; r++)
        for (int b = 0; b < nblk; b++) {
            double s = 0;
            for (int c = b * nb; c < width && c < (b + 1) * nb; c++) s = fmax(s, fabs(w[r * ld + c]));
            if (s > 0) lo = fmin(lo, log2(s)), hi = fmax(hi, log2(s));
        }
    CHECKF(gq_f16_to_f32(gq_f32_to_f16(nm.a)) == nm.a && gq_f16_to_f32(gq_f32_to_f16(nm.z)) == nm.z,
           "%s: a %.9g z %.9g not fp16 values", what, nm.a, nm.z);
    if (!(lo <= hi)) {
        CHECKF(nm.a == 1, "%s: all-zero tile: a %g", what, nm.a);
    } else if (lo == hi) {
        CHECKF(nm.a == 1, "%s: max L == min L: a %g", what, nm.a);
    } else {
        double a_ref = (hi - lo) / 15, ulp = ldexp(1, ilogb(a_ref) - 10);
        CHECKF(fabs(nm.a - a_ref) <= 2 * ulp, "%s: a %.9g vs (max L - min L)/15 = %.9g", what, nm.a, a_ref);
    }
    if (lo <= hi) CHECKF(nm.z == gq_f16_to_f32(gq_f32_to_f16((float)lo)), "%s: z %.9g vs min L %.9g", what, nm.z, lo);
    int bad = 0, badq = 0;
    double worst = 0, rt = 0;
    for (int r = 0; r < rows; r++)
        for (int b = 0; b < nblk; b++) {
            double s = 0;
            for (int c = b * nb; c < width && c < (b + 1) * nb; c++) s = fmax(s, fabs(w[r * ld + c]));
            int q = sint[r * nblk + b];
            if (q > 15) bad++;
            if (s == 0) {
                badq += q != 0;
                continue;
            }
            // the header's s_int; one more only where its scale falls short of s
            double e = ceil((log2(s) - nm.z) / nm.a);
            int qref = e < 0 ? 0 : e > 15 ? 15 : (int)e;
            for (int t = qref; t < q; t++)
                if (gq_vq_norm_scale(nm, t) >= s) badq++;
            if (q < qref) badq++;
            float scale = gq_vq_norm_scale(nm, q);
            for (int c = b * nb; c < width && c < (b + 1) * nb; c++) {
                double v = w[r * ld + c] / scale;
                worst = fmax(worst, fabs(v));
                if (w[r * ld + c] != 0) rt = fmax(rt, fabs(v * scale - w[r * ld + c]) / fabs(w[r * ld + c]));
            }
        }
    CHECKF(bad == 0 && badq == 0, "%s: %d codes out of range, %d codes off the definition", what, bad, badq);
    CHECKF(worst <= 1 + 1e-3, "%s: max |w|/scale = %.9g", what, worst);
    CHECKF(rt <= 1e-12, "%s: decode round trip rel error %.3g", what, rt);
    free(sint);
}

static void test_norm(void) {
    enum { R = 9, W = 45, LD = 48 };
    double w[R * LD];
    for (int rep = 0; rep < 20; rep++) {
        for (int i = 0; i < R * LD; i++) w[i] = rng_normal() * exp(2 * rng_normal()) * 0.01;
        for (int c = 0; c < W; c++) w[3 * LD + c] = 0; // an all-zero row
        for (int c = 8; c < 16; c++) w[5 * LD + c] = 0; // a zero block
        norm_case(w, R, W, LD, 8, "norm nb=8 (ragged last block of 5)");
        norm_case(w, R, W, LD, 4, "norm nb=4");
        norm_case(w, R, 16, LD, 16, "norm nb=16");
    }
    for (int i = 0; i < R * LD; i++) w[i] = 0;
    norm_case(w, R, W, LD, 8, "norm all zero");
    for (int i = 0; i < R * LD; i++) w[i] = (i % 2 ? 0.3 : -0.1);
    norm_case(w, R, W, LD, 8, "norm constant block max");
}

// ---------------------------------------------------------------------------
// 8. Configuration from the bpv target (paper §2.2 table).

static void test_config(void) {
    struct {
        double bpv;
        int d, k;
        int64_t l;
    } tab[] = {{2.125, 2, 16, 2048}, {2.125, 4, 256, 65536}, {3.125, 2, 64, 8192}, {2.125, 1, 4, 256},
               {2.25, 2, 16, 1024}};
    for (size_t i = 0; i < sizeof tab / sizeof *tab; i++) {
        struct gq_vq_config c;
        CHECK_OK(gq_vq_config_from_bpv(tab[i].bpv, tab[i].d, 0, 0, GQ_CB_INT8, 0, 0, &c));
        CHECKF(c.k == tab[i].k && c.l == tab[i].l && c.d == tab[i].d && (1 << c.log2k) == c.k,
               "%gbpv %dD: k %d l %lld (paper: k %d l %lld)", tab[i].bpv, tab[i].d, c.k, (long long)c.l, tab[i].k,
               (long long)tab[i].l);
        double bpv = c.index_bpv + c.overhead_bpv;
        CHECKF(fabs(bpv - tab[i].bpv) < 1e-12, "%gbpv %dD: formula gives %.9g", tab[i].bpv, tab[i].d, bpv);
    }
    struct gq_vq_config c;
    CHECK_OK(gq_vq_config_from_bpv(2.125, 2, 0, 0, GQ_CB_INT8, 64, 0, &c)); // 4/64 of the 0.125 for the codes
    CHECKF(c.k == 16 && c.l == 4096, "norm 64: k %d l %lld", c.k, (long long)c.l);
    CHECK_OK(gq_vq_config_from_bpv(2.125, 2, 64, 512, GQ_CB_FP16, 0, 0, &c));
    CHECK(c.k == 64 && c.log2k == 6 && c.l == 512 && fabs(c.overhead_bpv - 64.0 * 2 * 16 / 512) < 1e-12);
    // Codebook SVD rank 2 of k = 4 (paper App. H, "rank reducing by 50 %"): a
    // group stores 2 int8 factor values, so equal overhead halves l.
    CHECK_OK(gq_vq_config_from_bpv(2.125, 1, 0, 0, GQ_CB_INT8, 0, 2, &c));
    CHECKF(c.k == 4 && c.l == 128 && fabs(c.index_bpv + c.overhead_bpv - 2.125) < 1e-12, "svd 2: k %d l %lld", c.k,
           (long long)c.l);
    CHECK_OK(gq_vq_config_from_bpv(3.125, 1, 0, 0, GQ_CB_INT8, 0, 8, &c)); // full rank: l as without SVD
    CHECK(c.k == 8 && c.l == 512);
    CHECK(gq_vq_config_from_bpv(2.125, 2, 0, 0, GQ_CB_INT8, 0, 2, &c) == GQ_ERR_ARG && strstr(gq_last_error(), "--cb-svd"));
    CHECK(gq_vq_config_from_bpv(2.125, 1, 0, 0, GQ_CB_INT8, 0, 5, &c) == GQ_ERR_ARG && strstr(gq_last_error(), "--cb-svd"));
    struct {
        double bpv;
        int d, k, nb;
        const char *msg;
    } bad[] = {{2.125, 3, 0, 0, "--vq-dim"}, {0.5, 1, 0, 0, "bpv"},      {2.125, 2, 0, 32, "normalisation"},
               {0, 2, 0, 0, "--bpv"},      {NAN, 2, 0, 0, "--bpv"},      {2.125, 2, 12, 0, "power of two"},
               {2.125, 2, 0, 3, "--norm"}, {2.125, 2, 0, -8, "--norm"},  {1e300, 2, 0, 0, "range"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        enum gq_status s = gq_vq_config_from_bpv(bad[i].bpv, bad[i].d, bad[i].k, 0, GQ_CB_INT8, bad[i].nb, 0, &c);
        CHECKF(s == GQ_ERR_ARG && strstr(gq_last_error(), bad[i].msg), "bad config %zu: %s: %s", i, gq_status_str(s),
               gq_last_error());
    }
}

// ---------------------------------------------------------------------------

static void timing(void) {
    const int cfg[2][2] = {{2, 16}, {4, 256}};
    for (int t = 0; t < 2; t++) {
        const int d = cfg[t][0], k = cfg[t][1], ns = 16, ps = 1000000 / 16;
        struct dataset s = make_data(d, ns, ps, true, true);
        double *C = malloc(sizeof(double) * k * d);
        int32_t *idx = malloc(sizeof(int32_t) * ns * ps);
        for (int i = 0; i < k * d; i++) C[i] = rng_normal();
        double t0 = gq_time_s();
        gq_vq_assign(&s.D, C, k, idx, NULL);
        double dt = gq_time_s() - t0;
        fprintf(stderr, "timing: gq_vq_assign 1e6 points d=%d k=%d: %.3f s (%d threads, %.2f ns per point-centroid)\n",
                d, k, dt, omp_get_max_threads(), dt * 1e9 / (1e6 * k));
        free(C), free(idx), free_data(&s);
    }
}

// ---------------------------------------------------------------------------
// Codebook-update normal equations == Σ_r A_rᵀ H A_r with A_r built densely.

static void test_gram_case(int d, int k, int stages, int rows, const int *ct_vecs, int n_ct, bool with_sig,
                           int threads) {
    int vt_start[16] = {0};
    for (int c = 0; c < n_ct; c++) vt_start[c + 1] = vt_start[c] + ct_vecs[c];
    const int nv = vt_start[n_ct], nvp = nv * d, ldh = nvp + 3;
    const size_t m = (size_t)stages * n_ct * k * d;
    uint16_t *idx = malloc(sizeof(uint16_t) * stages * rows * nv);
    double *sig = malloc(sizeof(double) * rows * nv), *H = malloc(sizeof(double) * nvp * ldh);
    double *G = malloc(sizeof(double) * m * m), *R = calloc(m * m, sizeof(double)), *A = malloc(sizeof(double) * nvp * m);
    for (int i = 0; i < stages * rows * nv; i++) idx[i] = (uint16_t)(rng_u64() % (uint64_t)k);
    for (int i = 0; i < rows * nv; i++) sig[i] = exp(0.3 * rng_normal());
    for (int a = 0; a < nvp; a++)
        for (int b = 0; b < ldh; b++) H[(size_t)a * ldh + b] = b < nvp ? rng_normal() : NAN; // padding never read
    for (int a = 0; a < nvp; a++) // symmetric
        for (int b = 0; b < a; b++) H[(size_t)a * ldh + b] = H[(size_t)b * ldh + a];
    for (int r = 0; r < rows; r++) {
        memset(A, 0, sizeof(double) * nvp * m);
        for (int c = 0; c < n_ct; c++)
            for (int v = vt_start[c]; v < vt_start[c + 1]; v++)
                for (int j = 0; j < d; j++)
                    for (int s = 0; s < stages; s++) {
                        size_t e = ((size_t)s * n_ct + c) * k * d + (size_t)idx[(size_t)s * rows * nv + r * nv + v] * d + j;
                        A[(size_t)(v * d + j) * m + e] += with_sig ? sig[r * nv + v] : 1.0;
                    }
        for (size_t a = 0; a < m; a++)
            for (size_t b = 0; b < m; b++) {
                double acc = 0;
                for (int p = 0; p < nvp; p++) {
                    if (A[(size_t)p * m + a] == 0) continue;
                    for (int q = 0; q < nvp; q++) acc += A[(size_t)p * m + a] * H[(size_t)p * ldh + q] * A[(size_t)q * m + b];
                }
                R[a * m + b] += acc;
            }
    }
    struct gq_vq_gram g = {.rows = rows, .nv = nv, .d = d, .k = k, .stages = stages, .n_ct = n_ct,
                           .vt_start = vt_start, .idx = idx, .idx_stage = (size_t)rows * nv,
                           .sig = with_sig ? sig : NULL, .H = H, .ldh = ldh};
    omp_set_num_threads(threads);
    CHECK_OK(gq_vq_gram(&g, G));
    double worst = 0, mag = 0;
    for (size_t i = 0; i < m * m; i++) worst = fmax(worst, fabs(G[i] - R[i])), mag = fmax(mag, fabs(R[i]));
    CHECKF(worst <= 1e-12 * mag * nvp, "gram d %d k %d stages %d threads %d: off by %.3g (max %.3g)", d, k, stages,
           threads, worst, mag);
    free(idx), free(sig), free(H), free(G), free(R), free(A);
}

static void test_gram(void) {
    const int two[] = {5, 3}, three[] = {4, 1, 6};
    test_gram_case(2, 4, 1, 7, two, 2, false, 1);
    test_gram_case(2, 4, 1, 7, two, 2, true, 2);
    test_gram_case(1, 8, 2, 5, three, 3, true, 3);
    test_gram_case(4, 3, 2, 3, three, 3, false, 2);
    omp_set_num_threads(2);
}

int main(void) {
    test_gram();
    test_assign();
    test_mstep();
    test_em();
    test_em_bounds();
    test_seeds();
    test_f16();
    test_codebook();
    test_norm();
    test_config();
    timing();
    return test_done("test_vq");
}
