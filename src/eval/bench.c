// bench.c - decode and prefill speed as llama.cpp's llama-bench measures it
// (contract: gptvq.h, gq_bench).
#include "model/model.h"
#include "model/tokenizer.h"

enum gq_status gq_bench(const struct gq_model *m, int n_prompt, int n_gen, int reps, const char *device, double *ts) {
    if ((n_prompt > 0) == (n_gen > 0) || n_prompt < 0 || n_gen < 0 || reps < 1)
        return gq_fail(GQ_ERR_ARG, "bench: one test at a time (a prompt of n_prompt tokens or n_gen decoded ones), "
                                   "reps >= 1 (got %d, %d, %d)", n_prompt, n_gen, reps);
    const int n = n_prompt + n_gen;
    if (n > m->hp.ctx_len) return gq_fail(GQ_ERR_ARG, "bench: %d tokens exceed the model's context of %d", n, m->hp.ctx_len);
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)n);
    float *logits = malloc(sizeof(float) * (size_t)m->hp.n_vocab);
    struct gq_context *c = NULL;
    enum gq_status s = tok && logits ? GQ_OK : gq_fail(GQ_ERR_NOMEM, "out of memory");
    if (s == GQ_OK) s = gq_context_new_device(m, n, device, &c);
    uint64_t rng = 1234;
    const int bos = gq_tokenizer_add_bos(m->tok) ? gq_tokenizer_bos(m->tok) : -1;
    for (int i = 0; i < n && tok; i++) tok[i] = i == 0 && bos >= 0 ? bos : (int32_t)(gq_splitmix64(&rng) % (uint64_t)m->hp.n_vocab);
    // warm-up (as llama-bench: a short prompt or one decoded token)
    if (s == GQ_OK) s = gq_forward(c, tok, n_prompt > 0 ? (n_prompt < 32 ? n_prompt : 32) : 1, logits, false);
    for (int r = 0; r < reps && s == GQ_OK; r++) {
        gq_context_reset(c);
        const double t0 = gq_time_s();
        if (n_prompt > 0) s = gq_forward(c, tok, n_prompt, logits, false);
        for (int i = 0; i < n_gen && s == GQ_OK; i++) s = gq_forward(c, tok + i, 1, logits, false);
        ts[r] = n / (gq_time_s() - t0);
    }
    gq_context_free(c);
    free(tok), free(logits);
    return s;
}
