// bench_gptvq_layer - GPTVQ on one Llama-2-7B-shaped linear (4096 x 4096) on
// this machine: total time and the split between preparation, EM codebook
// initialisation, assignment (+ in-block d x d feedback), the lazy feedback
// GEMM and the codebook update, for 2D and 4D VQ at 2.125 bpv, with GPTQ W2
// g128 act-order as a time reference.
//
// Data (nothing downloaded): W Gaussian, sd 0.02. Calibration inputs X
// (tokens, cols) are correlated and heavy-tailed like real activations:
//   X = Z·B + 0.1·noise,  Z (tokens, r) Gaussian, B (r, cols) Gaussian/√r,
//   r = cols/8 (low-rank: neighbouring channels are strongly correlated),
// then column j scaled by exp(g_j), g_j Gaussian (log-normal channel scales),
// and ~0.5% of the columns 20x larger (outlier channels). H = 2/N XᵀX through
// the library's gq_hessian_* (dsyrk), timed apart from the quantization.
//
// Environment (defaults): BENCH_ROWS (4096) BENCH_COLS (4096) BENCH_TOKENS
// (8192) BENCH_CONFIGS ("gptq,2d,4d") BENCH_EM_ITERS (100) BENCH_UPDATE
// (exact|gd|none; exact) BENCH_SEED (1) BENCH_DEVICE (cpu|cuda; cpu) BENCH_BPV
// (2.125: the VQ configs' bits per value).
// Threads: OMP_NUM_THREADS.
//
// Block mode, BENCH_MODEL=7b|70b (or BENCH_DIM, BENCH_KV_DIM, BENCH_FFN for
// another shape): the seven linears of one decoder block of that shape (q, o:
// dim x dim; k, v: kv_dim x dim; gate, up: ffn x dim; down: dim x ffn), each
// input's H built from its own synthetic inputs (4 per block, timed apart),
// GPTQ W3 g128 (as the quantization tables) instead of W2; prints seconds per
// block and the projection to the whole model (32 blocks for 7B, 80 for 70B:
// BENCH_BLOCKS), with the Hessian time scaled to 128 x 2048 calibration tokens.
// usage: OMP_WAIT_POLICY=PASSIVE build/bench/bench_gptvq_layer
#include "gptvq.h"
#include "quant/quant.h"
#include "quant/vq.h"
#include "util/common.h"

#include "synth.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long env_long(const char *name, long def) {
    const char *s = getenv(name);
    if (!s || !*s) return def;
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || v <= 0) {
        fprintf(stderr, "bench: %s=%s is not a positive integer; using %ld\n", name, s, def);
        return def;
    }
    return v;
}

static const char *env_str(const char *name, const char *def) {
    const char *s = getenv(name);
    return s && *s ? s : def;
}


