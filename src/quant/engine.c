// engine.c - the quantization engine: sequential layer-wise calibration
// (GPTQ's protocol) around the per-matrix quantizers of quant.h.
//
// For each decoder block, for each linear group in execution order (q/k/v,
// o, gate/up, down: the model description table says which linears share an
// input), the block is run over every calibration window up to that group's
// input, H = 2/N Σ x xᵀ is accumulated (double), and the group's linears are
// quantized. Once o is quantized, the pass for the FFN input runs in place and
// leaves the post-attention residual in the activation buffer, so attention
// runs twice per block (for the o input, and with the quantized o) instead of
// once per linear group. Each window's first token (an attention sink in
// most LLMs) counts with weight sink_weight in every H; see gptvq.h. Because the block's weight slots already point at the quantized
// copies of the earlier groups, each H sees the quantized upstream
// ("true-sequential"). Finally the windows run through the whole quantized
// block to become the next block's inputs. Memory: one (nsamples, seqlen, dim)
// activation buffer plus one block's scratch.
#include "model/arch.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "backend/backend.h"
#include "model/forward_cuda.h"
#include "io/gguf.h"
#include "kern/qmatmul.h"
#include "kern/vmath.h"
#include "quant/ckpt.h"
#include "quant/group.h"
#include "quant/quant.h"
#include "quant/vq.h"
#include "format/vqpack.h"
#include "util/dist.h"
#include "util/hadamard.h"

#include <cblas.h>
#include <cjson/cJSON.h>
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif

void gq_quantize_params_default(struct gq_quantize_params *p) {
    memset(p, 0, sizeof *p);
    p->method = GQ_METHOD_GPTQ;
    p->wbits = 4;
    p->group_size = 128;
    p->act_order = true;
    p->damp = 0.01f;
    p->block_size = 128;
    p->nsamples = 128;
    p->seqlen = 0;
    p->progress = true;
    p->vq.dim = 0;    // auto (gq_quantize_resolve)
    p->vq.bpv = 2.125;
    p->vq.em_iters = 100;
    p->vq.em_init = GQ_VQ_INIT_MAHALANOBIS;
    p->vq.cb_update = GQ_CB_UPDATE_EXACT;
    p->vq.gd_iters = 25;
    p->vq.cb_format = GQ_CB_INT8;
    p->vq.stages = 1;
    p->vq.norm_block = 64; // wins at every budget on both texts (docs/results.md)
    p->vq.slab_rows = 256;
    p->finetune_steps = -1; // auto (gq_quantize_resolve)
    p->ft_lr = 0.003;
    p->ft_batch = 4;
    p->embed_type = -1;
    p->rotate = -1;
}

static const char *method_name(enum gq_method m) {
    return m == GQ_METHOD_GPTVQ ? "gptvq" : m == GQ_METHOD_GPTQ ? "gptq" : "rtn";
}

void gq_quant_report_free(struct gq_quant_report *r) {
    free(r->layers);
    memset(r, 0, sizeof *r);
}

// Data-free calibration (as LLM-QAT's data generation): each window starts
// with a token drawn uniformly from the vocabulary (end-of-generation tokens
// excluded) and continues with tokens sampled from the model's own next-token
// distribution at temperature 1 (EOG tokens masked, so every window has
// seqlen tokens). Sequences are decoded in lockstep, SAMPLE_WAVE at a time,
// so each step is one batched forward.
#define SAMPLE_WAVE 32
static int32_t draw(const float *logits, int n, const struct gq_tokenizer *tok, double *prob, uint64_t *rng) {
    float mx = -INFINITY;
    for (int i = 0; i < n; i++)
        if (!gq_tokenizer_is_eog(tok, i) && logits[i] > mx) mx = logits[i];
    double z = 0;
    for (int i = 0; i < n; i++) z += prob[i] = gq_tokenizer_is_eog(tok, i) ? 0.0 : exp((double)logits[i] - mx);
    double r = gq_rng_uniform(rng) * z, acc = 0;
    int32_t last = 0;
    for (int i = 0; i < n; i++) {
        if (prob[i] == 0) continue;
        acc += prob[i];
        last = i;
        if (r < acc) return i;
    }
    return last;
}

static enum gq_status sample_windows(const struct gq_model *m, const struct gq_quantize_params *p, int seqlen,
                                     int32_t **out, struct gq_quant_report *rep) {
    const int V = m->hp.n_vocab, wave = p->nsamples < SAMPLE_WAVE ? p->nsamples : SAMPLE_WAVE;
    int32_t *w = malloc(sizeof *w * (size_t)p->nsamples * seqlen);
    float *logits = malloc(sizeof(float) * (size_t)wave * V);
    double *prob = malloc(sizeof(double) * (size_t)V);
    int32_t *tok = malloc(sizeof(int32_t) * wave);
    struct gq_context **seqs = calloc((size_t)wave, sizeof *seqs), *batch = NULL;
    enum gq_status s = GQ_OK;
    if (!w || !logits || !prob || !tok || !seqs) s = gq_fail(GQ_ERR_NOMEM, "out of memory");
    if (s == GQ_OK) s = gq_context_new(m, seqlen, &batch);
    for (int i = 0; i < wave && s == GQ_OK; i++) s = gq_context_new(m, seqlen, &seqs[i]);
    if (s == GQ_OK && p->progress)
        fprintf(stderr, "quantize: data-free calibration: sampling %d sequences of %d tokens from the model, %d at a time\n"
                        "quantize: KV caches %.1f MiB\n",
                p->nsamples, seqlen, wave,
                (wave + 1.0) * 2.0 * m->hp.n_layers * seqlen * m->hp.n_kv_heads * m->hp.head_dim * sizeof(float) / 1048576.0);
    struct gq_progress pr;
    gq_progress_start(&pr, "sample", (int64_t)p->nsamples * seqlen, p->progress && s == GQ_OK);
    uint64_t rng = p->seed ^ 0x5DA7AF1EEull;
    for (int w0 = 0; w0 < p->nsamples && s == GQ_OK; w0 += wave) {
        int nb = p->nsamples - w0 < wave ? p->nsamples - w0 : wave;
        for (int i = 0; i < nb; i++) {
            gq_context_reset(seqs[i]);
            do tok[i] = (int32_t)(gq_splitmix64(&rng) % (uint64_t)V);
            while (gq_tokenizer_is_eog(m->tok, tok[i]));
        }
        for (int t = 0; t < seqlen && s == GQ_OK; t++) {
            for (int i = 0; i < nb; i++) w[(size_t)(w0 + i) * seqlen + t] = tok[i];
            if (t + 1 == seqlen) break;
            s = gq_forward_lockstep(batch, seqs, nb, tok, logits);
            for (int i = 0; i < nb && s == GQ_OK; i++) tok[i] = draw(logits + (size_t)i * V, V, m->tok, prob, &rng);
            gq_progress_update(&pr, (int64_t)w0 * seqlen + (int64_t)nb * (t + 1), NULL);
        }
    }
    gq_progress_end(&pr);
    for (int i = 0; i < wave && seqs; i++) gq_context_free(seqs[i]);
    gq_context_free(batch);
    free(seqs), free(tok), free(prob), free(logits);
    if (s != GQ_OK) {
        free(w);
        return s;
    }
    rep->calib_tokens = (int64_t)p->nsamples * seqlen;
    snprintf(rep->calib_source, sizeof rep->calib_source,
             "data-free: %d sequences of %d tokens sampled from the model (temperature 1), seed %llu", p->nsamples,
             seqlen, (unsigned long long)p->seed);
    *out = w;
    return GQ_OK;
}

// nsamples random windows of seqlen tokens of the calibration text, tokenized
// once (WikiText files joined as the gptq ppl protocol does, BOS if the model
// adds one), as GPTQ's get_wikitext2 draws them.
static enum gq_status calib_windows(const struct gq_model *m, const struct gq_quantize_params *p, int seqlen,
                                    int32_t **out, struct gq_quant_report *rep) {
    *out = NULL;
    if (!p->calib_path) return sample_windows(m, p, seqlen, out, rep);
    if (p->calib_mix > 0) { // sampled windows first, then the text's
        if (p->calib_mix > p->nsamples)
            return gq_fail(GQ_ERR_ARG, "--calib-mix %d: more than the %d windows (--nsamples)", p->calib_mix, p->nsamples);
        struct gq_quantize_params q = *p;
        q.nsamples = p->calib_mix, q.calib_path = NULL;
        int32_t *a = NULL, *b = NULL;
        char src[sizeof rep->calib_source];
        GQ_TRY(sample_windows(m, &q, seqlen, &a, rep));
        snprintf(src, sizeof src, "%s", rep->calib_source);
        q = *p, q.calib_mix = 0, q.nsamples = p->nsamples - p->calib_mix;
        if (q.nsamples > 0) {
            enum gq_status s = calib_windows(m, &q, seqlen, &b, rep);
            int32_t *w = s == GQ_OK ? realloc(a, sizeof *a * (size_t)p->nsamples * seqlen) : NULL;
            if (!w) {
                free(a), free(b);
                return s == GQ_OK ? gq_fail(GQ_ERR_NOMEM, "out of memory") : s;
            }
            a = w;
            memcpy(a + (size_t)p->calib_mix * seqlen, b, sizeof *a * (size_t)q.nsamples * seqlen);
            free(b);
            char txt[sizeof rep->calib_source];
            snprintf(txt, sizeof txt, "%s", rep->calib_source);
            snprintf(rep->calib_source, sizeof rep->calib_source, "%.120s; and %.120s", src, txt);
        }
        rep->calib_tokens = (int64_t)p->nsamples * seqlen;
        *out = a;
        return GQ_OK;
    }
    char *text;
    size_t len;
    GQ_TRY(gq_read_file(p->calib_path, &text, &len));
    if (gq_ppl_is_wikitext_file(p->calib_path)) {
        size_t jl;
        char *j = gq_wikitext_join(text, len, &jl);
        free(text);
        if (!j) return gq_fail(GQ_ERR_NOMEM, "out of memory");
        text = j;
        len = jl;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    bool add_bos = gq_tokenizer_add_bos(m->tok) && gq_tokenizer_bos(m->tok) >= 0;
    enum gq_status s = gq_tokenize(m->tok, text, len, add_bos, false, &ids, &n);
    free(text);
    if (s != GQ_OK) {
        gq_error_prefix("%s", p->calib_path);
        return s;
    }
    if (n <= (size_t)seqlen) {
        free(ids);
        return gq_fail(GQ_ERR_ARG, "%s: %zu tokens, too few for calibration windows of %d", p->calib_path, n, seqlen);
    }
    int32_t *w = malloc((size_t)p->nsamples * seqlen * sizeof *w);
    if (!w) {
        free(ids);
        return gq_fail(GQ_ERR_NOMEM, "out of memory");
    }
    uint64_t rng = p->seed;
    for (int i = 0; i < p->nsamples; i++) {
        size_t start = (size_t)(gq_splitmix64(&rng) % (uint64_t)(n - (size_t)seqlen));
        memcpy(w + (size_t)i * seqlen, ids + start, (size_t)seqlen * sizeof *w);
    }
    rep->calib_tokens = (int64_t)p->nsamples * seqlen;
    snprintf(rep->calib_source, sizeof rep->calib_source, "%s: %d random windows of %d tokens (of %zu), seed %llu",
             p->calib_path, p->nsamples, seqlen, n, (unsigned long long)p->seed);
    free(ids);
    *out = w;
    return GQ_OK;
}


struct capture {
    enum gq_block_input want;
    struct gq_hessian *H;
    enum gq_status status;
    // GQ_TW_RESIDUAL on an o/down input: the linear's original weight W
    // (dim, n_in), so the hook can form the residual after the add.
    const float *W;
    int dim;
    float sink_weight; // weight of each window's first token (1: GPTQ's plain average)
    float *keep;       // this window's copy of the wanted input (kept for a later pass), or NULL
    // --fp-target: the source model's input of the same window (n, n_in), and
    // the running Σ w² x̂ xᵀ (n_in, n_in); NULL otherwise.
    const float *xfp;
    double *C;
};

// w (n): each token's scale in the Hessian (H = 2/N Σ (w_t x_t)(w_t x_t)ᵀ):
// sqrt(dim / ‖resid_t + W x_t‖²) for a residual-weighted o/down input, else 1.
// (The first token's sqrt(sink_weight) is applied after, by scale_rows.)
static enum gq_status token_scales(const struct capture *c, const float *x, const float *resid, int n, int n_in,
                                   float *w) {
    for (int t = 0; t < n; t++) w[t] = 1.0f;
    if (c->W) {
        float *y = malloc(sizeof(float) * (size_t)n * c->dim);
        if (!y) return gq_fail(GQ_ERR_NOMEM, "out of memory");
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, c->dim, n_in, 1.0f, x, n_in, c->W, n_in, 0.0f, y,
                    c->dim);
        for (int t = 0; t < n; t++) {
            double ss = 0;
            for (int j = 0; j < c->dim; j++) {
                double h = (double)resid[(size_t)t * c->dim + j] + y[(size_t)t * c->dim + j];
                ss += h * h;
            }
            w[t] = ss > 0 ? (float)sqrt(c->dim / ss) : 1.0f;
        }
        free(y);
    }
    return GQ_OK;
}

