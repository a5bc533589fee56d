// report.c - gq_report_write: a Markdown page (plus SVG pictures) about
// quantized GGUF files, from each file's own metadata and tensors: size,
// bits per value of the block linears (by matrix kind and in total), the
// per-linear relative output errors that gptvq quantize records
// (gptvq.layers / gptvq.rel_errors), the settings, the command (from the
// JSON report beside the file), and, when the caller measured them,
// perplexities (a picture of perplexity against size).
#include "io/gguf.h"
#include "util/svgplot.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

static const char *const kinds[] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
#define N_KINDS 7

struct rlinear {
    int layer, kind; // kind: index in kinds, -1 other
    int64_t n;       // weights
    double bits;     // bits stored for them (all parts)
    double err;      // relative output error (NAN: not recorded)
};

// The token embedding and the output head (index 0 / 1).
static const char *const head_names[2] = {"token_embd", "output"};

struct rmodel {
    struct rlinear ends[2]; // token embedding, output head (n 0: absent, e.g. tied)
    const char *path;
    char name[256], method[16], settings[256], format[32], command[1024];
    double ppl, size_mb, bpv_lin;
    int64_t n_lin_w;
    int n_layers;
    struct rlinear *lin;
    int n_lin;
    char end_type[2][16];
};

static int kind_of(const char *s, size_t n) {
    for (int k = 0; k < N_KINDS; k++)
        if (strlen(kinds[k]) == n && !strncmp(kinds[k], s, n)) return k;
    return -1;
}

static struct rlinear *find_lin(struct rmodel *r, int layer, int kind) {
    for (int i = 0; i < r->n_lin; i++)
        if (r->lin[i].layer == layer && r->lin[i].kind == kind) return &r->lin[i];
    return NULL;
}

static void str_kv(const struct gq_gguf *g, const char *key, char *dst, size_t cap) {
    const struct gq_gguf_kv *kv = gq_gguf_find_kv(g, key);
    if (kv && kv->type == GQ_GGUF_STRING)
        snprintf(dst, cap, "%.*s", (int)(kv->v.str.len < cap ? kv->v.str.len : cap - 1), kv->v.str.data);
}
static double num_kv(const struct gq_gguf *g, const char *key) {
    double v;
    return gq_gguf_find_kv(g, key) && gq_gguf_get_f64(g, key, &v) == GQ_OK ? v : NAN;
}

// The command that made the file, from its JSON report FILE.report.json
// (written by gptvq quantize beside it); "" when there is none.
static void read_command(const char *path, char *dst, size_t cap) {
    dst[0] = 0;
    char jp[4200], *text = NULL;
    size_t len = 0;
    snprintf(jp, sizeof jp, "%s.report.json", path);
    if (access(jp, R_OK) != 0 || gq_read_file(jp, &text, &len) != GQ_OK) return;
    cJSON *root = cJSON_ParseWithLength(text, len);
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(root, "command");
    if (cJSON_IsString(c)) snprintf(dst, cap, "%s", c->valuestring);
    cJSON_Delete(root);
    free(text);
}

// Adds tensor t to matrix L, whose name is t->name's first `len` characters:
// t is the matrix itself (true is returned) or one part of its packed form
// ("<name>.vq_*", the weights counted from its header gptvq.vq.<name>).
static bool add_part(const struct gq_gguf *g, const struct gq_gguf_tensor *t, size_t len, struct rlinear *L) {
    L->bits += 8.0 * (double)t->nbytes;
    if (!t->name[len]) {
        L->n = gq_gguf_tensor_nelements(t);
        return true;
    }
    if (!L->n) {
        char key[300];
        snprintf(key, sizeof key, "gptvq.vq.%.*s", (int)len, t->name);
        const struct gq_gguf_kv *h = gq_gguf_find_kv(g, key);
        if (h && h->type == GQ_GGUF_ARRAY && h->arr_n >= 3) L->n = gq_gguf_arr_i64(h, 1) * gq_gguf_arr_i64(h, 2);
    }
    return false;
}

