// zeroshot.c - zero-shot evaluation with lm-evaluation-harness's conventions
// (contract and the conventions in words: gptvq.h, "Zero-shot evaluation").
//
// Layout: text helpers that reproduce the harness's Python string handling;
// one loader per task turning a data file into documents (a document is a
// list of (context, continuation) requests and a gold index); the scorer
// (tokenize as the harness does; each document one token tree - its
// requests' common prefix once, their rests as branches - many documents
// per forward pass; log-likelihood and greedy check of the continuation);
// then the per-task metrics.
#include "model/model.h"
#include "model/tokenizer.h"
#include "kern/qmatmul.h"
#include "kern/vmath.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>

static const char *const task_names[GQ_ZS_N_TASKS] = {"piqa",       "arc_easy", "arc_challenge", "hellaswag",
                                                      "winogrande", "boolq",    "lambada"};
// data file of each task under the data directory
static const char *const task_files[GQ_ZS_N_TASKS] = {
    "piqa/valid.jsonl",           "arc_easy/test.jsonl", "arc_challenge/test.jsonl", "hellaswag/validation.jsonl",
    "winogrande/validation.jsonl", "boolq/validation.jsonl", "lambada/lambada_test.jsonl"};

const char *gq_zs_task_name(int task) { return task >= 0 && task < GQ_ZS_N_TASKS ? task_names[task] : "?"; }
int gq_zs_task_find(const char *name) {
    for (int t = 0; t < GQ_ZS_N_TASKS; t++)
        if (strcmp(name, task_names[t]) == 0) return t;
    return -1;
}

// ---------------------------------------------------------------------------
// Python string semantics on UTF-8.

struct sbuf {
    char *s;
    size_t n, cap;
};
static bool sb_add(struct sbuf *b, const char *p, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = (b->n + n + 1) * 2;
        char *s = realloc(b->s, cap);
        if (!s) return false;
        b->s = s, b->cap = cap;
    }
    memcpy(b->s + b->n, p, n);
    b->n += n;
    b->s[b->n] = 0;
    return true;
}
static char *cat(const char *a, const char *b, const char *c) { // a + b + c, malloc'd
    size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
    char *s = malloc(la + lb + lc + 1);
    if (s) memcpy(s, a, la), memcpy(s + la, b, lb), memcpy(s + la + lb, c, lc + 1);
    return s;
}

// Code point at s (length in *len); invalid bytes count as one code point.
static uint32_t utf8_cp(const unsigned char *s, int *len) {
    if (s[0] < 0x80) return *len = 1, s[0];
    int n = s[0] >= 0xF0 ? 4 : s[0] >= 0xE0 ? 3 : s[0] >= 0xC0 ? 2 : 1;
    uint32_t cp = n == 1 ? s[0] : s[0] & (0x3F >> (n - 1));
    for (int i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) return *len = 1, s[0];
        cp = cp << 6 | (s[i] & 0x3F);
    }
    return *len = n, cp;
}
// Python's len(): code points.
static int py_len(const char *s) {
    int n = 0, l;
    for (const unsigned char *p = (const unsigned char *)s; *p; p += l, n++) utf8_cp(p, &l);
    return n;
}
// Python's str.isspace() for one code point.
static bool py_space(uint32_t c) {
    return (c >= 9 && c <= 13) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}
// Python's str.strip() (no argument), in place.
static void py_strip(char *s) {
    size_t n = strlen(s), a = 0, b = n;
    int l;
    while (a < n && py_space(utf8_cp((const unsigned char *)s + a, &l))) a += l;
    while (b > a) { // step back over one code point
        size_t q = b - 1;
        while (q > a && ((unsigned char)s[q] & 0xC0) == 0x80) q--;
        if (!py_space(utf8_cp((const unsigned char *)s + q, &l))) break;
        b = q;
    }
    memmove(s, s + a, b - a);
    s[b - a] = 0;
}
// Python's str.replace(a, b): non-overlapping, left to right. malloc'd.
static char *py_replace(const char *s, const char *a, const char *b) {
    struct sbuf o = {0};
    size_t la = strlen(a), lb = strlen(b);
    bool ok = sb_add(&o, "", 0);
    for (const char *p = s; ok && *p;) {
        if (strncmp(p, a, la) == 0) ok = sb_add(&o, b, lb), p += la;
        else ok = sb_add(&o, p, 1), p++;
    }
    if (!ok) free(o.s);
    return ok ? o.s : NULL;
}
// re.sub("\\[.*?\\]", "", s): each "[" up to the first "]" after it, when no
// newline lies between ("." does not match "\n"). malloc'd.
static char *drop_brackets(const char *s) {
    struct sbuf o = {0};
    bool ok = sb_add(&o, "", 0);
    for (const char *p = s; ok && *p;) {
        const char *e = *p == '[' ? strpbrk(p + 1, "]\n") : NULL;
        if (e && *e == ']') p = e + 1;
        else ok = sb_add(&o, p, 1), p++;
    }
    if (!ok) free(o.s);
    return ok ? o.s : NULL;
}
// The harness's hellaswag preprocess(): strip, " [title]" -> ". ", bracketed
// tags removed, "  " -> " ". Takes ownership of s; malloc'd.
static char *hellaswag_clean(char *s) {
    if (!s) return NULL;
    py_strip(s);
    char *a = py_replace(s, " [title]", ". ");
    free(s);
    char *b = a ? drop_brackets(a) : NULL;
    free(a);
    char *c = b ? py_replace(b, "  ", " ") : NULL;
    free(b);
    return c;
}

