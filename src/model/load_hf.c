// load_hf.c - builds a gq_model from a Hugging Face model directory:
// config.json, model.safetensors or model.safetensors.index.json + shards,
// tokenizer.json (+ tokenizer_config.json / generation_config.json).
//
// HF Llama/Qwen2 checkpoints keep q/k in the layout of rotate-half RoPE (the
// GGUF converter permutes them for interleaved RoPE), so the model is marked
// rope_interleaved = false and the weights are used as they are.
#include "model/model.h"
#include "model/arch.h"
#include "model/tokenizer.h"
#include "io/safetensors.h"
#include "io/gguf_write.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <sys/stat.h>

struct hf_source {
    struct gq_st_file **shards;
    char **shard_names; // file names as listed in the index (or "model.safetensors")
    size_t n;
    cJSON *weight_map; // owned index root (NULL for a single file)
};

static void hf_source_free(void *p) {
    struct hf_source *s = p;
    if (!s) return;
    for (size_t i = 0; i < s->n; i++) {
        gq_st_close(s->shards[i]);
        free(s->shard_names[i]);
    }
    free(s->shards);
    free(s->shard_names);
    cJSON_Delete(s->weight_map);
    free(s);
}

static char *join(const char *dir, const char *file) {
    size_t a = strlen(dir), b = strlen(file);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, file, b + 1);
    return p;
}

static bool is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

// Strings from JSON files go into one-line error messages.
static const char *safe(const char *s) {
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) return "<string with control characters>";
    return s;
}

// Parses dir/file as JSON; *out NULL (and GQ_OK) when absent and optional.
static enum gq_status read_json(const char *dir, const char *file, bool required, cJSON **out) {
    *out = NULL;
    char *path = join(dir, file);
    if (!path) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    enum gq_status s = GQ_OK;
    if (!is_file(path)) {
        if (required) s = gq_fail(GQ_ERR_IO, "%s: missing (a Hugging Face model directory needs it)", path);
        free(path);
        return s;
    }
    char *data = NULL;
    size_t size = 0;
    s = gq_read_file(path, &data, &size);
    if (s == GQ_OK) {
        cJSON *root = cJSON_ParseWithLength(data, size);
        if (!root) {
            const char *e = cJSON_GetErrorPtr();
            size_t off = e && e >= data && e <= data + size ? (size_t)(e - data) : 0;
            s = gq_fail(GQ_ERR_FORMAT, "%s: not valid JSON (near byte %zu)", path, off);
        } else if (!cJSON_IsObject(root)) {
            cJSON_Delete(root);
            s = gq_fail(GQ_ERR_FORMAT, "%s: top level is not a JSON object", path);
        } else {
            *out = root;
        }
    }
    free(data);
    free(path);
    return s;
}

// Integer config field: absent -> def (or an error when def < 0).
static enum gq_status cfg_int(const cJSON *cfg, const char *path, const char *key, int def, int lo, int hi, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (!v || cJSON_IsNull(v)) {
        if (def < 0) return gq_fail(GQ_ERR_FORMAT, "%s: missing '%s'", path, key);
        *out = def;
        return GQ_OK;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < lo || v->valuedouble > hi)
        return gq_fail(GQ_ERR_FORMAT, "%s: '%s' must be an integer in [%d, %d]", path, key, lo, hi);
    *out = (int)v->valuedouble;
    return GQ_OK;
}

static enum gq_status cfg_float(const cJSON *cfg, const char *path, const char *key, float def, float *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (!v || cJSON_IsNull(v)) {
        *out = def;
        return GQ_OK;
    }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || !(v->valuedouble > 0) || v->valuedouble > 1e30)
        return gq_fail(GQ_ERR_FORMAT, "%s: '%s' must be a positive number", path, key);
    *out = (float)v->valuedouble;
    return GQ_OK;
}