// BENCH_BPV: the VQ configs' bits per value (2.125, the paper's setting).
static double env_bpv(void) {
    const char *s = getenv("BENCH_BPV");
    char *end;
    double v = s && *s ? strtod(s, &end) : 2.125;
    if (s && *s && (*end || !(v > 0))) {
        fprintf(stderr, "bench: BENCH_BPV=%s is not a positive number; using 2.125\n", s);
        v = 2.125;
    }
    return v;
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "bench: out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

// H (cols, cols) from `tokens` synthetic activation rows, generated chunk by
// chunk so X is never held whole. *t_gen / *t_hess: seconds spent generating X
// and accumulating H (dsyrk + finish).
static int build_hessian(int cols, int tokens, uint64_t seed, float *H, double *t_gen, double *t_hess) {
    const int r = cols / 8 > 0 ? cols / 8 : 1, chunk = 1024;
    uint64_t s = seed;
    float *Bm = xmalloc(sizeof(float) * (size_t)r * cols);
    float *scale = xmalloc(sizeof(float) * cols);
    float *Z = xmalloc(sizeof(float) * (size_t)chunk * r);
    float *X = xmalloc(sizeof(float) * (size_t)chunk * cols);
    double t0 = gq_time_s();
    const int n_outlier = synth_factors(r, cols, &s, Bm, scale);
    *t_gen = gq_time_s() - t0;
    *t_hess = 0;
    struct gq_hessian hs;
    if (gq_hessian_init(&hs, cols) != GQ_OK) {
        fprintf(stderr, "bench: %s\n", gq_last_error());
        return 1;
    }
    for (int t0k = 0; t0k < tokens; t0k += chunk) {
        int nt = tokens - t0k < chunk ? tokens - t0k : chunk;
        double tg = gq_time_s();
        synth_rows(nt, r, cols, Bm, scale, &s, Z, X);
        double th = gq_time_s();
        *t_gen += th - tg;
        if (gq_hessian_add(&hs, X, nt, cols) != GQ_OK) {
            fprintf(stderr, "bench: %s\n", gq_last_error());
            gq_hessian_free(&hs);
            return 1;
        }
        *t_hess += gq_time_s() - th;
    }
    double th = gq_time_s();
    enum gq_status st = gq_hessian_finish(&hs, H);
    *t_hess += gq_time_s() - th;
    gq_hessian_free(&hs);
    free(Bm), free(scale), free(Z), free(X);
    if (st != GQ_OK) {
        fprintf(stderr, "bench: %s\n", gq_last_error());
        return 1;
    }
    printf("inputs: rank %d + 0.1 noise, log-normal channel scales, %d outlier channels (x20)\n", r, n_outlier);
    return 0;
}

// A BENCH_CONFIGS entry: 0 for gptq, the VQ dimension for 1d..8d, -1 (with
// a message) for anything else.
static int config_dim(const char *tok) {
    static const char *const names[] = {"gptq", "1d", "2d", "4d", "8d"};
    static const int dims[] = {0, 1, 2, 4, 8};
    for (int i = 0; i < 5; i++)
        if (!strcmp(tok, names[i])) return dims[i];
    fprintf(stderr, "bench: unknown config '%s' (gptq, 1d, 2d, 4d, 8d)\n", tok);
    return -1;
}

static void pct(double part, double total, char *buf, size_t n) {
    snprintf(buf, n, "%8.2f %4.1f%%", part, total > 0 ? 100.0 * part / total : 0.0);
}

static int block_main(void);

int main(void) {
    const char *dev = env_str("BENCH_DEVICE", "cpu");
    if (gq_set_device(dev) != GQ_OK) {
        fprintf(stderr, "bench: %s\n", gq_last_error());
        return 2;
    }
    printf("device: %s\n", gq_device_name());
    if (getenv("BENCH_MODEL") || getenv("BENCH_DIM")) return block_main();
    const int rows = (int)env_long("BENCH_ROWS", 4096), cols = (int)env_long("BENCH_COLS", 4096);
    const int tokens = (int)env_long("BENCH_TOKENS", 8192), em_iters = (int)env_long("BENCH_EM_ITERS", 100);
    const uint64_t seed = (uint64_t)env_long("BENCH_SEED", 1);
    const char *configs = env_str("BENCH_CONFIGS", "gptq,2d,4d"), *update = env_str("BENCH_UPDATE", "exact");
    enum gq_cb_update cb_update;
    if (!strcmp(update, "exact")) cb_update = GQ_CB_UPDATE_EXACT;
    else if (!strcmp(update, "gd")) cb_update = GQ_CB_UPDATE_GD;
    else if (!strcmp(update, "none")) cb_update = GQ_CB_UPDATE_NONE;
    else {
        fprintf(stderr, "bench: BENCH_UPDATE must be exact, gd or none (got '%s')\n", update);
        return 2;
    }
    printf("bench_gptvq_layer: W (%d, %d), %d calibration tokens, EM iters %d, codebook update %s, configs %s\n",
           rows, cols, tokens, em_iters, update, configs);
    printf("threads: %d (omp_get_max_threads); the paper's timings are on one H100 GPU, these are CPU\n",
           omp_get_max_threads());

    size_t nw = (size_t)rows * cols;
    float *W0 = xmalloc(sizeof(float) * nw), *W = xmalloc(sizeof(float) * nw);
    float *H = xmalloc(sizeof(float) * (size_t)cols * cols);
    uint64_t ws = seed * 0x9E3779B97F4A7C15ull + 7;
    for (size_t i = 0; i < nw; i++) W0[i] = (float)(0.02 * synth_gauss(&ws));
    double t_gen, t_hess;
    if (build_hessian(cols, tokens, seed, H, &t_gen, &t_hess)) return 1;
    printf("calibration: generating X %.2f s, H = 2/N XᵀX (dsyrk) %.2f s (not in the times below)\n\n", t_gen,
           t_hess);

    struct gq_quantize_params qpar;
    gq_quantize_params_default(&qpar);
    struct gq_quant_params q;
    gq_quant_params_default(&q);
    q.damp = 0.01f, q.block_size = 128, q.act_order = true;

    printf("%-6s %5s %7s %7s %9s %9s %9s | %14s %14s %14s %14s %14s %8s\n", "config", "k", "l", "bpv", "rel_err",
           "rel_pass", "total_s", "prep", "EM", "assign+fb", "lazy_gemm", "update", "upd_it");
    double sec_by_config[16] = {0};
    char names[16][8];
    int n_done = 0;
    char list[256];
    snprintf(list, sizeof list, "%s", configs);
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        memcpy(W, W0, sizeof(float) * nw);
        if (!strcmp(tok, "gptq")) {
            struct gq_quant_params g = q;
            g.wbits = 2, g.group_size = 128;
            struct gq_gptq_result gr;
            memset(&gr, 0, sizeof gr);
            double t0 = gq_time_s();
            if (gq_gptq_quantize(W, rows, cols, H, &g, &gr) != GQ_OK) {
                fprintf(stderr, "bench: gptq: %s\n", gq_last_error());
                return 1;
            }
            double t = gq_time_s() - t0;
            printf("%-6s %5s %7s %7s %9.5f %9s %9.2f |  (GPTQ W2 g128 act-order; RTN rel_err %.5f%s)\n", "gptq",
                   "-", "128", "-", gr.rel_error, "-", t, gr.rtn_rel_error,
                   gr.rtn_fallback ? ", RTN kept" : "");
            fflush(stdout);
            if (n_done < 16) snprintf(names[n_done], sizeof names[n_done], "gptq"), sec_by_config[n_done++] = t;
            continue;
        }
        const int d = config_dim(tok);
        if (d < 0) return 2;
        struct gq_gptvq_params vp = qpar.vq;
        vp.dim = d, vp.bpv = env_bpv(), vp.em_iters = em_iters, vp.cb_update = cb_update;
        struct gq_vq_config cfg;
        if (gq_vq_config_from_bpv(vp.bpv, d, vp.k, vp.group, vp.cb_format, vp.norm_block, vp.cb_svd_rank, &cfg) != GQ_OK) {
            fprintf(stderr, "bench: %s: %s\n", tok, gq_last_error());
            return 1;
        }
        struct gq_vq_result res;
        double t0 = gq_time_s();
        if (gq_gptvq_quantize(W, rows, cols, H, &q, &vp, &cfg, 0, NULL, &res) != GQ_OK) {
            fprintf(stderr, "bench: %s: %s\n", tok, gq_last_error());
            return 1;
        }
        double t = gq_time_s() - t0;
        char a[5][32];
        pct(res.t_prep, t, a[0], sizeof a[0]);
        pct(res.t_em, t, a[1], sizeof a[1]);
        pct(res.t_assign, t, a[2], sizeof a[2]);
        pct(res.t_feedback, t, a[3], sizeof a[3]);
        pct(res.t_update, t, a[4], sizeof a[4]);
        printf("%-6s %5d %7lld %7.4f %9.5f %9.5f %9.2f | %14s %14s %14s %14s %14s %8d%s\n", tok, cfg.k,
               (long long)res.l, res.bpv, res.rel_error, res.ref > 0 ? res.objective_pass / res.ref : 0.0, t, a[0],
               a[1], a[2], a[3], a[4], res.update_iters, res.update_kept ? "" : " (update not kept)");
        printf("       EM iterations %lld over all groups, %lld re-seeded clusters; other (decode, checks) %.2f s\n",
               (long long)res.em_iters_total, (long long)res.n_reseeded,
               t - res.t_prep - res.t_em - res.t_assign - res.t_feedback - res.t_update);
        fflush(stdout);
        if (n_done < 16) snprintf(names[n_done], sizeof names[n_done], "%s", tok), sec_by_config[n_done++] = t;
    }
    printf("\nupdate column: the codebook update including the three objective evaluations it needs\n"
           "(before, tr(WHWᵀ), after). assign+fb: nearest-centroid search plus the exact in-block d x d\n"
           "error feedback; lazy_gemm: the rank-B update of the remaining columns (GPTQ's lazy batch).\n");
    printf("naive projection to Llama-2-7B (32 blocks x 7 linears, all treated as %dx%d; 7B's MLP\n"
           "linears are 4096x11008 / 11008x4096, so this underestimates):\n", rows, cols);
    for (int i = 0; i < n_done; i++)
        printf("  %-5s %9.2f s/layer x 224 = %7.2f h\n", names[i], sec_by_config[i],
               sec_by_config[i] * 224.0 / 3600.0);
    free(W0), free(W), free(H);
    return 0;
}

