// test_forward - the CPU forward, perplexity and generation against the
// independent numpy reference (tests/reference/llama_ref.py goldens) and the
// published stories260K greedy output.
#include "gptvq.h"
#include "model/model.h"
#include "test.h"

#include <cjson/cJSON.h>
#include <stdint.h>

#define SMOL "models/SmolLM2-135M-Instruct.Q4_1.gguf"

static char g_path[1024];
static const char *dpath(const char *rel) {
    snprintf(g_path, sizeof g_path, "%s/%s", data_dir(), rel);
    return g_path;
}


// GQFWDREF v1 (tests/reference/README.md)
struct fwdref {
    uint32_t T, V, n_full, n_cols;
    double gmax;
    const int32_t *tokens, *argmax, *full_pos, *cols;
    const float *maxabs, *full, *colv;
    void *buf;
};

static int load_fwdref(const char *path, struct fwdref *r) {
    size_t n;
    unsigned char *b = test_read_file(path, &n);
    if (!b || n < 40 || memcmp(b, "GQFWDREF", 8) != 0) return 0;
    uint32_t h[6];
    memcpy(h, b + 8, sizeof h);
    if (h[0] != 1) return 0;
    r->T = h[1], r->V = h[2], r->n_full = h[3], r->n_cols = h[4];
    memcpy(&r->gmax, b + 32, 8);
    size_t off = 40;
#define TAKE(field, type, count)            \
    r->field = (const type *)(b + off);     \
    off += sizeof(type) * (size_t)(count);
    TAKE(tokens, int32_t, r->T);
    TAKE(argmax, int32_t, r->T);
    TAKE(maxabs, float, r->T);
    TAKE(full_pos, int32_t, r->n_full);
    TAKE(full, float, (size_t)r->n_full * r->V);
    TAKE(cols, int32_t, r->n_cols);
    TAKE(colv, float, (size_t)r->T * r->n_cols);
#undef TAKE
    r->buf = b;
    return off == n;
}

// Logits over the golden's tokens vs the reference: max|diff| <= tol_rel * global max|logit|
// and argmax agreement on at least min_agree of the positions.
static void check_forward(const char *model_path, const char *golden, double tol_rel, double min_agree) {
    struct fwdref r;
    if (!load_fwdref(golden, &r)) {
        CHECKF(0, "cannot read golden %s", golden);
        return;
    }
    struct gq_model *m = NULL;
    CHECK_OK(gq_model_load(model_path, NULL, &m));
    if (!m) return;
    struct gq_context *c = NULL;
    CHECK_OK(gq_context_new(m, (int)r.T, &c));
    float *logits = malloc((size_t)r.T * r.V * sizeof(float));
    // Two calls (prefill in two batches) so the KV-cache path is exercised too.
    int half = (int)r.T / 2;
    CHECK_OK(gq_forward(c, r.tokens, half, logits, true));
    CHECK_OK(gq_forward(c, r.tokens + half, (int)r.T - half, logits + (size_t)half * r.V, true));
    double maxd = 0;
    int agree = 0;
    for (uint32_t p = 0; p < r.T; p++) {
        const float *row = logits + (size_t)p * r.V;
        int am = 0;
        for (uint32_t v = 1; v < r.V; v++)
            if (row[v] > row[am]) am = (int)v;
        agree += am == r.argmax[p];
        for (uint32_t j = 0; j < r.n_cols; j++) {
            double d = fabs(row[r.cols[j]] - r.colv[(size_t)p * r.n_cols + j]);
            if (d > maxd) maxd = d;
        }
    }
    for (uint32_t f = 0; f < r.n_full; f++) {
        double d = max_abs_diff(logits + (size_t)r.full_pos[f] * r.V, r.full + (size_t)f * r.V, r.V);
        if (d > maxd) maxd = d;
    }
    fprintf(stderr, "%s: %u positions, max|diff| %.3g (%.2g of max|logit| %.2f), argmax agree %d/%u\n",
            model_path, r.T, maxd, maxd / r.gmax, r.gmax, agree, r.T);
    CHECKF(maxd <= tol_rel * r.gmax, "max|diff| %g > %g", maxd, tol_rel * r.gmax);
    CHECKF(agree >= min_agree * r.T, "argmax agreement %d/%u", agree, r.T);
    free(logits);
    gq_context_free(c);
    gq_model_free(m);
    free(r.buf);
}

