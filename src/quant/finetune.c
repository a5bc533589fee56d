// finetune.c - block-output fine-tuning of packed GPTVQ codebooks
// (--finetune N; the AQLM / VPTQ step, issue 24).
//
// GPTVQ's exact codebook update solves each linear's own problem
// min ‖(W − Q)X‖²_H. Once a whole block is quantized, its linears' errors
// interact: through the residual add, the FFN's RMSNorm and the SwiGLU. Here,
// with every assignment (index, normalisation code) fixed, the codebooks of
// all seven linears take N steps of Adam on the block's output error over
// the calibration windows:
//     L = Σ_t w_t ‖y_t − ŷ_t‖²,   w_t = dim / ‖ŷ_t‖² (first token × sink weight)
// y the quantized block's output, ŷ the source block's output on the same
// (quantized model's) inputs; w_t makes it each token's error relative to the
// residual stream that the next RMSNorm rescales (attention-sink tokens carry
// activations 10²..10⁵ times the others and would otherwise own L).
// The block's forward and backward passes are written out here (attention
// with RoPE and GQA, SwiGLU, RMSNorm) as model/forward.c computes them; the
// gradients are checked against central differences (test_gptq [11]).
// The codebooks are then rounded to their stored format (int8 with a scale),
// and the result is kept only if L over the first FT_EVAL windows (all when
// fewer) is lower than before: fine-tuning never raises the block objective
// measured there. (Measured on every window, the two evaluations cost more
// than the steps themselves with 128 windows.)
#include "format/vqpack.h"
#include "format/vqtensor.h"
#include "model/arch.h"
#include "model/model.h"
#include "quant/quant.h"
#include "quant/vq.h"
#include "util/common.h"
#include "util/hadamard.h"

#include <cblas.h>
#include <stddef.h>

enum { FT_Q, FT_K, FT_V, FT_O, FT_GATE, FT_UP, FT_DOWN, FT_N };
enum { FT_EVAL = 32 }; // windows the keep-or-not decision is measured on

struct ft_lin {
    const struct gq_block_tensor *t;
    int rows, cols;
    float *W, *dW;           // decoded (rows, cols), its gradient
    bool tuned;              // a packed codebook tensor (not codebook SVD)
    struct gq_vq_tensor vt;
    struct gq_vq_maps mp;
    float *m1, *m2;          // Adam moments
    float *lr;               // per codebook (stage, group): step size
    struct gq_rot R;         // a rotated matrix's rotation (vt.rot), else zero
    float *rw;               // with R: one gradient row in the stored basis
    size_t ncb;              // stages · groups · k · d
};

static void decode_into(struct ft_lin *f) { gq_vq_decode(&f->vt, f->W); }

// ∂L/∂cb from ∂L/∂W: the decode rule's adjoint (vqtensor.h: gq_vq_vec_decode;
// a rotated matrix W = W' R: ∂L/∂W' = ∂L/∂W Rᵀ, each row rotated by R).
static void cb_grad(const struct ft_lin *f, float *g) {
    const struct gq_vq_tensor *t = &f->vt;
    const int d = t->d, nv = (t->cols - t->n_out) / d;
    memset(g, 0, sizeof(float) * f->ncb);
    for (int r = 0; r < t->rows; r++) {
        const float *dw = f->dW + (size_t)r * t->cols;
        if (f->rw) {
            memcpy(f->rw, dw, sizeof(float) * t->cols);
            gq_rot_apply(&f->R, f->rw);
            dw = f->rw;
        }
        for (int v = 0; v < nv; v++) {
            const int rt = f->mp.row_rt[r], ct = f->mp.vec_ct[v];
            const float s = gq_vq_vec_scale(t, &f->mp, r, v);
            for (int st = 0; st < t->stages; st++) {
                const size_t idx = t->idx[((size_t)st * t->rows + r) * nv + v];
                float *gc = g + ((((size_t)st * t->n_rt + rt) * t->n_ct + ct) * t->k + idx) * d;
                for (int j = 0; j < d; j++) gc[j] += s * dw[t->perm[t->n_out + v * d + j]];
            }
        }
    }
}

