// ckpt.c - checkpoints of a quantization run (format: ckpt.h).
#include "quant/ckpt.h"
#include "backend/backend.h"

#include "model/arch.h"
#include "model/model.h"
#include "format/vqpack.h"
#include "kern/qmatmul.h"

#include <dirent.h>
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#define BLK_MAGIC "GQCKBLK2" // 2: packed headers of 16 int32 (a rotation)
#define BLK_END "GQCKEND2"
#define RUN_HEADER "gptvq checkpoint 2\n" // 2: GPTQ / RTN GGUF blocks (f16 grids)

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}
static uint64_t fnv_str(uint64_t h, const char *s) {
    if (!s) return fnv(h, "\xff", 1);
    const char *base = strrchr(s, '/');
    return fnv(h, base ? base + 1 : s, strlen(base ? base + 1 : s) + 1);
}

uint64_t gq_ckpt_fingerprint(const struct gq_model *m, const struct gq_quantize_params *p) {
    // The settings struct with its pointers and the settings that do not
    // change the output cleared (gq_quantize_params_default zeroes padding).
    struct gq_quantize_params q;
    memcpy(&q, p, sizeof q);
    q.calib_path = q.save_hessians = q.load_hessians = q.checkpoint_dir = q.command = q.bit_alloc = NULL;
    q.progress = false;
    q.embed_type = -1; // applied when the file is written
    q.stop_after_blocks = 0;
    uint64_t h = fnv(0xcbf29ce484222325ull, RUN_HEADER, strlen(RUN_HEADER));
    h = fnv(h, &q, sizeof q);
    h = fnv_str(h, p->calib_path);
    h = fnv_str(h, p->load_hessians);
    h = fnv_str(h, p->bit_alloc);
    h = fnv_str(h, gq_be()->name); // the devices round differently: a run continues where it started
    h = fnv_str(h, m->arch);
    h = fnv(h, &m->hp, sizeof m->hp);
    const struct gq_arch *A = gq_arch_find(m->arch);
    for (int i = 0; A && i < A->n_tensors; i++) {
        const struct gq_block_tensor *t = &A->tensors[i];
        if (t->kind != GQ_T_LINEAR) continue;
        size_t n = (size_t)gq_dim_value(&m->hp, t->rows) * (size_t)gq_dim_value(&m->hp, t->cols);
        for (int l = 0; l < m->hp.n_layers; l += m->hp.n_layers > 1 ? m->hp.n_layers - 1 : 1) {
            const float *w = *gq_block_slot(&m->layers[l], t);
            const struct gq_qweight *q = *gq_block_qslot(&m->layers[l], t);
            if (w) h = fnv(h, w, n * sizeof *w);
            else if (q && q->kind == GQ_QW_GGML) h = fnv(h, q->data, q->row_size * (size_t)q->rows);
        }
        break;
    }
    return h;
}

static void run_path(char *buf, size_t cap, const char *dir) { snprintf(buf, cap, "%s/run.ckpt", dir); }
static void blk_path(char *buf, size_t cap, const char *dir, int l) { snprintf(buf, cap, "%s/blk.%d.ckpt", dir, l); }

bool gq_ckpt_has_blocks(const char *dir) {
    char path[4096];
    blk_path(path, sizeof path, dir, 0);
    return access(path, F_OK) == 0;
}

enum gq_status gq_ckpt_open(const char *dir, uint64_t fp) {
    char path[4096], want[64];
    snprintf(want, sizeof want, RUN_HEADER "fingerprint %016llx\n", (unsigned long long)fp);
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) return gq_fail(GQ_ERR_IO, "%s: cannot create the checkpoint folder: %s", dir, strerror(errno));
    run_path(path, sizeof path, dir);
    char *have = NULL;
    size_t n = 0;
    if (access(path, F_OK) == 0) {
        GQ_TRY(gq_read_file(path, &have, &n));
        bool same = n == strlen(want) && memcmp(have, want, n) == 0;
        free(have);
        if (!same)
            return gq_fail(GQ_ERR_ARG, "%s: this checkpoint belongs to a run with other settings or another model; "
                           "remove the folder to start over, or restart with that run's settings", path);
        return GQ_OK;
    }
    return gq_write_file_atomic(path, want, strlen(want));
}