// ---------------------------------------------------------------------------
// Documents and the task loaders.

struct zs_req {
    char *ctx, *cont; // continuation with its leading delimiter
    int chars;        // acc_norm length: the choice text without the delimiter
};
struct zs_doc {
    int idx, gold, n;
    struct zs_req r[GQ_ZS_MAX_CHOICES];
};
struct zs_docs {
    struct zs_doc *d;
    int n, cap;
};
static void docs_free(struct zs_docs *ds) {
    for (int i = 0; i < ds->n; i++)
        for (int j = 0; j < ds->d[i].n; j++) free(ds->d[i].r[j].ctx), free(ds->d[i].r[j].cont);
    free(ds->d);
    memset(ds, 0, sizeof *ds);
}

// Where a loader is: the file and the 1-based line for messages.
struct at {
    const char *path;
    int line;
};
#define BAD(AT, ...) bad_line(AT, __VA_ARGS__)
__attribute__((format(printf, 2, 3))) static enum gq_status bad_line(const struct at *at, const char *fmt, ...) {
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return gq_fail(GQ_ERR_FORMAT, "%s:%d: %s", at->path, at->line, msg);
}

static enum gq_status jstr(const struct at *at, const cJSON *o, const char *key, const char **out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v) return BAD(at, "missing field \"%s\"", key);
    if (!cJSON_IsString(v)) return BAD(at, "field \"%s\" is not a string", key);
    *out = v->valuestring;
    return GQ_OK;
}

// A request (ctx, delim + choice); copies the strings.
static enum gq_status add_req(struct zs_doc *d, const char *ctx, const char *delim, const char *choice) {
    if (d->n == GQ_ZS_MAX_CHOICES) return gq_fail(GQ_ERR_UNSUPPORTED, "more than %d choices", GQ_ZS_MAX_CHOICES);
    struct zs_req *r = &d->r[d->n];
    r->ctx = cat(ctx, "", ""), r->cont = cat(delim, choice, "");
    r->chars = py_len(choice);
    d->n++;
    return r->ctx && r->cont ? GQ_OK : gq_fail(GQ_ERR_NOMEM, "out of memory");
}

