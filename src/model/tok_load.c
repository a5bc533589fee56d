// tok_load.c - tokenizer readers: GGUF tokenizer.ggml.*, Hugging Face
// tokenizer.json (BPE models) and llama2.c tokenizer.bin. Everything read is
// validated (counts, ids, types, lengths, UTF-8) before use.
//
// Merges whose pieces (or whose concatenation) are not tokens are skipped:
// llama.cpp keeps them as strings but such a merge can never produce a
// token, and HF tokenizers refuses them; skipping gives the same ids as both.
#include "model/tok_internal.h"
#include "io/gguf_write.h"

#include <cjson/cJSON.h>
#include <math.h>

// ---------------------------------------------------------------------------
// GGUF

static bool gguf_has(const struct gq_gguf *g, const char *key) { return gq_gguf_find_kv(g, key) != NULL; }

static enum gq_status gguf_opt_id(const struct gq_gguf *g, const char *key, int32_t *id, int n, const char *src) {
    if (!gguf_has(g, key)) return GQ_OK;
    int64_t v;
    GQ_TRY(gq_gguf_get_i64(g, key, &v));
    if (v < 0 || v >= n) return gq_fail(GQ_ERR_FORMAT, "%s: %s = %lld is not a token id (vocab %d)", src, key, (long long)v, n);
    *id = (int32_t)v;
    return GQ_OK;
}

static enum gq_status gguf_opt_bool(const struct gq_gguf *g, const char *key, bool *out) {
    if (!gguf_has(g, key)) return GQ_OK;
    return gq_gguf_get_bool(g, key, out);
}

static enum gq_status from_gguf(const struct gq_gguf *g, const char *src, struct gq_tokenizer **out) {
    char *model = NULL;
    if (!gguf_has(g, "tokenizer.ggml.model"))
        return gq_fail(GQ_ERR_FORMAT, "%s: no tokenizer (key tokenizer.ggml.model missing)", src);
    GQ_TRY(gq_gguf_get_str(g, "tokenizer.ggml.model", &model));
    enum gq_tok_kind kind;
    if (!strcmp(model, "gpt2")) {
        kind = GQ_TOK_GPT2;
    } else if (!strcmp(model, "llama")) {
        kind = GQ_TOK_SPM;
    } else {
        gq_fail(GQ_ERR_UNSUPPORTED, "%s: tokenizer.ggml.model '%s' is not supported (gpt2, llama)", src, model);
        free(model);
        return GQ_ERR_UNSUPPORTED;
    }
    free(model);

    const struct gq_gguf_kv *toks, *types = NULL, *scores = NULL, *merges = NULL;
    GQ_TRY(gq_gguf_get_array(g, "tokenizer.ggml.tokens", GQ_GGUF_STRING, &toks));
    if (toks->arr_n == 0 || toks->arr_n > (1u << 26))
        return gq_fail(GQ_ERR_FORMAT, "%s: tokenizer.ggml.tokens has %llu entries (expected 1..%u)", src,
                       (unsigned long long)toks->arr_n, 1u << 26);
    int n = (int)toks->arr_n;
    if (gguf_has(g, "tokenizer.ggml.token_type")) {
        GQ_TRY(gq_gguf_get_array(g, "tokenizer.ggml.token_type", GQ_GGUF_INT32, &types));
        if (types->arr_n != toks->arr_n)
            return gq_fail(GQ_ERR_FORMAT, "%s: tokenizer.ggml.token_type has %llu entries, tokens %d", src,
                           (unsigned long long)types->arr_n, n);
    }
    if (gguf_has(g, "tokenizer.ggml.scores")) {
        GQ_TRY(gq_gguf_get_array(g, "tokenizer.ggml.scores", GQ_GGUF_FLOAT32, &scores));
        if (scores->arr_n != toks->arr_n)
            return gq_fail(GQ_ERR_FORMAT, "%s: tokenizer.ggml.scores has %llu entries, tokens %d", src,
                           (unsigned long long)scores->arr_n, n);
    }
    if (kind == GQ_TOK_GPT2) {
        if (!gguf_has(g, "tokenizer.ggml.merges"))
            return gq_fail(GQ_ERR_FORMAT, "%s: gpt2 tokenizer without tokenizer.ggml.merges", src);
        GQ_TRY(gq_gguf_get_array(g, "tokenizer.ggml.merges", GQ_GGUF_STRING, &merges));
    }