// xs = w ∘ x row by row, then row 0 (the window's first token: calibration
// passes run one whole window at position 0) times sqrt(sink_weight).
static void scale_rows(const struct capture *c, const float *x, const float *w, int n, int n_in, float *xs) {
    for (int t = 0; t < n; t++)
        for (int j = 0; j < n_in; j++) xs[(size_t)t * n_in + j] = x[(size_t)t * n_in + j] * w[t];
    if (c->sink_weight != 1)
        for (int j = 0; j < n_in; j++) xs[j] *= sqrtf(c->sink_weight);
}

static void on_capture(void *u, int layer, enum gq_block_input which, const float *x, int n, int n_in,
                       const float *resid) {
    struct capture *c = u;
    if (which != c->want || c->status != GQ_OK) return;
    if (c->keep) memcpy(c->keep, x, sizeof(float) * (size_t)n * n_in);
    for (size_t i = 0; i < (size_t)n * n_in; i++)
        if (!isfinite(x[i])) {
            c->status = gq_fail(GQ_ERR_NUMERIC, "blk.%d: non-finite calibration activation (input group %d, element %zu)",
                                layer, (int)which, i);
            return;
        }
    if (!c->W && c->sink_weight == 1 && !c->C) {
        c->status = gq_hessian_add(c->H, x, n, n_in);
        return;
    }
    float *xs = malloc(sizeof(float) * (size_t)n * n_in), *w = malloc(sizeof(float) * (size_t)n);
    if (!xs || !w) {
        free(xs), free(w);
        c->status = gq_fail(GQ_ERR_NOMEM, "out of memory");
        return;
    }
    c->status = token_scales(c, x, resid, n, n_in, w);
    scale_rows(c, x, w, n, n_in, xs);
    if (c->status == GQ_OK) c->status = gq_hessian_add(c->H, xs, n, n_in);
    if (c->status == GQ_OK && c->C) { // C += Σ_t w_t² x̂_t x_tᵀ, x̂ the source model's input (--fp-target)
        float *fs = malloc(sizeof(float) * (size_t)n * n_in), *prod = malloc(sizeof(float) * (size_t)n_in * n_in);
        if (fs && prod) {
            scale_rows(c, c->xfp, w, n, n_in, fs);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n_in, n_in, n, 1.0f, fs, n_in, xs, n_in, 0.0f, prod,
                        n_in);
            for (size_t i = 0; i < (size_t)n_in * n_in; i++) c->C[i] += prod[i];
        } else {
            c->status = gq_fail(GQ_ERR_NOMEM, "out of memory");
        }
        free(fs), free(prod);
    }
    free(xs), free(w);
}

// The source model's pass (--fp-target): the wanted input copied out.
struct fp_capture {
    enum gq_block_input want;
    float *dst;
};

static void on_capture_fp(void *u, int layer, enum gq_block_input which, const float *x, int n, int n_in,
                          const float *resid) {
    (void)layer, (void)resid;
    struct fp_capture *f = u;
    if (which == f->want) memcpy(f->dst, x, sizeof(float) * (size_t)n * n_in);
}


// GPTVQ: every linear must split into d-vectors; print the configuration
// and a memory estimate for the largest linear before any work starts.
// *work: that estimate plus the linear's float Hessian, for the host total.
static enum gq_status vq_preflight(const struct gq_model *m, const struct gq_arch *A, const struct gq_quantize_params *p,
                                   const struct gq_vq_config *cfg, double *work) {
    double peak = 0;
    *work = 0;
#ifdef _OPENMP
    const double threads = omp_get_max_threads();
#else
    const double threads = 1;
#endif
    for (int i = 0; i < A->n_tensors; i++) {
        const struct gq_block_tensor *t = &A->tensors[i];
        if (t->kind != GQ_T_LINEAR) continue;
        int64_t rows = gq_dim_value(&m->hp, t->rows), cols = gq_dim_value(&m->hp, t->cols);
        if (cols % cfg->d)
            return gq_fail(GQ_ERR_ARG, "--vq-dim %d: %s has %lld input columns, not a multiple of %d", cfg->d, t->name,
                           (long long)cols, cfg->d);
        // Wd, Qp, Err, U / Hp, the update's Y·H and one row tile's dense
        // normal equations, or with conjugate gradients (exact update of a
        // large tile) the block-Jacobi preconditioner: per group (at most
        // rows·cols / l of them) a packed float (stages·k·d)² / 2 factor,
        // 4D 2.125: 32 bytes per weight, 1.3 GiB for a 4096 x 11008 linear,
        // and a (stages·k·d)² double block per thread to factor it in.
        double mt = (double)p->vq.stages * ((cols + 255) / 256 + 1) * cfg->k * cfg->d, pc = 0;
        if (mt > gq_vq_dense_max) { // conjugate gradients instead
            const double mg = (double)p->vq.stages * cfg->k * cfg->d, groups = fmax(1, floor((double)rows * cols / cfg->l));
            if (p->vq.cb_update == GQ_CB_UPDATE_EXACT) pc = groups * mg * (mg + 1) / 2 * 4 + threads * mg * (mg + 1) * 8;
            mt = 0;
        }
        double b = rows * cols * (8.0 * 3 + 4 * 2) + cols * cols * 8.0 * 2 + mt * mt * 8 + pc;
        if (b > peak) peak = b;
        if (b + cols * cols * 4.0 > *work) *work = b + cols * cols * 4.0;
    }
    if (p->progress) {
        double ob = cfg->overhead_bpv;
        fprintf(stderr,
                "quantize: gptvq %dD, k = %d (%d index bits, %.4f bpv), group l = %lld weights, codebooks %s%s: "
                "overhead %.4f bpv (paper formula; + codebook scales%s) -> %.4f bpv target\n",
                cfg->d, cfg->k, cfg->log2k, cfg->index_bpv, (long long)cfg->l,
                p->vq.cb_format == GQ_CB_INT8 ? "int8" : p->vq.cb_format == GQ_CB_FP16 ? "fp16" : "f32",
                p->vq.cb_svd_rank ? " as SVD factors (R values per group + fp16 V per matrix)" : "", ob,
                p->vq.norm_block ? ", tile log-scale parameters" : "", cfg->index_bpv + ob);
        fprintf(stderr, "quantize: gptvq working memory about %.0f MiB for the largest linear (plus its Hessian)\n",
                peak / 1048576.0);
    }
    return GQ_OK;
}

// The first linear group at or after the FFN input (its calibration pass runs
// in place and turns the block input into the post-attention residual), or -1.
static int first_ffn_group(const struct gq_arch *A) {
    for (int g = GQ_IN_FFN; g < GQ_IN_COUNT; g++)
        for (int i = 0; i < A->n_tensors; i++)
            if (A->tensors[i].kind == GQ_T_LINEAR && (int)A->tensors[i].input == g) return g;
    return -1;
}

// The rest of block l from `stage` on, in place over every window: the
// quantized block's outputs become the next block's inputs. hb: the down
// projection's inputs kept by the pass that captured them (nsamples,
// seqlen, ffn), or NULL.
static enum gq_status finish_block(struct gq_context *c, struct gq_model *m, int l, float *X, int nsamples, int seqlen,
                                   int stage, const float *hb) {
    const size_t per = (size_t)seqlen * m->hp.dim, per_hb = (size_t)seqlen * m->hp.hidden_dim;
    struct gq_block_hooks rest = {.stop_after = -1, .start_at = hb ? GQ_IN_FFN_DOWN : stage};
    for (int i = 0; i < nsamples; i++) {
        if (hb) rest.hb_in = hb + i * per_hb;
        GQ_TRY(gq_block_forward(c, l, &m->layers[l], X + i * per, seqlen, 0, &rest));
        if (gq_check_finite(X + i * per, per, "calibration", "block output") != GQ_OK)
            return gq_fail(GQ_ERR_NUMERIC, "blk.%d: the quantized block's output is not finite (window %d)", l, i);
    }
    return GQ_OK;
}

// The same two on the CUDA device (--device cuda): the windows' activations
// live there (model/forward_cuda.h, backend.h: gq_cuda_calib_*), the block's
// weights go up first.
static enum gq_status dev_finish(struct gqcu_calib *dc, struct gq_model *m, int l, int stage) {
    GQ_TRY(gq_cuda_calib_block(dc, &m->layers[l]));
    int bad = -1;
    enum gq_status s = gq_cuda_calib_pass(dc, stage, -1, true, -1, 0, 1.0f, NULL, &bad);
    if (s == GQ_ERR_NUMERIC)
        return gq_fail(s, "blk.%d: the quantized block's output is not finite (window %d)", l, bad);
    return s;
}

static enum gq_status dev_replay(struct gqcu_calib *dc, struct gq_model *m, const struct gq_arch *A, int l) {
    int g = first_ffn_group(A), bad = -1;
    if (g < 0) return dev_finish(dc, m, l, GQ_IN_ATTN);
    GQ_TRY(gq_cuda_calib_block(dc, &m->layers[l]));
    GQ_TRY(gq_cuda_calib_pass(dc, GQ_IN_ATTN, g, true, -1, 0, 1.0f, NULL, &bad));
    return dev_finish(dc, m, l, GQ_IN_FFN);
}