// One decoder block of a Llama shape: 4 Hessians, 7 linears, per config.
static int block_main(void) {
    const char *model = env_str("BENCH_MODEL", "custom");
    bool b70 = !strcmp(model, "70b");
    if (strcmp(model, "7b") && !b70 && strcmp(model, "custom")) {
        fprintf(stderr, "bench: BENCH_MODEL must be 7b or 70b (got '%s')\n", model);
        return 2;
    }
    const int dim = (int)env_long("BENCH_DIM", b70 ? 8192 : 4096), kv = (int)env_long("BENCH_KV_DIM", b70 ? 1024 : dim);
    const int ffn = (int)env_long("BENCH_FFN", b70 ? 28672 : 11008), blocks = (int)env_long("BENCH_BLOCKS", b70 ? 80 : 32);
    const int tokens = (int)env_long("BENCH_TOKENS", 8192), em_iters = (int)env_long("BENCH_EM_ITERS", 100);
    const uint64_t seed = (uint64_t)env_long("BENCH_SEED", 1);
    const char *configs = env_str("BENCH_CONFIGS", "gptq,2d,4d");
    struct lin {
        const char *name;
        int rows, cols, input; // input: which H (0 attn_in, 1 attn_out, 2 ffn_in, 3 ffn_down_in)
    } L[7] = {{"attn_q", dim, dim, 0}, {"attn_k", kv, dim, 0}, {"attn_v", kv, dim, 0}, {"attn_o", dim, dim, 1},
              {"ffn_gate", ffn, dim, 2}, {"ffn_up", ffn, dim, 2}, {"ffn_down", dim, ffn, 3}};
    printf("bench_gptvq_layer block mode (%s): dim %d, kv_dim %d, ffn %d, %d calibration tokens per H, EM iters %d, "
           "configs %s, %d threads\n", model, dim, kv, ffn, tokens, em_iters, configs, omp_get_max_threads());
    float *H[4];
    double t_hess = 0, t_gen = 0;
    for (int g = 0; g < 4; g++) {
        int n = g == 3 ? ffn : dim;
        double tg, th;
        H[g] = xmalloc(sizeof(float) * (size_t)n * n);
        if (build_hessian(n, tokens, seed + 17 * g, H[g], &tg, &th)) return 1;
        t_gen += tg, t_hess += th;
    }
    const double full_tokens = 128.0 * 2048;
    printf("Hessians: 4 per block, %.2f s for %d tokens (dsyrk), %.2f s scaled to %.0f tokens; generating inputs %.2f s "
           "(not counted)\n", t_hess, tokens, t_hess * full_tokens / tokens, full_tokens, t_gen);
    struct gq_quantize_params qpar;
    gq_quantize_params_default(&qpar);
    char list[256];
    snprintf(list, sizeof list, "%s", configs);
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        const int d = config_dim(tok);
        if (d < 0) return 2;
        struct gq_quant_params q;
        gq_quant_params_default(&q);
        q.damp = 0.01f, q.block_size = 128, q.act_order = true, q.wbits = 3, q.group_size = 128;
        struct gq_gptvq_params vp = qpar.vq;
        vp.dim = d, vp.bpv = env_bpv(), vp.em_iters = em_iters;
        double t_block = 0, err = 0;
        printf("%-5s", tok);
        for (int i = 0; i < 7; i++) {
            size_t nw = (size_t)L[i].rows * L[i].cols;
            float *W = xmalloc(sizeof(float) * nw);
            uint64_t ws = seed * 0x9E3779B97F4A7C15ull + 31 * i;
            for (size_t j = 0; j < nw; j++) W[j] = (float)(0.02 * synth_gauss(&ws));
            double t0 = gq_time_s(), rel = 0;
            enum gq_status st;
            if (!d) {
                struct gq_gptq_result gr;
                memset(&gr, 0, sizeof gr);
                st = gq_gptq_quantize(W, L[i].rows, L[i].cols, H[L[i].input], &q, &gr);
                rel = gr.rel_error;
            } else {
                struct gq_vq_config cfg;
                struct gq_vq_result res;
                st = gq_vq_config_from_bpv(vp.bpv, d, vp.k, vp.group, vp.cb_format, vp.norm_block, vp.cb_svd_rank, &cfg);
                if (st == GQ_OK) st = gq_gptvq_quantize(W, L[i].rows, L[i].cols, H[L[i].input], &q, &vp, &cfg, i, NULL, &res);
                rel = res.rel_error;
            }
            double t = gq_time_s() - t0;
            free(W);
            if (st != GQ_OK) {
                fprintf(stderr, "\nbench: %s %s: %s\n", tok, L[i].name, gq_last_error());
                return 1;
            }
            printf("  %s %.1fs", L[i].name, t);
            fflush(stdout);
            t_block += t, err += rel / 7;
        }
        double tb = t_block + t_hess * full_tokens / tokens;
        printf("\n      %s: quantization %.1f s/block + Hessians %.1f s (128 x 2048 tokens) = %.1f s/block; x %d blocks "
               "= %.2f h (mean rel error %.4f)\n", tok, t_block, t_hess * full_tokens / tokens, tb, blocks,
               tb * blocks / 3600.0, err);
    }
    printf("paper (one H100): Llama-2-7B 30-60 min (Table 12: 2D 1335-2195 s with codebook update), Llama-2-70B "
           "3-11 h; calibration forward passes are not part of this bench\n");
    for (int g = 0; g < 4; g++) free(H[g]);
    return 0;
}
