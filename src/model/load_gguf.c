// load_gguf.c - builds a gq_model from a GGUF file (llama.cpp tensor names).
//
// F32 tensors are borrowed from the mapping; every other type is dequantized
// to an owned f32 buffer (gq_gguf_tensor_to_f32 also rejects NaN/Inf).
#include "model/model.h"
#include "model/arch.h"
#include "model/tokenizer.h"
#include "io/gguf.h"
#include "kern/qmatmul.h"

static void close_gguf(void *p) { gq_gguf_close(p); }

// The f32 matrix of a packed one (decoded whole; quantize / export).
static enum gq_status vq_to_f32(struct gq_model *m, const struct gq_gguf *g, const char *name,
                                const struct gq_vqpack *p, const float **out) {
    struct gq_vqrt v;
    char what[200];
    snprintf(what, sizeof what, "%s: %s", g->file.path, name);
    GQ_TRY(gq_vqrt_init(&v, p, what));
    float *f = malloc(sizeof(float) * (size_t)p->h.rows * p->h.cols);
    if (!f) {
        gq_vqrt_free(&v);
        return gq_fail(GQ_ERR_NOMEM, "%s: out of memory", what);
    }
    struct gq_qweight q = {.kind = GQ_QW_VQ, .rows = p->h.rows, .cols = p->h.cols, .vq = &v};
    gq_qweight_decode_rows(&q, 0, p->h.rows, f);
    gq_vqrt_free(&v);
    GQ_TRY(gq_model_own(m, f));
    *out = f;
    return GQ_OK;
}

// ggml types the compressed kernels run directly.
static bool kept_type(enum gq_ggml_type t) {
    return t == GQ_TYPE_F16 || t == GQ_TYPE_Q8_0 || t == GQ_TYPE_Q4_0 || t == GQ_TYPE_Q4_1 || t == GQ_TYPE_Q5_0 ||
           t == GQ_TYPE_Q5_1;
}

// keep_quantized: the compressed form of tensor `name` (rows, cols), or NULL
// (then the f32 path loads it).
static enum gq_status get_q(struct gq_model *m, const struct gq_gguf *g, const char *name, int64_t rows, int64_t cols,
                            bool repack, const struct gq_qweight **out) {
    *out = NULL;
    if (!m->keep_quantized) return GQ_OK;
    struct gq_vqpack p;
    bool found;
    GQ_TRY(gq_vqpack_from_gguf(g, name, rows, cols, &p, &found));
    const struct gq_gguf_tensor *t = found ? NULL : gq_gguf_find_tensor(g, name);
    if (!found && (!t || !kept_type(t->type) || t->n_dims < 1 || t->ne[0] != cols ||
                   gq_gguf_tensor_nelements(t) != rows * cols))
        return GQ_OK; // absent or f32 / other type: the f32 path reports or dequantizes
    struct gq_qweight *q = calloc(1, sizeof *q);
    GQ_TRY(gq_model_own(m, q));
    q->rows = (int)rows, q->cols = (int)cols;
    if (!found) {
        q->kind = GQ_QW_GGML, q->type = t->type, q->data = t->data;
        q->row_size = gq_ggml_row_size(t->type, cols);
        void *rp = NULL; // the SIMD kernels' 16-row layout; the mapped original then leaves memory
        if (repack && !m->no_repack) GQ_TRY(gq_qweight_prepare(q, &rp));
        if (rp) {
            GQ_TRY(gq_model_own(m, rp));
            gq_qweight_release_source(q);
        }
        *out = q;
        return GQ_OK;
    }
    struct gq_vqrt *v = calloc(1, sizeof *v);
    GQ_TRY(gq_model_own(m, v));
    char what[200];
    snprintf(what, sizeof what, "%s: %s", g->file.path, name);
    GQ_TRY(gq_vqrt_init(v, &p, what));
    void *arrs[] = {v->ct_start, v->rt_start, v->vt_start, v->blk0, v->perm, v->tab,
                    v->cb8,      v->cbs,      v->half_ct,  v->fcb,  v->nsc, v->nidx, v->ch0}; // the view's arrays go with the model too
    for (size_t i = 0; i < sizeof arrs / sizeof *arrs; i++)
        if (arrs[i]) GQ_TRY(gq_model_own(m, arrs[i]));
    if (v->rot) {
        GQ_TRY(gq_model_own(m, v->rot));
        GQ_TRY(gq_model_own(m, v->rot->sign));
        for (int b = 0; b < v->rot->nblk; b++)
            if (v->rot->had[b]) GQ_TRY(gq_model_own(m, v->rot->had[b]));
    }
    q->kind = GQ_QW_VQ, q->vq = v;
    *out = q;
    return GQ_OK;
}