// The block linears ("blk.L.<kind>.weight", packed parts included) with their
// stored bits, and the recorded errors.
static enum gq_status read_model(const char *path, double ppl, struct rmodel *r) {
    memset(r, 0, sizeof *r);
    r->path = path;
    r->ppl = ppl;
    struct gq_gguf *g = NULL;
    GQ_TRY(gq_gguf_open(path, &g));
    r->size_mb = (double)g->file.size / 1e6;
    str_kv(g, "general.name", r->name, sizeof r->name);
    str_kv(g, "gptvq.method", r->method, sizeof r->method);
    str_kv(g, "gptvq.format", r->format, sizeof r->format);
    read_command(path, r->command, sizeof r->command);
    enum gq_status s = GQ_OK;
    r->lin = calloc(g->n_tensors + 1, sizeof *r->lin);
    if (!r->lin) s = gq_fail(GQ_ERR_NOMEM, "out of memory");
    int types[GQ_TYPE_COUNT_] = {0};
    for (int e = 0; e < 2; e++) r->ends[e] = (struct rlinear){.layer = -1, .kind = -1, .err = NAN};
    for (uint64_t i = 0; s == GQ_OK && i < g->n_tensors; i++) {
        const struct gq_gguf_tensor *t = &g->tensors[i];
        int l = -1, off = 0;
        for (int e = 0; e < 2; e++) { // the embedding and head, plain or packed
            char base[32];
            snprintf(base, sizeof base, "%s.weight", head_names[e]);
            const size_t bl = strlen(base);
            if (strncmp(t->name, base, bl) != 0 || (t->name[bl] && strncmp(t->name + bl, ".vq_", 4) != 0)) continue;
            const bool plain = add_part(g, t, bl, &r->ends[e]);
            snprintf(r->end_type[e], sizeof r->end_type[e], "%s", plain ? gq_ggml_type_name(t->type) : "GPTVQ");
        }
        if (sscanf(t->name, "blk.%d.%n", &l, &off) != 1 || off <= 0 || l < 0) continue;
        const char *kn = t->name + off, *dot = strchr(kn, '.');
        if (!dot || strncmp(dot, ".weight", 7) != 0) continue;
        const bool packed = !strncmp(dot + 7, ".vq_", 4);
        if (!packed && (dot[7] || t->n_dims != 2)) continue;
        const int k = kind_of(kn, (size_t)(dot - kn));
        struct rlinear *L = find_lin(r, l, k);
        if (!L) {
            L = &r->lin[r->n_lin++];
            *L = (struct rlinear){.layer = l, .kind = k, .err = NAN};
        }
        if (add_part(g, t, (size_t)(dot + 7 - t->name), L) && (int)t->type < GQ_TYPE_COUNT_) types[t->type]++;
        if (l + 1 > r->n_layers) r->n_layers = l + 1;
    }
    // recorded errors
    const struct gq_gguf_kv *names = gq_gguf_find_kv(g, "gptvq.layers"), *errs = gq_gguf_find_kv(g, "gptvq.rel_errors");
    if (s == GQ_OK && names && errs && names->type == GQ_GGUF_ARRAY && errs->type == GQ_GGUF_ARRAY &&
        names->arr_str && names->arr_n == errs->arr_n)
        for (uint64_t i = 0; i < names->arr_n; i++) {
            char nm[96];
            snprintf(nm, sizeof nm, "%.*s", (int)(names->arr_str[i].len < 95 ? names->arr_str[i].len : 95),
                     names->arr_str[i].data);
            int l = -1, off = 0;
            for (int e = 0; e < 2; e++)
                if (!strcmp(nm, head_names[e])) r->ends[e].err = gq_gguf_arr_f64(errs, i);
            if (sscanf(nm, "blk.%d.%n", &l, &off) != 1 || off <= 0) continue;
            struct rlinear *L = find_lin(r, l, kind_of(nm + off, strlen(nm + off)));
            if (L) L->err = gq_gguf_arr_f64(errs, i);
        }
    double bits = 0;
    for (int i = 0; i < r->n_lin; i++) bits += r->lin[i].bits, r->n_lin_w += r->lin[i].n;
    r->bpv_lin = r->n_lin_w ? bits / (double)r->n_lin_w : NAN;
    // what the file is
    if (!strcmp(r->method, "gptvq")) {
        snprintf(r->settings, sizeof r->settings, "GPTVQ %dD, target %.4g bpv, k %d, norm block %d%s",
                 (int)num_kv(g, "gptvq.vq_dim"), num_kv(g, "gptvq.bpv_target"), (int)num_kv(g, "gptvq.k"),
                 (int)num_kv(g, "gptvq.norm_block"), num_kv(g, "gptvq.stages") > 1 ? ", residual" : "");
    } else if (r->method[0]) {
        snprintf(r->settings, sizeof r->settings, "%s W%d g%d%s (%s)", !strcmp(r->method, "gptq") ? "GPTQ" : "RTN",
                 (int)num_kv(g, "gptvq.wbits"), (int)num_kv(g, "gptvq.group_size"),
                 gq_gguf_find_kv(g, "gptvq.sym") && num_kv(g, "gptvq.sym") != 0 ? " sym" : "", r->format);
    } else { // not made by gptvq quantize: its linears' dominant type
        int best = 0;
        for (int t = 0; t < GQ_TYPE_COUNT_; t++)
            if (types[t] > types[best]) best = t;
        snprintf(r->settings, sizeof r->settings, "%s linears", gq_ggml_type_name((enum gq_ggml_type)best));
        snprintf(r->method, sizeof r->method, "source");
    }
    if (!r->name[0]) {
        const char *b = strrchr(path, '/');
        snprintf(r->name, sizeof r->name, "%s", b ? b + 1 : path);
    }
    gq_gguf_close(g);
    return s;
}

