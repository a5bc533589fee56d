// test_readers - llama2.c checkpoints and Hugging Face (safetensors) model
// directories against the same model in GGUF (stories260K), plus hostile files.
//
// References: the GGUF file (read through gq_gguf, whose own tests compare it
// with gguf-py), the HF fixture directories written by the `safetensors`
// package in tests/reference/make_hf_dir.py (run tests/setup_fixtures.sh or
// `.venv/bin/python tests/reference/make_hf_dir.py`), and llama2.c's
// export.py layouts. Fixtures missing -> the HF part is skipped (exit 77 if
// everything else passed).
#include "gptvq.h"
#include "test.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "model/llama2c.h"
#include "model/model.h"
#include "model/tokenizer.h"

#include <stdint.h>
#include <sys/stat.h>

static char g_tmp[256];

static const char *dpath(const char *rel) {
    static char p[4][1024];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", data_dir(), rel);
    return p[k];
}

static const char *tpath(const char *name) {
    static char p[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", g_tmp, name);
    return p[k];
}


static void write_all(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
    fwrite(data, 1, n, f);
    fclose(f);
}

// The status is an error and the message is one line naming the path.
static void check_rejects(enum gq_status s, const char *path, const char *what) {
    const char *msg = gq_last_error();
    CHECKF(s != GQ_OK, "%s: accepted", what);
    if (s == GQ_OK) return;
    CHECKF(strstr(msg, path) != NULL, "%s: message does not name %s: %s", what, path, msg);
    CHECKF(strchr(msg, '\n') == NULL, "%s: message is not one line: %s", what, msg);
    fprintf(stderr, "  ok (%s): %s\n", what, msg);
}

static const float *gguf_w(const struct gq_gguf *g, const char *fmt, int l, size_t *n) {
    char name[128];
    snprintf(name, sizeof name, fmt, l);
    const struct gq_gguf_tensor *t = gq_gguf_find_tensor(g, name);
    if (!t || t->type != GQ_TYPE_F32) {
        fprintf(stderr, "FAIL: GGUF tensor %s missing or not F32\n", name);
        exit(1);
    }
    *n = (size_t)gq_gguf_tensor_nelements(t);
    return t->data;
}

// ---------------------------------------------------------------------------
// llama2.c

struct wmap {
    const char *gguf; // printf format with the layer number
    size_t off;       // offsetof(struct gq_layer_w, field)
};
static const struct wmap k_layer_w[] = {
    {"blk.%d.attn_norm.weight", offsetof(struct gq_layer_w, attn_norm)},
    {"blk.%d.attn_q.weight", offsetof(struct gq_layer_w, wq)},
    {"blk.%d.attn_k.weight", offsetof(struct gq_layer_w, wk)},
    {"blk.%d.attn_v.weight", offsetof(struct gq_layer_w, wv)},
    {"blk.%d.attn_output.weight", offsetof(struct gq_layer_w, wo)},
    {"blk.%d.ffn_norm.weight", offsetof(struct gq_layer_w, ffn_norm)},
    {"blk.%d.ffn_gate.weight", offsetof(struct gq_layer_w, w_gate)},
    {"blk.%d.ffn_up.weight", offsetof(struct gq_layer_w, w_up)},
    {"blk.%d.ffn_down.weight", offsetof(struct gq_layer_w, w_down)},
};
#define LW(L, k) (*(const float *const *)((const char *)(L) + k_layer_w[k].off))

// max |model - gguf| relative to the per-tensor tolerance: tol(x) = abs + rel*|x|.
static void compare_all(const struct gq_model *m, const struct gq_gguf *g, const char *label, double rel, double abs_,
                        bool skip_qk) {
    size_t n;
    int bad = 0;
    double worst = 0;
    const float *ref;
#define CMP(got, refp, count, nm)                                                              \
    for (size_t i = 0; i < (count); i++) {                                                     \
        double d = fabs((double)(got)[i] - (double)(refp)[i]), tol = abs_ + rel * fabs((refp)[i]); \
        if (d > worst) worst = d;                                                              \
        if (!(d <= tol) && bad++ < 3) fprintf(stderr, "  %s %s[%zu]: %g vs %g\n", label, nm, i, (got)[i], (refp)[i]); \
    }
    ref = gguf_w(g, "token_embd.weight", 0, &n);
    CMP(m->tok_embd, ref, n, "token_embd");
    ref = gguf_w(g, "output_norm.weight", 0, &n);
    CMP(m->output_norm, ref, n, "output_norm");
    CHECKF(m->output == m->tok_embd, "%s: classifier not shared", label);
    for (int l = 0; l < m->hp.n_layers; l++)
        for (size_t k = 0; k < sizeof k_layer_w / sizeof k_layer_w[0]; k++) {
            if (skip_qk && (k == 1 || k == 2)) continue;
            ref = gguf_w(g, k_layer_w[k].gguf, l, &n);
            CMP(LW(&m->layers[l], k), ref, n, k_layer_w[k].gguf);
        }
#undef CMP
    CHECKF(bad == 0, "%s: %d weights differ from the GGUF", label, bad);
    fprintf(stderr, "%s: weights vs GGUF max |diff| %.3g\n", label, worst);
}

static void check_hparams(const struct gq_model *m, const struct gq_model *ref, const char *label) {
    const struct gq_hparams *a = &m->hp, *b = &ref->hp;
    CHECKF(a->n_vocab == b->n_vocab && a->dim == b->dim && a->n_layers == b->n_layers && a->n_heads == b->n_heads &&
               a->n_kv_heads == b->n_kv_heads && a->head_dim == b->head_dim && a->hidden_dim == b->hidden_dim &&
               a->rope_dim == b->rope_dim && a->rms_eps == b->rms_eps && a->rope_theta == b->rope_theta,
           "%s: hparams differ from the GGUF's", label);
}

// Writes stories260K as llama2.c export.py v1 (f32) or v2 (Q8_0, group gs)
// from the GGUF tensors; *qmax receives the largest half-step of the scales.
static void write_v12(const struct gq_gguf *g, int version, int gs, const char *path, double *qmax) {
    FILE *f = fopen(path, "wb");
    unsigned char hdr[256] = {0};
    uint32_t magic = GQ_LLAMA2C_MAGIC;
    int32_t h[9] = {(int32_t)version, 64, 172, 5, 8, 4, 512, 512, 0};
    memcpy(hdr, &magic, 4);
    memcpy(hdr + 4, h, 8 * 4);
    hdr[36] = 1; // shared classifier
    memcpy(hdr + 37, &gs, 4);
    fwrite(hdr, 1, 256, f);
    size_t n;
    const float *w;
    for (int l = 0; l < 5; l++) w = gguf_w(g, "blk.%d.attn_norm.weight", l, &n), fwrite(w, 4, n, f);
    for (int l = 0; l < 5; l++) w = gguf_w(g, "blk.%d.ffn_norm.weight", l, &n), fwrite(w, 4, n, f);
    w = gguf_w(g, "output_norm.weight", 0, &n), fwrite(w, 4, n, f);
    static const char *mats[] = {"token_embd.weight", "blk.%d.attn_q.weight", "blk.%d.attn_k.weight",
                                 "blk.%d.attn_v.weight", "blk.%d.attn_output.weight", "blk.%d.ffn_gate.weight",
                                 "blk.%d.ffn_down.weight", "blk.%d.ffn_up.weight"};
    *qmax = 0;
    for (int k = 0; k < 8; k++)
        for (int l = 0; l < (k ? 5 : 1); l++) {
            w = gguf_w(g, mats[k], l, &n);
            if (version == 1) {
                fwrite(w, 4, n, f);
                continue;
            }
            // export.py quantize_q80: scale = max|w| / 127 per group, q = round(w / scale).
            signed char *q = malloc(n);
            float *s = malloc(n / (size_t)gs * sizeof *s);
            for (size_t gi = 0; gi < n / (size_t)gs; gi++) {
                float mx = 0;
                for (int i = 0; i < gs; i++) mx = fmaxf(mx, fabsf(w[gi * gs + i]));
                s[gi] = mx / 127.0f;
                if (s[gi] / 2 > *qmax) *qmax = s[gi] / 2;
                for (int i = 0; i < gs; i++) q[gi * gs + i] = (signed char)lrintf(s[gi] ? w[gi * gs + i] / s[gi] : 0);
            }
            fwrite(q, 1, n, f);
            fwrite(s, 4, n / (size_t)gs, f);
            free(q);
            free(s);
        }
    fclose(f);
}

static void test_llama2c(const struct gq_gguf *g, const struct gq_model *gm) {
    const char *bin = dpath("models/stories260K/stories260K.bin"), *tok = dpath("models/stories260K/tok512.bin");
    struct gq_model *m = NULL;
    CHECK_OK(gq_model_load(bin, NULL, &m)); // tokenizer found beside it (tok512.bin)
    if (!m) return;
    // Published hparams (llama2.c doc/stories260K.md, shared/data/README.md).
    const struct gq_hparams *hp = &m->hp;
    CHECKF(hp->dim == 64 && hp->hidden_dim == 172 && hp->n_layers == 5 && hp->n_heads == 8 && hp->n_kv_heads == 4 &&
               hp->n_vocab == 512 && hp->ctx_len == 512 && hp->head_dim == 8,
           "llama2.c hparams %d %d %d %d %d %d %d", hp->dim, hp->hidden_dim, hp->n_layers, hp->n_heads,
           hp->n_kv_heads, hp->n_vocab, hp->ctx_len);
    CHECK(hp->rope_interleaved && gm->hp.rope_interleaved);
    check_hparams(m, gm, "llama2.c");
    CHECK(strcmp(m->source_format, "llama2c") == 0 && strcmp(m->arch, "llama") == 0);
    CHECK(gq_tokenizer_bos(m->tok) == 1 && gq_tokenizer_eos(m->tok) == 2 && gq_tokenizer_add_bos(m->tok));
    CHECK(strcmp(gq_tokenizer_kind(m->tok), "llama2c") == 0);
    compare_all(m, g, "llama2.c v0", 0, 0, false); // bit-exact
    gq_model_free(m);

    // v1 (f32) and v2 (Q8_0) exports of the same weights.
    double qmax;
    write_v12(g, 1, 0, tpath("v1.bin"), &qmax);
    m = NULL;
    struct gq_load_params lp = {.tokenizer_path = tok};
    CHECK_OK(gq_model_load(tpath("v1.bin"), &lp, &m));
    if (m) compare_all(m, g, "llama2.c v1", 0, 0, false), gq_model_free(m);
    write_v12(g, 2, 64, tpath("v2.bin"), &qmax);
    m = NULL;
    CHECK_OK(gq_model_load(tpath("v2.bin"), &lp, &m));
    // Dequantized q*s is within half a step of w (plus float rounding).
    if (m) compare_all(m, g, "llama2.c v2 (Q8_0)", 1e-6, qmax * 1.001, false), gq_model_free(m);

    // No tokenizer beside a checkpoint in a directory without one.
    size_t n;
    unsigned char *raw = test_read_file(bin, &n);
    write_all(tpath("alone.bin"), raw, n);
    m = NULL;
    check_rejects(gq_model_load(tpath("alone.bin"), NULL, &m), tpath("alone.bin"), "no tokenizer");
    gq_model_free(m);

    // Hostile variants of the real checkpoint.
    const char *p = tpath("bad.bin");
    static const size_t cuts[] = {0, 3, 27, 28, 1000, 4096, 1056540 - 4, 1056540 - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        write_all(p, raw, cuts[i] < n ? cuts[i] : n);
        char what[64];
        snprintf(what, sizeof what, "truncated to %zu bytes", cuts[i]);
        m = NULL;
        check_rejects(gq_model_load(p, &lp, &m), p, what);
        gq_model_free(m);
    }
    unsigned char *ext = malloc(n + 4);
    memcpy(ext, raw, n);
    memset(ext + n, 0, 4);
    write_all(p, ext, n + 4);
    m = NULL;
    check_rejects(gq_model_load(p, &lp, &m), p, "4 trailing bytes");
    gq_model_free(m);
    free(ext);
    static const struct {
        int field;
        int32_t value;
        const char *what;
    } edits[] = {
        {0, 0, "dim 0"},           {0, -64, "dim -64"},          {0, 0x7fffffff, "dim INT32_MAX"},
        {1, 171, "hidden 171"},    {1, 0x40000000, "hidden 2^30"}, {2, 0, "0 layers"},
        {2, 6, "6 layers"},        {2, 100000, "100000 layers"},   {3, 7, "7 heads (64 % 7)"},
        {3, 0, "0 heads"},         {4, 3, "3 kv heads (8 % 3)"}, {4, -4, "-4 kv heads"},
        {5, 513, "vocab 513"},     {5, INT32_MIN, "vocab INT32_MIN"}, {5, -512, "unshared vocab, no wcls"},
        {5, 1 << 30, "vocab 2^30"}, {6, 511, "seq_len 511"},      {6, -1, "seq_len -1"},
        {3, 64, "64 heads (odd head size 1)"},
    };
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        unsigned char *b = malloc(n);
        memcpy(b, raw, n);
        memcpy(b + 4 * edits[i].field, &edits[i].value, 4);
        write_all(p, b, n);
        free(b);
        m = NULL;
        check_rejects(gq_model_load(p, &lp, &m), p, edits[i].what);
        gq_model_free(m);
    }
    // Every field huge at once (overflow paths).
    unsigned char big[64];
    for (int i = 0; i < 7; i++) {
        int32_t v = 0x7ffffff0;
        memcpy(big + 4 * i, &v, 4);
    }
    write_all(p, big, 28);
    m = NULL;
    check_rejects(gq_model_load(p, &lp, &m), p, "all fields huge");
    gq_model_free(m);
    // v1/v2 header problems: unknown version, bad flag, bad group size, truncated header.
    unsigned char *v2 = test_read_file(tpath("v2.bin"), &n);
    struct {
        size_t off;
        int32_t v;
        int len;
        const char *what;
    } vedits[] = {
        {4, 3, 4, "version 3"}, {4, 0, 4, "version 0 with magic"}, {36, 7, 1, "shared flag 7"},
        {37, 48, 4, "group 48 (64 % 48)"}, {37, 0, 4, "group 0"}, {37, 32, 4, "group 32 (size mismatch)"},
    };
    for (size_t i = 0; i < sizeof vedits / sizeof vedits[0]; i++) {
        unsigned char *b = malloc(n);
        memcpy(b, v2, n);
        memcpy(b + vedits[i].off, &vedits[i].v, (size_t)vedits[i].len);
        write_all(p, b, n);
        free(b);
        m = NULL;
        check_rejects(gq_model_load(p, &lp, &m), p, vedits[i].what);
        gq_model_free(m);
    }
    write_all(p, v2, 200);
    m = NULL;
    check_rejects(gq_model_load(p, &lp, &m), p, "v2 header cut at 200 bytes");
    gq_model_free(m);
    // A NaN weight.
    unsigned char *b = malloc(n);
    memcpy(b, v2, n);
    free(v2);
    free(b);
    b = malloc(1056540);
    memcpy(b, raw, 1056540);
    float nan = NAN;
    memcpy(b + 28 + 4 * 1000, &nan, 4);
    write_all(p, b, 1056540);
    m = NULL;
    enum gq_status s = gq_model_load(p, &lp, &m);
    check_rejects(s, p, "NaN in the token embedding");
    CHECK(s == GQ_ERR_NUMERIC);
    gq_model_free(m);
    free(b);
    free(raw);
}