struct ids {
    int32_t v[1024];
    int n;
};
static bool collect(void *u, int32_t id, const char *b, size_t n) {
    struct ids *s = u;
    if (s->n < 1024) s->v[s->n++] = id;
    return true;
}

static void check_greedy(const char *model_path) {
    size_t n;
    char *txt = test_read_file(dpath("models/stories260K/greedy_t0_tokens.txt"), &n);
    if (!txt) {
        CHECKF(0, "greedy_t0_tokens.txt missing");
        return;
    }
    struct ids want = {0}, got = {0};
    for (char *p = strtok(txt, "\n"); p && want.n < 1024; p = strtok(NULL, "\n")) want.v[want.n++] = atoi(p);
    free(txt);
    struct gq_model *m = NULL;
    CHECK_OK(gq_model_load(model_path, NULL, &m));
    if (!m) return;
    struct gq_gen_params p = {.prompt = "", .n_predict = want.n, .temperature = 0, .top_p = 1, .stop_at_eog = false};
    struct gq_gen_stats st;
    CHECK_OK(gq_generate(m, &p, collect, &got, &st));
    int same = 0;
    while (same < want.n && same < got.n && want.v[same] == got.v[same]) same++;
    fprintf(stderr, "%s: greedy from BOS matches %d/%d golden tokens\n", model_path, same, want.n);
    CHECKF(same == want.n && got.n == want.n, "greedy diverges at token %d", same);
    gq_model_free(m);
}

