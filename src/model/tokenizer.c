// tokenizer.c - encoding and decoding for the three tokenizer kinds.
//
// gpt2 (byte-level BPE): special-token split -> regex pre-tokenizer (each
// regex splits the pieces of the previous one, unmatched text kept, as
// llama.cpp's unicode_regex_split and HF Split(Isolated) do) -> every byte
// becomes its bytes_to_unicode token -> merges applied lowest rank first,
// leftmost on ties (HF tokenizers / llama.cpp llm_tokenizer_bpe_session).
//
// spm (SentencePiece-style BPE): " " -> "▁", "▁" prefix, UTF-8 chars, then
// the adjacent pair whose concatenation is a piece with the highest score is
// merged, leftmost on ties (llama.cpp llm_tokenizer_spm, SentencePiece
// bpe_model.cc); unresolved chars become <0xNN> byte tokens. A vocab loaded
// from tokenizer.json merges by rank instead, as HF's BPE(byte_fallback) does.
//
// llama2c: karpathy's run.c encode(): " " dummy prefix, per-codepoint lookup
// else byte+3, merge the best-scoring pair. run.c rescans all pairs after
// each merge (O(n^2)); a heap with lazy invalidation picks the same pair
// (max score, leftmost) in O(n log n).
#define PCRE2_CODE_UNIT_WIDTH 8
#include "model/tok_internal.h"

#include <pcre2.h>

// ---------------------------------------------------------------------------
// Small growable vectors

struct ivec {
    int32_t *v;
    size_t n, cap;
};

static bool ivec_push(struct ivec *a, int32_t x) {
    if (a->n == a->cap) {
        size_t nc = a->cap ? a->cap * 2 : 256;
        int32_t *p = realloc(a->v, nc * sizeof *p);
        if (!p) return false;
        a->v = p;
        a->cap = nc;
    }
    a->v[a->n++] = x;
    return true;
}

struct bvec {
    char *v;
    size_t n, cap;
};

static bool bvec_add(struct bvec *a, const void *p, size_t n) {
    if (n == 0) return true;
    if (a->n + n > a->cap) {
        size_t nc = a->cap ? a->cap : 256;
        while (nc < a->n + n) nc *= 2;
        char *q = realloc(a->v, nc);
        if (!q) return false;
        a->v = q;
        a->cap = nc;
    }
    memcpy(a->v + a->n, p, n);
    a->n += n;
    return true;
}

// ---------------------------------------------------------------------------
// Hashing and the vocab map

static inline uint32_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull; // FNV-1a
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return (uint32_t)(h ^ (h >> 32));
}

static inline uint64_t hash_u64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

int32_t tok_lookup(const struct gq_tokenizer *t, const char *s, size_t n) {
    if (!t->map.cap) return -1;
    uint32_t h = hash_bytes(s, n);
    size_t mask = t->map.cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        int32_t id = t->map.slot[i];
        if (id < 0) return -1;
        if (t->map.hash[i] == h && t->len[id] == n && memcmp(t->text[id], s, n) == 0) return id;
    }
}

static enum gq_status build_map(struct gq_tokenizer *t) {
    size_t cap = 16;
    while (cap < (size_t)t->n_vocab * 2) cap *= 2;
    free(t->map.slot), free(t->map.hash);
    t->map.slot = malloc(cap * sizeof *t->map.slot);
    t->map.hash = malloc(cap * sizeof *t->map.hash);
    if (!t->map.slot || !t->map.hash) return gq_fail(GQ_ERR_NOMEM, "out of memory (tokenizer map)");
    memset(t->map.slot, 0xff, cap * sizeof *t->map.slot);
    t->map.cap = cap;
    size_t mask = cap - 1;
    for (int id = 0; id < t->n_vocab; id++) {
        if (!t->text[id]) continue; // hole in a tokenizer.json vocab
        uint32_t h = hash_bytes(t->text[id], t->len[id]);
        size_t i = h & mask;
        for (;; i = (i + 1) & mask) {
            int32_t o = t->map.slot[i];
            if (o < 0) break;
            // Duplicate text: the later id wins, as in llama.cpp's token_to_id
            // and a Python dict built from the token list.
            if (t->map.hash[i] == h && t->len[o] == t->len[id] &&
                memcmp(t->text[o], t->text[id], t->len[id]) == 0)
                break;
        }
        t->map.slot[i] = id;
        t->map.hash[i] = h;
    }
    return GQ_OK;
}

static bool pair_find(const struct tok_pairmap *m, int32_t l, int32_t r, int32_t *rank, int32_t *merged) {
    if (!m->cap) return false;
    uint64_t key = (((uint64_t)(uint32_t)l << 32) | (uint32_t)r) + 1;
    size_t mask = m->cap - 1;
    for (size_t i = hash_u64(key) & mask;; i = (i + 1) & mask) {
        if (m->key[i] == 0) return false;
        if (m->key[i] == key) {
            *rank = m->rank[i];
            *merged = m->merged[i];
            return true;
        }
    }
}

static bool pair_insert_raw(struct tok_pairmap *m, uint64_t key, int32_t rank, int32_t merged) {
    size_t mask = m->cap - 1;
    size_t i = hash_u64(key) & mask;
    for (; m->key[i]; i = (i + 1) & mask)
        if (m->key[i] == key) return false; // keep the first (lowest) rank
    m->key[i] = key;
    m->rank[i] = rank;
    m->merged[i] = merged;
    m->n++;
    return true;
}

