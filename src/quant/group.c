// group.c - the linears of one input group of a block quantized (RTN, GPTQ,
// GPTVQ) and shared among the ranks of an mpirun run: engine.c's inner step.
//
// The units of work are slabs, runs of rows that the quantizers treat on
// their own (GPTVQ: whole row tiles, gq_gptvq_quantize; GPTQ: rows,
// gq_gptq_quantize), so a group splits over the ranks however few linears it
// has; the ranks' parts are merged bytewise and every rank then holds every
// linear, bit for bit what one process makes. RTN needs neither Hessian nor
// time: every rank rounds every linear itself.
#include "model/arch.h"
#include "model/model.h"
#include "quant/group.h"
#include "io/gguf.h"
#include "format/vqpack.h"
#include "util/dist.h"
#include "util/hadamard.h"

// Slabs per linear, GPTVQ's and GPTQ's alike (the rows of own[][] below).
#define MAX_SLABS 256
_Static_assert(GQ_VQ_MAX_SLABS == MAX_SLABS && GQ_GPTQ_MAX_SLABS == MAX_SLABS, "slab limits");

// The GGUF block type an RTN / GPTQ grid is (quantized on its f16 grid
// whether written so or not), or -1.
int gq_grid_gguf_type(const struct gq_quantize_params *p) {
    struct gq_quant_params q = {.wbits = p->wbits, .group_size = p->group_size, .sym = p->sym};
    return p->method != GQ_METHOD_GPTVQ ? gq_quant_gguf_type(&q) : -1;
}

int gq_quantize_gguf_type(const struct gq_quantize_params *p) { return p->fake_quant ? -1 : gq_grid_gguf_type(p); }

bool gq_quantize_rotates(const struct gq_quantize_params *p) {
    return p->rotate < 0 ? p->method == GQ_METHOD_GPTVQ : p->rotate > 0;
}

void gq_quant_params_from(const struct gq_quantize_params *p, struct gq_quant_params *q) {
    gq_quant_params_default(q);
    q->wbits = p->wbits;
    q->group_size = p->group_size;
    q->sym = p->sym;
    q->mse_clip = p->mse_clip;
    q->damp = p->damp;
    q->block_size = p->block_size;
    q->act_order = p->act_order;
    q->static_groups = p->static_groups;
    q->f16_grid = gq_grid_gguf_type(p) >= 0;
}

// Residual VQ (2 stages): the index bits b·d of one stage are split between
// the two (k = 2^(b·d/2) each, unless --k is given) and both codebooks are
// paid from the overhead, so l doubles for the same overhead.
static enum gq_status residual_config(const struct gq_quantize_params *p, double bpv, struct gq_vq_config *cfg) {
    const int d = cfg->d;
    if (!p->vq.k) {
        if (cfg->log2k % 2)
            return gq_fail(GQ_ERR_ARG, "--residual 2: %d index bits per vector do not split evenly between two "
                           "codebooks; give --k", cfg->log2k);
        cfg->log2k /= 2;
        cfg->k = 1 << cfg->log2k;
    }
    cfg->index_bpv = 2.0 * cfg->log2k / d;
    double o = bpv - cfg->index_bpv - (p->vq.norm_block ? 4.0 / p->vq.norm_block : 0);
    int bc = gq_cb_bits(p->vq.cb_format);
    if (!p->vq.group) {
        if (!(o > 0))
            return gq_fail(GQ_ERR_ARG, "--residual 2: --bpv %g leaves no room for the codebooks (indices take %g)",
                           bpv, cfg->index_bpv);
        cfg->l = (int64_t)ceil(2.0 * cfg->k * d * bc / o);
    }
    cfg->overhead_bpv = 2.0 * cfg->k * d * bc / (double)cfg->l + (p->vq.norm_block ? 4.0 / p->vq.norm_block : 0);
    return GQ_OK;
}

// The GPTVQ configuration of a budget of bpv bits per value.
enum gq_status gq_linear_config(const struct gq_quantize_params *p, double bpv, struct gq_vq_config *cfg) {
    GQ_TRY(gq_vq_config_from_bpv(bpv, p->vq.dim, p->vq.k, p->vq.group, p->vq.cb_format, p->vq.norm_block,
                                 p->vq.cb_svd_rank, cfg));
    return p->vq.stages == 2 ? residual_config(p, bpv, cfg) : GQ_OK;
}