// Every codebook rounded to its stored format (int8 codes · fp16 scale).
static void cb_round_all(struct ft_lin *f) {
    struct gq_vq_tensor *t = &f->vt;
    const int kd = t->k * t->d;
    double *c = malloc(sizeof(double) * kd);
    if (!c) return; // left unrounded: only the keep test below sees it, and it is then rejected by size
    const size_t ng = f->ncb / kd;
    for (size_t g = 0; g < ng; g++) {
        for (int i = 0; i < kd; i++) c[i] = t->cb[g * kd + i];
        gq_cb_round(c, kd, t->cb_format, NULL, NULL, &t->cb_scale[g]);
        for (int i = 0; i < kd; i++) t->cb[g * kd + i] = (float)c[i];
    }
    free(c);
}

// Scratch of one window (n tokens), carved from one allocation (mem).
struct ft_buf {
    float *mem;
    float *ua, *inva, *q, *k, *v, *P, *att, *h1, *u, *inv, *a, *b, *mm, *y, *dy, *dmm, *du, *dh1, *datt, *dq, *dk, *dv, *dP;
};

static bool buf_alloc(struct ft_buf *B, const struct gq_ft_shape *sh) {
    const size_t n = sh->n, per = n * sh->dim, qd = (size_t)sh->n_heads * sh->head_dim;
    const size_t kvd = (size_t)sh->n_kv_heads * sh->head_dim, pf = n * sh->ffn;
    const struct {
        float **p;
        size_t size;
    } part[] = {{&B->ua, per},     {&B->inva, n},    {&B->q, n * qd},   {&B->k, n * kvd},  {&B->v, n * kvd},
                {&B->P, sh->n_heads * n * n},       {&B->att, n * qd}, {&B->h1, per},     {&B->u, per},
                {&B->inv, n},      {&B->a, pf},      {&B->b, pf},       {&B->mm, pf},      {&B->y, per},
                {&B->dy, per},     {&B->dmm, pf},    {&B->du, per},     {&B->dh1, per},    {&B->datt, n * qd},
                {&B->dq, n * qd},  {&B->dk, n * kvd}, {&B->dv, n * kvd}, {&B->dP, n * n}};
    size_t total = 0;
    for (size_t i = 0; i < sizeof part / sizeof part[0]; i++) total += part[i].size;
    if (!(B->mem = malloc(sizeof(float) * total))) return false;
    for (size_t i = 0, o = 0; i < sizeof part / sizeof part[0]; o += part[i].size, i++) *part[i].p = B->mem + o;
    return true;
}

static void buf_free(struct ft_buf *B) { free(B->mem), B->mem = NULL; }

static inline float sigm(float a) { return 1.0f / (1.0f + expf(-a)); }

// RMSNorm of x (n, dim) times g into out; inv (n) the 1/rms.
static void rms_fwd(const float *x, const float *g, int n, int dim, float eps, float *out, float *inv) {
    for (int t = 0; t < n; t++) {
        const float *h = x + (size_t)t * dim;
        double ss = 0;
        for (int j = 0; j < dim; j++) ss += (double)h[j] * h[j];
        const float s = (float)(1.0 / sqrt(ss / dim + eps));
        inv[t] = s;
        for (int j = 0; j < dim; j++) out[(size_t)t * dim + j] = h[j] * s * g[j];
    }
}

// RoPE on x (n, heads · hd) at positions 0..n-1 (model/forward.c's rope);
// sign −1: the inverse rotation (the backward pass).
static void rope_apply(float *x, int n, int heads, const struct gq_ft_shape *sh, float sign) {
    const int half = sh->rope_dim / 2, hd = sh->head_dim;
    for (int t = 0; t < n; t++)
        for (int j = 0; j < half; j++) {
            const double an = (double)t * sh->inv_freq[j];
            const float c = (float)cos(an), s = sign * (float)sin(an);
            for (int h = 0; h < heads; h++) {
                float *xh = x + ((size_t)t * heads + h) * hd;
                const int a0 = sh->rope_interleaved ? 2 * j : j, a1 = sh->rope_interleaved ? 2 * j + 1 : j + half;
                const float x0 = xh[a0], x1 = xh[a1];
                xh[a0] = x0 * c - x1 * s;
                xh[a1] = x0 * s + x1 * c;
            }
        }
}