static const char *base_name(const char *p) {
    const char *b = strrchr(p, '/');
    return b ? b + 1 : p;
}

// One file's error picture: relative output error by layer, one series per
// matrix kind.
static enum gq_status error_plot(const struct rmodel *r, const char *path) {
    double *x = malloc(sizeof(double) * (size_t)(r->n_layers + 1) * N_KINDS * 2);
    if (!x) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    double *y = x + (size_t)(r->n_layers + 1) * N_KINDS;
    struct gq_plot_series se[N_KINDS];
    int ns = 0;
    for (int k = 0; k < N_KINDS; k++) {
        double *xs = x + (size_t)ns * r->n_layers, *ys = y + (size_t)ns * r->n_layers;
        int n = 0;
        for (int l = 0; l < r->n_layers; l++) {
            const struct rlinear *L = find_lin((struct rmodel *)r, l, k);
            if (L && isfinite(L->err)) xs[n] = l, ys[n] = L->err, n++;
        }
        if (n) se[ns++] = (struct gq_plot_series){kinds[k], n, xs, ys, true};
    }
    char title[400];
    snprintf(title, sizeof title, "%s: relative output error by layer", base_name(r->path));
    struct gq_plot p = {.title = title, .xlabel = "layer", .ylabel = "relative output error", .log_y = true,
                        .integer_x = true, .series = se, .n_series = ns};
    enum gq_status s = gq_svg_plot_write(&p, path);
    free(x);
    return s;
}