int gq_vq_auto_dim(const struct gq_gptvq_params *v, double bpv, int64_t min_weights, bool cols4) {
    struct gq_vq_config c;
    if (!cols4 || gq_vq_config_from_bpv(bpv, 4, 0, 0, v->cb_format, v->norm_block, 0, &c) != GQ_OK) return 2;
    return c.log2k == 8 && c.l <= 2 * min_weights ? 4 : 2;
}

// RTN of one linear in place; r->rel_error = ‖W − Q‖² / ‖W‖².
static enum gq_status rtn_linear(float *W, int rows, int cols, const struct gq_quant_params *q, float *scales,
                                 float *zeros, struct gq_quant_layer_report *r) {
    const size_t n = (size_t)rows * cols;
    float *Q = malloc(n * sizeof *Q);
    if (!Q) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    enum gq_status s = gq_rtn_quantize(W, rows, cols, q, Q, scales, zeros);
    if (s == GQ_OK) {
        double e = 0, w2 = 0;
        for (size_t i = 0; i < n; i++) {
            double d = (double)W[i] - Q[i];
            e += d * d;
            w2 += (double)W[i] * W[i];
        }
        r->rel_error = w2 > 0 ? e / w2 : 0;
        memcpy(W, Q, n * sizeof *W);
    }
    free(Q);
    return s;
}

// The start and end of one linear: a copy of its weights to quantize in
// place; then the copy replaces the weight in slot `t` of block l (owned by
// the model) and the report gets its name, shape and time.
// R (--rotate, else NULL): the copy is W Rᵀ (each row rotated), the stored
// weights Q R (each row rotated back), so the model computes Q (R x).
static float *linear_copy(const struct gq_model *m, int l, const struct gq_block_tensor *t, const struct gq_rot *R) {
    const float **slot = gq_block_slot(&m->layers[l], t);
    const int rows = (int)gq_dim_value(&m->hp, t->rows);
    const size_t n = (size_t)rows * gq_dim_value(&m->hp, t->cols);
    float *W = malloc(n * sizeof *W);
    if (W) memcpy(W, *slot, n * sizeof *W);
    else gq_fail(GQ_ERR_NOMEM, "out of memory");
    if (W && R) gq_rot_rows_inplace(R, W, rows, false);
    return W;
}

static enum gq_status linear_store(struct gq_model *m, int l, const struct gq_block_tensor *t, float *W, double t0,
                                   const struct gq_rot *R, struct gq_quant_layer_report *r) {
    if (R) gq_rot_rows_inplace(R, W, (int)gq_dim_value(&m->hp, t->rows), true);
    enum gq_status s = gq_model_own(m, W);
    if (s != GQ_OK) {
        free(W);
        return s;
    }
    *gq_block_slot(&m->layers[l], t) = W;
    r->layer = l;
    snprintf(r->name, sizeof r->name, "%s", t->name);
    r->rows = (int)gq_dim_value(&m->hp, t->rows);
    r->cols = (int)gq_dim_value(&m->hp, t->cols);
    r->seconds = gq_time_s() - t0;
    return GQ_OK;
}

// RTN (H NULL) or GPTQ of one linear in flight. RTN is cheap and needs no
// Hessian: every rank rounds every linear itself. GPTQ: this rank's slabs
// (gq_gptq_quantize), the others' zero until merged.
struct sq_job {
    float *W, *sc, *zr; // the weights quantized in place; GGUF block grids (rows, ng) or NULL
    int rows, cols, ng;
    struct gq_gptq_result res;
    double rel_rtn; // RTN: ‖W − Q‖² / ‖W‖²
    double t0;
    bool started;
};

static struct gq_gguf_blocks *gguf_slot(struct gq_model *m, int l, const struct gq_block_tensor *t) {
    const struct gq_arch *A = gq_arch_find(m->arch);
    return m->blocks && gq_dim_value(&m->hp, t->cols) % 32 == 0
               ? &m->blocks[(size_t)l * A->n_tensors + (size_t)(t - A->tensors)]
               : NULL;
}

