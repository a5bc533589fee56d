// model.c - model lifetime, validation, information and the token embedding
// (loading by format: load.c).
#include "model/model.h"
#include "model/arch.h"
#include "model/tokenizer.h"
#include "kern/qmatmul.h"

#include <math.h>

struct gq_model *gq_model_alloc(void) {
    struct gq_model *m = calloc(1, sizeof *m);
    return m;
}

enum gq_status gq_model_own(struct gq_model *m, void *p) {
    if (!p) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    if (m->n_owned == m->cap_owned) {
        size_t cap = m->cap_owned ? 2 * m->cap_owned : 64;
        void **o = realloc(m->owned, cap * sizeof *o);
        if (!o) {
            free(p);
            return gq_fail(GQ_ERR_NOMEM, "out of memory");
        }
        m->owned = o;
        m->cap_owned = cap;
    }
    m->owned[m->n_owned++] = p;
    return GQ_OK;
}

void gq_model_release(struct gq_model *m, void *p) {
    for (size_t i = m->n_owned; i-- > 0;)
        if (m->owned[i] == p) {
            free(p);
            m->owned[i] = m->owned[--m->n_owned];
            return;
        }
}

void gq_model_free(struct gq_model *m) {
    if (!m) return;
    for (size_t i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    if (m->source_free) m->source_free(m->source);
    if (m->tok) gq_tokenizer_free(m->tok);
    free(m->layers);
    free(m->packs); // their buffers are in `owned`
    free(m->blocks);
    free(m->arch);
    free(m->name);
    free(m->source_format);
    free(m->chat_template);
    free(m);
}

enum gq_status gq_check_finite(const float *x, size_t n, const char *path, const char *what) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return gq_fail(GQ_ERR_NUMERIC, "%s: tensor '%s' holds a non-finite value (%g) at element %zu",
                           path, what, (double)x[i], i);
    return GQ_OK;
}

enum gq_status gq_model_finish(struct gq_model *m, const char *path) {
    struct gq_hparams *hp = &m->hp;
    if (hp->n_vocab <= 0 || hp->dim <= 0 || hp->n_layers <= 0 || hp->n_heads <= 0 ||
        hp->hidden_dim <= 0)
        return gq_fail(GQ_ERR_FORMAT, "%s: bad hyperparameters (vocab %d, dim %d, layers %d, heads %d, ffn %d)",
                       path, hp->n_vocab, hp->dim, hp->n_layers, hp->n_heads, hp->hidden_dim);
    if (hp->n_kv_heads <= 0) hp->n_kv_heads = hp->n_heads;
    if (hp->n_heads % hp->n_kv_heads != 0)
        return gq_fail(GQ_ERR_FORMAT, "%s: %d attention heads not a multiple of %d kv heads", path,
                       hp->n_heads, hp->n_kv_heads);
    if (hp->head_dim <= 0) {
        if (hp->dim % hp->n_heads != 0)
            return gq_fail(GQ_ERR_FORMAT, "%s: dim %d not a multiple of %d heads", path, hp->dim, hp->n_heads);
        hp->head_dim = hp->dim / hp->n_heads;
    }
    if (hp->head_dim % 2 != 0) return gq_fail(GQ_ERR_FORMAT, "%s: odd head dim %d", path, hp->head_dim);
    if (hp->rope_dim <= 0) hp->rope_dim = hp->head_dim;
    if (hp->rope_dim > hp->head_dim || hp->rope_dim % 2)
        return gq_fail(GQ_ERR_FORMAT, "%s: rope dim %d invalid for head dim %d", path, hp->rope_dim, hp->head_dim);
    if (hp->ctx_len <= 0) hp->ctx_len = 2048;
    if (!(hp->rms_eps > 0)) hp->rms_eps = 1e-5f;
    if (!(hp->rope_theta > 0)) hp->rope_theta = 10000.0f;
    if ((!m->tok_embd && !m->q_tok_embd) || !m->output_norm || !m->layers)
        return gq_fail(GQ_ERR_FORMAT, "%s: missing token embedding or output norm", path);
    if (!m->output && !m->q_output) m->output = m->tok_embd, m->q_output = m->q_tok_embd;
    for (int l = 0; l < hp->n_layers; l++) {
        const struct gq_layer_w *L = &m->layers[l];
        if (!L->attn_norm || (!L->wq && !L->q_wq) || (!L->wk && !L->q_wk) || (!L->wv && !L->q_wv) ||
            (!L->wo && !L->q_wo) || !L->ffn_norm || (!L->w_gate && !L->q_w_gate) || (!L->w_up && !L->q_w_up) ||
            (!L->w_down && !L->q_w_down))
            return gq_fail(GQ_ERR_FORMAT, "%s: layer %d is missing a weight tensor", path, l);
    }
    if (!m->tok) return gq_fail(GQ_ERR_FORMAT, "%s: no tokenizer", path);
    if (gq_tokenizer_n_vocab(m->tok) > hp->n_vocab)
        return gq_fail(GQ_ERR_FORMAT, "%s: tokenizer has %d tokens but the model only %d rows", path,
                       gq_tokenizer_n_vocab(m->tok), hp->n_vocab);
    if (!m->arch) m->arch = strdup("llama");
    if (!m->name) m->name = strdup("");
    if (!m->arch || !m->name) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    return GQ_OK;
}

