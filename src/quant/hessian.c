// hessian.c - H = 2/N · Σ x xᵀ over calibration tokens, and the layer objective.
//
// Why double: a calibration set is ~128 × 2048 = 262k tokens and each H entry
// sums that many products. In float32 the running sum reaches ~10^5 times the
// size of each addend, so every addition drops ~17 of the addend's 24 bits and
// the result keeps only 3-4 correct digits; GPTQ's Cholesky of a nearly
// singular H then amplifies that. In double the same sum keeps ~11 digits.
// GPTQ rescales H by n/(n+k) on every batch so that it always holds the mean;
// we keep the plain sum and apply 2/N once at the end, which is the same
// value without a rounding per batch.
//
// Why an exact total: with the plain running sum in double, the result
// depends on the order of the additions, so a run whose calibration windows
// are split between processes (mpirun) would not give the bits of a
// one-process run. The sum of each unit of calibration windows (the caller's
// gq_hessian_fold marks the units; the engine's are GQ_HESSIAN_UNIT_TOKENS
// long) is therefore rounded once to a fixed-point grid of 2^-64 and added
// as integers, which is exact and order-free; the 2^-64 rounding is far below
// the float that H ends in. A value v is kept as three int64 limbs
// v ≈ L2 + L1·2^-32 + L0·2^-64 with |L1|, |L0| < 2^32 per addition, so the
// limbs never carry between additions (2^31 of them at most) and the ranks'
// totals are summed limb by limb.
#include "backend/backend.h"
#include "model/model.h"
#include "quant/quant.h"
#include "util/hadamard.h"
#include "util/common.h"
#include "util/dist.h"
#include <cblas.h>
#include <lapacke.h>

// Entries in the upper triangle; (i, j ≥ i) is at tri_off(i, n) + j − i.
static size_t tri_size(int n) { return (size_t)n * (n + 1) / 2; }
static size_t tri_off(int i, int n) { return (size_t)i * n - (size_t)i * (i - 1) / 2; }

enum gq_status gq_hessian_init(struct gq_hessian *H, int n) {
    memset(H, 0, sizeof *H);
    size_t nn;
    if (n <= 0 || !gq_mul_ok((size_t)n, (size_t)n, &nn) || nn > ((size_t)1 << 32))
        return gq_fail(GQ_ERR_ARG, "hessian: dimension %d, expected 1..65536", n);
    H->h = malloc(nn * sizeof(double));
    H->acc = calloc(3 * tri_size(n), sizeof(int64_t));
    H->scratch = malloc(sizeof(double) * (size_t)GQ_HESSIAN_CHUNK * n);
    if (!H->h || !H->acc || !H->scratch) {
        gq_hessian_free(H);
        return gq_fail(GQ_ERR_NOMEM, "hessian: %d x %d doubles and their exact sum", n, n);
    }
    H->n = n;
    return GQ_OK;
}

// One row's entries [0, len) of h into the limbs, exactly: a = |v| is split
// as h + (m + l·2^-32)·2^-32, every step exact, with signed truncations only
// (no floor, no unsigned conversion). *hmax = the largest h; returns how many
// entries are beyond 2^52 or NaN (left out: the fold is refused).
static int64_t fold_row(const double *v, int len, int64_t *restrict L2, int64_t *restrict L1, int64_t *restrict L0,
                        int64_t *hmax) {
    int64_t bad = 0, top = 0;
    for (int j = 0; j < len; j++) {
        const double a = fabs(v[j]);
        const bool ok = a < 0x1p52;
        const double c = ok ? a : 0;
        const int64_t h = (int64_t)c;
        const double f = (c - (double)h) * 0x1p32; // exact, in [0, 2^32)
        const int64_t m = (int64_t)f, l = (int64_t)((f - (double)m) * 0x1p32);
        const int64_t s = v[j] < 0 ? -1 : 1;
        L2[j] += s * h, L1[j] += s * m, L0[j] += s * l;
        bad += !ok;
        top = h > top ? h : top;
    }
    *hmax = top;
    return bad;
}