// One JSON line -> one document.
static enum gq_status load_doc(int task, const struct at *at, const cJSON *o, const char *label, struct zs_doc *d) {
    const char *a, *b, *c;
    switch (task) {
    case GQ_ZS_PIQA: {
        GQ_TRY(jstr(at, o, "goal", &a));
        char *ctx = cat("Question: ", a, "\nAnswer:");
        if (!ctx) return gq_fail(GQ_ERR_NOMEM, "out of memory");
        enum gq_status s = GQ_OK;
        for (int i = 0; i < 2 && s == GQ_OK; i++) s = jstr(at, o, i ? "sol2" : "sol1", &b), s = s ? s : add_req(d, ctx, " ", b);
        free(ctx);
        GQ_TRY(s);
        char *end;
        long g = strtol(label, &end, 10);
        if (end == label || (*end && *end != '\r') || g < 0 || g > 1)
            return gq_fail(GQ_ERR_FORMAT, "%s: line %d: label \"%s\" is not 0 or 1", "piqa/valid-labels.lst", at->line,
                           label);
        d->gold = (int)g;
        return GQ_OK;
    }
    case GQ_ZS_ARC_EASY:
    case GQ_ZS_ARC_CHALLENGE: {
        GQ_TRY(jstr(at, o, "query", &a));
        const cJSON *ch = cJSON_GetObjectItemCaseSensitive(o, "choices"), *g = cJSON_GetObjectItemCaseSensitive(o, "gold");
        if (!cJSON_IsArray(ch) || cJSON_GetArraySize(ch) < 2) return BAD(at, "field \"choices\" is not a list of choices");
        const cJSON *e;
        cJSON_ArrayForEach(e, ch) {
            if (!cJSON_IsString(e)) return BAD(at, "a choice is not a string");
            GQ_TRY(add_req(d, a, " ", e->valuestring));
        }
        if (!cJSON_IsNumber(g)) return BAD(at, "missing or non-numeric field \"gold\"");
        if (g->valuedouble != (int)g->valuedouble || g->valueint < 0 || g->valueint >= d->n)
            return BAD(at, "gold %g out of range (%d choices)", g->valuedouble, d->n);
        d->gold = g->valueint;
        return GQ_OK;
    }
    case GQ_ZS_HELLASWAG: {
        const char *lab, *ca, *cb;
        GQ_TRY(jstr(at, o, "activity_label", &lab));
        GQ_TRY(jstr(at, o, "ctx_a", &ca));
        GQ_TRY(jstr(at, o, "ctx_b", &cb));
        GQ_TRY(jstr(at, o, "label", &c));
        char *cap = cat(cb, "", ""), *ctx = NULL;
        if (cap) { // ctx_b.capitalize(): first character upper, the rest lower (ASCII)
            for (char *p = cap; *p; p++) *p = (char)(p == cap ? toupper((unsigned char)*p) : tolower((unsigned char)*p));
            char *t = cat(lab, ": ", ca);
            ctx = t ? hellaswag_clean(cat(t, " ", cap)) : NULL;
            free(t);
        }
        free(cap);
        if (!ctx) return gq_fail(GQ_ERR_NOMEM, "out of memory");
        const cJSON *en = cJSON_GetObjectItemCaseSensitive(o, "endings"), *e;
        enum gq_status s = cJSON_IsArray(en) && cJSON_GetArraySize(en) >= 2 ? GQ_OK : BAD(at, "field \"endings\" is not a list of endings");
        cJSON_ArrayForEach(e, en) {
            if (s != GQ_OK) break;
            char *end = cJSON_IsString(e) ? hellaswag_clean(cat(e->valuestring, "", "")) : NULL;
            s = !cJSON_IsString(e) ? BAD(at, "an ending is not a string") : end ? add_req(d, ctx, " ", end) : gq_fail(GQ_ERR_NOMEM, "out of memory");
            free(end);
        }
        free(ctx);
        GQ_TRY(s);
        char *endp;
        long g = strtol(c, &endp, 10);
        if (endp == c || *endp || g < 0 || g >= d->n) return BAD(at, "label \"%s\" out of range (%d endings)", c, d->n);
        d->gold = (int)g;
        return GQ_OK;
    }
    case GQ_ZS_WINOGRANDE: { // partial scoring: the text after "_" given each option
        const char *sen, *o1, *o2, *ans;
        GQ_TRY(jstr(at, o, "sentence", &sen));
        GQ_TRY(jstr(at, o, "option1", &o1));
        GQ_TRY(jstr(at, o, "option2", &o2));
        GQ_TRY(jstr(at, o, "answer", &ans));
        const char *u = strchr(sen, '_');
        if (!u) return BAD(at, "sentence has no \"_\"");
        char *pre = malloc((size_t)(u - sen) + 1), *tgt = cat(u + 1, "", "");
        enum gq_status s = pre && tgt ? GQ_OK : gq_fail(GQ_ERR_NOMEM, "out of memory");
        if (s == GQ_OK) {
            memcpy(pre, sen, (size_t)(u - sen)), pre[u - sen] = 0;
            py_strip(tgt);
            for (int i = 0; i < 2 && s == GQ_OK; i++) {
                char *ctx = cat(pre, i ? o2 : o1, "");
                s = ctx ? add_req(d, ctx, " ", tgt) : gq_fail(GQ_ERR_NOMEM, "out of memory");
                if (s == GQ_OK) d->r[i].chars = py_len(ctx); // the harness's choice is the context here
                free(ctx);
            }
        }
        free(pre), free(tgt);
        GQ_TRY(s);
        if (strcmp(ans, "1") && strcmp(ans, "2")) return BAD(at, "answer \"%s\" is not \"1\" or \"2\"", ans);
        d->gold = ans[0] - '1';
        return GQ_OK;
    }
    case GQ_ZS_BOOLQ: {
        GQ_TRY(jstr(at, o, "passage", &a));
        GQ_TRY(jstr(at, o, "question", &b));
        const cJSON *ans = cJSON_GetObjectItemCaseSensitive(o, "answer");
        if (!cJSON_IsBool(ans)) return BAD(at, "missing or non-boolean field \"answer\"");
        char *t = cat(a, "\nQuestion: ", b), *ctx = t ? cat(t, "?\nAnswer:", "") : NULL;
        free(t);
        enum gq_status s = ctx ? add_req(d, ctx, " ", "no") : gq_fail(GQ_ERR_NOMEM, "out of memory");
        if (s == GQ_OK) s = add_req(d, ctx, " ", "yes");
        free(ctx);
        d->gold = cJSON_IsTrue(ans) ? 1 : 0;
        return s;
    }
    default: { // lambada: the last " "-separated word given the text before it
        GQ_TRY(jstr(at, o, "text", &a));
        const char *sp = strrchr(a, ' ');
        char *ctx = sp ? malloc((size_t)(sp - a) + 1) : cat("", "", "");
        if (!ctx) return gq_fail(GQ_ERR_NOMEM, "out of memory");
        if (sp) memcpy(ctx, a, (size_t)(sp - a)), ctx[sp - a] = 0;
        enum gq_status s = add_req(d, ctx, " ", sp ? sp + 1 : a);
        free(ctx);
        d->gold = 0;
        return s;
    }
    }
}