static enum gq_status parse_rope_scaling(const cJSON *cfg, const char *path, struct gq_hparams *hp) {
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(cfg, "rope_scaling");
    hp->rope_scaling = GQ_ROPE_SCALING_NONE;
    if (!rs || cJSON_IsNull(rs)) return GQ_OK;
    if (!cJSON_IsObject(rs)) return gq_fail(GQ_ERR_FORMAT, "%s: 'rope_scaling' is not an object", path);
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
    if (!cJSON_IsString(ty)) ty = cJSON_GetObjectItemCaseSensitive(rs, "type");
    if (!cJSON_IsString(ty)) return gq_fail(GQ_ERR_FORMAT, "%s: 'rope_scaling' has no string 'rope_type'/'type'", path);
    const char *t = ty->valuestring;
    if (strcmp(t, "default") == 0) return GQ_OK;
    if (strcmp(t, "linear") == 0) {
        hp->rope_scaling = GQ_ROPE_SCALING_LINEAR;
        return cfg_float(rs, path, "factor", -1, &hp->rope_factor) != GQ_OK || hp->rope_factor <= 0
                   ? gq_fail(GQ_ERR_FORMAT, "%s: linear rope_scaling needs a positive 'factor'", path)
                   : GQ_OK;
    }
    if (strcmp(t, "llama3") == 0) {
        hp->rope_scaling = GQ_ROPE_SCALING_LLAMA3;
        GQ_TRY(cfg_float(rs, path, "factor", -1, &hp->rope_factor));
        GQ_TRY(cfg_float(rs, path, "low_freq_factor", -1, &hp->rope_low_freq_factor));
        GQ_TRY(cfg_float(rs, path, "high_freq_factor", -1, &hp->rope_high_freq_factor));
        GQ_TRY(cfg_int(rs, path, "original_max_position_embeddings", -1, 1, 1 << 24, &hp->rope_orig_ctx));
        if (!(hp->rope_factor > 0) || !(hp->rope_low_freq_factor > 0) ||
            !(hp->rope_high_freq_factor > hp->rope_low_freq_factor))
            return gq_fail(GQ_ERR_FORMAT, "%s: llama3 rope_scaling needs factor, low_freq_factor < high_freq_factor, "
                           "original_max_position_embeddings", path);
        return GQ_OK;
    }
    return gq_fail(GQ_ERR_UNSUPPORTED, "%s: rope_scaling type '%s' is not supported (linear, llama3)", path, safe(t));
}

// Opens model.safetensors, or the shards of model.safetensors.index.json.
static enum gq_status open_weights(const char *dir, struct hf_source *src) {
    char *single = join(dir, "model.safetensors");
    if (!single) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    if (is_file(single)) {
        src->shards = calloc(1, sizeof *src->shards);
        src->shard_names = calloc(1, sizeof *src->shard_names);
        if (!src->shards || !src->shard_names || !(src->shard_names[0] = strdup("model.safetensors"))) {
            free(single);
            return gq_fail(GQ_ERR_NOMEM, "out of memory");
        }
        src->n = 1;
        enum gq_status s = gq_st_open(single, &src->shards[0]);
        free(single);
        return s;
    }
    free(single);
    cJSON *idx = NULL;
    GQ_TRY(read_json(dir, "model.safetensors.index.json", false, &idx));
    if (!idx)
        return gq_fail(GQ_ERR_IO, "%s: neither model.safetensors nor model.safetensors.index.json found", dir);
    src->weight_map = idx;
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(idx, "weight_map");
    if (!cJSON_IsObject(wm))
        return gq_fail(GQ_ERR_FORMAT, "%s/model.safetensors.index.json: no 'weight_map' object", dir);
    size_t cap = (size_t)cJSON_GetArraySize(wm);
    src->shards = calloc(cap + 1, sizeof *src->shards);
    src->shard_names = calloc(cap + 1, sizeof *src->shard_names);
    if (!src->shards || !src->shard_names) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    for (const cJSON *e = wm->child; e; e = e->next) {
        if (!cJSON_IsString(e))
            return gq_fail(GQ_ERR_FORMAT, "%s/model.safetensors.index.json: weight_map['%s'] is not a string", dir,
                           safe(e->string));
        const char *fn = e->valuestring;
        // Shards live in the model directory: refuse paths that leave it.
        if (!fn[0] || strchr(fn, '/') || safe(fn) != fn || strcmp(fn, "..") == 0 || strcmp(fn, ".") == 0)
            return gq_fail(GQ_ERR_FORMAT, "%s/model.safetensors.index.json: shard name '%s' for '%s' is not a plain "
                           "file name", dir, safe(fn), safe(e->string));
        bool seen = false;
        for (size_t i = 0; i < src->n && !seen; i++) seen = strcmp(src->shard_names[i], fn) == 0;
        if (seen) continue;
        if (!(src->shard_names[src->n] = strdup(fn))) return gq_fail(GQ_ERR_NOMEM, "out of memory");
        char *p = join(dir, fn);
        if (!p) return gq_fail(GQ_ERR_NOMEM, "out of memory");
        enum gq_status s = is_file(p) ? gq_st_open(p, &src->shards[src->n])
                                      : gq_fail(GQ_ERR_IO, "%s: shard listed in model.safetensors.index.json is missing", p);
        free(p);
        src->n++; // counted even on failure so that the name is freed
        GQ_TRY(s);
    }
    if (src->n == 0) return gq_fail(GQ_ERR_FORMAT, "%s/model.safetensors.index.json: empty weight_map", dir);
    return GQ_OK;
}