// acc += the upper triangle of h (see the top of the file). The limbs cannot
// wrap: each addition's |value| < 2^52 and H->bound, the sum of the
// additions' largest |value|, stays below 2^62.
static enum gq_status fold(struct gq_hessian *H) {
    const int n = H->n;
    const size_t T = tri_size(n);
    int64_t *L2 = H->acc, *L1 = H->acc + T, *L0 = H->acc + 2 * T;
    if (H->n_adds >= INT32_MAX) return gq_fail(GQ_ERR_ARG, "hessian: more than 2^31 additions");
    int64_t top = 0, bad = 0;
#pragma omp parallel for schedule(static, 16) reduction(max : top) reduction(+ : bad)
    for (int i = 0; i < n; i++) {
        const size_t o = tri_off(i, n);
        int64_t t;
        bad += fold_row(H->h + (size_t)i * n + i, n - i, L2 + o, L1 + o, L0 + o, &t);
        top = t > top ? t : top;
    }
    const double amax = (double)top + 1; // > every |entry|
    if (bad || !(H->bound + amax < 0x1p62))
        return gq_fail(GQ_ERR_NUMERIC, "hessian: %s is beyond the exact accumulator (2^52 per window, 2^62 in all)",
                       bad ? "a sum of x xT (or NaN)" : "the total");
    H->bound += amax;
    H->n_adds++;
    return GQ_OK;
}

enum gq_status gq_hessian_add(struct gq_hessian *H, const float *X, int n_tokens, int dim) {
    if (!H->h) return gq_fail(GQ_ERR_ARG, "hessian: not initialised");
    if (dim != H->n) return gq_fail(GQ_ERR_ARG, "hessian: input dimension %d, expected %d", dim, H->n);
    if (n_tokens < 0) return gq_fail(GQ_ERR_ARG, "hessian: %d tokens", n_tokens);
    if (n_tokens == 0) return GQ_OK;
    int n = H->n;
    if (!H->pending) // a new unit: its sum starts at 0 (upper triangle)
        for (int i = 0; i < n; i++) memset(H->h + (size_t)i * n + i, 0, sizeof(double) * (size_t)(n - i));
    // h stays on the device while the chunks are added (a no-op on the CPU)
    GQ_TRY(gq_be()->hold(H->h, sizeof(double) * (size_t)n * n, true));
    enum gq_status st = GQ_OK;
    for (int t0 = 0; t0 < n_tokens && st == GQ_OK; t0 += GQ_HESSIAN_CHUNK) {
        int k = n_tokens - t0 < GQ_HESSIAN_CHUNK ? n_tokens - t0 : GQ_HESSIAN_CHUNK;
        const float *x = X + (size_t)t0 * n;
        for (size_t i = 0; i < (size_t)k * n && st == GQ_OK; i++) {
            if (!isfinite(x[i]))
                st = gq_fail(GQ_ERR_NUMERIC, "hessian: non-finite input at token %zu dim %zu", t0 + i / (size_t)n,
                             i % (size_t)n);
            H->scratch[i] = x[i];
        }
        // Upper triangle of h += Xcᵀ Xc (Xc: (k, n) row-major).
        if (st == GQ_OK) st = gq_be()->dsyrk_acc(n, k, H->scratch, H->h);
    }
    enum gq_status rs = gq_be()->release(H->h);
    if (st != GQ_OK) return st;
    GQ_TRY(rs);
    H->pending = true;
    H->n_samples += n_tokens;
    return GQ_OK;
}

enum gq_status gq_hessian_fold(struct gq_hessian *H) {
    if (!H->h) return gq_fail(GQ_ERR_ARG, "hessian: not initialised");
    if (!H->pending) return GQ_OK;
    GQ_TRY(fold(H));
    H->pending = false;
    return GQ_OK;
}

enum gq_status gq_hessian_add_sum(struct gq_hessian *H, const double *S, int64_t n_tokens) {
    if (!H->h) return gq_fail(GQ_ERR_ARG, "hessian: not initialised");
    GQ_TRY(gq_hessian_fold(H));
    const int n = H->n;
    for (int i = 0; i < n; i++) memcpy(H->h + (size_t)i * n + i, S + (size_t)i * n + i, sizeof(double) * (size_t)(n - i));
    H->pending = true;
    H->n_samples += n_tokens;
    return gq_hessian_fold(H);
}

