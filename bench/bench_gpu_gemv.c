// bench_gpu_gemv - one-token GEMV on the CUDA device (src/backend/cu_mat.cu)
// for Llama-2-7B shapes: achieved GB/s (the matrix's stored bytes / time)
// against the device's peak, and time relative to Q4_0, for packed VQ
// (1D 3.125, 2D 2.125, 2D 3.125, 4D 2.125: int8 codebooks, act-order
// permutation, no normalisation), Q4_0 and F16.
//
// The matrices are synthetic (random indices and codebooks, random
// permutation, the tiling GPTVQ picks: 256-column tiles, l / 256 rows):
// a GEMV's time does not depend on the values. Each VQ matrix is measured
// with both VQ kernels: codebooks through L1 with a warp per row (the
// default), and "(smem)": a row tile's codebooks in shared memory, several
// rows per warp.
// usage: build/bench/bench_gpu_gemv [ITERS]   (needs a GPU; exits 77 without)
#include "gptvq.h"
#include "backend/backend.h"
#include "io/gguf.h"
#include "kern/qmatmul.h"
#include "quant/vq.h"
#include "format/vqpack.h"
#include "util/common.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 42;

// A random packed VQ matrix: d, k, l weights per codebook.
static int make_vq(int rows, int cols, int d, int k, int l, struct gq_vqpack *p, uint8_t **buf) {
    struct gq_vq_tensor t;
    memset(&t, 0, sizeof t);
    t.rows = rows, t.cols = cols, t.d = d, t.k = k, t.stages = 1, t.cb_format = GQ_CB_INT8;
    const int tile_cols = cols < 256 ? cols : 256, tile_rows = l / tile_cols > 0 ? l / tile_cols : 1;
    t.n_ct = cols / tile_cols, t.n_rt = (rows + tile_rows - 1) / tile_rows;
    t.ct_start = malloc(sizeof(int) * (t.n_ct + 1)), t.rt_start = malloc(sizeof(int) * (t.n_rt + 1));
    for (int i = 0; i <= t.n_ct; i++) t.ct_start[i] = i * cols / t.n_ct / d * d;
    t.ct_start[t.n_ct] = cols;
    for (int i = 0; i <= t.n_rt; i++) t.rt_start[i] = i * tile_rows < rows ? i * tile_rows : rows;
    const size_t ng = (size_t)t.n_ct * t.n_rt, nv = (size_t)cols / d;
    t.cb = malloc(sizeof(float) * ng * k * d), t.cb_scale = malloc(sizeof(float) * ng);
    t.idx = malloc(sizeof(uint16_t) * rows * nv), t.perm = malloc(sizeof(int32_t) * cols);
    for (size_t g = 0; g < ng; g++) {
        t.cb_scale[g] = gq_f16_to_f32(gq_f32_to_f16(0.001f * (1 + (float)gq_rng_uniform(&rng))));
        for (int i = 0; i < k * d; i++) t.cb[g * k * d + i] = (float)((int)(gq_splitmix64(&rng) % 255) - 127) * t.cb_scale[g];
    }
    for (size_t i = 0; i < (size_t)rows * nv; i++) t.idx[i] = (uint16_t)(gq_splitmix64(&rng) % (uint64_t)k);
    for (int i = 0; i < cols; i++) t.perm[i] = i;
    for (int i = cols - 1; i > 0; i--) { // Fisher-Yates
        int j = (int)(gq_splitmix64(&rng) % (uint64_t)(i + 1));
        int32_t x = t.perm[i];
        t.perm[i] = t.perm[j], t.perm[j] = x;
    }
    enum gq_status s = gq_vqpack_pack(&t, p, buf);
    gq_vq_tensor_free(&t);
    if (s != GQ_OK) fprintf(stderr, "bench_gpu_gemv: pack: %s\n", gq_last_error());
    return s != GQ_OK;
}

