// test_rand.h - seeded random matrices and realistic Hessians for the
// quantization tests (include after test.h).
#ifndef GQ_TEST_RAND_H
#define GQ_TEST_RAND_H
#include "quant/quant.h"
#include <stdint.h>

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng_u64(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double rng_unif(void) { return (double)(rng_u64() >> 11) * 0x1p-53; }
static double rng_normal(void) {
    double u = rng_unif(), v = rng_unif();
    if (u < 1e-300) u = 1e-300;
    return sqrt(-2 * log(u)) * cos(2 * M_PI * v);
}

static float *rand_matrix(int rows, int cols, double sd) {
    float *m = malloc(sizeof(float) * (size_t)rows * cols);
    for (size_t i = 0; i < (size_t)rows * cols; i++) m[i] = (float)(sd * rng_normal());
    return m;
}

// Correlated activations X = Z·A (tokens, dim): random mixing A with column
// scales spread over ~2 decades, so H = XᵀX is ill-conditioned like real
// activations (a few outlier channels, strongly correlated inputs).
static float *rand_activations_spread(int tokens, int dim, int dead_col, double spread) {
    double *A = malloc(sizeof(double) * (size_t)dim * dim);
    for (int i = 0; i < dim; i++)
        for (int j = 0; j < dim; j++) A[(size_t)i * dim + j] = rng_normal() * (i == j ? 3.0 : 1.0);
    double *cs = malloc(sizeof(double) * dim);
    for (int j = 0; j < dim; j++) cs[j] = exp(spread * rng_normal());
    float *X = malloc(sizeof(float) * (size_t)tokens * dim);
    double *z = malloc(sizeof(double) * dim);
    for (int t = 0; t < tokens; t++) {
        for (int k = 0; k < dim; k++) z[k] = rng_normal();
        for (int j = 0; j < dim; j++) {
            double s = 0;
            for (int k = 0; k < dim; k++) s += z[k] * A[(size_t)k * dim + j];
            X[(size_t)t * dim + j] = j == dead_col ? 0.0f : (float)(s * cs[j] / sqrt(dim));
        }
    }
    free(A), free(cs), free(z);
    return X;
}

static float *rand_activations(int tokens, int dim, int dead_col) {
    return rand_activations_spread(tokens, dim, dead_col, 1.2);
}

static float *hessian_of(const float *X, int tokens, int dim) {
    struct gq_hessian h;
    float *H = malloc(sizeof(float) * (size_t)dim * dim);
    CHECK_OK(gq_hessian_init(&h, dim));
    CHECK_OK(gq_hessian_add(&h, X, tokens, dim));
    CHECK_OK(gq_hessian_finish(&h, H));
    gq_hessian_free(&h);
    return H;
}

#endif