static void add_bias(float *x, const float *b, int n, int d) {
    for (int t = 0; b && t < n; t++)
        for (int j = 0; j < d; j++) x[(size_t)t * d + j] += b[j];
}

// One window through the block; with dW, the gradients are added to it.
// Returns Σ_t w_t ‖y_t − yref_t‖².
static double ft_window(const struct gq_ft_shape *sh, const float *const *W, float *const *dW, const float *x,
                        const float *yref, const float *w, struct ft_buf *B) {
    const int n = sh->n, dim = sh->dim, hd = sh->head_dim, qd = sh->n_heads * hd, kvd = sh->n_kv_heads * hd;
    const int ffn = sh->ffn, group = sh->n_heads / sh->n_kv_heads;
    const float scale = 1.0f / sqrtf((float)hd);
    const size_t nn = (size_t)n * n;
    // attention
    rms_fwd(x, sh->attn_norm, n, dim, sh->eps, B->ua, B->inva);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, qd, dim, 1.0f, B->ua, dim, W[FT_Q], dim, 0.0f, B->q, qd);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, kvd, dim, 1.0f, B->ua, dim, W[FT_K], dim, 0.0f, B->k, kvd);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, kvd, dim, 1.0f, B->ua, dim, W[FT_V], dim, 0.0f, B->v, kvd);
    add_bias(B->q, sh->bq, n, qd), add_bias(B->k, sh->bk, n, kvd), add_bias(B->v, sh->bv, n, kvd);
    rope_apply(B->q, n, sh->n_heads, sh, 1.0f), rope_apply(B->k, n, sh->n_kv_heads, sh, 1.0f);
    for (int h = 0; h < sh->n_heads; h++) {
        const int g = h / group;
        float *P = B->P + h * nn;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, hd, scale, B->q + h * hd, qd, B->k + g * hd, kvd,
                    0.0f, P, n);
        for (int i = 0; i < n; i++) { // causal softmax: keys 0..i
            float *r = P + (size_t)i * n, mx = r[0];
            for (int j = 1; j <= i; j++) mx = fmaxf(mx, r[j]);
            double z = 0;
            for (int j = 0; j <= i; j++) z += r[j] = expf(r[j] - mx);
            for (int j = 0; j <= i; j++) r[j] = (float)(r[j] / z);
            for (int j = i + 1; j < n; j++) r[j] = 0;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, hd, n, 1.0f, P, n, B->v + g * hd, kvd, 0.0f,
                    B->att + h * hd, qd);
    }
    // o, the residual, the FFN
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, dim, qd, 1.0f, B->att, qd, W[FT_O], qd, 0.0f, B->h1, dim);
    for (size_t i = 0; i < (size_t)n * dim; i++) B->h1[i] += x[i];
    rms_fwd(B->h1, sh->ffn_norm, n, dim, sh->eps, B->u, B->inv);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, ffn, dim, 1.0f, B->u, dim, W[FT_GATE], dim, 0.0f, B->a, ffn);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, ffn, dim, 1.0f, B->u, dim, W[FT_UP], dim, 0.0f, B->b, ffn);
    for (size_t i = 0; i < (size_t)n * ffn; i++) B->mm[i] = B->a[i] * sigm(B->a[i]) * B->b[i];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, dim, ffn, 1.0f, B->mm, ffn, W[FT_DOWN], ffn, 0.0f, B->y, dim);
    double loss = 0;
    for (int t = 0; t < n; t++)
        for (int j = 0; j < dim; j++) {
            const size_t i = (size_t)t * dim + j;
            const float e = B->y[i] + B->h1[i] - yref[i];
            loss += (double)w[t] * e * e;
            B->dy[i] = 2.0f * w[t] * e;
        }
    if (!dW) return loss;
    // backward: down, SwiGLU, gate / up, RMSNorm and the residual, o
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, dim, ffn, n, 1.0f, B->dy, dim, B->mm, ffn, 1.0f, dW[FT_DOWN], ffn);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, ffn, dim, 1.0f, B->dy, dim, W[FT_DOWN], ffn, 0.0f, B->dmm, ffn);
    for (size_t i = 0; i < (size_t)n * ffn; i++) { // a ← ∂L/∂a, b ← ∂L/∂b
        const float a = B->a[i], sg = sigm(a), dm = B->dmm[i];
        B->a[i] = dm * B->b[i] * sg * (1.0f + a * (1.0f - sg));
        B->b[i] = dm * a * sg;
    }
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ffn, dim, n, 1.0f, B->a, ffn, B->u, dim, 1.0f, dW[FT_GATE], dim);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ffn, dim, n, 1.0f, B->b, ffn, B->u, dim, 1.0f, dW[FT_UP], dim);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, dim, ffn, 1.0f, B->a, ffn, W[FT_GATE], dim, 0.0f, B->du, dim);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, dim, ffn, 1.0f, B->b, ffn, W[FT_UP], dim, 1.0f, B->du, dim);
    for (int t = 0; t < n; t++) {
        const float *h = B->h1 + (size_t)t * dim, *du = B->du + (size_t)t * dim, *gn = sh->ffn_norm;
        const float s = B->inv[t];
        double dot = 0;
        for (int j = 0; j < dim; j++) dot += (double)gn[j] * du[j] * h[j];
        const float c = (float)(dot * s * s * s / dim);
        for (int j = 0; j < dim; j++) {
            const size_t i = (size_t)t * dim + j;
            B->dh1[i] = B->dy[i] + gn[j] * du[j] * s - h[j] * c;
        }
    }
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, dim, qd, n, 1.0f, B->dh1, dim, B->att, qd, 1.0f, dW[FT_O], qd);
    // attention: per head dV += Pᵀ dO, dS = P ∘ (dP − rowsum(P ∘ dP)) with dP = dO Vᵀ, dQ = s dS K, dK += s dSᵀ Q
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, qd, dim, 1.0f, B->dh1, dim, W[FT_O], qd, 0.0f, B->datt, qd);
    memset(B->dk, 0, sizeof(float) * (size_t)n * kvd), memset(B->dv, 0, sizeof(float) * (size_t)n * kvd);
    for (int h = 0; h < sh->n_heads; h++) {
        const int g = h / group;
        const float *P = B->P + h * nn;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, hd, n, 1.0f, P, n, B->datt + h * hd, qd, 1.0f,
                    B->dv + g * hd, kvd);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, hd, 1.0f, B->datt + h * hd, qd, B->v + g * hd, kvd,
                    0.0f, B->dP, n);
        for (int i = 0; i < n; i++) {
            const float *p = P + (size_t)i * n;
            float *d = B->dP + (size_t)i * n;
            double rs = 0;
            for (int j = 0; j <= i; j++) rs += (double)p[j] * d[j];
            for (int j = 0; j < n; j++) d[j] = j <= i ? p[j] * (d[j] - (float)rs) : 0.0f;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, hd, n, scale, B->dP, n, B->k + g * hd, kvd, 0.0f,
                    B->dq + h * hd, qd);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, hd, n, scale, B->dP, n, B->q + h * hd, qd, 1.0f,
                    B->dk + g * hd, kvd);
    }
    rope_apply(B->dq, n, sh->n_heads, sh, -1.0f), rope_apply(B->dk, n, sh->n_kv_heads, sh, -1.0f);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, qd, dim, n, 1.0f, B->dq, qd, B->ua, dim, 1.0f, dW[FT_Q], dim);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kvd, dim, n, 1.0f, B->dk, kvd, B->ua, dim, 1.0f, dW[FT_K], dim);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kvd, dim, n, 1.0f, B->dv, kvd, B->ua, dim, 1.0f, dW[FT_V], dim);
    return loss;
}

