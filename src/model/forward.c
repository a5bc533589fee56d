// forward.c - Llama-family decoder forward on the CPU.
//
// Batched: n tokens at a time go through every layer as (n, dim) matrices, so
// prefill is sgemm-bound (OpenBLAS); attention per head is two sgemms over the
// KV cache (scores = Q K^T, out = softmax(scores) V) with a causal mask.
// Decode is the same code with n = 1. A context made by gq_context_new_device
// for "cuda" hands gq_forward to the device (forward_cuda.h: gq_cuda_lm_*) and has
// no host KV cache.
#include "model/model.h"
#include "backend/backend.h"
#include "model/forward_cuda.h"
#include "kern/qmatmul.h"
#include "kern/vmath.h"
#include "util/barrier.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>

struct gq_context {
    const struct gq_model *m;
    int n_ctx, pos;
    float *k_cache, *v_cache; // (n_layers, n_ctx, kv_dim)
    float *inv_freq;          // (rope_dim/2) RoPE frequencies after scaling
    struct gq_cuda_lm *dev;   // gq_forward runs there (gq_context_new_device "cuda"); no host KV cache
    // scratch, sized for n_cap tokens
    int n_cap, n_att;
    float *x, *xb, *q, *k, *v, *att_out, *hb, *hb2, *scores;
    float *xr; // a rotated input (matmul_in), xr_n floats
    size_t xr_n;
    // RoPE cos / sin of scratch row i (rope_dim floats at rope_cs + i ·
    // rope_dim) for position rope_pos[i] (−1: none yet): every layer's rows
    // share them, and a row keeps them while its position stays
    float *rope_cs;
    int *rope_pos;
    // the decode step (forward_decode): per-thread rows of dec_w floats for
    // dec_nt threads, and the barrier of its parallel region
    float *dec;
    int dec_nt, dec_w;
    float *att_m, *att_o; // the decode attention's partials: (threads, heads) max, (threads, heads, head_dim) sums
    double *att_z;        // (threads, heads) Σ exp
    struct gq_barrier bar;
};

// y = x W^T for x (n, n_in), W (n_out, n_in): y (n, n_out); the compressed
// form q when the weight is kept compressed.
static enum gq_status matmul(float *y, const float *x, const float *w, const struct gq_qweight *q, int n, int n_in,
                             int n_out) {
    if (q) return gq_qmatmul(y, x, q, n);
    if (n == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, n_out, n_in, 1.0f, w, n_in, x, 1, 0.0f, y, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n_out, n_in, 1.0f, x, n_in, w, n_in,
                    0.0f, y, n_out);
    return GQ_OK;
}

// matmul for the matrices of one input (q, k, v; gate, up): rotated matrices
// read the input rotated once, in c->xr (*have: the rotation it holds; the
// caller resets it for every new input).
static enum gq_status matmul_in(struct gq_context *c, const struct gq_rot **have, float *y, const float *x, const float *w,
                                const struct gq_qweight *q, int n, int n_in, int n_out) {
    const struct gq_rot *R = q ? gq_qweight_rot(q) : NULL;
    if (!R) return matmul(y, x, w, q, n, n_in, n_out);
    if (!c->xr || n * (size_t)n_in > c->xr_n) {
        free(c->xr);
        if (!(c->xr = malloc(sizeof(float) * (size_t)n * n_in))) return c->xr_n = 0, gq_fail(GQ_ERR_NOMEM, "rotated input of %d tokens", n);
        c->xr_n = (size_t)n * n_in;
        *have = NULL;
    }
    if (!gq_rot_same(R, *have)) gq_rot_rows(R, x, c->xr, n), *have = R;
    return gq_qmatmul_rotated(y, c->xr, q, n);
}

static void rmsnorm(float *out, const float *x, const float *w, int n, int dim, float eps) {
#pragma omp parallel for if (n > 1)
    for (int i = 0; i < n; i++) gq_vrmsnorm(out + (size_t)i * dim, x + (size_t)i * dim, w, dim, eps);
}

void gq_final_norm(const struct gq_model *m, const float *x, int n, float *out) {
    rmsnorm(out, x, m->output_norm, n, m->hp.dim, m->hp.rms_eps);
}

// The RoPE cos / sin of scratch rows 0..n-1 at positions pos0..pos0+n-1
// (pos_of: at positions pos_of[i]), computed only for rows whose position
// changed (c->rope_cs; cs[2j], cs[2j + 1] of frequency j).
static void rope_table(struct gq_context *c, int n, int pos0, const int *pos_of) {
    const int rd = c->m->hp.rope_dim, half = rd / 2;
#pragma omp parallel for if (n > 1)
    for (int i = 0; i < n; i++) {
        const int pos = pos_of ? pos_of[i] : pos0 + i;
        if (c->rope_pos[i] == pos) continue;
        float *cs = c->rope_cs + (size_t)i * rd;
        for (int j = 0; j < half; j++) {
            const double a = (double)pos * c->inv_freq[j];
            cs[2 * j] = (float)cos(a), cs[2 * j + 1] = (float)sin(a);
        }
        c->rope_pos[i] = pos;
    }
}