static void sq_free(struct sq_job *j) {
    free(j->W), free(j->sc), free(j->zr);
    j->W = j->sc = j->zr = NULL;
    j->started = false;
}

// own: this rank's slabs (NULL: all); any: it has one at least (else only
// zeroed buffers).
static enum gq_status sq_start(struct gq_model *m, int l, const struct gq_block_tensor *t, const float *H,
                               const struct gq_quantize_params *p, const uint8_t *own, bool any, const struct gq_rot *R,
                               struct sq_job *j) {
    j->t0 = gq_time_s();
    j->rows = (int)gq_dim_value(&m->hp, t->rows), j->cols = (int)gq_dim_value(&m->hp, t->cols);
    struct gq_quant_params q;
    gq_quant_params_from(p, &q);
    j->ng = gq_quant_n_groups(&q, j->cols);
    const size_t ng = (size_t)j->ng * j->rows;
    const bool gb = gguf_slot(m, l, t) != NULL;
    j->W = any ? linear_copy(m, l, t, R) : calloc((size_t)j->rows * j->cols, sizeof(float));
    j->sc = gb ? calloc(ng, sizeof(float)) : NULL;
    j->zr = gb ? calloc(ng, sizeof(float)) : NULL;
    j->started = true;
    enum gq_status s = !j->W || (gb && (!j->sc || !j->zr)) ? gq_fail(GQ_ERR_NOMEM, "out of memory") : GQ_OK;
    j->res = (struct gq_gptq_result){.scales = j->sc, .zeros = j->zr, .slab_rows = p->vq.slab_rows, .slab_own = own};
    j->res.n_slab = gq_gptq_n_slabs(j->rows, H ? p->vq.slab_rows : 0);
    if (s == GQ_OK && H && any) {
        s = gq_gptq_quantize(j->W, j->rows, j->cols, H, &q, &j->res);
    } else if (s == GQ_OK && !H) {
        struct gq_quant_layer_report r = {0};
        s = rtn_linear(j->W, j->rows, j->cols, &q, j->sc, j->zr, &r);
        j->rel_rtn = r.rel_error;
    }
    if (s != GQ_OK) {
        sq_free(j);
        gq_error_prefix("blk.%d.%s", l, t->name);
    }
    return s;
}

// The ranks' parts of one GPTQ linear put together: the rows of the slabs
// this rank did not quantize zeroed, then every byte OR-ed over the ranks.
static enum gq_status sq_merge(struct sq_job *j, const uint8_t *own) {
    const int ns = j->res.n_slab;
    for (int sl = 0; sl < ns; sl++) {
        if (own[sl]) continue;
        int64_t r0, r1;
        gq_dist_span(j->rows, sl, ns, &r0, &r1);
        memset(j->W + r0 * j->cols, 0, sizeof(float) * (size_t)(r1 - r0) * j->cols);
        memset(&j->res.slab[sl], 0, sizeof j->res.slab[sl]);
    }
    const size_t ng = (size_t)j->ng * j->rows;
    GQ_TRY(gq_dist_or(j->W, sizeof(float) * j->rows * j->cols));
    if (j->sc) GQ_TRY(gq_dist_or(j->sc, sizeof(float) * ng)); // zero where not computed (calloc)
    if (j->zr) GQ_TRY(gq_dist_or(j->zr, sizeof(float) * ng));
    GQ_TRY(gq_dist_or(j->res.slab, sizeof j->res.slab[0] * ns));
    struct {
        double damp_rel;
        int32_t n_dead, pad;
    } hv = {j->res.damp_rel, j->res.n_dead, 0}; // equal on every rank that has them
    GQ_TRY(gq_dist_or(&hv, sizeof hv));
    j->res.damp_rel = hv.damp_rel, j->res.n_dead = hv.n_dead;
    gq_gptq_result_total(&j->res);
    return GQ_OK;
}

