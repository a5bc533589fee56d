// save_gguf.c - writes a (fake-)quantized model as GGUF: the source GGUF's
// metadata and untouched tensors are copied, each block linear is written as
// F32 from the model's current weights, and gptvq.* metadata records how.
#include "model/arch.h"
#include "model/model.h"
#include "io/gguf.h"
#include "io/gguf_write.h"
#include "format/ggml.h"
#include "format/vqpack.h"
#include "quant/quant.h"

// The block linear a GGUF tensor name ("blk.L.<gguf name>") stands for, and
// its layer; NULL for every other tensor.
static const struct gq_block_tensor *block_linear(const struct gq_model *m, const struct gq_arch *A, const char *name,
                                                  int *layer) {
    int l = -1, off = 0;
    if (sscanf(name, "blk.%d.%n", &l, &off) != 1 || off <= 0 || l < 0 || l >= m->hp.n_layers) return NULL;
    for (int k = 0; k < A->n_tensors; k++)
        if (A->tensors[k].kind == GQ_T_LINEAR && !strcmp(name + off, A->tensors[k].gguf)) {
            *layer = l;
            return &A->tensors[k];
        }
    return NULL;
}

// gptvq.format_version: the newest header version among the packs (1 unless rotated).
static int packs_version(const struct gq_model *m) {
    const struct gq_arch *A = gq_arch_find(m->arch);
    int v = m->head_pack ? m->head_pack->h.version : 1;
    for (size_t i = 0; i < (size_t)m->hp.n_layers * A->n_tensors; i++) if (m->packs[i].h.version > v) v = m->packs[i].h.version;
    return v;
}

// Packed GPTVQ matrix `name`: its header as "gptvq.vq.<name>" and one tensor
// per part (docs/format.md).
static enum gq_status write_packed(struct gq_gguf_writer *w, const char *name, const struct gq_vqpack *pk) {
    char key[256];
    snprintf(key, sizeof key, "gptvq.vq.%s", name);
    enum gq_status s = gq_gguf_writer_set_arr(w, key, GQ_GGUF_INT32, &pk->h, (size_t)gq_vqpack_hdr_n(&pk->h));
    int64_t bits[GQ_VQP_COUNT];
    if (s == GQ_OK) s = gq_vqpack_layout(&pk->h, name, bits);
    for (int i = 0; s == GQ_OK && i < GQ_VQP_COUNT; i++) {
        if (!bits[i]) continue;
        int type;
        int64_t ne;
        gq_vqpack_part_type(&pk->h, i, bits[i], &type, &ne);
        char tn[256];
        snprintf(tn, sizeof tn, "%s.%s", name, gq_vqpack_suffix(i));
        s = gq_gguf_writer_add_tensor(w, tn, (enum gq_ggml_type)type, 1, &ne, pk->part[i], pk->bytes[i]);
    }
    return s;
}

// The f32 linears of finished blocks a streaming quantization keeps in its
// checkpoint (m->reload): produced at write time, one block in memory at
// once (the source's tensors come block by block, so each is read once).
struct reload_ctx {
    struct gq_model *m;
    const struct gq_arch *A;
    int layer; // block whose weights are loaded, or -1
};

static void reload_release(struct reload_ctx *rc) {
    if (rc->layer < 0) return;
    for (int i = 0; i < rc->A->n_tensors; i++)
        if (rc->A->tensors[i].kind == GQ_T_LINEAR) gq_block_drop(rc->m, rc->layer, &rc->A->tensors[i]);
    rc->layer = -1;
}

static enum gq_status reload_fill(void *user, const char *name, void *dst, size_t nbytes) {
    struct reload_ctx *rc = user;
    int l = -1;
    const struct gq_block_tensor *bt = block_linear(rc->m, rc->A, name, &l);
    if (!bt) return gq_fail(GQ_ERR_ARG, "save: tensor '%s' is not a block linear", name);
    if (l != rc->layer) {
        reload_release(rc);
        GQ_TRY(rc->m->reload(rc->m, l));
        rc->layer = l;
    }
    const float *W = *gq_block_slot(&rc->m->layers[l], bt);
    const size_t n = (size_t)gq_dim_value(&rc->m->hp, bt->rows) * (size_t)gq_dim_value(&rc->m->hp, bt->cols);
    if (!W || n * sizeof(float) != nbytes) return gq_fail(GQ_ERR_FORMAT, "save: blk.%d.%s not read back", l, bt->name);
    memcpy(dst, W, nbytes);
    return GQ_OK;
}

