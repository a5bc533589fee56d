// cpu.c - the reference backend: OpenBLAS, LAPACKE and the VQ primitives
// (contracts and formulas: vqprim.h).
#include "backend/backend.h"
#include "backend/vqprim.h"
#include "util/common.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <omp.h>

static const struct gq_backend cpu;

void gq_vq_precompute(const double *metric, bool diag, int d, const double *C, int k, double *P, double *nrm) {
    for (int m = 0; m < k; m++) nrm[m] = gq_vq_project(metric, diag, d, C + (size_t)m * d, P + (size_t)m * d);
}

// The argmin runs over blocks of NB centroids: the block's scores go to a small
// buffer in a loop without dependences (vectorised by `omp simd`), then a min
// reduction and a first-match scan, so the lowest index wins ties exactly as in
// a scalar left-to-right scan. The score of P_m is P at m·sm + a·sa: (k, d)
// rows (sm = d, sa = 1) or the transposed (d, k) copy gq_vq_assign keeps
// (sm = 1, sa = k) for unit-stride loads. DIM is a compile-time constant in
// the specialised copies below.
#define NB 64
// SEC (a compile-time 0/1): also the second-lowest score, the minimum over
// every index but the winner's (*sec; +inf for k = 1), for the pruned
// assignment's bounds. The winner is chosen by the same code either way.
static inline __attribute__((always_inline)) double block_second(const double *restrict buf, int nb, int jb) {
    double s = INFINITY;
#pragma omp simd reduction(min : s)
    for (int j = 0; j < nb; j++) s = j != jb && buf[j] < s ? buf[j] : s;
    return s;
}

static inline __attribute__((always_inline)) int nearest_impl(const double *restrict x, const int DIM,
                                                              const double *restrict P, const size_t sm,
                                                              const size_t sa, const double *restrict nrm,
                                                              const int k, const int SEC, double *sec) {
    double buf[NB], bv = INFINITY, sv = INFINITY, xv[GQ_VQ_MAX_DIM];
    int best = 0;
    for (int a = 0; a < DIM; a++) xv[a] = x[a];
    for (int m0 = 0; m0 < k; m0 += NB) {
        const int nb = k - m0 < NB ? k - m0 : NB;
        const double *Pb = P + (size_t)m0 * sm, *nb0 = nrm + m0;
#pragma omp simd
        for (int j = 0; j < nb; j++) {
            double dot = 0;
            for (int a = 0; a < DIM; a++) dot += xv[a] * Pb[(size_t)j * sm + (size_t)a * sa];
            buf[j] = nb0[j] - 2 * dot;
        }
        double mn = INFINITY;
#pragma omp simd reduction(min : mn)
        for (int j = 0; j < nb; j++) mn = buf[j] < mn ? buf[j] : mn;
        if (mn < bv) {
            int jb = 0;
            for (int j = 0; j < nb; j++)
                if (buf[j] == mn) {
                    jb = j;
                    break;
                }
            if (SEC) {
                const double s = block_second(buf, nb, jb);
                sv = s < bv ? s : bv;
            }
            bv = mn, best = m0 + jb;
        } else if (SEC && mn < sv)
            sv = mn;
    }
    if (SEC) *sec = sv;
    return best;
}