// The tensor `name` and the shard holding it (NULL if absent).
static enum gq_status find_tensor(const char *dir, const struct hf_source *src, const char *name,
                                  const struct gq_st_file **file, const struct gq_st_tensor **t) {
    *file = NULL;
    *t = NULL;
    if (!src->weight_map) {
        *file = src->shards[0];
        *t = gq_st_find(src->shards[0], name);
        return GQ_OK;
    }
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(src->weight_map, "weight_map"), name);
    if (!e) return GQ_OK;
    for (size_t i = 0; i < src->n; i++)
        if (strcmp(src->shard_names[i], e->valuestring) == 0) {
            *file = src->shards[i];
            *t = gq_st_find(src->shards[i], name);
            if (!*t)
                return gq_fail(GQ_ERR_FORMAT, "%s/%s: tensor '%s' is not there, though the index places it there", dir,
                               e->valuestring, name);
            return GQ_OK;
        }
    GQ_ASSERT(0); // every weight_map value was opened
    return GQ_ERR_FORMAT;
}

// The tensor `name` of shape (rows, cols) (cols == 0: a vector of rows) and
// its shard; *t NULL when it is absent and not required.
static enum gq_status find_shaped(const char *dir, const struct hf_source *src, const char *name, int64_t rows,
                                  int64_t cols, bool required, const struct gq_st_file **f,
                                  const struct gq_st_tensor **t) {
    GQ_TRY(find_tensor(dir, src, name, f, t));
    if (!*t) return required ? gq_fail(GQ_ERR_FORMAT, "%s: missing tensor '%s'", dir, name) : GQ_OK;
    const struct gq_st_tensor *tt = *t;
    bool ok = cols ? tt->n_dims == 2 && tt->shape[0] == rows && tt->shape[1] == cols
                   : tt->n_dims == 1 && tt->shape[0] == rows;
    if (!ok) {
        char got[128] = "";
        size_t n = 0;
        for (int d = 0; d < tt->n_dims && n < sizeof got - 24; d++)
            n += (size_t)snprintf(got + n, sizeof got - n, "%s%lld", d ? ", " : "", (long long)tt->shape[d]);
        if (cols)
            return gq_fail(GQ_ERR_FORMAT, "%s: tensor '%s' has shape [%s], config.json implies [%lld, %lld]",
                           (*f)->file.path, name, got, (long long)rows, (long long)cols);
        return gq_fail(GQ_ERR_FORMAT, "%s: tensor '%s' has shape [%s], config.json implies [%lld]", (*f)->file.path,
                       name, got, (long long)rows);
    }
    return GQ_OK;
}

// Fetches `name` as f32 of shape (rows, cols) (cols == 0: a vector of rows).
static enum gq_status get_w(struct gq_model *m, const char *dir, const struct hf_source *src, const char *name,
                            int64_t rows, int64_t cols, bool required, const float **out) {
    *out = NULL;
    const struct gq_st_file *f;
    const struct gq_st_tensor *t;
    GQ_TRY(find_shaped(dir, src, name, rows, cols, required, &f, &t));
    if (!t) return GQ_OK;
    size_t n = (size_t)t->numel;
    if (t->dtype == GQ_ST_F32 && (uintptr_t)t->data % sizeof(float) == 0) {
        GQ_TRY(gq_check_finite(t->data, n, f->file.path, name));
        *out = t->data;
        return GQ_OK;
    }
    float *y = NULL;
    GQ_TRY(gq_st_to_f32(f, t, &y));
    GQ_TRY(gq_model_own(m, y));
    GQ_TRY(gq_check_finite(y, n, f->file.path, name));
    *out = y;
    return GQ_OK;
}

// A special token from tokenizer_config.json: "<s>" or {"content": "<s>", ...}.
static int32_t special_id(const struct gq_tokenizer *tok, const cJSON *v) {
    if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
    int32_t id = cJSON_IsString(v) ? gq_tokenizer_find(tok, v->valuestring) : -1;
    return id >= 0 ? id : -2; // unknown: fall back to the configs' ids
}

// A token id field (an int, or a list whose first element is used); -2 if absent.
static int32_t id_field(const cJSON *cfg, const char *key, int n_vocab) {
    const cJSON *v = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, key) : NULL;
    if (cJSON_IsArray(v)) v = v->child;
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble >= n_vocab || v->valuedouble != floor(v->valuedouble))
        return -2;
    return (int32_t)v->valuedouble;
}