// The GGUF type of each enum gq_export_type (export, --embed-type).
static const enum gq_ggml_type export_types[] = {GQ_TYPE_F16, GQ_TYPE_Q8_0, GQ_TYPE_Q4_0};

// f (rows, cols) row by row as `type` into dst (nbytes, checked), with
// llama.cpp's reference rounding.
static enum gq_status encode_rows(enum gq_ggml_type type, const float *f, int64_t rows, int64_t cols, void *dst,
                                  size_t nbytes, const char *name) {
    const size_t rs = gq_ggml_row_size(type, cols);
    if (!f || rs * (size_t)rows != nbytes) return gq_fail(GQ_ERR_ARG, "tensor '%s' changed shape", name);
    for (int64_t r = 0; r < rows; r++) GQ_TRY(gq_quantize_row_ggml(type, f + r * cols, (uint8_t *)dst + r * rs, cols));
    return GQ_OK;
}

// The token embedding / output head re-encoded (--embed-type): the source
// tensor decoded to f32 and each row encoded, at write time (one tensor in
// memory).
struct embed_ctx {
    const struct gq_gguf *g;
    enum gq_ggml_type type;
};
static enum gq_status embed_fill(void *user, const char *name, void *dst, size_t nbytes) {
    const struct embed_ctx *e = user;
    const struct gq_gguf_tensor *t = gq_gguf_find_tensor(e->g, name);
    float *f = NULL;
    GQ_TRY(gq_gguf_tensor_to_f32(e->g, t, &f));
    enum gq_status s = encode_rows(e->type, f, t->ne[1], t->ne[0], dst, nbytes, name);
    free(f);
    return s;
}