// Four points at once on the transposed P: each P load serves four scores
// (the single-point loop is bound by those loads). Same block scores and
// the same min / first-match rule per point as nearest_impl.
static inline __attribute__((always_inline)) void nearest4_impl(const double *restrict x, const int DIM,
                                                                const double *restrict Pt, const double *restrict nrm,
                                                                const int k, int32_t *out, const int SEC,
                                                                double *sec) {
    double buf[4][NB], bv[4] = {INFINITY, INFINITY, INFINITY, INFINITY}, xv[4][GQ_VQ_MAX_DIM];
    double sv[4] = {INFINITY, INFINITY, INFINITY, INFINITY};
    int best[4] = {0, 0, 0, 0};
    for (int p = 0; p < 4; p++)
        for (int a = 0; a < DIM; a++) xv[p][a] = x[p * DIM + a];
    for (int m0 = 0; m0 < k; m0 += NB) {
        const int nb = k - m0 < NB ? k - m0 : NB;
        const double *Pb = Pt + m0, *nb0 = nrm + m0;
        // a outer, centroids inner: unit-stride loops the compiler vectorises
        // over centroids; each score gets the same operations in the same
        // order as in nearest_impl (x_0 p_0 + x_1 p_1 + ..., then nrm − 2·dot;
        // nearest_impl's leading 0 + can only turn a −0 into +0, which
        // compares equal)
        {
            const double x0 = xv[0][0], x1 = xv[1][0], x2 = xv[2][0], x3 = xv[3][0];
#pragma omp simd
            for (int j = 0; j < nb; j++) {
                const double pv = Pb[j];
                buf[0][j] = x0 * pv, buf[1][j] = x1 * pv, buf[2][j] = x2 * pv, buf[3][j] = x3 * pv;
            }
        }
        for (int a = 1; a < DIM; a++) {
            const double *restrict Pa = Pb + (size_t)a * k, x0 = xv[0][a], x1 = xv[1][a], x2 = xv[2][a], x3 = xv[3][a];
#pragma omp simd
            for (int j = 0; j < nb; j++) {
                const double pv = Pa[j];
                buf[0][j] += x0 * pv, buf[1][j] += x1 * pv, buf[2][j] += x2 * pv, buf[3][j] += x3 * pv;
            }
        }
#pragma omp simd
        for (int j = 0; j < nb; j++) {
            buf[0][j] = nb0[j] - 2 * buf[0][j], buf[1][j] = nb0[j] - 2 * buf[1][j];
            buf[2][j] = nb0[j] - 2 * buf[2][j], buf[3][j] = nb0[j] - 2 * buf[3][j];
        }
        for (int p = 0; p < 4; p++) {
            double mn = INFINITY;
            const double *bp = buf[p];
#pragma omp simd reduction(min : mn)
            for (int j = 0; j < nb; j++) mn = bp[j] < mn ? bp[j] : mn;
            if (mn < bv[p]) {
                int jb = 0;
                for (int j = 0; j < nb; j++)
                    if (bp[j] == mn) {
                        jb = j;
                        break;
                    }
                if (SEC) {
                    const double s = block_second(bp, nb, jb);
                    sv[p] = s < bv[p] ? s : bv[p];
                }
                bv[p] = mn, best[p] = m0 + jb;
            } else if (SEC && mn < sv[p])
                sv[p] = mn;
        }
    }
    for (int p = 0; p < 4; p++) out[p] = best[p];
    if (SEC)
        for (int p = 0; p < 4; p++) sec[p] = sv[p];
}

// Compiled for AVX-512, AVX2 and the x86-64 baseline, picked at load time
// (ifunc). Scores are computed per centroid in the same order in every
// clone (ISO C mode: no FMA contraction), so the result does not depend on
// the CPU.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define GQ_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define GQ_SIMD_CLONES
#endif

// The dispatch on d (constant in each copy) for the four entry points below.
#define GQ_NEAREST_DIMS(CALL)                                                                                          \
    switch (d) {                                                                                                       \
    case 1: CALL(1); break;                                                                                            \
    case 2: CALL(2); break;                                                                                            \
    case 4: CALL(4); break;                                                                                            \
    case 8: CALL(8); break;                                                                                            \
    default: CALL(d); break;                                                                                           \
    }

GQ_SIMD_CLONES static void nearest4_cols(const double *x, int d, const double *Pt, const double *nrm, int k, int32_t *out) {
#define CALL(D) nearest4_impl(x, D, Pt, nrm, k, out, 0, NULL)
    GQ_NEAREST_DIMS(CALL)
#undef CALL
}

GQ_SIMD_CLONES static void nearest4_cols_sec(const double *x, int d, const double *Pt, const double *nrm, int k,
                                             int32_t *out, double *sec) {
#define CALL(D) nearest4_impl(x, D, Pt, nrm, k, out, 1, sec)
    GQ_NEAREST_DIMS(CALL)
#undef CALL
}

static int nearest_rows(const double *x, int d, const double *P, const double *nrm, int k) {
    int r = 0;
#define CALL(D) r = nearest_impl(x, D, P, (size_t)(D), 1, nrm, k, 0, NULL)
    GQ_NEAREST_DIMS(CALL)
#undef CALL
    return r;
}

GQ_SIMD_CLONES static int nearest_cols(const double *x, int d, const double *Pt, const double *nrm, int k,
                                       double *sec) {
    int r = 0;
#define CALL(D) r = sec ? nearest_impl(x, D, Pt, 1, (size_t)k, nrm, k, 1, sec) : nearest_impl(x, D, Pt, 1, (size_t)k, nrm, k, 0, NULL)
    GQ_NEAREST_DIMS(CALL)
#undef CALL
    return r;
}
#undef GQ_NEAREST_DIMS
#undef NB

int gq_vq_nearest(const double *x, int d, const double *P, const double *nrm, int k) {
    return nearest_rows(x, d, P, nrm, k);
}

static double qform(const double *M, bool diag, int d, const double *x, const double *c) {
    return gq_vq_qform(M, diag, d, x, c);
}

// Points are processed in fixed chunks of one slot each; the objective is the
// sequential sum of the chunks' partial sums, so it does not depend on the
// number of threads or on the schedule.
#define ASSIGN_CHUNK 2048

