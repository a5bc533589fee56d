// make_synth_model - writes a Llama-shaped GGUF with random weights, for
// measuring `gptvq quantize` end to end at real shapes (calibration forward,
// Hessians, quantization, streaming, checkpoints) without downloading a 7B
// or 70B model. The tokenizer and its metadata come from a template GGUF
// (e.g. SmolLM2's), so `--calib` text works as with a real model.
//
// Shapes: 7b  dim 4096, 32 heads, 32 KV heads, FFN 11008 (Llama-2-7B)
//         70b dim 8192, 64 heads,  8 KV heads, FFN 28672 (Llama-2-70B)
// with --blocks N decoder blocks (default 2; the real models have 32 / 80).
//
// Data (deterministic in --seed; every tensor has its own stream, so a file
// with more blocks starts with the same blocks):
//   token embeddings: correlated and heavy-tailed like real activations, as
//     in bench_gptvq_layer: e = (z·B + 0.1·noise) ⊙ s, z ~ N(0, I_r), r = dim/8,
//     B Gaussian/√r, s_j = exp(g_j) log-normal with ~0.5 % outlier channels
//     ×20 (so block 0's Hessians are far from diagonal);
//   linears: Gaussian, sd 1/√n_in (o and down 0.5/√n_in), norms 1.
// Types: f16 (default) or f32 for every 2-D tensor.
//
// usage: make_synth_model TEMPLATE.gguf OUT.gguf [--shape 7b|70b] [--blocks N]
//                         [--type f16|f32] [--seed S]
#include "gptvq.h"
#include "io/gguf.h"
#include "io/gguf_write.h"
#include "util/common.h"

#include "synth.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct shape {
    const char *name;
    int dim, n_heads, n_kv_heads, ffn;
};
static const struct shape SHAPES[] = {
    {"7b", 4096, 32, 32, 11008},
    {"70b", 8192, 64, 8, 28672},
};

struct synth {
    struct shape sh;
    int vocab, f16;
    uint64_t seed;
    int r;          // rank of the embeddings' correlated part
    float *B;       // (r, dim)
    float *scale;   // (dim)
};

// A stream per (tensor name, row): FNV-1a of the name mixed with the seed.
static uint64_t stream(const struct synth *S, const char *name, int64_t row) {
    uint64_t h = 1469598103934665603ull;
    for (const char *c = name; *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211ull;
    uint64_t s = h ^ (S->seed * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)row * 0xD1B54A32D192ED03ull);
    gq_splitmix64(&s);
    return s;
}

static void store(const struct synth *S, const float *src, void *dst, size_t i0, size_t n) {
    if (S->f16)
        for (size_t i = 0; i < n; i++) ((uint16_t *)dst)[i0 + i] = gq_f32_to_f16(src[i]);
    else
        memcpy((float *)dst + i0, src, n * sizeof(float));
}