// json (optional): the tokenizer.json text (malloc'd, NUL-terminated) for the caller.
static enum gq_status load_tokenizer(const char *dir, const cJSON *cfg, struct gq_model *m, char **json) {
    char *tp = join(dir, "tokenizer.json"), *text = NULL;
    size_t len = 0;
    if (!tp) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    enum gq_status s = is_file(tp) ? gq_read_file(tp, &text, &len)
                                   : gq_fail(GQ_ERR_IO, "%s: missing (only tokenizer.json tokenizers are supported)", tp);
    if (s == GQ_OK) s = gq_tokenizer_from_json_memory(text, len, tp, &m->tok);
    free(tp);
    if (s == GQ_OK && json) *json = text;
    else free(text);
    GQ_TRY(s);
    // BOS/EOS: tokenizer_config.json's token strings win over the ids of
    // generation_config.json, which win over config.json's.
    cJSON *tc = NULL, *gc = NULL;
    GQ_TRY(read_json(dir, "tokenizer_config.json", false, &tc));
    s = read_json(dir, "generation_config.json", false, &gc);
    if (s != GQ_OK) {
        cJSON_Delete(tc);
        return s;
    }
    int nv = gq_tokenizer_n_vocab(m->tok);
    int32_t bos = -2, eos = -2;
    int add_bos = -1;
    if (tc) {
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(tc, "bos_token");
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(tc, "eos_token");
        const cJSON *ab = cJSON_GetObjectItemCaseSensitive(tc, "add_bos_token");
        if (b) bos = cJSON_IsNull(b) ? -1 : special_id(m->tok, b);
        if (e) eos = cJSON_IsNull(e) ? -1 : special_id(m->tok, e);
        if (cJSON_IsBool(ab)) add_bos = cJSON_IsTrue(ab);
        const cJSON *ct = cJSON_GetObjectItemCaseSensitive(tc, "chat_template");
        if (cJSON_IsString(ct) && !(m->chat_template = strdup(ct->valuestring))) s = gq_fail(GQ_ERR_NOMEM, "out of memory");
    }
    if (bos == -2) bos = id_field(gc, "bos_token_id", nv);
    if (bos == -2) bos = id_field(cfg, "bos_token_id", nv);
    if (eos == -2) eos = id_field(gc, "eos_token_id", nv);
    if (eos == -2) eos = id_field(cfg, "eos_token_id", nv);
    gq_tokenizer_set_special(m->tok, bos, eos, add_bos);
    cJSON_Delete(tc);
    cJSON_Delete(gc);
    return s;
}

// gq_weight_getter over the safetensors shards (HF names, (rows, cols) as stored).
struct hf_getter {
    struct gq_model *m;
    const char *dir;
    const struct hf_source *src;
};
static enum gq_status hf_get(void *ctx, const char *name, int64_t rows, int64_t cols, bool required,
                             const float **out) {
    struct hf_getter *hg = ctx;
    return get_w(hg->m, hg->dir, hg->src, name, rows, cols, required, out);
}