enum gq_status gq_quantize_checkpoint_remove(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? GQ_OK : gq_fail(GQ_ERR_IO, "%s: %s", dir, strerror(errno));
    struct dirent *e;
    char path[4096];
    enum gq_status s = GQ_OK;
    // Only the files a checkpoint consists of: a folder holding anything
    // else is left in place.
    while ((e = readdir(d))) {
        const char *n = e->d_name;
        size_t len = strlen(n);
        bool ours = !strcmp(n, "run.ckpt") ||
                    (!strncmp(n, "blk.", 4) && len > 9 && (!strcmp(n + len - 5, ".ckpt") || !strcmp(n + len - 9, ".ckpt.tmp")));
        if (!ours) continue;
        snprintf(path, sizeof path, "%s/%s", dir, n);
        if (remove(path) != 0 && s == GQ_OK) s = gq_fail(GQ_ERR_IO, "%s: cannot remove: %s", path, strerror(errno));
    }
    closedir(d);
    if (s == GQ_OK && rmdir(dir) != 0 && errno != ENOTEMPTY && errno != EEXIST)
        s = gq_fail(GQ_ERR_IO, "%s: cannot remove: %s", dir, strerror(errno));
    return s;
}

static bool put(FILE *f, const void *p, size_t n) { return fwrite(p, 1, n, f) == n; }

// The packed matrix decodes to W bit for bit (then W need not be stored).
static bool decodes_to(const struct gq_vqpack *pk, const float *W) {
    struct gq_vq_tensor t;
    if (gq_vqpack_unpack(pk, "checkpoint", &t) != GQ_OK) return false;
    size_t n = (size_t)pk->h.rows * pk->h.cols;
    float *Q = malloc(sizeof(float) * n);
    bool same = Q != NULL;
    if (Q) gq_vq_decode(&t, Q);
    same = same && memcmp(Q, W, sizeof(float) * n) == 0;
    free(Q);
    gq_vq_tensor_free(&t);
    return same;
}

// The GGUF blocks dequantize to W bit for bit (then W need not be stored).
static bool blocks_decode_to(const struct gq_gguf_blocks *gb, const float *W, size_t n) {
    float *Q = malloc(sizeof(float) * n);
    bool same = Q && gq_dequantize((enum gq_ggml_type)gb->type, gb->data, Q, (int64_t)n) == GQ_OK &&
                memcmp(Q, W, sizeof(float) * n) == 0;
    free(Q);
    return same;
}

enum gq_status gq_ckpt_save_block(const char *dir, uint64_t fp, struct gq_model *m, int l,
                                  const struct gq_quant_layer_report *r, int n_r, int64_t calib_tokens) {
    const struct gq_arch *A = gq_arch_find(m->arch);
    char path[4096], tmp[4200];
    blk_path(path, sizeof path, dir, l);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return gq_fail(GQ_ERR_IO, "%s: cannot write: %s", tmp, strerror(errno));
    const uint32_t n_lin = (uint32_t)gq_arch_n_linears(A);
    uint32_t u[4] = {(uint32_t)l, (uint32_t)n_r, (uint32_t)sizeof *r, n_lin};
    bool ok = put(f, BLK_MAGIC, 8) && put(f, u, sizeof u) && put(f, &calib_tokens, 8) && put(f, &fp, 8) &&
              put(f, r, sizeof *r * (size_t)n_r);
    for (int i = 0; ok && i < A->n_tensors; i++) {
        const struct gq_block_tensor *t = &A->tensors[i];
        if (t->kind != GQ_T_LINEAR) continue;
        const struct gq_vqpack *pk = m->packs ? &m->packs[(size_t)l * A->n_tensors + i] : NULL;
        if (pk && pk->h.version == 0) pk = NULL;
        const struct gq_gguf_blocks *gb = m->blocks && m->blocks[(size_t)l * A->n_tensors + i].data
                                              ? &m->blocks[(size_t)l * A->n_tensors + i] : NULL;
        const float *W = *gq_block_slot(&m->layers[l], t);
        const int32_t rows = (int32_t)gq_dim_value(&m->hp, t->rows), cols = (int32_t)gq_dim_value(&m->hp, t->cols);
        int32_t h[4] = {rows, cols, pk ? 1 : gb ? 2 : 0,
                        pk ? !decodes_to(pk, W) : gb ? !blocks_decode_to(gb, W, (size_t)rows * cols) : 1};
        ok = put(f, h, sizeof h) && (!h[3] || put(f, W, sizeof(float) * (size_t)h[0] * h[1]));
        if (ok && gb) {
            int32_t ty[2] = {gb->type, 0};
            uint64_t nb = gb->bytes;
            ok = put(f, ty, sizeof ty) && put(f, &nb, 8) && put(f, gb->data, gb->bytes);
        }
        if (ok && pk) {
            int32_t zero = 0;
            uint64_t b[GQ_VQP_COUNT];
            for (int j = 0; j < GQ_VQP_COUNT; j++) b[j] = pk->part[j] ? pk->bytes[j] : 0;
            ok = put(f, &pk->h, sizeof pk->h) && put(f, &zero, 4) && put(f, b, sizeof b);
            for (int j = 0; ok && j < GQ_VQP_COUNT; j++) ok = !b[j] || put(f, pk->part[j], b[j]);
        }
    }
    ok = ok && put(f, BLK_END, 8);
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        remove(tmp);
        return gq_fail(GQ_ERR_IO, "%s: write failed (disk full?)", path);
    }
    return GQ_OK;
}