// Rows of a tensor: (rows, cols) row-major, ne = {cols, rows}.
static enum gq_status fill(void *user, const char *name, void *dst, size_t nbytes) {
    const struct synth *S = user;
    const int dim = S->sh.dim, esz = S->f16 ? 2 : 4;
    const size_t n = nbytes / esz;
    if (strstr(name, "norm")) { // 1-D, always F32
        for (size_t i = 0; i < nbytes / 4; i++) ((float *)dst)[i] = 1.0f;
        return GQ_OK;
    }
    if (!strcmp(name, "token_embd.weight")) {
        const int chunk = 256, r = S->r;
        int bad = 0;
#pragma omp parallel for schedule(dynamic, 1)
        for (int t0 = 0; t0 < S->vocab; t0 += chunk) {
            int nt = S->vocab - t0 < chunk ? S->vocab - t0 : chunk;
            float *Z = malloc(sizeof(float) * (size_t)nt * r), *X = malloc(sizeof(float) * (size_t)nt * dim);
            if (!Z || !X) {
                free(Z), free(X);
#pragma omp atomic write
                bad = 1;
                continue;
            }
            uint64_t s = stream(S, name, t0);
            synth_rows(nt, r, dim, S->B, S->scale, &s, Z, X);
            store(S, X, dst, (size_t)t0 * dim, (size_t)nt * dim);
            free(Z), free(X);
        }
        return bad ? gq_fail(GQ_ERR_NOMEM, "out of memory") : GQ_OK;
    }
    // A linear: n_in is ne[0]; which one it is decides the scale.
    const int n_in = strstr(name, "ffn_down") ? S->sh.ffn : dim;
    const double sd = (strstr(name, "attn_output") || strstr(name, "ffn_down") ? 0.5 : 1.0) / sqrt((double)n_in);
    const int64_t rows = (int64_t)(n / n_in);
    int bad = 0;
#pragma omp parallel for schedule(dynamic, 16)
    for (int64_t r = 0; r < rows; r++) {
        float *row = malloc(sizeof(float) * n_in);
        if (!row) {
#pragma omp atomic write
            bad = 1;
            continue;
        }
        uint64_t s = stream(S, name, r);
        for (int j = 0; j < n_in; j++) row[j] = (float)(sd * synth_gauss(&s));
        store(S, row, dst, (size_t)r * n_in, n_in);
        free(row);
    }
    return bad ? gq_fail(GQ_ERR_NOMEM, "out of memory") : GQ_OK;
}

static enum gq_status add(struct gq_gguf_writer *w, struct synth *S, const char *name, int64_t rows, int64_t cols) {
    if (cols == 0) { // 1-D
        int64_t ne = rows;
        return gq_gguf_writer_add_tensor_fill(w, name, GQ_TYPE_F32, 1, &ne, (size_t)rows * 4, fill, S);
    }
    int64_t ne[2] = {cols, rows};
    return gq_gguf_writer_add_tensor_fill(w, name, S->f16 ? GQ_TYPE_F16 : GQ_TYPE_F32, 2, ne,
                                          (size_t)rows * cols * (S->f16 ? 2 : 4), fill, S);
}