// Rotates heads of x (n, n_heads*head_dim), row i by the cos / sin at
// cs + i · rope_dim (rope_table).
static void rope(float *x, int n, int n_heads, int head_dim, int rope_dim, bool interleaved, const float *cs) {
    int half = rope_dim / 2;
#pragma omp parallel for if (n > 1)
    for (int i = 0; i < n; i++) {
        const float *ci = cs + (size_t)i * rope_dim;
        for (int j = 0; j < half; j++) {
            float c = ci[2 * j], s = ci[2 * j + 1];
            for (int h = 0; h < n_heads; h++) {
                float *xh = x + ((size_t)i * n_heads + h) * head_dim;
                // interleaved: pairs (2j, 2j+1); rotate-half: pairs (j, j + half)
                int a0 = interleaved ? 2 * j : j, a1 = interleaved ? 2 * j + 1 : j + half;
                float x0 = xh[a0], x1 = xh[a1];
                xh[a0] = x0 * c - x1 * s;
                xh[a1] = x0 * s + x1 * c;
            }
        }
    }
}

double gq_rope_llama3_divisor(const struct gq_hparams *hp, int j) {
    // Llama 3.1: long wavelengths slowed by `factor`, short ones kept, smooth
    // interpolation between (transformers' _compute_llama3_parameters).
    const double f = pow((double)hp->rope_theta, -2.0 * j / hp->rope_dim), wavelen = 2 * M_PI / f;
    const double lo = hp->rope_low_freq_factor, hi = hp->rope_high_freq_factor, fac = hp->rope_factor;
    const double orig = hp->rope_orig_ctx;
    if (wavelen > orig / lo) return fac;
    if (wavelen < orig / hi) return 1;
    const double smooth = (orig / wavelen - lo) / (hi - lo);
    return 1 / ((1 - smooth) / fac + smooth);
}

static enum gq_status compute_inv_freq(struct gq_context *c) {
    const struct gq_hparams *hp = &c->m->hp;
    int half = hp->rope_dim / 2;
    c->inv_freq = malloc((size_t)half * sizeof(float));
    if (!c->inv_freq) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    for (int j = 0; j < half; j++) {
        double f = pow((double)hp->rope_theta, -2.0 * j / hp->rope_dim);
        if (c->m->rope_freq_factors) f /= c->m->rope_freq_factors[j];
        if (hp->rope_scaling == GQ_ROPE_SCALING_LINEAR && hp->rope_factor > 0) f /= hp->rope_factor;
        if (hp->rope_scaling == GQ_ROPE_SCALING_LLAMA3) f /= gq_rope_llama3_divisor(hp, j);
        c->inv_freq[j] = (float)f;
    }
    return GQ_OK;
}

static enum gq_status context_new(const struct gq_model *m, int n_ctx, bool cuda, struct gq_context **out) {
    *out = NULL;
    if (n_ctx <= 0) return gq_fail(GQ_ERR_ARG, "context length must be positive (got %d)", n_ctx);
    struct gq_context *c = calloc(1, sizeof *c);
    if (!c) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    c->m = m;
    c->n_ctx = n_ctx;
    size_t kv_dim = (size_t)m->hp.n_kv_heads * m->hp.head_dim, n;
    if (!gq_mul_ok((size_t)m->hp.n_layers * n_ctx, kv_dim, &n) || !gq_mul_ok(n, sizeof(float), &n)) {
        free(c);
        return gq_fail(GQ_ERR_NOMEM, "KV cache size overflows");
    }
    enum gq_status s = compute_inv_freq(c);
    if (s == GQ_OK && cuda) s = gq_cuda_lm_new(m, n_ctx, c->inv_freq, &c->dev);
    if (s == GQ_OK && !cuda) {
        c->k_cache = malloc(n);
        c->v_cache = malloc(n);
        if (!c->k_cache || !c->v_cache)
            s = gq_fail(GQ_ERR_NOMEM, "cannot allocate a KV cache of %.1f MiB for %d tokens", 2.0 * n / (1 << 20),
                        n_ctx);
    }
    if (s != GQ_OK) {
        gq_context_free(c);
        return s;
    }
    *out = c;
    return GQ_OK;
}

enum gq_status gq_context_new(const struct gq_model *m, int n_ctx, struct gq_context **out) {
    return context_new(m, n_ctx, false, out);
}

enum gq_status gq_context_new_device(const struct gq_model *m, int n_ctx, const char *device, struct gq_context **out) {
    *out = NULL;
    if (!device || !strcmp(device, "cpu")) return context_new(m, n_ctx, false, out);
    if (!strcmp(device, "cuda")) return context_new(m, n_ctx, true, out);
    return gq_fail(GQ_ERR_ARG, "unknown device '%s' (expected cpu or cuda)", device);
}

const float *gq_context_inv_freq(const struct gq_context *c) { return c->inv_freq; }

