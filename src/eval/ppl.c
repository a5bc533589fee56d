// ppl.c - perplexity with named protocols.
//
// gptq (GPTQ/GPTVQ/AQLM/QuIP#): WikiText rows joined by "\n\n", one BOS at the
//   start if the model adds BOS, non-overlapping windows of n_ctx tokens, the
//   remainder dropped, every position after the first of a window scored.
// llama.cpp (tools/perplexity, function perplexity()): the raw file, windows
//   of n_ctx (512), each window's first token replaced by BOS when the model
//   adds BOS (`if (add_bos && j == 0)`; SmolLM2 adds none, so its windows
//   stay as they are), only the second half scored: logits first..n_ctx-2
//   with first = n_ctx/2.
#include "kern/vmath.h"
#include "model/model.h"
#include "model/tokenizer.h"

#include <math.h>

// Adds the NLL of tokens[j+1] given logits row j for j in [first, n-2].
static void score_rows(const float *logits, int n_vocab, const int32_t *tokens, int j0, int j1,
                       double *sum, double *sum_sq, int64_t *count) {
    double s = 0, s2 = 0;
#pragma omp parallel for reduction(+ : s, s2)
    for (int j = j0; j < j1; j++) {
        double nll = gq_row_nll(logits + (size_t)(j - j0) * n_vocab, n_vocab, tokens[j + 1]);
        s += nll;
        s2 += nll * nll;
    }
    *sum += s;
    *sum_sq += s2;
    *count += j1 - j0;
}

enum gq_status gq_perplexity(const struct gq_model *m, const char *text, size_t len,
                             const struct gq_ppl_params *p, struct gq_ppl_result *r) {
    memset(r, 0, sizeof *r);
    double t0 = gq_time_s();
    bool gptq = p->protocol == GQ_PPL_GPTQ;
    int n_ctx = p->n_ctx;
    if (n_ctx <= 0) n_ctx = gptq ? 2048 : 512;
    if (p->n_ctx <= 0 && n_ctx > m->hp.ctx_len) n_ctx = m->hp.ctx_len;
    if (n_ctx < 2) return gq_fail(GQ_ERR_ARG, "perplexity: context %d too small", n_ctx);

    char *joined = NULL;
    if (gptq && p->wikitext == 1) {
        size_t jl;
        joined = gq_wikitext_join(text, len, &jl);
        if (!joined) return gq_fail(GQ_ERR_NOMEM, "out of memory");
        text = joined;
        len = jl;
    }
    const struct gq_tokenizer *tok = m->tok;
    bool add_bos = gq_tokenizer_add_bos(tok) && gq_tokenizer_bos(tok) >= 0;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    enum gq_status s = gq_tokenize(tok, text, len, add_bos, false, &ids, &n_ids);
    free(joined);
    if (s != GQ_OK) return s;
    r->n_tokens_text = (int64_t)n_ids;
    r->n_ctx = n_ctx;
    int n_win = (int)(n_ids / (size_t)n_ctx);
    r->n_windows_total = n_win;
    if (p->max_windows > 0 && n_win > p->max_windows) n_win = p->max_windows;
    if (n_win == 0) {
        free(ids);
        return gq_fail(GQ_ERR_ARG, "perplexity: the text has %zu tokens, fewer than one window of %d", n_ids, n_ctx);
    }

    const double t_eval = gq_time_s();
    const int n_batch = n_ctx < 512 ? n_ctx : 512;
    struct gq_context *c = NULL;
    float *logits = malloc((size_t)n_batch * m->hp.n_vocab * sizeof(float));
    int32_t *win = malloc((size_t)n_ctx * sizeof(int32_t));
    if (!logits || !win) s = gq_fail(GQ_ERR_NOMEM, "out of memory");
    if (s == GQ_OK) s = gq_context_new_device(m, n_ctx, p->device, &c);
    if (s == GQ_OK) r->device_f32 = gq_context_device_f32(c);
    double sum = 0, sum_sq = 0;
    int64_t count = 0;
    struct gq_progress pr;
    gq_progress_start(&pr, gptq ? "ppl[gptq]" : "ppl[llama.cpp]", n_win, p->progress);
    // first scored logit row of a window
    int first = gptq ? 0 : n_ctx / 2;
    for (int w = 0; w < n_win && s == GQ_OK; w++) {
        memcpy(win, ids + (size_t)w * n_ctx, (size_t)n_ctx * sizeof(int32_t));
        if (!gptq && add_bos) win[0] = gq_tokenizer_bos(tok);
        gq_context_reset(c);
        for (int b = 0; b < n_ctx && s == GQ_OK; b += n_batch) {
            int nb = n_ctx - b < n_batch ? n_ctx - b : n_batch;
            s = gq_forward(c, win + b, nb, logits, true);
            // rows b..b+nb-1 predict tokens b+1..; the last row of a window predicts nothing
            int j0 = b > first ? b : first, j1 = b + nb < n_ctx - 1 ? b + nb : n_ctx - 1;
            if (s == GQ_OK && j0 < j1)
                score_rows(logits + (size_t)(j0 - b) * m->hp.n_vocab, m->hp.n_vocab, win, j0, j1, &sum,
                           &sum_sq, &count);
        }
        char extra[64];
        snprintf(extra, sizeof extra, "ppl %.4f", exp(sum / (double)(count ? count : 1)));
        gq_progress_update(&pr, w + 1, extra);
    }
    gq_progress_end(&pr);
    gq_context_free(c);
    free(logits);
    free(win);
    free(ids);
    if (s != GQ_OK) return s;
    r->n_windows = n_win;
    r->n_scored = count;
    r->nll_mean = sum / (double)count;
    double var = sum_sq / (double)count - r->nll_mean * r->nll_mean;
    r->nll_stderr = count > 1 && var > 0 ? sqrt(var / (double)(count - 1)) : 0;
    r->ppl = exp(r->nll_mean);
    r->seconds = gq_time_s() - t0;
    r->seconds_eval = gq_time_s() - t_eval;
    if (!isfinite(r->ppl)) return gq_fail(GQ_ERR_NUMERIC, "perplexity is not finite (mean NLL %g)", r->nll_mean);
    return GQ_OK;
}