// Bounds that let EM's later assignments skip most points (Hamerly's k-means
// bounds, in the metric of each point's slot, which is a (semi)norm when the
// metric is PSD): u_i >= √dist_i(c_idx[i]) and l_i <= √dist_i(c_m) for every
// other m, both for the centroids Cold of the previous assignment (s2 is a
// per-point factor: it changes no argmin and is left out). When the
// centroids move by δ_m = ‖c_m − cold_m‖, u_i grows by δ_idx[i] and l_i
// shrinks by the largest other δ; a point whose l_i² − u_i² (u_i first
// tightened to the exact distance) exceeds E_i keeps its centroid without a
// scan. E_i = 1e-10 · Σ|M| · (max|x_i| + max|c|)² bounds, with a wide
// margin, the rounding of every score the full scan would compute, so a
// skipped point gets the very index the full scan gives (the scan's winner
// beats every other score by more than their rounding, so no tie is
// possible): EM's steps are bit-identical with and without the bounds.
struct vq_bounds {
    double *u, *l;  // (n)
    double *Cold;   // (k, d) the centroids u and l refer to
    double *xinf;   // (n) max_a |x_ia|
    bool valid;     // u, l hold bounds (else: full scans that set them)
};

static const double zero[GQ_VQ_MAX_DIM];
#define BOUND_SLACK 1e-12 // relative widening of each bound update (their own rounding)
#define BOUND_TOL 1e-10
#define BOUNDS_MIN_K 128

static double assign_impl(const struct gq_vq_data *D, const double *C, int k, int32_t *idx, double *dist,
                          struct vq_bounds *B) {
    const int d = D->d, ns = D->n_slots, ps = D->per_slot;
    const int64_t cps = (ps + ASSIGN_CHUNK - 1) / ASSIGN_CHUNK, nch = (int64_t)ns * cps;
    if (nch <= 0) return 0;
    const int nt = omp_in_parallel() ? 1 : omp_get_max_threads();
    const size_t per_t = (size_t)k * d + 2 * (size_t)k + (B ? ASSIGN_CHUNK + 4 * GQ_VQ_MAX_DIM : 0);
    double *part = malloc(sizeof(double) * (size_t)nch), *scratch = malloc(sizeof(double) * (size_t)nt * per_t);
    if (!part || !scratch) {
        free(part), free(scratch);
        return NAN;
    }
    double cinf = 0; // max |c|: the scale of the scores' rounding
    if (B)
        for (size_t j = 0; j < (size_t)k * d; j++) cinf = fabs(C[j]) > cinf ? fabs(C[j]) : cinf;
#pragma omp parallel num_threads(nt)
    {
        const int tid = omp_get_thread_num();
        double *Pt = scratch + (size_t)tid * per_t, *nrm = Pt + (size_t)k * d, *drift = nrm + k;
        double *list_x = drift + k;                              // (4, d) gathered points to rescan
        int64_t *list = (int64_t *)(list_x + 4 * GQ_VQ_MAX_DIM); // (ASSIGN_CHUNK) points to rescan
        int64_t cur = -1;
        double dmax1 = 0, dmax2 = 0, mabs = 0;
        int amax = -1;
#pragma omp for schedule(dynamic, 1)
        for (int64_t ch = 0; ch < nch; ch++) {
            const int64_t s = ch / cps;
            const double *M = D->metric + (size_t)s * d * d;
            if (s != cur) { // P of this slot, transposed to (d, k)
                double pm[GQ_VQ_MAX_DIM];
                for (int m = 0; m < k; m++) {
                    gq_vq_precompute(M, D->diag, d, C + (size_t)m * d, 1, pm, nrm + m);
                    for (int a = 0; a < d; a++) Pt[(size_t)a * k + m] = pm[a];
                }
                if (B) { // the centroids' moves in this slot's metric, the two largest
                    dmax1 = dmax2 = 0, amax = -1, mabs = 0;
                    for (int a = 0; a < d; a++)
                        for (int c = 0; c < d; c++)
                            if (a == c || !D->diag) mabs += fabs(M[a * d + c]);
                    for (int m = 0; m < k && B->valid; m++) {
                        const double q = qform(M, D->diag, d, C + (size_t)m * d, B->Cold + (size_t)m * d);
                        const double v = sqrt(q > 0 ? q : 0) * (1 + BOUND_SLACK);
                        if (!(v <= INFINITY)) dmax1 = dmax2 = INFINITY; // NaN: no point is skipped
                        drift[m] = v;
                        if (v > dmax1) dmax2 = dmax1, dmax1 = v, amax = m;
                        else if (v > dmax2) dmax2 = v;
                    }
                }
                cur = s;
            }
            const int64_t i0 = s * ps + (ch % cps) * ASSIGN_CHUNK;
            const int64_t i1 = (ch % cps + 1) * ASSIGN_CHUNK < ps ? i0 + ASSIGN_CHUNK : (s + 1) * ps;
            if (!B) {
                int64_t i4 = i0;
                for (; i4 + 4 <= i1; i4 += 4) nearest4_cols(D->x + (size_t)i4 * d, d, Pt, nrm, k, idx + i4);
                for (int64_t i = i4; i < i1; i++) idx[i] = nearest_cols(D->x + (size_t)i * d, d, Pt, nrm, k, NULL);
            } else {
                int64_t nl = 0;
                for (int64_t i = i0; i < i1; i++) {
                    const double *x = D->x + (size_t)i * d, xs = B->xinf[i] + cinf, tol = BOUND_TOL * mabs * xs * xs;
                    if (B->valid) {
                        const int m = idx[i];
                        double u = (B->u[i] + drift[m]) * (1 + BOUND_SLACK);
                        const double l = (B->l[i] - (m == amax ? dmax2 : dmax1)) * (1 - BOUND_SLACK);
                        B->l[i] = l;
                        if (!(l > 0 && l * l - u * u > tol)) {
                            const double q = qform(M, D->diag, d, x, C + (size_t)m * d);
                            u = sqrt(q > 0 ? q : 0) * (1 + BOUND_SLACK);
                        }
                        B->u[i] = u;
                        if (l > 0 && l * l - u * u > tol) continue;
                    }
                    list[nl++] = i;
                }
                // the rest: full scans (the same code as without bounds), which also
                // give the second-best score for l
                for (int64_t j = 0; j < nl; j += 4) {
                    const int np = nl - j < 4 ? (int)(nl - j) : 4;
                    int32_t out[4];
                    double sec[4];
                    if (np == 4) {
                        for (int p = 0; p < 4; p++) memcpy(list_x + p * d, D->x + (size_t)list[j + p] * d, sizeof(double) * d);
                        nearest4_cols_sec(list_x, d, Pt, nrm, k, out, sec);
                    } else
                        for (int p = 0; p < np; p++)
                            out[p] = nearest_cols(D->x + (size_t)list[j + p] * d, d, Pt, nrm, k, &sec[p]);
                    for (int p = 0; p < np; p++) {
                        const int64_t i = list[j + p];
                        const double *x = D->x + (size_t)i * d, xs = B->xinf[i] + cinf;
                        const double tol = BOUND_TOL * mabs * xs * xs;
                        const double qu = qform(M, D->diag, d, x, C + (size_t)out[p] * d);
                        const double q2 = sec[p] + qform(M, D->diag, d, x, zero) - tol; // second-best distance, rounded down
                        idx[i] = out[p];
                        B->u[i] = sqrt(qu > 0 ? qu : 0) * (1 + BOUND_SLACK);
                        B->l[i] = sqrt(q2 > 0 ? q2 : 0) * (1 - BOUND_SLACK);
                    }
                }
            }
            double acc = 0;
            for (int64_t i = i0; i < i1; i++) {
                const double *x = D->x + (size_t)i * d;
                const int m = idx[i];
                const double v = qform(M, D->diag, d, x, C + (size_t)m * d) * (D->s2 ? D->s2[i] : 1.0);
                if (dist) dist[i] = v;
                acc += v;
            }
            part[ch] = acc;
        }
    }
    double tot = 0;
    for (int64_t c = 0; c < nch; c++) tot += part[c];
    free(part), free(scratch);
    if (B) B->valid = true, memcpy(B->Cold, C, sizeof(double) * (size_t)k * d);
    return tot;
}