    struct gq_tokenizer *t;
    GQ_TRY(tok_alloc(n, kind, &t));
    enum gq_status s = GQ_OK;
    if (scores && !(t->score = malloc((size_t)n * sizeof *t->score))) s = gq_fail(GQ_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n && s == GQ_OK; i++) {
        const struct gq_gguf_str *str = &toks->arr_str[i];
        if (!tok_utf8_valid(str->data, str->len)) {
            s = gq_fail(GQ_ERR_FORMAT, "%s: token %d is not valid UTF-8", src, i);
            break;
        }
        s = tok_set_text(t, i, str->data, str->len);
        int64_t ty = types ? gq_gguf_arr_i64(types, (uint64_t)i) : TT_NORMAL;
        if (ty < 0 || ty > TT_BYTE) {
            s = gq_fail(GQ_ERR_FORMAT, "%s: token %d has type %lld (expected 0..6)", src, i, (long long)ty);
            break;
        }
        t->type[i] = (uint8_t)ty;
        if (scores) {
            double v = gq_gguf_arr_f64(scores, (uint64_t)i);
            if (!isfinite(v)) {
                s = gq_fail(GQ_ERR_FORMAT, "%s: token %d has a non-finite score", src, i);
                break;
            }
            t->score[i] = (float)v;
        }
    }
    // llama.cpp defaults: SPM has <unk>=0, <s>=1, </s>=2, adds BOS and a
    // space prefix; BPE adds neither unless the metadata says so.
    if (kind == GQ_TOK_SPM) {
        t->unk = n > 0 ? 0 : -1;
        t->bos = n > 1 ? 1 : -1;
        t->eos = n > 2 ? 2 : -1;
        t->add_bos = true;
        t->add_space_prefix = true;
        t->byte_fallback = true;
    }
    if (s == GQ_OK) s = gguf_opt_id(g, "tokenizer.ggml.bos_token_id", &t->bos, n, src);
    if (s == GQ_OK) s = gguf_opt_id(g, "tokenizer.ggml.eos_token_id", &t->eos, n, src);
    if (s == GQ_OK) s = gguf_opt_id(g, "tokenizer.ggml.unknown_token_id", &t->unk, n, src);
    if (s == GQ_OK) s = gguf_opt_bool(g, "tokenizer.ggml.add_bos_token", &t->add_bos);
    if (s == GQ_OK) s = gguf_opt_bool(g, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix);
    if (s == GQ_OK) s = tok_finish(t, src); // builds the map the merges need
    if (s == GQ_OK && kind == GQ_TOK_GPT2) {
        char *pre = NULL;
        if (gguf_has(g, "tokenizer.ggml.pre")) s = gq_gguf_get_str(g, "tokenizer.ggml.pre", &pre);
        if (s == GQ_OK) s = tok_set_pre(t, pre, src);
        free(pre);
        t->byte_level = true;
        char buf[512];
        for (uint64_t i = 0; i < merges->arr_n && s == GQ_OK; i++) {
            const struct gq_gguf_str *m = &merges->arr_str[i];
            const char *sp = m->len > 1 ? memchr(m->data + 1, ' ', m->len - 1) : NULL;
            if (!sp) {
                s = gq_fail(GQ_ERR_FORMAT, "%s: merge %llu '%.*s' is not two pieces separated by a space", src,
                            (unsigned long long)i, (int)(m->len > 60 ? 60 : m->len), m->data);
                break;
            }
            size_t ln = (size_t)(sp - m->data), rn = m->len - ln - 1;
            if (ln + rn > sizeof buf) continue;
            int32_t l = tok_lookup(t, m->data, ln), r = tok_lookup(t, sp + 1, rn);
            memcpy(buf, m->data, ln);
            memcpy(buf + ln, sp + 1, rn);
            int32_t mid = tok_lookup(t, buf, ln + rn);
            if (l < 0 || r < 0 || mid < 0) continue; // see the note at the top
            s = tok_add_merge(t, l, r, mid);
        }
    }
    if (s != GQ_OK) {
        gq_tokenizer_free(t);
        return s;
    }
    *out = t;
    return GQ_OK;
}

// A GGUF converted from a Hugging Face directory (gq_hf_to_gguf) carries its
// tokenizer.json whole (the GGUF key tokenizer.huggingface.json): it is the
// exact tokenizer, and the tokenizer.ggml.* ids and flags beside it (written
// from the directory's configs) set BOS/EOS/add_bos.
static enum gq_status from_hf_json_kv(const struct gq_gguf *g, const char *src, struct gq_tokenizer **out) {
    char *json = NULL;
    GQ_TRY(gq_gguf_get_str(g, "tokenizer.huggingface.json", &json));
    char name[512];
    snprintf(name, sizeof name, "%s (tokenizer.huggingface.json)", src);
    enum gq_status s = gq_tokenizer_from_json_memory(json, strlen(json), name, out);
    free(json);
    if (s != GQ_OK) return s;
    struct gq_tokenizer *t = *out;
    int32_t bos = -2, eos = -2;
    bool add_bos = t->add_bos;
    s = gguf_opt_id(g, "tokenizer.ggml.bos_token_id", &bos, t->n_vocab, src);
    if (s == GQ_OK) s = gguf_opt_id(g, "tokenizer.ggml.eos_token_id", &eos, t->n_vocab, src);
    if (s == GQ_OK) s = gguf_opt_bool(g, "tokenizer.ggml.add_bos_token", &add_bos);
    if (s != GQ_OK) {
        gq_tokenizer_free(t);
        *out = NULL;
        return s;
    }
    gq_tokenizer_set_special(t, bos, eos, add_bos);
    return GQ_OK;
}