int gq_context_device_f32(const struct gq_context *c) { return gq_cuda_lm_n_f32(c->dev); }

#define ATT_TILE 128 // attention query rows per tile (see attention())

static void free_scratch(struct gq_context *c) {
    free(c->x); free(c->xb); free(c->q); free(c->k); free(c->v);
    free(c->att_out); free(c->hb); free(c->hb2); free(c->scores); free(c->xr); free(c->rope_cs); free(c->rope_pos);
    c->x = c->xb = c->q = c->k = c->v = c->att_out = c->hb = c->hb2 = c->scores = c->xr = c->rope_cs = NULL;
    c->rope_pos = NULL;
    c->xr_n = 0;
    c->n_cap = 0;
}

void gq_context_free(struct gq_context *c) {
    if (!c) return;
    free_scratch(c);
    free(c->dec), free(c->att_m), free(c->att_o), free(c->att_z);
    gq_cuda_lm_free(c->dev);
    free(c->k_cache);
    free(c->v_cache);
    free(c->inv_freq);
    free(c);
}

void gq_context_reset(struct gq_context *c) { c->pos = 0; }
void gq_context_truncate(struct gq_context *c, int pos) {
    if (pos >= 0 && pos < c->pos) c->pos = pos;
}
int gq_context_pos(const struct gq_context *c) { return c->pos; }

static enum gq_status ensure_scratch(struct gq_context *c, int n) {
    if (n <= c->n_cap && c->n_att >= omp_get_max_threads()) return GQ_OK;
    free_scratch(c);
    const struct gq_hparams *hp = &c->m->hp;
    size_t q_dim = (size_t)hp->n_heads * hp->head_dim, kv_dim = (size_t)hp->n_kv_heads * hp->head_dim;
    size_t N = (size_t)n;
    c->x = malloc(N * hp->dim * sizeof(float));
    c->xb = malloc(N * ((size_t)hp->dim > q_dim ? (size_t)hp->dim : q_dim) * sizeof(float));
    c->q = malloc(N * q_dim * sizeof(float));
    c->k = malloc(N * kv_dim * sizeof(float));
    c->v = malloc(N * kv_dim * sizeof(float));
    c->att_out = malloc(N * q_dim * sizeof(float));
    c->hb = malloc(N * hp->hidden_dim * sizeof(float));
    c->hb2 = malloc(N * hp->hidden_dim * sizeof(float));
    c->n_att = omp_get_max_threads(); // one score block per thread
    c->scores = malloc((size_t)c->n_att * (N < ATT_TILE ? N : ATT_TILE) * (size_t)c->n_ctx * sizeof(float));
    c->rope_cs = malloc(N * (hp->rope_dim > 0 ? hp->rope_dim : 1) * sizeof(float));
    c->rope_pos = malloc(N * sizeof(int));
    if (!c->x || !c->xb || !c->q || !c->k || !c->v || !c->att_out || !c->hb || !c->hb2 || !c->scores || !c->rope_cs ||
        !c->rope_pos) {
        free_scratch(c);
        return gq_fail(GQ_ERR_NOMEM, "cannot allocate scratch for a batch of %d tokens", n);
    }
    for (int i = 0; i < n; i++) c->rope_pos[i] = -1;
    c->n_cap = n;
    return GQ_OK;
}

// Softmax of one query's scores s over keys [0, T) where it sees only
// [a0, b0) and [a1, b1) (b0 <= a1; a0 == b0: one range); the other scores
// become 0. One range [0, b1) takes exactly the operations of a plain
// causal row.
static void softmax_ranges(float *s, int T, int a0, int b0, int a1, int b1) {
    float mx = gq_vmax(s + a1, b1 - a1);
    if (b0 > a0) mx = fmaxf(mx, gq_vmax(s + a0, b0 - a0));
    double z = gq_vexp_shift(s + a1, b1 - a1, mx);
    if (b0 > a0) z += gq_vexp_shift(s + a0, b0 - a0, mx);
    const float inv = (float)(1.0 / z);
    gq_vscale(s + a1, b1 - a1, inv);
    if (b0 > a0) gq_vscale(s + a0, b0 - a0, inv);
    memset(s, 0, sizeof(float) * (size_t)a0);
    if (a1 > b0) memset(s + b0, 0, sizeof(float) * (size_t)(a1 - b0));
    if (T > b1) memset(s + b1, 0, sizeof(float) * (size_t)(T - b1));
}

