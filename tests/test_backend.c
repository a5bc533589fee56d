// test_backend: every primitive of the CUDA backend (src/backend/backend.h)
// against the CPU reference on random inputs, then GPTQ and GPTVQ end to end
// on both devices. Skips (exit 77) with the reason when there is no CUDA
// plug-in or no device.
//
// Tolerances (double precision; the libraries sum in other orders):
//   GEMM / SYMM / SYRK: |Δ| <= 1e-12 · Σ_k |a||b| bound (max |A| · max |B| · k)
//   Cholesky inverse factor: |Δ| <= 1e-9 · max |U| (condition number ~1e3)
//   VQ assignment: objective within 1e-12 relative; a point may pick another
//     centroid only on a near-tie (its two distances within 1e-9 relative)
//   M-step: centroids within 1e-10 relative, same number of empty ones; a
//     second device run bit-identical (no floating-point atomics)
//   batched EM (vq_em) on clustered points (no near-ties): per group the same
//     iterations, re-seeds and assignments, centroids and objective within
//     1e-9; a second device run bit-identical
//   Cholesky solve (dposv): |Δx| <= 1e-9 · max |x| (condition ~1e3); a
//     matrix that is not positive definite gives info > 0 on both
//   codebook-update normal equations (vq_gram): |Δ| <= 1e-12 · max |G| · nv·d;
//     a shape beyond the kernel (k > 256) takes the CPU reference: equal
//   held operands (hold / release): the same products as without, within the
//     GEMM tolerance; a writable hold's result reaches the host at release;
//     writing into a read-only hold fails
//   end to end: relative output error within 1e-6 relative (GPTQ) and 2 %
//     (GPTVQ: a near-tie in one EM assignment may move a centroid)
//   inference GEMVs (packed VQ over the option space of test_vqcases.h plus a
//     row tile with 112 KiB of codebooks, both VQ kernels, Q4_0, Q4_1, Q8_0, F16,
//     F32): |y − y_ref| <= 1e-5 · Σ|w x| against a
//     double-precision product of the decoded matrix; normalised VQ matrices
//     are refused (unsupported). The prefill product (decode to f32 tiles of a
//     few rows, TF32 GEMM, 5 tokens): |Δ| <= 4e-3 · Σ|w x| (TF32 rounds both
//     operands to 11 significant bits: ~2.4e-4 relative each)
//   calibration on the device (quantize --device cuda: block passes, token
//     weights and Hessians there) vs the CPU: GPTQ W4 g32 on stories260K with
//     residual token weights, block 0's attention-input Hessian within 1e-5 ·
//     max |H| (same inputs, FP32 sums in another order), every other one
//     within 2e-2 (their inputs went through weights quantized on slightly
//     different Hessians), mean layer error within 2 %
//   decoder forward on a CUDA context vs the CPU's prefill (float; stories260K
//     as f32, as GPTVQ 2D 2.125 bpv packed, as F16; SmolLM2-135M's Q4_1 /
//     Q8_0 file when models/ has it): token by token (GEMV path) max
//     |Δ logit| <= 1e-4 · max |logit|; a 48-token prefill (TF32 path) <=
//     2e-2 · max |logit| and its mean next-token NLL within 1e-3 relative;
//     the same prefill with FP32 GEMMs (GPTVQ_CUDA_TF32=0) within 1e-3 and
//     1e-4 (tells a TF32 precision miss from a wrong kernel).
//     Without a GPU (and with TEST_BACKEND_DEVICE=cpu) these model checks run
//     CPU against CPU: the harness itself, before the skip.
#include "test.h"
#include "test_rand.h"

#include "backend/backend.h"
#include "io/gguf.h"
#include "kern/qmatmul.h"
#include "quant/vq.h"
#include "format/vqpack.h"

#include "test_vqcases.h"

#include <sys/stat.h>
#include <unistd.h>

static double maxabs(const double *a, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(a[i]));
    return m;
}
static double *rand_d(size_t n) {
    double *a = malloc(sizeof(double) * n);
    for (size_t i = 0; i < n; i++) a[i] = rng_normal();
    return a;
}
static double maxdiff(const double *a, const double *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(a[i] - b[i]));
    return m;
}

static void check_gemm(const struct gq_backend *cpu, const struct gq_backend *cu, bool ta, bool tb, int m, int n,
                       int k, double beta) {
    // leading dimensions wider than the rows, as the lazy feedback uses them
    int ra = ta ? k : m, ca = ta ? m : k, rb = tb ? n : k, cb = tb ? k : n, lda = ca + 3, ldb = cb + 5, ldc = n + 7;
    double *A = rand_d((size_t)ra * lda), *B = rand_d((size_t)rb * ldb), *C0 = rand_d((size_t)m * ldc);
    double *C1 = malloc(sizeof(double) * (size_t)m * ldc), *C2 = malloc(sizeof(double) * (size_t)m * ldc);
    memcpy(C1, C0, sizeof(double) * (size_t)m * ldc), memcpy(C2, C0, sizeof(double) * (size_t)m * ldc);
    CHECK_OK(cpu->dgemm(ta, tb, m, n, k, -1.0, A, lda, B, ldb, beta, C1, ldc));
    CHECK_OK(cu->dgemm(ta, tb, m, n, k, -1.0, A, lda, B, ldb, beta, C2, ldc));
    double tol = 1e-12 * maxabs(A, (size_t)ra * lda) * maxabs(B, (size_t)rb * ldb) * k + 1e-12 * maxabs(C0, (size_t)m * ldc);
    double dif = 0;
    bool gaps = true; // the elements between the rows are left as they were
    for (int i = 0; i < m; i++)
        for (int j = 0; j < ldc; j++) {
            size_t o = (size_t)i * ldc + j;
            if (j < n) dif = fmax(dif, fabs(C1[o] - C2[o]));
            else gaps &= C2[o] == C0[o];
        }
    CHECKF(dif <= tol && gaps, "dgemm ta %d tb %d (%d, %d, %d) beta %g: max |diff| %.3g (tol %.3g), gaps kept %d", ta,
           tb, m, n, k, beta, dif, tol, gaps);
    free(A), free(B), free(C0), free(C1), free(C2);
}