// Block l restored from a checkpoint: the windows go through it with the
// passes the quantizing run made (the in-place pass up to the FFN input, then
// the rest), so X holds the same bits as in an uninterrupted run.
static enum gq_status replay_block(struct gq_context *c, struct gq_model *m, const struct gq_arch *A, int l, float *X,
                                   int nsamples, int seqlen) {
    const size_t per = (size_t)seqlen * m->hp.dim;
    int g = first_ffn_group(A);
    if (g < 0) return finish_block(c, m, l, X, nsamples, seqlen, GQ_IN_ATTN, NULL);
    struct gq_block_hooks upto = {.stop_after = g, .start_at = GQ_IN_ATTN};
    for (int i = 0; i < nsamples; i++) GQ_TRY(gq_block_forward(c, l, &m->layers[l], X + i * per, seqlen, 0, &upto));
    return finish_block(c, m, l, X, nsamples, seqlen, GQ_IN_FFN, NULL);
}

// Loads the blocks a checkpoint holds (0, 1, ... up to the first missing
// one) into the model and the report; *done = how many.
static enum gq_status resume(struct gq_model *m, const struct gq_quantize_params *p, uint64_t fp,
                             struct gq_quant_report *rep, int *done) {
    *done = 0;
    // streaming: the weights come back one block at a time (replay, save)
    const unsigned load = GQ_CKPT_REPORTS | (m->packs || m->blocks ? GQ_CKPT_PACKS : 0) |
                          (m->keep_quantized ? 0 : GQ_CKPT_WEIGHTS);
    for (int l = 0; l < m->hp.n_layers; l++) {
        bool found;
        int n_r = 0;
        int64_t ct = 0;
        GQ_TRY(gq_ckpt_load_block(p->checkpoint_dir, fp, m, l, load, rep->layers + rep->n, &n_r, &ct, &found));
        if (!found) break;
        for (int i = 0; i < n_r; i++) {
            const struct gq_quant_layer_report *r = &rep->layers[rep->n + i];
            if (p->method == GQ_METHOD_GPTVQ) rep->vq_bits += r->bits, rep->vq_weights += (int64_t)r->rows * r->cols;
        }
        rep->n += n_r;
        if (p->load_hessians) rep->calib_tokens = ct;
        *done = l + 1;
    }
    if (*done && p->progress)
        fprintf(stderr, "quantize: resuming: blocks 0..%d of %d restored from %s\n", *done - 1, m->hp.n_layers,
                p->checkpoint_dir);
    return GQ_OK;
}

// Peak memory, printed before the run: the f32 weights (the whole model, or
// with streaming one block twice: original and quantized), the calibration activations, and the largest linear's
// Hessian (double accumulator + float copy) and quantizer work (three (rows,
// cols) double matrices and the (cols, cols) inverse factor); on CUDA the
// (cols, cols) double the device holds (inverse factor during the pass,
// Hessian during the codebook update) plus the largest operand set of one
// primitive call (two (rows, cols) doubles and a (cols, cols) one), and with
// calibration the passes' data (below).
#define GQ_CALIB_KEEP_MAX ((double)(4ull << 30))

// vq_work: GPTVQ's estimate for its largest linear (0: GPTQ / RTN).
// keeps_all: streaming, but every finished block's quantized f32 weights stay
// (f32 output without a checkpoint to read them back from).
// fp_target / finetune: their buffers are counted too.
static void print_memory_estimate(const struct gq_model *m, const struct gq_arch *A, size_t activations, int seqlen,
                                  double keep, double vq_work, bool keeps_all, bool fp_target, double ft_acts) {
    struct gq_model_info info;
    gq_model_get_info(m, &info);
    double work = 0, dev = 0, block = 0, widest = 0;
    for (int i = 0; i < A->n_tensors; i++) {
        const struct gq_block_tensor *t = &A->tensors[i];
        if (t->kind != GQ_T_LINEAR) continue;
        double r = (double)gq_dim_value(&m->hp, t->rows), c = (double)gq_dim_value(&m->hp, t->cols);
        work = fmax(work, c * c * (8 + 4 + 8) + r * c * 8 * 3);
        dev = fmax(dev, (2 * r * c + 2 * c * c) * 8);
        block += r * c * 4;
        widest = fmax(widest, c);
    }
    work = fmax(work, vq_work);
    // --fp-target: the source model's activations and a block's source
    // weights; --finetune (ft_acts: the bytes of the windows it runs on;
    // under mpirun those it gathers): the block inputs (and the gathered
    // ones) and the source block's outputs, the source weights, one window's
    // forward and backward (the attention probabilities of every head, ~24
    // rows of the widest input)
    const double acts = activations / 2.0;
    double extra = 0;
    if (fp_target) extra += acts + block;
    if (ft_acts > 0)
        extra += acts + (gq_dist_size() > 1 ? 2 : 1) * ft_acts + (fp_target ? 0 : block) + 4.0 * m->hp.n_heads * seqlen * seqlen +
                 4.0 * 24 * seqlen * widest;
    // CUDA calibration: the windows' activations, one block's f32 weights, a
    // group's double Σ xᵀx and one window's scratch (about 12 rows of the
    // widest width in f32 and one in double per token)
    if (activations)
        dev += activations / 2.0 + block + widest * widest * 8 + (double)seqlen * widest * (12 * 4 + 8);
    // streaming: a block's decoded originals and quantized copies, and the
    // source file's pages, which come into memory as blocks are decoded
    double mapped = 0;
    if (m->keep_quantized && m->source_format && !strcmp(m->source_format, "gguf"))
        mapped = (double)((const struct gq_gguf *)m->source)->file.size;
    const double weights =
        m->keep_quantized ? 2 * block + mapped + (keeps_all ? (m->hp.n_layers - 1) * block : 0) : (double)info.weight_bytes;
    char a[32], b[32], c[32], d[32], e[32];
    char k[32];
    char x[32];
    fprintf(stderr, "quantize: memory estimate: host %s (f32 weights %s%s, calibration activations %s%s%s, largest "
                    "linear's Hessian and work %s%s%s)", gq_fmt_bytes(a, weights + activations + keep + work + extra),
            gq_fmt_bytes(b, weights),
            !m->keep_quantized ? ""
            : keeps_all        ? ": one block decoded at a time + the mapped source file + every block's quantized "
                                 "copy (no checkpoint to keep them in)"
                               : ": one block decoded at a time + the mapped source file",
            gq_fmt_bytes(c, activations), keep > 0 ? " + attention outputs and FFN activations kept between passes " : "",
            keep > 0 ? gq_fmt_bytes(k, keep) : "", gq_fmt_bytes(d, work), extra > 0 ? ", --fp-target / --finetune buffers " : "",
            extra > 0 ? gq_fmt_bytes(x, extra) : "");
    if (strcmp(gq_be()->name, "cpu") != 0)
        fprintf(stderr, "; %s: %s at most (%sa held inverse factor or Hessian and one call's operands)",
                gq_be()->name, gq_fmt_bytes(e, dev), activations ? "calibration activations, block weights and Hessian, " : "");
    fputc('\n', stderr);
}

// Layer streaming. A model loaded with keep_quantized holds its linears in
// the source's compressed form (a mapping of the file): block l's linears are
// decoded to f32 when the block starts (and the compressed slot cleared, so
// the forward runs the f32 copy) and the decoded originals are freed when it
// ends; with packed output the block's quantized f32 copies go too, since
// the file is written from the packed form. Host memory then holds one
// block's f32 weights instead of the whole model's.
// The f32 copies block_load decoded from a streamed block's compressed
// weights, and which qweight each replaced.
struct block_mem {
    float *orig[64];
    const struct gq_qweight *q[64];
    int tensor[64];
    int n;
};

static enum gq_status block_load(struct gq_model *m, const struct gq_arch *A, int l, struct block_mem *bm) {
    bm->n = 0;
    for (int i = 0; i < A->n_tensors; i++) {
        const struct gq_block_tensor *t = &A->tensors[i];
        if (t->kind != GQ_T_LINEAR) continue;
        const float **slot = gq_block_slot(&m->layers[l], t);
        const struct gq_qweight **qs = gq_block_qslot(&m->layers[l], t);
        if (*slot || !*qs) continue;
        int rows = (int)gq_dim_value(&m->hp, t->rows), cols = (int)gq_dim_value(&m->hp, t->cols);
        float *f = malloc(sizeof(float) * (size_t)rows * cols);
        GQ_TRY(gq_model_own(m, f));
        gq_qweight_decode_rows(*qs, 0, rows, f);
        enum gq_status s = gq_check_finite(f, (size_t)rows * cols, "model", t->name);
        if (s != GQ_OK) return gq_fail(s, "blk.%d.%s: non-finite weight in the source model", l, t->name);
        if (bm->n >= (int)(sizeof bm->orig / sizeof bm->orig[0])) return gq_fail(GQ_ERR_ARG, "block_load: over 64 linears");
        bm->orig[bm->n] = f, bm->q[bm->n] = *qs, bm->tensor[bm->n++] = i;
        *slot = f, *qs = NULL;
    }
    return GQ_OK;
}

// Undoes block_load: the block's linears compressed again as they were (its
// slots back on their qweights), the f32 copies freed. --bit-alloc's pilot
// reads a block without quantizing it.
static void block_unload(struct gq_model *m, const struct gq_arch *A, int l, struct block_mem *bm) {
    for (int i = 0; i < bm->n; i++) {
        const struct gq_block_tensor *t = &A->tensors[bm->tensor[i]];
        *gq_block_slot(&m->layers[l], t) = NULL, *gq_block_qslot(&m->layers[l], t) = bm->q[i];
        gq_model_release(m, bm->orig[i]);
    }
    bm->n = 0;
}

// in_ckpt: block l is in the checkpoint (m->reload reads it back), so all
// of its quantized f32 copies go, not only those of packed matrices.
static void block_release(struct gq_model *m, const struct gq_arch *A, int l, struct block_mem *bm, bool in_ckpt) {
    for (int i = 0; i < bm->n; i++) gq_model_release(m, bm->orig[i]);
    bm->n = 0;
    if (!m->keep_quantized || (!m->packs && !m->blocks && !in_ckpt)) return;
    for (int i = 0; i < A->n_tensors; i++) {
        const struct gq_block_tensor *t = &A->tensors[i];
        const size_t k = (size_t)l * A->n_tensors + i;
        if (t->kind == GQ_T_LINEAR &&
            (in_ckpt || (m->packs && m->packs[k].h.version) || (m->blocks && m->blocks[k].data)))
            gq_block_drop(m, l, t);
    }
}

// m->reload of a streaming run with a checkpoint.
struct ckpt_source {
    uint64_t fp;
    char dir[];
};

static enum gq_status reload_from_ckpt(struct gq_model *m, int l) {
    const struct ckpt_source *cs = m->reload_user;
    bool found = false;
    GQ_TRY(gq_ckpt_load_block(cs->dir, cs->fp, m, l, GQ_CKPT_WEIGHTS, NULL, NULL, NULL, &found));
    if (!found) return gq_fail(GQ_ERR_IO, "%s: blk.%d.ckpt is gone: the quantized block was kept there", cs->dir, l);
    return GQ_OK;
}