// Causal attention of n new queries (positions pos0..) over the cache 0..pos0+n-1.
// Work items: (head, tile of ATT_TILE query rows), over the threads of one
// region; a tile only multiplies against the keys it can see (0..pos0+i1-1),
// which halves a long prefill's attention work. In the region OpenBLAS runs
// serially, in each thread's own score block.
// kv: the context whose cache holds the keys/values; q (n, q_dim) and
// out (n, q_dim) rows; S: n_att blocks of min(n, ATT_TILE) x n_ctx scores.
// lay (gq_forward_rows): query i sees only the cache rows its layout names;
// a tile multiplies against keys from the first one any of its rows sees.
static void attention(const struct gq_context *kv, const float *q, float *out, float *S, int layer, int n,
                      int pos0, const struct gq_rows_layout *lay) {
    const struct gq_context *c = kv;
    const struct gq_hparams *hp = &c->m->hp;
    const int hd = hp->head_dim, q_dim = hp->n_heads * hd, kv_dim = hp->n_kv_heads * hd;
    const int group = hp->n_heads / hp->n_kv_heads, ntile = (n + ATT_TILE - 1) / ATT_TILE;
    const size_t sblock = (size_t)(n < ATT_TILE ? n : ATT_TILE) * c->n_ctx;
    const float *kc = c->k_cache + (size_t)layer * c->n_ctx * kv_dim;
    const float *vc = c->v_cache + (size_t)layer * c->n_ctx * kv_dim;
    const float scale = 1.0f / sqrtf((float)hd);
    const int nitem = hp->n_heads * ntile;
#pragma omp parallel if (nitem > 1)
    {
        float *Sb = S + (size_t)omp_get_thread_num() * sblock;
#pragma omp for schedule(dynamic, 1)
        for (int it = 0; it < nitem; it++) {
            const int h = it / ntile, i0 = (it % ntile) * ATT_TILE, g = h / group;
            const int m = n - i0 < ATT_TILE ? n - i0 : ATT_TILE, T = pos0 + i0 + m;
            int k0 = 0; // first key of the tile
            if (lay) {
                k0 = T;
                for (int i = i0; i < i0 + m; i++) {
                    const int f = lay->hi0[i] > lay->lo0[i] ? lay->lo0[i] : lay->lo1[i];
                    k0 = f < k0 ? f : k0;
                }
            }
            const int W = T - k0;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, W, hd, scale, q + (size_t)i0 * q_dim + h * hd,
                        q_dim, kc + (size_t)k0 * kv_dim + g * hd, kv_dim, 0.0f, Sb, W);
            for (int i = 0; i < m; i++) {
                float *s = Sb + (size_t)i * W;
                const int last = pos0 + i0 + i; // causal: keys 0..last
                if (lay) {
                    const int r = i0 + i, a1 = lay->lo1[r] - k0;
                    const bool two = lay->hi0[r] > lay->lo0[r]; // (an empty first range may lie before k0)
                    softmax_ranges(s, W, two ? lay->lo0[r] - k0 : a1, two ? lay->hi0[r] - k0 : a1, a1, last + 1 - k0);
                } else
                    softmax_ranges(s, W, 0, 0, 0, last + 1);
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, hd, W, 1.0f, Sb, W, vc + (size_t)k0 * kv_dim + g * hd,
                        kv_dim, 0.0f, out + (size_t)i0 * q_dim + h * hd, q_dim);
        }
    }
}

static void add_bias(float *x, const float *b, int n, int dim) {
    if (!b) return;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < dim; j++) x[(size_t)i * dim + j] += b[j];
}

