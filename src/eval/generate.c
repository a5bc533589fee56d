// generate.c - text generation: greedy or temperature + top-p sampling, streamed.
#include "model/model.h"
#include "model/tokenizer.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>

void openblas_set_num_threads(int num_threads);
// OpenBLAS's kernel table (weak: another BLAS still links)
char *openblas_get_corename(void) __attribute__((weak));

const char *gq_blas_kernels(void) { return openblas_get_corename ? openblas_get_corename() : "unknown"; }

void gq_set_threads(int n) {
    if (n <= 0) n = gq_default_threads();
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

enum gq_status gq_chat_format(const struct gq_model *m, const char *prompt, char **out) {
    *out = NULL;
    const char *t = m->chat_template;
    const char *fmt = NULL;
    if (t && strstr(t, "<|im_start|>")) {
        // ChatML (SmolLM2, Qwen2): the template's own default system prompt is
        // not added; the user turn, then the assistant header.
        fmt = "<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n";
    } else if (t && strstr(t, "<|start_header_id|>")) {
        fmt = "<|start_header_id|>user<|end_header_id|>\n\n%s<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n";
    } else {
        return gq_fail(GQ_ERR_UNSUPPORTED, "--chat: the model has %s chat template (known: ChatML, Llama 3)",
                       t ? "an unknown" : "no");
    }
    size_t n = strlen(fmt) + strlen(prompt) + 1;
    char *s = malloc(n);
    if (!s) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    snprintf(s, n, fmt, prompt);
    *out = s;
    return GQ_OK;
}

struct prob_idx {
    float p;
    int32_t id;
};
static int cmp_prob_desc(const void *a, const void *b) {
    float x = ((const struct prob_idx *)a)->p, y = ((const struct prob_idx *)b)->p;
    return (x < y) - (x > y);
}

static int32_t argmax(const float *x, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static int32_t sample(float *logits, int n, float temp, float top_p, struct prob_idx *buf, uint64_t *rng) {
    if (temp <= 0) return argmax(logits, n);
    float mx = logits[argmax(logits, n)];
    double z = 0;
    for (int i = 0; i < n; i++) {
        buf[i].p = expf((logits[i] - mx) / temp);
        buf[i].id = i;
        z += buf[i].p;
    }
    for (int i = 0; i < n; i++) buf[i].p = (float)(buf[i].p / z);
    int keep = n;
    if (top_p > 0 && top_p < 1) {
        qsort(buf, (size_t)n, sizeof *buf, cmp_prob_desc);
        double cum = 0;
        for (keep = 0; keep < n; keep++) {
            cum += buf[keep].p;
            if (cum >= top_p) {
                keep++;
                break;
            }
        }
        if (keep > n) keep = n;
    }
    double total = 0;
    for (int i = 0; i < keep; i++) total += buf[i].p;
    double r = gq_rng_uniform(rng) * total, acc = 0;
    for (int i = 0; i < keep; i++) {
        acc += buf[i].p;
        if (r < acc) return buf[i].id;
    }
    return buf[keep - 1].id;
}

enum gq_status gq_generate(const struct gq_model *m, const struct gq_gen_params *p, gq_token_cb cb,
                           void *user, struct gq_gen_stats *stats) {
    memset(stats, 0, sizeof *stats);
    if (p->n_predict < 0) return gq_fail(GQ_ERR_ARG, "-n must be >= 0 (got %d)", p->n_predict);
    if (p->temperature < 0) return gq_fail(GQ_ERR_ARG, "temperature must be >= 0 (got %g)", p->temperature);
    if (!(p->top_p > 0 && p->top_p <= 1)) return gq_fail(GQ_ERR_ARG, "top-p must be in (0, 1] (got %g)", p->top_p);
    const char *prompt = p->prompt ? p->prompt : "";
    char *chat = NULL;
    if (p->chat) {
        GQ_TRY(gq_chat_format(m, prompt, &chat));
        prompt = chat;
    }
    const struct gq_tokenizer *tok = m->tok;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    bool add_bos = gq_tokenizer_add_bos(tok) && gq_tokenizer_bos(tok) >= 0;
    enum gq_status s = gq_tokenize(tok, prompt, strlen(prompt), add_bos, p->chat, &ids, &n_ids);
    free(chat);
    if (s != GQ_OK) return s;
    if (n_ids == 0) {
        // Nothing to condition on (no BOS, empty prompt): start from BOS or EOS.
        int32_t start = gq_tokenizer_bos(tok) >= 0 ? gq_tokenizer_bos(tok) : gq_tokenizer_eos(tok);
        free(ids);
        if (start < 0) return gq_fail(GQ_ERR_ARG, "empty prompt and the model has no BOS/EOS token to start from");
        ids = malloc(sizeof *ids);
        if (!ids) return gq_fail(GQ_ERR_NOMEM, "out of memory");
        ids[0] = start;
        n_ids = 1;
    }
    int n_ctx = p->n_ctx > 0 ? p->n_ctx : (int)n_ids + p->n_predict;
    if (n_ctx > m->hp.ctx_len && p->n_ctx <= 0) n_ctx = m->hp.ctx_len;
    if ((int)n_ids + p->n_predict > n_ctx) {
        free(ids);
        return gq_fail(GQ_ERR_ARG, "prompt (%zu tokens) + %d new tokens exceed the context of %d", n_ids,
                       p->n_predict, n_ctx);
    }
    struct gq_context *c = NULL;
    float *logits = malloc((size_t)m->hp.n_vocab * sizeof(float));
    struct prob_idx *buf = malloc((size_t)m->hp.n_vocab * sizeof *buf);
    if (!logits || !buf) s = gq_fail(GQ_ERR_NOMEM, "out of memory");
    if (s == GQ_OK) s = gq_context_new_device(m, n_ctx, p->device, &c);
    if (s == GQ_OK) stats->device_f32 = gq_context_device_f32(c);
    stats->n_prompt = (int)n_ids;
    double t0 = gq_time_s();
    if (s == GQ_OK) s = gq_forward(c, ids, (int)n_ids, logits, false);
    double t1 = gq_time_s();
    stats->prompt_seconds = t1 - t0;
    uint64_t rng = p->seed;
    char piece[256];
    int32_t prev = ids[n_ids - 1];
    for (int i = 0; i < p->n_predict && s == GQ_OK; i++) {
        int32_t next = sample(logits, m->hp.n_vocab, p->temperature, p->top_p, buf, &rng);
        stats->n_generated++;
        if (p->stop_at_eog && gq_tokenizer_is_eog(tok, next)) break;
        // _after: drops the leading space of the first word after BOS (as run.c)
        size_t nb = gq_token_to_bytes_after(tok, prev, next, piece, sizeof piece);
        if (nb > sizeof piece) nb = sizeof piece;
        prev = next;
        if (cb && !cb(user, next, piece, nb)) break;
        if (i + 1 < p->n_predict) s = gq_forward(c, &next, 1, logits, false);
    }
    stats->gen_seconds = gq_time_s() - t1;
    gq_context_free(c);
    free(logits);
    free(buf);
    free(ids);
    return s;
}