enum gq_status tok_add_merge(struct gq_tokenizer *t, int32_t l, int32_t r, int32_t merged) {
    struct tok_pairmap *m = &t->merges;
    if ((m->n + 1) * 2 > m->cap) {
        struct tok_pairmap nm = {0};
        nm.cap = m->cap ? m->cap * 2 : 1024;
        nm.key = calloc(nm.cap, sizeof *nm.key);
        nm.rank = malloc(nm.cap * sizeof *nm.rank);
        nm.merged = malloc(nm.cap * sizeof *nm.merged);
        if (!nm.key || !nm.rank || !nm.merged) {
            free(nm.key), free(nm.rank), free(nm.merged);
            return gq_fail(GQ_ERR_NOMEM, "out of memory (merges)");
        }
        for (size_t i = 0; i < m->cap; i++)
            if (m->key[i]) pair_insert_raw(&nm, m->key[i], m->rank[i], m->merged[i]);
        free(m->key), free(m->rank), free(m->merged);
        *m = nm;
    }
    uint64_t key = (((uint64_t)(uint32_t)l << 32) | (uint32_t)r) + 1;
    // Rank = insertion order (position in the merges list), so a duplicate
    // pair keeps its first rank.
    pair_insert_raw(m, key, (int32_t)m->n, merged);
    t->has_merges = true;
    return GQ_OK;
}

// ---------------------------------------------------------------------------
// Construction helpers

enum gq_status tok_alloc(int n, enum gq_tok_kind kind, struct gq_tokenizer **out) {
    *out = NULL;
    if (n <= 0) return gq_fail(GQ_ERR_FORMAT, "tokenizer has no tokens");
    struct gq_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    t->kind = kind;
    t->n_vocab = n;
    t->text = calloc((size_t)n, sizeof *t->text);
    t->len = calloc((size_t)n, sizeof *t->len);
    t->type = calloc((size_t)n, 1);
    if (!t->text || !t->len || !t->type) {
        gq_tokenizer_free(t);
        return gq_fail(GQ_ERR_NOMEM, "out of memory (%d tokens)", n);
    }
    t->bos = t->eos = t->unk = -1;
    for (int i = 0; i < 256; i++) t->byte_tok[i] = -1;
    *out = t;
    return GQ_OK;
}

enum gq_status tok_set_text(struct gq_tokenizer *t, int i, const char *s, size_t n) {
    if (n > UINT32_MAX - 1) return gq_fail(GQ_ERR_FORMAT, "token %d is too long", i);
    char *p = malloc(n + 1);
    if (!p) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    memcpy(p, s, n);
    p[n] = 0;
    free(t->text[i]);
    t->text[i] = p;
    t->len[i] = (uint32_t)n;
    return GQ_OK;
}

void gq_tokenizer_free(struct gq_tokenizer *t) {
    if (!t) return;
    if (t->text)
        for (int i = 0; i < t->n_vocab; i++) free(t->text[i]);
    free(t->text), free(t->len), free(t->score), free(t->type);
    free(t->map.slot), free(t->map.hash);
    free(t->merges.key), free(t->merges.rank), free(t->merges.merged);
    for (int i = 0; i < t->n_re; i++) pcre2_code_free((pcre2_code *)t->re[i]), free(t->re_src[i]);
    free(t->special), free(t->eog);
    free(t);
}

size_t tok_utf8_check(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        if (c < 0x80) { i++; continue; }
        size_t k;
        uint32_t cp;
        if ((c >> 5) == 6) k = 2, cp = c & 0x1f;
        else if ((c >> 4) == 14) k = 3, cp = c & 0x0f;
        else if ((c >> 3) == 30) k = 4, cp = c & 0x07;
        else return i;
        if (i + k > n) return i;
        for (size_t j = 1; j < k; j++) {
            if ((p[i + j] & 0xc0) != 0x80) return i;
            cp = cp << 6 | (p[i + j] & 0x3f);
        }
        if ((k == 2 && cp < 0x80) || (k == 3 && cp < 0x800) || (k == 4 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return i;
        i += k;
    }
    return n;
}

bool tok_utf8_valid(const char *s, size_t n) { return tok_utf8_check(s, n) == n; }

// GPT-2 bytes_to_unicode: printable bytes map to themselves, the other 68
// to U+0100.. in byte order.
static uint16_t g_byte_cp[256];
static int16_t g_cp_byte[324];
static void byte_unicode_init(void) {
    if (g_byte_cp['!']) return;
    for (int i = 0; i < 324; i++) g_cp_byte[i] = -1;
    int n = 0;
    for (int b = 0; b < 256; b++) {
        bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        uint16_t cp = keep ? (uint16_t)b : (uint16_t)(256 + n++);
        g_byte_cp[b] = cp;
        g_cp_byte[cp] = (int16_t)b;
    }
}

static size_t utf8_put(uint32_t cp, char *o) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | cp >> 6), o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | cp >> 12), o[1] = (char)(0x80 | ((cp >> 6) & 0x3f)), o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | cp >> 18), o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f)), o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