// Bounds-checked reader over a mapped file.
struct rd {
    const uint8_t *p;
    size_t n, at;
    bool bad;
};
static const void *take(struct rd *r, size_t n) {
    if (r->bad || n > r->n - r->at) {
        r->bad = true;
        return NULL;
    }
    const void *q = r->p + r->at;
    r->at += n;
    return q;
}

// A linear's GGUF blocks (after its header and W): i32 type, i32 0, u64
// bytes, the blocks. Kept in m->blocks with GQ_CKPT_PACKS; decoded into W
// when W was not stored.
static enum gq_status load_blocks(struct rd *r, const char *path, struct gq_model *m, int l, int i,
                                  const struct gq_block_tensor *t, int rows, int cols, unsigned load, float *W,
                                  bool w_stored) {
    int32_t ty[2] = {0};
    uint64_t nb = 0;
    const void *q;
    if ((q = take(r, sizeof ty))) memcpy(ty, q, sizeof ty);
    if ((q = take(r, 8))) memcpy(&nb, q, 8);
    if (r->bad) return GQ_OK; // reported as truncated by the caller
    const int tt = ty[0];
    if ((tt != GQ_TYPE_Q4_0 && tt != GQ_TYPE_Q4_1 && tt != GQ_TYPE_Q5_0 && tt != GQ_TYPE_Q5_1 && tt != GQ_TYPE_Q8_0) ||
        cols % 32 || nb != gq_ggml_row_size((enum gq_ggml_type)tt, cols) * (uint64_t)rows)
        return gq_fail(GQ_ERR_FORMAT, "%s: blk.%d.%s: GGUF blocks of type %d, %llu bytes for %d x %d", path, l, t->name,
                       tt, (unsigned long long)nb, rows, cols);
    const uint8_t *src = take(r, nb);
    if (!src) return GQ_OK;
    if (load & GQ_CKPT_PACKS) {
        uint8_t *buf = malloc(nb ? nb : 1);
        if (!buf) return gq_fail(GQ_ERR_NOMEM, "out of memory");
        memcpy(buf, src, nb);
        GQ_TRY(gq_model_own(m, buf));
        m->blocks[(size_t)l * gq_arch_find(m->arch)->n_tensors + i] = (struct gq_gguf_blocks){tt, buf, nb};
    }
    if (W && !w_stored) GQ_TRY(gq_dequantize((enum gq_ggml_type)tt, src, W, (int64_t)rows * cols));
    return GQ_OK;
}