static void check_symm_syrk(const struct gq_backend *cpu, const struct gq_backend *cu, int m, int n, int k) {
    double *S = rand_d((size_t)n * n), *A = rand_d((size_t)m * n);
    double *C1 = malloc(sizeof(double) * m * n), *C2 = malloc(sizeof(double) * m * n);
    for (int i = 0; i < n; i++) // garbage below the diagonal: only the upper triangle may be read
        for (int j = 0; j < i; j++) S[(size_t)i * n + j] = NAN;
    CHECK_OK(cpu->dsymm_right(m, n, S, A, C1));
    CHECK_OK(cu->dsymm_right(m, n, S, A, C2));
    double tol = 1e-12 * maxabs(A, (size_t)m * n) * 4 * n, d = maxdiff(C1, C2, (size_t)m * n);
    CHECKF(d <= tol, "dsymm_right (%d, %d): max |diff| %.3g (tol %.3g)", m, n, d, tol);

    double *X = rand_d((size_t)k * n), *H1 = rand_d((size_t)n * n), *H2 = malloc(sizeof(double) * n * n);
    memcpy(H2, H1, sizeof(double) * n * n);
    double *H0 = malloc(sizeof(double) * n * n);
    memcpy(H0, H1, sizeof(double) * n * n);
    CHECK_OK(cpu->dsyrk_acc(n, k, X, H1));
    CHECK_OK(cu->dsyrk_acc(n, k, X, H2));
    double du = 0;
    bool lower_kept = true;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            size_t o = (size_t)i * n + j;
            if (j >= i) du = fmax(du, fabs(H1[o] - H2[o]));
            else lower_kept &= H2[o] == H0[o];
        }
    tol = 1e-12 * maxabs(X, (size_t)k * n) * maxabs(X, (size_t)k * n) * k + 1e-12;
    CHECKF(du <= tol && lower_kept, "dsyrk_acc (%d, k %d): max |diff| %.3g (tol %.3g), lower kept %d", n, k, du, tol,
           lower_kept);
    free(S), free(A), free(C1), free(C2), free(X), free(H0), free(H1), free(H2);
}

static void check_chol(const struct gq_backend *cpu, const struct gq_backend *cu, int n) {
    int t = 2 * n;
    double *Z = rand_d((size_t)t * n), *A1 = calloc((size_t)n * n, sizeof(double));
    for (int a = 0; a < n; a++) // A = ZᵀZ/t + 0.01 I, upper triangle only (lower: garbage)
        for (int b = 0; b < n; b++) {
            double s = 0;
            for (int r = 0; r < t; r++) s += Z[(size_t)r * n + a] * Z[(size_t)r * n + b];
            A1[(size_t)a * n + b] = b >= a ? s / t + (a == b ? 0.01 : 0) : 1e300;
        }
    double *A2 = malloc(sizeof(double) * n * n);
    memcpy(A2, A1, sizeof(double) * n * n);
    int i1 = -1, i2 = -1;
    CHECK_OK(cpu->chol_inverse_upper(A1, n, &i1));
    CHECK_OK(cu->chol_inverse_upper(A2, n, &i2));
    double d = maxdiff(A1, A2, (size_t)n * n), tol = 1e-9 * maxabs(A1, (size_t)n * n);
    CHECKF(i1 == 0 && i2 == 0 && d <= tol, "chol_inverse_upper n %d: info %d / %d, max |diff| %.3g (tol %.3g)", n, i1,
           i2, d, tol);
    // not positive definite: both report it
    for (int a = 0; a < n; a++)
        for (int b = 0; b < n; b++) A1[(size_t)a * n + b] = A2[(size_t)a * n + b] = a == b ? (a == n / 2 ? -1.0 : 1.0) : 0;
    CHECK_OK(cpu->chol_inverse_upper(A1, n, &i1));
    CHECK_OK(cu->chol_inverse_upper(A2, n, &i2));
    CHECKF(i1 > 0 && i2 > 0, "chol_inverse_upper indefinite: info %d / %d", i1, i2);
    free(Z), free(A1), free(A2);
}

// Points of n_slots slots; metrics diag or full SPD; s2 spread.
static void check_vq(const struct gq_backend *cpu, const struct gq_backend *cu, int d, int k, int n_slots,
                     int per_slot, bool diag, bool weights) {
    const int64_t n = (int64_t)n_slots * per_slot;
    double *x = rand_d((size_t)n * d), *s2 = NULL, *M = malloc(sizeof(double) * n_slots * d * d);
    if (weights) {
        s2 = malloc(sizeof(double) * n);
        for (int64_t i = 0; i < n; i++) s2[i] = exp(rng_normal());
    }
    for (int s = 0; s < n_slots; s++) {
        double L[64];
        for (int a = 0; a < d * d; a++) L[a] = rng_normal() * 0.3;
        for (int a = 0; a < d; a++)
            for (int b = 0; b < d; b++) {
                double v = a == b ? 1 + rng_unif() : 0;
                for (int c = 0; c < d; c++) v += L[a * d + c] * L[b * d + c];
                M[(size_t)s * d * d + a * d + b] = v;
            }
    }
    struct gq_vq_data D = {.d = d, .n_slots = n_slots, .per_slot = per_slot, .x = x, .s2 = s2, .metric = M, .diag = diag};
    double *C = rand_d((size_t)k * d);
    int32_t *i1 = malloc(sizeof(int32_t) * n), *i2 = malloc(sizeof(int32_t) * n);
    double *d1 = malloc(sizeof(double) * n), *d2 = malloc(sizeof(double) * n), o1 = 0, o2 = 0;
    CHECK_OK(cpu->vq_assign(&D, C, k, i1, d1, &o1));
    CHECK_OK(cu->vq_assign(&D, C, k, i2, d2, &o2));
    int64_t moved = 0, bad = 0;
    for (int64_t i = 0; i < n; i++) {
        if (i1[i] == i2[i]) continue;
        moved++;
        // a near-tie: the GPU's centroid is within 1e-9 of the CPU's distance
        const double *Ms = M + (size_t)(i / per_slot) * d * d;
        double q[2];
        for (int w = 0; w < 2; w++) {
            const double *c = C + (size_t)(w ? i2[i] : i1[i]) * d;
            double e[8], s = 0;
            for (int a = 0; a < d; a++) e[a] = x[(size_t)i * d + a] - c[a];
            for (int a = 0; a < d; a++)
                for (int b = 0; b < d; b++)
                    if (!diag || a == b) s += e[a] * Ms[a * d + b] * e[b];
            q[w] = s;
        }
        if (fabs(q[1] - q[0]) > 1e-9 * fmax(q[0], 1e-300)) bad++;
    }
    CHECKF(bad == 0 && fabs(o1 - o2) <= 1e-12 * fabs(o1) + 1e-300,
           "vq_assign d %d k %d %s%s: objective %.17g / %.17g, %lld points moved, %lld not on a near-tie", d, k,
           diag ? "diag" : "full", weights ? " weighted" : "", o1, o2, (long long)moved, (long long)bad);
    // M-step from the same assignment; centroid k-1 left empty
    for (int64_t i = 0; i < n; i++)
        if (i1[i] == k - 1) i1[i] = 0;
    double *C1 = malloc(sizeof(double) * k * d), *C2 = malloc(sizeof(double) * k * d);
    memcpy(C1, C, sizeof(double) * k * d), memcpy(C2, C, sizeof(double) * k * d);
    int e1 = -1, e2 = -1;
    CHECK_OK(cpu->vq_mstep(&D, i1, k, C1, &e1));
    CHECK_OK(cu->vq_mstep(&D, i1, k, C2, &e2));
    double dm = maxdiff(C1, C2, (size_t)k * d), tol = 1e-10 * fmax(maxabs(C1, (size_t)k * d), 1);
    CHECKF(e1 == e2 && e1 >= 1 && dm <= tol, "vq_mstep d %d k %d %s: empty %d / %d, max |diff| %.3g (tol %.3g)", d, k,
           diag ? "diag" : "full", e1, e2, dm, tol);
    // deterministic: a second run gives the same bits (a resumed run must match an uninterrupted one)
    memcpy(C1, C, sizeof(double) * k * d);
    CHECK_OK(cu->vq_mstep(&D, i1, k, C1, &e1));
    CHECKF(!memcmp(C1, C2, sizeof(double) * k * d), "vq_mstep d %d k %d %s: two device runs differ", d, k,
           diag ? "diag" : "full");
    free(x), free(s2), free(M), free(C), free(i1), free(i2), free(d1), free(d2), free(C1), free(C2);
}