// Reads the task's file (and PIQA's label file) under dir: limit documents
// (0: all) after the first skip ones (which are parsed and checked too).
static enum gq_status load_task(int task, const char *dir, int skip, int limit, struct zs_docs *ds) {
    char path[4096], lpath[4096];
    snprintf(path, sizeof path, "%s/%s", dir, task_files[task]);
    snprintf(lpath, sizeof lpath, "%s/piqa/valid-labels.lst", dir);
    char *text = NULL, *labels = NULL;
    size_t len = 0, llen = 0;
    enum gq_status s = gq_read_file(path, &text, &len);
    if (s == GQ_OK && task == GQ_ZS_PIQA) s = gq_read_file(lpath, &labels, &llen);
    struct at at = {path, 0};
    char *lp = labels;
    for (size_t i = 0; s == GQ_OK && i < len && (limit <= 0 || ds->n < skip + limit);) {
        size_t j = i;
        while (j < len && text[j] != '\n') j++;
        at.line++;
        const char *label = "";
        if (task == GQ_ZS_PIQA) { // the matching line of the label file
            if (!lp || !*lp) {
                s = gq_fail(GQ_ERR_FORMAT, "%s: %d labels for more examples in %s", lpath, at.line - 1, path);
                break;
            }
            label = lp;
            char *nl = strchr(lp, '\n');
            if (nl) *nl = 0;
            lp = nl ? nl + 1 : lp + strlen(lp);
        }
        bool blank = true;
        for (size_t k = i; k < j; k++) blank = blank && (text[k] == ' ' || text[k] == '\r' || text[k] == '\t');
        if (!blank) {
            cJSON *o = cJSON_ParseWithLength(text + i, j - i);
            if (!o || !cJSON_IsObject(o)) {
                s = BAD(&at, "not a JSON object");
            } else {
                if (ds->n == ds->cap) {
                    int cap = ds->cap ? 2 * ds->cap : 1024;
                    struct zs_doc *d = realloc(ds->d, sizeof *d * cap);
                    if (!d) s = gq_fail(GQ_ERR_NOMEM, "out of memory");
                    else ds->d = d, ds->cap = cap;
                }
                if (s == GQ_OK) {
                    struct zs_doc *d = &ds->d[ds->n++];
                    memset(d, 0, sizeof *d);
                    d->idx = at.line - 1;
                    s = load_doc(task, &at, o, label, d);
                }
            }
            cJSON_Delete(o);
        }
        i = j + 1;
    }
    if (s == GQ_OK && ds->n <= skip)
        s = ds->n == 0 ? gq_fail(GQ_ERR_FORMAT, "%s: no examples", path)
                       : gq_fail(GQ_ERR_ARG, "%s: %d examples, none after the first %d", path, ds->n, skip);
    if (s == GQ_OK && skip > 0) { // drop the skipped documents
        for (int i = 0; i < skip; i++)
            for (int j = 0; j < ds->d[i].n; j++) free(ds->d[i].r[j].ctx), free(ds->d[i].r[j].cont);
        memmove(ds->d, ds->d + skip, sizeof *ds->d * (size_t)(ds->n - skip));
        ds->n -= skip;
    }
    free(text), free(labels);
    if (s != GQ_OK) docs_free(ds);
    return s;
}

// ---------------------------------------------------------------------------
// Scoring.

struct scorer {
    const struct gq_model *m;
    struct gq_context *c;
    bool add_bos;
    int max_len;              // the model's context: inputs are cut to the last max_len tokens
    int32_t *cached, *seq;    // token sequence in the KV cache; scratch
    int n_cached, cap;
    float *logits;            // (rows_cap, n_vocab)
    int rows_cap;
    int64_t n_run;            // tokens run through the model
};