enum gq_status gq_tokenizer_from_gguf(const struct gq_gguf *g, struct gq_tokenizer **out) {
    *out = NULL;
    const char *src = g->file.path ? g->file.path : "gguf";
    if (gguf_has(g, "tokenizer.huggingface.json")) return from_hf_json_kv(g, src, out);
    return from_gguf(g, src, out);
}

// The llama.cpp pre-tokenizer name of a byte-level BPE's regex list (NULL:
// none of the known ones).
static const char *pre_name(const struct gq_tokenizer *t) {
    static const struct {
        const char *name, *re[2];
    } known[] = {{"gpt-2", {TOK_RE_GPT2, NULL}},
                 {"smollm", {"\\p{N}", TOK_RE_GPT2}},
                 {"llama-bpe", {TOK_RE_LLAMA3, NULL}},
                 {"qwen2", {TOK_RE_QWEN2, NULL}}};
    for (size_t k = 0; k < sizeof known / sizeof *known; k++) {
        int n = known[k].re[1] ? 2 : 1;
        bool same = t->n_re == n;
        for (int i = 0; same && i < n; i++) same = t->re_src[i] && !strcmp(t->re_src[i], known[k].re[i]);
        if (same) return known[k].name;
    }
    return NULL;
}

enum gq_status gq_tokenizer_write_gguf(const struct gq_tokenizer *t, struct gq_gguf_writer *w, const char *hf_json) {
    if (t->kind == GQ_TOK_LLAMA2C)
        return gq_fail(GQ_ERR_UNSUPPORTED, "a llama2.c tokenizer.bin cannot be written as GGUF metadata");
    const size_t n = (size_t)t->n_vocab;
    const char **text = malloc(n * sizeof *text);
    int32_t *type = malloc(n * sizeof *type);
    enum gq_status s = text && type ? GQ_OK : gq_fail(GQ_ERR_NOMEM, "out of memory");
    for (size_t i = 0; s == GQ_OK && i < n; i++) text[i] = t->text[i] ? t->text[i] : "", type[i] = t->type[i];
    if (s == GQ_OK) s = gq_gguf_writer_set_str(w, "tokenizer.ggml.model", t->kind == GQ_TOK_GPT2 ? "gpt2" : "llama");
    const char *pre = t->kind == GQ_TOK_GPT2 ? pre_name(t) : NULL;
    if (s == GQ_OK && pre) s = gq_gguf_writer_set_str(w, "tokenizer.ggml.pre", pre);
    if (s == GQ_OK) s = gq_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", text, n);
    if (s == GQ_OK) s = gq_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GQ_GGUF_INT32, type, n);
    if (s == GQ_OK && t->score) s = gq_gguf_writer_set_arr(w, "tokenizer.ggml.scores", GQ_GGUF_FLOAT32, t->score, n);
    free(text);
    free(type);
    if (s == GQ_OK && t->kind == GQ_TOK_GPT2 && t->has_merges) {
        // "left right" by rank (ranks are insertion positions; duplicates left gaps)
        const struct tok_pairmap *pm = &t->merges;
        size_t nr = pm->n;
        char **m = calloc(nr ? nr : 1, sizeof *m);
        if (!m) s = gq_fail(GQ_ERR_NOMEM, "out of memory");
        for (size_t i = 0; s == GQ_OK && i < pm->cap; i++) {
            if (!pm->key[i]) continue;
            uint64_t k = pm->key[i] - 1;
            int32_t l = (int32_t)(k >> 32), r = (int32_t)(uint32_t)k, rank = pm->rank[i];
            if (rank < 0 || (size_t)rank >= nr || m[rank]) continue;
            size_t ln = t->len[l], rn = t->len[r];
            if (!(m[rank] = malloc(ln + rn + 2))) s = gq_fail(GQ_ERR_NOMEM, "out of memory");
            else memcpy(m[rank], t->text[l], ln), m[rank][ln] = ' ', memcpy(m[rank] + ln + 1, t->text[r], rn + 1);
        }
        size_t k = 0;
        for (size_t i = 0; i < nr; i++)
            if (m && m[i]) m[k++] = m[i];
        if (s == GQ_OK) s = gq_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)m, k);
        for (size_t i = 0; m && i < k; i++) free(m[i]);
        free(m);
    }
    if (s == GQ_OK && t->bos >= 0) s = gq_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)t->bos);
    if (s == GQ_OK && t->eos >= 0) s = gq_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)t->eos);
    if (s == GQ_OK && t->unk >= 0) s = gq_gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)t->unk);
    if (s == GQ_OK) s = gq_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", t->add_bos);
    if (s == GQ_OK && t->kind == GQ_TOK_SPM)
        s = gq_gguf_writer_set_bool(w, "tokenizer.ggml.add_space_prefix", t->add_space_prefix);
    if (s == GQ_OK && hf_json) s = gq_gguf_writer_set_str(w, "tokenizer.huggingface.json", hf_json);
    return s;
}