// Fetches tensor `name` as f32, checking its shape is (ne1 rows, ne0 cols).
// A missing optional tensor leaves *out NULL.
static enum gq_status get_w(struct gq_model *m, const struct gq_gguf *g, const char *name,
                            int64_t ne0, int64_t ne1, bool required, const float **out) {
    *out = NULL;
    const struct gq_gguf_tensor *t = gq_gguf_find_tensor(g, name);
    if (!t) {
        struct gq_vqpack p;
        bool found;
        GQ_TRY(gq_vqpack_from_gguf(g, name, ne1, ne0, &p, &found));
        if (found) return vq_to_f32(m, g, name, &p, out);
        if (!required) return GQ_OK;
        return gq_fail(GQ_ERR_FORMAT, "%s: missing tensor '%s'", g->file.path, name);
    }
    int64_t n1 = 1;
    for (int d = 1; d < t->n_dims; d++) n1 *= t->ne[d];
    if (t->ne[0] != ne0 || n1 != ne1)
        return gq_fail(GQ_ERR_FORMAT, "%s: tensor '%s' has shape [%lld, %lld], expected [%lld, %lld]",
                       g->file.path, name, (long long)t->ne[0], (long long)n1, (long long)ne0,
                       (long long)ne1);
    if (t->type == GQ_TYPE_F32 && ((uintptr_t)t->data % sizeof(float)) == 0) {
        GQ_TRY(gq_check_finite(t->data, (size_t)(ne0 * ne1), g->file.path, name));
        *out = t->data;
        return GQ_OK;
    }
    float *f = NULL;
    GQ_TRY(gq_gguf_tensor_to_f32(g, t, &f));
    GQ_TRY(gq_model_own(m, f));
    *out = f;
    return GQ_OK;
}

// gq_weight_getter over a GGUF: (rows, cols) = (ne[1], ne[0]); 1-D: cols 0.
struct gguf_getter {
    struct gq_model *m;
    const struct gq_gguf *g;
};
static enum gq_status gguf_get(void *ctx, const char *name, int64_t rows, int64_t cols, bool required,
                               const float **out) {
    struct gguf_getter *gg = ctx;
    return get_w(gg->m, gg->g, name, cols ? cols : rows, cols ? rows : 1, required, out);
}
static enum gq_status gguf_qget(void *ctx, const char *name, int64_t rows, int64_t cols,
                                const struct gq_qweight **out) {
    struct gguf_getter *gg = ctx;
    return get_q(gg->m, gg->g, name, rows, cols, true, out);
}

static enum gq_status get_int(const struct gq_gguf *g, const char *arch, const char *suffix,
                              bool required, int def, int *out) {
    char key[256];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    int64_t v;
    if (!gq_gguf_find_kv(g, key)) {
        if (required) return gq_fail(GQ_ERR_FORMAT, "%s: missing metadata key '%s'", g->file.path, key);
        *out = def;
        return GQ_OK;
    }
    enum gq_status s = gq_gguf_get_i64(g, key, &v);
    if (s != GQ_OK) return s;
    if (v < 0 || v > (1 << 30)) return gq_fail(GQ_ERR_FORMAT, "%s: '%s' = %lld out of range", g->file.path, key, (long long)v);
    *out = (int)v;
    return GQ_OK;
}

static enum gq_status get_float(const struct gq_gguf *g, const char *arch, const char *suffix,
                                float def, float *out) {
    char key[256];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    *out = def;
    if (!gq_gguf_find_kv(g, key)) return GQ_OK;
    double v;
    GQ_TRY(gq_gguf_get_f64(g, key, &v));
    *out = (float)v;
    return GQ_OK;
}

enum gq_status gq_load_gguf(const char *path, struct gq_model *m) {
    struct gq_gguf *g = NULL;
    GQ_TRY(gq_gguf_open(path, &g));
    m->source = g;
    m->source_free = close_gguf;
    m->source_format = strdup("gguf");

    char *arch = NULL;
    GQ_TRY(gq_gguf_get_str(g, "general.architecture", &arch));
    m->arch = arch;
    if (gq_gguf_find_kv(g, "general.name")) GQ_TRY(gq_gguf_get_str(g, "general.name", &m->name));
    if (gq_gguf_find_kv(g, "tokenizer.chat_template"))
        GQ_TRY(gq_gguf_get_str(g, "tokenizer.chat_template", &m->chat_template));

    const struct gq_arch *A = gq_arch_find(arch);
    if (!A) return gq_fail(GQ_ERR_UNSUPPORTED, "%s: architecture '%s' is not supported (llama, qwen2)", path, arch);

