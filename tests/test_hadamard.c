// test_hadamard - the randomized Hadamard rotations of --rotate (util/hadamard.c)
// against dense double-precision references built here from the definitions.
#include "test.h"
#include "gptvq.h"
#include "quant/quant.h"
#include "util/hadamard.h"

// [1] Every order the construction claims gives H Hᵀ = m I exactly; others fail.
static void test_matrices(void) {
    const int ok[] = {1, 2, 4, 8, 16, 64, 12, 20, 24, 28, 36, 44, 48, 60, 68, 76, 84, 108, 132, 148, 164};
    for (size_t t = 0; t < sizeof ok / sizeof *ok; t++) {
        const int m = ok[t];
        int8_t *H = malloc((size_t)m * m);
        CHECK_OK(gq_hadamard_matrix(m, H));
        int bad = 0;
        for (int i = 0; i < m; i++)
            for (int j = 0; j < m; j++) {
                long s = 0;
                for (int k = 0; k < m; k++) s += H[i * m + k] * H[j * m + k];
                bad += s != (i == j ? m : 0);
                bad += H[i * m + j] != 1 && H[i * m + j] != -1;
            }
        CHECKF(bad == 0, "order %d: %d entries of H Hᵀ wrong", m, bad);
        free(H);
    }
    const int no[] = {3, 6, 10, 52, 92, 172};
    int8_t H[172 * 172];
    for (size_t t = 0; t < sizeof no / sizeof *no; t++) CHECKF(gq_hadamard_matrix(no[t], H) == GQ_ERR_ARG, "order %d", no[t]);
}

// The dense rotation in double from its definition: blocks of Had_p ⊗ Had_m
// (Had_p: (−1)^popcount(i & j); index i = i_p · m + i_m) times the signs, / √size.
static double *dense_rot(const struct gq_rot *r) {
    const int n = r->n;
    double *R = calloc((size_t)n * n, sizeof *R);
    for (int b = 0; b < r->nblk; b++) {
        const int o = r->off[b], sz = r->off[b + 1] - o, m = r->m[b];
        CHECKF(sz % m == 0 && ((sz / m) & (sz / m - 1)) == 0, "block of %d: %d chunks of %d", sz, sz / m, m);
        int8_t *Hm = malloc((size_t)m * m);
        gq_hadamard_matrix(m, Hm);
        for (int i = 0; i < sz; i++)
            for (int j = 0; j < sz; j++) {
                const int s = Hm[(i % m) * m + j % m] * (__builtin_popcount((unsigned)((i / m) & (j / m))) & 1 ? -1 : 1);
                R[(size_t)(o + i) * n + o + j] = s * r->sign[o + j] / sqrt((double)sz);
            }
        free(Hm);
    }
    return R;
}