// One decoder block on x (n, dim). seqs NULL: the n rows are consecutive
// tokens of c's sequence at pos0..pos0+n-1. Otherwise row i is the token at
// position pos0 of sequence seqs[i] (lockstep decode): RoPE, the KV cache
// and attention are per row, everything else is batched in c's scratch.
static enum gq_status block_forward(struct gq_context *c, struct gq_context *const *seqs, int l,
                                    const struct gq_layer_w *L, float *x, int n, int pos0,
                                    const struct gq_block_hooks *hooks, const struct gq_rows_layout *lay) {
    const struct gq_hparams *hp = &c->m->hp;
    GQ_TRY(ensure_scratch(c, n));
    int dim = hp->dim, hd = hp->head_dim, q_dim = hp->n_heads * hd, kv_dim = hp->n_kv_heads * hd;
    int ffn = hp->hidden_dim;
    // Each linear group's input goes to the hook before use; stop_after ends
    // the block right there, for calibration passes.
#define CAPTURE(which, buf, width)                                                  \
    if (hooks && hooks->capture) hooks->capture(hooks->user, l, which, buf, n, width, x); \
    if (hooks && hooks->stop_after == (which)) return GQ_OK;

    const float *att = c->att_out, *down_in = c->hb;
    if (hooks && hooks->start_at == GQ_IN_FFN) goto ffn;
    if (hooks && hooks->start_at == GQ_IN_ATTN_OUT) {
        att = hooks->att_in;
        goto attn_out;
    }
    if (hooks && hooks->start_at == GQ_IN_FFN_DOWN) {
        down_in = hooks->hb_in;
        goto ffn_down;
    }
    rmsnorm(c->xb, x, L->attn_norm, n, dim, hp->rms_eps);
    CAPTURE(GQ_IN_ATTN, c->xb, dim);
    const struct gq_rot *hv = NULL; // what c->xr holds (matmul_in)
    GQ_TRY(matmul_in(c, &hv, c->q, c->xb, L->wq, L->q_wq, n, dim, q_dim));
    GQ_TRY(matmul_in(c, &hv, c->k, c->xb, L->wk, L->q_wk, n, dim, kv_dim));
    GQ_TRY(matmul_in(c, &hv, c->v, c->xb, L->wv, L->q_wv, n, dim, kv_dim));
    add_bias(c->q, L->bq, n, q_dim);
    add_bias(c->k, L->bk, n, kv_dim);
    add_bias(c->v, L->bv, n, kv_dim);
    if (!seqs) {
        rope_table(c, n, pos0, lay ? lay->pos : NULL);
        rope(c->q, n, hp->n_heads, hd, hp->rope_dim, hp->rope_interleaved, c->rope_cs);
        rope(c->k, n, hp->n_kv_heads, hd, hp->rope_dim, hp->rope_interleaved, c->rope_cs);
        memcpy(c->k_cache + ((size_t)l * c->n_ctx + pos0) * kv_dim, c->k, (size_t)n * kv_dim * sizeof(float));
        memcpy(c->v_cache + ((size_t)l * c->n_ctx + pos0) * kv_dim, c->v, (size_t)n * kv_dim * sizeof(float));
        attention(c, c->q, c->att_out, c->scores, l, n, pos0, lay);
    } else {
        rope_table(c, 1, pos0, NULL); // every row at pos0
        for (int i = 0; i < n; i++) {
            struct gq_context *s = seqs[i];
            float *qi = c->q + (size_t)i * q_dim, *ki = c->k + (size_t)i * kv_dim, *vi = c->v + (size_t)i * kv_dim;
            rope(qi, 1, hp->n_heads, hd, hp->rope_dim, hp->rope_interleaved, c->rope_cs);
            rope(ki, 1, hp->n_kv_heads, hd, hp->rope_dim, hp->rope_interleaved, c->rope_cs);
            memcpy(s->k_cache + ((size_t)l * s->n_ctx + pos0) * kv_dim, ki, (size_t)kv_dim * sizeof(float));
            memcpy(s->v_cache + ((size_t)l * s->n_ctx + pos0) * kv_dim, vi, (size_t)kv_dim * sizeof(float));
            attention(s, qi, c->att_out + (size_t)i * q_dim, c->scores, l, 1, pos0, NULL);
        }
    }
attn_out:
    CAPTURE(GQ_IN_ATTN_OUT, att, q_dim);
    GQ_TRY(matmul(c->xb, att, L->wo, L->q_wo, n, q_dim, dim));
    for (size_t i = 0; i < (size_t)n * dim; i++) x[i] += c->xb[i];

ffn:
    rmsnorm(c->xb, x, L->ffn_norm, n, dim, hp->rms_eps);
    CAPTURE(GQ_IN_FFN, c->xb, dim);
    const struct gq_rot *hf = NULL;
    GQ_TRY(matmul_in(c, &hf, c->hb, c->xb, L->w_gate, L->q_w_gate, n, dim, ffn));
    GQ_TRY(matmul_in(c, &hf, c->hb2, c->xb, L->w_up, L->q_w_up, n, dim, ffn));
    // SwiGLU: silu(gate) * up, vectorised as in the decode path, a row per item
#pragma omp parallel for if (n > 1)
    for (int i = 0; i < n; i++) gq_vswiglu(c->hb + (size_t)i * ffn, c->hb2 + (size_t)i * ffn, ffn);
ffn_down:
    CAPTURE(GQ_IN_FFN_DOWN, down_in, ffn);
    GQ_TRY(matmul(c->xb, down_in, L->w_down, L->q_w_down, n, ffn, dim));
    for (size_t i = 0; i < (size_t)n * dim; i++) x[i] += c->xb[i];
#undef CAPTURE
    return GQ_OK;
}

enum gq_status gq_block_forward(struct gq_context *c, int l, const struct gq_layer_w *L, float *x, int n,
                                int pos0, const struct gq_block_hooks *hooks) {
    if (n <= 0 || pos0 < 0 || pos0 + n > c->n_ctx)
        return gq_fail(GQ_ERR_ARG, "block forward: %d tokens at position %d exceed the context of %d", n, pos0, c->n_ctx);
    if (c->dev) return gq_fail(GQ_ERR_UNSUPPORTED, "block forward: not on a CUDA context (only gq_forward runs there)");
    return block_forward(c, NULL, l, L, x, n, pos0, hooks, NULL);
}