// Batched EM (vq_em): n_jobs groups sharing one set of slot metrics (as a
// column tile's groups do), seeded on the CPU, run by both backends. With
// clustered points (k well-separated clusters) there are no near-ties, so
// both runs take the same steps: same iterations, assignments and re-seeds,
// centroids within 1e-9. `big` adds a group over GQ_VQ_EM_DEVICE_MIN (device
// assignment and M-step per round instead of the batched kernel).
static void check_em(const struct gq_backend *cpu, const struct gq_backend *cu, int d, int k, int n_jobs,
                     int n_slots, int per_slot, bool diag, bool weights, bool big) {
    const int64_t nbig = ((int64_t)GQ_VQ_EM_DEVICE_MIN / (k * d) / n_slots + 1) * n_slots;
    const int nj = n_jobs + (big ? 1 : 0);
    double *M = malloc(sizeof(double) * n_slots * d * d);
    for (int s = 0; s < n_slots; s++)
        for (int a = 0; a < d; a++)
            for (int b = 0; b < d; b++) M[(size_t)s * d * d + a * d + b] = a == b ? 1 + rng_unif() : (diag ? 0 : 0.1);
    struct gq_vq_em_job *J[3] = {calloc(nj, sizeof **J), calloc(nj, sizeof **J), calloc(nj, sizeof **J)};
    double **x = calloc(nj, sizeof *x), **s2 = calloc(nj, sizeof *s2);
    for (int j = 0; j < nj; j++) {
        const int ps = j < n_jobs ? per_slot : (int)(nbig / n_slots);
        const int64_t np = (int64_t)n_slots * ps;
        double *ctr = rand_d((size_t)k * d);
        x[j] = malloc(sizeof(double) * np * d);
        for (int64_t i = 0; i < np; i++) { // cluster i % k (k well apart), small noise
            const int c = (int)(i % k);
            for (int a = 0; a < d; a++) x[j][i * d + a] = 10 * ctr[c * d + a] + 0.1 * rng_normal();
        }
        if (weights) {
            s2[j] = malloc(sizeof(double) * np);
            for (int64_t i = 0; i < np; i++) s2[j][i] = exp(0.5 * rng_normal());
        }
        free(ctr);
        for (int v = 0; v < 3; v++) {
            J[v][j].D = (struct gq_vq_data){.d = d, .n_slots = n_slots, .per_slot = ps, .x = x[j], .s2 = s2[j],
                                            .metric = M, .diag = diag};
            J[v][j].C = malloc(sizeof(double) * k * d);
            J[v][j].idx = malloc(sizeof(int32_t) * np);
        }
        CHECK_OK(gq_vq_seed(&J[0][j].D, k, j % 2 ? GQ_VQ_INIT_KMEANSPP : GQ_VQ_INIT_MAHALANOBIS, 7 + j, J[0][j].C));
        memcpy(J[1][j].C, J[0][j].C, sizeof(double) * k * d), memcpy(J[2][j].C, J[0][j].C, sizeof(double) * k * d);
    }
    CHECK_OK(cpu->vq_em(J[0], nj, k, 30));
    CHECK_OK(cu->vq_em(J[1], nj, k, 30));
    CHECK_OK(cu->vq_em(J[2], nj, k, 30));
    int bad = 0, rs = 0, repeat = 0;
    double worst = 0;
    for (int j = 0; j < nj; j++) {
        const int64_t np = gq_vq_n_points(&J[0][j].D);
        const double dm = maxdiff(J[0][j].C, J[1][j].C, (size_t)k * d) / fmax(maxabs(J[0][j].C, (size_t)k * d), 1);
        worst = fmax(worst, dm);
        bad += J[0][j].st.iters != J[1][j].st.iters || J[0][j].st.n_reseeded != J[1][j].st.n_reseeded ||
               memcmp(J[0][j].idx, J[1][j].idx, sizeof(int32_t) * np) || dm > 1e-9 ||
               fabs(J[0][j].st.objective - J[1][j].st.objective) > 1e-9 * fabs(J[0][j].st.objective) + 1e-300;
        rs += J[0][j].st.n_reseeded;
        repeat += memcmp(J[1][j].C, J[2][j].C, sizeof(double) * k * d) != 0 ||
                  memcmp(J[1][j].idx, J[2][j].idx, sizeof(int32_t) * np) != 0;
    }
    CHECKF(bad == 0, "vq_em d %d k %d %s%s: %d of %d groups differ (worst centroid diff %.3g)", d, k,
           diag ? "diag" : "full", weights ? " weighted" : "", bad, nj, worst);
    CHECKF(repeat == 0, "vq_em d %d k %d: two device runs differ in %d groups", d, k, repeat);
    fprintf(stderr, "vq_em d %d k %d %s%s: %d groups%s, %d re-seeds, worst centroid diff %.3g\n", d, k,
            diag ? "diag" : "full", weights ? " weighted" : "", nj, big ? " (one over the batch limit)" : "", rs, worst);
    for (int j = 0; j < nj; j++) {
        for (int v = 0; v < 3; v++) free(J[v][j].C), free(J[v][j].idx);
        free(x[j]), free(s2[j]);
    }
    for (int v = 0; v < 3; v++) free(J[v]);
    free(x), free(s2), free(M);
}

