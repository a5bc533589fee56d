// bench_runtime - prefill and decode speed of the CPU forward, each set beside
// a bound measured in the same run:
//   prefill: achieved GFLOP/s vs OpenBLAS sgemm GFLOP/s at the model's shapes;
//   decode:  tokens/s vs the bandwidth bound (copy bandwidth / weight bytes per token).
// usage: bench_runtime MODEL [--prefill N] [--decode N] [--threads N] [--reps R]
#include "gptvq.h"
#include "model/model.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double now(void) { return gq_time_s(); }

// Median-of-reps copy bandwidth in GB/s, counting bytes read + bytes written.
static double copy_bandwidth_gbs(size_t bytes, int reps) {
    char *a = malloc(bytes), *b = malloc(bytes);
    memset(a, 1, bytes);
    memset(b, 2, bytes);
    double best = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        memcpy(b, a, bytes);
        double t = now() - t0;
        double gbs = 2.0 * (double)bytes / t / 1e9;
        if (gbs > best) best = gbs;
        a[r] = b[bytes - 1 - r]; // keep the copies alive
    }
    free(a);
    free(b);
    return best;
}

// sgemm GFLOP/s for y(n, n_out) = x(n, n_in) W^T, best of reps.
static double sgemm_gflops(int n, int n_in, int n_out, int reps) {
    float *x = malloc((size_t)n * n_in * sizeof(float)), *w = malloc((size_t)n_out * n_in * sizeof(float)),
          *y = malloc((size_t)n * n_out * sizeof(float));
    for (size_t i = 0; i < (size_t)n * n_in; i++) x[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < (size_t)n_out * n_in; i++) w[i] = (float)(i % 5) * 0.1f;
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n_out, n_in, 1.0f, x, n_in, w, n_in, 0.0f, y, n_out);
        double t = now() - t0;
        if (t < best) best = t;
    }
    free(x);
    free(w);
    free(y);
    return 2.0 * n * n_in * n_out / best / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL [--prefill N] [--decode N] [--threads N] [--reps R]\n", argv[0]);
        return 2;
    }
    int n_prefill = 512, n_decode = 64, threads = 0, reps = 3;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--prefill")) n_prefill = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--decode")) n_decode = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    gq_set_threads(threads);
    struct gq_model *m;
    struct gq_load_params lp = {0};
    if (gq_model_load(argv[1], &lp, &m) != GQ_OK) {
        fprintf(stderr, "bench: %s\n", gq_last_error());
        return 1;
    }
    const struct gq_hparams *hp = &m->hp;
    int64_t q_dim = (int64_t)hp->n_heads * hp->head_dim, kv_dim = (int64_t)hp->n_kv_heads * hp->head_dim;
    // Linear weights read per token by the forward (f32), and the output head.
    int64_t lin = hp->n_layers * (hp->dim * (q_dim + 2 * kv_dim) + q_dim * hp->dim + 3 * (int64_t)hp->dim * hp->hidden_dim);
    int64_t head = (int64_t)hp->n_vocab * hp->dim;
    double weight_bytes = (double)(lin + head) * sizeof(float);

    int n_ctx = n_prefill + n_decode + 1;
    struct gq_context *c;
    if (gq_context_new(m, n_ctx, &c) != GQ_OK) {
        fprintf(stderr, "bench: %s\n", gq_last_error());
        return 1;
    }
    int32_t *toks = malloc((size_t)n_prefill * sizeof(int32_t));
    for (int i = 0; i < n_prefill; i++) toks[i] = (int32_t)((i * 7919 + 13) % hp->n_vocab);
    float *logits = malloc((size_t)hp->n_vocab * sizeof(float));

    // --- prefill (last-token logits, as in generation)
    double best_pf = 1e30;
    for (int r = 0; r < reps; r++) {
        gq_context_reset(c);
        double t0 = now();
        gq_forward(c, toks, n_prefill, logits, false);
        double t = now() - t0;
        if (t < best_pf) best_pf = t;
    }
    double n = n_prefill;
    double attn_flops = hp->n_layers * (double)hp->n_heads * hp->head_dim * 4.0 * n * (n + 1) / 2; // causal QK^T + SV
    double pf_flops = 2.0 * n * lin + 2.0 * head + attn_flops;
    double pf_gflops = pf_flops / best_pf / 1e9;
    // sgemm at the model's widest linear shape (the MLP up projection), same n
    double ref_gflops = sgemm_gflops(n_prefill, hp->dim, hp->hidden_dim, reps + 2);

    // --- decode
    gq_context_reset(c);
    gq_forward(c, toks, 1, logits, false);
    int32_t t = 1;
    double t0 = now();
    for (int i = 0; i < n_decode; i++) gq_forward(c, &t, 1, logits, false);
    double dec_s = now() - t0;
    double dec_tps = n_decode / dec_s;
    double bw = copy_bandwidth_gbs((size_t)1 << 30, 5);
    double bound_tps = bw * 1e9 / weight_bytes;

    printf("model: %s, %.1fM weights read per token (%.1f MB f32)\n", m->name, (lin + head) / 1e6, weight_bytes / 1e6);
    printf("prefill %d tokens: %.3f s, %.1f tok/s, %.1f GFLOP/s | sgemm (%d x %d x %d): %.1f GFLOP/s | ratio %.2f\n",
           n_prefill, best_pf, n / best_pf, pf_gflops, n_prefill, hp->dim, hp->hidden_dim, ref_gflops,
           pf_gflops / ref_gflops);
    printf("decode %d tokens: %.2f tok/s | copy bandwidth %.1f GB/s (read+write) -> bound %.2f tok/s | ratio %.2f\n",
           n_decode, dec_tps, bw, bound_tps, dec_tps / bound_tps);
    gq_context_free(c);
    free(toks);
    free(logits);
    gq_model_free(m);
    return 0;
}
