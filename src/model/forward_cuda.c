// forward_cuda.c - the decoder on a CUDA device (gq_context_new_device) and
// the calibration passes' block weights (quant/engine.c with --device cuda):
// the model's linears, norms and shapes handed to the plug-in's decoder
// (backend/cuda.c, cuda_kernels.h).
#include "model/forward_cuda.h"
#include "backend/backend.h"
#include "backend/cuda_kernels.h"
#include "kern/qmatmul.h"
#include "model/model.h"

struct gq_cuda_lm {
    struct gqcu_lm *lm;
    const struct gq_model *m;
    float *x; // host embeddings of up to n_x tokens
    int n_x;
    int n_f32; // linears without a kernel for their format, uploaded decoded to f32
};

// A linear's device copy: its compressed form when a kernel takes it, else
// f32 (decoded from q, or w).
static enum gq_status linear(const float *w, const struct gq_qweight *q, int rows, int cols, struct gqcu_mat **out,
                             int *n_f32) {
    if (!q) return gq_cuda_mat_f32(rows, cols, w, out);
    enum gq_status s = gq_cuda_mat_new(q, out);
    if (s != GQ_ERR_UNSUPPORTED) return s;
    float *buf = malloc(sizeof(float) * (size_t)rows * cols);
    if (!buf) return gq_fail(GQ_ERR_NOMEM, "out of memory (decoding a %dx%d matrix for the GPU)", rows, cols);
    gq_qweight_decode_rows(q, 0, rows, buf);
    s = gq_cuda_mat_f32(rows, cols, buf, out);
    free(buf);
    (*n_f32)++;
    return s;
}

enum gq_status gq_cuda_lm_new(const struct gq_model *m, int n_ctx, const float *inv_freq, struct gq_cuda_lm **out) {
    *out = NULL;
    GQ_TRY(gq_cuda_need_device());
    const struct gq_hparams *hp = &m->hp;
    const int dim = hp->dim, q_dim = hp->n_heads * hp->head_dim, kv_dim = hp->n_kv_heads * hp->head_dim;
    const int ffn = hp->hidden_dim;
    struct gq_cuda_lm *c = calloc(1, sizeof *c);
    struct gqcu_lm_layer *L = calloc((size_t)hp->n_layers, sizeof *L);
    struct gqcu_mat *output = NULL;
    enum gq_status s = c && L ? GQ_OK : gq_fail(GQ_ERR_NOMEM, "out of memory");
    for (int l = 0; s == GQ_OK && l < hp->n_layers; l++) {
        const struct gq_layer_w *W = &m->layers[l];
        struct gqcu_lm_layer *D = &L[l];
        D->attn_norm = W->attn_norm, D->ffn_norm = W->ffn_norm, D->bq = W->bq, D->bk = W->bk, D->bv = W->bv;
        int *nf = &c->n_f32;
        s = linear(W->wq, W->q_wq, q_dim, dim, &D->wq, nf);
        if (s == GQ_OK) s = linear(W->wk, W->q_wk, kv_dim, dim, &D->wk, nf);
        if (s == GQ_OK) s = linear(W->wv, W->q_wv, kv_dim, dim, &D->wv, nf);
        if (s == GQ_OK) s = linear(W->wo, W->q_wo, dim, q_dim, &D->wo, nf);
        if (s == GQ_OK) s = linear(W->w_gate, W->q_w_gate, ffn, dim, &D->w_gate, nf);
        if (s == GQ_OK) s = linear(W->w_up, W->q_w_up, ffn, dim, &D->w_up, nf);
        if (s == GQ_OK) s = linear(W->w_down, W->q_w_down, dim, ffn, &D->w_down, nf);
    }
    if (s == GQ_OK) s = linear(m->output, m->q_output, hp->n_vocab, dim, &output, &c->n_f32);
    if (s == GQ_OK) {
        struct gqcu_lm_desc D = {.n_vocab = hp->n_vocab, .dim = dim, .n_layers = hp->n_layers, .n_heads = hp->n_heads,
                                 .n_kv_heads = hp->n_kv_heads, .head_dim = hp->head_dim, .hidden_dim = ffn,
                                 .rope_dim = hp->rope_dim, .rope_interleaved = hp->rope_interleaved, .n_ctx = n_ctx,
                                 .rms_eps = hp->rms_eps, .inv_freq = inv_freq, .output_norm = m->output_norm,
                                 .output = output, .layers = L};
        s = gq_cuda_dev_lm_new(&D, &c->lm); // the matrices belong to the lm now, also on failure
    } else {
        for (int l = 0; L && l < hp->n_layers; l++) {
            struct gqcu_mat *w[7] = {L[l].wq, L[l].wk, L[l].wv, L[l].wo, L[l].w_gate, L[l].w_up, L[l].w_down};
            for (int j = 0; j < 7; j++) gq_cuda_mat_free(w[j]);
        }
        gq_cuda_mat_free(output);
    }
    free(L);
    if (s != GQ_OK) {
        free(c);
        return s;
    }
    c->m = m;
    *out = c;
    return GQ_OK;
}

enum gq_status gq_cuda_lm_forward(struct gq_cuda_lm *c, const int32_t *tokens, int n, int pos0, float *logits,
                                  bool all_logits) {
    if (n > c->n_x) {
        float *x = realloc(c->x, sizeof(float) * (size_t)n * c->m->hp.dim);
        if (!x) return gq_fail(GQ_ERR_NOMEM, "out of memory");
        c->x = x, c->n_x = n;
    }
    GQ_TRY(gq_embed(c->m, tokens, n, c->x));
    return gq_cuda_dev_lm_forward(c->lm, c->x, n, pos0, logits, all_logits);
}

int gq_cuda_lm_n_f32(const struct gq_cuda_lm *c) { return c ? c->n_f32 : 0; }

void gq_cuda_lm_free(struct gq_cuda_lm *c) {
    if (!c) return;
    gq_cuda_dev_lm_free(c->lm);
    free(c->x);
    free(c);
}

// ---------------------------------------------------------------------------
// Calibration passes on the device (quant/engine.c): the block's weights.

enum gq_status gq_cuda_calib_new(const struct gq_model *m, const float *inv_freq, int nsamples, int seqlen,
                                 const float *X, struct gqcu_calib **out) {
    const struct gq_hparams *hp = &m->hp;
    struct gqcu_calib_desc D = {.dim = hp->dim, .n_heads = hp->n_heads, .n_kv_heads = hp->n_kv_heads,
                                .head_dim = hp->head_dim, .hidden_dim = hp->hidden_dim, .rope_dim = hp->rope_dim,
                                .rope_interleaved = hp->rope_interleaved, .nsamples = nsamples, .seqlen = seqlen,
                                .rms_eps = hp->rms_eps, .inv_freq = inv_freq};
    return gq_cuda_dev_calib_new(&D, X, out);
}

enum gq_status gq_cuda_calib_block(struct gqcu_calib *c, const struct gq_layer_w *L) {
    if (!L->wq || !L->wk || !L->wv || !L->wo || !L->w_gate || !L->w_up || !L->w_down)
        return gq_fail(GQ_ERR_ARG, "cuda calibration: the block's linears are not decoded to f32");
    struct gqcu_calib_block B = {.attn_norm = L->attn_norm, .ffn_norm = L->ffn_norm, .bq = L->bq, .bk = L->bk,
                                 .bv = L->bv, .wq = L->wq, .wk = L->wk, .wv = L->wv, .wo = L->wo,
                                 .w_gate = L->w_gate, .w_up = L->w_up, .w_down = L->w_down};
    return gq_cuda_dev_calib_block(c, &B);
}
