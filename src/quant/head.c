// head.c - GPTVQ of the output head (--head-bpv): the head is a linear whose
// input is the final norm of the last block's output, so once every block is
// quantized the calibration activations give its Hessian like any other
// linear's (H = 2/N · Σ x xᵀ over the normed final states). When the head is
// the token embedding (tied), the packed matrix serves both: the embedding
// rows are decoded from it. Several ranks share its slabs (gq_gptvq_quantize).
#include "backend/backend.h"
#include "format/ggml.h"
#include "format/vqpack.h"
#include "model/arch.h"
#include "model/model.h"
#include "quant/group.h"
#include "quant/quant.h"
#include "quant/vq.h"
#include "util/dist.h"

#include <math.h>

bool gq_head_tied(const struct gq_model *m) {
    const struct gq_gguf *g = m->source;
    return !gq_gguf_find_tensor(g, "output.weight") && !gq_gguf_find_kv(g, "gptvq.vq.output.weight");
}

enum gq_status gq_quantize_head(struct gq_model *m, const struct gq_quantize_params *p, const struct gq_quant_params *q,
                                const float *X, int n_win, int seqlen, struct gq_quant_layer_report *r) {
    const double t0 = gq_time_s();
    const int dim = m->hp.dim, V = m->hp.n_vocab;
    memset(r, 0, sizeof *r);
    if (!m->source_format || strcmp(m->source_format, "gguf") != 0)
        return gq_fail(GQ_ERR_UNSUPPORTED, "--head-bpv: the head is read from a GGUF source");
    const char *name = gq_head_tied(m) ? "token_embd.weight" : "output.weight";
    const struct gq_gguf *g = m->source;
    const struct gq_gguf_tensor *t = gq_gguf_find_tensor(g, name);
    if (!t || t->n_dims != 2 || t->ne[0] != dim || t->ne[1] != V)
        return gq_fail(GQ_ERR_FORMAT, "%s: --head-bpv: no %d x %d tensor '%s' to quantize", g->file.path, V, dim, name);

    // the head's Hessian: the final norm of the last block's outputs
    struct gq_hessian H;
    GQ_TRY(gq_hessian_init(&H, dim));
    float *xn = malloc(sizeof(float) * (size_t)GQ_HESSIAN_CHUNK * dim);
    float *Hf = malloc(sizeof(float) * (size_t)dim * dim);
    enum gq_status s = xn && Hf ? GQ_OK : gq_fail(GQ_ERR_NOMEM, "out of memory");
    // window by window (the exact sum's unit: the same whatever the ranks)
    for (int w = 0; s == GQ_OK && w < n_win; w++)
        for (int i = 0; s == GQ_OK && i < seqlen; i += GQ_HESSIAN_CHUNK) {
            const int n = seqlen - i < GQ_HESSIAN_CHUNK ? seqlen - i : GQ_HESSIAN_CHUNK;
            gq_final_norm(m, X + ((size_t)w * seqlen + i) * dim, n, xn);
            s = gq_hessian_add(&H, xn, n, dim);
            if (s == GQ_OK && i + n == seqlen) s = gq_hessian_fold(&H); // the unit: one window
        }
    if (s == GQ_OK) s = gq_hessian_allreduce(&H);
    if (s == GQ_OK) s = gq_hessian_finish(&H, Hf);
    gq_hessian_free(&H);
    free(xn);

    float *W = NULL;
    if (s == GQ_OK) s = gq_gguf_tensor_to_f32(g, t, &W);
    struct gq_vq_config cfg;
    struct gq_gptvq_params vp = p->vq;
    vp.bpv = p->head_bpv;
    vp.stages = 1, vp.outlier_frac = 0, vp.cb_svd_rank = 0; // the plain GPTVQ of the paper
    if (vp.dim_auto) vp.dim = gq_vq_auto_dim(&vp, vp.bpv, (int64_t)V * dim, dim % 4 == 0); // --vq-dim's rule at its budget
    if (s == GQ_OK)
        s = gq_vq_config_from_bpv(vp.bpv, vp.dim, 0, 0, vp.cb_format, vp.norm_block, 0, &cfg);
    if (s == GQ_OK && dim % cfg.d)
        s = gq_fail(GQ_ERR_ARG, "--head-bpv: the head's %d columns are not a multiple of --vq-dim %d", dim, cfg.d);
    struct gq_vq_tensor vt;
    struct gq_vq_result *res = calloc(1, sizeof *res);
    bool have_vt = false;
    if (s == GQ_OK && !res) s = gq_fail(GQ_ERR_NOMEM, "out of memory");
    // several ranks: slab k of the head is rank (k mod ranks)'s, then merged
    uint8_t own[GQ_VQ_MAX_SLABS];
    const bool split = gq_dist_size() > 1;
    for (int k = 0; k < GQ_VQ_MAX_SLABS; k++) own[k] = k % gq_dist_size() == gq_dist_rank();
    if (split) cfg.slab_own = own;
    if (s == GQ_OK) {
        s = gq_gptvq_quantize(W, V, dim, Hf, q, &vp, &cfg, p->seed ^ 0x4845414400000000ull, &vt, res);
        have_vt = s == GQ_OK;
    }
    if (s == GQ_OK && split) s = gq_vq_merge(&vt, res);
    if (s == GQ_OK && split) s = gq_gptvq_finish(&vt, W, res);
    free(Hf);
    uint8_t *buf = NULL;
    if (s == GQ_OK && !(m->head_pack = calloc(1, sizeof *m->head_pack))) s = gq_fail(GQ_ERR_NOMEM, "out of memory");
    if (s == GQ_OK) s = gq_vqpack_pack(&vt, m->head_pack, &buf);
    if (s == GQ_OK) s = gq_model_own(m, buf);
    if (s == GQ_OK) s = gq_model_own(m, m->head_pack);
    else free(m->head_pack), m->head_pack = NULL;
    if (s == GQ_OK) {
        r->layer = -1;
        snprintf(r->name, sizeof r->name, "%s", gq_head_tied(m) ? "token_embd" : "output");
        r->rows = V, r->cols = dim;
        gq_vq_report_fill(res, &vt, r);
    }
    if (have_vt) gq_vq_tensor_free(&vt);
    free(W), free(res);
    r->seconds = gq_time_s() - t0;
    if (s != GQ_OK) gq_error_prefix("output head");
    return s;
}