// The quantized linear onto the model (and its GGUF blocks) and the report r;
// j's buffers are used or freed.
static enum gq_status sq_finish(struct gq_model *m, int l, const struct gq_block_tensor *t, const float *H,
                                const struct gq_quantize_params *p, const struct gq_rot *R, struct sq_job *j,
                                struct gq_quant_layer_report *r) {
    memset(r, 0, sizeof *r);
    if (H) {
        r->rel_error = j->res.rel_error;
        r->rel_error_rtn = j->res.rtn_rel_error; // what GPTQ's error feedback gained over rounding
        r->rtn_fallback = j->res.rtn_fallback;
        r->n_slab = j->res.n_slab;
        for (int s = 0; s < j->res.n_slab; s++) r->n_kept += j->res.slab[s].rtn_fallback;
        r->damp = j->res.damp_rel;
        r->n_dead = j->res.n_dead;
    } else {
        r->rel_error = j->rel_rtn;
    }
    struct gq_gguf_blocks *gb = gguf_slot(m, l, t);
    enum gq_status s = GQ_OK;
    if (gb) {
        struct gq_quant_params q;
        gq_quant_params_from(p, &q);
        const int type = gq_quantize_gguf_type(p);
        const size_t bytes = gq_ggml_row_size((enum gq_ggml_type)type, j->cols) * (size_t)j->rows;
        uint8_t *buf = malloc(bytes);
        s = buf ? gq_quant_gguf_encode(&q, j->W, j->rows, j->cols, j->sc, j->zr, buf)
                : gq_fail(GQ_ERR_NOMEM, "out of memory");
        if (s == GQ_OK) s = gq_model_own(m, buf);
        else free(buf);
        if (s == GQ_OK) *gb = (struct gq_gguf_blocks){type, buf, bytes};
    }
    float *W = j->W;
    j->W = NULL;
    sq_free(j);
    if (s != GQ_OK) {
        free(W);
        gq_error_prefix("blk.%d.%s", l, t->name);
        return s;
    }
    return linear_store(m, l, t, W, j->t0, R, r);
}

// One more report in rep (rep->n), and its progress line.
static void count_linear(struct gq_quant_report *rep, const struct gq_quantize_params *p, int l,
                         struct gq_progress *pr) {
    const struct gq_quant_layer_report *r = &rep->layers[rep->n++];
    char extra[96];
    if (p->method == GQ_METHOD_GPTVQ) {
        rep->vq_bits += r->bits, rep->vq_weights += (int64_t)r->rows * r->cols;
        snprintf(extra, sizeof extra, "blk.%d.%s rel %.3g, %.4f bpv", l, r->name, r->rel_error, r->bpv);
    } else if (p->method == GQ_METHOD_GPTQ) {
        snprintf(extra, sizeof extra, "blk.%d.%s rel %.3g (rtn %.3g)", l, r->name, r->rel_error, r->rel_error_rtn);
    } else {
        snprintf(extra, sizeof extra, "blk.%d.%s rel %.3g", l, r->name, r->rel_error);
    }
    gq_progress_update(pr, rep->n, extra);
}

// ---------------------------------------------------------------------------
// GPTVQ: slabs as the units. Each rank quantizes its slabs of every linear of
// the group first (vq_start), then the linears are merged one by one
// (vq_merge) and finished on every rank alike (vq_finish). GPTQ the same way
// (sq_*, below).

struct vq_job {
    float *W; // the linear's weights; its quantized copy once finished
    struct gq_vq_tensor vt;
    struct gq_vq_result res;
    double t0;
    bool started;
};

uint64_t gq_linear_seed(const struct gq_model *m, const struct gq_quantize_params *p, int l,
                        const struct gq_block_tensor *t) {
    return p->seed ^ ((uint64_t)l << 20) ^ (uint64_t)(t - gq_arch_find(m->arch)->tensors) << 8;
}

static enum gq_status vq_start(struct gq_model *m, int l, const struct gq_block_tensor *t, const float *H,
                               const struct gq_quantize_params *p, const struct gq_vq_config *cfg,
                               const struct gq_rot *R, struct vq_job *j) {
    j->t0 = gq_time_s();
    const int rows = (int)gq_dim_value(&m->hp, t->rows), cols = (int)gq_dim_value(&m->hp, t->cols);
    if (!(j->W = linear_copy(m, l, t, R))) return GQ_ERR_NOMEM;
    struct gq_quant_params q;
    gq_quant_params_from(p, &q);
    enum gq_status s = gq_gptvq_quantize(j->W, rows, cols, H, &q, &p->vq, cfg, gq_linear_seed(m, p, l, t), &j->vt,
                                         &j->res);
    if (s != GQ_OK) {
        free(j->W), j->W = NULL;
        gq_error_prefix("blk.%d.%s", l, t->name);
        return s;
    }
    j->started = true;
    return GQ_OK;
}