enum gq_status gq_forward_lockstep(struct gq_context *batch, struct gq_context *const *seqs, int n,
                                   const int32_t *tokens, float *logits) {
    const struct gq_model *m = batch->m;
    const struct gq_hparams *hp = &m->hp;
    if (n <= 0) return gq_fail(GQ_ERR_ARG, "lockstep forward: no sequences");
    if (batch->dev || seqs[0]->dev) return gq_fail(GQ_ERR_UNSUPPORTED, "lockstep forward: not on a CUDA context");
    int pos = seqs[0]->pos;
    for (int i = 0; i < n; i++) {
        if (seqs[i]->m != m || seqs[i]->pos != pos)
            return gq_fail(GQ_ERR_ARG, "lockstep forward: sequence %d is at position %d, sequence 0 at %d", i,
                           seqs[i]->pos, pos);
        if (pos >= seqs[i]->n_ctx)
            return gq_fail(GQ_ERR_ARG, "lockstep forward: sequence %d is full (%d tokens)", i, seqs[i]->n_ctx);
    }
    if (batch->n_ctx < seqs[0]->n_ctx)
        return gq_fail(GQ_ERR_ARG, "lockstep forward: batch context (%d) shorter than the sequences' (%d)",
                       batch->n_ctx, seqs[0]->n_ctx);
    GQ_TRY(ensure_scratch(batch, n));
    GQ_TRY(gq_embed(m, tokens, n, batch->x));
    for (int l = 0; l < hp->n_layers; l++) GQ_TRY(block_forward(batch, seqs, l, &m->layers[l], batch->x, n, pos, NULL, NULL));
    for (int i = 0; i < n; i++) seqs[i]->pos++;
    rmsnorm(batch->xb, batch->x, m->output_norm, n, hp->dim, hp->rms_eps);
    GQ_TRY(matmul(logits, batch->xb, m->output, m->q_output, n, hp->dim, hp->n_vocab));
    return GQ_OK;
}

// n tokens (checked by the caller) through the blocks, appended to the KV
// cache, laid out by lay (NULL: consecutive); logits (n_out, n_vocab) of
// rows out[0..n_out) (out NULL: the last n_out rows).
static enum gq_status prefill(struct gq_context *c, const int32_t *tokens, int n, const struct gq_rows_layout *lay,
                              const int *out, int n_out, float *logits) {
    const struct gq_model *m = c->m;
    const struct gq_hparams *hp = &m->hp;
    GQ_TRY(ensure_scratch(c, n));
    GQ_TRY(gq_embed(m, tokens, n, c->x));
    for (int l = 0; l < hp->n_layers; l++) GQ_TRY(block_forward(c, NULL, l, &m->layers[l], c->x, n, c->pos, NULL, lay));
    c->pos += n;
    if (n_out == 0) return GQ_OK;
    const int dim = hp->dim;
    if (!out) rmsnorm(c->xb, c->x + (size_t)(n - n_out) * dim, m->output_norm, n_out, dim, hp->rms_eps);
    else
        for (int k = 0; k < n_out; k++) rmsnorm(c->xb + (size_t)k * dim, c->x + (size_t)out[k] * dim, m->output_norm, 1, dim, hp->rms_eps);
    return matmul(logits, c->xb, m->output, m->q_output, n_out, dim, hp->n_vocab);
}

enum gq_status gq_forward_rows(struct gq_context *c, const int32_t *tokens, int n, const struct gq_rows_layout *lay,
                               const int *out, int n_out, float *logits) {
    if (n <= 0) return gq_fail(GQ_ERR_ARG, "forward: no tokens");
    if (c->dev) return gq_fail(GQ_ERR_UNSUPPORTED, "forward with a row layout: not on a CUDA context");
    if (c->pos + n > c->n_ctx)
        return gq_fail(GQ_ERR_ARG, "forward: %d tokens at position %d exceed the context of %d", n, c->pos, c->n_ctx);
    for (int i = 0; i < n; i++)
        if (lay->pos[i] < 0 || lay->lo0[i] < 0 || lay->lo0[i] > lay->hi0[i] || lay->hi0[i] > lay->lo1[i] ||
            lay->lo1[i] > c->pos + i)
            return gq_fail(GQ_ERR_ARG, "forward: row %d: position %d, keys [%d, %d) and [%d, %d] are not a layout", i,
                           lay->pos[i], lay->lo0[i], lay->hi0[i], lay->lo1[i], c->pos + i);
    for (int k = 0; k < n_out; k++)
        if (out[k] < 0 || out[k] >= n) return gq_fail(GQ_ERR_ARG, "forward: logits of row %d of %d", out[k], n);
    return prefill(c, tokens, n, lay, out, n_out, logits);
}

// ---------------------------------------------------------------------------
// Decode step: one token through the whole model in one parallel region.
// Every operation is split by rows (GEMVs: gq_qgemv_share) or heads across
// the region's threads, with a spinning barrier where a result is read by
// other threads; small row-wise steps (RMSNorm of the 576-wide residual) run
// in every thread into its own row, which saves a barrier. The o and down
// projections add into the residual x directly.

