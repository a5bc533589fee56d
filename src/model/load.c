// load.c - a model from a path: the format sniffed (GGUF, a Hugging Face
// directory, a llama2.c checkpoint) and its loader called.
#include "model/model.h"

#include <sys/stat.h>

static bool ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

enum gq_status gq_model_path_format(const char *path, const char **format) {
    *format = NULL;
    if (!path) return gq_fail(GQ_ERR_ARG, "no model path given");
    struct stat st;
    if (stat(path, &st) != 0) return gq_fail(GQ_ERR_IO, "%s: no such file or directory", path);
    if (S_ISDIR(st.st_mode)) {
        *format = "safetensors";
        return GQ_OK;
    }
    // Sniff the magic: GGUF has one; llama2.c legacy checkpoints do not.
    unsigned char magic[4] = {0};
    FILE *fp = fopen(path, "rb");
    if (!fp) return gq_fail(GQ_ERR_IO, "%s: cannot open", path);
    size_t got = fread(magic, 1, 4, fp);
    fclose(fp);
    if (got == 4 && memcmp(magic, "GGUF", 4) == 0) *format = "gguf";
    else if (ends_with(path, ".bin")) *format = "llama2c";
    else if (ends_with(path, ".safetensors"))
        return gq_fail(GQ_ERR_ARG, "%s: pass the model directory (with config.json and tokenizer.json), not a .safetensors file", path);
    else
        return gq_fail(GQ_ERR_FORMAT, "%s: not a GGUF file (magic %02x%02x%02x%02x), not a llama2.c .bin, not a directory",
                       path, magic[0], magic[1], magic[2], magic[3]);
    return GQ_OK;
}

enum gq_status gq_model_load(const char *path, const struct gq_load_params *params,
                             struct gq_model **out) {
    *out = NULL;
    const char *fmt;
    GQ_TRY(gq_model_path_format(path, &fmt));
    struct gq_model *m = gq_model_alloc();
    if (!m) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    m->keep_quantized = params && params->keep_quantized;
    m->no_repack = params && params->no_repack;
    enum gq_status s = !strcmp(fmt, "safetensors") ? gq_load_hf_dir(path, m)
                       : !strcmp(fmt, "gguf")      ? gq_load_gguf(path, m)
                                                   : gq_load_llama2c(path, params ? params->tokenizer_path : NULL, m);
    if (s != GQ_OK) {
        gq_model_free(m);
        return s;
    }
    *out = m;
    return GQ_OK;
}
