// synth.h - the synthetic data of the benchmarks (bench_gptvq_layer,
// make_synth_model): Gaussian draws and activation-like rows, correlated and
// heavy-tailed as real LLM activations are:
//   x = (z·B + 0.1·noise) ⊙ s,  z (r) Gaussian, B (r, cols) Gaussian/√r
//   (low rank: neighbouring channels strongly correlated), s_j = exp(g_j) with
//   g_j Gaussian (log-normal channel scales), ~0.5 % of the channels ×20.
// Include after gptvq.h and util/common.h.
#ifndef GQ_BENCH_SYNTH_H
#define GQ_BENCH_SYNTH_H

#include <cblas.h>
#include <math.h>

// Standard normal by Box-Muller (one value per call; the cosine half is
// dropped to keep the state a single splitmix64 counter).
static double synth_gauss(uint64_t *s) {
    double u1 = gq_rng_uniform(s), u2 = gq_rng_uniform(s);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * sin(2.0 * M_PI * u2);
}

// B (r, cols) and the channel scales (cols) drawn from s; returns how many
// channels are outliers.
static int synth_factors(int r, int cols, uint64_t *s, float *B, float *scale) {
    for (size_t i = 0; i < (size_t)r * cols; i++) B[i] = (float)(synth_gauss(s) / sqrt((double)r));
    int n_outlier = 0;
    for (int j = 0; j < cols; j++) {
        scale[j] = (float)exp(1.0 * synth_gauss(s));
        if (gq_rng_uniform(s) < 0.005) scale[j] *= 20.0f, n_outlier++;
    }
    return n_outlier;
}

// nt rows X (nt, cols) from the factors, z and the noise drawn from s; Z is
// (nt, r) scratch.
static void synth_rows(int nt, int r, int cols, const float *B, const float *scale, uint64_t *s, float *Z, float *X) {
    for (size_t i = 0; i < (size_t)nt * r; i++) Z[i] = (float)synth_gauss(s);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nt, cols, r, 1.0f, Z, r, B, cols, 0.0f, X, cols);
    for (int t = 0; t < nt; t++)
        for (int j = 0; j < cols; j++) {
            float *x = &X[(size_t)t * cols + j];
            *x = (*x + 0.1f * (float)synth_gauss(s)) * scale[j];
        }
}

#endif