enum gq_status gq_hessian_allreduce(struct gq_hessian *H) {
    GQ_TRY(gq_hessian_fold(H));
    if (gq_dist_size() == 1) return GQ_OK;
    int64_t cnt[3] = {H->n_samples, H->n_adds, (int64_t)ceil(H->bound)};
    GQ_TRY(gq_dist_sum_i64(cnt, 3));
    if (cnt[1] >= INT32_MAX || !((double)cnt[2] < 0x1p62))
        return gq_fail(GQ_ERR_NUMERIC, "hessian: the ranks' sum is beyond the exact accumulator (2^31 additions, 2^62)");
    H->n_samples = cnt[0], H->n_adds = cnt[1], H->bound = (double)cnt[2];
    return gq_dist_sum_i64(H->acc, 3 * tri_size(H->n));
}

uint64_t gq_hessian_digest(const struct gq_hessian *H) {
    uint64_t h = 0xcbf29ce484222325ull; // FNV-1a over 64-bit words
    for (size_t i = 0; H->acc && i < 3 * tri_size(H->n); i++) h = (h ^ (uint64_t)H->acc[i]) * 0x100000001b3ull;
    return h;
}

void gq_hessian_finish_sum(const double *h, int n, int64_t n_samples, float *out) {
    double s = n_samples > 0 ? 2.0 / (double)n_samples : 0.0;
    for (int i = 0; i < n; i++)
        for (int j = i; j < n; j++) {
            float v = (float)(s * h[(size_t)i * n + j]);
            out[(size_t)i * n + j] = out[(size_t)j * n + i] = v;
        }
}

enum gq_status gq_hessian_finish(struct gq_hessian *H, float *out) {
    GQ_TRY(gq_hessian_fold(H));
    const int n = H->n;
    const size_t T = tri_size(n);
    const int64_t *L2 = H->acc, *L1 = H->acc + T, *L0 = H->acc + 2 * T;
    for (int i = 0; i < n; i++) {
        const size_t o = tri_off(i, n) - i;
        for (int j = i; j < n; j++) {
            __int128 v = (__int128)L2[o + j] * ((__int128)1 << 64) + (__int128)L1[o + j] * ((__int128)1 << 32) + L0[o + j];
            if (j == i && v < 0) // a sum of squares: negative only if the ranks' total wrapped
                return gq_fail(GQ_ERR_NUMERIC, "hessian: the total of diagonal entry %d overflowed", i);
            H->h[(size_t)i * n + j] = (double)v * 0x1p-64; // correctly rounded, then an exact scaling
        }
    }
    gq_hessian_finish_sum(H->h, n, H->n_samples, out);
    return GQ_OK;
}

void gq_hessian_free(struct gq_hessian *H) {
    free(H->h);
    free(H->acc);
    free(H->scratch);
    memset(H, 0, sizeof *H);
}

// tr(A H Aᵀ) for A (rows, cols) double, Hd (cols, cols) double; T is scratch.
static double trace_quad(const double *A, const double *Hd, double *T, int rows, int cols) {
    if (gq_be()->dgemm(false, false, rows, cols, cols, 1.0, A, cols, Hd, cols, 0.0, T, cols) != GQ_OK) return NAN;
    double s = 0;
    for (size_t i = 0; i < (size_t)rows * cols; i++) s += A[i] * T[i];
    return s;
}