static int usage(void) {
    fprintf(stderr, "usage: make_synth_model TEMPLATE.gguf OUT.gguf [--shape 7b|70b] [--blocks N] [--type f16|f32] "
                    "[--seed S]\n");
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 3) return usage();
    const char *tpl = argv[1], *out = argv[2], *shape = "7b";
    int blocks = 2;
    struct synth S = {.f16 = 1, .seed = 1};
    for (int i = 3; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return usage();
        char *end;
        if (!strcmp(a, "--shape")) shape = v;
        else if (!strcmp(a, "--blocks")) {
            blocks = (int)strtol(v, &end, 10);
            if (*end || blocks < 1 || blocks > 1000) {
                fprintf(stderr, "make_synth_model: error: --blocks %s: want 1..1000\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--type")) {
            if (strcmp(v, "f16") && strcmp(v, "f32")) {
                fprintf(stderr, "make_synth_model: error: --type %s: want f16 or f32\n", v);
                return 2;
            }
            S.f16 = !strcmp(v, "f16");
        } else if (!strcmp(a, "--seed")) {
            S.seed = strtoull(v, &end, 10);
            if (*end) return usage();
        } else return usage();
        i++;
    }
    int si = -1;
    for (int i = 0; i < (int)(sizeof SHAPES / sizeof *SHAPES); i++)
        if (!strcmp(shape, SHAPES[i].name)) si = i;
    if (si < 0) {
        fprintf(stderr, "make_synth_model: error: --shape %s: want 7b or 70b\n", shape);
        return 2;
    }
    S.sh = SHAPES[si];

    struct gq_gguf *g = NULL;
    if (gq_gguf_open(tpl, &g) != GQ_OK) {
        fprintf(stderr, "make_synth_model: error: %s\n", gq_last_error());
        return 1;
    }
    const struct gq_gguf_tensor *te = gq_gguf_find_tensor(g, "token_embd.weight");
    if (!te || te->n_dims != 2 || !gq_gguf_find_kv(g, "tokenizer.ggml.tokens")) {
        fprintf(stderr, "make_synth_model: error: %s: no token_embd.weight or tokenizer metadata to copy\n", tpl);
        gq_gguf_close(g);
        return 1;
    }
    S.vocab = (int)te->ne[1];
    const int dim = S.sh.dim, hd = dim / S.sh.n_heads, kv = hd * S.sh.n_kv_heads, ffn = S.sh.ffn;
    S.r = dim / 8;

    // The embeddings' shared factors.
    uint64_t s = stream(&S, "embedding factors", 0);
    S.B = malloc(sizeof(float) * (size_t)S.r * dim);
    S.scale = malloc(sizeof(float) * dim);
    if (!S.B || !S.scale) {
        fprintf(stderr, "make_synth_model: error: out of memory\n");
        return 1;
    }
    synth_factors(S.r, dim, &s, S.B, S.scale);

    struct gq_gguf_writer *w = gq_gguf_writer_new(0);
    static const char *const skip[] = {"llama.", "qwen2.", "general.", "gptvq.", NULL};
    enum gq_status st = w ? gq_gguf_writer_copy_kvs(w, g, skip) : GQ_ERR_NOMEM;
    char name[128];
    snprintf(name, sizeof name, "synthetic Llama-2-%s shape, %d blocks, random weights", shape, blocks);
#define SET(f, k, v) \
    if (st == GQ_OK) st = gq_gguf_writer_set_##f(w, k, v)
    SET(str, "general.architecture", "llama");
    SET(str, "general.name", name);
    SET(u32, "general.file_type", S.f16 ? 1 : 0);
    SET(u32, "llama.block_count", blocks);
    SET(u32, "llama.context_length", 4096);
    SET(u32, "llama.embedding_length", dim);
    SET(u32, "llama.feed_forward_length", ffn);
    SET(u32, "llama.attention.head_count", S.sh.n_heads);
    SET(u32, "llama.attention.head_count_kv", S.sh.n_kv_heads);
    SET(u32, "llama.rope.dimension_count", hd);
    SET(f32, "llama.rope.freq_base", 10000.0f);
    SET(f32, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    SET(u32, "llama.vocab_size", S.vocab);
#undef SET
    if (st == GQ_OK) st = add(w, &S, "token_embd.weight", S.vocab, dim);
    if (st == GQ_OK) st = add(w, &S, "output_norm.weight", dim, 0);
    static const struct {
        const char *name;
        int rows, cols; // 0 dim, 1 kv, 2 ffn, -1 none (1-D)
    } T[] = {
        {"attn_norm.weight", 0, -1}, {"attn_q.weight", 0, 0},   {"attn_k.weight", 1, 0},
        {"attn_v.weight", 1, 0},     {"attn_output.weight", 0, 0}, {"ffn_norm.weight", 0, -1},
        {"ffn_gate.weight", 2, 0},   {"ffn_up.weight", 2, 0},   {"ffn_down.weight", 0, 2},
    };
    const int sz[3] = {dim, kv, ffn};
    for (int l = 0; l < blocks && st == GQ_OK; l++)
        for (size_t i = 0; i < sizeof T / sizeof *T && st == GQ_OK; i++) {
            char tn[64];
            snprintf(tn, sizeof tn, "blk.%d.%s", l, T[i].name);
            st = add(w, &S, tn, sz[T[i].rows], T[i].cols < 0 ? 0 : sz[T[i].cols]);
        }
    double t0 = gq_time_s();
    if (st == GQ_OK) st = gq_gguf_writer_write(w, out);
    if (st != GQ_OK) fprintf(stderr, "make_synth_model: error: %s\n", gq_last_error());
    else
        fprintf(stderr, "make_synth_model: %s: Llama-2-%s shape (dim %d, heads %d/%d, ffn %d), %d blocks, vocab %d, %s, "
                        "%.1f s\n", out, shape, dim, S.sh.n_heads, S.sh.n_kv_heads, ffn, blocks, S.vocab,
                S.f16 ? "f16" : "f32", gq_time_s() - t0);
    gq_gguf_writer_free(w);
    gq_gguf_close(g);
    free(S.B), free(S.scale);
    return st == GQ_OK ? 0 : 1;
}