static enum gq_status set_reload(struct gq_model *m, const char *dir, uint64_t fp) {
    struct ckpt_source *cs = malloc(sizeof *cs + strlen(dir) + 1);
    GQ_TRY(gq_model_own(m, cs));
    cs->fp = fp;
    strcpy(cs->dir, dir);
    m->reload = reload_from_ckpt, m->reload_user = cs;
    return GQ_OK;
}

// After block l: its checkpoint, and the stop a split run asked for.
static enum gq_status block_done(struct gq_model *m, const struct gq_quantize_params *p, uint64_t fp, int l,
                                 const struct gq_quant_report *rep, int first_report) {
    if (!p->checkpoint_dir) return GQ_OK;
    if (gq_dist_rank() == 0) GQ_TRY(gq_ckpt_save_block(p->checkpoint_dir, fp, m, l, rep->layers + first_report, rep->n - first_report,
                              rep->calib_tokens));
    if (p->stop_after_blocks > 0 && l + 1 >= p->stop_after_blocks && l + 1 < m->hp.n_layers)
        return gq_fail(GQ_STOPPED, "stopped after block %d of %d as asked; the same command without the stop "
                       "continues from %s", l, m->hp.n_layers, p->checkpoint_dir);
    return GQ_OK;
}

// GPTQ / RTN: what the output file will hold, and why.
static void print_output_format(const struct gq_model *m, const struct gq_arch *A, const struct gq_quantize_params *p) {
    const int type = gq_grid_gguf_type(p);
    if (!m->blocks) {
        if (type >= 0)
            fprintf(stderr, "quantize: output: quantized weights as F32 (fake-quant), as asked: the values of %s blocks\n",
                    gq_ggml_type_name((enum gq_ggml_type)type));
        else
            fprintf(stderr, "quantize: output: quantized weights as F32 (fake-quant): only groups of 32 with 4 or 5 "
                            "bits, or 8 bits --sym, are GGUF blocks (Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0)\n");
        return;
    }
    int f32 = 0, n = 0;
    for (int i = 0; i < A->n_tensors; i++)
        if (A->tensors[i].kind == GQ_T_LINEAR) n++, f32 += gq_dim_value(&m->hp, A->tensors[i].cols) % 32 != 0;
    char tail[160] = "";
    if (f32) snprintf(tail, sizeof tail, "; %d of %d linears per block are not whole blocks of 32 wide and stay F32", f32, n);
    fprintf(stderr, "quantize: output: %s blocks (%.3g bits per weight: f16 scale%s per 32), quantized on their f16 grid%s\n",
            gq_ggml_type_name((enum gq_ggml_type)type), gq_ggml_row_size((enum gq_ggml_type)type, 32) * 8 / 32.0,
            p->sym ? "" : " and min", tail);
}

// Mean next-token NLL of nw windows of sl tokens (the model as it is now).
static enum gq_status window_nll(struct gq_model *m, const int32_t *toks, int nw, int sl, float *logits, double *nll) {
    struct gq_context *c;
    GQ_TRY(gq_context_new(m, sl, &c));
    const int V = m->hp.n_vocab;
    double sum = 0;
    enum gq_status s = GQ_OK;
    for (int w = 0; w < nw && s == GQ_OK; w++) {
        gq_context_reset(c);
        const int32_t *t = toks + (size_t)w * sl;
        s = gq_forward(c, t, sl, logits, true);
        double ws = 0;
#pragma omp parallel for reduction(+ : ws)
        for (int i = 0; i < sl - 1; i++) ws += gq_row_nll(logits + (size_t)i * V, V, t[i + 1]);
        if (s == GQ_OK) sum += ws;
    }
    gq_context_free(c);
    *nll = sum / ((double)nw * (sl - 1));
    return s;
}

// --bit-alloc: every block linear quantized from its saved Hessian at the
// candidate budgets --bpv + j/d (j = -1..2; those that form a
// configuration). Its loss sensitivity: the calibration NLL (first
// ALLOC_WINDOWS windows of at most 512 tokens) with only this linear
// quantized at --bpv, minus the source model's, per unit of its relative
// layer error there; a candidate's cost is that sensitivity times its
// relative layer error (the first-order model: the loss grows with the layer
// error energy). gq_bit_alloc then minimises the summed cost within the bits
// of every linear at --bpv (and is never worse than that choice). map gets
// each linear's budget (layer-major, the architecture's tensor order). Every
// rank computes the same map (the same arithmetic).
#define ALLOC_WINDOWS 4
static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
static enum gq_status alloc_budgets(struct gq_model *m, const struct gq_arch *A, const struct gq_quantize_params *p,
                                    float *map) {
    enum { NC = 4 };
    const int nt = A->n_tensors, L = m->hp.n_layers, d = p->vq.dim;
    if (p->vq.k || p->vq.group)
        return gq_fail(GQ_ERR_ARG, "--bit-alloc chooses k and the group size of each linear: drop --k / --group");
    if (p->nsamples < 1) return gq_fail(GQ_ERR_ARG, "--nsamples must be positive (got %d)", p->nsamples);
    int n_items = 0;
    for (int i = 0; i < nt; i++) n_items += A->tensors[i].kind == GQ_T_LINEAR;
    n_items *= L;
    const int n1 = n_items > 0 ? n_items : 1;
    int *nopt = calloc((size_t)n1, sizeof(int)), *choice = malloc(sizeof(int) * (size_t)n1);
    int *slot = malloc(sizeof(int) * (size_t)n1), *uni = malloc(sizeof(int) * (size_t)n1); // map index; the option at --bpv
    int64_t *bits = malloc(sizeof(int64_t) * (size_t)n1 * NC);
    double *err = malloc(sizeof(double) * (size_t)n1 * NC), *sens = malloc(sizeof(double) * (size_t)n1);
    float *cand = malloc(sizeof(float) * (size_t)n1 * NC), *Hf = NULL, *Wc = NULL, *logits = NULL;
    struct gq_rot R = {0}; // --rotate: the rotation of the group's inputs
    int32_t *toks = NULL;
    enum gq_status s = nopt && choice && slot && uni && bits && err && sens && cand ? GQ_OK : gq_fail(GQ_ERR_NOMEM, "bit allocation");
    // the sensitivity windows and the source model's NLL on them
    struct gq_quantize_params pw = *p;
    pw.nsamples = p->nsamples < ALLOC_WINDOWS ? p->nsamples : ALLOC_WINDOWS;
    int sl = p->seqlen > 0 && p->seqlen < 512 ? p->seqlen : 512;
    if (sl > m->hp.ctx_len) sl = m->hp.ctx_len;
    struct gq_quant_report scratch = {0};
    double nll0 = 0;
    if (s == GQ_OK) s = calib_windows(m, &pw, sl, &toks, &scratch);
    if (s == GQ_OK && !(logits = malloc(sizeof(float) * (size_t)sl * m->hp.n_vocab))) s = gq_fail(GQ_ERR_NOMEM, "bit allocation: logits");
    if (s == GQ_OK) s = window_nll(m, toks, pw.nsamples, sl, logits, &nll0);
    struct gq_quant_params q;
    gq_quant_params_from(p, &q);
    struct gq_progress pr;
    gq_progress_start(&pr, "bit allocation", (int64_t)n_items, p->progress && s == GQ_OK);
    double weights = 0;
    int64_t budget = 0; // the bits of every linear at --bpv
    int it = 0, o = 0;
    for (int l = 0; l < L && s == GQ_OK; l++) {
        // a streamed block is decoded for the pilot and left compressed again
        struct block_mem bm;
        s = block_load(m, A, l, &bm);
        // the reference NLL with this block decoded as it is for the pilot (a
        // streamed block's f32 path rounds a little differently from its kernels)
        double nll_ref = nll0;
        if (s == GQ_OK && bm.n) s = window_nll(m, toks, pw.nsamples, sl, logits, &nll_ref);
        for (int g = 0; g < GQ_IN_COUNT && s == GQ_OK; g++) {
            int n_in = 0;
            for (int i = 0; i < nt; i++)
                if (A->tensors[i].kind == GQ_T_LINEAR && (int)A->tensors[i].input == g)
                    n_in = (int)gq_dim_value(&m->hp, A->tensors[i].cols);
            if (!n_in) continue;
            free(Hf);
            int64_t ns = 0;
            if (!(Hf = malloc(sizeof(float) * (size_t)n_in * n_in))) s = gq_fail(GQ_ERR_NOMEM, "bit allocation: Hessian");
            if (s == GQ_OK) s = gq_hessian_load(p->bit_alloc, l, g, Hf, n_in, &ns);
            gq_rot_free(&R);
            if (s == GQ_OK && gq_quantize_rotates(p)) { // the linears as the run quantizes them (group.c)
                float *Hr = NULL;
                s = gq_rot_init(&R, n_in, gq_rot_seed(p->seed));
                if (s == GQ_OK && !(Hr = gq_rot_hessian(Hf, &R))) s = gq_fail(GQ_ERR_NOMEM, "bit allocation: Hessian");
                if (Hr) free(Hf), Hf = Hr;
            }
            for (int i = 0; i < nt && s == GQ_OK; i++) {
                const struct gq_block_tensor *t = &A->tensors[i];
                if (t->kind != GQ_T_LINEAR || (int)t->input != g) continue;
                const int rows = (int)gq_dim_value(&m->hp, t->rows), cols = (int)gq_dim_value(&m->hp, t->cols);
                const float **wslot = gq_block_slot(&m->layers[l], t), *W = *wslot;
                free(Wc);
                if (!(Wc = malloc(sizeof(float) * (size_t)rows * cols))) {
                    s = gq_fail(GQ_ERR_NOMEM, "bit allocation: weights");
                    break;
                }
                const uint64_t seed = gq_linear_seed(m, p, l, t); // the run's own
                double rel0 = 0;
                for (int jj = 0; jj < NC && s == GQ_OK; jj++) {
                    static const int js[NC] = {0, -1, 1, 2}; // --bpv first: its Q gives the sensitivity
                    const int j = js[jj];
                    const double b = p->vq.bpv + (double)j / d;
                    struct gq_vq_config cfg;
                    if (gq_linear_config(p, b, &cfg) != GQ_OK || (j && cfg.k > 4096)) continue; // no such configuration
                    struct gq_vq_tensor vt;
                    struct gq_vq_result res;
                    memcpy(Wc, W, sizeof(float) * (size_t)rows * cols);
                    if (R.n) gq_rot_rows_inplace(&R, Wc, rows, false);
                    s = gq_gptvq_quantize(Wc, rows, cols, Hf, &q, &p->vq, &cfg, seed, &vt, &res);
                    if (s != GQ_OK) {
                        gq_error_prefix("bit allocation: blk.%d.%s at %g bpv", l, t->name, b);
                        break;
                    }
                    bits[o] = gq_vq_tensor_bits(&vt), err[o] = res.rel_error, cand[o] = (float)b;
                    gq_vq_tensor_free(&vt);
                    if (j == 0) { // this linear alone quantized at --bpv: the loss it costs
                        double nll = 0;
                        if (R.n) gq_rot_rows_inplace(&R, Wc, rows, true);
                        *wslot = Wc;
                        s = window_nll(m, toks, pw.nsamples, sl, logits, &nll);
                        *wslot = W;
                        budget += bits[o], uni[it] = nopt[it], rel0 = res.rel_error;
                        sens[it] = nll - nll_ref;
                    }
                    o++, nopt[it]++;
                }
                if (s == GQ_OK) sens[it] = rel0 > 0 ? sens[it] / rel0 : 0;
                slot[it++] = l * nt + i;
                weights += (double)rows * cols;
                gq_progress_update(&pr, it, NULL);
            }
        }
        block_unload(m, A, l, &bm);
    }
    gq_progress_end(&pr);
    int64_t used = 0;
    if (s == GQ_OK) {
        // a sensitivity below a tenth of the median (within the NLL's noise,
        // or negative) counts as that, so that no linear is cut for free
        double *tmp = malloc(sizeof(double) * (size_t)n1), med = 0;
        if (!tmp) s = gq_fail(GQ_ERR_NOMEM, "bit allocation");
        else {
            memcpy(tmp, sens, sizeof(double) * (size_t)n_items);
            qsort(tmp, (size_t)n_items, sizeof *tmp, cmp_double);
            med = n_items ? tmp[n_items / 2] : 0;
            if (!(med > 0)) med = n_items && tmp[n_items - 1] > 0 ? 1e-3 * tmp[n_items - 1] : 1; // no measurable loss
            free(tmp);
        }
        for (int i = 0, b = 0; s == GQ_OK && i < n_items; b += nopt[i], i++) {
            const double si = sens[i] > 0.1 * med ? sens[i] : 0.1 * med;
            for (int j = 0; j < nopt[i]; j++) err[b + j] *= si;
        }
    }
    if (s == GQ_OK) s = gq_bit_alloc(n_items, nopt, bits, err, budget, choice, &used);
    if (s == GQ_OK) { // the walk stops short of the budget: never worse than every linear at --bpv
        double e = 0, e_uni = 0;
        for (int i = 0, b = 0; i < n_items; b += nopt[i], i++) e += err[b + choice[i]], e_uni += err[b + uni[i]];
        if (e > e_uni) memcpy(choice, uni, sizeof(int) * (size_t)n_items), used = budget;
    }
    if (s == GQ_OK) {
        for (int i = 0, b = 0; i < n_items; b += nopt[i], i++) map[slot[i]] = cand[b + choice[i]];
        if (p->progress) { // the mean budget of each kind of linear
            fprintf(stderr, "quantize: bit allocation: %.4f bpv on average (every linear at %g: %.4f):", (double)used / weights,
                    p->vq.bpv, (double)budget / weights);
            for (int i = 0; i < nt; i++) {
                if (A->tensors[i].kind != GQ_T_LINEAR) continue;
                double sb = 0;
                for (int l = 0; l < L; l++) sb += map[l * nt + i];
                fprintf(stderr, " %s %.3f", A->tensors[i].name, sb / L);
            }
            fprintf(stderr, "\n");
        }
    }
    free(nopt), free(choice), free(slot), free(uni), free(bits), free(err), free(sens), free(cand), free(Hf), free(Wc);
    gq_rot_free(&R);
    free(logits), free(toks);
    return s;
}

