// gguf_dump.c - human-readable listing of a GGUF file (gptvq inspect).
#include "io/gguf.h"

#include <inttypes.h>

// Prints a string value with control characters and quotes escaped, so a
// hostile file cannot move the cursor or forge lines.
static void print_escaped(FILE *fp, const char *s, uint64_t len, uint64_t max) {
    fputc('"', fp);
    uint64_t n = len < max ? len : max;
    for (uint64_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') fprintf(fp, "\\%c", c);
        else if (c == '\n') fputs("\\n", fp);
        else if (c == '\t') fputs("\\t", fp);
        else if (c < 0x20 || c == 0x7f) fprintf(fp, "\\x%02x", c);
        else fputc(c, fp);
    }
    fputc('"', fp);
    if (n < len) fprintf(fp, "... (%" PRIu64 " bytes)", len);
}

static void print_scalar(FILE *fp, const struct gq_gguf_kv *kv) {
    switch (kv->type) {
    case GQ_GGUF_INT8: case GQ_GGUF_INT16: case GQ_GGUF_INT32: case GQ_GGUF_INT64:
        fprintf(fp, "%" PRId64, kv->v.i64);
        break;
    case GQ_GGUF_FLOAT32: case GQ_GGUF_FLOAT64: fprintf(fp, "%.9g", kv->v.f64); break;
    case GQ_GGUF_BOOL: fputs(kv->v.u64 ? "true" : "false", fp); break;
    default: fprintf(fp, "%" PRIu64, kv->v.u64); break;
    }
}

static void print_array(FILE *fp, const struct gq_gguf_kv *kv, bool full) {
    fprintf(fp, "[%s x %" PRIu64 "]", gq_gguf_vtype_name(kv->arr_type), kv->arr_n);
    uint64_t show = full ? kv->arr_n : (kv->arr_n < 8 ? kv->arr_n : 8);
    for (uint64_t i = 0; i < show; i++) {
        fputc(i ? ',' : ' ', fp);
        if (i) fputc(' ', fp);
        if (kv->arr_type == GQ_GGUF_STRING) {
            print_escaped(fp, kv->arr_str[i].data, kv->arr_str[i].len, full ? UINT64_MAX : 40);
        } else {
            struct gq_gguf_kv el = {.type = kv->arr_type};
            if (kv->arr_type == GQ_GGUF_FLOAT32 || kv->arr_type == GQ_GGUF_FLOAT64)
                el.v.f64 = gq_gguf_arr_f64(kv, i);
            else
                el.v.i64 = gq_gguf_arr_i64(kv, i);
            print_scalar(fp, &el);
        }
    }
    if (show < kv->arr_n) fputs(", ...", fp);
}

void gq_gguf_dump(const struct gq_gguf *g, FILE *fp, bool full) {
    fprintf(fp, "file:        %s\n", g->file.path);
    fprintf(fp, "version:     %u\n", g->version);
    fprintf(fp, "alignment:   %u\n", g->alignment);
    fprintf(fp, "data offset: %" PRIu64 "\n", g->data_offset);
    fprintf(fp, "file size:   %zu\n", g->file.size);
    fprintf(fp, "\n%" PRIu64 " metadata keys:\n", g->n_kv);
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const struct gq_gguf_kv *kv = &g->kv[i];
        const char *tn = kv->type == GQ_GGUF_ARRAY ? "array" : gq_gguf_vtype_name(kv->type);
        fprintf(fp, "  %-40s %-7s = ", kv->key, tn);
        if (kv->type == GQ_GGUF_STRING)
            print_escaped(fp, kv->v.str.data, kv->v.str.len, full ? UINT64_MAX : 80);
        else if (kv->type == GQ_GGUF_ARRAY)
            print_array(fp, kv, full);
        else
            print_scalar(fp, kv);
        fputc('\n', fp);
    }

    int64_t count[GQ_TYPE_COUNT_] = {0}, params[GQ_TYPE_COUNT_] = {0};
    uint64_t bytes[GQ_TYPE_COUNT_] = {0};
    int64_t total_params = 0;
    uint64_t total_bytes = 0;
    fprintf(fp, "\n%" PRIu64 " tensors:\n", g->n_tensors);
    fprintf(fp, "  %-5s %-40s %-6s %-24s %12s %12s\n", "#", "name", "type", "shape", "bytes",
            "offset");
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const struct gq_gguf_tensor *t = &g->tensors[i];
        char shape[96];
        int len = 0;
        for (int d = 0; d < t->n_dims && len < (int)sizeof shape; d++)
            len += snprintf(shape + len, sizeof shape - (size_t)len, "%s%" PRId64, d ? "x" : "",
                            t->ne[d]);
        fprintf(fp, "  %-5" PRIu64 " %-40s %-6s %-24s %12zu %12" PRIu64 "\n", i, t->name,
                gq_ggml_type_name(t->type), shape, t->nbytes, t->offset);
        int64_t n = gq_gguf_tensor_nelements(t);
        count[t->type]++;
        params[t->type] += n;
        bytes[t->type] += t->nbytes;
        total_params += n;
        total_bytes += t->nbytes;
    }
    fprintf(fp, "\ntotals by type:\n");
    for (int ty = 0; ty < GQ_TYPE_COUNT_; ty++) {
        if (!count[ty]) continue;
        fprintf(fp, "  %-6s %5" PRId64 " tensors %14" PRId64 " params %14" PRIu64 " bytes  %.3f bpw\n",
                gq_ggml_type_name((enum gq_ggml_type)ty), count[ty], params[ty], bytes[ty],
                params[ty] ? 8.0 * (double)bytes[ty] / (double)params[ty] : 0.0);
    }
    fprintf(fp, "  total  %5" PRIu64 " tensors %14" PRId64 " params %14" PRIu64 " bytes  %.3f bpw\n",
            g->n_tensors, total_params, total_bytes,
            total_params ? 8.0 * (double)total_bytes / (double)total_params : 0.0);
}