// "<0xNN>" -> NN, else -1.
static int parse_byte_token(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

static int cmp_special_len(const void *a, const void *b, void *ctx) {
    const struct gq_tokenizer *t = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (t->len[x] != t->len[y]) return t->len[x] > t->len[y] ? -1 : 1;
    return x < y ? -1 : x > y;
}

enum gq_status tok_finish(struct gq_tokenizer *t, const char *src) {
    byte_unicode_init();
    GQ_TRY(build_map(t));
    t->max_len = 0;
    for (int i = 0; i < t->n_vocab; i++)
        if (t->len[i] > t->max_len) t->max_len = t->len[i];
    for (int b = 0; b < 256; b++) {
        if (t->kind == GQ_TOK_GPT2) {
            char u[4];
            size_t n = utf8_put(g_byte_cp[b], u);
            t->byte_tok[b] = tok_lookup(t, u, n);
        } else if (t->kind == GQ_TOK_SPM) {
            char u[8];
            snprintf(u, sizeof u, "<0x%02X>", b);
            t->byte_tok[b] = tok_lookup(t, u, 6);
        } else {
            t->byte_tok[b] = b + 3 < t->n_vocab ? b + 3 : -1; // run.c's rule
        }
    }
    for (int i = 0; i < 3; i++) {
        int32_t id = i == 0 ? t->bos : i == 1 ? t->eos : t->unk;
        if (id < -1 || id >= t->n_vocab)
            return gq_fail(GQ_ERR_FORMAT, "%s: %s token id %d out of range [0, %d)", src,
                           i == 0 ? "BOS" : i == 1 ? "EOS" : "UNK", (int)id, t->n_vocab);
    }
    int ns = 0;
    for (int i = 0; i < t->n_vocab; i++)
        if (t->text[i] && t->len[i] > 0 &&
            (t->type[i] == TT_CONTROL || t->type[i] == TT_USER_DEFINED || t->type[i] == TT_UNKNOWN))
            ns++;
    free(t->special);
    t->special = malloc(((size_t)ns + 1) * sizeof *t->special);
    if (!t->special) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    t->n_special = 0;
    for (int i = 0; i < t->n_vocab; i++)
        if (t->text[i] && t->len[i] > 0 &&
            (t->type[i] == TT_CONTROL || t->type[i] == TT_USER_DEFINED || t->type[i] == TT_UNKNOWN))
            t->special[t->n_special++] = i;
    qsort_r(t->special, (size_t)t->n_special, sizeof *t->special, cmp_special_len, t);
    memset(t->special_first, 0, sizeof t->special_first);
    for (int k = 0; k < t->n_special; k++) t->special_first[(unsigned char)t->text[t->special[k]][0]] = 1;

    static const char *const eog_text[] = {"<|im_end|>", "<|eot_id|>", "<|endoftext|>", "<|end_of_text|>",
                                           "<|eom_id|>", "<end_of_turn>", "<|end|>", "</s>"};
    free(t->eog);
    t->eog = malloc((sizeof eog_text / sizeof *eog_text + 1) * sizeof *t->eog);
    if (!t->eog) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    t->n_eog = 0;
    for (size_t k = 0; k < sizeof eog_text / sizeof *eog_text; k++) {
        int32_t id = tok_lookup(t, eog_text[k], strlen(eog_text[k]));
        if (id >= 0 && t->type[id] != TT_NORMAL && t->type[id] != TT_BYTE)
            t->eog[t->n_eog++] = id;
    }
    return GQ_OK;
}

// ---------------------------------------------------------------------------
// Regex pre-tokenizer

enum gq_status tok_add_regex(struct gq_tokenizer *t, const char *pattern, const char *src) {
    if (t->n_re >= TOK_MAX_REGEX)
        return gq_fail(GQ_ERR_UNSUPPORTED, "%s: more than %d pre-tokenizer regexes", src, TOK_MAX_REGEX);
    int err;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err,
                                   &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return gq_fail(GQ_ERR_UNSUPPORTED, "%s: pre-tokenizer regex does not compile at offset %zu: %s", src,
                       (size_t)off, (const char *)msg);
    }
    // JIT is an optimisation only; the interpreter gives the same matches.
    if (pcre2_jit_compile(re, PCRE2_JIT_COMPLETE) == 0) t->jit = true;
    if (!(t->re_src[t->n_re] = strdup(pattern))) {
        pcre2_code_free(re);
        return gq_fail(GQ_ERR_NOMEM, "out of memory");
    }
    t->re[t->n_re++] = re;
    return GQ_OK;
}

enum gq_status tok_set_pre(struct gq_tokenizer *t, const char *pre, const char *src) {
    if (!pre || !strcmp(pre, "default") || !strcmp(pre, "gpt2") || !strcmp(pre, "gpt-2") ||
        !strcmp(pre, "mpt") || !strcmp(pre, "olmo") || !strcmp(pre, "jais"))
        return tok_add_regex(t, TOK_RE_GPT2, src);
    if (!strcmp(pre, "smollm") || !strcmp(pre, "starcoder") || !strcmp(pre, "refact") ||
        !strcmp(pre, "command-r") || !strcmp(pre, "codeshell") || !strcmp(pre, "exaone") ||
        !strcmp(pre, "minerva-7b")) {
        GQ_TRY(tok_add_regex(t, "\\p{N}", src));
        return tok_add_regex(t, TOK_RE_GPT2, src);
    }
    if (!strcmp(pre, "llama3") || !strcmp(pre, "llama-v3") || !strcmp(pre, "llama-bpe") ||
        !strcmp(pre, "dbrx") || !strcmp(pre, "smaug-bpe"))
        return tok_add_regex(t, TOK_RE_LLAMA3, src);
    if (!strcmp(pre, "qwen2") || !strcmp(pre, "stablelm2"))
        return tok_add_regex(t, TOK_RE_QWEN2, src);
    return gq_fail(GQ_ERR_UNSUPPORTED,
                   "%s: pre-tokenizer '%s' is not supported (known: default, gpt-2, smollm, llama-bpe, qwen2)",
                   src, pre);
}

// A piece of the text: [off, off+len).
struct span {
    size_t off, len;
};
struct spanvec {
    struct span *v;
    size_t n, cap;
};
static bool span_push(struct spanvec *a, size_t off, size_t len) {
    if (len == 0) return true;
    if (a->n == a->cap) {
        size_t nc = a->cap ? a->cap * 2 : 1024;
        struct span *p = realloc(a->v, nc * sizeof *p);
        if (!p) return false;
        a->v = p;
        a->cap = nc;
    }
    a->v[a->n++] = (struct span){off, len};
    return true;
}