// ---------------------------------------------------------------------------
// safetensors: hostile headers

static void write_st(const char *path, const char *json, const void *data, size_t n) {
    size_t hl = strlen(json);
    unsigned char *b = malloc(8 + hl + n + 1);
    uint64_t h = hl;
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(h >> (8 * i));
    memcpy(b + 8, json, hl);
    if (n) memcpy(b + 8 + hl, data, n);
    write_all(path, b, 8 + hl + n);
    free(b);
}

static void test_safetensors_hostile(void) {
    const char *p = tpath("bad.safetensors");
    unsigned char data[64] = {0};
    static const struct {
        const char *json;
        size_t n_data;
        const char *what;
    } cases[] = {
        {"not json at all", 8, "non-JSON header"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}", 8, "unterminated JSON"},
        {"[1, 2]", 8, "array header"},
        {"{} trailing", 0, "garbage after the JSON"},
        {"{\"a\": 5}", 0, "entry not an object"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}", 8, "offsets past end"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 0]}}", 8, "begin > end"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}, "
         "\"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}", 12, "overlapping tensors"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}, "
         "\"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 12]}}", 12, "hole between tensors"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}", 12, "unclaimed trailing data"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}", 8, "size != shape x dtype"},
        {"{\"a\": {\"dtype\": \"BF16\", \"shape\": [2, 2], \"data_offsets\": [0, 4]}}", 4, "bf16 size mismatch"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 8]}}", 8, "negative shape"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 8]}}", 8, "fractional shape"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 4294967296], \"data_offsets\": [0, 8]}}", 8,
         "huge shape (overflow)"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,1,1,1,1,1], \"data_offsets\": [0, 4]}}", 4, "9 dims"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0]}}", 8, "one offset"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, -8]}}", 8, "negative offset"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 1e300]}}", 8, "absurd offset"},
        {"{\"a\": {\"dtype\": 4, \"shape\": [2], \"data_offsets\": [0, 8]}}", 8, "dtype not a string"},
        {"{\"a\": {\"shape\": [2], \"data_offsets\": [0, 8]}}", 8, "no dtype"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}, "
         "\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 16]}}", 16, "duplicate name"},
        {"{\"__metadata__\": {\"format\": 1}}", 0, "non-string metadata"},
        {"{\"__metadata__\": [1]}", 0, "metadata not an object"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_st(p, cases[i].json, data, cases[i].n_data);
        struct gq_st_file *f = NULL;
        check_rejects(gq_st_open(p, &f), p, cases[i].what);
        gq_st_close(f);
    }
    // Header length past the end; huge header length; file shorter than 8 bytes.
    unsigned char raw[16] = {0xe8, 0x03, 0, 0, 0, 0, 0, 0, '{', '}'};
    write_all(p, raw, 10);
    struct gq_st_file *f = NULL;
    check_rejects(gq_st_open(p, &f), p, "header length 1000 past the end");
    memset(raw, 0xff, 8);
    write_all(p, raw, 16);
    check_rejects(gq_st_open(p, &f), p, "header length 2^64-1");
    write_all(p, raw, 5);
    check_rejects(gq_st_open(p, &f), p, "5-byte file");

    // Valid: BF16/F16/F64 conversion, metadata, space padding, unknown and
    // integer dtypes parse but refuse conversion.
    const char *ok = "{\"__metadata__\": {\"format\": \"pt\"}, "
                     "\"w\": {\"dtype\": \"BF16\", \"shape\": [2, 2], \"data_offsets\": [0, 8]}, "
                     "\"h\": {\"dtype\": \"F16\", \"shape\": [2], \"data_offsets\": [8, 12]}, "
                     "\"d\": {\"dtype\": \"F64\", \"shape\": [], \"data_offsets\": [12, 20]}, "
                     "\"i\": {\"dtype\": \"I64\", \"shape\": [1], \"data_offsets\": [20, 28]}, "
                     "\"e\": {\"dtype\": \"F32\", \"shape\": [0, 3], \"data_offsets\": [28, 28]}, "
                     "\"u\": {\"dtype\": \"F4\", \"shape\": [3], \"data_offsets\": [28, 30]}}    ";
    unsigned char vd[30] = {0};
    uint16_t bf[4] = {0x3f80, 0xbf80, 0x4000, 0x0000}, hf[2] = {0x3c00, 0xc000}; // 1 -1 2 0 | 1 -2
    double dv = -0.25;
    memcpy(vd, bf, 8);
    memcpy(vd + 8, hf, 4);
    memcpy(vd + 12, &dv, 8);
    write_st(p, ok, vd, sizeof vd);
    CHECK_OK(gq_st_open(p, &f));
    if (f) {
        CHECK(f->n_tensors == 6 && gq_st_meta(f, "format") && strcmp(gq_st_meta(f, "format"), "pt") == 0);
        float *y = NULL;
        const struct gq_st_tensor *t = gq_st_find(f, "w");
        CHECK(t && t->n_dims == 2 && t->numel == 4);
        if (t) {
            CHECK_OK(gq_st_to_f32(f, t, &y));
            CHECK(y && y[0] == 1 && y[1] == -1 && y[2] == 2 && y[3] == 0);
            free(y);
        }
        if ((t = gq_st_find(f, "h"))) {
            CHECK_OK(gq_st_to_f32(f, t, &y));
            CHECK(y && y[0] == 1 && y[1] == -2);
            free(y);
        }
        if ((t = gq_st_find(f, "d"))) {
            CHECK(t->n_dims == 0 && t->numel == 1);
            CHECK_OK(gq_st_to_f32(f, t, &y));
            CHECK(y && y[0] == -0.25f);
            free(y);
        }
        CHECK(gq_st_find(f, "e") && gq_st_find(f, "e")->numel == 0);
        CHECK(gq_st_find(f, "nope") == NULL);
        y = NULL;
        if ((t = gq_st_find(f, "i"))) check_rejects(gq_st_to_f32(f, t, &y), p, "I64 to f32");
        if ((t = gq_st_find(f, "u"))) check_rejects(gq_st_to_f32(f, t, &y), p, "unknown dtype to f32");
        CHECK(y == NULL);
        gq_st_close(f);
    }
    CHECKF(gq_st_open(tpath("does-not-exist.safetensors"), &f) == GQ_ERR_IO, "missing file");
}