double gq_vq_assign(const struct gq_vq_data *D, const double *C, int k, int32_t *idx, double *dist) {
    return assign_impl(D, C, k, idx, dist, NULL);
}

static void bounds_free(struct vq_bounds *B) {
    free(B->u), free(B->l), free(B->Cold), free(B->xinf);
    *B = (struct vq_bounds){0};
}

// B for D's EM, or NULL where the bounds do not hold or do not pay: a metric
// that is not positive definite (its distances break the triangle
// inequality; a diagonal one only needs a non-negative diagonal), k = 1,
// or no memory (then the full scans run, with the same results).
static struct vq_bounds *bounds_init(const struct gq_vq_data *D, int k, struct vq_bounds *B) {
    const int d = D->d;
    const int64_t n = gq_vq_n_points(D);
    if (k < BOUNDS_MIN_K || n <= 0) return NULL;
    for (int s = 0; s < D->n_slots; s++) {
        const double *M = D->metric + (size_t)s * d * d;
        if (D->diag) {
            for (int a = 0; a < d; a++)
                if (!(M[a * d + a] >= 0 && M[a * d + a] < INFINITY)) return NULL;
        } else {
            double F[GQ_VQ_MAX_DIM * GQ_VQ_MAX_DIM];
            memcpy(F, M, sizeof(double) * d * d);
            if (LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'U', d, F, d) != 0) return NULL;
        }
    }
    B->u = malloc(sizeof(double) * n), B->l = malloc(sizeof(double) * n);
    B->xinf = malloc(sizeof(double) * n), B->Cold = malloc(sizeof(double) * (size_t)k * d);
    if (!B->u || !B->l || !B->xinf || !B->Cold) {
        bounds_free(B);
        return NULL;
    }
    for (int64_t i = 0; i < n; i++) {
        double v = 0;
        for (int a = 0; a < d; a++) v = fabs(D->x[(size_t)i * d + a]) > v ? fabs(D->x[(size_t)i * d + a]) : v;
        B->xinf[i] = v;
    }
    B->valid = false;
    return B;
}