// Splits each span of `in` by regex `re` into `out`: matches and the text
// between them, in order.
static enum gq_status regex_split(pcre2_code *re, pcre2_match_data *md, const char *text,
                                  const struct spanvec *in, struct spanvec *out) {
    out->n = 0;
    for (size_t k = 0; k < in->n; k++) {
        const char *s = text + in->v[k].off;
        size_t n = in->v[k].len, pos = 0, last = 0;
        while (pos < n) {
            int rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, md, NULL);
            if (rc == PCRE2_ERROR_NOMATCH) break;
            if (rc < 0) {
                PCRE2_UCHAR msg[256];
                pcre2_get_error_message(rc, msg, sizeof msg);
                return gq_fail(GQ_ERR_ARG, "pre-tokenizer regex failed: %s", (const char *)msg);
            }
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            size_t ms = ov[0], me = ov[1];
            if (me == ms) { // empty match: step over one character
                pos = ms + tok_utf8_len((unsigned char)s[ms]);
                continue;
            }
            if (!span_push(out, in->v[k].off + last, ms - last) || !span_push(out, in->v[k].off + ms, me - ms))
                return gq_fail(GQ_ERR_NOMEM, "out of memory");
            last = pos = me;
        }
        if (!span_push(out, in->v[k].off + last, n - last)) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    }
    return GQ_OK;
}

enum gq_status tok_pre_split(const struct gq_tokenizer *t, const char *s, size_t n, size_t **ends, size_t *n_pieces) {
    *ends = NULL;
    *n_pieces = 0;
    struct spanvec a = {0}, b = {0};
    enum gq_status st = GQ_OK;
    pcre2_match_data *md = pcre2_match_data_create(4, NULL);
    if (!md || !span_push(&a, 0, n)) st = gq_fail(GQ_ERR_NOMEM, "out of memory");
    for (int r = 0; r < t->n_re && st == GQ_OK; r++) {
        st = regex_split((pcre2_code *)t->re[r], md, s, &a, &b);
        struct spanvec tmp = a;
        a = b;
        b = tmp;
    }
    if (md) pcre2_match_data_free(md);
    size_t *e = st == GQ_OK ? malloc((a.n + 1) * sizeof *e) : NULL;
    if (st == GQ_OK && !e) st = gq_fail(GQ_ERR_NOMEM, "out of memory");
    for (size_t i = 0; st == GQ_OK && i < a.n; i++) e[i] = a.v[i].off + a.v[i].len;
    if (st == GQ_OK) *ends = e, *n_pieces = a.n;
    free(a.v), free(b.v);
    return st;
}

// ---------------------------------------------------------------------------
// Rank-based BPE over token ids (gpt2, and tokenizer.json SPM-style vocabs)

struct sym {
    const char *p; // text (score engine)
    uint32_t n;
    int32_t id;
    int32_t prev, next;
};

struct bigram {
    float score;   // score engine: higher first
    int32_t rank;  // rank engine: lower first
    int32_t left, right, lid, rid, merged;
};

struct heap {
    struct bigram *v;
    size_t n, cap;
    bool by_score;
};

static inline bool bg_before(const struct heap *h, const struct bigram *a, const struct bigram *b) {
    if (h->by_score) {
        if (a->score != b->score) return a->score > b->score;
    } else if (a->rank != b->rank) {
        return a->rank < b->rank;
    }
    return a->left < b->left;
}

static bool heap_push(struct heap *h, struct bigram b) {
    if (h->n == h->cap) {
        size_t nc = h->cap ? h->cap * 2 : 64;
        struct bigram *p = realloc(h->v, nc * sizeof *p);
        if (!p) return false;
        h->v = p;
        h->cap = nc;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!bg_before(h, &b, &h->v[up])) break;
        h->v[i] = h->v[up];
        i = up;
    }
    h->v[i] = b;
    return true;
}

static struct bigram heap_pop(struct heap *h) {
    struct bigram top = h->v[0], last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && bg_before(h, &h->v[c + 1], &h->v[c])) c++;
        if (!bg_before(h, &h->v[c], &last)) break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n) h->v[i] = last;
    return top;
}

// Per-call scratch shared by the engines.
struct enc {
    const struct gq_tokenizer *t;
    struct sym *syms;
    size_t cap_syms;
    struct heap heap;
    struct bvec buf;  // normalized text / concatenation scratch
    struct ivec *out;
    pcre2_match_data *md;
    struct spanvec sa, sb;
    // word cache (gpt2): piece bytes -> ids
    struct {
        uint32_t *hash;
        uint32_t *key_off, *key_len, *ids_off, *ids_n;
        size_t cap, n;
    } wc;
    struct bvec wc_keys;
    struct ivec wc_ids;
};

static bool syms_reserve(struct enc *e, size_t n) {
    if (n <= e->cap_syms) return true;
    size_t nc = e->cap_syms ? e->cap_syms : 64;
    while (nc < n) nc *= 2;
    struct sym *p = realloc(e->syms, nc * sizeof *p);
    if (!p) return false;
    e->syms = p;
    e->cap_syms = nc;
    return true;
}

static bool rank_try(struct enc *e, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return true;
    int32_t lid = e->syms[l].id, rid = e->syms[r].id, rank, merged;
    if (lid < 0 || rid < 0 || !pair_find(&e->t->merges, lid, rid, &rank, &merged)) return true;
    struct bigram b = {.rank = rank, .left = l, .right = r, .lid = lid, .rid = rid, .merged = merged};
    return heap_push(&e->heap, b);
}

// Merges e->syms[0..n) by rank and appends the surviving ids to `out`.
static enum gq_status rank_merge(struct enc *e, size_t n, struct ivec *out) {
    struct sym *s = e->syms;
    for (size_t i = 0; i < n; i++) s[i].prev = (int32_t)i - 1, s[i].next = i + 1 < n ? (int32_t)i + 1 : -1;
    e->heap.n = 0;
    e->heap.by_score = false;
    for (size_t i = 0; i + 1 < n; i++)
        if (!rank_try(e, (int32_t)i, (int32_t)i + 1)) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    while (e->heap.n) {
        struct bigram b = heap_pop(&e->heap);
        struct sym *L = &s[b.left], *R = &s[b.right];
        if (L->n == 0 || R->n == 0 || L->next != b.right || L->id != b.lid || R->id != b.rid) continue;
        L->id = b.merged;
        R->n = 0;
        L->next = R->next;
        if (R->next >= 0) s[R->next].prev = b.left;
        if (!rank_try(e, L->prev, b.left) || !rank_try(e, b.left, L->next))
            return gq_fail(GQ_ERR_NOMEM, "out of memory");
    }
    for (int32_t i = n ? 0 : -1; i >= 0; i = s[i].next) {
        int32_t id = s[i].id >= 0 ? s[i].id : e->t->unk;
        if (id >= 0 && !ivec_push(out, id)) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    }
    return GQ_OK;
}