// *bpv_map: --bit-alloc's budgets (freed by the caller).
static enum gq_status quantize_run(struct gq_model *m, const struct gq_quantize_params *p, struct gq_quant_report *rep,
                                   float **bpv_map) {
    memset(rep, 0, sizeof *rep);
    double t_start = gq_time_s();
    const struct gq_arch *A = gq_arch_find(m->arch);
    if (!A) return gq_fail(GQ_ERR_UNSUPPORTED, "quantize: architecture '%s' has no model description", m->arch);
    if (p->bit_alloc && (p->method != GQ_METHOD_GPTVQ || p->fake_quant))
        return gq_fail(GQ_ERR_ARG, "--bit-alloc allocates packed GPTVQ budgets (method gptvq)");
    if (p->method != GQ_METHOD_GPTVQ && (p->wbits < 2 || p->wbits > 8))
        return gq_fail(GQ_ERR_ARG, "--wbits must be in [2, 8] (got %d)", p->wbits);
    if (p->head_bpv > 0) { // checked before any work
        if (p->method != GQ_METHOD_GPTVQ || p->fake_quant)
            return gq_fail(GQ_ERR_ARG, "--head-bpv: the head is quantized by packed GPTVQ only");
        if (p->load_hessians)
            return gq_fail(GQ_ERR_ARG, "--head-bpv needs calibration activations (not --load-hessians)");
        if (strcmp(gq_be()->name, "cpu") != 0)
            return gq_fail(GQ_ERR_UNSUPPORTED, "--head-bpv: the head is quantized with --device cpu calibration only");
        if (!m->source_format || strcmp(m->source_format, "gguf") != 0)
            return gq_fail(GQ_ERR_UNSUPPORTED, "--head-bpv: the head is read from a GGUF source");
        if (gq_head_tied(m) && p->embed_type >= 0)
            return gq_fail(GQ_ERR_ARG, "--head-bpv and --embed-type: this model's token embedding is its output head "
                           "(tied); give one of them");
        if (p->head_bpv < 1 || p->head_bpv > 16)
            return gq_fail(GQ_ERR_ARG, "--head-bpv must be in [1, 16] (got %g)", p->head_bpv);
    }
    if (p->fp_target) {
        if (p->method == GQ_METHOD_RTN) return gq_fail(GQ_ERR_ARG, "--fp-target: RTN uses no calibration");
        if (p->load_hessians) return gq_fail(GQ_ERR_ARG, "--fp-target needs calibration passes (not --load-hessians)");
        if (gq_dist_size() > 1 || strcmp(gq_be()->name, "cpu") != 0 || p->bit_alloc)
            return gq_fail(GQ_ERR_UNSUPPORTED, "--fp-target: one process, --device cpu, without --bit-alloc (not yet)");
    }
    if (gq_quantize_rotates(p) && p->method != GQ_METHOD_GPTVQ && !p->fake_quant)
        return gq_fail(GQ_ERR_ARG, "--rotate: RTN / GPTQ grids in a rotated basis are written with --fake-quant only "
                       "(GGUF blocks have no rotation)");
    if (p->finetune_steps > 0) {
        if (p->method != GQ_METHOD_GPTVQ || p->fake_quant)
            return gq_fail(GQ_ERR_ARG, "--finetune tunes packed GPTVQ codebooks (method gptvq)");
        if (p->load_hessians) return gq_fail(GQ_ERR_ARG, "--finetune needs calibration passes (not --load-hessians)");
        if (strcmp(gq_be()->name, "cpu") != 0) return gq_fail(GQ_ERR_UNSUPPORTED, "--finetune: --device cpu only (not yet)");
        if (!(p->ft_lr > 0 && p->ft_lr < 1)) return gq_fail(GQ_ERR_ARG, "--ft-lr must be in (0, 1) (got %g)", p->ft_lr);
    }
    struct gq_vq_config cfg = {0};
    double vq_work = 0;
    if (p->method == GQ_METHOD_GPTVQ) {
        GQ_TRY(gq_linear_config(p, p->vq.bpv, &cfg));
        GQ_TRY(vq_preflight(m, A, p, &cfg, &vq_work));
        if (p->bit_alloc) {
            if (!(*bpv_map = malloc(sizeof(float) * (size_t)m->hp.n_layers * A->n_tensors)))
                return gq_fail(GQ_ERR_NOMEM, "out of memory");
            GQ_TRY(alloc_budgets(m, A, p, *bpv_map));
        }
    }
    const int n_lin = gq_arch_n_linears(A);
    free(m->packs), m->packs = NULL;
    m->head_pack = NULL; // owned by the model
    free(m->blocks), m->blocks = NULL;
    if (p->method == GQ_METHOD_GPTVQ && !p->fake_quant) {
        m->packs = calloc((size_t)m->hp.n_layers * A->n_tensors, sizeof *m->packs);
        if (!m->packs) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    }
    if (gq_quantize_gguf_type(p) >= 0) {
        m->blocks = calloc((size_t)m->hp.n_layers * A->n_tensors, sizeof *m->blocks);
        if (!m->blocks) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    }
    if (p->progress && p->method != GQ_METHOD_GPTVQ) print_output_format(m, A, p);
    rep->layers = calloc((size_t)m->hp.n_layers * n_lin + 1, sizeof *rep->layers); // + the head
    if (!rep->layers) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    if (p->stop_after_blocks && !p->checkpoint_dir)
        return gq_fail(GQ_ERR_ARG, "stopping after %d blocks needs a checkpoint folder", p->stop_after_blocks);
    uint64_t fp = 0;
    int done = 0; // blocks restored from the checkpoint
    m->reload = NULL, m->reload_user = NULL;
    const bool in_ckpt = p->checkpoint_dir && m->keep_quantized; // finished blocks live in the checkpoint
    if (p->checkpoint_dir) {
        fp = gq_ckpt_fingerprint(m, p);
        // rank 0 writes the checkpoint; the others read it when resuming
        // (a folder every rank sees, like the model)
        int32_t opened = 1; // the broadcast makes the others wait for rank 0's folder
        if (gq_dist_rank() == 0) GQ_TRY(gq_ckpt_open(p->checkpoint_dir, fp));
        GQ_TRY(gq_dist_bcast(&opened, sizeof opened, 0));
        if (in_ckpt) GQ_TRY(set_reload(m, p->checkpoint_dir, fp));
        GQ_TRY(resume(m, p, fp, rep, &done));
        if (done && p->fp_target) // the source model's stream would need the finished blocks' source weights
            return gq_fail(GQ_ERR_UNSUPPORTED, "--fp-target: %s holds %d finished blocks, and an --fp-target run cannot "
                           "continue yet; remove the folder to start again", p->checkpoint_dir, done);
        if (p->stop_after_blocks > 0 && done >= p->stop_after_blocks && done < m->hp.n_layers)
            return gq_fail(GQ_STOPPED, "%d of %d blocks are in %s already (--stop-after %d); nothing to do", done,
                           m->hp.n_layers, p->checkpoint_dir, p->stop_after_blocks);
    }
    struct gq_progress pr;
    gq_progress_start(&pr, method_name(p->method), (int64_t)m->hp.n_layers * n_lin, p->progress);
    if (done) gq_progress_update(&pr, rep->n, "restored");

    if (p->method == GQ_METHOD_RTN) {
        for (int l = done; l < m->hp.n_layers; l++) {
            int first = rep->n;
            struct block_mem bm;
            GQ_TRY(block_load(m, A, l, &bm));
            enum gq_status s = gq_quantize_group(m, l, -1, NULL, p, NULL, NULL, rep, &pr);
            if (s == GQ_OK) s = block_done(m, p, fp, l, rep, first);
            block_release(m, A, l, &bm, in_ckpt && (s == GQ_OK || s == GQ_STOPPED));
            if (s != GQ_OK) {
                gq_progress_end(&pr);
                return s;
            }
        }
        gq_progress_end(&pr);
        rep->seconds_quant = rep->seconds_total = gq_time_s() - t_start;
        return GQ_OK;
    }

    // Default window: 2048 tokens of calibration text (GPTQ's protocol); 512
    // for data-free calibration, where every token costs a decode step.
    int def_len = p->calib_path && !p->calib_mix ? 2048 : 512;
    int seqlen = p->seqlen > 0 ? p->seqlen : (m->hp.ctx_len < def_len ? m->hp.ctx_len : def_len);
    if (p->nsamples <= 0) return gq_fail(GQ_ERR_ARG, "--nsamples must be positive (got %d)", p->nsamples);
    // The Hessians' exact units: `unit` consecutive windows. Several ranks:
    // each runs its share of the units (in order), and the Hessians are
    // summed over the ranks (exactly: hessian.c).
    const int unit = seqlen >= GQ_HESSIAN_UNIT_TOKENS ? 1 : GQ_HESSIAN_UNIT_TOKENS / seqlen;
    int64_t w_lo, w_hi;
    gq_dist_span((p->nsamples + unit - 1) / unit, gq_dist_rank(), gq_dist_size(), &w_lo, &w_hi);
    w_lo = w_lo * unit < p->nsamples ? w_lo * unit : p->nsamples;
    w_hi = w_hi * unit < p->nsamples ? w_hi * unit : p->nsamples;
    const int nloc = (int)(w_hi - w_lo);
    // several processes on CUDA devices: NCCL carries the collectives from here on
    if (gq_dist_size() > 1 && !strcmp(gq_be()->name, "cuda")) GQ_TRY(gq_cuda_dist_start());
    bool load = p->load_hessians != NULL;
    // Default sink weight seqlen/32: the first token carries ~3 % of each
    // window's weight (measured optimum on SmolLM2 W4 g128, docs/results.md).
    float sink_w = p->sink_weight > 0 ? p->sink_weight : (seqlen / 32 > 1 ? seqlen / 32.0f : 1.0f);
    if (!load) rep->sink_weight = sink_w;
    const int dim = m->hp.dim;
    size_t per = (size_t)seqlen * dim;
    // CPU calibration keeps the attention outputs and the down projection's
    // inputs of every window between the passes that need them (saving the
    // q/k/v + attention and gate/up recomputations) when that fits in
    // GQ_CALIB_KEEP_MAX bytes.
    const size_t per_att = (size_t)seqlen * m->hp.n_heads * m->hp.head_dim, per_hb = (size_t)seqlen * m->hp.hidden_dim;
    const double keep_bytes = (double)nloc * (per_att + per_hb) * sizeof(float);
    const bool keep_on = !load && strcmp(gq_be()->name, "cuda") != 0 && keep_bytes <= GQ_CALIB_KEEP_MAX;
    if (p->progress)
        print_memory_estimate(m, A, load ? 0 : (size_t)nloc * per * sizeof(float) * 2, seqlen,
                              keep_on ? keep_bytes : 0, vq_work, m->keep_quantized && !in_ckpt && !m->packs && !m->blocks,
                              p->fp_target && !load,
                              p->finetune_steps > 0 && !load
                                  ? (double)(gq_dist_size() > 1 ? gq_finetune_windows(p, p->nsamples) : nloc) * per * sizeof(float)
                                  : 0);
    float *X = NULL, *tmp = NULL, *Hf = NULL;
    // --fp-target: the source model's activations (like X), a window's copy,
    // the wanted input of the source's pass, and C = Σ w² x̂ xᵀ.
    float *Xfp = NULL, *tmp_fp = NULL, *xfp = NULL;
    double *Cfp = NULL;
    float *Xin = NULL; // --finetune: the block's inputs (X is overwritten by the in-place pass)
    float *att_keep = NULL, *hb_keep = NULL;
    double *Hd = NULL;           // device calibration: a group's Σ x xᵀ
    struct gq_context *c = NULL;
    struct gqcu_calib *dc = NULL; // calibration passes on the CUDA device (--device cuda)
    enum gq_status s = GQ_OK;
    if (load) {
        // Every H comes from the files: no calibration text, no forward passes.
        snprintf(rep->calib_source, sizeof rep->calib_source, "Hessians loaded from %s", p->load_hessians);
    } else {
        int32_t *toks = NULL;
        double t0 = gq_time_s();
        if ((p->calib_path && !p->calib_mix) || gq_dist_size() == 1) {
            GQ_TRY(calib_windows(m, p, seqlen, &toks, rep));
        } else { // data-free: rank 0 samples, the others take its windows
            if (gq_dist_rank() == 0) GQ_TRY(calib_windows(m, p, seqlen, &toks, rep));
            else if (!(toks = malloc(sizeof(int32_t) * (size_t)p->nsamples * seqlen)))
                return gq_fail(GQ_ERR_NOMEM, "out of memory");
            s = gq_dist_bcast(toks, sizeof(int32_t) * (size_t)p->nsamples * seqlen, 0);
        }
        if (!p->calib_path || p->calib_mix) rep->seconds_sampling = gq_time_s() - t0;
        rep->activation_bytes = (size_t)nloc * per * sizeof(float);
        if (p->progress)
            fprintf(stderr, "quantize: calibration %s\nquantize: activations %.1f MiB (%d x %d x %d floats) + one block's scratch\n",
                    rep->calib_source, rep->activation_bytes / 1048576.0, nloc, seqlen, dim);
        if (p->progress && gq_dist_size() > 1)
            fprintf(stderr, "quantize: %d processes (collectives through %s): windows split between them (%d here); "
                    "GPTVQ linears split by row slabs, RTN / GPTQ linears each by one\n",
                    gq_dist_size(), gq_dist_transport_name(), nloc);
        X = malloc(rep->activation_bytes ? rep->activation_bytes : 1);
        tmp = malloc(per * sizeof(float));
        if (!X || !tmp)
            s = gq_fail(GQ_ERR_NOMEM, "cannot allocate %.1f MiB of calibration activations", rep->activation_bytes / 1048576.0);
        if (s == GQ_OK && keep_on) { // optional: without them the passes recompute
            att_keep = malloc(sizeof(float) * per_att * (nloc + 1)), hb_keep = malloc(sizeof(float) * per_hb * (nloc + 1));
            if (!att_keep || !hb_keep) free(att_keep), free(hb_keep), att_keep = hb_keep = NULL;
        }
        if (s == GQ_OK && p->fp_target) {
            Xfp = malloc(rep->activation_bytes ? rep->activation_bytes : 1), tmp_fp = malloc(per * sizeof(float));
            // a linear reads dim, q_dim (o) or ffn (down) values per token
            const int qd = m->hp.n_heads * m->hp.head_dim, dq = dim > qd ? dim : qd;
            const size_t widest = (size_t)(dq > m->hp.hidden_dim ? dq : m->hp.hidden_dim);
            xfp = malloc(sizeof(float) * (size_t)seqlen * widest);
            if (!Xfp || !tmp_fp || !xfp) s = gq_fail(GQ_ERR_NOMEM, "--fp-target: cannot allocate the source model's activations");
        }
        if (s == GQ_OK && p->finetune_steps > 0 && !(Xin = malloc(rep->activation_bytes ? rep->activation_bytes : 1)))
            s = gq_fail(GQ_ERR_NOMEM, "--finetune: cannot allocate a copy of the calibration activations");
        if (s == GQ_OK) s = gq_context_new(m, seqlen, &c);
        for (int i = 0; i < nloc && s == GQ_OK; i++) s = gq_embed(m, toks + (size_t)(w_lo + i) * seqlen, seqlen, X + i * per);
        if (s == GQ_OK && Xfp) memcpy(Xfp, X, rep->activation_bytes);
        free(toks);
        if (s == GQ_OK && !strcmp(gq_be()->name, "cuda"))
            s = gq_cuda_calib_new(m, gq_context_inv_freq(c), nloc, seqlen, X, &dc);
        double tr = gq_time_s();
        for (int l = 0; l < done && s == GQ_OK; l++) {
            struct block_mem none = {.n = 0};
            if (in_ckpt) s = reload_from_ckpt(m, l); // resume() left the weights in the checkpoint
            if (s == GQ_OK) s = dc ? dev_replay(dc, m, A, l) : replay_block(c, m, A, l, X, nloc, seqlen);
            block_release(m, A, l, &none, in_ckpt);
        }
        rep->seconds_forward += gq_time_s() - tr;
    }

    for (int l = 0; load && l < done; l++) {
        struct block_mem none = {.n = 0};
        block_release(m, A, l, &none, in_ckpt);
    }
    for (int l = done; l < m->hp.n_layers && s == GQ_OK; l++) {
        int first_report = rep->n;
        struct block_mem bm;
        if ((s = block_load(m, A, l, &bm)) != GQ_OK) break;
        struct gq_layer_w fpw = m->layers[l]; // --fp-target, --finetune: the source block, its linears copied
        float *fp_copy[16];
        int n_copy = 0;
        if (Xin) memcpy(Xin, X, rep->activation_bytes);
        for (int i = 0; (Xfp || Xin) && i < A->n_tensors && s == GQ_OK; i++) {
            const struct gq_block_tensor *t = &A->tensors[i];
            if (t->kind != GQ_T_LINEAR) continue;
            const size_t ne = gq_dim_value(&m->hp, t->rows) * gq_dim_value(&m->hp, t->cols);
            float *f = n_copy < 16 ? malloc(sizeof(float) * ne) : NULL;
            if (!f) {
                s = gq_fail(GQ_ERR_NOMEM, "out of memory for a copy of blk.%d's source weights", l);
                break;
            }
            memcpy(f, *gq_block_slot(&m->layers[l], t), sizeof(float) * ne);
            *gq_block_slot(&fpw, t) = fp_copy[n_copy++] = f;
        }
        int stage = GQ_IN_ATTN; // what X holds: block input, or post-attention residual (GQ_IN_FFN)
        bool att_ok = false, hb_ok = false; // att_keep / hb_keep hold this block's activations
        for (int g = 0; g < GQ_IN_COUNT && s == GQ_OK; g++) {
            const struct gq_block_tensor *first = NULL;
            int n_group = 0; // linears reading this input
            for (int i = 0; i < A->n_tensors; i++)
                if (A->tensors[i].kind == GQ_T_LINEAR && (int)A->tensors[i].input == g && !n_group++)
                    first = &A->tensors[i];
            if (!first) continue;
            int n_in = (int)gq_dim_value(&m->hp, first->cols);
            free(Hf);
            Hf = malloc((size_t)n_in * n_in * sizeof *Hf);
            if (!Hf) {
                s = gq_fail(GQ_ERR_NOMEM, "out of memory");
                break;
            }
            double t0 = gq_time_s();
            uint64_t digest = 0; // of the exact Hessian (CPU calibration)
            // --fp-target: the group's ridge targets, which its slots point at
            // until the quantizers replace them (a slot may be the mapped,
            // read-only source)
            float *target[16];
            int n_target = 0;
            if (load) {
                int64_t ns = 0;
                s = gq_hessian_load(p->load_hessians, l, g, Hf, n_in, &ns);
                rep->calib_tokens = ns;
            } else if (dc) {
                int resid_w = 0, bad = -1;
                if (p->token_weights == GQ_TW_RESIDUAL && n_group == 1 &&
                    (g == GQ_IN_ATTN_OUT || g == GQ_IN_FFN_DOWN) && gq_dim_value(&m->hp, first->rows) == dim)
                    resid_w = g == GQ_IN_ATTN_OUT ? 1 : 2;
                bool in_place = stage == GQ_IN_ATTN && g >= GQ_IN_FFN; // as below
                const int64_t ns = (int64_t)p->nsamples * seqlen;
                free(Hd);
                if (!(Hd = malloc(sizeof(double) * n_in * n_in))) {
                    s = gq_fail(GQ_ERR_NOMEM, "out of memory");
                    break;
                }
                s = gq_cuda_calib_block(dc, &m->layers[l]);
                if (s == GQ_OK) s = gq_cuda_calib_pass(dc, stage, g, in_place, g, resid_w, sink_w, Hd, &bad);
                if (s == GQ_ERR_NUMERIC)
                    s = gq_fail(s, "blk.%d: non-finite calibration activation (input group %d)", l, g);
                if (in_place) stage = GQ_IN_FFN;
                if (s == GQ_OK && gq_dist_size() == 1) {
                    gq_hessian_finish_sum(Hd, n_in, ns, Hf);
                } else if (s == GQ_OK) { // the ranks' sums, each made exact, then summed exactly
                    struct gq_hessian H;
                    if ((s = gq_hessian_init(&H, n_in)) != GQ_OK) break;
                    s = gq_hessian_add_sum(&H, Hd, (int64_t)nloc * seqlen);
                    if (s == GQ_OK) s = gq_hessian_allreduce(&H);
                    if (s == GQ_OK) digest = gq_hessian_digest(&H);
                    if (s == GQ_OK) s = gq_hessian_finish(&H, Hf);
                    gq_hessian_free(&H);
                }
                if (s == GQ_OK && p->save_hessians) s = gq_hessian_save(p->save_hessians, l, g, Hf, n_in, ns);
            } else {
                struct gq_hessian H;
                if ((s = gq_hessian_init(&H, n_in)) != GQ_OK) break;
                struct capture cap = {
                    .want = (enum gq_block_input)g, .H = &H, .status = GQ_OK, .dim = dim, .sink_weight = sink_w};
                if (p->token_weights == GQ_TW_RESIDUAL && n_group == 1 &&
                    (g == GQ_IN_ATTN_OUT || g == GQ_IN_FFN_DOWN) && gq_dim_value(&m->hp, first->rows) == dim)
                    cap.W = *gq_block_slot(&m->layers[l], first);
                struct gq_block_hooks hooks = {.capture = on_capture, .user = &cap, .stop_after = g, .start_at = stage};
                // The pass that reaches the FFN input first runs in place: X
                // becomes the post-attention residual (o is quantized by now),
                // and later passes skip the attention half.
                bool in_place = stage == GQ_IN_ATTN && g >= GQ_IN_FFN;
                // Kept activations (identical to what a pass would recompute:
                // the linears before them are quantized already): the o pass
                // keeps the attention outputs, so the in-place pass starts
                // there; the down pass keeps the down inputs for finish_block.
                const size_t per_keep = (size_t)seqlen * n_in;
                float *keep = g == GQ_IN_ATTN_OUT && per_keep == per_att   ? att_keep
                              : g == GQ_IN_FFN_DOWN && per_keep == per_hb ? hb_keep
                                                                          : NULL;
                if (in_place && att_ok) hooks.start_at = GQ_IN_ATTN_OUT;
                struct fp_capture fc = {.want = (enum gq_block_input)g, .dst = xfp};
                struct gq_block_hooks fph = {.capture = on_capture_fp, .user = &fc, .stop_after = g, .start_at = GQ_IN_ATTN};
                if (Xfp) {
                    free(Cfp);
                    if (!(Cfp = calloc((size_t)n_in * n_in, sizeof *Cfp))) s = gq_fail(GQ_ERR_NOMEM, "out of memory");
                    cap.C = Cfp, cap.xfp = xfp;
                }
                for (int i = 0; i < nloc && s == GQ_OK && cap.status == GQ_OK; i++) {
                    if (Xfp) // the source model's input of this window first (its own pass: the KV cache is rewritten)
                        s = gq_block_forward(c, l, &fpw, memcpy(tmp_fp, Xfp + i * per, per * sizeof(float)), seqlen, 0, &fph);
                    if (s != GQ_OK) break;
                    float *x = X + i * per;
                    if (!in_place) x = memcpy(tmp, x, per * sizeof(float));
                    if (keep) cap.keep = keep + i * per_keep;
                    if (hooks.start_at == GQ_IN_ATTN_OUT) hooks.att_in = att_keep + i * per_att;
                    s = gq_block_forward(c, l, &m->layers[l], x, seqlen, 0, &hooks);
                    if (s == GQ_OK && cap.status == GQ_OK && (w_lo + i + 1) % unit == 0) s = gq_hessian_fold(&H);
                }
                if (in_place) stage = GQ_IN_FFN;
                if (s == GQ_OK && cap.status == GQ_OK && keep) *(keep == att_keep ? &att_ok : &hb_ok) = true;
                if (s == GQ_OK) s = cap.status;
                if (s == GQ_OK) s = gq_hessian_allreduce(&H);
                if (s == GQ_OK) digest = gq_hessian_digest(&H);
                if (s == GQ_OK) s = gq_hessian_finish(&H, Hf);
                if (s == GQ_OK && Cfp) { // --fp-target: each W of the group → its ridge target, C scaled as H
                    const double sc = H.n_samples > 0 ? 2.0 / (double)H.n_samples : 0.0;
                    for (size_t e = 0; e < (size_t)n_in * n_in; e++) Cfp[e] *= sc;
                    for (int i = 0; s == GQ_OK && i < A->n_tensors; i++) {
                        const struct gq_block_tensor *t = &A->tensors[i];
                        if (t->kind != GQ_T_LINEAR || (int)t->input != g) continue;
                        const float **slot = gq_block_slot(&m->layers[l], t);
                        const int rows = (int)gq_dim_value(&m->hp, t->rows);
                        float *a = n_target < 16 ? malloc(sizeof(float) * (size_t)rows * n_in) : NULL;
                        if (!a) {
                            s = gq_fail(GQ_ERR_NOMEM, "--fp-target: out of memory for blk.%d.%s's target", l, t->name);
                            break;
                        }
                        memcpy(a, *slot, sizeof(float) * (size_t)rows * n_in);
                        *slot = target[n_target++] = a;
                        s = gq_fp_target(a, rows, n_in, Hf, Cfp, p->damp);
                    }
                }
                if (s == GQ_OK && p->save_hessians && gq_dist_rank() == 0) s = gq_hessian_save(p->save_hessians, l, g, Hf, n_in, H.n_samples);
                gq_hessian_free(&H);
            }
            rep->seconds_forward += gq_time_s() - t0;
            t0 = gq_time_s();
            const int first_in_group = rep->n;
            if (s == GQ_OK) s = gq_quantize_group(m, l, g, Hf, p, &cfg, *bpv_map, rep, &pr);
            for (int i = 0; i < n_target; i++) free(target[i]); // the slots hold the quantized copies now
            for (int i = first_in_group; s == GQ_OK && i < rep->n; i++) rep->layers[i].hessian_digest = digest;
            rep->seconds_quant += gq_time_s() - t0;
        }
        if (Xin && s == GQ_OK) {
            struct gq_finetune_report fr;
            // Several ranks: each gathers the block inputs of the windows the
            // fine-tuning reads (the first nft) and runs the same steps on them
            // as one process would, so the file does not depend on the number
            // of ranks (nor does the fine-tuning's time).
            float *Xft = Xin;
            if (gq_dist_size() > 1) {
                const int64_t nft = gq_finetune_windows(p, p->nsamples), mine = (w_hi < nft ? w_hi : nft) - w_lo;
                if (!(Xft = calloc((size_t)nft * per, sizeof(float))))
                    s = gq_fail(GQ_ERR_NOMEM, "--finetune: out of memory for %lld windows' block inputs", (long long)nft);
                else if (mine > 0) memcpy(Xft + (size_t)w_lo * per, Xin, sizeof(float) * (size_t)mine * per);
                if (s == GQ_OK) s = gq_dist_or(Xft, sizeof(float) * (size_t)nft * per);
            }
            if (s == GQ_OK) s = gq_finetune_block(c, m, l, &fpw, Xft, Xft == Xin ? nloc : p->nsamples, seqlen, sink_w, p, &fr);
            if (Xft != Xin) free(Xft);
            if (s == GQ_OK) {
                rep->ft_blocks++, rep->ft_kept += fr.kept;
                rep->ft_loss0 += fr.loss0, rep->ft_loss1 += fr.kept ? fr.loss1 : fr.loss0;
                rep->seconds_finetune += fr.seconds;
                if (p->progress)
                    fprintf(stderr, "\rquantize: blk.%d fine-tuned: block objective %.5g -> %.5g (steps %.5g .. %.5g), %s, %.1fs\033[K\n",
                            l, fr.loss0, fr.loss1, fr.loss_steps[0], fr.loss_steps[1], fr.kept ? "kept" : "not kept",
                            fr.seconds);
            }
            if (s == GQ_OK && fr.kept) { // o changed: the block runs again from its inputs
                memcpy(X, Xin, rep->activation_bytes);
                stage = GQ_IN_ATTN, hb_ok = false;
            }
        }
        if (!load && s == GQ_OK) {
            double t0 = gq_time_s();
            s = dc ? dev_finish(dc, m, l, stage)
                   : finish_block(c, m, l, X, nloc, seqlen, stage, hb_ok ? hb_keep : NULL);
            for (int i = 0; Xfp && i < nloc && s == GQ_OK; i++) // the source block on the source model's stream
                s = gq_block_forward(c, l, &fpw, Xfp + i * per, seqlen, 0, NULL);
            rep->seconds_forward += gq_time_s() - t0;
        }
        for (int i = 0; i < n_copy; i++) free(fp_copy[i]);
        if (s == GQ_OK) s = block_done(m, p, fp, l, rep, first_report);
        block_release(m, A, l, &bm, in_ckpt && (s == GQ_OK || s == GQ_STOPPED));
    }
    gq_progress_end(&pr);
    if (s == GQ_OK && p->head_bpv > 0) {
        const double t0 = gq_time_s();
        struct gq_quant_layer_report *r = &rep->layers[rep->n];
        if (p->progress)
            fprintf(stderr, "quantize: output head%s (%d x %d): GPTVQ at %g bpv\n", gq_head_tied(m) ? " = token embedding" : "",
                    m->hp.n_vocab, m->hp.dim, p->head_bpv);
        struct gq_quant_params q;
        gq_quant_params_from(p, &q);
        s = gq_quantize_head(m, p, &q, X, nloc, seqlen, r);
        if (s == GQ_OK) {
            rep->n++;
            if (p->progress)
                fprintf(stderr, "quantize: output head: rel %.4g, %.4f bpv, %.1fs\n", r->rel_error, r->bpv, r->seconds);
        }
        rep->seconds_quant += gq_time_s() - t0;
    }
    free(Hf);
    free(Hd);
    free(Xfp), free(tmp_fp), free(xfp), free(Cfp), free(Xin);
    free(att_keep);
    free(hb_keep);
    free(X);
    free(tmp);
    gq_cuda_calib_free(dc);
    gq_cuda_dist_stop();
    gq_context_free(c);
    rep->seconds_total = gq_time_s() - t_start;
    return s;
}

