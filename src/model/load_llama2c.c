// load_llama2c.c - llama2.c checkpoints (v0 legacy, v1 f32, v2 Q8_0); see llama2c.h.
#include "model/llama2c.h"
#include "model/tokenizer.h"

#include <math.h>
#include <sys/stat.h>

// Limits well above any llama2.c model but small enough that the size
// arithmetic below cannot overflow 64 bits (the checks stay anyway).
#define MAX_DIM (1 << 16)
#define MAX_HIDDEN (1 << 18)
#define MAX_LAYERS 1024
#define MAX_HEADS 1024
#define MAX_VOCAB (1 << 24)
#define MAX_SEQ (1 << 24)

static int32_t rd_i32(const unsigned char *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

// Accumulates element counts times element sizes, failing on overflow.
struct sizer {
    size_t total;
    bool overflow;
};
static void add(struct sizer *z, size_t a, size_t b, size_t c, size_t elem) {
    size_t x;
    if (!gq_mul_ok(a, b, &x) || !gq_mul_ok(x, c, &x) || !gq_mul_ok(x, elem, &x) || !gq_add_ok(z->total, x, &z->total))
        z->overflow = true;
}
// Bytes of a Q8_0 tensor of n elements: n int8 values and n/gs f32 scales.
static void add_q8(struct sizer *z, size_t count, size_t n, size_t gs) {
    add(z, count, n, 1, 1);
    add(z, count, n / gs, 1, 4);
}

enum gq_status gq_llama2c_parse_header(const void *data, size_t size, const char *name,
                                       struct gq_llama2c_layout *L) {
    const unsigned char *p = data;
    memset(L, 0, sizeof *L);
    if (size < 28)
        return gq_fail(GQ_ERR_FORMAT, "%s: %zu bytes, too short for a llama2.c header (28 bytes)", name, size);
    int32_t h[7];
    uint32_t magic;
    memcpy(&magic, p, 4);
    size_t hoff = 0;
    if (magic == GQ_LLAMA2C_MAGIC) {
        if (size < 256)
            return gq_fail(GQ_ERR_FORMAT, "%s: %zu bytes, too short for a llama2.c v1/v2 header (256 bytes)", name, size);
        int32_t ver = rd_i32(p + 4);
        if (ver != 1 && ver != 2)
            return gq_fail(GQ_ERR_UNSUPPORTED, "%s: llama2.c export version %d is not supported (0, 1, 2) (offset 4)",
                           name, (int)ver);
        L->version = ver;
        L->header_size = 256;
        hoff = 8;
    } else {
        L->version = 0;
        L->header_size = 28;
    }
    for (int i = 0; i < 7; i++) h[i] = rd_i32(p + hoff + 4 * i);
    L->dim = h[0], L->hidden_dim = h[1], L->n_layers = h[2], L->n_heads = h[3], L->n_kv_heads = h[4];
    L->seq_len = h[6];
    if (L->version == 0) {
        // v0 encodes an unshared classifier as a negative vocab size.
        if (h[5] == INT32_MIN)
            return gq_fail(GQ_ERR_FORMAT, "%s: vocab_size %d out of range (offset 20)", name, (int)h[5]);
        L->shared_classifier = h[5] > 0;
        L->n_vocab = h[5] < 0 ? -h[5] : h[5];
    } else {
        L->n_vocab = h[5];
        unsigned char flag = p[hoff + 28];
        if (flag > 1)
            return gq_fail(GQ_ERR_FORMAT, "%s: shared_classifier flag %u is not 0 or 1 (offset %zu)", name, flag,
                           hoff + 28);
        L->shared_classifier = flag == 1;
        if (L->version == 2) L->group_size = rd_i32(p + hoff + 29);
    }
    static const char *names[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"};
    const int vals[7] = {L->dim, L->hidden_dim, L->n_layers, L->n_heads, L->n_kv_heads, L->n_vocab, L->seq_len};
    const int lims[7] = {MAX_DIM, MAX_HIDDEN, MAX_LAYERS, MAX_HEADS, MAX_HEADS, MAX_VOCAB, MAX_SEQ};
    for (int i = 0; i < 7; i++)
        if (vals[i] <= 0 || vals[i] > lims[i])
            return gq_fail(GQ_ERR_FORMAT, "%s: header %s = %d outside [1, %d] (offset %zu): not a llama2.c checkpoint?",
                           name, names[i], vals[i], lims[i], hoff + 4 * (size_t)i);
    if (L->dim % L->n_heads != 0)
        return gq_fail(GQ_ERR_FORMAT, "%s: dim %d is not a multiple of n_heads %d", name, L->dim, L->n_heads);
    if (L->n_heads % L->n_kv_heads != 0)
        return gq_fail(GQ_ERR_FORMAT, "%s: n_heads %d is not a multiple of n_kv_heads %d", name, L->n_heads,
                       L->n_kv_heads);
    int head = L->dim / L->n_heads;
    if (head % 2 != 0)
        return gq_fail(GQ_ERR_FORMAT, "%s: head size %d (dim %d / n_heads %d) is odd; RoPE needs pairs", name, head,
                       L->dim, L->n_heads);
    if (L->version == 2 && (L->group_size <= 0 || L->dim % L->group_size != 0))
        return gq_fail(GQ_ERR_FORMAT, "%s: group_size %d does not divide dim %d (offset 37)", name, L->group_size,
                       L->dim);

    size_t dim = (size_t)L->dim, hid = (size_t)L->hidden_dim, nl = (size_t)L->n_layers,
           kv = (size_t)L->n_kv_heads * (size_t)head, V = (size_t)L->n_vocab, gs = (size_t)L->group_size;
    struct sizer z = {L->header_size, false};
    if (L->version == 0) {
        add(&z, V, dim, 1, 4);                 // token embedding
        add(&z, nl, dim, 1, 4);                // rms_att
        add(&z, nl, dim, dim, 4);              // wq
        add(&z, nl, kv, dim, 4 * 2);           // wk, wv
        add(&z, nl, dim, dim, 4);              // wo
        add(&z, nl, dim, 1, 4);                // rms_ffn
        add(&z, nl, hid, dim, 4 * 3);          // w1, w2, w3
        add(&z, dim, 1, 1, 4);                 // rms_final
        add(&z, (size_t)L->seq_len, (size_t)head / 2, 2, 4); // freq_cis real + imag
        if (!L->shared_classifier) add(&z, V, dim, 1, 4);
    } else if (L->version == 1) {
        add(&z, nl, dim, 2, 4);
        add(&z, dim, 1, 1, 4);
        add(&z, V, dim, 1, 4);
        add(&z, nl, dim, dim, 4 * 2); // wq, wo
        add(&z, nl, kv, dim, 4 * 2);
        add(&z, nl, hid, dim, 4 * 3);
        if (!L->shared_classifier) add(&z, V, dim, 1, 4);
    } else {
        add(&z, nl, dim, 2, 4);
        add(&z, dim, 1, 1, 4);
        add_q8(&z, 1, V * dim, gs); // products bounded by the limits above: no overflow
        add_q8(&z, nl, dim * dim, gs);
        add_q8(&z, nl, kv * dim, gs);
        add_q8(&z, nl, kv * dim, gs);
        add_q8(&z, nl, dim * dim, gs);
        add_q8(&z, nl, hid * dim, gs);
        add_q8(&z, nl, hid * dim, gs);
        add_q8(&z, nl, hid * dim, gs);
        if (!L->shared_classifier) add_q8(&z, 1, V * dim, gs);
    }
    if (z.overflow)
        return gq_fail(GQ_ERR_FORMAT, "%s: header sizes overflow (dim %d, hidden %d, layers %d, vocab %d)", name,
                       L->dim, L->hidden_dim, L->n_layers, L->n_vocab);
    L->file_size = z.total;
    if (z.total != size)
        return gq_fail(GQ_ERR_FORMAT, "%s: llama2.c v%d header (dim %d, hidden %d, layers %d, heads %d/%d, vocab %d, "
                       "seq_len %d, %s classifier) implies %zu bytes but the file has %zu%s",
                       name, L->version, L->dim, L->hidden_dim, L->n_layers, L->n_heads, L->n_kv_heads, L->n_vocab,
                       L->seq_len, L->shared_classifier ? "shared" : "unshared", z.total, size,
                       z.total > size ? " (truncated?)" : "");
    return GQ_OK;
}

struct cursor {
    const unsigned char *p;
    size_t off, size;
    const char *name;
    struct gq_model *m;
    size_t gs;
};

// Next n f32 values, borrowed from the buffer.
static enum gq_status take_f32(struct cursor *c, size_t n, const char *what, const float **out) {
    GQ_ASSERT(n <= (c->size - c->off) / 4); // sizes were validated by parse_header
    const float *x = (const float *)(c->p + c->off);
    c->off += 4 * n;
    GQ_TRY(gq_check_finite(x, n, c->name, what));
    *out = x;
    return GQ_OK;
}

// Next Q8_0 tensor of n elements (int8 values, then one f32 scale per group),
// dequantized into an owned buffer.
static enum gq_status take_q8(struct cursor *c, size_t n, const char *what, const float **out) {
    size_t ns = n / c->gs;
    GQ_ASSERT(n <= c->size - c->off && ns * 4 <= c->size - c->off - n);
    const signed char *q = (const signed char *)(c->p + c->off);
    const unsigned char *s = c->p + c->off + n;
    c->off += n + 4 * ns;
    float *y = malloc((n ? n : 1) * sizeof *y);
    GQ_TRY(gq_model_own(c->m, y));
    for (size_t g = 0; g < ns; g++) {
        float sc;
        memcpy(&sc, s + 4 * g, 4);
        if (!isfinite(sc))
            return gq_fail(GQ_ERR_NUMERIC, "%s: tensor '%s' has a non-finite scale in group %zu", c->name, what, g);
        for (size_t i = g * c->gs; i < (g + 1) * c->gs; i++) y[i] = (float)q[i] * sc;
    }
    *out = y;
    return GQ_OK;
}

enum gq_status gq_llama2c_build(const void *data, size_t size, const char *name, struct gq_model *m) {
    struct gq_llama2c_layout L;
    GQ_TRY(gq_llama2c_parse_header(data, size, name, &L));
    if ((uintptr_t)data % 4 != 0) return gq_fail(GQ_ERR_ARG, "%s: buffer not 4-byte aligned", name);
    struct gq_hparams *hp = &m->hp;
    hp->n_vocab = L.n_vocab;
    hp->dim = L.dim;
    hp->n_layers = L.n_layers;
    hp->n_heads = L.n_heads;
    hp->n_kv_heads = L.n_kv_heads;
    hp->head_dim = L.dim / L.n_heads;
    hp->hidden_dim = L.hidden_dim;
    hp->ctx_len = L.seq_len;
    hp->rope_dim = hp->head_dim;
    hp->rms_eps = 1e-5f;
    hp->rope_theta = 10000.0f;
    hp->rope_interleaved = true; // run.c rotates pairs (2i, 2i+1)
    hp->rope_scaling = GQ_ROPE_SCALING_NONE;
    free(m->layers);
    m->layers = calloc((size_t)L.n_layers, sizeof *m->layers);
    if (!m->layers) return gq_fail(GQ_ERR_NOMEM, "out of memory");

    struct cursor c = {data, L.header_size, size, name, m, (size_t)L.group_size};
    size_t dim = (size_t)L.dim, hid = (size_t)L.hidden_dim, nl = (size_t)L.n_layers, V = (size_t)L.n_vocab,
           kv = (size_t)L.n_kv_heads * (size_t)hp->head_dim;
    char what[64];
#define PER_LAYER(field, n, label, take)                        \
    for (size_t l = 0; l < nl; l++) {                           \
        snprintf(what, sizeof what, "%s[%zu]", label, l);       \
        GQ_TRY(take(&c, (n), what, &m->layers[l].field));       \
    }
    if (L.version == 0) {
        GQ_TRY(take_f32(&c, V * dim, "token_embedding", &m->tok_embd));
        PER_LAYER(attn_norm, dim, "rms_att", take_f32);
        PER_LAYER(wq, dim * dim, "wq", take_f32);
        PER_LAYER(wk, kv * dim, "wk", take_f32);
        PER_LAYER(wv, kv * dim, "wv", take_f32);
        PER_LAYER(wo, dim * dim, "wo", take_f32);
        PER_LAYER(ffn_norm, dim, "rms_ffn", take_f32);
        PER_LAYER(w_gate, hid * dim, "w1", take_f32);
        PER_LAYER(w_down, dim * hid, "w2", take_f32);
        PER_LAYER(w_up, hid * dim, "w3", take_f32);
        GQ_TRY(take_f32(&c, dim, "rms_final", &m->output_norm));
        c.off += (size_t)L.seq_len * (size_t)hp->head_dim * 4; // freq_cis: RoPE is recomputed
        if (!L.shared_classifier) GQ_TRY(take_f32(&c, V * dim, "wcls", &m->output));
    } else {
        PER_LAYER(attn_norm, dim, "rms_att", take_f32);
        PER_LAYER(ffn_norm, dim, "rms_ffn", take_f32);
        GQ_TRY(take_f32(&c, dim, "rms_final", &m->output_norm));
        // v1: f32 weights; v2: Q8_0-style groups (dequantized on load). Same order.
        enum gq_status (*take)(struct cursor *, size_t, const char *, const float **) =
            L.version == 1 ? take_f32 : take_q8;
        GQ_TRY(take(&c, V * dim, "token_embedding", &m->tok_embd));
        PER_LAYER(wq, dim * dim, "wq", take);
        PER_LAYER(wk, kv * dim, "wk", take);
        PER_LAYER(wv, kv * dim, "wv", take);
        PER_LAYER(wo, dim * dim, "wo", take);
        PER_LAYER(w_gate, hid * dim, "w1", take);
        PER_LAYER(w_down, dim * hid, "w2", take);
        PER_LAYER(w_up, hid * dim, "w3", take);
        if (!L.shared_classifier) GQ_TRY(take(&c, V * dim, "wcls", &m->output));
    }
#undef PER_LAYER
    GQ_ASSERT(c.off == size);
    if (L.shared_classifier) m->output = m->tok_embd;
    return GQ_OK;
}

static void unmap_free(void *p) {
    gq_unmap_file(p);
    free(p);
}

static bool is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

enum gq_status gq_load_llama2c(const char *path, const char *tokenizer_path, struct gq_model *m) {
    struct gq_mapped_file *f = calloc(1, sizeof *f);
    if (!f) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    enum gq_status s = gq_map_file(path, f);
    if (s != GQ_OK) {
        free(f);
        return s;
    }
    m->source = f;
    m->source_free = unmap_free;
    if (!(m->source_format = strdup("llama2c")) || !(m->arch = strdup("llama")))
        return gq_fail(GQ_ERR_NOMEM, "out of memory");
    // mmap returns page-aligned memory, and every f32 array starts at a
    // multiple of 4 bytes (28-byte or 256-byte header), so weights are borrowed.
    GQ_TRY(gq_llama2c_build(f->data, f->size, path, m));

    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    size_t blen = strlen(base);
    if (blen > 4 && strcmp(base + blen - 4, ".bin") == 0) blen -= 4;
    if (!(m->name = strndup(base, blen))) return gq_fail(GQ_ERR_NOMEM, "out of memory");

    char found[4096];
    if (!tokenizer_path) {
        int dlen = slash ? (int)(slash - path) : 1;
        const char *dir = slash ? path : ".";
        snprintf(found, sizeof found, "%.*s/tokenizer.bin", dlen, dir);
        if (!is_file(found)) {
            char alt[4096];
            snprintf(alt, sizeof alt, "%.*s/tok%d.bin", dlen, dir, m->hp.n_vocab);
            if (!is_file(alt))
                return gq_fail(GQ_ERR_IO, "%s: no tokenizer given, and neither %s nor %s exists (pass the tokenizer path)",
                               path, found, alt);
            memcpy(found, alt, sizeof found);
        }
        tokenizer_path = found;
    }
    GQ_TRY(gq_tokenizer_from_llama2c(tokenizer_path, m->hp.n_vocab, &m->tok));
    gq_tokenizer_set_special(m->tok, 1, 2, 1); // run.c: BOS=1, EOS=2, BOS prepended
    return gq_model_finish(m, path);
}