// Byte-level BPE of one pre-token, through the per-call word cache.
static enum gq_status bpe_word(struct enc *e, const char *w, size_t n) {
    const struct gq_tokenizer *t = e->t;
    uint32_t h = hash_bytes(w, n);
    size_t mask = e->wc.cap - 1, i = h & mask;
    for (; e->wc.key_len[i] != UINT32_MAX; i = (i + 1) & mask) {
        if (e->wc.hash[i] == h && e->wc.key_len[i] == n && memcmp(e->wc_keys.v + e->wc.key_off[i], w, n) == 0) {
            for (uint32_t k = 0; k < e->wc.ids_n[i]; k++)
                if (!ivec_push(e->out, e->wc_ids.v[e->wc.ids_off[i] + k])) return gq_fail(GQ_ERR_NOMEM, "out of memory");
            return GQ_OK;
        }
    }
    if (!syms_reserve(e, n)) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    for (size_t k = 0; k < n; k++) {
        e->syms[k].id = t->byte_tok[(unsigned char)w[k]];
        e->syms[k].n = 1;
    }
    size_t start = e->out->n;
    GQ_TRY(rank_merge(e, n, e->out));
    // Cache words of reasonable length (long runs are rare and would bloat it).
    if (n > 256 || n > UINT32_MAX) return GQ_OK;
    size_t key_off = e->wc_keys.n, ids_off = e->wc_ids.n;
    if (!bvec_add(&e->wc_keys, w, n)) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    for (size_t k = start; k < e->out->n; k++)
        if (!ivec_push(&e->wc_ids, e->out->v[k])) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    e->wc.hash[i] = h;
    e->wc.key_off[i] = (uint32_t)key_off;
    e->wc.key_len[i] = (uint32_t)n;
    e->wc.ids_off[i] = (uint32_t)ids_off;
    e->wc.ids_n[i] = (uint32_t)(e->out->n - start);
    if (++e->wc.n * 2 > e->wc.cap) {
        // Grow: rehash into a table twice the size.
        size_t nc = e->wc.cap * 2;
        uint32_t *a[5];
        for (int j = 0; j < 5; j++) a[j] = malloc(nc * sizeof(uint32_t));
        if (!a[0] || !a[1] || !a[2] || !a[3] || !a[4]) {
            for (int j = 0; j < 5; j++) free(a[j]);
            return gq_fail(GQ_ERR_NOMEM, "out of memory");
        }
        memset(a[2], 0xff, nc * sizeof(uint32_t));
        for (size_t j = 0; j < e->wc.cap; j++) {
            if (e->wc.key_len[j] == UINT32_MAX) continue;
            size_t q = e->wc.hash[j] & (nc - 1);
            while (a[2][q] != UINT32_MAX) q = (q + 1) & (nc - 1);
            a[0][q] = e->wc.hash[j], a[1][q] = e->wc.key_off[j], a[2][q] = e->wc.key_len[j];
            a[3][q] = e->wc.ids_off[j], a[4][q] = e->wc.ids_n[j];
        }
        free(e->wc.hash), free(e->wc.key_off), free(e->wc.key_len), free(e->wc.ids_off), free(e->wc.ids_n);
        e->wc.hash = a[0], e->wc.key_off = a[1], e->wc.key_len = a[2], e->wc.ids_off = a[3], e->wc.ids_n = a[4];
        e->wc.cap = nc;
    }
    return GQ_OK;
}

static enum gq_status enc_gpt2(struct enc *e, const char *s, size_t n) {
    const struct gq_tokenizer *t = e->t;
    size_t bad = tok_utf8_check(s, n);
    if (bad != n)
        return gq_fail(GQ_ERR_ARG, "text is not valid UTF-8 (byte %zu of a %zu-byte fragment)", bad, n);
    e->buf.n = 0;
    if (t->bl_prefix_space && n > 0 && s[0] != ' ') {
        if (!bvec_add(&e->buf, " ", 1) || !bvec_add(&e->buf, s, n)) return gq_fail(GQ_ERR_NOMEM, "out of memory");
        s = e->buf.v;
        n = e->buf.n;
    }
    e->sa.n = 0;
    if (!span_push(&e->sa, 0, n)) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    for (int r = 0; r < t->n_re; r++) {
        GQ_TRY(regex_split((pcre2_code *)t->re[r], e->md, s, &e->sa, &e->sb));
        struct spanvec tmp = e->sa;
        e->sa = e->sb;
        e->sb = tmp;
    }
    for (size_t k = 0; k < e->sa.n; k++) GQ_TRY(bpe_word(e, s + e->sa.v[k].off, e->sa.v[k].len));
    return GQ_OK;
}

// ---------------------------------------------------------------------------
// Score-based merging (SentencePiece / llama2.c)