    struct gq_hparams *hp = &m->hp;
    GQ_TRY(get_int(g, arch, "block_count", true, 0, &hp->n_layers));
    GQ_TRY(get_int(g, arch, "embedding_length", true, 0, &hp->dim));
    GQ_TRY(get_int(g, arch, "feed_forward_length", true, 0, &hp->hidden_dim));
    GQ_TRY(get_int(g, arch, "attention.head_count", true, 0, &hp->n_heads));
    GQ_TRY(get_int(g, arch, "attention.head_count_kv", false, hp->n_heads, &hp->n_kv_heads));
    GQ_TRY(get_int(g, arch, "context_length", false, 2048, &hp->ctx_len));
    GQ_TRY(get_int(g, arch, "attention.key_length", false, 0, &hp->head_dim));
    GQ_TRY(get_int(g, arch, "rope.dimension_count", false, 0, &hp->rope_dim));
    GQ_TRY(get_float(g, arch, "rope.freq_base", 10000.0f, &hp->rope_theta));
    GQ_TRY(get_float(g, arch, "attention.layer_norm_rms_epsilon", 1e-5f, &hp->rms_eps));
    if (hp->n_layers <= 0 || hp->dim <= 0 || hp->n_heads <= 0 || hp->hidden_dim <= 0 || hp->n_kv_heads <= 0)
        return gq_fail(GQ_ERR_FORMAT, "%s: zero-sized hyperparameter", path);
    // llama.cpp: LLAMA_ROPE_TYPE_NORM (interleaved pairs) for llama, NEOX for qwen2.
    hp->rope_interleaved = A->rope_interleaved_gguf;

    char key[256];
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    if (gq_gguf_find_kv(g, key)) {
        char *type = NULL;
        GQ_TRY(gq_gguf_get_str(g, key, &type));
        enum gq_status s = GQ_OK;
        if (strcmp(type, "linear") == 0) {
            hp->rope_scaling = GQ_ROPE_SCALING_LINEAR;
            s = get_float(g, arch, "rope.scaling.factor", 1.0f, &hp->rope_factor);
        } else if (strcmp(type, "none") != 0) {
            s = gq_fail(GQ_ERR_UNSUPPORTED, "%s: rope scaling '%s' is not supported (none, linear, llama3 via rope_freqs)", path, type);
        }
        free(type);
        GQ_TRY(s);
    }

    const struct gq_gguf_tensor *te = gq_gguf_find_tensor(g, "token_embd.weight");
    const struct gq_gguf_kv *tv = te ? NULL : gq_gguf_find_kv(g, "gptvq.vq.token_embd.weight"); // packed (--head-bpv, tied)
    if ((!te || te->n_dims != 2) && !(tv && tv->type == GQ_GGUF_ARRAY && tv->arr_n >= 3))
        return gq_fail(GQ_ERR_FORMAT, "%s: missing 2-D tensor 'token_embd.weight'", path);
    const int64_t n_vocab = te ? te->ne[1] : gq_gguf_arr_i64(tv, 1);
    if (n_vocab <= 0 || n_vocab > (1 << 24)) return gq_fail(GQ_ERR_FORMAT, "%s: bad vocab size %lld", path, (long long)n_vocab);
    hp->n_vocab = (int)n_vocab;
    int head_dim = hp->head_dim > 0 ? hp->head_dim : (hp->dim % hp->n_heads == 0 ? hp->dim / hp->n_heads : 0);
    if (head_dim <= 0) return gq_fail(GQ_ERR_FORMAT, "%s: dim %d not divisible by %d heads", path, hp->dim, hp->n_heads);
    hp->head_dim = head_dim;
    int64_t dim = hp->dim;
    // the embedding is only read a row at a time: the kernels' copy only when it is also the (tied) output head
    const bool tied = !gq_gguf_find_tensor(g, "output.weight") && !gq_gguf_find_kv(g, "gptvq.vq.output.weight");
    GQ_TRY(get_q(m, g, "token_embd.weight", hp->n_vocab, dim, tied, &m->q_tok_embd));
    if (!m->q_tok_embd) GQ_TRY(get_w(m, g, "token_embd.weight", dim, hp->n_vocab, true, &m->tok_embd));
    GQ_TRY(get_w(m, g, "output_norm.weight", dim, 1, true, &m->output_norm));
    GQ_TRY(get_q(m, g, "output.weight", hp->n_vocab, dim, true, &m->q_output));
    if (!m->q_output) GQ_TRY(get_w(m, g, "output.weight", dim, hp->n_vocab, false, &m->output));
    int rope_dim = hp->rope_dim > 0 ? hp->rope_dim : head_dim;
    GQ_TRY(get_w(m, g, "rope_freqs.weight", rope_dim / 2, 1, false, &m->rope_freq_factors));

    struct gguf_getter gg = {m, g};
    GQ_TRY(gq_arch_load_blocks(m, A, false, A->qkv_bias, gguf_get, gguf_qget, &gg, path));
    GQ_TRY(gq_tokenizer_from_gguf(g, &m->tok));
    return gq_model_finish(m, path);
}