// ---------------------------------------------------------------------------
// tokenizer.json

static const char *jstr(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool jtrue(const cJSON *o, const char *key, bool dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

static bool jint(const cJSON *v, int64_t lo, int64_t hi, int64_t *out) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= (double)lo && d <= (double)hi) || d != floor(d)) return false;
    *out = (int64_t)d;
    return true;
}

// Escapes a literal for PCRE2 (Split with a String pattern).
static enum gq_status regex_literal(struct gq_tokenizer *t, const char *lit, const char *src) {
    size_t n = strlen(lit);
    char *p = malloc(2 * n + 1);
    if (!p) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        if (strchr("\\^$.|?*+()[]{}", lit[i])) p[w++] = '\\';
        p[w++] = lit[i];
    }
    p[w] = 0;
    enum gq_status s = tok_add_regex(t, p, src);
    free(p);
    return s;
}

// Translates a byte-level pre_tokenizer into the regex list.
static enum gq_status json_pre_gpt2(struct gq_tokenizer *t, const cJSON *pt, const char *src, bool *saw_bl) {
    if (!pt || cJSON_IsNull(pt)) return GQ_OK;
    const char *type = jstr(pt, "type");
    if (!type) return gq_fail(GQ_ERR_FORMAT, "%s: pre_tokenizer without a type", src);
    if (!strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(pt, "pretokenizers"), *it;
        if (!cJSON_IsArray(list)) return gq_fail(GQ_ERR_FORMAT, "%s: pre_tokenizer Sequence without pretokenizers", src);
        cJSON_ArrayForEach(it, list) GQ_TRY(json_pre_gpt2(t, it, src, saw_bl));
        return GQ_OK;
    }
    if (!strcmp(type, "ByteLevel")) {
        *saw_bl = true;
        if (jtrue(pt, "add_prefix_space", false)) t->bl_prefix_space = true;
        return jtrue(pt, "use_regex", true) ? tok_add_regex(t, TOK_RE_GPT2, src) : GQ_OK;
    }
    if (!strcmp(type, "Digits"))
        return tok_add_regex(t, jtrue(pt, "individual_digits", false) ? "\\p{N}" : "\\p{N}+", src);
    if (!strcmp(type, "Split")) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(pt, "pattern");
        const char *behavior = jstr(pt, "behavior");
        if (jtrue(pt, "invert", false) || !behavior || strcmp(behavior, "Isolated") != 0)
            return gq_fail(GQ_ERR_UNSUPPORTED, "%s: pre_tokenizer Split with behavior '%s'%s is not supported (Isolated only)",
                           src, behavior ? behavior : "?", jtrue(pt, "invert", false) ? " and invert" : "");
        const char *re = jstr(pat, "Regex"), *lit = jstr(pat, "String");
        if (re) return tok_add_regex(t, re, src);
        if (lit) return regex_literal(t, lit, src);
        return gq_fail(GQ_ERR_FORMAT, "%s: pre_tokenizer Split without a Regex or String pattern", src);
    }
    return gq_fail(GQ_ERR_UNSUPPORTED, "%s: pre_tokenizer '%s' is not supported with a byte-level BPE", src, type);
}