// Tokenizes as the harness's _encode_pair: trailing whitespace of the
// context moves to the continuation; ctx = encode(context), cont =
// encode(context + continuation) after the first |ctx| tokens; an empty
// context is [EOS].
static enum gq_status encode_pair(const struct scorer *sc, const struct zs_req *r, int32_t **ctx, int *nctx,
                                  int32_t **cont, int *ncont) {
    const struct gq_tokenizer *tok = sc->m->tok;
    size_t cut = strlen(r->ctx);
    while (cut > 0 && isspace((unsigned char)r->ctx[cut - 1])) cut--;
    char *whole = cat(r->ctx, r->cont, "");
    if (!whole) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    int32_t *a = NULL, *w = NULL;
    size_t na = 0, nw = 0;
    enum gq_status s = gq_tokenize(tok, r->ctx, cut, sc->add_bos, false, &a, &na);
    if (s == GQ_OK) s = gq_tokenize(tok, whole, strlen(whole), sc->add_bos, false, &w, &nw);
    free(whole);
    const size_t na0 = na; // the continuation starts after the context's own tokens
    if (s == GQ_OK && na == 0) { // empty context: the end-of-text token in front
        free(a);
        a = malloc(sizeof *a);
        if (!a) s = gq_fail(GQ_ERR_NOMEM, "out of memory");
        else a[0] = gq_tokenizer_eos(tok), na = 1;
        if (s == GQ_OK && a[0] < 0) s = gq_fail(GQ_ERR_UNSUPPORTED, "empty context and the model has no EOS token");
    }
    if (s == GQ_OK && nw <= na0)
        s = gq_fail(GQ_ERR_ARG, "continuation \"%.40s\" has no tokens of its own", r->cont);
    if (s != GQ_OK) {
        free(a), free(w);
        return s;
    }
    *ctx = a, *nctx = (int)na;
    *ncont = (int)(nw - na0);
    memmove(w, w + na0, sizeof(int32_t) * (size_t)*ncont);
    *cont = w;
    return GQ_OK;
}

// log p(target) under a row of logits, and whether target is the row's
// argmax (its first maximum, as numpy's).
static double token_ll(const float *row, int V, int32_t target, bool *top) {
    const float mx = gq_vmax(row, V);
    *top = row[target] == mx;
    for (int v = 0; *top && v < target; v++) *top = row[v] < mx;
    return -gq_row_nll(row, V, target);
}

// log-likelihood of cont after ctx, and whether every continuation token is
// the argmax at its position. The input is (ctx + cont) without its last
// token, cut to its last max_len tokens; the KV cache is kept for the longest
// common prefix with the previous input (the context's rows are not
// recomputed for each choice).
static enum gq_status score(struct scorer *sc, const int32_t *ctx, int nctx, const int32_t *cont, int ncont,
                            double *ll, bool *greedy) {
    const int V = sc->m->hp.n_vocab, total = nctx + ncont;
    const int drop = total - 1 > sc->max_len ? total - 1 - sc->max_len : 0, n = total - 1 - drop;
    if (ncont > sc->max_len) return gq_fail(GQ_ERR_ARG, "continuation of %d tokens longer than the context", ncont);
    memcpy(sc->seq, ctx, sizeof(int32_t) * nctx);
    memcpy(sc->seq + nctx, cont, sizeof(int32_t) * ncont);
    const int32_t *inp = sc->seq + drop;
    const int f = nctx - 1 - drop; // input row predicting cont[0]
    // rows from g on run with logits: more than GQ_GEMV_MAX_N where there
    // are, so that compressed weights take the prefill kernels (not the
    // int8-activation GEMVs); the run before them as well
    int g = f > GQ_GEMV_MAX_N ? f - GQ_GEMV_MAX_N : 0;
    int p = 0;
    while (p < sc->n_cached && p < n && sc->cached[p] == inp[p]) p++;
    if (p > g) p = g;
    if (g - p <= GQ_GEMV_MAX_N) g = p;
    gq_context_truncate(sc->c, p);
    if (n - g > sc->rows_cap) {
        float *l = realloc(sc->logits, sizeof(float) * (size_t)(n - g) * V);
        if (!l) return gq_fail(GQ_ERR_NOMEM, "logits of %d rows", n - g);
        sc->logits = l, sc->rows_cap = n - g;
    }
    enum gq_status s = GQ_OK;
    if (p < g) s = gq_forward(sc->c, inp + p, g - p, NULL, false);
    if (s == GQ_OK) s = gq_forward(sc->c, inp + g, n - g, sc->logits, true);
    sc->n_run += n - p;
    memcpy(sc->cached, inp, sizeof(int32_t) * n);
    sc->n_cached = s == GQ_OK ? n : 0;
    if (s != GQ_OK) return s;
    double sum = 0;
    bool all = true;
    for (int t = 0; t < ncont; t++) {
        bool top;
        sum += token_ll(sc->logits + (size_t)(f - g + t) * V, V, cont[t], &top);
        all = all && top;
    }
    *ll = sum, *greedy = all;
    return GQ_OK;
}