static void check_em_all(const struct gq_backend *cpu, const struct gq_backend *cu) {
    check_em(cpu, cu, 2, 16, 40, 16, 64, true, false, false); // 2D 2.125's groups: 1024 points of 16 centroids
    check_em(cpu, cu, 2, 16, 12, 8, 32, false, true, true);   // full metrics, weights, one group over the limit
    check_em(cpu, cu, 4, 256, 6, 4, 100, true, false, false); // 400 points, 256 centroids: empties re-seeded
    check_em(cpu, cu, 1, 8, 5, 3, 2, true, true, false);      // fewer points than centroids
}

static void check_dposv(const struct gq_backend *cpu, const struct gq_backend *cu, int n, bool definite) {
    const int t = 2 * n;
    double *Z = rand_d((size_t)t * n), *A[2] = {malloc(sizeof(double) * n * n), malloc(sizeof(double) * n * n)};
    double *b0 = rand_d((size_t)n), *b[2] = {malloc(sizeof(double) * n), malloc(sizeof(double) * n)};
    for (int i = 0; i < n; i++) // ZᵀZ/t + 0.01 I (or − 2 I: indefinite), upper triangle only
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int r = 0; r < t; r++) s += Z[(size_t)r * n + i] * Z[(size_t)r * n + j];
            A[0][(size_t)i * n + j] = j >= i ? s / t + (i == j ? (definite ? 0.01 : -2.0) : 0) : NAN;
        }
    memcpy(A[1], A[0], sizeof(double) * n * n);
    int info[2] = {-1, -1};
    for (int dv = 0; dv < 2; dv++) {
        memcpy(b[dv], b0, sizeof(double) * n);
        CHECK_OK((dv ? cu : cpu)->dposv(n, A[dv], b[dv], &info[dv]));
    }
    if (definite) {
        double d = maxdiff(b[0], b[1], (size_t)n), tol = 1e-9 * maxabs(b[0], (size_t)n);
        CHECKF(info[0] == 0 && info[1] == 0 && d <= tol, "dposv n %d: info %d / %d, max |diff| %.3g (tol %.3g)", n,
               info[0], info[1], d, tol);
    } else
        CHECKF(info[0] > 0 && info[1] > 0, "dposv n %d, indefinite: info %d / %d", n, info[0], info[1]);
    free(Z), free(A[0]), free(A[1]), free(b0), free(b[0]), free(b[1]);
}

static void check_gram(const struct gq_backend *cpu, const struct gq_backend *cu, int d, int k, int stages, int rows,
                       int n_ct, int per_ct, bool with_sig) {
    int vt[33] = {0};
    for (int c = 0; c < n_ct; c++) vt[c + 1] = vt[c] + per_ct + (c % 3); // uneven tiles
    const int nv = vt[n_ct], nvp = nv * d, ldh = nvp + 2, total_rows = rows + 3;
    uint16_t *idx = malloc(sizeof(uint16_t) * stages * total_rows * nv);
    for (int i = 0; i < stages * total_rows * nv; i++) idx[i] = (uint16_t)(rng_u64() % (uint64_t)k);
    double *sig = rand_d((size_t)rows * nv), *H = rand_d((size_t)nvp * ldh);
    struct gq_vq_gram g = {.rows = rows, .nv = nv, .d = d, .k = k, .stages = stages, .n_ct = n_ct, .vt_start = vt,
                           .idx = idx + nv, .idx_stage = (size_t)total_rows * nv, .sig = with_sig ? sig : NULL,
                           .H = H, .ldh = ldh}; // rows 1.. of a taller matrix, as a row tile
    const size_t m = gq_vq_gram_m(&g);
    double *G1 = malloc(sizeof(double) * m * m), *G2 = malloc(sizeof(double) * m * m);
    CHECK_OK(cpu->vq_gram(&g, G1));
    CHECK_OK(cu->vq_gram(&g, G2));
    double dif = maxdiff(G1, G2, m * m), tol = 1e-12 * maxabs(G1, m * m) * nvp;
    CHECKF(dif <= tol, "vq_gram d %d k %d stages %d rows %d n_ct %d: max |diff| %.3g (tol %.3g)", d, k, stages, rows,
           n_ct, dif, tol);
    free(idx), free(sig), free(H), free(G1), free(G2);
}