void gq_quantize_resolve(struct gq_quantize_params *p, const struct gq_model *m) {
    const struct gq_arch *A = gq_arch_find(m->arch);
    const struct gq_gptvq_params *v = &p->vq;
    if (v->dim == 0) {
        int64_t minw = INT64_MAX;
        bool cols4 = A != NULL;
        for (int i = 0; A && i < A->n_tensors; i++) {
            const struct gq_block_tensor *t = &A->tensors[i];
            if (t->kind != GQ_T_LINEAR) continue;
            const int64_t r = gq_dim_value(&m->hp, t->rows), c = gq_dim_value(&m->hp, t->cols);
            minw = r * c < minw ? r * c : minw;
            cols4 &= c % 4 == 0;
        }
        const bool plain = !v->k && !v->group && v->stages <= 1 && !(v->outlier_frac > 0) && !v->cb_svd_rank && !p->bit_alloc;
        p->vq.dim = plain ? gq_vq_auto_dim(v, v->bpv, minw, cols4) : 2;
        p->vq.dim_auto = true;
    }
    if (p->finetune_steps < 0) {
        struct gq_vq_config c;
        const bool low_bits = gq_vq_config_from_bpv(v->bpv, 1, 0, 0, v->cb_format, 0, 0, &c) == GQ_OK && c.log2k >= 2 &&
                              c.log2k <= 4;
        p->finetune_steps = p->method == GQ_METHOD_GPTVQ && !p->fake_quant && !p->load_hessians && low_bits &&
                                    !strcmp(gq_be()->name, "cpu")
                                ? 20
                                : 0;
    }
}