// SentencePiece-style normalizer: Prepend("▁") and Replace(" ", "▁").
static enum gq_status json_norm_spm(struct gq_tokenizer *t, const cJSON *nm, const char *src, bool *replace) {
    if (!nm || cJSON_IsNull(nm)) return GQ_OK;
    const char *type = jstr(nm, "type");
    if (!type) return gq_fail(GQ_ERR_FORMAT, "%s: normalizer without a type", src);
    if (!strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(nm, "normalizers"), *it;
        if (!cJSON_IsArray(list)) return gq_fail(GQ_ERR_FORMAT, "%s: normalizer Sequence without normalizers", src);
        cJSON_ArrayForEach(it, list) GQ_TRY(json_norm_spm(t, it, src, replace));
        return GQ_OK;
    }
    const char *sym = "\xe2\x96\x81";
    if (!strcmp(type, "Prepend")) {
        const char *p = jstr(nm, "prepend");
        if (!p || strcmp(p, sym) != 0) return gq_fail(GQ_ERR_UNSUPPORTED, "%s: normalizer Prepend of other than U+2581", src);
        t->add_space_prefix = true;
        return GQ_OK;
    }
    if (!strcmp(type, "Replace")) {
        const char *pat = jstr(cJSON_GetObjectItemCaseSensitive(nm, "pattern"), "String"), *c = jstr(nm, "content");
        if (!pat || !c || strcmp(pat, " ") != 0 || strcmp(c, sym) != 0)
            return gq_fail(GQ_ERR_UNSUPPORTED, "%s: normalizer Replace other than ' ' -> U+2581", src);
        *replace = true;
        return GQ_OK;
    }
    return gq_fail(GQ_ERR_UNSUPPORTED, "%s: normalizer '%s' is not supported", src, type);
}

// Reads tokenizer_config.json beside the tokenizer.json, if present:
// bos_token / eos_token (string or {"content": ...}) and add_bos_token.
static void json_config(struct gq_tokenizer *t, const char *path) {
    const char *slash = strrchr(path, '/');
    size_t dn = slash ? (size_t)(slash - path + 1) : 0;
    char *cp = malloc(dn + sizeof "tokenizer_config.json");
    if (!cp) return;
    memcpy(cp, path, dn);
    strcpy(cp + dn, "tokenizer_config.json");
    char *data = NULL;
    size_t size = 0;
    FILE *f = fopen(cp, "rb");
    if (f) {
        fclose(f);
        char saved[1024];
        snprintf(saved, sizeof saved, "%s", gq_last_error());
        if (gq_read_file(cp, &data, &size) != GQ_OK) data = NULL;
        gq_fail(GQ_OK, "%s", saved); // a missing/bad config is not an error
    }
    free(cp);
    if (!data) return;
    cJSON *root = cJSON_ParseWithLength(data, size);
    free(data);
    if (!root) return;
    for (int k = 0; k < 2; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, k == 0 ? "bos_token" : "eos_token");
        const char *s = cJSON_IsString(v) ? v->valuestring : jstr(v, "content");
        int32_t id = s ? tok_lookup(t, s, strlen(s)) : -1;
        if (id >= 0) *(k == 0 ? &t->bos : &t->eos) = id;
    }
    const cJSON *ab = cJSON_GetObjectItemCaseSensitive(root, "add_bos_token");
    if (cJSON_IsBool(ab)) t->add_bos = cJSON_IsTrue(ab);
    cJSON_Delete(root);
}

static int32_t find_any(const struct gq_tokenizer *t, const char *const *names) {
    for (; *names; names++) {
        int32_t id = tok_lookup(t, *names, strlen(*names));
        if (id >= 0 && t->type[id] != TT_NORMAL) return id;
    }
    return -1;
}