static bool score_try(struct enc *e, int32_t l, int32_t r, bool spm) {
    if (l < 0 || r < 0) return true;
    const struct gq_tokenizer *t = e->t;
    struct sym *L = &e->syms[l], *R = &e->syms[r];
    const char *p;
    size_t n = (size_t)L->n + R->n;
    char local[256];
    if (n > t->max_len) return true; // no token is this long
    if (L->p + L->n == R->p) {
        p = L->p;
    } else {
        if (n > sizeof local) return true; // llama2.c tokens are limited to 255 bytes at load
        memcpy(local, L->p, L->n);
        memcpy(local + L->n, R->p, R->n);
        p = local;
    }
    int32_t id = tok_lookup(t, p, n);
    if (id < 0) return true;
    float sc = t->score ? t->score[id] : 0.0f;
    if (spm) {
        // SentencePiece only merges into pieces it can emit as text.
        uint8_t ty = t->type[id];
        if (ty != TT_NORMAL && ty != TT_USER_DEFINED && ty != TT_UNUSED && ty != TT_UNDEFINED) return true;
    } else if (!(sc > -1e10f)) {
        return true; // run.c: best_score starts at -1e10 and needs '>'
    }
    struct bigram b = {.score = sc, .left = l, .right = r, .lid = L->id, .rid = R->id, .merged = id};
    b.rank = (int32_t)n; // size, for the staleness check
    return heap_push(&e->heap, b);
}

static enum gq_status score_merge(struct enc *e, size_t n, bool spm) {
    struct sym *s = e->syms;
    const struct gq_tokenizer *t = e->t;
    for (size_t i = 0; i < n; i++) s[i].prev = (int32_t)i - 1, s[i].next = i + 1 < n ? (int32_t)i + 1 : -1;
    e->heap.n = 0;
    e->heap.by_score = true;
    for (size_t i = 0; i + 1 < n; i++)
        if (!score_try(e, (int32_t)i, (int32_t)i + 1, spm)) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    while (e->heap.n) {
        struct bigram b = heap_pop(&e->heap);
        struct sym *L = &s[b.left], *R = &s[b.right];
        if (L->n == 0 || R->n == 0 || L->next != b.right || L->id != b.lid || R->id != b.rid ||
            (size_t)L->n + R->n != (size_t)b.rank)
            continue;
        if (L->p + L->n == R->p) {
            L->n += R->n;
        } else {
            L->p = t->text[b.merged];
            L->n = t->len[b.merged];
        }
        L->id = b.merged;
        R->n = 0;
        L->next = R->next;
        if (R->next >= 0) s[R->next].prev = b.left;
        if (!score_try(e, L->prev, b.left, spm) || !score_try(e, b.left, L->next, spm))
            return gq_fail(GQ_ERR_NOMEM, "out of memory");
    }
    for (int32_t i = n ? 0 : -1; i >= 0; i = s[i].next) {
        if (s[i].id >= 0) {
            if (!ivec_push(e->out, s[i].id)) return gq_fail(GQ_ERR_NOMEM, "out of memory");
            continue;
        }
        // Unresolved character: one byte token per byte, else <unk>.
        for (uint32_t k = 0; k < s[i].n; k++) {
            int32_t id = t->byte_tok[(unsigned char)s[i].p[k]];
            if (id < 0) id = t->unk;
            if (id >= 0 && !ivec_push(e->out, id)) return gq_fail(GQ_ERR_NOMEM, "out of memory");
            if (id == t->unk && t->byte_tok[(unsigned char)s[i].p[k]] < 0) break; // one <unk> per char
        }
    }
    return GQ_OK;
}

static const char SPACE_SYM[] = "\xe2\x96\x81"; // U+2581 ▁

// One SPM word (normalized text) -> ids.
static enum gq_status spm_word(struct enc *e, const char *w, size_t n) {
    const struct gq_tokenizer *t = e->t;
    if (!syms_reserve(e, n)) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    size_t ns = 0;
    if (!t->has_merges) {
        for (size_t off = 0; off < n;) {
            size_t k = tok_utf8_len((unsigned char)w[off]);
            if (k > n - off) k = n - off;
            e->syms[ns++] = (struct sym){.p = w + off, .n = (uint32_t)k, .id = tok_lookup(t, w + off, k)};
            off += k;
        }
        return score_merge(e, ns, true);
    }
    // tokenizer.json BPE(byte_fallback): chars, unknown chars as byte
    // tokens (or one <unk>), then merges by rank.
    for (size_t off = 0; off < n;) {
        size_t k = tok_utf8_len((unsigned char)w[off]);
        if (k > n - off) k = n - off;
        int32_t id = tok_lookup(t, w + off, k);
        if (id >= 0) {
            e->syms[ns++] = (struct sym){.n = 1, .id = id};
        } else if (t->byte_fallback && t->byte_tok[(unsigned char)w[off]] >= 0) {
            for (size_t j = 0; j < k; j++) {
                int32_t b = t->byte_tok[(unsigned char)w[off + j]];
                e->syms[ns++] = (struct sym){.n = 1, .id = b >= 0 ? b : t->unk};
            }
        } else if (ns == 0 || e->syms[ns - 1].id != t->unk || t->unk < 0) {
            e->syms[ns++] = (struct sym){.n = 1, .id = t->unk}; // fuse_unk
        }
        off += k;
    }
    return rank_merge(e, ns, e->out);
}

static enum gq_status enc_spm(struct enc *e, const char *s, size_t n, bool prefix) {
    const struct gq_tokenizer *t = e->t;
    e->buf.n = 0;
    if (prefix && !bvec_add(&e->buf, SPACE_SYM, 3)) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        bool ok = s[i] == ' ' ? bvec_add(&e->buf, SPACE_SYM, 3) : bvec_add(&e->buf, s + i, 1);
        if (!ok) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    }
    const char *w = e->buf.v;
    size_t wn = e->buf.n;
    if (!t->metaspace_split) return wn ? spm_word(e, w, wn) : GQ_OK;
    // Metaspace(split=true): a word starts at every ▁.
    size_t start = 0;
    for (size_t i = 1; i + 3 <= wn; i++) {
        if (memcmp(w + i, SPACE_SYM, 3) == 0) {
            GQ_TRY(spm_word(e, w + start, i - start));
            start = i;
        }
    }
    return wn > start ? spm_word(e, w + start, wn - start) : GQ_OK;
}