// Operands inside held buffers give the products they give without.
static void check_hold(const struct gq_backend *cpu, const struct gq_backend *cu) {
    const int m = 70, n = 90, k = 33, ldu = 130;
    double *U = rand_d((size_t)k * ldu + 40), *E = rand_d((size_t)m * k), *W0 = rand_d((size_t)m * n);
    double *W1 = malloc(sizeof(double) * m * n), *W2 = malloc(sizeof(double) * m * n);
    memcpy(W1, W0, sizeof(double) * m * n), memcpy(W2, W0, sizeof(double) * m * n);
    // B: a sub-block of the held U (as the lazy feedback reads it); C: held writable
    CHECK_OK(cpu->dgemm(false, false, m, n, k, -1.0, E, k, U + 17, ldu, 1.0, W1, n));
    CHECK_OK(cu->hold(U, sizeof(double) * ((size_t)k * ldu + 40), false));
    CHECK_OK(cu->hold(W2, sizeof(double) * m * n, true));
    CHECK_OK(cu->dgemm(false, false, m, n, k, -1.0, E, k, U + 17, ldu, 1.0, W2, n));
    CHECK_OK(cu->dgemm(false, false, m, n, k, 0.0, E, k, U + 17, ldu, 1.0, W2, n)); // alpha 0: W2 unchanged
    CHECKF(cu->dgemm(false, false, 2, 2, 2, 1.0, E, k, E, k, 0.0, U, ldu) != GQ_OK, "a read-only hold was written");
    CHECK_OK(cu->release(W2));
    CHECK_OK(cu->release(U));
    CHECKF(cu->release(U) != GQ_OK, "released twice");
    double dif = maxdiff(W1, W2, (size_t)m * n), tol = 1e-12 * maxabs(E, (size_t)m * k) * maxabs(U, (size_t)k * ldu) * k +
                                                    1e-12 * maxabs(W0, (size_t)m * n);
    CHECKF(dif <= tol, "held dgemm: max |diff| %.3g (tol %.3g)", dif, tol);
    free(U), free(E), free(W0), free(W1), free(W2);
}

// GPTQ W3 g32 and GPTVQ 2D on one random layer, on each device.
static void check_end_to_end(void) {
    const int rows = 96, cols = 256, tokens = 1024;
    float *X = rand_activations(tokens, cols, -1), *H = hessian_of(X, tokens, cols), *W = rand_matrix(rows, cols, 0.05);
    float *Q = malloc(sizeof(float) * rows * cols);
    double e_gptq[2], e_vq[2];
    for (int dev = 0; dev < 2; dev++) {
        CHECK_OK(gq_set_device(dev ? "cuda" : "cpu"));
        struct gq_quant_params qp;
        gq_quant_params_default(&qp);
        qp.wbits = 3, qp.group_size = 32;
        struct gq_gptq_result gr = {0};
        memcpy(Q, W, sizeof(float) * rows * cols);
        CHECK_OK(gq_gptq_quantize(Q, rows, cols, H, &qp, &gr));
        e_gptq[dev] = gr.rel_error;
        struct gq_gptvq_params vp;
        memset(&vp, 0, sizeof vp);
        vp.dim = 2, vp.em_iters = 30, vp.em_init = GQ_VQ_INIT_MAHALANOBIS, vp.cb_update = GQ_CB_UPDATE_EXACT;
        vp.gd_iters = 10, vp.cb_format = GQ_CB_INT8, vp.stages = 1;
        struct gq_vq_config cfg = {.d = 2, .k = 16, .l = 4096};
        struct gq_vq_result vr;
        memcpy(Q, W, sizeof(float) * rows * cols);
        CHECK_OK(gq_gptvq_quantize(Q, rows, cols, H, &qp, &vp, &cfg, 7, NULL, &vr));
        e_vq[dev] = vr.rel_error;
    }
    CHECK_OK(gq_set_device("cpu"));
    fprintf(stderr, "end to end: GPTQ rel error cpu %.9g cuda %.9g; GPTVQ 2D cpu %.9g cuda %.9g\n", e_gptq[0],
            e_gptq[1], e_vq[0], e_vq[1]);
    CHECKF(fabs(e_gptq[0] - e_gptq[1]) <= 1e-6 * e_gptq[0], "GPTQ cpu %.9g vs cuda %.9g", e_gptq[0], e_gptq[1]);
    CHECKF(fabs(e_vq[0] - e_vq[1]) <= 0.02 * e_vq[0], "GPTVQ cpu %.9g vs cuda %.9g", e_vq[0], e_vq[1]);
    free(X), free(H), free(W), free(Q);
}

// max over rows of |y − W x| / (1e-5 · Σ|w x|), the product in double.
static double gemv_off(const struct gq_qweight *w, const float *W, const float *x, const float *y) {
    double worst = 0;
    for (int r = 0; r < w->rows; r++) {
        double ref = 0, mag = 0;
        for (int c = 0; c < w->cols; c++) {
            double p = (double)W[(size_t)r * w->cols + c] * x[c];
            ref += p, mag += fabs(p);
        }
        worst = fmax(worst, fabs(y[r] - ref) / (1e-5 * mag + 1e-30));
    }
    return worst;
}

// One GEMV on the device (both VQ kernels) against the double-precision
// product of W (the decoded matrix) with a random x, then the prefill path.
static void check_gemv_one(const char *what, const struct gq_qweight *w, const float *W) {
    struct gqcu_mat *m = NULL;
    CHECK_OK(gq_cuda_mat_new(w, &m));
    if (!m) return;
    float *x = malloc(sizeof(float) * w->cols), *y = malloc(sizeof(float) * w->rows);
    for (int i = 0; i < w->cols; i++) x[i] = (float)rng_normal();
    CHECK_OK(gq_cuda_mat_gemv(m, x, y));
    double worst = gemv_off(w, W, x, y);
    CHECKF(worst <= 1, "%s: GPU GEMV off by %.3g of the bound", what, worst);
    if (w->kind == GQ_QW_VQ) { // the shared-memory kernel (these codebooks fit)
        CHECK_OK(gq_cuda_mat_set_variant(m, 1));
        CHECK_OK(gq_cuda_mat_gemv(m, x, y));
        worst = gemv_off(w, W, x, y);
        CHECKF(worst <= 1, "%s: GPU GEMV (shared-memory codebooks) off by %.3g of the bound", what, worst);
        CHECK_OK(gq_cuda_mat_set_variant(m, 0));
    }
    // prefill path: tiles of 7 rows (several tiles, a partial last one)
    const int n = 5;
    float *X = malloc(sizeof(float) * n * w->cols), *Y = malloc(sizeof(float) * n * w->rows);
    for (size_t i = 0; i < (size_t)n * w->cols; i++) X[i] = (float)rng_normal();
    CHECK_OK(gq_cuda_mat_gemm(m, n, X, Y, (size_t)7 * w->cols));
    worst = 0;
    for (int t = 0; t < n; t++)
        for (int r = 0; r < w->rows; r++) {
            double ref = 0, mag = 0;
            for (int c = 0; c < w->cols; c++) {
                double p = (double)W[(size_t)r * w->cols + c] * X[(size_t)t * w->cols + c];
                ref += p, mag += fabs(p);
            }
            worst = fmax(worst, fabs(Y[(size_t)t * w->rows + r] - ref) / (4e-3 * mag + 1e-30));
        }
    CHECKF(worst <= 1, "%s: GPU prefill product off by %.3g of the bound", what, worst);
    gq_cuda_mat_free(m);
    free(x), free(y), free(X), free(Y);
}