enum gq_status gq_ckpt_load_block(const char *dir, uint64_t fp, struct gq_model *m, int l, unsigned load,
                                  struct gq_quant_layer_report *rep, int *n_rep, int64_t *calib_tokens, bool *found) {
    const struct gq_arch *A = gq_arch_find(m->arch);
    char path[4096];
    blk_path(path, sizeof path, dir, l);
    *found = access(path, F_OK) == 0;
    if (!*found) return GQ_OK;
    struct gq_mapped_file mf;
    GQ_TRY(gq_map_file(path, &mf));
    struct rd r = {.p = (const uint8_t *)mf.data, .n = mf.size};
    enum gq_status s = GQ_OK;
    const char *magic = take(&r, 8);
    uint32_t u[4];
    uint64_t fp_file = 0;
    const void *q;
    if (!magic || memcmp(magic, BLK_MAGIC, 8) != 0) {
        s = gq_fail(GQ_ERR_FORMAT, "%s: not a gptvq checkpoint block (magic)", path);
        goto out;
    }
    int64_t ct = 0;
    if ((q = take(&r, sizeof u))) memcpy(u, q, sizeof u);
    if ((q = take(&r, 8))) memcpy(&ct, q, 8);
    if ((q = take(&r, 8))) memcpy(&fp_file, q, 8);
    const uint32_t n_lin = (uint32_t)gq_arch_n_linears(A);
    if (r.bad || u[0] != (uint32_t)l || u[1] > n_lin || u[2] != sizeof *rep || u[3] != n_lin || fp_file != fp) {
        s = gq_fail(GQ_ERR_FORMAT, "%s: header does not match this run (block %d, %u linears, this build's report layout)",
                    path, l, n_lin);
        goto out;
    }
    if ((q = take(&r, sizeof(struct gq_quant_layer_report) * u[1])) && (load & GQ_CKPT_REPORTS)) {
        memcpy(rep, q, sizeof *rep * u[1]);
        *n_rep = (int)u[1];
        *calib_tokens = ct;
    }
    for (int i = 0; s == GQ_OK && !r.bad && i < A->n_tensors; i++) {
        const struct gq_block_tensor *t = &A->tensors[i];
        if (t->kind != GQ_T_LINEAR) continue;
        int32_t h[4] = {0};
        if ((q = take(&r, sizeof h))) memcpy(h, q, sizeof h);
        if (r.bad) break;
        if (h[0] != gq_dim_value(&m->hp, t->rows) || h[1] != gq_dim_value(&m->hp, t->cols) || h[2] < 0 || h[2] > 2 ||
            (h[2] == 1 && !m->packs) || (h[2] == 2 && !m->blocks) || (!h[2] && !h[3])) {
            s = gq_fail(GQ_ERR_FORMAT, "%s: blk.%d.%s: %d x %d%s, this run expects %lld x %lld%s", path, l, t->name,
                        h[0], h[1], h[2] == 1 ? " packed" : h[2] == 2 ? " GGUF blocks" : "",
                        (long long)gq_dim_value(&m->hp, t->rows), (long long)gq_dim_value(&m->hp, t->cols),
                        m->packs ? " packed" : m->blocks ? " GGUF blocks" : "");
            break;
        }
        *gq_block_qslot(&m->layers[l], t) = NULL; // the forward must run the quantized weights, not the source's
        size_t nb = sizeof(float) * (size_t)h[0] * (size_t)h[1];
        float *W = NULL;
        if (load & GQ_CKPT_WEIGHTS) {
            W = malloc(nb);
            if (!W || (s = gq_model_own(m, W)) != GQ_OK) {
                s = gq_fail(GQ_ERR_NOMEM, "out of memory");
                break;
            }
            *gq_block_slot(&m->layers[l], t) = W;
        }
        if (h[3]) {
            const void *w = take(&r, nb);
            if (!w) break;
            if (W) memcpy(W, w, nb);
        }
        if (!h[2]) continue;
        if (h[2] == 2) {
            if ((s = load_blocks(&r, path, m, l, i, t, h[0], h[1], load, W, h[3])) != GQ_OK) break;
            continue;
        }
        struct gq_vqpack tmp_pk, *pk = (load & GQ_CKPT_PACKS) ? &m->packs[(size_t)l * A->n_tensors + i] : &tmp_pk;
        memset(pk, 0, sizeof *pk);
        uint64_t b[GQ_VQP_COUNT];
        if ((q = take(&r, sizeof pk->h))) memcpy(&pk->h, q, sizeof pk->h);
        take(&r, 4);
        if ((q = take(&r, sizeof b))) memcpy(b, q, sizeof b);
        if (r.bad) break;
        int64_t bits[GQ_VQP_COUNT];
        char what[4200];
        snprintf(what, sizeof what, "%s: blk.%d.%s", path, l, t->name);
        if ((s = gq_vqpack_layout(&pk->h, what, bits)) != GQ_OK) break;
        size_t total = 0;
        for (int j = 0; j < GQ_VQP_COUNT; j++) {
            if (b[j] != (uint64_t)(bits[j] + 7) / 8) {
                s = gq_fail(GQ_ERR_FORMAT, "%s: part %s holds %llu bytes, its header implies %lld", what,
                            gq_vqpack_suffix(j), (unsigned long long)b[j], (long long)(bits[j] + 7) / 8);
                break;
            }
            total += b[j];
        }
        if (s != GQ_OK) break;
        const uint8_t *src = take(&r, total);
        if (!src) break;
        uint8_t *buf = (uint8_t *)src; // only read while the file is mapped, unless the model keeps the pack
        if (pk != &tmp_pk) {
            if (!(buf = malloc(total ? total : 1))) {
                s = gq_fail(GQ_ERR_NOMEM, "out of memory");
                break;
            }
            memcpy(buf, src, total);
            if ((s = gq_model_own(m, buf)) != GQ_OK) break;
        }
        size_t at = 0;
        for (int j = 0; j < GQ_VQP_COUNT; at += b[j], j++) {
            pk->part[j] = b[j] ? buf + at : NULL;
            pk->bytes[j] = b[j];
        }
        if (W && !h[3]) { // W is the packed matrix decoded (checked when it was saved)
            struct gq_vq_tensor vt;
            if ((s = gq_vqpack_unpack(pk, what, &vt)) != GQ_OK) break;
            gq_vq_decode(&vt, W);
            gq_vq_tensor_free(&vt);
        }
    }
    if (s == GQ_OK && (r.bad || !(magic = take(&r, 8)) || memcmp(magic, BLK_END, 8) != 0 || r.at != r.n))
        s = gq_fail(GQ_ERR_FORMAT, "%s: truncated or corrupt checkpoint block", path);
out:
    gq_unmap_file(&mf);
    return s;
}