// config.json -> m->arch, m->hp; the architecture, tied head and biases.
static enum gq_status hf_config(const cJSON *cfg, const char *cfg_path, struct gq_model *m, const struct gq_arch **arch,
                                bool *tied_out, bool *bias_out) {
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(cfg, "model_type");
    if (!cJSON_IsString(mt)) return gq_fail(GQ_ERR_FORMAT, "%s: missing string 'model_type'", cfg_path);
    const struct gq_arch *A = gq_arch_find(mt->valuestring);
    if (!A)
        return gq_fail(GQ_ERR_UNSUPPORTED, "%s: model_type '%s' is not supported (llama, mistral, qwen2)", cfg_path,
                       safe(mt->valuestring));
    if (!(m->arch = strdup(A->name))) return gq_fail(GQ_ERR_NOMEM, "out of memory");

    struct gq_hparams *hp = &m->hp;
    GQ_TRY(cfg_int(cfg, cfg_path, "hidden_size", -1, 1, 1 << 20, &hp->dim));
    GQ_TRY(cfg_int(cfg, cfg_path, "intermediate_size", -1, 1, 1 << 22, &hp->hidden_dim));
    GQ_TRY(cfg_int(cfg, cfg_path, "num_hidden_layers", -1, 1, 4096, &hp->n_layers));
    GQ_TRY(cfg_int(cfg, cfg_path, "num_attention_heads", -1, 1, 4096, &hp->n_heads));
    GQ_TRY(cfg_int(cfg, cfg_path, "num_key_value_heads", hp->n_heads, 1, 4096, &hp->n_kv_heads));
    GQ_TRY(cfg_int(cfg, cfg_path, "vocab_size", -1, 1, 1 << 24, &hp->n_vocab));
    GQ_TRY(cfg_int(cfg, cfg_path, "max_position_embeddings", 2048, 1, 1 << 24, &hp->ctx_len));
    if (hp->dim % hp->n_heads != 0 && !cJSON_GetObjectItemCaseSensitive(cfg, "head_dim"))
        return gq_fail(GQ_ERR_FORMAT, "%s: hidden_size %d is not a multiple of num_attention_heads %d", cfg_path,
                       hp->dim, hp->n_heads);
    GQ_TRY(cfg_int(cfg, cfg_path, "head_dim", hp->dim / hp->n_heads, 2, 1 << 16, &hp->head_dim));
    if (hp->n_heads % hp->n_kv_heads != 0)
        return gq_fail(GQ_ERR_FORMAT, "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d",
                       cfg_path, hp->n_heads, hp->n_kv_heads);
    GQ_TRY(cfg_float(cfg, cfg_path, "rms_norm_eps", 1e-6f, &hp->rms_eps));
    GQ_TRY(cfg_float(cfg, cfg_path, "rope_theta", 10000.0f, &hp->rope_theta));
    GQ_TRY(parse_rope_scaling(cfg, cfg_path, hp));
    hp->rope_dim = hp->head_dim;
    hp->rope_interleaved = false; // HF: rotate-half on unpermuted q/k
    const cJSON *tie = cJSON_GetObjectItemCaseSensitive(cfg, "tie_word_embeddings");
    *tied_out = cJSON_IsTrue(tie);
    const cJSON *ab = cJSON_GetObjectItemCaseSensitive(cfg, "attention_bias");
    *bias_out = A->qkv_bias || cJSON_IsTrue(ab);
    *arch = A;
    return GQ_OK;
}

// The directory's last component (the model's name).
static char *dir_name(const char *dir) {
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/') len--;
    size_t start = len;
    while (start > 0 && dir[start - 1] != '/') start--;
    return strndup(dir + start, len - start);
}

static enum gq_status load(const char *dir, const cJSON *cfg, const char *cfg_path, struct gq_model *m) {
    const struct gq_arch *A;
    bool tied, bias_required;
    GQ_TRY(hf_config(cfg, cfg_path, m, &A, &tied, &bias_required));
    struct gq_hparams *hp = &m->hp;
    struct hf_source *src = calloc(1, sizeof *src);
    if (!src) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    m->source = src;
    m->source_free = hf_source_free;
    GQ_TRY(open_weights(dir, src));

    int64_t dim = hp->dim, V = hp->n_vocab;
    GQ_TRY(get_w(m, dir, src, "model.embed_tokens.weight", V, dim, true, &m->tok_embd));
    GQ_TRY(get_w(m, dir, src, "model.norm.weight", dim, 0, true, &m->output_norm));
    if (!tied) GQ_TRY(get_w(m, dir, src, "lm_head.weight", V, dim, false, &m->output));
    if (!m->output) m->output = m->tok_embd;

    struct hf_getter hg = {m, dir, src};
    GQ_TRY(gq_arch_load_blocks(m, A, true, bias_required, hf_get, NULL, &hg, dir));
    GQ_TRY(load_tokenizer(dir, cfg, m, NULL));

    if (!(m->name = dir_name(dir))) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    return GQ_OK;
}

enum gq_status gq_load_hf_dir(const char *dir, struct gq_model *m) {
    if (!(m->source_format = strdup("safetensors"))) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    cJSON *cfg = NULL;
    GQ_TRY(read_json(dir, "config.json", true, &cfg));
    char *cfg_path = join(dir, "config.json");
    enum gq_status s = cfg_path ? load(dir, cfg, cfg_path, m) : gq_fail(GQ_ERR_NOMEM, "out of memory");
    free(cfg_path);
    cJSON_Delete(cfg);
    GQ_TRY(s);
    return gq_model_finish(m, dir);
}

// ---------------------------------------------------------------------------
// Hugging Face directory -> GGUF, as llama.cpp's convert_hf_to_gguf.py writes
// it: llama.* / qwen2.* hyperparameters, tokenizer metadata, GGUF tensor names,
// q/k rows permuted for interleaved RoPE where the architecture's GGUF has it,
// 2-D tensors in their own dtype (F32, F16, BF16), 1-D ones as F32. Every
// tensor's presence, shape and dtype is checked before anything is written;
// the data are then copied one tensor at a time (no whole-model buffer).
// NaN / Inf anywhere is refused in that first pass too.