double gq_finetune_block_loss(const struct gq_ft_shape *sh, const float *const W[7], float *const dW[7], const float *x,
                              const float *yref, const float *w) {
    struct ft_buf B = {0};
    double loss = buf_alloc(&B, sh) ? ft_window(sh, W, dW, x, yref, w, &B) : NAN;
    buf_free(&B);
    return loss;
}

static void ft_free(struct ft_lin *L, struct ft_buf *B) {
    for (int i = 0; i < FT_N; i++) {
        struct ft_lin *f = &L[i];
        free(f->dW), free(f->m1), free(f->m2), free(f->lr), free(f->rw), gq_rot_free(&f->R);
        if (f->tuned) free(f->W), gq_vq_tensor_free(&f->vt), gq_vq_maps_free(&f->mp);
    }
    buf_free(B);
}

// The windows of n_win the fine-tuning reads: *nb per step, taken in turn
// from window 0, and the first *n_eval for the keep-or-not decision; returns
// how many leading windows that is.
static int ft_windows(const struct gq_quantize_params *p, int n_win, int *nb, int *n_eval) {
    *nb = p->ft_batch > 0 && p->ft_batch < n_win ? p->ft_batch : n_win;
    *n_eval = n_win < FT_EVAL ? n_win : FT_EVAL;
    const int64_t n_train = (int64_t)p->finetune_steps * *nb;
    return n_train >= n_win ? n_win : n_train > *n_eval ? (int)n_train : *n_eval;
}