// ---------------------------------------------------------------------------
// Hugging Face directories

static int32_t *sample_tokens(const struct gq_tokenizer *tok, int n) {
    size_t len;
    char *text = (char *)test_read_file(dpath("tinystories/tinystories_sample.txt"), &len);
    if (!text) return NULL;
    text[len] = 0;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    CHECK_OK(gq_tokenize(tok, text, len, true, false, &ids, &n_ids));
    free(text);
    if (n_ids < (size_t)n) {
        free(ids);
        return NULL;
    }
    return ids;
}

static float *run_logits(const struct gq_model *m, const int32_t *toks, int n) {
    struct gq_context *c = NULL;
    float *lg = malloc((size_t)n * (size_t)m->hp.n_vocab * sizeof *lg);
    CHECK_OK(gq_context_new(m, n, &c));
    if (c) CHECK_OK(gq_forward(c, toks, n, lg, true));
    gq_context_free(c);
    return lg;
}

static void test_hf_dir(const char *dir, bool f16, const struct gq_gguf *g, const struct gq_model *gm) {
    struct gq_model *m = NULL;
    CHECK_OK(gq_model_load(dir, NULL, &m));
    if (!m) return;
    check_hparams(m, gm, dir);
    CHECK(!m->hp.rope_interleaved && m->hp.ctx_len == gm->hp.ctx_len);
    CHECK(strcmp(m->source_format, "safetensors") == 0 && strcmp(m->arch, "llama") == 0);
    CHECK(m->output == m->tok_embd);
    CHECK(gq_tokenizer_bos(m->tok) == 1 && gq_tokenizer_eos(m->tok) == 2 && gq_tokenizer_add_bos(m->tok));
    // f16: |x - f16(x)| <= 2^-11 |x| for normals, 2^-25 for subnormals.
    compare_all(m, g, dir, f16 ? 0x1p-11 : 0, f16 ? 0x1p-25 : 0, true);

    // q/k: HF row h*hd + j*hd/2 + i is GGUF row h*hd + 2i + j (inverse of
    // convert_hf_to_gguf.py's permute).
    int hd = m->hp.head_dim, dim = m->hp.dim, bad = 0;
    for (int l = 0; l < m->hp.n_layers; l++)
        for (int which = 0; which < 2; which++) {
            size_t n;
            const float *ref = gguf_w(g, which ? "blk.%d.attn_k.weight" : "blk.%d.attn_q.weight", l, &n);
            const float *got = which ? m->layers[l].wk : m->layers[l].wq;
            int nh = which ? m->hp.n_kv_heads : m->hp.n_heads;
            for (int h = 0; h < nh; h++)
                for (int j = 0; j < 2; j++)
                    for (int i = 0; i < hd / 2; i++)
                        for (int c = 0; c < dim; c++) {
                            float a = got[(size_t)(h * hd + j * hd / 2 + i) * dim + c];
                            float b = ref[(size_t)(h * hd + 2 * i + j) * dim + c];
                            double tol = f16 ? fmax(0x1p-11 * fabs(b), 0x1p-25) : 0;
                            if (!(fabs((double)a - b) <= tol)) bad++;
                        }
        }
    CHECKF(bad == 0, "%s: %d q/k weights differ from the permuted GGUF ones", dir, bad);

    // Same tokenizer output as the GGUF's, and the same logits: HF rotate-half
    // RoPE on unpermuted q/k == GGUF interleaved RoPE on permuted q/k.
    const int T = 32;
    int32_t *ids = sample_tokens(gm->tok, T), *ids2 = sample_tokens(m->tok, T);
    CHECK(ids && ids2 && memcmp(ids, ids2, T * sizeof *ids) == 0);
    if (ids) {
        float *a = run_logits(gm, ids, T), *b = run_logits(m, ids, T);
        size_t nl = (size_t)T * (size_t)m->hp.n_vocab;
        double mx = 0;
        for (size_t i = 0; i < nl; i++) mx = fmax(mx, fabs(a[i]));
        double d = max_abs_diff(a, b, nl), tol = (f16 ? 5e-2 : 1e-4) * mx;
        CHECKF(d <= tol, "%s: logits differ from the GGUF's by %g (tolerance %g)", dir, d, tol);
        fprintf(stderr, "%s: %d-token logits vs GGUF: max |diff| %.3g = %.2g x max|logit| (%.3g)\n", dir, T, d,
                d / mx, mx);
        free(a);
        free(b);
    }
    free(ids);
    free(ids2);
    gq_model_free(m);
}