enum gq_status gq_layer_objective(const float *W, const float *Q, int rows, int cols,
                                  const float *H, double *obj, double *ref) {
    size_t nw, nh;
    if (rows <= 0 || cols <= 0 || !gq_mul_ok((size_t)rows, (size_t)cols, &nw) ||
        !gq_mul_ok((size_t)cols, (size_t)cols, &nh))
        return gq_fail(GQ_ERR_ARG, "objective: bad shape (%d, %d)", rows, cols);
    double *Hd = malloc(sizeof(double) * nh), *A = malloc(sizeof(double) * nw),
           *T = malloc(sizeof(double) * nw);
    if (!Hd || !A || !T) {
        free(Hd), free(A), free(T);
        return gq_fail(GQ_ERR_NOMEM, "objective: (%d, %d) scratch", rows, cols);
    }
    for (size_t i = 0; i < nh; i++) Hd[i] = H[i];
    if (obj) {
        for (size_t i = 0; i < nw; i++) A[i] = (double)W[i] - (double)Q[i];
        *obj = trace_quad(A, Hd, T, rows, cols);
    }
    if (ref) {
        for (size_t i = 0; i < nw; i++) A[i] = W[i];
        *ref = trace_quad(A, Hd, T, rows, cols);
    }
    free(Hd), free(A), free(T);
    return GQ_OK;
}

// ---------------------------------------------------------------------------
// Hessian artefacts. File DIR/blk.<layer>.<input>.hessian, little-endian:
//   char magic[8] = "GQHESS01"; u32 n; u32 layer; u32 input (gq_block_input);
//   u32 reserved = 0; u64 n_samples (calibration tokens);
//   f32 H[n][n] (H = 2/N Σ w_t x_t x_tᵀ as GPTQ used it: w_t = 1 except each
//   window's first token (--sink-weight) and --token-weights; full symmetric)

static const char *const input_names[GQ_IN_COUNT] = {"attn_in", "attn_out", "ffn_in", "ffn_down_in"};
#define HESS_MAGIC "GQHESS01"
#define HESS_HEADER 32

static void hessian_path(char *buf, size_t cap, const char *dir, int l, int g) {
    snprintf(buf, cap, "%s/blk.%d.%s.hessian", dir, l, input_names[g]);
}

enum gq_status gq_hessian_save(const char *dir, int l, int g, const float *H, int n, int64_t n_samples) {
    char path[4096], tmp[4200];
    hessian_path(path, sizeof path, dir, l, g);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    unsigned char hdr[HESS_HEADER] = {0};
    uint32_t u[4] = {(uint32_t)n, (uint32_t)l, (uint32_t)g, 0};
    uint64_t ns = (uint64_t)n_samples;
    memcpy(hdr, HESS_MAGIC, 8);
    memcpy(hdr + 8, u, 16);
    memcpy(hdr + 24, &ns, 8);
    FILE *f = fopen(tmp, "wb");
    if (!f) return gq_fail(GQ_ERR_IO, "%s: cannot write", tmp);
    bool ok = fwrite(hdr, 1, sizeof hdr, f) == sizeof hdr && fwrite(H, sizeof *H, (size_t)n * n, f) == (size_t)n * n;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        remove(tmp);
        return gq_fail(GQ_ERR_IO, "%s: write failed", path);
    }
    return GQ_OK;
}

enum gq_status gq_hessian_load(const char *dir, int l, int g, float *H, int n, int64_t *n_samples) {
    char path[4096];
    hessian_path(path, sizeof path, dir, l, g);
    struct gq_mapped_file f;
    GQ_TRY(gq_map_file(path, &f));
    enum gq_status s = GQ_OK;
    uint32_t u[4];
    uint64_t ns = 0;
    size_t want = HESS_HEADER + (size_t)n * n * sizeof(float);
    if (f.size < HESS_HEADER || memcmp(f.data, HESS_MAGIC, 8) != 0) {
        s = gq_fail(GQ_ERR_FORMAT, "%s: not a gptvq Hessian file (magic)", path);
    } else {
        memcpy(u, f.data + 8, 16);
        memcpy(&ns, f.data + 24, 8);
        if (u[0] != (uint32_t)n || u[1] != (uint32_t)l || u[2] != (uint32_t)g)
            s = gq_fail(GQ_ERR_FORMAT, "%s: holds a %u x %u Hessian of block %u input %u, expected %d x %d of block %d input %d",
                        path, u[0], u[0], u[1], u[2], n, n, l, g);
        else if (f.size != want)
            s = gq_fail(GQ_ERR_FORMAT, "%s: %zu bytes, expected %zu", path, f.size, want);
    }
    if (s == GQ_OK) {
        memcpy(H, f.data + HESS_HEADER, (size_t)n * n * sizeof(float));
        *n_samples = (int64_t)ns;
        s = gq_check_finite(H, (size_t)n * n, path, "H");
    }
    gq_unmap_file(&f);
    return s;
}