enum gq_status gq_vq_merge(struct gq_vq_tensor *T, struct gq_vq_result *res) {
    const size_t nv = (size_t)(T->cols - T->n_out) / T->d, ng = (size_t)T->stages * T->n_rt * T->n_ct;
    if (T->svd_rank && !T->svd_u) { // one slab, someone else's
        const size_t r = (size_t)T->svd_rank;
        T->svd_u = calloc((size_t)T->n_rt * T->n_ct * r, sizeof(float));
        T->svd_uscale = calloc(r, sizeof(float));
        T->svd_v = calloc((size_t)T->k * r, sizeof(float));
        if (!T->svd_u || !T->svd_uscale || !T->svd_v) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    }
    GQ_TRY(gq_dist_or(T->cb, sizeof(float) * ng * T->k * T->d));
    GQ_TRY(gq_dist_or(T->cb_scale, sizeof(float) * ng));
    GQ_TRY(gq_dist_or(T->idx, sizeof(uint16_t) * T->stages * T->rows * nv));
    if (T->n_out) GQ_TRY(gq_dist_or(T->outl, sizeof(uint16_t) * T->rows * T->n_out));
    if (T->norm_block) {
        GQ_TRY(gq_dist_or(T->sint, (size_t)T->rows * T->n_nblk));
        GQ_TRY(gq_dist_or(T->norm, sizeof *T->norm * T->n_rt * T->n_ct));
    }
    if (T->svd_rank) {
        GQ_TRY(gq_dist_or(T->svd_u, sizeof(float) * T->n_rt * T->n_ct * T->svd_rank));
        GQ_TRY(gq_dist_or(T->svd_uscale, sizeof(float) * T->svd_rank));
        GQ_TRY(gq_dist_or(T->svd_v, sizeof(float) * T->k * T->svd_rank));
    }
    GQ_TRY(gq_dist_or(res->slab, sizeof res->slab[0] * res->n_slab));
    struct {
        double damp_abs, damp_rel;
        int32_t n_dead, n_tries;
    } hv = {res->damp_abs, res->damp_rel, res->n_dead, res->n_tries}; // equal on every rank that has them
    GQ_TRY(gq_dist_or(&hv, sizeof hv));
    res->damp_abs = hv.damp_abs, res->damp_rel = hv.damp_rel, res->n_dead = hv.n_dead, res->n_tries = hv.n_tries;
    return GQ_OK;
}

// The finished tensor onto the model (its decoded weights, its packed form)
// and the report r. finish: the totals and decode are still to do (merged
// from several ranks). Frees j's tensor; W goes to the model.
static enum gq_status vq_finish(struct gq_model *m, int l, const struct gq_block_tensor *t, struct vq_job *j,
                                bool finish, const struct gq_rot *R, struct gq_quant_layer_report *r) {
    enum gq_status s = finish ? gq_gptvq_finish(&j->vt, j->W, &j->res) : GQ_OK;
    if (R) j->vt.rot = true, j->vt.rot_seed = R->seed; // from here on it decodes to W' R (W is rotated back below)
    memset(r, 0, sizeof *r);
    if (s == GQ_OK && m->packs) { // packed output: keep the compressed form
        uint8_t *buf = NULL;
        const struct gq_arch *A = gq_arch_find(m->arch);
        s = gq_vqpack_pack(&j->vt, &m->packs[(size_t)l * A->n_tensors + (size_t)(t - A->tensors)], &buf);
        if (s == GQ_OK) s = gq_model_own(m, buf);
    }
    if (s == GQ_OK) gq_vq_report_fill(&j->res, &j->vt, r);
    gq_vq_tensor_free(&j->vt);
    j->started = false;
    float *W = j->W;
    j->W = NULL;
    if (s != GQ_OK) {
        free(W);
        gq_error_prefix("blk.%d.%s", l, t->name);
        return s;
    }
    return linear_store(m, l, t, W, j->t0, R, r);
}