struct conv_tensor {
    char name[96];              // GGUF name
    const struct gq_st_file *f; // NULL: generated (data)
    const struct gq_st_tensor *t;
    int64_t rows, cols;         // cols 0: 1-D
    int heads;                  // > 0: rows permuted as llama.cpp's permute(w, heads)
    enum gq_ggml_type type;     // as written
    float *data;                // generated tensors (rope_freqs), owned
};

struct conv {
    const char *dir;
    struct conv_tensor *t;
    size_t n, cap;
};

static bool finite_bits(const void *p, enum gq_st_dtype dt, size_t n) {
    if (dt == GQ_ST_F32) {
        for (size_t i = 0; i < n; i++) {
            uint32_t u;
            memcpy(&u, (const char *)p + 4 * i, 4);
            if ((u & 0x7f800000u) == 0x7f800000u) return false;
        }
    } else {
        const uint16_t mask = dt == GQ_ST_F16 ? 0x7c00 : 0x7f80;
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, (const char *)p + 2 * i, 2);
            if ((h & mask) == mask) return false;
        }
    }
    return true;
}

// Source row of output row r under llama.cpp's permute(w, heads):
// w.reshape(heads, 2, rows/heads/2, ...).swapaxes(1, 2).
static int64_t permuted_row(int64_t r, int64_t rows, int heads) {
    if (heads <= 0) return r;
    const int64_t hd = rows / heads, half = hd / 2, h = r / hd, i = (r % hd) / 2, j = r % 2;
    return h * hd + j * half + i;
}

static enum gq_status conv_fill(void *user, const char *name, void *dst, size_t nbytes) {
    const struct conv *c = user;
    const struct conv_tensor *ct = NULL;
    for (size_t i = 0; i < c->n && !ct; i++)
        if (!strcmp(c->t[i].name, name)) ct = &c->t[i];
    GQ_ASSERT(ct);
    if (!ct->f) {
        memcpy(dst, ct->data, nbytes);
        return GQ_OK;
    }
    const struct gq_st_tensor *t = ct->t;
    const int64_t rows = ct->rows, cols = ct->cols ? ct->cols : 1;
    const size_t es = gq_st_dtype_size(t->dtype);
    if (ct->type == GQ_TYPE_F32 && t->dtype != GQ_ST_F32) { // a 1-D F16 / BF16 tensor
        float *y = NULL;
        GQ_TRY(gq_st_to_f32(ct->f, t, &y));
        for (int64_t r = 0; r < rows; r++) ((float *)dst)[r] = y[permuted_row(r, rows, ct->heads)];
        free(y);
        return GQ_OK;
    }
    GQ_ASSERT((size_t)(rows * cols) * es == nbytes);
    for (int64_t r = 0; r < rows; r++)
        memcpy((char *)dst + (size_t)(r * cols) * es,
               (const char *)t->data + (size_t)(permuted_row(r, rows, ct->heads) * cols) * es, (size_t)cols * es);
    return GQ_OK;
}

// Checks HF tensor `hf` and queues it as GGUF `gguf` (absent and not required: skipped).
static enum gq_status conv_add(struct conv *c, const struct hf_source *src, const char *hf, const char *gguf,
                               int64_t rows, int64_t cols, bool required, int heads) {
    const struct gq_st_file *f;
    const struct gq_st_tensor *t;
    GQ_TRY(find_shaped(c->dir, src, hf, rows, cols, required, &f, &t));
    if (!t) return GQ_OK;
    if (t->dtype != GQ_ST_F32 && t->dtype != GQ_ST_F16 && t->dtype != GQ_ST_BF16)
        return gq_fail(GQ_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s (F32, F16 and BF16 are supported)",
                       f->file.path, hf, t->dtype_name);
    if (!finite_bits(t->data, t->dtype, (size_t)t->numel))
        return gq_fail(GQ_ERR_NUMERIC, "%s: tensor '%s' holds NaN or Inf", f->file.path, hf);
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 64;
        struct conv_tensor *nt = realloc(c->t, cap * sizeof *nt);
        if (!nt) return gq_fail(GQ_ERR_NOMEM, "out of memory");
        c->t = nt, c->cap = cap;
    }
    struct conv_tensor *ct = &c->t[c->n++];
    *ct = (struct conv_tensor){.f = f, .t = t, .rows = rows, .cols = cols, .heads = heads};
    snprintf(ct->name, sizeof ct->name, "%s", gguf);
    ct->type = !cols || t->dtype == GQ_ST_F32 ? GQ_TYPE_F32 : t->dtype == GQ_ST_F16 ? GQ_TYPE_F16 : GQ_TYPE_BF16;
    return GQ_OK;
}

