// arch.c - the model description tables (see arch.h).
#include "model/arch.h"

#define LIN(nm, field, r, c, in, g, h)                                                                                \
    {nm, GQ_T_LINEAR, offsetof(struct gq_layer_w, field), r, c, in, offsetof(struct gq_layer_w, q_##field), g, h}
#define VEC(nm, kind, field, r, g, h) {nm, kind, offsetof(struct gq_layer_w, field), r, GQ_D_NONE, 0, 0, g, h}

// Llama (and Mistral, Qwen2 with biases): pre-norm attention + SwiGLU MLP.
static const struct gq_block_tensor llama_block[] = {
    VEC("attn_norm", GQ_T_NORM, attn_norm, GQ_D_DIM, "attn_norm.weight", "input_layernorm.weight"),
    LIN("attn_q", wq, GQ_D_Q, GQ_D_DIM, GQ_IN_ATTN, "attn_q.weight", "self_attn.q_proj.weight"),
    LIN("attn_k", wk, GQ_D_KV, GQ_D_DIM, GQ_IN_ATTN, "attn_k.weight", "self_attn.k_proj.weight"),
    LIN("attn_v", wv, GQ_D_KV, GQ_D_DIM, GQ_IN_ATTN, "attn_v.weight", "self_attn.v_proj.weight"),
    VEC("attn_q_bias", GQ_T_BIAS, bq, GQ_D_Q, "attn_q.bias", "self_attn.q_proj.bias"),
    VEC("attn_k_bias", GQ_T_BIAS, bk, GQ_D_KV, "attn_k.bias", "self_attn.k_proj.bias"),
    VEC("attn_v_bias", GQ_T_BIAS, bv, GQ_D_KV, "attn_v.bias", "self_attn.v_proj.bias"),
    LIN("attn_output", wo, GQ_D_DIM, GQ_D_Q, GQ_IN_ATTN_OUT, "attn_output.weight", "self_attn.o_proj.weight"),
    VEC("ffn_norm", GQ_T_NORM, ffn_norm, GQ_D_DIM, "ffn_norm.weight", "post_attention_layernorm.weight"),
    LIN("ffn_gate", w_gate, GQ_D_FFN, GQ_D_DIM, GQ_IN_FFN, "ffn_gate.weight", "mlp.gate_proj.weight"),
    LIN("ffn_up", w_up, GQ_D_FFN, GQ_D_DIM, GQ_IN_FFN, "ffn_up.weight", "mlp.up_proj.weight"),
    LIN("ffn_down", w_down, GQ_D_DIM, GQ_D_FFN, GQ_IN_FFN_DOWN, "ffn_down.weight", "mlp.down_proj.weight"),
};
#undef LIN
#undef VEC

static const struct gq_arch archs[] = {
    {"llama", llama_block, sizeof llama_block / sizeof llama_block[0], false, true},
    {"qwen2", llama_block, sizeof llama_block / sizeof llama_block[0], true, false},
};

const struct gq_arch *gq_arch_find(const char *name) {
    if (!name) return NULL;
    if (!strcmp(name, "mistral")) name = "llama";
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++)
        if (!strcmp(archs[i].name, name)) return &archs[i];
    return NULL;
}

int64_t gq_dim_value(const struct gq_hparams *hp, enum gq_dim d) {
    switch (d) {
    case GQ_D_NONE: return 1;
    case GQ_D_DIM: return hp->dim;
    case GQ_D_Q: return (int64_t)hp->n_heads * hp->head_dim;
    case GQ_D_KV: return (int64_t)hp->n_kv_heads * hp->head_dim;
    case GQ_D_FFN: return hp->hidden_dim;
    }
    return 0;
}

enum gq_status gq_arch_load_blocks(struct gq_model *m, const struct gq_arch *A, bool hf, bool bias_required,
                                   gq_weight_getter get, gq_qweight_getter qget, void *ctx, const char *path) {
    const struct gq_hparams *hp = &m->hp;
    m->layers = calloc((size_t)hp->n_layers, sizeof *m->layers);
    if (!m->layers) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    for (int l = 0; l < hp->n_layers; l++) {
        struct gq_layer_w *L = &m->layers[l];
        for (int i = 0; i < A->n_tensors; i++) {
            const struct gq_block_tensor *t = &A->tensors[i];
            char n[160];
            snprintf(n, sizeof n, hf ? "model.layers.%d.%s" : "blk.%d.%s", l, hf ? t->hf : t->gguf);
            bool required = t->kind != GQ_T_BIAS || bias_required;
            if (qget && t->kind == GQ_T_LINEAR) {
                GQ_TRY(qget(ctx, n, gq_dim_value(hp, t->rows), gq_dim_value(hp, t->cols), gq_block_qslot(L, t)));
                if (*gq_block_qslot(L, t)) continue;
            }
            GQ_TRY(get(ctx, n, gq_dim_value(hp, t->rows), t->cols ? gq_dim_value(hp, t->cols) : 0, required,
                       gq_block_slot(L, t)));
        }
        if (!L->bq != !L->bk || !L->bq != !L->bv)
            return gq_fail(GQ_ERR_FORMAT, "%s: layer %d has some but not all q/k/v biases", path, l);
    }
    return GQ_OK;
}