static enum gq_status from_json(cJSON *root, const char *src, struct gq_tokenizer **out) {
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model)) return gq_fail(GQ_ERR_FORMAT, "%s: no \"model\" object", src);
    const char *mtype = jstr(model, "type");
    if (mtype && strcmp(mtype, "BPE") != 0)
        return gq_fail(GQ_ERR_UNSUPPORTED, "%s: model type '%s' is not supported (BPE only)", src, mtype);
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (!cJSON_IsObject(vocab)) return gq_fail(GQ_ERR_FORMAT, "%s: model.vocab is not an object", src);
    if (!cJSON_IsArray(merges)) return gq_fail(GQ_ERR_FORMAT, "%s: model.merges is not an array", src);
    if (added && !cJSON_IsNull(added) && !cJSON_IsArray(added))
        return gq_fail(GQ_ERR_FORMAT, "%s: added_tokens is not an array", src);
    const int64_t max_id = (1 << 26) - 1;
    int64_t n = 0, id;
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab) {
        if (!jint(it, 0, max_id, &id))
            return gq_fail(GQ_ERR_FORMAT, "%s: vocab entry '%.60s' has no valid id (0..%lld)", src, it->string,
                           (long long)max_id);
        if (id + 1 > n) n = id + 1;
    }
    if (cJSON_IsArray(added)) {
        cJSON_ArrayForEach(it, added) {
            if (!jint(cJSON_GetObjectItemCaseSensitive(it, "id"), 0, max_id, &id) || !jstr(it, "content"))
                return gq_fail(GQ_ERR_FORMAT, "%s: added_tokens entry without a valid id and content", src);
            if (id + 1 > n) n = id + 1;
        }
    }
    if (n == 0) return gq_fail(GQ_ERR_FORMAT, "%s: empty vocab", src);
    // Ids are dense in real files; a huge id with few entries is hostile (it
    // would size every table by the id).
    int64_t n_entries = cJSON_GetArraySize(vocab) + (cJSON_IsArray(added) ? cJSON_GetArraySize(added) : 0);
    if (n > n_entries)
        return gq_fail(GQ_ERR_FORMAT, "%s: token ids reach %lld but only %lld tokens are defined (ids must be dense)",
                       src, (long long)(n - 1), (long long)n_entries);

    // Byte-level (gpt2) or SentencePiece-style?
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    bool byte_fallback = jtrue(model, "byte_fallback", false);
    const char *pre_type = cJSON_IsObject(pre) ? jstr(pre, "type") : NULL;
    bool metaspace = pre_type && !strcmp(pre_type, "Metaspace");
    enum gq_tok_kind kind = (byte_fallback || metaspace || (norm && !cJSON_IsNull(norm))) ? GQ_TOK_SPM : GQ_TOK_GPT2;

    struct gq_tokenizer *t;
    GQ_TRY(tok_alloc((int)n, kind, &t));
    enum gq_status s = GQ_OK;
    cJSON_ArrayForEach(it, vocab) {
        jint(it, 0, max_id, &id);
        const char *txt = it->string;
        if (t->text[id]) {
            s = gq_fail(GQ_ERR_FORMAT, "%s: id %lld is used by two vocab entries", src, (long long)id);
            break;
        }
        if ((s = tok_set_text(t, (int)id, txt, strlen(txt))) != GQ_OK) break;
        t->type[id] = TT_NORMAL;
        if (byte_fallback && t->len[id] == 6 && !memcmp(txt, "<0x", 3) && txt[5] == '>') t->type[id] = TT_BYTE;
    }
    if (s == GQ_OK && cJSON_IsArray(added)) {
        cJSON_ArrayForEach(it, added) {
            jint(cJSON_GetObjectItemCaseSensitive(it, "id"), 0, max_id, &id);
            const char *txt = jstr(it, "content");
            if (t->text[id] && strcmp(t->text[id], txt) != 0) {
                s = gq_fail(GQ_ERR_FORMAT, "%s: added token %lld '%.40s' differs from vocab entry '%.40s'", src,
                            (long long)id, txt, t->text[id]);
                break;
            }
            if (!t->text[id] && (s = tok_set_text(t, (int)id, txt, strlen(txt))) != GQ_OK) break;
            t->type[id] = jtrue(it, "special", false) ? TT_CONTROL : TT_USER_DEFINED;
        }
    }
    const char *unk = jstr(model, "unk_token");
    if (s == GQ_OK) s = tok_finish(t, src); // map needed below; re-run at the end
    if (s == GQ_OK && unk) {
        t->unk = tok_lookup(t, unk, strlen(unk));
        if (t->unk >= 0) t->type[t->unk] = TT_UNKNOWN;
    }
    if (s == GQ_OK && kind == GQ_TOK_GPT2) {
        bool saw_bl = false;
        s = json_pre_gpt2(t, pre, src, &saw_bl);
        if (s == GQ_OK && !saw_bl) {
            const cJSON *dec = cJSON_GetObjectItemCaseSensitive(root, "decoder");
            const char *dt = cJSON_IsObject(dec) ? jstr(dec, "type") : NULL;
            if (!dt || strcmp(dt, "ByteLevel") != 0)
                s = gq_fail(GQ_ERR_UNSUPPORTED, "%s: BPE without ByteLevel, byte_fallback or a SentencePiece normalizer is not supported", src);
        }
        t->byte_level = true;
    } else if (s == GQ_OK) {
        t->byte_fallback = byte_fallback;
        bool replace = false;
        s = json_norm_spm(t, norm, src, &replace);
        if (s == GQ_OK && metaspace) {
            const char *rep = jstr(pre, "replacement"), *scheme = jstr(pre, "prepend_scheme");
            if (rep && strcmp(rep, "\xe2\x96\x81") != 0)
                s = gq_fail(GQ_ERR_UNSUPPORTED, "%s: Metaspace replacement other than U+2581", src);
            replace = true;
            t->add_space_prefix = scheme ? strcmp(scheme, "never") != 0 : jtrue(pre, "add_prefix_space", true);
            t->metaspace_split = jtrue(pre, "split", false);
        } else if (s == GQ_OK && pre && !cJSON_IsNull(pre)) {
            s = gq_fail(GQ_ERR_UNSUPPORTED, "%s: pre_tokenizer '%s' is not supported with a SentencePiece-style BPE", src,
                        pre_type ? pre_type : "?");
        }
        if (s == GQ_OK && !replace)
            s = gq_fail(GQ_ERR_UNSUPPORTED, "%s: byte-fallback BPE without Replace(' ', U+2581) or Metaspace is not supported", src);
    }
    // Merges: "a b" strings or ["a", "b"] pairs.
    char *buf = NULL;
    size_t cap = 0;
    int64_t mi = 0;
    cJSON_ArrayForEach(it, merges) {
        if (s != GQ_OK) break;
        const char *a, *b;
        size_t an, bn;
        if (cJSON_IsString(it)) {
            a = it->valuestring;
            const char *sp = a[0] ? strchr(a + 1, ' ') : NULL;
            if (!sp) {
                s = gq_fail(GQ_ERR_FORMAT, "%s: merge %lld '%.60s' is not two pieces separated by a space", src,
                            (long long)mi, a);
                break;
            }
            an = (size_t)(sp - a), b = sp + 1, bn = strlen(b);
        } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 && cJSON_IsString(cJSON_GetArrayItem(it, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(it, 1))) {
            a = cJSON_GetArrayItem(it, 0)->valuestring, b = cJSON_GetArrayItem(it, 1)->valuestring;
            an = strlen(a), bn = strlen(b);
        } else {
            s = gq_fail(GQ_ERR_FORMAT, "%s: merge %lld is neither \"a b\" nor [\"a\", \"b\"]", src, (long long)mi);
            break;
        }
        mi++;
        if (an + bn > cap) {
            cap = (an + bn) * 2 + 64;
            char *nb = realloc(buf, cap);
            if (!nb) {
                s = gq_fail(GQ_ERR_NOMEM, "out of memory");
                break;
            }
            buf = nb;
        }
        memcpy(buf, a, an);
        memcpy(buf + an, b, bn);
        int32_t l = tok_lookup(t, a, an), r = tok_lookup(t, b, bn), m = tok_lookup(t, buf, an + bn);
        if (l < 0 || r < 0 || m < 0) continue; // see the note at the top
        s = tok_add_merge(t, l, r, m);
    }
    free(buf);
    if (s == GQ_OK && kind == GQ_TOK_SPM && !t->has_merges)
        s = gq_fail(GQ_ERR_FORMAT, "%s: BPE model without usable merges", src);

    if (s == GQ_OK) {
        // BOS/EOS: post_processor TemplateProcessing's leading special token,
        // else the usual names; tokenizer_config.json overrides both.
        static const char *const bos_names[] = {"<s>", "<|begin_of_text|>", "<|startoftext|>", "<bos>", NULL};
        static const char *const eos_names[] = {"</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>", "<|im_end|>", NULL};
        t->bos = find_any(t, bos_names);
        t->eos = find_any(t, eos_names);
        t->add_bos = kind == GQ_TOK_SPM && t->bos >= 0;
        const cJSON *pp = cJSON_GetObjectItemCaseSensitive(root, "post_processor");
        const cJSON *single = cJSON_IsObject(pp) ? cJSON_GetObjectItemCaseSensitive(pp, "single") : NULL;
        const cJSON *first = cJSON_IsArray(single) ? cJSON_GetArrayItem(single, 0) : NULL;
        const char *st = first ? jstr(cJSON_GetObjectItemCaseSensitive(first, "SpecialToken"), "id") : NULL;
        if (st && tok_lookup(t, st, strlen(st)) >= 0) {
            t->bos = tok_lookup(t, st, strlen(st));
            t->add_bos = true;
        }
        json_config(t, src);
        s = tok_finish(t, src); // types changed (unk): rebuild special lists
    }
    if (s != GQ_OK) {
        gq_tokenizer_free(t);
        return s;
    }
    *out = t;
    return GQ_OK;
}