// y[r0, r1) of W x (+ y with accumulate): the compressed kernels, or f32
// rows by OpenBLAS (serial inside a parallel region). A rotated matrix reads
// R x from the thread's xr, which holds the input rotated by *have (NULL:
// nothing yet; the caller resets it for every new input), so the matrices
// of one input rotate it once.
static enum gq_status gemv_part(float *y, const float *x, const float *w, const struct gq_qweight *q, int rows, int cols,
                                int ith, int nth, bool accumulate, float *xr, const struct gq_rot **have) {
    int r0, r1;
    if (q) {
        const struct gq_rot *R = gq_qweight_rot(q);
        if (R && !gq_rot_same(R, *have)) {
            memcpy(xr, x, sizeof(float) * cols);
            gq_rot_apply(R, xr);
            *have = R;
        }
        gq_qgemv_share(q, ith, nth, &r0, &r1);
        return gq_qgemv_rows(y, R ? xr : x, q, r0, r1, accumulate);
    }
    r0 = (int)((int64_t)rows * ith / nth), r1 = (int)((int64_t)rows * (ith + 1) / nth);
    if (r1 > r0)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, r1 - r0, cols, 1.0f, w + (size_t)r0 * cols, cols, x, 1,
                    accumulate ? 1.0f : 0.0f, y + r0, 1);
    return GQ_OK;
}

// RoPE of one head with the token's cos / sin (cs[2j], cs[2j + 1]: a row of
// rope_table).
static void rope_head(float *xh, int rope_dim, bool interleaved, const float *cs) {
    const int half = rope_dim / 2;
    for (int j = 0; j < half; j++) {
        const float c = cs[2 * j], s = cs[2 * j + 1];
        const int a0 = interleaved ? 2 * j : j, a1 = interleaved ? 2 * j + 1 : j + half;
        const float x0 = xh[a0], x1 = xh[a1];
        xh[a0] = x0 * c - x1 * s;
        xh[a1] = x0 * s + x1 * c;
    }
}