void gq_model_get_info(const struct gq_model *m, struct gq_model_info *info) {
    const struct gq_hparams *hp = &m->hp;
    memset(info, 0, sizeof *info);
    info->arch = m->arch;
    info->name = m->name;
    info->source_format = m->source_format;
    info->n_vocab = hp->n_vocab;
    info->dim = hp->dim;
    info->n_layers = hp->n_layers;
    info->n_heads = hp->n_heads;
    info->n_kv_heads = hp->n_kv_heads;
    info->head_dim = hp->head_dim;
    info->hidden_dim = hp->hidden_dim;
    info->ctx_len = hp->ctx_len;
    info->rope_theta = hp->rope_theta;
    info->rms_eps = hp->rms_eps;
    info->rope_interleaved = hp->rope_interleaved;
    info->tied_output = m->output == m->tok_embd && m->q_output == m->q_tok_embd;
    info->qkv_bias = m->layers[0].bq != NULL;
    int64_t q = (int64_t)hp->n_heads * hp->head_dim, kv = (int64_t)hp->n_kv_heads * hp->head_dim;
    int64_t per_layer = 2 * hp->dim + q * hp->dim * 2 + kv * hp->dim * 2 + 3 * (int64_t)hp->hidden_dim * hp->dim;
    if (info->qkv_bias) per_layer += q + 2 * kv;
    info->n_params = per_layer * hp->n_layers + (int64_t)hp->n_vocab * hp->dim + hp->dim +
                     (info->tied_output ? 0 : (int64_t)hp->n_vocab * hp->dim);
    info->weight_bytes = (size_t)info->n_params * sizeof(float);
    // bytes as held: compressed weights as stored, f32 ones 4 per value
    const struct gq_arch *A = gq_arch_find(m->arch);
    double lin = 0, norms = 0;
    char desc[48] = "";
    bool mixed = false;
    for (int l = 0; A && l < hp->n_layers; l++)
        for (int i = 0; i < A->n_tensors; i++) {
            const struct gq_block_tensor *t = &A->tensors[i];
            const double nel = (double)gq_dim_value(hp, t->rows) * (t->cols ? (double)gq_dim_value(hp, t->cols) : 1);
            if (t->kind != GQ_T_LINEAR) {
                norms += 4 * nel;
                continue;
            }
            const struct gq_qweight *q = *gq_block_qslot(&m->layers[l], t);
            char d[48];
            if (!q) snprintf(d, sizeof d, "F32");
            else if (q->kind == GQ_QW_GGML) snprintf(d, sizeof d, "%s", gq_ggml_type_name(q->type));
            else snprintf(d, sizeof d, "VQ %dD k%d", q->vq->p.h.d, q->vq->p.h.k);
            lin += q ? (double)gq_qweight_bytes(q) : 4 * nel;
            if (!*desc) snprintf(desc, sizeof desc, "%s", d);
            else mixed |= strcmp(desc, d) != 0;
        }
    const double vd = (double)hp->n_vocab * hp->dim;
    const double head = m->q_output ? (double)gq_qweight_bytes(m->q_output) : 4 * vd;
    const double embd = m->q_tok_embd ? (double)gq_qweight_bytes(m->q_tok_embd) : 4 * vd;
    info->bytes_linears = lin;
    info->bytes_per_token = lin + head + norms + 4.0 * hp->dim;
    info->bytes_held = info->bytes_per_token + (info->tied_output ? 0 : embd);
    snprintf(info->linears_desc, sizeof info->linears_desc, "%s", mixed ? "mixed" : desc);
    info->bos_id = gq_tokenizer_bos(m->tok);
    info->eos_id = gq_tokenizer_eos(m->tok);
    info->add_bos = gq_tokenizer_add_bos(m->tok);
}

const struct gq_tokenizer *gq_model_tokenizer(const struct gq_model *m) { return m->tok; }

enum gq_status gq_embed(const struct gq_model *m, const int32_t *tokens, int n, float *x) {
    for (int i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= m->hp.n_vocab)
            return gq_fail(GQ_ERR_ARG, "token id %d out of range [0, %d)", tokens[i], m->hp.n_vocab);
        if (m->q_tok_embd)
            gq_qweight_decode_rows(m->q_tok_embd, tokens[i], tokens[i] + 1, x + (size_t)i * m->hp.dim);
        else
            memcpy(x + (size_t)i * m->hp.dim, m->tok_embd + (size_t)tokens[i] * m->hp.dim,
                   (size_t)m->hp.dim * sizeof(float));
    }
    return GQ_OK;
}