// Perplexity against file size: one series per method, points by size.
static enum gq_status ppl_plot(const struct rmodel *m, int n, const char *ppl_desc, const char *path) {
    static const char *const order[] = {"source", "gptvq", "gptq", "rtn", "other"};
    static const char *const label[] = {"source", "GPTVQ", "GPTQ", "RTN", "other GGUF"};
    double *xy = malloc(sizeof(double) * 2 * (size_t)n);
    if (!xy) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    struct gq_plot_series se[5];
    int ns = 0, used = 0;
    for (int o = 0; o < 5; o++) {
        double *xs = xy + used, *ys = xy + n + used;
        int c = 0;
        for (int i = 0; i < n; i++)
            if (!strcmp(m[i].method, order[o]) && isfinite(m[i].ppl)) xs[c] = m[i].size_mb, ys[c] = m[i].ppl, c++;
        for (int i = 1; i < c; i++) // by size, for the line
            for (int j = i; j > 0 && xs[j] < xs[j - 1]; j--) {
                double tx = xs[j], ty = ys[j];
                xs[j] = xs[j - 1], ys[j] = ys[j - 1], xs[j - 1] = tx, ys[j - 1] = ty;
            }
        if (c) se[ns++] = (struct gq_plot_series){label[o], c, xs, ys, true};
        used += c;
    }
    char ylabel[300];
    snprintf(ylabel, sizeof ylabel, "perplexity%s%s", ppl_desc ? ", " : "", ppl_desc ? ppl_desc : "");
    struct gq_plot p = {.title = "Perplexity against file size", .xlabel = "file size (MB)", .ylabel = "perplexity",
                        .log_y = true, .series = se, .n_series = ns};
    enum gq_status s = gq_svg_plot_write(&p, path);
    free(xy);
    return s;
}

static void md_table(FILE *f, const struct rmodel *m, int n) {
    const struct rmodel *src = NULL;
    for (int i = 0; i < n && !src; i++)
        if (!strcmp(m[i].method, "source") && isfinite(m[i].ppl)) src = &m[i];
    fprintf(f, "| file | method | size (MB) | bits per value (block linears) | perplexity | × source |\n"
               "| --- | --- | --- | --- | --- | --- |\n");
    for (int i = 0; i < n; i++) {
        fprintf(f, "| %s | %s | %.1f | %.3f | ", base_name(m[i].path), m[i].settings, m[i].size_mb, m[i].bpv_lin);
        if (isfinite(m[i].ppl)) fprintf(f, "%.3f | ", m[i].ppl);
        else fputs("– | ", f);
        if (src && isfinite(m[i].ppl)) fprintf(f, "%.3f |\n", m[i].ppl / src->ppl);
        else fputs("– |\n", f);
    }
}

static void md_model(FILE *f, const struct rmodel *r, const char *svg) {
    fprintf(f, "\n## %s\n\n%s; %d block linears, %.2f M weights, %.3f bits per value, file %.1f MB.\n\n",
            base_name(r->path), r->settings, r->n_lin, (double)r->n_lin_w / 1e6, r->bpv_lin, r->size_mb);
    if (r->command[0]) fprintf(f, "Made by: `%s`\n\n", r->command);
    fprintf(f, "| matrix | bits per value | relative output error: mean | worst (layer) |\n| --- | --- | --- | --- |\n");
    double worst_all = -1;
    int worst_i = -1;
    for (int k = 0; k < N_KINDS; k++) {
        double bits = 0, w = 0, se = 0, worst = -1;
        int ne = 0, wl = -1;
        for (int i = 0; i < r->n_lin; i++) {
            const struct rlinear *L = &r->lin[i];
            if (L->kind != k) continue;
            bits += L->bits, w += (double)L->n;
            if (isfinite(L->err)) {
                se += L->err, ne++;
                if (L->err > worst) worst = L->err, wl = L->layer;
                if (L->err > worst_all) worst_all = L->err, worst_i = i;
            }
        }
        if (w == 0) continue;
        fprintf(f, "| %s | %.3f | ", kinds[k], bits / w);
        if (ne) fprintf(f, "%.4g | %.4g (%d) |\n", se / ne, worst, wl);
        else fputs("– | – |\n", f);
    }
    for (int e = 0; e < 2; e++) {
        const struct rlinear *E = &r->ends[e];
        if (!E->n) continue;
        fprintf(f, "\n%s: %s, %.3f bits per value, %.1f MB", e ? "Output head" : "Token embedding",
                r->end_type[e], E->bits / (double)E->n, E->bits / 8e6);
        if (!e && !r->ends[1].n) fputs(" (tied: also the output head)", f);
        if (isfinite(E->err)) fprintf(f, "; relative output error %.4g", E->err);
        fputs(".\n", f);
    }
    if (svg) fprintf(f, "\n![relative output error by layer and matrix](%s)\n", svg);
    else fputs("\nNo per-linear errors are recorded in this file (they are written by `gptvq quantize`).\n", f);
    if (worst_i >= 0)
        fprintf(f, "\nThe largest relative output error is blk.%d.%s's, %.4g.\n", r->lin[worst_i].layer,
                r->lin[worst_i].kind >= 0 ? kinds[r->lin[worst_i].kind] : "?", worst_all);
}