static enum gq_status enc_llama2c(struct enc *e, const char *s, size_t n, bool prefix) {
    const struct gq_tokenizer *t = e->t;
    if (!syms_reserve(e, n + 1)) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    size_t ns = 0;
    if (prefix) {
        int32_t id = tok_lookup(t, " ", 1);
        if (id >= 0) e->syms[ns++] = (struct sym){.p = t->text[id], .n = t->len[id], .id = id};
    }
    for (size_t i = 0; i < n;) {
        // run.c groups a byte with the continuation bytes after it (at most 4).
        size_t k = 1;
        while (i + k < n && k < 4 && ((unsigned char)s[i + k] & 0xc0) == 0x80) k++;
        int32_t id = tok_lookup(t, s + i, k);
        if (id >= 0) {
            e->syms[ns++] = (struct sym){.p = t->text[id], .n = t->len[id], .id = id};
        } else {
            for (size_t j = 0; j < k; j++) {
                int32_t b = t->byte_tok[(unsigned char)s[i + j]];
                if (b < 0) b = t->unk >= 0 ? t->unk : 0;
                e->syms[ns++] = (struct sym){.p = t->text[b], .n = t->len[b], .id = b};
            }
        }
        i += k;
    }
    return score_merge(e, ns, false);
}

// ---------------------------------------------------------------------------
// Public entry points

static void enc_free(struct enc *e) {
    free(e->syms);
    free(e->heap.v);
    free(e->buf.v);
    free(e->sa.v);
    free(e->sb.v);
    if (e->md) pcre2_match_data_free(e->md);
    free(e->wc.hash), free(e->wc.key_off), free(e->wc.key_len), free(e->wc.ids_off), free(e->wc.ids_n);
    free(e->wc_keys.v);
    free(e->wc_ids.v);
}

// The special token starting at s[0..n), longest first; -1 if none.
static int32_t match_special(const struct gq_tokenizer *t, const char *s, size_t n) {
    for (int k = 0; k < t->n_special; k++) {
        int32_t id = t->special[k];
        if (t->len[id] <= n && (unsigned char)t->text[id][0] == (unsigned char)s[0] &&
            memcmp(t->text[id], s, t->len[id]) == 0)
            return id;
    }
    return -1;
}

static enum gq_status enc_fragment(struct enc *e, const char *s, size_t n, bool prev_special, bool at_start) {
    switch (e->t->kind) {
    case GQ_TOK_GPT2: return enc_gpt2(e, s, n);
    case GQ_TOK_SPM: return enc_spm(e, s, n, e->t->add_space_prefix && prev_special);
    case GQ_TOK_LLAMA2C: return enc_llama2c(e, s, n, at_start);
    }
    return GQ_OK;
}

enum gq_status gq_tokenize(const struct gq_tokenizer *t, const char *text, size_t len, bool add_bos,
                           bool parse_special, int32_t **ids, size_t *n_ids) {
    *ids = NULL;
    *n_ids = 0;
    if (!t) return gq_fail(GQ_ERR_ARG, "no tokenizer");
    if (!text && len) return gq_fail(GQ_ERR_ARG, "text is NULL");
    struct ivec out = {0};
    struct enc e = {.t = t, .out = &out};
    enum gq_status s = GQ_OK;
    if (t->kind == GQ_TOK_GPT2) {
        e.wc.cap = 4096;
        e.wc.hash = malloc(e.wc.cap * 4), e.wc.key_off = malloc(e.wc.cap * 4);
        e.wc.key_len = malloc(e.wc.cap * 4), e.wc.ids_off = malloc(e.wc.cap * 4), e.wc.ids_n = malloc(e.wc.cap * 4);
        if (t->n_re) e.md = pcre2_match_data_create(4, NULL);
        if (!e.wc.hash || !e.wc.key_off || !e.wc.key_len || !e.wc.ids_off || !e.wc.ids_n || (t->n_re && !e.md))
            s = gq_fail(GQ_ERR_NOMEM, "out of memory");
        else
            memset(e.wc.key_len, 0xff, e.wc.cap * 4);
    }
    if (s == GQ_OK && add_bos && t->bos >= 0 && !ivec_push(&out, t->bos)) s = gq_fail(GQ_ERR_NOMEM, "out of memory");

    // Split around special tokens (leftmost, longest first), then encode
    // each plain-text fragment.
    size_t frag = 0, i = 0;
    bool prev_special = true;
    while (s == GQ_OK && i < len) {
        int32_t sp = parse_special && t->special_first[(unsigned char)text[i]] ? match_special(t, text + i, len - i) : -1;
        if (sp < 0) {
            i++;
            continue;
        }
        if (i > frag) {
            s = enc_fragment(&e, text + frag, i - frag, prev_special, frag == 0);
            if (s != GQ_OK) break;
        }
        if (!ivec_push(&out, sp)) s = gq_fail(GQ_ERR_NOMEM, "out of memory");
        i += t->len[sp];
        frag = i;
        prev_special = true;
    }
    if (s == GQ_OK && len > frag) s = enc_fragment(&e, text + frag, len - frag, prev_special, frag == 0);
    enc_free(&e);
    if (s != GQ_OK) {
        free(out.v);
        return s;
    }
    if (!out.v) out.v = malloc(sizeof(int32_t)); // a valid pointer even for no ids
    if (!out.v) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    *ids = out.v;
    *n_ids = out.n;
    return GQ_OK;
}