static enum gq_status forward_decode(struct gq_context *c, int32_t token, float *logits) {
    const struct gq_model *m = c->m;
    const struct gq_hparams *hp = &m->hp;
    const int dim = hp->dim, hd = hp->head_dim, q_dim = hp->n_heads * hd, kv_dim = hp->n_kv_heads * hd;
    const int ffn = hp->hidden_dim, group = hp->n_heads / hp->n_kv_heads, pos = c->pos;
    GQ_TRY(ensure_scratch(c, 1));
    const int maxd = dim > ffn ? (dim > q_dim ? dim : q_dim) : (ffn > q_dim ? ffn : q_dim); // widest GEMV input
    const int nt = omp_get_max_threads(), w = 2 * maxd + group * c->n_ctx + 16;
    if (nt > c->dec_nt || w > c->dec_w) {
        free(c->dec), free(c->att_m), free(c->att_o), free(c->att_z);
        c->dec = malloc(sizeof(float) * (size_t)nt * w);
        c->att_m = malloc(sizeof(float) * (size_t)nt * hp->n_heads);
        c->att_o = malloc(sizeof(float) * (size_t)nt * q_dim);
        c->att_z = malloc(sizeof(double) * (size_t)nt * hp->n_heads);
        if (!c->dec || !c->att_m || !c->att_o || !c->att_z) {
            c->dec_nt = 0;
            return gq_fail(GQ_ERR_NOMEM, "decode scratch of %d threads", nt);
        }
        c->dec_nt = nt, c->dec_w = w;
    }
    GQ_TRY(gq_embed(m, &token, 1, c->x));
    const float scale = 1.0f / sqrtf((float)hd);
    rope_table(c, 1, pos, NULL); // the position's RoPE cos / sin, once for every head and layer
    const float *cs = c->rope_cs;
    enum gq_status err = GQ_OK;
    char msg[512] = "";
#define STEP(call)                                                                             \
    do {                                                                                       \
        enum gq_status s_ = (call);                                                            \
        if (s_ != GQ_OK)                                                                       \
            _Pragma("omp critical(gq_decode_err)") if (err == GQ_OK) err = s_,                 \
                snprintf(msg, sizeof msg, "%s", gq_last_error());                              \
    } while (0)
#pragma omp parallel num_threads(nt)
    {
        const int ith = omp_get_thread_num(), nth = omp_get_num_threads();
        float *xn = c->dec + (size_t)ith * c->dec_w, *xr = xn + maxd, *sc = xr + maxd;
        const struct gq_rot *hv; // what xr holds (gemv_part)
        struct gq_barrier *bar = &c->bar;
        for (int l = 0; l < hp->n_layers; l++) {
            const struct gq_layer_w *L = &m->layers[l];
            float *kc = c->k_cache + (size_t)l * c->n_ctx * kv_dim, *vc = c->v_cache + (size_t)l * c->n_ctx * kv_dim;
            gq_vrmsnorm(xn, c->x, L->attn_norm, dim, hp->rms_eps);
            hv = NULL;
            STEP(gemv_part(c->q, xn, L->wq, L->q_wq, q_dim, dim, ith, nth, false, xr, &hv));
            STEP(gemv_part(c->k, xn, L->wk, L->q_wk, kv_dim, dim, ith, nth, false, xr, &hv));
            STEP(gemv_part(c->v, xn, L->wv, L->q_wv, kv_dim, dim, ith, nth, false, xr, &hv));
            gq_barrier_wait(bar, nth);
            // biases, RoPE and the cache row, one head at a time
            for (int g = ith; g < hp->n_kv_heads; g += nth) {
                float *kh = c->k + g * hd, *vh = c->v + g * hd;
                if (L->bk)
                    for (int j = 0; j < hd; j++) kh[j] += L->bk[g * hd + j];
                if (L->bv)
                    for (int j = 0; j < hd; j++) vh[j] += L->bv[g * hd + j];
                rope_head(kh, hp->rope_dim, hp->rope_interleaved, cs);
                memcpy(kc + (size_t)pos * kv_dim + g * hd, kh, sizeof(float) * hd);
                memcpy(vc + (size_t)pos * kv_dim + g * hd, vh, sizeof(float) * hd);
            }
            for (int h = ith; h < hp->n_heads; h += nth) {
                float *qh = c->q + h * hd;
                if (L->bq)
                    for (int j = 0; j < hd; j++) qh[j] += L->bq[h * hd + j];
                rope_head(qh, hp->rope_dim, hp->rope_interleaved, cs);
            }
            gq_barrier_wait(bar, nth);
            // attention: the positions split over the threads (each: every head over its
            // share, the query heads of a KV head together), then per head the partials combined
            {
                const int np = nth < 64 ? nth : 64, T = pos + 1;
                const int t0 = ith < np ? (int)((int64_t)T * ith / np) : T, t1 = ith < np ? (int)((int64_t)T * (ith + 1) / np) : T;
                for (int g = 0; g < hp->n_kv_heads; g++)
                    gq_attn_partial(c->q + (size_t)g * group * hd, group, kc + g * hd, vc + g * hd, t0, t1, hd, kv_dim, scale, sc,
                                    c->att_m + (size_t)ith * hp->n_heads + g * group,
                                    c->att_z + (size_t)ith * hp->n_heads + g * group,
                                    c->att_o + (size_t)ith * q_dim + (size_t)g * group * hd);
                gq_barrier_wait(bar, nth);
                for (int h = ith; h < hp->n_heads; h += nth) {
                    float mh[64];
                    double zh[64];
                    for (int p = 0; p < np; p++) mh[p] = c->att_m[(size_t)p * hp->n_heads + h], zh[p] = c->att_z[(size_t)p * hp->n_heads + h];
                    gq_attn_combine(np, mh, zh, c->att_o + (size_t)h * hd, q_dim, hd, c->att_out + h * hd);
                }
            }
            gq_barrier_wait(bar, nth);
            hv = NULL;
            STEP(gemv_part(c->x, c->att_out, L->wo, L->q_wo, dim, q_dim, ith, nth, true, xr, &hv));
            gq_barrier_wait(bar, nth);
            gq_vrmsnorm(xn, c->x, L->ffn_norm, dim, hp->rms_eps);
            hv = NULL;
            STEP(gemv_part(c->hb, xn, L->w_gate, L->q_w_gate, ffn, dim, ith, nth, false, xr, &hv));
            STEP(gemv_part(c->hb2, xn, L->w_up, L->q_w_up, ffn, dim, ith, nth, false, xr, &hv));
            gq_barrier_wait(bar, nth);
            {
                const int a = (int)((int64_t)ffn * ith / nth), e = (int)((int64_t)ffn * (ith + 1) / nth);
                gq_vswiglu(c->hb + a, c->hb2 + a, e - a);
            }
            gq_barrier_wait(bar, nth);
            hv = NULL;
            STEP(gemv_part(c->x, c->hb, L->w_down, L->q_w_down, dim, ffn, ith, nth, true, xr, &hv));
            gq_barrier_wait(bar, nth);
        }
        if (logits) {
            gq_vrmsnorm(xn, c->x, m->output_norm, dim, hp->rms_eps);
            hv = NULL;
            STEP(gemv_part(logits, xn, m->output, m->q_output, hp->n_vocab, dim, ith, nth, false, xr, &hv));
        }
    }
#undef STEP
    if (err != GQ_OK) return gq_fail(err, "%s", msg);
    c->pos++;
    return GQ_OK;
}

enum gq_status gq_forward(struct gq_context *c, const int32_t *tokens, int n, float *logits,
                          bool all_logits) {
    if (n <= 0) return gq_fail(GQ_ERR_ARG, "forward: no tokens");
    if (c->pos + n > c->n_ctx)
        return gq_fail(GQ_ERR_ARG, "forward: %d tokens at position %d exceed the context of %d", n, c->pos, c->n_ctx);
    if (c->dev) {
        GQ_TRY(gq_cuda_lm_forward(c->dev, tokens, n, c->pos, logits, all_logits));
        c->pos += n;
        return GQ_OK;
    }
    if (n == 1) return forward_decode(c, tokens[0], logits);
    return prefill(c, tokens, n, NULL, NULL, !logits ? 0 : all_logits ? n : 1, logits);
}
