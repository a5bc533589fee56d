// save_gguf.c - writes a (fake-)quantized model as GGUF: the source GGUF's
// metadata and untouched tensors are copied, each block linear is written as
// F32 from the model's current weights, and gptvq.* metadata records how.
#include "arch.h"
#include "model.h"
#include "../io/gguf.h"
#include "../io/gguf_write.h"
#include "../quant/vqpack.h"

// Packed GPTVQ matrix `name`: its header as "gptvq.vq.<name>" and one tensor
// per part (docs/format.md).
static enum gq_status write_packed(struct gq_gguf_writer *w, const char *name, const struct gq_vqpack *pk) {
    char key[256];
    snprintf(key, sizeof key, "gptvq.vq.%s", name);
    enum gq_status s = gq_gguf_writer_set_arr(w, key, GQ_GGUF_INT32, &pk->h, GQ_VQPACK_HDR_N);
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

enum gq_status gq_model_save_gguf(const struct gq_model *m, const char *path, const struct gq_quantize_params *p,
                                  const struct gq_quant_report *rep) {
    if (!m->source_format || strcmp(m->source_format, "gguf") != 0)
        return gq_fail(GQ_ERR_UNSUPPORTED, "%s: writing GGUF needs a GGUF source model (this one is %s)", path,
                       m->source_format ? m->source_format : "?");
    const struct gq_gguf *g = m->source;
    const struct gq_arch *A = gq_arch_find(m->arch);
    if (!A) return gq_fail(GQ_ERR_UNSUPPORTED, "%s: architecture '%s' has no model description", path, m->arch);
    struct gq_gguf_writer *w = gq_gguf_writer_new(g->alignment);
    if (!w) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    static const char *const skip[] = {"gptvq.", "general.file_type", NULL};
    enum gq_status s = gq_gguf_writer_copy_kvs(w, g, skip);
    const char *method = p->method == GQ_METHOD_GPTVQ ? "gptvq" : p->method == GQ_METHOD_GPTQ ? "gptq" : "rtn";
    if (s == GQ_OK) s = gq_gguf_writer_set_str(w, "gptvq.version", GQ_VERSION_STRING);
    if (s == GQ_OK) s = gq_gguf_writer_set_str(w, "gptvq.format", m->packs ? "packed-vq" : "fake-quant-f32");
    if (s == GQ_OK && m->packs) s = gq_gguf_writer_set_i32(w, "gptvq.format_version", GQ_VQPACK_VERSION);
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
    } else {
        if (s == GQ_OK) s = gq_gguf_writer_set_i32(w, "gptvq.wbits", p->wbits);
        if (s == GQ_OK) s = gq_gguf_writer_set_i32(w, "gptvq.group_size", p->group_size);
    }
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
            snprintf(names[i], 48, "blk.%d.%s", rep->layers[i].layer, rep->layers[i].name);
        }
        if (s == GQ_OK) s = gq_gguf_writer_set_arr(w, "gptvq.rel_errors", GQ_GGUF_FLOAT32, err, (size_t)rep->n);
        if (s == GQ_OK) s = gq_gguf_writer_set_arr_str(w, "gptvq.layers", (const char *const *)names, (size_t)rep->n);
        free(err);
        free(names);
        free(buf);
    }
    for (uint64_t i = 0; s == GQ_OK && i < g->n_tensors; i++) {
        const struct gq_gguf_tensor *t = &g->tensors[i];
        int l = -1, off = 0;
        const struct gq_block_tensor *bt = NULL;
        if (sscanf(t->name, "blk.%d.%n", &l, &off) == 1 && off > 0 && l >= 0 && l < m->hp.n_layers)
            for (int k = 0; k < A->n_tensors; k++)
                if (A->tensors[k].kind == GQ_T_LINEAR && !strcmp(t->name + off, A->tensors[k].gguf)) bt = &A->tensors[k];
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
        struct gq_layer_w *L = &m->layers[l];
        s = gq_gguf_writer_add_tensor(w, t->name, GQ_TYPE_F32, 2, ne, *gq_block_slot(L, bt),
                                      (size_t)(rows * cols) * sizeof(float));
    }
    if (s == GQ_OK) s = gq_gguf_writer_write(w, path);
    gq_gguf_writer_free(w);
    return s;
}