struct slab_unit {
    double w;
    int i, s;
};

static int unit_cmp(const void *pa, const void *pb) { // heaviest first, then in order
    const struct slab_unit *a = pa, *b = pb;
    if (a->w != b->w) return a->w < b->w ? 1 : -1;
    return a->i != b->i ? a->i - b->i : a->s - b->s;
}

// own[i][s]: this rank quantizes slab s of linear i (ns[i] slabs). The
// heaviest slabs first (rows × cols / slabs), each to the least loaded rank.
static enum gq_status assign_slabs(const struct gq_model *m, const struct gq_block_tensor *const *lin, int n,
                                   const int *ns, uint8_t (*own)[MAX_SLABS]) {
    int nu = 0;
    for (int i = 0; i < n; i++) nu += ns[i];
    struct slab_unit *u = malloc(sizeof *u * (size_t)nu);
    double *load = calloc((size_t)gq_dist_size(), sizeof(double));
    if (!u || !load) {
        free(u), free(load);
        return gq_fail(GQ_ERR_NOMEM, "out of memory");
    }
    nu = 0;
    for (int i = 0; i < n; i++)
        for (int s = 0; s < ns[i]; s++)
            u[nu++] = (struct slab_unit){
                (double)gq_dim_value(&m->hp, lin[i]->rows) * gq_dim_value(&m->hp, lin[i]->cols) / ns[i], i, s};
    qsort(u, (size_t)nu, sizeof *u, unit_cmp);
    for (int a = 0; a < nu; a++) {
        int r = 0;
        for (int j = 1; j < gq_dist_size(); j++)
            if (load[j] < load[r]) r = j;
        load[r] += u[a].w;
        own[u[a].i][u[a].s] = r == gq_dist_rank();
    }
    free(u), free(load);
    return GQ_OK;
}

static enum gq_status vq_group(struct gq_model *m, int l, const struct gq_block_tensor *const *lin, int n,
                               const float *H, const struct gq_quantize_params *p, const struct gq_vq_config *cfg,
                               const float *bpv_map, const struct gq_rot *R, struct gq_quant_report *rep,
                               struct gq_progress *pr) {
    const struct gq_arch *A = gq_arch_find(m->arch);
    const bool one = gq_dist_size() == 1;
    struct gq_vq_config lc[64];
    int ns[64];
    for (int i = 0; i < n; i++) {
        lc[i] = *cfg;
        if (bpv_map) GQ_TRY(gq_linear_config(p, bpv_map[(size_t)l * A->n_tensors + (size_t)(lin[i] - A->tensors)], &lc[i]));
        ns[i] = gq_gptvq_n_slabs((int)gq_dim_value(&m->hp, lin[i]->rows), (int)gq_dim_value(&m->hp, lin[i]->cols), &p->vq,
                                 &lc[i]);
    }
    uint8_t(*own)[MAX_SLABS] = calloc((size_t)n, sizeof *own);
    struct vq_job *job = calloc((size_t)n, sizeof *job);
    enum gq_status s = own && job ? assign_slabs(m, lin, n, ns, own) : gq_fail(GQ_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n && s == GQ_OK; i++) {
        lc[i].slab_own = own[i];
        s = vq_start(m, l, lin[i], H, p, &lc[i], R, &job[i]);
        if (s == GQ_OK && one) { // one rank: every slab done, nothing to wait for
            s = vq_finish(m, l, lin[i], &job[i], false, R, &rep->layers[rep->n]);
            if (s == GQ_OK) count_linear(rep, p, l, pr);
        }
    }
    for (int i = 0; i < n && s == GQ_OK && !one; i++) {
        s = gq_vq_merge(&job[i].vt, &job[i].res);
        if (s == GQ_OK) s = vq_finish(m, l, lin[i], &job[i], true, R, &rep->layers[rep->n]);
        if (s == GQ_OK) count_linear(rep, p, l, pr);
    }
    for (int i = 0; job && i < n; i++)
        if (job[i].started) free(job[i].W), gq_vq_tensor_free(&job[i].vt);
    free(own), free(job);
    return s;
}