// Beyond test_vqcases.h: one row tile's codebooks over 48 KiB (7 column tiles
// x 2 stages x 1024 x 2 floats = 112 KiB: the shared-memory kernel needs the
// opt-in), 10-bit indices, outliers.
static const struct cfg gemv_extra[] = {{2, 1024, 16, 1024, 2048, GQ_CB_FP16, 0, 2, 0, 0.02, true}};

static void check_gemv(void) {
    const int n_extra = (int)(sizeof gemv_extra / sizeof *gemv_extra);
    for (int ci = 0; ci < N_CASES + n_extra; ci++) {
        const struct cfg *c = ci < N_CASES ? &vq_cases[ci] : &gemv_extra[ci - N_CASES];
        struct vq_built b;
        vq_build(c, &b);
        char what[64];
        snprintf(what, sizeof what, "vq case %d (d %d k %d)", ci, c->d, c->k);
        if (c->norm) {
            struct gqcu_mat *m = NULL;
            CHECKF(gq_cuda_mat_new(&b.w, &m) == GQ_ERR_UNSUPPORTED, "%s: normalised matrix not refused", what);
        } else
            check_gemv_one(what, &b.w, b.Q);
        vq_built_free(&b);
    }
    const struct {
        enum gq_ggml_type type;
        int rows, cols;
    } g[] = {{GQ_TYPE_Q4_0, 37, 96}, {GQ_TYPE_Q4_0, 300, 4096}, {GQ_TYPE_Q4_1, 37, 96}, {GQ_TYPE_Q4_1, 130, 1536},
             {GQ_TYPE_Q8_0, 41, 64},  {GQ_TYPE_Q8_0, 200, 2048}, {GQ_TYPE_F16, 13, 201},  {GQ_TYPE_F16, 257, 1536},
             {GQ_TYPE_F32, 19, 77}};
    for (size_t i = 0; i < sizeof g / sizeof *g; i++) {
        const int rows = g[i].rows, cols = g[i].cols;
        size_t rs = gq_ggml_row_size(g[i].type, cols);
        float *W0 = rand_matrix(rows, cols, 0.05), *W = malloc(sizeof(float) * rows * cols);
        uint8_t *data = malloc(rs * rows);
        if (g[i].type == GQ_TYPE_Q4_1) // no writer for Q4_1: random blocks (scale d, minimum m, 16 bytes)
            for (size_t b = 0; b < rs * rows; b += 20) {
                const uint16_t d = gq_f32_to_f16((float)(0.01 * (1 + rng_unif()))),
                               mn = gq_f32_to_f16((float)(-0.08 * rng_unif()));
                memcpy(data + b, &d, 2), memcpy(data + b + 2, &mn, 2);
                for (int j = 4; j < 20; j++) data[b + j] = (uint8_t)rng_u64();
            }
        else
            for (int r = 0; r < rows; r++)
                CHECK_OK(gq_quantize_row_ggml(g[i].type, W0 + (size_t)r * cols, data + r * rs, cols));
        CHECK_OK(gq_dequantize(g[i].type, data, W, (int64_t)rows * cols));
        struct gq_qweight w = {.kind = GQ_QW_GGML, .rows = rows, .cols = cols, .type = g[i].type, .data = data,
                               .row_size = rs};
        char what[64];
        snprintf(what, sizeof what, "%s %dx%d", gq_ggml_type_name(g[i].type), rows, cols);
        check_gemv_one(what, &w, W);
        free(W0), free(W), free(data);
    }
}

// ---------------------------------------------------------------------------
// Calibration passes on the device against the CPU's.

static float *read_hessian(const char *dir, int l, const char *name, int *n) {
    char path[1400];
    snprintf(path, sizeof path, "%s/blk.%d.%s.hessian", dir, l, name);
    size_t len = 0;
    unsigned char *b = test_read_file(path, &len);
    if (!b || len < 32) {
        free(b);
        return NULL;
    }
    uint32_t dim;
    memcpy(&dim, b + 8, 4);
    *n = (int)dim;
    float *H = NULL;
    if (len == 32 + (size_t)dim * dim * sizeof(float) && (H = malloc(sizeof(float) * dim * dim)))
        memcpy(H, b + 32, sizeof(float) * dim * dim);
    free(b);
    return H;
}