// ---------------------------------------------------------------------------
// Batched scoring. A document whose inputs (context + continuation without
// its last token) all fit the model's context runs as one token tree: the
// inputs' longest common prefix once, then each input's rest as a branch
// that sees the prefix and itself (gq_forward_rows); documents go side by
// side into passes of up to BATCH_ROWS rows. Every row has the tokens,
// positions and keys it has in its request's own pass: only the matmuls'
// batching changes (each token's activations are rounded on their own; a
// document's neighbours reach its scores only through sgemm's summation
// order, which varies with the shapes).

#define BATCH_ROWS 512

// Request j's input: its tokens q < len = nctx + ncont - 1.
struct input {
    const int32_t *ctx, *cont;
    int nctx, len;
};
static inline int32_t input_at(const struct input *in, int q) { return q < in->nctx ? in->ctx[q] : in->cont[q - in->nctx]; }

static void doc_inputs(int32_t *const *toks, const int *ntok, size_t k0, int nreq, struct input *in) {
    for (int j = 0; j < nreq; j++) {
        const size_t k = k0 + 2 * (size_t)j;
        in[j] = (struct input){toks[k], toks[k + 1], ntok[k], ntok[k] + ntok[k + 1] - 1};
    }
}

// The longest common prefix of the inputs and the rows of the tree (0: an
// input longer than max_len, scored by score() instead).
static int doc_tree(const struct input *in, int nreq, int max_len, int *prefix) {
    int C = in[0].len, rows = 0;
    for (int j = 0; j < nreq; j++) {
        if (in[j].len > max_len) return 0;
        int q = 0;
        while (q < C && q < in[j].len && input_at(&in[j], q) == input_at(&in[0], q)) q++;
        C = q;
    }
    for (int j = 0; j < nreq; j++) rows += in[j].len - C;
    *prefix = C;
    return C + rows;
}

// A pass under construction: rows with their layout, the rows whose logits
// are needed (out, and out_of[row]: its index there or -1).
struct pass {
    int32_t *tok;
    int *pos, *lo0, *hi0, *lo1, *out, *out_of;
    int n, n_out;
};

static void pass_row(struct pass *P, int32_t tok, int pos, int lo0, int hi0, int lo1) {
    const int r = P->n++;
    P->tok[r] = tok, P->pos[r] = pos, P->lo0[r] = lo0, P->hi0[r] = hi0, P->lo1[r] = lo1, P->out_of[r] = -1;
}

// Row of input position q of request j in a tree at row a with prefix C
// and branches at b[j].
static inline int tree_row(int a, int C, const int *b, int j, int q) {
    return q < C ? a + q : b[j] + q - C;
}

// Adds a document's tree at row P->n: its branch rows into b[j].
static void pass_add(struct pass *P, const struct input *in, int nreq, int C, int *a, int *b) {
    *a = P->n;
    for (int q = 0; q < C; q++) pass_row(P, input_at(&in[0], q), q, *a, *a, *a);
    for (int j = 0; j < nreq; j++) {
        b[j] = P->n;
        for (int q = C; q < in[j].len; q++) pass_row(P, input_at(&in[j], q), q, *a, *a + C, b[j]);
    }
    for (int j = 0; j < nreq; j++)
        for (int q = in[j].nctx - 1; q < in[j].len; q++) {
            const int r = tree_row(*a, C, b, j, q);
            if (P->out_of[r] < 0) P->out_of[r] = P->n_out, P->out[P->n_out++] = r;
        }
}

static double stderr_of(double p, int n) { return n > 1 ? sqrt(p * (1 - p) / (n - 1)) : 0; }

void gq_zs_result_free(struct gq_zs_result *r) {
    free(r->ex);
    memset(r, 0, sizeof *r);
}