enum gq_status gq_quantize(struct gq_model *m, const struct gq_quantize_params *p_in, struct gq_quant_report *rep) {
    struct gq_quantize_params rp = *p_in, *p = &rp;
    gq_quantize_resolve(p, m);
    float *bpv_map = NULL;
    enum gq_status s = quantize_run(m, p, rep, &bpv_map);
    free(bpv_map);
    // A run that fails before its first block is checkpointed leaves no
    // folder behind (the files of a foreign or finished run are not touched:
    // blk.0 exists then).
    if (s != GQ_OK && s != GQ_STOPPED && p->checkpoint_dir && gq_dist_rank() == 0 && !gq_ckpt_has_blocks(p->checkpoint_dir)) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", gq_last_error());
        gq_quantize_checkpoint_remove(p->checkpoint_dir);
        gq_fail(s, "%s", msg);
    }
    return s;
}

enum gq_status gq_quant_report_write_json(const struct gq_quant_report *rep, const struct gq_quantize_params *p,
                                          const char *path) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "method", method_name(p->method));
    if (p->method == GQ_METHOD_GPTVQ) {
        const struct gq_gptvq_params *v = &p->vq;
        cJSON_AddNumberToObject(o, "vq_dim", v->dim);
        cJSON_AddNumberToObject(o, "bpv_target", v->bpv);
        cJSON_AddNumberToObject(o, "bpv_achieved", rep->vq_weights ? (double)rep->vq_bits / rep->vq_weights : 0);
        cJSON_AddNumberToObject(o, "head_bpv_target", p->head_bpv);
        cJSON_AddNumberToObject(o, "k", rep->n ? rep->layers[0].k : 0);
        cJSON_AddNumberToObject(o, "em_iters", v->em_iters);
        cJSON_AddStringToObject(o, "em_init", v->em_init == GQ_VQ_INIT_KMEANSPP ? "kmeans++" : "mahalanobis");
        cJSON_AddStringToObject(o, "cb_update", v->cb_update == GQ_CB_UPDATE_EXACT ? "exact"
                                                : v->cb_update == GQ_CB_UPDATE_GD ? "gd" : "none");
        cJSON_AddStringToObject(o, "cb_format", v->cb_format == GQ_CB_INT8 ? "int8" : v->cb_format == GQ_CB_FP16 ? "fp16" : "f32");
        cJSON_AddStringToObject(o, "feedback", v->feedback_diag ? "diag" : "exact");
        cJSON_AddBoolToObject(o, "full_subhessian", v->full_subhessian);
        cJSON_AddNumberToObject(o, "norm_block", v->norm_block);
        cJSON_AddNumberToObject(o, "stages", v->stages);
        cJSON_AddNumberToObject(o, "cb_svd_rank", v->cb_svd_rank);
        cJSON_AddNumberToObject(o, "outlier_frac", v->outlier_frac);
    } else {
        cJSON_AddNumberToObject(o, "wbits", p->wbits);
        cJSON_AddNumberToObject(o, "group_size", p->group_size);
        const int type = gq_grid_gguf_type(p);
        // the grid (f16 scales when it is a GGUF block type) and how the file stores it
        cJSON_AddStringToObject(o, "grid", type >= 0 ? gq_ggml_type_name((enum gq_ggml_type)type) : "f32 scale and zero");
        cJSON_AddStringToObject(o, "output", gq_quantize_gguf_type(p) >= 0 ? "gguf-blocks" : "fake-quant-f32");
    }
    cJSON_AddBoolToObject(o, "sym", p->sym);
    cJSON_AddBoolToObject(o, "act_order", p->act_order);
    cJSON_AddBoolToObject(o, "mse_clip", p->mse_clip);
    cJSON_AddNumberToObject(o, "damp", p->damp);
    if (p->method != GQ_METHOD_RTN) {
        cJSON_AddStringToObject(o, "token_weights", p->token_weights == GQ_TW_NONE ? "none" : "residual");
        cJSON_AddNumberToObject(o, "sink_weight", rep->sink_weight);
    }
    cJSON_AddNumberToObject(o, "seed", (double)p->seed);
    cJSON_AddStringToObject(o, "calib_source", rep->calib_source);
    if (p->command) cJSON_AddStringToObject(o, "command", p->command);
    cJSON_AddNumberToObject(o, "calib_tokens", (double)rep->calib_tokens);
    cJSON_AddNumberToObject(o, "seconds_total", rep->seconds_total);
    cJSON_AddNumberToObject(o, "seconds_calibration_forward", rep->seconds_forward);
    cJSON_AddNumberToObject(o, "seconds_quantization", rep->seconds_quant);
    cJSON_AddNumberToObject(o, "seconds_sampling", rep->seconds_sampling);
    if (p->fp_target) cJSON_AddBoolToObject(o, "fp_target", true);
    cJSON_AddBoolToObject(o, "rotate", gq_quantize_rotates(p));
    if (p->calib_mix) cJSON_AddNumberToObject(o, "calib_mix", p->calib_mix);
    if (p->finetune_steps > 0) { // --finetune: the block objectives summed over the blocks
        cJSON *f = cJSON_AddObjectToObject(o, "finetune");
        cJSON_AddNumberToObject(f, "steps", p->finetune_steps);
        cJSON_AddNumberToObject(f, "lr", p->ft_lr);
        cJSON_AddNumberToObject(f, "batch", p->ft_batch);
        cJSON_AddNumberToObject(f, "blocks", rep->ft_blocks);
        cJSON_AddNumberToObject(f, "blocks_kept", rep->ft_kept);
        cJSON_AddNumberToObject(f, "objective_before", rep->ft_loss0);
        cJSON_AddNumberToObject(f, "objective_after", rep->ft_loss1);
        cJSON_AddNumberToObject(f, "seconds", rep->seconds_finetune);
    }
    cJSON_AddStringToObject(o, "rel_error_definition",
                            p->method != GQ_METHOD_RTN ? "||WX-QX||^2/||WX||^2 through the layer Hessian"
                                                        : "||W-Q||^2/||W||^2 (no calibration)");
    cJSON *arr = cJSON_AddArrayToObject(o, "layers");
    for (int i = 0; i < rep->n; i++) {
        const struct gq_quant_layer_report *r = &rep->layers[i];
        cJSON *e = cJSON_CreateObject();
        char name[48];
        if (r->layer >= 0) snprintf(name, sizeof name, "blk.%d.%s", r->layer, r->name);
        else snprintf(name, sizeof name, "%s", r->name); // the output head
        cJSON_AddStringToObject(e, "name", name);
        cJSON_AddNumberToObject(e, "rows", r->rows);
        cJSON_AddNumberToObject(e, "cols", r->cols);
        if (r->hessian_digest) {
            char dg[24];
            snprintf(dg, sizeof dg, "%016llx", (unsigned long long)r->hessian_digest);
            cJSON_AddStringToObject(e, "hessian_digest", dg);
        }
        cJSON_AddNumberToObject(e, "rel_error", r->rel_error);
        if (p->method == GQ_METHOD_GPTVQ) {
            cJSON_AddNumberToObject(e, "rel_error_before_update", r->rel_error_pass);
            cJSON_AddBoolToObject(e, "update_kept", r->update_kept);
            cJSON_AddNumberToObject(e, "slabs", r->n_slab);
            cJSON_AddNumberToObject(e, "slabs_update_kept", r->n_kept);
            cJSON_AddNumberToObject(e, "bpv", r->bpv);
            cJSON_AddNumberToObject(e, "k", r->k);
            cJSON_AddNumberToObject(e, "group", (double)r->group);
            cJSON_AddNumberToObject(e, "seconds_em", r->t_em);
            cJSON_AddNumberToObject(e, "seconds_assign", r->t_assign);
            cJSON_AddNumberToObject(e, "seconds_feedback", r->t_feedback);
            cJSON_AddNumberToObject(e, "seconds_update", r->t_update);
            cJSON_AddNumberToObject(e, "damp", r->damp);
        }
        if (p->method == GQ_METHOD_GPTQ) {
            cJSON_AddNumberToObject(e, "rel_error_rtn", r->rel_error_rtn);
            cJSON_AddBoolToObject(e, "rtn_fallback", r->rtn_fallback);
            cJSON_AddNumberToObject(e, "slabs", r->n_slab);
            cJSON_AddNumberToObject(e, "slabs_rtn_fallback", r->n_kept);
            cJSON_AddNumberToObject(e, "damp", r->damp);
            cJSON_AddNumberToObject(e, "dead_inputs", r->n_dead);
        }
        cJSON_AddNumberToObject(e, "seconds", r->seconds);
        cJSON_AddItemToArray(arr, e);
    }
    char *txt = cJSON_Print(o);
    cJSON_Delete(o);
    size_t n = txt ? strlen(txt) : 0;
    char *line = txt ? realloc(txt, n + 2) : NULL; // with a final newline
    if (!line) {
        free(txt);
        return gq_fail(GQ_ERR_NOMEM, "out of memory");
    }
    line[n] = '\n', line[n + 1] = 0;
    enum gq_status s = gq_write_file_atomic(path, line, n + 1);
    free(line);
    return s;
}