// llama3 RoPE scaling as the rope_freqs divisors llama.cpp's converter writes
// (LlamaModel.generate_extra_tensors).
static enum gq_status conv_rope_freqs(struct conv *c, const struct gq_hparams *hp) {
    const int n = hp->rope_dim / 2;
    struct conv_tensor *nt = realloc(c->t, (c->n + 1) * sizeof *nt);
    if (!nt) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    c->t = nt, c->cap = c->n + 1;
    float *f = malloc((size_t)n * sizeof *f);
    if (!f) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n; i++) f[i] = (float)gq_rope_llama3_divisor(hp, i);
    c->t[c->n++] = (struct conv_tensor){.name = "rope_freqs.weight", .rows = n, .type = GQ_TYPE_F32, .data = f};
    return GQ_OK;
}

static enum gq_status conv_kvs(struct gq_gguf_writer *w, const struct gq_model *m, const char *name,
                               const struct conv *c, const char *tok_json) {
    const struct gq_hparams *hp = &m->hp;
    const char *a = m->arch;
    char k[128];
#define KEY(suffix) (snprintf(k, sizeof k, "%s.%s", a, suffix), k)
    enum gq_status s = gq_gguf_writer_set_str(w, "general.architecture", a);
    if (s == GQ_OK) s = gq_gguf_writer_set_str(w, "general.name", name);
    // llama.cpp's file types: 0 all F32, 1 mostly F16, 32 mostly BF16
    int f16 = 0, bf16 = 0;
    for (size_t i = 0; i < c->n; i++) f16 += c->t[i].type == GQ_TYPE_F16, bf16 += c->t[i].type == GQ_TYPE_BF16;
    if (s == GQ_OK) s = gq_gguf_writer_set_u32(w, "general.file_type", bf16 > f16 ? 32 : f16 ? 1 : 0);
    if (s == GQ_OK) s = gq_gguf_writer_set_u32(w, KEY("context_length"), (uint32_t)hp->ctx_len);
    if (s == GQ_OK) s = gq_gguf_writer_set_u32(w, KEY("embedding_length"), (uint32_t)hp->dim);
    if (s == GQ_OK) s = gq_gguf_writer_set_u32(w, KEY("block_count"), (uint32_t)hp->n_layers);
    if (s == GQ_OK) s = gq_gguf_writer_set_u32(w, KEY("feed_forward_length"), (uint32_t)hp->hidden_dim);
    if (s == GQ_OK) s = gq_gguf_writer_set_u32(w, KEY("attention.head_count"), (uint32_t)hp->n_heads);
    if (s == GQ_OK) s = gq_gguf_writer_set_u32(w, KEY("attention.head_count_kv"), (uint32_t)hp->n_kv_heads);
    if (s == GQ_OK) s = gq_gguf_writer_set_f32(w, KEY("attention.layer_norm_rms_epsilon"), hp->rms_eps);
    if (s == GQ_OK) s = gq_gguf_writer_set_f32(w, KEY("rope.freq_base"), hp->rope_theta);
    if (s == GQ_OK) s = gq_gguf_writer_set_u32(w, KEY("rope.dimension_count"), (uint32_t)hp->rope_dim);
    if (s == GQ_OK && hp->head_dim != hp->dim / hp->n_heads) {
        s = gq_gguf_writer_set_u32(w, KEY("attention.key_length"), (uint32_t)hp->head_dim);
        if (s == GQ_OK) s = gq_gguf_writer_set_u32(w, KEY("attention.value_length"), (uint32_t)hp->head_dim);
    }
    if (s == GQ_OK && hp->rope_scaling == GQ_ROPE_SCALING_LINEAR) {
        s = gq_gguf_writer_set_str(w, KEY("rope.scaling.type"), "linear");
        if (s == GQ_OK) s = gq_gguf_writer_set_f32(w, KEY("rope.scaling.factor"), hp->rope_factor);
    }
#undef KEY
    if (s == GQ_OK) s = gq_tokenizer_write_gguf(m->tok, w, tok_json);
    if (s == GQ_OK && m->chat_template) s = gq_gguf_writer_set_str(w, "tokenizer.chat_template", m->chat_template);
    if (s == GQ_OK) s = gq_gguf_writer_set_str(w, "gptvq.converted_from", "huggingface");
    return s;
}