enum gq_status gq_zs_eval(const struct gq_model *m, int task, const struct gq_zs_params *p, struct gq_zs_result *r) {
    memset(r, 0, sizeof *r);
    r->task = task;
    if (task < 0 || task >= GQ_ZS_N_TASKS) return gq_fail(GQ_ERR_ARG, "zero-shot: unknown task %d", task);
    const double t0 = gq_time_s();
    struct zs_docs ds = {0};
    if (p->offset < 0 || p->limit < 0) return gq_fail(GQ_ERR_ARG, "zero-shot: negative offset or limit");
    GQ_TRY(load_task(task, p->data_dir ? p->data_dir : "../shared/data/zeroshot", p->offset, p->limit, &ds));
    struct scorer sc = {.m = m, .add_bos = gq_tokenizer_add_bos(m->tok) && gq_tokenizer_bos(m->tok) >= 0};
    // tokenize everything first: the longest input sizes the KV cache
    const int nreq_max = GQ_ZS_MAX_CHOICES;
    int32_t **toks = calloc((size_t)ds.n * nreq_max * 2, sizeof *toks);
    int *ntok = calloc((size_t)ds.n * nreq_max * 2, sizeof *ntok);
    r->ex = calloc((size_t)ds.n, sizeof *r->ex);
    enum gq_status s = toks && ntok && r->ex ? GQ_OK : gq_fail(GQ_ERR_NOMEM, "out of memory");
    int longest = 1;
    for (int i = 0; i < ds.n && s == GQ_OK; i++)
        for (int j = 0; j < ds.d[i].n && s == GQ_OK; j++) {
            size_t k = ((size_t)i * nreq_max + j) * 2;
            s = encode_pair(&sc, &ds.d[i].r[j], &toks[k], &ntok[k], &toks[k + 1], &ntok[k + 1]);
            if (s != GQ_OK) gq_error_prefix("%s example %d", task_names[task], ds.d[i].idx);
            else if (ntok[k] + ntok[k + 1] > longest) longest = ntok[k] + ntok[k + 1];
        }
    sc.max_len = m->hp.ctx_len;
    // per document: its tree's rows (0: scored by score()) and prefix, then
    // in its pass the tree's first row and each branch's
    int *trows = calloc((size_t)ds.n * (3 + nreq_max) + 1, sizeof(int));
    int *tpre = trows + ds.n, *ta = tpre + ds.n, *tb = ta + ds.n;
    if (s == GQ_OK && !trows) s = gq_fail(GQ_ERR_NOMEM, "out of memory");
    int n_ctx = longest - 1 < sc.max_len ? longest - 1 : sc.max_len, tree_rows = 0, tree_max = 0;
    struct input in[GQ_ZS_MAX_CHOICES];
    for (int i = 0; i < ds.n && s == GQ_OK; i++) { // the trees, and the passes' size
        doc_inputs(toks, ntok, (size_t)i * nreq_max * 2, ds.d[i].n, in);
        trows[i] = doc_tree(in, ds.d[i].n, sc.max_len, &tpre[i]);
        tree_rows += trows[i], tree_max = trows[i] > tree_max ? trows[i] : tree_max;
    }
    const int pass_cap = GQ_GEMV_MAX_N + 1 + (tree_max > BATCH_ROWS ? tree_max : tree_rows < BATCH_ROWS ? tree_rows : BATCH_ROWS);
    n_ctx = pass_cap > n_ctx ? pass_cap : n_ctx;
    struct pass P = {0};
    P.tok = malloc(sizeof(int32_t) * pass_cap);
    P.pos = malloc(sizeof(int) * 6 * (size_t)pass_cap);
    if (P.pos) P.lo0 = P.pos + pass_cap, P.hi0 = P.lo0 + pass_cap, P.lo1 = P.hi0 + pass_cap, P.out = P.lo1 + pass_cap, P.out_of = P.out + pass_cap;
    if (s == GQ_OK && (!P.tok || !P.pos)) s = gq_fail(GQ_ERR_NOMEM, "out of memory");
    sc.cached = malloc(sizeof(int32_t) * (size_t)(longest + 1)), sc.seq = malloc(sizeof(int32_t) * (size_t)(longest + 1));
    if (s == GQ_OK && (!sc.cached || !sc.seq)) s = gq_fail(GQ_ERR_NOMEM, "out of memory");
    if (s == GQ_OK) s = gq_context_new(m, n_ctx > 0 ? n_ctx : 1, &sc.c);
    struct gq_progress pr;
    char label[32];
    snprintf(label, sizeof label, "eval[%s]", task_names[task]);
    gq_progress_start(&pr, label, ds.n, p->progress);
    int hits = 0, hits_norm = 0;
    double ll_sum = 0;
    const int V = m->hp.n_vocab;
    for (int i = 0; i < ds.n && s == GQ_OK;) {
        // the documents of this pass: [i, e) as trees, or document i alone through score()
        int e = i, rows = 0;
        for (; e < ds.n && trows[e] && (e == i || rows + trows[e] <= BATCH_ROWS); e++) rows += trows[e];
        if (e > i) {
            P.n = P.n_out = 0;
            for (int k = i; k < e; k++) {
                doc_inputs(toks, ntok, (size_t)k * nreq_max * 2, ds.d[k].n, in);
                pass_add(&P, in, ds.d[k].n, tpre[k], &ta[k], tb + (size_t)k * nreq_max);
            }
            // more rows and logit rows than run as decode GEMVs (their int8
            // activations): every document gets the prefill kernels,
            // whatever its neighbours (padding: one-token sequences, copies)
            while (P.n <= GQ_GEMV_MAX_N) pass_row(&P, P.tok[0], 0, P.n, P.n, P.n);
            while (P.n_out <= GQ_GEMV_MAX_N) P.out[P.n_out] = P.out[0], P.n_out++;
            if (P.n_out > sc.rows_cap) {
                float *l = realloc(sc.logits, sizeof(float) * (size_t)P.n_out * V);
                if (!l) {
                    s = gq_fail(GQ_ERR_NOMEM, "logits of %d rows", P.n_out);
                    break;
                }
                sc.logits = l, sc.rows_cap = P.n_out;
            }
            gq_context_reset(sc.c);
            sc.n_cached = 0;
            const struct gq_rows_layout lay = {P.pos, P.lo0, P.hi0, P.lo1};
            s = gq_forward_rows(sc.c, P.tok, P.n, &lay, P.out, P.n_out, sc.logits);
            sc.n_run += P.n;
            for (int k = i; k < e && s == GQ_OK; k++) {
                const struct zs_doc *d = &ds.d[k];
                struct gq_zs_example *ex = &r->ex[k];
                doc_inputs(toks, ntok, (size_t)k * nreq_max * 2, d->n, in);
                const int *b = tb + (size_t)k * nreq_max;
                for (int j = 0; j < d->n; j++) {
                    double sum = 0;
                    bool all = true;
                    for (int t = 0; t < in[j].len - in[j].nctx + 1; t++) {
                        const int row = tree_row(ta[k], tpre[k], b, j, in[j].nctx - 1 + t);
                        bool top;
                        sum += token_ll(sc.logits + (size_t)P.out_of[row] * V, V, in[j].cont[t], &top);
                        all = all && top;
                    }
                    ex->ll[j] = sum, ex->greedy[j] = all;
                }
            }
        } else { // an input longer than the model's context: cut from the left, one request at a time
            const struct zs_doc *d = &ds.d[i];
            for (int j = 0; j < d->n && s == GQ_OK; j++) {
                size_t k = ((size_t)i * nreq_max + j) * 2;
                s = score(&sc, toks[k], ntok[k], toks[k + 1], ntok[k + 1], &r->ex[i].ll[j], &r->ex[i].greedy[j]);
            }
            e = i + 1;
        }
        for (; i < e && s == GQ_OK; i++) { // the documents' metrics
            const struct zs_doc *d = &ds.d[i];
            struct gq_zs_example *ex = &r->ex[i];
            ex->idx = d->idx, ex->gold = d->gold, ex->n_req = d->n;
            for (int j = 0; j < d->n; j++) {
                size_t k = ((size_t)i * nreq_max + j) * 2;
                ex->ctx_ntok[j] = ntok[k], ex->cont_ntok[j] = ntok[k + 1], ex->chars[j] = d->r[j].chars;
            }
            for (int j = 1; j < d->n; j++) { // first maximum, as numpy's argmax
                if (ex->ll[j] > ex->ll[ex->pred]) ex->pred = j;
                if (ex->ll[j] / ex->chars[j] > ex->ll[ex->pred_norm] / ex->chars[ex->pred_norm]) ex->pred_norm = j;
            }
            if (task == GQ_ZS_LAMBADA) ex->pred = ex->pred_norm = ex->greedy[0] ? 0 : -1, ll_sum += ex->ll[0];
            hits += ex->pred == ex->gold, hits_norm += ex->pred_norm == ex->gold;
            r->n = i + 1;
        }
        if (s != GQ_OK) break;
        char extra[64];
        snprintf(extra, sizeof extra, "acc %.4f, %.1f ex/s", (double)hits / r->n, r->n / (gq_time_s() - t0));
        gq_progress_update(&pr, r->n, extra);
    }
    gq_progress_end(&pr);
    for (size_t k = 0; toks && k < (size_t)ds.n * nreq_max * 2; k++) free(toks[k]);
    free(toks), free(ntok), free(sc.cached), free(sc.seq), free(sc.logits), free(P.tok), free(P.pos), free(trows);
    gq_context_free(sc.c);
    docs_free(&ds);
    if (s != GQ_OK) {
        gq_zs_result_free(r);
        return s;
    }
    r->acc = (double)hits / r->n, r->acc_stderr = stderr_of(r->acc, r->n);
    r->has_acc_norm = task == GQ_ZS_PIQA || task == GQ_ZS_ARC_EASY || task == GQ_ZS_ARC_CHALLENGE || task == GQ_ZS_HELLASWAG;
    if (r->has_acc_norm) r->acc_norm = (double)hits_norm / r->n, r->acc_norm_stderr = stderr_of(r->acc_norm, r->n);
    if (task == GQ_ZS_LAMBADA) r->ppl = exp(-ll_sum / r->n);
    r->n_tokens_run = sc.n_run;
    r->seconds = gq_time_s() - t0;
    return GQ_OK;
}