// The right-hand side is accumulated relative to an anchor, the cluster's
// first point: c = x_ref + A⁻¹ Σ s2 M (x − x_ref). Same solution, but a cluster
// of identical points gets its point back exactly (no rounding residue that
// would raise a zero objective), and the sums stay centred.
int gq_vq_mstep(const struct gq_vq_data *D, const int32_t *idx, int k, double *C) {
    const int d = D->d, dd = d * d;
    const int64_t n = gq_vq_n_points(D);
    double *A = calloc((size_t)k * dd, sizeof(double)), *b = calloc((size_t)k * d, sizeof(double));
    int64_t *anchor = malloc(sizeof(int64_t) * (size_t)k);
    if (!A || !b || !anchor) {
        free(A), free(b), free(anchor);
        return k; // out of memory: nothing updated
    }
    for (int m = 0; m < k; m++) anchor[m] = -1;
    for (int64_t i = 0; i < n; i++) {
        const int m = idx[i];
        const double *M = D->metric + (size_t)(i / D->per_slot) * dd, *x = D->x + (size_t)i * d;
        const double w = D->s2 ? D->s2[i] : 1.0;
        double *Am = A + (size_t)m * dd, *bm = b + (size_t)m * d, e[GQ_VQ_MAX_DIM];
        if (anchor[m] < 0) anchor[m] = i;
        const double *xr = D->x + (size_t)anchor[m] * d;
        for (int a = 0; a < d; a++) e[a] = x[a] - xr[a];
        if (D->diag) {
            for (int a = 0; a < d; a++) {
                Am[a * d + a] += w * M[a * d + a];
                bm[a] += w * M[a * d + a] * e[a];
            }
        } else {
            for (int a = 0; a < d; a++)
                for (int c = 0; c < d; c++) {
                    Am[a * d + c] += w * M[a * d + c];
                    bm[a] += w * M[a * d + c] * e[c];
                }
        }
    }
    int empty = 0;
    for (int m = 0; m < k; m++) {
        if (anchor[m] < 0) {
            empty++;
            continue;
        }
        const double *Am = A + (size_t)m * dd, *bm = b + (size_t)m * d, *xr = D->x + (size_t)anchor[m] * d;
        double *c = C + (size_t)m * d;
        if (D->diag) {
            for (int a = 0; a < d; a++)
                if (Am[a * d + a] > 0) c[a] = xr[a] + bm[a] / Am[a * d + a];
        } else {
            // A is symmetric: column-major is the same matrix and spares
            // LAPACKE's row-major transposition copies
            double Af[GQ_VQ_MAX_DIM * GQ_VQ_MAX_DIM], bf[GQ_VQ_MAX_DIM];
            memcpy(Af, Am, sizeof(double) * dd);
            memcpy(bf, bm, sizeof(double) * d);
            if (LAPACKE_dposv(LAPACK_COL_MAJOR, 'U', d, 1, Af, d, bf, d) == 0) {
                bool ok = true;
                for (int a = 0; a < d; a++) ok &= isfinite(bf[a]);
                if (ok)
                    for (int a = 0; a < d; a++) c[a] = xr[a] + bf[a];
            }
        }
    }
    free(A), free(b), free(anchor);
    return empty;
}


static enum gq_status cpu_dgemm(bool ta, bool tb, int m, int n, int k, double alpha, const double *A, int lda,
                                const double *B, int ldb, double beta, double *C, int ldc) {
    cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, alpha, A, lda,
                B, ldb, beta, C, ldc);
    return GQ_OK;
}

static enum gq_status cpu_dsymm_right(int m, int n, const double *S, const double *A, double *C) {
    cblas_dsymm(CblasRowMajor, CblasRight, CblasUpper, m, n, 1.0, S, n, A, n, 0.0, C, n);
    return GQ_OK;
}

static enum gq_status cpu_dsyrk_acc(int n, int k, const double *X, double *H) {
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, n, k, 1.0, X, n, 1.0, H, n);
    return GQ_OK;
}

// Since the matrices are symmetric LAPACK runs in column-major on row-major
// memory: the column-major lower triangle is the row-major upper one, so the
// last potrf leaves exactly GPTQ's torch.linalg.cholesky(Hinv, upper=True).
static enum gq_status cpu_chol_inverse_upper(double *A, int n, int *info) {
    // potrf 'L' in column-major reads the row-major upper triangle
    *info = LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'L', n, A, n);
    if (!*info) *info = LAPACKE_dpotri(LAPACK_COL_MAJOR, 'L', n, A, n);
    if (*info) return GQ_OK;
    // potri left A⁻¹ in the row-major upper triangle; mirror it.
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) A[(size_t)j * n + i] = A[(size_t)i * n + j];
    *info = LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'L', n, A, n);
    for (int i = 0; !*info && i < n; i++) {
        double d = A[(size_t)i * n + i];
        if (!(d > 0) || !isfinite(d)) *info = i + 1;
        for (int j = 0; j < i; j++) A[(size_t)i * n + j] = 0;
    }
    return GQ_OK;
}