// RTN (every rank all of it) and GPTQ (slabs, as vq_group).
static enum gq_status sq_group(struct gq_model *m, int l, const struct gq_block_tensor *const *lin, int n,
                               const float *H, const struct gq_quantize_params *p, const struct gq_rot *R,
                               struct gq_quant_report *rep, struct gq_progress *pr) {
    const bool split = H && gq_dist_size() > 1;
    int ns[64];
    for (int i = 0; i < n; i++) ns[i] = gq_gptq_n_slabs((int)gq_dim_value(&m->hp, lin[i]->rows), H ? p->vq.slab_rows : 0);
    uint8_t(*own)[MAX_SLABS] = calloc((size_t)n, sizeof *own);
    struct sq_job *job = calloc((size_t)n, sizeof *job);
    enum gq_status s = own && job ? GQ_OK : gq_fail(GQ_ERR_NOMEM, "out of memory");
    if (s == GQ_OK && split) s = assign_slabs(m, lin, n, ns, own);
    for (int i = 0; i < n && s == GQ_OK; i++) {
        bool any = !split;
        for (int k = 0; k < ns[i] && split; k++) any |= own[i][k] != 0;
        s = sq_start(m, l, lin[i], H, p, split ? own[i] : NULL, any, R, &job[i]);
        if (s == GQ_OK && !split) { // nothing to wait for
            s = sq_finish(m, l, lin[i], H, p, R, &job[i], &rep->layers[rep->n]);
            if (s == GQ_OK) count_linear(rep, p, l, pr);
        }
    }
    for (int i = 0; i < n && s == GQ_OK && split; i++) {
        s = sq_merge(&job[i], own[i]);
        if (s == GQ_OK) s = sq_finish(m, l, lin[i], H, p, R, &job[i], &rep->layers[rep->n]);
        if (s == GQ_OK) count_linear(rep, p, l, pr);
    }
    for (int i = 0; job && i < n; i++)
        if (job[i].started) sq_free(&job[i]);
    free(own), free(job);
    return s;
}

// The linears of block l that read input g (g < 0: all of them, for RTN),
// in the architecture's order: quantized by the ranks, then shared.
enum gq_status gq_quantize_group(struct gq_model *m, int l, int g, const float *H, const struct gq_quantize_params *p,
                                 const struct gq_vq_config *cfg, const float *bpv_map, struct gq_quant_report *rep,
                                 struct gq_progress *pr) {
    const struct gq_arch *A = gq_arch_find(m->arch);
    const struct gq_block_tensor *lin[64];
    int n = 0;
    for (int i = 0; i < A->n_tensors && n < 64; i++)
        if (A->tensors[i].kind == GQ_T_LINEAR && (g < 0 || (int)A->tensors[i].input == g)) lin[n++] = &A->tensors[i];
    if (!gq_quantize_rotates(p)) {
        if (H && p->method == GQ_METHOD_GPTVQ) return vq_group(m, l, lin, n, H, p, cfg, bpv_map, NULL, rep, pr);
        return sq_group(m, l, lin, n, H, p, NULL, rep, pr);
    }
    // --rotate: every linear of the group reads the same input, so one R
    // (g < 0, RTN: the widths may differ, one linear at a time)
    enum gq_status s = GQ_OK;
    for (int i0 = 0; i0 < n && s == GQ_OK;) {
        const int cols = (int)gq_dim_value(&m->hp, lin[i0]->cols);
        int i1 = i0 + 1;
        while (i1 < n && gq_dim_value(&m->hp, lin[i1]->cols) == cols) i1++;
        struct gq_rot R;
        GQ_TRY(gq_rot_init(&R, cols, gq_rot_seed(p->seed)));
        float *Hr = H ? gq_rot_hessian(H, &R) : NULL;
        if (H && !Hr) s = gq_fail(GQ_ERR_NOMEM, "out of memory");
        else if (H && p->method == GQ_METHOD_GPTVQ) s = vq_group(m, l, lin + i0, i1 - i0, Hr, p, cfg, bpv_map, &R, rep, pr);
        else s = sq_group(m, l, lin + i0, i1 - i0, Hr, p, &R, rep, pr);
        free(Hr), gq_rot_free(&R);
        i0 = i1;
    }
    return s;
}