static double json_num(cJSON *o, const char *k) {
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

// Reduced perplexity run vs the reference value computed with the same protocol.
static void check_ppl(const char *model_path, const char *text_path, const char *golden,
                      enum gq_ppl_protocol proto, double rel_tol) {
    size_t n;
    char *js = test_read_file(golden, &n);
    if (!js) {
        CHECKF(0, "golden %s missing", golden);
        return;
    }
    cJSON *o = cJSON_Parse(js);
    free(js);
    CHECKF(o != NULL, "bad json %s", golden);
    if (!o) return;
    struct gq_model *m = NULL;
    CHECK_OK(gq_model_load(model_path, NULL, &m));
    size_t len;
    char *text = test_read_file(text_path, &len);
    CHECK(text != NULL);
    if (!m || !text) return;
    struct gq_ppl_params p = {.protocol = proto,
                              .n_ctx = (int)json_num(o, "ctx"),
                              .max_windows = (int)json_num(o, "max_windows"),
                              .wikitext = proto == GQ_PPL_GPTQ && gq_ppl_is_wikitext_file(text_path)};
    struct gq_ppl_result r;
    CHECK_OK(gq_perplexity(m, text, len, &p, &r));
    double ref = json_num(o, "ppl");
    fprintf(stderr, "%s on %s [%s ctx %d]: ppl %.6f vs reference %.6f (rel %.2g), scored %lld vs %g, tokens %lld vs %g\n",
            model_path, text_path, proto == GQ_PPL_GPTQ ? "gptq" : "llama.cpp", r.n_ctx, r.ppl, ref,
            fabs(r.ppl - ref) / ref, (long long)r.n_scored, json_num(o, "n_scored"), (long long)r.n_tokens_text,
            json_num(o, "n_tokens_text"));
    CHECKF(fabs(r.ppl - ref) <= rel_tol * ref, "ppl %.6f vs %.6f", r.ppl, ref);
    CHECK(r.n_scored == (int64_t)json_num(o, "n_scored"));
    CHECK(r.n_tokens_text == (int64_t)json_num(o, "n_tokens_text"));
    cJSON_Delete(o);
    free(text);
    gq_model_free(m);
}

struct cap {
    int calls[GQ_IN_COUNT];
    double sum[GQ_IN_COUNT];
};
static void on_capture(void *u, int layer, enum gq_block_input which, const float *x, int n, int n_in,
                       const float *resid) {
    (void)resid;
    struct cap *c = u;
    c->calls[which]++;
    for (size_t i = 0; i < (size_t)n * n_in; i++) c->sum[which] += x[i];
}

// The block-level API (used by calibration) reproduces gq_forward's hidden
// states, captures each linear group's input once per block, and stopping
// before the first residual add leaves x untouched.
static void check_block_api(const char *model_path) {
    struct gq_model *m = NULL;
    CHECK_OK(gq_model_load(model_path, NULL, &m));
    if (!m) return;
    const int n = 16, dim = m->hp.dim;
    int32_t toks[16];
    for (int i = 0; i < n; i++) toks[i] = (i * 37 + 5) % m->hp.n_vocab;
    struct gq_context *c = NULL;
    CHECK_OK(gq_context_new(m, n, &c));
    float *x = malloc((size_t)n * dim * sizeof(float)), *x0 = malloc((size_t)n * dim * sizeof(float));
    CHECK_OK(gq_embed(m, toks, n, x));
    struct cap cap = {0};
    for (int l = 0; l < m->hp.n_layers; l++) {
        memcpy(x0, x, (size_t)n * dim * sizeof(float));
        struct gq_block_hooks stop = {.capture = NULL, .stop_after = GQ_IN_ATTN_OUT};
        CHECK_OK(gq_block_forward(c, l, &m->layers[l], x, n, 0, &stop));
        CHECK(memcmp(x, x0, (size_t)n * dim * sizeof(float)) == 0);
        struct gq_block_hooks h = {.capture = on_capture, .user = &cap, .stop_after = -1};
        CHECK_OK(gq_block_forward(c, l, &m->layers[l], x, n, 0, &h));
    }
    for (int k = 0; k < GQ_IN_COUNT; k++) CHECK(cap.calls[k] == m->hp.n_layers && isfinite(cap.sum[k]));
    // The head applied (naively, in double) to the last hidden state must give
    // gq_forward's last-token logits.
    float *want = malloc((size_t)m->hp.n_vocab * sizeof(float));
    gq_context_reset(c);
    CHECK_OK(gq_forward(c, toks, n, want, false));
    float *got = malloc((size_t)m->hp.n_vocab * sizeof(float));
    const float *h = x + (size_t)(n - 1) * dim;
    double ss = 0;
    for (int j = 0; j < dim; j++) ss += (double)h[j] * h[j];
    double inv = 1.0 / sqrt(ss / dim + m->hp.rms_eps);
    for (int v = 0; v < m->hp.n_vocab; v++) {
        double acc = 0;
        for (int j = 0; j < dim; j++) acc += h[j] * inv * m->output_norm[j] * m->output[(size_t)v * dim + j];
        got[v] = (float)acc;
    }
    double d = max_abs_diff(want, got, (size_t)m->hp.n_vocab);
    fprintf(stderr, "block API: hidden state -> logits max|diff| %.3g vs gq_forward\n", d);
    CHECKF(d < 1e-4, "block forward disagrees with gq_forward: %g", d);
    free(want);
    free(got);
    free(x);
    free(x0);
    gq_context_free(c);
    gq_model_free(m);
}

// Resuming a block at its FFN half (engine's in-place pass) gives the same
// output as the whole block; lockstep decode of several sequences gives each
// sequence's logits as running it alone.
static void check_resume_and_lockstep(const char *model_path) {
    struct gq_model *m = NULL;
    CHECK_OK(gq_model_load(model_path, NULL, &m));
    if (!m) return;
    const int n = 24, dim = m->hp.dim, V = m->hp.n_vocab, B = 3;
    int32_t toks[3][24];
    for (int b = 0; b < B; b++)
        for (int i = 0; i < n; i++) toks[b][i] = (i * 37 + 11 * b + 5) % V;
    struct gq_context *c = NULL;
    CHECK_OK(gq_context_new(m, n, &c));
    float *x = malloc(sizeof(float) * n * dim), *y = malloc(sizeof(float) * n * dim);
    CHECK_OK(gq_embed(m, toks[0], n, x));
    memcpy(y, x, sizeof(float) * n * dim);
    int same = 1;
    for (int l = 0; l < m->hp.n_layers; l++) {
        CHECK_OK(gq_block_forward(c, l, &m->layers[l], x, n, 0, NULL));
        struct gq_block_hooks a = {.stop_after = GQ_IN_FFN}, b = {.stop_after = -1, .start_at = GQ_IN_FFN};
        CHECK_OK(gq_block_forward(c, l, &m->layers[l], y, n, 0, &a));
        CHECK_OK(gq_block_forward(c, l, &m->layers[l], y, n, 0, &b));
        same &= memcmp(x, y, sizeof(float) * n * dim) == 0;
    }
    CHECKF(same, "block resumed at the FFN half differs from the whole block");

    float *want = malloc(sizeof(float) * B * n * V), *got = malloc(sizeof(float) * B * V);
    for (int b = 0; b < B; b++) {
        gq_context_reset(c);
        CHECK_OK(gq_forward(c, toks[b], n, want + (size_t)b * n * V, true));
    }
    struct gq_context *seqs[3] = {0}, *batch = NULL;
    CHECK_OK(gq_context_new(m, n, &batch));
    for (int b = 0; b < B; b++) CHECK_OK(gq_context_new(m, n, &seqs[b]));
    double worst = 0;
    for (int t = 0; t < n; t++) {
        int32_t step[3] = {toks[0][t], toks[1][t], toks[2][t]};
        CHECK_OK(gq_forward_lockstep(batch, seqs, B, step, got));
        for (int b = 0; b < B; b++) {
            double d = max_abs_diff(want + ((size_t)b * n + t) * V, got + (size_t)b * V, (size_t)V);
            worst = d > worst ? d : worst;
        }
    }
    fprintf(stderr, "lockstep decode of %d sequences x %d tokens vs each alone: max|diff| %.3g\n", B, n, worst);
    CHECKF(worst < 1e-4, "lockstep decode disagrees with single-sequence forward: %g", worst);
    int32_t more[3] = {1, 1, 1};
    CHECK(gq_forward_lockstep(batch, seqs, B, more, got) != GQ_OK); // contexts are full
    for (int b = 0; b < B; b++) gq_context_free(seqs[b]);
    gq_context_free(batch);
    gq_context_free(c);
    free(x), free(y), free(want), free(got);
    gq_model_free(m);
}

// gq_forward_rows: two documents side by side in one pass - a shared
// prefix with three branches (one empty), then a plain sequence long enough
// for a second attention tile (its empty first ranges at row 0) - give
// every row the logits of its own sequence run alone through gq_forward; a
// layout that lets a row see keys out of order, and a logits row out of
// range, are refused.
static void check_rows_layout(const char *model_path, double tol) {
    struct gq_model *m = NULL;
    CHECK_OK(gq_model_load(model_path, NULL, &m));
    if (!m) return;
    const int V = m->hp.n_vocab, C = 9, nb = 3, blen[3] = {6, 0, 11}, L2 = 150;
    static int32_t seq[4][160]; // sequences: prefix + branch b (b < 3), then the plain one
    for (int i = 0; i < C + 11; i++) seq[0][i] = seq[1][i] = seq[2][i] = (i * 29 + 3) % V;
    for (int b = 0; b < nb; b++)
        for (int i = C; i < C + blen[b]; i++) seq[b][i] = (i * 13 + 7 * b + 1) % V;
    for (int i = 0; i < L2; i++) seq[3][i] = (i * 41 + 17) % V;
    static int32_t tok[200];
    static int pos[200], lo0[200], hi0[200], lo1[200], out[200];
    int n = 0, br[3];
    for (int i = 0; i < C; i++) tok[n] = seq[0][i], pos[n] = i, lo0[n] = hi0[n] = lo1[n] = 0, n++;
    for (int b = 0; b < nb; b++) {
        br[b] = n;
        for (int i = C; i < C + blen[b]; i++) tok[n] = seq[b][i], pos[n] = i, lo0[n] = 0, hi0[n] = C, lo1[n] = br[b], n++;
    }
    const int a2 = n;
    for (int i = 0; i < L2; i++) tok[n] = seq[3][i], pos[n] = i, lo0[n] = hi0[n] = 0, lo1[n] = a2, n++;
    for (int i = 0; i < n; i++) out[i] = n - 1 - i; // every row, in reverse
    float *got = malloc(sizeof(float) * (size_t)n * V), *want = malloc(sizeof(float) * 160 * (size_t)V);
    struct gq_context *c = NULL;
    CHECK_OK(gq_context_new(m, 200, &c));
    const struct gq_rows_layout lay = {pos, lo0, hi0, lo1};
    CHECK_OK(gq_forward_rows(c, tok, n, &lay, out, n, got));
    CHECK(gq_context_pos(c) == n);
    double worst = 0;
    for (int sq = 0; sq < 4; sq++) {
        const int len = sq < 3 ? C + blen[sq] : L2;
        gq_context_reset(c);
        CHECK_OK(gq_forward(c, seq[sq], len, want, true));
        for (int i = 0; i < len; i++) {
            const int row = sq == 3 ? a2 + i : i < C ? i : br[sq] + i - C;
            const double d = max_abs_diff(want + (size_t)i * V, got + (size_t)(n - 1 - row) * V, (size_t)V);
            worst = d > worst ? d : worst;
        }
    }
    fprintf(stderr, "rows layout (%d rows: a prefix of %d, branches of 6, 0, 11, a sequence of %d) vs each alone: max|diff| %.3g\n",
            n, C, L2, worst);
    CHECKF(worst < tol, "rows layout disagrees with single-sequence forward: %g", worst);
    gq_context_reset(c);
    hi0[C] = C + 1; // sees past its prefix into its own branch's start
    CHECK(gq_forward_rows(c, tok, n, &lay, out, n, got) == GQ_ERR_ARG);
    hi0[C] = C, out[0] = n;
    CHECK(gq_forward_rows(c, tok, n, &lay, out, n, got) == GQ_ERR_ARG);
    gq_context_free(c);
    free(got), free(want);
    gq_model_free(m);
}

int main(void) {
    char gguf[1024], bin[1024], ts[1024], wiki[1024];
    snprintf(gguf, sizeof gguf, "%s/models/stories260K/stories260K.gguf", data_dir());
    snprintf(bin, sizeof bin, "%s/models/stories260K/stories260K.bin", data_dir());
    snprintf(ts, sizeof ts, "%s/tinystories/tinystories_sample.txt", data_dir());
    snprintf(wiki, sizeof wiki, "%s/wikitext-2-raw/wiki.test.raw", data_dir());
    if (!file_exists(gguf)) SKIP("%s not found (set GQ_DATA)", gguf);

    check_forward(gguf, "tests/golden/fwd_stories260k_tinystories256.bin", 1e-4, 1.0);
    check_block_api(gguf);
    check_resume_and_lockstep(gguf);
    check_rows_layout(gguf, 1e-4);
    check_greedy(gguf);
    check_greedy(bin);
    check_ppl(gguf, ts, "tests/golden/ppl_stories260k_tinystories_gptq_ctx256.json", GQ_PPL_GPTQ, 1e-4);

    if (file_exists(SMOL)) {
        check_forward(SMOL, "tests/golden/fwd_smollm2_wikitext512.bin", 1e-3, 0.999);
        check_rows_layout(SMOL, 1e-3);
        check_ppl(SMOL, wiki, "tests/golden/ppl_smollm2_wikitext_gptq_ctx2048.json", GQ_PPL_GPTQ, 1e-4);
        check_ppl(SMOL, wiki, "tests/golden/ppl_smollm2_wikitext_llamacpp_ctx512.json", GQ_PPL_LLAMACPP, 1e-4);
    } else {
        fprintf(stderr, "note: %s missing (run scripts/setup.sh); SmolLM2 checks not run\n", SMOL);
        CHECKF(getenv("CI") == NULL, "SmolLM2 model missing in CI");
    }
    return test_done("test_forward");
}