enum gq_status gq_tokenizer_from_json_memory(const char *data, size_t size, const char *path,
                                             struct gq_tokenizer **out) {
    *out = NULL;
    cJSON *root = cJSON_ParseWithLength(data, size);
    if (!root) {
        const char *e = cJSON_GetErrorPtr();
        size_t off = e && e >= data && e <= data + size ? (size_t)(e - data) : 0;
        return gq_fail(GQ_ERR_FORMAT, "%s: not valid JSON (near byte %zu)", path, off);
    }
    enum gq_status s = cJSON_IsObject(root) ? from_json(root, path, out)
                                            : gq_fail(GQ_ERR_FORMAT, "%s: top level is not a JSON object", path);
    cJSON_Delete(root);
    return s;
}

enum gq_status gq_tokenizer_from_json(const char *path, struct gq_tokenizer **out) {
    *out = NULL;
    char *data;
    size_t size;
    GQ_TRY(gq_read_file(path, &data, &size));
    enum gq_status s = gq_tokenizer_from_json_memory(data, size, path, out);
    free(data);
    return s;
}

// ---------------------------------------------------------------------------
// llama2.c tokenizer.bin: u32 max_token_length, then per token
// (f32 score, i32 len, len bytes).

enum gq_status gq_tokenizer_from_llama2c(const char *path, int vocab_size, struct gq_tokenizer **out) {
    *out = NULL;
    char *data;
    size_t size;
    GQ_TRY(gq_read_file(path, &data, &size));
    enum gq_status s = gq_tokenizer_from_llama2c_memory(data, size, path, vocab_size, out);
    free(data);
    return s;
}