// [2] R x and Rᵀ x against the dense product; Rᵀ R = I; the blocks.
static void test_rotations(void) {
    const struct {
        int n, nblk, m0;
    } cs[] = {{576, 1, 36}, {1536, 1, 12}, {64, 1, 16}, {96, 1, 12}, {8, 1, 8}, {172, -1, 0}, {100, -1, 0}, {7, -1, 0}, {1, 1, 1}};
    for (size_t t = 0; t < sizeof cs / sizeof *cs; t++) {
        const int n = cs[t].n;
        struct gq_rot r;
        CHECK_OK(gq_rot_init(&r, n, 42 + t));
        if (cs[t].nblk > 0) CHECKF(r.nblk == cs[t].nblk && r.m[0] == cs[t].m0, "n %d: %d blocks, m %d", n, r.nblk, r.m[0]);
        CHECK(r.off[0] == 0 && r.off[r.nblk] == n);
        int plus = 0;
        for (int i = 0; i < n; i++) plus += r.sign[i] > 0;
        if (n >= 64) CHECKF(plus > n / 4 && plus < 3 * n / 4, "n %d: %d of the signs +", n, plus);
        double *R = dense_rot(&r);
        float *x = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n), *z = malloc(sizeof(float) * n);
        double e = 0, et = 0, orth = 0;
        for (int rep = 0; rep < 3; rep++) {
            for (int i = 0; i < n; i++) x[i] = sinf(0.7f * i + rep) + (i % 13 == rep ? 5.0f : 0.0f);
            memcpy(y, x, sizeof(float) * n), memcpy(z, x, sizeof(float) * n);
            gq_rot_apply(&r, y);
            gq_rot_apply_t(&r, z);
            for (int i = 0; i < n; i++) {
                double a = 0, b = 0;
                for (int j = 0; j < n; j++) a += R[(size_t)i * n + j] * x[j], b += R[(size_t)j * n + i] * x[j];
                e = fmax(e, fabs(a - y[i])), et = fmax(et, fabs(b - z[i]));
            }
        }
        for (int i = 0; i < n && n <= 200; i++) // Rᵀ R = I (the small ones)
            for (int j = 0; j < n; j++) {
                double s = 0;
                for (int k = 0; k < n; k++) s += R[(size_t)k * n + i] * R[(size_t)k * n + j];
                orth = fmax(orth, fabs(s - (i == j)));
            }
        CHECKF(e < 2e-5 && et < 2e-5, "n %d: R x off by %g, Rᵀ x by %g", n, e, et);
        CHECKF(orth < 1e-12, "n %d: |Rᵀ R - I| = %g", n, orth);
        free(R), free(x), free(y), free(z);
        gq_rot_free(&r);
    }
    // large widths: one block where the construction has it, the inverse restores x
    const struct {
        int n, nblk, m0;
    } big[] = {{4096, 1, 16}, {14336, 1, 28}, {11008, -1, 0}, {5120, 1, 20}};
    for (size_t t = 0; t < sizeof big / sizeof *big; t++) {
        const int n = big[t].n;
        struct gq_rot r;
        CHECK_OK(gq_rot_init(&r, n, 7));
        if (big[t].nblk > 0) CHECKF(r.nblk == 1 && r.m[0] == big[t].m0, "n %d: %d blocks, m %d", n, r.nblk, r.m[0]);
        CHECK(r.off[r.nblk] == n);
        float *x = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n);
        double n0 = 0, n1 = 0, md = 0;
        for (int i = 0; i < n; i++) x[i] = cosf(0.01f * i * i), n0 += (double)x[i] * x[i];
        memcpy(y, x, sizeof(float) * n);
        gq_rot_apply(&r, y);
        for (int i = 0; i < n; i++) n1 += (double)y[i] * y[i];
        gq_rot_apply_t(&r, y);
        for (int i = 0; i < n; i++) md = fmax(md, fabs(y[i] - x[i]));
        CHECKF(fabs(n1 - n0) < 1e-4 * n0 && md < 1e-4, "n %d: norm %g -> %g, round trip %g", n, n0, n1, md);
        free(x), free(y);
        gq_rot_free(&r);
    }
}

// [3] gq_rot_hessian = R H Rᵀ (dense double product), exactly symmetric.
static void test_hessian(void) {
    const int n = 96;
    struct gq_rot r;
    CHECK_OK(gq_rot_init(&r, n, 3));
    double *R = dense_rot(&r);
    float *H = malloc(sizeof(float) * n * n);
    for (int i = 0; i < n; i++)
        for (int j = 0; j <= i; j++) H[i * n + j] = H[j * n + i] = (i == j ? 3.0f : 0.0f) + sinf(0.3f * i * j) / (1 + abs(i - j));
    float *Hr = gq_rot_hessian(H, &r);
    double e = 0;
    int asym = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int a = 0; a < n; a++)
                for (int b = 0; b < n; b++) s += R[(size_t)i * n + a] * H[a * n + b] * R[(size_t)j * n + b];
            e = fmax(e, fabs(s - Hr[i * n + j]));
            asym += Hr[i * n + j] != Hr[j * n + i];
        }
    CHECKF(e < 1e-5 && asym == 0, "R H Rᵀ off by %g, %d asymmetric", e, asym);
    free(R), free(H), free(Hr);
    gq_rot_free(&r);
}

int main(void) {
    test_matrices();
    test_rotations();
    test_hessian();
    return test_done("test_hadamard");
}