enum gq_status gq_model_save_gguf(struct gq_model *m, const char *path, const struct gq_quantize_params *p,
                                  const struct gq_quant_report *rep) {
    if (!m->source_format || strcmp(m->source_format, "gguf") != 0)
        return gq_fail(GQ_ERR_UNSUPPORTED, "%s: writing GGUF needs a GGUF source model (this one is %s)", path,
                       m->source_format ? m->source_format : "?");
    const struct gq_gguf *g = m->source;
    const struct gq_arch *A = gq_arch_find(m->arch);
    if (!A) return gq_fail(GQ_ERR_UNSUPPORTED, "%s: architecture '%s' has no model description", path, m->arch);
    struct gq_gguf_writer *w = gq_gguf_writer_new(g->alignment);
    if (!w) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    struct reload_ctx rc = {.m = m, .A = A, .layer = -1};
    if (p->embed_type > GQ_EXPORT_Q4_0) return gq_fail(GQ_ERR_ARG, "%s: unknown embedding type %d", path, p->embed_type);
    struct embed_ctx ec = {g, p->embed_type >= 0 ? export_types[p->embed_type] : GQ_TYPE_F32};
    static const char *const skip[] = {"gptvq.", "general.file_type", NULL}; // gptvq.converted_from goes too
    enum gq_status s = gq_gguf_writer_copy_kvs(w, g, skip);
    if (s == GQ_OK && m->blocks) // the block type's llama.cpp file type (informative)
        s = gq_gguf_writer_set_u32(w, "general.file_type",
                                   gq_ggml_llama_ftype((enum gq_ggml_type)gq_quantize_gguf_type(p)));
    const char *method = p->method == GQ_METHOD_GPTVQ ? "gptvq" : p->method == GQ_METHOD_GPTQ ? "gptq" : "rtn";
    if (s == GQ_OK) s = gq_gguf_writer_set_str(w, "gptvq.version", GQ_VERSION_STRING);
    if (s == GQ_OK)
        s = gq_gguf_writer_set_str(w, "gptvq.format", m->packs ? "packed-vq" : m->blocks ? "gguf-blocks" : "fake-quant-f32");
    if (s == GQ_OK && m->packs) s = gq_gguf_writer_set_i32(w, "gptvq.format_version", packs_version(m));
    if (s == GQ_OK) s = gq_gguf_writer_set_str(w, "gptvq.method", method);
    if (p->method == GQ_METHOD_GPTVQ) {
        if (s == GQ_OK) s = gq_gguf_writer_set_i32(w, "gptvq.vq_dim", p->vq.dim);
        if (s == GQ_OK) s = gq_gguf_writer_set_f32(w, "gptvq.bpv_target", (float)p->vq.bpv);
        if (s == GQ_OK)
            s = gq_gguf_writer_set_f32(w, "gptvq.bpv", rep->vq_weights ? (float)((double)rep->vq_bits / rep->vq_weights) : 0);
        if (s == GQ_OK) s = gq_gguf_writer_set_i32(w, "gptvq.k", rep->n ? rep->layers[0].k : 0);
        if (s == GQ_OK) s = gq_gguf_writer_set_i32(w, "gptvq.em_iters", p->vq.em_iters);
        if (s == GQ_OK) s = gq_gguf_writer_set_i32(w, "gptvq.norm_block", p->vq.norm_block);
        if (s == GQ_OK) s = gq_gguf_writer_set_i32(w, "gptvq.stages", p->vq.stages);
        if (s == GQ_OK) s = gq_gguf_writer_set_i32(w, "gptvq.cb_svd_rank", p->vq.cb_svd_rank);
        if (s == GQ_OK) s = gq_gguf_writer_set_f32(w, "gptvq.outlier_frac", (float)p->vq.outlier_frac);
        if (s == GQ_OK && m->head_pack) s = gq_gguf_writer_set_f32(w, "gptvq.head_bpv_target", (float)p->head_bpv);
    } else {
        if (s == GQ_OK) s = gq_gguf_writer_set_i32(w, "gptvq.wbits", p->wbits);
        if (s == GQ_OK) s = gq_gguf_writer_set_i32(w, "gptvq.group_size", p->group_size);
    }
    if (s == GQ_OK && p->embed_type >= 0)
        s = gq_gguf_writer_set_str(w, "gptvq.embed_type", gq_ggml_type_name(ec.type));
    if (s == GQ_OK) s = gq_gguf_writer_set_bool(w, "gptvq.sym", p->sym);
    if (s == GQ_OK) s = gq_gguf_writer_set_bool(w, "gptvq.act_order", p->act_order);
    if (s == GQ_OK) s = gq_gguf_writer_set_u64(w, "gptvq.seed", p->seed);
    if (s == GQ_OK && p->method != GQ_METHOD_RTN) {
        s = gq_gguf_writer_set_str(w, "gptvq.calib_source", rep->calib_source);
        if (s == GQ_OK) s = gq_gguf_writer_set_f32(w, "gptvq.damp", p->damp);
        if (s == GQ_OK)
            s = gq_gguf_writer_set_str(w, "gptvq.token_weights", p->token_weights == GQ_TW_NONE ? "none" : "residual");
        if (s == GQ_OK) s = gq_gguf_writer_set_f32(w, "gptvq.sink_weight", rep->sink_weight);
    }
    if (s == GQ_OK && rep->n > 0) {
        // per-linear relative output errors, in quantization order, with names
        float *err = malloc((size_t)rep->n * sizeof *err);
        char **names = malloc((size_t)rep->n * sizeof *names);
        char *buf = malloc((size_t)rep->n * 48);
        if (!err || !names || !buf) s = gq_fail(GQ_ERR_NOMEM, "out of memory");
        for (int i = 0; s == GQ_OK && i < rep->n; i++) {
            err[i] = (float)rep->layers[i].rel_error;
            names[i] = buf + (size_t)i * 48;
            if (rep->layers[i].layer >= 0) snprintf(names[i], 48, "blk.%d.%s", rep->layers[i].layer, rep->layers[i].name);
            else snprintf(names[i], 48, "%s", rep->layers[i].name); // the output head
        }
        if (s == GQ_OK) s = gq_gguf_writer_set_arr(w, "gptvq.rel_errors", GQ_GGUF_FLOAT32, err, (size_t)rep->n);
        if (s == GQ_OK) s = gq_gguf_writer_set_arr_str(w, "gptvq.layers", (const char *const *)names, (size_t)rep->n);
        free(err);
        free(names);
        free(buf);
    }
    for (uint64_t i = 0; s == GQ_OK && i < g->n_tensors; i++) {
        const struct gq_gguf_tensor *t = &g->tensors[i];
        int l = -1;
        const struct gq_block_tensor *bt = block_linear(m, A, t->name, &l);
        if (!bt && m->head_pack &&
            (!strcmp(t->name, "output.weight") || (!strcmp(t->name, "token_embd.weight") && gq_head_tied(m)))) {
            s = write_packed(w, t->name, m->head_pack);
            continue;
        }
        if (!bt && p->embed_type >= 0 && t->n_dims == 2 &&
            (!strcmp(t->name, "token_embd.weight") || !strcmp(t->name, "output.weight"))) {
            if (ec.type != GQ_TYPE_F16 && t->ne[0] % 32)
                s = gq_fail(GQ_ERR_ARG, "%s: %s rows of %lld values are not whole blocks of 32 for %s", path, t->name,
                            (long long)t->ne[0], gq_ggml_type_name(ec.type));
            else
                s = gq_gguf_writer_add_tensor_fill(w, t->name, ec.type, 2, t->ne,
                                                   gq_ggml_row_size(ec.type, t->ne[0]) * (size_t)t->ne[1], embed_fill, &ec);
            continue;
        }
        if (!bt) {
            s = gq_gguf_writer_copy_tensor(w, g, t, NULL);
            continue;
        }
        const struct gq_vqpack *pk = m->packs ? &m->packs[(size_t)l * A->n_tensors + (size_t)(bt - A->tensors)] : NULL;
        if (pk && pk->h.version) {
            s = write_packed(w, t->name, pk);
            continue;
        }
        int64_t rows = gq_dim_value(&m->hp, bt->rows), cols = gq_dim_value(&m->hp, bt->cols);
        int64_t ne[2] = {cols, rows};
        const struct gq_gguf_blocks *gb = m->blocks ? &m->blocks[(size_t)l * A->n_tensors + (size_t)(bt - A->tensors)] : NULL;
        if (gb && gb->data) {
            s = gq_gguf_writer_add_tensor(w, t->name, (enum gq_ggml_type)gb->type, 2, ne, gb->data, gb->bytes);
            continue;
        }
        const float *W = *gq_block_slot(&m->layers[l], bt);
        const size_t nb = (size_t)(rows * cols) * sizeof(float);
        if (W)
            s = gq_gguf_writer_add_tensor(w, t->name, GQ_TYPE_F32, 2, ne, W, nb);
        else if (m->reload)
            s = gq_gguf_writer_add_tensor_fill(w, t->name, GQ_TYPE_F32, 2, ne, nb, reload_fill, &rc);
        else
            s = gq_fail(GQ_ERR_ARG, "%s: blk.%d.%s has no f32 weights to write", path, l, bt->name);
    }
    if (s == GQ_OK) s = gq_gguf_writer_write(w, path);
    reload_release(&rc);
    gq_gguf_writer_free(w);
    return s;
}