// Writes the bytes of token id; `strip_space` drops one leading space
// (the SentencePiece dummy prefix / run.c's "after BOS" rule).
static size_t token_bytes(const struct gq_tokenizer *t, int32_t id, bool special, bool strip_space, char *buf,
                          size_t cap) {
    if (!t || id < 0 || id >= t->n_vocab || !t->text[id]) return 0;
    const char *s = t->text[id];
    size_t n = t->len[id], w = 0;
    uint8_t ty = t->type[id];
#define PUT(c)                                   \
    do {                                         \
        if (w < cap) buf[w] = (char)(c);         \
        w++;                                     \
    } while (0)
    if (ty == TT_CONTROL || (t->kind == GQ_TOK_LLAMA2C && (id == t->bos || id == t->eos))) {
        if (!special) return 0;
        for (size_t i = 0; i < n; i++) PUT(s[i]);
        return w;
    }
    if (ty == TT_USER_DEFINED) {
        for (size_t i = 0; i < n; i++) PUT(s[i]);
        return w;
    }
    int b = parse_byte_token(s, n);
    if (b >= 0 && (t->kind == GQ_TOK_LLAMA2C || ty == TT_BYTE)) {
        PUT(b);
        return w;
    }
    if (t->kind == GQ_TOK_GPT2) {
        for (size_t i = 0; i < n;) {
            size_t k = tok_utf8_len((unsigned char)s[i]);
            if (k > n - i) k = n - i;
            uint32_t cp = k == 1 ? (unsigned char)s[i] : k == 2 ? ((unsigned char)s[i] & 0x1fu) << 6 | ((unsigned char)s[i + 1] & 0x3fu) : 0xffffffffu;
            if (cp < 324 && g_cp_byte[cp] >= 0) {
                PUT(g_cp_byte[cp]);
            } else {
                for (size_t j = 0; j < k; j++) PUT(s[i + j]); // not a byte-level char: as is
            }
            i += k;
        }
        return w;
    }
    if (t->kind == GQ_TOK_SPM) {
        if (ty == TT_UNKNOWN) {
            static const char unk_text[] = "\xe2\x96\x85"; // llama.cpp prints ▅ for <unk>
            for (size_t i = 0; i < 3; i++) PUT(unk_text[i]);
            return w;
        }
        size_t i = 0;
        if (strip_space && n >= 3 && memcmp(s, SPACE_SYM, 3) == 0) i = 3;
        for (; i < n; i++) {
            if (i + 3 <= n && memcmp(s + i, SPACE_SYM, 3) == 0) {
                PUT(' ');
                i += 2;
            } else {
                PUT(s[i]);
            }
        }
        return w;
    }
    size_t i = strip_space && n > 0 && s[0] == ' ' ? 1 : 0;
    for (; i < n; i++) PUT(s[i]);
    return w;
#undef PUT
}

size_t gq_token_to_bytes(const struct gq_tokenizer *t, int32_t id, char *buf, size_t cap) {
    return token_bytes(t, id, false, false, buf, cap);
}

// The dummy-prefix space is dropped at the start of a sequence and after
// BOS (run.c strips it after BOS; SentencePiece at the start).
static bool strips_after(const struct gq_tokenizer *t, int32_t prev) {
    if (t->kind == GQ_TOK_LLAMA2C) return prev < 0 || (prev == t->bos && t->bos >= 0);
    if (t->kind == GQ_TOK_SPM) return t->add_space_prefix && (prev < 0 || (prev == t->bos && t->bos >= 0));
    return false;
}

size_t gq_token_to_bytes_after(const struct gq_tokenizer *t, int32_t prev, int32_t id, char *buf, size_t cap) {
    return token_bytes(t, id, false, t && strips_after(t, prev), buf, cap);
}

enum gq_status gq_detokenize(const struct gq_tokenizer *t, const int32_t *ids, size_t n, bool special,
                             char **out, size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    struct bvec b = {0};
    char tmp[512];
    bool at_start = true; // only control tokens so far
    for (size_t i = 0; i < n; i++) {
        bool strip = strips_after(t, -1) && at_start;
        size_t w = token_bytes(t, ids[i], special, strip, tmp, sizeof tmp);
        if (w > sizeof tmp) {
            char *big = malloc(w);
            if (!big) {
                free(b.v);
                return gq_fail(GQ_ERR_NOMEM, "out of memory");
            }
            token_bytes(t, ids[i], special, strip, big, w);
            bool ok = bvec_add(&b, big, w);
            free(big);
            if (!ok) {
                free(b.v);
                return gq_fail(GQ_ERR_NOMEM, "out of memory");
            }
        } else if (!bvec_add(&b, tmp, w)) {
            free(b.v);
            return gq_fail(GQ_ERR_NOMEM, "out of memory");
        }
        if (ids[i] >= 0 && ids[i] < t->n_vocab && t->type[ids[i]] != TT_CONTROL) at_start = false;
    }
    if (!bvec_add(&b, "", 1)) {
        free(b.v);
        return gq_fail(GQ_ERR_NOMEM, "out of memory");
    }
    *out = b.v;
    *out_len = b.n - 1;
    return GQ_OK;
}

int gq_tokenizer_n_vocab(const struct gq_tokenizer *t) { return t ? t->n_vocab : 0; }

int32_t gq_tokenizer_find(const struct gq_tokenizer *t, const char *piece) {
    return t && piece ? tok_lookup(t, piece, strlen(piece)) : -1;
}

int32_t gq_tokenizer_bos(const struct gq_tokenizer *t) { return t->bos; }
int32_t gq_tokenizer_eos(const struct gq_tokenizer *t) { return t->eos; }
bool gq_tokenizer_add_bos(const struct gq_tokenizer *t) { return t->add_bos; }

void gq_tokenizer_set_special(struct gq_tokenizer *t, int32_t bos, int32_t eos, int add_bos) {
    if (bos >= -1 && bos < t->n_vocab) t->bos = bos;
    if (eos >= -1 && eos < t->n_vocab) t->eos = eos;
    if (add_bos >= 0) t->add_bos = add_bos != 0;
}

const char *gq_tokenizer_kind(const struct gq_tokenizer *t) {
    switch (t->kind) {
    case GQ_TOK_GPT2: return "gpt2";
    case GQ_TOK_SPM: return "llama";
    case GQ_TOK_LLAMA2C: return "llama2c";
    }
    return "?";
}

bool gq_tokenizer_is_eog(const struct gq_tokenizer *t, int32_t id) {
    if (id < 0) return false;
    if (id == t->eos) return true;
    for (int i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id) return true;
    return false;
}