int main(int argc, char **argv) {
    const int iters = argc > 1 ? atoi(argv[1]) : 200;
    // Without a device the matrices are still built and validated (gq_vqrt_init).
    const bool dry = gq_set_device("cuda") != GQ_OK;
    char why[512];
    snprintf(why, sizeof why, "%s", gq_last_error());
    if (!dry) printf("device: %s; %d GEMVs per measurement, vectors on the device\n", gq_device_name(), iters);
    static const int shapes[][2] = {{4096, 4096}, {11008, 4096}, {4096, 11008}};
    static const struct {
        const char *name;
        int d, k, l; // d 0: GGML type k
    } cfgs[] = {{"Q4_0", 0, GQ_TYPE_Q4_0, 0},  {"F16", 0, GQ_TYPE_F16, 0},       {"VQ 1D 3.125", 1, 8, 512},
                {"VQ 2D 2.125", 2, 16, 2048}, {"VQ 2D 3.125", 2, 64, 8192},     {"VQ 4D 2.125", 4, 256, 65536}};
    if (!dry) printf("%-12s %-12s %10s %9s %9s %8s %10s\n", "shape", "format", "bytes", "us", "GB/s", "% peak", "vs Q4_0");
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        const int rows = shapes[si][0], cols = shapes[si][1];
        double t_q4 = 0;
        for (size_t ci = 0; ci < sizeof cfgs / sizeof *cfgs; ci++) {
            struct gq_qweight w = {.rows = rows, .cols = cols};
            struct gq_vqpack p;
            struct gq_vqrt v;
            uint8_t *buf = NULL;
            if (!cfgs[ci].d) {
                w.kind = GQ_QW_GGML, w.type = (enum gq_ggml_type)cfgs[ci].k;
                w.row_size = gq_ggml_row_size(w.type, cols);
                buf = malloc(w.row_size * rows);
                float *row = malloc(sizeof(float) * cols);
                for (int r = 0; r < rows; r++) {
                    for (int c = 0; c < cols; c++) row[c] = (float)(0.02 * (gq_rng_uniform(&rng) - 0.5));
                    gq_quantize_row_ggml(w.type, row, buf + (size_t)r * w.row_size, cols);
                }
                free(row);
                w.data = buf;
            } else {
                if (make_vq(rows, cols, cfgs[ci].d, cfgs[ci].k, cfgs[ci].l, &p, &buf)) return 1;
                if (gq_vqrt_init(&v, &p, "bench") != GQ_OK) return fprintf(stderr, "%s\n", gq_last_error()), 1;
                w.kind = GQ_QW_VQ, w.vq = &v;
            }
            if (dry) {
                if (cfgs[ci].d) gq_vqrt_free(&v);
                free(buf);
                continue;
            }
            struct gqcu_mat *m = NULL;
            double sec = 0, peak = 0;
            size_t bytes = 0;
            if (gq_cuda_mat_new(&w, &m) != GQ_OK || gq_cuda_mat_bench(m, iters, &sec, &bytes, &peak) != GQ_OK)
                return fprintf(stderr, "bench_gpu_gemv: %s: %s\n", cfgs[ci].name, gq_last_error()), 1;
            if (!ci) t_q4 = sec;
            char shape[32];
            snprintf(shape, sizeof shape, "%dx%d", rows, cols);
            printf("%-12s %-12s %10zu %9.2f %9.1f %8.1f %9.2fx\n", shape, cfgs[ci].name, bytes, sec * 1e6,
                   bytes / sec / 1e9, peak > 0 ? 100 * bytes / sec / 1e9 / peak : 0, sec / t_q4);
            // VQ: the shared-memory kernel (several rows per warp) measured beside it
            if (cfgs[ci].d && gq_cuda_mat_set_variant(m, 1) == GQ_OK) {
                if (gq_cuda_mat_bench(m, iters, &sec, &bytes, &peak) != GQ_OK)
                    return fprintf(stderr, "bench_gpu_gemv: %s smem: %s\n", cfgs[ci].name, gq_last_error()), 1;
                printf("%-12s %-12s %10zu %9.2f %9.1f %8.1f %9.2fx\n", shape, "  (smem)", bytes, sec * 1e6,
                       bytes / sec / 1e9, peak > 0 ? 100 * bytes / sec / 1e9 / peak : 0, sec / t_q4);
            } else if (cfgs[ci].d)
                printf("%-12s %-12s (shared-memory kernel: %s)\n", shape, "  (smem)", gq_last_error());
            fflush(stdout);
            gq_cuda_mat_free(m);
            if (cfgs[ci].d) gq_vqrt_free(&v);
            free(buf);
        }
    }
    if (dry) fprintf(stderr, "SKIP: %s (the benchmark matrices were built and validated)\n", why);
    return dry ? 77 : 0;
}