enum gq_status gq_tokenizer_from_llama2c_memory(const char *data, size_t size, const char *path, int vocab_size,
                                                struct gq_tokenizer **out) {
    *out = NULL;
    if (vocab_size <= 0 || vocab_size > (1 << 26))
        return gq_fail(GQ_ERR_ARG, "%s: vocab_size %d from the checkpoint is out of range", path, vocab_size);
    const unsigned char *p = (const unsigned char *)data;
    enum gq_status s = GQ_OK;
    struct gq_tokenizer *t = NULL;
    uint32_t max_len;
    if (size < 4) {
        s = gq_fail(GQ_ERR_FORMAT, "%s: %zu bytes, too short for a tokenizer.bin header", path, size);
        goto done;
    }
    memcpy(&max_len, p, 4);
    if (max_len == 0 || max_len > 255) {
        // run.c's merge buffer is 2*max_token_length+3 bytes; real files use <= 64.
        s = gq_fail(GQ_ERR_FORMAT, "%s: max_token_length %u out of range [1, 255] (offset 0)", path, max_len);
        goto done;
    }
    if ((s = tok_alloc(vocab_size, GQ_TOK_LLAMA2C, &t)) != GQ_OK) goto done;
    if (!(t->score = malloc((size_t)vocab_size * sizeof *t->score))) {
        s = gq_fail(GQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    size_t off = 4;
    for (int i = 0; i < vocab_size; i++) {
        if (size - off < 8) {
            s = gq_fail(GQ_ERR_FORMAT, "%s: truncated at token %d of %d (offset %zu, file size %zu): "
                        "does the tokenizer match the checkpoint's vocab_size?", path, i, vocab_size, off, size);
            goto done;
        }
        float sc;
        int32_t len;
        memcpy(&sc, p + off, 4);
        memcpy(&len, p + off + 4, 4);
        if (!isfinite(sc)) {
            s = gq_fail(GQ_ERR_FORMAT, "%s: token %d has a non-finite score (offset %zu)", path, i, off);
            goto done;
        }
        if (len < 0 || (uint32_t)len > max_len) {
            s = gq_fail(GQ_ERR_FORMAT, "%s: token %d has length %d, outside [0, max_token_length %u] (offset %zu)",
                        path, i, (int)len, max_len, off + 4);
            goto done;
        }
        off += 8;
        if (size - off < (size_t)len) {
            s = gq_fail(GQ_ERR_FORMAT, "%s: token %d (%d bytes at offset %zu) runs past the end of the file (size %zu)",
                        path, i, (int)len, off, size);
            goto done;
        }
        if ((s = tok_set_text(t, i, data + off, (size_t)len)) != GQ_OK) goto done;
        t->score[i] = sc;
        t->type[i] = TT_NORMAL;
        if (len == 6 && !memcmp(data + off, "<0x", 3) && data[off + 5] == '>') t->type[i] = TT_BYTE;
        off += (size_t)len;
    }
    if (off != size) {
        s = gq_fail(GQ_ERR_FORMAT, "%s: %zu bytes left after %d tokens (offset %zu): the tokenizer has more tokens "
                    "than the checkpoint's vocab_size", path, size - off, vocab_size, off);
        goto done;
    }
    // run.c conventions: <unk>=0, BOS=1, EOS=2, bytes at 3..258.
    t->unk = 0;
    t->bos = vocab_size > 1 ? 1 : -1;
    t->eos = vocab_size > 2 ? 2 : -1;
    t->add_bos = true;
    if (t->bos >= 0) t->type[t->bos] = TT_CONTROL;
    if (t->eos >= 0) t->type[t->eos] = TT_CONTROL;
    t->type[0] = TT_UNKNOWN;
    s = tok_finish(t, path);
done:
    if (s != GQ_OK) {
        gq_tokenizer_free(t);
        return s;
    }
    *out = t;
    return GQ_OK;
}