static enum gq_status cpu_vq_assign(const struct gq_vq_data *D, const double *C, int k, int32_t *idx, double *dist,
                                    double *objective) {
    // NaN (non-finite data, or out of memory) goes back as the objective: the
    // EM loop reports it, as before the backend table existed.
    *objective = gq_vq_assign(D, C, k, idx, dist);
    return GQ_OK;
}

static enum gq_status cpu_vq_mstep(const struct gq_vq_data *D, const int32_t *idx, int k, double *C, int *empty) {
    *empty = gq_vq_mstep(D, idx, k, C);
    return GQ_OK;
}

static enum gq_status cpu_vq_em(struct gq_vq_em_job *jobs, int n_jobs, int k, int iters) {
    return gq_vq_em_batch(&cpu, jobs, n_jobs, k, iters);
}

static enum gq_status cpu_dposv(int n, double *A, double *b, int *info) {
    *info = LAPACKE_dposv(LAPACK_ROW_MAJOR, 'U', n, 1, A, n, b, 1);
    if (*info < 0) return gq_fail(GQ_ERR_ARG, "dposv: argument %d is invalid", -*info);
    return GQ_OK;
}
static enum gq_status cpu_vq_gram(const struct gq_vq_gram *g, double *G) { return gq_vq_gram(g, G); }
static enum gq_status cpu_hold(const void *p, size_t bytes, bool writable) { return GQ_OK; }
static enum gq_status cpu_release(const void *p) { return GQ_OK; }

static const struct gq_backend cpu = {
    .name = "cpu",
    .dgemm = cpu_dgemm,
    .dsymm_right = cpu_dsymm_right,
    .dsyrk_acc = cpu_dsyrk_acc,
    .chol_inverse_upper = cpu_chol_inverse_upper,
    .vq_assign = cpu_vq_assign,
    .vq_mstep = cpu_vq_mstep,
    .vq_em = cpu_vq_em,
    .dposv = cpu_dposv,
    .vq_gram = cpu_vq_gram,
    .hold = cpu_hold,
    .release = cpu_release,
};

const struct gq_backend *gq_backend_cpu(void) { return &cpu; }

enum gq_status gq_vq_em_nan(const struct gq_vq_data *D, int k) {
    return gq_fail(GQ_ERR_NUMERIC, "vq: EM objective is NaN (%lld points of dimension %d, %d centroids: "
                   "non-finite data or out of memory)", (long long)gq_vq_n_points(D), D->d, k);
}

enum gq_status gq_vq_em_batch(const struct gq_backend *large, struct gq_vq_em_job *jobs, int n_jobs, int k,
                              int iters) {
    int bad = n_jobs;
    enum gq_status bs = GQ_OK;
    char msg[512] = "";
#pragma omp parallel for schedule(dynamic, 1) if (n_jobs > 1)
    for (int j = 0; j < n_jobs; j++) {
        struct gq_vq_em_job *J = &jobs[j];
        J->st.trace = NULL;
        enum gq_status s = gq_vq_em_rounds(large, &J->D, k, iters, J->C, J->idx, &J->st);
        if (s != GQ_OK) {
#pragma omp critical(gq_vq_em_batch)
            if (j < bad) bad = j, bs = s, snprintf(msg, sizeof msg, "%s", gq_last_error());
        }
    }
    return bad < n_jobs ? gq_fail(bs, "%s", msg) : GQ_OK;
}