// A = W + W (Ĉ − H)(H + λI)⁻¹: the ridge solution of min_A Σ_t ‖A x_t − W x̂_t‖²
// + λ‖A − W‖² (gradient A H − W Ĉ + λ(A − W) = 0), solved as (H + λI) Aᵀ =
// (Ĉ + λI)ᵀ Wᵀ by one Cholesky factorisation in double. H and Ĉ carry the
// same 2/N scale, so the sums may be given as finished matrices.
enum gq_status gq_fp_target(float *W, int rows, int n, const float *H, const double *C, double damp) {
    double *M = malloc(sizeof(double) * (size_t)n * n), *B = malloc(sizeof(double) * (size_t)rows * n);
    double *Ct = malloc(sizeof(double) * (size_t)n * n), *Wd = calloc((size_t)rows * n, sizeof(double));
    enum gq_status s = GQ_OK;
    if (!M || !B || !Ct || !Wd) {
        s = gq_fail(GQ_ERR_NOMEM, "fp target: %d x %d doubles", n, n);
        goto out;
    }
    double mean = 0;
    for (int i = 0; i < n; i++) mean += H[(size_t)i * n + i];
    mean /= n;
    const double lambda = damp * (mean > 0 ? mean : 1);
    for (size_t i = 0; i < (size_t)n * n; i++) M[i] = H[i], Ct[i] = C[i];
    for (int i = 0; i < n; i++) M[(size_t)i * n + i] += lambda, Ct[(size_t)i * n + i] += lambda;
    for (size_t i = 0; i < (size_t)rows * n; i++) Wd[i] = W[i];
    // B (rows, n) = W (Ĉ + λI), row-major: column-major that is the (n, rows) right-hand side
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, n, n, 1.0, Wd, n, Ct, n, 0.0, B, n);
    lapack_int info = LAPACKE_dposv(LAPACK_COL_MAJOR, 'U', n, rows, M, n, B, n);
    if (info != 0) {
        s = gq_fail(GQ_ERR_NUMERIC, "fp target: the damped Hessian is not positive definite (potrf %d)", (int)info);
        goto out;
    }
    for (size_t i = 0; i < (size_t)rows * n; i++)
        if (!isfinite(B[i])) {
            s = gq_fail(GQ_ERR_NUMERIC, "fp target: non-finite solution");
            goto out;
        }
    for (size_t i = 0; i < (size_t)rows * n; i++) W[i] = (float)B[i];
out:
    free(M), free(B), free(Ct), free(Wd);
    return s;
}

float *gq_rot_hessian(const float *H, const struct gq_rot *R) {
    const int n = R->n;
    float *A = malloc(sizeof(float) * (size_t)n * n), *B = malloc(sizeof(float) * (size_t)n * n);
    if (!A || !B) return free(A), free(B), NULL;
    memcpy(A, H, sizeof(float) * (size_t)n * n);
    for (int pass = 0; pass < 2; pass++) { // rows of H rotated: H Rᵀ; transposed (R H), rows again: R H Rᵀ
#pragma omp parallel for schedule(static)
        for (int i = 0; i < n; i++) gq_rot_apply(R, A + (size_t)i * n);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) B[(size_t)j * n + i] = A[(size_t)i * n + j];
        float *t = A;
        A = B, B = t;
    }
    for (int i = 0; i < n; i++) // symmetric to the last bit
        for (int j = i + 1; j < n; j++) A[(size_t)i * n + j] = A[(size_t)j * n + i] = 0.5f * (A[(size_t)i * n + j] + A[(size_t)j * n + i]);
    free(B);
    return A;
}