// Every tensor, checked, before anything is written.
static enum gq_status conv_tensors(struct conv *c, const struct hf_source *src, const struct gq_arch *A,
                                   const struct gq_hparams *hp, bool tied, bool bias_required) {
    const int64_t dim = hp->dim, V = hp->n_vocab;
    GQ_TRY(conv_add(c, src, "model.embed_tokens.weight", "token_embd.weight", V, dim, true, 0));
    for (int l = 0; l < hp->n_layers; l++)
        for (int i = 0; i < A->n_tensors; i++) {
            const struct gq_block_tensor *t = &A->tensors[i];
            char hn[160], gn[96];
            snprintf(hn, sizeof hn, "model.layers.%d.%s", l, t->hf);
            snprintf(gn, sizeof gn, "blk.%d.%s", l, t->gguf);
            int heads = 0;
            if (A->rope_interleaved_gguf && (!strcmp(t->name, "attn_q") || !strcmp(t->name, "attn_q_bias")))
                heads = hp->n_heads;
            if (A->rope_interleaved_gguf && (!strcmp(t->name, "attn_k") || !strcmp(t->name, "attn_k_bias")))
                heads = hp->n_kv_heads;
            GQ_TRY(conv_add(c, src, hn, gn, gq_dim_value(hp, t->rows), t->cols ? gq_dim_value(hp, t->cols) : 0,
                            t->kind != GQ_T_BIAS || bias_required, heads));
        }
    GQ_TRY(conv_add(c, src, "model.norm.weight", "output_norm.weight", dim, 0, true, 0));
    if (!tied) GQ_TRY(conv_add(c, src, "lm_head.weight", "output.weight", V, dim, false, 0));
    if (hp->rope_scaling == GQ_ROPE_SCALING_LLAMA3) GQ_TRY(conv_rope_freqs(c, hp));
    return GQ_OK;
}

static enum gq_status convert(const char *dir, const char *out, struct gq_model *m, struct conv *c) {
    cJSON *cfg = NULL;
    GQ_TRY(read_json(dir, "config.json", true, &cfg));
    char *cfg_path = join(dir, "config.json");
    const struct gq_arch *A = NULL;
    bool tied = false, bias_required = false;
    enum gq_status s = cfg_path ? hf_config(cfg, cfg_path, m, &A, &tied, &bias_required) : gq_fail(GQ_ERR_NOMEM, "out of memory");
    struct gq_hparams *hp = &m->hp;
    if (s == GQ_OK && hp->head_dim % 2) s = gq_fail(GQ_ERR_FORMAT, "%s: head_dim %d is odd", cfg_path, hp->head_dim);
    struct hf_source *src = s == GQ_OK ? calloc(1, sizeof *src) : NULL;
    if (s == GQ_OK && !src) s = gq_fail(GQ_ERR_NOMEM, "out of memory");
    if (src) m->source = src, m->source_free = hf_source_free;
    if (s == GQ_OK) s = open_weights(dir, src);
    char *tok_json = NULL; // carried whole into the GGUF
    if (s == GQ_OK) s = load_tokenizer(dir, cfg, m, &tok_json);
    free(cfg_path);
    cJSON_Delete(cfg);
    if (s == GQ_OK) s = conv_tensors(c, src, A, hp, tied, bias_required);
    if (s != GQ_OK) {
        free(tok_json);
        return s;
    }
    char *name = dir_name(dir);
    struct gq_gguf_writer *w = gq_gguf_writer_new(0);
    s = name && w ? conv_kvs(w, m, name, c, tok_json) : gq_fail(GQ_ERR_NOMEM, "out of memory");
    for (size_t i = 0; s == GQ_OK && i < c->n; i++) {
        const struct conv_tensor *ct = &c->t[i];
        int64_t ne[2] = {ct->cols ? ct->cols : ct->rows, ct->rows};
        size_t nb = gq_ggml_row_size(ct->type, ne[0]) * (size_t)(ct->cols ? ct->rows : 1);
        s = gq_gguf_writer_add_tensor_fill(w, ct->name, ct->type, ct->cols ? 2 : 1, ne, nb, conv_fill, c);
    }
    if (s == GQ_OK) s = gq_gguf_writer_write(w, out);
    gq_gguf_writer_free(w);
    free(name);
    free(tok_json);
    return s;
}

enum gq_status gq_hf_to_gguf(const char *dir, const char *out) {
    struct gq_model *m = gq_model_alloc();
    if (!m) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    struct conv c = {.dir = dir};
    enum gq_status s = convert(dir, out, m, &c);
    for (size_t i = 0; i < c.n; i++) free(c.t[i].data);
    free(c.t);
    gq_model_free(m);
    return s;
}