enum gq_status gq_vq_em_rounds(const struct gq_backend *large, const struct gq_vq_data *D, int k, int iters, double *C,
                               int32_t *idx, struct gq_vq_em_stats *st) {
    const int d = D->d;
    const int64_t n = gq_vq_n_points(D);
    double *dist = malloc(sizeof(double) * n);
    int32_t *prev = malloc(sizeof(int32_t) * n);
    char *used = malloc((size_t)k);
    if (!dist || !prev || !used) {
        free(dist), free(prev), free(used);
        return gq_fail(GQ_ERR_NOMEM, "vq: EM buffers for %lld points, %d centroids", (long long)n, k);
    }
    // A small group's EM stays on the CPU: a device call pays copies and
    // launches (tens of µs, two calls per iteration), more than the CPU
    // spends below this many point-centroid coordinates, and the groups of a
    // column tile run in parallel over the CPU threads. (2D 2.125: 1024
    // points · 16 · 2 = 2^15; 4D 2.125: 16384 · 256 · 4 = 2^24.)
    const struct gq_backend *be = n * k * d >= GQ_VQ_EM_DEVICE_MIN ? large : &cpu;
    // On the CPU the assignments after the first go through the bounds
    // (assign_impl): same steps, most points not rescanned.
    struct vq_bounds B = {0}, *bp = be == &cpu ? bounds_init(D, k, &B) : NULL;
    double obj = NAN;
    enum gq_status ret = GQ_OK;
#define ASSIGN() (bp ? (obj = assign_impl(D, C, k, idx, dist, bp), GQ_OK) : be->vq_assign(D, C, k, idx, dist, &obj))
    ret = ASSIGN();
    if (st && st->trace) st->trace[0] = obj;
    int it = 0, reseeded = 0;
    while (ret == GQ_OK && it < iters && !isnan(obj)) {
        memcpy(prev, idx, sizeof(int32_t) * n);
        int empty = 0;
        if ((ret = be->vq_mstep(D, idx, k, C, &empty)) != GQ_OK) break;
        if (empty) {
            // Each empty centroid, in increasing order, moves onto the point
            // worst served by the M-step's centroids (lowest index on ties),
            // which joins it at distance 0. The centroid had no points, so no
            // other distance changes: the objective cannot increase.
#pragma omp parallel for schedule(static) if (n >= 4096)
            for (int64_t i = 0; i < n; i++)
                dist[i] = qform(D->metric + (size_t)(i / D->per_slot) * d * d, D->diag, d, D->x + (size_t)i * d,
                                C + (size_t)idx[i] * d) *
                          (D->s2 ? D->s2[i] : 1.0);
            memset(used, 0, (size_t)k);
            for (int64_t i = 0; i < n; i++) used[idx[i]] = 1;
            for (int m = 0; m < k; m++) {
                if (used[m]) continue;
                int64_t w = 0;
                for (int64_t i = 1; i < n; i++)
                    if (dist[i] > dist[w]) w = i;
                if (!(dist[w] > 0)) break; // every point sits on a centroid
                memcpy(C + (size_t)m * d, D->x + (size_t)w * d, sizeof(double) * d);
                idx[w] = m, dist[w] = 0, used[m] = 1;
                if (bp) bp->l[w] = -INFINITY; // its bounds were for another centroid: rescan
                reseeded++;
            }
        }
        if ((ret = ASSIGN()) != GQ_OK) break;
        it++;
        if (st && st->trace) st->trace[it] = obj;
        if (!memcmp(prev, idx, sizeof(int32_t) * n)) break;
    }
#undef ASSIGN
    if (ret == GQ_OK && isnan(obj)) ret = gq_vq_em_nan(D, k);
    free(used), free(dist), free(prev), bounds_free(&B);
    if (st) st->iters = it, st->n_reseeded = reseeded, st->objective = obj;
    return ret;
}

// ---------------------------------------------------------------------------
// Codebook-update normal equations (contract: vqprim.h). G is made of (k·d)²
// blocks, one per pair of (stage, column tile) B1, B2:
//   G[(B1, c1, j1), (B2, c2, j2)] = Σ_r Σ_{v1 ∈ ct1: idx_s1(r, v1) = c1} Σ_{v2 ∈ ct2: idx_s2(r, v2) = c2}
//                                   σ_{r,v1} σ_{r,v2} H[v1·d + j1, v2·d + j2].
// One task per pair B1 <= B2 owns its block (no partial sums to reduce, the
// same order of additions for any thread count): per row, every pair of
// vectors adds its d × d block of H at its two centroids; a block of G is
// (k·d)² doubles and stays in cache. B1 > B2: the transposed mirror, as H is
// symmetric. About (nv·d)²/2 multiply-adds per row.

// A tile's vectors of one row sorted by centroid (counting sort: ascending
// vector order within each centroid): centroid c's vectors are
// list[start[c] .. start[c + 1]).
static void centroid_lists(const uint16_t *idx, int va, int vb, int k, int *start, int *list) {
    for (int c = 0; c <= k; c++) start[c] = 0;
    for (int v = va; v < vb; v++) start[idx[v] + 1]++;
    for (int c = 0; c < k; c++) start[c + 1] += start[c];
    for (int v = va; v < vb; v++) list[start[idx[v]]++] = v;
    for (int c = k; c > 0; c--) start[c] = start[c - 1];
    start[0] = 0;
}