static void check_calibration(const char *device) {
    char src[512], calib[512], dir[] = "/tmp/gq_test_calib_XXXXXX", hd[2][600];
    snprintf(src, sizeof src, "%s/models/stories260K/stories260K.gguf", data_dir());
    snprintf(calib, sizeof calib, "%s/tinystories/tinystories_sample.txt", data_dir());
    if (!mkdtemp(dir)) {
        CHECKF(0, "no temporary folder");
        return;
    }
    double err[2] = {0, 0};
    int n_layers = 0;
    for (int dev = 0; dev < 2; dev++) {
        snprintf(hd[dev], sizeof hd[dev], "%s/%s", dir, dev ? "cuda" : "cpu");
        mkdir(hd[dev], 0755);
        struct gq_model *m = NULL;
        CHECK_OK(gq_model_load(src, NULL, &m));
        if (!m) return;
        CHECK_OK(gq_set_device(dev ? device : "cpu"));
        struct gq_quantize_params p;
        gq_quantize_params_default(&p);
        p.method = GQ_METHOD_GPTQ, p.wbits = 4, p.group_size = 32, p.calib_path = calib, p.nsamples = 4;
        p.seqlen = 64, p.progress = false, p.save_hessians = hd[dev], p.token_weights = GQ_TW_RESIDUAL;
        struct gq_quant_report rep = {0};
        CHECK_OK(gq_quantize(m, &p, &rep));
        for (int i = 0; i < rep.n; i++) err[dev] += rep.layers[i].rel_error / rep.n;
        struct gq_model_info info;
        gq_model_get_info(m, &info);
        n_layers = info.n_layers;
        gq_quant_report_free(&rep);
        gq_model_free(m);
    }
    CHECK_OK(gq_set_device("cpu"));
    static const char *names[] = {"attn_in", "attn_out", "ffn_in", "ffn_down_in"};
    int files = 0;
    for (int l = 0; l < n_layers; l++)
        for (int g = 0; g < 4; g++) {
            int n0 = 0, n1 = 0;
            float *H0 = read_hessian(hd[0], l, names[g], &n0), *H1 = read_hessian(hd[1], l, names[g], &n1);
            CHECKF(H0 && H1 && n0 == n1, "blk.%d.%s: Hessian files missing or of other sizes", l, names[g]);
            if (H0 && H1 && n0 == n1) {
                double mx = 0, dif = 0;
                for (size_t i = 0; i < (size_t)n0 * n0; i++) mx = fmax(mx, fabs(H0[i])), dif = fmax(dif, fabs(H0[i] - H1[i]));
                // block 0's attention input is the embeddings on both devices; every
                // other Hessian depends on weights quantized from the device's own
                // Hessians, where a rounding flip moves it by more than rounding
                const double tol = (l == 0 && g == 0 ? 1e-5 : 2e-2) * mx;
                CHECKF(dif <= tol, "blk.%d.%s: device Hessian off by %.3g (tol %.3g)", l, names[g], dif, tol);
                files++;
            }
            free(H0), free(H1);
        }
    fprintf(stderr, "calibration: %d Hessians compared; mean layer error cpu %.6g %s %.6g\n", files, err[0], device,
            err[1]);
    CHECKF(files == 4 * n_layers && fabs(err[0] - err[1]) <= 0.02 * err[0], "mean layer error cpu %.6g vs %s %.6g",
           err[0], device, err[1]);
    for (int dev = 0; dev < 2; dev++) {
        for (int l = 0; l < n_layers; l++)
            for (int g = 0; g < 4; g++) {
                char path[1400];
                snprintf(path, sizeof path, "%s/blk.%d.%s.hessian", hd[dev], l, names[g]);
                unlink(path);
            }
        rmdir(hd[dev]);
    }
    rmdir(dir);
}

// ---------------------------------------------------------------------------
// Decoder forward: a CUDA context (dev) against a CPU one on the same tokens.

static double max_abs(const float *a, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(a[i]));
    return m;
}

// Mean over rows t < n − 1 of −log softmax(logits_t)[tok[t + 1]].
static double mean_nll(const float *logits, const int32_t *tok, int n, int V) {
    double sum = 0;
    for (int t = 0; t + 1 < n; t++) {
        const float *l = logits + (size_t)t * V;
        double mx = l[0], z = 0;
        for (int v = 1; v < V; v++) mx = fmax(mx, l[v]);
        for (int v = 0; v < V; v++) z += exp(l[v] - mx);
        sum += mx + log(z) - l[tok[t + 1]];
    }
    return sum / (n - 1);
}

// The reference is the CPU's prefill (all logits of 48 tokens at once): its
// compressed matrices are decoded to f32 for sgemm, so it is float
// arithmetic throughout, while the CPU's one-token kernels round the
// activations to int8 for Q8_0 / Q4_x / int8-codebook VQ (qmatmul.h), as
// llama.cpp does. The device runs the 24 first tokens one at a time (GEMV
// path, float: 1e-4) and then all 48 in one prefill (TF32 GEMMs: 2e-2, NLL
// 1e-3). On the CPU itself (the harness without a GPU) the one-token path
// differs by its int8 activations (4 % of max |logit| on the packed 2D
// stories260K, 14 % on SmolLM2's Q4_1 for random tokens): 0.25 there only
// catches a broken harness.
static void check_forward(const char *what, const struct gq_model *m, const char *dev) {
    struct gq_model_info info;
    gq_model_get_info(m, &info);
    const int V = info.n_vocab, n_tok = 24, n_pre = 48;
    const double tol_tok = strcmp(dev, "cpu") ? 1e-4 : 0.25;
    int32_t tok[48];
    for (int i = 0; i < n_pre; i++) tok[i] = (int32_t)(rng_u64() % (uint64_t)V);
    struct gq_context *c[2] = {NULL, NULL};
    float *ref = malloc(sizeof(float) * n_pre * V), *l = malloc(sizeof(float) * n_pre * V);
    CHECK_OK(gq_context_new(m, n_pre, &c[0]));
    CHECK_OK(gq_context_new_device(m, n_pre, dev, &c[1]));
    if (!c[0] || !c[1]) goto out;
    fprintf(stderr, "forward %s: %d linears decoded to f32 on %s\n", what, gq_context_device_f32(c[1]), dev);
    CHECK_OK(gq_forward(c[0], tok, n_pre, ref, true));
    // token by token: the GEMV path
    double worst = 0;
    for (int i = 0; i < n_tok; i++) {
        CHECK_OK(gq_forward(c[1], &tok[i], 1, l, false));
        const float *r = ref + (size_t)i * V;
        worst = fmax(worst, max_abs_diff(r, l, (size_t)V) / max_abs(r, (size_t)V));
    }
    fprintf(stderr, "forward %s: token by token max |dlogit| / max |logit| = %.3g\n", what, worst);
    CHECKF(worst <= tol_tok, "%s: token-by-token logits off by %.3g of max |logit| (tol %.3g)", what, worst, tol_tok);
    // prefill: the decode-to-tile GEMM path
    gq_context_reset(c[1]);
    CHECK_OK(gq_forward(c[1], tok, n_pre, l, true));
    worst = max_abs_diff(ref, l, (size_t)n_pre * V) / max_abs(ref, (size_t)n_pre * V);
    double nll0 = mean_nll(ref, tok, n_pre, V), nll1 = mean_nll(l, tok, n_pre, V);
    fprintf(stderr, "forward %s: prefill max |dlogit| / max |logit| = %.3g, NLL %.6f vs %.6f\n", what, worst, nll0,
            nll1);
    CHECKF(worst <= 2e-2, "%s: prefill logits off by %.3g of max |logit|", what, worst);
    CHECKF(fabs(nll0 - nll1) <= 1e-3 * nll0, "%s: prefill NLL %.6f vs %.6f", what, nll0, nll1);
    if (strcmp(dev, "cpu")) { // the same prefill with FP32 GEMMs: only the summation order differs
        struct gq_context *c32 = NULL;
        setenv("GPTVQ_CUDA_TF32", "0", 1);
        CHECK_OK(gq_context_new_device(m, n_pre, dev, &c32));
        unsetenv("GPTVQ_CUDA_TF32");
        if (c32) {
            CHECK_OK(gq_forward(c32, tok, n_pre, l, true));
            worst = max_abs_diff(ref, l, (size_t)n_pre * V) / max_abs(ref, (size_t)n_pre * V);
            nll1 = mean_nll(l, tok, n_pre, V);
            fprintf(stderr, "forward %s: FP32 prefill max |dlogit| / max |logit| = %.3g, NLL %.6f\n", what, worst, nll1);
            CHECKF(worst <= 1e-3, "%s: FP32 prefill logits off by %.3g of max |logit|", what, worst);
            CHECKF(fabs(nll0 - nll1) <= 1e-4 * nll0, "%s: FP32 prefill NLL %.6f vs %.6f", what, nll0, nll1);
        }
        gq_context_free(c32);
    }
out:
    gq_context_free(c[0]), gq_context_free(c[1]);
    free(ref), free(l);
}

