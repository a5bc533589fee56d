// bench_packed - decode speed of one model with its weights kept compressed
// (packed GPTVQ, F16, Q8_0, Q4_0, Q4_1 kernels), beside the machine's copy
// bandwidth measured in the same process. One model per process, so that the
// peak RSS is that model's. Prints one machine-readable line:
//   bench_packed model=... file_mb=... weight_mb=... decode_tps=... eff_gbs=...
//   kernel_gbs=... copy_gbs=... kernel_frac=... rss_mb=...
// weight_mb: compressed bytes read per decoded token (block linears + head);
// eff_gbs = weight_mb · tok/s; kernel_gbs: the GEMVs of all block linears
// alone (no attention, norms or head), bytes / time; copy_gbs: memcpy of 512
// MiB, bytes read + written per second (best of 5).
// usage: bench_packed MODEL [--decode N] [--threads N] [--reps R]
#include "gptvq.h"
#include "kern/qmatmul.h"
#include "model/arch.h"
#include "model/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

static double copy_gbs(size_t bytes, int reps) {
    char *a = malloc(bytes), *b = malloc(bytes);
    memset(a, 1, bytes), memset(b, 2, bytes);
    double best = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = gq_time_s();
        memcpy(b, a, bytes);
        double g = 2.0 * (double)bytes / (gq_time_s() - t0) / 1e9;
        if (g > best) best = g;
        a[r] = b[bytes - 1 - r];
    }
    free(a), free(b);
    return best;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL [--decode N] [--threads N] [--reps R]\n", argv[0]);
        return 2;
    }
    int n_decode = 64, threads = 0, reps = 20;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--decode")) n_decode = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
        else return fprintf(stderr, "unknown option %s\n", argv[i]), 2;
    }
    gq_set_threads(threads);
    struct gq_model *m;
    struct gq_load_params lp = {.keep_quantized = true};
    if (gq_model_load(argv[1], &lp, &m) != GQ_OK) return fprintf(stderr, "bench: %s\n", gq_last_error()), 1;
    const struct gq_hparams *hp = &m->hp;
    const struct gq_arch *A = gq_arch_find(m->arch);
    // compressed bytes per token; f32 weights count 4 bytes per value
    double wbytes = 0;
    for (int l = 0; l < hp->n_layers; l++)
        for (int i = 0; i < A->n_tensors; i++) {
            const struct gq_block_tensor *t = &A->tensors[i];
            if (t->kind != GQ_T_LINEAR) continue;
            const struct gq_qweight *q = *gq_block_qslot(&m->layers[l], t);
            wbytes += q ? (double)gq_qweight_bytes(q)
                        : 4.0 * gq_dim_value(hp, t->rows) * gq_dim_value(hp, t->cols);
        }
    double lin_bytes = wbytes;
    wbytes += m->q_output ? (double)gq_qweight_bytes(m->q_output) : 4.0 * hp->n_vocab * hp->dim;

    struct gq_context *c;
    if (gq_context_new(m, n_decode + 2, &c) != GQ_OK) return fprintf(stderr, "bench: %s\n", gq_last_error()), 1;
    float *logits = malloc(sizeof(float) * hp->n_vocab);
    int32_t tok = 1;
    // best of 3 passes of n_decode tokens (this machine's speed wanders)
    double tps = 0;
    for (int pass = 0; pass < 3; pass++) {
        gq_context_reset(c);
        gq_forward(c, &tok, 1, logits, false); // warm-up
        double t0 = gq_time_s();
        for (int i = 0; i < n_decode; i++) gq_forward(c, &tok, 1, logits, false);
        double t = n_decode / (gq_time_s() - t0);
        if (t > tps) tps = t;
    }

    // the block linears' GEMVs alone
    float *x = malloc(sizeof(float) * (hp->hidden_dim > hp->dim ? hp->hidden_dim : hp->dim) * 4);
    float *y = malloc(sizeof(float) * (hp->hidden_dim > hp->dim ? hp->hidden_dim : hp->dim) * 4);
    for (int i = 0; i < hp->hidden_dim * 4; i++) x[i] = (float)((i * 37) % 11) * 0.1f - 0.5f;
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t1 = gq_time_s();
        for (int l = 0; l < hp->n_layers; l++)
            for (int i = 0; i < A->n_tensors; i++) {
                const struct gq_block_tensor *t = &A->tensors[i];
                if (t->kind != GQ_T_LINEAR) continue;
                const struct gq_qweight *q = *gq_block_qslot(&m->layers[l], t);
                if (q) gq_qmatmul(y, x, q, 1);
            }
        double dt = gq_time_s() - t1;
        if (dt < best) best = dt;
    }
    struct rusage ru; // before the bandwidth test's 1 GiB of buffers
    getrusage(RUSAGE_SELF, &ru);
    double kgbs = lin_bytes / best / 1e9, cgbs = copy_gbs((size_t)512 << 20, 5);
    struct stat st;
    double file_mb = stat(argv[1], &st) == 0 ? st.st_size / 1e6 : 0;
    const char *base = strrchr(argv[1], '/');
    printf("bench_packed model=%s file_mb=%.1f weight_mb=%.2f decode_tps=%.2f eff_gbs=%.2f kernel_gbs=%.2f "
           "copy_gbs=%.2f kernel_frac=%.3f rss_mb=%.1f isa=%s\n",
           base ? base + 1 : argv[1], file_mb, wbytes / 1e6, tps, wbytes * tps / 1e9, kgbs, cgbs, kgbs / cgbs,
           ru.ru_maxrss / 1024.0, gq_isa_name(gq_qmatmul_isa()));
    gq_context_free(c);
    free(logits), free(x), free(y);
    gq_model_free(m);
    return 0;
}