// The f32 weight a source tensor name stands for (NULL: not a model weight),
// with its shape. Packed matrices are found through their index part.
static const float *model_weight(const struct gq_model *m, const struct gq_arch *A, const char *name, int64_t *rows,
                                 int64_t *cols) {
    if (!strcmp(name, "token_embd.weight")) {
        *rows = m->hp.n_vocab, *cols = m->hp.dim;
        return m->tok_embd;
    }
    if (!strcmp(name, "output.weight")) {
        *rows = m->hp.n_vocab, *cols = m->hp.dim;
        return m->output;
    }
    int l = -1;
    const struct gq_block_tensor *bt = block_linear(m, A, name, &l);
    if (!bt) return NULL;
    *rows = gq_dim_value(&m->hp, bt->rows), *cols = gq_dim_value(&m->hp, bt->cols);
    return *gq_block_slot(&m->layers[l], bt);
}

struct export_ctx {
    const struct gq_model *m;
    const struct gq_arch *A;
    enum gq_ggml_type type;
};
// Produces one exported tensor at write time (one tensor in memory at once).
static enum gq_status export_fill(void *user, const char *name, void *dst, size_t nbytes) {
    const struct export_ctx *e = user;
    int64_t rows = 0, cols = 0;
    const float *f = model_weight(e->m, e->A, name, &rows, &cols);
    return encode_rows(e->type, f, rows, cols, dst, nbytes, name);
}