// stories260K as f32, packed GPTVQ 2D 2.125 bpv and F16 (written to a
// temporary folder and loaded compressed), SmolLM2-135M's file if present.
static void check_models(const char *dev) {
    char src[512], calib[512], dir[] = "/tmp/gq_test_backend_XXXXXX", vq[600], f16[600];
    snprintf(src, sizeof src, "%s/models/stories260K/stories260K.gguf", data_dir());
    snprintf(calib, sizeof calib, "%s/tinystories/tinystories_sample.txt", data_dir());
    if (!file_exists(src) || !mkdtemp(dir)) {
        CHECKF(0, "%s missing or no temporary folder", src);
        return;
    }
    snprintf(vq, sizeof vq, "%s/vq.gguf", dir);
    snprintf(f16, sizeof f16, "%s/f16.gguf", dir);
    struct gq_model *m = NULL, *q = NULL;
    struct gq_load_params keep = {.keep_quantized = true};
    CHECK_OK(gq_model_load(src, NULL, &m));
    if (!m) return;
    check_forward("stories260K f32", m, dev);
    CHECK_OK(gq_model_export_gguf(m, f16, GQ_EXPORT_F16));
    struct gq_quantize_params p;
    gq_quantize_params_default(&p);
    p.method = GQ_METHOD_GPTVQ, p.calib_path = calib, p.nsamples = 4, p.seqlen = 64, p.progress = false;
    p.vq.dim = 2, p.vq.bpv = 2.125;
    struct gq_quant_report rep = {0};
    CHECK_OK(gq_quantize(m, &p, &rep));
    CHECK_OK(gq_model_save_gguf(m, vq, &p, &rep));
    gq_quant_report_free(&rep);
    gq_model_free(m);
    const char *files[] = {vq, f16, "models/SmolLM2-135M-Instruct.Q4_1.gguf"};
    const char *names[] = {"stories260K GPTVQ 2D 2.125", "stories260K F16", "SmolLM2-135M Q4_1/Q8_0"};
    for (int i = 0; i < 3; i++) {
        if (i == 2 && !file_exists(files[i])) {
            fprintf(stderr, "(%s absent: SmolLM2 forward not checked)\n", files[i]);
            continue;
        }
        q = NULL;
        CHECK_OK(gq_model_load(files[i], &keep, &q));
        if (q) check_forward(names[i], q, dev);
        gq_model_free(q);
    }
    unlink(vq), unlink(f16), rmdir(dir);
}

int main(void) {
    const char *self = getenv("TEST_BACKEND_DEVICE");
    if (self && !strcmp(self, "cpu")) { // the model checks' harness, CPU against CPU
        check_calibration("cpu");
        check_models("cpu");
        return test_done("test_backend (TEST_BACKEND_DEVICE=cpu)");
    }
    const char *why = NULL;
    const struct gq_backend *cpu = gq_backend_cpu(), *cu = gq_backend_cuda(&why);
    if (!cu) { // the model harness still runs, CPU against CPU
        check_em_all(cpu, cpu);
        check_calibration("cpu");
        check_models("cpu");
        if (gqt_failures) return test_done("test_backend (model harness, CPU against CPU)");
        SKIP("no CUDA backend: %s (the model harness passed CPU against CPU)", why);
    }
    fprintf(stderr, "device: %s\n", gq_cuda_device_name());
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            check_gemm(cpu, cu, ta, tb, 37, 53, 29, 1.0);
            check_gemm(cpu, cu, ta, tb, 300, 517, 128, 0.0);
        }
    check_symm_syrk(cpu, cu, 45, 77, 33);
    check_symm_syrk(cpu, cu, 512, 384, 700);
    check_chol(cpu, cu, 5);
    check_chol(cpu, cu, 300);
    static const int dk[][2] = {{1, 8}, {2, 16}, {2, 256}, {4, 256}, {8, 64}};
    for (size_t c = 0; c < sizeof dk / sizeof dk[0]; c++)
        for (int diag = 0; diag < 2; diag++) check_vq(cpu, cu, dk[c][0], dk[c][1], 7, 1000, diag, diag == 0);
    check_vq(cpu, cu, 2, 16, 1, 3, true, false); // fewer points than a thread block
    check_em_all(cpu, cu); // the group over the batch limit: its rounds on each table's own primitives
    check_dposv(cpu, cu, 5, true);
    check_dposv(cpu, cu, 300, true);
    check_dposv(cpu, cu, 40, false);
    check_gram(cpu, cu, 2, 16, 1, 32, 9, 32, false); // SmolLM2 2D 2.125: k 16, 32-row tiles
    check_gram(cpu, cu, 2, 16, 2, 9, 4, 20, true);   // residual VQ, normalisation scales
    check_gram(cpu, cu, 1, 8, 1, 5, 3, 70, true);
    check_gram(cpu, cu, 4, 64, 1, 6, 2, 16, false);  // k·d = 256: 16 × 16 chunks
    check_gram(cpu, cu, 2, 300, 1, 4, 2, 10, false); // beyond the kernel: the CPU reference
    check_hold(cpu, cu);
    check_end_to_end();
    check_calibration("cuda");
    check_gemv();
    check_models("cuda");
    return test_done("test_backend");
}