static void copy_file(const char *from, const char *to) {
    size_t n;
    unsigned char *b = test_read_file(from, &n);
    if (!b) {
        fprintf(stderr, "cannot read %s\n", from);
        exit(1);
    }
    write_all(to, b, n);
    free(b);
}

// Broken HF directories built from the f32 fixture.
static void test_hf_hostile(const char *fix) {
    char src[1024], d[512], f[1024];
    snprintf(d, sizeof d, "%s/hfbad", g_tmp);
    mkdir(d, 0755);
    const char *files[] = {"tokenizer.json", "tokenizer_config.json", "model.safetensors"};
    for (int i = 0; i < 3; i++) {
        snprintf(src, sizeof src, "%s/%s", fix, files[i]);
        snprintf(f, sizeof f, "%s/%s", d, files[i]);
        copy_file(src, f);
    }
    snprintf(src, sizeof src, "%s/config.json", fix);
    size_t n;
    char *cfg = (char *)test_read_file(src, &n);
    cfg[n] = 0;
    struct {
        const char *from, *to, *what;
    } edits[] = {
        {"\"intermediate_size\": 172", "\"intermediate_size\": 171", "ffn size != tensor shape"},
        {"\"num_key_value_heads\": 4", "\"num_key_value_heads\": 3", "8 heads % 3 kv heads"},
        {"\"vocab_size\": 512", "\"vocab_size\": 500", "vocab != embedding rows"},
        {"\"model_type\": \"llama\"", "\"model_type\": \"gpt2\"", "unsupported model_type"},
        {"\"rope_scaling\": null", "\"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4}", "yarn rope scaling"},
        {"\"num_hidden_layers\": 5", "\"num_hidden_layers\": 6", "layer 5 missing"},
        {"\"hidden_size\": 64", "\"hidden_size\": -64", "negative hidden_size"},
        {"\"attention_bias\": false", "\"attention_bias\": true", "biases required but absent"},
        {"{", "[", "config not an object"},
    };
    snprintf(f, sizeof f, "%s/config.json", d);
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        char *at = strstr(cfg, edits[i].from);
        CHECKF(at != NULL, "fixture config.json lacks %s", edits[i].from);
        if (!at) continue;
        FILE *fp = fopen(f, "w");
        fprintf(fp, "%.*s%s%s", (int)(at - cfg), cfg, edits[i].to, at + strlen(edits[i].from));
        fclose(fp);
        struct gq_model *m = NULL;
        check_rejects(gq_model_load(d, NULL, &m), d, edits[i].what);
        gq_model_free(m);
    }
    write_all(f, cfg, n);
    struct gq_model *m = NULL;
    CHECK_OK(gq_model_load(d, NULL, &m)); // the unedited copy loads
    gq_model_free(m);

    // Sharded: an index naming a missing shard, and one naming a shard outside the directory.
    snprintf(f, sizeof f, "%s/model.safetensors", d);
    remove(f);
    snprintf(f, sizeof f, "%s/model.safetensors.index.json", d);
    const char *idx = "{\"weight_map\": {\"model.embed_tokens.weight\": \"model-00001-of-00002.safetensors\"}}";
    write_all(f, idx, strlen(idx));
    m = NULL;
    char shard[1024];
    snprintf(shard, sizeof shard, "%s/model-00001-of-00002.safetensors", d);
    check_rejects(gq_model_load(d, NULL, &m), shard, "missing shard");
    gq_model_free(m);
    const char *esc = "{\"weight_map\": {\"model.embed_tokens.weight\": \"../x.safetensors\"}}";
    write_all(f, esc, strlen(esc));
    m = NULL;
    check_rejects(gq_model_load(d, NULL, &m), d, "shard path leaving the directory");
    gq_model_free(m);
    remove(f);
    m = NULL;
    check_rejects(gq_model_load(d, NULL, &m), d, "no weights at all");
    gq_model_free(m);
    free(cfg);
}