int gq_finetune_windows(const struct gq_quantize_params *p, int n_win) {
    int nb, n_eval;
    return ft_windows(p, n_win, &nb, &n_eval);
}

enum gq_status gq_finetune_block(struct gq_context *c, struct gq_model *m, int l, const struct gq_layer_w *src,
                                 const float *X, int n_win, int seqlen, float sink_weight,
                                 const struct gq_quantize_params *p, struct gq_finetune_report *rep) {
    memset(rep, 0, sizeof *rep);
    const double t0 = gq_time_s();
    const struct gq_arch *A = gq_arch_find(m->arch);
    if (!A || !m->packs) return gq_fail(GQ_ERR_ARG, "--finetune: packed GPTVQ output only");
    const int dim = m->hp.dim, n = seqlen;
    const size_t per = (size_t)n * dim;
    struct gq_layer_w *Lw = &m->layers[l];
    const struct gq_ft_shape sh = {.n = n, .dim = dim, .n_heads = m->hp.n_heads, .n_kv_heads = m->hp.n_kv_heads,
                                   .head_dim = m->hp.head_dim, .ffn = m->hp.hidden_dim, .rope_dim = m->hp.rope_dim,
                                   .rope_interleaved = m->hp.rope_interleaved, .eps = m->hp.rms_eps,
                                   .inv_freq = gq_context_inv_freq(c), .attn_norm = Lw->attn_norm,
                                   .ffn_norm = Lw->ffn_norm, .bq = Lw->bq, .bk = Lw->bk, .bv = Lw->bv};
    const size_t off[FT_N] = {offsetof(struct gq_layer_w, wq),     offsetof(struct gq_layer_w, wk),
                              offsetof(struct gq_layer_w, wv),     offsetof(struct gq_layer_w, wo),
                              offsetof(struct gq_layer_w, w_gate), offsetof(struct gq_layer_w, w_up),
                              offsetof(struct gq_layer_w, w_down)};
    struct ft_lin L[FT_N] = {0};
    struct ft_buf B = {0};
    float *yref = NULL, *w = NULL, *g = NULL;
    enum gq_status s = GQ_OK;
    for (int i = 0; i < A->n_tensors; i++)
        for (int k = 0; k < FT_N; k++)
            if (A->tensors[i].kind == GQ_T_LINEAR && A->tensors[i].offset == off[k]) {
                struct ft_lin *f = &L[k];
                f->t = &A->tensors[i];
                f->rows = (int)gq_dim_value(&m->hp, f->t->rows), f->cols = (int)gq_dim_value(&m->hp, f->t->cols);
                f->W = (float *)*gq_block_slot(Lw, f->t);
                const struct gq_vqpack *pk = &m->packs[(size_t)l * A->n_tensors + i];
                if (!pk->h.version || s != GQ_OK) continue;
                s = gq_vqpack_unpack(pk, f->t->name, &f->vt);
                if (s != GQ_OK) break;
                if (f->vt.svd_rank) { // the factors, not the codebooks, are stored: left as they are
                    gq_vq_tensor_free(&f->vt);
                    continue;
                }
                f->tuned = true;
                f->ncb = (size_t)f->vt.stages * f->vt.n_rt * f->vt.n_ct * f->vt.k * f->vt.d;
                f->W = malloc(sizeof(float) * (size_t)f->rows * f->cols);
                f->dW = malloc(sizeof(float) * (size_t)f->rows * f->cols);
                f->lr = malloc(sizeof(float) * f->ncb / (f->vt.k * f->vt.d));
                f->m1 = calloc(f->ncb, sizeof(float)), f->m2 = calloc(f->ncb, sizeof(float));
                if (!f->W || !f->dW || !f->m1 || !f->m2 || !f->lr || (f->vt.rot && !(f->rw = malloc(sizeof(float) * f->cols)))) {
                    s = gq_fail(GQ_ERR_NOMEM, "--finetune: out of memory");
                    break;
                }
                if (f->vt.rot && (s = gq_rot_init(&f->R, f->cols, f->vt.rot_seed)) != GQ_OK) break;
                s = gq_vq_maps_build(&f->vt, &f->mp);
                const int kd = f->vt.k * f->vt.d;
                for (size_t q = 0; q < f->ncb / kd; q++) { // steps relative to each codebook's range
                    float mx = 0;
                    for (int e = 0; e < kd; e++) mx = fmaxf(mx, fabsf(f->vt.cb[q * kd + e]));
                    f->lr[q] = (float)p->ft_lr * (mx > 0 ? mx : 1e-3f);
                }
                decode_into(f);
            }
    bool any = false;
    for (int k = 0; k < FT_N && s == GQ_OK; k++) {
        if (!L[k].t || !L[k].W) s = gq_fail(GQ_ERR_UNSUPPORTED, "--finetune: blk.%d lacks one of its seven linears", l);
        any |= L[k].tuned;
    }
    size_t gmax = 0;
    for (int k = 0; k < FT_N; k++) gmax = L[k].ncb > gmax ? L[k].ncb : gmax;
    // The steps read p->ft_batch windows each, taken in turn from window 0;
    // the keep-or-not decision is measured on the first FT_EVAL windows (all
    // when fewer). Only the windows either reads need the source's outputs.
    int nb, n_eval;
    const int n_used = ft_windows(p, n_win, &nb, &n_eval);
    const bool buf_ok = buf_alloc(&B, &sh);
    yref = malloc(sizeof(float) * (size_t)n_used * per);
    w = malloc(sizeof(float) * (size_t)n_used * n), g = malloc(sizeof(float) * (gmax ? gmax : 1));
    if (s == GQ_OK && (!buf_ok || !yref || !w || !g))
        s = gq_fail(GQ_ERR_NOMEM, "--finetune: out of memory for %d windows of %d tokens", n_used, n);
    if (s != GQ_OK || !any) goto done;

    // The source block's outputs and the token weights, once.
    for (int i = 0; i < n_used && s == GQ_OK; i++) {
        float *yr = yref + (size_t)i * per;
        memcpy(yr, X + i * per, sizeof(float) * per);
        s = gq_block_forward(c, l, src, yr, n, 0, NULL);
        for (int t = 0; t < n && s == GQ_OK; t++) {
            double ss = 0;
            for (int j = 0; j < dim; j++) ss += (double)yr[(size_t)t * dim + j] * yr[(size_t)t * dim + j];
            w[(size_t)i * n + t] = ss > 0 ? (float)(dim / ss) : 1.0f;
        }
        w[(size_t)i * n] *= sink_weight;
    }
    if (s != GQ_OK) goto done;
    const float *Wk[FT_N];
    float *dWk[FT_N];
    for (int k = 0; k < FT_N; k++) Wk[k] = L[k].W, dWk[k] = L[k].dW;
    for (int k = 0; k < FT_N; k++) // a fixed linear's gradient is computed too (unused)
        if (!L[k].tuned && !(dWk[k] = L[k].dW = malloc(sizeof(float) * (size_t)L[k].rows * L[k].cols)))
            s = gq_fail(GQ_ERR_NOMEM, "--finetune: out of memory");
    if (s != GQ_OK) goto done;
#define FT_WIN(i, grad)                                                                                          \
    ft_window(&sh, Wk, (grad) ? dWk : NULL, X + (size_t)(i) * per, yref + (size_t)(i) * per, w + (size_t)(i) * n, &B)
#define FT_ALL(acc)                                                                                              \
    for (int i = 0; i < n_eval; i++) acc += FT_WIN(i, false)
    double loss0 = 0;
    FT_ALL(loss0);
    rep->loss0 = loss0;
    // Adam (β 0.9 / 0.999) on minibatches of p->ft_batch windows, taken in turn.
    const float b1 = 0.9f, b2 = 0.999f;
    int next = 0;
    for (int step = 1; step <= p->finetune_steps; step++) {
        for (int k = 0; k < FT_N; k++) memset(L[k].dW, 0, sizeof(float) * (size_t)L[k].rows * L[k].cols);
        double loss = 0;
        for (int b = 0; b < nb; b++, next = (next + 1) % n_used) loss += FT_WIN(next, true);
        if (step == 1 || step == p->finetune_steps) rep->loss_steps[step == 1 ? 0 : 1] = loss * n_eval / nb;
        const float c1 = 1.0f - powf(b1, (float)step), c2 = 1.0f - powf(b2, (float)step);
        for (int k = 0; k < FT_N; k++) {
            struct ft_lin *f = &L[k];
            if (!f->tuned) continue;
            cb_grad(f, g);
            const int kd = f->vt.k * f->vt.d;
            for (size_t e = 0; e < f->ncb; e++) {
                f->m1[e] = b1 * f->m1[e] + (1 - b1) * g[e];
                f->m2[e] = b2 * f->m2[e] + (1 - b2) * g[e] * g[e];
                f->vt.cb[e] -= f->lr[e / kd] * (f->m1[e] / c1) / (sqrtf(f->m2[e] / c2) + 1e-12f);
            }
            decode_into(f);
        }
    }
    for (int k = 0; k < FT_N; k++)
        if (L[k].tuned) cb_round_all(&L[k]), decode_into(&L[k]);
    double loss1 = 0;
    FT_ALL(loss1);
#undef FT_ALL
#undef FT_WIN
    rep->loss1 = loss1, rep->steps = p->finetune_steps;
    rep->kept = isfinite(loss1) && loss1 < loss0;
    for (int k = 0; k < FT_N && s == GQ_OK && rep->kept; k++) {
        struct ft_lin *f = &L[k];
        if (!f->tuned) continue;
        const size_t pi = (size_t)l * A->n_tensors + (size_t)(f->t - A->tensors);
        // the old pack's buffer starts at its first part (vqpack.c); freed if the model owns it
        const void *old = NULL;
        for (int q = 0; q < GQ_VQP_COUNT && !old; q++) old = m->packs[pi].part[q];
        uint8_t *buf = NULL;
        s = gq_vqpack_pack(&f->vt, &m->packs[pi], &buf);
        if (s == GQ_OK) s = gq_model_own(m, buf);
        if (s == GQ_OK && old) gq_model_release(m, (void *)old);
        if (s == GQ_OK) memcpy((float *)*gq_block_slot(Lw, f->t), f->W, sizeof(float) * (size_t)f->rows * f->cols);
    }
done:
    ft_free(L, &B);
    free(yref), free(w), free(g);
    rep->seconds = gq_time_s() - t0;
    return s;
}