enum gq_status gq_report_write(const char *const *paths, const double *ppl, int n, const char *ppl_desc,
                               const char *out_dir, FILE *summary) {
    if (n <= 0) return gq_fail(GQ_ERR_ARG, "report: no files");
    struct rmodel *m = calloc((size_t)n, sizeof *m);
    if (!m) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    enum gq_status s = GQ_OK;
    bool have_source = false; // the first file not made by gptvq quantize is the source; later ones "other"
    for (int i = 0; s == GQ_OK && i < n; i++) {
        s = read_model(paths[i], ppl ? ppl[i] : NAN, &m[i]);
        if (!strcmp(m[i].method, "source") && have_source) snprintf(m[i].method, sizeof m[i].method, "other");
        have_source |= !strcmp(m[i].method, "source");
    }
    if (s == GQ_OK) s = gq_mkdir_p(out_dir);
    char path[4096];
    char *md = NULL;
    size_t md_len = 0;
    FILE *f = s == GQ_OK ? open_memstream(&md, &md_len) : NULL;
    if (s == GQ_OK && !f) s = gq_fail(GQ_ERR_NOMEM, "out of memory");
    if (s == GQ_OK) {
        time_t now = time(NULL);
        char date[32];
        strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", gmtime(&now));
        fprintf(f, "# gptvq report\n\nMade by gptvq %s on %s from the files' own metadata and tensors.", GQ_VERSION_STRING,
                date);
        if (ppl_desc) fprintf(f, " Perplexity: %s.", ppl_desc);
        fputs("\n\n", f);
        md_table(f, m, n);
        int with_ppl = 0;
        for (int i = 0; i < n; i++) with_ppl += isfinite(m[i].ppl);
        if (with_ppl) {
            snprintf(path, sizeof path, "%s/ppl_vs_size.svg", out_dir);
            s = ppl_plot(m, n, ppl_desc, path);
            fputs("\n![perplexity against file size](ppl_vs_size.svg)\n", f);
        }
        for (int i = 0; s == GQ_OK && i < n; i++) {
            bool errs = false;
            for (int j = 0; j < m[i].n_lin && !errs; j++) errs = isfinite(m[i].lin[j].err);
            char svg[300];
            snprintf(svg, sizeof svg, "error_%d.svg", i + 1);
            snprintf(path, sizeof path, "%s/%s", out_dir, svg);
            if (errs) s = error_plot(&m[i], path);
            md_model(f, &m[i], errs ? svg : NULL);
        }
    }
    if (f && fclose(f) != 0 && s == GQ_OK) s = gq_fail(GQ_ERR_NOMEM, "out of memory");
    if (s == GQ_OK) {
        snprintf(path, sizeof path, "%s/report.md", out_dir);
        s = gq_write_file_atomic(path, md, md_len);
    }
    if (s == GQ_OK && summary) md_table(summary, m, n);
    free(md);
    for (int i = 0; i < n; i++) free(m[i].lin);
    free(m);
    return s;
}
