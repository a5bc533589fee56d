// bench_gemv - one-token GEMV time of every block linear of a model, on ONE
// thread, measured in thread CPU time and taking the minimum over R runs per
// matrix (robust against the wandering speed of shared machines). Prints the
// sum of the minima (ms per token) and compressed bytes / that time.
// With NTOK > 1, one call per matrix multiplies NTOK tokens at once (the
// prefill, or NTOK GEMVs up to gq_qmatmul_gemv_max_n): time per token and
// multiply-adds per second (weights · NTOK / time).
// usage: bench_gemv MODEL [R] [NTOK]      (R default 15, NTOK default 1)
#include "gptvq.h"
#include "kern/qmatmul.h"
#include "model/arch.h"
#include "model/model.h"

#include <math.h>
#include <omp.h>
#include <time.h>

static double cpu_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 2) return fprintf(stderr, "usage: %s MODEL [R] [NTOK]\n", argv[0]), 2;
    const int reps = argc > 2 ? atoi(argv[2]) : 15, nt = argc > 3 ? atoi(argv[3]) : 1;
    if (reps < 1 || nt < 1) return fprintf(stderr, "bench_gemv: R and NTOK must be positive\n"), 2;
    omp_set_num_threads(1);
    struct gq_load_params lp = {.keep_quantized = true};
    struct gq_model *m;
    if (gq_model_load(argv[1], &lp, &m) != GQ_OK) return fprintf(stderr, "bench_gemv: %s\n", gq_last_error()), 1;
    const int n = m->hp.hidden_dim > m->hp.dim ? m->hp.hidden_dim : m->hp.dim;
    float *x = malloc(sizeof(float) * n * nt), *y = malloc(sizeof(float) * n * nt);
    for (int i = 0; i < n * nt; i++) x[i] = sinf(0.37f * (float)i);
    double t = 0, bytes = 0, macs = 0, tk[64] = {0}, bk[64] = {0};
    int mats = 0;
    const struct gq_arch *A = gq_arch_find(m->arch);
    for (int l = 0; l < m->hp.n_layers; l++)
        for (int i = 0; i < A->n_tensors; i++) { // the block linears kept compressed
            if (A->tensors[i].kind != GQ_T_LINEAR) continue;
            const struct gq_qweight *q = *gq_block_qslot(&m->layers[l], &A->tensors[i]);
            if (!q) continue;
            gq_qmatmul(y, x, q, nt); // warm-up
            double best = 1e30;
            for (int r = 0; r < reps; r++) {
                double t0 = cpu_s();
                gq_qmatmul(y, x, q, nt);
                best = fmin(best, cpu_s() - t0);
            }
            best /= nt;
            t += best, bytes += (double)gq_qweight_bytes(q), macs += (double)q->rows * q->cols, mats++;
            if (i < 64) tk[i] += best, bk[i] += (double)gq_qweight_bytes(q);
        }
    printf("bench_gemv model=%s matrices=%d tokens=%d ms_per_token=%.3f gbs=%.2f gmacs=%.1f\n", argv[1], mats, nt, 1e3 * t,
           bytes / t / 1e9, macs / t / 1e9);
    for (int i = 0; i < A->n_tensors && i < 64; i++) // per kind of linear, summed over the layers
        if (tk[i] > 0) printf("  %-14s ms_per_token=%.3f gbs=%.2f\n", A->tensors[i].name, 1e3 * tk[i], bk[i] / tk[i] / 1e9);
    free(x), free(y);
    gq_model_free(m);
    return 0;
}