enum gq_status gq_model_export_gguf(const struct gq_model *m, const char *path, enum gq_export_type type) {
    if ((int)type < 0 || type > GQ_EXPORT_Q4_0) return gq_fail(GQ_ERR_ARG, "export: unknown type %d", (int)type);
    if (!m->source_format || strcmp(m->source_format, "gguf") != 0)
        return gq_fail(GQ_ERR_UNSUPPORTED, "%s: export needs a GGUF source model (this one is %s)", path,
                       m->source_format ? m->source_format : "?");
    if (m->keep_quantized) return gq_fail(GQ_ERR_ARG, "%s: export needs the model loaded as f32", path);
    const enum gq_ggml_type tt = export_types[type];
    const struct gq_gguf *g = m->source;
    const struct gq_arch *A = gq_arch_find(m->arch);
    if (!A) return gq_fail(GQ_ERR_UNSUPPORTED, "%s: architecture '%s' has no model description", path, m->arch);
    struct gq_gguf_writer *w = gq_gguf_writer_new(g->alignment);
    if (!w) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    static const char *const skip[] = {"gptvq.vq.", "gptvq.format", "general.file_type", NULL};
    struct export_ctx ec = {m, A, tt};
    enum gq_status s = gq_gguf_writer_copy_kvs(w, g, skip);
    if (s == GQ_OK) s = gq_gguf_writer_set_u32(w, "general.file_type", gq_ggml_llama_ftype(tt));
    if (s == GQ_OK) s = gq_gguf_writer_set_str(w, "gptvq.exported_from", gq_gguf_find_kv(g, "gptvq.format") ? "gptvq" : "source");
    for (uint64_t i = 0; s == GQ_OK && i < g->n_tensors; i++) {
        const struct gq_gguf_tensor *t = &g->tensors[i];
        char base[256];
        snprintf(base, sizeof base, "%s", t->name);
        char *dot = strstr(base, ".weight.vq_");
        if (dot) { // a packed part: the matrix is emitted once, at its index part
            if (strcmp(dot, ".weight.vq_idx")) continue;
            dot[7] = 0;
        }
        int64_t rows = 0, cols = 0;
        const float *f = model_weight(m, A, base, &rows, &cols);
        if (!f) {
            s = t->n_dims == 1 || t->type == GQ_TYPE_F32 ? gq_gguf_writer_copy_tensor(w, g, t, NULL)
                                                         : gq_fail(GQ_ERR_UNSUPPORTED, "%s: tensor '%s' is not a model weight", path, t->name);
            continue;
        }
        if (tt != GQ_TYPE_F16 && cols % 32)
            s = gq_fail(GQ_ERR_ARG, "%s: '%s' has rows of %lld values, not whole blocks of 32 for %s (use --to f16)",
                        path, base, (long long)cols, gq_ggml_type_name(tt));
        int64_t ne[2] = {cols, rows};
        if (s == GQ_OK)
            s = gq_gguf_writer_add_tensor_fill(w, base, tt, 2, ne, gq_ggml_row_size(tt, cols) * (size_t)rows,
                                               export_fill, &ec);
    }
    if (s == GQ_OK) s = gq_gguf_writer_write(w, path);
    gq_gguf_writer_free(w);
    return s;
}