// Per row, the vectors of both tiles are listed by centroid and every d × d
// block of G sums its own pairs (v1, v2) in registers: each entry receives
// the same additions in the same order as a scan of all pairs in (v1, v2)
// order would give it (those pairs are a subsequence of that scan), without
// a read-modify-write of G per pair. scratch: 2 (k + 1) + 4 nv ints.
static inline __attribute__((always_inline)) void gram_block(const struct gq_vq_gram *g, int D, int B1, int B2,
                                                             double *G, size_t m, int *scratch) {
    const int nct = g->n_ct, k = g->k, kd = k * D, nv = g->nv, ldh = g->ldh;
    const int s1 = B1 / nct, ct1 = B1 % nct, s2 = B2 / nct, ct2 = B2 % nct;
    const int v1a = g->vt_start[ct1], v1b = g->vt_start[ct1 + 1], v2a = g->vt_start[ct2], v2b = g->vt_start[ct2 + 1];
    int *st1 = scratch, *st2 = st1 + k + 1, *l1 = st2 + k + 1, *l2 = l1 + nv, *u1 = l2 + nv, *u2 = u1 + nv;
    double *Gb = G + (size_t)B1 * kd * m + (size_t)B2 * kd;
    for (int a = 0; a < kd; a++) memset(Gb + (size_t)a * m, 0, sizeof(double) * kd);
    for (int r = 0; r < g->rows; r++) {
        const uint16_t *i1 = g->idx + s1 * g->idx_stage + (size_t)r * nv, *i2 = g->idx + s2 * g->idx_stage + (size_t)r * nv;
        const double *sr = g->sig ? g->sig + (size_t)r * nv : NULL;
        centroid_lists(i1, v1a, v1b, k, st1, l1);
        centroid_lists(i2, v2a, v2b, k, st2, l2);
        int n1 = 0, n2 = 0; // the row's centroids in use, ascending (at most its vectors, often << k)
        for (int c = 0; c < k; c++) {
            if (st1[c] < st1[c + 1]) u1[n1++] = c;
            if (st2[c] < st2[c + 1]) u2[n2++] = c;
        }
        for (int a1 = 0; a1 < n1; a1++) {
            const int c1 = u1[a1];
            for (int a2 = 0; a2 < n2; a2++) {
                const int c2 = u2[a2];
                double *gg = Gb + (size_t)c1 * D * m + (size_t)c2 * D, acc[GQ_VQ_MAX_DIM * GQ_VQ_MAX_DIM];
                for (int j1 = 0; j1 < D; j1++)
                    for (int j2 = 0; j2 < D; j2++) acc[j1 * D + j2] = gg[(size_t)j1 * m + j2];
                for (int p1 = st1[c1]; p1 < st1[c1 + 1]; p1++) {
                    const int v1 = l1[p1];
                    const double w1 = sr ? sr[v1] : 1.0, *h1 = g->H + (size_t)v1 * D * ldh;
                    for (int p2 = st2[c2]; p2 < st2[c2 + 1]; p2++) {
                        const int v2 = l2[p2];
                        const double w = sr ? w1 * sr[v2] : 1.0, *hh = h1 + (size_t)v2 * D;
                        for (int j1 = 0; j1 < D; j1++)
                            for (int j2 = 0; j2 < D; j2++) acc[j1 * D + j2] += w * hh[(size_t)j1 * ldh + j2];
                    }
                }
                for (int j1 = 0; j1 < D; j1++)
                    for (int j2 = 0; j2 < D; j2++) gg[(size_t)j1 * m + j2] = acc[j1 * D + j2];
            }
        }
    }
}

enum gq_status gq_vq_gram(const struct gq_vq_gram *g, double *G) {
    const int nb = g->stages * g->n_ct, kd = g->k * g->d, npairs = nb * (nb + 1) / 2;
    const size_t m = gq_vq_gram_m(g);
    int bad = 0;
#pragma omp parallel
    {
        int *scratch = malloc(sizeof(int) * (2 * ((size_t)g->k + 1) + 4 * (size_t)g->nv));
        if (!scratch) {
#pragma omp atomic write
            bad = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int pi = 0; pi < npairs; pi++) {
            if (!scratch) continue;
            int B1 = 0, rest = pi; // pairs in order (0,0) (0,1) .. (0,nb−1) (1,1) ..
            while (rest >= nb - B1) rest -= nb - B1, B1++;
            const int B2 = B1 + rest;
            switch (g->d) { // constant D: the d × d loops unrolled
            case 1: gram_block(g, 1, B1, B2, G, m, scratch); break;
            case 2: gram_block(g, 2, B1, B2, G, m, scratch); break;
            case 4: gram_block(g, 4, B1, B2, G, m, scratch); break;
            default: gram_block(g, g->d, B1, B2, G, m, scratch); break;
            }
        }
        free(scratch);
    }
    if (bad) return gq_fail(GQ_ERR_NOMEM, "vq: normal-equation lists for %d centroids", g->k);
#pragma omp parallel for schedule(dynamic, 1)
    for (int B1 = 0; B1 < nb; B1++) // the lower blocks: mirrors of the upper ones
        for (int B2 = 0; B2 < B1; B2++)
            for (int a = 0; a < kd; a++)
                for (int b = 0; b < kd; b++)
                    G[((size_t)B1 * kd + a) * m + (size_t)B2 * kd + b] = G[((size_t)B2 * kd + b) * m + (size_t)B1 * kd + a];
    return GQ_OK;
}