int main(void) {
    snprintf(g_tmp, sizeof g_tmp, "/tmp/gq_test_readers_XXXXXX");
    if (!mkdtemp(g_tmp)) {
        perror("mkdtemp");
        return 1;
    }
    const char *gguf = dpath("models/stories260K/stories260K.gguf");
    if (!file_exists(gguf)) SKIP("%s missing (set GQ_DATA)", gguf);
    struct gq_gguf *g = NULL;
    struct gq_model *gm = NULL;
    CHECK_OK(gq_gguf_open(gguf, &g));
    CHECK_OK(gq_model_load(gguf, NULL, &gm));
    if (!g || !gm) return test_done("test_readers");

    test_llama2c(g, gm);
    test_safetensors_hostile();

    const char *fix = getenv("GQ_FIXTURES") ? getenv("GQ_FIXTURES") : "build/fixtures";
    char f32[512], f16[512], probe[600];
    snprintf(f32, sizeof f32, "%s/stories260K-hf-f32", fix);
    snprintf(f16, sizeof f16, "%s/stories260K-hf-f16-sharded", fix);
    snprintf(probe, sizeof probe, "%s/config.json", f32);
    bool have = file_exists(probe);
    snprintf(probe, sizeof probe, "%s/config.json", f16);
    have = have && file_exists(probe);
    if (have) {
        test_hf_dir(f32, false, g, gm);
        test_hf_dir(f16, true, g, gm);
        test_hf_hostile(f32);
    }
    gq_model_free(gm);
    gq_gguf_close(g);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_tmp);
    int rc = test_done("test_readers");
    if (rc == 0 && !have)
        SKIP("HF parts skipped: %s/stories260K-hf-{f32,f16-sharded} missing "
             "(run tests/setup_fixtures.sh or .venv/bin/python tests/reference/make_hf_dir.py)", fix);
    return rc;
}
